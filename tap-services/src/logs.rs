//! CloudWatch Logs: one log group per service (`/ecs/tap-{service}-{s}`) with the configured
//! retention, tagged at creation; a drifted retention is put back. A resource kind of the engine
//! (`LogGroup`): created with its retention (both are the create plan lists), updated by putting
//! the retention back, deleted when its service is removed from the config or on destroy.

use async_trait::async_trait;
use tap_core::naming::Tag;
use tap_core::resource::{ActionError, Deleted, Diff, During, Owner, Resource};
use tap_core::step::{diff, AttrChange};
use tap_core::AwsError;

use crate::api::ServicesApi;

/// A log group as AWS reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedLogGroup {
    /// Log group name.
    pub name: String,
    /// Retention in days; `None` means "never expire".
    pub retention_days: Option<i32>,
    /// Its tags, when already read (`ListTagsLogGroup`; DescribeLogGroups does not report them).
    pub tags: Option<Vec<Tag>>,
}

/// A log group as the config wants it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredLogGroup {
    /// `/ecs/tap-{service}-{s}`.
    pub name: String,
    /// Retention in days.
    pub retention_days: i32,
    /// Tags set at creation.
    pub tags: Vec<Tag>,
}

/// The log group kind over the crate's AWS seam.
pub(crate) struct LogGroup<'a>(pub &'a dyn ServicesApi);

#[async_trait]
impl Resource for LogGroup<'_> {
    type Desired = DesiredLogGroup;
    type Observed = ObservedLogGroup;
    /// The retention to put.
    type Update = i32;
    const CREATE: &'static str = "CreateLogGroup";

    fn diff(&self, want: &DesiredLogGroup, have: &ObservedLogGroup) -> Result<Option<Diff<i32>>, String> {
        let mut attrs: Vec<AttrChange> = Vec::new();
        diff(&mut attrs, "retention_in_days", &have.retention_days, &Some(want.retention_days));
        Ok((!attrs.is_empty()).then(|| Diff::new(want.retention_days, attrs)))
    }

    async fn find(&self, want: &DesiredLogGroup) -> Result<Option<ObservedLogGroup>, AwsError> {
        let found = self.0.find_log_groups(std::slice::from_ref(&want.name)).await?;
        Ok(found.get(&want.name).cloned())
    }

    /// From its tags (`ListTagsLogGroup`, unless already read): log group names are account-wide,
    /// and `/ecs/tap-api-x-dev` is both `dev`'s service `api-x` and `x-dev`'s service `api`.
    async fn owner(&self, have: &ObservedLogGroup, env: &str) -> Result<Owner, ActionError> {
        if let Some(tags) = &have.tags {
            return Ok(Owner::of(tags, env));
        }
        let tags = self.0.log_group_tags(&have.name).await.during("ListTagsLogGroup")?;
        Ok(Owner::of(&tags, env))
    }

    async fn create(&self, want: &DesiredLogGroup) -> Result<ObservedLogGroup, AwsError> {
        match self.0.create_log_group(&want.name, &want.tags).await {
            Ok(()) => {}
            // Created by an earlier attempt whose answer was lost: its retention is set next.
            Err(e) if e.is("ResourceAlreadyExistsException") => {}
            Err(e) => return Err(e),
        }
        self.0.put_retention_policy(&want.name, want.retention_days).await?;
        Ok(ObservedLogGroup {
            name: want.name.clone(),
            retention_days: Some(want.retention_days),
            tags: Some(want.tags.clone()),
        })
    }

    async fn update(&self, have: &ObservedLogGroup, days: &i32) -> Result<ObservedLogGroup, ActionError> {
        self.0.put_retention_policy(&have.name, *days).await.during("PutRetentionPolicy")?;
        Ok(have.clone())
    }

    async fn delete(&self, have: &ObservedLogGroup) -> Result<Deleted, ActionError> {
        self.0.delete_log_group(&have.name).await.during("DeleteLogGroup")?;
        Ok(Deleted::Now)
    }
}
