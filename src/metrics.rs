//! Prometheus metrics, served at `/metrics` on the admin listener. The
//! registry belongs to the application (not a global), so several gateways
//! in one process — as in the tests — keep their own counts.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    grpc_code: String,
    decision: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamLabels {
    outcome: String,
    zenlayer_code: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AuditLabels {
    record: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConfirmationLabels {
    confirmation: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ShadowLabels {
    enforced: String,
    shadow: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SweepLabels {
    result: String,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// 5 ms to about 40 s: a release is a database write and one HTTPS call.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.0, 14))
}

#[derive(Debug)]
struct Inner {
    registry: Registry,
    calls: Family<CallLabels, Counter>,
    call_duration: Histogram,
    in_flight: Gauge,
    upstream_duration: Histograms<UpstreamLabels>,
    audit_duration: Histograms<AuditLabels>,
    audit_failures: Family<AuditLabels, Counter>,
    audit_batch_records: Histogram,
    checkpoints_signed: Counter,
    checkpoints_refused: Counter,
    checkpoints_current_at: Gauge,
    jwks_refresh_failures: Counter,
    confirmations: Family<ConfirmationLabels, Counter>,
    reconciliations: Family<OutcomeLabels, Counter>,
    follow_up_sweeps: Family<SweepLabels, Counter>,
    shadow_disagreements: Family<ShadowLabels, Counter>,
}

/// The gateway's metrics; cheap to clone.
#[derive(Debug, Clone)]
pub struct Metrics(Arc<Inner>);

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("zenlayer_gateway");
        let calls = Family::<CallLabels, Counter>::default();
        registry.register(
            "release_calls",
            "ReleaseDisk calls by gRPC code and decision (allowed, denied, invalid)",
            calls.clone(),
        );
        let call_duration = latency_histogram();
        registry.register_with_unit(
            "release_call_duration",
            "ReleaseDisk call latency, receipt to answer",
            Unit::Seconds,
            call_duration.clone(),
        );
        let in_flight = Gauge::default();
        registry.register(
            "release_calls_in_flight",
            "ReleaseDisk calls being handled now",
            in_flight.clone(),
        );
        let upstream_duration =
            Histograms::<UpstreamLabels>::new_with_constructor(latency_histogram);
        registry.register_with_unit(
            "upstream_request_duration",
            "Zenlayer ReleaseDisk latency (retries included) by outcome and Zenlayer code",
            Unit::Seconds,
            upstream_duration.clone(),
        );
        let audit_duration = Histograms::<AuditLabels>::new_with_constructor(latency_histogram);
        registry.register_with_unit(
            "audit_write_duration",
            "Audit trail write latency by record (attempt, outcome)",
            Unit::Seconds,
            audit_duration.clone(),
        );
        let audit_failures = Family::<AuditLabels, Counter>::default();
        registry.register(
            "audit_write_failures",
            "Audit trail writes that failed, by record",
            audit_failures.clone(),
        );
        let audit_batch_records = Histogram::new(exponential_buckets(1.0, 2.0, 9));
        registry.register(
            "audit_batch_records",
            "Records per audit write: concurrent calls' records are committed together",
            audit_batch_records.clone(),
        );
        let checkpoints_signed = Counter::default();
        registry.register(
            "audit_log_checkpoints_signed",
            "Checkpoints of the audit log this gateway signed",
            checkpoints_signed.clone(),
        );
        let checkpoints_refused = Counter::default();
        registry.register(
            "audit_log_checkpoints_refused",
            "Checkpoints not signed because the log no longer extends the last checkpoint: history was rewritten",
            checkpoints_refused.clone(),
        );
        let checkpoints_current_at = Gauge::default();
        registry.register(
            "audit_log_checkpoint_current_at_seconds",
            "Unix time at which this gateway last found the audit log covered by a checkpoint (it signed one, or the log had not grown); 0 without a signing key",
            checkpoints_current_at.clone(),
        );
        let jwks_refresh_failures = Counter::default();
        registry.register(
            "jwks_refresh_failures",
            "JWKS fetches that failed (cached keys stay in use)",
            jwks_refresh_failures.clone(),
        );
        let confirmations = Family::<ConfirmationLabels, Counter>::default();
        registry.register(
            "release_confirmations",
            "Accepted releases seen through (confirmed) or still listed when the gateway stopped looking (not_confirmed)",
            confirmations.clone(),
        );
        let reconciliations = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "reconciliations",
            "Unknown outcomes resolved from DescribeDisks, by the outcome found (succeeded, failed)",
            reconciliations.clone(),
        );
        let follow_up_sweeps = Family::<SweepLabels, Counter>::default();
        registry.register(
            "follow_up_sweeps",
            "Sweeps of the follow-up (confirming accepted releases, reconciling unknown outcomes) this replica finished, by result (ok, failed)",
            follow_up_sweeps.clone(),
        );
        let shadow_disagreements = Family::<ShadowLabels, Counter>::default();
        registry.register(
            "policy_shadow_disagreements",
            "Releases that one of the enforced and shadow policy sets permitted and the other did not, by both decisions (permit, deny, error)",
            shadow_disagreements.clone(),
        );
        Self(Arc::new(Inner {
            registry,
            calls,
            call_duration,
            in_flight,
            upstream_duration,
            audit_duration,
            audit_failures,
            audit_batch_records,
            checkpoints_signed,
            checkpoints_refused,
            checkpoints_current_at,
            jwks_refresh_failures,
            confirmations,
            reconciliations,
            follow_up_sweeps,
            shadow_disagreements,
        }))
    }

    /// The metrics in Prometheus' text exposition format.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.0.registry)
            .expect("writing to a String cannot fail");
        text
    }

    /// Counts a call in flight until the guard drops.
    pub fn call_started(&self) -> InFlight {
        self.0.in_flight.inc();
        InFlight(self.clone())
    }

    pub fn call_finished(&self, grpc_code: &str, decision: &str, elapsed: Duration) {
        let labels = CallLabels {
            grpc_code: grpc_code.to_owned(),
            decision: decision.to_owned(),
        };
        self.0.calls.get_or_create(&labels).inc();
        self.0.call_duration.observe(elapsed.as_secs_f64());
    }

    /// `zenlayer_code` is empty when Zenlayer sent none (success, no answer).
    pub fn upstream_finished(&self, outcome: &str, zenlayer_code: &str, elapsed: Duration) {
        let labels = UpstreamLabels {
            outcome: outcome.to_owned(),
            zenlayer_code: zenlayer_code.to_owned(),
        };
        self.0
            .upstream_duration
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
    }

    /// A checkpoint signed (`true`) or refused over a rewritten history.
    pub fn checkpoint(&self, signed: bool) {
        if signed {
            self.0.checkpoints_signed.inc();
        } else {
            self.0.checkpoints_refused.inc();
        }
    }

    /// The audit log found covered by a checkpoint now (one signed, or no
    /// growth since the last); a signing gateway also starts with this, so
    /// that one that never manages to sign is seen going stale.
    pub fn checkpoint_current(&self) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        self.0
            .checkpoints_current_at
            .set(i64::try_from(now.as_secs()).unwrap_or(i64::MAX));
    }

    /// One batch of `records` written together.
    pub fn audit_batch(&self, records: usize) {
        self.0.audit_batch_records.observe(records as f64);
    }

    pub fn audit_written(&self, record: &str, elapsed: Duration, succeeded: bool) {
        let labels = AuditLabels {
            record: record.to_owned(),
        };
        self.0
            .audit_duration
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
        if !succeeded {
            self.0.audit_failures.get_or_create(&labels).inc();
        }
    }

    /// A release the shadow policies decided otherwise.
    pub fn shadow_disagreed(&self, enforced: &str, shadow: &str) {
        let labels = ShadowLabels {
            enforced: enforced.to_owned(),
            shadow: shadow.to_owned(),
        };
        self.0.shadow_disagreements.get_or_create(&labels).inc();
    }

    pub fn jwks_refresh_failed(&self) {
        self.0.jwks_refresh_failures.inc();
    }

    /// `confirmation` is `confirmed` or `not_confirmed`.
    pub fn release_confirmed(&self, confirmation: &str) {
        let labels = ConfirmationLabels {
            confirmation: confirmation.to_owned(),
        };
        self.0.confirmations.get_or_create(&labels).inc();
    }

    /// `outcome` is what reconciliation found: `succeeded` or `failed`.
    pub fn release_reconciled(&self, outcome: &str) {
        let labels = OutcomeLabels {
            outcome: outcome.to_owned(),
        };
        self.0.reconciliations.get_or_create(&labels).inc();
    }

    /// A follow-up sweep ended, whole (`ok`) or stopped by an error.
    pub fn follow_up_swept(&self, ok: bool) {
        let labels = SweepLabels {
            result: if ok { "ok" } else { "failed" }.to_owned(),
        };
        self.0.follow_up_sweeps.get_or_create(&labels).inc();
    }
}

/// A call counted as in flight.
#[derive(Debug)]
pub struct InFlight(Metrics);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.0.in_flight.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_are_named_as_prometheus_expects() {
        let metrics = Metrics::new();
        let guard = metrics.call_started();
        metrics.call_finished("OK", "allowed", Duration::from_millis(20));
        metrics.upstream_finished("succeeded", "", Duration::from_millis(10));
        metrics.audit_written("attempt", Duration::from_millis(2), false);
        let text = metrics.encode();
        assert!(
            text.contains(
                r#"zenlayer_gateway_release_calls_total{grpc_code="OK",decision="allowed"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains("zenlayer_gateway_release_calls_in_flight 1"),
            "{text}"
        );
        assert!(
            text.contains("zenlayer_gateway_release_call_duration_seconds_count 1"),
            "{text}"
        );
        assert!(text.contains(r#"zenlayer_gateway_upstream_request_duration_seconds_count{outcome="succeeded",zenlayer_code=""} 1"#), "{text}");
        assert!(
            text.contains(r#"zenlayer_gateway_audit_write_failures_total{record="attempt"} 1"#),
            "{text}"
        );
        drop(guard);
        assert!(
            metrics
                .encode()
                .contains("zenlayer_gateway_release_calls_in_flight 0")
        );
    }
}
