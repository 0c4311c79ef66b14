//! How ECS replaces a running service's tasks: the deployment strategies ECS runs itself
//! (`deploymentConfiguration.strategy`), their settings, and the checks ECS would make of them,
//! done before any AWS call.
//!
//! `rolling` replaces tasks in place. `blue-green`, `canary` and `linear` start the new revision
//! beside the old one in a second (alternate) target group, let test traffic reach it, then move
//! production traffic on a listener rule — all at once, a canary share first, or in equal steps —
//! and keep the old revision for a bake time, so a rollback is a traffic switch.

use serde::{Deserialize, Serialize};

/// A deployment strategy (`deploy.strategy`, or a service's `deploy.strategy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// Tasks are replaced in place (ECS `ROLLING`).
    #[default]
    Rolling,
    /// The new revision gets all production traffic at once, after its test traffic (`BLUE_GREEN`).
    BlueGreen,
    /// A share of production traffic first, the rest after the canary bake time (`CANARY`).
    Canary,
    /// Production traffic in equal steps, a bake time after each (`LINEAR`).
    Linear,
}

impl Strategy {
    /// Whether ECS moves traffic between two target groups (everything but `rolling`).
    pub fn shifts_traffic(self) -> bool {
        self != Strategy::Rolling
    }

    /// The name ECS gives it.
    pub fn ecs_name(self) -> &'static str {
        match self {
            Strategy::Rolling => "ROLLING",
            Strategy::BlueGreen => "BLUE_GREEN",
            Strategy::Canary => "CANARY",
            Strategy::Linear => "LINEAR",
        }
    }

    /// The name tap's config gives it.
    pub fn config_name(self) -> &'static str {
        match self {
            Strategy::Rolling => "rolling",
            Strategy::BlueGreen => "blue-green",
            Strategy::Canary => "canary",
            Strategy::Linear => "linear",
        }
    }
}

/// A service's strategy with every setting resolved (the service's own over `deploy`'s).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StrategySettings {
    /// The strategy.
    pub strategy: Strategy,
    /// Minutes the old revision is kept after production traffic moved (traffic-shifting
    /// strategies).
    pub bake_time_minutes: u32,
    /// Percent of production traffic the canary gets first.
    pub canary_percent: f64,
    /// Minutes between the canary share and the rest.
    pub canary_bake_time_minutes: u32,
    /// Percent of production traffic moved in each linear step.
    pub linear_step_percent: f64,
    /// Minutes between linear steps.
    pub linear_step_bake_time_minutes: u32,
}

/// A service's own strategy settings (`services[i].deploy`); what it leaves out comes from `deploy`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StrategyOverrides {
    /// See [`StrategySettings::strategy`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub strategy: Option<Strategy>,
    /// See [`StrategySettings::bake_time_minutes`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bake_time_minutes: Option<u32>,
    /// See [`StrategySettings::canary_percent`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub canary_percent: Option<f64>,
    /// See [`StrategySettings::canary_bake_time_minutes`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub canary_bake_time_minutes: Option<u32>,
    /// See [`StrategySettings::linear_step_percent`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub linear_step_percent: Option<f64>,
    /// See [`StrategySettings::linear_step_bake_time_minutes`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub linear_step_bake_time_minutes: Option<u32>,
}

impl StrategyOverrides {
    /// Whether the service sets `field` (a name [`StrategySettings::problems`] reports) itself.
    pub fn sets(&self, field: &str) -> bool {
        match field {
            "strategy" => self.strategy.is_some(),
            "bake_time_minutes" => self.bake_time_minutes.is_some(),
            "canary_percent" => self.canary_percent.is_some(),
            "canary_bake_time_minutes" => self.canary_bake_time_minutes.is_some(),
            "linear_step_percent" => self.linear_step_percent.is_some(),
            "linear_step_bake_time_minutes" => self.linear_step_bake_time_minutes.is_some(),
            _ => false,
        }
    }
}

impl StrategySettings {
    /// These settings with the service's own on top.
    pub fn with(&self, own: &StrategyOverrides) -> StrategySettings {
        StrategySettings {
            strategy: own.strategy.unwrap_or(self.strategy),
            bake_time_minutes: own.bake_time_minutes.unwrap_or(self.bake_time_minutes),
            canary_percent: own.canary_percent.unwrap_or(self.canary_percent),
            canary_bake_time_minutes: own.canary_bake_time_minutes.unwrap_or(self.canary_bake_time_minutes),
            linear_step_percent: own.linear_step_percent.unwrap_or(self.linear_step_percent),
            linear_step_bake_time_minutes: own
                .linear_step_bake_time_minutes
                .unwrap_or(self.linear_step_bake_time_minutes),
        }
    }

    /// What ECS would refuse in these settings: (field below `deploy.`, value, rule). Only the
    /// settings the strategy uses are checked.
    pub fn problems(&self) -> Vec<(&'static str, String, String)> {
        let mut p = Vec::new();
        let minutes = |p: &mut Vec<(&'static str, String, String)>, field, value: u32| {
            if value > MAX_BAKE_MINUTES {
                p.push((field, value.to_string(), format!("ECS accepts 0 to {MAX_BAKE_MINUTES} minutes (24 hours)")));
            }
        };
        let percent = |p: &mut Vec<(&'static str, String, String)>, field, value: f64, min: f64| {
            if !(min..=100.0).contains(&value) || !is_tenth(value) {
                p.push((field, value.to_string(), format!("ECS accepts multiples of 0.1 from {min:.1} to 100.0")));
            }
        };
        if self.strategy.shifts_traffic() {
            minutes(&mut p, "bake_time_minutes", self.bake_time_minutes);
        }
        match self.strategy {
            Strategy::Canary => {
                percent(&mut p, "canary_percent", self.canary_percent, 0.1);
                minutes(&mut p, "canary_bake_time_minutes", self.canary_bake_time_minutes);
            }
            Strategy::Linear => {
                percent(&mut p, "linear_step_percent", self.linear_step_percent, 3.0);
                minutes(&mut p, "linear_step_bake_time_minutes", self.linear_step_bake_time_minutes);
            }
            Strategy::Rolling | Strategy::BlueGreen => {}
        }
        p
    }
}

/// The longest bake time ECS accepts (24 hours).
pub const MAX_BAKE_MINUTES: u32 = 1440;

/// A percentage as tenths of a percent, the precision ECS keeps (`10.0` → `100`).
pub fn tenths(percent: f64) -> u32 {
    (percent * 10.0).round().max(0.0) as u32
}

fn is_tenth(value: f64) -> bool {
    ((value * 10.0) - (value * 10.0).round()).abs() < 1e-6
}

/// The header that sends a request to a traffic-shifting service's test route (its new revision
/// while a deployment runs): `curl -H 'x-tap-test-traffic: true' http://<alb>/api/...`.
pub const TEST_TRAFFIC_HEADER: &str = "x-tap-test-traffic";
/// The value [`TEST_TRAFFIC_HEADER`] must have.
pub const TEST_TRAFFIC_VALUE: &str = "true";
/// Priority of the production rule of a traffic-shifting service that is the listener's default
/// (ECS moves traffic on a rule, not on a listener's default action): the last one, matching `/*`.
pub const DEFAULT_SERVICE_RULE_PRIORITY: i32 = 50000;

/// The priorities of a routed service's rules: (production, test). A path-routed service keeps its
/// configured priority for production and, when it shifts traffic, has its test rule just before
/// it; the listener's default service gets the last two priorities when it shifts traffic.
pub fn rule_priorities(path_priority: Option<i32>, shifts: bool) -> (Option<i32>, Option<i32>) {
    match (path_priority, shifts) {
        (Some(p), false) => (Some(p), None),
        (Some(p), true) => (Some(p), Some(p - 1)),
        (None, false) => (None, None),
        (None, true) => (Some(DEFAULT_SERVICE_RULE_PRIORITY), Some(DEFAULT_SERVICE_RULE_PRIORITY - 1)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> StrategySettings {
        StrategySettings {
            strategy: Strategy::Rolling,
            bake_time_minutes: 5,
            canary_percent: 5.0,
            canary_bake_time_minutes: 10,
            linear_step_percent: 10.0,
            linear_step_bake_time_minutes: 6,
        }
    }

    #[test]
    fn a_service_overrides_only_what_it_sets() {
        let own =
            StrategyOverrides { strategy: Some(Strategy::Canary), canary_percent: Some(20.0), ..Default::default() };
        let s = defaults().with(&own);
        assert_eq!(s.strategy, Strategy::Canary);
        assert_eq!(s.canary_percent, 20.0);
        assert_eq!(s.canary_bake_time_minutes, 10);
    }

    #[test]
    fn ecs_ranges_are_checked_for_the_settings_the_strategy_uses() {
        let linear = StrategySettings { strategy: Strategy::Linear, linear_step_percent: 2.5, ..defaults() };
        let fields: Vec<&str> = linear.problems().iter().map(|(f, _, _)| *f).collect();
        assert_eq!(fields, ["linear_step_percent"]);
        let canary = StrategySettings {
            strategy: Strategy::Canary,
            canary_percent: 0.05,
            bake_time_minutes: 1441,
            ..defaults()
        };
        let fields: Vec<&str> = canary.problems().iter().map(|(f, _, _)| *f).collect();
        assert_eq!(fields, ["bake_time_minutes", "canary_percent"]);
        assert!(StrategySettings { strategy: Strategy::Canary, canary_percent: 12.34, ..defaults() }
            .problems()
            .iter()
            .any(|(_, v, rule)| v == "12.34" && rule.contains("multiples of 0.1")));
        // Rolling uses none of them.
        let rolling = StrategySettings { linear_step_percent: 0.0, bake_time_minutes: 9999, ..defaults() };
        assert!(rolling.problems().is_empty());
    }

    #[test]
    fn test_rules_come_just_before_their_production_rules() {
        assert_eq!(rule_priorities(Some(10), true), (Some(10), Some(9)));
        assert_eq!(rule_priorities(Some(10), false), (Some(10), None));
        assert_eq!(rule_priorities(None, true), (Some(50000), Some(49999)));
        assert_eq!(rule_priorities(None, false), (None, None));
        assert_eq!(tenths(12.5), 125);
    }
}
