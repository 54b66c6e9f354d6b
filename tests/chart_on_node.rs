//! The chart in the cluster, on the real node (issue 23): `helm install` with its defaults
//! (self-managed TLS) and the image tests/image/build made, loaded into the node that runs
//! real containers (`COUNTERSIGN_REAL_NODE=1 tests/cluster/up`). It must:
//! - run two Pods Ready, as 65532 on a read-only root (read off the running processes), one
//!   of them leading;
//! - be reached by the API server through its Service: a gated change denied, approved by
//!   users with the CLI, then admitted and rolled out;
//! - when the leader's Pod is deleted, have the other lead within the lease time, and admit
//!   no unapproved change meanwhile;
//! - hold its PodDisruptionBudget through `kubectl drain`;
//! - roll on `helm upgrade` with every admission meanwhile answered;
//! - and leave on `helm uninstall` what docs/install.md says.
//!
//! Beside it, a second real node on the machine is refused and the running one left alone.
//!
//! Needs the real node and the image (`COUNTERSIGN_IMAGE_ENV`, tests/image/build's
//! image.env); without either it says so and passes, unless `COUNTERSIGN_REQUIRE_REAL_NODE=1`
//! (tests/run sets it), where it fails. Its own test binary: it owns the webhook
//! configurations `countersign` while it runs.

#[path = "integration/support/mod.rs"]
#[allow(dead_code)]
mod support;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use k8s_openapi::api::apps::v1::Deployment;
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::{Value, json};

use support::flow::text;
use support::namespace::unique_name;
use support::{TestCluster, TestNamespace, User};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn kubectl(user: User, args: &[&str], stdin: Option<&Value>) -> Result<Output> {
    let input = stdin.map(|v| v.to_string());
    TestCluster::get().kubectl_output(user, args, input.as_deref().map(str::as_bytes))
}

fn kubectl_ok(user: User, args: &[&str], stdin: Option<&Value>) -> Result<String> {
    let out = kubectl(user, args, stdin)?;
    ensure!(
        out.status.success(),
        "kubectl {}: {}",
        args.join(" "),
        text(&out)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn kubectl_json(args: &[&str]) -> Result<Value> {
    let mut all = args.to_vec();
    all.extend(["-o", "json"]);
    let out = kubectl_ok(User::Admin, &all, None)?;
    serde_json::from_str(&out).with_context(|| format!("kubectl {}: not JSON", args.join(" ")))
}

fn helm(args: &[&str]) -> Result<Output> {
    Command::new(root().join("tests/chart/helm"))
        .args(args)
        .arg("--kubeconfig")
        .arg(TestCluster::get().kubeconfig())
        .output()
        .context("running tests/chart/helm")
}

/// `countersign ARGS` as `user`, the CLI a person runs.
fn countersign(user: User, namespace: &str, args: &[&str]) -> Result<Output> {
    support::flow::countersign(user, namespace, args)
}

/// Polls `probe` every 300 ms until it gives a value, for up to `limit`.
fn until<T>(
    what: &str,
    limit: Duration,
    mut probe: impl FnMut() -> Result<Result<T, String>>,
) -> Result<T> {
    let started = Instant::now();
    loop {
        match probe()? {
            Ok(value) => return Ok(value),
            Err(last) if started.elapsed() > limit => bail!("{what}: not after {limit:?}: {last}"),
            Err(_) => std::thread::sleep(Duration::from_millis(300)),
        }
    }
}

/// What this test needs beyond the cluster: the real node and the image to run on it.
struct NodeAndImage {
    node: String,
    ctr: PathBuf,
    containerd: String,
    repository: String,
    tag: String,
    archive: PathBuf,
}

impl NodeAndImage {
    /// The real node and image, or why there are none (an error when they are required).
    fn find() -> Result<Option<NodeAndImage>> {
        let required = std::env::var("COUNTERSIGN_REQUIRE_REAL_NODE").as_deref() == Ok("1");
        let cluster = TestCluster::get();
        let missing = |why: String| -> Result<Option<NodeAndImage>> {
            if required {
                bail!("{why} (COUNTERSIGN_REQUIRE_REAL_NODE=1)");
            }
            eprintln!("skipped: {why}");
            Ok(None)
        };
        let Some(node) = cluster.env_value("REAL_NODE") else {
            return missing(
                "the test cluster has no real node: start it with COUNTERSIGN_REAL_NODE=1 tests/cluster/up".into(),
            );
        };
        let Ok(image_env) = std::env::var("COUNTERSIGN_IMAGE_ENV") else {
            return missing(
                "no image: set COUNTERSIGN_IMAGE_ENV to tests/image/build's image.env".into(),
            );
        };
        let image: HashMap<String, String> = support::cluster::parse_env(
            &std::fs::read_to_string(&image_env).with_context(|| format!("reading {image_env}"))?,
        );
        let reference = image.get("IMAGE").context("image.env has no IMAGE")?;
        let (repository, tag) = reference
            .rsplit_once(':')
            .with_context(|| format!("IMAGE {reference} has no tag"))?;
        let field = |key: &str| -> Result<String> {
            cluster
                .env_value(key)
                .map(str::to_string)
                .with_context(|| format!("cluster.env has no {key}"))
        };
        Ok(Some(NodeAndImage {
            node: node.to_string(),
            ctr: PathBuf::from(field("REAL_NODE_BIN")?).join("ctr"),
            containerd: field("CONTAINERD_ADDRESS")?,
            repository: repository.to_string(),
            tag: tag.to_string(),
            archive: PathBuf::from(image.get("ARCHIVE").context("image.env has no ARCHIVE")?),
        }))
    }

    fn load(&self) -> Result<()> {
        let state = TestCluster::get()
            .env_value("COUNTERSIGN_CLUSTER_DIR")
            .context("cluster.env has no COUNTERSIGN_CLUSTER_DIR")?;
        let out = Command::new(root().join("tests/cluster/load-image"))
            .arg(state)
            .arg(&self.archive)
            .output()?;
        ensure!(out.status.success(), "load-image: {}", text(&out));
        let loaded = String::from_utf8_lossy(&out.stdout);
        let reference = format!("{}:{}", self.repository, self.tag);
        ensure!(
            loaded.lines().any(|line| line.trim() == reference),
            "load-image did not load {reference}: {loaded}"
        );
        Ok(())
    }

    /// The host pid of a running container (`containerd://ID` from a Pod's status).
    fn container_pid(&self, container_id: &str) -> Result<u32> {
        let id = container_id
            .strip_prefix("containerd://")
            .with_context(|| format!("not a containerd container: {container_id}"))?;
        let out = Command::new(&self.ctr)
            .args(["--address", &self.containerd, "-n", "k8s.io", "tasks", "ls"])
            .output()?;
        ensure!(out.status.success(), "ctr tasks ls: {}", text(&out));
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .find_map(|line| {
                let mut fields = line.split_whitespace();
                (fields.next() == Some(id)).then(|| fields.next()?.parse().ok())?
            })
            .with_context(|| format!("no running task {id} on the node"))
    }
}

/// The release, uninstalled and its namespace deleted at the end, also on failure.
struct Release {
    namespace: String,
}

impl Drop for Release {
    fn drop(&mut self) {
        let _ = helm(&[
            "uninstall",
            "countersign",
            "-n",
            &self.namespace,
            "--ignore-not-found",
            "--wait",
        ]);
        let _ = kubectl(
            User::Admin,
            &[
                "delete",
                "namespace",
                &self.namespace,
                "--wait=false",
                "--ignore-not-found",
            ],
            None,
        );
    }
}

const SELECTOR: &str = "app.kubernetes.io/name=countersign";

/// One release at a time: each owns the webhook configurations `countersign`.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The release's Pods that are Ready and not being deleted: name → containerID.
fn ready_pods(namespace: &str) -> Result<HashMap<String, String>> {
    let pods = kubectl_json(&["get", "pods", "-n", namespace, "-l", SELECTOR])?;
    let mut ready = HashMap::new();
    for pod in pods["items"].as_array().into_iter().flatten() {
        let is_ready = pod["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Ready" && c["status"] == "True");
        if is_ready && pod["metadata"]["deletionTimestamp"].is_null() {
            ready.insert(
                pod["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                pod["status"]["containerStatuses"][0]["containerID"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            );
        }
    }
    Ok(ready)
}

fn two_ready(namespace: &str, limit: Duration) -> Result<HashMap<String, String>> {
    until("two Pods Ready", limit, || {
        let ready = ready_pods(namespace)?;
        Ok(if ready.len() == 2 {
            Ok(ready)
        } else {
            let pods = kubectl(
                User::Admin,
                &["get", "pods", "-n", namespace, "-o", "wide"],
                None,
            )?;
            Err(text(&pods))
        })
    })
}

/// The holder of the operator's Lease, and its duration in seconds.
fn leader(namespace: &str) -> Result<Option<(String, u64)>> {
    let out = kubectl(
        User::Admin,
        &[
            "get",
            "lease",
            "countersign-operator",
            "-n",
            namespace,
            "-o",
            "json",
        ],
        None,
    )?;
    if !out.status.success() {
        return Ok(None);
    }
    let lease: Value = serde_json::from_slice(&out.stdout)?;
    Ok(lease["spec"]["holderIdentity"]
        .as_str()
        .filter(|h| !h.is_empty())
        .map(|holder| {
            (
                holder.to_string(),
                lease["spec"]["leaseDurationSeconds"].as_u64().unwrap_or(15),
            )
        }))
}

/// A Deployment that only kwok's nodes run (the real node is tainted for countersign).
fn web(namespace: &str, image: &str) -> Value {
    support::flow::rolling_web(namespace, image, 1)
}

/// What an attempt to apply an unapproved change got: countersign's denial, an admission,
/// or anything else (the API server failing to call the webhook).
#[derive(Debug, PartialEq)]
enum Attempt {
    Denied,
    Admitted,
    Other(String),
}

fn attempt(change: &Value) -> Result<Attempt> {
    let out = kubectl(
        User::Dave,
        &["apply", "--dry-run=server", "-f", "-"],
        Some(change),
    )?;
    let said = text(&out);
    Ok(if out.status.success() {
        Attempt::Admitted
    } else if said.contains("approval required") {
        Attempt::Denied
    } else {
        Attempt::Other(said)
    })
}

/// Tries `change` (unapproved, as dave, a server-side dry run) over and over from several
/// clients at once until told to stop, and keeps every answer: dense enough to land in the
/// moments a replica starts, stops or hands over.
struct Prober {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<Vec<Attempt>>>,
}

const PROBING_CLIENTS: usize = 4;

impl Prober {
    async fn start(change: &Value) -> Result<Prober> {
        let stop = Arc::new(AtomicBool::new(false));
        let deployment: Deployment = serde_json::from_value(change.clone())?;
        let namespace = deployment
            .metadata
            .namespace
            .clone()
            .context("no namespace")?;
        let mut tasks = Vec::new();
        for _ in 0..PROBING_CLIENTS {
            let api = Api::<Deployment>::namespaced(
                TestCluster::get().client(User::Dave).await?,
                &namespace,
            );
            let (stop, deployment) = (stop.clone(), deployment.clone());
            tasks.push(tokio::spawn(async move {
                let mut seen = Vec::new();
                let params = PatchParams::apply("chart-on-node").force().dry_run();
                while !stop.load(Ordering::Relaxed) {
                    let answer = api.patch("web", &params, &Patch::Apply(&deployment)).await;
                    seen.push(match answer {
                        Ok(_) => Attempt::Admitted,
                        Err(kube::Error::Api(status))
                            if status.message.contains("approval required") =>
                        {
                            Attempt::Denied
                        }
                        Err(other) => Attempt::Other(other.to_string()),
                    });
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                seen
            }));
        }
        Ok(Prober { stop, tasks })
    }

    async fn finish(self) -> Result<Vec<Attempt>> {
        self.stop.store(true, Ordering::Relaxed);
        let mut seen = Vec::new();
        for task in self.tasks {
            seen.extend(task.await?);
        }
        Ok(seen)
    }
}

/// How many attempts ended each way.
fn tally(seen: &[Attempt]) -> (usize, usize, usize) {
    let count = |wanted: fn(&Attempt) -> bool| seen.iter().filter(|a| wanted(a)).count();
    (
        count(|a| *a == Attempt::Denied),
        count(|a| *a == Attempt::Admitted),
        count(|a| matches!(a, Attempt::Other(_))),
    )
}

/// `helm install` of the chart into `namespace` with the chart's defaults (self-managed
/// certificates), but for the image, the way onto the real node, and who may call the
/// webhook, which the chart makes one say: countersign authenticates the API server by its
/// client certificate (docs/install.md). The values file it wrote.
fn install(setup: &NodeAndImage, namespace: &str) -> Result<PathBuf> {
    let cluster = TestCluster::get();
    let values_file = std::env::temp_dir().join(format!("{namespace}-values.json"));
    let client_ca = std::fs::read_to_string(cluster.webhook_client_ca())?;
    let client_name = cluster
        .client_auth_args()
        .last()
        .cloned()
        .context("no client name")?;
    let values = json!({
        "image": { "repository": setup.repository, "tag": setup.tag },
        "webhook": { "clientAuth": { "caBundle": client_ca, "names": [client_name] } },
        "deployment": {
            "nodeSelector": { "countersign.dev/real-node": "true" },
            "tolerations": [{ "key": "countersign.dev/real-node", "operator": "Equal",
                "value": "true", "effect": "NoSchedule" }],
        },
    });
    std::fs::write(&values_file, values.to_string())?;
    let chart = root().join("charts/countersign");
    let chart = chart.to_str().context("a UTF-8 path")?;
    let values_arg = values_file.to_str().context("a UTF-8 path")?;
    let installed = helm(&[
        "install",
        "countersign",
        chart,
        "-n",
        namespace,
        "--create-namespace",
        "--take-ownership",
        "--force-conflicts",
        "-f",
        values_arg,
    ])?;
    ensure!(
        installed.status.success(),
        "helm install: {}",
        text(&installed)
    );

    Ok(values_file)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chart_runs_on_a_real_node_and_survives_failover_drain_and_upgrade() -> Result<()> {
    let Some(setup) = NodeAndImage::find()? else {
        return Ok(());
    };
    let _one = ONE_AT_A_TIME.lock().await;
    let cluster = TestCluster::get();
    setup.load()?;

    let namespace = unique_name("chart-node");
    let release = Release {
        namespace: namespace.clone(),
    };
    let values_file = install(&setup, &namespace)?;
    let chart = root().join("charts/countersign");
    let chart = chart.to_str().context("a UTF-8 path")?;
    let values_arg = values_file.to_str().context("a UTF-8 path")?;

    // Two Pods Ready on the real node, each a process of uid 65532 on a read-only root.
    let installed_at = Instant::now();
    let pods = two_ready(&namespace, Duration::from_secs(180))?;
    eprintln!(
        "install: two Pods Ready {:?} after helm install returned",
        installed_at.elapsed()
    );
    // Ready means usable: the moment the Pods are Ready, every webhook already carries the
    // CA that signed the certificate they serve, so the API server can call them (without
    // it, the first write after install failed now and then with "x509: certificate signed
    // by unknown authority").
    let secret = kubectl_json(&["get", "secret", "countersign-webhook-tls", "-n", &namespace])?;
    let ca = &secret["data"]["ca.crt"];
    ensure!(
        ca.as_str().is_some_and(|ca| !ca.is_empty()),
        "no CA in {secret}"
    );
    for kind in [
        "validatingwebhookconfiguration",
        "mutatingwebhookconfiguration",
    ] {
        let configuration = kubectl_json(&["get", kind, "countersign"])?;
        for hook in configuration["webhooks"]
            .as_array()
            .context("no webhooks")?
        {
            ensure!(
                &hook["clientConfig"]["caBundle"] == ca,
                "{kind} webhook {} does not carry the CA yet though the Pods are Ready",
                hook["name"]
            );
        }
    }
    for (pod, container) in &pods {
        let placed = kubectl_json(&["get", "pod", pod, "-n", &namespace])?;
        assert_eq!(
            placed["spec"]["nodeName"],
            setup.node.as_str(),
            "{pod} is not on the real node"
        );
        let pid = setup.container_pid(container)?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let uids = status
            .lines()
            .find(|l| l.starts_with("Uid:"))
            .context("no Uid line")?;
        assert_eq!(
            uids.split_whitespace().skip(1).collect::<Vec<_>>(),
            ["65532"; 4],
            "{pod} runs as {uids}"
        );
        let mounts = std::fs::read_to_string(format!("/proc/{pid}/mountinfo"))?;
        let root_mount = mounts
            .lines()
            .find(|l| l.split_whitespace().nth(4) == Some("/"))
            .context("no root mount")?;
        let options = root_mount.split_whitespace().nth(5).unwrap_or_default();
        assert!(
            options.split(',').any(|o| o == "ro"),
            "{pod}'s root is not read-only: {root_mount}"
        );
        let exe = std::fs::read_link(format!("/proc/{pid}/exe"))?;
        assert_eq!(
            exe,
            Path::new("/usr/local/bin/countersign"),
            "{pod} runs {exe:?}"
        );
    }
    let (first_leader, lease_seconds) = until("a leader", Duration::from_secs(60), || {
        Ok(leader(&namespace)?.ok_or_else(|| "no holder".to_string()))
    })?;
    assert!(
        pods.contains_key(&first_leader),
        "the leader {first_leader} is not one of {pods:?}"
    );

    // The API server calls the webhook through the Service, not a URL.
    let configuration = kubectl_json(&["get", "validatingwebhookconfiguration", "countersign"])?;
    for hook in configuration["webhooks"]
        .as_array()
        .context("no webhooks")?
    {
        assert_eq!(
            hook["clientConfig"]["service"]["name"], "countersign",
            "{hook}"
        );
        assert!(hook["clientConfig"]["url"].is_null(), "{hook}");
    }
    support::countersign::grant_approvers(cluster)?;

    // A gated change: denied, approved by users with the CLI, admitted, rolled out.
    let workloads = TestNamespace::create("chart-node-flow", None).await?;
    let ns = workloads.name().to_string();
    let _policy = support::flow::Policy::apply(&ns, support::flow::two_level_chain())?;
    let change = web(&ns, "nginx:1.27");
    let denied = until("the request opened", Duration::from_secs(60), || {
        let out = kubectl(User::Dave, &["apply", "-f", "-"], Some(&change))?;
        Ok(if text(&out).contains("approval required") {
            Ok(text(&out))
        } else {
            Err(text(&out))
        })
    })?;
    let request = denied
        .split("kubectl countersign approve ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .map(str::to_string)
        .with_context(|| format!("the denial names no request: {denied}"))?;
    for approver in [User::Alice, User::Carol] {
        until("an approval with the CLI", Duration::from_secs(30), || {
            let out = countersign(approver, &ns, &["approve", &request])?;
            Ok(if out.status.success() {
                Ok(())
            } else {
                Err(text(&out))
            })
        })?;
    }
    until(
        "the approved change admitted",
        Duration::from_secs(60),
        || {
            let out = kubectl(User::Dave, &["apply", "-f", "-"], Some(&change))?;
            Ok(if out.status.success() {
                Ok(())
            } else {
                Err(text(&out))
            })
        },
    )?;
    until("Deployed", Duration::from_secs(120), || {
        let phase = kubectl_ok(
            User::Admin,
            &[
                "get",
                "deploymentapproval",
                &request,
                "-n",
                &ns,
                "-o",
                "jsonpath={.status.phase}",
            ],
            None,
        )?;
        Ok(if phase == "Deployed" {
            Ok(())
        } else {
            Err(phase)
        })
    })?;
    let unapproved = web(&ns, "nginx:1.28");
    assert_eq!(attempt(&unapproved)?, Attempt::Denied);

    // The leader's Pod deleted: the other leads within the lease time, and no unapproved
    // change is admitted meanwhile.
    let prober = Prober::start(&unapproved).await?;
    let deleted_at = Instant::now();
    kubectl_ok(
        User::Admin,
        &[
            "delete",
            "pod",
            &first_leader,
            "-n",
            &namespace,
            "--wait=false",
        ],
        None,
    )?;
    let (second_leader, _) = until(
        "another leader",
        Duration::from_secs(lease_seconds + 30),
        || {
            Ok(match leader(&namespace)? {
                Some((holder, seconds)) if holder != first_leader => Ok((holder, seconds)),
                other => Err(format!("{other:?}")),
            })
        },
    )?;
    let took = deleted_at.elapsed();
    eprintln!("failover: {second_leader} leads {took:?} after {first_leader}'s Pod was deleted");
    // Told to stop, the leader hands the Lease over at once (not after its 15 s shutdown
    // delay, nor after the lease runs out).
    assert!(
        took < Duration::from_secs(5).min(Duration::from_secs(lease_seconds)),
        "{second_leader} led {took:?} after the leader's Pod was deleted (lease {lease_seconds}s)"
    );
    let survivors = two_ready(&namespace, Duration::from_secs(120))?;
    let seen = prober.finish().await?;
    eprintln!("failover: {} attempts, {:?}", seen.len(), tally(&seen));
    assert!(
        !seen.contains(&Attempt::Admitted),
        "an unapproved change was admitted: {seen:?}"
    );
    assert!(
        seen.contains(&Attempt::Denied),
        "no attempt answered during the failover: {seen:?}"
    );
    assert!(
        survivors.contains_key(&second_leader),
        "{second_leader} is not Ready among {survivors:?}"
    );

    // The leader crashes (its process killed on the node; the kubelet restarts it in the same
    // Pod): a live replica holds the Lease again once it runs out, and still nothing
    // unapproved is admitted. Reviews sent to the dead replica before its endpoint is
    // dropped fail (the API server fails closed): counted, not admitted.
    let crashed_pid = setup.container_pid(&survivors[&second_leader])?;
    let prober = Prober::start(&unapproved).await?;
    let killed_at = Instant::now();
    let killed = Command::new("kill")
        .args(["-KILL", &crashed_pid.to_string()])
        .status()?;
    ensure!(killed.success(), "kill -KILL {crashed_pid}: {killed}");
    let killed_wall = jiff::Timestamp::now();
    let renewed_after = |lease: &Value| -> bool {
        lease["spec"]["renewTime"]
            .as_str()
            .and_then(|t| t.parse::<jiff::Timestamp>().ok())
            .is_some_and(|t| t > killed_wall + jiff::SignedDuration::from_secs(1))
    };
    let holder = until(
        "a leader after the crash",
        Duration::from_secs(lease_seconds + 30),
        || {
            let lease = kubectl_json(&["get", "lease", "countersign-operator", "-n", &namespace])?;
            let holder = lease["spec"]["holderIdentity"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            Ok(if renewed_after(&lease) && !holder.is_empty() {
                Ok(holder)
            } else {
                Err(lease.to_string())
            })
        },
    )?;
    let took = killed_at.elapsed();
    eprintln!(
        "crash: {holder} holds the lease {took:?} after {second_leader}'s process was killed"
    );
    assert!(
        took <= Duration::from_secs(lease_seconds + 5),
        "no leader for {took:?} after the leader crashed (lease {lease_seconds}s)"
    );
    two_ready(&namespace, Duration::from_secs(120))?;
    let seen = prober.finish().await?;
    eprintln!("crash: {} attempts, {:?}", seen.len(), tally(&seen));
    assert!(
        !seen.contains(&Attempt::Admitted),
        "an unapproved change was admitted: {seen:?}"
    );

    // kubectl drain: one Pod may go, the PodDisruptionBudget keeps the other (the cordoned
    // node has no room for a replacement, so the drain cannot finish), and it still answers.
    let prober = Prober::start(&unapproved).await?;
    let drain = kubectl(
        User::Admin,
        &[
            "drain",
            &setup.node,
            "--ignore-daemonsets",
            "--delete-emptydir-data",
            "--timeout=25s",
        ],
        None,
    )?;
    let drained = text(&drain);
    let ready_meanwhile = ready_pods(&namespace)?;
    let seen = prober.finish().await?;
    eprintln!(
        "drain: {} attempts, {:?}; {drained}",
        seen.len(),
        tally(&seen)
    );
    kubectl_ok(User::Admin, &["uncordon", &setup.node], None)?;
    assert!(
        !drain.status.success(),
        "the drain finished past the PodDisruptionBudget: {drained}"
    );
    assert!(
        drained.contains("disruption budget"),
        "the drain was not held by the budget: {drained}"
    );
    assert_eq!(
        ready_meanwhile.len(),
        1,
        "Pods Ready while drained: {ready_meanwhile:?}"
    );
    assert!(
        !seen.contains(&Attempt::Admitted),
        "an unapproved change was admitted: {seen:?}"
    );
    assert!(
        seen.iter().all(|a| *a == Attempt::Denied),
        "an admission failed during the drain: {seen:?}"
    );
    two_ready(&namespace, Duration::from_secs(120))?;

    // helm upgrade with a changed value: the Deployment rolls, and every admission meanwhile
    // is countersign's answer.
    let prober = Prober::start(&unapproved).await?;
    let upgraded = helm(&[
        "upgrade",
        "countersign",
        chart,
        "-n",
        &namespace,
        "--reuse-values",
        "-f",
        values_arg,
        "--set",
        "serve.logFormat=text",
        "--wait",
        "--timeout",
        "180s",
    ])?;
    ensure!(
        upgraded.status.success(),
        "helm upgrade: {}",
        text(&upgraded)
    );
    kubectl_ok(
        User::Admin,
        &[
            "rollout",
            "status",
            "deployment/countersign",
            "-n",
            &namespace,
            "--timeout=180s",
        ],
        None,
    )?;
    std::thread::sleep(Duration::from_secs(2));
    let seen = prober.finish().await?;
    eprintln!("upgrade: {} attempts, {:?}", seen.len(), tally(&seen));
    assert!(
        seen.iter().all(|a| *a == Attempt::Denied),
        "an admission failed during the upgrade: {:?}",
        seen.iter()
            .filter(|a| **a != Attempt::Denied)
            .collect::<Vec<_>>()
    );
    let rolled = two_ready(&namespace, Duration::from_secs(60))?;
    assert!(
        rolled.keys().all(|pod| !survivors.contains_key(pod)),
        "the upgrade did not replace the Pods: {rolled:?} after {survivors:?}"
    );
    let args = kubectl_ok(
        User::Admin,
        &[
            "get",
            "deployment",
            "countersign",
            "-n",
            &namespace,
            "-o",
            "jsonpath={.spec.template.spec.containers[0].args}",
        ],
        None,
    )?;
    assert!(args.contains("--log-format=text"), "{args}");

    // helm uninstall: what docs/install.md says stays (the CRDs; the audit trail and the
    // Secret of self-managed certificates in the namespace), and nothing else of the chart.
    let uninstalled = helm(&[
        "uninstall",
        "countersign",
        "-n",
        &namespace,
        "--wait",
        "--timeout",
        "120s",
    ])?;
    ensure!(
        uninstalled.status.success(),
        "helm uninstall: {}",
        text(&uninstalled)
    );
    for (kind, name) in [
        ("validatingwebhookconfiguration", "countersign"),
        ("mutatingwebhookconfiguration", "countersign"),
        ("clusterrole", "countersign"),
    ] {
        let out = kubectl(User::Admin, &["get", kind, name], None)?;
        assert!(
            text(&out).contains("NotFound"),
            "{kind} {name} left behind: {}",
            text(&out)
        );
    }
    for kind in [
        "deployment",
        "service",
        "poddisruptionbudget",
        "serviceaccount",
    ] {
        let out = kubectl(
            User::Admin,
            &["get", kind, "countersign", "-n", &namespace],
            None,
        )?;
        assert!(
            text(&out).contains("NotFound"),
            "{kind} countersign left behind: {}",
            text(&out)
        );
    }
    until("the Pods gone", Duration::from_secs(60), || {
        let out = kubectl_ok(
            User::Admin,
            &[
                "get", "pods", "-n", &namespace, "-l", SELECTOR, "-o", "name",
            ],
            None,
        )?;
        Ok(if out.trim().is_empty() {
            Ok(())
        } else {
            Err(out)
        })
    })?;
    kubectl_ok(
        User::Admin,
        &["get", "secret", "countersign-webhook-tls", "-n", &namespace],
        None,
    )?;
    let trail = kubectl_json(&["get", "auditentries", "-n", &namespace])?;
    ensure!(
        trail["items"]
            .as_array()
            .is_some_and(|items| !items.is_empty()),
        "no audit trail left in {namespace}"
    );
    kubectl_ok(
        User::Admin,
        &["get", "crd", "deploymentapprovals.countersign.dev"],
        None,
    )?;
    // With no webhook left, nothing is gated.
    assert_eq!(attempt(&unapproved)?, Attempt::Admitted);
    drop(release);
    Ok(())
}

/// Changes in the flow the kills cut through, and the kills.
const KILLED_FLOW_CHANGES: usize = 100;
const KILLS: usize = 20;
/// How far the flow may run past the next kill point before it waits for the kill: three
/// changes' steps, so kills land among steps under way, not in a quiet cluster.
const KILL_LEAD: usize = 12;

/// Twenty SIGKILLs of `serve` on the real node, leader and not by turns, each at a random
/// step of a flow of a hundred changes through the chart's two replicas (the kubelet starts
/// the killed container again in its Pod). Nothing may be lost or repeated: every request
/// ends Deployed, each Deployment changed once, each step in the trail exactly once, the
/// audit chain intact. `COUNTERSIGN_FAULT_SEED` replays a run's kill points (it prints its
/// seed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_sigkills_across_a_hundred_changes_lose_and_repeat_nothing() -> Result<()> {
    use support::changes::{self, Flow, STEP_LIMIT};
    let Some(setup) = NodeAndImage::find()? else {
        return Ok(());
    };
    let _one = ONE_AT_A_TIME.lock().await;
    setup.load()?;
    let namespace = unique_name("chart-kills");
    let release = Release {
        namespace: namespace.clone(),
    };
    install(&setup, &namespace)?;
    two_ready(&namespace, Duration::from_secs(180))?;
    support::countersign::grant_approvers(TestCluster::get())?;
    let workloads = TestNamespace::create("chart-kills-flow", None).await?;
    let ns = workloads.name().to_string();
    let policy = unique_name("chart-kills");
    let result = async {
        changes::prepare(&ns, KILLED_FLOW_CHANGES, &policy)?;
        let seed = std::env::var("COUNTERSIGN_FAULT_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| jiff::Timestamp::now().as_nanosecond() as u64);
        let mut random = SplitMix(seed);
        let flow = Flow::start(&ns, KILLED_FLOW_CHANGES, 3);
        // Kill points: random steps over the flow's first nine tenths, in order.
        let mut points: Vec<usize> = (0..KILLS)
            .map(|_| (random.next() % (flow.steps() as u64 * 9 / 10)) as usize)
            .collect();
        points.sort();
        // The flow runs on while a kill lands and the Pod comes back, but not more than
        // KILL_LEAD steps past the next kill point: else it could end before the last kill
        // (it did once, with 19 of 20 done by step 399).
        let hold = |point: Option<&usize>| point.map_or(usize::MAX, |p| p + KILL_LEAD);
        flow.hold_at(hold(points.first()));
        let mut killed = Vec::new();
        for (k, point) in points.iter().enumerate() {
            flow.until_step(*point, STEP_LIMIT * 4)?;
            if flow.ended() {
                break; // A failed change: `finish` says which.
            }
            // Both replicas up, so that each kill hits a serving process.
            let pods = two_ready(&namespace, Duration::from_secs(120))?;
            let (leader, _) = leader(&namespace)?.context("no leader")?;
            let (pod, container) = pods
                .iter()
                .find(|(pod, _)| (**pod == leader) == (k % 2 == 0))
                .context("no Pod of the role to kill")?;
            let pid = setup.container_pid(container)?;
            let status = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status()?;
            ensure!(status.success(), "kill -KILL {pid}: {status}");
            killed.push(format!(
                "{} at step {}",
                if *pod == leader { "leader" } else { "other" },
                flow.done()
            ));
            // Then a random pause of up to 3 s before the next point counts.
            std::thread::sleep(Duration::from_millis(random.next() % 3000));
            flow.hold_at(hold(points.get(k + 1)));
        }
        let requests = flow.finish()?;
        ensure!(killed.len() == KILLS, "only {} kills: {killed:?}", killed.len());
        let counts = changes::count(&ns, &namespace, KILLED_FLOW_CHANGES, &requests)?;
        let restarts: u64 = kubectl_json(&["get", "pods", "-n", &namespace, "-l", SELECTOR])?["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|pod| pod["status"]["containerStatuses"][0]["restartCount"].as_u64())
            .sum();
        ensure!(
            restarts >= KILLS as u64,
            "{restarts} container restarts for {KILLS} kills"
        );
        let verified = until("audit verify intact", Duration::from_secs(60), || {
            let out = Command::new(env!("CARGO_BIN_EXE_countersign"))
                .args(["audit", "verify", "--grace", "0s", "--install-namespace", &namespace])
                .arg("--kubeconfig")
                .arg(TestCluster::get().kubeconfig())
                .args(["--context", User::Admin.name()])
                .output()?;
            Ok(if out.status.success() {
                Ok(text(&out))
            } else {
                Err(text(&out))
            })
        })?;
        println!(
            "faults: {KILLS} SIGKILLs of serve (seed {seed}: {}) across {KILLED_FLOW_CHANGES} changes, two replicas: {counts}; {restarts} container restarts; audit verify: {}",
            killed.join(", "),
            verified.lines().next().unwrap_or_default()
        );
        anyhow::Ok(())
    }
    .await;
    let _ = kubectl(User::Admin, &["delete", "approvalpolicy", &policy], None);
    if result.is_err() {
        for pod in ready_pods(&namespace).unwrap_or_default().keys() {
            let log = kubectl(
                User::Admin,
                &["logs", pod, "-n", &namespace, "--tail=40"],
                None,
            );
            if let Ok(log) = log {
                eprintln!("--- {pod}\n{}", text(&log));
            }
        }
    }
    drop(release);
    result
}

/// SplitMix64: the kill points, replayable from the seed a run prints.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// One real node per machine (its bridge, chain and cgroup have fixed names): a second
/// `COUNTERSIGN_REAL_NODE=1 tests/cluster/up` beside the running one must refuse with a
/// reason that names the running node's state directory, and neither its start nor the
/// `down` it runs on failing may take the running node's bridge, chain or Readiness. (A
/// node *killed* before its `down` is taken back by the next `up`: docs/testing.md.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_real_node_is_refused_and_the_running_one_is_left_alone() -> Result<()> {
    let Some(_setup) = NodeAndImage::find()? else {
        return Ok(());
    };
    let _one = ONE_AT_A_TIME.lock().await;
    let running = TestCluster::get()
        .env_value("COUNTERSIGN_CLUSTER_DIR")
        .context("cluster.env has no COUNTERSIGN_CLUSTER_DIR")?
        .to_string();
    let second = std::env::temp_dir().join(unique_name("countersign-second-node"));
    let up = Command::new(root().join("tests/cluster/up"))
        .arg(&second)
        .env("COUNTERSIGN_REAL_NODE", "1")
        .output()
        .context("running tests/cluster/up")?;
    let down = Command::new(root().join("tests/cluster/down"))
        .arg(&second)
        .output();
    let _ = std::fs::remove_dir_all(&second);
    let said = text(&up);
    ensure!(!up.status.success(), "a second real node started:\n{said}");
    let running = std::fs::canonicalize(&running)?;
    ensure!(
        said.contains(&format!(
            "a real node already runs on this machine, from {}",
            running.display()
        )) && said.contains("stop it first with tests/cluster/down"),
        "the refusal does not name the running node:\n{said}"
    );
    ensure!(
        down.as_ref().is_ok_and(|out| out.status.success()),
        "tests/cluster/down of the refused cluster failed: {:?}",
        down.map(|out| text(&out))
    );

    let bridge = Command::new("ip")
        .args(["link", "show", "cs-node0"])
        .output()?;
    ensure!(bridge.status.success(), "the running node's bridge is gone");
    let chain = Command::new("iptables")
        .args(["-w", "-t", "nat", "-S", "COUNTERSIGN-NODE"])
        .output()?;
    ensure!(
        chain.status.success() && String::from_utf8_lossy(&chain.stdout).contains("DNAT"),
        "the running node's DNAT chain is gone: {}",
        text(&chain)
    );
    kubectl_ok(
        User::Admin,
        &[
            "wait",
            "--for=condition=Ready",
            "node/countersign-real-node",
            "--timeout=60s",
        ],
        None,
    )?;
    Ok(())
}
