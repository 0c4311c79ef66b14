//! `tap status`: each service's ECS status, task counts, rollout state, task definition revision and
//! (for services behind the load balancer) target health, read live from AWS.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use futures::future::try_join_all;
use serde::Serialize;
use tap_core::{Context, StepError};

use crate::api::ServicesApi;
use crate::component;

/// The live state of one service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServiceStatus {
    /// Service name from the config, e.g. `frontend`.
    pub name: String,
    /// ECS service name, `tap-{service}-{s}`.
    pub ecs_service: String,
    /// ECS status (`ACTIVE`, `DRAINING`, `INACTIVE`), or `MISSING` when it does not exist.
    pub status: String,
    /// Desired tasks.
    pub desired: i32,
    /// Running tasks.
    pub running: i32,
    /// Pending tasks.
    pub pending: i32,
    /// Rollout state of the PRIMARY deployment (`IN_PROGRESS`, `COMPLETED`, `FAILED`).
    pub rollout_state: Option<String>,
    /// Task definition `family:revision` the service runs.
    pub task_definition: Option<String>,
    /// Its revision number.
    pub revision: Option<i32>,
    /// Target health state → count, for services registered in a target group.
    pub target_health: Option<BTreeMap<String, usize>>,
}

fn family_revision(arn: &str) -> (String, Option<i32>) {
    let tail = arn.rsplit('/').next().unwrap_or(arn).to_string();
    let revision = tail.rsplit_once(':').and_then(|(_, r)| r.parse().ok());
    (tail, revision)
}

/// Reads the status of every configured service. A missing cluster or service is reported as
/// `MISSING`, not as an error.
pub async fn status(api: &dyn ServicesApi, ctx: &Context) -> Result<Vec<ServiceStatus>, StepError> {
    let cluster = ctx.names.cluster();
    let names: Vec<String> = ctx.config.services.iter().map(|s| ctx.names.ecs_service(&s.name)).collect();
    let mut observed = Vec::new();
    for chunk in names.chunks(10) {
        match api.describe_services(&cluster, chunk).await {
            Ok(found) => observed.extend(found),
            Err(e) if e.is_not_found() => break,
            Err(e) => return Err(StepError::aws(component("ecs-service", "*"), "DescribeServices")(e)),
        }
    }
    let statuses = ctx.config.services.iter().zip(names).map(|(spec, ecs_name)| {
        let found = observed.iter().find(|s| s.name == ecs_name).cloned();
        async move {
            let Some(svc) = found else {
                return Ok(ServiceStatus {
                    name: spec.name.clone(),
                    ecs_service: ecs_name,
                    status: "MISSING".into(),
                    desired: 0,
                    running: 0,
                    pending: 0,
                    rollout_state: None,
                    task_definition: None,
                    revision: None,
                    target_health: None,
                });
            };
            let mut target_health: Option<BTreeMap<String, usize>> = None;
            // An INACTIVE service still names the target groups it had, which may be gone.
            for lb in svc.load_balancers.iter().filter(|_| svc.is_active()) {
                let health = match api.target_health(&lb.target_group_arn).await {
                    Ok(health) => health,
                    Err(e) if e.is_not_found() => continue,
                    Err(e) => return Err(StepError::aws(&lb.target_group_arn, "DescribeTargetHealth")(e)),
                };
                let total = target_health.get_or_insert_with(BTreeMap::new);
                for target in health {
                    *total.entry(target.state).or_default() += 1;
                }
            }
            let (task_definition, revision) = match svc.task_definition.as_deref().map(family_revision) {
                Some((td, rev)) => (Some(td), rev),
                None => (None, None),
            };
            Ok::<_, StepError>(ServiceStatus {
                name: spec.name.clone(),
                ecs_service: ecs_name,
                status: svc.status.clone(),
                desired: svc.desired_count,
                running: svc.running_count,
                pending: svc.pending_count,
                rollout_state: svc.primary_deployment().and_then(|d| d.rollout_state.clone()),
                task_definition,
                revision,
                target_health,
            })
        }
    });
    try_join_all(statuses).await
}

/// A plain-text table of the statuses, one service per line, for `tap status`.
pub fn render_table(environment: &str, statuses: &[ServiceStatus]) -> String {
    let rows: Vec<[String; 6]> = statuses
        .iter()
        .map(|s| {
            [
                s.name.clone(),
                s.status.clone(),
                format!("{}/{}/{}", s.desired, s.running, s.pending),
                s.rollout_state.clone().unwrap_or_else(|| "-".into()),
                s.task_definition.clone().unwrap_or_else(|| "-".into()),
                match &s.target_health {
                    None => "-".into(),
                    Some(h) if h.is_empty() => "no targets".into(),
                    Some(h) => h.iter().map(|(state, n)| format!("{state}={n}")).collect::<Vec<_>>().join(" "),
                },
            ]
        })
        .collect();
    let header = ["SERVICE", "STATUS", "DESIRED/RUNNING/PENDING", "ROLLOUT", "TASK DEFINITION", "TARGETS"];
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let mut out = format!("Environment `{environment}`\n");
    for row in std::iter::once(header.map(String::from)).chain(rows) {
        let line: Vec<String> = row.iter().zip(widths).map(|(c, w)| format!("{c:<w$}")).collect();
        let _ = writeln!(out, "{}", line.join("  ").trim_end());
    }
    out
}

/// One deployment of a service, for `tap status SERVICE`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeploymentStatus {
    /// Deployment id, `ecs-svc/…`.
    pub id: String,
    /// `PRIMARY` or `ACTIVE`.
    pub status: String,
    /// `family:revision`.
    pub revision: String,
    /// The images of its containers.
    pub images: Vec<String>,
    /// `IN_PROGRESS`, `COMPLETED` or `FAILED`.
    pub rollout_state: Option<String>,
    /// Why.
    pub rollout_state_reason: Option<String>,
    /// Desired, running, pending and failed tasks.
    pub desired: i32,
    /// Running tasks.
    pub running: i32,
    /// Pending tasks.
    pub pending: i32,
    /// Tasks that failed to start or stopped.
    pub failed_tasks: i32,
}

/// `tap status SERVICE`: one service in detail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServiceDetail {
    /// The counts, rollout and target health of `tap status`.
    #[serde(flatten)]
    pub summary: ServiceStatus,
    /// Its deployments, PRIMARY first.
    pub deployments: Vec<DeploymentStatus>,
    /// The latest service events, newest first.
    pub events: Vec<crate::rollout::ServiceEvent>,
    /// The most recent stopped tasks with their reasons and last log lines.
    pub stopped_tasks: Vec<crate::rollout::StoppedTask>,
    /// Every target of its target groups with its health and ELB's reason.
    pub targets: Vec<crate::rollout::TargetState>,
}

/// How many events and stopped tasks `tap status SERVICE` shows.
const DETAIL_EVENTS: usize = 10;
const DETAIL_STOPPED: usize = 5;

/// Reads one service in detail (`label` is its config name).
pub async fn detail(api: &dyn ServicesApi, ctx: &Context, label: &str) -> Result<ServiceDetail, StepError> {
    let all = status(api, ctx).await?;
    let summary = all.into_iter().find(|s| s.name == label).ok_or_else(|| StepError::Conflict {
        resource: component("ecs-service", label),
        message: format!("no service `{label}` in the configuration"),
    })?;
    let (cluster, name, resource) =
        (ctx.names.cluster(), ctx.names.ecs_service(label), component("ecs-service", label));
    let Some(svc) = crate::service::find(api, &cluster, &name, &resource).await?.filter(|s| s.is_active()) else {
        return Ok(ServiceDetail {
            summary,
            deployments: vec![],
            events: vec![],
            stopped_tasks: vec![],
            targets: vec![],
        });
    };
    let mut deployments = Vec::new();
    for d in &svc.deployments {
        let arn = d.task_definition.clone().unwrap_or_default();
        let images = match api.describe_task_definition(&arn).await {
            Ok(Some(td)) => td.definition.containers.iter().map(|c| c.image.clone()).collect(),
            Ok(None) => vec![],
            Err(e) => return Err(StepError::aws(&resource, "DescribeTaskDefinition")(e)),
        };
        deployments.push(DeploymentStatus {
            id: d.id.clone(),
            status: d.status.clone(),
            revision: crate::rollout::revision_name(&arn).to_string(),
            images,
            rollout_state: d.rollout_state.clone(),
            rollout_state_reason: d.rollout_state_reason.clone(),
            desired: d.desired_count,
            running: d.running_count,
            pending: d.pending_count,
            failed_tasks: d.failed_tasks,
        });
    }
    let arns = api.list_tasks(&cluster, &name, true).await.map_err(StepError::aws(&resource, "ListTasks"))?;
    let recent: Vec<String> = arns.into_iter().take(DETAIL_STOPPED).collect();
    let mut stopped_tasks = Vec::new();
    if !recent.is_empty() {
        let tasks = api.describe_tasks(&cluster, &recent).await.map_err(StepError::aws(&resource, "DescribeTasks"))?;
        let group = ctx.names.log_group(label);
        for t in tasks {
            stopped_tasks.push(crate::rollout::stopped_task(api, &group, label, &t).await);
        }
    }
    let mut targets = Vec::new();
    for lb in &svc.load_balancers {
        match api.target_health(&lb.target_group_arn).await {
            Ok(found) => targets.extend(found),
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(StepError::aws(&lb.target_group_arn, "DescribeTargetHealth")(e)),
        }
    }
    let events = svc.events.iter().take(DETAIL_EVENTS).cloned().collect();
    Ok(ServiceDetail { summary, deployments, events, stopped_tasks, targets })
}

/// `tap status SERVICE` as text.
pub fn render_detail(d: &ServiceDetail) -> String {
    let s = &d.summary;
    let mut out = format!(
        "Service `{}` ({}): {}, {} desired, {} running, {} pending\n",
        s.name, s.ecs_service, s.status, s.desired, s.running, s.pending
    );
    let _ = writeln!(out, "Deployments:");
    for dep in &d.deployments {
        let _ = writeln!(
            out,
            "  {} {} {} {}: {} running, {} pending of {} desired, {} failed; {}",
            dep.status,
            dep.revision,
            dep.rollout_state.as_deref().unwrap_or("-"),
            dep.id,
            dep.running,
            dep.pending,
            dep.desired,
            dep.failed_tasks,
            dep.images.join(", ")
        );
    }
    let _ = writeln!(out, "Stopped tasks:{}", if d.stopped_tasks.is_empty() { " none" } else { "" });
    for t in &d.stopped_tasks {
        let _ = writeln!(out, "  {}", t.describe(&s.name).replace('\n', "\n  "));
    }
    let _ = writeln!(out, "Targets:{}", if d.targets.is_empty() { " none" } else { "" });
    for t in &d.targets {
        let why = t.reason.as_deref().map(|r| format!(" ({r})")).unwrap_or_default();
        let _ = writeln!(out, "  {}:{} {}{why}", t.id, t.port.unwrap_or_default(), t.state);
    }
    let _ = writeln!(out, "Events:");
    for e in &d.events {
        let _ = writeln!(out, "  {}", e.message);
    }
    out
}
