//! End-to-end test of the security step: `tap deploy` against moto_server, read back with the AWS
//! SDK (security group rules, IAM roles and policies, secrets), drift repair, secrets kept across
//! deploys, and a destroy that leaves nothing of the environment behind.

use std::collections::{BTreeMap, BTreeSet};

use aws_sdk_ec2::types::{Filter, IpPermission, IpRange};
use serde_json::{json, Value};
use tests::services_toml::{API_GATEWAY, FRONTEND, PROCESSING};
use tests::TestEnv;

const SERVICES: [&str; 3] = ["frontend", "api-gateway", "processing-service"];
const MANAGED: &str = "arn:aws:iam::aws:policy/service-role/AmazonECSTaskExecutionRolePolicy";

/// The mutating operations the security step makes.
const SECURITY_MUTATIONS: &[&str] = &[
    "CreateSecurityGroup",
    "AuthorizeSecurityGroupIngress",
    "RevokeSecurityGroupIngress",
    "AuthorizeSecurityGroupEgress",
    "RevokeSecurityGroupEgress",
    "CreateRole",
    "UpdateAssumeRolePolicy",
    "AttachRolePolicy",
    "DetachRolePolicy",
    "PutRolePolicy",
    "DeleteRolePolicy",
    "CreateSecret",
    "RestoreSecret",
    "PutSecretValue",
    "UpdateSecret",
];

fn tap_json(env: &TestEnv, args: &[&str]) -> Value {
    tap_run(env, args).0
}

/// `tap --output json <args>`: the JSON document and the log output (stderr).
fn tap_run(env: &TestEnv, args: &[&str]) -> (Value, String) {
    let mut all = vec!["--output", "json"];
    all.extend_from_slice(args);
    let run = env.tap(&all).success();
    (run.json(), run.stderr)
}

/// (resource, action) of the security step's changes.
fn security_changes(doc: &Value) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = doc["changes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["step"] == "security")
        .map(|c| {
            (
                c["resource"].as_str().unwrap_or_default().to_string(),
                c["action"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    v.sort();
    v
}

fn security_mutations(doc: &Value) -> Vec<(String, u64)> {
    doc["calls"]["by_operation"]
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(op, _)| SECURITY_MUTATIONS.contains(&op.rsplit(':').next().unwrap_or(op)))
        .map(|(op, n)| (op.clone(), n.as_u64().unwrap_or(0)))
        .collect()
}

/// IAM returns policy documents URL-encoded.
fn decode_policy(raw: &str) -> Value {
    let bytes = raw.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            out.push(u8::from_str_radix(&raw[i + 1..i + 3], 16).unwrap());
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    serde_json::from_slice(&out).unwrap_or_else(|e| panic!("policy is not JSON ({e}): {raw}"))
}

/// A list whatever IAM gave back (a single string or a list), sorted.
fn list(v: &Value) -> Vec<String> {
    let mut items: Vec<String> = match v {
        Value::Array(a) => a.iter().map(|x| x.as_str().unwrap().to_string()).collect(),
        Value::String(s) => vec![s.clone()],
        other => panic!("not a string or list: {other}"),
    };
    items.sort();
    items
}

fn statements(policy: &Value) -> Vec<Value> {
    match &policy["Statement"] {
        Value::Array(a) => a.clone(),
        single => vec![single.clone()],
    }
}

fn assert_no_wildcard_action(policy: &Value) {
    for s in statements(policy) {
        assert!(!list(&s["Action"]).contains(&"*".to_string()), "Action * in {policy}");
    }
}

/// Security group name → (id, ingress rules, egress rules); a rule is `proto from-to peer`.
async fn groups(env: &TestEnv) -> BTreeMap<String, (String, BTreeSet<String>, BTreeSet<String>)> {
    let clients = env.clients().await;
    let out = clients
        .ec2
        .describe_security_groups()
        .filters(Filter::builder().name("tag:Environment").values(&env.suffix).build())
        .send()
        .await
        .unwrap();
    let rules = |perms: &[IpPermission]| {
        let mut set = BTreeSet::new();
        for p in perms {
            let ports = match p.ip_protocol() {
                Some("-1") => "all".to_string(),
                proto => {
                    format!("{} {}-{}", proto.unwrap_or("?"), p.from_port().unwrap_or(-1), p.to_port().unwrap_or(-1))
                }
            };
            for r in p.ip_ranges() {
                set.insert(format!("{ports} {}", r.cidr_ip().unwrap()));
            }
            for r in p.ipv6_ranges() {
                set.insert(format!("{ports} {}", r.cidr_ipv6().unwrap()));
            }
            for g in p.user_id_group_pairs() {
                set.insert(format!("{ports} {}", g.group_id().unwrap()));
            }
        }
        set
    };
    out.security_groups()
        .iter()
        .map(|g| {
            (
                g.group_name().unwrap().to_string(),
                (g.group_id().unwrap().to_string(), rules(g.ip_permissions()), rules(g.ip_permissions_egress())),
            )
        })
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

async fn secret_values(env: &TestEnv) -> BTreeMap<String, Value> {
    let clients = env.clients().await;
    let mut out = BTreeMap::new();
    for logical in ["db-credentials", "api-keys"] {
        let name = format!("tap-{logical}-{}", env.suffix);
        let v = clients.secrets.get_secret_value().secret_id(&name).send().await.unwrap();
        out.insert(logical.to_string(), serde_json::from_str(v.secret_string().unwrap()).unwrap());
    }
    out
}

#[tokio::test]
async fn security_step_converges_keeps_secrets_and_destroys() {
    let env = TestEnv::new("sec-e2e");
    let s = env.suffix.clone();

    // First deploy creates the 4 groups, 4 roles, 2 secrets and the execution role's inline
    // policy naming them (a resource of its own: it follows the secrets).
    let (first, first_logs) = tap_run(&env, &["deploy", "--no-wait"]);
    let created = security_changes(&first);
    assert_eq!(created.len(), 11, "{created:?}");
    assert!(created.iter().any(|(id, _)| id == "security/role/task-execution/read-secrets"), "{created:?}");
    assert!(created.iter().all(|(_, a)| a == "create"), "{created:?}");

    // Security groups: exactly the SPEC's rules.
    let sgs = groups(&env).await;
    let id = |name: &str| {
        sgs.get(&format!("tap-{name}-sg-{s}")).unwrap_or_else(|| panic!("no group {name}: {sgs:?}")).0.clone()
    };
    let (alb, frontend, api, processing) = (id("alb"), id("frontend"), id("api-gateway"), id("processing-service"));
    let expect = [
        ("alb", set(&["tcp 80-80 0.0.0.0/0", "tcp 443-443 0.0.0.0/0"])),
        ("frontend", set(&[&format!("tcp 3000-3000 {alb}")])),
        ("api-gateway", set(&[&format!("tcp 8080-8080 {alb}")])),
        ("processing-service", set(&[&format!("tcp 9000-9000 {api}")])),
    ];
    for (name, ingress) in &expect {
        let (_, have_in, have_out) = &sgs[&format!("tap-{name}-sg-{s}")];
        assert_eq!(have_in, ingress, "ingress of {name}");
        assert_eq!(have_out, &set(&["all 0.0.0.0/0"]), "egress of {name}");
    }
    assert_ne!(frontend, processing);

    // Secrets: JSON with the right keys, generated values.
    let clients = env.clients().await;
    let values = secret_values(&env).await;
    assert_eq!(values["db-credentials"]["username"], "tap_admin");
    let password = values["db-credentials"]["password"].as_str().unwrap();
    assert_eq!(password.len(), 32);
    assert!(!password.contains(['@', '/', ':', '"', '\'', '\\', '?', '#', '%', ' ']), "{password}");
    assert_eq!(values["db-credentials"].as_object().unwrap().len(), 2);
    assert_eq!(values["api-keys"].as_object().unwrap().keys().collect::<Vec<_>>(), vec!["api_key"]);
    assert_eq!(values["api-keys"]["api_key"].as_str().unwrap().len(), 32);
    let mut secret_arns = Vec::new();
    for logical in ["db-credentials", "api-keys"] {
        let d = clients.secrets.describe_secret().secret_id(format!("tap-{logical}-{s}")).send().await.unwrap();
        assert!(d.tags().iter().any(|t| t.key() == Some("Environment") && t.value() == Some(s.as_str())));
        secret_arns.push(d.arn().unwrap().to_string());
    }
    secret_arns.sort();

    // Roles: trust, managed attachment, inline policies.
    let trust_of = |doc: &Value| {
        let st = statements(doc);
        assert_eq!(st.len(), 1, "{doc}");
        (list(&st[0]["Principal"]["Service"]), list(&st[0]["Action"]))
    };
    let role = |name: String| {
        let iam = clients.iam.clone();
        async move {
            let r = iam.get_role().role_name(&name).send().await.unwrap_or_else(|e| panic!("GetRole {name}: {e:?}"));
            let r = r.role().unwrap().clone();
            let attached: Vec<String> = iam
                .list_attached_role_policies()
                .role_name(&name)
                .send()
                .await
                .unwrap()
                .attached_policies()
                .iter()
                .map(|p| p.policy_arn().unwrap().to_string())
                .collect();
            let mut inline = BTreeMap::new();
            for p in iam.list_role_policies().role_name(&name).send().await.unwrap().policy_names() {
                let doc = iam.get_role_policy().role_name(&name).policy_name(p).send().await.unwrap();
                inline.insert(p.clone(), decode_policy(doc.policy_document()));
            }
            (r, attached, inline)
        }
    };
    let (exec, exec_attached, exec_inline) = role(format!("tap-task-execution-{s}")).await;
    assert_eq!(
        trust_of(&decode_policy(exec.assume_role_policy_document().unwrap())),
        (vec!["ecs-tasks.amazonaws.com".to_string()], vec!["sts:AssumeRole".to_string()])
    );
    assert!(exec.tags().iter().any(|t| t.key() == "Environment" && t.value() == s));
    assert_eq!(exec_attached, vec![MANAGED.to_string()]);
    assert_eq!(exec_inline.keys().collect::<Vec<_>>(), vec!["read-secrets"]);
    let read = statements(&exec_inline["read-secrets"]);
    assert_eq!(read.len(), 1);
    assert_eq!(list(&read[0]["Action"]), vec!["secretsmanager:GetSecretValue"]);
    assert_eq!(list(&read[0]["Resource"]), secret_arns, "exactly the two secret ARNs");
    assert_no_wildcard_action(&exec_inline["read-secrets"]);

    let account = exec.arn().split(':').nth(4).unwrap().to_string();
    for service in SERVICES {
        let (r, attached, inline) = role(format!("tap-{service}-task-{s}")).await;
        assert_eq!(
            trust_of(&decode_policy(r.assume_role_policy_document().unwrap())).0,
            vec!["ecs-tasks.amazonaws.com".to_string()]
        );
        assert!(attached.is_empty(), "{service}: {attached:?}");
        assert_eq!(inline.keys().collect::<Vec<_>>(), vec!["task-permissions"], "{service}");
        let doc = &inline["task-permissions"];
        assert_no_wildcard_action(doc);
        let st = statements(doc);
        assert_eq!(list(&st[0]["Action"]), vec!["logs:CreateLogStream", "logs:PutLogEvents"]);
        assert_eq!(
            list(&st[0]["Resource"]),
            vec![format!("arn:aws:logs:{}:{account}:log-group:/ecs/tap-{service}-{s}:*", env.region)]
        );
        match service {
            "frontend" => assert_eq!(st.len(), 1),
            "api-gateway" => {
                assert_eq!(st.len(), 2);
                assert_eq!(list(&st[1]["Action"]), vec!["servicediscovery:DiscoverInstances"]);
                assert_eq!(list(&st[1]["Resource"]), vec!["*"]);
                assert_eq!(
                    list(&st[1]["Condition"]["StringEquals"]["servicediscovery:NamespaceName"]),
                    vec![format!("tap-{s}.local")]
                );
            }
            _ => {
                assert_eq!(st.len(), 3);
                assert_eq!(list(&st[1]["Action"]), vec!["s3:DeleteObject", "s3:GetObject", "s3:PutObject"]);
                assert_eq!(list(&st[1]["Resource"]), vec![format!("arn:aws:s3:::tap-trade-data-{s}/*")]);
                assert_eq!(
                    st[2],
                    json!({"Sid": "TradeDataList", "Effect": "Allow", "Action": ["s3:ListBucket"], "Resource": [format!("arn:aws:s3:::tap-trade-data-{s}")]})
                );
            }
        }
    }

    // Drift: someone opens SSH on the frontend group; the next deploy revokes exactly that.
    clients
        .ec2
        .authorize_security_group_ingress()
        .group_id(&frontend)
        .ip_permissions(
            IpPermission::builder()
                .ip_protocol("tcp")
                .from_port(22)
                .to_port(22)
                .ip_ranges(IpRange::builder().cidr_ip("0.0.0.0/0").build())
                .build(),
        )
        .send()
        .await
        .unwrap();
    assert!(groups(&env).await[&format!("tap-frontend-sg-{s}")].1.contains("tcp 22-22 0.0.0.0/0"));
    let (second, second_logs) = tap_run(&env, &["deploy", "--no-wait"]);
    assert_eq!(security_changes(&second), vec![("security/sg/frontend".to_string(), "update".to_string())]);
    assert_eq!(groups(&env).await[&format!("tap-frontend-sg-{s}")].1, set(&[&format!("tcp 3000-3000 {alb}")]));

    // Secrets are never regenerated or rewritten.
    assert_eq!(secret_values(&env).await, values, "secret values changed across deploys");
    let stdout_and_logs = format!("{first}{first_logs}{second}{second_logs}");
    assert!(!stdout_and_logs.contains(password), "a secret value was printed");

    // A third deploy changes nothing of the security step.
    let third = tap_json(&env, &["deploy", "--no-wait"]);
    assert_eq!(security_changes(&third), vec![]);
    assert_eq!(security_mutations(&third), vec![], "security mutating calls on a converged environment");
    assert_eq!(secret_values(&env).await, values);

    // Destroy leaves no group, role or secret of the environment.
    let destroyed = tap_json(&env, &["destroy", "--yes"]);
    let deleted = security_changes(&destroyed);
    assert_eq!(deleted.len(), 10, "{deleted:?}");
    assert!(deleted.iter().all(|(_, a)| a == "delete"), "{deleted:?}");
    assert!(groups(&env).await.keys().all(|n| !n.ends_with(&format!("-sg-{s}"))), "security groups left behind");
    let mut roles = vec![format!("tap-task-execution-{s}")];
    roles.extend(SERVICES.iter().map(|svc| format!("tap-{svc}-task-{s}")));
    for name in roles {
        let err = clients.iam.get_role().role_name(&name).send().await.expect_err(&name);
        assert!(tap_core::AwsError::from(err).is_not_found(), "role {name} left behind");
    }
    for logical in ["db-credentials", "api-keys"] {
        let name = format!("tap-{logical}-{s}");
        match clients.secrets.describe_secret().secret_id(&name).send().await {
            Err(e) => assert!(tap_core::AwsError::from(e).is_not_found(), "{name}"),
            Ok(d) => panic!("secret {name} left behind (deleted date {:?})", d.deleted_date()),
        }
    }

    // Destroying again is a no-op.
    let again = tap_json(&env, &["destroy", "--yes"]);
    assert_eq!(security_changes(&again), vec![]);
}

const SECRETS_TOML: &str = r#"
[[secrets]]
name = "db-credentials"
fixed_fields = { username = "tap_admin" }
generated_fields = ["password"]

[[secrets]]
name = "api-keys"
generated_fields = ["api_key"]
"#;

const REMOVED_TOML: &str = r#"
[[secrets]]
name = "reports-key"
generated_fields = ["key"]

[[services]]
name = "reports"
cpu = 256
memory = 512
port = 7000
route = { short_name = "rep", path_pattern = "/reports/*", priority = 20, health_check_path = "/health" }
allow_from = ["api-gateway"]
"#;

/// Names of the environment's roles, security groups (without `default`), target groups, listener
/// rules (by path) and live secrets, read with the SDK.
async fn owned_names(env: &TestEnv) -> BTreeMap<&'static str, BTreeSet<String>> {
    let clients = env.clients().await;
    let suffix = format!("-{}", env.suffix);
    let named = |n: &str| n.starts_with("tap-") && n.ends_with(&suffix);
    let mut out = BTreeMap::new();
    let roles: Vec<_> = clients.iam.list_roles().into_paginator().items().send().try_collect().await.unwrap();
    out.insert("roles", roles.iter().map(|r| r.role_name().to_owned()).filter(|n| named(n)).collect());
    let sgs = clients
        .ec2
        .describe_security_groups()
        .filters(Filter::builder().name("tag:Environment").values(&env.suffix).build())
        .send()
        .await
        .unwrap();
    out.insert(
        "groups",
        sgs.security_groups()
            .iter()
            .filter_map(|g| g.group_name())
            .filter(|n| *n != "default")
            .map(str::to_owned)
            .collect(),
    );
    let tgs = clients.elbv2.describe_target_groups().send().await.unwrap();
    out.insert(
        "target groups",
        tgs.target_groups()
            .iter()
            .filter_map(|t| t.target_group_name())
            .filter(|n| named(n))
            .map(str::to_owned)
            .collect(),
    );
    let mut rules = BTreeSet::new();
    let lbs = clients.elbv2.describe_load_balancers().send().await.unwrap();
    for lb in lbs.load_balancers().iter().filter(|l| l.load_balancer_name().is_some_and(named)) {
        let listeners =
            clients.elbv2.describe_listeners().load_balancer_arn(lb.load_balancer_arn().unwrap()).send().await.unwrap();
        for l in listeners.listeners() {
            let r = clients.elbv2.describe_rules().listener_arn(l.listener_arn().unwrap()).send().await.unwrap();
            for rule in r.rules().iter().filter(|r| r.is_default() != Some(true)) {
                for c in rule.conditions() {
                    let values =
                        c.path_pattern_config().map(|p| p.values().to_vec()).unwrap_or_else(|| c.values().to_vec());
                    rules.extend(values);
                }
            }
        }
    }
    out.insert("rules", rules);
    let pages: Vec<_> = clients.secrets.list_secrets().into_paginator().send().try_collect().await.unwrap();
    out.insert(
        "secrets",
        pages
            .iter()
            .flat_map(|p| p.secret_list())
            .filter(|s| s.deleted_date().is_none())
            .filter_map(|s| s.name())
            .filter(|n| named(n))
            .map(str::to_owned)
            .collect(),
    );
    out
}

#[tokio::test]
async fn removed_services_lose_their_groups_roles_target_groups_and_rules_and_destroy_finds_them_by_tags() {
    let env = TestEnv::new("sec-prune");
    let four = env
        .config_file("four", &[SECRETS_TOML, FRONTEND, API_GATEWAY, PROCESSING, REMOVED_TOML].concat())
        .display()
        .to_string();
    let two = env.config_file("two", &[SECRETS_TOML, FRONTEND, API_GATEWAY].concat()).display().to_string();
    let one = env.config_file("one", &[SECRETS_TOML, FRONTEND].concat()).display().to_string();
    tap_json(&env, &["--config", &four, "deploy", "--no-wait"]);
    let before = owned_names(&env).await;
    assert_eq!(before["target groups"], set(&["tap-api-sec-prune", "tap-fe-sec-prune", "tap-rep-sec-prune"]));
    assert_eq!(before["groups"].len(), 5, "{before:?}");
    assert!(before["secrets"].contains("tap-reports-key-sec-prune"), "{before:?}");

    // Plan lists the removed services' resources as deleted and the undeclared secret as kept.
    let plan = tap_json(&env, &["--config", &two, "plan"]);
    let listed = |doc: &Value, step: &str| -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = doc["changes"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["step"] == step)
            .map(|c| (c["resource"].as_str().unwrap().to_owned(), c["action"].as_str().unwrap().to_owned()))
            .collect();
        v.sort();
        v
    };
    let security = listed(&plan, "security");
    for id in [
        "security/sg/processing-service",
        "security/sg/reports",
        "security/role/processing-service-task",
        "security/role/reports-task",
    ] {
        assert!(security.contains(&(id.to_owned(), "delete".to_owned())), "{id} not listed: {security:?}");
    }
    assert!(security.contains(&("security/secret/reports-key".to_owned(), "keep".to_owned())), "{security:?}");
    let ingress = listed(&plan, "ingress");
    assert!(ingress.contains(&("ingress/target-group/reports".to_owned(), "delete".to_owned())), "{ingress:?}");
    assert!(
        ingress.iter().any(|(id, a)| id.starts_with("ingress/listener/http/rule/") && a == "delete"),
        "{ingress:?}"
    );

    tap_json(&env, &["--config", &two, "deploy", "--no-wait"]);
    let after = owned_names(&env).await;
    assert_eq!(
        after["groups"],
        set(&["tap-alb-sg-sec-prune", "tap-frontend-sg-sec-prune", "tap-api-gateway-sg-sec-prune"]),
        "{after:?}"
    );
    assert_eq!(
        after["roles"],
        set(&["tap-task-execution-sec-prune", "tap-frontend-task-sec-prune", "tap-api-gateway-task-sec-prune"])
    );
    assert_eq!(after["target groups"], set(&["tap-api-sec-prune", "tap-fe-sec-prune"]));
    assert_eq!(after["rules"], set(&["/api/*"]));
    assert!(after["secrets"].contains("tap-reports-key-sec-prune"), "a secret is kept without --prune-data");

    // A second deploy changes nothing of security or ingress (the secret is only listed as kept).
    let again = tap_json(&env, &["--config", &two, "deploy", "--no-wait"]);
    let changed: Vec<_> =
        listed(&again, "security").into_iter().chain(listed(&again, "ingress")).filter(|(_, a)| a != "keep").collect();
    assert!(changed.is_empty(), "{changed:?}");
    assert!(security_mutations(&again).is_empty(), "{:?}", security_mutations(&again));

    // Destroy with a one-service config leaves nothing of the environment.
    tap_json(&env, &["--config", &one, "destroy", "--yes"]);
    let left = owned_names(&env).await;
    assert!(left.values().all(BTreeSet::is_empty), "left behind: {left:?}");
}

/// The security groups' changes of a run's document, attribute by attribute, by resource (`alb`,
/// `api-gateway`, …).
fn group_changes(doc: &Value) -> Vec<Value> {
    let mut v: Vec<Value> = doc["changes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["resource"].as_str().is_some_and(|r| r.starts_with("security/sg/")))
        .cloned()
        .collect();
    v.sort_by_key(|c| c["resource"].as_str().unwrap_or_default().to_owned());
    v
}

/// `api-gateway` and `processing-service` allowing each other (a cycle: no order of creates
/// knows every peer's id): deploy creates the groups and their rules exactly as plan listed them,
/// a second deploy changes nothing, and destroy lists on each group's delete the rules naming
/// other groups it revoked first, and leaves no group.
#[tokio::test]
async fn groups_allowing_each_other_are_deployed_as_planned_and_destroyed_with_their_revokes_listed() {
    let env = TestEnv::new("sec-cycle");
    let s = env.suffix.clone();
    let api_gateway = format!("{API_GATEWAY}allow_from = [\"processing-service\"]\n");
    let config = env.config_file("cycle", &[SECRETS_TOML, FRONTEND, &api_gateway, PROCESSING].concat());
    let config = config.display().to_string();
    let plan = tap_json(&env, &["--config", &config, "plan"]);
    let deploy = tap_json(&env, &["--config", &config, "deploy", "--no-wait"]);
    assert_eq!(group_changes(&deploy), group_changes(&plan), "deploy did what plan listed");
    let api_rules = &group_changes(&plan)[1]["attributes"];
    assert_eq!(
        *api_rules,
        json!([
            {"attribute": "ingress", "old": null, "new": format!("tcp 8080 from tap-alb-sg-{s}")},
            {"attribute": "ingress", "old": null, "new": format!("tcp 8080 from tap-processing-service-sg-{s}")},
        ]),
        "{plan}"
    );

    let sgs = groups(&env).await;
    let id = |name: &str| sgs[&format!("tap-{name}-sg-{s}")].0.clone();
    let ingress = |name: &str| sgs[&format!("tap-{name}-sg-{s}")].1.clone();
    let (alb, api, processing) = (id("alb"), id("api-gateway"), id("processing-service"));
    assert_eq!(ingress("api-gateway"), set(&[&format!("tcp 8080-8080 {alb}"), &format!("tcp 8080-8080 {processing}")]));
    assert_eq!(ingress("processing-service"), set(&[&format!("tcp 9000-9000 {api}")]));

    let again = tap_json(&env, &["--config", &config, "deploy", "--no-wait"]);
    assert!(security_mutations(&again).is_empty(), "{:?}", security_mutations(&again));

    let destroy = tap_json(&env, &["--config", &config, "destroy", "--yes"]);
    let deleted = group_changes(&destroy);
    assert_eq!(deleted.len(), 4, "{destroy}");
    let revoked = |i: usize| -> BTreeSet<String> {
        let attributes = deleted[i]["attributes"].as_array().cloned().unwrap_or_default();
        attributes.iter().map(|a| format!("{} {}", a["attribute"], a["old"].as_str().unwrap())).collect()
    };
    assert_eq!(
        revoked(1),
        set(&[&format!("\"ingress\" tcp 8080 from {alb}"), &format!("\"ingress\" tcp 8080 from {processing}")]),
        "api-gateway's delete lists its release: {destroy}"
    );
    assert_eq!(revoked(0), set(&[]), "the load balancer's group names no group");
    assert!(groups(&env).await.is_empty(), "no group left");
}
