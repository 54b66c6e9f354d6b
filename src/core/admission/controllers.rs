//! The workload controllers (SPEC §1.6): which authenticated identities make Pods,
//! ReplicaSets and Jobs on behalf of a workload that was itself gated. What they make is
//! admitted; the same kinds made by anyone else are gated. Identified by the username the
//! API server authenticated, never by `ownerReferences`, which any writer can set.

/// kube-controller-manager's own user, when it runs without per-controller credentials
/// (`--use-service-account-credentials=false`).
pub const CONTROLLER_MANAGER_USER: &str = "system:kube-controller-manager";

/// Per-controller ServiceAccounts in kube-system (`--use-service-account-credentials`),
/// with the kinds each makes.
const CONTROLLERS: &[(&str, &[(&str, &str)])] = &[
    ("replicaset-controller", &[("", "Pod")]),
    ("replication-controller", &[("", "Pod")]),
    ("statefulset-controller", &[("", "Pod")]),
    ("daemon-set-controller", &[("", "Pod")]),
    ("job-controller", &[("", "Pod")]),
    ("deployment-controller", &[("apps", "ReplicaSet")]),
    ("cronjob-controller", &[("batch", "Job")]),
];

/// The kinds some workload controller makes.
const MADE_BY_CONTROLLERS: &[(&str, &str)] =
    &[("", "Pod"), ("apps", "ReplicaSet"), ("batch", "Job")];

/// Is `username` the workload controller that makes objects of (group, kind)? A kubelet
/// (`system:node:<name>`) counts for Pods: it creates only the mirror Pods of its static
/// Pods, which the NodeRestriction admission plugin holds it to.
pub fn is_workload_controller(username: &str, group: &str, kind: &str) -> bool {
    if !MADE_BY_CONTROLLERS.contains(&(group, kind)) {
        return false;
    }
    if username == CONTROLLER_MANAGER_USER {
        return true;
    }
    if (group, kind) == ("", "Pod") && username.starts_with("system:node:") {
        return true;
    }
    username
        .strip_prefix("system:serviceaccount:kube-system:")
        .and_then(|name| {
            CONTROLLERS
                .iter()
                .find(|(controller, _)| *controller == name)
        })
        .is_some_and(|(_, kinds)| kinds.contains(&(group, kind)))
}

/// Every username that is some workload controller (for the webhook configuration's match
/// conditions, so their writes are never sent to the webhook at all). Kubelets are matched
/// by prefix there.
pub fn controller_usernames() -> Vec<String> {
    std::iter::once(CONTROLLER_MANAGER_USER.to_string())
        .chain(
            CONTROLLERS
                .iter()
                .map(|(name, _)| format!("system:serviceaccount:kube-system:{name}")),
        )
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_controller_that_makes_a_kind_is_admitted_for_it() {
        let sa = |name: &str| format!("system:serviceaccount:kube-system:{name}");
        let cases: Vec<(String, &str, &str, bool)> = vec![
            (sa("replicaset-controller"), "", "Pod", true),
            (sa("replication-controller"), "", "Pod", true),
            // A ReplicationController is made by people only.
            (
                sa("replication-controller"),
                "",
                "ReplicationController",
                false,
            ),
            (sa("statefulset-controller"), "", "Pod", true),
            (sa("daemon-set-controller"), "", "Pod", true),
            (sa("job-controller"), "", "Pod", true),
            (sa("deployment-controller"), "apps", "ReplicaSet", true),
            (sa("cronjob-controller"), "batch", "Job", true),
            (CONTROLLER_MANAGER_USER.into(), "apps", "ReplicaSet", true),
            ("system:node:kwok-eu-west-1".into(), "", "Pod", true),
            // The wrong controller for the kind, a kind no controller makes, look-alikes.
            (sa("deployment-controller"), "", "Pod", false),
            (sa("replicaset-controller"), "apps", "ReplicaSet", false),
            (sa("cronjob-controller"), "apps", "Deployment", false),
            (CONTROLLER_MANAGER_USER.into(), "apps", "Deployment", false),
            (
                "system:node:kwok-eu-west-1".into(),
                "apps",
                "ReplicaSet",
                false,
            ),
            (
                "system:serviceaccount:shop:replicaset-controller".into(),
                "",
                "Pod",
                false,
            ),
            (sa("generic-garbage-collector"), "", "Pod", false),
            ("dave".into(), "", "Pod", false),
            ("dave".into(), "batch", "Job", false),
            ("".into(), "", "Pod", false),
        ];
        for (user, group, kind, admitted) in cases {
            assert_eq!(
                is_workload_controller(&user, group, kind),
                admitted,
                "{user} making {group}/{kind}"
            );
        }
        assert!(controller_usernames().contains(&sa("cronjob-controller")));
    }
}
