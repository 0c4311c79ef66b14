//! The narrow seam between the services step and AWS: exactly the SDK calls this crate makes,
//! returning small domain types (not SDK types) so unit tests can mock them, and `Observed`, the
//! batched read of the environment that every service's converge shares.

use std::collections::BTreeMap;

use async_trait::async_trait;
use tap_core::naming::Tag;
use tap_core::outputs::{is_known, ClusterOutputs};
use tap_core::{AwsError, Context, StepError};

use crate::component;
use crate::image::RepositoryImage;
use crate::logs::ObservedLogGroup;
use crate::prune::{target_prefix, Listed, FAMILY_PREFIX, LOG_GROUP_PREFIX};
use crate::rollout::{LogPage, ObservedTask, OneOffTask, TargetState};
use crate::scaling::{desired_policy, resource_id, ObservedScalableTarget, ObservedScalingPolicy, ScalingPolicySpec};
use crate::service::{DesiredService, ObservedService, ServiceUpdate};
use crate::service_deployment::{ServiceDeployment, ServiceDeploymentBrief};
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
    /// Every log group whose name starts with `prefix` (all pages).
    async fn list_log_groups(&self, prefix: &str) -> Result<Vec<ObservedLogGroup>, AwsError>;
    /// The tags of a log group.
    async fn log_group_tags(&self, name: &str) -> Result<Vec<Tag>, AwsError>;
    /// Creates a log group with tags.
    async fn create_log_group(&self, name: &str, tags: &[Tag]) -> Result<(), AwsError>;
    /// Sets a log group's retention.
    async fn put_retention_policy(&self, name: &str, days: i32) -> Result<(), AwsError>;
    /// Deletes a log group.
    async fn delete_log_group(&self, name: &str) -> Result<(), AwsError>;

    /// The latest revision of a task definition family, or the revision a `family:revision` or an
    /// ARN names (`None` when there is none).
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

    /// The services of `cluster` among `names` (any status, up to 10 per DescribeServices call,
    /// with their tags); missing ones are left out.
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
    /// Every `ecs:service:DesiredCount` scalable target whose resource id starts with `prefix`
    /// (e.g. `service/<cluster>/`), keyed by resource id: one paged DescribeScalableTargets.
    async fn list_scalable_targets(&self, prefix: &str) -> Result<BTreeMap<String, ObservedScalableTarget>, AwsError>;
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
    /// Every image of `repository` with its tags and push time (DescribeImages, all pages; a
    /// missing repository holds none).
    async fn repository_images(&self, repository: &str) -> Result<Vec<RepositoryImage>, AwsError>;

    /// The targets of a target group with their health (`healthy`, `unhealthy`, `initial`, …)
    /// and, when not healthy, ELB's reason (`Target.FailedHealthChecks`, …).
    async fn target_health(&self, target_group_arn: &str) -> Result<Vec<TargetState>, AwsError>;

    /// ARNs of the service's tasks, newest first: the STOPPED ones (ECS keeps them about an hour)
    /// or the running ones.
    async fn list_tasks(&self, cluster: &str, service: &str, stopped: bool) -> Result<Vec<String>, AwsError>;
    /// The tasks among `arns` (up to 100 per DescribeTasks call).
    async fn describe_tasks(&self, cluster: &str, arns: &[String]) -> Result<Vec<ObservedTask>, AwsError>;
    /// One page of a log stream's events: from `token` on (oldest first), or with no token the
    /// last `tail` events; a missing group or stream has none.
    async fn log_events(
        &self,
        group: &str,
        stream: &str,
        token: Option<String>,
        tail: i32,
    ) -> Result<LogPage, AwsError>;
    /// Starts a one-off task (RunTask) and returns it.
    async fn run_task(&self, task: &OneOffTask) -> Result<ObservedTask, AwsError>;

    /// `ListServiceDeployments` of one service, every page.
    async fn list_service_deployments(
        &self,
        cluster: &str,
        service: &str,
    ) -> Result<Vec<ServiceDeploymentBrief>, AwsError>;
    /// `DescribeServiceDeployments` (up to 20 ARNs).
    async fn describe_service_deployments(&self, arns: &[String]) -> Result<Vec<ServiceDeployment>, AwsError>;
    /// `DescribeServiceRevisions` (up to 20 ARNs): revision ARN → the task definition it runs.
    async fn service_revision_task_definitions(&self, arns: &[String]) -> Result<BTreeMap<String, String>, AwsError>;
    /// `StopServiceDeployment` with stop type `ROLLBACK`: production traffic back on the source
    /// revision.
    async fn stop_service_deployment(&self, arn: &str) -> Result<(), AwsError>;
}

/// What one batched read found of the configured services' log groups, ECS services, scalable
/// targets and scaling policies, and (in [`Observed::listed`]) everything of those kinds that may
/// belong to the environment. It is read once per run ([`Observed::read`]) and shared by every
/// service's converge and the prune, so a converged environment costs one call per kind, not one
/// per service.
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
    /// The listings the prune looks at.
    pub listed: Listed,
}

/// Every service's latest ACTIVE task definition revision, by family, and every family listed
/// under `tap-` (for the prune). It needs no input, so the step reads it at once, beside waiting
/// for the others: one listing of the families, then one read per configured family that exists
/// (none from empty, whatever the number of services).
pub(crate) async fn latest_task_definitions(
    api: &dyn ServicesApi,
    ctx: &Context,
) -> Result<(BTreeMap<String, ObservedTaskDefinition>, Vec<String>), StepError> {
    let families: Vec<(String, &str)> =
        ctx.config.services.iter().map(|s| (ctx.names.task_family(&s.name), s.name.as_str())).collect();
    let listed = list_families(api).await?;
    let existing = families.iter().filter(|(family, _)| listed.contains(family));
    let found = futures::future::try_join_all(existing.map(|(family, service)| async move {
        let latest = api
            .describe_task_definition(family)
            .await
            .map_err(StepError::aws(component("task-definition", service), "DescribeTaskDefinition"))?;
        Ok::<_, StepError>((family, latest.filter(|t| t.active)))
    }))
    .await?;
    let latest = found.into_iter().filter_map(|(family, latest)| latest.map(|t| (family.clone(), t))).collect();
    Ok((latest, listed))
}

/// The task definition families with ACTIVE revisions under `tap-`.
pub(crate) async fn list_families(api: &dyn ServicesApi) -> Result<Vec<String>, StepError> {
    api.list_task_families(FAMILY_PREFIX)
        .await
        .map_err(StepError::aws(component("task-definition", "*"), "ListTaskDefinitionFamilies"))
}

/// The log groups under `/ecs/tap-`.
pub(crate) async fn list_log_groups(api: &dyn ServicesApi) -> Result<Vec<ObservedLogGroup>, StepError> {
    api.list_log_groups(LOG_GROUP_PREFIX)
        .await
        .map_err(StepError::aws(component("log-group", "*"), "DescribeLogGroups"))
}

/// The names of the services in `cluster` (none when the cluster is gone).
pub(crate) async fn list_services(api: &dyn ServicesApi, cluster: &str) -> Result<Vec<String>, StepError> {
    match api.list_services(cluster).await {
        Ok(names) => Ok(names),
        Err(e) if e.is_not_found() => Ok(vec![]),
        Err(e) => Err(StepError::aws(component("ecs-service", "*"), "ListServices")(e)),
    }
}

/// The scalable targets of `cluster`'s services.
pub(crate) async fn list_scalable_targets(
    api: &dyn ServicesApi,
    cluster: &str,
) -> Result<BTreeMap<String, ObservedScalableTarget>, StepError> {
    api.list_scalable_targets(&target_prefix(cluster))
        .await
        .map_err(StepError::aws(component("scaling-target", "*"), "DescribeScalableTargets"))
}

impl Listed {
    /// Every listing, for destroy (which reads nothing else).
    pub(crate) async fn read(api: &dyn ServicesApi, cluster: &str) -> Result<Listed, StepError> {
        // The targets of the cluster's services are also asked by their resource ids: a listing of
        // a region's targets can come back short (moto pages it wrongly past 100), and destroy
        // must not leave one behind.
        let services_and_their_targets = async {
            let services = list_services(api, cluster).await?;
            let ids: Vec<String> = services.iter().map(|s| crate::scaling::resource_id(cluster, s)).collect();
            let targets = match ids.is_empty() {
                true => BTreeMap::new(),
                false => api
                    .describe_scalable_targets(&ids)
                    .await
                    .map_err(StepError::aws(component("scaling-target", "*"), "DescribeScalableTargets"))?,
            };
            Ok::<_, StepError>((services, targets))
        };
        let ((services, of_services), log_groups, families, mut targets) = tokio::try_join!(
            services_and_their_targets,
            list_log_groups(api),
            list_families(api),
            list_scalable_targets(api, cluster),
        )?;
        targets.extend(of_services);
        Ok(Listed { services, log_groups, families, targets })
    }
}

impl Observed {
    /// Reads, concurrently, the log groups, ECS services, scalable targets and scaling policies of
    /// every configured service, listing the log groups, the cluster's services and its scalable
    /// targets for the prune. While the cluster is still to be created (plan), no service or
    /// scaling call is made: nothing of it can exist yet.
    pub(crate) async fn read(
        api: &dyn ServicesApi,
        ctx: &Context,
        cluster: &ClusterOutputs,
    ) -> Result<Observed, StepError> {
        let specs = &ctx.config.services;
        let cluster_known = is_known(&cluster.arn);
        let cluster = cluster.name.as_str();
        let ecs_names: Vec<String> = specs.iter().map(|s| ctx.names.ecs_service(&s.name)).collect();
        let resource_ids: Vec<String> = ecs_names.iter().map(|n| resource_id(cluster, n)).collect();
        let policy_names: Vec<String> = specs.iter().map(|s| desired_policy(ctx, &s.name).name).collect();

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
        let listed_services = async {
            if !cluster_known {
                return Ok(vec![]);
            }
            list_services(api, cluster).await
        };
        // The configured services' targets by their resource ids (50 a call: a few pages however
        // many targets the region holds), and the cluster's listing for the prune.
        let scalable_targets = async {
            if !cluster_known {
                return Ok((BTreeMap::new(), BTreeMap::new()));
            }
            let declared = async {
                api.describe_scalable_targets(&resource_ids)
                    .await
                    .map_err(StepError::aws(component("scaling-target", "*"), "DescribeScalableTargets"))
            };
            tokio::try_join!(declared, list_scalable_targets(api, cluster))
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
        let (log_groups, services, listed_services, (declared_targets, targets), scaling_policies) =
            tokio::try_join!(list_log_groups(api), services, listed_services, scalable_targets, scaling_policies)?;
        Ok(Observed {
            log_groups: log_groups.iter().map(|g| (g.name.clone(), g.clone())).collect(),
            services,
            scalable_targets: declared_targets.into_iter().filter(|(rid, _)| resource_ids.contains(rid)).collect(),
            scaling_policies,
            task_definitions: BTreeMap::new(),
            listed: Listed { services: listed_services, log_groups, families: vec![], targets },
        })
    }
}
