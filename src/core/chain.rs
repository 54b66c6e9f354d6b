//! Approval-chain state (SPEC §4): which level is open, who counted, whether the request is
//! approved, rejected or expired — a pure function of the chain, the reviews and `now`.

use jiff::Timestamp;
use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, RoleBinding, Subject};

use crate::api::{
    ApprovalLevel, ApprovalPhase, ApprovalSettings, Approver, LevelStatus, Review, ReviewDecision,
    UserInfo, service_account_username,
};
use crate::core::windows::parse_duration;

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

impl ApprovalChain<'_> {
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

    /// Indices of the levels at which a person is eligible.
    fn eligible_levels(&self, user: &str, groups: &[String]) -> Vec<usize> {
        self.settings
            .levels
            .iter()
            .enumerate()
            .filter(|(_, level)| {
                level
                    .approvers
                    .iter()
                    .any(|e| self.entry_matches(e, user, groups))
            })
            .map(|(i, _)| i)
            .collect()
    }

    /// The state of the chain after `reviews` (in the order they were appended), at `now`.
    pub fn evaluate(&self, reviews: &[Review], now: Timestamp) -> ChainState {
        let levels = &self.settings.levels;
        let request_expiry = self
            .settings
            .request_ttl
            .as_deref()
            .and_then(|ttl| parse_duration(ttl).ok())
            .and_then(|ttl| self.requested_at.checked_add(ttl).ok());
        let mut state = ChainState {
            phase: ApprovalPhase::Pending,
            current_level: (!levels.is_empty()).then_some(0),
            levels: levels
                .iter()
                .map(|level| LevelStatus {
                    name: level.name.clone(),
                    required: required_approvals(level),
                    approvals: 0,
                    satisfied: false,
                    approved_by: Vec::new(),
                    missing_required: level
                        .approvers
                        .iter()
                        .filter(|a| a.required)
                        .map(approver_label)
                        .collect(),
                })
                .collect(),
            approved_by: Vec::new(),
            rejected_by: None,
            approved_at: None,
            expires_at: request_expiry,
            ignored: Vec::new(),
        };
        // Groups each counted approver approved through, per level, to re-check required entries.
        let mut counted: Vec<Vec<(String, Vec<String>)>> = vec![Vec::new(); levels.len()];

        for review in reviews {
            let time = review.time.0;
            let who = review.user.as_str();
            if matches!(state.phase, ApprovalPhase::Rejected) {
                state
                    .ignored
                    .push(format!("{who}: the request was already rejected"));
                continue;
            }
            if request_expiry.is_some_and(|expiry| time >= expiry) && state.approved_at.is_none() {
                state
                    .ignored
                    .push(format!("{who}: reviewed after the request expired"));
                continue;
            }
            if who == self.requester.username && !self.settings.allow_self_approval {
                state.ignored.push(format!(
                    "{who}: the requester cannot review their own change"
                ));
                continue;
            }
            let eligible = self.eligible_levels(who, &review.groups);
            if eligible.is_empty() {
                state
                    .ignored
                    .push(format!("{who}: not an approver of any level"));
                continue;
            }
            match review.decision {
                ReviewDecision::Reject => {
                    state.phase = ApprovalPhase::Rejected;
                    state.current_level = None;
                    state.rejected_by = Some((who.to_string(), review.comment.clone()));
                    state.expires_at = None;
                }
                ReviewDecision::Approve => {
                    let Some(current) = state.current_level else {
                        state
                            .ignored
                            .push(format!("{who}: every level is already satisfied"));
                        continue;
                    };
                    if state.approved_by.iter().any(|a| a == who) {
                        state
                            .ignored
                            .push(format!("{who}: already counted once for this request"));
                        continue;
                    }
                    if !eligible.contains(&current) {
                        let later = eligible.iter().find(|&&i| i > current);
                        state.ignored.push(match later {
                            Some(&i) => format!(
                                "{who}: level {}/{} {} is not open yet",
                                i + 1,
                                levels.len(),
                                levels[i].name
                            ),
                            None => format!(
                                "{who}: only eligible at an earlier, already satisfied level"
                            ),
                        });
                        continue;
                    }
                    state.approved_by.push(who.to_string());
                    counted[current].push((who.to_string(), review.groups.clone()));
                    self.update_level(
                        &mut state.levels[current],
                        &levels[current],
                        &counted[current],
                    );
                    if state.levels[current].satisfied {
                        if current + 1 < levels.len() {
                            state.current_level = Some(current + 1);
                        } else {
                            state.current_level = None;
                            state.phase = ApprovalPhase::Approved;
                            state.approved_at = Some(time);
                            state.expires_at = self
                                .settings
                                .approval_ttl
                                .as_deref()
                                .and_then(|ttl| parse_duration(ttl).ok())
                                .and_then(|ttl| time.checked_add(ttl).ok());
                        }
                    }
                }
            }
        }
        if matches!(
            state.phase,
            ApprovalPhase::Pending | ApprovalPhase::Approved
        ) && state.expires_at.is_some_and(|expiry| now >= expiry)
        {
            state.phase = ApprovalPhase::Expired;
            state.current_level = None;
        }
        state
    }

    fn update_level(
        &self,
        status: &mut LevelStatus,
        level: &ApprovalLevel,
        counted: &[(String, Vec<String>)],
    ) {
        status.approvals = counted.len() as u32;
        status.approved_by = counted.iter().map(|(user, _)| user.clone()).collect();
        status.missing_required = level
            .approvers
            .iter()
            .filter(|entry| entry.required)
            .filter(|entry| {
                !counted
                    .iter()
                    .any(|(user, groups)| self.entry_matches(entry, user, groups))
            })
            .map(approver_label)
            .collect();
        status.satisfied =
            status.missing_required.is_empty() && status.approvals >= status.required;
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

/// "level 2/2 sre: 1 of 2 approvals, waiting for bob (required)".
pub fn describe_progress(state: &ChainState) -> String {
    let total = state.levels.len();
    match state
        .current_level
        .and_then(|i| state.levels.get(i).map(|l| (i, l)))
    {
        Some((i, level)) => {
            let mut text = format!(
                "level {}/{total} {}: {} of {} approvals",
                i + 1,
                level.name,
                level.approvals,
                level.required
            );
            if !level.missing_required.is_empty() {
                let names: Vec<String> = level
                    .missing_required
                    .iter()
                    .map(|m| format!("{m} (required)"))
                    .collect();
                text.push_str(&format!(", waiting for {}", names.join(", ")));
            }
            text
        }
        None => format!("{total} of {total} levels satisfied"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ServiceAccountRef;
    use crate::core::test_builders::{cluster_role_ref, group, level, role_binding, user};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

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
            vec!["dev: the requester cannot review their own change".to_string()]
        );
        chain.allow_self_approval = true;
        assert_eq!(
            run(&chain, &[approve("dev", 1)], 10).phase,
            ApprovalPhase::Approved
        );
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
