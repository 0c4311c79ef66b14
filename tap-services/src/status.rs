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
