//! The admission shell: HTTPS (`server`, who calls: `client_auth`), the review paths
//! (`router`), and one dispatcher per path: the review in, the core's plan out, carried
//! out by the cluster room (`review`); and, with `--gitops`, the opener of the GitOps sync
//! rounds its dry runs remembered (`syncs`).

mod approvals;
mod audit_entries;
mod change_sets;
pub mod client_auth;
mod namespaces;
mod policies;
pub mod request;
pub mod review;
pub mod router;
pub mod server;
pub mod syncs;
mod workloads;
