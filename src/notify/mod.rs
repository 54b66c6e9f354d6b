//! Notification delivery (SPEC §5): the shell around `core::notify`. The core says which
//! notices the request's state implies and which attempts are due; this module reads each
//! sink's URL from its Secret, POSTs the payload, and folds the outcomes into the records
//! the operator writes to `status.notifications`. It writes no status itself: the
//! operator merges the records into its one status write, and that write is what makes a
//! delivery count as done (lost, it is sent again: at least once).

pub mod http;
pub mod sink;

use std::collections::BTreeMap;

use futures::future::join_all;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;

use crate::api::{ApprovalPolicy, AuditEntry};
use crate::api::{DeploymentApproval, NotificationStatus};
use crate::core::approval::chain::ChainState;
use crate::core::notify::{
    DeliveryOutcome, Notice, NoticePayload, break_glass_notice, break_glass_payload, notices,
    payload, plan_deliveries, record_attempt,
};
pub use http::{DEFAULT_TIMEOUT, DELIVERY_HEADER, EVENT_HEADER, HttpSender, SenderError};
pub use sink::{URL_KEY, read_sink_url};

/// What one delivery round did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NotificationRound {
    /// The request's `status.notifications` after the round (every earlier record kept).
    pub notifications: Vec<NotificationStatus>,
    /// When a failed delivery is due again: reconcile then. `None`: nothing waits.
    pub next_attempt: Option<Timestamp>,
    /// Attempts that were delivered (2xx) in this round.
    pub delivered: u32,
    /// Attempts that failed in this round (each is retried after its backoff).
    pub failed: u32,
}

/// Delivers notices for the operator: its HTTP client and where the sinks' Secrets are.
/// Built once and kept in the operator's context.
#[derive(Clone)]
pub struct Notifier {
    secrets: Api<Secret>,
    install_namespace: String,
    sender: HttpSender,
}

impl Notifier {
    pub fn new(client: kube::Client, install_namespace: &str, sender: HttpSender) -> Self {
        Notifier {
            secrets: Api::namespaced(client, install_namespace),
            install_namespace: install_namespace.to_string(),
            sender,
        }
    }

    /// Make every delivery due at `now` for the request, in order, and return its records.
    /// `state` is the request's chain at `now` (`approval_state`).
    pub async fn deliver_due(
        &self,
        approval: &DeploymentApproval,
        state: &ChainState,
        now: Timestamp,
    ) -> NotificationRound {
        let sink_url = |sink: String| {
            let secrets = self.secrets.clone();
            let namespace = self.install_namespace.clone();
            async move { read_sink_url(&secrets, &namespace, &sink).await }
        };
        deliver(&self.sender, sink_url, approval, state, now).await
    }

    /// Announce a break-glass AuditEntry to every level's sinks of the policies it bypassed
    /// (`policies`: the current ones), from and into the entry's delivery records.
    pub async fn deliver_break_glass(
        &self,
        entry: &AuditEntry,
        policies: &[ApprovalPolicy],
        now: Timestamp,
    ) -> NotificationRound {
        let records = entry
            .status
            .as_ref()
            .map(|s| s.notifications.clone())
            .unwrap_or_default();
        let Some(notice) = break_glass_notice(entry, policies) else {
            return NotificationRound {
                notifications: records,
                ..NotificationRound::default()
            };
        };
        let sink_url = |sink: String| {
            let secrets = self.secrets.clone();
            let namespace = self.install_namespace.clone();
            async move { read_sink_url(&secrets, &namespace, &sink).await }
        };
        let body = |notice: &Notice| {
            serde_json::to_vec(&break_glass_payload(entry, notice))
                .map_err(|e| format!("encoding the notice: {e}"))
        };
        deliver_notices(&self.sender, sink_url, &[notice], body, records, now).await
    }
}

impl Notifier {
    /// POST a signed checkpoint of the audit trail (JSON: the event, its origin and size,
    /// the signed note) to the sink `sink`; `Ok` once it took it.
    pub async fn deliver_checkpoint(
        &self,
        sink: &str,
        note: &str,
        size: u64,
    ) -> Result<(), String> {
        let url = read_sink_url(&self.secrets, &self.install_namespace, sink).await?;
        let origin = note.lines().next().unwrap_or_default();
        let body = serde_json::to_vec(&serde_json::json!({
            "event": "AuditCheckpoint",
            "origin": origin,
            "size": size,
            "checkpoint": note,
        }))
        .map_err(|e| format!("encoding the checkpoint: {e}"))?;
        self.sender
            .post(&url, &format!("checkpoint-{size}"), "AuditCheckpoint", body)
            .await
    }
}

/// One delivery round for a request: attempt what is due at `now` (each sink's notices in
/// order, different sinks at once), fold each outcome into the records, and repeat while a
/// delivery lets a sink's next notice go. `sink_url` finds a sink's URL (its Secret); it is
/// asked at most once per sink and call.
pub async fn deliver<F>(
    sender: &HttpSender,
    sink_url: impl Fn(String) -> F,
    approval: &DeploymentApproval,
    state: &ChainState,
    now: Timestamp,
) -> NotificationRound
where
    F: Future<Output = Result<String, String>> + Send,
{
    let notices = notices(approval, state);
    let records = approval
        .status
        .as_ref()
        .map(|s| s.notifications.clone())
        .unwrap_or_default();
    let body = |notice: &Notice| encode(&payload(approval, state, notice));
    deliver_notices(sender, sink_url, &notices, body, records, now).await
}

/// The same for the notices of anything that keeps delivery `records`: `body` makes a
/// notice's JSON.
pub async fn deliver_notices<F>(
    sender: &HttpSender,
    sink_url: impl Fn(String) -> F,
    notices: &[Notice],
    body: impl Fn(&Notice) -> Result<Vec<u8>, String>,
    records: Vec<NotificationStatus>,
    now: Timestamp,
) -> NotificationRound
where
    F: Future<Output = Result<String, String>> + Send,
{
    let mut round = NotificationRound {
        notifications: records,
        ..NotificationRound::default()
    };
    let mut urls: BTreeMap<String, Result<String, String>> = BTreeMap::new();
    let mut bodies: BTreeMap<usize, Result<Vec<u8>, String>> = BTreeMap::new();
    // Each pass delivers a sink's notice (the next becomes its candidate) or fails one
    // (it waits out its backoff, past `now`): at most one pass per delivery, and a last.
    let passes = notices.iter().map(|n| n.sinks.len()).sum::<usize>() + 1;
    for _ in 0..passes {
        let plan = plan_deliveries(notices, &round.notifications, now);
        round.next_attempt = plan.next_attempt;
        if plan.due.is_empty() {
            break;
        }
        for due in &plan.due {
            if !urls.contains_key(&due.sink) {
                let url = sink_url(due.sink.clone()).await;
                urls.insert(due.sink.clone(), url);
            }
            bodies
                .entry(due.notice)
                .or_insert_with(|| body(&notices[due.notice]));
        }
        let attempts = plan.due.iter().map(|due| {
            let notice = &notices[due.notice];
            let url = urls.get(&due.sink).cloned();
            let body = bodies.get(&due.notice).cloned();
            async move {
                match (url, body) {
                    (Some(Ok(url)), Some(Ok(body))) => {
                        sender
                            .post(&url, &notice.delivery_id, notice.event.as_str(), body)
                            .await
                    }
                    (Some(Err(why)), _) | (_, Some(Err(why))) => Err(why),
                    _ => Err("no URL or body for the notice".to_string()),
                }
            }
        });
        let outcomes = join_all(attempts).await;
        for (due, outcome) in plan.due.iter().zip(outcomes) {
            let notice = &notices[due.notice];
            let outcome = match outcome {
                Ok(()) => {
                    round.delivered += 1;
                    tracing::info!(sink = %due.sink, delivery = %notice.delivery_id, "notification delivered");
                    DeliveryOutcome::Delivered
                }
                Err(why) => {
                    round.failed += 1;
                    tracing::warn!(sink = %due.sink, delivery = %notice.delivery_id, error = %why, "notification not delivered; retrying later");
                    DeliveryOutcome::Failed(why)
                }
            };
            record_attempt(&mut round.notifications, notice, &due.sink, &outcome, now);
        }
    }
    round
}

fn encode(payload: &NoticePayload) -> Result<Vec<u8>, String> {
    serde_json::to_vec(payload).map_err(|e| format!("encoding the notice: {e}"))
}

#[cfg(test)]
mod tests {
    //! Deliveries to a real HTTP server on 127.0.0.1, driven by a fake `now` (never by
    //! sleeping). The sinks' Secrets are stood in for by a name → URL lookup: reading a
    //! Secret needs a cluster, and `read_sink_url` is tested there.

    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use axum::Router;
    use axum::body::Bytes;
    use axum::extract::State;
    use axum::http::{HeaderMap, StatusCode, Uri, header};
    use axum::response::{IntoResponse, Response};
    use jiff::SignedDuration;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    use super::*;
    use crate::api::{
        ApprovalPhase, DeploymentApprovalStatus, Review, ReviewDecision, RolloutStatus,
    };
    use crate::core::admission::decision::approval_state;
    use crate::core::approval::chain::RoleBindingSnapshot;
    use crate::core::test_builders::{minutes, two_level_request};

    /// One POST as the receiver saw it.
    #[derive(Clone, Debug)]
    struct Post {
        path: String,
        delivery: String,
        event: String,
        user_agent: String,
        content_type: String,
        body: serde_json::Value,
    }

    /// A webhook receiver: `/flaky/…` answers 503 to the first two posts of each delivery
    /// id, `/missing/…` 404, `/moved/…` 302, `/slow/…` after 3 s; anything else 200.
    #[derive(Clone, Default)]
    struct Receiver {
        posts: Arc<Mutex<Vec<Post>>>,
        tries: Arc<Mutex<HashMap<String, u32>>>,
    }

    impl Receiver {
        fn posts(&self) -> Vec<Post> {
            self.posts.lock().unwrap().clone()
        }
    }

    async fn receive(
        State(receiver): State<Receiver>,
        uri: Uri,
        headers: HeaderMap,
        body: Bytes,
    ) -> Response {
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string()
        };
        let post = Post {
            path: uri.path().to_string(),
            delivery: header("x-countersign-delivery"),
            event: header("x-countersign-event"),
            user_agent: header("user-agent"),
            content_type: header("content-type"),
            body: serde_json::from_slice(&body).unwrap_or_default(),
        };
        receiver.posts.lock().unwrap().push(post.clone());
        let tries = {
            let mut tries = receiver.tries.lock().unwrap();
            let count = tries.entry(post.delivery.clone()).or_default();
            *count += 1;
            *count
        };
        match uri.path().split('/').nth(1).unwrap_or_default() {
            "flaky" if tries <= 2 => (StatusCode::SERVICE_UNAVAILABLE, "try later").into_response(),
            "missing" => (StatusCode::NOT_FOUND, "no_service").into_response(),
            "moved" => (StatusCode::FOUND, [(header::LOCATION, "/elsewhere")]).into_response(),
            "slow" => {
                tokio::time::sleep(Duration::from_secs(3)).await;
                StatusCode::OK.into_response()
            }
            _ => (StatusCode::OK, "ok").into_response(),
        }
    }

    /// Start a receiver on 127.0.0.1; its base URL.
    async fn start(receiver: Receiver) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let app = Router::new().fallback(receive).with_state(receiver);
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{address}")
    }

    /// Sinks named `<path>-<anything>` post to `<base>/<path>/<anything>`; `absent` has no
    /// Secret.
    fn sink_urls(base: String) -> impl Fn(String) -> std::future::Ready<Result<String, String>> {
        move |sink: String| {
            std::future::ready(match sink.as_str() {
                "absent" => Err("Secret countersign-system/absent not found".to_string()),
                _ => Ok(format!("{base}/{}", sink.replacen('-', "/", 1))),
            })
        }
    }

    /// The builders' two-level request (alice, then carol; dave asks) with these sinks.
    fn request(leads: &[&str], sre: &[&str], requester: &[&str]) -> DeploymentApproval {
        let mut approval = two_level_request(&[], None);
        let chain = &mut approval.spec.policy.chain;
        chain.levels[0].sinks = leads.iter().map(|s| s.to_string()).collect();
        chain.levels[1].sinks = sre.iter().map(|s| s.to_string()).collect();
        chain.requester_sinks = requester.iter().map(|s| s.to_string()).collect();
        approval.status = Some(DeploymentApprovalStatus::default());
        approval
    }

    fn approve(approval: &mut DeploymentApproval, who: &str, at: Timestamp) {
        approval.spec.reviews.push(Review {
            user: who.into(),
            groups: vec![],
            decision: ReviewDecision::Approve,
            comment: Some("ok".into()),
            time: Time(at),
        });
    }

    fn sender() -> HttpSender {
        HttpSender::new(DEFAULT_TIMEOUT).unwrap()
    }

    /// One round at `now`, its records written back as the operator would.
    async fn round(
        sender: &HttpSender,
        base: &str,
        approval: &mut DeploymentApproval,
        now: Timestamp,
    ) -> NotificationRound {
        let state = approval_state(approval, "shop", &RoleBindingSnapshot::default(), now);
        let round = deliver(sender, sink_urls(base.to_string()), approval, &state, now).await;
        approval.status.get_or_insert_default().notifications = round.notifications.clone();
        round
    }

    fn seen(posts: &[Post]) -> Vec<(String, String)> {
        posts
            .iter()
            .map(|p| (p.path.clone(), p.delivery.clone()))
            .collect()
    }

    const ID: &str = "6f1c2d3e-0000-4000";

    fn post(path: &str, notice: &str) -> (String, String) {
        (path.to_string(), format!("{ID}/{notice}"))
    }

    #[tokio::test]
    async fn levels_hear_in_order_and_the_requester_hears_the_end() {
        let receiver = Receiver::default();
        let base = start(receiver.clone()).await;
        let sender = sender();
        let mut approval = request(&["ok-leads"], &["ok-sre"], &["ok-dave"]);

        let first = round(&sender, &base, &mut approval, minutes(0)).await;
        assert_eq!(
            (first.delivered, first.failed, first.next_attempt),
            (1, 0, None)
        );
        assert_eq!(
            seen(&receiver.posts()),
            [post("/ok/leads", "level-1/LevelOpened")]
        );
        // Derived again (a restart, another event): nothing is sent twice.
        let again = round(&sender, &base, &mut approval, minutes(0)).await;
        assert_eq!((again.delivered, again.failed), (0, 0));
        assert_eq!(receiver.posts().len(), 1);

        approve(&mut approval, "alice", minutes(1));
        round(&sender, &base, &mut approval, minutes(1)).await;
        approve(&mut approval, "carol", minutes(2));
        round(&sender, &base, &mut approval, minutes(2)).await;
        let status = approval.status.get_or_insert_default();
        status.phase = ApprovalPhase::Deployed;
        status.rollout = Some(RolloutStatus {
            message: Some("3 of 3 replicas updated and available".into()),
            ..RolloutStatus::default()
        });
        round(&sender, &base, &mut approval, minutes(3)).await;

        let posts = receiver.posts();
        assert_eq!(
            seen(&posts),
            [
                post("/ok/leads", "level-1/LevelOpened"),
                post("/ok/sre", "level-2/LevelOpened"),
                post("/ok/dave", "requester/Approved"),
                post("/ok/dave", "requester/Deployed"),
            ]
        );
        for post in &posts {
            assert_eq!(post.body["deliveryId"], post.delivery.as_str());
            assert_eq!(post.body["event"], post.event.as_str());
            assert!(post.user_agent.starts_with("countersign/"), "{post:?}");
            assert_eq!(post.content_type, "application/json");
            assert_eq!(post.body["approval"]["name"], "web-1");
            assert_eq!(post.body["target"]["name"], "web");
        }
        assert_eq!(posts[0].body["level"]["name"], "leads");
        assert!(
            posts[0].body["text"]
                .as_str()
                .unwrap()
                .contains("kubectl countersign approve web-1 -n shop")
        );
        assert_eq!(posts[1].body["level"]["index"], 2);
        assert_eq!(
            posts[3].body["reason"],
            "3 of 3 replicas updated and available"
        );
        let records = &approval.status.as_ref().unwrap().notifications;
        assert_eq!(records.len(), 4);
        assert!(records.iter().all(|r| r.delivered && r.attempts == 1));
    }

    #[tokio::test]
    async fn a_receiver_that_fails_twice_still_gets_each_notice_in_order() {
        let receiver = Receiver::default();
        let base = start(receiver.clone()).await;
        let sender = sender();
        let mut approval = request(&["flaky-team"], &["flaky-team"], &["flaky-team"]);
        let at = |seconds: i64| minutes(0) + SignedDuration::from_secs(seconds);

        let first = round(&sender, &base, &mut approval, at(0)).await;
        assert_eq!((first.delivered, first.failed), (0, 1));
        assert_eq!(first.next_attempt, Some(at(1)));
        let record = &first.notifications[0];
        assert_eq!(
            record.last_error.as_deref(),
            Some("HTTP 503 Service Unavailable: try later")
        );
        // Before the backoff has run out, nothing is sent.
        let early = round(
            &sender,
            &base,
            &mut approval,
            at(0) + SignedDuration::from_millis(500),
        )
        .await;
        assert_eq!(
            (early.delivered, early.failed, early.next_attempt),
            (0, 0, Some(at(1)))
        );
        let second = round(&sender, &base, &mut approval, at(1)).await;
        assert_eq!((second.failed, second.next_attempt), (1, Some(at(3))));
        let third = round(&sender, &base, &mut approval, at(3)).await;
        assert_eq!(
            (third.delivered, third.failed, third.next_attempt),
            (1, 0, None)
        );
        assert_eq!(third.notifications[0].attempts, 3);
        assert!(third.notifications[0].delivered && third.notifications[0].last_error.is_none());

        // Level 2 opens, then the request is approved: each notice takes three attempts,
        // and the decision waits until level 2's notice is through.
        approve(&mut approval, "alice", minutes(1));
        let mut now = minutes(1);
        for _ in 0..3 {
            round(&sender, &base, &mut approval, now).await;
            now += SignedDuration::from_secs(10);
        }
        approve(&mut approval, "carol", now);
        for _ in 0..3 {
            round(&sender, &base, &mut approval, now).await;
            now += SignedDuration::from_secs(10);
        }
        let delivered: Vec<(String, String)> = receiver
            .posts()
            .iter()
            .map(|p| (p.path.clone(), p.delivery.clone()))
            .collect();
        let each_three_times = |notice: &str| vec![post("/flaky/team", notice); 3];
        let expected: Vec<(String, String)> = [
            each_three_times("level-1/LevelOpened"),
            each_three_times("level-2/LevelOpened"),
            each_three_times("requester/Approved"),
        ]
        .concat();
        assert_eq!(delivered, expected);
        let records = &approval.status.as_ref().unwrap().notifications;
        assert!(
            records.iter().all(|r| r.delivered && r.attempts == 3),
            "{records:?}"
        );
    }

    #[tokio::test]
    async fn refusals_and_missing_secrets_are_recorded_and_retried() {
        let receiver = Receiver::default();
        let base = start(receiver.clone()).await;
        let sender = sender();
        let mut approval = request(
            &["missing-hook", "absent", "moved-hook", "ok-leads"],
            &[],
            &[],
        );
        let first = round(&sender, &base, &mut approval, minutes(0)).await;
        assert_eq!((first.delivered, first.failed), (1, 3));
        assert_eq!(
            first.next_attempt,
            Some(minutes(0) + SignedDuration::from_secs(1))
        );
        let errors: Vec<(String, Option<String>)> = first
            .notifications
            .iter()
            .map(|r| (r.sink.clone(), r.last_error.clone()))
            .collect();
        assert_eq!(
            errors,
            [
                (
                    "missing-hook".to_string(),
                    Some("HTTP 404 Not Found: no_service".to_string())
                ),
                (
                    "absent".to_string(),
                    Some("Secret countersign-system/absent not found".to_string())
                ),
                (
                    "moved-hook".to_string(),
                    Some(
                        "HTTP 302 Found (redirects are not followed: give the final address)"
                            .to_string()
                    )
                ),
                ("ok-leads".to_string(), None),
            ]
        );
        // Retried after the backoff; the redirect was not followed.
        round(
            &sender,
            &base,
            &mut approval,
            minutes(0) + SignedDuration::from_secs(1),
        )
        .await;
        // Different sinks are posted to at once: compare without the order.
        let mut paths: Vec<String> = receiver.posts().into_iter().map(|p| p.path).collect();
        paths.sort();
        assert_eq!(
            paths,
            [
                "/missing/hook",
                "/missing/hook",
                "/moved/hook",
                "/moved/hook",
                "/ok/leads"
            ]
        );
        let attempts: Vec<u32> = approval
            .status
            .as_ref()
            .unwrap()
            .notifications
            .iter()
            .map(|r| r.attempts)
            .collect();
        assert_eq!(attempts, [2, 2, 2, 1]);
    }

    #[tokio::test]
    async fn timeouts_and_tls_failures_are_reasons_without_the_url() {
        let receiver = Receiver::default();
        let base = start(receiver.clone()).await;
        let quick = HttpSender::new(Duration::from_millis(200)).unwrap();
        let slow = quick
            .post(
                &format!("{base}/slow/T0K3N"),
                "id",
                "LevelOpened",
                b"{}".to_vec(),
            )
            .await
            .unwrap_err();
        assert_eq!(slow, "no answer within 200ms");
        // https to a plain-HTTP server: rustls is set up and fails the handshake.
        let https = base.replace("http://", "https://");
        let tls = sender()
            .post(
                &format!("{https}/ok/T0K3N"),
                "id",
                "LevelOpened",
                b"{}".to_vec(),
            )
            .await
            .unwrap_err();
        assert!(
            tls.starts_with("could not connect") && tls.contains("corrupt message"),
            "{tls}"
        );
        let odd = sender()
            .post("ftp://example/T0K3N", "id", "LevelOpened", vec![])
            .await
            .unwrap_err();
        assert_eq!(
            odd,
            "the sink's url must be http:// or https://, not ftp://"
        );
        for reason in [slow, tls, odd] {
            assert!(!reason.contains("T0K3N"), "{reason}");
        }
    }
}
