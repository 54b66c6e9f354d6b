//! countersign: a Kubernetes admission controller and operator that puts human
//! approval between a workload change and the cluster (see `../shared/SPEC.md`).
