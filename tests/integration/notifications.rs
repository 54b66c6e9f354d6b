//! Notifications (SPEC §5) from `countersign serve` to a real HTTP receiver in the test,
//! through sink Secrets in the install namespace: each level hears when it opens and not
//! before, the requester hears the decision and the rollout's end, a failing receiver still
//! gets every notice, and the delivery state is in the request's status.

use std::time::Duration;

use anyhow::{Context, Result};
use countersign::api::{ApprovalPhase, DeploymentApproval, NotificationStatus};
use kube::Api;
use serde_json::json;

use crate::support::countersign::Countersign;
use crate::support::flow::*;
use crate::support::receiver::{Receiver, SinkSecret};
use crate::support::wait::{Poll, until};
use crate::support::{TestCluster, TestNamespace, User};

/// Waits until `sink` has accepted `count` notices; returns them as (event, level).
async fn heard(
    receiver: &Receiver,
    sink: &str,
    count: usize,
) -> Result<Vec<(String, Option<u64>)>> {
    until(
        &format!("{count} notices at {sink}"),
        Duration::from_secs(30),
        || async {
            let accepted = receiver.accepted(sink);
            Ok(if accepted.len() >= count {
                Poll::Ready(accepted)
            } else {
                Poll::Pending(format!("{accepted:?}"))
            })
        },
    )
    .await
}

fn level_opened(level: u64) -> (String, Option<u64>) {
    ("LevelOpened".into(), Some(level))
}

#[tokio::test]
async fn each_level_is_notified_when_it_opens_and_the_requester_of_the_outcome() -> Result<()> {
    Countersign::get();
    let receiver = Receiver::start().await?;
    let leads = SinkSecret::create(&format!("{}/leads", receiver.base))?;
    let flaky = SinkSecret::create(&format!("{}/flaky/hook", receiver.base))?;
    let sre = SinkSecret::create(&format!("{}/sre", receiver.base))?;
    let requester = SinkSecret::create(&format!("{}/requester", receiver.base))?;
    let missing = "no-such-sink-secret";
    let ns = TestNamespace::create("notify", None).await?;
    let ns = ns.name();
    let _policy = Policy::apply(
        ns,
        json!({ "approval": {
            "levels": [
                { "name": "leads", "approvers": [{ "group": "team-leads" }],
                  "sinks": [leads.name, flaky.name] },
                { "name": "sre", "approvers": [{ "user": "carol" }],
                  "sinks": [sre.name, missing] },
            ],
            "requesterSinks": [requester.name],
        }}),
    )?;

    let v1 = rolling_web(ns, "nginx:1.27", 1);
    let name = open_request(ns, &v1).await?;

    // Level 1 hears at once; the receiver that fails twice hears on the third try.
    assert_eq!(heard(&receiver, "leads", 1).await?, [level_opened(1)]);
    assert_eq!(heard(&receiver, "flaky", 1).await?, [level_opened(1)]);
    let flaky_tries = receiver
        .posts()
        .iter()
        .filter(|p| p.sink == "flaky")
        .count();
    assert_eq!(flaky_tries, 3, "two failures, then delivered");
    assert!(
        receiver
            .posts()
            .iter()
            .any(|p| p.sink == "flaky" && p.accepted && p.try_number == 3),
        "accepted on the third try"
    );
    let first = receiver
        .posts()
        .into_iter()
        .find(|p| p.sink == "leads")
        .context("the leads notice")?;
    assert_eq!(first.body["approval"]["name"], json!(name));
    assert!(
        first.body["text"]
            .as_str()
            .is_some_and(|t| t.contains("nginx:1.27")),
        "{}",
        first.body
    );
    assert!(
        first.body["commands"]["approve"]
            .as_str()
            .is_some_and(|c| c.contains(&name)),
        "{}",
        first.body
    );
    // Level 2 has not opened: nothing for it yet.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        receiver.accepted("sre").is_empty(),
        "level 2 told too early"
    );

    assert_ok(&review(
        User::Alice,
        ns,
        &name,
        json!({"decision": "Approve"}),
    )?);
    assert_eq!(heard(&receiver, "sre", 1).await?, [level_opened(2)]);
    let opened_two = receiver
        .posts()
        .into_iter()
        .find(|p| p.sink == "sre")
        .context("the sre notice")?;
    assert!(opened_two.at > first.at);
    assert!(receiver.accepted("requester").is_empty());

    assert_ok(&review(
        User::Carol,
        ns,
        &name,
        json!({"decision": "Approve"}),
    )?);
    assert_eq!(
        heard(&receiver, "requester", 1).await?,
        [("Approved".to_string(), None)]
    );
    apply_until("the approved change to be admitted", &v1, &[], |out| {
        out.status.success()
    })
    .await?;
    assert_eq!(
        heard(&receiver, "requester", 2).await?,
        [
            ("Approved".to_string(), None),
            ("Deployed".to_string(), None)
        ]
    );

    // Delivery state in the status: one record per (sink, level, event); the missing
    // sink's Secret is reported, not fatal.
    let admin = TestCluster::get().client(User::Admin).await?;
    let api = Api::<DeploymentApproval>::namespaced(admin, ns);
    let records: Vec<NotificationStatus> =
        until("the delivery records", Duration::from_secs(20), || async {
            let status = api.get(&name).await?.status.unwrap_or_default();
            let delivered = status.notifications.iter().filter(|n| n.delivered).count();
            Ok(
                if status.phase == ApprovalPhase::Deployed && delivered == 5 {
                    Poll::Ready(status.notifications)
                } else {
                    Poll::Pending(format!("{:?}", status.notifications))
                },
            )
        })
        .await?;
    let flaky_record = records
        .iter()
        .find(|n| n.sink == flaky.name)
        .context("the flaky sink's record")?;
    assert!(
        flaky_record.delivered && flaky_record.attempts == 3,
        "{flaky_record:?}"
    );
    let missing_record = records
        .iter()
        .find(|n| n.sink == missing)
        .context("the missing sink's record")?;
    assert!(!missing_record.delivered);
    assert!(
        missing_record
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains(missing)),
        "{missing_record:?}"
    );
    let mut keys: Vec<(&str, &str, &str)> = records
        .iter()
        .map(|n| (n.sink.as_str(), n.level.as_str(), n.event.as_str()))
        .collect();
    let all = keys.len();
    keys.sort();
    keys.dedup();
    assert_eq!(
        keys.len(),
        all,
        "one record per notice and sink: {records:?}"
    );
    // Every delivered notice reached its receiver once (the flaky one after its failures).
    let mut ids: Vec<String> = receiver
        .posts()
        .into_iter()
        .filter(|p| p.accepted)
        .map(|p| format!("{} {}", p.sink, p.delivery))
        .collect();
    let accepted = ids.len();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), accepted, "a delivered notice was sent again");
    // Counted: deliveries, and the failures on the way.
    let metrics = crate::support::countersign::metrics()?;
    for outcome in ["delivered", "failed"] {
        let family = format!("countersign_notification_deliveries_total{{outcome=\"{outcome}\"}}");
        assert!(
            metrics.contains(&family),
            "/metrics lacks {family}: {metrics}"
        );
    }
    Ok(())
}
