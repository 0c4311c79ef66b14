//! The VPC resource kind (`network/vpc`), run by the resource engine ([`tap_core::resource`]).
//!
//! - **diff**: the CIDR cannot change in place (a conflict); DNS support and DNS hostnames must be
//!   on (Cloud Map private DNS needs both). The step reads both attributes of an existing VPC
//!   (`DescribeVpcAttribute`, one per attribute) before comparing; unread counts as off.
//! - **create**: `CreateVpc`, tagged at creation. A new VPC has DNS support on and DNS hostnames
//!   off (on AWS and moto), and EC2 sets attributes only by `ModifyVpcAttribute` after the create:
//!   the engine settles that in the same run, and [`Resource::create_attributes`] lists both on the
//!   create's change, in plan and apply alike.
//! - **update**: `ModifyVpcAttribute`, one attribute per call, support before hostnames (EC2
//!   refuses hostnames without support).
//! - **find** (adoption after a create whose answer was lost): the environment's VPCs by tags.
//! - **delete**: `DeleteVpc`; held while something still uses the VPC (`DependencyViolation`:
//!   security groups, network interfaces being released), which the engine retries with backoff.
//! - **owner**: from the VPC's tags.

use async_trait::async_trait;
use tap_core::naming::Tag;
use tap_core::resource::{ActionError, Deleted, Diff, During, Owner, Resource};
use tap_core::{AttrChange, AwsError};

use crate::api::{Ec2Api, ObservedVpc, Tagged, VpcAttribute};
use crate::desired::VPC;

/// The VPC the config asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VpcWant {
    /// Name tag.
    pub name: String,
    /// Primary IPv4 CIDR block.
    pub cidr: String,
    /// Tags to create it with.
    pub tags: Vec<Tag>,
    /// The environment (its resources are found by its tags).
    pub env: String,
}

/// A VPC as AWS has it, with its DNS attributes when read (`None`: not read).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VpcState {
    /// The VPC.
    pub vpc: ObservedVpc,
    /// `enableDnsSupport`.
    pub dns_support: Option<bool>,
    /// `enableDnsHostnames`.
    pub dns_hostnames: Option<bool>,
}

impl VpcState {
    fn get(&self, attribute: VpcAttribute) -> Option<bool> {
        match attribute {
            VpcAttribute::DnsSupport => self.dns_support,
            VpcAttribute::DnsHostnames => self.dns_hostnames,
        }
    }
}

/// The DNS attributes to turn on, in the order EC2 needs them (support first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VpcUpdate(pub Vec<VpcAttribute>);

/// The VPC kind over the EC2 seam.
pub struct VpcKind<'a> {
    api: &'a dyn Ec2Api,
}

impl<'a> VpcKind<'a> {
    /// The kind over `api`.
    pub fn new(api: &'a dyn Ec2Api) -> Self {
        VpcKind { api }
    }

    /// `vpc` with both DNS attributes read (two `DescribeVpcAttribute`, at once).
    pub async fn read(&self, vpc: ObservedVpc) -> Result<VpcState, AwsError> {
        let (support, hostnames) = tokio::try_join!(
            self.api.vpc_attribute(&vpc.id, VpcAttribute::DnsSupport),
            self.api.vpc_attribute(&vpc.id, VpcAttribute::DnsHostnames),
        )?;
        Ok(VpcState { vpc, dns_support: Some(support), dns_hostnames: Some(hostnames) })
    }
}

/// A VPC just created, with EC2's defaults (on AWS and moto): DNS support on, DNS hostnames off;
/// the engine turns hostnames on right after.
fn new_vpc(vpc: ObservedVpc) -> VpcState {
    VpcState { vpc, dns_support: Some(true), dns_hostnames: Some(false) }
}

/// The attribute changes turning on `attributes` of `have` (`None`: a VPC to create).
fn dns_changes(have: Option<&VpcState>) -> (Vec<VpcAttribute>, Vec<AttrChange>) {
    VpcAttribute::ALL
        .into_iter()
        .filter_map(|attribute| {
            let now = have.and_then(|h| h.get(attribute));
            (now != Some(true)).then(|| {
                (attribute, AttrChange::new(attribute.label(), now.map(|b| b.to_string()), Some("true".into())))
            })
        })
        .unzip()
}

#[async_trait]
impl Resource for VpcKind<'_> {
    type Desired = VpcWant;
    type Observed = VpcState;
    type Update = VpcUpdate;
    const CREATE: &'static str = "CreateVpc";

    fn diff(&self, want: &VpcWant, have: &VpcState) -> Result<Option<Diff<VpcUpdate>>, String> {
        if have.vpc.cidr != want.cidr {
            return Err(format!(
                "VPC {} has CIDR {} but network.vpc_cidr is {}; a VPC's CIDR cannot change in place: restore the setting or destroy the environment first",
                have.vpc.id, have.vpc.cidr, want.cidr
            ));
        }
        let (attributes, changes) = dns_changes(Some(have));
        Ok((!attributes.is_empty()).then(|| Diff::new(VpcUpdate(attributes), changes)))
    }

    fn create_attributes(&self, _want: &VpcWant) -> Vec<AttrChange> {
        dns_changes(None).1
    }

    /// Used only to adopt a VPC whose `CreateVpc` answer was lost (the step's lookup found none
    /// before): it is new, so it has EC2's defaults, and its attributes are not read.
    async fn find(&self, want: &VpcWant) -> Result<Option<VpcState>, AwsError> {
        let found = self.api.find_vpcs(&want.env).await?;
        Ok(found.into_iter().find(|v| v.component() == Some(VPC)).map(new_vpc))
    }

    async fn owner(&self, have: &VpcState, env: &str) -> Result<Owner, ActionError> {
        Ok(have.vpc.owner(env))
    }

    async fn create(&self, want: &VpcWant) -> Result<VpcState, AwsError> {
        let id = self.api.create_vpc(&want.cidr, &want.tags).await?;
        Ok(new_vpc(ObservedVpc { id, cidr: want.cidr.clone(), tags: want.tags.clone() }))
    }

    async fn update(&self, have: &VpcState, update: &VpcUpdate) -> Result<VpcState, ActionError> {
        let mut now = have.clone();
        for &attribute in &update.0 {
            self.api.set_vpc_attribute(&have.vpc.id, attribute, true).await.during("ModifyVpcAttribute")?;
            match attribute {
                VpcAttribute::DnsSupport => now.dns_support = Some(true),
                VpcAttribute::DnsHostnames => now.dns_hostnames = Some(true),
            }
        }
        Ok(now)
    }

    async fn delete(&self, have: &VpcState) -> Result<Deleted, ActionError> {
        self.api.delete_vpc(&have.vpc.id).await.during("DeleteVpc")?;
        Ok(Deleted::Now)
    }

    fn held(&self, error: &AwsError) -> bool {
        error.is("DependencyViolation")
    }
}
