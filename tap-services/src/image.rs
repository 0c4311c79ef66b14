//! The image check: a service that already runs is never moved to an image its repository does
//! not have.
//!
//! A service *runs* when its ECS service is ACTIVE, whatever its task count. It *moves* when the
//! desired image differs from the one of the revision it runs (the family's latest, read already,
//! or — after a rollback — an older one, read then). Only then is the repository asked for the
//! tag (one DescribeImages), and only when the tag is missing are its tags listed (one paged
//! DescribeImages), so a deploy that changes no image makes no call here.
//!
//! When the tag is missing, plan lists a [`Change::refuse`] for the service
//! (`services/image/<service>`) and apply fails before registering anything for it; unless
//! `deploy.allow_missing_images` (`--allow-missing-image`) lets it go on with a warning. A service
//! still to be created is never refused: its first deploy creates it and says how to push.

use tap_core::config::ServiceSpec;
use tap_core::outputs::{is_known, Repository};
use tap_core::{Change, Context, StepError};

use crate::api::{Observed, ServicesApi};
use crate::{component, Inputs};

/// How many of a repository's tags a refusal names (the newest ones).
pub const TAGS_SHOWN: usize = 5;

/// One image of a repository as DescribeImages lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepositoryImage {
    /// Its tags (none for an untagged image).
    pub tags: Vec<String>,
    /// When it was pushed, seconds since the epoch (when known).
    pub pushed_at: Option<i64>,
}

/// A running service that would move to an image its repository does not have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingImage {
    /// The service, e.g. `api-gateway`.
    pub service: String,
    /// The repository's name, e.g. `tap-api-gateway-dev`.
    pub repository: String,
    /// The repository's URI (empty while the repository is still to be created).
    pub uri: String,
    /// The tag the service would move to.
    pub tag: String,
    /// The repository's tags, newest first, at most [`TAGS_SHOWN`].
    pub tags: Vec<String>,
    /// How many more tags it has.
    pub more: usize,
}

impl MissingImage {
    /// Logical id of the refusal: `services/image/<service>`.
    pub fn resource(&self) -> String {
        component("image", &self.service)
    }

    /// `tap-api-gateway-dev:v9 is not in the repository (it has: v2, v1)`.
    pub fn reason(&self) -> String {
        let has = match (self.tags.as_slice(), self.more) {
            ([], _) => "it has no tagged image".to_owned(),
            (tags, 0) => format!("it has: {}", tags.join(", ")),
            (tags, more) => format!("it has: {} and {more} more", tags.join(", ")),
        };
        format!("{}:{} is not in the repository ({has})", self.repository, self.tag)
    }

    /// What plan lists: deploy refuses to move the service.
    pub fn change(&self) -> Change {
        Change::refuse(self.resource(), format!("{}:{}", self.repository, self.tag), self.reason())
    }

    /// Why apply stops (when the read-only look before it did not).
    pub fn error(&self) -> StepError {
        StepError::Conflict {
            resource: self.resource(),
            message: format!(
                "{} runs and would move to an image its repository does not have: {}; push it{}, deploy a tag \
                 the repository has, or pass --allow-missing-image (deploy.allow_missing_images) to move it anyway",
                self.service,
                self.reason(),
                if self.uri.is_empty() { String::new() } else { format!(" (docker push {}:{})", self.uri, self.tag) },
            ),
        }
    }
}

/// The repository's tags, newest first (ties by tag, descending), each once.
pub fn newest_tags(mut images: Vec<RepositoryImage>) -> Vec<String> {
    images.iter_mut().for_each(|i| i.tags.sort_by(|a, b| b.cmp(a)));
    images.sort_by(|a, b| b.pushed_at.cmp(&a.pushed_at).then_with(|| b.tags.cmp(&a.tags)));
    let mut tags: Vec<String> = Vec::new();
    for tag in images.into_iter().flat_map(|i| i.tags) {
        if !tags.contains(&tag) {
            tags.push(tag);
        }
    }
    tags
}

/// Whether this deploy would move the running service to another image than the one it runs
/// (see the module docs). The image it runs is its revision's: the family's latest one, read
/// already, or — when it runs another revision (after a rollback, or a deploy interrupted between
/// registering a revision and moving the service to it) — that revision, read here.
pub(crate) async fn moves(
    api: &dyn ServicesApi,
    ctx: &Context,
    inputs: &Inputs,
    spec: &ServiceSpec,
    observed: &Observed,
) -> Result<bool, StepError> {
    let Some(running) = observed.services.get(&ctx.names.ecs_service(&spec.name)).filter(|s| s.is_active()) else {
        return Ok(false);
    };
    // Without a repository the step's render names the missing output.
    let Some(repository) = inputs.registry.repositories.get(&spec.name) else { return Ok(false) };
    let image = format!("{}:{}", repository.uri, ctx.config.image_tag_of(spec));
    let latest = observed.task_definitions.get(&ctx.names.task_family(&spec.name));
    let runs = match (running.task_definition.as_deref(), latest) {
        (Some(arn), Some(latest)) if arn == latest.arn => Some(latest.definition.clone()),
        (Some(arn), _) => api
            .describe_task_definition(arn)
            .await
            .map_err(StepError::aws(component("task-definition", &spec.name), "DescribeTaskDefinition"))?
            .map(|td| td.definition),
        (None, _) => None,
    };
    Ok(runs.is_none_or(|definition| definition.containers.iter().any(|c| c.image != image)))
}

/// Whether `repository` holds the service's image: no call for a repository this run creates or
/// plan has yet to create (it holds none).
pub(crate) async fn exists(
    api: &dyn ServicesApi,
    repository: &Repository,
    spec: &ServiceSpec,
    tag: &str,
) -> Result<bool, StepError> {
    if !is_known(&repository.uri) || repository.created {
        return Ok(false);
    }
    api.image_exists(&repository.name, tag)
        .await
        .map_err(StepError::aws(format!("registry/repository/{}", spec.name), "DescribeImages"))
}

/// The refusal for a running service whose image `tag` is missing: the repository's tags listed.
pub(crate) async fn missing(
    api: &dyn ServicesApi,
    repository: &Repository,
    spec: &ServiceSpec,
    tag: &str,
) -> Result<MissingImage, StepError> {
    let listed = if !is_known(&repository.uri) || repository.created {
        vec![]
    } else {
        api.repository_images(&repository.name)
            .await
            .map_err(StepError::aws(format!("registry/repository/{}", spec.name), "DescribeImages"))?
    };
    let tags = newest_tags(listed);
    let more = tags.len().saturating_sub(TAGS_SHOWN);
    Ok(MissingImage {
        service: spec.name.clone(),
        repository: repository.name.clone(),
        uri: if is_known(&repository.uri) { repository.uri.clone() } else { String::new() },
        tag: tag.to_owned(),
        tags: tags.into_iter().take(TAGS_SHOWN).collect(),
        more,
    })
}

/// Warns that the service's image is not in its repository, with the commands that push it.
pub(crate) fn warn_missing(ctx: &Context, spec: &ServiceSpec, repository: &Repository, tag: &str, why: &str) {
    let uri = &repository.uri;
    let registry = uri.split('/').next().unwrap_or(uri);
    tracing::warn!(
        service = %spec.name,
        repository = %repository.name,
        tag,
        "image {uri}:{tag} is not in ECR, so the service cannot start tasks; {why}. Push it with: \
         aws ecr get-login-password --region {region} | docker login --username AWS --password-stdin {registry} \
         && docker tag <local image> {uri}:{tag} && docker push {uri}:{tag}",
        region = ctx.region,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(tags: &[&str], pushed_at: i64) -> RepositoryImage {
        RepositoryImage { tags: tags.iter().map(|t| t.to_string()).collect(), pushed_at: Some(pushed_at) }
    }

    #[test]
    fn tags_are_newest_first_each_once_and_untagged_images_add_none() {
        let images = vec![image(&["v1"], 10), image(&[], 40), image(&["v3", "stable"], 30), image(&["v2"], 20)];
        assert_eq!(newest_tags(images), ["v3", "stable", "v2", "v1"]);
        // Pushed in the same second: the higher tag first, whatever the listing's order.
        assert_eq!(newest_tags(vec![image(&["a"], 5), image(&["b"], 5)]), ["b", "a"]);
    }

    #[test]
    fn the_reason_names_the_image_and_a_handful_of_tags() {
        let missing = MissingImage {
            service: "api-gateway".into(),
            repository: "tap-api-gateway-dev".into(),
            uri: "123456789012.dkr.ecr.eu-west-1.amazonaws.com/tap-api-gateway-dev".into(),
            tag: "v9".into(),
            tags: vec!["v2".into(), "v1".into()],
            more: 0,
        };
        assert_eq!(missing.reason(), "tap-api-gateway-dev:v9 is not in the repository (it has: v2, v1)");
        let change = missing.change();
        assert_eq!(
            (change.resource.as_str(), change.name.as_str(), change.action),
            ("services/image/api-gateway", "tap-api-gateway-dev:v9", tap_core::Action::Refuse)
        );
        let many = MissingImage { more: 3, ..missing.clone() };
        assert!(many.reason().ends_with("(it has: v2, v1 and 3 more)"), "{}", many.reason());
        let none = MissingImage { tags: vec![], ..missing.clone() };
        assert!(none.reason().ends_with("(it has no tagged image)"), "{}", none.reason());
        let err = missing.error().to_string();
        for needle in ["api-gateway runs", "tap-api-gateway-dev:v9", "v2, v1", "--allow-missing-image"] {
            assert!(err.contains(needle), "{needle} in {err}");
        }
    }
}
