//! The key that seals requests' summaries (`core::approval::seal`), kept in the Secret
//! `countersign-seal-key` of the install namespace so every replica seals and checks alike.
//! The first replica to start makes it (32 random bytes); the others read it.

use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::PostParams;
use kube::{Api, Client};
use ring::rand::{SecureRandom, SystemRandom};

use crate::core::approval::seal::{MIN_KEY_BYTES, SealKey};

/// The Secret holding the key, in the install namespace.
pub const SECRET_NAME: &str = "countersign-seal-key";
/// The key's entry in the Secret's data.
const KEY: &str = "key";
/// How long to wait before asking again when the API server does not answer.
const RETRY: Duration = Duration::from_secs(2);

/// Why the key could not be had.
#[derive(Debug, thiserror::Error)]
pub enum SealKeyError {
    #[error("reading or creating Secret {SECRET_NAME}: {0}")]
    Api(#[from] kube::Error),
    #[error(
        "Secret {SECRET_NAME} holds no usable key (data `{KEY}`, at least {MIN_KEY_BYTES} bytes); delete it to have a new one made (requests sealed with the old key then show as unverified)"
    )]
    Unusable,
    #[error("no random bytes for a new key: {0}")]
    Random(String),
}

/// The seal key, read or made; asks again until the API server answers, so a replica
/// started before the API server is reachable comes up once it is.
pub async fn load_or_create(client: &Client, namespace: &str) -> SealKey {
    loop {
        match try_load_or_create(client, namespace).await {
            Ok(key) => return key,
            Err(error) => {
                tracing::warn!(%error, "no seal key yet; the webhook waits for it");
                tokio::time::sleep(RETRY).await;
            }
        }
    }
}

async fn try_load_or_create(client: &Client, namespace: &str) -> Result<SealKey, SealKeyError> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    if let Some(secret) = api.get_opt(SECRET_NAME).await? {
        return key_of(&secret);
    }
    let mut bytes = [0u8; MIN_KEY_BYTES];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|e| SealKeyError::Random(e.to_string()))?;
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(SECRET_NAME.into()),
            namespace: Some(namespace.into()),
            labels: Some(
                [(
                    "app.kubernetes.io/managed-by".to_string(),
                    "countersign".to_string(),
                )]
                .into(),
            ),
            ..ObjectMeta::default()
        },
        data: Some([(KEY.to_string(), ByteString(bytes.to_vec()))].into()),
        type_: Some("Opaque".into()),
        ..Secret::default()
    };
    match api.create(&PostParams::default(), &secret).await {
        Ok(_) => {
            tracing::info!(secret = SECRET_NAME, "made a new seal key");
            key_of(&secret)
        }
        // Another replica made it first: use theirs.
        Err(kube::Error::Api(status)) if status.code == 409 => key_of(&api.get(SECRET_NAME).await?),
        Err(error) => Err(error.into()),
    }
}

fn key_of(secret: &Secret) -> Result<SealKey, SealKeyError> {
    secret
        .data
        .as_ref()
        .and_then(|data| data.get(KEY))
        .and_then(|bytes| SealKey::new(&bytes.0))
        .ok_or(SealKeyError::Unusable)
}
