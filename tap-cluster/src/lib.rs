//! `tap-cluster`: the environment's ECS cluster `tap-cluster-{s}`, with the FARGATE and
//! FARGATE_SPOT capacity providers, a default strategy (FARGATE base `on_demand_base` weight
//! `on_demand_weight` + FARGATE_SPOT weight `spot_weight`) and the Container Insights setting.
//!
//! - Reads from the [`Context`]: only the config (`cluster.*`) and the names.
//! - Adds: [`ClusterOutputs`] — the cluster's name and ARN.
//! - Finds the cluster by name with `DescribeClusters` (settings and tags included); an `INACTIVE`
//!   cluster (what a deleted cluster looks like for a while) counts as missing and is created
//!   again. Drift of the setting or of the capacity providers is repaired, and only then.
//! - The cluster is a [`Resource`] of the engine ([`cluster`]): its
//!   typed [`ClusterUpdate`] is both what plan prints and the calls apply makes.
//! - Layout: [`api`] (the narrow ECS seam, mocked in tests), [`sdk`] (its implementation over
//!   `aws_sdk_ecs`), [`cluster`] (the kind); this module only wires the step.
//!
//! ```no_run
//! # async fn demo(session: &tap_core::aws::AwsSession) -> Result<(), tap_core::StepError> {
//! use tap_core::{Config, Context, Step};
//! let step = tap_cluster::ClusterStep::from_session(session);
//! let ctx = Context::new(Config::default());
//! step.apply(&ctx).await?;
//! println!("{}", ctx.get::<tap_core::outputs::ClusterOutputs>("demo")?.arn);
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]

pub mod api;
pub mod cluster;
pub mod sdk;

use std::sync::Arc;

use async_trait::async_trait;
use tap_core::outputs::{ClusterOutputs, PENDING};
use tap_core::resource::{Engine, Resource};
use tap_core::step::{Contract, Gone, OutputKind};
use tap_core::{Change, Context, Mode, Step, StepError};

#[cfg(any(test, feature = "test-util"))]
pub use api::MockEcsApi;
pub use api::{ClusterSpec, EcsApi, ObservedCluster, StrategyItem};
pub use cluster::{Cluster, ClusterUpdate};
pub use sdk::SdkEcs;

/// The step's name.
pub const STEP: &str = "cluster";
/// Logical id of the cluster.
pub const COMPONENT: &str = "cluster/ecs-cluster";
/// The on-demand Fargate capacity provider.
pub const FARGATE: &str = "FARGATE";
/// The Fargate Spot capacity provider.
pub const FARGATE_SPOT: &str = "FARGATE_SPOT";

/// The ECS cluster of an environment.
pub struct ClusterStep {
    api: Arc<dyn EcsApi>,
}

impl ClusterStep {
    /// A step over any [`EcsApi`] (a mock in tests).
    pub fn new(api: Arc<dyn EcsApi>) -> Self {
        ClusterStep { api }
    }

    /// A step over a real ECS client built from `session` (its counter and guard attached).
    pub fn from_session(session: &tap_core::aws::AwsSession) -> Self {
        Self::new(Arc::new(SdkEcs(tap_core::sdk_client!(aws_sdk_ecs, session))))
    }

    fn resource(&self, ctx: &Context, spec: &ClusterSpec) -> Cluster<'_> {
        Cluster::new(self.api.as_ref(), ctx.names.tags(COMPONENT, &spec.name))
    }

    async fn converge(&self, ctx: &Context, mode: Mode) -> Result<Vec<Change>, StepError> {
        let spec = ClusterSpec::new(ctx.names.cluster(), &ctx.config.cluster);
        let cluster = self.resource(ctx, &spec);
        let engine = Engine::new(ctx, STEP, mode);
        let observed = cluster.find(&spec).await.map_err(StepError::aws(COMPONENT, "DescribeClusters"))?;
        let converged = engine.converge(&cluster, COMPONENT, &spec.name, &spec, observed).await?;
        let arn = converged.map_or_else(|| PENDING.to_owned(), |c| c.arn);
        ctx.put(ClusterOutputs { name: spec.name.clone(), arn });
        Ok(engine.into_changes())
    }
}

#[async_trait]
impl Step for ClusterStep {
    fn contract(&self) -> Contract {
        Contract::new(STEP, OutputKind::Cluster).destroy_waits(&[Gone::EcsServices])
    }

    #[tracing::instrument(skip_all, name = "cluster.plan")]
    async fn plan(&self, ctx: &Context) -> Result<Vec<Change>, StepError> {
        self.converge(ctx, Mode::Plan).await
    }

    #[tracing::instrument(skip_all, name = "cluster.apply")]
    async fn apply(&self, ctx: &Context) -> Result<Vec<Change>, StepError> {
        self.converge(ctx, Mode::Apply).await
    }

    #[tracing::instrument(skip_all, name = "cluster.destroy")]
    async fn destroy(&self, ctx: &Context) -> Result<Vec<Change>, StepError> {
        let spec = ClusterSpec::new(ctx.names.cluster(), &ctx.config.cluster);
        let cluster = self.resource(ctx, &spec);
        let engine = Engine::new(ctx, STEP, Mode::Apply);
        let found = cluster.find(&spec).await.map_err(StepError::aws(COMPONENT, "DescribeClusters"))?;
        if let Some(found) = found {
            // ECS refuses to delete a cluster that still has services.
            ctx.wait_gone(Gone::EcsServices).await?;
            engine.delete(&cluster, COMPONENT, &spec.name, &found).await?;
        }
        Ok(engine.into_changes())
    }
}

#[cfg(test)]
mod tests;
