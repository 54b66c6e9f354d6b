//! Integration tests against the real control plane of `tests/cluster/`
//! (etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok).
//! The cluster is started on first use, or reused when one is running.

mod support;

mod admission_webhook;
mod api_machinery;
mod audit_chain;
mod change_sets;
mod change_sets_cli;
mod cli_approver;
mod crds;
mod deploy_token;
mod gate;
mod gitops;
mod identity;
mod leader;
mod notifications;
mod policy_audit;
mod rollout;
mod self_managed_tls;
mod trust;
mod ways_around;
mod workloads;
