//! What the services need of the account's Fargate vCPU quotas, and what runs in the region.
//!
//! A service the plan creates runs its desired count (at least `scaling.min_capacity`, which auto
//! scaling holds it to) of tasks at its task size, split over FARGATE and FARGATE_SPOT by the
//! cluster's capacity-provider strategy ([`tap_core::quota::fargate_split`]): that is what it adds
//! to "Fargate On-Demand vCPU resource count" and "Fargate Spot vCPU resource count". A service
//! that exists needs nothing more (its tasks already run and count as in use). [`usage`] sums the
//! vCPUs of the region's running tasks on Fargate, by capacity provider: `ListClusters`, then per
//! cluster `ListTasks` (running) and `DescribeTasks` (100 a call).

use async_trait::async_trait;
use tap_core::quota::{fargate_split, Need, QuotaKey, Usage};
use tap_core::{Action, AwsError, Change, Config, StepError};

use crate::sdk::SdkServices;

/// vCPUs of running Fargate tasks: (on demand, spot).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct FargateVcpus {
    /// On FARGATE (or the `FARGATE` launch type).
    pub on_demand: f64,
    /// On FARGATE_SPOT.
    pub spot: f64,
}

/// The ECS reads that count what the account runs.
#[cfg_attr(any(test, feature = "test-util"), mockall::automock)]
#[async_trait]
pub trait ServicesUsageApi: Send + Sync {
    /// The vCPUs of every running Fargate task of the region.
    async fn running_fargate_vcpus(&self) -> Result<FargateVcpus, AwsError>;
}

/// The usage reads over clients built from `session` (its counter and guard attached).
pub fn usage_api(session: &tap_core::aws::AwsSession) -> SdkServices {
    SdkServices::from_session(session)
}

#[async_trait]
impl ServicesUsageApi for SdkServices {
    async fn running_fargate_vcpus(&self) -> Result<FargateVcpus, AwsError> {
        let clusters: Vec<String> = self.ecs.list_clusters().into_paginator().items().send().try_collect().await?;
        let per_cluster = futures::future::try_join_all(clusters.iter().map(|cluster| async move {
            let arns: Vec<String> = self
                .ecs
                .list_tasks()
                .cluster(cluster)
                .desired_status(aws_sdk_ecs::types::DesiredStatus::Running)
                .into_paginator()
                .items()
                .send()
                .try_collect()
                .await?;
            let mut sum = FargateVcpus::default();
            for chunk in arns.chunks(100) {
                let out = self.ecs.describe_tasks().cluster(cluster).set_tasks(Some(chunk.to_vec())).send().await?;
                for task in out.tasks() {
                    let vcpus = task.cpu().and_then(|c| c.parse::<f64>().ok()).unwrap_or(0.0) / 1024.0;
                    let fargate = task.launch_type() == Some(&aws_sdk_ecs::types::LaunchType::Fargate);
                    match task.capacity_provider_name() {
                        Some("FARGATE_SPOT") => sum.spot += vcpus,
                        Some("FARGATE") => sum.on_demand += vcpus,
                        _ if fargate => sum.on_demand += vcpus,
                        _ => {}
                    }
                }
            }
            Ok::<_, AwsError>(sum)
        }))
        .await?;
        Ok(per_cluster.into_iter().fold(FargateVcpus::default(), |a, b| FargateVcpus {
            on_demand: a.on_demand + b.on_demand,
            spot: a.spot + b.spot,
        }))
    }
}

/// What the services step's planned `changes` add to the Fargate vCPU quotas: each ECS service it
/// creates, at its desired count (at least `scaling.min_capacity`) and task size.
pub fn needs(config: &Config, changes: &[Change]) -> Vec<Need> {
    let (mut on_demand, mut spot, mut resources) = (0.0, 0.0, Vec::new());
    for change in changes.iter().filter(|c| c.action == Action::Create) {
        let Some(name) = change.resource.strip_prefix("services/ecs-service/") else { continue };
        let Some(service) = config.service(name) else { continue };
        let count = service.desired_count.max(config.scaling.min_capacity).max(0) as u32;
        let vcpus = f64::from(service.cpu) / 1024.0;
        let (od, sp) = fargate_split(config, count);
        on_demand += od * vcpus;
        spot += sp * vcpus;
        resources.push(change.resource.clone());
    }
    let mut out = Vec::new();
    if on_demand > 0.0 {
        out.push(Need::new(QuotaKey::FargateOnDemandVcpu, on_demand, resources.clone()));
    }
    if spot > 0.0 {
        out.push(Need::new(QuotaKey::FargateSpotVcpu, spot, resources));
    }
    out
}

/// What the region runs on Fargate, for the quotas in `touched` (one count serves both).
pub async fn usage(
    api: &dyn ServicesUsageApi,
    touched: &[(QuotaKey, Option<String>)],
) -> Result<Vec<Usage>, StepError> {
    let keys: Vec<QuotaKey> = touched
        .iter()
        .map(|(k, _)| *k)
        .filter(|k| matches!(k, QuotaKey::FargateOnDemandVcpu | QuotaKey::FargateSpotVcpu))
        .collect();
    if keys.is_empty() {
        return Ok(vec![]);
    }
    let running = api.running_fargate_vcpus().await.map_err(StepError::aws("quota/services", "DescribeTasks"))?;
    Ok(keys
        .into_iter()
        .map(|key| Usage {
            key,
            zone: None,
            in_use: if key == QuotaKey::FargateSpotVcpu { running.spot } else { running.on_demand },
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_services_need_their_tasks_vcpus_split_by_the_capacity_strategy() {
        let config = Config::default();
        let changes: Vec<Change> = config
            .services
            .iter()
            .map(|s| Change::create(format!("services/ecs-service/{}", s.name), format!("tap-{}-dev", s.name)))
            .chain([Change::create("services/log-group/frontend", "/ecs/tap-frontend-dev")])
            .collect();
        let needs = needs(&config, &changes);
        // 0.5 + 1 + 2 vCPUs a task, 2 tasks each: 1.2 on demand and 0.8 on Spot per service.
        assert_eq!(needs.len(), 2);
        assert_eq!(needs[0].key, QuotaKey::FargateOnDemandVcpu);
        assert!((needs[0].amount - 3.5 * 1.2).abs() < 1e-9, "{needs:?}");
        assert!((needs[1].amount - 3.5 * 0.8).abs() < 1e-9, "{needs:?}");
        assert_eq!(needs[0].resources.len(), 3);
        let updated = vec![Change::update("services/ecs-service/frontend", "tap-frontend-dev", vec![])];
        assert!(super::needs(&config, &updated).is_empty(), "a running service adds nothing");
    }

    #[tokio::test]
    async fn one_count_of_running_tasks_serves_both_quotas() {
        let mut api = MockServicesUsageApi::new();
        api.expect_running_fargate_vcpus().times(1).returning(|| Ok(FargateVcpus { on_demand: 4.0, spot: 1.5 }));
        let touched = [(QuotaKey::FargateOnDemandVcpu, None), (QuotaKey::FargateSpotVcpu, None)];
        let usage = usage(&api, &touched).await.unwrap();
        assert_eq!(usage.iter().map(|u| u.in_use).collect::<Vec<_>>(), [4.0, 1.5]);
        let mut idle = MockServicesUsageApi::new();
        idle.expect_running_fargate_vcpus().never();
        assert!(super::usage(&idle, &[(QuotaKey::ElasticIps, None)]).await.unwrap().is_empty());
    }
}
