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
