//! Tasks in the ECS rollout double ([`crate::rollout`]): the waves a deployment launches (good,
//! crashing or unpullable images), their registration and health in target groups
//! (DescribeTargetHealth), one-off tasks (RunTask), and how ListTasks, DescribeTasks and
//! CloudWatch Logs GetLogEvents show them.

use serde_json::{json, Value};

use crate::rollout::{
    last_part, resolve, secs, text, Container, Deployment, Double, Failure, Service, State, Task, TaskDef, CRASH_LOG,
};

impl Double {
    /// The target groups a deployment's tasks register in: the green one of a traffic-shifting
    /// deployment (with the service's other load balancers), else the service's target groups.
    pub(crate) fn groups_of(service: &Service, deployment: &Deployment) -> Vec<String> {
        let mut groups: Vec<String> = service.target_groups.iter().map(|(tg, _)| tg.clone()).collect();
        let green = service.sds.get(deployment.sd).and_then(|sd| sd.groups.clone()).filter(|_| !deployment.rollback);
        if let (Some((_, green)), Some(shift)) = (green, &service.shift) {
            groups.retain(|g| g != &shift.primary && g != &shift.alternate);
            groups.push(green);
        }
        groups
    }

    /// Launches one wave of `desired` tasks of `deployment` at `at` (failing at the given time).
    pub(crate) fn launch(
        &self,
        state: &mut State,
        service: &mut Service,
        deployment: &Deployment,
        td: Option<&TaskDef>,
        at: u64,
        failing: Option<(Failure, u64)>,
    ) {
        let start = Self::ms(self.settings.task_start);
        for _ in 0..service.desired.max(0) {
            state.next += 1;
            let n = state.next;
            let cluster = last_part(&service.cluster_arn).to_string();
            let id = format!("{:032x}", 0x7a9_0000_0000_0000_0000_0000_0000_0000u128 + u128::from(n));
            let arn = service.arn.replace(":service/", ":task/").rsplit_once('/').map(|(a, _)| a).map_or_else(
                || format!("arn:aws:ecs:us-east-1:123456789012:task/{cluster}/{id}"),
                |a| format!("{a}/{id}"),
            );
            let containers: Vec<Container> = td.map(|t| t.containers.clone()).unwrap_or_default();
            let mut task = Task {
                arn,
                cluster_arn: service.cluster_arn.clone(),
                service: Some(service.arn.clone()),
                started_by: deployment.id.clone(),
                task_definition: deployment.task_definition.clone(),
                revision: deployment.revision.clone(),
                groups: Self::groups_of(service, deployment),
                created: at,
                running_at: Some(at + start),
                stop_at: None,
                stop_code: "",
                stopped_reason: String::new(),
                containers: containers.iter().map(|c| (c.clone(), None, None)).collect(),
                command: None,
                ip: format!("10.0.{}.{}", 10 + n % 3, 10 + n % 240),
            };
            match &failing {
                Some((Failure::Crash { exit_code }, stop_at)) => {
                    task.stop_at = Some(*stop_at);
                    task.stop_code = "EssentialContainerExited";
                    task.stopped_reason = "Essential container in task exited".into();
                    for (_, code, reason) in &mut task.containers {
                        *code = Some(*exit_code);
                        *reason = None;
                    }
                    for c in &containers {
                        if let Some((group, prefix)) = &c.log {
                            let stream = format!("{prefix}/{}/{id}", c.name);
                            let lines = CRASH_LOG
                                .iter()
                                .enumerate()
                                .map(|(i, l)| (at + start / 2 + i as u64, (*l).to_string()));
                            state.logs.entry((group.clone(), stream)).or_default().extend(lines);
                        }
                    }
                }
                Some((Failure::Pull, stop_at)) => {
                    task.stop_at = Some(*stop_at);
                    task.running_at = None;
                    task.stop_code = "TaskFailedToStart";
                    let image = containers.first().map(|c| c.image.clone()).unwrap_or_default();
                    let why = format!(
                        "CannotPullContainerError: pull image manifest has been retried 1 time(s): failed to resolve ref {image}: not found"
                    );
                    task.stopped_reason = why.clone();
                    for (_, _, reason) in &mut task.containers {
                        *reason = Some(why.clone());
                    }
                }
                None => {}
            }
            service.events.push((at, format!("(service {}) has started 1 tasks: (task {id}).", service.name)));
            state.tasks.push(task);
        }
        if let Some(d) = service.deployments.iter_mut().find(|d| d.id == deployment.id) {
            d.waves += 1;
        }
    }

    pub(crate) fn target_health(&self, state: &State, arn: &str, now: u64) -> Option<String> {
        let healthy = Self::ms(self.settings.healthy_after);
        let services: Vec<&Service> = state
            .services
            .values()
            .filter(|s| {
                s.target_groups.iter().any(|(tg, _)| tg == arn)
                    || s.shift.as_ref().is_some_and(|sh| sh.primary == arn || sh.alternate == arn)
            })
            .collect();
        if services.is_empty() {
            return None;
        }
        let mut members = String::new();
        for service in services {
            let port = service
                .target_groups
                .iter()
                .find(|(tg, _)| tg == arn)
                .map(|(_, p)| *p)
                .or_else(|| service.shift.as_ref().map(|s| s.port))
                .unwrap_or(80);
            let registered =
                |t: &&Task| t.service.as_deref() == Some(service.arn.as_str()) && t.groups.iter().any(|g| g == arn);
            for t in state.tasks.iter().filter(registered) {
                let Some(running_at) = t.running_at.filter(|r| *r <= now) else { continue };
                let (state, reason, description) = if is_stopped(t, now) {
                    if t.stop_at.is_some_and(|s| now > s + healthy) {
                        continue;
                    }
                    ("draining", "Target.DeregistrationInProgress", "Target deregistration is in progress")
                } else if t.stop_code == "EssentialContainerExited" {
                    ("unhealthy", "Target.FailedHealthChecks", "Health checks failed")
                } else if now < running_at + healthy {
                    ("initial", "Elb.RegistrationInProgress", "Target registration is in progress")
                } else {
                    ("healthy", "", "")
                };
                let why = if reason.is_empty() {
                    String::new()
                } else {
                    format!("<Reason>{reason}</Reason><Description>{description}</Description>")
                };
                members.push_str(&format!(
                    "<member><HealthCheckPort>{port}</HealthCheckPort><Target><Id>{}</Id><Port>{port}</Port></Target><TargetHealth><State>{state}</State>{why}</TargetHealth></member>",
                    t.ip
                ));
            }
        }
        Some(format!(
            "<DescribeTargetHealthResponse xmlns=\"http://elasticloadbalancing.amazonaws.com/doc/2015-12-01/\"><DescribeTargetHealthResult><TargetHealthDescriptions>{members}</TargetHealthDescriptions></DescribeTargetHealthResult><ResponseMetadata><RequestId>tap-rollout-double</RequestId></ResponseMetadata></DescribeTargetHealthResponse>"
        ))
    }

    pub(crate) fn run_task(&self, state: &mut State, region: &str, req: &Value, now: u64) -> Option<Value> {
        let td = resolve(state, req["taskDefinition"].as_str()?)?;
        let def = state.task_definitions.get(&td)?.clone();
        let cluster = text(&req["cluster"]);
        let cluster_name = last_part(&cluster).to_string();
        let account = def.arn.split(':').nth(4).unwrap_or("123456789012").to_string();
        let cluster_arn = if cluster.starts_with("arn:") {
            cluster.clone()
        } else {
            format!("arn:aws:ecs:{region}:{account}:cluster/{cluster_name}")
        };
        let overrides = req["overrides"]["containerOverrides"].as_array().cloned().unwrap_or_default();
        let start = Self::ms(self.settings.task_start);
        state.next += 1;
        let id = format!("{:032x}", 0x9e1_0000_0000_0000_0000_0000_0000_0000u128 + u128::from(state.next));
        let mut containers = Vec::new();
        let mut command = None;
        for c in &def.containers {
            let cmd: Option<Vec<String>> = overrides
                .iter()
                .find(|o| o["name"] == c.name.as_str())
                .and_then(|o| o["command"].as_array())
                .map(|a| a.iter().map(text).collect());
            let code = cmd.as_deref().map_or(0, exit_code_of);
            if let (Some((group, prefix)), Some(cmd)) = (&c.log, &cmd) {
                let stream = format!("{prefix}/{}/{id}", c.name);
                let lines = vec![
                    (now + start / 3, format!("running: {}", cmd.join(" "))),
                    (now + start / 2, format!("exiting with code {code}")),
                ];
                state.logs.entry((group.clone(), stream)).or_default().extend(lines);
                command = Some(cmd.clone());
            }
            containers.push((c.clone(), Some(code), None));
        }
        let task = Task {
            arn: format!("arn:aws:ecs:{region}:{account}:task/{cluster_name}/{id}"),
            cluster_arn,
            service: None,
            started_by: req["startedBy"].as_str().unwrap_or("tap").to_string(),
            task_definition: td,
            revision: String::new(),
            groups: vec![],
            created: now,
            running_at: Some(now + start / 4),
            stop_at: Some(now + start),
            stop_code: "EssentialContainerExited",
            stopped_reason: "Essential container in task exited".into(),
            containers,
            command,
            ip: "10.0.10.200".into(),
        };
        let doc = task_json(&task, now);
        state.tasks.push(task);
        Some(json!({"tasks": [doc], "failures": []}))
    }
}

/// The exit code a `tap run` command asks for: `N` after the word `exit`, else 0.
pub(crate) fn exit_code_of(command: &[String]) -> i32 {
    let words: Vec<&str> = command.iter().flat_map(|c| c.split_whitespace()).collect();
    words
        .windows(2)
        .find(|w| w[0] == "exit")
        .and_then(|w| w[1].trim_matches(|c: char| !c.is_ascii_digit()).parse().ok())
        .unwrap_or(0)
}

pub(crate) fn stop(t: &mut Task, at: u64, code: &'static str, reason: &str) {
    if t.stop_at.is_some_and(|s| s <= at) {
        return;
    }
    t.stop_at = Some(at);
    t.stop_code = code;
    t.stopped_reason = reason.to_string();
    for (_, exit, _) in &mut t.containers {
        *exit = exit.or(Some(0)).filter(|_| t.running_at.is_some_and(|r| r <= at));
    }
}

pub(crate) fn is_stopped(t: &Task, now: u64) -> bool {
    t.stop_at.is_some_and(|s| s <= now)
}

pub(crate) fn is_running(t: &Task, now: u64) -> bool {
    t.running_at.is_some_and(|r| r <= now) && !is_stopped(t, now)
}

pub(crate) fn task_json(t: &Task, now: u64) -> Value {
    let stopped = is_stopped(t, now);
    let status = if stopped {
        "STOPPED"
    } else if is_running(t, now) {
        "RUNNING"
    } else {
        "PENDING"
    };
    let containers: Vec<Value> = t
        .containers
        .iter()
        .map(|(c, code, reason)| {
            let mut v = json!({
                "containerArn": format!("{}/{}", t.arn.replace(":task/", ":container/"), c.name),
                "taskArn": t.arn,
                "name": c.name,
                "image": c.image,
                "lastStatus": status,
            });
            if stopped {
                if let Some(code) = code {
                    v["exitCode"] = json!(code);
                }
                if let Some(reason) = reason {
                    v["reason"] = json!(reason);
                }
            }
            v
        })
        .collect();
    let mut v = json!({
        "taskArn": t.arn,
        "clusterArn": t.cluster_arn,
        "taskDefinitionArn": t.task_definition,
        "lastStatus": status,
        "desiredStatus": if stopped { "STOPPED" } else { "RUNNING" },
        "startedBy": t.started_by,
        "group": t.service.as_deref().map_or_else(|| "family:tap".to_string(), |s| format!("service:{}", last_part(s))),
        "launchType": "FARGATE",
        "createdAt": secs(t.created),
        "containers": containers,
    });
    if let Some(r) = t.running_at.filter(|r| *r <= now) {
        v["startedAt"] = json!(secs(r));
    }
    if stopped {
        v["stoppedAt"] = json!(secs(t.stop_at.unwrap_or(now)));
        v["stopCode"] = json!(t.stop_code);
        v["stoppedReason"] = json!(t.stopped_reason);
    }
    if let Some(cmd) = &t.command {
        let name = t.containers.first().map(|(c, _, _)| c.name.clone()).unwrap_or_default();
        v["overrides"] = json!({"containerOverrides": [{"name": name, "command": cmd}]});
    }
    v
}

pub(crate) fn list_tasks(state: &State, region: &str, req: &Value, now: u64) -> Option<Value> {
    let cluster = last_part(req["cluster"].as_str().unwrap_or("default")).to_string();
    let name = req["serviceName"].as_str()?;
    let service = state.services.values().find(|s| {
        s.name == name
            && last_part(&s.cluster_arn) == cluster
            && (region.is_empty() || s.arn.contains(&format!(":{region}:")))
    })?;
    let stopped = req["desiredStatus"].as_str() == Some("STOPPED");
    let arns: Vec<&str> = state
        .tasks
        .iter()
        .rev()
        .filter(|t| t.service.as_deref() == Some(service.arn.as_str()) && is_stopped(t, now) == stopped)
        .filter(|t| req["startedBy"].as_str().is_none_or(|by| t.started_by == by))
        .map(|t| t.arn.as_str())
        .collect();
    Some(json!({"taskArns": arns}))
}

pub(crate) fn describe_tasks(state: &State, req: &Value, now: u64) -> Option<Value> {
    let wanted: Vec<String> = req["tasks"].as_array()?.iter().map(text).collect();
    let mut tasks = Vec::new();
    let mut failures = Vec::new();
    for w in &wanted {
        match state.tasks.iter().find(|t| &t.arn == w || last_part(&t.arn) == w.as_str()) {
            Some(t) => tasks.push(task_json(t, now)),
            None => failures.push(json!({"arn": w, "reason": "MISSING"})),
        }
    }
    if tasks.is_empty() {
        return None;
    }
    Some(json!({"tasks": tasks, "failures": failures}))
}

pub(crate) fn get_log_events(state: &State, req: &Value, now: u64) -> Option<Value> {
    let key = (text(&req["logGroupName"]), text(&req["logStreamName"]));
    let lines: Vec<&(u64, String)> = state.logs.get(&key)?.iter().filter(|(at, _)| *at <= now).collect();
    let from_head = req["startFromHead"].as_bool().unwrap_or(false);
    let limit = req["limit"].as_u64().map_or(10_000, |l| l as usize);
    let after: usize =
        req["nextToken"].as_str().and_then(|t| t.strip_prefix("f/")).and_then(|n| n.parse().ok()).unwrap_or(0);
    let chosen: Vec<&&(u64, String)> = if req["nextToken"].is_string() || from_head {
        lines.iter().skip(after).take(limit).collect()
    } else {
        lines.iter().skip(lines.len().saturating_sub(limit)).collect()
    };
    let end = if req["nextToken"].is_string() || from_head { after + chosen.len() } else { lines.len() };
    let events: Vec<Value> =
        chosen.iter().map(|(at, m)| json!({"timestamp": at, "message": m, "ingestionTime": at})).collect();
    Some(json!({"events": events, "nextForwardToken": format!("f/{end}"), "nextBackwardToken": "b/0"}))
}
