//! Types shared by the three resources.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// An admission operation a policy can gate.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum Operation {
    Create,
    Update,
}

impl std::fmt::Display for Operation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Operation::Create => "CREATE",
            Operation::Update => "UPDATE",
        })
    }
}

/// An authenticated Kubernetes user: the requester of a change or the author of a review.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserInfo {
    pub username: String,
    #[serde(default)]
    pub groups: Vec<String>,
}

impl UserInfo {
    pub fn new(username: impl Into<String>, groups: &[&str]) -> Self {
        UserInfo {
            username: username.into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
        }
    }
}

/// The username Kubernetes gives a ServiceAccount.
pub fn service_account_username(namespace: &str, name: &str) -> String {
    format!("system:serviceaccount:{namespace}:{name}")
}
