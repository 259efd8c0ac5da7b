//! One process per role: how the gateway reaches the others. A request whose role the gateway
//! does not run itself is forwarded to that role's process (after authentication and the rate
//! limit, which only the gateway applies), with the deployment's internal token instead of the
//! caller's credentials; identification is scattered to the replica that owns each shard and
//! merged here. Role processes accept the internal token and nothing else on `/internal/*`.

use std::collections::HashMap;
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

/// Largest answer read from another process.
const MAX_ANSWER: usize = 64 << 20;

/// Where the roles this process does not run live.
#[derive(Debug, Clone)]
pub struct Upstream {
    /// Role → base URL (`http://127.0.0.1:8081`).
    pub roles: HashMap<String, String>,
    /// The identification replicas, each owning some shards.
    pub replicas: Vec<String>,
    /// Shared by the deployment's processes (`None`: one process, nothing to trust).
    pub token: Option<String>,
    client: Client<HttpConnector, Body>,
    /// Round robin over the replicas for work any of them can do (finding faces).
    next: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Upstream {
    pub fn new(
        roles: HashMap<String, String>,
        replicas: Vec<String>,
        token: Option<String>,
    ) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(Duration::from_secs(5)));
        connector.set_nodelay(true);
        Self {
            roles,
            replicas,
            token,
            client: Client::builder(TokioExecutor::new()).build(connector),
            next: Default::default(),
        }
    }

    /// The next replica in turn (`None` when there are none).
    pub fn any_replica(&self) -> Option<&String> {
        let n = self.replicas.len();
        (n > 0).then(|| {
            &self.replicas[self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % n]
        })
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

    /// Forward `req` to `role`'s process as it is, but with the internal token for credentials.
    pub async fn forward(&self, role: &str, mut req: Request) -> Response {
        let Some(base) = self.roles.get(role) else {
            return Self::unavailable(role, "no process is configured for this role")
                .into_response();
        };
        let path = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_default();
        let uri: Uri = match format!("{base}{path}").parse() {
            Ok(u) => u,
            Err(e) => return Self::unavailable(role, e).into_response(),
        };
        *req.uri_mut() = uri;
        let headers = req.headers_mut();
        headers.remove(header::AUTHORIZATION);
        headers.remove(header::HOST);
        if let Some(v) = self
            .token
            .as_deref()
            .and_then(|t| HeaderValue::from_str(t).ok())
        {
            headers.insert(INTERNAL_HEADER, v);
        }
        match self.client.request(req).await {
            Ok(r) => r.map(Body::new).into_response(),
            Err(e) => {
                Self::unavailable(&format!("the {role} process at {base}"), e).into_response()
            }
        }
    }

    /// A call to another process: its status and body.
    pub async fn call(
        &self,
        base: &str,
        method: Method,
        path: &str,
        body: Option<(&str, Bytes)>,
    ) -> Result<(StatusCode, Bytes), ApiError> {
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
        let req = b.body(body).map_err(|e| Self::unavailable(base, e))?;
        let req = crate::http::with_request_id(req);
        let r = self
            .client
            .request(req)
            .await
            .map_err(|e| Self::unavailable(base, e))?;
        let status = r.status();
        let bytes = axum::body::to_bytes(Body::new(r.into_body()), MAX_ANSWER)
            .await
            .map_err(|e| Self::unavailable(base, e))?;
        Ok((status, bytes))
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
        let v: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|e| Self::unavailable(base, format!("an answer that is not JSON: {e}")))?;
        if !status.is_success() {
            return Err(Self::unavailable(base, format!("answered {status}: {v}")));
        }
        Ok(v)
    }
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
