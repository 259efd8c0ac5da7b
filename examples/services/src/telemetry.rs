//! Logs and traces.
//!
//! Logs go to stderr through `tracing` (filter: `UNIFACE_LOG`, e.g. `info,uniface_services=debug`).
//! Every request runs inside one `request` span, so each line logged while serving it names the
//! request's id, method and route.
//!
//! Built with `--features otlp`, the binary can also export those spans over OTLP/HTTP (protobuf)
//! to an OpenTelemetry collector (`--otlp-endpoint http://collector:4318`, traces go to
//! `/v1/traces`). The exporter is off unless that flag is given. Trace context travels between the
//! processes of the split layout in the W3C `traceparent` header, so the gateway's span and the
//! role process's span are one trace.

use axum::http::HeaderMap;

/// What [`init`] set up; [`Telemetry::shutdown`] sends the spans still buffered.
#[derive(Default)]
pub struct Telemetry {
    #[cfg(feature = "otlp")]
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

fn filter() -> tracing_subscriber::EnvFilter {
    tracing_subscriber::EnvFilter::try_from_env("UNIFACE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,tokio_postgres=warn"))
}

fn log_layer<S>() -> impl tracing_subscriber::Layer<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
}

/// Install the process's subscriber: logs to stderr, and spans to `otlp_endpoint` when one is
/// given (`otlp` feature; must run inside the Tokio runtime). `roles` names the process in the
/// exported resource (attribute `uniface.roles`).
pub fn init(
    #[cfg(feature = "otlp")] otlp_endpoint: Option<&str>,
    #[cfg(feature = "otlp")] roles: &str,
) -> Result<Telemetry, crate::Error> {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let registry = tracing_subscriber::registry()
        .with(filter())
        .with(log_layer());
    #[cfg(feature = "otlp")]
    {
        let provider = otlp_endpoint
            .map(|e| otlp::provider(e, roles))
            .transpose()?;
        let layer = provider.as_ref().map(otlp::layer);
        registry.with(layer).init();
        Ok(Telemetry { provider })
    }
    #[cfg(not(feature = "otlp"))]
    {
        registry.init();
        Ok(Telemetry::default())
    }
}

impl Telemetry {
    /// Export what is still buffered (waits at most the exporter's timeout).
    pub async fn shutdown(self) {
        #[cfg(feature = "otlp")]
        if let Some(p) = self.provider {
            // the batch task runs on this runtime; wait for it from a blocking thread
            match tokio::task::spawn_blocking(move || p.shutdown()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => eprintln!("the OTLP exporter did not shut down cleanly: {e}"),
                Err(e) => eprintln!("the OTLP exporter did not shut down cleanly: {e}"),
            }
        }
    }
}

/// The span one request is served in. With the `otlp` feature its parent is the trace named by
/// the request's `traceparent` header, when it has one.
pub fn request_span(headers: &HeaderMap, id: &str, method: &str, route: &str) -> tracing::Span {
    // the OpenTelemetry names are recorded only where they are exported, to keep the log lines short
    let span = tracing::info_span!(
        "request",
        request_id = %id,
        http.request.method = %method,
        http.route = %route,
        http.response.status_code = tracing::field::Empty,
        otel.name = tracing::field::Empty,
        otel.kind = tracing::field::Empty,
    );
    #[cfg(feature = "otlp")]
    {
        span.record("otel.name", format!("{method} {route}"));
        span.record("otel.kind", "server");
        otlp::adopt_parent(&span, headers);
    }
    #[cfg(not(feature = "otlp"))]
    let _ = headers;
    span
}

/// Put the current span's trace context in `headers` for a call to another process (`otlp`
/// feature; nothing otherwise).
pub fn inject(headers: &mut HeaderMap) {
    #[cfg(feature = "otlp")]
    otlp::inject(headers);
    #[cfg(not(feature = "otlp"))]
    let _ = headers;
}

#[cfg(feature = "otlp")]
mod otlp {
    use axum::http::HeaderMap;
    use opentelemetry::propagation::TextMapPropagator;
    use opentelemetry::trace::TracerProvider;
    use opentelemetry_otlp::WithExportConfig;
    use opentelemetry_sdk::propagation::TraceContextPropagator;
    use opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor;
    use opentelemetry_sdk::trace::SdkTracerProvider;
    use std::time::Duration;
    use tracing_opentelemetry::OpenTelemetrySpanExt;

    /// How long one export may take.
    const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

    /// A tracer provider that batches spans and posts them to `endpoint`/v1/traces.
    pub(super) fn provider(endpoint: &str, roles: &str) -> Result<SdkTracerProvider, crate::Error> {
        let base = endpoint.trim_end_matches('/');
        if !base.starts_with("http://") {
            return Err(crate::Error::Invalid(format!(
                "--otlp-endpoint {endpoint:?}: give the collector's base URL over plain HTTP, e.g. \
                 http://127.0.0.1:4318 (the exporter has no TLS; keep the collector on the private \
                 network or loopback)"
            )));
        }
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .with_endpoint(format!("{base}/v1/traces"))
            .with_timeout(EXPORT_TIMEOUT)
            .build()
            .map_err(|e| crate::Error::Invalid(format!("--otlp-endpoint {endpoint:?}: {e}")))?;
        let batch =
            BatchSpanProcessor::builder(exporter, opentelemetry_sdk::runtime::Tokio).build();
        let resource = opentelemetry_sdk::Resource::builder()
            .with_service_name("uniface-services")
            .with_attribute(opentelemetry::KeyValue::new(
                "uniface.roles",
                roles.to_owned(),
            ))
            .build();
        Ok(SdkTracerProvider::builder()
            .with_span_processor(batch)
            .with_resource(resource)
            .build())
    }

    pub(super) fn layer<S>(
        provider: &SdkTracerProvider,
    ) -> tracing_opentelemetry::OpenTelemetryLayer<S, opentelemetry_sdk::trace::Tracer>
    where
        S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    {
        tracing_opentelemetry::layer().with_tracer(provider.tracer("uniface-services"))
    }

    pub(super) fn adopt_parent(span: &tracing::Span, headers: &HeaderMap) {
        let parent =
            TraceContextPropagator::new().extract(&opentelemetry_http::HeaderExtractor(headers));
        // a request without a (valid) traceparent starts its own trace
        let _ = span.set_parent(parent);
    }

    pub(super) fn inject(headers: &mut HeaderMap) {
        let cx = tracing::Span::current().context();
        TraceContextPropagator::new()
            .inject_context(&cx, &mut opentelemetry_http::HeaderInjector(headers));
    }
}

#[cfg(all(test, feature = "otlp"))]
mod tests {
    use super::*;
    use axum::http::HeaderValue;
    use std::sync::{Arc, Mutex};
    use tracing_subscriber::layer::SubscriberExt;

    type Posted = (String, Vec<u8>);

    fn unhex(s: &str) -> Vec<u8> {
        crate::upstream::unhex(s).unwrap()
    }

    /// A span served under a caller's `traceparent` reaches a collector over OTLP/HTTP as part of
    /// the caller's trace, and a call made inside it carries the trace on.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn request_spans_reach_the_collector_in_the_callers_trace() {
        // the collector's end: whatever is posted to /v1/traces
        // (content type, body) of each post
        let posted: Arc<Mutex<Vec<Posted>>> = Arc::default();
        let sink = posted.clone();
        let app = axum::Router::new().route(
            "/v1/traces",
            axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
                let sink = sink.clone();
                async move {
                    let kind = headers
                        .get("content-type")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned();
                    sink.lock().unwrap().push((kind, body.to_vec()));
                    ""
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });

        assert!(otlp::provider("https://collector:4318", "all").is_err());
        assert!(otlp::provider("collector:4318", "all").is_err());
        let provider = otlp::provider(&format!("http://{addr}/"), "gateway,relay").unwrap();
        let subscriber = tracing_subscriber::registry().with(otlp::layer(&provider));
        let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
        let caller = "00f067aa0ba902b7";
        let mut incoming = HeaderMap::new();
        incoming.insert(
            "traceparent",
            HeaderValue::from_str(&format!("00-{trace}-{caller}-01")).unwrap(),
        );
        let mut outgoing = HeaderMap::new();
        tracing::subscriber::with_default(subscriber, || {
            let span = request_span(&incoming, "abc123", "POST", "/v1/verify");
            span.in_scope(|| inject(&mut outgoing));
            span.record("http.response.status_code", 200);
        });
        // the call made inside the span names the same trace and the span itself as its parent
        let sent = outgoing["traceparent"].to_str().unwrap().to_owned();
        let parts: Vec<&str> = sent.split('-').collect();
        assert_eq!(parts.len(), 4, "{sent}");
        assert_eq!(parts[1], trace, "{sent}");
        assert_ne!(parts[2], caller, "{sent}");
        assert_eq!(parts[3], "01", "{sent}");

        Telemetry {
            provider: Some(provider),
        }
        .shutdown()
        .await;
        let posted = posted.lock().unwrap();
        assert_eq!(posted.len(), 1, "one batch");
        let (kind, body) = &posted[0];
        assert_eq!(kind, "application/x-protobuf");
        // protobuf keeps bytes and strings as they are: the exported span carries the caller's
        // trace id, the caller's span as its parent, its own span id, its name and route
        let has = |needle: &[u8]| body.windows(needle.len()).any(|w| w == needle);
        assert!(has(&unhex(trace)), "the caller's trace id");
        assert!(has(&unhex(caller)), "the caller's span as parent");
        assert!(has(&unhex(parts[2])), "the span's own id");
        assert!(has(b"POST /v1/verify"));
        assert!(has(b"http.route"));
        assert!(has(b"abc123"), "the request id");
        assert!(has(b"uniface-services"), "the service name");
        assert!(has(b"gateway,relay"), "the process's roles");
    }

    /// Without a `traceparent` a request starts its own trace.
    #[test]
    fn a_request_without_a_caller_starts_a_trace() {
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
        let subscriber = tracing_subscriber::registry().with(otlp::layer(&provider));
        let mut outgoing = HeaderMap::new();
        tracing::subscriber::with_default(subscriber, || {
            let span = request_span(&HeaderMap::new(), "x", "GET", "/v1/subjects");
            span.in_scope(|| inject(&mut outgoing));
        });
        let sent = outgoing["traceparent"].to_str().unwrap();
        assert!(sent.starts_with("00-") && !sent.contains("-00000000000000000000000000000000-"));
    }
}
