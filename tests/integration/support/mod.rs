//! Test support for integration tests against the real control plane that
//! `tests/cluster/up` starts: the cluster itself (started once, or reused),
//! a `kube::Client` and a `kubectl` per test user, a fresh namespace per test,
//! CRD installation and webhook registration.

pub mod cluster;
pub mod countersign;
pub mod crds;
pub mod flow;
pub mod gitops;
// Used by the binaries that run serve themselves (local_mode, faults, chart_on_node), not
// by this one.
#[allow(dead_code)]
pub mod changes;
#[allow(dead_code)]
pub mod local;
pub mod namespace;
pub mod objects;
pub mod receiver;
pub mod tls;
pub mod wait;
pub mod webhook;

pub use cluster::{TestCluster, User};
pub use namespace::TestNamespace;
