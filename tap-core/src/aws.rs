//! What every concern crate builds its SDK clients from, without tap-core naming a single
//! `aws-sdk-*` service crate: the [`AwsSession`] (SDK config, call counter, rate limiter,
//! optional guard) and [`sdk_client!`](crate::sdk_client); the interceptor that counts every call
//! by service and operation ([`CallCounter`]); the [`WriteGuard`] that makes a session read-only;
//! the run's retry and timeout policy. Loading the AWS config (the standard chain) is `tap-cli`'s
//! job.
//!
//! AWS throttles every account and region with token buckets per API. A run sends many calls at
//! once (every resource of a step concurrently), so throttling is expected at scale and must not
//! fail a deploy. Every client of a session sends through the session's client-side rate limiter
//! ([`crate::throttle`]): it paces each operation at a rate it learns from AWS's answers, bounds
//! the calls in flight per service, and resends a throttled call itself, so throttling costs time
//! but no retry attempt. Other errors back off and retry in the SDK's standard mode (up to
//! `aws.max_attempts`, at most 20 s apart); every client of one service in the run shares one
//! [`RetryPartition`] ([`AwsSession::retry_partition`]). [`CallCounts`] reports retries,
//! throttled answers and the time spent waiting for tokens and between attempts. (The SDK's
//! adaptive mode was measured and not chosen: its one limiter per client falls to 0.5 calls a
//! second after one throttling answer, for every operation of the service, and charges a retry 5
//! tokens, which made a 3-service destroy take 25 s instead of 0.6 s.)

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use aws_smithy_runtime::client::retries::RetryPartition;
use aws_smithy_runtime::client::retries::TokenBucket;
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::behavior_version::BehaviorVersion;
use aws_smithy_runtime_api::client::http::SharedHttpClient;
use aws_smithy_runtime_api::client::interceptors::context::{
    BeforeSerializationInterceptorContextMut, BeforeSerializationInterceptorContextRef,
    BeforeTransmitInterceptorContextRef, FinalizerInterceptorContextRef,
};
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponentsBuilder;
use aws_smithy_runtime_api::client::runtime_plugin::RuntimePlugin;
pub use aws_smithy_runtime_api::client::stalled_stream_protection::StalledStreamProtectionConfig;
use aws_smithy_types::config_bag::{ConfigBag, Storable, StoreReplace};
use aws_smithy_types::retry::RetryConfig;
use aws_smithy_types::timeout::TimeoutConfig;
use aws_types::SdkConfig;
use serde::Serialize;

use crate::config::AwsSettings;
use crate::throttle::{LimiterSettings, RateLimiter, ThrottledClient};

/// Whether an operation changes anything in AWS, judged by its name (`Describe*`, `List*`, `Get*`
/// and a few other read verbs are read-only).
pub fn is_mutating(operation: &str) -> bool {
    const READ_PREFIXES: &[&str] =
        &["Describe", "List", "Get", "Discover", "Search", "Lookup", "BatchGet", "Check", "Filter"];
    !READ_PREFIXES.iter().any(|p| operation.starts_with(p))
}

/// Counts AWS calls: one per operation executed (not per retry attempt) and one per attempt, and
/// times each operation to find the run's critical path.
#[derive(Debug, Clone, Default)]
pub struct CallCounter {
    inner: Arc<Mutex<CounterState>>,
}

#[derive(Debug, Default)]
struct CounterState {
    counts: CallCounts,
    /// Start and end of every operation, in start order.
    spans: Vec<(Instant, Option<Instant>)>,
    /// Operation names of the spans (`service:Operation`), for the call log.
    names: Vec<String>,
}

/// Index of the current operation's span, kept in the operation's config bag.
#[derive(Debug, Clone, Copy)]
struct SpanIndex(usize);

impl Storable for SpanIndex {
    type Storer = StoreReplace<Self>;
}

/// When the current attempt started, and how long the operation's earlier attempts took (in the
/// operation's config bag): the rest of its time went to backoff and the client rate limiter.
#[derive(Debug, Clone, Copy)]
struct AttemptClock {
    started: Option<Instant>,
    in_attempts: Duration,
}

impl Storable for AttemptClock {
    type Storer = StoreReplace<Self>;
}

/// A snapshot of the counts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CallCounts {
    /// Operations executed.
    pub total: u64,
    /// Operations that change something.
    pub mutating: u64,
    /// HTTP attempts, retries included.
    pub attempts: u64,
    /// Attempts AWS answered with a throttling error (each was retried, or its operation failed).
    pub throttled: u64,
    /// Time operations spent between their attempts, summed: retry backoff and waits for the
    /// client-side rate limiter's tokens.
    pub waited_ms: u64,
    /// `service:Operation` → operations executed.
    pub by_operation: BTreeMap<String, u64>,
    /// The longest chain of operations that ran one after another (each started after the
    /// previous one ended): the run's critical path, in calls.
    pub critical_path: u64,
}

impl CallCounts {
    /// Attempts beyond each operation's first.
    pub fn retries(&self) -> u64 {
        self.attempts.saturating_sub(self.total)
    }
}

impl CallCounter {
    /// The counts so far.
    pub fn snapshot(&self) -> CallCounts {
        let state = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        CallCounts { critical_path: longest_chain(&state.spans), ..state.counts.clone() }
    }

    /// A throttling answer (the client-side limiter saw it, see [`crate::throttle`]).
    pub(crate) fn note_throttled(&self) {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).counts.throttled += 1;
    }

    /// A call sent again by the limiter after a throttling answer: one more attempt.
    pub(crate) fn note_resend(&self) {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).counts.attempts += 1;
    }

    /// Time a call waited for the limiter's token.
    pub(crate) fn note_wait(&self, waited: Duration) {
        if !waited.is_zero() {
            self.inner.lock().unwrap_or_else(|e| e.into_inner()).counts.waited_ms += waited.as_millis() as u64;
        }
    }

    fn record(&self, service: &str, operation: &str) -> usize {
        let mut state = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        state.spans.push((Instant::now(), None));
        state.names.push(format!("{service}:{operation}"));
        let index = state.spans.len() - 1;
        let c = &mut state.counts;
        c.total += 1;
        if is_mutating(operation) {
            c.mutating += 1;
        }
        *c.by_operation.entry(format!("{service}:{operation}")).or_default() += 1;
        index
    }
}

/// The longest chain of spans each starting after the previous one ended.
fn longest_chain(spans: &[(Instant, Option<Instant>)]) -> u64 {
    let done: Vec<(Instant, Instant)> = spans.iter().filter_map(|&(s, e)| e.map(|e| (s, e))).collect();
    let mut order: Vec<usize> = (0..done.len()).collect();
    order.sort_by_key(|&i| done[i].0);
    let mut chain = vec![0u64; done.len()];
    for (pos, &i) in order.iter().enumerate() {
        let before = order[..pos].iter().filter(|&&j| done[j].1 <= done[i].0).map(|&j| chain[j]).max().unwrap_or(0);
        chain[i] = before + 1;
    }
    chain.into_iter().max().unwrap_or(0)
}

impl Intercept for CallCounter {
    fn name(&self) -> &'static str {
        "tap::CallCounter"
    }

    // Once per operation, like `read_before_execution`, but after the operation's own config (which
    // holds its `Metadata`) is in the bag: a client-level interceptor's `read_before_execution` runs
    // before that, so it never saw the operation name and counted nothing.
    fn read_before_serialization(
        &self,
        _ctx: &BeforeSerializationInterceptorContextRef<'_>,
        _rc: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if let Some(meta) = cfg.load::<Metadata>() {
            tracing::trace!(service = meta.service(), operation = meta.name(), "aws call");
            let index = self.record(meta.service(), meta.name());
            cfg.interceptor_state().store_put(SpanIndex(index));
        }
        Ok(())
    }

    fn read_after_execution(
        &self,
        _ctx: &FinalizerInterceptorContextRef<'_>,
        _rc: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if let Some(&SpanIndex(i)) = cfg.load::<SpanIndex>() {
            let in_attempts = cfg.load::<AttemptClock>().map(|c| c.in_attempts).unwrap_or_default();
            let mut guard = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            let state = &mut *guard;
            if let Some(&(start, _)) = state.spans.get(i) {
                let waited = start.elapsed().saturating_sub(in_attempts);
                state.counts.waited_ms += waited.as_millis() as u64;
            }
            if let Some(span) = state.spans.get_mut(i) {
                let end = Instant::now();
                span.1 = Some(end);
                // The call log (`RUST_LOG=tap_core::aws=debug`): where a run's time went, call by call.
                tracing::debug!(call = %state.names[i], index = i, ms = (end - span.0).as_millis() as u64, "aws call done");
            }
        }
        Ok(())
    }

    fn read_before_transmit(
        &self,
        _ctx: &BeforeTransmitInterceptorContextRef<'_>,
        _rc: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).counts.attempts += 1;
        let in_attempts = cfg.load::<AttemptClock>().map(|c| c.in_attempts).unwrap_or_default();
        cfg.interceptor_state().store_put(AttemptClock { started: Some(Instant::now()), in_attempts });
        Ok(())
    }

    fn read_after_attempt(
        &self,
        _ctx: &FinalizerInterceptorContextRef<'_>,
        _rc: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if let Some(AttemptClock { started: Some(started), in_attempts }) = cfg.load::<AttemptClock>().copied() {
            let in_attempts = in_attempts + started.elapsed();
            cfg.interceptor_state().store_put(AttemptClock { started: None, in_attempts });
        }
        Ok(())
    }
}

/// What every concern crate builds its own SDK client(s) from: the shared SDK config (region,
/// credentials, retry, timeouts, endpoint), the run's [`CallCounter`] and, for a read-only pass,
/// a [`WriteGuard`]. tap-core names no `aws-sdk-*` service crate: a crate turns a session into
/// the client it needs with [`sdk_client!`](crate::sdk_client), so it compiles only its own.
#[derive(Debug, Clone)]
pub struct AwsSession {
    sdk_config: SdkConfig,
    counter: CallCounter,
    guard: Option<WriteGuard>,
    partitions: Arc<Mutex<HashMap<&'static str, RetryPartition>>>,
    limiter: Arc<RateLimiter>,
    /// The HTTP client the limiter sends through: the SDK config's, else the SDK's default.
    http: SharedHttpClient,
}

impl AwsSession {
    /// A session over an already-loaded SDK config, with a fresh call counter, the default rate
    /// limiter and no guard.
    pub fn new(sdk_config: SdkConfig) -> Self {
        Self::with_limits(sdk_config, LimiterSettings::default())
    }

    /// A session whose rate limiter has `limits`.
    pub fn with_limits(sdk_config: SdkConfig, limits: LimiterSettings) -> Self {
        let http = sdk_config.http_client().unwrap_or_else(default_http_client);
        AwsSession {
            sdk_config,
            counter: CallCounter::default(),
            guard: None,
            partitions: Arc::default(),
            limiter: Arc::new(RateLimiter::new(limits)),
            http,
        }
    }

    /// The HTTP client of `service`'s clients (the SDK crate's name): the session's, behind the
    /// run's rate limiter ([`crate::throttle`]).
    pub fn http_client(&self, service: &'static str) -> SharedHttpClient {
        SharedHttpClient::new(ThrottledClient::new(
            service,
            self.http.clone(),
            self.limiter.clone(),
            self.counter.clone(),
        ))
    }

    /// The SDK's stalled-stream protection with uploads left out: a request waiting for the rate
    /// limiter's token uploads nothing for seconds, which the upload check takes for a stalled
    /// connection (request bodies here are small and in memory; downloads stay protected).
    pub fn stalled_stream_protection() -> StalledStreamProtectionConfig {
        StalledStreamProtectionConfig::enabled().upload_enabled(false).build()
    }

    /// The run's rate limiter.
    pub fn limiter(&self) -> &RateLimiter {
        &self.limiter
    }

    /// The shared SDK config.
    pub fn sdk_config(&self) -> &SdkConfig {
        &self.sdk_config
    }

    /// Counts every call made through the clients built from this session.
    pub fn counter(&self) -> &CallCounter {
        &self.counter
    }

    /// The guard clients built from this session carry, if the session is read-only.
    pub fn guard(&self) -> Option<&WriteGuard> {
        self.guard.as_ref()
    }

    /// The region the clients talk to.
    pub fn region(&self) -> Option<&str> {
        self.sdk_config.region().map(|r| r.as_ref())
    }

    /// The same session (same config, same call counter) with `guard` installed: every mutating
    /// call made through clients built from it is refused before it is sent, and `guard`
    /// remembers it.
    pub fn read_only(&self, guard: &WriteGuard) -> AwsSession {
        AwsSession { guard: Some(guard.clone()), ..self.clone() }
    }

    /// The retry policy of every tap run: the standard mode (throttling and transient errors back
    /// off exponentially with jitter, at most 20 s) with `settings.max_attempts` attempts. The
    /// loader in `tap-cli` puts it in the SDK config.
    pub fn retry_config(settings: &AwsSettings) -> RetryConfig {
        RetryConfig::standard()
            .with_max_attempts(settings.max_attempts)
            .with_initial_backoff(Duration::from_millis(200))
            .with_max_backoff(Duration::from_secs(20))
    }

    /// The retry partition of `service`'s clients (the SDK crate's name): one per service and
    /// session, so every client of that service in the run shares its retry quota. A throttled attempt costs no retry quota: the rate limiter answers
    /// throttling; the quota still ends retries of other errors in an outage.
    pub fn retry_partition(&self, service: &'static str) -> RetryPartition {
        let mut partitions = self.partitions.lock().unwrap_or_else(|e| e.into_inner());
        partitions
            .entry(service)
            .or_insert_with(|| {
                RetryPartition::custom(format!("tap-{service}"))
                    .token_bucket(TokenBucket::builder().throttling_retry_cost(0).build())
                    .build()
            })
            .clone()
    }

    /// Bounded timeouts, so a lost connection fails one attempt instead of hanging the run. They
    /// are the connection's (connect, and the answer's first byte), not the attempt's: an attempt
    /// also waits for the rate limiter's token, which may take longer at scale.
    pub fn timeout_config() -> TimeoutConfig {
        TimeoutConfig::builder().connect_timeout(Duration::from_secs(10)).read_timeout(Duration::from_secs(60)).build()
    }
}

/// The SDK's default HTTPS client (what a client gets when its config names none).
fn default_http_client() -> SharedHttpClient {
    aws_smithy_runtime::client::defaults::default_http_client_plugin_v2(BehaviorVersion::latest())
        .and_then(|plugin| plugin.runtime_components(&RuntimeComponentsBuilder::new("tap")).http_client())
        .expect("the SDK's default HTTPS client is compiled in (aws-smithy-runtime's default-https-client)")
}

/// Builds an `aws_sdk_<service>::Client` from an [`AwsSession`], sending through the session's
/// rate limiter, with the session's [`WriteGuard`] (if any) and its [`CallCounter`] attached — the guard first, so it refuses a
/// mutating call before the counter sees it. The calling crate names its own SDK crate:
///
/// ```ignore
/// let ecs: aws_sdk_ecs::Client = tap_core::sdk_client!(aws_sdk_ecs, &session);
/// ```
#[macro_export]
macro_rules! sdk_client {
    ($sdk:ident, $session:expr) => {{
        let session: &$crate::aws::AwsSession = $session;
        let mut builder = $sdk::config::Builder::from(session.sdk_config())
            .retry_partition(session.retry_partition(stringify!($sdk)))
            .http_client(session.http_client(stringify!($sdk)))
            .stalled_stream_protection($crate::aws::AwsSession::stalled_stream_protection())
            .interceptor($crate::throttle::LabelOperation);
        if let Some(guard) = session.guard() {
            builder = builder.interceptor(guard.clone());
        }
        $sdk::Client::from_conf(builder.interceptor(session.counter().clone()).build())
    }};
}

/// Makes clients read-only ([`AwsSession::read_only`]): a mutating operation (see [`is_mutating`])
/// fails before it is serialized, so it never leaves the process and the call counter never
/// counts it, and the guard records that one was attempted. A run can so find out whether a pass
/// has anything to write without writing: the pass attempted no write, or [`WriteGuard::tripped`]
/// resolves with the first operation it wanted (steps may swallow the error; the record stays).
#[derive(Debug, Clone, Default)]
pub struct WriteGuard {
    inner: Arc<GuardState>,
}

#[derive(Debug, Default)]
struct GuardState {
    /// The first mutating operation refused, `service:Operation`.
    first: Mutex<Option<String>>,
    tripped: tokio::sync::Notify,
}

impl WriteGuard {
    /// A guard that has refused nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The first mutating operation refused (`service:Operation`), if any.
    pub fn attempted(&self) -> Option<String> {
        self.inner.first.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Resolves once a mutating operation has been refused, with its name.
    pub async fn tripped(&self) -> String {
        loop {
            let notified = self.inner.tripped.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(op) = self.attempted() {
                return op;
            }
            notified.await;
        }
    }

    fn refuse(&self, service: &str, operation: &str) {
        let mut first = self.inner.first.lock().unwrap_or_else(|e| e.into_inner());
        if first.is_none() {
            *first = Some(format!("{service}:{operation}"));
        }
        drop(first);
        self.inner.tripped.notify_waiters();
    }
}

/// The error a refused call fails with.
#[derive(Debug, thiserror::Error)]
#[error("{service}:{operation} not sent: this pass is read-only")]
pub struct WriteRefused {
    /// Service.
    pub service: String,
    /// Operation.
    pub operation: String,
}

impl Intercept for WriteGuard {
    fn name(&self) -> &'static str {
        "tap::WriteGuard"
    }

    // The first hook that runs after the operation's `Metadata` is in the bag; an error here stops
    // the call before the counter's `read_before_serialization` and before anything is sent.
    fn modify_before_serialization(
        &self,
        _ctx: &mut BeforeSerializationInterceptorContextMut<'_>,
        _rc: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        match cfg.load::<Metadata>() {
            Some(meta) if is_mutating(meta.name()) => {
                tracing::debug!(
                    service = meta.service(),
                    operation = meta.name(),
                    "mutating call refused (read-only pass)"
                );
                self.refuse(meta.service(), meta.name());
                Err(Box::new(WriteRefused { service: meta.service().into(), operation: meta.name().into() }))
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_service_has_one_retry_partition_per_session() {
        let session = AwsSession::new(SdkConfig::builder().build());
        let read_only = session.read_only(&WriteGuard::default());
        for s in [&session, &read_only, &session] {
            assert_eq!(s.retry_partition("aws_sdk_ecs").to_string(), "tap-aws_sdk_ecs");
        }
        session.retry_partition("aws_sdk_iam");
        // Built once per service and shared by every client of the run, read-only ones included
        // (a custom partition's rate limiter and quota are its own: shared only when cloned).
        assert_eq!(session.partitions.lock().unwrap().len(), 2);
        let counts = CallCounts { total: 3, attempts: 5, ..CallCounts::default() };
        assert_eq!(counts.retries(), 2);
    }

    #[test]
    fn critical_path_is_the_longest_sequential_chain() {
        let t = Instant::now();
        let at = |ms: u64| t + Duration::from_millis(ms);
        // a(0-10) → b(10-20) → d(25-30); c(0-30) runs alongside.
        let spans = vec![(at(0), Some(at(10))), (at(10), Some(at(20))), (at(0), Some(at(30))), (at(25), Some(at(30)))];
        assert_eq!(longest_chain(&spans), 3);
        assert_eq!(longest_chain(&[]), 0);
    }

    #[test]
    fn read_verbs_are_not_mutating() {
        assert!(!is_mutating("DescribeVpcs"));
        assert!(!is_mutating("ListTagsForResource"));
        assert!(!is_mutating("GetRandomPassword"));
        assert!(is_mutating("CreateVpc"));
        assert!(is_mutating("ModifyVpcAttribute"));
        assert!(is_mutating("PutLifecyclePolicy"));
    }
}
