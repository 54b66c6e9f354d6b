//! Leader election on a `coordination.k8s.io/v1` Lease: exactly one replica leads, and a
//! leader that cannot renew steps down before anyone else may take over.
//!
//! Our own module rather than kube-lease-manager (0.13, which otherwise fits kube 5): its
//! watch loop keeps reporting "leader" while renewals fail (an API error only backs off),
//! so a partitioned replica would go on reconciling after its lease expired and another
//! replica took it. Here the leader measures its own renewals and steps down once a third
//! of the lease is left unrenewed; followers take over only after seeing the record
//! unchanged for a whole lease duration on their own clock (as client-go does), so the two
//! never overlap whatever the clocks say.

use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::PostParams;
use kube::{Api, Client};
use tokio::sync::watch;

/// What makes a lease record different from the last one seen: any write to it changes one
/// of these.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Record {
    holder: Option<String>,
    renewed: Option<String>,
    transitions: i32,
}

impl Record {
    fn of(lease: &Lease) -> Record {
        let spec = lease.spec.clone().unwrap_or_default();
        Record {
            holder: spec.holder_identity.filter(|h| !h.is_empty()),
            renewed: spec.renew_time.map(|t| t.0.to_string()),
            transitions: spec.lease_transitions.unwrap_or_default(),
        }
    }
}

/// What the elector should do next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    /// We hold it: write a new renew time.
    Renew,
    /// Nobody holds it, or the holder let it lapse: take it.
    Acquire,
    /// Someone else holds it.
    Follow,
}

/// The next step, given the record, when this elector first saw that exact record (on its
/// own monotonic clock), and the lease duration.
fn step(record: &Record, first_seen: Instant, now: Instant, me: &str, duration: Duration) -> Step {
    match record.holder.as_deref() {
        Some(holder) if holder == me => Step::Renew,
        None => Step::Acquire,
        Some(_) if now.saturating_duration_since(first_seen) >= duration => Step::Acquire,
        Some(_) => Step::Follow,
    }
}

/// Does a leader whose last successful renewal began at `renewed` still lead at `now`? It
/// steps down with a third of the lease to spare, well before a follower may take over.
fn still_leading(renewed: Instant, now: Instant, duration: Duration) -> bool {
    now.saturating_duration_since(renewed) < duration * 2 / 3
}

/// How one elector runs.
#[derive(Clone, Debug)]
pub struct ElectionSettings {
    pub namespace: String,
    pub lease: String,
    /// Unique per process (the replica name).
    pub identity: String,
    pub duration: Duration,
}

impl ElectionSettings {
    fn renew_every(&self) -> Duration {
        self.duration / 5
    }
}

/// A running elector: `leading()` says whether this replica may reconcile now.
pub struct Election {
    leading: watch::Receiver<bool>,
    stop: Arc<watch::Sender<bool>>,
    task: tokio::task::JoinHandle<()>,
}

/// Asks an election to release the lease and stop, without waiting for it: a replica told
/// to stop hands the operator over at once and may go on answering reviews meanwhile.
#[derive(Clone)]
pub struct StepDown(Arc<watch::Sender<bool>>);

impl StepDown {
    pub fn now(&self) {
        let _ = self.0.send(true);
    }
}

impl Election {
    /// Start electing with `client`'s identity.
    pub fn start(client: Client, settings: ElectionSettings) -> Election {
        let (leading_tx, leading) = watch::channel(false);
        let (stop, stop_rx) = watch::channel(false);
        let api = Api::namespaced(client, &settings.namespace);
        let task = tokio::spawn(run(api, settings, leading_tx, stop_rx));
        Election {
            leading,
            stop: Arc::new(stop),
            task,
        }
    }

    /// A handle that makes this election step down when called.
    pub fn step_down(&self) -> StepDown {
        StepDown(self.stop.clone())
    }

    /// Whether this replica leads, as it changes.
    pub fn leading(&self) -> watch::Receiver<bool> {
        self.leading.clone()
    }

    /// Stop leading and release the lease, so another replica takes over at once.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }

    /// Stop without releasing (as a killed process would).
    pub fn abandon(self) {
        self.task.abort();
    }
}

async fn run(
    api: Api<Lease>,
    settings: ElectionSettings,
    leading: watch::Sender<bool>,
    mut stop: watch::Receiver<bool>,
) {
    let mut seen: Option<(Record, Instant)> = None;
    let mut renewed: Option<Instant> = None;
    let mut last: Option<Lease> = None;
    loop {
        let attempt = Instant::now();
        let outcome = tokio::time::timeout(
            settings.renew_every(),
            attempt_once(&api, &settings, &mut seen, &mut last, attempt),
        )
        .await;
        match outcome {
            Ok(Ok(true)) => renewed = Some(attempt),
            Ok(Ok(false)) => renewed = None,
            Ok(Err(error)) => tracing::warn!(%error, lease = settings.lease, "lease not renewed"),
            Err(_) => tracing::warn!(lease = settings.lease, "lease renewal timed out"),
        }
        let now_leading =
            renewed.is_some_and(|at| still_leading(at, Instant::now(), settings.duration));
        if *leading.borrow() != now_leading {
            if now_leading {
                tracing::info!(identity = settings.identity, "leading");
            } else {
                tracing::warn!(identity = settings.identity, "stopped leading");
            }
            leading.send_replace(now_leading);
        }
        tokio::select! {
            _ = tokio::time::sleep(settings.renew_every()) => {}
            _ = stop.changed() => {
                leading.send_replace(false);
                if now_leading {
                    release(&api, &settings, last).await;
                }
                return;
            }
        }
    }
}

/// One look at the lease and, if due, one write. `Ok(true)`: this elector holds it now.
async fn attempt_once(
    api: &Api<Lease>,
    settings: &ElectionSettings,
    seen: &mut Option<(Record, Instant)>,
    last: &mut Option<Lease>,
    now: Instant,
) -> Result<bool, kube::Error> {
    let Some(lease) = api.get_opt(&settings.lease).await? else {
        let created = api
            .create(&PostParams::default(), &held(None, settings, 0))
            .await;
        return match created {
            Ok(lease) => {
                *last = Some(lease);
                Ok(true)
            }
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
            Err(error) => Err(error),
        };
    };
    let record = Record::of(&lease);
    let first_seen = match seen {
        Some((previous, since)) if *previous == record => *since,
        _ => now,
    };
    *seen = Some((record.clone(), first_seen));
    let transitions = match step(
        &record,
        first_seen,
        now,
        &settings.identity,
        settings.duration,
    ) {
        Step::Follow => {
            *last = Some(lease);
            return Ok(false);
        }
        Step::Renew => record.transitions,
        Step::Acquire => record.transitions + 1,
    };
    let mut next = held(Some(&lease), settings, transitions);
    next.metadata.resource_version = lease.metadata.resource_version.clone();
    match api
        .replace(&settings.lease, &PostParams::default(), &next)
        .await
    {
        Ok(lease) => {
            *seen = Some((Record::of(&lease), now));
            *last = Some(lease);
            Ok(true)
        }
        // Someone else wrote first: whoever it was, it was not us.
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
        Err(error) => Err(error),
    }
}

/// The lease as held by this elector (renewed now).
fn held(current: Option<&Lease>, settings: &ElectionSettings, transitions: i32) -> Lease {
    let now = MicroTime(Timestamp::now());
    let previous = current.and_then(|l| l.spec.clone()).unwrap_or_default();
    let ours = previous.holder_identity.as_deref() == Some(settings.identity.as_str());
    Lease {
        metadata: ObjectMeta {
            name: Some(settings.lease.clone()),
            namespace: Some(settings.namespace.clone()),
            ..current.map(|l| l.metadata.clone()).unwrap_or_default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(settings.identity.clone()),
            lease_duration_seconds: i32::try_from(settings.duration.as_secs()).ok(),
            acquire_time: if ours {
                previous.acquire_time
            } else {
                Some(now.clone())
            },
            renew_time: Some(now),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        }),
    }
}

/// Give the lease up, so another replica need not wait for it to lapse.
async fn release(api: &Api<Lease>, settings: &ElectionSettings, last: Option<Lease>) {
    let Some(mut lease) = last else {
        return;
    };
    if let Some(spec) = lease.spec.as_mut() {
        if spec.holder_identity.as_deref() != Some(settings.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.acquire_time = None;
        spec.renew_time = None;
    }
    lease.metadata.managed_fields = None;
    if let Err(error) = api
        .replace(&settings.lease, &PostParams::default(), &lease)
        .await
    {
        tracing::warn!(%error, "could not release the lease; it lapses on its own");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEASE: Duration = Duration::from_secs(15);

    fn record(holder: Option<&str>) -> Record {
        Record {
            holder: holder.map(str::to_string),
            renewed: Some("2026-11-24T10:00:00Z".into()),
            transitions: 3,
        }
    }

    #[test]
    fn steps() {
        let start = Instant::now();
        let at = |secs: u64| start + Duration::from_secs(secs);
        let cases = [
            ("we hold it", record(Some("a")), at(0), Step::Renew),
            (
                "we hold it, long unrenewed",
                record(Some("a")),
                at(60),
                Step::Renew,
            ),
            ("nobody holds it", record(None), at(0), Step::Acquire),
            (
                "another holds it, fresh",
                record(Some("b")),
                at(0),
                Step::Follow,
            ),
            (
                "another holds it, seen unchanged 14 s",
                record(Some("b")),
                at(14),
                Step::Follow,
            ),
            (
                "another let it lapse (15 s unchanged)",
                record(Some("b")),
                at(15),
                Step::Acquire,
            ),
        ];
        for (name, record, now, expected) in cases {
            assert_eq!(step(&record, start, now, "a", LEASE), expected, "{name}");
        }
    }

    #[test]
    fn a_leader_steps_down_before_a_follower_may_take_over() {
        let renewed = Instant::now();
        assert!(still_leading(
            renewed,
            renewed + Duration::from_secs(9),
            LEASE
        ));
        assert!(!still_leading(
            renewed,
            renewed + Duration::from_secs(10),
            LEASE
        ));
        // A follower that saw this renewal at the earliest when it was made may take over
        // at renewed + 15 s: five seconds after the leader stopped.
        let follower_may_take = renewed + LEASE;
        let leader_stops = renewed + LEASE * 2 / 3;
        assert!(leader_stops < follower_may_take);
    }
}
