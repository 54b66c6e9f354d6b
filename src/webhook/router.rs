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

async fn readyz(State(state): State<AppState>) -> Response {
    if state.ready.load(Ordering::Acquire) {
        (StatusCode::OK, "ok").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "caches are not synced yet").into_response()
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    if let Some(webhook) = &state.webhook {
        let sizes = webhook.snapshot.sizes();
        for (cache, size) in [
            ("approvalpolicies", sizes.policies),
            ("deploymentapprovals", sizes.approvals),
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
