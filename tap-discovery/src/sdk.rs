//! [`CloudMapApi`] over the real SDK client. Every listing goes through the SDK's paginator.

use async_trait::async_trait;
use aws_sdk_servicediscovery::operation::create_private_dns_namespace::CreatePrivateDnsNamespaceError;
use aws_sdk_servicediscovery::operation::create_service::CreateServiceError;
use aws_sdk_servicediscovery::operation::delete_namespace::DeleteNamespaceError;
use aws_sdk_servicediscovery::types::{
    DnsConfig, DnsConfigChange, DnsRecord, FilterCondition, HealthCheckCustomConfig, NamespaceFilter,
    NamespaceFilterName, NamespaceType, RecordType, RoutingPolicy, ServiceChange, ServiceFilter, ServiceFilterName,
};
use tap_core::error::IfFound;
use tap_core::idempotent::NoBlindRetry;
use tap_core::naming::Tag;
use tap_core::AwsError;

use crate::api::{
    CloudMapApi, DnsRecordSpec, NamespaceCreation, ObservedNamespace, ObservedService, OperationState,
    ServiceDefinition,
};

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

/// An [`ObservedService`] from a `Service` (`GetService`, `CreateService`) or a `ServiceSummary`
/// (`ListServices`, which carries no namespace id): the two SDK types share these getters.
macro_rules! observed_service {
    ($s:expr, $namespace_id:expr) => {{
        let dns = $s.dns_config();
        ObservedService {
            id: $s.id().unwrap_or_default().to_owned(),
            arn: $s.arn().unwrap_or_default().to_owned(),
            name: $s.name().unwrap_or_default().to_owned(),
            namespace_id: $namespace_id,
            dns_records: dns.map(records_of).unwrap_or_default(),
            routing_policy: dns.and_then(|d| d.routing_policy()).map(|p| p.as_str().to_owned()),
            custom_health_check: $s.health_check_custom_config().map(|c| c.failure_threshold()),
            description: $s.description().map(str::to_owned),
        }
    }};
}

// `FailureThreshold` is deprecated (AWS keeps it at 1) but still part of the API; the SPEC sets it.
#[allow(deprecated)]
fn observed_service(s: &aws_sdk_servicediscovery::types::Service) -> ObservedService {
    observed_service!(s, s.namespace_id().map(str::to_owned))
}

/// The DNS records of a service's DNS config, as tap compares them.
fn records_of(dns: &aws_sdk_servicediscovery::types::DnsConfig) -> Vec<DnsRecordSpec> {
    dns.dns_records()
        .iter()
        .map(|r| DnsRecordSpec { record_type: r.r#type().as_str().to_owned(), ttl: r.ttl() })
        .collect()
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
        let pages: Vec<_> = self.0.list_namespaces().filters(filter).into_paginator().send().try_collect().await?;
        // The filter is the API's job; an endpoint that ignores it must not mix in public namespaces.
        Ok(pages
            .iter()
            .flat_map(|page| page.namespaces())
            .filter(|n| n.r#type() == Some(&NamespaceType::DnsPrivate))
            .map(|n| ObservedNamespace {
                id: n.id().unwrap_or_default().to_owned(),
                arn: n.arn().unwrap_or_default().to_owned(),
                name: n.name().unwrap_or_default().to_owned(),
            })
            .collect())
    }

    async fn get_namespace(&self, id: &str) -> Result<Option<ObservedNamespace>, AwsError> {
        let out = self.0.get_namespace().id(id).send().await.map_err(AwsError::from).if_found()?;
        Ok(out.as_ref().and_then(|out| out.namespace()).map(|n| ObservedNamespace {
            id: n.id().unwrap_or_default().to_owned(),
            arn: n.arn().unwrap_or_default().to_owned(),
            name: n.name().unwrap_or_default().to_owned(),
        }))
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
        let pages: Vec<_> = self.0.list_services().filters(filter).into_paginator().send().try_collect().await?;
        #[allow(deprecated)] // `FailureThreshold`, as in `observed_service`.
        let services = pages.iter().flat_map(|page| page.services()).map(|s| observed_service!(s, None)).collect();
        Ok(services)
    }

    async fn get_service(&self, id: &str) -> Result<Option<ObservedService>, AwsError> {
        let out = self.0.get_service().id(id).send().await.map_err(AwsError::from).if_found()?;
        Ok(out.as_ref().and_then(|out| out.service()).map(observed_service))
    }

    /// `CreatorRequestId` makes a resent create idempotent on AWS, but not every endpoint honours
    /// it (moto does not): the SDK does not resend a create whose answer was lost, and the engine
    /// looks the service up and adopts it before creating again. A service of that name already in
    /// the namespace is read and returned (the engine then checks whose it is).
    // `FailureThreshold` is deprecated (AWS keeps it at 1) but still part of the API; the SPEC sets it.
    #[allow(deprecated)]
    async fn create_service(&self, definition: &ServiceDefinition, tags: &[Tag]) -> Result<ObservedService, AwsError> {
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

    async fn update_service_dns(&self, id: &str, records: &[DnsRecordSpec]) -> Result<String, AwsError> {
        let change =
            DnsConfigChange::builder().set_dns_records(Some(sdk_records(records)?)).build().map_err(build_error)?;
        let out =
            self.0.update_service().id(id).service(ServiceChange::builder().dns_config(change).build()).send().await?;
        out.operation_id().map(str::to_owned).ok_or_else(|| AwsError::new("InvalidResponse", "no OperationId"))
    }

    async fn list_instances(&self, service_id: &str) -> Result<Vec<String>, AwsError> {
        let pages: Vec<_> =
            self.0.list_instances().service_id(service_id).into_paginator().send().try_collect().await?;
        Ok(pages.iter().flat_map(|page| page.instances()).filter_map(|i| i.id().map(str::to_owned)).collect())
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
