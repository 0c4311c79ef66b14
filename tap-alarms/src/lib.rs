//! `tap-alarms`: CloudWatch alarms on the health of every service of a tap environment, which
//! ECS watches during deployments and rolls back on.
//!
//! Per service (`tap-{s}-{service}-{what}`, thresholds from `[alarms]` and `services[*].alarms`):
//! - `cpu-high` and `memory-high`: `AWS/ECS` `CPUUtilization` / `MemoryUtilization` (Average,
//!   dimensions `ClusterName`, `ServiceName`), for every service;
//! - `unhealthy-targets` and `target-5xx`: `AWS/ApplicationELB` `UnHealthyHostCount` (Maximum) and
//!   `HTTPCode_Target_5XX_Count` (Sum), dimensions `TargetGroup` and `LoadBalancer` (ARN suffixes),
//!   for services behind the load balancer. A service whose deployments shift traffic has a second
//!   (alternate) target group: these alarms then sum both with metric math, so whichever target
//!   group is live is watched.
//!
//! Every alarm is `GreaterThanOrEqualToThreshold` over `alarms.evaluation_periods` periods of
//! `alarms.period_seconds`, and treats missing data as not breaching: a service without tasks or
//! traffic publishes nothing, and that alone is no reason to roll a deployment back.
//!
//! - **Reads** from the [`Context`]: [`IngressOutputs`] (the target groups, the alternate ones of
//!   traffic-shifting services, and the load balancer); the config's `alarms` and `services`. The
//!   ECS metrics' dimensions are names the environment gives (`Names::cluster`, `ecs_service`):
//!   CloudWatch takes an alarm on a service that does not exist yet, so those alarms wait for
//!   nothing (CloudWatch writes them at only 3 a second, and every service waits for its own).
//! - **Adds**: [`AlarmsOutputs`] — service name → its alarm names, which the services step names in
//!   `deploymentConfiguration.alarms` (with rollback on). Published once the alarms exist (in plan
//!   mode: the names they will have), before the prune.
//! - **Finds** its alarms with one `DescribeAlarms` under the environment's prefix `tap-{s}-`; those
//!   the config does not declare are checked by their tags (`ListTagsForResource`) and pruned, so a
//!   removed service's alarms go and `destroy` removes all of them, whatever the config says now.
//!   `alarms.enabled = false` deletes them all. Tags are set when an alarm is created.
//! - **On the resource engine** ([`tap_core::resource`]): [`alarm`]; this module only wires it.
//! - [`status::status`] backs the alarms part of `tap status`.
//!
//! ```
//! use tap_alarms::{alarm::What, alarm_id};
//! assert_eq!(alarm_id("frontend", What::CpuHigh), "alarms/cpu-high/frontend");
//! let names = tap_core::naming::Names::new(&tap_core::Config::default());
//! assert_eq!(names.alarm("frontend", What::Target5xx.slug()), "tap-dev-frontend-target-5xx");
//! ```
//!
//! A complete run against a local emulator: `cargo run -p tap-alarms --example alarms_alone`.
#![forbid(unsafe_code)]

pub mod alarm;
pub mod api;
mod sdk;
pub mod status;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use async_trait::async_trait;
use futures::future::try_join_all;
use tap_core::aws::AwsSession;
use tap_core::config::ServiceSpec;
use tap_core::context::Gathered;
use tap_core::outputs::{AlarmsOutputs, IngressOutputs};
use tap_core::resource::{Engine, Owned};
use tap_core::step::{Contract, OutputKind};
use tap_core::{Change, Context, Mode, Step, StepError};

pub use alarm::{alarm_id, AlarmKind, What};
#[cfg(any(test, feature = "test-util"))]
pub use api::MockAlarmsApi;
pub use api::{AlarmMetric, AlarmSpec, AlarmsApi, MetricStat, ObservedAlarm};
pub use sdk::SdkAlarms;

/// The step's name.
pub const STEP: &str = "alarms";
/// Every alarm's comparison.
pub const COMPARISON: &str = "GreaterThanOrEqualToThreshold";
/// Every alarm's treatment of missing data.
pub const TREAT_MISSING_DATA: &str = "notBreaching";

/// One alarm the config asks for.
#[derive(Debug, Clone)]
pub struct DesiredAlarm {
    /// The service it watches.
    pub service: String,
    /// What it watches.
    pub what: What,
    /// Logical id.
    pub id: String,
    /// Its definition.
    pub spec: AlarmSpec,
}

/// The `TargetGroup` / `LoadBalancer` dimension value of an ELB ARN: what follows `targetgroup/`'s
/// or `loadbalancer/`'s colon (`targetgroup/tap-fe-dev/1a2b…`, `app/tap-alb-dev/3c4d…`). An id not
/// known yet (plan) is kept as it is.
pub fn arn_suffix(arn: &str) -> &str {
    match arn.rsplit_once(':') {
        Some((_, tail)) => tail.strip_prefix("loadbalancer/").unwrap_or(tail),
        None => arn,
    }
}

/// Which of a service's alarms: those on its ECS metrics need only names, those on its target
/// groups need the load balancer's outputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wave {
    Ecs,
    TargetGroups,
}

impl Wave {
    fn of(what: What) -> Wave {
        if what.needs_route() {
            Wave::TargetGroups
        } else {
            Wave::Ecs
        }
    }
}

/// The alarms of one service.
fn service_alarms(
    ctx: &Context,
    service: &ServiceSpec,
    ingress: Option<&IngressOutputs>,
    wave: Wave,
) -> Result<Vec<DesiredAlarm>, StepError> {
    let whats: Vec<What> = What::of(service.route.is_some()).filter(|w| Wave::of(*w) == wave).collect();
    if whats.is_empty() {
        return Ok(vec![]);
    }
    let settings = &ctx.config.alarms;
    let thresholds = ctx.config.alarm_thresholds(service);
    let (cluster, ecs_service) = (ctx.names.cluster(), ctx.names.ecs_service(&service.name));
    let ecs = |metric: &str| {
        let dims = vec![("ClusterName".to_owned(), cluster.clone()), ("ServiceName".to_owned(), ecs_service.clone())];
        AlarmMetric::Single(MetricStat::new("AWS/ECS", metric, dims, "Average"))
    };
    // Routed: its target group, and the alternate one while its deployments shift traffic.
    let target_groups: Vec<String> = match (&service.route, ingress) {
        (Some(_), Some(ingress)) if wave == Wave::TargetGroups => {
            let primary = ingress.target_group_arns.get(&service.name).ok_or_else(|| StepError::MissingOutput {
                step: STEP.into(),
                output: OutputKind::Ingress.to_string(),
                why: format!("it has no target group for `{}`", service.name),
            })?;
            let alternate = ingress
                .traffic_shifts
                .get(&service.name)
                .map(|t| t.alternate_target_group_arn.clone())
                .filter(|arn| !arn.is_empty());
            std::iter::once(primary.clone()).chain(alternate).collect()
        }
        _ => vec![],
    };
    let elb = |metric: &str, statistic: &str| {
        let lb = ingress.map(|i| arn_suffix(&i.load_balancer_arn).to_owned()).unwrap_or_default();
        AlarmMetric::sum(
            target_groups
                .iter()
                .map(|tg| {
                    let dims = vec![
                        ("LoadBalancer".to_owned(), lb.clone()),
                        ("TargetGroup".to_owned(), arn_suffix(tg).to_owned()),
                    ];
                    MetricStat::new("AWS/ApplicationELB", metric, dims, statistic)
                })
                .collect(),
        )
    };
    let window = format!("{} × {} s", settings.evaluation_periods, settings.period_seconds);
    let label = format!("{} ({})", service.name, ctx.names.env());
    Ok(whats
        .into_iter()
        .map(|what| {
            let (metric, threshold, description) = match what {
                What::CpuHigh => (
                    ecs("CPUUtilization"),
                    thresholds.cpu_high_percent,
                    format!("{label}: average CPU at or above {}% for {window}", thresholds.cpu_high_percent),
                ),
                What::MemoryHigh => (
                    ecs("MemoryUtilization"),
                    thresholds.memory_high_percent,
                    format!("{label}: average memory at or above {}% for {window}", thresholds.memory_high_percent),
                ),
                What::UnhealthyTargets => (
                    elb("UnHealthyHostCount", "Maximum"),
                    thresholds.unhealthy_targets,
                    format!("{label}: {} or more unhealthy targets for {window}", thresholds.unhealthy_targets),
                ),
                What::Target5xx => (
                    elb("HTTPCode_Target_5XX_Count", "Sum"),
                    thresholds.target_5xx_count,
                    format!(
                        "{label}: {} or more target 5xx answers a period for {window}",
                        thresholds.target_5xx_count
                    ),
                ),
            };
            let id = alarm_id(&service.name, what);
            let name = ctx.names.alarm(&service.name, what.slug());
            DesiredAlarm {
                service: service.name.clone(),
                what,
                spec: AlarmSpec {
                    tags: ctx.names.tags(&id, &name),
                    name,
                    description: format!("{description}; ECS rolls a deployment back while it is in ALARM"),
                    metric,
                    period: settings.period_seconds as i32,
                    evaluation_periods: settings.evaluation_periods as i32,
                    threshold: f64::from(threshold),
                    comparison: COMPARISON.into(),
                    treat_missing_data: TREAT_MISSING_DATA.into(),
                },
                id,
            }
        })
        .collect())
}

/// Every alarm the config asks for (none when `alarms.enabled` is off).
pub fn desired(ctx: &Context, ingress: &IngressOutputs) -> Result<Vec<DesiredAlarm>, StepError> {
    let mut all = desired_in(ctx, None, Wave::Ecs)?;
    all.extend(desired_in(ctx, Some(ingress), Wave::TargetGroups)?);
    Ok(all)
}

/// The alarms of one wave.
fn desired_in(ctx: &Context, ingress: Option<&IngressOutputs>, wave: Wave) -> Result<Vec<DesiredAlarm>, StepError> {
    if !ctx.config.alarms.enabled {
        return Ok(vec![]);
    }
    let per_service =
        ctx.config.services.iter().map(|s| service_alarms(ctx, s, ingress, wave)).collect::<Result<Vec<_>, _>>()?;
    Ok(per_service.into_iter().flatten().collect())
}

/// What the step publishes for `wanted`: each service's alarm names, sorted.
pub fn outputs(wanted: &[DesiredAlarm]) -> AlarmsOutputs {
    let mut alarm_names: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for w in wanted {
        alarm_names.entry(w.service.clone()).or_default().push(w.spec.name.clone());
    }
    alarm_names.values_mut().for_each(|names| names.sort());
    AlarmsOutputs { alarm_names }
}

/// The alarms step: CloudWatch alarms per service.
pub struct AlarmsStep {
    api: Arc<dyn AlarmsApi>,
}

impl AlarmsStep {
    /// A step over `api` (the SDK, or a mock in tests).
    pub fn new(api: Arc<dyn AlarmsApi>) -> Self {
        AlarmsStep { api }
    }

    /// A step over the real CloudWatch client of `session`.
    pub fn from_session(session: &AwsSession) -> Self {
        Self::new(Arc::new(SdkAlarms::from_session(session)))
    }

    async fn list(&self, ctx: &Context) -> Result<Vec<ObservedAlarm>, StepError> {
        self.api.list_alarms(&ctx.names.alarm_prefix()).await.map_err(StepError::aws("alarms/alarms", "DescribeAlarms"))
    }

    /// What the environment owns among `found` besides `declared` (by name): by their tags.
    async fn owned_undeclared(
        &self,
        ctx: &Context,
        found: &[ObservedAlarm],
        declared: &BTreeSet<String>,
    ) -> Result<Vec<Owned<ObservedAlarm>>, StepError> {
        let candidates: Vec<ObservedAlarm> = found.iter().filter(|a| !declared.contains(&a.name)).cloned().collect();
        if candidates.is_empty() {
            return Ok(vec![]);
        }
        AlarmKind::new(&*self.api).owned(ctx, &candidates).await
    }

    async fn converge(&self, ctx: &Context, mode: Mode) -> Result<Vec<Change>, StepError> {
        let found = self.list(ctx).await?;
        let kind = AlarmKind::new(&*self.api);
        let engine = Engine::new(ctx, STEP, mode);
        // A service's alarm names are published (in part) once all of its alarms exist: its ECS
        // service names them, and needs no other service's (see `Context::wait_for`).
        let expected: BTreeMap<&str, usize> =
            ctx.config.services.iter().map(|s| (s.name.as_str(), What::of(s.route.is_some()).count())).collect();
        let pending: std::sync::Mutex<BTreeMap<String, Vec<String>>> = std::sync::Mutex::default();
        let made = Gathered::default();
        let done = |w: &DesiredAlarm| {
            let mut pending = pending.lock().unwrap_or_else(|e| e.into_inner());
            let names = pending.entry(w.service.clone()).or_default();
            names.push(w.spec.name.clone());
            if expected.get(w.service.as_str()) == Some(&names.len()) {
                let mut names = names.clone();
                names.sort();
                made.add(&w.service, names, |alarm_names| ctx.put_partial(AlarmsOutputs { alarm_names }));
            }
        };
        let converge_all = |wanted: Vec<DesiredAlarm>| {
            let (found, kind, engine, done) = (&found, &kind, &engine, &done);
            async move {
                try_join_all(wanted.iter().map(|w| {
                    let have = found.iter().find(|a| a.name == w.spec.name).cloned();
                    async move {
                        engine.converge(kind, &w.id, &w.spec.name, &w.spec, have).await?;
                        done(w);
                        Ok::<_, StepError>(())
                    }
                }))
                .await?;
                Ok::<_, StepError>(wanted)
            }
        };
        // The ECS metrics' alarms (most of them, written at CloudWatch's 3 a second) go while the
        // load balancer is still being made; the target groups' follow once it is there.
        let ecs = converge_all(desired_in(ctx, None, Wave::Ecs)?);
        let target_groups = async {
            let ingress: IngressOutputs = ctx.wait().await?;
            converge_all(desired_in(ctx, Some(&ingress), Wave::TargetGroups)?).await
        };
        let (mut wanted, routed) = tokio::try_join!(ecs, target_groups)?;
        wanted.extend(routed);
        // The services name these alarms in their deployment configuration: published once they exist.
        ctx.put(outputs(&wanted));

        let declared_names: BTreeSet<String> = wanted.iter().map(|w| w.spec.name.clone()).collect();
        let undeclared = self.owned_undeclared(ctx, &found, &declared_names).await?;
        let declared_ids: BTreeSet<String> = wanted.iter().map(|w| w.id.clone()).collect();
        engine.prune(&kind, undeclared, &declared_ids).await?;
        Ok(engine.into_changes())
    }
}

#[async_trait]
impl Step for AlarmsStep {
    fn contract(&self) -> Contract {
        Contract::new(STEP, OutputKind::Alarms).reads(&[OutputKind::Ingress])
    }

    #[tracing::instrument(name = "alarms.plan", skip_all)]
    async fn plan(&self, ctx: &Context) -> Result<Vec<Change>, StepError> {
        self.converge(ctx, Mode::Plan).await
    }

    #[tracing::instrument(name = "alarms.apply", skip_all)]
    async fn apply(&self, ctx: &Context) -> Result<Vec<Change>, StepError> {
        self.converge(ctx, Mode::Apply).await
    }

    /// Deletes every alarm of the environment: those the config names (every kind of every
    /// configured service, enabled or not) and the others its tags say it owns. Reads no input.
    #[tracing::instrument(name = "alarms.destroy", skip_all)]
    async fn destroy(&self, ctx: &Context) -> Result<Vec<Change>, StepError> {
        let found = self.list(ctx).await?;
        let mut named: BTreeMap<String, String> = BTreeMap::new();
        for s in &ctx.config.services {
            for what in What::ALL {
                named.insert(ctx.names.alarm(&s.name, what.slug()), alarm_id(&s.name, what));
            }
        }
        let mut doomed: Vec<Owned<ObservedAlarm>> = found
            .iter()
            .filter_map(|a| {
                let id = named.get(&a.name)?.clone();
                Some(Owned { id, name: a.name.clone(), observed: a.clone() })
            })
            .collect();
        let declared: BTreeSet<String> = named.into_keys().collect();
        doomed.extend(self.owned_undeclared(ctx, &found, &declared).await?);
        let (kind, engine) = (AlarmKind::new(&*self.api), Engine::new(ctx, STEP, Mode::Apply));
        engine.delete_all(&kind, &doomed.iter().collect::<Vec<_>>()).await?;
        Ok(engine.into_changes())
    }
}

#[cfg(test)]
mod tests;
