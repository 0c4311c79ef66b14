//! The Cloud Map service kind: A records with a TTL, routing MULTIVALUE and a custom health check.
//! The TTL is updated in place (an asynchronous operation, waited for); a routing policy or a
//! missing custom health check cannot be changed in place and is a conflict. Delete deregisters the
//! instances left (ECS registers them); while Cloud Map still reports them in use the delete is
//! held, and the engine sends it again with backoff.

use std::collections::BTreeMap;

use async_trait::async_trait;
use futures::future::try_join_all;
use tap_core::error::IfFound;
use tap_core::naming::Tag;
use tap_core::resource::{owned, ActionError, Deleted, Diff, During, Owned, Owner, Resource};
use tap_core::wait::Backoff;
use tap_core::{AttrChange, AwsError, StepError};

use crate::api::{CloudMapApi, DnsRecordSpec, ObservedService, ServiceDefinition};
use crate::operation::wait_operation;
use crate::NAMESPACE_COMPONENT;

/// Logical id of the Cloud Map service of `service`.
pub fn service_component(service: &str) -> String {
    format!("discovery/service/{service}")
}

/// The description tap gives a Cloud Map service of the namespace `namespace_id`, so a listing
/// shows which namespace the service belongs to.
pub fn service_description(namespace_id: &str) -> String {
    format!("tap service discovery in namespace {namespace_id}")
}

/// A Cloud Map service as the config wants it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredService {
    /// The definition sent to CreateService.
    pub definition: ServiceDefinition,
    /// Tags set at creation.
    pub tags: Vec<Tag>,
}

/// The Cloud Map service kind over the crate's AWS seam.
pub(crate) struct CloudMapService<'a> {
    pub api: &'a dyn CloudMapApi,
    pub backoff: Backoff,
}

impl CloudMapService<'_> {
    /// The services of namespace `namespace_id`, by name (one `ListServices`). A listed service
    /// whose description names this namespace (tap writes it on create) is taken as listed;
    /// `GetService` reads any other (one created before tap wrote descriptions, or another
    /// namespace's, listed by an endpoint that ignores the filter), kept only when it is in this
    /// namespace: two environments' services of the same name are never mixed up.
    pub async fn find_in(&self, namespace_id: &str) -> Result<BTreeMap<String, ObservedService>, StepError> {
        let listed =
            self.api.list_services(namespace_id).await.map_err(StepError::aws(NAMESPACE_COMPONENT, "ListServices"))?;
        let marker = service_description(namespace_id);
        let (marked, unmarked): (Vec<ObservedService>, Vec<ObservedService>) =
            listed.into_iter().partition(|s| s.description.as_deref() == Some(marker.as_str()));
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

    /// Those of `services` whose tags say they are environment `env`'s (one
    /// `ListTagsForResource` each), as the engine prunes them.
    pub async fn owned_among<'s>(
        &self,
        services: impl Iterator<Item = &'s ObservedService>,
        env: &str,
    ) -> Result<Vec<Owned<ObservedService>>, StepError> {
        let checks = services.map(|service| async move {
            let component = service_component(&service.name);
            // Gone meanwhile: nothing to prune.
            let Some(tags) = self
                .api
                .list_tags(&service.arn)
                .await
                .if_found()
                .map_err(StepError::aws(&component, "ListTagsForResource"))?
            else {
                return Ok(None);
            };
            Ok(owned(&tags, env, || component.clone()).map(|id| Owned {
                id,
                name: service.name.clone(),
                observed: service.clone(),
            }))
        });
        Ok(try_join_all(checks).await?.into_iter().flatten().collect())
    }
}

#[async_trait]
impl Resource for CloudMapService<'_> {
    type Desired = DesiredService;
    type Observed = ObservedService;
    /// The DNS record templates to set.
    type Update = Vec<DnsRecordSpec>;
    const CREATE: &'static str = "CreateService";

    /// Its namespace's: a Cloud Map service is found only among the services of this
    /// environment's own namespace `tap-{s}.local` (a name no other environment derives: the
    /// suffix is the whole name), so no other environment's service is seen here; reading each
    /// service's tags would cost a call per service and tell nothing more. The prune still checks
    /// the tags of what it deletes.
    async fn owner(&self, _have: &ObservedService, _env: &str) -> Result<Owner, ActionError> {
        Ok(Owner::This)
    }

    fn diff(&self, want: &DesiredService, have: &ObservedService) -> Result<Option<Diff<Vec<DnsRecordSpec>>>, String> {
        let definition = &want.definition;
        // What Cloud Map cannot change on an existing service.
        if have.routing_policy.as_deref() != Some(definition.routing_policy.as_str()) {
            return Err(format!(
                "Cloud Map service {} ({}) has routing policy {:?}, the config wants {}; Cloud Map cannot change it in place: \
                 delete the service (tap destroy, or DeleteService after removing its ECS service) and deploy again",
                definition.name,
                have.id,
                have.routing_policy.as_deref().unwrap_or("none"),
                definition.routing_policy
            ));
        }
        match have.custom_health_check {
            None => {
                return Err(format!(
                    "Cloud Map service {} ({}) has no custom health check, which ECS needs; Cloud Map cannot add it in place: \
                     delete the service and deploy again",
                    definition.name, have.id
                ))
            }
            Some(Some(threshold)) if threshold != definition.failure_threshold => {
                // AWS keeps this value fixed (it is deprecated and always 1), so it is not drift tap can act on.
                tracing::warn!(service = %definition.name, observed = threshold, configured = definition.failure_threshold, "custom health check failure threshold differs; Cloud Map cannot change it");
            }
            Some(_) => {}
        }
        let mut observed_records = have.dns_records.clone();
        observed_records.sort();
        let mut desired_records = definition.dns_records.clone();
        desired_records.sort();
        if observed_records == desired_records {
            return Ok(None);
        }
        let show =
            |records: &[DnsRecordSpec]| Some(records.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "));
        let attrs = vec![AttrChange::new("dns_records", show(&observed_records), show(&desired_records))];
        Ok(Some(Diff::new(desired_records, attrs)))
    }

    async fn find(&self, want: &DesiredService) -> Result<Option<ObservedService>, AwsError> {
        let definition = &want.definition;
        let listed = self.api.list_services(&definition.namespace_id).await?;
        Ok(listed.into_iter().find(|s| {
            s.name == definition.name
                && (s.namespace_id.as_deref() == Some(definition.namespace_id.as_str())
                    || s.description.as_deref() == Some(definition.description.as_str()))
        }))
    }

    async fn create(&self, want: &DesiredService) -> Result<ObservedService, AwsError> {
        self.api.create_service(&want.definition, &want.tags).await
    }

    /// The service with its new records.
    async fn update(
        &self,
        have: &ObservedService,
        records: &Vec<DnsRecordSpec>,
    ) -> Result<ObservedService, ActionError> {
        let op = self.api.update_service_dns(&have.id, records).await.during("UpdateService")?;
        wait_operation(self.api, self.backoff, &service_component(&have.name), "UpdateService", &op).await?;
        Ok(ObservedService { dns_records: records.clone(), ..have.clone() })
    }

    /// Deregisters the instances left (ECS registers them; each deregistration is an operation,
    /// waited for), then deletes the service. Gone at any point (a not-found answer): no change.
    async fn delete(&self, have: &ObservedService) -> Result<Deleted, ActionError> {
        let resource = service_component(&have.name);
        let Some(instances) = self.api.list_instances(&have.id).await.if_found().during("ListInstances")? else {
            return Ok(Deleted::AlreadyGone);
        };
        try_join_all(instances.iter().map(|instance| {
            let resource = &resource;
            async move {
                let deregistration =
                    self.api.deregister_instance(&have.id, instance).await.if_found().during("DeregisterInstance")?;
                match deregistration {
                    Some(op) => {
                        wait_operation(self.api, self.backoff, resource, "DeregisterInstance", &op).await.map(drop)
                    }
                    None => Ok(()),
                }
            }
        }))
        .await?;
        match self.api.delete_service(&have.id).await.if_found().during("DeleteService")? {
            Some(()) => {
                tracing::info!(service = %have.name, "deleted");
                Ok(Deleted::Now)
            }
            None => Ok(Deleted::AlreadyGone),
        }
    }

    /// Cloud Map still counts an instance whose deregistration just succeeded (it settles
    /// shortly after): the engine deletes again, backing off.
    fn held(&self, error: &AwsError) -> bool {
        error.is("ResourceInUse")
    }
}
