//! End-to-end test of the prune (issue 13): deploy four services, then a config with only
//! `frontend` and `api-gateway`. Plan lists every resource of the two removed services as `-` (a
//! repository that still holds images as kept, `=`), deploy removes them, a second deploy is a
//! no-op, and destroy run with a one-service config leaves nothing of the environment behind.
//!
//! Covers every step whose resources belong to a service: services, discovery, registry, alarms and
//! security (the removed services here are not routed; `tests/tests/security.rs` prunes a routed
//! one's target group and rule).

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::Value;
use tests::services_toml::{API_GATEWAY, FRONTEND, PROCESSING};
use tests::{Inventory, TestEnv};

/// A fourth service, beside the SPEC's three, that is neither routed nor in Cloud Map.
const REPORTING: &str = r#"
[[services]]
name = "reporting"
cpu = 256
memory = 512
port = 7000
"#;

/// `tap --output json --config <config> <args>`, expecting exit `code`.
fn tap(env: &TestEnv, config: &Path, args: &[&str], code: i32) -> Value {
    let mut all = vec!["--output", "json", "--config", config.to_str().unwrap()];
    all.extend_from_slice(args);
    env.tap(&all).expect_code(code).json()
}

/// (step, resource, action) of every change a run lists.
fn changes(doc: &Value) -> BTreeSet<(String, String, String)> {
    doc["changes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            let s = |k: &str| c[k].as_str().unwrap_or_default().to_string();
            (s("step"), s("resource"), s("action"))
        })
        .collect()
}

fn removal(kept_repository: bool) -> BTreeSet<(String, String, String)> {
    let mut want = BTreeSet::new();
    for service in ["processing-service", "reporting"] {
        for kind in ["ecs-service", "log-group", "task-definition", "scaling-target", "scaling-policy"] {
            want.insert(("services".into(), format!("services/{kind}/{service}"), "delete".into()));
        }
    }
    want.insert(("discovery".into(), "discovery/service/processing-service".into(), "delete".into()));
    for service in ["processing-service", "reporting"] {
        for what in ["cpu-high", "memory-high"] {
            want.insert(("alarms".into(), format!("alarms/{what}/{service}"), "delete".into()));
        }
    }
    for service in ["processing-service", "reporting"] {
        want.insert(("security".into(), format!("security/sg/{service}"), "delete".into()));
        want.insert(("security".into(), format!("security/role/{service}-task"), "delete".into()));
    }
    let processing = if kept_repository { "keep" } else { "delete" };
    want.insert(("registry".into(), "registry/repository/processing-service".into(), processing.into()));
    want.insert(("registry".into(), "registry/repository/reporting".into(), "delete".into()));
    want
}

/// The counts of this test's kinds.
const KINDS: [&str; 7] = [
    "ecr:repository",
    "ecs:service",
    "logs:log-group",
    "ecs:task-definition-family",
    "autoscaling:scalable-target",
    "autoscaling:scaling-policy",
    "servicediscovery:service",
];

fn counts(inventory: &Inventory) -> Vec<(&'static str, usize)> {
    KINDS.iter().map(|k| (*k, inventory.counts[k])).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn removed_services_are_pruned_data_is_kept_and_destroy_leaves_nothing() {
    let env = TestEnv::new("prune-e2e");
    let four = env.config_file("four", &[FRONTEND, API_GATEWAY, PROCESSING, REPORTING].concat());
    let two = env.config_file("two", &[FRONTEND, API_GATEWAY].concat());
    let one = env.config_file("one", FRONTEND);

    tap(&env, &four, &["deploy", "--no-wait"], 0);
    let inventory = env.inventory().await;
    assert_eq!(
        counts(&inventory),
        [
            ("ecr:repository", 4),
            ("ecs:service", 4),
            ("logs:log-group", 4),
            ("ecs:task-definition-family", 4),
            ("autoscaling:scalable-target", 4),
            ("autoscaling:scaling-policy", 4),
            ("servicediscovery:service", 1),
        ]
    );

    // The processing service's repository holds an image: data, kept without --prune-data.
    let clients = env.clients().await;
    let repo = format!("tap-processing-service-{}", env.suffix);
    let manifest = r#"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json","config":{"mediaType":"application/vnd.docker.container.image.v1+json","size":2,"digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"},"layers":[]}"#;
    clients.ecr.put_image().repository_name(&repo).image_manifest(manifest).image_tag("latest").send().await.unwrap();

    let plan = tap(&env, &two, &["plan", "--detailed-exitcode"], 2);
    let listed = changes(&plan);
    assert_eq!(listed, removal(true), "plan lists exactly the removed services' resources");
    assert_eq!(plan["calls"]["mutating"], 0, "plan is read-only: {}", plan["calls"]);

    let deploy = tap(&env, &two, &["deploy", "--no-wait"], 0);
    assert_eq!(changes(&deploy), removal(true), "deploy does what plan listed");
    let inventory = env.inventory().await;
    assert_eq!(
        counts(&inventory),
        [
            ("ecr:repository", 3),
            ("ecs:service", 2),
            ("logs:log-group", 2),
            ("ecs:task-definition-family", 2),
            ("autoscaling:scalable-target", 2),
            ("autoscaling:scaling-policy", 2),
            ("servicediscovery:service", 0),
        ]
    );
    let repos = clients.ecr.describe_repositories().send().await.unwrap();
    let names: BTreeSet<&str> = repos.repositories().iter().filter_map(|r| r.repository_name()).collect();
    assert!(names.contains(repo.as_str()), "the repository with images is kept: {names:?}");
    let removed: Vec<String> =
        ["processing-service", "reporting"].iter().map(|s| format!("tap-{s}-{}", env.suffix)).collect();
    let described = clients
        .ecs
        .describe_services()
        .cluster(format!("tap-cluster-{}", env.suffix))
        .set_services(Some(removed))
        .send()
        .await
        .unwrap();
    for service in described.services() {
        // Deploy waited for ECS to finish draining them.
        assert_eq!(service.status(), Some("INACTIVE"), "{:?}", service.service_name());
    }

    // A second deploy changes nothing (the kept repository is listed as kept, nothing else).
    let again = tap(&env, &two, &["deploy", "--no-wait"], 0);
    let summary = &again["summary"];
    assert_eq!((&summary["create"], &summary["update"], &summary["delete"]), (&0.into(), &0.into(), &0.into()));
    assert_eq!(
        changes(&again),
        BTreeSet::from([("registry".into(), "registry/repository/processing-service".into(), "keep".into())])
    );
    assert_eq!(again["calls"]["mutating"], 0, "{}", again["calls"]);

    // With consent, the data goes too.
    let data = tap(&env, &two, &["deploy", "--no-wait", "--prune-data"], 0);
    assert_eq!(
        changes(&data),
        BTreeSet::from([("registry".into(), "registry/repository/processing-service".into(), "delete".into())])
    );

    // Destroy with a one-service config removes every service of the environment all the same.
    tap(&env, &four, &["deploy", "--no-wait"], 0);
    tap(&env, &one, &["destroy", "--yes"], 0);
    let inventory = env.inventory().await;
    assert_eq!(counts(&inventory), KINDS.iter().map(|k| (*k, 0)).collect::<Vec<_>>(), "{inventory:#?}");
    inventory.assert_empty("destroy with a one-service config");
}
