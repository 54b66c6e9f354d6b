//! The audit trail's hash chain (docs/security.md): each entry's link (its sequence, the
//! hash of the entry before it, its own hash over both and its content), the links the
//! leader seals next, the writer's seal that tells an entry countersign wrote from one
//! written around it, and the verification of a trail as listed: every gap, edit, move,
//! insertion and deletion, named by sequence number.

use std::collections::{BTreeMap, HashMap};

use jiff::{SignedDuration, Timestamp};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::api::{AuditEntrySpec, ChainLink};
use crate::core::approval::seal::{SealKey, is_sealed_text, seal_text};
use crate::core::change::canonical_json;

/// The `previous` of the first entry.
pub const FIRST_PREVIOUS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The annotation holding the writer's seal (`writer_seal`).
pub const WRITER_SEAL_ANNOTATION: &str = "countersign.dev/writer-seal";

/// The head of a chain: the last sequence and its hash (`0` and [`FIRST_PREVIOUS`] when
/// empty, or the anchor's when every entry before was removed by retention).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Head {
    pub sequence: u64,
    pub hash: String,
}

impl Head {
    pub fn empty() -> Head {
        Head {
            sequence: 0,
            hash: FIRST_PREVIOUS.into(),
        }
    }
}

/// A time as links carry it: RFC 3339 in UTC with microseconds.
pub fn link_time(time: Timestamp) -> String {
    time.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

/// The hash of an entry named `name` holding `spec` at `sequence`, after `previous`,
/// sealed at `sealed_at`: SHA-256 over their canonical JSON, lowercase hex.
pub fn link_hash(
    name: &str,
    spec: &AuditEntrySpec,
    sequence: u64,
    previous: &str,
    sealed_at: &str,
) -> String {
    let content = json!({
        "name": name,
        "spec": spec,
        "sequence": sequence,
        "previous": previous,
        "sealedAt": sealed_at,
    });
    format!("{:x}", Sha256::digest(canonical_json(&content).as_bytes()))
}

/// The links of `entries`, in order, after `head`, all sealed at `sealed_at`.
pub fn links_after(
    head: &Head,
    entries: &[(&str, &AuditEntrySpec)],
    sealed_at: &str,
) -> Vec<ChainLink> {
    let mut previous = head.hash.clone();
    let mut links = Vec::with_capacity(entries.len());
    for (offset, (name, spec)) in entries.iter().enumerate() {
        let sequence = head.sequence + 1 + offset as u64;
        let hash = link_hash(name, spec, sequence, &previous, sealed_at);
        links.push(ChainLink {
            sequence,
            previous: std::mem::replace(&mut previous, hash.clone()),
            hash,
            sealed_at: sealed_at.into(),
        });
    }
    links
}

/// What the writer's seal covers: the entry's name and spec.
fn written_content(name: &str, spec: &AuditEntrySpec) -> String {
    canonical_json(&json!({ "auditEntry": name, "spec": spec }))
}

/// The seal countersign's writer puts on an entry it writes, so the leader links only
/// entries countersign wrote (one created around the webhook carries none it could make).
pub fn writer_seal(key: &SealKey, name: &str, spec: &AuditEntrySpec) -> String {
    seal_text(key, &written_content(name, spec))
}

/// Whether `seal` is countersign's writer's over this entry, in constant time.
pub fn is_writer_sealed(key: &SealKey, name: &str, spec: &AuditEntrySpec, seal: &str) -> bool {
    is_sealed_text(key, &written_content(name, spec), seal)
}

/// An entry as listed, for verification.
#[derive(Clone, Debug)]
pub struct Listed {
    pub name: String,
    /// Its spec; `None` when it no longer reads as an AuditEntry's.
    pub spec: Option<AuditEntrySpec>,
    /// Its link; `None` when it has none (or one that does not read as a link).
    pub link: Option<ChainLink>,
    /// When the API server created it.
    pub created: Option<Timestamp>,
}

/// What a trail is checked against, besides itself.
#[derive(Clone, Debug, Default)]
pub struct Expected {
    /// Retention's signed record: entries before `sequence` were removed, and the one at
    /// `sequence` follows `hash`.
    pub anchor: Option<Head>,
    /// Signed checkpoints: (size, head hash) pairs the chain must still reach.
    pub checkpoints: Vec<Head>,
    /// The head the leader last recorded (not signed: a lower bound for a check without a
    /// newer checkpoint).
    pub recorded_head: Option<Head>,
    /// An entry younger than this may still be waiting for its link.
    pub grace: SignedDuration,
    pub now: Option<Timestamp>,
    /// The batch the leader's record claims, by entry name: the sealer writes the record
    /// (its head, and a checkpoint when one is due) before it links these entries, so an
    /// entry claimed there but not yet linked holds the claimed link meanwhile.
    pub claimed: BTreeMap<String, ChainLink>,
}

/// One thing wrong with a trail.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum Finding {
    /// No entry holds these sequence numbers: deleted.
    #[serde(rename_all = "camelCase")]
    Missing { from: u64, to: u64, why: String },
    /// The entry at `sequence` no longer hashes to its link: its content (or its link) was
    /// edited.
    #[serde(rename_all = "camelCase")]
    Edited { sequence: u64, name: String },
    /// The entry's content hashes to the link another entry now carries: entries were
    /// reordered.
    #[serde(rename_all = "camelCase")]
    Moved { name: String, from: u64, to: u64 },
    /// Several entries claim one sequence number: one was inserted.
    #[serde(rename_all = "camelCase")]
    Duplicated { sequence: u64, names: Vec<String> },
    /// The entry at `sequence` does not follow the one before it: the chain was cut and
    /// joined here.
    #[serde(rename_all = "camelCase")]
    Broken { sequence: u64, name: String },
    /// An entry outside the chain, older than the grace: written around countersign (the
    /// leader links only what countersign's writer sealed), or no leader is linking.
    #[serde(rename_all = "camelCase")]
    Unchained { name: String },
    /// A signed checkpoint's head is not the chain's hash at its size: the chain up to it
    /// was rewritten.
    #[serde(rename_all = "camelCase")]
    CheckpointDiffers {
        size: u64,
        signed: String,
        found: String,
    },
    /// A statement in the chain's record (a checkpoint, retention's record) that the
    /// published key did not sign: forged, or made for another trail.
    #[serde(rename_all = "camelCase")]
    Unsigned { what: String, why: String },
}

impl Finding {
    /// The sequence number a finding is about, to report them in the chain's order
    /// (statements and entries outside the chain first and last).
    pub fn sequence(&self) -> u64 {
        match self {
            Finding::Unsigned { .. } => 0,
            Finding::Missing { from, .. } => *from,
            Finding::Edited { sequence, .. }
            | Finding::Duplicated { sequence, .. }
            | Finding::Broken { sequence, .. } => *sequence,
            Finding::Moved { to, .. } => *to,
            Finding::CheckpointDiffers { size, .. } => *size,
            Finding::Unchained { .. } => u64::MAX,
        }
    }
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Finding::Missing { from, to, why } if from == to => {
                write!(f, "missing: entry {from} ({why})")
            }
            Finding::Missing { from, to, why } => {
                write!(f, "missing: entries {from} to {to} ({why})")
            }
            Finding::Edited { sequence, name } => write!(
                f,
                "edited: entry {sequence} ({name}) no longer hashes to its link"
            ),
            Finding::Moved { name, from, to } => write!(
                f,
                "reordered: {name} was entry {from} and now claims to be entry {to}"
            ),
            Finding::Duplicated { sequence, names } => write!(
                f,
                "inserted: {} entries claim sequence {sequence}: {}",
                names.len(),
                names.join(", ")
            ),
            Finding::Broken { sequence, name } => write!(
                f,
                "broken: entry {sequence} ({name}) does not follow entry {}",
                sequence.saturating_sub(1)
            ),
            Finding::Unchained { name } => write!(
                f,
                "inserted: {name} is in no place in the chain (not written by countersign, or no leader has linked it)"
            ),
            Finding::CheckpointDiffers {
                size,
                signed,
                found,
            } => write!(
                f,
                "rewritten: the checkpoint signed at {size} entries has head {signed}, the trail has {found}"
            ),
            Finding::Unsigned { what, why } => write!(f, "forged: {what}: {why}"),
        }
    }
}

/// What verification found.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Verification {
    /// Entries in the chain, intact.
    pub entries: u64,
    /// The first sequence kept (after retention).
    pub first: u64,
    /// The last link: its sequence and hash.
    pub head: Option<Head>,
    /// Entries still waiting for their link (younger than the grace).
    pub pending: Vec<String>,
    pub findings: Vec<Finding>,
}

impl Verification {
    pub fn intact(&self) -> bool {
        self.findings.is_empty()
    }
}

/// Verify a trail as listed against what is expected of it.
pub fn verify(listed: &[Listed], expected: &Expected) -> Verification {
    // An entry the record claims and the sealer has not linked yet is checked with the
    // claimed link, as it will be once linked; one claimed but gone is still missing.
    let with_claims: Vec<Listed>;
    let listed = if expected.claimed.is_empty() {
        listed
    } else {
        with_claims = listed
            .iter()
            .map(
                |entry| match (&entry.link, expected.claimed.get(&entry.name)) {
                    (None, Some(claimed)) => Listed {
                        link: Some(claimed.clone()),
                        ..entry.clone()
                    },
                    _ => entry.clone(),
                },
            )
            .collect();
        &with_claims
    };
    let mut verification = Verification::default();
    let first = expected.anchor.as_ref().map_or(1, |a| a.sequence.max(1));
    verification.first = first;
    // Entries by the sequence they claim; those outside the chain aside.
    let mut by_sequence: BTreeMap<u64, Vec<&Listed>> = BTreeMap::new();
    for entry in listed {
        match &entry.link {
            Some(link) if link.sequence >= first => {
                by_sequence.entry(link.sequence).or_default().push(entry)
            }
            // Kept past the retention record (a sweep stopped mid-way): not in the chain.
            Some(_) => {}
            None => {
                let young = match (entry.created, expected.now) {
                    (Some(created), Some(now)) => now.duration_since(created) < expected.grace,
                    _ => false,
                };
                if young {
                    verification.pending.push(entry.name.clone());
                } else {
                    verification.findings.push(Finding::Unchained {
                        name: entry.name.clone(),
                    });
                }
            }
        }
    }
    for (sequence, entries) in &by_sequence {
        if entries.len() > 1 {
            let mut names: Vec<String> = entries.iter().map(|e| e.name.clone()).collect();
            names.sort();
            verification.findings.push(Finding::Duplicated {
                sequence: *sequence,
                names,
            });
        }
    }
    // Which linked entries still hash to their links.
    let intact = |entry: &Listed, link: &ChainLink| {
        entry.spec.as_ref().is_some_and(|spec| {
            link_hash(
                &entry.name,
                spec,
                link.sequence,
                &link.previous,
                &link.sealed_at,
            ) == link.hash
        })
    };
    let mut broken_content: Vec<(&Listed, &ChainLink)> = Vec::new();
    for entries in by_sequence.values() {
        for entry in entries {
            if let Some(link) = &entry.link
                && !intact(entry, link)
            {
                broken_content.push((entry, link));
            }
        }
    }
    // An entry whose content hashes to another's link was moved from there.
    let mut moved: HashMap<&str, (u64, u64)> = HashMap::new();
    for (entry, link) in &broken_content {
        for (_, other) in &broken_content {
            if other.sequence != link.sequence && intact(entry, other) {
                moved.insert(&entry.name, (other.sequence, link.sequence));
            }
        }
    }
    for (entry, link) in &broken_content {
        verification
            .findings
            .push(match moved.get(entry.name.as_str()) {
                Some(&(from, to)) => Finding::Moved {
                    name: entry.name.clone(),
                    from,
                    to,
                },
                None => Finding::Edited {
                    sequence: link.sequence,
                    name: entry.name.clone(),
                },
            });
    }
    // Walk the chain from the first kept to the furthest anything says it reaches.
    let mut last = by_sequence.keys().next_back().copied().unwrap_or(0);
    let mut why_last = "after it".to_string();
    for checkpoint in &expected.checkpoints {
        if checkpoint.sequence > last {
            last = checkpoint.sequence;
            why_last = format!("a signed checkpoint covers {last} entries");
        }
    }
    if let Some(head) = &expected.recorded_head
        && head.sequence > last
    {
        last = head.sequence;
        why_last = format!("the leader recorded a head at {last}");
    }
    let mut missing_from: Option<u64> = None;
    let mut previous_hash: Option<String> = Some(
        expected
            .anchor
            .as_ref()
            .map_or(FIRST_PREVIOUS.to_string(), |a| a.hash.clone()),
    );
    let highest_present = by_sequence.keys().next_back().copied().unwrap_or(0);
    for sequence in first..=last {
        match by_sequence.get(&sequence) {
            None => {
                missing_from.get_or_insert(sequence);
                previous_hash = None;
            }
            Some(entries) => {
                if let Some(from) = missing_from.take() {
                    verification.findings.push(Finding::Missing {
                        from,
                        to: sequence - 1,
                        why: "deleted from within the chain".into(),
                    });
                }
                let entry = entries[0];
                let Some(link) = &entry.link else { continue };
                if let Some(expected_previous) = &previous_hash
                    && entries.len() == 1
                    && &link.previous != expected_previous
                {
                    verification.findings.push(Finding::Broken {
                        sequence,
                        name: entry.name.clone(),
                    });
                }
                if entries.len() == 1 && intact(entry, link) {
                    verification.entries += 1;
                }
                previous_hash = Some(link.hash.clone());
            }
        }
    }
    if let Some(from) = missing_from {
        let why = if from > highest_present {
            format!("the newest entries were deleted: {why_last}")
        } else {
            "deleted from within the chain".into()
        };
        verification.findings.push(Finding::Missing {
            from,
            to: last,
            why,
        });
    }
    for checkpoint in &expected.checkpoints {
        if checkpoint.sequence < first {
            continue;
        }
        if let Some(entries) = by_sequence.get(&checkpoint.sequence)
            && let Some(link) = entries.iter().find_map(|e| e.link.as_ref())
            && link.hash != checkpoint.hash
        {
            verification.findings.push(Finding::CheckpointDiffers {
                size: checkpoint.sequence,
                signed: checkpoint.hash.clone(),
                found: link.hash.clone(),
            });
        }
    }
    verification.findings.sort_by_key(Finding::sequence);
    verification.head = by_sequence.iter().next_back().and_then(|(sequence, e)| {
        e[0].link.as_ref().map(|link| Head {
            sequence: *sequence,
            hash: link.hash.clone(),
        })
    });
    verification
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{AuditAction, AuditTarget, UserInfo};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn spec(reason: &str) -> AuditEntrySpec {
        AuditEntrySpec {
            time: Time(Timestamp::from_second(1_795_514_400).expect("time")),
            action: AuditAction::Requested,
            actor: UserInfo::new("dave", &["devs"]),
            target: AuditTarget {
                api_version: "apps/v1".into(),
                kind: "Deployment".into(),
                namespace: Some("shop".into()),
                name: "web".into(),
                uid: None,
            },
            change_digest: None,
            approval: Some("web-1".into()),
            policy: None,
            reason: Some(reason.into()),
            caller: None,
        }
    }

    const SEALED_AT: &str = "2026-12-05T10:00:00.123456Z";

    /// A clean chain of `n` entries `e1`…`en`.
    fn chain(n: usize) -> Vec<Listed> {
        let specs: Vec<(String, AuditEntrySpec)> = (1..=n)
            .map(|i| (format!("e{i}"), spec(&format!("step {i}"))))
            .collect();
        let refs: Vec<(&str, &AuditEntrySpec)> =
            specs.iter().map(|(n, s)| (n.as_str(), s)).collect();
        let links = links_after(&Head::empty(), &refs, SEALED_AT);
        specs
            .into_iter()
            .zip(links)
            .map(|((name, spec), link)| Listed {
                name,
                spec: Some(spec),
                link: Some(link),
                created: Some(Timestamp::from_second(1_795_514_400).expect("time")),
            })
            .collect()
    }

    fn head_of(trail: &[Listed], sequence: u64) -> Head {
        let link = trail
            .iter()
            .filter_map(|e| e.link.as_ref())
            .find(|l| l.sequence == sequence)
            .expect("a link");
        Head {
            sequence,
            hash: link.hash.clone(),
        }
    }

    fn by_name<'a>(trail: &'a mut [Listed], name: &str) -> &'a mut Listed {
        trail.iter_mut().find(|e| e.name == name).expect("entry")
    }

    #[test]
    fn a_clean_chain_verifies_with_its_count_and_head() {
        let trail = chain(5);
        let expected = Expected {
            checkpoints: vec![head_of(&trail, 3), head_of(&trail, 5)],
            ..Expected::default()
        };
        let verification = verify(&trail, &expected);
        assert_eq!(verification.findings, vec![]);
        assert_eq!(verification.entries, 5);
        assert_eq!(verification.head, Some(head_of(&trail, 5)));
        assert!(verify(&[], &Expected::default()).intact());
    }

    #[test]
    fn links_follow_one_another_and_cover_everything() {
        let trail = chain(3);
        let links: Vec<&ChainLink> = trail.iter().filter_map(|e| e.link.as_ref()).collect();
        assert_eq!(links[0].previous, FIRST_PREVIOUS);
        assert_eq!(links[1].previous, links[0].hash);
        assert_eq!(links[2].previous, links[1].hash);
        let base = link_hash("e1", &spec("step 1"), 1, FIRST_PREVIOUS, SEALED_AT);
        assert_eq!(base, links[0].hash);
        for (what, other) in [
            (
                "name",
                link_hash("e9", &spec("step 1"), 1, FIRST_PREVIOUS, SEALED_AT),
            ),
            (
                "spec",
                link_hash("e1", &spec("step 9"), 1, FIRST_PREVIOUS, SEALED_AT),
            ),
            (
                "sequence",
                link_hash("e1", &spec("step 1"), 2, FIRST_PREVIOUS, SEALED_AT),
            ),
            (
                "previous",
                link_hash("e1", &spec("step 1"), 1, &links[1].hash, SEALED_AT),
            ),
            (
                "time",
                link_hash(
                    "e1",
                    &spec("step 1"),
                    1,
                    FIRST_PREVIOUS,
                    "2026-12-05T10:00:00.123457Z",
                ),
            ),
        ] {
            assert_ne!(base, other, "the hash covers the {what}");
        }
        assert_eq!(
            link_time(Timestamp::constant(1_795_514_400, 123_456_789)),
            "2026-11-24T10:00:00.123456Z"
        );
    }

    #[test]
    fn each_tampering_is_found_and_named_by_sequence() {
        type Tamper = fn(&mut Vec<Listed>);
        let cases: Vec<(&str, Tamper, Vec<Finding>)> = vec![
            (
                "an entry deleted",
                |t| t.retain(|e| e.name != "e3"),
                vec![Finding::Missing {
                    from: 3,
                    to: 3,
                    why: "deleted from within the chain".into(),
                }],
            ),
            (
                "two entries deleted in a row",
                |t| t.retain(|e| e.name != "e2" && e.name != "e3"),
                vec![Finding::Missing {
                    from: 2,
                    to: 3,
                    why: "deleted from within the chain".into(),
                }],
            ),
            (
                "a reason edited",
                |t| by_name(t, "e2").spec.as_mut().expect("spec").reason = Some("nothing".into()),
                vec![Finding::Edited {
                    sequence: 2,
                    name: "e2".into(),
                }],
            ),
            (
                "an actor edited",
                |t| {
                    by_name(t, "e4").spec.as_mut().expect("spec").actor =
                        UserInfo::new("mallory", &[])
                },
                vec![Finding::Edited {
                    sequence: 4,
                    name: "e4".into(),
                }],
            ),
            (
                "a spec that no longer reads",
                |t| by_name(t, "e1").spec = None,
                vec![Finding::Edited {
                    sequence: 1,
                    name: "e1".into(),
                }],
            ),
            (
                "two entries' links swapped",
                |t| {
                    let two = by_name(t, "e2").link.take();
                    let four = by_name(t, "e4").link.take();
                    by_name(t, "e2").link = four;
                    by_name(t, "e4").link = two;
                },
                vec![
                    Finding::Moved {
                        name: "e2".into(),
                        from: 2,
                        to: 4,
                    },
                    Finding::Moved {
                        name: "e4".into(),
                        from: 4,
                        to: 2,
                    },
                ],
            ),
            (
                "an entry inserted without a link",
                |t| {
                    t.push(Listed {
                        name: "forged".into(),
                        spec: Some(spec("forged")),
                        link: None,
                        created: Some(Timestamp::from_second(1_795_514_400).expect("time")),
                    })
                },
                vec![Finding::Unchained {
                    name: "forged".into(),
                }],
            ),
            (
                "an entry inserted with a copied link",
                |t| {
                    let link = by_name(t, "e3").link.clone();
                    t.push(Listed {
                        name: "forged".into(),
                        spec: Some(spec("forged")),
                        link,
                        created: None,
                    })
                },
                vec![
                    Finding::Duplicated {
                        sequence: 3,
                        names: vec!["e3".into(), "forged".into()],
                    },
                    Finding::Edited {
                        sequence: 3,
                        name: "forged".into(),
                    },
                ],
            ),
            (
                "an entry replaced by one with a made-up link",
                |t| {
                    let entry = by_name(t, "e3");
                    entry.name = "forged".into();
                    let link = entry.link.as_mut().expect("link");
                    let spec = spec("forged");
                    link.hash =
                        link_hash("forged", &spec, 3, &link.previous, &link.sealed_at.clone());
                    entry.spec = Some(spec);
                },
                vec![Finding::Broken {
                    sequence: 4,
                    name: "e4".into(),
                }],
            ),
            (
                "the newest entries deleted after a checkpoint",
                |t| t.retain(|e| e.name != "e5" && e.name != "e6"),
                vec![Finding::Missing {
                    from: 5,
                    to: 6,
                    why: "the newest entries were deleted: a signed checkpoint covers 6 entries"
                        .into(),
                }],
            ),
        ];
        for (case, tamper, findings) in cases {
            let mut trail = chain(6);
            let expected = Expected {
                checkpoints: vec![head_of(&trail, 6)],
                ..Expected::default()
            };
            tamper(&mut trail);
            let mut found = verify(&trail, &expected).findings;
            found.sort_by_key(|f| format!("{f:?}"));
            let mut findings = findings;
            findings.sort_by_key(|f| format!("{f:?}"));
            assert_eq!(found, findings, "{case}");
        }
    }

    /// Between the record's write (head and checkpoint) and the links' writes, the claimed
    /// entries have no link yet: checked with the claimed links, not taken as deleted.
    #[test]
    fn entries_claimed_but_not_yet_linked_are_checked_with_the_claimed_links() {
        type Tamper = fn(&mut Vec<Listed>);
        let cases: Vec<(&str, Tamper, Vec<Finding>)> = vec![
            ("claimed, not yet linked", |_| {}, vec![]),
            (
                "claimed, then edited",
                |t| by_name(t, "e5").spec = Some(spec("nothing happened")),
                vec![Finding::Edited {
                    sequence: 5,
                    name: "e5".into(),
                }],
            ),
            (
                "claimed, then deleted",
                |t| t.retain(|e| e.name != "e6"),
                vec![Finding::Missing {
                    from: 6,
                    to: 6,
                    why: "the newest entries were deleted: a signed checkpoint covers 6 entries"
                        .into(),
                }],
            ),
        ];
        for (case, tamper, findings) in cases {
            let mut trail = chain(6);
            let mut expected = Expected {
                checkpoints: vec![head_of(&trail, 6)],
                ..Expected::default()
            };
            // The record claims e4…e6; their links are not written yet.
            for entry in trail.iter_mut().skip(3) {
                let link = entry.link.take().expect("link");
                expected.claimed.insert(entry.name.clone(), link);
            }
            tamper(&mut trail);
            assert_eq!(verify(&trail, &expected).findings, findings, "{case}");
            // Without the record's claim, the same trail reads as its newest entries deleted.
            let unclaimed = Expected {
                claimed: BTreeMap::new(),
                ..expected
            };
            assert!(!verify(&trail, &unclaimed).intact(), "{case}");
        }
    }

    /// The record is writable by whoever can edit ConfigMaps: a claim edited to lend a
    /// forged entry the link of a real one, or to relink an entry already linked, changes
    /// nothing verify would not find.
    #[test]
    fn a_claim_edited_into_the_record_cannot_launder_a_forged_entry() {
        let mut trail = chain(6);
        let mut expected = Expected {
            checkpoints: vec![head_of(&trail, 6)],
            ..Expected::default()
        };
        let real = by_name(&mut trail, "e6").link.clone().expect("link");
        trail.push(Listed {
            name: "forged".into(),
            spec: Some(spec("forged")),
            link: None,
            created: None,
        });
        expected.claimed.insert("forged".into(), real.clone());
        // A linked entry keeps its own link, whatever the claim says.
        let mut moved = real;
        moved.sequence = 2;
        expected.claimed.insert("e5".into(), moved);
        let mut found = verify(&trail, &expected).findings;
        found.sort_by_key(|f| format!("{f:?}"));
        assert_eq!(
            found,
            vec![
                Finding::Duplicated {
                    sequence: 6,
                    names: vec!["e6".into(), "forged".into()],
                },
                Finding::Edited {
                    sequence: 6,
                    name: "forged".into(),
                },
            ]
        );
    }

    #[test]
    fn a_chain_rewritten_from_one_entry_on_differs_from_its_checkpoint() {
        let original = chain(5);
        let expected = Expected {
            checkpoints: vec![head_of(&original, 4), head_of(&original, 5)],
            ..Expected::default()
        };
        // Entry 3 deleted and every link after it made anew, hashes and all.
        let mut kept: Vec<Listed> = original.into_iter().filter(|e| e.name != "e3").collect();
        let head = Head {
            sequence: 2,
            hash: kept[1].link.as_ref().expect("link").hash.clone(),
        };
        let rest: Vec<(String, AuditEntrySpec)> = kept[2..]
            .iter()
            .map(|e| (e.name.clone(), e.spec.clone().expect("spec")))
            .collect();
        let refs: Vec<(&str, &AuditEntrySpec)> =
            rest.iter().map(|(n, s)| (n.as_str(), s)).collect();
        for (entry, link) in kept[2..]
            .iter_mut()
            .zip(links_after(&head, &refs, SEALED_AT))
        {
            entry.link = Some(link);
        }
        let findings = verify(&kept, &expected).findings;
        assert!(
            matches!(
                findings.as_slice(),
                [
                    Finding::CheckpointDiffers { size: 4, .. },
                    Finding::Missing { from: 5, to: 5, .. }
                ]
            ),
            "{findings:?}"
        );
        // Without a checkpoint, a consistent rewrite cannot be told from a clean trail:
        // what the checkpoints are for.
        assert!(verify(&kept, &Expected::default()).intact());
    }

    #[test]
    fn retention_is_no_gap_and_young_entries_are_pending() {
        let trail = chain(6);
        let anchor = Head {
            sequence: 4,
            hash: head_of(&trail, 3).hash,
        };
        let kept: Vec<Listed> = trail
            .iter()
            .filter(|e| e.link.as_ref().is_some_and(|l| l.sequence >= 3))
            .cloned()
            .collect();
        let now = Timestamp::from_second(1_795_514_430).expect("time");
        let mut with_new = kept.clone();
        with_new.push(Listed {
            name: "new".into(),
            spec: Some(spec("new")),
            link: None,
            created: Some(now - SignedDuration::from_secs(5)),
        });
        let expected = Expected {
            anchor: Some(anchor.clone()),
            grace: SignedDuration::from_secs(60),
            now: Some(now),
            ..Expected::default()
        };
        let verification = verify(&with_new, &expected);
        assert_eq!(verification.findings, vec![]);
        assert_eq!(verification.first, 4);
        assert_eq!(verification.entries, 3);
        assert_eq!(verification.pending, vec!["new".to_string()]);
        // Without the anchor, the removed entries are a gap.
        let without = verify(&kept, &Expected::default());
        assert!(matches!(
            without.findings.as_slice(),
            [Finding::Missing { from: 1, to: 2, .. }]
        ));
        // An anchor that names another previous hash breaks the first kept entry.
        let wrong = Expected {
            anchor: Some(Head {
                sequence: 4,
                hash: FIRST_PREVIOUS.into(),
            }),
            ..Expected::default()
        };
        assert!(matches!(
            verify(&kept, &wrong).findings.as_slice(),
            [Finding::Broken { sequence: 4, .. }]
        ));
    }

    #[test]
    fn the_writer_seal_covers_name_and_content() {
        let key = SealKey::new(&[9; 32]).expect("key");
        let other = SealKey::new(&[8; 32]).expect("key");
        let seal = writer_seal(&key, "e1", &spec("step 1"));
        assert!(is_writer_sealed(&key, "e1", &spec("step 1"), &seal));
        assert!(!is_writer_sealed(&key, "e2", &spec("step 1"), &seal));
        assert!(!is_writer_sealed(&key, "e1", &spec("step 2"), &seal));
        assert!(!is_writer_sealed(&other, "e1", &spec("step 1"), &seal));
        assert!(!is_writer_sealed(&key, "e1", &spec("step 1"), "v1:zz"));
    }
}
