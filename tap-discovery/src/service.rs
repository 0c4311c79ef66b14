//! The Cloud Map service kind: A records with a TTL, routing MULTIVALUE and a custom health check.
//! The TTL is updated in place (an asynchronous operation, waited for); a routing policy or a
//! missing custom health check cannot be changed in place and is a conflict. Delete deregisters the
//! instances left (ECS registers them) and retries while Cloud Map still reports them in use.

use async_trait::async_trait;
use futures::future::try_join_all;
use tap_core::naming::Tag;
use tap_core::resource::{ActionError, Deleted, Diff, Owner, Resource};
use tap_core::wait::{retry_while, Backoff};
use tap_core::{AttrChange, AwsError, StepError};

use crate::{wait_operation, CloudMapApi, DnsRecordSpec, ObservedService, ServiceDefinition};

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

/// A [`StepError`] of a helper, as the failed action of a life-cycle call.
fn action_error(action: &'static str, e: StepError) -> ActionError {
    match e {
        StepError::Aws { action, source, .. } => ActionError { action, source },
        other => ActionError { action, source: AwsError::new("Timeout", other.to_string()) },
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

    async fn update(
        &self,
        have: &ObservedService,
        records: &Vec<DnsRecordSpec>,
    ) -> Result<ObservedService, ActionError> {
        let op = self
            .api
            .update_service_dns(&have.id, records)
            .await
            .map_err(|source| ActionError { action: "UpdateService", source })?;
        let resource = format!("discovery/service/{}", have.name);
        wait_operation(self.api, self.backoff, &resource, "UpdateService", &op)
            .await
            .map_err(|e| action_error("UpdateService", e))?;
        Ok(have.clone())
    }

    /// A service already gone is a not-found (the engine counts no change).
    async fn delete(&self, have: &ObservedService) -> Result<Deleted, ActionError> {
        Ok(if self.remove(have).await? { Deleted::Now } else { Deleted::AlreadyGone })
    }
}

impl CloudMapService<'_> {
    /// Deletes the service; `false` when it was already gone.
    async fn remove(&self, have: &ObservedService) -> Result<bool, ActionError> {
        let resource = format!("discovery/service/{}", have.name);
        let instances = match self.api.list_instances(&have.id).await {
            Ok(instances) => instances,
            Err(e) if e.is_not_found() => return Ok(false),
            Err(source) => return Err(ActionError { action: "ListInstances", source }),
        };
        let deregistrations = instances.iter().map(|instance| {
            let resource = &resource;
            async move {
                match self.api.deregister_instance(&have.id, instance).await {
                    Ok(op) => wait_operation(self.api, self.backoff, resource, "DeregisterInstance", &op)
                        .await
                        .map(drop)
                        .map_err(|e| action_error("DeregisterInstance", e)),
                    Err(e) if e.is_not_found() => Ok(()),
                    Err(source) => Err(ActionError { action: "DeregisterInstance", source }),
                }
            }
        });
        try_join_all(deregistrations).await?;
        // Deregistration settles shortly after its operation reports success.
        let in_use = |e: &StepError| e.aws_error().is_some_and(|a| a.is("ResourceInUse"));
        let deleted = retry_while(&format!("DeleteService on {resource}"), self.backoff, in_use, || async {
            match self.api.delete_service(&have.id).await {
                Ok(()) => Ok(true),
                Err(e) if e.is_not_found() => Ok(false),
                Err(e) => Err(StepError::aws(&resource, "DeleteService")(e)),
            }
        })
        .await
        .map_err(|e| action_error("DeleteService", e))?;
        if deleted {
            tracing::info!(service = %have.name, "deleted");
        }
        Ok(deleted)
    }
}
