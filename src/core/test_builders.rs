//! Builders for the core's unit tests: approvers, levels and (Cluster)RoleBindings in one
//! line each.

use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::api::{ApprovalLevel, Approver};

pub fn user(name: &str, required: bool) -> Approver {
    Approver {
        user: Some(name.into()),
        required,
        ..Default::default()
    }
}

pub fn group(name: &str, required: bool) -> Approver {
    Approver {
        group: Some(name.into()),
        required,
        ..Default::default()
    }
}

pub fn level(name: &str, approvers: Vec<Approver>, min: Option<u32>) -> ApprovalLevel {
    ApprovalLevel {
        name: name.into(),
        approvers,
        min_approvals: min,
        sinks: vec![],
    }
}

/// A binding of the ClusterRole `role` to one subject (`User` or `Group`).
pub fn cluster_role_ref(role: &str) -> RoleRef {
    RoleRef {
        api_group: Some("rbac.authorization.k8s.io".into()),
        kind: "ClusterRole".into(),
        name: role.into(),
    }
}

/// A RoleBinding `name` in `namespace` of the ClusterRole `role` to one subject.
pub fn role_binding(
    namespace: &str,
    name: &str,
    role: &str,
    subject_kind: &str,
    subject: &str,
) -> RoleBinding {
    RoleBinding {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(namespace.into()),
            ..Default::default()
        },
        role_ref: cluster_role_ref(role),
        subjects: Some(vec![Subject {
            kind: subject_kind.into(),
            name: subject.into(),
            ..Default::default()
        }]),
    }
}

pub fn role(name: &str, required: bool) -> Approver {
    Approver {
        role: Some(name.into()),
        required,
        ..Default::default()
    }
}

/// A ClusterRoleBinding `name` of the ClusterRole `role` to one subject.
pub fn cluster_role_binding(
    name: &str,
    role: &str,
    subject_kind: &str,
    subject: &str,
) -> ClusterRoleBinding {
    ClusterRoleBinding {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        role_ref: cluster_role_ref(role),
        subjects: Some(vec![Subject {
            kind: subject_kind.into(),
            name: subject.into(),
            ..Default::default()
        }]),
    }
}

/// `minutes` after 2026-11-24T10:00:00Z, the time the builders' requests are made.
pub fn minutes(minutes: i64) -> jiff::Timestamp {
    jiff::Timestamp::constant(1_795_514_400, 0) // 2026-11-24T10:00:00Z
        + jiff::SignedDuration::from_mins(minutes)
}

/// Request `shop/web-1` by dave for `Deployment web`, under a chain of two levels (alice,
/// then carol) with a one-hour requestTTL, made at minute 0, with `reviews` as
/// (user, decision, minute) and a stored `phase`.
pub fn two_level_request(
    reviews: &[(&str, crate::api::ReviewDecision, i64)],
    phase: Option<crate::api::ApprovalPhase>,
) -> crate::api::DeploymentApproval {
    use crate::api::{
        ApprovalSettings, ApprovalTarget, ChangeRecord, ChangeSummary, DeploymentApproval,
        DeploymentApprovalSpec, DeploymentApprovalStatus, Operation, PolicySnapshot, Review,
        UserInfo,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    let mut approval = DeploymentApproval::new(
        "web-1",
        DeploymentApprovalSpec {
            target: ApprovalTarget {
                api_version: "apps/v1".into(),
                kind: "Deployment".into(),
                name: "web".into(),
                uid: None,
            },
            change: ChangeRecord {
                digest: "sha256:00".into(),
                summary: ChangeSummary {
                    text: "image 1 → 2".into(),
                    ..ChangeSummary::default()
                },
                summary_seal: None,
                requester: UserInfo::new("dave", &["developers"]),
                operation: Operation::Update,
                requested_at: Time(minutes(0)),
                origin: None,
            },
            policy: PolicySnapshot {
                name: "p".into(),
                chain: ApprovalSettings {
                    levels: vec![
                        level("leads", vec![user("alice", false)], None),
                        level("sre", vec![user("carol", false)], None),
                    ],
                    request_ttl: Some("1h".into()),
                    ..ApprovalSettings::default()
                },
                ..PolicySnapshot::default()
            },
            reviews: reviews
                .iter()
                .map(|(who, decision, minute)| Review {
                    user: (*who).into(),
                    groups: vec![],
                    decision: *decision,
                    comment: Some("ok".into()),
                    time: Time(minutes(*minute)),
                })
                .collect(),
            change_set: None,
        },
    );
    approval.metadata.namespace = Some("shop".into());
    approval.metadata.uid = Some("6f1c2d3e-0000-4000".into());
    approval.metadata.generation = Some(2);
    approval.status = phase.map(|phase| DeploymentApprovalStatus {
        phase,
        ..DeploymentApprovalStatus::default()
    });
    approval
}

/// What attackers put in image strings, comments and names (`tests/fixtures/hostile-text.json`,
/// shared with the integration tests), and a 700 KB string: (what, text).
pub fn hostile_corpus() -> Vec<(String, String)> {
    #[derive(serde::Deserialize)]
    struct Case {
        what: String,
        text: String,
    }
    let cases: Vec<Case> =
        serde_json::from_str(include_str!("../../tests/fixtures/hostile-text.json"))
            .unwrap_or_else(|e| panic!("the hostile corpus is JSON: {e}"));
    cases
        .into_iter()
        .map(|case| (case.what, case.text))
        .chain([("700 KB".to_string(), "a".repeat(700_000))])
        .collect()
}
