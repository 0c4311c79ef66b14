//! The narrow seam over Elastic Load Balancing v2: exactly the calls the ingress step makes, with
//! small domain types instead of SDK types, and one implementation over the real client.

use std::collections::BTreeMap;

use async_trait::async_trait;
use aws_sdk_elasticloadbalancingv2 as elbv2;
use elbv2::types::{
    Action, ActionTypeEnum, Certificate, ForwardActionConfig, HttpHeaderConditionConfig, IpAddressType,
    LoadBalancerSchemeEnum, LoadBalancerTypeEnum, Matcher, PathPatternConditionConfig, ProtocolEnum,
    RedirectActionConfig, RedirectActionStatusCodeEnum, RuleCondition, TargetGroupAttribute, TargetGroupTuple,
    TargetTypeEnum,
};
use tap_core::error::IfFound;
use tap_core::idempotent::NoBlindRetry;
use tap_core::naming::Tag;
use tap_core::AwsError;

/// A load balancer as AWS reports it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ObservedLoadBalancer {
    /// ARN.
    pub arn: String,
    /// DNS name.
    pub dns_name: String,
    /// `internet-facing` or `internal` (`None` when AWS reports none).
    pub scheme: Option<String>,
    /// `application`, `network` or `gateway`.
    pub lb_type: Option<String>,
    /// `provisioning`, `active`, `active_impaired` or `failed`.
    pub state: Option<String>,
    /// VPC id.
    pub vpc_id: Option<String>,
    /// Subnet ids, one per availability zone.
    pub subnet_ids: Vec<String>,
    /// Security group ids.
    pub security_group_ids: Vec<String>,
}

impl ObservedLoadBalancer {
    /// Whether the load balancer is `active`.
    pub fn is_active(&self) -> bool {
        self.state.as_deref() == Some("active")
    }
}

/// What `CreateLoadBalancer` sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadBalancerSpec {
    /// Name (32 characters at most).
    pub name: String,
    /// Always sent: `internet-facing`.
    pub scheme: String,
    /// Public subnet ids.
    pub subnet_ids: Vec<String>,
    /// Security group ids.
    pub security_group_ids: Vec<String>,
    /// Tags applied at creation.
    pub tags: Vec<Tag>,
}

/// The health-check settings of a target group that tap converges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    /// Path requested, e.g. `/health`.
    pub path: String,
    /// Consecutive successes before a target is healthy.
    pub healthy_threshold: i32,
    /// Consecutive failures before a target is unhealthy.
    pub unhealthy_threshold: i32,
    /// Seconds between checks.
    pub interval_seconds: i32,
    /// HTTP codes that count as success, e.g. `200-399`.
    pub matcher: String,
}

/// A target group as AWS reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedTargetGroup {
    /// ARN.
    pub arn: String,
    /// Name.
    pub name: String,
    /// Traffic port.
    pub port: Option<i32>,
    /// Traffic protocol, e.g. `HTTP`.
    pub protocol: Option<String>,
    /// Target type, e.g. `ip`.
    pub target_type: Option<String>,
    /// VPC id.
    pub vpc_id: Option<String>,
    /// Health-check settings (absent fields read as empty / 0).
    pub health_check: HealthCheck,
    /// The attribute `deregistration_delay.timeout_seconds`: `None` until read
    /// (`DescribeTargetGroupAttributes`; `DescribeTargetGroups` does not report it) or set.
    pub deregistration_delay: Option<i32>,
    /// Its tags, when already read (`DescribeTags`; `DescribeTargetGroups` does not report them).
    pub tags: Option<Vec<Tag>>,
}

/// What `CreateTargetGroup` sends (target type `ip`, protocol HTTP).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetGroupSpec {
    /// Name (32 characters at most).
    pub name: String,
    /// Traffic port (the service's container port).
    pub port: i32,
    /// VPC id.
    pub vpc_id: String,
    /// Health-check settings.
    pub health_check: HealthCheck,
    /// Seconds a deregistering target drains (`deregistration_delay.timeout_seconds`).
    pub deregistration_delay: i32,
    /// Tags applied at creation.
    pub tags: Vec<Tag>,
}

/// A listener or rule action, reduced to what tap compares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenerAction {
    /// Forward to one target group.
    Forward {
        /// Target group ARN.
        target_group_arn: String,
    },
    /// Redirect (tap uses it for HTTP → HTTPS).
    Redirect {
        /// Target protocol, e.g. `HTTPS`.
        protocol: Option<String>,
        /// Target port, e.g. `443`.
        port: Option<String>,
        /// `HTTP_301` or `HTTP_302`.
        status_code: Option<String>,
    },
    /// Forward to several target groups by weight (a traffic-shifting service's rules: ECS moves
    /// the weights during a deployment).
    Weighted {
        /// (target group ARN, weight), in AWS's order.
        target_groups: Vec<(String, i32)>,
    },
    /// Anything else (fixed response, authentication…), by type.
    Other {
        /// Action type as AWS names it.
        kind: String,
    },
}

impl ListenerAction {
    /// Forward to `target_group_arn`.
    pub fn forward(target_group_arn: impl Into<String>) -> Self {
        ListenerAction::Forward { target_group_arn: target_group_arn.into() }
    }

    /// Permanent redirect to HTTPS on port 443, keeping host, path and query.
    pub fn redirect_to_https() -> Self {
        ListenerAction::Redirect {
            protocol: Some("HTTPS".into()),
            port: Some("443".into()),
            status_code: Some("HTTP_301".into()),
        }
    }
}

/// A listener as AWS reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedListener {
    /// ARN.
    pub arn: String,
    /// Port.
    pub port: Option<i32>,
    /// Protocol, e.g. `HTTP`.
    pub protocol: Option<String>,
    /// Default certificate ARN (HTTPS).
    pub certificate_arn: Option<String>,
    /// Security policy (HTTPS).
    pub ssl_policy: Option<String>,
    /// Default actions, in order.
    pub default_actions: Vec<ListenerAction>,
}

/// What `CreateListener` / `ModifyListener` send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerSpec {
    /// Port.
    pub port: i32,
    /// `HTTP` or `HTTPS`.
    pub protocol: String,
    /// Default certificate (HTTPS only).
    pub certificate_arn: Option<String>,
    /// Security policy (HTTPS only).
    pub ssl_policy: Option<String>,
    /// The one default action.
    pub default_action: ListenerAction,
    /// Tags applied at creation.
    pub tags: Vec<Tag>,
}

/// One rule condition: its field and values, e.g. `path-pattern` = [`/api/*`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    /// Field, e.g. `path-pattern`.
    pub field: String,
    /// Values.
    pub values: Vec<String>,
}

/// A listener rule as AWS reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedRule {
    /// ARN.
    pub arn: String,
    /// Priority; `None` for the listener's default rule.
    pub priority: Option<i32>,
    /// Whether this is the default rule (it cannot be deleted or modified as a rule).
    pub is_default: bool,
    /// Conditions.
    pub conditions: Vec<Condition>,
    /// Actions, in order.
    pub actions: Vec<ListenerAction>,
}

/// Where a rule forwards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuleTarget {
    /// One target group.
    One(String),
    /// A traffic-shifting service's two target groups. Which one gets the traffic (the weights)
    /// is ECS's to move during a deployment: tap compares only the pair, and writes all the
    /// weight on `primary` only when it writes the pair.
    Shifting {
        /// The service's target group.
        primary: String,
        /// Its alternate target group.
        alternate: String,
    },
}

impl RuleTarget {
    /// The action tap writes.
    pub fn action(&self) -> ListenerAction {
        match self {
            RuleTarget::One(arn) => ListenerAction::forward(arn),
            RuleTarget::Shifting { primary, alternate } => {
                ListenerAction::Weighted { target_groups: vec![(primary.clone(), 100), (alternate.clone(), 0)] }
            }
        }
    }

    /// Whether `actions` forward where this target says, whatever ECS made of the weights.
    pub fn matches(&self, actions: &[ListenerAction]) -> bool {
        match (self, actions) {
            (RuleTarget::One(arn), [ListenerAction::Forward { target_group_arn }]) => arn == target_group_arn,
            (RuleTarget::Shifting { primary, alternate }, [ListenerAction::Weighted { target_groups }]) => {
                let mut have: Vec<&str> = target_groups.iter().map(|(arn, _)| arn.as_str()).collect();
                have.sort_unstable();
                let mut want = [primary.as_str(), alternate.as_str()];
                want.sort_unstable();
                have == want
            }
            _ => false,
        }
    }
}

/// What `CreateRule` / `ModifyRule` send: a path-pattern condition (and, for a test route, a
/// header condition) forwarding to a target group or a traffic-shifting pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleSpec {
    /// Priority (unique per listener).
    pub priority: i32,
    /// Path pattern, e.g. `/api/*`.
    pub path_pattern: String,
    /// A header the request must carry, (name, value): the test route of a traffic-shifting
    /// service.
    pub header: Option<(String, String)>,
    /// Where it forwards.
    pub target: RuleTarget,
    /// Tags applied at creation.
    pub tags: Vec<Tag>,
}

impl RuleSpec {
    /// The conditions this rule has in AWS, sorted by field (AWS keeps no order).
    pub fn conditions(&self) -> Vec<Condition> {
        let mut c = vec![Condition { field: "path-pattern".into(), values: vec![self.path_pattern.clone()] }];
        if let Some((name, value)) = &self.header {
            c.push(Condition { field: "http-header".into(), values: vec![format!("{name}={value}")] });
        }
        c.sort_by(|a, b| a.field.cmp(&b.field));
        c
    }

    /// The actions tap writes.
    pub fn actions(&self) -> Vec<ListenerAction> {
        vec![self.target.action()]
    }
}

/// A `ModifyRule`: the wanted rule and which of its parts differ.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleUpdate {
    /// The wanted rule.
    pub spec: RuleSpec,
    /// Send its conditions.
    pub conditions: bool,
    /// Send its actions.
    pub actions: bool,
}

/// Conditions sorted by field, for comparing with [`RuleSpec::conditions`].
pub fn sorted_conditions(conditions: &[Condition]) -> Vec<Condition> {
    let mut c = conditions.to_vec();
    c.sort_by(|a, b| a.field.cmp(&b.field));
    c
}

/// Exactly the Elastic Load Balancing v2 calls the ingress step makes.
#[cfg_attr(any(test, feature = "test-util"), mockall::automock)]
#[async_trait]
pub trait ElbApi: Send + Sync {
    /// `DescribeLoadBalancers Names=[name]`; `None` when AWS says `LoadBalancerNotFound`.
    async fn find_load_balancer(&self, name: &str) -> Result<Option<ObservedLoadBalancer>, AwsError>;
    /// `CreateLoadBalancer` (application, ipv4, the spec's scheme, subnets, security groups, tags).
    async fn create_load_balancer(&self, spec: &LoadBalancerSpec) -> Result<ObservedLoadBalancer, AwsError>;
    /// `SetSubnets`.
    async fn set_subnets(&self, load_balancer_arn: &str, subnet_ids: &[String]) -> Result<(), AwsError>;
    /// `SetSecurityGroups`.
    async fn set_security_groups(&self, load_balancer_arn: &str, security_group_ids: &[String])
        -> Result<(), AwsError>;
    /// `DeleteLoadBalancer`.
    async fn delete_load_balancer(&self, load_balancer_arn: &str) -> Result<(), AwsError>;

    /// `DescribeTargetGroups Names=[..]`: every named group, or the error AWS returns (e.g.
    /// `TargetGroupNotFound` when any one is missing).
    async fn describe_target_groups(&self, names: &[String]) -> Result<Vec<ObservedTargetGroup>, AwsError>;
    /// `DescribeTargetGroups` without names, every page: every target group of the region (to
    /// find the environment's groups the config no longer declares).
    async fn list_target_groups(&self) -> Result<Vec<ObservedTargetGroup>, AwsError>;
    /// `CreateTargetGroup` (target type ip, protocol HTTP, health check HTTP on the traffic port).
    async fn create_target_group(&self, spec: &TargetGroupSpec) -> Result<ObservedTargetGroup, AwsError>;
    /// `ModifyTargetGroup` with every health-check setting of `health_check`.
    async fn modify_target_group(&self, target_group_arn: &str, health_check: &HealthCheck) -> Result<(), AwsError>;
    /// `DeleteTargetGroup`.
    async fn delete_target_group(&self, target_group_arn: &str) -> Result<(), AwsError>;
    /// `DescribeTargetGroupAttributes`: the group's `deregistration_delay.timeout_seconds`
    /// (`None` when AWS does not report it).
    async fn deregistration_delay(&self, target_group_arn: &str) -> Result<Option<i32>, AwsError>;
    /// `ModifyTargetGroupAttributes`: sets `deregistration_delay.timeout_seconds`.
    async fn set_deregistration_delay(&self, target_group_arn: &str, seconds: i32) -> Result<(), AwsError>;

    /// `DescribeListeners LoadBalancerArn=..`, every page.
    async fn list_listeners(&self, load_balancer_arn: &str) -> Result<Vec<ObservedListener>, AwsError>;
    /// `CreateListener`; returns the listener ARN.
    async fn create_listener(&self, load_balancer_arn: &str, spec: &ListenerSpec) -> Result<String, AwsError>;
    /// `ModifyListener` with the spec's port, protocol, default action (and certificate and policy for HTTPS).
    async fn modify_listener(&self, listener_arn: &str, spec: &ListenerSpec) -> Result<(), AwsError>;
    /// `DeleteListener`.
    async fn delete_listener(&self, listener_arn: &str) -> Result<(), AwsError>;

    /// `DescribeRules ListenerArn=..`, every page (the default rule included).
    async fn list_rules(&self, listener_arn: &str) -> Result<Vec<ObservedRule>, AwsError>;
    /// `CreateRule`; returns the rule ARN.
    async fn create_rule(&self, listener_arn: &str, spec: &RuleSpec) -> Result<String, AwsError>;
    /// `ModifyRule` with the conditions and/or the actions the update names (a traffic-shifting
    /// rule's weights are ECS's: its actions are sent only when its target groups differ).
    async fn modify_rule(&self, rule_arn: &str, update: &RuleUpdate) -> Result<(), AwsError>;
    /// `DeleteRule`.
    async fn delete_rule(&self, rule_arn: &str) -> Result<(), AwsError>;

    /// `DescribeTags` (20 ARNs per call): ARN → its tags.
    async fn describe_tags(&self, arns: &[String]) -> Result<BTreeMap<String, Vec<Tag>>, AwsError>;
}

/// [`ElbApi`] over the real SDK client.
#[derive(Debug, Clone)]
pub struct SdkElb(pub elbv2::Client);

fn sdk_tags(tags: &[Tag]) -> Vec<elbv2::types::Tag> {
    tags.iter().map(|(k, v)| elbv2::types::Tag::builder().key(k).value(v).build()).collect()
}

fn observed_load_balancer(lb: &elbv2::types::LoadBalancer) -> ObservedLoadBalancer {
    ObservedLoadBalancer {
        arn: lb.load_balancer_arn().unwrap_or_default().to_owned(),
        dns_name: lb.dns_name().unwrap_or_default().to_owned(),
        scheme: lb.scheme().map(|s| s.as_str().to_owned()),
        lb_type: lb.r#type().map(|t| t.as_str().to_owned()),
        state: lb.state().and_then(|s| s.code()).map(|c| c.as_str().to_owned()),
        vpc_id: lb.vpc_id().map(str::to_owned),
        subnet_ids: lb.availability_zones().iter().filter_map(|az| az.subnet_id().map(str::to_owned)).collect(),
        security_group_ids: lb.security_groups().to_vec(),
    }
}

/// The target group attribute holding the deregistration delay.
const DEREGISTRATION_DELAY: &str = "deregistration_delay.timeout_seconds";

fn observed_target_group(tg: &elbv2::types::TargetGroup) -> ObservedTargetGroup {
    ObservedTargetGroup {
        arn: tg.target_group_arn().unwrap_or_default().to_owned(),
        name: tg.target_group_name().unwrap_or_default().to_owned(),
        port: tg.port(),
        protocol: tg.protocol().map(|p| p.as_str().to_owned()),
        target_type: tg.target_type().map(|t| t.as_str().to_owned()),
        vpc_id: tg.vpc_id().map(str::to_owned),
        health_check: HealthCheck {
            path: tg.health_check_path().unwrap_or_default().to_owned(),
            healthy_threshold: tg.healthy_threshold_count().unwrap_or_default(),
            unhealthy_threshold: tg.unhealthy_threshold_count().unwrap_or_default(),
            interval_seconds: tg.health_check_interval_seconds().unwrap_or_default(),
            matcher: tg.matcher().and_then(|m| m.http_code()).unwrap_or_default().to_owned(),
        },
        deregistration_delay: None,
        tags: None,
    }
}

fn observed_action(action: &Action) -> ListenerAction {
    match action.r#type() {
        Some(ActionTypeEnum::Forward) => {
            let single = action.target_group_arn().map(str::to_owned).or_else(|| {
                let groups = action.forward_config().map(|f| f.target_groups()).unwrap_or_default();
                match groups {
                    [one] => one.target_group_arn().map(str::to_owned),
                    _ => None,
                }
            });
            match single {
                Some(target_group_arn) => ListenerAction::Forward { target_group_arn },
                None => ListenerAction::Weighted {
                    target_groups: action
                        .forward_config()
                        .map(|f| f.target_groups())
                        .unwrap_or_default()
                        .iter()
                        .map(|t| (t.target_group_arn().unwrap_or_default().to_owned(), t.weight().unwrap_or(1)))
                        .collect(),
                },
            }
        }
        Some(ActionTypeEnum::Redirect) => {
            let c = action.redirect_config();
            ListenerAction::Redirect {
                protocol: c.and_then(|c| c.protocol()).map(str::to_owned),
                port: c.and_then(|c| c.port()).map(str::to_owned),
                status_code: c.and_then(|c| c.status_code()).map(|s| s.as_str().to_owned()),
            }
        }
        other => ListenerAction::Other { kind: other.map(|t| t.as_str().to_owned()).unwrap_or_default() },
    }
}

fn sdk_action(action: &ListenerAction) -> Action {
    match action {
        ListenerAction::Forward { target_group_arn } => {
            Action::builder().r#type(ActionTypeEnum::Forward).target_group_arn(target_group_arn).build()
        }
        ListenerAction::Redirect { protocol, port, status_code } => {
            let mut config = RedirectActionConfig::builder()
                .set_protocol(protocol.clone())
                .set_port(port.clone())
                .host("#{host}")
                .path("/#{path}")
                .query("#{query}");
            if let Some(code) = status_code {
                config = config.status_code(RedirectActionStatusCodeEnum::from(code.as_str()));
            }
            Action::builder().r#type(ActionTypeEnum::Redirect).redirect_config(config.build()).build()
        }
        ListenerAction::Weighted { target_groups } => {
            let config = ForwardActionConfig::builder().set_target_groups(Some(
                target_groups
                    .iter()
                    .map(|(arn, weight)| TargetGroupTuple::builder().target_group_arn(arn).weight(*weight).build())
                    .collect(),
            ));
            Action::builder().r#type(ActionTypeEnum::Forward).forward_config(config.build()).build()
        }
        ListenerAction::Other { kind } => Action::builder().r#type(ActionTypeEnum::from(kind.as_str())).build(),
    }
}

fn observed_condition(c: &RuleCondition) -> Condition {
    let field = c.field().unwrap_or_default().to_owned();
    let from_config = match field.as_str() {
        "path-pattern" => c.path_pattern_config().map(|p| p.values().to_vec()),
        "host-header" => c.host_header_config().map(|h| h.values().to_vec()),
        "http-header" => c.http_header_config().map(|h| {
            let name = h.http_header_name().unwrap_or_default().to_ascii_lowercase();
            h.values().iter().map(|v| format!("{name}={v}")).collect()
        }),
        _ => None,
    };
    let values = from_config.filter(|v| !v.is_empty()).unwrap_or_else(|| c.values().to_vec());
    Condition { field, values }
}

fn sdk_conditions(spec: &RuleSpec) -> Vec<RuleCondition> {
    let mut conditions = vec![RuleCondition::builder()
        .field("path-pattern")
        .path_pattern_config(PathPatternConditionConfig::builder().values(&spec.path_pattern).build())
        .build()];
    if let Some((name, value)) = &spec.header {
        conditions.push(
            RuleCondition::builder()
                .field("http-header")
                .http_header_config(HttpHeaderConditionConfig::builder().http_header_name(name).values(value).build())
                .build(),
        );
    }
    conditions
}

fn observed_listener(l: &elbv2::types::Listener) -> ObservedListener {
    let certificate_arn = l
        .certificates()
        .iter()
        .find(|c| c.is_default().unwrap_or(true))
        .or_else(|| l.certificates().first())
        .and_then(|c| c.certificate_arn())
        .map(str::to_owned);
    ObservedListener {
        arn: l.listener_arn().unwrap_or_default().to_owned(),
        port: l.port(),
        protocol: l.protocol().map(|p| p.as_str().to_owned()),
        certificate_arn,
        ssl_policy: l.ssl_policy().map(str::to_owned),
        default_actions: l.default_actions().iter().map(observed_action).collect(),
    }
}

/// Creates the SDK must not resend blindly when their outcome is unknown (no answer, or a 5xx
/// answer): the step looks the resource up first (see `tap_core::idempotent`).
fn no_blind_retry() -> elbv2::config::Builder {
    elbv2::Config::builder().retry_classifier(NoBlindRetry)
}

#[async_trait]
impl ElbApi for SdkElb {
    async fn find_load_balancer(&self, name: &str) -> Result<Option<ObservedLoadBalancer>, AwsError> {
        let Some(out) = self.0.describe_load_balancers().names(name).send().await.map_err(AwsError::from).if_found()?
        else {
            return Ok(None);
        };
        Ok(out.load_balancers().iter().find(|lb| lb.load_balancer_name() == Some(name)).map(observed_load_balancer))
    }

    async fn create_load_balancer(&self, spec: &LoadBalancerSpec) -> Result<ObservedLoadBalancer, AwsError> {
        let out = self
            .0
            .create_load_balancer()
            .name(&spec.name)
            .r#type(LoadBalancerTypeEnum::Application)
            .scheme(LoadBalancerSchemeEnum::from(spec.scheme.as_str()))
            .ip_address_type(IpAddressType::Ipv4)
            .set_subnets(Some(spec.subnet_ids.clone()))
            .set_security_groups(Some(spec.security_group_ids.clone()))
            .set_tags(Some(sdk_tags(&spec.tags)))
            .customize()
            .config_override(no_blind_retry())
            .send()
            .await?;
        out.load_balancers()
            .first()
            .map(observed_load_balancer)
            .ok_or_else(|| AwsError::new("EmptyResponse", "CreateLoadBalancer returned no load balancer"))
    }

    async fn set_subnets(&self, load_balancer_arn: &str, subnet_ids: &[String]) -> Result<(), AwsError> {
        self.0.set_subnets().load_balancer_arn(load_balancer_arn).set_subnets(Some(subnet_ids.to_vec())).send().await?;
        Ok(())
    }

    async fn set_security_groups(
        &self,
        load_balancer_arn: &str,
        security_group_ids: &[String],
    ) -> Result<(), AwsError> {
        self.0
            .set_security_groups()
            .load_balancer_arn(load_balancer_arn)
            .set_security_groups(Some(security_group_ids.to_vec()))
            .send()
            .await?;
        Ok(())
    }

    async fn delete_load_balancer(&self, load_balancer_arn: &str) -> Result<(), AwsError> {
        self.0.delete_load_balancer().load_balancer_arn(load_balancer_arn).send().await?;
        Ok(())
    }

    async fn describe_target_groups(&self, names: &[String]) -> Result<Vec<ObservedTargetGroup>, AwsError> {
        let pages = self
            .0
            .describe_target_groups()
            .set_names(Some(names.to_vec()))
            .into_paginator()
            .send()
            .try_collect()
            .await?;
        Ok(pages.iter().flat_map(|p| p.target_groups()).map(observed_target_group).collect())
    }

    async fn list_target_groups(&self) -> Result<Vec<ObservedTargetGroup>, AwsError> {
        let pages = self.0.describe_target_groups().page_size(400).into_paginator().send().try_collect().await?;
        Ok(pages.iter().flat_map(|p| p.target_groups()).map(observed_target_group).collect())
    }

    async fn create_target_group(&self, spec: &TargetGroupSpec) -> Result<ObservedTargetGroup, AwsError> {
        let hc = &spec.health_check;
        let out = self
            .0
            .create_target_group()
            .name(&spec.name)
            .target_type(TargetTypeEnum::Ip)
            .protocol(ProtocolEnum::Http)
            .port(spec.port)
            .vpc_id(&spec.vpc_id)
            .health_check_enabled(true)
            .health_check_protocol(ProtocolEnum::Http)
            .health_check_port("traffic-port")
            .health_check_path(&hc.path)
            .health_check_interval_seconds(hc.interval_seconds)
            .healthy_threshold_count(hc.healthy_threshold)
            .unhealthy_threshold_count(hc.unhealthy_threshold)
            .matcher(Matcher::builder().http_code(&hc.matcher).build())
            .set_tags(Some(sdk_tags(&spec.tags)))
            .customize()
            .config_override(no_blind_retry())
            .send()
            .await?;
        out.target_groups()
            .first()
            .map(observed_target_group)
            .ok_or_else(|| AwsError::new("EmptyResponse", "CreateTargetGroup returned no target group"))
    }

    async fn modify_target_group(&self, target_group_arn: &str, hc: &HealthCheck) -> Result<(), AwsError> {
        self.0
            .modify_target_group()
            .target_group_arn(target_group_arn)
            .health_check_enabled(true)
            .health_check_path(&hc.path)
            .health_check_interval_seconds(hc.interval_seconds)
            .healthy_threshold_count(hc.healthy_threshold)
            .unhealthy_threshold_count(hc.unhealthy_threshold)
            .matcher(Matcher::builder().http_code(&hc.matcher).build())
            .send()
            .await?;
        Ok(())
    }

    async fn delete_target_group(&self, target_group_arn: &str) -> Result<(), AwsError> {
        self.0.delete_target_group().target_group_arn(target_group_arn).send().await?;
        Ok(())
    }

    async fn deregistration_delay(&self, target_group_arn: &str) -> Result<Option<i32>, AwsError> {
        let out = self.0.describe_target_group_attributes().target_group_arn(target_group_arn).send().await?;
        Ok(out
            .attributes()
            .iter()
            .find(|a| a.key() == Some(DEREGISTRATION_DELAY))
            .and_then(|a| a.value())
            .and_then(|v| v.parse().ok()))
    }

    async fn set_deregistration_delay(&self, target_group_arn: &str, seconds: i32) -> Result<(), AwsError> {
        self.0
            .modify_target_group_attributes()
            .target_group_arn(target_group_arn)
            .attributes(TargetGroupAttribute::builder().key(DEREGISTRATION_DELAY).value(seconds.to_string()).build())
            .send()
            .await?;
        Ok(())
    }

    async fn list_listeners(&self, load_balancer_arn: &str) -> Result<Vec<ObservedListener>, AwsError> {
        let pages = self
            .0
            .describe_listeners()
            .load_balancer_arn(load_balancer_arn)
            .into_paginator()
            .send()
            .try_collect()
            .await?;
        Ok(pages.iter().flat_map(|p| p.listeners()).map(observed_listener).collect())
    }

    async fn create_listener(&self, load_balancer_arn: &str, spec: &ListenerSpec) -> Result<String, AwsError> {
        let out = self
            .0
            .create_listener()
            .load_balancer_arn(load_balancer_arn)
            .port(spec.port)
            .protocol(ProtocolEnum::from(spec.protocol.as_str()))
            .set_certificates(
                spec.certificate_arn.as_ref().map(|arn| vec![Certificate::builder().certificate_arn(arn).build()]),
            )
            .set_ssl_policy(spec.ssl_policy.clone())
            .default_actions(sdk_action(&spec.default_action))
            .set_tags(Some(sdk_tags(&spec.tags)))
            .customize()
            .config_override(no_blind_retry())
            .send()
            .await?;
        out.listeners()
            .first()
            .and_then(|l| l.listener_arn())
            .map(str::to_owned)
            .ok_or_else(|| AwsError::new("EmptyResponse", "CreateListener returned no listener"))
    }

    async fn modify_listener(&self, listener_arn: &str, spec: &ListenerSpec) -> Result<(), AwsError> {
        self.0
            .modify_listener()
            .listener_arn(listener_arn)
            .port(spec.port)
            .protocol(ProtocolEnum::from(spec.protocol.as_str()))
            .set_certificates(
                spec.certificate_arn.as_ref().map(|arn| vec![Certificate::builder().certificate_arn(arn).build()]),
            )
            .set_ssl_policy(spec.ssl_policy.clone())
            .default_actions(sdk_action(&spec.default_action))
            .send()
            .await?;
        Ok(())
    }

    async fn delete_listener(&self, listener_arn: &str) -> Result<(), AwsError> {
        self.0.delete_listener().listener_arn(listener_arn).send().await?;
        Ok(())
    }

    async fn list_rules(&self, listener_arn: &str) -> Result<Vec<ObservedRule>, AwsError> {
        let pages = self.0.describe_rules().listener_arn(listener_arn).into_paginator().send().try_collect().await?;
        Ok(pages
            .iter()
            .flat_map(|p| p.rules())
            .map(|r| ObservedRule {
                arn: r.rule_arn().unwrap_or_default().to_owned(),
                priority: r.priority().and_then(|p| p.parse().ok()),
                is_default: r.is_default().unwrap_or(false) || r.priority() == Some("default"),
                conditions: r.conditions().iter().map(observed_condition).collect(),
                actions: r.actions().iter().map(observed_action).collect(),
            })
            .collect())
    }

    async fn create_rule(&self, listener_arn: &str, spec: &RuleSpec) -> Result<String, AwsError> {
        let out = self
            .0
            .create_rule()
            .listener_arn(listener_arn)
            .priority(spec.priority)
            .set_conditions(Some(sdk_conditions(spec)))
            .actions(sdk_action(&spec.target.action()))
            .set_tags(Some(sdk_tags(&spec.tags)))
            .customize()
            .config_override(no_blind_retry())
            .send()
            .await?;
        out.rules()
            .first()
            .and_then(|r| r.rule_arn())
            .map(str::to_owned)
            .ok_or_else(|| AwsError::new("EmptyResponse", "CreateRule returned no rule"))
    }

    async fn modify_rule(&self, rule_arn: &str, update: &RuleUpdate) -> Result<(), AwsError> {
        let spec = &update.spec;
        self.0
            .modify_rule()
            .rule_arn(rule_arn)
            .set_conditions(update.conditions.then(|| sdk_conditions(spec)))
            .set_actions(update.actions.then(|| vec![sdk_action(&spec.target.action())]))
            .send()
            .await?;
        Ok(())
    }

    async fn delete_rule(&self, rule_arn: &str) -> Result<(), AwsError> {
        self.0.delete_rule().rule_arn(rule_arn).send().await?;
        Ok(())
    }

    async fn describe_tags(&self, arns: &[String]) -> Result<BTreeMap<String, Vec<Tag>>, AwsError> {
        let mut tags = BTreeMap::new();
        for chunk in arns.chunks(20) {
            let out = self.0.describe_tags().set_resource_arns(Some(chunk.to_vec())).send().await?;
            for d in out.tag_descriptions() {
                let arn = d.resource_arn().unwrap_or_default().to_owned();
                let list = d
                    .tags()
                    .iter()
                    .map(|t| (t.key().unwrap_or_default().to_owned(), t.value().unwrap_or_default().to_owned()))
                    .collect();
                tags.insert(arn, list);
            }
        }
        Ok(tags)
    }
}
