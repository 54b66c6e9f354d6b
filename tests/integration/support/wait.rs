//! Polling with a deadline, for state the control plane reaches eventually.

use std::future::Future;
use std::time::Duration;

use anyhow::{Result, bail};

/// Polls `probe` every 250 ms until it returns `Some`, or fails after
/// `timeout` naming `what` and the last state the probe reported.
pub async fn until<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Poll<T>>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let last = match probe().await? {
            Poll::Ready(value) => return Ok(value),
            Poll::Pending(state) => state,
        };
        if tokio::time::Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}; last seen: {last}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// One look at the awaited state: done with a value, or not yet with a
/// description of where things stand (reported on time-out).
pub enum Poll<T> {
    Ready(T),
    Pending(String),
}
