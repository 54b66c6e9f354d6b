//! The objects of a rendered manifest set (the output of `helm template` or `kustomize
//! build`, or a directory of manifests) for `check` and `request`: every document of a
//! file, or of every file of a directory, `List`s unpacked, each with where it came from.
//! Every file is read once; built-in workload kinds are decoded strictly as their
//! Kubernetes type, so a misspelt field is caught before anything is judged or sent.

use std::path::{Path, PathBuf};

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::Pod;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::CliError;
use super::input::{self, InputError};
use crate::core::change::group_kind;

/// One object and where it was found.
#[derive(Clone, Debug)]
pub struct Located {
    pub file: PathBuf,
    /// The field prefix of its messages: empty for the one document of a file, `[2]` for
    /// the third of several, `[2].items[0]` (or `items[0]`) inside a List.
    pub at: String,
    pub object: Value,
}

impl Located {
    /// The object is a file's only document (not a List): SPEC §10's single `--object`.
    pub fn is_whole_file(&self) -> bool {
        self.at.is_empty()
    }

    /// `field` of this object, as its messages name it.
    fn field(&self, field: &str) -> String {
        prefixed(&self.at, field)
    }
}

fn prefixed(at: &str, field: &str) -> String {
    if at.is_empty() {
        field.to_string()
    } else {
        format!("{at}.{field}")
    }
}

fn is_list(object: &Value) -> bool {
    object
        .get("kind")
        .and_then(Value::as_str)
        .is_some_and(|kind| kind.ends_with("List"))
        && object.get("items").is_some()
}

/// Every object under `path` (a file or a directory), in file and document order.
pub fn load(path: &Path) -> Result<Vec<Located>, CliError> {
    let mut objects = Vec::new();
    for file in input::expand(path)? {
        let text = input::read(&file)?;
        objects.extend(from_text(&file, &text)?);
    }
    Ok(objects)
}

/// Every object of one file's `text`: its documents, `List`s unpacked, each with its
/// `apiVersion`, `kind` and `metadata.name`, a built-in workload strictly its type.
pub fn from_text(file: &Path, text: &str) -> Result<Vec<Located>, CliError> {
    let documents = input::numbered_documents(file, text)?;
    let several = documents.len() > 1;
    let mut objects = Vec::new();
    for (place, (index, document)) in documents.into_iter().enumerate() {
        let at = if several {
            format!("[{place}]")
        } else {
            String::new()
        };
        if is_list(&document) {
            let items = document
                .get("items")
                .and_then(Value::as_array)
                .ok_or_else(|| {
                    InputError::new(file, Some(&prefixed(&at, "items")), "must be a list")
                })?;
            for (i, item) in items.iter().enumerate() {
                let located = Located {
                    file: file.to_path_buf(),
                    at: prefixed(&at, &format!("items[{i}]")),
                    object: item.clone(),
                };
                has_identity(&located)?;
                strict_workload(&located, text, None)?;
                objects.push(located);
            }
        } else {
            let located = Located {
                file: file.to_path_buf(),
                at,
                object: document,
            };
            has_identity(&located)?;
            strict_workload(&located, text, Some(index))?;
            objects.push(located);
        }
    }
    Ok(objects)
}

/// Every object names its `apiVersion`, `kind` and `metadata.name`.
fn has_identity(located: &Located) -> Result<(), InputError> {
    for (field, pointer) in [
        ("apiVersion", "/apiVersion"),
        ("kind", "/kind"),
        ("metadata.name", "/metadata/name"),
    ] {
        if located
            .object
            .pointer(pointer)
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            return Err(InputError::new(
                &located.file,
                Some(&located.field(field)),
                "missing (must be a non-empty string)",
            ));
        }
    }
    Ok(())
}

/// A built-in workload kind decoded strictly as its Kubernetes type, so a misspelt field
/// is caught. `document` is the object's place in `text` when it is a whole document
/// (then an error carries its line), `None` for an item of a List.
fn strict_workload(
    located: &Located,
    text: &str,
    document: Option<usize>,
) -> Result<(), InputError> {
    fn as_type<T: DeserializeOwned>(
        located: &Located,
        text: &str,
        document: Option<usize>,
    ) -> Result<(), InputError> {
        let (file, object, at) = (&located.file, &located.object, located.at.as_str());
        match document {
            Some(index) => input::decode_document::<T>(file, text, index, object, at).map(|_| ()),
            None => input::decode_value::<T>(file, object, at).map(|_| ()),
        }
    }
    let (group, kind) = group_kind(&located.object);
    let version = located
        .object
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or_default();
    match (group.as_str(), kind.as_str(), version) {
        ("apps", "Deployment", "apps/v1") => as_type::<Deployment>(located, text, document),
        ("apps", "StatefulSet", "apps/v1") => as_type::<StatefulSet>(located, text, document),
        ("apps", "DaemonSet", "apps/v1") => as_type::<DaemonSet>(located, text, document),
        ("apps", "ReplicaSet", "apps/v1") => as_type::<ReplicaSet>(located, text, document),
        ("batch", "Job", "batch/v1") => as_type::<Job>(located, text, document),
        ("batch", "CronJob", "batch/v1") => as_type::<CronJob>(located, text, document),
        ("", "Pod", "v1") => as_type::<Pod>(located, text, document),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write");
        path
    }

    #[test]
    fn documents_and_lists_of_files_and_directories_are_each_an_object() {
        let dir = std::env::temp_dir().join(format!("countersign-set-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let one = write(
            &dir,
            "a.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n",
        );
        let single = load(&one).expect("read");
        assert!(single.len() == 1 && single[0].is_whole_file());
        let many = write(
            &dir,
            "b.yaml",
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\n---\napiVersion: v1\nkind: List\nitems:\n- apiVersion: batch/v1\n  kind: Job\n  metadata: {name: j}\n",
        );
        assert!(
            !load(&many)
                .expect("read")
                .iter()
                .any(Located::is_whole_file)
        );
        let objects = load(&dir).expect("load");
        let ats: Vec<&str> = objects.iter().map(|o| o.at.as_str()).collect();
        assert_eq!(ats, ["", "[0]", "[1].items[0]"]);
        write(
            &dir,
            "c.yaml",
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {}\n",
        );
        let error = load(&dir).expect_err("a nameless object").to_string();
        assert!(
            error.ends_with("c.yaml: metadata.name: missing (must be a non-empty string)"),
            "{error}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn every_built_in_workload_kind_is_decoded_strictly_wherever_it_stands() {
        let path = Path::new("set.yaml");
        // (case, text, the error's end; None: loads)
        let cases: [(&str, &str, Option<&str>); 8] = [
            (
                "a Pod, alone in its file",
                "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containerz: []}\n",
                Some("set.yaml: spec.containerz: unknown field"),
            ),
            (
                "a ReplicaSet among several documents",
                "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n---\napiVersion: apps/v1\nkind: ReplicaSet\nmetadata: {name: r}\nspec: {replicaz: 1}\n",
                Some("set.yaml: [1].spec.replicaz: unknown field"),
            ),
            (
                "a Deployment inside a List",
                "apiVersion: v1\nkind: List\nitems:\n- apiVersion: apps/v1\n  kind: Deployment\n  metadata: {name: d}\n  spec: {replicas: many}\n",
                Some("set.yaml: items[0].spec.replicas: "),
            ),
            (
                "a wrong type carries its line, past an empty document",
                "---\n---\napiVersion: batch/v1\nkind: Job\nmetadata: {name: j}\nspec:\n  parallelism: lots\n",
                Some("line 7"),
            ),
            (
                "a CronJob",
                "apiVersion: batch/v1\nkind: CronJob\nmetadata: {name: c}\nspec: {schedulee: x}\n",
                Some("set.yaml: spec.schedulee: unknown field"),
            ),
            (
                "a DaemonSet and a StatefulSet, well formed",
                "apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {name: d}\n---\napiVersion: apps/v1\nkind: StatefulSet\nmetadata: {name: s}\n",
                None,
            ),
            (
                "a kind of no built-in type is left as it is",
                "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w}\nspec: {anything: 1}\n",
                None,
            ),
            (
                "an older version is not decoded as today's type",
                "apiVersion: apps/v1beta2\nkind: Deployment\nmetadata: {name: d}\nspec: {old: 1}\n",
                None,
            ),
        ];
        for (case, text, expected) in cases {
            let result = from_text(path, text).map(|_| ()).map_err(|e| e.to_string());
            match expected {
                None => assert!(result.is_ok(), "{case}: {result:?}"),
                Some(needle) => {
                    let error = result.expect_err(case);
                    assert!(error.contains(needle), "{case}: {error}");
                }
            }
        }
    }
}
