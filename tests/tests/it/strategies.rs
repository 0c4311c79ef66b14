//! End-to-end traffic-shifting deployments: the real `tap` binary against moto through the
//! proxy's ECS double ([`tap_moto::rollout`]), which runs blue/green, canary and linear service
//! deployments over time and moves the production rules' weights in moto as ECS does.
//!
//! - Each strategy follows its stages to `SUCCESSFUL`; production traffic is then all on one
//!   target group, `plan` is empty and a second deploy writes nothing (the weights and the live
//!   group are ECS's).
//! - A crashing image under blue/green: ECS's circuit breaker rolls it back; deploy exits 1 naming
//!   it, production traffic where it was. `tap rollback` in the bake time stops the deployment.
//! - Switching a service to blue/green and back converges, pruning the alternate target group and
//!   the infrastructure role; destroy leaves nothing.
//! - A CloudWatch alarm of the service set to ALARM (`SetAlarmState`, as CloudWatch does when its
//!   metric breaches) in a blue/green bake time, and in ECS's alarm bake after a rolling
//!   deployment: ECS rolls back, deploy exits 1 naming the alarm.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use aws_sdk_cloudwatch::types::StateValue;
use tap_moto::rollout::{Failure, Rollouts};
use tests::services_toml::{API_GATEWAY, FRONTEND, PROCESSING};
use tests::{proxy, Faults, Inventory, Proxy, Run, TestEnv};

/// A fourth routed service, on `/admin/*`.
const ADMIN: &str = r#"
[[services]]
name = "admin"
cpu = 256
memory = 512
port = 7000
route = { short_name = "adm", path_pattern = "/admin/*", priority = 20, health_check_path = "/" }
"#;

/// The proxy with the ECS double: ECS minutes last 300 ms; images tagged `bad-…` crash and the
/// circuit breaker trips after 2 stopped tasks.
fn double() -> Proxy {
    let proxy = proxy(Faults::default());
    proxy.set_rollouts(Rollouts {
        bad_images: vec![("bad-".into(), Failure::Crash { exit_code: 1 })],
        circuit_breaker_threshold: 2,
        minute: Duration::from_millis(300),
        ..Rollouts::default()
    });
    proxy
}

/// `tap --config <config> <args>` through `via`.
fn tap(via: &TestEnv, config: &Path, args: &[&str]) -> Run {
    let mut all = vec!["--config", config.to_str().unwrap()];
    all.extend_from_slice(args);
    via.tap(&all)
}

/// A service's fragment with its own deployment settings.
fn with_deploy(fragment: &str, deploy: &str) -> String {
    format!("{}deploy = {{ {deploy} }}\n", fragment)
}

/// The production and test rules of the environment's listener: priority → (target group name,
/// weight) of its forward action.
async fn rule_weights(env: &TestEnv) -> BTreeMap<i32, Vec<(String, i32)>> {
    let clients = env.clients().await;
    let lb = clients
        .elbv2
        .describe_load_balancers()
        .names(format!("tap-alb-{}", env.suffix))
        .send()
        .await
        .expect("DescribeLoadBalancers");
    let lb_arn = lb.load_balancers()[0].load_balancer_arn().unwrap().to_string();
    let listeners = clients.elbv2.describe_listeners().load_balancer_arn(lb_arn).send().await.expect("listeners");
    let listener = listeners.listeners()[0].listener_arn().unwrap().to_string();
    let rules = clients.elbv2.describe_rules().listener_arn(listener).send().await.expect("DescribeRules");
    let name = |arn: &str| arn.split('/').nth(1).unwrap_or(arn).to_string();
    rules
        .rules()
        .iter()
        .filter(|r| !r.is_default().unwrap_or(false))
        .map(|r| {
            let action = &r.actions()[0];
            let groups = match action.forward_config() {
                Some(f) if !f.target_groups().is_empty() => f
                    .target_groups()
                    .iter()
                    .map(|t| (name(t.target_group_arn().unwrap_or_default()), t.weight().unwrap_or(1)))
                    .collect(),
                _ => vec![(name(action.target_group_arn().unwrap_or_default()), 100)],
            };
            (r.priority().unwrap().parse().unwrap(), groups)
        })
        .collect()
}

/// The target group that gets all the production traffic of the rule at `priority`.
fn live(weights: &BTreeMap<i32, Vec<(String, i32)>>, priority: i32) -> String {
    let groups = &weights[&priority];
    let all: Vec<&(String, i32)> = groups.iter().filter(|(_, w)| *w == 100).collect();
    assert_eq!(all.len(), 1, "one group gets all the traffic of rule {priority}: {groups:?}");
    assert_eq!(groups.iter().map(|(_, w)| w).sum::<i32>(), 100, "{groups:?}");
    all[0].0.clone()
}

/// How many healthy targets the target group named `name` has (the double registers tasks).
async fn healthy_targets(via: &TestEnv, name: &str) -> usize {
    let clients = via.clients().await;
    let groups = clients.elbv2.describe_target_groups().names(name).send().await.expect("DescribeTargetGroups");
    let arn = groups.target_groups()[0].target_group_arn().unwrap().to_string();
    let health =
        clients.elbv2.describe_target_health().target_group_arn(arn).send().await.expect("DescribeTargetHealth");
    health
        .target_health_descriptions()
        .iter()
        .filter(|d| d.target_health().and_then(|h| h.state()).map(|s| s.as_str()) == Some("healthy"))
        .count()
}

/// The newest service deployment of a service, as ECS (the double) reports it: (status,
/// lifecycle stage, status reason).
async fn newest_deployment(via: &TestEnv, service: &str) -> (String, String, String) {
    let clients = via.clients().await;
    let (cluster, name) = (format!("tap-cluster-{}", via.suffix), format!("tap-{service}-{}", via.suffix));
    let list = clients
        .ecs
        .list_service_deployments()
        .cluster(&cluster)
        .service(&name)
        .send()
        .await
        .expect("ListServiceDeployments");
    let newest = list
        .service_deployments()
        .iter()
        .max_by_key(|d| d.created_at().map(|t| t.as_nanos()))
        .expect("a service deployment");
    let described = clients
        .ecs
        .describe_service_deployments()
        .service_deployment_arns(newest.service_deployment_arn().unwrap())
        .send()
        .await
        .expect("DescribeServiceDeployments");
    let d = &described.service_deployments()[0];
    (
        d.status().map(|s| s.as_str().to_string()).unwrap_or_default(),
        d.lifecycle_stage().map(|s| s.as_str().to_string()).unwrap_or_default(),
        d.status_reason().unwrap_or_default().to_string(),
    )
}

/// The platform from nothing, then image `v1` pushed and deployed to its end: ECS has a completed
/// deployment to roll back to (the first deploy into empty repositories does not wait).
async fn deploy_v1(env: &TestEnv, via: &TestEnv, config: &Path) {
    tap(via, config, &["deploy", "--timeout", "120"]).success();
    env.push_image(&["frontend", "api-gateway", "processing-service"], "v1").await;
    tap(via, config, &["deploy", "--image-tag", "v1", "--timeout", "120"]).success();
}

#[tokio::test(flavor = "multi_thread")]
async fn blue_green_canary_and_linear_run_to_success_and_leave_nothing_to_repair() {
    let env = TestEnv::new("shift1");
    let proxy = double();
    let via = env.with_endpoint(&proxy.endpoint());
    let toml = [
        "[deploy]\nbake_time_minutes = 1\n".to_string(),
        with_deploy(FRONTEND, r#"strategy = "blue-green""#),
        with_deploy(API_GATEWAY, r#"strategy = "canary", canary_percent = 20.0, canary_bake_time_minutes = 1"#),
        PROCESSING.to_string(),
        with_deploy(ADMIN, r#"strategy = "linear", linear_step_percent = 50.0, linear_step_bake_time_minutes = 1"#),
    ]
    .concat();
    let config = env.config_file("shifting", &toml);
    let services = ["frontend", "api-gateway", "processing-service", "admin"];

    // From nothing: every resource, then each service's first deployment followed to its end.
    tap(&via, &config, &["deploy", "--timeout", "120"]).success();
    let first = rule_weights(&env).await;
    // Production rules (frontend's on `/*` at the last priority) and test rules just before them.
    assert_eq!(first.keys().copied().collect::<Vec<_>>(), [9, 10, 19, 20, 49999, 50000], "{first:?}");

    env.push_image(&services, "v2").await;
    let started = Instant::now();
    let run = tap(&via, &config, &["deploy", "--image-tag", "v2", "--timeout", "120"]).success();
    let took = started.elapsed();
    assert!(run.stderr.contains("stage "), "progress shows the lifecycle stages:\n{}", run.stderr);
    // Blue/green bakes 1 minute; canary 1 + 1; linear 2 steps of 1: ECS minutes of 300 ms.
    assert!(took >= Duration::from_millis(600), "deploy waited for the traffic steps and bake times: {took:?}");
    for service in ["frontend", "api-gateway", "admin"] {
        let (status, _, reason) = newest_deployment(&via, service).await;
        assert_eq!(status, "SUCCESSFUL", "{service}: {reason}");
    }
    let now = rule_weights(&env).await;
    for (production, test) in [(50000, 49999), (10, 9), (20, 19)] {
        // All production traffic on one group, the one the new revision's tasks serve from (the
        // old revision's are gone), and the test rule with it.
        let live_group = live(&now, production);
        assert_eq!(live_group, live(&now, test), "{now:?}");
        for (group, _) in &now[&production] {
            let healthy = healthy_targets(&via, group).await;
            let want = if *group == live_group { 2 } else { 0 };
            assert_eq!(healthy, want, "rule {production}: {group} (live: {live_group}): {now:?}");
        }
    }

    // What ECS changed is ECS's: nothing to plan, nothing to write.
    let plan = tap(&via, &config, &["plan", "--image-tag", "v2", "--detailed-exitcode"]);
    assert_eq!(plan.code, Some(0), "plan after the deployment is empty:\n{}\n{}", plan.stdout, plan.stderr);
    let again = tap(&via, &config, &["--output", "json", "deploy", "--image-tag", "v2"]).success().json();
    assert_eq!(again["calls"]["mutating"], 0, "{}", again["calls"]);

    // `tap outputs` of a four-service environment: the SPEC's 12 keys and the fourth service's two.
    let outputs = tap(&via, &config, &["--output", "json", "outputs"]).success().json();
    let keys: Vec<&str> = outputs.as_object().expect("outputs").keys().map(String::as_str).collect();
    for key in ["frontendServiceArn", "apiGatewayServiceArn", "processingServiceArn", "processingServiceEcrUrl"] {
        assert!(keys.contains(&key), "{key} in {keys:?}");
    }
    assert_eq!(keys.len(), 14, "{keys:?}");
    let admin = outputs["adminServiceArn"].as_str().unwrap_or_default();
    assert!(admin.ends_with(&format!("service/tap-cluster-{0}/tap-admin-{0}", env.suffix)), "{outputs}");
    assert!(outputs["adminEcrUrl"].as_str().unwrap_or_default().ends_with(&format!("/tap-admin-{}", env.suffix)));

    tap(&via, &config, &["destroy", "--yes"]).success();
    env.inventory().await.assert_empty("after destroy");
}

#[tokio::test(flavor = "multi_thread")]
async fn ecs_rolls_back_a_crashing_blue_green_deployment_and_tap_rollback_stops_one_in_bake_time() {
    let env = TestEnv::new("shift2");
    let proxy = double();
    let via = env.with_endpoint(&proxy.endpoint());
    let toml = [
        // tap's own limit is above the breaker's: ECS rolls back first.
        "[deploy]\nbake_time_minutes = 0\nstrategy = \"blue-green\"\nmax_failed_tasks = 20\n",
        FRONTEND,
        API_GATEWAY,
        PROCESSING,
    ]
    .concat();
    let config = env.config_file("blue-green", &toml);
    deploy_v1(&env, &via, &config).await;
    let before = rule_weights(&env).await;

    // A crashing image: ECS's circuit breaker rolls the deployment back; deploy names it.
    env.push_image(&["frontend", "api-gateway", "processing-service"], "bad-1").await;
    let bad = tap(&via, &config, &["deploy", "--image-tag", "bad-1", "--timeout", "120"]).expect_code(1);
    assert!(bad.stderr.contains("circuit breaker"), "{}", bad.stderr);
    assert!(bad.stderr.contains("ECS service tap-frontend-shift2"), "{}", bad.stderr);
    assert!(!bad.stderr.contains("Deploy complete"), "{}", bad.stderr);
    let (status, _, _) = newest_deployment(&via, "frontend").await;
    assert_eq!(status, "ROLLBACK_SUCCESSFUL");
    let after = rule_weights(&env).await;
    for priority in [10, 50000] {
        assert_eq!(live(&before, priority), live(&after, priority), "production traffic stayed on the old revision");
    }

    // A good image with a long bake time, not waited for: `tap rollback` in the bake time stops
    // the deployments, and production traffic is back on the old revision at once.
    env.push_image(&["frontend", "api-gateway", "processing-service"], "v3").await;
    let mut slow = via.command();
    slow.env("TAP_DEPLOY__BAKE_TIME_MINUTES", "100");
    let args = ["--config", config.to_str().unwrap(), "deploy", "--image-tag", "v3", "--no-wait"];
    let out = slow.args(args).output().expect("run tap");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    until("frontend and api-gateway in their bake time", || async {
        let stages = [newest_deployment(&via, "frontend").await.1, newest_deployment(&via, "api-gateway").await.1];
        stages.iter().all(|s| s == "BAKE_TIME")
    })
    .await;
    let baking = rule_weights(&env).await;
    assert_ne!(live(&baking, 10), live(&after, 10), "in the bake time production runs the new revision");
    let rollback = tap(&via, &config, &["--output", "json", "rollback", "frontend", "api-gateway"]).success().json();
    let rolled: Vec<&str> =
        rollback["services"].as_array().unwrap().iter().map(|s| s["service"].as_str().unwrap()).collect();
    assert_eq!(rolled, ["frontend", "api-gateway"], "{rollback}");
    for service in ["frontend", "api-gateway"] {
        assert_eq!(newest_deployment(&via, service).await.0, "ROLLBACK_SUCCESSFUL", "{service}");
    }
    let back = rule_weights(&env).await;
    for priority in [10, 50000] {
        assert_eq!(live(&back, priority), live(&after, priority), "traffic back on the old revision");
    }
    tap(&via, &config, &["destroy", "--yes"]).success();
}

#[tokio::test(flavor = "multi_thread")]
async fn switching_to_blue_green_and_back_converges_and_prunes_what_it_no_longer_needs() {
    let env = TestEnv::new("shift3");
    let proxy = double();
    let via = env.with_endpoint(&proxy.endpoint());
    let rolling = env.config_file("rolling", &[FRONTEND, API_GATEWAY, PROCESSING].concat());
    let blue_green = env.config_file(
        "blue-green",
        &[with_deploy(FRONTEND, r#"strategy = "blue-green""#), API_GATEWAY.into(), PROCESSING.into()].concat(),
    );

    tap(&via, &rolling, &["deploy", "--no-wait"]).success();
    env.inventory().await.assert_spec("rolling");

    tap(&via, &blue_green, &["deploy", "--no-wait"]).success();
    let mut shifting = Inventory::spec();
    // The alternate target group, frontend's production rule on `/*` and its test rule, the
    // infrastructure role.
    shifting.counts.insert("elbv2:target-group", 3);
    shifting.counts.insert("elbv2:rule", 3);
    shifting.counts.insert("iam:role", 5);
    let found = env.inventory().await;
    assert!(found.differences(&shifting).is_empty(), "{:#?}", found.differences(&shifting));
    let plan = tap(&via, &blue_green, &["plan", "--detailed-exitcode"]);
    assert_eq!(plan.code, Some(0), "converged:\n{}\n{}", plan.stdout, plan.stderr);

    tap(&via, &rolling, &["deploy", "--no-wait"]).success();
    env.inventory().await.assert_spec("back to rolling");
    let plan = tap(&via, &rolling, &["plan", "--detailed-exitcode"]);
    assert_eq!(plan.code, Some(0), "converged:\n{}\n{}", plan.stdout, plan.stderr);

    tap(&via, &blue_green, &["deploy", "--no-wait"]).success();
    // Destroy finds everything by its tags, whatever the config says now.
    tap(&via, &rolling, &["destroy", "--yes"]).success();
    env.inventory().await.assert_empty("after destroy");
}

/// Sets the CloudWatch alarm `name` to `state`, as CloudWatch does when its metric breaches.
async fn set_alarm(env: &TestEnv, name: &str, state: StateValue) {
    let clients = env.clients().await;
    clients
        .cloudwatch
        .set_alarm_state()
        .alarm_name(name)
        .state_value(state)
        .state_reason("set by the test")
        .send()
        .await
        .expect("SetAlarmState");
}

/// The task definitions of a service's running tasks.
async fn running_revisions(via: &TestEnv, service: &str) -> Vec<String> {
    let clients = via.clients().await;
    let cluster = format!("tap-cluster-{}", via.suffix);
    let listed = clients
        .ecs
        .list_tasks()
        .cluster(&cluster)
        .service_name(format!("tap-{service}-{}", via.suffix))
        .desired_status(aws_sdk_ecs::types::DesiredStatus::Running)
        .send()
        .await
        .expect("ListTasks");
    if listed.task_arns().is_empty() {
        return vec![];
    }
    let tasks = clients
        .ecs
        .describe_tasks()
        .cluster(&cluster)
        .set_tasks(Some(listed.task_arns().to_vec()))
        .send()
        .await
        .expect("DescribeTasks");
    let mut revisions: Vec<String> =
        tasks.tasks().iter().filter_map(|t| t.task_definition_arn().map(str::to_string)).collect();
    revisions.sort();
    revisions.dedup();
    revisions
}

/// Polls `done` every 200 ms for up to a minute.
async fn until<F, Fut>(what: &str, mut done: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done().await {
        assert!(Instant::now() < deadline, "never saw: {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_alarm_firing_in_the_bake_time_rolls_back_blue_green_and_rolling_deployments_naming_it() {
    let env = TestEnv::new("shift4");
    let proxy = double();
    let via = env.with_endpoint(&proxy.endpoint());
    // ECS bakes a rolling deployment for its alarms' longest window: 120 periods of a minute, 36 s
    // of the double's ECS minutes (time to see the new tasks and set the alarm, on a busy machine:
    // 18 s was once too short under the whole suite).
    let toml = [
        "[deploy]\nbake_time_minutes = 0\n[alarms]\nevaluation_periods = 120\n".to_string(),
        with_deploy(FRONTEND, r#"strategy = "blue-green""#),
        API_GATEWAY.into(),
        PROCESSING.into(),
    ]
    .concat();
    let config = env.config_file("alarms", &toml);
    deploy_v1(&env, &via, &config).await;
    let before = rule_weights(&env).await;
    let services = ["frontend", "api-gateway", "processing-service"];

    // Blue/green with a long bake time: once production traffic is on the new revision, the
    // frontend's unhealthy-targets alarm fires. ECS rolls back; deploy names the alarm.
    env.push_image(&services, "v2").await;
    let mut command = via.command();
    command.env("TAP_DEPLOY__BAKE_TIME_MINUTES", "100");
    command.args(["--config", config.to_str().unwrap(), "deploy", "--image-tag", "v2", "--timeout", "120"]);
    let deploy = command.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().unwrap();
    until("frontend in its bake time", || async { newest_deployment(&via, "frontend").await.1 == "BAKE_TIME" }).await;
    assert_ne!(live(&rule_weights(&env).await, 50000), live(&before, 50000), "baking on the new revision");
    let alarm = format!("tap-{}-frontend-unhealthy-targets", env.suffix);
    set_alarm(&env, &alarm, StateValue::Alarm).await;
    let out = deploy.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&alarm), "deploy names the alarm:\n{stderr}");
    assert!(stderr.contains("ECS service tap-frontend-shift4"), "{stderr}");
    let (status, _, reason) = newest_deployment(&via, "frontend").await;
    assert_eq!(status, "ROLLBACK_SUCCESSFUL", "{reason}");
    assert_eq!(live(&rule_weights(&env).await, 50000), live(&before, 50000), "production traffic back");

    // Rolling: processing-service's tasks all replaced, ECS watching its alarms before it calls the
    // deployment done, its CPU alarm fires.
    set_alarm(&env, &alarm, StateValue::Ok).await;
    env.push_image(&services, "v3").await;
    let old = running_revisions(&via, "processing-service").await;
    let mut command = via.command();
    command.args(["--config", config.to_str().unwrap(), "deploy", "--image-tag", "v3", "--timeout", "120"]);
    let deploy = command.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().unwrap();
    until("processing-service's tasks all on the new revision", || async {
        let now = running_revisions(&via, "processing-service").await;
        now.len() == 1 && now != old
    })
    .await;
    let (status, _, _) = newest_deployment(&via, "processing-service").await;
    assert_eq!(status, "IN_PROGRESS", "ECS is still watching the alarms");
    let cpu = format!("tap-{}-processing-service-cpu-high", env.suffix);
    set_alarm(&env, &cpu, StateValue::Alarm).await;
    let out = deploy.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&cpu), "deploy names the alarm:\n{stderr}");
    assert!(stderr.contains("ECS service tap-processing-service-shift4"), "{stderr}");
    let (status, _, reason) = newest_deployment(&via, "processing-service").await;
    assert_eq!(status, "ROLLBACK_SUCCESSFUL", "{reason}");
    assert_eq!(running_revisions(&via, "processing-service").await, old, "the old revision runs again");

    set_alarm(&env, &cpu, StateValue::Ok).await;
    tap(&via, &config, &["destroy", "--yes"]).success();
    env.inventory().await.assert_empty("after destroy");
}
