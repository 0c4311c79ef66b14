//! A test double for ECS rollouts, inside the [`crate::proxy::Proxy`]: moto stores services and
//! task definitions but never runs a task and knows no service deployment, so for the services
//! created through the proxy this module answers the way ECS does, over time.
//!
//! - **Services keep their deployment configuration** as ECS does: CreateService stores the
//!   request's `deploymentConfiguration` (strategy, bake time, canary and linear configuration,
//!   alarms, circuit breaker, percents) and `loadBalancers` with their `advancedConfiguration`;
//!   UpdateService replaces what it sends and keeps what it omits; DescribeServices shows both
//!   (moto drops them). Ranges and the advancedConfiguration a traffic-shifting strategy needs are
//!   checked as ECS does ([`crate::service_deployments::validate`], `InvalidParameterException`).
//! - **Every deployment** (CreateService, and UpdateService with a new task definition, new load
//!   balancers or `forceNewDeployment`) is an `ecs-svc/…` entry of `deployments[]` (the newest
//!   PRIMARY) and a *service deployment* with a *service revision*
//!   ([`crate::service_deployments`]), whatever the strategy.
//! - **ROLLING**: the deployment's tasks are `PENDING` for [`Rollouts::task_start`], then
//!   `RUNNING`, healthy in the service's target groups after [`Rollouts::healthy_after`]; the older
//!   deployments' tasks stop. With alarms on, ECS then watches them for a bake time computed from
//!   the alarms (the longest Period × EvaluationPeriods, read from CloudWatch, in ECS minutes of
//!   [`Rollouts::minute`]) before the deployment is `COMPLETED` and the service deployment
//!   `SUCCESSFUL`.
//! - **BLUE_GREEN, CANARY, LINEAR** with an `advancedConfiguration`: the lifecycle stages of the
//!   ECS guide, as `lifecycleStage`: SCALE_UP, PRODUCTION_TRAFFIC_SHIFT, BAKE_TIME and CLEAN_UP
//!   last as long as their work; RECONCILE_SERVICE (a deployment replacing one in flight, whose
//!   green tasks stop and whose traffic goes back to blue), PRE_SCALE_UP, the test traffic shift
//!   and POST_PRODUCTION_TRAFFIC_SHIFT pass at once, as no hook waits there.
//!   Green tasks start and register in the target group that takes no production traffic (the
//!   alternate one first; ECS alternates between the two), healthy there (DescribeTargetHealth);
//!   the test listener rule then forwards to green, and the production listener rule's forward
//!   weights move to green, really, in moto (ELBv2 `ModifyRule`): all at once (BLUE_GREEN), the
//!   canary percent then the rest after the canary bake time (CANARY), or a step every step bake
//!   time (LINEAR). After `bakeTimeInMinutes` the blue tasks stop and the deployment is
//!   `SUCCESSFUL`. The service's `loadBalancers` stay as configured (ECS does not swap
//!   `targetGroupArn` and `alternateTargetGroupArn`); each revision's
//!   `resolvedConfiguration.loadBalancers` names the target group it serves from.
//! - **Failures**: an image containing one of [`Rollouts::bad_images`]' markers has its tasks stop
//!   after `task_start` with that failure's reason (exit codes, log lines in the task's awslogs
//!   stream), and ECS starts new ones. After [`Rollouts::circuit_breaker_threshold`] stopped tasks
//!   the circuit breaker (when on) fails the deployment ("ECS deployment circuit breaker: tasks
//!   failed to start."). An alarm of `deploymentConfiguration.alarms` (enable) seen in `ALARM`
//!   (CloudWatch `DescribeAlarms` in moto, every [`Rollouts::tick`]) while a deployment is in
//!   progress or baking fails it too ("… alarm detected: NAMES."). With rollback on, a rolling
//!   deployment is replaced by a new deployment of the last completed task definition, and a
//!   blue/green one puts production (and test) traffic back on blue and stops green: the service
//!   deployment is `ROLLBACK_IN_PROGRESS`, then `ROLLBACK_SUCCESSFUL`; without rollback it is
//!   `STOPPED` (or `ROLLBACK_FAILED` when there is nothing to roll back to).
//! - `StopServiceDeployment` of an ongoing deployment: `ROLLBACK_REQUESTED`, then as a rollback
//!   above (even without the rollback option); `ABORT`: `STOP_REQUESTED`, then `STOPPED` where it
//!   is.
//! - `RunTask` of a known task definition: a task that runs the overridden command for
//!   `task_start` and stops; its container exits with `N` when the command contains `exit N`
//!   (else 0), and its log stream holds the command's lines.
//!
//! Answered here: DescribeServices/CreateService/UpdateService (deployments, counts, events,
//! deploymentConfiguration, loadBalancers and the PRIMARY's task definition rewritten into moto's
//! answer), ListServiceDeployments, DescribeServiceDeployments, DescribeServiceRevisions,
//! StopServiceDeployment, ListTasks, DescribeTasks, RunTask, ELBv2 DescribeTargetHealth and
//! CloudWatch Logs GetLogEvents for what the double made. Sent to moto: ELBv2 ModifyRule and
//! CloudWatch DescribeAlarms. Everything else is moto's.
//!
//! Left out: lifecycle hooks (`lifecycleHooks` are stored and shown, never invoked), the
//! PRE_PRODUCTION_TRAFFIC_SHIFT stage (described in the guide, but not one of the SDK's
//! ServiceDeploymentLifecycleStage values), Network Load Balancers, Service Connect
//! and VPC Lattice traffic shifting, early success criteria, minimum/maximum percent pacing (a
//! rolling wave replaces every task at once), and the EC2 launch type.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use crate::async_deletes::form_value;
use crate::service_deployments::{self as sds, Revision, Sd};
use crate::tasks::{describe_tasks, get_log_events, is_running, is_stopped, list_tasks, stop};
use crate::upstream;

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
    /// From a task's launch until it is RUNNING (good image) or stops (bad image, or a RunTask);
    /// also how long blue tasks take to stop after a blue/green deployment or rollback.
    pub task_start: Duration,
    /// From RUNNING until healthy in the target groups, when the deployment completes.
    pub healthy_after: Duration,
    /// Stopped tasks after which the circuit breaker fails a deployment (when it is on).
    pub circuit_breaker_threshold: usize,
    /// The length of one ECS minute: bake times, canary and linear step times and the alarm bake
    /// of rolling deployments are counted in these (default 1 s, so tests run in seconds).
    pub minute: Duration,
    /// How often ECS looks at the deployments on its own (traffic steps, CloudWatch alarms),
    /// between the calls that pass through the proxy (default 50 ms).
    pub tick: Duration,
}

impl Default for Rollouts {
    fn default() -> Self {
        Rollouts {
            bad_images: vec![],
            task_start: Duration::from_millis(300),
            healthy_after: Duration::from_millis(300),
            circuit_breaker_threshold: 10,
            minute: Duration::from_secs(1),
            tick: Duration::from_millis(50),
        }
    }
}

/// The lines a crashing container logs before it exits.
pub const CRASH_LOG: [&str; 3] =
    ["booting the application", "fatal: cannot connect to the database: connection refused", "shutting down"];

/// An answer of the double's own: status, content type and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// HTTP status code (200, or 400 for an error).
    pub status: u16,
    /// `Content-Type` of the body.
    pub content_type: &'static str,
    /// The body.
    pub body: String,
    /// The error code (`x-amzn-ErrorType`), for an error.
    pub error_type: Option<String>,
}

impl Reply {
    /// A JSON (awsJson 1.1) success.
    pub fn ok(body: Value) -> Reply {
        Reply { status: 200, content_type: "application/x-amz-json-1.1", body: body.to_string(), error_type: None }
    }

    /// A JSON (awsJson 1.1) error, `400`.
    pub fn error(code: &str, message: &str) -> Reply {
        Reply {
            status: 400,
            content_type: "application/x-amz-json-1.1",
            body: json!({"__type": code, "message": message}).to_string(),
            error_type: Some(code.to_string()),
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Container {
    pub(crate) name: String,
    pub(crate) image: String,
    pub(crate) log: Option<(String, String)>, // awslogs group, stream prefix
}

#[derive(Debug, Clone)]
pub(crate) struct TaskDef {
    pub(crate) arn: String,
    pub(crate) containers: Vec<Container>,
}

/// An `ecs-svc/…` entry of DescribeServices' `deployments[]`.
#[derive(Debug, Clone)]
pub(crate) struct Deployment {
    pub(crate) id: String,
    pub(crate) task_definition: String,
    pub(crate) status: &'static str,
    pub(crate) state: &'static str,
    pub(crate) reason: String,
    pub(crate) created: u64,
    /// Launch waves spawned so far (a wave is `desired` tasks).
    pub(crate) waves: u64,
    /// Its service deployment (index into [`Service::sds`]).
    pub(crate) sd: usize,
    /// The service revision it runs.
    pub(crate) revision: String,
    /// A rolling rollback's deployment (no alarm bake, ends the service deployment's rollback).
    pub(crate) rollback: bool,
}

/// The load balancer of a service that ECS shifts traffic on (its `advancedConfiguration`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Shift {
    pub(crate) primary: String,
    pub(crate) alternate: String,
    pub(crate) production_rule: String,
    pub(crate) test_rule: Option<String>,
    pub(crate) port: i64,
    /// The target group production traffic is on.
    pub(crate) live: String,
}

/// The last completed deployment: (task definition, ecs-svc id, revision).
pub(crate) type Completed = (String, String, String);

#[derive(Debug, Clone)]
pub(crate) struct Service {
    pub(crate) arn: String,
    pub(crate) cluster_arn: String,
    pub(crate) name: String,
    pub(crate) desired: i64,
    pub(crate) target_groups: Vec<(String, i64)>,
    pub(crate) deployments: Vec<Deployment>,
    pub(crate) last_completed: Option<Completed>,
    /// (ms, message), oldest first.
    pub(crate) events: Vec<(u64, String)>,
    /// deploymentConfiguration as ECS keeps it.
    pub(crate) config: Value,
    /// loadBalancers as sent (with advancedConfiguration).
    pub(crate) load_balancers: Value,
    pub(crate) shift: Option<Shift>,
    /// Service deployments, oldest first.
    pub(crate) sds: Vec<Sd>,
    pub(crate) revisions: Vec<Revision>,
}

impl Service {
    /// The region of its ARN.
    pub(crate) fn region(&self) -> &str {
        self.arn.split(':').nth(3).unwrap_or("us-east-1")
    }

    /// (pending, running) tasks of a revision.
    pub(crate) fn revision_counts(&self, state: &State, revision: &str, now: u64) -> (i64, i64) {
        let mine =
            state.tasks.iter().filter(|t| t.service.as_deref() == Some(self.arn.as_str()) && t.revision == revision);
        let live: Vec<&Task> = mine.filter(|t| !is_stopped(t, now)).collect();
        let running = live.iter().filter(|t| is_running(t, now)).count() as i64;
        (live.len() as i64 - running, running)
    }

    /// Tasks of a revision that stopped on their own (not stopped by the scheduler).
    pub(crate) fn failed_tasks_of_revision(&self, state: &State, revision: &str, now: u64) -> usize {
        state
            .tasks
            .iter()
            .filter(|t| t.service.as_deref() == Some(self.arn.as_str()) && t.revision == revision)
            .filter(|t| is_stopped(t, now) && t.stop_code != "ServiceSchedulerInitiated")
            .count()
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Task {
    pub(crate) arn: String,
    pub(crate) cluster_arn: String,
    pub(crate) service: Option<String>,
    pub(crate) started_by: String,
    pub(crate) task_definition: String,
    pub(crate) revision: String,
    /// Target groups it is registered in.
    pub(crate) groups: Vec<String>,
    pub(crate) created: u64,
    pub(crate) running_at: Option<u64>,
    pub(crate) stop_at: Option<u64>,
    pub(crate) stop_code: &'static str,
    pub(crate) stopped_reason: String,
    pub(crate) containers: Vec<(Container, Option<i32>, Option<String>)>, // container, exit code, reason
    pub(crate) command: Option<Vec<String>>,
    pub(crate) ip: String,
}

#[derive(Debug, Default)]
pub(crate) struct State {
    pub(crate) task_definitions: BTreeMap<String, TaskDef>,
    pub(crate) services: BTreeMap<String, Service>,
    pub(crate) tasks: Vec<Task>,
    /// (group, stream) → (ms, message).
    pub(crate) logs: BTreeMap<(String, String), Vec<(u64, String)>>,
    pub(crate) next: u64,
}

/// The double's state, shared by the proxy's connections.
#[derive(Debug)]
pub struct Double {
    pub(crate) settings: Rollouts,
    pub(crate) state: Mutex<State>,
    /// moto's port, for what ECS does to ELBv2 and reads from CloudWatch (`None`: nothing).
    pub(crate) upstream: Option<u16>,
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or_default()
}

/// Milliseconds as the seconds (with fraction) of ECS's JSON timestamps.
pub(crate) fn secs(ms: u64) -> f64 {
    ms as f64 / 1000.0
}

pub(crate) fn text(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_string()
}

/// `name` of an ARN's last path part (`…:service/cluster/name` → `name`).
pub(crate) fn last_part(arn: &str) -> &str {
    arn.rsplit('/').next().unwrap_or(arn)
}

/// The traffic-shifting load balancer of a service's `loadBalancers` (the first with an
/// `advancedConfiguration`), keeping which target group is live when the pair is unchanged.
fn shift_of(load_balancers: &Value, before: Option<&Shift>) -> Option<Shift> {
    let lb = load_balancers.as_array()?.iter().find(|lb| lb["advancedConfiguration"].is_object())?;
    let a = &lb["advancedConfiguration"];
    let primary = lb["targetGroupArn"].as_str()?.to_string();
    let alternate = a["alternateTargetGroupArn"].as_str()?.to_string();
    let live = before
        .filter(|b| b.primary == primary && b.alternate == alternate)
        .map_or_else(|| primary.clone(), |b| b.live.clone());
    Some(Shift {
        primary,
        alternate,
        production_rule: a["productionListenerRule"].as_str()?.to_string(),
        test_rule: a["testListenerRule"].as_str().filter(|r| !r.is_empty()).map(str::to_owned),
        port: lb["containerPort"].as_i64().unwrap_or(80),
        live,
    })
}

/// A 21-character id like ECS's service deployment ids, unique per `n`.
fn deployment_id(n: u64) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut x = n.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x5851_F42D_4C95_7F2D;
    (0..21)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            ALPHABET[(x % 64) as usize] as char
        })
        .collect()
}

impl Double {
    /// A double with these settings and nothing known yet, that touches nothing upstream (no
    /// listener rule weights, no alarms).
    pub fn new(settings: Rollouts) -> Double {
        Double { settings, state: Mutex::new(State::default()), upstream: None }
    }

    /// A double that moves listener rule weights and reads alarms in the moto on `port`.
    pub fn with_upstream(settings: Rollouts, port: u16) -> Double {
        Double { settings, state: Mutex::new(State::default()), upstream: Some(port) }
    }

    /// Runs [`Double::tick`] every [`Rollouts::tick`] on a thread of its own, until the double
    /// is dropped.
    pub fn start_ticking(double: &Arc<Double>) {
        let weak: Weak<Double> = Arc::downgrade(double);
        let every = double.settings.tick.max(Duration::from_millis(5));
        std::thread::spawn(move || loop {
            std::thread::sleep(every);
            match weak.upgrade() {
                Some(d) => d.tick(),
                None => break,
            }
        });
    }

    pub(crate) fn ms(d: Duration) -> u64 {
        d.as_millis() as u64
    }

    pub(crate) fn failure_of(&self, td: &TaskDef) -> Option<Failure> {
        self.settings
            .bad_images
            .iter()
            .find(|(marker, _)| td.containers.iter().any(|c| c.image.contains(marker.as_str())))
            .map(|(_, f)| f.clone())
    }

    /// What ECS does on its own between calls: reads the alarms of the deployments in progress
    /// from CloudWatch, then plays every rollout forward to now.
    pub fn tick(&self) {
        let wanted: Vec<(String, Vec<String>)> = {
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            self.advance(&mut state, now_ms());
            state
                .services
                .values()
                .flat_map(|s| {
                    s.sds
                        .iter()
                        .filter(|sd| sd.ongoing() && sds::alarms(&sd.config).0)
                        .map(move |sd| (s.region().to_string(), sds::alarms(&sd.config).2))
                })
                .collect()
        };
        let Some(port) = self.upstream.filter(|_| !wanted.is_empty()) else { return };
        let mut read: BTreeMap<(String, String), upstream::Alarm> = BTreeMap::new();
        let mut regions: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (region, names) in wanted {
            regions.entry(region).or_default().extend(names);
        }
        let mut answered: Vec<String> = Vec::new();
        for (region, mut names) in regions {
            names.sort();
            names.dedup();
            if let Ok(alarms) = upstream::describe_alarms(port, &region, &names) {
                answered.push(region.clone());
                for a in alarms {
                    read.insert((region.clone(), a.name.clone()), a);
                }
            }
        }
        let now = now_ms();
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let minute = Self::ms(self.settings.minute);
        for service in state.services.values_mut() {
            let region = service.region().to_string();
            if !answered.contains(&region) {
                continue;
            }
            for sd in service.sds.iter_mut().filter(|sd| sd.ongoing()) {
                let (enable, _, names) = sds::alarms(&sd.config);
                if !enable {
                    continue;
                }
                let found: Vec<&upstream::Alarm> =
                    names.iter().filter_map(|n| read.get(&(region.clone(), n.clone()))).collect();
                // ECS's alarm bake: the longest time an alarm needs to see a problem, in minutes.
                let window = found.iter().map(|a| a.window_seconds.div_ceil(60)).max().unwrap_or(0);
                sd.alarm_window.get_or_insert(window * minute);
                let firing: Vec<String> = found.iter().filter(|a| a.state == "ALARM").map(|a| a.name.clone()).collect();
                if !firing.is_empty() && sd.status == "IN_PROGRESS" && sd.alarm_trigger.is_none() {
                    sd.alarm_trigger = Some(now);
                    sd.triggered = firing;
                }
            }
        }
        self.advance(&mut state, now);
    }

    /// An answer of the double's own for this call, instead of moto's (`None`: forward it).
    /// `ecs`: the call is ECS's (Cloud Map shares some of its operation names).
    pub fn answer(&self, operation: &str, ecs: bool, region: &str, body: &[u8]) -> Option<Reply> {
        let now = now_ms();
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        self.advance(&mut state, now);
        if operation == "DescribeTargetHealth" {
            let form = String::from_utf8_lossy(body);
            let arn = form_value(&form, "TargetGroupArn")?;
            return self.target_health(&state, &arn, now).map(|b| Reply {
                status: 200,
                content_type: "text/xml",
                body: b,
                error_type: None,
            });
        }
        if operation == "GetLogEvents" {
            let req: Value = serde_json::from_slice(body).ok()?;
            return get_log_events(&state, &req, now).map(Reply::ok);
        }
        if !ecs {
            return None;
        }
        let req: Value = serde_json::from_slice(body).ok()?;
        match operation {
            "ListTasks" => list_tasks(&state, region, &req, now).map(Reply::ok),
            "DescribeTasks" => describe_tasks(&state, &req, now).map(Reply::ok),
            "RunTask" => self.run_task(&mut state, region, &req, now).map(Reply::ok),
            "ListServiceDeployments" => Some(sds::list(&state, region, &req)),
            "DescribeServiceDeployments" => {
                Some(sds::describe(&state, &req, self.settings.circuit_breaker_threshold, now))
            }
            "DescribeServiceRevisions" => Some(sds::describe_revisions(&state, &req)),
            "StopServiceDeployment" => {
                let reply = sds::stop(&mut state, &req, now);
                self.advance(&mut state, now + 1);
                Some(reply)
            }
            "CreateService" => {
                let config = sds::merge(&sds::default_config(), &req["deploymentConfiguration"]);
                sds::validate(&config, &req["loadBalancers"]).err()
            }
            "UpdateService" => {
                let (cluster, name) = (
                    last_part(req["cluster"].as_str().unwrap_or("default")).to_string(),
                    last_part(req["service"].as_str().unwrap_or_default()).to_string(),
                );
                let known = state.services.values().find(|s| {
                    s.name == name && last_part(&s.cluster_arn) == cluster && s.arn.contains(&format!(":{region}:"))
                })?;
                let config = sds::merge(&known.config, &req["deploymentConfiguration"]);
                let lbs =
                    if req.get("loadBalancers").is_some() { &req["loadBalancers"] } else { &known.load_balancers };
                sds::validate(&config, lbs).err()
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
                let td = resolve(&state, &text(&svc["taskDefinition"])).unwrap_or_else(|| text(&svc["taskDefinition"]));
                let load_balancers = req.get("loadBalancers").cloned().unwrap_or_else(|| json!([]));
                let mut service = Service {
                    arn: arn.clone(),
                    cluster_arn: text(&svc["clusterArn"]),
                    name: text(&svc["serviceName"]),
                    desired: req["desiredCount"].as_i64().unwrap_or(1),
                    target_groups: target_groups(&req),
                    deployments: vec![],
                    last_completed: None,
                    events: vec![],
                    config: sds::merge(&sds::default_config(), &req["deploymentConfiguration"]),
                    shift: shift_of(&load_balancers, None),
                    load_balancers,
                    sds: vec![],
                    revisions: vec![],
                };
                self.deploy(&mut state, &mut service, td, now);
                state.services.insert(arn, service);
            }
            "UpdateService" => {
                let arn = text(&resp["service"]["serviceArn"]);
                let mut service = state.services.remove(&arn)?;
                if let Some(c) = req.get("deploymentConfiguration") {
                    service.config = sds::merge(&service.config, c);
                }
                let mut new_load_balancers = false;
                if let Some(lbs) = req.get("loadBalancers") {
                    new_load_balancers = *lbs != service.load_balancers;
                    service.target_groups = target_groups(&req);
                    service.shift = shift_of(lbs, service.shift.as_ref());
                    service.load_balancers = lbs.clone();
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
                if let Some(td) = wanted.filter(|td| force || new_load_balancers || Some(td) != primary_td.as_ref()) {
                    self.deploy(&mut state, &mut service, td, now);
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

    /// A new service revision of `service` for `task_definition`, registered where its tasks go.
    fn new_revision(&self, state: &mut State, service: &mut Service, task_definition: &str, at: u64) -> String {
        state.next += 1;
        let account = service.arn.split(':').nth(4).unwrap_or("123456789012");
        let arn = format!(
            "arn:aws:ecs:{}:{account}:service-revision/{}/{}/{}",
            service.region(),
            last_part(&service.cluster_arn),
            service.name,
            4_000_000_000_000_000_000u64 + state.next * 7919
        );
        let images = state
            .task_definitions
            .get(task_definition)
            .map(|td| td.containers.iter().map(|c| (c.name.clone(), c.image.clone())).collect())
            .unwrap_or_default();
        service.revisions.push(Revision {
            arn: arn.clone(),
            task_definition: task_definition.to_string(),
            created: at,
            load_balancers: service.load_balancers.clone(),
            target_group: None,
            images,
        });
        arn
    }

    /// Starts a deployment of `task_definition`: a new revision, a new service deployment and a
    /// new PRIMARY `ecs-svc/…` deployment. A traffic-shifting deployment still in flight is
    /// stopped first (its traffic back on blue, its green tasks stopped).
    fn deploy(&self, state: &mut State, service: &mut Service, task_definition: String, at: u64) {
        let reconcile = self.supersede(state, service, at);
        let revision = self.new_revision(state, service, &task_definition, at);
        let config = service.config.clone();
        let strategy = sds::strategy(&config).to_string();
        let groups = service.shift.as_ref().filter(|_| sds::shifting(&strategy)).map(|s| {
            let green = if s.live == s.primary { s.alternate.clone() } else { s.primary.clone() };
            (s.live.clone(), green)
        });
        if let (Some((_, green)), Some(s), Some(r)) =
            (&groups, &service.shift, service.revisions.iter_mut().find(|r| r.arn == revision))
        {
            r.target_group = Some((green.clone(), s.production_rule.clone()));
        } else if let Some(r) = service.revisions.iter_mut().find(|r| r.arn == revision) {
            r.target_group = service.target_groups.first().map(|(tg, _)| {
                (tg.clone(), service.shift.as_ref().map(|s| s.production_rule.clone()).unwrap_or_default())
            });
        }
        state.next += 1;
        let account = service.arn.split(':').nth(4).unwrap_or("123456789012");
        let sd_arn = format!(
            "arn:aws:ecs:{}:{account}:service-deployment/{}/{}/{}",
            service.region(),
            last_part(&service.cluster_arn),
            service.name,
            deployment_id(state.next)
        );
        let (breaker_on, _) = sds::breaker(&config);
        let (alarms_on, _, _) = sds::alarms(&config);
        let source: Vec<String> = service.last_completed.iter().map(|(_, _, r)| r.clone()).collect();
        let shifting = sds::shifting(&strategy);
        service.sds.push(Sd {
            arn: sd_arn,
            created: at,
            finished: None,
            stopped: None,
            updated: at,
            source,
            target: revision.clone(),
            status: "IN_PROGRESS",
            reason: String::new(),
            stage: shifting.then_some(if reconcile { "RECONCILE_SERVICE" } else { "PRE_SCALE_UP" }),
            config,
            rollback: None,
            rollback_done: None,
            breaker_status: if breaker_on { "MONITORING" } else { "DISABLED" },
            alarm_status: if alarms_on { "MONITORING" } else { "DISABLED" },
            triggered: vec![],
            alarm_window: None,
            alarm_trigger: None,
            stop_request: None,
            weight: 0.0,
            test_shifted: false,
            groups,
        });
        let sd = service.sds.len() - 1;
        start_deployment(&mut state.next, service, task_definition, revision, sd, false, at);
    }

    /// Stops the service deployments still in flight when a new one starts; returns whether one
    /// was (the new one reconciles the service first).
    fn supersede(&self, state: &mut State, service: &mut Service, at: u64) -> bool {
        let mut any = false;
        for i in 0..service.sds.len() {
            if !service.sds[i].ongoing() {
                continue;
            }
            any = true;
            if let Some((blue, green)) =
                service.sds[i].groups.clone().filter(|_| service.sds[i].weight > 0.0 || service.sds[i].test_shifted)
            {
                self.move_traffic(service, &blue, &green, 0.0, true);
            }
            let sd = &mut service.sds[i];
            sd.status = "STOPPED";
            sd.reason = "Service deployment stopped because a newer service deployment started.".into();
            sd.stopped = Some(at);
            sd.updated = at;
            sd.weight = 0.0;
            sd.test_shifted = false;
            if sds::shifting(sd.strategy()) {
                // Its green tasks go; blue keeps serving.
                let ids: Vec<String> = service.deployments.iter().filter(|d| d.sd == i).map(|d| d.id.clone()).collect();
                for t in state.tasks.iter_mut().filter(|t| ids.contains(&t.started_by)) {
                    stop(t, at, "ServiceSchedulerInitiated", "Scaling activity initiated by a new deployment");
                }
                service.deployments.retain(|d| d.sd != i || d.state == "COMPLETED");
            }
        }
        any
    }

    /// Moves production traffic (and, with `test`, test traffic) of the service's shifting load
    /// balancer to `green_percent` on `green`, in moto.
    pub(crate) fn move_traffic(&self, service: &Service, blue: &str, green: &str, green_percent: f64, test: bool) {
        let (Some(port), Some(shift)) = (self.upstream, service.shift.as_ref()) else { return };
        let region = service.region();
        // A rule that no longer exists is ECS's failure to report, not the test's: the weights stay.
        let _ = upstream::shift(port, region, &shift.production_rule, blue, green, green_percent);
        if let (true, Some(rule)) = (test, &shift.test_rule) {
            let _ = upstream::shift(port, region, rule, blue, green, if green_percent > 0.0 { 100.0 } else { 0.0 });
        }
    }

    /// Moves test traffic of the service's shifting load balancer to `green` (all of it).
    pub(crate) fn move_test_traffic(&self, service: &Service, blue: &str, green: &str) {
        let (Some(port), Some(rule)) = (self.upstream, service.shift.as_ref().and_then(|s| s.test_rule.clone())) else {
            return;
        };
        let _ = upstream::shift(port, service.region(), &rule, blue, green, 100.0);
    }

    /// Writes the double's deployments, counts, events, deployment configuration, load balancers
    /// and PRIMARY task definition into moto's service document.
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
        svc["deploymentConfiguration"] = service.config.clone();
        svc["loadBalancers"] = service.load_balancers.clone();
        true
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
pub(crate) fn resolve(state: &State, name: &str) -> Option<String> {
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

/// A new PRIMARY `ecs-svc/…` deployment of `task_definition` (revision `revision`) for service
/// deployment `sd`; the others become ACTIVE.
pub(crate) fn start_deployment(
    next: &mut u64,
    service: &mut Service,
    task_definition: String,
    revision: String,
    sd: usize,
    rollback: bool,
    at: u64,
) -> String {
    *next += 1;
    for d in &mut service.deployments {
        d.status = "ACTIVE";
    }
    let id = format!("ecs-svc/{:019}", 4_000_000_000_000_000_000u64 + *next);
    service.events.push((at, format!("(service {}) (deployment {id}) deployment started.", service.name)));
    let deployment = Deployment {
        id: id.clone(),
        task_definition,
        status: "PRIMARY",
        state: "IN_PROGRESS",
        reason: "ECS deployment in progress.".into(),
        created: at,
        waves: 0,
        sd,
        revision,
        rollback,
    };
    service.deployments.insert(0, deployment);
    id
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tasks::exit_code_of;

    #[test]
    fn form_values_and_exit_codes() {
        let form = "Action=DescribeTargetHealth&TargetGroupArn=arn%3Aaws%3Aelasticloadbalancing%2Fx+y";
        assert_eq!(form_value(form, "TargetGroupArn").unwrap(), "arn:aws:elasticloadbalancing/x y");
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
            ..Rollouts::default()
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
        let listed = double.answer("ListTasks", true, "eu-west-1", list.as_bytes()).unwrap().body;
        let arns = serde_json::from_str::<Value>(&listed).unwrap()["taskArns"].clone();
        assert!(arns.as_array().is_some_and(|a| a.len() >= 2), "{listed}");
        let tasks = double
            .answer("DescribeTasks", true, "eu-west-1", json!({"tasks": arns}).to_string().as_bytes())
            .unwrap()
            .body;
        let task = &serde_json::from_str::<Value>(&tasks).unwrap()["tasks"][0];
        assert!(task["stoppedReason"].as_str().unwrap().starts_with("CannotPullContainerError"), "{task}");
        assert_eq!(task["stopCode"], "TaskFailedToStart");
        assert!(task["containers"][0].get("exitCode").is_none(), "no container ran: {task}");
    }
}
