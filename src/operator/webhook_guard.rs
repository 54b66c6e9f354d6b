//! Watches countersign's own ValidatingWebhookConfiguration and
//! MutatingWebhookConfiguration (both named `countersign`). The API server never sends these
//! to a webhook, so no admission can refuse or even see a change to them: the operator finds
//! it afterwards, compares with what countersign installs (`core::guard`), writes an
//! AuditEntry and an Event for each change or deletion, keeps the metric
//! `countersign_webhook_configuration_intact`, and, with `--restore-webhook-configurations`,
//! puts the configuration back.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::watch;

use super::{Context, ReconcileError};
use crate::api::UserInfo;
use crate::cluster::status::FIELD_MANAGER;
use crate::core::audit::trail::PlannedEntry;
use crate::core::guard::{
    ConfigurationKind, Drift, OWN_VERSION, ca_bundle_injection, changed_entry, deleted_entry,
    drift, made_by_newer, missing_entry, newer_version_entry, restored_entry,
};
use crate::install::own_username;
use crate::install::webhooks::{
    CONFIGURATION_NAME, Endpoint, mutating_configuration, validating_configuration,
};
use crate::telemetry::ConfigurationLabels;

/// What the configurations should say, and what to do when they do not.
pub struct GuardSettings {
    /// Where the API server should reach the webhook.
    pub endpoint: Endpoint,
    /// The CA the API server should trust for it.
    pub ca_bundle: CaBundle,
    /// Put a changed or deleted configuration back (else only audit it).
    pub restore: bool,
    /// countersign keeps the CA itself (`--self-managed-tls`): a webhook of countersign's
    /// with another CA bundle gets the current one patched in, whatever `restore` says and
    /// whatever else differs (audited, and restored if asked, once the bundle is in).
    pub inject_ca_bundle: bool,
    /// Whether the configurations are meant to be in place now. Local mode registers them
    /// once its caches have synced and removes them on exit; a service install always.
    pub armed: watch::Receiver<bool>,
}

/// The CA bundle of the configurations.
pub enum CaBundle {
    /// Known to the process (local mode makes it).
    Pem(Vec<u8>),
    /// A PEM file, read at each comparison so a rotated CA is picked up.
    File(PathBuf),
}

impl CaBundle {
    async fn read(&self) -> Result<Vec<u8>, GuardError> {
        match self {
            CaBundle::Pem(pem) => Ok(pem.clone()),
            CaBundle::File(path) => tokio::fs::read(path)
                .await
                .map_err(|e| GuardError::CaBundle(path.clone(), e)),
        }
    }
}

/// Why a comparison or a restore did not finish; it is retried.
#[derive(Debug, thiserror::Error)]
enum GuardError {
    #[error("reading the CA bundle {0}: {1}")]
    CaBundle(PathBuf, #[source] std::io::Error),
    #[error("{0}")]
    Audit(#[from] ReconcileError),
    #[error("restoring the {0}: {1}")]
    Restore(&'static str, #[source] kube::Error),
    #[error("injecting the CA bundle into the {0}: {1}")]
    Inject(&'static str, #[source] kube::Error),
}

/// One of the two configurations.
trait Guarded:
    Resource<DynamicType = ()>
    + Clone
    + Serialize
    + DeserializeOwned
    + std::fmt::Debug
    + Send
    + Sync
    + 'static
{
    const KIND: ConfigurationKind;
    fn installed(endpoint: &Endpoint, ca_bundle: &[u8], install_namespace: &str) -> Self;
}

impl Guarded for ValidatingWebhookConfiguration {
    const KIND: ConfigurationKind = ConfigurationKind::Validating;
    fn installed(endpoint: &Endpoint, ca_bundle: &[u8], install_namespace: &str) -> Self {
        validating_configuration(endpoint, ca_bundle, install_namespace)
    }
}

impl Guarded for MutatingWebhookConfiguration {
    const KIND: ConfigurationKind = ConfigurationKind::Mutating;
    fn installed(endpoint: &Endpoint, ca_bundle: &[u8], install_namespace: &str) -> Self {
        mutating_configuration(endpoint, ca_bundle, install_namespace)
    }
}

/// How long to wait after a failed comparison or restore, at first and at most.
const FIRST_RETRY: Duration = Duration::from_secs(1);
const LAST_RETRY: Duration = Duration::from_secs(60);
/// How often the configurations are compared again when countersign keeps their CA.
const INJECT_RECHECK: Duration = Duration::from_secs(5);

/// Guard both configurations until the future is dropped; returns at once when this
/// process does not know what they should say.
pub async fn run(context: Arc<Context>) {
    let Some(settings) = context.webhook_guard.as_ref() else {
        return;
    };
    tokio::join!(
        guard::<ValidatingWebhookConfiguration>(&context, settings),
        guard::<MutatingWebhookConfiguration>(&context, settings),
    );
}

/// What the watch has shown of one configuration.
#[derive(Debug)]
struct Watched<K> {
    /// The configuration as last seen; `None` while there is none.
    current: Option<K>,
    /// The objects of a re-list in progress.
    listing: Option<Option<K>>,
    /// The first listing finished: `current` says what is there.
    synced: bool,
    /// The configuration as last seen before it went away, until its deletion is recorded.
    deleted: Option<K>,
    /// Its absence at the start was recorded (once per term of leadership).
    missing_recorded: bool,
    /// The resourceVersion countersign's own restore wrote: if that still differs from what
    /// it installs (an API server that fills in a field countersign does not know), it is
    /// not restored again, which would loop.
    restored_version: Option<String>,
    /// Entries of what countersign already did (an injection, a restore) that could not be
    /// recorded yet: recorded first at the next comparison, so none is lost to a failed
    /// write after the change it records.
    unrecorded: Vec<PlannedEntry>,
    /// The resourceVersion of a newer version's configuration this one stood down for, so
    /// that is logged once.
    stood_down_for: Option<String>,
}

impl<K: Clone> Watched<K> {
    fn new() -> Self {
        Watched {
            current: None,
            listing: None,
            synced: false,
            deleted: None,
            missing_recorded: false,
            restored_version: None,
            unrecorded: Vec::new(),
            stood_down_for: None,
        }
    }

    /// Take in one watch event.
    fn apply(&mut self, event: Event<K>) {
        match event {
            Event::Init => self.listing = Some(None),
            Event::InitApply(object) => self.listing = Some(Some(object)),
            Event::InitDone => {
                let listed = self.listing.take().flatten();
                self.replace(listed);
                self.synced = true;
            }
            Event::Apply(object) => self.replace(Some(object)),
            Event::Delete(object) => {
                self.current = Some(object);
                self.replace(None);
            }
        }
    }

    fn replace(&mut self, next: Option<K>) {
        if next.is_none()
            && let Some(gone) = self.current.take()
        {
            self.deleted = Some(gone);
        }
        if next.is_some() {
            // Back again (by whoever): an unrecorded deletion is still recorded.
            self.missing_recorded = true;
        }
        self.current = next;
    }
}

/// Watch one configuration and act on what it shows.
async fn guard<K: Guarded>(context: &Context, settings: &GuardSettings) {
    let api: Api<K> = Api::all(context.cluster.client.clone());
    let config = watcher::Config::default().fields(&format!("metadata.name={CONFIGURATION_NAME}"));
    let mut events = watcher::watcher(api.clone(), config)
        .default_backoff()
        .boxed();
    let mut armed = settings.armed.clone();
    let mut watched = Watched::<K>::new();
    let mut retry: Option<Duration> = None;
    loop {
        let wait = retry.unwrap_or(LAST_RETRY);
        tokio::select! {
            event = events.next() => match event {
                Some(Ok(event)) => watched.apply(event),
                Some(Err(error)) => {
                    tracing::debug!(%error, kind = K::KIND.kind(), "webhook configuration watch");
                    continue;
                }
                None => return,
            },
            changed = armed.changed() => if changed.is_err() {
                return;
            },
            () = tokio::time::sleep(wait), if retry.is_some() => {}
            // The bundle countersign keeps changes in its files, not in the configurations:
            // compared again every few seconds, so a new CA is injected promptly.
            () = tokio::time::sleep(INJECT_RECHECK), if settings.inject_ca_bundle && retry.is_none() => {}
        }
        if !watched.synced || !*armed.borrow() {
            continue;
        }
        match check(context, settings, &api, &mut watched).await {
            Ok(()) => retry = None,
            Err(error) => {
                context.metrics.reconcile_error("webhook-guard", "write");
                tracing::warn!(%error, kind = K::KIND.kind(), "webhook configuration guard; retrying");
                retry = Some(retry.map_or(FIRST_RETRY, |last| (last * 2).min(LAST_RETRY)));
            }
        }
    }
}

/// Compare the configuration with what countersign installs; audit, and restore if asked.
async fn check<K: Guarded>(
    context: &Context,
    settings: &GuardSettings,
    api: &Api<K>,
    watched: &mut Watched<K>,
) -> Result<(), GuardError> {
    record_unrecorded(context, watched).await?;
    let ca_bundle = settings.ca_bundle.read().await?;
    let installed = K::installed(
        &settings.endpoint,
        &ca_bundle,
        &context.cluster.install_namespace,
    );
    let expected = as_json(&installed);
    let observed = watched.current.as_ref().map(as_json);
    let now = Timestamp::now();
    let found = drift(K::KIND, &expected, observed.as_ref());
    context
        .metrics
        .webhook_configuration_intact
        .get_or_create(&ConfigurationLabels {
            configuration: K::KIND.kind(),
        })
        .set(i64::from(found == Drift::Intact));
    match found {
        Drift::Intact => Ok(()),
        Drift::Changed(differences) => {
            let observed = observed.unwrap_or_default();
            let version = watched
                .current
                .as_ref()
                .and_then(|c| c.meta().resource_version.clone());
            if let Some(newer) = made_by_newer(&observed, OWN_VERSION) {
                if watched.stood_down_for != version {
                    tracing::warn!(
                        kind = K::KIND.kind(),
                        %newer,
                        own = OWN_VERSION,
                        ?differences,
                        "webhook configuration made by a newer countersign; leaving it to that version"
                    );
                    watched.stood_down_for = version;
                }
                let entry =
                    newer_version_entry(K::KIND, &observed, &newer, OWN_VERSION, &differences, now);
                return record(context, entry).await;
            }
            if settings.inject_ca_bundle
                && let Some(injection) = ca_bundle_injection(&expected, &observed)
            {
                let params = PatchParams {
                    field_manager: Some(FIELD_MANAGER.into()),
                    ..PatchParams::default()
                };
                let patched = api
                    .patch(
                        CONFIGURATION_NAME,
                        &params,
                        &Patch::<()>::Json(injection.patch),
                    )
                    .await
                    .map_err(|e| GuardError::Inject(K::KIND.kind(), e))?;
                tracing::info!(kind = K::KIND.kind(), hooks = ?injection.hooks, "CA bundle injected");
                let injected = format!(
                    "injected the CA bundle countersign keeps into {}",
                    injection.hooks.join(", ")
                );
                // Anything else that differs is compared again when the watch shows the
                // patched configuration, now that the webhook can be called.
                watched
                    .unrecorded
                    .push(restored(&patched, &injected, context, now));
                return record_unrecorded(context, watched).await;
            }
            if version.is_some() && version == watched.restored_version {
                tracing::error!(
                    kind = K::KIND.kind(),
                    ?differences,
                    "the configuration countersign restored still differs from what it installs; not restoring it again"
                );
                return Ok(());
            }
            tracing::warn!(
                kind = K::KIND.kind(),
                ?differences,
                "webhook configuration changed"
            );
            record(
                context,
                changed_entry(K::KIND, &observed, &differences, now),
            )
            .await?;
            if settings.restore
                && let Some(current) = watched.current.as_ref()
            {
                let replaced = api
                    .replace(CONFIGURATION_NAME, &params(), &over(installed, current))
                    .await
                    .map_err(|e| GuardError::Restore(K::KIND.kind(), e))?;
                watched.restored_version = replaced.meta().resource_version.clone();
                let undone = format!("undid {}", differences.join("; "));
                watched
                    .unrecorded
                    .push(restored(&replaced, &undone, context, now));
                return record_unrecorded(context, watched).await;
            }
            Ok(())
        }
        Drift::Missing => {
            if let Some(gone) = watched.deleted.as_ref() {
                record(context, deleted_entry(K::KIND, &as_json(gone), now)).await?;
                watched.deleted = None;
                watched.missing_recorded = true;
            } else if !watched.missing_recorded {
                record(context, missing_entry(K::KIND, CONFIGURATION_NAME, now)).await?;
                watched.missing_recorded = true;
            }
            if settings.restore {
                match api.create(&params(), &installed).await {
                    Ok(created) => {
                        watched.restored_version = created.meta().resource_version.clone();
                        watched
                            .unrecorded
                            .push(restored(&created, "it was missing", context, now));
                        return record_unrecorded(context, watched).await;
                    }
                    // Put back by someone else meanwhile: the watch shows it next.
                    Err(kube::Error::Api(status)) if status.code == 409 => {}
                    Err(error) => return Err(GuardError::Restore(K::KIND.kind(), error)),
                }
            }
            Ok(())
        }
    }
}

/// Record what countersign did and could not record yet, oldest first; what fails stays.
async fn record_unrecorded<K>(
    context: &Context,
    watched: &mut Watched<K>,
) -> Result<(), GuardError> {
    while let Some(entry) = watched.unrecorded.first() {
        record(context, entry.clone()).await?;
        watched.unrecorded.remove(0);
    }
    Ok(())
}

/// The installed configuration over the one in the cluster: its webhooks replaced, its
/// labels and annotations (a CA injector's, say) kept but for countersign's own (the
/// version is this one's now), at its resourceVersion.
fn over<K: Guarded>(mut installed: K, current: &K) -> K {
    let mut labels = current.labels().clone();
    labels.extend(installed.labels().clone());
    let mut annotations = current.annotations().clone();
    annotations.extend(installed.annotations().clone());
    let meta = installed.meta_mut();
    meta.labels = Some(labels);
    meta.annotations = Some(annotations);
    meta.resource_version = current.meta().resource_version.clone();
    installed
}

fn restored<K: Guarded>(
    object: &K,
    undone: &str,
    context: &Context,
    now: Timestamp,
) -> PlannedEntry {
    let by = UserInfo::new(own_username(&context.cluster.install_namespace), &[]);
    restored_entry(K::KIND, &as_json(object), &by, undone, now)
}

fn params() -> PostParams {
    PostParams {
        dry_run: false,
        field_manager: Some(FIELD_MANAGER.into()),
    }
}

fn as_json<K: Serialize>(object: &K) -> serde_json::Value {
    serde_json::to_value(object).unwrap_or_default()
}

async fn record(context: &Context, entry: PlannedEntry) -> Result<(), GuardError> {
    super::audit::record(context, vec![entry], None).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::guard::VERSION_ANNOTATION;

    fn named(rv: &str) -> ValidatingWebhookConfiguration {
        let mut config = ValidatingWebhookConfiguration::default();
        config.metadata.name = Some(CONFIGURATION_NAME.into());
        config.metadata.resource_version = Some(rv.into());
        config
    }

    #[test]
    fn a_deletion_is_remembered_until_recorded_whether_watched_or_relisted() {
        let mut watched = Watched::new();
        watched.apply(Event::Init);
        watched.apply(Event::InitApply(named("1")));
        assert!(!watched.synced);
        watched.apply(Event::InitDone);
        assert!(watched.synced && watched.current.is_some());

        watched.apply(Event::Delete(named("2")));
        assert!(watched.current.is_none());
        assert_eq!(
            watched
                .deleted
                .as_ref()
                .and_then(|d| d.metadata.resource_version.as_deref()),
            Some("2")
        );

        // Deleted while the watch was down: the re-list no longer has it.
        let mut watched = Watched::new();
        for event in [Event::Init, Event::InitApply(named("1")), Event::InitDone] {
            watched.apply(event);
        }
        for event in [Event::Init, Event::InitDone] {
            watched.apply(event);
        }
        assert!(watched.current.is_none() && watched.deleted.is_some());
    }

    #[test]
    fn absent_from_the_start_is_missing_not_deleted() {
        let mut watched = Watched::<ValidatingWebhookConfiguration>::new();
        for event in [Event::Init, Event::InitDone] {
            watched.apply(event);
        }
        assert!(watched.synced && watched.current.is_none() && watched.deleted.is_none());
        assert!(!watched.missing_recorded);
    }

    #[test]
    fn restoring_keeps_labels_and_annotations_and_the_version() {
        let mut current = named("42");
        current.metadata.annotations = Some(
            [
                ("inject".to_string(), "ca".to_string()),
                (VERSION_ANNOTATION.to_string(), "0.0.1".to_string()),
            ]
            .into(),
        );
        current.metadata.labels = Some([("team".to_string(), "platform".to_string())].into());
        let installed = ValidatingWebhookConfiguration::installed(
            &Endpoint::Url("https://127.0.0.1:1".into()),
            b"CA",
            "cs",
        );
        let restored = over(installed.clone(), &current);
        assert_eq!(restored.webhooks, installed.webhooks);
        assert_eq!(restored.metadata.resource_version.as_deref(), Some("42"));
        let annotations = restored.metadata.annotations.unwrap_or_default();
        assert_eq!(annotations.get("inject").map(String::as_str), Some("ca"));
        assert_eq!(
            annotations.get(VERSION_ANNOTATION).map(String::as_str),
            Some(OWN_VERSION),
            "the version is the restorer's"
        );
        let labels = restored.metadata.labels.unwrap_or_default();
        assert_eq!(labels.get("team").map(String::as_str), Some("platform"));
        assert_eq!(
            labels.get("app.kubernetes.io/name").map(String::as_str),
            Some("countersign")
        );
    }
}
