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

mod alarms;
mod aws;
mod cost;
mod deploy;
mod network;
pub mod platform;
mod sections;
mod services;
#[cfg(test)]
// figment's Jail closures return figment's (large) error type.
#[allow(clippy::result_large_err)]
mod tests;

pub use alarms::*;
pub use aws::*;
pub use cost::*;
pub use deploy::*;
pub use network::*;
pub use sections::*;
pub use services::*;

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
            services: platform::services(),
            cost: CostSettings::default(),
        }
    }
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

/// The problem of `field` when `value` is outside `range`: "must be between {start} and {end}{unit}".
fn between<T: PartialOrd + std::fmt::Display>(
    field: &str,
    value: T,
    range: std::ops::RangeInclusive<T>,
    unit: &str,
) -> Option<ConfigError> {
    let rule = || format!("must be between {} and {}{unit}", range.start(), range.end());
    (!range.contains(&value)).then(|| invalid(field, &value, rule()))
}

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
        p.extend(between("aws.max_attempts", self.aws.max_attempts, 1..=20, ""));
        p.extend(between("aws.max_in_flight", self.aws.max_in_flight, 1..=256, ""));
        if self.aws.throttle_patience_seconds > 3600 {
            p.push(invalid(
                "aws.throttle_patience_seconds",
                self.aws.throttle_patience_seconds,
                "must be at most 3600 (an hour)",
            ));
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
