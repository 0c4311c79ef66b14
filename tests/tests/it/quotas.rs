//! End-to-end tests of the quota preflight: the real `tap` through the proxy, whose Service
//! Quotas double answers with a test's applied values (moto knows only the `vpc` service's
//! defaults and enforces no quota).
//!
//! - A second environment in a region whose Elastic IP quota is 5, where the first one holds 3:
//!   plan shows the shortfall, deploy is refused naming the quota and its code with no mutating
//!   call, and the first environment is untouched and redeploys without adding anything.
//! - 120 routed services are refused by the config check, naming the 100-rule limit, before any
//!   AWS call.

use serde_json::Value;
use tests::{proxy, tap_json, Faults, TestEnv};

/// The `quotas` row of `quota_code` in a plan's or deploy's JSON.
fn row<'a>(doc: &'a Value, quota_code: &str) -> &'a Value {
    doc["quotas"]["rows"]
        .as_array()
        .and_then(|rows| rows.iter().find(|r| r["quota_code"] == quota_code))
        .unwrap_or_else(|| panic!("no {quota_code} row in {}", doc["quotas"]))
}

const EIPS: &str = "L-0263D0A3";

#[test]
fn a_second_environment_beyond_the_elastic_ip_quota_is_refused_before_any_write_and_the_first_redeploys() {
    let proxy = proxy(Faults::default());
    proxy.set_quotas(&[("ec2", EIPS, 5.0)]);
    let one = TestEnv::in_region("quota-one", "eu-central-2").with_endpoint(&proxy.endpoint());

    // The first environment: 3 NAT gateways, 3 Elastic IPs of 5.
    let first = tap_json(&one, &["deploy", "--no-wait"], 0);
    let eips = row(&first, EIPS);
    assert_eq!(
        (eips["in_use"].as_f64(), eips["adds"].as_f64(), eips["limit"].as_f64()),
        (Some(0.0), Some(3.0), Some(5.0))
    );
    assert_eq!(eips["source"], "applied (Service Quotas)");
    assert_eq!(eips["short"], false);

    // Its redeploy adds nothing (its 3 addresses are not counted as additions): no quota is asked,
    // nothing is written.
    let before = proxy.calls().len();
    let again = tap_json(&one, &["deploy", "--no-wait"], 0);
    assert!(tests::mutating_calls(&again).is_empty(), "{:?}", tests::mutating_calls(&again));
    assert!(again.get("quotas").is_none_or(|q| q["rows"].as_array().is_none_or(Vec::is_empty)), "{}", again["quotas"]);
    let asked: Vec<String> =
        proxy.calls()[before..].iter().map(|c| c.operation.clone()).filter(|op| op.contains("ServiceQuota")).collect();
    assert!(asked.is_empty(), "a redeploy that adds nothing asks no quota: {asked:?}");

    // The second environment would need 3 more: 6 > 5.
    let two = one.sibling("quota-two");
    let plan = tap_json(&two, &["plan"], 0);
    let eips = row(&plan, EIPS);
    assert_eq!(
        (eips["in_use"].as_f64(), eips["adds"].as_f64(), eips["limit"].as_f64()),
        (Some(3.0), Some(3.0), Some(5.0))
    );
    assert_eq!((eips["short"].as_bool(), eips["refuses"].as_bool()), (Some(true), Some(true)));
    assert_eq!(plan["quotas"]["refused"], true);
    let text = two.tap(&["plan"]).success();
    assert!(
        text.stdout.contains("! EC2-VPC Elastic IPs (L-0263D0A3)") && text.stdout.contains("SHORT by 1"),
        "{}",
        text.stdout
    );
    assert!(text.stdout.contains("--quota-code L-0263D0A3 --desired-value 6"), "{}", text.stdout);

    let before = proxy.calls().len();
    let refused = two.tap(&["--output", "json", "deploy", "--no-wait"]).expect_code(1);
    for needle in [
        "refused before any change",
        "EC2-VPC Elastic IPs",
        "L-0263D0A3",
        "3 in use + 3 this deploy adds = 6 > quota 5",
        "request-service-quota-increase",
    ] {
        assert!(refused.stderr.contains(needle), "{needle} in {}", refused.stderr);
    }
    assert_eq!(refused.json()["error"]["failures"][0]["step"], "quotas");
    let writes: Vec<String> = proxy.calls()[before..]
        .iter()
        .map(|c| c.operation.clone())
        .filter(|op| tap_core::aws::is_mutating(op))
        .collect();
    assert!(writes.is_empty(), "the refused deploy wrote: {writes:?}");

    // The first environment is untouched.
    let after = tap_json(&one, &["plan"], 0);
    assert_eq!(after["changed"], false, "{}", after["changes"]);
    one.tap(&["destroy", "--yes"]).success();
}

#[test]
fn more_routed_services_than_a_listener_takes_rules_are_refused_before_any_call() {
    let proxy = proxy(Faults::default());
    let env = TestEnv::new("quota-rules").with_endpoint(&proxy.endpoint());
    let mut toml = tests::services_toml::FRONTEND.to_owned();
    for i in 0..120 {
        toml.push_str(&format!(
            "\n[[services]]\nname = \"svc-{i}\"\ncpu = 256\nmemory = 512\nport = {}\n\
             route = {{ short_name = \"s{i}\", path_pattern = \"/s{i}/*\", priority = {}, health_check_path = \"/\" }}\n",
            20000 + i,
            100 + i
        ));
    }
    let config = env.config_file("rules", &toml);
    let config = config.to_str().unwrap();
    for command in ["plan", "deploy"] {
        let run = env.tap(&["--config", config, command]).expect_code(1);
        assert!(run.stderr.contains("`services`"), "{}", run.stderr);
        assert!(
            run.stderr.contains("120 listener rules") && run.stderr.contains("at most 100 rules"),
            "{}",
            run.stderr
        );
    }
    assert_eq!(proxy.call_count(), 0, "refused before any AWS call: {:?}", proxy.calls());
}
