//! Kyverno's admission controller, run outside the cluster against the test control plane
//! as its out-of-cluster mode intends: built by `tests/kyverno/build`, its CRDs and
//! ConfigMaps applied from the release it ships, started with the release's own arguments
//! (a few overridden, see [`OVERRIDES`]) and `--serverIP`, so that it registers its
//! webhooks by URL on loopback. Stopping it removes what it registered.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use k8s_openapi::api::admissionregistration::v1::{
    ValidatingAdmissionPolicy, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::Api;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use crate::setup::Setup;
use crate::support::countersign::free_port;
use crate::support::crds::{FIELD_MANAGER, apply_crds, read_yaml_documents};
use crate::support::{TestCluster, User};

/// Kyverno's install namespace (the release's default).
const NAMESPACE: &str = "kyverno";
/// The webhook configuration that carries the policies' resource rules.
const RESOURCE_WEBHOOK: &str = "kyverno-resource-validating-webhook-cfg";
/// The webhook configuration that validates Kyverno's own policies.
const POLICY_WEBHOOK: &str = "kyverno-policy-validating-webhook-cfg";
/// The label Kyverno puts on every webhook configuration it registers.
const MANAGED_LABEL: &str = "webhook.kyverno.io/managed-by=kyverno";
/// A Kyverno policy kind the benchmark measures, and the one policy of it it writes.
pub struct Policy {
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    plural: &'static str,
    pub name: &'static str,
    /// Text Kyverno's denial by this policy carries and the other's does not.
    pub denial_marker: &'static str,
    /// The policy for a namespace.
    document: fn(&str) -> Value,
    /// Whether Kyverno reports the policy (its status) ready.
    ready: fn(&Value) -> bool,
}

impl Policy {
    fn api(&self, admin: &kube::Client) -> Api<DynamicObject> {
        let resource = ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk(self.group, self.version, self.kind),
            self.plural,
        );
        Api::all_with(admin.clone(), &resource)
    }
}

/// The ClusterPolicy: Kyverno names it in every denial.
pub const CLUSTER_POLICY: Policy = Policy {
    group: "kyverno.io",
    version: "v1",
    kind: "ClusterPolicy",
    plural: "clusterpolicies",
    name: "bench-no-cloud-access-keys",
    denial_marker: "bench-no-cloud-access-keys",
    document: cluster_policy,
    ready: |status| {
        status["conditions"].as_array().is_some_and(|conditions| {
            conditions
                .iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
    },
};

/// The ValidatingPolicy (v1, which v1.19.1 serves beside the deprecated v1alpha1 and the
/// stored v1beta1): its denial reads "Policy NAME failed: …", a generated
/// ValidatingAdmissionPolicy's would not.
pub const VALIDATING_POLICY: Policy = Policy {
    group: "policies.kyverno.io",
    version: "v1",
    kind: "ValidatingPolicy",
    plural: "validatingpolicies",
    name: "bench-vpol-cloud-access-keys",
    denial_marker: "Policy bench-vpol-cloud-access-keys failed",
    document: validating_policy,
    ready: |status| status["conditionStatus"]["ready"] == true,
};

/// Release arguments replaced for a process outside the cluster, and why:
/// - admission reports are EphemeralReports the reports controller aggregates; without it
///   they would only pile up (this makes Kyverno's writes cheaper, not dearer);
/// - the ValidatingAdmissionPolicy generation would hand the CEL rules to the API server
///   instead of Kyverno's webhook, which is what is measured (the ValidatingPolicy also
///   turns it off for itself);
/// - the metrics ports would collide with other processes on the host.
const OVERRIDES: [(&str, &str); 4] = [
    ("--admissionReports", "false"),
    ("--generateValidatingAdmissionPolicy", "false"),
    ("--metricsPort", "0"),
    ("--controllerRuntimeMetricsAddress", "0"),
];

/// The running admission controller.
pub struct Kyverno {
    child: Option<Child>,
    pub version: String,
    log: PathBuf,
}

impl Kyverno {
    /// Builds (first run only), installs and starts Kyverno; returns once it has registered
    /// its webhooks at this process's address and its policy webhook admits both policies.
    /// `client_qps` replaces the release's client rate limit (QPS and burst) towards the
    /// API server, which Kyverno's webhook spends on a Namespace read per admission request
    /// under a ClusterPolicy (the ValidatingPolicy engine reads its informer cache).
    pub async fn start(
        cluster: &TestCluster,
        admin: &kube::Client,
        client_qps: Option<u32>,
    ) -> Result<Kyverno> {
        let dir = build()?;
        let version = std::fs::read_to_string(dir.join("VERSION"))?
            .trim()
            .to_string();
        apply_crds(admin, &dir.join("crds")).await?;
        // The directory's one YAML file is the release manifest (the CRDs are in crds/).
        let release = read_yaml_documents(&dir)?;
        install_namespace_and_config(admin, &release).await?;
        // A previous run that was killed leaves its configurations (some fail closed).
        remove_webhook_configurations(cluster)?;

        let port = free_port()?;
        let log = std::env::temp_dir().join(format!("countersign-bench-kyverno-{port}.log"));
        let output = File::create(&log)?;
        let mut args = release_arguments(&release)?;
        args.extend([
            format!("--kubeconfig={}", cluster.kubeconfig().display()),
            format!("--serverIP=127.0.0.1:{port}"),
            "--webhookServerHost=127.0.0.1".to_string(),
            format!("--webhookServerPort={port}"),
        ]);
        if let Some(qps) = client_qps {
            args.extend([
                format!("--clientRateLimitQPS={qps}"),
                format!("--clientRateLimitBurst={qps}"),
            ]);
        }
        let child = Command::new(dir.join("kyverno"))
            .args(&args)
            // What the release's Deployment sets (some through the downward API).
            .envs([
                ("KYVERNO_NAMESPACE", NAMESPACE),
                (
                    "KYVERNO_SERVICEACCOUNT_NAME",
                    "kyverno-admission-controller",
                ),
                ("KYVERNO_ROLE_NAME", "kyverno:admission-controller"),
                ("KYVERNO_DEPLOYMENT", "kyverno-admission-controller"),
                ("KYVERNO_POD_NAME", "kyverno-admission-controller-bench"),
                ("KYVERNO_SVC", "kyverno-svc"),
                ("INIT_CONFIG", "kyverno"),
                ("METRICS_CONFIG", "kyverno-metrics"),
            ])
            .stdin(Stdio::null())
            .stdout(output.try_clone()?)
            .stderr(output)
            .spawn()
            .context("starting kyverno")?;
        let mut kyverno = Kyverno {
            child: Some(child),
            version,
            log,
        };
        kyverno.until_registered(admin, port).await?;
        Ok(kyverno)
    }

    /// The admission controller's process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    async fn until_registered(&mut self, admin: &kube::Client, port: u16) -> Result<()> {
        let configurations = Api::<ValidatingWebhookConfiguration>::all(admin.clone());
        let url = format!("https://127.0.0.1:{port}/");
        let started = Instant::now();
        let mut last_error = None;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                bail!("kyverno exited ({status}); see {}", self.log.display());
            }
            // The resource webhook has no entries (so no URL) until a policy needs one;
            // the policy webhook, which the ClusterPolicy itself passes, names this address.
            let resource = configurations.get_opt(RESOURCE_WEBHOOK).await?;
            let policy = configurations.get_opt(POLICY_WEBHOOK).await?;
            let at_this_address =
                policy.is_some_and(|c| serde_json::to_string(&c).is_ok_and(|t| t.contains(&url)));
            // Registered is not yet serving: until its certificate is loaded, Kyverno's TLS
            // handshake fails, and so would a policy write. Both policies, dry-run.
            let mut answered = resource.is_some() && at_this_address;
            if answered {
                for policy in [&CLUSTER_POLICY, &VALIDATING_POLICY] {
                    let document: DynamicObject =
                        serde_json::from_value((policy.document)("default"))?;
                    let dry_run = PostParams {
                        dry_run: true,
                        ..Default::default()
                    };
                    // A conflict (one left by a killed run) comes after admission passed.
                    match policy.api(admin).create(&dry_run, &document).await {
                        Ok(_) => {}
                        Err(kube::Error::Api(status)) if status.code == 409 => {}
                        Err(error) => {
                            last_error = Some(error);
                            answered = false;
                        }
                    }
                }
            }
            if answered {
                return Ok(());
            }
            ensure!(
                started.elapsed() < Duration::from_secs(180),
                "kyverno did not register and serve its webhooks in 3 minutes (last: {last_error:?}); see {}",
                self.log.display()
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Puts one of the benchmark's policies in place (Kyverno then adds a Deployment rule
    /// to its resource webhook) and waits until Kyverno reports it ready, or takes it away
    /// (the rule goes with it).
    pub async fn set_policy(
        &self,
        admin: &kube::Client,
        policy: &Policy,
        namespace: &str,
        present: bool,
    ) -> Result<()> {
        let api = policy.api(admin);
        let name = policy.name;
        if !present {
            if api.get_opt(name).await?.is_some() {
                api.delete(name, &Default::default()).await?;
            }
            return Ok(());
        }
        let document: DynamicObject = serde_json::from_value((policy.document)(namespace))?;
        api.patch(
            name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&document),
        )
        .await
        .with_context(|| format!("applying the Kyverno {} {name}", policy.kind))?;
        let started = Instant::now();
        loop {
            if (policy.ready)(&api.get(name).await?.data["status"]) {
                return Ok(());
            }
            ensure!(
                started.elapsed() < Duration::from_secs(60),
                "Kyverno did not report {} {name} ready in 60 s; see {}",
                policy.kind,
                self.log.display()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits until Kyverno's resource webhook configuration sends requests to the handler
    /// of `setup`'s policy and to no other: ClusterPolicies are served under `/validate/`,
    /// ValidatingPolicies under `/vpol/`.
    pub async fn until_webhook_for(&self, admin: &kube::Client, setup: Setup) -> Result<()> {
        let configurations = Api::<ValidatingWebhookConfiguration>::all(admin.clone());
        let admission_policies = Api::<ValidatingAdmissionPolicy>::all(admin.clone());
        let started = Instant::now();
        loop {
            let urls: Vec<String> = configurations
                .get_opt(RESOURCE_WEBHOOK)
                .await?
                .and_then(|c| c.webhooks)
                .unwrap_or_default()
                .into_iter()
                .filter_map(|w| w.client_config.url)
                .collect();
            let serves = |path: &str| urls.iter().any(|u| u.contains(path));
            let validating_policy = setup == Setup::KyvernoVpol;
            // Kyverno would name a generated ValidatingAdmissionPolicy after the policy.
            let generated = admission_policies
                .list_metadata(&Default::default())
                .await?
                .items
                .iter()
                .any(|p| {
                    p.metadata
                        .name
                        .as_deref()
                        .is_some_and(|n| n.contains(VALIDATING_POLICY.name))
                });
            ensure!(
                !generated,
                "Kyverno generated a ValidatingAdmissionPolicy for {}: the API server, not Kyverno, would evaluate it",
                VALIDATING_POLICY.name
            );
            if serves("/validate/") == (setup == Setup::KyvernoCpol)
                && serves("/vpol/") == validating_policy
                && (!validating_policy || serves(&format!("/vpol/{}", VALIDATING_POLICY.name)))
            {
                return Ok(());
            }
            ensure!(
                started.elapsed() < Duration::from_secs(60),
                "Kyverno's resource webhook did not match {} in 60 s (its URLs: {urls:?}); see {}",
                setup.label(),
                self.log.display()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for Kyverno {
    /// Stops the process and removes the webhook configurations it registered: Kyverno
    /// leaves them behind when it stops, and some fail closed.
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let started = Instant::now();
            while matches!(child.try_wait(), Ok(None))
                && started.elapsed() < Duration::from_secs(10)
            {
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Err(error) = remove_webhook_configurations(TestCluster::get()) {
            eprintln!("could not remove Kyverno's webhook configurations: {error:#}");
        }
    }
}

/// The CEL expression that holds when no container of `list` (`containers` or
/// `initContainers`) has an env value with an AWS access key ID.
fn no_key(list: &str) -> String {
    format!(
        "!has(object.spec.template.spec.{list}) || object.spec.template.spec.{list}.all(c, \
         !has(c.env) || c.env.all(e, !has(e.value) || \
         !e.value.matches('(^|[^0-9A-Za-z])(AKIA|ASIA|ABIA|ACCA)[0-9A-Z]{{16}}([^0-9A-Za-z]|$)')))"
    )
}

/// The checks both Kyverno policies make, as CEL expressions with their messages.
fn expressions() -> Value {
    json!([
        { "expression": no_key("containers"),
          "message": "a container env value holds a cloud access key" },
        { "expression": no_key("initContainers"),
          "message": "an init container env value holds a cloud access key" },
    ])
}

/// The ClusterPolicy both tools' work is measured with: deny a Deployment in `namespace`
/// when a container's (or init container's) env value holds an AWS access key ID, in a
/// CEL expression that Kyverno's webhook evaluates.
fn cluster_policy(namespace: &str) -> Value {
    json!({
        "apiVersion": "kyverno.io/v1",
        "kind": "ClusterPolicy",
        "metadata": { "name": CLUSTER_POLICY.name },
        "spec": {
            "background": false,
            "rules": [{
                "name": "no-cloud-access-keys-in-env",
                "match": { "any": [{ "resources": {
                    "kinds": ["Deployment"],
                    "namespaces": [namespace],
                } }] },
                "validate": {
                    "failureAction": "Enforce",
                    "cel": { "expressions": expressions() },
                },
            }],
        },
    })
}

/// The same check as a ValidatingPolicy: Deployment creates and updates in `namespace`
/// (by a namespace selector, as the policy type matches), the same expressions, denied;
/// evaluated at admission by Kyverno's webhook (no background scan, and no generated
/// ValidatingAdmissionPolicy that would hand it to the API server).
fn validating_policy(namespace: &str) -> Value {
    json!({
        "apiVersion": "policies.kyverno.io/v1",
        "kind": "ValidatingPolicy",
        "metadata": { "name": VALIDATING_POLICY.name },
        "spec": {
            "evaluation": {
                "mode": "Kubernetes",
                "admission": { "enabled": true },
                "background": { "enabled": false },
            },
            "autogen": { "validatingAdmissionPolicy": { "enabled": false } },
            "failurePolicy": "Fail",
            "validationActions": ["Deny"],
            "matchConstraints": {
                "resourceRules": [{
                    "apiGroups": ["apps"],
                    "apiVersions": ["v1"],
                    "operations": ["CREATE", "UPDATE"],
                    "resources": ["deployments"],
                }],
                "namespaceSelector": {
                    "matchLabels": { "kubernetes.io/metadata.name": namespace },
                },
            },
            "validations": expressions(),
        },
    })
}

/// `tests/kyverno/build`: the directory with the binary, CRDs and release manifest.
fn build() -> Result<PathBuf> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/kyverno/build");
    let output = Command::new(&script)
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    ensure!(
        output.status.success(),
        "{} failed ({})",
        script.display(),
        output.status
    );
    let dir = String::from_utf8(output.stdout)?;
    Ok(PathBuf::from(dir.trim()))
}

/// The namespace and the two ConfigMaps (resource filters, webhook namespace selector,
/// metrics settings) exactly as the release ships them.
async fn install_namespace_and_config(admin: &kube::Client, release: &[Value]) -> Result<()> {
    let namespaces = Api::<Namespace>::all(admin.clone());
    if namespaces.get_opt(NAMESPACE).await?.is_none() {
        let namespace: Namespace =
            serde_json::from_value(json!({ "metadata": { "name": NAMESPACE } }))?;
        namespaces
            .create(&PostParams::default(), &namespace)
            .await?;
    }
    let config_maps = Api::<ConfigMap>::namespaced(admin.clone(), NAMESPACE);
    let mut applied = 0;
    for document in release.iter().filter(|d| d["kind"] == "ConfigMap") {
        let config_map: ConfigMap = serde_json::from_value(document.clone())?;
        let name = config_map
            .metadata
            .name
            .clone()
            .context("a release ConfigMap has no name")?;
        config_maps
            .patch(
                &name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&config_map),
            )
            .await
            .with_context(|| format!("applying ConfigMap {name}"))?;
        applied += 1;
    }
    ensure!(
        applied >= 2,
        "the release manifest has {applied} ConfigMaps, expected kyverno and kyverno-metrics"
    );
    Ok(())
}

/// The admission controller's arguments in the release's Deployment, with [`OVERRIDES`].
fn release_arguments(release: &[Value]) -> Result<Vec<String>> {
    let deployment = release
        .iter()
        .find(|d| {
            d["kind"] == "Deployment" && d["metadata"]["name"] == "kyverno-admission-controller"
        })
        .context("the release manifest has no kyverno-admission-controller Deployment")?;
    let container = deployment["spec"]["template"]["spec"]["containers"]
        .as_array()
        .and_then(|containers| containers.iter().find(|c| c["name"] == "kyverno"))
        .context("the admission controller Deployment has no kyverno container")?;
    let mut args: Vec<String> = container["args"]
        .as_array()
        .context("the kyverno container has no args")?
        .iter()
        .filter_map(|a| a.as_str().map(str::to_string))
        .collect();
    for (flag, value) in OVERRIDES {
        let setting = format!("{flag}={value}");
        match args.iter_mut().find(|a| a.split('=').next() == Some(flag)) {
            Some(arg) => *arg = setting,
            None => args.push(setting),
        }
    }
    Ok(args)
}

fn remove_webhook_configurations(cluster: &TestCluster) -> Result<()> {
    let output = cluster
        .kubectl(User::Admin)
        .args([
            "delete",
            "validatingwebhookconfigurations,mutatingwebhookconfigurations",
            "-l",
            MANAGED_LABEL,
            "--ignore-not-found",
        ])
        .output()?;
    ensure!(
        output.status.success(),
        "kubectl delete of Kyverno's webhook configurations failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}
