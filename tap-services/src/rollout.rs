//! Waiting for a rollout the way ECS runs it: success only when a deployment of *the revision
//! this deploy registered* is PRIMARY and COMPLETED with every desired task running. Each task of
//! that revision that stops is reported at once (stopped reason, container exit codes, the last
//! lines of its log stream); after `deploy.max_failed_tasks` of them tap rolls the service back
//! to the previous revision itself and fails. A rollback by the circuit breaker (our deployment
//! FAILED, an older revision PRIMARY) is a failure naming both revisions, and a wait that runs
//! out fails with the picture of where the rollout stands.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::time::Instant;

use serde::Serialize;
use tap_core::wait::Backoff;
use tap_core::StepError;

use crate::api::ServicesApi;
use crate::component;
use crate::service::{find, ObservedService, ServiceUpdate};
use crate::service_deployment::Tracker;

/// How many log lines of a stopped task are shown.
pub const LOG_TAIL: i32 = 5;

/// One target of a target group and its health.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TargetState {
    /// Target id (the task's IP for `ip` target groups).
    pub id: String,
    /// Its port.
    pub port: Option<i32>,
    /// `healthy`, `unhealthy`, `initial`, `draining`, …
    pub state: String,
    /// ELB's reason when not healthy, e.g. `Target.FailedHealthChecks`.
    pub reason: Option<String>,
    /// ELB's description of it.
    pub description: Option<String>,
}

/// One container of a task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ObservedContainer {
    /// Container name.
    pub name: String,
    /// Exit code, once it stopped (none when it never ran).
    pub exit_code: Option<i32>,
    /// Why it stopped (e.g. `CannotPullContainerError: …`).
    pub reason: Option<String>,
}

/// A task as ECS reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ObservedTask {
    /// Task ARN.
    pub arn: String,
    /// Its task definition revision ARN.
    pub task_definition: String,
    /// `PENDING`, `RUNNING`, `STOPPED`, …
    pub last_status: String,
    /// Who started it (a service's deployment id, `ecs-svc/…`).
    pub started_by: Option<String>,
    /// `EssentialContainerExited`, `TaskFailedToStart`, …
    pub stop_code: Option<String>,
    /// ECS's reason, e.g. `Essential container in task exited`.
    pub stopped_reason: Option<String>,
    /// Its containers.
    pub containers: Vec<ObservedContainer>,
}

impl ObservedTask {
    /// The task id (the last part of its ARN).
    pub fn id(&self) -> &str {
        self.arn.rsplit('/').next().unwrap_or(&self.arn)
    }
}

/// One page of log events.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogPage {
    /// The messages, oldest first.
    pub lines: Vec<String>,
    /// Token for the events after these.
    pub next: Option<String>,
}

/// An event of a service (`(service x) has reached a steady state.`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServiceEvent {
    /// Epoch milliseconds.
    pub created_at: Option<i64>,
    /// The message.
    pub message: String,
}

/// `family:revision` of a task definition ARN.
pub fn revision_name(arn: &str) -> &str {
    arn.rsplit('/').next().unwrap_or(arn)
}

/// A stopped task of the revision being rolled out, with why it stopped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StoppedTask {
    /// Task id.
    pub task_id: String,
    /// `family:revision`.
    pub revision: String,
    /// ECS's stopped reason.
    pub stopped_reason: String,
    /// Each container's name, exit code and reason.
    pub containers: Vec<ObservedContainer>,
    /// The last lines of its log stream.
    pub log_lines: Vec<String>,
}

impl StoppedTask {
    /// One paragraph: task, reason, exit codes, log lines.
    pub fn describe(&self, service: &str) -> String {
        let mut out = format!(
            "service {service}: task {} ({}) stopped: {}",
            self.task_id,
            self.revision,
            if self.stopped_reason.is_empty() { "(no reason given)" } else { &self.stopped_reason }
        );
        for c in &self.containers {
            let code = c.exit_code.map_or_else(|| "none".to_string(), |c| c.to_string());
            let _ = write!(out, "; container {} exit code {code}", c.name);
            if let Some(reason) = &c.reason {
                let _ = write!(out, " ({reason})");
            }
        }
        if !self.log_lines.is_empty() {
            let _ = write!(out, "\n    last log lines:");
            for l in &self.log_lines {
                let _ = write!(out, "\n      | {l}");
            }
        }
        out
    }
}

/// Where the deployment of a revision stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    /// PRIMARY, COMPLETED, every desired task running.
    Done,
    /// Still rolling out (a progress line).
    InProgress(String),
    /// It failed; `primary` is the revision ECS runs instead, when another one is PRIMARY.
    Failed {
        /// Why (the rollout state reason).
        reason: String,
        /// The PRIMARY's task definition, when it is not ours.
        primary: Option<String>,
    },
}

/// Classifies the deployment of `task_definition` in `service`.
pub fn phase(service: &ObservedService, task_definition: &str) -> Phase {
    let Some(primary) = service.primary_deployment() else {
        return Phase::InProgress(format!("no PRIMARY deployment yet (status {})", service.status));
    };
    let ours = service.deployments.iter().find(|d| d.task_definition.as_deref() == Some(task_definition));
    let primary_td = primary.task_definition.clone().unwrap_or_default();
    if primary_td != task_definition {
        let reason = match ours {
            Some(d) if d.rollout_state.as_deref() == Some("FAILED") => {
                d.rollout_state_reason.clone().unwrap_or_else(|| "deployment FAILED".into())
            }
            Some(_) => format!("another deployment ({}) replaced it", revision_name(&primary_td)),
            None => format!("the PRIMARY deployment runs {}", revision_name(&primary_td)),
        };
        return Phase::Failed { reason, primary: Some(primary_td) };
    }
    let state = primary.rollout_state.as_deref().unwrap_or("UNKNOWN");
    match state {
        "FAILED" => Phase::Failed {
            reason: primary.rollout_state_reason.clone().unwrap_or_else(|| "deployment FAILED".into()),
            primary: None,
        },
        "COMPLETED"
            if primary.running_count >= primary.desired_count && service.running_count == service.desired_count =>
        {
            Phase::Done
        }
        _ => Phase::InProgress(format!(
            "rollout of {} {state}: {} running, {} pending of {} desired",
            revision_name(task_definition),
            primary.running_count,
            primary.pending_count,
            primary.desired_count
        )),
    }
}

/// What to wait for.
#[derive(Debug, Clone)]
pub struct RolloutWait<'a> {
    /// Cluster name.
    pub cluster: &'a str,
    /// ECS service name.
    pub service: &'a str,
    /// The service's name in the config (log stream prefix and container name).
    pub label: &'a str,
    /// Its log group.
    pub log_group: String,
    /// The revision this deploy rolls out.
    pub task_definition: String,
    /// The revision to roll back to after `max_failed_tasks` stopped tasks (`None`: fail without
    /// rolling back).
    pub rollback_to: Option<String>,
    /// Stopped tasks of the new revision tolerated before tap rolls back.
    pub max_failed_tasks: usize,
    /// The service's strategy moves traffic between target groups (ECS runs the rollout and
    /// its rollback; tap follows the service deployment alone).
    pub shifts_traffic: bool,
    /// Polling and deadline.
    pub backoff: Backoff,
    /// Where progress goes (the lifecycle stage, the traffic share, the bake time left).
    pub ctx: Option<&'a tap_core::Context>,
}

/// Whether the service `label` of the config has a traffic-shifting strategy (and a route).
pub fn shifts_traffic(ctx: &tap_core::Context, label: &str) -> bool {
    ctx.config.service(label).is_some_and(|s| s.route.is_some() && ctx.config.strategy_of(s).strategy.shifts_traffic())
}

/// Where the rollout of `target` stands: for a traffic-shifting strategy, its service deployment
/// alone; for a rolling one, the PRIMARY deployment ([`phase`]) and then its service deployment
/// (`SUCCESSFUL` only after the alarms' watch), whose failure names the alarms or the breaker.
fn combined_phase(shifts_traffic: bool, deployments: Phase, service_deployment: Option<Phase>, target: &str) -> Phase {
    let waiting = || Phase::InProgress(format!("waiting for the service deployment of {}", revision_name(target)));
    if shifts_traffic {
        return service_deployment.unwrap_or_else(waiting);
    }
    match (deployments, service_deployment) {
        (_, Some(failed @ Phase::Failed { .. })) => failed,
        (Phase::Done, Some(Phase::Done)) => Phase::Done,
        (Phase::Done, Some(progress @ Phase::InProgress(_))) => progress,
        (Phase::Done, None) => waiting(),
        (other, _) => other,
    }
}

/// Waits for the rollout (see the module docs); every failure is a [`StepError::Conflict`]
/// carrying the diagnosis, a wait that runs out a [`StepError::Timeout`] carrying the picture.
pub async fn wait(api: &dyn ServicesApi, w: &RolloutWait<'_>) -> Result<(), StepError> {
    let resource = component("ecs-service", w.label);
    let name = w.service;
    let ours = w.task_definition.as_str();
    let start = Instant::now();
    let mut delay = w.backoff.initial;
    let mut seen: BTreeSet<String> = BTreeSet::new();
    let mut deployment_ids: BTreeSet<String> = BTreeSet::new();
    let mut stopped: Vec<StoppedTask> = Vec::new();
    let mut rolled_back: Option<String> = None;
    // Our deployment's last FAILED reason: once ECS's rollback completes, the failed deployment
    // is gone from the service.
    let mut failed_reason: Option<String> = None;
    let mut tracker = Tracker::default();
    // tap stopped the service deployment itself (StopServiceDeployment, rolling it back).
    let mut stopped_by_tap = false;
    loop {
        let Some(svc) = find(api, w.cluster, name, &resource).await? else {
            return Err(StepError::Conflict {
                resource,
                message: format!("ECS service {name} disappeared while waiting for its rollout"),
            });
        };
        deployment_ids.extend(
            svc.deployments.iter().filter(|d| d.task_definition.as_deref() == Some(ours)).map(|d| d.id.clone()),
        );
        if let Some(d) = svc
            .deployments
            .iter()
            .find(|d| d.task_definition.as_deref() == Some(ours) && d.rollout_state.as_deref() == Some("FAILED"))
        {
            failed_reason = d.rollout_state_reason.clone().or(Some("deployment FAILED".into()));
        }
        let target = rolled_back.as_deref().unwrap_or(ours);
        let service_deployment = tracker.current(api, w.cluster, name, w.label, target).await?;
        let now = combined_phase(
            w.shifts_traffic,
            phase(&svc, target),
            service_deployment.as_ref().map(|d| tracker.phase(d)),
            target,
        );
        if now != Phase::Done || rolled_back.is_some() {
            for task in new_stopped_tasks(api, w, &resource, &deployment_ids, &mut seen).await? {
                tracing::warn!("{}", task.describe(w.label));
                stopped.push(task);
            }
        }
        let picture = |headline: String| diagnosis(&svc, w.label, headline, &stopped);
        match (&now, &rolled_back) {
            (Phase::Done, None) => {
                tracing::info!(service = name, revision = revision_name(ours), "rollout completed");
                return Ok(());
            }
            (Phase::Done, Some(previous)) => {
                return Err(StepError::Conflict {
                    resource,
                    message: picture(format!(
                        "the rollout of {} failed: {} of its tasks stopped, so tap rolled ECS service {name} back to {}, which runs now",
                        revision_name(ours),
                        stopped.len(),
                        revision_name(previous)
                    )),
                })
            }
            (Phase::Failed { reason, primary }, None) => {
                // Gone from the list once ECS's rollback completed: the events still say why.
                let from_events = svc.events.iter().find_map(|e| {
                    let id = deployment_ids.iter().find(|id| e.message.contains(id.as_str()))?;
                    let (_, tail) = e.message.split_once(&format!("(deployment {id}) "))?;
                    tail.contains("failed").then(|| format!("ECS: {tail}"))
                });
                let reason = match service_deployment.is_some() {
                    // The service deployment names the alarms or the breaker.
                    true => reason.as_str(),
                    false => failed_reason.as_deref().or(from_events.as_deref()).unwrap_or(reason),
                };
                let headline = match primary {
                    Some(p) if stopped_by_tap => format!(
                        "the rollout of {} to ECS service {name} failed: {} of its tasks stopped, so tap stopped the deployment and ECS rolled it back ({reason}): {} runs instead",
                        revision_name(ours),
                        stopped.len(),
                        revision_name(p)
                    ),
                    Some(p) => format!(
                        "the rollout of {} to ECS service {name} failed ({reason}) and ECS rolled it back: {} is PRIMARY instead of {}",
                        revision_name(ours),
                        revision_name(p),
                        revision_name(ours)
                    ),
                    None => format!("the rollout of {} to ECS service {name} failed: {reason}", revision_name(ours)),
                };
                return Err(StepError::Conflict { resource, message: picture(headline) });
            }
            (Phase::Failed { reason, .. }, Some(previous)) => {
                return Err(StepError::Conflict {
                    resource,
                    message: picture(format!(
                        "the rollout of {} failed and tap's rollback to {} failed too: {reason}",
                        revision_name(ours),
                        revision_name(previous)
                    )),
                })
            }
            (Phase::InProgress(progress), _) => {
                tracing::info!(service = name, "{progress}");
                if let Some(ctx) = w.ctx {
                    let what = format!("{}: {progress}", w.label);
                    ctx.progress(tap_core::progress::ProgressEvent::Waiting { step: crate::STEP, what: &what });
                }
                let in_flight = service_deployment.as_ref().filter(|d| d.in_flight());
                if let Some(deployment) = in_flight.filter(|_| w.shifts_traffic && !stopped_by_tap) {
                    if stopped.len() >= w.max_failed_tasks.max(1) {
                        tracing::warn!(
                            service = name,
                            "{} tasks of {} stopped: stopping its service deployment (ECS rolls it back)",
                            stopped.len(),
                            revision_name(ours)
                        );
                        api.stop_service_deployment(&deployment.arn)
                            .await
                            .map_err(StepError::aws(&resource, "StopServiceDeployment"))?;
                        stopped_by_tap = true;
                        continue;
                    }
                }
                if !w.shifts_traffic && rolled_back.is_none() && stopped.len() >= w.max_failed_tasks.max(1) {
                    let Some(previous) = w.rollback_to.clone().filter(|p| p != ours) else {
                        return Err(StepError::Conflict {
                            resource,
                            message: picture(format!(
                                "the rollout of {} to ECS service {name} failed: {} of its tasks stopped, and there is no previous revision to roll back to",
                                revision_name(ours),
                                stopped.len()
                            )),
                        });
                    };
                    tracing::warn!(
                        service = name,
                        "{} tasks of {} stopped: rolling back to {}",
                        stopped.len(),
                        revision_name(ours),
                        revision_name(&previous)
                    );
                    let update = ServiceUpdate {
                        cluster: w.cluster.into(),
                        service: name.into(),
                        task_definition: Some(previous.clone()),
                        ..Default::default()
                    };
                    api.update_service(&update).await.map_err(StepError::aws(&resource, "UpdateService"))?;
                    rolled_back = Some(previous);
                    continue;
                }
            }
        }
        if start.elapsed() + delay > w.backoff.timeout {
            let health = target_health_lines(api, &svc).await;
            let mut what = picture(format!(
                "ECS service {name} to roll out {}{}",
                revision_name(ours),
                rolled_back.as_deref().map(|p| format!(" (rolled back to {})", revision_name(p))).unwrap_or_default()
            ));
            for line in health {
                let _ = write!(what, "\n  {line}");
            }
            return Err(StepError::Timeout { what, seconds: w.backoff.timeout.as_secs() });
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(w.backoff.max);
    }
}

/// The stopped tasks of our deployments not reported yet, with their log lines.
async fn new_stopped_tasks(
    api: &dyn ServicesApi,
    w: &RolloutWait<'_>,
    resource: &str,
    deployments: &BTreeSet<String>,
    seen: &mut BTreeSet<String>,
) -> Result<Vec<StoppedTask>, StepError> {
    if deployments.is_empty() {
        return Ok(vec![]);
    }
    let arns = api.list_tasks(w.cluster, w.service, true).await.map_err(StepError::aws(resource, "ListTasks"))?;
    let fresh: Vec<String> = arns.into_iter().filter(|a| !seen.contains(a)).collect();
    if fresh.is_empty() {
        return Ok(vec![]);
    }
    let tasks = api.describe_tasks(w.cluster, &fresh).await.map_err(StepError::aws(resource, "DescribeTasks"))?;
    let mut out = Vec::new();
    for task in tasks {
        if task.last_status != "STOPPED" {
            continue;
        }
        seen.insert(task.arn.clone());
        let ours = task.task_definition == w.task_definition
            && task.started_by.as_deref().is_some_and(|by| deployments.contains(by));
        // Tasks the scheduler stopped on purpose (scaling, a newer deployment) did not fail.
        if !ours || task.stop_code.as_deref() == Some("ServiceSchedulerInitiated") {
            continue;
        }
        out.push(stopped_task(api, &w.log_group, w.label, &task).await);
    }
    Ok(out)
}

/// A stopped task with the last lines of its containers' log streams (`{label}/{container}/{id}`,
/// the awslogs prefix tap sets); a stream that cannot be read adds none.
pub(crate) async fn stopped_task(api: &dyn ServicesApi, group: &str, label: &str, task: &ObservedTask) -> StoppedTask {
    let mut log_lines = Vec::new();
    for c in &task.containers {
        let stream = format!("{label}/{}/{}", c.name, task.id());
        match api.log_events(group, &stream, None, LOG_TAIL).await {
            Ok(page) => log_lines.extend(page.lines),
            Err(e) if e.is_not_found() => {}
            Err(e) => tracing::debug!(stream, error = %e, "could not read the task's log stream"),
        }
    }
    StoppedTask {
        task_id: task.id().to_string(),
        revision: revision_name(&task.task_definition).to_string(),
        stopped_reason: task.stopped_reason.clone().unwrap_or_default(),
        containers: task.containers.clone(),
        log_lines,
    }
}

/// Not-healthy targets with ELB's reasons, one line each (best effort: this is a diagnosis).
async fn target_health_lines(api: &dyn ServicesApi, svc: &ObservedService) -> Vec<String> {
    let mut lines = Vec::new();
    for lb in &svc.load_balancers {
        if let Ok(targets) = api.target_health(&lb.target_group_arn).await {
            for t in targets.iter().filter(|t| t.state != "healthy") {
                lines.push(format!(
                    "target {}:{} {} {} {}",
                    t.id,
                    t.port.unwrap_or_default(),
                    t.state,
                    t.reason.as_deref().unwrap_or_default(),
                    t.description.as_deref().unwrap_or_default()
                ));
            }
        }
    }
    lines
}

/// One error for the failed rollouts of several services (`None` when none failed).
pub fn combine(mut failed: Vec<StepError>) -> Option<StepError> {
    if failed.len() <= 1 {
        return failed.pop();
    }
    // Only timeouts: still a timeout (running deploy again continues), naming each rollout.
    if failed.iter().all(|e| matches!(e, StepError::Timeout { .. })) {
        let seconds =
            failed.iter().map(|e| if let StepError::Timeout { seconds, .. } = e { *seconds } else { 0 }).max();
        let what = failed
            .iter()
            .filter_map(|e| if let StepError::Timeout { what, .. } = e { Some(what.as_str()) } else { None })
            .collect::<Vec<_>>()
            .join("\n");
        return Some(StepError::Timeout { what, seconds: seconds.unwrap_or_default() });
    }
    let message = failed.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n");
    Some(StepError::Conflict { resource: component("ecs-service", "*"), message })
}

/// The stopped tasks shown in a diagnosis (the newest; each was reported when it stopped).
const SHOWN_TASKS: usize = 3;

/// The headline, the deployments, the stopped tasks and the last service events.
fn diagnosis(svc: &ObservedService, label: &str, headline: String, stopped: &[StoppedTask]) -> String {
    let mut out = headline;
    for d in &svc.deployments {
        let _ = write!(
            out,
            "\n  deployment {} {} {}: {} {} running of {} desired, {} failed tasks",
            d.id,
            d.status,
            revision_name(d.task_definition.as_deref().unwrap_or("?")),
            d.rollout_state.as_deref().unwrap_or("?"),
            d.running_count,
            d.desired_count,
            d.failed_tasks
        );
    }
    if stopped.len() > SHOWN_TASKS {
        let _ = write!(out, "\n  {} tasks stopped; the last {SHOWN_TASKS}:", stopped.len());
    }
    for t in stopped.iter().skip(stopped.len().saturating_sub(SHOWN_TASKS)) {
        let _ = write!(out, "\n  {}", t.describe(label).replace('\n', "\n  "));
    }
    // The events that say why (failed deployments, the circuit breaker), then the newest ones.
    let telling = |m: &str| m.contains("failed") || m.contains("circuit breaker") || m.contains("rolling back");
    let mut shown: Vec<&str> = svc.events.iter().map(|e| e.message.as_str()).filter(|m| telling(m)).take(3).collect();
    for m in svc.events.iter().map(|e| e.message.as_str()).take(3) {
        if !shown.contains(&m) {
            shown.push(m);
        }
    }
    for m in shown {
        let _ = write!(out, "\n  event: {m}");
    }
    out
}

/// One service put back on an earlier revision by `tap rollback`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RolledBack {
    /// Service name from the config.
    pub service: String,
    /// `family:revision` it ran.
    pub from: String,
    /// `family:revision` it runs now.
    pub to: String,
}

/// The revision `tap rollback` puts a service on: `to` (a revision number of its family), or the
/// newest ACTIVE revision older than the current one.
pub fn rollback_target(current: &str, active: &[String], to: Option<i32>) -> Result<String, String> {
    let number = |arn: &str| arn.rsplit(':').next().and_then(|r| r.parse::<i32>().ok());
    let now = number(current).ok_or_else(|| format!("cannot read the revision of {current}"))?;
    match to {
        Some(n) => active
            .iter()
            .find(|a| number(a) == Some(n))
            .cloned()
            .ok_or_else(|| format!("revision {n} of {} is not ACTIVE (or does not exist)", family(current))),
        None => active
            .iter()
            .filter(|a| number(a).is_some_and(|r| r < now))
            .max_by_key(|a| number(a))
            .cloned()
            .ok_or_else(|| format!("{} has no ACTIVE revision older than {now}", family(current))),
    }
}

fn family(arn: &str) -> &str {
    revision_name(arn).rsplit_once(':').map_or(arn, |(f, _)| f)
}

/// `tap rollback`: puts each of `services` (config names) back on its previous revision (or
/// revision `to`) and waits for that like a deploy (without rolling back again).
pub async fn rollback(
    api: &dyn ServicesApi,
    ctx: &tap_core::Context,
    services: &[String],
    to: Option<i32>,
    backoff: Backoff,
) -> Result<Vec<RolledBack>, StepError> {
    let cluster = ctx.names.cluster();
    let mut plans = Vec::new();
    let mut stops = Vec::new();
    for label in services {
        let resource = component("ecs-service", label);
        let name = ctx.names.ecs_service(label);
        let svc = find(api, &cluster, &name, &resource).await?.filter(ObservedService::is_active).ok_or_else(|| {
            StepError::Conflict { resource: resource.clone(), message: format!("ECS service {name} is not deployed") }
        })?;
        if let Some(stop) = in_flight_deployment(api, &cluster, &name, label).await? {
            if to.is_some() {
                return Err(StepError::Conflict {
                    resource,
                    message: format!(
                        "a deployment of ECS service {name} is in flight ({}); `tap rollback` without --to stops it and puts production traffic back",
                        stop.1
                    ),
                });
            }
            stops.push((label.clone(), name, stop));
            continue;
        }
        let current = svc.task_definition.clone().unwrap_or_default();
        let family = ctx.names.task_family(label);
        let active = api
            .list_task_definitions(&family, crate::api::RevisionStatus::Active)
            .await
            .map_err(StepError::aws(component("task-definition", label), "ListTaskDefinitions"))?;
        let target = rollback_target(&current, &active, to)
            .map_err(|message| StepError::Conflict { resource: resource.clone(), message })?;
        plans.push((label.clone(), name, current, target));
    }
    // In-flight deployments are stopped (ECS rolls them back: production traffic returns to the
    // source revision at once) and followed until ECS reports the rollback done.
    let stopped =
        futures::future::join_all(stops.iter().map(|(label, name, (deployment, from, to))| {
            stop_and_wait(api, label, name, deployment, from, to, backoff)
        }))
        .await;
    let (stopped, failed): (Vec<_>, Vec<_>) = stopped.into_iter().partition(Result::is_ok);
    if let Some(err) = combine(failed.into_iter().filter_map(Result::err).collect()) {
        return Err(err);
    }
    let stopped: Vec<RolledBack> = stopped.into_iter().filter_map(Result::ok).collect();
    for (label, name, current, target) in &plans {
        if current == target {
            continue;
        }
        let update = ServiceUpdate {
            cluster: cluster.clone(),
            service: name.clone(),
            task_definition: Some(target.clone()),
            ..Default::default()
        };
        api.update_service(&update).await.map_err(StepError::aws(component("ecs-service", label), "UpdateService"))?;
        tracing::info!(service = %name, from = revision_name(current), to = revision_name(target), "rolling back");
    }
    if ctx.config.deploy.wait {
        let waits = plans.iter().map(|(label, name, _, target)| {
            let cluster = cluster.as_str();
            async move {
                let w = RolloutWait {
                    cluster,
                    service: name,
                    label,
                    log_group: ctx.names.log_group(label),
                    task_definition: target.clone(),
                    rollback_to: None,
                    max_failed_tasks: ctx.config.deploy.max_failed_tasks as usize,
                    shifts_traffic: shifts_traffic(ctx, label),
                    backoff,
                    ctx: Some(ctx),
                };
                wait(api, &w).await
            }
        });
        let failed: Vec<StepError> =
            futures::future::join_all(waits).await.into_iter().filter_map(Result::err).collect();
        if let Some(err) = combine(failed) {
            return Err(err);
        }
    }
    Ok(stopped
        .into_iter()
        .chain(plans.into_iter().map(|(service, _, from, to)| RolledBack {
            service,
            from: revision_name(&from).to_string(),
            to: revision_name(&to).to_string(),
        }))
        .collect())
}

/// The service's newest service deployment when ECS is still working on it: (its ARN, the task
/// definition it deploys, the one it replaces).
async fn in_flight_deployment(
    api: &dyn ServicesApi,
    cluster: &str,
    name: &str,
    label: &str,
) -> Result<Option<(String, String, String)>, StepError> {
    let resource = component("ecs-service", label);
    let briefs = api
        .list_service_deployments(cluster, name)
        .await
        .map_err(StepError::aws(&resource, "ListServiceDeployments"))?;
    let Some(newest) = briefs.iter().max_by_key(|b| b.created_at_ms.unwrap_or_default()) else { return Ok(None) };
    if !matches!(newest.status.as_str(), "PENDING" | "IN_PROGRESS") {
        return Ok(None);
    }
    let described = api
        .describe_service_deployments(std::slice::from_ref(&newest.arn))
        .await
        .map_err(StepError::aws(&resource, "DescribeServiceDeployments"))?;
    let Some(deployment) = described.into_iter().next().filter(|d| d.in_flight()) else { return Ok(None) };
    let revisions: Vec<String> =
        deployment.target_revision_arn.iter().chain(deployment.source_revision_arns.iter().take(1)).cloned().collect();
    let tds = api
        .service_revision_task_definitions(&revisions)
        .await
        .map_err(StepError::aws(&resource, "DescribeServiceRevisions"))?;
    let td = |arn: Option<&String>| arn.and_then(|a| tds.get(a)).cloned().unwrap_or_default();
    let (from, to) = (td(deployment.target_revision_arn.as_ref()), td(deployment.source_revision_arns.first()));
    Ok(Some((deployment.arn, from, to)))
}

/// Stops one in-flight service deployment with a rollback and waits until ECS has rolled it back.
async fn stop_and_wait(
    api: &dyn ServicesApi,
    label: &str,
    name: &str,
    deployment: &str,
    from: &str,
    to: &str,
    backoff: Backoff,
) -> Result<RolledBack, StepError> {
    let resource = component("ecs-service", label);
    api.stop_service_deployment(deployment).await.map_err(StepError::aws(&resource, "StopServiceDeployment"))?;
    tracing::info!(service = %name, from = revision_name(from), to = revision_name(to), "stopping the deployment in flight");
    let arns = [deployment.to_owned()];
    let done = tap_core::wait::poll_until(&format!("the rollback of ECS service {name}"), backoff, || async {
        let found = api
            .describe_service_deployments(&arns)
            .await
            .map_err(StepError::aws(&resource, "DescribeServiceDeployments"))?;
        Ok(found
            .into_iter()
            .next()
            .filter(|d| !d.in_flight() && !d.status.ends_with("REQUESTED") && d.status != "ROLLBACK_IN_PROGRESS"))
    })
    .await?;
    match done.status.as_str() {
        "ROLLBACK_SUCCESSFUL" | "STOPPED" => Ok(RolledBack {
            service: label.to_owned(),
            from: revision_name(from).to_string(),
            to: revision_name(to).to_string(),
        }),
        _ => Err(StepError::Conflict {
            resource,
            message: format!(
                "tap stopped the deployment of {} to ECS service {name}, but it ended {}: {}",
                revision_name(from),
                done.status,
                done.failure()
            ),
        }),
    }
}

/// A one-off task (`tap run`): a service's task definition, network and capacity with the
/// container's command overridden.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OneOffTask {
    /// Cluster name.
    pub cluster: String,
    /// Task definition revision ARN.
    pub task_definition: String,
    /// The container whose command is overridden.
    pub container: String,
    /// The command.
    pub command: Vec<String>,
    /// The service's `awsvpc` configuration.
    pub network: crate::service::NetworkConfig,
    /// The service's capacity-provider strategy (empty: launch type FARGATE).
    pub capacity_provider_strategy: Vec<crate::service::StrategyItem>,
    /// `startedBy` (e.g. `tap run`).
    pub started_by: String,
}

/// How a one-off task ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OneOffResult {
    /// Task id.
    pub task_id: String,
    /// `family:revision` it ran.
    pub revision: String,
    /// The container's exit code.
    pub exit_code: i32,
    /// ECS's stopped reason.
    pub stopped_reason: Option<String>,
}

/// `tap run`: starts a one-off task of `label`'s service running `command`, hands each log line
/// to `on_line` as it arrives, and returns the container's exit code once the task stopped. A task
/// that stopped before its container ran (no exit code) is an error with ECS's reason.
pub async fn run_one_off(
    api: &dyn ServicesApi,
    ctx: &tap_core::Context,
    label: &str,
    command: Vec<String>,
    backoff: Backoff,
    on_line: &mut (dyn FnMut(&str) + Send),
) -> Result<OneOffResult, StepError> {
    let cluster = ctx.names.cluster();
    let name = ctx.names.ecs_service(label);
    let resource = component("ecs-service", label);
    let svc = find(api, &cluster, &name, &resource).await?.filter(ObservedService::is_active).ok_or_else(|| {
        StepError::Conflict { resource: resource.clone(), message: format!("ECS service {name} is not deployed") }
    })?;
    let not_ready = |what: &str| StepError::Conflict {
        resource: resource.clone(),
        message: format!("ECS service {name} has no {what}: run `tap deploy` first"),
    };
    let task = OneOffTask {
        cluster: cluster.clone(),
        task_definition: svc.task_definition.clone().ok_or_else(|| not_ready("task definition"))?,
        container: label.to_string(),
        command,
        network: svc.network.clone().ok_or_else(|| not_ready("network configuration"))?,
        capacity_provider_strategy: svc.capacity_provider_strategy.clone(),
        started_by: "tap run".into(),
    };
    let started = api.run_task(&task).await.map_err(StepError::aws(&resource, "RunTask"))?;
    tracing::info!(task = started.id(), revision = revision_name(&task.task_definition), "task started");
    let (group, stream) = (ctx.names.log_group(label), format!("{label}/{label}/{}", started.id()));
    let mut token: Option<String> = None;
    let read_logs = |token: Option<String>| api.log_events(&group, &stream, token, 10_000);
    let begin = Instant::now();
    let mut delay = backoff.initial;
    loop {
        let now = api
            .describe_tasks(&cluster, std::slice::from_ref(&started.arn))
            .await
            .map_err(StepError::aws(&resource, "DescribeTasks"))?
            .into_iter()
            .next();
        // The stream appears once the container logs: until then it is not found.
        match read_logs(token.clone()).await {
            Ok(page) => {
                page.lines.iter().for_each(|l| on_line(l));
                token = page.next.or(token);
            }
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(StepError::aws(&group, "GetLogEvents")(e)),
        }
        if let Some(t) = now.filter(|t| t.last_status == "STOPPED") {
            if let Ok(page) = read_logs(token.clone()).await {
                page.lines.iter().for_each(|l| on_line(l));
            }
            let container = t.containers.iter().find(|c| c.name == label).or(t.containers.first());
            let Some(code) = container.and_then(|c| c.exit_code) else {
                let why = container.and_then(|c| c.reason.clone()).or(t.stopped_reason.clone()).unwrap_or_default();
                return Err(StepError::Conflict {
                    resource,
                    message: format!("task {} of {label} stopped before its container ran: {why}", t.id()),
                });
            };
            return Ok(OneOffResult {
                task_id: t.id().to_string(),
                revision: revision_name(&t.task_definition).to_string(),
                exit_code: code,
                stopped_reason: t.stopped_reason.clone(),
            });
        }
        if begin.elapsed() + delay > backoff.timeout {
            return Err(StepError::Timeout {
                what: format!("task {} of {label} to stop", started.id()),
                seconds: backoff.timeout.as_secs(),
            });
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(backoff.max);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use super::*;
    use crate::api::MockServicesApi;
    use crate::service::ObservedDeployment;

    const OLD: &str = "arn:aws:ecs:eu-west-1:1:task-definition/tap-api-dev:1";
    const NEW: &str = "arn:aws:ecs:eu-west-1:1:task-definition/tap-api-dev:2";

    fn deployment(id: &str, status: &str, td: &str, state: &str, running: i32) -> ObservedDeployment {
        ObservedDeployment {
            id: id.into(),
            status: status.into(),
            rollout_state: Some(state.into()),
            rollout_state_reason: (state == "FAILED")
                .then(|| "ECS deployment circuit breaker: tasks failed to start.".into()),
            desired_count: 2,
            running_count: running,
            pending_count: 0,
            task_definition: Some(td.into()),
            failed_tasks: 0,
        }
    }

    fn service(deployments: Vec<ObservedDeployment>) -> ObservedService {
        let running = deployments.first().map_or(0, |d| d.running_count);
        ObservedService {
            name: "tap-api-dev".into(),
            arn: "arn:svc".into(),
            status: "ACTIVE".into(),
            desired_count: 2,
            running_count: running,
            pending_count: 0,
            task_definition: deployments.first().and_then(|d| d.task_definition.clone()),
            capacity_provider_strategy: vec![],
            network: None,
            health_check_grace_period_seconds: None,
            circuit_breaker: None,
            strategy: crate::service::DeploymentStrategy::from_settings(
                &tap_core::Config::default().deploy.strategy_settings(),
            ),
            alarms: None,
            load_balancers: vec![],
            service_registries: vec![],
            tags: vec![],
            deployments,
            events: vec![ServiceEvent { created_at: None, message: "(service tap-api-dev) deployment failed".into() }],
        }
    }

    fn crashed(n: usize) -> ObservedTask {
        ObservedTask {
            arn: format!("arn:aws:ecs:eu-west-1:1:task/c/task{n}"),
            task_definition: NEW.into(),
            last_status: "STOPPED".into(),
            started_by: Some("ecs-svc/2".into()),
            stop_code: Some("EssentialContainerExited".into()),
            stopped_reason: Some("Essential container in task exited".into()),
            containers: vec![ObservedContainer { name: "api".into(), exit_code: Some(1), reason: None }],
        }
    }

    /// The service deployments ECS reports: one, the newest, deploying `now().0` with status
    /// `now().1` (a circuit-breaker rollback when `now().2`), from `OLD` (or to `OLD` from `NEW`).
    fn service_deployments(
        api: &mut MockServicesApi,
        now: impl Fn() -> (String, String, bool) + Send + Sync + 'static,
    ) {
        let now = Arc::new(now);
        let n = now.clone();
        api.expect_list_service_deployments().returning(move |_, _| {
            Ok(vec![crate::service_deployment::ServiceDeploymentBrief {
                arn: "sd-1".into(),
                status: n().1,
                target_revision_arn: Some(format!("rev:{}", n().0)),
                created_at_ms: Some(1),
            }])
        });
        api.expect_service_revision_task_definitions()
            .returning(|arns| Ok(arns.iter().map(|a| (a.clone(), a.trim_start_matches("rev:").to_owned())).collect()));
        api.expect_describe_service_deployments().returning(move |_| {
            let (td, status, breaker) = now();
            let source = if td == OLD { NEW } else { OLD };
            Ok(vec![crate::service_deployment::ServiceDeployment {
                arn: "sd-1".into(),
                status,
                target_revision_arn: Some(format!("rev:{td}")),
                source_revision_arns: vec![format!("rev:{source}")],
                circuit_breaker_status: breaker.then(|| "TRIGGERED".into()),
                ..Default::default()
            }])
        });
    }

    fn waiting(rollback_to: Option<&str>) -> RolloutWait<'static> {
        RolloutWait {
            cluster: "c",
            service: "tap-api-dev",
            label: "api",
            log_group: "/ecs/tap-api-dev".into(),
            task_definition: NEW.into(),
            rollback_to: rollback_to.map(str::to_owned),
            max_failed_tasks: 3,
            shifts_traffic: false,
            backoff: Backoff {
                initial: Duration::from_millis(1),
                max: Duration::from_millis(2),
                timeout: Duration::from_secs(5),
            },
            ctx: None,
        }
    }

    /// A service whose new deployment keeps losing tasks (one more per poll); once tap rolls back,
    /// the old revision is PRIMARY and completes.
    #[tokio::test]
    async fn stopped_tasks_are_reported_and_tap_rolls_back_after_the_limit() {
        let mut api = MockServicesApi::new();
        let polls = Arc::new(AtomicUsize::new(0));
        let rolled = Arc::new(Mutex::new(None::<String>));
        let (p, r) = (polls.clone(), rolled.clone());
        api.expect_describe_services().returning(move |_, _| {
            p.fetch_add(1, Ordering::SeqCst);
            Ok(vec![match r.lock().unwrap().as_deref() {
                None => service(vec![
                    deployment("ecs-svc/2", "PRIMARY", NEW, "IN_PROGRESS", 0),
                    deployment("ecs-svc/1", "ACTIVE", OLD, "COMPLETED", 2),
                ]),
                Some(_) => service(vec![deployment("ecs-svc/3", "PRIMARY", OLD, "COMPLETED", 2)]),
            }])
        });
        let p = polls.clone();
        api.expect_list_tasks().returning(move |_, _, stopped| {
            assert!(stopped);
            Ok((0..p.load(Ordering::SeqCst)).map(|n| crashed(n).arn).collect())
        });
        api.expect_describe_tasks().returning(|_, arns| {
            Ok(arns
                .iter()
                .map(|a| crashed(a.trim_start_matches("arn:aws:ecs:eu-west-1:1:task/c/task").parse().unwrap()))
                .collect())
        });
        api.expect_log_events()
            .withf(|group, stream, _, _| group == "/ecs/tap-api-dev" && stream.starts_with("api/api/task"))
            .returning(|_, _, _, _| Ok(LogPage { lines: vec!["fatal: no database".into()], next: None }));
        let r = rolled.clone();
        service_deployments(&mut api, move || match r.lock().unwrap().as_deref() {
            None => (NEW.into(), "IN_PROGRESS".into(), false),
            Some(_) => (OLD.into(), "SUCCESSFUL".into(), false),
        });
        let r = rolled.clone();
        api.expect_update_service().times(1).returning(move |u| {
            assert_eq!(u.task_definition.as_deref(), Some(OLD), "back to the previous revision");
            assert_eq!(u.desired_count, None);
            *r.lock().unwrap() = u.task_definition.clone();
            Ok(service(vec![]))
        });
        let err = wait(&api, &waiting(Some(OLD))).await.unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("tap rolled ECS service tap-api-dev back to tap-api-dev:1"), "{msg}");
        assert!(msg.contains(" of its tasks stopped"), "{msg}");
        assert!(msg.contains("Essential container in task exited; container api exit code 1"), "{msg}");
        assert!(msg.contains("| fatal: no database"), "{msg}");
        assert!(rolled.lock().unwrap().is_some());
    }

    #[tokio::test]
    async fn a_circuit_breaker_rollback_is_a_failure_naming_both_revisions() {
        let mut api = MockServicesApi::new();
        api.expect_describe_services().returning(|_, _| {
            Ok(vec![service(vec![
                deployment("ecs-svc/3", "PRIMARY", OLD, "COMPLETED", 2),
                deployment("ecs-svc/2", "ACTIVE", NEW, "FAILED", 0),
            ])])
        });
        api.expect_list_tasks().returning(|_, _, _| Ok(vec![]));
        service_deployments(&mut api, || (NEW.into(), "ROLLBACK_SUCCESSFUL".into(), true));
        api.expect_update_service().never();
        let err = wait(&api, &waiting(Some(OLD))).await.unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("ECS rolled it back: tap-api-dev:1 is PRIMARY instead of tap-api-dev:2"), "{msg}");
        assert!(msg.contains("circuit breaker"), "{msg}");
        assert!(msg.contains("event: (service tap-api-dev) deployment failed"), "{msg}");
    }

    #[test]
    fn rollback_targets() {
        let active: Vec<String> = (1..=4).map(|r| format!("arn:td/tap-api-dev:{r}")).collect();
        assert_eq!(rollback_target("arn:td/tap-api-dev:4", &active, None).unwrap(), "arn:td/tap-api-dev:3");
        assert_eq!(rollback_target("arn:td/tap-api-dev:4", &active, Some(1)).unwrap(), "arn:td/tap-api-dev:1");
        assert!(rollback_target("arn:td/tap-api-dev:1", &active, None).unwrap_err().contains("older than 1"));
        assert!(rollback_target("arn:td/tap-api-dev:4", &active, Some(9)).unwrap_err().contains("revision 9"));
    }

    #[tokio::test]
    async fn only_our_revision_primary_and_completed_is_success() {
        let mut api = MockServicesApi::new();
        let n = Arc::new(AtomicUsize::new(0));
        let c = n.clone();
        api.expect_describe_services().returning(move |_, _| {
            let done = c.fetch_add(1, Ordering::SeqCst) >= 2;
            Ok(vec![if done {
                service(vec![deployment("ecs-svc/2", "PRIMARY", NEW, "COMPLETED", 2)])
            } else {
                service(vec![
                    deployment("ecs-svc/2", "PRIMARY", NEW, "IN_PROGRESS", 1),
                    deployment("ecs-svc/1", "ACTIVE", OLD, "COMPLETED", 1),
                ])
            }])
        });
        api.expect_list_tasks().returning(|_, _, _| Ok(vec![]));
        let c = n.clone();
        // The service deployment succeeds one poll after the PRIMARY deployment completed (the
        // alarms' watch): only then is the rollout done.
        service_deployments(&mut api, move || {
            let status = if c.load(Ordering::SeqCst) >= 4 { "SUCCESSFUL" } else { "IN_PROGRESS" };
            (NEW.into(), status.into(), false)
        });
        wait(&api, &waiting(Some(OLD))).await.unwrap();
        assert_eq!(n.load(Ordering::SeqCst), 4, "polled until our service deployment succeeded");
    }

    fn deployed_service() -> ObservedService {
        let mut svc = service(vec![deployment("ecs-svc/1", "PRIMARY", OLD, "COMPLETED", 2)]);
        svc.network = Some(crate::service::NetworkConfig {
            subnets: vec!["subnet-1".into()],
            security_groups: vec!["sg-1".into()],
            assign_public_ip: false,
        });
        svc
    }

    fn one_off(status: &str, exit_code: Option<i32>, reason: Option<&str>) -> ObservedTask {
        ObservedTask {
            arn: "arn:aws:ecs:eu-west-1:1:task/c/run1".into(),
            task_definition: OLD.into(),
            last_status: status.into(),
            started_by: Some("tap run".into()),
            stop_code: None,
            stopped_reason: Some("Essential container in task exited".into()),
            containers: vec![ObservedContainer { name: "api".into(), exit_code, reason: reason.map(str::to_owned) }],
        }
    }

    fn run_mock(stopped: ObservedTask) -> MockServicesApi {
        let mut api = MockServicesApi::new();
        api.expect_describe_services().returning(|_, _| Ok(vec![deployed_service()]));
        api.expect_run_task()
            .withf(|t| {
                t.task_definition == OLD
                    && t.container == "api"
                    && t.command == ["./migrate", "up"]
                    && t.network.security_groups == ["sg-1"]
            })
            .times(1)
            .returning(|_| Ok(one_off("PENDING", None, None)));
        let polls = Arc::new(AtomicUsize::new(0));
        api.expect_describe_tasks().returning(move |_, _| {
            let n = polls.fetch_add(1, Ordering::SeqCst);
            Ok(vec![if n < 2 { one_off("RUNNING", None, None) } else { stopped.clone() }])
        });
        api.expect_log_events().withf(|g, s, _, _| g == "/ecs/tap-api-dev" && s == "api/api/run1").returning(
            |_, _, token, _| {
                Ok(match token {
                    None => LogPage { lines: vec!["migrating".into()], next: Some("t1".into()) },
                    Some(_) => LogPage { lines: vec![], next: Some("t1".into()) },
                })
            },
        );
        api
    }

    fn run_ctx() -> tap_core::Context {
        let config = tap_core::Config { environment: "dev".into(), ..Default::default() };
        tap_core::Context::new(config)
    }

    #[tokio::test]
    async fn a_one_off_task_passes_its_exit_code_and_log_lines_on() {
        let api = run_mock(one_off("STOPPED", Some(3), None));
        let mut lines = Vec::new();
        let mut on_line = |l: &str| lines.push(l.to_string());
        let cmd = vec!["./migrate".to_string(), "up".to_string()];
        let done = run_one_off(&api, &run_ctx(), "api", cmd, waiting(None).backoff, &mut on_line).await.unwrap();
        assert_eq!((done.exit_code, done.revision.as_str()), (3, "tap-api-dev:1"));
        assert_eq!(lines, ["migrating"], "each line once");
    }

    #[tokio::test]
    async fn a_one_off_task_that_never_ran_is_an_error_with_the_reason() {
        let api = run_mock(one_off("STOPPED", None, Some("CannotPullContainerError: not found")));
        let cmd = vec!["./migrate".to_string(), "up".to_string()];
        let err = run_one_off(&api, &run_ctx(), "api", cmd, waiting(None).backoff, &mut |_| {}).await.unwrap_err();
        assert!(err.to_string().contains("stopped before its container ran: CannotPullContainerError"), "{err}");
    }
}
