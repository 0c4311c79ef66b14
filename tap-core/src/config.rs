//! The typed configuration of one tap environment.
//!
//! [`Config::default`] is the platform of SPEC.md §1. [`Config::figment`] layers it with a TOML file,
//! `TAP_*` environment variables (nested keys joined with `__`, e.g. `TAP_NETWORK__VPC_CIDR`) and
//! command-line overrides; [`Config::validate`] then rejects anything AWS would refuse or that would
//! build a broken platform, naming the field, the value and the rule — before any AWS call.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::naming::{Names, Owner};
use crate::strategy::{self, Strategy, StrategyOverrides, StrategySettings};

/// Everything tap needs to know to build one environment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The environment suffix `{s}` carried by every name (`[a-z0-9-]`, e.g. `dev`, `pr-42`).
    pub environment: String,
    /// Image tag deployed for every service that does not set its own.
    pub image_tag: String,
    /// Where and how to reach AWS.
    pub aws: AwsSettings,
    /// How deploy waits for the services.
    pub deploy: DeploySettings,
    /// VPC, subnets and NAT layout.
    pub network: NetworkSettings,
    /// ECR repositories.
    pub registry: RegistrySettings,
    /// ECS cluster and capacity providers.
    pub cluster: ClusterSettings,
    /// Load balancer settings.
    pub ingress: IngressSettings,
    /// Cloud Map settings.
    pub discovery: DiscoverySettings,
    /// CloudWatch Logs settings.
    pub logs: LogSettings,
    /// Auto scaling of every service.
    pub scaling: ScalingSettings,
    /// CloudWatch alarms on every service's health, which roll its deployments back.
    pub alarms: AlarmSettings,
    /// Secrets Manager secrets; values are generated on first deploy and kept afterwards.
    pub secrets: Vec<SecretSpec>,
    /// The services of the platform: data, so a fourth service is a config change.
    pub services: Vec<ServiceSpec>,
    /// The monthly cost estimate's assumptions and negotiated prices.
    pub cost: CostSettings,
}

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

/// AWS connection settings; credentials always come from the standard AWS chain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AwsSettings {
    /// Region; the AWS chain (`AWS_REGION`, profile) decides when unset.
    pub region: Option<String>,
    /// Named profile of the shared AWS config files.
    pub profile: Option<String>,
    /// Endpoint override, e.g. a local emulator (`AWS_ENDPOINT_URL` works too).
    pub endpoint_url: Option<String>,
    /// Attempts per AWS call for errors other than throttling (standard retry mode: transient
    /// errors back off, up to 20 s between attempts). Throttled calls are paced and resent by the
    /// client-side rate limiter without spending attempts (`tap_core::throttle`).
    pub max_attempts: u32,
    /// Calls of one AWS service on the wire at once.
    pub max_in_flight: usize,
    /// How long one call may be kept throttled (paced and resent by the rate limiter) before the
    /// throttling answer counts as an attempt's failure.
    pub throttle_patience_seconds: u64,
}

/// How `deploy` waits for the services to become stable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeploySettings {
    /// Wait for every service's rollout to finish (`--no-wait` turns it off).
    pub wait: bool,
    /// Give up waiting after this many seconds (`--timeout`).
    pub timeout_seconds: u64,
    /// Let deploy delete data-bearing resources the config no longer declares (an ECR repository
    /// holding images, a secret); without it they are listed as kept (`--prune-data`).
    pub prune_data: bool,
    /// Stopped tasks of a new revision after which deploy rolls the service back to the previous
    /// revision itself (without waiting for the circuit breaker) and fails.
    pub max_failed_tasks: u32,
    /// How ECS replaces a running service's tasks (each service may set its own).
    pub strategy: Strategy,
    /// Minutes ECS keeps the old revision after production traffic moved (traffic-shifting
    /// strategies; a rollback until then is a traffic switch).
    pub bake_time_minutes: u32,
    /// `canary`: percent of production traffic the new revision gets first.
    pub canary_percent: f64,
    /// `canary`: minutes before the rest of the traffic moves.
    pub canary_bake_time_minutes: u32,
    /// `linear`: percent of production traffic moved in each step.
    pub linear_step_percent: f64,
    /// `linear`: minutes between steps.
    pub linear_step_bake_time_minutes: u32,
    /// Let deploy move a running service to an image its repository does not have (a warning
    /// instead of a refusal; `--allow-missing-image`).
    pub allow_missing_images: bool,
}

impl Default for DeploySettings {
    fn default() -> Self {
        DeploySettings {
            wait: true,
            timeout_seconds: 900,
            prune_data: false,
            max_failed_tasks: 3,
            allow_missing_images: false,
            strategy: Strategy::Rolling,
            bake_time_minutes: 5,
            // ECS's own defaults.
            canary_percent: 5.0,
            canary_bake_time_minutes: 10,
            linear_step_percent: 10.0,
            linear_step_bake_time_minutes: 6,
        }
    }
}

impl DeploySettings {
    /// The strategy settings every service starts from.
    pub fn strategy_settings(&self) -> StrategySettings {
        StrategySettings {
            strategy: self.strategy,
            bake_time_minutes: self.bake_time_minutes,
            canary_percent: self.canary_percent,
            canary_bake_time_minutes: self.canary_bake_time_minutes,
            linear_step_percent: self.linear_step_percent,
            linear_step_bake_time_minutes: self.linear_step_bake_time_minutes,
        }
    }
}

/// How many NAT gateways the private subnets route through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NatMode {
    /// One NAT gateway per availability zone (no cross-AZ single point of failure).
    OnePerAz,
    /// One NAT gateway shared by every private subnet (cheaper, for non-production).
    Single,
}

/// VPC layout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetworkSettings {
    /// The VPC's CIDR block.
    pub vpc_cidr: String,
    /// How many availability zones (the first ones available) to spread over.
    pub az_count: usize,
    /// One public subnet CIDR per AZ.
    pub public_subnet_cidrs: Vec<String>,
    /// One private subnet CIDR per AZ.
    pub private_subnet_cidrs: Vec<String>,
    /// NAT gateway layout.
    pub nat_gateways: NatMode,
}

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

/// CloudWatch alarms on every service's health (`[alarms]`): CPU and memory high for every
/// service, unhealthy targets and target 5xx for services behind the load balancer. Each service
/// names its alarms in `deploymentConfiguration.alarms` with rollback on, so ECS rolls a
/// deployment back when one goes to ALARM.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlarmSettings {
    /// Create the alarms and name them in the services' deployment configuration; `false`
    /// deletes them (and clears the deployment configuration's alarms).
    pub enabled: bool,
    /// Average CPU utilization of the service's tasks, percent, at or above which it alarms.
    pub cpu_high_percent: u32,
    /// Average memory utilization of the service's tasks, percent, at or above which it alarms.
    pub memory_high_percent: u32,
    /// Unhealthy targets in the service's target group(s) at or above which it alarms.
    pub unhealthy_targets: u32,
    /// 5xx answers of the service's targets within one period at or above which it alarms.
    pub target_5xx_count: u32,
    /// Seconds of one evaluation period (a multiple of 60: ECS and load balancer metrics are
    /// published once a minute).
    pub period_seconds: u32,
    /// Consecutive periods that must breach before the alarm goes to ALARM.
    pub evaluation_periods: u32,
}

impl Default for AlarmSettings {
    fn default() -> Self {
        AlarmSettings {
            enabled: true,
            cpu_high_percent: 90,
            memory_high_percent: 90,
            unhealthy_targets: 1,
            target_5xx_count: 10,
            period_seconds: 60,
            evaluation_periods: 3,
        }
    }
}

/// A service's own alarm thresholds (`services[*].alarms`), each replacing the `[alarms]` one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlarmOverrides {
    /// See [`AlarmSettings::cpu_high_percent`].
    pub cpu_high_percent: Option<u32>,
    /// See [`AlarmSettings::memory_high_percent`].
    pub memory_high_percent: Option<u32>,
    /// See [`AlarmSettings::unhealthy_targets`].
    pub unhealthy_targets: Option<u32>,
    /// See [`AlarmSettings::target_5xx_count`].
    pub target_5xx_count: Option<u32>,
}

/// The thresholds one service's alarms use: its overrides, else `[alarms]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AlarmThresholds {
    /// CPU high, percent.
    pub cpu_high_percent: u32,
    /// Memory high, percent.
    pub memory_high_percent: u32,
    /// Unhealthy targets.
    pub unhealthy_targets: u32,
    /// Target 5xx answers per period.
    pub target_5xx_count: u32,
}

/// A Secrets Manager secret `tap-{name}-{s}` holding a JSON object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretSpec {
    /// Logical name, e.g. `db-credentials`.
    pub name: String,
    /// Fields with fixed, non-secret values (e.g. `username`).
    #[serde(default)]
    pub fixed_fields: BTreeMap<String, String>,
    /// Fields whose values Secrets Manager generates once (e.g. `password`).
    #[serde(default)]
    pub generated_fields: Vec<String>,
}

/// How the load balancer reaches a service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSpec {
    /// Short name used in the target group name `tap-{short}-{s}` (32-character limit).
    pub short_name: String,
    /// Listener path pattern; `None` makes this service the listener's default action.
    #[serde(default)]
    pub path_pattern: Option<String>,
    /// Listener rule priority (unique per listener) when `path_pattern` is set.
    #[serde(default = "default_priority")]
    pub priority: i32,
    /// Health check path.
    pub health_check_path: String,
}

fn default_priority() -> i32 {
    10
}

/// Extra permissions of a service's task role, on top of writing to its own log group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TaskPermission {
    /// `servicediscovery:DiscoverInstances`, limited by condition to this environment's namespace.
    DiscoverInstances,
    /// Object access on the trade-data bucket `tap-trade-data-{s}` only.
    TradeDataBucket,
}

/// One ECS service of the platform.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSpec {
    /// Service name, e.g. `api-gateway` (names become `tap-{name}-{s}`).
    pub name: String,
    /// Fargate CPU units.
    pub cpu: u32,
    /// Fargate memory, MiB.
    pub memory: u32,
    /// Container port.
    pub port: u16,
    /// Tasks when the service is created (auto scaling owns the count afterwards).
    #[serde(default = "default_desired")]
    pub desired_count: i32,
    /// Image tag of this service; falls back to the top-level `image_tag`.
    #[serde(default)]
    pub image_tag: Option<String>,
    /// Plain environment variables. `{alb_dns}` and `{namespace}` are filled in at deploy time.
    #[serde(default)]
    pub environment: BTreeMap<String, String>,
    /// Environment variable name → logical secret name (from `secrets`).
    #[serde(default)]
    pub secrets: BTreeMap<String, String>,
    /// Reached through the load balancer.
    #[serde(default)]
    pub route: Option<RouteSpec>,
    /// Registered in Cloud Map as `{name}.tap-{s}.local`.
    #[serde(default)]
    pub discovery: bool,
    /// Services allowed to connect to this one's port; empty with a route means the ALB.
    #[serde(default)]
    pub allow_from: Vec<String>,
    /// Extra task-role permissions.
    #[serde(default)]
    pub permissions: Vec<TaskPermission>,
    /// This service's own deployment strategy settings (the rest from `deploy`).
    #[serde(default)]
    pub deploy: StrategyOverrides,
    /// This service's own alarm thresholds (each unset one is `[alarms]`'s).
    #[serde(default)]
    pub alarms: AlarmOverrides,
}

fn default_desired() -> i32 {
    2
}

impl Default for Config {
    fn default() -> Self {
        Config {
            environment: "dev".into(),
            image_tag: "latest".into(),
            aws: AwsSettings::default(),
            deploy: DeploySettings::default(),
            network: NetworkSettings::default(),
            registry: RegistrySettings::default(),
            cluster: ClusterSettings::default(),
            ingress: IngressSettings::default(),
            discovery: DiscoverySettings::default(),
            logs: LogSettings::default(),
            scaling: ScalingSettings::default(),
            alarms: AlarmSettings::default(),
            secrets: default_secrets(),
            services: default_services(),
            cost: CostSettings::default(),
        }
    }
}

impl Default for AwsSettings {
    fn default() -> Self {
        AwsSettings {
            region: None,
            profile: None,
            endpoint_url: None,
            max_attempts: 12,
            max_in_flight: 16,
            throttle_patience_seconds: 600,
        }
    }
}

impl Default for NetworkSettings {
    fn default() -> Self {
        NetworkSettings {
            vpc_cidr: "10.0.0.0/16".into(),
            az_count: 3,
            public_subnet_cidrs: vec!["10.0.0.0/24".into(), "10.0.1.0/24".into(), "10.0.2.0/24".into()],
            private_subnet_cidrs: vec!["10.0.10.0/24".into(), "10.0.11.0/24".into(), "10.0.12.0/24".into()],
            nat_gateways: NatMode::OnePerAz,
        }
    }
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

fn default_secrets() -> Vec<SecretSpec> {
    vec![
        SecretSpec {
            name: "db-credentials".into(),
            fixed_fields: BTreeMap::from([("username".into(), "tap_admin".into())]),
            generated_fields: vec!["password".into()],
        },
        SecretSpec { name: "api-keys".into(), fixed_fields: BTreeMap::new(), generated_fields: vec!["api_key".into()] },
    ]
}

fn default_services() -> Vec<ServiceSpec> {
    let env = |pairs: &[(&str, &str)]| pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    vec![
        ServiceSpec {
            name: "frontend".into(),
            cpu: 512,
            memory: 1024,
            port: 3000,
            desired_count: 2,
            image_tag: None,
            environment: env(&[("NODE_ENV", "production"), ("API_ENDPOINT", "http://{alb_dns}/api")]),
            secrets: BTreeMap::new(),
            route: Some(RouteSpec {
                short_name: "fe".into(),
                path_pattern: None,
                priority: 10,
                health_check_path: "/".into(),
            }),
            discovery: false,
            allow_from: vec![],
            permissions: vec![],
            deploy: StrategyOverrides::default(),
            alarms: AlarmOverrides::default(),
        },
        ServiceSpec {
            name: "api-gateway".into(),
            cpu: 1024,
            memory: 2048,
            port: 8080,
            desired_count: 2,
            image_tag: None,
            environment: env(&[("PROCESSING_SERVICE_URL", "http://processing-service.{namespace}:9000")]),
            secrets: env(&[("DB_CREDENTIALS", "db-credentials"), ("API_KEYS", "api-keys")]),
            route: Some(RouteSpec {
                short_name: "api".into(),
                path_pattern: Some("/api/*".into()),
                priority: 10,
                health_check_path: "/health".into(),
            }),
            discovery: false,
            allow_from: vec![],
            permissions: vec![TaskPermission::DiscoverInstances],
            deploy: StrategyOverrides::default(),
            alarms: AlarmOverrides::default(),
        },
        ServiceSpec {
            name: "processing-service".into(),
            cpu: 2048,
            memory: 4096,
            port: 9000,
            desired_count: 2,
            image_tag: None,
            environment: env(&[("WORKER_THREADS", "4")]),
            secrets: env(&[("DB_CREDENTIALS", "db-credentials")]),
            route: None,
            discovery: true,
            allow_from: vec!["api-gateway".into()],
            permissions: vec![TaskPermission::TradeDataBucket],
            deploy: StrategyOverrides::default(),
            alarms: AlarmOverrides::default(),
        },
    ]
}

/// Configuration that could not be loaded or is not valid. Names the field, the value and the rule.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file, an environment variable or a flag could not be parsed into the typed config.
    /// (Its text is the message, and it is no `source`: shown in a chain, it would repeat.)
    #[error("configuration could not be read: {0}")]
    Load(Box<figment::Error>),
    /// A value breaks a rule.
    #[error("invalid configuration: `{field}` = {value:?}: {rule}")]
    Invalid {
        /// Dotted path of the field, e.g. `services[1].cpu`.
        field: String,
        /// The offending value, as given.
        value: String,
        /// The rule it breaks.
        rule: String,
    },
    /// Several values break rules: every problem found, each an [`ConfigError::Invalid`].
    #[error("invalid configuration ({} problems):{}", .0.len(), .0.iter().map(|e| format!("\n  - {}", e.problem())).collect::<String>())]
    Problems(Vec<ConfigError>),
}

impl From<Box<figment::Error>> for ConfigError {
    fn from(e: Box<figment::Error>) -> Self {
        ConfigError::Load(e)
    }
}

impl ConfigError {
    /// The problem without the "invalid configuration" lead: `` `field` = "value": rule ``.
    fn problem(&self) -> String {
        match self {
            ConfigError::Invalid { field, value, rule } => format!("`{field}` = {value:?}: {rule}"),
            other => other.to_string(),
        }
    }

    /// Every single problem: this one, or each of several.
    pub fn problems(&self) -> Vec<&ConfigError> {
        match self {
            ConfigError::Problems(all) => all.iter().collect(),
            one => vec![one],
        }
    }
}

fn invalid(field: impl Into<String>, value: impl ToString, rule: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { field: field.into(), value: value.to_string(), rule: rule.into() }
}

/// The CPU (units) → memory (MiB) pairs Fargate offers for Linux tasks.
pub fn fargate_memory_options(cpu: u32) -> Option<Vec<u32>> {
    let range = |from: u32, to: u32, step: u32| (from..=to).step_by(step as usize).collect();
    Some(match cpu {
        256 => vec![512, 1024, 2048],
        512 => range(1024, 4096, 1024),
        1024 => range(2048, 8192, 1024),
        2048 => range(4096, 16384, 1024),
        4096 => range(8192, 30720, 1024),
        8192 => range(16384, 61440, 4096),
        16384 => range(32768, 122880, 8192),
        _ => return None,
    })
}

/// Log retention values CloudWatch Logs accepts.
pub const LOG_RETENTION_DAYS: &[i32] =
    &[1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653];

impl Config {
    /// The figment layering: defaults → `file` (or `tap.toml` when present) → `TAP_*` env vars →
    /// `overrides` (the command-line flags that were given).
    pub fn figment(file: Option<&Path>, overrides: Figment) -> Figment {
        let toml = match file {
            Some(path) => Toml::file_exact(path),
            None => Toml::file("tap.toml"),
        };
        Figment::from(Serialized::defaults(Config::default()))
            .merge(toml)
            // `TAP_LOCK_LEASE_SECONDS` is read by the lock, not a config key.
            .merge(Env::prefixed("TAP_").split("__").ignore(&["config", "lock_lease_seconds"]))
            .merge(overrides)
    }

    /// Loads and validates the layered configuration.
    pub fn load(file: Option<&Path>, overrides: Figment) -> Result<Config, ConfigError> {
        let config: Config = Self::figment(file, overrides).extract().map_err(Box::new)?;
        config.validate()?;
        Ok(config)
    }

    /// The service named `name`.
    pub fn service(&self, name: &str) -> Option<&ServiceSpec> {
        self.services.iter().find(|s| s.name == name)
    }

    /// How ECS replaces `service`'s tasks: its own strategy settings over `deploy`'s. A
    /// traffic-shifting `deploy.strategy` is the default of the services behind the load
    /// balancer; one without a route deploys rolling unless it asks otherwise itself (which
    /// validation refuses).
    pub fn strategy_of(&self, service: &ServiceSpec) -> StrategySettings {
        let mut settings = self.deploy.strategy_settings();
        if service.route.is_none() && service.deploy.strategy.is_none() {
            settings.strategy = Strategy::Rolling;
        }
        settings.with(&service.deploy)
    }

    /// The alarm thresholds of `service`: its own overrides, else `[alarms]`'s.
    pub fn alarm_thresholds(&self, service: &ServiceSpec) -> AlarmThresholds {
        let (a, o) = (&self.alarms, &service.alarms);
        AlarmThresholds {
            cpu_high_percent: o.cpu_high_percent.unwrap_or(a.cpu_high_percent),
            memory_high_percent: o.memory_high_percent.unwrap_or(a.memory_high_percent),
            unhealthy_targets: o.unhealthy_targets.unwrap_or(a.unhealthy_targets),
            target_5xx_count: o.target_5xx_count.unwrap_or(a.target_5xx_count),
        }
    }

    /// The image tag a service deploys.
    pub fn image_tag_of<'a>(&'a self, service: &'a ServiceSpec) -> &'a str {
        service.image_tag.as_deref().unwrap_or(&self.image_tag)
    }

    /// Checks every rule and reports every broken one: a single problem as
    /// [`ConfigError::Invalid`], several as [`ConfigError::Problems`], each with its field, value
    /// and rule.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut p = Vec::new();
        self.validate_environment(&mut p);
        self.validate_network(&mut p);
        self.validate_services(&mut p);
        self.validate_strategies(&mut p);
        self.validate_load_balancer_limits(&mut p);
        self.validate_settings(&mut p);
        self.validate_alarms(&mut p);
        self.validate_cost(&mut p);
        self.validate_names(&mut p);
        match p.len() {
            0 => Ok(()),
            1 => Err(p.remove(0)),
            _ => Err(ConfigError::Problems(p)),
        }
    }

    fn validate_environment(&self, p: &mut Vec<ConfigError>) {
        validate_label(p, "environment", &self.environment);
        if self.image_tag.is_empty() || !valid_image_tag(&self.image_tag) {
            p.push(invalid(
                "image_tag",
                &self.image_tag,
                "must be 1-128 characters of [A-Za-z0-9_.-], not starting with . or -",
            ));
        }
        if let Some(url) = &self.aws.endpoint_url {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                p.push(invalid("aws.endpoint_url", url, "must be an http:// or https:// URL"));
            }
        }
        if !(1..=20).contains(&self.aws.max_attempts) {
            p.push(invalid("aws.max_attempts", self.aws.max_attempts, "must be between 1 and 20"));
        }
        if !(1..=256).contains(&self.aws.max_in_flight) {
            p.push(invalid("aws.max_in_flight", self.aws.max_in_flight, "must be between 1 and 256"));
        }
        if self.aws.throttle_patience_seconds > 3600 {
            p.push(invalid(
                "aws.throttle_patience_seconds",
                self.aws.throttle_patience_seconds,
                "must be at most 3600 (an hour)",
            ));
        }
    }

    fn validate_network(&self, p: &mut Vec<ConfigError>) {
        let n = &self.network;
        let vpc = parse_cidr(p, "network.vpc_cidr", &n.vpc_cidr);
        if let Some(vpc) = vpc {
            if !(16..=28).contains(&vpc.prefix_len()) {
                p.push(invalid("network.vpc_cidr", &n.vpc_cidr, "a VPC block must be between /16 and /28"));
            }
        }
        if !(1..=6).contains(&n.az_count) {
            p.push(invalid("network.az_count", n.az_count, "must be between 1 and 6"));
        }
        let mut seen: Vec<(String, Ipv4Net)> = Vec::new();
        for (list_name, list) in
            [("public_subnet_cidrs", &n.public_subnet_cidrs), ("private_subnet_cidrs", &n.private_subnet_cidrs)]
        {
            if list.len() != n.az_count {
                p.push(invalid(
                    format!("network.{list_name}"),
                    format!("{list:?}"),
                    format!("needs exactly one CIDR per availability zone (az_count = {})", n.az_count),
                ));
            }
            for (i, cidr) in list.iter().enumerate() {
                let field = format!("network.{list_name}[{i}]");
                let Some(net) = parse_cidr(p, &field, cidr) else { continue };
                if let Some(vpc) = vpc {
                    if !vpc.contains(&net) {
                        p.push(invalid(&field, cidr, format!("subnet is outside the VPC {}", n.vpc_cidr)));
                    }
                }
                if !(16..=28).contains(&net.prefix_len()) {
                    p.push(invalid(&field, cidr, "a subnet block must be between /16 and /28"));
                }
                if let Some((other, _)) = seen.iter().find(|(_, o)| o.contains(&net) || net.contains(o)) {
                    p.push(invalid(&field, cidr, format!("overlaps {other}")));
                }
                seen.push((format!("{field} ({cidr})"), net));
            }
        }
    }

    fn validate_services(&self, p: &mut Vec<ConfigError>) {
        if self.services.is_empty() {
            p.push(invalid("services", "[]", "at least one service is needed"));
        }
        let mut names = BTreeSet::new();
        let mut output_keys = BTreeMap::new();
        let mut ports = BTreeSet::new();
        let mut short_names = BTreeSet::new();
        let mut priorities = BTreeSet::new();
        let mut defaults = 0;
        let secret_names: BTreeSet<&str> = self.secrets.iter().map(|s| s.name.as_str()).collect();
        for (i, s) in self.services.iter().enumerate() {
            let f = |k: &str| format!("services[{i}].{k}");
            validate_label(p, &f("name"), &s.name);
            if !names.insert(s.name.as_str()) {
                p.push(invalid(f("name"), &s.name, "service names must be unique"));
            } else if let Some(other) = output_keys.insert(crate::outputs::service_output_keys(&s.name).0, &s.name) {
                p.push(invalid(
                    f("name"),
                    &s.name,
                    format!("gives the same `tap outputs` keys as service `{other}`: rename one of them"),
                ));
            }
            if !ports.insert(s.port) {
                p.push(invalid(f("port"), s.port, "service ports must be unique"));
            }
            if s.port == 0 {
                p.push(invalid(f("port"), s.port, "must be between 1 and 65535"));
            }
            match fargate_memory_options(s.cpu) {
                None => p.push(invalid(
                    f("cpu"),
                    s.cpu,
                    "Fargate offers 256, 512, 1024, 2048, 4096, 8192 or 16384 CPU units",
                )),
                Some(options) if !options.contains(&s.memory) => p.push(invalid(
                    f("memory"),
                    s.memory,
                    format!(
                        "Fargate does not offer {} MiB with {} CPU units (allowed: {}..={} MiB in its steps)",
                        s.memory,
                        s.cpu,
                        options[0],
                        options[options.len() - 1]
                    ),
                )),
                Some(_) => {}
            }
            if s.desired_count < 0 {
                p.push(invalid(f("desired_count"), s.desired_count, "must not be negative"));
            }
            if let Some(tag) = &s.image_tag {
                if !valid_image_tag(tag) {
                    p.push(invalid(
                        f("image_tag"),
                        tag,
                        "must be 1-128 characters of [A-Za-z0-9_.-], not starting with . or -",
                    ));
                }
            }
            for (var, secret) in &s.secrets {
                if !secret_names.contains(secret.as_str()) {
                    p.push(invalid(format!("services[{i}].secrets.{var}"), secret, "names no secret in `secrets`"));
                }
            }
            for from in &s.allow_from {
                if !self.services.iter().any(|o| &o.name == from) {
                    p.push(invalid(f("allow_from"), from, "names no service in `services`"));
                }
            }
            if let Some(route) = &s.route {
                validate_label(p, &f("route.short_name"), &route.short_name);
                if !short_names.insert(route.short_name.as_str()) {
                    p.push(invalid(f("route.short_name"), &route.short_name, "route short names must be unique"));
                }
                if !route.health_check_path.starts_with('/') {
                    p.push(invalid(f("route.health_check_path"), &route.health_check_path, "must start with /"));
                }
                match &route.path_pattern {
                    None => defaults += 1,
                    Some(pattern) => {
                        if !pattern.starts_with('/') {
                            p.push(invalid(f("route.path_pattern"), pattern, "must start with /"));
                        }
                        if !(1..=50000).contains(&route.priority) || !priorities.insert(route.priority) {
                            p.push(invalid(
                                f("route.priority"),
                                route.priority,
                                "must be unique and between 1 and 50000",
                            ));
                        }
                    }
                }
            }
        }
        let routed = self.services.iter().filter(|s| s.route.is_some()).count();
        if routed > 0 && defaults != 1 {
            p.push(invalid(
                "services[*].route.path_pattern",
                defaults,
                "exactly one routed service must have no path_pattern (the listener's default)",
            ));
        }
        let mut secret_seen = BTreeSet::new();
        for (i, s) in self.secrets.iter().enumerate() {
            validate_label(p, &format!("secrets[{i}].name"), &s.name);
            if !secret_seen.insert(&s.name) {
                p.push(invalid(format!("secrets[{i}].name"), &s.name, "secret names must be unique"));
            }
            if s.generated_fields.is_empty() && s.fixed_fields.is_empty() {
                p.push(invalid(format!("secrets[{i}]"), &s.name, "a secret needs at least one field"));
            }
        }
    }

    /// The ranges ECS accepts, and what a traffic-shifting strategy needs: a route, and free
    /// priorities for the rules ECS moves traffic on ([`strategy::rule_priorities`]).
    fn validate_strategies(&self, p: &mut Vec<ConfigError>) {
        let base = self.deploy.strategy_settings();
        for (field, value, rule) in base.problems() {
            p.push(invalid(format!("deploy.{field}"), value, rule));
        }
        let configured: BTreeSet<i32> = self
            .services
            .iter()
            .filter_map(|s| s.route.as_ref().filter(|r| r.path_pattern.is_some()).map(|r| r.priority))
            .collect();
        let mut taken = BTreeSet::new();
        for (i, s) in self.services.iter().enumerate() {
            let settings = self.strategy_of(s);
            let reported_for_deploy = base.problems();
            for (field, value, rule) in settings.problems() {
                let set_here = s.deploy.sets(field);
                // An inherited value that is wrong for `deploy`'s own strategy is reported there once.
                if !set_here && reported_for_deploy.iter().any(|(f, _, _)| *f == field) {
                    continue;
                }
                let rule = if set_here { rule } else { format!("{rule} (inherited from `deploy.{field}`)") };
                p.push(invalid(format!("services[{i}].deploy.{field}"), value, rule));
            }
            if !settings.strategy.shifts_traffic() {
                continue;
            }
            let Some(route) = &s.route else {
                p.push(invalid(
                    format!("services[{i}].deploy.strategy"),
                    settings.strategy.config_name(),
                    "only a service behind the load balancer (with a `route`) can shift traffic; use `rolling`",
                ));
                continue;
            };
            let path_priority = route.path_pattern.as_ref().map(|_| route.priority);
            let (production, test) = strategy::rule_priorities(path_priority, true);
            let mut wanted = vec![("test rule", test)];
            if path_priority.is_none() {
                wanted.push(("production rule", production));
            }
            for (what, priority) in wanted.into_iter().filter_map(|(w, p)| p.map(|p| (w, p))) {
                if priority < 1 || configured.contains(&priority) || !taken.insert(priority) {
                    p.push(invalid(
                        format!("services[{i}].route.priority"),
                        route.priority,
                        format!(
                            "with strategy {} the service's {what} needs listener priority {priority}, which {}",
                            settings.strategy.config_name(),
                            if priority < 1 {
                                "does not exist (use a priority of 2 or more)"
                            } else {
                                "another rule has"
                            }
                        ),
                    ));
                }
            }
        }
    }

    /// The per-load-balancer limits AWS sets that the config alone can exceed
    /// ([`crate::quota::listener_rules`], [`crate::quota::target_groups`]): refused here instead of
    /// at the 101st rule, after half the platform was built.
    fn validate_load_balancer_limits(&self, p: &mut Vec<ConfigError>) {
        use crate::quota::{MAX_RULES_PER_LOAD_BALANCER, MAX_TARGET_GROUPS_PER_LOAD_BALANCER};
        let rules = crate::quota::listener_rules(self);
        if rules > MAX_RULES_PER_LOAD_BALANCER {
            p.push(invalid(
                "services",
                format!("{rules} listener rules"),
                format!(
                    "an Application Load Balancer listener takes at most {MAX_RULES_PER_LOAD_BALANCER} rules (its \
                     default rule not counted; AWS's \"Rules per Application Load Balancer\"): the routed services \
                     need {rules} (one per path, and a test rule, plus a `/*` rule for the listener's default \
                     service, for each that shifts traffic); route fewer services, or deploy them as two \
                     environments"
                ),
            ));
        }
        let groups = crate::quota::target_groups(self);
        if groups > MAX_TARGET_GROUPS_PER_LOAD_BALANCER {
            p.push(invalid(
                "services",
                format!("{groups} target groups"),
                format!(
                    "an Application Load Balancer takes at most {MAX_TARGET_GROUPS_PER_LOAD_BALANCER} target groups \
                     (AWS's \"Target Groups per Application Load Balancer\", not adjustable): the routed services \
                     need {groups} (one each, two for a service that shifts traffic)"
                ),
            ));
        }
    }

    fn validate_settings(&self, p: &mut Vec<ConfigError>) {
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
        if !(1..=100).contains(&self.deploy.max_failed_tasks) {
            p.push(invalid("deploy.max_failed_tasks", self.deploy.max_failed_tasks, "must be between 1 and 100"));
        }
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
        if !(2..=10).contains(&i.healthy_threshold) {
            p.push(invalid("ingress.healthy_threshold", i.healthy_threshold, "must be between 2 and 10"));
        }
        if !(2..=10).contains(&i.unhealthy_threshold) {
            p.push(invalid("ingress.unhealthy_threshold", i.unhealthy_threshold, "must be between 2 and 10"));
        }
        if !(5..=300).contains(&i.health_check_interval) {
            p.push(invalid(
                "ingress.health_check_interval",
                i.health_check_interval,
                "must be between 5 and 300 seconds",
            ));
        }
        if !(0..=3600).contains(&i.deregistration_delay_seconds) {
            p.push(invalid(
                "ingress.deregistration_delay_seconds",
                i.deregistration_delay_seconds,
                "must be between 0 and 3600 seconds",
            ));
        }
        if let Some(arn) = &i.certificate_arn {
            if !arn.starts_with("arn:") {
                p.push(invalid("ingress.certificate_arn", arn, "must be an ACM certificate ARN (arn:...)"));
            }
        }
        if !(0..=2_147_483_647).contains(&self.discovery.dns_ttl) {
            p.push(invalid("discovery.dns_ttl", self.discovery.dns_ttl, "must be between 0 and 2147483647"));
        }
        if !(1..=10).contains(&self.discovery.failure_threshold) {
            p.push(invalid(
                "discovery.failure_threshold",
                self.discovery.failure_threshold,
                "must be between 1 and 10",
            ));
        }
    }

    /// What PutMetricAlarm accepts for the metrics tap watches (published once a minute).
    fn validate_alarms(&self, p: &mut Vec<ConfigError>) {
        let a = &self.alarms;
        let thresholds = |p: &mut Vec<ConfigError>, prefix: &str, o: &AlarmOverrides| {
            for (key, value) in
                [("cpu_high_percent", o.cpu_high_percent), ("memory_high_percent", o.memory_high_percent)]
            {
                if let Some(v) = value.filter(|v| !(1..=100).contains(v)) {
                    p.push(invalid(
                        format!("{prefix}{key}"),
                        v,
                        "a utilization threshold is a percentage from 1 to 100",
                    ));
                }
            }
            for (key, value) in [("unhealthy_targets", o.unhealthy_targets), ("target_5xx_count", o.target_5xx_count)] {
                if value == Some(0) {
                    p.push(invalid(
                        format!("{prefix}{key}"),
                        0,
                        "must be at least 1 (a threshold of 0 is always reached)",
                    ));
                }
            }
        };
        let global = AlarmOverrides {
            cpu_high_percent: Some(a.cpu_high_percent),
            memory_high_percent: Some(a.memory_high_percent),
            unhealthy_targets: Some(a.unhealthy_targets),
            target_5xx_count: Some(a.target_5xx_count),
        };
        thresholds(p, "alarms.", &global);
        for (i, s) in self.services.iter().enumerate() {
            thresholds(p, &format!("services[{i}].alarms."), &s.alarms);
        }
        if a.period_seconds == 0 || !a.period_seconds.is_multiple_of(60) {
            p.push(invalid(
                "alarms.period_seconds",
                a.period_seconds,
                "must be a multiple of 60 (ECS and load balancer metrics are published once a minute; \
                 CloudWatch's 10, 20 and 30 s periods are for high-resolution metrics)",
            ));
        }
        if a.evaluation_periods == 0 {
            p.push(invalid("alarms.evaluation_periods", 0, "must be at least 1"));
        }
        // CloudWatch: period × evaluation periods at most one day, or 7 days for periods of an hour or more.
        let window = u64::from(a.period_seconds) * u64::from(a.evaluation_periods);
        let limit: u64 = if a.period_seconds >= 3600 { 604_800 } else { 86_400 };
        if window > limit {
            p.push(invalid(
                "alarms.evaluation_periods",
                a.evaluation_periods,
                format!(
                    "period_seconds × evaluation_periods is {window} s; CloudWatch allows at most {limit} s \
                     (one day, or seven for periods of an hour or more)"
                ),
            ));
        }
    }

    fn validate_cost(&self, p: &mut Vec<ConfigError>) {
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

    /// Every generated name within its AWS length limit, and no two resources of one AWS
    /// namespace given the same name (a service named `alb` would take the load balancer's
    /// security group name).
    fn validate_names(&self, p: &mut Vec<ConfigError>) {
        let names = Names::new(self);
        for (kind, name, limit) in names.limited_names() {
            if name.len() > limit {
                p.push(invalid(
                    "environment",
                    &self.environment,
                    format!(
                        "makes the {kind} name `{name}` {} characters long; AWS allows at most {limit}",
                        name.len()
                    ),
                ));
            }
        }
        let describe = |owner: Owner| match owner {
            Owner::Tap(what) => format!("the {what}"),
            Owner::Service(i) => format!("service `{}`", self.services[i].name),
            Owner::Secret(i) => format!("secret `{}`", self.secrets[i].name),
        };
        let mut seen: BTreeMap<(&'static str, String), Owner> = BTreeMap::new();
        for named in names.resource_names() {
            let key = (named.namespace, named.name.clone());
            let Some(&first) = seen.get(&key) else {
                seen.insert(key, named.owner);
                continue;
            };
            if first == named.owner {
                continue;
            }
            // Blame the one that can be renamed: a service or secret, not tap's own resource.
            let (blamed, other) =
                if matches!(named.owner, Owner::Tap(_)) { (first, named.owner) } else { (named.owner, first) };
            let (field, value) = match blamed {
                Owner::Service(i) => (format!("services[{i}].name"), self.services[i].name.clone()),
                Owner::Secret(i) => (format!("secrets[{i}].name"), self.secrets[i].name.clone()),
                Owner::Tap(_) => ("services".to_owned(), String::new()),
            };
            p.push(invalid(
                field,
                value,
                format!(
                    "its {} would be named `{}`, the name of {}'s {}; choose another name",
                    named.namespace,
                    named.name,
                    describe(other),
                    named.namespace
                ),
            ));
        }
    }
}

/// `[a-z0-9-]+`, not starting or ending with `-`.
fn validate_label(p: &mut Vec<ConfigError>, field: &str, value: &str) {
    if value.is_empty() {
        p.push(invalid(field, value, "must not be empty"));
    } else if !value.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-') {
        p.push(invalid(field, value, "may contain only lowercase letters, digits and '-'"));
    } else if value.starts_with('-') || value.ends_with('-') {
        p.push(invalid(field, value, "must not start or end with '-'"));
    }
}

fn valid_image_tag(tag: &str) -> bool {
    (1..=128).contains(&tag.len())
        && !tag.starts_with(['.', '-'])
        && tag.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

fn parse_cidr(p: &mut Vec<ConfigError>, field: &str, value: &str) -> Option<Ipv4Net> {
    let Ok(net) = value.parse::<Ipv4Net>() else {
        p.push(invalid(field, value, "must be an IPv4 CIDR block like 10.0.0.0/16"));
        return None;
    };
    if net.trunc() != net {
        p.push(invalid(field, value, format!("has host bits set; the block is {}", net.trunc())));
        return None;
    }
    Some(net)
}

#[cfg(test)]
// figment's Jail closures return figment's (large) error type.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;
    use figment::Jail;

    fn no_overrides() -> Figment {
        Figment::new()
    }

    #[test]
    fn defaults_are_the_spec_and_valid() {
        let c = Config::default();
        c.validate().unwrap();
        assert_eq!(c.network.vpc_cidr, "10.0.0.0/16");
        assert_eq!(c.services.len(), 3);
        assert_eq!((c.services[2].cpu, c.services[2].memory), (2048, 4096));
        assert_eq!(c.logs.retention_days, 30);
    }

    #[test]
    fn layering_defaults_file_env_flags() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "tap.toml",
                "environment = \"from-file\"\nimage_tag = \"v1\"\n[logs]\nretention_days = 60\n",
            )?;
            let c = Config::load(None, no_overrides()).unwrap();
            assert_eq!((c.environment.as_str(), c.image_tag.as_str(), c.logs.retention_days), ("from-file", "v1", 60));

            jail.set_env("TAP_ENVIRONMENT", "from-env");
            jail.set_env("TAP_SCALING__MAX_CAPACITY", "12");
            let c = Config::load(None, no_overrides()).unwrap();
            assert_eq!((c.environment.as_str(), c.scaling.max_capacity, c.image_tag.as_str()), ("from-env", 12, "v1"));

            let flags = Figment::from(Serialized::default("environment", "from-flag"));
            let c = Config::load(None, flags).unwrap();
            assert_eq!(c.environment, "from-flag");
            assert_eq!(c.network.az_count, 3, "untouched keys keep their defaults");
            Ok(())
        });
    }

    #[test]
    fn explicit_config_file_must_exist_and_unknown_keys_are_rejected() {
        Jail::expect_with(|jail| {
            assert!(Config::load(Some(Path::new("missing.toml")), no_overrides()).is_err());
            jail.create_file("typo.toml", "[network]\nvpc_cdir = \"10.0.0.0/16\"\n")?;
            let err = Config::load(Some(Path::new("typo.toml")), no_overrides()).unwrap_err().to_string();
            assert!(err.contains("vpc_cdir"), "{err}");
            Ok(())
        });
    }

    fn rejects(mutate: impl FnOnce(&mut Config), field: &str) {
        let mut c = Config::default();
        mutate(&mut c);
        let err = c.validate().expect_err(field);
        let fields: Vec<&str> = err
            .problems()
            .into_iter()
            .map(|p| match p {
                ConfigError::Invalid { field, .. } => field.as_str(),
                other => panic!("not a single problem: {other:?}"),
            })
            .collect();
        assert!(fields.iter().any(|f| f.starts_with(field)), "expected field {field}, got {fields:?}");
    }

    #[test]
    fn validation_reports_every_problem_not_only_the_first() {
        let mut c = Config { environment: "Bad".into(), ..Config::default() };
        c.network.vpc_cidr = "10.0.0.0/33".into();
        c.services[1].cpu = 300;
        c.logs.retention_days = 31;
        c.scaling.cpu_target = 0.0;
        let err = c.validate().unwrap_err();
        let ConfigError::Problems(all) = &err else { panic!("several problems: {err:?}") };
        let fields: Vec<String> = all
            .iter()
            .map(|p| match p {
                ConfigError::Invalid { field, .. } => field.clone(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            fields,
            ["environment", "network.vpc_cidr", "services[1].cpu", "scaling.cpu_target", "logs.retention_days"]
        );
        let text = err.to_string();
        assert!(text.starts_with("invalid configuration (5 problems):\n  - `environment` = \"Bad\""), "{text}");
        assert_eq!(text.lines().count(), 6, "{text}");
    }

    #[test]
    fn service_names_that_take_taps_own_names_are_refused() {
        let mut c = Config::default();
        c.services[0].name = "alb".into();
        let err = c.validate().unwrap_err();
        match &err {
            ConfigError::Invalid { field, value, rule } => {
                assert_eq!((field.as_str(), value.as_str()), ("services[0].name", "alb"));
                assert!(rule.contains("security group") && rule.contains("tap-alb-sg-dev"), "{rule}");
                assert!(rule.contains("load balancer"), "{rule}");
            }
            other => panic!("{other:?}"),
        }
        // Every other name of the default platform is free of collisions, whatever the suffix.
        for env in ["dev", "alb", "sg-dev", "task-execution"] {
            Config { environment: env.into(), ..Config::default() }.validate().unwrap();
        }
        // A service's names may look like tap's as long as no AWS namespace holds both.
        let mut c = Config::default();
        c.services[2].name = "vpc".into();
        c.services[2].allow_from = vec!["api-gateway".into()];
        c.validate().unwrap();
    }

    #[test]
    fn services_whose_output_keys_collide_are_refused_naming_both() {
        let mut c = Config::default();
        c.services[0].name = "processing".into();
        let err = c.validate().unwrap_err();
        match &err {
            ConfigError::Invalid { field, value, rule } => {
                assert_eq!((field.as_str(), value.as_str()), ("services[2].name", "processing-service"));
                assert!(rule.contains("`tap outputs` keys as service `processing`"), "{rule}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_load_error_shows_its_text_once() {
        Jail::expect_with(|jail| {
            jail.create_file("tap.toml", "[network]\naz_count = \"three\"\n")?;
            let err = Config::load(None, no_overrides()).unwrap_err();
            // As `{:#}` of anyhow shows it: the error, then each source.
            let mut chained = err.to_string();
            let mut source = std::error::Error::source(&err);
            while let Some(e) = source {
                chained.push_str(&format!(": {e}"));
                source = e.source();
            }
            assert_eq!(chained.matches("az_count").count(), 1, "{chained}");
            Ok(())
        });
    }

    #[test]
    fn validation_names_the_field() {
        rejects(|c| c.environment = "Bad_Suffix!".into(), "environment");
        rejects(|c| c.environment = String::new(), "environment");
        rejects(|c| c.environment = "-dev".into(), "environment");
        rejects(|c| c.environment = "a".repeat(30), "environment");
        rejects(|c| c.services[0].memory = 8192, "services[0].memory");
        rejects(|c| c.services[1].cpu = 300, "services[1].cpu");
        rejects(|c| c.network.vpc_cidr = "10.0.0.0/33".into(), "network.vpc_cidr");
        rejects(|c| c.network.private_subnet_cidrs[0] = "10.0.1.0/24".into(), "network.private_subnet_cidrs[0]");
        rejects(|c| c.network.public_subnet_cidrs[2] = "192.168.0.0/24".into(), "network.public_subnet_cidrs[2]");
        rejects(|c| c.scaling.min_capacity = 11, "scaling.min_capacity");
        rejects(|c| c.services[2].name = "frontend".into(), "services[2].name");
        rejects(|c| c.services[2].port = 3000, "services[2].port");
        rejects(|c| c.logs.retention_days = 31, "logs.retention_days");
        rejects(|c| c.ingress.deregistration_delay_seconds = 3601, "ingress.deregistration_delay_seconds");
        rejects(|c| c.ingress.deregistration_delay_seconds = -1, "ingress.deregistration_delay_seconds");
        rejects(
            |c| c.services[1].secrets.insert("X".into(), "nope".into()).map(|_| ()).unwrap_or(()),
            "services[1].secrets",
        );
    }

    #[test]
    fn deregistration_delay_accepts_what_aws_allows() {
        assert_eq!(Config::default().ingress.deregistration_delay_seconds, 30);
        for ok in [0, 30, 300, 3600] {
            let mut c = Config::default();
            c.ingress.deregistration_delay_seconds = ok;
            c.validate().unwrap();
        }
        let mut c = Config::default();
        c.ingress.deregistration_delay_seconds = 4000;
        let text = c.validate().unwrap_err().to_string();
        assert!(
            text.contains("ingress.deregistration_delay_seconds")
                && text.contains("4000")
                && text.contains("0 and 3600"),
            "{text}"
        );
    }

    #[test]
    fn alarms_defaults_layering_overrides_and_the_ranges_cloudwatch_accepts() {
        let c = Config::default();
        assert!(c.alarms.enabled);
        assert_eq!((c.alarms.cpu_high_percent, c.alarms.memory_high_percent), (90, 90));
        assert_eq!((c.alarms.unhealthy_targets, c.alarms.target_5xx_count), (1, 10));
        assert_eq!((c.alarms.period_seconds, c.alarms.evaluation_periods), (60, 3));
        Jail::expect_with(|jail| {
            jail.create_file(
                "tap.toml",
                "[alarms]\ncpu_high_percent = 80\nperiod_seconds = 300\n\n[[services]]\nname = \"solo\"\ncpu = 256\n\
                 memory = 512\nport = 7000\nalarms = { memory_high_percent = 75 }\n",
            )?;
            jail.set_env("TAP_ALARMS__EVALUATION_PERIODS", "5");
            let c = Config::load(None, no_overrides()).unwrap();
            assert_eq!((c.alarms.cpu_high_percent, c.alarms.period_seconds, c.alarms.evaluation_periods), (80, 300, 5));
            let t = c.alarm_thresholds(&c.services[0]);
            assert_eq!((t.cpu_high_percent, t.memory_high_percent, t.target_5xx_count), (80, 75, 10));
            Ok(())
        });
        rejects(|c| c.alarms.cpu_high_percent = 0, "alarms.cpu_high_percent");
        rejects(|c| c.alarms.memory_high_percent = 101, "alarms.memory_high_percent");
        rejects(|c| c.alarms.unhealthy_targets = 0, "alarms.unhealthy_targets");
        rejects(|c| c.alarms.target_5xx_count = 0, "alarms.target_5xx_count");
        rejects(|c| c.alarms.evaluation_periods = 0, "alarms.evaluation_periods");
        rejects(|c| c.services[1].alarms.cpu_high_percent = Some(150), "services[1].alarms.cpu_high_percent");
        for bad in [0, 10, 30, 90] {
            rejects(|c| c.alarms.period_seconds = bad, "alarms.period_seconds");
        }
        // 60 s × 1441 is over a day; an hour's period may span seven days.
        rejects(|c| c.alarms.evaluation_periods = 1441, "alarms.evaluation_periods");
        let mut c = Config::default();
        (c.alarms.period_seconds, c.alarms.evaluation_periods) = (3600, 168);
        c.validate().unwrap();
        let mut c = Config::default();
        c.alarms.period_seconds = 45;
        let text = c.validate().unwrap_err().to_string();
        assert!(
            text.contains("alarms.period_seconds") && text.contains("45") && text.contains("multiple of 60"),
            "{text}"
        );
    }

    #[test]
    fn long_suffix_error_names_the_limited_name() {
        let c = Config { environment: "abcdefghijklmnopqrstuvwxyz".into(), ..Config::default() };
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("environment") && err.contains("32"), "{err}");
    }

    #[test]
    fn strategies_are_checked_before_any_call() {
        use crate::strategy::{Strategy, StrategyOverrides};
        let problems = |c: &Config| -> Vec<String> {
            c.validate().err().map(|e| e.problems().iter().map(|p| p.to_string()).collect()).unwrap_or_default()
        };
        // Every routed service may shift traffic; the defaults leave room for the test rules.
        let all = Config {
            deploy: DeploySettings { strategy: Strategy::Canary, ..DeploySettings::default() },
            ..Config::default()
        };
        assert_eq!(problems(&all), Vec::<String>::new());
        assert_eq!(all.strategy_of(&all.services[2]).strategy, Strategy::Rolling, "no route: rolling");
        let mut own = all.clone();
        own.services[2].deploy.strategy = Some(Strategy::BlueGreen);
        assert_eq!(problems(&own).len(), 1, "{:?}", problems(&own));
        assert!(problems(&own)[0].contains("services[2].deploy.strategy") && problems(&own)[0].contains("`route`"));

        let mut c = Config::default();
        c.services[1].deploy = StrategyOverrides {
            strategy: Some(Strategy::Linear),
            linear_step_percent: Some(2.0),
            ..Default::default()
        };
        c.deploy.canary_percent = 0.0;
        let found = problems(&c);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].contains("services[1].deploy.linear_step_percent") && found[0].contains("3.0 to 100.0"),
            "{found:?}"
        );

        // The api-gateway's test rule needs priority 9: a rule of another service there is a clash.
        let mut c = Config::default();
        c.services[1].deploy.strategy = Some(Strategy::BlueGreen);
        let mut extra = c.services[1].clone();
        extra.name = "admin".into();
        extra.port = 8081;
        extra.deploy = StrategyOverrides::default();
        extra.route = Some(RouteSpec {
            short_name: "adm".into(),
            path_pattern: Some("/admin/*".into()),
            priority: 9,
            health_check_path: "/".into(),
        });
        c.services.push(extra);
        let found = problems(&c);
        assert!(
            found.iter().any(|p| p.contains("services[1].route.priority") && p.contains("priority 9")),
            "{found:?}"
        );
    }

    /// 120 routed services need 120 rules on the one listener: refused naming `services`, the
    /// count and the 100-rule limit, before any AWS call. 100 rules exactly are accepted.
    #[test]
    fn more_routed_services_than_a_listener_takes_rules_are_refused() {
        let problems = |c: &Config| -> Vec<String> {
            c.validate().err().map(|e| e.problems().iter().map(|p| p.to_string()).collect()).unwrap_or_default()
        };
        let with_routed = |n: usize| {
            let mut c = Config::default();
            c.services.truncate(1);
            let template = Config::default().services[1].clone();
            for i in 0..n {
                let mut s = template.clone();
                s.name = format!("svc-{i}");
                s.port = 20000 + i as u16;
                s.route = Some(RouteSpec {
                    short_name: format!("s{i}"),
                    path_pattern: Some(format!("/s{i}/*")),
                    priority: 100 + i as i32,
                    health_check_path: "/".into(),
                });
                c.services.push(s);
            }
            c
        };
        assert!(with_routed(99).validate().is_ok(), "99 path rules and 100 target groups (with the frontend's)");
        let found = problems(&with_routed(100));
        assert_eq!(found.len(), 1, "exactly 100 rules are fine, 101 target groups are not: {found:?}");
        assert!(found[0].contains("101 target groups") && found[0].contains("at most 100 target groups"));
        let found = problems(&with_routed(120));
        let rules: Vec<&String> = found.iter().filter(|p| p.contains("rules")).collect();
        assert_eq!(rules.len(), 1, "{found:?}");
        for needle in ["`services`", "120 listener rules", "at most 100 rules"] {
            assert!(rules[0].contains(needle), "{needle} in {rules:?}");
        }
        // Blue/green doubles them and adds the default service's `/*` pair: 51 routed shifting
        // services need 102 rules and 102 target groups.
        let mut c = with_routed(50);
        c.deploy.strategy = Strategy::BlueGreen;
        let found = problems(&c);
        assert!(found.iter().any(|p| p.contains("102 listener rules")), "{found:?}");
        assert!(found.iter().any(|p| p.contains("102 target groups")), "{found:?}");
    }
}
