//! The environment lock (SPEC §2): taken only by a run that has something to write, renewed as a
//! lease, and taken over by exactly one contender once its holder is gone.
//!
//! - a lock without a lease (an older tap's) refuses deploy and destroy naming its holder, until
//!   `tap unlock` removes it; deploy takes and releases the lock.
//! - a no-op deploy and a destroy of an empty environment make no mutating call as the wire (the
//!   fault proxy) sees it: the lock is only read.
//! - a lock held by a live run on another host is respected while its lease runs (refused at once,
//!   or bounded by `--lock-timeout`), waited for when its lease is about to end, then taken over.
//! - the holder renews its lease while it runs (a lease shorter than the deploy does not let a
//!   second run in), and stops when its lock is taken over under it.
//! - runs that find one stale lock (its holder's pid on this host is gone) at the same time: one
//!   takes it over, the others are refused naming the new holder (or run after it), and the
//!   stack is built once; a takeover marker left by a contender that died is taken over too.

use std::collections::HashMap;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tap_core::aws::is_mutating;
use tests::AwsClients;
use tests::{proxy, Faults, Run, TestEnv};

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// This host's name as tap reads it.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap().trim().to_owned()
}

/// The pid of a process that has exited.
fn dead_pid() -> u32 {
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
    pid
}

/// The tags tap writes on a lock (or a takeover marker) held by `run`.
fn lock_tags(env: &str, host: &str, pid: u32, run: &str, lease_until: u64, lease: u64) -> HashMap<String, String> {
    [
        ("Environment", env.to_string()),
        ("tap:component", "lock".into()),
        ("tap:lock-holder", format!("ana@{host} pid {pid} deploy run {run}")),
        ("tap:lock-user", "ana".into()),
        ("tap:lock-host", host.into()),
        ("tap:lock-pid", pid.to_string()),
        ("tap:lock-command", "deploy".into()),
        ("tap:lock-run", run.into()),
        ("tap:lock-taken", (unix_now() - 5).to_string()),
        ("tap:lock-lease-until", lease_until.to_string()),
        ("tap:lock-lease-seconds", lease.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

async fn create_group(clients: &AwsClients, name: &str, tags: HashMap<String, String>) {
    clients.logs.create_log_group().log_group_name(name).set_tags(Some(tags)).send().await.unwrap();
}

/// The ARN the tagging API takes for log group `name`.
async fn group_arn(clients: &AwsClients, name: &str) -> String {
    let groups = clients.logs.describe_log_groups().log_group_name_prefix(name).send().await.unwrap();
    let group = groups.log_groups().iter().find(|g| g.log_group_name() == Some(name)).expect("the group exists");
    let arn = group.arn().unwrap();
    arn.strip_suffix(":*").unwrap_or(arn).to_owned()
}

/// Log groups under `/tap/locks/{env}` (the lock and any takeover markers).
async fn lock_groups(clients: &AwsClients, env: &str) -> Vec<String> {
    let lock = format!("/tap/locks/{env}");
    let groups = clients.logs.describe_log_groups().log_group_name_prefix(&lock).send().await.unwrap();
    groups
        .log_groups()
        .iter()
        .filter_map(|g| g.log_group_name())
        .filter(|n| *n == lock || n.starts_with(&format!("{lock}/")))
        .map(str::to_owned)
        .collect()
}

fn wait_output(child: Child) -> Run {
    Run::from(child.wait_with_output().expect("wait for tap"))
}

fn spawn(env: &TestEnv, args: &[&str]) -> Child {
    env.command().args(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("start tap")
}

#[tokio::test]
async fn a_held_lock_refuses_deploy_and_destroy_naming_the_holder() {
    let env = TestEnv::new("lock-a");
    let clients = env.clients().await;
    // A lock as an older tap wrote it: a holder, no lease. It is never stale by itself.
    clients
        .logs
        .create_log_group()
        .log_group_name("/tap/locks/lock-a")
        .tags("tap:lock-holder", "ana@build-7 pid 4242 (deploy) run 1")
        .send()
        .await
        .unwrap();

    for args in [&["deploy", "--no-wait"][..], &["destroy", "--yes"][..]] {
        let run = env.tap(args).expect_code(1);
        assert!(run.stderr.contains("ana@build-7 pid 4242"), "holder named: {}", run.stderr);
        assert!(run.stderr.contains("unlock"), "the way out is named: {}", run.stderr);
    }
    // Refused before touching anything: no VPC of this environment exists.
    let vpcs = clients.ec2.describe_vpcs().filters(tap_filter("lock-a")).send().await.unwrap();
    assert!(vpcs.vpcs().is_empty());

    let unlock = env.tap(&["unlock"]).success();
    assert!(unlock.stdout.contains("ana@build-7"), "{}", unlock.stdout);
    assert!(env.tap(&["unlock"]).success().stdout.contains("not locked"));

    // A plan never takes the lock; deploy takes and releases it.
    env.tap(&["plan"]).success();
    env.tap(&["deploy", "--no-wait"]).success();
    assert!(lock_groups(&clients, "lock-a").await.is_empty(), "deploy released its lock");
    env.tap(&["destroy", "--yes"]).success();
    assert!(lock_groups(&clients, "lock-a").await.is_empty(), "destroy released its lock");
}

#[tokio::test]
async fn a_no_op_deploy_and_an_empty_destroy_make_no_mutating_call_on_the_wire() {
    let env = TestEnv::new("lock-noop");
    env.tap(&["deploy", "--no-wait"]).success();

    let wire = proxy(Faults::default());
    let through = env.with_endpoint(&wire.endpoint());
    let mutating_on_the_wire = || -> Vec<String> {
        wire.calls().into_iter().map(|c| c.operation).filter(|op| is_mutating(op)).collect::<Vec<_>>()
    };

    // Without --no-wait too: the no-op deploy still runs its (read-only) converge pass.
    for args in [&["--output", "json", "deploy", "--no-wait"][..], &["--output", "json", "deploy"][..]] {
        let before = wire.calls().len();
        let doc = through.tap(args).success().json();
        let seen: Vec<String> = wire.calls()[before..].iter().map(|c| c.operation.clone()).collect();
        assert!(seen.len() > 20, "{args:?}: the deploy read the environment: {seen:?}");
        assert!(seen.iter().any(|op| op == "DescribeLogGroups"), "{args:?}: the lock was read: {seen:?}");
        assert_eq!(mutating_on_the_wire(), Vec::<String>::new(), "{args:?}: a no-op deploy writes nothing");
        assert_eq!(doc["calls"]["mutating"], 0, "{args:?}: {}", doc["calls"]);
        assert_eq!(doc["changed"], false, "{doc}");
        assert_eq!(doc["command"], "deploy");
        assert!(doc["summary"]["unchanged"].as_u64().unwrap() >= 23, "{}", doc["summary"]);
    }
    let text = through.tap(&["deploy", "--no-wait"]).success();
    let last = text.stdout.lines().last().unwrap_or_default().to_owned();
    assert!(last.starts_with("Deploy complete: 0 created, 0 updated, 0 deleted, "), "{last}");
    assert!(last.contains("(0 mutating)"), "{last}");

    // A destroy with something to delete takes the lock; once empty, destroying again writes nothing.
    env.tap(&["destroy", "--yes"]).success();
    env.inventory().await.assert_empty("after destroy");
    let before = wire.calls().len();
    let doc = through.tap(&["--output", "json", "destroy", "--yes"]).success().json();
    assert!(wire.calls().len() > before + 5, "the empty destroy looked");
    assert_eq!(mutating_on_the_wire(), Vec::<String>::new(), "destroying an empty environment writes nothing");
    assert_eq!(doc["summary"]["delete"], 0, "{doc}");
    assert_eq!(doc["command"], "destroy");
    assert!(lock_groups(&env.clients().await, "lock-noop").await.is_empty());

    // A change is written under the lock, which is released after.
    let before = wire.calls().len();
    through.tap(&["deploy", "--no-wait"]).success();
    let ops: Vec<String> = wire.calls()[before..].iter().map(|c| c.operation.clone()).collect();
    let creates = ops.iter().filter(|op| *op == "CreateLogGroup").count();
    assert!(creates >= 4, "the lock and the 3 service log groups were created: {ops:?}");
    assert!(ops.iter().any(|op| op == "DeleteLogGroup"), "the lock was released: {ops:?}");
    env.tap(&["destroy", "--yes"]).success();
}

#[tokio::test]
async fn a_live_lock_on_another_host_is_respected_until_its_lease_ends_then_taken_over() {
    let env = TestEnv::new("lock-remote");
    let clients = env.clients().await;
    let lock = "/tap/locks/lock-remote";
    // A run on another host holds the lock: its pid (ours, alive) says nothing here; its lease
    // runs 40 more seconds of 60, as a holder that renews keeps it.
    let tags = lock_tags("lock-remote", "ci-runner-elsewhere", std::process::id(), "0feedbee", unix_now() + 40, 60);
    create_group(&clients, lock, tags).await;

    let start = Instant::now();
    let refused = env.tap(&["deploy", "--no-wait"]).expect_code(1);
    assert!(
        refused.stderr.contains("ci-runner-elsewhere") && refused.stderr.contains("run 0feedbee"),
        "{}",
        refused.stderr
    );
    assert!(refused.stderr.contains("lease ends in"), "{}", refused.stderr);
    let bounded = env.tap(&["deploy", "--no-wait", "--lock-timeout", "2"]).expect_code(1);
    assert!(bounded.stderr.contains("ci-runner-elsewhere"), "{}", bounded.stderr);
    assert!(start.elapsed() < Duration::from_secs(30), "refused without waiting for the lease: {:?}", start.elapsed());
    let vpcs = clients.ec2.describe_vpcs().filters(tap_filter("lock-remote")).send().await.unwrap();
    assert!(vpcs.vpcs().is_empty(), "nothing was written while the lock was held");

    // Its holder stops renewing: 4 s are left of the lease. Deploy waits for the end by default,
    // then takes the lock over.
    let until = unix_now() + 4;
    let arn = group_arn(&clients, lock).await;
    clients
        .logs
        .tag_resource()
        .resource_arn(&arn)
        .tags("tap:lock-lease-until", until.to_string())
        .send()
        .await
        .unwrap();
    let next = env.tap(&["deploy", "--no-wait"]);
    let ended = unix_now();
    let next = next.success();
    assert!(
        next.stderr.contains("took over the lock of run 0feedbee") && next.stderr.contains("whose lease ended"),
        "{}",
        next.stderr
    );
    assert!(ended >= until, "the lease was respected to its end ({until}), the deploy ended at {ended}");
    assert!(
        next.stderr.contains("is locked by") && next.stderr.contains("waiting"),
        "it said it waits: {}",
        next.stderr
    );
    env.inventory().await.assert_spec("after the takeover");
    assert!(lock_groups(&clients, "lock-remote").await.is_empty(), "the lock was released, no marker left");
    env.tap(&["destroy", "--yes"]).success();
    env.inventory().await.assert_empty("after destroy");
}

#[tokio::test]
async fn runs_that_find_one_stale_lock_at_once_take_it_over_exactly_once() {
    let env = TestEnv::new("lock-race");
    let clients = env.clients().await;
    // The holder ran here and its process is gone; its lease would run 10 more minutes.
    let stale = lock_tags("lock-race", &hostname(), dead_pid(), "5ca1ab1e", unix_now() + 600, 600);
    create_group(&clients, "/tap/locks/lock-race", stale).await;

    let runs: Vec<Child> = (0..3).map(|_| spawn(&env, &["--output", "json", "deploy", "--no-wait"])).collect();
    let pids: Vec<u32> = runs.iter().map(Child::id).collect();
    let runs: Vec<Run> = runs.into_iter().map(wait_output).collect();
    let took_over: Vec<usize> =
        (0..runs.len()).filter(|&i| runs[i].stderr.contains("took over the lock of run 5ca1ab1e")).collect();
    let all = runs.iter().map(|r| format!("exit {:?}\n{}", r.code, r.stderr)).collect::<Vec<_>>().join("\n---\n");
    assert_eq!(took_over.len(), 1, "exactly one run took the stale lock over:\n{all}");
    let winner = took_over[0];
    eprintln!("race outcomes (exit codes): {:?}, winner {winner}", runs.iter().map(|r| r.code).collect::<Vec<_>>());
    assert_eq!(runs[winner].code, Some(0), "{all}");
    assert!(runs[winner].stderr.contains("whose process is gone"), "{all}");
    for (i, run) in runs.iter().enumerate().filter(|&(i, _)| i != winner) {
        match run.code {
            // Refused, naming the run that took the lock over.
            Some(1) => assert!(run.stderr.contains(&format!("pid {} (deploy)", pids[winner])), "{i}:\n{all}"),
            // Or it came after the winner had finished, and found nothing stale.
            Some(0) => assert!(!run.stderr.contains("took over"), "{i}:\n{all}"),
            other => panic!("run {i} exited {other:?}:\n{all}"),
        }
    }
    env.inventory().await.assert_spec("after the race");
    assert!(lock_groups(&clients, "lock-race").await.is_empty(), "no lock and no takeover marker left");

    // A contender that died between winning the takeover marker and taking the lock leaves both
    // behind: the marker is taken over in turn, and the lock with it.
    let host = hostname();
    create_group(
        &clients,
        "/tap/locks/lock-race",
        lock_tags("lock-race", &host, dead_pid(), "0dead001", unix_now() + 600, 600),
    )
    .await;
    create_group(
        &clients,
        "/tap/locks/lock-race/takeover/0dead001",
        lock_tags("lock-race", &host, dead_pid(), "0dead002", unix_now() + 600, 600),
    )
    .await;
    let destroy = env.tap(&["destroy", "--yes"]).success();
    assert!(destroy.stderr.contains("took over the lock of run 0dead001"), "{}", destroy.stderr);
    env.inventory().await.assert_empty("after destroy");
    assert!(lock_groups(&clients, "lock-race").await.is_empty(), "no lock and no marker left");
}

/// The lock's tags, read straight from the emulator.
async fn lock_tags_of(clients: &AwsClients, env: &str) -> Option<HashMap<String, String>> {
    let name = format!("/tap/locks/{env}");
    let groups = clients.logs.describe_log_groups().log_group_name_prefix(&name).send().await.unwrap();
    let group = groups.log_groups().iter().find(|g| g.log_group_name() == Some(name.as_str()))?;
    let arn = group.arn().unwrap();
    let tags = clients.logs.list_tags_for_resource().resource_arn(arn.strip_suffix(":*").unwrap_or(arn)).send().await;
    tags.ok().map(|t| t.tags().cloned().unwrap_or_default())
}

#[tokio::test]
async fn the_holder_renews_its_lease_and_stops_when_the_lock_is_taken_from_it() {
    let env = TestEnv::new("lock-lease");
    let clients = env.clients().await;
    // Every call a second slower: the deploy outlasts its 6 s lease (renewed every 2 s, each
    // renewal two calls) about three times.
    let slow = proxy(Faults { latency: Duration::from_secs(1), ..Faults::default() });
    let spawn_slow = || {
        env.with_endpoint(&slow.endpoint())
            .command()
            .env("TAP_LOCK_LEASE_SECONDS", "6")
            .args(["deploy", "--no-wait"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start tap deploy")
    };
    let first = spawn_slow();
    let start = Instant::now();
    let taken = loop {
        if let Some(tags) = lock_tags_of(&clients, "lock-lease").await {
            if tags.contains_key("tap:lock-lease-until") {
                break tags;
            }
        }
        assert!(start.elapsed() < Duration::from_secs(60), "the deploy never took the lock");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(taken["tap:lock-pid"], first.id().to_string());
    assert_eq!(taken["tap:lock-lease-seconds"], "6");
    let lease_until = |tags: &HashMap<String, String>| tags["tap:lock-lease-until"].parse::<u64>().unwrap();

    // More than a lease later the lock is still the first run's, its lease moved on, and another
    // deploy is refused at once naming it.
    tokio::time::sleep(Duration::from_secs(7)).await;
    let renewed = lock_tags_of(&clients, "lock-lease").await.expect("the lock is still held");
    assert_eq!(renewed["tap:lock-run"], taken["tap:lock-run"]);
    assert!(lease_until(&renewed) >= lease_until(&taken) + 2, "renewed: {taken:?} -> {renewed:?}");
    assert!(lease_until(&renewed) > unix_now(), "the lease has not ended: {renewed:?}");
    let refused = env.tap(&["deploy", "--no-wait"]).expect_code(1);
    assert!(refused.stderr.contains(&format!("pid {} (deploy)", first.id())), "{}", refused.stderr);

    // Another run takes the lock over (as if the first had stopped renewing): the first stops.
    let arn = group_arn(&clients, "/tap/locks/lock-lease").await;
    let mut retag = clients.logs.tag_resource().resource_arn(&arn);
    for (k, v) in lock_tags("lock-lease", "elsewhere", 1, "0cafe000", unix_now() + 1, 3) {
        retag = retag.tags(k, v);
    }
    retag.send().await.unwrap();
    let stopped = wait_output(first);
    assert_eq!(stopped.code, Some(1), "{}", stopped.stderr);
    assert!(
        stopped.stderr.contains("lost the environment lock") && stopped.stderr.contains("run 0cafe000"),
        "{}",
        stopped.stderr
    );
    assert_eq!(
        lock_tags_of(&clients, "lock-lease").await.unwrap()["tap:lock-run"],
        "0cafe000",
        "not removed by the loser"
    );

    // Once that lease ends, destroy takes the lock over. (The first deploy may have made all of the
    // stack before it noticed, so a deploy could have nothing to write and take no lock; destroy
    // has. Its wait is bounded explicitly: a renewal of the first run in flight while the lock was
    // retagged may have pushed the lease end by one lease.)
    let destroy = env.tap(&["destroy", "--yes", "--lock-timeout", "30"]).success();
    assert!(destroy.stderr.contains("took over the lock of run 0cafe000"), "{}", destroy.stderr);
    env.inventory().await.assert_empty("after destroy");
    assert!(lock_groups(&clients, "lock-lease").await.is_empty());
}

fn tap_filter(env: &str) -> aws_sdk_ec2::types::Filter {
    aws_sdk_ec2::types::Filter::builder().name("tag:Environment").values(env).build()
}
