//! The one room that carries out what the core decides, for the webhook and the operator
//! alike: the caches both decide from (`snapshot`, `approval_index`), every write countersign
//! makes of its own objects (`executor` carries a review's plan out: requests, the change
//! lock, the move to Deploying, entries; `status`; `trail`, the one AuditEntry writer; `chain`, where the trail's hash chain
//! and its signing key are kept;
//! `lock`), the GitOps sync rounds the webhook remembers until they are opened
//! (`sync_rounds`) and where the replicas share them when the hold is reported
//! (`sync_exchange`), asking a GitOps controller to apply again (`gitops`), and the Events
//! (`events`). Every live call runs under a deadline (`calls`).

pub mod approval_codec;
pub mod approval_index;
pub mod calls;
pub mod chain;
pub mod credentials;
pub mod events;
pub mod executor;
pub mod gitops;
pub mod lock;
pub mod snapshot;
pub mod status;
pub mod sync_exchange;
pub mod sync_rounds;
pub mod trail;

pub use executor::Cluster;

use kube::api::{ApiResource, GroupVersionKind};

/// The group, version and kind of `api_version` (`group/version`, or `v1` for the core
/// group) and `kind`.
pub fn gvk(api_version: &str, kind: &str) -> GroupVersionKind {
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    GroupVersionKind::gvk(group, version, kind)
}

/// The API of `kind` in `api_version`, for a dynamic client (the plural is derived, as for
/// every kind countersign names this way).
pub fn api_resource(api_version: &str, kind: &str) -> ApiResource {
    ApiResource::from_gvk(&gvk(api_version, kind))
}
