//! `tap-services`: the running part of a tap environment — per service a CloudWatch log group, an
//! ECS task definition, an ECS Fargate service and its auto scaling.
//!
//! **Reads** from the [`Context`]: the private subnets (network), the repository URIs (registry),
//! the cluster (cluster), the security groups, roles and secret ARNs (security), the ALB DNS name and
//! target groups (ingress), the Cloud Map services (discovery) and each service's CloudWatch alarm
//! names (alarms), which it names in `deploymentConfiguration.alarms` with rollback on.
//! **Writes** [`ServicesOutputs`]: service name → ECS service ARN; gives [`Pruned::Services`] once its prune is done.
//!
//! Per service, concurrently across services:
//! - [`logs`]: log group `/ecs/tap-{service}-{s}` with the configured retention.
//! - [`task_definition`] and [`task_family`]: the desired definition is rendered and compared with
//!   the family's latest ACTIVE revision; a revision is registered only when it differs.
//! - [`service`]: the ECS service, created with the cluster's capacity-provider strategy and read
//!   back so fields an endpoint dropped on create are set in the same run; later updated only on
//!   difference, never touching the desired count (auto scaling owns it).
//! - [`scaling`]: scalable target (min/max) and a CPU target-tracking policy, found by resource id.
//! - [`quota`]: for the quota preflight, the Fargate vCPUs (on demand and Spot) the services a plan
//!   creates would run, and what the region's running tasks use.
//!
//! Log groups, task definition families ([`task_family`]: an update registers the next revision
//! and returns it, whose ARN the service then runs), ECS services and scaling all run through the
//! resource engine ([`tap_core::resource`]).
//!
//! **AWS SDK crates**: ECS, CloudWatch Logs and Application Auto Scaling, and also ECR and ELBv2,
//! declared as this crate's own rather than reached through traits implemented elsewhere: the
//! services step reads what it deploys against — the image digests in its repositories and its
//! tasks' health in their target groups (rollout waits, `tap status`) — so with traits it could not
//! run alone without a caller re-implementing those reads. `cargo xtask tidy` allows exactly these.
//!
//! **Prune**: what the environment owns and no configured service declares — ECS services in its
//! cluster, log groups `/ecs/tap-…-{s}`, task definition families `tap-…-{s}` (each owned by its
//! tags) and the cluster's scalable targets and their policies (by resource id) — is listed by
//! plan and removed by deploy: the scaling and, alongside, the ECS service (scaled to 0, deleted
//! with force, waited for until INACTIVE), then its task definition family and log group. In apply
//! mode it gives [`Pruned::Services`] after that, so steps that delete a removed service's Cloud
//! Map service, target group, security group or role wait for it (their `Contract::prune_waits`). `destroy` removes everything these listings find, whatever the config
//! says, and gives [`Gone::EcsServices`] as soon as the ECS services are INACTIVE.
//!
//! [`image`]: a service that already runs is never moved to an image its repository does not
//! have — checked before anything of it is written; plan lists a refusal (`!`), apply fails
//! (unless `deploy.allow_missing_images`). A service still to be created is created all the same.
//!
//! After converging, deploy warns about images missing from ECR and (unless `deploy.wait` is off)
//! waits for every rollout to complete. [`status::status`] backs `tap status`.
//!
//! ```no_run
//! # async fn example(session: &tap_core::aws::AwsSession, ctx: &tap_core::Context) -> Result<(), tap_core::StepError> {
//! use tap_core::Step;
//! let step = tap_services::ServicesStep::from_session(session);
//! let changes = step.plan(ctx).await?; // ctx holds the other steps' outputs
//! for change in changes {
//!     println!("{change}");
//! }
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]

pub mod api;
pub mod image;
pub mod logs;
mod prune;
pub mod quota;
pub mod rollout;
pub mod scaling;
mod sdk;
pub mod service;
pub mod service_deployment;
pub mod status;
pub mod task_definition;
pub mod task_family;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::future::try_join_all;
use tap_core::aws::AwsSession;
use tap_core::config::ServiceSpec;
use tap_core::outputs::{
    is_known, AlarmsOutputs, ClusterOutputs, DiscoveryOutputs, IngressOutputs, NetworkOutputs, RegistryOutputs,
    SecurityOutputs, ServicesOutputs,
};
use tap_core::resource::Engine;
use tap_core::step::{Contract, Gone, OutputKind, Pruned};
use tap_core::wait::Backoff;
use tap_core::{Change, Context, Mode, Step, StepError};

#[cfg(any(test, feature = "test-util"))]
pub use api::MockServicesApi;
pub use api::ServicesApi;
pub use sdk::SdkServices;

use crate::logs::{DesiredLogGroup, LogGroup};

const STEP: &str = "services";

/// Logical id of one of this step's resources, e.g. `services/ecs-service/frontend`.
pub(crate) fn component(kind: &str, service: &str) -> String {
    format!("{STEP}/{kind}/{service}")
}

/// `map[key]`, or an error naming the output that lacks it.
pub(crate) fn lookup<'a, V>(
    map: &'a BTreeMap<String, V>,
    key: &str,
    output: OutputKind,
    what: &str,
) -> Result<&'a V, StepError> {
    map.get(key).ok_or_else(|| StepError::MissingOutput {
        step: STEP.into(),
        output: output.to_string(),
        why: format!("it has no {what} for `{key}`"),
    })
}

/// The other steps' outputs this step reads.
#[derive(Debug, Clone)]
pub(crate) struct Inputs {
    pub network: NetworkOutputs,
    pub registry: RegistryOutputs,
    pub cluster: ClusterOutputs,
    pub security: SecurityOutputs,
    /// `None` for a service that reads nothing of the load balancer (not routed, no `{alb_dns}`
    /// in its environment): it does not wait for it.
    pub ingress: Option<IngressOutputs>,
    pub discovery: DiscoveryOutputs,
}

impl Inputs {
    /// Reads every input that was already written (unit tests render from a prepared context).
    #[cfg(test)]
    fn read(ctx: &Context) -> Result<Self, StepError> {
        Ok(Inputs {
            network: ctx.get(STEP)?,
            registry: ctx.get(STEP)?,
            cluster: ctx.get(STEP)?,
            security: ctx.get(STEP)?,
            ingress: Some(ctx.get(STEP)?),
            discovery: ctx.get(STEP)?,
        })
    }

    /// The load balancer's outputs (there for every service that reads them).
    pub fn ingress(&self) -> Result<&IngressOutputs, StepError> {
        self.ingress.as_ref().ok_or_else(|| StepError::MissingOutput {
            step: STEP.into(),
            output: OutputKind::Ingress.to_string(),
            why: "the service was thought to need nothing of the load balancer".into(),
        })
    }

    /// What `spec` reads of the other steps, as soon as its own part is there: its repository,
    /// its task role and its Cloud Map service (their steps write their outputs in part, see
    /// `Context::wait_for`), so that one service's task definition, ECS service and scaling go
    /// ahead while the next one's role is still being made. At a hundred services this overlaps
    /// IAM's, ECR's and Cloud Map's few writes a second with ECS's and Application Auto Scaling's
    /// instead of running them one after another. Its alarms are awaited apart, by the ECS
    /// service alone ([`ServicesStep::converge_service`]).
    async fn for_service(ctx: &Context, spec: &ServiceSpec) -> Result<Self, StepError> {
        let name = spec.name.as_str();
        let reads_load_balancer = task_definition::reads_load_balancer(spec);
        let ingress = async {
            match reads_load_balancer {
                true => ctx.wait::<IngressOutputs>().await.map(Some),
                false => Ok(None),
            }
        };
        let (network, registry, cluster, security, ingress, discovery) = tokio::try_join!(
            ctx.wait::<NetworkOutputs>(),
            ctx.wait_for::<RegistryOutputs>(|r| r.repositories.contains_key(name)),
            ctx.wait::<ClusterOutputs>(),
            ctx.wait_for::<SecurityOutputs>(|s| s.task_role_arns.contains_key(name)),
            ingress,
            ctx.wait_for::<DiscoveryOutputs>(|d| !spec.discovery || d.services.contains_key(name)),
        )?;
        Ok(Inputs { network, registry, cluster, security, ingress, discovery })
    }
}

/// What converging one service produced.
struct Converged {
    name: String,
    arn: String,
    /// The refusal to move a running service to a missing image (plan lists it; see [`image`]).
    refusal: Option<Change>,
    /// Deploy should wait for this service's rollout (it exists and its image is in ECR).
    wait: bool,
    /// The revision the service is to run (registered by this run, or the current one).
    task_definition: String,
    /// The revision it ran before this run, to roll back to.
    previous: Option<String>,
}

/// Log groups, task definitions, ECS services and auto scaling of every configured service.
pub struct ServicesStep {
    api: Arc<dyn ServicesApi>,
    wait_poll: (Duration, Duration),
}

impl ServicesStep {
    /// A step over `api` (the SDK, or a mock in tests).
    pub fn new(api: Arc<dyn ServicesApi>) -> Self {
        ServicesStep { api, wait_poll: (Duration::from_secs(2), Duration::from_secs(15)) }
    }

    /// A step over real SDK clients built from `session` (see [`SdkServices::from_session`]).
    pub fn from_session(session: &AwsSession) -> Self {
        Self::new(Arc::new(SdkServices::from_session(session)))
    }

    /// Sets the first and the longest delay between polls while waiting for rollouts.
    pub fn with_wait_poll(mut self, initial: Duration, max: Duration) -> Self {
        self.wait_poll = (initial, max);
        self
    }

    async fn converge_service(
        &self,
        engine: &Engine<'_>,
        inputs: &Inputs,
        observed: &api::Observed,
        spec: &ServiceSpec,
    ) -> Result<Converged, StepError> {
        let (ctx, mode) = (engine.ctx(), engine.mode());
        let api = self.api.as_ref();
        // A running service is never moved to an image its repository does not have: checked
        // before anything of the service is written (plan lists the refusal, apply stops).
        let (image_found, refusal) = self.check_move(ctx, mode, inputs, observed, spec).await?;
        let work = async {
            let log_group = async {
                let name = ctx.names.log_group(&spec.name);
                let id = component("log-group", &spec.name);
                let want = DesiredLogGroup {
                    tags: ctx.names.tags(&id, &name),
                    retention_days: ctx.config.logs.retention_days,
                    name: name.clone(),
                };
                engine.converge(&LogGroup(api), &id, &name, &want, observed.log_groups.get(&name).cloned()).await
            };
            // Only the ECS service names the alarms, which CloudWatch makes at 3 a second: the log
            // group and the task definition do not wait for them.
            let alarms = ctx.wait_for::<AlarmsOutputs>(|a| a.alarm_names.contains_key(&spec.name));
            let (_, task_definition, alarms) =
                tokio::try_join!(log_group, task_family::converge(engine, api, inputs, spec, observed), alarms)?;
            let svc = service::converge(engine, api, inputs, &alarms, spec, &task_definition, observed).await?;
            tokio::try_join!(
                scaling::converge(engine, api, &inputs.cluster.name, spec, svc.exists, observed),
                service::settle(engine, api, spec, svc.created),
            )?;
            Ok::<_, StepError>((svc.arn, task_definition))
        };
        // The image check decides whether to wait for the rollout, and warns when the image is
        // missing: a no-op under `--no-wait` needs neither. When the answer is sure to be needed
        // (waiting, or a service still to create) it runs beside the service's calls, not after.
        let creating = !observed.services.contains_key(&ctx.names.ecs_service(&spec.name));
        let early = mode.is_apply() && image_found.is_none() && (ctx.config.deploy.wait || creating);
        let early_check = async {
            if early {
                return self.check_image(ctx, inputs, spec).await.map(Some);
            }
            Ok(image_found)
        };
        let previous = observed
            .services
            .get(&ctx.names.ecs_service(&spec.name))
            .filter(|s| s.is_active())
            .and_then(|s| s.task_definition.clone());
        let (image_found, (arn, task_definition)) = tokio::try_join!(early_check, work)?;
        // This service's changes: those the engine recorded under its logical ids.
        let mine = |c: &Change| c.resource.rsplit('/').next() == Some(spec.name.as_str());
        let changed = engine.changes().iter().any(mine);
        let wait = mode.is_apply()
            && (ctx.config.deploy.wait || changed)
            && match image_found {
                Some(found) => found,
                None => self.check_image(ctx, inputs, spec).await?,
            };
        Ok(Converged { name: spec.name.clone(), arn, refusal, wait, task_definition, previous })
    }

    /// For a running service this deploy would move (see [`image`]): whether its image is in the
    /// repository, and, when it is not, the refusal plan lists; apply fails with it instead,
    /// unless `deploy.allow_missing_images` lets the service move anyway (with a warning).
    /// `(None, None)` for a service that does not move: nothing was asked.
    async fn check_move(
        &self,
        ctx: &Context,
        mode: Mode,
        inputs: &Inputs,
        observed: &api::Observed,
        spec: &ServiceSpec,
    ) -> Result<(Option<bool>, Option<Change>), StepError> {
        if !image::moves(self.api.as_ref(), ctx, inputs, spec, observed).await? {
            return Ok((None, None));
        }
        let Some(repository) = inputs.registry.repositories.get(&spec.name) else { return Ok((None, None)) };
        let api = self.api.as_ref();
        let tag = ctx.config.image_tag_of(spec);
        if image::exists(api, repository, spec, tag).await? {
            return Ok((Some(true), None));
        }
        if ctx.config.deploy.allow_missing_images {
            let why = if mode.is_apply() {
                "moving the running service to it anyway (deploy.allow_missing_images); not waiting for it"
            } else {
                "deploy would move the running service to it anyway (deploy.allow_missing_images)"
            };
            image::warn_missing(ctx, spec, repository, tag, why);
            return Ok((Some(false), None));
        }
        let missing = image::missing(api, repository, spec, tag).await?;
        if mode.is_apply() {
            return Err(missing.error());
        }
        Ok((Some(false), Some(missing.change())))
    }

    /// Whether the service's image is in ECR; warns with the push commands when it is not.
    async fn check_image(&self, ctx: &Context, inputs: &Inputs, spec: &ServiceSpec) -> Result<bool, StepError> {
        let Some(repo) = inputs.registry.repositories.get(&spec.name) else { return Ok(false) };
        if !is_known(&repo.uri) {
            return Ok(false);
        }
        let tag = ctx.config.image_tag_of(spec);
        // A repository made by this run holds no image yet.
        let found = image::exists(self.api.as_ref(), repo, spec, tag).await?;
        if !found {
            image::warn_missing(ctx, spec, repo, tag, "not waiting for it");
        }
        Ok(found)
    }

    #[tracing::instrument(name = "services", skip_all, fields(mode = ?mode))]
    async fn converge(&self, ctx: &Context, mode: Mode) -> Result<Vec<Change>, StepError> {
        let api = self.api.as_ref();
        let engine = Engine::new(ctx, STEP, mode);
        // One batched read of every service's log group, ECS service and auto scaling, shared
        // below. It needs only the cluster, so it runs while the other inputs are still coming.
        let observed = async {
            let cluster: ClusterOutputs = ctx.wait().await?;
            let observed = api::Observed::read(api, ctx, &cluster).await?;
            Ok::<_, StepError>((cluster, observed))
        };
        let task_definitions = api::latest_task_definitions(api, ctx);
        let ((cluster, mut observed), (task_definitions, families)) = tokio::try_join!(observed, task_definitions)?;
        observed.task_definitions = task_definitions;
        observed.listed.families = families;
        let converged = try_join_all(ctx.config.services.iter().map(|spec| {
            let (engine, observed) = (&engine, &observed);
            async move {
                let inputs = Inputs::for_service(ctx, spec).await?;
                self.converge_service(engine, &inputs, observed, spec).await
            }
        }))
        .await?;
        let outputs =
            ServicesOutputs { service_arns: converged.iter().map(|c| (c.name.clone(), c.arn.clone())).collect() };
        ctx.put(outputs);
        // What the environment owns and the config no longer declares. The other steps delete a
        // removed service's Cloud Map service, target group, security group and role once this
        // step gives `Pruned::Services`, after its prune (plan prunes nothing: nobody waits).
        let declared: BTreeSet<String> = ctx.config.services.iter().map(|s| s.name.clone()).collect();
        let cluster = &cluster.name;
        let found = prune::undeclared(api, ctx, cluster, &observed.listed, &declared).await?;
        prune::remove(api, &engine, cluster, found, &|| ()).await?;
        ctx.give_pruned(Pruned::Services);
        if mode.is_apply() && ctx.config.deploy.wait {
            let backoff = Backoff {
                initial: self.wait_poll.0,
                max: self.wait_poll.1,
                timeout: Duration::from_secs(ctx.config.deploy.timeout_seconds),
            };
            let waits = converged.iter().filter(|c| c.wait).map(|c| {
                let name = ctx.names.ecs_service(&c.name);
                let cluster = cluster.as_str();
                async move {
                    let wait = rollout::RolloutWait {
                        cluster,
                        service: &name,
                        label: &c.name,
                        log_group: ctx.names.log_group(&c.name),
                        task_definition: c.task_definition.clone(),
                        rollback_to: c.previous.clone(),
                        max_failed_tasks: ctx.config.deploy.max_failed_tasks as usize,
                        shifts_traffic: rollout::shifts_traffic(ctx, &c.name),
                        backoff,
                        ctx: Some(ctx),
                    };
                    rollout::wait(api, &wait).await
                }
            });
            // Every rollout is followed to its end (a failing one is rolled back) even when
            // another fails: no wait is cut short by a sibling's error.
            let failed: Vec<StepError> =
                futures::future::join_all(waits).await.into_iter().filter_map(Result::err).collect();
            if let Some(err) = rollout::combine(failed) {
                return Err(err);
            }
        }
        let mut changes: Vec<Change> = converged.into_iter().filter_map(|c| c.refusal).collect();
        changes.extend(engine.into_changes());
        Ok(changes)
    }
}

#[async_trait]
impl Step for ServicesStep {
    fn contract(&self) -> Contract {
        Contract::new(STEP, OutputKind::Services)
            .reads(&[
                OutputKind::Network,
                OutputKind::Registry,
                OutputKind::Cluster,
                OutputKind::Security,
                OutputKind::Ingress,
                OutputKind::Discovery,
                OutputKind::Alarms,
            ])
            .gives(&[Gone::EcsServices])
            .prunes(&[Pruned::Services])
    }

    async fn plan(&self, ctx: &Context) -> Result<Vec<Change>, StepError> {
        self.converge(ctx, Mode::Plan).await
    }

    async fn apply(&self, ctx: &Context) -> Result<Vec<Change>, StepError> {
        self.converge(ctx, Mode::Apply).await
    }

    /// Removes every service of the environment, whatever the config says: what the listings
    /// find and its tags say is the environment's.
    #[tracing::instrument(name = "services", skip_all)]
    async fn destroy(&self, ctx: &Context) -> Result<Vec<Change>, StepError> {
        let api = self.api.as_ref();
        let cluster = ctx.names.cluster();
        let listed = prune::Listed::read(api, &cluster).await?;
        let found = prune::undeclared(api, ctx, &cluster, &listed, &BTreeSet::new()).await?;
        let engine = Engine::new(ctx, STEP, Mode::Apply);
        // The other steps' deletions held by the services (groups, subnets, target groups, the
        // cluster, Cloud Map) go on once these are INACTIVE, before task definitions and logs.
        prune::remove(api, &engine, &cluster, found, &|| ctx.give(Gone::EcsServices)).await?;
        Ok(engine.into_changes())
    }
}

#[cfg(test)]
mod tests;
