//! `crds/` must hold exactly what `countersign crds` prints (SPEC §3: CI fails on drift).

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

const REGENERATE: &str = "regenerate with: cargo run -- crds --out-dir crds";

#[test]
fn crds_directory_matches_the_binary() {
    let output = Command::new(env!("CARGO_BIN_EXE_countersign"))
        .arg("crds")
        .output()
        .expect("run countersign crds");
    assert!(
        output.status.success(),
        "countersign crds failed: {output:?}"
    );
    let printed = String::from_utf8(output.stdout).expect("UTF-8 output");

    let documents = countersign::api::crd_documents().expect("render CRDs");
    let concatenated: String = documents.iter().map(|(_, text)| text.as_str()).collect();
    assert_eq!(
        printed, concatenated,
        "`countersign crds` prints the library's CRDs"
    );

    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("crds");
    for (name, expected) in &documents {
        let path = dir.join(name);
        let actual = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e}; {REGENERATE}", path.display()));
        assert!(
            actual == *expected,
            "{} differs from `countersign crds`; {REGENERATE}",
            path.display()
        );
    }
    let expected: BTreeSet<&str> = documents.iter().map(|(name, _)| name.as_str()).collect();
    let present: BTreeSet<String> = std::fs::read_dir(&dir)
        .expect("list crds/")
        .map(|entry| {
            entry
                .expect("entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    let stale: Vec<&String> = present
        .iter()
        .filter(|n| !expected.contains(n.as_str()))
        .collect();
    assert!(
        stale.is_empty(),
        "crds/ holds files the binary does not print: {stale:?}; delete them and {REGENERATE}"
    );
}
