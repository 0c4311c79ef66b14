//! A test double for ECS rollouts, inside the [`crate::proxy::Proxy`]: moto stores services and
//! task definitions but never runs a task, so for the services created through the proxy this
//! module answers the way ECS does, over time.
//!
//! - Every CreateService, and every UpdateService that changes the task definition (or forces a
//!   new deployment), starts a deployment (`ecs-svc/…`): the newest is `PRIMARY`, the older ones
//!   `ACTIVE` until the new one completes.
//! - A good image: the deployment's tasks are `PENDING` for [`Rollouts::task_start`], then
//!   `RUNNING`, healthy in the service's target groups after [`Rollouts::healthy_after`], and the
//!   deployment is `COMPLETED` (older deployments' tasks stop, the deployments go).
//! - An image containing one of [`Rollouts::bad_images`]' markers: its tasks stop after
//!   `task_start` with that failure's reason (exit codes, log lines in the task's awslogs stream),
//!   and ECS starts new ones. With the circuit breaker on, after
//!   [`Rollouts::circuit_breaker_threshold`] stopped tasks the deployment is `FAILED` ("ECS
//!   deployment circuit breaker: tasks failed to start.") and, with rollback, a new deployment of
//!   the last completed task definition becomes `PRIMARY` and completes.
//! - `RunTask` of a known task definition: a task that runs the overridden command for
//!   `task_start` and stops; its container exits with `N` when the command contains `exit N`
//!   (else 0), and its log stream holds the command's lines.
//!
//! Answered here: DescribeServices/CreateService/UpdateService (deployments, counts, events and
//! the PRIMARY's task definition rewritten into moto's answer), ListTasks, DescribeTasks,
//! RunTask, ELBv2 DescribeTargetHealth and CloudWatch Logs GetLogEvents for what the double
//! made. Everything else is moto's.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

/// How a bad image's tasks fail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The essential container starts, logs, and exits with this code.
    Crash {
        /// The container's exit code.
        exit_code: i32,
    },
    /// The image cannot be pulled: the task stops before any container runs.
    Pull,
}

/// What the double does, set by a test.
#[derive(Debug, Clone)]
pub struct Rollouts {
    /// Image substrings (e.g. a tag `bad-1`) whose tasks fail, and how.
    pub bad_images: Vec<(String, Failure)>,
    /// From a task's launch until it is RUNNING (good image) or stops (bad image, or a RunTask).
    pub task_start: Duration,
    /// From RUNNING until healthy in the target groups, when the deployment completes.
    pub healthy_after: Duration,
    /// Stopped tasks after which the circuit breaker fails a deployment (when it is on).
    pub circuit_breaker_threshold: usize,
}

impl Default for Rollouts {
    fn default() -> Self {
        Rollouts {
            bad_images: vec![],
            task_start: Duration::from_millis(300),
            healthy_after: Duration::from_millis(300),
            circuit_breaker_threshold: 10,
        }
    }
}

/// The lines a crashing container logs before it exits.
pub const CRASH_LOG: [&str; 3] =
    ["booting the application", "fatal: cannot connect to the database: connection refused", "shutting down"];

#[derive(Debug, Clone)]
struct Container {
    name: String,
    image: String,
    log: Option<(String, String)>, // awslogs group, stream prefix
}

#[derive(Debug, Clone)]
struct TaskDef {
    arn: String,
    containers: Vec<Container>,
}

#[derive(Debug, Clone)]
struct Deployment {
    id: String,
    task_definition: String,
    status: &'static str,
    state: &'static str,
    reason: String,
    created: u64,
    /// Launch waves spawned so far (a wave is `desired` tasks).
    waves: u64,
}

#[derive(Debug, Clone)]
struct Service {
    arn: String,
    cluster_arn: String,
    name: String,
    desired: i64,
    circuit_breaker: (bool, bool),
    target_groups: Vec<(String, i64)>,
    deployments: Vec<Deployment>,
    last_completed: Option<String>,
    /// (ms, message), oldest first.
    events: Vec<(u64, String)>,
}

#[derive(Debug, Clone)]
struct Task {
    arn: String,
    cluster_arn: String,
    service: Option<String>,
    started_by: String,
    task_definition: String,
    created: u64,
    running_at: Option<u64>,
    stop_at: Option<u64>,
    stop_code: &'static str,
    stopped_reason: String,
    containers: Vec<(Container, Option<i32>, Option<String>)>, // container, exit code, reason
    command: Option<Vec<String>>,
    ip: String,
}

#[derive(Debug, Default)]
struct State {
    task_definitions: BTreeMap<String, TaskDef>,
    services: BTreeMap<String, Service>,
    tasks: Vec<Task>,
    /// (group, stream) → (ms, message).
    logs: BTreeMap<(String, String), Vec<(u64, String)>>,
    next: u64,
}

/// The double's state, shared by the proxy's connections.
#[derive(Debug)]
pub struct Double {
    settings: Rollouts,
    state: Mutex<State>,
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or_default()
}

fn secs(ms: u64) -> f64 {
    ms as f64 / 1000.0
}

fn text(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_string()
}

/// `name` of an ARN's last path part (`…:service/cluster/name` → `name`).
fn last_part(arn: &str) -> &str {
    arn.rsplit('/').next().unwrap_or(arn)
}

/// Percent-decoding of a form value.
fn form_decode(v: &str) -> String {
    let bytes = v.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The exit code a `tap run` command asks for: `N` after the word `exit`, else 0.
fn exit_code_of(command: &[String]) -> i32 {
    let words: Vec<&str> = command.iter().flat_map(|c| c.split_whitespace()).collect();
    words
        .windows(2)
        .find(|w| w[0] == "exit")
        .and_then(|w| w[1].trim_matches(|c: char| !c.is_ascii_digit()).parse().ok())
        .unwrap_or(0)
}

impl Double {
    /// A double with these settings and nothing known yet.
    pub fn new(settings: Rollouts) -> Double {
        Double { settings, state: Mutex::new(State::default()) }
    }

    fn ms(d: Duration) -> u64 {
        d.as_millis() as u64
    }

    fn failure_of(&self, td: &TaskDef) -> Option<Failure> {
        self.settings
            .bad_images
            .iter()
            .find(|(marker, _)| td.containers.iter().any(|c| c.image.contains(marker.as_str())))
            .map(|(_, f)| f.clone())
    }

    /// An answer of the double's own for this call, instead of moto's (`None`: forward it).
    pub fn answer(&self, operation: &str, region: &str, body: &[u8]) -> Option<(&'static str, String)> {
        let now = now_ms();
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        self.advance(&mut state, now);
        match operation {
            "DescribeTargetHealth" => {
                let form = String::from_utf8_lossy(body);
                let arn = form.split('&').find_map(|kv| kv.strip_prefix("TargetGroupArn=")).map(form_decode)?;
                self.target_health(&state, &arn, now).map(|b| ("text/xml", b))
            }
            "ListTasks" | "DescribeTasks" | "RunTask" | "GetLogEvents" => {
                let req: Value = serde_json::from_slice(body).ok()?;
                let answer = match operation {
                    "ListTasks" => list_tasks(&state, region, &req, now),
                    "DescribeTasks" => describe_tasks(&state, &req, now),
                    "RunTask" => self.run_task(&mut state, region, &req, now),
                    _ => get_log_events(&state, &req, now),
                }?;
                Some(("application/x-amz-json-1.1", answer.to_string()))
            }
            _ => None,
        }
    }

    /// Observes an ECS call moto answered (`response_body`, a success) and returns the body to
    /// send instead, when the double rewrites it. The proxy hands it ECS calls only: Cloud Map
    /// has operations of the same names.
    pub fn observe(&self, operation: &str, request: &[u8], response_body: &[u8]) -> Option<String> {
        if !matches!(
            operation,
            "RegisterTaskDefinition" | "CreateService" | "UpdateService" | "DescribeServices" | "DeleteService"
        ) {
            return None;
        }
        let req: Value = serde_json::from_slice(request).ok()?;
        let mut resp: Value = serde_json::from_slice(response_body).ok()?;
        let now = now_ms();
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        self.advance(&mut state, now);
        match operation {
            "RegisterTaskDefinition" => {
                let arn = text(&resp["taskDefinition"]["taskDefinitionArn"]);
                let containers = req["containerDefinitions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|c| {
                        let options = &c["logConfiguration"]["options"];
                        let log = options["awslogs-group"].as_str().map(|g| {
                            (g.to_string(), options["awslogs-stream-prefix"].as_str().unwrap_or_default().to_string())
                        });
                        Container { name: text(&c["name"]), image: text(&c["image"]), log }
                    })
                    .collect();
                state.task_definitions.insert(arn.clone(), TaskDef { arn, containers });
                return None;
            }
            "CreateService" => {
                let svc = &resp["service"];
                let arn = text(&svc["serviceArn"]);
                let breaker = &req["deploymentConfiguration"]["deploymentCircuitBreaker"];
                let td = resolve(&state, &text(&svc["taskDefinition"])).unwrap_or_else(|| text(&svc["taskDefinition"]));
                let mut service = Service {
                    arn: arn.clone(),
                    cluster_arn: text(&svc["clusterArn"]),
                    name: text(&svc["serviceName"]),
                    desired: req["desiredCount"].as_i64().unwrap_or(1),
                    circuit_breaker: (
                        breaker["enable"].as_bool().unwrap_or(false),
                        breaker["rollback"].as_bool().unwrap_or(false),
                    ),
                    target_groups: target_groups(&req),
                    deployments: vec![],
                    last_completed: None,
                    events: vec![],
                };
                start_deployment(&mut state.next, &mut service, td, now);
                state.services.insert(arn, service);
            }
            "UpdateService" => {
                let arn = text(&resp["service"]["serviceArn"]);
                let mut service = state.services.remove(&arn)?;
                if let Some(b) = req["deploymentConfiguration"].get("deploymentCircuitBreaker") {
                    service.circuit_breaker =
                        (b["enable"].as_bool().unwrap_or(false), b["rollback"].as_bool().unwrap_or(false));
                }
                if req.get("loadBalancers").is_some() {
                    service.target_groups = target_groups(&req);
                }
                if let Some(n) = req["desiredCount"].as_i64() {
                    service.desired = n;
                    if n == 0 {
                        let id = service.deployments.first().map(|d| d.id.clone()).unwrap_or_default();
                        for t in state.tasks.iter_mut().filter(|t| t.service.as_deref() == Some(&arn)) {
                            stop(
                                t,
                                now,
                                "ServiceSchedulerInitiated",
                                &format!("Scaling activity initiated by (deployment {id})"),
                            );
                        }
                    }
                }
                let primary_td = service.deployments.first().map(|d| d.task_definition.clone());
                let wanted =
                    req["taskDefinition"].as_str().and_then(|t| resolve(&state, t)).or_else(|| primary_td.clone());
                let force = req["forceNewDeployment"].as_bool().unwrap_or(false);
                if let Some(td) = wanted.filter(|td| force || Some(td) != primary_td.as_ref()) {
                    start_deployment(&mut state.next, &mut service, td, now);
                }
                state.services.insert(arn, service);
            }
            "DeleteService" => {
                let arn = text(&resp["service"]["serviceArn"]);
                state.services.remove(&arn);
                for t in state.tasks.iter_mut().filter(|t| t.service.as_deref() == Some(arn.as_str())) {
                    stop(t, now, "ServiceSchedulerInitiated", "Service deleted");
                }
                return None;
            }
            _ => {}
        }
        let mut changed = false;
        if let Some(svc) = resp.get_mut("service") {
            changed |= self.rewrite(&state, svc, now);
        }
        if let Some(list) = resp.get_mut("services").and_then(Value::as_array_mut) {
            for svc in list {
                changed |= self.rewrite(&state, svc, now);
            }
        }
        changed.then(|| resp.to_string())
    }

    /// Writes the double's deployments, counts, events and PRIMARY task definition into moto's
    /// service document.
    fn rewrite(&self, state: &State, svc: &mut Value, now: u64) -> bool {
        let Some(service) = state.services.get(svc["serviceArn"].as_str().unwrap_or_default()) else { return false };
        let count = |deployment: Option<&str>, running: bool| {
            state
                .tasks
                .iter()
                .filter(|t| t.service.as_deref() == Some(service.arn.as_str()))
                .filter(|t| deployment.is_none_or(|d| t.started_by == d))
                .filter(|t| !is_stopped(t, now) && is_running(t, now) == running)
                .count()
        };
        let deployments: Vec<Value> = service
            .deployments
            .iter()
            .map(|d| {
                let failed = state
                    .tasks
                    .iter()
                    .filter(|t| {
                        t.started_by == d.id && is_stopped(t, now) && t.stop_code != "ServiceSchedulerInitiated"
                    })
                    .count();
                json!({
                    "id": d.id,
                    "status": d.status,
                    "taskDefinition": d.task_definition,
                    "desiredCount": if d.status == "PRIMARY" { service.desired } else { 0 },
                    "pendingCount": count(Some(&d.id), false),
                    "runningCount": count(Some(&d.id), true),
                    "failedTasks": failed,
                    "createdAt": secs(d.created),
                    "updatedAt": secs(now),
                    "launchType": "FARGATE",
                    "rolloutState": d.state,
                    "rolloutStateReason": d.reason,
                })
            })
            .collect();
        let events: Vec<Value> = service
            .events
            .iter()
            .enumerate()
            .rev()
            .map(|(i, (at, message))| json!({"id": format!("{:08x}-event-{i}", at % 0xffff_ffff), "createdAt": secs(*at), "message": message}))
            .collect();
        if let Some(primary) = service.deployments.first() {
            svc["taskDefinition"] = json!(primary.task_definition);
        }
        svc["deployments"] = json!(deployments);
        svc["runningCount"] = json!(count(None, true));
        svc["pendingCount"] = json!(count(None, false));
        svc["desiredCount"] = json!(service.desired);
        svc["events"] = json!(events);
        true
    }

    /// Plays every service's rollout forward to `now`: launch waves, stopped tasks, circuit
    /// breaker, rollback, completion.
    fn advance(&self, state: &mut State, now: u64) {
        let (start, healthy) = (Self::ms(self.settings.task_start), Self::ms(self.settings.healthy_after));
        let arns: Vec<String> = state.services.keys().cloned().collect();
        for arn in arns {
            let Some(mut service) = state.services.remove(&arn) else { continue };
            // Each pass handles the PRIMARY until it waits for a later time.
            for _ in 0..100 {
                let Some(primary) = service.deployments.first().cloned() else { break };
                if primary.state != "IN_PROGRESS" || service.desired == 0 {
                    break;
                }
                let td = state.task_definitions.get(&primary.task_definition).cloned();
                let failure = td.as_ref().and_then(|td| self.failure_of(td));
                match failure {
                    None => {
                        if primary.waves == 0 {
                            self.launch(state, &mut service, &primary, td.as_ref(), primary.created, None);
                        }
                        let done = primary.created + start + healthy;
                        if now < done {
                            break;
                        }
                        let d = &mut service.deployments[0];
                        d.state = "COMPLETED";
                        d.reason = "ECS deployment completed.".into();
                        service.last_completed = Some(primary.task_definition.clone());
                        for old in service.deployments.drain(1..) {
                            for t in state.tasks.iter_mut().filter(|t| t.started_by == old.id) {
                                let why = format!("Scaling activity initiated by (deployment {})", primary.id);
                                stop(t, done, "ServiceSchedulerInitiated", &why);
                            }
                        }
                        service.events.push((done, format!("(service {}) has reached a steady state.", service.name)));
                    }
                    Some(failure) => {
                        let threshold = self.settings.circuit_breaker_threshold.max(1) as u64;
                        let per_wave = service.desired.max(1) as u64;
                        let fail_wave = threshold.div_ceil(per_wave);
                        let next = primary.created + primary.waves * start;
                        let breaker = service.circuit_breaker.0;
                        if breaker && primary.waves >= fail_wave && now >= next {
                            // The breaker trips when the last wave it needed has stopped.
                            let at = next;
                            let d = &mut service.deployments[0];
                            d.state = "FAILED";
                            d.reason = "ECS deployment circuit breaker: tasks failed to start.".into();
                            d.status = "ACTIVE";
                            service.events.push((
                                at,
                                format!(
                                    "(service {}) (deployment {}) deployment failed: tasks failed to start.",
                                    service.name, primary.id
                                ),
                            ));
                            match service.last_completed.clone().filter(|_| service.circuit_breaker.1) {
                                Some(previous) => {
                                    service.events.push((
                                        at,
                                        format!(
                                            "(service {}) (deployment {}) deployment circuit breaker: rolling back to deploymentId (deployment of {}).",
                                            service.name, primary.id, previous
                                        ),
                                    ));
                                    start_deployment(&mut state.next, &mut service, previous, at);
                                    continue;
                                }
                                None => {
                                    // Nothing to roll back to: the failed deployment stays PRIMARY.
                                    service.deployments[0].status = "PRIMARY";
                                    break;
                                }
                            }
                        }
                        if now < next {
                            break;
                        }
                        self.launch(state, &mut service, &primary, td.as_ref(), next, Some((failure, next + start)));
                    }
                }
            }
            state.services.insert(arn, service);
        }
    }

    /// Launches one wave of `desired` tasks of `deployment` at `at` (failing at the given time).
    fn launch(
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

    fn target_health(&self, state: &State, arn: &str, now: u64) -> Option<String> {
        let healthy = Self::ms(self.settings.healthy_after);
        let services: Vec<&Service> =
            state.services.values().filter(|s| s.target_groups.iter().any(|(tg, _)| tg == arn)).collect();
        if services.is_empty() {
            return None;
        }
        let mut members = String::new();
        for service in services {
            let port = service.target_groups.iter().find(|(tg, _)| tg == arn).map_or(80, |(_, p)| *p);
            for t in state.tasks.iter().filter(|t| t.service.as_deref() == Some(service.arn.as_str())) {
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

    fn run_task(&self, state: &mut State, region: &str, req: &Value, now: u64) -> Option<Value> {
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

fn target_groups(req: &Value) -> Vec<(String, i64)> {
    req["loadBalancers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|l| Some((l["targetGroupArn"].as_str()?.to_string(), l["containerPort"].as_i64().unwrap_or(80))))
        .collect()
}

/// A task definition named by ARN, `family:revision` or `family` (its latest known revision).
fn resolve(state: &State, name: &str) -> Option<String> {
    if state.task_definitions.contains_key(name) {
        return Some(name.to_string());
    }
    let tail = last_part(name);
    let mut found: Vec<&String> = state
        .task_definitions
        .keys()
        .filter(|arn| {
            let t = last_part(arn);
            t == tail || t.rsplit_once(':').is_some_and(|(family, _)| family == tail)
        })
        .collect();
    found.sort_by_key(|arn| arn.rsplit(':').next().and_then(|r| r.parse::<u64>().ok()));
    found.last().map(|s| s.to_string())
}

fn start_deployment(next: &mut u64, service: &mut Service, task_definition: String, at: u64) {
    *next += 1;
    for d in &mut service.deployments {
        d.status = "ACTIVE";
    }
    let id = format!("ecs-svc/{:019}", 4_000_000_000_000_000_000u64 + *next);
    service.events.push((at, format!("(service {}) (deployment {id}) deployment started.", service.name)));
    let deployment = Deployment {
        id,
        task_definition,
        status: "PRIMARY",
        state: "IN_PROGRESS",
        reason: "ECS deployment in progress.".into(),
        created: at,
        waves: 0,
    };
    service.deployments.insert(0, deployment);
}

fn stop(t: &mut Task, at: u64, code: &'static str, reason: &str) {
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

fn is_stopped(t: &Task, now: u64) -> bool {
    t.stop_at.is_some_and(|s| s <= now)
}

fn is_running(t: &Task, now: u64) -> bool {
    t.running_at.is_some_and(|r| r <= now) && !is_stopped(t, now)
}

fn task_json(t: &Task, now: u64) -> Value {
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

fn list_tasks(state: &State, region: &str, req: &Value, now: u64) -> Option<Value> {
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

fn describe_tasks(state: &State, req: &Value, now: u64) -> Option<Value> {
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

fn get_log_events(state: &State, req: &Value, now: u64) -> Option<Value> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_values_and_exit_codes() {
        assert_eq!(form_decode("arn%3Aaws%3Aelasticloadbalancing%2Fx+y"), "arn:aws:elasticloadbalancing/x y");
        assert_eq!(exit_code_of(&["sh".into(), "-c".into(), "migrate && exit 3".into()]), 3);
        assert_eq!(exit_code_of(&["migrate".into()]), 0);
    }

    /// A service created with an image that cannot be pulled: its tasks stop before any container
    /// runs, and with nothing completed to roll back to, the breaker leaves the FAILED deployment
    /// PRIMARY.
    #[test]
    fn unpullable_images_stop_tasks_and_trip_the_breaker() {
        let double = Double::new(Rollouts {
            bad_images: vec![("pull-".into(), Failure::Pull)],
            task_start: Duration::from_millis(20),
            healthy_after: Duration::from_millis(20),
            circuit_breaker_threshold: 2,
        });
        let td = "arn:aws:ecs:eu-west-1:1:task-definition/tap-fe-x:1";
        let register = json!({"containerDefinitions": [{"name": "fe", "image": "repo:pull-1"}]});
        double.observe(
            "RegisterTaskDefinition",
            register.to_string().as_bytes(),
            json!({"taskDefinition": {"taskDefinitionArn": td}}).to_string().as_bytes(),
        );
        let svc = json!({"service": {"serviceArn": "arn:aws:ecs:eu-west-1:1:service/c/fe", "clusterArn": "arn:aws:ecs:eu-west-1:1:cluster/c", "serviceName": "fe", "taskDefinition": td}});
        let create = json!({"desiredCount": 1, "deploymentConfiguration": {"deploymentCircuitBreaker": {"enable": true, "rollback": true}}});
        let created: Value = serde_json::from_str(
            &double.observe("CreateService", create.to_string().as_bytes(), svc.to_string().as_bytes()).unwrap(),
        )
        .unwrap();
        assert_eq!(created["service"]["deployments"][0]["rolloutState"], "IN_PROGRESS");
        std::thread::sleep(Duration::from_millis(80));
        let described = double
            .observe("DescribeServices", b"{}", json!({"services": [svc["service"]]}).to_string().as_bytes())
            .unwrap();
        let described: Value = serde_json::from_str(&described).unwrap();
        let deployment = &described["services"][0]["deployments"][0];
        assert_eq!(
            (deployment["status"].as_str(), deployment["rolloutState"].as_str()),
            (Some("PRIMARY"), Some("FAILED")),
            "{described}"
        );
        let list = json!({"cluster": "c", "serviceName": "fe", "desiredStatus": "STOPPED"}).to_string();
        let (_, listed) = double.answer("ListTasks", "eu-west-1", list.as_bytes()).unwrap();
        let arns = serde_json::from_str::<Value>(&listed).unwrap()["taskArns"].clone();
        assert!(arns.as_array().is_some_and(|a| a.len() >= 2), "{listed}");
        let (_, tasks) =
            double.answer("DescribeTasks", "eu-west-1", json!({"tasks": arns}).to_string().as_bytes()).unwrap();
        let task = &serde_json::from_str::<Value>(&tasks).unwrap()["tasks"][0];
        assert!(task["stoppedReason"].as_str().unwrap().starts_with("CannotPullContainerError"), "{task}");
        assert_eq!(task["stopCode"], "TaskFailedToStart");
        assert!(task["containers"][0].get("exitCode").is_none(), "no container ran: {task}");
    }
}
