//! The HTTP API (v1, JSON): authentication and rate limits at the door, then enrollment,
//! verification, identification, template management and administration — the handlers a
//! process serves depend on its roles. One error shape everywhere:
//! `{"error": {"code", "message", "reasons"?, "request_id"}}`, the request id also in the
//! `x-request-id` header and in the logs.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{
    DefaultBodyLimit, Extension, FromRequest, Multipart, Path, Query, RawQuery, Request, State,
};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use uniface::core::crypto::Key;
use uniface::core::quality::{Policy, Reason};
use uniface::index::{merge_candidates, Candidate};
use uniface::{Metric, Template};

use crate::auth::{Authenticator, Denied, Principal, Scope};
use crate::engine::{Busy, Engine};
use crate::images::Images;
use crate::replica::Replica;
use crate::upstream::{hex, unhex, Health, Upstream, COLLECTION_HEADER, PRINCIPAL_HEADER};
use crate::{audit, collection, db, telemetry, Error};
use tracing::Instrument;

tokio::task_local! {
    static REQUEST_ID: String;
}

/// What the HTTP handlers share.
pub struct App {
    pub pool: deadpool_postgres::Pool,
    /// The deployment's key: templates and metadata are sealed under it in PostgreSQL.
    pub key: Key,
    pub auth: Authenticator,
    /// Present in processes with the enrollment, verification or identification role.
    pub engine: Option<Arc<Engine>>,
    /// The identification replicas this process holds.
    pub replicas: Vec<Arc<Replica>>,
    pub metrics: metrics_exporter_prometheus::PrometheusHandle,
    /// `/readyz` fails while a replica has more than this many events to apply.
    pub ready_lag: u32,
    /// Largest request body, in bytes.
    pub max_body: usize,
    /// Per-request deadline.
    pub timeout: Duration,
    /// The roles this process runs.
    pub roles: Vec<&'static str>,
    /// Where the other roles run (one process per role), and the internal token.
    pub upstream: Upstream,
    /// Where raw images are kept when a caller asks (none: they are never kept).
    pub images: Option<Images>,
}

impl App {
    /// Whether requests of `role` are handled here (the role runs here, or no other process
    /// is configured for it — then its handler says what is missing).
    fn handles(&self, role: &str) -> bool {
        self.roles.contains(&role) || !self.upstream.roles.contains_key(role)
    }
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("replicas", &self.replicas.len())
            .finish_non_exhaustive()
    }
}

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub reasons: Vec<&'static str>,
    pub retry_after: Option<Duration>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            reasons: Vec::new(),
            retry_after: None,
        }
    }

    fn bad(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }
}

impl From<Busy> for ApiError {
    fn from(_: Busy) -> Self {
        Self {
            retry_after: Some(Duration::from_secs(1)),
            ..Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "busy",
                "every worker is busy and the queue is full; retry shortly",
            )
        }
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        use uniface::core::ErrorKind as K;
        match &e {
            Error::Uniface(u) => match u.kind() {
                K::InvalidArgument => Self::bad(e.to_string()),
                K::Image => Self::new(StatusCode::UNPROCESSABLE_ENTITY, "bad_image", e.to_string()),
                K::Template => Self::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "bad_template",
                    e.to_string(),
                ),
                K::NoFace => Self::new(StatusCode::UNPROCESSABLE_ENTITY, "no_face", e.to_string()),
                K::Model => Self {
                    retry_after: Some(Duration::from_secs(30)),
                    ..Self::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "model_unavailable",
                        e.to_string(),
                    )
                },
                _ => internal(e),
            },
            Error::Invalid(m) => Self::bad(m.clone()),
            // a value the database refuses (a NUL byte in a text, say) is the caller's
            Error::Db(d) if d.code().is_some_and(|c| c.code().starts_with("22")) => {
                Self::bad(format!("the database refused a value: {d}"))
            }
            Error::Db(_) | Error::Pool(_) => Self {
                retry_after: Some(Duration::from_secs(2)),
                ..Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "database_unavailable",
                    e.to_string(),
                )
            },
            _ => internal(e),
        }
    }
}

/// A fault of this service: logged in full (with the request id), answered without details.
fn internal(e: impl std::fmt::Display) -> ApiError {
    let request_id = REQUEST_ID.try_with(|id| id.clone()).unwrap_or_default();
    tracing::error!(%request_id, error = %e, "internal error");
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "an internal error; the service's log has it under this request id",
    )
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let request_id = REQUEST_ID.try_with(|id| id.clone()).unwrap_or_default();
        let mut error = json!({
            "code": self.code,
            "message": self.message,
            "request_id": request_id,
        });
        if !self.reasons.is_empty() {
            error["reasons"] = json!(self.reasons);
        }
        let mut r = (self.status, Json(json!({ "error": error }))).into_response();
        if let Some(after) = self.retry_after {
            let secs = after.as_secs_f64().ceil().max(1.0) as u64;
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                r.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        r
    }
}

type ApiResult<T> = std::result::Result<T, ApiError>;

/// The router of a process: every route; a route whose role this process lacks answers 503
/// naming the role.
pub fn router(app: Arc<App>) -> Router {
    let max_body = app.max_body;
    let timeout = app.timeout;
    let with = |scope: Scope| {
        let app = app.clone();
        axum::middleware::from_fn(move |req: Request, next: Next| {
            let app = app.clone();
            async move { require(app, scope, req, next).await }
        })
    };
    // a role's requests are handled here, or forwarded to its process (after `with`)
    let to = |role: &'static str| {
        let app = app.clone();
        axum::middleware::from_fn(move |req: Request, next: Next| {
            let app = app.clone();
            async move {
                match app.handles(role) {
                    true => next.run(req).await,
                    false => {
                        // verification and reads may be repeated on another process
                        let idempotent =
                            role == "verification" || req.method() == axum::http::Method::GET;
                        app.upstream
                            .forward(role, with_request_id(req), app.max_body, idempotent)
                            .await
                    }
                }
            }
        })
    };
    let internal = {
        let app = app.clone();
        axum::middleware::from_fn(move |req: Request, next: Next| {
            let app = app.clone();
            async move {
                match app.upstream.is_internal(req.headers()) {
                    true => next.run(req).await,
                    false => ApiError::new(
                        StatusCode::FORBIDDEN,
                        "forbidden",
                        "internal endpoints answer the deployment's own processes only",
                    )
                    .into_response(),
                }
            }
        })
    };
    Router::new()
        .route(
            "/v1/subjects/{subject}/faces",
            post(enroll)
                .layer(to("enrollment"))
                .layer(with(Scope::Enroll)),
        )
        .route(
            "/v1/subjects/{subject}/faces/{face_id}",
            delete(remove_face)
                .layer(to("templates"))
                .layer(with(Scope::Manage)),
        )
        .route(
            "/v1/verify",
            post(verify)
                .layer(to("verification"))
                .layer(with(Scope::Verify)),
        )
        // identification is scattered by the handler itself (to the replicas that own the
        // shards) rather than forwarded whole
        .route("/v1/identify", post(identify).layer(with(Scope::Identify)))
        .route(
            "/v1/subjects",
            get(list_subjects)
                .layer(to("templates"))
                .layer(with(Scope::Manage)),
        )
        .route(
            "/v1/subjects/{subject}",
            get(get_subject)
                .delete(remove_subject)
                .layer(to("templates"))
                .layer(with(Scope::Manage)),
        )
        .route(
            "/v1/subjects/{subject}/metadata",
            put(set_metadata)
                .layer(to("templates"))
                .layer(with(Scope::Manage)),
        )
        .route(
            "/internal/faces",
            post(internal_faces).layer(internal.clone()),
        )
        .route(
            "/internal/search",
            post(internal_search).layer(internal.clone()),
        )
        .route(
            "/internal/state",
            get(internal_state).layer(internal.clone()),
        )
        .route("/internal/audit", get(internal_audit).layer(internal))
        .route("/v1/admin/keys", post(create_key).layer(with(Scope::Admin)))
        .route(
            "/v1/admin/keys/{key_id}",
            delete(revoke_key).layer(with(Scope::Admin)),
        )
        .route("/v1/admin/audit", get(run_audit).layer(with(Scope::Admin)))
        .route("/v1/openapi.json", get(openapi))
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(render_metrics))
        .layer(DefaultBodyLimit::max(max_body))
        .layer(axum::middleware::from_fn(move |req, next| {
            observe(req, next, timeout, max_body)
        }))
        .with_state(app)
}

/// An error answer not made by [`ApiError`] (axum's refusal of a malformed path, query or
/// JSON body, an unknown route, a wrong method) in the one error shape, its text as the message.
async fn as_json_error(r: Response) -> Response {
    let is_json = r
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(r.status().is_client_error() || r.status().is_server_error()) || is_json {
        return r;
    }
    let (parts, body) = r.into_parts();
    let text = axum::body::to_bytes(body, 4096)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
        .unwrap_or_default();
    let status = parts.status;
    let message = if status.is_server_error() {
        // the details go to the log, not to the caller
        tracing::error!(%status, detail = %text, "internal error");
        "internal error (the log has it under the request id)".to_owned()
    } else if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_lowercase()
    } else {
        text
    };
    let code = match status {
        StatusCode::BAD_REQUEST => "bad_request",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::PAYLOAD_TOO_LARGE => "too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::UNPROCESSABLE_ENTITY => "unprocessable",
        s if s.is_server_error() => "internal",
        _ => "refused",
    };
    let mut out = ApiError::new(status, code, message).into_response();
    for name in [header::ALLOW, header::RETRY_AFTER] {
        if let Some(v) = parts.headers.get(&name) {
            out.headers_mut().insert(name, v.clone());
        }
    }
    out
}

/// Request id, deadline, log line and metrics of every request.
async fn observe(req: Request, next: Next, timeout: Duration, max_body: usize) -> Response {
    let id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| v.len() <= 64 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_owned)
        .unwrap_or_else(new_request_id);
    let method = req.method().clone();
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".into());
    let started = Instant::now();
    let span = telemetry::request_span(req.headers(), &id, method.as_str(), &route);
    let mut response = REQUEST_ID
        .scope(
            id.clone(),
            async move {
                // a body declared over the limit is refused before any of it is read
                let declared = req
                    .headers()
                    .get(header::CONTENT_LENGTH)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok());
                if declared.is_some_and(|n| n > max_body as u64) {
                    return ApiError::new(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "too_large",
                        format!("the body is over the limit of {max_body} bytes"),
                    )
                    .into_response();
                }
                match tokio::time::timeout(timeout, next.run(req)).await {
                    Ok(r) => as_json_error(r).await,
                    Err(_) => ApiError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "timeout",
                        format!("the request took longer than {timeout:?}"),
                    )
                    .into_response(),
                }
            }
            .instrument(span.clone()),
        )
        .await;
    let status = response.status().as_u16();
    let seconds = started.elapsed().as_secs_f64();
    metrics::counter!("uniface_http_requests_total", "route" => route.clone(), "status" => status.to_string())
        .increment(1);
    metrics::histogram!("uniface_http_request_seconds", "route" => route.clone()).record(seconds);
    span.record("http.response.status_code", status);
    span.in_scope(|| tracing::info!(status, ms = seconds * 1e3, "request"));
    if let Ok(v) = HeaderValue::from_str(&id) {
        response.headers_mut().insert("x-request-id", v);
    }
    response
}

/// The request's id (and trace context) in its headers, so that the process it is sent to logs the
/// same id.
pub(crate) fn with_request_id(mut req: Request) -> Request {
    if let Some(v) = REQUEST_ID
        .try_with(|id| HeaderValue::from_str(id).ok())
        .ok()
        .flatten()
    {
        req.headers_mut().insert("x-request-id", v);
    }
    telemetry::inject(req.headers_mut());
    req
}

/// `fut` (to be spawned) in the current request: its id and span go with it, so that the calls it
/// makes carry them on.
fn in_this_request<F: std::future::Future>(fut: F) -> impl std::future::Future<Output = F::Output> {
    let id = REQUEST_ID
        .try_with(String::clone)
        .unwrap_or_else(|_| new_request_id());
    REQUEST_ID.scope(id, fut.instrument(tracing::Span::current()))
}

fn new_request_id() -> String {
    let mut b = [0u8; 8];
    let _ = getrandom::fill(&mut b);
    hex(&b)
}

/// Authentication, scope and rate before anything else of a request is read.
async fn require(app: Arc<App>, scope: Scope, mut req: Request, next: Next) -> Response {
    // the gateway forwards what it admitted with the internal token, and says who the caller is
    if app.upstream.is_internal(req.headers()) {
        // the caller's name and collection as the gateway sent them (hex); a call of the
        // deployment's own has none
        let caller = {
            let header = |name: &str| {
                req.headers().get(name).map(|v| {
                    v.to_str()
                        .ok()
                        .and_then(unhex)
                        .and_then(|b| String::from_utf8(b).ok())
                })
            };
            // both or neither: a caller whose collection did not come through is refused, never
            // taken for the default collection's
            match (header(PRINCIPAL_HEADER), header(COLLECTION_HEADER)) {
                (None, None) => Caller {
                    name: "internal".to_owned(),
                    collection: String::new(),
                },
                (Some(Some(name)), Some(Some(collection)))
                    if collection::check(&collection).is_ok() =>
                {
                    Caller { name, collection }
                }
                _ => {
                    return ApiError::bad("the caller's name and collection must come together")
                        .into_response()
                }
            }
        };
        req.extensions_mut().insert(caller);
        return next.run(req).await;
    }
    // a role process behind a gateway answers the gateway only (its limits are the gateway's)
    if !app.roles.contains(&"gateway") {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "this process serves its gateway only; send requests to the gateway",
        )
        .into_response();
    }
    match admit(&app, req.headers(), scope).await {
        Ok(p) => {
            req.extensions_mut().insert(Caller {
                name: p.name.clone(),
                collection: p.collection.clone(),
            });
            req.extensions_mut().insert(p);
            next.run(req).await
        }
        Err(e) => e.into_response(),
    }
}

/// The caller, if it may use `scope`.
async fn admit(app: &App, headers: &HeaderMap, scope: Scope) -> ApiResult<Principal> {
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let p = app
        .auth
        .admit(&app.pool, authorization)
        .await
        .map_err(|d| match d {
            Denied::Unauthenticated(m) => {
                ApiError::new(StatusCode::UNAUTHORIZED, "unauthenticated", m)
            }
            Denied::Unavailable(e) => ApiError::from(Error::Pool(e)),
            Denied::RateLimited(after) => ApiError {
                retry_after: Some(after),
                ..ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limited",
                    "over this key's request rate",
                )
            },
        })?;
    if !p.may(scope) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("{} lacks the {} scope", p.name, scope.name()),
        ));
    }
    Ok(p)
}

fn engine(app: &App) -> ApiResult<&Arc<Engine>> {
    app.engine.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "role_missing",
            "this process runs no enrollment, verification or identification role",
        )
    })
}

/// Who a request is from, as the gateway admitted it (`key:<id>`, `jwt:<subject>`), and the
/// collection it sees: set on the gateway, and carried to the role processes in
/// [`PRINCIPAL_HEADER`] and [`COLLECTION_HEADER`] next to the internal token.
#[derive(Debug, Clone)]
pub struct Caller {
    pub name: String,
    pub collection: String,
}

impl Caller {
    /// The stored id of the caller's subject `subject` (see [`crate::collection`]).
    pub fn stored(&self, subject: &str) -> String {
        collection::stored(&self.collection, subject)
    }

    /// Whose idempotency keys a request's are: the caller in its collection (one JWT subject
    /// may hold tokens of two collections).
    fn idempotency_owner(&self) -> String {
        collection::stored(&self.collection, &self.name)
    }
}

/// An uploaded image or template: the raw body (`image/*`,
/// `application/vnd.uniface.template`), or the first file of a multipart form.
pub struct Upload {
    pub content_type: String,
    pub bytes: Bytes,
}

/// The content type of portable templates.
pub const TEMPLATE_TYPE: &str = "application/vnd.uniface.template";

impl<S: Send + Sync> FromRequest<S> for Upload {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> ApiResult<Self> {
        let content_type = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_ascii_lowercase();
        let too_large = |e: &dyn std::fmt::Display| {
            ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", e.to_string())
        };
        if content_type.starts_with("multipart/form-data") {
            let mut form = Multipart::from_request(req, state)
                .await
                .map_err(|e| ApiError::bad(e.to_string()))?;
            while let Some(field) = form
                .next_field()
                .await
                .map_err(|e| ApiError::bad(e.to_string()))?
            {
                let ct = field
                    .content_type()
                    .unwrap_or_default()
                    .to_ascii_lowercase();
                if field.file_name().is_some() || ct.starts_with("image/") || ct == TEMPLATE_TYPE {
                    let bytes = field.bytes().await.map_err(|e| too_large(&e))?;
                    return Ok(Upload {
                        content_type: ct,
                        bytes,
                    });
                }
            }
            return Err(ApiError::bad("the form has no file field"));
        }
        if !(content_type.starts_with("image/") || content_type == TEMPLATE_TYPE) {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                format!(
                    "send an image (Content-Type image/*), a template ({TEMPLATE_TYPE}) or a multipart form; got {content_type:?}"
                ),
            ));
        }
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|e| too_large(&e))?;
        Ok(Upload {
            content_type,
            bytes,
        })
    }
}

#[derive(Deserialize)]
struct EnrollQuery {
    /// `enrollment` (default), `verification` or `none`.
    policy: Option<String>,
    liveness: Option<bool>,
    /// Keep the photo (sealed) with the face.
    #[serde(default)]
    store_image: bool,
}

fn refusal(reasons: &[Reason]) -> ApiError {
    let has = |r: Reason| reasons.contains(&r);
    let (code, message) = if has(Reason::NoFace) {
        ("no_face", "no face was found")
    } else if has(Reason::MultipleFaces) {
        ("several_faces", "the photo shows several faces")
    } else if has(Reason::NotLive) {
        ("not_live", "the face did not pass the liveness check")
    } else {
        ("quality_refused", "the photo did not pass the quality gate")
    };
    ApiError {
        reasons: reasons.iter().map(|r| r.name()).collect(),
        ..ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
    }
}

/// A template every gallery accepts: the model's dimension, finite values within
/// ±[`uniface::index::MAX_COMPONENT`] (what the replicas would refuse must not be enrolled).
fn check_storable(t: &Template) -> ApiResult<()> {
    let v = t.vector();
    let dim = uniface::core::embed::DESCRIPTOR_DIM;
    if v.len() != dim {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "bad_template",
            format!(
                "the template has {} values, this model's have {dim}",
                v.len()
            ),
        ));
    }
    if let Some(i) = v
        .iter()
        .position(|x| !x.is_finite() || x.abs() > uniface::index::MAX_COMPONENT)
    {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "bad_template",
            format!(
                "value {i} of the template is {}: values lie within ±{}",
                v[i],
                uniface::index::MAX_COMPONENT
            ),
        ));
    }
    Ok(())
}

fn check_subject(subject: &str) -> ApiResult<()> {
    if subject.is_empty() || subject.len() > 255 || subject.chars().any(char::is_control) {
        return Err(ApiError::bad(
            "a subject id is 1 to 255 bytes of UTF-8 without control characters",
        ));
    }
    Ok(())
}

async fn enroll(
    State(app): State<Arc<App>>,
    Path(subject): Path<String>,
    Query(q): Query<EnrollQuery>,
    RawQuery(raw_query): RawQuery,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    upload: Upload,
) -> ApiResult<Response> {
    check_subject(&subject)?;
    let stored = caller.stored(&subject);
    let engine = engine(&app)?;
    // a retried request with the same Idempotency-Key gets the first one's answer
    let idempotency_key = idempotency_key(&headers)?;
    let fingerprint = {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        for part in [
            subject.as_bytes(),
            raw_query.as_deref().unwrap_or("").as_bytes(),
            upload.content_type.as_bytes(),
        ] {
            h.update((part.len() as u64).to_le_bytes());
            h.update(part);
        }
        h.update(&upload.bytes);
        <[u8; 32]>::from(h.finalize())
    };
    if let Some(key) = &idempotency_key {
        let client = app.pool.get().await.map_err(Error::Pool)?;
        if let Some(r) = replay(&client, &caller.idempotency_owner(), key, &fingerprint).await? {
            return Ok(r);
        }
    }
    let images = match (q.store_image, &app.images) {
        (false, _) => None,
        (true, Some(images)) if upload.content_type != TEMPLATE_TYPE => Some(images),
        (true, Some(_)) => return Err(ApiError::bad("store_image needs a photo, not a template")),
        (true, None) => {
            return Err(ApiError::bad(
                "this deployment keeps no images (start it with --images DIR)",
            ))
        }
    };
    let photo = upload.bytes.clone();
    let (template, quality, liveness) = if upload.content_type == TEMPLATE_TYPE {
        let t = Template::from_bytes(&upload.bytes).map_err(Error::from)?;
        check_storable(&t)?;
        if *t.fingerprint() != engine.fingerprint() {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "model_mismatch",
                format!(
                    "the template was made by model {} ({}), this deployment uses {} ({})",
                    t.fingerprint().model_id,
                    t.fingerprint().to_hex(),
                    engine.fingerprint().model_id,
                    engine.fingerprint().to_hex()
                ),
            ));
        }
        (t, None, None)
    } else {
        let policy = match q.policy.as_deref().unwrap_or("enrollment") {
            "enrollment" => Some(Policy::enrollment()),
            "verification" => Some(Policy::verification()),
            // no gate: the largest face, as it is (bulk loads of vetted photos)
            "none" => None,
            other => {
                return Err(ApiError::bad(format!(
                    "unknown policy {other:?}: enrollment, verification or none"
                )))
            }
        };
        let bytes = upload.bytes;
        match policy {
            Some(mut policy) => {
                // the policy's liveness requirement unless the request says otherwise
                let live = q.liveness.unwrap_or(policy.require_live);
                policy.require_live = live;
                let gated = engine.run(move |e| e.gate(&bytes, &policy, live)).await??;
                match gated.template {
                    Some(t) if gated.reasons.is_empty() => (t, gated.quality, gated.liveness),
                    _ => return Err(refusal(&gated.reasons)),
                }
            }
            None => {
                let mut faces = engine.run(move |e| e.faces(&bytes, true)).await??;
                match faces.pop() {
                    Some(f) => (f.template, None, None),
                    None => return Err(refusal(&[Reason::NoFace])),
                }
            }
        }
    };
    let mut client = app.pool.get().await.map_err(Error::Pool)?;
    let face_id = db::next_face_id(&client).await?;
    // the image first, so that an acknowledged face has its image
    if let Some(images) = images {
        images.put(&app.key, &stored, face_id, &photo).await?;
    }
    let answer = json!({
        "subject": subject,
        "face_id": face_id,
        "quality": quality,
        "liveness": liveness,
    });
    let idempotency = idempotency_key.map(|key| db::Idempotency {
        principal: caller.idempotency_owner(),
        key,
        fingerprint,
        status: StatusCode::CREATED.as_u16(),
        answer: answer.clone(),
    });
    let done = db::enroll_face(
        &mut client,
        &app.key,
        &stored,
        face_id,
        &template,
        quality.as_ref(),
        idempotency.as_ref(),
    )
    .await;
    match done {
        Ok(Some(_)) => {
            metrics::counter!("uniface_enrollments_total").increment(1);
            Ok((StatusCode::CREATED, Json(answer)).into_response())
        }
        outcome => {
            if let Some(images) = images {
                let _ = images.delete(&stored, face_id).await;
            }
            outcome?;
            // the same key was taken by a concurrent request meanwhile: its answer
            let i = idempotency
                .as_ref()
                .ok_or_else(|| internal("no idempotency key"))?;
            replay(&client, &i.principal, &i.key, &fingerprint)
                .await?
                .ok_or_else(|| internal("an idempotency key taken but not remembered"))
        }
    }
}

/// The header a caller names a retryable enrollment with.
const IDEMPOTENCY_HEADER: &str = "idempotency-key";

/// The request's `Idempotency-Key`: 1 to 255 visible ASCII characters.
fn idempotency_key(headers: &HeaderMap) -> ApiResult<Option<String>> {
    let Some(v) = headers.get(IDEMPOTENCY_HEADER) else {
        return Ok(None);
    };
    match v.to_str() {
        Ok(k) if (1..=255).contains(&k.len()) && k.bytes().all(|b| b.is_ascii_graphic()) => {
            Ok(Some(k.to_owned()))
        }
        _ => Err(ApiError::bad(
            "Idempotency-Key must be 1 to 255 visible ASCII characters",
        )),
    }
}

/// The remembered answer to `principal`'s `key`, if the request is the one it was made for; a
/// different request under the same key is refused (422).
async fn replay(
    client: &deadpool_postgres::Client,
    principal: &str,
    key: &str,
    fingerprint: &[u8; 32],
) -> ApiResult<Option<Response>> {
    let Some((fp, status, answer)) = db::idempotent_answer(client, principal, key).await? else {
        return Ok(None);
    };
    if fp != fingerprint {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "idempotency_key_reused",
            "this Idempotency-Key was used for a different request",
        ));
    }
    let status = StatusCode::from_u16(status).map_err(internal)?;
    let mut r = (status, Json(answer)).into_response();
    r.headers_mut()
        .insert("idempotent-replayed", HeaderValue::from_static("true"));
    Ok(Some(r))
}

#[derive(Deserialize)]
struct VerifyQuery {
    subject: String,
    fmr: Option<f64>,
}

async fn verify(
    State(app): State<Arc<App>>,
    Query(q): Query<VerifyQuery>,
    Extension(caller): Extension<Caller>,
    upload: Upload,
) -> ApiResult<Json<Value>> {
    let fmr = q.fmr.unwrap_or(1e-4);
    check_subject(&q.subject)?;
    let probe = probe_template(&app, upload).await?;
    let client = app.pool.get().await.map_err(Error::Pool)?;
    let faces = db::faces(&client, &app.key, &caller.stored(&q.subject)).await?;
    if faces.is_empty() {
        return Err(ApiError::not_found(format!(
            "subject {:?} has no enrolled face",
            q.subject
        )));
    }
    check_storable(&probe)?;
    let v = probe.vector();
    let mut best = f32::INFINITY;
    for (_, t) in &faces {
        if t.fingerprint() != probe.fingerprint() {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "model_mismatch",
                format!(
                    "the probe was made by model {}, the subject's templates by {}",
                    probe.fingerprint().model_id,
                    t.fingerprint().model_id
                ),
            ));
        }
        let d = uniface::core::compare::distance(Metric::Euclidean, &v, &t.vector())
            .map_err(Error::from)?;
        best = best.min(d);
    }
    let table = uniface::core::calibration::default_table().map_err(Error::from)?;
    let d = table
        .decide_best_of(best, fmr, faces.len() as u32)
        .map_err(Error::from)?;
    Ok(Json(json!({
        "subject": q.subject,
        "match": d.is_match,
        "distance": d.distance,
        "similarity": d.similarity,
        "threshold": d.threshold,
        "fmr": d.target_fmr,
        "comparisons": d.comparisons,
        "estimated_fmr": d.estimated_fmr,
    })))
}

/// The template of the upload: a template as it is, or the largest face of a photo.
async fn probe_template(app: &App, upload: Upload) -> ApiResult<Template> {
    let engine = engine(app)?;
    if upload.content_type == TEMPLATE_TYPE {
        return Ok(Template::from_bytes(&upload.bytes).map_err(Error::from)?);
    }
    let bytes = upload.bytes;
    let mut faces = engine.run(move |e| e.faces(&bytes, true)).await??;
    match faces.pop() {
        Some(f) => Ok(f.template),
        None => Err(refusal(&[Reason::NoFace])),
    }
}

#[derive(Deserialize)]
struct IdentifyQuery {
    k: Option<usize>,
    fpir: Option<f64>,
    fmr: Option<f64>,
    /// `largest`: only the largest face; default every face.
    face: Option<String>,
}

/// The most candidates one identification returns.
pub const MAX_K: usize = 100;

async fn identify(
    State(app): State<Arc<App>>,
    Query(q): Query<IdentifyQuery>,
    Extension(caller): Extension<Caller>,
    upload: Upload,
) -> ApiResult<Json<Value>> {
    let k = q.k.unwrap_or(5);
    if !(1..=MAX_K).contains(&k) {
        return Err(ApiError::bad(format!("k must lie in 1..={MAX_K}, got {k}")));
    }
    let largest = match q.face.as_deref() {
        None | Some("all") => false,
        Some("largest") => true,
        Some(other) => {
            return Err(ApiError::bad(format!(
                "face must be `largest` or `all`, got {other:?}"
            )))
        }
    };
    let table = uniface::core::calibration::default_table().map_err(Error::from)?;
    if let Some(f) = q.fmr {
        table.threshold_for_fmr(f).map_err(Error::from)?;
    }
    if app.replicas.is_empty() && app.upstream.replicas.is_empty() {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "role_missing",
            "this process holds no identification replica and knows of none",
        ));
    }
    let probes = probes(&app, upload, largest).await?;
    let templates: Vec<Template> = probes.iter().map(|p| p.1.clone()).collect();
    let (total, found) = scatter(&app, &caller.collection, templates, k).await?;
    // the open-set rule over the whole gallery
    let fmr = open_set_fmr(table.min_fmr(), q.fmr, q.fpir, total)?;
    let threshold = table.threshold_for_fmr(fmr).map_err(Error::from)?;
    let faces: Vec<Value> = probes
        .iter()
        .zip(found)
        .map(|((bbox, _), mut all)| {
            // the caller's collection alone was searched; its ids as the caller knows them
            all.retain(|c| collection::split(&c.subject).0 == caller.collection);
            let candidates = merge_candidates(&mut all, k);
            let visible = |c: &Candidate| collection::split(&c.subject).1.to_owned();
            let known = candidates
                .first()
                .filter(|c| c.distance < threshold)
                .map(visible);
            json!({
                "box": bbox,
                "known": known,
                "candidates": candidates.iter().map(|c| json!({
                    "subject": visible(c),
                    "similarity": c.similarity,
                    "distance": c.distance,
                })).collect::<Vec<_>>(),
                "threshold": threshold,
            })
        })
        .collect();
    Ok(Json(json!({ "faces": faces, "fmr": fmr })))
}

/// The FPIR an identification is held to when the caller names neither `fpir` nor `fmr`.
pub const DEFAULT_FPIR: f64 = 1e-2;

/// The per-comparison false-match rate of an identification over `total` templates: the
/// caller's `fmr`, or its `fpir` spread over them (FMR = 1 − (1 − FPIR)^(1/n)). A named FPIR
/// the calibration cannot resolve at this size is refused (the calibration's error, 400); the
/// default one instead stops at `min_fmr`, the strictest rate the calibration supports, so that
/// a collection of more than `DEFAULT_FPIR / min_fmr` templates is still searched (the answer's
/// `fmr` says which rate was used).
fn open_set_fmr(min_fmr: f64, fmr: Option<f64>, fpir: Option<f64>, total: usize) -> ApiResult<f64> {
    let per_comparison = |fpir: f64| {
        uniface::core::calibration::per_comparison_fmr(fpir, total as u64)
            .map_err(|e| ApiError::bad(e.to_string()))
    };
    match (fmr, fpir) {
        (Some(_), Some(_)) => Err(ApiError::bad("give fmr or fpir, not both")),
        (Some(f), None) => Ok(f),
        (None, Some(fpir)) if !(fpir > 0.0 && fpir < 1.0) => Err(ApiError::bad(format!(
            "fpir must lie in (0, 1), got {fpir}"
        ))),
        (None, Some(fpir)) => per_comparison(fpir),
        (None, None) => Ok(per_comparison(DEFAULT_FPIR)?.max(min_fmr)),
    }
}

/// The faces to identify: the uploaded template, or every (or the largest) face of the photo —
/// found here, or by an identification replica when this process runs no engine.
async fn probes(app: &App, upload: Upload, largest: bool) -> ApiResult<Vec<([i64; 4], Template)>> {
    if upload.content_type == TEMPLATE_TYPE {
        let t = Template::from_bytes(&upload.bytes).map_err(Error::from)?;
        return Ok(vec![([0; 4], t)]);
    }
    let bytes = upload.bytes;
    if let Some(engine) = &app.engine {
        let found = engine.run(move |e| e.faces(&bytes, largest)).await??;
        return Ok(found.into_iter().map(|f| (f.bbox, f.template)).collect());
    }
    if app.upstream.replicas.is_empty() {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "role_missing",
            "no process here can find faces",
        ));
    }
    let face = if largest { "largest" } else { "all" };
    let (status, body) = app
        .upstream
        .call_any(
            &app.upstream.finders(),
            "identification replica",
            axum::http::Method::POST,
            &format!("/internal/faces?face={face}"),
            Some(("image/jpeg", bytes)),
            // finding faces queues behind other work: only the request's deadline
            None,
        )
        .await?;
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    if !status.is_success() {
        // the replica's own error (a bad image, a busy pool) is the caller's answer
        return Err(ApiError {
            reasons: Vec::new(),
            retry_after: (status == StatusCode::SERVICE_UNAVAILABLE)
                .then(|| Duration::from_secs(1)),
            ..ApiError::new(
                status,
                "upstream_refused",
                v["error"]["message"].as_str().unwrap_or("").to_owned(),
            )
        });
    }
    v["faces"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|f| {
            let bbox: [i64; 4] = serde_json::from_value(f["box"].clone()).unwrap_or([0; 4]);
            let bytes = f["template"].as_str().and_then(unhex).unwrap_or_default();
            Ok((bbox, Template::from_bytes(&bytes).map_err(Error::from)?))
        })
        .collect()
}

/// Any fmr for the galleries' own decisions: the candidates do not depend on it, the decision
/// is taken over the whole gallery afterwards.
const SEARCH_FMR: f64 = 1e-3;

/// Every probe's candidates from every shard (local replicas, then remote ones, in
/// parallel), and the number of templates searched.
async fn scatter(
    app: &Arc<App>,
    collection: &str,
    templates: Vec<Template>,
    k: usize,
) -> ApiResult<(usize, Vec<Vec<Candidate>>)> {
    let mut found = vec![Vec::new(); templates.len()];
    let mut total = 0;
    let locals = local_galleries(app, collection)?;
    let mut remote = tokio::task::JoinSet::new();
    if !app.upstream.replicas.is_empty() {
        let body = Bytes::from(
            serde_json::to_vec(&json!({
                "k": k,
                "collection": collection,
                "templates": templates.iter().map(|t| hex(&t.to_bytes())).collect::<Vec<_>>(),
            }))
            .map_err(internal)?,
        );
        // one call per part of the gallery, to a replica that answers for it
        for part in app.upstream.search_plan()? {
            let (app, body) = (app.clone(), body.clone());
            remote.spawn(in_this_request(async move {
                let (status, bytes) = app
                    .upstream
                    .call_any(
                        &part,
                        "identification replica",
                        axum::http::Method::POST,
                        "/internal/search",
                        Some(("application/json", body)),
                        Some(crate::upstream::CALL_TIMEOUT),
                    )
                    .await?;
                crate::upstream::parse_success("an identification replica", status, &bytes)
            }));
        }
    }
    if !locals.is_empty() {
        let (n, per_probe) = tokio::task::spawn_blocking(move || search(&locals, &templates, k))
            .await
            .map_err(internal)??;
        total += n;
        for (all, more) in found.iter_mut().zip(per_probe) {
            all.extend(more);
        }
    }
    while let Some(answer) = remote.join_next().await {
        let v = answer.map_err(internal)??;
        total += v["len"].as_u64().unwrap_or(0) as usize;
        let results = v["results"].as_array().cloned().unwrap_or_default();
        for (all, more) in found.iter_mut().zip(results) {
            all.extend(more.as_array().into_iter().flatten().filter_map(candidate));
        }
    }
    Ok((total, found))
}

/// The local replicas' galleries of `collection` (none where it has no face yet); an error
/// while a replica is still bootstrapping.
fn local_galleries(app: &App, collection: &str) -> ApiResult<Vec<Arc<uniface::index::Gallery>>> {
    let mut out = Vec::new();
    for r in &app.replicas {
        let held = r.galleries().ok_or_else(|| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "not_ready",
                format!("identification replica {} is still bootstrapping", r.name()),
            )
        })?;
        out.extend(held.get(collection));
    }
    Ok(out)
}

/// Search `galleries` for each template: (templates searched, candidates per template).
fn search(
    galleries: &[Arc<uniface::index::Gallery>],
    templates: &[Template],
    k: usize,
) -> std::result::Result<(usize, Vec<Vec<Candidate>>), Error> {
    let total = galleries.iter().map(|g| g.len()).sum();
    let found = templates
        .iter()
        .map(|t| {
            let mut all = Vec::new();
            for g in galleries {
                all.extend(g.identify(t, k, SEARCH_FMR)?.candidates);
            }
            Ok(all)
        })
        .collect::<std::result::Result<_, Error>>()?;
    Ok((total, found))
}

fn candidate(v: &Value) -> Option<Candidate> {
    Some(Candidate {
        subject: v["subject"].as_str()?.to_owned(),
        template_id: v["template_id"].as_u64()?,
        distance: v["distance"].as_f64()? as f32,
        similarity: v["similarity"].as_f64()? as f32,
    })
}

#[derive(Deserialize)]
struct SearchRequest {
    k: usize,
    /// The caller's collection: its gallery alone is searched.
    #[serde(default)]
    collection: String,
    /// Portable templates, hex.
    templates: Vec<String>,
}

/// A replica's shards searched for the gateway.
async fn internal_search(
    State(app): State<Arc<App>>,
    Json(r): Json<SearchRequest>,
) -> ApiResult<Json<Value>> {
    if !(1..=MAX_K).contains(&r.k) {
        return Err(ApiError::bad(format!("k must lie in 1..={MAX_K}")));
    }
    let templates = r
        .templates
        .iter()
        .map(|h| {
            let bytes = unhex(h).ok_or_else(|| ApiError::bad("a template that is not hex"))?;
            Ok(Template::from_bytes(&bytes).map_err(Error::from)?)
        })
        .collect::<ApiResult<Vec<_>>>()?;
    collection::check(&r.collection)?;
    let locals = local_galleries(&app, &r.collection)?;
    let k = r.k;
    let (len, found) = tokio::task::spawn_blocking(move || search(&locals, &templates, k))
        .await
        .map_err(internal)??;
    Ok(Json(json!({"len": len, "results": found})))
}

#[derive(Deserialize)]
struct FacesQuery {
    face: Option<String>,
}

/// The faces of a photo, as templates, for a gateway without an engine.
async fn internal_faces(
    State(app): State<Arc<App>>,
    Query(q): Query<FacesQuery>,
    upload: Upload,
) -> ApiResult<Json<Value>> {
    let largest = q.face.as_deref() == Some("largest");
    let bytes = upload.bytes;
    let found = engine(&app)?
        .run(move |e| e.faces(&bytes, largest))
        .await??;
    Ok(Json(json!({
        "faces": found.iter().map(|f| json!({
            "box": f.bbox,
            "template": hex(&f.template.to_bytes()),
        })).collect::<Vec<_>>()
    })))
}

#[derive(Deserialize)]
struct ListQuery {
    limit: Option<i64>,
    cursor: Option<String>,
}

async fn list_subjects(
    State(app): State<Arc<App>>,
    Query(q): Query<ListQuery>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Json<Value>> {
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad(format!(
            "limit must lie in 1..=1000, got {limit}"
        )));
    }
    let client = app.pool.get().await.map_err(Error::Pool)?;
    let rows = db::list_subjects(&client, &caller.collection, q.cursor.as_deref(), limit).await?;
    let next = match rows.len() as i64 == limit {
        true => rows.last().map(|r| r.0.clone()),
        false => None,
    };
    Ok(Json(json!({
        "subjects": rows.iter().map(|(s, n)| json!({"subject": s, "faces": n})).collect::<Vec<_>>(),
        "next_cursor": next,
    })))
}

async fn get_subject(
    State(app): State<Arc<App>>,
    Path(subject): Path<String>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Json<Value>> {
    check_subject(&subject)?;
    let client = app.pool.get().await.map_err(Error::Pool)?;
    let s = db::subject(&client, &app.key, &caller.stored(&subject))
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no subject {subject:?}")))?;
    let metadata: Value = match s.metadata.is_empty() {
        true => Value::Null,
        false => serde_json::from_slice(&s.metadata).unwrap_or(Value::Null),
    };
    Ok(Json(json!({
        "subject": subject,
        "created_at": s.created_at,
        "faces": s.faces,
        "metadata": metadata,
    })))
}

/// Largest metadata document, in bytes.
pub const MAX_METADATA: usize = 64 * 1024;

async fn set_metadata(
    State(app): State<Arc<App>>,
    Path(subject): Path<String>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    check_subject(&subject)?;
    if body.len() > MAX_METADATA {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("metadata is at most {MAX_METADATA} bytes"),
        ));
    }
    let _: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad(format!("metadata must be a JSON document: {e}")))?;
    let mut client = app.pool.get().await.map_err(Error::Pool)?;
    db::set_metadata(&mut client, &app.key, &caller.stored(&subject), &body)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no subject {subject:?}")))?;
    Ok(Json(json!({"subject": subject})))
}

async fn remove_subject(
    State(app): State<Arc<App>>,
    Path(subject): Path<String>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Json<Value>> {
    check_subject(&subject)?;
    let stored = caller.stored(&subject);
    let mut client = app.pool.get().await.map_err(Error::Pool)?;
    // images before and after the rows: one stored by an enrollment racing the removal goes too
    if let Some(images) = &app.images {
        images.delete_subject(&stored).await?;
    }
    let r = db::remove_subject(&mut client, &stored)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no subject {subject:?}")))?;
    if let Some(images) = &app.images {
        images.delete_subject(&stored).await?;
    }
    Ok(Json(
        json!({"subject": subject, "faces_removed": r.face_ids}),
    ))
}

async fn remove_face(
    State(app): State<Arc<App>>,
    Path((subject, face_id)): Path<(String, i64)>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Json<Value>> {
    check_subject(&subject)?;
    let stored = caller.stored(&subject);
    let mut client = app.pool.get().await.map_err(Error::Pool)?;
    if let Some(images) = &app.images {
        images.delete(&stored, face_id).await?;
    }
    db::remove_face(&mut client, &stored, face_id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("subject {subject:?} has no face {face_id}")))?;
    Ok(Json(json!({"subject": subject, "face_id": face_id})))
}

#[derive(Deserialize)]
struct NewKeyRequest {
    scopes: Vec<String>,
    rate_per_s: Option<f64>,
    burst: Option<u32>,
    #[serde(default)]
    description: String,
    /// The collection the key sees; absent: the caller's own.
    collection: Option<String>,
}

async fn create_key(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    Json(r): Json<NewKeyRequest>,
) -> ApiResult<Response> {
    let scopes = crate::auth::parse_scopes(&r.scopes.join(","))?;
    let collection = r.collection.unwrap_or_else(|| caller.collection.clone());
    // the deployment's administrators (the default collection) make keys for any collection, a
    // collection's administrators for their own only
    if !(caller.collection.is_empty() || collection == caller.collection) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "a key of a collection makes keys of that collection only",
        ));
    }
    let client = app.pool.get().await.map_err(Error::Pool)?;
    let k = crate::auth::create_key(
        &client,
        &scopes,
        r.rate_per_s.unwrap_or(50.0),
        r.burst.unwrap_or(100),
        &r.description,
        &collection,
    )
    .await?;
    Ok((StatusCode::CREATED, Json(k)).into_response())
}

async fn revoke_key(
    State(app): State<Arc<App>>,
    Path(key_id): Path<String>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<StatusCode> {
    let client = app.pool.get().await.map_err(Error::Pool)?;
    // a collection's administrators revoke its own keys only (another's is "no such key")
    let within = (!caller.collection.is_empty()).then_some(caller.collection.as_str());
    if !crate::auth::revoke_key(&client, &key_id, within).await? {
        return Err(ApiError::not_found(format!("no live key {key_id:?}")));
    }
    app.auth.forget(&key_id);
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
struct AuditQuery {
    #[serde(default)]
    repair: bool,
}

async fn run_audit(
    State(app): State<Arc<App>>,
    Query(q): Query<AuditQuery>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Json<Value>> {
    // the whole deployment's: for its administrators (the default collection) only
    if !caller.collection.is_empty() {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "the audit covers every collection: a key of the default collection runs it",
        ));
    }
    let mut reports = local_audits(&app, q.repair).await?;
    for m in &app.upstream.replicas {
        let v = app
            .upstream
            .json(
                &m.url,
                axum::http::Method::GET,
                &format!("/internal/audit?repair={}", q.repair),
                None,
            )
            .await?;
        reports.extend(v["replicas"].as_array().cloned().unwrap_or_default());
    }
    let clean = reports.iter().all(|r| r["report"]["clean"] == json!(true));
    Ok(Json(json!({"clean": clean, "replicas": reports})))
}

/// The audit of the replicas this process holds.
async fn local_audits(app: &App, repair: bool) -> ApiResult<Vec<Value>> {
    let client = app.pool.get().await.map_err(Error::Pool)?;
    let mut reports = Vec::new();
    for r in &app.replicas {
        let galleries = r.galleries().ok_or_else(|| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "not_ready",
                format!("identification replica {} is still bootstrapping", r.name()),
            )
        })?;
        let report = audit::audit(&client, &app.key, &galleries, repair).await?;
        reports.push(json!({"replica": r.name(), "report": report}));
    }
    Ok(reports)
}

async fn internal_audit(
    State(app): State<Arc<App>>,
    Query(q): Query<AuditQuery>,
) -> ApiResult<Json<Value>> {
    Ok(Json(
        json!({"replicas": local_audits(&app, q.repair).await?}),
    ))
}

/// Ready when the database answers, every replica held here has bootstrapped and has at most
/// `ready_lag` events queued, and (on a gateway of separate processes) every role has a process
/// that passes its health checks and every part of the gallery a caught-up replica; the
/// replicas' states are listed, wherever they run.
async fn readyz(State(app): State<Arc<App>>) -> Response {
    let db_ok = match app.pool.get().await {
        Ok(c) => c.query_one("SELECT 1", &[]).await.is_ok(),
        Err(_) => false,
    };
    let mut ready = db_ok;
    let mut replicas = Vec::new();
    // events not yet relayed are events no replica has: a stuck relay makes replicas stale
    let mut unsent = None;
    if !app.replicas.is_empty() {
        if let Ok(c) = app.pool.get().await {
            unsent = db::outbox_position(&c).await.ok().map(|(_, n)| n);
        }
        ready &= unsent.is_some_and(|n| n <= i64::from(app.ready_lag));
    }
    for r in &app.replicas {
        let (state, caught_up) = replica_state(&app, r).await;
        ready &= caught_up;
        replicas.push(state);
    }
    let mut upstreams = Vec::new();
    for (role, members) in &app.upstream.roles {
        ready &= members.iter().any(|m| m.health() != Health::Down);
        for m in members {
            upstreams.push(json!({"role": role, "url": m.url, "health": m.health()}));
        }
    }
    if !app.upstream.replicas.is_empty() {
        // every part of the gallery has a replica that answers and is caught up
        ready &= app.upstream.search_plan().is_ok_and(|parts| {
            parts
                .iter()
                .all(|p| p.first().is_some_and(|m| m.health() == Health::Ready))
        });
    }
    for m in &app.upstream.replicas {
        upstreams.push(json!({
            "role": "identification",
            "url": m.url,
            "health": m.health(),
            "holds": m.holds(),
        }));
        // each replica's own state, as it tells it (a replica that does not answer is down)
        if m.health() != Health::Down {
            if let Ok(Ok(v)) = tokio::time::timeout(
                Duration::from_secs(1),
                app.upstream
                    .json(&m.url, axum::http::Method::GET, "/internal/state", None),
            )
            .await
            {
                replicas.push(v["state"].clone());
            }
        }
    }
    let status = match ready {
        true => StatusCode::OK,
        false => StatusCode::SERVICE_UNAVAILABLE,
    };
    (
        status,
        Json(json!({
            "ready": ready,
            "database": db_ok,
            "outbox_unsent": unsent,
            "replicas": replicas,
            "upstreams": upstreams,
        })),
    )
        .into_response()
}

/// A replica's state, and whether it is caught up (bootstrapped, consuming, at most
/// `ready_lag` events queued).
async fn replica_state(app: &App, r: &Replica) -> (Value, bool) {
    let s = r.status();
    let queued = r.queued().await;
    let caught_up = s.bootstrapped && s.consuming && queued.is_some_and(|q| q <= app.ready_lag);
    (
        json!({"status": s, "queued": queued, "caught_up": caught_up}),
        caught_up,
    )
}

/// What a gateway's health checks ask an identification process: which part of the gallery
/// it holds, whether it is loaded (can search) and caught up.
async fn internal_state(State(app): State<Arc<App>>) -> ApiResult<Json<Value>> {
    let Some(r) = app.replicas.first() else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "role_missing",
            "this process holds no identification replica",
        ));
    };
    let (state, caught_up) = replica_state(&app, r).await;
    let (shards, shard) = r.holds();
    Ok(Json(json!({
        "loaded": r.galleries().is_some(),
        "ready": caught_up,
        "shards": shards,
        "shard": shard,
        "state": state,
    })))
}

async fn render_metrics(State(app): State<Arc<App>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        app.metrics.render(),
    )
        .into_response()
}

async fn openapi() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        include_str!("openapi.json"),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::ServiceExt;

    /// A process with no roles and an unreachable database: enough to route.
    fn bare() -> Arc<App> {
        let pool = deadpool_postgres::Config {
            url: Some("postgresql://nobody@127.0.0.1:1/none".into()),
            ..deadpool_postgres::Config::default()
        }
        .create_pool(
            Some(deadpool_postgres::Runtime::Tokio1),
            tokio_postgres::NoTls,
        )
        .unwrap();
        Arc::new(App {
            pool,
            key: Key::generate().unwrap(),
            auth: Authenticator::new(None),
            engine: None,
            replicas: Vec::new(),
            metrics: metrics_exporter_prometheus::PrometheusBuilder::new()
                .build_recorder()
                .handle(),
            ready_lag: 100,
            max_body: 1 << 20,
            timeout: Duration::from_secs(10),
            roles: vec!["gateway"],
            upstream: Upstream::new(Default::default(), Vec::new(), None),
            images: None,
        })
    }

    #[test]
    fn the_default_fpir_stops_at_the_calibrations_floor_and_a_named_one_does_not() {
        let table = uniface::core::calibration::default_table().unwrap();
        let floor = table.min_fmr();
        let fits = (DEFAULT_FPIR / floor) as usize / 2;
        let beyond = (DEFAULT_FPIR / floor) as usize * 2;
        // within the calibration: the default FPIR spread over the templates, resolvable
        let f = open_set_fmr(floor, None, None, fits).unwrap();
        assert!(
            f > floor && (f * fits as f64 / DEFAULT_FPIR - 1.0).abs() < 0.01,
            "{f}"
        );
        table.threshold_for_fmr(f).unwrap();
        // beyond it (the load curves searched 88,000-115,000): the default is the floor, and the
        // threshold exists; the same FPIR named by the caller is spread as asked and refused
        let f = open_set_fmr(floor, None, None, beyond).unwrap();
        assert_eq!(f, floor);
        table.threshold_for_fmr(f).unwrap();
        let named = open_set_fmr(floor, None, Some(DEFAULT_FPIR), beyond).unwrap();
        assert!(named < floor);
        assert!(table.threshold_for_fmr(named).is_err());
        // an fmr is taken as given; both, or an FPIR outside (0, 1), are the caller's error
        assert_eq!(open_set_fmr(floor, Some(1e-3), None, beyond).unwrap(), 1e-3);
        for (fmr, fpir) in [
            (Some(1e-3), Some(1e-2)),
            (None, Some(0.0)),
            (None, Some(1.0)),
        ] {
            let e = open_set_fmr(floor, fmr, fpir, 10).unwrap_err();
            assert_eq!(e.status, StatusCode::BAD_REQUEST);
        }
    }

    #[tokio::test]
    async fn a_role_process_refuses_a_caller_whose_collection_did_not_come_through() {
        // a templates process behind a gateway, trusting the internal token "t"
        let app = Arc::new(App {
            roles: vec!["templates"],
            upstream: Upstream::new(Default::default(), Vec::new(), Some("t".into())),
            ..Arc::into_inner(bare()).unwrap()
        });
        let status = |headers: &[(&str, &str)]| {
            let mut b = axum::http::Request::builder()
                .method("GET")
                .uri("/v1/subjects");
            for (k, v) in headers {
                b = b.header(*k, *v);
            }
            let req = b.body(axum::body::Body::empty()).unwrap();
            let app = router(app.clone());
            async move { app.oneshot(req).await.unwrap().status() }
        };
        let token = (crate::upstream::INTERNAL_HEADER, "t");
        let name = (PRINCIPAL_HEADER, "6b65793a78"); // "key:x"
        let tenant = (COLLECTION_HEADER, "74656e616e742d61"); // "tenant-a"
                                                              // the name without its collection, a collection that is not hex or not a name: 400
        for headers in [
            vec![token, name],
            vec![token, name, (COLLECTION_HEADER, "zz")],
            vec![token, name, (COLLECTION_HEADER, "2e2e2f78")], // "../x"
            vec![token, (COLLECTION_HEADER, "74656e616e742d61")],
        ] {
            assert_eq!(
                status(&headers).await,
                StatusCode::BAD_REQUEST,
                "{headers:?}"
            );
        }
        // both: let through (to a database that does not answer), as is the default
        // collection's empty one
        for headers in [
            vec![token, name, tenant],
            vec![token, name, (COLLECTION_HEADER, "")],
        ] {
            assert_eq!(
                status(&headers).await,
                StatusCode::SERVICE_UNAVAILABLE,
                "{headers:?}"
            );
        }
        // without the token the headers mean nothing: the process answers its gateway only
        assert_eq!(status(&[name, tenant]).await, StatusCode::FORBIDDEN);
    }

    #[tokio::test]
    async fn every_path_of_the_openapi_document_is_routed_and_guarded() {
        let doc: Value = serde_json::from_str(include_str!("openapi.json")).unwrap();
        let app = router(bare());
        let mut checked = 0;
        for (path, ops) in doc["paths"].as_object().unwrap() {
            for (method, op) in ops.as_object().unwrap() {
                let uri = path
                    .replace("{subject}", "alice")
                    .replace("{face_id}", "7")
                    .replace("{key_id}", "k");
                let req = axum::http::Request::builder()
                    .method(method.to_uppercase().as_str())
                    .uri(&uri)
                    .body(axum::body::Body::empty())
                    .unwrap();
                let r = app.clone().oneshot(req).await.unwrap();
                let status = r.status();
                assert!(
                    status != StatusCode::NOT_FOUND && status != StatusCode::METHOD_NOT_ALLOWED,
                    "{method} {path}: {status}"
                );
                // what the document says needs a key gets 401 without one
                if op.get("security").is_some() {
                    assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {path}");
                }
                checked += 1;
            }
        }
        assert_eq!(checked, 14);
        // internal endpoints answer nobody without the token
        let req = axum::http::Request::builder()
            .uri("/internal/audit")
            .body(axum::body::Body::empty())
            .unwrap();
        assert_eq!(
            app.oneshot(req).await.unwrap().status(),
            StatusCode::FORBIDDEN
        );
    }
}
