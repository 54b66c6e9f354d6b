//! Whether the API server still accepts countersign's credentials. Every response to the
//! client `serve` uses passes through [`CredentialsLayer`]: a 401 marks the credentials
//! refused, and the next response of any other status (the request was authenticated)
//! marks them accepted again. A token that expired because its renewal kept failing shows
//! here first: `/readyz` reports it, the gauge `countersign_api_credentials_refused` is 1,
//! and local mode's token renewal is woken to try again at once.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use http::{Response, StatusCode};
use tokio::sync::Notify;

/// What the client's responses have said about countersign's credentials.
#[derive(Debug, Default)]
pub struct Credentials {
    /// When the first 401 of the current run of them came; `None` while accepted.
    refused_since: Mutex<Option<Instant>>,
    /// The same, lock-free for the hot path: whether `refused_since` is set.
    refused: AtomicBool,
    /// Runs of refusals so far (a run ends at the first accepted request).
    runs: AtomicU64,
    /// Woken at the first 401 of a run (the token renewal waits on it).
    on_refusal: Notify,
}

impl Credentials {
    /// How long the API server has been refusing them; `None` while it accepts them.
    pub fn refused_for(&self) -> Option<Duration> {
        if !self.refused.load(Ordering::Acquire) {
            return None;
        }
        self.refused_since().map(|since| since.elapsed())
    }

    /// How many runs of refusals have begun so far.
    pub fn runs(&self) -> u64 {
        self.runs.load(Ordering::Acquire)
    }

    /// Resolves once a run of refusals after the first `seen` has begun (at once if one
    /// has): each run wakes a waiter once, however many 401s it holds.
    pub async fn refusal_after(&self, seen: u64) {
        loop {
            let notified = self.on_refusal.notified();
            if self.runs() > seen {
                return;
            }
            notified.await;
        }
    }

    /// Record a response's status.
    pub fn saw(&self, status: StatusCode) {
        let refused = status == StatusCode::UNAUTHORIZED;
        if refused == self.refused.load(Ordering::Acquire) {
            return;
        }
        let mut since = self
            .refused_since
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match (refused, since.is_some()) {
            (true, false) => {
                *since = Some(Instant::now());
                self.refused.store(true, Ordering::Release);
                self.runs.fetch_add(1, Ordering::AcqRel);
                tracing::warn!(
                    "the API server refuses countersign's credentials (401 Unauthorized): its token expired or was revoked"
                );
                self.on_refusal.notify_waiters();
            }
            (false, true) => {
                let lasted = since.take().map(|s| s.elapsed()).unwrap_or_default();
                self.refused.store(false, Ordering::Release);
                tracing::info!(
                    refused_for = ?lasted,
                    "the API server accepts countersign's credentials again"
                );
            }
            _ => {}
        }
    }

    /// When the current run of refusals began (a poisoned lock still holds the instant).
    fn refused_since(&self) -> Option<Instant> {
        *self
            .refused_since
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The client layer that shows every response's status to [`Credentials`].
pub fn layer<B>(
    credentials: std::sync::Arc<Credentials>,
) -> tower::util::MapResponseLayer<impl Fn(Response<B>) -> Response<B> + Clone> {
    tower::util::MapResponseLayer::new(move |response: Response<B>| {
        credentials.saw(response.status());
        response
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_401_refuses_until_any_other_answer_accepts() {
        let credentials = Credentials::default();
        // (status seen, refused afterwards)
        let cases = [
            (StatusCode::OK, false),
            (StatusCode::UNAUTHORIZED, true),
            (StatusCode::UNAUTHORIZED, true),
            // Authenticated but not allowed, or not found: the credentials were accepted.
            (StatusCode::FORBIDDEN, false),
            (StatusCode::UNAUTHORIZED, true),
            (StatusCode::NOT_FOUND, false),
            (StatusCode::UNAUTHORIZED, true),
            (StatusCode::CONFLICT, false),
        ];
        for (status, refused) in cases {
            credentials.saw(status);
            assert_eq!(
                credentials.refused_for().is_some(),
                refused,
                "after {status}"
            );
        }
    }

    #[test]
    fn a_run_of_refusals_is_timed_from_its_first() {
        let credentials = Credentials::default();
        credentials.saw(StatusCode::UNAUTHORIZED);
        std::thread::sleep(Duration::from_millis(20));
        credentials.saw(StatusCode::UNAUTHORIZED);
        assert!(credentials.refused_for() >= Some(Duration::from_millis(20)));
    }

    #[tokio::test]
    async fn each_run_of_refusals_wakes_the_renewal_once() {
        let credentials = std::sync::Arc::new(Credentials::default());
        let seen = credentials.runs();
        let waiting = tokio::spawn({
            let credentials = credentials.clone();
            async move { credentials.refusal_after(seen).await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        credentials.saw(StatusCode::UNAUTHORIZED);
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("woken")
            .expect("joined");
        // More 401s of the same run do not wake a waiter that has seen it…
        let seen = credentials.runs();
        credentials.saw(StatusCode::UNAUTHORIZED);
        let same_run =
            tokio::time::timeout(Duration::from_millis(50), credentials.refusal_after(seen)).await;
        assert!(same_run.is_err(), "woken again by the same run");
        // …a new run does, at once if it began before the wait.
        credentials.saw(StatusCode::OK);
        credentials.saw(StatusCode::UNAUTHORIZED);
        tokio::time::timeout(Duration::from_secs(1), credentials.refusal_after(seen))
            .await
            .expect("the next run wakes it");
    }
}
