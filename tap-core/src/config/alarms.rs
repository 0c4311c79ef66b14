//! The CloudWatch alarms on every service's health (`[alarms]`) and a service's own thresholds.

use super::*;

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

impl Config {
    /// What PutMetricAlarm accepts for the metrics tap watches (published once a minute).
    pub(super) fn validate_alarms(&self, p: &mut Vec<ConfigError>) {
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
}
