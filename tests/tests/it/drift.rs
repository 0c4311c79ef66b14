//! Drift: what someone changed by hand in AWS is listed by `plan` (detailed exit code 2, the
//! resource named as an update) and repaired by the next `deploy` (then plan exits 0).
//!
//! One environment is deployed once; each case changes one thing with the SDK, then checks plan,
//! that deploy reports exactly the attributes plan printed (plan == apply), and the repaired
//! setting as AWS reports it: a security group rule added, one removed, a
//! route deleted, a log group's retention changed, a repository's lifecycle policy removed, a target
//! group's health check changed, and a task role's inline policy edited.

use std::collections::BTreeSet;

use aws_sdk_ec2::types::{Filter, IpPermission, IpRange, SecurityGroup, UserIdGroupPair};
use serde_json::Value;
use tests::AwsClients;
use tests::TestEnv;

/// (resource, action) of every change a plan or deploy document lists.
fn changes(doc: &Value) -> BTreeSet<(String, String)> {
    doc["changes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| (c["resource"].as_str().unwrap_or("").to_owned(), c["action"].as_str().unwrap_or("").to_owned()))
        .collect()
}

/// The attributes (name, old, new) a plan or deploy document lists for `resource`.
fn attributes(doc: &Value, resource: &str) -> Vec<(String, Value, Value)> {
    let change = doc["changes"].as_array().into_iter().flatten().find(|c| c["resource"] == resource);
    let attrs = change.and_then(|c| c["attributes"].as_array()).cloned().unwrap_or_default();
    attrs
        .into_iter()
        .map(|a| (a["attribute"].as_str().unwrap_or("").to_owned(), a["old"].clone(), a["new"].clone()))
        .collect()
}

/// Plan lists exactly an update of `resource` (exit code 2); deploy repairs it, reporting exactly
/// the attributes plan printed (plan == apply, attribute by attribute); plan then exits 0.
fn plan_lists_and_deploy_repairs(env: &TestEnv, resource: &str) {
    let plan = env.tap(&["--output", "json", "plan", "--detailed-exitcode"]).expect_code(2).json();
    let expected = BTreeSet::from([(resource.to_owned(), "update".to_owned())]);
    assert_eq!(changes(&plan), expected, "plan lists the drifted resource:\n{plan:#}");
    let planned = attributes(&plan, resource);
    assert!(!planned.is_empty(), "plan names the drifted attributes:\n{plan:#}");
    let text = env.tap(&["plan"]).success();
    assert!(text.stdout.contains(&format!("~ {resource}")), "the text plan shows the update:\n{}", text.stdout);

    let deploy = env.tap(&["--output", "json", "deploy", "--no-wait"]).success().json();
    assert_eq!(changes(&deploy), expected, "deploy repairs exactly the drifted resource:\n{deploy:#}");
    assert_eq!(attributes(&deploy, resource), planned, "deploy changed exactly the attributes plan printed");
    let after = env.tap(&["--output", "json", "plan", "--detailed-exitcode"]);
    assert_eq!(after.code, Some(0), "nothing left to do after the repair:\n{}\n{}", after.stdout, after.stderr);
}

fn tag_filter(key: &str, value: &str) -> Filter {
    Filter::builder().name(format!("tag:{key}")).values(value).build()
}

async fn security_group(clients: &AwsClients, env: &TestEnv, component: &str) -> SecurityGroup {
    let out = clients
        .ec2
        .describe_security_groups()
        .filters(tag_filter("Environment", &env.suffix))
        .filters(tag_filter("tap:component", component))
        .send()
        .await
        .unwrap();
    assert_eq!(out.security_groups().len(), 1, "one security group {component}");
    out.security_groups()[0].clone()
}

fn tcp(port: i32) -> aws_sdk_ec2::types::builders::IpPermissionBuilder {
    IpPermission::builder().ip_protocol("tcp").from_port(port).to_port(port)
}

fn allows_port(group: &SecurityGroup, port: i32) -> bool {
    group.ip_permissions().iter().any(|p| p.from_port() == Some(port) && p.to_port() == Some(port))
}

async fn security_group_rule_added(env: &TestEnv, clients: &AwsClients) {
    let alb = security_group(clients, env, "security/sg/alb").await;
    let ssh = tcp(22).ip_ranges(IpRange::builder().cidr_ip("0.0.0.0/0").build()).build();
    clients
        .ec2
        .authorize_security_group_ingress()
        .group_id(alb.group_id().unwrap())
        .ip_permissions(ssh)
        .send()
        .await
        .unwrap();
    plan_lists_and_deploy_repairs(env, "security/sg/alb");
    let alb = security_group(clients, env, "security/sg/alb").await;
    assert!(!allows_port(&alb, 22), "the added rule is gone: {:?}", alb.ip_permissions());
    assert!(allows_port(&alb, 80) && allows_port(&alb, 443), "the SPEC's rules stay: {:?}", alb.ip_permissions());
}

async fn security_group_rule_removed(env: &TestEnv, clients: &AwsClients) {
    let alb = security_group(clients, env, "security/sg/alb").await;
    let frontend = security_group(clients, env, "security/sg/frontend").await;
    assert!(allows_port(&frontend, 3000));
    let from_alb =
        tcp(3000).user_id_group_pairs(UserIdGroupPair::builder().group_id(alb.group_id().unwrap()).build()).build();
    clients
        .ec2
        .revoke_security_group_ingress()
        .group_id(frontend.group_id().unwrap())
        .ip_permissions(from_alb)
        .send()
        .await
        .unwrap();
    assert!(!allows_port(&security_group(clients, env, "security/sg/frontend").await, 3000));
    plan_lists_and_deploy_repairs(env, "security/sg/frontend");
    let frontend = security_group(clients, env, "security/sg/frontend").await;
    let rule = frontend.ip_permissions().iter().find(|p| p.from_port() == Some(3000)).expect("3000 is allowed again");
    let sources: Vec<_> = rule.user_id_group_pairs().iter().filter_map(|p| p.group_id()).collect();
    assert_eq!(sources, vec![alb.group_id().unwrap()], "from the ALB's security group only");
    assert!(rule.ip_ranges().is_empty(), "and from no CIDR: {rule:?}");
}

async fn route_deleted(env: &TestEnv, clients: &AwsClients) {
    let find = || async {
        let out = clients
            .ec2
            .describe_route_tables()
            .filters(tag_filter("Environment", &env.suffix))
            .filters(tag_filter("tap:component", "network/route-table/private-2"))
            .send()
            .await
            .unwrap();
        assert_eq!(out.route_tables().len(), 1);
        out.route_tables()[0].clone()
    };
    let table = find().await;
    let nat = |t: &aws_sdk_ec2::types::RouteTable| {
        t.routes()
            .iter()
            .find(|r| r.destination_cidr_block() == Some("0.0.0.0/0"))
            .and_then(|r| r.nat_gateway_id().map(str::to_owned))
    };
    let before = nat(&table).expect("the private table routes to its NAT gateway");
    clients
        .ec2
        .delete_route()
        .route_table_id(table.route_table_id().unwrap())
        .destination_cidr_block("0.0.0.0/0")
        .send()
        .await
        .unwrap();
    assert_eq!(nat(&find().await), None);
    plan_lists_and_deploy_repairs(env, "network/route-table/private-2");
    assert_eq!(nat(&find().await), Some(before), "the default route goes to the same NAT gateway again");
}

async fn log_retention_changed(env: &TestEnv, clients: &AwsClients) {
    let name = format!("/ecs/tap-frontend-{}", env.suffix);
    clients.logs.put_retention_policy().log_group_name(&name).retention_in_days(7).send().await.unwrap();
    plan_lists_and_deploy_repairs(env, "services/log-group/frontend");
    let out = clients.logs.describe_log_groups().log_group_name_prefix(&name).send().await.unwrap();
    let group = out.log_groups().iter().find(|g| g.log_group_name() == Some(name.as_str())).unwrap();
    assert_eq!(group.retention_in_days(), Some(30));
}

async fn lifecycle_policy_removed(env: &TestEnv, clients: &AwsClients) {
    let repo = format!("tap-api-gateway-{}", env.suffix);
    let before = clients.ecr.get_lifecycle_policy().repository_name(&repo).send().await.unwrap();
    let before = before.lifecycle_policy_text().unwrap().to_owned();
    clients.ecr.delete_lifecycle_policy().repository_name(&repo).send().await.unwrap();
    assert!(clients.ecr.get_lifecycle_policy().repository_name(&repo).send().await.is_err(), "policy removed");
    plan_lists_and_deploy_repairs(env, "registry/repository/api-gateway");
    let after = clients.ecr.get_lifecycle_policy().repository_name(&repo).send().await.expect("policy restored");
    let json = |s: &str| serde_json::from_str::<Value>(s).unwrap();
    assert_eq!(json(after.lifecycle_policy_text().unwrap()), json(&before), "the same policy: keep the last 10 images");
}

async fn target_group_health_check_changed(env: &TestEnv, clients: &AwsClients) {
    let name = format!("tap-api-{}", env.suffix);
    let find = || async {
        let out = clients.elbv2.describe_target_groups().names(&name).send().await.unwrap();
        out.target_groups()[0].clone()
    };
    let tg = find().await;
    clients
        .elbv2
        .modify_target_group()
        .target_group_arn(tg.target_group_arn().unwrap())
        .health_check_path("/changed")
        .health_check_interval_seconds(10)
        .healthy_threshold_count(5)
        .send()
        .await
        .unwrap();
    plan_lists_and_deploy_repairs(env, "ingress/target-group/api-gateway");
    let tg = find().await;
    assert_eq!(tg.health_check_path(), Some("/health"));
    assert_eq!(tg.health_check_interval_seconds(), Some(30));
    assert_eq!((tg.healthy_threshold_count(), tg.unhealthy_threshold_count()), (Some(2), Some(3)));
}

async fn target_group_deregistration_delay_reset(env: &TestEnv, clients: &AwsClients) {
    let name = format!("tap-fe-{}", env.suffix);
    let out = clients.elbv2.describe_target_groups().names(&name).send().await.unwrap();
    let arn = out.target_groups()[0].target_group_arn().unwrap().to_owned();
    let delay = || async {
        let out = clients.elbv2.describe_target_group_attributes().target_group_arn(&arn).send().await.unwrap();
        let attr = out.attributes().iter().find(|a| a.key() == Some("deregistration_delay.timeout_seconds"));
        attr.and_then(|a| a.value()).map(str::to_owned)
    };
    assert_eq!(delay().await.as_deref(), Some("30"), "deploy set the configured delay");
    let aws_default = aws_sdk_elasticloadbalancingv2::types::TargetGroupAttribute::builder()
        .key("deregistration_delay.timeout_seconds")
        .value("300")
        .build();
    clients.elbv2.modify_target_group_attributes().target_group_arn(&arn).attributes(aws_default).send().await.unwrap();
    plan_lists_and_deploy_repairs(env, "ingress/target-group/frontend");
    assert_eq!(delay().await.as_deref(), Some("30"), "deploy repaired the delay");
}

async fn task_role_policy_edited(env: &TestEnv, clients: &AwsClients) {
    let role = format!("tap-processing-service-task-{}", env.suffix);
    // Every inline policy of the role, name → document.
    let read = || async {
        let names = clients.iam.list_role_policies().role_name(&role).send().await.unwrap();
        let mut docs = std::collections::BTreeMap::new();
        for name in names.policy_names() {
            let out = clients.iam.get_role_policy().role_name(&role).policy_name(name).send().await.unwrap();
            let raw = out.policy_document();
            let doc = serde_json::from_str::<Value>(&percent_decode(raw))
                .or_else(|_| serde_json::from_str::<Value>(raw))
                .unwrap_or_else(|e| panic!("policy {name} of {role} is not JSON ({e}): {raw}"));
            docs.insert(name.clone(), doc);
        }
        docs
    };
    let before = read().await;
    let edited = before.keys().next().expect("the task role has an inline policy").clone();
    let widened = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:*","Resource":"*"}]}"#;
    clients.iam.put_role_policy().role_name(&role).policy_name(&edited).policy_document(widened).send().await.unwrap();
    plan_lists_and_deploy_repairs(env, "security/role/processing-service-task");
    assert_eq!(read().await, before, "the SPEC's policies are back");
}

/// IAM returns policy documents URL-encoded.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn plan_lists_and_deploy_repairs_each_drift() {
    let env = TestEnv::new("drift-e2e");
    let clients = env.clients().await;
    env.tap(&["deploy", "--no-wait"]).success();
    let clean = env.tap(&["plan", "--detailed-exitcode"]);
    assert_eq!(clean.code, Some(0), "a fresh deploy leaves nothing to do:\n{}", clean.stdout);

    security_group_rule_added(&env, &clients).await;
    security_group_rule_removed(&env, &clients).await;
    route_deleted(&env, &clients).await;
    log_retention_changed(&env, &clients).await;
    lifecycle_policy_removed(&env, &clients).await;
    target_group_health_check_changed(&env, &clients).await;
    target_group_deregistration_delay_reset(&env, &clients).await;
    task_role_policy_edited(&env, &clients).await;

    env.inventory().await.assert_spec("after the repairs");
    env.tap(&["destroy", "--yes"]).success();
    env.inventory().await.assert_empty("after destroy");
}
