//! How deploy changes running services (`[deploy]`): waiting, pruning data, failed tasks and
//! the deployment strategy.

use super::*;

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

impl Config {
    /// The ranges ECS accepts, and what a traffic-shifting strategy needs: a route, and free
    /// priorities for the rules ECS moves traffic on ([`strategy::rule_priorities`]).
    pub(super) fn validate_strategies(&self, p: &mut Vec<ConfigError>) {
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
}
