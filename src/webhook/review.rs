//! One AdmissionReview: parsed, sent to its path's dispatcher (one file each), whose plan
//! (`core::plan`) the cluster room carries out, and answered. Nothing here decides.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use k8s_openapi::api::core::v1::Namespace;
use kube::api::DynamicObject;
use kube::core::admission::{AdmissionResponse, AdmissionReview};
use kube::{Api, ResourceExt};
use serde_json::Value;

use super::client_auth::Caller;
use super::request::{BadReview, Parsed, Request, parse};
use crate::cluster::Cluster;
use crate::cluster::calls::bounded;
use crate::cluster::snapshot::Snapshot;
use crate::core::admission::proposal::PROPOSAL_CAUSE;
use crate::core::approval::seal::SealKey;
use crate::core::inert;
use crate::core::plan::{Answer, Outcome, ReviewPlan};
use crate::install::webhooks::paths;
use crate::telemetry::{Metrics, ReviewLabels, Verdict as Counted};

/// Which webhook a request came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReviewPath {
    Workloads,
    Approvals,
    Audit,
    Policies,
    StampReviews,
    StampPolicies,
    LabelNamespaces,
}

impl ReviewPath {
    pub const ALL: [ReviewPath; 7] = [
        ReviewPath::Workloads,
        ReviewPath::Approvals,
        ReviewPath::Audit,
        ReviewPath::Policies,
        ReviewPath::StampReviews,
        ReviewPath::StampPolicies,
        ReviewPath::LabelNamespaces,
    ];

    pub fn path(self) -> &'static str {
        match self {
            ReviewPath::Workloads => paths::WORKLOADS,
            ReviewPath::Approvals => paths::APPROVALS,
            ReviewPath::Audit => paths::AUDIT,
            ReviewPath::Policies => paths::POLICIES,
            ReviewPath::StampReviews => paths::STAMP_REVIEWS,
            ReviewPath::StampPolicies => paths::STAMP_POLICIES,
            ReviewPath::LabelNamespaces => paths::LABEL_NAMESPACES,
        }
    }
}

/// Where the webhook runs and who it is.
#[derive(Clone, Debug)]
pub struct Settings {
    pub install_namespace: String,
    /// countersign's own username (its ServiceAccount).
    pub own_username: String,
    /// The region of namespaces without a region label (policies' `match.regions`).
    pub cluster_region: Option<String>,
    /// AuditEntries are kept this long; countersign itself deletes none younger
    /// (`None`: kept forever).
    pub audit_retention: Option<jiff::SignedDuration>,
    /// This replica: the lock holder of what it admits.
    pub replica: String,
}

/// The admission webhook: the caches it decides from and the room that carries out what
/// it decides.
#[derive(Clone)]
pub struct Webhook {
    pub snapshot: Snapshot,
    pub cluster: Cluster,
    pub settings: Settings,
    pub metrics: Arc<Metrics>,
    /// The key requests' summaries are sealed with (`core::approval::seal`).
    pub seal_key: Arc<SealKey>,
}

impl Webhook {
    /// A webhook deciding from `snapshot` with no API server behind it (its client points
    /// at a closed local port, so live reads and writes fail fast): for benchmarks and
    /// tests of the admission path.
    pub fn offline(snapshot: Snapshot, metrics: Arc<Metrics>) -> Result<Webhook, String> {
        let url = "https://127.0.0.1:9".parse().map_err(|e| format!("{e}"))?;
        let client = kube::Client::try_from(kube::Config::new(url)).map_err(|e| e.to_string())?;
        let install_namespace = "countersign-system";
        Ok(Webhook {
            snapshot,
            cluster: Cluster::new(client, install_namespace.into(), "offline"),
            settings: Settings {
                install_namespace: install_namespace.into(),
                own_username: format!("system:serviceaccount:{install_namespace}:countersign"),
                cluster_region: None,
                audit_retention: None,
                replica: "offline".into(),
            },
            metrics,
            seal_key: Arc::new(SealKey::new(&[1; 32]).ok_or("a seal key")?),
        })
    }

    /// Answer one AdmissionReview body sent to `path` by `caller`.
    pub async fn review(
        &self,
        path: ReviewPath,
        body: &[u8],
        caller: &Caller,
    ) -> Result<AdmissionReview<DynamicObject>, BadReview> {
        let started = Instant::now();
        let request = match parse(body) {
            Ok(Parsed::Request(mut request)) => {
                request.caller = caller.clone();
                request
            }
            Ok(Parsed::Unreadable(response)) => {
                self.count("unknown", "unknown", Counted::Denied, started);
                return Ok(response.into_review());
            }
            Err(bad) => {
                self.count("unknown", "unknown", Counted::BadRequest, started);
                return Err(bad);
            }
        };
        let plan = match path {
            ReviewPath::Workloads => self.workload(&request).await,
            ReviewPath::Approvals => self.approval(&request).await,
            ReviewPath::Audit => self.audit_entry(&request),
            ReviewPath::Policies => self.policy(&request).await,
            ReviewPath::StampReviews => self.stamp_review(&request),
            ReviewPath::StampPolicies => stamp_policy(&request),
            ReviewPath::LabelNamespaces => self.label_namespace(&request),
        };
        let answer = self.cluster.carry_out(plan).await;
        let (response, counted) = respond(&request, answer);
        let resource = request.resource_label();
        self.count(
            &resource,
            &format!("{:?}", request.operation).to_uppercase(),
            counted,
            started,
        );
        tracing::debug!(
            uid = %request.uid,
            resource,
            namespace = request.namespace.as_deref().unwrap_or_default(),
            name = %request.name,
            user = request.username().unwrap_or_default(),
            allowed = response.allowed,
            "reviewed"
        );
        Ok(response.into_review())
    }

    fn count(&self, resource: &str, operation: &str, verdict: Counted, started: Instant) {
        self.metrics
            .reviews
            .get_or_create(&ReviewLabels {
                resource: resource.to_string(),
                operation: operation.to_string(),
                verdict,
            })
            .inc();
        self.metrics
            .decision_seconds
            .observe(started.elapsed().as_secs_f64());
    }

    /// Was the request made by countersign itself?
    pub(super) fn is_own(&self, request: &Request) -> bool {
        request.username() == Some(self.settings.own_username.as_str())
    }

    /// A namespace's labels: from the snapshot, else read live (a namespace made a moment
    /// ago may not be cached yet).
    pub(super) async fn namespace_labels(
        &self,
        namespace: &str,
    ) -> Result<BTreeMap<String, String>, String> {
        if let Some(labels) = self.snapshot.namespace_labels(namespace) {
            return Ok(labels);
        }
        let api: Api<Namespace> = Api::all(self.cluster.client.clone());
        match bounded(api.get(namespace)).await {
            Ok(ns) => Ok(ns.labels().clone()),
            Err(error) => Err(format!(
                "countersign cannot read namespace {namespace} ({error}), so it cannot tell which policies apply; denied, retry"
            )),
        }
    }
}

/// A plan that only answers: `Answer::deny(why)`.
pub(super) fn refuse(why: impl ToString) -> ReviewPlan {
    ReviewPlan::answer(Answer::deny(why.to_string()))
}

/// Stamp who made a policy's spec (`core::policy::authorship`).
fn stamp_policy(request: &Request) -> ReviewPlan {
    use crate::core::policy::authorship::stamp_policy_change;
    let Some(new) = request.object.as_ref() else {
        return ReviewPlan::answer(Answer::allow());
    };
    if request.sub_resource.is_some() {
        return ReviewPlan::answer(Answer::allow());
    }
    let old = match request.operation {
        kube::core::admission::Operation::Update => request.old_object.as_ref(),
        _ => None,
    };
    let operations = stamp_policy_change(old, new, &request.requester(), jiff::Timestamp::now());
    ReviewPlan::answer(Answer::patched(operations))
}

/// The API server's response for `answer`, and how it is counted. The message is inert
/// but for its line breaks (countersign's own structure); a patch that cannot be built
/// denies (fail closed).
fn respond(request: &Request, answer: Answer) -> (AdmissionResponse, Counted) {
    let counted = match answer.outcome {
        Outcome::Allowed => Counted::Allowed,
        Outcome::Denied => Counted::Denied,
        Outcome::ApprovalRequired => Counted::ApprovalRequired,
        Outcome::Approved => Counted::Approved,
    };
    let mut response = request.allow();
    if !answer.allowed {
        response = response.deny(inert::escaped_lines(&answer.message));
    } else if !answer.patch.is_empty() {
        let patched = serde_json::from_value::<json_patch::Patch>(Value::Array(answer.patch))
            .map_err(|e| e.to_string())
            .and_then(|patch| request.allow().with_patch(patch).map_err(|e| e.to_string()));
        match patched {
            Ok(with_patch) => response = with_patch,
            Err(error) => {
                let message = format!("countersign could not build its patch: {error}");
                return (request.allow().deny(message), Counted::Denied);
            }
        }
    }
    if !answer.warnings.is_empty() {
        response.warnings = Some(answer.warnings);
    }
    if let Some(proposal) = answer.proposal
        && let Ok(json) = serde_json::to_string(&proposal)
    {
        let details =
            response
                .result
                .details
                .get_or_insert_with(|| kube::core::response::StatusDetails {
                    name: String::new(),
                    group: String::new(),
                    kind: String::new(),
                    uid: String::new(),
                    causes: Vec::new(),
                    retry_after_seconds: 0,
                });
        details.causes.push(kube::core::response::StatusCause {
            reason: PROPOSAL_CAUSE.into(),
            message: json,
            field: String::new(),
        });
    }
    (response, counted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::approval::chain::RoleBindingSnapshot;
    use proptest::prelude::*;
    use serde_json::Value;

    /// A webhook whose API server does not exist: caches empty, live reads fail fast.
    fn offline_webhook() -> Webhook {
        let snapshot = Snapshot::preloaded(
            Vec::new(),
            Vec::new(),
            Vec::new(),
            RoleBindingSnapshot::default(),
        );
        Webhook::offline(snapshot, Metrics::new()).expect("an offline webhook")
    }

    /// A complete review: alice appends a bare `{decision}` to a real request, so mutated
    /// copies reach the review checks, not only the decoder.
    fn sample_review() -> Value {
        let mut old: Value = yaml_serde::from_str(include_str!(
            "../../tests/fixtures/crd-samples/deploymentapproval.yaml"
        ))
        .expect("fixture");
        old["metadata"]["namespace"] = Value::from("shop");
        old["spec"]["reviews"] = Value::Array(Vec::new());
        let mut new = old.clone();
        new["spec"]["reviews"] = serde_json::json!([{"decision": "Approve", "user": "alice",
            "time": "2025-06-02T08:30:00Z"}]);
        serde_json::json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {
                "uid": "u-1",
                "kind": {"group": "countersign.dev", "version": "v1alpha1", "kind": "DeploymentApproval"},
                "resource": {"group": "countersign.dev", "version": "v1alpha1", "resource": "deploymentapprovals"},
                "name": "sample-deploymentapproval", "namespace": "shop", "operation": "UPDATE",
                "userInfo": {"username": "alice", "groups": ["shop-leads"]},
                "object": new,
                "oldObject": old,
            },
        })
    }

    /// Every JSON pointer into `value`.
    fn pointers(value: &Value, at: String, out: &mut Vec<String>) {
        out.push(at.clone());
        match value {
            Value::Object(map) => map
                .iter()
                .for_each(|(k, v)| pointers(v, format!("{at}/{k}"), out)),
            Value::Array(items) => items
                .iter()
                .enumerate()
                .for_each(|(i, v)| pointers(v, format!("{at}/{i}"), out)),
            _ => {}
        }
    }

    fn any_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            ".{0,40}".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map(".{0,8}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn answer(path: ReviewPath, body: &[u8]) -> Result<AdmissionReview<DynamicObject>, BadReview> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            offline_webhook()
                .review(path, body, &Caller::default())
                .await
        })
    }

    /// The answer to creating an ApprovalPolicy `prod` with these chain levels.
    fn policy_creation(levels: Value) -> AdmissionResponse {
        let policy = serde_json::json!({
            "apiVersion": "countersign.dev/v1alpha1", "kind": "ApprovalPolicy",
            "metadata": {"name": "prod", "uid": "p-1"},
            "spec": {"approval": {"levels": levels}},
        });
        let review = serde_json::json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {
                "uid": "u-2",
                "kind": {"group": "countersign.dev", "version": "v1alpha1", "kind": "ApprovalPolicy"},
                "resource": {"group": "countersign.dev", "version": "v1alpha1", "resource": "approvalpolicies"},
                "name": "prod", "operation": "CREATE",
                "userInfo": {"username": "alice", "groups": ["platform"]},
                "object": policy,
            },
        });
        let body = serde_json::to_vec(&review).expect("json");
        answer(ReviewPath::Policies, &body)
            .expect("an answer")
            .response
            .expect("a response")
    }

    /// A policy is validated on the blocking pool, and its verdict is the answer: refused
    /// with validation's message, or allowed.
    #[test]
    fn a_policy_is_answered_by_its_validation() {
        let refused = policy_creation(serde_json::json!([
            {"name": "leads", "approvers": [{"user": "a"}, {"user": "b"}], "minApprovals": 2},
            {"name": "sre", "approvers": [{"user": "a"}, {"user": "b"}, {"user": "c"}], "minApprovals": 2},
        ]));
        assert!(!refused.allowed);
        assert_eq!(
            refused.result.message,
            "ApprovalPolicy prod is invalid: spec.approval.levels: levels \"leads\" and \"sre\" together need 4 more approvals from people not required elsewhere, but name only 3 (a, b, c); one person counts at one level only"
        );
        let allowed = policy_creation(serde_json::json!([
            {"name": "leads", "approvers": [{"user": "a"}, {"user": "b"}]},
        ]));
        assert!(allowed.allowed, "{:?}", allowed.result);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        /// Arbitrary bytes: a 400 or an answer, never a panic.
        #[test]
        fn arbitrary_bodies_never_panic(body in prop::collection::vec(any::<u8>(), 0..512), path in 0..5usize) {
            let _ = answer(ReviewPath::ALL[path], &body);
        }

        /// A real review with one value replaced by hostile JSON, or cut short: a 400, or
        /// an answer under the review's uid; never a panic.
        #[test]
        fn hostile_reviews_are_answered_or_refused(
            pick in any::<prop::sample::Index>(),
            replacement in any_json(),
            cut in prop::option::of(any::<prop::sample::Index>()),
            path in 0..5usize,
        ) {
            let mut review = sample_review();
            let mut all = Vec::new();
            pointers(&review, String::new(), &mut all);
            let target = pick.get(&all).clone();
            if let Some(slot) = review.pointer_mut(&target) {
                *slot = replacement;
            }
            let mut body = serde_json::to_vec(&review).expect("json");
            if let Some(cut) = cut {
                body.truncate(cut.index(body.len() + 1));
            }
            if let Ok(answered) = answer(ReviewPath::ALL[path], &body) {
                let response = answered.response.expect("a response");
                prop_assert!(!response.uid.is_empty());
            }
        }
    }

    #[test]
    fn an_undecodable_object_is_denied_under_the_reviews_uid() {
        let mut review = sample_review();
        review["request"]["object"]["metadata"]["labels"] = Value::from("not a map");
        let body = serde_json::to_vec(&review).expect("json");
        let response = answer(ReviewPath::Approvals, &body)
            .expect("an answer")
            .response
            .expect("a response");
        assert_eq!(response.uid, "u-1");
        assert!(!response.allowed);
        assert!(response.result.message.contains("cannot decode"));
    }

    #[test]
    fn the_sample_reaches_the_review_checks() {
        let body = serde_json::to_vec(&sample_review()).expect("json");
        let response = answer(ReviewPath::Approvals, &body)
            .expect("an answer")
            .response
            .expect("a response");
        // Decoded and judged: the review is dated years ago.
        assert!(
            response
                .result
                .message
                .contains("more than a minute from now"),
            "{}",
            response.result.message
        );
    }
}
