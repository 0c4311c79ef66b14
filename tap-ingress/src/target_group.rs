//! The target group resource kind: one per routed service (`tap-{short}-{s}`, target type `ip`,
//! HTTP on the service's port, in the environment's VPC), run by the resource engine
//! ([`tap_core::resource`]).
//!
//! - **diff**: the health check converges in place (one `ModifyTargetGroup` with every setting) and
//!   so does the deregistration delay (the attribute `deregistration_delay.timeout_seconds`, read
//!   by the step with one `DescribeTargetGroupAttributes` per group, set with one
//!   `ModifyTargetGroupAttributes`); the typed update ([`TargetGroupUpdate`]) makes only the calls
//!   for what differs. Port, protocol, target type and VPC cannot change in place (a conflict).
//! - **create**: `CreateTargetGroup`, then `ModifyTargetGroupAttributes` for the deregistration
//!   delay (a failure there leaves the delay unknown, and the engine settles it in the same run).
//! - **find** (adoption after a create whose outcome is unknown, or `DuplicateTargetGroupName`):
//!   `DescribeTargetGroups` by name.
//! - **delete**: retried while AWS answers `ResourceInUse` (a listener rule or a draining service
//!   still uses it).
//! - **owned**: the groups of the region whose name looks like the environment's (`tap-*-{s}`) and
//!   that the config does not declare are checked with one `DescribeTags`; those whose tags say the
//!   environment owns them ([`tap_core::resource::owned`]) are what a prune deletes.

use std::collections::BTreeSet;

use async_trait::async_trait;
use tap_core::outputs::is_known;
use tap_core::resource::{owned, ActionError, Deleted, Diff, During, Owned, Owner, Resource};
use tap_core::step::diff;
use tap_core::{AttrChange, AwsError, Context, StepError};

use crate::api::{ElbApi, HealthCheck, ObservedTargetGroup, TargetGroupSpec};

/// Logical id prefix of target groups.
pub const ID_PREFIX: &str = "ingress/target-group/";

/// What an update of a target group sets, each part only when it differs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetGroupUpdate {
    /// The health check (`ModifyTargetGroup` sends every setting).
    pub health_check: Option<HealthCheck>,
    /// The deregistration delay, in seconds (`ModifyTargetGroupAttributes`).
    pub deregistration_delay: Option<i32>,
}

/// The target group kind over the ELBv2 seam.
pub struct TargetGroupKind<'a> {
    api: &'a dyn ElbApi,
}

impl<'a> TargetGroupKind<'a> {
    /// The kind over `api`.
    pub fn new(api: &'a dyn ElbApi) -> Self {
        TargetGroupKind { api }
    }

    /// The groups the environment owns among `all` (the region's groups) that are not named in
    /// `declared`: candidates by name (`tap-*-{env}`), then ownership by their tags (one
    /// `DescribeTags` for all candidates, none when there is no candidate).
    pub async fn owned_undeclared(
        &self,
        ctx: &Context,
        all: &[ObservedTargetGroup],
        declared: &BTreeSet<String>,
    ) -> Result<Vec<Owned<ObservedTargetGroup>>, StepError> {
        let env = ctx.names.env();
        let suffix = format!("-{env}");
        let candidates: Vec<&ObservedTargetGroup> = all
            .iter()
            .filter(|tg| tg.name.starts_with("tap-") && tg.name.ends_with(&suffix) && !declared.contains(&tg.name))
            .collect();
        if candidates.is_empty() {
            return Ok(vec![]);
        }
        let arns: Vec<String> = candidates.iter().map(|tg| tg.arn.clone()).collect();
        let tags =
            self.api.describe_tags(&arns).await.map_err(StepError::aws("ingress/target-groups", "DescribeTags"))?;
        Ok(candidates
            .into_iter()
            .filter_map(|tg| {
                let tags = tags.get(&tg.arn)?;
                let id = owned(tags, env, String::new).filter(|id| id.starts_with(ID_PREFIX))?;
                let observed = ObservedTargetGroup { tags: Some(tags.clone()), ..tg.clone() };
                Some(Owned { id, name: tg.name.clone(), observed })
            })
            .collect())
    }
}

#[async_trait]
impl Resource for TargetGroupKind<'_> {
    type Desired = TargetGroupSpec;
    type Observed = ObservedTargetGroup;
    /// The health check and/or the deregistration delay to set.
    type Update = TargetGroupUpdate;
    const CREATE: &'static str = "CreateTargetGroup";

    fn diff(
        &self,
        want: &TargetGroupSpec,
        have: &ObservedTargetGroup,
    ) -> Result<Option<Diff<TargetGroupUpdate>>, String> {
        let mut fixed = Vec::new();
        if have.port != Some(want.port) {
            fixed.push(format!("port {:?} (wants {})", have.port, want.port));
        }
        if have.protocol.as_deref() != Some("HTTP") {
            fixed.push(format!("protocol {:?} (wants HTTP)", have.protocol));
        }
        if have.target_type.as_deref() != Some("ip") {
            fixed.push(format!("target type {:?} (wants ip)", have.target_type));
        }
        if is_known(&want.vpc_id) && have.vpc_id.as_deref().is_some_and(|v| v != want.vpc_id) {
            fixed.push(format!("VPC {:?} (wants {})", have.vpc_id, want.vpc_id));
        }
        if !fixed.is_empty() {
            return Err(format!(
                "target group {} has {}; these cannot be changed in place: delete it (tap destroy) and deploy again",
                want.name,
                fixed.join(", ")
            ));
        }
        let mut attrs = Vec::new();
        {
            let (have, want) = (&have.health_check, &want.health_check);
            diff(&mut attrs, "health_check_path", &have.path, &want.path);
            diff(&mut attrs, "healthy_threshold", &have.healthy_threshold, &want.healthy_threshold);
            diff(&mut attrs, "unhealthy_threshold", &have.unhealthy_threshold, &want.unhealthy_threshold);
            diff(&mut attrs, "health_check_interval", &have.interval_seconds, &want.interval_seconds);
            diff(&mut attrs, "matcher", &have.matcher, &want.matcher);
        }
        let health_check = (!attrs.is_empty()).then(|| want.health_check.clone());
        // Unknown (never read, or a create whose attribute call failed) counts as different.
        let deregistration_delay = (have.deregistration_delay != Some(want.deregistration_delay)).then(|| {
            attrs.push(AttrChange::new(
                "deregistration_delay",
                have.deregistration_delay.map(|d| d.to_string()),
                Some(want.deregistration_delay.to_string()),
            ));
            want.deregistration_delay
        });
        Ok((!attrs.is_empty()).then(|| Diff::new(TargetGroupUpdate { health_check, deregistration_delay }, attrs)))
    }

    async fn find(&self, want: &TargetGroupSpec) -> Result<Option<ObservedTargetGroup>, AwsError> {
        match self.api.describe_target_groups(std::slice::from_ref(&want.name)).await {
            Ok(groups) => Ok(groups.into_iter().find(|tg| tg.name == want.name)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// From its tags (`DescribeTags`, unless already read): target group names are per account
    /// and region, and `tap-api-x-dev` is both `dev`'s route `api-x` and `x-dev`'s route `api`.
    async fn owner(&self, have: &ObservedTargetGroup, env: &str) -> Result<Owner, ActionError> {
        if let Some(tags) = &have.tags {
            return Ok(Owner::of(tags, env));
        }
        let mut tags = self.api.describe_tags(std::slice::from_ref(&have.arn)).await.during("DescribeTags")?;
        Ok(Owner::of(&tags.remove(&have.arn).unwrap_or_default(), env))
    }

    async fn create(&self, want: &TargetGroupSpec) -> Result<ObservedTargetGroup, AwsError> {
        let mut created = self.api.create_target_group(want).await?;
        created.tags = Some(want.tags.clone());
        // CreateTargetGroup takes no attributes: the delay is set right after, as part of the
        // create. Should that call fail, the delay stays unknown and the engine's settle after
        // create sets it (and reports a lasting failure).
        match self.api.set_deregistration_delay(&created.arn, want.deregistration_delay).await {
            Ok(()) => created.deregistration_delay = Some(want.deregistration_delay),
            Err(e) => tracing::warn!(name = %want.name, error = %e, "deregistration delay not set on create"),
        }
        Ok(created)
    }

    fn already_exists(&self, error: &AwsError) -> bool {
        error.is("DuplicateTargetGroupName")
    }

    async fn update(
        &self,
        have: &ObservedTargetGroup,
        update: &TargetGroupUpdate,
    ) -> Result<ObservedTargetGroup, ActionError> {
        let health_check = async {
            match &update.health_check {
                Some(hc) => self.api.modify_target_group(&have.arn, hc).await.during("ModifyTargetGroup"),
                None => Ok(()),
            }
        };
        let deregistration_delay = async {
            match update.deregistration_delay {
                Some(seconds) => {
                    self.api.set_deregistration_delay(&have.arn, seconds).await.during("ModifyTargetGroupAttributes")
                }
                None => Ok(()),
            }
        };
        tokio::try_join!(health_check, deregistration_delay)?;
        Ok(have.clone())
    }

    async fn delete(&self, have: &ObservedTargetGroup) -> Result<Deleted, ActionError> {
        self.api.delete_target_group(&have.arn).await.during("DeleteTargetGroup")?;
        Ok(Deleted::Now)
    }
    /// A group is in use until the listener rules that forward to it are gone, which another
    /// converge of the same run may still be deleting.
    fn held(&self, error: &AwsError) -> bool {
        error.is("ResourceInUse")
    }
}
