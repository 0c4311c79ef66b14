//! The load balancer resource kind: the environment's one application load balancer
//! (`tap-alb-{s}`, `internet-facing`, in the public subnets, behind the ALB security group), run by
//! the resource engine ([`tap_core::resource`]).
//!
//! - **diff**: subnets and security groups converge in place (the typed update: `SetSubnets`
//!   and/or `SetSecurityGroups`, only what differs); a load balancer of another scheme or type
//!   cannot be converged (a conflict).
//! - **find** (adoption after a create whose outcome is unknown, or `DuplicateLoadBalancerName`):
//!   `DescribeLoadBalancers` by name.
//! - **create**: sends the scheme always, the tags at creation.
//! - **update**: a load balancer not `active` yet is waited for first
//!   ([`LoadBalancerKind::wait_until_active`], which the step runs before the engine's update).

use async_trait::async_trait;
use tap_core::resource::{ActionError, Deleted, Diff, During, Owner, Resource};
use tap_core::wait::{poll_until, Backoff};
use tap_core::{AwsError, StepError};

use crate::api::{ElbApi, LoadBalancerSpec, ObservedLoadBalancer};
use crate::{desired_ids, sorted, LOAD_BALANCER_ID, LOAD_BALANCER_TYPE, SCHEME};

/// What apply changes on an existing load balancer: the ids to set, only for what differs.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LoadBalancerUpdate {
    /// `SetSubnets` with these ids.
    pub subnets: Option<Vec<String>>,
    /// `SetSecurityGroups` with these ids.
    pub security_groups: Option<Vec<String>>,
}

/// The load balancer kind over the ELBv2 seam.
pub struct LoadBalancerKind<'a> {
    api: &'a dyn ElbApi,
    /// How long to wait for the load balancer to become active.
    backoff: Backoff,
}

impl<'a> LoadBalancerKind<'a> {
    /// The kind over `api`; waits for `active` within `backoff`.
    pub fn new(api: &'a dyn ElbApi, backoff: Backoff) -> Self {
        LoadBalancerKind { api, backoff }
    }

    /// The load balancer called `name`, if any.
    pub async fn find_by_name(&self, name: &str) -> Result<Option<ObservedLoadBalancer>, StepError> {
        self.api.find_load_balancer(name).await.map_err(StepError::aws(LOAD_BALANCER_ID, "DescribeLoadBalancers"))
    }

    /// Waits until the load balancer `name` is `active` (it cannot be modified before); one in
    /// state `failed`, or gone, is a conflict.
    pub async fn wait_until_active(&self, name: &str) -> Result<(), StepError> {
        poll_until(&format!("load balancer {name} to become active"), self.backoff, || async {
            match self.find_by_name(name).await? {
                Some(lb) if lb.is_active() => Ok(Some(())),
                Some(lb) if lb.state.as_deref() == Some("failed") => Err(StepError::Conflict {
                    resource: LOAD_BALANCER_ID.into(),
                    message: format!(
                        "load balancer {name} is in state `failed`; delete it (tap destroy) and deploy again"
                    ),
                }),
                Some(_) => Ok(None),
                None => Err(StepError::Conflict {
                    resource: LOAD_BALANCER_ID.into(),
                    message: format!("load balancer {name} disappeared while waiting for it to become active"),
                }),
            }
        })
        .await
    }
}

#[async_trait]
impl Resource for LoadBalancerKind<'_> {
    type Desired = LoadBalancerSpec;
    type Observed = ObservedLoadBalancer;
    type Update = LoadBalancerUpdate;
    const CREATE: &'static str = "CreateLoadBalancer";

    fn diff(
        &self,
        want: &LoadBalancerSpec,
        have: &ObservedLoadBalancer,
    ) -> Result<Option<Diff<LoadBalancerUpdate>>, String> {
        if let Some(scheme) = have.scheme.as_deref().filter(|s| *s != SCHEME) {
            return Err(format!(
                "load balancer {} has scheme `{scheme}`, not `{SCHEME}`; the scheme cannot be changed in place: delete it (tap destroy) and deploy again",
                want.name
            ));
        }
        if let Some(kind) = have.lb_type.as_deref().filter(|t| *t != LOAD_BALANCER_TYPE) {
            return Err(format!(
                "load balancer {} is of type `{kind}`, not `{LOAD_BALANCER_TYPE}`; the name is taken: delete it and deploy again",
                want.name
            ));
        }
        let (want_subnets, want_sgs) = (desired_ids(&want.subnet_ids), desired_ids(&want.security_group_ids));
        let (have_subnets, have_sgs) = (sorted(&have.subnet_ids), sorted(&have.security_group_ids));
        let mut attrs = Vec::new();
        tap_core::step::diff(&mut attrs, "subnets", &have_subnets, &want_subnets);
        tap_core::step::diff(&mut attrs, "security_groups", &have_sgs, &want_sgs);
        let update = LoadBalancerUpdate {
            subnets: (have_subnets != want_subnets).then(|| want.subnet_ids.clone()),
            security_groups: (have_sgs != want_sgs).then(|| want.security_group_ids.clone()),
        };
        Ok((!attrs.is_empty()).then(|| Diff::new(update, attrs)))
    }

    /// The environment's by its name, `tap-alb-{s}`, which no other environment derives (the
    /// suffix is all that varies); its listeners and rules are the load balancer's.
    async fn owner(&self, _have: &ObservedLoadBalancer, _env: &str) -> Result<Owner, ActionError> {
        Ok(Owner::This)
    }

    async fn find(&self, want: &LoadBalancerSpec) -> Result<Option<ObservedLoadBalancer>, AwsError> {
        self.api.find_load_balancer(&want.name).await
    }

    async fn create(&self, want: &LoadBalancerSpec) -> Result<ObservedLoadBalancer, AwsError> {
        self.api.create_load_balancer(want).await
    }

    fn already_exists(&self, error: &AwsError) -> bool {
        error.is("DuplicateLoadBalancerName")
    }

    /// The create sends every setting, and a new load balancer is still provisioning: nothing to
    /// settle (as before the move to the engine).
    fn settle_after_create(&self) -> bool {
        false
    }

    async fn update(
        &self,
        have: &ObservedLoadBalancer,
        update: &LoadBalancerUpdate,
    ) -> Result<ObservedLoadBalancer, ActionError> {
        if let Some(subnets) = &update.subnets {
            self.api.set_subnets(&have.arn, subnets).await.during("SetSubnets")?;
        }
        if let Some(groups) = &update.security_groups {
            self.api.set_security_groups(&have.arn, groups).await.during("SetSecurityGroups")?;
        }
        Ok(have.clone())
    }

    async fn delete(&self, have: &ObservedLoadBalancer) -> Result<Deleted, ActionError> {
        self.api.delete_load_balancer(&have.arn).await.during("DeleteLoadBalancer")?;
        Ok(Deleted::Now)
    }
}
