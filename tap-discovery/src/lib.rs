//! `tap-discovery`: the environment's Cloud Map private DNS namespace `tap-{s}.local` in its VPC,
//! and one Cloud Map service per configured service with `discovery = true` (e.g.
//! `processing-service`): A records with TTL `discovery.dns_ttl`, routing MULTIVALUE, and a custom
//! health check (failure threshold `discovery.failure_threshold`), so ECS registers the tasks.
//!
//! - Reads from the [`Context`]: the config, the names, and [`NetworkOutputs`] for the VPC id.
//! - Adds: [`DiscoveryOutputs`] — the namespace's id, ARN and name, and each service's id and ARN.
//! - Finds the namespace by name among the private DNS namespaces (`ListNamespaces`) and the
//!   services by name within it (`ListServices` filtered by the namespace, checked with
//!   `GetService` where the listing does not show the namespace: [`service`]). Both kinds run on
//!   the resource engine ([`tap_core::resource`]): the namespace ([`namespace`]; Cloud Map creates
//!   and deletes it asynchronously, the kind polls the operation) and the services ([`service`]; a
//!   drifted TTL is updated, a routing policy or health-check type Cloud Map cannot change in
//!   place is a conflict). Layout: [`api`] (the narrow Cloud Map seam, mocked in tests), [`sdk`]
//!   (its implementation over `aws_sdk_servicediscovery`), the kinds, and this module, which only
//!   wires the step: the desired values from the config, what runs concurrently, what it publishes.
//! - Prune: a service of the namespace that no configured service declares and whose tags say it
//!   is this environment's (`ListTagsForResource`, read only for such services) is listed by plan
//!   as a delete, and deleted by deploy once the services step has published its outputs (it does
//!   so after removing the ECS services, which must be gone first). Nothing to prune, no wait.
//! - `destroy` deregisters any instance left, deletes the services, then the namespace.
//!   (moto, the local emulator, leaves the namespace's Route 53 hosted zone behind; AWS does not.)
//!
//! ```no_run
//! # async fn demo(session: &tap_core::aws::AwsSession, ctx: &tap_core::Context) -> Result<(), tap_core::StepError> {
//! use tap_core::Step;
//! // The network step must have written its outputs (the VPC id) into `ctx` first.
//! let step = tap_discovery::DiscoveryStep::from_session(session);
//! step.apply(ctx).await?;
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]

pub mod api;
pub mod namespace;
mod operation;
pub mod sdk;
pub mod service;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::future::try_join_all;
use tap_core::context::Gathered;
use tap_core::naming::client_token;
use tap_core::outputs::{is_known, DiscoveryOutputs, DiscoveryService, NetworkOutputs, PENDING};
use tap_core::resource::Engine;
use tap_core::step::{Contract, Gone, OutputKind, Pruned};
use tap_core::wait::Backoff;
use tap_core::{Change, Context, Mode, Step, StepError};

#[cfg(any(test, feature = "test-util"))]
pub use api::MockCloudMapApi;
pub use api::{
    CloudMapApi, DnsRecordSpec, NamespaceCreation, ObservedNamespace, ObservedService, OperationState,
    ServiceDefinition,
};
use namespace::{DesiredNamespace, NamespaceKind};
pub use sdk::SdkCloudMap;
pub use service::service_description;
use service::{service_component, CloudMapService, DesiredService};

/// This step's name.
const STEP: &str = "discovery";

/// Logical id of the namespace.
pub const NAMESPACE_COMPONENT: &str = "discovery/namespace";
/// The routing policy of every service.
pub const ROUTING_POLICY: &str = "MULTIVALUE";
/// The record type of every service.
pub const RECORD_TYPE: &str = "A";

/// How long a Cloud Map operation may take.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(300);

/// The Cloud Map namespace and services of an environment.
pub struct DiscoveryStep {
    api: Arc<dyn CloudMapApi>,
    backoff: Backoff,
}

impl DiscoveryStep {
    /// A step over any [`CloudMapApi`] (a mock in tests).
    pub fn new(api: Arc<dyn CloudMapApi>) -> Self {
        DiscoveryStep { api, backoff: Backoff::with_timeout(OPERATION_TIMEOUT) }
    }

    /// A step over the run's Cloud Map client.
    pub fn from_session(session: &tap_core::aws::AwsSession) -> Self {
        Self::new(Arc::new(SdkCloudMap(tap_core::sdk_client!(aws_sdk_servicediscovery, session))))
    }

    /// The namespace kind of this step.
    fn namespaces(&self) -> NamespaceKind<'_> {
        NamespaceKind::new(self.api.as_ref(), self.backoff)
    }

    /// The Cloud Map service kind of this step.
    fn services(&self) -> CloudMapService<'_> {
        CloudMapService { api: self.api.as_ref(), backoff: self.backoff }
    }

    /// The environment's namespaces, by name (normally one).
    async fn find_namespaces(&self, name: &str) -> Result<Vec<ObservedNamespace>, StepError> {
        self.namespaces().find_by_name(name).await.map_err(StepError::aws(NAMESPACE_COMPONENT, "ListNamespaces"))
    }

    async fn converge(&self, ctx: &Context, mode: Mode) -> Result<Vec<Change>, StepError> {
        let engine = Engine::new(ctx, STEP, mode);
        let ns_name = ctx.names.namespace();
        // The namespace is found by name, so the lookup runs while the VPC is still coming.
        let (found, network) = tokio::try_join!(self.find_namespaces(&ns_name), ctx.wait::<NetworkOutputs>())?;
        let existing = if is_known(&network.vpc_id) {
            found.into_iter().next()
        } else if mode.is_apply() {
            return Err(StepError::MissingOutput {
                step: STEP.into(),
                output: OutputKind::Network.to_string(),
                why: "its VPC id is not known yet (the network step has not created the VPC)".into(),
            });
        } else {
            // The VPC does not exist yet, so neither can a namespace in it.
            None
        };
        let created = existing.is_none();
        let want = DesiredNamespace {
            name: ns_name.clone(),
            vpc_id: network.vpc_id.clone(),
            creator_request_id: client_token(&["tap", ctx.names.env(), "namespace", &network.vpc_id]),
            tags: ctx.names.tags(NAMESPACE_COMPONENT, &ns_name),
        };
        // `None` in plan mode when it is still to be created: so is every service in it.
        let namespace = engine.converge(&self.namespaces(), NAMESPACE_COMPONENT, &ns_name, &want, existing).await?;
        let (namespace_id, namespace_arn) =
            namespace.map_or_else(|| (PENDING.to_owned(), PENDING.to_owned()), |ns| (ns.id, ns.arn));

        // Every service of the namespace: the wanted ones are converged, the others pruned. A
        // namespace created just now (or still to be) holds none: nothing to list. (Should it be
        // an older one after all, a create of an existing service is adopted by the engine.)
        let kind = self.services();
        let observed = if created { BTreeMap::new() } else { kind.find_in(&namespace_id).await? };
        let settings = &ctx.config.discovery;
        let wanted: Vec<&str> = ctx.config.services.iter().filter(|s| s.discovery).map(|s| s.name.as_str()).collect();
        let desired_records = vec![DnsRecordSpec { record_type: RECORD_TYPE.into(), ttl: settings.dns_ttl }];
        // Published in part as soon as the namespace is there, then after each service: an ECS
        // service needs only its own (see `Context::wait_for`).
        let part = |services| DiscoveryOutputs {
            namespace_id: namespace_id.clone(),
            namespace_arn: namespace_arn.clone(),
            namespace_name: ns_name.clone(),
            services,
        };
        let made = Gathered::default();
        ctx.put_partial(part(BTreeMap::new()));
        let converged = wanted.iter().map(|service| {
            let component = service_component(service);
            let want = DesiredService {
                definition: ServiceDefinition {
                    name: service.to_string(),
                    namespace_id: namespace_id.clone(),
                    dns_records: desired_records.clone(),
                    routing_policy: ROUTING_POLICY.into(),
                    failure_threshold: settings.failure_threshold,
                    creator_request_id: client_token(&["tap", ctx.names.env(), service, &namespace_id]),
                    description: service_description(&namespace_id),
                },
                tags: ctx.names.tags(&component, service),
            };
            let (engine, kind, have, made, part) = (&engine, &kind, observed.get(*service).cloned(), &made, &part);
            async move {
                let now = engine.converge(kind, &component, service, &want, have).await?;
                let service_now = match now {
                    Some(s) => DiscoveryService { id: s.id, arn: s.arn },
                    None => DiscoveryService { id: PENDING.into(), arn: PENDING.into() },
                };
                made.add(*service, service_now.clone(), |services| ctx.put_partial(part(services)));
                Ok::<_, StepError>(service_now)
            }
        });
        let services: BTreeMap<String, DiscoveryService> =
            wanted.iter().map(|s| s.to_string()).zip(try_join_all(converged).await?).collect();
        ctx.put(part(services));

        // Deletes (in plan mode: lists) the namespace's services that the config no longer
        // declares and whose tags say they are this environment's. In apply mode only once the
        // services step has published its outputs: it does so after removing the ECS services,
        // which must be gone before their Cloud Map service can be. Reads the tags of undeclared
        // services only, and waits only when there is something to delete.
        let undeclared = observed.values().filter(|s| !wanted.contains(&s.name.as_str()));
        let owned = kind.owned_among(undeclared, ctx.names.env()).await?;
        if !owned.is_empty() {
            if mode.is_apply() {
                ctx.wait_pruned(Pruned::Services).await?;
            }
            engine.prune(&kind, owned, &BTreeSet::new()).await?;
        }
        Ok(engine.into_changes())
    }
}

#[async_trait]
impl Step for DiscoveryStep {
    fn contract(&self) -> Contract {
        Contract::new(STEP, OutputKind::Discovery)
            .reads(&[OutputKind::Network])
            .prune_waits(&[Pruned::Services])
            .destroy_waits(&[Gone::EcsServices])
            .gives(&[Gone::Namespace])
    }

    #[tracing::instrument(skip_all, name = "discovery.plan")]
    async fn plan(&self, ctx: &Context) -> Result<Vec<Change>, StepError> {
        self.converge(ctx, Mode::Plan).await
    }

    #[tracing::instrument(skip_all, name = "discovery.apply")]
    async fn apply(&self, ctx: &Context) -> Result<Vec<Change>, StepError> {
        self.converge(ctx, Mode::Apply).await
    }

    #[tracing::instrument(skip_all, name = "discovery.destroy")]
    async fn destroy(&self, ctx: &Context) -> Result<Vec<Change>, StepError> {
        let namespaces = self.find_namespaces(&ctx.names.namespace()).await?;
        let engine = Engine::new(ctx, STEP, Mode::Apply);
        if !namespaces.is_empty() {
            // ECS deregisters a service's instances as its tasks stop.
            ctx.wait_gone(Gone::EcsServices).await?;
        }
        let (namespace_kind, service_kind) = (self.namespaces(), self.services());
        for namespace in &namespaces {
            // Its services first: Cloud Map refuses to delete a namespace that holds any.
            let services = service_kind.find_in(&namespace.id).await?;
            try_join_all(services.values().map(|s| {
                let (engine, kind, component) = (&engine, &service_kind, service_component(&s.name));
                async move { engine.delete(kind, &component, &s.name, s).await }
            }))
            .await?;
            engine.delete(&namespace_kind, NAMESPACE_COMPONENT, &namespace.name, namespace).await?;
        }
        Ok(engine.into_changes())
    }
}

#[cfg(test)]
mod tests;
