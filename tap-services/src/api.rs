//! The narrow seam between the services step and AWS: exactly the SDK calls this crate makes,
//! returning small domain types (not SDK types) so unit tests can mock them.

use std::collections::BTreeMap;

use async_trait::async_trait;
use tap_core::naming::Tag;
use tap_core::AwsError;

use crate::logs::ObservedLogGroup;
use crate::scaling::{ObservedScalableTarget, ObservedScalingPolicy, ScalingPolicySpec};
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
    /// The log group named exactly `name`, if it exists.
    async fn find_log_group(&self, name: &str) -> Result<Option<ObservedLogGroup>, AwsError>;
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
    /// Deregisters one revision.
    async fn deregister_task_definition(&self, arn: &str) -> Result<(), AwsError>;
    /// Deletes deregistered revisions (at most 10 per call).
    async fn delete_task_definitions(&self, arns: &[String]) -> Result<(), AwsError>;

    /// The services of `cluster` among `names` (any status); missing ones are left out.
    async fn describe_services(&self, cluster: &str, names: &[String]) -> Result<Vec<ObservedService>, AwsError>;
    /// Names of every service in `cluster`.
    async fn list_services(&self, cluster: &str) -> Result<Vec<String>, AwsError>;
    /// Creates a service; returns what AWS stored.
    async fn create_service(&self, desired: &DesiredService) -> Result<ObservedService, AwsError>;
    /// Updates a service; returns what AWS stored.
    async fn update_service(&self, update: &ServiceUpdate) -> Result<ObservedService, AwsError>;
    /// Deletes a service (`force`).
    async fn delete_service(&self, cluster: &str, name: &str) -> Result<(), AwsError>;

    /// The `ecs:service:DesiredCount` scalable target of `resource_id` (`service/<cluster>/<service>`).
    async fn describe_scalable_target(&self, resource_id: &str) -> Result<Option<ObservedScalableTarget>, AwsError>;
    /// Registers (or updates) the scalable target.
    async fn register_scalable_target(&self, resource_id: &str, min: i32, max: i32) -> Result<(), AwsError>;
    /// Deregisters the scalable target.
    async fn deregister_scalable_target(&self, resource_id: &str) -> Result<(), AwsError>;
    /// The scaling policies of exactly `resource_id`.
    async fn describe_scaling_policies(&self, resource_id: &str) -> Result<Vec<ObservedScalingPolicy>, AwsError>;
    /// Creates or replaces a target-tracking policy.
    async fn put_scaling_policy(&self, resource_id: &str, policy: &ScalingPolicySpec) -> Result<(), AwsError>;
    /// Deletes a scaling policy.
    async fn delete_scaling_policy(&self, resource_id: &str, name: &str) -> Result<(), AwsError>;

    /// Whether `repository` holds an image tagged `tag` (a missing repository holds none).
    async fn image_exists(&self, repository: &str, tag: &str) -> Result<bool, AwsError>;

    /// Target health of a target group: state (`healthy`, `unhealthy`, `initial`, …) → count.
    async fn target_health(&self, target_group_arn: &str) -> Result<BTreeMap<String, usize>, AwsError>;
}
