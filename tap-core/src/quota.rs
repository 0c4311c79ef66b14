//! Account quotas: the plain data of the quota preflight, and the limits a config alone can break.
//!
//! Before a deploy writes anything, what it would **add** (only what does not exist yet in the
//! environment) is checked against the account's quotas in the region and what is in use there.
//! Each concern crate says what it needs ([`Need`]) and counts what is in use ([`Usage`]) with its
//! own SDK client; `tap-quotas` reads the quota values from Service Quotas and decides. This module
//! holds the one table of the quotas tap checks ([`QUOTAS`]) and the static per-resource limits
//! that [`crate::Config::validate`] enforces before any AWS call ([`listener_rules`],
//! [`target_groups`]).

use serde::Serialize;

use crate::config::Config;
use crate::strategy;

/// Where a quota counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scope {
    /// Per account and region.
    Region,
    /// Per availability zone of the region.
    AvailabilityZone,
    /// Per account, in every region at once (Service Quotas answers it in `us-east-1` only).
    Global,
}

/// A quota tap checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum QuotaKey {
    /// VPCs per Region.
    Vpcs,
    /// Internet gateways per Region.
    InternetGateways,
    /// NAT gateways per Availability Zone.
    NatGatewaysPerAz,
    /// EC2-VPC Elastic IPs.
    ElasticIps,
    /// Application Load Balancers per Region.
    LoadBalancers,
    /// Target Groups per Region.
    TargetGroups,
    /// Fargate On-Demand vCPU resource count.
    FargateOnDemandVcpu,
    /// Fargate Spot vCPU resource count.
    FargateSpotVcpu,
    /// IAM roles per account.
    IamRoles,
}

/// One row of [`QUOTAS`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Quota {
    /// Which quota.
    pub key: QuotaKey,
    /// Service Quotas' service code (`ec2`, `vpc`, …).
    pub service_code: &'static str,
    /// Service Quotas' quota code (`L-…`).
    pub quota_code: &'static str,
    /// Service Quotas' name of the quota.
    pub name: &'static str,
    /// AWS's documented default value (used when Service Quotas gives none).
    pub default: f64,
    /// Where it counts.
    pub scope: Scope,
    /// What one unit is, for people (`VPCs`, `vCPUs`).
    pub unit: &'static str,
}

/// The quotas tap checks, with AWS's codes, names and documented defaults. Sources (AWS
/// documentation, read for this table):
/// - VPCs, internet gateways, NAT gateways per AZ: "Amazon VPC quotas"
///   (docs.aws.amazon.com/vpc/latest/userguide/amazon-vpc-limits.html, also the General Reference's
///   "Amazon Virtual Private Cloud endpoints and quotas"): 5 each, service code `vpc`; the same
///   codes and values are in moto's Service Quotas table of the `vpc` service.
/// - Elastic IPs: "Elastic IP address quota" in the Amazon EC2 User Guide: 5 per Region, quota
///   `L-0263D0A3` of service `ec2`.
/// - Load balancers and target groups: "Quotas for your Application Load Balancers"
///   (docs.aws.amazon.com/elasticloadbalancing/latest/application/load-balancer-limits.html):
///   50 Application Load Balancers per Region, 3,000 target groups per Region (shared with Network
///   Load Balancers); service code `elasticloadbalancing`.
/// - Fargate vCPUs: "Amazon ECS endpoints and quotas" (docs.aws.amazon.com/general/latest/gr/
///   ecs-service.html): "Fargate On-Demand vCPU resource count — Each supported Region: 6";
///   the Spot count is taken as the same 6 (new accounts may start lower, and AWS raises them
///   with use: Service Quotas' applied value is what counts); service code `fargate`.
/// - IAM roles: "IAM and AWS STS quotas" (docs.aws.amazon.com/IAM/latest/UserGuide/
///   reference_iam-quotas.html): 1,000 roles per account, a global quota of service `iam`.
pub const QUOTAS: [Quota; 9] = [
    Quota {
        key: QuotaKey::Vpcs,
        service_code: "vpc",
        quota_code: "L-F678F1CE",
        name: "VPCs per Region",
        default: 5.0,
        scope: Scope::Region,
        unit: "VPCs",
    },
    Quota {
        key: QuotaKey::InternetGateways,
        service_code: "vpc",
        quota_code: "L-A4707A72",
        name: "Internet gateways per Region",
        default: 5.0,
        scope: Scope::Region,
        unit: "internet gateways",
    },
    Quota {
        key: QuotaKey::NatGatewaysPerAz,
        service_code: "vpc",
        quota_code: "L-FE5A380F",
        name: "NAT gateways per Availability Zone",
        default: 5.0,
        scope: Scope::AvailabilityZone,
        unit: "NAT gateways",
    },
    Quota {
        key: QuotaKey::ElasticIps,
        service_code: "ec2",
        quota_code: "L-0263D0A3",
        name: "EC2-VPC Elastic IPs",
        default: 5.0,
        scope: Scope::Region,
        unit: "Elastic IPs",
    },
    Quota {
        key: QuotaKey::LoadBalancers,
        service_code: "elasticloadbalancing",
        quota_code: "L-53DA6B97",
        name: "Application Load Balancers per Region",
        default: 50.0,
        scope: Scope::Region,
        unit: "load balancers",
    },
    Quota {
        key: QuotaKey::TargetGroups,
        service_code: "elasticloadbalancing",
        quota_code: "L-B22855CB",
        name: "Target Groups per Region",
        default: 3000.0,
        scope: Scope::Region,
        unit: "target groups",
    },
    Quota {
        key: QuotaKey::FargateOnDemandVcpu,
        service_code: "fargate",
        quota_code: "L-3032A538",
        name: "Fargate On-Demand vCPU resource count",
        default: 6.0,
        scope: Scope::Region,
        unit: "vCPUs",
    },
    Quota {
        key: QuotaKey::FargateSpotVcpu,
        service_code: "fargate",
        quota_code: "L-36FBB829",
        name: "Fargate Spot vCPU resource count",
        default: 6.0,
        scope: Scope::Region,
        unit: "vCPUs",
    },
    Quota {
        key: QuotaKey::IamRoles,
        service_code: "iam",
        quota_code: "L-FE177D64",
        name: "Roles per account",
        default: 1000.0,
        scope: Scope::Global,
        unit: "roles",
    },
];

impl QuotaKey {
    /// Its row of [`QUOTAS`].
    pub fn quota(self) -> &'static Quota {
        QUOTAS.iter().find(|q| q.key == self).unwrap_or(&QUOTAS[0])
    }
}

/// What a run would add to a quota (only what does not exist yet in the environment).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Need {
    /// Which quota.
    pub key: QuotaKey,
    /// The availability zone, for a per-AZ quota.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    /// How much (a count, or vCPUs).
    pub amount: f64,
    /// The resources (logical ids) that add it.
    pub resources: Vec<String>,
}

impl Need {
    /// `amount` of `key` in the region, added by `resources`.
    pub fn new(key: QuotaKey, amount: f64, resources: Vec<String>) -> Need {
        Need { key, zone: None, amount, resources }
    }

    /// The same need, counted in availability zone `zone`.
    pub fn in_zone(self, zone: impl Into<String>) -> Need {
        Need { zone: Some(zone.into()), ..self }
    }
}

/// What is in use of a quota in the account (and region, or zone).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Usage {
    /// Which quota.
    pub key: QuotaKey,
    /// The availability zone, for a per-AZ quota.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    /// How much is in use.
    pub in_use: f64,
}

/// The quotas (and zones) `needs` touch: what a concern crate has to count.
pub fn touched(needs: &[Need]) -> Vec<(QuotaKey, Option<String>)> {
    let mut out: Vec<(QuotaKey, Option<String>)> = Vec::new();
    for n in needs.iter().filter(|n| n.amount > 0.0) {
        let k = (n.key, n.zone.clone());
        if !out.contains(&k) {
            out.push(k);
        }
    }
    out
}

/// The most rules one Application Load Balancer takes, not counting its listeners' default rules
/// ("Rules per Application Load Balancer", Quotas for your Application Load Balancers).
pub const MAX_RULES_PER_LOAD_BALANCER: usize = 100;
/// The most target groups one Application Load Balancer takes ("Target Groups per Application Load
/// Balancer", not adjustable).
pub const MAX_TARGET_GROUPS_PER_LOAD_BALANCER: usize = 100;

/// The listener rules the config needs on its one listener (the HTTPS one when a certificate is
/// set; :80 then only redirects): a routed service's path rule, and for a traffic-shifting service
/// its test rule, plus the `/*` production rule of a shifting default service
/// ([`strategy::rule_priorities`]). The listener's default action is not a rule.
pub fn listener_rules(config: &Config) -> usize {
    config
        .services
        .iter()
        .filter_map(|s| {
            let route = s.route.as_ref()?;
            let path_priority = route.path_pattern.as_ref().map(|_| route.priority);
            let (production, test) =
                strategy::rule_priorities(path_priority, config.strategy_of(s).strategy.shifts_traffic());
            Some(usize::from(production.is_some()) + usize::from(test.is_some()))
        })
        .sum()
}

/// The target groups the config puts behind its load balancer: one per routed service, and the
/// alternate group of each traffic-shifting one.
pub fn target_groups(config: &Config) -> usize {
    config
        .services
        .iter()
        .filter(|s| s.route.is_some())
        .map(|s| if config.strategy_of(s).strategy.shifts_traffic() { 2 } else { 1 })
        .sum()
}

/// The tasks of a service with `count` desired tasks on (FARGATE, FARGATE_SPOT) by the cluster's
/// capacity-provider strategy: the base on demand first, the rest by weight, as the shares ECS
/// keeps (2 tasks, base 1, weights 1 : 4 → 1.2 on demand, 0.8 on Spot).
pub fn fargate_split(config: &Config, count: u32) -> (f64, f64) {
    let c = &config.cluster;
    let base = count.min(c.on_demand_base);
    let rest = f64::from(count - base);
    let weights = c.on_demand_weight + c.spot_weight;
    if weights == 0 {
        return (f64::from(count), 0.0);
    }
    let on_demand = rest * f64::from(c.on_demand_weight) / f64::from(weights);
    (f64::from(base) + on_demand, rest - on_demand)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{RouteSpec, ServiceSpec};
    use crate::strategy::Strategy;

    fn routed(n: usize) -> Config {
        let mut config = Config::default();
        let template = config.services[1].clone();
        config.services.truncate(1);
        for i in 0..n {
            config.services.push(ServiceSpec {
                name: format!("svc-{i}"),
                port: 10000 + i as u16,
                route: Some(RouteSpec {
                    short_name: format!("s{i}"),
                    path_pattern: Some(format!("/s{i}/*")),
                    priority: 10 + 2 * i as i32,
                    ..template.route.clone().unwrap()
                }),
                ..template.clone()
            });
        }
        config
    }

    #[test]
    fn the_default_platform_needs_one_rule_and_two_target_groups() {
        let config = Config::default();
        assert_eq!(listener_rules(&config), 1, "/api/* (the frontend is the listener's default)");
        assert_eq!(target_groups(&config), 2);
    }

    #[test]
    fn shifting_services_add_their_test_rules_and_the_default_services_catch_all() {
        let mut config = routed(3);
        assert_eq!(listener_rules(&config), 3);
        config.deploy.strategy = Strategy::BlueGreen;
        // 3 path rules + 3 test rules, and the default service's `/*` rule with its test rule.
        assert_eq!(listener_rules(&config), 8);
        assert_eq!(target_groups(&config), 8);
    }

    #[test]
    fn every_quota_has_one_row_with_an_aws_code() {
        for q in &QUOTAS {
            assert_eq!(q.key.quota().quota_code, q.quota_code);
            assert!(q.quota_code.starts_with("L-") && q.default > 0.0, "{q:?}");
        }
    }

    #[test]
    fn fargate_tasks_split_by_base_and_weights() {
        let config = Config::default();
        let (od, spot) = fargate_split(&config, 2);
        assert!((od - 1.2).abs() < 1e-9 && (spot - 0.8).abs() < 1e-9, "{od} {spot}");
        assert_eq!(fargate_split(&config, 0), (0.0, 0.0));
    }
}
