//! How the approver's and deployer's commands show requests and the audit trail to a
//! person: a table to scan, a status to read top to bottom, a timeline. Plain functions of
//! the objects and the current time, so each is unit-tested. Every string that came from
//! an object, a comment or a name goes through `core::inert` on its way to the terminal.

use std::fmt::Write;

use jiff::Timestamp;

use crate::api::{
    ApprovalPhase, AuditEntry, ChangeSet, ChangeSummary, DeploymentApproval,
    DeploymentApprovalStatus, LevelStatus,
};
use crate::core::approval::chain::{approver_label, required_approvals};
use crate::core::approval::seal::{UNVERIFIED_MARK, is_unverified};
use crate::core::approval::set::{as_request, lists};
use crate::core::inert;

/// Outside text, inert and bounded, for a terminal.
fn shown(text: &str) -> String {
    inert::text(text)
}

/// Whether countersign has found the request's summary to be its own: `Some(false)` when
/// it is not (its seal is missing or wrong), `None` before countersign has looked.
pub fn summary_verified(approval: &DeploymentApproval) -> Option<bool> {
    approval
        .status
        .as_ref()
        .and_then(|s| is_unverified(&s.conditions))
        .map(|unverified| !unverified)
}

/// The phase as stored; a request the operator has not seen yet is `Pending`.
pub fn phase(approval: &DeploymentApproval) -> ApprovalPhase {
    approval.phase()
}

/// Still in flight: not Deployed, Rejected, Expired or Failed.
pub fn is_open(approval: &DeploymentApproval) -> bool {
    !phase(approval).is_terminal()
}

/// `5s`, `3m`, `2h`, `4d`: how long ago, as kubectl shows ages.
pub fn age(since: Timestamp, now: Timestamp) -> String {
    let seconds = now.duration_since(since).as_secs().max(0);
    match seconds {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

/// `Deployment/web`.
pub fn target(approval: &DeploymentApproval) -> String {
    shown(&format!(
        "{}/{}",
        approval.spec.target.kind, approval.spec.target.name
    ))
}

/// The open level and its progress: `leads 1/2`; for a request no longer pending, the
/// phase says where it stands and this is `-`.
pub fn level(approval: &DeploymentApproval) -> String {
    match open_level(approval) {
        Some((_, status)) => format!(
            "{} {}/{}",
            shown(&status.name),
            status.approvals,
            status.required
        ),
        None => "-".into(),
    }
}

/// The open level's index (0-based) and status, while the request is pending.
fn open_level(approval: &DeploymentApproval) -> Option<(usize, &LevelStatus)> {
    let status = approval.status.as_ref()?;
    if status.phase != ApprovalPhase::Pending {
        return None;
    }
    let index = usize::try_from(status.current_level?)
        .ok()?
        .checked_sub(1)?;
    status.levels.get(index).map(|level| (index, level))
}

/// Who the request waits for: the required approvers who have not approved, and how many
/// more of the level's approvers; or what it waits for once approved.
pub fn waiting_for(approval: &DeploymentApproval) -> String {
    let Some(status) = approval.status.as_ref() else {
        return "countersign".into();
    };
    match status.phase {
        ApprovalPhase::Pending => {}
        ApprovalPhase::Approved => return "the change to be applied".into(),
        ApprovalPhase::Deploying => return "the rollout".into(),
        _ => return "-".into(),
    }
    let Some((index, level)) = open_level(approval) else {
        return "countersign".into();
    };
    let mut parts: Vec<String> = level.missing_required.iter().map(|m| shown(m)).collect();
    let still = level
        .required
        .saturating_sub(level.approvals)
        .saturating_sub(level.missing_required.len() as u32);
    if still > 0 {
        let approvers: Vec<String> = approval
            .spec
            .policy
            .chain
            .levels
            .get(index)
            .map(|l| {
                l.approvers
                    .iter()
                    .filter(|a| !a.required)
                    .map(|a| shown(&approver_label(a)))
                    .collect()
            })
            .unwrap_or_default();
        parts.push(format!("{still} of {}", approvers.join(", ")));
    }
    if parts.is_empty() {
        "countersign".into()
    } else {
        parts.join("; ")
    }
}

/// A table with a header row, columns padded to their widest cell (as kubectl prints).
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(width) = widths.get_mut(i) {
                *width = (*width).max(cell.chars().count());
            }
        }
    }
    let mut text = String::new();
    let header: Vec<String> = header.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let cells: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(i, cell)| {
                let width = widths.get(i).copied().unwrap_or_default();
                format!("{cell:<width$}")
            })
            .collect();
        let _ = writeln!(text, "{}", cells.join("   ").trim_end());
    }
    text
}

/// One row of `list`: name, target, change, phase, level, waiting for, age (and the
/// namespace first, across namespaces). A pending member of a change set waits for its
/// set, where it is reviewed.
pub fn list_row(
    approval: &DeploymentApproval,
    with_namespace: bool,
    now: Timestamp,
) -> Vec<String> {
    let mut row = Vec::new();
    if with_namespace {
        row.push(shown(
            approval.metadata.namespace.as_deref().unwrap_or_default(),
        ));
    }
    let (level, waiting) = match &approval.spec.change_set {
        Some(set) if phase(approval) == ApprovalPhase::Pending => {
            ("-".to_string(), format!("change set {}", shown(set)))
        }
        _ => (level(approval), waiting_for(approval)),
    };
    row.extend([
        shown(approval.metadata.name.as_deref().unwrap_or_default()),
        target(approval),
        change_cell(approval),
        phase(approval).to_string(),
        level,
        waiting,
        age(approval.spec.change.requested_at.0, now),
    ]);
    row
}

/// One entry of `list`: a change set with the requests it lists (those found, in its
/// order), or a request on its own.
#[derive(Clone, Debug)]
pub enum Listed {
    Set {
        set: Box<ChangeSet>,
        members: Vec<DeploymentApproval>,
    },
    Request(Box<DeploymentApproval>),
}

impl Listed {
    fn sort_key(&self) -> (Option<&str>, Timestamp) {
        let (metadata, change) = match self {
            Listed::Set { set, .. } => (&set.metadata, &set.spec.change),
            Listed::Request(request) => (&request.metadata, &request.spec.change),
        };
        (metadata.namespace.as_deref(), change.requested_at.0)
    }

    /// The objects, as `-o json|yaml` lists them: a set, then its members.
    pub fn objects(&self) -> Result<Vec<serde_json::Value>, serde_json::Error> {
        match self {
            Listed::Set { set, members } => {
                let mut objects = vec![serde_json::to_value(set)?];
                for member in members {
                    objects.push(serde_json::to_value(member)?);
                }
                Ok(objects)
            }
            Listed::Request(request) => Ok(vec![serde_json::to_value(request)?]),
        }
    }
}

/// A set is in flight until it is over, or every member it lists is (an approved set
/// stays Approved while its members roll out).
pub fn set_is_open(set: &ChangeSet, members: &[DeploymentApproval]) -> bool {
    !set.phase().is_terminal() && (members.is_empty() || members.iter().any(is_open))
}

/// What `list` shows, by namespace and time: each set (in flight, or every one with
/// `all`) with its members beneath it, whatever their phase; and each request not shown
/// under a set (in flight, or every one with `all`).
pub fn listing(requests: Vec<DeploymentApproval>, sets: Vec<ChangeSet>, all: bool) -> Vec<Listed> {
    let mut grouped = vec![false; requests.len()];
    let mut listed = Vec::new();
    for set in sets {
        let mut members = Vec::new();
        for member in &set.spec.members {
            let found = requests.iter().position(|r| {
                r.metadata.name.as_deref() == Some(member.request.as_str()) && lists(&set, r)
            });
            if let Some(index) = found {
                members.push(index);
            }
        }
        let found: Vec<DeploymentApproval> = members.iter().map(|&i| requests[i].clone()).collect();
        if all || set_is_open(&set, &found) {
            for index in members {
                grouped[index] = true;
            }
            listed.push(Listed::Set {
                set: Box::new(set),
                members: found,
            });
        }
    }
    for (request, grouped) in requests.into_iter().zip(grouped) {
        if !grouped && (all || is_open(&request)) {
            listed.push(Listed::Request(Box::new(request)));
        }
    }
    listed.sort_by(|a, b| a.sort_key().cmp(&b.sort_key()));
    listed
}

/// The rows of `list`: a set's row (its target: how many requests it holds), then its
/// members' beneath it, marked `├`/`└`.
pub fn listing_rows(listed: &[Listed], with_namespace: bool, now: Timestamp) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    let name_column = usize::from(with_namespace);
    for entry in listed {
        match entry {
            Listed::Request(request) => rows.push(list_row(request, with_namespace, now)),
            Listed::Set { set, members } => {
                let request = as_request(set);
                let mut row = list_row(&request, with_namespace, now);
                row[name_column + 1] = format!("set of {}", set.spec.members.len());
                row[name_column + 5] = set_waiting_for(set, members);
                rows.push(row);
                for (index, member) in members.iter().enumerate() {
                    let mut row = list_row(member, with_namespace, now);
                    let mark = if index + 1 == members.len() {
                        "└"
                    } else {
                        "├"
                    };
                    row[name_column] = format!("{mark} {}", row[name_column]);
                    if phase(member) == ApprovalPhase::Pending {
                        row[name_column + 5] = "the set".into();
                    }
                    rows.push(row);
                }
            }
        }
    }
    rows
}

/// Who or what a set waits for: its approvers while pending (as a request's); once
/// approved, its members' being applied and rolled out.
pub fn set_waiting_for(set: &ChangeSet, members: &[DeploymentApproval]) -> String {
    match set.phase() {
        ApprovalPhase::Approved => {
            let count =
                |wanted: ApprovalPhase| members.iter().filter(|m| phase(m) == wanted).count();
            match (
                count(ApprovalPhase::Approved),
                count(ApprovalPhase::Deploying),
            ) {
                (0, 0) if members.is_empty() => "the changes to be applied".into(),
                (0, 0) => "-".into(),
                (0, _) => "the rollout".into(),
                (1, _) => "1 change to be applied".into(),
                (n, _) => format!("{n} changes to be applied"),
            }
        }
        _ => waiting_for(&as_request(set)),
    }
}

/// The header of `list`.
pub fn list_header(with_namespace: bool) -> Vec<&'static str> {
    let mut header = Vec::new();
    if with_namespace {
        header.push("NAMESPACE");
    }
    header.extend([
        "NAME",
        "TARGET",
        "CHANGE",
        "PHASE",
        "LEVEL",
        "WAITING FOR",
        "AGE",
    ]);
    header
}

/// The CHANGE cell of `list`: whether the summary is countersign's own, every kind of
/// security-relevant change (never cut), then the images and how much else changes.
pub fn change_cell(approval: &DeploymentApproval) -> String {
    let summary = &approval.spec.change.summary;
    let mut parts = Vec::new();
    match summary_verified(approval) {
        Some(false) => parts.push("UNVERIFIED SUMMARY".to_string()),
        None => parts.push("(summary not yet checked)".to_string()),
        Some(true) => {}
    }
    if !summary.risks.is_empty() {
        let labels: Vec<&str> = summary.risks.iter().map(|r| r.label()).collect();
        parts.push(format!("SECURITY: {}", labels.join(", ")));
    }
    let images: Vec<String> = summary
        .images
        .iter()
        .map(|image| {
            inert::bounded(
                &format!(
                    "{} → {}",
                    image.container,
                    image.after.as_deref().unwrap_or("(removed)")
                ),
                40,
            )
        })
        .collect();
    if !images.is_empty() {
        parts.push(images.join(", "));
    }
    let others = other_changes(summary);
    if others > 0 {
        parts.push(format!(
            "{others} other change{}",
            if others == 1 { "" } else { "s" }
        ));
    }
    if parts.is_empty() {
        parts.push(inert::bounded(&summary.text, 48));
    }
    parts.join("; ")
}

/// Changes that are neither security-relevant nor an image, listed or not.
fn other_changes(summary: &ChangeSummary) -> usize {
    let listed = summary
        .changes
        .iter()
        .filter(|c| c.risk.is_none() && !c.path.ends_with("/image"))
        .count();
    let unlisted = usize::try_from(summary.unlisted).unwrap_or(usize::MAX);
    if summary.changes.is_empty() {
        summary
            .changed_paths
            .iter()
            .filter(|p| !p.ends_with("/image"))
            .count()
    } else {
        listed.saturating_add(unlisted)
    }
}

/// `status`: the change, each level, the reviews, and what happens next. A member of a
/// change set says so, and that its reviews go to the set.
pub fn status_text(approval: &DeploymentApproval, now: Timestamp) -> String {
    let status = approval.status.clone().unwrap_or_default();
    let mut text = String::new();
    header_text(&mut text, approval, &status, now, Shown::Request);
    change_text(&mut text, approval);
    levels_text(&mut text, approval, &status);
    match &approval.spec.change_set {
        Some(set) => {
            let _ = writeln!(
                text,
                "\nReviews: on change set {} (this request holds none of its own)",
                shown(set)
            );
        }
        None => reviews_text(&mut text, approval),
    }
    notifications_text(&mut text, &status);
    rollout_text(&mut text, &status);
    let _ = writeln!(text, "\nNext: {}", next_step(approval));
    text
}

/// `status` of a change set: the set as one request (its levels, reviews, notifications),
/// with each member (`members`: the requests it lists, in its order, as stored; `None`:
/// not found) by target, digest, phase and change.
pub fn set_status_text(
    set: &ChangeSet,
    members: &[Option<DeploymentApproval>],
    now: Timestamp,
) -> String {
    let request = as_request(set);
    let status = request.status.clone().unwrap_or_default();
    let mut text = String::new();
    header_text(
        &mut text,
        &request,
        &status,
        now,
        Shown::Set(set.spec.members.len()),
    );
    set_change_text(&mut text, &request);
    members_text(&mut text, set, members);
    levels_text(&mut text, &request, &status);
    reviews_text(&mut text, &request);
    notifications_text(&mut text, &status);
    let _ = writeln!(text, "\nNext: {}", set_next_step(&request, members));
    text
}

/// What a status shows: a request, or a change set of that many requests.
#[derive(Clone, Copy)]
enum Shown {
    Request,
    Set(usize),
}

/// A change set's summary: whether it is countersign's, and every kind of
/// security-relevant change any member makes (each member's are listed with it).
fn set_change_text(text: &mut String, request: &DeploymentApproval) {
    let summary = &request.spec.change.summary;
    let _ = writeln!(text, "\nChange: {}", inert::bounded(&summary.text, 1000));
    verification_text(text, request, "  ");
    if !summary.risks.is_empty() {
        let labels: Vec<&str> = summary.risks.iter().map(|r| r.label()).collect();
        let _ = writeln!(
            text,
            "  Security-relevant: {} (each member's below: read these first)",
            labels.join(", ")
        );
    }
}

/// Each member: name, target, phase, digest, its one-line change with its
/// security-relevant changes; and what keeps a member from counting the set's reviews.
fn members_text(text: &mut String, set: &ChangeSet, members: &[Option<DeploymentApproval>]) {
    let _ = writeln!(
        text,
        "\nMembers ({}; each admitted only with its own digest):",
        member_phases(members)
    );
    for (index, listed) in set.spec.members.iter().enumerate() {
        let found = members.get(index).and_then(Option::as_ref);
        let state = found.map_or_else(|| "not found".to_string(), |m| phase(m).to_string());
        let _ = writeln!(
            text,
            "  {}. {}: {}/{}, {state}",
            index + 1,
            shown(&listed.request),
            shown(&listed.target.kind),
            shown(&listed.target.name)
        );
        let _ = writeln!(text, "     digest: {}", shown(&listed.digest));
        let Some(member) = found else {
            let _ = writeln!(
                text,
                "     !! the request does not exist: the set cannot admit this change"
            );
            continue;
        };
        if !lists(set, member) {
            let _ = writeln!(
                text,
                "     !! this request does not match the set's listing (its set, target, digest, requester or chain): the set's reviews do not count for it"
            );
        }
        let summary = &member.spec.change.summary;
        let _ = writeln!(text, "     change: {}", inert::bounded(&summary.text, 1000));
        verification_text(text, member, "     ");
        for change in summary.security_relevant() {
            let _ = writeln!(
                text,
                "     ! {:<16} {}: {} → {}",
                change.risk.map(|r| r.label()).unwrap_or_default(),
                shown(&change.path),
                value(&change.before),
                value(&change.after)
            );
        }
    }
}

/// How many members are in each phase, in the order met: `1 Deployed, 1 Approved`.
pub fn member_phases(members: &[Option<DeploymentApproval>]) -> String {
    let mut counts: Vec<(String, usize)> = Vec::new();
    for member in members {
        let name = member
            .as_ref()
            .map_or_else(|| "not found".to_string(), |m| phase(m).to_string());
        match counts.iter_mut().find(|(n, _)| *n == name) {
            Some((_, count)) => *count += 1,
            None => counts.push((name, 1)),
        }
    }
    let parts: Vec<String> = counts
        .iter()
        .map(|(name, count)| format!("{count} {name}"))
        .collect();
    if parts.is_empty() {
        "none".into()
    } else {
        parts.join(", ")
    }
}

/// A set's next step, in one sentence: once approved, its members' rollouts say it.
fn set_next_step(request: &DeploymentApproval, members: &[Option<DeploymentApproval>]) -> String {
    let found: Vec<&DeploymentApproval> = members.iter().flatten().collect();
    let all = |wanted: &[ApprovalPhase]| {
        !found.is_empty() && found.iter().all(|m| wanted.contains(&phase(m)))
    };
    let settled = matches!(
        phase(request),
        ApprovalPhase::Approved | ApprovalPhase::Expired | ApprovalPhase::Deployed
    );
    if settled && all(&[ApprovalPhase::Deployed]) {
        return "every change deployed; nothing left to do".into();
    }
    if phase(request) == ApprovalPhase::Failed {
        return "a change's rollout failed: its request says why (kubectl countersign status <request>)".into();
    }
    if settled && all(&[ApprovalPhase::Deploying, ApprovalPhase::Deployed]) {
        return "every change admitted; countersign is watching the rollouts".into();
    }
    match phase(request) {
        ApprovalPhase::Pending if request.status.is_none() => {
            "countersign has not looked at this change set yet".into()
        }
        ApprovalPhase::Approved => match &request.spec.change.origin {
            Some(origin) => format!(
                "approved: countersign asks {} {}/{} to apply the changes again (with serve --gitops); each is admitted with its own digest",
                shown(&origin.kind),
                shown(&origin.namespace),
                shown(&origin.name)
            ),
            None => "approved: apply the manifest again (or let the GitOps sync retry); each change is admitted with its own digest".into(),
        },
        ApprovalPhase::Rejected => {
            "rejected, and every member with it; to ask again: kubectl countersign request --again -f <manifest>".into()
        }
        ApprovalPhase::Expired => "expired; applying the changes again opens new requests".into(),
        _ => next_step(request),
    }
}

/// The request's name and phase, its target, requester, policy, digest, expiry and lock.
fn header_text(
    text: &mut String,
    approval: &DeploymentApproval,
    status: &DeploymentApprovalStatus,
    now: Timestamp,
    what: Shown,
) {
    let spec = &approval.spec;
    let name = approval.metadata.name.as_deref().unwrap_or_default();
    let namespace = approval.metadata.namespace.as_deref().unwrap_or_default();
    let _ = writeln!(
        text,
        "{}/{}: {}",
        shown(namespace),
        shown(name),
        phase(approval)
    );
    let operation = match what {
        Shown::Request => {
            let _ = writeln!(
                text,
                "  target:     {} ({})",
                target(approval),
                shown(&spec.target.api_version)
            );
            format!(", {:?}", spec.change.operation)
        }
        Shown::Set(members) => {
            let _ = writeln!(text, "  change set: {members} requests, reviewed as one");
            String::new()
        }
    };
    if let Some(set) = &spec.change_set {
        let _ = writeln!(
            text,
            "  change set: {} (reviewed as one: kubectl countersign status {} -n {})",
            shown(set),
            shown(set),
            shown(namespace)
        );
    }
    let _ = writeln!(
        text,
        "  requested:  by {} {} ago ({}){operation}",
        shown(&spec.change.requester.username),
        age(spec.change.requested_at.0, now),
        spec.change.requested_at.0,
    );
    if let Some(origin) = &spec.change.origin {
        let _ = writeln!(
            text,
            "  from sync:  {} {}/{}{}",
            shown(&origin.kind),
            shown(&origin.namespace),
            shown(&origin.name),
            origin
                .revision
                .as_deref()
                .map(|r| format!(" at {}", shown(r)))
                .unwrap_or_default()
        );
    }
    let _ = writeln!(text, "  policy:     {}", shown(&spec.policy.name));
    let _ = writeln!(text, "  digest:     {}", shown(&spec.change.digest));
    if let Some(expires) = &status.expires_at {
        let when = if expires.0 > now {
            format!("in {}", age(now, expires.0))
        } else {
            format!("{} ago", age(expires.0, now))
        };
        let _ = writeln!(text, "  expires:    {} ({when})", expires.0);
    }
    if let Some(holder) = &status.lock_holder {
        let _ = writeln!(text, "  lock:       held by {}", shown(holder));
    }
}

/// Each level: its state, approvals counted of required, approvers, who approved, who is
/// still required.
fn levels_text(
    text: &mut String,
    approval: &DeploymentApproval,
    status: &DeploymentApprovalStatus,
) {
    let spec = &approval.spec;
    let _ = writeln!(text, "\nLevels:");
    let open = open_level(approval).map(|(index, _)| index);
    for (index, level) in spec.policy.chain.levels.iter().enumerate() {
        let recorded = status.levels.get(index);
        let state = match (recorded, open) {
            (Some(l), _) if l.satisfied => "satisfied",
            (_, Some(o)) if o == index => "open",
            (_, Some(o)) if index > o => "waiting",
            _ => "-",
        };
        let required = recorded
            .map(|l| l.required)
            .unwrap_or_else(|| required_approvals(level));
        let approvals = recorded.map(|l| l.approvals).unwrap_or_default();
        let _ = writeln!(
            text,
            "  {}. {} [{state}] {approvals} of {required}",
            index + 1,
            shown(&level.name)
        );
        let approvers: Vec<String> = level
            .approvers
            .iter()
            .map(|a| {
                let label = shown(&approver_label(a));
                if a.required {
                    format!("{label} (required)")
                } else {
                    label
                }
            })
            .collect();
        let _ = writeln!(text, "     approvers:   {}", approvers.join(", "));
        if let Some(l) = recorded {
            if !l.approved_by.is_empty() {
                let _ = writeln!(text, "     approved by: {}", shown_list(&l.approved_by));
            }
            if !l.missing_required.is_empty() && !l.satisfied {
                let _ = writeln!(
                    text,
                    "     missing:     {}",
                    shown_list(&l.missing_required)
                );
            }
        }
    }
}

/// The reviews in the order they were given.
fn reviews_text(text: &mut String, approval: &DeploymentApproval) {
    let spec = &approval.spec;
    if !spec.reviews.is_empty() {
        let _ = writeln!(text, "\nReviews:");
        for review in &spec.reviews {
            let _ = writeln!(
                text,
                "  {} {:?} by {}{}",
                review.time.0,
                review.decision,
                shown(&review.user),
                review
                    .comment
                    .as_ref()
                    .map(|c| format!(": \"{}\"", shown(c)))
                    .unwrap_or_default()
            );
        }
    }
}

/// Each notification sent or still being tried.
fn notifications_text(text: &mut String, status: &DeploymentApprovalStatus) {
    if !status.notifications.is_empty() {
        let _ = writeln!(text, "\nNotifications:");
        for notice in &status.notifications {
            let state = if notice.delivered {
                "delivered".to_string()
            } else {
                format!(
                    "not delivered after {} attempt(s){}",
                    notice.attempts,
                    notice
                        .last_error
                        .as_ref()
                        .map(|e| format!(": {}", shown(e)))
                        .unwrap_or_default()
                )
            };
            let _ = writeln!(
                text,
                "  {} ({}, {}): {state}",
                shown(&notice.sink),
                shown(&notice.level),
                shown(&notice.event)
            );
        }
    }
}

/// The rollout once admitted, and the deploy token if one was issued.
fn rollout_text(text: &mut String, status: &DeploymentApprovalStatus) {
    if let Some(rollout) = &status.rollout {
        let _ = writeln!(text, "\nRollout:");
        if let (Some(at), Some(by)) = (&rollout.admitted_at, &rollout.admitted_by) {
            let _ = writeln!(text, "  admitted {} for {}", at.0, shown(&by.username));
        }
        if let Some(message) = &rollout.message {
            let _ = writeln!(text, "  {}", shown(message));
        }
    }
    if let Some(token) = &status.deploy_token {
        let state = match &token.revoked_at {
            Some(at) => format!("revoked at {}", at.0),
            None => format!("expires at {}", token.expires_at.0),
        };
        let _ = writeln!(
            text,
            "\nDeploy token: Secret {} ({state})",
            shown(&token.secret_name)
        );
    }
}

fn shown_list(items: &[String]) -> String {
    items
        .iter()
        .map(|i| shown(i))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The change, as an approver must read it: whether the summary is countersign's own,
/// every security-relevant change with its values, the images, then every other change.
fn change_text(text: &mut String, approval: &DeploymentApproval) {
    let summary = &approval.spec.change.summary;
    let _ = writeln!(text, "\nChange: {}", inert::bounded(&summary.text, 1000));
    verification_text(text, approval, "  ");
    let risky: Vec<_> = summary.security_relevant().collect();
    if !risky.is_empty() {
        let _ = writeln!(text, "  Security-relevant (read these first):");
        for change in risky {
            let _ = writeln!(
                text,
                "    ! {:<16} {}: {} → {}",
                change.risk.map(|r| r.label()).unwrap_or_default(),
                shown(&change.path),
                value(&change.before),
                value(&change.after)
            );
        }
    }
    if !summary.images.is_empty() {
        let _ = writeln!(text, "  Images:");
        for image in &summary.images {
            let _ = writeln!(
                text,
                "    {}: {} → {}",
                shown(&image.container),
                shown(image.before.as_deref().unwrap_or("(none)")),
                shown(image.after.as_deref().unwrap_or("(removed)"))
            );
        }
    }
    let plain: Vec<_> = summary
        .changes
        .iter()
        .filter(|c| c.risk.is_none() && !c.path.ends_with("/image"))
        .collect();
    if !plain.is_empty() {
        let _ = writeln!(text, "  Other changes:");
        for change in plain {
            let _ = writeln!(
                text,
                "    {}: {} → {}",
                shown(&change.path),
                value(&change.before),
                value(&change.after)
            );
        }
    }
    if summary.changes.is_empty() {
        for path in &summary.changed_paths {
            let _ = writeln!(text, "  changed {}", shown(path));
        }
    }
    if summary.unlisted > 0 {
        let _ = writeln!(
            text,
            "  {} more change(s) are not listed (a request lists at most {}): inspect the change itself",
            summary.unlisted,
            crate::core::change::summary::MAX_LISTED_CHANGES
        );
    }
}

/// Whether the summary is countersign's own, when it is not (or not checked yet).
fn verification_text(text: &mut String, approval: &DeploymentApproval, indent: &str) {
    match summary_verified(approval) {
        Some(false) => {
            let _ = writeln!(
                text,
                "{indent}!! {UNVERIFIED_MARK}: countersign did not write this summary; what follows may not be what the change does"
            );
        }
        None => {
            let _ = writeln!(
                text,
                "{indent}(countersign has not checked this summary yet; look again in a moment)"
            );
        }
        Some(true) => {}
    }
}

/// A changed field's value, or `(none)`.
fn value(v: &Option<String>) -> String {
    v.as_deref().map_or("(none)".to_string(), shown)
}

/// What happens next, in one sentence.
fn next_step(approval: &DeploymentApproval) -> String {
    let name = approval.metadata.name.as_deref().unwrap_or_default();
    let namespace = approval.metadata.namespace.as_deref().unwrap_or_default();
    match phase(approval) {
        ApprovalPhase::Pending if approval.status.is_none() => {
            "countersign has not looked at this request yet".into()
        }
        ApprovalPhase::Pending => match &approval.spec.change_set {
            Some(set) => format!(
                "waiting for {} on change set {}, which is reviewed as one: kubectl countersign approve {} -n {namespace}",
                waiting_for(approval),
                shown(set),
                shown(set)
            ),
            None => format!(
                "waiting for {}: kubectl countersign approve {name} -n {namespace}",
                waiting_for(approval)
            ),
        },
        ApprovalPhase::Approved => match &approval.spec.change.origin {
            Some(origin) => format!(
                "approved: countersign asks {} {}/{} to apply it again (with serve --gitops), and it is admitted",
                shown(&origin.kind),
                shown(&origin.namespace),
                shown(&origin.name)
            ),
            None => {
                "approved: apply the change again (or let the GitOps sync retry) and it is admitted"
                    .into()
            }
        },
        ApprovalPhase::Deploying => "admitted; countersign is watching the rollout".into(),
        ApprovalPhase::Deployed => "deployed; nothing left to do".into(),
        ApprovalPhase::Rejected => {
            "rejected; to ask again: kubectl countersign request --again -f <manifest>".into()
        }
        ApprovalPhase::Expired => "expired; applying the change again opens a new request".into(),
        ApprovalPhase::Failed => "the rollout failed; the lock is released".into(),
    }
}

/// The audit trail as a timeline, oldest first: time, action, actor, what, why.
pub fn timeline(entries: &[AuditEntry]) -> String {
    let rows: Vec<Vec<String>> = sorted_entries(entries)
        .iter()
        .map(|entry| {
            let spec = &entry.spec;
            let about = match &spec.approval {
                Some(approval) => format!("{}/{} ({approval})", spec.target.kind, spec.target.name),
                None => format!("{}/{}", spec.target.kind, spec.target.name),
            };
            vec![
                spec.time.0.to_string(),
                format!("{:?}", spec.action),
                shown(&spec.actor.username),
                shown(&about),
                inert::bounded(spec.reason.as_deref().unwrap_or_default(), 1000),
            ]
        })
        .collect();
    table(&["TIME", "ACTION", "ACTOR", "ABOUT", "REASON"], &rows)
}

/// Entries oldest first. Times have whole seconds, so steps of one second are in the order
/// a request goes through them (its actions are declared in that order), then by name.
pub fn sorted_entries(entries: &[AuditEntry]) -> Vec<AuditEntry> {
    let mut sorted = entries.to_vec();
    sorted.sort_by(|a, b| {
        a.spec
            .time
            .0
            .cmp(&b.spec.time.0)
            .then_with(|| (a.spec.action as u8).cmp(&(b.spec.action as u8)))
            .then_with(|| a.metadata.name.cmp(&b.metadata.name))
    });
    sorted
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::DeploymentApprovalStatus;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use serde_json::json;

    const NOW: &str = "2026-11-24T12:00:00Z";

    fn approval(status: Option<serde_json::Value>) -> DeploymentApproval {
        let mut object = json!({
            "apiVersion": "countersign.dev/v1alpha1", "kind": "DeploymentApproval",
            "metadata": { "name": "web-7f3a", "namespace": "shop" },
            "spec": {
                "target": { "apiVersion": "apps/v1", "kind": "Deployment", "name": "web" },
                "change": {
                    "digest": "sha256:00", "operation": "UPDATE",
                    "requestedAt": "2026-11-24T11:30:00Z",
                    "requester": { "username": "dave", "groups": ["developers"] },
                    "summary": { "text": "image web: nginx:1.27 → nginx:1.28",
                        "images": [{ "container": "web", "before": "nginx:1.27", "after": "nginx:1.28" }],
                        "changedPaths": ["/spec/template/spec/containers/0/image"] },
                },
                "policy": { "name": "prod", "chain": { "levels": [
                    { "name": "leads", "minApprovals": 2, "approvers": [
                        { "group": "team-leads" }, { "user": "carol", "required": true } ] },
                    { "name": "sre", "approvers": [{ "group": "sre" }] },
                ] } },
                "reviews": [{ "user": "alice", "groups": ["team-leads"], "decision": "Approve",
                    "comment": "LGTM", "time": "2026-11-24T11:40:00Z" }],
            },
        });
        if let Some(status) = status {
            object["status"] = status;
        }
        serde_json::from_value(object).expect("an approval")
    }

    fn pending() -> serde_json::Value {
        json!({ "phase": "Pending", "currentLevel": 1, "expiresAt": "2026-11-25T11:30:00Z",
            "levels": [
                { "name": "leads", "required": 2, "approvals": 1, "satisfied": false,
                  "approvedBy": ["alice"], "missingRequired": ["carol"] },
                { "name": "sre", "required": 1, "approvals": 0, "satisfied": false },
            ] })
    }

    #[test]
    fn the_list_row_says_where_a_request_stands_and_for_whom_it_waits() {
        let now: Timestamp = NOW.parse().expect("time");
        let cases: &[(&str, Option<serde_json::Value>, &str, &str)] = &[
            ("not seen yet", None, "-", "countersign"),
            ("pending at leads", Some(pending()), "leads 1/2", "carol"),
            (
                "a level with one more of anyone",
                Some(json!({ "phase": "Pending", "currentLevel": 2, "levels": [
                    { "name": "leads", "required": 2, "approvals": 2, "satisfied": true },
                    { "name": "sre", "required": 1, "approvals": 0, "satisfied": false } ] })),
                "sre 0/1",
                "1 of group:sre",
            ),
            (
                "approved",
                Some(json!({ "phase": "Approved" })),
                "-",
                "the change to be applied",
            ),
            ("deployed", Some(json!({ "phase": "Deployed" })), "-", "-"),
            (
                "a current level past the end",
                Some(json!({ "phase": "Pending", "currentLevel": 9, "levels": [] })),
                "-",
                "countersign",
            ),
            (
                "level zero",
                Some(json!({ "phase": "Pending", "currentLevel": 0 })),
                "-",
                "countersign",
            ),
        ];
        for (what, status, level, waiting) in cases {
            let approval = approval(status.clone());
            let row = list_row(&approval, true, now);
            assert_eq!(row[0], "shop", "{what}");
            assert_eq!(row[1], "web-7f3a", "{what}");
            assert_eq!(row[2], "Deployment/web", "{what}");
            assert_eq!(row[5], *level, "{what}");
            assert_eq!(row[6], *waiting, "{what}");
            assert_eq!(row[7], "30m", "{what}");
        }
        // Both a required approver and more of the others.
        let mut both = pending();
        both["levels"][0]["approvals"] = json!(0);
        both["levels"][0]["approvedBy"] = json!([]);
        assert_eq!(
            waiting_for(&approval(Some(both))),
            "carol; 1 of group:team-leads"
        );
    }

    #[test]
    fn ages_read_like_kubectl() {
        let now: Timestamp = NOW.parse().expect("time");
        for (seconds, shown) in [
            (5, "5s"),
            (119, "119s"),
            (600, "10m"),
            (7200, "2h"),
            (200_000, "2d"),
        ] {
            let since = now - jiff::SignedDuration::from_secs(seconds);
            assert_eq!(age(since, now), shown);
        }
        // A clock behind the request's is not a negative age.
        assert_eq!(age(now + jiff::SignedDuration::from_secs(30), now), "0s");
    }

    #[test]
    fn the_status_reads_top_to_bottom() {
        let now: Timestamp = NOW.parse().expect("time");
        let text = status_text(&approval(Some(pending())), now);
        for expected in [
            "shop/web-7f3a: Pending",
            "requested:  by dave 30m ago",
            "image web: nginx:1.27 → nginx:1.28",
            "changed /spec/template/spec/containers/0/image",
            "1. leads [open] 1 of 2",
            "approvers:   group:team-leads, carol (required)",
            "approved by: alice",
            "missing:     carol",
            "2. sre [waiting] 0 of 1",
            "Approve by alice: \"LGTM\"",
            "expires:    2026-11-25T11:30:00Z (in 23h)",
            "Next: waiting for carol: kubectl countersign approve web-7f3a -n shop",
        ] {
            assert!(text.contains(expected), "{expected:?} in:\n{text}");
        }
        let unseen = status_text(&approval(None), now);
        assert!(unseen.contains("1. leads [-] 0 of 2"), "{unseen}");
        assert!(
            unseen.contains("has not looked at this request yet"),
            "{unseen}"
        );
        let _ = DeploymentApprovalStatus::default();

        // A request a GitOps sync opened says where from, hostile text inert.
        let mut synced = approval(Some(json!({ "phase": "Approved" })));
        synced.spec.change.origin = Some(crate::api::ChangeOrigin {
            api_version: "kustomize.toolkit.fluxcd.io/v1".into(),
            kind: "Kustomization".into(),
            namespace: "flux-system".into(),
            name: "apps".into(),
            revision: Some("main@sha1:abc\u{1b}[2J".into()),
        });
        let text = status_text(&synced, now);
        assert!(
            text.contains("from sync:  Kustomization flux-system/apps at main@sha1:abc"),
            "{text}"
        );
        assert!(!text.contains('\u{1b}'), "raw escape in {text:?}");
        assert!(
            text.contains(
                "Next: approved: countersign asks Kustomization flux-system/apps to apply it again"
            ),
            "{text}"
        );
    }

    #[test]
    fn tables_pad_columns_to_their_widest_cell() {
        let text = table(
            &["NAME", "AGE"],
            &[
                vec!["web-7f3a".into(), "5s".into()],
                vec!["x".into(), "10m".into()],
            ],
        );
        assert_eq!(text, "NAME       AGE\nweb-7f3a   5s\nx          10m\n");
    }

    #[test]
    fn the_timeline_is_oldest_first() {
        let entry = |name: &str, time: &str, action: &str| -> AuditEntry {
            serde_json::from_value(json!({
                "apiVersion": "countersign.dev/v1alpha1", "kind": "AuditEntry",
                "metadata": { "name": name, "namespace": "countersign-system" },
                "spec": { "time": time, "action": action,
                    "actor": { "username": "alice" },
                    "target": { "apiVersion": "apps/v1", "kind": "Deployment", "namespace": "shop", "name": "web" },
                    "approval": "web-7f3a" },
            }))
            .expect("an entry")
        };
        let text = timeline(&[
            entry("b", "2026-11-24T11:40:00Z", "Approved"),
            entry("a", "2026-11-24T11:30:00Z", "Requested"),
        ]);
        let requested = text.find("Requested").expect("requested");
        let approved = text.find("Approved").expect("approved");
        assert!(requested < approved, "{text}");
        // In one second: in the order a request goes through its steps, whatever the names.
        let text = timeline(&[
            entry("web-approved", "2026-11-24T11:40:00Z", "Approved"),
            entry("web-level-1", "2026-11-24T11:40:00Z", "LevelSatisfied"),
            entry("web-requested", "2026-11-24T11:40:00Z", "Requested"),
            entry("web-review-1", "2026-11-24T11:40:00Z", "ReviewRecorded"),
        ]);
        let order: Vec<usize> = ["Requested", "ReviewRecorded", "LevelSatisfied", "Approved"]
            .iter()
            .map(|a| text.find(a).expect("an action"))
            .collect();
        assert!(order.windows(2).all(|w| w[0] < w[1]), "{text}");
        assert!(text.contains("Deployment/web (web-7f3a)"), "{text}");
    }

    /// A request in which everything that comes from outside is `hostile`.
    fn hostile_approval(hostile: &str) -> DeploymentApproval {
        let mut approval = approval(Some(pending()));
        let spec = &mut approval.spec;
        spec.change.summary.text = hostile.into();
        spec.change.summary.images[0].after = Some(hostile.into());
        spec.change.summary.changes = vec![crate::api::FieldChange {
            path: hostile.into(),
            risk: Some(crate::api::Risk::Privilege),
            before: Some(hostile.into()),
            after: Some(hostile.into()),
        }];
        spec.change.summary.risks = vec![crate::api::Risk::Privilege];
        spec.change.requester.username = hostile.into();
        spec.policy.name = hostile.into();
        spec.policy.chain.levels[0].name = hostile.into();
        spec.reviews[0].comment = Some(hostile.into());
        spec.reviews[0].user = hostile.into();
        let status = approval.status.as_mut().expect("a status");
        status.levels[0].approved_by = vec![hostile.into()];
        status.levels[0].missing_required = vec![hostile.into()];
        status.lock_holder = Some(hostile.into());
        status.notifications = vec![crate::api::NotificationStatus {
            sink: hostile.into(),
            level: hostile.into(),
            event: hostile.into(),
            last_error: Some(hostile.into()),
            ..Default::default()
        }];
        status.rollout = Some(crate::api::RolloutStatus {
            message: Some(hostile.into()),
            ..Default::default()
        });
        approval
    }

    #[test]
    fn hostile_text_is_inert_in_status_list_and_timeline() {
        let now: Timestamp = NOW.parse().expect("time");
        let honest_lines = status_text(&hostile_approval("x"), now).lines().count();
        for (what, hostile) in crate::core::test_builders::hostile_corpus() {
            let approval = hostile_approval(&hostile);
            let status = status_text(&approval, now);
            assert!(
                !status.chars().any(|c| c != '\n' && inert::is_unsafe(c)),
                "{what}: {status}"
            );
            // No line of its own: as many lines as with honest text.
            assert_eq!(status.lines().count(), honest_lines, "{what}: {status}");
            assert!(status.len() < 64 * 1024, "{what}: bounded");
            let row = list_row(&approval, true, now);
            let table = table(&list_header(true), &[row]);
            assert_eq!(table.lines().count(), 2, "{what}: {table}");
            assert!(!table.chars().any(|c| c != '\n' && inert::is_unsafe(c)));
            let entry: AuditEntry = serde_json::from_value(json!({
                "apiVersion": "countersign.dev/v1alpha1", "kind": "AuditEntry",
                "metadata": { "name": "e", "namespace": "countersign-system" },
                "spec": { "time": NOW, "action": "ReviewRecorded",
                    "actor": { "username": hostile },
                    "target": { "apiVersion": "apps/v1", "kind": "Deployment", "name": hostile },
                    "approval": hostile, "reason": hostile },
            }))
            .expect("an entry");
            let timeline = timeline(&[entry]);
            assert_eq!(timeline.lines().count(), 2, "{what}: {timeline}");
            assert!(!timeline.chars().any(|c| c != '\n' && inert::is_unsafe(c)));
        }
    }

    #[test]
    fn an_unverified_summary_is_said_so_first() {
        let now: Timestamp = NOW.parse().expect("time");
        let mut status = pending();
        status["conditions"] = json!([{ "type": "SummaryVerified", "status": "False",
            "reason": "SealMismatch", "message": "m", "lastTransitionTime": NOW }]);
        let forged = approval(Some(status));
        let text = status_text(&forged, now);
        assert!(text.contains(UNVERIFIED_MARK), "{text}");
        assert!(change_cell(&forged).starts_with("UNVERIFIED SUMMARY"));
        let mut status = pending();
        status["conditions"] = json!([{ "type": "SummaryVerified", "status": "True",
            "reason": "Sealed", "message": "m", "lastTransitionTime": NOW }]);
        let honest = approval(Some(status));
        assert!(!status_text(&honest, now).contains(UNVERIFIED_MARK));
        assert!(!change_cell(&honest).contains("UNVERIFIED"));
    }

    #[test]
    fn every_kind_of_security_relevant_change_is_in_the_list_row() {
        let mut approval = approval(Some(pending()));
        approval.spec.change.summary.risks = vec![
            crate::api::Risk::Privilege,
            crate::api::Risk::HostNamespaces,
            crate::api::Risk::HostPath,
            crate::api::Risk::Volumes,
            crate::api::Risk::Command,
            crate::api::Risk::InitContainer,
        ];
        let cell = change_cell(&approval);
        for label in [
            "privilege",
            "host namespaces",
            "host path",
            "volumes",
            "command and args",
            "init containers",
        ] {
            assert!(cell.contains(label), "{label} in {cell}");
        }
    }

    /// Set `release-1a` of `web-7f3a` (the request of `approval`) and `api-2b`, both
    /// members with `status` (the set's too, as the operator mirrors it).
    fn set_and_members(status: Option<serde_json::Value>) -> (ChangeSet, Vec<DeploymentApproval>) {
        let mut web = approval(status.clone());
        web.spec.change_set = Some("release-1a".into());
        web.spec.reviews.clear();
        let mut api = web.clone();
        api.metadata.name = Some("api-2b".into());
        api.spec.target.name = "api".into();
        api.spec.change.digest = "sha256:01".into();
        api.spec.change.summary.text = "image api: nginx:1.27 → nginx:1.28".into();
        let members = [
            ("web-7f3a".to_string(), &web.spec),
            ("api-2b".to_string(), &api.spec),
        ];
        let requester = web.spec.change.requester.clone();
        let at = web.spec.change.requested_at.0;
        let spec = crate::core::approval::set::set_spec(&members, &requester, at).expect("a set");
        let mut set = ChangeSet::new("release-1a", spec);
        set.metadata.namespace = Some("shop".into());
        set.spec.reviews = approval(None).spec.reviews;
        set.status = status.map(|s| serde_json::from_value(s).expect("a status"));
        (set, vec![web, api])
    }

    #[test]
    fn a_set_is_listed_above_its_members_and_waits_for_its_approvers() {
        let now: Timestamp = NOW.parse().expect("time");
        let (set, members) = set_and_members(Some(pending()));
        let mut plain = approval(Some(pending()));
        plain.metadata.name = Some("db-9".into());
        plain.spec.change.requested_at = Time("2026-11-24T11:00:00Z".parse().expect("time"));
        let mut done = approval(Some(json!({ "phase": "Deployed" })));
        done.metadata.name = Some("old-1".into());
        // Names the set, but the set does not list it with this digest.
        let mut impostor = members[0].clone();
        impostor.metadata.name = Some("web-ffff".into());
        impostor.spec.change.digest = "sha256:ff".into();
        let mut requests = members.clone();
        requests.extend([plain, done.clone(), impostor]);
        let listed = listing(requests.clone(), vec![set.clone()], false);
        let rows = listing_rows(&listed, false, now);
        let cells = |row: &Vec<String>| -> (String, String, String, String) {
            (
                row[0].clone(),
                row[1].clone(),
                row[4].clone(),
                row[5].clone(),
            )
        };
        let shown: Vec<_> = rows.iter().map(cells).collect();
        let expected = [
            ("db-9", "Deployment/web", "leads 1/2", "carol"),
            ("release-1a", "set of 2", "leads 1/2", "carol"),
            ("├ web-7f3a", "Deployment/web", "-", "the set"),
            ("└ api-2b", "Deployment/api", "-", "the set"),
            ("web-ffff", "Deployment/web", "-", "change set release-1a"),
        ];
        let expected: Vec<_> = expected
            .iter()
            .map(|(a, b, c, d)| (a.to_string(), b.to_string(), c.to_string(), d.to_string()))
            .collect();
        assert_eq!(shown, expected);
        // The set's change cell names every member's images.
        assert!(rows[1][2].contains("web → nginx:1.28"), "{:?}", rows[1]);
        // JSON lists the set, then its members.
        let Listed::Set { .. } = &listed[1] else {
            panic!("the set second: {listed:?}");
        };
        let objects = listed[1].objects().expect("objects");
        assert_eq!(objects.len(), 3);
        assert_eq!(objects[0]["kind"], "ChangeSet");
        assert_eq!(objects[1]["metadata"]["name"], "web-7f3a");

        // Approved: the set waits for its members to be applied, and is over once they are.
        let approved = json!({ "phase": "Approved" });
        let (set, mut members) = set_and_members(Some(approved.clone()));
        members[1].status =
            Some(serde_json::from_value(json!({ "phase": "Deploying" })).expect("status"));
        assert_eq!(set_waiting_for(&set, &members), "1 change to be applied");
        let rows = listing_rows(
            &listing(members.clone(), vec![set.clone()], false),
            false,
            now,
        );
        assert_eq!(rows[2][5], "the rollout", "{rows:?}");
        for member in &mut members {
            member.status =
                Some(serde_json::from_value(json!({ "phase": "Deployed" })).expect("status"));
        }
        assert!(listing(members.clone(), vec![set.clone()], false).is_empty());
        let everything = listing(members, vec![set], true);
        assert_eq!(everything.len(), 1, "{everything:?}");
    }

    #[test]
    fn the_status_of_a_set_shows_each_member_and_who_approves_the_set() {
        let now: Timestamp = NOW.parse().expect("time");
        let (set, members) = set_and_members(Some(pending()));
        let found: Vec<Option<DeploymentApproval>> = members.iter().cloned().map(Some).collect();
        let text = set_status_text(&set, &found, now);
        for expected in [
            "shop/release-1a: Pending",
            "change set: 2 requests, reviewed as one",
            "requested:  by dave 30m ago (2026-11-24T11:30:00Z)\n",
            "Change: 2 changes: image web: nginx:1.27 → nginx:1.28; image api: nginx:1.27 → nginx:1.28",
            "Members (2 Pending; each admitted only with its own digest):",
            "  1. web-7f3a: Deployment/web, Pending\n     digest: sha256:00\n     change: image web: nginx:1.27 → nginx:1.28",
            "  2. api-2b: Deployment/api, Pending\n     digest: sha256:01",
            "1. leads [open] 1 of 2",
            "Approve by alice: \"LGTM\"",
            "Next: waiting for carol: kubectl countersign approve release-1a -n shop",
        ] {
            assert!(text.contains(expected), "{expected:?} in:\n{text}");
        }
        assert!(!text.contains("!!"), "{text}");
        // A member gone, or one that does not match the listing, is said so.
        let mut changed = members[1].clone();
        changed.spec.change.digest = "sha256:ff".into();
        let text = set_status_text(&set, &[None, Some(changed)], now);
        assert!(text.contains("Members (1 not found, 1 Pending;"), "{text}");
        assert!(text.contains("!! the request does not exist"), "{text}");
        assert!(
            text.contains("!! this request does not match the set's listing"),
            "{text}"
        );
        // Approved: each member is admitted as it is applied.
        let (set, members) = set_and_members(Some(json!({ "phase": "Approved" })));
        let found: Vec<_> = members.into_iter().map(Some).collect();
        let text = set_status_text(&set, &found, now);
        assert!(
            text.contains("Next: approved: apply the manifest again (or let the GitOps sync retry); each change is admitted with its own digest"),
            "{text}"
        );
        // Then its members' rollouts say what comes next.
        let (set, mut members) = set_and_members(Some(json!({ "phase": "Approved" })));
        let mut found = |phases: [&str; 2]| {
            for (member, phase) in members.iter_mut().zip(phases) {
                member.status =
                    Some(serde_json::from_value(json!({ "phase": phase })).expect("a status"));
            }
            let found: Vec<_> = members.iter().cloned().map(Some).collect();
            set_status_text(&set, &found, now)
        };
        let text = found(["Approved", "Deploying"]);
        assert!(
            text.contains("Next: approved: apply the manifest again"),
            "{text}"
        );
        let text = found(["Deployed", "Deploying"]);
        assert!(
            text.contains("Next: every change admitted; countersign is watching the rollouts"),
            "{text}"
        );
        let text = found(["Deployed", "Deployed"]);
        assert!(
            text.contains("Next: every change deployed; nothing left to do"),
            "{text}"
        );
    }

    #[test]
    fn a_member_says_its_reviews_go_to_its_set() {
        let now: Timestamp = NOW.parse().expect("time");
        let (_, members) = set_and_members(Some(pending()));
        let text = status_text(&members[0], now);
        for expected in [
            "change set: release-1a (reviewed as one: kubectl countersign status release-1a -n shop)",
            "Reviews: on change set release-1a (this request holds none of its own)",
            "Next: waiting for carol on change set release-1a, which is reviewed as one: kubectl countersign approve release-1a -n shop",
        ] {
            assert!(text.contains(expected), "{expected:?} in:\n{text}");
        }
    }

    #[test]
    fn hostile_text_is_inert_in_a_set_status_and_its_rows() {
        let now: Timestamp = NOW.parse().expect("time");
        let lines = |hostile: &str| {
            let (mut set, mut members) = set_and_members(Some(pending()));
            set.spec.change.summary.text = hostile.into();
            set.spec.change.requester.username = hostile.into();
            set.spec.members[0].target.name = hostile.into();
            set.spec.members[0].digest = hostile.into();
            set.spec.reviews[0].comment = Some(hostile.into());
            members[0] = hostile_approval(hostile);
            members[0].spec.change_set = Some(hostile.into());
            let found: Vec<_> = members.iter().cloned().map(Some).collect();
            let text = set_status_text(&set, &found, now);
            let rows = listing_rows(
                &[Listed::Set {
                    set: Box::new(set),
                    members,
                }],
                true,
                now,
            );
            (text, table(&list_header(true), &rows))
        };
        let (honest, _) = lines("x");
        for (what, hostile) in crate::core::test_builders::hostile_corpus() {
            let (text, table) = lines(&hostile);
            for shown in [&text, &table] {
                assert!(
                    !shown.chars().any(|c| c != '\n' && inert::is_unsafe(c)),
                    "{what}: {shown}"
                );
            }
            assert_eq!(
                text.lines().count(),
                honest.lines().count(),
                "{what}: {text}"
            );
            assert_eq!(table.lines().count(), 4, "{what}: {table}");
        }
    }
}
