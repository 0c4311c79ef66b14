//! The ECS cluster kind, run by the resource engine ([`tap_core::resource`]).
//!
//! - **find**: `DescribeClusters` by name (settings and tags included); an `INACTIVE` cluster,
//!   what a deleted cluster looks like for a while, counts as missing and is created again.
//! - **owner**: from the tags `DescribeClusters` reports.
//! - **diff**: the Container Insights setting and the capacity providers with their default
//!   strategy, ignoring order; the typed [`ClusterUpdate`] is both what plan prints and the calls
//!   apply makes (`UpdateClusterSettings`, `PutClusterCapacityProviders`, only what differs).

use async_trait::async_trait;
use tap_core::naming::Tag;
use tap_core::resource::{ActionError, Deleted, Diff, During, Owner, Resource};
use tap_core::step::diff;
use tap_core::AwsError;

use crate::api::{ClusterSpec, EcsApi, ObservedCluster, StrategyItem};

/// The ECS cluster as a [`Resource`] of the engine: found by name (an `INACTIVE` one, what a
/// deleted cluster looks like for a while, counts as missing), created with its tags, its setting
/// and capacity providers repaired by one typed [`ClusterUpdate`].
pub struct Cluster<'a> {
    api: &'a dyn EcsApi,
    tags: Vec<Tag>,
}

/// What differs on an existing cluster, and the calls that repair it: plan prints its
/// attributes, apply makes exactly these calls.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClusterUpdate {
    /// `UpdateClusterSettings` to this `containerInsights` value.
    pub container_insights: Option<String>,
    /// `PutClusterCapacityProviders` with these providers and default strategy.
    pub capacity: Option<(Vec<String>, Vec<StrategyItem>)>,
}

impl<'a> Cluster<'a> {
    /// The cluster of `api`, tagged `tags` when created.
    pub fn new(api: &'a dyn EcsApi, tags: Vec<Tag>) -> Self {
        Cluster { api, tags }
    }

    async fn apply_update(&self, name: &str, update: &ClusterUpdate) -> Result<(), ActionError> {
        let settings = async {
            match &update.container_insights {
                Some(value) => self.api.update_container_insights(name, value).await.during("UpdateClusterSettings"),
                None => Ok(()),
            }
        };
        let providers = async {
            match &update.capacity {
                Some((providers, strategy)) => self
                    .api
                    .put_capacity_providers(name, providers, strategy)
                    .await
                    .during("PutClusterCapacityProviders"),
                None => Ok(()),
            }
        };
        tokio::try_join!(settings, providers)?;
        Ok(())
    }
}

#[async_trait]
impl Resource for Cluster<'_> {
    type Desired = ClusterSpec;
    type Observed = ObservedCluster;
    type Update = ClusterUpdate;
    const CREATE: &'static str = "CreateCluster";

    fn diff(&self, want: &ClusterSpec, have: &ObservedCluster) -> Result<Option<Diff<ClusterUpdate>>, String> {
        Ok(update_for(want, have))
    }

    async fn find(&self, want: &ClusterSpec) -> Result<Option<ObservedCluster>, AwsError> {
        Ok(self.api.describe_cluster(&want.name).await?.filter(|c| c.status != "INACTIVE"))
    }

    /// From its tags (DescribeClusters with `include = TAGS`). `tap-cluster-{s}` is a name no
    /// other environment derives, but one made by hand is no more tap's to change.
    async fn owner(&self, have: &ObservedCluster, env: &str) -> Result<Owner, ActionError> {
        Ok(Owner::of(&have.tags, env))
    }

    /// Creates the cluster; what the create call did not store (some endpoints drop the default
    /// strategy) the engine corrects in the same run, from what this returns.
    async fn create(&self, want: &ClusterSpec) -> Result<ObservedCluster, AwsError> {
        self.api.create_cluster(want, &self.tags).await
    }

    /// The cluster with the update applied (its name and ARN stay).
    async fn update(&self, have: &ObservedCluster, update: &ClusterUpdate) -> Result<ObservedCluster, ActionError> {
        self.apply_update(&have.name, update).await?;
        let mut now = have.clone();
        if let Some(value) = &update.container_insights {
            now.container_insights = Some(value.clone());
        }
        if let Some((providers, strategy)) = &update.capacity {
            (now.capacity_providers, now.default_strategy) = (providers.clone(), strategy.clone());
        }
        Ok(now)
    }

    /// A cluster already gone answers `ClusterNotFoundException` (the engine counts no change).
    async fn delete(&self, have: &ObservedCluster) -> Result<Deleted, ActionError> {
        self.api.delete_cluster(&have.name).await.during("DeleteCluster")?;
        Ok(Deleted::Now)
    }
}

/// The update that makes `observed` what `spec` wants, ignoring the order of providers and
/// strategy items (`None` when nothing differs). A cluster that reports no Container Insights
/// setting has it disabled (the ECS default).
fn update_for(spec: &ClusterSpec, observed: &ObservedCluster) -> Option<Diff<ClusterUpdate>> {
    let mut attrs = Vec::new();
    let mut update = ClusterUpdate::default();
    let insights = observed.container_insights.clone().unwrap_or_else(|| "disabled".into());
    if insights != spec.container_insights {
        diff(&mut attrs, "container_insights", &insights, &spec.container_insights);
        update.container_insights = Some(spec.container_insights.clone());
    }
    let sorted = |v: &[String]| {
        let mut v = v.to_vec();
        v.sort();
        v
    };
    let show = |s: &[StrategyItem]| {
        sorted(&s.iter().map(|i| format!("{} base={} weight={}", i.provider, i.base, i.weight)).collect::<Vec<_>>())
    };
    let (have_providers, want_providers) = (sorted(&observed.capacity_providers), sorted(&spec.capacity_providers));
    let (have_strategy, want_strategy) = (show(&observed.default_strategy), show(&spec.default_strategy));
    diff(&mut attrs, "capacity_providers", &have_providers, &want_providers);
    diff(&mut attrs, "default_capacity_provider_strategy", &have_strategy, &want_strategy);
    if have_providers != want_providers || have_strategy != want_strategy {
        update.capacity = Some((spec.capacity_providers.clone(), spec.default_strategy.clone()));
    }
    (!attrs.is_empty()).then(|| Diff::new(update, attrs))
}
