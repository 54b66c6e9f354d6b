//! Audit retention (SPEC §7): deletes AuditEntries once they are older than the configured
//! retention, then sleeps until the next one is due (`core::audit::retention`), but at least
//! [`MIN_SWEEP_INTERVAL`] (or the retention, if shorter) so a busy trail is not listed
//! again for every entry that falls due. Entries written meanwhile are younger than any
//! left, so they never fall due earlier. The trail is listed and swept a page at a time, so
//! a trail of any length is never held at once.
//!
//! Only a prefix of the hash chain goes: the entries before the first one kept (so one
//! kept for any reason keeps those after it, a little longer than the retention). Before
//! deleting, the leader signs where the kept chain begins and the hash before it into the
//! chain's record (`core::audit::note::anchor_text`), so `countersign audit verify` tells
//! retention from deletion. Entries outside the chain are never deleted: they are either
//! about to be linked or evidence.

use std::sync::Arc;
use std::time::Duration;

use super::Context;
use crate::cluster::chain::{ChainError, ChainStore};
use crate::core::audit::note::{Verifier, anchor_text, parse_anchor};
use crate::core::audit::retention::{FirstKept, due_at, earliest, past_retention};
use jiff::Timestamp;

/// How long to wait after a failed sweep before trying again.
const RETRY: Duration = Duration::from_secs(30);

/// The least time between two sweeps: an entry is deleted at most this late.
pub const MIN_SWEEP_INTERVAL: Duration = Duration::from_secs(600);

/// Run until the future is dropped. Each sweep also teaches the audit writer what the
/// trail holds (`operator::audit`), so the first one, as this replica starts leading, saves
/// the controllers a read of every entry; when entries are kept forever, the trail is
/// walked once for that alone.
pub async fn run(context: Arc<Context>) {
    let Some(retention) = context.audit_retention else {
        super::audit::learn_trail(&context).await;
        return;
    };
    let least = Duration::try_from(retention)
        .unwrap_or(MIN_SWEEP_INTERVAL)
        .min(MIN_SWEEP_INTERVAL);
    loop {
        let swept = sweep(&context, retention).await;
        // Learned as far as it will be, whether the sweep finished or not.
        context.known_entries.mark_learned();
        let wait = match swept {
            Ok(Some(next)) => Duration::try_from(next.duration_since(Timestamp::now()))
                .unwrap_or_default()
                .max(least),
            Ok(None) => Duration::try_from(retention).unwrap_or(RETRY),
            Err(error) => {
                tracing::warn!(%error, "audit retention could not sweep; retrying");
                RETRY
            }
        };
        tokio::time::sleep(wait).await;
    }
}

/// Delete what is due, a page at a time, learning what is kept; the next moment one falls
/// due.
async fn sweep(
    context: &Context,
    retention: jiff::SignedDuration,
) -> Result<Option<Timestamp>, SweepError> {
    let trail = &context.cluster.trail;
    let started = std::time::Instant::now();
    let now = Timestamp::now();
    let store = ChainStore::new(
        context.cluster.client.clone(),
        &context.cluster.install_namespace,
    );
    let stored = store.read().await?;
    if stored.version.is_none() || stored.unreadable {
        // The sealer starts the chain (or makes its record anew) first.
        return Err(SweepError::Chain(ChainError::NotStarted));
    }
    // First pass: where the kept chain begins, and when the next entry falls due.
    let mut next: Option<Timestamp> = None;
    let mut first_kept = FirstKept::default();
    // A batch claimed but not yet linked is kept whatever its age.
    let mut claimed_unlinked: std::collections::HashMap<&str, &crate::api::ChainLink> = stored
        .record
        .claimed
        .iter()
        .map(|c| (c.name.as_str(), &c.link))
        .collect();
    let mut page: Option<String> = None;
    // The lowest place due: anything is deleted only if it lies before the kept chain.
    let mut lowest_due: Option<u64> = None;
    loop {
        let (entries, following) = trail.entries_page(page.as_deref()).await?;
        for entry in &entries {
            let link = entry.status.as_ref().and_then(|s| s.link.as_ref());
            if link.is_some() {
                claimed_unlinked.remove(entry.metadata.name.as_deref().unwrap_or_default());
            }
            if past_retention(entry, Some(retention), now) {
                if let Some(link) = link {
                    lowest_due = Some(lowest_due.map_or(link.sequence, |s| s.min(link.sequence)));
                }
            } else {
                if let Some(link) = link {
                    first_kept.keep(link);
                }
                next = earliest(next, Some(due_at(entry.spec.time.0, retention)));
                super::audit::learn_listed(context, entry);
            }
        }
        match following {
            Some(token) => page = Some(token),
            None => break,
        }
    }
    for link in claimed_unlinked.values() {
        first_kept.keep(link);
    }
    let signer = store.signer().await?;
    let verifier = Verifier::parse(&signer.verifier_key()).ok();
    let recorded = stored
        .record
        .retention
        .as_deref()
        .and_then(|note| verifier.as_ref()?.open(note).ok())
        .and_then(|text| parse_anchor(text).ok())
        .map(|(_, anchor)| anchor);
    let anchor = first_kept.anchor(&stored.record.head, recorded.as_ref());
    if lowest_due.is_none_or(|sequence| sequence >= anchor.sequence) {
        tracing::info!(
            seconds = started.elapsed().as_secs_f64(),
            "audit trail swept: nothing before the first kept entry is due"
        );
        return Ok(next);
    }
    if recorded.as_ref() != Some(&anchor) {
        let note = signer.sign(&anchor_text(signer.name(), &anchor));
        store
            .amend(|record| record.retention = Some(note.clone()))
            .await?;
        tracing::info!(
            first_kept = anchor.sequence,
            "signed where the kept audit chain begins"
        );
    }
    // Second pass: the entries before it go.
    let mut deleted = 0usize;
    let mut page: Option<String> = None;
    loop {
        let (entries, following) = trail.entries_page(page.as_deref()).await?;
        for entry in &entries {
            let before = entry
                .status
                .as_ref()
                .and_then(|s| s.link.as_ref())
                .is_some_and(|link| link.sequence < anchor.sequence);
            if before
                && past_retention(entry, Some(retention), now)
                && let Some(name) = &entry.metadata.name
            {
                trail.delete(name).await?;
                deleted += 1;
                tracing::debug!(entry = %name, "audit entry past retention deleted");
            }
        }
        match following {
            Some(token) => page = Some(token),
            None => break,
        }
    }
    tracing::info!(
        deleted,
        first_kept = anchor.sequence,
        known = context.known_entries.len(),
        seconds = started.elapsed().as_secs_f64(),
        "audit trail swept"
    );
    Ok(next)
}

/// Why a sweep stopped.
#[derive(Debug, thiserror::Error)]
enum SweepError {
    #[error("listing or deleting AuditEntries: {0}")]
    Api(#[from] kube::Error),
    #[error(transparent)]
    Chain(#[from] ChainError),
}
