//! W3C trace context across gRPC: in request metadata ([`inject`] / [`extract`]) or in a message
//! field ([`traceparent`] / [`context_from_traceparent`]).

use std::collections::HashMap;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TraceContextExt;
use opentelemetry::Context;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt;

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
