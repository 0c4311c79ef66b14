//! Unit tests of the alarms step over a mocked [`AlarmsApi`].

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use tap_core::naming::Tag;
use tap_core::outputs::{TrafficShift, PENDING};
use tap_core::{Action, AwsError, Config};

use super::*;

const LB_ARN: &str = "arn:aws:elasticloadbalancing:us-east-1:123:loadbalancer/app/tap-alb-dev/abc";
const FE_ARN: &str = "arn:aws:elasticloadbalancing:us-east-1:123:targetgroup/tap-fe-dev/1";
const FE_ALT_ARN: &str = "arn:aws:elasticloadbalancing:us-east-1:123:targetgroup/tap-fe-alt-dev/3";
const API_ARN: &str = "arn:aws:elasticloadbalancing:us-east-1:123:targetgroup/tap-api-dev/2";

fn context_with(config: Config, shifts: BTreeMap<String, TrafficShift>) -> Context {
    let ctx = Context::new(config);
    ctx.put(IngressOutputs {
        load_balancer_arn: LB_ARN.into(),
        dns_name: "tap-alb-dev.example".into(),
        target_group_arns: BTreeMap::from([("frontend".into(), FE_ARN.into()), ("api-gateway".into(), API_ARN.into())]),
        traffic_shifts: shifts,
    });
    ctx
}

fn context() -> Context {
    context_with(Config::default(), BTreeMap::new())
}

fn arn(name: &str) -> String {
    format!("arn:aws:cloudwatch:us-east-1:123:alarm:{name}")
}

/// What CloudWatch holds after the step put `spec`.
fn stored(spec: &AlarmSpec) -> ObservedAlarm {
    ObservedAlarm { arn: arn(&spec.name), state: Some("OK".into()), ..ObservedAlarm::from_spec(spec) }
}

/// Every alarm of the default config, as the step wants them.
fn wanted(ctx: &Context) -> Vec<DesiredAlarm> {
    desired(ctx, &ctx.get(STEP).unwrap()).unwrap()
}

/// A mock whose CloudWatch holds `alarms` (name → alarm, tags by ARN) and records every write.
struct World {
    alarms: Mutex<Vec<ObservedAlarm>>,
    tags: BTreeMap<String, Vec<Tag>>,
    puts: Mutex<Vec<AlarmSpec>>,
    deletes: Mutex<Vec<String>>,
}

fn mock(world: Arc<World>) -> MockAlarmsApi {
    let mut m = MockAlarmsApi::new();
    let w = world.clone();
    m.expect_list_alarms().returning(move |prefix| {
        Ok(w.alarms.lock().unwrap().iter().filter(|a| a.name.starts_with(prefix)).cloned().collect())
    });
    let w = world.clone();
    m.expect_find_alarm().returning(move |name| Ok(w.alarms.lock().unwrap().iter().find(|a| a.name == name).cloned()));
    let w = world.clone();
    m.expect_list_tags().returning(move |arn| match w.tags.get(arn) {
        Some(tags) => Ok(tags.clone()),
        None => Err(AwsError::new("ResourceNotFoundException", "no such alarm")),
    });
    let w = world.clone();
    m.expect_put_metric_alarm().returning(move |spec| {
        w.puts.lock().unwrap().push(spec.clone());
        let mut alarms = w.alarms.lock().unwrap();
        alarms.retain(|a| a.name != spec.name);
        alarms.push(stored(spec));
        Ok(())
    });
    let w = world;
    m.expect_delete_alarms().returning(move |names| {
        w.deletes.lock().unwrap().extend(names.iter().cloned());
        w.alarms.lock().unwrap().retain(|a| !names.contains(&a.name));
        Ok(())
    });
    m
}

fn world(alarms: Vec<ObservedAlarm>, tags: BTreeMap<String, Vec<Tag>>) -> Arc<World> {
    Arc::new(World { alarms: Mutex::new(alarms), tags, puts: Mutex::default(), deletes: Mutex::default() })
}

fn step(world: &Arc<World>) -> AlarmsStep {
    AlarmsStep::new(Arc::new(mock(world.clone())))
}

fn summary(changes: &[Change]) -> Vec<(String, Action)> {
    let mut v: Vec<(String, Action)> = changes.iter().map(|c| (c.resource.clone(), c.action)).collect();
    v.sort();
    v
}

#[tokio::test]
async fn creates_every_alarm_when_nothing_exists_and_publishes_their_names() {
    let ctx = context();
    let w = world(vec![], BTreeMap::new());
    let plan = step(&w).plan(&ctx).await.unwrap();
    assert!(w.puts.lock().unwrap().is_empty(), "plan puts nothing");
    assert_eq!(plan.len(), 10, "4 for each routed service, 2 for processing-service: {plan:?}");
    assert!(plan.iter().all(|c| c.action == Action::Create));

    let apply = step(&w).apply(&ctx).await.unwrap();
    assert_eq!(summary(&apply), summary(&plan), "deploy does what plan showed");
    let puts = w.puts.lock().unwrap().clone();
    assert_eq!(puts.len(), 10);
    let put = |name: &str| puts.iter().find(|p| p.name == name).unwrap_or_else(|| panic!("{name} not put: {puts:?}"));

    let cpu = put("tap-dev-frontend-cpu-high");
    assert_eq!(
        cpu.metric,
        AlarmMetric::Single(MetricStat::new(
            "AWS/ECS",
            "CPUUtilization",
            vec![("ServiceName".into(), "tap-frontend-dev".into()), ("ClusterName".into(), "tap-cluster-dev".into())],
            "Average",
        ))
    );
    assert_eq!((cpu.threshold, cpu.period, cpu.evaluation_periods), (90.0, 60, 3));
    assert_eq!((cpu.comparison.as_str(), cpu.treat_missing_data.as_str()), (COMPARISON, "notBreaching"));
    for (k, v) in [
        ("Project", "tap"),
        ("Environment", "dev"),
        ("ManagedBy", "tap"),
        ("Name", "tap-dev-frontend-cpu-high"),
        ("tap:component", "alarms/cpu-high/frontend"),
    ] {
        assert!(cpu.tags.contains(&(k.into(), v.into())), "tag {k}={v} missing: {:?}", cpu.tags);
    }
    let unhealthy = put("tap-dev-api-gateway-unhealthy-targets");
    assert_eq!(
        unhealthy.metric,
        AlarmMetric::Single(MetricStat::new(
            "AWS/ApplicationELB",
            "UnHealthyHostCount",
            vec![
                ("TargetGroup".into(), "targetgroup/tap-api-dev/2".into()),
                ("LoadBalancer".into(), "app/tap-alb-dev/abc".into()),
            ],
            "Maximum",
        ))
    );
    assert_eq!(unhealthy.threshold, 1.0);
    let errors = put("tap-dev-frontend-target-5xx");
    assert!(
        matches!(&errors.metric, AlarmMetric::Single(m) if m.metric_name == "HTTPCode_Target_5XX_Count" && m.statistic == "Sum")
    );
    assert_eq!(errors.threshold, 10.0);
    assert!(!puts.iter().any(|p| p.name.starts_with("tap-dev-processing-service-") && p.name.ends_with("5xx")));

    let out: AlarmsOutputs = ctx.get("test").unwrap();
    assert_eq!(
        out.alarm_names["frontend"],
        [
            "tap-dev-frontend-cpu-high",
            "tap-dev-frontend-memory-high",
            "tap-dev-frontend-target-5xx",
            "tap-dev-frontend-unhealthy-targets"
        ]
    );
    assert_eq!(out.alarm_names["processing-service"].len(), 2);
}

#[tokio::test]
async fn leaves_alone_what_matches_with_no_write_and_no_tag_read() {
    let ctx = context();
    let w = world(wanted(&ctx).iter().map(|d| stored(&d.spec)).collect(), BTreeMap::new());
    let mut m = MockAlarmsApi::new();
    let alarms = w.alarms.lock().unwrap().clone();
    m.expect_list_alarms().times(2).returning(move |_| Ok(alarms.clone()));
    m.expect_put_metric_alarm().never();
    m.expect_delete_alarms().never();
    m.expect_list_tags().never();
    let step = AlarmsStep::new(Arc::new(m));
    assert!(step.plan(&ctx).await.unwrap().is_empty());
    assert!(step.apply(&ctx).await.unwrap().is_empty());
    assert_eq!(ctx.get::<AlarmsOutputs>("test").unwrap().alarm_names.len(), 3);
}

#[tokio::test]
async fn repairs_a_drifted_threshold_with_one_put_of_the_whole_definition() {
    let ctx = context();
    let mut alarms: Vec<ObservedAlarm> = wanted(&ctx).iter().map(|d| stored(&d.spec)).collect();
    let drifted = alarms.iter_mut().find(|a| a.name == "tap-dev-api-gateway-memory-high").unwrap();
    drifted.threshold = Some(50.0);
    drifted.treat_missing_data = None;
    let w = world(alarms, BTreeMap::new());
    let plan = step(&w).plan(&ctx).await.unwrap();
    assert_eq!(plan.len(), 1, "{plan:?}");
    assert_eq!((plan[0].resource.as_str(), plan[0].action), ("alarms/memory-high/api-gateway", Action::Update));
    let attrs: Vec<(&str, Option<&str>, Option<&str>)> =
        plan[0].attributes.iter().map(|a| (a.attribute.as_str(), a.old.as_deref(), a.new.as_deref())).collect();
    assert_eq!(
        attrs,
        [("threshold", Some("50"), Some("90")), ("treat_missing_data", Some("missing"), Some("notBreaching"))]
    );
    assert!(w.puts.lock().unwrap().is_empty());

    let apply = step(&w).apply(&ctx).await.unwrap();
    assert_eq!(apply, plan, "deploy does what plan showed");
    let puts = w.puts.lock().unwrap().clone();
    assert_eq!(puts.len(), 1);
    assert_eq!((puts[0].name.as_str(), puts[0].threshold), ("tap-dev-api-gateway-memory-high", 90.0));
    assert!(step(&w).plan(&ctx).await.unwrap().is_empty(), "converged");
}

#[tokio::test]
async fn prunes_a_removed_services_alarms_and_leaves_other_environments_alone() {
    let ctx = context();
    let mut alarms: Vec<ObservedAlarm> = wanted(&ctx).iter().map(|d| stored(&d.spec)).collect();
    let names = &ctx.names;
    let old_tags = |what: &str, env: &str| {
        let mut tags = names.tags(&format!("alarms/{what}/reports"), "x");
        tags.retain(|(k, _)| k != "Environment");
        tags.push(("Environment".into(), env.into()));
        tags
    };
    let gone = |name: &str| ObservedAlarm { name: name.into(), arn: arn(name), ..stored(&wanted(&ctx)[0].spec) };
    alarms.push(gone("tap-dev-reports-cpu-high"));
    alarms.push(gone("tap-dev-reports-memory-high"));
    // Environment `dev-2`'s alarm shares the prefix `tap-dev-`; its tags tell it apart.
    alarms.push(gone("tap-dev-2-reports-cpu-high"));
    // Someone else's alarm under the prefix, without tap's tags.
    alarms.push(gone("tap-dev-hand-made"));
    let tags = BTreeMap::from([
        (arn("tap-dev-reports-cpu-high"), old_tags("cpu-high", "dev")),
        (arn("tap-dev-reports-memory-high"), old_tags("memory-high", "dev")),
        (arn("tap-dev-2-reports-cpu-high"), old_tags("cpu-high", "dev-2")),
        (arn("tap-dev-hand-made"), vec![("Owner".into(), "someone".into())]),
    ]);
    let w = world(alarms, tags);
    let plan = step(&w).plan(&ctx).await.unwrap();
    assert_eq!(
        summary(&plan),
        [
            ("alarms/cpu-high/reports".to_owned(), Action::Delete),
            ("alarms/memory-high/reports".to_owned(), Action::Delete)
        ]
    );
    assert!(w.deletes.lock().unwrap().is_empty(), "plan deletes nothing");
    step(&w).apply(&ctx).await.unwrap();
    let mut deleted = w.deletes.lock().unwrap().clone();
    deleted.sort();
    assert_eq!(deleted, ["tap-dev-reports-cpu-high", "tap-dev-reports-memory-high"]);
}

#[tokio::test]
async fn disabled_alarms_are_deleted_and_named_nowhere() {
    let mut config = Config::default();
    config.alarms.enabled = false;
    let ctx = context_with(config, BTreeMap::new());
    let all = wanted(&context());
    let tags = all.iter().map(|d| (arn(&d.spec.name), d.spec.tags.clone())).collect();
    let w = world(all.iter().map(|d| stored(&d.spec)).collect(), tags);
    let changes = step(&w).apply(&ctx).await.unwrap();
    assert_eq!(changes.len(), 10);
    assert!(changes.iter().all(|c| c.action == Action::Delete));
    assert!(ctx.get::<AlarmsOutputs>("test").unwrap().alarm_names.is_empty());
    assert!(w.puts.lock().unwrap().is_empty());
}

#[tokio::test]
async fn destroy_deletes_every_alarm_whatever_the_config_says() {
    let ctx = context();
    let mut alarms: Vec<ObservedAlarm> = wanted(&ctx).iter().map(|d| stored(&d.spec)).collect();
    alarms.push(ObservedAlarm {
        name: "tap-dev-reports-cpu-high".into(),
        arn: arn("tap-dev-reports-cpu-high"),
        ..alarms[0].clone()
    });
    let tags = BTreeMap::from([(arn("tap-dev-reports-cpu-high"), ctx.names.tags("alarms/cpu-high/reports", "x"))]);
    let w = world(alarms, tags);
    // Destroy reads no input: a fresh context without outputs.
    let bare = Context::new(Config::default());
    let changes = step(&w).destroy(&bare).await.unwrap();
    assert_eq!(changes.len(), 11, "{changes:?}");
    assert!(w.alarms.lock().unwrap().is_empty());
    assert!(step(&w).destroy(&bare).await.unwrap().is_empty(), "an empty environment: nothing to do");
}

#[tokio::test]
async fn a_traffic_shifting_service_is_watched_on_both_target_groups() {
    let shift = TrafficShift {
        alternate_target_group_arn: FE_ALT_ARN.into(),
        production_listener_rule_arn: "rule-1".into(),
        test_listener_rule_arn: "rule-2".into(),
    };
    let ctx = context_with(Config::default(), BTreeMap::from([("frontend".into(), shift)]));
    let all = wanted(&ctx);
    let fe = all.iter().find(|d| d.spec.name == "tap-dev-frontend-unhealthy-targets").unwrap();
    let AlarmMetric::Math { metrics, expression } = &fe.spec.metric else { panic!("{:?}", fe.spec.metric) };
    assert_eq!(expression, "SUM([m1, m2])");
    let groups: Vec<&str> = metrics
        .iter()
        .flat_map(|m| m.dimensions.iter().filter(|(k, _)| k == "TargetGroup").map(|(_, v)| v.as_str()))
        .collect();
    assert_eq!(groups, ["targetgroup/tap-fe-dev/1", "targetgroup/tap-fe-alt-dev/3"]);
    assert_eq!(fe.spec.metric.metric_count(), 2);
    let api = all.iter().find(|d| d.spec.name == "tap-dev-api-gateway-target-5xx").unwrap();
    assert!(matches!(api.spec.metric, AlarmMetric::Single(_)), "a rolling service has one target group");
    // An alarm on one group only is updated to cover both.
    let mut alarms: Vec<ObservedAlarm> = wanted(&context()).iter().map(|d| stored(&d.spec)).collect();
    alarms.retain(|a| a.name.starts_with("tap-dev-frontend-"));
    let w = world(alarms, BTreeMap::new());
    let mut config = Config::default();
    config.services.truncate(1);
    let ctx = context_with(config, ctx.get::<IngressOutputs>("test").unwrap().traffic_shifts);
    let plan = step(&w).plan(&ctx).await.unwrap();
    assert_eq!(
        summary(&plan),
        [
            ("alarms/target-5xx/frontend".to_owned(), Action::Update),
            ("alarms/unhealthy-targets/frontend".to_owned(), Action::Update)
        ]
    );
}

#[tokio::test]
async fn thresholds_come_from_the_service_then_the_alarms_section() {
    let mut config = Config::default();
    config.alarms.cpu_high_percent = 80;
    config.alarms.period_seconds = 300;
    config.services[2].alarms.cpu_high_percent = Some(95);
    let ctx = context_with(config, BTreeMap::new());
    let all = wanted(&ctx);
    let cpu = |name: &str| all.iter().find(|d| d.spec.name == name).unwrap().spec.clone();
    assert_eq!(cpu("tap-dev-frontend-cpu-high").threshold, 80.0);
    assert_eq!(cpu("tap-dev-processing-service-cpu-high").threshold, 95.0);
    assert_eq!(cpu("tap-dev-processing-service-cpu-high").period, 300);
}

#[tokio::test]
async fn plan_with_inputs_still_to_come_lists_creates_and_puts_nothing() {
    // No cluster yet either: the ECS metrics' alarms name it by the environment's names.
    let ctx = Context::new(Config::default());
    ctx.put(IngressOutputs {
        load_balancer_arn: PENDING.into(),
        dns_name: PENDING.into(),
        target_group_arns: BTreeMap::from([
            ("frontend".into(), PENDING.into()),
            ("api-gateway".into(), PENDING.into()),
        ]),
        traffic_shifts: BTreeMap::new(),
    });
    let mut m = MockAlarmsApi::new();
    m.expect_list_alarms().returning(|_| Ok(vec![]));
    m.expect_put_metric_alarm().never();
    m.expect_delete_alarms().never();
    let changes = AlarmsStep::new(Arc::new(m)).plan(&ctx).await.unwrap();
    assert_eq!(changes.len(), 10);
    assert_eq!(ctx.get::<AlarmsOutputs>("test").unwrap().alarm_names["api-gateway"].len(), 4, "names known in plan");
}

#[tokio::test]
async fn throttling_fails_the_step_as_retryable_naming_the_action() {
    let ctx = context();
    let mut m = MockAlarmsApi::new();
    m.expect_list_alarms().returning(|_| Err(AwsError::throttling()));
    m.expect_put_metric_alarm().never();
    let err = AlarmsStep::new(Arc::new(m)).apply(&ctx).await.unwrap_err();
    assert!(err.is_retryable(), "{err}");
    assert!(err.to_string().contains("DescribeAlarms"), "{err}");

    let mut m = MockAlarmsApi::new();
    m.expect_list_alarms().returning(|_| Ok(vec![]));
    m.expect_put_metric_alarm().returning(|_| Err(AwsError::throttling()));
    let err = AlarmsStep::new(Arc::new(m)).apply(&ctx).await.unwrap_err();
    assert!(err.is_retryable() && err.to_string().contains("PutMetricAlarm"), "{err}");
}

#[test]
fn arn_suffixes_are_the_cloudwatch_dimension_values() {
    assert_eq!(arn_suffix(LB_ARN), "app/tap-alb-dev/abc");
    assert_eq!(arn_suffix(FE_ARN), "targetgroup/tap-fe-dev/1");
    assert_eq!(arn_suffix(PENDING), PENDING);
    assert_eq!(alarm::service_of("alarms/cpu-high/api-gateway"), Some("api-gateway"));
}

#[tokio::test]
async fn status_reports_each_alarms_state_and_the_missing_ones() {
    let ctx = context();
    let mut alarms: Vec<ObservedAlarm> = wanted(&ctx).iter().map(|d| stored(&d.spec)).collect();
    alarms.retain(|a| a.name != "tap-dev-frontend-memory-high");
    alarms.iter_mut().find(|a| a.name == "tap-dev-api-gateway-target-5xx").unwrap().state = Some("ALARM".into());
    let w = world(alarms, BTreeMap::new());
    let states = status::status(&mock(w), &ctx).await.unwrap();
    let of = |service: &str, alarm: &str| {
        states[service].iter().find(|a| a.alarm == alarm).map(|a| a.state.clone()).unwrap_or_default()
    };
    assert_eq!(of("api-gateway", "target-5xx"), "ALARM");
    assert_eq!(of("frontend", "memory-high"), "MISSING");
    assert_eq!(of("processing-service", "cpu-high"), "OK");
    assert_eq!(states["processing-service"].len(), 2);
    let text = status::render_table(&states);
    assert!(
        text.lines().any(|l| l.contains("api-gateway") && l.contains("target-5xx") && l.ends_with("ALARM")),
        "{text}"
    );
}

/// `tap-dev-frontend-cpu-high` is another environment's (a suffix and service that spell the same
/// name): plan lists a conflict naming it, apply puts no alarm; the rest is this environment's,
/// known from the description tap wrote, without asking CloudWatch for tags.
#[tokio::test]
async fn an_alarm_of_this_name_with_another_environments_tags_is_a_conflict_never_overwritten() {
    let ctx = context();
    let theirs = "tap-dev-frontend-cpu-high";
    let alarms: Vec<ObservedAlarm> = wanted(&ctx)
        .iter()
        .map(|d| {
            let mut a = ObservedAlarm { tags: None, ..stored(&d.spec) };
            if a.name == theirs {
                a.description = Some("cpu-high (dev-frontend): average CPU".into());
                a.threshold = Some(50.0);
            }
            a
        })
        .collect();
    let prod = Config { environment: "dev-frontend".into(), ..Config::default() };
    let tags = BTreeMap::from([(arn(theirs), tap_core::naming::Names::new(&prod).tags("alarms/x", theirs))]);
    let w = world(alarms, tags);
    let plan = step(&w).plan(&ctx).await.unwrap();
    assert_eq!(summary(&plan), [("alarms/cpu-high/frontend".to_string(), Action::Conflict)], "{plan:#?}");
    assert!(plan[0].reason.as_deref().unwrap().contains("environment `dev-frontend`"), "{plan:?}");
    let err = step(&w).apply(&ctx).await.unwrap_err();
    assert!(matches!(err, StepError::Conflict { .. }) && err.to_string().contains(theirs), "{err}");
    assert!(w.puts.lock().unwrap().is_empty(), "nothing overwritten");
}

#[test]
fn the_environment_of_an_alarm_is_read_from_the_description_tap_writes() {
    assert_eq!(alarm::description_environment(Some("api-x (dev): average CPU at or above 90%")), Some("dev"));
    assert_eq!(alarm::description_environment(Some("a (b) (x-dev): …")), Some("x-dev"));
    assert_eq!(alarm::description_environment(Some("made by hand")), None);
    assert_eq!(alarm::description_environment(None), None);
}
