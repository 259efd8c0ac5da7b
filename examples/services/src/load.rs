//! The load generator (`uniface-services load`): a mixed workload of enrollments,
//! verifications, identifications and erasures through a gateway, closed-loop at N clients or
//! open-loop at a fixed rate, bounded in requests and time. Every answer is kept as an
//! [`Outcome`] (so that a checker can hold the deployment to what it acknowledged: each 201
//! enrollment and 204 erasure), and summed up as a [`Report`]: throughput, p50/p90/p99/p99.9
//! latency and the answers by status, per kind of request.
//!
//! Open loop measures each request from the moment it was due, not from when a client got to
//! it, so a deployment that falls behind shows its queueing in the latencies (no coordinated
//! omission).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::bench::Payload;
use crate::{lock, Error, Result};

/// The kinds of request, in the order the mix names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Enroll,
    Verify,
    Identify,
    Erase,
}

impl Kind {
    const ALL: [Kind; 4] = [Kind::Enroll, Kind::Verify, Kind::Identify, Kind::Erase];

    fn name(self) -> &'static str {
        match self {
            Kind::Enroll => "enroll",
            Kind::Verify => "verify",
            Kind::Identify => "identify",
            Kind::Erase => "erase",
        }
    }
}

/// Proportions of each kind, e.g. `enroll=1,identify=3`, and the cycle of kinds they make
/// (computed once, when parsed).
#[derive(Debug, Clone, PartialEq)]
pub struct Mix {
    weights: Vec<(Kind, u32)>,
    cycle: Vec<Kind>,
}

impl std::str::FromStr for Mix {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let mut out = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, weight) = part.split_once('=').unwrap_or((part, "1"));
            let kind = Kind::ALL
                .into_iter()
                .find(|k| k.name() == name)
                .ok_or_else(|| {
                    format!("{name:?}: the kinds are enroll, verify, identify, erase")
                })?;
            let weight: u32 = weight
                .parse()
                .ok()
                .filter(|&w| w <= 1000)
                .ok_or_else(|| format!("{part:?}: a weight is a whole number up to 1000"))?;
            if weight > 0 {
                out.push((kind, weight));
            }
        }
        if out.is_empty() {
            return Err("the mix names no request, e.g. enroll=1,identify=3".into());
        }
        let cycle = cycle(&out);
        Ok(Mix {
            weights: out,
            cycle,
        })
    }
}

/// One cycle of kinds, each as often as its weight, interleaved (smooth weighted round robin:
/// every step, the kind furthest behind its share goes next).
fn cycle(weights: &[(Kind, u32)]) -> Vec<Kind> {
    let total: i64 = weights.iter().map(|&(_, w)| i64::from(w)).sum();
    let mut credit = vec![0i64; weights.len()];
    (0..total)
        .map(|_| {
            for (c, &(_, w)) in credit.iter_mut().zip(weights) {
                *c += i64::from(w);
            }
            let best = (0..credit.len())
                .max_by_key(|&j| (credit[j], -(j as i64)))
                .unwrap_or(0);
            credit[best] -= total;
            weights[best].0
        })
        .collect()
}

impl Mix {
    /// The kind of the `i`-th request.
    fn kind(&self, i: usize) -> Kind {
        self.cycle[i % self.cycle.len()]
    }
}

/// How requests are paced.
#[derive(Debug, Clone, Copy)]
pub enum Pacing {
    /// `clients` threads, each sending its next request when the last is answered.
    Closed { clients: usize },
    /// `rate` requests per second, due at fixed times, on up to `in_flight` connections.
    Open { rate: f64, in_flight: usize },
}

/// One run of the load generator.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// The gateway, `http://127.0.0.1:8080`.
    pub url: String,
    /// A key with the scopes the mix needs.
    pub key: String,
    pub mix: Mix,
    pub pacing: Pacing,
    /// At most this many requests, and for at most this long.
    pub max_requests: usize,
    pub duration: Duration,
    /// Subjects enrolled are `<prefix>-<n>`.
    pub prefix: String,
}

/// One request's answer. `status` 0: no answer (refused connection, timeout).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Outcome {
    pub kind: Kind,
    pub subject: Option<String>,
    pub status: u16,
    pub face_id: Option<i64>,
    pub ms: f64,
    /// Seconds from the start of the run at which the request was due (or sent).
    pub at: f64,
}

/// Throughput and latency of one kind of request: the percentiles are of the successful (2xx)
/// answers, so that quick refusals do not flatter them; `statuses` counts every answer.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Stats {
    pub requests: usize,
    pub per_second: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    /// Answers by status (`0`: none came).
    pub statuses: BTreeMap<u16, usize>,
}

/// What a run measured: per kind and over all.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    pub pacing: String,
    pub seconds: f64,
    pub kinds: BTreeMap<&'static str, Stats>,
    pub all: Stats,
}

fn stats(outcomes: &[&Outcome], seconds: f64) -> Stats {
    let mut ms: Vec<f64> = outcomes
        .iter()
        .filter(|o| (200..300).contains(&o.status))
        .map(|o| o.ms)
        .collect();
    ms.sort_by(f64::total_cmp);
    let q = |q: f64| {
        if ms.is_empty() {
            return 0.0;
        }
        let i = ((q * ms.len() as f64).ceil() as usize).clamp(1, ms.len()) - 1;
        ms[i]
    };
    let mut statuses = BTreeMap::new();
    for o in outcomes {
        *statuses.entry(o.status).or_insert(0) += 1;
    }
    Stats {
        requests: outcomes.len(),
        per_second: outcomes.len() as f64 / seconds.max(1e-9),
        p50_ms: q(0.5),
        p90_ms: q(0.9),
        p99_ms: q(0.99),
        p999_ms: q(0.999),
        statuses,
    }
}

/// The report of `outcomes`, a run of `seconds` paced as `pacing`.
pub fn report(outcomes: &[Outcome], seconds: f64, pacing: Pacing) -> Report {
    let mut kinds = BTreeMap::new();
    for k in Kind::ALL {
        let of: Vec<&Outcome> = outcomes.iter().filter(|o| o.kind == k).collect();
        if !of.is_empty() {
            kinds.insert(k.name(), stats(&of, seconds));
        }
    }
    Report {
        pacing: match pacing {
            Pacing::Closed { clients } => format!("closed loop, {clients} clients"),
            Pacing::Open { rate, in_flight } => {
                format!("open loop, {rate} requests/s, at most {in_flight} in flight")
            }
        },
        seconds,
        kinds,
        all: stats(&outcomes.iter().collect::<Vec<_>>(), seconds),
    }
}

/// The state the clients share: which subjects are enrolled (by the run, acknowledged and not
/// erased since), for verifications and erasures to pick from.
struct Shared<'a> {
    config: &'a LoadConfig,
    bodies: Vec<Vec<u8>>,
    content_type: &'static str,
    agent: ureq::Agent,
    next_subject: AtomicUsize,
    enrolled: Mutex<Vec<(String, usize)>>,
}

impl Shared<'_> {
    fn send(&self, i: usize, at: f64, due: Instant) -> Outcome {
        let kind = self.config.mix.kind(i);
        let base = &self.config.url;
        // (method, path, body index, subject)
        let (method, path, body, subject) = match kind {
            Kind::Enroll => {
                let n = self.next_subject.fetch_add(1, Ordering::SeqCst);
                let s = format!("{}-{n}", self.config.prefix);
                (
                    "POST",
                    format!("/v1/subjects/{s}/faces?policy=none"),
                    Some(n),
                    Some(s),
                )
            }
            Kind::Identify => (
                "POST",
                "/v1/identify?face=largest&k=5".into(),
                Some(i),
                None,
            ),
            Kind::Verify | Kind::Erase => {
                let picked = {
                    let mut e = lock(&self.enrolled);
                    match (kind, e.len()) {
                        (_, 0) => None,
                        (Kind::Erase, n) => Some(e.swap_remove(i % n)),
                        (_, n) => Some(e[i % n].clone()),
                    }
                };
                match (kind, picked) {
                    // nothing enrolled yet: an identification instead
                    (_, None) => (
                        "POST",
                        "/v1/identify?face=largest&k=5".into(),
                        Some(i),
                        None,
                    ),
                    (Kind::Erase, Some((s, _))) => {
                        ("DELETE", format!("/v1/subjects/{s}"), None, Some(s))
                    }
                    (_, Some((s, b))) => {
                        ("POST", format!("/v1/verify?subject={s}"), Some(b), Some(s))
                    }
                }
            }
        };
        let kind = match (kind, method, subject.is_some()) {
            (Kind::Verify | Kind::Erase, "POST", false) => Kind::Identify,
            (k, _, _) => k,
        };
        let mut b = ureq::http::Request::builder()
            .method(method)
            .uri(format!("{base}{path}"))
            .header("Authorization", format!("Bearer {}", self.config.key));
        let bytes = match body {
            Some(n) => {
                b = b.header("Content-Type", self.content_type);
                self.bodies[n % self.bodies.len()].clone()
            }
            None => Vec::new(),
        };
        let answer = b
            .body(bytes)
            .map_err(|e| e.to_string())
            .and_then(|req| self.agent.run(req).map_err(|e| e.to_string()))
            .map(|mut r| {
                let status = r.status().as_u16();
                let v: serde_json::Value =
                    r.body_mut().read_json().unwrap_or(serde_json::Value::Null);
                (status, v)
            });
        let ms = due.elapsed().as_secs_f64() * 1e3;
        let (status, v) = answer.unwrap_or((0, serde_json::Value::Null));
        let face_id = v["face_id"].as_i64();
        if kind == Kind::Enroll && status == 201 {
            if let (Some(s), Some(n)) = (&subject, body) {
                lock(&self.enrolled).push((s.clone(), n));
            }
        }
        Outcome {
            kind,
            subject,
            status,
            face_id,
            ms,
            at,
        }
    }
}

/// Run the load `config` describes with `payload`'s bodies; every answer, in the order they
/// came, and the run's length in seconds.
pub fn run(config: &LoadConfig, payload: &Payload) -> Result<(Vec<Outcome>, f64)> {
    let (bodies, content_type) = payload.bodies()?;
    if bodies.is_empty() {
        return Err(Error::Invalid(
            "the load needs at least one photo or template".into(),
        ));
    }
    let clients = match config.pacing {
        Pacing::Closed { clients } => clients,
        Pacing::Open { in_flight, rate } => {
            if !(rate > 0.0 && rate.is_finite()) {
                return Err(Error::Invalid(format!(
                    "--rate {rate}: requests per second > 0"
                )));
            }
            in_flight
        }
    }
    .clamp(1, 1024);
    let shared = Shared {
        config,
        bodies,
        content_type,
        agent: ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_idle_connections(clients)
            .max_idle_connections_per_host(clients)
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .into(),
        next_subject: AtomicUsize::new(0),
        enrolled: Mutex::new(Vec::new()),
    };
    let next = AtomicUsize::new(0);
    let outcomes = Mutex::new(Vec::new());
    let started = Instant::now();
    let deadline = started + config.duration;
    std::thread::scope(|s| {
        for _ in 0..clients {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= config.max_requests {
                    return;
                }
                // when the request is due: now (closed loop) or at its slot (open loop)
                let due = match config.pacing {
                    Pacing::Closed { .. } => Instant::now(),
                    Pacing::Open { rate, .. } => started + Duration::from_secs_f64(i as f64 / rate),
                };
                if due >= deadline {
                    return;
                }
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
                let at = due.duration_since(started).as_secs_f64();
                let o = shared.send(i, at, due);
                lock(&outcomes).push(o);
            });
        }
    });
    let seconds = started.elapsed().as_secs_f64();
    let outcomes = outcomes
        .into_inner()
        .map_err(|_| Error::Invalid("a load client panicked".into()))?;
    Ok((outcomes, seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mix_spreads_its_weights_over_every_cycle() {
        let m: Mix = "enroll=1,identify=3".parse().unwrap();
        let kinds: Vec<Kind> = (0..4000).map(|i| m.kind(i)).collect();
        let enrolls = kinds.iter().filter(|&&k| k == Kind::Enroll).count();
        assert_eq!(enrolls, 1000);
        // interleaved, not 1000 enrollments first
        assert!(kinds[..4].contains(&Kind::Enroll) && kinds[..4].contains(&Kind::Identify));
        // exact in every cycle whatever the weights sum to
        let m: Mix = "enroll=1,verify=1,identify=2,erase=1".parse().unwrap();
        let cycle: Vec<Kind> = (0..5).map(|i| m.kind(i)).collect();
        for (k, n) in [
            (Kind::Enroll, 1),
            (Kind::Verify, 1),
            (Kind::Identify, 2),
            (Kind::Erase, 1),
        ] {
            assert_eq!(cycle.iter().filter(|&&c| c == k).count(), n, "{cycle:?}");
        }
        assert_eq!((0..5).map(|i| m.kind(i + 5)).collect::<Vec<_>>(), cycle);
        assert!("".parse::<Mix>().is_err());
        assert!("enroll=0".parse::<Mix>().is_err());
        assert!("search=1".parse::<Mix>().is_err());
        assert!("enroll=x".parse::<Mix>().is_err());
        let verify: Mix = "verify".parse().unwrap();
        assert_eq!(
            (verify.weights, verify.cycle),
            (vec![(Kind::Verify, 1)], vec![Kind::Verify])
        );
    }

    #[test]
    fn percentiles_and_statuses_are_counted_per_kind() {
        let o = |kind, status, ms| Outcome {
            kind,
            subject: None,
            status,
            face_id: None,
            ms,
            at: 0.0,
        };
        let mut all: Vec<Outcome> = (1..=1000)
            .map(|i| o(Kind::Identify, 200, i as f64))
            .collect();
        all.push(o(Kind::Enroll, 201, 5.0));
        all.push(o(Kind::Enroll, 0, 7.0));
        all.push(o(Kind::Enroll, 429, 0.5));
        let r = report(&all, 2.0, Pacing::Closed { clients: 4 });
        let id = &r.kinds["identify"];
        assert_eq!(
            (id.p50_ms, id.p90_ms, id.p99_ms, id.p999_ms),
            (500.0, 900.0, 990.0, 999.0)
        );
        assert_eq!(id.per_second, 500.0);
        assert_eq!(r.kinds["enroll"].statuses[&0], 1);
        // refusals are counted, not timed
        assert_eq!(r.kinds["enroll"].p50_ms, 5.0);
        assert_eq!(r.kinds["enroll"].requests, 3);
        assert_eq!(r.all.requests, 1003);
    }
}
