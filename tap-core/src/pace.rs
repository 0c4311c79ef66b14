//! A client-side token bucket for the few AWS APIs whose documented rate is far below what a run
//! sends at once (CloudWatch takes 3 `PutMetricAlarm` a second in an account and region): the
//! crate that calls such an API paces its calls to that rate instead of having most of them
//! throttled and retried. It waits exactly until the next token is due, never a fixed time.
//! Other clients in the account share AWS's bucket, so throttling stays possible; the SDK's
//! retries answer that (see [`crate::aws`]).

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Hands out at most `burst` calls at once and `per_second` on average after that.
#[derive(Debug)]
pub struct Pacer {
    per_second: f64,
    burst: f64,
    state: Mutex<(f64, Instant)>,
}

impl Pacer {
    /// A full bucket of `burst` tokens refilled at `per_second`.
    pub fn new(per_second: f64, burst: u32) -> Self {
        let burst = f64::from(burst.max(1));
        Pacer { per_second: per_second.max(0.001), burst, state: Mutex::new((burst, Instant::now())) }
    }

    /// Waits for a token and takes it.
    pub async fn ready(&self) {
        loop {
            let wait = {
                let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
                let (tokens, at) = *state;
                let now = Instant::now();
                let tokens = (tokens + now.duration_since(at).as_secs_f64() * self.per_second).min(self.burst);
                if tokens >= 1.0 {
                    *state = (tokens - 1.0, now);
                    return;
                }
                *state = (tokens, now);
                Duration::from_secs_f64((1.0 - tokens) / self.per_second)
            };
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_burst_passes_at_once_and_the_rest_at_the_rate() {
        let pacer = Pacer::new(20.0, 3);
        let start = Instant::now();
        for _ in 0..3 {
            pacer.ready().await;
        }
        assert!(start.elapsed() < Duration::from_millis(40), "the burst waits for nothing");
        for _ in 0..4 {
            pacer.ready().await;
        }
        // Four more tokens at 20 a second: 200 ms.
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(190), "{took:?}");
        assert!(took < Duration::from_millis(600), "{took:?}");
    }

    #[tokio::test]
    async fn concurrent_callers_share_the_rate() {
        let pacer = std::sync::Arc::new(Pacer::new(50.0, 1));
        let start = Instant::now();
        let calls = (0..6).map(|_| {
            let pacer = pacer.clone();
            tokio::spawn(async move { pacer.ready().await })
        });
        futures::future::join_all(calls).await;
        // One at once, five more at 50 a second: 100 ms.
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(95), "{took:?}");
    }
}
