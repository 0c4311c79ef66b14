//! `tap-registry`: one ECR repository per configured service, with immutable tags, scan on push
//! and a lifecycle policy that keeps the last `registry.keep_images` images.
//!
//! - Reads from the [`Context`]: only the config (`registry.*`, the service list) and the names.
//! - Adds: [`RegistryOutputs`] — service name → repository name, ARN and URI.
//! - Finds its repositories with one listing of the registry: the configured ones by name
//!   (`tap-{service}-{s}`), any other `tap-…-{s}` by the environment's tags. Drift of the tag
//!   mutability, the scan configuration or the lifecycle policy (compared as JSON, not as text) is
//!   repaired. Each repository runs through the resource engine ([`repository`]).
//! - Prune: a repository of a service no longer configured is deleted when empty and kept (listed
//!   as `=`) while it holds images, unless `deploy.prune_data` (`deploy --prune-data`).
//! - `destroy` deletes every repository of the environment with its images, whatever the config.
//! - Layout: [`api`] (the narrow ECR seam, mocked in tests), [`sdk`] (its implementation over
//!   `aws_sdk_ecr`), [`repository`] (the kind); this module only wires the step.
//!
//! ```no_run
//! # async fn demo(session: &tap_core::aws::AwsSession) -> Result<(), tap_core::StepError> {
//! use tap_core::{Config, Context, Step};
//! let step = tap_registry::RegistryStep::from_session(session);
//! let ctx = Context::new(Config::default());
//! for change in step.plan(&ctx).await? {
//!     println!("{change}");
//! }
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]

pub mod api;
pub mod repository;
pub mod sdk;

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use futures::future::try_join_all;
use tap_core::context::Gathered;
use tap_core::error::IfFound;
use tap_core::outputs::{RegistryOutputs, Repository, PENDING};
use tap_core::resource::{self, owned, Engine};
use tap_core::step::{Contract, OutputKind};
use tap_core::{Change, Context, Mode, Step, StepError};

#[cfg(any(test, feature = "test-util"))]
pub use api::MockEcrApi;
pub use api::{EcrApi, ObservedRepository};
use repository::RepositoryKind;
pub use repository::{lifecycle_policy, DesiredRepository, RepositoryState, RepositoryUpdate};
pub use sdk::SdkEcr;

/// Logical-id prefix of every repository (`registry/repository/{service}`).
const COMPONENT_PREFIX: &str = "registry/repository/";

/// The ECR repositories of an environment.
pub struct RegistryStep {
    api: Arc<dyn EcrApi>,
}

impl RegistryStep {
    /// A step over any [`EcrApi`] (a mock in tests).
    pub fn new(api: Arc<dyn EcrApi>) -> Self {
        RegistryStep { api }
    }

    /// A step over the run's ECR client.
    pub fn from_session(session: &tap_core::aws::AwsSession) -> Self {
        Self::new(Arc::new(SdkEcr(tap_core::sdk_client!(aws_sdk_ecr, session))))
    }

    /// Every repository of the environment: named `tap-…-{s}` (one listing of the registry, up to
    /// 1000 a page, whatever the number of services). The configured ones are taken by name; any
    /// other only when its tags say it is this environment's and a registry component (one
    /// `ListTagsForResource` each, so none when every listed repository is configured).
    async fn owned(&self, ctx: &Context, declared: &[String]) -> Result<Owned, StepError> {
        let env = ctx.names.env();
        let suffix = format!("-{env}");
        let all = self
            .api
            .list_repositories()
            .await
            .map_err(StepError::aws("registry/repositories", "DescribeRepositories"))?;
        let (configured, others): (Vec<ObservedRepository>, Vec<ObservedRepository>) = all
            .into_iter()
            .filter(|r| r.name.starts_with("tap-") && r.name.ends_with(&suffix))
            .partition(|r| declared.contains(&r.name));
        let checks = others.into_iter().map(|repo| async move {
            // Gone meanwhile: nothing to prune.
            let Some(tags) = self
                .api
                .list_tags(&repo.arn)
                .await
                .if_found()
                .map_err(StepError::aws(repo.name.clone(), "ListTagsForResource"))?
            else {
                return Ok(None);
            };
            let id = owned(&tags, env, String::new).filter(|c| c.starts_with(COMPONENT_PREFIX));
            Ok(id.map(|id| resource::Owned {
                id,
                name: repo.name.clone(),
                observed: RepositoryState { repository: repo, lifecycle_policy: None, tags: Some(tags) },
            }))
        });
        let undeclared = try_join_all(checks).await?.into_iter().flatten().collect();
        Ok(Owned { configured: configured.into_iter().map(|r| (r.name.clone(), r)).collect(), undeclared })
    }

    async fn converge(&self, ctx: &Context, mode: Mode) -> Result<Vec<Change>, StepError> {
        let engine = Engine::new(ctx, "registry", mode);
        let services: Vec<&str> = ctx.config.services.iter().map(|s| s.name.as_str()).collect();
        let names: Vec<String> = services.iter().map(|s| ctx.names.repository(s)).collect();
        let found = self.owned(ctx, &names).await?;
        // Each repository is published as soon as it is there: a service's task definition needs
        // only its own (see `Context::wait_for`).
        let made = Gathered::default();
        // In the config's order, a bounded number at a time: under ECR's rate limit each repository
        // gets its lifecycle policy before new repositories are made (see `tap_core::fanout`).
        let at_once = ctx.config.aws.max_in_flight;
        let results = tap_core::fanout::in_order(
            services.iter().zip(&names).map(|(service, name)| {
                let (engine, made, configured) = (&engine, &made, found.configured.get(name));
                async move {
                    let repository = self.converge_one(engine, service, name, configured).await?;
                    made.add(*service, repository.clone(), |repositories| {
                        ctx.put_partial(RegistryOutputs { repositories })
                    });
                    Ok::<_, StepError>(repository)
                }
            }),
            at_once,
        )
        .await?;
        ctx.put(RegistryOutputs { repositories: services.iter().map(|s| s.to_string()).zip(results).collect() });
        // Repositories of services no longer configured: an empty one is deleted, one holding
        // images is kept unless `deploy.prune_data` (nothing else needs them gone first).
        let declared = services.iter().map(|s| format!("{COMPONENT_PREFIX}{s}")).collect();
        engine.prune(&RepositoryKind(self.api.as_ref()), found.undeclared, &declared).await?;
        Ok(engine.into_changes())
    }

    async fn converge_one(
        &self,
        engine: &Engine<'_>,
        service: &str,
        name: &str,
        observed: Option<&ObservedRepository>,
    ) -> Result<Repository, StepError> {
        let ctx = engine.ctx();
        let settings = &ctx.config.registry;
        let component = format!("{COMPONENT_PREFIX}{service}");
        let want = DesiredRepository {
            name: name.into(),
            immutable_tags: settings.immutable_tags,
            scan_on_push: settings.scan_on_push,
            lifecycle_policy: lifecycle_policy(settings.keep_images),
            tags: ctx.names.tags(&component, name),
        };
        let have = match observed {
            Some(repo) => {
                // Its tags (whose it is: names are shared across environments, see
                // `RepositoryKind::owner`) beside its lifecycle policy.
                let (lifecycle_policy, tags) = tokio::try_join!(
                    async {
                        self.api
                            .get_lifecycle_policy(name)
                            .await
                            .map_err(StepError::aws(&component, "GetLifecyclePolicy"))
                    },
                    async {
                        self.api.list_tags(&repo.arn).await.map_err(StepError::aws(&component, "ListTagsForResource"))
                    },
                )?;
                Some(RepositoryState { repository: repo.clone(), lifecycle_policy, tags: Some(tags) })
            }
            None => None,
        };
        let created = have.is_none();
        let kind = RepositoryKind(self.api.as_ref());
        Ok(match engine.converge(&kind, &component, name, &want, have).await? {
            Some(state) => {
                let r = state.repository;
                Repository { name: r.name, arn: r.arn, uri: r.uri, created }
            }
            None => Repository { name: name.into(), arn: PENDING.into(), uri: PENDING.into(), created: true },
        })
    }
}

/// What the registry holds of the environment.
struct Owned {
    /// Configured repositories that exist, by name.
    configured: BTreeMap<String, ObservedRepository>,
    /// Repositories of services no longer configured, owned by their tags.
    undeclared: Vec<resource::Owned<RepositoryState>>,
}

#[async_trait]
impl Step for RegistryStep {
    fn contract(&self) -> Contract {
        Contract::new("registry", OutputKind::Registry)
    }

    #[tracing::instrument(skip_all, name = "registry.plan")]
    async fn plan(&self, ctx: &Context) -> Result<Vec<Change>, StepError> {
        self.converge(ctx, Mode::Plan).await
    }

    #[tracing::instrument(skip_all, name = "registry.apply")]
    async fn apply(&self, ctx: &Context) -> Result<Vec<Change>, StepError> {
        self.converge(ctx, Mode::Apply).await
    }

    /// Removes every repository of the environment with its images, whatever the config says
    /// (found by name and tags).
    #[tracing::instrument(skip_all, name = "registry.destroy")]
    async fn destroy(&self, ctx: &Context) -> Result<Vec<Change>, StepError> {
        let found = self.owned(ctx, &[]).await?;
        let engine = Engine::new(ctx, "registry", Mode::Apply);
        let kind = RepositoryKind(self.api.as_ref());
        try_join_all(found.undeclared.iter().map(|o| engine.delete(&kind, &o.id, &o.name, &o.observed))).await?;
        Ok(engine.into_changes())
    }
}

#[cfg(test)]
mod tests;
