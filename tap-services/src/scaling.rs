//! Application Auto Scaling of each service's desired count: a scalable target (min/max) and a
//! target-tracking policy on average CPU. Both are found by their resource id
//! (`service/<cluster>/<service>`), not by tags (tagging is not available everywhere).

use async_trait::async_trait;
use tap_core::config::ServiceSpec;
use tap_core::error::IfFound;
use tap_core::resource::{ActionError, Deleted, Diff, During, Engine, Owner, Resource};
use tap_core::step::{diff, AttrChange};
use tap_core::{AwsError, Context, StepError};

use crate::api::{Observed, ServicesApi};
use crate::component;

/// The predefined metric tap tracks.
pub const CPU_METRIC: &str = "ECSServiceAverageCPUUtilization";

/// A registered scalable target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObservedScalableTarget {
    /// Minimum tasks.
    pub min_capacity: i32,
    /// Maximum tasks.
    pub max_capacity: i32,
}

/// A target-tracking scaling policy, as tap wants it.
#[derive(Debug, Clone, PartialEq)]
pub struct ScalingPolicySpec {
    /// Policy name, `tap-cpu-{service}-{s}`.
    pub name: String,
    /// Predefined metric, [`CPU_METRIC`].
    pub metric: String,
    /// Target value of the metric, percent.
    pub target_value: f64,
    /// Seconds between scale-in activities.
    pub scale_in_cooldown: i32,
    /// Seconds between scale-out activities.
    pub scale_out_cooldown: i32,
}

/// A scaling policy as AWS reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct ObservedScalingPolicy {
    /// Policy name.
    pub name: String,
    /// The resource it scales, `service/<cluster>/<service>`.
    pub resource_id: String,
    /// `TargetTrackingScaling`, `StepScaling`, …
    pub policy_type: String,
    /// The predefined metric, when there is one.
    pub metric: Option<String>,
    /// Target value (target tracking only).
    pub target_value: Option<f64>,
    /// Scale-in cooldown.
    pub scale_in_cooldown: Option<i32>,
    /// Scale-out cooldown.
    pub scale_out_cooldown: Option<i32>,
    /// Whether scale-in is disabled.
    pub disable_scale_in: bool,
}

/// `service/<cluster>/<service>`: the resource id of a service's desired count.
pub fn resource_id(cluster: &str, ecs_service: &str) -> String {
    format!("service/{cluster}/{ecs_service}")
}

/// The policy the config wants for `service`.
pub(crate) fn desired_policy(ctx: &Context, service: &str) -> ScalingPolicySpec {
    let s = &ctx.config.scaling;
    ScalingPolicySpec {
        name: ctx.names.name(&format!("cpu-{service}")),
        metric: CPU_METRIC.into(),
        target_value: s.cpu_target,
        scale_in_cooldown: s.scale_in_cooldown,
        scale_out_cooldown: s.scale_out_cooldown,
    }
}

fn policy_changes(observed: &ObservedScalingPolicy, desired: &ScalingPolicySpec) -> Vec<AttrChange> {
    let mut attrs = Vec::new();
    diff(&mut attrs, "policy_type", &observed.policy_type.as_str(), &"TargetTrackingScaling");
    diff(&mut attrs, "metric", &observed.metric.as_deref(), &Some(desired.metric.as_str()));
    if observed.target_value.is_none_or(|v| (v - desired.target_value).abs() > 1e-9) {
        diff(&mut attrs, "target_value", &observed.target_value, &Some(desired.target_value));
    }
    diff(&mut attrs, "scale_in_cooldown", &observed.scale_in_cooldown, &Some(desired.scale_in_cooldown));
    diff(&mut attrs, "scale_out_cooldown", &observed.scale_out_cooldown, &Some(desired.scale_out_cooldown));
    diff(&mut attrs, "disable_scale_in", &observed.disable_scale_in, &false);
    attrs
}

/// A scalable target as the engine handles it: its resource id and capacities.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `service/<cluster>/<service>`.
    pub resource_id: String,
    /// Minimum tasks.
    pub min_capacity: i32,
    /// Maximum tasks.
    pub max_capacity: i32,
}

/// A policy as the engine handles it: where it goes and what it says.
#[derive(Debug, Clone, PartialEq)]
pub struct DesiredPolicy {
    /// The resource it scales.
    pub resource_id: String,
    /// The policy.
    pub spec: ScalingPolicySpec,
}

/// Whether a scaling call failed because the target or policy is already gone (beside not-found,
/// Application Auto Scaling answers `ValidationException: No scalable target …`).
fn already_gone(e: &AwsError) -> bool {
    e.is("ValidationException") && e.message.contains("No scal")
}

/// The scalable-target kind. Found by resource id (not by tags: Application Auto Scaling tagging
/// is not available everywhere).
pub(crate) struct ScalingTarget<'a>(pub &'a dyn ServicesApi);

#[async_trait]
impl Resource for ScalingTarget<'_> {
    type Desired = Target;
    type Observed = Target;
    /// (min, max) to register.
    type Update = (i32, i32);
    const CREATE: &'static str = "RegisterScalableTarget";

    fn diff(&self, want: &Target, have: &Target) -> Result<Option<Diff<(i32, i32)>>, String> {
        let mut attrs = Vec::new();
        diff(&mut attrs, "min_capacity", &have.min_capacity, &want.min_capacity);
        diff(&mut attrs, "max_capacity", &have.max_capacity, &want.max_capacity);
        Ok((!attrs.is_empty()).then(|| Diff::new((want.min_capacity, want.max_capacity), attrs)))
    }

    async fn find(&self, want: &Target) -> Result<Option<Target>, AwsError> {
        let found = self.0.describe_scalable_targets(std::slice::from_ref(&want.resource_id)).await?;
        Ok(found.get(&want.resource_id).map(|t| Target {
            resource_id: want.resource_id.clone(),
            min_capacity: t.min_capacity,
            max_capacity: t.max_capacity,
        }))
    }

    /// Application Auto Scaling cannot be tagged everywhere (nor its tags read, in moto): a
    /// target's owner is its ECS service's. It is found by resource id
    /// `service/tap-cluster-{s}/<service>`, in this environment's own cluster, and converged only
    /// after the engine found that ECS service to be this environment's; the prune leaves out the
    /// targets of services that are not ([`crate::prune`]).
    async fn owner(&self, _have: &Target, _env: &str) -> Result<Owner, ActionError> {
        Ok(Owner::This)
    }

    async fn create(&self, want: &Target) -> Result<Target, AwsError> {
        self.0.register_scalable_target(&want.resource_id, want.min_capacity, want.max_capacity).await?;
        Ok(want.clone())
    }

    async fn update(&self, have: &Target, (min, max): &(i32, i32)) -> Result<Target, ActionError> {
        self.0.register_scalable_target(&have.resource_id, *min, *max).await.during("RegisterScalableTarget")?;
        Ok(have.clone())
    }

    async fn delete(&self, have: &Target) -> Result<Deleted, ActionError> {
        let deleted = self.0.deregister_scalable_target(&have.resource_id).await.if_found_or(already_gone);
        Ok(Deleted::unless_gone(deleted.during("DeregisterScalableTarget")?))
    }
}

/// The target-tracking policy kind, found by resource id and name.
pub(crate) struct ScalingPolicy<'a>(pub &'a dyn ServicesApi);

#[async_trait]
impl Resource for ScalingPolicy<'_> {
    type Desired = DesiredPolicy;
    type Observed = ObservedScalingPolicy;
    /// The policy to put (PutScalingPolicy replaces it whole).
    type Update = ScalingPolicySpec;
    const CREATE: &'static str = "PutScalingPolicy";

    fn diff(
        &self,
        want: &DesiredPolicy,
        have: &ObservedScalingPolicy,
    ) -> Result<Option<Diff<ScalingPolicySpec>>, String> {
        let attrs = policy_changes(have, &want.spec);
        Ok((!attrs.is_empty()).then(|| Diff::new(want.spec.clone(), attrs)))
    }

    async fn find(&self, want: &DesiredPolicy) -> Result<Option<ObservedScalingPolicy>, AwsError> {
        let found = self.0.describe_scaling_policies(&want.resource_id).await?;
        Ok(found.into_iter().find(|p| p.name == want.spec.name))
    }

    /// Like its scalable target's: its ECS service's (see [`ScalingTarget`]).
    async fn owner(&self, _have: &ObservedScalingPolicy, _env: &str) -> Result<Owner, ActionError> {
        Ok(Owner::This)
    }

    async fn create(&self, want: &DesiredPolicy) -> Result<ObservedScalingPolicy, AwsError> {
        self.0.put_scaling_policy(&want.resource_id, &want.spec).await?;
        Ok(ObservedScalingPolicy {
            name: want.spec.name.clone(),
            resource_id: want.resource_id.clone(),
            policy_type: "TargetTrackingScaling".into(),
            metric: Some(want.spec.metric.clone()),
            target_value: Some(want.spec.target_value),
            scale_in_cooldown: Some(want.spec.scale_in_cooldown),
            scale_out_cooldown: Some(want.spec.scale_out_cooldown),
            disable_scale_in: false,
        })
    }

    async fn update(
        &self,
        have: &ObservedScalingPolicy,
        spec: &ScalingPolicySpec,
    ) -> Result<ObservedScalingPolicy, ActionError> {
        self.0.put_scaling_policy(&have.resource_id, spec).await.during("PutScalingPolicy")?;
        Ok(have.clone())
    }

    async fn delete(&self, have: &ObservedScalingPolicy) -> Result<Deleted, ActionError> {
        let deleted = self.0.delete_scaling_policy(&have.resource_id, &have.name).await.if_found_or(already_gone);
        Ok(Deleted::unless_gone(deleted.during("DeleteScalingPolicy")?))
    }
}

/// Registers the scalable target and puts the CPU policy, each only when missing or different,
/// through the engine. `service_exists` is false when plan would create the service (nothing to
/// look up then); `observed` is the run's batched read.
pub(crate) async fn converge(
    engine: &Engine<'_>,
    api: &dyn ServicesApi,
    cluster: &str,
    service: &ServiceSpec,
    service_exists: bool,
    observed: &Observed,
) -> Result<(), StepError> {
    let ctx = engine.ctx();
    let rid = resource_id(cluster, &ctx.names.ecs_service(&service.name));
    let (min, max) = (ctx.config.scaling.min_capacity, ctx.config.scaling.max_capacity);
    let want = Target { resource_id: rid.clone(), min_capacity: min, max_capacity: max };
    let have = if service_exists { observed.scalable_targets.get(&rid) } else { None };
    let exists = have.is_some();
    let have =
        have.map(|t| Target { resource_id: rid.clone(), min_capacity: t.min_capacity, max_capacity: t.max_capacity });
    engine.converge(&ScalingTarget(api), &component("scaling-target", &service.name), &rid, &want, have).await?;

    let policy = DesiredPolicy { resource_id: rid.clone(), spec: desired_policy(ctx, &service.name) };
    let have =
        if exists { observed.scaling_policies.get(&(rid.clone(), policy.spec.name.clone())).cloned() } else { None };
    let name = policy.spec.name.clone();
    engine.converge(&ScalingPolicy(api), &component("scaling-policy", &service.name), &name, &policy, have).await?;
    Ok(())
}
