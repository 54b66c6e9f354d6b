//! The audit chain's sealer (docs/security.md), run by the leader: every AuditEntry that
//! countersign's writer sealed (whichever replica, webhook or operator, wrote it) gets the
//! next place in the trail's hash chain, in the order the API server made them; every
//! `--audit-checkpoint-entries` entries, or `--audit-checkpoint-interval` after the last
//! checkpoint when the chain has grown since, the leader signs a checkpoint and hands it to
//! the checkpoint sinks: the flags' file and URL, and every notification sink a policy
//! names in `auditSinks`.
//!
//! Each batch is first claimed in the chain's record (`cluster::chain`), at the version it
//! was read at, then linked in its entries. A sealer that stopped in between leaves the
//! claim, and the next one links it before anything else; two sealers at once cannot both
//! claim from one head, and the one refused starts again from the trail as it is.
//!
//! Entries without the writer's seal (written around countersign) are not linked: they
//! stay outside the chain, where `countersign audit verify` reports them. Only when the
//! chain is first started are the entries already in the trail taken in as they are.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, StreamExt, TryStreamExt};
use jiff::Timestamp;
use kube::runtime::{WatchStreamExt, watcher};

use super::Context;
use crate::api::AuditEntry;
use crate::cluster::chain::{ChainError, ChainStore, Claimed, Stored};
use crate::cluster::trail::Linked;
use crate::core::audit::chain::{
    Head, WRITER_SEAL_ANNOTATION, is_writer_sealed, link_time, links_after,
};
use crate::core::audit::note::{Signer, Verifier, checkpoint_text, parse_checkpoint};

/// How the leader checkpoints the chain, and where checkpoints go besides the record.
#[derive(Clone, Debug)]
pub struct ChainSettings {
    /// A checkpoint after this many new entries…
    pub checkpoint_entries: u64,
    /// … or this long after the last one, when the chain has grown since.
    pub checkpoint_interval: Duration,
    /// Each checkpoint is appended to this file (an append-only copy outside the cluster).
    pub checkpoint_file: Option<PathBuf>,
    /// Each checkpoint is POSTed (text/plain) to this URL.
    pub checkpoint_url: Option<String>,
}

impl Default for ChainSettings {
    fn default() -> Self {
        ChainSettings {
            checkpoint_entries: 100,
            checkpoint_interval: Duration::from_secs(300),
            checkpoint_file: None,
            checkpoint_url: None,
        }
    }
}

/// The most entries claimed in one write of the record.
const BATCH: usize = 200;
/// How many links are written into their entries at once.
const LINKS_AT_ONCE: usize = 16;
/// How long to wait after a failure before starting again.
const RETRY: Duration = Duration::from_secs(5);
/// How many names of entries linked lately are remembered, so a late event showing one
/// without its link does not link it twice.
const REMEMBERED: usize = 8192;
/// How many checkpoints wait for a sink that does not take them, before the oldest is
/// dropped (the record and the other sinks still have them).
const UNDELIVERED: usize = 100;

/// Run until the future is dropped (when this replica stops leading).
pub async fn run(context: Arc<Context>) {
    loop {
        match seal(&context).await {
            Err(ChainError::Conflict) => {
                tracing::info!(
                    "another sealer advanced the audit chain; starting again from the trail"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(error) => {
                tracing::warn!(%error, "the audit chain is not being sealed; retrying");
                tokio::time::sleep(RETRY).await;
            }
            Ok(()) => tokio::time::sleep(RETRY).await,
        }
    }
}

async fn seal(context: &Context) -> Result<(), ChainError> {
    let store = ChainStore::new(
        context.cluster.client.clone(),
        &context.cluster.install_namespace,
    );
    let signer = store.signer().await?;
    store.publish(&signer).await?;
    let (api, config) = context.cluster.trail.watch_all();
    let mut sealer = Sealer::new(context, store, signer);
    let events = watcher(api, config).default_backoff();
    let mut events = std::pin::pin!(events);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            event = events.next() => {
                let Some(event) = event else { return Ok(()) };
                sealer.on(event).await?;
                // Whatever else has arrived goes into the same batch.
                while let Some(Some(event)) = events.next().now_or_never() {
                    sealer.on(event).await?;
                }
            }
            _ = tick.tick() => {}
        }
        if sealer.synced {
            sealer.seal_pending().await?;
            sealer.checkpoint_if_due(false).await?;
            sealer.deliver().await;
        }
    }
}

/// Entries waiting for their link, in the order they are to be linked.
#[derive(Default)]
struct Pending {
    next: u64,
    by_order: BTreeMap<u64, AuditEntry>,
    order_of: HashMap<String, u64>,
}

impl Pending {
    fn push(&mut self, entry: AuditEntry) {
        let Some(name) = entry.metadata.name.clone() else {
            return;
        };
        if self.order_of.contains_key(&name) {
            return;
        }
        self.next += 1;
        self.order_of.insert(name, self.next);
        self.by_order.insert(self.next, entry);
    }

    fn remove(&mut self, name: &str) {
        if let Some(order) = self.order_of.remove(name) {
            self.by_order.remove(&order);
        }
    }

    fn clear(&mut self) {
        self.by_order.clear();
        self.order_of.clear();
    }
}

/// Names linked lately, the oldest forgotten first.
#[derive(Default)]
struct Remembered {
    names: HashSet<String>,
    order: VecDeque<String>,
}

impl Remembered {
    fn insert(&mut self, name: String) {
        if self.names.insert(name.clone()) {
            self.order.push_back(name);
        }
        while self.order.len() > REMEMBERED {
            if let Some(oldest) = self.order.pop_front() {
                self.names.remove(&oldest);
            }
        }
    }
}

struct Sealer<'a> {
    context: &'a Context,
    store: ChainStore,
    signer: Signer,
    verifier: Option<Verifier>,
    stored: Stored,
    /// The record's claimed batch is linked in its entries.
    claimed_linked: bool,
    pending: Pending,
    linked: Remembered,
    /// Entries the chain takes in without the writer's seal: those in the trail when the
    /// chain was started.
    adopted: HashSet<String>,
    /// The trail has been listed and the record read.
    synced: bool,
    /// While the trail is listed: its entries without a link, and its highest link.
    listing: Vec<AuditEntry>,
    highest_listed: Option<Head>,
    /// The last checkpoint: its size and when it was signed.
    last_checkpoint: (u64, Timestamp),
    undelivered: VecDeque<(Sink, String)>,
    http: Option<crate::notify::http::HttpSender>,
}

/// Where a checkpoint goes besides the record.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Sink {
    /// `--audit-checkpoint-file`.
    File,
    /// `--audit-checkpoint-url`.
    Url,
    /// A notification sink a policy names in `auditSinks`.
    Named(String),
}

impl<'a> Sealer<'a> {
    fn new(context: &'a Context, store: ChainStore, signer: Signer) -> Sealer<'a> {
        let verifier = Verifier::parse(&signer.verifier_key()).ok();
        let http = context.chain.checkpoint_url.as_ref().and_then(|_| {
            crate::notify::http::HttpSender::new(crate::notify::http::DEFAULT_TIMEOUT)
                .map_err(|error| tracing::warn!(%error, "no HTTP client for checkpoints"))
                .ok()
        });
        Sealer {
            context,
            store,
            signer,
            verifier,
            stored: Stored::default(),
            claimed_linked: false,
            pending: Pending::default(),
            linked: Remembered::default(),
            adopted: HashSet::new(),
            synced: false,
            listing: Vec::new(),
            highest_listed: None,
            last_checkpoint: (0, Timestamp::UNIX_EPOCH),
            undelivered: VecDeque::new(),
            http,
        }
    }

    async fn on(
        &mut self,
        event: Result<watcher::Event<AuditEntry>, watcher::Error>,
    ) -> Result<(), ChainError> {
        match event {
            Err(error) => tracing::warn!(%error, "watching the audit trail"),
            Ok(watcher::Event::Init) => {
                self.listing.clear();
                self.highest_listed = None;
            }
            // Of a listed trail only the entries without a link and the highest link are
            // kept: a trail of any length is listed without being held.
            Ok(watcher::Event::InitApply(entry)) => {
                match entry.status.as_ref().and_then(|s| s.link.as_ref()) {
                    Some(link) => {
                        if self
                            .highest_listed
                            .as_ref()
                            .is_none_or(|h| link.sequence > h.sequence)
                        {
                            self.highest_listed = Some(Head {
                                sequence: link.sequence,
                                hash: link.hash.clone(),
                            });
                        }
                    }
                    None => self.listing.push(entry),
                }
            }
            Ok(watcher::Event::InitDone) => self.start().await?,
            Ok(watcher::Event::Apply(entry)) => {
                let name = entry.metadata.name.clone().unwrap_or_default();
                if linked(&entry) {
                    self.pending.remove(&name);
                } else if !self.linked.names.contains(&name) {
                    self.pending.push(entry);
                }
            }
            Ok(watcher::Event::Delete(entry)) => {
                self.pending
                    .remove(&entry.metadata.name.unwrap_or_default());
            }
        }
        Ok(())
    }

    /// The trail as listed and the record as read: what is waiting, and where the chain
    /// stands (made anew from the trail when its record is gone).
    async fn start(&mut self) -> Result<(), ChainError> {
        let mut listing = std::mem::take(&mut self.listing);
        let highest = self.highest_listed.take();
        // Oldest first: by recorded time, then as the API server made them.
        listing.sort_by(|a, b| {
            (
                a.spec.time.0,
                a.metadata.creation_timestamp.as_ref().map(|t| t.0),
                a.metadata.name.as_deref(),
            )
                .cmp(&(
                    b.spec.time.0,
                    b.metadata.creation_timestamp.as_ref().map(|t| t.0),
                    b.metadata.name.as_deref(),
                ))
        });
        self.pending.clear();
        let mut stored = self.store.read().await?;
        let fresh = stored.version.is_none() || stored.unreadable;
        match (&highest, fresh) {
            (None, true) => {
                // The chain starts: the trail as it is is taken in.
                self.adopted = listing
                    .iter()
                    .filter_map(|e| e.metadata.name.clone())
                    .collect();
                tracing::info!(entries = self.adopted.len(), "starting the audit chain");
            }
            (Some(highest), true) => {
                tracing::warn!(
                    sequence = highest.sequence,
                    "the audit chain's record is missing or unreadable; continuing from the trail's highest link"
                );
                stored.record = Default::default();
                stored.record.head = highest.clone();
            }
            (Some(highest), false) if highest.sequence > stored.record.head.sequence => {
                tracing::warn!(
                    record = stored.record.head.sequence,
                    trail = highest.sequence,
                    "the audit chain's record is behind the trail's links; continuing from the trail's highest link"
                );
                stored.record.head = highest.clone();
                stored.record.claimed.clear();
            }
            _ => {}
        }
        if let Some(checkpoint) = stored
            .record
            .checkpoint
            .as_deref()
            .and_then(|note| self.verifier.as_ref()?.open(note).ok())
            .and_then(|text| parse_checkpoint(text).ok())
        {
            let time = checkpoint
                .time
                .and_then(|t| t.parse::<Timestamp>().ok())
                .unwrap_or(Timestamp::UNIX_EPOCH);
            self.last_checkpoint = (checkpoint.head.sequence, time);
        }
        for entry in listing {
            self.pending.push(entry);
        }
        self.stored = stored;
        self.claimed_linked = false;
        self.synced = true;
        Ok(())
    }

    /// Link the claimed batch if a sealer before stopped short of it; then claim and link
    /// the next batch of what is waiting.
    async fn seal_pending(&mut self) -> Result<(), ChainError> {
        if !self.claimed_linked {
            // Claimed already: linked as claimed, never claimed again.
            self.link_claimed().await?;
        }
        while !self.pending.by_order.is_empty() {
            let mut batch: Vec<AuditEntry> = Vec::new();
            let mut refused: Vec<String> = Vec::new();
            for entry in self.pending.by_order.values() {
                if batch.len() == BATCH {
                    break;
                }
                let name = entry.metadata.name.clone().unwrap_or_default();
                if self.adopted.contains(&name) || writer_sealed(&self.context.seal_key, entry) {
                    batch.push(entry.clone());
                } else {
                    refused.push(name);
                }
            }
            for name in refused {
                tracing::warn!(
                    entry = name,
                    "an AuditEntry without countersign's writer seal (written around countersign) is left out of the audit chain"
                );
                self.pending.remove(&name);
                self.linked.insert(name);
            }
            if batch.is_empty() {
                break;
            }
            self.claim_and_link(&batch).await?;
        }
        Ok(())
    }

    async fn claim_and_link(&mut self, batch: &[AuditEntry]) -> Result<(), ChainError> {
        let named: Vec<(&str, &crate::api::AuditEntrySpec)> = batch
            .iter()
            .map(|e| (e.metadata.name.as_deref().unwrap_or_default(), &e.spec))
            .collect();
        let now = Timestamp::now();
        let links = links_after(&self.stored.record.head, &named, &link_time(now));
        let mut record = self.stored.record.clone();
        record.claimed = named
            .iter()
            .zip(&links)
            .map(|((name, _), link)| Claimed {
                name: name.to_string(),
                link: link.clone(),
            })
            .collect();
        if let Some(last) = links.last() {
            record.head = Head {
                sequence: last.sequence,
                hash: last.hash.clone(),
            };
        }
        let checkpoint = self
            .checkpoint_due(&record.head, now)
            .then(|| self.sign(&record.head, now));
        if let Some(note) = &checkpoint {
            record.checkpoint = Some(note.clone());
        }
        self.write_record(record).await?;
        self.link_claimed().await?;
        if let Some(note) = checkpoint {
            self.checkpointed(note, now);
        }
        Ok(())
    }

    /// Write the record; when only what others keep in it changed since it was read
    /// (retention's record), take theirs and write again. Anything else is a conflict.
    async fn write_record(
        &mut self,
        mut record: crate::cluster::chain::ChainRecord,
    ) -> Result<(), ChainError> {
        let mut version = self.stored.version.clone();
        for _ in 0..5 {
            match self.store.write(version.as_deref(), &record).await {
                Ok(written) => {
                    self.stored = Stored {
                        record,
                        version: Some(written),
                        unreadable: false,
                    };
                    return Ok(());
                }
                Err(ChainError::Conflict) => {
                    let now = self.store.read().await?;
                    let ours = &self.stored.record;
                    if now.unreadable
                        || now.record.head != ours.head
                        || now.record.claimed != ours.claimed
                        || now.record.checkpoint != ours.checkpoint
                    {
                        return Err(ChainError::Conflict);
                    }
                    record.retention = now.record.retention.clone();
                    self.stored.record.retention = now.record.retention;
                    version = now.version;
                }
                Err(error) => return Err(error),
            }
        }
        Err(ChainError::Conflict)
    }

    /// Write the record's claimed links into their entries, several at once (the record
    /// holds their order), and take them off the waiting list.
    async fn link_claimed(&mut self) -> Result<(), ChainError> {
        let claimed = self.stored.record.claimed.clone();
        futures::stream::iter(claimed.clone())
            .map(|claimed| {
                let trail = self.context.cluster.trail.clone();
                async move { link_one(&trail, &claimed).await }
            })
            .buffer_unordered(LINKS_AT_ONCE)
            .try_collect::<Vec<()>>()
            .await?;
        for claimed in claimed {
            self.pending.remove(&claimed.name);
            self.adopted.remove(&claimed.name);
            self.linked.insert(claimed.name);
        }
        self.claimed_linked = true;
        Ok(())
    }

    fn checkpoint_due(&self, head: &Head, now: Timestamp) -> bool {
        let (size, signed_at) = self.last_checkpoint;
        let settings = &self.context.chain;
        let grown = head.sequence.saturating_sub(size);
        let elapsed = now.duration_since(signed_at);
        grown >= settings.checkpoint_entries.max(1)
            || (grown > 0
                && jiff::SignedDuration::try_from(settings.checkpoint_interval)
                    .is_ok_and(|interval| elapsed >= interval))
    }

    fn sign(&self, head: &Head, now: Timestamp) -> String {
        self.signer
            .sign(&checkpoint_text(self.signer.name(), head, &link_time(now)))
    }

    /// Sign a checkpoint on its own when one is due by time (or `force`d) and the chain has
    /// grown since the last.
    async fn checkpoint_if_due(&mut self, force: bool) -> Result<(), ChainError> {
        let now = Timestamp::now();
        let head = self.stored.record.head.clone();
        if head.sequence <= self.last_checkpoint.0 || !(force || self.checkpoint_due(&head, now)) {
            return Ok(());
        }
        let note = self.sign(&head, now);
        let mut record = self.stored.record.clone();
        record.checkpoint = Some(note.clone());
        self.write_record(record).await?;
        self.checkpointed(note, now);
        Ok(())
    }

    /// A checkpoint is in the record: it goes to the sinks.
    fn checkpointed(&mut self, note: String, now: Timestamp) {
        self.last_checkpoint = (self.stored.record.head.sequence, now);
        tracing::info!(
            size = self.stored.record.head.sequence,
            "signed an audit checkpoint"
        );
        let settings = &self.context.chain;
        let mut sinks: Vec<Sink> = Vec::new();
        if settings.checkpoint_file.is_some() {
            sinks.push(Sink::File);
        }
        if settings.checkpoint_url.is_some() {
            sinks.push(Sink::Url);
        }
        let named: std::collections::BTreeSet<String> = self
            .context
            .snapshot
            .policies()
            .iter()
            .flat_map(|policy| policy.spec.audit_sinks.iter().cloned())
            .collect();
        sinks.extend(named.into_iter().map(Sink::Named));
        for sink in sinks {
            self.undelivered.push_back((sink, note.clone()));
        }
        while self.undelivered.len() > UNDELIVERED {
            self.undelivered.pop_front();
        }
    }

    /// Hand the checkpoints not yet delivered to their sinks, oldest first; a sink that
    /// fails keeps the rest for the next round.
    async fn deliver(&mut self) {
        let mut failed: HashSet<Sink> = HashSet::new();
        let mut kept = VecDeque::new();
        while let Some((sink, note)) = self.undelivered.pop_front() {
            if failed.contains(&sink) {
                kept.push_back((sink, note));
                continue;
            }
            let delivered = match &sink {
                Sink::File => self.append(&note),
                Sink::Url => self.post(&note).await,
                Sink::Named(name) => {
                    let size = note
                        .lines()
                        .nth(1)
                        .and_then(|size| size.parse().ok())
                        .unwrap_or_default();
                    self.context
                        .notifier
                        .deliver_checkpoint(name, &note, size)
                        .await
                }
            };
            if let Err(error) = delivered {
                tracing::warn!(
                    ?sink,
                    error,
                    "a checkpoint sink did not take a checkpoint; retrying"
                );
                failed.insert(sink.clone());
                kept.push_back((sink, note));
            }
        }
        self.undelivered = kept;
    }

    fn append(&self, note: &str) -> Result<(), String> {
        let Some(path) = &self.context.chain.checkpoint_file else {
            return Ok(());
        };
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| format!("opening {}: {e}", path.display()))?;
        file.write_all(format!("{note}\n").as_bytes())
            .and_then(|()| file.sync_data())
            .map_err(|e| format!("appending to {}: {e}", path.display()))
    }

    async fn post(&self, note: &str) -> Result<(), String> {
        let (Some(url), Some(http)) = (&self.context.chain.checkpoint_url, &self.http) else {
            return Err("no HTTP client".into());
        };
        // The checkpoint's size (its second line) names the delivery: the same on a retry.
        let size = note.lines().nth(1).unwrap_or_default();
        http.post_text(
            url,
            &format!("checkpoint-{size}"),
            "AuditCheckpoint",
            note.as_bytes().to_vec(),
        )
        .await
    }
}

/// Write one claimed link into its entry; an entry already deleted is logged (verification
/// reports the gap).
async fn link_one(
    trail: &crate::cluster::trail::Trail,
    claimed: &Claimed,
) -> Result<(), ChainError> {
    let linked = trail
        .link(&claimed.name, &claimed.link)
        .await
        .map_err(|e| ChainError::Api("writing an AuditEntry's link", e))?;
    if linked == Linked::Gone {
        tracing::warn!(
            entry = claimed.name,
            sequence = claimed.link.sequence,
            "an AuditEntry was deleted before its link was written; verification will report it missing"
        );
    }
    Ok(())
}

/// Whether the entry has its link.
fn linked(entry: &AuditEntry) -> bool {
    entry.status.as_ref().is_some_and(|s| s.link.is_some())
}

/// Whether countersign's writer sealed the entry.
fn writer_sealed(key: &crate::core::approval::seal::SealKey, entry: &AuditEntry) -> bool {
    let name = entry.metadata.name.as_deref().unwrap_or_default();
    entry
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(WRITER_SEAL_ANNOTATION))
        .is_some_and(|seal| is_writer_sealed(key, name, &entry.spec, seal))
}
