//! The custom resources of group `countersign.dev`, version `v1alpha1` (SPEC §3).
//!
//! These types are the single source of the CRD schemas: `countersign crds` prints
//! [`crd_documents`], and `crds/` holds that output.

pub mod approval;
pub mod audit;
pub mod change_set;
pub mod common;
pub mod policy;

pub use approval::*;
pub use audit::*;
pub use change_set::*;
pub use common::*;
pub use policy::*;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

/// The API group of every countersign resource.
pub const GROUP: &str = "countersign.dev";
/// The served and stored version.
pub const VERSION: &str = "v1alpha1";

/// All four CRDs, in a stable order (policy, approval, set, audit).
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![
        ApprovalPolicy::crd(),
        DeploymentApproval::crd(),
        ChangeSet::crd(),
        AuditEntry::crd(),
    ]
}

/// The file name under `crds/` for a CRD (`<plural>.<group>.yaml`).
pub fn crd_file_name(crd: &CustomResourceDefinition) -> String {
    format!("{}.yaml", crd.metadata.name.as_deref().unwrap_or("unnamed"))
}

/// One YAML document per CRD, each starting with `---`, as `countersign crds` prints them.
pub fn crd_documents() -> Result<Vec<(String, String)>, yaml_serde::Error> {
    crds()
        .iter()
        .map(|crd| {
            Ok((
                crd_file_name(crd),
                format!("---\n{}", yaml_serde::to_string(crd)?),
            ))
        })
        .collect()
}
