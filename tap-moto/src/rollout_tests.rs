//! The ECS rollout double driven through a [`Proxy`] over a real `moto_server`: services created
//! and updated with ECS's JSON calls, the listener rules and alarms read and set in moto with
//! ELBv2's and CloudWatch's query calls. One moto for this test binary; each test has a region
//! of its own.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::proxy::{Faults, Proxy};
use crate::rollout::{Failure, Rollouts};
use crate::upstream::query;
use crate::Moto;

fn moto() -> &'static Moto {
    static MOTO: OnceLock<Moto> = OnceLock::new();
    MOTO.get_or_init(|| Moto::start().expect("start moto_server"))
}

/// An ECS JSON call through the proxy: (status, body).
fn ecs(port: u16, region: &str, op: &str, body: Value) -> (u16, Value) {
    let body = body.to_string();
    let mut s = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).unwrap();
    write!(
        s,
        "POST / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nX-Amz-Target: AmazonEC2ContainerServiceV20141113.{op}\r\nContent-Type: application/x-amz-json-1.1\r\nAuthorization: AWS4-HMAC-SHA256 Credential=k/20250101/{region}/ecs/aws4_request, SignedHeaders=host, Signature=0\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or_default();
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

fn ok(port: u16, region: &str, op: &str, body: Value) -> Value {
    let (status, answer) = ecs(port, region, op, body);
    assert_eq!(status, 200, "{op}: {answer}");
    answer
}

fn q(port: u16, region: &str, service: &str, params: &[(&str, &str)]) -> String {
    let params: Vec<(String, String)> = params.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let (status, body) = query(port, region, service, &params).unwrap();
    assert_eq!(status, 200, "{params:?}: {body}");
    body
}

fn tag(xml: &str, name: &str) -> String {
    let open = format!("<{name}>");
    let start = xml.find(&open).unwrap_or_else(|| panic!("no {name} in {xml}")) + open.len();
    xml[start..start + xml[start..].find('<').unwrap()].to_string()
}

/// A region with a VPC, a load balancer, two target groups, a production rule and a test rule
/// (both forwarding to the first group), an ECS cluster and a proxy playing ECS.
struct Env {
    proxy: Proxy,
    region: &'static str,
    tg1: String,
    tg2: String,
    production_rule: String,
    test_rule: String,
}

fn settings() -> Rollouts {
    Rollouts {
        bad_images: vec![("bad-".into(), Failure::Crash { exit_code: 1 })],
        task_start: Duration::from_millis(100),
        healthy_after: Duration::from_millis(100),
        circuit_breaker_threshold: 2,
        minute: Duration::from_millis(300),
        tick: Duration::from_millis(20),
    }
}

fn env(region: &'static str) -> Env {
    let m = moto().port();
    let ec2 = |p: &[(&str, &str)]| q(m, region, "ec2", &[&[("Version", "2016-11-15")], p].concat());
    let elb = |p: &[(&str, &str)]| q(m, region, "elasticloadbalancing", &[&[("Version", "2015-12-01")], p].concat());
    let vpc = tag(&ec2(&[("Action", "CreateVpc"), ("CidrBlock", "10.0.0.0/16")]), "vpcId");
    let subnet = |cidr: &str, az: &str| {
        tag(
            &ec2(&[("Action", "CreateSubnet"), ("VpcId", &vpc), ("CidrBlock", cidr), ("AvailabilityZone", az)]),
            "subnetId",
        )
    };
    let (s1, s2) = (subnet("10.0.1.0/24", &format!("{region}a")), subnet("10.0.2.0/24", &format!("{region}b")));
    let lb = tag(
        &elb(&[
            ("Action", "CreateLoadBalancer"),
            ("Name", "lb"),
            ("Subnets.member.1", &s1),
            ("Subnets.member.2", &s2),
            ("Scheme", "internet-facing"),
        ]),
        "LoadBalancerArn",
    );
    let tg = |name: &str| {
        tag(
            &elb(&[
                ("Action", "CreateTargetGroup"),
                ("Name", name),
                ("Protocol", "HTTP"),
                ("Port", "80"),
                ("VpcId", &vpc),
                ("TargetType", "ip"),
            ]),
            "TargetGroupArn",
        )
    };
    let (tg1, tg2) = (tg("blue"), tg("green"));
    let listener = |port: &str| {
        tag(
            &elb(&[
                ("Action", "CreateListener"),
                ("LoadBalancerArn", &lb),
                ("Protocol", "HTTP"),
                ("Port", port),
                ("DefaultActions.member.1.Type", "forward"),
                ("DefaultActions.member.1.TargetGroupArn", &tg1),
            ]),
            "ListenerArn",
        )
    };
    let rule = |listener: &str| {
        tag(
            &elb(&[
                ("Action", "CreateRule"),
                ("ListenerArn", listener),
                ("Priority", "10"),
                ("Conditions.member.1.Field", "path-pattern"),
                ("Conditions.member.1.Values.member.1", "/*"),
                ("Actions.member.1.Type", "forward"),
                ("Actions.member.1.TargetGroupArn", &tg1),
            ]),
            "RuleArn",
        )
    };
    let (production_rule, test_rule) = (rule(&listener("80")), rule(&listener("8080")));
    let proxy = Proxy::start(m, Faults::default()).unwrap();
    proxy.set_rollouts(settings());
    ok(proxy.port(), region, "CreateCluster", json!({"clusterName": "c"}));
    Env { proxy, region, tg1, tg2, production_rule, test_rule }
}

impl Env {
    fn call(&self, op: &str, body: Value) -> Value {
        ok(self.proxy.port(), self.region, op, body)
    }

    fn register(&self, image: &str) -> String {
        let td = self.call(
            "RegisterTaskDefinition",
            json!({"family": "app", "requiresCompatibilities": ["FARGATE"], "networkMode": "awsvpc", "cpu": "256", "memory": "512",
                "containerDefinitions": [{"name": "app", "image": image, "essential": true, "portMappings": [{"containerPort": 80}]}]}),
        );
        td["taskDefinition"]["taskDefinitionArn"].as_str().unwrap().to_string()
    }

    fn load_balancers(&self) -> Value {
        json!([{"targetGroupArn": self.tg1, "containerName": "app", "containerPort": 80, "advancedConfiguration": {
            "alternateTargetGroupArn": self.tg2, "productionListenerRule": self.production_rule,
            "testListenerRule": self.test_rule, "roleArn": "arn:aws:iam::123456789012:role/ecs-infrastructure"}}])
    }

    fn create(&self, image: &str, config: Value) -> Value {
        let td = self.register(image);
        self.call(
            "CreateService",
            json!({"cluster": "c", "serviceName": "app", "taskDefinition": td, "desiredCount": 2, "launchType": "FARGATE",
                "loadBalancers": self.load_balancers(), "deploymentConfiguration": config}),
        )
    }

    fn update(&self, image: &str) -> Value {
        let td = self.register(image);
        self.call("UpdateService", json!({"cluster": "c", "service": "app", "taskDefinition": td}))
    }

    /// The newest service deployment, described.
    fn newest(&self) -> Value {
        let list = self.call("ListServiceDeployments", json!({"cluster": "c", "service": "app"}));
        let arn = list["serviceDeployments"][0]["serviceDeploymentArn"].clone();
        self.call("DescribeServiceDeployments", json!({"serviceDeploymentArns": [arn]}))["serviceDeployments"][0]
            .clone()
    }

    /// Waits until the newest service deployment has this status, collecting the stages seen.
    fn until_status(&self, status: &str) -> (Value, Vec<String>) {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut stages: Vec<String> = Vec::new();
        loop {
            let sd = self.newest();
            if let Some(stage) = sd["lifecycleStage"].as_str() {
                if stages.last().map(String::as_str) != Some(stage) {
                    stages.push(stage.to_string());
                }
            }
            if sd["status"] == status {
                return (sd, stages);
            }
            assert!(Instant::now() < deadline, "never {status}: {sd}");
            std::thread::sleep(Duration::from_millis(15));
        }
    }

    /// (target group, weight) of a rule's forward action, read in moto.
    fn weights(&self, rule: &str) -> Vec<(String, u64)> {
        let xml = q(
            moto().port(),
            self.region,
            "elasticloadbalancing",
            &[("Action", "DescribeRules"), ("Version", "2015-12-01"), ("RuleArns.member.1", rule)],
        );
        match xml.split("<ForwardConfig>").nth(1) {
            Some(forward) => forward
                .split("<TargetGroupArn>")
                .skip(1)
                .map(|m| (m[..m.find('<').unwrap()].to_string(), tag(m, "Weight").parse().unwrap()))
                .collect(),
            None => vec![(tag(&xml, "TargetGroupArn"), 1)],
        }
    }

    /// The weight a rule gives `tg` (0 when it does not forward there).
    fn weight(&self, rule: &str, tg: &str) -> u64 {
        self.weights(rule).into_iter().find(|(t, _)| t == tg).map_or(0, |(_, w)| w)
    }

    /// Healthy targets of a group, as the double answers DescribeTargetHealth.
    fn healthy(&self, tg: &str) -> usize {
        let xml = q(
            self.proxy.port(),
            self.region,
            "elasticloadbalancing",
            &[("Action", "DescribeTargetHealth"), ("Version", "2015-12-01"), ("TargetGroupArn", tg)],
        );
        xml.matches("<State>healthy</State>").count()
    }

    fn service(&self) -> Value {
        self.call("DescribeServices", json!({"cluster": "c", "services": ["app"]}))["services"][0].clone()
    }

    fn alarm(&self, name: &str, period: &str, evaluation_periods: &str) {
        q(
            moto().port(),
            self.region,
            "monitoring",
            &[
                ("Action", "PutMetricAlarm"),
                ("Version", "2010-08-01"),
                ("AlarmName", name),
                ("MetricName", "CPUUtilization"),
                ("Namespace", "AWS/ECS"),
                ("Statistic", "Average"),
                ("Period", period),
                ("EvaluationPeriods", evaluation_periods),
                ("Threshold", "80"),
                ("ComparisonOperator", "GreaterThanThreshold"),
            ],
        );
    }

    fn set_alarm(&self, name: &str, state: &str) {
        q(
            moto().port(),
            self.region,
            "monitoring",
            &[
                ("Action", "SetAlarmState"),
                ("Version", "2010-08-01"),
                ("AlarmName", name),
                ("StateValue", state),
                ("StateReason", "test"),
            ],
        );
    }
}

#[test]
fn blue_green_moves_production_traffic_through_its_stages_and_alternates_target_groups() {
    let env = env("eu-west-1");
    let created = env.create("repo:good-1", json!({"strategy": "BLUE_GREEN", "bakeTimeInMinutes": 1}));
    assert_eq!(created["service"]["deploymentConfiguration"]["strategy"], "BLUE_GREEN", "{created}");
    let (first, stages) = env.until_status("SUCCESSFUL");
    assert_eq!(stages.first().map(String::as_str), Some("SCALE_UP"), "{stages:?}");
    assert!(
        stages.contains(&"BAKE_TIME".to_string()) && stages.last().map(String::as_str) == Some("CLEAN_UP"),
        "{stages:?}"
    );
    assert_eq!(first["targetServiceRevision"]["requestedProductionTrafficWeight"], 100.0, "{first}");
    assert!(first["finishedAt"].is_number() && first["sourceServiceRevisions"] == json!([]), "{first}");
    // The first deployment went to the alternate group: production now forwards there.
    assert_eq!((env.weight(&env.production_rule, &env.tg2), env.weight(&env.production_rule, &env.tg1)), (100, 0));
    assert_eq!(env.weight(&env.test_rule, &env.tg2), 100);
    assert_eq!((env.healthy(&env.tg2), env.healthy(&env.tg1)), (2, 0));
    let revision =
        env.call("DescribeServiceRevisions", json!({"serviceRevisionArns": [first["targetServiceRevision"]["arn"]]}));
    assert_eq!(
        revision["serviceRevisions"][0]["resolvedConfiguration"]["loadBalancers"][0]["targetGroupArn"],
        json!(env.tg2)
    );

    env.update("repo:good-2");
    let (second, _) = env.until_status("SUCCESSFUL");
    assert_eq!(second["sourceServiceRevisions"][0]["arn"], first["targetServiceRevision"]["arn"], "{second}");
    // ECS alternates: the next green is the first group again.
    assert_eq!((env.weight(&env.production_rule, &env.tg1), env.weight(&env.production_rule, &env.tg2)), (100, 0));
    assert_eq!((env.healthy(&env.tg1), env.healthy(&env.tg2)), (2, 0));
    // The service's configuration is what was sent: ECS does not swap the target groups.
    let service = env.service();
    assert_eq!(service["loadBalancers"], env.load_balancers(), "{service}");
    assert_eq!(service["deploymentConfiguration"]["bakeTimeInMinutes"], 1);
    assert_eq!(service["deployments"].as_array().map(Vec::len), Some(1), "{service}");
    assert_eq!(service["deployments"][0]["rolloutState"], "COMPLETED");
    assert_eq!(service["runningCount"], 2);
}

#[test]
fn canary_and_linear_shift_in_steps() {
    let env = env("eu-west-2");
    env.create("repo:good-1", json!({"strategy": "BLUE_GREEN", "bakeTimeInMinutes": 0}));
    env.until_status("SUCCESSFUL");
    env.call(
        "UpdateService",
        json!({"cluster": "c", "service": "app", "deploymentConfiguration": {"strategy": "CANARY",
            "canaryConfiguration": {"canaryPercent": 20.0, "canaryBakeTimeInMinutes": 2}}}),
    );
    env.update("repo:good-2");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let sd = env.newest();
        if sd["targetServiceRevision"]["requestedProductionTrafficWeight"] == 20.0 {
            assert_eq!(sd["lifecycleStage"], "PRODUCTION_TRAFFIC_SHIFT", "{sd}");
            assert_eq!(sd["sourceServiceRevisions"][0]["requestedProductionTrafficWeight"], 80.0, "{sd}");
            // tg2 is live since the first deployment: tg1 is the canary's.
            assert_eq!(
                (env.weight(&env.production_rule, &env.tg1), env.weight(&env.production_rule, &env.tg2)),
                (20, 80)
            );
            break;
        }
        assert!(Instant::now() < deadline, "never at the canary step: {sd}");
        std::thread::sleep(Duration::from_millis(15));
    }
    env.until_status("SUCCESSFUL");
    assert_eq!(env.weight(&env.production_rule, &env.tg1), 100);

    env.call(
        "UpdateService",
        json!({"cluster": "c", "service": "app", "deploymentConfiguration": {"strategy": "LINEAR",
            "linearConfiguration": {"stepPercent": 50.0, "stepBakeTimeInMinutes": 2}}}),
    );
    env.update("repo:good-3");
    let mut seen: Vec<u64> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while env.newest()["status"] != "SUCCESSFUL" {
        let w = env.weight(&env.production_rule, &env.tg2);
        if seen.last() != Some(&w) {
            seen.push(w);
        }
        assert!(Instant::now() < deadline, "linear never finished: {seen:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(seen.contains(&50), "a 50 % step: {seen:?}");
    assert_eq!(env.weight(&env.production_rule, &env.tg2), 100);
}

#[test]
fn the_circuit_breaker_rolls_blue_green_back_to_blue() {
    let env = env("eu-central-1");
    let breaker = json!({"enable": true, "rollback": true});
    env.create(
        "repo:good-1",
        json!({"strategy": "BLUE_GREEN", "bakeTimeInMinutes": 1, "deploymentCircuitBreaker": breaker}),
    );
    let (first, _) = env.until_status("SUCCESSFUL");
    env.update("repo:bad-2");
    let (sd, _) = env.until_status("ROLLBACK_SUCCESSFUL");
    assert_eq!(sd["statusReason"], "ECS deployment circuit breaker: tasks failed to start.", "{sd}");
    assert_eq!(sd["deploymentCircuitBreaker"]["status"], "TRIGGERED");
    assert!(sd["deploymentCircuitBreaker"]["failureCount"].as_u64() >= Some(2), "{sd}");
    assert_eq!(sd["rollback"]["serviceRevisionArn"], first["targetServiceRevision"]["arn"]);
    // Production stays on blue (tg2 since the first deployment).
    assert_eq!((env.weight(&env.production_rule, &env.tg2), env.weight(&env.production_rule, &env.tg1)), (100, 0));
    assert_eq!(env.healthy(&env.tg2), 2);
    let service = env.service();
    let primary = &service["deployments"][0];
    assert_eq!(
        (primary["status"].as_str(), primary["rolloutState"].as_str()),
        (Some("PRIMARY"), Some("COMPLETED")),
        "{service}"
    );
    assert!(primary["taskDefinition"].as_str().unwrap().ends_with("app:1"), "{service}");
    let events: Vec<&str> =
        service["events"].as_array().unwrap().iter().filter_map(|e| e["message"].as_str()).collect();
    assert!(events.iter().any(|e| e.ends_with("deployment failed: tasks failed to start.")), "{events:?}");
}

#[test]
fn an_alarm_during_bake_time_rolls_blue_green_back() {
    let env = env("ap-southeast-1");
    env.alarm("app-5xx", "60", "1");
    let alarms = json!({"alarmNames": ["app-5xx"], "enable": true, "rollback": true});
    env.create("repo:good-1", json!({"strategy": "BLUE_GREEN", "bakeTimeInMinutes": 20, "alarms": alarms}));
    let deadline = Instant::now() + Duration::from_secs(10);
    while env.newest()["lifecycleStage"] != "BAKE_TIME" {
        assert!(Instant::now() < deadline, "never baking");
        std::thread::sleep(Duration::from_millis(15));
    }
    // The first deployment has nothing to roll back to: it fails without a rollback.
    env.set_alarm("app-5xx", "ALARM");
    let (sd, _) = env.until_status("ROLLBACK_FAILED");
    assert_eq!(sd["alarms"]["triggeredAlarmNames"], json!(["app-5xx"]), "{sd}");
    env.set_alarm("app-5xx", "OK");
    env.call(
        "UpdateService",
        json!({"cluster": "c", "service": "app", "deploymentConfiguration": {"bakeTimeInMinutes": 1}}),
    );
    env.update("repo:good-2");
    let (good, _) = env.until_status("SUCCESSFUL");
    assert_eq!(good["alarms"]["status"], "MONITORING_COMPLETE", "{good}");
    let live = if env.weight(&env.production_rule, &env.tg1) == 100 { env.tg1.clone() } else { env.tg2.clone() };
    env.call(
        "UpdateService",
        json!({"cluster": "c", "service": "app", "deploymentConfiguration": {"bakeTimeInMinutes": 20}}),
    );
    env.update("repo:good-3");
    let deadline = Instant::now() + Duration::from_secs(10);
    while env.newest()["lifecycleStage"] != "BAKE_TIME" {
        assert!(Instant::now() < deadline, "never baking");
        std::thread::sleep(Duration::from_millis(15));
    }
    assert_eq!(env.weight(&env.production_rule, &live), 0, "production moved to green before the bake");
    env.set_alarm("app-5xx", "ALARM");
    let (sd, _) = env.until_status("ROLLBACK_SUCCESSFUL");
    assert_eq!(sd["statusReason"], "ECS deployment failed: alarm detected: app-5xx.", "{sd}");
    assert_eq!(sd["alarms"]["status"], "TRIGGERED");
    assert_eq!(sd["rollback"]["serviceRevisionArn"], good["targetServiceRevision"]["arn"], "{sd}");
    assert_eq!(env.weight(&env.production_rule, &live), 100, "production back on blue");
    assert_eq!(env.weight(&env.test_rule, &live), 100, "test traffic back on blue");
}

#[test]
fn an_alarm_during_a_rolling_bake_fails_and_rolls_back() {
    let env = env("us-west-2");
    env.alarm("app-cpu", "60", "2");
    let alarms = json!({"alarmNames": ["app-cpu"], "enable": true, "rollback": true});
    let lbs = json!([{"targetGroupArn": env.tg1, "containerName": "app", "containerPort": 80}]);
    let td = env.register("repo:good-1");
    env.call(
        "CreateService",
        json!({"cluster": "c", "serviceName": "app", "taskDefinition": td, "desiredCount": 2, "launchType": "FARGATE",
            "loadBalancers": lbs, "deploymentConfiguration": {"alarms": alarms, "deploymentCircuitBreaker": {"enable": true, "rollback": true}}}),
    );
    let (first, stages) = env.until_status("SUCCESSFUL");
    assert!(stages.is_empty(), "a rolling deployment has no lifecycle stage: {stages:?}");
    assert!(first["targetServiceRevision"].get("requestedProductionTrafficWeight").is_none(), "{first}");
    assert_eq!(env.service()["deploymentConfiguration"]["strategy"], "ROLLING");
    env.update("repo:good-2");
    // Healthy, then the bake (2 alarm periods of a minute): the deployment is still in progress.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let service = env.service();
        let p = &service["deployments"][0];
        if p["runningCount"] == 2 && service["deployments"].as_array().map(Vec::len) == Some(2) {
            assert_eq!(p["rolloutState"], "IN_PROGRESS", "{service}");
            break;
        }
        assert!(Instant::now() < deadline, "never scaled: {service}");
        std::thread::sleep(Duration::from_millis(10));
    }
    env.set_alarm("app-cpu", "ALARM");
    let (sd, _) = env.until_status("ROLLBACK_SUCCESSFUL");
    assert_eq!(sd["statusReason"], "ECS deployment failed: alarm detected: app-cpu.", "{sd}");
    assert_eq!(sd["alarms"]["triggeredAlarmNames"], json!(["app-cpu"]));
    let service = env.service();
    let primary = &service["deployments"][0];
    assert!(primary["taskDefinition"].as_str().unwrap().ends_with("app:1"), "{service}");
    assert_eq!(primary["rolloutState"], "COMPLETED", "{service}");
    let events: Vec<&str> =
        service["events"].as_array().unwrap().iter().filter_map(|e| e["message"].as_str()).collect();
    assert!(events.iter().any(|e| e.ends_with("deployment failed: alarm detected.")), "{events:?}");
    assert!(events.iter().any(|e| e.contains("rolling back to deployment")), "{events:?}");
}

#[test]
fn stop_service_deployment_rolls_back_at_once_and_refuses_a_finished_one() {
    let env = env("us-east-2");
    env.create("repo:good-1", json!({"strategy": "BLUE_GREEN", "bakeTimeInMinutes": 1}));
    let (first, _) = env.until_status("SUCCESSFUL");
    env.call(
        "UpdateService",
        json!({"cluster": "c", "service": "app", "deploymentConfiguration": {"bakeTimeInMinutes": 30}}),
    );
    env.update("repo:good-2");
    let deadline = Instant::now() + Duration::from_secs(10);
    let baking = loop {
        let sd = env.newest();
        if sd["lifecycleStage"] == "BAKE_TIME" {
            break sd;
        }
        assert!(Instant::now() < deadline, "never baking");
        std::thread::sleep(Duration::from_millis(15));
    };
    assert_eq!(env.weight(&env.production_rule, &env.tg1), 100, "green (tg1) live during the bake");
    let arn = baking["serviceDeploymentArn"].clone();
    let stopped = env.call("StopServiceDeployment", json!({"serviceDeploymentArn": arn, "stopType": "ROLLBACK"}));
    assert_eq!(stopped["serviceDeploymentArn"], arn);
    assert_eq!(env.weight(&env.production_rule, &env.tg2), 100, "production back on blue at once");
    let (sd, _) = env.until_status("ROLLBACK_SUCCESSFUL");
    assert_eq!(sd["rollback"]["serviceRevisionArn"], first["targetServiceRevision"]["arn"], "{sd}");
    assert_eq!(sd["statusReason"], "Service deployment rolled back because of a StopServiceDeployment request.");
    let (status, again) =
        ecs(env.proxy.port(), env.region, "StopServiceDeployment", json!({"serviceDeploymentArn": arn}));
    assert_eq!((status, again["__type"].as_str()), (400, Some("ConflictException")), "{again}");
    let unknown = "arn:aws:ecs:us-east-2:123456789012:service-deployment/c/app/nope";
    let (status, missing) =
        ecs(env.proxy.port(), env.region, "StopServiceDeployment", json!({"serviceDeploymentArn": unknown}));
    assert_eq!((status, missing["__type"].as_str()), (400, Some("ServiceDeploymentNotFoundException")));
    let described = env.call("DescribeServiceDeployments", json!({"serviceDeploymentArns": [unknown]}));
    assert_eq!(described["failures"][0], json!({"arn": unknown, "reason": "MISSING"}));
}

#[test]
fn service_deployments_are_listed_filtered_and_paginated_and_configs_validated() {
    let env = env("us-east-1");
    let td = env.register("repo:good-1");
    let plain = json!([{"targetGroupArn": env.tg1, "containerName": "app", "containerPort": 80}]);
    let (status, refused) = ecs(
        env.proxy.port(),
        env.region,
        "CreateService",
        json!({"cluster": "c", "serviceName": "app", "taskDefinition": td, "desiredCount": 1, "loadBalancers": plain,
            "deploymentConfiguration": {"strategy": "CANARY"}}),
    );
    assert_eq!((status, refused["__type"].as_str()), (400, Some("InvalidParameterException")), "{refused}");
    assert!(refused["message"].as_str().unwrap().contains("advancedConfiguration"), "{refused}");
    env.create("repo:good-1", json!({"strategy": "BLUE_GREEN"}));
    env.until_status("SUCCESSFUL");
    env.update("repo:good-2");
    env.until_status("SUCCESSFUL");
    let all = env.call("ListServiceDeployments", json!({"cluster": "c", "service": "app"}));
    assert_eq!(all["serviceDeployments"].as_array().map(Vec::len), Some(2), "{all}");
    assert!(all.get("nextToken").is_none());
    let page = env.call("ListServiceDeployments", json!({"cluster": "c", "service": "app", "maxResults": 1}));
    assert_eq!(page["serviceDeployments"][0], all["serviceDeployments"][0], "newest first");
    let next = env.call(
        "ListServiceDeployments",
        json!({"cluster": "c", "service": "app", "maxResults": 1, "nextToken": page["nextToken"]}),
    );
    assert_eq!(next["serviceDeployments"][0], all["serviceDeployments"][1]);
    assert!(next.get("nextToken").is_none(), "{next}");
    let none = env.call("ListServiceDeployments", json!({"cluster": "c", "service": "app", "status": ["IN_PROGRESS"]}));
    assert_eq!(none["serviceDeployments"], json!([]));
    let future = env.call(
        "ListServiceDeployments",
        json!({"cluster": "c", "service": "app", "createdAt": {"after": 4_000_000_000u64}}),
    );
    assert_eq!(future["serviceDeployments"], json!([]));
    let arn = all["serviceDeployments"][0]["serviceDeploymentArn"].as_str().unwrap();
    assert!(arn.starts_with("arn:aws:ecs:us-east-1:123456789012:service-deployment/c/app/"), "{arn}");
    let revision = all["serviceDeployments"][0]["targetServiceRevisionArn"].as_str().unwrap();
    assert!(revision.starts_with("arn:aws:ecs:us-east-1:123456789012:service-revision/c/app/"), "{revision}");
    let (status, unknown) =
        ecs(env.proxy.port(), env.region, "ListServiceDeployments", json!({"cluster": "c", "service": "nope"}));
    assert_eq!((status, unknown["__type"].as_str()), (400, Some("ServiceNotFoundException")));
}
