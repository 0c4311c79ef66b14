//! The ECR repository kind: immutable tags, scan on push and a lifecycle policy, compared as JSON.
//! A repository holding images is data: a prune keeps it unless `deploy.prune_data`.

use async_trait::async_trait;
use serde_json::Value;
use tap_core::naming::{Tag, TAG_ENVIRONMENT};
use tap_core::resource::{ActionError, Diff, During, Resource};
use tap_core::step::diff;
use tap_core::{AttrChange, AwsError};

use crate::{EcrApi, ObservedRepository};

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
    /// The environment suffix (a repository is adopted only when its tag names it).
    pub env: String,
}

/// A repository as AWS has it, with its lifecycle policy text (`None`: it has none; not read for
/// a repository only found to be pruned or destroyed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepositoryState {
    /// The repository.
    pub repository: ObservedRepository,
    /// Its lifecycle policy text.
    pub lifecycle_policy: Option<String>,
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

/// Whether the observed policy text means the same as `desired` (JSON, so formatting and key
/// order do not matter; text that is not JSON never matches).
pub(crate) fn policy_matches(observed: Option<&str>, desired: &Value) -> bool {
    observed.and_then(|text| serde_json::from_str::<Value>(text).ok()).is_some_and(|v| &v == desired)
}

/// The repository kind over the crate's AWS seam.
pub(crate) struct RepositoryKind<'a>(pub &'a dyn EcrApi);

impl RepositoryKind<'_> {
    /// The repository named `want.name`, if it carries this environment's tag.
    async fn find_ours(&self, want: &DesiredRepository) -> Result<Option<ObservedRepository>, AwsError> {
        let found = match self.0.describe_repositories(std::slice::from_ref(&want.name)).await {
            Ok(mut repos) => repos.pop(),
            Err(e) if e.is_not_found() => None,
            Err(e) => return Err(e),
        };
        let Some(repo) = found else { return Ok(None) };
        let tags = self.0.list_tags(&repo.arn).await?;
        let ours = tags.iter().any(|(k, v)| k == TAG_ENVIRONMENT && *v == want.env);
        Ok(ours.then_some(repo))
    }
}

#[async_trait]
impl Resource for RepositoryKind<'_> {
    type Desired = DesiredRepository;
    type Observed = RepositoryState;
    type Update = RepositoryUpdate;
    const KIND: &'static str = "registry/repository";
    const CREATE: &'static str = "CreateRepository";
    const DELETE: &'static str = "DeleteRepository";

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

    async fn find(&self, want: &DesiredRepository) -> Result<Option<RepositoryState>, AwsError> {
        let Some(repository) = self.find_ours(want).await? else { return Ok(None) };
        let lifecycle_policy = self.0.get_lifecycle_policy(&want.name).await?;
        Ok(Some(RepositoryState { repository, lifecycle_policy }))
    }

    /// Creates the repository and puts its lifecycle policy. A create whose answer was lost and
    /// was sent again answers "already exists": the repository is adopted when it carries this
    /// environment's tag (and gets its policy), and refused with AWS's error otherwise.
    async fn create(&self, want: &DesiredRepository) -> Result<RepositoryState, AwsError> {
        let repository =
            match self.0.create_repository(&want.name, want.immutable_tags, want.scan_on_push, &want.tags).await {
                Ok(repo) => repo,
                Err(e) if e.is("RepositoryAlreadyExistsException") => match self.find_ours(want).await? {
                    Some(repo) => {
                        tracing::info!(repository = %want.name, "already exists and is ours: adopted");
                        repo
                    }
                    None => return Err(e),
                },
                Err(e) => return Err(e),
            };
        let text = want.lifecycle_policy.to_string();
        self.0.put_lifecycle_policy(&want.name, &text).await?;
        Ok(RepositoryState { repository, lifecycle_policy: Some(text) })
    }

    async fn update(&self, have: &RepositoryState, update: &RepositoryUpdate) -> Result<(), ActionError> {
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
        Ok(())
    }

    /// Deletes the repository with its images (a prune only gets here for an empty repository or
    /// with consent; destroy always).
    async fn delete(&self, have: &RepositoryState) -> Result<(), ActionError> {
        self.0.delete_repository(&have.repository.name, true).await.during("DeleteRepository")
    }

    async fn holds_data(&self, have: &RepositoryState) -> Result<bool, ActionError> {
        self.0.has_images(&have.repository.name).await.during("ListImages")
    }
}
