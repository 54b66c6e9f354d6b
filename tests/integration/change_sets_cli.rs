//! Change sets through the CLI, as the named users against the real control plane:
//! `countersign request -f` of several gated documents opens one set, `list` and `status`
//! show it with its members, a member's review is sent to its set, the set's approvers
//! approve (or reject) every member at once, and the manifest is then admitted. And the
//! ways around it: a set of someone else's requests, or with a digest of its own, is refused.

use std::path::PathBuf;
use std::process::Output;
use std::time::Duration;

use anyhow::{Result, anyhow};
use countersign::api::{ApprovalPhase, ChangeSet, DeploymentApproval, SET_LABEL};
use countersign::core::approval::set::{set_name, set_spec};
use kube::Api;
use kube::api::{DynamicObject, Patch, PatchParams};
use serde_json::{Value, json};

use crate::support::countersign::Countersign;
use crate::support::flow::*;
use crate::support::wait::{Poll, until};
use crate::support::{TestCluster, TestNamespace, User};

/// Deployment `name` (pods never scheduled: an admitted change stays Deploying).
fn deployment(ns: &str, name: &str, image: &str) -> Value {
    let mut object = web(ns, image, 1);
    object["metadata"]["name"] = json!(name);
    object["spec"]["selector"]["matchLabels"] = json!({ "app": name });
    object["spec"]["template"]["metadata"]["labels"] = json!({ "app": name });
    object["spec"]["template"]["spec"]["containers"][0]["name"] = json!(name);
    object
}

/// `objects` as one multi-document manifest `release.yaml` in a directory of `ns`'s own.
fn manifest(ns: &str, objects: &[&Value]) -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("countersign-{ns}"));
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("release.yaml");
    let documents: Vec<String> = objects.iter().map(|o| o.to_string()).collect();
    std::fs::write(&path, format!("---\n{}\n", documents.join("\n---\n")))?;
    Ok(path)
}

/// `countersign request -f` as dave until the output says `needle` (until countersign's
/// caches have the policy, the dry runs are admitted and nothing is opened).
async fn request_until(
    ns: &str,
    manifest: &std::path::Path,
    extra: &[&str],
    needle: &str,
) -> Result<Output> {
    let path = manifest.to_string_lossy().into_owned();
    until(
        &format!("request -f saying {needle:?}"),
        Duration::from_secs(20),
        || async {
            let mut args = vec!["request", "-f", path.as_str()];
            args.extend_from_slice(extra);
            let out = countersign(User::Dave, ns, &args)?;
            Ok(if text(&out).contains(needle) {
                Poll::Ready(out)
            } else {
                Poll::Pending(text(&out))
            })
        },
    )
    .await
}

/// The set `request -f` opened, as it names it (`Change set NS/NAME: …`).
fn opened_set(out: &Output) -> Result<String> {
    let said = stdout(out);
    said.split("Change set ")
        .nth(1)
        .and_then(|rest| rest.split(':').next())
        .and_then(|qualified| qualified.split('/').nth(1))
        .map(str::to_string)
        .ok_or_else(|| anyhow!("no change set named: {}", text(out)))
}

fn exit_code(out: &Output) -> Option<i32> {
    out.status.code()
}

/// Lists as `user` until every needle is in the table (the operator writes the status).
async fn until_listed(user: User, ns: &str, needles: &[&str]) -> Result<String> {
    until(
        &format!("list showing {needles:?}"),
        Duration::from_secs(20),
        || async {
            let out = countersign(user, ns, &["list"])?;
            let listed = stdout(&out);
            Ok(if needles.iter().all(|n| listed.contains(n)) {
                Poll::Ready(listed)
            } else {
                Poll::Pending(text(&out))
            })
        },
    )
    .await
}

/// `countersign status` of set `set` as dave, once it says every one of `needles`. The
/// operator reconciles a set and its members separately, so the set's status can trail
/// its members' by a moment.
async fn set_status_until(ns: &str, set: &str, needles: &[&str]) -> Result<()> {
    until(
        &format!("status of {set} saying {needles:?}"),
        Duration::from_secs(20),
        || async {
            let out = countersign(User::Dave, ns, &["status", set])?;
            let said = stdout(&out);
            Ok(
                if out.status.success() && needles.iter().all(|n| said.contains(n)) {
                    Poll::Ready(())
                } else {
                    Poll::Pending(text(&out))
                },
            )
        },
    )
    .await
}

/// The requests in `ns` (by name) once each has phase `phase`.
async fn members_until(ns: &str, names: &[String], phase: ApprovalPhase) -> Result<()> {
    for name in names {
        status_until(ns, name, &format!("{name} {phase}"), |s| s.phase == phase).await?;
    }
    Ok(())
}

#[tokio::test]
async fn a_manifest_of_two_gated_deployments_is_requested_and_approved_as_one_set() -> Result<()> {
    Countersign::get();
    let ns = TestNamespace::create("cset", None).await?;
    let ns = ns.name();
    let _policy = Policy::apply(
        ns,
        json!({ "approval": { "levels": [
            { "name": "leads", "approvers": [{ "group": "team-leads" }] },
            { "name": "sre", "approvers": [{ "group": "sre" }] },
        ] } }),
    )?;
    let web = deployment(ns, "web", "nginx:1.28");
    let api = deployment(ns, "api", "nginx:1.28");
    let path = manifest(ns, &[&web, &api])?;
    until_gated(&web).await?;

    // One set, two members, each naming it.
    let out = request_until(ns, &path, &[], "Change set").await?;
    assert_eq!(exit_code(&out), Some(0), "{}", text(&out));
    let set = opened_set(&out)?;
    assert!(set.starts_with("release-"), "{set}");
    let said = stdout(&out);
    for expected in [
        ": opened for 2 requests under policy".to_string(),
        format!("in change set {ns}/{set} (reviewed as one)"),
        "first:   level leads: group:team-leads".to_string(),
        format!("approve: kubectl countersign approve {set} -n {ns}"),
    ] {
        assert!(said.contains(&expected), "{expected:?}: {said}");
    }
    let admin = TestCluster::get().client(User::Admin).await?;
    let stored = Api::<ChangeSet>::namespaced(admin.clone(), ns)
        .get(&set)
        .await?;
    let members: Vec<String> = stored
        .spec
        .members
        .iter()
        .map(|m| m.request.clone())
        .collect();
    let targets: Vec<&str> = stored
        .spec
        .members
        .iter()
        .map(|m| m.target.name.as_str())
        .collect();
    assert_eq!(targets, ["web", "api"]);
    assert_eq!(stored.spec.change.requester.username, "dave");
    for approval in approvals(ns).await? {
        assert_eq!(approval.spec.change_set.as_deref(), Some(set.as_str()));
        let labels = approval.metadata.labels.clone().unwrap_or_default();
        assert_eq!(labels.get(SET_LABEL), Some(&set), "{labels:?}");
    }
    // Asked again: nothing more is opened, and it says where things stand.
    let again = countersign(User::Dave, ns, &["request", "-f", &path.to_string_lossy()])?;
    assert_eq!(exit_code(&again), Some(0), "{}", text(&again));
    assert!(
        stdout(&again).contains(&format!("already requested as {}", members[0]))
            && stdout(&again).contains(&format!("in change set {set}")),
        "{}",
        text(&again)
    );
    assert_eq!(approvals(ns).await?.len(), 2);

    // The set above its members, waiting for a team lead; JSON lists the set and both.
    let listed = until_listed(User::Alice, ns, &[&set, "set of 2", "leads 0/1", "the set"]).await?;
    assert!(
        listed.contains(&format!("├ {}", members[0]))
            && listed.contains(&format!("└ {}", members[1])),
        "{listed}"
    );
    let json: Value =
        serde_json::from_slice(&countersign(User::Alice, ns, &["list", "-o", "json"])?.stdout)?;
    let kinds: Vec<&str> = json["items"]
        .as_array()
        .map(|items| items.iter().filter_map(|i| i["kind"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(
        kinds,
        ["ChangeSet", "DeploymentApproval", "DeploymentApproval"],
        "{json}"
    );
    let mine = stdout(&countersign(User::Alice, ns, &["list", "--mine"])?);
    assert!(mine.contains(&set), "{mine}");
    let carols = stdout(&countersign(User::Carol, ns, &["list", "--mine"])?);
    assert!(
        carols.contains("No requests you can approve now"),
        "{carols}"
    );

    // status of the set: its members, its levels, who approves next.
    let status = countersign(User::Carol, ns, &["status", &set])?;
    assert_eq!(exit_code(&status), Some(0), "{}", text(&status));
    let said = stdout(&status);
    for expected in [
        format!("{ns}/{set}: Pending"),
        "change set: 2 requests, reviewed as one".to_string(),
        "requested:  by dave".to_string(),
        "Members (2 Pending; each admitted only with its own digest):".to_string(),
        format!("1. {}: Deployment/web, Pending", members[0]),
        format!("2. {}: Deployment/api, Pending", members[1]),
        "1. leads [open] 0 of 1".to_string(),
        format!(
            "Next: waiting for 1 of group:team-leads: kubectl countersign approve {set} -n {ns}"
        ),
        "You:  carol (your approval would not count now)".to_string(),
    ] {
        assert!(said.contains(&expected), "{expected:?}: {said}");
    }
    assert!(!said.contains("UNVERIFIED"), "{said}");
    // … and of a member: it belongs to the set, whose approval alice may give.
    let member = stdout(&countersign(User::Alice, ns, &["status", &members[0]])?);
    for expected in [
        format!("change set: {set} (reviewed as one"),
        format!("Reviews: on change set {set}"),
        format!("you may approve its change set now: kubectl countersign approve {set} -n {ns}"),
    ] {
        assert!(member.contains(&expected), "{expected:?}: {member}");
    }

    // A member's review is refused before anything is patched, naming the set; the
    // webhook refuses one appended by hand as well.
    let refused = countersign(User::Alice, ns, &["approve", &members[0]])?;
    assert_eq!(exit_code(&refused), Some(1), "{}", text(&refused));
    assert!(
        text(&refused).contains(&format!(
            "belongs to change set {set}, which is reviewed as one: review the set (kubectl countersign approve {set} -n {ns})"
        )),
        "{}",
        text(&refused)
    );
    assert_refused(
        &review(
            User::Alice,
            ns,
            &members[0],
            json!({ "decision": "Approve" }),
        )?,
        &set,
    );

    // alice approves the set with the CLI; carol with a plain kubectl patch of its reviews.
    let approved = countersign(User::Alice, ns, &["approve", &format!("cset/{set}")])?;
    assert_eq!(exit_code(&approved), Some(0), "{}", text(&approved));
    assert!(
        stdout(&approved).contains(&format!("Approved {ns}/{set} as alice."))
            && stdout(&approved).contains("Now at level sre 0/1, waiting for 1 of group:sre."),
        "{}",
        text(&approved)
    );
    let patch =
        json!([{ "op": "add", "path": "/spec/reviews/-", "value": { "decision": "Approve" } }]);
    assert_ok(&kubectl(
        User::Carol,
        &[
            "patch",
            "changeset",
            &set,
            "-n",
            ns,
            "--type=json",
            "-p",
            &patch.to_string(),
        ],
    )?);
    members_until(ns, &members, ApprovalPhase::Approved).await?;
    let stored = Api::<ChangeSet>::namespaced(admin.clone(), ns)
        .get(&set)
        .await?;
    let reviewers: Vec<&str> = stored
        .spec
        .reviews
        .iter()
        .map(|r| r.user.as_str())
        .collect();
    assert_eq!(reviewers, ["alice", "carol"]);
    // The set's own status follows its members' (each is reconciled on its own): wait.
    set_status_until(ns, &set, &["Next: approved: apply the manifest again"]).await?;

    // The manifest applied: both admitted, each with its own digest.
    let applied = until(
        "the approved manifest admitted",
        Duration::from_secs(20),
        || async {
            let out = kubectl(User::Dave, &["apply", "-f", &path.to_string_lossy()])?;
            Ok(if out.status.success() {
                Poll::Ready(out)
            } else {
                Poll::Pending(text(&out))
            })
        },
    )
    .await?;
    assert_ok(&applied);
    members_until(ns, &members, ApprovalPhase::Deploying).await?;
    let listed = until_listed(User::Alice, ns, &[&set, "the rollout"]).await?;
    assert!(listed.contains("Deploying"), "{listed}");
    set_status_until(
        ns,
        &set,
        &[
            "Members (2 Deploying;",
            "Next: every change admitted; countersign is watching the rollouts",
        ],
    )
    .await?;
    let _ = std::fs::remove_dir_all(path.parent().unwrap_or(&path));
    Ok(())
}

#[tokio::test]
async fn one_rejection_of_a_set_rejects_every_member() -> Result<()> {
    Countersign::get();
    let ns = TestNamespace::create("cset-reject", None).await?;
    let ns = ns.name();
    let _policy = Policy::apply(ns, two_level_chain())?;
    let web = deployment(ns, "web", "nginx:1.29");
    let api = deployment(ns, "api", "nginx:1.29");
    let path = manifest(ns, &[&web, &api])?;
    until_gated(&web).await?;
    // As JSON: the requests, then the set.
    let out = request_until(ns, &path, &["-o", "json"], "\"kind\": \"ChangeSet\"").await?;
    let opened: Value = serde_json::from_slice(&out.stdout)?;
    let items = opened["items"].as_array().cloned().unwrap_or_default();
    let kinds: Vec<&str> = items.iter().filter_map(|i| i["kind"].as_str()).collect();
    assert_eq!(
        kinds,
        ["DeploymentApproval", "DeploymentApproval", "ChangeSet"],
        "{opened}"
    );
    let set = items[2]["metadata"]["name"]
        .as_str()
        .ok_or_else(|| anyhow!("no set name in {opened}"))?
        .to_string();
    let members: Vec<String> = approvals(ns)
        .await?
        .into_iter()
        .filter_map(|a| a.metadata.name)
        .collect();
    assert_eq!(members.len(), 2, "{members:?}");

    let refused = countersign(
        User::Alice,
        ns,
        &["reject", &members[1], "--comment", "not now"],
    )?;
    assert_eq!(exit_code(&refused), Some(1), "{}", text(&refused));
    assert!(
        text(&refused).contains(&format!(
            "kubectl countersign reject {set} -n {ns} --comment"
        )),
        "{}",
        text(&refused)
    );
    let rejected = countersign(
        User::Alice,
        ns,
        &["reject", &set, "--comment", "not during the sale"],
    )?;
    assert_eq!(exit_code(&rejected), Some(0), "{}", text(&rejected));
    let said = stdout(&rejected);
    assert!(
        said.contains(&format!("Rejected {ns}/{set} as alice."))
            && said.contains("Next: rejected, and every member with it"),
        "{said}"
    );
    members_until(ns, &members, ApprovalPhase::Rejected).await?;
    let out = apply(User::Dave, &web, &[])?;
    assert_refused(&out, "rejected");
    let _ = std::fs::remove_dir_all(path.parent().unwrap_or(&path));
    Ok(())
}

/// The request a dry run proposes for `object`, opened by dave himself (as `request -f`
/// does) as a member of set `set`.
async fn open_member(ns: &str, object: &Value, set: &str) -> Result<DeploymentApproval> {
    let (name, mut spec) = proposal_of(ns, object).await?;
    spec.change_set = Some(set.into());
    let mut request = DeploymentApproval::new(&name, spec);
    request.metadata.namespace = Some(ns.into());
    request.metadata.labels = Some([(SET_LABEL.to_string(), set.to_string())].into());
    let dave = TestCluster::get().client(User::Dave).await?;
    Ok(Api::<DeploymentApproval>::namespaced(dave, ns)
        .create(&Default::default(), &request)
        .await?)
}

/// ChangeSet `name` over `members` as `requester` asks now, as JSON to create.
fn set_object(
    ns: &str,
    name: &str,
    members: &[DeploymentApproval],
    requester: &str,
) -> Result<Value> {
    let listed: Vec<(String, &countersign::api::DeploymentApprovalSpec)> = members
        .iter()
        .map(|m| (m.metadata.name.clone().unwrap_or_default(), &m.spec))
        .collect();
    let mut by = members[0].spec.change.requester.clone();
    by.username = requester.into();
    let spec =
        set_spec(&listed, &by, jiff::Timestamp::now()).ok_or_else(|| anyhow!("no members"))?;
    Ok(json!({
        "apiVersion": "countersign.dev/v1alpha1", "kind": "ChangeSet",
        "metadata": { "name": name, "namespace": ns },
        "spec": serde_json::to_value(spec)?,
    }))
}

#[tokio::test]
async fn a_set_of_someone_elses_requests_or_with_a_digest_of_its_own_is_refused() -> Result<()> {
    Countersign::get();
    let ns = TestNamespace::create("cset-forged", None).await?;
    let ns = ns.name();
    // erin may create sets here too (a second deployer).
    assert_ok(&kubectl(
        User::Admin,
        &[
            "create",
            "rolebinding",
            "erin-edit",
            "--clusterrole=edit",
            "--user=erin",
            "-n",
            ns,
        ],
    )?);
    let _policy = Policy::apply(ns, two_level_chain())?;
    let web = deployment(ns, "web", "nginx:1.30");
    let api = deployment(ns, "api", "nginx:1.30");
    let path = manifest(ns, &[&web, &api])?;
    until_gated(&web).await?;
    // dave's requests, naming the set `request -f` would make of them, which is not there
    // yet (as after a run interrupted between the requests and the set). Its name comes
    // from the requests' names and digests, which their dry runs propose.
    let mut proposed = Vec::new();
    for object in [&web, &api] {
        proposed.push(proposal_of(ns, object).await?);
    }
    let listed: Vec<(String, &countersign::api::DeploymentApprovalSpec)> =
        proposed.iter().map(|(n, s)| (n.clone(), s)).collect();
    let requester = proposed[0].1.change.requester.clone();
    let spec = set_spec(&listed, &requester, jiff::Timestamp::now())
        .ok_or_else(|| anyhow!("no members"))?;
    let name = set_name("release", &spec.change.digest);
    let mut members = Vec::new();
    for object in [&web, &api] {
        members.push(open_member(ns, object, &name).await?);
    }

    // erin makes a set of dave's requests: in dave's name, or in her own.
    let forged = set_object(ns, &name, &members, "dave")?;
    assert_refused(
        &kubectl_stdin(User::Erin, &["create", "-f", "-"], &forged)?,
        "a set must be your own",
    );
    let hers = set_object(ns, &name, &members, "erin")?;
    assert_refused(
        &kubectl_stdin(User::Erin, &["create", "-f", "-"], &hers)?,
        "was requested by dave, not by the set's requester",
    );
    // dave makes it with a digest of his own.
    let mut wrong = set_object(ns, &name, &members, "dave")?;
    wrong["spec"]["change"]["digest"] = json!(format!("sha256:{}", "0".repeat(64)));
    assert_refused(
        &kubectl_stdin(User::Dave, &["create", "-f", "-"], &wrong)?,
        "is not the digest of spec.members",
    );
    // erin asking for the same changes opens nothing, and does not finish dave's set.
    let out = countersign(User::Erin, ns, &["request", "-f", &path.to_string_lossy()])?;
    assert_eq!(exit_code(&out), Some(0), "{}", text(&out));
    assert!(
        stdout(&out).contains(&format!("in change set {name}"))
            && !stdout(&out).contains("Change set"),
        "{}",
        text(&out)
    );
    // dave requesting the manifest again finishes the set his requests name.
    let out = countersign(User::Dave, ns, &["request", "-f", &path.to_string_lossy()])?;
    assert_eq!(exit_code(&out), Some(0), "{}", text(&out));
    assert!(
        stdout(&out).contains(&format!("Change set {ns}/{name}: opened for 2 requests")),
        "{}",
        text(&out)
    );
    let admin = TestCluster::get().client(User::Admin).await?;
    let made = Api::<ChangeSet>::namespaced(admin, ns).get(&name).await?;
    assert_eq!(made.spec.change.requester.username, "dave");
    // countersign finds its summary its own: the members' sealed ones.
    let said = until(
        "the set's summary checked",
        Duration::from_secs(20),
        || async {
            let out = countersign(User::Alice, ns, &["status", &name])?;
            let said = stdout(&out);
            Ok(
                if said.contains("has not checked") || !out.status.success() {
                    Poll::Pending(text(&out))
                } else {
                    Poll::Ready(said)
                },
            )
        },
    )
    .await?;
    assert!(!said.contains("UNVERIFIED"), "{said}");
    let _ = std::fs::remove_dir_all(path.parent().unwrap_or(&path));
    Ok(())
}

/// The request name and spec a dry run as dave proposes for `object`.
async fn proposal_of(
    ns: &str,
    object: &Value,
) -> Result<(String, countersign::api::DeploymentApprovalSpec)> {
    let dave = TestCluster::get().client(User::Dave).await?;
    let resource = kube::api::ApiResource::erase::<k8s_openapi::api::apps::v1::Deployment>(&());
    let deployments: Api<DynamicObject> = Api::namespaced_with(dave, ns, &resource);
    let name = object["metadata"]["name"].as_str().unwrap_or_default();
    let denial = match deployments
        .patch(
            name,
            &PatchParams::apply("test").force().dry_run(),
            &Patch::Apply(object),
        )
        .await
    {
        Err(kube::Error::Api(status)) => status,
        other => anyhow::bail!("the dry run was not denied: {other:?}"),
    };
    let proposal: Value = denial
        .details
        .as_ref()
        .and_then(|d| {
            d.causes
                .iter()
                .find(|c| c.reason == "countersign.dev/request")
        })
        .map(|cause| serde_json::from_str(&cause.message))
        .transpose()?
        .ok_or_else(|| anyhow!("no proposal in {denial:?}"))?;
    let name = proposal["open"]["name"]
        .as_str()
        .ok_or_else(|| anyhow!("no name in {proposal}"))?
        .to_string();
    Ok((
        name,
        serde_json::from_value(proposal["open"]["spec"].clone())?,
    ))
}
