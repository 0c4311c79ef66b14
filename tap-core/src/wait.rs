//! Bounded polling with exponential backoff, for AWS's asynchronous operations and eventual
//! consistency. Never a fixed sleep: the first poll comes quickly, later ones back off.

use std::future::Future;
use std::time::{Duration, Instant};

use crate::error::StepError;

/// How to poll: first delay, growth up to a ceiling, and a deadline.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    /// Delay before the second attempt.
    pub initial: Duration,
    /// Largest delay between attempts.
    pub max: Duration,
    /// Give up after this long.
    pub timeout: Duration,
}

impl Backoff {
    /// 100 ms doubling to 5 s, giving up after `timeout`.
    pub fn with_timeout(timeout: Duration) -> Self {
        Backoff { initial: Duration::from_millis(100), max: Duration::from_secs(5), timeout }
    }
}

impl Backoff {
    /// The pauses between attempts under this backoff, counted from now.
    pub fn pauses(self) -> Pauses {
        Pauses { backoff: self, start: Instant::now(), next: self.initial }
    }
}

/// The pauses of one [`Backoff`]: `initial`, doubling up to `max`, as long as a pause ends before
/// the deadline. Every wait of tap between two attempts is one of these.
#[derive(Debug)]
pub struct Pauses {
    backoff: Backoff,
    start: Instant,
    next: Duration,
}

impl Pauses {
    /// Sleeps the next pause and returns `true`; returns `false` at once when the pause would end
    /// past the deadline (the caller gives up).
    pub async fn pause(&mut self) -> bool {
        if self.start.elapsed() + self.next > self.backoff.timeout {
            return false;
        }
        tokio::time::sleep(self.next).await;
        self.next = (self.next * 2).min(self.backoff.max);
        true
    }

    /// The pause [`Pauses::pause`] would sleep next (for logs).
    pub fn next(&self) -> Duration {
        self.next
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Self::with_timeout(Duration::from_secs(600))
    }
}

/// Calls `check` until it returns `Some`, backing off between calls; [`StepError::Timeout`] naming
/// `what` when the deadline passes.
pub async fn poll_until<T, F, Fut>(what: &str, backoff: Backoff, mut check: F) -> Result<T, StepError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>, StepError>>,
{
    let mut pauses = backoff.pauses();
    loop {
        if let Some(value) = check().await? {
            return Ok(value);
        }
        tracing::debug!(what, delay_ms = pauses.next().as_millis() as u64, "waiting");
        if !pauses.pause().await {
            return Err(StepError::Timeout { what: what.into(), seconds: backoff.timeout.as_secs() });
        }
    }
}

/// Runs `op` again while it fails with an error `transient` accepts (e.g. an IAM role that is not
/// yet assumable), backing off; any other error, or the deadline, ends the retries.
pub async fn retry_while<T, F, Fut>(
    what: &str,
    backoff: Backoff,
    transient: impl Fn(&StepError) -> bool,
    mut op: F,
) -> Result<T, StepError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, StepError>>,
{
    let mut pauses = backoff.pauses();
    loop {
        match op().await {
            Ok(v) => return Ok(v),
            Err(e) if transient(&e) => {
                tracing::debug!(what, error = %e, delay_ms = pauses.next().as_millis() as u64, "retrying");
                if !pauses.pause().await {
                    return Err(e);
                }
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn fast() -> Backoff {
        Backoff {
            initial: Duration::from_millis(1),
            max: Duration::from_millis(4),
            timeout: Duration::from_millis(200),
        }
    }

    #[tokio::test]
    async fn polls_until_ready() {
        let n = AtomicU32::new(0);
        let v = poll_until("thing", fast(), || async { Ok((n.fetch_add(1, Ordering::SeqCst) >= 3).then_some(7)) })
            .await
            .unwrap();
        assert_eq!((v, n.load(Ordering::SeqCst)), (7, 4));
    }

    #[tokio::test]
    async fn poll_times_out_naming_what() {
        let err = poll_until("NAT deletion", fast(), || async { Ok(None::<()>) }).await.unwrap_err();
        assert!(err.to_string().contains("NAT deletion"));
    }

    #[tokio::test]
    async fn retries_only_transient_errors() {
        let n = AtomicU32::new(0);
        let r = retry_while(
            "role",
            fast(),
            |e| e.is_retryable(),
            || async {
                if n.fetch_add(1, Ordering::SeqCst) < 2 {
                    Err(StepError::aws("r", "X")(crate::AwsError::throttling()))
                } else {
                    Ok(1)
                }
            },
        )
        .await;
        assert_eq!(r.unwrap(), 1);
        let r: Result<(), _> = retry_while(
            "role",
            fast(),
            |e| e.is_retryable(),
            || async { Err(StepError::aws("r", "X")(crate::AwsError::new("AccessDenied", "no"))) },
        )
        .await;
        assert!(r.is_err());
    }
}
