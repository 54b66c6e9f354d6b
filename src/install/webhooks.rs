//! The ValidatingWebhookConfiguration and MutatingWebhookConfiguration, both named
//! `countersign`: which requests the API server sends to which path, and what it does when
//! countersign does not answer.

use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{
    MatchCondition, MutatingWebhook, MutatingWebhookConfiguration, RuleWithOperations,
    ServiceReference, ValidatingWebhook, ValidatingWebhookConfiguration, WebhookClientConfig,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, LabelSelectorRequirement, ObjectMeta,
};

use crate::api::GROUP;
use crate::core::admission::controllers::controller_usernames;
use crate::core::guard::{OWN_VERSION, VERSION_ANNOTATION};
use crate::core::policy::matching::GATED_NAMESPACE_LABEL;

/// The name of both webhook configurations.
pub const CONFIGURATION_NAME: &str = "countersign";

/// How long the API server waits for an answer. The webhook keeps its own live reads well
/// inside this, so it answers with a reason rather than letting the call time out.
pub const TIMEOUT_SECONDS: i32 = 10;

/// Namespaces never sent to the webhook besides the install namespace: the cluster can
/// always be repaired, even when countersign is down.
pub const ALWAYS_EXCLUDED_NAMESPACES: &[&str] = &["kube-system"];

/// Every namespace the webhooks never see and the operator leaves unlabelled:
/// [`ALWAYS_EXCLUDED_NAMESPACES`] and the install namespace.
pub fn excluded_namespaces(install_namespace: &str) -> Vec<String> {
    ALWAYS_EXCLUDED_NAMESPACES
        .iter()
        .copied()
        .chain([install_namespace])
        .map(str::to_string)
        .collect()
}

/// The label every namespace carries with its own name (set by the API server).
const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// The request paths, one per webhook, so logs and metrics say what was reviewed.
pub mod paths {
    pub const WORKLOADS: &str = "/validate/workloads";
    pub const APPROVALS: &str = "/validate/approvals";
    pub const AUDIT: &str = "/validate/audit";
    pub const POLICIES: &str = "/validate/policies";
    pub const STAMP_REVIEWS: &str = "/mutate/approvals";
    pub const STAMP_POLICIES: &str = "/mutate/policies";
    pub const LABEL_NAMESPACES: &str = "/mutate/namespaces";
}

/// Where the API server reaches the webhook.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// A URL (local mode, or a webhook outside the cluster): `https://host:port`, no path.
    Url(String),
    /// A Service in the cluster (the Helm chart).
    Service {
        namespace: String,
        name: String,
        port: i32,
    },
}

/// One group of resources, with the operations that are sent.
struct Rule {
    group: &'static str,
    version: &'static str,
    resources: &'static [&'static str],
    operations: &'static [&'static str],
    scope: &'static str,
}

/// Who sees what: one webhook of a configuration.
struct Hook {
    /// The webhook's name (unique in its configuration; a DNS-style name).
    name: &'static str,
    path: &'static str,
    rules: &'static [Rule],
    /// `false`: every namespace is sent (countersign's own kinds must be guarded everywhere).
    excludes_system_namespaces: bool,
    /// `NoneOnDryRun`: the webhook writes (a new request, a break-glass record), but never
    /// for a dry run. `None`: it only judges.
    side_effects: &'static str,
    /// Writes by the workload controllers are not sent (a match condition): what they make
    /// was gated as its workload, and they keep working while countersign is down.
    skips_workload_controllers: bool,
    /// Only namespaces a policy can gate (labelled `countersign.dev/gated`) are sent.
    gated_namespaces_only: bool,
    /// `Ignore` only where a namespace must stay writable while countersign is down.
    fails_open: bool,
    /// A match condition on whether the write changes the object's labels.
    labels: LabelChanges,
}

/// Which writes a hook is sent, by what they do to the object's labels.
#[derive(Clone, Copy, PartialEq, Eq)]
enum LabelChanges {
    /// Every write.
    Any,
    /// Creations, and updates that leave the labels as they were.
    Unchanged,
    /// Updates that change the labels.
    Changed,
}

/// CEL: the labels of an update's new and old object are the same.
const LABELS_UNCHANGED: &str = "(has(object.metadata.labels) ? object.metadata.labels : {}) == (has(oldObject.metadata.labels) ? oldObject.metadata.labels : {})";

/// Namespaces, made and changed.
const NAMESPACE_RULES: &[Rule] = &[Rule {
    group: "",
    version: "v1",
    // A namespace's labels are written through its status and finalize subresources too
    // (their strategies reset only the spec, or the status), so those are sent as well.
    resources: &["namespaces", "namespaces/status", "namespaces/finalize"],
    operations: &["CREATE", "UPDATE"],
    scope: "Cluster",
}];

/// Workload kinds gated by default (SPEC §1.1). A policy's `match.kinds` selects among the
/// kinds the API server sends.
const WORKLOAD_RULES: &[Rule] = &[
    Rule {
        group: "apps",
        version: "v1",
        resources: &["deployments", "statefulsets", "daemonsets"],
        operations: &["CREATE", "UPDATE"],
        scope: "Namespaced",
    },
    Rule {
        group: "batch",
        version: "v1",
        resources: &["jobs", "cronjobs"],
        operations: &["CREATE", "UPDATE"],
        scope: "Namespaced",
    },
    // What the workloads are made of, when a person makes them (`core::admission::controllers`).
    Rule {
        group: "",
        version: "v1",
        resources: &["pods", "replicationcontrollers"],
        operations: &["CREATE", "UPDATE"],
        scope: "Namespaced",
    },
    // `kubectl debug` adds an ephemeral container to a running Pod through this subresource.
    Rule {
        group: "",
        version: "v1",
        resources: &["pods/ephemeralcontainers"],
        operations: &["UPDATE"],
        scope: "Namespaced",
    },
    Rule {
        group: "apps",
        version: "v1",
        resources: &["replicasets"],
        operations: &["CREATE", "UPDATE"],
        scope: "Namespaced",
    },
];

const VALIDATING_HOOKS: &[Hook] = &[
    Hook {
        name: "workloads.countersign.dev",
        path: paths::WORKLOADS,
        rules: WORKLOAD_RULES,
        excludes_system_namespaces: true,
        side_effects: "NoneOnDryRun",
        skips_workload_controllers: true,
        gated_namespaces_only: true,
        fails_open: false,
        labels: LabelChanges::Any,
    },
    Hook {
        // Reviews are appended by approvers; requests made ahead of time are created by
        // deployers; status is written by countersign alone.
        name: "approvals.countersign.dev",
        path: paths::APPROVALS,
        rules: &[Rule {
            group: GROUP,
            version: "*",
            resources: &[
                "deploymentapprovals",
                "deploymentapprovals/status",
                "changesets",
                "changesets/status",
            ],
            operations: &["CREATE", "UPDATE", "DELETE"],
            scope: "Namespaced",
        }],
        excludes_system_namespaces: false,
        // A deletion is audited (not on a dry run).
        side_effects: "NoneOnDryRun",
        skips_workload_controllers: false,
        gated_namespaces_only: false,
        fails_open: false,
        labels: LabelChanges::Any,
    },
    Hook {
        // The audit trail is append-only: no UPDATE, no DELETE but retention's, no CREATE
        // but countersign's.
        name: "audit.countersign.dev",
        path: paths::AUDIT,
        rules: &[Rule {
            group: GROUP,
            version: "*",
            resources: &["auditentries", "auditentries/status"],
            operations: &["CREATE", "UPDATE", "DELETE"],
            scope: "Namespaced",
        }],
        excludes_system_namespaces: false,
        side_effects: "None",
        skips_workload_controllers: false,
        gated_namespaces_only: false,
        fails_open: false,
        labels: LabelChanges::Any,
    },
    Hook {
        // Malformed or infeasible policies are refused at admission, with the field named.
        name: "policies.countersign.dev",
        path: paths::POLICIES,
        rules: &[Rule {
            group: GROUP,
            version: "*",
            resources: &["approvalpolicies"],
            operations: &["CREATE", "UPDATE", "DELETE"],
            scope: "Cluster",
        }],
        excludes_system_namespaces: false,
        // A deletion is audited (not on a dry run).
        side_effects: "NoneOnDryRun",
        skips_workload_controllers: false,
        gated_namespaces_only: false,
        fails_open: false,
        labels: LabelChanges::Any,
    },
];

const MUTATING_HOOKS: &[Hook] = &[
    Hook {
        // Stamps `user`, `groups` and `time` on an appended review that left them out, so a
        // plain `kubectl patch` with `{decision, comment}` works; the validating webhook still
        // checks everything.
        name: "reviews.countersign.dev",
        path: paths::STAMP_REVIEWS,
        rules: &[Rule {
            group: GROUP,
            version: "*",
            resources: &["deploymentapprovals", "changesets"],
            operations: &["UPDATE"],
            scope: "Namespaced",
        }],
        excludes_system_namespaces: false,
        side_effects: "None",
        skips_workload_controllers: false,
        gated_namespaces_only: false,
        fails_open: false,
        labels: LabelChanges::Any,
    },
    Hook {
        // Stamps who made a policy's current spec (and restores the stamp on writes that do
        // not change the spec), so its PolicyCreated / PolicyChanged entries name the
        // real author.
        name: "policy-authors.countersign.dev",
        path: paths::STAMP_POLICIES,
        rules: &[Rule {
            group: GROUP,
            version: "*",
            resources: &["approvalpolicies"],
            operations: &["CREATE", "UPDATE"],
            scope: "Cluster",
        }],
        excludes_system_namespaces: false,
        side_effects: "None",
        skips_workload_controllers: false,
        gated_namespaces_only: false,
        fails_open: false,
        labels: LabelChanges::Any,
    },
    Hook {
        // Keeps the `countersign.dev/gated` label of a namespace as the policies say, on
        // every write of it: a new namespace is gated from its first workload, and nobody
        // takes a gated namespace out of the workload webhook's reach by editing the label.
        // Writes that leave the labels alone fail open, so that namespaces stay writable
        // while countersign is down (the operator puts the label right when it is back).
        name: "namespaces.countersign.dev",
        path: paths::LABEL_NAMESPACES,
        rules: NAMESPACE_RULES,
        excludes_system_namespaces: true,
        side_effects: "NoneOnDryRun",
        skips_workload_controllers: false,
        gated_namespaces_only: false,
        fails_open: true,
        labels: LabelChanges::Unchanged,
    },
    Hook {
        // The same, for updates that change a namespace's labels: they can take it out of a
        // policy's reach, which is audited with its author or refused (not on a dry run), so
        // they fail closed: while countersign is down nobody relabels a namespace unseen.
        name: "namespace-labels.countersign.dev",
        path: paths::LABEL_NAMESPACES,
        rules: NAMESPACE_RULES,
        excludes_system_namespaces: true,
        side_effects: "NoneOnDryRun",
        skips_workload_controllers: false,
        gated_namespaces_only: false,
        fails_open: false,
        labels: LabelChanges::Changed,
    },
];

/// Every path the configurations send requests to.
pub fn all_paths() -> impl Iterator<Item = &'static str> {
    VALIDATING_HOOKS
        .iter()
        .chain(MUTATING_HOOKS)
        .map(|hook| hook.path)
}

/// The ValidatingWebhookConfiguration `countersign`.
pub fn validating_configuration(
    endpoint: &Endpoint,
    ca_bundle: &[u8],
    install_namespace: &str,
) -> ValidatingWebhookConfiguration {
    ValidatingWebhookConfiguration {
        metadata: metadata(),
        webhooks: Some(
            VALIDATING_HOOKS
                .iter()
                .map(|hook| {
                    let common = Common::of(hook, endpoint, ca_bundle, install_namespace);
                    ValidatingWebhook {
                        name: common.name,
                        admission_review_versions: common.versions,
                        client_config: common.client_config,
                        failure_policy: common.failure_policy,
                        match_policy: common.match_policy,
                        namespace_selector: common.namespace_selector,
                        rules: common.rules,
                        side_effects: common.side_effects,
                        timeout_seconds: common.timeout_seconds,
                        match_conditions: common.match_conditions,
                        ..ValidatingWebhook::default()
                    }
                })
                .collect(),
        ),
    }
}

/// The MutatingWebhookConfiguration `countersign`.
pub fn mutating_configuration(
    endpoint: &Endpoint,
    ca_bundle: &[u8],
    install_namespace: &str,
) -> MutatingWebhookConfiguration {
    MutatingWebhookConfiguration {
        metadata: metadata(),
        webhooks: Some(
            MUTATING_HOOKS
                .iter()
                .map(|hook| {
                    let common = Common::of(hook, endpoint, ca_bundle, install_namespace);
                    MutatingWebhook {
                        name: common.name,
                        admission_review_versions: common.versions,
                        client_config: common.client_config,
                        failure_policy: common.failure_policy,
                        match_policy: common.match_policy,
                        namespace_selector: common.namespace_selector,
                        rules: common.rules,
                        side_effects: common.side_effects,
                        timeout_seconds: common.timeout_seconds,
                        match_conditions: common.match_conditions,
                        reinvocation_policy: Some("Never".into()),
                        ..MutatingWebhook::default()
                    }
                })
                .collect(),
        ),
    }
}

/// Named `countersign`, labelled as countersign's, and annotated with the version that
/// made it, so a guard of another version knows whose it is (`core::guard::made_by_newer`).
fn metadata() -> ObjectMeta {
    ObjectMeta {
        name: Some(CONFIGURATION_NAME.into()),
        labels: Some(
            [(
                "app.kubernetes.io/name".to_string(),
                "countersign".to_string(),
            )]
            .into(),
        ),
        annotations: Some([(VERSION_ANNOTATION.to_string(), OWN_VERSION.to_string())].into()),
        ..ObjectMeta::default()
    }
}

/// The fields validating and mutating webhooks share.
struct Common {
    match_conditions: Option<Vec<MatchCondition>>,
    name: String,
    versions: Vec<String>,
    client_config: WebhookClientConfig,
    failure_policy: Option<String>,
    match_policy: Option<String>,
    namespace_selector: Option<LabelSelector>,
    rules: Option<Vec<RuleWithOperations>>,
    side_effects: String,
    timeout_seconds: Option<i32>,
}

impl Common {
    fn of(hook: &Hook, endpoint: &Endpoint, ca_bundle: &[u8], install_namespace: &str) -> Self {
        let client_config = match endpoint {
            Endpoint::Url(base) => WebhookClientConfig {
                url: Some(format!("{}{}", base.trim_end_matches('/'), hook.path)),
                ca_bundle: Some(ByteString(ca_bundle.to_vec())),
                service: None,
            },
            Endpoint::Service {
                namespace,
                name,
                port,
            } => WebhookClientConfig {
                url: None,
                ca_bundle: Some(ByteString(ca_bundle.to_vec())),
                service: Some(ServiceReference {
                    namespace: namespace.clone(),
                    name: name.clone(),
                    path: Some(hook.path.into()),
                    port: Some(*port),
                }),
            },
        };
        let namespace_selector = hook.excludes_system_namespaces.then(|| {
            let excluded = excluded_namespaces(install_namespace);
            let mut requirements = vec![LabelSelectorRequirement {
                key: NAMESPACE_NAME_LABEL.into(),
                operator: "NotIn".into(),
                values: Some(excluded),
            }];
            if hook.gated_namespaces_only {
                requirements.push(LabelSelectorRequirement {
                    key: GATED_NAMESPACE_LABEL.into(),
                    operator: "In".into(),
                    values: Some(vec!["true".into()]),
                });
            }
            LabelSelector {
                match_expressions: Some(requirements),
                match_labels: None,
            }
        });
        let mut conditions = Vec::new();
        if hook.skips_workload_controllers {
            let controllers: Vec<String> = controller_usernames()
                .iter()
                .map(|user| format!("'{user}'"))
                .collect();
            conditions.push(MatchCondition {
                name: "not-a-workload-controller".into(),
                expression: format!(
                    "!(request.userInfo.username in [{}]) && !(request.resource.resource == 'pods' && request.userInfo.username.startsWith('system:node:'))",
                    controllers.join(", ")
                ),
            });
        }
        match hook.labels {
            LabelChanges::Any => {}
            LabelChanges::Unchanged => conditions.push(MatchCondition {
                name: "labels-unchanged".into(),
                expression: format!("request.operation != 'UPDATE' || {LABELS_UNCHANGED}"),
            }),
            LabelChanges::Changed => conditions.push(MatchCondition {
                name: "labels-changed".into(),
                expression: format!("request.operation == 'UPDATE' && !({LABELS_UNCHANGED})"),
            }),
        }
        let match_conditions = (!conditions.is_empty()).then_some(conditions);
        Common {
            match_conditions,
            name: hook.name.into(),
            versions: vec!["v1".into()],
            client_config,
            // Fail closed: a change countersign did not judge does not pass.
            failure_policy: Some(if hook.fails_open { "Ignore" } else { "Fail" }.into()),
            // A request through another version of a resource is still sent.
            match_policy: Some("Equivalent".into()),
            namespace_selector,
            rules: Some(
                hook.rules
                    .iter()
                    .map(|rule| RuleWithOperations {
                        api_groups: Some(vec![rule.group.into()]),
                        api_versions: Some(vec![rule.version.into()]),
                        resources: Some(rule.resources.iter().map(|r| r.to_string()).collect()),
                        operations: Some(rule.operations.iter().map(|o| o.to_string()).collect()),
                        scope: Some(rule.scope.into()),
                    })
                    .collect(),
            ),
            side_effects: hook.side_effects.into(),
            timeout_seconds: Some(TIMEOUT_SECONDS),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workloads_exclude_kube_system_and_the_install_namespace_and_fail_closed() {
        let config = validating_configuration(
            &Endpoint::Url("https://127.0.0.1:8443/".into()),
            b"CA",
            "cs-system",
        );
        let hooks = config.webhooks.unwrap_or_default();
        let workloads = hooks
            .iter()
            .find(|h| h.name == "workloads.countersign.dev")
            .expect("workload webhook");
        assert_eq!(
            workloads.client_config.url.as_deref(),
            Some("https://127.0.0.1:8443/validate/workloads")
        );
        assert_eq!(workloads.side_effects, "NoneOnDryRun");
        let excluded = workloads
            .namespace_selector
            .as_ref()
            .and_then(|s| s.match_expressions.as_ref())
            .and_then(|e| e[0].values.clone())
            .unwrap_or_default();
        assert_eq!(excluded, ["kube-system", "cs-system"]);
        let gated_only = workloads
            .namespace_selector
            .as_ref()
            .and_then(|s| s.match_expressions.as_ref())
            .and_then(|e| e.get(1))
            .expect("a second requirement");
        assert_eq!(gated_only.key, GATED_NAMESPACE_LABEL);
        assert_eq!(
            gated_only.values.as_deref(),
            Some(&["true".to_string()][..])
        );
        for hook in &hooks {
            assert_eq!(
                hook.failure_policy.as_deref(),
                Some("Fail"),
                "{}",
                hook.name
            );
            assert_eq!(hook.timeout_seconds, Some(TIMEOUT_SECONDS));
        }
        // countersign's own kinds are guarded in every namespace.
        let approvals = hooks
            .iter()
            .find(|h| h.name == "approvals.countersign.dev")
            .expect("approval webhook");
        assert!(approvals.namespace_selector.is_none());
        // The workload controllers' writes are not sent; every other webhook sees everyone.
        let condition = workloads
            .match_conditions
            .as_ref()
            .and_then(|c| c.first())
            .expect("a match condition on workloads");
        for controller in [
            "replicaset-controller",
            "cronjob-controller",
            "deployment-controller",
        ] {
            assert!(
                condition
                    .expression
                    .contains(&format!("'system:serviceaccount:kube-system:{controller}'")),
                "{}",
                condition.expression
            );
        }
        assert!(
            hooks
                .iter()
                .filter(|h| h.name != "workloads.countersign.dev")
                .all(|h| h.match_conditions.is_none())
        );
    }

    #[test]
    fn service_endpoints_carry_the_path() {
        let config = mutating_configuration(
            &Endpoint::Service {
                namespace: "cs".into(),
                name: "countersign".into(),
                port: 443,
            },
            b"CA",
            "cs",
        );
        let hook = &config.webhooks.unwrap_or_default()[0];
        let service = hook.client_config.service.as_ref().expect("service");
        assert_eq!(service.path.as_deref(), Some(paths::STAMP_REVIEWS));
        assert_eq!(hook.reinvocation_policy.as_deref(), Some("Never"));
    }
}
