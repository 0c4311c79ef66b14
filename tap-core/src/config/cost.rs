//! The monthly cost estimate's settings (`[cost]`): its assumptions and negotiated prices. Only
//! the `tap` binary reads them (`tap cost`, and the cost of plan and deploy).

use super::*;

/// The monthly cost estimate (`tap cost`, and the `cost` of plan and deploy): what it assumes
/// and the prices that replace the built-in list prices.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CostSettings {
    /// Log data each service writes per day, GB: log storage is this × the retention.
    pub log_gb_per_day: f64,
    /// Negotiated prices, USD; each one left unset keeps the built-in list price.
    pub prices: PriceOverrides,
}

impl Default for CostSettings {
    fn default() -> Self {
        CostSettings { log_gb_per_day: 0.1, prices: PriceOverrides::default() }
    }
}

/// Prices (USD) that replace the built-in list prices, e.g. negotiated rates.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PriceOverrides {
    /// A NAT gateway, per hour.
    pub nat_gateway_hour: Option<f64>,
    /// A public IPv4 address (Elastic IP or the load balancer's), per hour.
    pub public_ipv4_hour: Option<f64>,
    /// An application load balancer, per hour (LCUs not included).
    pub load_balancer_hour: Option<f64>,
    /// Fargate (on demand), per vCPU-hour.
    pub fargate_vcpu_hour: Option<f64>,
    /// Fargate (on demand), per GB-hour of memory.
    pub fargate_gb_hour: Option<f64>,
    /// Fargate Spot, per vCPU-hour.
    pub fargate_spot_vcpu_hour: Option<f64>,
    /// Fargate Spot, per GB-hour of memory.
    pub fargate_spot_gb_hour: Option<f64>,
    /// A Secrets Manager secret, per month.
    pub secret_month: Option<f64>,
    /// CloudWatch Logs storage, per GB-month.
    pub log_storage_gb_month: Option<f64>,
    /// A Route 53 hosted zone (the Cloud Map namespace's), per month.
    pub hosted_zone_month: Option<f64>,
    /// A Cloud Map registered instance, per month.
    pub cloud_map_instance_month: Option<f64>,
    /// A standard-resolution CloudWatch alarm, per metric it evaluates, per month.
    pub alarm_metric_month: Option<f64>,
}

impl PriceOverrides {
    /// Each price by its config key (`nat_gateway_hour`, …).
    pub fn entries(&self) -> [(&'static str, Option<f64>); 12] {
        [
            ("nat_gateway_hour", self.nat_gateway_hour),
            ("public_ipv4_hour", self.public_ipv4_hour),
            ("load_balancer_hour", self.load_balancer_hour),
            ("fargate_vcpu_hour", self.fargate_vcpu_hour),
            ("fargate_gb_hour", self.fargate_gb_hour),
            ("fargate_spot_vcpu_hour", self.fargate_spot_vcpu_hour),
            ("fargate_spot_gb_hour", self.fargate_spot_gb_hour),
            ("secret_month", self.secret_month),
            ("log_storage_gb_month", self.log_storage_gb_month),
            ("hosted_zone_month", self.hosted_zone_month),
            ("cloud_map_instance_month", self.cloud_map_instance_month),
            ("alarm_metric_month", self.alarm_metric_month),
        ]
    }
}

impl Config {
    pub(super) fn validate_cost(&self, p: &mut Vec<ConfigError>) {
        let c = &self.cost;
        if !(c.log_gb_per_day.is_finite() && c.log_gb_per_day >= 0.0) {
            p.push(invalid("cost.log_gb_per_day", c.log_gb_per_day, "must be a number of GB, 0 or more"));
        }
        for (key, price) in c.prices.entries() {
            if let Some(v) = price {
                if !(v.is_finite() && v >= 0.0) {
                    p.push(invalid(format!("cost.prices.{key}"), v, "must be a price in USD, 0 or more"));
                }
            }
        }
    }
}
