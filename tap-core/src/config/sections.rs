//! The small per-concern sections: `[registry]`, `[cluster]`, `[ingress]`, `[discovery]`,
//! `[logs]` and `[scaling]`, and the rules they are validated against.

use super::*;

/// ECR settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistrySettings {
    /// How many images the lifecycle policy keeps.
    pub keep_images: u32,
    /// Scan images on push.
    pub scan_on_push: bool,
    /// Image tags cannot be overwritten.
    pub immutable_tags: bool,
}

/// ECS cluster settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterSettings {
    /// CloudWatch Container Insights.
    pub container_insights: bool,
    /// Tasks always placed on on-demand FARGATE before weights apply.
    pub on_demand_base: u32,
    /// Weight of FARGATE in the default strategy.
    pub on_demand_weight: u32,
    /// Weight of FARGATE_SPOT in the default strategy.
    pub spot_weight: u32,
}

/// Load balancer settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngressSettings {
    /// ACM certificate ARN; when set, HTTPS :443 serves the routes and :80 redirects to it.
    pub certificate_arn: Option<String>,
    /// Consecutive successes before a target is healthy.
    pub healthy_threshold: i32,
    /// Consecutive failures before a target is unhealthy.
    pub unhealthy_threshold: i32,
    /// Seconds between health checks.
    pub health_check_interval: i32,
    /// Seconds a target group lets a deregistering target drain (AWS's default of 300 holds
    /// every rollout and service deletion for minutes).
    pub deregistration_delay_seconds: i32,
}

/// Cloud Map settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DiscoverySettings {
    /// TTL of the A records, seconds.
    pub dns_ttl: i64,
    /// Failures before Cloud Map marks an instance unhealthy (custom health check).
    pub failure_threshold: i32,
}

/// CloudWatch Logs settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSettings {
    /// Retention of every service's log group, days (a value CloudWatch accepts).
    pub retention_days: i32,
}

/// Auto scaling of every service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScalingSettings {
    /// Minimum tasks.
    pub min_capacity: i32,
    /// Maximum tasks.
    pub max_capacity: i32,
    /// Target average CPU utilization, percent.
    pub cpu_target: f64,
    /// Seconds between scale-in activities.
    pub scale_in_cooldown: i32,
    /// Seconds between scale-out activities.
    pub scale_out_cooldown: i32,
}

impl Default for RegistrySettings {
    fn default() -> Self {
        RegistrySettings { keep_images: 10, scan_on_push: true, immutable_tags: true }
    }
}

impl Default for ClusterSettings {
    fn default() -> Self {
        ClusterSettings { container_insights: false, on_demand_base: 1, on_demand_weight: 1, spot_weight: 4 }
    }
}

impl Default for IngressSettings {
    fn default() -> Self {
        IngressSettings {
            certificate_arn: None,
            healthy_threshold: 2,
            unhealthy_threshold: 3,
            health_check_interval: 30,
            deregistration_delay_seconds: 30,
        }
    }
}

impl Default for DiscoverySettings {
    fn default() -> Self {
        DiscoverySettings { dns_ttl: 10, failure_threshold: 1 }
    }
}

impl Default for LogSettings {
    fn default() -> Self {
        LogSettings { retention_days: 30 }
    }
}

impl Default for ScalingSettings {
    fn default() -> Self {
        ScalingSettings {
            min_capacity: 2,
            max_capacity: 10,
            cpu_target: 70.0,
            scale_in_cooldown: 60,
            scale_out_cooldown: 60,
        }
    }
}

/// Log retention values CloudWatch Logs accepts.
pub const LOG_RETENTION_DAYS: &[i32] =
    &[1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653];

impl Config {
    pub(super) fn validate_settings(&self, p: &mut Vec<ConfigError>) {
        let sc = &self.scaling;
        if sc.min_capacity < 0 {
            p.push(invalid("scaling.min_capacity", sc.min_capacity, "must not be negative"));
        }
        if sc.min_capacity > sc.max_capacity {
            p.push(invalid(
                "scaling.min_capacity",
                sc.min_capacity,
                format!("must not exceed scaling.max_capacity ({})", sc.max_capacity),
            ));
        }
        if !(sc.cpu_target > 0.0 && sc.cpu_target <= 100.0) {
            p.push(invalid("scaling.cpu_target", sc.cpu_target, "must be in (0, 100]"));
        }
        if sc.scale_in_cooldown < 0 {
            p.push(invalid("scaling.scale_in_cooldown", sc.scale_in_cooldown, "cooldowns must not be negative"));
        }
        if sc.scale_out_cooldown < 0 {
            p.push(invalid("scaling.scale_out_cooldown", sc.scale_out_cooldown, "cooldowns must not be negative"));
        }
        if !LOG_RETENTION_DAYS.contains(&self.logs.retention_days) {
            p.push(invalid(
                "logs.retention_days",
                self.logs.retention_days,
                format!("CloudWatch accepts only {LOG_RETENTION_DAYS:?}"),
            ));
        }
        p.extend(between("deploy.max_failed_tasks", self.deploy.max_failed_tasks, 1..=100, ""));
        if self.registry.keep_images == 0 {
            p.push(invalid("registry.keep_images", 0, "must be at least 1"));
        }
        let c = &self.cluster;
        if c.on_demand_weight + c.spot_weight == 0 {
            p.push(invalid("cluster.spot_weight", c.spot_weight, "on_demand_weight and spot_weight cannot both be 0"));
        }
        if c.on_demand_base > 100_000 {
            p.push(invalid("cluster.on_demand_base", c.on_demand_base, "must be at most 100000"));
        }
        let i = &self.ingress;
        p.extend(between("ingress.healthy_threshold", i.healthy_threshold, 2..=10, ""));
        p.extend(between("ingress.unhealthy_threshold", i.unhealthy_threshold, 2..=10, ""));
        p.extend(between("ingress.health_check_interval", i.health_check_interval, 5..=300, " seconds"));
        p.extend(between("ingress.deregistration_delay_seconds", i.deregistration_delay_seconds, 0..=3600, " seconds"));
        if let Some(arn) = &i.certificate_arn {
            if !arn.starts_with("arn:") {
                p.push(invalid("ingress.certificate_arn", arn, "must be an ACM certificate ARN (arn:...)"));
            }
        }
        p.extend(between("discovery.dns_ttl", self.discovery.dns_ttl, 0..=2_147_483_647, ""));
        p.extend(between("discovery.failure_threshold", self.discovery.failure_threshold, 1..=10, ""));
    }
}
