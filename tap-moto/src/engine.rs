//! How the ECS rollout double ([`crate::rollout`]) plays deployments forward in time: rolling
//! waves, the blue/green, canary and linear lifecycle with its traffic steps, the circuit
//! breaker, alarms, stop requests and rollbacks.

use crate::rollout::{start_deployment, Deployment, Double, Service, State};
use crate::service_deployments as sds;
use crate::tasks::stop;

/// Why a deployment failed.
#[derive(Debug, Clone)]
pub(crate) enum Cause {
    /// The circuit breaker counted enough stopped tasks.
    Breaker,
    /// These alarms were in ALARM.
    Alarms(Vec<String>),
    /// StopServiceDeployment with ROLLBACK.
    StopRollback,
}

impl Cause {
    /// (the deployment's rolloutStateReason and the service deployment's statusReason, the
    /// service event's words after "deployment failed:")
    fn words(&self) -> (String, &'static str) {
        match self {
            Cause::Breaker => {
                ("ECS deployment circuit breaker: tasks failed to start.".into(), "tasks failed to start.")
            }
            Cause::Alarms(names) => {
                (format!("ECS deployment failed: alarm detected: {}.", names.join(", ")), "alarm detected.")
            }
            Cause::StopRollback => (
                "Service deployment rolled back because of a StopServiceDeployment request.".into(),
                "rollback requested.",
            ),
        }
    }

    /// The prefix of a rolling rollback deployment's rolloutStateReason.
    fn rollback_prefix(&self) -> &'static str {
        match self {
            Cause::Breaker => "ECS deployment circuit breaker",
            Cause::Alarms(_) => "ECS deployment alarms",
            Cause::StopRollback => "ECS deployment stop",
        }
    }
}

impl Double {
    /// Plays every service's rollout forward to `now`.
    pub(crate) fn advance(&self, state: &mut State, now: u64) {
        let arns: Vec<String> = state.services.keys().cloned().collect();
        for arn in arns {
            let Some(mut service) = state.services.remove(&arn) else { continue };
            // Each step handles the PRIMARY until it waits for a later time.
            for _ in 0..100 {
                if !self.step(state, &mut service, now) {
                    break;
                }
            }
            self.finish_rollbacks(&mut service, now);
            state.services.insert(arn, service);
        }
    }

    /// One step of the PRIMARY deployment; `true` when another step may follow.
    fn step(&self, state: &mut State, service: &mut Service, now: u64) -> bool {
        let Some(primary) = service.deployments.first().cloned() else { return false };
        if primary.state != "IN_PROGRESS" || service.desired == 0 {
            return false;
        }
        let i = primary.sd;
        let Some(sd) = service.sds.get(i).cloned() else { return false };
        if let Some((at, kind)) = sd.stop_request.filter(|(at, _)| *at < now && sd.ongoing()) {
            if kind == "ROLLBACK" {
                self.fail(state, service, at, Cause::StopRollback, true);
            } else {
                let d = &mut service.deployments[0];
                d.state = "FAILED";
                d.reason = "Service deployment stopped because of a StopServiceDeployment request.".into();
                let sd = &mut service.sds[i];
                sd.status = "STOPPED";
                sd.reason = "Service deployment stopped because of a StopServiceDeployment request.".into();
                sd.stopped = Some(at);
                sd.updated = at;
                sd.stop_request = None;
            }
            return true;
        }
        if let Some(at) = sd.alarm_trigger.filter(|_| sd.status == "IN_PROGRESS" && !primary.rollback) {
            service.sds[i].alarm_status = "TRIGGERED";
            let (_, rollback, _) = sds::alarms(&sd.config);
            self.fail(state, service, at.min(now), Cause::Alarms(sd.triggered.clone()), rollback);
            return true;
        }
        if sds::shifting(sd.strategy()) && !primary.rollback {
            self.step_shifting(state, service, &primary, now)
        } else {
            self.step_rolling(state, service, &primary, now)
        }
    }

    /// A rolling deployment (or a rolling rollback): all tasks replaced, then the alarm bake.
    fn step_rolling(&self, state: &mut State, service: &mut Service, primary: &Deployment, now: u64) -> bool {
        let (start, healthy) = (Self::ms(self.settings.task_start), Self::ms(self.settings.healthy_after));
        let td = state.task_definitions.get(&primary.task_definition).cloned();
        if let Some(failure) = td.as_ref().and_then(|td| self.failure_of(td)) {
            return self.failing_waves(state, service, primary, td.as_ref(), failure, now);
        }
        if primary.waves == 0 {
            self.launch(state, service, primary, td.as_ref(), primary.created, None);
        }
        let scaled = primary.created + start + healthy;
        if now < scaled {
            return false;
        }
        // The older deployments' tasks stop once the new ones are healthy.
        let old: Vec<String> = service.deployments.iter().skip(1).map(|d| d.id.clone()).collect();
        for t in state.tasks.iter_mut().filter(|t| old.contains(&t.started_by)) {
            stop(
                t,
                scaled,
                "ServiceSchedulerInitiated",
                &format!("Scaling activity initiated by (deployment {})", primary.id),
            );
        }
        let sd = &service.sds[primary.sd];
        let bake = if primary.rollback || !sds::alarms(&sd.config).0 {
            0
        } else {
            match sd.alarm_window {
                Some(window) => window,
                // ECS reads the alarms first (a double without upstream has none to read).
                None if self.upstream.is_some() => return false,
                None => 0,
            }
        };
        let done = scaled + bake;
        if now < done {
            return false;
        }
        self.complete(state, service, primary, done);
        true
    }

    /// A traffic-shifting deployment (BLUE_GREEN, CANARY, LINEAR) through its lifecycle stages.
    fn step_shifting(&self, state: &mut State, service: &mut Service, primary: &Deployment, now: u64) -> bool {
        let (start, healthy) = (Self::ms(self.settings.task_start), Self::ms(self.settings.healthy_after));
        let minute = Self::ms(self.settings.minute) as f64;
        let i = primary.sd;
        let td = state.task_definitions.get(&primary.task_definition).cloned();
        if let Some(failure) = td.as_ref().and_then(|td| self.failure_of(td)) {
            service.sds[i].stage = Some("SCALE_UP");
            return self.failing_waves(state, service, primary, td.as_ref(), failure, now);
        }
        if primary.waves == 0 {
            self.launch(state, service, primary, td.as_ref(), primary.created, None);
        }
        let up = primary.created + start + healthy;
        if now < up {
            service.sds[i].stage = Some("SCALE_UP");
            return false;
        }
        let groups = service.sds[i].groups.clone();
        if !service.sds[i].test_shifted {
            if let Some((blue, green)) = &groups {
                self.move_test_traffic(service, blue, green);
            }
            service.sds[i].test_shifted = true;
            service.sds[i].updated = up;
        }
        let config = service.sds[i].config.clone();
        let steps: Vec<(u64, f64)> =
            sds::steps(&config).into_iter().map(|(minutes, w)| (up + (minutes * minute) as u64, w)).collect();
        if let Some(&(at, weight)) = steps.iter().rev().find(|(at, _)| *at <= now) {
            if weight > service.sds[i].weight {
                if let Some((blue, green)) = &groups {
                    self.move_traffic(service, blue, green, weight, false);
                }
                service.sds[i].weight = weight;
                service.sds[i].updated = at;
            }
        }
        let shifted = steps.last().map_or(up, |(at, _)| *at);
        if now < shifted {
            service.sds[i].stage = Some("PRODUCTION_TRAFFIC_SHIFT");
            return false;
        }
        let baked = shifted + (sds::bake_minutes(&config) * minute) as u64;
        if now < baked {
            service.sds[i].stage = Some("BAKE_TIME");
            return false;
        }
        // Clean-up: the blue tasks stop, which takes them as long as starting does.
        let done = baked + start;
        service.sds[i].stage = Some("CLEAN_UP");
        if now < done {
            return false;
        }
        if let (Some(shift), Some((_, green))) = (service.shift.as_mut(), groups) {
            shift.live = green;
        }
        self.complete(state, service, primary, done);
        true
    }

    /// A deployment whose tasks fail: a wave every `task_start`, until the breaker (when on)
    /// fails it.
    fn failing_waves(
        &self,
        state: &mut State,
        service: &mut Service,
        primary: &Deployment,
        td: Option<&crate::rollout::TaskDef>,
        failure: crate::rollout::Failure,
        now: u64,
    ) -> bool {
        let start = Self::ms(self.settings.task_start);
        let threshold = self.settings.circuit_breaker_threshold.max(1) as u64;
        let per_wave = service.desired.max(1) as u64;
        let fail_wave = threshold.div_ceil(per_wave);
        let next = primary.created + primary.waves * start;
        let (breaker, rollback) = sds::breaker(&service.sds[primary.sd].config);
        if breaker && primary.waves >= fail_wave && now >= next && !primary.rollback {
            // The breaker trips when the last wave it needed has stopped.
            service.sds[primary.sd].breaker_status = "TRIGGERED";
            self.fail(state, service, next, Cause::Breaker, rollback);
            return true;
        }
        if now < next {
            return false;
        }
        self.launch(state, service, primary, td, next, Some((failure, next + start)));
        true
    }

    /// The PRIMARY deployment completed at `at`: older deployments go, the service deployment is
    /// SUCCESSFUL (or, for a rollback's deployment, ROLLBACK_SUCCESSFUL).
    fn complete(&self, state: &mut State, service: &mut Service, primary: &Deployment, at: u64) {
        let d = &mut service.deployments[0];
        d.state = "COMPLETED";
        d.reason = "ECS deployment completed.".into();
        service.last_completed = Some((primary.task_definition.clone(), primary.id.clone(), primary.revision.clone()));
        for old in service.deployments.drain(1..) {
            for t in state.tasks.iter_mut().filter(|t| t.started_by == old.id) {
                stop(
                    t,
                    at,
                    "ServiceSchedulerInitiated",
                    &format!("Scaling activity initiated by (deployment {})", primary.id),
                );
            }
        }
        service.events.push((at, format!("(service {}) has reached a steady state.", service.name)));
        let sd = &mut service.sds[primary.sd];
        sd.finished = Some(at);
        sd.updated = at;
        if primary.rollback {
            sd.status = "ROLLBACK_SUCCESSFUL";
        } else {
            sd.status = "SUCCESSFUL";
            sd.weight = 100.0;
            if sd.breaker_status == "MONITORING" {
                sd.breaker_status = "MONITORING_COMPLETE";
            }
            if sd.alarm_status == "MONITORING" {
                sd.alarm_status = "MONITORING_COMPLETE";
            }
        }
    }

    /// The PRIMARY deployment failed at `at` for `cause`; with `rollback`, back to what ran before.
    fn fail(&self, state: &mut State, service: &mut Service, at: u64, cause: Cause, rollback: bool) {
        let primary = service.deployments[0].clone();
        let i = primary.sd;
        let (reason, event) = cause.words();
        {
            let d = &mut service.deployments[0];
            d.state = "FAILED";
            d.reason = reason.clone();
            d.status = "ACTIVE";
        }
        service
            .events
            .push((at, format!("(service {}) (deployment {}) deployment failed: {event}", service.name, primary.id)));
        let sd = &mut service.sds[i];
        sd.stop_request = None;
        sd.reason = reason.clone();
        sd.updated = at;
        if sds::shifting(sd.strategy()) {
            // Blue still runs: traffic goes back to it and green stops.
            let blue = service.deployments.iter().position(|d| d.state == "COMPLETED");
            match blue.filter(|_| rollback) {
                Some(b) => {
                    if let Some((blue_tg, green_tg)) = service.sds[i].groups.clone() {
                        self.move_traffic(service, &blue_tg, &green_tg, 0.0, true);
                    }
                    for t in state.tasks.iter_mut().filter(|t| t.started_by == primary.id) {
                        let why = format!("Scaling activity initiated by (deployment {})", service.deployments[b].id);
                        stop(t, at, "ServiceSchedulerInitiated", &why);
                    }
                    let mut blue = service.deployments.remove(b);
                    blue.status = "PRIMARY";
                    let back_to = blue.id.clone();
                    service.deployments.insert(0, blue);
                    service
                        .events
                        .push((at, format!("(service {}) rolling back to deployment {back_to}.", service.name)));
                    let source = service.sds[i].source.first().cloned().unwrap_or_default();
                    let sd = &mut service.sds[i];
                    sd.status = "ROLLBACK_IN_PROGRESS";
                    sd.rollback = Some((reason, at, source));
                    sd.rollback_done = Some(at + Self::ms(self.settings.task_start));
                    sd.weight = 0.0;
                    sd.test_shifted = false;
                }
                None => self.no_rollback(service, i, at, rollback),
            }
            return;
        }
        match service.last_completed.clone().filter(|_| rollback) {
            Some((td, to_id, revision)) => {
                service.events.push((at, format!("(service {}) rolling back to deployment {to_id}.", service.name)));
                let id = start_deployment(&mut state.next, service, td, revision.clone(), i, true, at);
                if let Some(d) = service.deployments.iter_mut().find(|d| d.id == id) {
                    d.reason = format!("{}: rolling back to deploymentId {to_id}.", cause.rollback_prefix());
                }
                let sd = &mut service.sds[i];
                sd.status = "ROLLBACK_IN_PROGRESS";
                sd.rollback = Some((reason, at, revision));
            }
            None => self.no_rollback(service, i, at, rollback),
        }
    }

    /// A failed deployment with nothing rolled back: it stays PRIMARY (FAILED); its service
    /// deployment is STOPPED, or ROLLBACK_FAILED when a rollback was wanted but nothing completed
    /// before.
    fn no_rollback(&self, service: &mut Service, i: usize, at: u64, wanted: bool) {
        service.deployments[0].status = "PRIMARY";
        let sd = &mut service.sds[i];
        if wanted {
            sd.status = "ROLLBACK_FAILED";
            sd.finished = Some(at);
        } else {
            sd.status = "STOPPED";
            sd.stopped = Some(at);
        }
    }

    /// Blue/green rollbacks whose green tasks are gone: ROLLBACK_SUCCESSFUL.
    fn finish_rollbacks(&self, service: &mut Service, now: u64) {
        for i in 0..service.sds.len() {
            let Some(done) = service.sds[i].rollback_done.filter(|d| *d <= now) else { continue };
            if service.sds[i].status != "ROLLBACK_IN_PROGRESS" {
                continue;
            }
            let sd = &mut service.sds[i];
            sd.status = "ROLLBACK_SUCCESSFUL";
            sd.finished = Some(done);
            sd.updated = done;
            sd.rollback_done = None;
            service.deployments.retain(|d| !(d.sd == i && d.state == "FAILED"));
            service.events.push((done, format!("(service {}) has reached a steady state.", service.name)));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use serde_json::{json, Value};

    use crate::rollout::{Double, Rollouts};

    const SERVICE: &str = "arn:aws:ecs:eu-west-1:123456789012:service/c/app";

    fn register(double: &Double, n: u32) -> String {
        let td = format!("arn:aws:ecs:eu-west-1:123456789012:task-definition/app:{n}");
        let req = json!({"containerDefinitions": [{"name": "app", "image": format!("repo:good-{n}")}]});
        let resp = json!({"taskDefinition": {"taskDefinitionArn": td}});
        double.observe("RegisterTaskDefinition", req.to_string().as_bytes(), resp.to_string().as_bytes());
        td
    }

    fn ecs(double: &Double, op: &str, req: Value) -> Value {
        let reply = double.answer(op, true, "eu-west-1", req.to_string().as_bytes()).expect(op);
        assert_eq!(reply.status, 200, "{op}: {}", reply.body);
        serde_json::from_str(&reply.body).unwrap()
    }

    fn update(double: &Double, req: Value) {
        let resp = json!({"service": {"serviceArn": SERVICE}});
        double.observe("UpdateService", req.to_string().as_bytes(), resp.to_string().as_bytes());
    }

    /// The service deployments, newest first, described.
    fn deployments(double: &Double) -> Vec<Value> {
        let list = ecs(double, "ListServiceDeployments", json!({"cluster": "c", "service": "app"}));
        let arns: Vec<Value> =
            list["serviceDeployments"].as_array().unwrap().iter().map(|d| d["serviceDeploymentArn"].clone()).collect();
        let described = ecs(double, "DescribeServiceDeployments", json!({"serviceDeploymentArns": arns}));
        described["serviceDeployments"].as_array().unwrap().clone()
    }

    fn until(double: &Double, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let newest = deployments(double).remove(0);
            if done(&newest) {
                return newest;
            }
            assert!(Instant::now() < deadline, "never {what}: {newest}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// A deployment started while a blue/green one bakes replaces it (STOPPED, RECONCILE_SERVICE
    /// first); ABORT stops a deployment where it is.
    #[test]
    fn a_newer_deployment_replaces_one_in_flight_and_abort_stops_where_it_is() {
        let double = Double::new(Rollouts {
            task_start: Duration::from_millis(10),
            healthy_after: Duration::from_millis(10),
            minute: Duration::from_millis(100),
            ..Rollouts::default()
        });
        let lbs = json!([{"targetGroupArn": "tg-1", "containerName": "app", "containerPort": 80, "advancedConfiguration": {
            "alternateTargetGroupArn": "tg-2", "productionListenerRule": "rule", "roleArn": "role"}}]);
        let create = json!({"desiredCount": 1, "loadBalancers": lbs, "deploymentConfiguration": {"strategy": "BLUE_GREEN", "bakeTimeInMinutes": 0}});
        let resp = json!({"service": {"serviceArn": SERVICE, "clusterArn": "arn:aws:ecs:eu-west-1:123456789012:cluster/c",
            "serviceName": "app", "taskDefinition": register(&double, 1)}});
        double.observe("CreateService", create.to_string().as_bytes(), resp.to_string().as_bytes());
        until(&double, "SUCCESSFUL", |d| d["status"] == "SUCCESSFUL");

        let td2 = register(&double, 2);
        update(&double, json!({"taskDefinition": td2, "deploymentConfiguration": {"bakeTimeInMinutes": 100}}));
        until(&double, "baking", |d| d["lifecycleStage"] == "BAKE_TIME");
        let td3 = register(&double, 3);
        update(&double, json!({"taskDefinition": td3, "deploymentConfiguration": {"bakeTimeInMinutes": 0}}));
        let third = until(&double, "SUCCESSFUL", |d| d["status"] == "SUCCESSFUL");
        let all = deployments(&double);
        assert_eq!(all.len(), 3);
        assert_eq!(all[1]["status"], "STOPPED", "{}", all[1]);
        assert!(all[1]["stoppedAt"].is_number(), "{}", all[1]);
        assert_eq!(all[1]["statusReason"], "Service deployment stopped because a newer service deployment started.");
        assert_eq!(third["sourceServiceRevisions"][0]["arn"], all[2]["targetServiceRevision"]["arn"], "{third}");

        let td4 = register(&double, 4);
        update(&double, json!({"taskDefinition": td4, "deploymentConfiguration": {"bakeTimeInMinutes": 100}}));
        let baking = until(&double, "baking", |d| d["lifecycleStage"] == "BAKE_TIME");
        let arn = baking["serviceDeploymentArn"].clone();
        ecs(&double, "StopServiceDeployment", json!({"serviceDeploymentArn": arn, "stopType": "ABORT"}));
        let stopped = until(&double, "STOPPED", |d| d["status"] == "STOPPED");
        assert_eq!(stopped["lifecycleStage"], "BAKE_TIME", "it stops where it is: {stopped}");
        assert!(stopped["stoppedAt"].is_number() && stopped.get("rollback").is_none(), "{stopped}");
        let described = double
            .observe("DescribeServices", b"{}", json!({"services": [{"serviceArn": SERVICE}]}).to_string().as_bytes())
            .unwrap();
        let described: Value = serde_json::from_str(&described).unwrap();
        assert_eq!(described["services"][0]["deployments"][0]["rolloutState"], "FAILED", "{described}");
    }
}
