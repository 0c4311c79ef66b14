//! Client-side rate limiting of every AWS call a run makes, so that AWS's API rate limits slow a
//! run down but never fail it.
//!
//! AWS throttles each account and region with token buckets per API (per action for EC2, per
//! category for ECS, undocumented for IAM, ECR's control plane and others), shared by every
//! client of the account. A run that sends all of a step's calls at once meets them at a few
//! dozen resources of a kind. Every client a session builds sends through a [`ThrottledClient`]
//! (the session's HTTP client wrapped), which for each operation (`service`, `Operation`):
//!
//! - **paces** its calls with a token bucket of its own ([`LearnedRate`]): it starts at EC2's
//!   documented general figures (mutating 5 a second, burst 10; non-mutating 20, burst 50) and
//!   learns the real rate: a throttling answer sets it just under the rate at which the
//!   operation's calls succeeded over the last seconds (what AWS's bucket let through), and
//!   while callers wait without throttling it grows, probing for more. It keeps no table of
//!   AWS's rates: several environments deploying in one account share AWS's buckets, which no
//!   table knows, and the learned rate is this run's share.
//! - **resends** a throttled call itself once its bucket allows, instead of handing the
//!   throttling error to the SDK's retry loop, whose attempts are few and whose backoff knows
//!   nothing of the rate: throttling alone never spends an attempt. A signed request stays
//!   valid for minutes only (SigV4's five), so after [`LimiterSettings::resend_within`] the
//!   throttling answer goes to the SDK, which signs a new attempt; after
//!   [`LimiterSettings::patience`] (`aws.throttle_patience_seconds`) from a call's first attempt
//!   the limiter resends nothing more and the SDK's retries decide.
//! - **bounds concurrency**: at most [`LimiterSettings::max_in_flight`] calls of one service are
//!   on the wire at once.
//!
//! The session's [`CallCounter`] gets each throttled answer, each resend (as an attempt) and the
//! time spent waiting for tokens, for `--stats`.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::connector_metadata::ConnectorMetadata;
use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient, SharedHttpConnector,
};
use aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextMut;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse, Metadata};
use aws_smithy_runtime_api::client::result::ConnectorError;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::body::SdkBody;
use aws_smithy_types::byte_stream::ByteStream;
use aws_smithy_types::config_bag::{ConfigBag, Storable, StoreReplace};
use aws_smithy_types::retry::ErrorKind;
use tokio::sync::Semaphore;

use crate::aws::{is_mutating, CallCounter};

/// How the limiter behaves; the defaults suit AWS.
#[derive(Debug, Clone, Copy)]
pub struct LimiterSettings {
    /// Calls of one service on the wire at once.
    pub max_in_flight: usize,
    /// A throttled attempt is resent by the limiter until this long after it was handed over
    /// (signed); later the throttling answer goes back to the SDK, which signs a new attempt.
    pub resend_within: Duration,
    /// How long one call may be kept throttled, from its first attempt: after it the limiter
    /// resends nothing and the SDK's retries (`aws.max_attempts`) decide.
    pub patience: Duration,
}

impl Default for LimiterSettings {
    fn default() -> Self {
        LimiterSettings {
            max_in_flight: 16,
            resend_within: Duration::from_secs(240),
            patience: Duration::from_secs(600),
        }
    }
}

/// The operation a request belongs to and when its first attempt was sent, put on the request
/// by [`LabelOperation`].
#[derive(Debug, Clone)]
struct OperationLabel {
    name: String,
    started: Instant,
}

/// When an operation's first attempt was labelled (in the operation's config bag).
#[derive(Debug, Clone, Copy)]
struct OperationStarted(Instant);

impl Storable for OperationStarted {
    type Storer = StoreReplace<Self>;
}

/// Labels each request with its operation's name, for the [`ThrottledClient`] to pace it by.
/// (The connector sees only the HTTP request; the operation is known to the orchestrator.)
#[derive(Debug, Clone, Copy, Default)]
pub struct LabelOperation;

impl Intercept for LabelOperation {
    fn name(&self) -> &'static str {
        "tap::LabelOperation"
    }

    fn modify_before_transmit(
        &self,
        ctx: &mut BeforeTransmitInterceptorContextMut<'_>,
        _rc: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let started = match cfg.load::<OperationStarted>() {
            Some(&OperationStarted(at)) => at,
            None => {
                let now = Instant::now();
                cfg.interceptor_state().store_put(OperationStarted(now));
                now
            }
        };
        if let Some(meta) = cfg.load::<Metadata>() {
            ctx.request_mut().add_extension(OperationLabel { name: meta.name().to_owned(), started });
        }
        Ok(())
    }
}

/// One operation's learned rate: a token bucket whose refill rate follows what AWS lets through.
///
/// While callers wait for tokens and nothing was throttled for a second, the rate grows (10 % of
/// itself plus 0.05 a second): it probes for more. A throttling answer means AWS's bucket is
/// empty, so the rate becomes 95 % of the rate at which this operation's calls succeeded over the
/// last 5 s (when the client is held back by AWS, what succeeds is AWS's refill rate, or this
/// run's share of it when other clients spend the same bucket), and never more than 95 % of
/// what it was; with no success in that window, half. It changes at most once a second, so the
/// answers of one burst count once. A rate learned from successes, not cut blindly, wastes
/// little: it sits just under AWS's rate instead of sawing between it and a fraction of it.
#[derive(Debug)]
pub struct LearnedRate {
    rate: f64,
    burst: f64,
    tokens: f64,
    at: Instant,
    created: Instant,
    last_throttled: Option<Instant>,
    successes: VecDeque<Instant>,
}

impl LearnedRate {
    /// Growth a second while callers wait: this share of the rate …
    const GROWTH: f64 = 0.1;
    /// … plus this many calls a second.
    const GROWTH_FLOOR: f64 = 0.05;
    /// The share of the measured success rate a throttling answer sets the rate to.
    const BELOW_MEASURED: f64 = 0.95;
    /// Never slower than one call in 20 s.
    const MIN_RATE: f64 = 0.05;
    /// Successes counted back this far.
    const WINDOW: Duration = Duration::from_secs(5);
    /// The rate is cut at most this often, and grows only this long after a throttling answer.
    const SETTLE: Duration = Duration::from_secs(1);

    /// A full bucket of `burst` refilled at `rate` a second.
    pub fn new(rate: f64, burst: u32, now: Instant) -> Self {
        let burst = f64::from(burst.max(1));
        LearnedRate {
            rate,
            burst,
            tokens: burst,
            at: now,
            created: now,
            last_throttled: None,
            successes: VecDeque::new(),
        }
    }

    /// The first operation of its kind: EC2's documented general figures (mutating 50 burst / 5
    /// a second, non-mutating 100 / 20), with a burst kept to 10 / 50 so that an unknown, slower
    /// API sees a small first burst.
    fn for_operation(operation: &str, now: Instant) -> Self {
        if is_mutating(operation) {
            LearnedRate::new(5.0, 10, now)
        } else {
            LearnedRate::new(20.0, 50, now)
        }
    }

    /// The current refill rate, calls a second.
    pub fn rate(&self) -> f64 {
        self.rate
    }

    fn settled(&self, now: Instant) -> bool {
        self.last_throttled.is_none_or(|at| now.saturating_duration_since(at) >= Self::SETTLE)
    }

    /// Refills the tokens; `waiting`: a caller is held back, so the rate probes upwards.
    fn refill(&mut self, now: Instant, waiting: bool) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        if waiting && self.settled(now) {
            self.rate += (self.rate * Self::GROWTH + Self::GROWTH_FLOOR) * elapsed.min(1.0);
        }
        self.at = now;
    }

    /// Takes a token, or says how long until one is due.
    pub fn take(&mut self, now: Instant) -> Result<(), Duration> {
        let waiting = self.tokens < 1.0;
        self.refill(now, waiting);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / self.rate))
        }
    }

    /// A call was answered.
    pub fn succeeded(&mut self, now: Instant) {
        self.successes.push_back(now);
        while self.successes.front().is_some_and(|&t| now.saturating_duration_since(t) > Self::WINDOW) {
            self.successes.pop_front();
        }
    }

    /// A call was throttled: AWS's bucket is empty, so this one is too, and the rate follows what
    /// succeeded (see the type's docs).
    pub fn throttled(&mut self, now: Instant) {
        self.refill(now, false);
        self.tokens = self.tokens.min(0.0);
        if !self.settled(now) {
            return;
        }
        self.last_throttled = Some(now);
        let window = now.saturating_duration_since(self.created).min(Self::WINDOW).max(Self::SETTLE).as_secs_f64();
        let recent = self.successes.iter().filter(|&&t| now.saturating_duration_since(t) <= Self::WINDOW).count();
        let next = match recent {
            0 => self.rate * 0.5,
            n => (n as f64 / window * Self::BELOW_MEASURED).min(self.rate * Self::BELOW_MEASURED),
        };
        self.rate = next.max(Self::MIN_RATE);
    }
}

/// `(service, Operation)`.
type OperationKey = (&'static str, String);

#[derive(Debug)]
struct OperationState {
    bucket: LearnedRate,
}

/// The run's limiter: a learned bucket per operation and a concurrency bound per service, shared
/// by every client of the session.
#[derive(Debug, Default)]
pub struct RateLimiter {
    settings: LimiterSettings,
    operations: Mutex<HashMap<OperationKey, Arc<Mutex<OperationState>>>>,
    in_flight: Mutex<HashMap<&'static str, Arc<Semaphore>>>,
}

impl RateLimiter {
    /// A limiter with `settings`.
    pub fn new(settings: LimiterSettings) -> Self {
        RateLimiter { settings, ..RateLimiter::default() }
    }

    fn operation(&self, service: &'static str, operation: &str) -> Arc<Mutex<OperationState>> {
        let mut operations = self.operations.lock().unwrap_or_else(|e| e.into_inner());
        operations
            .entry((service, operation.to_owned()))
            .or_insert_with(|| {
                let now = Instant::now();
                Arc::new(Mutex::new(OperationState { bucket: LearnedRate::for_operation(operation, now) }))
            })
            .clone()
    }

    fn semaphore(&self, service: &'static str) -> Arc<Semaphore> {
        let mut in_flight = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        in_flight.entry(service).or_insert_with(|| Arc::new(Semaphore::new(self.settings.max_in_flight.max(1)))).clone()
    }

    /// The current rate of `service`'s `operation`, if it was called.
    pub fn rate(&self, service: &'static str, operation: &str) -> Option<f64> {
        let operations = self.operations.lock().unwrap_or_else(|e| e.into_inner());
        operations
            .get(&(service, operation.to_owned()))
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).bucket.rate())
    }
}

/// Waits for a token of `state`'s bucket; returns how long it waited.
async fn ready(state: &Mutex<OperationState>) -> Duration {
    let start = Instant::now();
    loop {
        let wait = state.lock().unwrap_or_else(|e| e.into_inner()).bucket.take(Instant::now());
        match wait {
            Ok(()) => return start.elapsed(),
            Err(wait) => tokio::time::sleep(wait).await,
        }
    }
}

/// Whether an error answer's body carries a throttling code: `<Code>X</Code>` (query and XML
/// protocols) or `"…#X"` / `"X"` as the JSON protocols' error type.
pub(crate) fn is_throttling_answer(status: u16, body: &[u8]) -> bool {
    if status < 400 {
        return false;
    }
    let body = String::from_utf8_lossy(body);
    crate::error::THROTTLING_CODES.iter().any(|code| {
        body.contains(&format!("<Code>{code}</Code>"))
            || body.contains(&format!("#{code}\""))
            || body.contains(&format!("\"{code}\""))
    })
}

/// An HTTP client that sends every call through the run's [`RateLimiter`]: what
/// [`crate::aws::AwsSession::http_client`] gives each service's clients.
#[derive(Clone)]
pub struct ThrottledClient {
    service: &'static str,
    inner: SharedHttpClient,
    limiter: Arc<RateLimiter>,
    counter: CallCounter,
}

impl fmt::Debug for ThrottledClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ThrottledClient").field("service", &self.service).finish_non_exhaustive()
    }
}

impl ThrottledClient {
    /// `inner` behind `limiter`, for the clients of `service`.
    pub fn new(
        service: &'static str,
        inner: SharedHttpClient,
        limiter: Arc<RateLimiter>,
        counter: CallCounter,
    ) -> Self {
        ThrottledClient { service, inner, limiter, counter }
    }
}

impl HttpClient for ThrottledClient {
    fn http_connector(&self, settings: &HttpConnectorSettings, components: &RuntimeComponents) -> SharedHttpConnector {
        SharedHttpConnector::new(ThrottledConnector {
            client: self.clone(),
            inner: self.inner.http_connector(settings, components),
        })
    }

    fn connector_metadata(&self) -> Option<ConnectorMetadata> {
        self.inner.connector_metadata()
    }
}

#[derive(Debug)]
struct ThrottledConnector {
    client: ThrottledClient,
    inner: SharedHttpConnector,
}

impl HttpConnector for ThrottledConnector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let client = self.client.clone();
        let inner = self.inner.clone();
        HttpConnectorFuture::new(async move { send(&client, &inner, request).await })
    }
}

/// Sends `request` when its operation's bucket allows, resending it while AWS answers that it
/// is throttled (see the module docs).
async fn send(
    client: &ThrottledClient,
    inner: &SharedHttpConnector,
    mut request: HttpRequest,
) -> Result<HttpResponse, ConnectorError> {
    let handed_over = Instant::now();
    let (operation, started) = request
        .extension::<OperationLabel>()
        .map_or_else(|| ("unknown".to_owned(), handed_over), |l| (l.name.clone(), l.started));
    let state = client.limiter.operation(client.service, &operation);
    let in_flight = client.limiter.semaphore(client.service);
    let LimiterSettings { resend_within, patience, .. } = client.limiter.settings;
    let may_resend = || handed_over.elapsed() < resend_within && started.elapsed() < patience;
    let mut first = true;
    loop {
        client.counter.note_wait(ready(&state).await);
        if handed_over.elapsed() > resend_within {
            // Its signature is about to expire: the SDK signs a new attempt after its backoff.
            return Err(ConnectorError::other(
                format!("{}:{operation} waited {resend_within:?} for the client-side rate limit", client.service)
                    .into(),
                Some(ErrorKind::ThrottlingError),
            ));
        }
        if !first {
            client.counter.note_resend();
        }
        first = false;
        let spare = request.try_clone();
        let permit = in_flight.clone().acquire_owned().await.map_err(|e| ConnectorError::other(e.into(), None))?;
        let mut response = inner.call(request).await?;
        drop(permit);
        let throttled = if response.status().as_u16() >= 400 {
            let body = ByteStream::new(response.take_body())
                .collect()
                .await
                .map_err(|e| ConnectorError::io(e.into()))?
                .into_bytes();
            let throttled = is_throttling_answer(response.status().as_u16(), &body);
            *response.body_mut() = SdkBody::from(body);
            throttled
        } else {
            false
        };
        let now = Instant::now();
        {
            let mut state = state.lock().unwrap_or_else(|e| e.into_inner());
            if throttled {
                state.bucket.throttled(now);
            } else {
                state.bucket.succeeded(now);
            }
        }
        if !throttled {
            return Ok(response);
        }
        client.counter.note_throttled();
        tracing::debug!(service = client.service, operation, "throttled; resending when the bucket allows");
        match spare {
            Some(again) if may_resend() => request = again,
            _ => return Ok(response),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[test]
    fn a_throttling_answer_sets_the_rate_just_under_what_succeeded_once_a_second() {
        let t = Instant::now();
        let at = |ms: u64| t + Duration::from_millis(ms);
        let mut bucket = LearnedRate::new(10.0, 2, t);
        assert!(bucket.take(t).is_ok());
        assert!(bucket.take(t).is_ok());
        // Empty: the next token is due in 1/10 s.
        assert_eq!(bucket.take(t), Err(Duration::from_millis(100)));
        // Two calls a second succeeded over the last two seconds, then AWS throttles.
        for ms in [0, 500, 1000, 1500] {
            bucket.succeeded(at(ms));
        }
        bucket.throttled(at(2000));
        assert!((bucket.rate() - 1.9).abs() < 1e-9, "95 % of 4 calls in 2 s: {}", bucket.rate());
        bucket.throttled(at(2500));
        assert!((bucket.rate() - 1.9).abs() < 1e-9, "one change per burst of answers: {}", bucket.rate());
        // Nothing succeeded in the last 5 s: half.
        bucket.throttled(at(9000));
        assert!((bucket.rate() - 0.95).abs() < 1e-9, "{}", bucket.rate());
        // Callers waiting without throttling: the rate grows (10 % + 0.05 a second).
        bucket.tokens = 0.0;
        bucket.at = at(10_000);
        let _ = bucket.take(at(11_000));
        assert!((bucket.rate() - (0.95 * 1.1 + 0.05)).abs() < 1e-9, "{}", bucket.rate());
        // Never below one call in 20 s.
        for s in 12..40 {
            bucket.throttled(t + Duration::from_secs(s));
        }
        assert!((bucket.rate() - LearnedRate::MIN_RATE).abs() < 1e-9);
    }

    #[test]
    fn throttling_answers_are_told_by_their_code_in_every_protocol() {
        let xml =
            b"<ErrorResponse><Error><Code>Throttling</Code><Message>Rate exceeded</Message></Error></ErrorResponse>";
        assert!(is_throttling_answer(400, xml));
        let ec2 = b"<Response><Errors><Error><Code>RequestLimitExceeded</Code></Error></Errors></Response>";
        assert!(is_throttling_answer(503, ec2));
        let json = br#"{"__type":"com.amazonaws.ecs#ThrottlingException","message":"Rate exceeded"}"#;
        assert!(is_throttling_answer(400, json));
        assert!(is_throttling_answer(400, br#"{"__type":"ThrottlingException"}"#));
        // Other errors, and a successful answer that mentions the word, are not throttling.
        assert!(!is_throttling_answer(400, b"<Error><Code>ThrottlingConfigInvalid</Code></Error>"));
        assert!(!is_throttling_answer(404, br#"{"__type":"ResourceNotFoundException"}"#));
        assert!(!is_throttling_answer(200, b"<Code>Throttling</Code>"));
    }

    /// A connector that answers the first `throttle` calls with a throttling error, then 200.
    #[derive(Debug)]
    struct Throttling {
        throttle: u32,
        calls: Arc<AtomicU32>,
    }

    impl HttpConnector for Throttling {
        fn call(&self, _request: HttpRequest) -> HttpConnectorFuture {
            let n = self.calls.fetch_add(1, Ordering::SeqCst);
            let throttled = n < self.throttle;
            HttpConnectorFuture::ready(Ok(if throttled {
                HttpResponse::new(
                    400.try_into().unwrap(),
                    SdkBody::from(r#"{"__type":"ThrottlingException","message":"Rate exceeded"}"#),
                )
            } else {
                HttpResponse::new(200.try_into().unwrap(), SdkBody::from("{}"))
            }))
        }
    }

    fn client(throttle: u32, settings: LimiterSettings) -> (ThrottledClient, SharedHttpConnector, Arc<AtomicU32>) {
        let calls = Arc::new(AtomicU32::new(0));
        let inner = SharedHttpConnector::new(Throttling { throttle, calls: calls.clone() });
        let http = aws_smithy_runtime_api::client::http::http_client_fn({
            let inner = inner.clone();
            move |_, _| inner.clone()
        });
        let client =
            ThrottledClient::new("aws_sdk_ecs", http, Arc::new(RateLimiter::new(settings)), CallCounter::default());
        (client, inner, calls)
    }

    fn labelled(operation: &str) -> HttpRequest {
        let mut request = HttpRequest::new(SdkBody::from("{}"));
        request.add_extension(OperationLabel { name: operation.to_owned(), started: Instant::now() });
        request
    }

    #[tokio::test]
    async fn a_throttled_call_is_resent_by_the_limiter_and_counted_without_spending_an_sdk_attempt() {
        let (client, inner, calls) = client(3, LimiterSettings::default());
        let response = send(&client, &inner, labelled("CreateService")).await.unwrap();
        assert_eq!(response.status().as_u16(), 200);
        assert_eq!(calls.load(Ordering::SeqCst), 4);
        let counts = client.counter.snapshot();
        assert_eq!((counts.throttled, counts.attempts), (3, 3), "three throttled answers, three resends");
        // The operation's rate was cut (once: the answers came within a second) and no other's.
        let rate = client.limiter.rate("aws_sdk_ecs", "CreateService").unwrap();
        assert!(rate < 5.0 * 0.6, "nothing had succeeded: halved once a second: {rate}");
        assert_eq!(client.limiter.rate("aws_sdk_ecs", "DescribeServices"), None);
    }

    #[tokio::test]
    async fn past_the_signing_budget_the_throttling_answer_goes_back_to_the_sdk() {
        let settings = LimiterSettings { resend_within: Duration::ZERO, ..LimiterSettings::default() };
        let (client, inner, calls) = client(u32::MAX, settings);
        let outcome = send(&client, &inner, labelled("CreateService")).await;
        // Either answer leaves the retry to the SDK, which signs anew.
        match outcome {
            Ok(response) => assert_eq!(response.status().as_u16(), 400),
            Err(e) => assert_eq!(e.as_other(), Some(ErrorKind::ThrottlingError)),
        }
        assert!(calls.load(Ordering::SeqCst) <= 1);
    }

    #[tokio::test]
    async fn past_its_patience_a_throttled_call_is_answered_throttled_at_once() {
        let settings = LimiterSettings { patience: Duration::ZERO, ..LimiterSettings::default() };
        let (client, inner, calls) = client(u32::MAX, settings);
        let response = send(&client, &inner, labelled("CreateService")).await.unwrap();
        assert_eq!(response.status().as_u16(), 400);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(client.counter.snapshot().throttled, 1);
    }

    #[tokio::test]
    async fn a_burst_beyond_the_bucket_is_paced_at_its_rate() {
        let (client, inner, _) = client(0, LimiterSettings::default());
        let start = Instant::now();
        // A mutating operation: a burst of 10, then 5 a second (growing with successes).
        let calls = (0..14).map(|_| send(&client, &inner, labelled("CreateRole")));
        for response in futures::future::join_all(calls).await {
            assert_eq!(response.unwrap().status().as_u16(), 200);
        }
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(500), "four calls past the burst at about 5 a second: {took:?}");
        assert!(took < Duration::from_millis(1500), "{took:?}");
        assert!(client.counter.snapshot().waited_ms >= 500);
    }
}
