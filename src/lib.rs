//! countersign: a Kubernetes admission controller and operator that puts human
//! approval between a workload change and the cluster (see `../shared/SPEC.md`).
//!
//! `core` decides and does no I/O; `api` holds the CRD types; `cli` is the shell of the
//! `countersign` binary.

pub mod api;

pub mod approval_status;

pub mod audit_trail;

pub mod cli;

pub mod core;

pub mod install;

pub mod notify;

pub mod operator;

pub mod serve;

pub mod telemetry;

pub mod webhook;
