//! Logs (tracing, text or JSON) and Prometheus metrics of `countersign serve`.

use std::sync::Arc;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// How logs are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One human-readable line per event.
    #[default]
    Text,
    /// One JSON object per event, for log pipelines.
    Json,
}

/// Install the global log subscriber: level from `RUST_LOG` (default `info`), to stderr.
pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    // A second call (tests) keeps the first subscriber.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// What a review was about and how it ended.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReviewLabels {
    pub resource: String,
    pub operation: String,
    pub verdict: Verdict,
}

/// The outcome of one review, as counted.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum Verdict {
    Allowed,
    Denied,
    ApprovalRequired,
    Approved,
    BadRequest,
}

/// Which cache a size is about.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CacheLabels {
    pub cache: &'static str,
}

/// The metrics `serve` exports on /metrics.
pub struct Metrics {
    registry: Registry,
    pub reviews: Family<ReviewLabels, Counter>,
    pub decision_seconds: Histogram,
    pub cache_objects: Family<CacheLabels, Gauge>,
    /// 1 while this replica holds the operator's lease.
    pub leader: Gauge,
    /// Requests by phase (from the cache, at each scrape).
    pub approvals: Family<PhaseLabels, Gauge>,
    pub request_to_approved_seconds: Histogram,
    pub request_to_deployed_seconds: Histogram,
    pub notification_deliveries: Family<DeliveryLabels, Counter>,
    pub reconcile_errors: Family<ReconcileErrorLabels, Counter>,
    /// How long reconciles take, by controller.
    pub reconcile_seconds: Family<ControllerLabels, Histogram>,
    /// 1 while a webhook configuration says what countersign installs, 0 while it does
    /// not (changed, or missing); as last seen by the operator.
    pub webhook_configuration_intact: Family<ConfigurationLabels, Gauge>,
    /// Reviews whose caller presented no client certificate the webhook accepts: refused
    /// (401) when one is required, answered when none is configured.
    pub unauthenticated_reviews: Family<UnauthenticatedLabels, Counter>,
    /// 1 while the API server refuses countersign's credentials (401), set at each scrape.
    pub api_credentials_refused: Gauge,
}

/// What became of an unauthenticated review.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UnauthenticatedLabels {
    /// `refused` or `answered`.
    pub outcome: &'static str,
}

/// Which of countersign's webhook configurations.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConfigurationLabels {
    pub configuration: &'static str,
}

/// A request phase.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabels {
    pub phase: String,
}

/// How a notification attempt ended.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeliveryLabels {
    pub outcome: &'static str,
}

/// Which of the operator's controllers.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabels {
    pub controller: &'static str,
}

/// Which controller failed, and how.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReconcileErrorLabels {
    pub controller: &'static str,
    /// `write`, `audit`, `read-target`, `grant`.
    pub error: &'static str,
}

impl Metrics {
    pub fn new() -> Arc<Metrics> {
        let mut registry = Registry::with_prefix("countersign");
        let reviews = Family::<ReviewLabels, Counter>::default();
        registry.register(
            "admission_reviews",
            "Admission reviews answered, by resource, operation and verdict",
            reviews.clone(),
        );
        // 50 µs … ~1.6 s: the decision itself is sub-millisecond; live reads are not.
        let decision_seconds = Histogram::new(
            prometheus_client::metrics::histogram::exponential_buckets(0.00005, 2.0, 16),
        );
        registry.register(
            "admission_decision_seconds",
            "Time from a parsed review to its answer, live reads and writes included",
            decision_seconds.clone(),
        );
        let cache_objects = Family::<CacheLabels, Gauge>::default();
        registry.register(
            "cache_objects",
            "Objects held in the webhook's caches",
            cache_objects.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 while this replica holds the operator's lease and reconciles",
            leader.clone(),
        );
        let approvals = Family::<PhaseLabels, Gauge>::default();
        registry.register(
            "approvals",
            "DeploymentApprovals by phase",
            approvals.clone(),
        );
        // 1 s … ~12 days: people approve in minutes to days.
        let human_buckets = || {
            Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
                1.0, 2.0, 21,
            ))
        };
        let request_to_approved_seconds = human_buckets();
        registry.register(
            "request_to_approved_seconds",
            "Time from a request to its approval",
            request_to_approved_seconds.clone(),
        );
        let request_to_deployed_seconds = human_buckets();
        registry.register(
            "request_to_deployed_seconds",
            "Time from a request to its confirmed rollout (Deployed)",
            request_to_deployed_seconds.clone(),
        );
        let notification_deliveries = Family::<DeliveryLabels, Counter>::default();
        registry.register(
            "notification_deliveries",
            "Notification attempts to sinks, by outcome (delivered or failed)",
            notification_deliveries.clone(),
        );
        let reconcile_errors = Family::<ReconcileErrorLabels, Counter>::default();
        registry.register(
            "reconcile_errors",
            "Reconciles that failed and are retried, by controller and kind of error",
            reconcile_errors.clone(),
        );
        // 1 ms … ~16 s: a reconcile reads and writes a few objects.
        let reconcile_seconds = Family::<ControllerLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
                0.001, 2.0, 15,
            ))
        });
        registry.register(
            "reconcile_seconds",
            "How long reconciles take, by controller",
            reconcile_seconds.clone(),
        );
        let webhook_configuration_intact = Family::<ConfigurationLabels, Gauge>::default();
        registry.register(
            "webhook_configuration_intact",
            "1 while countersign's webhook configuration (validating or mutating) is as installed, 0 while changed or missing",
            webhook_configuration_intact.clone(),
        );
        let unauthenticated_reviews = Family::<UnauthenticatedLabels, Counter>::default();
        registry.register(
            "unauthenticated_reviews",
            "Admission reviews from a caller without an accepted client certificate: refused (401) when --client-ca-file is set, answered when it is not",
            unauthenticated_reviews.clone(),
        );
        let api_credentials_refused = Gauge::default();
        registry.register(
            "api_credentials_refused",
            "1 while the API server refuses countersign's credentials (401 Unauthorized: its ServiceAccount token expired or was revoked), 0 while it accepts them",
            api_credentials_refused.clone(),
        );
        Arc::new(Metrics {
            registry,
            api_credentials_refused,
            unauthenticated_reviews,
            reviews,
            decision_seconds,
            cache_objects,
            leader,
            approvals,
            request_to_approved_seconds,
            request_to_deployed_seconds,
            notification_deliveries,
            reconcile_errors,
            reconcile_seconds,
            webhook_configuration_intact,
        })
    }

    /// Count one notification round's attempts.
    pub fn notifications(&self, delivered: u32, failed: u32) {
        for (outcome, count) in [("delivered", delivered), ("failed", failed)] {
            if count > 0 {
                self.notification_deliveries
                    .get_or_create(&DeliveryLabels { outcome })
                    .inc_by(u64::from(count));
            }
        }
    }

    /// Observe a request's move from its stored status to `status`, just written.
    pub fn transition(
        &self,
        approval: &crate::api::DeploymentApproval,
        status: &crate::api::DeploymentApprovalStatus,
        now: jiff::Timestamp,
    ) {
        use crate::api::ApprovalPhase;
        let before = approval.recorded_phase();
        if before == Some(status.phase) {
            return;
        }
        let requested = approval.spec.change.requested_at.0;
        let since = |at: jiff::Timestamp| at.duration_since(requested).as_secs_f64().max(0.0);
        match status.phase {
            ApprovalPhase::Approved if before != Some(ApprovalPhase::Deploying) => {
                let at = status.approved_at.as_ref().map_or(now, |t| t.0);
                self.request_to_approved_seconds.observe(since(at));
            }
            ApprovalPhase::Deployed => self.request_to_deployed_seconds.observe(since(now)),
            _ => {}
        }
    }

    /// Count a failed reconcile of `controller`.
    /// Count a failed reconcile of `controller`, by the kind of error.
    pub fn reconcile_error(&self, controller: &'static str, error: &'static str) {
        self.reconcile_errors
            .get_or_create(&ReconcileErrorLabels { controller, error })
            .inc();
    }

    /// Observe how long a reconcile of `controller` took.
    pub fn reconciled(&self, controller: &'static str, took: std::time::Duration) {
        self.reconcile_seconds
            .get_or_create(&ControllerLabels { controller })
            .observe(took.as_secs_f64());
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}
