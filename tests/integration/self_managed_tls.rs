//! Self-managed certificates (`serve --self-managed-tls`) under a race: two replicas that
//! both believe they lead (one of them stale, as an old leader is for a moment after its
//! lease passed) find a damaged Secret and renew it at the same time. Writes carry the
//! resourceVersion they read, so one wins and the other re-reads: both end up serving the
//! one certificate in the Secret, never one the Secret no longer holds.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use countersign::core::tls::service_names;
use countersign::serve::self_managed_tls::{SECRET_NAME, SelfManagedTls};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::PostParams;
use tokio::sync::watch;

use crate::support::{TestCluster, TestNamespace, User};

// Two worker threads, so both replicas read, renew and write at the same moment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_leaders_renewing_at_once_serve_the_one_certificate_the_secret_holds() -> Result<()> {
    let namespace = TestNamespace::create("tls-race", None).await?;
    let ns = namespace.name().to_string();
    let client = TestCluster::get().client(User::Admin).await?;
    // Damaged: both leaders plan a new CA and a new serving certificate from it.
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let damaged: Secret = serde_json::from_value(serde_json::json!({
        "metadata": { "name": SECRET_NAME },
        "type": "kubernetes.io/tls",
        "data": { "tls.crt": "", "tls.key": "" },
    }))?;
    secrets.create(&PostParams::default(), &damaged).await?;

    let mut keepers = Vec::new();
    for replica in ["first", "second"] {
        let dir = std::env::temp_dir().join(format!("countersign-race-{ns}-{replica}"));
        std::fs::create_dir_all(&dir)?;
        let (still_leading, leading) = watch::channel(true);
        let keeper = SelfManagedTls {
            client: client.clone(),
            namespace: ns.clone(),
            names: service_names(&ns, "countersign"),
            dir,
            leading: Some(leading),
            trusted: Default::default(),
        };
        keepers.push((keeper, still_leading));
    }
    // Both made before either starts, so they start together.
    let mut replicas: Vec<_> = keepers
        .into_iter()
        .map(|(keeper, still_leading)| {
            let dir = keeper.dir.clone();
            let (serving_tx, serving) = watch::channel(false);
            (
                dir,
                still_leading,
                serving,
                tokio::spawn(keeper.run(serving_tx)),
            )
        })
        .collect();
    let outcome = async {
        for (_, _, serving, _) in &mut replicas {
            tokio::time::timeout(Duration::from_secs(30), serving.wait_for(|s| *s))
                .await
                .context("a replica serving within 30 s")??;
        }
        // The moment both serve, each serves what the Secret holds.
        let secret = secrets.get(SECRET_NAME).await?;
        let data = secret.data.unwrap_or_default();
        let key = |k: &str| data.get(k).cloned().unwrap_or(ByteString(Vec::new())).0;
        for (dir, _, _, _) in &replicas {
            for file in ["tls.crt", "tls.key", "ca.crt"] {
                let served = std::fs::read(dir.join(file))?;
                ensure!(
                    served == key(file),
                    "{} serves a {file} the Secret does not hold",
                    dir.display()
                );
            }
        }
        ensure!(!key("signer.key").is_empty(), "a CA kept in the Secret");
        anyhow::Ok(())
    }
    .await;
    for (dir, _, _, task) in replicas {
        task.abort();
        let _ = std::fs::remove_dir_all(dir);
    }
    outcome
}
