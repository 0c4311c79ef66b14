//! `tap list`: the environments tap manages in the region, found by their tags — every
//! environment has a VPC tagged `ManagedBy=tap` and `Environment=<suffix>` — each with when it
//! was created, its services and its monthly estimate from what was found.
//!
//! A VPC carries no creation time, so "created" is the earliest creation time AWS reports for the
//! environment's NAT gateways, load balancer and ECS services. The estimate prices what the reads
//! find (NAT gateways, Elastic IPs, the load balancer and its zones, each ECS service's task size,
//! desired count and capacity strategy, secrets, log groups at their retention, the Cloud Map
//! namespace and its instances, the CloudWatch alarms per metric), with the local configuration's
//! `cost` settings. Alarms are told apart by name (`tap-{s}-…`, the longest suffix found wins)
//! rather than by one tag read each.

use std::collections::BTreeMap;

use anyhow::Result;
use aws_sdk_ec2::types::{Filter, NatGatewayState};
use serde_json::{json, Value};
use tap_alarms::AlarmsApi as _;
use tap_core::aws::AwsSession;
use tap_core::naming::{PROJECT, TAG_ENVIRONMENT, TAG_MANAGED_BY};
use tap_core::{AwsError, Config, StepError};

use crate::cost::{self, Billable, Part, Prices, Strategy};

/// Every item (`items`) or every page (`pages`) of a paginated SDK listing; an error names the
/// resources and the operation (see [`aws`]).
macro_rules! listed {
    (items $request:expr, $what:literal, $op:literal) => {
        $request.into_paginator().items().send().try_collect().await.map_err(aws($what, $op))?
    };
    (pages $request:expr, $what:literal, $op:literal) => {
        $request.into_paginator().send().try_collect().await.map_err(aws($what, $op))?
    };
}

/// One environment found in the region.
#[derive(Debug, Clone, PartialEq)]
pub struct Environment {
    /// Its suffix.
    pub name: String,
    /// VPC id.
    pub vpc_id: String,
    /// Earliest creation time found, RFC 3339.
    pub created: Option<String>,
    /// Its services (tap's names without `tap-` and the suffix).
    pub services: Vec<String>,
    /// What the reads found, priced.
    pub parts: Vec<Part>,
}

fn aws<E: Into<AwsError>>(resource: &str, action: &'static str) -> impl FnOnce(E) -> StepError {
    StepError::aws(format!("list/{resource}"), action)
}

fn managed_filter() -> Filter {
    Filter::builder().name(format!("tag:{TAG_MANAGED_BY}")).values(PROJECT).build()
}

fn tag<'a>(tags: impl IntoIterator<Item = (Option<&'a str>, Option<&'a str>)>, key: &str) -> Option<&'a str> {
    tags.into_iter().find(|(k, _)| *k == Some(key)).and_then(|(_, v)| v)
}

/// The clients `tap list` reads with.
struct Clients {
    ec2: aws_sdk_ec2::Client,
    ecs: aws_sdk_ecs::Client,
    elbv2: aws_sdk_elasticloadbalancingv2::Client,
    secrets: aws_sdk_secretsmanager::Client,
    logs: aws_sdk_cloudwatchlogs::Client,
    servicediscovery: aws_sdk_servicediscovery::Client,
}

/// Every environment of the region, by name.
pub async fn environments(session: &AwsSession, config: &Config) -> Result<Vec<Environment>> {
    let clients = &Clients {
        ec2: tap_core::sdk_client!(aws_sdk_ec2, session),
        ecs: tap_core::sdk_client!(aws_sdk_ecs, session),
        elbv2: tap_core::sdk_client!(aws_sdk_elasticloadbalancingv2, session),
        secrets: tap_core::sdk_client!(aws_sdk_secretsmanager, session),
        logs: tap_core::sdk_client!(aws_sdk_cloudwatchlogs, session),
        servicediscovery: tap_core::sdk_client!(aws_sdk_servicediscovery, session),
    };
    let ec2 = &clients.ec2;
    let vpcs: Vec<_> = listed!(items ec2.describe_vpcs().filters(managed_filter()), "vpcs", "DescribeVpcs");
    let mut found: BTreeMap<String, Environment> = BTreeMap::new();
    for vpc in &vpcs {
        let tags = vpc.tags().iter().map(|t| (t.key(), t.value()));
        if let Some(env) = tag(tags, TAG_ENVIRONMENT) {
            found.entry(env.to_owned()).or_insert_with(|| Environment {
                name: env.to_owned(),
                vpc_id: vpc.vpc_id().unwrap_or_default().to_owned(),
                created: None,
                services: vec![],
                parts: vec![],
            });
        }
    }
    if found.is_empty() {
        return Ok(vec![]);
    }
    let mut created: BTreeMap<String, Vec<aws_sdk_ec2::primitives::DateTime>> = BTreeMap::new();

    let nats: Vec<_> =
        listed!(items ec2.describe_nat_gateways().filter(managed_filter()), "nat-gateways", "DescribeNatGateways");
    for nat in nats.iter().filter(|n| {
        !matches!(n.state(), Some(NatGatewayState::Deleted | NatGatewayState::Deleting | NatGatewayState::Failed))
    }) {
        let Some(env) = tag(nat.tags().iter().map(|t| (t.key(), t.value())), TAG_ENVIRONMENT) else { continue };
        let Some(e) = found.get_mut(env) else { continue };
        e.parts.push(Part {
            resource: format!("network/nat/{}", nat.nat_gateway_id().unwrap_or_default()),
            billable: Billable::NatGateway,
        });
        if let Some(t) = nat.create_time() {
            created.entry(env.to_owned()).or_default().push(*t);
        }
    }
    let addresses = ec2
        .describe_addresses()
        .filters(managed_filter())
        .send()
        .await
        .map_err(aws("elastic-ips", "DescribeAddresses"))?;
    for address in addresses.addresses() {
        let Some(env) = tag(address.tags().iter().map(|t| (t.key(), t.value())), TAG_ENVIRONMENT) else { continue };
        if let Some(e) = found.get_mut(env) {
            let id = address.allocation_id().unwrap_or_default();
            e.parts.push(Part { resource: format!("network/eip/{id}"), billable: Billable::PublicIpv4 { count: 1 } });
        }
    }

    let lbs: Vec<_> = listed!(items clients.elbv2.describe_load_balancers(), "load-balancers", "DescribeLoadBalancers");
    for e in found.values_mut() {
        let name = format!("tap-alb-{}", e.name);
        if let Some(lb) = lbs.iter().find(|l| l.load_balancer_name() == Some(name.as_str())) {
            let zones = lb.availability_zones().len().max(1) as u32;
            e.parts.push(Part { resource: "ingress/load-balancer".into(), billable: Billable::LoadBalancer });
            e.parts.push(Part {
                resource: "ingress/load-balancer".into(),
                billable: Billable::PublicIpv4 { count: zones },
            });
            if let Some(t) = lb.created_time() {
                created.entry(e.name.clone()).or_default().push(*t);
            }
        }
    }

    let secrets: Vec<_> = listed!(pages clients.secrets.list_secrets(), "secrets", "ListSecrets");
    for secret in secrets.iter().flat_map(|p| p.secret_list()).filter(|s| s.deleted_date().is_none()) {
        let tags: Vec<_> = secret.tags().iter().map(|t| (t.key(), t.value())).collect();
        if tag(tags.iter().copied(), TAG_MANAGED_BY) != Some(PROJECT) {
            continue;
        }
        let Some(env) = tag(tags.iter().copied(), TAG_ENVIRONMENT) else { continue };
        if let Some(e) = found.get_mut(env) {
            let name = secret.name().unwrap_or_default();
            e.parts.push(Part { resource: format!("security/secret/{name}"), billable: Billable::Secret });
        }
    }

    let groups: Vec<_> = listed!(items clients.logs.describe_log_groups().log_group_name_prefix("/ecs/tap-"), "log-groups", "DescribeLogGroups");
    let namespaces: Vec<_> = listed!(pages clients.servicediscovery.list_namespaces(), "namespaces", "ListNamespaces");
    let namespace_names: Vec<&str> = namespaces.iter().flat_map(|p| p.namespaces()).filter_map(|n| n.name()).collect();

    let alarms = tap_alarms::SdkAlarms::from_session(session)
        .list_alarms("tap-")
        .await
        .map_err(aws("alarms", "DescribeAlarms"))?;
    for alarm in &alarms {
        let env = found.keys().filter(|env| alarm.name.starts_with(&format!("tap-{env}-"))).max_by_key(|env| env.len());
        if let Some(e) = env.cloned().and_then(|env| found.get_mut(&env)) {
            let metrics = alarm.metric.as_ref().map_or(1, |m| m.metric_count()) as u32;
            e.parts.push(Part { resource: format!("alarms/{}", alarm.name), billable: Billable::Alarm { metrics } });
        }
    }

    for e in found.values_mut() {
        let cluster = format!("tap-cluster-{}", e.name);
        let arns: Vec<String> =
            match clients.ecs.list_services().cluster(&cluster).into_paginator().items().send().try_collect().await {
                Ok(arns) => arns,
                Err(err) => {
                    let err = AwsError::from(err);
                    if err.is("ClusterNotFoundException") || err.is_not_found() {
                        vec![]
                    } else {
                        return Err(aws("ecs-services", "ListServices")(err).into());
                    }
                }
            };
        let mut services = Vec::new();
        for chunk in arns.chunks(10) {
            let out = clients
                .ecs
                .describe_services()
                .cluster(&cluster)
                .set_services(Some(chunk.to_vec()))
                .send()
                .await
                .map_err(aws("ecs-services", "DescribeServices"))?;
            services.extend(out.services().iter().filter(|s| s.status() == Some("ACTIVE")).cloned());
        }
        let suffix = format!("-{}", e.name);
        for s in &services {
            let full = s.service_name().unwrap_or_default();
            let name =
                full.strip_prefix("tap-").and_then(|n| n.strip_suffix(suffix.as_str())).unwrap_or(full).to_owned();
            if let Some(t) = s.created_at() {
                created.entry(e.name.clone()).or_default().push(*t);
            }
            let count = s.desired_count().max(0) as u32;
            let strategy = s.capacity_provider_strategy();
            let strategy = if strategy.is_empty() {
                Strategy { base: count, on_demand_weight: 1, spot_weight: 0 }
            } else {
                let mut st = Strategy { base: 0, on_demand_weight: 0, spot_weight: 0 };
                for item in strategy {
                    let weight = item.weight().max(0) as u32;
                    match item.capacity_provider() {
                        "FARGATE_SPOT" => st.spot_weight = weight,
                        _ => {
                            st.base += item.base().max(0) as u32;
                            st.on_demand_weight = weight;
                        }
                    }
                }
                st
            };
            let (mut cpu, mut memory) = (0, 0);
            if let Some(td) = s.task_definition() {
                let out = clients
                    .ecs
                    .describe_task_definition()
                    .task_definition(td)
                    .send()
                    .await
                    .map_err(aws("task-definitions", "DescribeTaskDefinition"))?;
                if let Some(def) = out.task_definition() {
                    cpu = def.cpu().and_then(|c| c.parse().ok()).unwrap_or(0);
                    memory = def.memory().and_then(|m| m.parse().ok()).unwrap_or(0);
                }
            }
            let (on_demand, spot) = strategy.split(count);
            e.parts.push(Part {
                resource: format!("services/ecs-service/{name}"),
                billable: Billable::Tasks { cpu, memory, on_demand, spot },
            });
            if !s.service_registries().is_empty() {
                e.parts.push(Part {
                    resource: format!("discovery/service/{name}"),
                    billable: Billable::CloudMapInstances { count },
                });
            }
            let group_name = format!("/ecs/tap-{name}-{}", e.name);
            if let Some(group) = groups.iter().find(|g| g.log_group_name() == Some(group_name.as_str())) {
                e.parts.push(Part {
                    resource: format!("services/log-group/{name}"),
                    billable: Billable::LogStorage {
                        // A group without retention keeps its data forever: priced at ten years.
                        retention_days: group.retention_in_days().unwrap_or(3653),
                        gb_per_day: config.cost.log_gb_per_day,
                    },
                });
            }
            e.services.push(name);
        }
        e.services.sort();
        if namespace_names.contains(&format!("tap-{}.local", e.name).as_str()) {
            e.parts.push(Part { resource: "discovery/namespace".into(), billable: Billable::HostedZone });
        }
        e.created = created
            .get(&e.name)
            .and_then(|times| times.iter().min_by_key(|t| (t.secs(), t.subsec_nanos())))
            .and_then(|t| t.fmt(aws_sdk_ec2::primitives::DateTimeFormat::DateTime).ok());
    }
    Ok(found.into_values().collect())
}

/// The monthly estimate of an environment found by [`environments`].
pub fn monthly(e: &Environment, config: &Config) -> f64 {
    cost::total(&cost::items(&e.parts, &Prices::with_overrides(&config.cost.prices)))
}

/// `tap list --output json`.
pub fn to_json(region: &str, config: &Config, environments: &[Environment]) -> Value {
    let overridden = config.cost.prices.entries().iter().any(|(_, v)| v.is_some());
    json!({
        "region": region,
        "currency": cost::CURRENCY,
        "prices": cost::source_note(region, overridden),
        "environments": environments.iter().map(|e| json!({
            "environment": e.name,
            "vpc_id": e.vpc_id,
            "created": e.created,
            "services": e.services,
            "monthly": cost::cents(monthly(e, config)),
        })).collect::<Vec<_>>(),
    })
}

/// `tap list` as a table.
pub fn to_text(region: &str, config: &Config, environments: &[Environment]) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    if environments.is_empty() {
        let _ = writeln!(out, "No environments managed by tap in {region}.");
        return out;
    }
    let width = environments.iter().map(|e| e.name.len()).max().unwrap_or(0).max("ENVIRONMENT".len());
    let _ = writeln!(out, "{:<width$}  {:<20}  {:>12}  SERVICES", "ENVIRONMENT", "CREATED", "USD/MONTH");
    for e in environments {
        let created = e.created.as_deref().unwrap_or("-");
        let _ = writeln!(
            out,
            "{:<width$}  {:<20}  {:>12.2}  {}",
            e.name,
            created,
            monthly(e, config),
            if e.services.is_empty() { "-".to_owned() } else { e.services.join(", ") }
        );
    }
    let _ = writeln!(
        out,
        "{} environment{} in {region}; estimate from what exists ({}; traffic not included).",
        environments.len(),
        if environments.len() == 1 { "" } else { "s" },
        cost::source_note(region, config.cost.prices.entries().iter().any(|(_, v)| v.is_some()))
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str, parts: Vec<Part>) -> Environment {
        Environment {
            name: name.into(),
            vpc_id: "vpc-1".into(),
            created: Some("2026-12-06T20:00:00Z".into()),
            services: vec!["api".into(), "web".into()],
            parts,
        }
    }

    #[test]
    fn lists_each_environment_with_its_estimate() {
        let config = Config::default();
        let nat = Part { resource: "network/nat/nat-1".into(), billable: Billable::NatGateway };
        let envs = vec![env("a", vec![nat.clone()]), env("b", vec![nat.clone(), nat])];
        let doc = to_json("us-east-1", &config, &envs);
        assert_eq!(doc["environments"][0]["monthly"], json!(32.85));
        assert_eq!(doc["environments"][1]["monthly"], json!(65.7));
        assert_eq!(doc["environments"][1]["services"], json!(["api", "web"]));
        let text = to_text("us-east-1", &config, &envs);
        assert!(text.lines().nth(1).unwrap().starts_with("a "), "{text}");
        assert!(text.contains("65.70") && text.contains("api, web"), "{text}");
        assert!(text.contains("2 environments in us-east-1"), "{text}");
        assert_eq!(to_text("us-east-1", &config, &[]), "No environments managed by tap in us-east-1.\n");
    }
}
