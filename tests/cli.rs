//! `countersign check` through the real binary: exit codes, bad input, the examples'
//! verdicts, and AWS Change Manager's approval semantics (SPEC §4, §10).

use std::process::Command;

use serde_json::Value;

/// Monday 12:00 in Berlin: no freeze.
const MONDAY: &str = "2025-06-02T10:00:00Z";
/// Saturday 12:00 in Berlin: the weekend freeze is in effect.
const SATURDAY: &str = "2025-06-07T10:00:00Z";

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn countersign(args: &[&str]) -> Run {
    let output = Command::new(env!("CARGO_BIN_EXE_countersign"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(args)
        .output()
        .expect("run countersign");
    Run {
        code: output.status.code().expect("exit code"),
        stdout: String::from_utf8(output.stdout).expect("UTF-8 stdout"),
        stderr: String::from_utf8(output.stderr).expect("UTF-8 stderr"),
    }
}

/// `check` on the examples' shop/web release, plus `extra` arguments.
fn example(object: &str, now: &str, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = [
        "check",
        "--policy",
        "examples/policies",
        "--namespace",
        "examples/namespace-shop.yaml",
        "--old-object",
        "examples/deployment-v1.yaml",
        "--object",
        object,
        "--user",
        "dana",
        "--group",
        "developers",
        "--now",
        now,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

fn json(args: &[String]) -> (i32, Value) {
    let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
    args.extend(["-o", "json"]);
    let run = countersign(&args);
    let value = serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("{e}: stdout {:?} stderr {:?}", run.stdout, run.stderr));
    (run.code, value)
}

#[test]
fn exit_codes_0_1_2() {
    let approved = example(
        "examples/deployment-v2.yaml",
        MONDAY,
        &["--approval", "examples/approvals/web-approved.yaml"],
    );
    let args: Vec<&str> = approved.iter().map(String::as_str).collect();
    assert_eq!(countersign(&args).code, 0, "approved change is allowed");

    let pending = example("examples/deployment-v2.yaml", MONDAY, &[]);
    let args: Vec<&str> = pending.iter().map(String::as_str).collect();
    assert_eq!(countersign(&args).code, 1, "approval required");

    let missing = example("examples/no-such-file.yaml", MONDAY, &[]);
    let args: Vec<&str> = missing.iter().map(String::as_str).collect();
    let run = countersign(&args);
    assert_eq!(run.code, 2, "bad input");
    assert!(
        run.stdout.is_empty(),
        "no verdict on bad input: {}",
        run.stdout
    );
    // Unknown flags and missing required flags are bad input too.
    assert_eq!(countersign(&["check", "--object", "x.yaml"]).code, 2);
    assert_eq!(countersign(&["check", "--bogus"]).code, 2);
}

#[test]
fn bad_input_names_the_file_and_the_field() {
    let bad = "tests/fixtures/bad-input";
    let cases: Vec<(&str, Vec<String>, Vec<&str>)> = vec![
        (
            "unreadable file",
            example("examples/no-such-file.yaml", MONDAY, &[]),
            vec!["examples/no-such-file.yaml: cannot read"],
        ),
        (
            "YAML error",
            vec![
                "check".into(),
                "--policy".into(),
                format!("{bad}/policy-yaml-error.yaml"),
                "--object".into(),
                "examples/deployment-v2.yaml".into(),
            ],
            vec![
                "policy-yaml-error.yaml: spec.match.regions: not valid YAML",
                "line 9",
            ],
        ),
        (
            "wrong kind",
            vec![
                "check".into(),
                "--policy".into(),
                format!("{bad}/policy-wrong-kind.yaml"),
                "--object".into(),
                "examples/deployment-v2.yaml".into(),
            ],
            vec![
                "policy-wrong-kind.yaml: kind: expected ApprovalPolicy",
                "found Deployment",
            ],
        ),
        (
            "unknown field in a policy",
            vec![
                "check".into(),
                "--policy".into(),
                format!("{bad}/policy-unknown-field.yaml"),
                "--object".into(),
                "examples/deployment-v2.yaml".into(),
            ],
            vec!["policy-unknown-field.yaml: spec.approval.levels[0].minApproval: unknown field"],
        ),
        (
            "unknown field in the object",
            example(&format!("{bad}/deployment-unknown-field.yaml"), MONDAY, &[]),
            vec![
                "deployment-unknown-field.yaml: spec.template.spec.containers[0].imagePullPolicyy: unknown field",
            ],
        ),
        (
            // Every built-in workload kind, alone in its file too (a ReplicaSet or a Pod
            // as much as a Deployment).
            "unknown field in a single Pod",
            vec![
                "check".into(),
                "--policy".into(),
                "examples/policies".into(),
                "--namespace".into(),
                "examples/namespace-shop.yaml".into(),
                "--object".into(),
                format!("{bad}/pod-unknown-field.yaml"),
            ],
            vec!["pod-unknown-field.yaml: spec.restartPolicyy: unknown field"],
        ),
        (
            "bad time in a file",
            example(
                "examples/deployment-v2.yaml",
                MONDAY,
                &["--approval", &format!("{bad}/approval-bad-time.yaml")],
            ),
            vec!["approval-bad-time.yaml: spec.reviews[0].time:", "line 23"],
        ),
        (
            "approval whose chain snapshot never expires",
            example(
                "examples/deployment-v2.yaml",
                MONDAY,
                &[
                    "--approval",
                    &format!("{bad}/approval-ttl-never-expires.yaml"),
                ],
            ),
            vec![
                "approval-ttl-never-expires.yaml: spec.policy.chain.requestTTL: approval web-93cfa25d is unusable: \"0s\" must be a positive duration",
            ],
        ),
        (
            "bad time flag",
            example("examples/deployment-v2.yaml", "next tuesday", &[]),
            vec!["--now: \"next tuesday\" is not an RFC 3339 time"],
        ),
        (
            "bad time zone",
            vec![
                "check".into(),
                "--policy".into(),
                format!("{bad}/policy-bad-timezone.yaml"),
                "--object".into(),
                "examples/deployment-v2.yaml".into(),
            ],
            vec![
                "policy-bad-timezone.yaml: spec.windows[0].timeZone:",
                "unknown IANA time zone \"Europe/Atlantis\"",
            ],
        ),
        (
            "approval file where a policy belongs",
            vec![
                "check".into(),
                "--policy".into(),
                "examples/approvals/web-pending.yaml".into(),
                "--object".into(),
                "examples/deployment-v2.yaml".into(),
            ],
            vec![
                "web-pending.yaml: kind: expected ApprovalPolicy",
                "found DeploymentApproval",
            ],
        ),
        (
            "old object of another name",
            vec![
                "check".into(),
                "--policy".into(),
                "examples/policies".into(),
                "--old-object".into(),
                "tests/fixtures/change-manager/deployment-old.yaml".into(),
                "--object".into(),
                "examples/deployment-v2.yaml".into(),
            ],
            vec![
                "deployment-old.yaml: metadata.name: the old object's metadata.name is \"api\" but the new object's is \"web\"",
            ],
        ),
    ];
    for (name, args, expected) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let run = countersign(&args);
        assert_eq!(run.code, 2, "{name}: {}", run.stderr);
        assert!(run.stdout.is_empty(), "{name}: {}", run.stdout);
        let matched = expected.iter().all(|e| run.stderr.contains(e));
        assert!(matched, "{name}: {:?} lacks {expected:?}", run.stderr);
    }
}

/// `check --policy POLICY --object examples/deployment-v2.yaml`, plus `extra` arguments.
fn check_policy(policy: &str, extra: &[&str]) -> Run {
    let mut args = vec![
        "check",
        "--policy",
        policy,
        "--object",
        "examples/deployment-v2.yaml",
        "--now",
        MONDAY,
    ];
    args.extend(extra);
    countersign(&args)
}

#[test]
fn policies_that_would_silently_misbehave_are_refused() {
    let bad = "tests/fixtures/bad-input";
    let cases: Vec<(&str, String, Vec<&str>)> = vec![
        (
            "absolute window with a UTC offset",
            format!("{bad}/policy-window-offset.yaml"),
            vec![
                "policy-window-offset.yaml: spec.windows[0].absolute.start: policy year-end refused:",
                "\"2025-12-24T00:00:00+09:00\" has a UTC offset",
                "set timeZone instead",
            ],
        ),
        (
            "a policy file with no policy",
            format!("{bad}/policy-empty.yaml"),
            vec!["policy-empty.yaml: holds no ApprovalPolicy"],
        ),
        (
            "a directory with no policy",
            format!("{bad}/no-policies"),
            vec!["bad-input/no-policies: holds no ApprovalPolicy in any of its files"],
        ),
        (
            "workload kind without its group",
            format!("{bad}/policy-kind-without-group.yaml"),
            vec![
                "policy-kind-without-group.yaml: spec.match.kinds[0]: policy deployments refused: kind Deployment is in group \"apps\"; set group: apps",
            ],
        ),
    ];
    for (name, policy, expected) in cases {
        let run = check_policy(&policy, &[]);
        assert_eq!(run.code, 2, "{name}: {}", run.stderr);
        assert!(run.stdout.is_empty(), "{name}: {}", run.stdout);
        let matched = expected.iter().all(|e| run.stderr.contains(e));
        assert!(matched, "{name}: {:?} lacks {expected:?}", run.stderr);
    }
}

#[test]
fn a_namespace_selector_needs_the_namespace_labels() {
    let release = |extra: &[&str]| {
        let mut args = vec![
            "check",
            "--policy",
            "examples/policies",
            "--old-object",
            "examples/deployment-v1.yaml",
            "--object",
            "examples/deployment-v2.yaml",
            "--user",
            "dana",
            "--now",
            MONDAY,
        ];
        args.extend(extra);
        countersign(&args)
    };
    // Without the labels the selector would silently not match: refused.
    let run = release(&[]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains(
            "--namespace: policy production-eu selects namespaces by label (spec.match.namespaceSelector)"
        ) && run.stderr.contains("--namespace-labels"),
        "{}",
        run.stderr
    );
    // The labels given on the command line decide as the Namespace file does.
    let from_file = release(&["--namespace", "examples/namespace-shop.yaml", "-o", "json"]);
    let from_flag = release(&[
        "--namespace-labels",
        "env=production,topology.kubernetes.io/region=eu-west-1",
        "-o",
        "json",
    ]);
    assert_eq!(from_file.code, 1, "{}", from_file.stderr);
    assert_eq!(from_flag.code, from_file.code, "{}", from_flag.stderr);
    assert_eq!(from_flag.stdout, from_file.stdout);
    // Labels that match no selector: the policies do not apply.
    let elsewhere = release(&["--namespace-labels", "env=staging", "-o", "json"]);
    assert_eq!(elsewhere.code, 0, "{}", elsewhere.stderr);
    // Both at once, or a malformed label, are bad input naming the flag.
    let both = release(&[
        "--namespace",
        "examples/namespace-shop.yaml",
        "--namespace-labels",
        "env=production",
    ]);
    assert_eq!(both.code, 2);
    assert!(
        both.stderr.contains("--namespace-labels"),
        "{}",
        both.stderr
    );
    let malformed = release(&["--namespace-labels", "env production"]);
    assert_eq!(malformed.code, 2);
    assert!(
        malformed.stderr.contains("--namespace-labels")
            && malformed
                .stderr
                .contains("\"env production\" is not key=value"),
        "{}",
        malformed.stderr
    );
}

#[test]
fn deep_and_huge_files_are_refused_before_parsing() {
    let dir = std::env::temp_dir().join(format!("countersign-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let write = |name: &str, text: String| {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write temp file");
        path.to_string_lossy().into_owned()
    };
    let cases = [
        (
            // 200 KB of `[`: the YAML parser's time grows with the square of the depth.
            write("deep.yaml", "[".repeat(200 * 1024)),
            "deep.yaml: nesting deeper than 100 levels at line 1; not parsed",
        ),
        (
            write(
                "deep-policy.yaml",
                format!(
                    "apiVersion: countersign.dev/v1alpha1\nkind: ApprovalPolicy\nmetadata:\n  name: p\nspec:\n  ignoreFields: {}\n",
                    "{a: ".repeat(3 * 1024 * 1024 / 4 - 100)
                ),
            ),
            "deep-policy.yaml: nesting deeper than 100 levels at line 6; not parsed",
        ),
        (
            // Just over the API server's 3 MiB request limit.
            write("huge.yaml", "a: 1\n".repeat(3 * 1024 * 1024 / 5 + 1)),
            "huge.yaml: larger than 3145728 bytes (3 MiB",
        ),
    ];
    for (path, expected) in cases {
        let run = check_policy(&path, &[]);
        assert_eq!(run.code, 2, "{path}: {}", run.stderr);
        assert!(run.stderr.contains(expected), "{path}: {}", run.stderr);
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// The digest `check -o json` reports for `object` under the examples' policies.
fn digest_of(object: &str) -> String {
    let run = countersign(&[
        "check",
        "--policy",
        "examples/policies",
        "--namespace",
        "examples/namespace-shop.yaml",
        "--object",
        object,
        "--now",
        MONDAY,
        "-o",
        "json",
    ]);
    assert_ne!(run.code, 2, "{object}: {}", run.stderr);
    let report: Value = serde_json::from_str(&run.stdout).expect("JSON report");
    report["change"]["digest"]
        .as_str()
        .expect("a digest")
        .to_string()
}

#[test]
fn numbers_are_read_as_kubectl_sends_them() {
    let yaml = "tests/fixtures/yaml-1.1";
    let decimal = digest_of(&format!("{yaml}/deployment-mode-decimal.yaml"));
    // 420.0 and 6e2 are accepted where integers belong, and digest as 420 and 600.
    assert_eq!(
        digest_of(&format!("{yaml}/deployment-mode-float.yaml")),
        decimal
    );
    // YAML 1.1's octal file mode, as kubectl reads it: 0644 is 420; quoted "0644" and
    // "0022" stay strings (else the label and the env value would not decode).
    assert_eq!(
        digest_of(&format!("{yaml}/deployment-mode-octal.yaml")),
        decimal
    );
    // YAML's infinity has no JSON form: refused, naming the field, not dropped.
    let run = countersign(&[
        "check",
        "--policy",
        "examples/policies",
        "--object",
        "tests/fixtures/bad-input/object-infinite-number.yaml",
    ]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains(
            "object-infinite-number.yaml: spec.thresholds[0].limit: .inf is not a number JSON can carry"
        ),
        "{}",
        run.stderr
    );
}

#[test]
fn the_examples_give_the_verdicts_the_readme_claims() {
    let approvals = "examples/approvals";
    let with = |file: &str| vec!["--approval".to_string(), format!("{approvals}/{file}")];
    /// (name, object, now, extra args, exit, verdict, approval phase)
    type Row<'a> = (
        &'a str,
        &'a str,
        &'a str,
        Vec<String>,
        i32,
        &'a str,
        Option<&'a str>,
    );
    let cases: Vec<Row> = vec![
        (
            "release, no approval",
            "deployment-v2.yaml",
            MONDAY,
            vec![],
            1,
            "ApprovalRequired",
            Some("Pending"),
        ),
        (
            "release, pending",
            "deployment-v2.yaml",
            MONDAY,
            with("web-pending.yaml"),
            1,
            "ApprovalRequired",
            Some("Pending"),
        ),
        (
            "release, level 1 approved",
            "deployment-v2.yaml",
            MONDAY,
            with("web-level1-approved.yaml"),
            1,
            "ApprovalRequired",
            Some("Pending"),
        ),
        (
            "release, approved",
            "deployment-v2.yaml",
            MONDAY,
            with("web-approved.yaml"),
            0,
            "Approved",
            Some("Approved"),
        ),
        (
            "release, rejected",
            "deployment-v2.yaml",
            MONDAY,
            with("web-rejected.yaml"),
            1,
            "ApprovalRequired",
            Some("Rejected"),
        ),
        (
            "release, approved, expired next day: the attempt opens a fresh request",
            "deployment-v2.yaml",
            "2025-06-03T12:00:00Z",
            with("web-approved.yaml"),
            1,
            "ApprovalRequired",
            Some("Pending"),
        ),
        (
            "release, approved, weekend",
            "deployment-v2.yaml",
            SATURDAY,
            with("web-approved.yaml"),
            1,
            "Denied",
            None,
        ),
        (
            "scale-out only, weekend",
            "deployment-v1-scaled.yaml",
            SATURDAY,
            vec![],
            0,
            "Allowed",
            None,
        ),
        (
            "checks fail",
            "deployment-v2-leaky.yaml",
            MONDAY,
            vec![],
            1,
            "Denied",
            None,
        ),
        (
            "hotfix without break-glass rights, weekend",
            "deployment-hotfix.yaml",
            SATURDAY,
            vec![],
            1,
            "Denied",
            None,
        ),
        (
            "hotfix by on-call, weekend",
            "deployment-hotfix.yaml",
            SATURDAY,
            vec!["--group".into(), "sre-oncall".into()],
            0,
            "Allowed",
            None,
        ),
    ];
    for (name, object, now, extra, code, verdict, phase) in cases {
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        let (actual_code, report) = json(&example(&format!("examples/{object}"), now, &extra));
        assert_eq!(actual_code, code, "{name}: {report:#}");
        assert_eq!(report["verdict"], verdict, "{name}: {report:#}");
        assert_eq!(report["allowed"], code == 0, "{name}");
        assert_eq!(
            report["approval"]["phase"].as_str(),
            phase,
            "{name}: {report:#}"
        );
    }

    // The reasons say why, precisely.
    let (_, level1) = json(&example(
        "examples/deployment-v2.yaml",
        MONDAY,
        &["--approval", "examples/approvals/web-level1-approved.yaml"],
    ));
    assert_eq!(
        level1["reasons"][0],
        "approval web-93cfa25d is pending: level 2/2 sre: 0 of 2 approvals, waiting for bob (required)"
    );
    let (_, leaky) = json(&example("examples/deployment-v2-leaky.yaml", MONDAY, &[]));
    let reasons = leaky["reasons"].to_string();
    assert!(
        reasons.contains("env AWS_ACCESS_KEY_ID holds a credential (AWS access key ID)"),
        "{reasons}"
    );
    assert!(
        reasons.contains("image docker.io/acme/web:1.5.0 is not from an allowed registry"),
        "{reasons}"
    );
    let (_, freeze) = json(&example(
        "examples/deployment-v2.yaml",
        SATURDAY,
        &["--approval", "examples/approvals/web-approved.yaml"],
    ));
    assert!(
        freeze["reasons"][0]
            .as_str()
            .unwrap_or_default()
            .contains("change freeze \"weekend\"")
    );
    let (_, hotfix) = json(&example(
        "examples/deployment-hotfix.yaml",
        SATURDAY,
        &["--group", "sre-oncall"],
    ));
    assert_eq!(
        hotfix["breakGlass"],
        "INC-2291: checkout returns 500s, rolling forward the fix"
    );
}

#[test]
fn json_has_the_stable_fields() {
    let (_, report) = json(&example(
        "examples/deployment-v2.yaml",
        MONDAY,
        &["--approval", "examples/approvals/web-level1-approved.yaml"],
    ));
    assert_eq!(report["allowed"], false);
    assert!(report["reasons"].is_array());
    assert_eq!(
        report["policies"],
        serde_json::json!(["production-eu", "supply-chain-checks", "weekend-freeze"])
    );
    let digest = report["change"]["digest"].as_str().unwrap_or_default();
    let hex = digest.strip_prefix("sha256:").unwrap_or_default();
    assert!(
        hex.len() == 64 && hex.chars().all(|c| c.is_ascii_hexdigit()),
        "{digest}"
    );
    assert_eq!(report["approval"]["phase"], "Pending");
    let levels = report["approval"]["levels"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(levels.len(), 2);
    assert_eq!(
        levels[0],
        serde_json::json!({"name": "team-leads", "required": 1, "approvals": 1, "satisfied": true,
                           "approvedBy": ["alice"], "missingRequired": []})
    );
    assert_eq!(
        levels[1],
        serde_json::json!({"name": "sre", "required": 2, "approvals": 0, "satisfied": false,
                           "approvedBy": [], "missingRequired": ["bob"]})
    );
}

#[test]
fn text_puts_the_verdict_first() {
    let cases = [
        (
            example("examples/deployment-v2.yaml", MONDAY, &[]),
            "DENIED (approval required): Deployment shop/web",
        ),
        (
            example(
                "examples/deployment-v2.yaml",
                MONDAY,
                &["--approval", "examples/approvals/web-approved.yaml"],
            ),
            "ALLOWED (approved): Deployment shop/web",
        ),
        (
            example("examples/deployment-v2-leaky.yaml", MONDAY, &[]),
            "DENIED: Deployment shop/web",
        ),
        (
            example("examples/deployment-v1-scaled.yaml", MONDAY, &[]),
            "ALLOWED: Deployment shop/web",
        ),
    ];
    for (args, first_line) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let run = countersign(&args);
        assert_eq!(
            run.stdout.lines().next(),
            Some(first_line),
            "{}",
            run.stdout
        );
        assert!(run.stdout.contains("\ndigest:   sha256:"), "{}", run.stdout);
    }
}

/// `check` on the Change Manager fixtures: policy + approval for payments/api 2.0.0 → 2.1.0.
fn change_manager(policy: &str, approval: Option<&str>) -> (i32, Value) {
    let dir = "tests/fixtures/change-manager";
    let mut args: Vec<String> = vec![
        "check".into(),
        "--policy".into(),
        format!("{dir}/policy-{policy}.yaml"),
        "--old-object".into(),
        format!("{dir}/deployment-old.yaml"),
        "--object".into(),
        format!("{dir}/deployment-new.yaml"),
        "--user".into(),
        "dev".into(),
        "--now".into(),
        MONDAY.into(),
    ];
    if let Some(approval) = approval {
        args.extend([
            "--approval".into(),
            format!("{dir}/approval-{approval}.yaml"),
        ]);
    }
    json(&args)
}

#[test]
fn change_manager_semantics_hold_through_the_cli() {
    // (policy, approval, exit, phase, level-0 required, level-0 approvals, missing required)
    type Row<'a> = (
        &'a str,
        Option<&'a str>,
        i32,
        &'a str,
        u64,
        u64,
        Vec<&'a str>,
    );
    let cases: Vec<Row> = vec![
        // 3 per-level + 5 per-line requires 5 approvals.
        (
            "three-of-five-required",
            None,
            1,
            "Pending",
            5,
            0,
            vec!["a", "b", "c", "d", "e"],
        ),
        (
            "three-of-five-required",
            Some("three-of-five-four-approved"),
            1,
            "Pending",
            5,
            4,
            vec!["e"],
        ),
        (
            "three-of-five-required",
            Some("three-of-five-all-approved"),
            0,
            "Approved",
            5,
            5,
            vec![],
        ),
        // 4 per-level + 2 per-line requires 4, the 2 required among them.
        (
            "four-with-two-required",
            Some("four-with-two-missing-required"),
            1,
            "Pending",
            4,
            // x and y fill the two places beside the required lines and lead fills one;
            // z is not needed there: 3 count, sre is still missing.
            3,
            vec!["sre"],
        ),
        (
            "four-with-two-required",
            Some("four-with-two-three-approved"),
            1,
            "Pending",
            4,
            3,
            vec![],
        ),
        (
            "four-with-two-required",
            Some("four-with-two-approved"),
            0,
            "Approved",
            4,
            4,
            vec![],
        ),
        // A group approver is satisfied by one member.
        (
            "group-approver",
            Some("group-member-approved"),
            0,
            "Approved",
            1,
            1,
            vec![],
        ),
        (
            "group-approver",
            Some("group-non-member"),
            1,
            "Pending",
            1,
            0,
            vec!["group:sre"],
        ),
        // Required lines are filled by distinct people.
        (
            "two-required-groups",
            Some("one-person-in-both-groups"),
            1,
            "Pending",
            2,
            1,
            vec!["group:dba"],
        ),
        (
            "two-required-groups",
            Some("two-people-for-two-groups"),
            0,
            "Approved",
            2,
            2,
            vec![],
        ),
        // One rejection at any level ends the request.
        (
            "two-levels",
            Some("rejected-at-level-one"),
            1,
            "Rejected",
            1,
            0,
            vec![],
        ),
        (
            "two-levels",
            Some("rejected-at-level-two"),
            1,
            "Rejected",
            1,
            1,
            vec![],
        ),
        (
            "two-levels",
            Some("two-levels-approved"),
            0,
            "Approved",
            1,
            1,
            vec![],
        ),
    ];
    for (policy, approval, code, phase, required, approvals, missing) in cases {
        let name = format!("{policy} + {approval:?}");
        let (actual, report) = change_manager(policy, approval);
        assert_eq!(actual, code, "{name}: {report:#}");
        let level = &report["approval"]["levels"][0];
        assert_eq!(report["approval"]["phase"], phase, "{name}: {report:#}");
        assert_eq!(level["required"], required, "{name}");
        assert_eq!(level["approvals"], approvals, "{name}");
        assert_eq!(
            level["missingRequired"],
            serde_json::json!(missing),
            "{name}"
        );
    }
    let (_, rejected) = change_manager("two-levels", Some("rejected-at-level-one"));
    assert_eq!(rejected["approval"]["rejectedBy"], "lead2");
    assert!(
        rejected["reasons"][0]
            .as_str()
            .unwrap_or_default()
            .contains("was rejected by lead2"),
        "{rejected:#}"
    );
    let (_, second) = change_manager("two-levels", Some("rejected-at-level-two"));
    assert_eq!(second["approval"]["rejectedBy"], "sre2");
}

#[test]
fn stale_status_and_foreign_approvals_never_admit() {
    let (code, report) = change_manager("group-approver", Some("deploying-but-rejected"));
    assert_eq!(code, 1, "{report:#}");
    assert_eq!(report["approval"]["phase"], "Rejected", "{report:#}");
    assert!(
        report["reasons"]
            .to_string()
            .contains("status says Deploying, but its reviews make it Rejected"),
        "{report:#}"
    );

    let (code, report) = change_manager("group-approver", Some("under-another-policy"));
    assert_eq!(code, 1, "{report:#}");
    assert_eq!(report["approval"]["existing"], false, "{report:#}");
    assert!(
        report["reasons"].to_string().contains(
            "was requested under policy retired-policy, but policy group-approver governs this change now: it does not count, and a new request is needed"
        ),
        "{report:#}"
    );
}

#[test]
fn infeasible_chains_are_refused() {
    let cases = [
        (
            "three-users-require-five",
            "spec.approval.levels[0].minApprovals: policy three-users-require-five refused: level \"approvers\" requires 5 approvals but names only 3",
        ),
        (
            "deadlock-order",
            "spec.approval.levels: policy deadlock-order refused: approvals in this order deadlock the chain: a approves at level \"l1\"; then level \"l2\" can never be satisfied",
        ),
    ];
    for (policy, expected) in cases {
        let file = format!("tests/fixtures/change-manager/policy-{policy}.yaml");
        let run = countersign(&[
            "check",
            "--policy",
            &file,
            "--object",
            "tests/fixtures/change-manager/deployment-new.yaml",
        ]);
        assert_eq!(run.code, 2, "{policy}: {}", run.stderr);
        assert!(
            run.stderr
                .contains(&format!("policy-{policy}.yaml: {expected}")),
            "{policy}: {}",
            run.stderr
        );
    }
}

#[test]
fn the_digest_survives_key_order_format_replicas_and_server_fields() {
    // The same release as JSON: keys reordered, other whitespace, 5 replicas (ignored),
    // server-set metadata and a status.
    let (_, yaml) = json(&example("examples/deployment-v2.yaml", MONDAY, &[]));
    let (_, reordered) = json(&example(
        "tests/fixtures/digest/deployment-v2-reordered.json",
        MONDAY,
        &["--approval", "examples/approvals/web-approved.yaml"],
    ));
    assert_eq!(yaml["change"]["digest"], reordered["change"]["digest"]);
    assert_eq!(
        reordered["verdict"], "Approved",
        "the approval still matches"
    );
    // Any image change yields another digest, and the approval no longer matches.
    let (_, hotfix) = json(&example(
        "examples/deployment-hotfix.yaml",
        MONDAY,
        &["--approval", "examples/approvals/web-approved.yaml"],
    ));
    assert_ne!(yaml["change"]["digest"], hotfix["change"]["digest"]);
    assert_eq!(hotfix["verdict"], "ApprovalRequired");
    assert_eq!(hotfix["approval"]["existing"], false);
}

/// `check` on the role-approver fixtures: one holder of `release-approver` must approve.
fn role_approver(approval: &str, rbac: Option<&str>) -> Run {
    let mut args = vec![
        "check",
        "--policy",
        "tests/fixtures/role-approver/policy-role.yaml",
        "--old-object",
        "tests/fixtures/change-manager/deployment-old.yaml",
        "--object",
        "tests/fixtures/change-manager/deployment-new.yaml",
        "--user",
        "dev",
        "--now",
        MONDAY,
        "--approval",
        approval,
    ];
    if let Some(rbac) = rbac {
        args.extend(["--rbac", rbac]);
    }
    countersign(&args)
}

#[test]
fn role_approvers_are_resolved_from_rbac_files() {
    let dir = "tests/fixtures/role-approver";
    let rbac = format!("{dir}/rbac.yaml");
    // (approval, rbac given, exit): a RoleBinding in the target's namespace and a
    // ClusterRoleBinding grant the role; a RoleBinding elsewhere does not.
    let cases = [
        ("group-member", true, 0),
        ("cluster-binding", true, 0),
        ("other-namespace", true, 1),
        ("group-member", false, 1),
    ];
    for (approval, with_rbac, exit) in cases {
        let run = role_approver(
            &format!("{dir}/approval-{approval}.yaml"),
            with_rbac.then_some(rbac.as_str()),
        );
        assert_eq!(
            run.code, exit,
            "{approval} (rbac: {with_rbac}): {}{}",
            run.stdout, run.stderr
        );
    }
}

#[test]
fn a_bad_rbac_file_names_the_file_and_the_field() {
    let dir = tempdir("rbac");
    let cases = [
        (
            "role.yaml",
            "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {name: r}\n",
            "role.yaml: kind: expected RoleBinding or ClusterRoleBinding",
        ),
        (
            "list.yaml",
            "apiVersion: v1\nkind: List\nitems:\n  - apiVersion: rbac.authorization.k8s.io/v1\n    kind: ClusterRoleBinding\n    metadata: {name: c}\n    roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: x}\n    subjectz: []\n",
            "list.yaml: items[0].subjectz: unknown field",
        ),
        (
            "unscoped.yaml",
            "apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {name: r}\nroleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: x}\n",
            "unscoped.yaml: metadata.namespace: a RoleBinding needs its namespace",
        ),
    ];
    for (name, text, expected) in cases {
        let file = dir.join(name);
        std::fs::write(&file, text).expect("write fixture");
        let run = role_approver(
            "tests/fixtures/role-approver/approval-group-member.yaml",
            Some(file.to_str().expect("UTF-8 path")),
        );
        assert_eq!(run.code, 2, "{name}: {}", run.stdout);
        assert!(
            run.stderr.contains(expected),
            "{name}: expected {expected:?} in {:?}",
            run.stderr
        );
    }
}

/// A fresh directory under the target directory for files a test writes.
fn tempdir(name: &str) -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    std::fs::create_dir_all(&dir).expect("create temp dir");
    dir
}

/// A rendered manifest set (what `helm template` or `kustomize build` prints): every
/// workload in it judged, one verdict each, the exit status the worst; JUnit for CI.
#[test]
fn a_manifest_set_is_judged_workload_by_workload() {
    let dir = std::env::temp_dir().join(format!("countersign-cli-set-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("rendered")).expect("dir");
    let root = env!("CARGO_MANIFEST_DIR");
    let read =
        |name: &str| std::fs::read_to_string(format!("{root}/examples/{name}")).expect("example");
    // web unchanged, a new api leaking a cloud key, and a Service (not a workload).
    let service = "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: shop}\nspec: {ports: [{port: 80}]}\n";
    let api = read("deployment-v2-leaky.yaml")
        .replace("name: web\n  namespace", "name: api\n  namespace");
    let rendered = format!("{service}---\n{}---\n{api}", read("deployment-v1.yaml"));
    let set = dir.join("rendered/all.yaml");
    std::fs::write(&set, rendered).expect("write");
    let old = dir.join("old.yaml");
    std::fs::write(&old, read("deployment-v1.yaml")).expect("write");
    let args = |extra: &[&str]| -> Vec<String> {
        let mut args: Vec<String> = [
            "check",
            "--policy",
            "examples/policies",
            "--namespace",
            "examples/namespace-shop.yaml",
            "--user",
            "dana",
            "--group",
            "developers",
            "--now",
            MONDAY,
            "--old-object",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.push(old.to_string_lossy().into_owned());
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    };
    let run = |extra: &[&str]| {
        let args = args(extra);
        countersign(&args.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let target = set.to_string_lossy().into_owned();
    let text = run(&["--object", &target]);
    assert_eq!(text.code, 1, "{}{}", text.stdout, text.stderr);
    assert!(
        text.stdout.contains("ALLOWED: Deployment shop/web"),
        "{}",
        text.stdout
    );
    assert!(
        text.stdout.contains("DENIED: Deployment shop/api"),
        "{}",
        text.stdout
    );
    assert!(!text.stdout.contains("Service"), "{}", text.stdout);
    assert!(
        text.stdout
            .contains("2 workloads: 1 allowed, 1 denied or waiting for approval"),
        "{}",
        text.stdout
    );
    // The same through the directory; JSON is a list of SPEC §10's objects.
    let directory = dir.join("rendered").to_string_lossy().into_owned();
    let json = run(&["--object", &directory, "-o", "json"]);
    let reports: Value = serde_json::from_str(&json.stdout).expect("JSON");
    let allowed: Vec<bool> = reports
        .as_array()
        .expect("a list")
        .iter()
        .map(|r| r["allowed"].as_bool().expect("allowed"))
        .collect();
    assert_eq!(allowed, [true, false]);
    assert_eq!(reports[1]["change"]["target"], "Deployment shop/api");
    let junit = run(&["--object", &target, "-o", "junit"]);
    assert_eq!(junit.code, 1);
    assert!(
        junit.stdout.contains("tests=\"2\" failures=\"1\""),
        "{}",
        junit.stdout
    );
    assert!(
        junit.stdout.contains("<failure type=\"Denied\""),
        "{}",
        junit.stdout
    );
    // --operation is for a single object; a set without workloads is bad input.
    let refused = run(&["--object", &target, "--operation", "UPDATE"]);
    assert_eq!(refused.code, 2, "{}", refused.stderr);
    let only_service = dir.join("service.yaml");
    std::fs::write(&only_service, format!("{service}---\n{service}")).expect("write");
    let empty = run(&["--object", &only_service.to_string_lossy()]);
    assert_eq!(empty.code, 2, "{}", empty.stderr);
    assert!(
        empty.stderr.contains("holds no workload"),
        "{}",
        empty.stderr
    );
    // --fail-on denied: a change that only needs approval passes (pre-commit, pipelines);
    // several paths after one --object, as pre-commit passes the changed files.
    let waiting = format!("{root}/examples/deployment-v2.yaml");
    assert_eq!(
        run(&["--object", &waiting, &only_service.to_string_lossy()]).code,
        1
    );
    let passes = run(&[
        "--fail-on",
        "denied",
        "--object",
        &waiting,
        &only_service.to_string_lossy(),
    ]);
    assert_eq!(passes.code, 0, "{}{}", passes.stdout, passes.stderr);
    assert!(
        passes.stdout.contains("DENIED (approval required)"),
        "{}",
        passes.stdout
    );
    assert_eq!(run(&["--fail-on", "denied", "--object", &target]).code, 1);
    // A single-object --object still prints SPEC §10's one JSON object.
    let single = run(&[
        "--object",
        &format!("{root}/examples/deployment-v1.yaml"),
        "-o",
        "json",
    ]);
    let report: Value = serde_json::from_str(&single.stdout).expect("JSON");
    assert!(report.is_object(), "{report}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `--context` without `--kubeconfig` picks that context from the default kubeconfig, for
/// `serve` as for the approver's commands (one way of choosing: `src/kubeconfig.rs`); it
/// is never dropped in favour of the current context.
#[test]
fn a_context_without_a_kubeconfig_is_looked_up_not_ignored() {
    let dir = std::env::temp_dir().join(format!("countersign-context-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let kubeconfig = dir.join("config");
    std::fs::write(
        &kubeconfig,
        "apiVersion: v1\nkind: Config\nclusters:\n- name: only\n  cluster: {server: \"https://127.0.0.1:9\"}\nusers:\n- name: u\n  user: {token: t}\ncontexts:\n- name: only\n  context: {cluster: only, user: u}\ncurrent-context: only\n",
    )
    .expect("kubeconfig");
    for args in [
        &[
            "serve",
            "--context",
            "elsewhere",
            "--tls-cert",
            "/nonexistent",
            "--tls-key",
            "/nonexistent",
        ][..],
        &["list", "--context", "elsewhere"][..],
    ] {
        // Ignoring the context would connect to the current one and wait on it: a
        // deadline makes that a failure rather than a hang.
        let mut child = Command::new(env!("CARGO_BIN_EXE_countersign"))
            .args(args)
            .env("KUBECONFIG", &kubeconfig)
            .env_remove("KUBERNETES_SERVICE_HOST")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run countersign");
        let started = std::time::Instant::now();
        while child.try_wait().expect("wait").is_none() {
            if started.elapsed() > std::time::Duration::from_secs(30) {
                let _ = child.kill();
                panic!("{args:?}: still running after 30 s; was --context ignored?");
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let output = child.wait_with_output().expect("output");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_ne!(output.status.code(), Some(0), "{args:?}: {stderr}");
        assert!(stderr.contains("elsewhere"), "{args:?}: {stderr}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// `status`, `approve` and `reject` read NAME as kubectl reads `KIND/NAME` before they
/// connect: a kind that is neither a request nor a change set is bad input (2), said so,
/// and never reaches a cluster.
#[test]
fn a_name_of_another_kind_is_bad_input_before_any_cluster() {
    for args in [
        &["status", "deployment/web"][..],
        &["approve", "secret/db"][..],
        &["reject", "cset/", "--comment", "no"][..],
    ] {
        let mut args = args.to_vec();
        args.extend(["--kubeconfig", "/nonexistent/kubeconfig"]);
        let run = countersign(&args);
        assert_eq!(run.code, 2, "{args:?}: {}{}", run.stdout, run.stderr);
        assert!(
            run.stderr.contains("changeset/NAME") && !run.stderr.contains("kubeconfig"),
            "{args:?}: {}",
            run.stderr
        );
    }
}
