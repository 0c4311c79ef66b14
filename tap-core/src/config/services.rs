//! The services and secrets of the platform (`[[services]]`, `[[secrets]]`): data, so a fourth
//! service is a config change; the SPEC's three are the default.

use super::*;

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

pub(super) fn default_secrets() -> Vec<SecretSpec> {
    vec![
        SecretSpec {
            name: "db-credentials".into(),
            fixed_fields: BTreeMap::from([("username".into(), "tap_admin".into())]),
            generated_fields: vec!["password".into()],
        },
        SecretSpec { name: "api-keys".into(), fixed_fields: BTreeMap::new(), generated_fields: vec!["api_key".into()] },
    ]
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

impl Config {
    pub(super) fn validate_services(&self, p: &mut Vec<ConfigError>) {
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

    /// The per-load-balancer limits AWS sets that the config alone can exceed
    /// ([`crate::quota::listener_rules`], [`crate::quota::target_groups`]): refused here instead of
    /// at the 101st rule, after half the platform was built.
    pub(super) fn validate_load_balancer_limits(&self, p: &mut Vec<ConfigError>) {
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
}
