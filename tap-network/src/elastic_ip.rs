//! The Elastic IP resource kind (`network/eip/{n}`, one per NAT gateway), run by the resource
//! engine ([`tap_core::resource`]).
//!
//! - **diff**: nothing of an address is converged in place.
//! - **create**: `AllocateAddress` (domain `vpc`), tagged at creation. EC2 offers no client token
//!   for it: a create whose answer was lost is looked up by its `tap:component` tag and adopted.
//! - **delete**: `ReleaseAddress`; held while a NAT gateway being deleted still uses it
//!   (`InvalidIPAddress.InUse`; AWS frees it once the NAT gateway is `deleted`).
//! - **owner**: from the address's tags.
//!
//! [`ElasticIpKind::wait_free`]: an address of the environment still associated when its NAT
//! gateway is to be created (the previous NAT gateway is still being deleted, e.g. by an
//! interrupted destroy) is waited for, bounded, before `CreateNatGateway`, which would otherwise
//! fail with `Resource.AlreadyAssociated`.

use async_trait::async_trait;
use tap_core::naming::Tag;
use tap_core::progress::ProgressEvent;
use tap_core::resource::{ActionError, Deleted, Diff, During, Owner, Resource};
use tap_core::wait::{poll_until, Backoff};
use tap_core::{AwsError, Context, StepError};

use crate::api::{Ec2Api, ObservedAddress, Tagged};
use crate::STEP;

/// An Elastic IP the config asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElasticIpWant {
    /// Logical id.
    pub component: String,
    /// Tags to allocate it with.
    pub tags: Vec<Tag>,
}

/// The Elastic IP kind over the EC2 seam.
pub struct ElasticIpKind<'a> {
    api: &'a dyn Ec2Api,
    env: &'a str,
}

impl<'a> ElasticIpKind<'a> {
    /// The kind over `api` for environment `env`.
    pub fn new(api: &'a dyn Ec2Api, env: &'a str) -> Self {
        ElasticIpKind { api, env }
    }

    /// Waits, within `backoff`, until the address `allocation_id` (logical id `component`) is no
    /// longer associated, saying why (progress and log) before `next`: AWS disassociates a NAT
    /// gateway's address only once the NAT gateway is `deleted`. An address gone meanwhile counts
    /// as free (its create comes next).
    pub async fn wait_free(
        &self,
        ctx: &Context,
        component: &str,
        allocation_id: &str,
        next: &str,
        backoff: Backoff,
    ) -> Result<(), StepError> {
        let what = format!(
            "Elastic IP {allocation_id} ({component}) to be freed before {next}: it is still associated, with a NAT \
             gateway being deleted (e.g. by an interrupted destroy), and AWS frees it once that NAT gateway is deleted"
        );
        ctx.progress(ProgressEvent::Waiting { step: STEP, what: &what });
        tracing::info!(resource = component, allocation_id, "waiting for the Elastic IP to be freed");
        poll_until(&what, backoff, || async {
            let found =
                self.api.find_addresses(self.env).await.map_err(StepError::aws(component, "DescribeAddresses"))?;
            let held = found.iter().any(|a| a.allocation_id == allocation_id && a.association_id.is_some());
            Ok((!held).then_some(()))
        })
        .await
    }
}

#[async_trait]
impl Resource for ElasticIpKind<'_> {
    type Desired = ElasticIpWant;
    type Observed = ObservedAddress;
    /// Nothing of an address is updated in place.
    type Update = ();
    const CREATE: &'static str = "AllocateAddress";

    fn diff(&self, _want: &ElasticIpWant, _have: &ObservedAddress) -> Result<Option<Diff<()>>, String> {
        Ok(None)
    }

    async fn find(&self, want: &ElasticIpWant) -> Result<Option<ObservedAddress>, AwsError> {
        let found = self.api.find_addresses(self.env).await?;
        Ok(found.into_iter().find(|a| a.component() == Some(want.component.as_str())))
    }

    async fn owner(&self, have: &ObservedAddress, env: &str) -> Result<Owner, ActionError> {
        Ok(have.owner(env))
    }

    async fn create(&self, want: &ElasticIpWant) -> Result<ObservedAddress, AwsError> {
        let allocation_id = self.api.allocate_address(&want.tags).await?;
        Ok(ObservedAddress { allocation_id, association_id: None, tags: want.tags.clone() })
    }

    async fn update(&self, have: &ObservedAddress, _update: &()) -> Result<ObservedAddress, ActionError> {
        Ok(have.clone())
    }

    async fn delete(&self, have: &ObservedAddress) -> Result<Deleted, ActionError> {
        self.api.release_address(&have.allocation_id).await.during("ReleaseAddress")?;
        Ok(Deleted::Now)
    }

    fn held(&self, error: &AwsError) -> bool {
        error.is("InvalidIPAddress.InUse")
    }
}
