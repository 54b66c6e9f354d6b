//! The GitOps sync rounds this replica's webhook saw (`core::admission::sync`): the dry
//! runs of each sync's latest round, kept in memory until the controller reports the
//! round's denial (then they are opened) or the round grows old. Bounded: a few hundred
//! rounds of a few hundred changes each.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::core::admission::sync::{RoundMember, SyncKey, SyncRole, role_in_round};

/// A round ends when no dry run of its sync has come for this long: kustomize-controller
/// dry-runs a sync's objects back to back (four at a time).
const QUIET: Duration = Duration::from_millis(700);
/// The held dry run is answered after at most this long (well inside the webhook's 10 s).
const HOLD_AT_MOST: Duration = Duration::from_secs(5);
/// A dry run this long after the round's last one starts a new round (a retry, a new commit).
const NEW_ROUND_AFTER: Duration = Duration::from_secs(10);
/// A round not reported within this long is forgotten (the controller retries and a new
/// round is remembered then).
const FORGET_AFTER: Duration = Duration::from_secs(30 * 60);
const MAX_ROUNDS: usize = 512;
const MAX_MEMBERS: usize = 512;

struct Round {
    started: Instant,
    last_joined: Instant,
    held: bool,
    /// The held dry run has been answered: the round is complete and may be opened.
    answered: bool,
    members: Vec<RoundMember>,
}

/// The rounds, shared by the webhook (which fills them) and the sync opener.
#[derive(Clone, Default)]
pub struct SyncRounds {
    rounds: Arc<Mutex<HashMap<SyncKey, Round>>>,
}

impl SyncRounds {
    /// Add `member` to `key`'s round (a new round when the last went quiet long ago); the
    /// part its dry run takes.
    pub fn join(&self, key: &SyncKey, member: RoundMember) -> SyncRole {
        let now = Instant::now();
        let Ok(mut rounds) = self.rounds.lock() else {
            return SyncRole::Hold;
        };
        rounds.retain(|_, round| now.duration_since(round.last_joined) < FORGET_AFTER);
        if rounds.len() >= MAX_ROUNDS && !rounds.contains_key(key) {
            let oldest = rounds
                .iter()
                .min_by_key(|(_, round)| round.last_joined)
                .map(|(key, _)| key.clone());
            if let Some(oldest) = oldest {
                rounds.remove(&oldest);
            }
        }
        let round = rounds.entry(key.clone()).or_insert_with(|| Round {
            started: now,
            last_joined: now,
            held: false,
            answered: false,
            members: Vec::new(),
        });
        if now.duration_since(round.last_joined) >= NEW_ROUND_AFTER {
            *round = Round {
                started: now,
                last_joined: now,
                held: false,
                answered: false,
                members: Vec::new(),
            };
        }
        round.last_joined = now;
        let role = role_in_round(round.held);
        round.held = true;
        if let Some(known) = round
            .members
            .iter_mut()
            .find(|m| m.name == member.name && m.namespace == member.namespace)
        {
            *known = member;
        } else if round.members.len() < MAX_MEMBERS {
            round.members.push(member);
        }
        role
    }

    /// Wait until `key`'s round has gone quiet (or the hold has lasted long enough); its
    /// members then, the round marked complete.
    pub async fn until_quiet(&self, key: &SyncKey) -> Vec<RoundMember> {
        let held_at = Instant::now();
        loop {
            let quiet_at = match self.rounds.lock() {
                Ok(mut rounds) => match rounds.get_mut(key) {
                    Some(round) => {
                        let quiet_at = round.last_joined + QUIET;
                        let now = Instant::now();
                        if now >= quiet_at || now.duration_since(held_at) >= HOLD_AT_MOST {
                            round.answered = true;
                            return round.members.clone();
                        }
                        quiet_at
                    }
                    None => return Vec::new(),
                },
                Err(_) => return Vec::new(),
            };
            let now = Instant::now();
            tokio::time::sleep(quiet_at.min(held_at + HOLD_AT_MOST) - now).await;
        }
    }

    /// The rounds of the Kustomization `namespace/name` taken out to be opened, each once it
    /// is complete: a round whose held dry run is still waiting here is taken once it goes
    /// quiet. That is the case when another replica denied its own held dry run first: the
    /// controller reports that denial and cancels the rest of the sync's dry runs, this
    /// replica's held one among them, whose answer then never comes.
    pub async fn take_when_quiet(
        &self,
        namespace: &str,
        name: &str,
    ) -> Vec<(SyncKey, Vec<RoundMember>)> {
        let waiting: Vec<SyncKey> = match self.rounds.lock() {
            Ok(rounds) => rounds
                .iter()
                .filter(|(key, round)| {
                    round.held && !round.answered && key.namespace == namespace && key.name == name
                })
                .map(|(key, _)| key.clone())
                .collect(),
            Err(_) => Vec::new(),
        };
        for key in &waiting {
            self.until_quiet(key).await;
        }
        self.take(namespace, name)
    }

    /// The round of the Kustomization `namespace/name`, taken out to be opened (at most
    /// once): what this replica remembered of the sync whose denial was reported.
    pub fn take(&self, namespace: &str, name: &str) -> Vec<(SyncKey, Vec<RoundMember>)> {
        let Ok(mut rounds) = self.rounds.lock() else {
            return Vec::new();
        };
        let keys: Vec<SyncKey> = rounds
            .iter()
            .filter(|(key, round)| round.answered && key.namespace == namespace && key.name == name)
            .map(|(key, _)| key.clone())
            .collect();
        keys.into_iter()
            .filter_map(|key| {
                let round = rounds.remove(&key)?;
                tracing::debug!(sync = ?key, age = ?round.started.elapsed(), "round taken to be opened");
                Some((key, round.members))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::GitOpsKind;
    use crate::core::test_builders::two_level_request;

    fn key(name: &str) -> SyncKey {
        SyncKey {
            controller: GitOpsKind::Flux,
            identity: "system:serviceaccount:flux-system:kustomize-controller".into(),
            namespace: "flux-system".into(),
            name: name.into(),
        }
    }

    fn member(name: &str) -> RoundMember {
        RoundMember {
            namespace: "shop".into(),
            name: name.into(),
            spec: two_level_request(&[], None).spec,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_round_is_held_until_quiet_then_opened_once() {
        let rounds = SyncRounds::default();
        assert_eq!(rounds.join(&key("apps"), member("web-1")), SyncRole::Hold);
        assert_eq!(rounds.join(&key("apps"), member("api-1")), SyncRole::Pass);
        // Another sync has a round of its own.
        assert_eq!(rounds.join(&key("other"), member("db-1")), SyncRole::Hold);
        // The same change again (a concurrent retry) is one member.
        assert_eq!(rounds.join(&key("apps"), member("api-1")), SyncRole::Pass);
        // A report before the held dry run is answered finds nothing complete.
        assert!(rounds.take("flux-system", "apps").is_empty());
        let joiner = {
            let rounds = rounds.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(500)).await;
                rounds.join(&key("apps"), member("cron-1"))
            })
        };
        let started = Instant::now();
        let members = rounds.until_quiet(&key("apps")).await;
        assert_eq!(joiner.await.expect("joined"), SyncRole::Pass);
        // Quiet counts from the last dry run: 500 ms + 700 ms.
        assert_eq!(started.elapsed(), Duration::from_millis(1200));
        let names: Vec<&str> = members.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["web-1", "api-1", "cron-1"]);
        let taken = rounds.take("flux-system", "apps");
        assert_eq!(taken.len(), 1);
        assert_eq!(taken[0].1.len(), 3);
        assert!(
            rounds.take("flux-system", "apps").is_empty(),
            "opened twice"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_report_while_this_replicas_hold_waits_takes_the_round_once_quiet() {
        let rounds = SyncRounds::default();
        assert_eq!(rounds.join(&key("apps"), member("api-1")), SyncRole::Hold);
        // The held dry run's caller gave up (another replica's denial was reported first),
        // so nothing here answers it; the report still finds the round, once it is quiet.
        let started = Instant::now();
        let taken = rounds.take_when_quiet("flux-system", "apps").await;
        assert_eq!(started.elapsed(), QUIET);
        assert_eq!(taken.len(), 1);
        assert_eq!(taken[0].1[0].name, "api-1");
        assert!(
            rounds
                .take_when_quiet("flux-system", "apps")
                .await
                .is_empty(),
            "opened twice"
        );
        // A round already answered is taken at once; another sync's is left alone.
        rounds.join(&key("apps"), member("web-1"));
        rounds.join(&key("other"), member("db-1"));
        rounds.until_quiet(&key("apps")).await;
        let started = Instant::now();
        assert_eq!(rounds.take_when_quiet("flux-system", "apps").await.len(), 1);
        assert_eq!(started.elapsed(), Duration::ZERO);
        assert_eq!(rounds.rounds.lock().expect("lock").len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_hold_ends_in_time_even_while_dry_runs_keep_coming() {
        let rounds = SyncRounds::default();
        assert_eq!(rounds.join(&key("apps"), member("web-1")), SyncRole::Hold);
        let busy = {
            let rounds = rounds.clone();
            tokio::spawn(async move {
                for i in 0..100 {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    rounds.join(&key("apps"), member(&format!("m-{i}")));
                }
            })
        };
        let started = Instant::now();
        rounds.until_quiet(&key("apps")).await;
        assert_eq!(started.elapsed(), HOLD_AT_MOST);
        busy.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn a_dry_run_long_after_the_last_starts_a_new_round() {
        let rounds = SyncRounds::default();
        assert_eq!(rounds.join(&key("apps"), member("web-1")), SyncRole::Hold);
        rounds.until_quiet(&key("apps")).await;
        tokio::time::sleep(NEW_ROUND_AFTER).await;
        // The retry of an unreported round: held again, the old members forgotten.
        assert_eq!(rounds.join(&key("apps"), member("api-1")), SyncRole::Hold);
        let members = rounds.until_quiet(&key("apps")).await;
        assert_eq!(members.len(), 1);
        assert_eq!(members[0].name, "api-1");
    }

    #[tokio::test(start_paused = true)]
    async fn rounds_and_their_members_are_bounded() {
        let rounds = SyncRounds::default();
        for i in 0..(MAX_ROUNDS + 10) {
            rounds.join(&key(&format!("k-{i}")), member("web-1"));
        }
        for i in 0..(MAX_MEMBERS + 10) {
            rounds.join(&key("big"), member(&format!("m-{i}")));
        }
        let held = rounds.rounds.lock().expect("lock");
        assert!(held.len() <= MAX_ROUNDS);
        assert_eq!(
            held.get(&key("big")).map(|r| r.members.len()),
            Some(MAX_MEMBERS)
        );
    }
}
