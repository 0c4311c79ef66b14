//! A destroy killed part way, then a deploy: the deploy converges to exactly the SPEC's inventory
//! (one of each, nothing the killed destroy left half-deleted missing or doubled), plan is empty,
//! and a destroy then leaves nothing.
//!
//! Every run goes through the fault proxy ([`tests::proxy`]) with AWS's asynchronous deletions
//! modelled ([`Faults::async_delete_window`]): a deleted NAT gateway stays `deleting` for the
//! window and keeps its Elastic IP associated until it is `deleted` (as on AWS; moto alone never
//! frees it), deleted load balancers' and services' network interfaces hold their subnets and
//! groups. The `tap` process of the destroy is killed (SIGKILL) as soon as the calls it made reach
//! one of three points: right after the ECS services' deletion, right after the NAT gateways' deletion started (the next deploy finds the addresses
//! still held and must wait for them, saying why, instead of failing with
//! `Resource.AlreadyAssociated` on CreateNatGateway), and in the middle of the network's teardown.

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tests::{proxy, Faults, Proxy, Run, TestEnv};

/// Long enough that a deploy started right after the kill reaches the NAT gateways while their
/// addresses are still held.
const WINDOW: Duration = Duration::from_secs(8);

fn faults() -> Faults {
    Faults { async_delete_window: Some(WINDOW), ..Faults::default() }
}

fn deploy(env: &TestEnv, context: &str) -> Run {
    env.tap(&["--output", "json", "deploy", "--no-wait"]).success_in(context)
}

/// Runs `tap destroy --yes` through `proxy` and kills it (SIGKILL) as soon as the calls it made
/// so far satisfy `point`, given each operation's count.
fn destroy_killed_when(env: &TestEnv, proxy: &Proxy, (what, point): Point) {
    let base = proxy.calls().len();
    let mut child = env
        .with_endpoint(&proxy.endpoint())
        .command()
        .args(["destroy", "--yes"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start tap destroy");
    let start = Instant::now();
    loop {
        let ops: Vec<String> = proxy.calls().into_iter().skip(base).map(|c| c.operation).collect();
        if point(&|op: &str| ops.iter().filter(|o| *o == op).count()) {
            break;
        }
        if let Some(status) = child.try_wait().expect("poll tap") {
            panic!("tap destroy ended ({status}) before the point {what}: {ops:?}");
        }
        assert!(start.elapsed() < Duration::from_secs(300), "the destroy never got {what}: {ops:?}");
        std::thread::sleep(Duration::from_millis(2));
    }
    kill(child);
}

fn kill(mut child: Child) {
    child.kill().expect("SIGKILL tap");
    child.wait().expect("reap tap");
}

/// Where a destroy is stopped, by the calls it made: after the ECS services' deletion (the three
/// `DeleteService`), right after the three NAT gateways' deletion started (their addresses still
/// held; the services deleted too: a service left running would make the next deploy refuse, as
/// it must, to move it to an image its new repository does not have), and in the network's
/// teardown (its first subnet deletion, once the NAT gateways are gone).
type Point = (&'static str, fn(&Count<'_>) -> bool);

/// How many calls of an operation the destroy made so far.
type Count<'a> = dyn Fn(&str) -> usize + 'a;

const POINTS: [Point; 3] = [
    ("after the services' deletion", |n| n("DeleteService") >= 3),
    ("after the NAT gateways' deletion started", |n| n("DeleteNatGateway") >= 3 && n("DeleteService") >= 3),
    ("in the network's teardown", |n| n("DeleteSubnet") >= 1),
];

/// Whether an Elastic IP of `env` is still associated while none of its NAT gateways is usable:
/// the state an interrupted destroy leaves when it stopped after the NAT gateways' deletion.
async fn addresses_held(env: &TestEnv) -> bool {
    use aws_sdk_ec2::types::{Filter, NatGatewayState};
    let clients = env.clients().await;
    let filter = || Filter::builder().name("tag:Environment").values(&env.suffix).build();
    let addresses = clients.ec2.describe_addresses().filters(filter()).send().await.expect("DescribeAddresses");
    let nats = clients.ec2.describe_nat_gateways().filter(filter()).send().await.expect("DescribeNatGateways");
    let live = nats
        .nat_gateways()
        .iter()
        .any(|n| matches!(n.state(), Some(NatGatewayState::Available | NatGatewayState::Pending)));
    !live && addresses.addresses().iter().any(|a| a.association_id().is_some())
}

#[tokio::test]
async fn a_destroy_killed_at_several_points_is_followed_by_a_deploy_that_converges() {
    let env = TestEnv::new("dkill");
    for (what, point) in POINTS {
        let context = format!("destroy killed {what}");
        // A proxy per point, which sees the deploy: it knows what holds what.
        let proxy = proxy(faults());
        let through = env.with_endpoint(&proxy.endpoint());
        deploy(&through, &format!("{context}: first deploy"));
        env.inventory().await.assert_spec(&format!("{context}: first deploy"));

        destroy_killed_when(&env, &proxy, (what, point));
        let held = addresses_held(&env).await;

        let next = deploy(&through, &context);
        let summary: Value = next.json()["summary"].clone();
        assert_eq!(summary["delete"], 0, "{context}: {}", next.stdout);
        if held {
            assert!(
                next.stderr.contains("to be freed before creating network/nat/"),
                "{context}: the deploy waits for the addresses, saying why:\n{}",
                next.stderr
            );
        }
        if what.contains("NAT") {
            assert!(held, "{context}: the NAT gateways' addresses were still held after the kill");
        }
        env.inventory().await.assert_spec(&context);
        let plan = env.tap(&["--output", "json", "plan", "--detailed-exitcode"]);
        assert_eq!(plan.code, Some(0), "{context}: plan wants changes:\n{}\n--- stderr\n{}", plan.stdout, plan.stderr);

        through.tap(&["destroy", "--yes"]).success_in(&format!("{context}: destroy"));
        env.inventory().await.assert_empty(&format!("{context}: destroy"));
    }
}
