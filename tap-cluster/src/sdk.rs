//! [`EcsApi`] over the real SDK client.

use async_trait::async_trait;
use aws_sdk_ecs::types::{CapacityProviderStrategyItem, ClusterField, ClusterSetting, ClusterSettingName};
use tap_core::naming::Tag;
use tap_core::AwsError;

use crate::api::{ClusterSpec, EcsApi, ObservedCluster, StrategyItem};

/// [`EcsApi`] over the real SDK client.
#[derive(Debug, Clone)]
pub struct SdkEcs(pub aws_sdk_ecs::Client);

fn strategy_items(strategy: &[StrategyItem]) -> Result<Vec<CapacityProviderStrategyItem>, AwsError> {
    strategy
        .iter()
        .map(|s| {
            CapacityProviderStrategyItem::builder()
                .capacity_provider(&s.provider)
                .base(s.base)
                .weight(s.weight)
                .build()
                .map_err(|e| AwsError::local(format!("invalid request: {e}")))
        })
        .collect()
}

fn observed(c: &aws_sdk_ecs::types::Cluster) -> ObservedCluster {
    let mut capacity_providers = c.capacity_providers().to_vec();
    capacity_providers.sort();
    let mut default_strategy: Vec<StrategyItem> = c
        .default_capacity_provider_strategy()
        .iter()
        .map(|s| StrategyItem { provider: s.capacity_provider().to_owned(), base: s.base(), weight: s.weight() })
        .collect();
    default_strategy.sort();
    ObservedCluster {
        name: c.cluster_name().unwrap_or_default().to_owned(),
        arn: c.cluster_arn().unwrap_or_default().to_owned(),
        status: c.status().unwrap_or_default().to_owned(),
        container_insights: c
            .settings()
            .iter()
            .find(|s| s.name() == Some(&ClusterSettingName::ContainerInsights))
            .and_then(|s| s.value().map(str::to_owned)),
        capacity_providers,
        default_strategy,
        tags: c.tags().iter().filter_map(|t| Some((t.key()?.to_owned(), t.value()?.to_owned()))).collect(),
    }
}

fn insights(value: &str) -> ClusterSetting {
    ClusterSetting::builder().name(ClusterSettingName::ContainerInsights).value(value).build()
}

#[async_trait]
impl EcsApi for SdkEcs {
    async fn describe_cluster(&self, name: &str) -> Result<Option<ObservedCluster>, AwsError> {
        let out = self
            .0
            .describe_clusters()
            .clusters(name)
            .include(ClusterField::Settings)
            .include(ClusterField::Tags)
            .send()
            .await?;
        Ok(out.clusters().iter().map(observed).find(|c| c.name == name))
    }

    async fn create_cluster(&self, spec: &ClusterSpec, tags: &[Tag]) -> Result<ObservedCluster, AwsError> {
        let tags = tags.iter().map(|(k, v)| aws_sdk_ecs::types::Tag::builder().key(k).value(v).build()).collect();
        let out = self
            .0
            .create_cluster()
            .cluster_name(&spec.name)
            .settings(insights(&spec.container_insights))
            .set_capacity_providers(Some(spec.capacity_providers.clone()))
            .set_default_capacity_provider_strategy(Some(strategy_items(&spec.default_strategy)?))
            .set_tags(Some(tags))
            .send()
            .await?;
        out.cluster().map(observed).ok_or_else(|| AwsError::new("InvalidResponse", "CreateCluster returned no cluster"))
    }

    async fn update_container_insights(&self, name: &str, value: &str) -> Result<(), AwsError> {
        self.0.update_cluster_settings().cluster(name).settings(insights(value)).send().await?;
        Ok(())
    }

    async fn put_capacity_providers(
        &self,
        name: &str,
        providers: &[String],
        strategy: &[StrategyItem],
    ) -> Result<(), AwsError> {
        self.0
            .put_cluster_capacity_providers()
            .cluster(name)
            .set_capacity_providers(Some(providers.to_vec()))
            .set_default_capacity_provider_strategy(Some(strategy_items(strategy)?))
            .send()
            .await?;
        Ok(())
    }

    async fn delete_cluster(&self, name: &str) -> Result<(), AwsError> {
        self.0.delete_cluster().cluster(name).send().await?;
        Ok(())
    }
}
