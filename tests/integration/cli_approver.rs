//! The approver's commands through the built binary, as the named users against the real
//! control plane: `list` (and `--mine`), `status`, `approve`, `reject`, `audit`.

use std::process::{Command, Output};

use anyhow::Result;
use serde_json::{Value, json};

use crate::support::countersign::Countersign;
use crate::support::flow::*;
use crate::support::{TestCluster, TestNamespace, User};

/// `countersign ARGS` as `user` (its kubeconfig context), in `namespace`.
fn countersign(user: User, namespace: &str, args: &[&str]) -> Result<Output> {
    Ok(Command::new(env!("CARGO_BIN_EXE_countersign"))
        .args(args)
        .arg("--kubeconfig")
        .arg(TestCluster::get().kubeconfig())
        .args(["--context", user.name(), "-n", namespace])
        .output()?)
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn exit_code(out: &Output) -> Option<i32> {
    out.status.code()
}

#[tokio::test]
async fn approvers_list_review_and_follow_a_request_from_the_command_line() -> Result<()> {
    Countersign::get();
    let ns = TestNamespace::create("cli", None).await?;
    let ns = ns.name();
    let _policy = Policy::apply(
        ns,
        json!({ "approval": { "levels": [
            { "name": "leads", "approvers": [{ "group": "team-leads" }] },
            { "name": "sre", "approvers": [{ "group": "sre" }] },
        ] } }),
    )?;
    let name = open_request(ns, &web(ns, "nginx:1.28", 1)).await?;

    // Everyone sees it in the list, waiting for a team lead.
    let listed = until_listed(User::Alice, ns, &name, "leads 0/1").await?;
    for column in ["NAME", "TARGET", "CHANGE", "LEVEL", "WAITING FOR", "AGE"] {
        assert!(listed.contains(column), "{listed}");
    }
    assert!(
        listed.contains("1 of group:team-leads") && listed.contains("Deployment/web"),
        "{listed}"
    );
    // --mine: alice may approve it now; carol's level is not open; dave asked for it.
    let mine = |user| countersign(user, ns, &["list", "--mine"]);
    assert!(stdout(&mine(User::Alice)?).contains(&name));
    for user in [User::Carol, User::Dave] {
        let out = mine(user)?;
        assert_eq!(exit_code(&out), Some(0), "{}", text(&out));
        assert!(
            stdout(&out).contains("No requests you can approve now"),
            "{}",
            text(&out)
        );
    }

    // carol cannot approve before her level opens; the webhook's reason is shown as it is.
    let early = countersign(User::Carol, ns, &["approve", &name])?;
    assert_eq!(exit_code(&early), Some(1), "{}", text(&early));
    assert!(
        !text(&early).contains("admission webhook"),
        "{}",
        text(&early)
    );
    // alice approves; the progress is printed once the operator counted it.
    let approved = countersign(User::Alice, ns, &["approve", &name, "--comment", "LGTM"])?;
    assert_eq!(exit_code(&approved), Some(0), "{}", text(&approved));
    assert!(
        stdout(&approved).contains(&format!("Approved {ns}/{name} as alice."))
            && stdout(&approved).contains("Now at level sre 0/1, waiting for 1 of group:sre."),
        "{}",
        text(&approved)
    );
    // Twice is refused.
    let again = countersign(User::Alice, ns, &["approve", &name])?;
    assert_eq!(exit_code(&again), Some(1), "{}", text(&again));
    assert!(stdout(&mine(User::Carol)?).contains(&name));

    // status, for people and as JSON/YAML.
    let status = countersign(User::Carol, ns, &["status", &name])?;
    assert_eq!(exit_code(&status), Some(0), "{}", text(&status));
    for expected in [
        "image web: (none) → nginx:1.28",
        "1. leads [satisfied] 1 of 1",
        "approved by: alice",
        "2. sre [open] 0 of 1",
        "Approve by alice: \"LGTM\"",
        "requested:  by dave",
    ] {
        assert!(
            stdout(&status).contains(expected),
            "{expected:?}: {}",
            stdout(&status)
        );
    }
    let json: Value = serde_json::from_slice(
        &countersign(User::Carol, ns, &["status", &name, "-o", "json"])?.stdout,
    )?;
    assert_eq!(json["status"]["currentLevel"], 2, "{json}");
    let yaml = stdout(&countersign(User::Carol, ns, &["list", "-o", "yaml"])?);
    assert!(
        yaml.contains("kind: List") && yaml.contains(&name),
        "{yaml}"
    );

    // A rejection needs a reason.
    let bare = countersign(User::Carol, ns, &["reject", &name])?;
    assert_eq!(exit_code(&bare), Some(2), "{}", text(&bare));
    let approved = countersign(User::Carol, ns, &["approve", &name])?;
    assert_eq!(exit_code(&approved), Some(0), "{}", text(&approved));
    assert!(
        stdout(&approved).contains("Next: approved"),
        "{}",
        text(&approved)
    );
    // Approved: in flight until the change is applied.
    let listed = until_listed(User::Dave, ns, &name, "the change to be applied").await?;
    assert!(listed.contains("Approved"), "{listed}");

    // The trail, oldest first (for whoever may read it).
    let trail = countersign(User::Admin, ns, &["audit", &name])?;
    assert_eq!(exit_code(&trail), Some(0), "{}", text(&trail));
    let said = stdout(&trail);
    let at = |needle: &str| said.find(needle).unwrap_or(usize::MAX);
    assert!(
        at("Requested") < at("ReviewRecorded") && at("ReviewRecorded") < at("Approved"),
        "{said}"
    );
    let by_target = stdout(&countersign(
        User::Admin,
        ns,
        &["audit", "--target", "deployment/web"],
    )?);
    assert!(by_target.contains("Requested"), "{by_target}");
    // dave may not read the trail: refused, not a crash.
    let forbidden = countersign(User::Dave, ns, &["audit", &name])?;
    assert_eq!(exit_code(&forbidden), Some(1), "{}", text(&forbidden));
    // Not found is refused too; an unreachable cluster is 3.
    let missing = countersign(User::Alice, ns, &["status", "no-such-request"])?;
    assert_eq!(exit_code(&missing), Some(1), "{}", text(&missing));
    let unreachable = Command::new(env!("CARGO_BIN_EXE_countersign"))
        .args(["list", "--kubeconfig", "/nonexistent/kubeconfig"])
        .output()?;
    assert_eq!(exit_code(&unreachable), Some(3), "{}", text(&unreachable));
    Ok(())
}

/// Lists as `user` until `name` shows with `needle` (the operator writes the status).
async fn until_listed(user: User, ns: &str, name: &str, needle: &str) -> Result<String> {
    crate::support::wait::until(
        &format!("{name} listed with {needle}"),
        std::time::Duration::from_secs(15),
        || async {
            let out = countersign(user, ns, &["list"])?;
            let listed = stdout(&out);
            Ok(if listed.contains(name) && listed.contains(needle) {
                crate::support::wait::Poll::Ready(listed)
            } else {
                crate::support::wait::Poll::Pending(text(&out))
            })
        },
    )
    .await
}
