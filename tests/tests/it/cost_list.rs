//! What an environment costs and which environments exist, end to end against moto_server: the
//! `cost` object of plan and deploy (a switch to a single NAT gateway saves two NAT gateways and
//! two public IPv4 addresses at the table's prices), `tap list` with two environments side by
//! side and none after both are destroyed, and result commands that print only their result.

use serde_json::Value;
use tests::{Run, TestEnv};

/// `tap <args>` with extra environment variables and without `RUST_LOG` (tap's own defaults).
fn tap_quiet(env: &TestEnv, vars: &[(&str, &str)], args: &[&str]) -> Run {
    Run::from(env.command().env_remove("RUST_LOG").envs(vars.iter().copied()).args(args).output().expect("run tap"))
}

fn json(env: &TestEnv, vars: &[(&str, &str)], args: &[&str]) -> Value {
    let mut all = vec!["--output", "json"];
    all.extend_from_slice(args);
    tap_quiet(env, vars, &all).success().json()
}

/// (monthly, monthly_before) of `resource` in a `cost` object.
fn item(cost: &Value, resource: &str) -> (f64, f64) {
    let i = cost["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["resource"] == resource)
        .unwrap_or_else(|| panic!("{resource} in {cost:#}"));
    (i["monthly"].as_f64().unwrap(), i["monthly_before"].as_f64().unwrap())
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 0.011
}

#[tokio::test]
async fn a_single_nat_gateway_saves_two_nats_and_two_addresses() {
    let env = TestEnv::new("cost-nat");
    let single = [("TAP_NETWORK__NAT_GATEWAYS", "single")];
    let default_monthly = json(&env, &[], &["cost"])["monthly"].as_f64().unwrap();
    let single_monthly = json(&env, &single, &["cost"])["monthly"].as_f64().unwrap();

    // Nothing exists yet: the plan goes from nothing to the whole estimate.
    let plan = json(&env, &[], &["plan"]);
    let cost = &plan["cost"];
    assert_eq!(cost["currency"], "USD");
    assert_eq!(cost["monthly_before"], 0.0, "{cost:#}");
    assert!(close(cost["monthly_after"].as_f64().unwrap(), default_monthly), "{cost:#}");

    let deploy = json(&env, &[], &["deploy", "--no-wait"]);
    assert_eq!(deploy["cost"]["monthly_before"], 0.0, "the first deploy created everything");
    assert!(close(deploy["cost"]["monthly_after"].as_f64().unwrap(), default_monthly));

    // `tap outputs` prints only the outputs: the 12 `key = value` lines, nothing on stderr.
    let outputs = tap_quiet(&env, &[], &["outputs"]).success();
    assert_eq!(outputs.stderr, "", "no logs by default");
    let lines: Vec<&str> = outputs.stdout.lines().collect();
    assert_eq!(lines.len(), 12, "{}", outputs.stdout);
    assert!(lines.iter().all(|l| l.contains(" = ")), "{}", outputs.stdout);
    assert_eq!(tap_quiet(&env, &[], &["status"]).success().stderr, "");

    // Converged: what exists is what the config wants.
    let again = json(&env, &[], &["plan"]);
    assert_eq!(again["cost"]["monthly_before"], again["cost"]["monthly_after"]);
    assert_eq!(again["cost"]["monthly_difference"], 0.0);

    // One NAT gateway instead of three: two NAT gateways (730 h × $0.045) and two public IPv4
    // addresses (730 h × $0.005) less.
    let plan = json(&env, &single, &["plan"]);
    let cost = &plan["cost"];
    let saving = 2.0 * 730.0 * 0.045 + 2.0 * 730.0 * 0.005;
    assert!(close(cost["monthly_difference"].as_f64().unwrap(), -saving), "{cost:#}");
    assert!(close(cost["monthly_before"].as_f64().unwrap(), default_monthly), "{cost:#}");
    assert!(close(cost["monthly_after"].as_f64().unwrap(), single_monthly), "{cost:#}");
    for n in ["2", "3"] {
        assert_eq!(item(cost, &format!("network/nat/{n}")), (0.0, 32.85));
        assert_eq!(item(cost, &format!("network/eip/{n}")), (0.0, 3.65));
    }
    assert_eq!(item(cost, "network/nat/1"), (32.85, 32.85));
    let text = tap_quiet(&env, &single, &["plan"]).success().stdout;
    assert!(text.contains("Cost: $") && text.contains("(-$73.00)"), "{text}");

    json(&env, &[], &["destroy", "--yes"]);
}

#[tokio::test]
async fn list_shows_environments_side_by_side_and_none_after_destroy() {
    // `tap list` reads the whole region: no other test may deploy there.
    let a = TestEnv::alone_in_region("list-a");
    let b = a.sibling("list-b");
    let listed = |env: &TestEnv| -> Vec<Value> {
        let doc = json(env, &[], &["list"]);
        assert_eq!(doc["region"], env.region.as_str());
        assert_eq!(doc["currency"], "USD");
        doc["environments"].as_array().unwrap().clone()
    };
    assert!(listed(&a).is_empty(), "nothing deployed in this region yet");

    json(&a, &[], &["deploy", "--no-wait"]);
    json(&b, &[("TAP_NETWORK__NAT_GATEWAYS", "single")], &["deploy", "--no-wait"]);
    let default_monthly = json(&a, &[], &["cost"])["monthly"].as_f64().unwrap();
    let single_monthly = json(&b, &[("TAP_NETWORK__NAT_GATEWAYS", "single")], &["cost"])["monthly"].as_f64().unwrap();

    let envs = listed(&a);
    let names: Vec<&str> = envs.iter().map(|e| e["environment"].as_str().unwrap()).collect();
    assert_eq!(names, ["list-a", "list-b"]);
    for (e, monthly) in envs.iter().zip([default_monthly, single_monthly]) {
        assert_eq!(e["services"], serde_json::json!(["api-gateway", "frontend", "processing-service"]), "{e}");
        assert!(e["vpc_id"].as_str().unwrap().starts_with("vpc-"), "{e}");
        let created = e["created"].as_str().unwrap_or_else(|| panic!("created in {e}"));
        assert!(created.starts_with("20") && created.ends_with('Z'), "{created}");
        // Read back from AWS, the estimate is the one the configuration gives.
        assert!(close(e["monthly"].as_f64().unwrap(), monthly), "{e} vs {monthly}");
    }

    let text = tap_quiet(&a, &[], &["list"]).success();
    assert_eq!(text.stderr, "", "no logs by default");
    assert!(text.stdout.contains("list-a") && text.stdout.contains("list-b"), "{}", text.stdout);
    assert!(text.stdout.contains("2 environments"), "{}", text.stdout);

    json(&a, &[], &["destroy", "--yes"]);
    let names: Vec<String> = listed(&a).iter().map(|e| e["environment"].as_str().unwrap().to_owned()).collect();
    assert_eq!(names, ["list-b"]);
    json(&b, &[("TAP_NETWORK__NAT_GATEWAYS", "single")], &["destroy", "--yes"]);
    assert!(listed(&a).is_empty(), "none after both are destroyed");
    let text = tap_quiet(&a, &[], &["list"]).success().stdout;
    assert!(text.starts_with("No environments managed by tap in"), "{text}");
}
