//! The ECR repository kind: immutable tags, scan on push and a lifecycle policy, compared as JSON.
//! A repository holding images is data: a prune keeps it unless `deploy.prune_data`.

use async_trait::async_trait;
use serde_json::{json, Value};
use tap_core::error::IfFound;
use tap_core::naming::Tag;
use tap_core::resource::{ActionError, Deleted, Diff, During, Owner, Resource};
use tap_core::step::diff;
use tap_core::{AttrChange, AwsError};

use crate::api::{EcrApi, ObservedRepository};

/// A repository as the config wants it.
#[derive(Debug, Clone, PartialEq)]
pub struct DesiredRepository {
    /// `tap-{service}-{s}`.
    pub name: String,
    /// Tag mutability IMMUTABLE.
    pub immutable_tags: bool,
    /// Scan on push.
    pub scan_on_push: bool,
    /// The lifecycle policy.
    pub lifecycle_policy: Value,
    /// Tags set at creation.
    pub tags: Vec<Tag>,
}

/// A repository as AWS has it, with its lifecycle policy text (`None`: it has none; not read for
/// a repository only found to be pruned or destroyed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepositoryState {
    /// The repository.
    pub repository: ObservedRepository,
    /// Its lifecycle policy text.
    pub lifecycle_policy: Option<String>,
    /// Its tags, when already read (`ListTagsForResource`; DescribeRepositories does not report
    /// them).
    pub tags: Option<Vec<Tag>>,
}

/// What an update sets: only what differs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RepositoryUpdate {
    /// New tag mutability.
    pub immutable_tags: Option<bool>,
    /// New scan-on-push setting.
    pub scan_on_push: Option<bool>,
    /// New lifecycle policy text.
    pub lifecycle_policy: Option<String>,
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

/// Whether the observed policy text means the same as `desired` (JSON, so formatting and key
/// order do not matter; text that is not JSON never matches).
pub(crate) fn policy_matches(observed: Option<&str>, desired: &Value) -> bool {
    observed.and_then(|text| serde_json::from_str::<Value>(text).ok()).is_some_and(|v| &v == desired)
}

/// The repository kind over the crate's AWS seam.
pub(crate) struct RepositoryKind<'a>(pub &'a dyn EcrApi);

#[async_trait]
impl Resource for RepositoryKind<'_> {
    type Desired = DesiredRepository;
    type Observed = RepositoryState;
    type Update = RepositoryUpdate;
    const CREATE: &'static str = "CreateRepository";

    fn diff(&self, want: &DesiredRepository, have: &RepositoryState) -> Result<Option<Diff<RepositoryUpdate>>, String> {
        let repo = &have.repository;
        let mut attrs = Vec::new();
        let mut update = RepositoryUpdate::default();
        let mutability_of = |immutable: bool| if immutable { "IMMUTABLE" } else { "MUTABLE" };
        if repo.immutable_tags != want.immutable_tags {
            diff(
                &mut attrs,
                "image_tag_mutability",
                &mutability_of(repo.immutable_tags),
                &mutability_of(want.immutable_tags),
            );
            update.immutable_tags = Some(want.immutable_tags);
        }
        if repo.scan_on_push != want.scan_on_push {
            diff(&mut attrs, "scan_on_push", &repo.scan_on_push, &want.scan_on_push);
            update.scan_on_push = Some(want.scan_on_push);
        }
        if !policy_matches(have.lifecycle_policy.as_deref(), &want.lifecycle_policy) {
            let text = want.lifecycle_policy.to_string();
            attrs.push(AttrChange::new("lifecycle_policy", have.lifecycle_policy.clone(), Some(text.clone())));
            update.lifecycle_policy = Some(text);
        }
        Ok((!attrs.is_empty()).then(|| Diff::new(update, attrs)))
    }

    /// The repository named `want.name` with its tags and lifecycle policy (the engine adopts it
    /// only when its tags say it is this environment's).
    async fn find(&self, want: &DesiredRepository) -> Result<Option<RepositoryState>, AwsError> {
        let found = self.0.describe_repositories(std::slice::from_ref(&want.name)).await.if_found()?;
        let Some(repository) = found.and_then(|mut repos| repos.pop()) else { return Ok(None) };
        let (tags, lifecycle_policy) =
            tokio::try_join!(self.0.list_tags(&repository.arn), self.0.get_lifecycle_policy(&want.name))?;
        Ok(Some(RepositoryState { repository, lifecycle_policy, tags: Some(tags) }))
    }

    /// A create whose answer was lost and was sent again answers "already exists": the engine
    /// looks the repository up and adopts it when its tags say it is this environment's (its
    /// lifecycle policy is then set as a settle), and reports a conflict otherwise.
    fn already_exists(&self, error: &AwsError) -> bool {
        error.is("RepositoryAlreadyExistsException")
    }

    /// From its tags (`ListTagsForResource`, unless already read): repository names are per
    /// account and region, and `tap-api-x-dev` is both `dev`'s service `api-x` and `x-dev`'s
    /// service `api`.
    async fn owner(&self, have: &RepositoryState, env: &str) -> Result<Owner, ActionError> {
        if let Some(tags) = &have.tags {
            return Ok(Owner::of(tags, env));
        }
        let tags = self.0.list_tags(&have.repository.arn).await.during("ListTagsForResource")?;
        Ok(Owner::of(&tags, env))
    }

    /// Creates the repository and puts its lifecycle policy.
    async fn create(&self, want: &DesiredRepository) -> Result<RepositoryState, AwsError> {
        let repository =
            self.0.create_repository(&want.name, want.immutable_tags, want.scan_on_push, &want.tags).await?;
        let text = want.lifecycle_policy.to_string();
        self.0.put_lifecycle_policy(&want.name, &text).await?;
        Ok(RepositoryState { repository, lifecycle_policy: Some(text), tags: Some(want.tags.clone()) })
    }

    /// The repository with the update applied.
    async fn update(&self, have: &RepositoryState, update: &RepositoryUpdate) -> Result<RepositoryState, ActionError> {
        let name = &have.repository.name;
        let mutability = async {
            match update.immutable_tags {
                Some(immutable) => {
                    self.0.put_image_tag_mutability(name, immutable).await.during("PutImageTagMutability")
                }
                None => Ok(()),
            }
        };
        let scanning = async {
            match update.scan_on_push {
                Some(scan) => {
                    self.0.put_image_scanning_configuration(name, scan).await.during("PutImageScanningConfiguration")
                }
                None => Ok(()),
            }
        };
        let lifecycle = async {
            match &update.lifecycle_policy {
                Some(text) => self.0.put_lifecycle_policy(name, text).await.during("PutLifecyclePolicy"),
                None => Ok(()),
            }
        };
        tokio::try_join!(mutability, scanning, lifecycle)?;
        let mut now = have.clone();
        if let Some(immutable) = update.immutable_tags {
            now.repository.immutable_tags = immutable;
        }
        if let Some(scan) = update.scan_on_push {
            now.repository.scan_on_push = scan;
        }
        if let Some(text) = &update.lifecycle_policy {
            now.lifecycle_policy = Some(text.clone());
        }
        Ok(now)
    }

    /// Deletes the repository with its images (a prune only gets here for an empty repository or
    /// with consent; destroy always).
    async fn delete(&self, have: &RepositoryState) -> Result<Deleted, ActionError> {
        self.0.delete_repository(&have.repository.name, true).await.during("DeleteRepository")?;
        Ok(Deleted::Now)
    }

    async fn holds_data(&self, have: &RepositoryState) -> Result<bool, ActionError> {
        self.0.has_images(&have.repository.name).await.during("ListImages")
    }
}
