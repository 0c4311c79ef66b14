//! The narrow seam over ECR: exactly the calls the registry step makes, with small domain types
//! instead of SDK types ([`SdkEcr`](crate::SdkEcr) is its one implementation).

use async_trait::async_trait;
use tap_core::naming::Tag;
use tap_core::AwsError;

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
