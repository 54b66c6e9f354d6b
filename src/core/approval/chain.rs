//! Approval-chain state (SPEC §4): which level is open, who counted, whether the request is
//! approved, rejected or expired — a pure function of the chain, the reviews and `now`.
//!
//! How approvals count:
//! - A level has one slot per `required` entry and `minApprovals − required` free slots
//!   for anyone eligible at it. An approval counts at the open level when it can fill a
//!   slot, possibly after moving people already counted to other slots they fit (a
//!   bipartite matching), so one person in two required groups fills one slot only.
//! - An approval the open level cannot use (its free slots are full and it fits no empty
//!   required slot) is held, and counts at the first later level that names its author,
//!   when that level opens: a person never loses their approval to a level that did not
//!   need it.
//! - One person counts once per request; a rejection by any eligible approver ends it,
//!   and so does one by the requester (withdrawing their own request).

use std::collections::BTreeSet;

use jiff::Timestamp;
use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, RoleBinding, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::api::{
    ApprovalLevel, ApprovalPhase, ApprovalSettings, Approver, DeploymentApprovalStatus,
    LevelStatus, Review, ReviewDecision, UserInfo, service_account_username,
};
use crate::core::policy::windows::parse_duration;

/// RoleBindings and ClusterRoleBindings as seen at decision time; role approvers are
/// resolved against them.
#[derive(Clone, Debug, Default)]
pub struct RoleBindingSnapshot {
    pub role_bindings: Vec<RoleBinding>,
    pub cluster_role_bindings: Vec<ClusterRoleBinding>,
}

/// Everything fixed about one request: its chain, requester, namespace and start.
#[derive(Clone, Copy, Debug)]
pub struct ApprovalChain<'a> {
    pub settings: &'a ApprovalSettings,
    pub requester: &'a UserInfo,
    /// The target's namespace, where RoleBindings count.
    pub namespace: &'a str,
    pub bindings: &'a RoleBindingSnapshot,
    pub requested_at: Timestamp,
}

/// Where a chain stands after its reviews, at `now`.
#[derive(Clone, Debug, PartialEq)]
pub struct ChainState {
    /// `Pending`, `Approved`, `Rejected` or `Expired`.
    pub phase: ApprovalPhase,
    /// 0-based index of the open level while `Pending`.
    pub current_level: Option<usize>,
    pub levels: Vec<LevelStatus>,
    /// Everyone counted, in order.
    pub approved_by: Vec<String>,
    /// Who rejected, and their comment.
    pub rejected_by: Option<(String, Option<String>)>,
    /// When the last level was satisfied.
    pub approved_at: Option<Timestamp>,
    /// When the request (while pending) or the approval (once approved) expires.
    pub expires_at: Option<Timestamp>,
    /// Reviews that did not count, and why.
    pub ignored: Vec<String>,
    /// Why a level of the pending request can no longer be satisfied (its named approvers
    /// are used up), so nobody waits silently for the request to expire.
    pub stuck: Option<String>,
}

/// The condition type that says whether a pending request can still be approved.
pub const SATISFIABLE_CONDITION: &str = "Satisfiable";

impl ChainState {
    /// The `Satisfiable` condition for a pending request (`None` once it is decided):
    /// `False` with reason `LevelStuck` when a level can no longer be satisfied, so the
    /// approval says so instead of waiting silently for its TTL. The operator keeps
    /// `lastTransitionTime` when the status does not change.
    pub fn satisfiable_condition(
        &self,
        now: Timestamp,
        generation: Option<i64>,
    ) -> Option<Condition> {
        if self.phase != ApprovalPhase::Pending {
            return None;
        }
        let (status, reason, message) = match &self.stuck {
            Some(why) => ("False", "LevelStuck", why.clone()),
            None => (
                "True",
                "ApproversAvailable",
                "every open and later level can still be satisfied by approvers who have not counted yet".to_string(),
            ),
        };
        Some(Condition {
            type_: SATISFIABLE_CONDITION.to_string(),
            status: status.to_string(),
            reason: reason.to_string(),
            message,
            last_transition_time: Time(now),
            observed_generation: generation,
        })
    }

    /// The status fields that follow from the chain: phase, open level (1-based), per-level
    /// progress, who approved or rejected, and when it was approved and expires. Notifications,
    /// lock holder and conditions are the writer's to add.
    pub fn to_status(&self) -> DeploymentApprovalStatus {
        DeploymentApprovalStatus {
            phase: self.phase,
            current_level: self
                .current_level
                .and_then(|level| u32::try_from(level + 1).ok()),
            levels: self.levels.clone(),
            approved_by: self.approved_by.clone(),
            rejected_by: self.rejected_by.as_ref().map(|(user, _)| user.clone()),
            approved_at: self.approved_at.map(Time),
            expires_at: self.expires_at.map(Time),
            ..DeploymentApprovalStatus::default()
        }
    }
}

/// Distinct approvals a level needs: the stricter of `minApprovals` and its required
/// entries; `minApprovals` defaults to the number of required entries, or 1.
pub fn required_approvals(level: &ApprovalLevel) -> u32 {
    let required_entries = level.approvers.iter().filter(|a| a.required).count() as u32;
    let min = level.min_approvals.unwrap_or(required_entries.max(1));
    min.max(required_entries)
}

/// How an approver entry is shown: `alice`, `group:sre`, `serviceaccount:ci/deployer`, `role:admin`.
pub fn approver_label(entry: &Approver) -> String {
    match (
        &entry.user,
        &entry.group,
        &entry.service_account,
        &entry.role,
    ) {
        (Some(user), ..) => user.clone(),
        (_, Some(group), ..) => format!("group:{group}"),
        (_, _, Some(sa), _) => format!("serviceaccount:{}/{}", sa.namespace, sa.name),
        (_, _, _, Some(role)) => format!("role:{role}"),
        _ => "(empty approver)".to_string(),
    }
}

impl<'a> ApprovalChain<'a> {
    /// Does `entry` name the author of a review (user + the groups they approved through)?
    pub fn entry_matches(&self, entry: &Approver, user: &str, groups: &[String]) -> bool {
        if let Some(name) = &entry.user {
            return name == user;
        }
        if let Some(group) = &entry.group {
            return groups.contains(group);
        }
        if let Some(sa) = &entry.service_account {
            return service_account_username(&sa.namespace, &sa.name) == user;
        }
        if let Some(role) = &entry.role {
            let in_namespace = self.bindings.role_bindings.iter().filter(|b| {
                b.metadata.namespace.as_deref() == Some(self.namespace) && b.role_ref.name == *role
            });
            let namespaced = in_namespace.flat_map(|b| {
                let ns = b.metadata.namespace.as_deref().unwrap_or(self.namespace);
                b.subjects.iter().flatten().map(move |s| (s, ns))
            });
            let cluster = self
                .bindings
                .cluster_role_bindings
                .iter()
                .filter(|b| b.role_ref.kind == "ClusterRole" && b.role_ref.name == *role)
                .flat_map(|b| b.subjects.iter().flatten().map(|s| (s, "")));
            return namespaced
                .chain(cluster)
                .any(|(subject, ns)| subject_matches(subject, ns, user, groups));
        }
        false
    }

    /// Is a person eligible at `level`?
    fn eligible_at(&self, level: &ApprovalLevel, user: &str, groups: &[String]) -> bool {
        level
            .approvers
            .iter()
            .any(|e| self.entry_matches(e, user, groups))
    }

    /// Indices (0-based) of the levels at which a person is eligible, through `groups`.
    pub fn eligible_levels(&self, user: &str, groups: &[String]) -> Vec<usize> {
        self.settings
            .levels
            .iter()
            .enumerate()
            .filter(|(_, level)| self.eligible_at(level, user, groups))
            .map(|(i, _)| i)
            .collect()
    }

    /// The state of the chain after `reviews` (in the order they were appended), at `now`.
    pub fn evaluate(&self, reviews: &[Review], now: Timestamp) -> ChainState {
        let mut run = Evaluation::new(*self);
        for review in reviews {
            run.apply(review);
        }
        run.finish(now)
    }
}

/// An approver as counted: who, and the groups they approved through.
#[derive(Clone, Debug)]
struct Person {
    user: String,
    groups: Vec<String>,
}

/// The slots of one level and who fills them: one slot per required entry, and
/// `minApprovals − required` free slots for anyone eligible. Filled by augmenting paths,
/// so a person moves to another slot they fit when that lets a newcomer count.
#[derive(Clone, Debug)]
struct LevelSlots<'a> {
    chain: ApprovalChain<'a>,
    level: &'a ApprovalLevel,
    required: Vec<&'a Approver>,
    /// Who fills each required slot (an index into `people`).
    required_holder: Vec<Option<usize>>,
    free_capacity: u32,
    free_holders: Vec<usize>,
    /// Everyone counted at this level, in the order they counted.
    people: Vec<Person>,
}

impl<'a> LevelSlots<'a> {
    fn new(chain: ApprovalChain<'a>, level: &'a ApprovalLevel) -> Self {
        let required: Vec<&Approver> = level.approvers.iter().filter(|a| a.required).collect();
        let free_capacity = required_approvals(level).saturating_sub(required.len() as u32);
        LevelSlots {
            chain,
            level,
            required_holder: vec![None; required.len()],
            required,
            free_capacity,
            free_holders: Vec::new(),
            people: Vec::new(),
        }
    }

    fn filled(&self) -> u32 {
        (self.required_holder.iter().flatten().count() + self.free_holders.len()) as u32
    }

    fn satisfied(&self) -> bool {
        self.filled() >= required_approvals(self.level)
    }

    fn fits(&self, slot: usize, person: usize) -> bool {
        let p = &self.people[person];
        self.chain
            .entry_matches(self.required[slot], &p.user, &p.groups)
    }

    /// Count `person` (eligible at this level) if some slot can take them; `false` when the
    /// level cannot use their approval.
    fn try_add(&mut self, person: Person) -> bool {
        if self.satisfied() {
            return false;
        }
        self.people.push(person);
        let index = self.people.len() - 1;
        let mut visited = vec![false; self.required.len()];
        let mut free_visited = false;
        if self.place(index, &mut visited, &mut free_visited) {
            true
        } else {
            self.people.pop();
            false
        }
    }

    /// Find a slot for `person`, moving others along an augmenting path if needed.
    fn place(&mut self, person: usize, visited: &mut [bool], free_visited: &mut bool) -> bool {
        let empty_fitting = (0..self.required.len()).find(|&slot| {
            !visited[slot] && self.required_holder[slot].is_none() && self.fits(slot, person)
        });
        if let Some(slot) = empty_fitting {
            self.required_holder[slot] = Some(person);
            return true;
        }
        if (self.free_holders.len() as u32) < self.free_capacity {
            self.free_holders.push(person);
            return true;
        }
        for slot in 0..self.required.len() {
            if visited[slot] || !self.fits(slot, person) {
                continue;
            }
            visited[slot] = true;
            if let Some(holder) = self.required_holder[slot]
                && self.place(holder, visited, free_visited)
            {
                self.required_holder[slot] = Some(person);
                return true;
            }
        }
        if !*free_visited && self.free_capacity > 0 {
            *free_visited = true;
            for at in 0..self.free_holders.len() {
                let holder = self.free_holders[at];
                if self.place(holder, visited, free_visited) {
                    self.free_holders[at] = person;
                    return true;
                }
            }
        }
        false
    }

    fn status(&self) -> LevelStatus {
        LevelStatus {
            name: self.level.name.clone(),
            required: required_approvals(self.level),
            approvals: self.filled(),
            satisfied: self.satisfied(),
            approved_by: self.people.iter().map(|p| p.user.clone()).collect(),
            missing_required: self
                .required
                .iter()
                .zip(&self.required_holder)
                .filter(|(_, holder)| holder.is_none())
                .map(|(entry, _)| approver_label(entry))
                .collect(),
        }
    }
}

/// An approval the open level could not use, kept for a later level that names its author.
#[derive(Clone, Debug)]
struct Held {
    person: Person,
    /// The level that did not need it (0-based).
    refused_at: usize,
}

/// The running evaluation of one chain over its reviews.
struct Evaluation<'a> {
    chain: ApprovalChain<'a>,
    slots: Vec<LevelSlots<'a>>,
    state: ChainState,
    request_expiry: Option<Timestamp>,
    held: Vec<Held>,
    /// Everyone whose review was read (a person reviews a request once).
    reviewed: BTreeSet<String>,
}

impl<'a> Evaluation<'a> {
    fn new(chain: ApprovalChain<'a>) -> Self {
        let levels = &chain.settings.levels;
        let request_expiry = chain
            .settings
            .request_ttl
            .as_deref()
            .and_then(|ttl| parse_duration(ttl).ok())
            .and_then(|ttl| chain.requested_at.checked_add(ttl).ok());
        let slots: Vec<LevelSlots> = levels.iter().map(|l| LevelSlots::new(chain, l)).collect();
        Evaluation {
            state: ChainState {
                phase: ApprovalPhase::Pending,
                current_level: (!levels.is_empty()).then_some(0),
                // Filled from the slots when the evaluation finishes.
                levels: Vec::new(),
                approved_by: Vec::new(),
                rejected_by: None,
                approved_at: None,
                expires_at: request_expiry,
                ignored: Vec::new(),
                stuck: None,
            },
            chain,
            slots,
            request_expiry,
            held: Vec::new(),
            reviewed: BTreeSet::new(),
        }
    }

    fn ignore(&mut self, why: String) {
        self.state.ignored.push(why);
    }

    fn level_label(&self, index: usize) -> String {
        level_label(&self.chain.settings.levels, index)
    }

    fn apply(&mut self, review: &Review) {
        let time = review.time.0;
        let who = review.user.as_str();
        let requested_at = self.chain.requested_at;
        if self.state.phase == ApprovalPhase::Rejected {
            return self.ignore(format!("{who}: the request was already rejected"));
        }
        if time < requested_at {
            return self.ignore(format!(
                "{who}: reviewed at {time}, before the request was made ({requested_at})"
            ));
        }
        if self.request_expiry.is_some_and(|expiry| time >= expiry)
            && self.state.approved_at.is_none()
        {
            return self.ignore(format!("{who}: reviewed after the request expired"));
        }
        let by_requester = who == self.chain.requester.username;
        // The requester may always withdraw their own request; approving it needs
        // `allowSelfApproval`.
        if by_requester && review.decision == ReviewDecision::Reject {
            return self.reject(review);
        }
        if by_requester && !self.chain.settings.allow_self_approval {
            return self.ignore(format!(
                "{who}: the requester cannot approve their own change"
            ));
        }
        let eligible = self.chain.eligible_levels(who, &review.groups);
        if eligible.is_empty() {
            return self.ignore(format!("{who}: not an approver of any level"));
        }
        let first_review = self.reviewed.insert(who.to_string());
        match review.decision {
            // A rejection by any eligible approver ends the request, even after their approval.
            ReviewDecision::Reject => self.reject(review),
            ReviewDecision::Approve => {
                if !first_review {
                    return self.ignore(format!(
                        "{who}: already reviewed this request; one person counts once"
                    ));
                }
                let Some(current) = self.state.current_level else {
                    return self.ignore(format!("{who}: every level is already satisfied"));
                };
                if !eligible.contains(&current) {
                    let why = match eligible.iter().find(|&&i| i > current) {
                        Some(&later) => format!("{} is not open yet", self.level_label(later)),
                        None => "only eligible at an earlier, already satisfied level".to_string(),
                    };
                    return self.ignore(format!("{who}: {why}"));
                }
                let person = Person {
                    user: who.to_string(),
                    groups: review.groups.clone(),
                };
                if self.slots[current].try_add(person.clone()) {
                    self.state.approved_by.push(who.to_string());
                    if self.slots[current].satisfied() {
                        self.advance(time);
                    }
                } else {
                    self.held.push(Held {
                        person,
                        refused_at: current,
                    });
                }
            }
        }
    }

    /// End the request: rejected by the review's author.
    fn reject(&mut self, review: &Review) {
        self.state.phase = ApprovalPhase::Rejected;
        self.state.current_level = None;
        self.state.rejected_by = Some((review.user.clone(), review.comment.clone()));
        self.state.expires_at = None;
    }

    /// The open level was satisfied at `time`: open the next one, where held approvals of
    /// its approvers count first, or approve the request after the last.
    fn advance(&mut self, time: Timestamp) {
        let levels = &self.chain.settings.levels;
        loop {
            let next = self.state.current_level.map_or(levels.len(), |i| i + 1);
            if next >= levels.len() {
                self.state.current_level = None;
                self.state.phase = ApprovalPhase::Approved;
                self.state.approved_at = Some(time);
                self.state.expires_at = self
                    .chain
                    .settings
                    .approval_ttl
                    .as_deref()
                    .and_then(|ttl| parse_duration(ttl).ok())
                    .and_then(|ttl| time.checked_add(ttl).ok());
                return;
            }
            self.state.current_level = Some(next);
            let mut index = 0;
            while index < self.held.len() && !self.slots[next].satisfied() {
                let person = &self.held[index].person;
                if self
                    .chain
                    .eligible_at(&levels[next], &person.user, &person.groups)
                    && self.slots[next].try_add(person.clone())
                {
                    let held = self.held.remove(index);
                    self.state.approved_by.push(held.person.user);
                } else {
                    index += 1;
                }
            }
            if !self.slots[next].satisfied() {
                return;
            }
        }
    }

    fn finish(mut self, now: Timestamp) -> ChainState {
        let held: Vec<String> = self
            .held
            .iter()
            .map(|h| {
                let level = &self.slots[h.refused_at];
                let missing = level.status().missing_required;
                let waiting = if missing.is_empty() {
                    String::new()
                } else {
                    format!(" (it waits for {} only)", missing.join(", "))
                };
                format!(
                    "{}: approved, but {} needed no more approvals from them{waiting}",
                    h.person.user,
                    self.level_label(h.refused_at)
                )
            })
            .collect();
        self.state.ignored.extend(held);
        self.state.levels = self.slots.iter().map(LevelSlots::status).collect();
        if matches!(
            self.state.phase,
            ApprovalPhase::Pending | ApprovalPhase::Approved
        ) && self.state.expires_at.is_some_and(|expiry| now >= expiry)
        {
            self.state.phase = ApprovalPhase::Expired;
            self.state.current_level = None;
        }
        if self.state.phase == ApprovalPhase::Pending {
            self.state.stuck = self.stuck_level();
        }
        self.state
    }

    /// Why a person can no longer count at `level`, if they cannot.
    fn unavailable(&self, level: usize, user: &str) -> Option<String> {
        if user == self.chain.requester.username && !self.chain.settings.allow_self_approval {
            return Some(format!("{user} is the requester"));
        }
        if let Some(at) = self
            .slots
            .iter()
            .position(|s| s.people.iter().any(|p| p.user == user))
            && at != level
        {
            return Some(format!(
                "{user} already counted at {}",
                self.level_label(at)
            ));
        }
        let held = self.held.iter().any(|h| h.person.user == user);
        let counted_here = self.slots[level].people.iter().any(|p| p.user == user);
        if self.reviewed.contains(user) && !held && !counted_here {
            return Some(format!("{user} already reviewed this request"));
        }
        None
    }

    /// The first level from the open one on that can no longer be satisfied whoever
    /// approves next: a required named approver is used up, or a level of named people
    /// has too few of them left. Levels with groups or roles are judged on their named
    /// required entries only (their sizes are unknown).
    fn stuck_level(&self) -> Option<String> {
        let current = self.state.current_level?;
        let levels = &self.chain.settings.levels;
        for (index, level) in levels.iter().enumerate().skip(current) {
            let slots = &self.slots[index];
            for (slot, entry) in slots.required.iter().enumerate() {
                let Some(person) = named_person(entry) else {
                    continue;
                };
                if slots.required_holder[slot].is_some() {
                    continue;
                }
                if let Some(why) = self.unavailable(index, &person) {
                    return Some(format!(
                        "{} can no longer be satisfied: {} is required but {why}",
                        self.level_label(index),
                        approver_label(entry)
                    ));
                }
            }
            if level.approvers.iter().all(|e| named_person(e).is_some()) {
                let mut best = slots.clone();
                let mut unavailable = Vec::new();
                for entry in &level.approvers {
                    let Some(person) = named_person(entry) else {
                        continue;
                    };
                    if best.people.iter().any(|p| p.user == person) {
                        continue;
                    }
                    match self.unavailable(index, &person) {
                        Some(why) => unavailable.push(why),
                        None => {
                            best.try_add(Person {
                                user: person,
                                groups: Vec::new(),
                            });
                        }
                    }
                }
                if !best.satisfied() {
                    return Some(format!(
                        "{} can no longer be satisfied: it needs {} approvals but only {} of its approvers can still give one ({})",
                        self.level_label(index),
                        required_approvals(level),
                        best.filled(),
                        unavailable.join(", ")
                    ));
                }
            }
        }
        None
    }
}

/// The user name a named approver entry (a user or a service account) stands for;
/// `None` for groups and roles, whose members are not known from the chain alone.
pub fn named_person(entry: &Approver) -> Option<String> {
    match (
        &entry.user,
        &entry.service_account,
        &entry.group,
        &entry.role,
    ) {
        (Some(user), None, None, None) => Some(user.clone()),
        (None, Some(sa), None, None) => Some(service_account_username(&sa.namespace, &sa.name)),
        _ => None,
    }
}

fn subject_matches(
    subject: &Subject,
    binding_namespace: &str,
    user: &str,
    groups: &[String],
) -> bool {
    match subject.kind.as_str() {
        "User" => subject.name == user,
        "Group" => groups.contains(&subject.name),
        "ServiceAccount" => {
            let ns = subject.namespace.as_deref().unwrap_or(binding_namespace);
            service_account_username(ns, &subject.name) == user
        }
        _ => false,
    }
}

/// How a level is named in messages: "level 2/3 sre" (1-based, of the chain's length).
pub fn level_label(levels: &[ApprovalLevel], index: usize) -> String {
    let name = levels.get(index).map_or("?", |l| l.name.as_str());
    format!("level {}/{} {name}", index + 1, levels.len())
}

/// "level 2/2 sre: 1 of 2 approvals, waiting for bob (required)": the open level's
/// progress, or "2 of 2 levels satisfied".
pub fn describe_progress(state: &ChainState) -> String {
    let total = state.levels.len();
    match state
        .current_level
        .and_then(|i| state.levels.get(i).map(|l| (i, l)))
    {
        Some((i, level)) => describe_level(i, total, level),
        None => format!("{total} of {total} levels satisfied"),
    }
}

/// One level's progress as every surface says it (denials, notices, `status`): "level
/// 1/2 leads: 1 of 2 approvals", then ", satisfied" or who it still waits for.
pub fn describe_level(index: usize, of: usize, level: &LevelStatus) -> String {
    let mut text = format!(
        "level {}/{of} {}: {} of {} approvals",
        index + 1,
        level.name,
        level.approvals,
        level.required
    );
    if level.satisfied {
        text.push_str(", satisfied");
    } else if !level.missing_required.is_empty() {
        let names: Vec<String> = level
            .missing_required
            .iter()
            .map(|m| format!("{m} (required)"))
            .collect();
        text.push_str(&format!(", waiting for {}", names.join(", ")));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ServiceAccountRef;
    use crate::core::test_builders::{cluster_role_ref, group, level, role_binding, user};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    const T0: &str = "2025-06-02T10:00:00Z";

    fn ts(offset_minutes: i64) -> Timestamp {
        T0.parse::<Timestamp>().unwrap() + jiff::SignedDuration::from_mins(offset_minutes)
    }

    fn approve(who: &str, minute: i64) -> Review {
        Review {
            user: who.into(),
            groups: vec![],
            decision: ReviewDecision::Approve,
            comment: None,
            time: Time(ts(minute)),
        }
    }

    fn approve_as(who: &str, groups: &[&str], minute: i64) -> Review {
        Review {
            groups: groups.iter().map(|g| g.to_string()).collect(),
            ..approve(who, minute)
        }
    }

    fn reject(who: &str, minute: i64) -> Review {
        Review {
            decision: ReviewDecision::Reject,
            comment: Some("not now".into()),
            ..approve(who, minute)
        }
    }

    fn settings(levels: Vec<ApprovalLevel>) -> ApprovalSettings {
        ApprovalSettings {
            levels,
            ..Default::default()
        }
    }

    fn run(settings: &ApprovalSettings, reviews: &[Review], now_minute: i64) -> ChainState {
        let requester = UserInfo::new("dev", &["developers"]);
        let bindings = RoleBindingSnapshot::default();
        ApprovalChain {
            settings,
            requester: &requester,
            namespace: "shop",
            bindings: &bindings,
            requested_at: ts(0),
        }
        .evaluate(reviews, ts(now_minute))
    }

    fn five_named(required: bool) -> Vec<Approver> {
        ["a", "b", "c", "d", "e"]
            .iter()
            .map(|n| user(n, required))
            .collect()
    }

    #[test]
    fn change_manager_semantics() {
        // 3 per-level + 5 per-line requires 5.
        let three_of_five_required = settings(vec![level("l", five_named(true), Some(3))]);
        assert_eq!(required_approvals(&three_of_five_required.levels[0]), 5);
        let four: Vec<Review> = ["a", "b", "c", "d"]
            .iter()
            .enumerate()
            .map(|(i, n)| approve(n, i as i64))
            .collect();
        let state = run(&three_of_five_required, &four, 10);
        assert_eq!(state.phase, ApprovalPhase::Pending);
        assert_eq!(state.levels[0].approvals, 4);
        assert_eq!(state.levels[0].missing_required, vec!["e".to_string()]);
        let mut five = four.clone();
        five.push(approve("e", 5));
        assert_eq!(
            run(&three_of_five_required, &five, 10).phase,
            ApprovalPhase::Approved
        );

        // 4 per-level + 2 per-line requires 4, the 2 required among them.
        let mut approvers = vec![user("lead", true), user("sre", true)];
        approvers.extend(["x", "y", "z"].iter().map(|n| user(n, false)));
        let four_with_two = settings(vec![level("l", approvers, Some(4))]);
        assert_eq!(required_approvals(&four_with_two.levels[0]), 4);
        let without_required = [
            approve("x", 1),
            approve("y", 2),
            approve("z", 3),
            approve("lead", 4),
        ];
        let state = run(&four_with_two, &without_required, 10);
        assert_eq!(
            state.phase,
            ApprovalPhase::Pending,
            "4 approvals but `sre` missing"
        );
        assert_eq!(state.levels[0].missing_required, vec!["sre".to_string()]);
        let two_plus_one = [approve("lead", 1), approve("sre", 2), approve("x", 3)];
        assert_eq!(
            run(&four_with_two, &two_plus_one, 10).phase,
            ApprovalPhase::Pending
        );
        let two_plus_two = [
            approve("lead", 1),
            approve("sre", 2),
            approve("x", 3),
            approve("y", 4),
        ];
        assert_eq!(
            run(&four_with_two, &two_plus_two, 10).phase,
            ApprovalPhase::Approved
        );

        // A required group approver is satisfied by one member.
        let group_level = settings(vec![level("sre", vec![group("sre", true)], None)]);
        let state = run(
            &group_level,
            &[approve_as("carol", &["sre", "staff"], 1)],
            10,
        );
        assert_eq!(state.phase, ApprovalPhase::Approved);
        assert_eq!(state.levels[0].approved_by, vec!["carol".to_string()]);
        // …but not by someone who did not approve through that group.
        assert_eq!(
            run(&group_level, &[approve_as("carol", &["staff"], 1)], 10).phase,
            ApprovalPhase::Pending
        );
    }

    #[test]
    fn one_rejection_at_any_level_ends_the_request() {
        let two_levels = settings(vec![
            level(
                "leads",
                vec![user("lead1", false), user("lead2", false)],
                None,
            ),
            level(
                "sre",
                vec![user("sre1", false), user("sre2", false)],
                Some(2),
            ),
        ]);
        let cases: Vec<(&str, Vec<Review>)> = vec![
            ("first level", vec![reject("lead2", 1)]),
            (
                "second level after first",
                vec![approve("lead1", 1), reject("sre2", 2)],
            ),
            ("later level before it opens", vec![reject("sre1", 1)]),
            (
                "after approval of level 2 started",
                vec![
                    approve("lead1", 1),
                    approve("sre1", 2),
                    reject("sre2", 3),
                    approve("sre2", 4),
                ],
            ),
        ];
        for (name, reviews) in cases {
            let state = run(&two_levels, &reviews, 10);
            assert_eq!(state.phase, ApprovalPhase::Rejected, "{name}");
            assert!(state.rejected_by.is_some(), "{name}");
        }
        // A rejection by someone who is not an approver does not count.
        assert_eq!(
            run(&two_levels, &[reject("mallory", 1)], 10).phase,
            ApprovalPhase::Pending
        );
    }

    #[test]
    fn levels_are_sequential_and_people_count_once() {
        let two_levels = settings(vec![
            level(
                "leads",
                vec![user("lead", false), user("both", false)],
                None,
            ),
            level(
                "sre",
                vec![
                    user("sre1", false),
                    user("sre2", false),
                    user("both", false),
                ],
                Some(2),
            ),
        ]);
        // sre1 approves before level 2 opens: not counted, told it is not open yet.
        let state = run(&two_levels, &[approve("sre1", 1), approve("lead", 2)], 10);
        assert_eq!(state.phase, ApprovalPhase::Pending);
        assert_eq!(state.current_level, Some(1));
        assert_eq!(state.levels[1].approvals, 0);
        assert_eq!(
            state.ignored,
            vec!["sre1: level 2/2 sre is not open yet".to_string()]
        );
        assert_eq!(describe_progress(&state), "level 2/2 sre: 0 of 2 approvals");
        // `both` satisfies level 1 and cannot count again at level 2.
        let state = run(
            &two_levels,
            &[approve("both", 1), approve("both", 2), approve("sre1", 3)],
            10,
        );
        assert_eq!(state.phase, ApprovalPhase::Pending);
        assert_eq!(state.levels[1].approvals, 1);
        let state = run(
            &two_levels,
            &[approve("both", 1), approve("sre1", 2), approve("sre2", 3)],
            10,
        );
        assert_eq!(state.phase, ApprovalPhase::Approved);
        assert_eq!(state.approved_by, vec!["both", "sre1", "sre2"]);
    }

    #[test]
    fn self_approval_only_when_allowed() {
        let mut chain = settings(vec![level(
            "l",
            vec![user("dev", false), user("ops", false)],
            None,
        )]);
        let state = run(&chain, &[approve("dev", 1)], 10);
        assert_eq!(state.phase, ApprovalPhase::Pending);
        assert_eq!(
            state.ignored,
            vec!["dev: the requester cannot approve their own change".to_string()]
        );
        chain.allow_self_approval = true;
        assert_eq!(
            run(&chain, &[approve("dev", 1)], 10).phase,
            ApprovalPhase::Approved
        );
    }

    #[test]
    fn the_requester_may_withdraw_their_own_request() {
        let listed = settings(vec![level(
            "l",
            vec![user("dev", false), user("ops", false)],
            None,
        )]);
        let unlisted = settings(vec![level("l", vec![user("ops", false)], None)]);
        let mut self_approving = listed.clone();
        self_approving.allow_self_approval = true;
        let cases: Vec<(&str, &ApprovalSettings, Vec<Review>)> = vec![
            (
                "requester listed as an approver",
                &listed,
                vec![reject("dev", 1)],
            ),
            (
                "requester approves no level of the chain",
                &unlisted,
                vec![reject("dev", 1)],
            ),
            (
                "after approving their own change under allowSelfApproval",
                &self_approving,
                vec![approve("dev", 1), reject("dev", 2)],
            ),
        ];
        for (name, chain, reviews) in cases {
            let state = run(chain, &reviews, 10);
            assert_eq!(state.phase, ApprovalPhase::Rejected, "{name}");
            assert_eq!(
                state.rejected_by,
                Some(("dev".to_string(), Some("not now".to_string()))),
                "{name}"
            );
        }
    }

    #[test]
    fn request_and_approval_expiry() {
        let mut chain = settings(vec![level("l", vec![user("ops", false)], None)]);
        chain.request_ttl = Some("1h".into());
        chain.approval_ttl = Some("30m".into());
        assert_eq!(run(&chain, &[], 59).phase, ApprovalPhase::Pending);
        let expired = run(&chain, &[], 60);
        assert_eq!(expired.phase, ApprovalPhase::Expired);
        assert_eq!(expired.expires_at, Some(ts(60)));
        // A review after the request expired does not revive it.
        assert_eq!(
            run(&chain, &[approve("ops", 61)], 62).phase,
            ApprovalPhase::Expired
        );
        // Approved at minute 50; must be admitted before minute 80.
        assert_eq!(
            run(&chain, &[approve("ops", 50)], 79).phase,
            ApprovalPhase::Approved
        );
        let state = run(&chain, &[approve("ops", 50)], 80);
        assert_eq!(state.phase, ApprovalPhase::Expired);
        assert_eq!(state.expires_at, Some(ts(80)));
    }

    #[test]
    fn service_account_and_role_approvers() {
        let chain = settings(vec![level(
            "l",
            vec![
                Approver {
                    service_account: Some(ServiceAccountRef {
                        namespace: "ci".into(),
                        name: "release-bot".into(),
                    }),
                    ..Default::default()
                },
                Approver {
                    role: Some("release-approver".into()),
                    required: true,
                    ..Default::default()
                },
            ],
            Some(2),
        )]);
        let bindings = RoleBindingSnapshot {
            role_bindings: vec![
                role_binding(
                    "shop",
                    "approvers",
                    "release-approver",
                    "Group",
                    "shop-leads",
                ),
                role_binding("other", "elsewhere", "release-approver", "User", "outsider"),
            ],
            cluster_role_bindings: vec![ClusterRoleBinding {
                metadata: ObjectMeta {
                    name: Some("global".into()),
                    ..Default::default()
                },
                role_ref: cluster_role_ref("release-approver"),
                subjects: Some(vec![Subject {
                    kind: "User".into(),
                    name: "cto".into(),
                    ..Default::default()
                }]),
            }],
        };
        let requester = UserInfo::new("dev", &[]);
        let chain_ref = ApprovalChain {
            settings: &chain,
            requester: &requester,
            namespace: "shop",
            bindings: &bindings,
            requested_at: ts(0),
        };
        let bot = "system:serviceaccount:ci:release-bot";
        let cases: Vec<(&str, Vec<Review>, ApprovalPhase)> = vec![
            ("bot alone", vec![approve(bot, 1)], ApprovalPhase::Pending),
            (
                "bot + group member via RoleBinding",
                vec![approve(bot, 1), approve_as("lena", &["shop-leads"], 2)],
                ApprovalPhase::Approved,
            ),
            (
                "bot + ClusterRoleBinding user",
                vec![approve(bot, 1), approve("cto", 2)],
                ApprovalPhase::Approved,
            ),
            (
                "RoleBinding in another namespace does not count",
                vec![approve(bot, 1), approve("outsider", 2)],
                ApprovalPhase::Pending,
            ),
        ];
        for (name, reviews, expected) in cases {
            assert_eq!(
                chain_ref.evaluate(&reviews, ts(10)).phase,
                expected,
                "{name}"
            );
        }
    }

    /// (name, chain, reviews, expected phase, expected approvals at each level).
    type CountingCase = (
        &'static str,
        ApprovalSettings,
        Vec<Review>,
        ApprovalPhase,
        Vec<u32>,
    );

    #[test]
    fn required_lines_are_filled_by_distinct_people() {
        let sre_and_dba = |min| {
            settings(vec![level(
                "ops",
                vec![group("sre", true), group("dba", true), user("x", false)],
                min,
            )])
        };
        let cases: Vec<CountingCase> = vec![
            (
                "one person in both required groups fills one line",
                sre_and_dba(None),
                vec![approve_as("p", &["sre", "dba"], 1)],
                ApprovalPhase::Pending,
                vec![1],
            ),
            (
                "one person in both groups plus anyone else is not enough",
                sre_and_dba(Some(2)),
                vec![approve_as("p", &["sre", "dba"], 1), approve("x", 2)],
                ApprovalPhase::Pending,
                vec![1],
            ),
            (
                "a second member moves the first to the other line",
                sre_and_dba(None),
                vec![
                    approve_as("p", &["sre", "dba"], 1),
                    approve_as("q", &["sre"], 2),
                ],
                ApprovalPhase::Approved,
                vec![2],
            ),
            (
                "both lines by distinct people, then minApprovals by a third",
                sre_and_dba(Some(3)),
                vec![
                    approve_as("p", &["sre", "dba"], 1),
                    approve("x", 2),
                    approve_as("q", &["dba"], 3),
                ],
                ApprovalPhase::Approved,
                vec![3],
            ),
            (
                "the same person twice counts once",
                sre_and_dba(None),
                vec![approve_as("p", &["sre"], 1), approve_as("p", &["dba"], 2)],
                ApprovalPhase::Pending,
                vec![1],
            ),
            (
                "free slots full: an approval the level cannot use does not count there",
                settings(vec![level(
                    "l",
                    vec![user("lead", true), user("a", false), user("b", false)],
                    Some(2),
                )]),
                vec![approve("a", 1), approve("b", 2)],
                ApprovalPhase::Pending,
                vec![1],
            ),
        ];
        for (name, chain, reviews, phase, counts) in cases {
            let state = run(&chain, &reviews, 10);
            assert_eq!(state.phase, phase, "{name}");
            let got: Vec<u32> = state.levels.iter().map(|l| l.approvals).collect();
            assert_eq!(got, counts, "{name}");
        }
        let state = run(
            &sre_and_dba(None),
            &[approve_as("p", &["sre", "dba"], 1)],
            10,
        );
        assert_eq!(
            state.levels[0].missing_required,
            vec!["group:dba".to_string()]
        );
    }

    #[test]
    fn an_approval_a_level_did_not_need_counts_at_the_next_level_that_names_its_author() {
        let chain = settings(vec![
            level(
                "leads",
                vec![user("lead", true), user("a", false), user("b", false)],
                Some(2),
            ),
            level("sre", vec![user("a", false), user("b", false)], None),
        ]);
        // a fills level 1's free slot; b is not needed there and is held; lead completes
        // level 1, and b's approval counts at level 2 as it opens.
        let reviews = [approve("a", 1), approve("b", 2), approve("lead", 3)];
        let state = run(&chain, &reviews, 10);
        assert_eq!(state.phase, ApprovalPhase::Approved);
        assert_eq!(state.levels[0].approved_by, vec!["a", "lead"]);
        assert_eq!(state.levels[1].approved_by, vec!["b"]);
        assert_eq!(state.approved_at, Some(ts(3)));
        // Before lead approves, b is reported as not counted (yet).
        let state = run(&chain, &reviews[..2], 10);
        assert_eq!(
            state.ignored,
            vec![
                "b: approved, but level 1/2 leads needed no more approvals from them (it waits for lead only)"
                    .to_string()
            ]
        );
    }

    #[test]
    fn a_huge_min_approvals_costs_nothing_to_evaluate() {
        // A group level may ask for any number (its size is unknown): no slot is allocated
        // per required approval, so a hostile minApprovals cannot exhaust memory.
        let chain = settings(vec![level(
            "all",
            vec![group("staff", false)],
            Some(u32::MAX),
        )]);
        let reviews: Vec<Review> = (0..50)
            .map(|i| approve_as(&format!("p{i}"), &["staff"], 1))
            .collect();
        let state = run(&chain, &reviews, 10);
        assert_eq!(state.phase, ApprovalPhase::Pending);
        assert_eq!(state.levels[0].approvals, 50);
        assert_eq!(state.levels[0].required, u32::MAX);
        assert_eq!(state.stuck, None);
    }

    #[test]
    fn reviews_before_the_request_do_not_count() {
        let chain = settings(vec![level("l", vec![user("ops", false)], None)]);
        let state = run(&chain, &[approve("ops", -1)], 10);
        assert_eq!(state.phase, ApprovalPhase::Pending);
        assert_eq!(
            state.ignored,
            vec![
                "ops: reviewed at 2025-06-02T09:59:00Z, before the request was made (2025-06-02T10:00:00Z)"
                    .to_string()
            ]
        );
        assert_eq!(
            run(&chain, &[approve("ops", 0)], 10).phase,
            ApprovalPhase::Approved
        );
    }

    #[test]
    fn a_level_that_can_no_longer_be_satisfied_is_reported() {
        let any_then_two = settings(vec![
            level(
                "l1",
                vec![user("a", false), user("b", false), user("c", false)],
                None,
            ),
            level("l2", vec![user("a", false), user("b", false)], Some(2)),
        ]);
        let requester_required = settings(vec![level(
            "l",
            vec![user("dev", true), user("ops", false)],
            None,
        )]);
        let group_and_used_user = settings(vec![
            level("l1", vec![user("a", false)], None),
            level("l2", vec![group("sre", false), user("a", true)], None),
        ]);
        let cases: Vec<(&str, &ApprovalSettings, Vec<Review>, Option<&str>)> = vec![
            (
                "a counted at level 1 leaves level 2 one short",
                &any_then_two,
                vec![approve("a", 1)],
                Some(
                    "level 2/2 l2 can no longer be satisfied: it needs 2 approvals but only 1 of its approvers can still give one (a already counted at level 1/2 l1)",
                ),
            ),
            (
                "c at level 1 leaves both for level 2",
                &any_then_two,
                vec![approve("c", 1)],
                None,
            ),
            (
                "the requester is a required approver",
                &requester_required,
                vec![],
                Some(
                    "level 1/1 l can no longer be satisfied: dev is required but dev is the requester",
                ),
            ),
            (
                "a required user already counted, next to a group",
                &group_and_used_user,
                vec![approve("a", 1)],
                Some(
                    "level 2/2 l2 can no longer be satisfied: a is required but a already counted at level 1/2 l1",
                ),
            ),
            ("nobody approved yet", &any_then_two, vec![], None),
        ];
        for (name, chain, reviews, expected) in cases {
            let state = run(chain, &reviews, 10);
            assert_eq!(state.stuck.as_deref(), expected, "{name}");
            let condition = state.satisfiable_condition(ts(10), Some(3));
            let condition = condition.expect("a pending request has the condition");
            assert_eq!(condition.type_, SATISFIABLE_CONDITION);
            assert_eq!(condition.observed_generation, Some(3));
            match expected {
                Some(why) => {
                    assert_eq!(
                        (condition.status.as_str(), condition.reason.as_str()),
                        ("False", "LevelStuck"),
                        "{name}"
                    );
                    assert_eq!(condition.message, why, "{name}");
                }
                None => assert_eq!(condition.status, "True", "{name}"),
            }
        }
        let approved = run(
            &any_then_two,
            &[approve("c", 1), approve("a", 2), approve("b", 3)],
            10,
        );
        assert_eq!(approved.phase, ApprovalPhase::Approved);
        assert_eq!(approved.satisfiable_condition(ts(10), None), None);
    }

    #[test]
    fn min_approvals_defaults() {
        assert_eq!(
            required_approvals(&level("l", vec![user("a", false), user("b", false)], None)),
            1
        );
        assert_eq!(
            required_approvals(&level(
                "l",
                vec![user("a", true), user("b", true), user("c", false)],
                None
            )),
            2
        );
        assert_eq!(
            required_approvals(&level(
                "l",
                vec![user("a", true), user("b", false)],
                Some(2)
            ),),
            2
        );
    }
}
