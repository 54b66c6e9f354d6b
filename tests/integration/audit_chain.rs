//! The audit chain's record against the real API server (docs/security.md): two sealers
//! that read it at one version cannot both advance it, so the chain never forks, whatever
//! the timing of a leader change.

use anyhow::Result;
use countersign::cluster::chain::{ChainError, ChainRecord, ChainStore};
use countersign::core::audit::chain::Head;

use crate::support::{TestCluster, TestNamespace, User};

fn record(sequence: u64, writer: &str) -> ChainRecord {
    ChainRecord {
        head: Head {
            sequence,
            hash: format!("{writer}-{sequence}"),
        },
        ..ChainRecord::default()
    }
}

#[tokio::test]
async fn two_sealers_from_one_head_never_both_advance_the_chain() -> Result<()> {
    let ns = TestNamespace::create("chain-record", None).await?;
    let admin = TestCluster::get().client(User::Admin).await?;
    let store = ChainStore::new(admin, ns.name());
    // Two sealers start the chain at once: one record.
    let (first_a, first_b) = (record(1, "a"), record(1, "b"));
    let (a, b) = tokio::join!(store.write(None, &first_a), store.write(None, &first_b));
    let mut version = match (a, b) {
        (Ok(version), Err(ChainError::Conflict)) | (Err(ChainError::Conflict), Ok(version)) => {
            version
        }
        other => anyhow::bail!("both or neither started the chain: {other:?}"),
    };
    // Twenty rounds of two sealers advancing from the same version: one wins each.
    for sequence in 2..22 {
        let (next_a, next_b) = (record(sequence, "a"), record(sequence, "b"));
        let (a, b) = tokio::join!(
            store.write(Some(&version), &next_a),
            store.write(Some(&version), &next_b)
        );
        let winner = match (a, b) {
            (Ok(version), Err(ChainError::Conflict)) => ("a", version),
            (Err(ChainError::Conflict), Ok(version)) => ("b", version),
            other => anyhow::bail!("round {sequence}: {other:?}"),
        };
        let stored = store.read().await?;
        assert_eq!(
            stored.record,
            record(sequence, winner.0),
            "round {sequence}"
        );
        version = winner.1;
    }
    // A stale version is refused even when nobody races.
    let stale = store.write(Some("1"), &record(99, "late")).await;
    assert!(matches!(stale, Err(ChainError::Conflict)), "{stale:?}");
    // Retention's amendment goes through a sealer's write in between.
    store
        .amend(|record| record.retention = Some("signed".into()))
        .await?;
    let stored = store.read().await?;
    assert_eq!(stored.record.retention.as_deref(), Some("signed"));
    assert_eq!(stored.record.head.sequence, 21);
    Ok(())
}
