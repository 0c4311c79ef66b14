//! Unit tests of the ingress step over a mocked [`ElbApi`].

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tap_core::outputs::{IngressOutputs, NetworkOutputs, SecurityOutputs, SubnetRef, PENDING};
use tap_core::wait::Backoff;
use tap_core::{Action, AwsError, Config, Context, Step};

use super::*;
use tap_core::naming::Tag;

const LB_ARN: &str = "arn:aws:elasticloadbalancing:us-east-1:123:loadbalancer/app/tap-alb-dev/abc";
const FE_ARN: &str = "arn:aws:elasticloadbalancing:us-east-1:123:targetgroup/tap-fe-dev/1";
const API_ARN: &str = "arn:aws:elasticloadbalancing:us-east-1:123:targetgroup/tap-api-dev/2";
const L80_ARN: &str = "arn:aws:elasticloadbalancing:us-east-1:123:listener/app/tap-alb-dev/abc/80";
const L443_ARN: &str = "arn:aws:elasticloadbalancing:us-east-1:123:listener/app/tap-alb-dev/abc/443";
const RULE_ARN: &str = "arn:aws:elasticloadbalancing:us-east-1:123:listener-rule/app/tap-alb-dev/abc/80/r1";
const CERT: &str = "arn:aws:acm:us-east-1:123:certificate/cert-1";

fn subnets() -> Vec<String> {
    vec!["subnet-a".into(), "subnet-b".into(), "subnet-c".into()]
}

fn context_with(config: Config, known: bool) -> Context {
    let ctx = Context::new(config);
    let id = |s: &str| if known { s.to_owned() } else { PENDING.to_owned() };
    ctx.put(NetworkOutputs {
        vpc_id: id("vpc-1"),
        public_subnets: ["a", "b", "c"]
            .iter()
            .map(|z| SubnetRef { az: format!("us-east-1{z}"), id: id(&format!("subnet-{z}")) })
            .collect(),
        private_subnets: vec![],
    });
    ctx.put(SecurityOutputs {
        alb_security_group_id: id("sg-alb"),
        service_security_group_ids: BTreeMap::new(),
        execution_role_arn: id("arn:role"),
        task_role_arns: BTreeMap::new(),
        secret_arns: BTreeMap::new(),
        infrastructure_role_arn: None,
    });
    ctx
}

fn context() -> Context {
    context_with(Config::default(), true)
}

fn context_with_certificate() -> Context {
    let mut config = Config::default();
    config.ingress.certificate_arn = Some(CERT.into());
    context_with(config, true)
}

fn fast() -> Backoff {
    Backoff { initial: Duration::from_millis(1), max: Duration::from_millis(4), timeout: Duration::from_secs(2) }
}

fn step(mock: MockElbApi) -> IngressStep {
    IngressStep::new(Arc::new(mock)).with_backoff(fast())
}

fn not_found(code: &str) -> AwsError {
    AwsError::new(code, "not found")
}

fn observed_lb() -> ObservedLoadBalancer {
    ObservedLoadBalancer {
        arn: LB_ARN.into(),
        dns_name: "tap-alb-dev-1.us-east-1.elb.amazonaws.com".into(),
        scheme: Some("internet-facing".into()),
        lb_type: Some("application".into()),
        state: Some("active".into()),
        vpc_id: Some("vpc-1".into()),
        subnet_ids: vec!["subnet-c".into(), "subnet-a".into(), "subnet-b".into()],
        security_group_ids: vec!["sg-alb".into()],
    }
}

fn health(path: &str) -> HealthCheck {
    HealthCheck {
        path: path.into(),
        healthy_threshold: 2,
        unhealthy_threshold: 3,
        interval_seconds: 30,
        matcher: HEALTH_MATCHER.into(),
    }
}

fn observed_tg(name: &str, arn: &str, port: i32, path: &str) -> ObservedTargetGroup {
    ObservedTargetGroup {
        arn: arn.into(),
        name: name.into(),
        port: Some(port),
        protocol: Some("HTTP".into()),
        target_type: Some("ip".into()),
        vpc_id: Some("vpc-1".into()),
        health_check: health(path),
        deregistration_delay: None,
        // As if read already (the step reads a listed group's tags beside its attributes).
        tags: Some(tap_core::naming::Names::new(&Config::default()).tags("ingress/target-group/x", name)),
    }
}

fn observed_tgs() -> Vec<ObservedTargetGroup> {
    vec![observed_tg("tap-api-dev", API_ARN, 8080, "/health"), observed_tg("tap-fe-dev", FE_ARN, 3000, "/")]
}

fn listener(arn: &str, port: i32, protocol: &str, action: ListenerAction) -> ObservedListener {
    ObservedListener {
        arn: arn.into(),
        port: Some(port),
        protocol: Some(protocol.into()),
        certificate_arn: None,
        ssl_policy: None,
        default_actions: vec![action],
    }
}

fn default_rule(listener_arn: &str, action: ListenerAction) -> ObservedRule {
    ObservedRule {
        arn: format!("{listener_arn}/default"),
        priority: None,
        is_default: true,
        conditions: vec![],
        actions: vec![action],
    }
}

fn api_rule() -> ObservedRule {
    ObservedRule {
        arn: RULE_ARN.into(),
        priority: Some(10),
        is_default: false,
        conditions: vec![Condition { field: "path-pattern".into(), values: vec!["/api/*".into()] }],
        actions: vec![ListenerAction::forward(API_ARN)],
    }
}

fn has(tags: &[Tag], k: &str, v: &str) -> bool {
    tags.iter().any(|(a, b)| a == k && b == v)
}

/// Mocks the reads of a fully converged environment (HTTP only).
fn converged() -> MockElbApi {
    reads_with(observed_tgs(), 30)
}

/// The reads of [`converged`], but for the frontend group's health check path, which drifted.
fn path_drifted() -> MockElbApi {
    let mut tgs = observed_tgs();
    tgs[0].health_check.path = "/drifted".into();
    reads_with(tgs, 30)
}

/// The reads of [`converged`], but for the frontend group, which drains for AWS's default of 300 s.
fn delay_drifted() -> MockElbApi {
    reads_with(observed_tgs(), 300)
}

/// The reads of [`converged`], its target groups as `tgs`, the frontend's draining `fe_delay` s.
fn reads_with(tgs: Vec<ObservedTargetGroup>, fe_delay: i32) -> MockElbApi {
    let mut m = MockElbApi::new();
    m.expect_find_load_balancer().withf(|n| n == "tap-alb-dev").returning(|_| Ok(Some(observed_lb())));
    // Every target group from one listing of the region; none described by name.
    m.expect_describe_target_groups().never();
    m.expect_list_target_groups().times(1).returning(move || Ok(tgs.clone()));
    // One DescribeTargetGroupAttributes per routed group (the config asks for 30 s).
    m.expect_deregistration_delay().times(2).returning(move |arn| Ok(Some(if arn == FE_ARN { fe_delay } else { 30 })));
    m.expect_list_listeners()
        .withf(|arn| arn == LB_ARN)
        .returning(|_| Ok(vec![listener(L80_ARN, 80, "HTTP", ListenerAction::forward(FE_ARN))]));
    m.expect_list_rules()
        .withf(|arn| arn == L80_ARN)
        .returning(|_| Ok(vec![api_rule(), default_rule(L80_ARN, ListenerAction::forward(FE_ARN))]));
    m
}

/// Forbids every write not expected before this call: mockall answers a call with the first
/// expectation that matches it and is not used up, so this goes after the writes a test expects.
fn expect_no_mutation(m: &mut MockElbApi) {
    m.expect_create_load_balancer().never();
    m.expect_set_subnets().never();
    m.expect_set_security_groups().never();
    m.expect_delete_load_balancer().never();
    m.expect_create_target_group().never();
    m.expect_modify_target_group().never();
    m.expect_set_deregistration_delay().never();
    m.expect_delete_target_group().never();
    m.expect_create_listener().never();
    m.expect_modify_listener().never();
    m.expect_delete_listener().never();
    m.expect_create_rule().never();
    m.expect_modify_rule().never();
    m.expect_delete_rule().never();
}

/// Reads of an empty environment: no load balancer, no target group.
fn empty_reads(m: &mut MockElbApi) {
    m.expect_find_load_balancer().returning(|_| Ok(None));
    m.expect_describe_target_groups().returning(|_| Err(not_found("TargetGroupNotFound")));
    m.expect_list_target_groups().returning(|| Ok(vec![]));
    m.expect_deregistration_delay().returning(|_| Ok(Some(30)));
}

#[tokio::test]
async fn creates_exactly_the_spec_from_nothing() {
    let mut m = MockElbApi::new();
    // No target group of the environment besides the routed ones.
    m.expect_list_target_groups().returning(|| Ok(vec![]));
    m.expect_deregistration_delay().returning(|_| Ok(Some(30)));
    m.expect_find_load_balancer().times(1).returning(|_| Ok(None));
    // The region's listing shows none; nothing is described by name (no create to adopt).
    m.expect_describe_target_groups().never();
    m.expect_create_load_balancer()
        .withf(|s| {
            s.name == "tap-alb-dev"
                && s.scheme == "internet-facing"
                && s.subnet_ids == subnets()
                && s.security_group_ids == ["sg-alb".to_string()]
                && has(&s.tags, "Environment", "dev")
                && has(&s.tags, "Name", "tap-alb-dev")
                && has(&s.tags, "tap:component", LOAD_BALANCER_ID)
        })
        .times(1)
        .returning(|_| Ok(ObservedLoadBalancer { state: Some("provisioning".into()), ..observed_lb() }));
    // The delay is set right after each create, as part of it.
    m.expect_set_deregistration_delay()
        .withf(|arn, seconds| (arn == FE_ARN || arn == API_ARN) && *seconds == 30)
        .times(2)
        .returning(|_, _| Ok(()));
    m.expect_create_target_group()
        .withf(|s| {
            s.name == "tap-fe-dev"
                && s.port == 3000
                && s.vpc_id == "vpc-1"
                && s.health_check == health("/")
                && has(&s.tags, "tap:component", "ingress/target-group/frontend")
        })
        .times(1)
        .returning(|s| Ok(observed_tg(&s.name, FE_ARN, s.port, &s.health_check.path)));
    m.expect_create_target_group()
        .withf(|s| {
            s.name == "tap-api-dev"
                && s.port == 8080
                && s.vpc_id == "vpc-1"
                && s.health_check == health("/health")
                && has(&s.tags, "Project", "tap")
        })
        .times(1)
        .returning(|s| Ok(observed_tg(&s.name, API_ARN, s.port, &s.health_check.path)));
    // A new load balancer has no listeners: they are created without listing, while it provisions.
    m.expect_list_listeners().never();
    m.expect_create_listener()
        .withf(|lb, s| {
            lb == LB_ARN
                && s.port == 80
                && s.protocol == "HTTP"
                && s.certificate_arn.is_none()
                && s.default_action == ListenerAction::forward(FE_ARN)
                && has(&s.tags, "tap:component", "ingress/listener/http")
        })
        .times(1)
        .returning(|_, _| Ok(L80_ARN.into()));
    m.expect_create_rule()
        .withf(|l, r| {
            l == L80_ARN
                && r.priority == 10
                && r.path_pattern == "/api/*"
                && r.target == RuleTarget::One(API_ARN.into())
                && r.header.is_none()
                && has(&r.tags, "tap:component", "ingress/listener/http/rule/api-gateway")
        })
        .times(1)
        .returning(|_, _| Ok(RULE_ARN.into()));
    expect_no_mutation(&mut m);

    let ctx = context();
    let changes = step(m).apply(&ctx).await.unwrap();
    let mut created: Vec<&str> = changes.iter().map(|c| c.resource.as_str()).collect();
    created.sort();
    assert_eq!(
        created,
        [
            "ingress/listener/http",
            "ingress/listener/http/rule/api-gateway",
            "ingress/load-balancer",
            "ingress/target-group/api-gateway",
            "ingress/target-group/frontend",
        ]
    );
    assert!(changes.iter().all(|c| c.action == Action::Create));
    let out: IngressOutputs = ctx.get("test").unwrap();
    assert_eq!(out.load_balancer_arn, LB_ARN);
    assert_eq!(out.dns_name, "tap-alb-dev-1.us-east-1.elb.amazonaws.com");
    assert_eq!(
        out.target_group_arns,
        BTreeMap::from([
            ("api-gateway".to_string(), API_ARN.to_string()),
            ("frontend".to_string(), FE_ARN.to_string())
        ])
    );
}

#[tokio::test]
async fn matching_environment_makes_no_mutating_call() {
    let mut m = converged();
    expect_no_mutation(&mut m);
    m.expect_describe_tags().never();
    let ctx = context();
    let changes = step(m).apply(&ctx).await.unwrap();
    assert!(changes.is_empty(), "{changes:?}");
    let out: IngressOutputs = ctx.get("test").unwrap();
    assert_eq!(out.target_group_arns["frontend"], FE_ARN);
}

#[tokio::test]
async fn health_check_path_drift_is_fixed_alone() {
    let mut m = path_drifted();
    m.expect_modify_target_group()
        .withf(|arn, hc| arn == API_ARN && *hc == health("/health"))
        .times(1)
        .returning(|_, _| Ok(()));
    expect_no_mutation(&mut m);

    let changes = step(m).apply(&context()).await.unwrap();
    assert_eq!(changes.len(), 1, "{changes:?}");
    assert_eq!(changes[0].resource, "ingress/target-group/api-gateway");
    assert_eq!(changes[0].action, Action::Update);
    assert_eq!(changes[0].attributes.len(), 1);
    assert_eq!(changes[0].attributes[0].attribute, "health_check_path");
}

#[tokio::test]
async fn security_group_drift_waits_for_active_then_is_fixed() {
    let mut m = MockElbApi::new();
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    m.expect_find_load_balancer().returning(move |_| {
        let state = if c.fetch_add(1, Ordering::SeqCst) < 2 { "provisioning" } else { "active" };
        Ok(Some(ObservedLoadBalancer {
            state: Some(state.into()),
            security_group_ids: vec!["sg-other".into()],
            ..observed_lb()
        }))
    });
    m.expect_list_target_groups().returning(|| Ok(observed_tgs()));
    m.expect_deregistration_delay().returning(|_| Ok(Some(30)));
    m.expect_list_listeners().returning(|_| Ok(vec![listener(L80_ARN, 80, "HTTP", ListenerAction::forward(FE_ARN))]));
    m.expect_list_rules().returning(|_| Ok(vec![api_rule(), default_rule(L80_ARN, ListenerAction::forward(FE_ARN))]));
    m.expect_set_security_groups()
        .withf(|arn, sgs| arn == LB_ARN && sgs == ["sg-alb".to_string()])
        .times(1)
        .returning(|_, _| Ok(()));
    expect_no_mutation(&mut m);

    let changes = step(m).apply(&context()).await.unwrap();
    assert_eq!(changes.len(), 1, "{changes:?}");
    assert_eq!(changes[0].attributes[0].attribute, "security_groups");
    assert_eq!(calls.load(Ordering::SeqCst), 3, "found once, then polled until active");
}

#[tokio::test]
async fn listener_and_rule_drift_are_converged() {
    let mut m = MockElbApi::new();
    m.expect_find_load_balancer().returning(|_| Ok(Some(observed_lb())));
    m.expect_list_target_groups().returning(|| Ok(observed_tgs()));
    m.expect_deregistration_delay().returning(|_| Ok(Some(30)));
    // Default action points at the api TG; the api rule has the wrong path; a stale tap rule and a
    // foreign rule sit at other priorities.
    m.expect_list_listeners().returning(|_| Ok(vec![listener(L80_ARN, 80, "HTTP", ListenerAction::forward(API_ARN))]));
    m.expect_list_rules().returning(|_| {
        let mut wrong = api_rule();
        wrong.conditions[0].values = vec!["/v1/*".into()];
        let stale = ObservedRule { arn: "rule-stale".into(), priority: Some(20), ..api_rule() };
        let foreign = ObservedRule { arn: "rule-foreign".into(), priority: Some(30), ..api_rule() };
        Ok(vec![wrong, stale, foreign, default_rule(L80_ARN, ListenerAction::forward(API_ARN))])
    });
    m.expect_describe_tags()
        .withf(|arns| arns == ["rule-stale".to_string(), "rule-foreign".to_string()])
        .times(1)
        .returning(|_| {
            let names = tap_core::naming::Names::new(&Config::default());
            Ok(BTreeMap::from([
                ("rule-stale".to_string(), names.tags("ingress/listener/http/rule/old", "x")),
                ("rule-foreign".to_string(), vec![("Owner".to_string(), "someone".to_string())]),
            ]))
        });
    m.expect_modify_listener()
        .withf(|arn, s| arn == L80_ARN && s.default_action == ListenerAction::forward(FE_ARN))
        .times(1)
        .returning(|_, _| Ok(()));
    m.expect_modify_rule()
        .withf(|arn, r| {
            arn == RULE_ARN
                && r.spec.path_pattern == "/api/*"
                && r.spec.target == RuleTarget::One(API_ARN.into())
                // Only the path drifted: its target is not sent again.
                && r.conditions
                && !r.actions
        })
        .times(1)
        .returning(|_, _| Ok(()));
    m.expect_delete_rule().withf(|arn| arn == "rule-stale").times(1).returning(|_| Ok(()));
    expect_no_mutation(&mut m);

    let changes = step(m).apply(&context()).await.unwrap();
    let summary: Vec<(String, Action)> = changes.iter().map(|c| (c.resource.clone(), c.action)).collect();
    assert_eq!(summary.len(), 3, "{summary:?}");
    assert!(summary.contains(&("ingress/listener/http".into(), Action::Update)));
    assert!(summary.contains(&("ingress/listener/http/rule/api-gateway".into(), Action::Update)));
    assert!(summary.contains(&("ingress/listener/http/rule/old".into(), Action::Delete)));
}

#[tokio::test]
async fn throttling_surfaces_as_retryable() {
    let mut m = MockElbApi::new();
    m.expect_find_load_balancer().returning(|_| Err(AwsError::throttling()));
    m.expect_list_target_groups().returning(|| Ok(observed_tgs()));
    m.expect_deregistration_delay().returning(|_| Ok(Some(30)));
    expect_no_mutation(&mut m);
    let err = step(m).apply(&context()).await.unwrap_err();
    assert!(err.is_retryable(), "{err}");
    assert!(err.to_string().contains("DescribeLoadBalancers"), "{err}");

    let mut m = MockElbApi::new();
    m.expect_find_load_balancer().returning(|_| Ok(None));
    m.expect_list_target_groups().returning(|| Ok(vec![]));
    m.expect_deregistration_delay().returning(|_| Ok(Some(30)));
    m.expect_create_load_balancer().returning(|_| Err(AwsError::throttling()));
    m.expect_set_deregistration_delay().returning(|_, _| Ok(()));
    m.expect_create_target_group().returning(|s| Ok(observed_tg(&s.name, FE_ARN, s.port, &s.health_check.path)));
    let err = step(m).apply(&context()).await.unwrap_err();
    assert!(err.is_retryable(), "{err}");
}

#[tokio::test]
async fn plan_makes_no_mutating_call_and_writes_pending_outputs() {
    let mut m = MockElbApi::new();
    empty_reads(&mut m);
    m.expect_list_listeners().never();
    m.expect_list_rules().never();
    expect_no_mutation(&mut m);
    let ctx = context();
    let changes = step(m).plan(&ctx).await.unwrap();
    assert_eq!(changes.len(), 5, "{changes:?}");
    assert!(changes.iter().all(|c| c.action == Action::Create));
    let out: IngressOutputs = ctx.get("test").unwrap();
    assert_eq!(out.load_balancer_arn, PENDING);
    assert_eq!(out.dns_name, PENDING);
    assert_eq!(out.target_group_arns["api-gateway"], PENDING);
}

#[tokio::test]
async fn plan_of_drift_lists_it_without_fixing_it() {
    let mut m = path_drifted();
    expect_no_mutation(&mut m);
    let changes = step(m).plan(&context()).await.unwrap();
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0].attributes[0].new.as_deref(), Some("\"/health\""));
}

#[tokio::test]
async fn plan_with_pending_inputs_plans_creates_without_using_them() {
    let mut m = MockElbApi::new();
    // Only lookups by name: nothing that would carry a PENDING id.
    empty_reads(&mut m);
    m.expect_list_listeners().never();
    m.expect_list_rules().never();
    m.expect_describe_tags().never();
    expect_no_mutation(&mut m);
    let ctx = context_with(Config::default(), false);
    let changes = step(m).plan(&ctx).await.unwrap();
    assert_eq!(changes.len(), 5);
    assert!(changes.iter().all(|c| c.action == Action::Create));
}

#[tokio::test]
async fn destroy_on_empty_environment_succeeds() {
    let mut m = MockElbApi::new();
    empty_reads(&mut m);
    expect_no_mutation(&mut m);
    let changes = step(m).destroy(&Context::new(Config::default())).await.unwrap();
    assert!(changes.is_empty());
}

#[tokio::test]
async fn destroy_removes_rules_listeners_balancer_then_target_groups() {
    let mut m = MockElbApi::new();
    let gone = Arc::new(AtomicUsize::new(0));
    let g = gone.clone();
    m.expect_find_load_balancer().returning(move |_| {
        // Found, then still there once after deletion, then gone.
        Ok((g.fetch_add(1, Ordering::SeqCst) < 2).then(observed_lb))
    });
    m.expect_list_listeners().returning(|_| Ok(vec![listener(L80_ARN, 80, "HTTP", ListenerAction::forward(FE_ARN))]));
    m.expect_list_rules().returning(|_| Ok(vec![api_rule(), default_rule(L80_ARN, ListenerAction::forward(FE_ARN))]));
    m.expect_delete_rule().withf(|arn| arn == RULE_ARN).times(1).returning(|_| Ok(()));
    m.expect_delete_listener().withf(|arn| arn == L80_ARN).times(1).returning(|_| Ok(()));
    m.expect_delete_load_balancer().withf(|arn| arn == LB_ARN).times(1).returning(|_| Ok(()));
    // The environment's target groups come from the region's listing (no describe by name).
    m.expect_list_target_groups().returning(|| Ok(observed_tgs()));
    m.expect_deregistration_delay().returning(|_| Ok(Some(30)));
    let in_use = Arc::new(AtomicUsize::new(0));
    let u = in_use.clone();
    m.expect_delete_target_group().withf(|arn| arn == API_ARN).times(2).returning(move |_| {
        if u.fetch_add(1, Ordering::SeqCst) == 0 {
            Err(AwsError::new("ResourceInUse", "in use by a listener"))
        } else {
            Ok(())
        }
    });
    m.expect_delete_target_group()
        .withf(|arn| arn == FE_ARN)
        .times(1)
        .returning(|_| Err(not_found("TargetGroupNotFound")));

    let changes = step(m).destroy(&Context::new(Config::default())).await.unwrap();
    let deleted: Vec<&str> = changes.iter().map(|c| c.resource.as_str()).collect();
    assert_eq!(
        deleted,
        [
            "ingress/listener/http/rule/priority-10",
            "ingress/listener/http",
            "ingress/load-balancer",
            "ingress/target-group/api-gateway",
        ]
    );
    assert!(changes.iter().all(|c| c.action == Action::Delete));
    assert_eq!(gone.load(Ordering::SeqCst), 3, "polled until the load balancer was gone");
}

#[tokio::test]
async fn certificate_adds_https_listener_and_redirects_http() {
    let mut m = MockElbApi::new();
    empty_reads(&mut m);
    m.expect_create_load_balancer().times(1).returning(|_| Ok(observed_lb()));
    m.expect_set_deregistration_delay().returning(|_, _| Ok(()));
    m.expect_create_target_group()
        .times(1)
        .withf(|s| s.name == "tap-fe-dev")
        .returning(|s| Ok(observed_tg(&s.name, FE_ARN, s.port, &s.health_check.path)));
    m.expect_create_target_group()
        .times(1)
        .withf(|s| s.name == "tap-api-dev")
        .returning(|s| Ok(observed_tg(&s.name, API_ARN, s.port, &s.health_check.path)));
    m.expect_create_listener()
        .withf(|_, s| {
            s.port == 80
                && s.protocol == "HTTP"
                && s.default_action
                    == ListenerAction::Redirect {
                        protocol: Some("HTTPS".into()),
                        port: Some("443".into()),
                        status_code: Some("HTTP_301".into()),
                    }
        })
        .times(1)
        .returning(|_, _| Ok(L80_ARN.into()));
    m.expect_create_listener()
        .withf(|_, s| {
            s.port == 443
                && s.protocol == "HTTPS"
                && s.certificate_arn.as_deref() == Some(CERT)
                && s.ssl_policy.as_deref() == Some("ELBSecurityPolicy-TLS13-1-2-2021-06")
                && s.default_action == ListenerAction::forward(FE_ARN)
        })
        .times(1)
        .returning(|_, _| Ok(L443_ARN.into()));
    // The path rule goes on :443 only.
    m.expect_create_rule()
        .withf(|l, r| l == L443_ARN && r.path_pattern == "/api/*" && r.target == RuleTarget::One(API_ARN.into()))
        .times(1)
        .returning(|_, _| Ok(RULE_ARN.into()));
    let changes = step(m).apply(&context_with_certificate()).await.unwrap();
    let ids: Vec<&str> = changes.iter().map(|c| c.resource.as_str()).collect();
    assert!(ids.contains(&"ingress/listener/https/rule/api-gateway"), "{ids:?}");
    assert!(!ids.contains(&"ingress/listener/http/rule/api-gateway"), "{ids:?}");
}

#[tokio::test]
async fn adding_a_certificate_converts_http_listener_to_redirect() {
    let mut m = converged();
    m.expect_describe_tags().times(1).returning(|arns| {
        let names = tap_core::naming::Names::new(&Config::default());
        Ok(arns.iter().map(|a| (a.clone(), names.tags("ingress/listener/http/rule/api-gateway", "r"))).collect())
    });
    m.expect_modify_listener()
        .withf(|arn, s| arn == L80_ARN && s.default_action == ListenerAction::redirect_to_https())
        .times(1)
        .returning(|_, _| Ok(()));
    m.expect_delete_rule().withf(|arn| arn == RULE_ARN).times(1).returning(|_| Ok(()));
    m.expect_create_listener()
        .withf(|lb, s| lb == LB_ARN && s.port == 443 && s.certificate_arn.as_deref() == Some(CERT))
        .times(1)
        .returning(|_, _| Ok(L443_ARN.into()));
    m.expect_create_rule().withf(|l, _| l == L443_ARN).times(1).returning(|_, _| Ok("rule-443".into()));
    expect_no_mutation(&mut m);

    let changes = step(m).apply(&context_with_certificate()).await.unwrap();
    let summary: Vec<(String, Action)> = changes.iter().map(|c| (c.resource.clone(), c.action)).collect();
    assert_eq!(summary.len(), 4, "{summary:?}");
    assert!(summary.contains(&("ingress/listener/http".into(), Action::Update)));
    assert!(summary.contains(&("ingress/listener/http/rule/api-gateway".into(), Action::Delete)));
    assert!(summary.contains(&("ingress/listener/https".into(), Action::Create)));
    assert!(summary.contains(&("ingress/listener/https/rule/api-gateway".into(), Action::Create)));
}

/// Collects the resources reported found.
#[derive(Default)]
struct Found(std::sync::Mutex<Vec<String>>);

impl tap_core::progress::ProgressSink for Found {
    fn event(&self, event: tap_core::progress::ProgressEvent<'_>) {
        if let tap_core::progress::ProgressEvent::Found { step, resource } = event {
            assert_eq!(step, "ingress");
            self.0.lock().unwrap().push(resource.to_owned());
        }
    }
}

#[tokio::test]
async fn progress_reports_every_existing_resource_as_found() {
    let mut m = converged();
    expect_no_mutation(&mut m);
    let found = Arc::new(Found::default());
    let config = Config::default();
    let ctx = context_with(config, true).with_progress(found.clone());
    step(m).apply(&ctx).await.unwrap();
    let mut seen = found.0.lock().unwrap().clone();
    seen.sort();
    let mut expected = vec![
        LOAD_BALANCER_ID.to_owned(),
        target_group_id("frontend"),
        target_group_id("api-gateway"),
        listener_id(80),
        rule_id(80, "api-gateway"),
    ];
    expected.sort();
    assert_eq!(seen, expected);
}

/// Creates whose answer was lost (or that AWS says already exist) are looked up and adopted: one
/// of each, never a second create.
#[tokio::test]
async fn lost_or_duplicate_creates_are_adopted_not_repeated() {
    let mut m = MockElbApi::new();
    // No target group of the environment besides the routed ones.
    m.expect_list_target_groups().returning(|| Ok(vec![]));
    m.expect_deregistration_delay().returning(|_| Ok(Some(30)));
    m.expect_find_load_balancer().times(1).returning(|_| Ok(None));
    m.expect_create_load_balancer().times(1).returning(|_| Ok(observed_lb()));
    // The listing finds nothing; the read after `DuplicateTargetGroupName` finds the group whose
    // earlier create took effect.
    m.expect_describe_target_groups().times(1).returning(move |names| {
        assert_eq!(names, ["tap-api-dev".to_string()]);
        Ok(vec![observed_tg("tap-api-dev", API_ARN, 8080, "/health")])
    });
    m.expect_set_deregistration_delay().returning(|_, _| Ok(()));
    m.expect_create_target_group()
        .withf(|s| s.name == "tap-fe-dev")
        .times(1)
        .returning(|s| Ok(observed_tg(&s.name, FE_ARN, s.port, &s.health_check.path)));
    m.expect_create_target_group()
        .withf(|s| s.name == "tap-api-dev")
        .times(1)
        .returning(|_| Err(AwsError::new("DuplicateTargetGroupName", "exists")));
    // The listener was made but its answer lost: found by port and adopted.
    m.expect_create_listener()
        .times(1)
        .returning(|_, _| Err(AwsError::no_answer("connection closed before message completed")));
    m.expect_list_listeners()
        .times(1)
        .returning(|_| Ok(vec![listener(L80_ARN, 80, "HTTP", ListenerAction::forward(FE_ARN))]));
    m.expect_create_rule().withf(|l, _| l == L80_ARN).times(1).returning(|_, _| Ok(RULE_ARN.into()));

    let ctx = context();
    let changes = step(m).apply(&ctx).await.unwrap();
    assert_eq!(changes.len(), 5, "{changes:#?}");
    let out: IngressOutputs = ctx.get("test").unwrap();
    assert_eq!(out.target_group_arns["api-gateway"], API_ARN);
}

/// A rule at the wanted priority that is not the wanted rule is not adopted.
#[tokio::test]
async fn a_foreign_rule_at_the_priority_is_a_conflict() {
    let mut m = MockElbApi::new();
    m.expect_find_load_balancer().returning(|_| Ok(Some(observed_lb())));
    m.expect_list_target_groups().returning(|| Ok(observed_tgs()));
    m.expect_deregistration_delay().returning(|_| Ok(Some(30)));
    m.expect_list_listeners().returning(|_| Ok(vec![listener(L80_ARN, 80, "HTTP", ListenerAction::forward(FE_ARN))]));
    let foreign = ObservedRule {
        conditions: vec![Condition { field: "path-pattern".into(), values: vec!["/other/*".into()] }],
        ..api_rule()
    };
    let calls = AtomicUsize::new(0);
    m.expect_list_rules().returning(move |_| {
        // Empty when the step looks, taken by someone else by the time it creates.
        if calls.fetch_add(1, Ordering::SeqCst) == 0 {
            Ok(vec![default_rule(L80_ARN, ListenerAction::forward(FE_ARN))])
        } else {
            Ok(vec![foreign.clone(), default_rule(L80_ARN, ListenerAction::forward(FE_ARN))])
        }
    });
    m.expect_create_rule().times(1).returning(|_, _| Err(AwsError::new("PriorityInUse", "in use")));
    let err = step(m).apply(&context()).await.unwrap_err();
    assert!(err.to_string().contains("PriorityInUse"), "{err}");
}

const OLD_ARN: &str = "arn:aws:elasticloadbalancing:us-east-1:123:targetgroup/tap-old-dev/3";
const PROD_ARN: &str = "arn:aws:elasticloadbalancing:us-east-1:123:targetgroup/tap-api-prod/4";

/// The default config without `api-gateway` (routed: frontend only).
fn config_without_api() -> Config {
    let mut config = Config::default();
    config.services.retain(|s| s.name != "api-gateway");
    for s in &mut config.services {
        s.allow_from.retain(|a| a != "api-gateway");
    }
    config
}

/// A converged environment whose config no longer routes to api-gateway: its target group and
/// rule are the environment's; `tap-old-dev` lacks `ManagedBy=tap`, `tap-api-prod` is another
/// environment's. `log` records the deletes.
fn removed_api_reads(log: Arc<std::sync::Mutex<Vec<String>>>) -> MockElbApi {
    let mut m = MockElbApi::new();
    m.expect_find_load_balancer().returning(|_| Ok(Some(observed_lb())));
    m.expect_describe_target_groups().never();
    m.expect_list_target_groups().times(1).returning(|| {
        let mut all = observed_tgs();
        all.push(observed_tg("tap-old-dev", OLD_ARN, 7000, "/"));
        all.push(observed_tg("tap-api-prod", PROD_ARN, 8080, "/health"));
        Ok(all)
    });
    m.expect_deregistration_delay().returning(|_| Ok(Some(30)));
    m.expect_list_listeners().returning(|_| Ok(vec![listener(L80_ARN, 80, "HTTP", ListenerAction::forward(FE_ARN))]));
    m.expect_list_rules().returning(|_| Ok(vec![api_rule(), default_rule(L80_ARN, ListenerAction::forward(FE_ARN))]));
    m.expect_describe_tags().returning(|arns| {
        let dev = tap_core::naming::Names::new(&Config::default());
        let prod = tap_core::naming::Names::new(&Config { environment: "prod".into(), ..Config::default() });
        let all = BTreeMap::from([
            (RULE_ARN.to_string(), dev.tags("ingress/listener/http/rule/api-gateway", "tap-alb-dev:80 /api/*")),
            (API_ARN.to_string(), dev.tags("ingress/target-group/api-gateway", "tap-api-dev")),
            (OLD_ARN.to_string(), vec![("Environment".to_string(), "dev".to_string())]),
            (PROD_ARN.to_string(), prod.tags("ingress/target-group/api-gateway", "tap-api-prod")),
        ]);
        Ok(all.into_iter().filter(|(arn, _)| arns.contains(arn)).collect())
    });
    let l = log.clone();
    m.expect_delete_rule().withf(|arn| arn == RULE_ARN).returning(move |_| {
        l.lock().unwrap().push("rule".into());
        Ok(())
    });
    let l = log;
    let tries = Arc::new(AtomicUsize::new(0));
    m.expect_delete_target_group().withf(|arn| arn == API_ARN).returning(move |_| {
        // Still in use by the draining service the first time.
        if tries.fetch_add(1, Ordering::SeqCst) == 0 {
            return Err(AwsError::new("ResourceInUse", "in use"));
        }
        l.lock().unwrap().push("target group".into());
        Ok(())
    });
    m.expect_delete_target_group().withf(|arn| arn != API_ARN).never();
    m
}

/// The deletes of the api-gateway's rule and target group.
fn api_deleted() -> Vec<(String, Action)> {
    ["ingress/listener/http/rule/api-gateway", "ingress/target-group/api-gateway"]
        .map(|id| (id.to_string(), Action::Delete))
        .to_vec()
}

fn summary_of(changes: &[Change]) -> Vec<(String, Action)> {
    let mut v: Vec<(String, Action)> = changes.iter().map(|c| (c.resource.clone(), c.action)).collect();
    v.sort();
    v
}

#[tokio::test]
async fn plan_lists_the_target_group_and_rule_of_a_service_no_longer_routed() {
    let log = Arc::default();
    let mut m = removed_api_reads(log);
    expect_no_mutation(&mut m);
    // Plan does not wait for the services step's prune.
    let changes = step(m).plan(&context_with(config_without_api(), true)).await.unwrap();
    assert_eq!(summary_of(&changes), api_deleted());
}

#[tokio::test]
async fn prune_deletes_the_rule_then_after_the_services_the_target_group_of_a_removed_service() {
    let log: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
    let step = step(removed_api_reads(log.clone()));
    let ctx = Arc::new(context_with(config_without_api(), true));
    ctx.expect_pruned([tap_core::step::Pruned::Services]);
    let run = tokio::spawn({
        let ctx = ctx.clone();
        async move { step.apply(&ctx).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(*log.lock().unwrap(), ["rule"], "the target group waits for the services step");
    assert!(ctx.try_get::<IngressOutputs>().is_some(), "the outputs are published before the prune waits");
    ctx.give_pruned(tap_core::step::Pruned::Services);
    let changes = tokio::time::timeout(Duration::from_secs(10), run).await.unwrap().unwrap().unwrap();
    assert_eq!(*log.lock().unwrap(), ["rule", "target group"]);
    assert_eq!(summary_of(&changes), api_deleted());
}

#[tokio::test]
async fn destroy_with_a_shorter_config_deletes_every_target_group_of_the_environment() {
    // After the load balancer is deleted it is gone.
    let found = Arc::new(AtomicUsize::new(0));
    let mut m = MockElbApi::new();
    m.expect_find_load_balancer().returning(move |_| Ok((found.fetch_add(1, Ordering::SeqCst) == 0).then(observed_lb)));
    m.expect_list_listeners().returning(|_| Ok(vec![listener(L80_ARN, 80, "HTTP", ListenerAction::forward(FE_ARN))]));
    m.expect_list_rules().returning(|_| Ok(vec![api_rule()]));
    m.expect_delete_rule().returning(|_| Ok(()));
    m.expect_delete_listener().returning(|_| Ok(()));
    m.expect_delete_load_balancer().returning(|_| Ok(()));
    m.expect_list_target_groups().returning(|| {
        let mut all = observed_tgs();
        all.push(observed_tg("tap-old-dev", OLD_ARN, 7000, "/"));
        Ok(all)
    });
    m.expect_deregistration_delay().returning(|_| Ok(Some(30)));
    m.expect_describe_tags().returning(|_| {
        let dev = tap_core::naming::Names::new(&Config::default());
        Ok(BTreeMap::from([
            (API_ARN.to_string(), dev.tags("ingress/target-group/api-gateway", "tap-api-dev")),
            (OLD_ARN.to_string(), vec![("Environment".to_string(), "dev".to_string())]),
        ]))
    });
    let deleted: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
    let d = deleted.clone();
    m.expect_delete_target_group().returning(move |arn| {
        d.lock().unwrap().push(arn.to_string());
        Ok(())
    });
    let mut config = Config::default();
    config.services.retain(|s| s.name == "frontend");
    let changes = step(m).destroy(&context_with(config, true)).await.unwrap();
    let mut deleted = deleted.lock().unwrap().clone();
    deleted.sort();
    assert_eq!(deleted, [API_ARN.to_string(), FE_ARN.to_string()], "not tap-old-dev (no ManagedBy tag)");
    assert!(changes.iter().any(|c| c.resource == "ingress/target-group/api-gateway"), "{changes:?}");
}

/// A load balancer whose subnets drifted and a listener whose default action drifted: plan lists
/// exactly the attributes whose calls apply makes, and nothing else.
#[tokio::test]
async fn plan_lists_exactly_what_apply_changes_on_a_drifted_load_balancer_and_listener() {
    fn drifted(apply: bool) -> MockElbApi {
        let mut m = MockElbApi::new();
        m.expect_find_load_balancer()
            .returning(|_| Ok(Some(ObservedLoadBalancer { subnet_ids: vec!["subnet-a".into()], ..observed_lb() })));
        m.expect_list_target_groups().returning(|| Ok(observed_tgs()));
        m.expect_deregistration_delay().returning(|_| Ok(Some(30)));
        m.expect_list_listeners()
            .returning(|_| Ok(vec![listener(L80_ARN, 80, "HTTP", ListenerAction::forward(API_ARN))]));
        m.expect_list_rules()
            .returning(|_| Ok(vec![api_rule(), default_rule(L80_ARN, ListenerAction::forward(API_ARN))]));
        m.expect_describe_tags().never();
        let times = usize::from(apply);
        m.expect_set_subnets().withf(|arn, s| arn == LB_ARN && s == subnets()).times(times).returning(|_, _| Ok(()));
        m.expect_modify_listener()
            .withf(|arn, s| {
                arn == L80_ARN && s.default_action == ListenerAction::forward(FE_ARN) && s.protocol == "HTTP"
            })
            .times(times)
            .returning(|_, _| Ok(()));
        expect_no_mutation(&mut m);
        m
    }
    let plan = step(drifted(false)).plan(&context()).await.unwrap();
    let apply = step(drifted(true)).apply(&context()).await.unwrap();
    assert_eq!(plan, apply, "what plan printed is what apply did");
    let attrs = |id: &str| -> Vec<String> {
        let change = plan.iter().find(|c| c.resource == id).unwrap_or_else(|| panic!("{id} in {plan:?}"));
        assert_eq!(change.action, Action::Update);
        change.attributes.iter().map(|a| a.attribute.clone()).collect()
    };
    assert_eq!(plan.len(), 2, "{plan:?}");
    assert_eq!(attrs(LOAD_BALANCER_ID), ["subnets"], "SetSubnets only");
    assert_eq!(attrs("ingress/listener/http"), ["default_action"], "one ModifyListener");

    // The typed updates are what the attributes say.
    let api = MockElbApi::new();
    let kind = LoadBalancerKind::new(&api, fast());
    let want = LoadBalancerSpec {
        name: "tap-alb-dev".into(),
        scheme: SCHEME.into(),
        subnet_ids: subnets(),
        security_group_ids: vec!["sg-alb".into()],
        tags: vec![],
    };
    let have = ObservedLoadBalancer { subnet_ids: vec!["subnet-a".into()], ..observed_lb() };
    let diff = kind.diff(&want, &have).unwrap().unwrap();
    assert_eq!(diff.update, LoadBalancerUpdate { subnets: Some(subnets()), security_groups: None });
    let internal = ObservedLoadBalancer { scheme: Some("internal".into()), ..observed_lb() };
    assert!(kind.diff(&want, &internal).unwrap_err().contains("scheme `internal`"), "a conflict");
}

#[tokio::test]
async fn deregistration_delay_drift_is_repaired_with_one_call() {
    let mut m = delay_drifted();
    m.expect_set_deregistration_delay()
        .withf(|arn, seconds| arn == FE_ARN && *seconds == 30)
        .times(1)
        .returning(|_, _| Ok(()));
    expect_no_mutation(&mut m);

    let applied = step(m).apply(&context()).await.unwrap();
    assert_eq!(applied.len(), 1, "{applied:?}");
    assert_eq!(applied[0].resource, "ingress/target-group/frontend");
    assert_eq!(applied[0].action, Action::Update);
    assert_eq!(applied[0].attributes.len(), 1);
    let attr = &applied[0].attributes[0];
    assert_eq!(
        (attr.attribute.as_str(), attr.old.as_deref(), attr.new.as_deref()),
        ("deregistration_delay", Some("300"), Some("30"))
    );

    // Plan lists exactly what apply did, and calls nothing that changes.
    let mut m = delay_drifted();
    expect_no_mutation(&mut m);
    let planned = step(m).plan(&context()).await.unwrap();
    assert_eq!(planned, applied);
}

#[tokio::test]
async fn a_configured_deregistration_delay_is_the_one_set() {
    let mut config = Config::default();
    config.ingress.deregistration_delay_seconds = 0;
    let mut m = MockElbApi::new();
    m.expect_find_load_balancer().returning(|_| Ok(Some(observed_lb())));
    m.expect_list_target_groups().returning(|| Ok(observed_tgs()));
    m.expect_deregistration_delay().times(2).returning(|_| Ok(Some(30)));
    m.expect_list_listeners().returning(|_| Ok(vec![listener(L80_ARN, 80, "HTTP", ListenerAction::forward(FE_ARN))]));
    m.expect_list_rules().returning(|_| Ok(vec![api_rule(), default_rule(L80_ARN, ListenerAction::forward(FE_ARN))]));
    m.expect_set_deregistration_delay().withf(|_, seconds| *seconds == 0).times(2).returning(|_, _| Ok(()));
    m.expect_modify_target_group().never();
    let changes = step(m).apply(&context_with(config, true)).await.unwrap();
    assert_eq!(changes.len(), 2, "{changes:?}");
}

fn shifting_desired(config: Config) -> (Context, Desired) {
    let ctx = Context::new(config);
    let load_balancer = LoadBalancerSpec {
        name: ctx.names.load_balancer(),
        scheme: SCHEME.into(),
        subnet_ids: vec![],
        security_group_ids: vec![],
        tags: vec![],
    };
    let desired = Desired { load_balancer, routed: Desired::routed(&ctx), certificate_arn: None };
    (ctx, desired)
}

#[test]
fn a_traffic_shifting_service_gets_an_alternate_group_a_production_rule_and_a_test_rule() {
    let mut config = Config::default();
    config.deploy.strategy = tap_core::strategy::Strategy::BlueGreen;
    let (ctx, desired) = shifting_desired(config);
    let fe = desired.routed.iter().find(|r| r.service == "frontend").unwrap();
    assert_eq!(
        fe.target_groups(),
        vec![
            ("ingress/target-group/frontend".to_string(), "tap-fe-dev".to_string()),
            ("ingress/target-group/frontend/alternate".to_string(), "tap-fe-alt-dev".to_string()),
        ]
    );
    let arns: BTreeMap<String, String> =
        desired.routed.iter().flat_map(|r| r.target_groups()).map(|(id, name)| (id, format!("arn:{name}"))).collect();
    let listeners = IngressStep::desired_listeners(&ctx, &desired, &arns);
    assert_eq!(listeners.len(), 1);
    // The listener's default action stays a plain forward: ECS shifts traffic on rules only.
    assert_eq!(listeners[0].spec.default_action, ListenerAction::forward("arn:tap-fe-dev"));
    let rules: Vec<(&str, i32, &str, Option<&str>, &RuleTarget)> = listeners[0]
        .rules
        .iter()
        .map(|(id, r)| {
            (id.as_str(), r.priority, r.path_pattern.as_str(), r.header.as_ref().map(|h| h.0.as_str()), &r.target)
        })
        .collect();
    let pair = |short: &str| RuleTarget::Shifting {
        primary: format!("arn:tap-{short}-dev"),
        alternate: format!("arn:tap-{short}-alt-dev"),
    };
    let (fe_pair, api_pair) = (pair("fe"), pair("api"));
    assert_eq!(
        rules,
        vec![
            ("ingress/listener/http/rule/frontend", 50000, "/*", None, &fe_pair),
            ("ingress/listener/http/rule/frontend/test", 49999, "/*", Some("x-tap-test-traffic"), &fe_pair),
            ("ingress/listener/http/rule/api-gateway", 10, "/api/*", None, &api_pair),
            ("ingress/listener/http/rule/api-gateway/test", 9, "/api/*", Some("x-tap-test-traffic"), &api_pair),
        ]
    );
    // Written with all the weight on the service's own group.
    assert_eq!(
        fe_pair.action(),
        ListenerAction::Weighted {
            target_groups: vec![("arn:tap-fe-dev".into(), 100), ("arn:tap-fe-alt-dev".into(), 0)]
        }
    );
}

#[test]
fn the_weights_ecs_moved_are_never_repaired_but_a_missing_group_is() {
    let want = RuleWant {
        listener_arn: L80_ARN.into(),
        spec: RuleSpec {
            priority: 10,
            path_pattern: "/api/*".into(),
            header: None,
            target: RuleTarget::Shifting { primary: API_ARN.into(), alternate: "arn:alt".into() },
            tags: vec![],
        },
    };
    let observed = |actions: Vec<ListenerAction>| ObservedRule {
        arn: RULE_ARN.into(),
        priority: Some(10),
        is_default: false,
        conditions: vec![Condition { field: "path-pattern".into(), values: vec!["/api/*".into()] }],
        actions,
    };
    let m = MockElbApi::new();
    let kind = RuleKind::new(&m);
    // After a deployment ECS left all traffic on the alternate group: that is no drift.
    let moved =
        observed(vec![ListenerAction::Weighted { target_groups: vec![("arn:alt".into(), 100), (API_ARN.into(), 0)] }]);
    assert!(kind.diff(&want, &moved).unwrap().is_none());
    // A rule that forwards to one group (the service was rolling) gets the pair: actions only.
    let single = observed(vec![ListenerAction::forward(API_ARN)]);
    let diff = kind.diff(&want, &single).unwrap().expect("the pair is missing");
    assert!(diff.update.actions && !diff.update.conditions);
}
