//! ECS task definitions: the desired definition of each service is rendered into a comparable
//! [`TaskDefinitionSpec`] and compared attribute by attribute with a registered revision. The
//! family's life cycle (register a revision only when something differs, ownership, deletion) is
//! the engine kind [`crate::task_family::TaskFamily`].

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{json, Value};
use tap_core::config::ServiceSpec;
use tap_core::naming::Tag;
use tap_core::step::{diff, AttrChange, OutputKind};
use tap_core::{Context, StepError};

use crate::{lookup, Inputs};

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
