//! countersign: a Kubernetes admission controller and operator that puts human
//! approval between a workload change and the cluster (see `../shared/SPEC.md`).
//!
//! `core` decides and does no I/O; `cluster` carries out what it decides (caches, writes,
//! Events) for `webhook` and `operator`, which stand side by side above it; `api` holds
//! the CRD types; `cli` is the shell of the `countersign` binary (docs/architecture.md).

pub mod api;

pub mod cluster;

pub mod cli;

pub mod core;

pub mod install;

pub mod kubeconfig;

pub mod notify;

pub mod operator;

pub mod serve;

pub mod telemetry;

pub mod webhook;
