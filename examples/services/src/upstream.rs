//! One process per role: how the gateway reaches the others. A request whose role the gateway
//! does not run itself is forwarded to that role's process (after authentication and the rate
//! limit, which only the gateway applies), with the deployment's internal token instead of the
//! caller's credentials; identification is scattered to the replica that owns each shard and
//! merged here. Role processes accept the internal token and nothing else on `/internal/*`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::{header, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::http::ApiError;

/// The header that carries the internal token between the deployment's processes.
pub const INTERNAL_HEADER: &str = "x-uniface-internal";

/// The header that names the caller the gateway admitted (next to the internal token only).
pub const PRINCIPAL_HEADER: &str = "x-uniface-principal";

/// The header that names the admitted caller's collection (hex, next to the internal token only).
pub const COLLECTION_HEADER: &str = "x-uniface-collection";

/// Largest answer read from another process.
const MAX_ANSWER: usize = 64 << 20;

/// How often every member's health is checked, and how long a check may take.
pub const HEALTH_EVERY: Duration = Duration::from_secs(1);
const HEALTH_TIMEOUT: Duration = Duration::from_millis(800);

/// How long a search of a replica may take before it is tried on another (a search takes
/// milliseconds; work that queues behind the CNN — finding faces, enrollments, verifications —
/// has only the request's deadline).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether reading a body failed on its length limit (rather than a broken connection).
fn over_limit(e: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if s.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = s.source();
    }
    false
}

/// Remove the headers that describe one connection, not the message (RFC 9110 section 7.6.1):
/// those named by `Connection` and the standard hop-by-hop ones. A forwarded request or answer
/// travels on another connection.
pub(crate) fn strip_hop_by_hop(headers: &mut axum::http::HeaderMap) {
    let named: Vec<String> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|n| n.trim().to_ascii_lowercase())
        .filter(|n| !n.is_empty())
        .collect();
    for n in named {
        headers.remove(n.as_str());
    }
    for h in [
        header::CONNECTION,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        header::PROXY_AUTHORIZATION,
        header::PROXY_AUTHENTICATE,
    ] {
        headers.remove(h);
    }
    headers.remove("keep-alive");
    headers.remove("proxy-connection");
}

/// What a member's last health check (or failed call) found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    /// Refused, timed out or answered an error: no traffic until a check passes again.
    Down = 0,
    /// Answers, but is not caught up (a replica still applying its queue): used when no ready
    /// member is left.
    Alive = 1,
    Ready = 2,
}

/// Which part of the gallery an identification replica holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Holds {
    All,
    Shard { index: usize, of: usize },
}

/// One process of a role (or one identification replica) and what is known of its health.
#[derive(Debug)]
pub struct Member {
    /// Base URL, `http://127.0.0.1:8081`.
    pub url: String,
    health: AtomicU8,
    /// Replicas: what it said it holds (unknown until its first check).
    holds: Mutex<Option<Holds>>,
}

impl Member {
    fn new(url: String) -> Arc<Self> {
        Arc::new(Self {
            url,
            health: AtomicU8::new(Health::Down as u8),
            holds: Mutex::new(None),
        })
    }

    pub fn health(&self) -> Health {
        match self.health.load(Ordering::SeqCst) {
            2 => Health::Ready,
            1 => Health::Alive,
            _ => Health::Down,
        }
    }

    fn set(&self, h: Health) {
        let before = self.health.swap(h as u8, Ordering::SeqCst);
        if before != h as u8 {
            match h {
                Health::Down => tracing::warn!(url = %self.url, "upstream down"),
                _ => tracing::info!(url = %self.url, health = ?h, "upstream up"),
            }
        }
    }

    pub fn holds(&self) -> Option<Holds> {
        *crate::lock(&self.holds)
    }
}

/// Where the roles this process does not run live, and how they are doing.
#[derive(Debug, Clone)]
pub struct Upstream {
    /// Role → its processes (`--upstream ROLE=URL`, repeated for several).
    pub roles: HashMap<String, Vec<Arc<Member>>>,
    /// The identification replicas: full copies of the gallery, or one shard each.
    pub replicas: Vec<Arc<Member>>,
    /// Shared by the deployment's processes (`None`: one process, nothing to trust).
    pub token: Option<String>,
    client: Client<HttpConnector, Body>,
    /// Round robin over interchangeable members.
    next: Arc<AtomicUsize>,
}

/// What went wrong with one call: whether the request may have reached the member.
enum Failure {
    /// Not connected: nothing was sent, any request may go to another member.
    NotSent(String),
    /// Sent, but no (usable) answer came: only an idempotent request may be repeated.
    Sent(String),
    /// Sent, and no answer within the call's limit: the member is slow, not down; only an
    /// idempotent request may be repeated.
    Slow(String),
}

impl Failure {
    fn text(self) -> String {
        match self {
            Failure::NotSent(e) | Failure::Sent(e) | Failure::Slow(e) => e,
        }
    }
}

impl Upstream {
    pub fn new(
        roles: HashMap<String, Vec<String>>,
        replicas: Vec<String>,
        token: Option<String>,
    ) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(Duration::from_secs(2)));
        connector.set_nodelay(true);
        Self {
            roles: roles
                .into_iter()
                .map(|(r, urls)| (r, urls.into_iter().map(Member::new).collect()))
                .collect(),
            replicas: replicas.into_iter().map(Member::new).collect(),
            token,
            client: Client::builder(TokioExecutor::new()).build(connector),
            next: Default::default(),
        }
    }

    /// Every member, once.
    pub fn members(&self) -> Vec<Arc<Member>> {
        let mut all: Vec<Arc<Member>> = self.roles.values().flatten().cloned().collect();
        all.extend(self.replicas.iter().cloned());
        all
    }

    /// Check every member now (each check bounded by its timeout).
    pub async fn check(&self) {
        let checks = self.members().into_iter().map(|m| {
            let this = self.clone();
            let replica = self.replicas.iter().any(|r| Arc::ptr_eq(r, &m));
            tokio::spawn(async move { this.check_one(&m, replica).await })
        });
        for c in checks.collect::<Vec<_>>() {
            let _ = c.await;
        }
    }

    async fn check_one(&self, m: &Member, replica: bool) {
        let path = if replica {
            "/internal/state"
        } else {
            "/healthz"
        };
        let answer = tokio::time::timeout(
            HEALTH_TIMEOUT,
            self.send(&m.url, Method::GET, path, None, None),
        )
        .await;
        let (status, body) = match answer {
            Ok(Ok(a)) => a,
            _ => return m.set(Health::Down),
        };
        if !status.is_success() {
            return m.set(Health::Down);
        }
        if !replica {
            return m.set(Health::Ready);
        }
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        let holds = match (v["shard"].as_u64(), v["shards"].as_u64()) {
            (Some(i), Some(n)) => Holds::Shard {
                index: i as usize,
                of: n as usize,
            },
            _ => Holds::All,
        };
        *crate::lock(&m.holds) = Some(holds);
        m.set(match (v["loaded"].as_bool(), v["ready"].as_bool()) {
            (Some(true), Some(true)) => Health::Ready,
            (Some(true), _) => Health::Alive,
            _ => Health::Down,
        });
    }

    /// Check every member every [`HEALTH_EVERY`], for as long as the process runs.
    pub fn watch(&self) {
        if self.members().is_empty() {
            return;
        }
        let this = self.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(HEALTH_EVERY);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                this.check().await;
            }
        });
    }

    /// The members to try for `role`, best first, interchangeable ones in turn.
    fn candidates(&self, members: &[Arc<Member>]) -> Vec<Arc<Member>> {
        let turn = self.next.fetch_add(1, Ordering::Relaxed);
        order(members, turn)
    }

    /// Whether `headers` carry this deployment's internal token.
    pub fn is_internal(&self, headers: &axum::http::HeaderMap) -> bool {
        let (Some(token), Some(got)) = (&self.token, headers.get(INTERNAL_HEADER)) else {
            return false;
        };
        // compared in constant time
        let (a, b) = (token.as_bytes(), got.as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }

    fn unavailable(what: &str, e: impl std::fmt::Display) -> ApiError {
        ApiError {
            retry_after: Some(Duration::from_secs(1)),
            ..ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "upstream_unavailable",
                format!("{what}: {e}"),
            )
        }
    }

    /// Forward `req` to a process of `role`, with the internal token for credentials. The body
    /// is read first (at most `max_body` bytes; more is 413 without reading the rest), so that
    /// a request that could not be delivered goes to the role's next process; one that may have
    /// been delivered is repeated there only when `idempotent`.
    pub async fn forward(
        &self,
        role: &str,
        req: Request,
        max_body: usize,
        idempotent: bool,
    ) -> Response {
        let Some(members) = self.roles.get(role) else {
            return Self::unavailable(role, "no process is configured for this role")
                .into_response();
        };
        let (mut parts, body) = req.into_parts();
        let body = match axum::body::to_bytes(body, max_body).await {
            Ok(b) => b,
            Err(e) if over_limit(&e) => {
                return ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "too_large",
                    format!("the body is over {max_body} bytes"),
                )
                .into_response()
            }
            // a reset, bad chunking, a client gone: not a size the caller should change
            Err(e) => {
                return ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    format!("the body could not be read: {e}"),
                )
                .into_response()
            }
        };
        strip_hop_by_hop(&mut parts.headers);
        let path = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_default();
        parts.headers.remove(header::AUTHORIZATION);
        parts.headers.remove(header::HOST);
        parts.headers.remove(header::CONTENT_LENGTH);
        parts.headers.remove(PRINCIPAL_HEADER);
        parts.headers.remove(COLLECTION_HEADER);
        if let Some(v) = self
            .token
            .as_deref()
            .and_then(|t| HeaderValue::from_str(t).ok())
        {
            parts.headers.insert(INTERNAL_HEADER, v);
        }
        // hex: any caller name (a JWT subject is any text) survives the header
        if let Some(c) = parts.extensions.get::<crate::http::Caller>().cloned() {
            for (name, value) in [
                (PRINCIPAL_HEADER, &c.name),
                (COLLECTION_HEADER, &c.collection),
            ] {
                if let Ok(v) = HeaderValue::from_str(&hex(value.as_bytes())) {
                    parts.headers.insert(name, v);
                }
            }
        }
        let mut last = String::from("no process of this role answers its health checks");
        for (attempt, m) in self.candidates(members).iter().take(2).enumerate() {
            let mut req = Request::from_parts(parts.clone(), Body::from(body.clone()));
            *req.uri_mut() = match format!("{}{path}", m.url).parse::<Uri>() {
                Ok(u) => u,
                Err(e) => return Self::unavailable(role, e).into_response(),
            };
            match self.deliver(m, req).await {
                Ok(mut r) => {
                    strip_hop_by_hop(r.headers_mut());
                    if attempt > 0 {
                        metrics::counter!("uniface_upstream_retries_total", "role" => role.to_owned())
                            .increment(1);
                    }
                    return r;
                }
                Err(Failure::NotSent(e)) => last = format!("{}: {e}", m.url),
                Err(f) => {
                    last = format!("{}: {}", m.url, f.text());
                    if !idempotent {
                        break;
                    }
                }
            }
        }
        Self::unavailable(&format!("the {role} role"), last).into_response()
    }

    /// One request to `m`, bounded only by the request's own deadline (an enrollment queued
    /// behind others is slow, not failed); a member that cannot be reached or breaks the
    /// connection is marked down until its next health check passes. A 502/504 answer counts
    /// as sent but failed.
    async fn deliver(&self, m: &Member, req: Request) -> Result<Response, Failure> {
        let failed = |f: Failure| {
            if !matches!(f, Failure::Slow(_)) {
                m.set(Health::Down);
            }
            Err(f)
        };
        match self.request(req, None).await {
            Err(f) => failed(f),
            Ok(r) => match r.status() {
                StatusCode::BAD_GATEWAY | StatusCode::GATEWAY_TIMEOUT => {
                    failed(Failure::Sent(format!("answered {}", r.status())))
                }
                _ => Ok(r.into_response()),
            },
        }
    }

    /// `req` sent, bounded by `limit` when one is given: the answer's head, or what kind of
    /// failure.
    async fn request(
        &self,
        req: Request,
        limit: Option<Duration>,
    ) -> Result<axum::http::Response<Body>, Failure> {
        let limit = limit.unwrap_or(Duration::MAX);
        match tokio::time::timeout(limit, self.client.request(req)).await {
            Err(_) => Err(Failure::Slow(format!("no answer within {limit:?}"))),
            Ok(Err(e)) if e.is_connect() => Err(Failure::NotSent(e.to_string())),
            Ok(Err(e)) => Err(Failure::Sent(e.to_string())),
            Ok(Ok(r)) => Ok(r.map(Body::new)),
        }
    }

    /// A request to another process, bounded by `limit` when given: its status and body
    /// (transport errors as [`Failure`]).
    async fn send(
        &self,
        base: &str,
        method: Method,
        path: &str,
        body: Option<(&str, Bytes)>,
        limit: Option<Duration>,
    ) -> Result<(StatusCode, Bytes), Failure> {
        let mut b = axum::http::Request::builder()
            .method(method)
            .uri(format!("{base}{path}"));
        if let Some(t) = &self.token {
            b = b.header(INTERNAL_HEADER, t);
        }
        let body = match body {
            Some((content_type, bytes)) => {
                b = b.header(header::CONTENT_TYPE, content_type);
                Body::from(bytes)
            }
            None => Body::empty(),
        };
        let req = b.body(body).map_err(|e| Failure::NotSent(e.to_string()))?;
        let req = crate::http::with_request_id(req);
        let r = self.request(req, limit).await?;
        let status = r.status();
        let bytes = axum::body::to_bytes(r.into_body(), MAX_ANSWER)
            .await
            .map_err(|e| Failure::Sent(e.to_string()))?;
        Ok((status, bytes))
    }

    /// A call to the process at `base`: its status and body.
    pub async fn call(
        &self,
        base: &str,
        method: Method,
        path: &str,
        body: Option<(&str, Bytes)>,
    ) -> Result<(StatusCode, Bytes), ApiError> {
        self.send(base, method, path, body, None)
            .await
            .map_err(|f| Self::unavailable(base, f.text()))
    }

    /// An idempotent call to the first of `members` that answers: when a member cannot be
    /// reached, breaks the connection, takes longer than `limit` or answers 5xx, the call is
    /// repeated once on the next. Only the first two mark it down (slow or refusing is not
    /// down: its health checks decide). The answer is the first member's 2xx/4xx, or the last
    /// failure.
    pub async fn call_any(
        &self,
        members: &[Arc<Member>],
        what: &str,
        method: Method,
        path: &str,
        body: Option<(&str, Bytes)>,
        limit: Option<Duration>,
    ) -> Result<(StatusCode, Bytes), ApiError> {
        let mut last = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "upstream_unavailable",
            format!("no {what} answers its health checks"),
        );
        for (attempt, m) in members.iter().take(2).enumerate() {
            if attempt > 0 {
                metrics::counter!("uniface_upstream_retries_total", "role" => what.to_owned())
                    .increment(1);
            }
            match self
                .send(&m.url, method.clone(), path, body.clone(), limit)
                .await
            {
                Ok((status, bytes)) if !status.is_server_error() => return Ok((status, bytes)),
                Ok((status, bytes)) => {
                    let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
                    last = ApiError {
                        retry_after: Some(Duration::from_secs(1)),
                        ..ApiError::new(
                            status,
                            "upstream_refused",
                            format!(
                                "{}: {}",
                                m.url,
                                v["error"]["message"].as_str().unwrap_or("")
                            ),
                        )
                    };
                }
                Err(f) => {
                    if !matches!(f, Failure::Slow(_)) {
                        m.set(Health::Down);
                    }
                    last = Self::unavailable(&m.url, f.text());
                }
            }
        }
        Err(last)
    }

    /// [`Upstream::call`] for a JSON answer that must be a success.
    pub async fn json(
        &self,
        base: &str,
        method: Method,
        path: &str,
        body: Option<(&str, Bytes)>,
    ) -> Result<serde_json::Value, ApiError> {
        let (status, bytes) = self.call(base, method, path, body).await?;
        parse_success(base, status, &bytes)
    }

    /// The replicas that can find faces, best first, in turn.
    pub fn finders(&self) -> Vec<Arc<Member>> {
        self.candidates(&self.replicas)
    }

    /// For each part of the gallery, the replicas to ask for it (best first, in turn): one
    /// part when a replica of the whole gallery answers, else one per shard. An error names
    /// the part no replica answers for.
    pub fn search_plan(&self) -> Result<Vec<Vec<Arc<Member>>>, ApiError> {
        let turn = self.next.fetch_add(1, Ordering::Relaxed);
        let held: Vec<(Holds, Health)> = self
            .replicas
            .iter()
            .map(|m| (m.holds().unwrap_or(Holds::All), m.health()))
            .collect();
        // no live replica for some part: those marked down are tried too (they may be back
        // before their next check), as long as they once said what they hold
        let last_resort: Vec<(Holds, Health)> = self
            .replicas
            .iter()
            .map(|m| match (m.holds(), m.health()) {
                (Some(h), Health::Down) => (h, Health::Alive),
                (Some(h), health) => (h, health),
                (None, _) => (Holds::All, Health::Down),
            })
            .collect();
        plan(&held, turn)
            .or_else(|e| plan(&last_resort, turn).map_err(|_| e))
            .map(|parts| {
                parts
                    .into_iter()
                    .map(|p| p.into_iter().map(|i| self.replicas[i].clone()).collect())
                    .collect()
            })
            .map_err(|e| ApiError {
                retry_after: Some(Duration::from_secs(1)),
                ..ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "shard_unavailable", e)
            })
    }
}

/// A JSON answer that must be a success.
pub fn parse_success(
    what: &str,
    status: StatusCode,
    bytes: &[u8],
) -> Result<serde_json::Value, ApiError> {
    let v: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| Upstream::unavailable(what, format!("an answer that is not JSON: {e}")))?;
    if !status.is_success() {
        return Err(Upstream::unavailable(
            what,
            format!("answered {status}: {v}"),
        ));
    }
    Ok(v)
}

/// `members`, ready before alive before down, each group rotated by `turn`.
fn order(members: &[Arc<Member>], turn: usize) -> Vec<Arc<Member>> {
    let health: Vec<Health> = members.iter().map(|m| m.health()).collect();
    rank(&health, turn, true)
        .into_iter()
        .map(|i| members[i].clone())
        .collect()
}

/// Indices of the members that are not down — ready ones first, then alive ones — and, with
/// `last_resort`, the down ones after them (a check may not have seen them recover); each group
/// rotated by `turn` so that load spreads.
fn rank(health: &[Health], turn: usize, last_resort: bool) -> Vec<usize> {
    let mut out = Vec::new();
    let groups: &[Health] = match last_resort {
        true => &[Health::Ready, Health::Alive, Health::Down],
        false => &[Health::Ready, Health::Alive],
    };
    for &h in groups {
        let group: Vec<usize> = (0..health.len()).filter(|&i| health[i] == h).collect();
        if !group.is_empty() {
            let r = turn % group.len();
            out.extend(group[r..].iter().chain(&group[..r]));
        }
    }
    out
}

/// The replicas to ask for each part of the gallery (indices into `held`): all copies of the
/// whole gallery as one part when one answers, else one part per shard.
fn plan(held: &[(Holds, Health)], turn: usize) -> Result<Vec<Vec<usize>>, String> {
    let pick = |want: &dyn Fn(Holds) -> bool| -> Vec<usize> {
        let idx: Vec<usize> = (0..held.len()).filter(|&i| want(held[i].0)).collect();
        let health: Vec<Health> = idx.iter().map(|&i| held[i].1).collect();
        rank(&health, turn, false)
            .into_iter()
            .map(|j| idx[j])
            .collect()
    };
    let whole = pick(&|h| h == Holds::All);
    if !whole.is_empty() {
        return Ok(vec![whole]);
    }
    let mut of = None;
    for (h, _) in held {
        if let Holds::Shard { of: n, .. } = h {
            if of.is_some_and(|o| o != *n) {
                return Err("the replicas disagree on the number of shards".into());
            }
            of = Some(*n);
        }
    }
    let Some(n) = of else {
        return Err("no identification replica answers its health checks".into());
    };
    (0..n)
        .map(|i| {
            let part = pick(&|h| h == Holds::Shard { index: i, of: n });
            match part.is_empty() {
                true => Err(format!(
                    "no replica of shard {i} (of {n}) answers its health checks"
                )),
                false => Ok(part),
            }
        })
        .collect()
}

/// Hex text of bytes (templates between processes).
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Bytes of hex text.
pub fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips_and_refuses_odd_or_foreign_text() {
        let b: Vec<u8> = (0..=255).collect();
        assert_eq!(unhex(&hex(&b)).unwrap(), b);
        assert!(unhex("abc").is_none());
        assert!(unhex("zz").is_none());
    }

    #[test]
    fn ready_members_come_first_and_take_turns() {
        use Health::*;
        assert_eq!(rank(&[Ready, Down, Ready, Alive], 0, false), [0, 2, 3]);
        assert_eq!(rank(&[Ready, Down, Ready, Alive], 1, false), [2, 0, 3]);
        assert_eq!(rank(&[Down, Alive], 5, false), [1]);
        assert!(rank(&[Down, Down], 0, false).is_empty());
        // as a last resort, the down ones after the others
        assert_eq!(rank(&[Ready, Down, Ready, Alive], 0, true), [0, 2, 3, 1]);
        assert_eq!(rank(&[Down, Down], 1, true), [1, 0]);
    }

    #[test]
    fn a_search_covers_every_shard_or_names_the_missing_one() {
        use Health::*;
        let s = |index| Holds::Shard { index, of: 2 };
        // two full copies: one part, the ready copy first
        assert_eq!(
            plan(&[(Holds::All, Alive), (Holds::All, Ready)], 0).unwrap(),
            [vec![1, 0]]
        );
        // one copy down: the other alone
        assert_eq!(
            plan(&[(Holds::All, Down), (Holds::All, Ready)], 0).unwrap(),
            [vec![1]]
        );
        // shards, two replicas of shard 0
        assert_eq!(
            plan(&[(s(0), Ready), (s(1), Ready), (s(0), Ready)], 1).unwrap(),
            [vec![2, 0], vec![1]]
        );
        // a shard with no replica that answers: an error that names it, never half an answer
        let e = plan(&[(s(0), Ready), (s(1), Down)], 0).unwrap_err();
        assert!(e.contains("shard 1 (of 2)"), "{e}");
        // full copies all down, shard replicas up: the shards
        assert_eq!(
            plan(&[(Holds::All, Down), (s(0), Ready), (s(1), Alive)], 0).unwrap(),
            [vec![1], vec![2]]
        );
        assert!(plan(&[(Holds::All, Down)], 0).is_err());
        assert!(plan(
            &[(s(0), Ready), (Holds::Shard { index: 0, of: 3 }, Ready)],
            0
        )
        .is_err());
    }

    #[test]
    fn hop_by_hop_headers_stay_on_their_connection() {
        let mut h = axum::http::HeaderMap::new();
        for (k, v) in [
            ("connection", "keep-alive, X-Secret-Hop"),
            ("keep-alive", "timeout=5"),
            ("x-secret-hop", "1"),
            ("te", "trailers"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("proxy-authorization", "Basic Zm9vOmJhcg=="),
            ("content-type", "image/jpeg"),
            ("idempotency-key", "k1"),
        ] {
            h.append(k, HeaderValue::from_static(v));
        }
        strip_hop_by_hop(&mut h);
        let mut left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        left.sort();
        assert_eq!(left, ["content-type", "idempotency-key"]);
    }

    #[tokio::test]
    async fn a_body_over_the_limit_is_told_from_one_that_broke() {
        let over = axum::body::to_bytes(Body::from(vec![0u8; 100]), 10)
            .await
            .unwrap_err();
        assert!(over_limit(&over));
        // a stream that fails half-way
        let broken = Body::from_stream(futures_lite::stream::iter([
            Ok(Bytes::from_static(b"abc")),
            Err(std::io::Error::other("connection reset")),
        ]));
        let e = axum::body::to_bytes(broken, 10).await.unwrap_err();
        assert!(!over_limit(&e), "{e}");
    }

    #[test]
    fn the_internal_token_must_match_exactly() {
        let u = Upstream::new(HashMap::new(), Vec::new(), Some("secret".into()));
        let mut h = axum::http::HeaderMap::new();
        assert!(!u.is_internal(&h));
        h.insert(INTERNAL_HEADER, HeaderValue::from_static("secreT"));
        assert!(!u.is_internal(&h));
        h.insert(INTERNAL_HEADER, HeaderValue::from_static("secret"));
        assert!(u.is_internal(&h));
        // a single process trusts no one this way
        let alone = Upstream::new(HashMap::new(), Vec::new(), None);
        assert!(!alone.is_internal(&h));
    }
}
