//! What countersign installs into a cluster, as data: the webhook configurations, the
//! ClusterRoles and Roles, the ServiceAccount's name. One source for `serve --local`, the
//! Helm chart's drift test and the docs, so the rules a test exercises are the rules users get.

pub mod rbac;
pub mod webhooks;

/// The namespace countersign runs in unless told otherwise.
pub const DEFAULT_INSTALL_NAMESPACE: &str = "countersign-system";

/// The ServiceAccount countersign runs as: "countersign's own identity" (SPEC §3, §7).
pub const SERVICE_ACCOUNT: &str = "countersign";

/// The username Kubernetes authenticates countersign's ServiceAccount as.
pub fn own_username(install_namespace: &str) -> String {
    crate::api::service_account_username(install_namespace, SERVICE_ACCOUNT)
}
