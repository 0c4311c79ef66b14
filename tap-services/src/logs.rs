//! CloudWatch Logs: one log group per service (`/ecs/tap-{service}-{s}`) with the configured
//! retention, tagged at creation; a drifted retention is put back.

use tap_core::config::ServiceSpec;
use tap_core::step::{diff, AttrChange};
use tap_core::{Change, Context, Mode, StepError};

use crate::api::{Observed, ServicesApi};
use crate::component;

/// A log group as AWS reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedLogGroup {
    /// Log group name.
    pub name: String,
    /// Retention in days; `None` means "never expire".
    pub retention_days: Option<i32>,
}

/// Creates the service's log group when it is missing; `observed` is the run's batched read. Its
/// retention is [`retention`]'s: the ECS service needs only the group to exist.
pub(crate) async fn create(
    api: &dyn ServicesApi,
    ctx: &Context,
    mode: Mode,
    service: &ServiceSpec,
    observed: &Observed,
) -> Result<Vec<Change>, StepError> {
    let name = ctx.names.log_group(&service.name);
    if observed.log_groups.contains_key(&name) {
        return Ok(vec![]);
    }
    let resource = component("log-group", &service.name);
    if mode.is_apply() {
        match api.create_log_group(&name, &ctx.names.tags(&resource, &name)).await {
            Ok(()) => {}
            // Created concurrently (e.g. by an interrupted run's retry): its retention is set next.
            Err(e) if e.is("ResourceAlreadyExistsException") => {}
            Err(e) => return Err(StepError::aws(&resource, "CreateLogGroup")(e)),
        }
    }
    Ok(vec![Change::create(resource, name)])
}

/// Sets the retention of a log group [`create`] made, or puts back a drifted one.
pub(crate) async fn retention(
    api: &dyn ServicesApi,
    ctx: &Context,
    mode: Mode,
    service: &ServiceSpec,
    observed: &Observed,
) -> Result<Vec<Change>, StepError> {
    let name = ctx.names.log_group(&service.name);
    let resource = component("log-group", &service.name);
    let days = ctx.config.logs.retention_days;
    let change = match observed.log_groups.get(&name) {
        // Just created: the creation is the change.
        None => None,
        Some(group) => {
            let mut attrs: Vec<AttrChange> = Vec::new();
            diff(&mut attrs, "retention_in_days", &group.retention_days, &Some(days));
            if attrs.is_empty() {
                return Ok(vec![]);
            }
            Some(Change::update(&resource, &name, attrs))
        }
    };
    if mode.is_apply() {
        api.put_retention_policy(&name, days).await.map_err(StepError::aws(&resource, "PutRetentionPolicy"))?;
    }
    Ok(change.into_iter().collect())
}

/// Deletes a service's log group; a missing one is already gone.
pub(crate) async fn destroy(api: &dyn ServicesApi, ctx: &Context, service: &str) -> Result<Vec<Change>, StepError> {
    let name = ctx.names.log_group(service);
    let resource = component("log-group", service);
    match api.delete_log_group(&name).await {
        Ok(()) => Ok(vec![Change::delete(resource, name)]),
        Err(e) if e.is_not_found() => Ok(vec![]),
        Err(e) => Err(StepError::aws(resource, "DeleteLogGroup")(e)),
    }
}
