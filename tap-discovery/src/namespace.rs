//! The Cloud Map private DNS namespace kind: `tap-{s}.local` in the environment's VPC, run by the
//! resource engine ([`tap_core::resource`]).
//!
//! - **find**: `ListNamespaces` (private DNS namespaces, all pages) by name.
//! - **owner**: the environment's by its name, which no other environment derives (see
//!   [`NamespaceKind::owner`]).
//! - **create**: `CreatePrivateDnsNamespace` in the VPC with the tags and a `CreatorRequestId`
//!   (a resent create is the same operation on AWS), then the operation polled to `SUCCESS` and the
//!   namespace it names read back (`GetNamespace`). A namespace whose create answer was lost and
//!   was sent again answers `ConflictingDomainExists`: the engine looks it up and adopts it.
//! - **diff**: nothing to converge in place: the name is how it is found, and Cloud Map fixes the
//!   VPC at creation.
//! - **delete**: `DeleteNamespace`, then the operation polled to `SUCCESS`; a namespace already
//!   gone (`NamespaceNotFound`) is [`Deleted::AlreadyGone`], no change; one still holding a
//!   service (`ResourceInUse`) is held: the engine deletes again, backing off.

use std::convert::Infallible;

use async_trait::async_trait;
use tap_core::error::IfFound;
use tap_core::naming::Tag;
use tap_core::resource::{ActionError, Deleted, Diff, During, Owner, Resource};
use tap_core::wait::Backoff;
use tap_core::AwsError;

use crate::api::{CloudMapApi, NamespaceCreation, ObservedNamespace};
use crate::operation::wait_operation;
use crate::NAMESPACE_COMPONENT;

/// The namespace as the config wants it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredNamespace {
    /// `tap-{s}.local`.
    pub name: String,
    /// The VPC it resolves in.
    pub vpc_id: String,
    /// The idempotency token of the create.
    pub creator_request_id: String,
    /// Tags set at creation.
    pub tags: Vec<Tag>,
}

/// The namespace kind over the crate's AWS seam.
pub struct NamespaceKind<'a> {
    api: &'a dyn CloudMapApi,
    /// How long a Cloud Map operation may run.
    backoff: Backoff,
}

impl<'a> NamespaceKind<'a> {
    /// The kind over `api`; a Cloud Map operation may run for as long as `backoff` allows.
    pub fn new(api: &'a dyn CloudMapApi, backoff: Backoff) -> Self {
        NamespaceKind { api, backoff }
    }

    /// The private DNS namespaces named `name` (normally one; Cloud Map allows one per VPC).
    pub async fn find_by_name(&self, name: &str) -> Result<Vec<ObservedNamespace>, AwsError> {
        let all = self.api.list_private_dns_namespaces().await?;
        Ok(all.into_iter().filter(|n| n.name.trim_end_matches('.') == name).collect())
    }
}

#[async_trait]
impl Resource for NamespaceKind<'_> {
    type Desired = DesiredNamespace;
    type Observed = ObservedNamespace;
    /// A namespace has nothing tap converges in place: no update exists.
    type Update = Infallible;
    const CREATE: &'static str = "CreatePrivateDnsNamespace";

    fn diff(&self, _want: &DesiredNamespace, _have: &ObservedNamespace) -> Result<Option<Diff<Infallible>>, String> {
        Ok(None)
    }

    async fn find(&self, want: &DesiredNamespace) -> Result<Option<ObservedNamespace>, AwsError> {
        Ok(self.find_by_name(&want.name).await?.into_iter().next())
    }

    /// The environment's by its name `tap-{s}.local`: the suffix is the whole variable part, so no
    /// other environment derives it (the namespace carries tap's tags too, but reading them
    /// would cost a call and tell nothing more).
    async fn owner(&self, _have: &ObservedNamespace, _env: &str) -> Result<Owner, ActionError> {
        Ok(Owner::This)
    }

    async fn create(&self, want: &DesiredNamespace) -> Result<ObservedNamespace, AwsError> {
        let creation = self
            .api
            .create_private_dns_namespace(&want.name, &want.vpc_id, &want.creator_request_id, &want.tags)
            .await?;
        let id = match creation {
            NamespaceCreation::Exists(id) => id,
            NamespaceCreation::Operation(op_id) => {
                let op =
                    wait_operation(self.api, self.backoff, NAMESPACE_COMPONENT, "CreatePrivateDnsNamespace", &op_id)
                        .await
                        .map_err(|e| e.source)?;
                op.targets.get("NAMESPACE").cloned().ok_or_else(|| {
                    AwsError::new(
                        "InvalidResponse",
                        format!("Cloud Map operation {op_id} succeeded without naming the namespace it created"),
                    )
                })?
            }
        };
        let namespace = self.api.get_namespace(&id).await?;
        tracing::info!(namespace = %want.name, id = %id, "created");
        namespace.ok_or_else(|| {
            AwsError::new(
                "InvalidResponse",
                format!("namespace {id} was created but cannot be read back; run deploy again"),
            )
        })
    }

    /// A create whose answer was lost and that was sent again (an endpoint may not honour the
    /// `CreatorRequestId`) finds the namespace already there: look it up and adopt it.
    fn already_exists(&self, error: &AwsError) -> bool {
        error.is("ConflictingDomainExists")
    }

    async fn update(&self, _have: &ObservedNamespace, update: &Infallible) -> Result<ObservedNamespace, ActionError> {
        match *update {}
    }

    async fn delete(&self, have: &ObservedNamespace) -> Result<Deleted, ActionError> {
        let Some(op) = self.api.delete_namespace(&have.id).await.if_found().during("DeleteNamespace")? else {
            return Ok(Deleted::AlreadyGone);
        };
        wait_operation(self.api, self.backoff, NAMESPACE_COMPONENT, "DeleteNamespace", &op).await?;
        tracing::info!(namespace = %have.name, id = %have.id, "deleted");
        Ok(Deleted::Now)
    }

    /// Cloud Map refuses to delete a namespace that still holds a service (one whose deletion
    /// has not settled yet): the engine deletes again, backing off.
    fn held(&self, error: &AwsError) -> bool {
        error.is("ResourceInUse")
    }
}
