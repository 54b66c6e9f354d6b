//! `countersign serve`: the admission webhook (and, from the operator issue on, the
//! operator) in one process. Local mode (`--local`) installs itself into a development
//! cluster first and removes its webhook configurations on exit.

mod certificates;
pub mod local;
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
use kube::config::{KubeConfigOptions, Kubeconfig};
use tokio::net::TcpListener;

use crate::core::tls::{service_names, url_host};
use crate::install::webhooks::Endpoint;
use crate::install::{DEFAULT_INSTALL_NAMESPACE, own_username};
use crate::operator;
use crate::operator::leader::{Election, ElectionSettings};
use crate::operator::webhook_guard::{CaBundle, GuardSettings};
use crate::telemetry::{LogFormat, Metrics, init_logging};
use crate::webhook::admission::{Settings, Webhook};
use crate::webhook::client_auth::ClientAuth;
use crate::webhook::effects::Effects;
use crate::webhook::router::{AppState, router};
use crate::webhook::server::{self, TlsFiles};
use crate::webhook::snapshot::Snapshot;
use self_managed_tls::SelfManagedTls;

/// The Lease the operator's replicas elect a leader on, in the install namespace.
pub const OPERATOR_LEASE: &str = "countersign-operator";
/// How long a lease lasts unrenewed: a killed leader is replaced within about this long.
pub const OPERATOR_LEASE_DURATION: Duration = Duration::from_secs(15);

/// Flags of `countersign serve`; each also reads an environment variable.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("webhook_endpoint").args(["webhook_service", "webhook_url"])))]
#[command(group(clap::ArgGroup::new("ca_source").args(["webhook_ca_bundle", "self_managed_tls"])))]
pub struct ServeArgs {
    /// Development and test mode: make a CA and a certificate for the listen address,
    /// install the CRDs, roles and ServiceAccount with the kubeconfig's user, run as that
    /// ServiceAccount, register the webhook configurations on https://LISTEN, and remove
    /// them on SIGTERM/SIGINT.
    #[arg(long)]
    pub local: bool,
    /// Address to serve HTTPS on.
    #[arg(long, env = "COUNTERSIGN_LISTEN", default_value = "0.0.0.0:8443")]
    pub listen: SocketAddr,
    /// PEM CA bundle that signs the client certificate the API server presents to webhooks
    /// (its admission configuration's kubeconfig, docs/install.md): reviews from any other
    /// caller are answered 401 and change nothing. Re-read when the file changes. Without
    /// it, reviews are taken from whoever reaches the port (counted in
    /// countersign_unauthenticated_reviews_total, marked in the AuditEntries, break-glass
    /// refused): keep the port behind the chart's NetworkPolicy.
    #[arg(long, env = "COUNTERSIGN_CLIENT_CA_FILE")]
    pub client_ca_file: Option<PathBuf>,
    /// A name (common name or DNS name) the API server's client certificate must carry;
    /// repeat for several. Without it, any certificate the CA signed is accepted.
    #[arg(
        long = "client-name",
        env = "COUNTERSIGN_CLIENT_NAMES",
        value_delimiter = ',',
        requires = "client_ca_file"
    )]
    pub client_names: Vec<String>,
    /// PEM certificate chain; re-read when the file changes (not with --local).
    #[arg(
        long,
        env = "COUNTERSIGN_TLS_CERT",
        required_unless_present_any = ["local", "self_managed_tls"],
        conflicts_with_all = ["local", "self_managed_tls"]
    )]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key; re-read when the file changes (not with --local).
    #[arg(
        long,
        env = "COUNTERSIGN_TLS_KEY",
        required_unless_present_any = ["local", "self_managed_tls"],
        conflicts_with_all = ["local", "self_managed_tls"]
    )]
    pub tls_key: Option<PathBuf>,
    /// Kubeconfig to use; without it, $KUBECONFIG, ~/.kube/config or the in-cluster
    /// ServiceAccount. Required with --local.
    #[arg(long, required_if_eq("local", "true"))]
    pub kubeconfig: Option<PathBuf>,
    /// Context of the kubeconfig (default: its current context).
    #[arg(long)]
    pub context: Option<String>,
    /// The namespace countersign runs in and keeps its audit trail in.
    #[arg(long, env = "COUNTERSIGN_NAMESPACE", default_value = DEFAULT_INSTALL_NAMESPACE)]
    pub install_namespace: String,
    /// This cluster's region, for policies' `match.regions` when a namespace has no
    /// `topology.kubernetes.io/region` label.
    #[arg(long, env = "COUNTERSIGN_CLUSTER_REGION")]
    pub cluster_region: Option<String>,
    /// Run the admission webhook only (no operator in this process).
    #[arg(
        long,
        env = "COUNTERSIGN_WEBHOOK_ONLY",
        conflicts_with = "operator_only"
    )]
    pub webhook_only: bool,
    /// Run the operator only (no admission webhook in this process; local mode then
    /// registers no webhook configurations).
    #[arg(long, env = "COUNTERSIGN_OPERATOR_ONLY")]
    pub operator_only: bool,
    /// Log format.
    #[arg(long, env = "COUNTERSIGN_LOG_FORMAT", value_enum, default_value_t)]
    pub log_format: LogFormat,
    /// This replica's name, recorded as the lock holder of what it admits (default: $POD_NAME,
    /// else host name and process id).
    #[arg(long, env = "COUNTERSIGN_REPLICA")]
    pub replica: Option<String>,
    /// How long in-flight reviews may take to finish after SIGTERM, in seconds.
    #[arg(long, env = "COUNTERSIGN_SHUTDOWN_GRACE", default_value_t = 25)]
    pub shutdown_grace: u64,
    /// How long AuditEntries are kept (e.g. `8760h`, a year); `forever` keeps them all.
    /// Only entries older than this are deleted, by the operator, and the webhook lets
    /// nobody else delete one.
    #[arg(long, env = "COUNTERSIGN_AUDIT_RETENTION", default_value = "8760h")]
    pub audit_retention: AuditRetention,
    /// Where the API server reaches this webhook (outside local mode, which knows): a
    /// Service as NAMESPACE/NAME[:PORT], port 443 unless given. With --webhook-ca-bundle,
    /// the operator watches the webhook configurations `countersign` against it.
    #[arg(
        long,
        env = "COUNTERSIGN_WEBHOOK_SERVICE",
        conflicts_with = "local",
        requires = "ca_source"
    )]
    pub webhook_service: Option<ServiceEndpoint>,
    /// ... or a URL, `https://HOST[:PORT]` without a path.
    #[arg(
        long,
        env = "COUNTERSIGN_WEBHOOK_URL",
        conflicts_with = "local",
        requires = "ca_source",
        value_parser = parse_webhook_url
    )]
    pub webhook_url: Option<String>,
    /// The PEM CA bundle the webhook configurations carry (e.g. cert-manager's `ca.crt`);
    /// re-read at each comparison, so a rotated CA is picked up.
    #[arg(
        long,
        env = "COUNTERSIGN_WEBHOOK_CA_BUNDLE",
        conflicts_with = "local",
        requires = "webhook_endpoint"
    )]
    pub webhook_ca_bundle: Option<PathBuf>,
    /// Put countersign's webhook configurations back when they are changed or deleted
    /// (every change and deletion is audited either way). Needs the ClusterRole
    /// countersign-webhook-restorer bound to countersign, which local mode does with this flag.
    #[arg(long, env = "COUNTERSIGN_RESTORE_WEBHOOK_CONFIGURATIONS")]
    pub restore_webhook_configurations: bool,
    /// Keep the webhook's CA and serving certificate in the Secret countersign-webhook-tls
    /// of the install namespace: the operator's leader creates it, renews the serving
    /// certificate (1 year) and the CA (10 years) at two thirds of their life, and injects
    /// the CA bundle into the webhook configurations; every replica serves what it holds.
    /// Needs --webhook-service or --webhook-url (the certificate's names), and the
    /// ClusterRole countersign-ca-injector bound to countersign.
    #[arg(
        long,
        env = "COUNTERSIGN_SELF_MANAGED_TLS",
        conflicts_with_all = ["local", "webhook_ca_bundle"],
        requires = "webhook_endpoint"
    )]
    pub self_managed_tls: bool,
}

/// `NAMESPACE/NAME[:PORT]`: the Service the API server calls the webhook through.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceEndpoint(pub Endpoint);

impl std::str::FromStr for ServiceEndpoint {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let expected = || format!("`{text}`: expected NAMESPACE/NAME or NAMESPACE/NAME:PORT");
        let (namespace, rest) = text.split_once('/').ok_or_else(expected)?;
        let (name, port) = match rest.split_once(':') {
            Some((name, port)) => (
                name,
                port.parse::<u16>()
                    .ok()
                    .filter(|p| *p > 0)
                    .ok_or_else(|| format!("`{text}`: the port must be 1 to 65535"))?,
            ),
            None => (rest, 443),
        };
        let dns_label = |s: &str| {
            !s.is_empty()
                && s.len() <= 63
                && s.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !s.starts_with('-')
                && !s.ends_with('-')
        };
        if !dns_label(namespace) || !dns_label(name) {
            return Err(expected());
        }
        Ok(ServiceEndpoint(Endpoint::Service {
            namespace: namespace.into(),
            name: name.into(),
            port: i32::from(port),
        }))
    }
}

/// `https://HOST[:PORT]`, no path, query or user: the webhooks' paths are added to it.
fn parse_webhook_url(text: &str) -> Result<String, String> {
    let rest = text
        .strip_prefix("https://")
        .ok_or_else(|| format!("`{text}`: the API server calls webhooks over https://"))?;
    let host = rest.trim_end_matches('/');
    if host.is_empty() || host.contains(['/', '?', '#', '@']) {
        return Err(format!(
            "`{text}`: expected https://HOST[:PORT] without a path"
        ));
    }
    Ok(format!("https://{host}"))
}

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
    let mut self_managed_dir: Option<PathBuf> = None;
    let (config, tls, local) = if args.local {
        let kubeconfig = args
            .kubeconfig
            .as_deref()
            .ok_or_else(|| ServeFailure::Kubeconfig("--local needs --kubeconfig".into()))?;
        let install = local::LocalInstall::install(
            kubeconfig,
            args.context.as_deref(),
            &args.install_namespace,
            args.listen,
            args.restore_webhook_configurations,
        )
        .await?;
        (install.run_as.clone(), install.tls.clone(), Some(install))
    } else if args.self_managed_tls {
        let dir = private_dir("countersign-tls").map_err(ServeFailure::SelfManagedTls)?;
        let tls = self_managed_tls::files_in(&dir);
        self_managed_dir = Some(dir);
        (client_config(args).await?, tls, None)
    } else {
        let tls = TlsFiles {
            cert_path: args.tls_cert.clone().unwrap_or_default(),
            key_path: args.tls_key.clone().unwrap_or_default(),
        };
        (client_config(args).await?, tls, None)
    };
    let client = Client::try_from(config).map_err(|e| ServeFailure::Kubeconfig(e.to_string()))?;

    let metrics = Metrics::new();
    let (snapshot, feeds) = Snapshot::watch(&client);
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
    let seal_key = Arc::new(seal_key::load_or_create(&client, &args.install_namespace).await);
    let webhook = Webhook {
        seal_key: seal_key.clone(),
        snapshot,
        effects: Effects::new(
            client.clone(),
            args.install_namespace.clone(),
            replica_name(args),
        ),
        settings: Settings {
            install_namespace: args.install_namespace.clone(),
            own_username: own_username(&args.install_namespace),
            cluster_region: args.cluster_region.clone(),
            audit_retention: args.audit_retention.0,
        },
        metrics: metrics.clone(),
    };
    let sender = crate::notify::HttpSender::new(crate::notify::DEFAULT_TIMEOUT)
        .map_err(ServeFailure::Notifier)?;
    // Whether the webhook configurations are meant to be in place: local mode registers
    // them once the caches have synced and removes them on exit.
    let (arm_guard, guard_armed) = tokio::sync::watch::channel(!args.local);
    let arm_guard = Arc::new(arm_guard);
    let webhook_guard = guard_settings(
        args,
        local.as_ref(),
        self_managed_dir.as_deref(),
        guard_armed,
    );
    // The operator's work runs only on the replica that holds the lease.
    let election = (!args.webhook_only).then(|| {
        let election = Election::start(
            client.clone(),
            ElectionSettings {
                namespace: args.install_namespace.clone(),
                lease: OPERATOR_LEASE.into(),
                identity: replica_name(args),
                duration: OPERATOR_LEASE_DURATION,
            },
        );
        let mut leading = election.leading();
        let gauge = metrics.leader.clone();
        let context = Arc::new(operator::Context {
            client: client.clone(),
            snapshot: webhook.snapshot.clone(),
            install_namespace: args.install_namespace.clone(),
            recorder: kube::runtime::events::Recorder::new(
                client.clone(),
                kube::runtime::events::Reporter {
                    controller: "countersign".into(),
                    instance: Some(replica_name(args)),
                },
            ),
            written: Default::default(),
            audit_retention: args.audit_retention.0,
            cluster_region: args.cluster_region.clone(),
            notifier: crate::notify::Notifier::new(client.clone(), &args.install_namespace, sender),
            metrics: metrics.clone(),
            webhook_guard,
            deliveries: Default::default(),
            seal_key: seal_key.clone(),
        });
        // Reconcile only while leading: started when the lease is won, stopped (aborted at
        // its next await) the moment it is lost.
        tokio::spawn(async move {
            let mut reconciling: Option<tokio::task::JoinHandle<()>> = None;
            loop {
                let now = *leading.borrow_and_update();
                gauge.set(i64::from(now));
                if now && reconciling.is_none() {
                    let context = context.clone();
                    reconciling = Some(tokio::spawn(async move {
                        context.snapshot.wait_until_synced().await;
                        operator::run(context).await;
                    }));
                } else if !now && let Some(task) = reconciling.take() {
                    task.abort();
                }
                if leading.changed().await.is_err() {
                    break;
                }
            }
            if let Some(task) = reconciling {
                task.abort();
            }
        });
        election
    });
    // Self-managed certificates: kept by the leader, served by every replica once read.
    let mut self_managed_serving = None;
    if let Some(dir) = &self_managed_dir {
        let (serving, serving_rx) = tokio::sync::watch::channel(false);
        let keeper = SelfManagedTls {
            client: client.clone(),
            namespace: args.install_namespace.clone(),
            names: self_managed_names(args)?,
            dir: dir.clone(),
            leading: election.as_ref().map(Election::leading),
        };
        tokio::spawn(keeper.run(serving));
        self_managed_serving = Some(serving_rx);
    }
    if args.operator_only {
        ready.store(true, Ordering::Release);
    }
    let client_auth = args.client_ca_file.clone().map(|ca_file| ClientAuth {
        ca_file,
        allowed_names: args.client_names.clone(),
    });
    if client_auth.is_none() && !args.operator_only {
        tracing::warn!(
            "no --client-ca-file: reviews are not authenticated, so anyone who reaches {} can send one; keep the port reachable from the API server only (docs/security.md)",
            args.listen
        );
    }
    let app = router(AppState {
        webhook: (!args.operator_only).then_some(webhook),
        ready,
        metrics,
        require_client_certificate: client_auth.is_some(),
    });

    let local = local.map(Arc::new);
    if let Some(install) = local.as_ref().filter(|_| !args.operator_only) {
        let install = install.clone();
        let arm_guard = arm_guard.clone();
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
    let shutdown = {
        let local = local.clone();
        async move {
            shutdown_signal().await;
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
    };
    let grace = Duration::from_secs(args.shutdown_grace);
    let mut stopped_early = false;
    if let Some(mut serving) = self_managed_serving {
        tracing::info!(
            secret = self_managed_tls::SECRET_NAME,
            "waiting for the self-managed serving certificate"
        );
        tokio::select! {
            _ = serving.wait_for(|serving| *serving) => {}
            () = shutdown_signal() => stopped_early = true,
        }
    }
    let served = if stopped_early {
        Ok(())
    } else {
        server::serve(listener, tls, client_auth, app, shutdown, grace).await
    };
    if let Some(election) = election {
        // Hand the lease over now rather than make the next leader wait for it to lapse.
        election.stop().await;
    }
    if let Some(install) = local {
        install.clean_up();
    }
    if let Some(dir) = self_managed_dir {
        let _ = std::fs::remove_dir_all(dir);
    }
    served.map_err(ServeFailure::from)
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
    let failed = |e: &dyn std::fmt::Display| ServeFailure::Kubeconfig(e.to_string());
    match &args.kubeconfig {
        Some(path) => {
            let kubeconfig = Kubeconfig::read_from(path).map_err(|e| failed(&e))?;
            let options = KubeConfigOptions {
                context: args.context.clone(),
                ..KubeConfigOptions::default()
            };
            kube::Config::from_custom_kubeconfig(kubeconfig, &options)
                .await
                .map_err(|e| failed(&e))
        }
        None => kube::Config::infer().await.map_err(|e| failed(&e)),
    }
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

/// How long AuditEntries are kept: a duration, or `forever`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AuditRetention(pub Option<jiff::SignedDuration>);

impl std::str::FromStr for AuditRetention {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text == "forever" {
            return Ok(AuditRetention(None));
        }
        crate::core::policy::windows::parse_duration(text)
            .map(|duration| AuditRetention(Some(duration)))
            .map_err(|e| format!("{e}, or `forever`"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_webhook_service_is_namespace_slash_name_with_an_optional_port() {
        let service = |namespace: &str, name: &str, port| {
            Ok(ServiceEndpoint(Endpoint::Service {
                namespace: namespace.into(),
                name: name.into(),
                port,
            }))
        };
        let cases: &[(&str, Result<ServiceEndpoint, ()>)] = &[
            (
                "countersign-system/countersign",
                service("countersign-system", "countersign", 443),
            ),
            ("cs/webhook:8443", service("cs", "webhook", 8443)),
            ("countersign", Err(())),
            ("cs/", Err(())),
            ("/countersign", Err(())),
            ("cs/web:0", Err(())),
            ("cs/web:99999", Err(())),
            ("cs/web:https", Err(())),
            ("CS/web", Err(())),
            ("cs/web/extra", Err(())),
        ];
        for (text, expected) in cases {
            assert_eq!(
                &text.parse::<ServiceEndpoint>().map_err(|_| ()),
                expected,
                "{text}"
            );
        }
    }

    #[derive(clap::Parser)]
    struct Serve {
        #[command(flatten)]
        args: ServeArgs,
    }

    #[test]
    fn certificate_flags_combine_only_in_ways_that_work() {
        use clap::Parser;
        let cases: &[(&[&str], bool)] = &[
            (
                &["--self-managed-tls", "--webhook-service", "cs/countersign"],
                true,
            ),
            (
                &[
                    "--self-managed-tls",
                    "--webhook-url",
                    "https://10.0.0.1:8443",
                ],
                true,
            ),
            (&["--self-managed-tls"], false),
            (
                &[
                    "--self-managed-tls",
                    "--webhook-url",
                    "https://h",
                    "--tls-cert",
                    "c",
                    "--tls-key",
                    "k",
                ],
                false,
            ),
            (
                &[
                    "--self-managed-tls",
                    "--webhook-url",
                    "https://h",
                    "--webhook-ca-bundle",
                    "ca",
                ],
                false,
            ),
            (
                &["--self-managed-tls", "--local", "--kubeconfig", "k"],
                false,
            ),
            (
                &[
                    "--webhook-service",
                    "cs/c",
                    "--tls-cert",
                    "c",
                    "--tls-key",
                    "k",
                ],
                false,
            ),
            (
                &[
                    "--webhook-service",
                    "cs/c",
                    "--tls-cert",
                    "c",
                    "--tls-key",
                    "k",
                    "--webhook-ca-bundle",
                    "ca",
                ],
                true,
            ),
            (&["--tls-cert", "c", "--tls-key", "k"], true),
            (&[], false),
        ];
        for (flags, parses) in cases {
            let parsed =
                Serve::try_parse_from(std::iter::once("serve").chain(flags.iter().copied()));
            assert_eq!(parsed.is_ok(), *parses, "{flags:?}: {:?}", parsed.err());
        }
    }

    #[test]
    fn a_webhook_url_is_https_without_a_path() {
        assert_eq!(
            parse_webhook_url("https://webhook.example:8443/"),
            Ok("https://webhook.example:8443".into())
        );
        for bad in [
            "http://webhook.example",
            "https://",
            "https://webhook.example/validate",
            "https://user@webhook.example",
            "webhook.example",
        ] {
            assert!(parse_webhook_url(bad).is_err(), "{bad}");
        }
    }
}
