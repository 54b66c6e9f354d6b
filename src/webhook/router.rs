//! The HTTP surface of `serve`: the review paths, /healthz, /readyz and /metrics. A plain
//! function of its state, so tests call it without a socket.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Extension;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use super::client_auth::Caller;
use super::review::{ReviewPath, Webhook};
use crate::api::ApprovalPhase;
use crate::cluster::credentials::Credentials;
use crate::telemetry::{CacheLabels, Metrics, PhaseLabels, UnauthenticatedLabels};

/// The largest body accepted: an AdmissionReview carries the object and the old object, and
/// etcd holds objects up to 1.5 MiB.
pub const MAX_BODY_BYTES: usize = 3 * 1024 * 1024;

/// What the routes share.
#[derive(Clone)]
pub struct AppState {
    /// `None` until the caches are built (the operator-only mode never builds them).
    pub webhook: Option<Webhook>,
    /// Set once every cache has synced.
    pub ready: Arc<AtomicBool>,
    /// Set once the webhook configurations trust the certificate served (at once unless
    /// countersign keeps its own CA: `serve::self_managed_tls`).
    pub webhook_trusted: Arc<AtomicBool>,
    /// Whether the API server accepts countersign's credentials (its token).
    pub credentials: Arc<Credentials>,
    pub metrics: Arc<Metrics>,
    /// Reviews need an accepted client certificate (`--client-ca-file`); without one the
    /// answer is 401 and nothing is done.
    pub require_client_certificate: bool,
}

/// The router of `serve`.
pub fn router(state: AppState) -> Router {
    let mut router = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics));
    for path in ReviewPath::ALL {
        router = router.route(
            path.path(),
            post(
                move |state: State<AppState>, caller: Option<Extension<Caller>>, body: Bytes| {
                    review(state, path, caller.map(|c| c.0), body)
                },
            ),
        );
    }
    router
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

/// Ready once every cache has synced and the API server trusts the certificate served, and
/// while it accepts countersign's credentials: with its token refused the caches go stale
/// and nothing can be written, so traffic should go to a replica that can still act.
async fn readyz(State(state): State<AppState>) -> Response {
    if !state.ready.load(Ordering::Acquire) {
        return (StatusCode::SERVICE_UNAVAILABLE, "caches are not synced yet").into_response();
    }
    if !state.webhook_trusted.load(Ordering::Acquire) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "the webhook configurations do not carry the CA of this replica's serving certificate yet (the leader's operator injects it)",
        )
            .into_response();
    }
    match state.credentials.refused_for() {
        None => (StatusCode::OK, "ok").into_response(),
        Some(refused) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "the API server has refused countersign's credentials (401 Unauthorized) for {}s: its ServiceAccount token expired or was revoked and no accepted one has replaced it",
                refused.as_secs()
            ),
        )
            .into_response(),
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    state
        .metrics
        .api_credentials_refused
        .set(i64::from(state.credentials.refused_for().is_some()));
    if let Some(webhook) = &state.webhook {
        let sizes = webhook.snapshot.sizes();
        for (cache, size) in [
            ("approvalpolicies", sizes.policies),
            ("deploymentapprovals", sizes.approvals),
            ("changesets", sizes.sets),
            ("namespaces", sizes.namespaces),
            ("rolebindings", sizes.role_bindings),
            ("clusterrolebindings", sizes.cluster_role_bindings),
        ] {
            state
                .metrics
                .cache_objects
                .get_or_create(&CacheLabels { cache })
                .set(i64::try_from(size).unwrap_or(i64::MAX));
        }
        let counts = webhook.snapshot.approval_phases();
        for phase in ApprovalPhase::ALL {
            let count = counts.get(&phase).copied().unwrap_or_default();
            state
                .metrics
                .approvals
                .get_or_create(&PhaseLabels {
                    phase: phase.to_string(),
                })
                .set(i64::try_from(count).unwrap_or(i64::MAX));
        }
    }
    match state.metrics.encode() {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(error) => (StatusCode::INTERNAL_SERVER_ERROR, error.to_string()).into_response(),
    }
}

async fn review(
    State(state): State<AppState>,
    path: ReviewPath,
    caller: Option<Caller>,
    body: Bytes,
) -> Response {
    let Some(webhook) = &state.webhook else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "the webhook is not running in this process",
        )
            .into_response();
    };
    let caller = caller.unwrap_or(Caller::Anonymous);
    if !caller.is_authenticated() {
        let refused = state.require_client_certificate;
        state
            .metrics
            .unauthenticated_reviews
            .get_or_create(&UnauthenticatedLabels {
                outcome: if refused { "refused" } else { "answered" },
            })
            .inc();
        if refused {
            tracing::warn!(
                path = path.path(),
                reason = caller.refusal(),
                "review refused"
            );
            return (StatusCode::UNAUTHORIZED, caller.refusal()).into_response();
        }
    }
    match webhook.review(path, &body, &caller).await {
        Ok(review) => axum::Json(review).into_response(),
        Err(bad) => (StatusCode::BAD_REQUEST, bad.to_string()).into_response(),
    }
}

/// The router called as the server calls it, without a socket (`tower::ServiceExt`).
#[cfg(test)]
mod tests {
    use super::*;

    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use k8s_openapi::api::core::v1::Namespace;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use serde_json::json;
    use tower::ServiceExt;

    use crate::cluster::snapshot::Snapshot;
    use crate::core::approval::chain::RoleBindingSnapshot;

    /// A webhook with no policies, namespace `shop` cached, and an API server that does not
    /// exist: a review of a change in `shop` makes no API call.
    fn offline_webhook(metrics: Arc<Metrics>) -> Webhook {
        let shop = Namespace {
            metadata: ObjectMeta {
                name: Some("shop".into()),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        let snapshot = Snapshot::preloaded(
            Vec::new(),
            Vec::new(),
            vec![shop],
            RoleBindingSnapshot::default(),
        );
        Webhook::offline(snapshot, metrics).expect("an offline webhook")
    }

    fn state(webhook: bool, require_client_certificate: bool) -> AppState {
        let metrics = Metrics::new();
        AppState {
            webhook: webhook.then(|| offline_webhook(metrics.clone())),
            ready: Arc::new(AtomicBool::new(false)),
            webhook_trusted: Arc::new(AtomicBool::new(true)),
            credentials: Arc::new(Credentials::default()),
            metrics,
            require_client_certificate,
        }
    }

    /// An AdmissionReview of a Deployment's creation, as the API server sends it.
    fn review_body() -> Vec<u8> {
        let deployment = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": {"template": {"spec": {"containers": [{"name": "web", "image": "web:1"}]}}}
        });
        serde_json::to_vec(&json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {
                "uid": "0b8f7a6e-0000-4000-8000-000000000001",
                "kind": {"group": "apps", "version": "v1", "kind": "Deployment"},
                "resource": {"group": "apps", "version": "v1", "resource": "deployments"},
                "name": "web", "namespace": "shop", "operation": "CREATE",
                "userInfo": {"username": "dave", "groups": ["developers"]},
                "object": deployment, "dryRun": false
            }
        }))
        .expect("body")
    }

    async fn call(
        state: &AppState,
        request: Request<Body>,
    ) -> (StatusCode, Option<String>, String) {
        let response = router(state.clone())
            .oneshot(request)
            .await
            .expect("the router answers");
        let status = response.status();
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        (
            status,
            content_type,
            String::from_utf8_lossy(&body).into_owned(),
        )
    }

    fn post(path: &str, body: Vec<u8>, caller: Option<Caller>) -> Request<Body> {
        let mut request = Request::post(path)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body))
            .expect("request");
        if let Some(caller) = caller {
            request.extensions_mut().insert(caller);
        }
        request
    }

    fn get(path: &str) -> Request<Body> {
        Request::get(path).body(Body::empty()).expect("request")
    }

    fn api_server() -> Option<Caller> {
        Some(Caller::Authenticated {
            name: "kube-apiserver".into(),
        })
    }

    #[tokio::test]
    async fn health_readiness_and_metrics() {
        let state = state(true, true);
        let (status, _, body) = call(&state, get("/healthz")).await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "ok"));
        let (status, _, body) = call(&state, get("/readyz")).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        state.ready.store(true, Ordering::Release);
        let (status, _, _) = call(&state, get("/readyz")).await;
        assert_eq!(status, StatusCode::OK);
        // Synced, but the API server would not trust the certificate yet: not ready, and why.
        state.webhook_trusted.store(false, Ordering::Release);
        let (status, _, body) = call(&state, get("/readyz")).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains("do not carry the CA"), "{body}");
        state.webhook_trusted.store(true, Ordering::Release);
        let (status, _, _) = call(&state, get("/readyz")).await;
        assert_eq!(status, StatusCode::OK);
        // The API server refuses countersign's token: not ready, and why; ready again once
        // a request is accepted.
        state.credentials.saw(StatusCode::UNAUTHORIZED);
        let (status, _, body) = call(&state, get("/readyz")).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains("refused countersign's credentials"), "{body}");
        state.credentials.saw(StatusCode::OK);
        let (status, _, _) = call(&state, get("/readyz")).await;
        assert_eq!(status, StatusCode::OK);
        let (status, content_type, body) = call(&state, get("/metrics")).await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            content_type.is_some_and(|t| t.starts_with("application/openmetrics-text")),
            "{body}"
        );
        assert!(
            body.contains("cache_objects{cache=\"approvalpolicies\"} 0")
                && body.contains("approvals{phase=\"Pending\"} 0")
                && body.ends_with("# EOF\n"),
            "{body}"
        );
    }

    #[tokio::test]
    async fn a_review_without_the_api_servers_certificate_is_refused_unread() {
        let state = state(true, true);
        for caller in [
            None,
            Some(Caller::Anonymous),
            Some(Caller::NameNotAllowed {
                names: vec!["mallory".into()],
            }),
        ] {
            for path in ReviewPath::ALL {
                let (status, _, body) =
                    call(&state, post(path.path(), review_body(), caller.clone())).await;
                assert_eq!(
                    status,
                    StatusCode::UNAUTHORIZED,
                    "{path:?} {caller:?}: {body}"
                );
                assert!(!body.contains("AdmissionReview"), "{body}");
            }
        }
        // Even a body that is not a review: refused before it is read.
        let (status, _, _) = call(&state, post("/validate/workloads", b"{".to_vec(), None)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        let metrics = state.metrics.encode().expect("metrics");
        assert!(
            metrics.contains("unauthenticated_reviews_total{outcome=\"refused\"}"),
            "{metrics}"
        );
    }

    #[tokio::test]
    async fn the_api_server_gets_an_answer() {
        let state = state(true, true);
        let (status, content_type, body) = call(
            &state,
            post("/validate/workloads", review_body(), api_server()),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(content_type.as_deref(), Some("application/json"));
        let review: serde_json::Value = serde_json::from_str(&body).expect("JSON");
        assert_eq!(
            review["response"]["uid"], "0b8f7a6e-0000-4000-8000-000000000001",
            "{body}"
        );
        assert_eq!(review["response"]["allowed"], true, "{body}");
        // Without a client CA configured, an anonymous review is answered and counted.
        let open = state_without_client_ca();
        let (status, _, body) = call(&open, post("/validate/workloads", review_body(), None)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let metrics = open.metrics.encode().expect("metrics");
        assert!(
            metrics.contains("unauthenticated_reviews_total{outcome=\"answered\"} 1"),
            "{metrics}"
        );
    }

    fn state_without_client_ca() -> AppState {
        state(true, false)
    }

    #[tokio::test]
    async fn bad_bodies_oversized_bodies_and_no_webhook() {
        let state = state(true, true);
        // Not JSON at all: a 400 naming the problem, not a crash.
        let (status, _, body) = call(
            &state,
            post("/validate/workloads", b"not json".to_vec(), api_server()),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        // Over the limit: refused before the webhook sees it.
        let huge = vec![b' '; MAX_BODY_BYTES + 1];
        let (status, _, _) = call(&state, post("/validate/workloads", huge, api_server())).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        // An unknown path and a GET of a review path.
        let (status, _, _) =
            call(&state, post("/validate/else", review_body(), api_server())).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, _, _) = call(&state, get("/validate/workloads")).await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        // The operator-only mode answers no reviews.
        let operator_only = AppState {
            webhook: None,
            ..state
        };
        let (status, _, body) = call(
            &operator_only,
            post("/validate/workloads", review_body(), api_server()),
        )
        .await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    }
}
