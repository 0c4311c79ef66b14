//! A destroy killed part way, then a deploy: the deploy converges to exactly the SPEC's inventory
//! (one of each, nothing the killed destroy left half-deleted missing or doubled), plan is empty,
//! and a destroy then leaves nothing.
//!
//! Every run goes through the fault proxy ([`tests::proxy`]) with AWS's asynchronous deletions
//! modelled ([`Faults::async_delete_window`]): a deleted NAT gateway stays `deleting` for the
//! window and keeps its Elastic IP associated until it is `deleted` (as on AWS; moto alone never
//! frees it), deleted load balancers' and services' network interfaces hold their subnets and
//! groups. The destroy is stopped by the proxy's stall after N calls (then the `tap` process is
//! killed there), at three points measured on a probe destroy: right after the ECS services'
//! deletion, right after the NAT gateways' deletion started (the next deploy finds the addresses
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

fn expect_success(run: Run, context: &str) -> Run {
    assert_eq!(
        run.code,
        Some(0),
        "{context}: tap exited {:?}\n--- stdout\n{}\n--- stderr\n{}",
        run.code,
        run.stdout,
        run.stderr
    );
    run
}

fn deploy(env: &TestEnv, context: &str) -> Run {
    expect_success(env.tap(&["--output", "json", "deploy", "--no-wait"]), context)
}

/// Starts `tap destroy --yes` through `proxy`, which holds every call after the first `n` from
/// now; returns the child once call `n + 1` has arrived.
fn destroy_stalled_after(env: &TestEnv, proxy: &Proxy, n: u64) -> Child {
    let base = proxy.call_count();
    proxy.set_faults(Faults { stall_after: Some(base + n), ..faults() });
    let mut child = env
        .with_endpoint(&proxy.endpoint())
        .command()
        .args(["destroy", "--yes"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start tap destroy");
    let start = Instant::now();
    while proxy.call_count() <= base + n {
        if let Some(status) = child.try_wait().expect("poll tap") {
            panic!("tap destroy ended ({status}) after {} calls, before call {}", proxy.call_count() - base, n + 1);
        }
        assert!(start.elapsed() < Duration::from_secs(180), "tap made only {} calls", proxy.call_count() - base);
        std::thread::sleep(Duration::from_millis(5));
    }
    child
}

fn kill(mut child: Child) {
    child.kill().expect("SIGKILL tap");
    child.wait().expect("reap tap");
}

/// Where to stop a destroy: after the ECS services' deletion, right after the NAT gateways'
/// deletion started, and in the network's teardown (the first subnet or internet gateway call),
/// as call counts of a probe destroy.
fn kill_points(probe: &TestEnv) -> Vec<(&'static str, u64)> {
    let proxy = proxy(faults());
    let through = probe.with_endpoint(&proxy.endpoint());
    deploy(&through, "probe deploy");
    let base = proxy.calls().len();
    expect_success(through.tap(&["destroy", "--yes"]), "probe destroy");
    let ops: Vec<String> = proxy.calls().into_iter().skip(base).map(|c| c.operation).collect();
    let after_last = |op: &str| ops.iter().rposition(|o| o == op).map(|i| i as u64 + 1);
    let at_first = |names: &[&str]| ops.iter().position(|o| names.contains(&o.as_str())).map(|i| i as u64 + 1);
    let points = vec![
        ("after the services' deletion", after_last("DeleteService")),
        ("after the NAT gateways' deletion started", after_last("DeleteNatGateway")),
        ("in the network's teardown", at_first(&["DeleteSubnet", "DetachInternetGateway", "DeleteInternetGateway"])),
    ];
    points
        .into_iter()
        .map(|(what, n)| (what, n.unwrap_or_else(|| panic!("the probe destroy made no call {what}: {ops:?}"))))
        .collect()
}

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
    let probe = TestEnv::new("dkill-probe");
    let points = kill_points(&probe);
    let env = probe.sibling("dkill");
    for (what, n) in points {
        let context = format!("destroy killed {what} (after {n} calls)");
        // A proxy per point, which sees the deploy: it knows what holds what.
        let proxy = proxy(faults());
        let through = env.with_endpoint(&proxy.endpoint());
        deploy(&through, &format!("{context}: first deploy"));
        env.inventory().await.assert_spec(&format!("{context}: first deploy"));

        kill(destroy_stalled_after(&env, &proxy, n));
        proxy.set_faults(faults());
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

        expect_success(through.tap(&["destroy", "--yes"]), &format!("{context}: destroy"));
        env.inventory().await.assert_empty(&format!("{context}: destroy"));
    }
}
