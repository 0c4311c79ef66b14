//! [`ServicesApi`] over the real AWS SDK clients.

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;
use aws_sdk_applicationautoscaling as aas;
use aws_sdk_cloudwatchlogs as logs;
use aws_sdk_ecr as ecr;
use aws_sdk_ecs as ecs;
use aws_sdk_elasticloadbalancingv2 as elbv2;
use tap_core::aws::AwsSession;
use tap_core::error::IfFound;
use tap_core::idempotent::NoBlindRetry;
use tap_core::naming::Tag;
use tap_core::AwsError;

use crate::api::{RevisionStatus, ServicesApi};
use crate::image::RepositoryImage;
use crate::logs::ObservedLogGroup;
use crate::rollout::{LogPage, ObservedContainer, ObservedTask, OneOffTask, ServiceEvent, TargetState};
use crate::scaling::{ObservedScalableTarget, ObservedScalingPolicy, ScalingPolicySpec};
use crate::service::{
    CircuitBreaker, DeploymentAlarms, DeploymentStrategy, DesiredService, LoadBalancerRef, NetworkConfig,
    ObservedDeployment, ObservedService, ServiceUpdate, StrategyItem, TrafficShiftRef,
};
use crate::service_deployment::{ServiceDeployment, ServiceDeploymentBrief};
use crate::task_definition::{ContainerSpec, ObservedTaskDefinition, TaskDefinitionSpec};

/// The services step's AWS calls over the SDK clients of a run.
#[derive(Debug, Clone)]
pub struct SdkServices {
    pub(crate) ecs: ecs::Client,
    logs: logs::Client,
    autoscaling: aas::Client,
    ecr: ecr::Client,
    elbv2: elbv2::Client,
}

impl SdkServices {
    /// ECS, CloudWatch Logs, Application Auto Scaling, ECR and ELBv2 clients built from
    /// `session` (its counter and guard attached).
    pub fn from_session(session: &AwsSession) -> Self {
        SdkServices {
            ecs: tap_core::sdk_client!(ecs, session),
            logs: tap_core::sdk_client!(logs, session),
            autoscaling: tap_core::sdk_client!(aas, session),
            ecr: tap_core::sdk_client!(ecr, session),
            elbv2: tap_core::sdk_client!(elbv2, session),
        }
    }
}

/// For creates the SDK must not resend when their outcome is unknown (no answer, or a 5xx): the
/// step looks the resource up first (see `tap_core::idempotent`).
fn no_blind_retry() -> ecs::config::Builder {
    ecs::Config::builder().retry_classifier(NoBlindRetry)
}

/// A request tap could not even build (a required field missing): not retryable.
fn invalid_request(e: impl std::fmt::Display) -> AwsError {
    AwsError::new("InvalidRequest", e.to_string())
}

fn ecs_tags(tags: &[Tag]) -> Vec<ecs::types::Tag> {
    tags.iter().map(|(k, v)| ecs::types::Tag::builder().key(k).value(v).build()).collect()
}

fn strategy(items: &[StrategyItem]) -> Result<Vec<ecs::types::CapacityProviderStrategyItem>, AwsError> {
    items
        .iter()
        .map(|i| {
            ecs::types::CapacityProviderStrategyItem::builder()
                .capacity_provider(&i.capacity_provider)
                .base(i.base)
                .weight(i.weight)
                .build()
                .map_err(invalid_request)
        })
        .collect()
}

fn network(n: &NetworkConfig) -> Result<ecs::types::NetworkConfiguration, AwsError> {
    let assign =
        if n.assign_public_ip { ecs::types::AssignPublicIp::Enabled } else { ecs::types::AssignPublicIp::Disabled };
    let vpc = ecs::types::AwsVpcConfiguration::builder()
        .set_subnets(Some(n.subnets.clone()))
        // Always sent, even empty: some endpoints fail without the key.
        .set_security_groups(Some(n.security_groups.clone()))
        .assign_public_ip(assign)
        .build()
        .map_err(invalid_request)?;
    Ok(ecs::types::NetworkConfiguration::builder().awsvpc_configuration(vpc).build())
}

fn load_balancers(lbs: &[LoadBalancerRef]) -> Vec<ecs::types::LoadBalancer> {
    lbs.iter()
        .map(|l| {
            let advanced = l.traffic_shift.as_ref().map(|t| {
                ecs::types::AdvancedConfiguration::builder()
                    .alternate_target_group_arn(&t.alternate_target_group_arn)
                    .production_listener_rule(&t.production_listener_rule)
                    .test_listener_rule(&t.test_listener_rule)
                    .role_arn(&t.role_arn)
                    .build()
            });
            ecs::types::LoadBalancer::builder()
                .target_group_arn(&l.target_group_arn)
                .container_name(&l.container_name)
                .container_port(l.container_port)
                .set_advanced_configuration(advanced)
                .build()
        })
        .collect()
}

fn registries(arns: &[String]) -> Vec<ecs::types::ServiceRegistry> {
    arns.iter().map(|a| ecs::types::ServiceRegistry::builder().registry_arn(a).build()).collect()
}

fn deployment_configuration(
    cb: CircuitBreaker,
    strategy: &DeploymentStrategy,
    alarms: Option<&DeploymentAlarms>,
) -> Result<ecs::types::DeploymentConfiguration, AwsError> {
    let minutes_and_percent = |(tenths, minutes): (u32, i32)| (f64::from(tenths) / 10.0, minutes);
    let alarms = match alarms {
        Some(a) => Some(
            ecs::types::DeploymentAlarms::builder()
                .set_alarm_names(Some(a.alarm_names.clone()))
                .enable(a.enable)
                .rollback(a.rollback)
                .build()
                .map_err(invalid_request)?,
        ),
        None => None,
    };
    Ok(ecs::types::DeploymentConfiguration::builder()
        .deployment_circuit_breaker(
            ecs::types::DeploymentCircuitBreaker::builder().enable(cb.enable).rollback(cb.rollback).build(),
        )
        .strategy(ecs::types::DeploymentStrategy::from(strategy.strategy.as_str()))
        .set_bake_time_in_minutes(strategy.bake_time_minutes)
        .set_canary_configuration(strategy.canary.map(minutes_and_percent).map(|(percent, minutes)| {
            ecs::types::CanaryConfiguration::builder()
                .canary_percent(percent)
                .canary_bake_time_in_minutes(minutes)
                .build()
        }))
        .set_linear_configuration(strategy.linear.map(minutes_and_percent).map(|(percent, minutes)| {
            ecs::types::LinearConfiguration::builder().step_percent(percent).step_bake_time_in_minutes(minutes).build()
        }))
        .set_alarms(alarms)
        .build())
}

fn observed_strategy(d: Option<&ecs::types::DeploymentConfiguration>) -> DeploymentStrategy {
    let tenths = |percent: Option<f64>| tap_core::strategy::tenths(percent.unwrap_or_default());
    DeploymentStrategy {
        strategy: d.and_then(|d| d.strategy()).map_or_else(|| "ROLLING".to_owned(), |s| s.as_str().to_owned()),
        bake_time_minutes: d.and_then(|d| d.bake_time_in_minutes()),
        canary: d
            .and_then(|d| d.canary_configuration())
            .map(|c| (tenths(c.canary_percent()), c.canary_bake_time_in_minutes().unwrap_or_default())),
        linear: d
            .and_then(|d| d.linear_configuration())
            .map(|c| (tenths(c.step_percent()), c.step_bake_time_in_minutes().unwrap_or_default())),
    }
}

fn observed_service(s: &ecs::types::Service) -> ObservedService {
    let text = |v: Option<&str>| v.unwrap_or_default().to_string();
    ObservedService {
        name: text(s.service_name()),
        arn: text(s.service_arn()),
        status: text(s.status()),
        desired_count: s.desired_count(),
        running_count: s.running_count(),
        pending_count: s.pending_count(),
        task_definition: s.task_definition().map(str::to_owned),
        capacity_provider_strategy: s
            .capacity_provider_strategy()
            .iter()
            .map(|i| StrategyItem {
                capacity_provider: i.capacity_provider().to_string(),
                base: i.base(),
                weight: i.weight(),
            })
            .collect(),
        network: s.network_configuration().and_then(|n| n.awsvpc_configuration()).map(|v| NetworkConfig {
            subnets: v.subnets().to_vec(),
            security_groups: v.security_groups().to_vec(),
            assign_public_ip: v.assign_public_ip() == Some(&ecs::types::AssignPublicIp::Enabled),
        }),
        health_check_grace_period_seconds: s.health_check_grace_period_seconds(),
        circuit_breaker: s
            .deployment_configuration()
            .and_then(|d| d.deployment_circuit_breaker())
            .map(|c| CircuitBreaker { enable: c.enable(), rollback: c.rollback() }),
        strategy: observed_strategy(s.deployment_configuration()),
        alarms: s.deployment_configuration().and_then(|d| d.alarms()).map(|a| DeploymentAlarms {
            alarm_names: a.alarm_names().to_vec(),
            enable: a.enable(),
            rollback: a.rollback(),
        }),
        load_balancers: s
            .load_balancers()
            .iter()
            .filter_map(|l| {
                Some(LoadBalancerRef {
                    target_group_arn: l.target_group_arn()?.to_string(),
                    container_name: text(l.container_name()),
                    container_port: l.container_port().unwrap_or_default(),
                    traffic_shift: l.advanced_configuration().map(|a| TrafficShiftRef {
                        alternate_target_group_arn: text(a.alternate_target_group_arn()),
                        production_listener_rule: text(a.production_listener_rule()),
                        test_listener_rule: text(a.test_listener_rule()),
                        role_arn: text(a.role_arn()),
                    }),
                })
            })
            .collect(),
        service_registries: s.service_registries().iter().filter_map(|r| r.registry_arn().map(str::to_owned)).collect(),
        tags: s
            .tags()
            .iter()
            .filter_map(|t| Some((t.key()?.to_string(), t.value().unwrap_or_default().to_string())))
            .collect(),
        deployments: s
            .deployments()
            .iter()
            .map(|d| ObservedDeployment {
                id: text(d.id()),
                failed_tasks: d.failed_tasks(),
                status: text(d.status()),
                rollout_state: d.rollout_state().map(|r| r.as_str().to_string()),
                rollout_state_reason: d.rollout_state_reason().map(str::to_owned),
                desired_count: d.desired_count(),
                running_count: d.running_count(),
                pending_count: d.pending_count(),
                task_definition: d.task_definition().map(str::to_owned),
            })
            .collect(),
        events: s
            .events()
            .iter()
            .map(|e| ServiceEvent {
                created_at: e.created_at().and_then(|t| t.to_millis().ok()),
                message: text(e.message()),
            })
            .collect(),
    }
}

fn observed_task(t: &ecs::types::Task) -> ObservedTask {
    let text = |v: Option<&str>| v.unwrap_or_default().to_string();
    ObservedTask {
        arn: text(t.task_arn()),
        task_definition: text(t.task_definition_arn()),
        last_status: text(t.last_status()),
        started_by: t.started_by().map(str::to_owned),
        stop_code: t.stop_code().map(|c| c.as_str().to_string()),
        stopped_reason: t.stopped_reason().map(str::to_owned),
        containers: t
            .containers()
            .iter()
            .map(|c| ObservedContainer {
                name: text(c.name()),
                exit_code: c.exit_code(),
                reason: c.reason().map(str::to_owned),
            })
            .collect(),
    }
}

fn observed_task_definition(td: &ecs::types::TaskDefinition, tags: Vec<Tag>) -> ObservedTaskDefinition {
    let text = |v: Option<&str>| v.unwrap_or_default().to_string();
    let containers = td
        .container_definitions()
        .iter()
        .map(|c| {
            let mut port_mappings: Vec<(i32, String)> = c
                .port_mappings()
                .iter()
                .map(|p| {
                    let protocol =
                        p.protocol().map(|p| p.as_str().to_ascii_lowercase()).unwrap_or_else(|| "tcp".into());
                    (p.container_port().unwrap_or_default(), protocol)
                })
                .collect();
            port_mappings.sort();
            ContainerSpec {
                name: text(c.name()),
                image: text(c.image()),
                essential: c.essential().unwrap_or(true),
                port_mappings,
                environment: c.environment().iter().map(|kv| (text(kv.name()), text(kv.value()))).collect(),
                secrets: c.secrets().iter().map(|s| (s.name().to_string(), s.value_from().to_string())).collect(),
                log_driver: c.log_configuration().map(|l| l.log_driver().as_str().to_string()),
                log_options: c
                    .log_configuration()
                    .and_then(|l| l.options())
                    .map(|o| o.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                    .unwrap_or_default(),
            }
        })
        .collect();
    ObservedTaskDefinition {
        tags,
        arn: text(td.task_definition_arn()),
        revision: td.revision(),
        active: td.status() == Some(&ecs::types::TaskDefinitionStatus::Active),
        definition: TaskDefinitionSpec {
            family: text(td.family()),
            cpu: text(td.cpu()),
            memory: text(td.memory()),
            network_mode: td.network_mode().map(|m| m.as_str().to_string()).unwrap_or_default(),
            requires_compatibilities: td.requires_compatibilities().iter().map(|c| c.as_str().to_string()).collect(),
            execution_role_arn: text(td.execution_role_arn()),
            task_role_arn: text(td.task_role_arn()),
            containers,
        },
    }
}

fn container_definition(c: &ContainerSpec) -> Result<ecs::types::ContainerDefinition, AwsError> {
    let mut builder = ecs::types::ContainerDefinition::builder().name(&c.name).image(&c.image).essential(c.essential);
    for (port, protocol) in &c.port_mappings {
        builder = builder.port_mappings(
            ecs::types::PortMapping::builder()
                .container_port(*port)
                .protocol(ecs::types::TransportProtocol::from(protocol.as_str()))
                .build(),
        );
    }
    for (name, value) in &c.environment {
        builder = builder.environment(ecs::types::KeyValuePair::builder().name(name).value(value).build());
    }
    for (name, from) in &c.secrets {
        builder = builder
            .secrets(ecs::types::Secret::builder().name(name).value_from(from).build().map_err(invalid_request)?);
    }
    if let Some(driver) = &c.log_driver {
        let mut log = ecs::types::LogConfiguration::builder().log_driver(ecs::types::LogDriver::from(driver.as_str()));
        for (k, v) in &c.log_options {
            log = log.options(k, v);
        }
        builder = builder.log_configuration(log.build().map_err(invalid_request)?);
    }
    Ok(builder.build())
}

/// The family of a task definition ARN (`…:task-definition/<family>:<revision>`).
fn family_of(arn: &str) -> &str {
    let tail = arn.rsplit('/').next().unwrap_or(arn);
    tail.rsplit_once(':').map_or(tail, |(family, _)| family)
}

const ECS_DIMENSION: aas::types::ScalableDimension = aas::types::ScalableDimension::EcsServiceDesiredCount;

/// Most items an Application Auto Scaling filter list (`ResourceIds`, `PolicyNames`) takes.
const MAX_FILTER_ITEMS: usize = 50;

/// The longest prefix all `names` share (on a character boundary).
pub(crate) fn common_prefix(names: &[String]) -> &str {
    let Some(first) = names.first() else { return "" };
    let mut len = first.len();
    for name in &names[1..] {
        len = len.min(first.bytes().zip(name.bytes()).take_while(|(a, b)| a == b).count());
    }
    while !first.is_char_boundary(len) {
        len -= 1;
    }
    &first[..len]
}

fn observed_policy(p: &aas::types::ScalingPolicy) -> ObservedScalingPolicy {
    let tt = p.target_tracking_scaling_policy_configuration();
    ObservedScalingPolicy {
        name: p.policy_name().to_string(),
        resource_id: p.resource_id().to_string(),
        policy_type: p.policy_type().as_str().to_string(),
        metric: tt
            .and_then(|c| c.predefined_metric_specification())
            .map(|m| m.predefined_metric_type().as_str().to_string()),
        target_value: tt.map(|c| c.target_value()),
        scale_in_cooldown: tt.and_then(|c| c.scale_in_cooldown()),
        scale_out_cooldown: tt.and_then(|c| c.scale_out_cooldown()),
        disable_scale_in: tt.and_then(|c| c.disable_scale_in()).unwrap_or(false),
    }
}

#[async_trait]
impl ServicesApi for SdkServices {
    async fn find_log_groups(&self, names: &[String]) -> Result<BTreeMap<String, ObservedLogGroup>, AwsError> {
        let mut found = BTreeMap::new();
        if names.is_empty() {
            return Ok(found);
        }
        // Every group of the environment starts with this prefix; other groups sharing it are skipped.
        let prefix = common_prefix(names);
        let mut pages = self
            .logs
            .describe_log_groups()
            .set_log_group_name_prefix((!prefix.is_empty()).then(|| prefix.to_string()))
            .into_paginator()
            .send();
        // Found them all: no need to page through the rest of the prefix.
        while found.len() < names.len() {
            let Some(page) = pages.next().await else { break };
            for g in page?.log_groups() {
                if let Some(name) = g.log_group_name().filter(|n| names.iter().any(|w| w == n)) {
                    let group =
                        ObservedLogGroup { name: name.to_string(), retention_days: g.retention_in_days(), tags: None };
                    found.insert(name.to_string(), group);
                }
            }
        }
        Ok(found)
    }

    async fn list_log_groups(&self, prefix: &str) -> Result<Vec<ObservedLogGroup>, AwsError> {
        let pages =
            self.logs.describe_log_groups().log_group_name_prefix(prefix).into_paginator().send().try_collect().await?;
        Ok(pages
            .iter()
            .flat_map(|p| p.log_groups())
            .filter_map(|g| {
                let name = g.log_group_name().filter(|n| n.starts_with(prefix))?;
                Some(ObservedLogGroup { name: name.to_string(), retention_days: g.retention_in_days(), tags: None })
            })
            .collect())
    }

    async fn log_group_tags(&self, name: &str) -> Result<Vec<Tag>, AwsError> {
        // ListTagsLogGroup takes the name (ListTagsForResource needs the ARN, which
        // DescribeLogGroups reports with a `:*` suffix on some endpoints).
        #[allow(deprecated)]
        let out = self.logs.list_tags_log_group().log_group_name(name).send().await?;
        Ok(out.tags().map(|t| t.iter().map(|(k, v)| (k.clone(), v.clone())).collect()).unwrap_or_default())
    }

    async fn create_log_group(&self, name: &str, tags: &[Tag]) -> Result<(), AwsError> {
        let tags: HashMap<String, String> = tags.iter().cloned().collect();
        self.logs.create_log_group().log_group_name(name).set_tags(Some(tags)).send().await?;
        Ok(())
    }

    async fn put_retention_policy(&self, name: &str, days: i32) -> Result<(), AwsError> {
        self.logs.put_retention_policy().log_group_name(name).retention_in_days(days).send().await?;
        Ok(())
    }

    async fn delete_log_group(&self, name: &str) -> Result<(), AwsError> {
        self.logs.delete_log_group().log_group_name(name).send().await?;
        Ok(())
    }

    async fn describe_task_definition(&self, family: &str) -> Result<Option<ObservedTaskDefinition>, AwsError> {
        // With its tags (in the same call): whose the family is comes from its revisions' tags.
        let described = self
            .ecs
            .describe_task_definition()
            .task_definition(family)
            .include(ecs::types::TaskDefinitionField::Tags)
            .send()
            .await;
        match described {
            Ok(out) => {
                let tags = out
                    .tags()
                    .iter()
                    .filter_map(|t| Some((t.key()?.to_owned(), t.value()?.to_owned())))
                    .collect::<Vec<Tag>>();
                Ok(out.task_definition().map(|td| observed_task_definition(td, tags)))
            }
            Err(e) => {
                let e = AwsError::from(e);
                // ECS answers an unknown family with a generic ClientException.
                if e.is("ClientException") && e.message.contains("Unable to describe task definition") {
                    Ok(None)
                } else {
                    Err(e)
                }
            }
        }
    }

    async fn register_task_definition(
        &self,
        definition: &TaskDefinitionSpec,
        tags: &[Tag],
    ) -> Result<ObservedTaskDefinition, AwsError> {
        let containers = definition.containers.iter().map(container_definition).collect::<Result<Vec<_>, _>>()?;
        let out = self
            .ecs
            .register_task_definition()
            .family(&definition.family)
            .set_requires_compatibilities(Some(
                definition
                    .requires_compatibilities
                    .iter()
                    .map(|c| ecs::types::Compatibility::from(c.as_str()))
                    .collect(),
            ))
            .network_mode(ecs::types::NetworkMode::from(definition.network_mode.as_str()))
            .cpu(&definition.cpu)
            .memory(&definition.memory)
            .execution_role_arn(&definition.execution_role_arn)
            .task_role_arn(&definition.task_role_arn)
            .set_container_definitions(Some(containers))
            .set_tags(Some(ecs_tags(tags)))
            .customize()
            .config_override(no_blind_retry())
            .send()
            .await?;
        out.task_definition()
            .map(|td| observed_task_definition(td, tags.to_vec()))
            .ok_or_else(|| invalid_request("RegisterTaskDefinition returned no task definition"))
    }

    async fn list_task_families(&self, prefix: &str) -> Result<Vec<String>, AwsError> {
        Ok(self
            .ecs
            .list_task_definition_families()
            .set_family_prefix((!prefix.is_empty()).then(|| prefix.to_owned()))
            .status(ecs::types::TaskDefinitionFamilyStatus::Active)
            .into_paginator()
            .items()
            .send()
            .try_collect()
            .await?)
    }

    async fn list_task_definitions(&self, family: &str, status: RevisionStatus) -> Result<Vec<String>, AwsError> {
        let status = match status {
            RevisionStatus::Active => ecs::types::TaskDefinitionStatus::Active,
            RevisionStatus::Inactive => ecs::types::TaskDefinitionStatus::Inactive,
        };
        let pages = self
            .ecs
            .list_task_definitions()
            .family_prefix(family)
            .status(status)
            .into_paginator()
            .send()
            .try_collect()
            .await?;
        // familyPrefix is a prefix: keep exactly this family.
        Ok(pages.iter().flat_map(|p| p.task_definition_arns()).filter(|a| family_of(a) == family).cloned().collect())
    }

    async fn deregister_task_definition(&self, arn: &str) -> Result<(), AwsError> {
        self.ecs.deregister_task_definition().task_definition(arn).send().await?;
        Ok(())
    }

    async fn delete_task_definitions(&self, arns: &[String]) -> Result<(), AwsError> {
        let out = self.ecs.delete_task_definitions().set_task_definitions(Some(arns.to_vec())).send().await?;
        for f in out.failures() {
            tracing::debug!(arn = f.arn(), reason = f.reason(), "task definition not deleted");
        }
        Ok(())
    }

    async fn describe_services(&self, cluster: &str, names: &[String]) -> Result<Vec<ObservedService>, AwsError> {
        let mut found = Vec::new();
        for chunk in names.chunks(10) {
            let out = self
                .ecs
                .describe_services()
                .cluster(cluster)
                .set_services(Some(chunk.to_vec()))
                .include(ecs::types::ServiceField::Tags)
                .send()
                .await?;
            found.extend(out.services().iter().map(observed_service));
        }
        Ok(found)
    }

    async fn list_services(&self, cluster: &str) -> Result<Vec<String>, AwsError> {
        let pages = self.ecs.list_services().cluster(cluster).into_paginator().send().try_collect().await?;
        Ok(pages.iter().flat_map(|p| p.service_arns()).map(|a| a.rsplit('/').next().unwrap_or(a).to_string()).collect())
    }

    async fn create_service(&self, d: &DesiredService) -> Result<ObservedService, AwsError> {
        let mut req = self
            .ecs
            .create_service()
            .cluster(&d.cluster)
            .service_name(&d.name)
            .task_definition(&d.task_definition)
            .desired_count(d.desired_count)
            .set_capacity_provider_strategy(Some(strategy(&d.capacity_provider_strategy)?))
            .network_configuration(network(&d.network)?)
            .set_health_check_grace_period_seconds(d.health_check_grace_period_seconds)
            .set_load_balancers(Some(load_balancers(&d.load_balancers)))
            .set_service_registries(Some(registries(&d.service_registries)))
            .deployment_configuration(deployment_configuration(d.circuit_breaker, &d.strategy, d.alarms.as_ref())?)
            .scheduling_strategy(ecs::types::SchedulingStrategy::Replica)
            .propagate_tags(ecs::types::PropagateTags::Service)
            .enable_ecs_managed_tags(true)
            .set_tags(Some(ecs_tags(&d.tags)))
            .client_token(&d.client_token);
        if d.load_balancers.is_empty() {
            req = req.set_load_balancers(None);
        }
        if d.service_registries.is_empty() {
            req = req.set_service_registries(None);
        }
        let out = req.customize().config_override(no_blind_retry()).send().await?;
        out.service().map(observed_service).ok_or_else(|| invalid_request("CreateService returned no service"))
    }

    async fn update_service(&self, u: &ServiceUpdate) -> Result<ObservedService, AwsError> {
        let mut req = self
            .ecs
            .update_service()
            .cluster(&u.cluster)
            .service(&u.service)
            .set_task_definition(u.task_definition.clone())
            .set_health_check_grace_period_seconds(u.health_check_grace_period_seconds)
            .set_desired_count(u.desired_count);
        if let Some(items) = &u.capacity_provider_strategy {
            req = req.set_capacity_provider_strategy(Some(strategy(items)?));
        }
        if u.force_new_deployment {
            req = req.force_new_deployment(true);
        }
        if let (Some(cb), Some(strategy)) = (u.circuit_breaker, &u.strategy) {
            req = req.deployment_configuration(deployment_configuration(cb, strategy, u.alarms.as_ref())?);
        }
        if let Some(n) = &u.network {
            req = req.network_configuration(network(n)?);
        }
        if let Some(lbs) = &u.load_balancers {
            req = req.set_load_balancers(Some(load_balancers(lbs)));
        }
        if let Some(arns) = &u.service_registries {
            req = req.set_service_registries(Some(registries(arns)));
        }
        let out = req.send().await?;
        out.service().map(observed_service).ok_or_else(|| invalid_request("UpdateService returned no service"))
    }

    async fn delete_service(&self, cluster: &str, name: &str) -> Result<(), AwsError> {
        self.ecs.delete_service().cluster(cluster).service(name).force(true).send().await?;
        Ok(())
    }

    async fn describe_scalable_targets(
        &self,
        resource_ids: &[String],
    ) -> Result<BTreeMap<String, ObservedScalableTarget>, AwsError> {
        let mut found = BTreeMap::new();
        for chunk in resource_ids.chunks(MAX_FILTER_ITEMS) {
            let targets = self
                .autoscaling
                .describe_scalable_targets()
                .service_namespace(aas::types::ServiceNamespace::Ecs)
                .set_resource_ids(Some(chunk.to_vec()))
                .scalable_dimension(ECS_DIMENSION)
                .into_paginator()
                .items()
                .send()
                .try_collect()
                .await?;
            for t in targets {
                if chunk.iter().any(|r| r == t.resource_id()) && t.scalable_dimension() == &ECS_DIMENSION {
                    let target =
                        ObservedScalableTarget { min_capacity: t.min_capacity(), max_capacity: t.max_capacity() };
                    found.insert(t.resource_id().to_string(), target);
                }
            }
        }
        Ok(found)
    }

    async fn list_scalable_targets(&self, prefix: &str) -> Result<BTreeMap<String, ObservedScalableTarget>, AwsError> {
        let targets = self
            .autoscaling
            .describe_scalable_targets()
            .service_namespace(aas::types::ServiceNamespace::Ecs)
            .scalable_dimension(ECS_DIMENSION)
            .into_paginator()
            .items()
            .send()
            .try_collect()
            .await?;
        Ok(targets
            .into_iter()
            .filter(|t| t.resource_id().starts_with(prefix) && t.scalable_dimension() == &ECS_DIMENSION)
            .map(|t| {
                let target = ObservedScalableTarget { min_capacity: t.min_capacity(), max_capacity: t.max_capacity() };
                (t.resource_id().to_string(), target)
            })
            .collect())
    }

    async fn register_scalable_target(&self, resource_id: &str, min: i32, max: i32) -> Result<(), AwsError> {
        self.autoscaling
            .register_scalable_target()
            .service_namespace(aas::types::ServiceNamespace::Ecs)
            .resource_id(resource_id)
            .scalable_dimension(ECS_DIMENSION)
            .min_capacity(min)
            .max_capacity(max)
            .send()
            .await?;
        Ok(())
    }

    async fn deregister_scalable_target(&self, resource_id: &str) -> Result<(), AwsError> {
        self.autoscaling
            .deregister_scalable_target()
            .service_namespace(aas::types::ServiceNamespace::Ecs)
            .resource_id(resource_id)
            .scalable_dimension(ECS_DIMENSION)
            .send()
            .await?;
        Ok(())
    }

    async fn describe_scaling_policies(&self, resource_id: &str) -> Result<Vec<ObservedScalingPolicy>, AwsError> {
        let pages = self
            .autoscaling
            .describe_scaling_policies()
            .service_namespace(aas::types::ServiceNamespace::Ecs)
            .resource_id(resource_id)
            .scalable_dimension(ECS_DIMENSION)
            .into_paginator()
            .send()
            .try_collect()
            .await?;
        Ok(pages
            .iter()
            .flat_map(|p| p.scaling_policies())
            .filter(|p| p.resource_id() == resource_id && p.scalable_dimension() == &ECS_DIMENSION)
            .map(observed_policy)
            .collect())
    }

    async fn describe_named_scaling_policies(&self, names: &[String]) -> Result<Vec<ObservedScalingPolicy>, AwsError> {
        let mut policies = Vec::new();
        for chunk in names.chunks(MAX_FILTER_ITEMS) {
            // No ResourceId: the names select the policies across this environment's services
            // (ScalableDimension may only be sent with a ResourceId, so it is checked here).
            let listed = self
                .autoscaling
                .describe_scaling_policies()
                .service_namespace(aas::types::ServiceNamespace::Ecs)
                .set_policy_names(Some(chunk.to_vec()))
                .into_paginator()
                .items()
                .send()
                .try_collect()
                .await?;
            policies.extend(
                listed
                    .iter()
                    .filter(|p| chunk.iter().any(|n| n == p.policy_name()) && p.scalable_dimension() == &ECS_DIMENSION)
                    .map(observed_policy),
            );
        }
        Ok(policies)
    }

    async fn put_scaling_policy(&self, resource_id: &str, policy: &ScalingPolicySpec) -> Result<(), AwsError> {
        let metric = aas::types::PredefinedMetricSpecification::builder()
            .predefined_metric_type(aas::types::MetricType::from(policy.metric.as_str()))
            .build()
            .map_err(invalid_request)?;
        let config = aas::types::TargetTrackingScalingPolicyConfiguration::builder()
            .target_value(policy.target_value)
            .predefined_metric_specification(metric)
            .scale_in_cooldown(policy.scale_in_cooldown)
            .scale_out_cooldown(policy.scale_out_cooldown)
            .build()
            .map_err(invalid_request)?;
        self.autoscaling
            .put_scaling_policy()
            .policy_name(&policy.name)
            .service_namespace(aas::types::ServiceNamespace::Ecs)
            .resource_id(resource_id)
            .scalable_dimension(ECS_DIMENSION)
            .policy_type(aas::types::PolicyType::TargetTrackingScaling)
            .target_tracking_scaling_policy_configuration(config)
            .send()
            .await?;
        Ok(())
    }

    async fn delete_scaling_policy(&self, resource_id: &str, name: &str) -> Result<(), AwsError> {
        self.autoscaling
            .delete_scaling_policy()
            .policy_name(name)
            .service_namespace(aas::types::ServiceNamespace::Ecs)
            .resource_id(resource_id)
            .scalable_dimension(ECS_DIMENSION)
            .send()
            .await?;
        Ok(())
    }

    async fn image_exists(&self, repository: &str, tag: &str) -> Result<bool, AwsError> {
        let result = self
            .ecr
            .describe_images()
            .repository_name(repository)
            .image_ids(ecr::types::ImageIdentifier::builder().image_tag(tag).build())
            .send()
            .await
            .map_err(AwsError::from)
            .if_found()?;
        Ok(result.is_some_and(|out| !out.image_details().is_empty()))
    }

    async fn repository_images(&self, repository: &str) -> Result<Vec<RepositoryImage>, AwsError> {
        let tagged = ecr::types::DescribeImagesFilter::builder().tag_status(ecr::types::TagStatus::Tagged).build();
        let result: Result<Vec<ecr::types::ImageDetail>, _> = self
            .ecr
            .describe_images()
            .repository_name(repository)
            .filter(tagged)
            .into_paginator()
            .items()
            .send()
            .try_collect()
            .await;
        let images = result.map_err(AwsError::from).if_found()?.unwrap_or_default();
        Ok(images
            .iter()
            .map(|i| RepositoryImage {
                tags: i.image_tags().to_vec(),
                pushed_at: i.image_pushed_at().map(|t| t.secs()),
            })
            .collect())
    }

    async fn target_health(&self, target_group_arn: &str) -> Result<Vec<TargetState>, AwsError> {
        let out = self.elbv2.describe_target_health().target_group_arn(target_group_arn).send().await?;
        Ok(out
            .target_health_descriptions()
            .iter()
            .map(|d| {
                let health = d.target_health();
                TargetState {
                    id: d.target().and_then(|t| t.id()).unwrap_or_default().to_string(),
                    port: d.target().and_then(|t| t.port()),
                    state: health
                        .and_then(|h| h.state())
                        .map_or_else(|| "unknown".to_string(), |s| s.as_str().to_string()),
                    reason: health.and_then(|h| h.reason()).map(|r| r.as_str().to_string()),
                    description: health.and_then(|h| h.description()).map(str::to_owned),
                }
            })
            .collect())
    }

    async fn list_tasks(&self, cluster: &str, service: &str, stopped: bool) -> Result<Vec<String>, AwsError> {
        let status = if stopped { ecs::types::DesiredStatus::Stopped } else { ecs::types::DesiredStatus::Running };
        let out = self.ecs.list_tasks().cluster(cluster).service_name(service).desired_status(status).send().await?;
        Ok(out.task_arns().to_vec())
    }

    async fn describe_tasks(&self, cluster: &str, arns: &[String]) -> Result<Vec<ObservedTask>, AwsError> {
        let mut found = Vec::new();
        for chunk in arns.chunks(100) {
            let out = self.ecs.describe_tasks().cluster(cluster).set_tasks(Some(chunk.to_vec())).send().await?;
            found.extend(out.tasks().iter().map(observed_task));
        }
        Ok(found)
    }

    async fn run_task(&self, t: &OneOffTask) -> Result<ObservedTask, AwsError> {
        let overrides = ecs::types::TaskOverride::builder()
            .container_overrides(
                ecs::types::ContainerOverride::builder()
                    .name(&t.container)
                    .set_command(Some(t.command.clone()))
                    .build(),
            )
            .build();
        let mut req = self
            .ecs
            .run_task()
            .cluster(&t.cluster)
            .task_definition(&t.task_definition)
            .count(1)
            .network_configuration(network(&t.network)?)
            .overrides(overrides)
            .started_by(&t.started_by)
            .propagate_tags(ecs::types::PropagateTags::TaskDefinition);
        if t.capacity_provider_strategy.is_empty() {
            req = req.launch_type(ecs::types::LaunchType::Fargate);
        } else {
            req = req.set_capacity_provider_strategy(Some(strategy(&t.capacity_provider_strategy)?));
        }
        // Not retried blindly: a lost answer may have started the task already.
        let out = req.customize().config_override(no_blind_retry()).send().await?;
        if let Some(f) = out.failures().first() {
            return Err(AwsError::new("RunTaskFailure", f.reason().unwrap_or("RunTask failed").to_string()));
        }
        out.tasks().first().map(observed_task).ok_or_else(|| invalid_request("RunTask returned no task"))
    }

    async fn log_events(
        &self,
        group: &str,
        stream: &str,
        token: Option<String>,
        tail: i32,
    ) -> Result<LogPage, AwsError> {
        let from_head = token.is_some();
        let out = self
            .logs
            .get_log_events()
            .log_group_name(group)
            .log_stream_name(stream)
            .set_next_token(token)
            .start_from_head(from_head)
            .set_limit((!from_head).then_some(tail))
            .send()
            .await?;
        Ok(LogPage {
            lines: out.events().iter().map(|e| e.message().unwrap_or_default().trim_end().to_string()).collect(),
            next: out.next_forward_token().map(str::to_owned),
        })
    }

    async fn list_service_deployments(
        &self,
        cluster: &str,
        service: &str,
    ) -> Result<Vec<ServiceDeploymentBrief>, AwsError> {
        let mut found = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let out = self
                .ecs
                .list_service_deployments()
                .cluster(cluster)
                .service(service)
                .set_next_token(token.take())
                .send()
                .await?;
            found.extend(out.service_deployments().iter().map(|b| ServiceDeploymentBrief {
                arn: b.service_deployment_arn().unwrap_or_default().to_owned(),
                status: b.status().map(|s| s.as_str().to_owned()).unwrap_or_default(),
                target_revision_arn: b.target_service_revision_arn().map(str::to_owned),
                created_at_ms: b.created_at().and_then(|t| t.to_millis().ok()),
            }));
            match out.next_token() {
                Some(t) if !t.is_empty() => token = Some(t.to_owned()),
                _ => return Ok(found),
            }
        }
    }

    async fn describe_service_deployments(&self, arns: &[String]) -> Result<Vec<ServiceDeployment>, AwsError> {
        let out =
            self.ecs.describe_service_deployments().set_service_deployment_arns(Some(arns.to_vec())).send().await?;
        let text = |v: Option<&str>| v.map(str::to_owned);
        Ok(out
            .service_deployments()
            .iter()
            .map(|d| ServiceDeployment {
                arn: d.service_deployment_arn().unwrap_or_default().to_owned(),
                status: d.status().map(|s| s.as_str().to_owned()).unwrap_or_default(),
                status_reason: text(d.status_reason()),
                lifecycle_stage: d.lifecycle_stage().map(|s| s.as_str().to_owned()),
                target_revision_arn: d.target_service_revision().and_then(|r| text(r.arn())),
                source_revision_arns: d.source_service_revisions().iter().filter_map(|r| text(r.arn())).collect(),
                target_production_weight: d
                    .target_service_revision()
                    .and_then(|r| r.requested_production_traffic_weight()),
                bake_time_minutes: d.deployment_configuration().and_then(|c| c.bake_time_in_minutes()),
                triggered_alarms: d.alarms().map(|a| a.triggered_alarm_names().to_vec()).unwrap_or_default(),
                circuit_breaker_status: d
                    .deployment_circuit_breaker()
                    .and_then(|c| c.status())
                    .map(|s| s.as_str().to_owned()),
                rollback_reason: d.rollback().and_then(|r| text(r.reason())),
            })
            .collect())
    }

    async fn service_revision_task_definitions(&self, arns: &[String]) -> Result<BTreeMap<String, String>, AwsError> {
        let mut found = BTreeMap::new();
        for chunk in arns.chunks(20) {
            let out =
                self.ecs.describe_service_revisions().set_service_revision_arns(Some(chunk.to_vec())).send().await?;
            found.extend(
                out.service_revisions()
                    .iter()
                    .filter_map(|r| Some((r.service_revision_arn()?.to_owned(), r.task_definition()?.to_owned()))),
            );
        }
        Ok(found)
    }

    async fn stop_service_deployment(&self, arn: &str) -> Result<(), AwsError> {
        self.ecs
            .stop_service_deployment()
            .service_deployment_arn(arn)
            .stop_type(ecs::types::StopServiceDeploymentStopType::Rollback)
            .send()
            .await?;
        Ok(())
    }
}
