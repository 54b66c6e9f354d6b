//! Policy validation (SPEC §3): refuse malformed or infeasible policies with a precise
//! message naming the field; warn about what cannot be checked.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::api::{
    ApprovalLevel, ApprovalPolicy, ApprovalPolicySpec, ApprovalPolicyStatus, ApprovalSettings,
    ChangeWindow, MAX_APPROVERS_PER_LEVEL, MAX_LEVELS,
};
use crate::core::approval::chain::{approver_label, named_person, required_approvals};
use crate::core::change::{BUILDING_BLOCK_KINDS, WORKLOAD_KINDS, pointer_segments};
use crate::core::policy::windows::{parse_civil, parse_clock, parse_duration, parse_zone};
use crate::core::rollout::token::{MAX_TOKEN_TTL, MIN_TOKEN_TTL};

/// Built-in kinds outside the core group, besides the workload kinds, that a policy may
/// name without their group by mistake.
const OTHER_GROUPED_KINDS: &[(&str, &str)] = &[("apps", "ReplicaSet")];

/// One problem, at a field path such as `spec.approval.levels[1].minApprovals`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// The verdict on a policy: refused when `errors` is non-empty.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PolicyValidation {
    pub errors: Vec<FieldError>,
    pub warnings: Vec<String>,
}

impl PolicyValidation {
    fn error(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.errors.push(FieldError {
            field: field.into(),
            message: message.into(),
        });
    }

    pub fn is_valid(&self) -> bool {
        self.errors.is_empty()
    }
}

/// What validating a chain cost, counted in steps that bound its time. The work-bound
/// tests read it, so a change that makes validation grow out of bounds again fails a test
/// rather than an admission (the project has no timed tests).
#[derive(Debug, Default)]
#[cfg_attr(not(test), allow(dead_code))]
struct ValidationWork {
    /// Arcs of the approval flow network examined by the maximum-flow search.
    flow_arc_scans: u64,
    /// Branches the counting-order search explored (at most [`MAX_ORDERS_CHECKED`]).
    order_branches: usize,
    /// People the counting-order search looked at or counted, over all its branches.
    order_person_scans: u64,
}

/// The admission answer of a policy validated so: refused with every error, or allowed
/// with its warnings.
pub fn admission_answer(name: &str, validation: PolicyValidation) -> crate::core::plan::Answer {
    use crate::core::plan::Answer;
    if !validation.errors.is_empty() {
        let errors: Vec<String> = validation.errors.iter().map(|e| e.to_string()).collect();
        return Answer::deny(format!(
            "ApprovalPolicy {name} is invalid: {}",
            errors.join("; ")
        ));
    }
    validation
        .warnings
        .into_iter()
        .fold(Answer::allow(), |answer, warning| answer.warn(warning))
}

/// Validate a policy spec.
pub fn validate_policy(spec: &ApprovalPolicySpec) -> PolicyValidation {
    validate_policy_measured(spec, &mut ValidationWork::default())
}

/// [`validate_policy`], adding what it cost to `work`.
fn validate_policy_measured(
    spec: &ApprovalPolicySpec,
    work: &mut ValidationWork,
) -> PolicyValidation {
    let mut v = PolicyValidation::default();
    for (i, kind) in spec.match_.kinds.iter().enumerate() {
        if kind.kind.is_empty() {
            v.error(format!("spec.match.kinds[{i}].kind"), "must not be empty");
        }
        // `{kind: Deployment}` is the core group's Deployment, which does not exist: the
        // entry would never match, silently.
        if kind.group.is_empty()
            && let Some((group, _)) = WORKLOAD_KINDS
                .iter()
                .chain(BUILDING_BLOCK_KINDS)
                .chain(OTHER_GROUPED_KINDS)
                .find(|(g, k)| !g.is_empty() && *k == kind.kind)
        {
            v.error(
                format!("spec.match.kinds[{i}]"),
                format!(
                    "kind {} is in group {group:?}; set group: {group}",
                    kind.kind
                ),
            );
        }
    }
    for (k, sink) in spec.audit_sinks.iter().enumerate() {
        check_sink_name(&format!("spec.auditSinks[{k}]"), sink, &mut v);
    }
    for (name, selector) in [
        ("namespaceSelector", &spec.match_.namespace_selector),
        ("objectSelector", &spec.match_.object_selector),
    ] {
        if let Some(selector) = selector {
            validate_selector(&format!("spec.match.{name}"), selector, &mut v);
        }
    }
    for (i, pointer) in spec.ignore_fields.iter().flatten().enumerate() {
        if pointer_segments(pointer).is_none() {
            v.error(
                format!("spec.ignoreFields[{i}]"),
                format!("{pointer:?} is not a JSON pointer (must start with / and escape ~ as ~0, / as ~1)"),
            );
        }
    }
    for (i, window) in spec.windows.iter().enumerate() {
        validate_window(&format!("spec.windows[{i}]"), window, &mut v);
    }
    if let Some(checks) = &spec.checks {
        for (i, registry) in checks.allowed_registries.iter().enumerate() {
            if registry.trim().is_empty() {
                v.error(
                    format!("spec.checks.allowedRegistries[{i}]"),
                    "must not be empty",
                );
            }
        }
    }
    if let Some(chain) = &spec.approval {
        validate_chain("spec.approval", chain, &mut v, work);
    }
    if let Some(grant) = &spec.grant
        && let Some(ttl) = &grant.ttl
    {
        match parse_duration(ttl) {
            Err(e) => v.error("spec.grant.ttl", e),
            // Refused rather than silently raised: the policy says what the token lasts.
            Ok(duration) if duration < MIN_TOKEN_TTL => v.error(
                "spec.grant.ttl",
                format!(
                    "{ttl:?} is shorter than 10m, the shortest token the TokenRequest API issues"
                ),
            ),
            Ok(duration) if duration > MAX_TOKEN_TTL => v.error(
                "spec.grant.ttl",
                format!(
                    "{ttl:?} is longer than 2^32 seconds, the longest token the TokenRequest API issues"
                ),
            ),
            Ok(_) => {}
        }
    }
    if let Some(break_glass) = &spec.break_glass
        && break_glass.groups.is_empty()
    {
        v.error("spec.breakGlass.groups", "must name at least one group");
    }
    let has_checks = spec.checks.as_ref().is_some_and(|c| !c.kinds().is_empty());
    if spec.approval.is_none() && spec.windows.is_empty() && !has_checks {
        v.warnings
            .push("the policy has no approval chain, windows or checks: it gates nothing".into());
    }
    v
}

fn validate_selector(field: &str, selector: &LabelSelector, v: &mut PolicyValidation) {
    for (i, requirement) in selector.match_expressions.iter().flatten().enumerate() {
        let at = format!("{field}.matchExpressions[{i}]");
        let values = requirement.values.as_deref().unwrap_or_default();
        match requirement.operator.as_str() {
            "In" | "NotIn" if values.is_empty() => v.error(
                format!("{at}.values"),
                format!("operator {} needs at least one value", requirement.operator),
            ),
            "Exists" | "DoesNotExist" if !values.is_empty() => v.error(
                format!("{at}.values"),
                format!("operator {} takes no values", requirement.operator),
            ),
            "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
            other => v.error(
                format!("{at}.operator"),
                format!("{other:?} is not one of In, NotIn, Exists, DoesNotExist"),
            ),
        }
    }
}

fn validate_window(field: &str, window: &ChangeWindow, v: &mut PolicyValidation) {
    if window.name.is_empty() {
        v.error(format!("{field}.name"), "must not be empty");
    }
    let zone = parse_zone(&window.time_zone);
    if let Err(e) = &zone {
        v.error(format!("{field}.timeZone"), e.clone());
    }
    match (&window.weekly, &window.absolute) {
        (Some(weekly), None) => {
            if weekly.days.is_empty() {
                v.error(format!("{field}.weekly.days"), "must name at least one day");
            }
            let start = parse_clock(&weekly.start);
            let end = parse_clock(&weekly.end);
            if let Err(e) = &start {
                v.error(format!("{field}.weekly.start"), e.clone());
            }
            if let Err(e) = &end {
                v.error(format!("{field}.weekly.end"), e.clone());
            }
            if let (Ok(start), Ok(end)) = (start, end) {
                if start == 1440 {
                    v.error(
                        format!("{field}.weekly.start"),
                        "24:00 is only allowed as an end",
                    );
                } else if start == end {
                    v.error(
                        format!("{field}.weekly"),
                        "start and end are equal: the window would be empty",
                    );
                }
            }
        }
        (None, Some(absolute)) => {
            let start = parse_civil(&absolute.start);
            let end = parse_civil(&absolute.end);
            if let Err(e) = &start {
                v.error(format!("{field}.absolute.start"), e.clone());
            }
            if let Err(e) = &end {
                v.error(format!("{field}.absolute.end"), e.clone());
            }
            if let (Ok(start), Ok(end)) = (start, end)
                && start >= end
            {
                v.error(format!("{field}.absolute"), "start must be before end");
            }
        }
        (Some(_), Some(_)) => v.error(field, "set exactly one of weekly or absolute, not both"),
        (None, None) => v.error(field, "set exactly one of weekly or absolute"),
    }
}

/// Validate the chain snapshot a DeploymentApproval carries (`spec.policy.chain`) by the
/// rules its policy had to pass: an approval whose snapshot a policy could not have (a TTL
/// that never expires, an infeasible level) is unusable.
pub fn validate_chain_snapshot(chain: &ApprovalSettings) -> PolicyValidation {
    let mut v = PolicyValidation::default();
    validate_chain(
        "spec.policy.chain",
        chain,
        &mut v,
        &mut ValidationWork::default(),
    );
    v
}

/// A sink names a Secret in the install namespace: a DNS subdomain (RFC 1123), or it could
/// never be found.
fn check_sink_name(at: &str, name: &str, v: &mut PolicyValidation) {
    let valid = !name.is_empty()
        && name.len() <= 253
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && name
            .split('.')
            .all(|part| !part.is_empty() && !part.starts_with('-') && !part.ends_with('-'));
    if !valid {
        v.error(
            at,
            format!(
                "{name:?} is not a Secret name (lowercase letters, digits, '-' and '.'); a sink names the Secret holding its URL in the install namespace"
            ),
        );
    }
}

/// Validate a chain found at field path `root` (`spec.approval` in a policy). The chain's
/// size is checked first ([`MAX_LEVELS`], [`MAX_APPROVERS_PER_LEVEL`]): it bounds the work
/// of the checks across levels that follow.
fn validate_chain(
    root: &str,
    chain: &ApprovalSettings,
    v: &mut PolicyValidation,
    work: &mut ValidationWork,
) {
    for (name, value) in [
        ("requestTTL", &chain.request_ttl),
        ("approvalTTL", &chain.approval_ttl),
        ("rolloutTimeout", &chain.rollout_timeout),
    ] {
        if let Some(text) = value
            && let Err(e) = parse_duration(text)
        {
            v.error(format!("{root}.{name}"), e);
        }
    }
    if chain.levels.is_empty() {
        v.error(
            format!("{root}.levels"),
            "an approval chain needs at least one level",
        );
    }
    if chain.levels.len() > MAX_LEVELS {
        v.error(
            format!("{root}.levels"),
            format!(
                "{} levels; a chain has at most {MAX_LEVELS}",
                chain.levels.len()
            ),
        );
        return;
    }
    for (k, sink) in chain.requester_sinks.iter().enumerate() {
        check_sink_name(&format!("{root}.requesterSinks[{k}]"), sink, v);
    }
    let mut level_names = HashSet::new();
    for (i, level) in chain.levels.iter().enumerate() {
        let at = format!("{root}.levels[{i}]");
        for (k, sink) in level.sinks.iter().enumerate() {
            check_sink_name(&format!("{at}.sinks[{k}]"), sink, v);
        }
        if level.name.is_empty() {
            v.error(format!("{at}.name"), "must not be empty");
        } else if !level_names.insert(level.name.as_str()) {
            v.error(
                format!("{at}.name"),
                format!("duplicate level name {:?}", level.name),
            );
        }
        validate_level_approvers(&at, level, v);
    }
    if !v.errors.is_empty() {
        return;
    }
    let people = ChainPeople::of(chain);
    validate_people_across_levels(root, chain, &people, v, work);
    if v.errors.is_empty() {
        validate_counting_order(root, chain, &people, v, work);
    }
}

/// Validate one level's approvers (at field path `at`): each names exactly one non-empty
/// user, group, service account or role, none twice, and there are enough of them for the
/// approvals the level requires (a warning when groups or roles make that uncountable).
fn validate_level_approvers(at: &str, level: &ApprovalLevel, v: &mut PolicyValidation) {
    if level.approvers.is_empty() {
        v.error(
            format!("{at}.approvers"),
            format!("level {:?} has no approvers", level.name),
        );
        return;
    }
    if level.approvers.len() > MAX_APPROVERS_PER_LEVEL {
        v.error(
            format!("{at}.approvers"),
            format!(
                "{} approvers; a level has at most {MAX_APPROVERS_PER_LEVEL} (name a group or a role for more people)",
                level.approvers.len()
            ),
        );
        return;
    }
    let mut seen = HashSet::new();
    let mut fixed_people = 0u32;
    let mut unbounded = Vec::new();
    let mut malformed = false;
    for (j, entry) in level.approvers.iter().enumerate() {
        let set = [
            entry.user.is_some(),
            entry.group.is_some(),
            entry.service_account.is_some(),
            entry.role.is_some(),
        ]
        .iter()
        .filter(|s| **s)
        .count();
        if set != 1 {
            v.error(
                format!("{at}.approvers[{j}]"),
                format!("set exactly one of user, group, serviceAccount or role (found {set})"),
            );
            malformed = true;
            continue;
        }
        let label = approver_label(entry);
        let empty = entry.user.as_deref() == Some("")
            || entry.group.as_deref() == Some("")
            || entry.role.as_deref() == Some("")
            || entry
                .service_account
                .as_ref()
                .is_some_and(|sa| sa.name.is_empty() || sa.namespace.is_empty());
        if empty {
            v.error(
                format!("{at}.approvers[{j}]"),
                "the approver's name must not be empty",
            );
        }
        if !seen.insert(label.clone()) {
            v.error(
                format!("{at}.approvers[{j}]"),
                format!("duplicate approver {label} in level {:?}", level.name),
            );
            continue;
        }
        if entry.user.is_some() || entry.service_account.is_some() {
            fixed_people += 1;
        } else {
            unbounded.push(label);
        }
    }
    if level.min_approvals == Some(0) {
        v.error(format!("{at}.minApprovals"), "must be at least 1");
    }
    let needed = required_approvals(level);
    if malformed {
        return;
    }
    if unbounded.is_empty() && needed > fixed_people {
        let field = if level.min_approvals.is_some() {
            format!("{at}.minApprovals")
        } else {
            at.to_string()
        };
        v.error(
            field,
            format!(
                "level {:?} requires {needed} approvals but names only {fixed_people} approvers (all named users or service accounts)",
                level.name
            ),
        );
    } else if !unbounded.is_empty() {
        v.warnings.push(format!(
            "level {:?}: the size of {} cannot be checked; make sure at least {needed} {} other than the requester can approve",
            level.name,
            unbounded.join(", "),
            if needed == 1 { "person" } else { "distinct people" }
        ));
    }
}

/// The named people (users and service accounts) of a chain, interned: a person's index is
/// their place in name order, so a set of indices in ascending order lists names sorted.
struct ChainPeople {
    names: Vec<String>,
}

impl ChainPeople {
    fn of(chain: &ApprovalSettings) -> Self {
        let names: BTreeSet<String> = chain
            .levels
            .iter()
            .flat_map(|level| &level.approvers)
            .filter_map(named_person)
            .collect();
        ChainPeople {
            names: names.into_iter().collect(),
        }
    }

    fn len(&self) -> usize {
        self.names.len()
    }

    /// The index of a person named in the chain.
    fn index(&self, name: &str) -> Option<usize> {
        self.names
            .binary_search_by(|known| known.as_str().cmp(name))
            .ok()
    }

    /// The names of people by index, in the order given.
    fn names_of<'a>(&'a self, people: impl IntoIterator<Item = &'a usize>) -> Vec<&'a str> {
        people
            .into_iter()
            .filter_map(|&p| self.names.get(p).map(String::as_str))
            .collect()
    }
}

/// A set of people by index, one bit each: cheap to test, add to and copy.
#[derive(Clone, Debug)]
struct PersonSet {
    words: Vec<u64>,
}

impl PersonSet {
    /// The empty set, for people `0..people`.
    fn empty(people: usize) -> Self {
        PersonSet {
            words: vec![0; people.div_ceil(64)],
        }
    }

    fn contains(&self, person: usize) -> bool {
        self.words
            .get(person / 64)
            .is_some_and(|word| word >> (person % 64) & 1 == 1)
    }

    fn insert(&mut self, person: usize) {
        if let Some(word) = self.words.get_mut(person / 64) {
            *word |= 1 << (person % 64);
        }
    }

    fn remove(&mut self, person: usize) {
        if let Some(word) = self.words.get_mut(person / 64) {
            *word &= !(1 << (person % 64));
        }
    }
}

/// One person counts once per request (SPEC §4), so levels that share named people can be
/// infeasible together although each is feasible alone. Checked exactly for levels made
/// only of named users and service accounts: a person required at two levels is refused,
/// and after each required person is placed at their level, every set of levels must name
/// at least as many other people as it still needs (Hall's condition). That holds exactly
/// when a maximum flow gives every level all the approvals it still needs
/// ([`approval_shortfall`]), which takes polynomial time where trying every set of levels
/// took 2^levels.
fn validate_people_across_levels(
    root: &str,
    chain: &ApprovalSettings,
    people: &ChainPeople,
    v: &mut PolicyValidation,
    work: &mut ValidationWork,
) {
    let mut required_at: HashMap<String, usize> = HashMap::new();
    for (i, level) in chain.levels.iter().enumerate() {
        for (j, entry) in level.approvers.iter().enumerate() {
            let Some(person) = named_person(entry).filter(|_| entry.required) else {
                continue;
            };
            if let Some(&first) = required_at.get(&person) {
                v.error(
                    format!("{root}.levels[{i}].approvers[{j}]"),
                    format!(
                        "{} is required at level {:?} and at level {:?}, but one person counts at one level only",
                        approver_label(entry),
                        chain.levels[first].name,
                        level.name
                    ),
                );
            } else {
                required_at.insert(person, i);
            }
        }
    }
    if !v.errors.is_empty() {
        return;
    }
    let mut required_per_level = vec![0u32; chain.levels.len()];
    for &at in required_at.values() {
        if let Some(count) = required_per_level.get_mut(at) {
            *count += 1;
        }
    }
    // Per level of named people only: the others it can still draw on, and how many it
    // still needs once its required people have approved.
    let named_levels: Vec<LevelDemand> = chain
        .levels
        .iter()
        .enumerate()
        .filter_map(|(i, level)| {
            let names: Option<Vec<String>> = level.approvers.iter().map(named_person).collect();
            let others: BTreeSet<usize> = names?
                .iter()
                .filter(|name| !required_at.contains_key(*name))
                .filter_map(|name| people.index(name))
                .collect();
            Some(LevelDemand {
                level: i,
                others: others.into_iter().collect(),
                needed: required_approvals(level).saturating_sub(required_per_level[i]),
            })
        })
        .collect();
    let Some(short) = approval_shortfall(&named_levels, people.len(), work) else {
        return;
    };
    let needed: u32 = short.iter().map(|&k| named_levels[k].needed).sum();
    let available: BTreeSet<usize> = short
        .iter()
        .flat_map(|&k| named_levels[k].others.iter().copied())
        .collect();
    let names: Vec<String> = short
        .iter()
        .map(|&k| format!("{:?}", chain.levels[named_levels[k].level].name))
        .collect();
    let available = people.names_of(&available);
    v.error(
        format!("{root}.levels"),
        format!(
            "{} {needed} more approvals from people not required elsewhere, but name only {} ({}); one person counts at one level only",
            match names.as_slice() {
                [one] => format!("level {one} needs"),
                many => format!("levels {} together need", many.join(" and ")),
            },
            available.len(),
            if available.is_empty() {
                "nobody".to_string()
            } else {
                available.join(", ")
            }
        ),
    );
}

/// What one level of named people asks of the people not required anywhere.
#[derive(Clone, Debug)]
struct LevelDemand {
    /// The level's index in the chain.
    level: usize,
    /// The people it names that no level requires, by [`ChainPeople`] index, ascending.
    others: Vec<usize>,
    /// Approvals it still needs once its required people have approved.
    needed: u32,
}

/// Can every level get the approvals it still needs from distinct people? A bipartite
/// maximum flow decides it: the source gives each level what it needs, a level passes one
/// approval to each person it names, and a person passes one to the sink. When the flow
/// falls short, the levels still reachable from the source in the residual network are a
/// set that needs more approvals than it names people (the minimum cut), returned as
/// ascending positions in `levels`; `None` when every level can be satisfied.
fn approval_shortfall(
    levels: &[LevelDemand],
    people: usize,
    work: &mut ValidationWork,
) -> Option<Vec<usize>> {
    let level_node = |k: usize| 2 + k;
    let person_node = |p: usize| 2 + levels.len() + p;
    let mut network = FlowNetwork::new(2 + levels.len() + people);
    let mut named = vec![false; people];
    for (k, level) in levels.iter().enumerate() {
        network.add_arc(FlowNetwork::SOURCE, level_node(k), level.needed);
        for &p in &level.others {
            network.add_arc(level_node(k), person_node(p), 1);
            if let Some(seen) = named.get_mut(p) {
                *seen = true;
            }
        }
    }
    for (p, _) in named.iter().enumerate().filter(|(_, named)| **named) {
        network.add_arc(person_node(p), FlowNetwork::SINK, 1);
    }
    let wanted: u64 = levels.iter().map(|level| u64::from(level.needed)).sum();
    if network.max_flow(&mut work.flow_arc_scans) >= wanted {
        return None;
    }
    let reachable = network.residual_reachable(&mut work.flow_arc_scans);
    Some(
        (0..levels.len())
            .filter(|&k| reachable[level_node(k)])
            .collect(),
    )
}

/// A flow network with integer capacities, for a maximum flow by Dinic's algorithm: each
/// phase finds the shortest augmenting paths by a breadth-first search, then saturates
/// them. In the approval network every augmenting path passes each level at most once, so
/// there are at most [`MAX_LEVELS`] + 1 phases, each examining every arc a bounded number
/// of times.
struct FlowNetwork {
    /// Per node, the arcs leaving it (indices into `head` and `capacity`).
    arcs_from: Vec<Vec<usize>>,
    /// Per arc, the node it enters. Arcs come in pairs: `a ^ 1` is the reverse of `a`.
    head: Vec<usize>,
    /// Per arc, the capacity left.
    capacity: Vec<u32>,
}

impl FlowNetwork {
    const SOURCE: usize = 0;
    const SINK: usize = 1;

    fn new(nodes: usize) -> Self {
        FlowNetwork {
            arcs_from: vec![Vec::new(); nodes],
            head: Vec::new(),
            capacity: Vec::new(),
        }
    }

    fn add_arc(&mut self, from: usize, to: usize, capacity: u32) {
        self.arcs_from[from].push(self.head.len());
        self.head.push(to);
        self.capacity.push(capacity);
        self.arcs_from[to].push(self.head.len());
        self.head.push(from);
        self.capacity.push(0);
    }

    /// Send as much flow as possible from [`Self::SOURCE`] to [`Self::SINK`]; the total.
    fn max_flow(&mut self, scans: &mut u64) -> u64 {
        let mut total = 0;
        while let Some(distance) = self.distances(scans) {
            let mut next_arc = vec![0; self.arcs_from.len()];
            loop {
                let pushed = self.augment(Self::SOURCE, u32::MAX, &distance, &mut next_arc, scans);
                if pushed == 0 {
                    break;
                }
                total += u64::from(pushed);
            }
        }
        total
    }

    /// Breadth-first distances from the source over arcs with capacity left; `None` when
    /// the sink cannot be reached.
    fn distances(&self, scans: &mut u64) -> Option<Vec<u32>> {
        let mut distance = vec![u32::MAX; self.arcs_from.len()];
        distance[Self::SOURCE] = 0;
        let mut queue = std::collections::VecDeque::from([Self::SOURCE]);
        while let Some(node) = queue.pop_front() {
            for &arc in &self.arcs_from[node] {
                *scans += 1;
                let to = self.head[arc];
                if self.capacity[arc] > 0 && distance[to] == u32::MAX {
                    distance[to] = distance[node] + 1;
                    queue.push_back(to);
                }
            }
        }
        (distance[Self::SINK] != u32::MAX).then_some(distance)
    }

    /// Push up to `limit` along one shortest path from `node` to the sink; what was pushed.
    /// `next_arc` skips the arcs of a node already found to lead nowhere in this phase.
    fn augment(
        &mut self,
        node: usize,
        limit: u32,
        distance: &[u32],
        next_arc: &mut [usize],
        scans: &mut u64,
    ) -> u32 {
        if node == Self::SINK {
            return limit;
        }
        while let Some(&arc) = self.arcs_from[node].get(next_arc[node]) {
            *scans += 1;
            let to = self.head[arc];
            if self.capacity[arc] > 0 && distance[to] == distance[node].saturating_add(1) {
                let pushed =
                    self.augment(to, limit.min(self.capacity[arc]), distance, next_arc, scans);
                if pushed > 0 {
                    self.capacity[arc] -= pushed;
                    self.capacity[arc ^ 1] += pushed;
                    return pushed;
                }
            }
            next_arc[node] += 1;
        }
        0
    }

    /// Which nodes the source reaches over arcs with capacity left: after a maximum flow,
    /// the source side of a minimum cut.
    fn residual_reachable(&self, scans: &mut u64) -> Vec<bool> {
        let mut reached = vec![false; self.arcs_from.len()];
        reached[Self::SOURCE] = true;
        let mut stack = vec![Self::SOURCE];
        while let Some(node) = stack.pop() {
            for &arc in &self.arcs_from[node] {
                *scans += 1;
                let to = self.head[arc];
                if self.capacity[arc] > 0 && !reached[to] {
                    reached[to] = true;
                    stack.push(to);
                }
            }
        }
        reached
    }
}

/// The most branches the counting-order check explores before it gives up with a warning.
const MAX_ORDERS_CHECKED: usize = 20_000;

/// What one level can take from the people named in the chain.
struct NamedLevel {
    /// Named people (users and service accounts) of the level, by [`ChainPeople`] index,
    /// ascending, each with whether the level requires them.
    people: Vec<(usize, bool)>,
    /// Approvals the level counts beyond its required entries (free slots).
    free: usize,
    /// Distinct approvals the level needs.
    needed: usize,
    /// Made only of named people, so whether it can be satisfied is known exactly.
    only_named: bool,
}

impl NamedLevel {
    fn required(&self) -> impl Iterator<Item = usize> + '_ {
        self.people
            .iter()
            .filter(|(_, required)| *required)
            .map(|(person, _)| *person)
    }
}

/// A way the approvals at earlier levels can leave a later level unsatisfiable, with
/// people by [`ChainPeople`] index.
struct Deadlock {
    /// (level index, the named people counted there), in level order.
    counted: Vec<(usize, Vec<usize>)>,
    stuck: usize,
    left: Vec<usize>,
}

/// Levels are satisfied in order and each approval counts at the open level, so the order
/// in which eligible people approve decides who is left for later levels. Refuse a chain
/// where some order of eligible approvals at earlier levels leaves a later level with too
/// few of its named people (a level that counts exactly `minApprovals` people, as
/// `core::approval::chain` does). Levels with groups or roles take part with their named people;
/// whether their groups can fill them is unknown (a warning says so elsewhere).
/// `validate_people_across_levels` runs first: what it refuses no order can satisfy, and
/// its message says so more plainly than an order would.
fn validate_counting_order(
    root: &str,
    chain: &ApprovalSettings,
    people: &ChainPeople,
    v: &mut PolicyValidation,
    work: &mut ValidationWork,
) {
    let levels: Vec<NamedLevel> = chain
        .levels
        .iter()
        .map(|level| {
            let mut named: BTreeMap<usize, bool> = BTreeMap::new();
            let mut required_entries = 0usize;
            let mut only_named = true;
            for entry in &level.approvers {
                required_entries += usize::from(entry.required);
                match named_person(entry).and_then(|name| people.index(&name)) {
                    Some(person) => *named.entry(person).or_default() |= entry.required,
                    None => only_named = false,
                }
            }
            let needed = required_approvals(level) as usize;
            NamedLevel {
                people: named.into_iter().collect(),
                free: needed.saturating_sub(required_entries),
                needed,
                only_named,
            }
        })
        .collect();
    let unbounded: Vec<String> = chain
        .levels
        .iter()
        .flat_map(|level| &level.approvers)
        .filter(|entry| named_person(entry).is_none())
        .map(approver_label)
        .collect();
    if chain.levels.len() > 1 && !unbounded.is_empty() {
        v.warnings.push(format!(
            "whether approvals at one level can leave a later level short cannot be checked for {} (members unknown); a request stuck that way is reported on its approval",
            unbounded.join(", ")
        ));
    }
    // Per level, the people named by the levels after it.
    let mut named_later = vec![PersonSet::empty(people.len()); levels.len()];
    for i in (0..levels.len().saturating_sub(1)).rev() {
        let mut later = named_later[i + 1].clone();
        for &(person, _) in &levels[i + 1].people {
            later.insert(person);
        }
        named_later[i] = later;
    }
    let mut used = PersonSet::empty(people.len());
    let mut counted = Vec::new();
    let search = OrderSearch {
        levels: &levels,
        named_later: &named_later,
    };
    match search.find_deadlock(0, &mut used, &mut counted, work) {
        Ok(None) => {}
        Ok(Some(deadlock)) => {
            let name = |i: usize| format!("{:?}", chain.levels[i].name);
            let steps: Vec<String> = deadlock
                .counted
                .iter()
                .filter(|(_, counted)| !counted.is_empty())
                .map(|(i, counted)| {
                    format!(
                        "{} {} at level {}",
                        people.names_of(counted).join(", "),
                        if counted.len() == 1 { "approves" } else { "approve" },
                        name(*i)
                    )
                })
                .collect();
            let stuck = &levels[deadlock.stuck];
            let plural = if stuck.needed == 1 { "" } else { "s" };
            let left = match people.names_of(&deadlock.left).as_slice() {
                [] => "none of its approvers remain".to_string(),
                [one] => format!("only {one} remains"),
                many => format!("only {} remain", many.join(", ")),
            };
            let missing: Vec<usize> = stuck
                .required()
                .filter(|p| !deadlock.left.contains(p))
                .collect();
            let why = if missing.is_empty() {
                format!("it needs {} approval{plural} and {left}", stuck.needed)
            } else {
                format!(
                    "it requires {} who already counted",
                    people.names_of(&missing).join(", ")
                )
            };
            v.error(
                format!("{root}.levels"),
                format!(
                    "approvals in this order deadlock the chain: {}; then level {} can never be satisfied ({why}); one person counts at one level only, so give the levels distinct approvers or enough of them",
                    steps.join(", then "),
                    name(deadlock.stuck)
                ),
            );
        }
        Err(()) => v.warnings.push(
            "too many orders of approval to check whether an early approval can leave a later level unsatisfiable; give the levels distinct approvers".into(),
        ),
    }
}

/// The counting-order search over a chain's levels.
struct OrderSearch<'a> {
    levels: &'a [NamedLevel],
    /// Per level, the people named by the levels after it.
    named_later: &'a [PersonSet],
}

impl OrderSearch<'_> {
    /// Depth-first over the levels from `index`, with `used` people already counted: the
    /// first order of approvals that leaves a level unsatisfiable. `Err` when the branch
    /// budget ([`MAX_ORDERS_CHECKED`]) ran out. Counting more of the people later levels
    /// name only ever hurts them, so at each level the search tries every largest set of
    /// such people the level can count. A branch costs time in the size of its level
    /// (at most [`MAX_APPROVERS_PER_LEVEL`] people), not of the chain: `used` is one set,
    /// marked and unmarked as the search goes down and back.
    fn find_deadlock(
        &self,
        index: usize,
        used: &mut PersonSet,
        counted: &mut Vec<(usize, Vec<usize>)>,
        work: &mut ValidationWork,
    ) -> Result<Option<Deadlock>, ()> {
        let Some(level) = self.levels.get(index) else {
            return Ok(None);
        };
        if work.order_branches >= MAX_ORDERS_CHECKED {
            return Err(());
        }
        work.order_branches += 1;
        work.order_person_scans += level.people.len() as u64;
        let available: Vec<usize> = level
            .people
            .iter()
            .map(|&(person, _)| person)
            .filter(|&person| !used.contains(person))
            .collect();
        let required_left = level.required().all(|person| !used.contains(person));
        if !required_left || (level.only_named && available.len() < level.needed) {
            return Ok(Some(Deadlock {
                counted: counted.clone(),
                stuck: index,
                left: available,
            }));
        }
        let later = &self.named_later[index];
        let candidates: Vec<usize> = level
            .people
            .iter()
            .filter(|&&(person, required)| {
                !required && !used.contains(person) && later.contains(person)
            })
            .map(|&(person, _)| person)
            .collect();
        let required: Vec<usize> = level.required().collect();
        let take = level.free.min(candidates.len());
        let mut choice: Vec<usize> = (0..take).collect();
        loop {
            let mut counted_here = required.clone();
            counted_here.extend(choice.iter().map(|&i| candidates[i]));
            work.order_person_scans += counted_here.len() as u64;
            for &person in &counted_here {
                used.insert(person);
            }
            counted.push((index, counted_here));
            let found = self.find_deadlock(index + 1, used, counted, work);
            if let Some((_, counted_here)) = counted.pop() {
                for person in counted_here {
                    used.remove(person);
                }
            }
            if let Some(deadlock) = found? {
                return Ok(Some(deadlock));
            }
            if !next_combination(&mut choice, candidates.len()) {
                return Ok(None);
            }
        }
    }
}

/// Advance `choice` (ascending indices below `n`) to the next combination of its size.
fn next_combination(choice: &mut [usize], n: usize) -> bool {
    let k = choice.len();
    let Some(i) = (0..k).rev().find(|&i| choice[i] < n - k + i) else {
        return false;
    };
    choice[i] += 1;
    for j in i + 1..k {
        choice[j] = choice[j - 1] + 1;
    }
    true
}

/// The status the operator reports on a policy (SPEC §11): `Ready` true when the policy is
/// in force, false with every error when the webhook refuses to use it, and the warnings.
/// The condition keeps its transition time while its status does not change.
pub fn policy_status(policy: &ApprovalPolicy, now: jiff::Timestamp) -> ApprovalPolicyStatus {
    let validation = validate_policy(&policy.spec);
    let (status, reason, message) = if validation.errors.is_empty() {
        ("True", "Valid", "the policy is in force".to_string())
    } else {
        (
            "False",
            "Invalid",
            validation
                .errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; "),
        )
    };
    let previous = policy.status.as_ref();
    let since = previous
        .and_then(|s| {
            s.conditions
                .iter()
                .find(|c| c.type_ == READY_CONDITION && c.status == status)
        })
        .map_or(Time(now), |c| c.last_transition_time.clone());
    ApprovalPolicyStatus {
        observed_generation: policy.metadata.generation,
        conditions: vec![Condition {
            type_: READY_CONDITION.into(),
            status: status.into(),
            reason: reason.into(),
            message: message.chars().take(4000).collect(),
            last_transition_time: since,
            observed_generation: policy.metadata.generation,
        }],
        warnings: validation.warnings,
    }
}

/// The condition that says whether a policy is in force.
pub const READY_CONDITION: &str = "Ready";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{Approver, WeeklySchedule, WindowEffect};
    use crate::core::test_builders::{group, level, user};
    use proptest::prelude::*;

    fn policy_with_levels(levels: Vec<ApprovalLevel>) -> ApprovalPolicySpec {
        ApprovalPolicySpec {
            approval: Some(ApprovalSettings {
                levels,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn errors(spec: &ApprovalPolicySpec) -> Vec<String> {
        validate_policy(spec)
            .errors
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn three_named_users_cannot_require_five() {
        let spec = policy_with_levels(vec![level(
            "sre",
            vec![user("a", false), user("b", false), user("c", false)],
            Some(5),
        )]);
        assert_eq!(errors(&spec), vec![
            "spec.approval.levels[0].minApprovals: level \"sre\" requires 5 approvals but names only 3 approvers (all named users or service accounts)".to_string()
        ]);
    }

    #[test]
    fn chain_errors_table() {
        let group = Approver {
            group: Some("sre".into()),
            ..Default::default()
        };
        let both = Approver {
            user: Some("a".into()),
            group: Some("g".into()),
            ..Default::default()
        };
        let cases: Vec<(&str, ApprovalPolicySpec, Vec<&str>)> = vec![
            (
                "no levels",
                policy_with_levels(vec![]),
                vec!["spec.approval.levels: an approval chain needs at least one level"],
            ),
            (
                "no approvers",
                policy_with_levels(vec![level("l", vec![], None)]),
                vec!["spec.approval.levels[0].approvers: level \"l\" has no approvers"],
            ),
            (
                "duplicate approvers",
                policy_with_levels(vec![level(
                    "l",
                    vec![user("a", false), user("a", true)],
                    None,
                )]),
                vec!["spec.approval.levels[0].approvers[1]: duplicate approver a in level \"l\""],
            ),
            (
                "two kinds in one entry",
                policy_with_levels(vec![level("l", vec![both], None)]),
                vec![
                    "spec.approval.levels[0].approvers[0]: set exactly one of user, group, serviceAccount or role (found 2)",
                ],
            ),
            (
                "duplicate level names",
                policy_with_levels(vec![
                    level("l", vec![user("a", false)], None),
                    level("l", vec![user("b", false)], None),
                ]),
                vec!["spec.approval.levels[1].name: duplicate level name \"l\""],
            ),
            (
                "zero min",
                policy_with_levels(vec![level("l", vec![group.clone()], Some(0))]),
                vec!["spec.approval.levels[0].minApprovals: must be at least 1"],
            ),
            (
                "required entries exceed named users",
                policy_with_levels(vec![level(
                    "l",
                    vec![user("a", true), user("b", true)],
                    Some(3),
                )]),
                vec![
                    "spec.approval.levels[0].minApprovals: level \"l\" requires 3 approvals but names only 2 approvers (all named users or service accounts)",
                ],
            ),
            (
                "feasible",
                policy_with_levels(vec![level(
                    "l",
                    vec![user("a", true), user("b", false), user("c", false)],
                    Some(3),
                )]),
                vec![],
            ),
            (
                "group level is admitted",
                policy_with_levels(vec![level("l", vec![group.clone()], Some(5))]),
                vec![],
            ),
            (
                "one person required at two levels",
                policy_with_levels(vec![
                    level("leads", vec![user("a", true), user("b", false)], None),
                    level("sre", vec![user("a", true), user("c", false)], None),
                ]),
                vec![
                    "spec.approval.levels[1].approvers[0]: a is required at level \"leads\" and at level \"sre\", but one person counts at one level only",
                ],
            ),
            (
                "two levels share too few people",
                policy_with_levels(vec![
                    level("leads", vec![user("a", false), user("b", false)], Some(2)),
                    level(
                        "sre",
                        vec![user("a", false), user("b", false), user("c", false)],
                        Some(2),
                    ),
                ]),
                vec![
                    "spec.approval.levels: levels \"leads\" and \"sre\" together need 4 more approvals from people not required elsewhere, but name only 3 (a, b, c); one person counts at one level only",
                ],
            ),
            (
                "a required person is used up by their own level",
                policy_with_levels(vec![
                    level("leads", vec![user("a", true)], None),
                    level("sre", vec![user("a", false), user("b", false)], Some(2)),
                ]),
                vec![
                    "spec.approval.levels: level \"sre\" needs 2 more approvals from people not required elsewhere, but name only 1 (b); one person counts at one level only",
                ],
            ),
            (
                "too many approvers in one level",
                policy_with_levels(vec![level(
                    "everyone",
                    (0..=MAX_APPROVERS_PER_LEVEL)
                        .map(|i| user(&format!("p{i}"), false))
                        .collect(),
                    None,
                )]),
                vec![
                    "spec.approval.levels[0].approvers: 257 approvers; a level has at most 256 (name a group or a role for more people)",
                ],
            ),
            (
                "two of three levels share too few people; the third is not blamed",
                policy_with_levels(vec![
                    level("leads", vec![user("a", false), user("b", false)], Some(2)),
                    level("ops", vec![user("c", false), user("d", false)], None),
                    level("sre", vec![user("a", false), user("b", false)], None),
                ]),
                vec![
                    "spec.approval.levels: levels \"leads\" and \"sre\" together need 3 more approvals from people not required elsewhere, but name only 2 (a, b); one person counts at one level only",
                ],
            ),
            (
                "people required at one level are not counted for the others",
                policy_with_levels(vec![
                    level(
                        "leads",
                        vec![user("a", true), user("b", false), user("c", false)],
                        Some(3),
                    ),
                    level(
                        "sre",
                        vec![
                            user("a", false),
                            user("b", false),
                            user("c", false),
                            user("d", false),
                        ],
                        Some(2),
                    ),
                    level("ops", vec![user("e", false), group.clone()], Some(3)),
                ]),
                vec![
                    "spec.approval.levels: levels \"leads\" and \"sre\" together need 4 more approvals from people not required elsewhere, but name only 3 (b, c, d); one person counts at one level only",
                ],
            ),
            (
                "a user and a service account that are one person",
                policy_with_levels(vec![level(
                    "deployers",
                    vec![
                        user("system:serviceaccount:ci:deployer", false),
                        Approver {
                            service_account: Some(crate::api::ServiceAccountRef {
                                namespace: "ci".into(),
                                name: "deployer".into(),
                            }),
                            ..Default::default()
                        },
                    ],
                    Some(2),
                )]),
                vec![
                    "spec.approval.levels: level \"deployers\" needs 2 more approvals from people not required elsewhere, but name only 1 (system:serviceaccount:ci:deployer); one person counts at one level only",
                ],
            ),
            (
                "shared people, but enough of them",
                policy_with_levels(vec![
                    level("leads", vec![user("a", false), user("b", false)], Some(1)),
                    level(
                        "sre",
                        vec![user("a", false), user("b", false), user("c", true)],
                        Some(2),
                    ),
                ]),
                vec![],
            ),
            (
                "the first approver at level 1 can starve level 2",
                policy_with_levels(vec![
                    level(
                        "l1",
                        vec![user("a", false), user("b", false), user("c", false)],
                        None,
                    ),
                    level("l2", vec![user("a", false), user("b", false)], Some(2)),
                ]),
                vec![
                    "spec.approval.levels: approvals in this order deadlock the chain: a approves at level \"l1\"; then level \"l2\" can never be satisfied (it needs 2 approvals and only b remains); one person counts at one level only, so give the levels distinct approvers or enough of them",
                ],
            ),
            (
                "an approver required later can be used up earlier",
                policy_with_levels(vec![
                    level("l1", vec![user("a", false), user("b", false)], None),
                    level("l2", vec![user("a", true), user("c", false)], None),
                ]),
                vec![
                    "spec.approval.levels: approvals in this order deadlock the chain: a approves at level \"l1\"; then level \"l2\" can never be satisfied (it requires a who already counted); one person counts at one level only, so give the levels distinct approvers or enough of them",
                ],
            ),
            (
                "a level with a group can use up a named approver of a later level",
                policy_with_levels(vec![
                    level("l1", vec![group.clone(), user("a", false)], None),
                    level("l2", vec![user("a", false)], None),
                ]),
                vec![
                    "spec.approval.levels: approvals in this order deadlock the chain: a approves at level \"l1\"; then level \"l2\" can never be satisfied (it needs 1 approval and none of its approvers remain); one person counts at one level only, so give the levels distinct approvers or enough of them",
                ],
            ),
            (
                "a level counts exactly what it needs, so the rest stay for later",
                policy_with_levels(vec![
                    level(
                        "leads",
                        vec![user("lead", true), user("a", false), user("b", false)],
                        Some(2),
                    ),
                    level("sre", vec![user("a", false), user("b", false)], None),
                ]),
                vec![],
            ),
            (
                "overlapping levels with enough people in every order",
                policy_with_levels(vec![
                    level("l1", vec![user("a", false), user("b", false)], None),
                    level(
                        "l2",
                        vec![user("a", false), user("b", false), user("c", false)],
                        Some(2),
                    ),
                    level("l3", vec![user("c", false), user("d", false)], None),
                ]),
                vec![],
            ),
            (
                "a group level draws on people the check cannot count",
                policy_with_levels(vec![
                    level("leads", vec![user("a", false)], None),
                    level("sre", vec![user("a", false), group], Some(2)),
                ]),
                vec![],
            ),
        ];
        for (name, spec, expected) in cases {
            assert_eq!(errors(&spec), expected, "{name}");
        }
    }

    #[test]
    fn counting_orders_beyond_the_budget_are_a_warning_not_a_guess() {
        let everyone: Vec<Approver> = (0..12).map(|i| user(&format!("p{i}"), false)).collect();
        let levels = (0..6)
            .map(|i| level(&format!("l{i}"), everyone.clone(), Some(2)))
            .collect();
        let validation = validate_policy(&policy_with_levels(levels));
        assert!(validation.is_valid(), "{:?}", validation.errors);
        assert!(
            validation
                .warnings
                .iter()
                .any(|w| w.starts_with("too many orders of approval to check")),
            "{:?}",
            validation.warnings
        );
        let too_many = (0..=MAX_LEVELS)
            .map(|i| level(&format!("l{i}"), vec![user(&format!("p{i}"), false)], None))
            .collect();
        assert_eq!(
            errors(&policy_with_levels(too_many)),
            vec!["spec.approval.levels: 33 levels; a chain has at most 32".to_string()]
        );
    }

    #[test]
    fn a_broken_snapshot_is_reported_at_its_own_field() {
        let snapshot = ApprovalSettings {
            levels: vec![level("l", vec![user("a", false)], None)],
            request_ttl: Some("-1h".into()),
            approval_ttl: Some("forever".into()),
            ..Default::default()
        };
        let fields: Vec<String> = validate_chain_snapshot(&snapshot)
            .errors
            .iter()
            .map(|e| e.field.clone())
            .collect();
        assert_eq!(
            fields,
            vec![
                "spec.policy.chain.requestTTL",
                "spec.policy.chain.approvalTTL"
            ]
        );
    }

    #[test]
    fn order_effects_through_groups_are_a_warning() {
        let spec = policy_with_levels(vec![
            level("leads", vec![user("a", false), group("leads", false)], None),
            level("sre", vec![group("sre", false)], None),
        ]);
        let validation = validate_policy(&spec);
        assert!(validation.is_valid(), "{:?}", validation.errors);
        assert!(
            validation.warnings.contains(
                &"whether approvals at one level can leave a later level short cannot be checked for group:leads, group:sre (members unknown); a request stuck that way is reported on its approval".to_string()
            ),
            "{:?}",
            validation.warnings
        );
    }

    #[test]
    fn a_policy_whose_only_check_forbids_ephemeral_containers_gates_something() {
        let spec: ApprovalPolicySpec = serde_json::from_value(serde_json::json!({
            "checks": {"forbidEphemeralContainers": true}
        }))
        .unwrap();
        let validation = validate_policy(&spec);
        assert!(
            validation
                .warnings
                .iter()
                .all(|w| !w.contains("gates nothing")),
            "{:?}",
            validation.warnings
        );
        let nothing: ApprovalPolicySpec = serde_json::from_value(serde_json::json!({})).unwrap();
        assert!(
            validate_policy(&nothing)
                .warnings
                .iter()
                .any(|w| w.contains("gates nothing"))
        );
    }

    #[test]
    fn group_approvers_produce_a_warning() {
        let spec = policy_with_levels(vec![level(
            "sre",
            vec![Approver {
                group: Some("sre".into()),
                ..Default::default()
            }],
            Some(2),
        )]);
        let validation = validate_policy(&spec);
        assert!(validation.is_valid());
        assert_eq!(validation.warnings, vec![
            "level \"sre\": the size of group:sre cannot be checked; make sure at least 2 distinct people other than the requester can approve".to_string()
        ]);
    }

    #[test]
    fn window_and_field_errors_table() {
        let window = |zone: &str, start: &str, end: &str| ChangeWindow {
            name: "freeze".into(),
            effect: WindowEffect::Deny,
            time_zone: zone.into(),
            weekly: Some(WeeklySchedule {
                days: vec![crate::api::Weekday::Saturday],
                start: start.into(),
                end: end.into(),
            }),
            absolute: None,
        };
        let cases: Vec<(&str, ApprovalPolicySpec, Vec<&str>)> = vec![
            (
                "bad zone",
                ApprovalPolicySpec {
                    windows: vec![window("Europe/Atlantis", "00:00", "24:00")],
                    ..Default::default()
                },
                vec!["spec.windows[0].timeZone: unknown IANA time zone \"Europe/Atlantis\""],
            ),
            (
                "bad time",
                ApprovalPolicySpec {
                    windows: vec![window("UTC", "25:00", "24:00")],
                    ..Default::default()
                },
                vec![
                    "spec.windows[0].weekly.start: \"25:00\" is not a time of day HH:MM (00:00 to 24:00)",
                ],
            ),
            (
                "empty window",
                ApprovalPolicySpec {
                    windows: vec![window("UTC", "10:00", "10:00")],
                    ..Default::default()
                },
                vec!["spec.windows[0].weekly: start and end are equal: the window would be empty"],
            ),
            (
                "bad pointer",
                ApprovalPolicySpec {
                    ignore_fields: Some(vec!["spec.replicas".into()]),
                    windows: vec![window("UTC", "00:00", "24:00")],
                    ..Default::default()
                },
                vec![
                    "spec.ignoreFields[0]: \"spec.replicas\" is not a JSON pointer (must start with / and escape ~ as ~0, / as ~1)",
                ],
            ),
            (
                "bad ttl",
                ApprovalPolicySpec {
                    approval: Some(ApprovalSettings {
                        levels: vec![level("l", vec![user("a", false)], None)],
                        request_ttl: Some("a while".into()),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                vec![
                    "spec.approval.requestTTL: \"a while\" is not a duration such as 72h, 30m or 1h30m",
                ],
            ),
            (
                "deploy token ttls",
                ApprovalPolicySpec {
                    windows: vec![window("UTC", "00:00", "24:00")],
                    grant: Some(crate::api::GrantSettings {
                        ttl: Some("5m".into()),
                    }),
                    ..Default::default()
                },
                vec![
                    "spec.grant.ttl: \"5m\" is shorter than 10m, the shortest token the TokenRequest API issues",
                ],
            ),
            (
                "an unreadable deploy token ttl",
                ApprovalPolicySpec {
                    windows: vec![window("UTC", "00:00", "24:00")],
                    grant: Some(crate::api::GrantSettings {
                        ttl: Some("a day".into()),
                    }),
                    ..Default::default()
                },
                vec!["spec.grant.ttl: \"a day\" is not a duration such as 72h, 30m or 1h30m"],
            ),
            (
                "a deploy token ttl over the TokenRequest maximum",
                ApprovalPolicySpec {
                    windows: vec![window("UTC", "00:00", "24:00")],
                    grant: Some(crate::api::GrantSettings {
                        ttl: Some("5000000h".into()),
                    }),
                    ..Default::default()
                },
                vec![
                    "spec.grant.ttl: \"5000000h\" is longer than 2^32 seconds, the longest token the TokenRequest API issues",
                ],
            ),
            (
                "the shortest deploy token ttl",
                ApprovalPolicySpec {
                    windows: vec![window("UTC", "00:00", "24:00")],
                    grant: Some(crate::api::GrantSettings {
                        ttl: Some("10m".into()),
                    }),
                    ..Default::default()
                },
                vec![],
            ),
            (
                "built-in kinds without their group",
                ApprovalPolicySpec {
                    match_: crate::api::PolicyMatch {
                        kinds: [
                            ("", "Deployment"),
                            ("apps", "Deployment"),
                            ("", "CronJob"),
                            ("", "ReplicaSet"),
                            ("", "Pod"),
                            ("", "ConfigMap"),
                            ("example.com", "Widget"),
                        ]
                        .into_iter()
                        .map(|(group, kind)| crate::api::GroupKind {
                            group: group.into(),
                            kind: kind.into(),
                        })
                        .collect(),
                        ..Default::default()
                    },
                    windows: vec![window("UTC", "00:00", "24:00")],
                    ..Default::default()
                },
                vec![
                    "spec.match.kinds[0]: kind Deployment is in group \"apps\"; set group: apps",
                    "spec.match.kinds[2]: kind CronJob is in group \"batch\"; set group: batch",
                    "spec.match.kinds[3]: kind ReplicaSet is in group \"apps\"; set group: apps",
                ],
            ),
            (
                "absolute times with an offset or a zone",
                ApprovalPolicySpec {
                    windows: vec![ChangeWindow {
                        name: "year-end".into(),
                        effect: WindowEffect::Deny,
                        time_zone: "Asia/Tokyo".into(),
                        weekly: None,
                        absolute: Some(crate::api::AbsoluteInterval {
                            start: "2025-12-24T00:00:00+09:00".into(),
                            end: "2026-01-02T00:00[Asia/Tokyo]".into(),
                        }),
                    }],
                    ..Default::default()
                },
                vec![
                    "spec.windows[0].absolute.start: \"2025-12-24T00:00:00+09:00\" has a UTC offset; write the local time alone (YYYY-MM-DDTHH:MM[:SS]) and set timeZone instead",
                    "spec.windows[0].absolute.end: \"2026-01-02T00:00[Asia/Tokyo]\" names a time zone; write the local time alone (YYYY-MM-DDTHH:MM[:SS]) and set timeZone instead",
                ],
            ),
        ];
        for (name, spec, expected) in cases {
            assert_eq!(errors(&spec), expected, "{name}");
        }
    }

    #[test]
    fn a_policy_reports_whether_it_is_in_force() {
        let at = |s: i64| jiff::Timestamp::constant(1_795_514_400 + s, 0);
        let mut policy = ApprovalPolicy::new("prod", ApprovalPolicySpec::default());
        policy.metadata.generation = Some(3);
        let ready = policy_status(&policy, at(0));
        assert_eq!(ready.conditions[0].status, "True");
        assert_eq!(ready.observed_generation, Some(3));
        policy.status = Some(ready.clone());
        assert_eq!(
            policy_status(&policy, at(60)),
            ready,
            "unchanged, same time"
        );
        policy.spec.ignore_fields = Some(vec!["spec/replicas".into()]);
        let broken = policy_status(&policy, at(90));
        assert_eq!(broken.conditions[0].status, "False");
        assert_eq!(broken.conditions[0].reason, "Invalid");
        assert!(
            broken.conditions[0]
                .message
                .contains("spec.ignoreFields[0]"),
            "{broken:?}"
        );
        assert_eq!(broken.conditions[0].last_transition_time, Time(at(90)));
    }

    #[test]
    fn sinks_must_be_secret_names() {
        let mut spec = ApprovalPolicySpec {
            approval: Some(ApprovalSettings {
                levels: vec![crate::core::test_builders::level(
                    "leads",
                    vec![crate::core::test_builders::user("alice", false)],
                    None,
                )],
                ..ApprovalSettings::default()
            }),
            ..ApprovalPolicySpec::default()
        };
        let errors = |spec: &ApprovalPolicySpec| -> Vec<String> {
            validate_policy(spec)
                .errors
                .iter()
                .map(|e| e.field.clone())
                .collect()
        };
        assert!(errors(&spec).is_empty());
        if let Some(chain) = spec.approval.as_mut() {
            chain.levels[0].sinks = vec!["slack-leads".into(), "Slack_Leads".into()];
            chain.requester_sinks = vec!["ok.team".into(), "-bad".into(), "".into()];
        }
        spec.audit_sinks = vec!["audit-copies".into(), "../etc".into()];
        assert_eq!(
            errors(&spec),
            [
                "spec.auditSinks[1]",
                "spec.approval.requesterSinks[1]",
                "spec.approval.requesterSinks[2]",
                "spec.approval.levels[0].sinks[1]",
            ]
        );
    }

    /// `count` levels named `l0`, `l1`, …, each of `people(level)` named users and each
    /// needing `min` approvals.
    fn chain_of(
        count: usize,
        people: impl Fn(usize) -> Vec<String>,
        min: u32,
    ) -> ApprovalPolicySpec {
        policy_with_levels(
            (0..count)
                .map(|i| {
                    let approvers = people(i).iter().map(|p| user(p, false)).collect();
                    level(&format!("l{i}"), approvers, Some(min))
                })
                .collect(),
        )
    }

    /// `per_level` users of their own for level `i`.
    fn distinct(per_level: usize) -> impl Fn(usize) -> Vec<String> {
        move |i| (0..per_level).map(|k| format!("u{i}-{k}")).collect()
    }

    /// The same `per_level` users at every level.
    fn shared(per_level: usize) -> impl Fn(usize) -> Vec<String> {
        move |_| (0..per_level).map(|k| format!("u{k}")).collect()
    }

    fn measured(spec: &ApprovalPolicySpec) -> (PolicyValidation, ValidationWork) {
        let mut work = ValidationWork::default();
        let validation = validate_policy_measured(spec, &mut work);
        (validation, work)
    }

    /// The most arcs Dinic's algorithm examines on a chain of `levels` named levels with
    /// `entries` approver entries (which bound both the level-to-person arcs and the
    /// people) that carries a flow of `flow`: every augmenting path passes a level at most
    /// once, so there are at most `levels + 1` phases plus the last, failing search; each
    /// phase's breadth-first search examines every arc once, its augmenting searches move
    /// past every arc at most once and retrace at most one path (`2 levels + 1` arcs) per
    /// unit of flow; the minimum cut's search examines every arc once more.
    fn flow_scan_bound(levels: usize, entries: usize, flow: u64) -> u64 {
        let arcs = 2 * (levels + 2 * entries) as u64;
        let phases = levels as u64 + 2;
        phases * 2 * arcs + flow * (2 * levels as u64 + 1) + arcs
    }

    /// The counting-order search's steps are bounded by its branch budget, whatever the
    /// chain: each branch looks at one level's people and counts at most as many.
    const ORDER_SCAN_BOUND: u64 = MAX_ORDERS_CHECKED as u64 * 2 * MAX_APPROVERS_PER_LEVEL as u64;

    /// The attack that froze the webhook: 16 levels of 400 named users each, which the
    /// subset check met with 2^16 sets of up to 6,400 names. Now refused by size, before
    /// any check across levels runs.
    #[test]
    fn the_attackers_chain_is_refused_by_size_without_work_across_levels() {
        let (validation, work) = measured(&chain_of(16, distinct(400), 1));
        let fields: Vec<&str> = validation.errors.iter().map(|e| e.field.as_str()).collect();
        let expected: Vec<String> = (0..16)
            .map(|i| format!("spec.approval.levels[{i}].approvers"))
            .collect();
        assert_eq!(fields, expected);
        assert_eq!(
            validation.errors[0].message,
            "400 approvers; a level has at most 256 (name a group or a role for more people)"
        );
        assert_eq!(work.flow_arc_scans, 0);
        assert_eq!(work.order_branches, 0);
        let (validation, work) = measured(&chain_of(MAX_LEVELS + 1, distinct(1), 1));
        let refused: Vec<String> = validation.errors.iter().map(ToString::to_string).collect();
        assert_eq!(
            refused,
            vec!["spec.approval.levels: 33 levels; a chain has at most 32".to_string()]
        );
        assert_eq!(work.flow_arc_scans, 0);
        assert_eq!(work.order_branches, 0);
    }

    /// Chains at both limits (32 levels of 256 named users) validate within the bounds the
    /// algorithms promise: distinct people, the same people at every level (just enough,
    /// and one approval too many), and the attacker's 16 levels cut to the limit.
    #[test]
    fn chains_at_the_limits_are_validated_within_a_fixed_bound() {
        let per_level = MAX_APPROVERS_PER_LEVEL;
        let entries = MAX_LEVELS * per_level;
        let cases: Vec<(&str, ApprovalPolicySpec, bool, u64)> = vec![
            (
                "16 levels of 256 people of their own, each needing all of them",
                chain_of(16, distinct(per_level), per_level as u32),
                true,
                16 * per_level as u64,
            ),
            (
                "32 levels of 256 people of their own",
                chain_of(MAX_LEVELS, distinct(per_level), 200),
                true,
                MAX_LEVELS as u64 * 200,
            ),
            (
                "32 levels of the same 256 people, exactly enough",
                chain_of(MAX_LEVELS, shared(per_level), 8),
                true,
                256,
            ),
            (
                "32 levels of the same 256 people, one approval each too many",
                chain_of(MAX_LEVELS, shared(per_level), 9),
                false,
                256,
            ),
        ];
        for (name, spec, feasible, flow) in cases {
            let (validation, work) = measured(&spec);
            assert_eq!(
                validation.errors.is_empty(),
                feasible,
                "{name}: {:?}",
                validation.errors.first()
            );
            assert!(work.flow_arc_scans > 0, "{name}: the flow ran");
            assert!(
                work.flow_arc_scans <= flow_scan_bound(MAX_LEVELS, entries, flow),
                "{name}: {} arcs examined",
                work.flow_arc_scans
            );
            assert!(work.order_branches <= MAX_ORDERS_CHECKED, "{name}");
            assert!(
                work.order_person_scans <= ORDER_SCAN_BOUND,
                "{name}: {} people looked at",
                work.order_person_scans
            );
        }
        let too_many = errors(&chain_of(MAX_LEVELS, shared(per_level), 9));
        assert!(
            too_many[0].starts_with(
                "spec.approval.levels: levels \"l0\" and \"l1\" and \"l2\" and \"l3\""
            ) && too_many[0].contains(
                "\"l31\" together need 288 more approvals from people not required elsewhere, but name only 256 (u0, u1, u10, u100,"
            ),
            "{too_many:?}"
        );
    }

    /// The counting-order search stops at its branch budget on a chain where the orders
    /// explode (every level picking 8 of the same 256 people), having looked at no more
    /// people than the budget allows.
    #[test]
    fn the_counting_order_budget_bounds_its_steps() {
        let (validation, work) =
            measured(&chain_of(MAX_LEVELS, shared(MAX_APPROVERS_PER_LEVEL), 8));
        assert!(validation.is_valid(), "{:?}", validation.errors);
        assert!(
            validation
                .warnings
                .iter()
                .any(|w| w.starts_with("too many orders of approval to check")),
            "{:?}",
            validation.warnings
        );
        assert_eq!(work.order_branches, MAX_ORDERS_CHECKED);
        assert!(work.order_person_scans <= ORDER_SCAN_BOUND);
    }

    /// The subset check the maximum flow replaced (Hall's condition over every set of
    /// levels of named people), kept as the reference: whether it refuses `chain`.
    fn subsets_refuse(chain: &ApprovalSettings) -> bool {
        let mut required_at: HashMap<String, usize> = HashMap::new();
        for (i, level) in chain.levels.iter().enumerate() {
            for entry in &level.approvers {
                if let Some(person) = named_person(entry).filter(|_| entry.required)
                    && required_at.insert(person, i).is_some()
                {
                    return true;
                }
            }
        }
        let named_levels: Vec<(BTreeSet<String>, u32)> = chain
            .levels
            .iter()
            .enumerate()
            .filter_map(|(i, level)| {
                let people: Option<Vec<String>> =
                    level.approvers.iter().map(named_person).collect();
                let required_here = required_at.values().filter(|&&at| at == i).count() as u32;
                let others = people?
                    .into_iter()
                    .filter(|p| !required_at.contains_key(p))
                    .collect();
                Some((
                    others,
                    required_approvals(level).saturating_sub(required_here),
                ))
            })
            .collect();
        (1u32..(1 << named_levels.len())).any(|subset| {
            let chosen = named_levels
                .iter()
                .enumerate()
                .filter(|(bit, _)| subset & (1 << bit) != 0);
            let needed: u32 = chosen.clone().map(|(_, (_, needed))| needed).sum();
            let people: BTreeSet<&String> = chosen.flat_map(|(_, (people, _))| people).collect();
            (people.len() as u32) < needed
        })
    }

    /// A small chain: up to 5 levels drawing on 6 people (and sometimes a group), with
    /// random required flags and minimum approvals.
    fn small_chain() -> impl Strategy<Value = ApprovalSettings> {
        let level_strategy = (
            prop::collection::btree_map(0..7usize, prop::bool::weighted(0.2), 1..5),
            prop::option::of(1u32..5),
        );
        prop::collection::vec(level_strategy, 1..=5).prop_map(|levels| ApprovalSettings {
            levels: levels
                .into_iter()
                .enumerate()
                .map(|(i, (entries, min))| {
                    let approvers = entries
                        .into_iter()
                        .map(|(who, required)| match who {
                            6 => group("sre", required),
                            person => user(&format!("p{person}"), required),
                        })
                        .collect();
                    level(&format!("l{i}"), approvers, min)
                })
                .collect(),
            ..Default::default()
        })
    }

    /// Demands of named levels on up to 6 people: who each level names, what it needs.
    fn small_demands() -> impl Strategy<Value = Vec<LevelDemand>> {
        prop::collection::vec(
            (prop::collection::btree_set(0..6usize, 0..=6), 0u32..5),
            1..=5,
        )
        .prop_map(|levels| {
            levels
                .into_iter()
                .enumerate()
                .map(|(level, (others, needed))| LevelDemand {
                    level,
                    others: others.into_iter().collect(),
                    needed,
                })
                .collect()
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        /// The maximum flow refuses exactly the chains the subset check refused.
        #[test]
        fn the_flow_refuses_what_the_subsets_refused(chain in small_chain()) {
            let people = ChainPeople::of(&chain);
            let mut v = PolicyValidation::default();
            validate_people_across_levels("spec.approval", &chain, &people, &mut v, &mut ValidationWork::default());
            prop_assert_eq!(!v.is_valid(), subsets_refuse(&chain), "{:?}", v.errors);
        }

        /// When the flow falls short, the levels it blames need more than they name; when
        /// it does not, no set of levels does.
        #[test]
        fn the_minimum_cut_names_levels_that_are_short(demands in small_demands()) {
            let short_of = |levels: &[usize]| {
                let needed: u32 = levels.iter().map(|&k| demands[k].needed).sum();
                let named: BTreeSet<usize> =
                    levels.iter().flat_map(|&k| demands[k].others.iter().copied()).collect();
                needed > named.len() as u32
            };
            let any_short = (1u32..(1 << demands.len())).any(|subset| {
                let levels: Vec<usize> =
                    (0..demands.len()).filter(|k| subset & (1 << k) != 0).collect();
                short_of(&levels)
            });
            match approval_shortfall(&demands, 6, &mut ValidationWork::default()) {
                None => prop_assert!(!any_short),
                Some(levels) => {
                    prop_assert!(!levels.is_empty());
                    prop_assert!(short_of(&levels), "{:?}", levels);
                }
            }
        }
    }
}
