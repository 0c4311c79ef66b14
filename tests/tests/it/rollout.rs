//! End-to-end rollouts: the real `tap` binary against moto through the proxy's ECS rollout double
//! ([`tap_moto::rollout`]), which plays deployments, tasks, the circuit breaker and target health
//! over time. A good image: deploy waits until the new revision is COMPLETED and exits 0. A bad
//! image: deploy reports the stopped tasks' reasons and log lines, rolls back itself, exits 1, and
//! the previous revision runs afterwards. A rollback by the circuit breaker is a failure too.

use std::time::{Duration, Instant};

use tap_moto::rollout::{Failure, Rollouts, CRASH_LOG};
use tests::{proxy, Faults, Proxy, TestEnv};

const SERVICES: [&str; 3] = ["frontend", "api-gateway", "processing-service"];

/// A proxy with the rollout double on: images tagged `bad-…` crash (exit code 1).
fn rollout_proxy(circuit_breaker_threshold: usize) -> Proxy {
    let proxy = proxy(Faults::default());
    proxy.set_rollouts(Rollouts {
        bad_images: vec![("bad-".into(), Failure::Crash { exit_code: 1 })],
        task_start: Duration::from_millis(300),
        healthy_after: Duration::from_millis(400),
        circuit_breaker_threshold,
        ..Rollouts::default()
    });
    proxy
}

/// Pushes an image tagged `tag` into every service's repository (straight to moto).
async fn push(env: &TestEnv, tag: &str) {
    let clients = env.clients().await;
    for (i, service) in SERVICES.iter().enumerate() {
        let digest = format!("sha256:{:0>64}", format!("{:x}{i}", tag.bytes().map(u64::from).sum::<u64>()));
        let manifest = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json","config":{{"mediaType":"application/vnd.docker.container.image.v1+json","size":2,"digest":"{digest}"}},"layers":[]}}"#
        );
        let repo = format!("tap-{service}-{}", env.suffix);
        clients.ecr.put_image().repository_name(&repo).image_manifest(manifest).image_tag(tag).send().await.unwrap();
    }
}

/// Each service's PRIMARY deployment as ECS (the double) reports it: (revision, rollout state,
/// running, desired).
async fn primaries(via: &TestEnv) -> Vec<(String, String, i32, i32)> {
    let clients = via.clients().await;
    let names: Vec<String> = SERVICES.iter().map(|s| format!("tap-{s}-{}", via.suffix)).collect();
    let out = clients
        .ecs
        .describe_services()
        .cluster(format!("tap-cluster-{}", via.suffix))
        .set_services(Some(names))
        .send()
        .await
        .unwrap();
    out.services()
        .iter()
        .map(|s| {
            let p = s.deployments().iter().find(|d| d.status() == Some("PRIMARY")).expect("a PRIMARY deployment");
            let td = p.task_definition().unwrap_or_default();
            (
                td.rsplit('/').next().unwrap_or(td).to_string(),
                p.rollout_state().map(|r| r.as_str().to_string()).unwrap_or_default(),
                s.running_count(),
                s.desired_count(),
            )
        })
        .collect()
}

/// Waits until every service's PRIMARY deployment is COMPLETED (the double plays it within a
/// second): the circuit breaker rolls back only to a revision that once completed.
async fn until_completed(via: &TestEnv) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let found = primaries(via).await;
        if found.iter().all(|(_, state, _, _)| state == "COMPLETED") {
            return;
        }
        assert!(Instant::now() < deadline, "the first rollouts never completed: {found:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn revisions(found: &[(String, String, i32, i32)]) -> Vec<String> {
    found.iter().map(|(td, _, _, _)| td.rsplit(':').next().unwrap_or_default().to_string()).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_good_image_waits_for_completion_and_a_bad_one_is_rolled_back_with_reasons() {
    let env = TestEnv::new("roll1");
    let proxy = rollout_proxy(50);
    let via = env.with_endpoint(&proxy.endpoint());
    via.tap(&["deploy", "--no-wait"]).success();
    push(&env, "v2").await;
    push(&env, "bad-1").await;

    // A good image: deploy waits until revision 2 is PRIMARY and COMPLETED, and exits 0.
    let started = Instant::now();
    let good = via.tap(&["--output", "json", "deploy", "--image-tag", "v2", "--timeout", "120"]).success();
    let took = started.elapsed();
    let now = primaries(&via).await;
    for (td, state, running, desired) in &now {
        assert!(td.ends_with(":2"), "revision 2 is PRIMARY: {now:?}\n{}", good.stderr);
        assert_eq!((state.as_str(), running, desired), ("COMPLETED", &2, &2), "{now:?}");
    }
    assert!(took >= Duration::from_millis(700), "deploy waited for the tasks to start and turn healthy: {took:?}");

    // A bad image: every stopped task is reported with its reason, exit code and log lines; after
    // 3 of them tap rolls back to revision 2 itself (the circuit breaker would take 50) and exits 1.
    let bad = via.tap(&["deploy", "--image-tag", "bad-1", "--timeout", "120"]).expect_code(1);
    let err = &bad.stderr;
    for service in SERVICES {
        let ecs = format!("tap-{service}-{}", env.suffix);
        assert!(
            err.contains(&format!("tap rolled ECS service {ecs} back to {ecs}:2")),
            "{service} rolled back by tap:\n{err}"
        );
        assert!(err.contains(&format!("service {service}: task ")), "{service}'s stopped tasks reported:\n{err}");
    }
    assert!(err.contains("(tap-frontend-roll1:3) stopped: Essential container in task exited"), "{err}");
    assert!(err.contains("exit code 1"), "{err}");
    assert!(err.contains(&format!("| {}", CRASH_LOG[1])), "the task's log lines are shown:\n{err}");
    assert!(!err.contains("Deploy complete"), "{err}");
    let after = primaries(&via).await;
    assert_eq!(revisions(&after), ["2", "2", "2"], "the previous revision runs again: {after:?}");
    assert!(after.iter().all(|(_, state, running, _)| state == "COMPLETED" && *running == 2), "{after:?}");

    // `tap status frontend`: deployments with revision and image, the stopped tasks with their
    // reasons, the targets' health and the service's events.
    let detail = via.tap(&["--output", "json", "status", "frontend"]).success().json();
    let svc = &detail["service"];
    assert_eq!(svc["deployments"][0]["revision"], "tap-frontend-roll1:2", "{detail:#}");
    assert_eq!(svc["deployments"][0]["rollout_state"], "COMPLETED", "{detail:#}");
    assert!(svc["deployments"][0]["images"][0].as_str().unwrap_or_default().ends_with(":v2"), "{detail:#}");
    let stopped = svc["stopped_tasks"].as_array().cloned().unwrap_or_default();
    assert!(!stopped.is_empty() && stopped.len() <= 5, "{detail:#}");
    assert!(
        stopped.iter().any(|t| t["revision"] == "tap-frontend-roll1:3"
            && t["stopped_reason"] == "Essential container in task exited"
            && t["containers"][0]["exit_code"] == 1),
        "{detail:#}"
    );
    let targets = svc["targets"].as_array().cloned().unwrap_or_default();
    assert!(targets.iter().filter(|t| t["state"] == "healthy").count() == 2, "{detail:#}");
    assert!(svc["events"].as_array().is_some_and(|e| !e.is_empty()), "{detail:#}");
    let text = via.tap(&["status", "frontend"]).success().stdout;
    assert!(text.contains("Deployments:\n  PRIMARY tap-frontend-roll1:2 COMPLETED"), "{text}");
    assert!(text.contains("Stopped tasks:\n  service frontend: task "), "{text}");

    // The config still asks for the bad image: plan says the services differ.
    let plan = via.tap(&["plan", "--image-tag", "bad-1", "--detailed-exitcode"]).expect_code(2);
    assert!(plan.stdout.contains("task_definition"), "{}", plan.stdout);

    // `tap rollback frontend`: back to the revision before the current one (1), waited for.
    let back = via.tap(&["--output", "json", "rollback", "frontend", "--timeout", "120"]).success().json();
    let fe = "tap-frontend-roll1";
    assert_eq!(
        back["services"],
        serde_json::json!([{"service": "frontend", "from": format!("{fe}:2"), "to": format!("{fe}:1")}])
    );
    let now = primaries(&via).await;
    assert_eq!(revisions(&now), ["1", "2", "2"], "only frontend rolled back: {now:?}");
    assert_eq!((now[0].1.as_str(), now[0].2), ("COMPLETED", 2), "the rollback was waited for: {now:?}");
    // `--to 2`: forward again to a given revision; a revision that is not there is refused.
    let text = via.tap(&["rollback", "frontend", "--to", "2", "--timeout", "120"]).success().stdout;
    assert_eq!(text.trim(), format!("frontend: {fe}:1 -> {fe}:2"));
    assert_eq!(revisions(&primaries(&via).await), ["2", "2", "2"]);
    let missing = via.tap(&["rollback", "frontend", "--to", "9"]).expect_code(1);
    assert!(missing.stderr.contains("revision 9 of tap-frontend-roll1 is not ACTIVE"), "{}", missing.stderr);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_circuit_breaker_rollback_is_reported_as_a_failure() {
    let env = TestEnv::new("roll2");
    let proxy = rollout_proxy(4);
    let via = env.with_endpoint(&proxy.endpoint());
    via.tap(&["deploy", "--no-wait"]).success();
    // Without a completed revision the breaker has nothing to roll back to (the FAILED one stays
    // PRIMARY): let the first rollouts finish, as a waited deploy would.
    until_completed(&via).await;
    push(&env, "bad-2").await;
    // tap would roll back after 50 stopped tasks: the circuit breaker (4) comes first.
    let config = env.config_file("patient", "[deploy]\nmax_failed_tasks = 50\n");
    let config = config.to_str().unwrap();
    let run = via.tap(&["--config", config, "--output", "json", "deploy", "--image-tag", "bad-2", "--timeout", "120"]);
    let run = run.expect_code(1);
    let doc = run.json();
    let failures = doc["error"]["failures"].as_array().cloned().unwrap_or_default();
    assert_eq!(failures.len(), 1, "one failure of the services step: {doc:#}");
    // Every service's rollout is followed to its end: one paragraph each.
    let message = failures[0]["message"].as_str().unwrap_or_default();
    for service in SERVICES {
        let ecs = format!("tap-{service}-{}", env.suffix);
        let start = message
            .find(&format!("the rollout of {ecs}:2 to ECS service {ecs} failed"))
            .unwrap_or_else(|| panic!("no failure for {ecs}: {message}"));
        let rest = &message[start..];
        let text = &rest[..rest[1..].find("services/ecs-service/").map_or(rest.len(), |i| i + 1)];
        assert!(text.contains(&format!("ECS rolled it back: {ecs}:1 is PRIMARY instead of {ecs}:2")), "{text}");
        assert!(text.contains("failed (the deployment circuit breaker stopped it"), "{text}");
        assert!(text.contains("ECS: ECS deployment circuit breaker: tasks failed to start."), "{text}");
        assert!(text.contains("rolling back to deployment ecs-svc/"), "{text}");
        assert!(text.contains("Essential container in task exited"), "{text}");
    }
    assert!(!run.stdout.contains("\"summary\""), "no success document: {}", run.stdout);

    // `tap run`: a one-off task of the service's revision; its log lines, and its exit code as tap's.
    let migrate = via.tap(&["run", "api-gateway", "--", "sh", "-c", "./migrate up && exit 3"]).expect_code(3);
    assert!(migrate.stdout.contains("running: sh -c ./migrate up && exit 3"), "{}", migrate.stdout);
    assert!(migrate.stdout.contains("exiting with code 3"), "{}", migrate.stdout);
    let ok = via.tap(&["--output", "json", "run", "processing-service", "--", "./migrate", "status"]).success().json();
    assert_eq!(ok["task"]["exit_code"], 0, "{ok:#}");
    assert_eq!(ok["task"]["revision"], format!("tap-processing-service-{}:1", env.suffix), "{ok:#}");
    assert_eq!(ok["lines"][0], "running: ./migrate status", "{ok:#}");
    let calls = proxy.calls();
    assert_eq!(calls.iter().filter(|c| c.operation == "RunTask").count(), 2, "one RunTask per run");
}
