//! What the network needs of the account's quotas, and what is in use in the region.
//!
//! A new environment needs 1 VPC, 1 internet gateway, and an Elastic IP and a NAT gateway in each
//! zone (one of each with `network.nat_gateways = "single"`): [`needs`] counts only what the plan
//! creates, so a redeploy of an existing environment needs nothing. [`usage`] counts what the
//! whole account holds in the region (every VPC, the default one too; every Elastic IP; NAT
//! gateways `pending` or `available` per zone), with one read-only call per quota touched.

use std::collections::BTreeMap;

use async_trait::async_trait;
use aws_sdk_ec2::types::{DomainType, Filter};
use tap_core::quota::{Need, QuotaKey, Usage};
use tap_core::{Action, AwsError, Change, StepError};

use crate::desired::{EIP_PREFIX, INTERNET_GATEWAY, NAT_PREFIX, VPC};
use crate::sdk::SdkEc2;

/// The EC2 reads that count what the account uses.
#[cfg_attr(any(test, feature = "test-util"), mockall::automock)]
#[async_trait]
pub trait NetworkUsageApi: Send + Sync {
    /// Every VPC of the region (`DescribeVpcs`).
    async fn count_vpcs(&self) -> Result<usize, AwsError>;
    /// Every internet gateway of the region (`DescribeInternetGateways`).
    async fn count_internet_gateways(&self) -> Result<usize, AwsError>;
    /// Every Elastic IP of the region in the VPC domain (`DescribeAddresses`).
    async fn count_addresses(&self) -> Result<usize, AwsError>;
    /// NAT gateways `pending` or `available` per availability zone (`DescribeNatGateways`, then
    /// `DescribeSubnets` of their subnets for the zones).
    async fn nat_gateways_by_zone(&self) -> Result<BTreeMap<String, usize>, AwsError>;
}

/// The usage reads over a client built from `session` (its counter and guard attached).
pub fn usage_api(session: &tap_core::aws::AwsSession) -> SdkEc2 {
    SdkEc2(tap_core::sdk_client!(aws_sdk_ec2, session))
}

#[async_trait]
impl NetworkUsageApi for SdkEc2 {
    async fn count_vpcs(&self) -> Result<usize, AwsError> {
        let vpcs: Vec<_> = self.0.describe_vpcs().into_paginator().items().send().try_collect().await?;
        Ok(vpcs.len())
    }

    async fn count_internet_gateways(&self) -> Result<usize, AwsError> {
        let igws: Vec<_> = self.0.describe_internet_gateways().into_paginator().items().send().try_collect().await?;
        Ok(igws.len())
    }

    async fn count_addresses(&self) -> Result<usize, AwsError> {
        let out = self.0.describe_addresses().send().await?;
        Ok(out.addresses().iter().filter(|a| a.domain().is_none_or(|d| *d == DomainType::Vpc)).count())
    }

    async fn nat_gateways_by_zone(&self) -> Result<BTreeMap<String, usize>, AwsError> {
        let live = Filter::builder().name("state").values("pending").values("available").build();
        let nats: Vec<_> =
            self.0.describe_nat_gateways().filter(live).into_paginator().items().send().try_collect().await?;
        let subnet_ids: Vec<String> = nats.iter().filter_map(|n| n.subnet_id().map(str::to_owned)).collect();
        if subnet_ids.is_empty() {
            return Ok(BTreeMap::new());
        }
        let mut unique = subnet_ids.clone();
        unique.sort();
        unique.dedup();
        let subnets = self.0.describe_subnets().set_subnet_ids(Some(unique)).send().await?;
        let zone_of: BTreeMap<&str, &str> =
            subnets.subnets().iter().filter_map(|s| Some((s.subnet_id()?, s.availability_zone()?))).collect();
        let mut by_zone = BTreeMap::new();
        for id in &subnet_ids {
            let zone = zone_of.get(id.as_str()).copied().unwrap_or("unknown");
            *by_zone.entry(zone.to_owned()).or_insert(0) += 1;
        }
        Ok(by_zone)
    }
}

/// What the network step's planned `changes` add: the VPC, the internet gateway, each Elastic IP,
/// and each NAT gateway in the zone of its public subnet (`zones`: the environment's zones in
/// order, from [`NetworkOutputs`](tap_core::outputs::NetworkOutputs)).
pub fn needs(changes: &[Change], zones: &[String]) -> Vec<Need> {
    let created = |pred: &dyn Fn(&str) -> bool| -> Vec<String> {
        changes.iter().filter(|c| c.action == Action::Create && pred(&c.resource)).map(|c| c.resource.clone()).collect()
    };
    let mut out = Vec::new();
    let mut add = |key, resources: Vec<String>| {
        if !resources.is_empty() {
            out.push(Need::new(key, resources.len() as f64, resources));
        }
    };
    add(QuotaKey::Vpcs, created(&|r| r == VPC));
    add(QuotaKey::InternetGateways, created(&|r| r == INTERNET_GATEWAY));
    add(QuotaKey::ElasticIps, created(&|r| r.starts_with(EIP_PREFIX)));
    let mut nats: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for nat in created(&|r| r.starts_with(NAT_PREFIX)) {
        // `network/nat/2` lives in the second zone's public subnet.
        let index = nat.trim_start_matches(NAT_PREFIX).parse::<usize>().ok().and_then(|i| i.checked_sub(1));
        let zone = index.and_then(|i| zones.get(i)).cloned().unwrap_or_else(|| "unknown".to_owned());
        nats.entry(zone).or_default().push(nat);
    }
    for (zone, resources) in nats {
        out.push(Need::new(QuotaKey::NatGatewaysPerAz, resources.len() as f64, resources).in_zone(zone));
    }
    out
}

/// What the account uses of each network quota in `touched` (others are not asked), counted
/// concurrently.
pub async fn usage(api: &dyn NetworkUsageApi, touched: &[(QuotaKey, Option<String>)]) -> Result<Vec<Usage>, StepError> {
    let wants = |key| touched.iter().any(|(k, _)| *k == key);
    let count = |key: QuotaKey, n: Result<usize, AwsError>, action| {
        n.map(|n| vec![Usage { key, zone: None, in_use: n as f64 }]).map_err(StepError::aws("quota/network", action))
    };
    let (vpcs, igws, eips, nats) = tokio::join!(
        async {
            match wants(QuotaKey::Vpcs) {
                true => count(QuotaKey::Vpcs, api.count_vpcs().await, "DescribeVpcs"),
                false => Ok(vec![]),
            }
        },
        async {
            match wants(QuotaKey::InternetGateways) {
                true => {
                    count(QuotaKey::InternetGateways, api.count_internet_gateways().await, "DescribeInternetGateways")
                }
                false => Ok(vec![]),
            }
        },
        async {
            match wants(QuotaKey::ElasticIps) {
                true => count(QuotaKey::ElasticIps, api.count_addresses().await, "DescribeAddresses"),
                false => Ok(vec![]),
            }
        },
        async {
            if !wants(QuotaKey::NatGatewaysPerAz) {
                return Ok(vec![]);
            }
            let by_zone =
                api.nat_gateways_by_zone().await.map_err(StepError::aws("quota/network", "DescribeNatGateways"))?;
            Ok(touched
                .iter()
                .filter(|(k, _)| *k == QuotaKey::NatGatewaysPerAz)
                .map(|(key, zone)| Usage {
                    key: *key,
                    zone: zone.clone(),
                    in_use: zone.as_ref().and_then(|z| by_zone.get(z)).copied().unwrap_or(0) as f64,
                })
                .collect())
        },
    );
    Ok([vpcs?, igws?, eips?, nats?].concat())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zones() -> Vec<String> {
        vec!["eu-west-1a".into(), "eu-west-1b".into(), "eu-west-1c".into()]
    }

    #[test]
    fn a_new_environment_needs_a_vpc_a_gateway_and_an_address_and_nat_per_zone() {
        let mut changes = vec![Change::create(VPC, "vpc"), Change::create(INTERNET_GATEWAY, "igw")];
        for i in 1..=3 {
            changes.push(Change::create(format!("{EIP_PREFIX}{i}"), "eip"));
            changes.push(Change::create(format!("{NAT_PREFIX}{i}"), "nat"));
        }
        changes.push(Change::create("network/subnet/public-1", "subnet"));
        let needs = needs(&changes, &zones());
        let amount = |key, zone: Option<&str>| {
            needs.iter().find(|n| n.key == key && n.zone.as_deref() == zone).map(|n| n.amount).unwrap_or(0.0)
        };
        assert_eq!(amount(QuotaKey::Vpcs, None), 1.0);
        assert_eq!(amount(QuotaKey::InternetGateways, None), 1.0);
        assert_eq!(amount(QuotaKey::ElasticIps, None), 3.0);
        for z in zones() {
            assert_eq!(amount(QuotaKey::NatGatewaysPerAz, Some(&z)), 1.0, "{z}");
        }
    }

    #[test]
    fn what_exists_or_is_only_updated_needs_nothing() {
        let changes = vec![
            Change::update("network/route-table/private-2", "rt", vec![]),
            Change::delete(format!("{NAT_PREFIX}3"), "nat"),
        ];
        assert!(needs(&changes, &zones()).is_empty());
    }

    #[tokio::test]
    async fn usage_asks_only_for_the_quotas_touched() {
        let mut api = MockNetworkUsageApi::new();
        api.expect_count_addresses().times(1).returning(|| Ok(3));
        api.expect_nat_gateways_by_zone()
            .times(1)
            .returning(|| Ok(BTreeMap::from([("eu-west-1a".to_owned(), 2), ("eu-west-1b".to_owned(), 1)])));
        api.expect_count_vpcs().never();
        api.expect_count_internet_gateways().never();
        let touched = vec![
            (QuotaKey::ElasticIps, None),
            (QuotaKey::NatGatewaysPerAz, Some("eu-west-1a".to_owned())),
            (QuotaKey::NatGatewaysPerAz, Some("eu-west-1c".to_owned())),
        ];
        let usage = usage(&api, &touched).await.unwrap();
        let of = |key, zone: Option<&str>| {
            usage.iter().find(|u| u.key == key && u.zone.as_deref() == zone).map(|u| u.in_use)
        };
        assert_eq!(of(QuotaKey::ElasticIps, None), Some(3.0));
        assert_eq!(of(QuotaKey::NatGatewaysPerAz, Some("eu-west-1a")), Some(2.0));
        assert_eq!(of(QuotaKey::NatGatewaysPerAz, Some("eu-west-1c")), Some(0.0));
    }
}
