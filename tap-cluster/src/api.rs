//! The narrow seam over ECS: exactly the calls the cluster step makes, with small domain types
//! instead of SDK types ([`SdkEcs`](crate::SdkEcs) is its one implementation).

use async_trait::async_trait;
use tap_core::config::ClusterSettings;
use tap_core::naming::Tag;
use tap_core::AwsError;

use crate::{FARGATE, FARGATE_SPOT};

/// One entry of a capacity-provider strategy.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct StrategyItem {
    /// Capacity provider name.
    pub provider: String,
    /// Tasks placed on this provider before weights apply.
    pub base: i32,
    /// Relative share of the tasks beyond the bases.
    pub weight: i32,
}

/// What the cluster should look like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSpec {
    /// Cluster name.
    pub name: String,
    /// `containerInsights` setting value: `enabled` or `disabled`.
    pub container_insights: String,
    /// Capacity providers, sorted.
    pub capacity_providers: Vec<String>,
    /// Default capacity-provider strategy, sorted by provider.
    pub default_strategy: Vec<StrategyItem>,
}

impl ClusterSpec {
    /// The cluster of the config's `cluster` settings, named `name`.
    pub fn new(name: impl Into<String>, settings: &ClusterSettings) -> Self {
        let to_i32 = |v: u32| i32::try_from(v).unwrap_or(i32::MAX);
        ClusterSpec {
            name: name.into(),
            container_insights: if settings.container_insights { "enabled" } else { "disabled" }.into(),
            capacity_providers: vec![FARGATE.into(), FARGATE_SPOT.into()],
            default_strategy: vec![
                StrategyItem {
                    provider: FARGATE.into(),
                    base: to_i32(settings.on_demand_base),
                    weight: to_i32(settings.on_demand_weight),
                },
                StrategyItem { provider: FARGATE_SPOT.into(), base: 0, weight: to_i32(settings.spot_weight) },
            ],
        }
    }
}

/// A cluster as ECS reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedCluster {
    /// Cluster name.
    pub name: String,
    /// Cluster ARN.
    pub arn: String,
    /// `ACTIVE`, `PROVISIONING`, `DEPROVISIONING`, `FAILED` or `INACTIVE`.
    pub status: String,
    /// The `containerInsights` setting, when reported.
    pub container_insights: Option<String>,
    /// Capacity providers, sorted.
    pub capacity_providers: Vec<String>,
    /// Default capacity-provider strategy, sorted by provider.
    pub default_strategy: Vec<StrategyItem>,
    /// Its tags.
    pub tags: Vec<Tag>,
}

/// The ECS calls this crate makes.
#[cfg_attr(any(test, feature = "test-util"), mockall::automock)]
#[async_trait]
pub trait EcsApi: Send + Sync {
    /// `DescribeClusters` (include SETTINGS and TAGS); `None` when ECS reports it missing.
    async fn describe_cluster(&self, name: &str) -> Result<Option<ObservedCluster>, AwsError>;
    /// `CreateCluster` with the setting, capacity providers, default strategy and tags.
    async fn create_cluster(&self, spec: &ClusterSpec, tags: &[Tag]) -> Result<ObservedCluster, AwsError>;
    /// `UpdateClusterSettings` for `containerInsights`.
    async fn update_container_insights(&self, name: &str, value: &str) -> Result<(), AwsError>;
    /// `PutClusterCapacityProviders`.
    async fn put_capacity_providers(
        &self,
        name: &str,
        providers: &[String],
        strategy: &[StrategyItem],
    ) -> Result<(), AwsError>;
    /// `DeleteCluster`.
    async fn delete_cluster(&self, name: &str) -> Result<(), AwsError>;
}
