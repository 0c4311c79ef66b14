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

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use aws_sdk_ecr::types::{ImageScanningConfiguration, ImageTagMutability};
use futures::future::try_join_all;
use serde_json::{json, Value};
use tap_core::context::Gathered;
use tap_core::idempotent::NoBlindRetry;
use tap_core::naming::Tag;
use tap_core::outputs::{RegistryOutputs, Repository, PENDING};
use tap_core::resource::{self, owned, Engine};
use tap_core::step::OutputKind;
use tap_core::{AwsError, Change, Context, Mode, Step, StepError};

pub mod repository;

#[cfg(test)]
use repository::policy_matches;
use repository::{DesiredRepository, RepositoryKind, RepositoryState};

/// Logical-id prefix of every repository (`registry/repository/{service}`).
const COMPONENT_PREFIX: &str = "registry/repository/";

/// An ECR repository as AWS reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedRepository {
    /// Repository name.
    pub name: String,
    /// Repository ARN.
    pub arn: String,
    /// Repository URI (`<account>.dkr.ecr.<region>.amazonaws.com/<name>`).
    pub uri: String,
    /// Tag mutability is `IMMUTABLE`.
    pub immutable_tags: bool,
    /// Images are scanned on push.
    pub scan_on_push: bool,
}

/// The ECR calls this crate makes.
#[cfg_attr(any(test, feature = "test-util"), mockall::automock)]
#[async_trait]
pub trait EcrApi: Send + Sync {
    /// `DescribeRepositories` for exactly these names; fails with `RepositoryNotFoundException`
    /// when any of them does not exist.
    async fn describe_repositories(&self, names: &[String]) -> Result<Vec<ObservedRepository>, AwsError>;
    /// Every repository of the registry (`DescribeRepositories` without names, all pages).
    async fn list_repositories(&self) -> Result<Vec<ObservedRepository>, AwsError>;
    /// `ListTagsForResource` of a repository.
    async fn list_tags(&self, arn: &str) -> Result<Vec<Tag>, AwsError>;
    /// `GetLifecyclePolicy`: the policy text, `None` when the repository has none.
    async fn get_lifecycle_policy(&self, name: &str) -> Result<Option<String>, AwsError>;
    /// `CreateRepository` with these settings and tags.
    async fn create_repository(
        &self,
        name: &str,
        immutable_tags: bool,
        scan_on_push: bool,
        tags: &[Tag],
    ) -> Result<ObservedRepository, AwsError>;
    /// `PutImageTagMutability`.
    async fn put_image_tag_mutability(&self, name: &str, immutable_tags: bool) -> Result<(), AwsError>;
    /// `PutImageScanningConfiguration`.
    async fn put_image_scanning_configuration(&self, name: &str, scan_on_push: bool) -> Result<(), AwsError>;
    /// `PutLifecyclePolicy`.
    async fn put_lifecycle_policy(&self, name: &str, policy_text: &str) -> Result<(), AwsError>;
    /// Whether the repository holds any image (`ListImages`, one result at most).
    async fn has_images(&self, name: &str) -> Result<bool, AwsError>;
    /// `DeleteRepository`; with `force` its images go too.
    async fn delete_repository(&self, name: &str, force: bool) -> Result<(), AwsError>;
}

/// [`EcrApi`] over the real SDK client.
#[derive(Debug, Clone)]
pub struct SdkEcr(pub aws_sdk_ecr::Client);

fn build_error(e: impl std::fmt::Display) -> AwsError {
    AwsError::local(format!("invalid request: {e}"))
}

fn observed(r: &aws_sdk_ecr::types::Repository) -> ObservedRepository {
    ObservedRepository {
        name: r.repository_name().unwrap_or_default().to_owned(),
        arn: r.repository_arn().unwrap_or_default().to_owned(),
        uri: r.repository_uri().unwrap_or_default().to_owned(),
        immutable_tags: r.image_tag_mutability() == Some(&ImageTagMutability::Immutable),
        scan_on_push: r.image_scanning_configuration().is_some_and(|c| c.scan_on_push()),
    }
}

fn mutability(immutable_tags: bool) -> ImageTagMutability {
    if immutable_tags {
        ImageTagMutability::Immutable
    } else {
        ImageTagMutability::Mutable
    }
}

#[async_trait]
impl EcrApi for SdkEcr {
    async fn describe_repositories(&self, names: &[String]) -> Result<Vec<ObservedRepository>, AwsError> {
        let out = self.0.describe_repositories().set_repository_names(Some(names.to_vec())).send().await?;
        Ok(out.repositories().iter().map(observed).collect())
    }

    async fn list_repositories(&self) -> Result<Vec<ObservedRepository>, AwsError> {
        let mut repos = Vec::new();
        let mut token = None;
        loop {
            let out = self.0.describe_repositories().set_next_token(token).send().await?;
            repos.extend(out.repositories().iter().map(observed));
            token = out.next_token().map(str::to_owned);
            if token.is_none() {
                return Ok(repos);
            }
        }
    }

    async fn list_tags(&self, arn: &str) -> Result<Vec<Tag>, AwsError> {
        let out = self.0.list_tags_for_resource().resource_arn(arn).send().await?;
        Ok(out.tags().iter().map(|t| (t.key().to_owned(), t.value().to_owned())).collect())
    }

    async fn get_lifecycle_policy(&self, name: &str) -> Result<Option<String>, AwsError> {
        match self.0.get_lifecycle_policy().repository_name(name).send().await {
            Ok(out) => Ok(out.lifecycle_policy_text().map(str::to_owned)),
            Err(e) => {
                let e = AwsError::from(e);
                if e.is("LifecyclePolicyNotFoundException") {
                    Ok(None)
                } else {
                    Err(e)
                }
            }
        }
    }

    async fn create_repository(
        &self,
        name: &str,
        immutable_tags: bool,
        scan_on_push: bool,
        tags: &[Tag],
    ) -> Result<ObservedRepository, AwsError> {
        let tags = tags
            .iter()
            .map(|(k, v)| aws_sdk_ecr::types::Tag::builder().key(k).value(v).build().map_err(build_error))
            .collect::<Result<Vec<_>, _>>()?;
        let out = self
            .0
            .create_repository()
            .repository_name(name)
            .image_tag_mutability(mutability(immutable_tags))
            .image_scanning_configuration(ImageScanningConfiguration::builder().scan_on_push(scan_on_push).build())
            .set_tags(Some(tags))
            // Not resent by the SDK when its outcome is unknown (no answer, or a 5xx): the step
            // looks the repository up and adopts it (see `tap_core::idempotent`).
            .customize()
            .config_override(aws_sdk_ecr::Config::builder().retry_classifier(NoBlindRetry))
            .send()
            .await?;
        out.repository()
            .map(observed)
            .ok_or_else(|| AwsError::new("InvalidResponse", "CreateRepository returned no repository"))
    }

    async fn put_image_tag_mutability(&self, name: &str, immutable_tags: bool) -> Result<(), AwsError> {
        self.0
            .put_image_tag_mutability()
            .repository_name(name)
            .image_tag_mutability(mutability(immutable_tags))
            .send()
            .await?;
        Ok(())
    }

    async fn put_image_scanning_configuration(&self, name: &str, scan_on_push: bool) -> Result<(), AwsError> {
        self.0
            .put_image_scanning_configuration()
            .repository_name(name)
            .image_scanning_configuration(ImageScanningConfiguration::builder().scan_on_push(scan_on_push).build())
            .send()
            .await?;
        Ok(())
    }

    async fn put_lifecycle_policy(&self, name: &str, policy_text: &str) -> Result<(), AwsError> {
        self.0.put_lifecycle_policy().repository_name(name).lifecycle_policy_text(policy_text).send().await?;
        Ok(())
    }

    async fn has_images(&self, name: &str) -> Result<bool, AwsError> {
        let out = self.0.list_images().repository_name(name).max_results(1).send().await?;
        Ok(!out.image_ids().is_empty())
    }

    async fn delete_repository(&self, name: &str, force: bool) -> Result<(), AwsError> {
        self.0.delete_repository().repository_name(name).force(force).send().await?;
        Ok(())
    }
}

/// The lifecycle policy that expires every image beyond the newest `keep`.
pub fn lifecycle_policy(keep: u32) -> Value {
    json!({
        "rules": [{
            "rulePriority": 1,
            "description": format!("Keep the last {keep} images"),
            "selection": {
                "tagStatus": "any",
                "countType": "imageCountMoreThan",
                "countNumber": keep,
            },
            "action": { "type": "expire" },
        }]
    })
}

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
            let tags = match self.api.list_tags(&repo.arn).await {
                Ok(tags) => tags,
                Err(e) if e.is_not_found() => return Ok(None),
                Err(e) => return Err(StepError::aws(repo.name.clone(), "ListTagsForResource")(e)),
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
        let results = try_join_all(services.iter().zip(&names).map(|(service, name)| {
            let (engine, made, configured) = (&engine, &made, found.configured.get(name));
            async move {
                let repository = self.converge_one(engine, service, name, configured).await?;
                made.add(*service, repository.clone(), |repositories| {
                    ctx.put_partial(RegistryOutputs { repositories })
                });
                Ok::<_, StepError>(repository)
            }
        }))
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
    fn name(&self) -> &'static str {
        "registry"
    }

    fn needs(&self) -> &'static [OutputKind] {
        &[]
    }

    fn produces(&self) -> OutputKind {
        OutputKind::Registry
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
mod tests {
    use super::*;
    use tap_core::naming::{Names, TAG_COMPONENT, TAG_ENVIRONMENT};
    use tap_core::Config;

    fn ctx() -> Context {
        Context::new(Config::default())
    }

    fn repo(name: &str, immutable_tags: bool, scan_on_push: bool) -> ObservedRepository {
        ObservedRepository {
            name: name.into(),
            arn: format!("arn:aws:ecr:us-east-1:123456789012:repository/{name}"),
            uri: format!("123456789012.dkr.ecr.us-east-1.amazonaws.com/{name}"),
            immutable_tags,
            scan_on_push,
        }
    }

    /// The tags of a repository named `tap-…-{env}` (`x-dev` and `prod` told from `dev`).
    fn tags_by_arn(arn: &str) -> Vec<Tag> {
        let name = arn.rsplit('/').next().unwrap();
        let env = ["x-dev", "prod"].into_iter().find(|e| name.ends_with(&format!("-{e}"))).unwrap_or("dev");
        Names::new(&Config { environment: env.into(), ..Config::default() }).tags("registry/repository/x", name)
    }

    fn tags_answered(mock: &mut MockEcrApi) {
        mock.expect_list_tags().returning(|arn| Ok(tags_by_arn(arn)));
    }

    const NAMES: [&str; 3] = ["tap-frontend-dev", "tap-api-gateway-dev", "tap-processing-service-dev"];

    fn all_matching() -> Vec<ObservedRepository> {
        NAMES.iter().map(|n| repo(n, true, true)).collect()
    }

    fn desired_policy_text() -> String {
        // Other formatting and key order than tap's own text: the comparison is semantic.
        r#"{ "rules": [ { "action": {"type": "expire"}, "selection": {"countNumber": 10, "countType": "imageCountMoreThan", "tagStatus": "any"},
            "description": "Keep the last 10 images", "rulePriority": 1 } ] }"#
            .into()
    }

    fn no_mutations(mock: &mut MockEcrApi) {
        mock.expect_create_repository().never();
        mock.expect_put_image_tag_mutability().never();
        mock.expect_put_image_scanning_configuration().never();
        mock.expect_put_lifecycle_policy().never();
        mock.expect_delete_repository().never();
    }

    #[test]
    fn policy_keeps_the_configured_count() {
        let p = lifecycle_policy(10);
        assert_eq!(p["rules"][0]["selection"]["countNumber"], 10);
        assert_eq!(p["rules"][0]["selection"]["countType"], "imageCountMoreThan");
        assert_eq!(p["rules"][0]["action"]["type"], "expire");
        assert!(policy_matches(Some(&desired_policy_text()), &p));
        assert!(!policy_matches(Some(&desired_policy_text().replace("10", "11")), &p));
        assert!(!policy_matches(Some("not json"), &p));
        assert!(!policy_matches(None, &p));
    }

    #[tokio::test]
    async fn creates_every_repository_with_the_spec_settings() {
        let mut mock = MockEcrApi::new();
        // One listing of the registry finds what exists (no DescribeRepositories by name).
        mock.expect_describe_repositories().never();
        mock.expect_list_repositories().times(1).returning(|| Ok(vec![]));
        mock.expect_create_repository()
            .withf(|name: &str, immutable: &bool, scan: &bool, tags: &[Tag]| {
                let tag = |k: &str, v: &str| tags.contains(&(k.to_string(), v.to_string()));
                NAMES.contains(&name)
                    && *immutable
                    && *scan
                    && tag("Environment", "dev")
                    && tag("Project", "tap")
                    && tag("ManagedBy", "tap")
                    && tag("Name", name)
                    && tags.iter().any(|(k, v)| k == TAG_COMPONENT && v.starts_with(COMPONENT_PREFIX))
            })
            .times(3)
            .returning(|name, i, s, _| Ok(repo(name, i, s)));
        mock.expect_put_lifecycle_policy()
            .withf(|name: &str, text: &str| {
                NAMES.contains(&name) && serde_json::from_str::<Value>(text).unwrap() == lifecycle_policy(10)
            })
            .times(3)
            .returning(|_, _| Ok(()));
        mock.expect_get_lifecycle_policy().never();
        mock.expect_put_image_tag_mutability().never();
        mock.expect_put_image_scanning_configuration().never();
        let ctx = ctx();
        let changes = RegistryStep::new(Arc::new(mock)).apply(&ctx).await.unwrap();
        assert_eq!(changes.len(), 3);
        assert!(changes.iter().all(|c| c.action == tap_core::Action::Create));
        let out = ctx.get::<RegistryOutputs>("test").unwrap();
        assert_eq!(
            out.repositories["api-gateway"].uri,
            "123456789012.dkr.ecr.us-east-1.amazonaws.com/tap-api-gateway-dev"
        );
    }

    /// The first create's answer was lost and the retry says "already exists": the repository is
    /// adopted when it carries this environment's tags, and a conflict naming its owner otherwise.
    #[tokio::test]
    async fn a_repository_that_already_exists_is_adopted_only_when_ours() {
        for (env_tag, adopted) in [("dev", true), ("someone-else", false)] {
            let mut mock = MockEcrApi::new();
            // Not found by the first look (the batch and the listing); found by the adoption's.
            mock.expect_describe_repositories().returning(move |names| {
                if names.len() == 1 && names[0] == "tap-frontend-dev" {
                    Ok(vec![repo("tap-frontend-dev", true, true)])
                } else {
                    Err(AwsError::new("RepositoryNotFoundException", "not found"))
                }
            });
            mock.expect_list_repositories().returning(|| Ok(vec![]));
            mock.expect_create_repository().returning(|name, i, s, _| {
                if name == "tap-frontend-dev" {
                    Err(AwsError::new("RepositoryAlreadyExistsException", "exists"))
                } else {
                    Ok(repo(name, i, s))
                }
            });
            let tag = env_tag.to_string();
            mock.expect_list_tags().times(1).returning(move |arn| {
                let name = arn.rsplit('/').next().unwrap();
                Ok(Names::new(&Config { environment: tag.clone(), ..Config::default() })
                    .tags("registry/repository/x", name))
            });
            mock.expect_get_lifecycle_policy().returning(|_| Ok(None));
            mock.expect_put_lifecycle_policy().returning(|_, _| Ok(()));
            let ctx = ctx();
            let result = RegistryStep::new(Arc::new(mock)).apply(&ctx).await;
            if adopted {
                assert_eq!(result.unwrap().len(), 3);
                let out = ctx.get::<RegistryOutputs>("test").unwrap();
                assert!(out.repositories["frontend"].arn.contains("tap-frontend-dev"));
            } else {
                let err = result.unwrap_err();
                assert!(matches!(err, StepError::Conflict { .. }), "{err}");
                let err = err.to_string();
                assert!(err.contains("tap-frontend-dev") && err.contains("`someone-else`"), "{err}");
            }
        }
    }

    #[tokio::test]
    async fn finds_the_existing_ones_when_some_are_missing() {
        let mut mock = MockEcrApi::new();
        tags_answered(&mut mock);
        // One listing of the registry finds what exists (no DescribeRepositories by name).
        mock.expect_describe_repositories().never();
        // One listing finds them (another environment's repository among them is ignored).
        mock.expect_list_repositories()
            .times(1)
            .returning(|| Ok(vec![repo("tap-frontend-dev", true, true), repo("tap-frontend-prod", true, true)]));
        mock.expect_get_lifecycle_policy().times(1).returning(|_| Ok(Some(desired_policy_text())));
        mock.expect_create_repository()
            .withf(|name: &str, _: &bool, _: &bool, _: &[Tag]| name != "tap-frontend-dev")
            .times(2)
            .returning(|n, i, s, _| Ok(repo(n, i, s)));
        mock.expect_put_lifecycle_policy()
            .withf(|name: &str, _: &str| name != "tap-frontend-dev")
            .times(2)
            .returning(|_, _| Ok(()));
        let changes = RegistryStep::new(Arc::new(mock)).apply(&ctx()).await.unwrap();
        assert_eq!(changes.len(), 2);
    }

    #[tokio::test]
    async fn matching_repositories_get_no_mutating_call() {
        let mut mock = MockEcrApi::new();
        tags_answered(&mut mock);
        mock.expect_list_repositories().times(1).returning(|| Ok(all_matching()));
        mock.expect_get_lifecycle_policy().times(3).returning(|_| Ok(Some(desired_policy_text())));
        no_mutations(&mut mock);
        let ctx = ctx();
        let changes = RegistryStep::new(Arc::new(mock)).apply(&ctx).await.unwrap();
        assert!(changes.is_empty(), "{changes:?}");
        assert_eq!(ctx.get::<RegistryOutputs>("test").unwrap().repositories.len(), 3);
    }

    #[tokio::test]
    async fn removed_lifecycle_policy_is_put_back_and_nothing_else() {
        let mut mock = MockEcrApi::new();
        tags_answered(&mut mock);
        mock.expect_list_repositories().times(1).returning(|| Ok(all_matching()));
        mock.expect_get_lifecycle_policy()
            .times(3)
            .returning(|name| Ok((name != "tap-api-gateway-dev").then(desired_policy_text)));
        mock.expect_put_lifecycle_policy()
            .withf(|name: &str, text: &str| {
                name == "tap-api-gateway-dev" && serde_json::from_str::<Value>(text).unwrap() == lifecycle_policy(10)
            })
            .times(1)
            .returning(|_, _| Ok(()));
        mock.expect_create_repository().never();
        mock.expect_put_image_tag_mutability().never();
        mock.expect_put_image_scanning_configuration().never();
        let changes = RegistryStep::new(Arc::new(mock)).apply(&ctx()).await.unwrap();
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].action, tap_core::Action::Update);
        assert_eq!(changes[0].attributes[0].attribute, "lifecycle_policy");
    }

    #[tokio::test]
    async fn mutable_tags_are_made_immutable() {
        let mut mock = MockEcrApi::new();
        tags_answered(&mut mock);
        mock.expect_list_repositories()
            .times(1)
            .returning(|| Ok(NAMES.iter().map(|n| repo(n, *n != "tap-frontend-dev", true)).collect()));
        mock.expect_get_lifecycle_policy().times(3).returning(|_| Ok(Some(desired_policy_text())));
        mock.expect_put_image_tag_mutability()
            .withf(|name: &str, immutable: &bool| name == "tap-frontend-dev" && *immutable)
            .times(1)
            .returning(|_, _| Ok(()));
        mock.expect_create_repository().never();
        mock.expect_put_lifecycle_policy().never();
        mock.expect_put_image_scanning_configuration().never();
        let changes = RegistryStep::new(Arc::new(mock)).apply(&ctx()).await.unwrap();
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].attributes[0].new.as_deref(), Some("\"IMMUTABLE\""));
    }

    #[tokio::test]
    async fn plan_lists_drift_and_creates_without_mutating() {
        let mut mock = MockEcrApi::new();
        tags_answered(&mut mock);
        mock.expect_describe_repositories()
            .withf(|names: &[String]| names.len() == 3)
            .returning(|_| Err(AwsError::new("RepositoryNotFoundException", "x")));
        mock.expect_list_repositories().returning(|| Ok(vec![repo("tap-frontend-dev", true, false)]));
        mock.expect_get_lifecycle_policy().returning(|_| Ok(None));
        no_mutations(&mut mock);
        let ctx = ctx();
        let changes = RegistryStep::new(Arc::new(mock)).plan(&ctx).await.unwrap();
        assert_eq!(changes.iter().filter(|c| c.action == tap_core::Action::Create).count(), 2);
        let update = changes.iter().find(|c| c.action == tap_core::Action::Update).unwrap();
        let attrs: Vec<&str> = update.attributes.iter().map(|a| a.attribute.as_str()).collect();
        assert_eq!(attrs, ["scan_on_push", "lifecycle_policy"]);
        assert_eq!(ctx.get::<RegistryOutputs>("test").unwrap().repositories["api-gateway"].arn, PENDING);
    }

    /// `tap-frontend-dev` carries environment `x-dev`'s tags (its service `frontend` of `x`…, or
    /// any name two environments share): plan lists a conflict naming `x-dev`, apply stops before
    /// any write, and it is never reported as this environment's repository.
    #[tokio::test]
    async fn a_repository_of_this_name_with_another_environments_tags_is_a_conflict() {
        for mode in [Mode::Plan, Mode::Apply] {
            let mut mock = MockEcrApi::new();
            mock.expect_list_repositories().times(1).returning(|| Ok(all_matching()));
            mock.expect_get_lifecycle_policy().returning(|_| Ok(Some(desired_policy_text())));
            mock.expect_list_tags().returning(|arn| {
                let name = arn.rsplit('/').next().unwrap();
                let env = if name == "tap-frontend-dev" { "x-dev" } else { "dev" };
                Ok(Names::new(&Config { environment: env.into(), ..Config::default() })
                    .tags("registry/repository/x", name))
            });
            no_mutations(&mut mock);
            let ctx = ctx();
            let result = RegistryStep::new(Arc::new(mock)).converge(&ctx, mode).await;
            if mode.is_apply() {
                let err = result.unwrap_err();
                assert!(matches!(err, StepError::Conflict { .. }), "{err}");
                assert!(err.to_string().contains("tap-frontend-dev") && err.to_string().contains("`x-dev`"), "{err}");
                continue;
            }
            let changes = result.unwrap();
            assert_eq!(changes.len(), 1, "{changes:?}");
            assert_eq!(changes[0].action, tap_core::Action::Conflict);
            assert_eq!(changes[0].resource, "registry/repository/frontend");
            assert!(changes[0].reason.as_deref().unwrap().contains("environment `x-dev`"), "{changes:?}");
            let out = ctx.get::<RegistryOutputs>("test").unwrap();
            assert_eq!(out.repositories["frontend"].uri, PENDING, "not reported as this environment's");
        }
    }

    #[tokio::test]
    async fn throttling_surfaces_as_retryable() {
        let mut mock = MockEcrApi::new();
        mock.expect_list_repositories().returning(|| Err(AwsError::throttling()));
        no_mutations(&mut mock);
        let err = RegistryStep::new(Arc::new(mock)).apply(&ctx()).await.unwrap_err();
        assert!(err.is_retryable(), "{err}");
        assert!(err.to_string().contains("DescribeRepositories"), "{err}");
    }

    #[tokio::test]
    async fn destroy_on_an_empty_registry_succeeds() {
        let mut mock = MockEcrApi::new();
        mock.expect_list_repositories().times(1).returning(|| Ok(vec![]));
        no_mutations(&mut mock);
        let changes = RegistryStep::new(Arc::new(mock)).destroy(&ctx()).await.unwrap();
        assert!(changes.is_empty());
    }

    #[tokio::test]
    async fn destroy_force_deletes_only_this_environments_repositories() {
        let mut mock = MockEcrApi::new();
        mock.expect_list_repositories().times(1).returning(|| {
            Ok(vec![
                repo("tap-frontend-dev", true, true),
                repo("tap-old-service-dev", true, true),
                repo("tap-frontend-x-dev", true, true),
                repo("tap-frontend-prod", true, true),
                repo("unrelated", true, true),
            ])
        });
        mock.expect_list_tags().times(3).returning(|arn| {
            let env = if arn.ends_with("x-dev") { "x-dev" } else { "dev" };
            let name = arn.rsplit('/').next().unwrap();
            Ok(Names::new(&Config { environment: env.into(), ..Config::default() }).tags("registry/repository/x", name))
        });
        mock.expect_delete_repository()
            .withf(|name: &str, force: &bool| (name == "tap-frontend-dev" || name == "tap-old-service-dev") && *force)
            .times(2)
            .returning(|_, _| Ok(()));
        let changes = RegistryStep::new(Arc::new(mock)).destroy(&ctx()).await.unwrap();
        assert_eq!(changes.len(), 2);
        assert!(changes.iter().all(|c| c.action == tap_core::Action::Delete));
    }

    /// The registry after the config dropped `processing-service` and `old` (both still there,
    /// with this environment's tags), beside a look-alike without tap's tags and another
    /// environment's repository.
    fn pruned_registry(prune_data: bool, with_images: bool) -> (MockEcrApi, Context) {
        let mut mock = MockEcrApi::new();
        mock.expect_list_repositories().times(1).returning(|| {
            let mut repos = all_matching();
            repos.push(repo("tap-old-dev", true, true));
            repos.push(repo("tap-hand-made-dev", true, true));
            repos.push(repo("tap-old-prod", true, true));
            Ok(repos)
        });
        mock.expect_get_lifecycle_policy().times(2).returning(|_| Ok(Some(desired_policy_text())));
        // The repositories of this environment's name are asked for their tags (whose they are).
        mock.expect_list_tags().withf(|arn: &str| arn.ends_with("-dev")).times(5).returning(|arn| {
            let name = arn.rsplit('/').next().unwrap();
            if name == "tap-hand-made-dev" {
                // Named like tap's, but not tagged as managed by tap.
                return Ok(vec![(TAG_ENVIRONMENT.to_string(), "dev".to_string())]);
            }
            let service = name.strip_prefix("tap-").and_then(|n| n.strip_suffix("-dev")).unwrap();
            Ok(Names::new(&Config::default()).tags(&format!("registry/repository/{service}"), name))
        });
        // `old` is empty; `processing-service` holds images when `with_images`.
        mock.expect_has_images()
            .times(if prune_data { 0 } else { 2 })
            .returning(move |name| Ok(with_images && name == "tap-processing-service-dev"));
        mock.expect_create_repository().never();
        mock.expect_put_lifecycle_policy().never();
        let mut config = Config::default();
        config.services.retain(|s| s.name != "processing-service");
        config.deploy.prune_data = prune_data;
        (mock, Context::new(config))
    }

    #[tokio::test]
    async fn a_removed_services_repository_is_kept_while_it_holds_images() {
        let (mut mock, ctx) = pruned_registry(false, true);
        mock.expect_delete_repository()
            .withf(|name: &str, force: &bool| name == "tap-old-dev" && *force)
            .times(1)
            .returning(|_, _| Ok(()));
        let changes = RegistryStep::new(Arc::new(mock)).apply(&ctx).await.unwrap();
        let mut got: Vec<(String, tap_core::Action)> = changes.iter().map(|c| (c.name.clone(), c.action)).collect();
        got.sort();
        assert_eq!(
            got,
            [
                ("tap-old-dev".to_string(), tap_core::Action::Delete),
                ("tap-processing-service-dev".to_string(), tap_core::Action::Keep)
            ]
        );
        assert_eq!(ctx.get::<RegistryOutputs>("test").unwrap().repositories.len(), 2);
    }

    #[tokio::test]
    async fn with_prune_data_a_repository_holding_images_is_deleted_too() {
        let (mut mock, ctx) = pruned_registry(true, true);
        mock.expect_delete_repository()
            .withf(|name: &str, force: &bool| (name == "tap-old-dev" || name == "tap-processing-service-dev") && *force)
            .times(2)
            .returning(|_, _| Ok(()));
        let changes = RegistryStep::new(Arc::new(mock)).apply(&ctx).await.unwrap();
        assert_eq!(changes.len(), 2, "{changes:?}");
        assert!(changes.iter().all(|c| c.action == tap_core::Action::Delete));
    }

    #[tokio::test]
    async fn plan_lists_the_prune_without_deleting() {
        let (mut mock, ctx) = pruned_registry(false, false);
        mock.expect_delete_repository().never();
        let changes = RegistryStep::new(Arc::new(mock)).plan(&ctx).await.unwrap();
        let mut got: Vec<(String, tap_core::Action)> = changes.iter().map(|c| (c.name.clone(), c.action)).collect();
        got.sort();
        // Both are empty here: both would be deleted; the hand-made one is not tap's.
        assert_eq!(
            got,
            [
                ("tap-old-dev".to_string(), tap_core::Action::Delete),
                ("tap-processing-service-dev".to_string(), tap_core::Action::Delete)
            ]
        );
    }
}
