//! An AdmissionReview request as the webhook reads it: the envelope's fields, with the
//! objects left as JSON for the core. Decoded in one pass; kube's
//! `AdmissionRequest<DynamicObject>` buffers each object through serde's `flatten`, which
//! cost more than the whole decision. Answers are kube's `AdmissionResponse`.

use k8s_openapi::api::authentication::v1::UserInfo as AuthenticatedUser;
use kube::core::GroupVersionResource;
use kube::core::admission::{AdmissionResponse, Operation};
use serde::Deserialize;
use serde_json::Value;

use super::client_auth::Caller;
use crate::api::UserInfo;

/// A body that is not an AdmissionReview: answered with HTTP 400 and this reason.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BadReview(pub String);

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Envelope {
    api_version: Option<String>,
    kind: Option<String>,
    request: Option<Request>,
}

/// The request of an AdmissionReview.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Request {
    pub uid: String,
    pub resource: GroupVersionResource,
    #[serde(default)]
    pub sub_resource: Option<String>,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub namespace: Option<String>,
    pub operation: Operation,
    pub user_info: AuthenticatedUser,
    #[serde(default)]
    pub object: Option<Value>,
    #[serde(default)]
    pub old_object: Option<Value>,
    #[serde(default)]
    dry_run: Option<bool>,
    /// The review's apiVersion, echoed in the answer.
    #[serde(skip)]
    pub api_version: String,
    /// Who sent the review (`client_auth`), set by the router.
    #[serde(skip)]
    pub caller: Caller,
}

/// What a body turned out to be.
pub enum Parsed {
    Request(Box<Request>),
    /// A review whose request is there but unreadable: denied (fail closed) with the
    /// reason, under the review's uid.
    Unreadable(Box<AdmissionResponse>),
}

/// Read a body: a malformed or truncated review is a [`BadReview`]; a review with a uid
/// whose request cannot be read is denied.
pub fn parse(body: &[u8]) -> Result<Parsed, BadReview> {
    match serde_json::from_slice::<Envelope>(body) {
        Ok(Envelope {
            api_version,
            kind,
            request: Some(mut request),
        }) if kind.as_deref() == Some("AdmissionReview") && !request.uid.is_empty() => {
            request.api_version = api_version.unwrap_or_else(|| "admission.k8s.io/v1".into());
            Ok(Parsed::Request(Box::new(request)))
        }
        Ok(_) => Err(BadReview(
            "not an AdmissionReview with a request and a uid".into(),
        )),
        Err(error) => {
            let value: Value = serde_json::from_slice(body)
                .map_err(|e| BadReview(format!("the body is not a JSON AdmissionReview: {e}")))?;
            let uid = value
                .pointer("/request/uid")
                .and_then(Value::as_str)
                .filter(|uid| !uid.is_empty());
            let (Some(uid), Some("AdmissionReview")) =
                (uid, value.get("kind").and_then(Value::as_str))
            else {
                return Err(BadReview(format!(
                    "not an AdmissionReview with a request: {error}"
                )));
            };
            let mut response = AdmissionResponse::invalid(format!(
                "countersign cannot decode this request, so it is denied: {error}"
            ));
            response.uid = uid.to_string();
            if let Some(api_version) = value.get("apiVersion").and_then(Value::as_str) {
                response.types.api_version = api_version.to_string();
            }
            Ok(Parsed::Unreadable(Box::new(response)))
        }
    }
}

impl Request {
    /// An answer that admits, under this request's uid.
    pub fn allow(&self) -> AdmissionResponse {
        let mut response = AdmissionResponse::invalid("");
        response.types.api_version = self.api_version.clone();
        response.uid = self.uid.clone();
        response.allowed = true;
        response.result = Default::default();
        response
    }

    pub fn dry_run(&self) -> bool {
        self.dry_run.unwrap_or(false)
    }

    pub fn username(&self) -> Option<&str> {
        self.user_info.username.as_deref()
    }

    /// The authenticated requester of the API call.
    pub fn requester(&self) -> UserInfo {
        UserInfo {
            username: self.user_info.username.clone().unwrap_or_default(),
            groups: self.user_info.groups.clone().unwrap_or_default(),
        }
    }

    /// `deployments`, or `deploymentapprovals/status` for a subresource.
    pub fn resource_label(&self) -> String {
        match &self.sub_resource {
            Some(sub) => format!("{}/{sub}", self.resource.resource),
            None => self.resource.resource.clone(),
        }
    }
}

/// Decode an object of a countersign kind; the error names the field.
pub fn decode<K: serde::de::DeserializeOwned>(object: Option<&Value>) -> Result<K, String> {
    let object = object.ok_or("the request carries no object")?;
    serde_path_to_error::deserialize(object).map_err(|e| {
        format!(
            "countersign cannot decode the object at {}: {}",
            e.path(),
            e.inner()
        )
    })
}
