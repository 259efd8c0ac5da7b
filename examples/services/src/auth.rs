//! Who is calling, what they may do, and how often: API keys (random 256-bit secrets shown
//! once, stored as argon2id hashes), JWT bearer tokens (HS256 or RS256 with a configured issuer
//! and audience, scopes in the `scope` claim) and a token bucket per caller.
//!
//! A key reads `uf_<id>_<secret>`: the id finds the row, the secret is checked against its
//! hash. Argon2 costs tens of milliseconds by design, so a key checked once is remembered (by
//! a SHA-256 of the whole key) for [`KEY_CACHE_TTL`]; a revoked key stops working on the
//! gateway that revoked it at once, on other gateways within that time. While the keys cannot be
//! read (PostgreSQL down), a key checked within [`KEY_STALE_TTL`] is still let in, so that
//! identification and other reads go on through a database outage; keys not seen that recently
//! get 503.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::PasswordHasher;
use argon2::Argon2;
use sha2::{Digest, Sha256};
use tokio_postgres::Client;

use crate::{lock, Error, Result};

/// How long a checked key is trusted without reading its row again.
pub const KEY_CACHE_TTL: Duration = Duration::from_secs(30);

/// How long a checked key is still trusted when its row cannot be read (the database is
/// unreachable): the longest a revocation made on another gateway can be missed during an outage.
pub const KEY_STALE_TTL: Duration = Duration::from_secs(600);

/// What a caller may do. A key or token carries a set of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    Enroll,
    Verify,
    Identify,
    Manage,
    Admin,
}

impl Scope {
    pub const ALL: [Scope; 5] = [
        Scope::Enroll,
        Scope::Verify,
        Scope::Identify,
        Scope::Manage,
        Scope::Admin,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Scope::Enroll => "enroll",
            Scope::Verify => "verify",
            Scope::Identify => "identify",
            Scope::Manage => "manage",
            Scope::Admin => "admin",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.name() == name)
    }
}

/// Parse `enroll,verify` (or space-separated, as OAuth2 scope claims are).
pub fn parse_scopes(text: &str) -> Result<Vec<Scope>> {
    let mut out: Vec<Scope> = text
        .split([',', ' '])
        .filter(|s| !s.is_empty())
        .map(|s| {
            Scope::from_name(s).ok_or_else(|| {
                Error::Invalid(format!(
                    "unknown scope {s:?}; scopes are enroll, verify, identify, manage, admin"
                ))
            })
        })
        .collect::<Result<_>>()?;
    out.sort();
    out.dedup();
    Ok(out)
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq)]
pub struct Principal {
    /// `key:<id>` or `jwt:<subject>`: what the logs and the rate limiter know it by.
    pub name: String,
    pub scopes: Vec<Scope>,
    /// Requests per second, and the burst, it may make.
    pub rate_per_s: f64,
    pub burst: u32,
    /// The collection whose subjects it sees (`""`: the default one); see [`crate::collection`].
    pub collection: String,
}

impl Principal {
    /// `admin` implies every scope.
    pub fn may(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope) || self.scopes.contains(&Scope::Admin)
    }
}

/// A key made by [`create_key`]: the only time its secret is seen.
#[derive(Debug, Clone, serde::Serialize)]
pub struct NewKey {
    pub key_id: String,
    pub key: String,
    pub scopes: Vec<Scope>,
    pub rate_per_s: f64,
    pub burst: u32,
    pub collection: String,
}

fn random_hex(bytes: usize) -> Result<String> {
    let mut b = vec![0u8; bytes];
    getrandom::fill(&mut b).map_err(|e| Error::Invalid(format!("no randomness: {e}")))?;
    Ok(crate::upstream::hex(&b))
}

fn argon2_error(e: impl std::fmt::Display) -> Error {
    Error::Invalid(format!("argon2: {e}"))
}

/// A rate of at least [`MIN_RATE`] requests per second, a burst of 1 to [`MAX_BURST`].
pub fn check_rate(rate_per_s: f64, burst: u32) -> Result<()> {
    if !(rate_per_s >= MIN_RATE && rate_per_s.is_finite() && (1..=MAX_BURST).contains(&burst)) {
        return Err(Error::Invalid(format!(
            "rate must be at least {MIN_RATE} requests per second and burst 1 to {MAX_BURST} (got {rate_per_s}, {burst})"
        )));
    }
    Ok(())
}

/// Make a key of `collection` (`""`: the default one): a random id and 256-bit secret; the row
/// keeps the argon2id hash only.
pub async fn create_key(
    client: &Client,
    scopes: &[Scope],
    rate_per_s: f64,
    burst: u32,
    description: &str,
    collection: &str,
) -> Result<NewKey> {
    if scopes.is_empty() {
        return Err(Error::Invalid("a key needs at least one scope".into()));
    }
    check_rate(rate_per_s, burst)?;
    crate::collection::check(collection)?;
    let key_id = random_hex(8)?;
    let secret = random_hex(32)?;
    let hash = tokio::task::spawn_blocking({
        let secret = secret.clone();
        move || {
            Argon2::default()
                .hash_password(secret.as_bytes())
                .map(|h| h.to_string())
                .map_err(argon2_error)
        }
    })
    .await
    .map_err(|e| Error::Invalid(format!("hashing the key: {e}")))??;
    let names: Vec<&str> = scopes.iter().map(|s| s.name()).collect();
    client
        .execute(
            "INSERT INTO api_keys (key_id, hash, scopes, rate_per_s, burst, description, collection)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
            &[
                &key_id,
                &hash,
                &names,
                &rate_per_s,
                &(burst as i32),
                &description,
                &collection,
            ],
        )
        .await?;
    Ok(NewKey {
        key: format!("uf_{key_id}_{secret}"),
        key_id,
        scopes: scopes.to_vec(),
        rate_per_s,
        burst,
        collection: collection.to_owned(),
    })
}

/// Revoke a key (of collection `within`, when given); `false` when there is no such live key.
pub async fn revoke_key(client: &Client, key_id: &str, within: Option<&str>) -> Result<bool> {
    Ok(client
        .execute(
            "UPDATE api_keys SET revoked_at = now()
             WHERE key_id = $1 AND revoked_at IS NULL AND ($2::text IS NULL OR collection = $2)",
            &[&key_id, &within],
        )
        .await?
        == 1)
}

/// JWT settings of an OAuth2 deployment.
#[derive(Clone)]
pub struct JwtConfig {
    pub key: jsonwebtoken::DecodingKey,
    pub algorithm: jsonwebtoken::Algorithm,
    pub issuer: String,
    pub audience: String,
    pub rate_per_s: f64,
    pub burst: u32,
}

impl std::fmt::Debug for JwtConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtConfig")
            .field("algorithm", &self.algorithm)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .finish_non_exhaustive()
    }
}

#[derive(serde::Deserialize)]
struct Claims {
    sub: String,
    #[serde(default)]
    scope: String,
    /// The collection the token's holder sees (absent: the default one).
    #[serde(default)]
    collection: String,
}

/// Why a request is not let in.
#[derive(Debug)]
pub enum Denied {
    /// No credentials, or credentials that do not check out (401).
    Unauthenticated(String),
    /// Over the caller's rate: retry after this long (429).
    RateLimited(Duration),
    /// The keys cannot be read now (503).
    Unavailable(deadpool_postgres::PoolError),
}

struct Cached {
    principal: Principal,
    checked: Instant,
}

/// The gateway's authenticator: keys in PostgreSQL, optional JWT, a bucket per caller.
pub struct Authenticator {
    jwt: Option<JwtConfig>,
    cache: Mutex<HashMap<[u8; 32], Cached>>,
    buckets: Mutex<HashMap<String, Bucket>>,
    /// Argon2 checks running at once: each takes 19 MiB and tens of milliseconds, so a burst
    /// of new (or forged) keys costs bounded memory, and concurrent requests with one new key
    /// check it once (the others find it in the cache after waiting here).
    hashing: tokio::sync::Semaphore,
    hashers: Hashers,
    failures: Mutex<HashMap<String, Bucket>>,
}

/// A check for the hashers: (PHC hash, secret, where the verdict goes).
type HashJob = (String, String, tokio::sync::oneshot::Sender<bool>);

/// [`CONCURRENT_KEY_CHECKS`] threads that only check argon2 hashes, each with its own 19 MiB
/// of argon2 memory, allocated once. Allocated per check (as `verify_password` does), those
/// blocks raised glibc's mmap threshold and were then kept in the heap of every thread a check
/// ran on: a flood of forged secrets grew the gateway by 57 to 209 MiB.
struct Hashers {
    jobs: std::sync::mpsc::SyncSender<HashJob>,
}

impl Hashers {
    fn new(threads: usize) -> Self {
        // room for the checks of requests given up on (a client gone, a deadline passed: the
        // permit is back, the job still queued) besides the running ones
        let (jobs, queue) = std::sync::mpsc::sync_channel::<HashJob>(64);
        let queue = std::sync::Arc::new(Mutex::new(queue));
        for i in 0..threads {
            let queue = queue.clone();
            let started = std::thread::Builder::new()
                .name(format!("argon2-{i}"))
                .spawn(move || {
                    let mut memory: Vec<argon2::Block> = Vec::new();
                    loop {
                        let job = lock(&queue).recv();
                        let Ok((hash, secret, verdict)) = job else {
                            return;
                        };
                        let _ = verdict.send(verify_in(&hash, secret.as_bytes(), &mut memory));
                    }
                });
            if let Err(e) = started {
                tracing::error!("could not start an argon2 thread: {e}");
            }
        }
        Self { jobs }
    }

    /// Whether `secret` matches `hash`; `None` when no hasher could take the job or answer
    /// (the queue is full, the threads are gone): not a verdict on the key.
    async fn verify(&self, hash: String, secret: String) -> Option<bool> {
        let (verdict, answer) = tokio::sync::oneshot::channel();
        self.jobs.try_send((hash, secret, verdict)).ok()?;
        answer.await.ok()
    }
}

/// Largest argon2 memory a stored hash may ask for (ours use 19 MiB).
const MAX_ARGON2_KIB: u32 = 64 << 10;

/// Whether `secret` matches the PHC string `hash`, hashing in `memory` (grown to the hash's
/// cost once, then reused).
fn verify_in(hash: &str, secret: &[u8], memory: &mut Vec<argon2::Block>) -> bool {
    let Ok(parsed) = PasswordHash::new(hash) else {
        return false;
    };
    let (Ok(algorithm), Ok(params)) = (
        argon2::Algorithm::new(parsed.algorithm.as_str()),
        argon2::Params::try_from(&parsed),
    ) else {
        return false;
    };
    let version = match parsed.version.map(argon2::Version::try_from) {
        None => argon2::Version::default(),
        Some(Ok(v)) => v,
        Some(Err(_)) => return false,
    };
    let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else {
        return false;
    };
    if params.m_cost() > MAX_ARGON2_KIB {
        return false;
    }
    let blocks = params.block_count();
    if memory.len() < blocks {
        memory.resize(blocks, argon2::Block::default());
    }
    let expected = expected.as_ref();
    let mut out = vec![0u8; expected.len()];
    let hashed = Argon2::new(algorithm, version, params).hash_password_into_with_memory(
        secret,
        salt.as_ref(),
        &mut out,
        &mut memory[..blocks],
    );
    // compared in constant time
    hashed.is_ok()
        && out
            .iter()
            .zip(expected)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// Whether a failure to read the keys means the database cannot be reached (no connection
/// could be made or kept), rather than a busy pool or an answer from the database.
fn unreachable(e: &deadpool_postgres::PoolError) -> bool {
    use deadpool_postgres::{PoolError, TimeoutType};
    match e {
        PoolError::Backend(e) => e.as_db_error().is_none(),
        PoolError::Timeout(t) => !matches!(t, TimeoutType::Wait),
        _ => false,
    }
}

/// Argon2 checks that may run at once.
pub const CONCURRENT_KEY_CHECKS: usize = 2;

/// Failed checks a key id may have (burst, then per second) before it is refused unhashed.
const FAILURE_BURST: u32 = 5;
const FAILURE_RATE: f64 = 0.2;

/// Callers (rate buckets) and key ids (failure counts) remembered at most.
const MAX_TRACKED: usize = 100_000;

/// The slowest rate a key may have (one request per 1,000 s) and the largest burst.
pub const MIN_RATE: f64 = 1e-3;
pub const MAX_BURST: u32 = 1_000_000;

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("jwt", &self.jwt)
            .finish_non_exhaustive()
    }
}

impl Authenticator {
    pub fn new(jwt: Option<JwtConfig>) -> Self {
        Self {
            jwt,
            cache: Mutex::new(HashMap::new()),
            buckets: Mutex::new(HashMap::new()),
            hashing: tokio::sync::Semaphore::new(CONCURRENT_KEY_CHECKS),
            hashers: Hashers::new(CONCURRENT_KEY_CHECKS),
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// The caller of a request with this `Authorization` header value, admitted by its rate.
    pub async fn admit(
        &self,
        keys: &deadpool_postgres::Pool,
        authorization: Option<&str>,
    ) -> std::result::Result<Principal, Denied> {
        let p = self.authenticate(keys, authorization).await?;
        self.take(&p)?;
        Ok(p)
    }

    async fn authenticate(
        &self,
        keys: &deadpool_postgres::Pool,
        authorization: Option<&str>,
    ) -> std::result::Result<Principal, Denied> {
        let unauth = |m: &str| Denied::Unauthenticated(m.to_owned());
        let header = authorization
            .ok_or_else(|| unauth("send `Authorization: Bearer <key>` (an API key or a JWT)"))?;
        let token = header
            .strip_prefix("Bearer ")
            .ok_or_else(|| unauth("the Authorization header must be `Bearer <key>`"))?
            .trim();
        if token.starts_with("uf_") {
            return self.check_key(keys, token).await;
        }
        match &self.jwt {
            Some(j) => check_jwt(j, token),
            None => Err(unauth("not an API key (uf_…), and JWTs are not configured")),
        }
    }

    async fn check_key(
        &self,
        keys: &deadpool_postgres::Pool,
        token: &str,
    ) -> std::result::Result<Principal, Denied> {
        let bad = || Denied::Unauthenticated("unknown or revoked API key".into());
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let checked_within = |ttl: Duration| {
            lock(&self.cache)
                .get(&digest)
                .filter(|c| c.checked.elapsed() < ttl)
                .map(|c| c.principal.clone())
        };
        let cached = || checked_within(KEY_CACHE_TTL);
        if let Some(p) = cached() {
            return Ok(p);
        }
        // the database cannot be reached: a key checked not long ago still goes in (not when
        // the pool is only busy or a query failed: then the database answers, and decides)
        let unavailable = |e: deadpool_postgres::PoolError| match checked_within(KEY_STALE_TTL) {
            Some(p) if unreachable(&e) => {
                metrics::counter!("uniface_auth_stale_keys_total").increment(1);
                Ok(p)
            }
            _ => Err(Denied::Unavailable(e)),
        };
        // a key the database no longer vouches for is not kept for an outage
        let refused = || {
            lock(&self.cache).remove(&digest);
            bad()
        };
        let (key_id, secret) = token
            .strip_prefix("uf_")
            .and_then(|t| t.split_once('_'))
            .ok_or_else(bad)?;
        if key_id.len() != 16 || secret.len() != 64 {
            return Err(bad());
        }
        // a key id that keeps failing is refused without hashing for a while: forged secrets
        // for a known id cannot keep the argon2 permits from everyone else
        if self.failing(key_id) {
            return Err(Denied::Unauthenticated(
                "too many failed attempts with this key id; wait".into(),
            ));
        }
        let client = match keys.get().await {
            Ok(c) => c,
            Err(e) => return unavailable(e),
        };
        let row = match client
            .query_opt(
                "SELECT hash, scopes, rate_per_s, burst, collection FROM api_keys
                 WHERE key_id = $1 AND revoked_at IS NULL",
                &[&key_id],
            )
            .await
        {
            Ok(row) => row.ok_or_else(refused)?,
            Err(e) => return unavailable(deadpool_postgres::PoolError::Backend(e)),
        };
        drop(client);
        let _hashing = self
            .hashing
            .acquire()
            .await
            .map_err(|_| Denied::Unauthenticated("shutting down".into()))?;
        // checked meanwhile by a request that waited ahead of this one
        if let Some(p) = cached() {
            return Ok(p);
        }
        let Some(ok) = self.hashers.verify(row.get(0), secret.to_owned()).await else {
            tracing::warn!("no argon2 thread took a key check");
            return Err(Denied::RateLimited(Duration::from_secs(1)));
        };
        if !ok {
            self.failed(key_id);
            return Err(refused());
        }
        let scopes: Vec<String> = row.get(1);
        let principal = Principal {
            name: format!("key:{key_id}"),
            scopes: scopes.iter().filter_map(|s| Scope::from_name(s)).collect(),
            rate_per_s: row.get(2),
            burst: row.get::<_, i32>(3).max(1) as u32,
            collection: row.get(4),
        };
        lock(&self.cache).insert(
            digest,
            Cached {
                principal: principal.clone(),
                checked: Instant::now(),
            },
        );
        Ok(principal)
    }

    /// Whether `key_id` is over its allowance of failed checks.
    fn failing(&self, key_id: &str) -> bool {
        lock(&self.failures).get(key_id).is_some_and(|b| {
            b.clone()
                .take(FAILURE_RATE, FAILURE_BURST, Instant::now())
                .is_err()
        })
    }

    /// Count a failed check of `key_id`.
    fn failed(&self, key_id: &str) {
        let mut f = lock(&self.failures);
        if f.len() >= MAX_TRACKED {
            f.clear();
        }
        let _ = f
            .entry(key_id.to_owned())
            .or_insert_with(|| Bucket::full(FAILURE_BURST))
            .take(FAILURE_RATE, FAILURE_BURST, Instant::now());
    }

    /// Forget cached checks of `key_id` (after revoking it here).
    pub fn forget(&self, key_id: &str) {
        let name = format!("key:{key_id}");
        lock(&self.cache).retain(|_, c| c.principal.name != name);
    }

    fn take(&self, p: &Principal) -> std::result::Result<(), Denied> {
        let mut buckets = lock(&self.buckets);
        // one bucket per caller; a flood of callers (JWT subjects) cannot grow it without
        // bound (starting them over full is the cost)
        if buckets.len() >= MAX_TRACKED && !buckets.contains_key(&p.name) {
            buckets.clear();
        }
        let b = buckets
            .entry(p.name.clone())
            .or_insert_with(|| Bucket::full(p.burst));
        b.take(p.rate_per_s, p.burst, Instant::now())
            .map_err(Denied::RateLimited)
    }
}

fn check_jwt(j: &JwtConfig, token: &str) -> std::result::Result<Principal, Denied> {
    let mut v = jsonwebtoken::Validation::new(j.algorithm);
    v.set_issuer(&[&j.issuer]);
    v.set_audience(&[&j.audience]);
    v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    let data = jsonwebtoken::decode::<Claims>(token, &j.key, &v)
        .map_err(|e| Denied::Unauthenticated(format!("the token is not valid here: {e}")))?;
    let scopes = data
        .claims
        .scope
        .split(' ')
        .filter_map(Scope::from_name)
        .collect();
    crate::collection::check(&data.claims.collection).map_err(|e| {
        Denied::Unauthenticated(format!("the token's collection claim is not valid: {e}"))
    })?;
    Ok(Principal {
        name: format!("jwt:{}", data.claims.sub),
        scopes,
        rate_per_s: j.rate_per_s,
        burst: j.burst,
        collection: data.claims.collection,
    })
}

/// A token bucket: `burst` tokens, refilled at `rate` per second; a request takes one.
#[derive(Debug, Clone, Copy)]
pub struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    pub fn full(burst: u32) -> Self {
        Self {
            tokens: f64::from(burst),
            at: Instant::now(),
        }
    }

    /// Take a token at `now`, or say how long until one is there.
    pub fn take(
        &mut self,
        rate: f64,
        burst: u32,
        now: Instant,
    ) -> std::result::Result<(), Duration> {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(f64::from(burst));
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            // (a rate of 0 or NaN would make this infinite: a day is the longest wait told)
            let wait = (1.0 - self.tokens) / rate;
            Err(Duration::try_from_secs_f64(wait)
                .unwrap_or(Duration::MAX)
                .min(Duration::from_secs(86_400)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hashers_check_agrees_with_argon2s_own() {
        use argon2::password_hash::PasswordVerifier;
        let hash = Argon2::default()
            .hash_password(b"the right secret")
            .unwrap()
            .to_string();
        let parsed = PasswordHash::new(&hash).unwrap();
        let mut memory = Vec::new();
        assert!(verify_in(&hash, b"the right secret", &mut memory));
        assert!(Argon2::default()
            .verify_password(b"the right secret", &parsed)
            .is_ok());
        // the memory is sized once (19 MiB for the default cost), then reused
        let blocks = memory.len();
        assert_eq!(blocks, argon2::Params::default().block_count());
        assert!(!verify_in(&hash, b"the wrong secret", &mut memory));
        assert!(!verify_in(&hash, b"", &mut memory));
        assert_eq!(memory.len(), blocks);
        // a damaged hash, another algorithm, a cost over the ceiling: refused
        let damaged = hash.replace("$argon2id$", "$argon2d$");
        assert!(!verify_in(&damaged, b"the right secret", &mut memory));
        assert!(!verify_in("not a hash", b"the right secret", &mut memory));
        let costly = hash.replace("m=19456", "m=1048576");
        assert_ne!(costly, hash);
        assert!(!verify_in(&costly, b"the right secret", &mut memory));
        let mut tampered = hash.clone();
        let last = tampered.pop().unwrap();
        tampered.push(if last == 'A' { 'B' } else { 'A' });
        assert!(!verify_in(&tampered, b"the right secret", &mut memory));
    }

    #[tokio::test]
    async fn while_the_keys_cannot_be_read_a_key_checked_recently_still_goes_in() {
        // a database that never answers
        let keys = deadpool_postgres::Config {
            url: Some("postgresql://nobody@127.0.0.1:1/none".into()),
            ..deadpool_postgres::Config::default()
        }
        .create_pool(
            Some(deadpool_postgres::Runtime::Tokio1),
            tokio_postgres::NoTls,
        )
        .unwrap();
        let auth = Authenticator::new(None);
        let key = |id: &str| format!("uf_{id}_{}", "ab".repeat(32));
        let principal = |id: &str| Principal {
            name: format!("key:{id}"),
            scopes: vec![Scope::Identify],
            rate_per_s: 10.0,
            burst: 10,
            collection: "tenant-a".into(),
        };
        let seen = |id: &str, ago: u64| {
            lock(&auth.cache).insert(
                Sha256::digest(key(id).as_bytes()).into(),
                Cached {
                    principal: principal(id),
                    checked: Instant::now()
                        .checked_sub(Duration::from_secs(ago))
                        .unwrap(),
                },
            );
        };
        // checked a minute ago (past the cache's 30 s, within the stale window): let in
        seen("00000000000000aa", 60);
        let p = auth
            .authenticate(&keys, Some(&format!("Bearer {}", key("00000000000000aa"))))
            .await
            .unwrap();
        assert_eq!(p, principal("00000000000000aa"));
        // checked longer ago than the stale window, or never: 503, not a verdict on the key
        seen("00000000000000bb", KEY_STALE_TTL.as_secs() + 1);
        for id in ["00000000000000bb", "00000000000000cc"] {
            let r = auth
                .authenticate(&keys, Some(&format!("Bearer {}", key(id))))
                .await;
            assert!(matches!(r, Err(Denied::Unavailable(_))), "{id}: {r:?}");
        }
        // a busy pool is not an outage
        assert!(!unreachable(&deadpool_postgres::PoolError::Timeout(
            deadpool_postgres::TimeoutType::Wait
        )));
        assert!(unreachable(&deadpool_postgres::PoolError::Timeout(
            deadpool_postgres::TimeoutType::Create
        )));
        // a forgotten (revoked here) key is not let in from the stale cache either
        seen("00000000000000dd", 60);
        auth.forget("00000000000000dd");
        let r = auth
            .authenticate(&keys, Some(&format!("Bearer {}", key("00000000000000dd"))))
            .await;
        assert!(matches!(r, Err(Denied::Unavailable(_))), "{r:?}");
    }

    #[test]
    fn a_bucket_lets_a_burst_through_then_the_rate() {
        let t0 = Instant::now();
        let mut b = Bucket {
            tokens: 3.0,
            at: t0,
        };
        for _ in 0..3 {
            b.take(2.0, 3, t0).unwrap();
        }
        let wait = b.take(2.0, 3, t0).unwrap_err();
        assert!((wait.as_secs_f64() - 0.5).abs() < 1e-9, "{wait:?}");
        // half a second later one token is back, not more
        let t1 = t0 + Duration::from_millis(500);
        b.take(2.0, 3, t1).unwrap();
        assert!(b.take(2.0, 3, t1).is_err());
        // a long pause refills to the burst only
        let t2 = t1 + Duration::from_secs(60);
        for _ in 0..3 {
            b.take(2.0, 3, t2).unwrap();
        }
        assert!(b.take(2.0, 3, t2).is_err());
    }

    #[test]
    fn scopes_parse_and_admin_implies_all() {
        assert_eq!(
            parse_scopes("verify,enroll enroll").unwrap(),
            vec![Scope::Enroll, Scope::Verify]
        );
        assert!(parse_scopes("root").is_err());
        let p = Principal {
            name: "t".into(),
            scopes: vec![Scope::Admin],
            rate_per_s: 1.0,
            burst: 1,
            collection: String::new(),
        };
        assert!(Scope::ALL.iter().all(|s| p.may(*s)));
        let q = Principal {
            scopes: vec![Scope::Verify],
            ..p
        };
        assert!(q.may(Scope::Verify) && !q.may(Scope::Enroll));
    }
}
