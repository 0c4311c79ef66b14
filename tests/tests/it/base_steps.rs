//! End-to-end tests of the registry, cluster and discovery steps: `tap` against moto_server, read
//! back with the AWS SDK.

use std::io::{Read, Write};
use std::net::TcpStream;

use aws_sdk_ecs::types::ClusterField;
use serde_json::Value;
use tests::{tap_json, TestEnv};

const SERVICES: [&str; 3] = ["frontend", "api-gateway", "processing-service"];

/// A fresh environment (the harness only hands out regions with three or more AZs).
fn test_env(suffix: &str) -> TestEnv {
    TestEnv::new(suffix)
}

/// The changes of a run's document made by `step`.
fn changes_of<'a>(doc: &'a Value, step: &str) -> Vec<&'a Value> {
    doc["changes"].as_array().into_iter().flatten().filter(|c| c["step"] == step).collect()
}

/// The mutating calls of a run's document to operations this file's steps make.
fn own_mutating_calls(doc: &Value) -> Vec<(String, u64)> {
    let ours = |op: &str| {
        op.starts_with("ECR:")
            || op.starts_with("ServiceDiscovery:")
            || [
                "ECS:CreateCluster",
                "ECS:UpdateClusterSettings",
                "ECS:PutClusterCapacityProviders",
                "ECS:DeleteCluster",
            ]
            .contains(&op)
    };
    tests::mutating_calls(doc).into_iter().filter(|(op, _)| ours(op)).collect()
}

/// moto's own view of its models (`/moto-api/data.json`), for what the AWS API does not show
/// (the VPC of a private DNS namespace lives in Route 53, where moto does not record it). moto
/// builds it by walking every model while other tests' requests change them, and answers 500 when
/// one changed under it: asked again then.
fn moto_data(endpoint: &str) -> Value {
    let addr = endpoint.trim_start_matches("http://");
    let mut last = String::new();
    for _ in 0..10 {
        let mut stream = TcpStream::connect(addr).expect("connect to moto");
        write!(stream, "GET /moto-api/data.json HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        let (head, body) = response.split_once("\r\n\r\n").unwrap_or_default();
        if head.starts_with("HTTP/1.1 500") || head.starts_with("HTTP/1.0 500") {
            last = head.lines().next().unwrap_or_default().to_owned();
            std::thread::sleep(std::time::Duration::from_millis(300));
            continue;
        }
        return serde_json::from_str(body).unwrap_or_else(|e| panic!("moto data.json is not JSON: {e}"));
    }
    panic!("moto data.json kept failing: {last}")
}

async fn vpc_id_of(env: &TestEnv) -> String {
    let clients = env.clients().await;
    let vpcs = clients
        .ec2
        .describe_vpcs()
        .filters(aws_sdk_ec2::types::Filter::builder().name("tag:Environment").values(&env.suffix).build())
        .send()
        .await
        .unwrap();
    assert_eq!(vpcs.vpcs().len(), 1, "exactly one VPC of {}", env.suffix);
    vpcs.vpcs()[0].vpc_id().unwrap().to_owned()
}

async fn lifecycle_policy(env: &TestEnv, repo: &str) -> Option<Value> {
    let clients = env.clients().await;
    match clients.ecr.get_lifecycle_policy().repository_name(repo).send().await.map_err(tap_core::AwsError::from) {
        Ok(out) => Some(serde_json::from_str(out.lifecycle_policy_text().unwrap()).unwrap()),
        Err(e) if e.is("LifecyclePolicyNotFoundException") => None,
        Err(e) => panic!("GetLifecyclePolicy {repo}: {e}"),
    }
}

async fn namespace_id(env: &TestEnv) -> Option<String> {
    let clients = env.clients().await;
    let name = format!("tap-{}.local", env.suffix);
    let out = clients.servicediscovery.list_namespaces().send().await.unwrap();
    let found: Vec<_> = out.namespaces().iter().filter(|n| n.name() == Some(name.as_str())).collect();
    assert!(found.len() <= 1, "one namespace {name} at most, found {}", found.len());
    found.first().map(|n| {
        assert_eq!(n.r#type(), Some(&aws_sdk_servicediscovery::types::NamespaceType::DnsPrivate));
        n.id().unwrap().to_owned()
    })
}

/// The Cloud Map service `name` of a namespace, read in full.
async fn discovery_service(env: &TestEnv, namespace_id: &str, name: &str) -> aws_sdk_servicediscovery::types::Service {
    let clients = env.clients().await;
    let listed = clients.servicediscovery.list_services().send().await.unwrap();
    for summary in listed.services().iter().filter(|s| s.name() == Some(name)) {
        let service =
            clients.servicediscovery.get_service().id(summary.id().unwrap()).send().await.unwrap().service.unwrap();
        if service.namespace_id() == Some(namespace_id) {
            return service;
        }
    }
    panic!("no Cloud Map service {name} in namespace {namespace_id}");
}

#[tokio::test]
async fn deploy_builds_repositories_cluster_and_namespace_then_converges() {
    let env = test_env("base-deploy");
    let first = tap_json(&env, &["deploy", "--no-wait"], 0);
    assert_eq!(changes_of(&first, "registry").len(), 3, "{first:#}");
    assert_eq!(changes_of(&first, "cluster").len(), 1, "{first:#}");
    assert_eq!(changes_of(&first, "discovery").len(), 2, "{first:#}");
    let clients = env.clients().await;

    // ECR: one repository per service, immutable tags, scan on push, keep the last 10 images.
    for service in SERVICES {
        let name = format!("tap-{service}-{}", env.suffix);
        let out = clients.ecr.describe_repositories().repository_names(&name).send().await.unwrap();
        let repo = &out.repositories()[0];
        assert_eq!(repo.image_tag_mutability(), Some(&aws_sdk_ecr::types::ImageTagMutability::Immutable), "{name}");
        assert!(repo.image_scanning_configuration().unwrap().scan_on_push(), "{name}");
        let policy = lifecycle_policy(&env, &name).await.unwrap_or_else(|| panic!("{name} has no lifecycle policy"));
        let rule = &policy["rules"][0];
        assert_eq!(rule["selection"]["countType"], "imageCountMoreThan", "{policy}");
        assert_eq!(rule["selection"]["countNumber"], 10, "{policy}");
        assert_eq!(rule["selection"]["tagStatus"], "any", "{policy}");
        assert_eq!(rule["action"]["type"], "expire", "{policy}");
        let tags =
            clients.ecr.list_tags_for_resource().resource_arn(repo.repository_arn().unwrap()).send().await.unwrap();
        assert!(tags.tags().iter().any(|t| t.key() == "Environment" && t.value() == env.suffix), "{name} is tagged");
    }

    // ECS: FARGATE + FARGATE_SPOT, default strategy FARGATE base 1 weight 1, FARGATE_SPOT weight 4.
    let cluster_name = format!("tap-cluster-{}", env.suffix);
    let out = clients
        .ecs
        .describe_clusters()
        .clusters(&cluster_name)
        .include(ClusterField::Settings)
        .include(ClusterField::Tags)
        .send()
        .await
        .unwrap();
    let cluster = &out.clusters()[0];
    assert_eq!(cluster.status(), Some("ACTIVE"));
    let mut providers = cluster.capacity_providers().to_vec();
    providers.sort();
    assert_eq!(providers, ["FARGATE", "FARGATE_SPOT"]);
    let mut strategy: Vec<(String, i32, i32)> = cluster
        .default_capacity_provider_strategy()
        .iter()
        .map(|s| (s.capacity_provider().to_owned(), s.base(), s.weight()))
        .collect();
    strategy.sort();
    assert_eq!(strategy, [("FARGATE".to_owned(), 1, 1), ("FARGATE_SPOT".to_owned(), 0, 4)]);
    assert!(cluster.tags().iter().any(|t| t.key() == Some("Environment") && t.value() == Some(env.suffix.as_str())));

    // Cloud Map: a private DNS namespace in this environment's VPC, and the processing service.
    let ns = namespace_id(&env).await.expect("namespace exists");
    let vpc = vpc_id_of(&env).await;
    let data = moto_data(&env.endpoint);
    let ns_vpc =
        data["servicediscovery"]["Namespace"].as_array().unwrap().iter().find(|n| n["id"] == ns.as_str()).unwrap()
            ["vpc"]
            .clone();
    assert_eq!(ns_vpc, vpc.as_str(), "namespace is in the environment's VPC");
    let service = discovery_service(&env, &ns, "processing-service").await;
    let dns = service.dns_config().unwrap();
    assert_eq!(dns.routing_policy(), Some(&aws_sdk_servicediscovery::types::RoutingPolicy::Multivalue));
    assert_eq!(dns.dns_records().len(), 1);
    assert_eq!(dns.dns_records()[0].r#type(), &aws_sdk_servicediscovery::types::RecordType::A);
    assert_eq!(dns.dns_records()[0].ttl(), 10);
    #[allow(deprecated)] // FailureThreshold is deprecated in the API (AWS keeps it at 1), but the SPEC sets it.
    let threshold = service.health_check_custom_config().and_then(|c| c.failure_threshold());
    assert_eq!(threshold, Some(1));

    // A second deploy right away changes nothing.
    let second = tap_json(&env, &["deploy", "--no-wait"], 0);
    for step in ["registry", "cluster", "discovery"] {
        assert!(changes_of(&second, step).is_empty(), "{step} changed on the second deploy: {second:#}");
    }
    assert_eq!(own_mutating_calls(&second), vec![], "second deploy made mutating calls: {:#}", second["calls"]);
}

#[tokio::test]
async fn drift_is_planned_then_repaired() {
    let env = test_env("base-drift");
    tap_json(&env, &["deploy", "--no-wait"], 0);
    let clients = env.clients().await;
    let repo = format!("tap-frontend-{}", env.suffix);
    let cluster = format!("tap-cluster-{}", env.suffix);

    // Someone removes a lifecycle policy, the spot provider and changes the TTL by hand.
    clients.ecr.delete_lifecycle_policy().repository_name(&repo).send().await.unwrap();
    assert!(lifecycle_policy(&env, &repo).await.is_none());
    clients
        .ecs
        .put_cluster_capacity_providers()
        .cluster(&cluster)
        .capacity_providers("FARGATE")
        .default_capacity_provider_strategy(
            aws_sdk_ecs::types::CapacityProviderStrategyItem::builder()
                .capacity_provider("FARGATE")
                .weight(1)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let ns = namespace_id(&env).await.unwrap();
    let service = discovery_service(&env, &ns, "processing-service").await;
    let records = aws_sdk_servicediscovery::types::DnsConfigChange::builder()
        .dns_records(
            aws_sdk_servicediscovery::types::DnsRecord::builder()
                .r#type(aws_sdk_servicediscovery::types::RecordType::A)
                .ttl(60)
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    clients
        .servicediscovery
        .update_service()
        .id(service.id().unwrap())
        .service(aws_sdk_servicediscovery::types::ServiceChange::builder().dns_config(records).build())
        .send()
        .await
        .unwrap();

    // plan lists exactly these drifts and exits 2.
    let plan = env.tap(&["--output", "json", "plan", "--detailed-exitcode"]).expect_code(2).json();
    assert_eq!(plan["calls"]["mutating"], 0, "plan mutates nothing: {:#}", plan["calls"]);
    let registry = changes_of(&plan, "registry");
    assert_eq!(registry.len(), 1, "{plan:#}");
    assert_eq!(registry[0]["resource"], "registry/repository/frontend");
    assert_eq!(registry[0]["action"], "update");
    assert_eq!(registry[0]["attributes"][0]["attribute"], "lifecycle_policy");
    let cluster_changes = changes_of(&plan, "cluster");
    assert_eq!(cluster_changes.len(), 1, "{plan:#}");
    assert_eq!(cluster_changes[0]["action"], "update");
    let discovery = changes_of(&plan, "discovery");
    assert_eq!(discovery.len(), 1, "{plan:#}");
    assert_eq!(discovery[0]["resource"], "discovery/service/processing-service");
    assert!(lifecycle_policy(&env, &repo).await.is_none(), "plan repaired nothing");

    // deploy repairs them with exactly the fixing calls.
    let deploy = tap_json(&env, &["deploy", "--no-wait"], 0);
    let mut fixes = own_mutating_calls(&deploy);
    fixes.sort();
    assert_eq!(
        fixes,
        [
            ("ECR:PutLifecyclePolicy".to_owned(), 1),
            ("ECS:PutClusterCapacityProviders".to_owned(), 1),
            ("ServiceDiscovery:UpdateService".to_owned(), 1)
        ],
        "{:#}",
        deploy["calls"]
    );
    assert_eq!(lifecycle_policy(&env, &repo).await.unwrap()["rules"][0]["selection"]["countNumber"], 10);
    let out = clients.ecs.describe_clusters().clusters(&cluster).send().await.unwrap();
    assert_eq!(out.clusters()[0].capacity_providers().len(), 2);
    let service = discovery_service(&env, &ns, "processing-service").await;
    assert_eq!(service.dns_config().unwrap().dns_records()[0].ttl(), 10);

    let after = env.tap(&["--output", "json", "plan", "--detailed-exitcode"]).json();
    for step in ["registry", "cluster", "discovery"] {
        assert!(changes_of(&after, step).is_empty(), "{step} still drifts: {after:#}");
    }
}

#[tokio::test]
async fn destroy_leaves_no_repository_cluster_or_namespace() {
    let env = test_env("base-destroy");
    tap_json(&env, &["deploy", "--no-wait"], 0);
    let destroyed = tap_json(&env, &["destroy", "--yes"], 0);
    assert_eq!(changes_of(&destroyed, "registry").len(), 3, "{destroyed:#}");
    assert_eq!(changes_of(&destroyed, "cluster").len(), 1, "{destroyed:#}");
    assert_eq!(changes_of(&destroyed, "discovery").len(), 2, "{destroyed:#}");
    let clients = env.clients().await;

    let repos = clients.ecr.describe_repositories().send().await.unwrap();
    let left: Vec<_> = repos
        .repositories()
        .iter()
        .filter_map(|r| r.repository_name())
        .filter(|n| n.ends_with(&format!("-{}", env.suffix)))
        .collect();
    assert!(left.is_empty(), "repositories left: {left:?}");

    let out = clients.ecs.describe_clusters().clusters(format!("tap-cluster-{}", env.suffix)).send().await.unwrap();
    assert!(out.clusters().iter().all(|c| c.status() == Some("INACTIVE")), "cluster left: {:?}", out.clusters());

    assert_eq!(namespace_id(&env).await, None, "namespace left");
    let services = clients.servicediscovery.list_services().send().await.unwrap();
    assert!(services.services().iter().all(|s| s.name() != Some("processing-service")), "Cloud Map service left");

    // Destroying again finds nothing and succeeds.
    let again = tap_json(&env, &["destroy", "--yes"], 0);
    for step in ["registry", "cluster", "discovery"] {
        assert!(changes_of(&again, step).is_empty(), "{again:#}");
    }
}
