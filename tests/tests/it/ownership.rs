//! End-to-end test of ownership (issue 25): names are `tap-{service}-{env}`, so service `api-x` of
//! environment `own` and service `api` of environment `x-own` share `tap-api-x-own` — its ECR
//! repository, log group, task definition family and target group. With `own` deployed, `x-own`
//! is refused: plan lists each conflict naming `own` (`!`, action `conflict`), deploy refuses in
//! its read-only look with no mutating call on the wire, and destroy of `x-own` leaves `own`
//! untouched (its next plan is empty, its inventory the same).

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::Value;
use tap_core::aws::is_mutating;
use tests::services_toml::FRONTEND;
use tests::{proxy, Faults, TestEnv};

/// `api-x` of environment `own`: routed, so its target group is `tap-api-x-own` too.
const API_X: &str = r#"
[[services]]
name = "api-x"
cpu = 256
memory = 512
port = 8081
route = { short_name = "api-x", path_pattern = "/x/*", priority = 10, health_check_path = "/health" }
"#;

/// `api` of environment `x-own`: every name of it is `api-x`'s of `own`.
const API: &str = r#"
[[services]]
name = "api"
cpu = 256
memory = 512
port = 8080
route = { short_name = "api", path_pattern = "/api/*", priority = 10, health_check_path = "/health" }
"#;

/// `tap --output json --config <config> <args>`, expecting exit `code`.
fn tap(env: &TestEnv, config: &Path, args: &[&str], code: i32) -> (Value, String) {
    let mut all = vec!["--output", "json", "--config", config.to_str().unwrap()];
    all.extend_from_slice(args);
    let run = env.tap(&all).expect_code(code);
    (run.json(), run.stderr)
}

/// (resource, name, action) of the changes whose action is `action`.
fn with_action(doc: &Value, action: &str) -> BTreeSet<(String, String)> {
    doc["changes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["action"] == action)
        .map(|c| (c["resource"].as_str().unwrap_or_default().into(), c["name"].as_str().unwrap_or_default().into()))
        .collect()
}

#[tokio::test]
async fn an_environment_never_takes_over_what_another_environment_owns() {
    let own = TestEnv::new("own");
    let other = own.colliding_sibling("x");
    let own_config = own.config_file("own", &format!("{FRONTEND}{API_X}"));
    let other_config = other.config_file("x-own", &format!("{FRONTEND}{API}"));

    tap(&own, &own_config, &["deploy", "--no-wait"], 0);
    let (plan, _) = tap(&own, &own_config, &["plan"], 0);
    assert_eq!(plan["changed"], false, "`own` is converged: {plan}");
    let before = own.inventory().await;

    // Plan of `x-own`: each shared name is a conflict naming `own`, nothing of it an update.
    let shared = "tap-api-x-own";
    let (plan, _) = tap(&other, &other_config, &["plan"], 0);
    let want: BTreeSet<(String, String)> = [
        ("registry/repository/api", shared.to_string()),
        ("services/log-group/api", format!("/ecs/{shared}")),
        ("services/task-definition/api", shared.to_string()),
        ("ingress/target-group/api", shared.to_string()),
    ]
    .into_iter()
    .map(|(r, n)| (r.to_string(), n))
    .collect();
    assert_eq!(with_action(&plan, "conflict"), want, "{plan:#}");
    assert_eq!(with_action(&plan, "update"), BTreeSet::new(), "nothing of `own` is updated: {plan:#}");
    assert_eq!(plan["summary"]["conflict"], 4, "{}", plan["summary"]);
    for change in plan["changes"].as_array().unwrap().iter().filter(|c| c["action"] == "conflict") {
        let reason = change["reason"].as_str().unwrap_or_default();
        assert!(reason.contains("belongs to environment `own`"), "{reason}");
    }
    // Text: `!` lines naming the resource and the owner; `--detailed-exitcode` says there is
    // something to look at, as for any refusal.
    let text = other.tap(&["--config", other_config.to_str().unwrap(), "plan", "--detailed-exitcode"]).expect_code(2);
    let line = format!("! services/task-definition/api: conflict: {shared} belongs to environment `own`");
    assert!(text.stdout.contains(&line), "{line} in\n{}", text.stdout);
    assert!(text.stdout.contains("4 in conflict (!)"), "{}", text.stdout);

    // Deploy of `x-own` is refused before any write, the lock included, naming `own` and each
    // resource; exit 1.
    let wire = proxy(Faults::default());
    let through = other.with_endpoint(&wire.endpoint());
    let run = through.tap(&["--config", other_config.to_str().unwrap(), "deploy", "--no-wait"]).expect_code(1);
    let calls = wire.calls();
    let writes: Vec<&str> = calls.iter().map(|c| c.operation.as_str()).filter(|op| is_mutating(op)).collect();
    assert_eq!(writes, Vec::<&str>::new(), "no mutating call on the wire: {} calls", calls.len());
    assert!(!calls.is_empty(), "the look went through the proxy");
    assert!(run.stderr.contains("error: deploy refused before any change (4 conflicts)"), "{}", run.stderr);
    for (resource, _) in &want {
        assert!(run.stderr.contains(resource.as_str()), "{resource} in\n{}", run.stderr);
    }
    assert!(run.stderr.contains("belongs to environment `own`"), "{}", run.stderr);

    // Destroy of `x-own` (it owns nothing) deletes nothing of `own`'s.
    let (destroyed, _) = tap(&other, &other_config, &["destroy", "--yes"], 0);
    assert_eq!(with_action(&destroyed, "delete"), BTreeSet::new(), "{destroyed:#}");

    // `own` is untouched: the same resources, and nothing to change.
    assert_eq!(own.inventory().await, before, "`own`'s resources after everything `x-own` did");
    let (plan, _) = tap(&own, &own_config, &["plan"], 0);
    assert_eq!(plan["changed"], false, "`own` needs nothing: {plan:#}");
    let clients = own.clients().await;
    let revisions = clients.ecs.list_task_definitions().family_prefix(shared).send().await.unwrap();
    assert_eq!(revisions.task_definition_arns().len(), 1, "only `own`'s revision: {revisions:?}");

    tap(&own, &own_config, &["destroy", "--yes"], 0);
    own.inventory().await.assert_empty("after destroy");
}
