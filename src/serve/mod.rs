//! `countersign serve`: the admission webhook and the operator in one process, over the
//! caches and the cluster room they share. Local mode (`--local`) installs itself into a
//! development cluster first and removes its webhook configurations on exit.

mod args;
mod certificates;
pub mod local;
pub mod memory;
pub mod seal_key;
pub mod self_managed_tls;
mod token;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use kube::Client;
use tokio::net::TcpListener;

use crate::cluster::Cluster;
use crate::cluster::snapshot::Snapshot;
use crate::core::approval::seal::SealKey;
use crate::core::tls::{service_names, url_host};
use crate::install::own_username;
use crate::install::webhooks::Endpoint;
use crate::operator;
use crate::operator::leader::{Election, ElectionSettings, StepDown};
use crate::operator::webhook_guard::{CaBundle, GuardSettings};
use crate::telemetry::{Metrics, init_logging};
use crate::webhook::client_auth::ClientAuth;
use crate::webhook::review::{Settings, Webhook};
use crate::webhook::router::{AppState, router};
use crate::webhook::server::{self, TlsFiles};
pub use args::{AuditRetention, ServeArgs, ServiceEndpoint};
use self_managed_tls::SelfManagedTls;

/// The Lease the operator's replicas elect a leader on, in the install namespace.
pub const OPERATOR_LEASE: &str = "countersign-operator";
/// How long a lease lasts unrenewed: a killed leader is replaced within about this long.
pub const OPERATOR_LEASE_DURATION: Duration = Duration::from_secs(15);

/// Why `serve` stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeFailure {
    #[error("kubeconfig: {0}")]
    Kubeconfig(String),
    #[error("cannot listen on {0}: {1}")]
    Listen(SocketAddr, std::io::Error),
    #[error("local mode: {0}")]
    Local(#[from] local::LocalError),
    #[error("{0}")]
    Server(#[from] server::ServeError),
    #[error("cannot start the runtime: {0}")]
    Runtime(std::io::Error),
    #[error("notifications: {0}")]
    Notifier(crate::notify::SenderError),
    #[error("self-managed certificates: {0}")]
    SelfManagedTls(String),
}

/// A fresh 0700 directory `$TMPDIR/<prefix>-<pid>` for this process's private files.
fn private_dir(prefix: &str) -> Result<PathBuf, String> {
    use std::os::unix::fs::DirBuilderExt;
    let dir = std::env::temp_dir().join(format!("{prefix}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    Ok(dir)
}

/// The names of the self-managed serving certificate: the Service's, or the URL's host.
fn self_managed_names(args: &ServeArgs) -> Result<BTreeSet<String>, ServeFailure> {
    if let Some(ServiceEndpoint(Endpoint::Service {
        namespace, name, ..
    })) = &args.webhook_service
    {
        return Ok(service_names(namespace, name));
    }
    args.webhook_url
        .as_deref()
        .and_then(url_host)
        .map(|host| BTreeSet::from([host]))
        .ok_or_else(|| {
            ServeFailure::SelfManagedTls(
                "needs --webhook-service or --webhook-url for the certificate's names".into(),
            )
        })
}

/// Run `serve` until SIGTERM/SIGINT; exit 0 after a clean shutdown.
pub fn run(args: &ServeArgs) -> ExitCode {
    init_logging(args.log_format);
    memory::tune();
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(ServeFailure::Runtime)
        .and_then(|runtime| runtime.block_on(serve(args)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "countersign serve stopped");
            eprintln!("countersign: error: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: &ServeArgs) -> Result<(), ServeFailure> {
    // kube's client and our server both use rustls with ring.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let listener = TcpListener::bind(args.listen)
        .await
        .map_err(|e| ServeFailure::Listen(args.listen, e))?;
    tokio::spawn(memory::collect_at_rest());
    // Every response the client gets shows whether the API server still accepts its token
    // (and local mode's renewal of that token is woken when it does not).
    let credentials = Arc::new(crate::cluster::credentials::Credentials::default());
    let setup = Setup::prepare(args, &credentials).await?;
    let client = kube::client::ClientBuilder::try_from(setup.config.clone())
        .map_err(|e| ServeFailure::Kubeconfig(e.to_string()))?
        .with_layer(&crate::cluster::credentials::layer(credentials.clone()))
        .build();
    let metrics = Metrics::new();
    let caches = Caches::start(&client);
    let seal_key = Arc::new(seal_key::load_or_create(&client, &args.install_namespace).await);
    let cluster = Cluster::new(
        client.clone(),
        args.install_namespace.clone(),
        &replica_name(args),
    )
    .sealing_entries_with(seal_key.clone());
    // Whether the webhook configurations are meant to be in place: local mode registers
    // them once the caches have synced and removes them on exit.
    let (arm_guard, guard_armed) = tokio::sync::watch::channel(!args.local);
    let arm_guard = Arc::new(arm_guard);
    let election = if args.webhook_only {
        None
    } else {
        let context = operator_context(
            args,
            &setup,
            (&cluster, &caches.snapshot),
            &metrics,
            &seal_key,
            guard_armed,
        )?;
        Some(start_operator(args, &client, context, &metrics))
    };
    // Trusted from the start unless countersign injects its own CA into the configurations.
    let webhook_trusted = Arc::new(AtomicBool::new(setup.self_managed_dir.is_none()));
    let self_managed_serving = keep_self_managed_tls(
        args,
        &setup,
        &client,
        election.as_ref(),
        webhook_trusted.clone(),
    )?;
    if args.operator_only {
        caches.ready.store(true, Ordering::Release);
    }
    let client_auth = client_auth(args);
    let sync_opener = (args.gitops && !args.operator_only).then(|| {
        tokio::spawn(crate::webhook::syncs::open_reported_rounds(
            cluster.clone(),
            seal_key.clone(),
            replica_name(args),
        ))
    });
    let app = router(AppState {
        webhook: (!args.operator_only).then(|| Webhook {
            snapshot: caches.snapshot.clone(),
            cluster: cluster.clone(),
            settings: webhook_settings(args),
            metrics: metrics.clone(),
            seal_key,
        }),
        ready: caches.ready.clone(),
        webhook_trusted,
        credentials: credentials.clone(),
        metrics,
        require_client_certificate: client_auth.is_some(),
    });
    // Once told to stop, every response says `Connection: close`: the API server pools its
    // connections to a webhook Service by the Service's name, not the Pod's address, so it
    // would go on sending reviews on a kept-alive connection to this replica after it left
    // the endpoints, until the port closes under one of them.
    let draining = Arc::new(AtomicBool::new(false));
    let app = app.layer(axum::middleware::map_response({
        let draining = draining.clone();
        move |mut response: axum::response::Response| {
            let draining = draining.load(Ordering::Acquire);
            async move {
                if draining {
                    response.headers_mut().insert(
                        axum::http::header::CONNECTION,
                        axum::http::HeaderValue::from_static("close"),
                    );
                }
                response
            }
        }
    }));
    let local = setup.local.map(Arc::new);
    if let Some(install) = local.as_ref().filter(|_| !args.operator_only) {
        register_when_synced(install.clone(), caches.synced, arm_guard.clone());
    }
    let shutdown = shutdown(
        local.clone(),
        arm_guard,
        election.as_ref().map(Election::step_down),
        Duration::from_secs(args.shutdown_delay),
        draining,
    );
    let served = match wait_for_certificate(self_managed_serving).await {
        Stop::Early => Ok(()),
        Stop::Serve => {
            let grace = Duration::from_secs(args.shutdown_grace);
            server::serve(listener, setup.tls, client_auth, app, shutdown, grace).await
        }
    };
    if let Some(opener) = sync_opener {
        opener.abort();
    }
    if let Some(election) = election {
        // Hand the lease over now rather than make the next leader wait for it to lapse.
        election.stop().await;
    }
    if let Some(install) = local {
        install.clean_up();
    }
    if let Some(dir) = setup.self_managed_dir {
        let _ = std::fs::remove_dir_all(dir);
    }
    served.map_err(ServeFailure::from)
}

/// Where this process gets its client identity and serving certificate from: local mode
/// installs itself first; self-managed certificates live in a private directory; otherwise
/// the certificate files are given.
struct Setup {
    config: kube::Config,
    tls: TlsFiles,
    local: Option<local::LocalInstall>,
    self_managed_dir: Option<PathBuf>,
}

impl Setup {
    async fn prepare(
        args: &ServeArgs,
        credentials: &Arc<crate::cluster::credentials::Credentials>,
    ) -> Result<Setup, ServeFailure> {
        if args.local {
            let kubeconfig = args
                .kubeconfig
                .as_deref()
                .ok_or_else(|| ServeFailure::Kubeconfig("--local needs --kubeconfig".into()))?;
            let install = local::LocalInstall::install(
                kubeconfig,
                args.context.as_deref(),
                &args.install_namespace,
                args.listen,
                local::OptionalRoles {
                    restore_webhooks: args.restore_webhook_configurations,
                    gitops: args.gitops,
                },
                credentials.clone(),
            )
            .await?;
            return Ok(Setup {
                config: install.run_as.clone(),
                tls: install.tls.clone(),
                local: Some(install),
                self_managed_dir: None,
            });
        }
        if args.self_managed_tls {
            let dir = private_dir("countersign-tls").map_err(ServeFailure::SelfManagedTls)?;
            return Ok(Setup {
                config: client_config(args).await?,
                tls: self_managed_tls::files_in(&dir),
                local: None,
                self_managed_dir: Some(dir),
            });
        }
        Ok(Setup {
            config: client_config(args).await?,
            tls: TlsFiles {
                cert_path: args.tls_cert.clone().unwrap_or_default(),
                key_path: args.tls_key.clone().unwrap_or_default(),
            },
            local: None,
            self_managed_dir: None,
        })
    }
}

/// The caches the webhook and the operator decide from, filling in the background.
struct Caches {
    snapshot: Snapshot,
    /// Set once every cache has synced (`/readyz`).
    ready: Arc<AtomicBool>,
    /// Resolves once they have.
    synced: tokio::task::JoinHandle<bool>,
}

impl Caches {
    fn start(client: &Client) -> Caches {
        let (snapshot, feeds) = Snapshot::watch(client);
        for feed in feeds {
            tokio::spawn(feed);
        }
        let ready = Arc::new(AtomicBool::new(false));
        let synced = {
            let snapshot = snapshot.clone();
            let ready = ready.clone();
            tokio::spawn(async move {
                snapshot.wait_until_synced().await;
                ready.store(true, Ordering::Release);
                tracing::info!("caches synced; ready");
                true
            })
        };
        Caches {
            snapshot,
            ready,
            synced,
        }
    }
}

fn webhook_settings(args: &ServeArgs) -> Settings {
    Settings {
        install_namespace: args.install_namespace.clone(),
        own_username: own_username(&args.install_namespace),
        cluster_region: args.cluster_region.clone(),
        audit_retention: args.audit_retention.0,
        replica: replica_name(args),
    }
}

/// How the webhook's callers are authenticated; without `--client-ca-file`, a warning.
fn client_auth(args: &ServeArgs) -> Option<ClientAuth> {
    let auth = args.client_ca_file.clone().map(|ca_file| ClientAuth {
        ca_file,
        allowed_names: args.client_names.clone(),
    });
    if auth.is_none() && !args.operator_only {
        tracing::warn!(
            "no --client-ca-file: reviews are not authenticated, so anyone who reaches {} can send one; keep the port reachable from the API server only (docs/security.md)",
            args.listen
        );
    }
    auth
}

/// What every reconcile of this process shares.
fn operator_context(
    args: &ServeArgs,
    setup: &Setup,
    (cluster, snapshot): (&Cluster, &Snapshot),
    metrics: &Arc<Metrics>,
    seal_key: &Arc<SealKey>,
    guard_armed: tokio::sync::watch::Receiver<bool>,
) -> Result<Arc<operator::Context>, ServeFailure> {
    let sender = crate::notify::HttpSender::new(crate::notify::DEFAULT_TIMEOUT)
        .map_err(ServeFailure::Notifier)?;
    Ok(Arc::new(operator::Context {
        cluster: cluster.clone(),
        snapshot: snapshot.clone(),
        known_entries: Default::default(),
        audit_retention: args.audit_retention.0,
        cluster_region: args.cluster_region.clone(),
        notifier: crate::notify::Notifier::new(
            cluster.client.clone(),
            &args.install_namespace,
            sender,
        ),
        metrics: metrics.clone(),
        webhook_guard: guard_settings(
            args,
            setup.local.as_ref(),
            setup.self_managed_dir.as_deref(),
            guard_armed,
        ),
        deliveries: Default::default(),
        resumes_syncs: args.gitops,
        seal_key: seal_key.clone(),
        chain: operator::chain::ChainSettings {
            checkpoint_entries: args.audit_checkpoint_entries,
            checkpoint_interval: args.audit_checkpoint_interval.0,
            checkpoint_file: args.audit_checkpoint_file.clone(),
            checkpoint_url: args.audit_checkpoint_url.clone(),
        },
    }))
}

/// Take part in the operator's election; reconcile while leading.
fn start_operator(
    args: &ServeArgs,
    client: &Client,
    context: Arc<operator::Context>,
    metrics: &Arc<Metrics>,
) -> Election {
    let election = Election::start(
        client.clone(),
        ElectionSettings {
            namespace: args.install_namespace.clone(),
            lease: OPERATOR_LEASE.into(),
            identity: replica_name(args),
            duration: OPERATOR_LEASE_DURATION,
        },
    );
    tokio::spawn(operator::run_while_leading(
        context,
        election.leading(),
        metrics.leader.clone(),
    ));
    election
}

/// Self-managed certificates: kept by the leader, served by every replica once read. The
/// receiver says when this replica has one to serve; `trusted` is set once the webhook
/// configurations trust it.
fn keep_self_managed_tls(
    args: &ServeArgs,
    setup: &Setup,
    client: &Client,
    election: Option<&Election>,
    trusted: Arc<AtomicBool>,
) -> Result<Option<tokio::sync::watch::Receiver<bool>>, ServeFailure> {
    let Some(dir) = &setup.self_managed_dir else {
        return Ok(None);
    };
    let (serving, serving_rx) = tokio::sync::watch::channel(false);
    let keeper = SelfManagedTls {
        client: client.clone(),
        namespace: args.install_namespace.clone(),
        names: self_managed_names(args)?,
        dir: dir.clone(),
        leading: election.map(Election::leading),
        trusted,
    };
    tokio::spawn(keeper.run(serving));
    Ok(Some(serving_rx))
}

/// Local mode registers its webhook configurations once the caches have synced.
fn register_when_synced(
    install: Arc<local::LocalInstall>,
    synced: tokio::task::JoinHandle<bool>,
    arm_guard: Arc<tokio::sync::watch::Sender<bool>>,
) {
    tokio::spawn(async move {
        if !matches!(synced.await, Ok(true)) {
            return;
        }
        match install.register().await {
            Ok(()) => {
                arm_guard.send_replace(true);
                println!(
                    "countersign: serving on https://{}; webhook configurations registered",
                    install.listen
                )
            }
            Err(error) => {
                tracing::error!(%error, "could not register the webhook configurations")
            }
        }
    });
}

/// Resolves on SIGTERM or SIGINT, once local mode has taken its configurations away.
async fn shutdown(
    local: Option<Arc<local::LocalInstall>>,
    arm_guard: Arc<tokio::sync::watch::Sender<bool>>,
    step_down: Option<StepDown>,
    delay: Duration,
    draining: Arc<AtomicBool>,
) {
    shutdown_signal().await;
    draining.store(true, Ordering::Release);
    if !delay.is_zero() {
        // Another replica takes the operator over now, not after the delay.
        if let Some(step_down) = step_down {
            step_down.now();
        }
        // A Pod being deleted leaves the Service's endpoints while it is told to stop; the
        // API server may pick it until it has seen that, and a closed port fails the review.
        tracing::info!(
            ?delay,
            "stopping: answering on until the endpoints drop this replica"
        );
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = shutdown_signal() => tracing::info!("a second signal: stopping at once"),
        }
    }
    tracing::info!("shutting down");
    if let Some(install) = &local {
        // Removing them is no tampering: the guard stands down first.
        arm_guard.send_replace(false);
        // First stop the API server from calling us, then finish what is in flight.
        if let Err(error) = install.unregister().await {
            tracing::error!(%error, "could not remove the webhook configurations");
        }
    }
}

/// Whether to serve, or stop before anything was served.
enum Stop {
    Serve,
    Early,
}

/// With self-managed certificates, wait until there is one to serve (or a signal).
async fn wait_for_certificate(serving: Option<tokio::sync::watch::Receiver<bool>>) -> Stop {
    let Some(mut serving) = serving else {
        return Stop::Serve;
    };
    tracing::info!(
        secret = self_managed_tls::SECRET_NAME,
        "waiting for the self-managed serving certificate"
    );
    tokio::select! {
        _ = serving.wait_for(|serving| *serving) => Stop::Serve,
        () = shutdown_signal() => Stop::Early,
    }
}

/// What the operator holds the webhook configurations to: local mode knows its endpoint
/// and CA; a service install is told them. Without either, they are not watched.
fn guard_settings(
    args: &ServeArgs,
    local: Option<&local::LocalInstall>,
    self_managed_dir: Option<&std::path::Path>,
    armed: tokio::sync::watch::Receiver<bool>,
) -> Option<GuardSettings> {
    let restore = args.restore_webhook_configurations;
    if let Some(install) = local {
        // Local mode with --operator-only registers no configurations.
        return (!args.operator_only).then(|| GuardSettings {
            endpoint: install.endpoint(),
            ca_bundle: CaBundle::Pem(install.ca_pem().as_bytes().to_vec()),
            restore,
            inject_ca_bundle: false,
            armed,
        });
    }
    let endpoint = args
        .webhook_service
        .clone()
        .map(|service| service.0)
        .or_else(|| args.webhook_url.clone().map(Endpoint::Url));
    let ca_bundle = match self_managed_dir {
        Some(dir) => Some(self_managed_tls::ca_bundle_in(dir)),
        None => args.webhook_ca_bundle.clone(),
    };
    match (endpoint, ca_bundle) {
        (Some(endpoint), Some(ca_bundle)) => Some(GuardSettings {
            endpoint,
            ca_bundle: CaBundle::File(ca_bundle),
            restore,
            inject_ca_bundle: self_managed_dir.is_some(),
            armed,
        }),
        _ => {
            if !args.webhook_only {
                tracing::warn!(
                    "the webhook configurations are not watched: give --webhook-service (or --webhook-url) and --webhook-ca-bundle (or --self-managed-tls)"
                );
            }
            None
        }
    }
}

/// The client configuration outside local mode: --kubeconfig/--context, else inferred.
async fn client_config(args: &ServeArgs) -> Result<kube::Config, ServeFailure> {
    crate::kubeconfig::client_config(args.kubeconfig.as_deref(), args.context.as_deref())
        .await
        .map_err(|e| ServeFailure::Kubeconfig(e.to_string()))
}

fn replica_name(args: &ServeArgs) -> String {
    args.replica
        .clone()
        .or_else(|| std::env::var("POD_NAME").ok())
        .unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_else(|_| "countersign".into());
            format!("{host}-{}", std::process::id())
        })
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            // Without signal handlers, Ctrl-C is the only way to stop.
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
