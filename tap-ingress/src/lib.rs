//! `tap-ingress`: the internet-facing entry of a tap environment — one application load balancer,
//! one target group per routed service, the HTTP :80 listener with its path rules, and, when a
//! certificate is configured, an HTTPS :443 listener with :80 redirecting to it.
//!
//! - **Reads** from the [`Context`]: [`NetworkOutputs`] (VPC id, public subnets) and
//!   [`SecurityOutputs`] (the ALB security group id); the config's `services[*].route` and
//!   `ingress` settings.
//! - **Adds**: [`IngressOutputs`] — load balancer ARN and DNS name, and routed service name →
//!   target group ARN (`PENDING` in plan mode for what does not exist yet).
//! - **Finds** everything by name (`tap-alb-{s}`, `tap-{short}-{s}`) and the listeners and rules
//!   through the load balancer; tags everything at creation; a second deploy makes no mutating call.
//! - **Every resource on the resource engine** ([`tap_core::resource`]): the load balancer
//!   ([`load_balancer`]), the listeners ([`listener`]), the target groups ([`target_group`]) and
//!   the rules ([`rule`]); this module only wires them (desired values from the config,
//!   concurrency, the outputs it publishes).
//! - **Prunes** what the environment owns (by its tags) and the config no longer routes to: the
//!   rule first (with the listener's other rules), then — once the services step has published
//!   its outputs, its own prune done — the target group ([`target_group`], on the resource
//!   engine), found among the region's target groups by name shape and tags. Destroy finds the
//!   target groups the same way, whatever the config says.
//! - **Quotas** ([`quota`]): what a plan's changes add (a load balancer, target groups) and what
//!   the account uses in the region, for the quota preflight.
//!
//! ```
//! use tap_core::{Config, Context, Step};
//! use tap_ingress::IngressStep;
//!
//! # async fn run(session: &tap_core::aws::AwsSession) -> Result<(), tap_core::StepError> {
//! let ctx = Context::new(Config::default());
//! // … the network and security steps write their outputs into `ctx` first …
//! let step = IngressStep::from_session(session);
//! for change in step.plan(&ctx).await? {
//!     println!("{change}");
//! }
//! # Ok(())
//! # }
//! ```
//!
//! Logical ids (what plans and progress show) are stable and computable without AWS:
//!
//! ```
//! assert_eq!(tap_ingress::listener_id(443), "ingress/listener/https");
//! assert_eq!(tap_ingress::target_group_id("frontend"), "ingress/target-group/frontend");
//! ```
//!
//! A complete run against a local emulator, with the VPC and security group made by the EC2 SDK
//! instead of the other steps: `cargo run -p tap-ingress --example ingress_alone`. The step
//! reports every existing resource it checks through
//! [`Context::progress`](tap_core::Context::progress), so progress views can count what stayed
//! unchanged.
#![forbid(unsafe_code)]

pub mod api;
pub mod listener;
pub mod load_balancer;
pub mod quota;
pub mod rule;
pub mod target_group;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::future::try_join_all;
use tap_core::outputs::{is_known, IngressOutputs, NetworkOutputs, SecurityOutputs, TrafficShift, PENDING};
use tap_core::resource::{Engine, Owned, Resource};
use tap_core::step::{Contract, Gone, OutputKind, Pruned};
use tap_core::strategy;
use tap_core::wait::{poll_until, Backoff};
use tap_core::{AttrChange, Change, Context, Mode, Step, StepError};

#[cfg(any(test, feature = "test-util"))]
pub use api::MockElbApi;
pub use api::{
    Condition, ElbApi, HealthCheck, ListenerAction, ListenerSpec, LoadBalancerSpec, ObservedListener,
    ObservedLoadBalancer, ObservedRule, ObservedTargetGroup, RuleSpec, RuleTarget, RuleUpdate, SdkElb, TargetGroupSpec,
};

/// Logical rule id → rule ARN ([`PENDING`] in plan mode for a rule to be created).
type RuleArns = BTreeMap<String, String>;
pub use listener::{ListenerKind, ListenerWant};
pub use load_balancer::{LoadBalancerKind, LoadBalancerUpdate};
pub use rule::{RuleKind, RuleWant};
pub use target_group::{TargetGroupKind, TargetGroupUpdate};

/// The step's name.
pub const STEP: &str = "ingress";
/// Logical id of the load balancer.
pub const LOAD_BALANCER_ID: &str = "ingress/load-balancer";
/// The load balancer's scheme; always sent at creation.
pub const SCHEME: &str = "internet-facing";
/// The load balancer's type.
pub const LOAD_BALANCER_TYPE: &str = "application";
/// Security policy of the HTTPS listener.
pub const TLS_POLICY: &str = "ELBSecurityPolicy-TLS13-1-2-2021-06";
/// HTTP codes a health check accepts.
pub const HEALTH_MATCHER: &str = "200-399";

/// Logical id of a target group.
pub fn target_group_id(service: &str) -> String {
    format!("ingress/target-group/{service}")
}

/// Logical id of a traffic-shifting service's alternate target group.
pub fn alternate_target_group_id(service: &str) -> String {
    format!("ingress/target-group/{service}/alternate")
}

/// Logical id of a listener (`http` for :80, `https` for :443).
pub fn listener_id(port: i32) -> String {
    match port {
        80 => "ingress/listener/http".into(),
        443 => "ingress/listener/https".into(),
        p => format!("ingress/listener/{p}"),
    }
}

/// Logical id of a listener rule forwarding to `service` (its production rule).
pub fn rule_id(port: i32, service: &str) -> String {
    format!("{}/rule/{service}", listener_id(port))
}

/// Logical id of a traffic-shifting service's test rule.
pub fn test_rule_id(port: i32, service: &str) -> String {
    format!("{}/rule/{service}/test", listener_id(port))
}

/// One service reached through the load balancer.
#[derive(Debug, Clone)]
struct Routed {
    service: String,
    target_group_name: String,
    port: i32,
    path_pattern: Option<String>,
    priority: i32,
    health_check: HealthCheck,
    deregistration_delay: i32,
    /// The alternate target group's name, when the service's strategy shifts traffic.
    alternate_target_group_name: Option<String>,
}

impl Routed {
    /// The target groups it needs: (logical id, name) of its own and, when it shifts traffic, of
    /// its alternate.
    fn target_groups(&self) -> Vec<(String, String)> {
        let mut out = vec![(target_group_id(&self.service), self.target_group_name.clone())];
        if let Some(alternate) = &self.alternate_target_group_name {
            out.push((alternate_target_group_id(&self.service), alternate.clone()));
        }
        out
    }
}

/// What the config asks for.
#[derive(Debug, Clone)]
struct Desired {
    load_balancer: LoadBalancerSpec,
    routed: Vec<Routed>,
    certificate_arn: Option<String>,
}

impl Desired {
    fn new(ctx: &Context, network: &NetworkOutputs, security: &SecurityOutputs) -> Self {
        let names = &ctx.names;
        let lb_name = names.load_balancer();
        Desired {
            load_balancer: LoadBalancerSpec {
                tags: names.tags(LOAD_BALANCER_ID, &lb_name),
                name: lb_name,
                scheme: SCHEME.into(),
                subnet_ids: network.public_subnets.iter().map(|s| s.id.clone()).collect(),
                security_group_ids: vec![security.alb_security_group_id.clone()],
            },
            routed: Self::routed(ctx),
            certificate_arn: ctx.config.ingress.certificate_arn.clone(),
        }
    }

    /// The routed services: known from the config alone, before any input arrives.
    fn routed(ctx: &Context) -> Vec<Routed> {
        let names = &ctx.names;
        let ingress = &ctx.config.ingress;
        ctx.config
            .services
            .iter()
            .filter_map(|s| {
                let route = s.route.as_ref()?;
                Some(Routed {
                    service: s.name.clone(),
                    target_group_name: names.target_group(&route.short_name),
                    port: i32::from(s.port),
                    path_pattern: route.path_pattern.clone(),
                    priority: route.priority,
                    health_check: HealthCheck {
                        path: route.health_check_path.clone(),
                        healthy_threshold: ingress.healthy_threshold,
                        unhealthy_threshold: ingress.unhealthy_threshold,
                        interval_seconds: ingress.health_check_interval,
                        matcher: HEALTH_MATCHER.into(),
                    },
                    deregistration_delay: ingress.deregistration_delay_seconds,
                    alternate_target_group_name: ctx
                        .config
                        .strategy_of(s)
                        .strategy
                        .shifts_traffic()
                        .then(|| names.alternate_target_group(&route.short_name)),
                })
            })
            .collect()
    }
}

/// The load balancer the listeners go on.
#[derive(Debug, Clone)]
struct LoadBalancerRef {
    arn: String,
    dns_name: String,
    /// Created by this run (or to be created, in plan mode): it has no listeners yet.
    created: bool,
}

/// One listener tap wants, with its rules.
#[derive(Debug, Clone)]
struct DesiredListener {
    spec: ListenerSpec,
    /// (logical id, rule).
    rules: Vec<(String, RuleSpec)>,
}

/// A rule's display name: the listener's and the rule's conditions.
fn rule_name(listener_name: &str, rule: &RuleSpec) -> String {
    match &rule.header {
        None => format!("{listener_name} {}", rule.path_pattern),
        Some((name, value)) => format!("{listener_name} {} [{name}: {value}]", rule.path_pattern),
    }
}

/// Sorted copy, for comparing id sets whose order AWS does not keep.
pub(crate) fn sorted(ids: &[String]) -> Vec<String> {
    let mut v = ids.to_vec();
    v.sort();
    v.dedup();
    v
}

/// `[PENDING]` when any id is not known yet, else the sorted ids.
pub(crate) fn desired_ids(ids: &[String]) -> Vec<String> {
    if ids.is_empty() || ids.iter().any(|id| !is_known(id)) {
        vec![PENDING.to_owned()]
    } else {
        sorted(ids)
    }
}

pub(crate) fn show_actions(actions: &[ListenerAction]) -> String {
    let parts: Vec<String> = actions
        .iter()
        .map(|a| match a {
            ListenerAction::Forward { target_group_arn } => format!("forward to {target_group_arn}"),
            ListenerAction::Redirect { protocol, port, status_code } => format!(
                "redirect to {}:{} ({})",
                protocol.as_deref().unwrap_or("#{protocol}"),
                port.as_deref().unwrap_or("#{port}"),
                status_code.as_deref().unwrap_or("?")
            ),
            ListenerAction::Weighted { target_groups } => {
                let shares: Vec<String> = target_groups.iter().map(|(arn, w)| format!("{arn} ({w})")).collect();
                format!("forward to {}", shares.join(" + "))
            }
            ListenerAction::Other { kind } => kind.clone(),
        })
        .collect();
    parts.join(", ")
}

pub(crate) fn show_conditions(conditions: &[Condition]) -> String {
    let parts: Vec<String> = conditions.iter().map(|c| format!("{} {}", c.field, c.values.join("|"))).collect();
    parts.join(", ")
}

pub(crate) fn push_attr(attrs: &mut Vec<AttrChange>, attribute: &str, differs: bool, old: String, new: String) {
    if differs {
        attrs.push(AttrChange::new(attribute, Some(old), Some(new)));
    }
}

/// The ingress step: load balancer, target groups, listeners and rules.
pub struct IngressStep {
    api: Arc<dyn ElbApi>,
    backoff: Backoff,
}

impl IngressStep {
    /// A step over `api`.
    pub fn new(api: Arc<dyn ElbApi>) -> Self {
        IngressStep { api, backoff: Backoff::with_timeout(Duration::from_secs(600)) }
    }

    /// A step over the real ELBv2 client of `clients`.
    pub fn from_session(session: &tap_core::aws::AwsSession) -> Self {
        Self::new(Arc::new(SdkElb(tap_core::sdk_client!(aws_sdk_elasticloadbalancingv2, session))))
    }

    /// Replaces how the step polls and retries (waiting for the load balancer to become active or
    /// to disappear, retrying a target group still in use).
    pub fn with_backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// The engine of this step, whose deletes AWS refuses while something holds the resource (a
    /// target group a rule still forwards to) are sent again within this step's backoff.
    fn engine<'c>(&self, ctx: &'c Context, mode: Mode) -> Engine<'c> {
        Engine::new(ctx, STEP, mode).with_hold_backoff(self.backoff)
    }

    fn load_balancer_kind(&self) -> LoadBalancerKind<'_> {
        LoadBalancerKind::new(&*self.api, self.backoff)
    }

    async fn find_load_balancer(&self, name: &str) -> Result<Option<ObservedLoadBalancer>, StepError> {
        self.load_balancer_kind().find_by_name(name).await
    }

    /// The load balancer, on the engine: created when missing, subnets and security groups
    /// converged (once it is active). Its ARN and DNS name are `PENDING` in plan mode when it
    /// does not exist.
    async fn converge_load_balancer(
        &self,
        engine: &Engine<'_>,
        desired: &Desired,
        observed: Option<ObservedLoadBalancer>,
    ) -> Result<LoadBalancerRef, StepError> {
        let spec = &desired.load_balancer;
        let kind = self.load_balancer_kind();
        let created = observed.is_none();
        // It cannot be modified before it is active.
        if let Some(lb) = &observed {
            if engine.mode().is_apply() && !lb.is_active() && matches!(kind.diff(spec, lb), Ok(Some(_))) {
                kind.wait_until_active(&spec.name).await?;
            }
        }
        let now = engine.converge(&kind, LOAD_BALANCER_ID, &spec.name, spec, observed).await?;
        Ok(match now {
            Some(lb) => LoadBalancerRef { arn: lb.arn, dns_name: lb.dns_name, created },
            None => LoadBalancerRef { arn: PENDING.into(), dns_name: PENDING.into(), created: true },
        })
    }

    /// One target group, on the engine: created when missing, health check and deregistration
    /// delay converged (the delay of an existing group read with one
    /// `DescribeTargetGroupAttributes`, the only attribute tap observes). Returns
    /// its ARN ([`PENDING`] in plan mode when it would be created).
    async fn converge_target_group(
        &self,
        engine: &Engine<'_>,
        ctx: &Context,
        vpc_id: &str,
        routed: &Routed,
        (id, name): (&str, &str),
        observed: Option<&ObservedTargetGroup>,
    ) -> Result<String, StepError> {
        let (id, name) = (id.to_owned(), name.to_owned());
        let name = &name;
        let spec = TargetGroupSpec {
            name: name.clone(),
            port: routed.port,
            vpc_id: vpc_id.to_owned(),
            health_check: routed.health_check.clone(),
            deregistration_delay: routed.deregistration_delay,
            tags: ctx.names.tags(&id, name),
        };
        let observed = match observed {
            Some(tg) => {
                let delay = self
                    .api
                    .deregistration_delay(&tg.arn)
                    .await
                    .map_err(StepError::aws(id.as_str(), "DescribeTargetGroupAttributes"))?;
                Some(ObservedTargetGroup { deregistration_delay: delay, ..tg.clone() })
            }
            None => None,
        };
        let kind = TargetGroupKind::new(&*self.api);
        let now = engine.converge(&kind, &id, name, &spec, observed).await?;
        Ok(now.map_or_else(|| PENDING.to_owned(), |tg| tg.arn))
    }

    fn desired_listeners(
        ctx: &Context,
        desired: &Desired,
        target_group_arns: &BTreeMap<String, String>,
    ) -> Vec<DesiredListener> {
        let lb_name = &desired.load_balancer.name;
        let Some(default) = desired.routed.iter().find(|r| r.path_pattern.is_none()) else {
            return vec![];
        };
        let arn_of = |id: &str| target_group_arns.get(id).cloned().unwrap_or_else(|| PENDING.into());
        let forward_default = ListenerAction::forward(arn_of(&target_group_id(&default.service)));
        let rules_on = |port: i32| -> Vec<(String, RuleSpec)> {
            let listener_name = format!("{lb_name}:{port}");
            let mut rules = Vec::new();
            for r in &desired.routed {
                let shifts = r.alternate_target_group_name.is_some();
                let path_priority = r.path_pattern.as_ref().map(|_| r.priority);
                let (production, test) = strategy::rule_priorities(path_priority, shifts);
                let target = match shifts {
                    false => RuleTarget::One(arn_of(&target_group_id(&r.service))),
                    true => RuleTarget::Shifting {
                        primary: arn_of(&target_group_id(&r.service)),
                        alternate: arn_of(&alternate_target_group_id(&r.service)),
                    },
                };
                // The listener's default service shifts on a rule matching every path.
                let path_pattern = r.path_pattern.clone().unwrap_or_else(|| "/*".to_owned());
                let mut rule = |id: String, priority: i32, header: Option<(String, String)>| {
                    let mut spec = RuleSpec {
                        priority,
                        path_pattern: path_pattern.clone(),
                        header,
                        target: target.clone(),
                        tags: vec![],
                    };
                    spec.tags = ctx.names.tags(&id, &rule_name(&listener_name, &spec));
                    rules.push((id, spec));
                };
                if let Some(priority) = production {
                    rule(rule_id(port, &r.service), priority, None);
                }
                if let Some(priority) = test {
                    let header = (strategy::TEST_TRAFFIC_HEADER.to_owned(), strategy::TEST_TRAFFIC_VALUE.to_owned());
                    rule(test_rule_id(port, &r.service), priority, Some(header));
                }
            }
            rules
        };
        let listener = |port: i32, protocol: &str, action: ListenerAction, https: bool, rules| {
            let name = format!("{lb_name}:{port}");
            DesiredListener {
                spec: ListenerSpec {
                    port,
                    protocol: protocol.into(),
                    certificate_arn: if https { desired.certificate_arn.clone() } else { None },
                    ssl_policy: https.then(|| TLS_POLICY.to_owned()),
                    default_action: action,
                    tags: ctx.names.tags(&listener_id(port), &name),
                },
                rules,
            }
        };
        match &desired.certificate_arn {
            None => vec![listener(80, "HTTP", forward_default, false, rules_on(80))],
            Some(_) => vec![
                listener(80, "HTTP", ListenerAction::redirect_to_https(), false, vec![]),
                listener(443, "HTTPS", forward_default, true, rules_on(443)),
            ],
        }
    }

    /// The listeners of the load balancer and their rules, on the engine: the :80/:443 listeners
    /// the config no longer wants are deleted, the wanted ones converged (and adopted by port after
    /// a create whose outcome is unknown).
    async fn converge_listeners(
        &self,
        ctx: &Context,
        lb_name: &str,
        lb: &LoadBalancerRef,
        wanted: &[DesiredListener],
        mode: Mode,
    ) -> Result<(Vec<Change>, RuleArns), StepError> {
        let lb_arn = lb.arn.as_str();
        let observed = if lb.created || !is_known(lb_arn) {
            vec![]
        } else {
            self.api.list_listeners(lb_arn).await.map_err(StepError::aws(LOAD_BALANCER_ID, "DescribeListeners"))?
        };
        let wanted_ports: BTreeSet<i32> = wanted.iter().map(|l| l.spec.port).collect();
        let kind = ListenerKind::new(&*self.api);
        let prune = self.engine(ctx, mode);
        for l in observed.iter().filter(|l| l.port.is_some_and(|p| (p == 80 || p == 443) && !wanted_ports.contains(&p)))
        {
            let port = l.port.unwrap_or_default();
            prune.delete(&kind, &listener_id(port), &format!("{lb_name}:{port}"), l).await?;
        }
        let mut changes = prune.into_changes();
        let per_listener = try_join_all(wanted.iter().map(|w| {
            let found = observed.iter().find(|l| l.port == Some(w.spec.port)).cloned();
            self.converge_listener(ctx, lb_name, lb_arn, w, found, mode)
        }))
        .await?;
        let mut arns = RuleArns::new();
        for (listener_changes, listener_arns) in per_listener {
            changes.extend(listener_changes);
            arns.extend(listener_arns);
        }
        Ok((changes, arns))
    }

    /// One listener, on the engine, then its rules: all created on a new listener, converged on
    /// an existing one.
    async fn converge_listener(
        &self,
        ctx: &Context,
        lb_name: &str,
        lb_arn: &str,
        wanted: &DesiredListener,
        observed: Option<ObservedListener>,
        mode: Mode,
    ) -> Result<(Vec<Change>, RuleArns), StepError> {
        let spec = &wanted.spec;
        let id = listener_id(spec.port);
        let name = format!("{lb_name}:{}", spec.port);
        let (kind, engine) = (ListenerKind::new(&*self.api), self.engine(ctx, mode));
        let want = ListenerWant { load_balancer_arn: lb_arn.to_owned(), spec: spec.clone() };
        let existed = observed.is_some();
        let now = engine.converge(&kind, &id, &name, &want, observed).await?;
        let mut changes = engine.into_changes();
        let arns = match now {
            Some(listener) if existed => {
                let rules = self.api.list_rules(&listener.arn).await.map_err(StepError::aws(&id, "DescribeRules"))?;
                let (rule_changes, arns) =
                    self.converge_rules(ctx, &name, spec.port, &listener.arn, wanted, &rules, mode).await?;
                changes.extend(rule_changes);
                arns
            }
            now => {
                // A new listener has no rule (`have` is `None`): each one is created (in plan
                // mode: listed).
                let arn = now.map_or_else(|| PENDING.to_owned(), |l| l.arn);
                let (kind, engine) = (RuleKind::new(&*self.api), self.engine(ctx, mode));
                let created = try_join_all(wanted.rules.iter().map(|(rid, rule)| {
                    let want = RuleWant { listener_arn: arn.clone(), spec: rule.clone() };
                    let rname = rule_name(&name, rule);
                    let (kind, engine) = (&kind, &engine);
                    async move {
                        let now = engine.converge(kind, rid, &rname, &want, None).await?;
                        Ok::<_, StepError>((rid.clone(), now.map_or_else(|| PENDING.to_owned(), |r| r.arn)))
                    }
                }))
                .await?;
                changes.extend(engine.into_changes());
                created.into_iter().collect()
            }
        };
        Ok((changes, arns))
    }

    /// The path rules of one listener, on the engine: matched by priority, modified when their
    /// path or target differs, created when missing; rules tap created that the config no longer
    /// wants (at a priority no rule wants, tagged as this environment's) are deleted first.
    #[allow(clippy::too_many_arguments)]
    async fn converge_rules(
        &self,
        ctx: &Context,
        listener_name: &str,
        port: i32,
        listener_arn: &str,
        wanted: &DesiredListener,
        observed: &[ObservedRule],
        mode: Mode,
    ) -> Result<(Vec<Change>, RuleArns), StepError> {
        let listener = listener_id(port);
        let existing: Vec<&ObservedRule> = observed.iter().filter(|r| !r.is_default && r.priority.is_some()).collect();
        let wanted_priorities: BTreeSet<i32> = wanted.rules.iter().map(|(_, r)| r.priority).collect();
        let extra: Vec<&ObservedRule> =
            existing.iter().copied().filter(|r| r.priority.is_some_and(|p| !wanted_priorities.contains(&p))).collect();
        let kind = RuleKind::new(&*self.api);
        let engine = self.engine(ctx, mode);

        if !extra.is_empty() {
            let arns: Vec<String> = extra.iter().map(|r| r.arn.clone()).collect();
            let tags = self
                .api
                .describe_tags(&arns)
                .await
                .map_err(StepError::aws(format!("{listener}/rules"), "DescribeTags"))?;
            let ours: Vec<Owned<ObservedRule>> = extra
                .iter()
                .filter_map(|r| {
                    let fallback = || format!("{listener}/rule/priority-{}", r.priority.unwrap_or_default());
                    let id = tap_core::resource::owned(tags.get(&r.arn)?, ctx.names.env(), fallback)?;
                    let name = format!("{listener_name} {}", show_conditions(&r.conditions));
                    Some(Owned { id, name, observed: (*r).clone() })
                })
                .collect();
            engine.prune(&kind, ours, &BTreeSet::new()).await?;
        }

        let arns = try_join_all(wanted.rules.iter().map(|(id, spec)| {
            let name = rule_name(listener_name, spec);
            let have = existing.iter().find(|r| r.priority == Some(spec.priority)).map(|r| (*r).clone());
            let want = RuleWant { listener_arn: listener_arn.to_owned(), spec: spec.clone() };
            let (kind, engine) = (&kind, &engine);
            async move {
                let now = engine.converge(kind, id, &name, &want, have).await?;
                Ok::<_, StepError>((id.clone(), now.map_or_else(|| PENDING.to_owned(), |r| r.arn)))
            }
        }))
        .await?;
        Ok((engine.into_changes(), arns.into_iter().collect()))
    }

    async fn converge(&self, ctx: &Context, mode: Mode) -> Result<Vec<Change>, StepError> {
        // The reads need only names, so they run while the inputs are still coming; the target
        // groups then need only the VPC, the load balancer also its subnets and security group.
        let routed = Desired::routed(ctx);
        let tg_names: Vec<String> = routed.iter().flat_map(|r| r.target_groups()).map(|(_, name)| name).collect();
        let lb_name = ctx.names.load_balancer();
        // The region's target groups, listed once: the routed ones by name, and the environment's
        // that the config no longer declares.
        let all_tgs = async {
            self.api.list_target_groups().await.map_err(StepError::aws("ingress/target-groups", "DescribeTargetGroups"))
        };
        let observe = async {
            let (lb, all) = tokio::try_join!(self.find_load_balancer(&lb_name), all_tgs)?;
            // The configured groups that exist, with their tags (whose they are: `tap-api-x-dev` is
            // both `dev`'s route `api-x` and `x-dev`'s route `api`), in one DescribeTags for up to
            // 20 groups, while the network's outputs are still coming.
            let configured: Vec<ObservedTargetGroup> =
                all.iter().filter(|tg| tg_names.contains(&tg.name)).cloned().collect();
            let untagged: Vec<String> =
                configured.iter().filter(|tg| tg.tags.is_none()).map(|tg| tg.arn.clone()).collect();
            let mut tags = match untagged.is_empty() {
                true => BTreeMap::new(),
                false => self
                    .api
                    .describe_tags(&untagged)
                    .await
                    .map_err(StepError::aws("ingress/target-groups", "DescribeTags"))?,
            };
            let configured = configured
                .into_iter()
                .map(|tg| match tg.tags {
                    Some(_) => tg,
                    None => ObservedTargetGroup { tags: Some(tags.remove(&tg.arn).unwrap_or_default()), ..tg },
                })
                .collect::<Vec<_>>();
            Ok::<_, StepError>((lb, all, configured))
        };
        let ((observed_lb, all_tgs, observed_tgs), network) = tokio::try_join!(observe, ctx.wait::<NetworkOutputs>())?;

        let engine = self.engine(ctx, mode);
        let target_groups = async {
            let wanted: Vec<(&Routed, (String, String))> =
                routed.iter().flat_map(|r| r.target_groups().into_iter().map(move |tg| (r, tg))).collect();
            let (engine, vpc_id) = (&engine, network.vpc_id.as_str());
            let results = try_join_all(wanted.iter().map(|(r, (id, name))| {
                let found = observed_tgs.iter().find(|tg| &tg.name == name);
                async move {
                    let arn = self.converge_target_group(engine, ctx, vpc_id, r, (id, name), found).await?;
                    Ok::<_, StepError>((id.clone(), arn))
                }
            }))
            .await?;
            Ok::<_, StepError>(results)
        };
        let load_balancer = async {
            // Any part of the output will do: the groups come before the roles (see `Context::wait_for`).
            let security: SecurityOutputs = ctx.wait_for(|_| true).await?;
            let desired = Desired::new(ctx, &network, &security);
            let engine = self.engine(ctx, mode);
            let lb = self.converge_load_balancer(&engine, &desired, observed_lb).await?;
            Ok::<_, StepError>((desired, lb, engine.into_changes()))
        };
        let ((desired, lb, mut changes), tg_results) = tokio::try_join!(load_balancer, target_groups)?;

        // Logical id → ARN of every wanted target group.
        let tg_arns: BTreeMap<String, String> = tg_results.into_iter().collect();
        changes.extend(engine.changes());

        let wanted = Self::desired_listeners(ctx, &desired, &tg_arns);
        // Rules of services no longer routed are deleted here, before their target groups.
        let (listener_changes, rule_arns) =
            self.converge_listeners(ctx, &desired.load_balancer.name, &lb, &wanted, mode).await?;
        changes.extend(listener_changes);

        let arn = |map: &BTreeMap<String, String>, id: &str| map.get(id).cloned().unwrap_or_else(|| PENDING.into());
        let rules_port = wanted.iter().rev().find(|l| !l.rules.is_empty()).map_or(80, |l| l.spec.port);
        let traffic_shifts = desired
            .routed
            .iter()
            .filter(|r| r.alternate_target_group_name.is_some())
            .map(|r| {
                let shift = TrafficShift {
                    alternate_target_group_arn: arn(&tg_arns, &alternate_target_group_id(&r.service)),
                    production_listener_rule_arn: arn(&rule_arns, &rule_id(rules_port, &r.service)),
                    test_listener_rule_arn: arn(&rule_arns, &test_rule_id(rules_port, &r.service)),
                };
                (r.service.clone(), shift)
            })
            .collect();
        ctx.put(IngressOutputs {
            load_balancer_arn: lb.arn,
            dns_name: lb.dns_name,
            target_group_arns: desired
                .routed
                .iter()
                .map(|r| (r.service.clone(), arn(&tg_arns, &target_group_id(&r.service))))
                .collect(),
            traffic_shifts,
        });

        // Prune: the environment's target groups the config no longer routes to.
        let kind = TargetGroupKind::new(&*self.api);
        let declared_names: BTreeSet<String> = tg_names.iter().cloned().collect();
        let undeclared = kind.owned_undeclared(ctx, &all_tgs, &declared_names).await?;
        if !undeclared.is_empty() {
            if mode.is_apply() {
                // A removed service still uses its target group until the services step has
                // deleted it.
                ctx.wait_pruned(Pruned::Services).await?;
            }
            let prune = self.engine(ctx, mode);
            let declared: BTreeSet<String> = routed.iter().flat_map(|r| r.target_groups()).map(|(id, _)| id).collect();
            prune.prune(&kind, undeclared, &declared).await?;
            changes.extend(prune.into_changes());
        }
        Ok(changes)
    }
}

#[async_trait]
impl Step for IngressStep {
    fn contract(&self) -> Contract {
        Contract::new(STEP, OutputKind::Ingress)
            .reads(&[OutputKind::Network, OutputKind::Security])
            .prune_waits(&[Pruned::Services])
            .destroy_waits(&[Gone::EcsServices])
            .gives(&[Gone::LoadBalancer])
    }

    #[tracing::instrument(name = "ingress.plan", skip_all)]
    async fn plan(&self, ctx: &Context) -> Result<Vec<Change>, StepError> {
        self.converge(ctx, Mode::Plan).await
    }

    #[tracing::instrument(name = "ingress.apply", skip_all)]
    async fn apply(&self, ctx: &Context) -> Result<Vec<Change>, StepError> {
        self.converge(ctx, Mode::Apply).await
    }

    /// Deletes rules and listeners, then the load balancer (waiting until it is gone, then giving
    /// [`Gone::LoadBalancer`]), and, once the ECS services are gone too, the target groups found
    /// meanwhile (retrying while AWS still reports them in use). Found by name and tags.
    #[tracing::instrument(name = "ingress.destroy", skip_all)]
    async fn destroy(&self, ctx: &Context) -> Result<Vec<Change>, StepError> {
        let lb_name = ctx.names.load_balancer();
        let routes: Vec<(String, String)> = ctx
            .config
            .services
            .iter()
            .filter_map(|s| s.route.as_ref().map(|r| (s.name.clone(), ctx.names.target_group(&r.short_name))))
            .collect();
        let tg_names: Vec<String> = routes.iter().map(|(_, n)| n.clone()).collect();

        let kind = TargetGroupKind::new(&*self.api);
        // The load balancer goes at once (its listeners and rules first); the target groups are
        // found meanwhile and deleted once it and the services using them are gone.
        let load_balancer = async {
            let mut changes = Vec::new();
            if let Some(lb) = self.find_load_balancer(&lb_name).await? {
                let listeners = match self.api.list_listeners(&lb.arn).await {
                    Ok(l) => l,
                    Err(e) if e.is_not_found() => vec![],
                    Err(e) => return Err(StepError::aws(LOAD_BALANCER_ID, "DescribeListeners")(e)),
                };
                let (listener_kind, rule_kind) = (ListenerKind::new(&*self.api), RuleKind::new(&*self.api));
                let per_listener = try_join_all(listeners.iter().map(|l| {
                    let (lb_name, listener_kind, rule_kind) = (&lb_name, &listener_kind, &rule_kind);
                    async move {
                        let port = l.port.unwrap_or_default();
                        let id = listener_id(port);
                        let name = format!("{lb_name}:{port}");
                        let rules = match self.api.list_rules(&l.arn).await {
                            Ok(r) => r,
                            Err(e) if e.is_not_found() => vec![],
                            Err(e) => return Err(StepError::aws(&id, "DescribeRules")(e)),
                        };
                        // One already gone is no change.
                        let engine = self.engine(ctx, Mode::Apply);
                        try_join_all(rules.iter().filter(|r| !r.is_default).map(|r| {
                            let rid = format!("{id}/rule/priority-{}", r.priority.unwrap_or_default());
                            let rname = format!("{name} {}", show_conditions(&r.conditions));
                            let engine = &engine;
                            async move { engine.delete(rule_kind, &rid, &rname, r).await }
                        }))
                        .await?;
                        engine.delete(listener_kind, &id, &name, l).await?;
                        Ok::<_, StepError>(engine.into_changes())
                    }
                }))
                .await?;
                changes.extend(per_listener.into_iter().flatten());

                let engine = self.engine(ctx, Mode::Apply);
                engine.delete(&self.load_balancer_kind(), LOAD_BALANCER_ID, &lb_name, &lb).await?;
                changes.extend(engine.into_changes());
                poll_until(&format!("load balancer {lb_name} deletion"), self.backoff, || async {
                    Ok(self.find_load_balancer(&lb_name).await?.is_none().then_some(()))
                })
                .await?;
                tracing::info!(name = %lb_name, "load balancer deleted");
            }

            ctx.give(Gone::LoadBalancer);
            Ok::<_, StepError>(changes)
        };
        let target_groups = async {
            // Every target group of the environment: those the config names, and the others its
            // tags say it owns (a service removed from the config since).
            let all = self
                .api
                .list_target_groups()
                .await
                .map_err(StepError::aws("ingress/target-groups", "DescribeTargetGroups"))?;
            let declared: BTreeSet<String> = tg_names.iter().cloned().collect();
            let mut doomed: Vec<Owned<ObservedTargetGroup>> = all
                .iter()
                .filter_map(|tg| {
                    let (service, _) = routes.iter().find(|(_, n)| *n == tg.name)?;
                    Some(Owned { id: target_group_id(service), name: tg.name.clone(), observed: tg.clone() })
                })
                .collect();
            doomed.extend(kind.owned_undeclared(ctx, &all, &declared).await?);
            Ok::<_, StepError>(doomed)
        };
        let (mut changes, doomed) = tokio::try_join!(load_balancer, target_groups)?;
        if !doomed.is_empty() {
            ctx.wait_gone(Gone::EcsServices).await?;
        }
        // One already gone is no change.
        let engine = self.engine(ctx, Mode::Apply);
        try_join_all(doomed.iter().map(|o| engine.delete(&kind, &o.id, &o.name, &o.observed))).await?;
        changes.extend(engine.into_changes());
        Ok(changes)
    }
}

#[cfg(test)]
mod tests;
