//! The narrow seam over Cloud Map (`servicediscovery`): exactly the calls the discovery step
//! makes, with small domain types instead of SDK types ([`SdkCloudMap`](crate::SdkCloudMap) is
//! its one implementation).

use std::collections::BTreeMap;

use async_trait::async_trait;
use tap_core::naming::Tag;
use tap_core::AwsError;

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
    /// Description: [`service_description`](crate::service_description) of the namespace, so a
    /// listing shows which namespace the service belongs to.
    pub description: String,
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
