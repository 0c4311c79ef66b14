//! `tap-discovery`: the environment's Cloud Map private DNS namespace `tap-{s}.local` in its VPC,
//! and one Cloud Map service per configured service with `discovery = true` (e.g.
//! `processing-service`): A records with TTL `discovery.dns_ttl`, routing MULTIVALUE, and a custom
//! health check (failure threshold `discovery.failure_threshold`), so ECS registers the tasks.
//!
//! - Reads from the [`Context`]: the config, the names, and [`NetworkOutputs`] for the VPC id.
//! - Adds: [`DiscoveryOutputs`] — the namespace's id, ARN and name, and each service's id and ARN.
//! - Finds the namespace by name among the private DNS namespaces (`ListNamespaces`) and the
//!   services by name within it (`ListServices` filtered by the namespace). A listed service whose
//!   description names this namespace (tap writes it on create) is compared as listed; any other
//!   service of a wanted name (one created before tap wrote descriptions, or one an endpoint that
//!   ignores the filter lists from another namespace) is read with `GetService` and kept only when
//!   it is in this namespace. Namespace creation and deletion are asynchronous in Cloud Map:
//!   the step polls the operation until it succeeds (and fails clearly when it fails). A drifted
//!   TTL is repaired with `UpdateService`; a routing policy or health-check type, which Cloud Map
//!   cannot change in place, is reported as a conflict.
//! - Prune: a service of the namespace that no configured service declares and whose tags say it
//!   is this environment's (`ListTagsForResource`, read only for such services) is listed by plan
//!   as a delete, and deleted by deploy once the services step has published its outputs (it does
//!   so after removing the ECS services, which must be gone first). Nothing to prune, no wait.
//! - `destroy` deregisters any instance left, deletes the services, then the namespace.
//!   (moto, the local emulator, leaves the namespace's Route 53 hosted zone behind; AWS does not.)
//!
//! ```no_run
//! # async fn demo(session: &tap_core::aws::AwsSession, ctx: &tap_core::Context) -> Result<(), tap_core::StepError> {
//! use tap_core::Step;
//! // The network step must have written its outputs (the VPC id) into `ctx` first.
//! let step = tap_discovery::DiscoveryStep::from_session(session);
//! step.apply(ctx).await?;
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_servicediscovery::operation::create_private_dns_namespace::CreatePrivateDnsNamespaceError;
use aws_sdk_servicediscovery::operation::create_service::CreateServiceError;
use aws_sdk_servicediscovery::operation::delete_namespace::DeleteNamespaceError;
use aws_sdk_servicediscovery::types::{
    DnsConfig, DnsConfigChange, DnsRecord, FilterCondition, HealthCheckCustomConfig, NamespaceFilter,
    NamespaceFilterName, NamespaceType, RecordType, RoutingPolicy, ServiceChange, ServiceFilter, ServiceFilterName,
};
use futures::future::try_join_all;
use tap_core::context::Gathered;
use tap_core::idempotent::{create_or_adopt, NoBlindRetry, Recovery};
use tap_core::naming::Tag;
use tap_core::outputs::{is_known, DiscoveryOutputs, DiscoveryService, NetworkOutputs, ServicesOutputs, PENDING};
use tap_core::resource::{self, owned, Engine};
use tap_core::step::{Gone, OutputKind};
use tap_core::wait::{poll_until, retry_while, Backoff};
use tap_core::{Action, AwsError, Change, Context, Mode, Step, StepError};

/// This step's name.
const STEP: &str = "discovery";

mod service;

use service::{CloudMapService, DesiredService};

/// Logical id of the namespace.
pub const NAMESPACE_COMPONENT: &str = "discovery/namespace";
/// The routing policy of every service.
pub const ROUTING_POLICY: &str = "MULTIVALUE";
/// The record type of every service.
pub const RECORD_TYPE: &str = "A";

/// Logical id of a Cloud Map service.
fn service_component(service: &str) -> String {
    format!("discovery/service/{service}")
}

/// A namespace as Cloud Map reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedNamespace {
    /// Namespace id (`ns-…`).
    pub id: String,
    /// Namespace ARN.
    pub arn: String,
    /// Namespace (domain) name.
    pub name: String,
}

/// One DNS record template of a service.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct DnsRecordSpec {
    /// Record type, e.g. `A`.
    pub record_type: String,
    /// TTL in seconds.
    pub ttl: i64,
}

impl std::fmt::Display for DnsRecordSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ttl={}", self.record_type, self.ttl)
    }
}

/// A Cloud Map service as Cloud Map reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedService {
    /// Service id (`srv-…`).
    pub id: String,
    /// Service ARN.
    pub arn: String,
    /// Service name.
    pub name: String,
    /// The namespace it belongs to, when reported.
    pub namespace_id: Option<String>,
    /// Its DNS record templates.
    pub dns_records: Vec<DnsRecordSpec>,
    /// Its DNS routing policy, when it has a DNS config.
    pub routing_policy: Option<String>,
    /// `Some(threshold)` when it has a custom health check (`Some(None)`: no threshold reported).
    pub custom_health_check: Option<Option<i32>>,
    /// Its description.
    pub description: Option<String>,
}

/// What one Cloud Map service should look like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceDefinition {
    /// Service name (the DNS label).
    pub name: String,
    /// Namespace id.
    pub namespace_id: String,
    /// DNS record templates.
    pub dns_records: Vec<DnsRecordSpec>,
    /// Routing policy.
    pub routing_policy: String,
    /// Failure threshold of the custom health check.
    pub failure_threshold: i32,
    /// Idempotency token of the create call.
    pub creator_request_id: String,
    /// Description: [`service_description`] of the namespace, so a listing shows which namespace
    /// the service belongs to.
    pub description: String,
}

/// The description tap gives a Cloud Map service of the namespace `namespace_id`.
pub fn service_description(namespace_id: &str) -> String {
    format!("tap service discovery in namespace {namespace_id}")
}

/// A Cloud Map asynchronous operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperationState {
    /// `SUBMITTED`, `PENDING`, `SUCCESS` or `FAIL`.
    pub status: String,
    /// Error code when it failed.
    pub error_code: Option<String>,
    /// Error message when it failed.
    pub error_message: Option<String>,
    /// Target type (`NAMESPACE`, `SERVICE`, `INSTANCE`) → id.
    pub targets: BTreeMap<String, String>,
}

/// What `CreatePrivateDnsNamespace` answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NamespaceCreation {
    /// The creation runs as this operation (also when an identical request was already running).
    Operation(String),
    /// A namespace of that name already exists: its id.
    Exists(String),
}

/// The Cloud Map calls this crate makes.
#[cfg_attr(any(test, feature = "test-util"), mockall::automock)]
#[async_trait]
pub trait CloudMapApi: Send + Sync {
    /// `ListNamespaces` filtered to private DNS namespaces, all pages.
    async fn list_private_dns_namespaces(&self) -> Result<Vec<ObservedNamespace>, AwsError>;
    /// `GetNamespace`; `None` when it does not exist.
    async fn get_namespace(&self, id: &str) -> Result<Option<ObservedNamespace>, AwsError>;
    /// `CreatePrivateDnsNamespace` in `vpc_id`.
    async fn create_private_dns_namespace(
        &self,
        name: &str,
        vpc_id: &str,
        creator_request_id: &str,
        tags: &[Tag],
    ) -> Result<NamespaceCreation, AwsError>;
    /// `GetOperation`.
    async fn get_operation(&self, id: &str) -> Result<OperationState, AwsError>;
    /// `ListServices` filtered to one namespace, all pages, as listed (the summaries carry no
    /// namespace id: `namespace_id` is `None`).
    async fn list_services(&self, namespace_id: &str) -> Result<Vec<ObservedService>, AwsError>;
    /// `GetService`; `None` when it does not exist.
    async fn get_service(&self, id: &str) -> Result<Option<ObservedService>, AwsError>;
    /// `CreateService` (an existing service of that name in the namespace is returned instead).
    async fn create_service(&self, definition: &ServiceDefinition, tags: &[Tag]) -> Result<ObservedService, AwsError>;
    /// `UpdateService` replacing the DNS record templates; the operation id.
    async fn update_service_dns(&self, id: &str, records: &[DnsRecordSpec]) -> Result<String, AwsError>;
    /// `ListInstances`: the instance ids of a service.
    async fn list_instances(&self, service_id: &str) -> Result<Vec<String>, AwsError>;
    /// `DeregisterInstance`; the operation id.
    async fn deregister_instance(&self, service_id: &str, instance_id: &str) -> Result<String, AwsError>;
    /// `DeleteService`.
    async fn delete_service(&self, id: &str) -> Result<(), AwsError>;
    /// `ListTagsForResource` of a service or namespace (by ARN).
    async fn list_tags(&self, arn: &str) -> Result<Vec<Tag>, AwsError>;
    /// `DeleteNamespace`; the operation id.
    async fn delete_namespace(&self, id: &str) -> Result<String, AwsError>;
}

/// [`CloudMapApi`] over the real SDK client.
#[derive(Debug, Clone)]
pub struct SdkCloudMap(pub aws_sdk_servicediscovery::Client);

fn build_error(e: impl std::fmt::Display) -> AwsError {
    AwsError::local(format!("invalid request: {e}"))
}

fn sdk_tags(tags: &[Tag]) -> Result<Vec<aws_sdk_servicediscovery::types::Tag>, AwsError> {
    tags.iter()
        .map(|(k, v)| aws_sdk_servicediscovery::types::Tag::builder().key(k).value(v).build().map_err(build_error))
        .collect()
}

fn sdk_records(records: &[DnsRecordSpec]) -> Result<Vec<DnsRecord>, AwsError> {
    records
        .iter()
        .map(|r| {
            DnsRecord::builder()
                .r#type(RecordType::from(r.record_type.as_str()))
                .ttl(r.ttl)
                .build()
                .map_err(build_error)
        })
        .collect()
}

// `FailureThreshold` is deprecated (AWS keeps it at 1) but still part of the API; the SPEC sets it.
#[allow(deprecated)]
fn observed_service(s: &aws_sdk_servicediscovery::types::Service) -> ObservedService {
    let dns = s.dns_config();
    ObservedService {
        id: s.id().unwrap_or_default().to_owned(),
        arn: s.arn().unwrap_or_default().to_owned(),
        name: s.name().unwrap_or_default().to_owned(),
        namespace_id: s.namespace_id().map(str::to_owned),
        dns_records: dns.map(records_of).unwrap_or_default(),
        routing_policy: dns.and_then(|d| d.routing_policy()).map(|p| p.as_str().to_owned()),
        custom_health_check: s.health_check_custom_config().map(|c| c.failure_threshold()),
        description: s.description().map(str::to_owned),
    }
}

/// The DNS records of a service's DNS config, as tap compares them.
fn records_of(dns: &aws_sdk_servicediscovery::types::DnsConfig) -> Vec<DnsRecordSpec> {
    dns.dns_records()
        .iter()
        .map(|r| DnsRecordSpec { record_type: r.r#type().as_str().to_owned(), ttl: r.ttl() })
        .collect()
}

/// A service as `ListServices` summarizes it: the same settings, without the namespace id.
#[allow(deprecated)]
fn listed_service(s: &aws_sdk_servicediscovery::types::ServiceSummary) -> ObservedService {
    let dns = s.dns_config();
    ObservedService {
        id: s.id().unwrap_or_default().to_owned(),
        arn: s.arn().unwrap_or_default().to_owned(),
        name: s.name().unwrap_or_default().to_owned(),
        namespace_id: None,
        dns_records: dns.map(records_of).unwrap_or_default(),
        routing_policy: dns.and_then(|d| d.routing_policy()).map(|p| p.as_str().to_owned()),
        custom_health_check: s.health_check_custom_config().map(|c| c.failure_threshold()),
        description: s.description().map(str::to_owned),
    }
}

impl SdkCloudMap {
    // `FailureThreshold` is deprecated (AWS keeps it at 1) but still part of the API; the SPEC sets it.
    #[allow(deprecated)]
    async fn create_service_once(
        &self,
        definition: &ServiceDefinition,
        tags: &[Tag],
    ) -> Result<ObservedService, AwsError> {
        let dns = DnsConfig::builder()
            .routing_policy(RoutingPolicy::from(definition.routing_policy.as_str()))
            .set_dns_records(Some(sdk_records(&definition.dns_records)?))
            .build()
            .map_err(build_error)?;
        let result = self
            .0
            .create_service()
            .name(&definition.name)
            .namespace_id(&definition.namespace_id)
            .creator_request_id(&definition.creator_request_id)
            .description(&definition.description)
            .dns_config(dns)
            .health_check_custom_config(
                HealthCheckCustomConfig::builder().failure_threshold(definition.failure_threshold).build(),
            )
            .set_tags(Some(sdk_tags(tags)?))
            .customize()
            .config_override(aws_sdk_servicediscovery::Config::builder().retry_classifier(NoBlindRetry))
            .send()
            .await;
        match result {
            Ok(out) => out
                .service()
                .map(observed_service)
                .ok_or_else(|| AwsError::new("InvalidResponse", "CreateService returned no service")),
            Err(e) => {
                if let Some(CreateServiceError::ServiceAlreadyExists(x)) = e.as_service_error() {
                    if let Some(existing) = self.get_service(x.service_id().unwrap_or_default()).await? {
                        return Ok(existing);
                    }
                }
                Err(e.into())
            }
        }
    }
}

#[async_trait]
impl CloudMapApi for SdkCloudMap {
    async fn list_private_dns_namespaces(&self) -> Result<Vec<ObservedNamespace>, AwsError> {
        let filter = NamespaceFilter::builder()
            .name(NamespaceFilterName::Type)
            .values(NamespaceType::DnsPrivate.as_str())
            .condition(FilterCondition::Eq)
            .build()
            .map_err(build_error)?;
        let mut out = Vec::new();
        let mut token = None;
        loop {
            let page = self.0.list_namespaces().filters(filter.clone()).set_next_token(token).send().await?;
            out.extend(page.namespaces().iter().filter(|n| n.r#type() == Some(&NamespaceType::DnsPrivate)).map(|n| {
                ObservedNamespace {
                    id: n.id().unwrap_or_default().to_owned(),
                    arn: n.arn().unwrap_or_default().to_owned(),
                    name: n.name().unwrap_or_default().to_owned(),
                }
            }));
            token = page.next_token().map(str::to_owned);
            if token.is_none() {
                return Ok(out);
            }
        }
    }

    async fn get_namespace(&self, id: &str) -> Result<Option<ObservedNamespace>, AwsError> {
        match self.0.get_namespace().id(id).send().await {
            Ok(out) => Ok(out.namespace().map(|n| ObservedNamespace {
                id: n.id().unwrap_or_default().to_owned(),
                arn: n.arn().unwrap_or_default().to_owned(),
                name: n.name().unwrap_or_default().to_owned(),
            })),
            Err(e) => {
                let e = AwsError::from(e);
                if e.is_not_found() {
                    Ok(None)
                } else {
                    Err(e)
                }
            }
        }
    }

    async fn create_private_dns_namespace(
        &self,
        name: &str,
        vpc_id: &str,
        creator_request_id: &str,
        tags: &[Tag],
    ) -> Result<NamespaceCreation, AwsError> {
        let result = self
            .0
            .create_private_dns_namespace()
            .name(name)
            .vpc(vpc_id)
            .creator_request_id(creator_request_id)
            .description("tap service discovery")
            .set_tags(Some(sdk_tags(tags)?))
            .send()
            .await;
        match result {
            Ok(out) => out
                .operation_id()
                .map(|id| NamespaceCreation::Operation(id.to_owned()))
                .ok_or_else(|| AwsError::new("InvalidResponse", "no OperationId")),
            Err(e) => match e.as_service_error() {
                Some(CreatePrivateDnsNamespaceError::DuplicateRequest(d)) if d.duplicate_operation_id().is_some() => {
                    Ok(NamespaceCreation::Operation(d.duplicate_operation_id().unwrap_or_default().to_owned()))
                }
                Some(CreatePrivateDnsNamespaceError::NamespaceAlreadyExists(x)) if x.namespace_id().is_some() => {
                    Ok(NamespaceCreation::Exists(x.namespace_id().unwrap_or_default().to_owned()))
                }
                _ => Err(e.into()),
            },
        }
    }

    async fn get_operation(&self, id: &str) -> Result<OperationState, AwsError> {
        let out = self.0.get_operation().operation_id(id).send().await?;
        let op =
            out.operation().ok_or_else(|| AwsError::new("InvalidResponse", "GetOperation returned no operation"))?;
        Ok(OperationState {
            status: op.status().map(|s| s.as_str().to_owned()).unwrap_or_default(),
            error_code: op.error_code().map(str::to_owned),
            error_message: op.error_message().map(str::to_owned),
            targets: op.targets().into_iter().flatten().map(|(k, v)| (k.as_str().to_owned(), v.clone())).collect(),
        })
    }

    async fn list_services(&self, namespace_id: &str) -> Result<Vec<ObservedService>, AwsError> {
        let filter = ServiceFilter::builder()
            .name(ServiceFilterName::NamespaceId)
            .values(namespace_id)
            .condition(FilterCondition::Eq)
            .build()
            .map_err(build_error)?;
        let mut out = Vec::new();
        let mut token = None;
        loop {
            let page = self.0.list_services().filters(filter.clone()).set_next_token(token).send().await?;
            out.extend(page.services().iter().map(listed_service));
            token = page.next_token().map(str::to_owned);
            if token.is_none() {
                return Ok(out);
            }
        }
    }

    async fn get_service(&self, id: &str) -> Result<Option<ObservedService>, AwsError> {
        match self.0.get_service().id(id).send().await {
            Ok(out) => Ok(out.service().map(observed_service)),
            Err(e) => {
                let e = AwsError::from(e);
                if e.is_not_found() {
                    Ok(None)
                } else {
                    Err(e)
                }
            }
        }
    }

    /// `CreatorRequestId` makes a resent create idempotent on AWS, but not every endpoint honours
    /// it (moto does not): the SDK does not resend a create whose answer was lost, and the service
    /// is looked up in the namespace and adopted before creating again.
    async fn create_service(&self, definition: &ServiceDefinition, tags: &[Tag]) -> Result<ObservedService, AwsError> {
        let find = || async {
            let listed = self.list_services(&definition.namespace_id).await?;
            Ok(listed.into_iter().find(|s| {
                s.name == definition.name
                    && (s.namespace_id.as_deref() == Some(definition.namespace_id.as_str())
                        || s.description.as_deref() == Some(definition.description.as_str()))
            }))
        };
        create_or_adopt(
            &format!("discovery/service/{}", definition.name),
            Recovery::default(),
            |_| false,
            find,
            || self.create_service_once(definition, tags),
        )
        .await
    }

    async fn update_service_dns(&self, id: &str, records: &[DnsRecordSpec]) -> Result<String, AwsError> {
        let change =
            DnsConfigChange::builder().set_dns_records(Some(sdk_records(records)?)).build().map_err(build_error)?;
        let out =
            self.0.update_service().id(id).service(ServiceChange::builder().dns_config(change).build()).send().await?;
        out.operation_id().map(str::to_owned).ok_or_else(|| AwsError::new("InvalidResponse", "no OperationId"))
    }

    async fn list_instances(&self, service_id: &str) -> Result<Vec<String>, AwsError> {
        let mut out = Vec::new();
        let mut token = None;
        loop {
            let page = self.0.list_instances().service_id(service_id).set_next_token(token).send().await?;
            out.extend(page.instances().iter().filter_map(|i| i.id().map(str::to_owned)));
            token = page.next_token().map(str::to_owned);
            if token.is_none() {
                return Ok(out);
            }
        }
    }

    async fn deregister_instance(&self, service_id: &str, instance_id: &str) -> Result<String, AwsError> {
        let out = self.0.deregister_instance().service_id(service_id).instance_id(instance_id).send().await?;
        out.operation_id().map(str::to_owned).ok_or_else(|| AwsError::new("InvalidResponse", "no OperationId"))
    }

    async fn delete_service(&self, id: &str) -> Result<(), AwsError> {
        self.0.delete_service().id(id).send().await?;
        Ok(())
    }

    async fn list_tags(&self, arn: &str) -> Result<Vec<Tag>, AwsError> {
        let out = self.0.list_tags_for_resource().resource_arn(arn).send().await?;
        Ok(out.tags().iter().map(|t| (t.key().to_owned(), t.value().to_owned())).collect())
    }

    async fn delete_namespace(&self, id: &str) -> Result<String, AwsError> {
        match self.0.delete_namespace().id(id).send().await {
            Ok(out) => {
                out.operation_id().map(str::to_owned).ok_or_else(|| AwsError::new("InvalidResponse", "no OperationId"))
            }
            Err(e) => match e.as_service_error() {
                Some(DeleteNamespaceError::DuplicateRequest(d)) if d.duplicate_operation_id().is_some() => {
                    Ok(d.duplicate_operation_id().unwrap_or_default().to_owned())
                }
                _ => Err(e.into()),
            },
        }
    }
}

/// A deterministic idempotency token from `parts` (64 characters at most, Cloud Map's limit): the
/// parts joined with `-` when that fits, else a readable prefix and a hash of the whole.
pub fn creator_request_id(parts: &[&str]) -> String {
    let joined = parts.join("-");
    if joined.len() <= 64 {
        return joined;
    }
    // FNV-1a: stable across Rust versions and platforms, unlike the std hasher.
    let hash = joined.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    let prefix: String = joined.chars().take(47).collect();
    format!("{prefix}-{hash:016x}")
}

/// How long a Cloud Map operation may take.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(300);

/// Polls a Cloud Map operation until it succeeds; a failed operation is an error naming the
/// resource and the action that started it.
pub(crate) async fn wait_operation(
    api: &dyn CloudMapApi,
    backoff: Backoff,
    resource: &str,
    action: &'static str,
    operation_id: &str,
) -> Result<OperationState, StepError> {
    let what = format!("{action} on {resource} (Cloud Map operation {operation_id})");
    poll_until(&what, backoff, || async {
        let op = match api.get_operation(operation_id).await {
            Ok(op) => op,
            // Just started: not yet visible everywhere.
            Err(e) if e.is("OperationNotFound") => return Ok(None),
            Err(e) => return Err(StepError::aws(resource, "GetOperation")(e)),
        };
        match op.status.as_str() {
            "SUCCESS" => Ok(Some(op)),
            "FAIL" => {
                let code = op.error_code.clone().unwrap_or_else(|| "OperationFailed".into());
                let message = format!(
                    "Cloud Map operation {operation_id} failed: {}",
                    op.error_message.as_deref().unwrap_or("no reason given")
                );
                Err(StepError::aws(resource, action)(AwsError::new(&code, message)))
            }
            _ => Ok(None),
        }
    })
    .await
}

/// The Cloud Map namespace and services of an environment.
pub struct DiscoveryStep {
    api: Arc<dyn CloudMapApi>,
    backoff: Backoff,
}

impl DiscoveryStep {
    /// A step over any [`CloudMapApi`] (a mock in tests).
    pub fn new(api: Arc<dyn CloudMapApi>) -> Self {
        DiscoveryStep { api, backoff: Backoff::with_timeout(OPERATION_TIMEOUT) }
    }

    /// A step over the run's Cloud Map client.
    pub fn from_session(session: &tap_core::aws::AwsSession) -> Self {
        Self::new(Arc::new(SdkCloudMap(tap_core::sdk_client!(aws_sdk_servicediscovery, session))))
    }

    /// Polls a Cloud Map operation until it succeeds (see [`wait_operation`]).
    async fn wait_operation(
        &self,
        resource: &str,
        action: &'static str,
        operation_id: &str,
    ) -> Result<OperationState, StepError> {
        wait_operation(self.api.as_ref(), self.backoff, resource, action, operation_id).await
    }

    /// The Cloud Map service kind of this step.
    fn kind(&self) -> CloudMapService<'_> {
        CloudMapService { api: self.api.as_ref(), backoff: self.backoff }
    }

    /// The private DNS namespaces named `name` (normally one).
    async fn find_namespaces(&self, name: &str) -> Result<Vec<ObservedNamespace>, StepError> {
        let all = self
            .api
            .list_private_dns_namespaces()
            .await
            .map_err(StepError::aws(NAMESPACE_COMPONENT, "ListNamespaces"))?;
        Ok(all.into_iter().filter(|n| n.name.trim_end_matches('.') == name).collect())
    }

    /// The services of a namespace, by name. A listed service whose description names this
    /// namespace is taken as listed; `GetService` reads any other service of a wanted name, which is
    /// kept only when it is in this namespace (the filter by namespace is the API's job, but a
    /// listing that ignored it must not mix up two environments' services of the same name).
    async fn find_services(
        &self,
        namespace_id: &str,
        wanted: impl Fn(&str) -> bool,
    ) -> Result<BTreeMap<String, ObservedService>, StepError> {
        let listed =
            self.api.list_services(namespace_id).await.map_err(StepError::aws(NAMESPACE_COMPONENT, "ListServices"))?;
        let marker = service_description(namespace_id);
        let (marked, unmarked): (Vec<ObservedService>, Vec<ObservedService>) = listed
            .into_iter()
            .filter(|s| wanted(&s.name))
            .partition(|s| s.description.as_deref() == Some(marker.as_str()));
        let mut found: BTreeMap<String, ObservedService> = marked
            .into_iter()
            .map(|s| (s.name.clone(), ObservedService { namespace_id: Some(namespace_id.to_owned()), ..s }))
            .collect();
        let reads = unmarked.into_iter().filter(|s| !found.contains_key(&s.name)).map(|s| async move {
            self.api.get_service(&s.id).await.map_err(StepError::aws(service_component(&s.name), "GetService"))
        });
        let read = try_join_all(reads).await?;
        for service in read.into_iter().flatten() {
            if service.namespace_id.as_deref().is_none_or(|ns| ns == namespace_id) {
                found.insert(service.name.clone(), service);
            }
        }
        Ok(found)
    }

    async fn create_namespace(&self, ctx: &Context, name: &str, vpc_id: &str) -> Result<ObservedNamespace, StepError> {
        let tags = ctx.names.tags(NAMESPACE_COMPONENT, name);
        let token = creator_request_id(&["tap", ctx.names.env(), "namespace", vpc_id]);
        let failed = StepError::aws(NAMESPACE_COMPONENT, "CreatePrivateDnsNamespace");
        let creation = match self.api.create_private_dns_namespace(name, vpc_id, &token, &tags).await {
            Ok(creation) => creation,
            // A create whose answer was lost and was sent again (an emulator may not honour the
            // CreatorRequestId) finds the environment's namespace already there: adopt it.
            Err(e) if e.is("ConflictingDomainExists") => match self.find_namespaces(name).await?.into_iter().next() {
                Some(namespace) => NamespaceCreation::Exists(namespace.id),
                None => return Err(failed(e)),
            },
            Err(e) => return Err(failed(e)),
        };
        let id = match creation {
            NamespaceCreation::Exists(id) => id,
            NamespaceCreation::Operation(op_id) => {
                let op = self.wait_operation(NAMESPACE_COMPONENT, "CreatePrivateDnsNamespace", &op_id).await?;
                op.targets.get("NAMESPACE").cloned().ok_or_else(|| StepError::Conflict {
                    resource: NAMESPACE_COMPONENT.into(),
                    message: format!("Cloud Map operation {op_id} succeeded without naming the namespace it created"),
                })?
            }
        };
        let namespace =
            self.api.get_namespace(&id).await.map_err(StepError::aws(NAMESPACE_COMPONENT, "GetNamespace"))?;
        tracing::info!(namespace = name, id = %id, "created");
        namespace.ok_or_else(|| StepError::Conflict {
            resource: NAMESPACE_COMPONENT.into(),
            message: format!("namespace {id} was created but cannot be read back; run deploy again"),
        })
    }

    async fn converge(&self, ctx: &Context, mode: Mode) -> Result<Vec<Change>, StepError> {
        let engine = Engine::new(ctx, STEP, mode);
        let ns_name = ctx.names.namespace();
        // The namespace is found by name, so the lookup runs while the VPC is still coming.
        let (found, network) = tokio::try_join!(self.find_namespaces(&ns_name), ctx.wait::<NetworkOutputs>(STEP))?;
        let settings = &ctx.config.discovery;
        let wanted: Vec<&str> = ctx.config.services.iter().filter(|s| s.discovery).map(|s| s.name.as_str()).collect();
        let desired_records = vec![DnsRecordSpec { record_type: RECORD_TYPE.into(), ttl: settings.dns_ttl }];

        let existing = if is_known(&network.vpc_id) {
            found.into_iter().next()
        } else if mode.is_apply() {
            return Err(StepError::MissingOutput {
                step: STEP.into(),
                output: OutputKind::Network.to_string(),
                why: "its VPC id is not known yet (the network step has not created the VPC)".into(),
            });
        } else {
            // The VPC does not exist yet, so neither can a namespace in it.
            None
        };

        let created = existing.is_none();
        let namespace = match existing {
            Some(ns) => {
                engine.found(NAMESPACE_COMPONENT);
                ns
            }
            None if !mode.is_apply() => {
                engine.record(Change::create(NAMESPACE_COMPONENT, &ns_name));
                let mut services = BTreeMap::new();
                for service in &wanted {
                    engine.record(Change::create(service_component(service), *service));
                    services.insert(service.to_string(), DiscoveryService { id: PENDING.into(), arn: PENDING.into() });
                }
                ctx.put(DiscoveryOutputs {
                    namespace_id: PENDING.into(),
                    namespace_arn: PENDING.into(),
                    namespace_name: ns_name,
                    services,
                });
                return Ok(engine.into_changes());
            }
            None => {
                engine.working(NAMESPACE_COMPONENT, Action::Create);
                let namespace = self.create_namespace(ctx, &ns_name, &network.vpc_id).await?;
                engine.record(Change::create(NAMESPACE_COMPONENT, &ns_name));
                namespace
            }
        };

        // Every service of the namespace: the wanted ones are converged, the others pruned. A
        // namespace created just now holds none: nothing to list. (Should it be an older one after
        // all, a create of an existing service is adopted by the engine.)
        let observed = if created { BTreeMap::new() } else { self.find_services(&namespace.id, |_| true).await? };
        let kind = self.kind();
        // Published in part as soon as the namespace is there, then after each service: an ECS
        // service needs only its own (see `Context::wait_for`).
        let part = |services| DiscoveryOutputs {
            namespace_id: namespace.id.clone(),
            namespace_arn: namespace.arn.clone(),
            namespace_name: ns_name.clone(),
            services,
        };
        let made = Gathered::default();
        ctx.put_partial(part(BTreeMap::new()));
        let converged = wanted.iter().map(|service| {
            let component = service_component(service);
            let want = DesiredService {
                definition: ServiceDefinition {
                    name: service.to_string(),
                    namespace_id: namespace.id.clone(),
                    dns_records: desired_records.clone(),
                    routing_policy: ROUTING_POLICY.into(),
                    failure_threshold: settings.failure_threshold,
                    creator_request_id: creator_request_id(&["tap", ctx.names.env(), service, &namespace.id]),
                    description: service_description(&namespace.id),
                },
                tags: ctx.names.tags(&component, service),
            };
            let (engine, kind, have, made, part) = (&engine, &kind, observed.get(*service).cloned(), &made, &part);
            async move {
                let now = engine.converge(kind, &component, service, &want, have).await?;
                let service_now = match now {
                    Some(s) => DiscoveryService { id: s.id, arn: s.arn },
                    None => DiscoveryService { id: PENDING.into(), arn: PENDING.into() },
                };
                made.add(*service, service_now.clone(), |services| ctx.put_partial(part(services)));
                Ok::<_, StepError>(service_now)
            }
        });
        let services: BTreeMap<String, DiscoveryService> =
            wanted.iter().map(|s| s.to_string()).zip(try_join_all(converged).await?).collect();
        ctx.put(part(services));
        let undeclared = observed.values().filter(|s| !wanted.contains(&s.name.as_str()));
        self.prune(&engine, undeclared).await?;
        Ok(engine.into_changes())
    }

    /// Deletes (in plan mode: lists) the namespace's services that the config no longer declares
    /// and whose tags say they are this environment's. In apply mode only once the services step
    /// has published its outputs: it does so after removing the ECS services, which must be gone
    /// before their Cloud Map service can be. Reads the tags of undeclared services only, and
    /// waits only when there is something to delete.
    async fn prune<'a>(
        &self,
        engine: &Engine<'_>,
        undeclared: impl Iterator<Item = &'a ObservedService>,
    ) -> Result<(), StepError> {
        let ctx = engine.ctx();
        let env = ctx.names.env();
        let checks = undeclared.map(|service| async move {
            let component = service_component(&service.name);
            let tags = match self.api.list_tags(&service.arn).await {
                Ok(tags) => tags,
                Err(e) if e.is_not_found() => return Ok(None),
                Err(e) => return Err(StepError::aws(&component, "ListTagsForResource")(e)),
            };
            Ok(owned(&tags, env, || component.clone()).map(|id| resource::Owned {
                id,
                name: service.name.clone(),
                observed: service.clone(),
            }))
        });
        let owned: Vec<_> = try_join_all(checks).await?.into_iter().flatten().collect();
        if owned.is_empty() {
            return Ok(());
        }
        if engine.mode().is_apply() {
            ctx.wait::<ServicesOutputs>(STEP).await?;
        }
        engine.prune(&self.kind(), owned, &std::collections::BTreeSet::new()).await?;
        Ok(())
    }

    /// Deletes a namespace's services, then the namespace, waiting for its deletion.
    async fn delete_namespace(&self, engine: &Engine<'_>, namespace: &ObservedNamespace) -> Result<(), StepError> {
        let services = self.find_services(&namespace.id, |_| true).await?;
        let kind = self.kind();
        try_join_all(services.values().map(|s| {
            let (kind, component) = (&kind, service_component(&s.name));
            async move { engine.delete(kind, &component, &s.name, s).await }
        }))
        .await?;
        let in_use = |e: &StepError| e.aws_error().is_some_and(|a| a.is("ResourceInUse"));
        let op = retry_while(&format!("DeleteNamespace on {}", namespace.name), self.backoff, in_use, || async {
            match self.api.delete_namespace(&namespace.id).await {
                Ok(op) => Ok(Some(op)),
                Err(e) if e.is_not_found() => Ok(None),
                Err(e) => Err(StepError::aws(NAMESPACE_COMPONENT, "DeleteNamespace")(e)),
            }
        })
        .await?;
        if let Some(op) = op {
            engine.working(NAMESPACE_COMPONENT, Action::Delete);
            self.wait_operation(NAMESPACE_COMPONENT, "DeleteNamespace", &op).await?;
            tracing::info!(namespace = %namespace.name, id = %namespace.id, "deleted");
            engine.record(Change::delete(NAMESPACE_COMPONENT, &namespace.name));
        }
        Ok(())
    }
}

#[async_trait]
impl Step for DiscoveryStep {
    fn name(&self) -> &'static str {
        "discovery"
    }

    fn needs(&self) -> &'static [OutputKind] {
        &[OutputKind::Network]
    }

    fn produces(&self) -> OutputKind {
        OutputKind::Discovery
    }

    fn prune_reads(&self) -> &'static [OutputKind] {
        &[OutputKind::Services]
    }

    fn destroy_waits(&self) -> &'static [Gone] {
        &[Gone::EcsServices]
    }

    fn gives(&self) -> &'static [Gone] {
        &[Gone::Namespace]
    }

    #[tracing::instrument(skip_all, name = "discovery.plan")]
    async fn plan(&self, ctx: &Context) -> Result<Vec<Change>, StepError> {
        self.converge(ctx, Mode::Plan).await
    }

    #[tracing::instrument(skip_all, name = "discovery.apply")]
    async fn apply(&self, ctx: &Context) -> Result<Vec<Change>, StepError> {
        self.converge(ctx, Mode::Apply).await
    }

    #[tracing::instrument(skip_all, name = "discovery.destroy")]
    async fn destroy(&self, ctx: &Context) -> Result<Vec<Change>, StepError> {
        let namespaces = self.find_namespaces(&ctx.names.namespace()).await?;
        let engine = Engine::new(ctx, STEP, Mode::Apply);
        if !namespaces.is_empty() {
            // ECS deregisters a service's instances as its tasks stop.
            ctx.wait_gone(STEP, Gone::EcsServices).await?;
        }
        for namespace in &namespaces {
            self.delete_namespace(&engine, namespace).await?;
        }
        Ok(engine.into_changes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tap_core::naming::Names;
    use tap_core::outputs::SubnetRef;
    use tap_core::{Action, AttrChange, Config};

    fn ctx_with_vpc(vpc_id: &str) -> Context {
        let ctx = Context::new(Config::default());
        let subnet = |id: &str| SubnetRef { az: "us-east-1a".into(), id: id.into() };
        ctx.put(NetworkOutputs {
            vpc_id: vpc_id.into(),
            public_subnets: vec![subnet("subnet-a")],
            private_subnets: vec![subnet("subnet-b")],
        });
        ctx
    }

    fn ctx() -> Context {
        ctx_with_vpc("vpc-123")
    }

    fn namespace() -> ObservedNamespace {
        ObservedNamespace {
            id: "ns-1".into(),
            arn: "arn:aws:servicediscovery:us-east-1:123456789012:namespace/ns-1".into(),
            name: "tap-dev.local".into(),
        }
    }

    fn service(ttl: i64) -> ObservedService {
        ObservedService {
            id: "srv-1".into(),
            arn: "arn:aws:servicediscovery:us-east-1:123456789012:service/srv-1".into(),
            name: "processing-service".into(),
            namespace_id: Some("ns-1".into()),
            dns_records: vec![DnsRecordSpec { record_type: "A".into(), ttl }],
            routing_policy: Some("MULTIVALUE".into()),
            custom_health_check: Some(Some(1)),
            description: Some(service_description("ns-1")),
        }
    }

    /// How `ListServices` shows a service: no namespace id.
    fn listed(svc: ObservedService) -> ObservedService {
        ObservedService { namespace_id: None, ..svc }
    }

    /// Another environment's service of the same name, in namespace `ns-9`.
    fn foreign() -> ObservedService {
        ObservedService {
            id: "srv-9".into(),
            namespace_id: Some("ns-9".into()),
            description: Some(service_description("ns-9")),
            ..service(10)
        }
    }

    fn success(target: &str, id: &str) -> OperationState {
        OperationState {
            status: "SUCCESS".into(),
            error_code: None,
            error_message: None,
            targets: BTreeMap::from([(target.into(), id.into())]),
        }
    }

    fn no_mutations(mock: &mut MockCloudMapApi) {
        mock.expect_create_private_dns_namespace().never();
        mock.expect_create_service().never();
        mock.expect_update_service_dns().never();
        mock.expect_deregister_instance().never();
        mock.expect_delete_service().never();
        mock.expect_delete_namespace().never();
    }

    /// Namespace and service exist; `service` decides what the service looks like. The listing
    /// carries everything compared, so no `GetService` is made.
    fn existing(mock: &mut MockCloudMapApi, svc: ObservedService) {
        mock.expect_list_private_dns_namespaces().times(1).returning(|| {
            Ok(vec![
                ObservedNamespace { name: "tap-other.local".into(), id: "ns-9".into(), arn: "x".into() },
                namespace(),
            ])
        });
        let other = ObservedService { id: "srv-7".into(), name: "not-configured".into(), ..listed(service(10)) };
        mock.expect_list_services()
            .withf(|ns: &str| ns == "ns-1")
            .times(1)
            .returning(move |_| Ok(vec![listed(svc.clone()), other.clone()]));
        mock.expect_get_service().never();
        // The unconfigured service is a prune candidate: its tags say it is not tap's.
        mock.expect_list_tags().times(..=1).returning(|_| Ok(vec![]));
    }

    #[test]
    fn request_ids_are_deterministic_and_short() {
        assert_eq!(creator_request_id(&["tap", "dev", "namespace", "vpc-1"]), "tap-dev-namespace-vpc-1");
        let long = creator_request_id(&["tap", &"e".repeat(24), &"s".repeat(40), "ns-abcdefghijklmnop"]);
        assert_eq!(long.len(), 64);
        assert_eq!(long, creator_request_id(&["tap", &"e".repeat(24), &"s".repeat(40), "ns-abcdefghijklmnop"]));
        assert_ne!(long, creator_request_id(&["tap", &"e".repeat(24), &"s".repeat(40), "ns-abcdefghijklmnoq"]));
    }

    #[tokio::test]
    async fn creates_namespace_in_the_vpc_then_the_service() {
        let mut mock = MockCloudMapApi::new();
        mock.expect_list_private_dns_namespaces().times(1).returning(|| Ok(vec![]));
        mock.expect_create_private_dns_namespace()
            .withf(|name: &str, vpc: &str, token: &str, tags: &[Tag]| {
                name == "tap-dev.local"
                    && vpc == "vpc-123"
                    && token == "tap-dev-namespace-vpc-123"
                    && tags.contains(&("Environment".into(), "dev".into()))
                    && tags.contains(&("tap:component".into(), NAMESPACE_COMPONENT.into()))
            })
            .times(1)
            .returning(|_, _, _, _| Ok(NamespaceCreation::Operation("op-1".into())));
        let polls = AtomicUsize::new(0);
        mock.expect_get_operation().withf(|id: &str| id == "op-1").times(2).returning(move |_| {
            if polls.fetch_add(1, Ordering::SeqCst) == 0 {
                Ok(OperationState {
                    status: "SUBMITTED".into(),
                    error_code: None,
                    error_message: None,
                    targets: BTreeMap::new(),
                })
            } else {
                Ok(success("NAMESPACE", "ns-1"))
            }
        });
        mock.expect_get_namespace().withf(|id: &str| id == "ns-1").times(1).returning(|_| Ok(Some(namespace())));
        // A namespace created just now holds no services: no listing.
        mock.expect_list_services().never();
        mock.expect_create_service()
            .withf(|d: &ServiceDefinition, tags: &[Tag]| {
                d.name == "processing-service"
                    && d.namespace_id == "ns-1"
                    && d.dns_records == [DnsRecordSpec { record_type: "A".into(), ttl: 10 }]
                    && d.routing_policy == "MULTIVALUE"
                    && d.failure_threshold == 1
                    && d.creator_request_id == "tap-dev-processing-service-ns-1"
                    && d.description == service_description("ns-1")
                    && tags.contains(&("Name".into(), "processing-service".into()))
                    && tags.contains(&("tap:component".into(), "discovery/service/processing-service".into()))
            })
            .times(1)
            .returning(|_, _| Ok(service(10)));
        mock.expect_update_service_dns().never();
        let ctx = ctx();
        let changes = DiscoveryStep::new(Arc::new(mock)).apply(&ctx).await.unwrap();
        assert_eq!(
            changes,
            vec![
                Change::create(NAMESPACE_COMPONENT, "tap-dev.local"),
                Change::create("discovery/service/processing-service", "processing-service")
            ]
        );
        let out = ctx.get::<DiscoveryOutputs>("t").unwrap();
        assert_eq!((out.namespace_id.as_str(), out.namespace_name.as_str()), ("ns-1", "tap-dev.local"));
        assert_eq!(out.services["processing-service"].id, "srv-1");
        assert_eq!(out.services.len(), 1, "only services with discovery = true");
    }

    #[tokio::test]
    async fn matching_namespace_and_service_get_no_mutating_call() {
        let mut mock = MockCloudMapApi::new();
        existing(&mut mock, service(10));
        no_mutations(&mut mock);
        let ctx = ctx();
        assert!(DiscoveryStep::new(Arc::new(mock)).apply(&ctx).await.unwrap().is_empty());
        assert_eq!(ctx.get::<DiscoveryOutputs>("t").unwrap().services["processing-service"].arn, service(10).arn);
    }

    #[tokio::test]
    async fn a_listed_service_without_the_description_is_read_with_get_service() {
        // Created before tap described its services: GetService tells its namespace.
        let mut mock = MockCloudMapApi::new();
        mock.expect_list_private_dns_namespaces().times(1).returning(|| Ok(vec![namespace()]));
        mock.expect_list_services()
            .times(1)
            .returning(|_| Ok(vec![ObservedService { description: None, ..listed(service(10)) }]));
        mock.expect_get_service()
            .withf(|id: &str| id == "srv-1")
            .times(1)
            .returning(|_| Ok(Some(ObservedService { description: None, ..service(10) })));
        no_mutations(&mut mock);
        let ctx = ctx();
        assert!(DiscoveryStep::new(Arc::new(mock)).apply(&ctx).await.unwrap().is_empty());
        assert_eq!(ctx.get::<DiscoveryOutputs>("t").unwrap().services["processing-service"].id, "srv-1");
    }

    #[tokio::test]
    async fn another_namespaces_service_in_the_listing_is_not_taken_for_ours() {
        // An endpoint that ignores the namespace filter lists another environment's service.
        let mut mock = MockCloudMapApi::new();
        mock.expect_list_private_dns_namespaces().times(1).returning(|| Ok(vec![namespace()]));
        mock.expect_list_services().times(1).returning(|_| Ok(vec![listed(foreign())]));
        mock.expect_get_service().withf(|id: &str| id == "srv-9").times(1).returning(|_| Ok(Some(foreign())));
        mock.expect_create_service()
            .withf(|d: &ServiceDefinition, _: &[Tag]| d.namespace_id == "ns-1")
            .times(1)
            .returning(|_, _| Ok(service(10)));
        mock.expect_update_service_dns().never();
        let ctx = ctx();
        let changes = DiscoveryStep::new(Arc::new(mock)).apply(&ctx).await.unwrap();
        assert_eq!(changes, vec![Change::create("discovery/service/processing-service", "processing-service")]);
        assert_eq!(ctx.get::<DiscoveryOutputs>("t").unwrap().services["processing-service"].id, "srv-1");

        // Both listed: ours is recognized by its description, the other one is not even read.
        let mut mock = MockCloudMapApi::new();
        mock.expect_list_private_dns_namespaces().times(1).returning(|| Ok(vec![namespace()]));
        mock.expect_list_services().times(1).returning(|_| Ok(vec![listed(foreign()), listed(service(10))]));
        mock.expect_get_service().never();
        no_mutations(&mut mock);
        let ctx = ctx_with_vpc("vpc-123");
        assert!(DiscoveryStep::new(Arc::new(mock)).apply(&ctx).await.unwrap().is_empty());
        assert_eq!(ctx.get::<DiscoveryOutputs>("t").unwrap().services["processing-service"].id, "srv-1");
    }

    #[tokio::test]
    async fn drifted_ttl_gets_exactly_one_update() {
        let mut mock = MockCloudMapApi::new();
        existing(&mut mock, service(60));
        mock.expect_update_service_dns()
            .withf(|id: &str, records: &[DnsRecordSpec]| {
                id == "srv-1" && records == [DnsRecordSpec { record_type: "A".into(), ttl: 10 }]
            })
            .times(1)
            .returning(|_, _| Ok("op-2".into()));
        mock.expect_get_operation()
            .withf(|id: &str| id == "op-2")
            .times(1)
            .returning(|_| Ok(success("SERVICE", "srv-1")));
        mock.expect_create_private_dns_namespace().never();
        mock.expect_create_service().never();
        let changes = DiscoveryStep::new(Arc::new(mock)).apply(&ctx()).await.unwrap();
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].action, Action::Update);
        assert_eq!(
            changes[0].attributes,
            vec![AttrChange::new("dns_records", Some("A ttl=60".into()), Some("A ttl=10".into()))]
        );
    }

    #[tokio::test]
    async fn routing_policy_cannot_be_changed_in_place() {
        let mut mock = MockCloudMapApi::new();
        existing(&mut mock, ObservedService { routing_policy: Some("WEIGHTED".into()), ..service(10) });
        no_mutations(&mut mock);
        let err = DiscoveryStep::new(Arc::new(mock)).apply(&ctx()).await.unwrap_err();
        assert!(matches!(err, StepError::Conflict { .. }), "{err}");
        assert!(err.to_string().contains("WEIGHTED"), "{err}");
    }

    #[tokio::test]
    async fn failed_operation_fails_clearly() {
        let mut mock = MockCloudMapApi::new();
        mock.expect_list_private_dns_namespaces().returning(|| Ok(vec![]));
        mock.expect_create_private_dns_namespace()
            .returning(|_, _, _, _| Ok(NamespaceCreation::Operation("op-1".into())));
        mock.expect_get_operation().returning(|_| {
            Ok(OperationState {
                status: "FAIL".into(),
                error_code: Some("CANNOT_CREATE_HOSTED_ZONE".into()),
                error_message: Some("the VPC has no DNS support".into()),
                targets: BTreeMap::new(),
            })
        });
        mock.expect_create_service().never();
        let err = DiscoveryStep::new(Arc::new(mock)).apply(&ctx()).await.unwrap_err().to_string();
        assert!(
            err.contains("CreatePrivateDnsNamespace")
                && err.contains("CANNOT_CREATE_HOSTED_ZONE")
                && err.contains("DNS support"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn throttling_surfaces_as_retryable() {
        let mut mock = MockCloudMapApi::new();
        mock.expect_list_private_dns_namespaces().returning(|| Err(AwsError::throttling()));
        no_mutations(&mut mock);
        let err = DiscoveryStep::new(Arc::new(mock)).apply(&ctx()).await.unwrap_err();
        assert!(err.is_retryable(), "{err}");
        assert!(err.to_string().contains("ListNamespaces"), "{err}");
    }

    #[tokio::test]
    async fn plan_makes_no_mutating_call() {
        let mut mock = MockCloudMapApi::new();
        mock.expect_list_private_dns_namespaces().times(1).returning(|| Ok(vec![]));
        no_mutations(&mut mock);
        let ctx = ctx();
        let changes = DiscoveryStep::new(Arc::new(mock)).plan(&ctx).await.unwrap();
        assert_eq!(changes.len(), 2);
        assert!(changes.iter().all(|c| c.action == Action::Create));
        assert_eq!(ctx.get::<DiscoveryOutputs>("t").unwrap().namespace_id, PENDING);

        let mut mock = MockCloudMapApi::new();
        existing(&mut mock, service(300));
        no_mutations(&mut mock);
        let changes = DiscoveryStep::new(Arc::new(mock)).plan(&ctx).await.unwrap();
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].action, Action::Update);
    }

    #[tokio::test]
    async fn a_namespace_whose_create_answer_was_lost_is_adopted() {
        let mut mock = MockCloudMapApi::new();
        let listed = AtomicUsize::new(0);
        // Not there at the first look; there once the resent create says its domain exists.
        mock.expect_list_private_dns_namespaces()
            .times(2)
            .returning(move || Ok(if listed.fetch_add(1, Ordering::SeqCst) == 0 { vec![] } else { vec![namespace()] }));
        mock.expect_create_private_dns_namespace()
            .times(1)
            .returning(|_, _, _, _| Err(AwsError::new("ConflictingDomainExists", "vpc-123")));
        mock.expect_get_namespace().withf(|id: &str| id == "ns-1").times(1).returning(|_| Ok(Some(namespace())));
        mock.expect_list_services().never();
        mock.expect_create_service().times(1).returning(|d, _| Ok(service(d.dns_records[0].ttl)));
        let ctx = ctx_with_vpc("vpc-123");
        DiscoveryStep::new(Arc::new(mock)).apply(&ctx).await.unwrap();
        assert_eq!(ctx.get::<DiscoveryOutputs>("t").unwrap().namespace_id, "ns-1");
    }

    #[tokio::test]
    async fn plan_with_a_pending_vpc_calls_nothing_with_it() {
        // Only the lookup by name (it runs while the VPC is still coming): any other call fails the test.
        let mut mock = MockCloudMapApi::new();
        mock.expect_list_private_dns_namespaces().times(1).returning(|| Ok(vec![]));
        let ctx = ctx_with_vpc(PENDING);
        let changes = DiscoveryStep::new(Arc::new(mock)).plan(&ctx).await.unwrap();
        assert_eq!(changes.len(), 2);
        let out = ctx.get::<DiscoveryOutputs>("t").unwrap();
        assert_eq!((out.namespace_id.as_str(), out.services["processing-service"].id.as_str()), (PENDING, PENDING));
    }

    #[tokio::test]
    async fn apply_with_a_pending_vpc_is_refused() {
        let mut mock = MockCloudMapApi::new();
        mock.expect_list_private_dns_namespaces().times(1).returning(|| Ok(vec![]));
        let err = DiscoveryStep::new(Arc::new(mock)).apply(&ctx_with_vpc(PENDING)).await.unwrap_err();
        assert!(matches!(err, StepError::MissingOutput { .. }), "{err}");
    }

    #[tokio::test]
    async fn destroy_on_an_empty_environment_succeeds() {
        let mut mock = MockCloudMapApi::new();
        mock.expect_list_private_dns_namespaces().times(1).returning(|| Ok(vec![]));
        no_mutations(&mut mock);
        // destroy reads no other step's outputs: a context without network outputs works.
        let changes = DiscoveryStep::new(Arc::new(mock)).destroy(&Context::new(Config::default())).await.unwrap();
        assert!(changes.is_empty());
    }

    #[tokio::test]
    async fn destroy_deregisters_deletes_services_then_namespace() {
        let mut mock = MockCloudMapApi::new();
        mock.expect_list_private_dns_namespaces().times(1).returning(|| Ok(vec![namespace()]));
        mock.expect_list_services()
            .withf(|ns: &str| ns == "ns-1")
            .times(1)
            .returning(|_| Ok(vec![listed(service(10))]));
        mock.expect_get_service().never();
        mock.expect_list_instances()
            .withf(|id: &str| id == "srv-1")
            .times(1)
            .returning(|_| Ok(vec!["10.0.10.5".into()]));
        mock.expect_deregister_instance()
            .withf(|srv: &str, inst: &str| srv == "srv-1" && inst == "10.0.10.5")
            .times(1)
            .returning(|_, _| Ok("op-d".into()));
        mock.expect_get_operation()
            .withf(|id: &str| id == "op-d")
            .times(1)
            .returning(|_| Ok(success("INSTANCE", "10.0.10.5")));
        let in_use_once = AtomicUsize::new(0);
        mock.expect_delete_service().withf(|id: &str| id == "srv-1").times(2).returning(move |_| {
            if in_use_once.fetch_add(1, Ordering::SeqCst) == 0 {
                Err(AwsError::new("ResourceInUse", "instances are still registered"))
            } else {
                Ok(())
            }
        });
        mock.expect_delete_namespace().withf(|id: &str| id == "ns-1").times(1).returning(|_| Ok("op-n".into()));
        mock.expect_get_operation()
            .withf(|id: &str| id == "op-n")
            .times(1)
            .returning(|_| Ok(success("NAMESPACE", "ns-1")));
        let changes = DiscoveryStep::new(Arc::new(mock)).destroy(&Context::new(Config::default())).await.unwrap();
        assert_eq!(
            changes,
            vec![
                Change::delete("discovery/service/processing-service", "processing-service"),
                Change::delete(NAMESPACE_COMPONENT, "tap-dev.local")
            ]
        );
    }

    #[tokio::test]
    async fn destroy_treats_not_found_as_done() {
        let mut mock = MockCloudMapApi::new();
        mock.expect_list_private_dns_namespaces().returning(|| Ok(vec![namespace()]));
        mock.expect_list_services()
            .returning(|_| Ok(vec![ObservedService { description: None, ..listed(service(10)) }]));
        mock.expect_get_service().returning(|_| Ok(Some(service(10))));
        mock.expect_list_instances().returning(|_| Ok(vec![]));
        mock.expect_delete_service().times(1).returning(|_| Err(AwsError::new("ServiceNotFound", "gone")));
        mock.expect_delete_namespace().times(1).returning(|_| Err(AwsError::new("NamespaceNotFound", "gone")));
        let changes = DiscoveryStep::new(Arc::new(mock)).destroy(&Context::new(Config::default())).await.unwrap();
        assert!(changes.is_empty());
    }

    /// A tap-made Cloud Map service of this environment that the config no longer declares.
    fn removed() -> ObservedService {
        ObservedService {
            id: "srv-5".into(),
            arn: "arn:aws:servicediscovery:us-east-1:123456789012:service/srv-5".into(),
            name: "old-worker".into(),
            ..service(10)
        }
    }

    fn with_removed(mock: &mut MockCloudMapApi) {
        mock.expect_list_private_dns_namespaces().times(1).returning(|| Ok(vec![namespace()]));
        let hand_made = ObservedService {
            id: "srv-6".into(),
            arn: "arn:aws:servicediscovery:us-east-1:123456789012:service/srv-6".into(),
            name: "hand-made".into(),
            ..service(10)
        };
        mock.expect_list_services()
            .times(1)
            .returning(move |_| Ok(vec![listed(service(10)), listed(removed()), listed(hand_made.clone())]));
        mock.expect_get_service().never();
        mock.expect_list_tags().times(2).returning(|arn| {
            Ok(if arn.ends_with("srv-5") {
                Names::new(&Config::default()).tags("discovery/service/old-worker", "old-worker")
            } else {
                // In the namespace, but not tagged by tap for this environment: left alone.
                vec![("Environment".into(), "dev".into())]
            })
        });
        mock.expect_create_service().never();
        mock.expect_update_service_dns().never();
        mock.expect_delete_namespace().never();
    }

    #[tokio::test]
    async fn plan_lists_a_removed_service_without_waiting_for_the_services_step() {
        let mut mock = MockCloudMapApi::new();
        with_removed(&mut mock);
        no_mutations(&mut mock);
        mock.expect_list_instances().never();
        // No ServicesOutputs in the context: plan must not wait for it.
        let changes = DiscoveryStep::new(Arc::new(mock)).plan(&ctx()).await.unwrap();
        assert_eq!(changes, vec![Change::delete("discovery/service/old-worker", "old-worker")]);
    }

    #[tokio::test]
    async fn a_removed_service_is_deleted_once_the_services_step_is_done() {
        let mut mock = MockCloudMapApi::new();
        with_removed(&mut mock);
        let deleted = Arc::new(AtomicUsize::new(0));
        mock.expect_list_instances().withf(|id: &str| id == "srv-5").times(1).returning(|_| Ok(vec![]));
        let d = deleted.clone();
        mock.expect_delete_service().withf(|id: &str| id == "srv-5").times(1).returning(move |_| {
            d.fetch_add(1, Ordering::SeqCst);
            Ok(())
        });
        let ctx = ctx();
        ctx.expect([OutputKind::Services]);
        let step = DiscoveryStep::new(Arc::new(mock));
        let apply = step.apply(&ctx);
        tokio::pin!(apply);
        // The step publishes its outputs, then waits for the services step before deleting.
        tokio::select! {
            _ = &mut apply => panic!("deleted before the services step published its outputs"),
            _ = tokio::time::sleep(std::time::Duration::from_millis(50)) => {}
        }
        assert!(ctx.try_get::<DiscoveryOutputs>().is_some(), "outputs published before the prune");
        assert_eq!(deleted.load(Ordering::SeqCst), 0);
        ctx.put(ServicesOutputs { service_arns: BTreeMap::new() });
        let changes = apply.await.unwrap();
        assert_eq!(changes, vec![Change::delete("discovery/service/old-worker", "old-worker")]);
        assert_eq!(deleted.load(Ordering::SeqCst), 1);
    }
}
