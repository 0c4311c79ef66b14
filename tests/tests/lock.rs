//! The environment lock: a run is refused while another holds the lock, with the holder named;
//! `tap unlock` removes a stale lock; deploy and destroy release the lock when they end.

use tests::TestEnv;

#[tokio::test]
async fn a_held_lock_refuses_deploy_and_destroy_naming_the_holder() {
    let env = TestEnv::new("lock-a");
    let clients = env.clients().await;
    // Another run holds the lock (as a crashed run would leave it).
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
    let groups = clients.logs.describe_log_groups().log_group_name_prefix("/tap/locks/").send().await.unwrap();
    assert!(groups.log_groups().is_empty(), "deploy released its lock");
    env.tap(&["destroy", "--yes"]).success();
}

fn tap_filter(env: &str) -> aws_sdk_ec2::types::Filter {
    aws_sdk_ec2::types::Filter::builder().name("tag:Environment").values(env).build()
}
