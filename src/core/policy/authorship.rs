//! The audit trail of ApprovalPolicy changes (SPEC §7: policy created / changed), derived
//! from the policy itself. Who made a policy's current spec is not kept by the API server,
//! so countersign's mutating webhook stamps it into an annotation on every write that
//! changes the spec, and restores it on writes that do not: only countersign sets it, and
//! the operator reads the actor from there. One entry per (policy uid, generation), under a
//! name derived from both, so a retry or a restart writes it once.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::api::{ApprovalPolicy, AuditAction, AuditEntrySpec, UserInfo};
use crate::core::audit::trail::{PlannedEntry, Recall, policy_key, policy_target};
use crate::core::change::ChangeDigest;

/// The annotation that records who made the policy's current spec, and when.
pub const CHANGED_BY_ANNOTATION: &str = "countersign.dev/changed-by";

/// The actor of a change countersign did not see (made while its webhook was not
/// registered).
pub const UNKNOWN_ACTOR: &str = "unknown";

/// What the annotation holds.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct PolicyChange {
    pub username: String,
    #[serde(default)]
    pub groups: Vec<String>,
    pub time: Timestamp,
}

/// JSON Patch operations that leave the annotation right on a policy write: the author
/// and `now` when the write creates the policy or changes its spec, otherwise what the
/// stored policy held (so nobody can rewrite history with a metadata edit).
pub fn stamp_policy_change(
    old: Option<&Value>,
    new: &Value,
    author: &UserInfo,
    now: Timestamp,
) -> Vec<Value> {
    let spec_changed = old.is_none_or(|old| old.get("spec") != new.get("spec"));
    let desired = if spec_changed {
        let change = PolicyChange {
            username: author.username.clone(),
            groups: author.groups.clone(),
            time: now,
        };
        serde_json::to_string(&change).ok()
    } else {
        old.and_then(annotation).map(str::to_string)
    };
    let current = annotation(new);
    if desired.as_deref() == current {
        return Vec::new();
    }
    let has_annotations = new
        .pointer("/metadata/annotations")
        .is_some_and(Value::is_object);
    let path = format!(
        "/metadata/annotations/{}",
        CHANGED_BY_ANNOTATION.replace('~', "~0").replace('/', "~1")
    );
    match desired {
        Some(value) if has_annotations => vec![json!({"op": "add", "path": path, "value": value})],
        Some(value) => vec![json!({
            "op": "add",
            "path": "/metadata/annotations",
            "value": { CHANGED_BY_ANNOTATION: value },
        })],
        None => vec![json!({"op": "remove", "path": path})],
    }
}

fn annotation(object: &Value) -> Option<&str> {
    object
        .pointer("/metadata/annotations")?
        .get(CHANGED_BY_ANNOTATION)?
        .as_str()
}

/// The AuditEntry for the policy's current generation: PolicyCreated at generation 1,
/// PolicyChanged after. `None` for an object the API server has not stored yet.
pub fn policy_entry(policy: &ApprovalPolicy) -> Option<PlannedEntry> {
    let name = policy.metadata.name.as_deref()?;
    // Stored: it has a uid.
    policy.metadata.uid.as_deref()?;
    let generation = policy.metadata.generation?;
    let stamped = policy
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(CHANGED_BY_ANNOTATION))
        .and_then(|text| serde_json::from_str::<PolicyChange>(text).ok());
    let (action, what) = if generation <= 1 {
        (AuditAction::PolicyCreated, "created".to_string())
    } else {
        (
            AuditAction::PolicyChanged,
            format!("spec changed (generation {generation})"),
        )
    };
    let (actor, time, reason) = match stamped {
        Some(change) => (
            UserInfo {
                username: change.username,
                groups: change.groups,
            },
            change.time,
            what,
        ),
        None => (
            UserInfo::new(UNKNOWN_ACTOR, &[]),
            policy
                .metadata
                .creation_timestamp
                .as_ref()
                .map_or(Timestamp::UNIX_EPOCH, |t| t.0),
            format!("{what}; the author is unknown (countersign's webhook did not see the write)"),
        ),
    };
    let spec = serde_json::to_value(&policy.spec).unwrap_or(Value::Null);
    Some(PlannedEntry {
        name: format!("{}-{generation}", policy_key(policy)),
        spec: AuditEntrySpec {
            time: Time(time),
            action,
            actor,
            target: policy_target(policy),
            change_digest: Some(ChangeDigest::of(&json!({ "spec": spec }), &[]).to_string()),
            approval: None,
            policy: Some(name.to_string()),
            reason: Some(reason),
            caller: None,
        },
        recall: Recall::Whole,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::constant(1_795_514_400 + seconds, 0)
    }

    fn policy(spec: Value, annotation: Option<&str>) -> Value {
        let mut object = json!({
            "apiVersion": "countersign.dev/v1alpha1", "kind": "ApprovalPolicy",
            "metadata": {"name": "prod"}, "spec": spec,
        });
        if let Some(value) = annotation {
            object["metadata"]["annotations"] = json!({ CHANGED_BY_ANNOTATION: value });
        }
        object
    }

    fn apply(object: &Value, operations: Vec<Value>) -> Value {
        let mut patched = object.clone();
        let patch: json_patch::Patch =
            serde_json::from_value(Value::Array(operations)).expect("a JSON patch");
        json_patch::patch(&mut patched, &patch).expect("the patch applies");
        patched
    }

    fn stamped_by(object: &Value) -> Option<String> {
        annotation(object)
            .and_then(|text| serde_json::from_str::<PolicyChange>(text).ok())
            .map(|change| change.username)
    }

    #[test]
    fn only_spec_changes_are_stamped_and_nobody_else_can_stamp() {
        let alice = UserInfo::new("alice", &["platform"]);
        let mallory = UserInfo::new("mallory", &[]);
        let by_alice = serde_json::to_string(&PolicyChange {
            username: "alice".into(),
            groups: vec!["platform".into()],
            time: at(0),
        })
        .expect("json");
        let forged = r#"{"username":"bob","groups":[],"time":"2020-01-01T00:00:00Z"}"#;
        let v1 = json!({"priority": 1});
        let v2 = json!({"priority": 2});
        // (name, old, new, author, expected stamp afterwards)
        type Case<'a> = (&'a str, Option<Value>, Value, &'a UserInfo, Option<&'a str>);
        let cases: Vec<Case> = vec![
            (
                "create",
                None,
                policy(v1.clone(), None),
                &alice,
                Some("alice"),
            ),
            (
                "create with a forged stamp",
                None,
                policy(v1.clone(), Some(forged)),
                &mallory,
                Some("mallory"),
            ),
            (
                "spec change",
                Some(policy(v1.clone(), Some(&by_alice))),
                policy(v2.clone(), Some(&by_alice)),
                &mallory,
                Some("mallory"),
            ),
            (
                "label edit keeps the stamp",
                Some(policy(v1.clone(), Some(&by_alice))),
                policy(v1.clone(), Some(&by_alice)),
                &mallory,
                Some("alice"),
            ),
            (
                "a forged stamp is restored",
                Some(policy(v1.clone(), Some(&by_alice))),
                policy(v1.clone(), Some(forged)),
                &mallory,
                Some("alice"),
            ),
            (
                "a removed stamp is restored",
                Some(policy(v1.clone(), Some(&by_alice))),
                policy(v1.clone(), None),
                &mallory,
                Some("alice"),
            ),
            (
                "an unstamped policy stays unstamped",
                Some(policy(v1.clone(), None)),
                policy(v1.clone(), Some(forged)),
                &mallory,
                None,
            ),
        ];
        for (name, old, new, author, expected) in cases {
            let operations = stamp_policy_change(old.as_ref(), &new, author, at(5));
            let after = apply(&new, operations);
            assert_eq!(stamped_by(&after).as_deref(), expected, "{name}");
        }
        // Nothing to do: no patch at all.
        let same = policy(v1.clone(), Some(&by_alice));
        assert!(stamp_policy_change(Some(&same), &same, &mallory, at(9)).is_empty());
    }

    #[test]
    fn one_entry_per_generation_with_the_stamped_actor() {
        let stamp = serde_json::to_string(&PolicyChange {
            username: "alice".into(),
            groups: vec!["platform".into()],
            time: at(30),
        })
        .expect("json");
        let mut object: ApprovalPolicy =
            serde_json::from_value(policy(json!({}), Some(&stamp))).expect("a policy");
        assert_eq!(policy_entry(&object), None, "not stored yet");
        object.metadata.uid = Some("0a1b2c3d-4e5f".into());
        object.metadata.generation = Some(1);
        let created = policy_entry(&object).expect("an entry");
        assert_eq!(created.name, "policy-prod-0a1b2c3d-1");
        assert_eq!(created.spec.action, AuditAction::PolicyCreated);
        assert_eq!(created.spec.actor.username, "alice");
        assert_eq!(created.spec.time, Time(at(30)));
        object.metadata.generation = Some(4);
        object.spec.priority = 7;
        let changed = policy_entry(&object).expect("an entry");
        assert_eq!(changed.name, "policy-prod-0a1b2c3d-4");
        assert_eq!(changed.spec.action, AuditAction::PolicyChanged);
        assert_ne!(changed.spec.change_digest, created.spec.change_digest);
        object.metadata.annotations = None;
        let unknown = policy_entry(&object).expect("an entry");
        assert_eq!(unknown.spec.actor.username, UNKNOWN_ACTOR);
    }
}
