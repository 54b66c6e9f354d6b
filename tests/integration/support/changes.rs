//! A flow of many changes for the fault tests (tests/faults.rs, tests/chart_on_node.rs):
//! Deployments `web-0…` in one namespace, each changed once through the whole path
//! (dave's apply opens a request, alice approves it, dave's apply is admitted, the operator
//! sees it Deployed), several at once, every step retried until it holds, as a pipeline and
//! an approver would while something fails underneath. Then [`count`] checks what must
//! hold whatever failed: one request per change, each Deployed, each Deployment changed
//! once, and each step in the trail exactly once.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use serde_json::{Value, json};

use super::User;
use super::flow::text;
use super::local::kubectl;

/// Steps of one change: request, review, admission, rollout.
pub const STEPS: usize = 4;
/// How long one step may take, a fault included.
pub const STEP_LIMIT: Duration = Duration::from_secs(180);

/// Deployment `web-<i>` of `ns` at nginx `version`.
pub fn web(ns: &str, i: usize, version: &str) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": { "name": format!("web-{i}"), "namespace": ns },
        "spec": { "replicas": 1, "selector": { "matchLabels": { "app": format!("web-{i}") } },
            "template": { "metadata": { "labels": { "app": format!("web-{i}") } },
                "spec": { "containers": [{ "name": "web", "image": format!("nginx:{version}") }] } } },
    })
}

/// The flow's Deployments at their first version (made before the policy, so ungated), and
/// policy `policy` (alice approves every change in `ns`), Ready.
pub fn prepare(ns: &str, changes: usize, policy: &str) -> Result<()> {
    // Retried: a countersign just installed may not answer yet (its CA bundle on its way
    // into the configurations, its endpoints not ready).
    let applied = |what: String, object: &Value| {
        until(&what, || {
            let out = kubectl(User::Admin, &["apply", "-f", "-"], Some(object))?;
            Ok(out.status.success().then_some(()))
        })
    };
    for i in 0..changes {
        applied(format!("web-{i}"), &web(ns, i, "1.26"))?;
    }
    let policy = json!({
        "apiVersion": "countersign.dev/v1alpha1", "kind": "ApprovalPolicy",
        "metadata": { "name": policy },
        "spec": { "match": { "namespaces": [ns] },
            "approval": { "levels": [{ "name": "leads", "approvers": [{ "user": "alice" }] }] } },
    });
    applied("the policy".into(), &policy)?;
    let ready = kubectl(
        User::Admin,
        &[
            "wait",
            "--for=condition=Ready",
            &format!(
                "approvalpolicy/{}",
                policy["metadata"]["name"].as_str().unwrap_or_default()
            ),
            "--timeout=60s",
        ],
        None,
    )?;
    ensure!(ready.status.success(), "{}", text(&ready));
    Ok(())
}

/// A flow under way: `workers` threads, each taking every `workers`-th change.
pub struct Flow {
    changes: usize,
    progress: Arc<AtomicUsize>,
    /// No worker starts a step once this many are done ([`Flow::hold_at`]).
    hold: Arc<AtomicUsize>,
    workers: Vec<JoinHandle<Result<Vec<String>>>>,
}

impl Flow {
    /// Starts changing `web-0…web-<changes-1>` of `ns` (made by [`prepare`]).
    pub fn start(ns: &str, changes: usize, workers: usize) -> Flow {
        let progress = Arc::new(AtomicUsize::new(0));
        let hold = Arc::new(AtomicUsize::new(usize::MAX));
        let workers = (0..workers)
            .map(|worker| {
                let (ns, progress, hold) = (ns.to_string(), progress.clone(), hold.clone());
                std::thread::spawn(move || -> Result<Vec<String>> {
                    let steps = Steps {
                        progress: &progress,
                        hold: &hold,
                    };
                    (worker..changes)
                        .step_by(workers)
                        .map(|i| change(&ns, i, &steps))
                        .collect()
                })
            })
            .collect();
        Flow {
            changes,
            progress,
            hold,
            workers,
        }
    }

    /// Lets no worker start a step once `step` steps are done (those under way finish), so
    /// a test's next fault still lands within the flow however long the last one took to
    /// recover from. Dropping the flow releases it.
    pub fn hold_at(&self, step: usize) {
        self.hold.store(step, Ordering::SeqCst);
    }

    /// Steps done so far, of [`Flow::steps`].
    pub fn done(&self) -> usize {
        self.progress.load(Ordering::SeqCst)
    }

    /// Steps in the whole flow.
    pub fn steps(&self) -> usize {
        self.changes * STEPS
    }

    /// Whether every worker has ended (done, or failed).
    pub fn ended(&self) -> bool {
        self.workers.iter().all(JoinHandle::is_finished)
    }

    /// Waits until `step` steps are done (a worker's failure ends the wait early).
    pub fn until_step(&self, step: usize, limit: Duration) -> Result<()> {
        let started = Instant::now();
        while self.done() < step && !self.ended() {
            ensure!(
                started.elapsed() < limit,
                "the flow is at step {} of {}, not {step}, after {limit:?}",
                self.done(),
                self.steps()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// Waits for every change; the requests' names.
    pub fn finish(mut self) -> Result<Vec<String>> {
        self.hold_at(usize::MAX);
        let mut requests = Vec::new();
        for worker in std::mem::take(&mut self.workers) {
            let done = worker
                .join()
                .map_err(|_| anyhow::anyhow!("a worker panicked"))??;
            requests.extend(done);
        }
        Ok(requests)
    }
}

impl Drop for Flow {
    /// Workers held back finish on their own rather than wait for ever.
    fn drop(&mut self) {
        self.hold_at(usize::MAX);
    }
}

/// A worker's view of the flow's steps: counts them, and waits while the flow is held.
struct Steps<'a> {
    progress: &'a AtomicUsize,
    hold: &'a AtomicUsize,
}

impl Steps<'_> {
    fn wait_until_free(&self) {
        while self.progress.load(Ordering::SeqCst) >= self.hold.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn done(&self) {
        self.progress.fetch_add(1, Ordering::SeqCst);
    }

    /// A step done, and the next one started once the flow lets it.
    fn done_and_wait(&self) {
        self.done();
        self.wait_until_free();
    }
}

/// One change, each step retried until it holds (an API server or webhook away answers
/// with errors meanwhile); the request's name.
fn change(ns: &str, i: usize, steps: &Steps) -> Result<String> {
    let v2 = web(ns, i, "1.27");
    steps.wait_until_free();
    let name = until(&format!("web-{i}: the request"), || {
        let out = kubectl(User::Dave, &["apply", "-f", "-"], Some(&v2))?;
        let said = text(&out);
        ensure!(
            !out.status.success(),
            "web-{i} admitted before approval: {said}"
        );
        Ok(request_named(&said))
    })?;
    steps.done_and_wait();
    // A review whose answer was lost is sent again, as a careful approver would after an
    // error. One already recorded is refused ("already reviewed", or "reviews are closed"
    // once it approved the request), so the request itself says whether it holds hers.
    let review = json!([{ "op": "add", "path": "/spec/reviews/-",
        "value": { "decision": "Approve" } }])
    .to_string();
    until(&format!("{name}: alice's review"), || {
        let out = kubectl(
            User::Alice,
            &[
                "patch",
                "deploymentapproval",
                &name,
                "-n",
                ns,
                "--type=json",
                "-p",
                &review,
            ],
            None,
        )?;
        Ok((out.status.success() || reviewed_by(ns, &name, "alice")?).then_some(()))
    })?;
    steps.done_and_wait();
    until(&format!("{name}: the admission"), || {
        let out = kubectl(User::Dave, &["apply", "-f", "-"], Some(&v2))?;
        Ok(out.status.success().then_some(()))
    })?;
    steps.done_and_wait();
    until(&format!("{name}: Deployed"), || {
        Ok((phase(ns, &name)? == "Deployed").then_some(()))
    })?;
    steps.done();
    Ok(name)
}

/// The request a denial names: on the attempt that opened it ("approve with: kubectl
/// countersign approve NAME"), or on a later one ("approval NAME is pending"), when the
/// attempt that opened it got no answer (the replica was killed after the write).
fn request_named(said: &str) -> Option<String> {
    let opened = said
        .split("kubectl countersign approve ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next());
    let pending = said
        .split("approval ")
        .find_map(|rest| rest.split_once(" is pending"))
        .map(|(name, _)| name)
        .filter(|name| !name.contains(char::is_whitespace));
    opened.or(pending).map(str::to_string)
}

/// Calls `step` until it gives a value, up to [`STEP_LIMIT`]; an error of the step itself
/// (kubectl could not run, a change admitted unapproved) ends the wait.
fn until<T>(what: &str, mut step: impl FnMut() -> Result<Option<T>>) -> Result<T> {
    let started = Instant::now();
    loop {
        if let Some(value) = step()? {
            return Ok(value);
        }
        ensure!(
            started.elapsed() < STEP_LIMIT,
            "{what}: not within {STEP_LIMIT:?}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// Does request `name` hold a review by `user` (false while it cannot be read)?
fn reviewed_by(ns: &str, name: &str, user: &str) -> Result<bool> {
    Ok(read_request(ns, name, "{.spec.reviews[*].user}")?
        .split_whitespace()
        .any(|reviewer| reviewer == user))
}

/// Request `name`'s phase ("" while it cannot be read).
fn phase(ns: &str, name: &str) -> Result<String> {
    read_request(ns, name, "{.status.phase}")
}

/// Request `name`'s fields at `jsonpath`, read as the admin ("" while it cannot be read).
fn read_request(ns: &str, name: &str, jsonpath: &str) -> Result<String> {
    let out = kubectl(
        User::Admin,
        &[
            "get",
            "deploymentapproval",
            name,
            "-n",
            ns,
            "-o",
            &format!("jsonpath={jsonpath}"),
        ],
        None,
    )?;
    Ok(if out.status.success() {
        String::from_utf8_lossy(&out.stdout).into_owned()
    } else {
        String::new()
    })
}

/// What a flow left, counted by [`count`].
#[derive(Debug)]
pub struct Counts {
    pub requests: usize,
    pub entries: usize,
    /// Admissions beyond the first: an admitted write the fault cut off before it reached
    /// the object, admitted again once the approval went back to Approved.
    pub readmitted: u64,
}

impl fmt::Display for Counts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} requests Deployed, {} AuditEntries (0 lost, 0 repeated), 0 changes admitted twice, {} re-admissions of writes cut off",
            self.requests, self.entries, self.readmitted
        )
    }
}

/// The counts over the flow's `requests` in `ns`, the trail read in `install`: one request
/// per change, each Deployed; each Deployment at the approved image one generation on (its
/// change applied once); each step in the trail exactly once. An error names what differs.
pub fn count(ns: &str, install: &str, changes: usize, requests: &[String]) -> Result<Counts> {
    ensure!(requests.len() == changes, "{} requests", requests.len());
    let listed = kubectl(
        User::Admin,
        &["get", "deploymentapprovals", "-n", ns, "-o", "json"],
        None,
    )?;
    ensure!(listed.status.success(), "{}", text(&listed));
    let listed: Value = serde_json::from_slice(&listed.stdout)?;
    let items = listed["items"].as_array().cloned().unwrap_or_default();
    ensure!(
        items.len() == changes,
        "{} requests for {changes} changes (a change asked twice?)",
        items.len()
    );
    let mut readmitted = 0;
    for item in &items {
        let name = item["metadata"]["name"].as_str().unwrap_or_default();
        ensure!(
            item["status"]["phase"] == "Deployed",
            "{name} ended {}",
            item["status"]["phase"]
        );
        let admissions = item["status"]["rollout"]["admissions"]
            .as_u64()
            .unwrap_or(0);
        ensure!(admissions >= 1, "{name}: no admission counted");
        readmitted += admissions - 1;
    }
    for i in 0..changes {
        let out = kubectl(
            User::Admin,
            &[
                "get",
                "deployment",
                &format!("web-{i}"),
                "-n",
                ns,
                "-o",
                "json",
            ],
            None,
        )?;
        let deployment: Value = serde_json::from_slice(&out.stdout)?;
        let image = &deployment["spec"]["template"]["spec"]["containers"][0]["image"];
        ensure!(
            image == "nginx:1.27" && deployment["metadata"]["generation"] == 2,
            "web-{i}: {image} at generation {}",
            deployment["metadata"]["generation"]
        );
    }
    let expected: Vec<(String, String)> = [
        ("Admitted", "dave"),
        ("Approved", "alice"),
        ("Deployed", "system:countersign"),
        ("LevelSatisfied", "alice"),
        ("Requested", "dave"),
        ("ReviewRecorded", "alice"),
    ]
    .iter()
    .map(|(a, u)| (a.to_string(), u.to_string()))
    .collect();
    // The last entries are written just after the phase they follow: wait for them.
    let started = Instant::now();
    let entries = loop {
        let trail = trail_steps(install, ns)?;
        let differing: Vec<(&String, Vec<(String, String)>)> = requests
            .iter()
            .map(|name| (name, trail.get(name).cloned().unwrap_or_default()))
            .filter(|(_, steps)| *steps != expected)
            .collect();
        if differing.is_empty() {
            break trail.values().map(Vec::len).sum::<usize>();
        }
        let repeated = differing.iter().find(|(_, steps)| {
            let mut distinct = steps.clone();
            distinct.dedup();
            distinct.len() < steps.len() || steps.iter().any(|s| !expected.contains(s))
        });
        ensure!(
            repeated.is_none() && started.elapsed() < Duration::from_secs(60),
            "not each step once ({expected:?}): {:?}",
            repeated.unwrap_or(&differing[0])
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    Ok(Counts {
        requests: items.len(),
        entries,
        readmitted,
    })
}

/// The trail in `install` of requests in `ns`: request name → its (action, actor), sorted.
fn trail_steps(install: &str, ns: &str) -> Result<HashMap<String, Vec<(String, String)>>> {
    let listed = kubectl(
        User::Admin,
        &["get", "auditentries", "-n", install, "-o", "json"],
        None,
    )?;
    ensure!(listed.status.success(), "{}", text(&listed));
    let listed: Value = serde_json::from_slice(&listed.stdout)?;
    let mut trail: HashMap<String, Vec<(String, String)>> = HashMap::new();
    for entry in listed["items"].as_array().into_iter().flatten() {
        let spec = &entry["spec"];
        let (Some(request), true) = (spec["approval"].as_str(), spec["target"]["namespace"] == ns)
        else {
            continue;
        };
        trail.entry(request.to_string()).or_default().push((
            spec["action"].as_str().unwrap_or_default().to_string(),
            spec["actor"]["username"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        ));
    }
    for steps in trail.values_mut() {
        steps.sort();
    }
    Ok(trail)
}
