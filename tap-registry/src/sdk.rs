//! [`EcrApi`] over the real SDK client.

use async_trait::async_trait;
use aws_sdk_ecr::types::{ImageScanningConfiguration, ImageTagMutability};
use tap_core::idempotent::NoBlindRetry;
use tap_core::naming::Tag;
use tap_core::AwsError;

use crate::api::{EcrApi, ObservedRepository};

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
        let repos: Vec<_> = self.0.describe_repositories().into_paginator().items().send().try_collect().await?;
        Ok(repos.iter().map(observed).collect())
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
