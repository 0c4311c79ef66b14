//! The bundle of AWS SDK clients a run uses, built once from the standard AWS chain, the
//! interceptor that counts every call by service and operation, and the [`WriteGuard`] that makes
//! a copy of the clients read-only.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_config::retry::RetryConfig;
use aws_config::{BehaviorVersion, Region};
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::context::{
    BeforeSerializationInterceptorContextMut, BeforeSerializationInterceptorContextRef,
    BeforeTransmitInterceptorContextRef, FinalizerInterceptorContextRef,
};
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::{ConfigBag, Storable, StoreReplace};
use aws_types::SdkConfig;
use serde::Serialize;

use crate::config::AwsSettings;

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

/// A snapshot of the counts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CallCounts {
    /// Operations executed.
    pub total: u64,
    /// Operations that change something.
    pub mutating: u64,
    /// HTTP attempts, retries included.
    pub attempts: u64,
    /// `service:Operation` → operations executed.
    pub by_operation: BTreeMap<String, u64>,
    /// The longest chain of operations that ran one after another (each started after the
    /// previous one ended): the run's critical path, in calls.
    pub critical_path: u64,
}

impl CallCounts {
    /// The mutating operations and their counts.
    pub fn mutating_operations(&self) -> BTreeMap<String, u64> {
        self.by_operation
            .iter()
            .filter(|(op, _)| is_mutating(op.rsplit(':').next().unwrap_or(op)))
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    }
}

impl CallCounter {
    /// The counts so far.
    pub fn snapshot(&self) -> CallCounts {
        let state = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        CallCounts { critical_path: longest_chain(&state.spans), ..state.counts.clone() }
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
            let mut guard = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            let state = &mut *guard;
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
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).counts.attempts += 1;
        Ok(())
    }
}

/// One client per AWS service tap uses, all sharing one config and one [`CallCounter`].
#[derive(Debug, Clone)]
pub struct AwsClients {
    /// The shared SDK config (region, credentials, retry, endpoint).
    pub sdk_config: SdkConfig,
    /// Counts every call made through these clients.
    pub counter: CallCounter,
    /// EC2 (VPC, subnets, NAT, security groups).
    pub ec2: aws_sdk_ec2::Client,
    /// ECR.
    pub ecr: aws_sdk_ecr::Client,
    /// ECS.
    pub ecs: aws_sdk_ecs::Client,
    /// IAM.
    pub iam: aws_sdk_iam::Client,
    /// Secrets Manager.
    pub secrets: aws_sdk_secretsmanager::Client,
    /// Elastic Load Balancing v2.
    pub elbv2: aws_sdk_elasticloadbalancingv2::Client,
    /// Cloud Map.
    pub servicediscovery: aws_sdk_servicediscovery::Client,
    /// CloudWatch Logs.
    pub logs: aws_sdk_cloudwatchlogs::Client,
    /// Application Auto Scaling.
    pub autoscaling: aws_sdk_applicationautoscaling::Client,
}

macro_rules! client {
    ($sdk:ident, $config:expr, $counter:expr) => {
        $sdk::Client::from_conf($sdk::config::Builder::from($config).interceptor($counter.clone()).build())
    };
    // The guard first: it refuses a mutating call before the counter sees it.
    ($sdk:ident, $config:expr, $counter:expr, $guard:expr) => {
        $sdk::Client::from_conf(
            $sdk::config::Builder::from($config).interceptor($guard.clone()).interceptor($counter.clone()).build(),
        )
    };
}

impl AwsClients {
    /// Loads the standard AWS chain (env, profile, SSO, IMDS…) with the settings' overrides, the
    /// standard retry mode (throttling and transient errors back off) and bounded timeouts.
    pub async fn load(settings: &AwsSettings) -> Self {
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .retry_config(
                RetryConfig::standard()
                    .with_max_attempts(settings.max_attempts)
                    .with_initial_backoff(Duration::from_millis(200)),
            )
            .timeout_config(
                aws_config::timeout::TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(10))
                    .operation_attempt_timeout(Duration::from_secs(60))
                    .build(),
            );
        if let Some(region) = &settings.region {
            loader = loader.region(Region::new(region.clone()));
        }
        if let Some(profile) = &settings.profile {
            loader = loader.profile_name(profile);
        }
        if let Some(url) = &settings.endpoint_url {
            loader = loader.endpoint_url(url);
        }
        Self::from_sdk_config(loader.load().await)
    }

    /// Builds the clients from an already-loaded SDK config.
    pub fn from_sdk_config(sdk_config: SdkConfig) -> Self {
        let counter = CallCounter::default();
        let c = &sdk_config;
        AwsClients {
            ec2: client!(aws_sdk_ec2, c, counter),
            ecr: client!(aws_sdk_ecr, c, counter),
            ecs: client!(aws_sdk_ecs, c, counter),
            iam: client!(aws_sdk_iam, c, counter),
            secrets: client!(aws_sdk_secretsmanager, c, counter),
            elbv2: client!(aws_sdk_elasticloadbalancingv2, c, counter),
            servicediscovery: client!(aws_sdk_servicediscovery, c, counter),
            logs: client!(aws_sdk_cloudwatchlogs, c, counter),
            autoscaling: client!(aws_sdk_applicationautoscaling, c, counter),
            counter,
            sdk_config,
        }
    }

    /// The region the clients talk to.
    pub fn region(&self) -> Option<&str> {
        self.sdk_config.region().map(|r| r.as_ref())
    }

    /// The same clients (same config, same call counter) with `guard` installed: every mutating
    /// call made through them is refused before it is sent, and `guard` remembers it.
    pub fn read_only(&self, guard: &WriteGuard) -> AwsClients {
        let (c, counter) = (&self.sdk_config, &self.counter);
        AwsClients {
            ec2: client!(aws_sdk_ec2, c, counter, guard),
            ecr: client!(aws_sdk_ecr, c, counter, guard),
            ecs: client!(aws_sdk_ecs, c, counter, guard),
            iam: client!(aws_sdk_iam, c, counter, guard),
            secrets: client!(aws_sdk_secretsmanager, c, counter, guard),
            elbv2: client!(aws_sdk_elasticloadbalancingv2, c, counter, guard),
            servicediscovery: client!(aws_sdk_servicediscovery, c, counter, guard),
            logs: client!(aws_sdk_cloudwatchlogs, c, counter, guard),
            autoscaling: client!(aws_sdk_applicationautoscaling, c, counter, guard),
            counter: counter.clone(),
            sdk_config: self.sdk_config.clone(),
        }
    }
}

/// Makes clients read-only ([`AwsClients::read_only`]): a mutating operation (see [`is_mutating`])
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
    fn critical_path_is_the_longest_sequential_chain() {
        let t = Instant::now();
        let at = |ms: u64| t + Duration::from_millis(ms);
        // a(0-10) → b(10-20) → d(25-30); c(0-30) runs alongside.
        let spans = vec![(at(0), Some(at(10))), (at(10), Some(at(20))), (at(0), Some(at(30))), (at(25), Some(at(30)))];
        assert_eq!(longest_chain(&spans), 3);
        assert_eq!(longest_chain(&[]), 0);
    }

    /// Clients for a loopback port nothing listens on, without retries.
    async fn clients_of_nowhere() -> AwsClients {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let config = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .endpoint_url(format!("http://127.0.0.1:{port}"))
            .retry_config(RetryConfig::disabled())
            .credentials_provider(aws_sdk_ec2::config::Credentials::new("k", "s", None, None, "test"))
            .load()
            .await;
        AwsClients::from_sdk_config(config)
    }

    #[tokio::test]
    async fn the_guard_refuses_writes_before_sending_and_lets_reads_through() {
        let clients = clients_of_nowhere().await;
        let guard = WriteGuard::new();
        let read_only = clients.read_only(&guard);

        // A read goes out (and fails: nothing listens), and trips nothing.
        let read = read_only.ec2.describe_vpcs().send().await.unwrap_err();
        assert!(matches!(read, aws_smithy_runtime_api::client::result::SdkError::DispatchFailure(_)), "{read:?}");
        assert_eq!(guard.attempted(), None);

        // A write is refused without being sent or counted, and the guard remembers it.
        let write = read_only.ec2.create_vpc().cidr_block("10.0.0.0/16").send().await.unwrap_err();
        let mut chain = String::new();
        let mut cause: Option<&dyn std::error::Error> = Some(&write);
        while let Some(e) = cause {
            chain.push_str(&format!("{e}: "));
            cause = e.source();
        }
        assert!(chain.contains("not sent: this pass is read-only"), "{chain}");
        assert_eq!(guard.attempted().as_deref(), Some("EC2:CreateVpc"));
        let tripped = tokio::time::timeout(Duration::from_secs(1), guard.tripped()).await.unwrap();
        assert_eq!(tripped, "EC2:CreateVpc");
        let counts = clients.counter.snapshot();
        assert_eq!((counts.total, counts.mutating), (1, 0), "only the read was counted: {counts:?}");

        // The original clients are untouched: their write is sent (and fails to connect).
        let sent = clients.logs.create_log_group().log_group_name("g").send().await.unwrap_err();
        assert!(matches!(sent, aws_smithy_runtime_api::client::result::SdkError::DispatchFailure(_)), "{sent:?}");
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
