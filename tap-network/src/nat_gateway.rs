//! The NAT gateway resource kind (`network/nat/{n}`), run by the resource engine
//! ([`tap_core::resource`]).
//!
//! - **have**: only a `pending` or `available` NAT gateway is one (AWS keeps showing `deleted` and
//!   `failed` ones for a while; they are not found, and a failed one is replaced).
//! - **diff**: nothing of a NAT gateway is converged in place.
//! - **create**: `CreateNatGateway` in its zone's public subnet with its Elastic IP, tagged at
//!   creation, with a client token derived from the environment, the logical id, the subnet, the
//!   address and how many of its NAT gateways failed or were deleted (so a replacement is not
//!   answered with the failed one). The step then waits for it to be `available`
//!   ([`NatGatewayKind::wait_available`]); before the create it waits for an address still held by
//!   a NAT gateway being deleted ([`crate::elastic_ip::ElasticIpKind::wait_free`]).
//! - **delete**: `DeleteNatGateway` (not sent for one already `deleting`), then wait until it is
//!   `deleted`: its Elastic IP and subnet are held until then. One found `deleted` (or `failed`)
//!   is [`Deleted::AlreadyGone`]; so is one already `deleting`, whose deletion another run started.
//! - **owner**: from the NAT gateway's tags.

use async_trait::async_trait;
use tap_core::naming::Tag;
use tap_core::progress::ProgressEvent;
use tap_core::resource::{ActionError, Deleted, Diff, During, Owner, Resource};
use tap_core::wait::{poll_until, Backoff};
use tap_core::{AwsError, Context, StepError};

use crate::api::{Ec2Api, NatState, ObservedNat, Tagged};

/// A NAT gateway the config asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatGatewayWant {
    /// Logical id.
    pub component: String,
    /// The public subnet it lives in.
    pub subnet_id: String,
    /// Its Elastic IP.
    pub allocation_id: String,
    /// `ClientToken` of its create.
    pub client_token: String,
    /// Tags to create it with.
    pub tags: Vec<Tag>,
}

/// The NAT gateway kind over the EC2 seam.
pub struct NatGatewayKind<'a> {
    ctx: &'a Context,
    api: &'a dyn Ec2Api,
    env: &'a str,
    /// How long a NAT gateway's creation or deletion is waited for.
    backoff: Backoff,
}

impl<'a> NatGatewayKind<'a> {
    /// The kind over `api` for `ctx`'s environment (its waits reported to `ctx`); creations and
    /// deletions are waited for within `backoff`.
    pub fn new(ctx: &'a Context, api: &'a dyn Ec2Api, backoff: Backoff) -> Self {
        NatGatewayKind { ctx, api, env: ctx.names.env(), backoff }
    }

    fn waiting(&self, what: &str) {
        self.ctx.progress(ProgressEvent::Waiting { step: crate::STEP, what });
    }

    /// Waits until the NAT gateway `nat_id` is `available`; one that fails is a conflict naming
    /// AWS's reason.
    pub async fn wait_available(&self, component: &str, nat_id: &str) -> Result<(), StepError> {
        let what = format!("NAT gateway {nat_id} ({component}) to become available");
        self.waiting(&what);
        poll_until(&what, self.backoff, || async {
            let nat = self.api.nat_gateway(nat_id).await.map_err(StepError::aws(component, "DescribeNatGateways"))?;
            match nat.map(|n| (n.state, n.failure)) {
                Some((NatState::Available, _)) => Ok(Some(())),
                // Not yet visible (eventual consistency) or still being created.
                None | Some((NatState::Pending, _)) => Ok(None),
                Some((state, failure)) => Err(StepError::Conflict {
                    resource: component.into(),
                    message: format!(
                        "NAT gateway {nat_id} went to state {state:?}{}; run deploy again to replace it",
                        failure.map(|f| format!(" ({f})")).unwrap_or_default()
                    ),
                }),
            }
        })
        .await
    }

    /// Waits until `have` is `deleted` (or gone, or `failed`).
    async fn wait_deleted(&self, have: &ObservedNat) -> Result<(), ActionError> {
        let nat_id = have.id.as_str();
        let what = format!("NAT gateway {nat_id} ({}) to be deleted", have.component().unwrap_or("network/nat"));
        self.waiting(&what);
        poll_until(&what, self.backoff, || async {
            let now =
                self.api.nat_gateway(nat_id).await.map_err(|e| StepError::aws(nat_id, "DescribeNatGateways")(e))?;
            Ok(now.is_none_or(|n| matches!(n.state, NatState::Deleted | NatState::Failed)).then_some(()))
        })
        .await
        .map_err(|e| match e {
            StepError::Aws { source, action, .. } => ActionError { action, source },
            other => ActionError { action: "DescribeNatGateways", source: AwsError::local(other.to_string()) },
        })
    }
}

#[async_trait]
impl Resource for NatGatewayKind<'_> {
    type Desired = NatGatewayWant;
    type Observed = ObservedNat;
    /// Nothing of a NAT gateway is updated in place.
    type Update = ();
    const CREATE: &'static str = "CreateNatGateway";

    fn diff(&self, _want: &NatGatewayWant, _have: &ObservedNat) -> Result<Option<Diff<()>>, String> {
        Ok(None)
    }

    async fn find(&self, want: &NatGatewayWant) -> Result<Option<ObservedNat>, AwsError> {
        let found = self.api.find_nat_gateways(self.env).await?;
        Ok(found.into_iter().find(|n| n.component() == Some(want.component.as_str()) && n.state.is_usable()))
    }

    async fn owner(&self, have: &ObservedNat, env: &str) -> Result<Owner, ActionError> {
        Ok(have.owner(env))
    }

    async fn create(&self, want: &NatGatewayWant) -> Result<ObservedNat, AwsError> {
        let id =
            self.api.create_nat_gateway(&want.subnet_id, &want.allocation_id, &want.client_token, &want.tags).await?;
        Ok(ObservedNat {
            id,
            subnet_id: want.subnet_id.clone(),
            state: NatState::Pending,
            failure: None,
            tags: want.tags.clone(),
        })
    }

    async fn update(&self, have: &ObservedNat, _update: &()) -> Result<ObservedNat, ActionError> {
        Ok(have.clone())
    }

    async fn delete(&self, have: &ObservedNat) -> Result<Deleted, ActionError> {
        let outcome = match have.state {
            NatState::Deleted | NatState::Failed => return Ok(Deleted::AlreadyGone),
            // Another run started its deletion: only its end is waited for.
            NatState::Deleting => Deleted::AlreadyGone,
            _ => {
                self.api.delete_nat_gateway(&have.id).await.during("DeleteNatGateway")?;
                Deleted::Now
            }
        };
        self.wait_deleted(have).await?;
        Ok(outcome)
    }
}
