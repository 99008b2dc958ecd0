//! Logging, tracing export and metrics shared by `coord` and `worker`.
//!
//! * [`init`]: a `tracing` subscriber writing to stderr (filter from `RUST_LOG`, default `info`)
//!   and, only when `OTEL_EXPORTER_OTLP_ENDPOINT` is set, an OpenTelemetry layer exporting spans
//!   over OTLP/gRPC (service name from `OTEL_SERVICE_NAME`, else the binary's default).
//! * W3C trace context across gRPC: [`inject`] / [`extract`] on tonic metadata, and
//!   [`traceparent`] / [`context_from_traceparent`] for a context carried in a message field.
//! * [`serve_metrics`]: `GET /metrics` in the Prometheus text format (the default registry).

mod metrics;
mod trace_context;

pub use metrics::{metrics_text, serve_metrics};
pub use trace_context::{context_from_traceparent, extract, inject, set_parent, traceparent};

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
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
