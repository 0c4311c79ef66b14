//! Reliability under the faults real AWS produces, injected by a loopback proxy in front of
//! moto_server (`tap_moto::proxy`):
//!
//! - 10 % of all calls throttled: deploy still succeeds (the SDK's standard retry mode backs off)
//!   and the stack is exactly the SPEC's.
//! - the answer of 30 % of create calls dropped after moto executed them: deploy and a rerun end
//!   with exactly one of each resource (creates are not resent blindly; a lost create is looked up
//!   and adopted).
//! - 30 % of create calls carried out by moto and then answered `500 InternalError`, for three
//!   fault seeds: the first deploy succeeds with exactly one of each resource (a 5xx leaves the
//!   outcome unknown, so the create is looked up and adopted, not resent), a rerun changes
//!   nothing, plan is empty and destroy leaves nothing.
//! - `tap deploy` SIGKILLed at five points (after N calls): the next plain deploy — no `tap unlock`
//!   — takes over the lock the killed run left (its process is gone), completes the SPEC stack, one
//!   of each, and destroy removes everything.
//! - a second deploy while one runs is refused naming the holder, or waits with `--lock-timeout`
//!   and takes the lock over once the first is killed.
//!
//! Each test has its own environment and region; the stack is counted kind by kind with the SDK
//! ([`tests::Inventory`]).

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tests::{proxy, Fate, Faults, Proxy, Run, TestEnv};

/// `tap --output json deploy --no-wait` against `env`'s endpoint; must succeed.
fn deploy(env: &TestEnv) -> Value {
    env.tap(&["--output", "json", "deploy", "--no-wait"]).success().json()
}

/// `plan --detailed-exitcode` straight against moto: exit 0 means every resource and setting
/// matches the SPEC.
fn assert_no_changes(env: &TestEnv, context: &str) {
    let run = env.tap(&["--output", "json", "plan", "--detailed-exitcode"]);
    assert_eq!(run.code, Some(0), "{context}: plan wants changes:\n{}\n--- stderr\n{}", run.stdout, run.stderr);
}

/// Destroy straight against moto, then nothing of the environment may be left.
async fn destroy_and_assert_empty(env: &TestEnv, context: &str) {
    env.tap(&["destroy", "--yes"]).success();
    env.inventory().await.assert_empty(context);
}

fn fates(proxy: &Proxy, fate: Fate) -> Vec<String> {
    proxy.calls().into_iter().filter(|c| c.fate == fate).map(|c| c.operation).collect()
}

/// Starts `tap deploy` through `proxy`, which holds every call after the first `n`; returns the
/// child once call `n + 1` has arrived (so exactly `n` calls were answered).
fn deploy_stalled_after(env: &TestEnv, proxy: &Proxy, n: u64) -> Child {
    proxy.set_faults(Faults { stall_after: Some(n), ..Faults::default() });
    let mut child = env
        .with_endpoint(&proxy.endpoint())
        .command()
        .args(["--output", "json", "deploy", "--no-wait"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start tap deploy");
    let start = Instant::now();
    while proxy.call_count() <= n {
        if let Some(status) = child.try_wait().expect("poll tap") {
            panic!("tap deploy ended ({status}) after {} calls, before call {}", proxy.call_count(), n + 1);
        }
        assert!(start.elapsed() < Duration::from_secs(120), "tap made only {} calls", proxy.call_count());
        std::thread::sleep(Duration::from_millis(5));
    }
    child
}

fn kill(mut child: Child) {
    child.kill().expect("SIGKILL tap");
    child.wait().expect("reap tap");
}

#[tokio::test]
async fn deploy_succeeds_with_ten_percent_of_calls_throttled() {
    let env = TestEnv::new("rel-throttle");
    let proxy = proxy(Faults { throttle_percent: 10, ..Faults::default() });
    let doc = deploy(&env.with_endpoint(&proxy.endpoint()));

    let throttled = fates(&proxy, Fate::Throttled).len();
    let seen = proxy.calls().len();
    assert!(throttled * 100 >= seen * 5, "the proxy throttled {throttled} of {seen} calls");
    let calls = &doc["calls"];
    assert!(calls["attempts"].as_u64() > calls["total"].as_u64(), "throttled calls were retried: {calls}");
    env.inventory().await.assert_spec("after a throttled deploy");
    assert_no_changes(&env, "after a throttled deploy");
    destroy_and_assert_empty(&env, "after destroy").await;
}

#[tokio::test]
async fn lost_create_responses_make_no_duplicates() {
    let env = TestEnv::new("rel-lost");
    let proxy = proxy(Faults { drop_create_response_percent: 30, ..Faults::default() });
    let through_proxy = env.with_endpoint(&proxy.endpoint());

    deploy(&through_proxy);
    let dropped = fates(&proxy, Fate::ResponseDropped);
    assert!(dropped.len() >= 10, "the proxy dropped only {dropped:?}");
    env.inventory().await.assert_spec("after a deploy that lost create answers");

    // A rerun under the same faults adds nothing and changes nothing.
    let rerun = deploy(&through_proxy);
    let summary = &rerun["summary"];
    assert_eq!(
        (&summary["create"], &summary["update"], &summary["delete"]),
        (&0.into(), &0.into(), &0.into()),
        "{rerun}"
    );
    env.inventory().await.assert_spec("after a rerun");
    assert_no_changes(&env, "after a rerun");
    destroy_and_assert_empty(&env, "after destroy").await;
}

/// Task definition families of the environment with more than one ACTIVE revision (a resent
/// RegisterTaskDefinition makes a second one; the inventory counts families).
async fn families_with_extra_revisions(env: &TestEnv) -> Vec<(String, usize)> {
    let ecs = env.clients().await.ecs;
    let mut extra = Vec::new();
    for service in ["frontend", "api-gateway", "processing-service"] {
        let family = format!("tap-{service}-{}", env.suffix);
        let active = ecs
            .list_task_definitions()
            .family_prefix(&family)
            .status(aws_sdk_ecs::types::TaskDefinitionStatus::Active)
            .send()
            .await
            .expect("ListTaskDefinitions");
        let revisions = active.task_definition_arns().iter().filter(|a| a.contains(&format!("/{family}:"))).count();
        if revisions != 1 {
            extra.push((family, revisions));
        }
    }
    extra
}

/// One fault seed of [`creates_answered_500_after_taking_effect_make_no_duplicates`].
async fn internal_errors_after_creates(seed: u64) {
    let env = TestEnv::new(&format!("rel-5xx-{seed}"));
    let context = format!("seed {seed}");
    let proxy = proxy(Faults { internal_error_after_create_percent: 30, seed, ..Faults::default() });
    let through_proxy = env.with_endpoint(&proxy.endpoint());
    // With 3 in 10 create-like answers failing, 5 attempts per call (the default) leave a call
    // the SDK may resend (PutRolePolicy, PutRetentionPolicy, CreateLogGroup, …: safe to resend)
    // failing all of them 0.24 % of the time, some 6 % of deploys with their ~25 such calls: the
    // test gives the SDK 10 attempts, so that only tap's own handling of unknown outcomes is
    // measured. The creates that must not be resent never use those attempts (NoBlindRetry).
    let deploy_through_proxy = || {
        let mut command = through_proxy.command();
        command.args(["--output", "json", "deploy", "--no-wait"]).env("TAP_AWS__MAX_ATTEMPTS", "10");
        Run::from(command.output().expect("run tap"))
    };

    // Required: the first deploy already succeeds, with exactly one of each resource.
    deploy_through_proxy().success_in(&format!("{context}: the first deploy"));
    let faulted = fates(&proxy, Fate::InternalErrorAfterEffect);
    assert!(faulted.len() >= 10, "{context}: the proxy answered only {faulted:?} with 500");
    eprintln!("{context}: {} creates answered 500 after taking effect: {faulted:?}", faulted.len());
    env.inventory()
        .await
        .assert_spec(&format!("{context}: after a deploy whose creates were answered 500 ({faulted:?})"));
    let extra = families_with_extra_revisions(&env).await;
    assert!(extra.is_empty(), "{context}: task definition revisions registered twice: {extra:?}");

    // A rerun under the same faults adds nothing and changes nothing.
    let rerun = deploy_through_proxy().success_in(&format!("{context}: the rerun")).json();
    let summary = &rerun["summary"];
    assert_eq!(
        (&summary["create"], &summary["update"], &summary["delete"]),
        (&0.into(), &0.into(), &0.into()),
        "{context}: {rerun}"
    );
    env.inventory().await.assert_spec(&format!("{context}: after the rerun"));
    assert_no_changes(&env, &format!("{context}: after the rerun"));
    destroy_and_assert_empty(&env, &format!("{context}: after destroy")).await;
}

#[test]
fn creates_answered_500_after_taking_effect_make_no_duplicates() {
    // Three fault seeds, each its own environment and region, side by side.
    let failures: Vec<String> = std::thread::scope(|scope| {
        let runs: Vec<_> = [1u64, 2, 3]
            .into_iter()
            .map(|seed| {
                let run = scope.spawn(move || {
                    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
                    runtime.block_on(internal_errors_after_creates(seed));
                });
                (seed, run)
            })
            .collect();
        runs.into_iter()
            .filter_map(|(seed, run)| {
                let panic = run.join().err()?;
                let message = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                Some(format!("seed {seed}: {message}"))
            })
            .collect()
    });
    assert!(failures.is_empty(), "{} of 3 fault seeds failed:\n{}", failures.len(), failures.join("\n\n"));
}

/// The calls a full deploy makes through the proxy (its plan and the lock's included), measured once.
fn calls_of_a_full_deploy(env: &TestEnv) -> u64 {
    let proxy = proxy(Faults::default());
    deploy(&env.with_endpoint(&proxy.endpoint()));
    let n = proxy.call_count();
    env.tap(&["destroy", "--yes"]).success();
    n
}

#[tokio::test]
async fn a_deploy_killed_at_any_point_is_finished_by_the_next_one() {
    let probe = TestEnv::new("rel-kill-probe");
    let total = calls_of_a_full_deploy(&probe);
    assert!(total > 50, "a full deploy makes {total} calls");
    // Early (the plan before the lock), while creating the network, the middle, late, and near the end.
    let points: Vec<u64> = [3, 20, 40, 65, 90].iter().map(|pct| total * pct / 100).collect();
    let env = probe.sibling("rel-kill");
    let mut locks_left = 0;
    for (i, &n) in points.iter().enumerate() {
        let context = format!("kill point {} (after {n} of {total} calls)", i + 1);
        // A proxy per point: its call count (where it stalls) starts at 0 with this deploy.
        let proxy = proxy(Faults::default());
        let child = deploy_stalled_after(&env, &proxy, n);
        let pid = child.id();
        kill(child);

        // A run killed after taking the lock leaves it; the next plain deploy takes it over.
        let left = env.inventory().await.counts["logs:lock"] == 1;
        let next = env.tap(&["--output", "json", "deploy", "--no-wait"]);
        let next = next.success_in(&context);
        if left {
            locks_left += 1;
            assert!(
                next.stderr.contains("took over the lock of run ")
                    && next.stderr.contains(&format!("pid {pid} (deploy)"))
                    && next.stderr.contains("whose process is gone"),
                "{context}: {}",
                next.stderr
            );
        }
        assert!(next.json()["summary"]["delete"] == 0, "{context}: {}", next.stdout);
        env.inventory().await.assert_spec(&context);
        assert_no_changes(&env, &context);
        destroy_and_assert_empty(&env, &format!("{context}: destroy")).await;
    }
    assert!(locks_left >= 3, "only {locks_left} of the kill points came after the lock was taken");
}

#[tokio::test]
async fn ctrl_c_stops_cleanly_releasing_the_lock() {
    let env = TestEnv::new("rel-int");
    let proxy = proxy(Faults::default());
    let mut child = deploy_stalled_after(&env, &proxy, 60);
    // Calls from now on go through again (the stalled ones stay held), so the interrupted run
    // can release its lock.
    proxy.set_faults(Faults::default());
    let start = Instant::now();
    let status = std::process::Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let exited = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "tap did not stop within 20 s of Ctrl-C");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(!exited.success(), "an interrupted deploy does not report success");
    assert_eq!(env.inventory().await.counts["logs:lock"], 0, "the lock was released");

    // The next deploy needs no unlock and finishes the stack.
    deploy(&env);
    env.inventory().await.assert_spec("after the deploy that followed Ctrl-C");
    destroy_and_assert_empty(&env, "after destroy").await;
}

#[tokio::test]
async fn a_second_deploy_is_refused_or_waits_while_one_runs() {
    let env = TestEnv::new("rel-lock");
    let proxy = proxy(Faults::default());
    // Stalled in its apply, after the plan and after taking the lock.
    let first = deploy_stalled_after(&env, &proxy, 60);
    let holder = format!("pid {} (deploy)", first.id());

    // Refused at once, naming the running deploy.
    let refused = env.tap(&["deploy", "--no-wait"]).expect_code(1);
    assert!(refused.stderr.contains(&holder), "holder named: {}", refused.stderr);
    assert!(refused.stderr.contains("--lock-timeout"), "the way to wait is named: {}", refused.stderr);

    // With --lock-timeout it waits, and goes ahead once the lock is released.
    let mut second = env
        .command()
        .args(["--output", "json", "deploy", "--no-wait", "--lock-timeout", "120"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the waiting deploy");
    std::thread::sleep(Duration::from_secs(2));
    assert!(second.try_wait().unwrap().is_none(), "the second deploy waits for the lock");
    // The first dies holding the lock: the waiting deploy takes it over (no `tap unlock`).
    let first_pid = first.id();
    kill(first);
    let run = Run::from(second.wait_with_output().expect("waiting deploy")).success_in("the waiting deploy");
    assert_eq!(run.json()["command"], "deploy");
    assert!(
        run.stderr.contains("took over the lock of run") && run.stderr.contains(&format!("pid {first_pid} (deploy)")),
        "{}",
        run.stderr
    );

    env.inventory().await.assert_spec("after the waiting deploy");
    destroy_and_assert_empty(&env, "after destroy").await;
}

/// With AWS's asynchronous deletions modelled by the proxy (a NAT gateway `deleting`, a deleted
/// load balancer's and services' network interfaces holding their subnets and security groups,
/// each for a window), destroy overlaps the windows instead of waiting them out one after
/// another, and leaves nothing. The window is 10 s, not 2-3 s: the polls back off (1, 2, 4, 5 s
/// apart), so a shorter window would measure the backoff rather than the overlap.
#[tokio::test]
async fn destroy_overlaps_asynchronous_deletions_and_leaves_nothing() {
    let env = TestEnv::new("rel-async");
    let window = Duration::from_secs(10);
    let proxy = proxy(Faults { async_delete_window: Some(window), ..Faults::default() });
    let through_proxy = env.with_endpoint(&proxy.endpoint());
    deploy(&through_proxy);

    let start = Instant::now();
    through_proxy.tap(&["destroy", "--yes"]).success();
    let took = start.elapsed();
    env.inventory().await.assert_empty("after destroy under asynchronous deletions");
    let refused = fates(&proxy, Fate::Refused);
    assert!(
        refused.iter().all(|op| op == "DeleteSecurityGroup" || op == "DeleteSubnet"),
        "only the deletions held by network interfaces (which AWS does not announce) are retried: {refused:?}"
    );
    assert!(took >= window, "destroy waited for the NAT gateways' deletion: {took:?}");
    // Sequential windows (the NAT gateways after the groups) take two windows and more.
    assert!(took < window * 16 / 10, "destroy took {took:?}, over 1.6 windows of {window:?}");
}
