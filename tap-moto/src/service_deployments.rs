//! ECS *service deployments* and *service revisions* in the rollout double ([`crate::rollout`]):
//! the deployment configuration a service keeps (and how ECS validates and merges it), the
//! service deployment each deployment is, and the API that shows them: `ListServiceDeployments`,
//! `DescribeServiceDeployments`, `DescribeServiceRevisions` and `StopServiceDeployment`, with the
//! field names, ARN formats, states and errors of the ECS API reference.

use serde_json::{json, Map, Value};

use crate::rollout::{secs, Reply, Service, State};

/// The strategies that shift production traffic between a blue and a green target group.
pub const SHIFTING: [&str; 3] = ["BLUE_GREEN", "CANARY", "LINEAR"];

/// A service deployment (`arn:aws:ecs:REGION:ACCOUNT:service-deployment/CLUSTER/SERVICE/ID`).
#[derive(Debug, Clone)]
pub struct Sd {
    pub(crate) arn: String,
    pub(crate) created: u64,
    pub(crate) finished: Option<u64>,
    pub(crate) stopped: Option<u64>,
    pub(crate) updated: u64,
    /// The revisions running when it started.
    pub(crate) source: Vec<String>,
    /// The revision it deploys.
    pub(crate) target: String,
    pub(crate) status: &'static str,
    pub(crate) reason: String,
    pub(crate) stage: Option<&'static str>,
    /// The service's deploymentConfiguration when it started.
    pub(crate) config: Value,
    /// (reason, started, revision rolled back to).
    pub(crate) rollback: Option<(String, u64, String)>,
    /// When a blue/green rollback is done (traffic back, green tasks gone).
    pub(crate) rollback_done: Option<u64>,
    pub(crate) breaker_status: &'static str,
    pub(crate) alarm_status: &'static str,
    pub(crate) triggered: Vec<String>,
    /// Longest Period × EvaluationPeriods of its alarms (ms), once read from CloudWatch.
    pub(crate) alarm_window: Option<u64>,
    /// When one of its alarms was first seen in ALARM.
    pub(crate) alarm_trigger: Option<u64>,
    /// A StopServiceDeployment request: (when, ROLLBACK or ABORT).
    pub(crate) stop_request: Option<(u64, &'static str)>,
    /// Percentage of production traffic requested on the target revision.
    pub(crate) weight: f64,
    /// Whether test traffic has moved to the target revision.
    pub(crate) test_shifted: bool,
    /// (blue, green) target groups of a traffic-shifting deployment.
    pub(crate) groups: Option<(String, String)>,
}

impl Sd {
    /// Still running: PENDING, IN_PROGRESS or a requested stop.
    pub(crate) fn ongoing(&self) -> bool {
        matches!(self.status, "PENDING" | "IN_PROGRESS" | "STOP_REQUESTED" | "ROLLBACK_REQUESTED")
    }

    /// The strategy it runs with.
    pub(crate) fn strategy(&self) -> &str {
        strategy(&self.config)
    }
}

/// A service revision (`arn:aws:ecs:REGION:ACCOUNT:service-revision/CLUSTER/SERVICE/NUMBER`).
#[derive(Debug, Clone)]
pub struct Revision {
    pub(crate) arn: String,
    pub(crate) task_definition: String,
    pub(crate) created: u64,
    pub(crate) load_balancers: Value,
    /// The target group its tasks are registered in, behind the production listener rule.
    pub(crate) target_group: Option<(String, String)>,
    pub(crate) images: Vec<(String, String)>,
}

/// The deploymentConfiguration ECS shows for a service that sent none.
pub fn default_config() -> Value {
    json!({
        "deploymentCircuitBreaker": {"enable": false, "rollback": false},
        "maximumPercent": 200,
        "minimumHealthyPercent": 100,
        "alarms": {"alarmNames": [], "enable": false, "rollback": false},
        "strategy": "ROLLING",
    })
}

/// `stored` with each part of `request` that was sent replacing the stored one (UpdateService:
/// what is omitted stays as it was).
pub fn merge(stored: &Value, request: &Value) -> Value {
    let mut out = stored.as_object().cloned().unwrap_or_default();
    for (k, v) in request.as_object().into_iter().flatten() {
        out.insert(k.clone(), v.clone());
    }
    Value::Object(out)
}

/// The strategy of a deploymentConfiguration (ROLLING when unset).
pub fn strategy(config: &Value) -> &str {
    config["strategy"].as_str().unwrap_or("ROLLING")
}

/// Whether a strategy shifts traffic.
pub fn shifting(strategy: &str) -> bool {
    SHIFTING.contains(&strategy)
}

/// (enable, rollback, names) of the alarms part.
pub fn alarms(config: &Value) -> (bool, bool, Vec<String>) {
    let a = &config["alarms"];
    let names: Vec<String> =
        a["alarmNames"].as_array().into_iter().flatten().filter_map(|n| n.as_str().map(str::to_owned)).collect();
    (a["enable"].as_bool().unwrap_or(false) && !names.is_empty(), a["rollback"].as_bool().unwrap_or(false), names)
}

/// (enable, rollback) of the circuit breaker.
pub fn breaker(config: &Value) -> (bool, bool) {
    let b = &config["deploymentCircuitBreaker"];
    (b["enable"].as_bool().unwrap_or(false), b["rollback"].as_bool().unwrap_or(false))
}

/// Production traffic steps of a strategy: (ECS minutes after the green tasks are healthy,
/// percentage on green), ending at 100. Defaults as the reference gives them: canary 5.0 % for
/// 10 minutes, linear steps of 10.0 % every 6 minutes.
pub fn steps(config: &Value) -> Vec<(f64, f64)> {
    match strategy(config) {
        "CANARY" => {
            let c = &config["canaryConfiguration"];
            let percent = c["canaryPercent"].as_f64().unwrap_or(5.0);
            let bake = c["canaryBakeTimeInMinutes"].as_f64().unwrap_or(10.0);
            if percent >= 100.0 {
                vec![(0.0, 100.0)]
            } else {
                vec![(0.0, percent), (bake, 100.0)]
            }
        }
        "LINEAR" => {
            let l = &config["linearConfiguration"];
            let step = l["stepPercent"].as_f64().unwrap_or(10.0).max(0.1);
            let bake = l["stepBakeTimeInMinutes"].as_f64().unwrap_or(6.0);
            let mut out = Vec::new();
            let mut k = 1.0;
            loop {
                let w = ((k * step) * 10.0).round() / 10.0;
                out.push(((k - 1.0) * bake, w.min(100.0)));
                if w >= 100.0 {
                    break out;
                }
                k += 1.0;
            }
        }
        _ => vec![(0.0, 100.0)],
    }
}

/// `bakeTimeInMinutes` (0 when unset).
pub fn bake_minutes(config: &Value) -> f64 {
    config["bakeTimeInMinutes"].as_f64().unwrap_or(0.0)
}

fn invalid(message: &str) -> Reply {
    Reply::error("InvalidParameterException", message)
}

fn in_range(v: &Value, lo: f64, hi: f64) -> bool {
    v.as_f64().is_none_or(|x| (lo..=hi).contains(&x))
}

/// ECS's checks of a service's deployment configuration and load balancers, as CreateService and
/// UpdateService make them (the ranges of the API reference; a traffic-shifting strategy with a
/// load balancer needs its advancedConfiguration).
pub fn validate(config: &Value, load_balancers: &Value) -> Result<(), Reply> {
    let strategy = strategy(config);
    if !matches!(strategy, "ROLLING" | "BLUE_GREEN" | "CANARY" | "LINEAR") {
        return Err(invalid(&format!("Invalid deployment strategy: {strategy}.")));
    }
    if !in_range(&config["bakeTimeInMinutes"], 0.0, 1440.0) {
        return Err(invalid("bakeTimeInMinutes must be between 0 and 1440."));
    }
    let c = &config["canaryConfiguration"];
    if !in_range(&c["canaryPercent"], 0.1, 100.0)
        || c["canaryPercent"].as_f64().is_some_and(|p| ((p * 10.0).round() - p * 10.0).abs() > 1e-6)
    {
        return Err(invalid("canaryPercent must be a multiple of 0.1 between 0.1 and 100.0."));
    }
    if !in_range(&c["canaryBakeTimeInMinutes"], 0.0, 1440.0) {
        return Err(invalid("canaryBakeTimeInMinutes must be between 0 and 1440."));
    }
    let l = &config["linearConfiguration"];
    if !in_range(&l["stepPercent"], 3.0, 100.0)
        || l["stepPercent"].as_f64().is_some_and(|p| ((p * 10.0).round() - p * 10.0).abs() > 1e-6)
    {
        return Err(invalid("stepPercent must be a multiple of 0.1 between 3.0 and 100.0."));
    }
    if !in_range(&l["stepBakeTimeInMinutes"], 0.0, 1440.0) {
        return Err(invalid("stepBakeTimeInMinutes must be between 0 and 1440."));
    }
    if shifting(strategy) {
        for lb in load_balancers.as_array().into_iter().flatten() {
            let a = &lb["advancedConfiguration"];
            let missing: Vec<&str> = ["alternateTargetGroupArn", "productionListenerRule", "roleArn"]
                .into_iter()
                .filter(|k| a[*k].as_str().is_none_or(str::is_empty))
                .collect();
            if !missing.is_empty() {
                return Err(invalid(&format!(
                    "The {strategy} deployment strategy requires advancedConfiguration with {} for the load balancer of target group {}.",
                    missing.join(", "),
                    lb["targetGroupArn"].as_str().unwrap_or_default()
                )));
            }
            if a["alternateTargetGroupArn"] == lb["targetGroupArn"] {
                return Err(invalid("alternateTargetGroupArn must differ from targetGroupArn."));
            }
        }
    }
    Ok(())
}

/// (cluster name, service name or ARN's name) a request names, with `default` for no cluster.
fn names(req: &Value) -> (String, String) {
    let cluster = req["cluster"].as_str().unwrap_or("default");
    let cluster = cluster.rsplit('/').next().unwrap_or(cluster).to_string();
    let service = req["service"].as_str().unwrap_or_default();
    (cluster, service.rsplit('/').next().unwrap_or(service).to_string())
}

fn find_service<'a>(state: &'a State, region: &str, req: &Value) -> Option<&'a Service> {
    let (cluster, service) = names(req);
    state.services.values().find(|s| {
        s.name == service
            && s.cluster_arn.rsplit('/').next() == Some(cluster.as_str())
            && (region.is_empty() || s.arn.contains(&format!(":{region}:")))
    })
}

/// `ListServiceDeployments`: newest first, filtered by status and createdAt, paginated.
pub(crate) fn list(state: &State, region: &str, req: &Value) -> Reply {
    let Some(service) = find_service(state, region, req) else {
        return Reply::error("ServiceNotFoundException", "Service not found.");
    };
    let statuses: Vec<&str> = req["status"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
    let after = req["createdAt"]["after"].as_f64();
    let before = req["createdAt"]["before"].as_f64();
    let max = req["maxResults"].as_u64().unwrap_or(20);
    if !(1..=100).contains(&max) {
        return invalid("maxResults must be between 1 and 100.");
    }
    let from: usize = match req["nextToken"].as_str() {
        Some(t) => match t.strip_prefix("sd-page-").and_then(|n| n.parse().ok()) {
            Some(n) => n,
            None => return invalid("Invalid nextToken."),
        },
        None => 0,
    };
    let matching: Vec<&crate::service_deployments::Sd> = service
        .sds
        .iter()
        .rev()
        .filter(|sd| statuses.is_empty() || statuses.contains(&sd.status))
        .filter(|sd| after.is_none_or(|a| secs(sd.created) >= a))
        .filter(|sd| before.is_none_or(|b| secs(sd.created) <= b))
        .collect();
    let page: Vec<Value> = matching
        .iter()
        .skip(from)
        .take(max as usize)
        .map(|sd| {
            let mut v = json!({
                "serviceDeploymentArn": sd.arn,
                "serviceArn": service.arn,
                "clusterArn": service.cluster_arn,
                "startedAt": secs(sd.created),
                "createdAt": secs(sd.created),
                "targetServiceRevisionArn": sd.target,
                "status": sd.status,
            });
            if let Some(f) = sd.finished {
                v["finishedAt"] = json!(secs(f));
            }
            if !sd.reason.is_empty() {
                v["statusReason"] = json!(sd.reason);
            }
            v
        })
        .collect();
    let mut out = json!({"serviceDeployments": page});
    if from + (max as usize) < matching.len() {
        out["nextToken"] = json!(format!("sd-page-{}", from + max as usize));
    }
    Reply::ok(out)
}

/// The ServiceRevisionSummary of `revision` within `sd` of `service` at `now`.
fn summary(service: &Service, state: &State, sd: &Sd, revision: &str, target: bool, now: u64) -> Value {
    let (pending, running) = service.revision_counts(state, revision, now);
    let requested = if target {
        if matches!(sd.status, "ROLLBACK_SUCCESSFUL" | "ROLLBACK_IN_PROGRESS") {
            0
        } else {
            service.desired
        }
    } else if sd.status == "SUCCESSFUL" {
        0
    } else {
        service.desired
    };
    let mut v = json!({
        "arn": revision,
        "requestedTaskCount": requested,
        "runningTaskCount": running,
        "pendingTaskCount": pending,
    });
    if shifting(sd.strategy()) {
        let (prod, test) = if target {
            (sd.weight, if sd.test_shifted { 100.0 } else { 0.0 })
        } else {
            (100.0 - sd.weight, if sd.test_shifted { 0.0 } else { 100.0 })
        };
        v["requestedProductionTrafficWeight"] = json!(prod);
        v["requestedTestTrafficWeight"] = json!(test);
    }
    v
}

/// A ServiceDeployment document.
pub(crate) fn document(service: &Service, state: &State, sd: &Sd, breaker_threshold: usize, now: u64) -> Value {
    let mut v = json!({
        "serviceDeploymentArn": sd.arn,
        "serviceArn": service.arn,
        "clusterArn": service.cluster_arn,
        "createdAt": secs(sd.created),
        "startedAt": secs(sd.created),
        "updatedAt": secs(sd.updated),
        "sourceServiceRevisions": sd.source.iter().map(|r| summary(service, state, sd, r, false, now)).collect::<Vec<_>>(),
        "targetServiceRevision": summary(service, state, sd, &sd.target, true, now),
        "status": sd.status,
        "deploymentConfiguration": sd.config,
        "deploymentCircuitBreaker": {
            "status": sd.breaker_status,
            "failureCount": service.failed_tasks_of_revision(state, &sd.target, now),
            "threshold": breaker_threshold,
        },
    });
    if let Some(f) = sd.finished {
        v["finishedAt"] = json!(secs(f));
    }
    if let Some(s) = sd.stopped {
        v["stoppedAt"] = json!(secs(s));
    }
    if !sd.reason.is_empty() {
        v["statusReason"] = json!(sd.reason);
    }
    if let Some(stage) = sd.stage {
        v["lifecycleStage"] = json!(stage);
    }
    if let Some((reason, at, revision)) = &sd.rollback {
        v["rollback"] = json!({"reason": reason, "startedAt": secs(*at), "serviceRevisionArn": revision});
    }
    let (_, _, names) = alarms(&sd.config);
    let mut a = Map::new();
    a.insert("status".into(), json!(sd.alarm_status));
    if !names.is_empty() {
        a.insert("alarmNames".into(), json!(names));
    }
    if !sd.triggered.is_empty() {
        a.insert("triggeredAlarmNames".into(), json!(sd.triggered));
    }
    v["alarms"] = Value::Object(a);
    v
}

/// `DescribeServiceDeployments`: known ARNs described, the others in `failures` (MISSING).
pub(crate) fn describe(state: &State, req: &Value, breaker_threshold: usize, now: u64) -> Reply {
    let arns: Vec<&str> =
        req["serviceDeploymentArns"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
    if arns.len() > 20 {
        return invalid("serviceDeploymentArns can have at most 20 items.");
    }
    let mut found = Vec::new();
    let mut failures = Vec::new();
    for arn in arns {
        let hit = state.services.values().find_map(|s| s.sds.iter().find(|sd| sd.arn == arn).map(|sd| (s, sd)));
        match hit {
            Some((service, sd)) => found.push(document(service, state, sd, breaker_threshold, now)),
            None => failures.push(json!({"arn": arn, "reason": "MISSING"})),
        }
    }
    Reply::ok(json!({"serviceDeployments": found, "failures": failures}))
}

/// `DescribeServiceRevisions`: known ARNs described, the others in `failures` (MISSING).
pub(crate) fn describe_revisions(state: &State, req: &Value) -> Reply {
    let arns: Vec<&str> =
        req["serviceRevisionArns"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
    if arns.len() > 20 {
        return invalid("serviceRevisionArns can have at most 20 items.");
    }
    let mut found = Vec::new();
    let mut failures = Vec::new();
    for arn in arns {
        let hit = state.services.values().find_map(|s| s.revisions.iter().find(|r| r.arn == arn).map(|r| (s, r)));
        let Some((service, r)) = hit else {
            failures.push(json!({"arn": arn, "reason": "MISSING"}));
            continue;
        };
        let mut v = json!({
            "serviceRevisionArn": r.arn,
            "serviceArn": service.arn,
            "clusterArn": service.cluster_arn,
            "taskDefinition": r.task_definition,
            "launchType": "FARGATE",
            "platformVersion": "1.4.0",
            "platformFamily": "Linux",
            "loadBalancers": r.load_balancers,
            "containerImages": r.images.iter().map(|(name, image)| json!({"containerName": name, "image": image})).collect::<Vec<_>>(),
            "guardDutyEnabled": false,
            "createdAt": secs(r.created),
        });
        if let Some((tg, rule)) = &r.target_group {
            v["resolvedConfiguration"] =
                json!({"loadBalancers": [{"targetGroupArn": tg, "productionListenerRule": rule}]});
        }
        found.push(v);
    }
    Reply::ok(json!({"serviceRevisions": found, "failures": failures}))
}

/// `StopServiceDeployment`: an ongoing deployment is stopped (ROLLBACK, the default: back to the
/// source revision; ABORT: it stops where it is); a finished one is a conflict.
pub(crate) fn stop(state: &mut State, req: &Value, now: u64) -> Reply {
    let arn = req["serviceDeploymentArn"].as_str().unwrap_or_default();
    let stop_type = match req["stopType"].as_str().unwrap_or("ROLLBACK") {
        "ROLLBACK" => "ROLLBACK",
        "ABORT" => "ABORT",
        other => return invalid(&format!("Invalid stopType: {other}.")),
    };
    let Some(sd) = state.services.values_mut().find_map(|s| s.sds.iter_mut().find(|sd| sd.arn == arn)) else {
        return Reply::error(
            "ServiceDeploymentNotFoundException",
            &format!("The service deployment {arn} does not exist."),
        );
    };
    match sd.status {
        "PENDING" | "IN_PROGRESS" => {
            sd.status = if stop_type == "ROLLBACK" { "ROLLBACK_REQUESTED" } else { "STOP_REQUESTED" };
            sd.stop_request = Some((now, stop_type));
            sd.updated = now;
        }
        // Already stopping or rolling back: it goes on.
        "STOP_REQUESTED" | "ROLLBACK_REQUESTED" | "ROLLBACK_IN_PROGRESS" => {}
        status => {
            return Reply::error(
                "ConflictException",
                &format!("The service deployment {arn} is {status} and can no longer be stopped."),
            )
        }
    }
    Reply::ok(json!({"serviceDeploymentArn": arn}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strategies_shift_in_their_steps() {
        assert_eq!(steps(&json!({"strategy": "BLUE_GREEN"})), vec![(0.0, 100.0)]);
        assert_eq!(
            steps(
                &json!({"strategy": "CANARY", "canaryConfiguration": {"canaryPercent": 20.0, "canaryBakeTimeInMinutes": 3}})
            ),
            vec![(0.0, 20.0), (3.0, 100.0)]
        );
        assert_eq!(steps(&json!({"strategy": "CANARY"})), vec![(0.0, 5.0), (10.0, 100.0)]);
        assert_eq!(
            steps(
                &json!({"strategy": "LINEAR", "linearConfiguration": {"stepPercent": 40.0, "stepBakeTimeInMinutes": 2}})
            ),
            vec![(0.0, 40.0), (2.0, 80.0), (4.0, 100.0)]
        );
    }

    #[test]
    fn updates_merge_and_validation_names_the_rule() {
        let stored = merge(&default_config(), &json!({"strategy": "BLUE_GREEN", "bakeTimeInMinutes": 5}));
        let updated = merge(&stored, &json!({"alarms": {"alarmNames": ["a"], "enable": true, "rollback": true}}));
        assert_eq!(updated["strategy"], "BLUE_GREEN");
        assert_eq!(updated["bakeTimeInMinutes"], 5);
        assert_eq!(alarms(&updated), (true, true, vec!["a".to_string()]));
        let lb = json!([{"targetGroupArn": "tg-1", "containerName": "c", "containerPort": 80}]);
        let err = validate(&updated, &lb).unwrap_err();
        assert_eq!(err.status, 400);
        assert!(
            err.body.contains("InvalidParameterException") && err.body.contains("advancedConfiguration"),
            "{}",
            err.body
        );
        let with_advanced = json!([{"targetGroupArn": "tg-1", "advancedConfiguration": {"alternateTargetGroupArn": "tg-2", "productionListenerRule": "r", "roleArn": "role"}}]);
        assert!(validate(&updated, &with_advanced).is_ok());
        assert!(
            validate(&json!({"strategy": "LINEAR", "linearConfiguration": {"stepPercent": 2.0}}), &json!([])).is_err()
        );
        assert!(validate(&json!({"strategy": "CANARY", "canaryConfiguration": {"canaryPercent": 0.05}}), &json!([]))
            .is_err());
        assert!(validate(&json!({"bakeTimeInMinutes": 1441}), &json!([])).is_err());
        assert!(validate(&json!({"strategy": "ROLLING"}), &lb).is_ok(), "rolling needs no advancedConfiguration");
    }
}
