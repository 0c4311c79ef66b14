//! Application Auto Scaling of each service's desired count: a scalable target (min/max) and a
//! target-tracking policy on average CPU. Both are found by their resource id
//! (`service/<cluster>/<service>`), not by tags (tagging is not available everywhere).

use tap_core::config::ServiceSpec;
use tap_core::step::{diff, AttrChange};
use tap_core::{AwsError, Change, Context, Mode, StepError};

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

/// Registers the scalable target and puts the CPU policy, each only when missing or different.
/// `service_exists` is false when plan would create the service (nothing to look up then);
/// `observed` is the run's batched read.
pub(crate) async fn converge(
    api: &dyn ServicesApi,
    ctx: &Context,
    mode: Mode,
    cluster: &str,
    service: &ServiceSpec,
    service_exists: bool,
    observed: &Observed,
) -> Result<Vec<Change>, StepError> {
    let rid = resource_id(cluster, &ctx.names.ecs_service(&service.name));
    let target_resource = component("scaling-target", &service.name);
    let policy_resource = component("scaling-policy", &service.name);
    let (min, max) = (ctx.config.scaling.min_capacity, ctx.config.scaling.max_capacity);
    let policy = desired_policy(ctx, &service.name);
    let mut changes = Vec::new();

    let target = if service_exists { observed.scalable_targets.get(&rid).copied() } else { None };
    let target_change = match target {
        None => Some(Change::create(&target_resource, &rid)),
        Some(t) => {
            let mut attrs = Vec::new();
            diff(&mut attrs, "min_capacity", &t.min_capacity, &min);
            diff(&mut attrs, "max_capacity", &t.max_capacity, &max);
            (!attrs.is_empty()).then(|| Change::update(&target_resource, &rid, attrs))
        }
    };
    if let Some(change) = target_change {
        if mode.is_apply() {
            api.register_scalable_target(&rid, min, max)
                .await
                .map_err(StepError::aws(&target_resource, "RegisterScalableTarget"))?;
        }
        changes.push(change);
    }

    let current =
        if target.is_some() { observed.scaling_policies.get(&(rid.clone(), policy.name.clone())) } else { None };
    let policy_change = match current {
        None => Some(Change::create(&policy_resource, &policy.name)),
        Some(o) => {
            let attrs = policy_changes(o, &policy);
            (!attrs.is_empty()).then(|| Change::update(&policy_resource, &policy.name, attrs))
        }
    };
    if let Some(change) = policy_change {
        if mode.is_apply() {
            api.put_scaling_policy(&rid, &policy)
                .await
                .map_err(StepError::aws(&policy_resource, "PutScalingPolicy"))?;
        }
        changes.push(change);
    }
    Ok(changes)
}

/// Whether a scaling call failed because the target or policy is already gone.
fn already_gone(e: &AwsError) -> bool {
    e.is_not_found() || (e.is("ValidationException") && e.message.contains("No scal"))
}

/// Deletes every scaling policy of the service's resource id, then its scalable target.
pub(crate) async fn destroy(
    api: &dyn ServicesApi,
    cluster: &str,
    ecs_service: &str,
    label: &str,
) -> Result<Vec<Change>, StepError> {
    let rid = resource_id(cluster, ecs_service);
    let target_resource = component("scaling-target", label);
    let policy_resource = component("scaling-policy", label);
    let mut changes = Vec::new();
    let policies = api
        .describe_scaling_policies(&rid)
        .await
        .map_err(StepError::aws(&policy_resource, "DescribeScalingPolicies"))?;
    for p in policies {
        match api.delete_scaling_policy(&rid, &p.name).await {
            Ok(()) => changes.push(Change::delete(&policy_resource, &p.name)),
            Err(e) if already_gone(&e) => {}
            Err(e) => return Err(StepError::aws(&policy_resource, "DeleteScalingPolicy")(e)),
        }
    }
    let targets = api
        .describe_scalable_targets(std::slice::from_ref(&rid))
        .await
        .map_err(StepError::aws(&target_resource, "DescribeScalableTargets"))?;
    if targets.contains_key(&rid) {
        match api.deregister_scalable_target(&rid).await {
            Ok(()) => changes.push(Change::delete(&target_resource, &rid)),
            Err(e) if already_gone(&e) => {}
            Err(e) => return Err(StepError::aws(&target_resource, "DeregisterScalableTarget")(e)),
        }
    }
    Ok(changes)
}
