//! The target group resource kind: one per routed service (`tap-{short}-{s}`, target type `ip`,
//! HTTP on the service's port, in the environment's VPC), run by the resource engine
//! ([`tap_core::resource`]).
//!
//! - **diff**: the health check converges in place (one `ModifyTargetGroup` with every setting, the
//!   typed update); port, protocol, target type and VPC cannot change in place (a conflict).
//! - **find** (adoption after a create whose outcome is unknown, or `DuplicateTargetGroupName`):
//!   `DescribeTargetGroups` by name.
//! - **delete**: retried while AWS answers `ResourceInUse` (a listener rule or a draining service
//!   still uses it).
//! - **owned**: the groups of the region whose name looks like the environment's (`tap-*-{s}`) and
//!   that the config does not declare are checked with one `DescribeTags`; those whose tags say the
//!   environment owns them ([`tap_core::resource::owned`]) are what a prune deletes.

use std::collections::BTreeSet;
use std::time::Instant;

use async_trait::async_trait;
use tap_core::outputs::is_known;
use tap_core::resource::{owned, ActionError, Diff, During, Owned, Resource};
use tap_core::step::diff;
use tap_core::wait::Backoff;
use tap_core::{AwsError, Context, StepError};

use crate::api::{ElbApi, HealthCheck, ObservedTargetGroup, TargetGroupSpec};

/// Logical id prefix of target groups.
pub const ID_PREFIX: &str = "ingress/target-group/";

/// The target group kind over the ELBv2 seam.
pub struct TargetGroupKind<'a> {
    api: &'a dyn ElbApi,
    /// How long a delete is retried while the group is still in use.
    backoff: Backoff,
}

impl<'a> TargetGroupKind<'a> {
    /// The kind over `api`; deletes retry `ResourceInUse` within `backoff`.
    pub fn new(api: &'a dyn ElbApi, backoff: Backoff) -> Self {
        TargetGroupKind { api, backoff }
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
                let id = owned(tags.get(&tg.arn)?, env, String::new).filter(|id| id.starts_with(ID_PREFIX))?;
                Some(Owned { id, name: tg.name.clone(), observed: tg.clone() })
            })
            .collect())
    }
}

#[async_trait]
impl Resource for TargetGroupKind<'_> {
    type Desired = TargetGroupSpec;
    type Observed = ObservedTargetGroup;
    /// The health check to set (`ModifyTargetGroup` sends every setting).
    type Update = HealthCheck;
    const KIND: &'static str = "ingress/target-group";
    const CREATE: &'static str = "CreateTargetGroup";
    const DELETE: &'static str = "DeleteTargetGroup";

    fn diff(&self, want: &TargetGroupSpec, have: &ObservedTargetGroup) -> Result<Option<Diff<HealthCheck>>, String> {
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
        let (have, want) = (&have.health_check, &want.health_check);
        let mut attrs = Vec::new();
        diff(&mut attrs, "health_check_path", &have.path, &want.path);
        diff(&mut attrs, "healthy_threshold", &have.healthy_threshold, &want.healthy_threshold);
        diff(&mut attrs, "unhealthy_threshold", &have.unhealthy_threshold, &want.unhealthy_threshold);
        diff(&mut attrs, "health_check_interval", &have.interval_seconds, &want.interval_seconds);
        diff(&mut attrs, "matcher", &have.matcher, &want.matcher);
        Ok((!attrs.is_empty()).then(|| Diff::new(want.clone(), attrs)))
    }

    async fn find(&self, want: &TargetGroupSpec) -> Result<Option<ObservedTargetGroup>, AwsError> {
        match self.api.describe_target_groups(std::slice::from_ref(&want.name)).await {
            Ok(groups) => Ok(groups.into_iter().find(|tg| tg.name == want.name)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn create(&self, want: &TargetGroupSpec) -> Result<ObservedTargetGroup, AwsError> {
        self.api.create_target_group(want).await
    }

    fn already_exists(&self, error: &AwsError) -> bool {
        error.is("DuplicateTargetGroupName")
    }

    async fn update(&self, have: &ObservedTargetGroup, update: &HealthCheck) -> Result<(), ActionError> {
        self.api.modify_target_group(&have.arn, update).await.during("ModifyTargetGroup")
    }

    async fn delete(&self, have: &ObservedTargetGroup) -> Result<(), ActionError> {
        let start = Instant::now();
        let mut delay = self.backoff.initial;
        loop {
            match self.api.delete_target_group(&have.arn).await {
                Err(e) if (e.is("ResourceInUse") || e.retryable) && start.elapsed() + delay <= self.backoff.timeout => {
                    tracing::debug!(name = %have.name, error = %e, "target group still in use; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(self.backoff.max);
                }
                other => return other.during("DeleteTargetGroup"),
            }
        }
    }
}
