//! Unit tests of the services step, driven through a mocked [`ServicesApi`].

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use tap_core::outputs::*;
use tap_core::{Action, AwsError, Config, Context, Step};

use super::*;
use crate::api::{MockServicesApi, RevisionStatus};
use crate::logs::ObservedLogGroup;
use crate::scaling::{ObservedScalableTarget, ObservedScalingPolicy, ScalingPolicySpec};
use crate::service::{
    CircuitBreaker, DesiredService, LoadBalancerRef, NetworkConfig, ObservedDeployment, ObservedService, ServiceUpdate,
    StrategyItem,
};
use crate::service_deployment::{ServiceDeployment, ServiceDeploymentBrief};
use crate::task_definition::{ObservedTaskDefinition, TaskDefinitionSpec};

const ACCOUNT: &str = "123456789012";
const REGION: &str = "eu-west-1";
const ALB_DNS: &str = "tap-alb-dev-1234.eu-west-1.elb.amazonaws.com";
const EXEC_ROLE: &str = "arn:aws:iam::123456789012:role/tap-task-execution-dev";
const DB_SECRET: &str = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:tap-db-credentials-dev-AbCdEf";
const KEYS_SECRET: &str = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:tap-api-keys-dev-GhIjKl";
const SERVICES: [&str; 3] = ["frontend", "api-gateway", "processing-service"];

fn task_role(service: &str) -> String {
    format!("arn:aws:iam::{ACCOUNT}:role/tap-{service}-task-dev")
}
fn repo_uri(service: &str) -> String {
    format!("{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/tap-{service}-dev")
}
fn tg_arn(short: &str) -> String {
    format!("arn:aws:elasticloadbalancing:{REGION}:{ACCOUNT}:targetgroup/tap-{short}-dev/0123456789abcdef")
}
const CLOUD_MAP_ARN: &str = "arn:aws:servicediscovery:eu-west-1:123456789012:service/srv-processing";
fn td_arn(service: &str, revision: i32) -> String {
    format!("arn:aws:ecs:{REGION}:{ACCOUNT}:task-definition/tap-{service}-dev:{revision}")
}
fn service_arn(service: &str) -> String {
    format!("arn:aws:ecs:{REGION}:{ACCOUNT}:service/tap-cluster-dev/tap-{service}-dev")
}
fn rid(service: &str) -> String {
    format!("service/tap-cluster-dev/tap-{service}-dev")
}

fn config(wait: bool) -> Config {
    let mut config = Config::default();
    config.deploy.wait = wait;
    config.deploy.timeout_seconds = 5;
    config
}

/// A context holding every input as a deployed environment would.
fn deployed_ctx(config: Config) -> Context {
    let ctx = Context::new(config).with_region(REGION);
    let subnets = |prefix: &str| {
        ["a", "b", "c"]
            .iter()
            .map(|az| SubnetRef { az: format!("{REGION}{az}"), id: format!("{prefix}-{az}") })
            .collect()
    };
    ctx.put(NetworkOutputs {
        vpc_id: "vpc-1".into(),
        public_subnets: subnets("subnet-pub"),
        private_subnets: subnets("subnet-priv"),
    });
    ctx.put(RegistryOutputs {
        repositories: SERVICES
            .iter()
            .map(|s| {
                let repo = Repository {
                    name: format!("tap-{s}-dev"),
                    arn: format!("arn:aws:ecr:{REGION}:{ACCOUNT}:repository/tap-{s}-dev"),
                    uri: repo_uri(s),
                    created: false,
                };
                (s.to_string(), repo)
            })
            .collect(),
    });
    ctx.put(ClusterOutputs {
        name: "tap-cluster-dev".into(),
        arn: format!("arn:aws:ecs:{REGION}:{ACCOUNT}:cluster/tap-cluster-dev"),
    });
    ctx.put(SecurityOutputs {
        alb_security_group_id: "sg-alb".into(),
        service_security_group_ids: SERVICES.iter().map(|s| (s.to_string(), format!("sg-{s}"))).collect(),
        execution_role_arn: EXEC_ROLE.into(),
        task_role_arns: SERVICES.iter().map(|s| (s.to_string(), task_role(s))).collect(),
        secret_arns: BTreeMap::from([
            ("db-credentials".into(), DB_SECRET.into()),
            ("api-keys".into(), KEYS_SECRET.into()),
        ]),
        infrastructure_role_arn: None,
    });
    ctx.put(IngressOutputs {
        load_balancer_arn: format!("arn:aws:elasticloadbalancing:{REGION}:{ACCOUNT}:loadbalancer/app/tap-alb-dev/1"),
        dns_name: ALB_DNS.into(),
        target_group_arns: BTreeMap::from([("frontend".into(), tg_arn("fe")), ("api-gateway".into(), tg_arn("api"))]),
        traffic_shifts: BTreeMap::new(),
    });
    ctx.put(DiscoveryOutputs {
        namespace_id: "ns-1".into(),
        namespace_arn: format!("arn:aws:servicediscovery:{REGION}:{ACCOUNT}:namespace/ns-1"),
        namespace_name: "tap-dev.local".into(),
        services: BTreeMap::from([(
            "processing-service".into(),
            DiscoveryService { id: "srv-processing".into(), arn: CLOUD_MAP_ARN.into() },
        )]),
    });
    ctx.put(alarms_outputs(&ctx));
    ctx
}

/// The alarm names the alarms step publishes: CPU and memory for every service, the load
/// balancer's two for routed ones.
fn alarms_outputs(ctx: &Context) -> AlarmsOutputs {
    let alarm_names = ctx
        .config
        .services
        .iter()
        .filter(|_| ctx.config.alarms.enabled)
        .map(|s| {
            let routed: &[&str] = if s.route.is_some() { &["target-5xx", "unhealthy-targets"] } else { &[] };
            let mut names: Vec<String> =
                ["cpu-high", "memory-high"].iter().chain(routed).map(|what| ctx.names.alarm(&s.name, what)).collect();
            names.sort();
            (s.name.clone(), names)
        })
        .collect();
    AlarmsOutputs { alarm_names }
}

/// A context as `plan` sees it before anything exists: every id PENDING.
fn pending_ctx() -> Context {
    let ctx = Context::new(config(false)).with_region(REGION);
    let p = || PENDING.to_string();
    let subnets = || ["a", "b", "c"].iter().map(|az| SubnetRef { az: format!("{REGION}{az}"), id: p() }).collect();
    ctx.put(NetworkOutputs { vpc_id: p(), public_subnets: subnets(), private_subnets: subnets() });
    ctx.put(RegistryOutputs {
        repositories: SERVICES
            .iter()
            .map(|s| (s.to_string(), Repository { name: format!("tap-{s}-dev"), arn: p(), uri: p(), created: false }))
            .collect(),
    });
    ctx.put(ClusterOutputs { name: "tap-cluster-dev".into(), arn: p() });
    ctx.put(SecurityOutputs {
        alb_security_group_id: p(),
        service_security_group_ids: SERVICES.iter().map(|s| (s.to_string(), p())).collect(),
        execution_role_arn: p(),
        task_role_arns: SERVICES.iter().map(|s| (s.to_string(), p())).collect(),
        secret_arns: BTreeMap::from([("db-credentials".into(), p()), ("api-keys".into(), p())]),
        infrastructure_role_arn: None,
    });
    ctx.put(IngressOutputs {
        load_balancer_arn: p(),
        dns_name: p(),
        target_group_arns: BTreeMap::from([("frontend".into(), p()), ("api-gateway".into(), p())]),
        traffic_shifts: BTreeMap::new(),
    });
    ctx.put(DiscoveryOutputs {
        namespace_id: p(),
        namespace_arn: p(),
        namespace_name: "tap-dev.local".into(),
        services: BTreeMap::from([("processing-service".into(), DiscoveryService { id: p(), arn: p() })]),
    });
    ctx.put(alarms_outputs(&ctx));
    ctx
}

fn spec<'a>(ctx: &'a Context, name: &str) -> &'a tap_core::config::ServiceSpec {
    ctx.config.service(name).unwrap()
}

fn desired_td(ctx: &Context, service: &str) -> TaskDefinitionSpec {
    task_definition::render(ctx, &Inputs::read(ctx).unwrap(), spec(ctx, service)).unwrap()
}

fn desired_service(ctx: &Context, service: &str, td: &str) -> DesiredService {
    service::desired(ctx, &Inputs::read(ctx).unwrap(), &ctx.get(STEP).unwrap(), spec(ctx, service), td).unwrap()
}

/// What ECS reports for a service that matches `desired` exactly.
fn observed_from(desired: &DesiredService) -> ObservedService {
    ObservedService {
        name: desired.name.clone(),
        arn: format!("arn:aws:ecs:{REGION}:{ACCOUNT}:service/{}/{}", desired.cluster, desired.name),
        status: "ACTIVE".into(),
        desired_count: desired.desired_count,
        running_count: 0,
        pending_count: desired.desired_count,
        task_definition: Some(desired.task_definition.clone()),
        capacity_provider_strategy: desired.capacity_provider_strategy.clone(),
        network: Some(desired.network.clone()),
        health_check_grace_period_seconds: desired.health_check_grace_period_seconds.or(Some(0)),
        circuit_breaker: Some(desired.circuit_breaker),
        strategy: desired.strategy.clone(),
        alarms: desired.alarms.clone(),
        load_balancers: desired.load_balancers.clone(),
        service_registries: desired.service_registries.clone(),
        tags: desired.tags.clone(),
        deployments: vec![ObservedDeployment {
            id: "ecs-svc/1".into(),
            failed_tasks: 0,
            status: "PRIMARY".into(),
            rollout_state: Some("IN_PROGRESS".into()),
            rollout_state_reason: None,
            desired_count: desired.desired_count,
            running_count: 0,
            pending_count: desired.desired_count,
            task_definition: Some(desired.task_definition.clone()),
        }],
        events: vec![],
    }
}

/// What moto's CreateService stores: no strategy (launch type EC2), grace period or deployment config.
fn moto_created(desired: &DesiredService) -> ObservedService {
    let mut s = observed_from(desired);
    s.capacity_provider_strategy = vec![];
    s.health_check_grace_period_seconds = None;
    s.circuit_breaker = None;
    s.alarms = None;
    s
}

fn matching_policy(ctx: &Context, service: &str) -> ObservedScalingPolicy {
    ObservedScalingPolicy {
        name: format!("tap-cpu-{service}-{}", ctx.names.env()),
        resource_id: rid(service),
        policy_type: "TargetTrackingScaling".into(),
        metric: Some("ECSServiceAverageCPUUtilization".into()),
        target_value: Some(70.0),
        scale_in_cooldown: Some(60),
        scale_out_cooldown: Some(60),
        disable_scale_in: false,
    }
}

/// What AWS holds, keyed by name; the read-only calls of the mock answer from it.
#[derive(Default, Clone)]
struct World {
    log_groups: BTreeMap<String, ObservedLogGroup>,
    task_definitions: BTreeMap<String, ObservedTaskDefinition>,
    /// Older revisions, which DescribeTaskDefinition finds by ARN.
    revisions: Vec<ObservedTaskDefinition>,
    services: BTreeMap<String, ObservedService>,
    targets: BTreeMap<String, ObservedScalableTarget>,
    policies: BTreeMap<String, Vec<ObservedScalingPolicy>>,
    images: bool,
    /// DescribeLogGroups answers with throttling.
    throttle_log_groups: bool,
    /// Counts DescribeServices calls.
    describe_services_calls: Arc<Mutex<usize>>,
    /// Counts DescribeImages calls.
    image_checks: Arc<Mutex<usize>>,
    /// Revisions and services a test's mutating calls made: read before the fields above.
    made: Arc<Mutex<Made>>,
    /// ECS services deleted so far: DescribeServices reports them INACTIVE.
    deleted_services: Arc<Mutex<BTreeSet<String>>>,
}

/// What the mutating calls of a test made, by family and by service name.
#[derive(Default)]
struct Made {
    task_definitions: BTreeMap<String, ObservedTaskDefinition>,
    services: BTreeMap<String, ObservedService>,
}

/// The world right after a converged deploy of the default config (revision 1 of every family).
fn converged_world(ctx: &Context) -> World {
    let mut w = World { images: true, ..Default::default() };
    for s in SERVICES {
        let log_group = ctx.names.log_group(s);
        w.log_groups.insert(
            log_group.clone(),
            ObservedLogGroup { name: log_group, retention_days: Some(30), tags: Some(dev_tags()) },
        );
        let family = ctx.names.task_family(s);
        // Tagged as tap tags a revision (DescribeTaskDefinition include=TAGS returns them).
        let tags = tags_of("dev", &format!("services/task-definition/{s}"), &family);
        w.task_definitions.insert(
            family,
            ObservedTaskDefinition {
                arn: td_arn(s, 1),
                revision: 1,
                active: true,
                definition: desired_td(ctx, s),
                tags,
            },
        );
        let svc = observed_from(&desired_service(ctx, s, &td_arn(s, 1)));
        w.services.insert(svc.name.clone(), svc);
        w.targets.insert(rid(s), ObservedScalableTarget { min_capacity: 2, max_capacity: 10 });
        w.policies.insert(rid(s), vec![matching_policy(ctx, s)]);
    }
    w
}

/// A mock answering every read from `world`; mutating calls must be expected by each test.
fn read_mock(world: World) -> MockServicesApi {
    mock_reads(world, None)
}

/// Like [`read_mock`]; with `Some(runs)`, each batched read (the listing of the log groups under
/// `/ecs/tap-`, DescribeServices, ListServices, the listing of the cluster's scalable targets,
/// DescribeScalingPolicies by name) must happen exactly `runs` times, DescribeServices and the
/// policies each time for exactly the three services of the default config, and
/// DescribeTaskDefinition `3 × runs` times. The per-resource-id DescribeScalingPolicies (the
/// prune's and destroy's) is not expected at all.
fn mock_reads(world: World, runs: Option<usize>) -> MockServicesApi {
    let mut api = MockServicesApi::new();
    let w = Arc::new(world);
    let exactly = |names: &[String], want: &dyn Fn(&str) -> String| {
        names.len() == SERVICES.len() && SERVICES.iter().all(|s| names.contains(&want(s)))
    };
    let w1 = w.clone();
    let e = api.expect_list_log_groups();
    if let Some(n) = runs {
        e.withf(|prefix| prefix == "/ecs/tap-").times(n);
    }
    e.returning(move |_| {
        if w1.throttle_log_groups {
            return Err(AwsError::throttling());
        }
        Ok(w1.log_groups.values().cloned().collect())
    });
    let listed: Vec<String> = w.task_definitions.keys().cloned().collect();
    let e = api.expect_list_task_families();
    if let Some(n) = runs {
        e.withf(|prefix| prefix == "tap-").times(n);
    }
    e.returning(move |_| Ok(listed.clone()));
    let w2 = w.clone();
    let e = api.expect_describe_task_definition();
    if let Some(n) = runs {
        e.times(3 * n);
    }
    e.returning(move |family| {
        if let Some(td) = w2.revisions.iter().chain(w2.task_definitions.values()).find(|t| t.arn == family) {
            return Ok(Some(td.clone()));
        }
        let made = w2.made.lock().unwrap().task_definitions.get(family).cloned();
        Ok(made.or_else(|| w2.task_definitions.get(family).cloned()))
    });
    let w3 = w.clone();
    let e = api.expect_describe_services();
    if let Some(n) = runs {
        e.withf(move |cluster, names| cluster == "tap-cluster-dev" && exactly(names, &|s| format!("tap-{s}-dev")))
            .times(n);
    }
    e.returning(move |_, names| {
        *w3.describe_services_calls.lock().unwrap() += 1;
        let made = w3.made.lock().unwrap();
        let deleted = w3.deleted_services.lock().unwrap();
        Ok(names
            .iter()
            .filter_map(|n| made.services.get(n).or_else(|| w3.services.get(n)).cloned())
            .map(|mut s| {
                if deleted.contains(&s.name) {
                    s.status = "INACTIVE".into();
                }
                s
            })
            .collect())
    });
    let names: Vec<String> = w.services.keys().cloned().collect();
    let e = api.expect_list_services();
    if let Some(n) = runs {
        e.withf(|cluster| cluster == "tap-cluster-dev").times(n);
    }
    e.returning(move |_| Ok(names.clone()));
    let w4 = w.clone();
    let e = api.expect_list_scalable_targets();
    if let Some(n) = runs {
        e.withf(|prefix| prefix == "service/tap-cluster-dev/").times(n);
    }
    e.returning(move |_| Ok(w4.targets.clone()));
    let w6 = w.clone();
    let e = api.expect_describe_scalable_targets();
    if let Some(n) = runs {
        e.times(n);
    }
    e.returning(move |ids| {
        Ok(w6.targets.iter().filter(|(r, _)| ids.contains(r)).map(|(r, t)| (r.clone(), *t)).collect())
    });
    let w5 = w.clone();
    let e = api.expect_describe_named_scaling_policies();
    if let Some(n) = runs {
        e.withf(move |names| exactly(names, &|s| format!("tap-cpu-{s}-dev"))).times(n);
    }
    e.returning(move |names| Ok(w5.policies.values().flatten().filter(|p| names.contains(&p.name)).cloned().collect()));
    let w6 = w.clone();
    api.expect_image_exists().returning(move |_, _| {
        *w6.image_checks.lock().unwrap() += 1;
        Ok(w6.images)
    });
    api
}

/// Forbids every write not expected before this call: mockall answers a call with the first
/// expectation that matches it and is not used up, so this goes after the writes a test expects.
fn no_mutations(api: &mut MockServicesApi) {
    api.expect_create_log_group().never();
    api.expect_put_retention_policy().never();
    api.expect_delete_log_group().never();
    api.expect_register_task_definition().never();
    api.expect_deregister_task_definition().never();
    api.expect_delete_task_definitions().never();
    api.expect_create_service().never();
    api.expect_update_service().never();
    api.expect_delete_service().never();
    api.expect_register_scalable_target().never();
    api.expect_deregister_scalable_target().never();
    api.expect_put_scaling_policy().never();
    api.expect_delete_scaling_policy().never();
}

/// What ECS answers a register of `def` with: its revision `n`, tagged for `dev`.
fn revision(def: &TaskDefinitionSpec, n: i32) -> ObservedTaskDefinition {
    let service = &def.containers[0].name;
    ObservedTaskDefinition {
        arn: td_arn(service, n),
        revision: n,
        active: true,
        definition: def.clone(),
        tags: dev_tags(),
    }
}

/// What ECS answers an update that moves a service to its revision 2 with.
fn moved_to_2(u: &ServiceUpdate) -> Result<ObservedService, AwsError> {
    let service = u.service.strip_prefix("tap-").and_then(|n| n.strip_suffix("-dev")).unwrap();
    Ok(observed_from(&desired_service(&deployed_ctx(config(false)), service, &td_arn(service, 2))))
}

fn step(api: MockServicesApi) -> ServicesStep {
    ServicesStep::new(Arc::new(api)).with_wait_poll(Duration::from_millis(1), Duration::from_millis(2))
}

fn expected_policy(service: &str) -> ScalingPolicySpec {
    ScalingPolicySpec {
        name: format!("tap-cpu-{service}-dev"),
        metric: "ECSServiceAverageCPUUtilization".into(),
        target_value: 70.0,
        scale_in_cooldown: 60,
        scale_out_cooldown: 60,
    }
}

fn expected_task_definition_json(service: &str) -> serde_json::Value {
    let log = |s: &str| {
        json!({"logDriver": "awslogs", "options": {
            "awslogs-group": format!("/ecs/tap-{s}-dev"),
            "awslogs-region": REGION,
            "awslogs-stream-prefix": s,
        }})
    };
    let (cpu, memory, port, environment, secrets) = match service {
        "frontend" => (
            "512",
            "1024",
            3000,
            json!([
                {"name": "API_ENDPOINT", "value": format!("http://{ALB_DNS}/api")},
                {"name": "NODE_ENV", "value": "production"},
            ]),
            json!([]),
        ),
        "api-gateway" => (
            "1024",
            "2048",
            8080,
            json!([{"name": "PROCESSING_SERVICE_URL", "value": "http://processing-service.tap-dev.local:9000"}]),
            json!([
                {"name": "API_KEYS", "valueFrom": KEYS_SECRET},
                {"name": "DB_CREDENTIALS", "valueFrom": DB_SECRET},
            ]),
        ),
        "processing-service" => (
            "2048",
            "4096",
            9000,
            json!([{"name": "WORKER_THREADS", "value": "4"}]),
            json!([{"name": "DB_CREDENTIALS", "valueFrom": DB_SECRET}]),
        ),
        other => panic!("unknown service {other}"),
    };
    json!({
        "family": format!("tap-{service}-dev"),
        "requiresCompatibilities": ["FARGATE"],
        "networkMode": "awsvpc",
        "cpu": cpu,
        "memory": memory,
        "executionRoleArn": EXEC_ROLE,
        "taskRoleArn": task_role(service),
        "containerDefinitions": [{
            "name": service,
            "image": format!("{}:latest", repo_uri(service)),
            "essential": true,
            "portMappings": [{"containerPort": port, "protocol": "tcp"}],
            "environment": environment,
            "secrets": secrets,
            "logConfiguration": log(service),
        }],
    })
}

fn short_of(service: &str) -> Option<&'static str> {
    match service {
        "frontend" => Some("fe"),
        "api-gateway" => Some("api"),
        _ => None,
    }
}

#[tokio::test]
async fn deploy_from_nothing_creates_the_spec_resources() {
    let ctx = deployed_ctx(config(false));
    let mut api = read_mock(World { images: true, ..Default::default() });

    api.expect_create_log_group()
        .withf(|name, tags| {
            let service = name.strip_prefix("/ecs/tap-").and_then(|n| n.strip_suffix("-dev")).unwrap_or("");
            SERVICES.contains(&service)
                && tags.contains(&("Environment".into(), "dev".into()))
                && tags.contains(&("Name".into(), name.into()))
                && tags.contains(&("tap:component".into(), format!("services/log-group/{service}")))
        })
        .times(3)
        .returning(|_, _| Ok(()));
    api.expect_put_retention_policy().withf(|_, days| *days == 30).times(3).returning(|_, _| Ok(()));

    let registered: Arc<Mutex<Vec<TaskDefinitionSpec>>> = Arc::default();
    let reg = registered.clone();
    api.expect_register_task_definition()
        .withf(|_, tags| tags.contains(&("Project".into(), "tap".into())))
        .times(3)
        .returning(move |def, _| {
            reg.lock().unwrap().push(def.clone());
            Ok(revision(def, 1))
        });

    let created: Arc<Mutex<Vec<DesiredService>>> = Arc::default();
    let cr = created.clone();
    api.expect_create_service().times(3).returning(move |d| {
        cr.lock().unwrap().push(d.clone());
        Ok(moto_created(d))
    });
    let updates: Arc<Mutex<Vec<ServiceUpdate>>> = Arc::default();
    let up = updates.clone();
    api.expect_update_service().times(3).returning(move |u| {
        up.lock().unwrap().push(u.clone());
        let d = created_for(&u.service);
        Ok(observed_from(&d))
    });
    fn created_for(name: &str) -> DesiredService {
        let ctx = deployed_ctx(config(false));
        let service = name.strip_prefix("tap-").and_then(|n| n.strip_suffix("-dev")).unwrap();
        desired_service(&ctx, service, &td_arn(service, 1))
    }

    api.expect_register_scalable_target()
        .withf(|rid, min, max| SERVICES.iter().any(|s| *rid == self::rid(s)) && *min == 2 && *max == 10)
        .times(3)
        .returning(|_, _, _| Ok(()));
    api.expect_put_scaling_policy()
        .withf(|rid, policy| SERVICES.iter().any(|s| *rid == self::rid(s) && *policy == expected_policy(s)))
        .times(3)
        .returning(|_, _| Ok(()));

    let changes = step(api).apply(&ctx).await.unwrap();

    // 3 × (log group, task definition, service, scalable target, policy), all creates.
    assert_eq!(changes.len(), 15, "{changes:#?}");
    assert!(changes.iter().all(|c| c.action == Action::Create), "{changes:#?}");
    for kind in ["log-group", "task-definition", "ecs-service", "scaling-target", "scaling-policy"] {
        for s in SERVICES {
            let id = format!("services/{kind}/{s}");
            assert_eq!(changes.iter().filter(|c| c.resource == id).count(), 1, "{id}");
        }
    }

    // The exact task definitions.
    let registered = registered.lock().unwrap().clone();
    assert_eq!(registered.len(), 3);
    for s in SERVICES {
        let def = registered.iter().find(|d| d.family == format!("tap-{s}-dev")).unwrap();
        assert_eq!(def.to_json(), expected_task_definition_json(s), "task definition of {s}");
    }

    // The services as created.
    let created = created.lock().unwrap().clone();
    for s in SERVICES {
        let d = created.iter().find(|d| d.name == format!("tap-{s}-dev")).unwrap();
        assert_eq!(d.cluster, "tap-cluster-dev");
        assert_eq!(d.task_definition, td_arn(s, 1));
        assert_eq!(d.desired_count, 2);
        assert_eq!(
            d.capacity_provider_strategy,
            vec![
                StrategyItem { capacity_provider: "FARGATE".into(), base: 1, weight: 1 },
                StrategyItem { capacity_provider: "FARGATE_SPOT".into(), base: 0, weight: 4 },
            ]
        );
        assert_eq!(
            d.network,
            NetworkConfig {
                subnets: vec!["subnet-priv-a".into(), "subnet-priv-b".into(), "subnet-priv-c".into()],
                security_groups: vec![format!("sg-{s}")],
                assign_public_ip: false,
            }
        );
        assert_eq!(d.circuit_breaker, CircuitBreaker { enable: true, rollback: true });
        assert!(d.tags.contains(&("Name".into(), format!("tap-{s}-dev"))));
        assert!(d.tags.contains(&("tap:component".into(), format!("services/ecs-service/{s}"))));
        match short_of(s) {
            Some(short) => {
                assert_eq!(d.health_check_grace_period_seconds, Some(60), "{s}");
                let port = spec(&ctx, s).port as i32;
                assert_eq!(
                    d.load_balancers,
                    vec![LoadBalancerRef {
                        target_group_arn: tg_arn(short),
                        container_name: s.into(),
                        container_port: port,
                        traffic_shift: None,
                    }]
                );
                assert!(d.service_registries.is_empty());
            }
            None => {
                assert_eq!(d.health_check_grace_period_seconds, None, "{s}");
                assert!(d.load_balancers.is_empty());
                assert_eq!(d.service_registries, vec![CLOUD_MAP_ARN.to_string()]);
            }
        }
    }

    // Exactly one UpdateService per service, setting only what CreateService dropped.
    let updates = updates.lock().unwrap().clone();
    for s in SERVICES {
        let u = updates.iter().find(|u| u.service == format!("tap-{s}-dev")).unwrap();
        assert_eq!(u.task_definition, None, "{s}");
        assert_eq!(u.desired_count, None, "the desired count is never reset ({s})");
        assert!(u.capacity_provider_strategy.is_some() && u.force_new_deployment, "{s}");
        assert_eq!(u.circuit_breaker, Some(CircuitBreaker { enable: true, rollback: true }), "{s}");
        assert_eq!(u.health_check_grace_period_seconds, short_of(s).map(|_| 60), "{s}");
        assert_eq!(
            (u.network.is_some(), u.load_balancers.is_some(), u.service_registries.is_some()),
            (false, false, false)
        );
    }

    let outputs: ServicesOutputs = ctx.get("test").unwrap();
    for s in SERVICES {
        assert_eq!(outputs.service_arns[s], service_arn(s));
    }
}

#[tokio::test]
async fn create_that_stores_everything_needs_no_update() {
    let ctx = deployed_ctx(config(false));
    let mut world = converged_world(&ctx);
    world.services.clear();
    let mut api = read_mock(world);
    api.expect_create_service().times(3).returning(|d| Ok(observed_from(d)));
    api.expect_update_service().never();
    let changes = step(api).apply(&ctx).await.unwrap();
    assert_eq!(changes.len(), 3);
    assert!(changes.iter().all(|c| c.action == Action::Create && c.resource.starts_with("services/ecs-service/")));
}

#[tokio::test]
async fn converged_environment_makes_no_mutating_call_and_one_batched_read_per_kind() {
    for mode in [Mode::Apply, Mode::Plan] {
        let ctx = deployed_ctx(config(false));
        // Exactly one DescribeLogGroups, DescribeServices, DescribeScalableTargets and
        // DescribeScalingPolicies for all three services, plus one DescribeTaskDefinition each.
        let mut api = mock_reads(converged_world(&ctx), Some(1));
        no_mutations(&mut api);
        // Under `--no-wait` there is nothing to wait for, so no image check either.
        api.expect_image_exists().never();
        let step = step(api);
        let changes = match mode {
            Mode::Apply => step.apply(&ctx).await.unwrap(),
            Mode::Plan => step.plan(&ctx).await.unwrap(),
        };
        assert_eq!(changes, vec![], "{mode:?}");
        let outputs: ServicesOutputs = ctx.get("test").unwrap();
        assert_eq!(outputs.service_arns["api-gateway"], service_arn("api-gateway"));
    }
}

/// `frontend`'s task definition family and log group carry another environment's tags (two
/// environments derive one name, e.g. `dev`'s `api-x` and `x-dev`'s `api`): plan lists each as a
/// conflict naming the owner, never an update; apply stops before any write (no revision is
/// registered into the family, no retention put).
#[tokio::test]
async fn a_family_or_log_group_of_another_environment_is_a_conflict_never_an_update() {
    for mode in [Mode::Plan, Mode::Apply] {
        let ctx = deployed_ctx(config(false));
        let mut world = converged_world(&ctx);
        let theirs = tags_of("prod", "services/task-definition/frontend", "tap-frontend-dev");
        let family = world.task_definitions.get_mut("tap-frontend-dev").unwrap();
        family.tags = theirs.clone();
        family.definition.cpu = "4096".into();
        let group = world.log_groups.get_mut("/ecs/tap-frontend-dev").unwrap();
        // Not read with the listing: asked for (ListTagsLogGroup).
        group.tags = None;
        group.retention_days = Some(7);
        let mut api = read_mock(world);
        no_mutations(&mut api);
        api.expect_log_group_tags()
            .withf(|name| name == "/ecs/tap-frontend-dev")
            .times(1)
            .returning(|name| Ok(tags_of("prod", "services/log-group/frontend", name)));
        let result = match mode {
            Mode::Apply => step(api).apply(&ctx).await,
            Mode::Plan => step(api).plan(&ctx).await,
        };
        if mode.is_apply() {
            let err = result.unwrap_err();
            assert!(matches!(err, StepError::Conflict { .. }), "{err}");
            assert!(err.to_string().contains("environment `prod`"), "{err}");
            continue;
        }
        let changes = result.unwrap();
        // (This environment's own ECS service would move to the revision it cannot register: an
        // update of its own, listed as such.)
        let mut got: Vec<(&str, Action)> = changes
            .iter()
            .filter(|c| c.resource != "services/ecs-service/frontend")
            .map(|c| (c.resource.as_str(), c.action))
            .collect();
        got.sort();
        assert_eq!(
            got,
            [
                ("services/log-group/frontend", Action::Conflict),
                ("services/task-definition/frontend", Action::Conflict)
            ],
            "{changes:#?}"
        );
        for c in changes.iter().filter(|c| c.action == Action::Conflict) {
            assert!(c.reason.as_deref().unwrap().contains("belongs to environment `prod`"), "{c:?}");
        }
    }
}

#[tokio::test]
async fn only_this_environments_policy_on_this_service_counts() {
    let ctx = deployed_ctx(config(false));
    let mut world = converged_world(&ctx);
    // The frontend's policy name is found, but on another resource id (e.g. another cluster):
    // it is not this service's policy, so the policy is put.
    world.policies.get_mut(&rid("frontend")).unwrap()[0].resource_id = "service/other/tap-frontend-dev".into();
    let mut api = mock_reads(world, Some(1));
    api.expect_put_scaling_policy()
        .withf(|r, p| *r == rid("frontend") && *p == expected_policy("frontend"))
        .times(1)
        .returning(|_, _| Ok(()));
    no_mutations(&mut api);
    let changes = step(api).apply(&ctx).await.unwrap();
    assert_eq!(changes.len(), 1, "{changes:#?}");
    assert_eq!((changes[0].resource.as_str(), changes[0].action), ("services/scaling-policy/frontend", Action::Create));
}

#[tokio::test]
async fn no_new_revision_when_only_order_or_aws_defaults_differ() {
    let ctx = deployed_ctx(config(false));
    let mut world = converged_world(&ctx);
    // AWS returns a running service with a scaled count and a grace period 0 on unrouted services:
    // neither is drift.
    for svc in world.services.values_mut() {
        svc.desired_count = 7;
        svc.capacity_provider_strategy.reverse();
        svc.network.as_mut().unwrap().subnets.reverse();
    }
    let mut api = read_mock(world);
    no_mutations(&mut api);
    assert_eq!(step(api).apply(&ctx).await.unwrap(), vec![]);
}

#[tokio::test]
async fn drifted_settings_get_exactly_their_fix() {
    let ctx = deployed_ctx(config(false));
    let mut world = converged_world(&ctx);
    world.log_groups.get_mut("/ecs/tap-frontend-dev").unwrap().retention_days = Some(7);
    world.services.get_mut("tap-api-gateway-dev").unwrap().health_check_grace_period_seconds = Some(0);
    world.targets.insert(rid("processing-service"), ObservedScalableTarget { min_capacity: 2, max_capacity: 5 });
    world.policies.get_mut(&rid("frontend")).unwrap()[0].target_value = Some(50.0);
    let mut api = read_mock(world);
    api.expect_put_retention_policy()
        .withf(|name, days| name == "/ecs/tap-frontend-dev" && *days == 30)
        .times(1)
        .returning(|_, _| Ok(()));
    api.expect_update_service()
        .withf(|u| {
            *u == ServiceUpdate {
                cluster: "tap-cluster-dev".into(),
                service: "tap-api-gateway-dev".into(),
                health_check_grace_period_seconds: Some(60),
                ..Default::default()
            }
        })
        .times(1)
        .returning(|_| {
            let ctx = deployed_ctx(config(false));
            Ok(observed_from(&desired_service(&ctx, "api-gateway", &td_arn("api-gateway", 1))))
        });
    api.expect_register_scalable_target()
        .withf(|r, min, max| *r == rid("processing-service") && (*min, *max) == (2, 10))
        .times(1)
        .returning(|_, _, _| Ok(()));
    api.expect_put_scaling_policy()
        .withf(|r, p| *r == rid("frontend") && *p == expected_policy("frontend"))
        .times(1)
        .returning(|_, _| Ok(()));
    no_mutations(&mut api);

    let changes = step(api).apply(&ctx).await.unwrap();
    assert_eq!(changes.len(), 4, "{changes:#?}");
    assert!(changes.iter().all(|c| c.action == Action::Update));
    let grace = changes.iter().find(|c| c.resource == "services/ecs-service/api-gateway").unwrap();
    assert_eq!(grace.attributes.len(), 1);
    assert_eq!(grace.attributes[0].attribute, "health_check_grace_period_seconds");
}

#[tokio::test]
async fn new_image_tag_registers_one_revision_and_updates_the_service() {
    let mut config = config(false);
    config.image_tag = "v2".into();
    let ctx = deployed_ctx(config);
    // The world was deployed with `latest`.
    let world = converged_world(&deployed_ctx(self::config(false)));
    let mut api = read_mock(world);
    api.expect_register_task_definition()
        .withf(|def, _| def.containers[0].image.ends_with(":v2"))
        .times(3)
        .returning(|def, _| Ok(revision(def, 2)));
    api.expect_update_service()
        .withf(|u| {
            let service = u.service.strip_prefix("tap-").and_then(|n| n.strip_suffix("-dev")).unwrap_or("");
            *u == ServiceUpdate {
                cluster: "tap-cluster-dev".into(),
                service: u.service.clone(),
                task_definition: Some(td_arn(service, 2)),
                ..Default::default()
            }
        })
        .times(3)
        .returning(moved_to_2);
    no_mutations(&mut api);

    let changes = step(api).apply(&ctx).await.unwrap();
    assert_eq!(changes.len(), 6, "{changes:#?}");
    let td = changes.iter().find(|c| c.resource == "services/task-definition/frontend").unwrap();
    assert_eq!(td.action, Action::Update);
    assert_eq!(td.attributes.len(), 1);
    assert_eq!(td.attributes[0].attribute, "container.image");
}

#[tokio::test]
async fn an_inactive_latest_revision_or_service_counts_as_missing() {
    let ctx = deployed_ctx(config(false));
    let mut world = converged_world(&ctx);
    world.task_definitions.get_mut("tap-frontend-dev").unwrap().active = false;
    world.services.get_mut("tap-frontend-dev").unwrap().status = "INACTIVE".into();
    let mut api = read_mock(world);
    api.expect_register_task_definition().times(1).returning(|def, _| Ok(revision(def, 2)));
    api.expect_create_service()
        .withf(|d| d.name == "tap-frontend-dev" && d.task_definition == td_arn("frontend", 2) && d.desired_count == 2)
        .times(1)
        .returning(|d| Ok(observed_from(d)));
    api.expect_update_service().never();
    let changes = step(api).apply(&ctx).await.unwrap();
    let actions: BTreeSet<(String, Action)> = changes.iter().map(|c| (c.resource.clone(), c.action)).collect();
    assert_eq!(
        actions,
        BTreeSet::from([
            ("services/task-definition/frontend".to_string(), Action::Create),
            ("services/ecs-service/frontend".to_string(), Action::Create),
        ])
    );
}

fn internal_error() -> AwsError {
    AwsError::server_error("ServerException", "Service Unavailable. Please try again later.")
}

#[tokio::test]
async fn a_register_answered_500_that_took_effect_is_adopted_not_registered_again() {
    let mut config = config(false);
    config.image_tag = "v2".into();
    let ctx = deployed_ctx(config);
    let world = converged_world(&deployed_ctx(self::config(false)));
    let made = world.made.clone();
    let mut api = read_mock(world);
    // ECS registers revision 2, then answers 500: the outcome is unknown.
    api.expect_register_task_definition().times(3).returning(move |def, _| {
        made.lock().unwrap().task_definitions.insert(def.family.clone(), revision(def, 2));
        Err(internal_error())
    });
    api.expect_update_service()
        .withf(|u| u.task_definition.as_deref().is_some_and(|td| td.ends_with(":2")))
        .times(3)
        .returning(moved_to_2);
    no_mutations(&mut api);
    let changes = step(api).apply(&ctx).await.unwrap();
    assert_eq!(changes.len(), 6, "{changes:#?}");
}

#[tokio::test]
async fn a_register_answered_500_that_did_not_take_effect_is_sent_again() {
    let ctx = deployed_ctx(config(false));
    let mut world = converged_world(&ctx);
    world.task_definitions.get_mut("tap-frontend-dev").unwrap().definition.cpu = "256".into();
    let mut api = read_mock(world);
    // The first register did nothing (the latest revision is still 1, with the old cpu).
    let mut seq = mockall::Sequence::new();
    api.expect_register_task_definition().times(1).in_sequence(&mut seq).returning(|_, _| Err(internal_error()));
    api.expect_register_task_definition().times(1).in_sequence(&mut seq).returning(|def, _| Ok(revision(def, 2)));
    api.expect_update_service()
        .withf(|u| u.task_definition.as_deref() == Some(td_arn("frontend", 2).as_str()))
        .times(1)
        .returning(|_| {
            let ctx = deployed_ctx(self::config(false));
            Ok(observed_from(&desired_service(&ctx, "frontend", &td_arn("frontend", 2))))
        })
        .in_sequence(&mut seq);
    let changes = step(api).apply(&ctx).await.unwrap();
    assert_eq!(changes.len(), 2, "{changes:#?}");
}

/// A drifted task definition (cpu and image changed by hand): plan lists the family's update with
/// its attributes and the service's move, calling nothing; apply registers exactly one revision
/// (with this environment's tags), moves the service to it, and reports what plan listed.
#[tokio::test]
async fn a_drifted_task_definition_registers_exactly_one_revision_listed_attribute_by_attribute() {
    let ctx = deployed_ctx(config(false));
    let mut world = converged_world(&ctx);
    let drifted = world.task_definitions.get_mut("tap-frontend-dev").unwrap();
    drifted.definition.cpu = "256".into();
    drifted.definition.containers[0].image = format!("{}:hand-made", repo_uri("frontend"));
    let mut plan_api = read_mock(world.clone());
    no_mutations(&mut plan_api);
    let planned = step(plan_api).plan(&ctx).await.unwrap();
    let td = |changes: &[Change]| changes.iter().find(|c| c.resource == "services/task-definition/frontend").cloned();
    let planned_td = td(&planned).expect("plan lists the family's update");
    assert_eq!(planned_td.action, Action::Update);
    let attributes: Vec<&str> = planned_td.attributes.iter().map(|a| a.attribute.as_str()).collect();
    assert_eq!(attributes, ["cpu", "container.image"], "{planned:#?}");

    let mut api = read_mock(world);
    type Registered = (TaskDefinitionSpec, Vec<tap_core::naming::Tag>);
    let registered: Arc<Mutex<Vec<Registered>>> = Arc::default();
    let reg = registered.clone();
    api.expect_register_task_definition().times(1).returning(move |def, tags| {
        reg.lock().unwrap().push((def.clone(), tags.to_vec()));
        Ok(ObservedTaskDefinition {
            arn: td_arn("frontend", 2),
            revision: 2,
            active: true,
            definition: def.clone(),
            tags: tags.to_vec(),
        })
    });
    api.expect_update_service()
        .withf(|u| u.service == "tap-frontend-dev" && u.task_definition == Some(td_arn("frontend", 2)))
        .times(1)
        .returning(|_| {
            let ctx = deployed_ctx(config(false));
            Ok(observed_from(&desired_service(&ctx, "frontend", &td_arn("frontend", 2))))
        });
    let applied = step(api).apply(&ctx).await.unwrap();
    assert_eq!(td(&applied), Some(planned_td), "apply reports exactly what plan listed");
    let actions = |changes: &[Change]| changes.iter().map(|c| (c.resource.clone(), c.action)).collect::<Vec<_>>();
    assert_eq!(actions(&planned), actions(&applied), "and nothing else (the service moves to the revision)");
    let registered = registered.lock().unwrap();
    let (def, tags) = &registered[0];
    assert_eq!(def.cpu, "512");
    assert!(def.containers[0].image.ends_with(":latest"), "{def:?}");
    assert!(tags.contains(&("Environment".into(), "dev".into())), "tagged as this environment's: {tags:?}");
}

#[tokio::test]
async fn a_create_service_answered_500_that_took_effect_is_adopted_not_created_again() {
    let ctx = deployed_ctx(config(false));
    let mut world = converged_world(&ctx);
    world.services.get_mut("tap-frontend-dev").unwrap().status = "INACTIVE".into();
    let made = world.made.clone();
    let mut api = read_mock(world);
    api.expect_create_service().withf(|d| d.name == "tap-frontend-dev").times(1).returning(move |d| {
        made.lock().unwrap().services.insert(d.name.clone(), observed_from(d));
        Err(internal_error())
    });
    no_mutations(&mut api);
    let changes = step(api).apply(&ctx).await.unwrap();
    assert_eq!(
        changes.iter().map(|c| (c.resource.as_str(), c.action)).collect::<Vec<_>>(),
        vec![("services/ecs-service/frontend", Action::Create)]
    );
}

#[tokio::test]
async fn throttling_is_retryable_and_names_the_resource() {
    let ctx = deployed_ctx(config(false));
    let mut world = converged_world(&ctx);
    world.throttle_log_groups = true;
    let mut api = read_mock(world);
    no_mutations(&mut api);
    let err = step(api).apply(&ctx).await.unwrap_err();
    assert!(err.is_retryable(), "{err}");
    assert!(err.to_string().contains("DescribeLogGroups") && err.to_string().contains("services/log-group/"), "{err}");
}

#[tokio::test]
async fn throttled_update_service_is_retryable() {
    let ctx = deployed_ctx(config(false));
    let mut world = converged_world(&ctx);
    world.services.get_mut("tap-frontend-dev").unwrap().circuit_breaker = None;
    let mut api = read_mock(world);
    api.expect_update_service().times(1).returning(|_| Err(AwsError::throttling()));
    let err = step(api).apply(&ctx).await.unwrap_err();
    assert!(err.is_retryable());
    assert!(err.to_string().contains("UpdateService on services/ecs-service/frontend"), "{err}");
}

#[tokio::test]
async fn plan_with_pending_inputs_creates_everything_without_using_pending_ids() {
    let ctx = pending_ctx();
    let mut api = MockServicesApi::new();
    api.expect_list_log_groups().times(1).returning(|_| Ok(vec![]));
    // No family exists: one listing, no read per family.
    api.expect_list_task_families().times(1).returning(|_| Ok(vec!["tap-frontend-prod".into()]));
    api.expect_describe_task_definition().never();
    api.expect_describe_services().never();
    api.expect_describe_scalable_targets().never();
    api.expect_list_scalable_targets().never();
    api.expect_list_services().never();
    api.expect_describe_named_scaling_policies().never();
    api.expect_describe_scaling_policies().never();
    api.expect_image_exists().never();
    no_mutations(&mut api);
    let changes = step(api).plan(&ctx).await.unwrap();
    assert_eq!(changes.len(), 15);
    assert!(changes.iter().all(|c| c.action == Action::Create));
    let outputs: ServicesOutputs = ctx.get("test").unwrap();
    assert!(outputs.service_arns.values().all(|a| a == PENDING) && outputs.service_arns.len() == 3);
}

#[tokio::test]
async fn plan_on_drift_lists_the_changes_without_making_them() {
    let ctx = deployed_ctx(config(false));
    let mut world = converged_world(&ctx);
    world.log_groups.clear();
    world.services.get_mut("tap-frontend-dev").unwrap().network.as_mut().unwrap().assign_public_ip = true;
    let mut api = read_mock(world);
    no_mutations(&mut api);
    let changes = step(api).plan(&ctx).await.unwrap();
    assert_eq!(changes.iter().filter(|c| c.action == Action::Create).count(), 3);
    let svc = changes.iter().find(|c| c.resource == "services/ecs-service/frontend").unwrap();
    assert_eq!((svc.action, svc.attributes[0].attribute.as_str()), (Action::Update, "network_configuration"));
}

#[tokio::test]
async fn missing_image_warns_and_is_not_waited_for() {
    let ctx = deployed_ctx(config(true));
    let mut world = converged_world(&ctx);
    world.images = false;
    let calls = world.describe_services_calls.clone();
    let mut api = read_mock(world);
    no_mutations(&mut api);
    // Rollouts never complete here: waiting would time out.
    step(api).apply(&ctx).await.unwrap();
    // One DescribeServices for all services to converge, none to wait.
    assert_eq!(*calls.lock().unwrap(), 1);
}

#[tokio::test]
async fn a_repository_made_by_this_run_is_not_asked_for_images() {
    let ctx = deployed_ctx(config(true));
    let mut registry: RegistryOutputs = ctx.get("test").unwrap();
    registry.repositories.values_mut().for_each(|r| r.created = true);
    ctx.put(registry);
    let world = converged_world(&ctx);
    let (checks, describes) = (world.image_checks.clone(), world.describe_services_calls.clone());
    let mut api = read_mock(world);
    no_mutations(&mut api);
    // A new repository holds no image: no DescribeImages, and no wait for a rollout that cannot start.
    step(api).apply(&ctx).await.unwrap();
    assert_eq!((*checks.lock().unwrap(), *describes.lock().unwrap()), (0, 1));
}

/// A world where every service reports `rollout` on its PRIMARY deployment with `running` tasks.
fn rollout_mock(ctx: &Context, rollout: &'static str, running: i32) -> MockServicesApi {
    let mut world = converged_world(ctx);
    for svc in world.services.values_mut() {
        svc.running_count = running;
        svc.pending_count = svc.desired_count - running;
        svc.deployments[0].rollout_state = Some(rollout.into());
        svc.deployments[0].rollout_state_reason = Some(format!("ECS deployment {rollout}"));
        svc.deployments[0].running_count = running;
    }
    // Each service's newest service deployment: of the revision its PRIMARY runs.
    let revisions: BTreeMap<String, String> = world
        .services
        .values()
        .map(|svc| (svc.name.clone(), svc.deployments[0].task_definition.clone().unwrap_or_default()))
        .collect();
    let status = match rollout {
        "COMPLETED" => "SUCCESSFUL",
        "FAILED" => "ROLLBACK_FAILED",
        other => other,
    };
    let mut api = read_mock(world);
    no_mutations(&mut api);
    api.expect_list_tasks().returning(|_, _, _| Ok(vec![]));
    api.expect_target_health().returning(|_| Ok(vec![]));
    api.expect_list_service_deployments().returning(move |_, service| {
        Ok(vec![ServiceDeploymentBrief {
            arn: format!("sd/{service}"),
            status: status.into(),
            target_revision_arn: revisions.get(service).map(|td| format!("rev/{td}")),
            created_at_ms: Some(1),
        }])
    });
    api.expect_service_revision_task_definitions()
        .returning(|arns| Ok(arns.iter().map(|a| (a.clone(), a.trim_start_matches("rev/").to_owned())).collect()));
    api.expect_describe_service_deployments().returning(move |arns| {
        Ok(arns
            .iter()
            .map(|arn| ServiceDeployment {
                arn: arn.clone(),
                status: status.into(),
                status_reason: Some(format!("ECS deployment {rollout}")),
                target_revision_arn: None,
                ..Default::default()
            })
            .collect())
    });
    api
}

#[tokio::test]
async fn wait_succeeds_once_rollouts_complete() {
    let ctx = deployed_ctx(config(true));
    assert_eq!(step(rollout_mock(&ctx, "COMPLETED", 2)).apply(&ctx).await.unwrap(), vec![]);
}

#[tokio::test]
async fn failed_rollout_is_an_error_saying_why() {
    let ctx = deployed_ctx(config(true));
    let err = step(rollout_mock(&ctx, "FAILED", 0)).apply(&ctx).await.unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("rollout of tap-frontend-dev:1") && msg.contains("ECS deployment FAILED"), "{msg}");
    assert!(!err.is_retryable());
}

#[tokio::test]
async fn wait_times_out_naming_the_service() {
    let mut config = config(true);
    config.deploy.timeout_seconds = 0;
    let ctx = deployed_ctx(config);
    let err = step(rollout_mock(&ctx, "IN_PROGRESS", 0)).apply(&ctx).await.unwrap_err();
    assert!(matches!(err, StepError::Timeout { .. }), "{err}");
    assert!(err.to_string().contains("tap-"), "{err}");
}

/// The tags tap gives a resource of environment `env`.
/// The tags of a resource of environment `dev` (whose, is all they tell here).
fn dev_tags() -> Vec<(String, String)> {
    tags_of("dev", "services/x", "x")
}

fn tags_of(env: &str, component: &str, name: &str) -> Vec<(String, String)> {
    let config = Config { environment: env.into(), ..Config::default() };
    tap_core::naming::Names::new(&config).tags(component, name)
}

#[tokio::test]
async fn destroy_on_an_empty_environment_succeeds() {
    let ctx = Context::new(config(false));
    let mut api = MockServicesApi::new();
    api.expect_list_services()
        .times(1)
        .returning(|_| Err(AwsError::new("ClusterNotFoundException", "Cluster not found.")));
    // Found by listing, not by the config's names: nothing listed, nothing else read.
    api.expect_list_log_groups().times(1).returning(|_| Ok(vec![]));
    api.expect_list_task_families().times(1).returning(|_| Ok(vec![]));
    api.expect_list_scalable_targets().times(1).returning(|_| Ok(BTreeMap::new()));
    api.expect_describe_services().never();
    api.expect_describe_scaling_policies().never();
    api.expect_list_task_definitions().never();
    no_mutations(&mut api);
    assert_eq!(step(api).destroy(&ctx).await.unwrap(), vec![]);
}

#[tokio::test]
async fn destroy_removes_everything_of_the_environment() {
    let ctx = deployed_ctx(config(false));
    let world = converged_world(&ctx);
    let mut api = MockServicesApi::new();
    // The cluster also holds a service that is no longer configured.
    api.expect_list_services().returning(|_| {
        Ok(vec![
            "tap-frontend-dev".into(),
            "tap-api-gateway-dev".into(),
            "tap-processing-service-dev".into(),
            "tap-old-dev".into(),
        ])
    });
    let deleted: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    let (d1, d2) = (deleted.clone(), deleted.clone());
    let services = world.services.clone();
    api.expect_describe_services().returning(move |_, names| {
        let gone = d1.lock().unwrap();
        Ok(names
            .iter()
            .map(|n| {
                let mut s = services.get(n).cloned().unwrap_or_else(|| {
                    let mut s = services["tap-frontend-dev"].clone();
                    s.name = n.clone();
                    s.tags = tags_of("dev", "services/ecs-service/old", n);
                    s
                });
                if gone.contains(n) {
                    s.status = "INACTIVE".into();
                }
                s
            })
            .collect())
    });
    api.expect_update_service()
        .withf(|u| u.desired_count == Some(0) && u.task_definition.is_none() && u.capacity_provider_strategy.is_none())
        .times(4)
        .returning(|u| {
            let mut s = observed_from(&desired_service(&deployed_ctx(config(false)), "frontend", "td"));
            s.name = u.service.clone();
            Ok(s)
        });
    api.expect_delete_service().times(4).returning(move |_, name| {
        d2.lock().unwrap().insert(name.to_string());
        Ok(())
    });
    let policies = world.policies.clone();
    api.expect_describe_scaling_policies().returning(move |r| Ok(policies.get(r).cloned().unwrap_or_default()));
    api.expect_delete_scaling_policy()
        .withf(|r, name| SERVICES.iter().any(|s| *r == rid(s) && name == format!("tap-cpu-{s}-dev")))
        .times(3)
        .returning(|_, _| Ok(()));
    let targets = world.targets.clone();
    api.expect_list_scalable_targets()
        .withf(|prefix| prefix == "service/tap-cluster-dev/")
        .returning(move |_| Ok(targets.clone()));
    // The listed services' targets are asked by their ids too (a listing can come back short).
    let targets = world.targets.clone();
    api.expect_describe_scalable_targets().times(1).returning(move |ids| {
        Ok(targets.iter().filter(|(r, _)| ids.contains(r)).map(|(r, t)| (r.clone(), *t)).collect())
    });
    api.expect_deregister_scalable_target().times(3).returning(|_| Ok(()));
    // Four families (the old service's too), each found by the listing and owned by its tags.
    api.expect_list_task_families().returning(|_| {
        Ok(["frontend", "api-gateway", "processing-service", "old"].iter().map(|s| format!("tap-{s}-dev")).collect())
    });
    let definitions = world.task_definitions.clone();
    api.expect_describe_task_definition().returning(move |family| {
        let mut latest = definitions["tap-frontend-dev"].clone();
        latest.arn = format!("arn:aws:ecs:{REGION}:{ACCOUNT}:task-definition/{family}:2");
        Ok(Some(latest))
    });
    api.expect_list_task_definitions().returning(|family, status| {
        let service = family.strip_prefix("tap-").and_then(|f| f.strip_suffix("-dev")).unwrap().to_string();
        Ok(match status {
            RevisionStatus::Active => vec![td_arn(&service, 1), td_arn(&service, 2)],
            RevisionStatus::Inactive => vec![td_arn(&service, 1), td_arn(&service, 2)],
        })
    });
    api.expect_deregister_task_definition().times(8).returning(|_| Ok(()));
    // Four families of two revisions: their eight revisions in one call (ten a call).
    api.expect_delete_task_definitions().withf(|arns| arns.len() == 8).times(1).returning(|_| Ok(()));
    // The old service's log group is already gone: the listing shows the three others.
    let groups: Vec<ObservedLogGroup> = world.log_groups.values().cloned().collect();
    api.expect_list_log_groups().returning(move |_| Ok(groups.clone()));
    api.expect_log_group_tags().returning(|name| Ok(tags_of("dev", "services/log-group/x", name)));
    api.expect_delete_log_group().times(3).returning(|_| Ok(()));

    let changes = step(api).destroy(&ctx).await.unwrap();
    assert!(changes.iter().all(|c| c.action == Action::Delete));
    let count = |kind: &str| changes.iter().filter(|c| c.resource.starts_with(&format!("services/{kind}/"))).count();
    assert_eq!(count("ecs-service"), 4);
    assert_eq!(count("scaling-policy"), 3);
    assert_eq!(count("scaling-target"), 3);
    assert_eq!(count("task-definition"), 4);
    assert_eq!(count("log-group"), 3);
    assert!(changes.iter().any(|c| c.name == "tap-old-dev"));
    assert_eq!(deleted.lock().unwrap().len(), 4);
}

#[tokio::test]
async fn destroy_treats_not_found_as_gone() {
    let ctx = Context::new(config(false));
    let mut api = MockServicesApi::new();
    api.expect_list_services().returning(|_| Ok(vec!["tap-frontend-dev".into()]));
    // The service vanishes between DescribeServices and UpdateService.
    let described = Arc::new(Mutex::new(0));
    api.expect_describe_services().returning(move |_, names| {
        let mut calls = described.lock().unwrap();
        *calls += 1;
        if *calls > 1 {
            return Ok(vec![]);
        }
        let ctx = deployed_ctx(config(false));
        let mut s = observed_from(&desired_service(&ctx, "frontend", "td"));
        s.name = names[0].clone();
        Ok(vec![s])
    });
    api.expect_update_service()
        .times(1)
        .returning(|_| Err(AwsError::new("ServiceNotFoundException", "Service not found.")));
    api.expect_delete_service().never();
    api.expect_list_scalable_targets().returning(|_| {
        Ok(BTreeMap::from([(rid("frontend"), ObservedScalableTarget { min_capacity: 2, max_capacity: 10 })]))
    });
    api.expect_describe_scalable_targets().returning(|_| Ok(BTreeMap::new()));
    api.expect_describe_scaling_policies().returning(|r| {
        Ok(vec![ObservedScalingPolicy {
            name: format!("tap-cpu-{}", r.rsplit('/').next().unwrap()),
            resource_id: r.to_string(),
            policy_type: "TargetTrackingScaling".into(),
            metric: None,
            target_value: None,
            scale_in_cooldown: None,
            scale_out_cooldown: None,
            disable_scale_in: false,
        }])
    });
    api.expect_delete_scaling_policy().times(1).returning(|_, _| {
        Err(AwsError::new("ValidationException", "No scaling policy found for service namespace: ecs"))
    });
    api.expect_deregister_scalable_target()
        .times(1)
        .returning(|_| Err(AwsError::new("ObjectNotFoundException", "gone")));
    api.expect_list_task_families().returning(|_| Ok(vec![]));
    api.expect_list_task_definitions().never();
    api.expect_list_log_groups().returning(|_| {
        Ok(vec![ObservedLogGroup { name: "/ecs/tap-frontend-dev".into(), retention_days: Some(30), tags: None }])
    });
    api.expect_log_group_tags().returning(|name| Ok(tags_of("dev", "services/log-group/frontend", name)));
    api.expect_delete_log_group().returning(|_| Ok(()));
    let changes = step(api).destroy(&ctx).await.unwrap();
    assert!(changes.iter().all(|c| c.resource.starts_with("services/log-group/")), "{changes:#?}");
}

#[tokio::test]
async fn status_reports_counts_rollout_revision_and_target_health() {
    let ctx = deployed_ctx(config(false));
    let mut world = converged_world(&ctx);
    world.services.remove("tap-processing-service-dev");
    let svc = world.services.get_mut("tap-frontend-dev").unwrap();
    svc.running_count = 1;
    svc.pending_count = 1;
    let mut api = read_mock(world);
    api.expect_target_health().times(2).returning(|arn| {
        let target = |state: &str| rollout::TargetState {
            id: "10.0.10.5".into(),
            port: Some(3000),
            state: state.into(),
            reason: None,
            description: None,
        };
        Ok(if arn.contains("tap-fe-") { vec![target("healthy"), target("initial")] } else { vec![] })
    });
    let statuses = status::status(&api, &ctx).await.unwrap();
    assert_eq!(statuses.len(), 3);
    let fe = &statuses[0];
    assert_eq!(
        (fe.name.as_str(), fe.status.as_str(), fe.desired, fe.running, fe.pending),
        ("frontend", "ACTIVE", 2, 1, 1)
    );
    assert_eq!(fe.rollout_state.as_deref(), Some("IN_PROGRESS"));
    assert_eq!((fe.task_definition.as_deref(), fe.revision), (Some("tap-frontend-dev:1"), Some(1)));
    assert_eq!(fe.target_health.as_ref().unwrap()["healthy"], 1);
    assert_eq!(statuses[2].status, "MISSING");
    let table = status::render_table("dev", &statuses);
    assert!(
        table.contains("frontend") && table.contains("healthy=1 initial=1") && table.contains("MISSING"),
        "{table}"
    );
    let json = serde_json::to_value(&statuses).unwrap();
    assert_eq!(json[1]["name"], "api-gateway");
    assert_eq!(json[1]["target_health"], json!({}));
}

#[tokio::test]
async fn status_of_an_environment_without_cluster_is_all_missing() {
    let ctx = Context::new(config(false));
    let mut api = MockServicesApi::new();
    api.expect_describe_services()
        .returning(|_, _| Err(AwsError::new("ClusterNotFoundException", "Cluster not found.")));
    api.expect_target_health().never();
    let statuses = status::status(&api, &ctx).await.unwrap();
    assert!(statuses.iter().all(|s| s.status == "MISSING"));
}

#[test]
fn rollout_classification() {
    let ctx = deployed_ctx(config(false));
    let mut svc = observed_from(&desired_service(&ctx, "frontend", "td"));
    assert!(matches!(rollout::phase(&svc, "td"), rollout::Phase::InProgress(_)));
    svc.deployments[0].rollout_state = Some("COMPLETED".into());
    svc.running_count = 1;
    svc.deployments[0].running_count = 1;
    assert!(matches!(rollout::phase(&svc, "td"), rollout::Phase::InProgress(_)), "COMPLETED but not all tasks running");
    svc.running_count = 2;
    svc.deployments[0].running_count = 2;
    assert_eq!(rollout::phase(&svc, "td"), rollout::Phase::Done);
    assert!(
        matches!(rollout::phase(&svc, "td:2"), rollout::Phase::Failed { primary: Some(_), .. }),
        "another revision PRIMARY is no success for ours"
    );
    svc.deployments[0].rollout_state = Some("FAILED".into());
    assert!(matches!(rollout::phase(&svc, "td"), rollout::Phase::Failed { primary: None, .. }));
}

#[tokio::test]
async fn status_after_destroy_skips_target_groups_that_are_gone() {
    let ctx = deployed_ctx(config(false));
    let mut world = converged_world(&ctx);
    world.services.get_mut("tap-frontend-dev").unwrap().status = "INACTIVE".into();
    let mut api = read_mock(world);
    // Only the ACTIVE routed service is asked; its target group was deleted meanwhile.
    api.expect_target_health()
        .withf(|arn| arn.contains("tap-api-"))
        .times(1)
        .returning(|_| Err(AwsError::new("TargetGroupNotFound", "One or more target groups not found")));
    let statuses = status::status(&api, &ctx).await.unwrap();
    assert_eq!(statuses[0].status, "INACTIVE");
    assert!(statuses.iter().all(|s| s.target_health.is_none()));
}

#[test]
fn log_groups_are_read_under_their_common_prefix() {
    let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let all = names(&["/ecs/tap-frontend-dev", "/ecs/tap-api-gateway-dev", "/ecs/tap-processing-service-dev"]);
    assert_eq!(sdk::common_prefix(&all), "/ecs/tap-");
    assert_eq!(sdk::common_prefix(&names(&["/ecs/tap-frontend-dev"])), "/ecs/tap-frontend-dev");
    assert_eq!(sdk::common_prefix(&[]), "");
    // Never splits a character.
    assert_eq!(sdk::common_prefix(&names(&["/ecs/é", "/ecs/è"])), "/ecs/");
}

/// The config without `processing-service`, over a world where all three were deployed.
fn without_processing() -> (Arc<Context>, World) {
    let world = converged_world(&deployed_ctx(config(false)));
    let mut config = config(false);
    config.services.retain(|s| s.name != "processing-service");
    (Arc::new(deployed_ctx(config)), world)
}

#[tokio::test]
async fn a_removed_service_is_pruned_scaling_first_and_the_pruned_milestone_comes_after() {
    let (ctx, world) = without_processing();
    ctx.expect_pruned([tap_core::step::Pruned::Services]);
    let deleted = world.deleted_services.clone();
    let mut api = read_mock(world.clone());
    let gone = "processing-service";
    let published = |ctx: &Arc<Context>| ctx.is_pruned(tap_core::step::Pruned::Services);
    let order: Arc<Mutex<Vec<&'static str>>> = Arc::default();
    let policies = world.policies.clone();
    api.expect_describe_scaling_policies()
        .withf(move |r| *r == rid(gone))
        .times(1)
        .returning(move |r| Ok(policies[r].clone()));
    let (o, c) = (order.clone(), ctx.clone());
    api.expect_delete_scaling_policy()
        .withf(move |r, name| *r == rid(gone) && name == "tap-cpu-processing-service-dev")
        .times(1)
        .returning(move |_, _| {
            assert!(!published(&c), "the milestone is given after the prune");
            o.lock().unwrap().push("policy");
            Ok(())
        });
    let o = order.clone();
    api.expect_deregister_scalable_target().withf(move |r| *r == rid(gone)).times(1).returning(move |_| {
        o.lock().unwrap().push("target");
        Ok(())
    });
    let o = order.clone();
    api.expect_update_service()
        .withf(|u| u.service == "tap-processing-service-dev" && u.desired_count == Some(0))
        .times(1)
        .returning(move |u| {
            o.lock().unwrap().push("scale to 0");
            let mut s = observed_from(&desired_service(&deployed_ctx(config(false)), "frontend", "td"));
            s.name = u.service.clone();
            Ok(s)
        });
    let o = order.clone();
    api.expect_delete_service().withf(|_, name| name == "tap-processing-service-dev").times(1).returning(
        move |_, name| {
            o.lock().unwrap().push("delete service");
            deleted.lock().unwrap().insert(name.to_string());
            Ok(())
        },
    );
    api.expect_list_task_definitions().withf(|family, _| family == "tap-processing-service-dev").times(2).returning(
        |_, status| {
            Ok(match status {
                RevisionStatus::Active => vec![td_arn("processing-service", 1)],
                RevisionStatus::Inactive => vec![td_arn("processing-service", 1)],
            })
        },
    );
    let o = order.clone();
    api.expect_deregister_task_definition().times(1).returning(move |_| {
        o.lock().unwrap().push("task definition");
        Ok(())
    });
    api.expect_delete_task_definitions().times(1).returning(|_| Ok(()));
    api.expect_log_group_tags()
        .withf(|name| name == "/ecs/tap-processing-service-dev")
        .times(1)
        .returning(|name| Ok(tags_of("dev", "services/log-group/processing-service", name)));
    let o = order.clone();
    api.expect_delete_log_group().withf(|name| name == "/ecs/tap-processing-service-dev").times(1).returning(
        move |_| {
            o.lock().unwrap().push("log group");
            Ok(())
        },
    );
    no_mutations(&mut api);

    let changes = step(api).apply(&ctx).await.unwrap();
    let mut got: Vec<(String, Action)> = changes.iter().map(|c| (c.resource.clone(), c.action)).collect();
    got.sort();
    let want: Vec<(String, Action)> =
        ["ecs-service", "log-group", "scaling-policy", "scaling-target", "task-definition"]
            .iter()
            .map(|k| (format!("services/{k}/processing-service"), Action::Delete))
            .collect();
    assert_eq!(got, want, "{changes:#?}");
    let order = order.lock().unwrap().clone();
    assert_eq!(&order[..4], ["policy", "target", "scale to 0", "delete service"], "{order:?}");
    let outputs: ServicesOutputs = ctx.get("test").unwrap();
    assert_eq!(outputs.service_arns.len(), 2);
    assert!(published(&ctx), "given once the prune is done");
}

#[tokio::test]
async fn plan_lists_a_removed_services_resources_without_touching_them() {
    let (ctx, world) = without_processing();
    let mut api = read_mock(world.clone());
    no_mutations(&mut api);
    let policies = world.policies.clone();
    api.expect_describe_scaling_policies().times(1).returning(move |r| Ok(policies[r].clone()));
    api.expect_log_group_tags().times(1).returning(|n| Ok(tags_of("dev", "services/log-group/processing-service", n)));
    api.expect_list_task_definitions().never();
    let changes = step(api).plan(&ctx).await.unwrap();
    assert_eq!(changes.len(), 5, "{changes:#?}");
    assert!(changes.iter().all(|c| c.action == Action::Delete && c.resource.ends_with("/processing-service")));
}

#[tokio::test]
async fn nothing_is_pruned_without_this_environments_tags() {
    let ctx = deployed_ctx(config(false));
    let mut world = converged_world(&ctx);
    // Named like the environment's, but made by hand (no tap tags) or by another environment.
    let mut hand = world.services["tap-frontend-dev"].clone();
    hand.name = "tap-hand-dev".into();
    hand.tags = vec![("Environment".into(), "dev".into())];
    world.services.insert(hand.name.clone(), hand);
    // Its scaling carries no tags: left alone because its service is not the environment's.
    world.targets.insert(
        "service/tap-cluster-dev/tap-hand-dev".into(),
        ObservedScalableTarget { min_capacity: 1, max_capacity: 2 },
    );
    let group = "/ecs/tap-frontend-x-dev".to_string();
    world
        .log_groups
        .insert(group.clone(), ObservedLogGroup { name: group, retention_days: None, tags: Some(dev_tags()) });
    let mut foreign = world.task_definitions["tap-frontend-dev"].clone();
    foreign.arn = "arn:aws:ecs:eu-west-1:123456789012:task-definition/tap-frontend-x-dev:1".into();
    foreign.tags = tags_of("x-dev", "services/task-definition/frontend", "tap-frontend-x-dev");
    world.task_definitions.insert("tap-frontend-x-dev".into(), foreign);
    let mut api = read_mock(world);
    no_mutations(&mut api);
    api.expect_log_group_tags().times(1).returning(|n| Ok(tags_of("x-dev", "services/log-group/frontend", n)));
    assert_eq!(step(api).apply(&ctx).await.unwrap(), vec![]);
}

#[tokio::test]
async fn every_existing_resource_is_reported_as_found() {
    #[derive(Default)]
    struct Collect(Mutex<Vec<String>>);
    impl tap_core::progress::ProgressSink for Collect {
        fn event(&self, event: tap_core::progress::ProgressEvent<'_>) {
            self.0.lock().unwrap().push(event.to_string());
        }
    }
    let sink = Arc::new(Collect::default());
    let ctx = deployed_ctx(config(false)).with_progress(sink.clone());
    let mut api = read_mock(converged_world(&ctx));
    no_mutations(&mut api);
    assert_eq!(step(api).apply(&ctx).await.unwrap(), vec![]);
    let events = sink.0.lock().unwrap().clone();
    for kind in ["log-group", "task-definition", "ecs-service", "scaling-target", "scaling-policy"] {
        for s in SERVICES {
            let found = format!("services: found services/{kind}/{s}");
            assert!(events.contains(&found), "{found} missing from {events:#?}");
        }
    }
}

/// A deployed context whose api-gateway deploys blue-green, with its traffic shift published.
fn blue_green_ctx() -> Context {
    let mut config = config(false);
    config.services[1].deploy.strategy = Some(tap_core::strategy::Strategy::BlueGreen);
    let ctx = deployed_ctx(config);
    let mut security: SecurityOutputs = ctx.get("test").unwrap();
    security.infrastructure_role_arn = Some(format!("arn:aws:iam::{ACCOUNT}:role/tap-ecs-infrastructure-dev"));
    ctx.put(security);
    let mut ingress: IngressOutputs = ctx.get("test").unwrap();
    ingress.traffic_shifts.insert(
        "api-gateway".into(),
        TrafficShift {
            alternate_target_group_arn: tg_arn("api-alt"),
            production_listener_rule_arn: "arn:rule/prod".into(),
            test_listener_rule_arn: "arn:rule/test".into(),
        },
    );
    ctx.put(ingress);
    ctx
}

#[test]
fn a_blue_green_service_gets_its_strategy_and_traffic_shift() {
    let ctx = blue_green_ctx();
    let want = desired_service(&ctx, "api-gateway", &td_arn("api-gateway", 1));
    assert_eq!(want.strategy.strategy, "BLUE_GREEN");
    assert_eq!(want.strategy.bake_time_minutes, Some(5));
    let shift = want.load_balancers[0].traffic_shift.clone().expect("advancedConfiguration");
    assert_eq!(shift.alternate_target_group_arn, tg_arn("api-alt"));
    assert_eq!(
        (shift.production_listener_rule.as_str(), shift.test_listener_rule.as_str()),
        ("arn:rule/prod", "arn:rule/test")
    );
    assert!(shift.role_arn.ends_with("role/tap-ecs-infrastructure-dev"));

    // After a deployment ECS serves from the alternate group: no drift, nothing to repair.
    let mut have = observed_from(&want);
    let lb = &mut have.load_balancers[0];
    let swapped = lb.traffic_shift.as_mut().unwrap();
    std::mem::swap(&mut lb.target_group_arn, &mut swapped.alternate_target_group_arn);
    assert_eq!(service::update_for(&want, &have), None);

    // A service still rolling: the strategy and the load balancer change, in one UpdateService
    // that writes the deployment configuration whole.
    let rolling = desired_service(&deployed_ctx(config(false)), "api-gateway", &td_arn("api-gateway", 1));
    let (update, attrs) = service::update_for(&want, &observed_from(&rolling)).expect("drift");
    let names: Vec<&str> = attrs.iter().map(|a| a.attribute.as_str()).collect();
    assert_eq!(names, ["deployment_strategy", "load_balancers"]);
    assert_eq!(update.strategy.as_ref().map(|s| s.strategy.as_str()), Some("BLUE_GREEN"));
    assert_eq!(update.circuit_breaker, Some(want.circuit_breaker));
    assert!(update.load_balancers.unwrap()[0].traffic_shift.is_some());
    assert_eq!(update.task_definition, None);
}

/// A config deploying image tag `tag` (the converged world runs `latest`).
fn tag_config(tag: &str) -> Config {
    let mut config = config(false);
    config.image_tag = tag.into();
    config
}

/// What each repository holds: `v1` pushed before `v2` (and an untagged image).
fn pushed_v1_v2(repository: &str) -> Vec<image::RepositoryImage> {
    assert!(repository.starts_with("tap-") && repository.ends_with("-dev"), "{repository}");
    vec![
        image::RepositoryImage { tags: vec!["v1".into()], pushed_at: Some(100) },
        image::RepositoryImage { tags: vec![], pushed_at: Some(300) },
        image::RepositoryImage { tags: vec!["v2".into()], pushed_at: Some(200) },
    ]
}

/// Registers revision 2 of whatever is asked and moves the services to it.
fn expect_moves(api: &mut MockServicesApi, times: usize) {
    api.expect_register_task_definition().times(times).returning(|def, _| Ok(revision(def, 2)));
    api.expect_update_service().times(times).returning(moved_to_2);
}

#[tokio::test]
async fn a_running_service_moving_to_a_missing_tag_is_refused_naming_the_tags_the_repository_has() {
    let world = World { images: false, ..converged_world(&deployed_ctx(config(false))) };

    // Plan: the task definitions would change, and each service gets a `!` line naming the tags.
    let ctx = deployed_ctx(tag_config("v9"));
    let mut api = read_mock(world.clone());
    no_mutations(&mut api);
    let checked = world.image_checks.clone();
    api.expect_repository_images().times(3).returning(|repository| Ok(pushed_v1_v2(repository)));
    let changes = step(api).plan(&ctx).await.unwrap();
    assert_eq!(*checked.lock().unwrap(), 3, "one DescribeImages of the tag per service");
    for s in SERVICES {
        let refusal = changes.iter().find(|c| c.resource == format!("services/image/{s}")).expect("a refusal");
        assert_eq!(refusal.action, Action::Refuse);
        assert_eq!(refusal.name, format!("tap-{s}-dev:v9"));
        assert_eq!(
            refusal.reason.as_deref(),
            Some(format!("tap-{s}-dev:v9 is not in the repository (it has: v2, v1)").as_str())
        );
        let td = changes.iter().find(|c| c.resource == format!("services/task-definition/{s}")).unwrap();
        assert_eq!(td.action, Action::Update);
    }

    // Apply (the look before it was skipped): it stops before writing anything.
    let mut api = read_mock(world);
    no_mutations(&mut api);
    api.expect_repository_images().returning(|repository| Ok(pushed_v1_v2(repository)));
    let err = step(api).apply(&ctx).await.unwrap_err();
    assert!(
        matches!(err, StepError::Conflict { ref resource, .. } if resource.starts_with("services/image/")),
        "{err}"
    );
    let msg = err.to_string();
    for needle in [" runs and would move", ":v9 is not in the repository (it has: v2, v1)", "--allow-missing-image"] {
        assert!(msg.contains(needle), "{needle} in {msg}");
    }
    assert!(!err.is_retryable());
}

#[tokio::test]
async fn services_still_to_create_are_created_with_a_missing_tag() {
    let ctx = deployed_ctx(tag_config("v9"));
    let mut world = World { images: false, ..converged_world(&deployed_ctx(config(false))) };
    world.services.clear();
    let mut api = read_mock(world);
    api.expect_repository_images().never();
    api.expect_register_task_definition().times(3).returning(|def, _| Ok(revision(def, 2)));
    api.expect_create_service().times(3).returning(|d| Ok(observed_from(d)));
    let changes = step(api).apply(&ctx).await.unwrap();
    assert!(changes.iter().all(|c| c.action != Action::Refuse), "{changes:#?}");
    assert_eq!(changes.iter().filter(|c| c.resource.starts_with("services/ecs-service/")).count(), 3);
}

#[tokio::test]
async fn a_pushed_tag_moves_the_services_without_listing_the_repository() {
    let ctx = deployed_ctx(tag_config("v9"));
    let world = converged_world(&deployed_ctx(config(false)));
    let checked = world.image_checks.clone();
    let mut api = read_mock(world.clone());
    no_mutations(&mut api);
    api.expect_repository_images().never();
    let planned = step(api).plan(&ctx).await.unwrap();
    assert!(planned.iter().all(|c| c.action != Action::Refuse), "{planned:#?}");
    assert_eq!(*checked.lock().unwrap(), 3);

    let mut api = read_mock(world);
    api.expect_repository_images().never();
    expect_moves(&mut api, 3);
    let changes = step(api).apply(&ctx).await.unwrap();
    assert_eq!(changes.len(), 6, "{changes:#?}");
}

#[tokio::test]
async fn allow_missing_images_moves_running_services_with_a_warning() {
    let mut config = tag_config("v9");
    config.deploy.allow_missing_images = true;
    let ctx = deployed_ctx(config);
    let world = World { images: false, ..converged_world(&deployed_ctx(self::config(false))) };
    let mut api = read_mock(world.clone());
    no_mutations(&mut api);
    api.expect_repository_images().never();
    let planned = step(api).plan(&ctx).await.unwrap();
    assert!(planned.iter().all(|c| c.action != Action::Refuse), "{planned:#?}");

    let mut api = read_mock(world);
    api.expect_repository_images().never();
    expect_moves(&mut api, 3);
    assert_eq!(step(api).apply(&ctx).await.unwrap().len(), 6);
}

#[tokio::test]
async fn a_service_on_an_older_revision_is_checked_against_the_image_it_runs() {
    // After a rollback the frontend runs revision 1 (`latest`) while the latest revision, 2, asks
    // for `v9`, never pushed: deploying `v9` would move it there. The others run `v9` already.
    let ctx = deployed_ctx(tag_config("v9"));
    let mut world = World { images: false, ..converged_world(&ctx) };
    world.revisions.push(ObservedTaskDefinition {
        arn: td_arn("frontend", 1),
        revision: 1,
        active: true,
        definition: desired_td(&deployed_ctx(config(false)), "frontend"),
        tags: dev_tags(),
    });
    let latest = world.task_definitions.get_mut("tap-frontend-dev").unwrap();
    (latest.arn, latest.revision) = (td_arn("frontend", 2), 2);
    let checked = world.image_checks.clone();
    let mut api = read_mock(world);
    no_mutations(&mut api);
    api.expect_repository_images()
        .withf(|repository| repository == "tap-frontend-dev")
        .times(1)
        .returning(|_| Ok(vec![image::RepositoryImage { tags: vec!["v1".into()], pushed_at: None }]));
    let changes = step(api).plan(&ctx).await.unwrap();
    assert_eq!(*checked.lock().unwrap(), 1);
    let listed: BTreeSet<(String, Action)> = changes.iter().map(|c| (c.resource.clone(), c.action)).collect();
    assert_eq!(
        listed,
        BTreeSet::from([
            ("services/ecs-service/frontend".to_string(), Action::Update),
            ("services/image/frontend".to_string(), Action::Refuse),
        ])
    );

    // A deploy interrupted between registering revision 2 and moving the service to it: both
    // revisions have the image the config asks for, so the service moves without a check.
    let ctx = deployed_ctx(config(false));
    let mut world = World { images: false, ..converged_world(&ctx) };
    world.revisions.push(world.task_definitions["tap-frontend-dev"].clone());
    let latest = world.task_definitions.get_mut("tap-frontend-dev").unwrap();
    (latest.arn, latest.revision) = (td_arn("frontend", 2), 2);
    let checked = world.image_checks.clone();
    let mut api = read_mock(world);
    no_mutations(&mut api);
    api.expect_repository_images().never();
    let changes = step(api).plan(&ctx).await.unwrap();
    assert_eq!(*checked.lock().unwrap(), 0);
    assert_eq!(
        changes.iter().map(|c| (c.resource.as_str(), c.action)).collect::<Vec<_>>(),
        [("services/ecs-service/frontend", Action::Update)]
    );
}

#[tokio::test]
async fn deployment_alarms_are_named_repaired_and_cleared_in_one_deployment_configuration() {
    use crate::service::DeploymentAlarms;
    let ctx = deployed_ctx(config(false));
    let d = desired_service(&ctx, "frontend", &td_arn("frontend", 1));
    let want = DeploymentAlarms {
        alarm_names: ["cpu-high", "memory-high", "target-5xx", "unhealthy-targets"]
            .iter()
            .map(|w| format!("tap-dev-frontend-{w}"))
            .collect(),
        enable: true,
        rollback: true,
    };
    assert_eq!(d.alarms, Some(want.clone()));
    let processing = desired_service(&ctx, "processing-service", &td_arn("processing-service", 1));
    assert_eq!(processing.alarms.map(|a| a.alarm_names.len()), Some(2));

    // Missing on frontend (drift), in another order on api-gateway (no drift), and the circuit
    // breaker gone on processing-service: each fix sends the whole deployment configuration.
    let mut world = converged_world(&ctx);
    world.services.get_mut("tap-frontend-dev").unwrap().alarms = None;
    world.services.get_mut("tap-api-gateway-dev").unwrap().alarms.as_mut().unwrap().alarm_names.reverse();
    world.services.get_mut("tap-processing-service-dev").unwrap().circuit_breaker = None;
    let sent = Arc::new(Mutex::new(Vec::new()));
    let mut api = read_mock(world);
    let log = sent.clone();
    api.expect_update_service().times(2).returning(move |u| {
        log.lock().unwrap().push(u.clone());
        let ctx = deployed_ctx(config(false));
        let label = u.service.trim_start_matches("tap-").trim_end_matches("-dev").to_owned();
        Ok(observed_from(&desired_service(&ctx, &label, &td_arn(&label, 1))))
    });
    let plan_changes = {
        let mut world = converged_world(&ctx);
        world.services.get_mut("tap-frontend-dev").unwrap().alarms = None;
        world.services.get_mut("tap-processing-service-dev").unwrap().circuit_breaker = None;
        let mut api = read_mock(world);
        no_mutations(&mut api);
        step(api).plan(&ctx).await.unwrap()
    };
    let changes = step(api).apply(&ctx).await.unwrap();
    assert_eq!(changes, plan_changes, "deploy does what plan showed");
    let frontend = changes.iter().find(|c| c.resource == "services/ecs-service/frontend").unwrap();
    assert_eq!(frontend.attributes.len(), 1);
    assert_eq!(frontend.attributes[0].attribute, "deployment_alarms");
    let sent = sent.lock().unwrap().clone();
    let of = |s: &str| sent.iter().find(|u| u.service == format!("tap-{s}-dev")).unwrap().clone();
    let u = of("frontend");
    assert_eq!((u.alarms, u.circuit_breaker), (Some(want), Some(CircuitBreaker { enable: true, rollback: true })));
    let u = of("processing-service");
    assert_eq!(u.circuit_breaker, Some(CircuitBreaker { enable: true, rollback: true }));
    assert_eq!(u.alarms.map(|a| (a.alarm_names.len(), a.enable, a.rollback)), Some((2, true, true)));

    // Alarms disabled: the services stop naming them.
    let mut disabled = config(false);
    disabled.alarms.enabled = false;
    let off_ctx = deployed_ctx(disabled);
    assert_eq!(desired_service(&off_ctx, "frontend", &td_arn("frontend", 1)).alarms, None);
    let mut api = read_mock(converged_world(&ctx));
    api.expect_update_service()
        .withf(|u| u.alarms == Some(DeploymentAlarms::off()) && u.circuit_breaker.is_some())
        .times(3)
        .returning(|u| {
            let ctx = deployed_ctx(config(false));
            let label = u.service.trim_start_matches("tap-").trim_end_matches("-dev").to_owned();
            Ok(observed_from(&desired_service(&ctx, &label, &td_arn(&label, 1))))
        });
    let changes = step(api).apply(&off_ctx).await.unwrap();
    assert_eq!(changes.len(), 3, "{changes:#?}");
    // …and a service with alarms off matches a desire for none.
    let mut world = converged_world(&off_ctx);
    for s in world.services.values_mut() {
        s.alarms = Some(DeploymentAlarms::off());
    }
    let mut api = read_mock(world);
    no_mutations(&mut api);
    assert_eq!(step(api).apply(&off_ctx).await.unwrap(), vec![]);
}
