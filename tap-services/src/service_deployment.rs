//! ECS service deployments (`ListServiceDeployments`, `DescribeServiceDeployments`,
//! `DescribeServiceRevisions`, `StopServiceDeployment`): how a deploy knows that the deployment of
//! its revision ended, and how, whatever the strategy.
//!
//! A service deployment moves a service from its source revisions to a target revision. It is
//! `SUCCESSFUL` once ECS is done with it — for a traffic-shifting strategy after production
//! traffic moved and the bake time passed with no alarm — and a rollback (by the circuit breaker,
//! an alarm, or a stop) ends in `ROLLBACK_SUCCESSFUL` (or `ROLLBACK_FAILED`, `STOPPED`). tap
//! follows the *newest* service deployment of a service: it is ours when its target revision runs
//! our task definition.

use std::collections::BTreeMap;
use std::time::Instant;

use tap_core::StepError;

use crate::api::ServicesApi;
use crate::component;
use crate::rollout::{revision_name, Phase};

/// One entry of `ListServiceDeployments`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceDeploymentBrief {
    /// Service deployment ARN.
    pub arn: String,
    /// Its status, e.g. `IN_PROGRESS`.
    pub status: String,
    /// The revision it deploys.
    pub target_revision_arn: Option<String>,
    /// When it was created (ms since the epoch).
    pub created_at_ms: Option<i64>,
}

/// One service deployment as `DescribeServiceDeployments` reports it (what tap reads of it).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ServiceDeployment {
    /// Service deployment ARN.
    pub arn: String,
    /// `PENDING`, `IN_PROGRESS`, `SUCCESSFUL`, `STOPPED`, `STOP_REQUESTED`, `ROLLBACK_REQUESTED`,
    /// `ROLLBACK_IN_PROGRESS`, `ROLLBACK_SUCCESSFUL` or `ROLLBACK_FAILED`.
    pub status: String,
    /// ECS's reason for the status.
    pub status_reason: Option<String>,
    /// The lifecycle stage, e.g. `BAKE_TIME`.
    pub lifecycle_stage: Option<String>,
    /// The revision it deploys.
    pub target_revision_arn: Option<String>,
    /// The revisions it replaces.
    pub source_revision_arns: Vec<String>,
    /// The share of production traffic ECS asked for the target revision, in percent.
    pub target_production_weight: Option<f64>,
    /// The deployment's bake time.
    pub bake_time_minutes: Option<i32>,
    /// Alarms that fired during it.
    pub triggered_alarms: Vec<String>,
    /// The circuit breaker's status (`TRIGGERED` when it stopped the deployment).
    pub circuit_breaker_status: Option<String>,
    /// Why ECS rolled it back.
    pub rollback_reason: Option<String>,
}

impl ServiceDeployment {
    /// The last part of its ARN.
    pub fn id(&self) -> &str {
        self.arn.rsplit('/').next().unwrap_or(&self.arn)
    }

    /// Whether ECS is still working on it (a rollback under way included).
    pub fn in_flight(&self) -> bool {
        matches!(self.status.as_str(), "PENDING" | "IN_PROGRESS")
    }

    /// Why it did not succeed, naming what stopped it: the alarms that fired, the circuit
    /// breaker, a stop, and ECS's own words.
    pub fn failure(&self) -> String {
        let mut why = Vec::new();
        if !self.triggered_alarms.is_empty() {
            why.push(format!("alarm {} in ALARM", self.triggered_alarms.join(", ")));
        }
        if self.circuit_breaker_status.as_deref() == Some("TRIGGERED") {
            why.push("the deployment circuit breaker stopped it (tasks failed to start or stay healthy)".to_owned());
        }
        for text in [&self.rollback_reason, &self.status_reason].into_iter().flatten() {
            if !text.is_empty() && !why.iter().any(|w| w.contains(text.as_str())) {
                why.push(format!("ECS: {text}"));
            }
        }
        if why.is_empty() {
            why.push(format!("service deployment {}", self.status));
        }
        why.join("; ")
    }
}

/// Reads the newest service deployment of a service and what its revisions run, keeping the
/// revision → task definition answers (they never change).
#[derive(Debug, Default)]
pub struct Tracker {
    task_definitions: BTreeMap<String, String>,
    bake_seen: Option<Instant>,
}

impl Tracker {
    /// The task definition of each revision, asking ECS only for the ones not known yet.
    async fn task_definitions(&mut self, api: &dyn ServicesApi, label: &str, arns: &[String]) -> Result<(), StepError> {
        let unknown: Vec<String> = arns.iter().filter(|a| !self.task_definitions.contains_key(*a)).cloned().collect();
        if !unknown.is_empty() {
            let found = api
                .service_revision_task_definitions(&unknown)
                .await
                .map_err(StepError::aws(component("ecs-service", label), "DescribeServiceRevisions"))?;
            self.task_definitions.extend(found);
        }
        Ok(())
    }

    /// The task definition a revision runs, when known.
    pub fn task_definition(&self, revision_arn: &str) -> Option<&str> {
        self.task_definitions.get(revision_arn).map(String::as_str)
    }

    /// The newest service deployment of the service, described, when its target revision runs
    /// `task_definition`; `None` while the newest is another one (or there is none yet).
    pub async fn current(
        &mut self,
        api: &dyn ServicesApi,
        cluster: &str,
        service: &str,
        label: &str,
        task_definition: &str,
    ) -> Result<Option<ServiceDeployment>, StepError> {
        let resource = component("ecs-service", label);
        let briefs = api
            .list_service_deployments(cluster, service)
            .await
            .map_err(StepError::aws(&resource, "ListServiceDeployments"))?;
        let Some(newest) = briefs.iter().max_by_key(|b| b.created_at_ms.unwrap_or_default()) else {
            return Ok(None);
        };
        let Some(target) = newest.target_revision_arn.clone() else { return Ok(None) };
        self.task_definitions(api, label, std::slice::from_ref(&target)).await?;
        if self.task_definition(&target) != Some(task_definition) {
            return Ok(None);
        }
        let described = api
            .describe_service_deployments(std::slice::from_ref(&newest.arn))
            .await
            .map_err(StepError::aws(&resource, "DescribeServiceDeployments"))?;
        let Some(found) = described.into_iter().next() else { return Ok(None) };
        self.task_definitions(api, label, &found.source_revision_arns).await?;
        Ok(Some(found))
    }

    /// Where the deployment stands ([`Phase`]): `SUCCESSFUL` is done; a rollback or a stop fails
    /// once ECS finished it (production traffic back on the source revision); anything else is a
    /// progress line with the lifecycle stage, the traffic share and the bake time left.
    pub fn phase(&mut self, sd: &ServiceDeployment) -> Phase {
        let source = sd.source_revision_arns.iter().find_map(|a| self.task_definition(a)).map(str::to_owned);
        match sd.status.as_str() {
            "SUCCESSFUL" => Phase::Done,
            "ROLLBACK_SUCCESSFUL" | "ROLLBACK_FAILED" | "STOPPED" => {
                Phase::Failed { reason: sd.failure(), primary: source.filter(|_| sd.status != "ROLLBACK_FAILED") }
            }
            "ROLLBACK_REQUESTED" | "ROLLBACK_IN_PROGRESS" | "STOP_REQUESTED" => Phase::InProgress(format!(
                "service deployment {} {}: rolling back{} ({})",
                sd.id(),
                sd.status,
                source.map(|s| format!(" to {}", revision_name(&s))).unwrap_or_default(),
                sd.failure()
            )),
            status => {
                let stage = sd.lifecycle_stage.as_deref().unwrap_or("PENDING");
                let mut line = format!("service deployment {} {status}, stage {stage}", sd.id());
                if let Some(weight) = sd.target_production_weight {
                    line.push_str(&format!(", {weight}% of production traffic on the new revision"));
                }
                if stage == "BAKE_TIME" {
                    let since = *self.bake_seen.get_or_insert_with(Instant::now);
                    if let Some(minutes) = sd.bake_time_minutes {
                        // In whole minutes: a progress view prints each distinct line once.
                        let left = (u64::from(minutes.max(0) as u32) * 60).saturating_sub(since.elapsed().as_secs());
                        line.push_str(&format!(", bake time left about {} min", left.div_ceil(60)));
                    }
                }
                Phase::InProgress(line)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::MockServicesApi;

    fn deployment(status: &str) -> ServiceDeployment {
        ServiceDeployment {
            arn: "arn:aws:ecs:us-east-1:123:service-deployment/c/s/abc".into(),
            status: status.into(),
            target_revision_arn: Some("rev-new".into()),
            source_revision_arns: vec!["rev-old".into()],
            ..Default::default()
        }
    }

    fn api() -> MockServicesApi {
        let mut api = MockServicesApi::new();
        api.expect_list_service_deployments().returning(|_, _| {
            Ok(vec![
                ServiceDeploymentBrief {
                    arn: "sd-old".into(),
                    status: "SUCCESSFUL".into(),
                    target_revision_arn: Some("rev-old".into()),
                    created_at_ms: Some(1),
                },
                ServiceDeploymentBrief {
                    arn: "sd-new".into(),
                    status: "IN_PROGRESS".into(),
                    target_revision_arn: Some("rev-new".into()),
                    created_at_ms: Some(2),
                },
            ])
        });
        api.expect_service_revision_task_definitions().returning(|arns| {
            Ok(arns.iter().map(|a| (a.clone(), format!("td:{}", a.trim_start_matches("rev-")))).collect())
        });
        api
    }

    #[tokio::test]
    async fn the_newest_deployment_is_ours_only_when_it_runs_our_task_definition() {
        let mut api = api();
        api.expect_describe_service_deployments()
            .withf(|arns| arns == ["sd-new".to_string()])
            .times(1)
            .returning(|_| Ok(vec![deployment("IN_PROGRESS")]));
        let mut tracker = Tracker::default();
        let ours = tracker.current(&api, "c", "s", "api", "td:new").await.unwrap();
        assert_eq!(ours.map(|d| d.status), Some("IN_PROGRESS".to_string()));
        // An older revision is never taken for ours, even when a deployment of it succeeded.
        assert_eq!(tracker.current(&api, "c", "s", "api", "td:old").await.unwrap(), None);
    }

    #[test]
    fn success_rollbacks_and_progress() {
        let mut tracker = Tracker::default();
        tracker.task_definitions.insert("rev-old".into(), "arn:td/tap-api-dev:1".into());
        assert_eq!(tracker.phase(&deployment("SUCCESSFUL")), Phase::Done);

        let alarm = ServiceDeployment {
            triggered_alarms: vec!["tap-api-gateway-dev-5xx".into()],
            status_reason: Some("Service deployment rolled back because of alarms.".into()),
            ..deployment("ROLLBACK_SUCCESSFUL")
        };
        match tracker.phase(&alarm) {
            Phase::Failed { reason, primary } => {
                assert!(reason.contains("alarm tap-api-gateway-dev-5xx in ALARM"), "{reason}");
                assert!(reason.contains("rolled back because of alarms"), "{reason}");
                assert_eq!(primary.as_deref(), Some("arn:td/tap-api-dev:1"));
            }
            other => panic!("{other:?}"),
        }
        let breaker = ServiceDeployment {
            circuit_breaker_status: Some("TRIGGERED".into()),
            ..deployment("ROLLBACK_IN_PROGRESS")
        };
        match tracker.phase(&breaker) {
            Phase::InProgress(line) => {
                assert!(line.contains("rolling back to tap-api-dev:1"), "{line}");
                assert!(line.contains("circuit breaker"), "{line}");
            }
            other => panic!("{other:?}"),
        }
        let baking = ServiceDeployment {
            lifecycle_stage: Some("BAKE_TIME".into()),
            bake_time_minutes: Some(5),
            target_production_weight: Some(100.0),
            ..deployment("IN_PROGRESS")
        };
        match tracker.phase(&baking) {
            Phase::InProgress(line) => {
                assert!(line.contains("stage BAKE_TIME"), "{line}");
                assert!(line.contains("100% of production traffic"), "{line}");
                assert!(line.contains("bake time left about 5 min"), "{line}");
            }
            other => panic!("{other:?}"),
        }
    }
}
