//! `tap-services`: the running part of a tap environment — per service a CloudWatch log group, an
//! ECS task definition, an ECS Fargate service and its auto scaling.
//!
//! **Reads** from the [`Context`]: the private subnets (network), the repository URIs (registry),
//! the cluster (cluster), the security groups, roles and secret ARNs (security), the ALB DNS name and
//! target groups (ingress) and the Cloud Map services (discovery).
//! **Writes** [`ServicesOutputs`]: service name → ECS service ARN.
//!
//! Per service, concurrently across services:
//! - [`logs`]: log group `/ecs/tap-{service}-{s}` with the configured retention.
//! - [`task_definition`]: the desired definition is rendered and compared with the family's latest
//!   ACTIVE revision; a revision is registered only when it differs.
//! - [`service`]: the ECS service, created with the cluster's capacity-provider strategy and read
//!   back so fields an endpoint dropped on create are set in the same run; later updated only on
//!   difference, never touching the desired count (auto scaling owns it).
//! - [`scaling`]: scalable target (min/max) and a CPU target-tracking policy, found by resource id.
//!
//! After converging, deploy warns about images missing from ECR and (unless `deploy.wait` is off)
//! waits for every rollout to complete. [`status::status`] backs `tap status`.
//!
//! ```no_run
//! # async fn example(clients: &tap_core::aws::AwsClients, ctx: &tap_core::Context) -> Result<(), tap_core::StepError> {
//! use tap_core::Step;
//! let step = tap_services::ServicesStep::from_clients(clients);
//! let changes = step.plan(ctx).await?; // ctx holds the other steps' outputs
//! for change in changes {
//!     println!("{change}");
//! }
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]

pub mod api;
pub mod logs;
pub mod scaling;
mod sdk;
pub mod service;
pub mod status;
pub mod task_definition;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::future::try_join_all;
use tap_core::aws::AwsClients;
use tap_core::config::ServiceSpec;
use tap_core::outputs::{
    is_known, ClusterOutputs, DiscoveryOutputs, IngressOutputs, NetworkOutputs, RegistryOutputs, SecurityOutputs,
    ServicesOutputs,
};
use tap_core::step::OutputKind;
use tap_core::wait::Backoff;
use tap_core::{Change, Context, Mode, Step, StepError};

#[cfg(any(test, feature = "test-util"))]
pub use api::MockServicesApi;
pub use api::ServicesApi;
pub use sdk::SdkServices;

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
    pub ingress: IngressOutputs,
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
            ingress: ctx.get(STEP)?,
            discovery: ctx.get(STEP)?,
        })
    }

    /// Waits for every input (each is written by a step running concurrently with this one).
    async fn wait(ctx: &Context) -> Result<Self, StepError> {
        Ok(Inputs {
            network: ctx.wait(STEP).await?,
            registry: ctx.wait(STEP).await?,
            cluster: ctx.wait(STEP).await?,
            security: ctx.wait(STEP).await?,
            ingress: ctx.wait(STEP).await?,
            discovery: ctx.wait(STEP).await?,
        })
    }
}

/// What converging one service produced.
struct Converged {
    name: String,
    arn: String,
    changes: Vec<Change>,
    /// Deploy should wait for this service's rollout (it exists and its image is in ECR).
    wait: bool,
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

    /// A step over the SDK clients of a run.
    pub fn from_clients(clients: &AwsClients) -> Self {
        Self::new(Arc::new(SdkServices::from_clients(clients)))
    }

    /// Sets the first and the longest delay between polls while waiting for rollouts.
    pub fn with_wait_poll(mut self, initial: Duration, max: Duration) -> Self {
        self.wait_poll = (initial, max);
        self
    }

    async fn converge_service(
        &self,
        ctx: &Context,
        mode: Mode,
        inputs: &Inputs,
        observed: &api::Observed,
        spec: &ServiceSpec,
    ) -> Result<Converged, StepError> {
        let api = self.api.as_ref();
        let work = async {
            let (mut changes, (task_definition, td_changes)) = tokio::try_join!(
                logs::create(api, ctx, mode, spec, observed),
                task_definition::converge(api, ctx, mode, inputs, spec, observed),
            )?;
            changes.extend(td_changes);
            // The log group's retention is set beside the ECS service, which needs only the group.
            let service_and_scaling = async {
                let mut svc = service::converge(api, ctx, mode, inputs, spec, &task_definition, observed).await?;
                let (scaling, ()) = tokio::try_join!(
                    scaling::converge(api, ctx, mode, &inputs.cluster.name, spec, svc.exists, observed),
                    service::finish(api, spec, svc.fix.take()),
                )?;
                Ok::<_, StepError>((svc, scaling))
            };
            let ((svc, scaling), retention) =
                tokio::try_join!(service_and_scaling, logs::retention(api, ctx, mode, spec, observed))?;
            changes.extend(retention);
            changes.extend(svc.changes);
            changes.extend(scaling);
            Ok::<_, StepError>((svc.arn, changes))
        };
        // The image check decides whether to wait for the rollout, and warns when the image is
        // missing: a no-op under `--no-wait` needs neither. When the answer is sure to be needed
        // (waiting, or a service still to create) it runs beside the service's calls, not after.
        let creating = !observed.services.contains_key(&ctx.names.ecs_service(&spec.name));
        let early = mode.is_apply() && (ctx.config.deploy.wait || creating);
        let early_check = async {
            if early {
                return self.check_image(ctx, inputs, spec).await.map(Some);
            }
            Ok(None)
        };
        let (image_found, (arn, changes)) = tokio::try_join!(early_check, work)?;
        let wait = mode.is_apply()
            && (ctx.config.deploy.wait || !changes.is_empty())
            && match image_found {
                Some(found) => found,
                None => self.check_image(ctx, inputs, spec).await?,
            };
        Ok(Converged { name: spec.name.clone(), arn, changes, wait })
    }

    /// Whether the service's image is in ECR; warns with the push commands when it is not.
    async fn check_image(&self, ctx: &Context, inputs: &Inputs, spec: &ServiceSpec) -> Result<bool, StepError> {
        let Some(repo) = inputs.registry.repositories.get(&spec.name) else { return Ok(false) };
        if !is_known(&repo.uri) {
            return Ok(false);
        }
        let tag = ctx.config.image_tag_of(spec);
        // A repository made by this run holds no image yet.
        let found = !repo.created
            && self
                .api
                .image_exists(&repo.name, tag)
                .await
                .map_err(StepError::aws(format!("registry/repository/{}", spec.name), "DescribeImages"))?;
        if !found {
            let registry = repo.uri.split('/').next().unwrap_or(&repo.uri);
            tracing::warn!(
                service = %spec.name,
                repository = %repo.name,
                tag,
                "image {uri}:{tag} is not in ECR, so the service cannot start tasks; not waiting for it. Push it with: \
                 aws ecr get-login-password --region {region} | docker login --username AWS --password-stdin {registry} \
                 && docker tag <local image> {uri}:{tag} && docker push {uri}:{tag}",
                uri = repo.uri,
                region = ctx.region,
            );
        }
        Ok(found)
    }

    #[tracing::instrument(name = "services", skip_all, fields(mode = ?mode))]
    async fn converge(&self, ctx: &Context, mode: Mode) -> Result<Vec<Change>, StepError> {
        // One batched read of every service's log group, ECS service and auto scaling, shared
        // below. It needs only the cluster, so it runs while the other inputs are still coming.
        let observed = async {
            let cluster: ClusterOutputs = ctx.wait(STEP).await?;
            api::Observed::read(self.api.as_ref(), ctx, &cluster).await
        };
        let task_definitions = api::latest_task_definitions(self.api.as_ref(), ctx);
        let (inputs, mut observed, task_definitions) = tokio::try_join!(Inputs::wait(ctx), observed, task_definitions)?;
        observed.task_definitions = task_definitions;
        let converged = try_join_all(
            ctx.config.services.iter().map(|spec| self.converge_service(ctx, mode, &inputs, &observed, spec)),
        )
        .await?;
        ctx.put(ServicesOutputs { service_arns: converged.iter().map(|c| (c.name.clone(), c.arn.clone())).collect() });
        if mode.is_apply() && ctx.config.deploy.wait {
            let backoff = Backoff {
                initial: self.wait_poll.0,
                max: self.wait_poll.1,
                timeout: Duration::from_secs(ctx.config.deploy.timeout_seconds),
            };
            let waits = converged.iter().filter(|c| c.wait).map(|c| {
                let name = ctx.names.ecs_service(&c.name);
                let (cluster, label) = (&inputs.cluster.name, &c.name);
                async move { service::wait_stable(self.api.as_ref(), cluster, &name, label, backoff).await }
            });
            try_join_all(waits).await?;
        }
        Ok(converged.into_iter().flat_map(|c| c.changes).collect())
    }

    /// The services to remove: the configured ones and any other service in the environment's cluster.
    /// Returns (ECS service name, service label) pairs and whether the cluster exists.
    async fn services_to_destroy(&self, ctx: &Context) -> Result<(Vec<(String, String)>, bool), StepError> {
        let cluster = ctx.names.cluster();
        let (listed, cluster_exists) = match self.api.list_services(&cluster).await {
            Ok(names) => (names, true),
            Err(e) if e.is_not_found() => (vec![], false),
            Err(e) => return Err(StepError::aws(component("ecs-service", "*"), "ListServices")(e)),
        };
        let mut seen = BTreeSet::new();
        let mut out = Vec::new();
        for spec in &ctx.config.services {
            let name = ctx.names.ecs_service(&spec.name);
            seen.insert(name.clone());
            out.push((name, spec.name.clone()));
        }
        let suffix = format!("-{}", ctx.names.env());
        for name in listed {
            if seen.insert(name.clone()) {
                let label =
                    name.strip_prefix("tap-").and_then(|n| n.strip_suffix(&suffix)).unwrap_or(&name).to_string();
                out.push((name, label));
            }
        }
        Ok((out, cluster_exists))
    }

    async fn destroy_service(
        &self,
        ctx: &Context,
        ecs_name: &str,
        label: &str,
        cluster_exists: bool,
        log_group_exists: bool,
    ) -> Result<Vec<Change>, StepError> {
        let api = self.api.as_ref();
        let cluster = ctx.names.cluster();
        let mut changes = scaling::destroy(api, &cluster, ecs_name, label).await?;
        if cluster_exists {
            changes.extend(service::destroy(api, &cluster, ecs_name, label).await?);
        }
        let log_group = async {
            if log_group_exists {
                return logs::destroy(api, ctx, label).await;
            }
            Ok(vec![])
        };
        let (td, lg) = tokio::try_join!(task_definition::destroy(api, ctx, label), log_group)?;
        changes.extend(td);
        changes.extend(lg);
        Ok(changes)
    }
}

#[async_trait]
impl Step for ServicesStep {
    fn name(&self) -> &'static str {
        STEP
    }

    fn needs(&self) -> &'static [OutputKind] {
        &[
            OutputKind::Network,
            OutputKind::Registry,
            OutputKind::Cluster,
            OutputKind::Security,
            OutputKind::Ingress,
            OutputKind::Discovery,
        ]
    }

    fn produces(&self) -> OutputKind {
        OutputKind::Services
    }

    async fn plan(&self, ctx: &Context) -> Result<Vec<Change>, StepError> {
        self.converge(ctx, Mode::Plan).await
    }

    async fn apply(&self, ctx: &Context) -> Result<Vec<Change>, StepError> {
        self.converge(ctx, Mode::Apply).await
    }

    #[tracing::instrument(name = "services", skip_all)]
    async fn destroy(&self, ctx: &Context) -> Result<Vec<Change>, StepError> {
        let (services, cluster_exists) = self.services_to_destroy(ctx).await?;
        // One look for every log group, so that only existing ones are deleted: a destroy of an
        // empty environment then makes no mutating call at all.
        let log_groups: Vec<String> = services.iter().map(|(_, label)| ctx.names.log_group(label)).collect();
        let existing = self
            .api
            .find_log_groups(&log_groups)
            .await
            .map_err(StepError::aws(component("log-group", "*"), "DescribeLogGroups"))?;
        let removed = try_join_all(services.iter().map(|(name, label)| {
            let exists = existing.contains_key(&ctx.names.log_group(label));
            self.destroy_service(ctx, name, label, cluster_exists, exists)
        }))
        .await?;
        Ok(removed.into_iter().flatten().collect())
    }
}

#[cfg(test)]
mod tests;
