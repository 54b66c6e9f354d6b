//! A notification receiver: a real HTTP server on 127.0.0.1 that records every POST
//! countersign makes to a sink, and sink Secrets that point at it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use anyhow::Result;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use serde_json::{Value, json};

use super::{TestCluster, User};
use crate::support::countersign::INSTALL_NAMESPACE;
use crate::support::namespace::unique_name;

/// One POST as the receiver saw it.
#[derive(Clone, Debug)]
pub struct Post {
    /// The first path segment: which sink was called.
    pub sink: String,
    pub delivery: String,
    pub event: String,
    pub body: Value,
    pub at: jiff::Timestamp,
    /// Whether the receiver answered 200.
    pub accepted: bool,
    /// The how-manieth post of this delivery id it was.
    pub try_number: u32,
}

/// The server; `/flaky/…` answers 503 to the first two posts of each delivery id;
/// `/slow/…` answers the first post of each delivery id only after 3 s (a sender killed
/// meanwhile never sees the answer, and the post is not recorded as accepted).
#[derive(Clone, Default)]
pub struct Receiver {
    posts: Arc<Mutex<Vec<Post>>>,
    tries: Arc<Mutex<HashMap<String, u32>>>,
    pub base: String,
}

impl Receiver {
    pub async fn start() -> Result<Receiver> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let mut receiver = Receiver {
            base: format!("http://{}", listener.local_addr()?),
            ..Receiver::default()
        };
        let app = Router::new()
            .fallback(axum::routing::post(record))
            .with_state(receiver.clone());
        receiver.base = format!("http://{}", listener.local_addr()?);
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(receiver)
    }

    /// Every POST so far, in arrival order.
    pub fn posts(&self) -> Vec<Post> {
        self.posts.lock().map(|p| p.clone()).unwrap_or_default()
    }

    /// The accepted POSTs to `sink`, in arrival order, as (event, level index).
    pub fn accepted(&self, sink: &str) -> Vec<(String, Option<u64>)> {
        self.posts()
            .into_iter()
            .filter(|p| p.accepted && p.sink == sink)
            .map(|p| {
                (
                    p.event,
                    p.body.pointer("/level/index").and_then(Value::as_u64),
                )
            })
            .collect()
    }
}

async fn record(
    State(receiver): State<Receiver>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let sink = uri
        .path()
        .trim_start_matches('/')
        .split('/')
        .next()
        .unwrap_or_default()
        .to_string();
    let delivery = header("x-countersign-delivery");
    let tries = {
        let mut tries = receiver.tries.lock().expect("tries");
        let count = tries.entry(format!("{sink} {delivery}")).or_default();
        *count += 1;
        *count
    };
    let accepted = sink != "flaky" || tries > 2;
    let post = Post {
        sink,
        delivery,
        event: header("x-countersign-event"),
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        at: jiff::Timestamp::now(),
        accepted: false,
        try_number: tries,
    };
    if post.sink == "slow" && tries == 1 {
        // Seen arriving; answered (and recorded as accepted) only if the sender still
        // waits 3 s later: a killed sender drops the connection and this future with it.
        receiver.posts.lock().expect("posts").push(post.clone());
        tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    }
    receiver
        .posts
        .lock()
        .expect("posts")
        .push(Post { accepted, ..post });
    if accepted {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}

/// A sink Secret in the install namespace whose `url` is `url`; deleted when dropped.
pub struct SinkSecret {
    pub name: String,
}

impl SinkSecret {
    pub fn create(url: &str) -> Result<SinkSecret> {
        let name = unique_name("sink");
        let secret = json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": { "name": name, "namespace": INSTALL_NAMESPACE },
            "stringData": { "url": url },
        });
        let out = TestCluster::get().kubectl_output(
            User::Admin,
            &["apply", "-f", "-"],
            Some(secret.to_string().as_bytes()),
        )?;
        anyhow::ensure!(
            out.status.success(),
            "creating sink Secret: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(SinkSecret { name })
    }
}

impl Drop for SinkSecret {
    fn drop(&mut self) {
        let _ = TestCluster::get().kubectl_output(
            User::Admin,
            &[
                "delete",
                "secret",
                &self.name,
                "-n",
                INSTALL_NAMESPACE,
                "--ignore-not-found",
            ],
            None,
        );
    }
}
