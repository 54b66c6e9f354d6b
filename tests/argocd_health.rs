//! The Argo CD health checks for DeploymentApproval and ChangeSet
//! (`gitops/argocd/resource_customizations/countersign.dev/<Kind>/health.lua`), each run
//! under Lua 5.1 the way Argo CD runs a check from argocd-cm, on every case of its
//! `health_test.yaml`; and the argocd-cm snippet in docs/gitops.md, which must carry
//! exactly those scripts.

use std::path::{Path, PathBuf};

use countersign::api::{ChangeSet, DeploymentApproval};
use mlua::{Lua, LuaOptions, StdLib, Value as LuaValue};
use serde::Deserialize;
use serde_json::Value;

const CHECKS_DIR: &str = "gitops/argocd/resource_customizations/countersign.dev";
/// The kinds with a health check, in the snippet's order.
const KINDS: [&str; 2] = ["DeploymentApproval", "ChangeSet"];
const BEGIN: &str = "<!-- BEGIN GENERATED: argocd-cm health check (tests/argocd_health.rs) -->\n";
const END: &str = "<!-- END GENERATED -->";

/// The health statuses Argo CD accepts from a script; any other becomes `Unknown` with
/// "Lua returned an invalid health status".
const HEALTH_STATUSES: [&str; 6] = [
    "Healthy",
    "Progressing",
    "Degraded",
    "Suspended",
    "Missing",
    "Unknown",
];

/// Argo CD's `health_test.yaml`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HealthTests {
    tests: Vec<HealthTest>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct HealthTest {
    health_status: Health,
    input_path: String,
}

#[derive(Deserialize, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
struct Health {
    status: String,
    message: String,
}

fn check_dir(kind: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(CHECKS_DIR)
        .join(kind)
}

/// The argocd-cm key of `kind`'s check.
fn cm_key(kind: &str) -> String {
    format!("resource.customizations.health.countersign.dev_{kind}")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

fn script(kind: &str) -> String {
    read(&check_dir(kind).join("health.lua"))
}

/// A JSON value as Argo CD hands it to a script (`decodeValue` in argo-cd's util/lua):
/// numbers are doubles, `null` is nil, and a nil list item is dropped (gopher-lua's
/// `LTable.Append` ignores nil), so lists stay sequences.
fn to_lua(lua: &Lua, value: &Value) -> mlua::Result<LuaValue> {
    Ok(match value {
        Value::Null => LuaValue::Nil,
        Value::Bool(b) => LuaValue::Boolean(*b),
        Value::Number(n) => LuaValue::Number(n.as_f64().unwrap_or(f64::NAN)),
        Value::String(s) => LuaValue::String(lua.create_string(s)?),
        Value::Array(items) => {
            let table = lua.create_table()?;
            for item in items {
                let item = to_lua(lua, item)?;
                if !item.is_nil() {
                    table.raw_push(item)?;
                }
            }
            LuaValue::Table(table)
        }
        Value::Object(fields) => {
            let table = lua.create_table()?;
            for (key, item) in fields {
                table.raw_set(key.as_str(), to_lua(lua, item)?)?;
            }
            LuaValue::Table(table)
        }
    })
}

/// Run `script` on `object` as Argo CD does: a fresh state with only the base, package and
/// table libraries (Argo CD adds a safe `os`, which the check does not use; it opens
/// `string` and the others only with `useOpenLibs`), the object in the global `obj`, and
/// the chunk's return value read as `{status, message}`.
fn run_check(script: &str, object: &Value) -> Result<Health, String> {
    let lua = Lua::new_with(StdLib::TABLE | StdLib::PACKAGE, LuaOptions::default())
        .map_err(|e| format!("a Lua state: {e}"))?;
    let globals = lua.globals();
    for absent in ["string", "math", "io", "os"] {
        let library: LuaValue = globals.get(absent).map_err(|e| e.to_string())?;
        assert!(
            library.is_nil(),
            "the test state must not offer `{absent}`: Argo CD does not"
        );
    }
    let obj = to_lua(&lua, object).map_err(|e| format!("obj: {e}"))?;
    globals.set("obj", obj).map_err(|e| e.to_string())?;
    let returned: LuaValue = lua
        .load(script)
        .set_name("health.lua")
        .eval()
        .map_err(|e| format!("the script failed: {e}"))?;
    let LuaValue::Table(hs) = returned else {
        return Err(format!(
            "the script returned {}, not a table",
            returned.type_name()
        ));
    };
    let field = |name: &str| -> Result<String, String> {
        match hs.raw_get::<LuaValue>(name).map_err(|e| e.to_string())? {
            LuaValue::String(s) => Ok(s.to_str().map_err(|e| e.to_string())?.to_string()),
            other => Err(format!("hs.{name} is {}, not a string", other.type_name())),
        }
    };
    let health = Health {
        status: field("status")?,
        message: field("message")?,
    };
    if !HEALTH_STATUSES.contains(&health.status.as_str()) {
        return Err(format!(
            "hs.status {:?} is not a status Argo CD accepts",
            health.status
        ));
    }
    Ok(health)
}

fn load_yaml(path: &Path) -> Value {
    yaml_serde::from_str(&read(path)).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn every_case_of_health_test_yaml_gets_its_status_and_message() {
    let mut failures = Vec::new();
    let mut cases = 0;
    for kind in KINDS {
        let script = script(kind);
        let dir = check_dir(kind);
        let tests: HealthTests = yaml_serde::from_str(&read(&dir.join("health_test.yaml")))
            .unwrap_or_else(|e| panic!("{kind}'s health_test.yaml in Argo CD's format: {e}"));
        assert!(
            !tests.tests.is_empty(),
            "{kind}'s health_test.yaml has no cases"
        );
        cases += tests.tests.len();
        for case in &tests.tests {
            let object = load_yaml(&dir.join(&case.input_path));
            match run_check(&script, &object) {
                Ok(health) if health == case.health_status => {}
                Ok(health) => failures.push(format!(
                    "{kind}/{}:\n    expected {:?}: {:?}\n    got      {:?}: {:?}",
                    case.input_path,
                    case.health_status.status,
                    case.health_status.message,
                    health.status,
                    health.message
                )),
                Err(error) => failures.push(format!("{kind}/{}: {error}", case.input_path)),
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {cases} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// The fields of `object` that `kind` does not have, or why it is not one.
fn unknown_fields(kind: &str, object: Value) -> Result<Vec<String>, String> {
    let mut unknown = Vec::new();
    // kube's derived types keep no apiVersion or kind (their Resource impl supplies them),
    // so those come out as ignored.
    let mut note = |path: serde_ignored::Path| {
        let path = path.to_string();
        if path != "apiVersion" && path != "kind" {
            unknown.push(path);
        }
    };
    let decoded = match kind {
        "DeploymentApproval" => {
            serde_ignored::deserialize::<_, _, DeploymentApproval>(object, &mut note).map(drop)
        }
        "ChangeSet" => serde_ignored::deserialize::<_, _, ChangeSet>(object, &mut note).map(drop),
        other => panic!("no type for {other}"),
    };
    decoded.map_err(|e| e.to_string())?;
    Ok(unknown)
}

/// Every file in testdata/ is a case, and every case but the hostile ones is an object
/// countersign itself could have written (no unknown fields).
#[test]
fn the_testdata_are_the_cases_and_real_objects() {
    for kind in KINDS {
        let dir = check_dir(kind);
        let tests: HealthTests =
            yaml_serde::from_str(&read(&dir.join("health_test.yaml"))).expect("health_test.yaml");
        let mut listed: Vec<&str> = tests.tests.iter().map(|t| t.input_path.as_str()).collect();
        listed.sort_unstable();
        let mut files: Vec<String> = std::fs::read_dir(dir.join("testdata"))
            .expect("testdata/")
            .map(|entry| {
                format!(
                    "testdata/{}",
                    entry.expect("entry").file_name().to_string_lossy()
                )
            })
            .collect();
        files.sort_unstable();
        assert_eq!(
            listed, files,
            "{kind}: health_test.yaml and testdata/ name different files"
        );
        for file in files.iter().filter(|f| !f.starts_with("testdata/hostile_")) {
            let object = load_yaml(&dir.join(file));
            assert_eq!(object["kind"], kind, "{kind}/{file}: of another kind");
            match unknown_fields(kind, object) {
                Ok(unknown) => assert!(
                    unknown.is_empty(),
                    "{kind}/{file}: fields a {kind} does not have: {unknown:?}"
                ),
                Err(error) => panic!("{kind}/{file} is not a {kind}: {error}"),
            }
        }
    }
}

/// The argocd-cm snippet: `data` with each script under its health customization's key.
fn snippet(scripts: &[(String, String)]) -> String {
    let mut data = String::new();
    for (key, script) in scripts {
        data.push_str(&format!("  {key}: |\n"));
        for line in script.lines() {
            if line.is_empty() {
                data.push('\n');
            } else {
                data.push_str(&format!("    {line}\n"));
            }
        }
    }
    format!("```yaml\ndata:\n{data}```\n")
}

#[test]
fn the_argocd_cm_snippet_in_the_docs_is_the_scripts() {
    let scripts: Vec<(String, String)> = KINDS
        .iter()
        .map(|kind| (cm_key(kind), script(kind)))
        .collect();
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/gitops.md");
    let doc = read(&path);
    let start = doc.find(BEGIN).expect("the BEGIN marker in docs/gitops.md") + BEGIN.len();
    let end = doc[start..].find(END).expect("the END marker") + start;
    let expected = snippet(&scripts);
    // `UPDATE_GITOPS_DOC=1 cargo test --test argocd_health` rewrites the snippet.
    if std::env::var_os("UPDATE_GITOPS_DOC").is_some() && doc[start..end] != expected {
        let updated = format!("{}{expected}{}", &doc[..start], &doc[end..]);
        std::fs::write(&path, updated).expect("write docs/gitops.md");
        return;
    }
    assert!(
        doc[start..end] == expected,
        "docs/gitops.md's argocd-cm snippet differs from the health.lua files; rewrite it \
         with UPDATE_GITOPS_DOC=1 cargo test --test argocd_health"
    );
    // And read as YAML, as Argo CD reads argocd-cm, each key holds its script byte for byte.
    let block = expected
        .strip_prefix("```yaml\n")
        .and_then(|b| b.strip_suffix("```\n"))
        .expect("a yaml block");
    let parsed: Value = yaml_serde::from_str(block).expect("the snippet is YAML");
    for (key, script) in &scripts {
        assert_eq!(
            parsed["data"][key].as_str(),
            Some(script.as_str()),
            "the snippet's YAML does not hold the script of {key}"
        );
    }
}

/// The test state is as bare as Argo CD's: a check that reaches for `string` fails here,
/// as it would fail in Argo CD.
#[test]
fn a_check_using_the_string_library_fails_as_in_argo_cd() {
    let error = run_check(
        "local hs = {}\nhs.status = string.upper(\"healthy\")\nhs.message = \"\"\nreturn hs\n",
        &serde_json::json!({}),
    )
    .expect_err("string is not there");
    assert!(error.contains("the script failed"), "{error}");
}
