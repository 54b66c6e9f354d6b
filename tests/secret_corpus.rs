//! The labelled secret-detection corpus (`tests/fixtures/secrets/corpus.tsv`) through
//! `checks::violations`: each row becomes one container of a Deployment, with the value in
//! an env variable or as the container's args or command. Every positive must be caught,
//! no negative may be, and no message may repeat the credential.

use countersign::api::PolicyChecks;
use countersign::core::policy::checks::violations;
use serde_json::{Value, json};

struct Row {
    line: usize,
    positive: bool,
    format: String,
    container: Value,
    /// The values a finding must never repeat.
    values: Vec<String>,
}

fn corpus() -> Vec<Row> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/secrets/corpus.tsv"
    );
    let text = std::fs::read_to_string(path).expect("read the corpus");
    let mut rows = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let columns: Vec<&str> = line.split('\t').collect();
        let [label, format, place, name, value] = columns[..] else {
            panic!("line {}: expected 5 tab-separated columns", i + 1);
        };
        let value: Value = serde_json::from_str(value)
            .unwrap_or_else(|e| panic!("line {}: value is not JSON: {e}", i + 1));
        let image = "registry.example.com/shop/web:1.0";
        let (container, values) = match place {
            "env" => {
                let text = value.as_str().expect("an env value is a JSON string");
                (
                    json!({"name": "app", "image": image, "env": [{"name": name, "value": text}]}),
                    vec![text.to_string()],
                )
            }
            "args" | "command" => {
                let elements: Vec<String> = value
                    .as_array()
                    .expect("args and command are a JSON array")
                    .iter()
                    .map(|e| e.as_str().expect("string elements").to_string())
                    .collect();
                (
                    json!({"name": "app", "image": image, place: elements}),
                    elements,
                )
            }
            other => panic!("line {}: unknown place {other}", i + 1),
        };
        rows.push(Row {
            line: i + 1,
            positive: match label {
                "positive" => true,
                "negative" => false,
                other => panic!("line {}: unknown label {other}", i + 1),
            },
            format: format.to_string(),
            container,
            values,
        });
    }
    rows
}

#[test]
fn secret_corpus() {
    let checks = PolicyChecks {
        secret_detection: true,
        ..PolicyChecks::default()
    };
    let rows = corpus();
    let (mut caught, mut positives, mut false_positives, mut negatives) = (0, 0, 0, 0);
    let mut formats = std::collections::BTreeSet::new();
    let mut problems = Vec::new();
    for row in &rows {
        let deployment = json!({
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
            "spec": {"template": {"spec": {"containers": [row.container]}}}
        });
        let found = violations(&checks, &deployment);
        if row.positive {
            positives += 1;
            formats.insert(row.format.as_str());
            if found.is_empty() {
                problems.push(format!("line {}: missed {}", row.line, row.format));
            } else {
                caught += 1;
            }
        } else {
            negatives += 1;
            if !found.is_empty() {
                false_positives += 1;
                problems.push(format!(
                    "line {}: false positive ({}): {found:?}",
                    row.line, row.format
                ));
            }
        }
        for message in &found {
            for value in row.values.iter().filter(|v| v.len() >= 8) {
                assert!(
                    !message.contains(value.as_str()),
                    "line {}: a finding repeats the value",
                    row.line
                );
            }
        }
    }
    println!(
        "secret corpus: {caught} positives caught of {positives} ({} categories), \
         {false_positives} false positives of {negatives} negatives",
        formats.len()
    );
    assert!(positives >= 100 && formats.len() >= 20 && negatives >= 100);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
