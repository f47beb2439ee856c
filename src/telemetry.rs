//! Metrics: names, units and the Prometheus recorder.
//!
//! Names carry the `sluice_` prefix and base units (seconds, bytes). Labels
//! are bounded sets (team, decision, provider, type); nothing from a prompt
//! ever becomes a label.

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

pub const REQUESTS: &str = "sluice_requests_total";
pub const REQUEST_DURATION: &str = "sluice_request_duration_seconds";
pub const INSPECTION_DURATION: &str = "sluice_inspection_duration_seconds";
pub const FINDINGS: &str = "sluice_findings_total";
pub const UPSTREAM_ERRORS: &str = "sluice_upstream_errors_total";
pub const AUDIT_WRITE_ERRORS: &str = "sluice_audit_write_errors_total";

#[derive(Debug, thiserror::Error)]
#[error("cannot install the metrics recorder: {0}")]
pub struct TelemetryError(String);

/// Install the global recorder; call once from `serve`.
pub fn install() -> Result<PrometheusHandle, TelemetryError> {
    // Request latencies span sub-millisecond refusals to minute-long streams.
    let request_buckets = [
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
    ];
    let inspect_buckets = [
        0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05,
    ];
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full(REQUEST_DURATION.into()), &request_buckets)
        .and_then(|b| b.set_buckets_for_metric(Matcher::Full(INSPECTION_DURATION.into()), &inspect_buckets))
        .and_then(|b| b.install_recorder())
        .map_err(|e| TelemetryError(e.to_string()))?;
    metrics::describe_counter!(REQUESTS, "Requests by team, decision and provider");
    metrics::describe_histogram!(REQUEST_DURATION, metrics::Unit::Seconds, "Whole request, first byte in to last byte out");
    metrics::describe_histogram!(INSPECTION_DURATION, metrics::Unit::Seconds, "Time spent scanning a prompt");
    metrics::describe_counter!(FINDINGS, "Findings by type");
    metrics::describe_counter!(UPSTREAM_ERRORS, "Failed calls to cloud providers, by provider and kind");
    metrics::describe_counter!(AUDIT_WRITE_ERRORS, "Audit records that could not be written");
    Ok(handle)
}
