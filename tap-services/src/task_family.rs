//! The task definition family as a kind of the resource engine: the family's latest ACTIVE
//! revision is what AWS has; a difference from the rendered definition is an update, which
//! registers the next revision and returns it (a new identity: the service runs its ARN).
//!
//! - **ownership**: from the tags of the family's latest revision (`DescribeTaskDefinition`
//!   with `include = TAGS`). Family names are account-wide (`tap-api-x-dev` is both `dev`'s
//!   service `api-x` and `x-dev`'s service `api`): tap registers into a family only when that
//!   revision is this environment's, so a family holds one environment's revisions; any other is
//!   a conflict the engine reports.
//! - **exactly once**: `RegisterTaskDefinition` has no idempotency token, and sent twice it makes
//!   two revisions. The SDK does not resend it when its outcome is unknown (see `sdk.rs`); the
//!   family's latest revision is read instead, and adopted when it is newer than the one the
//!   update started from, this environment's and exactly the definition asked for.
//! - **deletion**: every ACTIVE revision is deregistered, then the deregistered ones deleted, ten
//!   a call ([`TaskFamily::DELETE_BATCH`]).

use async_trait::async_trait;
use tap_core::config::ServiceSpec;
use tap_core::idempotent::{create_or_adopt, Recovery};
use tap_core::naming::Tag;
use tap_core::outputs::PENDING;
use tap_core::resource::{ActionError, Deleted, Diff, During, Engine, Owner, Resource};
use tap_core::{AwsError, StepError};

use crate::api::{Observed, RevisionStatus, ServicesApi};
use crate::task_definition::{render, ObservedTaskDefinition, TaskDefinitionSpec};
use crate::{component, Inputs};

/// A task definition to register: the definition and the tags of its revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredTaskDefinition {
    /// The definition.
    pub spec: TaskDefinitionSpec,
    /// Tags of the revision.
    pub tags: Vec<Tag>,
}

/// A task definition family as the engine handles it: its name and latest ACTIVE revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedFamily {
    /// Family, `tap-{service}-{s}`.
    pub family: String,
    /// Its latest ACTIVE revision.
    pub latest: ObservedTaskDefinition,
}

/// The task definition family kind, for environment `env`.
pub(crate) struct TaskFamily<'a> {
    pub api: &'a dyn ServicesApi,
    pub env: &'a str,
    /// How long a register with an unknown outcome is looked for before registering again.
    pub recovery: Recovery,
}

impl<'a> TaskFamily<'a> {
    /// The kind over `api`, for environment `env`.
    pub fn new(api: &'a dyn ServicesApi, env: &'a str) -> Self {
        TaskFamily { api, env, recovery: Recovery::default() }
    }

    /// The family's latest revision when it is ACTIVE.
    async fn latest(&self, family: &str) -> Result<Option<ObservedTaskDefinition>, AwsError> {
        Ok(self.api.describe_task_definition(family).await?.filter(|t| t.active))
    }
}

#[async_trait]
impl Resource for TaskFamily<'_> {
    type Desired = DesiredTaskDefinition;
    type Observed = ObservedFamily;
    /// The revision to register (its definition and tags).
    type Update = DesiredTaskDefinition;
    const CREATE: &'static str = "RegisterTaskDefinition";

    fn diff(
        &self,
        want: &DesiredTaskDefinition,
        have: &ObservedFamily,
    ) -> Result<Option<Diff<DesiredTaskDefinition>>, String> {
        let attrs = want.spec.changes_from(&have.latest.definition);
        Ok((!attrs.is_empty()).then(|| Diff::new(want.clone(), attrs)))
    }

    async fn find(&self, want: &DesiredTaskDefinition) -> Result<Option<ObservedFamily>, AwsError> {
        let latest = self.latest(&want.spec.family).await?;
        Ok(latest.map(|latest| ObservedFamily { family: want.spec.family.clone(), latest }))
    }

    /// From the tags of the family's latest ACTIVE revision (read with it).
    async fn owner(&self, have: &ObservedFamily, env: &str) -> Result<Owner, ActionError> {
        Ok(Owner::of(&have.latest.tags, env))
    }

    async fn create(&self, want: &DesiredTaskDefinition) -> Result<ObservedFamily, AwsError> {
        let latest = self.api.register_task_definition(&want.spec, &want.tags).await?;
        Ok(ObservedFamily { family: want.spec.family.clone(), latest })
    }

    /// Registers the next revision, exactly once (see the module docs), and returns it.
    async fn update(&self, have: &ObservedFamily, want: &DesiredTaskDefinition) -> Result<ObservedFamily, ActionError> {
        let (family, known) = (&have.family, have.latest.revision);
        let registered_meanwhile = || async move {
            Ok(self.latest(family).await?.filter(|td| {
                td.revision > known
                    && Owner::of(&td.tags, self.env).is_this()
                    && want.spec.changes_from(&td.definition).is_empty()
            }))
        };
        let latest = create_or_adopt(
            family,
            self.recovery,
            |_| false,
            registered_meanwhile,
            || self.api.register_task_definition(&want.spec, &want.tags),
        )
        .await
        .during("RegisterTaskDefinition")?;
        tracing::info!(family, revision = latest.revision, "registered task definition revision");
        Ok(ObservedFamily { family: family.clone(), latest })
    }

    async fn delete(&self, have: &ObservedFamily) -> Result<Deleted, ActionError> {
        self.delete_many(&[have]).await?;
        Ok(Deleted::Now)
    }

    /// Families are deleted ten at a time: `DeleteTaskDefinitions` takes ten revisions a call, and
    /// ECS allows it one call a second (a hundred families' revisions in ten calls, not a hundred).
    const DELETE_BATCH: usize = 10;

    /// Deregisters every active revision of `haves`, then deletes their inactive revisions, ten to
    /// a call.
    async fn delete_many(&self, haves: &[&ObservedFamily]) -> Result<(), ActionError> {
        let deregistered = futures::future::try_join_all(haves.iter().map(|have| async move {
            let family = &have.family;
            let active =
                self.api.list_task_definitions(family, RevisionStatus::Active).await.during("ListTaskDefinitions")?;
            for arn in &active {
                match self.api.deregister_task_definition(arn).await {
                    Ok(()) => {}
                    Err(e) if e.is_not_found() || e.is("ClientException") => {
                        tracing::debug!(arn, error = %e, "task definition revision already gone")
                    }
                    Err(e) => return Err(ActionError { action: "DeregisterTaskDefinition", source: e }),
                }
            }
            self.api.list_task_definitions(family, RevisionStatus::Inactive).await.during("ListTaskDefinitions")
        }))
        .await?;
        let inactive: Vec<String> = deregistered.into_iter().flatten().collect();
        for chunk in inactive.chunks(10) {
            match self.api.delete_task_definitions(chunk).await {
                Ok(()) => {}
                Err(e) if e.retryable => return Err(ActionError { action: "DeleteTaskDefinitions", source: e }),
                // Deregistered revisions are harmless; an endpoint without DeleteTaskDefinitions keeps them.
                Err(e) => tracing::warn!(error = %e, "could not delete deregistered task definition revisions"),
            }
        }
        Ok(())
    }
}

/// Converges one service's task definition family on `engine`: the rendered definition against
/// the family's latest ACTIVE revision (`observed`). Returns the ARN the service should run:
/// the revision registered (or found in sync), [`PENDING`] when plan would register one or
/// the family is another environment's (a conflict plan lists; apply stops on it).
pub(crate) async fn converge(
    engine: &Engine<'_>,
    api: &dyn ServicesApi,
    inputs: &Inputs,
    service: &ServiceSpec,
    observed: &Observed,
) -> Result<String, StepError> {
    let ctx = engine.ctx();
    let spec = render(ctx, inputs, service)?;
    let id = component("task-definition", &service.name);
    let family = spec.family.clone();
    let want = DesiredTaskDefinition { tags: ctx.names.tags(&id, &family), spec };
    let have = observed
        .task_definitions
        .get(&family)
        .map(|latest| ObservedFamily { family: family.clone(), latest: latest.clone() });
    let kind = TaskFamily::new(api, ctx.names.env());
    let now = engine.converge(&kind, &id, &family, &want, have).await?;
    // Apply returns the revision registered (or found in sync); plan returns the revision as it
    // is, and one that still differs is the one deploy would replace.
    Ok(match now {
        Some(now) if engine.mode().is_apply() || want.spec.changes_from(&now.latest.definition).is_empty() => {
            now.latest.arn
        }
        _ => PENDING.into(),
    })
}
