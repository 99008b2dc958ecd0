//! Logging, tracing export and metrics shared by `coord` and `worker`.
//!
//! * [`init`]: a `tracing` subscriber writing to stderr (filter from `RUST_LOG`, default `info`)
//!   and, only when `OTEL_EXPORTER_OTLP_ENDPOINT` is set, an OpenTelemetry layer exporting spans
//!   over OTLP/gRPC (service name from `OTEL_SERVICE_NAME`, else the binary's default).
//! * W3C trace context across gRPC: [`inject`] / [`extract`] on tonic metadata, and
//!   [`traceparent`] / [`context_from_traceparent`] for a context carried in a message field.
//! * [`serve_metrics`]: `GET /metrics` in the Prometheus text format (the default registry).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer as _;

pub use opentelemetry::Context;

/// Flushes and shuts the span exporter down when dropped (at the end of `main`).
#[must_use = "spans are flushed when the guard is dropped"]
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl TelemetryGuard {
    /// Whether spans are exported (OTEL_EXPORTER_OTLP_ENDPOINT was set and the exporter built).
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            if let Err(e) = provider.shutdown() {
                eprintln!("warning: flushing spans: {e}");
            }
        }
        if let Some(runtime) = self.runtime.take() {
            // allowed from async contexts, unlike dropping the runtime
            runtime.shutdown_background();
        }
    }
}

fn env_filter(default: &str) -> EnvFilter {
    EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default))
}

/// Installs the global subscriber (`default_filter` unless `RUST_LOG` is set); exports spans
/// when `OTEL_EXPORTER_OTLP_ENDPOINT` is set. A second call does nothing (and exports nothing).
pub fn init(service_default: &str, default_filter: &str) -> TelemetryGuard {
    let endpoint = std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT")
        .ok()
        .filter(|e| !e.trim().is_empty());
    let Some(endpoint) = endpoint else {
        let _ = tracing_subscriber::registry()
            .with(env_filter(default_filter))
            .with(fmt_layer())
            .try_init();
        return TelemetryGuard {
            provider: None,
            runtime: None,
        };
    };
    let service = std::env::var("OTEL_SERVICE_NAME")
        .ok()
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| service_default.to_string());
    match exporter_provider(&endpoint, &service) {
        Ok((provider, runtime)) => {
            let tracer = provider.tracer("herd");
            // spans at info and above go out whatever RUST_LOG says about the log lines
            let otel = tracing_opentelemetry::layer()
                .with_tracer(tracer)
                .with_filter(EnvFilter::new("info"));
            let installed = tracing_subscriber::registry()
                .with(fmt_layer().with_filter(env_filter(default_filter)))
                .with(otel)
                .try_init()
                .is_ok();
            if !installed {
                let _ = provider.shutdown();
                runtime.shutdown_background();
                return TelemetryGuard {
                    provider: None,
                    runtime: None,
                };
            }
            opentelemetry::global::set_tracer_provider(provider.clone());
            tracing::debug!(%endpoint, %service, "exporting spans over OTLP/gRPC");
            TelemetryGuard {
                provider: Some(provider),
                runtime: Some(runtime),
            }
        }
        Err(e) => {
            let _ = tracing_subscriber::registry()
                .with(env_filter(default_filter))
                .with(fmt_layer())
                .try_init();
            tracing::warn!(%endpoint, "not exporting spans: {e:#}");
            TelemetryGuard {
                provider: None,
                runtime: None,
            }
        }
    }
}

fn fmt_layer<S>() -> impl tracing_subscriber::Layer<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
}

/// The OTLP/gRPC exporter lives on a small runtime of its own, so it works from `worker`'s
/// synchronous `main` as well as inside `#[tokio::main]`, and flushes at exit without blocking
/// the application's runtime.
fn exporter_provider(
    endpoint: &str,
    service: &str,
) -> anyhow::Result<(SdkTracerProvider, tokio::runtime::Runtime)> {
    use opentelemetry_otlp::WithExportConfig;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("otel-export")
        .enable_all()
        .build()?;
    let exporter = {
        let _entered = runtime.enter();
        opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint)
            .build()?
    };
    let provider = SdkTracerProvider::builder()
        .with_resource(
            Resource::builder()
                .with_service_name(service.to_string())
                .build(),
        )
        .with_batch_exporter(exporter)
        .build();
    Ok((provider, runtime))
}

/// The W3C `traceparent` of `span` ("" when spans are not exported).
pub fn traceparent(span: &tracing::Span) -> String {
    let cx = span.context();
    if !cx.span().span_context().is_valid() {
        return String::new();
    }
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&cx, &mut carrier);
    carrier.remove("traceparent").unwrap_or_default()
}

/// A parent context from a W3C `traceparent` (empty or invalid: the current context).
pub fn context_from_traceparent(traceparent: &str) -> Option<Context> {
    if traceparent.is_empty() {
        return None;
    }
    let carrier = HashMap::from([("traceparent".to_string(), traceparent.to_string())]);
    let cx = TraceContextPropagator::new().extract(&carrier);
    cx.span().span_context().is_valid().then_some(cx)
}

/// Makes `span` a child of the remote context `parent` (nothing when `None`).
pub fn set_parent(span: &tracing::Span, parent: Option<Context>) {
    if let Some(parent) = parent {
        let _ = span.set_parent(parent);
    }
}

/// Puts the W3C trace context of `span` into gRPC request metadata (nothing when not exporting).
pub fn inject(span: &tracing::Span, metadata: &mut tonic::metadata::MetadataMap) {
    let value = traceparent(span);
    if let Ok(value) = value.parse() {
        if !value_is_empty(&value) {
            metadata.insert("traceparent", value);
        }
    }
}

fn value_is_empty(value: &tonic::metadata::MetadataValue<tonic::metadata::Ascii>) -> bool {
    value.as_bytes().is_empty()
}

/// The remote parent a request carries in its metadata, if any.
pub fn extract(metadata: &tonic::metadata::MetadataMap) -> Option<Context> {
    metadata
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .and_then(context_from_traceparent)
}

/// Serves `GET /metrics` (Prometheus text format, the default registry) on `addr` until the
/// process ends. `refresh` runs on the blocking pool before each scrape (gauges read from state).
pub async fn serve_metrics(
    addr: SocketAddr,
    refresh: Arc<dyn Fn() + Send + Sync>,
) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("--metrics-listen {addr}: {e}"))?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                continue;
            };
            let refresh = refresh.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut len = 0;
                // the request line and headers; the body (none for GET) is ignored
                while len < buf.len() {
                    match socket.read(&mut buf[len..]).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => len += n,
                    }
                    if buf[..len].windows(4).any(|w| w == b"\r\n\r\n") {
                        break;
                    }
                }
                let head = String::from_utf8_lossy(&buf[..len]);
                let path = head.split_whitespace().nth(1).unwrap_or("");
                let (status, content_type, body) = if path == "/metrics" {
                    let _ = tokio::task::spawn_blocking(move || refresh()).await;
                    (
                        "200 OK",
                        "text/plain; version=0.0.4; charset=utf-8",
                        metrics_text(),
                    )
                } else {
                    (
                        "404 Not Found",
                        "text/plain",
                        "not found: try /metrics\n".into(),
                    )
                };
                let response = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
                     Connection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(response.as_bytes()).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    Ok(bound)
}

/// The default registry in the Prometheus text format.
pub fn metrics_text() -> String {
    let encoder = prometheus::TextEncoder::new();
    encoder
        .encode_to_string(&prometheus::gather())
        .unwrap_or_else(|e| format!("# encoding failed: {e}\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_round_trips() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let cx = context_from_traceparent(tp).expect("valid");
        let span = cx.span();
        let sc = span.span_context();
        assert_eq!(
            sc.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert!(sc.is_remote());
        assert!(context_from_traceparent("").is_none());
        assert!(context_from_traceparent("garbage").is_none());
    }
}
