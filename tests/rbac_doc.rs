//! docs/rbac.md lists exactly the rights `src/install/rbac.rs` grants, each with its reason.

use std::path::Path;

const BEGIN: &str = "<!-- BEGIN GENERATED: countersign::install::rbac::markdown_table -->\n";
const END: &str = "<!-- END GENERATED -->";

#[test]
fn the_rbac_doc_lists_exactly_what_is_granted() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/rbac.md");
    let doc = std::fs::read_to_string(&path).expect("read docs/rbac.md");
    let start = doc.find(BEGIN).expect("the BEGIN marker") + BEGIN.len();
    let end = doc[start..].find(END).expect("the END marker") + start;
    let expected = countersign::install::rbac::markdown_table();
    // `UPDATE_RBAC_DOC=1 cargo test --test rbac_doc` rewrites the table.
    if std::env::var_os("UPDATE_RBAC_DOC").is_some() && doc[start..end] != expected {
        let updated = format!("{}{expected}{}", &doc[..start], &doc[end..]);
        std::fs::write(&path, updated).expect("write docs/rbac.md");
        return;
    }
    assert!(
        doc[start..end] == expected,
        "docs/rbac.md differs from the roles in src/install/rbac.rs; put this between the markers:\n{expected}"
    );
}
