//! The Helm chart `charts/countersign` (SPEC §9): it lints strictly; it renders with
//! self-managed certificates (the default), cert-manager, an existing Secret and `webhook.url`; its RBAC and
//! its webhook configurations are, as data, what countersign itself builds
//! (`countersign::install`), since the operator audits any difference in the
//! configurations; its `crds/` are the repository's; its schema refuses wrong values; every
//! value is documented; and the API server accepts what it renders
//! (`kubectl apply --dry-run=server` against the test cluster).
//!
//! Helm v4 comes from `tests/chart/helm`, which builds it from the Go module proxy on first
//! use (a minute or two) and reuses it afterwards.

#[path = "integration/support/mod.rs"]
#[allow(dead_code)]
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use countersign::core::guard::VERSION_ANNOTATION;
use countersign::install::rbac::{self, Grant};
use countersign::install::webhooks::{Endpoint, mutating_configuration, validating_configuration};
use countersign::install::{SERVICE_ACCOUNT, webhooks::CONFIGURATION_NAME};
use serde::Deserialize;
use serde_json::{Value, json};

use support::{TestCluster, TestNamespace, User};

/// The namespace the offline renders install into.
const NAMESPACE: &str = "cs-chart";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn chart_dir() -> PathBuf {
    root().join("charts/countersign")
}

/// `tests/chart/helm` with `args`; the first call builds Helm if it is not built yet, once
/// for the whole test binary (the script also serializes builds between processes).
fn helm(args: &[&str]) -> Output {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    let script = root().join("tests/chart/helm");
    let built = BUILT.get_or_init(|| {
        let output = Command::new(&script)
            .arg("version")
            .output()
            .map_err(|e| format!("running {}: {e}", script.display()))?;
        if output.status.success() {
            Ok(())
        } else {
            Err(format!(
                "building helm failed: {}",
                String::from_utf8_lossy(&output.stderr)
            ))
        }
    });
    if let Err(reason) = built {
        panic!("{reason}");
    }
    Command::new(&script)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running helm {args:?}: {e}"))
}

/// `helm template` of the chart into `namespace` with `values` (`--set …`, `--set-file …`);
/// the text of its output, or helm's error.
fn template_text(namespace: &str, values: &[&str]) -> Result<String, String> {
    let chart = chart_dir();
    let mut args = vec![
        "template",
        "countersign",
        chart.to_str().expect("a UTF-8 path"),
        "--namespace",
        namespace,
    ];
    args.extend_from_slice(values);
    let output = helm(&args);
    if output.status.success() {
        Ok(String::from_utf8(output.stdout).expect("UTF-8 output"))
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

/// The rendered chart, one JSON value per document.
struct Rendered {
    documents: Vec<Value>,
}

impl Rendered {
    fn of(namespace: &str, values: &[&str]) -> Rendered {
        let text = template_text(namespace, values)
            .unwrap_or_else(|error| panic!("helm template {values:?} failed: {error}"));
        Rendered {
            documents: parse_documents(&text),
        }
    }

    /// Every object of `kind`.
    fn all(&self, kind: &str) -> Vec<&Value> {
        self.documents
            .iter()
            .filter(|d| d["kind"] == kind)
            .collect()
    }

    /// The one object of `kind` named `name`.
    fn get(&self, kind: &str, name: &str) -> &Value {
        let found: Vec<&Value> = self
            .all(kind)
            .into_iter()
            .filter(|d| d["metadata"]["name"] == name)
            .collect();
        assert_eq!(found.len(), 1, "one {kind} {name}, found {}", found.len());
        found[0]
    }

    fn kinds(&self) -> BTreeMap<String, usize> {
        let mut kinds = BTreeMap::new();
        for document in &self.documents {
            let kind = document["kind"].as_str().unwrap_or_default().to_string();
            *kinds.entry(kind).or_default() += 1;
        }
        kinds
    }

    fn deployment_args(&self) -> Vec<String> {
        let deployment = self.get("Deployment", "countersign");
        let container = &deployment["spec"]["template"]["spec"]["containers"][0];
        strings(&container["args"])
    }
}

fn parse_documents(text: &str) -> Vec<Value> {
    yaml_serde::Deserializer::from_str(text)
        .map(|document| Value::deserialize(document).expect("rendered YAML parses"))
        .filter(|value| !value.is_null())
        .collect()
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .into_iter()
        .flatten()
        .map(|v| v.as_str().expect("a string").to_string())
        .collect()
}

/// A self-signed CA certificate in PEM, as a user would give in `tls.caBundle`.
fn ca_pem() -> String {
    let key = rcgen::KeyPair::generate().expect("a key");
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "countersign chart test CA");
    params.self_signed(&key).expect("a certificate").pem()
}

/// The CA written to a file for `--set-file tls.caBundle=…`, removed when dropped.
struct CaFile {
    path: PathBuf,
    pem: String,
}

impl CaFile {
    fn new() -> CaFile {
        let pem = ca_pem();
        let path = std::env::temp_dir().join(format!(
            "countersign-chart-ca-{}-{}.pem",
            std::process::id(),
            rand_suffix()
        ));
        std::fs::write(&path, &pem).expect("write the CA file");
        CaFile { path, pem }
    }

    fn set_file(&self) -> String {
        self.set_file_as("tls.caBundle")
    }

    /// `--set-file` of this CA as the value `key`.
    fn set_file_as(&self, key: &str) -> String {
        format!("{key}={}", self.path.display())
    }
}

impl Drop for CaFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default()
}

/// The values of an install with an existing Secret and its CA.
fn existing_secret_values(ca: &CaFile) -> Vec<String> {
    vec![
        "--set".into(),
        "certManager.enabled=false".into(),
        "--set".into(),
        "tls.existingSecret=countersign-tls".into(),
        "--set-file".into(),
        ca.set_file(),
    ]
}

/// The control plane's addresses for the NetworkPolicy, on by default: an install in the
/// cluster without client authentication needs them (or it refuses to render).
const CONTROL_PLANE: [&str; 2] = ["--set", "networkPolicy.apiServer.cidrs={10.0.0.0/24}"];

/// The control plane's addresses, then `values`.
fn with_control_plane<'a>(values: &[&'a str]) -> Vec<&'a str> {
    let mut all = CONTROL_PLANE.to_vec();
    all.extend_from_slice(values);
    all
}

/// The values of client authentication with `ca` inline and the API server's name.
fn client_auth_values(ca: &CaFile) -> Vec<String> {
    vec![
        "--set-file".into(),
        ca.set_file_as("webhook.clientAuth.caBundle"),
        "--set".into(),
        "webhook.clientAuth.names={kube-apiserver-webhook-client}".into(),
    ]
}

fn as_strs(values: &[String]) -> Vec<&str> {
    values.iter().map(String::as_str).collect()
}

fn service_endpoint(namespace: &str) -> Endpoint {
    Endpoint::Service {
        namespace: namespace.into(),
        name: "countersign".into(),
        port: 443,
    }
}

/// `expected` (countersign's own configuration) and `rendered` (the chart's) have the same
/// webhooks, field for field, in the same order; the rendered labels and annotations
/// include countersign's (the version that made them among them, which a guard of another
/// version reads). Without `ca_bundle`, the caBundles are left out of the comparison
/// (cert-manager injects them); other annotations (the injector's) do not count.
fn assert_same_configuration(expected: &Value, rendered: &Value, ca_bundle: bool) {
    let kind = rendered["kind"].as_str().unwrap_or_default();
    assert_eq!(expected["kind"], rendered["kind"]);
    assert_eq!(expected["apiVersion"], rendered["apiVersion"], "{kind}");
    assert_eq!(rendered["metadata"]["name"], CONFIGURATION_NAME, "{kind}");
    for (label, value) in expected["metadata"]["labels"].as_object().expect("labels") {
        assert_eq!(
            &rendered["metadata"]["labels"][label], value,
            "{kind}: label {label}"
        );
    }
    for (annotation, value) in expected["metadata"]["annotations"]
        .as_object()
        .expect("annotations")
    {
        assert_eq!(
            &rendered["metadata"]["annotations"][annotation], value,
            "{kind}: annotation {annotation}"
        );
    }
    let hooks = |configuration: &Value| -> Vec<Value> {
        let mut hooks = configuration["webhooks"]
            .as_array()
            .expect("webhooks")
            .clone();
        if !ca_bundle {
            for hook in &mut hooks {
                if let Some(client) = hook["clientConfig"].as_object_mut() {
                    client.remove("caBundle");
                }
            }
        }
        hooks
    };
    let (expected_hooks, rendered_hooks) = (hooks(expected), hooks(rendered));
    let names = |hooks: &[Value]| -> Vec<String> {
        hooks
            .iter()
            .map(|h| h["name"].as_str().unwrap_or_default().to_string())
            .collect()
    };
    assert_eq!(
        names(&expected_hooks),
        names(&rendered_hooks),
        "{kind}: the webhooks, in order"
    );
    for (want, have) in expected_hooks.iter().zip(&rendered_hooks) {
        assert!(
            want == have,
            "{kind}: webhook {} differs from countersign::install::webhooks\nexpected:\n{}\nrendered:\n{}",
            want["name"],
            serde_json::to_string_pretty(want).unwrap_or_default(),
            serde_json::to_string_pretty(have).unwrap_or_default()
        );
    }
    // Nothing but name, labels and annotations in the rendered metadata, and nothing else
    // at the top level.
    let top: BTreeSet<&str> = rendered
        .as_object()
        .expect("an object")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        top,
        BTreeSet::from(["apiVersion", "kind", "metadata", "webhooks"]),
        "{kind}"
    );
}

fn to_json<T: serde::Serialize>(value: &T) -> Value {
    serde_json::to_value(value).expect("serializes")
}

#[test]
fn lints_strictly() {
    let ca = CaFile::new();
    let chart = chart_dir();
    let chart = chart.to_str().expect("a UTF-8 path");
    let existing = existing_secret_values(&ca);
    let client_auth = client_auth_values(&ca);
    let url = ["--set", "webhook.url=https://countersign.example.com:8443"];
    for values in [
        CONTROL_PLANE.to_vec(),
        with_control_plane(&as_strs(&existing)),
        url.to_vec(),
        as_strs(&client_auth),
    ] {
        let mut args = vec!["lint", "--strict", chart];
        args.extend_from_slice(&values);
        let output = helm(&args);
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success(),
            "helm lint --strict {values:?}:\n{stdout}\n{stderr}"
        );
        assert!(stdout.contains("0 chart(s) failed"), "{stdout}");
        assert!(!stdout.contains("[WARNING]"), "{stdout}");
        // Lint passes over a template's `fail` (it only logs it): these values must render.
        assert!(
            !stderr.contains("funcMap fail"),
            "helm lint --strict {values:?}: the chart refuses these values:\n{stderr}"
        );
    }
}

/// countersign's two webhook configurations for the chart's Service, with no CA bundle (the
/// renders where something else fills it in), each with its kind.
fn service_configurations_without_ca() -> [(&'static str, Value); 2] {
    let endpoint = service_endpoint(NAMESPACE);
    [
        (
            "ValidatingWebhookConfiguration",
            to_json(&validating_configuration(&endpoint, b"", NAMESPACE)),
        ),
        (
            "MutatingWebhookConfiguration",
            to_json(&mutating_configuration(&endpoint, b"", NAMESPACE)),
        ),
    ]
}

#[test]
fn the_default_install_keeps_its_own_certificates() {
    let rendered = Rendered::of(NAMESPACE, &CONTROL_PLANE);
    assert!(rendered.all("Certificate").is_empty() && rendered.all("Issuer").is_empty());
    for (kind, expected) in service_configurations_without_ca() {
        let configuration = rendered.get(kind, CONFIGURATION_NAME);
        assert_eq!(
            configuration["metadata"]["annotations"],
            json!({ VERSION_ANNOTATION: env!("CARGO_PKG_VERSION") }),
            "{kind}: no injector's annotation"
        );
        for hook in configuration["webhooks"].as_array().expect("webhooks") {
            assert!(
                hook["clientConfig"].get("caBundle").is_none(),
                "{kind}: countersign injects caBundle (no Secret to look up offline): {hook}"
            );
        }
        assert_same_configuration(&expected, configuration, false);
    }
    let args = rendered.deployment_args();
    for arg in [
        "--self-managed-tls".to_string(),
        format!("--webhook-service={NAMESPACE}/countersign:443"),
        format!("--install-namespace={NAMESPACE}"),
    ] {
        assert!(args.contains(&arg), "{arg} in {args:?}");
    }
    for absent in ["--tls-cert", "--tls-key", "--webhook-ca-bundle"] {
        assert!(
            !args.iter().any(|a| a.starts_with(absent)),
            "{absent} in {args:?}"
        );
    }
    let pod = &rendered.get("Deployment", "countersign")["spec"]["template"]["spec"];
    assert_eq!(
        pod["volumes"],
        json!([{"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}}])
    );
    assert_eq!(
        pod["containers"][0]["volumeMounts"],
        json!([{"name": "tmp", "mountPath": "/tmp"}])
    );
    let binding = rendered.get("ClusterRoleBinding", rbac::CA_INJECTOR_ROLE);
    let expected = to_json(&rbac::ca_injector_cluster_role_binding(NAMESPACE));
    assert_eq!(binding["roleRef"], expected["roleRef"]);
    assert_eq!(binding["subjects"], expected["subjects"]);
}

#[test]
fn a_cert_manager_install_gets_its_certificate_from_cert_manager() {
    let rendered = Rendered::of(
        NAMESPACE,
        &with_control_plane(&["--set", "certManager.enabled=true"]),
    );
    let kinds = rendered.kinds();
    let expected: BTreeMap<String, usize> = [
        ("ClusterRole", 7),
        ("ClusterRoleBinding", 1),
        ("Role", 1),
        ("RoleBinding", 1),
        ("ServiceAccount", 1),
        ("Deployment", 1),
        ("Service", 1),
        ("PodDisruptionBudget", 1),
        ("NetworkPolicy", 1),
        ("ValidatingWebhookConfiguration", 1),
        ("MutatingWebhookConfiguration", 1),
        ("Issuer", 2),
        ("Certificate", 2),
    ]
    .into_iter()
    .map(|(k, n)| (k.to_string(), n))
    .collect();
    assert_eq!(kinds, expected);

    let certificate = rendered.get("Certificate", "countersign");
    assert_eq!(certificate["spec"]["secretName"], "countersign-tls");
    assert_eq!(
        strings(&certificate["spec"]["dnsNames"]),
        [
            format!("countersign.{NAMESPACE}.svc"),
            format!("countersign.{NAMESPACE}.svc.cluster.local")
        ]
    );
    assert_eq!(certificate["spec"]["issuerRef"]["name"], "countersign-ca");
    let ca = rendered.get("Certificate", "countersign-ca");
    assert_eq!(ca["spec"]["isCA"], true);
    assert_eq!(ca["spec"]["issuerRef"]["name"], "countersign-selfsigned");
    assert_eq!(
        rendered.get("Issuer", "countersign-ca")["spec"]["ca"]["secretName"],
        "countersign-ca"
    );

    for (kind, expected) in service_configurations_without_ca() {
        let configuration = rendered.get(kind, CONFIGURATION_NAME);
        assert_eq!(
            configuration["metadata"]["annotations"]["cert-manager.io/inject-ca-from"],
            format!("{NAMESPACE}/countersign"),
            "{kind}"
        );
        for hook in configuration["webhooks"].as_array().expect("webhooks") {
            assert!(
                hook["clientConfig"].get("caBundle").is_none(),
                "{kind}: the injector fills caBundle in: {hook}"
            );
        }
        assert_same_configuration(&expected, configuration, false);
    }

    let pod = &rendered.get("Deployment", "countersign")["spec"]["template"]["spec"];
    assert_eq!(pod["volumes"][0]["secret"]["secretName"], "countersign-tls");
    let args = rendered.deployment_args();
    assert!(
        rendered.all("ClusterRoleBinding").len() == 1,
        "no CA injector"
    );
    for arg in [
        format!("--webhook-service={NAMESPACE}/countersign:443"),
        "--webhook-ca-bundle=/etc/countersign/tls/ca.crt".to_string(),
        format!("--install-namespace={NAMESPACE}"),
    ] {
        assert!(args.contains(&arg), "{arg} in {args:?}");
    }
    // The restorer's binding only with webhook.restore.
    assert!(!args.contains(&"--restore-webhook-configurations".to_string()));
}

#[test]
fn an_existing_secret_install_carries_the_given_ca_and_exactly_countersigns_configurations() {
    let ca = CaFile::new();
    let values = existing_secret_values(&ca);
    let values = with_control_plane(&as_strs(&values));
    let rendered = Rendered::of(NAMESPACE, &values);
    assert!(rendered.all("Certificate").is_empty());
    assert!(rendered.all("Issuer").is_empty());
    let endpoint = service_endpoint(NAMESPACE);
    let validating = rendered.get("ValidatingWebhookConfiguration", CONFIGURATION_NAME);
    let mutating = rendered.get("MutatingWebhookConfiguration", CONFIGURATION_NAME);
    for configuration in [validating, mutating] {
        assert_eq!(
            configuration["metadata"]["annotations"],
            json!({ VERSION_ANNOTATION: env!("CARGO_PKG_VERSION") })
        );
    }
    assert_same_configuration(
        &to_json(&validating_configuration(
            &endpoint,
            ca.pem.as_bytes(),
            NAMESPACE,
        )),
        validating,
        true,
    );
    assert_same_configuration(
        &to_json(&mutating_configuration(
            &endpoint,
            ca.pem.as_bytes(),
            NAMESPACE,
        )),
        mutating,
        true,
    );
    let pod = &rendered.get("Deployment", "countersign")["spec"]["template"]["spec"];
    assert_eq!(pod["volumes"][0]["secret"]["secretName"], "countersign-tls");

    // Another namespace is excluded instead, and the Service is looked for there.
    let elsewhere = Rendered::of("team-platform", &values);
    assert_same_configuration(
        &to_json(&validating_configuration(
            &service_endpoint("team-platform"),
            ca.pem.as_bytes(),
            "team-platform",
        )),
        elsewhere.get("ValidatingWebhookConfiguration", CONFIGURATION_NAME),
        true,
    );
}

#[test]
fn a_webhook_outside_the_cluster_is_called_by_url_and_nothing_runs_here() {
    let ca = CaFile::new();
    let url = "https://countersign.example.com:8443";
    let set_url = format!("webhook.url={url}/");
    let ca_file = ca.set_file();
    let rendered = Rendered::of(NAMESPACE, &["--set", &set_url, "--set-file", &ca_file]);
    for kind in [
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "Certificate",
        "Issuer",
    ] {
        assert!(rendered.all(kind).is_empty(), "no {kind} with webhook.url");
    }
    // countersign elsewhere still runs as this ServiceAccount, with these rights.
    assert_eq!(
        rendered.get("ServiceAccount", SERVICE_ACCOUNT)["metadata"]["namespace"],
        NAMESPACE
    );
    assert_eq!(rendered.all("ClusterRole").len(), 7);
    assert_eq!(
        rendered.all("ClusterRoleBinding").len(),
        1,
        "its CA is given"
    );
    let endpoint = Endpoint::Url(url.into());
    assert_same_configuration(
        &to_json(&validating_configuration(
            &endpoint,
            ca.pem.as_bytes(),
            NAMESPACE,
        )),
        rendered.get("ValidatingWebhookConfiguration", CONFIGURATION_NAME),
        true,
    );
    assert_same_configuration(
        &to_json(&mutating_configuration(
            &endpoint,
            ca.pem.as_bytes(),
            NAMESPACE,
        )),
        rendered.get("MutatingWebhookConfiguration", CONFIGURATION_NAME),
        true,
    );

    // Without a CA, countersign there keeps its own (--self-managed-tls) and injects it.
    let self_managed = Rendered::of(NAMESPACE, &["--set", &set_url]);
    assert!(
        self_managed
            .get("ValidatingWebhookConfiguration", CONFIGURATION_NAME)["webhooks"][0]
            ["clientConfig"]
            .get("caBundle")
            .is_none()
    );
    self_managed.get("ClusterRoleBinding", rbac::CA_INJECTOR_ROLE);

    // Asked to, countersign runs here too and is told the URL; cert-manager's certificate
    // then also names the URL's host.
    let rendered = Rendered::of(
        NAMESPACE,
        &with_control_plane(&[
            "--set",
            &set_url,
            "--set",
            "deployment.enabled=true",
            "--set",
            "certManager.enabled=true",
        ]),
    );
    let args = rendered.deployment_args();
    assert!(args.contains(&format!("--webhook-url={url}/")), "{args:?}");
    assert!(!args.iter().any(|a| a.starts_with("--webhook-service")));
    let names = strings(&rendered.get("Certificate", "countersign")["spec"]["dnsNames"]);
    assert!(
        names.contains(&"countersign.example.com".to_string()),
        "{names:?}"
    );
}

/// The pod's volume and mount `client-ca`, and every `--client…` argument of `serve`.
fn client_auth_of(rendered: &Rendered) -> (Option<Value>, Option<Value>, Vec<String>) {
    let pod = &rendered.get("Deployment", "countersign")["spec"]["template"]["spec"];
    let named = |list: &Value| {
        list.as_array()
            .into_iter()
            .flatten()
            .find(|v| v["name"] == "client-ca")
            .cloned()
    };
    let args = rendered
        .deployment_args()
        .into_iter()
        .filter(|a| a.starts_with("--client"))
        .collect();
    (
        named(&pod["volumes"]),
        named(&pod["containers"][0]["volumeMounts"]),
        args,
    )
}

/// webhook.clientAuth: the CA that signs the API server's client certificate, inline (a
/// ConfigMap the chart makes) or in a ConfigMap of the user's, mounted read-only where
/// `--client-ca-file` points, and one `--client-name` per name; nothing of it without.
#[test]
fn client_authentication_mounts_the_ca_and_passes_exactly_its_flags() {
    let ca = CaFile::new();
    let mut values = client_auth_values(&ca);
    values.extend(
        [
            "--set",
            "webhook.clientAuth.names={kube-apiserver-webhook-client,apiserver.example.com}",
        ]
        .map(String::from),
    );
    let rendered = Rendered::of(NAMESPACE, &as_strs(&values));
    let config_map = rendered.get("ConfigMap", "countersign-client-ca");
    assert_eq!(config_map["metadata"]["namespace"], NAMESPACE);
    assert_eq!(config_map["data"], json!({"ca.crt": ca.pem}));
    let (volume, mount, args) = client_auth_of(&rendered);
    assert_eq!(
        args,
        [
            "--client-ca-file=/etc/countersign/client-ca/ca.crt",
            "--client-name=kube-apiserver-webhook-client",
            "--client-name=apiserver.example.com",
        ]
    );
    assert_eq!(
        mount,
        Some(
            json!({"name": "client-ca", "mountPath": "/etc/countersign/client-ca", "readOnly": true})
        )
    );
    assert_eq!(
        volume,
        Some(json!({"name": "client-ca", "configMap": {
            "name": "countersign-client-ca",
            "items": [{"key": "ca.crt", "path": "ca.crt"}],
            "defaultMode": 292,
        }}))
    );
    // Beside the self-managed certificate's directory, which stays as it was.
    let pod = &rendered.get("Deployment", "countersign")["spec"]["template"]["spec"];
    assert_eq!(
        pod["containers"][0]["volumeMounts"][0],
        json!({"name": "tmp", "mountPath": "/tmp"})
    );
    assert_eq!(pod["volumes"].as_array().map(Vec::len), Some(2));

    // A ConfigMap of the user's, its key projected to the same file; no names: any
    // certificate of the CA; and the chart makes no ConfigMap.
    let mut existing = existing_secret_values(&ca);
    existing.extend(
        [
            "--set",
            "webhook.clientAuth.existingConfigMap.name=apiserver-client-ca",
            "--set",
            "webhook.clientAuth.existingConfigMap.key=bundle.pem",
        ]
        .map(String::from),
    );
    let rendered = Rendered::of(NAMESPACE, &as_strs(&existing));
    assert!(rendered.all("ConfigMap").is_empty());
    let (volume, mount, args) = client_auth_of(&rendered);
    assert_eq!(args, ["--client-ca-file=/etc/countersign/client-ca/ca.crt"]);
    assert_eq!(
        mount,
        Some(
            json!({"name": "client-ca", "mountPath": "/etc/countersign/client-ca", "readOnly": true})
        )
    );
    assert_eq!(
        volume,
        Some(json!({"name": "client-ca", "configMap": {
            "name": "apiserver-client-ca",
            "items": [{"key": "bundle.pem", "path": "ca.crt"}],
            "defaultMode": 292,
        }}))
    );
    // Beside the serving certificate's Secret.
    let pod = &rendered.get("Deployment", "countersign")["spec"]["template"]["spec"];
    assert_eq!(pod["volumes"][0]["name"], "tls");
    assert_eq!(pod["containers"][0]["volumeMounts"][0]["name"], "tls");

    // Without it: no flag, no volume, no ConfigMap.
    let rendered = Rendered::of(NAMESPACE, &CONTROL_PLANE);
    assert!(rendered.all("ConfigMap").is_empty());
    assert_eq!(client_auth_of(&rendered), (None, None, Vec::new()));
}

/// The ClusterRoles, the Role and the bindings are `countersign::install::rbac`'s, rule for
/// rule; the restorer is bound only with webhook.restore.
#[test]
fn rbac_is_countersigns_own() {
    let rendered = Rendered::of(NAMESPACE, &CONTROL_PLANE);
    let expected_roles = rbac::cluster_roles();
    assert_eq!(rendered.all("ClusterRole").len(), expected_roles.len());
    for expected in &expected_roles {
        let name = expected.metadata.name.as_deref().expect("a name");
        let role = rendered.get("ClusterRole", name);
        assert_eq!(
            role["rules"],
            to_json(&expected.rules),
            "ClusterRole {name}: rules differ from src/install/rbac.rs"
        );
        for (label, value) in expected.metadata.labels.iter().flatten() {
            assert_eq!(
                role["metadata"]["labels"][label], *value,
                "ClusterRole {name}: label {label}"
            );
        }
        assert!(role.get("aggregationRule").is_none(), "{name}");
    }
    let expected_role = rbac::own_role(NAMESPACE);
    let role = rendered.get("Role", rbac::OWN_ROLE);
    assert_eq!(role["metadata"]["namespace"], NAMESPACE);
    assert_eq!(role["rules"], to_json(&expected_role.rules));
    assert_eq!(rendered.all("Role").len(), 1);

    let same_binding = |rendered: &Value, expected: Value| {
        assert_eq!(rendered["metadata"]["name"], expected["metadata"]["name"]);
        assert_eq!(rendered["roleRef"], expected["roleRef"], "{rendered}");
        assert_eq!(rendered["subjects"], expected["subjects"], "{rendered}");
    };
    same_binding(
        rendered.get("ClusterRoleBinding", rbac::OWN_ROLE),
        to_json(&rbac::own_cluster_role_binding(NAMESPACE)),
    );
    let binding = rendered.get("RoleBinding", rbac::OWN_ROLE);
    assert_eq!(binding["metadata"]["namespace"], NAMESPACE);
    same_binding(binding, to_json(&rbac::own_role_binding(NAMESPACE)));
    assert_eq!(
        rendered.get("ServiceAccount", SERVICE_ACCOUNT)["metadata"]["namespace"],
        NAMESPACE
    );
    assert_eq!(rendered.all("ServiceAccount").len(), 1);
    // Its own and, for self-managed certificates, the CA injector's.
    assert_eq!(rendered.all("ClusterRoleBinding").len(), 2);

    let restoring = Rendered::of(
        NAMESPACE,
        &with_control_plane(&["--set", "webhook.restore=true"]),
    );
    assert_eq!(restoring.all("ClusterRoleBinding").len(), 3);
    same_binding(
        restoring.get("ClusterRoleBinding", rbac::RESTORER_ROLE),
        to_json(&rbac::restorer_cluster_role_binding(NAMESPACE)),
    );
    let args = restoring.deployment_args();
    assert!(args.contains(&"--restore-webhook-configurations".to_string()));

    let syncing = Rendered::of(
        NAMESPACE,
        &with_control_plane(&["--set", "gitops.enabled=true"]),
    );
    assert_eq!(syncing.all("ClusterRoleBinding").len(), 3);
    same_binding(
        syncing.get("ClusterRoleBinding", rbac::GITOPS_ROLE),
        to_json(&rbac::gitops_cluster_role_binding(NAMESPACE)),
    );
    assert!(syncing.deployment_args().contains(&"--gitops".to_string()));
    assert!(
        !args.contains(&"--gitops".to_string()),
        "--gitops only when enabled"
    );
}

/// Above every rule of templates/rbac.yaml is a comment saying why, the `why` of its grant
/// in src/install/rbac.rs (docs/rbac.md says the same).
#[test]
fn every_rule_says_why() {
    let text = template_text(NAMESPACE, &CONTROL_PLANE).expect("renders");
    let roles: [(&str, &str, &[Grant]); 8] = [
        ("ClusterRole", rbac::OWN_ROLE, rbac::OWN_CLUSTER_GRANTS),
        ("Role", rbac::OWN_ROLE, rbac::OWN_NAMESPACE_GRANTS),
        ("ClusterRole", rbac::APPROVER_ROLE, rbac::APPROVER_GRANTS),
        ("ClusterRole", rbac::VIEWER_ROLE, rbac::VIEWER_GRANTS),
        ("ClusterRole", rbac::DEPLOYER_ROLE, rbac::DEPLOYER_GRANTS),
        ("ClusterRole", rbac::RESTORER_ROLE, rbac::RESTORER_GRANTS),
        (
            "ClusterRole",
            rbac::CA_INJECTOR_ROLE,
            rbac::CA_INJECTOR_GRANTS,
        ),
        ("ClusterRole", rbac::GITOPS_ROLE, rbac::GITOPS_GRANTS),
    ];
    let documents: Vec<&str> = text.split("\n---\n").collect();
    for (kind, name, grants) in roles {
        let document = documents
            .iter()
            .find(|d| {
                d.lines().any(|l| l == format!("kind: {kind}"))
                    && d.lines().any(|l| l == format!("  name: {name}"))
            })
            .unwrap_or_else(|| panic!("{kind} {name} rendered"));
        let whys = rule_comments(document);
        let expected: Vec<&str> = grants.iter().map(|g| g.why).collect();
        assert_eq!(
            whys, expected,
            "{kind} {name}: the comments above its rules are not the reasons in src/install/rbac.rs"
        );
    }
}

/// The comment block right above each `- apiGroups:` item, its lines joined by spaces.
fn rule_comments(document: &str) -> Vec<String> {
    let mut comments = Vec::new();
    let mut block: Vec<&str> = Vec::new();
    let mut in_rules = false;
    for line in document.lines() {
        let trimmed = line.trim();
        if line == "rules:" {
            in_rules = true;
            block.clear();
        } else if !in_rules {
            continue;
        } else if let Some(comment) = trimmed.strip_prefix('#') {
            block.push(comment.trim());
        } else if trimmed.starts_with("- apiGroups:") {
            comments.push(block.join(" "));
            block.clear();
        } else {
            block.clear();
        }
    }
    comments
}

#[test]
fn the_deployment_is_hardened_spread_and_probed() {
    let rendered = Rendered::of(NAMESPACE, &CONTROL_PLANE);
    let deployment = rendered.get("Deployment", "countersign");
    assert_eq!(deployment["spec"]["replicas"], 2);
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], SERVICE_ACCOUNT);
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    let term = &pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
        [0]["podAffinityTerm"];
    assert_eq!(term["topologyKey"], "kubernetes.io/hostname");
    assert_eq!(
        term["labelSelector"]["matchLabels"],
        deployment["spec"]["selector"]["matchLabels"]
    );
    let containers = pod["containers"].as_array().expect("containers");
    assert_eq!(containers.len(), 1);
    let container = &containers[0];
    let security = &container["securityContext"];
    assert_eq!(security["runAsNonRoot"], true);
    assert_eq!(security["readOnlyRootFilesystem"], true);
    assert_eq!(security["allowPrivilegeEscalation"], false);
    assert_eq!(security["capabilities"]["drop"], json!(["ALL"]));
    assert_eq!(security["seccompProfile"]["type"], "RuntimeDefault");
    assert_eq!(
        container["ports"],
        json!([{"name": "https", "containerPort": 8443, "protocol": "TCP"}])
    );
    for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
        let get = &container[probe]["httpGet"];
        assert_eq!(get["path"], path, "{probe}");
        assert_eq!(get["scheme"], "HTTPS", "{probe}");
        assert_eq!(get["port"], "https", "{probe}");
    }
    assert_eq!(
        container["env"][0],
        json!({"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}})
    );
    let args = rendered.deployment_args();
    assert_eq!(args[0], "serve");
    for arg in [
        "--listen=0.0.0.0:8443",
        "--log-format=json",
        "--audit-retention=8760h",
    ] {
        assert!(args.contains(&arg.to_string()), "{arg} in {args:?}");
    }
    // A Secret of certificates is mounted whole, readable by the pod's group only.
    let ca = CaFile::new();
    let with_secret = Rendered::of(
        NAMESPACE,
        &with_control_plane(&as_strs(&existing_secret_values(&ca))),
    );
    let args = with_secret.deployment_args();
    for arg in [
        "--tls-cert=/etc/countersign/tls/tls.crt",
        "--tls-key=/etc/countersign/tls/tls.key",
        "--webhook-ca-bundle=/etc/countersign/tls/ca.crt",
    ] {
        assert!(args.contains(&arg.to_string()), "{arg} in {args:?}");
    }
    let pod_with_secret = &with_secret.get("Deployment", "countersign")["spec"]["template"]["spec"];
    assert_eq!(
        pod_with_secret["containers"][0]["volumeMounts"],
        json!([{"name": "tls", "mountPath": "/etc/countersign/tls", "readOnly": true}])
    );
    assert_eq!(pod_with_secret["volumes"][0]["secret"]["defaultMode"], 288);

    let service = rendered.get("Service", "countersign");
    assert_eq!(
        service["spec"]["ports"],
        json!([{"name": "https", "port": 443, "targetPort": "https", "protocol": "TCP"}])
    );
    assert_eq!(
        service["spec"]["selector"],
        deployment["spec"]["selector"]["matchLabels"]
    );
    let budget = rendered.get("PodDisruptionBudget", "countersign");
    assert_eq!(budget["spec"]["minAvailable"], 1);
    assert_eq!(
        budget["spec"]["selector"]["matchLabels"],
        deployment["spec"]["selector"]["matchLabels"]
    );
    // Off by default (the NetworkPolicy, on by default, has its own tests).
    assert!(rendered.all("ServiceMonitor").is_empty());
    let optional = Rendered::of(
        NAMESPACE,
        &with_control_plane(&[
            "--set",
            "serviceMonitor.enabled=true",
            "--set",
            "serve.clusterRegion=eu-west-1",
        ]),
    );
    let monitor = optional.get("ServiceMonitor", "countersign");
    assert_eq!(monitor["spec"]["endpoints"][0]["scheme"], "https");
    assert_eq!(monitor["spec"]["endpoints"][0]["path"], "/metrics");
    assert!(
        optional
            .deployment_args()
            .contains(&"--cluster-region=eu-west-1".to_string())
    );
}

/// `networkPolicy.apiServer.peers` as AKS needs it: its konnectivity-agent pods.
const KONNECTIVITY_PEERS: &str = r#"networkPolicy.apiServer.peers=[{"namespaceSelector":{"matchLabels":{"kubernetes.io/metadata.name":"kube-system"}},"podSelector":{"matchLabels":{"app":"konnectivity-agent"}}}]"#;

/// `networkPolicy.extraFrom`: a Prometheus that scrapes /metrics.
const PROMETHEUS_PEERS: &str = r#"networkPolicy.extraFrom=[{"namespaceSelector":{"matchLabels":{"kubernetes.io/metadata.name":"monitoring"}},"podSelector":{"matchLabels":{"app.kubernetes.io/name":"prometheus"}}}]"#;

/// The ingress rules of the chart's NetworkPolicy, which selects countersign's pods and
/// restricts ingress only.
fn network_policy_ingress(rendered: &Rendered) -> Value {
    let policy = rendered.get("NetworkPolicy", "countersign");
    assert_eq!(policy["metadata"]["namespace"], NAMESPACE);
    assert_eq!(
        policy["spec"]["podSelector"]["matchLabels"],
        rendered.get("Deployment", "countersign")["spec"]["selector"]["matchLabels"]
    );
    assert_eq!(policy["spec"]["policyTypes"], json!(["Ingress"]));
    assert!(policy["spec"].get("egress").is_none(), "{policy}");
    policy["spec"]["ingress"].clone()
}

/// The NetworkPolicy is on by default and admits to countersign's pods only port 8443
/// (the only one: webhook calls, probes, metrics), from the control plane's CIDRs and
/// peers, then the nodes' CIDRs and the extra peers; with client authentication and no
/// addresses, from anyone on 8443; off, there is none; without pods here, none either.
#[test]
fn the_network_policy_admits_only_the_control_plane_to_the_webhook_port() {
    let konnectivity = json!({
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
        "podSelector": {"matchLabels": {"app": "konnectivity-agent"}},
    });
    let prometheus = json!({
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
        "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}},
    });
    let port = json!([{"port": 8443, "protocol": "TCP"}]);
    let rendered = Rendered::of(
        NAMESPACE,
        &[
            "--set",
            "networkPolicy.apiServer.cidrs={10.0.0.0/24,fd00:10::/64}",
            "--set-json",
            KONNECTIVITY_PEERS,
            "--set",
            "networkPolicy.nodeCidrs={192.168.0.0/16}",
            "--set-json",
            PROMETHEUS_PEERS,
        ],
    );
    assert_eq!(
        network_policy_ingress(&rendered),
        json!([{
            "ports": port,
            "from": [
                {"ipBlock": {"cidr": "10.0.0.0/24"}},
                {"ipBlock": {"cidr": "fd00:10::/64"}},
                konnectivity,
                {"ipBlock": {"cidr": "192.168.0.0/16"}},
                prometheus,
            ],
        }])
    );
    // 8443 is the pods' only port.
    let container =
        &rendered.get("Deployment", "countersign")["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(
        container["ports"],
        json!([{"name": "https", "containerPort": 8443, "protocol": "TCP"}])
    );

    // The CIDRs alone; the peers alone (AKS without API Server VNet Integration).
    let cidrs_only = Rendered::of(NAMESPACE, &CONTROL_PLANE);
    assert_eq!(
        network_policy_ingress(&cidrs_only),
        json!([{"ports": port, "from": [{"ipBlock": {"cidr": "10.0.0.0/24"}}]}])
    );
    let peers_only = Rendered::of(NAMESPACE, &["--set-json", KONNECTIVITY_PEERS]);
    assert_eq!(
        network_policy_ingress(&peers_only),
        json!([{"ports": port, "from": [konnectivity]}])
    );

    // Client authentication and no addresses: anyone, on 8443 only (the certificate keeps
    // others out); with addresses as well, only those.
    let ca = CaFile::new();
    let client_auth = client_auth_values(&ca);
    let anyone = Rendered::of(NAMESPACE, &as_strs(&client_auth));
    assert_eq!(network_policy_ingress(&anyone), json!([{"ports": port}]));
    let both = Rendered::of(NAMESPACE, &with_control_plane(&as_strs(&client_auth)));
    assert_eq!(
        network_policy_ingress(&both),
        json!([{"ports": port, "from": [{"ipBlock": {"cidr": "10.0.0.0/24"}}]}])
    );

    // Off, knowingly: no NetworkPolicy, and nothing refused.
    for values in [
        vec!["--set", "networkPolicy.enabled=false"],
        with_control_plane(&["--set", "networkPolicy.enabled=false"]),
    ] {
        let rendered = Rendered::of(NAMESPACE, &values);
        assert!(rendered.all("NetworkPolicy").is_empty(), "{values:?}");
        rendered.get("Deployment", "countersign");
    }
    // countersign elsewhere (webhook.url): no pods here, so no NetworkPolicy to need
    // addresses.
    let elsewhere = Rendered::of(
        NAMESPACE,
        &["--set", "webhook.url=https://countersign.example.com"],
    );
    assert!(elsewhere.all("NetworkPolicy").is_empty());
}

/// Neither the control plane's addresses nor client authentication: the chart refuses to
/// render, saying what to set (and where to read how, sections docs/install.md has),
/// whatever else is given.
#[test]
fn without_control_plane_addresses_or_client_authentication_the_chart_refuses() {
    let install = std::fs::read_to_string(root().join("docs/install.md")).expect("install.md");
    for heading in [
        "## Managed clusters (EKS, GKE, AKS): the NetworkPolicy",
        "## Authenticating the API server to countersign",
    ] {
        assert!(
            install.lines().any(|line| line == heading),
            "docs/install.md has no {heading:?}, which the chart's refusal points at"
        );
    }
    for values in [
        vec![],
        vec!["--set", "networkPolicy.nodeCidrs={192.168.0.0/16}"],
        vec!["--set-json", PROMETHEUS_PEERS],
        vec!["--set", "certManager.enabled=true"],
        vec![
            "--set",
            "webhook.url=https://countersign.example.com",
            "--set",
            "deployment.enabled=true",
        ],
    ] {
        match template_text(NAMESPACE, &values) {
            Ok(_) => panic!("helm template {values:?} rendered"),
            Err(error) => {
                for needle in [
                    "networkPolicy.apiServer.cidrs",
                    "networkPolicy.apiServer.peers",
                    r#"docs/install.md, "Managed clusters (EKS, GKE, AKS): the NetworkPolicy""#,
                    "configure webhook.clientAuth",
                    r#"docs/install.md, "Authenticating the API server to countersign""#,
                    "networkPolicy.enabled=false",
                ] {
                    assert!(
                        error.contains(needle),
                        "helm template {values:?}: expected {needle:?} in:\n{error}"
                    );
                }
            }
        }
    }
}

/// The chart's crds/ are the repository's (which tests/crd_drift.rs keeps equal to
/// `countersign crds`), file for file.
#[test]
fn the_charts_crds_are_the_repositorys() {
    let listing = |dir: &Path| -> BTreeMap<String, String> {
        std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|entry| {
                let path = entry.expect("an entry").path();
                let name = path
                    .file_name()
                    .expect("a name")
                    .to_string_lossy()
                    .into_owned();
                let text = std::fs::read_to_string(&path)
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                (name, text)
            })
            .collect()
    };
    let repository = listing(&root().join("crds"));
    let chart = listing(&chart_dir().join("crds"));
    assert!(!repository.is_empty());
    assert!(
        chart == repository,
        "charts/countersign/crds differs from crds/; copy them: cp crds/*.yaml charts/countersign/crds/ (and remove stale files)"
    );
}

#[test]
fn the_schema_and_the_chart_refuse_what_cannot_work() {
    let ca = CaFile::new();
    let ca_file = ca.set_file();
    let client_ca_file = ca.set_file_as("webhook.clientAuth.caBundle");
    let cases: &[(&[&str], &str)] = &[
        (
            &["--set", "deployment.replicas=two"],
            "/deployment/replicas",
        ),
        (&["--set", "replicas=2"], "additional properties 'replicas'"),
        (&["--set", "webhook.restore=yes"], "/webhook/restore"),
        (
            &[
                "--set",
                "webhook.url=https://countersign.example.com/validate",
            ],
            "/webhook/url",
        ),
        (
            &["--set", "webhook.url=http://countersign.example.com"],
            "/webhook/url",
        ),
        (&["--set", "serve.logFormat=xml"], "/serve/logFormat"),
        (
            &["--set", "deployment.enabled=sometimes"],
            "/deployment/enabled",
        ),
        (&["--set", "tls.caBundle=Zm9v"], "/tls/caBundle"),
        (
            &["--set", "certManager.issuerRef.kind=Vault"],
            "/certManager/issuerRef",
        ),
        (
            &["--set-file", &ca_file],
            "tls.caBundle without tls.existingSecret",
        ),
        (
            &[
                "--set",
                "certManager.enabled=true",
                "--set",
                "tls.existingSecret=mine",
                "--set-file",
                &ca_file,
            ],
            "two sources of the serving certificate",
        ),
        (
            &[
                "--set",
                "certManager.enabled=false",
                "--set",
                "tls.existingSecret=mine",
            ],
            "tls.existingSecret needs tls.caBundle",
        ),
        (
            &["--set", "deployment.enabled=false"],
            "deployment.enabled=false needs webhook.url",
        ),
        (
            &["--set", "webhook.clientAuth.caBundle=Zm9v"],
            "/webhook/clientAuth/caBundle",
        ),
        (
            &["--set", "webhook.clientAuth.names=kube-apiserver"],
            "/webhook/clientAuth/names",
        ),
        (
            &["--set-json", r#"webhook.clientAuth.names=["a,b"]"#],
            "/webhook/clientAuth/names/0",
        ),
        (
            &["--set", "webhook.clientAuth.existingConfigMap=apiserver-ca"],
            "/webhook/clientAuth/existingConfigMap",
        ),
        (
            &["--set", "webhook.clientAuth.existingConfigMap.key=a/b"],
            "/webhook/clientAuth/existingConfigMap/key",
        ),
        (
            &["--set", "webhook.clientAuth.ca=x"],
            "additional properties 'ca'",
        ),
        (
            &["--set", "webhook.clientAuth.names={kube-apiserver}"],
            "webhook.clientAuth.names needs the CA",
        ),
        (
            &["--set", "networkPolicy.enabled=yes"],
            "/networkPolicy/enabled",
        ),
        (
            &["--set", "networkPolicy.apiServer.cidrs=10.0.0.0/24"],
            "/networkPolicy/apiServer/cidrs",
        ),
        (
            &["--set", "networkPolicy.apiServer.cidrs={10.0.0.1}"],
            "/networkPolicy/apiServer/cidrs/0",
        ),
        (
            &[
                "--set-json",
                r#"networkPolicy.apiServer.peers=[{"ipBlock":{"cidr":"10.0.0.0/24"}}]"#,
            ],
            "at '/networkPolicy/apiServer/peers/0': additional properties 'ipBlock'",
        ),
        (
            &["--set-json", "networkPolicy.apiServer.peers=[{}]"],
            "/networkPolicy/apiServer/peers/0",
        ),
        (
            &[
                "--set-json",
                r#"networkPolicy.apiServer.peers=[{"podSelector":{"app":"x"}}]"#,
            ],
            "/networkPolicy/apiServer/peers/0/podSelector",
        ),
        (
            &["--set", "networkPolicy.nodeCidrs={node-1}"],
            "/networkPolicy/nodeCidrs/0",
        ),
        (
            &["--set", "networkPolicy.extraFrom=prometheus"],
            "/networkPolicy/extraFrom",
        ),
        (
            &["--set-json", r#"networkPolicy.extraFrom=[{"ipBlock":{}}]"#],
            "/networkPolicy/extraFrom/0/ipBlock",
        ),
        (
            &["--set-json", "networkPolicy.from=[]"],
            "additional properties 'from'",
        ),
        (
            &[
                "--set-file",
                &client_ca_file,
                "--set",
                "webhook.clientAuth.existingConfigMap.name=mine",
            ],
            "two sources of the client CA",
        ),
        (
            &[
                "--set-file",
                &client_ca_file,
                "--set",
                "webhook.url=https://countersign.example.com",
            ],
            "webhook.clientAuth configures the countersign this chart runs",
        ),
    ];
    for (values, expected) in cases {
        match template_text(NAMESPACE, values) {
            Ok(_) => panic!("helm template {values:?} rendered"),
            Err(error) => assert!(
                error.contains(expected),
                "helm template {values:?}: expected {expected:?} in:\n{error}"
            ),
        }
    }
}

/// Every value in values.yaml carries a `# --` comment (itself or an enclosing value), is
/// a row of the README's table, and is described by values.schema.json.
#[test]
fn every_value_is_documented() {
    let values_text =
        std::fs::read_to_string(chart_dir().join("values.yaml")).expect("values.yaml");
    let documented = documented_keys(&values_text);
    let values: Value = yaml_serde::from_str(&values_text).expect("values.yaml parses");
    let mut leaves = Vec::new();
    leaf_paths(&values, "", &mut leaves);
    for leaf in &leaves {
        let mut prefix = leaf.as_str();
        let found = loop {
            if documented.contains(prefix) {
                break true;
            }
            match prefix.rfind('.') {
                Some(dot) => prefix = &prefix[..dot],
                None => break false,
            }
        };
        assert!(found, "values.yaml: {leaf} has no `# --` comment");
    }

    let readme = std::fs::read_to_string(chart_dir().join("README.md")).expect("README.md");
    let in_readme: BTreeSet<String> = readme
        .lines()
        .filter_map(|line| line.strip_prefix("| `"))
        .filter_map(|rest| rest.split_once("` |"))
        .map(|(key, _)| key.to_string())
        .collect();
    assert_eq!(
        documented, in_readme,
        "the keys documented in values.yaml and the README's table"
    );

    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(chart_dir().join("values.schema.json")).expect("schema"),
    )
    .expect("values.schema.json parses");
    for key in &documented {
        let mut node = &schema;
        for part in key.split('.') {
            node = &node["properties"][part];
        }
        assert!(
            node.is_object(),
            "values.schema.json does not describe {key}"
        );
    }
}

/// The keys (dotted paths) of values.yaml that a `# --` comment describes.
fn documented_keys(text: &str) -> BTreeSet<String> {
    let mut documented = BTreeSet::new();
    let mut path: Vec<(usize, String)> = Vec::new();
    let mut pending = false;
    for line in text.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("# --") {
            pending = true;
            continue;
        }
        if trimmed.starts_with('#') {
            continue;
        }
        if trimmed.is_empty() {
            pending = false;
            continue;
        }
        let indent = line.len() - trimmed.len();
        let Some((key, _)) = trimmed.split_once(':') else {
            continue;
        };
        if key.starts_with('-') || key.contains(' ') {
            continue;
        }
        path.retain(|(level, _)| *level < indent);
        path.push((indent, key.to_string()));
        if pending {
            let dotted: Vec<&str> = path.iter().map(|(_, k)| k.as_str()).collect();
            documented.insert(dotted.join("."));
            pending = false;
        }
    }
    documented
}

fn leaf_paths(value: &Value, prefix: &str, out: &mut Vec<String>) {
    match value.as_object() {
        Some(map) if !map.is_empty() => {
            for (key, child) in map {
                let path = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                leaf_paths(child, &path, out);
            }
        }
        _ => out.push(prefix.to_string()),
    }
}

#[test]
fn the_app_version_is_countersigns() {
    let text = std::fs::read_to_string(chart_dir().join("Chart.yaml")).expect("Chart.yaml");
    let chart: Value = yaml_serde::from_str(&text).expect("Chart.yaml parses");
    assert_eq!(chart["apiVersion"], "v2");
    assert_eq!(chart["appVersion"], env!("CARGO_PKG_VERSION"));
}

/// The API server accepts every object the chart renders (server-side dry run, so its
/// validation, defaulting and admission run, and nothing is stored): with an existing
/// Secret, client authentication, restore, ServiceMonitor off and the NetworkPolicy with
/// every kind of peer, the CRDs included; with the defaults and the control plane's
/// addresses; with client authentication alone (a NetworkPolicy admitting anyone on 8443);
/// and with cert-manager, leaving out cert-manager's own kinds (the test cluster has no
/// cert-manager). The namespace warns on the `restricted` Pod Security Standard, and the
/// Deployment raises no warning.
#[tokio::test(flavor = "multi_thread")]
async fn the_api_server_accepts_the_rendered_chart() {
    let cluster = TestCluster::get();
    let namespace = TestNamespace::create("chart", None)
        .await
        .expect("a namespace");
    let label = cluster
        .kubectl_output(
            User::Admin,
            &[
                "label",
                "namespace",
                namespace.name(),
                "pod-security.kubernetes.io/warn=restricted",
                "pod-security.kubernetes.io/warn-version=latest",
            ],
            None,
        )
        .expect("kubectl label");
    assert!(label.status.success(), "{label:?}");

    let ca = CaFile::new();
    let mut existing = existing_secret_values(&ca);
    existing.extend(client_auth_values(&ca));
    existing.extend(
        [
            "--set",
            "webhook.restore=true",
            "--set",
            "networkPolicy.apiServer.cidrs={10.0.0.0/24,fd00:10::/64}",
            "--set-json",
            KONNECTIVITY_PEERS,
            "--set",
            "networkPolicy.nodeCidrs={192.168.0.0/16}",
            "--set-json",
            PROMETHEUS_PEERS,
            "--include-crds",
        ]
        .map(String::from),
    );
    let cert_manager_kinds = ["Issuer", "Certificate"];
    for (values, skip) in [
        (as_strs(&existing), &[][..]),
        (CONTROL_PLANE.to_vec(), &[][..]),
        (as_strs(&client_auth_values(&ca)), &[][..]),
        (
            with_control_plane(&["--set", "certManager.enabled=true"]),
            &cert_manager_kinds[..],
        ),
    ] {
        let rendered = Rendered::of(namespace.name(), &values);
        let manifest: String = rendered
            .documents
            .iter()
            .filter(|d| !skip.contains(&d["kind"].as_str().unwrap_or_default()))
            .map(|d| format!("---\n{}", yaml_serde::to_string(d).expect("YAML")))
            .collect();
        let output = cluster
            .kubectl_output(
                User::Admin,
                &["apply", "--dry-run=server", "-f", "-"],
                Some(manifest.as_bytes()),
            )
            .expect("kubectl apply");
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success(),
            "kubectl apply --dry-run=server {values:?} failed:\n{stdout}\n{stderr}"
        );
        let applied = stdout
            .lines()
            .filter(|l| l.ends_with("(server dry run)"))
            .count();
        let expected = rendered
            .documents
            .iter()
            .filter(|d| !skip.contains(&d["kind"].as_str().unwrap_or_default()))
            .count();
        assert_eq!(applied, expected, "every object applied:\n{stdout}");
        assert!(
            !stderr.contains("would violate PodSecurity"),
            "the pods must meet the restricted Pod Security Standard:\n{stderr}"
        );
    }
}
