//! End-to-end test of the alarms step: `tap` against moto_server, read back with the CloudWatch and
//! ECS SDKs. The default config deploys four alarms per routed service and two for
//! processing-service, with the SPEC's metrics, dimensions, thresholds and tags, named in each
//! service's `deploymentConfiguration.alarms` with rollback on; plan afterwards is empty and a
//! second deploy makes no mutating call; a threshold and a service's alarm list changed behind
//! tap's back are shown by plan and repaired by deploy; `tap status` shows each alarm's state; a
//! removed service's alarms are pruned; destroy leaves no alarm. A traffic-shifting service's load
//! balancer alarms, summed over both target groups with metric math, round-trip through CloudWatch
//! (the step run alone on the emulator, with the ingress outputs the lead's blue/green fills in).

use std::collections::BTreeMap;

use aws_sdk_cloudwatch::types::{ComparisonOperator, MetricAlarm, StateValue, Statistic};
use serde_json::Value;
use tests::services_toml::{API_GATEWAY, FRONTEND};
use tests::{changes_of, tap_json, Alarms, TestEnv};

fn dimensions(alarm: &MetricAlarm) -> BTreeMap<String, String> {
    alarm
        .dimensions()
        .iter()
        .map(|d| (d.name().unwrap_or_default().into(), d.value().unwrap_or_default().into()))
        .collect()
}

/// The CloudWatch dimension value of a load balancer (`app/<name>/<id>`, after `:loadbalancer/`)
/// or a target group (`targetgroup/<name>/<id>`) ARN.
fn dimension_of(arn: &str, kind: &str) -> String {
    let (_, rest) = arn.split_once(&format!(":{kind}/")).unwrap_or_else(|| panic!("{arn} is no {kind} ARN"));
    if kind == "targetgroup" {
        format!("targetgroup/{rest}")
    } else {
        rest.to_owned()
    }
}

async fn elb_arns(c: &tests::AwsClients, s: &str) -> (String, BTreeMap<&'static str, String>) {
    let lb = c.elbv2.describe_load_balancers().names(format!("tap-alb-{s}")).send().await.unwrap();
    let lb_arn = lb.load_balancers()[0].load_balancer_arn().unwrap().to_owned();
    let mut groups = BTreeMap::new();
    for (service, short) in [("frontend", "fe"), ("api-gateway", "api")] {
        let out = c.elbv2.describe_target_groups().names(format!("tap-{short}-{s}")).send().await.unwrap();
        groups.insert(service, out.target_groups()[0].target_group_arn().unwrap().to_owned());
    }
    (lb_arn, groups)
}

/// Every alarm of the default platform, as CloudWatch holds it.
async fn assert_alarms_are_the_spec(c: &tests::AwsClients, s: &str) {
    let alarms = Alarms::read(c, s).await;
    let mut expected: Vec<String> = Vec::new();
    for service in ["frontend", "api-gateway", "processing-service"] {
        expected.push(format!("tap-{s}-{service}-cpu-high"));
        expected.push(format!("tap-{s}-{service}-memory-high"));
        if service != "processing-service" {
            expected.push(format!("tap-{s}-{service}-unhealthy-targets"));
            expected.push(format!("tap-{s}-{service}-target-5xx"));
        }
    }
    expected.sort();
    assert_eq!(alarms.names(), expected);
    let (lb_arn, groups) = elb_arns(c, s).await;
    for alarm in &alarms.0 {
        let name = alarm.alarm_name().unwrap();
        let service = ["frontend", "api-gateway", "processing-service"]
            .into_iter()
            .find(|svc| name.starts_with(&format!("tap-{s}-{svc}-")))
            .unwrap();
        let what = name.trim_start_matches(&format!("tap-{s}-{service}-"));
        assert_eq!((alarm.period(), alarm.evaluation_periods()), (Some(60), Some(3)), "{name}");
        assert_eq!(alarm.comparison_operator(), Some(&ComparisonOperator::GreaterThanOrEqualToThreshold), "{name}");
        assert_eq!(alarm.treat_missing_data(), Some("notBreaching"), "{name}");
        let (namespace, metric, statistic, threshold) = match what {
            "cpu-high" => ("AWS/ECS", "CPUUtilization", Statistic::Average, 90.0),
            "memory-high" => ("AWS/ECS", "MemoryUtilization", Statistic::Average, 90.0),
            "unhealthy-targets" => ("AWS/ApplicationELB", "UnHealthyHostCount", Statistic::Maximum, 1.0),
            "target-5xx" => ("AWS/ApplicationELB", "HTTPCode_Target_5XX_Count", Statistic::Sum, 10.0),
            other => panic!("unexpected alarm {other}"),
        };
        assert_eq!(
            (alarm.namespace(), alarm.metric_name(), alarm.statistic(), alarm.threshold()),
            (Some(namespace), Some(metric), Some(&statistic), Some(threshold)),
            "{name}"
        );
        let want = if namespace == "AWS/ECS" {
            BTreeMap::from([
                ("ClusterName".to_owned(), format!("tap-cluster-{s}")),
                ("ServiceName".to_owned(), format!("tap-{service}-{s}")),
            ])
        } else {
            BTreeMap::from([
                ("LoadBalancer".to_owned(), dimension_of(&lb_arn, "loadbalancer")),
                ("TargetGroup".to_owned(), dimension_of(&groups[service], "targetgroup")),
            ])
        };
        assert_eq!(dimensions(alarm), want, "{name}");
        assert!(want.values().all(|v| !v.starts_with("arn:")), "dimension values are ARN suffixes: {want:?}");
        let tags = c.cloudwatch.list_tags_for_resource().resource_arn(alarm.alarm_arn().unwrap()).send().await.unwrap();
        let tags: BTreeMap<&str, &str> = tags.tags().iter().map(|t| (t.key().unwrap(), t.value().unwrap())).collect();
        let component = format!("alarms/{what}/{service}");
        for (k, v) in [
            ("Project", "tap"),
            ("Environment", s),
            ("ManagedBy", "tap"),
            ("Name", name),
            ("tap:component", &component),
        ] {
            assert_eq!(tags.get(k), Some(&v), "{name}: tag {k}");
        }
    }
}

/// The alarm names each ECS service's deployment configuration watches, with enable and rollback.
async fn deployment_alarms(c: &tests::AwsClients, s: &str) -> BTreeMap<String, (Vec<String>, bool, bool)> {
    let names: Vec<String> =
        ["frontend", "api-gateway", "processing-service"].iter().map(|svc| format!("tap-{svc}-{s}")).collect();
    let out =
        c.ecs.describe_services().cluster(format!("tap-cluster-{s}")).set_services(Some(names)).send().await.unwrap();
    out.services()
        .iter()
        .filter(|svc| svc.status() == Some("ACTIVE"))
        .filter_map(|svc| {
            let a = svc.deployment_configuration()?.alarms()?;
            Some((svc.service_name()?.to_owned(), (a.alarm_names().to_vec(), a.enable(), a.rollback())))
        })
        .collect()
}

#[tokio::test]
async fn alarms_are_deployed_converged_repaired_shown_pruned_and_destroyed() {
    let env = TestEnv::new("alarms");
    let s = env.suffix.clone();
    let c = env.clients().await;

    // Deploy from nothing: ten alarms, each service naming its own.
    let deployed = tap_json(&env, &["deploy", "--no-wait"], 0);
    let created = changes_of(&deployed, "alarms");
    assert_eq!(created.len(), 10, "{created:?}");
    assert!(created.iter().all(|(_, action)| action == "create"), "{created:?}");
    assert_alarms_are_the_spec(&c, &s).await;
    env.inventory().await.assert_spec("after deploy");
    let watched = deployment_alarms(&c, &s).await;
    assert_eq!(watched.len(), 3, "{watched:?}");
    for (service, kinds) in [
        ("frontend", &["cpu-high", "memory-high", "target-5xx", "unhealthy-targets"][..]),
        ("processing-service", &["cpu-high", "memory-high"][..]),
    ] {
        let names: Vec<String> = kinds.iter().map(|k| format!("tap-{s}-{service}-{k}")).collect();
        assert_eq!(watched[&format!("tap-{service}-{s}")], (names, true, true), "{service}");
    }

    // Converged: plan is empty, a second deploy writes nothing.
    let plan = tap_json(&env, &["plan", "--detailed-exitcode"], 0);
    assert_eq!(plan["changes"].as_array().map(Vec::len), Some(0), "{plan:#}");
    let again = tap_json(&env, &["deploy", "--no-wait"], 0);
    assert_eq!(again["calls"]["mutating"], 0, "{:?}", tests::mutating_calls(&again));

    // Drift behind tap's back: a threshold, and a service that no longer watches its alarms.
    let cpu = format!("tap-{s}-api-gateway-cpu-high");
    let alarm = Alarms::read(&c, &s).await.get(&cpu).cloned().unwrap();
    c.cloudwatch
        .put_metric_alarm()
        .alarm_name(&cpu)
        .set_alarm_description(alarm.alarm_description().map(str::to_owned))
        .namespace("AWS/ECS")
        .metric_name("CPUUtilization")
        .statistic(Statistic::Average)
        .set_dimensions(Some(alarm.dimensions().to_vec()))
        .period(60)
        .evaluation_periods(3)
        .threshold(50.0)
        .comparison_operator(ComparisonOperator::GreaterThanOrEqualToThreshold)
        .treat_missing_data("notBreaching")
        .send()
        .await
        .unwrap();
    let frontend = format!("tap-frontend-{s}");
    let breaker = aws_sdk_ecs::types::DeploymentCircuitBreaker::builder().enable(true).rollback(true).build();
    c.ecs
        .update_service()
        .cluster(format!("tap-cluster-{s}"))
        .service(&frontend)
        .deployment_configuration(
            aws_sdk_ecs::types::DeploymentConfiguration::builder().deployment_circuit_breaker(breaker).build(),
        )
        .send()
        .await
        .unwrap();
    let plan = tap_json(&env, &["plan", "--detailed-exitcode"], 2);
    assert_eq!(plan["calls"]["mutating"], 0);
    let changes: Vec<&Value> = plan["changes"].as_array().unwrap().iter().collect();
    assert_eq!(changes.len(), 2, "{plan:#}");
    let threshold = changes.iter().find(|c| c["resource"] == "alarms/cpu-high/api-gateway").expect("threshold drift");
    assert_eq!(threshold["action"], "update");
    assert_eq!(threshold["attributes"][0]["attribute"], "threshold");
    assert_eq!(
        (threshold["attributes"][0]["old"].as_str(), threshold["attributes"][0]["new"].as_str()),
        (Some("50"), Some("90"))
    );
    let service = changes.iter().find(|c| c["resource"] == "services/ecs-service/frontend").expect("alarms dropped");
    assert_eq!(service["attributes"][0]["attribute"], "deployment_alarms", "{service:#}");
    let repaired = tap_json(&env, &["deploy", "--no-wait"], 0);
    assert_eq!(
        tests::mutating_calls(&repaired),
        BTreeMap::from([("CloudWatch:PutMetricAlarm".to_owned(), 1), ("ECS:UpdateService".to_owned(), 1)])
    );
    assert_alarms_are_the_spec(&c, &s).await;
    assert_eq!(deployment_alarms(&c, &s).await[&frontend].0.len(), 4);
    let again = tap_json(&env, &["deploy", "--no-wait"], 0);
    assert_eq!(again["calls"]["mutating"], 0, "{:?}", tests::mutating_calls(&again));

    // `tap status` shows each alarm's state; one set to ALARM is shown as such.
    let errors = format!("tap-{s}-frontend-target-5xx");
    c.cloudwatch
        .set_alarm_state()
        .alarm_name(&errors)
        .state_value(StateValue::Alarm)
        .state_reason("test: 5xx answers")
        .send()
        .await
        .unwrap();
    let status = tap_json(&env, &["status"], 0);
    let alarms_of = |service: &str| -> BTreeMap<String, String> {
        let svc = status["services"].as_array().unwrap().iter().find(|v| v["name"] == service).unwrap();
        svc["alarms"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| (a["alarm"].as_str().unwrap().to_owned(), a["state"].as_str().unwrap().to_owned()))
            .collect()
    };
    assert_eq!(alarms_of("frontend")["target-5xx"], "ALARM");
    assert_eq!(alarms_of("frontend")["cpu-high"], "OK");
    assert_eq!(alarms_of("processing-service").len(), 2);
    let text = env.tap(&["status"]).success().stdout;
    assert!(
        text.lines().any(|l| l.starts_with("frontend") && l.contains("target-5xx") && l.trim_end().ends_with("ALARM")),
        "{text}"
    );
    let detail = tap_json(&env, &["status", "api-gateway"], 0);
    assert_eq!(detail["service"]["alarms"].as_array().map(Vec::len), Some(4), "{detail:#}");

    // A removed service's alarms are pruned with it.
    let config = env.config_file("two-services", &[FRONTEND, API_GATEWAY].concat());
    let config = config.to_str().unwrap();
    let plan = tap_json(&env, &["--config", config, "plan"], 0);
    assert_eq!(
        changes_of(&plan, "alarms"),
        [
            ("alarms/cpu-high/processing-service".to_owned(), "delete".to_owned()),
            ("alarms/memory-high/processing-service".to_owned(), "delete".to_owned())
        ]
    );
    tap_json(&env, &["--config", config, "deploy", "--no-wait"], 0);
    let left = Alarms::read(&c, &s).await.names();
    assert_eq!(left.len(), 8, "{left:?}");
    assert!(!left.iter().any(|n| n.contains("processing-service")), "{left:?}");
    let plan = tap_json(&env, &["--config", config, "plan", "--detailed-exitcode"], 0);
    assert_eq!(plan["changes"].as_array().map(Vec::len), Some(0), "{plan:#}");

    // Destroy (with the default config, which still names processing-service) leaves no alarm.
    let destroyed = tap_json(&env, &["destroy", "--yes"], 0);
    assert_eq!(changes_of(&destroyed, "alarms").len(), 8, "{destroyed:#}");
    assert!(Alarms::read(&c, &s).await.0.is_empty());
    env.inventory().await.assert_empty("after destroy");
}

#[tokio::test]
async fn a_traffic_shifting_services_alarms_watch_both_target_groups_and_converge() {
    use tap_core::outputs::{ClusterOutputs, IngressOutputs, TrafficShift};
    use tap_core::{Config, Context, Step};

    let env = TestEnv::new("alarms-shift");
    let c = env.clients().await;
    let s = env.suffix.clone();
    let mut config = Config { environment: s.clone(), ..Config::default() };
    config.services.truncate(1);
    let ctx = Context::new(config);
    let elb = "arn:aws:elasticloadbalancing:us-east-1:123456789012";
    let (primary, alternate) =
        (format!("{elb}:targetgroup/tap-fe-{s}/1111"), format!("{elb}:targetgroup/tap-fe-alt-{s}/2222"));
    ctx.put(ClusterOutputs { name: format!("tap-cluster-{s}"), arn: format!("arn:aws:ecs:::cluster/tap-cluster-{s}") });
    ctx.put(IngressOutputs {
        load_balancer_arn: format!("{elb}:loadbalancer/app/tap-alb-{s}/3333"),
        dns_name: "example".into(),
        target_group_arns: BTreeMap::from([("frontend".into(), primary)]),
        traffic_shifts: BTreeMap::from([(
            "frontend".into(),
            TrafficShift {
                alternate_target_group_arn: alternate,
                production_listener_rule_arn: "rule-1".into(),
                test_listener_rule_arn: "rule-2".into(),
            },
        )]),
    });
    let step = tap_alarms::AlarmsStep::from_session(&c.session);
    assert_eq!(step.apply(&ctx).await.unwrap().len(), 4);
    assert!(step.plan(&ctx).await.unwrap().is_empty(), "the metric math reads back as it was put");

    let alarms = Alarms::read(&c, &s).await;
    let unhealthy = alarms.get(&format!("tap-{s}-frontend-unhealthy-targets")).expect("alarm");
    assert_eq!(unhealthy.metric_name(), None, "metric math, not one metric");
    let queries = unhealthy.metrics();
    let groups: Vec<String> = queries
        .iter()
        .filter_map(|q| q.metric_stat())
        .map(|m| {
            let metric = m.metric().unwrap();
            assert_eq!(
                (metric.metric_name(), m.stat(), m.period()),
                (Some("UnHealthyHostCount"), Some("Maximum"), Some(60))
            );
            let dims: BTreeMap<&str, &str> =
                metric.dimensions().iter().map(|d| (d.name().unwrap(), d.value().unwrap())).collect();
            assert_eq!(dims["LoadBalancer"], format!("app/tap-alb-{s}/3333"));
            dims["TargetGroup"].to_owned()
        })
        .collect();
    assert_eq!(groups, [format!("targetgroup/tap-fe-{s}/1111"), format!("targetgroup/tap-fe-alt-{s}/2222")]);
    let expression: Vec<&str> =
        queries.iter().filter(|q| q.return_data() == Some(true)).filter_map(|q| q.expression()).collect();
    assert_eq!(expression, ["SUM([m1, m2])"]);
    let cpu = alarms.get(&format!("tap-{s}-frontend-cpu-high")).expect("alarm");
    assert_eq!(cpu.metric_name(), Some("CPUUtilization"), "the ECS alarms watch one metric");

    assert_eq!(step.destroy(&ctx).await.unwrap().len(), 4);
    assert!(Alarms::read(&c, &s).await.0.is_empty());
}
