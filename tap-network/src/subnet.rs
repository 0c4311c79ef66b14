//! The subnet resource kind (`network/subnet/{public,private}-{n}`), run by the resource engine
//! ([`tap_core::resource`]).
//!
//! - **diff**: a subnet cannot change its CIDR or zone in place (a conflict); nothing else of it
//!   is converged.
//! - **create**: `CreateSubnet`, tagged at creation; `InvalidSubnet.Conflict` (the CIDR is taken,
//!   e.g. by a create whose answer was lost) makes the engine look it up and adopt it.
//! - **find**: the environment's subnets in the VPC, by their `tap:component` tag.
//! - **delete**: `DeleteSubnet`; held while network interfaces (a NAT gateway's, a load
//!   balancer's, a service's tasks') are still in it (`DependencyViolation`).
//! - **owner**: from the subnet's tags.

use async_trait::async_trait;
use tap_core::naming::Tag;
use tap_core::resource::{ActionError, Deleted, Diff, During, Owner, Resource};
use tap_core::AwsError;

use crate::api::{Ec2Api, ObservedSubnet, Tagged};

/// A subnet the config asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubnetWant {
    /// Logical id.
    pub component: String,
    /// The environment.
    pub env: String,
    /// The VPC it goes in.
    pub vpc_id: String,
    /// CIDR block.
    pub cidr: String,
    /// Availability zone.
    pub az: String,
    /// Tags to create it with.
    pub tags: Vec<Tag>,
}

/// The subnet kind over the EC2 seam.
pub struct SubnetKind<'a> {
    api: &'a dyn Ec2Api,
}

impl<'a> SubnetKind<'a> {
    /// The kind over `api`.
    pub fn new(api: &'a dyn Ec2Api) -> Self {
        SubnetKind { api }
    }
}

#[async_trait]
impl Resource for SubnetKind<'_> {
    type Desired = SubnetWant;
    type Observed = ObservedSubnet;
    /// Nothing of a subnet is updated in place.
    type Update = ();
    const CREATE: &'static str = "CreateSubnet";

    fn diff(&self, want: &SubnetWant, have: &ObservedSubnet) -> Result<Option<Diff<()>>, String> {
        if have.cidr != want.cidr || have.az != want.az {
            return Err(format!(
                "subnet {} is {} in {} but the config wants {} in {}; a subnet cannot move in place: restore the setting or destroy the environment first",
                have.id, have.cidr, have.az, want.cidr, want.az
            ));
        }
        Ok(None)
    }

    async fn find(&self, want: &SubnetWant) -> Result<Option<ObservedSubnet>, AwsError> {
        let found = self.api.find_subnets(&want.env, Some(&want.vpc_id)).await?;
        Ok(found.into_iter().find(|s| s.component() == Some(want.component.as_str())))
    }

    async fn owner(&self, have: &ObservedSubnet, env: &str) -> Result<Owner, ActionError> {
        Ok(have.owner(env))
    }

    async fn create(&self, want: &SubnetWant) -> Result<ObservedSubnet, AwsError> {
        let id = self.api.create_subnet(&want.vpc_id, &want.cidr, &want.az, &want.tags).await?;
        Ok(ObservedSubnet {
            id,
            vpc_id: want.vpc_id.clone(),
            cidr: want.cidr.clone(),
            az: want.az.clone(),
            tags: want.tags.clone(),
        })
    }

    fn already_exists(&self, error: &AwsError) -> bool {
        error.is("InvalidSubnet.Conflict")
    }

    async fn update(&self, have: &ObservedSubnet, _update: &()) -> Result<ObservedSubnet, ActionError> {
        Ok(have.clone())
    }

    async fn delete(&self, have: &ObservedSubnet) -> Result<Deleted, ActionError> {
        self.api.delete_subnet(&have.id).await.during("DeleteSubnet")?;
        Ok(Deleted::Now)
    }

    fn held(&self, error: &AwsError) -> bool {
        error.is("DependencyViolation")
    }
}
