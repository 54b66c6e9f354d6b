//! Preventative policy checks on a changed object's containers (SPEC §3 `checks`).
//! Each violation is one precise message; any violation denies the change.

use serde_json::{Map, Value};

use crate::api::PolicyChecks;
use crate::core::change::{containers, pod_spec};
use crate::core::policy::secrets::{detect_credential, scan_arguments};

/// Every violation of `checks` by `object`, as messages naming the container and field.
pub fn violations(checks: &PolicyChecks, object: &Value) -> Vec<String> {
    let Some(spec) = pod_spec(object) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (list, container) in containers(spec) {
        let name = container.get("name").and_then(Value::as_str).unwrap_or("?");
        let at = format!("{list} {name}");
        let image = container.get("image").and_then(Value::as_str).unwrap_or("");
        if checks.secret_detection {
            secret_violations(&at, container, &mut out);
        }
        if !checks.allowed_registries.is_empty()
            && !checks
                .allowed_registries
                .iter()
                .any(|r| image_is_from(image, r))
        {
            out.push(format!(
                "{at}: image {image} is not from an allowed registry ({})",
                checks.allowed_registries.join(", ")
            ));
        }
        if checks.require_image_digest && !is_pinned_by_digest(image) {
            out.push(format!(
                "{at}: image {image} is not pinned by digest (@sha256:…)"
            ));
        }
        if checks.forbid_privileged {
            privilege_violations(&at, container, &mut out);
        }
        if checks.require_resources && list != "ephemeralContainers" {
            for (pointer, field) in [
                ("/resources/requests/cpu", "resources.requests.cpu"),
                ("/resources/requests/memory", "resources.requests.memory"),
                ("/resources/limits/memory", "resources.limits.memory"),
            ] {
                if Value::Object(container.clone()).pointer(pointer).is_none() {
                    out.push(format!("{at}: {field} is not set"));
                }
            }
        }
    }
    if checks.forbid_privileged {
        for field in ["hostPID", "hostIPC", "hostNetwork"] {
            if spec.get(field).and_then(Value::as_bool) == Some(true) {
                out.push(format!("pod: {field} is true"));
            }
        }
    }
    out
}

/// Ephemeral containers `object` adds or changes compared with `old` (a `kubectl debug`
/// session brings a new image into a running Pod), as messages.
pub fn ephemeral_violations(object: &Value, old: Option<&Value>) -> Vec<String> {
    let ephemeral = |object: Option<&Value>| -> Vec<Value> {
        object
            .and_then(pod_spec)
            .and_then(|spec| spec.get("ephemeralContainers"))
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    let before = ephemeral(old);
    ephemeral(Some(object))
        .iter()
        .filter(|container| !before.contains(container))
        .map(|container| {
            format!(
                "ephemeralContainers {}: ephemeral containers (kubectl debug) are forbidden here; image {}",
                container.get("name").and_then(Value::as_str).unwrap_or("?"),
                container.get("image").and_then(Value::as_str).unwrap_or("?"),
            )
        })
        .collect()
}

fn secret_violations(at: &str, container: &Map<String, Value>, out: &mut Vec<String>) {
    for env in container
        .get("env")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let (Some(var), Some(value)) = (
            env.get("name").and_then(Value::as_str),
            env.get("value").and_then(Value::as_str),
        ) else {
            continue;
        };
        if let Some(kind) = detect_credential(Some(var), value) {
            out.push(format!(
                "{at}: env {var} holds a credential ({kind}); use a Secret with valueFrom.secretKeyRef"
            ));
        }
    }
    for field in ["command", "args"] {
        let arguments: Vec<&str> = container
            .get(field)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        for finding in scan_arguments(field, &arguments) {
            out.push(format!(
                "{at}: {} holds a credential ({})",
                finding.location, finding.kind
            ));
        }
    }
}

fn privilege_violations(at: &str, container: &Map<String, Value>, out: &mut Vec<String>) {
    let Some(context) = container.get("securityContext") else {
        return;
    };
    if context.get("privileged").and_then(Value::as_bool) == Some(true) {
        out.push(format!("{at}: securityContext.privileged is true"));
    }
    if context
        .get("allowPrivilegeEscalation")
        .and_then(Value::as_bool)
        == Some(true)
    {
        out.push(format!(
            "{at}: securityContext.allowPrivilegeEscalation is true"
        ));
    }
    let added = context
        .pointer("/capabilities/add")
        .and_then(Value::as_array);
    for capability in added.into_iter().flatten().filter_map(Value::as_str) {
        if matches!(capability, "ALL" | "SYS_ADMIN" | "CAP_SYS_ADMIN") {
            out.push(format!(
                "{at}: securityContext.capabilities.add includes {capability}"
            ));
        }
    }
}

/// The fully qualified reference of an image: `nginx` → `docker.io/library/nginx`.
pub fn qualified_image(image: &str) -> String {
    let first = image.split('/').next().unwrap_or("");
    let has_registry =
        image.contains('/') && (first.contains('.') || first.contains(':') || first == "localhost");
    if has_registry {
        image.to_string()
    } else if image.contains('/') {
        format!("docker.io/{image}")
    } else {
        format!("docker.io/library/{image}")
    }
}

/// Is `image` from `registry` (a host, or a host/path prefix)?
pub fn image_is_from(image: &str, registry: &str) -> bool {
    let prefix = registry.trim_end_matches('/');
    let image = qualified_image(image);
    image.starts_with(&format!("{prefix}/"))
}

/// Is the image pinned by a full sha256 digest?
pub fn is_pinned_by_digest(image: &str) -> bool {
    image
        .rsplit_once("@sha256:")
        .is_some_and(|(_, hex)| hex.len() == 64 && hex.chars().all(|c| c.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deployment_with(container: Value) -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
               "spec": {"template": {"spec": {"containers": [container]}}}})
    }

    const DIGEST: &str = "@sha256:4c0fdaa8b6341bfdeca5f18f7837462c80cff90527ee35ef185571e1c327beac";

    #[test]
    fn checks_table() {
        let all = PolicyChecks {
            secret_detection: true,
            allowed_registries: vec!["registry.example.com".into(), "ghcr.io/acme/".into()],
            require_image_digest: true,
            forbid_privileged: true,
            require_resources: true,
            forbid_ephemeral_containers: true,
        };
        let resources =
            json!({"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "128Mi"}});
        let good_image = format!("registry.example.com/shop/web{DIGEST}");
        let cases: Vec<(&str, Value, Vec<String>)> = vec![
            ("compliant", json!({"name": "web", "image": good_image, "resources": resources}), vec![]),
            (
                "docker hub image, no digest",
                json!({"name": "web", "image": "nginx:1.27", "resources": resources}),
                vec![
                    "containers web: image nginx:1.27 is not from an allowed registry (registry.example.com, ghcr.io/acme/)".into(),
                    "containers web: image nginx:1.27 is not pinned by digest (@sha256:…)".into(),
                ],
            ),
            (
                "lookalike registry host",
                json!({"name": "web", "image": format!("registry.example.com.evil.io/web{DIGEST}"), "resources": resources}),
                vec![format!("containers web: image registry.example.com.evil.io/web{DIGEST} is not from an allowed registry (registry.example.com, ghcr.io/acme/)")],
            ),
            (
                "secret in env",
                json!({"name": "web", "image": good_image, "resources": resources,
                       "env": [{"name": "AWS_ACCESS_KEY_ID", "value": "AKIAIOSFODNN7EXAMPLE"},
                               {"name": "DB_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db", "key": "pw"}}}]}),
                vec!["containers web: env AWS_ACCESS_KEY_ID holds a credential (AWS access key ID); use a Secret with valueFrom.secretKeyRef".into()],
            ),
            (
                "privileged",
                json!({"name": "web", "image": good_image, "resources": resources,
                       "securityContext": {"privileged": true, "capabilities": {"add": ["NET_ADMIN", "SYS_ADMIN"]}}}),
                vec![
                    "containers web: securityContext.privileged is true".into(),
                    "containers web: securityContext.capabilities.add includes SYS_ADMIN".into(),
                ],
            ),
            (
                "no resources",
                json!({"name": "web", "image": good_image, "resources": {"requests": {"cpu": "1"}}}),
                vec![
                    "containers web: resources.requests.memory is not set".into(),
                    "containers web: resources.limits.memory is not set".into(),
                ],
            ),
        ];
        for (name, container, expected) in cases {
            assert_eq!(
                violations(&all, &deployment_with(container)),
                expected,
                "{name}"
            );
        }
    }

    #[test]
    fn disabled_checks_report_nothing() {
        let container = json!({"name": "web", "image": "nginx", "securityContext": {"privileged": true},
                               "env": [{"name": "T", "value": "AKIAIOSFODNN7EXAMPLE"}]});
        assert!(violations(&PolicyChecks::default(), &deployment_with(container)).is_empty());
    }

    #[test]
    fn image_qualification() {
        assert_eq!(qualified_image("nginx"), "docker.io/library/nginx");
        assert_eq!(
            qualified_image("bitnami/redis:7"),
            "docker.io/bitnami/redis:7"
        );
        assert_eq!(qualified_image("localhost:5000/x"), "localhost:5000/x");
        assert!(image_is_from("nginx:1", "docker.io"));
        assert!(!image_is_from("ghcr.io/other/x", "ghcr.io/acme"));
        assert!(is_pinned_by_digest(&format!("nginx{DIGEST}")));
        assert!(!is_pinned_by_digest("nginx@sha256:abc"));
    }
}
