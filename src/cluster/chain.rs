//! Where the audit trail's hash chain is kept (docs/security.md), in the install namespace:
//!
//! - the record of its head, the last batch of links claimed, the latest signed checkpoint
//!   and retention's signed record, in ConfigMap `countersign-audit-chain`. It is advanced
//!   only at the resourceVersion it was read at, so two sealers (a leader and the one it
//!   follows) never both extend it from one head;
//! - each entry's link, in its status (written through `cluster::trail`, the one room for
//!   AuditEntries);
//! - the Ed25519 key checkpoints are signed with, in Secret `countersign-audit-signing-key`
//!   (made by the first leader), and its verifier key in ConfigMap `countersign-audit-key`,
//!   for anyone to read and pin.

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use ring::rand::{SecureRandom, SystemRandom};
use serde_json::json;

use crate::api::ChainLink;
use crate::core::audit::chain::Head;
use crate::core::audit::note::{NoteError, Signer};

/// The ConfigMap holding the chain's record.
pub const RECORD_NAME: &str = "countersign-audit-chain";
/// The Secret holding the signing key.
pub const SIGNING_KEY_SECRET: &str = "countersign-audit-signing-key";
/// The ConfigMap publishing the verifier key.
pub const PUBLIC_KEY_CONFIGMAP: &str = "countersign-audit-key";
/// The verifier key's entry in that ConfigMap.
pub const VERIFIER_KEY: &str = "verifierKey";

/// The record's entries.
const SEQUENCE: &str = "sequence";
const HASH: &str = "hash";
const CLAIMED: &str = "claimed";
const CHECKPOINT: &str = "checkpoint";
const RETENTION: &str = "retention";
/// The signing key's entries in its Secret: the PKCS#8 document and the key's name (the
/// checkpoints' origin).
const PKCS8: &str = "pkcs8";
const ORIGIN: &str = "origin";

/// An entry claimed at a place in the chain, before its link is in its status.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Claimed {
    pub name: String,
    pub link: ChainLink,
}

/// The chain's record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainRecord {
    pub head: Head,
    /// The last batch claimed, in order: linked in their entries after the record was
    /// written, and linked again by the next sealer if it stopped in between.
    pub claimed: Vec<Claimed>,
    /// The latest signed checkpoint (a signed note).
    pub checkpoint: Option<String>,
    /// Retention's latest signed record (a signed note).
    pub retention: Option<String>,
}

impl Default for ChainRecord {
    fn default() -> Self {
        ChainRecord {
            head: Head::empty(),
            claimed: Vec::new(),
            checkpoint: None,
            retention: None,
        }
    }
}

/// The record as stored, with the version to advance it from.
#[derive(Clone, Debug, Default)]
pub struct Stored {
    pub record: ChainRecord,
    /// `None`: there is no record yet.
    pub version: Option<String>,
    /// The ConfigMap was there but did not read as a record (edited by hand).
    pub unreadable: bool,
}

/// Why the chain could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    #[error("{0}: {1}")]
    Api(&'static str, kube::Error),
    #[error("someone else advanced the audit chain first")]
    Conflict,
    #[error("the audit chain has not started (no readable record yet)")]
    NotStarted,
    #[error(
        "Secret {SIGNING_KEY_SECRET} holds no usable signing key ({0}); delete it to have a new one made (checkpoints signed with the old key then need the old verifier key)"
    )]
    SigningKey(NoteError),
    #[error("no random bytes for a new signing key")]
    Random,
}

/// The chain's objects in the install namespace.
#[derive(Clone)]
pub struct ChainStore {
    maps: Api<ConfigMap>,
    secrets: Api<Secret>,
    namespace: String,
}

impl ChainStore {
    pub fn new(client: Client, install_namespace: &str) -> ChainStore {
        ChainStore {
            maps: Api::namespaced(client.clone(), install_namespace),
            secrets: Api::namespaced(client, install_namespace),
            namespace: install_namespace.into(),
        }
    }

    /// The record as it is now.
    pub async fn read(&self) -> Result<Stored, ChainError> {
        let map = self
            .maps
            .get_opt(RECORD_NAME)
            .await
            .map_err(|e| ChainError::Api("reading the audit chain's record", e))?;
        Ok(match map {
            None => Stored::default(),
            Some(map) => {
                let version = map.metadata.resource_version.clone();
                match record_of(&map) {
                    Some(record) => Stored {
                        record,
                        version,
                        unreadable: false,
                    },
                    None => Stored {
                        record: ChainRecord::default(),
                        version,
                        unreadable: true,
                    },
                }
            }
        })
    }

    /// Write `record` over the one read at `version` (`None`: create it); the new version,
    /// or [`ChainError::Conflict`] when it was written since.
    pub async fn write(
        &self,
        version: Option<&str>,
        record: &ChainRecord,
    ) -> Result<String, ChainError> {
        let data = data_of(record);
        let written = match version {
            None => {
                let map = ConfigMap {
                    metadata: ObjectMeta {
                        name: Some(RECORD_NAME.into()),
                        namespace: Some(self.namespace.clone()),
                        labels: Some(managed()),
                        ..ObjectMeta::default()
                    },
                    data: Some(data),
                    ..ConfigMap::default()
                };
                self.maps.create(&PostParams::default(), &map).await
            }
            Some(version) => {
                // A merge patch carrying the version read: the API server refuses it (409)
                // when the record changed since. Every entry is set, so none is left over.
                let patch = json!({
                    "metadata": { "resourceVersion": version },
                    "data": data,
                });
                self.maps
                    .patch(RECORD_NAME, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
            }
        };
        match written {
            Ok(map) => Ok(map.metadata.resource_version.unwrap_or_default()),
            Err(kube::Error::Api(status)) if status.code == 409 => Err(ChainError::Conflict),
            Err(error) => Err(ChainError::Api("writing the audit chain's record", error)),
        }
    }

    /// Change the record with `change` as it is now, read and written again when someone
    /// wrote it in between (a few times, then [`ChainError::Conflict`]).
    pub async fn amend(&self, change: impl Fn(&mut ChainRecord)) -> Result<(), ChainError> {
        for _ in 0..5 {
            let stored = self.read().await?;
            if stored.version.is_none() || stored.unreadable {
                return Err(ChainError::NotStarted);
            }
            let mut record = stored.record;
            change(&mut record);
            match self.write(stored.version.as_deref(), &record).await {
                Err(ChainError::Conflict) => continue,
                other => return other.map(drop),
            }
        }
        Err(ChainError::Conflict)
    }

    /// The signing key: read, or made by the first leader (a new key gets a new origin).
    pub async fn signer(&self) -> Result<Signer, ChainError> {
        let read = |e| ChainError::Api("reading the audit signing key", e);
        if let Some(secret) = self
            .secrets
            .get_opt(SIGNING_KEY_SECRET)
            .await
            .map_err(read)?
        {
            return signer_of(&secret);
        }
        let random = SystemRandom::new();
        let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&random)
            .map_err(|_| ChainError::Random)?;
        let mut suffix = [0u8; 4];
        random.fill(&mut suffix).map_err(|_| ChainError::Random)?;
        let suffix: String = suffix.iter().map(|b| format!("{b:02x}")).collect();
        let origin = format!("countersign.dev/audit/{}/{suffix}", self.namespace);
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some(SIGNING_KEY_SECRET.into()),
                namespace: Some(self.namespace.clone()),
                labels: Some(managed()),
                ..ObjectMeta::default()
            },
            data: Some(
                [
                    (PKCS8.to_string(), ByteString(pkcs8.as_ref().to_vec())),
                    (ORIGIN.to_string(), ByteString(origin.into_bytes())),
                ]
                .into(),
            ),
            type_: Some("Opaque".into()),
            ..Secret::default()
        };
        match self.secrets.create(&PostParams::default(), &secret).await {
            Ok(_) => {
                tracing::info!(secret = SIGNING_KEY_SECRET, "made a new audit signing key");
                signer_of(&secret)
            }
            Err(kube::Error::Api(status)) if status.code == 409 => {
                signer_of(&self.secrets.get(SIGNING_KEY_SECRET).await.map_err(read)?)
            }
            Err(error) => Err(ChainError::Api("making the audit signing key", error)),
        }
    }

    /// Publish `signer`'s verifier key (and the origin it signs as) for anyone to read.
    pub async fn publish(&self, signer: &Signer) -> Result<(), ChainError> {
        let map = json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": { "name": PUBLIC_KEY_CONFIGMAP, "namespace": self.namespace, "labels": managed() },
            "data": { VERIFIER_KEY: signer.verifier_key(), ORIGIN: signer.name() },
        });
        self.maps
            .patch(
                PUBLIC_KEY_CONFIGMAP,
                &PatchParams::apply("countersign").force(),
                &Patch::Apply(&map),
            )
            .await
            .map(drop)
            .map_err(|e| ChainError::Api("publishing the audit verifier key", e))
    }
}

fn managed() -> std::collections::BTreeMap<String, String> {
    [(
        "app.kubernetes.io/managed-by".to_string(),
        "countersign".to_string(),
    )]
    .into()
}

fn signer_of(secret: &Secret) -> Result<Signer, ChainError> {
    let data = secret.data.as_ref();
    let get = |key: &str| data.and_then(|d| d.get(key)).map(|b| b.0.clone());
    let missing = || ChainError::SigningKey(NoteError::SigningKey("no pkcs8 or origin".into()));
    let pkcs8 = get(PKCS8).ok_or_else(missing)?;
    let origin = get(ORIGIN)
        .and_then(|o| String::from_utf8(o).ok())
        .ok_or_else(missing)?;
    Signer::from_pkcs8(&origin, &pkcs8).map_err(ChainError::SigningKey)
}

/// The record's data entries.
fn data_of(record: &ChainRecord) -> std::collections::BTreeMap<String, String> {
    let mut data: std::collections::BTreeMap<String, String> = [
        (SEQUENCE.to_string(), record.head.sequence.to_string()),
        (HASH.to_string(), record.head.hash.clone()),
        (
            CLAIMED.to_string(),
            serde_json::to_string(&record.claimed).unwrap_or_else(|_| "[]".into()),
        ),
    ]
    .into();
    if let Some(checkpoint) = &record.checkpoint {
        data.insert(CHECKPOINT.into(), checkpoint.clone());
    }
    if let Some(retention) = &record.retention {
        data.insert(RETENTION.into(), retention.clone());
    }
    data
}

/// The record a ConfigMap holds; `None` when it does not read as one.
pub fn record_of(map: &ConfigMap) -> Option<ChainRecord> {
    let data = map.data.as_ref()?;
    Some(ChainRecord {
        head: Head {
            sequence: data.get(SEQUENCE)?.parse().ok()?,
            hash: data.get(HASH)?.clone(),
        },
        claimed: serde_json::from_str(data.get(CLAIMED)?).ok()?,
        checkpoint: data.get(CHECKPOINT).cloned(),
        retention: data.get(RETENTION).cloned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_reads_back_as_written_and_a_hand_edited_one_does_not_read() {
        let record = ChainRecord {
            head: Head {
                sequence: 7,
                hash: "ab".repeat(32),
            },
            claimed: vec![Claimed {
                name: "e7".into(),
                link: ChainLink {
                    sequence: 7,
                    previous: "cd".repeat(32),
                    hash: "ab".repeat(32),
                    sealed_at: "2026-12-05T10:00:00.000001Z".into(),
                },
            }],
            checkpoint: Some("note\n\n— a b\n".into()),
            retention: None,
        };
        let map = ConfigMap {
            data: Some(data_of(&record)),
            ..ConfigMap::default()
        };
        assert_eq!(record_of(&map), Some(record));
        let mut edited = map.clone();
        if let Some(data) = edited.data.as_mut() {
            data.insert(SEQUENCE.into(), "seven".into());
        }
        assert_eq!(record_of(&edited), None);
        assert_eq!(record_of(&ConfigMap::default()), None);
    }
}
