//! What the environment owns of this step's kinds, found by names and tags (not by the names the
//! config implies), and its removal in dependency order: scaling policies and targets, then the
//! ECS services (scaled to zero, deleted, drained), then task definition families and log groups.
//!
//! Deploy prunes what the config no longer declares; destroy removes everything found. The reads
//! are one listing per kind ([`Listed`], shared with the converge's batched read); only resources
//! of a service the config does not declare are read one by one (their tags, their policies).

use std::collections::{BTreeMap, BTreeSet};

use futures::future::try_join_all;
use tap_core::resource::{owned, Engine, Owned};
use tap_core::{Context, StepError};

use crate::api::ServicesApi;
use crate::component;
use crate::logs::{LogGroup, ObservedLogGroup};
use crate::scaling::{ObservedScalableTarget, ObservedScalingPolicy, ScalingPolicy, ScalingTarget, Target};
use crate::service::{wait_inactive, EcsService, ObservedService};
use crate::task_family::{ObservedFamily, TaskFamily};

/// One listing per kind of what may belong to the environment.
#[derive(Debug, Clone, Default)]
pub(crate) struct Listed {
    /// Names of the ECS services in the environment's cluster.
    pub services: Vec<String>,
    /// Log groups under `/ecs/tap-`.
    pub log_groups: Vec<ObservedLogGroup>,
    /// Task definition families with ACTIVE revisions under `tap-`.
    pub families: Vec<String>,
    /// The cluster's scalable targets, by resource id.
    pub targets: BTreeMap<String, ObservedScalableTarget>,
}

/// The prefix every log group of the step starts with.
pub(crate) const LOG_GROUP_PREFIX: &str = "/ecs/tap-";
/// The prefix every task definition family of the step starts with.
pub(crate) const FAMILY_PREFIX: &str = "tap-";

/// The resource-id prefix of the cluster's scalable targets.
pub(crate) fn target_prefix(cluster: &str) -> String {
    format!("service/{cluster}/")
}

/// The service label of `name` when it is `{prefix}{label}-{env}`.
fn label<'a>(name: &'a str, prefix: &str, env: &str) -> Option<&'a str> {
    let label = name.strip_prefix(prefix)?.strip_suffix(env)?.strip_suffix('-')?;
    (!label.is_empty()).then_some(label)
}

/// What the environment owns of a service the config does not declare.
#[derive(Debug, Default)]
pub(crate) struct Undeclared {
    pub policies: Vec<Owned<ObservedScalingPolicy>>,
    pub targets: Vec<Owned<Target>>,
    pub services: Vec<Owned<ObservedService>>,
    pub families: Vec<Owned<ObservedFamily>>,
    pub log_groups: Vec<Owned<ObservedLogGroup>>,
}

impl Undeclared {
    /// Whether there is nothing to remove.
    pub fn is_empty(&self) -> bool {
        self.policies.is_empty()
            && self.targets.is_empty()
            && self.services.is_empty()
            && self.families.is_empty()
            && self.log_groups.is_empty()
    }
}

/// Everything in `listed` that belongs to the environment (its tags say so; scalable targets,
/// which carry no tags, by their resource id in the environment's cluster, unless their ECS
/// service is there and not the environment's) and to no service in `declared`. Reads only what is undeclared: nothing when every listed resource is declared.
pub(crate) async fn undeclared(
    api: &dyn ServicesApi,
    ctx: &Context,
    cluster: &str,
    listed: &Listed,
    declared: &BTreeSet<String>,
) -> Result<Undeclared, StepError> {
    let env = ctx.names.env();
    fn undeclared_in<'a>(name: &'a str, prefix: &str, env: &str, declared: &BTreeSet<String>) -> Option<&'a str> {
        label(name, prefix, env).filter(|l| !declared.contains(*l))
    }

    let services = async {
        let names: Vec<String> = listed
            .services
            .iter()
            .filter(|n| undeclared_in(n, FAMILY_PREFIX, env, declared).is_some())
            .cloned()
            .collect();
        if names.is_empty() {
            return Ok((vec![], BTreeSet::new()));
        }
        let found = match api.describe_services(cluster, &names).await {
            Ok(found) => found,
            Err(e) if e.is_not_found() => vec![],
            Err(e) => return Err(StepError::aws(component("ecs-service", "*"), "DescribeServices")(e)),
        };
        // (ours, live services that are not ours): the scaling of the latter is left alone too.
        let (mut ours, mut foreign) = (vec![], BTreeSet::new());
        for s in found.into_iter().filter(|s| s.status != "INACTIVE" && names.contains(&s.name)) {
            let Some(l) = undeclared_in(&s.name, FAMILY_PREFIX, env, declared).map(str::to_owned) else { continue };
            match owned(&s.tags, env, || component("ecs-service", &l)) {
                Some(id) => ours.push(Owned { id, name: s.name.clone(), observed: s }),
                None => {
                    foreign.insert(s.name);
                }
            }
        }
        Ok::<_, StepError>((ours, foreign))
    };

    let services_and_scaling = async {
        let (services, foreign) = services.await?;
        let prefix = target_prefix(cluster);
        let targets: Vec<(String, Target)> = listed
            .targets
            .iter()
            .filter_map(|(rid, t)| {
                let service = rid.strip_prefix(&prefix)?;
                if foreign.contains(service) {
                    return None;
                }
                let l = undeclared_in(service, FAMILY_PREFIX, env, declared)?;
                let target =
                    Target { resource_id: rid.clone(), min_capacity: t.min_capacity, max_capacity: t.max_capacity };
                Some((l.to_string(), target))
            })
            .collect();
        let policies = try_join_all(targets.iter().map(|(l, t)| async move {
            let found = api
                .describe_scaling_policies(&t.resource_id)
                .await
                .map_err(StepError::aws(component("scaling-policy", l), "DescribeScalingPolicies"))?;
            Ok::<_, StepError>(
                found
                    .into_iter()
                    .map(|p| Owned { id: component("scaling-policy", l), name: p.name.clone(), observed: p })
                    .collect::<Vec<_>>(),
            )
        }))
        .await?;
        let targets = targets
            .into_iter()
            .map(|(l, t)| Owned { id: component("scaling-target", &l), name: t.resource_id.clone(), observed: t })
            .collect();
        Ok::<_, StepError>((services, policies.into_iter().flatten().collect(), targets))
    };

    let families = try_join_all(
        listed.families.iter().filter_map(|f| Some((f, undeclared_in(f, FAMILY_PREFIX, env, declared)?))).map(
            |(family, l)| async move {
                let id = component("task-definition", l);
                let latest = api
                    .describe_task_definition(family)
                    .await
                    .map_err(StepError::aws(&id, "DescribeTaskDefinition"))?;
                // Its tags come with it (`include=TAGS`): whose the family is needs no other call.
                let Some(latest) = latest.filter(|t| t.active) else { return Ok(None) };
                let Some(id) = owned(&latest.tags, env, || id.clone()) else { return Ok(None) };
                Ok::<_, StepError>(Some(Owned {
                    id,
                    name: family.clone(),
                    observed: ObservedFamily { family: family.clone(), latest },
                }))
            },
        ),
    );

    let log_groups = try_join_all(
        listed
            .log_groups
            .iter()
            .filter_map(|g| Some((g, undeclared_in(&g.name, LOG_GROUP_PREFIX, env, declared)?)))
            .map(|(group, l)| async move {
                let id = component("log-group", l);
                let tags = match api.log_group_tags(&group.name).await {
                    Ok(tags) => tags,
                    Err(e) if e.is_not_found() => return Ok(None),
                    Err(e) => return Err(StepError::aws(&id, "ListTagsLogGroup")(e)),
                };
                let Some(id) = owned(&tags, env, || id.clone()) else { return Ok(None) };
                let observed = ObservedLogGroup { tags: Some(tags), ..group.clone() };
                Ok(Some(Owned { id, name: group.name.clone(), observed }))
            }),
    );

    let ((services, policies, targets), families, log_groups) =
        tokio::try_join!(services_and_scaling, families, log_groups)?;
    Ok(Undeclared {
        policies,
        targets,
        services,
        families: families.into_iter().flatten().collect(),
        log_groups: log_groups.into_iter().flatten().collect(),
    })
}

/// Removes (in plan mode: lists) `found` in dependency order: the ECS services, waiting in apply
/// mode until ECS has drained them, then their task definition families and log groups; the
/// scaling alongside (DeleteService forces the deletion whatever scaling sets the desired count
/// to), not holding the families up: at a hundred services each of the two takes most of a
/// hundred seconds at AWS's rates.
pub(crate) async fn remove(
    api: &dyn ServicesApi,
    engine: &Engine<'_>,
    cluster: &str,
    found: Undeclared,
    services_gone: &(dyn Fn() + Sync),
) -> Result<(), StepError> {
    if found.is_empty() {
        services_gone();
        return Ok(());
    }
    let none = BTreeSet::new();
    // DeleteService forces the deletion (whatever scaling sets the desired count to), so the
    // scaling goes alongside, not first.
    let scaling = async {
        engine.prune(&ScalingPolicy(api), found.policies, &none).await?;
        engine.prune(&ScalingTarget(api), found.targets, &none).await
    };
    let services = async {
        let deleted = engine.prune(&EcsService { api, cluster }, found.services, &none).await?;
        if engine.mode().is_apply() {
            try_join_all(deleted.iter().map(|s| wait_inactive(api, cluster, &s.name, &s.id))).await?;
        }
        services_gone();
        let (families, log_groups) = (TaskFamily::new(api, engine.ctx().names.env()), LogGroup(api));
        tokio::try_join!(
            engine.prune(&families, found.families, &none),
            engine.prune(&log_groups, found.log_groups, &none),
        )?;
        Ok::<_, StepError>(())
    };
    tokio::try_join!(scaling, services)?;
    Ok(())
}
