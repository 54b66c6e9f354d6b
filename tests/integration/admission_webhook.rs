//! The API server calls a validating webhook over TLS with a real
//! AdmissionReview, and the webhook's denial reaches the client with its
//! message: the path countersign's webhook takes.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use axum::Json;
use axum::extract::State;
use axum::routing::post;
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::PostParams;
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview};
use kube::{Api, Error};

use crate::support::namespace::unique_name;
use crate::support::objects;
use crate::support::tls::HttpsServer;
use crate::support::wait::{Poll, until};
use crate::support::webhook::{RegisteredWebhook, WebhookRule};
use crate::support::{TestCluster, TestNamespace, User};

/// What the test webhook saw of one request.
#[derive(Clone, Debug)]
struct SeenRequest {
    user: String,
    groups: Vec<String>,
    operation: String,
    name: String,
}

/// Denies every request, naming the object and the user, and records it.
async fn deny_all(
    State(seen): State<Arc<Mutex<Vec<SeenRequest>>>>,
    Json(review): Json<AdmissionReview<DynamicObject>>,
) -> Json<AdmissionReview<DynamicObject>> {
    let request: AdmissionRequest<DynamicObject> = match review.try_into() {
        Ok(request) => request,
        Err(error) => return Json(AdmissionResponse::invalid(error.to_string()).into_review()),
    };
    let user = request.user_info.username.clone().unwrap_or_default();
    if let Ok(mut seen) = seen.lock() {
        seen.push(SeenRequest {
            user: user.clone(),
            groups: request.user_info.groups.clone().unwrap_or_default(),
            operation: format!("{:?}", request.operation),
            name: request.name.clone(),
        });
    }
    let message = format!("test webhook refuses {} by {user}", request.name);
    let mut response = AdmissionResponse::from(&request).deny(message);
    // Without a code the API server answers 400; a refusal is a 403.
    response.result.code = 403;
    response.result.reason = "Forbidden".to_owned();
    Json(response.into_review())
}

// Multi-threaded: the webhook server must keep serving while the test thread
// blocks on kubectl.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_denial_reaches_kube_rs_and_kubectl_with_its_message() -> Result<()> {
    let namespace = TestNamespace::create("webhook", Some("us-east-1")).await?;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let router = axum::Router::new()
        .route("/validate", post(deny_all))
        .with_state(seen.clone());
    let server = HttpsServer::start(router).await?;
    let _webhook = RegisteredWebhook::register(
        namespace.name(),
        &server.url("/validate"),
        &server.ca_pem,
        &WebhookRule {
            api_groups: &["apps"],
            api_versions: &["v1"],
            resources: &["deployments"],
            operations: &["CREATE", "UPDATE"],
        },
    )
    .await?;

    let cluster = TestCluster::get();
    let deployments =
        Api::<Deployment>::namespaced(cluster.client(User::Dave).await?, namespace.name());
    let deployment = objects::deployment("web", "nginx:1.27", 1)?;
    // A new webhook configuration takes effect once the API server's informer
    // has seen it; until then the create is allowed, so retry on a fresh name.
    let refused = until(
        "the API server to call the new webhook",
        Duration::from_secs(20),
        || {
            let deployments = deployments.clone();
            let mut deployment = deployment.clone();
            async move {
                let name = unique_name("web");
                deployment.metadata.name = Some(name.clone());
                Ok(
                    match deployments
                        .create(&PostParams::default(), &deployment)
                        .await
                    {
                        Err(Error::Api(status)) => Poll::Ready((name, status)),
                        Ok(_) => Poll::Pending(format!("{name} was admitted")),
                        Err(other) => return Err(other.into()),
                    },
                )
            }
        },
    )
    .await?;
    let (name, status) = refused;
    ensure!(
        status.code == 403 && status.reason == "Forbidden",
        "denial status {status:?}"
    );
    let expected = format!("test webhook refuses {name} by dave");
    ensure!(
        status.message.contains(&expected),
        "message {:?} lacks {expected:?}",
        status.message
    );
    ensure!(
        status
            .message
            .contains("admission webhook \"test.countersign.dev\" denied the request"),
        "message {:?} does not say which webhook denied it",
        status.message
    );
    ensure!(
        deployments.get_opt(&name).await?.is_none(),
        "{name} exists despite the denial"
    );

    // The webhook saw the authenticated user, not a claim.
    let seen = seen
        .lock()
        .map_err(|_| anyhow::anyhow!("lock poisoned"))?
        .clone();
    let request = seen
        .iter()
        .find(|r| r.name == name)
        .context("webhook never saw the request")?;
    ensure!(
        request.user == "dave",
        "webhook saw user {:?}",
        request.user
    );
    ensure!(
        request.groups.contains(&"developers".to_owned()),
        "groups {:?}",
        request.groups
    );
    ensure!(
        request.operation == "Create",
        "operation {:?}",
        request.operation
    );

    // kubectl prints the same message and fails.
    let output = cluster
        .kubectl(User::Dave)
        .args([
            "-n",
            namespace.name(),
            "create",
            "deployment",
            "api",
            "--image=nginx:1.27",
        ])
        .output()?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    ensure!(!output.status.success(), "kubectl create was admitted");
    ensure!(
        stderr.contains("test webhook refuses api by dave"),
        "kubectl said {stderr:?}"
    );
    Ok(())
}
