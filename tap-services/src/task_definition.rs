//! ECS task definitions: the desired definition of each service is rendered into a comparable
//! [`TaskDefinitionSpec`], compared with the family's latest ACTIVE revision, and a new revision is
//! registered only when something differs.

use std::collections::BTreeMap;

use async_trait::async_trait;
use serde::Serialize;
use serde_json::{json, Value};
use tap_core::config::ServiceSpec;
use tap_core::idempotent::{create_or_adopt, Recovery};
use tap_core::naming::Tag;
use tap_core::outputs::PENDING;
use tap_core::progress::ProgressEvent;
use tap_core::resource::{ActionError, Deleted, Diff, During, Owner, Resource};
use tap_core::step::{diff, AttrChange, OutputKind};
use tap_core::{AwsError, Change, Context, Mode, StepError};

use crate::api::{Observed, RevisionStatus, ServicesApi};
use crate::{component, lookup, Inputs, STEP};

/// A task definition in a comparable form: what tap sets, nothing AWS adds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TaskDefinitionSpec {
    /// Family, `tap-{service}-{s}`.
    pub family: String,
    /// Fargate CPU units, as AWS stores them (a string).
    pub cpu: String,
    /// Memory in MiB, as AWS stores it (a string).
    pub memory: String,
    /// `awsvpc`.
    pub network_mode: String,
    /// `["FARGATE"]`.
    pub requires_compatibilities: Vec<String>,
    /// The shared task-execution role.
    pub execution_role_arn: String,
    /// The service's task role.
    pub task_role_arn: String,
    /// The containers (tap renders exactly one, named after the service).
    pub containers: Vec<ContainerSpec>,
}

/// One container of a task definition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ContainerSpec {
    /// Container name (the service name).
    pub name: String,
    /// `<repository uri>:<tag>`.
    pub image: String,
    /// Whether the task stops when this container stops.
    pub essential: bool,
    /// Container ports with their protocol (`tcp`), sorted.
    pub port_mappings: Vec<(i32, String)>,
    /// Plain environment variables (sorted by name).
    pub environment: BTreeMap<String, String>,
    /// Variable name → secret ARN (sorted by name).
    pub secrets: BTreeMap<String, String>,
    /// Log driver, `awslogs`.
    pub log_driver: Option<String>,
    /// Log driver options.
    pub log_options: BTreeMap<String, String>,
}

/// A registered revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedTaskDefinition {
    /// Revision ARN (`…:task-definition/<family>:<revision>`).
    pub arn: String,
    /// Revision number.
    pub revision: i32,
    /// Whether the revision is ACTIVE (not deregistered).
    pub active: bool,
    /// Its settings.
    pub definition: TaskDefinitionSpec,
    /// Its tags (DescribeTaskDefinition with `include = TAGS`): a family is the environment's
    /// whose revisions carry its tags.
    pub tags: Vec<Tag>,
}

impl TaskDefinitionSpec {
    /// The RegisterTaskDefinition request this spec stands for, as ECS JSON.
    pub fn to_json(&self) -> Value {
        let containers: Vec<Value> = self
            .containers
            .iter()
            .map(|c| {
                json!({
                    "name": c.name,
                    "image": c.image,
                    "essential": c.essential,
                    "portMappings": c.port_mappings.iter()
                        .map(|(port, protocol)| json!({"containerPort": port, "protocol": protocol}))
                        .collect::<Vec<_>>(),
                    "environment": c.environment.iter()
                        .map(|(name, value)| json!({"name": name, "value": value}))
                        .collect::<Vec<_>>(),
                    "secrets": c.secrets.iter()
                        .map(|(name, from)| json!({"name": name, "valueFrom": from}))
                        .collect::<Vec<_>>(),
                    "logConfiguration": {"logDriver": c.log_driver, "options": c.log_options},
                })
            })
            .collect();
        json!({
            "family": self.family,
            "requiresCompatibilities": self.requires_compatibilities,
            "networkMode": self.network_mode,
            "cpu": self.cpu,
            "memory": self.memory,
            "executionRoleArn": self.execution_role_arn,
            "taskRoleArn": self.task_role_arn,
            "containerDefinitions": containers,
        })
    }

    /// The attributes in which `observed` differs from this desired definition.
    pub fn changes_from(&self, observed: &TaskDefinitionSpec) -> Vec<AttrChange> {
        let mut attrs = Vec::new();
        diff(&mut attrs, "cpu", &observed.cpu, &self.cpu);
        diff(&mut attrs, "memory", &observed.memory, &self.memory);
        diff(&mut attrs, "network_mode", &observed.network_mode, &self.network_mode);
        diff(
            &mut attrs,
            "requires_compatibilities",
            &observed.requires_compatibilities,
            &self.requires_compatibilities,
        );
        diff(&mut attrs, "execution_role_arn", &observed.execution_role_arn, &self.execution_role_arn);
        diff(&mut attrs, "task_role_arn", &observed.task_role_arn, &self.task_role_arn);
        match (observed.containers.as_slice(), self.containers.as_slice()) {
            ([o], [d]) => {
                diff(&mut attrs, "container.name", &o.name, &d.name);
                diff(&mut attrs, "container.image", &o.image, &d.image);
                diff(&mut attrs, "container.essential", &o.essential, &d.essential);
                diff(&mut attrs, "container.port_mappings", &o.port_mappings, &d.port_mappings);
                diff(&mut attrs, "container.environment", &o.environment, &d.environment);
                diff(&mut attrs, "container.secrets", &o.secrets, &d.secrets);
                diff(&mut attrs, "container.log_driver", &o.log_driver, &d.log_driver);
                diff(&mut attrs, "container.log_options", &o.log_options, &d.log_options);
            }
            (o, d) => diff(&mut attrs, "containers", &o, &d),
        }
        attrs
    }
}

/// The placeholder of a service's environment value for the load balancer's DNS name.
pub(crate) const ALB_DNS: &str = "{alb_dns}";

/// Whether `service` reads anything of the load balancer: its route, or [`ALB_DNS`] in its
/// environment. The others do not wait for the ingress step.
pub(crate) fn reads_load_balancer(service: &ServiceSpec) -> bool {
    service.route.is_some() || service.environment.values().any(|v| v.contains(ALB_DNS))
}

/// The task definition a service should run, from the config and the other steps' outputs.
pub(crate) fn render(ctx: &Context, inputs: &Inputs, service: &ServiceSpec) -> Result<TaskDefinitionSpec, StepError> {
    let names = &ctx.names;
    let repository = lookup(&inputs.registry.repositories, &service.name, OutputKind::Registry, "repository")?;
    let task_role = lookup(&inputs.security.task_role_arns, &service.name, OutputKind::Security, "task role")?;
    let namespace = names.namespace();
    let environment = service
        .environment
        .iter()
        .map(|(k, v)| {
            let v = match v.contains(ALB_DNS) {
                true => v.replace(ALB_DNS, &inputs.ingress()?.dns_name),
                false => v.clone(),
            };
            Ok::<_, StepError>((k.clone(), v.replace("{namespace}", &namespace)))
        })
        .collect::<Result<_, _>>()?;
    let secrets = service
        .secrets
        .iter()
        .map(|(var, logical)| {
            lookup(&inputs.security.secret_arns, logical, OutputKind::Security, "secret")
                .map(|arn| (var.clone(), arn.clone()))
        })
        .collect::<Result<BTreeMap<_, _>, _>>()?;
    let log_options = BTreeMap::from([
        ("awslogs-group".to_string(), names.log_group(&service.name)),
        ("awslogs-region".to_string(), ctx.region.clone()),
        ("awslogs-stream-prefix".to_string(), service.name.clone()),
    ]);
    Ok(TaskDefinitionSpec {
        family: names.task_family(&service.name),
        cpu: service.cpu.to_string(),
        memory: service.memory.to_string(),
        network_mode: "awsvpc".into(),
        requires_compatibilities: vec!["FARGATE".into()],
        execution_role_arn: inputs.security.execution_role_arn.clone(),
        task_role_arn: task_role.clone(),
        containers: vec![ContainerSpec {
            name: service.name.clone(),
            image: format!("{}:{}", repository.uri, ctx.config.image_tag_of(service)),
            essential: true,
            port_mappings: vec![(i32::from(service.port), "tcp".into())],
            environment,
            secrets,
            log_driver: Some("awslogs".into()),
            log_options,
        }],
    })
}

/// Registers a new revision when the latest ACTIVE one differs from the desired definition.
/// Returns the ARN the service should run ([`PENDING`] when plan would register one).
pub(crate) async fn converge(
    api: &dyn ServicesApi,
    ctx: &Context,
    mode: Mode,
    inputs: &Inputs,
    service: &ServiceSpec,
    observed: &Observed,
) -> Result<(String, Vec<Change>), StepError> {
    let desired = render(ctx, inputs, service)?;
    let family = desired.family.clone();
    let resource = component("task-definition", &service.name);
    let current = observed.task_definitions.get(&family);
    // Family names are account-wide: `tap-api-x-dev` is both `dev`'s service `api-x` and
    // `x-dev`'s service `api`. A family whose latest revision carries another environment's tags
    // (or none of tap's) is never registered into: plan lists the conflict, apply stops.
    if let Some(current) = current {
        let owner = Owner::of(&current.tags, ctx.names.env());
        if !owner.is_this() {
            if mode.is_apply() {
                let message = owner.conflict_reason(&family, ctx.names.env());
                return Err(StepError::Conflict { resource, message });
            }
            return Ok((PENDING.into(), vec![Change::conflict(&resource, &family, &owner, ctx.names.env())]));
        }
    }
    let change = match current {
        None => Change::create(&resource, &family),
        Some(current) => {
            ctx.progress(ProgressEvent::Found { step: STEP, resource: &resource });
            let attrs = desired.changes_from(&current.definition);
            if attrs.is_empty() {
                return Ok((current.arn.clone(), vec![]));
            }
            Change::update(&resource, &family, attrs)
        }
    };
    if !mode.is_apply() {
        return Ok((PENDING.into(), vec![change]));
    }
    // RegisterTaskDefinition has no idempotency token: sent twice, it makes two revisions. The
    // SDK does not resend it when its outcome is unknown (no answer, or a 5xx; see `sdk.rs`);
    // the family's latest ACTIVE revision is read instead, and adopted when it is newer than the
    // one read before and is exactly the desired definition (so the lost register took effect).
    let known_revision = current.map(|c| c.revision);
    let tags = ctx.names.tags(&resource, &family);
    let registered = create_or_adopt(
        &resource,
        Recovery::default(),
        |_| false,
        || async {
            let latest = api.describe_task_definition(&family).await?;
            Ok(latest.filter(|td| {
                td.active
                    && Owner::of(&td.tags, ctx.names.env()).is_this()
                    && known_revision.is_none_or(|known| td.revision > known)
                    && desired.changes_from(&td.definition).is_empty()
            }))
        },
        || api.register_task_definition(&desired, &tags),
    )
    .await
    .map_err(StepError::aws(&resource, "RegisterTaskDefinition"))?;
    tracing::info!(family, revision = registered.revision, "registered task definition revision");
    Ok((registered.arn, vec![change]))
}

/// A task definition to register: the definition and its tags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredTaskDefinition {
    /// The definition.
    pub spec: TaskDefinitionSpec,
    /// Tags of the revision.
    pub tags: Vec<Tag>,
}

/// A task definition family as the engine handles it: its name and latest ACTIVE revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedFamily {
    /// Family, `tap-{service}-{s}`.
    pub family: String,
    /// Its latest ACTIVE revision.
    pub latest: ObservedTaskDefinition,
}

/// The task definition family kind. An update registers a new revision; delete deregisters every
/// ACTIVE revision of the family and deletes the deregistered ones. (The step registers revisions
/// through [`converge`], which needs the new revision's ARN for the service; the engine runs this
/// kind's prune and destroy.)
pub(crate) struct TaskFamily<'a>(pub &'a dyn ServicesApi);

#[async_trait]
impl Resource for TaskFamily<'_> {
    type Desired = DesiredTaskDefinition;
    type Observed = ObservedFamily;
    /// The definition of the revision to register.
    type Update = TaskDefinitionSpec;
    const CREATE: &'static str = "RegisterTaskDefinition";

    fn diff(
        &self,
        want: &DesiredTaskDefinition,
        have: &ObservedFamily,
    ) -> Result<Option<Diff<TaskDefinitionSpec>>, String> {
        let attrs = want.spec.changes_from(&have.latest.definition);
        Ok((!attrs.is_empty()).then(|| Diff::new(want.spec.clone(), attrs)))
    }

    async fn find(&self, want: &DesiredTaskDefinition) -> Result<Option<ObservedFamily>, AwsError> {
        let latest = self.0.describe_task_definition(&want.spec.family).await?;
        Ok(latest.filter(|t| t.active).map(|latest| ObservedFamily { family: want.spec.family.clone(), latest }))
    }

    /// From the tags of the family's latest ACTIVE revision (read with it): tap registers into a
    /// family only when that revision is the environment's, so a family holds one environment's
    /// revisions.
    async fn owner(&self, have: &ObservedFamily, env: &str) -> Result<Owner, ActionError> {
        Ok(Owner::of(&have.latest.tags, env))
    }

    async fn create(&self, want: &DesiredTaskDefinition) -> Result<ObservedFamily, AwsError> {
        let latest = self.0.register_task_definition(&want.spec, &want.tags).await?;
        Ok(ObservedFamily { family: want.spec.family.clone(), latest })
    }

    async fn update(&self, have: &ObservedFamily, spec: &TaskDefinitionSpec) -> Result<ObservedFamily, ActionError> {
        let tags = self.0.ecs_tags(&have.latest.arn).await.during("ListTagsForResource")?;
        let latest = self.0.register_task_definition(spec, &tags).await.during("RegisterTaskDefinition")?;
        Ok(ObservedFamily { family: have.family.clone(), latest })
    }

    async fn delete(&self, have: &ObservedFamily) -> Result<Deleted, ActionError> {
        self.delete_many(&[have]).await?;
        Ok(Deleted::Now)
    }

    /// Families are deleted ten at a time: `DeleteTaskDefinitions` takes ten revisions a call, and
    /// ECS allows it one call a second (a hundred families' revisions in ten calls, not a hundred).
    const DELETE_BATCH: usize = 10;

    /// Deregisters every active revision of `haves`, then deletes their inactive revisions, ten to
    /// a call.
    async fn delete_many(&self, haves: &[&ObservedFamily]) -> Result<(), ActionError> {
        let deregistered = futures::future::try_join_all(haves.iter().map(|have| async move {
            let family = &have.family;
            let active =
                self.0.list_task_definitions(family, RevisionStatus::Active).await.during("ListTaskDefinitions")?;
            for arn in &active {
                match self.0.deregister_task_definition(arn).await {
                    Ok(()) => {}
                    Err(e) if e.is_not_found() || e.is("ClientException") => {
                        tracing::debug!(arn, error = %e, "task definition revision already gone")
                    }
                    Err(e) => return Err(ActionError { action: "DeregisterTaskDefinition", source: e }),
                }
            }
            self.0.list_task_definitions(family, RevisionStatus::Inactive).await.during("ListTaskDefinitions")
        }))
        .await?;
        let inactive: Vec<String> = deregistered.into_iter().flatten().collect();
        for chunk in inactive.chunks(10) {
            match self.0.delete_task_definitions(chunk).await {
                Ok(()) => {}
                Err(e) if e.retryable => return Err(ActionError { action: "DeleteTaskDefinitions", source: e }),
                // Deregistered revisions are harmless; an endpoint without DeleteTaskDefinitions keeps them.
                Err(e) => tracing::warn!(error = %e, "could not delete deregistered task definition revisions"),
            }
        }
        Ok(())
    }
}
