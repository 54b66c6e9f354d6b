//! The roles countersign installs: its own least-privilege ClusterRole and Role, and the
//! `countersign-approver` and `countersign-viewer` ClusterRoles for people. Every rule says
//! why it is there; docs/rbac.md lists the same reasons.

use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::SERVICE_ACCOUNT;
use super::webhooks::CONFIGURATION_NAME;
use crate::api::GROUP;
use crate::core::rollout::token::TOKEN_VERBS;

/// countersign's own ClusterRole (and, in its namespace, Role) name.
pub const OWN_ROLE: &str = "countersign";
/// The ClusterRole that lets a person review DeploymentApprovals.
pub const APPROVER_ROLE: &str = "countersign-approver";
/// The ClusterRole that lets a person read countersign's objects.
pub const VIEWER_ROLE: &str = "countersign-viewer";
/// The ClusterRole that lets a deployer follow and request approvals in a namespace; it is
/// aggregated into the built-in `edit` and `admin` roles, so whoever may change workloads
/// in a namespace may also see why a change waits, and ask ahead of time.
pub const DEPLOYER_ROLE: &str = "countersign-deployer";
/// The labels that aggregate the deployer role into `edit` and `admin`.
const AGGREGATE_TO_EDIT: &[&str] = &[
    "rbac.authorization.k8s.io/aggregate-to-edit",
    "rbac.authorization.k8s.io/aggregate-to-admin",
];
/// The ClusterRole that lets countersign put its webhook configurations back; bound only
/// when that is asked for (`--restore-webhook-configurations`).
pub const RESTORER_ROLE: &str = "countersign-webhook-restorer";
/// The ClusterRole that lets countersign patch the CA bundle it keeps into its webhook
/// configurations (`serve --self-managed-tls`); bound only then.
pub const CA_INJECTOR_ROLE: &str = "countersign-ca-injector";
/// What countersign needs to take part in GitOps syncs (`--gitops`).
pub const GITOPS_ROLE: &str = "countersign-gitops";

/// countersign's two webhook configurations.
const WEBHOOK_CONFIGURATIONS: &[&str] = &[
    "validatingwebhookconfigurations",
    "mutatingwebhookconfigurations",
];

/// One RBAC rule and the reason it exists.
pub struct Grant {
    pub api_group: &'static str,
    pub resources: &'static [&'static str],
    pub verbs: &'static [&'static str],
    /// Only these objects, by name (empty: every one).
    pub resource_names: &'static [&'static str],
    pub why: &'static str,
}

const READ: &[&str] = &["get", "list", "watch"];

/// What countersign may do in every namespace.
pub const OWN_CLUSTER_GRANTS: &[Grant] = &[
    Grant {
        api_group: GROUP,
        resources: &["approvalpolicies"],
        verbs: READ,
        resource_names: &[],
        why: "the webhook decides from the policies it caches",
    },
    Grant {
        api_group: GROUP,
        resources: &["deploymentapprovals", "changesets"],
        verbs: &["get", "list", "watch", "create"],
        resource_names: &[],
        why: "the webhook caches the requests and their change sets, and opens one on the first denied attempt of a change (a GitOps sync's requests as one set)",
    },
    Grant {
        api_group: GROUP,
        resources: &["deploymentapprovals/status", "changesets/status"],
        verbs: &["get", "update", "patch"],
        resource_names: &[],
        why: "the webhook moves an approved request to Deploying (compare-and-swap) as it admits the change",
    },
    Grant {
        api_group: GROUP,
        resources: &["approvalpolicies/status"],
        verbs: &["get", "patch"],
        resource_names: &[],
        why: "the operator reports in each policy's status whether it is in force, and its warnings",
    },
    Grant {
        api_group: "",
        resources: &["namespaces"],
        verbs: &["get", "list", "watch", "patch"],
        resource_names: &[],
        why: "policies match namespaces by name, label and region; the operator keeps the label countersign.dev/gated on exactly those a policy can gate, so the workload webhook is sent nothing else",
    },
    Grant {
        api_group: "rbac.authorization.k8s.io",
        resources: &["rolebindings", "clusterrolebindings"],
        verbs: READ,
        resource_names: &[],
        why: "role approvers are whoever a RoleBinding or ClusterRoleBinding binds to the role",
    },
    Grant {
        api_group: "admissionregistration.k8s.io",
        resources: WEBHOOK_CONFIGURATIONS,
        verbs: READ,
        resource_names: &[CONFIGURATION_NAME],
        why: "the API server never sends a webhook configuration to a webhook, so the operator watches its own two and audits each change or deletion of them",
    },
    Grant {
        api_group: "",
        resources: &["events"],
        verbs: &["create", "patch"],
        resource_names: &[],
        why: "denials and transitions are Kubernetes Events on the target and the request",
    },
    Grant {
        api_group: "events.k8s.io",
        resources: &["events"],
        verbs: &["create", "patch"],
        resource_names: &[],
        why: "the same Events through the events.k8s.io API",
    },
    // Scoped deploy tokens (SPEC §8, docs/deploy-tokens.md).
    Grant {
        api_group: "apps",
        resources: &["deployments", "statefulsets", "daemonsets", "replicasets"],
        verbs: TOKEN_VERBS,
        resource_names: &[],
        why: "the operator watches these to confirm an admitted change's rollout (Deployed or Failed); and a deploy token's Role grants these verbs on its one target, which the API server allows only to a holder of them (no escalate, no bind)",
    },
    Grant {
        api_group: "batch",
        resources: &["jobs", "cronjobs"],
        verbs: TOKEN_VERBS,
        resource_names: &[],
        why: "the same: an admitted Job is Deployed when it completes, Failed when it fails; deploy tokens of Jobs and CronJobs",
    },
    Grant {
        api_group: "",
        resources: &["pods"],
        verbs: TOKEN_VERBS,
        resource_names: &[],
        why: "the same for deploy tokens of Pods",
    },
    Grant {
        api_group: "",
        resources: &["serviceaccounts"],
        verbs: &["create", "update", "delete"],
        resource_names: &[],
        why: "a deploy token's ServiceAccount: created on approval, replaced when left over from a deleted request of the same name, deleted to revoke the token",
    },
    Grant {
        api_group: "",
        resources: &["serviceaccounts/token"],
        verbs: &["create"],
        resource_names: &[],
        why: "the deploy token itself, from the TokenRequest API, bound to its Secret",
    },
    Grant {
        api_group: "rbac.authorization.k8s.io",
        resources: &["roles", "rolebindings"],
        verbs: &["create", "update", "delete"],
        resource_names: &[],
        why: "a deploy token's Role on its one target and the RoleBinding to its ServiceAccount; deleted to revoke the token",
    },
    Grant {
        api_group: "",
        resources: &["secrets"],
        verbs: &["create", "update"],
        resource_names: &[],
        why: "the Secret that hands a deploy token to the pipeline, the Secret countersign-seal-key (made by the first replica), the Secret countersign-audit-signing-key (made by the first leader) and with --self-managed-tls the Secret countersign-webhook-tls in its own namespace; no get, list, watch, patch or delete, as each returns a Secret's contents (a token's Secret goes with its ServiceAccount by garbage collection)",
    },
];

/// What countersign may do in its own namespace only.
pub const OWN_NAMESPACE_GRANTS: &[Grant] = &[
    Grant {
        api_group: GROUP,
        resources: &["auditentries"],
        verbs: &["get", "list", "watch", "create", "delete"],
        resource_names: &[],
        why: "the audit trail lives in the install namespace; countersign appends to it, and its retention deletes entries older than --audit-retention (the webhook refuses any younger)",
    },
    Grant {
        api_group: GROUP,
        resources: &["auditentries/status"],
        verbs: &["get", "patch"],
        resource_names: &[],
        why: "a break-glass entry's announcements to the policies' sinks are recorded in its status, and the leader writes each entry's link in the audit trail's hash chain there",
    },
    Grant {
        api_group: "coordination.k8s.io",
        resources: &["leases"],
        verbs: &["get", "create", "update", "delete"],
        resource_names: &[],
        why: "the operator's replicas elect one leader on a Lease; and each object an approved change is admitted to has a Lease as its one-change lock, taken by the webhook at the version it read and deleted by the operator when the rollout ends",
    },
    Grant {
        api_group: "",
        resources: &["configmaps"],
        verbs: &["get", "list", "create", "patch", "delete"],
        resource_names: &[],
        why: "with --gitops, the replicas that each answered part of a held sync's dry runs share their parts (sealed) in a ConfigMap here when the sync reports the hold, so its changes open as one change set; old ones are deleted after ten minutes; the leader keeps the audit chain's record in ConfigMap countersign-audit-chain (advanced only at the version it read) and publishes the checkpoints' verifier key in ConfigMap countersign-audit-key",
    },
    Grant {
        api_group: "",
        resources: &["secrets"],
        verbs: &["get"],
        resource_names: &[],
        why: "a notification sink's URL is the key url of the Secret of its name here, the Secret countersign-seal-key holds the key that seals requests' summaries (and the entries countersign writes), the Secret countersign-audit-signing-key the key audit checkpoints are signed with, and with --self-managed-tls the Secret countersign-webhook-tls holds its CA and serving certificate; get by name only, so no Secret can be listed or watched",
    },
];

/// What an approver may do: read requests and append a review (the webhook checks that the
/// review is theirs and nothing else changed).
pub const APPROVER_GRANTS: &[Grant] = &[Grant {
    api_group: GROUP,
    resources: &["deploymentapprovals", "changesets"],
    verbs: &["get", "list", "watch", "patch", "update"],
    resource_names: &[],
    why: "approvers read requests and append their review by patching the request, or its change set",
}];

/// What a deployer may do where they may edit workloads: read the requests (`countersign
/// list`, `status`) and open one ahead of time (`countersign request`); countersign's webhook
/// admits only a request for a change of their own, under the governing policy's chain.
pub const DEPLOYER_GRANTS: &[Grant] = &[Grant {
    api_group: GROUP,
    resources: &["deploymentapprovals", "changesets"],
    verbs: &["get", "list", "watch", "create"],
    resource_names: &[],
    why: "deployers see why a change waits and open a request (or a set of them) ahead of a GitOps sync (countersign checks it is theirs); aggregated into edit and admin",
}];

/// What a viewer may do: read countersign's three kinds.
pub const VIEWER_GRANTS: &[Grant] = &[Grant {
    api_group: GROUP,
    resources: &[
        "approvalpolicies",
        "deploymentapprovals",
        "changesets",
        "auditentries",
    ],
    verbs: READ,
    resource_names: &[],
    why: "read-only view of policies, requests, change sets and the audit trail",
}];

/// What countersign may do to put its webhook configurations back, when asked to.
pub const RESTORER_GRANTS: &[Grant] = &[
    Grant {
        api_group: "admissionregistration.k8s.io",
        resources: WEBHOOK_CONFIGURATIONS,
        verbs: &["update"],
        resource_names: &[CONFIGURATION_NAME],
        why: "a changed configuration is replaced by the one countersign installs",
    },
    Grant {
        api_group: "admissionregistration.k8s.io",
        resources: WEBHOOK_CONFIGURATIONS,
        verbs: &["create"],
        resource_names: &[],
        why: "a deleted configuration is created again; RBAC cannot hold a create to a name, so this role is bound only with --restore-webhook-configurations",
    },
];

/// What countersign may do to its webhook configurations when it keeps their CA itself.
pub const CA_INJECTOR_GRANTS: &[Grant] = &[Grant {
    api_group: "admissionregistration.k8s.io",
    resources: WEBHOOK_CONFIGURATIONS,
    verbs: &["patch"],
    resource_names: &[CONFIGURATION_NAME],
    why: "with --self-managed-tls, the CA bundle countersign keeps is patched into each webhook's clientConfig; any other difference is only audited (or restored, with the restorer role)",
}];

/// What countersign may do with GitOps controllers' objects, when asked to (`--gitops`).
pub const GITOPS_GRANTS: &[Grant] = &[
    Grant {
        api_group: "kustomize.toolkit.fluxcd.io",
        resources: &["kustomizations"],
        verbs: &["get", "list", "watch", "patch"],
        resource_names: &[],
        why: "with --gitops, a Flux sync held for approval is reported on its Kustomization, which opens the requests of every gated change of that sync; once one is approved, its Kustomization is asked to apply again (the annotation reconcile.fluxcd.io/requestedAt, as flux reconcile sets it); bound only with --gitops",
    },
    Grant {
        api_group: "argoproj.io",
        resources: &["applications"],
        verbs: &["get", "patch"],
        resource_names: &[],
        why: "with --gitops, once a change an Argo CD sync applied is approved, its Application is given a sync operation at the revision that failed, as argocd app sync does, unless one is running; bound only with --gitops",
    },
];

/// Every grant of every role as a Markdown table (role, scope, API group, resources,
/// verbs, why): the body of docs/rbac.md, which a test keeps equal to this.
pub fn markdown_table() -> String {
    let mut table = String::from(
        "| Role | Scope | API group | Resources | Verbs | Why |\n|---|---|---|---|---|---|\n",
    );
    let roles: [(&str, &str, &[Grant]); 8] = [
        (OWN_ROLE, "ClusterRole", OWN_CLUSTER_GRANTS),
        (
            OWN_ROLE,
            "Role in the install namespace",
            OWN_NAMESPACE_GRANTS,
        ),
        (APPROVER_ROLE, "ClusterRole", APPROVER_GRANTS),
        (VIEWER_ROLE, "ClusterRole", VIEWER_GRANTS),
        (
            DEPLOYER_ROLE,
            "ClusterRole, aggregated into edit and admin",
            DEPLOYER_GRANTS,
        ),
        (
            RESTORER_ROLE,
            "ClusterRole, bound only with --restore-webhook-configurations",
            RESTORER_GRANTS,
        ),
        (
            CA_INJECTOR_ROLE,
            "ClusterRole, bound only with --self-managed-tls",
            CA_INJECTOR_GRANTS,
        ),
        (
            GITOPS_ROLE,
            "ClusterRole, bound only with --gitops",
            GITOPS_GRANTS,
        ),
    ];
    for (role, scope, grants) in roles {
        for grant in grants {
            let group = if grant.api_group.is_empty() {
                "(core)"
            } else {
                grant.api_group
            };
            let names = if grant.resource_names.is_empty() {
                String::new()
            } else {
                format!(" (named {})", grant.resource_names.join(", "))
            };
            table.push_str(&format!(
                "| `{role}` | {scope} | `{group}` | {}{names} | {} | {} |\n",
                grant.resources.join(", "),
                grant.verbs.join(", "),
                grant.why
            ));
        }
    }
    table
}

fn rules(grants: &[Grant]) -> Vec<PolicyRule> {
    grants
        .iter()
        .map(|g| PolicyRule {
            api_groups: Some(vec![g.api_group.into()]),
            resources: Some(g.resources.iter().map(|r| r.to_string()).collect()),
            verbs: g.verbs.iter().map(|v| v.to_string()).collect(),
            resource_names: (!g.resource_names.is_empty())
                .then(|| g.resource_names.iter().map(|n| n.to_string()).collect()),
            ..PolicyRule::default()
        })
        .collect()
}

fn meta(name: &str, namespace: Option<&str>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: namespace.map(str::to_string),
        labels: Some(
            [(
                "app.kubernetes.io/name".to_string(),
                "countersign".to_string(),
            )]
            .into(),
        ),
        ..ObjectMeta::default()
    }
}

fn cluster_role(name: &str, grants: &[Grant]) -> ClusterRole {
    ClusterRole {
        metadata: meta(name, None),
        rules: Some(rules(grants)),
        ..ClusterRole::default()
    }
}

/// The ClusterRoles: countersign's own, approver, viewer, deployer, webhook restorer, CA
/// injector, GitOps.
pub fn cluster_roles() -> Vec<ClusterRole> {
    let mut deployer = cluster_role(DEPLOYER_ROLE, DEPLOYER_GRANTS);
    deployer
        .metadata
        .labels
        .get_or_insert_with(Default::default)
        .extend(
            AGGREGATE_TO_EDIT
                .iter()
                .map(|l| (l.to_string(), "true".to_string())),
        );
    vec![
        cluster_role(OWN_ROLE, OWN_CLUSTER_GRANTS),
        cluster_role(APPROVER_ROLE, APPROVER_GRANTS),
        cluster_role(VIEWER_ROLE, VIEWER_GRANTS),
        deployer,
        cluster_role(RESTORER_ROLE, RESTORER_GRANTS),
        cluster_role(CA_INJECTOR_ROLE, CA_INJECTOR_GRANTS),
        cluster_role(GITOPS_ROLE, GITOPS_GRANTS),
    ]
}

/// countersign's Role in its namespace.
pub fn own_role(install_namespace: &str) -> Role {
    Role {
        metadata: meta(OWN_ROLE, Some(install_namespace)),
        rules: Some(rules(OWN_NAMESPACE_GRANTS)),
    }
}

/// The ServiceAccount countersign runs as.
pub fn service_account(install_namespace: &str) -> ServiceAccount {
    ServiceAccount {
        metadata: meta(SERVICE_ACCOUNT, Some(install_namespace)),
        ..ServiceAccount::default()
    }
}

fn own_subject(install_namespace: &str) -> Vec<Subject> {
    vec![Subject {
        kind: "ServiceAccount".into(),
        name: SERVICE_ACCOUNT.into(),
        namespace: Some(install_namespace.into()),
        api_group: None,
    }]
}

/// Binds countersign's ClusterRole to its ServiceAccount.
pub fn own_cluster_role_binding(install_namespace: &str) -> ClusterRoleBinding {
    cluster_role_binding(OWN_ROLE, install_namespace)
}

/// Binds the webhook restorer ClusterRole to countersign's ServiceAccount.
pub fn restorer_cluster_role_binding(install_namespace: &str) -> ClusterRoleBinding {
    cluster_role_binding(RESTORER_ROLE, install_namespace)
}

/// Binds the CA injector ClusterRole to countersign's ServiceAccount.
pub fn ca_injector_cluster_role_binding(install_namespace: &str) -> ClusterRoleBinding {
    cluster_role_binding(CA_INJECTOR_ROLE, install_namespace)
}

/// Binds the GitOps ClusterRole to countersign's ServiceAccount.
pub fn gitops_cluster_role_binding(install_namespace: &str) -> ClusterRoleBinding {
    cluster_role_binding(GITOPS_ROLE, install_namespace)
}

fn cluster_role_binding(role: &str, install_namespace: &str) -> ClusterRoleBinding {
    ClusterRoleBinding {
        metadata: meta(role, None),
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "ClusterRole".into(),
            name: role.into(),
        },
        subjects: Some(own_subject(install_namespace)),
    }
}

/// Binds countersign's Role to its ServiceAccount in the install namespace.
pub fn own_role_binding(install_namespace: &str) -> RoleBinding {
    RoleBinding {
        metadata: meta(OWN_ROLE, Some(install_namespace)),
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "Role".into(),
            name: OWN_ROLE.into(),
        },
        subjects: Some(own_subject(install_namespace)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// No right that reads a Secret's contents in other namespaces than its own (a patch or a
    /// deletion answers with them), and RBAC writes only for deploy tokens' Roles and
    /// RoleBindings, never with `escalate` or `bind`: the API server holds countersign to
    /// granting what it holds.
    #[test]
    fn countersign_reads_secrets_only_by_name_in_its_namespace_and_cannot_grant_what_it_lacks() {
        for grant in OWN_CLUSTER_GRANTS {
            if grant.resources.contains(&"secrets") {
                assert_eq!(grant.verbs, ["create", "update"], "{}", grant.why);
            }
        }
        for grant in OWN_NAMESPACE_GRANTS {
            // Sinks' Secrets in its own namespace, one by name: never listed or watched.
            if grant.resources.contains(&"secrets") {
                assert_eq!(grant.verbs, ["get"], "{}", grant.why);
            }
        }
        for grant in OWN_CLUSTER_GRANTS.iter().chain(OWN_NAMESPACE_GRANTS) {
            assert!(!grant.verbs.contains(&"*"), "{}", grant.why);
            if grant.api_group == "rbac.authorization.k8s.io" {
                for verb in grant.verbs {
                    assert!(!["escalate", "bind", "impersonate"].contains(verb));
                    if !READ.contains(verb) {
                        assert_eq!(grant.resources, ["roles", "rolebindings"], "{verb}");
                    }
                }
            }
        }
    }

    /// Creating a deploy token's Role succeeds only if countersign holds every verb it
    /// grants, on every built-in kind a token can be for.
    #[test]
    fn countersign_holds_what_a_deploy_token_grants() {
        use crate::core::rollout::token::builtin_resource;
        let kinds = [
            ("apps/v1", "Deployment"),
            ("apps/v1", "StatefulSet"),
            ("apps/v1", "DaemonSet"),
            ("apps/v1", "ReplicaSet"),
            ("batch/v1", "Job"),
            ("batch/v1", "CronJob"),
            ("v1", "Pod"),
        ];
        for (api_version, kind) in kinds {
            let resource = builtin_resource(api_version, kind).expect("a built-in kind");
            for verb in TOKEN_VERBS {
                assert!(
                    OWN_CLUSTER_GRANTS
                        .iter()
                        .any(|g| g.api_group == resource.group
                            && g.resources.contains(&resource.plural.as_str())
                            && g.verbs.contains(verb)),
                    "{verb} {}",
                    resource.plural
                );
            }
        }
    }

    #[test]
    fn approvers_cannot_write_status() {
        for grant in APPROVER_GRANTS {
            assert!(grant.resources.iter().all(|r| !r.contains('/')));
        }
    }
}
