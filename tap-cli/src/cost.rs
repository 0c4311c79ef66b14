//! The monthly cost estimate of an environment: a pricing table kept in the code and an estimator
//! over what tap creates. No AWS call and no AWS type: what exists comes in as [`Billable`]
//! resources (from the configuration, from a plan's changes, or from `tap list`'s reads).
//!
//! The table holds AWS's published us-east-1 list prices (USD) as of [`PRICES_AS_OF`]; us-east-2
//! and us-west-2 have the same prices for these items. In any other region the figures are
//! us-east-1's and the estimate says so. `cost.prices.*` replaces any price (negotiated rates).
//! A month is [`HOURS_PER_MONTH`] hours.
//!
//! Priced: NAT gateway hours, public IPv4 addresses (the NAT gateways' Elastic IPs and one per
//! zone for the internet-facing load balancer), load balancer hours, Fargate and Fargate Spot vCPU
//! and GB hours of each service's tasks at its desired count split by the capacity strategy,
//! Secrets Manager secrets, CloudWatch Logs storage at the retention, the Cloud Map namespace's
//! hosted zone and its registered instances, and the services' CloudWatch alarms (per metric
//! each evaluates). Everything driven by traffic is named in
//! [`NOT_INCLUDED`] instead.
//!
//! A module of the binary rather than a crate of its own: its only user is `tap`, and a crate
//! over `tap-core` (for `Config` and `Change`) would not be free of AWS anyway, since `tap-core`
//! carries the SDK clients; the module keeps to plain data, so moving it out later is a copy.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use serde::Serialize;
use serde_json::{json, Value};
use tap_core::config::PriceOverrides;
use tap_core::{Action, Change, Config};

/// When the list prices were taken.
pub const PRICES_AS_OF: &str = "2024-06";
/// The region whose list prices the table holds.
pub const PRICES_REGION: &str = "us-east-1";
/// Regions whose list prices for these items are the table's.
pub const LIST_PRICE_REGIONS: &[&str] = &["us-east-1", "us-east-2", "us-west-2"];
/// Hours in a month, as AWS's own calculator counts them.
pub const HOURS_PER_MONTH: f64 = 730.0;
/// The currency of every figure.
pub const CURRENCY: &str = "USD";

/// What the estimate leaves out: it depends on traffic or on what is stored, not on what tap
/// creates.
pub const NOT_INCLUDED: &[&str] = &[
    "NAT gateway data processing ($0.045/GB)",
    "load balancer capacity units (LCU, $0.008/LCU-hour, driven by traffic)",
    "data transfer out to the internet and between zones",
    "CloudWatch Logs ingestion ($0.50/GB)",
    "ECR image storage ($0.10/GB-month) and scanning",
    "Cloud Map and Route 53 DNS queries",
    "tasks added by auto scaling above the desired count",
    "Container Insights metrics, when enabled",
    "S3 storage and requests of the trade-data bucket",
];

/// Prices, USD.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Prices {
    /// NAT gateway, per hour.
    pub nat_gateway_hour: f64,
    /// Public IPv4 address, per hour.
    pub public_ipv4_hour: f64,
    /// Application load balancer, per hour.
    pub load_balancer_hour: f64,
    /// Fargate Linux/x86, per vCPU-hour.
    pub fargate_vcpu_hour: f64,
    /// Fargate Linux/x86, per GB-hour.
    pub fargate_gb_hour: f64,
    /// Fargate Spot, per vCPU-hour.
    pub fargate_spot_vcpu_hour: f64,
    /// Fargate Spot, per GB-hour.
    pub fargate_spot_gb_hour: f64,
    /// Secrets Manager secret, per month.
    pub secret_month: f64,
    /// CloudWatch Logs storage, per GB-month.
    pub log_storage_gb_month: f64,
    /// Route 53 hosted zone, per month.
    pub hosted_zone_month: f64,
    /// Cloud Map registered instance, per month.
    pub cloud_map_instance_month: f64,
    /// Standard-resolution CloudWatch alarm, per metric, per month.
    pub alarm_metric_month: f64,
}

impl Prices {
    /// The us-east-1 list prices. Fargate Spot has no list price (it follows spare capacity); the
    /// table takes it as 70 % below on demand, about what it has been.
    pub const LIST: Prices = Prices {
        nat_gateway_hour: 0.045,
        public_ipv4_hour: 0.005,
        load_balancer_hour: 0.0225,
        fargate_vcpu_hour: 0.04048,
        fargate_gb_hour: 0.004445,
        fargate_spot_vcpu_hour: 0.04048 * 0.3,
        fargate_spot_gb_hour: 0.004445 * 0.3,
        secret_month: 0.40,
        log_storage_gb_month: 0.03,
        hosted_zone_month: 0.50,
        cloud_map_instance_month: 0.10,
        alarm_metric_month: 0.10,
    };

    /// The list prices with the configured ones in their place.
    pub fn with_overrides(o: &PriceOverrides) -> Prices {
        let l = Prices::LIST;
        Prices {
            nat_gateway_hour: o.nat_gateway_hour.unwrap_or(l.nat_gateway_hour),
            public_ipv4_hour: o.public_ipv4_hour.unwrap_or(l.public_ipv4_hour),
            load_balancer_hour: o.load_balancer_hour.unwrap_or(l.load_balancer_hour),
            fargate_vcpu_hour: o.fargate_vcpu_hour.unwrap_or(l.fargate_vcpu_hour),
            fargate_gb_hour: o.fargate_gb_hour.unwrap_or(l.fargate_gb_hour),
            fargate_spot_vcpu_hour: o.fargate_spot_vcpu_hour.unwrap_or(l.fargate_spot_vcpu_hour),
            fargate_spot_gb_hour: o.fargate_spot_gb_hour.unwrap_or(l.fargate_spot_gb_hour),
            secret_month: o.secret_month.unwrap_or(l.secret_month),
            log_storage_gb_month: o.log_storage_gb_month.unwrap_or(l.log_storage_gb_month),
            hosted_zone_month: o.hosted_zone_month.unwrap_or(l.hosted_zone_month),
            cloud_map_instance_month: o.cloud_map_instance_month.unwrap_or(l.cloud_map_instance_month),
            alarm_metric_month: o.alarm_metric_month.unwrap_or(l.alarm_metric_month),
        }
    }
}

/// One thing that costs money by the hour or the month, whatever the traffic.
#[derive(Debug, Clone, PartialEq)]
pub enum Billable {
    /// A NAT gateway.
    NatGateway,
    /// Public IPv4 addresses.
    PublicIpv4 {
        /// How many.
        count: u32,
    },
    /// An application load balancer.
    LoadBalancer,
    /// A service's tasks.
    Tasks {
        /// CPU units per task.
        cpu: u32,
        /// Memory per task, MiB.
        memory: u32,
        /// Tasks on FARGATE (a fraction where the strategy splits them).
        on_demand: f64,
        /// Tasks on FARGATE_SPOT.
        spot: f64,
    },
    /// A Secrets Manager secret.
    Secret,
    /// A log group's stored data.
    LogStorage {
        /// Days kept.
        retention_days: i32,
        /// GB written a day.
        gb_per_day: f64,
    },
    /// A Route 53 hosted zone.
    HostedZone,
    /// Cloud Map registered instances.
    CloudMapInstances {
        /// How many.
        count: u32,
    },
    /// A CloudWatch alarm (standard resolution), billed per metric it evaluates.
    Alarm {
        /// Metrics it evaluates (one; two for a metric-math alarm over two target groups).
        metrics: u32,
    },
}

/// A billable part of a resource, by the resource's logical id (as in the plan's changes).
#[derive(Debug, Clone, PartialEq)]
pub struct Part {
    /// Logical id, e.g. `network/nat/1`.
    pub resource: String,
    /// What costs.
    pub billable: Billable,
}

impl Part {
    fn new(resource: impl Into<String>, billable: Billable) -> Part {
        Part { resource: resource.into(), billable }
    }
}

/// Where tasks run: the first `base` on FARGATE, the rest split by the weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Strategy {
    /// Tasks always on FARGATE.
    pub base: u32,
    /// FARGATE weight.
    pub on_demand_weight: u32,
    /// FARGATE_SPOT weight.
    pub spot_weight: u32,
}

impl Strategy {
    /// The cluster's default strategy from the config.
    pub fn of(config: &Config) -> Strategy {
        let c = &config.cluster;
        Strategy { base: c.on_demand_base, on_demand_weight: c.on_demand_weight, spot_weight: c.spot_weight }
    }

    /// (on demand, spot) tasks of `count`: the base first, the rest by weight (as fractions: the
    /// share ECS keeps over time, not one placement).
    pub fn split(self, count: u32) -> (f64, f64) {
        let base = count.min(self.base);
        let rest = f64::from(count - base);
        let weights = self.on_demand_weight + self.spot_weight;
        if weights == 0 {
            return (f64::from(count), 0.0);
        }
        let on_demand = rest * f64::from(self.on_demand_weight) / f64::from(weights);
        (f64::from(base) + on_demand, rest - on_demand)
    }

    /// Parses the cluster step's display of a strategy, e.g.
    /// `["FARGATE base=1 weight=1", "FARGATE_SPOT base=0 weight=4"]`.
    pub fn parse(shown: &str) -> Option<Strategy> {
        let mut s = Strategy { base: 0, on_demand_weight: 0, spot_weight: 0 };
        let mut any = false;
        for item in shown.trim_matches(['[', ']']).split(',') {
            let item = item.trim().trim_matches('"');
            let mut words = item.split_whitespace();
            let provider = words.next()?;
            let field = |name: &str| {
                item.split_whitespace().find_map(|w| w.strip_prefix(name)).and_then(|v| v.parse::<u32>().ok())
            };
            let (base, weight) = (field("base=")?, field("weight=")?);
            match provider {
                "FARGATE" => {
                    s.base += base;
                    s.on_demand_weight = weight;
                }
                "FARGATE_SPOT" => s.spot_weight = weight,
                _ => return None,
            }
            any = true;
        }
        any.then_some(s)
    }
}

/// The tasks a service runs: its desired count, and never fewer than auto scaling's minimum.
pub fn task_count(config: &Config, desired: i32) -> u32 {
    desired.max(config.scaling.min_capacity).max(0) as u32
}

/// What the configured environment is billed for, part by part.
pub fn parts(config: &Config) -> Vec<Part> {
    let mut out = Vec::new();
    let nats = match config.network.nat_gateways {
        tap_core::config::NatMode::OnePerAz => config.network.az_count,
        tap_core::config::NatMode::Single => 1,
    };
    for i in 1..=nats {
        out.push(Part::new(format!("network/nat/{i}"), Billable::NatGateway));
        out.push(Part::new(format!("network/eip/{i}"), Billable::PublicIpv4 { count: 1 }));
    }
    if config.services.iter().any(|s| s.route.is_some()) {
        out.push(Part::new("ingress/load-balancer", Billable::LoadBalancer));
        out.push(Part::new("ingress/load-balancer", Billable::PublicIpv4 { count: config.network.az_count as u32 }));
    }
    let strategy = Strategy::of(config);
    for s in &config.services {
        let count = task_count(config, s.desired_count);
        let (on_demand, spot) = strategy.split(count);
        let tasks = Billable::Tasks { cpu: s.cpu, memory: s.memory, on_demand, spot };
        out.push(Part::new(format!("services/ecs-service/{}", s.name), tasks));
        out.push(Part::new(format!("services/log-group/{}", s.name), log_storage(config)));
        if s.discovery {
            out.push(Part::new(format!("discovery/service/{}", s.name), Billable::CloudMapInstances { count }));
        }
    }
    if config.services.iter().any(|s| s.discovery) {
        out.push(Part::new("discovery/namespace", Billable::HostedZone));
    }
    if config.alarms.enabled {
        // CPU and memory for every service, the load balancer's two for routed ones (one metric
        // each; a traffic-shifting service's load balancer alarms evaluate two, not priced here).
        for s in &config.services {
            for what in ["cpu-high", "memory-high", "unhealthy-targets", "target-5xx"] {
                if s.route.is_some() || what.ends_with("-high") {
                    out.push(Part::new(format!("alarms/{what}/{}", s.name), Billable::Alarm { metrics: 1 }));
                }
            }
        }
    }
    for s in &config.secrets {
        out.push(Part::new(format!("security/secret/{}", s.name), Billable::Secret));
    }
    out
}

fn log_storage(config: &Config) -> Billable {
    Billable::LogStorage { retention_days: config.logs.retention_days, gb_per_day: config.cost.log_gb_per_day }
}

/// What existed before `changes` were made (or, for a plan, exists now), from what the config
/// wants (`after`) and the changes: what they create was not there, what they delete was (priced
/// by its kind), an updated task size or capacity strategy had its old value. A removed service's
/// tasks and Cloud Map instances cannot be priced from the changes (their size is no longer in
/// the configuration): they are returned as unpriced.
pub fn before(config: &Config, after: &[Part], changes: &[&Change]) -> (Vec<Part>, Vec<String>) {
    let created: BTreeSet<&str> =
        changes.iter().filter(|c| c.action == Action::Create).map(|c| c.resource.as_str()).collect();
    let old_strategy = changes
        .iter()
        .filter(|c| c.resource == "cluster/ecs-cluster" && c.action == Action::Update)
        .flat_map(|c| &c.attributes)
        .find(|a| a.attribute == "default_capacity_provider_strategy")
        .and_then(|a| a.old.as_deref().and_then(Strategy::parse));
    let mut out = Vec::new();
    for part in after.iter().filter(|p| !created.contains(p.resource.as_str())) {
        let mut part = part.clone();
        if let Billable::Tasks { cpu, memory, on_demand, spot } = &mut part.billable {
            let service = part.resource.trim_start_matches("services/ecs-service/");
            let definition = format!("services/task-definition/{service}");
            let old = |name: &str| {
                changes
                    .iter()
                    .filter(|c| c.resource == definition && c.action == Action::Update)
                    .flat_map(|c| &c.attributes)
                    .find(|a| a.attribute == name)
                    .and_then(|a| a.old.as_deref())
                    .and_then(|v| v.trim_matches(|c: char| !c.is_ascii_digit()).parse::<u32>().ok())
            };
            *cpu = old("cpu").unwrap_or(*cpu);
            *memory = old("memory").unwrap_or(*memory);
            if let Some(strategy) = old_strategy {
                let count = (*on_demand + *spot).round() as u32;
                (*on_demand, *spot) = strategy.split(count);
            }
        }
        out.push(part);
    }
    let mut unpriced = Vec::new();
    for c in changes.iter().filter(|c| c.action == Action::Delete) {
        let r = c.resource.as_str();
        let billable = if r.starts_with("network/nat/") {
            vec![Billable::NatGateway]
        } else if r.starts_with("network/eip/") {
            vec![Billable::PublicIpv4 { count: 1 }]
        } else if r == "ingress/load-balancer" {
            vec![Billable::LoadBalancer, Billable::PublicIpv4 { count: config.network.az_count as u32 }]
        } else if r.starts_with("security/secret/") {
            vec![Billable::Secret]
        } else if r.starts_with("services/log-group/") {
            vec![log_storage(config)]
        } else if r == "discovery/namespace" {
            vec![Billable::HostedZone]
        } else if r.starts_with("alarms/") {
            vec![Billable::Alarm { metrics: 1 }]
        } else if r.starts_with("services/ecs-service/") || r.starts_with("discovery/service/") {
            unpriced.push(format!("{r} (removed: its size is no longer in the configuration)"));
            vec![]
        } else {
            vec![]
        };
        out.extend(billable.into_iter().map(|b| Part::new(r, b)));
    }
    (out, unpriced)
}

/// One priced part.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Item {
    /// Logical id.
    pub resource: String,
    /// What is priced and how, e.g. `NAT gateway: 730 h × $0.045`.
    pub what: String,
    /// USD a month.
    pub monthly: f64,
}

/// The price of one part a month, and how it is made up.
pub fn price(part: &Part, p: &Prices) -> Item {
    let h = HOURS_PER_MONTH;
    let (what, monthly) = match &part.billable {
        Billable::NatGateway => (format!("NAT gateway: {h} h × ${}", p.nat_gateway_hour), h * p.nat_gateway_hour),
        Billable::PublicIpv4 { count } => (
            format!(
                "{count} public IPv4 address{}: {h} h × ${}",
                if *count == 1 { "" } else { "es" },
                p.public_ipv4_hour
            ),
            f64::from(*count) * h * p.public_ipv4_hour,
        ),
        Billable::LoadBalancer => {
            (format!("load balancer: {h} h × ${} (LCUs not included)", p.load_balancer_hour), h * p.load_balancer_hour)
        }
        Billable::Tasks { cpu, memory, on_demand, spot } => {
            let vcpu = f64::from(*cpu) / 1024.0;
            let gb = f64::from(*memory) / 1024.0;
            let on_demand_hour = vcpu * p.fargate_vcpu_hour + gb * p.fargate_gb_hour;
            let spot_hour = vcpu * p.fargate_spot_vcpu_hour + gb * p.fargate_spot_gb_hour;
            (
                format!(
                    "Fargate: {} tasks on demand + {} on Spot, {vcpu} vCPU / {gb} GB each",
                    short(*on_demand),
                    short(*spot)
                ),
                h * (on_demand * on_demand_hour + spot * spot_hour),
            )
        }
        Billable::Secret => (format!("secret: ${} a month", p.secret_month), p.secret_month),
        Billable::LogStorage { retention_days, gb_per_day } => {
            let gb = gb_per_day * f64::from(*retention_days);
            (
                format!(
                    "log storage: {} GB/day × {retention_days} days = {} GB × ${}",
                    short(*gb_per_day),
                    short(gb),
                    p.log_storage_gb_month
                ),
                gb * p.log_storage_gb_month,
            )
        }
        Billable::HostedZone => {
            (format!("Route 53 hosted zone: ${} a month", p.hosted_zone_month), p.hosted_zone_month)
        }
        Billable::CloudMapInstances { count } => (
            format!("{count} Cloud Map instances × ${}", p.cloud_map_instance_month),
            f64::from(*count) * p.cloud_map_instance_month,
        ),
        Billable::Alarm { metrics } => (
            format!(
                "CloudWatch alarm: {metrics} metric{} × ${} a month",
                if *metrics == 1 { "" } else { "s" },
                p.alarm_metric_month
            ),
            f64::from(*metrics) * p.alarm_metric_month,
        ),
    };
    Item { resource: part.resource.clone(), what, monthly }
}

/// A number without trailing zeros: `1.2`, `0.8`, `2`.
fn short(x: f64) -> String {
    let s = format!("{:.3}", x);
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// Rounded to cents.
pub fn cents(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// Every part priced.
pub fn items(parts: &[Part], prices: &Prices) -> Vec<Item> {
    parts.iter().map(|p| price(p, prices)).collect()
}

/// The sum (0, not -0, for no items: an empty f64 sum is -0.0).
pub fn total(items: &[Item]) -> f64 {
    items.iter().map(|i| i.monthly).sum::<f64>() + 0.0
}

/// Whether the table holds `region`'s own list prices.
pub fn has_list_prices(region: &str) -> bool {
    LIST_PRICE_REGIONS.contains(&region)
}

/// One line on where the prices come from.
pub fn source_note(region: &str, overridden: bool) -> String {
    let base = if has_list_prices(region) {
        format!("{region} list prices of {PRICES_AS_OF}")
    } else {
        format!(
            "{PRICES_REGION} list prices of {PRICES_AS_OF}; {region}'s own prices differ, so this is an approximation"
        )
    };
    if overridden {
        format!("{base}, with the configured cost.prices")
    } else {
        base
    }
}

/// The estimate of a plan or deploy: what exists before, what the config wants after.
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    /// Priced parts before.
    pub before: Vec<Item>,
    /// Priced parts after.
    pub after: Vec<Item>,
    /// Removed parts that could not be priced.
    pub unpriced: Vec<String>,
    /// Where the prices come from.
    pub source: String,
}

impl Comparison {
    /// Compares the configured environment with what `changes` show exists.
    pub fn of(config: &Config, region: &str, changes: &[&Change]) -> Comparison {
        let prices = Prices::with_overrides(&config.cost.prices);
        let after_parts = parts(config);
        let (before_parts, unpriced) = before(config, &after_parts, changes);
        let overridden = config.cost.prices.entries().iter().any(|(_, v)| v.is_some());
        Comparison {
            before: items(&before_parts, &prices),
            after: items(&after_parts, &prices),
            unpriced,
            source: source_note(region, overridden),
        }
    }

    /// Monthly total before.
    pub fn monthly_before(&self) -> f64 {
        total(&self.before)
    }

    /// Monthly total after.
    pub fn monthly_after(&self) -> f64 {
        total(&self.after)
    }

    /// The `cost` object of the plan and deploy documents.
    pub fn to_json(&self) -> Value {
        // One row per resource: its monthly cost after and before.
        let mut rows: Vec<(String, f64, f64)> = Vec::new();
        let mut add = |resource: &str, after: f64, before: f64| match rows.iter_mut().find(|r| r.0 == resource) {
            Some(row) => {
                row.1 += after;
                row.2 += before;
            }
            None => rows.push((resource.to_owned(), after, before)),
        };
        for i in &self.after {
            add(&i.resource, i.monthly, 0.0);
        }
        for i in &self.before {
            add(&i.resource, 0.0, i.monthly);
        }
        let (before, after) = (self.monthly_before(), self.monthly_after());
        json!({
            "currency": CURRENCY,
            "monthly_before": cents(before),
            "monthly_after": cents(after),
            "monthly_difference": cents(after - before),
            "prices": self.source,
            "prices_as_of": PRICES_AS_OF,
            "items": rows.iter().map(|(resource, after, before)| json!({
                "resource": resource,
                "monthly": cents(*after),
                "monthly_before": cents(*before),
            })).collect::<Vec<_>>(),
            "unpriced": self.unpriced,
            "not_included": NOT_INCLUDED,
        })
    }

    /// The line plan and deploy print above their totals: before → after, and the difference.
    pub fn line(&self) -> String {
        let (before, after) = (self.monthly_before(), self.monthly_after());
        let diff = cents(after - before);
        let sign = if diff > 0.0 {
            "+"
        } else if diff < 0.0 {
            "-"
        } else {
            "±"
        };
        let mut line = format!(
            "Cost: ${before:.2} → ${after:.2} a month ({sign}${:.2}); estimate from {}, traffic not included (`tap cost` itemizes).",
            diff.abs(),
            self.source
        );
        if !self.unpriced.is_empty() {
            let _ = write!(line, " Not priced: {}.", self.unpriced.join(", "));
        }
        line
    }
}

/// `tap cost`'s document: every priced part of the configured environment.
pub fn estimate_json(config: &Config, region: &str) -> Value {
    let prices = Prices::with_overrides(&config.cost.prices);
    let items = items(&parts(config), &prices);
    let overridden = config.cost.prices.entries().iter().any(|(_, v)| v.is_some());
    json!({
        "environment": config.environment,
        "region": region,
        "currency": CURRENCY,
        "monthly": cents(total(&items)),
        "prices": source_note(region, overridden),
        "prices_as_of": PRICES_AS_OF,
        "hours_per_month": HOURS_PER_MONTH,
        "price_table": prices,
        "items": items.iter().map(|i| json!({"resource": i.resource, "what": i.what, "monthly": cents(i.monthly)})).collect::<Vec<_>>(),
        "not_included": NOT_INCLUDED,
    })
}

/// `tap cost` as text: one line per priced part, the total, and what is left out.
pub fn estimate_text(config: &Config, region: &str) -> String {
    let prices = Prices::with_overrides(&config.cost.prices);
    let items = items(&parts(config), &prices);
    let overridden = config.cost.prices.entries().iter().any(|(_, v)| v.is_some());
    let width = items.iter().map(|i| i.resource.len()).max().unwrap_or(0);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Monthly estimate of environment `{}` in {region} ({CURRENCY}; {}; {HOURS_PER_MONTH} h a month):",
        config.environment,
        source_note(region, overridden)
    );
    for i in &items {
        let _ = writeln!(out, "  {:<width$}  {:>9.2}  {}", i.resource, i.monthly, i.what);
    }
    let _ = writeln!(out, "  {:<width$}  {:>9.2}", "total", total(&items));
    let _ = writeln!(out, "Not included: {}.", NOT_INCLUDED.join("; "));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use tap_core::config::NatMode;
    use tap_core::AttrChange;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 0.005
    }

    #[test]
    fn the_default_environment() {
        let c = Config::default();
        let items = items(&parts(&c), &Prices::LIST);
        let of = |r: &str| items.iter().filter(|i| i.resource == r).map(|i| i.monthly).sum::<f64>();
        assert!(close(of("network/nat/1"), 32.85), "730 h × $0.045");
        assert!(close(of("network/eip/3"), 3.65), "730 h × $0.005");
        assert!(close(of("ingress/load-balancer"), 16.425 + 10.95), "ALB hours + 3 public IPv4");
        // frontend: 0.5 vCPU / 1 GB; 2 tasks, base 1, then 1 : 4 → 1.2 on demand, 0.8 spot.
        let task_hour = 0.5 * 0.04048 + 1.0 * 0.004445;
        assert!(close(of("services/ecs-service/frontend"), 730.0 * task_hour * (1.2 + 0.8 * 0.3)));
        assert!(close(of("security/secret/db-credentials"), 0.40));
        assert!(close(of("services/log-group/api-gateway"), 0.1 * 30.0 * 0.03));
        assert!(close(of("discovery/namespace"), 0.50));
        assert!(close(of("discovery/service/processing-service"), 0.20));
        assert_eq!(items.iter().filter(|i| i.resource.starts_with("network/nat/")).count(), 3);
        let fargate = 730.0 * (0.02024 + 0.004445 + 0.04048 + 0.00889 + 0.08096 + 0.01778) * 1.44;
        assert!(close(of("alarms/target-5xx/frontend"), 0.10));
        assert_eq!(items.iter().filter(|i| i.resource.starts_with("alarms/")).count(), 10, "4 + 4 + 2");
        let expected = 3.0 * 32.85 + 3.0 * 3.65 + 16.425 + 10.95 + fargate + 0.8 + 3.0 * 0.09 + 0.5 + 0.2 + 1.0;
        assert!(close(total(&items), expected), "{} vs {expected}", total(&items));
    }

    #[test]
    fn strategy_split_and_parse() {
        let s = Strategy { base: 1, on_demand_weight: 1, spot_weight: 4 };
        assert_eq!(s.split(2), (1.2, 0.8));
        assert_eq!(s.split(0), (0.0, 0.0));
        assert_eq!(s.split(1), (1.0, 0.0));
        let (od, spot) = s.split(11);
        assert!(close(od, 3.0) && close(spot, 8.0));
        assert_eq!(Strategy { base: 0, on_demand_weight: 0, spot_weight: 1 }.split(4), (0.0, 4.0));
        assert_eq!(Strategy::parse(r#"["FARGATE base=1 weight=1", "FARGATE_SPOT base=0 weight=4"]"#), Some(s));
        assert_eq!(Strategy::parse("[]"), None);
        assert_eq!(Strategy::parse(r#"["EC2 base=0 weight=1"]"#), None);
    }

    #[test]
    fn switching_to_a_single_nat_saves_two_nats_and_two_addresses() {
        let config = Config {
            network: tap_core::config::NetworkSettings { nat_gateways: NatMode::Single, ..Default::default() },
            ..Config::default()
        };
        let changes = [
            Change::delete("network/nat/2", "nat-2"),
            Change::delete("network/nat/3", "nat-3"),
            Change::delete("network/eip/2", "eipalloc-2"),
            Change::delete("network/eip/3", "eipalloc-3"),
            Change::update("network/route-table/private-2", "rt", vec![]),
        ];
        let refs: Vec<&Change> = changes.iter().collect();
        let cmp = Comparison::of(&config, "us-east-1", &refs);
        let saving = cmp.monthly_before() - cmp.monthly_after();
        assert!(close(saving, 2.0 * 0.045 * 730.0 + 2.0 * 0.005 * 730.0), "{saving}");
        let doc = cmp.to_json();
        assert_eq!(doc["currency"], "USD");
        assert_eq!(doc["monthly_difference"], json!(-73.0));
        let nat2 = doc["items"].as_array().unwrap().iter().find(|i| i["resource"] == "network/nat/2").unwrap();
        assert_eq!((nat2["monthly"].as_f64(), nat2["monthly_before"].as_f64()), (Some(0.0), Some(32.85)));
        assert!(cmp.line().contains("(-$73.00)"), "{}", cmp.line());
    }

    #[test]
    fn before_a_first_deploy_nothing_exists() {
        let config = Config::default();
        let after = parts(&config);
        let mut changes: Vec<Change> = after.iter().map(|p| Change::create(&p.resource, "x")).collect();
        changes.push(Change::create("network/vpc", "vpc"));
        let refs: Vec<&Change> = changes.iter().collect();
        let cmp = Comparison::of(&config, "us-east-1", &refs);
        assert_eq!(cmp.monthly_before(), 0.0);
        assert!(cmp.monthly_before().is_sign_positive(), "shown as $0.00, not $-0.00");
        assert!(cmp.line().starts_with("Cost: $0.00 → $321.29 a month (+$321.29)"), "{}", cmp.line());
        assert_eq!(cmp.to_json()["monthly_before"].to_string(), "0.0");
        assert!(cmp.monthly_after() > 300.0);
        // Converged: nothing changes, before is after.
        let same = Comparison::of(&config, "us-east-1", &[]);
        assert_eq!(same.monthly_before(), same.monthly_after());
    }

    #[test]
    fn before_keeps_old_task_sizes_and_strategy_and_prices_deletions() {
        let config = Config::default();
        let td = Change::update(
            "services/task-definition/frontend",
            "tap-frontend-dev",
            vec![AttrChange::new("cpu", Some("\"256\"".into()), Some("\"512\"".into()))],
        );
        let cluster = Change::update(
            "cluster/ecs-cluster",
            "tap-cluster-dev",
            vec![AttrChange::new(
                "default_capacity_provider_strategy",
                Some(r#"["FARGATE base=2 weight=1"]"#.into()),
                Some(r#"["FARGATE base=1 weight=1", "FARGATE_SPOT base=0 weight=4"]"#.into()),
            )],
        );
        let gone = Change::delete("security/secret/old", "tap-old-dev");
        let removed = Change::delete("services/ecs-service/reports", "tap-reports-dev");
        let (parts_before, unpriced) = before(&config, &parts(&config), &[&td, &cluster, &gone, &removed]);
        let frontend = parts_before.iter().find(|p| p.resource == "services/ecs-service/frontend").unwrap();
        assert_eq!(frontend.billable, Billable::Tasks { cpu: 256, memory: 1024, on_demand: 2.0, spot: 0.0 });
        assert!(parts_before.iter().any(|p| p.resource == "security/secret/old" && p.billable == Billable::Secret));
        assert_eq!(unpriced.len(), 1);
        assert!(unpriced[0].starts_with("services/ecs-service/reports"));
    }

    #[test]
    fn negotiated_prices_replace_the_list() {
        let mut config = Config::default();
        config.cost.prices.nat_gateway_hour = Some(0.03);
        let cmp = Comparison::of(&config, "eu-west-1", &[]);
        let nat = cmp.after.iter().find(|i| i.resource == "network/nat/1").unwrap();
        assert!(close(nat.monthly, 21.9));
        assert!(cmp.source.contains("us-east-1 list prices") && cmp.source.contains("approximation"), "{}", cmp.source);
        assert!(cmp.source.contains("cost.prices"));
        assert!(!source_note("us-west-2", false).contains("approximation"));
    }

    #[test]
    fn alarms_are_priced_per_metric_with_their_override_and_go_when_disabled() {
        let mut config = Config::default();
        config.cost.prices.alarm_metric_month = Some(0.25);
        let cmp = Comparison::of(&config, "us-east-1", &[]);
        let alarms: f64 = cmp.after.iter().filter(|i| i.resource.starts_with("alarms/")).map(|i| i.monthly).sum();
        assert!(close(alarms, 2.5), "10 alarms × $0.25: {alarms}");
        config.alarms.enabled = false;
        assert!(!parts(&config).iter().any(|p| p.resource.starts_with("alarms/")));
        // A pruned alarm was priced before.
        let gone = Change::delete("alarms/cpu-high/reports", "tap-dev-reports-cpu-high");
        let (before_parts, unpriced) = before(&config, &parts(&config), &[&gone]);
        assert!(before_parts.iter().any(|p| p.billable == Billable::Alarm { metrics: 1 }) && unpriced.is_empty());
    }

    #[test]
    fn cost_text_lists_every_part_and_the_total() {
        let text = estimate_text(&Config::default(), "us-east-1");
        assert!(text.contains("network/nat/3") && text.contains("services/ecs-service/processing-service"), "{text}");
        assert!(text.lines().any(|l| l.trim_start().starts_with("total")), "{text}");
        assert!(text.contains("Not included:"));
        let doc = estimate_json(&Config::default(), "us-east-1");
        assert_eq!(doc["currency"], "USD");
        assert!(doc["monthly"].as_f64().unwrap() > 300.0);
    }
}
