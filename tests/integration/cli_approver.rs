//! The approver's commands through the built binary, as the named users against the real
//! control plane: `list` (and `--mine`), `status`, `approve`, `reject`, `audit`.

use std::process::{Command, Output};

use anyhow::Result;
use serde_json::{Value, json};

use crate::support::countersign::Countersign;
use crate::support::flow::*;
use crate::support::{TestCluster, TestNamespace, User};

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
        "web: (none) → nginx:1.28",
        "1. leads [satisfied] 1 of 1",
        "approved by: alice",
        "2. sre [open] 0 of 1",
        "Approve by alice: \"LGTM\"",
        "requested:  by dave",
        "You:  carol (you may approve it now",
    ] {
        assert!(
            stdout(&status).contains(expected),
            "{expected:?}: {}",
            stdout(&status)
        );
    }
    let theirs = stdout(&countersign(User::Dave, ns, &["status", &name])?);
    assert!(
        theirs.contains("You:  dave (your approval would not count now)"),
        "{theirs}"
    );
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
    // Reviews close once the chain decides: a late rejection gets the webhook's refusal as
    // it says it (the CLI keeps no rule of its own about which phases take reviews).
    let late = countersign(User::Carol, ns, &["reject", &name, "--comment", "too late"])?;
    assert_eq!(exit_code(&late), Some(1), "{}", text(&late));
    assert!(
        text(&late).contains("the request is Approved; reviews are closed"),
        "{}",
        text(&late)
    );

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

/// `countersign request -f` as dave, until countersign's caches have the policy (before
/// that the dry run is admitted and nothing is opened); the output.
async fn request_until(
    ns: &str,
    manifest: &std::path::Path,
    extra: &[&str],
    needle: &str,
) -> Result<Output> {
    let path = manifest.to_string_lossy().into_owned();
    crate::support::wait::until(
        &format!("request -f saying {needle:?}"),
        std::time::Duration::from_secs(15),
        || async {
            let mut args = vec!["request", "-f", path.as_str()];
            args.extend_from_slice(extra);
            let out = countersign(User::Dave, ns, &args)?;
            Ok(if text(&out).contains(needle) {
                crate::support::wait::Poll::Ready(out)
            } else {
                crate::support::wait::Poll::Pending(text(&out))
            })
        },
    )
    .await
}

fn requested_name(out: &Output) -> Result<String> {
    let said = stdout(out);
    said.split("requested approval ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|qualified| qualified.split('/').nth(1))
        .map(str::to_string)
        .ok_or_else(|| anyhow::anyhow!("no request named: {}", text(out)))
}

#[tokio::test]
async fn a_deployer_requests_ahead_and_the_later_apply_is_admitted_without_a_second_request()
-> Result<()> {
    Countersign::get();
    let ns = TestNamespace::create("ahead", None).await?;
    let ns = ns.name();
    let _policy = Policy::apply(
        ns,
        json!({ "approval": { "levels": [
            { "name": "leads", "approvers": [{ "group": "team-leads" }] },
        ] } }),
    )?;
    let manifest = std::env::temp_dir().join(format!("countersign-{ns}-web.yaml"));
    let deployment = web(ns, "nginx:1.28", 1);
    std::fs::write(&manifest, serde_json::to_string(&deployment)?)?;

    // Before anything is applied: a request, opened by dave's CLI.
    let out = request_until(ns, &manifest, &[], "requested approval").await?;
    assert_eq!(exit_code(&out), Some(0), "{}", text(&out));
    let name = requested_name(&out)?;
    assert!(
        stdout(&out).contains("level leads: group:team-leads"),
        "{}",
        text(&out)
    );
    // Asking twice opens nothing more.
    let twice = countersign(
        User::Dave,
        ns,
        &["request", "-f", &manifest.to_string_lossy()],
    )?;
    assert!(
        stdout(&twice).contains(&format!("already requested as {name}")),
        "{}",
        text(&twice)
    );
    // dave follows it (countersign-deployer, through edit); alice approves.
    until_listed(User::Dave, ns, &name, "leads 0/1").await?;
    let approved = countersign(User::Alice, ns, &["approve", &name])?;
    assert_eq!(exit_code(&approved), Some(0), "{}", text(&approved));
    // The sync that comes later is admitted under that request, without a second one.
    let applied = apply_until("the approved change admitted", &deployment, &[], |out| {
        out.status.success()
    })
    .await?;
    assert_ok(&applied);
    let listed = kubectl(
        User::Admin,
        &["get", "deploymentapprovals", "-n", ns, "-o", "name"],
    )?;
    assert_eq!(stdout(&listed).lines().count(), 1, "{}", stdout(&listed));

    // A rejected change is asked again only with --again, as a fresh request. (Another
    // Deployment: while web's change rolls out, its next change is refused outright.)
    let mut next = web(ns, "nginx:1.29", 1);
    next["metadata"]["name"] = json!("api");
    std::fs::write(&manifest, serde_json::to_string(&next)?)?;
    let out = request_until(ns, &manifest, &[], "requested approval").await?;
    let rejected = requested_name(&out)?;
    let reject = countersign(
        User::Alice,
        ns,
        &["reject", &rejected, "--comment", "not now"],
    )?;
    assert_eq!(exit_code(&reject), Some(0), "{}", text(&reject));
    let refused = request_until(ns, &manifest, &[], "--again").await?;
    assert_eq!(exit_code(&refused), Some(1), "{}", text(&refused));
    let again = request_until(ns, &manifest, &["--again"], "requested approval").await?;
    assert_eq!(
        requested_name(&again)?,
        format!("{rejected}-2"),
        "{}",
        text(&again)
    );
    // The apply now finds the fresh request, pending.
    let out = apply(User::Dave, &next, &[])?;
    assert_refused(&out, &format!("approval {rejected}-2 is pending"));

    // Nothing to request where no policy applies; a manifest without a name is bad input.
    let free = TestNamespace::create("ahead-free", None).await?;
    std::fs::write(
        &manifest,
        serde_json::to_string(&web(free.name(), "nginx:1.28", 1))?,
    )?;
    let out = countersign(
        User::Admin,
        free.name(),
        &["request", "-f", &manifest.to_string_lossy()],
    )?;
    assert!(stdout(&out).contains("admitted as it is"), "{}", text(&out));
    std::fs::write(
        &manifest,
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {}\n",
    )?;
    let out = countersign(
        User::Dave,
        ns,
        &["request", "-f", &manifest.to_string_lossy()],
    )?;
    assert_eq!(exit_code(&out), Some(2), "{}", text(&out));
    let _ = std::fs::remove_file(&manifest);
    Ok(())
}

/// What a dry run hands out is only a proposal: dave, who may now create requests (edit
/// aggregates countersign-deployer), takes it and opens it forged: in alice's name, under
/// a laxer chain, pre-approved, or for someone else's change. Each is refused.
#[tokio::test]
async fn a_proposal_handed_out_by_a_dry_run_cannot_be_opened_forged() -> Result<()> {
    use kube::api::{DynamicObject, Patch, PatchParams};
    Countersign::get();
    let ns = TestNamespace::create("proposal", None).await?;
    let ns = ns.name();
    let _policy = Policy::apply(ns, two_level_chain())?;
    let deployment = web(ns, "nginx:1.28", 1);
    until_gated(&deployment).await?;
    // The proposal, read from the dry run's denial as an attacker would.
    let dave = TestCluster::get().client(User::Dave).await?;
    let resource = kube::api::ApiResource::erase::<k8s_openapi::api::apps::v1::Deployment>(&());
    let api: kube::Api<DynamicObject> = kube::Api::namespaced_with(dave, ns, &resource);
    let denial = match api
        .patch(
            "web",
            &PatchParams::apply("attacker").force().dry_run(),
            &Patch::Apply(&deployment),
        )
        .await
    {
        Err(kube::Error::Api(status)) => status,
        other => anyhow::bail!("the dry run was not denied: {other:?}"),
    };
    let cause = denial
        .details
        .as_ref()
        .and_then(|d| {
            d.causes
                .iter()
                .find(|c| c.reason == "countersign.dev/request")
        })
        .ok_or_else(|| anyhow::anyhow!("no proposal in {denial:?}"))?;
    let proposal: Value = serde_json::from_str(&cause.message)?;
    let request = |edit: &dyn Fn(&mut Value)| -> Result<Output> {
        let mut object = json!({
            "apiVersion": "countersign.dev/v1alpha1", "kind": "DeploymentApproval",
            "metadata": { "name": proposal["open"]["name"], "namespace": ns },
            "spec": proposal["open"]["spec"],
        });
        edit(&mut object);
        kubectl_stdin(User::Dave, &["create", "-f", "-"], &object)
    };
    type Forgery<'a> = (&'a str, &'a dyn Fn(&mut Value), &'a str);
    let cases: &[Forgery] = &[
        (
            "in alice's name",
            &|o| {
                o["spec"]["change"]["requester"] =
                    json!({ "username": "alice", "groups": ["team-leads"] })
            },
            "request changes in your own name only",
        ),
        (
            "under a laxer chain",
            &|o| {
                if let Some(levels) = o["spec"]["policy"]["chain"]["levels"].as_array_mut() {
                    levels.truncate(1);
                }
            },
            "is not the current chain",
        ),
        (
            "pre-approved",
            &|o| {
                o["spec"]["reviews"] = json!([{ "user": "alice", "decision": "Approve",
                    "time": jiff::Timestamp::now().to_string() }])
            },
            "spec.reviews must be empty",
        ),
        (
            "for another object",
            &|o| o["spec"]["target"]["name"] = json!("api"),
            "is not a name for this change",
        ),
        (
            "dated a moment later",
            &|o| {
                let later = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(30);
                o["spec"]["change"]["requestedAt"] =
                    json!(later.strftime("%Y-%m-%dT%H:%M:%SZ").to_string());
            },
            "is not countersign's own for this change",
        ),
        (
            "with a summary of his own",
            &|o| o["spec"]["change"]["summary"]["text"] = json!("Deployment web: nothing to see"),
            "is not countersign's own for this change",
        ),
    ];
    for (what, edit, refusal) in cases {
        let out = request(*edit)?;
        assert!(!out.status.success(), "{what}: {}", text(&out));
        assert!(text(&out).contains(refusal), "{what}: {}", text(&out));
    }
    // Unedited (its time the dry run's), it opens: the proposal was honest.
    assert_ok(&request(&|_| {})?);
    Ok(())
}
