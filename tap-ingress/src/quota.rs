//! What the load balancer needs of the account's quotas, and what is in use in the region.
//!
//! A new environment needs one Application Load Balancer and a target group per routed service
//! (two for one that shifts traffic): [`needs`] counts what the plan creates, so a redeploy needs
//! nothing. [`usage`] counts the region's Application Load Balancers and target groups (every
//! page, 400 a call).

use async_trait::async_trait;
use aws_sdk_elasticloadbalancingv2::types::LoadBalancerTypeEnum;
use tap_core::quota::{Need, QuotaKey, Usage};
use tap_core::{Action, AwsError, Change, StepError};

use crate::api::SdkElb;
use crate::LOAD_BALANCER_ID;

/// The ELBv2 reads that count what the account uses.
#[cfg_attr(any(test, feature = "test-util"), mockall::automock)]
#[async_trait]
pub trait IngressUsageApi: Send + Sync {
    /// Application Load Balancers of the region (`DescribeLoadBalancers`).
    async fn count_application_load_balancers(&self) -> Result<usize, AwsError>;
    /// Target groups of the region (`DescribeTargetGroups`).
    async fn count_target_groups(&self) -> Result<usize, AwsError>;
}

/// The usage reads over a client built from `session` (its counter and guard attached).
pub fn usage_api(session: &tap_core::aws::AwsSession) -> SdkElb {
    SdkElb(tap_core::sdk_client!(aws_sdk_elasticloadbalancingv2, session))
}

#[async_trait]
impl IngressUsageApi for SdkElb {
    async fn count_application_load_balancers(&self) -> Result<usize, AwsError> {
        let pages = self.0.describe_load_balancers().page_size(400).into_paginator().send().try_collect().await?;
        let application = Some(&LoadBalancerTypeEnum::Application);
        Ok(pages.iter().flat_map(|p| p.load_balancers()).filter(|lb| lb.r#type() == application).count())
    }

    async fn count_target_groups(&self) -> Result<usize, AwsError> {
        let pages = self.0.describe_target_groups().page_size(400).into_paginator().send().try_collect().await?;
        Ok(pages.iter().map(|p| p.target_groups().len()).sum())
    }
}

/// What the ingress step's planned `changes` add: the load balancer and each target group.
pub fn needs(changes: &[Change]) -> Vec<Need> {
    let created = |pred: &dyn Fn(&str) -> bool| -> Vec<String> {
        changes.iter().filter(|c| c.action == Action::Create && pred(&c.resource)).map(|c| c.resource.clone()).collect()
    };
    [
        (QuotaKey::LoadBalancers, created(&|r| r == LOAD_BALANCER_ID)),
        (QuotaKey::TargetGroups, created(&|r| r.starts_with("ingress/target-group/"))),
    ]
    .into_iter()
    .filter(|(_, r)| !r.is_empty())
    .map(|(key, resources)| Need::new(key, resources.len() as f64, resources))
    .collect()
}

/// What the account uses of each ingress quota in `touched`, counted concurrently.
pub async fn usage(api: &dyn IngressUsageApi, touched: &[(QuotaKey, Option<String>)]) -> Result<Vec<Usage>, StepError> {
    let wants = |key| touched.iter().any(|(k, _)| *k == key);
    let usage = |key| move |n: usize| vec![Usage { key, zone: None, in_use: n as f64 }];
    let (lbs, tgs) = tokio::join!(
        async {
            if !wants(QuotaKey::LoadBalancers) {
                return Ok(vec![]);
            }
            api.count_application_load_balancers()
                .await
                .map(usage(QuotaKey::LoadBalancers))
                .map_err(StepError::aws("quota/ingress", "DescribeLoadBalancers"))
        },
        async {
            if !wants(QuotaKey::TargetGroups) {
                return Ok(vec![]);
            }
            api.count_target_groups()
                .await
                .map(usage(QuotaKey::TargetGroups))
                .map_err(StepError::aws("quota/ingress", "DescribeTargetGroups"))
        },
    );
    Ok([lbs?, tgs?].concat())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_load_balancer_and_its_target_groups_are_needed_existing_ones_are_not() {
        let changes = vec![
            Change::create(LOAD_BALANCER_ID, "tap-alb-dev"),
            Change::create(crate::target_group_id("frontend"), "tap-fe-dev"),
            Change::create(crate::alternate_target_group_id("frontend"), "tap-fe-alt-dev"),
            Change::create(crate::listener_id(80), "tap-alb-dev:80"),
            Change::update(crate::target_group_id("api-gateway"), "tap-api-dev", vec![]),
        ];
        let needs = needs(&changes);
        assert_eq!(needs.len(), 2);
        assert_eq!((needs[0].key, needs[0].amount), (QuotaKey::LoadBalancers, 1.0));
        assert_eq!((needs[1].key, needs[1].amount), (QuotaKey::TargetGroups, 2.0));
        assert!(super::needs(&changes[3..]).is_empty());
    }

    #[tokio::test]
    async fn usage_counts_only_what_is_touched() {
        let mut api = MockIngressUsageApi::new();
        api.expect_count_target_groups().times(1).returning(|| Ok(2999));
        api.expect_count_application_load_balancers().never();
        let usage = usage(&api, &[(QuotaKey::TargetGroups, None)]).await.unwrap();
        assert_eq!(usage, vec![Usage { key: QuotaKey::TargetGroups, zone: None, in_use: 2999.0 }]);
    }
}
