//! Which policies apply to a change, and which of their deny rules fire (SPEC §1, §3, §6).

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use serde_json::Value;

use crate::api::{ApprovalPolicy, Operation, UserInfo, WindowEffect, service_account_username};
use crate::core::change::{WORKLOAD_KINDS, group_kind, is_building_block, is_workload_kind};
use crate::core::policy::checks::{ephemeral_violations, violations};
use crate::core::policy::windows::{describe, is_active};

/// The namespace label that names a target's region.
pub const REGION_LABEL: &str = "topology.kubernetes.io/region";
/// The annotation that asks for break-glass; its value is the reason.
pub const BREAK_GLASS_ANNOTATION: &str = "countersign.dev/break-glass";

/// A policy's name for messages (`?` for a nameless one, which the API server never stores).
pub fn policy_name(policy: &ApprovalPolicy) -> &str {
    policy.metadata.name.as_deref().unwrap_or("?")
}

/// The policy called `name`, if there is one.
pub fn policy_named<'a>(policies: &'a [ApprovalPolicy], name: &str) -> Option<&'a ApprovalPolicy> {
    policies
        .iter()
        .find(|p| p.metadata.name.as_deref() == Some(name))
}

/// One admission request for a workload change, as the core sees it.
#[derive(Clone, Copy, Debug)]
pub struct ChangeRequest<'a> {
    pub operation: Operation,
    /// The object as admitted (after defaulting).
    pub object: &'a Value,
    /// The current object, on UPDATE.
    pub old_object: Option<&'a Value>,
    pub namespace: &'a str,
    pub namespace_labels: &'a BTreeMap<String, String>,
    pub requester: &'a UserInfo,
    /// The region the operator is configured with, used when the namespace has no label.
    pub cluster_region: Option<&'a str>,
    /// Dry runs are evaluated like real requests but change nothing.
    pub dry_run: bool,
}

impl ChangeRequest<'_> {
    /// The target's region: the namespace label, else the cluster region.
    pub fn region(&self) -> Option<&str> {
        self.namespace_labels
            .get(REGION_LABEL)
            .map(String::as_str)
            .or(self.cluster_region)
    }

    fn object_labels(object: &Value) -> BTreeMap<String, String> {
        object
            .pointer("/metadata/labels")
            .and_then(Value::as_object)
            .map(|labels| {
                labels
                    .iter()
                    .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Do a label selector's requirements all hold for `labels`?
pub fn selector_matches(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let labels_hold = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let expressions_hold = selector.match_expressions.iter().flatten().all(|req| {
        let values = req.values.as_deref().unwrap_or_default();
        let value = labels.get(&req.key);
        match req.operator.as_str() {
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => value.is_none_or(|v| !values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            _ => false,
        }
    });
    labels_hold && expressions_hold
}

/// Does the policy's match depend on the target namespace's labels? An empty selector
/// matches every namespace, whatever its labels.
pub fn selects_namespaces_by_label(policy: &ApprovalPolicy) -> bool {
    policy
        .spec
        .match_
        .namespace_selector
        .as_ref()
        .is_some_and(|selector| {
            selector
                .match_labels
                .as_ref()
                .is_some_and(|m| !m.is_empty())
                || selector
                    .match_expressions
                    .as_ref()
                    .is_some_and(|e| !e.is_empty())
        })
}

/// Does the policy's `match` select this change? A policy that restricts regions matches a
/// target whose region is unknown (fail closed).
pub fn policy_matches(policy: &ApprovalPolicy, request: &ChangeRequest) -> bool {
    let m = &policy.spec.match_;
    let (group, kind) = group_kind(request.object);
    // A policy that gates a workload kind also gates Pods and ReplicaSets made by hand:
    // otherwise a bare Pod would run any image next to the gated Deployment.
    let kind_matches = if m.kinds.is_empty() {
        is_workload_kind(&group, &kind)
    } else {
        m.kinds
            .iter()
            .any(|gk| gk.group == group && gk.kind == kind)
            || (is_building_block(&group, &kind)
                && m.kinds
                    .iter()
                    .any(|gk| WORKLOAD_KINDS.contains(&(gk.group.as_str(), gk.kind.as_str()))))
    };
    let operation_matches = m.operations.is_empty() || m.operations.contains(&request.operation);
    let object_selected = m.object_selector.as_ref().is_none_or(|s| {
        selector_matches(s, &ChangeRequest::object_labels(request.object))
            || request
                .old_object
                .is_some_and(|old| selector_matches(s, &ChangeRequest::object_labels(old)))
    });
    kind_matches
        && operation_matches
        && object_selected
        && namespace_in_reach(
            policy,
            request.namespace,
            request.namespace_labels,
            request.region(),
        )
}

/// Does the policy's `match` reach the namespace (its names, label selector and regions)?
/// `region` is the namespace's: its label, else the cluster's. A policy that restricts
/// regions reaches a namespace whose region is unknown (fail closed).
fn namespace_in_reach(
    policy: &ApprovalPolicy,
    namespace: &str,
    labels: &BTreeMap<String, String>,
    region: Option<&str>,
) -> bool {
    let m = &policy.spec.match_;
    let named = m.namespaces.is_empty() || m.namespaces.iter().any(|n| n == namespace);
    let selected = m
        .namespace_selector
        .as_ref()
        .is_none_or(|s| selector_matches(s, labels));
    let in_region =
        m.regions.is_empty() || region.is_none_or(|region| m.regions.iter().any(|r| r == region));
    named && selected && in_region
}

/// The label countersign keeps on every namespace some policy can gate, so that only those
/// are sent to the workload webhook: when countersign is down, nothing else is held up.
pub const GATED_NAMESPACE_LABEL: &str = "countersign.dev/gated";

/// Can any policy gate a change in this namespace? (It is in a policy's reach and that
/// policy does not exempt it.) `labels` are the namespace's own, countersign's label
/// aside.
pub fn namespace_is_gated(
    policies: &[ApprovalPolicy],
    namespace: &str,
    labels: &BTreeMap<String, String>,
    cluster_region: Option<&str>,
) -> bool {
    let region = labels
        .get(REGION_LABEL)
        .map(String::as_str)
        .or(cluster_region);
    policies.iter().any(|policy| {
        let exempt = policy
            .spec
            .exclude
            .as_ref()
            .is_some_and(|e| e.namespaces.iter().any(|n| n == namespace));
        !exempt && namespace_in_reach(policy, namespace, labels, region)
    })
}

/// The policies that reach the namespace `before` its labels change but not `after` (and
/// did not exempt it).
pub fn policies_left_behind<'p>(
    policies: &'p [ApprovalPolicy],
    namespace: &str,
    before: &BTreeMap<String, String>,
    after: &BTreeMap<String, String>,
    cluster_region: Option<&str>,
) -> Vec<&'p ApprovalPolicy> {
    policies
        .iter()
        .filter(|policy| {
            let one = std::slice::from_ref(*policy);
            namespace_is_gated(one, namespace, before, cluster_region)
                && !namespace_is_gated(one, namespace, after, cluster_region)
        })
        .collect()
}

/// A namespace object's labels, countersign's own label aside.
pub fn namespace_labels_of(namespace: &Value) -> BTreeMap<String, String> {
    let mut labels = ChangeRequest::object_labels(namespace);
    labels.remove(GATED_NAMESPACE_LABEL);
    labels
}

/// JSON Patch operations that leave a namespace object's gated label as the policies say
/// (added, set to "true", or removed), whatever the writer put there.
pub fn gated_label_patch(
    policies: &[ApprovalPolicy],
    namespace: &Value,
    cluster_region: Option<&str>,
) -> Vec<Value> {
    let name = namespace
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let mut labels = ChangeRequest::object_labels(namespace);
    let current = labels.remove(GATED_NAMESPACE_LABEL);
    let gated = namespace_is_gated(policies, name, &labels, cluster_region);
    let path = format!(
        "/metadata/labels/{}",
        GATED_NAMESPACE_LABEL.replace('~', "~0").replace('/', "~1")
    );
    match (gated, current.as_deref()) {
        (true, Some("true")) | (false, None) => Vec::new(),
        (true, _)
            if namespace
                .pointer("/metadata/labels")
                .is_some_and(Value::is_object) =>
        {
            vec![serde_json::json!({"op": "add", "path": path, "value": "true"})]
        }
        (true, _) => vec![serde_json::json!({
            "op": "add", "path": "/metadata/labels", "value": { GATED_NAMESPACE_LABEL: "true" }
        })],
        (false, Some(_)) => vec![serde_json::json!({"op": "remove", "path": path})],
    }
}

/// The policies whose `match` selects this change, highest priority first (ties: name order).
pub fn matching_policies<'p>(
    policies: &'p [ApprovalPolicy],
    request: &ChangeRequest,
) -> Vec<&'p ApprovalPolicy> {
    let mut matched: Vec<&ApprovalPolicy> = policies
        .iter()
        .filter(|p| policy_matches(p, request))
        .collect();
    matched.sort_by(|a, b| {
        b.spec
            .priority
            .cmp(&a.spec.priority)
            .then_with(|| policy_name(a).cmp(policy_name(b)))
    });
    matched
}

/// Why the policy never gates this requester or namespace, if it does not.
pub fn exclusion(policy: &ApprovalPolicy, request: &ChangeRequest) -> Option<String> {
    let exclude = policy.spec.exclude.as_ref()?;
    let user = &request.requester.username;
    if exclude.users.contains(user) {
        return Some(format!("user {user} is exempt"));
    }
    if let Some(group) = request
        .requester
        .groups
        .iter()
        .find(|g| exclude.groups.contains(g))
    {
        return Some(format!("group {group} is exempt"));
    }
    if exclude
        .service_accounts
        .iter()
        .any(|sa| service_account_username(&sa.namespace, &sa.name) == *user)
    {
        return Some(format!("service account {user} is exempt"));
    }
    if exclude.namespaces.iter().any(|n| n == request.namespace) {
        return Some(format!("namespace {} is exempt", request.namespace));
    }
    None
}

/// The deny rules of one policy that fire for this change at `now`: freezes, allowed
/// windows, and checks. Each message starts with the policy name.
pub fn deny_reasons(
    policy: &ApprovalPolicy,
    request: &ChangeRequest,
    now: Timestamp,
) -> Vec<String> {
    let name = policy_name(policy);
    let mut reasons = Vec::new();
    let mut allow_windows = Vec::new();
    let mut inside_allow = false;
    for window in &policy.spec.windows {
        let active = match is_active(window, now) {
            Ok(active) => active,
            Err(e) => {
                reasons.push(format!(
                    "policy {name}: window {:?} is invalid ({e}); denying",
                    window.name
                ));
                continue;
            }
        };
        match window.effect {
            WindowEffect::Deny if active => reasons.push(format!(
                "policy {name}: change freeze {} is in effect",
                describe(window)
            )),
            WindowEffect::Deny => {}
            WindowEffect::Allow => {
                allow_windows.push(describe(window));
                inside_allow |= active;
            }
        }
    }
    if !allow_windows.is_empty() && !inside_allow {
        reasons.push(format!(
            "policy {name}: outside the allowed windows {}",
            allow_windows.join(", ")
        ));
    }
    if let Some(checks) = &policy.spec.checks {
        reasons.extend(
            violations(checks, request.object)
                .into_iter()
                .map(|v| format!("policy {name}: {v}")),
        );
        if checks.forbid_ephemeral_containers {
            reasons.extend(
                ephemeral_violations(request.object, request.old_object)
                    .into_iter()
                    .map(|v| format!("policy {name}: {v}")),
            );
        }
    }
    reasons
}

/// The outcome of a break-glass annotation for one policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BreakGlassOutcome {
    /// No annotation.
    NotRequested,
    /// The requester may break glass for this policy; holds the reason.
    Granted(String),
    /// The annotation is present but does not count, and why.
    Refused(String),
}

/// Does the change's break-glass annotation bypass this policy?
pub fn break_glass(policy: &ApprovalPolicy, request: &ChangeRequest) -> BreakGlassOutcome {
    let Some(reason) = request
        .object
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(BREAK_GLASS_ANNOTATION))
        .and_then(Value::as_str)
    else {
        return BreakGlassOutcome::NotRequested;
    };
    let name = policy_name(policy);
    if reason.trim().is_empty() {
        return BreakGlassOutcome::Refused(format!(
            "policy {name}: break-glass needs a reason in the {BREAK_GLASS_ANNOTATION} annotation"
        ));
    }
    let Some(groups) = policy
        .spec
        .break_glass
        .as_ref()
        .map(|b| b.groups.as_slice())
    else {
        return BreakGlassOutcome::Refused(format!("policy {name}: does not allow break-glass"));
    };
    if request.requester.groups.iter().any(|g| groups.contains(g)) {
        BreakGlassOutcome::Granted(reason.trim().to_string())
    } else {
        BreakGlassOutcome::Refused(format!(
            "policy {name}: {} may not break glass (not in breakGlass.groups)",
            request.requester.username
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{
        ApprovalPolicySpec, BreakGlass, ChangeWindow, GroupKind, PolicyExclusions, PolicyMatch,
        ServiceAccountRef, Weekday, WeeklySchedule,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;
    use serde_json::json;

    fn policy(spec: ApprovalPolicySpec) -> ApprovalPolicy {
        ApprovalPolicy::new("p", spec)
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn deployment() -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
               "metadata": {"name": "web", "namespace": "shop", "labels": {"tier": "frontend"},
                            "annotations": {"countersign.dev/break-glass": "INC-4711 checkout down"}},
               "spec": {"template": {"spec": {"containers": [{"name": "web", "image": "nginx"}]}}}})
    }

    struct Fixture {
        object: Value,
        namespace_labels: BTreeMap<String, String>,
        requester: UserInfo,
    }

    impl Fixture {
        fn new() -> Self {
            Fixture {
                object: deployment(),
                namespace_labels: labels(&[(REGION_LABEL, "eu-west-1"), ("env", "production")]),
                requester: UserInfo::new("dev", &["developers", "oncall"]),
            }
        }
        fn request(&self) -> ChangeRequest<'_> {
            ChangeRequest {
                operation: Operation::Update,
                object: &self.object,
                old_object: None,
                namespace: "shop",
                namespace_labels: &self.namespace_labels,
                requester: &self.requester,
                cluster_region: None,
                dry_run: false,
            }
        }
    }

    #[test]
    fn which_policies_depend_on_namespace_labels() {
        let with_selector = |selector: serde_json::Value| -> ApprovalPolicy {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "p"},
                "spec": {"match": {"namespaceSelector": selector}}
            }))
            .unwrap()
        };
        let cases = [
            (serde_json::json!({"matchLabels": {"env": "prod"}}), true),
            (
                serde_json::json!({"matchExpressions": [{"key": "env", "operator": "Exists"}]}),
                true,
            ),
            (serde_json::json!({}), false),
            (serde_json::json!({"matchLabels": {}}), false),
        ];
        for (selector, expected) in cases {
            let policy = with_selector(selector.clone());
            assert_eq!(selects_namespaces_by_label(&policy), expected, "{selector}");
        }
        let no_selector: ApprovalPolicy =
            serde_json::from_value(serde_json::json!({"metadata": {"name": "p"}, "spec": {}}))
                .unwrap();
        assert!(!selects_namespaces_by_label(&no_selector));
    }

    #[test]
    fn matching_table() {
        let selector = |k: &str, op: &str, values: &[&str]| LabelSelector {
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: k.into(),
                operator: op.into(),
                values: Some(values.iter().map(|v| v.to_string()).collect()),
            }]),
            match_labels: None,
        };
        let cases: Vec<(&str, PolicyMatch, bool)> = vec![
            ("empty match: workload kinds", PolicyMatch::default(), true),
            (
                "other kind",
                PolicyMatch {
                    kinds: vec![GroupKind {
                        group: "".into(),
                        kind: "ConfigMap".into(),
                    }],
                    ..Default::default()
                },
                false,
            ),
            (
                "named kind",
                PolicyMatch {
                    kinds: vec![GroupKind {
                        group: "apps".into(),
                        kind: "Deployment".into(),
                    }],
                    ..Default::default()
                },
                true,
            ),
            (
                "wrong group",
                PolicyMatch {
                    kinds: vec![GroupKind {
                        group: "".into(),
                        kind: "Deployment".into(),
                    }],
                    ..Default::default()
                },
                false,
            ),
            (
                "namespace listed",
                PolicyMatch {
                    namespaces: vec!["shop".into()],
                    ..Default::default()
                },
                true,
            ),
            (
                "namespace not listed",
                PolicyMatch {
                    namespaces: vec!["payments".into()],
                    ..Default::default()
                },
                false,
            ),
            (
                "namespace selector",
                PolicyMatch {
                    namespace_selector: Some(selector("env", "In", &["production"])),
                    ..Default::default()
                },
                true,
            ),
            (
                "namespace selector miss",
                PolicyMatch {
                    namespace_selector: Some(selector("env", "In", &["staging"])),
                    ..Default::default()
                },
                false,
            ),
            (
                "object selector NotIn",
                PolicyMatch {
                    object_selector: Some(selector("tier", "NotIn", &["backend"])),
                    ..Default::default()
                },
                true,
            ),
            (
                "object selector DoesNotExist",
                PolicyMatch {
                    object_selector: Some(LabelSelector {
                        match_labels: None,
                        match_expressions: Some(vec![LabelSelectorRequirement {
                            key: "tier".into(),
                            operator: "DoesNotExist".into(),
                            values: None,
                        }]),
                    }),
                    ..Default::default()
                },
                false,
            ),
            (
                "region",
                PolicyMatch {
                    regions: vec!["eu-west-1".into(), "eu-central-1".into()],
                    ..Default::default()
                },
                true,
            ),
            (
                "other region",
                PolicyMatch {
                    regions: vec!["us-east-1".into()],
                    ..Default::default()
                },
                false,
            ),
            (
                "operation CREATE only",
                PolicyMatch {
                    operations: vec![Operation::Create],
                    ..Default::default()
                },
                false,
            ),
        ];
        let fixture = Fixture::new();
        for (name, m, expected) in cases {
            let p = policy(ApprovalPolicySpec {
                match_: m,
                ..Default::default()
            });
            assert_eq!(policy_matches(&p, &fixture.request()), expected, "{name}");
        }
    }

    #[test]
    fn region_falls_back_to_the_cluster_and_fails_closed_when_unknown() {
        let mut fixture = Fixture::new();
        fixture.namespace_labels.clear();
        let p = policy(ApprovalPolicySpec {
            match_: PolicyMatch {
                regions: vec!["eu-west-1".into()],
                ..Default::default()
            },
            ..Default::default()
        });
        assert!(
            policy_matches(&p, &fixture.request()),
            "unknown region matches"
        );
        let request = ChangeRequest {
            cluster_region: Some("us-east-1"),
            ..fixture.request()
        };
        assert!(!policy_matches(&p, &request));
        let request = ChangeRequest {
            cluster_region: Some("eu-west-1"),
            ..fixture.request()
        };
        assert!(policy_matches(&p, &request));
    }

    #[test]
    fn exclusions_table() {
        let fixture = Fixture::new();
        let cases: Vec<(PolicyExclusions, Option<&str>)> = vec![
            (PolicyExclusions::default(), None),
            (
                PolicyExclusions {
                    users: vec!["dev".into()],
                    ..Default::default()
                },
                Some("user dev is exempt"),
            ),
            (
                PolicyExclusions {
                    groups: vec!["oncall".into()],
                    ..Default::default()
                },
                Some("group oncall is exempt"),
            ),
            (
                PolicyExclusions {
                    namespaces: vec!["shop".into()],
                    ..Default::default()
                },
                Some("namespace shop is exempt"),
            ),
            (
                PolicyExclusions {
                    service_accounts: vec![ServiceAccountRef {
                        namespace: "ci".into(),
                        name: "bot".into(),
                    }],
                    ..Default::default()
                },
                None,
            ),
        ];
        for (exclude, expected) in cases {
            let p = policy(ApprovalPolicySpec {
                exclude: Some(exclude.clone()),
                ..Default::default()
            });
            assert_eq!(
                exclusion(&p, &fixture.request()).as_deref(),
                expected,
                "{exclude:?}"
            );
        }
        let bot = UserInfo::new("system:serviceaccount:ci:bot", &[]);
        let p = policy(ApprovalPolicySpec {
            exclude: Some(PolicyExclusions {
                service_accounts: vec![ServiceAccountRef {
                    namespace: "ci".into(),
                    name: "bot".into(),
                }],
                ..Default::default()
            }),
            ..Default::default()
        });
        let request = ChangeRequest {
            requester: &bot,
            ..fixture.request()
        };
        assert_eq!(
            exclusion(&p, &request).as_deref(),
            Some("service account system:serviceaccount:ci:bot is exempt")
        );
    }

    #[test]
    fn windows_deny_inside_freezes_and_outside_allowed_windows() {
        let fixture = Fixture::new();
        let window = |effect, days: &[Weekday]| ChangeWindow {
            name: "w".into(),
            effect,
            time_zone: "Europe/Berlin".into(),
            weekly: Some(WeeklySchedule {
                days: days.to_vec(),
                start: "09:00".into(),
                end: "17:00".into(),
            }),
            absolute: None,
        };
        let monday_noon: Timestamp = "2025-06-02T10:00:00Z".parse().unwrap();
        let freeze = policy(ApprovalPolicySpec {
            windows: vec![window(WindowEffect::Deny, &[Weekday::Monday])],
            ..Default::default()
        });
        assert_eq!(
            deny_reasons(&freeze, &fixture.request(), monday_noon),
            vec![
                "policy p: change freeze \"w\" (Monday 09:00–17:00 Europe/Berlin) is in effect"
                    .to_string()
            ]
        );
        let allowed_tuesday = policy(ApprovalPolicySpec {
            windows: vec![window(WindowEffect::Allow, &[Weekday::Tuesday])],
            ..Default::default()
        });
        assert_eq!(
            deny_reasons(&allowed_tuesday, &fixture.request(), monday_noon),
            vec![
                "policy p: outside the allowed windows \"w\" (Tuesday 09:00–17:00 Europe/Berlin)"
                    .to_string()
            ]
        );
        let allowed_monday = policy(ApprovalPolicySpec {
            windows: vec![window(WindowEffect::Allow, &[Weekday::Monday])],
            ..Default::default()
        });
        assert!(deny_reasons(&allowed_monday, &fixture.request(), monday_noon).is_empty());
    }

    #[test]
    fn break_glass_table() {
        let with_groups = |groups: &[&str]| {
            policy(ApprovalPolicySpec {
                break_glass: Some(BreakGlass {
                    groups: groups.iter().map(|g| g.to_string()).collect(),
                }),
                ..Default::default()
            })
        };
        let fixture = Fixture::new();
        assert_eq!(
            break_glass(&with_groups(&["oncall"]), &fixture.request()),
            BreakGlassOutcome::Granted("INC-4711 checkout down".into())
        );
        assert_eq!(
            break_glass(&with_groups(&["sre"]), &fixture.request()),
            BreakGlassOutcome::Refused(
                "policy p: dev may not break glass (not in breakGlass.groups)".into()
            )
        );
        let mut no_reason = Fixture::new();
        no_reason.object["metadata"]["annotations"]["countersign.dev/break-glass"] = json!(" ");
        assert!(matches!(
            break_glass(&with_groups(&["oncall"]), &no_reason.request()),
            BreakGlassOutcome::Refused(_)
        ));
        assert_eq!(
            break_glass(&policy(ApprovalPolicySpec::default()), &fixture.request()),
            BreakGlassOutcome::Refused("policy p: does not allow break-glass".into())
        );
        let mut none = Fixture::new();
        none.object["metadata"]["annotations"] = json!({});
        assert_eq!(
            break_glass(&with_groups(&["oncall"]), &none.request()),
            BreakGlassOutcome::NotRequested
        );
    }

    #[test]
    fn namespaces_some_policy_can_gate_are_labelled_and_no_others() {
        let by_name = policy(ApprovalPolicySpec {
            match_: PolicyMatch {
                namespaces: vec!["shop".into()],
                ..PolicyMatch::default()
            },
            ..ApprovalPolicySpec::default()
        });
        let by_label = policy(ApprovalPolicySpec {
            match_: PolicyMatch {
                namespace_selector: Some(LabelSelector {
                    match_labels: Some(labels(&[("env", "production")]).into_iter().collect()),
                    match_expressions: None,
                }),
                regions: vec!["eu-west-1".into()],
                ..PolicyMatch::default()
            },
            exclude: Some(PolicyExclusions {
                namespaces: vec!["sandbox".into()],
                ..PolicyExclusions::default()
            }),
            ..ApprovalPolicySpec::default()
        });
        let policies = vec![by_name, by_label];
        let prod = [("env", "production")];
        // (namespace, labels, cluster region, gated)
        type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, Option<&'a str>, bool);
        let cases: Vec<Case> = vec![
            ("shop", vec![], None, true),
            ("payments", prod.to_vec(), Some("eu-west-1"), true),
            ("payments", prod.to_vec(), Some("us-east-1"), false),
            (
                "payments",
                vec![("env", "production"), (REGION_LABEL, "eu-west-1")],
                Some("us-east-1"),
                true,
            ),
            ("payments", prod.to_vec(), None, true),
            ("sandbox", prod.to_vec(), Some("eu-west-1"), false),
            ("scratch", vec![("env", "dev")], Some("eu-west-1"), false),
        ];
        for (name, pairs, region, gated) in cases {
            assert_eq!(
                namespace_is_gated(&policies, name, &labels(&pairs), region),
                gated,
                "{name} {pairs:?} in {region:?}"
            );
        }
        assert!(!namespace_is_gated(&[], "shop", &labels(&[]), None));

        let patched = |object: Value| {
            let operations = gated_label_patch(&policies, &object, None);
            let mut object = object;
            let patch: json_patch::Patch =
                serde_json::from_value(Value::Array(operations)).expect("a patch");
            json_patch::patch(&mut object, &patch).expect("applies");
            object["metadata"]["labels"][GATED_NAMESPACE_LABEL].clone()
        };
        let namespace =
            |name: &str, labels: Value| json!({"metadata": {"name": name, "labels": labels}});
        assert_eq!(
            patched(json!({"metadata": {"name": "shop"}})),
            json!("true")
        );
        assert_eq!(patched(namespace("shop", json!({}))), json!("true"));
        assert_eq!(
            patched(namespace("shop", json!({GATED_NAMESPACE_LABEL: "false"}))),
            json!("true"),
            "nobody takes a gated namespace out by hand"
        );
        assert_eq!(
            patched(namespace("scratch", json!({GATED_NAMESPACE_LABEL: "true"}))),
            Value::Null,
            "nor puts another in"
        );
        assert!(
            gated_label_patch(
                &policies,
                &namespace("shop", json!({GATED_NAMESPACE_LABEL: "true"})),
                None
            )
            .is_empty()
        );
    }
}
