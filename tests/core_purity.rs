//! The house rules of docs/architecture.md: `core` does no I/O, no async and never reads
//! the clock; nothing in `src/` calls `unwrap()`/`expect()` outside tests, so bad input can
//! never panic; and the rooms import only what the document lets them.

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("list source directory") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The file's text before its `#[cfg(test)]` module.
fn non_test_code(path: &Path) -> String {
    let text = std::fs::read_to_string(path).expect("read source");
    match text.find("#[cfg(test)]") {
        Some(i) => text[..i].to_string(),
        None => text,
    }
}

#[test]
fn core_imports_no_io_crate_and_reads_no_clock() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    rust_files(&root.join("src/core"), &mut files);
    assert!(!files.is_empty());
    let forbidden = [
        "std::fs",
        "std::io",
        "std::net",
        "std::env",
        "std::process",
        "std::thread",
        "SystemTime",
        "Instant::now",
        "Timestamp::now",
        "Zoned::now",
        "tokio",
        "kube::Client",
        "kube::Api",
        "kube::runtime",
        "reqwest",
        "hyper",
        "async fn",
        ".await",
        "crate::cli",
        "crate::webhook",
        "crate::operator",
        "crate::notify",
    ];
    for file in files {
        let code = non_test_code(&file);
        for word in forbidden {
            assert!(!code.contains(word), "{} uses {word}", file.display());
        }
    }
}

#[test]
fn src_has_no_unwrap_or_expect_outside_tests() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    for file in files {
        let code = non_test_code(&file);
        for word in [".unwrap()", ".expect("] {
            assert!(!code.contains(word), "{} calls {word}", file.display());
        }
    }
}

/// docs/architecture.md's rooms: the webhook and the operator stand side by side and import
/// neither each other; every call on AuditEntries goes through `cluster::trail` (the CLI's
/// reads aside), so there is one writer and one labelling.
#[test]
fn the_rooms_keep_to_their_imports() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for (room, forbidden) in [
        ("src/webhook", "crate::operator"),
        ("src/operator", "crate::webhook"),
        ("src/cluster", "crate::webhook"),
        ("src/cluster", "crate::operator"),
        ("src/api", "crate::core"),
    ] {
        let mut files = Vec::new();
        rust_files(&root.join(room), &mut files);
        assert!(!files.is_empty(), "{room}");
        for file in files {
            let code = non_test_code(&file);
            assert!(
                !code.contains(forbidden),
                "{} uses {forbidden}",
                file.display()
            );
        }
    }
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    for file in files {
        let allowed = ["src/cluster/trail.rs", "src/cli/audit.rs"]
            .iter()
            .any(|allowed| file.ends_with(allowed));
        let code = non_test_code(&file);
        for api in ["Api<AuditEntry>", "Api::<AuditEntry>"] {
            assert!(
                allowed || !code.contains(api),
                "{} calls the AuditEntry API outside cluster::trail",
                file.display()
            );
        }
    }
}
