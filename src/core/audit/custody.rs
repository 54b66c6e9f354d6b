//! Who may write what only countersign writes (SPEC §3, §7): the status of a
//! DeploymentApproval (the lock of §1.3 lives there) and the append-only AuditEntry trail.

/// The namespace controller: it deletes everything in a namespace being deleted, and the
/// install namespace must be deletable.
pub const NAMESPACE_CONTROLLER: &str = "system:serviceaccount:kube-system:namespace-controller";

/// A write to an AuditEntry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuditWrite {
    Create,
    Update,
    StatusUpdate,
    /// A deletion; `past_retention`: the entry is older than the configured retention.
    Delete {
        past_retention: bool,
    },
}

/// May `actor` write an approval's status? Only countersign's own identity may.
pub fn approval_status_write(actor: &str, countersign: &str) -> Result<(), String> {
    only_countersign(
        actor,
        countersign,
        "the status of a DeploymentApproval or ChangeSet is written by countersign only",
    )
}

/// May `actor` make this write to the audit trail? Entries are created (and their status
/// written) by countersign only, never updated, and deleted only by countersign's retention
/// or with the namespace that holds them.
pub fn audit_write(write: AuditWrite, actor: &str, countersign: &str) -> Result<(), String> {
    match write {
        AuditWrite::Create => only_countersign(
            actor,
            countersign,
            "AuditEntries are written by countersign only",
        ),
        AuditWrite::StatusUpdate => only_countersign(
            actor,
            countersign,
            "the status of an AuditEntry is written by countersign only",
        ),
        AuditWrite::Update => {
            Err("AuditEntries are immutable; the audit trail is append-only".into())
        }
        AuditWrite::Delete { .. } if actor == NAMESPACE_CONTROLLER => Ok(()),
        AuditWrite::Delete {
            past_retention: true,
        } if actor == countersign && !countersign.is_empty() => Ok(()),
        AuditWrite::Delete {
            past_retention: false,
        } if actor == countersign && !countersign.is_empty() => Err(
            "this AuditEntry is younger than the audit retention; not even countersign deletes it"
                .into(),
        ),
        AuditWrite::Delete { .. } => Err(format!(
            "AuditEntries are deleted only by countersign's retention; the audit trail is append-only (this request was made by {})",
            shown(actor)
        )),
    }
}

fn only_countersign(actor: &str, countersign: &str, rule: &str) -> Result<(), String> {
    if actor == countersign && !countersign.is_empty() {
        return Ok(());
    }
    Err(format!(
        "{rule} (this request was made by {})",
        shown(actor)
    ))
}

fn shown(actor: &str) -> &str {
    if actor.is_empty() {
        "an unknown user"
    } else {
        actor
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const US: &str = "system:serviceaccount:countersign-system:countersign";

    #[test]
    fn custody_table() {
        let cases: &[(&str, AuditWrite, &str, bool)] = &[
            ("countersign creates", AuditWrite::Create, US, true),
            ("the admin creates", AuditWrite::Create, "admin", false),
            (
                "a look-alike creates",
                AuditWrite::Create,
                "system:serviceaccount:other:countersign",
                false,
            ),
            ("nobody creates", AuditWrite::Create, "", false),
            ("countersign updates", AuditWrite::Update, US, false),
            ("the admin updates", AuditWrite::Update, "admin", false),
            (
                "countersign writes status",
                AuditWrite::StatusUpdate,
                US,
                true,
            ),
            (
                "the admin writes status",
                AuditWrite::StatusUpdate,
                "admin",
                false,
            ),
            (
                "retention deletes an old entry",
                AuditWrite::Delete {
                    past_retention: true,
                },
                US,
                true,
            ),
            (
                "countersign deletes a young entry",
                AuditWrite::Delete {
                    past_retention: false,
                },
                US,
                false,
            ),
            (
                "the namespace goes",
                AuditWrite::Delete {
                    past_retention: false,
                },
                NAMESPACE_CONTROLLER,
                true,
            ),
            (
                "the admin deletes an old entry",
                AuditWrite::Delete {
                    past_retention: true,
                },
                "admin",
                false,
            ),
        ];
        for (name, write, actor, allowed) in cases {
            assert_eq!(audit_write(*write, actor, US).is_ok(), *allowed, "{name}");
        }
        assert!(approval_status_write(US, US).is_ok());
        assert!(approval_status_write("admin", US).is_err());
        assert!(
            approval_status_write("", "").is_err(),
            "no identity is nobody's"
        );
    }
}
