//! The scoped deploy token (SPEC §8): when to issue and revoke it, and the objects it is made
//! of. The operator's shell (`operator::grants`) creates and deletes what this builds.
//!
//! A token is a ServiceAccount `countersign-deploy-<approval>` in the target's namespace, a
//! Role allowing only what a rollout does to the one target (`resourceNames`), a RoleBinding
//! of the two, and a TokenRequest token bound to a Secret of the same name that holds it.
//! One request gets at most one token: once revoked, never again.

use std::collections::BTreeMap;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::ByteString;
use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use sha2::{Digest, Sha256};

use crate::api::{ApprovalPhase, DeploymentApproval, GROUP, GrantSettings, VERSION};
use crate::core::change::api_group;
use crate::core::policy::windows::parse_duration;

/// A token's lifetime when the policy's `grant.ttl` is absent.
pub const DEFAULT_TOKEN_TTL: SignedDuration = SignedDuration::from_hours(1);
/// The shortest token the TokenRequest API issues (`expirationSeconds` ≥ 600). Policy
/// validation refuses a shorter `grant.ttl`; a snapshot holding one is raised to this.
pub const MIN_TOKEN_TTL: SignedDuration = SignedDuration::from_mins(10);
/// The longest token the TokenRequest API issues (`expirationSeconds` ≤ 2³²); a longer
/// `grant.ttl` is refused by validation and lowered to this in a snapshot.
pub const MAX_TOKEN_TTL: SignedDuration = SignedDuration::from_secs(1 << 32);
/// What the token may do to its one target: read it (`kubectl apply` reads before it
/// patches; `kubectl rollout status` and `kubectl wait` list and watch it with a
/// `metadata.name` field selector, which RBAC authorizes against `resourceNames`), and change
/// it (`apply`, `set image`, `rollout restart`: patch; `replace`: update). Never create or
/// delete: RBAC cannot limit `create` to a name, and deleting is no rollout.
pub const TOKEN_VERBS: &[&str] = &["get", "list", "watch", "update", "patch"];
/// The key of the token in its Secret.
pub const TOKEN_KEY: &str = "token";
/// The key of the target's namespace in the token's Secret, for `kubectl -n`.
pub const NAMESPACE_KEY: &str = "namespace";
/// Label on every object of a deploy token.
pub const DEPLOY_TOKEN_LABEL: &str = "countersign.dev/deploy-token";
/// Annotation naming the DeploymentApproval a deploy token object belongs to.
pub const APPROVAL_ANNOTATION: &str = "countersign.dev/approval";

const NAME_PREFIX: &str = "countersign-deploy-";
/// A DNS label's length limit: the four names fit every kind's rules.
const MAX_NAME: usize = 63;

/// What the operator should do about an approval's deploy token at `now`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GrantAction {
    Nothing,
    /// Issue a token that lasts `ttl`.
    Issue {
        ttl: SignedDuration,
    },
    /// Revoke the live token.
    Revoke {
        reason: RevokeReason,
    },
}

/// Why a token is revoked (the audit entry's reason).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RevokeReason {
    /// The request reached a terminal phase.
    Ended(ApprovalPhase),
    /// The token's TTL ran out.
    TtlElapsed,
}

impl std::fmt::Display for RevokeReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RevokeReason::Ended(phase) => write!(f, "the request is {phase}"),
            RevokeReason::TtlElapsed => write!(f, "the token's TTL ran out"),
        }
    }
}

/// The action, and when the answer changes without any write (the live token's expiry):
/// reconcile again then instead of polling.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GrantPlan {
    pub action: GrantAction,
    pub next_deadline: Option<Timestamp>,
}

/// What to do about the deploy token of `approval`, as its stored status stands, at `now`.
///
/// - Issue when the policy snapshot has a `grant`, the request is `Approved` (and its
///   approvalTTL has not run out) and no token was ever issued. Only at `Approved`: a change
///   already admitted (`Deploying`) no longer needs one.
/// - Revoke a live token when the request is `Deployed`, `Failed`, `Rejected` or `Expired`,
///   or its `expiresAt` has passed. `Deploying` keeps it: the pipeline still applies the
///   change and watches its rollout.
/// - A request that goes back from `Deploying` to `Approved` keeps its live token, and one
///   whose token was revoked gets no second one (`revokedAt` is set): one request, one
///   token, one TTL.
///
/// The operator calls this with the status it has just written (after `plan_status`).
pub fn plan_grant(approval: &DeploymentApproval, now: Timestamp) -> GrantPlan {
    let status = approval.status.as_ref();
    let phase = approval.phase();
    let token = status.and_then(|s| s.deploy_token.as_ref());
    let nothing = |next_deadline| GrantPlan {
        action: GrantAction::Nothing,
        next_deadline,
    };
    match token {
        Some(token) if token.revoked_at.is_some() => nothing(None),
        Some(token) => {
            let reason = if phase.is_terminal() {
                Some(RevokeReason::Ended(phase))
            } else if token.expires_at.0 <= now {
                Some(RevokeReason::TtlElapsed)
            } else {
                None
            };
            match reason {
                Some(reason) => GrantPlan {
                    action: GrantAction::Revoke { reason },
                    next_deadline: None,
                },
                None => nothing(Some(token.expires_at.0)),
            }
        }
        None => {
            let approval_lasts = status
                .and_then(|s| s.expires_at.as_ref())
                .is_none_or(|expires| expires.0 > now);
            match &approval.spec.policy.grant {
                Some(grant) if phase == ApprovalPhase::Approved && approval_lasts => GrantPlan {
                    action: GrantAction::Issue {
                        ttl: token_ttl(grant),
                    },
                    next_deadline: None,
                },
                _ => nothing(None),
            }
        }
    }
}

/// The token lifetime a grant asks for: its `ttl`, within [`MIN_TOKEN_TTL`] and
/// [`MAX_TOKEN_TTL`];
/// [`DEFAULT_TOKEN_TTL`] when absent or unreadable (validation refuses unreadable ones).
pub fn token_ttl(grant: &GrantSettings) -> SignedDuration {
    grant
        .ttl
        .as_deref()
        .and_then(|ttl| parse_duration(ttl).ok())
        .unwrap_or(DEFAULT_TOKEN_TTL)
        .clamp(MIN_TOKEN_TTL, MAX_TOKEN_TTL)
}

/// Is `username` a deploy token's ServiceAccount (`system:serviceaccount:<ns>:countersign-deploy-…`)?
pub fn is_deploy_token(username: &str) -> bool {
    username
        .strip_prefix("system:serviceaccount:")
        .and_then(|rest| rest.split_once(':'))
        .is_some_and(|(_, name)| name.starts_with(NAME_PREFIX))
}

/// The names of a deploy token's objects, all in the approval's namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeployTokenNames {
    pub service_account: String,
    pub role: String,
    pub role_binding: String,
    pub secret: String,
}

/// The deterministic names of the deploy token objects of the approval `approval_name`: all
/// four are `countersign-deploy-<approval>`, a valid DNS label. A name that would be longer
/// than 63 characters, or has characters a label may not (`.`), is cut and sanitised and
/// ends in 8 hex digits of the approval name's SHA-256, so two approvals never share one.
pub fn names(approval_name: &str) -> DeployTokenNames {
    let name = object_name(approval_name);
    DeployTokenNames {
        service_account: name.clone(),
        role: name.clone(),
        role_binding: name.clone(),
        secret: name,
    }
}

fn object_name(approval_name: &str) -> String {
    let plain = format!("{NAME_PREFIX}{approval_name}");
    let is_label_text = approval_name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if plain.len() <= MAX_NAME
        && is_label_text
        && !approval_name.is_empty()
        && !approval_name.ends_with('-')
    {
        return plain;
    }
    let hash = Sha256::digest(approval_name.as_bytes());
    let hex: String = format!("{hash:x}").chars().take(8).collect();
    let room = MAX_NAME - NAME_PREFIX.len() - hex.len() - 1;
    let body: String = approval_name
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() {
                c
            } else {
                '-'
            }
        })
        .take(room)
        .collect();
    let body = body.trim_matches('-');
    if body.is_empty() {
        format!("{NAME_PREFIX}{hex}")
    } else {
        format!("{NAME_PREFIX}{body}-{hex}")
    }
}

/// The API resource a token's Role names: the target's group and resource plural.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetResource {
    pub group: String,
    pub plural: String,
}

/// The resource of a built-in gated kind (`apps/v1` `Deployment` → `apps`, `deployments`);
/// `None` for any other kind, whose plural the shell finds by API discovery.
pub fn builtin_resource(api_version: &str, kind: &str) -> Option<TargetResource> {
    const BUILTIN: &[(&str, &str, &str)] = &[
        ("apps", "Deployment", "deployments"),
        ("apps", "StatefulSet", "statefulsets"),
        ("apps", "DaemonSet", "daemonsets"),
        ("apps", "ReplicaSet", "replicasets"),
        ("batch", "Job", "jobs"),
        ("batch", "CronJob", "cronjobs"),
        ("", "Pod", "pods"),
    ];
    let group = api_group(api_version);
    BUILTIN
        .iter()
        .find(|(g, k, _)| *g == group && *k == kind)
        .map(|(g, _, plural)| TargetResource {
            group: (*g).into(),
            plural: (*plural).into(),
        })
}

/// The Role's rules: [`TOKEN_VERBS`] on the one object `name` of `resource`, nothing else.
pub fn role_rules(resource: &TargetResource, name: &str) -> Vec<PolicyRule> {
    vec![PolicyRule {
        api_groups: Some(vec![resource.group.clone()]),
        resources: Some(vec![resource.plural.clone()]),
        resource_names: Some(vec![name.into()]),
        verbs: TOKEN_VERBS.iter().map(|v| v.to_string()).collect(),
        non_resource_urls: None,
    }]
}

/// Why the objects of a token cannot be built.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GrantError {
    #[error("the DeploymentApproval has no {0}")]
    MissingMetadata(&'static str),
}

/// The ServiceAccount, Role and RoleBinding of a token, each owned by the approval, so that
/// garbage collection removes them when the approval is deleted.
#[derive(Clone, Debug, PartialEq)]
pub struct DeployTokenObjects {
    /// The approval's name.
    pub approval: String,
    pub names: DeployTokenNames,
    pub namespace: String,
    pub service_account: ServiceAccount,
    pub role: Role,
    pub role_binding: RoleBinding,
}

/// Build the ServiceAccount, Role and RoleBinding for `approval`'s token on `resource`.
pub fn token_objects(
    approval: &DeploymentApproval,
    resource: &TargetResource,
) -> Result<DeployTokenObjects, GrantError> {
    let (name, namespace, uid) = approval_identity(approval)?;
    let names = names(name);
    let owner = OwnerReference {
        api_version: format!("{GROUP}/{VERSION}"),
        kind: "DeploymentApproval".into(),
        name: name.into(),
        uid: uid.into(),
        controller: Some(true),
        // Blocking the owner's deletion needs the right to set its finalizers; GC needs none.
        block_owner_deletion: None,
    };
    let meta = |object: &str| ObjectMeta {
        name: Some(object.into()),
        namespace: Some(namespace.into()),
        owner_references: Some(vec![owner.clone()]),
        ..token_meta(name)
    };
    Ok(DeployTokenObjects {
        service_account: ServiceAccount {
            metadata: meta(&names.service_account),
            // No Secret-based token may ever be mounted or minted for it: the only token is
            // the TokenRequest one.
            automount_service_account_token: Some(false),
            ..ServiceAccount::default()
        },
        role: Role {
            metadata: meta(&names.role),
            rules: Some(role_rules(resource, &approval.spec.target.name)),
        },
        role_binding: RoleBinding {
            metadata: meta(&names.role_binding),
            role_ref: RoleRef {
                api_group: Some("rbac.authorization.k8s.io".into()),
                kind: "Role".into(),
                name: names.role.clone(),
            },
            subjects: Some(vec![Subject {
                kind: "ServiceAccount".into(),
                name: names.service_account.clone(),
                namespace: Some(namespace.into()),
                api_group: None,
            }]),
        },
        approval: name.into(),
        names,
        namespace: namespace.into(),
    })
}

/// The Secret that holds the token (`token`, and the namespace under `namespace`), owned by
/// the token's ServiceAccount (uid `service_account_uid`) alone: deleting the ServiceAccount,
/// which revocation does, lets garbage collection remove it, so countersign never needs to
/// delete (and thereby read) a Secret. `Opaque`: the `service-account-token` type would have
/// the token controller add a token that never expires.
pub fn token_secret(
    objects: &DeployTokenObjects,
    service_account_uid: &str,
    token: Option<&str>,
) -> Secret {
    let data = token.map(|token| {
        BTreeMap::from([
            (TOKEN_KEY.into(), ByteString(token.as_bytes().to_vec())),
            (
                NAMESPACE_KEY.into(),
                ByteString(objects.namespace.as_bytes().to_vec()),
            ),
        ])
    });
    Secret {
        metadata: ObjectMeta {
            name: Some(objects.names.secret.clone()),
            namespace: Some(objects.namespace.clone()),
            owner_references: Some(vec![OwnerReference {
                api_version: "v1".into(),
                kind: "ServiceAccount".into(),
                name: objects.names.service_account.clone(),
                uid: service_account_uid.into(),
                controller: Some(true),
                block_owner_deletion: None,
            }]),
            ..token_meta(&objects.approval)
        },
        type_: Some("Opaque".into()),
        data,
        ..Secret::default()
    }
}

/// The TokenRequest for the token's ServiceAccount: `ttl` long (whole seconds), for the API
/// server's default audiences, bound to the Secret (uid `secret_uid` when known; else the API
/// server binds the Secret of that name it finds), so that deleting the Secret or the
/// ServiceAccount invalidates it at once.
pub fn token_request(
    objects: &DeployTokenObjects,
    secret_uid: Option<&str>,
    ttl: SignedDuration,
) -> TokenRequest {
    TokenRequest {
        metadata: ObjectMeta::default(),
        spec: Some(TokenRequestSpec {
            audiences: None,
            bound_object_ref: Some(BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Secret".into()),
                name: Some(objects.names.secret.clone()),
                uid: secret_uid.map(str::to_string),
            }),
            expiration_seconds: Some(ttl.clamp(MIN_TOKEN_TTL, MAX_TOKEN_TTL).as_secs()),
        }),
        status: None,
    }
}

fn approval_identity(approval: &DeploymentApproval) -> Result<(&str, &str, &str), GrantError> {
    let meta = &approval.metadata;
    let name = meta
        .name
        .as_deref()
        .ok_or(GrantError::MissingMetadata("name"))?;
    let namespace = meta
        .namespace
        .as_deref()
        .ok_or(GrantError::MissingMetadata("namespace"))?;
    let uid = meta
        .uid
        .as_deref()
        .ok_or(GrantError::MissingMetadata("uid"))?;
    Ok((name, namespace, uid))
}

/// Labels and annotations every token object carries.
fn token_meta(approval_name: &str) -> ObjectMeta {
    ObjectMeta {
        labels: Some(BTreeMap::from([
            (
                "app.kubernetes.io/managed-by".to_string(),
                "countersign".to_string(),
            ),
            (DEPLOY_TOKEN_LABEL.to_string(), "true".to_string()),
        ])),
        annotations: Some(BTreeMap::from([(
            APPROVAL_ANNOTATION.to_string(),
            approval_name.to_string(),
        )])),
        ..ObjectMeta::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{DeployTokenStatus, GrantSettings};
    use crate::core::test_builders::{minutes as t, two_level_request};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    /// The builders' request with a grant (`ttl`), a stored `phase`, and a token issued at
    /// minute 5 lasting until `expires` (revoked at `revoked` when given).
    fn request(
        grant: Option<&str>,
        phase: Option<ApprovalPhase>,
        token: Option<(i64, Option<i64>)>,
    ) -> DeploymentApproval {
        let mut approval = two_level_request(&[], phase);
        approval.spec.policy.grant = grant.map(|ttl| GrantSettings {
            ttl: (!ttl.is_empty()).then(|| ttl.to_string()),
        });
        if let Some((expires, revoked)) = token {
            let status = approval.status.get_or_insert_with(Default::default);
            status.deploy_token = Some(DeployTokenStatus {
                secret_name: "countersign-deploy-web-1".into(),
                service_account: "countersign-deploy-web-1".into(),
                issued_at: Time(t(5)),
                expires_at: Time(t(expires)),
                revoked_at: revoked.map(|m| Time(t(m))),
            });
        }
        approval
    }

    fn issue(minutes: i64) -> GrantAction {
        GrantAction::Issue {
            ttl: SignedDuration::from_mins(minutes),
        }
    }

    fn revoke(reason: RevokeReason) -> GrantAction {
        GrantAction::Revoke { reason }
    }

    #[test]
    fn grant_plans() {
        use ApprovalPhase::*;
        use GrantAction::Nothing;
        // (name, grant ttl ("" = none given), stored phase, token (expires, revoked),
        //  now, action, next deadline)
        type Case = (
            &'static str,
            Option<&'static str>,
            Option<ApprovalPhase>,
            Option<(i64, Option<i64>)>,
            i64,
            GrantAction,
            Option<i64>,
        );
        let ttl_out = revoke(RevokeReason::TtlElapsed);
        let ended = |phase| revoke(RevokeReason::Ended(phase));
        let max = GrantAction::Issue { ttl: MAX_TOKEN_TTL };
        #[rustfmt::skip]
        let cases: Vec<Case> = vec![
            ("no grant", None, Some(Approved), None, 6, Nothing, None),
            ("pending", Some("30m"), Some(Pending), None, 6, Nothing, None),
            ("no status yet", Some("30m"), None, None, 6, Nothing, None),
            ("approved", Some("30m"), Some(Approved), None, 6, issue(30), None),
            ("default ttl", Some(""), Some(Approved), None, 6, issue(60), None),
            ("short ttl raised", Some("1m"), Some(Approved), None, 6, issue(10), None),
            ("bad ttl: default", Some("soon"), Some(Approved), None, 6, issue(60), None),
            ("long ttl lowered", Some("5000000h"), Some(Approved), None, 6, max, None),
            ("admitted without one", Some("30m"), Some(Deploying), None, 6, Nothing, None),
            ("rejected", Some("30m"), Some(Rejected), None, 6, Nothing, None),
            ("live", Some("30m"), Some(Approved), Some((35, None)), 6, Nothing, Some(35)),
            ("deploying keeps it", Some("30m"), Some(Deploying), Some((35, None)), 20, Nothing, Some(35)),
            ("ttl ran out", Some("30m"), Some(Deploying), Some((35, None)), 35, ttl_out, None),
            ("deployed", Some("30m"), Some(Deployed), Some((35, None)), 20, ended(Deployed), None),
            ("failed", Some("30m"), Some(Failed), Some((35, None)), 20, ended(Failed), None),
            ("expired", Some("30m"), Some(Expired), Some((35, None)), 20, ended(Expired), None),
            ("rejected with one", Some("30m"), Some(Rejected), Some((35, None)), 20, ended(Rejected), None),
            ("revoked stays revoked", Some("30m"), Some(Deployed), Some((35, Some(20))), 40, Nothing, None),
            ("back to approved: the live one stays", Some("30m"), Some(Approved), Some((35, None)), 20, Nothing, Some(35)),
            ("back to approved after revocation: no second", Some("30m"), Some(Approved), Some((35, Some(35))), 36, Nothing, None),
        ];
        for (name, grant, phase, token, now, action, deadline) in cases {
            let plan = plan_grant(&request(grant, phase, token), t(now));
            assert_eq!(plan.action, action, "{name}");
            assert_eq!(plan.next_deadline, deadline.map(t), "{name}");
        }
    }

    #[test]
    fn no_token_once_the_approval_ran_out() {
        let mut approval = request(Some("30m"), Some(ApprovalPhase::Approved), None);
        if let Some(status) = approval.status.as_mut() {
            status.expires_at = Some(Time(t(30)));
        }
        assert_eq!(plan_grant(&approval, t(29)).action, issue(30));
        assert_eq!(plan_grant(&approval, t(30)).action, GrantAction::Nothing);
    }

    fn is_dns_label(name: &str) -> bool {
        !name.is_empty()
            && name.len() <= 63
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !name.starts_with('-')
            && !name.ends_with('-')
    }

    #[test]
    fn deploy_tokens_are_known_by_their_service_account() {
        assert!(is_deploy_token(
            "system:serviceaccount:shop:countersign-deploy-web-1a2b"
        ));
        assert!(!is_deploy_token("system:serviceaccount:shop:web"));
        assert!(!is_deploy_token("countersign-deploy-web"));
        assert!(!is_deploy_token(
            "system:serviceaccount:countersign-deploy-web"
        ));
    }

    #[test]
    fn names_are_dns_labels_and_distinct() {
        let long = "w".repeat(240);
        let cases = [
            ("web-7f3a9c01", "countersign-deploy-web-7f3a9c01"),
            ("web.v2-7f3a9c01", "countersign-deploy-web-v2-7f3a9c01-"),
            (long.as_str(), "countersign-deploy-wwwwwwwwww"),
            ("a.b", "countersign-deploy-a-b-"),
            ("a-b", "countersign-deploy-a-b"),
        ];
        let mut seen = std::collections::BTreeSet::new();
        for (approval, starts) in cases {
            let n = names(approval);
            assert!(is_dns_label(&n.service_account), "{approval}: {n:?}");
            assert!(n.service_account.starts_with(starts), "{approval}: {n:?}");
            assert_eq!(
                [&n.role, &n.role_binding, &n.secret],
                [&n.service_account; 3]
            );
            assert!(seen.insert(n.secret), "{approval} collides");
        }
        let max = format!("{}{}", "w".repeat(43), "x");
        assert_eq!(
            names(&max).secret.len(),
            63,
            "44 characters fit as they are"
        );
        assert_eq!(names(&max).secret, format!("countersign-deploy-{max}"));
        let over = format!("{max}y");
        assert!(is_dns_label(&names(&over).secret));
        assert_ne!(names(&over).secret, names(&format!("{max}z")).secret);
    }

    #[test]
    fn builtin_kinds_map_to_their_resources() {
        let cases = [
            ("apps/v1", "Deployment", Some(("apps", "deployments"))),
            ("apps/v1", "StatefulSet", Some(("apps", "statefulsets"))),
            ("apps/v1", "DaemonSet", Some(("apps", "daemonsets"))),
            ("apps/v1", "ReplicaSet", Some(("apps", "replicasets"))),
            ("batch/v1", "Job", Some(("batch", "jobs"))),
            ("batch/v1", "CronJob", Some(("batch", "cronjobs"))),
            ("v1", "Pod", Some(("", "pods"))),
            ("v1", "Deployment", None),
            ("example.com/v1", "Widget", None),
        ];
        for (api_version, kind, expected) in cases {
            let resource = builtin_resource(api_version, kind);
            let expected = expected.map(|(group, plural)| TargetResource {
                group: group.into(),
                plural: plural.into(),
            });
            assert_eq!(resource, expected, "{api_version} {kind}");
        }
    }

    #[test]
    fn the_role_allows_a_rollout_of_the_one_target_and_nothing_else() {
        let approval = request(Some("30m"), Some(ApprovalPhase::Approved), None);
        let resource = builtin_resource("apps/v1", "Deployment").expect("built in");
        let objects = token_objects(&approval, &resource).expect("objects");
        let rules = objects.role.rules.clone().unwrap_or_default();
        assert_eq!(rules.len(), 1);
        let rule = &rules[0];
        assert_eq!(rule.api_groups, Some(vec!["apps".to_string()]));
        assert_eq!(rule.resources, Some(vec!["deployments".to_string()]));
        assert_eq!(rule.resource_names, Some(vec!["web".to_string()]));
        for forbidden in [
            "create",
            "delete",
            "deletecollection",
            "*",
            "escalate",
            "bind",
        ] {
            assert!(!rule.verbs.iter().any(|v| v == forbidden), "{forbidden}");
        }
        assert_eq!(rule.verbs, TOKEN_VERBS);
    }

    #[test]
    fn objects_are_owned_bound_and_named_alike() {
        let approval = request(Some("30m"), Some(ApprovalPhase::Approved), None);
        let resource = builtin_resource("apps/v1", "Deployment").expect("built in");
        let objects = token_objects(&approval, &resource).expect("objects");
        let name = "countersign-deploy-web-1";
        for meta in [
            &objects.service_account.metadata,
            &objects.role.metadata,
            &objects.role_binding.metadata,
        ] {
            assert_eq!(meta.name.as_deref(), Some(name));
            assert_eq!(meta.namespace.as_deref(), Some("shop"));
            let owners = meta.owner_references.clone().unwrap_or_default();
            assert_eq!(owners.len(), 1);
            assert_eq!(owners[0].kind, "DeploymentApproval");
            assert_eq!(owners[0].name, "web-1");
            assert_eq!(owners[0].uid, "6f1c2d3e-0000-4000");
            assert_eq!(owners[0].api_version, "countersign.dev/v1alpha1");
        }
        assert_eq!(objects.role_binding.role_ref.kind, "Role");
        assert_eq!(objects.role_binding.role_ref.name, name);
        let subjects = objects.role_binding.subjects.clone().unwrap_or_default();
        assert_eq!(subjects.len(), 1);
        assert_eq!(
            (subjects[0].kind.as_str(), subjects[0].name.as_str()),
            ("ServiceAccount", name)
        );
        assert_eq!(subjects[0].namespace.as_deref(), Some("shop"));

        let secret = token_secret(&objects, "sa-uid", Some("ey.token"));
        assert_eq!(secret.metadata.name.as_deref(), Some(name));
        assert_eq!(secret.type_.as_deref(), Some("Opaque"));
        let owners = secret.metadata.owner_references.clone().unwrap_or_default();
        assert_eq!(
            (
                owners.len(),
                owners[0].kind.as_str(),
                owners[0].uid.as_str()
            ),
            (1, "ServiceAccount", "sa-uid")
        );
        let data = secret.data.clone().unwrap_or_default();
        assert_eq!(
            data.get(TOKEN_KEY).map(|b| &b.0[..]),
            Some(&b"ey.token"[..])
        );
        assert_eq!(
            data.get(NAMESPACE_KEY).map(|b| &b.0[..]),
            Some(&b"shop"[..])
        );
        assert_eq!(token_secret(&objects, "sa-uid", None).data, None);

        let request = token_request(&objects, Some("secret-uid"), SignedDuration::from_mins(30));
        let spec = request.spec.clone().unwrap_or_default();
        assert_eq!(spec.expiration_seconds, Some(1800));
        assert_eq!(spec.audiences, None, "the API server's own audiences");
        let bound = spec.bound_object_ref.clone().unwrap_or_default();
        assert_eq!(bound.kind.as_deref(), Some("Secret"));
        assert_eq!(bound.name.as_deref(), Some(name));
        assert_eq!(bound.uid.as_deref(), Some("secret-uid"));
    }

    #[test]
    fn an_approval_without_uid_has_no_owner_to_name() {
        let mut approval = request(Some("30m"), Some(ApprovalPhase::Approved), None);
        approval.metadata.uid = None;
        let resource = builtin_resource("apps/v1", "Deployment").expect("built in");
        assert_eq!(
            token_objects(&approval, &resource).map(|_| ()),
            Err(GrantError::MissingMetadata("uid"))
        );
    }
}
