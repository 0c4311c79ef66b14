//! The narrow seam between the services step and AWS: exactly the SDK calls this crate makes,
//! returning small domain types (not SDK types) so unit tests can mock them, and `Observed`, the
//! batched read of the environment that every service's converge shares.

use std::collections::BTreeMap;

use async_trait::async_trait;
use tap_core::naming::Tag;
use tap_core::outputs::{is_known, ClusterOutputs};
use tap_core::{AwsError, Context, StepError};

use crate::component;
use crate::logs::ObservedLogGroup;
use crate::scaling::{desired_policy, resource_id, ObservedScalableTarget, ObservedScalingPolicy, ScalingPolicySpec};
use crate::service::{DesiredService, ObservedService, ServiceUpdate};
use crate::task_definition::{ObservedTaskDefinition, TaskDefinitionSpec};

/// Which revisions of a task definition family to list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevisionStatus {
    /// Registered and usable.
    Active,
    /// Deregistered (may still be deleted).
    Inactive,
}

/// The AWS calls of the services step (CloudWatch Logs, ECS, Application Auto Scaling, ECR, ELBv2).
#[cfg_attr(any(test, feature = "test-util"), mockall::automock)]
#[async_trait]
pub trait ServicesApi: Send + Sync {
    /// The log groups among `names` that exist, keyed by name: one paged DescribeLogGroups over the
    /// names' common prefix, keeping exactly these names.
    async fn find_log_groups(&self, names: &[String]) -> Result<BTreeMap<String, ObservedLogGroup>, AwsError>;
    /// Creates a log group with tags.
    async fn create_log_group(&self, name: &str, tags: &[Tag]) -> Result<(), AwsError>;
    /// Sets a log group's retention.
    async fn put_retention_policy(&self, name: &str, days: i32) -> Result<(), AwsError>;
    /// Deletes a log group.
    async fn delete_log_group(&self, name: &str) -> Result<(), AwsError>;

    /// The latest revision of a task definition family (`None` when the family has none).
    async fn describe_task_definition(&self, family: &str) -> Result<Option<ObservedTaskDefinition>, AwsError>;
    /// Registers a new revision; returns it.
    async fn register_task_definition(
        &self,
        definition: &TaskDefinitionSpec,
        tags: &[Tag],
    ) -> Result<ObservedTaskDefinition, AwsError>;
    /// ARNs of the revisions of exactly `family` with this status.
    async fn list_task_definitions(&self, family: &str, status: RevisionStatus) -> Result<Vec<String>, AwsError>;
    /// `ListTaskDefinitionFamilies` with ACTIVE revisions whose name starts with `prefix`, all pages.
    async fn list_task_families(&self, prefix: &str) -> Result<Vec<String>, AwsError>;
    /// Deregisters one revision.
    async fn deregister_task_definition(&self, arn: &str) -> Result<(), AwsError>;
    /// Deletes deregistered revisions (at most 10 per call).
    async fn delete_task_definitions(&self, arns: &[String]) -> Result<(), AwsError>;

    /// The services of `cluster` among `names` (any status, up to 10 per DescribeServices call);
    /// missing ones are left out.
    async fn describe_services(&self, cluster: &str, names: &[String]) -> Result<Vec<ObservedService>, AwsError>;
    /// Names of every service in `cluster`.
    async fn list_services(&self, cluster: &str) -> Result<Vec<String>, AwsError>;
    /// Creates a service; returns what AWS stored.
    async fn create_service(&self, desired: &DesiredService) -> Result<ObservedService, AwsError>;
    /// Updates a service; returns what AWS stored.
    async fn update_service(&self, update: &ServiceUpdate) -> Result<ObservedService, AwsError>;
    /// Deletes a service (`force`).
    async fn delete_service(&self, cluster: &str, name: &str) -> Result<(), AwsError>;

    /// The `ecs:service:DesiredCount` scalable targets among `resource_ids` (`service/<cluster>/<service>`),
    /// keyed by resource id: one paged DescribeScalableTargets for up to 50 ids.
    async fn describe_scalable_targets(
        &self,
        resource_ids: &[String],
    ) -> Result<BTreeMap<String, ObservedScalableTarget>, AwsError>;
    /// Registers (or updates) the scalable target.
    async fn register_scalable_target(&self, resource_id: &str, min: i32, max: i32) -> Result<(), AwsError>;
    /// Deregisters the scalable target.
    async fn deregister_scalable_target(&self, resource_id: &str) -> Result<(), AwsError>;
    /// The scaling policies of exactly `resource_id`, whatever their names.
    async fn describe_scaling_policies(&self, resource_id: &str) -> Result<Vec<ObservedScalingPolicy>, AwsError>;
    /// The ECS desired-count scaling policies named one of `names` (one paged DescribeScalingPolicies
    /// for up to 50 names), on whichever resource: callers match [`ObservedScalingPolicy::resource_id`].
    async fn describe_named_scaling_policies(&self, names: &[String]) -> Result<Vec<ObservedScalingPolicy>, AwsError>;
    /// Creates or replaces a target-tracking policy.
    async fn put_scaling_policy(&self, resource_id: &str, policy: &ScalingPolicySpec) -> Result<(), AwsError>;
    /// Deletes a scaling policy.
    async fn delete_scaling_policy(&self, resource_id: &str, name: &str) -> Result<(), AwsError>;

    /// Whether `repository` holds an image tagged `tag` (a missing repository holds none).
    async fn image_exists(&self, repository: &str, tag: &str) -> Result<bool, AwsError>;

    /// Target health of a target group: state (`healthy`, `unhealthy`, `initial`, …) → count.
    async fn target_health(&self, target_group_arn: &str) -> Result<BTreeMap<String, usize>, AwsError>;
}

/// What one batched read found of the configured services' log groups, ECS services, scalable
/// targets and scaling policies. It is read once per run ([`Observed::read`]) and shared by every
/// service's converge, so a converged environment costs one call per kind, not one per service.
#[derive(Debug, Clone, Default)]
pub(crate) struct Observed {
    /// Log group name → log group.
    pub log_groups: BTreeMap<String, ObservedLogGroup>,
    /// ECS service name → service (any status).
    pub services: BTreeMap<String, ObservedService>,
    /// Resource id → scalable target.
    pub scalable_targets: BTreeMap<String, ObservedScalableTarget>,
    /// (Resource id, policy name) → scaling policy.
    pub scaling_policies: BTreeMap<(String, String), ObservedScalingPolicy>,
    /// Task family → its latest ACTIVE revision.
    pub task_definitions: BTreeMap<String, ObservedTaskDefinition>,
}

/// Every service's latest ACTIVE task definition revision, by family. It needs no input, so the
/// step reads it at once, beside waiting for the others: one listing of the families, then one
/// read per family that exists (none from empty, whatever the number of services).
pub(crate) async fn latest_task_definitions(
    api: &dyn ServicesApi,
    ctx: &Context,
) -> Result<BTreeMap<String, ObservedTaskDefinition>, StepError> {
    let families: Vec<(String, &str)> =
        ctx.config.services.iter().map(|s| (ctx.names.task_family(&s.name), s.name.as_str())).collect();
    let Some(prefix) = common_prefix(families.iter().map(|(f, _)| f.as_str())) else { return Ok(BTreeMap::new()) };
    let listed = api
        .list_task_families(prefix)
        .await
        .map_err(StepError::aws(component("task-definition", "*"), "ListTaskDefinitionFamilies"))?;
    let existing = families.iter().filter(|(family, _)| listed.contains(family));
    let found = futures::future::try_join_all(existing.map(|(family, service)| async move {
        let latest = api
            .describe_task_definition(family)
            .await
            .map_err(StepError::aws(component("task-definition", service), "DescribeTaskDefinition"))?;
        Ok::<_, StepError>((family, latest.filter(|t| t.active)))
    }))
    .await?;
    Ok(found.into_iter().filter_map(|(family, latest)| latest.map(|t| (family.clone(), t))).collect())
}

/// The longest prefix the names share (the family listing's filter); `None` without names.
pub(crate) fn common_prefix<'a>(mut names: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    let mut prefix = names.next()?;
    for name in names {
        let shared = prefix
            .char_indices()
            .zip(name.chars())
            .find(|((_, a), b)| a != b)
            .map_or(prefix.len().min(name.len()), |((i, _), _)| i);
        prefix = &prefix[..shared];
    }
    Some(prefix)
}

impl Observed {
    /// Reads, concurrently, the log groups, ECS services, scalable targets and scaling policies of
    /// every configured service. While the cluster is still to be created (plan), no service or
    /// scaling call is made: nothing of it can exist yet.
    pub(crate) async fn read(
        api: &dyn ServicesApi,
        ctx: &Context,
        cluster: &ClusterOutputs,
    ) -> Result<Observed, StepError> {
        let specs = &ctx.config.services;
        let cluster_known = is_known(&cluster.arn);
        let cluster = cluster.name.as_str();
        let log_names: Vec<String> = specs.iter().map(|s| ctx.names.log_group(&s.name)).collect();
        let ecs_names: Vec<String> = specs.iter().map(|s| ctx.names.ecs_service(&s.name)).collect();
        let resource_ids: Vec<String> = ecs_names.iter().map(|n| resource_id(cluster, n)).collect();
        let policy_names: Vec<String> = specs.iter().map(|s| desired_policy(ctx, &s.name).name).collect();

        let log_groups = async {
            if log_names.is_empty() {
                return Ok(BTreeMap::new());
            }
            api.find_log_groups(&log_names)
                .await
                .map_err(StepError::aws(component("log-group", "*"), "DescribeLogGroups"))
        };
        let services = async {
            if !cluster_known || ecs_names.is_empty() {
                return Ok(BTreeMap::new());
            }
            match api.describe_services(cluster, &ecs_names).await {
                Ok(found) => {
                    Ok(found.into_iter().filter(|s| ecs_names.contains(&s.name)).map(|s| (s.name.clone(), s)).collect())
                }
                // The cluster is gone: so are its services.
                Err(e) if e.is_not_found() => Ok(BTreeMap::new()),
                Err(e) => Err(StepError::aws(component("ecs-service", "*"), "DescribeServices")(e)),
            }
        };
        let scalable_targets = async {
            if !cluster_known || resource_ids.is_empty() {
                return Ok(BTreeMap::new());
            }
            let found = api
                .describe_scalable_targets(&resource_ids)
                .await
                .map_err(StepError::aws(component("scaling-target", "*"), "DescribeScalableTargets"))?;
            Ok(found.into_iter().filter(|(rid, _)| resource_ids.contains(rid)).collect())
        };
        let scaling_policies = async {
            if !cluster_known || policy_names.is_empty() {
                return Ok(BTreeMap::new());
            }
            let found = api
                .describe_named_scaling_policies(&policy_names)
                .await
                .map_err(StepError::aws(component("scaling-policy", "*"), "DescribeScalingPolicies"))?;
            Ok(found
                .into_iter()
                .filter(|p| resource_ids.contains(&p.resource_id) && policy_names.contains(&p.name))
                .map(|p| ((p.resource_id.clone(), p.name.clone()), p))
                .collect())
        };
        let (log_groups, services, scalable_targets, scaling_policies) =
            tokio::try_join!(log_groups, services, scalable_targets, scaling_policies)?;
        Ok(Observed { log_groups, services, scalable_targets, scaling_policies, task_definitions: BTreeMap::new() })
    }
}
