//! POSTing a notice to a sink's URL: any 2xx answer is a delivery; a redirect, another
//! status, a timeout or a connection error is a failure with its reason. Reasons never
//! contain the URL: a webhook URL is a credential (Slack's carries its token in the path).

use std::sync::Arc;
use std::time::Duration;

use rustls_platform_verifier::BuilderVerifierExt;

/// The header carrying the notice's delivery id, the same on every retry, so a receiver
/// can drop duplicates.
pub const DELIVERY_HEADER: &str = "X-Countersign-Delivery";
/// The header carrying the notice's event (`LevelOpened`, `Approved`, …).
pub const EVENT_HEADER: &str = "X-Countersign-Event";
/// How long one attempt may take, connection included.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// How much of a refusing answer's body goes into the reason (Slack explains in it).
const ANSWER_CHARS: usize = 200;

/// Why the HTTP client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum SenderError {
    #[error("building the TLS configuration for notification sinks: {0}")]
    Tls(#[from] rustls::Error),
    #[error("building the HTTP client for notification sinks: {0}")]
    Client(#[source] reqwest::Error),
}

/// An HTTP(S) client for notification sinks: one per process, its connections reused.
/// HTTPS is verified against the system's trust roots; `HTTPS_PROXY`, `HTTP_PROXY` and
/// `NO_PROXY` are honoured; redirects are not followed.
#[derive(Clone, Debug)]
pub struct HttpSender {
    client: reqwest::Client,
    timeout: Duration,
}

impl HttpSender {
    /// A client whose every attempt ends within `timeout`.
    pub fn new(timeout: Duration) -> Result<Self, SenderError> {
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_platform_verifier()?
        .with_no_client_auth();
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .timeout(timeout)
            .connect_timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("countersign/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(SenderError::Client)?;
        Ok(HttpSender { client, timeout })
    }

    /// POST `body` (JSON) to `url` with the delivery headers: `Ok` on a 2xx answer, else
    /// why not.
    pub async fn post(
        &self,
        url: &str,
        delivery_id: &str,
        event: &str,
        body: Vec<u8>,
    ) -> Result<(), String> {
        self.send(url, "application/json", delivery_id, event, body)
            .await
    }

    /// POST `body` as plain text (a signed note), as [`HttpSender::post`] does JSON.
    pub async fn post_text(
        &self,
        url: &str,
        delivery_id: &str,
        event: &str,
        body: Vec<u8>,
    ) -> Result<(), String> {
        self.send(url, "text/plain; charset=utf-8", delivery_id, event, body)
            .await
    }

    async fn send(
        &self,
        url: &str,
        content_type: &str,
        delivery_id: &str,
        event: &str,
        body: Vec<u8>,
    ) -> Result<(), String> {
        let url =
            reqwest::Url::parse(url).map_err(|e| format!("the sink's url is not a URL: {e}"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!(
                "the sink's url must be http:// or https://, not {}://",
                url.scheme()
            ));
        }
        let response = self
            .client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .header(DELIVERY_HEADER, delivery_id)
            .header(EVENT_HEADER, event)
            .body(body)
            .send()
            .await
            .map_err(|e| describe(e, self.timeout))?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let mut reason = format!("HTTP {status}");
        if status.is_redirection() {
            reason.push_str(" (redirects are not followed: give the final address)");
        }
        let answer = answer_start(response).await;
        if !answer.is_empty() {
            reason.push_str(": ");
            reason.push_str(&answer);
        }
        Err(reason)
    }
}

/// A request error as a reason, its causes included, without the URL.
fn describe(error: reqwest::Error, timeout: Duration) -> String {
    let error = error.without_url();
    if error.is_timeout() {
        return format!("no answer within {timeout:?}");
    }
    let mut reason = if error.is_connect() {
        "could not connect".to_string()
    } else {
        error.to_string()
    };
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        let text = cause.to_string();
        if !reason.ends_with(&text) {
            reason.push_str(": ");
            reason.push_str(&text);
        }
        source = cause.source();
    }
    reason
}

/// The first words of an answer's body, on one line.
async fn answer_start(mut response: reqwest::Response) -> String {
    let mut bytes = Vec::new();
    while bytes.len() < ANSWER_CHARS * 4 {
        match response.chunk().await {
            Ok(Some(chunk)) => bytes.extend_from_slice(&chunk),
            _ => break,
        }
    }
    let text = String::from_utf8_lossy(&bytes);
    let words: Vec<&str> = text.split_whitespace().collect();
    words.join(" ").chars().take(ANSWER_CHARS).collect()
}
