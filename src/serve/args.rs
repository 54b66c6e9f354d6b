//! The flags of `countersign serve` (each also an environment variable), and the values
//! they parse into.

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::install::DEFAULT_INSTALL_NAMESPACE;
use crate::install::webhooks::Endpoint;
use crate::telemetry::LogFormat;

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
    /// How long to go on answering after SIGTERM before closing the port, in seconds: a
    /// replica behind a Service gets reviews until the API server sees it leave the
    /// Service's endpoints, and a closed port then fails them (the chart sets 15).
    #[arg(long, env = "COUNTERSIGN_SHUTDOWN_DELAY", default_value_t = 0)]
    pub shutdown_delay: u64,
    /// How long AuditEntries are kept (e.g. `8760h`, a year); `forever` keeps them all.
    /// Only entries older than this are deleted, by the operator, and the webhook lets
    /// nobody else delete one.
    #[arg(long, env = "COUNTERSIGN_AUDIT_RETENTION", default_value = "8760h")]
    pub audit_retention: AuditRetention,
    /// The leader signs a checkpoint of the audit chain (docs/security.md) after this many
    /// new entries…
    #[arg(long, env = "COUNTERSIGN_AUDIT_CHECKPOINT_ENTRIES", default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..))]
    pub audit_checkpoint_entries: u64,
    /// … or this long after the last checkpoint, when the chain has grown since (e.g. `5m`).
    #[arg(
        long,
        env = "COUNTERSIGN_AUDIT_CHECKPOINT_INTERVAL",
        default_value = "5m"
    )]
    pub audit_checkpoint_interval: CheckpointInterval,
    /// Append each signed checkpoint to this file as well: a copy outside the cluster to
    /// verify the trail against (`countersign audit verify --checkpoint FILE`).
    #[arg(long, env = "COUNTERSIGN_AUDIT_CHECKPOINT_FILE")]
    pub audit_checkpoint_file: Option<PathBuf>,
    /// POST each signed checkpoint (text/plain) to this URL as well: an append-only store
    /// outside the cluster.
    #[arg(long, env = "COUNTERSIGN_AUDIT_CHECKPOINT_URL")]
    pub audit_checkpoint_url: Option<String>,
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
    /// Take part in GitOps syncs (docs/gitops.md): watch the Kustomizations of Flux, so a
    /// sync that countersign held for approval opens the requests of all its gated changes
    /// when Flux reports it, and an approved request of such a sync asks its Kustomization
    /// to apply again at once. Needs the ClusterRole countersign-gitops bound to countersign,
    /// which local mode does with this flag.
    #[arg(long, env = "COUNTERSIGN_GITOPS")]
    pub gitops: bool,
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

/// How long AuditEntries are kept: a duration, or `forever`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AuditRetention(pub Option<jiff::SignedDuration>);

/// `--audit-checkpoint-interval`: a positive duration such as `5m` or `30s`.
#[derive(Clone, Copy, Debug)]
pub struct CheckpointInterval(pub std::time::Duration);

impl std::str::FromStr for CheckpointInterval {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let duration = crate::core::policy::windows::parse_duration(text)?;
        std::time::Duration::try_from(duration)
            .map(CheckpointInterval)
            .map_err(|e| e.to_string())
    }
}

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
