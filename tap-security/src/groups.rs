//! Security groups: one for the load balancer (HTTP and HTTPS from anywhere) and one per service
//! (its port from the load balancer's group when it is routed, and from the groups of the services
//! in its `allow_from`). Rules converge exactly: missing rules are authorized and any other rule
//! (someone opened port 22) is revoked. Egress is the default "all traffic to anywhere" rule.
//!
//! This module holds the EC2 seam ([`Ec2Api`]) and the wiring: the desired groups from the config,
//! the two phases (every group exists, then every group's rules, which reference each other's
//! ids), the prune and destroy. The life cycle of one group is the resource kind
//! [`crate::security_group::SecurityGroupKind`], run by the engine.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::future::Future;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_ec2::types::{
    Filter, IpPermission, IpRange, Ipv6Range, PrefixListId, ResourceType, TagSpecification, UserIdGroupPair,
};
use futures::future::try_join_all;
use tap_core::idempotent::NoBlindRetry;
use tap_core::naming::{Tag, TAG_COMPONENT, TAG_ENVIRONMENT};
use tap_core::outputs::{is_known, NetworkOutputs, PENDING};
use tap_core::progress::ProgressEvent;
use tap_core::resource::{Engine, Resource};
use tap_core::step::Gone;
use tap_core::wait::{retry_while, Backoff};
use tap_core::{Action, AttrChange, AwsError, Change, Context, Mode, StepError};
use tokio::sync::oneshot;

use crate::security_group::{GroupWant, RuleFix, SecurityGroupKind};

/// Where traffic of a rule comes from (ingress) or goes to (egress).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RuleSource {
    /// An IPv4 CIDR block.
    Cidr(String),
    /// An IPv6 CIDR block.
    Ipv6Cidr(String),
    /// Another security group, by id.
    Group(String),
    /// A managed prefix list, by id.
    PrefixList(String),
}

/// One security group rule: protocol, port range and one source.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Rule {
    /// `tcp`, `udp`, `icmp`, … or `-1` for all traffic.
    pub protocol: String,
    /// First port (`None` for all traffic).
    pub from_port: Option<i32>,
    /// Last port (`None` for all traffic).
    pub to_port: Option<i32>,
    /// The peer.
    pub source: RuleSource,
}

impl Rule {
    /// TCP on one port from `source`.
    pub fn tcp(port: u16, source: RuleSource) -> Self {
        Rule { protocol: "tcp".into(), from_port: Some(port.into()), to_port: Some(port.into()), source }
    }

    /// All traffic to or from `source`.
    pub fn all(source: RuleSource) -> Self {
        Rule { protocol: "-1".into(), from_port: None, to_port: None, source }
    }

    /// A rule as EC2 describes it, in canonical form (protocol names, no ports for all traffic).
    pub fn normalized(protocol: &str, from_port: Option<i32>, to_port: Option<i32>, source: RuleSource) -> Self {
        let protocol = match protocol.to_ascii_lowercase().as_str() {
            "6" => "tcp".to_string(),
            "17" => "udp".to_string(),
            "1" => "icmp".to_string(),
            "all" => "-1".to_string(),
            p => p.to_string(),
        };
        if protocol == "-1" {
            Rule { protocol, from_port: None, to_port: None, source }
        } else {
            Rule { protocol, from_port, to_port, source }
        }
    }

    fn references_group(&self) -> bool {
        matches!(self.source, RuleSource::Group(_))
    }
}

impl Rule {
    /// `tcp 80`, `tcp 1024-2048`, `all traffic`.
    pub fn ports(&self) -> String {
        match (self.from_port, self.to_port) {
            _ if self.protocol == "-1" => "all traffic".to_string(),
            (Some(a), Some(b)) if a == b => format!("{} {a}", self.protocol),
            (Some(a), Some(b)) => format!("{} {a}-{b}", self.protocol),
            _ => self.protocol.clone(),
        }
    }

    /// The CIDR, group id or prefix list id of the peer.
    pub fn peer(&self) -> &str {
        match &self.source {
            RuleSource::Cidr(c) | RuleSource::Ipv6Cidr(c) => c,
            RuleSource::Group(g) => g,
            RuleSource::PrefixList(p) => p,
        }
    }

    pub(crate) fn ingress_label(&self) -> String {
        format!("{} from {}", self.ports(), self.peer())
    }

    pub(crate) fn egress_label(&self) -> String {
        format!("{} to {}", self.ports(), self.peer())
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.ports(), self.peer())
    }
}

/// A security group as `DescribeSecurityGroups` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedGroup {
    /// Group id.
    pub id: String,
    /// Group name.
    pub name: String,
    /// The VPC it is in.
    pub vpc_id: String,
    /// Value of the `tap:component` tag.
    pub component: Option<String>,
    /// All its tags (ownership: `ManagedBy=tap` and `Environment`).
    pub tags: Vec<Tag>,
    /// Ingress rules, one per source.
    pub ingress: Vec<Rule>,
    /// Egress rules, one per destination.
    pub egress: Vec<Rule>,
}

/// The EC2 calls this crate makes.
#[cfg_attr(any(test, feature = "test-util"), mockall::automock)]
#[async_trait]
pub trait Ec2Api: Send + Sync {
    /// `DescribeSecurityGroups` filtered by tag `Environment` = `env` and, when given, the VPC.
    async fn describe_security_groups(&self, env: &str, vpc_id: Option<String>)
        -> Result<Vec<ObservedGroup>, AwsError>;
    /// `CreateSecurityGroup` with `TagSpecifications`; returns the group id.
    async fn create_security_group(
        &self,
        name: &str,
        description: &str,
        vpc_id: &str,
        tags: &[Tag],
    ) -> Result<String, AwsError>;
    /// `AuthorizeSecurityGroupIngress`.
    async fn authorize_ingress(&self, group_id: &str, rules: &[Rule]) -> Result<(), AwsError>;
    /// `RevokeSecurityGroupIngress`.
    async fn revoke_ingress(&self, group_id: &str, rules: &[Rule]) -> Result<(), AwsError>;
    /// `AuthorizeSecurityGroupEgress`.
    async fn authorize_egress(&self, group_id: &str, rules: &[Rule]) -> Result<(), AwsError>;
    /// `RevokeSecurityGroupEgress`.
    async fn revoke_egress(&self, group_id: &str, rules: &[Rule]) -> Result<(), AwsError>;
    /// `DeleteSecurityGroup`.
    async fn delete_security_group(&self, group_id: &str) -> Result<(), AwsError>;
}

/// [`Ec2Api`] over the AWS SDK.
#[derive(Debug, Clone)]
pub struct SdkEc2(pub aws_sdk_ec2::Client);

fn rules_of(permissions: &[IpPermission]) -> Vec<Rule> {
    let mut rules = Vec::new();
    for p in permissions {
        let rule = |source| Rule::normalized(p.ip_protocol().unwrap_or("-1"), p.from_port(), p.to_port(), source);
        rules.extend(p.ip_ranges().iter().filter_map(|r| r.cidr_ip()).map(|c| rule(RuleSource::Cidr(c.into()))));
        rules
            .extend(p.ipv6_ranges().iter().filter_map(|r| r.cidr_ipv6()).map(|c| rule(RuleSource::Ipv6Cidr(c.into()))));
        rules.extend(
            p.user_id_group_pairs().iter().filter_map(|g| g.group_id()).map(|g| rule(RuleSource::Group(g.into()))),
        );
        rules.extend(
            p.prefix_list_ids()
                .iter()
                .filter_map(|l| l.prefix_list_id())
                .map(|l| rule(RuleSource::PrefixList(l.into()))),
        );
    }
    rules
}

fn permissions_of(rules: &[Rule]) -> Vec<IpPermission> {
    rules
        .iter()
        .map(|r| {
            let b = IpPermission::builder().ip_protocol(&r.protocol).set_from_port(r.from_port).set_to_port(r.to_port);
            match &r.source {
                RuleSource::Cidr(c) => b.ip_ranges(IpRange::builder().cidr_ip(c).build()),
                RuleSource::Ipv6Cidr(c) => b.ipv6_ranges(Ipv6Range::builder().cidr_ipv6(c).build()),
                RuleSource::Group(g) => b.user_id_group_pairs(UserIdGroupPair::builder().group_id(g).build()),
                RuleSource::PrefixList(l) => b.prefix_list_ids(PrefixListId::builder().prefix_list_id(l).build()),
            }
            .build()
        })
        .collect()
}

/// Creates the SDK must not resend blindly when their outcome is unknown (no answer, or a 5xx
/// answer): the step looks first (see `tap_core::idempotent`).
fn no_blind_retry() -> aws_sdk_ec2::config::Builder {
    aws_sdk_ec2::Config::builder().retry_classifier(NoBlindRetry)
}

#[async_trait]
impl Ec2Api for SdkEc2 {
    async fn describe_security_groups(
        &self,
        env: &str,
        vpc_id: Option<String>,
    ) -> Result<Vec<ObservedGroup>, AwsError> {
        let mut filters = vec![Filter::builder().name(format!("tag:{TAG_ENVIRONMENT}")).values(env).build()];
        if let Some(vpc) = vpc_id {
            filters.push(Filter::builder().name("vpc-id").values(vpc).build());
        }
        let groups = self
            .0
            .describe_security_groups()
            .set_filters(Some(filters))
            .into_paginator()
            .items()
            .send()
            .try_collect()
            .await?;
        Ok(groups
            .into_iter()
            .map(|g| ObservedGroup {
                id: g.group_id().unwrap_or_default().to_string(),
                name: g.group_name().unwrap_or_default().to_string(),
                vpc_id: g.vpc_id().unwrap_or_default().to_string(),
                component: g
                    .tags()
                    .iter()
                    .find(|t| t.key() == Some(TAG_COMPONENT))
                    .and_then(|t| t.value())
                    .map(str::to_owned),
                tags: g
                    .tags()
                    .iter()
                    .map(|t| (t.key().unwrap_or_default().to_owned(), t.value().unwrap_or_default().to_owned()))
                    .collect(),
                ingress: rules_of(g.ip_permissions()),
                egress: rules_of(g.ip_permissions_egress()),
            })
            .collect())
    }

    async fn create_security_group(
        &self,
        name: &str,
        description: &str,
        vpc_id: &str,
        tags: &[Tag],
    ) -> Result<String, AwsError> {
        let tags = TagSpecification::builder()
            .resource_type(ResourceType::SecurityGroup)
            .set_tags(Some(
                tags.iter().map(|(k, v)| aws_sdk_ec2::types::Tag::builder().key(k).value(v).build()).collect(),
            ))
            .build();
        let out = self
            .0
            .create_security_group()
            .group_name(name)
            .description(description)
            .vpc_id(vpc_id)
            .tag_specifications(tags)
            .customize()
            .config_override(no_blind_retry())
            .send()
            .await?;
        Ok(out.group_id().unwrap_or_default().to_string())
    }

    async fn authorize_ingress(&self, group_id: &str, rules: &[Rule]) -> Result<(), AwsError> {
        self.0
            .authorize_security_group_ingress()
            .group_id(group_id)
            .set_ip_permissions(Some(permissions_of(rules)))
            .customize()
            .config_override(no_blind_retry())
            .send()
            .await?;
        Ok(())
    }

    async fn revoke_ingress(&self, group_id: &str, rules: &[Rule]) -> Result<(), AwsError> {
        self.0
            .revoke_security_group_ingress()
            .group_id(group_id)
            .set_ip_permissions(Some(permissions_of(rules)))
            .send()
            .await?;
        Ok(())
    }

    async fn authorize_egress(&self, group_id: &str, rules: &[Rule]) -> Result<(), AwsError> {
        self.0
            .authorize_security_group_egress()
            .group_id(group_id)
            .set_ip_permissions(Some(permissions_of(rules)))
            .customize()
            .config_override(no_blind_retry())
            .send()
            .await?;
        Ok(())
    }

    async fn revoke_egress(&self, group_id: &str, rules: &[Rule]) -> Result<(), AwsError> {
        self.0
            .revoke_security_group_egress()
            .group_id(group_id)
            .set_ip_permissions(Some(permissions_of(rules)))
            .send()
            .await?;
        Ok(())
    }

    async fn delete_security_group(&self, group_id: &str) -> Result<(), AwsError> {
        self.0.delete_security_group().group_id(group_id).send().await?;
        Ok(())
    }
}

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

    // Phase one: every group exists (the rules reference each other's ids). Created groups are
    // listed by their own engine: their rules are added to their creation, not listed as an update.
    let creates = Engine::new(ctx, "security", mode);
    let found = try_join_all(desired.iter().map(|d| {
        let existing = find(d);
        let (kind, creates) = (&kind, &creates);
        let want = want(d, vec![]);
        async move {
            match existing {
                Some(g) => Ok::<_, StepError>((g.id.clone(), Some(g), false)),
                None => match creates.create(kind, &d.component, &d.name, &want).await? {
                    Some(g) => Ok((g.id.clone(), Some(g), true)),
                    None => Ok((PENDING.to_string(), None, true)),
                },
            }
        }
    }))
    .await?;
    let ids: BTreeMap<&str, &str> =
        desired.iter().zip(&found).map(|(d, (id, _, _))| (d.component.as_str(), id.as_str())).collect();
    let labels: BTreeMap<&str, &str> = desired.iter().map(|d| (d.component.as_str(), d.name.as_str())).collect();
    let mut group_ids = GroupIds::default();
    for (d, (id, _, _)) in desired.iter().zip(&found) {
        if d.component == ALB_COMPONENT {
            group_ids.alb = id.clone();
        } else if let Some(service) = d.component.strip_prefix("security/sg/") {
            group_ids.services.insert(service.to_string(), id.clone());
        }
    }
    // Nobody listening is fine (the receiver only speeds up the publishing of the outputs).
    let _ = ids_known.send(group_ids.clone());

    // Phase two: exactly the desired rules on every group.
    let engine = Engine::new(ctx, "security", mode);
    let created_rules = try_join_all(desired.iter().zip(&found).map(|(d, (_, observed, created))| {
        let rules: Vec<(Rule, String)> = d
            .ingress
            .iter()
            .map(|(port, peer)| match peer {
                Peer::Anywhere => {
                    let rule = Rule::tcp(*port, RuleSource::Cidr("0.0.0.0/0".into()));
                    let label = rule.ingress_label();
                    (rule, label)
                }
                Peer::Group(c) => {
                    let rule = Rule::tcp(
                        *port,
                        RuleSource::Group(ids.get(c.as_str()).copied().unwrap_or(PENDING).to_string()),
                    );
                    (rule, format!("tcp {port} from {}", labels.get(c.as_str()).copied().unwrap_or(c)))
                }
            })
            .collect();
        // A service listed twice in `allow_from` is one rule (EC2 rejects duplicates).
        let mut seen = BTreeSet::new();
        let rules: Vec<(Rule, String)> = rules.into_iter().filter(|(r, _)| seen.insert(r.clone())).collect();
        let want = want(d, rules);
        let (kind, engine) = (&kind, &engine);
        async move {
            if !*created {
                engine.converge(kind, &d.component, &d.name, &want, observed.clone()).await?;
                return Ok::<_, StepError>(None);
            }
            // A new group: all its rules are added (AWS gave it the default egress rule).
            let attributes: Vec<AttrChange> =
                want.ingress.iter().map(|(_, label)| AttrChange::new("ingress", None, Some(label.clone()))).collect();
            if let Some(group) = observed {
                let fix =
                    RuleFix { authorize: want.ingress.iter().map(|(r, _)| r.clone()).collect(), ..RuleFix::default() };
                kind.update(group, &fix).await.map_err(|e| e.on(&d.component))?;
            }
            Ok(Some((d.component.clone(), attributes)))
        }
    }))
    .await?;
    let created_rules: BTreeMap<String, Vec<AttrChange>> = created_rules.into_iter().flatten().collect();
    let mut changes: Vec<Change> = creates
        .into_changes()
        .into_iter()
        .map(|mut c| {
            if let Some(attributes) = created_rules.get(&c.resource) {
                c.attributes = attributes.clone();
            }
            c
        })
        .collect();
    changes.extend(engine.into_changes());

    Ok(GroupsResult { ids: group_ids, changes, undeclared })
}

/// How long a group deletion is retried while AWS still reports a dependency (the network
/// interfaces of a just-deleted load balancer or of stopped tasks are released slowly).
pub fn dependency_backoff() -> Backoff {
    // At most 5 s between tries: the release ends unannounced, and every second late holds the VPC.
    Backoff { initial: Duration::from_secs(1), max: Duration::from_secs(5), timeout: Duration::from_secs(900) }
}

/// Deletes every security group of the environment (found by tags): rules that reference other
/// groups are revoked at once; each group is deleted once the services and the load balancer are
/// gone ([`Gone`]), retrying while their network interfaces are still released; then
/// [`Gone::SecurityGroups`] is given.
pub async fn destroy(api: &dyn Ec2Api, ctx: &Context, backoff: Backoff) -> Result<Vec<Change>, StepError> {
    let env = ctx.names.env();
    let groups: Vec<ObservedGroup> = api
        .describe_security_groups(env, None)
        .await
        .map_err(StepError::aws("security/sg", "DescribeSecurityGroups"))?
        .into_iter()
        .filter(|g| owned_group(g, env).is_some())
        .collect();
    let holders_gone =
        async { tokio::try_join!(ctx.wait_gone(Gone::EcsServices), ctx.wait_gone(Gone::LoadBalancer)).map(drop) };
    let deleted = delete_groups(api, ctx, &groups, backoff, holders_gone).await?;
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
    if !mode.is_apply() {
        let env = ctx.names.env();
        return Ok(groups.iter().map(|g| Change::delete(owned_group(g, env).unwrap_or_default(), &g.name)).collect());
    }
    delete_groups(api, ctx, groups, backoff, async { Ok(()) }).await
}

/// Deletes `groups`: first the rules by which they reference other groups (so no group of the set
/// holds another), then each group, retrying while AWS reports a dependency (network interfaces
/// are released asynchronously). The deletions start when `holders_gone` is done. A group
/// already gone is not reported.
async fn delete_groups(
    api: &dyn Ec2Api,
    ctx: &Context,
    groups: &[ObservedGroup],
    backoff: Backoff,
    holders_gone: impl Future<Output = Result<(), StepError>>,
) -> Result<Vec<Change>, StepError> {
    let env = ctx.names.env();
    try_join_all(groups.iter().map(|g| async move {
        let component = owned_group(g, env).unwrap_or_else(|| "security/sg".into());
        let id = component.as_str();
        let ingress: Vec<Rule> = g.ingress.iter().filter(|r| r.references_group()).cloned().collect();
        let egress: Vec<Rule> = g.egress.iter().filter(|r| r.references_group()).cloned().collect();
        if !ingress.is_empty() {
            ignore_not_found(api.revoke_ingress(&g.id, &ingress).await)
                .map_err(StepError::aws(id, "RevokeSecurityGroupIngress"))?;
        }
        if !egress.is_empty() {
            ignore_not_found(api.revoke_egress(&g.id, &egress).await)
                .map_err(StepError::aws(id, "RevokeSecurityGroupEgress"))?;
        }
        Ok::<_, StepError>(())
    }))
    .await?;
    holders_gone.await?;
    let deleted = try_join_all(groups.iter().map(|g| async move {
        let component = owned_group(g, env).unwrap_or_default();
        let id = component.as_str();
        ctx.progress(ProgressEvent::Working { step: "security", resource: id, action: Action::Delete });
        let gone = retry_while(
            &format!("security group {} to lose its dependencies", g.name),
            backoff,
            |e| e.aws_error().is_some_and(|a| a.is("DependencyViolation") || a.retryable),
            || async {
                match api.delete_security_group(&g.id).await {
                    Ok(()) => Ok(true),
                    Err(e) if e.is_not_found() => Ok(false),
                    Err(e) => Err(StepError::aws(id, "DeleteSecurityGroup")(e)),
                }
            },
        )
        .await?;
        Ok::<_, StepError>(gone.then(|| Change::delete(component.clone(), g.name.clone())))
    }))
    .await?;
    Ok(deleted.into_iter().flatten().collect())
}

fn ignore_not_found(result: Result<(), AwsError>) -> Result<(), AwsError> {
    match result {
        Err(e) if e.is_not_found() => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_are_normalized_and_shown() {
        assert_eq!(
            Rule::normalized("-1", Some(-1), Some(-1), RuleSource::Cidr("0.0.0.0/0".into())),
            Rule::all(RuleSource::Cidr("0.0.0.0/0".into()))
        );
        assert_eq!(
            Rule::normalized("6", Some(22), Some(22), RuleSource::Cidr("0.0.0.0/0".into())),
            Rule::tcp(22, RuleSource::Cidr("0.0.0.0/0".into()))
        );
        assert_eq!(Rule::tcp(22, RuleSource::Cidr("0.0.0.0/0".into())).to_string(), "tcp 22 0.0.0.0/0");
        assert_eq!(Rule::all(RuleSource::Group("sg-1".into())).to_string(), "all traffic sg-1");
    }

    #[test]
    fn sdk_permissions_round_trip() {
        let rules = vec![
            Rule::tcp(80, RuleSource::Cidr("0.0.0.0/0".into())),
            Rule::tcp(9000, RuleSource::Group("sg-123".into())),
            Rule::all(RuleSource::Ipv6Cidr("::/0".into())),
        ];
        assert_eq!(rules_of(&permissions_of(&rules)), rules);
    }
}
