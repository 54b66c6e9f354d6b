//! The one run loop of the operator's controllers: each reconcile in a span naming its
//! controller and object, timed (`countersign_reconcile_seconds{controller}`), and one
//! error policy (`countersign_reconcile_errors_total{controller,error}`, then a retry).

use std::fmt::Debug;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::Resource;
use kube::runtime::controller::{Action, Config, Controller};
use serde::de::DeserializeOwned;
use tracing::Instrument;

use super::{Context, ReconcileError};

/// How long a failed reconcile waits before it is tried again.
const RETRY: Duration = Duration::from_millis(500);

/// Reconciles of one controller in flight at once. Unbounded, a start over 10,000
/// requests ran 10,000 reconciles at once: as many connections to the API server, over a
/// GiB resident, the lease renewal starved (BENCHMARKS.md, "At a production cluster's
/// size"). Each reconcile makes a few requests in turn, so 16 keep the API server busy.
pub const RECONCILE_CONCURRENCY: u16 = 16;

/// Run `controller` with `reconcile` until the future is dropped.
pub async fn run<K, F, Fut>(
    name: &'static str,
    controller: Controller<K>,
    reconcile: F,
    context: Arc<Context>,
) where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    F: Fn(Arc<K>, Arc<Context>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Action, ReconcileError>> + Send + 'static,
{
    let timed = move |object: Arc<K>, context: Arc<Context>| {
        let span = tracing::debug_span!(
            "reconcile",
            controller = name,
            object = %object_name(&*object),
        );
        let started = Instant::now();
        let reconciled = reconcile(object, context.clone());
        async move {
            let result = reconciled.await;
            context.metrics.reconciled(name, started.elapsed());
            result
        }
        .instrument(span)
    };
    let error_policy = move |object: Arc<K>, error: &ReconcileError, context: Arc<Context>| {
        tracing::warn!(controller = name, object = %object_name(&*object), %error, "reconcile failed; retrying");
        context.metrics.reconcile_error(name, error.kind());
        Action::requeue(RETRY)
    };
    controller
        .with_config(Config::default().concurrency(RECONCILE_CONCURRENCY))
        .run(timed, error_policy, context)
        .for_each(|result| async move {
            if let Err(error) = result {
                tracing::debug!(controller = name, %error, "reconcile did not finish");
            }
        })
        .await;
}

/// `namespace/name`, or `name` for a cluster-scoped object.
fn object_name<K: Resource>(object: &K) -> String {
    let meta = object.meta();
    match (&meta.namespace, &meta.name) {
        (Some(namespace), Some(name)) => format!("{namespace}/{name}"),
        (None, Some(name)) => name.clone(),
        _ => String::new(),
    }
}
