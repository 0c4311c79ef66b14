//! End-to-end test of the services step (and so of the whole stack, which it depends on): `tap`
//! against moto_server, read back with the AWS SDK. A deploy from empty builds the SPEC platform and
//! converges in one run (moto drops fields on CreateService, tap corrects them right away); the
//! outputs match AWS; `tap status` lists the services; a second deploy makes no mutating call; a new
//! image tag registers exactly one revision per service and updates the services; destroy leaves
//! nothing behind. A tag never pushed is refused on a running environment before any write.

use std::collections::{BTreeMap, BTreeSet};

use aws_sdk_applicationautoscaling::types::{ScalableDimension, ServiceNamespace};
use aws_sdk_ecs::types::{TaskDefinitionField, TaskDefinitionStatus};
use serde_json::Value;
use tap_core::aws::is_mutating;
use tap_core::AwsError;
use tests::{changes_of, proxy, Faults, TestEnv};

const SERVICES: [&str; 3] = ["frontend", "api-gateway", "processing-service"];

/// `tap --output json <args>`, expecting success: the JSON document and the logs (stderr).
fn tap_run(env: &TestEnv, args: &[&str]) -> (Value, String) {
    let mut all = vec!["--output", "json"];
    all.extend_from_slice(args);
    let run = env.tap(&all).success();
    (run.json(), run.stderr)
}

/// Operation → count of a run's calls.
fn calls(doc: &Value) -> BTreeMap<String, u64> {
    doc["calls"]["by_operation"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(op, n)| (op.clone(), n.as_u64().unwrap_or(0)))
        .collect()
}

fn str_set(v: &Value) -> BTreeSet<String> {
    v.as_array().into_iter().flatten().map(|s| s.as_str().unwrap_or_default().to_string()).collect()
}

struct Aws {
    c: tests::AwsClients,
    s: String,
}

impl Aws {
    fn cluster(&self) -> String {
        format!("tap-cluster-{}", self.s)
    }
    fn name(&self, service: &str) -> String {
        format!("tap-{service}-{}", self.s)
    }
    fn rid(&self, service: &str) -> String {
        format!("service/{}/{}", self.cluster(), self.name(service))
    }

    async fn services(&self) -> Vec<aws_sdk_ecs::types::Service> {
        let names: Vec<String> = SERVICES.iter().map(|s| self.name(s)).collect();
        match self.c.ecs.describe_services().cluster(self.cluster()).set_services(Some(names)).send().await {
            Ok(out) => out.services().to_vec(),
            Err(e) => {
                let e = AwsError::from(e);
                assert!(e.is_not_found(), "DescribeServices: {e}");
                vec![]
            }
        }
    }

    async fn service(&self, service: &str) -> aws_sdk_ecs::types::Service {
        let name = self.name(service);
        self.services().await.into_iter().find(|s| s.service_name() == Some(name.as_str())).expect("service exists")
    }

    async fn active_revisions(&self, service: &str) -> Vec<String> {
        let out = self
            .c
            .ecs
            .list_task_definitions()
            .family_prefix(self.name(service))
            .status(TaskDefinitionStatus::Active)
            .send()
            .await
            .unwrap();
        out.task_definition_arns().to_vec()
    }

    async fn task_definition(&self, arn: &str) -> (aws_sdk_ecs::types::TaskDefinition, Vec<(String, String)>) {
        let out = self
            .c
            .ecs
            .describe_task_definition()
            .task_definition(arn)
            .include(TaskDefinitionField::Tags)
            .send()
            .await
            .unwrap();
        let tags = out.tags().iter().map(|t| (t.key().unwrap().to_string(), t.value().unwrap().to_string())).collect();
        (out.task_definition().unwrap().clone(), tags)
    }

    async fn log_groups(&self) -> BTreeMap<String, Option<i32>> {
        let out = self.c.logs.describe_log_groups().log_group_name_prefix("/ecs/tap-").send().await.unwrap();
        out.log_groups()
            .iter()
            .map(|g| (g.log_group_name().unwrap().to_string(), g.retention_in_days()))
            .filter(|(n, _)| n.ends_with(&format!("-{}", self.s)))
            .collect()
    }

    async fn scalable_targets(&self) -> Vec<aws_sdk_applicationautoscaling::types::ScalableTarget> {
        let ids: Vec<String> = SERVICES.iter().map(|s| self.rid(s)).collect();
        let out = self
            .c
            .autoscaling
            .describe_scalable_targets()
            .service_namespace(ServiceNamespace::Ecs)
            .set_resource_ids(Some(ids))
            .send()
            .await
            .unwrap();
        out.scalable_targets().to_vec()
    }

    async fn policies(&self, service: &str) -> Vec<aws_sdk_applicationautoscaling::types::ScalingPolicy> {
        let out = self
            .c
            .autoscaling
            .describe_scaling_policies()
            .service_namespace(ServiceNamespace::Ecs)
            .resource_id(self.rid(service))
            .send()
            .await
            .unwrap();
        out.scaling_policies().iter().filter(|p| p.resource_id() == self.rid(service)).cloned().collect()
    }

    async fn security_group(&self, name: &str) -> String {
        let out = self
            .c
            .ec2
            .describe_security_groups()
            .filters(aws_sdk_ec2::types::Filter::builder().name("group-name").values(name).build())
            .send()
            .await
            .unwrap();
        assert_eq!(out.security_groups().len(), 1, "one security group {name}");
        out.security_groups()[0].group_id().unwrap().to_string()
    }

    async fn target_group_arn(&self, name: &str) -> String {
        let out = self.c.elbv2.describe_target_groups().names(name).send().await.unwrap();
        out.target_groups()[0].target_group_arn().unwrap().to_string()
    }

    async fn secret_arn(&self, logical: &str) -> String {
        let out = self.c.secrets.describe_secret().secret_id(format!("tap-{logical}-{}", self.s)).send().await.unwrap();
        out.arn().unwrap().to_string()
    }

    async fn role_arn(&self, name: &str) -> String {
        let out = self.c.iam.get_role().role_name(name).send().await.unwrap();
        out.role().unwrap().arn().to_string()
    }
}

/// The services of the SPEC as AWS holds them right after a deploy with image tag `tag` and
/// task-definition revision `revision`.
async fn assert_services_are_the_spec(aws: &Aws, outputs: &Value, tag: &str, revision: i32) {
    let s = &aws.s;
    let private: BTreeSet<String> = str_set(&outputs["privateSubnetIds"]);
    let alb_dns = outputs["albDnsName"].as_str().unwrap();
    let db_secret = aws.secret_arn("db-credentials").await;
    let keys_secret = aws.secret_arn("api-keys").await;
    let execution_role = aws.role_arn(&format!("tap-task-execution-{s}")).await;

    let log_groups = aws.log_groups().await;
    assert_eq!(log_groups.len(), 3, "{log_groups:?}");
    for svc in SERVICES {
        assert_eq!(log_groups.get(&format!("/ecs/tap-{svc}-{s}")), Some(&Some(30)), "log group of {svc}");
    }

    for svc in SERVICES {
        let name = aws.name(svc);
        let ecs = aws.service(svc).await;
        assert_eq!(ecs.status(), Some("ACTIVE"), "{svc}");
        assert_eq!(ecs.desired_count(), 2, "{svc}");
        let mut strategy: Vec<(String, i32, i32)> = ecs
            .capacity_provider_strategy()
            .iter()
            .map(|i| (i.capacity_provider().to_string(), i.base(), i.weight()))
            .collect();
        strategy.sort();
        assert_eq!(strategy, vec![("FARGATE".into(), 1, 1), ("FARGATE_SPOT".into(), 0, 4)], "{svc}");
        let cb = ecs.deployment_configuration().and_then(|d| d.deployment_circuit_breaker()).expect("circuit breaker");
        assert!(cb.enable() && cb.rollback(), "{svc}");
        let vpc = ecs.network_configuration().and_then(|n| n.awsvpc_configuration()).expect("awsvpc configuration");
        assert_eq!(
            vpc.subnets().iter().cloned().collect::<BTreeSet<_>>(),
            private,
            "{svc} runs in the private subnets"
        );
        assert_eq!(vpc.security_groups(), [aws.security_group(&format!("tap-{svc}-sg-{s}")).await], "{svc}");
        assert_eq!(vpc.assign_public_ip().map(|a| a.as_str()), Some("DISABLED"), "{svc}");
        let tags = aws.c.ecs.list_tags_for_resource().resource_arn(ecs.service_arn().unwrap()).send().await.unwrap();
        for (k, v) in [("Environment", s.as_str()), ("Name", name.as_str()), ("ManagedBy", "tap")] {
            assert!(tags.tags().iter().any(|t| t.key() == Some(k) && t.value() == Some(v)), "{svc}: tag {k}={v}");
        }
        match svc {
            "processing-service" => {
                assert!(ecs.load_balancers().is_empty());
                let registries: Vec<&str> = ecs.service_registries().iter().filter_map(|r| r.registry_arn()).collect();
                assert_eq!(registries.len(), 1, "processing is registered in Cloud Map");
                assert!(registries[0].contains(":servicediscovery:"), "{registries:?}");
            }
            _ => {
                assert_eq!(ecs.health_check_grace_period_seconds(), Some(60), "{svc}");
                let short = if svc == "frontend" { "fe" } else { "api" };
                let lb = &ecs.load_balancers()[0];
                assert_eq!(lb.target_group_arn().unwrap(), aws.target_group_arn(&format!("tap-{short}-{s}")).await);
                assert_eq!(lb.container_name(), Some(svc));
            }
        }

        // The service runs the newest revision, which is exactly the SPEC's definition.
        let revisions = aws.active_revisions(svc).await;
        let current = ecs.task_definition().unwrap().to_string();
        assert!(current.ends_with(&format!("/{name}:{revision}")), "{svc} runs {current}");
        let (td, tags) = aws.task_definition(&current).await;
        assert!(revisions.contains(&current));
        assert!(tags.contains(&("Environment".to_string(), s.clone())), "{tags:?}");
        let (cpu, memory, port) = match svc {
            "frontend" => ("512", "1024", 3000),
            "api-gateway" => ("1024", "2048", 8080),
            _ => ("2048", "4096", 9000),
        };
        assert_eq!((td.cpu(), td.memory()), (Some(cpu), Some(memory)), "{svc}");
        assert_eq!(td.network_mode().map(|m| m.as_str()), Some("awsvpc"));
        assert_eq!(td.requires_compatibilities().iter().map(|c| c.as_str()).collect::<Vec<_>>(), ["FARGATE"]);
        assert_eq!(td.execution_role_arn(), Some(execution_role.as_str()));
        assert_eq!(td.task_role_arn().unwrap(), aws.role_arn(&format!("tap-{svc}-task-{s}")).await);
        let containers = td.container_definitions();
        assert_eq!(containers.len(), 1);
        let c = &containers[0];
        assert_eq!(c.name(), Some(svc));
        let repo = format!("{}:{tag}", outputs[repo_key(svc)].as_str().unwrap());
        assert_eq!(c.image(), Some(repo.as_str()));
        assert_eq!(c.essential(), Some(true));
        assert_eq!(c.port_mappings()[0].container_port(), Some(port));
        let env: BTreeMap<&str, &str> =
            c.environment().iter().map(|kv| (kv.name().unwrap(), kv.value().unwrap())).collect();
        let secrets: BTreeMap<&str, &str> = c.secrets().iter().map(|x| (x.name(), x.value_from())).collect();
        let api_endpoint = format!("http://{alb_dns}/api");
        let processing_url = format!("http://processing-service.tap-{s}.local:9000");
        match svc {
            "frontend" => {
                assert_eq!(env, BTreeMap::from([("NODE_ENV", "production"), ("API_ENDPOINT", api_endpoint.as_str())]));
                assert!(secrets.is_empty());
            }
            "api-gateway" => {
                assert_eq!(env, BTreeMap::from([("PROCESSING_SERVICE_URL", processing_url.as_str())]));
                assert_eq!(
                    secrets,
                    BTreeMap::from([("DB_CREDENTIALS", db_secret.as_str()), ("API_KEYS", keys_secret.as_str())])
                );
            }
            _ => {
                assert_eq!(env, BTreeMap::from([("WORKER_THREADS", "4")]));
                assert_eq!(secrets, BTreeMap::from([("DB_CREDENTIALS", db_secret.as_str())]));
            }
        }
        let log = c.log_configuration().expect("log configuration");
        assert_eq!(log.log_driver().as_str(), "awslogs");
        let options = log.options().unwrap();
        assert_eq!(options["awslogs-group"], format!("/ecs/tap-{svc}-{s}"));
        assert_eq!(options["awslogs-region"], aws.c.session.region().unwrap());
        assert_eq!(options["awslogs-stream-prefix"], svc);

        // Auto scaling.
        let policies = aws.policies(svc).await;
        assert_eq!(policies.len(), 1, "{svc}");
        let p = &policies[0];
        assert_eq!(p.policy_name(), format!("tap-cpu-{svc}-{s}"));
        assert_eq!(p.policy_type().as_str(), "TargetTrackingScaling");
        let tt = p.target_tracking_scaling_policy_configuration().unwrap();
        assert_eq!(tt.target_value(), 70.0);
        assert_eq!((tt.scale_in_cooldown(), tt.scale_out_cooldown()), (Some(60), Some(60)));
        assert_eq!(
            tt.predefined_metric_specification().map(|m| m.predefined_metric_type().as_str()),
            Some("ECSServiceAverageCPUUtilization")
        );
    }
    let targets = aws.scalable_targets().await;
    assert_eq!(targets.len(), 3);
    for t in &targets {
        assert_eq!(t.scalable_dimension(), &ScalableDimension::EcsServiceDesiredCount);
        assert_eq!((t.min_capacity(), t.max_capacity()), (2, 10), "{}", t.resource_id());
    }
}

fn repo_key(service: &str) -> &'static str {
    match service {
        "frontend" => "frontendEcrUrl",
        "api-gateway" => "apiGatewayEcrUrl",
        _ => "processingServiceEcrUrl",
    }
}

/// Every stack output equals what AWS reports.
async fn assert_outputs_match_aws(aws: &Aws, outputs: &Value) {
    let s = &aws.s;
    let keys: BTreeSet<&str> = outputs.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, BTreeSet::from(tests::SPEC_OUTPUT_KEYS));
    let c = &aws.c;
    let vpcs = c
        .ec2
        .describe_vpcs()
        .filters(aws_sdk_ec2::types::Filter::builder().name("tag:Environment").values(s).build())
        .send()
        .await
        .unwrap();
    assert_eq!(vpcs.vpcs().len(), 1);
    let vpc_id = vpcs.vpcs()[0].vpc_id().unwrap();
    assert_eq!(outputs["vpcId"], vpc_id);

    let subnets = c
        .ec2
        .describe_subnets()
        .filters(aws_sdk_ec2::types::Filter::builder().name("vpc-id").values(vpc_id).build())
        .send()
        .await
        .unwrap();
    let by_cidr: BTreeMap<String, String> = subnets
        .subnets()
        .iter()
        .map(|sn| (sn.cidr_block().unwrap().to_string(), sn.subnet_id().unwrap().to_string()))
        .collect();
    let ids = |cidrs: &[&str]| cidrs.iter().map(|c| by_cidr[*c].clone()).collect::<BTreeSet<_>>();
    assert_eq!(str_set(&outputs["publicSubnetIds"]), ids(&["10.0.0.0/24", "10.0.1.0/24", "10.0.2.0/24"]));
    assert_eq!(str_set(&outputs["privateSubnetIds"]), ids(&["10.0.10.0/24", "10.0.11.0/24", "10.0.12.0/24"]));

    let lbs = c.elbv2.describe_load_balancers().names(format!("tap-alb-{s}")).send().await.unwrap();
    assert_eq!(outputs["albDnsName"], lbs.load_balancers()[0].dns_name().unwrap());

    let clusters = c.ecs.describe_clusters().clusters(aws.cluster()).send().await.unwrap();
    let cluster = &clusters.clusters()[0];
    assert_eq!(outputs["clusterName"], cluster.cluster_name().unwrap());
    assert_eq!(outputs["clusterArn"], cluster.cluster_arn().unwrap());

    for (svc, key) in [
        ("frontend", "frontendServiceArn"),
        ("api-gateway", "apiGatewayServiceArn"),
        ("processing-service", "processingServiceArn"),
    ] {
        assert_eq!(outputs[key], aws.service(svc).await.service_arn().unwrap(), "{key}");
        let repos = c.ecr.describe_repositories().repository_names(aws.name(svc)).send().await.unwrap();
        assert_eq!(outputs[repo_key(svc)], repos.repositories()[0].repository_uri().unwrap(), "{svc}");
    }
}

#[tokio::test]
async fn services_deploy_converges_in_one_run_is_idempotent_rolls_new_images_and_destroys() {
    let env = TestEnv::new("svc");
    let aws = Aws { c: env.clients().await, s: env.suffix.clone() };

    // Plan from empty: every services resource is a create, nothing is touched.
    let (plan, _) = tap_run(&env, &["plan"]);
    assert_eq!(plan["calls"]["mutating"], 0, "{:?}", tests::mutating_calls(&plan));
    let planned = changes_of(&plan, "services");
    assert_eq!(planned.len(), 15, "{planned:?}");
    assert!(planned.iter().all(|(_, a)| a == "create"));

    // Deploy from empty builds the whole stack, converging the ECS services in the same run.
    let (first, logs) = tap_run(&env, &["deploy", "--no-wait"]);
    assert_eq!(changes_of(&first, "services"), planned, "deploy does what plan showed");
    let ops = calls(&first);
    assert_eq!(ops.get("ECS:RegisterTaskDefinition"), Some(&3), "{ops:?}");
    assert_eq!(ops.get("ECS:CreateService"), Some(&3));
    // moto's CreateService drops the strategy, grace period and deployment configuration: one
    // UpdateService per service sets them in the same run.
    assert_eq!(ops.get("ECS:UpdateService"), Some(&3), "{ops:?}");
    assert!(
        logs.contains("is not in ECR") && logs.contains("docker push") && logs.contains("get-login-password"),
        "missing images are reported with how to push them:\n{logs}"
    );
    let (outputs, _) = tap_run(&env, &["outputs"]);
    assert_outputs_match_aws(&aws, &outputs).await;
    assert_services_are_the_spec(&aws, &outputs, "latest", 1).await;

    // Status lists the three services, as JSON and as text.
    let (status, _) = tap_run(&env, &["status"]);
    assert_eq!(status["environment"], env.suffix);
    let listed: Vec<&str> =
        status["services"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(listed, SERVICES);
    for s in status["services"].as_array().unwrap() {
        assert_eq!(s["status"], "ACTIVE");
        assert_eq!(s["desired"], 2);
        assert_eq!(s["revision"], 1);
    }
    assert!(status["services"][0]["target_health"].is_object(), "routed services show target health");
    let text = env.tap(&["status"]).success().stdout;
    for svc in SERVICES {
        assert!(text.contains(svc), "{text}");
    }

    // A second deploy changes nothing: no revision, no mutating call at all.
    let (second, _) = tap_run(&env, &["deploy", "--no-wait"]);
    assert_eq!(
        second["calls"]["mutating"],
        0,
        "second deploy makes no mutating call: {:?}",
        tests::mutating_calls(&second)
    );
    assert_eq!(changes_of(&second, "services"), vec![]);
    for svc in SERVICES {
        assert_eq!(aws.active_revisions(svc).await.len(), 1, "{svc}");
    }

    // A new image tag, pushed: exactly one new revision per service, and the services move to it.
    env.push_image(&SERVICES, "v2").await;
    let (third, _) = tap_run(&env, &["deploy", "--no-wait", "--image-tag", "v2"]);
    let mutations = tests::mutating_calls(&third);
    assert_eq!(mutations.get("ECS:RegisterTaskDefinition"), Some(&3), "{mutations:?}");
    assert_eq!(mutations.get("ECS:UpdateService"), Some(&3), "{mutations:?}");
    assert_eq!(mutations.values().sum::<u64>(), 6, "nothing else changes: {mutations:?}");
    for svc in SERVICES {
        assert_eq!(aws.active_revisions(svc).await.len(), 2, "{svc}");
        assert_eq!(aws.service(svc).await.desired_count(), 2, "the desired count is left to auto scaling");
    }
    assert_services_are_the_spec(&aws, &outputs, "v2", 2).await;
    let (again, _) = tap_run(&env, &["deploy", "--no-wait", "--image-tag", "v2"]);
    assert_eq!(again["calls"]["mutating"], 0, "{:?}", tests::mutating_calls(&again));

    // Destroy leaves nothing of the services behind.
    let (destroyed, _) = tap_run(&env, &["destroy", "--yes"]);
    let removed = changes_of(&destroyed, "services");
    assert!(removed.iter().all(|(_, a)| a == "delete"), "{removed:?}");
    assert!(removed.iter().any(|(r, _)| r == "services/ecs-service/frontend"), "{removed:?}");
    assert!(aws.services().await.iter().all(|s| s.status() != Some("ACTIVE")), "no service is ACTIVE");
    assert_eq!(aws.log_groups().await, BTreeMap::new(), "no log group");
    for svc in SERVICES {
        assert_eq!(aws.active_revisions(svc).await, Vec::<String>::new(), "no ACTIVE task definition of {svc}");
        assert!(aws.policies(svc).await.is_empty(), "no scaling policy of {svc}");
    }
    assert!(aws.scalable_targets().await.is_empty(), "no scalable target");

    // Status still answers: no service is ACTIVE any more.
    let (status, _) = tap_run(&env, &["status"]);
    assert!(status["services"].as_array().unwrap().iter().all(|s| s["status"] != "ACTIVE"), "{status}");

    // Destroying again is a no-op.
    let (again, _) = tap_run(&env, &["destroy", "--yes"]);
    assert_eq!(changes_of(&again, "services"), vec![]);
}

#[tokio::test]
async fn a_running_service_is_never_moved_to_an_image_its_repository_does_not_have() {
    let env = TestEnv::new("svc-image");
    // A first deploy into new, empty repositories creates the services and says how to push.
    let (first, logs) = tap_run(&env, &["deploy", "--no-wait"]);
    assert!(changes_of(&first, "services")
        .iter()
        .any(|(r, a)| r == "services/ecs-service/api-gateway" && a == "create"));
    assert!(logs.contains("is not in ECR") && logs.contains("docker push"), "{logs}");
    env.push_image(&SERVICES, "v1").await;
    env.push_image(&SERVICES, "v2").await;
    tap_run(&env, &["deploy", "--no-wait", "--image-tag", "v2"]);

    let wire = proxy(Faults::default());
    let through = env.with_endpoint(&wire.endpoint());
    let ops_since =
        |before: usize| -> Vec<String> { wire.calls()[before..].iter().map(|c| c.operation.clone()).collect() };

    // Nothing moves: the repositories are not asked for any image.
    let before = wire.calls().len();
    through.tap(&["deploy", "--no-wait", "--image-tag", "v2"]).success();
    let seen = ops_since(before);
    assert!(!seen.iter().any(|op| op == "DescribeImages"), "a no-op deploy asks no repository: {seen:?}");
    assert!(!seen.iter().any(|op| is_mutating(op)), "{seen:?}");

    // A tag never pushed: plan marks each running service, and says so in its exit code.
    let plan = through.tap(&["plan", "--image-tag", "v9", "--detailed-exitcode"]).expect_code(2);
    for s in SERVICES {
        let line = format!("! services/image/{s}: tap-{s}-svc-image:v9 is not in the repository (it has: v2, v1)");
        assert!(plan.stdout.contains(&line), "{line} in\n{}", plan.stdout);
    }
    assert!(plan.stdout.contains("3 refused (!)"), "{}", plan.stdout);
    let doc = through.tap(&["--output", "json", "plan", "--image-tag", "v9"]).success().json();
    let refused: Vec<&Value> = doc["changes"].as_array().unwrap().iter().filter(|c| c["action"] == "refuse").collect();
    assert_eq!(refused.len(), 3, "{doc}");
    assert_eq!(refused[0]["resource"], "services/image/frontend");
    assert_eq!(refused[0]["name"], "tap-frontend-svc-image:v9");
    assert_eq!(refused[0]["reason"], "tap-frontend-svc-image:v9 is not in the repository (it has: v2, v1)");
    assert_eq!(doc["summary"]["refuse"], 3);

    // Deploy refuses before the lock and before any write, naming the services, the tag and the
    // tags the repositories have, and how to override.
    let before = wire.calls().len();
    let refused = through.tap(&["deploy", "--image-tag", "v9"]).expect_code(1);
    let seen = ops_since(before);
    let writes: Vec<&String> = seen.iter().filter(|op| is_mutating(op)).collect();
    assert_eq!(writes, Vec::<&String>::new(), "no mutating call on the wire, the lock included: {seen:?}");
    let listings = seen.iter().filter(|op| *op == "DescribeImages").count();
    assert_eq!(listings, 6, "per service, the tag asked for, then the repository listed once: {seen:?}");
    assert!(refused.stderr.contains("error: deploy refused before any change (3 refusals)"), "{}", refused.stderr);
    for s in SERVICES {
        let named = format!("{s} runs and would move to an image its repository does not have: tap-{s}-svc-image:v9");
        assert!(refused.stderr.contains(&named), "{named} in\n{}", refused.stderr);
    }
    assert!(refused.stderr.contains("(it has: v2, v1)"), "{}", refused.stderr);
    assert!(refused.stderr.contains("--allow-missing-image"), "{}", refused.stderr);
    let clients = env.clients().await;
    for s in SERVICES {
        let family = format!("tap-{s}-svc-image");
        let td = clients.ecs.describe_task_definition().task_definition(&family).send().await.unwrap();
        let image = td.task_definition().unwrap().container_definitions()[0].image().unwrap_or_default().to_string();
        assert!(image.ends_with(":v2"), "{family} still runs v2: {image}");
    }

    // The override keeps the old behaviour: the services move, with a warning.
    let (moved, logs) = tap_run(&through, &["deploy", "--no-wait", "--image-tag", "v9", "--allow-missing-image"]);
    assert_eq!(
        tests::mutating_calls(&moved).get("ECS:RegisterTaskDefinition"),
        Some(&3),
        "{:?}",
        tests::mutating_calls(&moved)
    );
    assert!(logs.contains("is not in ECR") && logs.contains("anyway"), "{logs}");
    assert!(changes_of(&moved, "services").iter().all(|(_, a)| a != "refuse"), "{:?}", changes_of(&moved, "services"));

    env.tap(&["destroy", "--yes"]).success();
}
