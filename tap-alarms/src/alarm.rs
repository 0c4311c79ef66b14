//! The CloudWatch alarm resource kind, run by the resource engine ([`tap_core::resource`]), and
//! the four alarms tap puts on a service ([`What`]).
//!
//! - **diff**: metric (namespace, name, statistic, dimensions, or the metric math), period,
//!   evaluation periods, threshold, comparison, missing-data treatment and description; the typed
//!   update is the whole definition, sent with one `PutMetricAlarm` (a put replaces the alarm's
//!   definition, so there is no partial update).
//! - **create**: `PutMetricAlarm` with the environment's tags (CloudWatch applies `Tags` only when
//!   the put creates the alarm). A put is idempotent: resent after a lost answer, it changes
//!   nothing.
//! - **find**: `DescribeAlarms AlarmNames=[name]`.
//! - **delete**: `DeleteAlarms`, up to 100 alarms a call (a destroy or prune of a whole
//!   environment is one call); an alarm already gone (`ResourceNotFound`) is no change.
//! - **owned**: alarms under the environment's prefix (`tap-{s}-`) that the config does not
//!   declare are checked with `ListTagsForResource`, one each; those whose tags say the
//!   environment owns them ([`tap_core::resource::owned`]) are what a prune or destroy deletes.

use async_trait::async_trait;
use futures::future::try_join_all;
use tap_core::resource::{owned, ActionError, Deleted, Diff, During, Owned, Owner, Resource};
use tap_core::step::diff;
use tap_core::{AttrChange, AwsError, Context, StepError};

use crate::api::{AlarmSpec, AlarmsApi, ObservedAlarm};

/// Logical id prefix of alarms.
pub const ID_PREFIX: &str = "alarms/";

/// The alarms tap puts on a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum What {
    /// `AWS/ECS` `CPUUtilization` (Average) of the service: every service.
    CpuHigh,
    /// `AWS/ECS` `MemoryUtilization` (Average) of the service: every service.
    MemoryHigh,
    /// `AWS/ApplicationELB` `UnHealthyHostCount` (Maximum) of its target group(s): routed services.
    UnhealthyTargets,
    /// `AWS/ApplicationELB` `HTTPCode_Target_5XX_Count` (Sum) of its target group(s): routed services.
    Target5xx,
}

impl What {
    /// Every kind, in the order they are listed.
    pub const ALL: [What; 4] = [What::CpuHigh, What::MemoryHigh, What::UnhealthyTargets, What::Target5xx];

    /// The kind's part of names and logical ids, e.g. `cpu-high`.
    pub fn slug(self) -> &'static str {
        match self {
            What::CpuHigh => "cpu-high",
            What::MemoryHigh => "memory-high",
            What::UnhealthyTargets => "unhealthy-targets",
            What::Target5xx => "target-5xx",
        }
    }

    /// Whether the kind watches the load balancer (only services with a route have it).
    pub fn needs_route(self) -> bool {
        matches!(self, What::UnhealthyTargets | What::Target5xx)
    }

    /// The kinds a service has: CPU and memory always, the load balancer's when it is routed.
    pub fn of(routed: bool) -> impl Iterator<Item = What> {
        What::ALL.into_iter().filter(move |w| routed || !w.needs_route())
    }
}

/// Logical id of one alarm of a service, e.g. `alarms/cpu-high/frontend`.
pub fn alarm_id(service: &str, what: What) -> String {
    format!("{ID_PREFIX}{}/{service}", what.slug())
}

/// The service an alarm's logical id names (`alarms/{what}/{service}`).
pub fn service_of(id: &str) -> Option<&str> {
    id.strip_prefix(ID_PREFIX)?.split_once('/').map(|(_, service)| service)
}

/// The alarm kind over the CloudWatch seam.
pub struct AlarmKind<'a> {
    api: &'a dyn AlarmsApi,
}

impl<'a> AlarmKind<'a> {
    /// The kind over `api`.
    pub fn new(api: &'a dyn AlarmsApi) -> Self {
        AlarmKind { api }
    }

    /// Those of `candidates` (alarms under the environment's prefix) whose tags say the
    /// environment owns them (one `ListTagsForResource` each, concurrently; an alarm gone
    /// meanwhile is skipped).
    pub async fn owned(
        &self,
        ctx: &Context,
        candidates: &[ObservedAlarm],
    ) -> Result<Vec<Owned<ObservedAlarm>>, StepError> {
        let env = ctx.names.env();
        let found = try_join_all(candidates.iter().map(|alarm| async move {
            let tags = match self.api.list_tags(&alarm.arn).await {
                Ok(tags) => tags,
                Err(e) if e.is_not_found() => return Ok(None),
                Err(e) => return Err(StepError::aws(format!("alarms/{}", alarm.name), "ListTagsForResource")(e)),
            };
            let id = owned(&tags, env, String::new).filter(|id| id.starts_with(ID_PREFIX));
            let observed = ObservedAlarm { tags: Some(tags), ..alarm.clone() };
            Ok(id.map(|id| Owned { id, name: alarm.name.clone(), observed }))
        }))
        .await?;
        Ok(found.into_iter().flatten().collect())
    }
}

/// The environment an alarm's description names: tap writes `<service> (<env>): …`.
pub fn description_environment(description: Option<&str>) -> Option<&str> {
    let (label, _) = description?.split_once("): ")?;
    label.rsplit_once(" (").map(|(_, env)| env)
}

fn show<T: std::fmt::Display>(value: &Option<T>) -> Option<String> {
    value.as_ref().map(T::to_string)
}

#[async_trait]
impl Resource for AlarmKind<'_> {
    type Desired = AlarmSpec;
    type Observed = ObservedAlarm;
    /// The whole definition to put.
    type Update = AlarmSpec;
    const CREATE: &'static str = "PutMetricAlarm";

    fn diff(&self, want: &AlarmSpec, have: &ObservedAlarm) -> Result<Option<Diff<AlarmSpec>>, String> {
        let mut attrs = Vec::new();
        let mut differs = |attribute: &str, old: Option<String>, new: String| {
            if old.as_deref() != Some(new.as_str()) {
                attrs.push(AttrChange::new(attribute, old, Some(new)));
            }
        };
        differs("metric", show(&have.metric), want.metric.to_string());
        differs("period", show(&have.period), want.period.to_string());
        differs("evaluation_periods", show(&have.evaluation_periods), want.evaluation_periods.to_string());
        differs("threshold", show(&have.threshold), want.threshold.to_string());
        differs("comparison_operator", have.comparison.clone(), want.comparison.clone());
        // CloudWatch's default when none was given is `missing`.
        let treat = have.treat_missing_data.clone().unwrap_or_else(|| "missing".into());
        differs("treat_missing_data", Some(treat), want.treat_missing_data.clone());
        diff(&mut attrs, "description", &have.description, &Some(want.description.clone()));
        Ok((!attrs.is_empty()).then(|| Diff::new(want.clone(), attrs)))
    }

    async fn find(&self, want: &AlarmSpec) -> Result<Option<ObservedAlarm>, AwsError> {
        self.api.find_alarm(&want.name).await
    }

    /// From its tags (`ListTagsForResource`, unless already read): alarm names put the environment
    /// first, so `tap-dev-x-api-cpu-high` is both `dev`'s service `x-api` and `dev-x`'s service
    /// `api` (and the prefix listing of `dev` finds `dev-x`'s alarms too). tap writes the
    /// environment into every alarm's description (`<service> (<env>): …`, see
    /// [`description_environment`]): an alarm whose description names this environment is taken
    /// as its own without a call (CloudWatch reads tags one alarm a call, at a documented 9 a
    /// second: 400 calls on 100 services); any other is asked for its tags.
    async fn owner(&self, have: &ObservedAlarm, env: &str) -> Result<Owner, ActionError> {
        if let Some(tags) = &have.tags {
            return Ok(Owner::of(tags, env));
        }
        if description_environment(have.description.as_deref()) == Some(env) {
            return Ok(Owner::This);
        }
        let tags = self.api.list_tags(&have.arn).await.during("ListTagsForResource")?;
        Ok(Owner::of(&tags, env))
    }

    async fn create(&self, want: &AlarmSpec) -> Result<ObservedAlarm, AwsError> {
        self.api.put_metric_alarm(want).await?;
        Ok(ObservedAlarm::from_spec(want))
    }

    async fn update(&self, have: &ObservedAlarm, update: &AlarmSpec) -> Result<ObservedAlarm, ActionError> {
        self.api.put_metric_alarm(update).await.during("PutMetricAlarm")?;
        Ok(have.clone())
    }

    async fn delete(&self, have: &ObservedAlarm) -> Result<Deleted, ActionError> {
        self.api.delete_alarms(std::slice::from_ref(&have.name)).await.during("DeleteAlarms")?;
        Ok(Deleted::Now)
    }

    /// `DeleteAlarms` takes up to 100 names (and deletes none when one is gone).
    const DELETE_BATCH: usize = 100;

    async fn delete_many(&self, haves: &[&ObservedAlarm]) -> Result<(), ActionError> {
        let names: Vec<String> = haves.iter().map(|h| h.name.clone()).collect();
        self.api.delete_alarms(&names).await.during("DeleteAlarms")
    }
}
