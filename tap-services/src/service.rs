//! ECS services: created with the full desired configuration, read back (an emulator or an older
//! API may drop fields on create) and corrected in the same run; afterwards updated only when the
//! task definition, capacity-provider strategy, grace period, deployment configuration (circuit
//! breaker and CloudWatch alarms), network configuration, load balancers or service registries
//! differ. The desired count is set on create
//! only: auto scaling owns it afterwards.
//!
//! A traffic-shifting strategy (blue-green, canary, linear) gives the routed service's load
//! balancer an `advancedConfiguration` (alternate target group, production and test rules, the
//! ECS infrastructure role). Which of the two target groups is live after a deployment is ECS's:
//! the pair is compared as a set, never "repaired".

use std::time::Duration;

use async_trait::async_trait;
use tap_core::config::ServiceSpec;
use tap_core::error::IfFound;
use tap_core::naming::Tag;
use tap_core::outputs::{AlarmsOutputs, PENDING};
use tap_core::resource::{ActionError, Deleted, Diff, During, Engine, Owner, Resource};
use tap_core::step::{diff, AttrChange, OutputKind};
use tap_core::strategy::{self, Strategy, StrategySettings};
use tap_core::wait::{poll_until, Backoff};
use tap_core::{Context, StepError};

use crate::api::{Observed, ServicesApi};
use crate::{component, lookup, Inputs};

/// One entry of a capacity-provider strategy.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct StrategyItem {
    /// `FARGATE` or `FARGATE_SPOT`.
    pub capacity_provider: String,
    /// Tasks always placed on this provider first.
    pub base: i32,
    /// Relative share of the remaining tasks.
    pub weight: i32,
}

/// The `awsvpc` network configuration of a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkConfig {
    /// Subnet ids.
    pub subnets: Vec<String>,
    /// Security group ids.
    pub security_groups: Vec<String>,
    /// Whether tasks get a public IP.
    pub assign_public_ip: bool,
}

impl NetworkConfig {
    fn normalized(&self) -> NetworkConfig {
        let mut n = self.clone();
        n.subnets.sort();
        n.security_groups.sort();
        n
    }
}

/// A target group a service registers its tasks in.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct LoadBalancerRef {
    /// Target group ARN.
    pub target_group_arn: String,
    /// Container receiving the traffic.
    pub container_name: String,
    /// Its port.
    pub container_port: i32,
    /// How ECS shifts the traffic (`advancedConfiguration`), for a traffic-shifting strategy.
    pub traffic_shift: Option<TrafficShiftRef>,
}

/// A load balancer's `advancedConfiguration`: the second target group and the rules ECS moves
/// traffic on, and the role it does so with.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct TrafficShiftRef {
    /// The alternate target group.
    pub alternate_target_group_arn: String,
    /// The production listener rule.
    pub production_listener_rule: String,
    /// The test listener rule.
    pub test_listener_rule: String,
    /// The ECS infrastructure role.
    pub role_arn: String,
}

impl LoadBalancerRef {
    /// What tap compares: which of the two target groups is the service's and which the
    /// alternate is ECS's to swap during a deployment, so the pair is compared as a set.
    fn comparable(&self) -> LoadBalancerRef {
        let mut groups = vec![self.target_group_arn.clone()];
        groups.extend(self.traffic_shift.as_ref().map(|t| t.alternate_target_group_arn.clone()));
        groups.sort();
        LoadBalancerRef {
            target_group_arn: groups.join(" "),
            traffic_shift: self
                .traffic_shift
                .clone()
                .map(|t| TrafficShiftRef { alternate_target_group_arn: String::new(), ..t }),
            ..self.clone()
        }
    }
}

/// How ECS runs a deployment (`deploymentConfiguration.strategy` and its settings), with
/// percentages in tenths (the precision ECS keeps).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeploymentStrategy {
    /// `ROLLING`, `BLUE_GREEN`, `CANARY` or `LINEAR`.
    pub strategy: String,
    /// Bake time (traffic-shifting strategies).
    pub bake_time_minutes: Option<i32>,
    /// `CANARY`: (percent in tenths, bake minutes).
    pub canary: Option<(u32, i32)>,
    /// `LINEAR`: (step percent in tenths, bake minutes).
    pub linear: Option<(u32, i32)>,
}

impl DeploymentStrategy {
    /// The strategy the config asks for.
    pub fn from_settings(s: &StrategySettings) -> Self {
        let shifts = s.strategy.shifts_traffic();
        DeploymentStrategy {
            strategy: s.strategy.ecs_name().to_owned(),
            bake_time_minutes: shifts.then_some(s.bake_time_minutes as i32),
            canary: (s.strategy == Strategy::Canary)
                .then(|| (strategy::tenths(s.canary_percent), s.canary_bake_time_minutes as i32)),
            linear: (s.strategy == Strategy::Linear)
                .then(|| (strategy::tenths(s.linear_step_percent), s.linear_step_bake_time_minutes as i32)),
        }
    }

    /// Whether `observed` (what ECS reports; no strategy means `ROLLING`) runs deployments this way:
    /// only the settings this strategy uses are compared.
    pub fn matches(&self, observed: &DeploymentStrategy) -> bool {
        self.strategy == observed.strategy
            && (self.bake_time_minutes.is_none() || self.bake_time_minutes == observed.bake_time_minutes)
            && (self.canary.is_none() || self.canary == observed.canary)
            && (self.linear.is_none() || self.linear == observed.linear)
    }

    /// Whether ECS moves traffic between two target groups.
    pub fn shifts_traffic(&self) -> bool {
        self.strategy != "ROLLING"
    }
}

impl std::fmt::Display for DeploymentStrategy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.strategy)?;
        if let Some(bake) = self.bake_time_minutes {
            write!(f, ", bake {bake} min")?;
        }
        if let Some((percent, bake)) = self.canary {
            write!(f, ", canary {}% for {bake} min", f64::from(percent) / 10.0)?;
        }
        if let Some((percent, bake)) = self.linear {
            write!(f, ", steps of {}% every {bake} min", f64::from(percent) / 10.0)?;
        }
        Ok(())
    }
}

/// The deployment circuit breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CircuitBreaker {
    /// Stop a failing deployment.
    pub enable: bool,
    /// Roll back to the last completed deployment.
    pub rollback: bool,
}

/// The CloudWatch alarms ECS watches during a deployment (`deploymentConfiguration.alarms`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeploymentAlarms {
    /// Alarm names, sorted.
    pub alarm_names: Vec<String>,
    /// Watch them.
    pub enable: bool,
    /// Roll back when one goes to ALARM.
    pub rollback: bool,
}

impl DeploymentAlarms {
    /// What an update sends to stop watching alarms.
    pub fn off() -> Self {
        DeploymentAlarms { alarm_names: vec![], enable: false, rollback: false }
    }

    /// The alarms in effect (enabled), names sorted, for comparing what AWS has with what tap wants.
    fn in_effect(alarms: &Option<DeploymentAlarms>) -> Option<DeploymentAlarms> {
        alarms
            .as_ref()
            .filter(|a| a.enable)
            .map(|a| DeploymentAlarms { alarm_names: sorted(&a.alarm_names), ..a.clone() })
    }
}

/// Everything tap sets when it creates a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredService {
    /// Cluster name.
    pub cluster: String,
    /// Service name, `tap-{service}-{s}`.
    pub name: String,
    /// Task definition revision ARN.
    pub task_definition: String,
    /// Tasks at creation (auto scaling owns the count afterwards).
    pub desired_count: i32,
    /// The cluster's capacity-provider strategy.
    pub capacity_provider_strategy: Vec<StrategyItem>,
    /// Private subnets, the service's security group, no public IP.
    pub network: NetworkConfig,
    /// Seconds the load balancer's health checks are ignored after a task starts (routed services).
    pub health_check_grace_period_seconds: Option<i32>,
    /// Target groups (routed services).
    pub load_balancers: Vec<LoadBalancerRef>,
    /// Cloud Map service ARNs (discovery services).
    pub service_registries: Vec<String>,
    /// Deployment circuit breaker.
    pub circuit_breaker: CircuitBreaker,
    /// Deployment strategy.
    pub strategy: DeploymentStrategy,
    /// The service's CloudWatch alarms, with rollback on (`None` when `alarms.enabled` is off).
    pub alarms: Option<DeploymentAlarms>,
    /// Tags (propagated to tasks from the service, ECS-managed tags on).
    pub tags: Vec<Tag>,
    /// Idempotency token of the create call.
    pub client_token: String,
}

/// One deployment of a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedDeployment {
    /// Deployment id, `ecs-svc/…` (the `startedBy` of its tasks).
    pub id: String,
    /// `PRIMARY`, `ACTIVE` or `INACTIVE`.
    pub status: String,
    /// `IN_PROGRESS`, `COMPLETED` or `FAILED`.
    pub rollout_state: Option<String>,
    /// Why the rollout is in that state.
    pub rollout_state_reason: Option<String>,
    /// Desired tasks.
    pub desired_count: i32,
    /// Running tasks.
    pub running_count: i32,
    /// Pending tasks.
    pub pending_count: i32,
    /// Its task definition.
    pub task_definition: Option<String>,
    /// Tasks of it that failed to start or stopped.
    pub failed_tasks: i32,
}

/// A service as ECS reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedService {
    /// Service name.
    pub name: String,
    /// Service ARN.
    pub arn: String,
    /// `ACTIVE`, `DRAINING` or `INACTIVE`.
    pub status: String,
    /// Desired tasks.
    pub desired_count: i32,
    /// Running tasks.
    pub running_count: i32,
    /// Pending tasks.
    pub pending_count: i32,
    /// Task definition ARN.
    pub task_definition: Option<String>,
    /// Capacity-provider strategy (empty when the service uses a launch type).
    pub capacity_provider_strategy: Vec<StrategyItem>,
    /// `awsvpc` configuration.
    pub network: Option<NetworkConfig>,
    /// Health-check grace period.
    pub health_check_grace_period_seconds: Option<i32>,
    /// Deployment circuit breaker.
    pub circuit_breaker: Option<CircuitBreaker>,
    /// Deployment strategy (`ROLLING` when ECS reports none).
    pub strategy: DeploymentStrategy,
    /// Deployment alarms.
    pub alarms: Option<DeploymentAlarms>,
    /// Target groups.
    pub load_balancers: Vec<LoadBalancerRef>,
    /// Cloud Map service ARNs.
    pub service_registries: Vec<String>,
    /// Its tags (DescribeServices with `include = TAGS`).
    pub tags: Vec<Tag>,
    /// Deployments, PRIMARY first on AWS.
    pub deployments: Vec<ObservedDeployment>,
    /// The latest service events, newest first.
    pub events: Vec<crate::rollout::ServiceEvent>,
}

impl ObservedService {
    /// Whether the service is live (neither INACTIVE nor DRAINING).
    pub fn is_active(&self) -> bool {
        self.status == "ACTIVE"
    }

    /// The PRIMARY deployment.
    pub fn primary_deployment(&self) -> Option<&ObservedDeployment> {
        self.deployments.iter().find(|d| d.status == "PRIMARY")
    }
}

/// An UpdateService call: only the fields that differ are set. It never sets the desired count
/// except when destroy scales a service to zero.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ServiceUpdate {
    /// Cluster name.
    pub cluster: String,
    /// Service name.
    pub service: String,
    /// New task definition ARN.
    pub task_definition: Option<String>,
    /// New capacity-provider strategy.
    pub capacity_provider_strategy: Option<Vec<StrategyItem>>,
    /// Start a new deployment (needed when the strategy changes).
    pub force_new_deployment: bool,
    /// New grace period.
    pub health_check_grace_period_seconds: Option<i32>,
    /// New circuit breaker.
    pub circuit_breaker: Option<CircuitBreaker>,
    /// New deployment strategy (sent with the circuit breaker: the deployment configuration is
    /// written whole).
    pub strategy: Option<DeploymentStrategy>,
    /// New deployment alarms (sent in one `deploymentConfiguration` with the circuit breaker).
    pub alarms: Option<DeploymentAlarms>,
    /// New network configuration.
    pub network: Option<NetworkConfig>,
    /// New target groups.
    pub load_balancers: Option<Vec<LoadBalancerRef>>,
    /// New Cloud Map registries.
    pub service_registries: Option<Vec<String>>,
    /// New desired count (destroy only).
    pub desired_count: Option<i32>,
}

/// What converging one ECS service did.
#[derive(Debug, Clone)]
pub(crate) struct ServiceOutcome {
    /// Service ARN ([`PENDING`] when plan would create it).
    pub arn: String,
    /// Whether the service exists now (after apply) or already existed (plan).
    pub exists: bool,
    /// A service this run created, with what it was created from: [`settle`] sets what
    /// CreateService did not store, beside the scaling calls (which need only the service).
    pub created: Option<(DesiredService, ObservedService)>,
}

/// Sets what CreateService did not store of a service this run created ([`Engine::settle`]).
pub(crate) async fn settle(
    engine: &Engine<'_>,
    api: &dyn ServicesApi,
    spec: &ServiceSpec,
    created: Option<(DesiredService, ObservedService)>,
) -> Result<(), StepError> {
    if let Some((desired, made)) = created {
        let kind = EcsService { api, cluster: &desired.cluster };
        let id = component("ecs-service", &spec.name);
        engine.settle(&kind, &id, &desired.name, &desired, made).await?;
    }
    Ok(())
}

/// The service as the config and the other steps' outputs want it.
pub(crate) fn desired(
    ctx: &Context,
    inputs: &Inputs,
    alarms: &AlarmsOutputs,
    service: &ServiceSpec,
    task_definition: &str,
) -> Result<DesiredService, StepError> {
    let names = &ctx.names;
    let name = names.ecs_service(&service.name);
    let cluster_settings = &ctx.config.cluster;
    let security_group =
        lookup(&inputs.security.service_security_group_ids, &service.name, OutputKind::Security, "security group")?;
    let strategy = DeploymentStrategy::from_settings(&ctx.config.strategy_of(service));
    let load_balancers = match &service.route {
        Some(_) => vec![LoadBalancerRef {
            target_group_arn: lookup(
                &inputs.ingress()?.target_group_arns,
                &service.name,
                OutputKind::Ingress,
                "target group",
            )?
            .clone(),
            container_name: service.name.clone(),
            container_port: i32::from(service.port),
            traffic_shift: match strategy.shifts_traffic() {
                false => None,
                true => {
                    let shift =
                        lookup(&inputs.ingress()?.traffic_shifts, &service.name, OutputKind::Ingress, "traffic shift")?;
                    let role = inputs.security.infrastructure_role_arn.clone().ok_or_else(|| StepError::Conflict {
                        resource: component("ecs-service", &service.name),
                        message: "the security step published no ECS infrastructure role for its traffic shift".into(),
                    })?;
                    Some(TrafficShiftRef {
                        alternate_target_group_arn: shift.alternate_target_group_arn.clone(),
                        production_listener_rule: shift.production_listener_rule_arn.clone(),
                        test_listener_rule: shift.test_listener_rule_arn.clone(),
                        role_arn: role,
                    })
                }
            },
        }],
        None => vec![],
    };
    let service_registries = if service.discovery {
        vec![lookup(&inputs.discovery.services, &service.name, OutputKind::Discovery, "Cloud Map service")?.arn.clone()]
    } else {
        vec![]
    };
    Ok(DesiredService {
        cluster: inputs.cluster.name.clone(),
        task_definition: task_definition.to_string(),
        desired_count: service.desired_count,
        capacity_provider_strategy: vec![
            StrategyItem {
                capacity_provider: "FARGATE".into(),
                base: cluster_settings.on_demand_base as i32,
                weight: cluster_settings.on_demand_weight as i32,
            },
            StrategyItem {
                capacity_provider: "FARGATE_SPOT".into(),
                base: 0,
                weight: cluster_settings.spot_weight as i32,
            },
        ],
        network: NetworkConfig {
            subnets: inputs.network.private_subnets.iter().map(|s| s.id.clone()).collect(),
            security_groups: vec![security_group.clone()],
            assign_public_ip: false,
        },
        health_check_grace_period_seconds: service.route.as_ref().map(|_| 60),
        load_balancers,
        service_registries,
        circuit_breaker: CircuitBreaker { enable: true, rollback: true },
        strategy,
        alarms: alarms.alarm_names.get(&service.name).filter(|names| !names.is_empty()).map(|names| DeploymentAlarms {
            alarm_names: sorted(names),
            enable: true,
            rollback: true,
        }),
        tags: names.tags(&component("ecs-service", &service.name), &name),
        client_token: tap_core::naming::client_token(&[names.env(), &service.name, task_definition]),
        name,
    })
}

fn sorted<T: Ord + Clone>(items: &[T]) -> Vec<T> {
    let mut v = items.to_vec();
    v.sort();
    v
}

/// The UpdateService call that turns `observed` into `desired` (with the attributes that differ),
/// or `None` when they match.
pub(crate) fn update_for(
    desired: &DesiredService,
    observed: &ObservedService,
) -> Option<(ServiceUpdate, Vec<AttrChange>)> {
    let mut attrs = Vec::new();
    let mut update =
        ServiceUpdate { cluster: desired.cluster.clone(), service: desired.name.clone(), ..Default::default() };

    let observed_td = observed.task_definition.clone().unwrap_or_default();
    if observed_td != desired.task_definition {
        diff(&mut attrs, "task_definition", &observed_td, &desired.task_definition);
        update.task_definition = Some(desired.task_definition.clone());
    }
    let want_strategy = sorted(&desired.capacity_provider_strategy);
    let have_strategy = sorted(&observed.capacity_provider_strategy);
    if want_strategy != have_strategy {
        diff(&mut attrs, "capacity_provider_strategy", &have_strategy, &want_strategy);
        update.capacity_provider_strategy = Some(desired.capacity_provider_strategy.clone());
        update.force_new_deployment = true;
    }
    if let Some(grace) = desired.health_check_grace_period_seconds {
        if observed.health_check_grace_period_seconds.unwrap_or(0) != grace {
            diff(
                &mut attrs,
                "health_check_grace_period_seconds",
                &observed.health_check_grace_period_seconds,
                &Some(grace),
            );
            update.health_check_grace_period_seconds = Some(grace);
        }
    }
    let breaker_differs = observed.circuit_breaker != Some(desired.circuit_breaker);
    if breaker_differs {
        diff(&mut attrs, "deployment_circuit_breaker", &observed.circuit_breaker, &Some(desired.circuit_breaker));
    }
    let strategy_differs = !desired.strategy.matches(&observed.strategy);
    if strategy_differs {
        let (have, want) = (observed.strategy.to_string(), desired.strategy.to_string());
        attrs.push(AttrChange::new("deployment_strategy", Some(have), Some(want)));
    }
    let (want_alarms, have_alarms) =
        (DeploymentAlarms::in_effect(&desired.alarms), DeploymentAlarms::in_effect(&observed.alarms));
    let alarms_differ = want_alarms != have_alarms;
    if alarms_differ {
        diff(&mut attrs, "deployment_alarms", &have_alarms, &want_alarms);
    }
    if breaker_differs || strategy_differs || alarms_differ {
        // UpdateService writes the deployment configuration whole: what is not sent may be reset.
        update.circuit_breaker = Some(desired.circuit_breaker);
        update.strategy = Some(desired.strategy.clone());
        update.alarms = Some(want_alarms.unwrap_or_else(DeploymentAlarms::off));
    }
    let want_network = desired.network.normalized();
    let have_network = observed.network.as_ref().map(NetworkConfig::normalized);
    if have_network.as_ref() != Some(&want_network) {
        diff(&mut attrs, "network_configuration", &have_network, &Some(want_network));
        update.network = Some(desired.network.clone());
    }
    let comparable = |lbs: &[LoadBalancerRef]| sorted(&lbs.iter().map(LoadBalancerRef::comparable).collect::<Vec<_>>());
    let want_lbs = sorted(&desired.load_balancers);
    let have_lbs = sorted(&observed.load_balancers);
    if comparable(&want_lbs) != comparable(&have_lbs) {
        diff(&mut attrs, "load_balancers", &have_lbs, &want_lbs);
        update.load_balancers = Some(desired.load_balancers.clone());
    }
    let want_registries = sorted(&desired.service_registries);
    let have_registries = sorted(&observed.service_registries);
    if want_registries != have_registries {
        diff(&mut attrs, "service_registries", &have_registries, &want_registries);
        update.service_registries = Some(desired.service_registries.clone());
    }
    (!attrs.is_empty()).then_some((update, attrs))
}

/// The service named `name` in `cluster`, any status; `None` when it or the cluster is missing.
pub(crate) async fn find(
    api: &dyn ServicesApi,
    cluster: &str,
    name: &str,
    resource: &str,
) -> Result<Option<ObservedService>, StepError> {
    match api.describe_services(cluster, &[name.to_string()]).await {
        Ok(found) => Ok(found.into_iter().find(|s| s.name == name)),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(StepError::aws(resource, "DescribeServices")(e)),
    }
}

/// How long destroy and a DRAINING re-create wait for ECS to finish draining a service.
fn drain_backoff() -> Backoff {
    Backoff { initial: Duration::from_millis(500), max: Duration::from_secs(10), timeout: Duration::from_secs(900) }
}

/// Waits until the service is INACTIVE or gone.
pub(crate) async fn wait_inactive(
    api: &dyn ServicesApi,
    cluster: &str,
    name: &str,
    resource: &str,
) -> Result<(), StepError> {
    poll_until(&format!("ECS service {name} to drain"), drain_backoff(), || async {
        let found = find(api, cluster, name, resource).await?;
        Ok(match found {
            Some(s) if s.status != "INACTIVE" => {
                tracing::info!(service = name, status = %s.status, running = s.running_count, "waiting for the service to drain");
                None
            }
            _ => Some(()),
        })
    })
    .await
}

/// Creates the service or corrects what differs, through the engine; `observed` is the run's
/// batched read (which holds no service while the cluster is still to be created). A service just
/// created is compared with what CreateService stored: what it dropped is returned as
/// [`ServiceOutcome::fix`].
pub(crate) async fn converge(
    engine: &Engine<'_>,
    api: &dyn ServicesApi,
    inputs: &Inputs,
    alarms: &AlarmsOutputs,
    service: &ServiceSpec,
    task_definition: &str,
    observed: &Observed,
) -> Result<ServiceOutcome, StepError> {
    let ctx = engine.ctx();
    let resource = component("ecs-service", &service.name);
    let desired = desired(ctx, inputs, alarms, service, task_definition)?;
    let current = observed.services.get(&desired.name);
    let have = current.filter(|s| s.is_active()).cloned();
    let creating = have.is_none();
    if creating && engine.mode().is_apply() && current.is_some_and(|s| s.status == "DRAINING") {
        // ECS refuses a new service with the name of one that is still draining.
        wait_inactive(api, &desired.cluster, &desired.name, &resource).await?;
    }
    let kind = EcsService { api, cluster: &desired.cluster };
    let Some(now) = engine.converge(&kind, &resource, &desired.name, &desired, have).await? else {
        return Ok(ServiceOutcome { arn: PENDING.into(), exists: false, created: None });
    };
    let arn = now.arn.clone();
    Ok(ServiceOutcome { arn, exists: true, created: creating.then_some((desired, now)) })
}

/// The ECS service kind. Its delete scales the service to zero and deletes it; the caller then
/// waits with [`wait_inactive`] until ECS has drained it (a removed service's Cloud Map service,
/// target group, security group and role may only go after that).
pub(crate) struct EcsService<'a> {
    pub api: &'a dyn ServicesApi,
    pub cluster: &'a str,
}

#[async_trait]
impl Resource for EcsService<'_> {
    type Desired = DesiredService;
    type Observed = ObservedService;
    type Update = ServiceUpdate;
    const CREATE: &'static str = "CreateService";

    fn diff(&self, want: &DesiredService, have: &ObservedService) -> Result<Option<Diff<ServiceUpdate>>, String> {
        Ok(update_for(want, have).map(|(update, attrs)| Diff::new(update, attrs)))
    }

    /// From its tags (DescribeServices with `include = TAGS`). ECS service names are per cluster
    /// and the cluster is the environment's own, so another environment's service of this name
    /// is not found here; an untagged one (made by hand in this cluster) is a conflict.
    async fn owner(&self, have: &ObservedService, env: &str) -> Result<Owner, ActionError> {
        Ok(Owner::of(&have.tags, env))
    }

    /// What CreateService dropped is set by [`settle`] beside the scaling calls, not right after
    /// the create: the deploy's chain of calls stays one call shorter.
    fn settle_after_create(&self) -> bool {
        false
    }

    async fn find(&self, want: &DesiredService) -> Result<Option<ObservedService>, tap_core::AwsError> {
        let found = self.api.describe_services(&want.cluster, std::slice::from_ref(&want.name)).await.if_found()?;
        Ok(found.into_iter().flatten().find(|s| s.name == want.name && s.is_active()))
    }

    async fn create(&self, want: &DesiredService) -> Result<ObservedService, tap_core::AwsError> {
        self.api.create_service(want).await
    }

    async fn update(&self, _have: &ObservedService, update: &ServiceUpdate) -> Result<ObservedService, ActionError> {
        self.api.update_service(update).await.during("UpdateService")
    }

    async fn delete(&self, have: &ObservedService) -> Result<Deleted, ActionError> {
        if !have.is_active() {
            // DRAINING: already deleted, ECS is still draining it.
            return Ok(Deleted::Now);
        }
        let scale = ServiceUpdate {
            cluster: self.cluster.into(),
            service: have.name.clone(),
            desired_count: Some(0),
            ..Default::default()
        };
        // Gone meanwhile (or already being deleted): no change.
        let not_active = |e: &tap_core::AwsError| e.is("ServiceNotActiveException");
        if self.api.update_service(&scale).await.if_found_or(not_active).during("UpdateService")?.is_none() {
            return Ok(Deleted::AlreadyGone);
        }
        let deleted = self.api.delete_service(self.cluster, &have.name).await.if_found_or(not_active);
        Ok(Deleted::unless_gone(deleted.during("DeleteService")?))
    }
}
