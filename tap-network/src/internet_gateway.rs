//! The internet gateway resource kind (`network/igw`), run by the resource engine
//! ([`tap_core::resource`]).
//!
//! - **diff**: attached to the environment's VPC; detached is an update (`AttachInternetGateway`),
//!   attached to another VPC a conflict.
//! - **create**: `CreateInternetGateway`, tagged at creation; EC2 attaches only by a call after
//!   the create, which the engine settles in the same run ([`Resource::create_attributes`] lists
//!   the attachment on the create's change, in plan and apply alike).
//! - **update**: `AttachInternetGateway`; an attach whose answer was lost (answered
//!   `Resource.AlreadyAssociated` when retried, or with no answer) is checked by reading the
//!   gateway again.
//! - **delete**: detach from every VPC (a gateway already detached is fine), then
//!   `DeleteInternetGateway`; held while a NAT gateway or load balancer still maps public
//!   addresses in the VPC (`DependencyViolation`).
//! - **owner**: from the gateway's tags.

use async_trait::async_trait;
use tap_core::idempotent::{create_or_adopt, Recovery};
use tap_core::naming::Tag;
use tap_core::resource::{ActionError, Deleted, Diff, During, Owner, Resource};
use tap_core::{AttrChange, AwsError};

use crate::api::{Ec2Api, ObservedInternetGateway, Tagged};
use crate::desired::INTERNET_GATEWAY;

/// The internet gateway the config asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InternetGatewayWant {
    /// The VPC it is attached to.
    pub vpc_id: String,
    /// Tags to create it with.
    pub tags: Vec<Tag>,
}

/// Attach the gateway to this VPC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attach(pub String);

/// The internet gateway kind over the EC2 seam.
pub struct InternetGatewayKind<'a> {
    api: &'a dyn Ec2Api,
    env: &'a str,
    recovery: Recovery,
}

impl<'a> InternetGatewayKind<'a> {
    /// The kind over `api` for environment `env`; an attach with an unknown outcome is looked
    /// for within `recovery`.
    pub fn new(api: &'a dyn Ec2Api, env: &'a str, recovery: Recovery) -> Self {
        InternetGatewayKind { api, env, recovery }
    }
}

fn attachment(vpc_id: &str) -> AttrChange {
    AttrChange::new("attached_vpc", None, Some(vpc_id.to_owned()))
}

#[async_trait]
impl Resource for InternetGatewayKind<'_> {
    type Desired = InternetGatewayWant;
    type Observed = ObservedInternetGateway;
    type Update = Attach;
    const CREATE: &'static str = "CreateInternetGateway";

    fn diff(&self, want: &InternetGatewayWant, have: &ObservedInternetGateway) -> Result<Option<Diff<Attach>>, String> {
        if have.attached_vpcs.contains(&want.vpc_id) {
            return Ok(None);
        }
        if let Some(other) = have.attached_vpcs.first() {
            return Err(format!(
                "internet gateway {} is attached to {other}, not to the environment's VPC {}; detach it first",
                have.id, want.vpc_id
            ));
        }
        Ok(Some(Diff::new(Attach(want.vpc_id.clone()), vec![attachment(&want.vpc_id)])))
    }

    fn create_attributes(&self, want: &InternetGatewayWant) -> Vec<AttrChange> {
        vec![attachment(&want.vpc_id)]
    }

    async fn find(&self, _want: &InternetGatewayWant) -> Result<Option<ObservedInternetGateway>, AwsError> {
        let found = self.api.find_internet_gateways(self.env).await?;
        Ok(found.into_iter().find(|g| g.component() == Some(INTERNET_GATEWAY)))
    }

    async fn owner(&self, have: &ObservedInternetGateway, env: &str) -> Result<Owner, ActionError> {
        Ok(have.owner(env))
    }

    async fn create(&self, want: &InternetGatewayWant) -> Result<ObservedInternetGateway, AwsError> {
        let id = self.api.create_internet_gateway(&want.tags).await?;
        Ok(ObservedInternetGateway { id, attached_vpcs: vec![], tags: want.tags.clone() })
    }

    async fn update(
        &self,
        have: &ObservedInternetGateway,
        Attach(vpc_id): &Attach,
    ) -> Result<ObservedInternetGateway, ActionError> {
        let attached_here = || async {
            let now = self.api.find_internet_gateways(self.env).await?;
            Ok(now.iter().any(|g| g.id == have.id && g.attached_vpcs.iter().any(|v| v == vpc_id)).then_some(()))
        };
        create_or_adopt(
            INTERNET_GATEWAY,
            self.recovery,
            |e| e.is("Resource.AlreadyAssociated"),
            attached_here,
            || self.api.attach_internet_gateway(&have.id, vpc_id),
        )
        .await
        .during("AttachInternetGateway")?;
        let mut now = have.clone();
        now.attached_vpcs.push(vpc_id.clone());
        Ok(now)
    }

    async fn delete(&self, have: &ObservedInternetGateway) -> Result<Deleted, ActionError> {
        for vpc_id in &have.attached_vpcs {
            match self.api.detach_internet_gateway(&have.id, vpc_id).await {
                // Detached by an earlier attempt of this delete (one held after its detach).
                Err(e) if e.is("Gateway.NotAttached") => {}
                other => other.during("DetachInternetGateway")?,
            }
        }
        self.api.delete_internet_gateway(&have.id).await.during("DeleteInternetGateway")?;
        Ok(Deleted::Now)
    }

    fn held(&self, error: &AwsError) -> bool {
        error.is("DependencyViolation")
    }
}
