//! Per-service work, started in the config's order and a bounded number at a time.
//!
//! Under an API's rate limit, a step that starts the work of every service at once spends the
//! bucket on every service's first call (100 `CreateRole`s) before any service's second
//! (`PutRolePolicy`): every service is finished only near the end, and the steps that read each
//! service's part (the services step) wait idle until then. Measured with `cargo xtask bench
//! --services 100 --rate-limits`: roles and repositories were complete at 3 a 10 s for the first
//! 40 s. Started in order and a few at a time, each service finishes its calls before new ones
//! start, so parts arrive steadily from the first seconds, in the same order from every step.

use std::future::Future;

use futures::stream::{self, StreamExt, TryStreamExt};

/// Runs the futures of `work` (`services.iter().map(|s| async move { … })`), at most `at_once` at a
/// time, starting them in order; the results come in that order. The first error ends it.
///
/// The futures are collected before the returned one is polled, so no closure of the caller's
/// iterator lives across an await (which `Send` futures, e.g. `async_trait`'s, reject).
pub fn in_order<T, E, Fut>(
    work: impl IntoIterator<Item = Fut>,
    at_once: usize,
) -> impl Future<Output = Result<Vec<T>, E>>
where
    Fut: Future<Output = Result<T, E>>,
{
    let work: Vec<Fut> = work.into_iter().collect();
    stream::iter(work).buffered(at_once.max(1)).try_collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[tokio::test]
    async fn at_most_the_bound_run_at_once_started_in_order_and_results_in_order() {
        let (running, most) = (AtomicUsize::new(0), AtomicUsize::new(0));
        let started = std::sync::Mutex::new(vec![]);
        let out = in_order(
            (0..10u64).map(|i| {
                let (running, most, started) = (&running, &most, &started);
                async move {
                    started.lock().unwrap().push(i);
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(10 - i)).await;
                    running.fetch_sub(1, Ordering::SeqCst);
                    Ok::<_, String>(i * 2)
                }
            }),
            3,
        )
        .await
        .unwrap();
        assert_eq!(out, (0..10).map(|i| i * 2).collect::<Vec<_>>());
        assert_eq!(most.load(Ordering::SeqCst), 3);
        assert_eq!(*started.lock().unwrap(), (0..10).collect::<Vec<_>>());
        let err = in_order(
            (0..5).map(|i| async move {
                if i == 3 {
                    Err(i)
                } else {
                    Ok(i)
                }
            }),
            2,
        )
        .await;
        assert_eq!(err, Err(3));
    }
}
