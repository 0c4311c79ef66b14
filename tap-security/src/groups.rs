//! Security groups: one for the load balancer (HTTP and HTTPS from anywhere) and one per service
//! (its port from the load balancer's group when it is routed, and from the groups of the services
//! in its `allow_from`). Rules converge exactly: missing rules are authorized and any other rule
//! (someone opened port 22) is revoked. Egress is the default "all traffic to anywhere" rule.
//!
//! This module is the step's wiring for groups: the desired groups from the config, the two
//! phases (every group exists, then every group's rules, which reference each other's ids: on a
//! group just created the engine's second half of its create, [`Engine::complete`]), the prune and
//! destroy (the engine's [`Engine::delete_all_when`]: every group's rules naming other groups
//! revoked at once, the deletes once what holds the groups is gone). Every call goes through the
//! engine; the life cycle of one group is the resource kind
//! [`crate::security_group::SecurityGroupKind`], the EC2 calls are [`crate::ec2`], a rule is
//! [`crate::rule`].

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::time::Duration;

use futures::future::try_join_all;
use tap_core::outputs::{is_known, NetworkOutputs, PENDING};
use tap_core::resource::{Engine, Owned};
use tap_core::step::Gone;
use tap_core::wait::Backoff;
use tap_core::{Change, Context, Mode, StepError};
use tokio::sync::oneshot;

use crate::ec2::{Ec2Api, ObservedGroup};
use crate::rule::{Rule, RuleSource};
use crate::security_group::{GroupWant, SecurityGroupKind};
use crate::STEP;

/// Logical id of the load balancer's group.
pub const ALB_COMPONENT: &str = "security/sg/alb";

/// Logical id of a service's group.
pub fn service_component(service: &str) -> String {
    format!("security/sg/{service}")
}

/// Where a desired ingress rule comes from, before group ids are known.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Peer {
    Anywhere,
    /// The group with this logical id.
    Group(String),
}

/// One desired security group.
#[derive(Debug, Clone)]
struct DesiredGroup {
    component: String,
    name: String,
    description: String,
    ingress: Vec<(u16, Peer)>,
}

fn desired_groups(ctx: &Context) -> Vec<DesiredGroup> {
    let names = &ctx.names;
    let mut groups = vec![DesiredGroup {
        component: ALB_COMPONENT.into(),
        name: names.alb_security_group(),
        description: format!("tap {}: load balancer, HTTP and HTTPS from anywhere", names.env()),
        ingress: vec![(80, Peer::Anywhere), (443, Peer::Anywhere)],
    }];
    for s in &ctx.config.services {
        let mut ingress = Vec::new();
        if s.route.is_some() {
            ingress.push((s.port, Peer::Group(ALB_COMPONENT.into())));
        }
        for from in &s.allow_from {
            ingress.push((s.port, Peer::Group(service_component(from))));
        }
        groups.push(DesiredGroup {
            component: service_component(&s.name),
            name: names.service_security_group(&s.name),
            description: format!("tap {}: service {}", names.env(), s.name),
            ingress,
        });
    }
    groups
}

/// The security groups' ids ([`PENDING`] in plan mode for a group that would be created).
#[derive(Debug, Clone, Default)]
pub struct GroupIds {
    /// The load balancer's group id.
    pub alb: String,
    /// Service name → group id.
    pub services: BTreeMap<String, String>,
}

/// The security groups' ids and the changes.
#[derive(Debug, Default)]
pub struct GroupsResult {
    /// The groups' ids.
    pub ids: GroupIds,
    /// Created and updated groups.
    pub changes: Vec<Change>,
    /// Groups of the environment (by their tags, in its VPC) that the config no longer declares:
    /// [`prune`] deletes them once the services using them are gone.
    pub undeclared: Vec<ObservedGroup>,
}

/// The logical id of `g` when its tags say this environment owns it and it is a security group of
/// tap's (`security/sg/…`).
pub fn owned_group(g: &ObservedGroup, env: &str) -> Option<String> {
    let fallback = || g.component.clone().unwrap_or_default();
    tap_core::resource::owned(&g.tags, env, fallback).filter(|id| id.starts_with("security/sg/"))
}

/// Makes the groups exist with exactly their rules.
pub async fn converge(
    api: &dyn Ec2Api,
    ctx: &Context,
    mode: Mode,
    ids_known: oneshot::Sender<GroupIds>,
) -> Result<GroupsResult, StepError> {
    // The environment's groups are read by tag while the VPC is still coming, then those of
    // other VPCs are set aside (a VPC that does not exist yet has none).
    let observe = async {
        api.describe_security_groups(ctx.names.env(), None)
            .await
            .map_err(StepError::aws("security/sg", "DescribeSecurityGroups"))
    };
    let (observed, network) = tokio::try_join!(observe, ctx.wait::<NetworkOutputs>())?;
    let vpc = network.vpc_id;
    let observed: Vec<ObservedGroup> = observed.into_iter().filter(|g| is_known(&vpc) && g.vpc_id == vpc).collect();
    let desired = desired_groups(ctx);
    let find = |d: &DesiredGroup| {
        observed
            .iter()
            .find(|g| g.component.as_deref() == Some(d.component.as_str()))
            .or_else(|| observed.iter().find(|g| g.name == d.name))
            .cloned()
    };

    let matched: BTreeSet<String> = desired.iter().filter_map(|d| find(d).map(|g| g.id)).collect();
    let declared: BTreeSet<&str> = desired.iter().map(|d| d.component.as_str()).collect();
    let undeclared: Vec<ObservedGroup> = observed
        .iter()
        .filter(|g| !matched.contains(&g.id))
        .filter(|g| owned_group(g, ctx.names.env()).is_some_and(|id| !declared.contains(id.as_str())))
        .cloned()
        .collect();

    let env = ctx.names.env();
    let kind = SecurityGroupKind::new(api, env);
    let want = |d: &DesiredGroup, ingress: Vec<(Rule, String)>| GroupWant {
        component: d.component.clone(),
        name: d.name.clone(),
        description: d.description.clone(),
        vpc_id: vpc.clone(),
        tags: ctx.names.tags(&d.component, &d.name),
        ingress,
    };

    let labels: BTreeMap<&str, &str> = desired.iter().map(|d| (d.component.as_str(), d.name.as_str())).collect();
    // The rules of `d`, each with the label plan shows (from names, so known before the ids),
    // its peers' ids taken from `ids` (PENDING while unknown).
    let rules_of = |d: &DesiredGroup, ids: &BTreeMap<&str, String>| -> Vec<(Rule, String)> {
        let rules = d.ingress.iter().map(|(port, peer)| match peer {
            Peer::Anywhere => {
                let rule = Rule::tcp(*port, RuleSource::Cidr("0.0.0.0/0".into()));
                let label = rule.ingress_label();
                (rule, label)
            }
            Peer::Group(c) => {
                let peer = ids.get(c.as_str()).map_or(PENDING, String::as_str);
                let rule = Rule::tcp(*port, RuleSource::Group(peer.into()));
                (rule, format!("tcp {port} from {}", labels.get(c.as_str()).copied().unwrap_or(c)))
            }
        });
        // A service listed twice in `allow_from` is one rule (EC2 rejects duplicates).
        let mut seen = BTreeSet::new();
        rules.filter(|r| seen.insert(r.clone())).collect()
    };

    // Phase one: every group exists (the rules reference each other's ids, maybe in a cycle). A
    // group created lists the rules phase two gives it ([`SecurityGroupKind::create_attributes`]),
    // in plan and apply alike.
    let engine = Engine::new(ctx, STEP, mode);
    let no_ids = BTreeMap::new();
    let found = try_join_all(desired.iter().map(|d| {
        let existing = find(d);
        let (kind, engine) = (&kind, &engine);
        let want = want(d, rules_of(d, &no_ids));
        async move {
            match existing {
                Some(g) => Ok::<_, StepError>((Some(g), false)),
                None => Ok((engine.converge(kind, &d.component, &d.name, &want, None).await?, true)),
            }
        }
    }))
    .await?;
    let id = |g: &Option<ObservedGroup>| g.as_ref().map_or(PENDING, |g| g.id.as_str()).to_owned();
    let ids: BTreeMap<&str, String> =
        desired.iter().zip(&found).map(|(d, (g, _))| (d.component.as_str(), id(g))).collect();
    let mut group_ids = GroupIds::default();
    for (component, id) in &ids {
        if *component == ALB_COMPONENT {
            group_ids.alb = id.clone();
        } else if let Some(service) = component.strip_prefix("security/sg/") {
            group_ids.services.insert(service.to_string(), id.clone());
        }
    }
    // Nobody listening is fine (the receiver only speeds up the publishing of the outputs).
    let _ = ids_known.send(group_ids.clone());

    // Phase two: exactly the desired rules on every group; on one phase one created, the second
    // half of its create (the rules it listed).
    try_join_all(desired.iter().zip(found).map(|(d, (observed, created))| {
        let want = want(d, rules_of(d, &ids));
        let (kind, engine) = (&kind, &engine);
        async move {
            match (observed, created) {
                (Some(made), true) => engine.complete(kind, &d.component, &d.name, &want, made).await.map(drop),
                (None, true) => Ok(()),
                (observed, false) => engine.converge(kind, &d.component, &d.name, &want, observed).await.map(drop),
            }
        }
    }))
    .await?;
    let changes = engine.into_changes();

    Ok(GroupsResult { ids: group_ids, changes, undeclared })
}

/// How long a group deletion is retried while AWS still reports a dependency (the network
/// interfaces of a just-deleted load balancer or of stopped tasks are released slowly).
pub fn dependency_backoff() -> Backoff {
    // At most 5 s between tries: the release ends unannounced, and every second late holds the VPC.
    Backoff { initial: Duration::from_secs(1), max: Duration::from_secs(5), timeout: Duration::from_secs(900) }
}

/// Deletes (in plan mode: lists) every security group of the environment (found by tags): rules
/// that reference other groups are revoked at once; each group is deleted once the services and
/// the load balancer are gone ([`Gone`]), retrying while their network interfaces are still
/// released; then [`Gone::SecurityGroups`] is given.
pub async fn destroy(api: &dyn Ec2Api, ctx: &Context, mode: Mode, backoff: Backoff) -> Result<Vec<Change>, StepError> {
    let env = ctx.names.env();
    let groups = api
        .describe_security_groups(env, None)
        .await
        .map_err(StepError::aws("security/sg", "DescribeSecurityGroups"))?;
    let holders_gone =
        async { tokio::try_join!(ctx.wait_gone(Gone::EcsServices), ctx.wait_gone(Gone::LoadBalancer)).map(drop) };
    let deleted = delete_groups(api, ctx, mode, &groups, backoff, holders_gone).await?;
    ctx.give(Gone::SecurityGroups);
    Ok(deleted)
}

/// Lists (plan) or deletes (apply) the groups the config no longer declares (see
/// [`GroupsResult::undeclared`]); the caller has waited for the services that used them to go.
pub async fn prune(
    api: &dyn Ec2Api,
    ctx: &Context,
    mode: Mode,
    groups: &[ObservedGroup],
    backoff: Backoff,
) -> Result<Vec<Change>, StepError> {
    delete_groups(api, ctx, mode, groups, backoff, async { Ok(()) }).await
}

/// Deletes the environment's `groups` (by their tags, [`owned_group`]) with the engine (in plan
/// mode: lists them): in apply mode first the rules by which they reference other groups, at once
/// ([`SecurityGroupKind::release`], listed on each delete), then, once `holders_gone` is done, each
/// group; AWS refuses a group's delete while network interfaces still hold it (released
/// asynchronously), and the engine sends it again, backing off, for `backoff`
/// ([`SecurityGroupKind::held`]). A group already gone is no change.
async fn delete_groups(
    api: &dyn Ec2Api,
    ctx: &Context,
    mode: Mode,
    groups: &[ObservedGroup],
    backoff: Backoff,
    holders_gone: impl Future<Output = Result<(), StepError>>,
) -> Result<Vec<Change>, StepError> {
    let env = ctx.names.env();
    let owned: Vec<Owned<ObservedGroup>> = groups
        .iter()
        .filter_map(|g| Some(Owned { id: owned_group(g, env)?, name: g.name.clone(), observed: g.clone() }))
        .collect();
    let engine = Engine::new(ctx, STEP, mode).with_hold_backoff(backoff);
    let doomed: Vec<&Owned<ObservedGroup>> = owned.iter().collect();
    engine.delete_all_when(&SecurityGroupKind::new(api, env), &doomed, holders_gone).await?;
    Ok(engine.into_changes())
}
