//! Unit tests of the security step, driven through mocks of the three AWS APIs.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tap_core::naming::Tag;
use tap_core::outputs::{NetworkOutputs, SecurityOutputs, PENDING};
use tap_core::wait::Backoff;
use tap_core::{Action, AwsError, Config, Context, Step};

use crate::ec2::{MockEc2Api, ObservedGroup};
use crate::iam::{MockIamApi, ObservedRole, RoleDetail};
use crate::policy::{self, ArnParts};
use crate::rule::{Rule, RuleSource};
use crate::secrets::{MockSecretsApi, NewSecret, ObservedSecret, SecretValue, TaggedSecret};
use crate::SecurityStep;

const ACCOUNT: &str = "123456789012";
const REGION: &str = "eu-west-1";
const MANAGED: &str = "arn:aws:iam::aws:policy/service-role/AmazonECSTaskExecutionRolePolicy";
const SERVICES: [&str; 3] = ["frontend", "api-gateway", "processing-service"];

fn ctx() -> Context {
    let ctx = Context::new(Config::default()).with_region(REGION);
    ctx.put(NetworkOutputs { vpc_id: "vpc-1".into(), public_subnets: vec![], private_subnets: vec![] });
    ctx
}

fn role_arn(name: &str) -> String {
    format!("arn:aws:iam::{ACCOUNT}:role/{name}")
}

fn secret_arn(name: &str) -> String {
    format!("arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:{name}-AbCdEf")
}

fn sg_id(name: &str) -> String {
    // tap-api-gateway-sg-dev → sg-api-gateway
    format!("sg-{}", name.trim_start_matches("tap-").trim_end_matches("-sg-dev"))
}

fn anywhere(port: u16) -> Rule {
    Rule::tcp(port, RuleSource::Cidr("0.0.0.0/0".into()))
}

fn from_group(port: u16, group: &str) -> Rule {
    Rule::tcp(port, RuleSource::Group(group.into()))
}

fn egress_all() -> Rule {
    Rule::all(RuleSource::Cidr("0.0.0.0/0".into()))
}

/// How IAM returns documents: URL-encoded.
fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn fast() -> Backoff {
    Backoff { initial: Duration::from_millis(1), max: Duration::from_millis(2), timeout: Duration::from_secs(2) }
}

/// A role, its attached managed policy ARNs and its inline policies (name → raw document).
type RoleRecord = (ObservedRole, Vec<String>, BTreeMap<String, String>);

/// What AWS holds, for the read-only mock calls.
#[derive(Clone, Default)]
struct World {
    groups: Vec<ObservedGroup>,
    /// Role name → its record.
    roles: BTreeMap<String, RoleRecord>,
    secrets: BTreeMap<String, ObservedSecret>,
    /// Role name → its tags.
    role_tags: BTreeMap<String, Vec<Tag>>,
    /// Secrets `ListSecrets` by tag shows besides those of `secrets` (which it shows tagged as
    /// this environment's).
    tagged_secrets: Vec<TaggedSecret>,
}

/// The tags tap gives a resource of environment `dev`.
fn dev_tags(component: &str, name: &str) -> Vec<Tag> {
    tap_core::naming::Names::new(&Config::default()).tags(component, name)
}

fn desired_task_policy(service: &str) -> policy::PolicyDocument {
    let config = Config::default();
    let names = tap_core::naming::Names::new(&config);
    let parts = ArnParts::from_role_arn(&role_arn(&names.task_role(service)), REGION).unwrap();
    policy::task_policy(&names, config.service(service).unwrap(), &parts)
}

fn secret_arns() -> Vec<String> {
    vec![secret_arn("tap-db-credentials-dev"), secret_arn("tap-api-keys-dev")]
}

/// Everything exactly as the SPEC wants it.
fn converged() -> World {
    let group = |component: &str, name: &str, ingress: Vec<Rule>| ObservedGroup {
        id: sg_id(name),
        name: name.into(),
        vpc_id: "vpc-1".into(),
        component: Some(component.into()),
        tags: dev_tags(component, name),
        ingress,
        egress: vec![egress_all()],
    };
    let trust = url_encode(&policy::ecs_tasks_trust_policy().to_json());
    let mut roles = BTreeMap::new();
    let exec_policy = policy::execution_secrets_policy(&secret_arns()).unwrap();
    roles.insert(
        "tap-task-execution-dev".to_string(),
        (
            ObservedRole { arn: role_arn("tap-task-execution-dev"), trust_policy: trust.clone(), tags: vec![] },
            vec![MANAGED.to_string()],
            BTreeMap::from([("read-secrets".to_string(), url_encode(&exec_policy.to_json()))]),
        ),
    );
    for s in SERVICES {
        let name = format!("tap-{s}-task-dev");
        roles.insert(
            name.clone(),
            (
                ObservedRole { arn: role_arn(&name), trust_policy: trust.clone(), tags: vec![] },
                vec![],
                BTreeMap::from([("task-permissions".to_string(), url_encode(&desired_task_policy(s).to_json()))]),
            ),
        );
    }
    let role_tags = roles
        .keys()
        .map(|name| {
            let component = match name.as_str() {
                "tap-task-execution-dev" => "security/role/task-execution".to_string(),
                n => format!("security/role/{}", n.trim_start_matches("tap-").trim_end_matches("-dev")),
            };
            (name.clone(), dev_tags(&component, name))
        })
        .collect();
    World {
        role_tags,
        tagged_secrets: vec![],
        groups: vec![
            group("security/sg/alb", "tap-alb-sg-dev", vec![anywhere(80), anywhere(443)]),
            group("security/sg/frontend", "tap-frontend-sg-dev", vec![from_group(3000, "sg-alb")]),
            group("security/sg/api-gateway", "tap-api-gateway-sg-dev", vec![from_group(8080, "sg-alb")]),
            group(
                "security/sg/processing-service",
                "tap-processing-service-sg-dev",
                vec![from_group(9000, "sg-api-gateway")],
            ),
        ],
        roles,
        secrets: ["tap-db-credentials-dev", "tap-api-keys-dev"]
            .into_iter()
            .map(|n| {
                (
                    n.to_string(),
                    ObservedSecret {
                        arn: secret_arn(n),
                        scheduled_for_deletion: false,
                        tags: dev_tags("security/secret/x", n),
                    },
                )
            })
            .collect(),
    }
}

/// What `GetAccountAuthorizationDetails(Filter=Role)` kept to `names` shows of `world`.
fn role_details(world: &World, names: &[String]) -> BTreeMap<String, RoleDetail> {
    world
        .roles
        .iter()
        .filter(|(n, _)| names.contains(n) || world.role_tags.get(*n).is_some_and(|t| has_tag(t, "ManagedBy", "tap")))
        .map(|(n, (role, attached, inline))| {
            let detail = RoleDetail {
                arn: role.arn.clone(),
                trust_policy: role.trust_policy.clone(),
                attached: attached.clone(),
                inline: inline.clone(),
                tags: world.role_tags.get(n).cloned().unwrap_or_default(),
            };
            (n.clone(), detail)
        })
        .collect()
}

/// The names of the environment's four roles, as the step asks for them.
/// The roles one read asks for: every role the environment may have (the infrastructure role
/// too, so a config that no longer needs it still finds it to prune).
fn all_role_names() -> Vec<String> {
    let mut names = vec!["tap-task-execution-dev".to_string(), "tap-ecs-infrastructure-dev".to_string()];
    names.extend(SERVICES.iter().map(|s| format!("tap-{s}-task-dev")));
    names
}

/// What `ListSecrets` filtered by the `Environment` tag shows of `world`: its secrets, tagged as
/// this environment's, and its other tagged secrets.
fn tagged(world: &World) -> Vec<TaggedSecret> {
    let mut all: Vec<TaggedSecret> = world
        .secrets
        .iter()
        .map(|(name, secret)| {
            let logical = name.trim_start_matches("tap-").trim_end_matches("-dev");
            let tags = dev_tags(&format!("security/secret/{logical}"), name);
            TaggedSecret { name: name.clone(), secret: secret.clone(), tags }
        })
        .collect();
    all.extend(world.tagged_secrets.iter().cloned());
    all
}

struct Mocks {
    ec2: MockEc2Api,
    iam: MockIamApi,
    secrets: MockSecretsApi,
}

impl Mocks {
    /// Read-only calls answer from `world`; mutating calls have no expectation yet.
    fn reading(world: &World) -> Self {
        let mut ec2 = MockEc2Api::new();
        let w = world.clone();
        ec2.expect_describe_security_groups().returning(move |env, _| {
            assert_eq!(env, "dev");
            Ok(w.groups.clone())
        });
        let mut iam = MockIamApi::new();
        let w = world.clone();
        iam.expect_get_role().returning(move |name| {
            let tags = w.role_tags.get(name).cloned().unwrap_or_default();
            Ok(w.roles.get(name).map(|r| ObservedRole { tags, ..r.0.clone() }))
        });
        let w = world.clone();
        iam.expect_list_attached_role_policies().returning(move |name| match w.roles.get(name) {
            Some(r) => Ok(r.1.clone()),
            None => Err(AwsError::new("NoSuchEntity", "no role")),
        });
        let w = world.clone();
        iam.expect_list_role_policies().returning(move |name| match w.roles.get(name) {
            Some(r) => Ok(r.2.keys().cloned().collect()),
            None => Err(AwsError::new("NoSuchEntity", "no role")),
        });
        let w = world.clone();
        iam.expect_role_details().returning(move |names| Ok(role_details(&w, names)));
        let mut secrets = MockSecretsApi::new();
        let w = world.clone();
        secrets.expect_describe_secret().returning(move |name| Ok(w.secrets.get(name).cloned()));
        let w = world.clone();
        secrets.expect_list_owned_secrets().returning(move |env| {
            assert_eq!(env, "dev");
            Ok(tagged(&w))
        });
        Mocks { ec2, iam, secrets }
    }

    /// Every mutating call not expected before this one is forbidden: mockall answers a call with
    /// the first expectation that matches it and is not used up.
    fn forbid_mutations(mut self) -> Self {
        self.ec2.expect_create_security_group().never();
        self.ec2.expect_authorize_ingress().never();
        self.ec2.expect_revoke_ingress().never();
        self.ec2.expect_authorize_egress().never();
        self.ec2.expect_revoke_egress().never();
        self.ec2.expect_delete_security_group().never();
        self.iam.expect_create_role().never();
        self.iam.expect_update_assume_role_policy().never();
        self.iam.expect_attach_role_policy().never();
        self.iam.expect_detach_role_policy().never();
        self.iam.expect_put_role_policy().never();
        self.iam.expect_delete_role_policy().never();
        self.iam.expect_delete_role().never();
        self.secrets.expect_get_random_password().never();
        self.secrets.expect_create_secret().never();
        self.secrets.expect_restore_secret().never();
        self.secrets.expect_delete_secret().never();
        self
    }

    fn step(self) -> SecurityStep {
        SecurityStep::new(Arc::new(self.ec2), Arc::new(self.iam), Arc::new(self.secrets))
            .with_dependency_backoff(fast())
    }
}

fn summary(changes: &[tap_core::Change]) -> Vec<(String, Action)> {
    let mut v: Vec<(String, Action)> = changes.iter().map(|c| (c.resource.clone(), c.action)).collect();
    v.sort();
    v
}

fn all_resources(action: Action) -> Vec<(String, Action)> {
    let mut v = vec![("security/sg/alb".to_string(), action)];
    for s in SERVICES {
        v.push((format!("security/sg/{s}"), action));
        v.push((format!("security/role/{s}-task"), action));
    }
    v.push(("security/role/task-execution".into(), action));
    v.push(("security/secret/db-credentials".into(), action));
    v.push(("security/secret/api-keys".into(), action));
    v.sort();
    v
}

/// Everything from nothing, created: the resources and the execution role's inline policy, which
/// follows the secrets (listed by plan as by apply).
fn all_created() -> Vec<(String, Action)> {
    let mut v = all_resources(Action::Create);
    v.push((crate::iam::EXECUTION_SECRETS_COMPONENT.into(), Action::Create));
    v.sort();
    v
}

fn has_tag(tags: &[Tag], key: &str, value: &str) -> bool {
    tags.iter().any(|(k, v)| k == key && v == value)
}

#[tokio::test]
async fn from_nothing_creates_exactly_the_spec_resources() {
    let mut m = Mocks::reading(&World::default());
    // Security groups, tagged, in the VPC.
    m.ec2
        .expect_create_security_group()
        .withf(|name, description, vpc, tags| {
            vpc == "vpc-1"
                && !description.is_empty()
                && has_tag(tags, "Environment", "dev")
                && has_tag(tags, "Name", name)
                && has_tag(tags, "ManagedBy", "tap")
                && [
                    ("tap-alb-sg-dev", "security/sg/alb"),
                    ("tap-frontend-sg-dev", "security/sg/frontend"),
                    ("tap-api-gateway-sg-dev", "security/sg/api-gateway"),
                    ("tap-processing-service-sg-dev", "security/sg/processing-service"),
                ]
                .iter()
                .any(|(n, c)| n == &name && has_tag(tags, "tap:component", c))
        })
        .times(4)
        .returning(|name, _, _, _| Ok(sg_id(name)));
    let rules = |group: &'static str, want: Vec<Rule>| move |g: &str, r: &[Rule]| g == group && r == want.as_slice();
    m.ec2
        .expect_authorize_ingress()
        .withf(rules("sg-alb", vec![anywhere(80), anywhere(443)]))
        .times(1)
        .returning(|_, _| Ok(()));
    m.ec2
        .expect_authorize_ingress()
        .withf(rules("sg-frontend", vec![from_group(3000, "sg-alb")]))
        .times(1)
        .returning(|_, _| Ok(()));
    m.ec2
        .expect_authorize_ingress()
        .withf(rules("sg-api-gateway", vec![from_group(8080, "sg-alb")]))
        .times(1)
        .returning(|_, _| Ok(()));
    m.ec2
        .expect_authorize_ingress()
        .withf(rules("sg-processing-service", vec![from_group(9000, "sg-api-gateway")]))
        .times(1)
        .returning(|_, _| Ok(()));

    // Roles: ECS tasks trust, tags, the managed policy on the execution role only.
    let trust = policy::ecs_tasks_trust_policy().to_value();
    m.iam
        .expect_create_role()
        .withf(move |name, doc, tags| {
            serde_json::from_str::<Value>(doc).unwrap() == trust
                && has_tag(tags, "Environment", "dev")
                && has_tag(tags, "Name", name)
                && [
                    "tap-task-execution-dev",
                    "tap-frontend-task-dev",
                    "tap-api-gateway-task-dev",
                    "tap-processing-service-task-dev",
                ]
                .contains(&name)
        })
        .times(4)
        .returning(|name, _, _| Ok(role_arn(name)));
    m.iam
        .expect_attach_role_policy()
        .withf(|name, arn| name == "tap-task-execution-dev" && arn == MANAGED)
        .times(1)
        .returning(|_, _| Ok(()));
    let exec_doc = policy::execution_secrets_policy(&secret_arns()).unwrap().to_value();
    m.iam
        .expect_put_role_policy()
        .withf(move |name, policy, doc| {
            name == "tap-task-execution-dev"
                && policy == "read-secrets"
                && serde_json::from_str::<Value>(doc).unwrap() == exec_doc
        })
        .times(1)
        .returning(|_, _, _| Ok(()));
    for s in SERVICES {
        let want = desired_task_policy(s).to_value();
        let role = format!("tap-{s}-task-dev");
        m.iam
            .expect_put_role_policy()
            .withf(move |name, policy, doc| {
                name == role && policy == "task-permissions" && serde_json::from_str::<Value>(doc).unwrap() == want
            })
            .times(1)
            .returning(|_, _, _| Ok(()));
    }

    // Secrets: generated values, JSON with the right keys, deterministic token, tags.
    let n = Arc::new(Mutex::new(0));
    m.secrets
        .expect_get_random_password()
        .withf(|len, exclude| {
            *len == 32 && ['@', '/', ':', '"', '\'', '\\', '?', '#', '%', ' '].iter().all(|c| exclude.contains(*c))
        })
        .times(2)
        .returning(move |_, _| {
            let mut n = n.lock().unwrap();
            *n += 1;
            Ok(SecretValue::new(format!("GENERATED-SECRET-{n}")))
        });
    let created: Arc<Mutex<Vec<NewSecret>>> = Arc::default();
    let log = created.clone();
    m.secrets.expect_create_secret().times(2).returning(move |s| {
        log.lock().unwrap().push(s.clone());
        Ok(secret_arn(&s.name))
    });

    let ctx = ctx();
    let changes = m.forbid_mutations().step().apply(&ctx).await.unwrap();
    assert_eq!(summary(&changes), all_created());

    let created = created.lock().unwrap().clone();
    let by_name: BTreeMap<&str, &NewSecret> = created.iter().map(|s| (s.name.as_str(), s)).collect();
    let db = by_name["tap-db-credentials-dev"];
    let db_json: Value = serde_json::from_str(db.value.expose()).unwrap();
    assert_eq!(db_json["username"], "tap_admin");
    assert!(db_json["password"].as_str().unwrap().starts_with("GENERATED-SECRET-"));
    assert_eq!(db_json.as_object().unwrap().len(), 2);
    let keys: Value = serde_json::from_str(by_name["tap-api-keys-dev"].value.expose()).unwrap();
    assert_eq!(keys.as_object().unwrap().keys().collect::<Vec<_>>(), vec!["api_key"]);
    assert_eq!(db.client_request_token, crate::secrets::client_request_token("dev", "db-credentials"));
    assert!(
        has_tag(&db.tags, "tap:component", "security/secret/db-credentials") && has_tag(&db.tags, "Environment", "dev")
    );

    // No value reaches the changes, Debug or Display.
    let shown = format!(
        "{created:?} {changes:?} {} {}",
        serde_json::to_string(&changes).unwrap(),
        changes.iter().map(|c| c.to_string()).collect::<String>()
    );
    assert!(!shown.contains("GENERATED-SECRET"), "a secret value leaked: {shown}");

    let out: SecurityOutputs = ctx.get("test").unwrap();
    assert_eq!(out.alb_security_group_id, "sg-alb");
    assert_eq!(out.service_security_group_ids["processing-service"], "sg-processing-service");
    assert_eq!(out.execution_role_arn, role_arn("tap-task-execution-dev"));
    assert_eq!(out.task_role_arns["api-gateway"], role_arn("tap-api-gateway-task-dev"));
    assert_eq!(out.secret_arns["db-credentials"], secret_arn("tap-db-credentials-dev"));
    assert_eq!(out.secret_arns["api-keys"], secret_arn("tap-api-keys-dev"));
}

#[tokio::test]
async fn converged_environment_makes_no_mutating_call() {
    let ctx = ctx();
    let step = Mocks::reading(&converged()).forbid_mutations().step();
    assert_eq!(step.apply(&ctx).await.unwrap(), vec![]);
    let out: SecurityOutputs = ctx.get("test").unwrap();
    assert_eq!(out.service_security_group_ids.len(), 3);
    assert_eq!(out.task_role_arns.len(), 3);
    assert!(out.secret_arns.values().all(|a| a.starts_with("arn:aws:secretsmanager:")));
}

#[tokio::test]
async fn converged_environment_makes_exactly_the_expected_iam_and_secrets_reads() {
    let world = converged();
    let mut m = Mocks::reading(&world);
    m.iam.checkpoint();
    m.secrets.checkpoint();
    // All four roles (execution + 3 task roles), with their trust, managed and inline policies,
    // from one GetAccountAuthorizationDetails; no per-role read.
    let w = world.clone();
    m.iam
        .expect_role_details()
        .withf(|names| names == all_role_names().as_slice())
        .times(1)
        .returning(move |names| Ok(role_details(&w, names)));
    m.iam.expect_get_role().never();
    m.iam.expect_list_attached_role_policies().never();
    m.iam.expect_list_role_policies().never();
    // Both secrets from one ListSecrets filtered by the environment's tag (which also finds those
    // the config no longer declares); no DescribeSecret.
    let w = world.clone();
    m.secrets.expect_list_owned_secrets().withf(|env| env == "dev").times(1).returning(move |_| Ok(tagged(&w)));
    m.secrets.expect_describe_secret().never();
    let ctx = ctx();
    assert_eq!(m.forbid_mutations().step().apply(&ctx).await.unwrap(), vec![]);
    let out: SecurityOutputs = ctx.get("test").unwrap();
    assert_eq!(out.service_security_group_ids.len(), 3);
    assert_eq!(out.task_role_arns.len(), 3);
    assert!(out.secret_arns.values().all(|a| a.starts_with("arn:aws:secretsmanager:")));
}

#[tokio::test]
async fn extra_ingress_rule_is_revoked_and_nothing_else() {
    let mut world = converged();
    world.groups[1].ingress.push(anywhere(22));
    let mut m = Mocks::reading(&world);
    m.ec2
        .expect_revoke_ingress()
        .withf(|group, rules| group == "sg-frontend" && rules == [anywhere(22)])
        .times(1)
        .returning(|_, _| Ok(()));
    let changes = m.forbid_mutations().step().apply(&ctx()).await.unwrap();
    assert_eq!(changes.len(), 1);
    assert_eq!((changes[0].resource.as_str(), changes[0].action), ("security/sg/frontend", Action::Update));
    assert_eq!(changes[0].attributes[0].old.as_deref(), Some("tcp 22 from 0.0.0.0/0"));
    assert_eq!(changes[0].attributes[0].new, None);
}

#[tokio::test]
async fn missing_rule_is_authorized() {
    let mut world = converged();
    world.groups[3].ingress.clear();
    let mut m = Mocks::reading(&world);
    m.ec2
        .expect_authorize_ingress()
        .withf(|group, rules| group == "sg-processing-service" && rules == [from_group(9000, "sg-api-gateway")])
        .times(1)
        .returning(|_, _| Ok(()));
    let changes = m.forbid_mutations().step().apply(&ctx()).await.unwrap();
    assert_eq!(summary(&changes), vec![("security/sg/processing-service".to_string(), Action::Update)]);
    assert_eq!(changes[0].attributes[0].new.as_deref(), Some("tcp 9000 from tap-api-gateway-sg-dev"));
}

#[tokio::test]
async fn drifted_task_policy_gets_exactly_one_put() {
    let mut world = converged();
    // Someone removed the namespace condition: the policy no longer matches.
    let mut loose = desired_task_policy("api-gateway").to_value();
    loose["Statement"][1].as_object_mut().unwrap().remove("Condition");
    world
        .roles
        .get_mut("tap-api-gateway-task-dev")
        .unwrap()
        .2
        .insert("task-permissions".into(), url_encode(&loose.to_string()));
    let mut m = Mocks::reading(&world);
    let want = desired_task_policy("api-gateway").to_value();
    m.iam
        .expect_put_role_policy()
        .withf(move |role, name, doc| {
            role == "tap-api-gateway-task-dev"
                && name == "task-permissions"
                && serde_json::from_str::<Value>(doc).unwrap() == want
        })
        .times(1)
        .returning(|_, _, _| Ok(()));
    let changes = m.forbid_mutations().step().apply(&ctx()).await.unwrap();
    assert_eq!(summary(&changes), vec![("security/role/api-gateway-task".to_string(), Action::Update)]);
}

#[tokio::test]
async fn policy_written_with_single_values_is_not_rewritten() {
    let mut world = converged();
    let mut doc = desired_task_policy("frontend").to_value();
    doc["Statement"][0]["Action"] = json!(["logs:PutLogEvents", "logs:CreateLogStream"]);
    doc["Statement"][0]["Resource"] = doc["Statement"][0]["Resource"][0].clone();
    world
        .roles
        .get_mut("tap-frontend-task-dev")
        .unwrap()
        .2
        .insert("task-permissions".into(), url_encode(&doc.to_string()));
    let changes = Mocks::reading(&world).forbid_mutations().step().apply(&ctx()).await.unwrap();
    assert_eq!(changes, vec![]);
}

#[tokio::test]
async fn unexpected_attachments_and_trust_are_repaired() {
    let mut world = converged();
    let trust_ec2 = url_encode(&policy::ecs_tasks_trust_policy().to_json().replace("ecs-tasks", "ec2"));
    let frontend = world.roles.get_mut("tap-frontend-task-dev").unwrap();
    frontend.1.push("arn:aws:iam::aws:policy/AdministratorAccess".into());
    // An inline policy tap does not set is deleted: each role has exactly the SPEC's policies.
    frontend.2.insert("debug".into(), url_encode(r#"{"Version":"2012-10-17","Statement":[]}"#));
    world.roles.get_mut("tap-processing-service-task-dev").unwrap().0.trust_policy = trust_ec2;
    let mut m = Mocks::reading(&world);
    m.iam
        .expect_delete_role_policy()
        .withf(|role, policy| role == "tap-frontend-task-dev" && policy == "debug")
        .times(1)
        .returning(|_, _| Ok(()));
    m.iam
        .expect_detach_role_policy()
        .withf(|role, arn| role == "tap-frontend-task-dev" && arn == "arn:aws:iam::aws:policy/AdministratorAccess")
        .times(1)
        .returning(|_, _| Ok(()));
    let trust = policy::ecs_tasks_trust_policy().to_value();
    m.iam
        .expect_update_assume_role_policy()
        .withf(move |role, doc| {
            role == "tap-processing-service-task-dev" && serde_json::from_str::<Value>(doc).unwrap() == trust
        })
        .times(1)
        .returning(|_, _| Ok(()));
    let changes = m.forbid_mutations().step().apply(&ctx()).await.unwrap();
    assert_eq!(
        summary(&changes),
        vec![
            ("security/role/frontend-task".to_string(), Action::Update),
            ("security/role/processing-service-task".to_string(), Action::Update),
        ]
    );
}

#[tokio::test]
async fn secret_scheduled_for_deletion_is_restored_not_recreated() {
    let mut world = converged();
    world.secrets.get_mut("tap-api-keys-dev").unwrap().scheduled_for_deletion = true;
    let mut m = Mocks::reading(&world);
    m.secrets.expect_restore_secret().withf(|name| name == "tap-api-keys-dev").times(1).returning(|_| Ok(()));
    let ctx = ctx();
    let changes = m.forbid_mutations().step().apply(&ctx).await.unwrap();
    assert_eq!(summary(&changes), vec![("security/secret/api-keys".to_string(), Action::Update)]);
    let out: SecurityOutputs = ctx.get("test").unwrap();
    assert_eq!(out.secret_arns["api-keys"], secret_arn("tap-api-keys-dev"));
}

/// Expects the execution role's `read-secrets` policy put exactly once, with the secrets' ARNs.
fn expect_read_secrets_put_once(m: &mut Mocks) {
    let want = policy::execution_secrets_policy(&secret_arns()).unwrap().to_value();
    m.iam
        .expect_put_role_policy()
        .withf(move |role, name, doc| {
            role == "tap-task-execution-dev"
                && name == "read-secrets"
                && serde_json::from_str::<Value>(doc).unwrap() == want
        })
        .times(1)
        .returning(|_, _, _| Ok(()));
}

#[tokio::test]
async fn deleted_inline_policy_is_put_back() {
    let mut world = converged();
    world.roles.get_mut("tap-task-execution-dev").unwrap().2.clear();
    let mut m = Mocks::reading(&world);
    expect_read_secrets_put_once(&mut m);
    let changes = m.forbid_mutations().step().apply(&ctx()).await.unwrap();
    // The execution role's `read-secrets` is its own resource (it follows the secrets): put back.
    let id = crate::iam::EXECUTION_SECRETS_COMPONENT.to_string();
    assert_eq!(summary(&changes), vec![(id, Action::Create)]);
    assert_eq!(changes[0].attributes[0].attribute, "document");
    assert_eq!(changes[0].attributes[0].old, None);
}

#[tokio::test]
async fn secret_not_yet_listed_is_described_not_recreated() {
    // ListSecrets lags behind a create by up to a few minutes: it shows only one of the two.
    let world = converged();
    let mut m = Mocks::reading(&world);
    m.secrets.checkpoint();
    let w = world.clone();
    m.secrets
        .expect_list_owned_secrets()
        .times(1)
        .returning(move |_| Ok(tagged(&w).into_iter().filter(|t| t.name != "tap-api-keys-dev").collect()));
    let w = world.clone();
    m.secrets
        .expect_describe_secret()
        .withf(|name| name == "tap-api-keys-dev")
        .times(1)
        .returning(move |name| Ok(w.secrets.get(name).cloned()));
    let ctx = ctx();
    assert_eq!(m.forbid_mutations().step().apply(&ctx).await.unwrap(), vec![]);
    let out: SecurityOutputs = ctx.get("test").unwrap();
    assert_eq!(out.secret_arns["api-keys"], secret_arn("tap-api-keys-dev"));
}

#[tokio::test]
async fn secret_value_never_reaches_an_error() {
    let mut fresh = Mocks::reading(&World { secrets: BTreeMap::new(), ..converged() });
    fresh.secrets.expect_get_random_password().returning(|_, _| Ok(SecretValue::new("TOP-SECRET-VALUE")));
    fresh
        .secrets
        .expect_create_secret()
        .returning(|s| Err(AwsError::new("InvalidRequestException", format!("rejected {s:?}"))));
    let err = fresh.step().apply(&ctx()).await.unwrap_err();
    let shown = format!("{err} {err:?}");
    assert!(shown.contains("CreateSecret") && shown.contains("(redacted)"), "{shown}");
    assert!(!shown.contains("TOP-SECRET-VALUE"), "{shown}");
}

#[tokio::test]
async fn throttling_surfaces_as_retryable_error() {
    let mut m = Mocks::reading(&converged());
    m.ec2.checkpoint();
    m.ec2.expect_describe_security_groups().returning(|_, _| Err(AwsError::throttling()));
    let err = m.forbid_mutations().step().apply(&ctx()).await.unwrap_err();
    assert!(err.is_retryable(), "{err}");
    assert!(err.to_string().contains("DescribeSecurityGroups"), "{err}");

    let mut m = Mocks::reading(&converged());
    m.iam.checkpoint();
    m.iam.expect_role_details().returning(|_| Err(AwsError::throttling()));
    let err = m.forbid_mutations().step().plan(&ctx()).await.unwrap_err();
    assert!(err.is_retryable() && err.to_string().contains("GetAccountAuthorizationDetails"), "{err}");
}

#[tokio::test]
async fn all_four_roles_are_read_once_per_converge() {
    // Plan and apply, from nothing (four creates) and converged (no change): each converge asks
    // for the four roles in one `role_details` call and reads no role by itself.
    for (world, apply) in [(World::default(), false), (converged(), false), (converged(), true)] {
        let mut m = Mocks::reading(&world);
        m.iam.checkpoint();
        let asked: Arc<Mutex<Vec<Vec<String>>>> = Arc::default();
        let (log, w) = (asked.clone(), world.clone());
        m.iam.expect_role_details().times(1).returning(move |names| {
            log.lock().unwrap().push(names.to_vec());
            Ok(role_details(&w, names))
        });
        m.iam.expect_get_role().never();
        m.iam.expect_list_attached_role_policies().never();
        m.iam.expect_list_role_policies().never();
        let step = m.forbid_mutations().step();
        let ctx = ctx();
        let changes = if apply { step.apply(&ctx).await } else { step.plan(&ctx).await }.unwrap();
        let roles = crate::quota::needs(&changes).first().map_or(0, |n| n.amount as usize);
        assert_eq!(roles, if world.roles.is_empty() { 4 } else { 0 }, "{changes:?}");
        let mut asked = asked.lock().unwrap().clone();
        asked.iter_mut().for_each(|names| names.sort());
        let mut want = all_role_names();
        want.sort();
        assert_eq!(asked, vec![want]);
    }
}

#[tokio::test]
async fn plan_from_nothing_lists_creates_without_mutating() {
    let ctx = ctx();
    let changes = Mocks::reading(&World::default()).forbid_mutations().step().plan(&ctx).await.unwrap();
    assert_eq!(summary(&changes), all_created());
    let alb = changes.iter().find(|c| c.resource == "security/sg/alb").unwrap();
    let rules: Vec<&str> = alb.attributes.iter().filter_map(|a| a.new.as_deref()).collect();
    assert_eq!(rules, vec!["tcp 80 from 0.0.0.0/0", "tcp 443 from 0.0.0.0/0"]);
    let out: SecurityOutputs = ctx.get("test").unwrap();
    assert_eq!(out.alb_security_group_id, PENDING);
    assert_eq!(out.execution_role_arn, PENDING);
    assert!(out
        .task_role_arns
        .values()
        .chain(out.secret_arns.values())
        .chain(out.service_security_group_ids.values())
        .all(|v| v == PENDING));
}

#[tokio::test]
async fn plan_with_pending_vpc_does_not_call_ec2_with_it() {
    let ctx = ctx();
    ctx.put(NetworkOutputs { vpc_id: PENDING.into(), public_subnets: vec![], private_subnets: vec![] });
    let mut m = Mocks::reading(&World::default());
    m.ec2.checkpoint();
    // Read by tag only (never with the PENDING id); the groups of another VPC are not this one's.
    let other_vpc = converged().groups;
    m.ec2.expect_describe_security_groups().withf(|_, vpc| vpc.is_none()).returning(move |_, _| Ok(other_vpc.clone()));
    let changes = m.forbid_mutations().step().plan(&ctx).await.unwrap();
    assert_eq!(summary(&changes), all_created());
}

#[tokio::test]
async fn plan_lists_drift_without_fixing_it() {
    let mut world = converged();
    world.groups[0].ingress.push(anywhere(22));
    world.secrets.get_mut("tap-db-credentials-dev").unwrap().scheduled_for_deletion = true;
    world.roles.get_mut("tap-task-execution-dev").unwrap().1.clear();
    let changes = Mocks::reading(&world).forbid_mutations().step().plan(&ctx()).await.unwrap();
    assert_eq!(
        summary(&changes),
        vec![
            ("security/role/task-execution".to_string(), Action::Update),
            ("security/secret/db-credentials".to_string(), Action::Update),
            ("security/sg/alb".to_string(), Action::Update),
        ]
    );
}

#[tokio::test]
async fn plan_records_each_role_drift_as_an_attribute() {
    let mut world = converged();
    let exec = world.roles.get_mut("tap-task-execution-dev").unwrap();
    exec.0.trust_policy = url_encode(&policy::ecs_tasks_trust_policy().to_json().replace("ecs-tasks", "ec2"));
    exec.1.clear();
    exec.2.insert("debug".into(), url_encode(r#"{"Version":"2012-10-17","Statement":[]}"#));
    world.roles.get_mut("tap-frontend-task-dev").unwrap().2.insert("task-permissions".into(), "{}".into());
    let changes = Mocks::reading(&world).forbid_mutations().step().plan(&ctx()).await.unwrap();
    let attrs = |resource: &str| -> Vec<(String, Option<String>, bool)> {
        let change = changes.iter().find(|c| c.resource == resource).unwrap();
        assert_eq!(change.action, Action::Update);
        change.attributes.iter().map(|a| (a.attribute.clone(), a.old.clone(), a.new.is_some())).collect()
    };
    let exec = attrs("security/role/task-execution");
    assert_eq!(exec.len(), 3, "{exec:?}");
    assert!(exec[0].0 == "assume_role_policy" && exec[0].1.as_deref().unwrap().contains("ec2.amazonaws.com"));
    assert_eq!(exec[1], ("managed_policy".into(), None, true));
    assert_eq!(exec[2], ("inline_policy.debug".into(), Some("(present)".into()), false));
    assert_eq!(
        attrs("security/role/frontend-task"),
        vec![("inline_policy.task-permissions".into(), Some("{}".into()), true)]
    );
}

#[tokio::test]
async fn destroy_on_empty_environment_succeeds() {
    let mut m = Mocks::reading(&World::default());
    m.iam.expect_delete_role().never();
    let changes = m.forbid_mutations().step().destroy(&ctx()).await.unwrap();
    assert_eq!(changes, vec![]);
}

#[tokio::test]
async fn destroy_deletes_a_secret_scheduled_for_deletion_for_good() {
    let mut world = World { secrets: converged().secrets, ..World::default() };
    world.secrets.get_mut("tap-api-keys-dev").unwrap().scheduled_for_deletion = true;
    let mut m = Mocks::reading(&world);
    let log: Arc<Mutex<Vec<String>>> = Arc::default();
    let (l1, l2) = (log.clone(), log.clone());
    m.secrets.expect_delete_secret().withf(|n| n == "tap-db-credentials-dev").times(1).returning(|_| Ok(()));
    let refused = Arc::new(Mutex::new(false));
    m.secrets.expect_delete_secret().withf(|n| n == "tap-api-keys-dev").times(2).returning(move |_| {
        l1.lock().unwrap().push("delete".to_string());
        let mut refused = refused.lock().unwrap();
        if *refused {
            Ok(())
        } else {
            *refused = true;
            Err(AwsError::new("InvalidRequestException", "the secret is scheduled for deletion"))
        }
    });
    m.secrets.expect_restore_secret().withf(|n| n == "tap-api-keys-dev").times(1).returning(move |_| {
        l2.lock().unwrap().push("restore".to_string());
        Ok(())
    });
    let changes = m.forbid_mutations().step().destroy(&ctx()).await.unwrap();
    assert_eq!(
        summary(&changes),
        vec![
            ("security/secret/api-keys".to_string(), Action::Delete),
            ("security/secret/db-credentials".to_string(), Action::Delete)
        ]
    );
    assert_eq!(*log.lock().unwrap(), vec!["delete", "restore", "delete"]);
}

#[tokio::test]
async fn destroy_revokes_cross_references_first_and_retries_dependencies() {
    let world = converged();
    let mut m = Mocks::reading(&world);
    let log: Arc<Mutex<Vec<String>>> = Arc::default();
    let l = log.clone();
    m.ec2.expect_revoke_ingress().times(3).returning(move |g, rules| {
        assert!(rules.iter().all(|r| matches!(r.source, RuleSource::Group(_))), "only cross-group rules: {rules:?}");
        l.lock().unwrap().push(format!("revoke {g}"));
        Ok(())
    });
    let l = log.clone();
    let alb_tries = Arc::new(Mutex::new(0));
    m.ec2.expect_delete_security_group().times(5).returning(move |g| {
        l.lock().unwrap().push(format!("delete {g}"));
        let mut t = alb_tries.lock().unwrap();
        if g == "sg-alb" {
            *t += 1;
        }
        // The ALB group is still held by a network interface on the first attempt.
        if g == "sg-alb" && *t == 1 {
            Err(AwsError::new("DependencyViolation", "resource sg-alb has a dependent object"))
        } else {
            Ok(())
        }
    });
    m.iam
        .expect_detach_role_policy()
        .withf(|r, a| r == "tap-task-execution-dev" && a == MANAGED)
        .times(1)
        .returning(|_, _| Ok(()));
    m.iam.expect_delete_role_policy().times(4).returning(|_, _| Ok(()));
    m.iam.expect_delete_role().times(4).returning(|_| Ok(()));
    m.secrets.expect_delete_secret().times(2).returning(|_| Ok(()));
    let changes = m.step().destroy(&ctx()).await.unwrap();
    assert_eq!(summary(&changes), all_resources(Action::Delete));
    let log = log.lock().unwrap().clone();
    let last_revoke = log.iter().rposition(|l| l.starts_with("revoke")).unwrap();
    let first_delete = log.iter().position(|l| l.starts_with("delete")).unwrap();
    assert!(last_revoke < first_delete, "{log:?}");
}

#[tokio::test]
async fn destroy_gives_up_on_a_lasting_dependency() {
    let world = World { groups: converged().groups[..1].to_vec(), ..World::default() };
    let mut m = Mocks::reading(&world);
    m.ec2.expect_delete_security_group().returning(|_| Err(AwsError::new("DependencyViolation", "still in use")));
    let err = m.step().destroy(&ctx()).await.unwrap_err();
    assert!(err.to_string().contains("DependencyViolation"), "{err}");
}

#[tokio::test]
async fn policy_of_a_new_role_waits_for_iam_propagation() {
    let mut world = converged();
    world.roles.remove("tap-frontend-task-dev");
    let mut m = Mocks::reading(&world);
    m.iam
        .expect_create_role()
        .withf(|name, _, _| name == "tap-frontend-task-dev")
        .times(1)
        .returning(|name, _, _| Ok(role_arn(name)));
    let calls = Arc::new(Mutex::new(0));
    m.iam.expect_put_role_policy().withf(|role, _, _| role == "tap-frontend-task-dev").times(2).returning(
        move |_, _, _| {
            let mut n = calls.lock().unwrap();
            *n += 1;
            // The role was created a moment ago and IAM does not know it everywhere yet.
            if *n == 1 {
                Err(AwsError::new("NoSuchEntity", "The role with name tap-frontend-task-dev cannot be found."))
            } else {
                Ok(())
            }
        },
    );
    let changes = m.forbid_mutations().step().apply(&ctx()).await.unwrap();
    assert_eq!(summary(&changes), vec![("security/role/frontend-task".to_string(), Action::Create)]);
}

#[tokio::test]
async fn a_service_listed_twice_in_allow_from_is_one_rule() {
    let mut config = Config::default();
    config.services[2].allow_from = vec!["api-gateway".into(), "api-gateway".into()];
    let ctx = Context::new(config).with_region(REGION);
    ctx.put(NetworkOutputs { vpc_id: "vpc-1".into(), public_subnets: vec![], private_subnets: vec![] });
    let changes = Mocks::reading(&World::default()).forbid_mutations().step().plan(&ctx).await.unwrap();
    let processing = changes.iter().find(|c| c.resource == "security/sg/processing-service").unwrap();
    let rules: Vec<&str> = processing.attributes.iter().filter_map(|a| a.new.as_deref()).collect();
    assert_eq!(rules, vec!["tcp 9000 from tap-api-gateway-sg-dev"]);
}

/// The default config without `processing-service`, and a context over it.
fn ctx_without_processing(prune_data: bool) -> Context {
    let mut config = Config::default();
    config.services.retain(|s| s.name != "processing-service");
    config.deploy.prune_data = prune_data;
    let ctx = Context::new(config).with_region(REGION);
    ctx.put(NetworkOutputs { vpc_id: "vpc-1".into(), public_subnets: vec![], private_subnets: vec![] });
    ctx
}

/// The converged world, plus what a prune must never touch (a group without `ManagedBy=tap`, a
/// role of another environment) and a secret the config no longer declares.
fn world_with_leftovers() -> World {
    let mut world = converged();
    let mut foreign = world.groups[1].clone();
    foreign.id = "sg-hand-made".into();
    foreign.name = "tap-hand-made-sg-dev".into();
    foreign.component = Some("security/sg/hand-made".into());
    foreign.tags = vec![("Environment".into(), "dev".into()), ("tap:component".into(), "security/sg/hand-made".into())];
    world.groups.push(foreign);
    let trust = url_encode(&policy::ecs_tasks_trust_policy().to_json());
    let prod_role = "tap-processing-service-task-prod".to_string();
    world.roles.insert(
        prod_role.clone(),
        (ObservedRole { arn: role_arn(&prod_role), trust_policy: trust, tags: vec![] }, vec![], BTreeMap::new()),
    );
    let prod_tags = tap_core::naming::Names::new(&Config { environment: "prod".into(), ..Config::default() })
        .tags("security/role/processing-service-task", &prod_role);
    world.role_tags.insert(prod_role, prod_tags);
    world.tagged_secrets.push(TaggedSecret {
        name: "tap-old-token-dev".into(),
        secret: ObservedSecret {
            arn: secret_arn("tap-old-token-dev"),
            scheduled_for_deletion: false,
            tags: dev_tags("security/secret/old-token", "tap-old-token-dev"),
        },
        tags: dev_tags("security/secret/old-token", "tap-old-token-dev"),
    });
    world
}

fn services_done(ctx: &Context) {
    ctx.give_pruned(tap_core::step::Pruned::Services);
}

#[tokio::test]
async fn plan_lists_a_removed_services_group_and_role_as_deleted_and_an_undeclared_secret_as_kept() {
    // Plan lists the prune without waiting for the services step's prune.
    let ctx = ctx_without_processing(false);
    let changes = Mocks::reading(&world_with_leftovers()).forbid_mutations().step().plan(&ctx).await.unwrap();
    assert_eq!(
        summary(&changes),
        vec![
            ("security/role/processing-service-task".to_string(), Action::Delete),
            ("security/secret/old-token".to_string(), Action::Keep),
            ("security/sg/processing-service".to_string(), Action::Delete),
        ]
    );
}

#[tokio::test]
async fn prune_deletes_a_removed_services_group_and_role_after_the_services_and_keeps_the_secret() {
    let mut m = Mocks::reading(&world_with_leftovers());
    let log: Arc<Mutex<Vec<String>>> = Arc::default();
    let l = log.clone();
    // The removed group's own cross-group rule goes first, then the group.
    m.ec2
        .expect_revoke_ingress()
        .withf(|g, rules| g == "sg-processing-service" && rules == [from_group(9000, "sg-api-gateway")])
        .times(1)
        .returning(move |g, _| {
            l.lock().unwrap().push(format!("revoke {g}"));
            Ok(())
        });
    let l = log.clone();
    let tries = Arc::new(Mutex::new(0));
    m.ec2.expect_delete_security_group().withf(|g| g == "sg-processing-service").times(2).returning(move |g| {
        l.lock().unwrap().push(format!("delete {g}"));
        let mut t = tries.lock().unwrap();
        *t += 1;
        // The tasks' network interfaces are released asynchronously.
        if *t == 1 {
            Err(AwsError::new("DependencyViolation", "resource has a dependent object"))
        } else {
            Ok(())
        }
    });
    m.iam
        .expect_delete_role_policy()
        .withf(|r, p| r == "tap-processing-service-task-dev" && p == "task-permissions")
        .times(1)
        .returning(|_, _| Ok(()));
    let l = log.clone();
    m.iam.expect_delete_role().withf(|r| r == "tap-processing-service-task-dev").times(1).returning(move |r| {
        l.lock().unwrap().push(format!("delete {r}"));
        Ok(())
    });
    let step = m.forbid_mutations().step();

    let ctx = Arc::new(ctx_without_processing(false));
    ctx.expect_pruned([tap_core::step::Pruned::Services]);
    let run = tokio::spawn({
        let ctx = ctx.clone();
        async move { step.apply(&ctx).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(log.lock().unwrap().is_empty(), "nothing is deleted before the services step is done: {log:?}");
    assert!(ctx.try_get::<SecurityOutputs>().is_some(), "the outputs are published before the prune waits");
    services_done(&ctx);
    let changes = tokio::time::timeout(Duration::from_secs(10), run).await.unwrap().unwrap().unwrap();
    assert_eq!(
        summary(&changes),
        vec![
            ("security/role/processing-service-task".to_string(), Action::Delete),
            ("security/secret/old-token".to_string(), Action::Keep),
            ("security/sg/processing-service".to_string(), Action::Delete),
        ]
    );
    let log = log.lock().unwrap().clone();
    assert_eq!(log.iter().filter(|l| l.starts_with("delete sg-")).count(), 2, "{log:?}");
    assert_eq!(log[0], "revoke sg-processing-service", "{log:?}");
}

#[tokio::test]
async fn prune_data_deletes_an_undeclared_secret_for_good() {
    let mut world = world_with_leftovers();
    world.groups.retain(|g| g.name != "tap-processing-service-sg-dev");
    world.roles.remove("tap-processing-service-task-dev");
    let mut m = Mocks::reading(&world);
    m.secrets.expect_delete_secret().withf(|n| n == "tap-old-token-dev").times(1).returning(|_| Ok(()));
    let ctx = ctx_without_processing(true);
    services_done(&ctx);
    let changes = m.forbid_mutations().step().apply(&ctx).await.unwrap();
    assert_eq!(summary(&changes), vec![("security/secret/old-token".to_string(), Action::Delete)]);
}

#[tokio::test]
async fn destroy_with_a_shorter_config_finds_every_role_group_and_secret_by_tags() {
    let world = world_with_leftovers();
    let mut m = Mocks::reading(&world);
    let deleted: Arc<Mutex<Vec<String>>> = Arc::default();
    m.ec2.expect_revoke_ingress().returning(|_, _| Ok(()));
    let d = deleted.clone();
    m.ec2.expect_delete_security_group().returning(move |g| {
        d.lock().unwrap().push(g.to_string());
        Ok(())
    });
    m.iam.expect_detach_role_policy().returning(|_, _| Ok(()));
    m.iam.expect_delete_role_policy().returning(|_, _| Ok(()));
    let d = deleted.clone();
    m.iam.expect_delete_role().returning(move |r| {
        d.lock().unwrap().push(r.to_string());
        Ok(())
    });
    let d = deleted.clone();
    m.secrets.expect_delete_secret().returning(move |s| {
        d.lock().unwrap().push(s.to_string());
        Ok(())
    });
    // A one-service config.
    let mut config = Config::default();
    config.services.retain(|s| s.name == "frontend");
    let ctx = Context::new(config).with_region(REGION);
    let changes = m.step().destroy(&ctx).await.unwrap();
    let mut want = all_resources(Action::Delete);
    want.push(("security/secret/old-token".into(), Action::Delete));
    want.sort();
    assert_eq!(summary(&changes), want);
    let deleted = deleted.lock().unwrap().clone();
    assert!(
        !deleted.iter().any(|d| d == "sg-hand-made" || d.ends_with("-prod")),
        "not this environment's: {deleted:?}"
    );
}

/// The execution role's `read-secrets` naming a secret less than the config: plan lists the
/// policy's document as an update (calling nothing), apply puts exactly that document once and
/// reports exactly what plan listed.
#[tokio::test]
async fn the_execution_roles_secrets_policy_is_planned_and_applied_as_listed() {
    let mut world = converged();
    let old = policy::execution_secrets_policy(&secret_arns()[..1]).unwrap();
    let exec = world.roles.get_mut("tap-task-execution-dev").unwrap();
    exec.2.insert("read-secrets".into(), url_encode(&old.to_json()));
    let planned = Mocks::reading(&world).forbid_mutations().step().plan(&ctx()).await.unwrap();
    let id = crate::iam::EXECUTION_SECRETS_COMPONENT.to_string();
    assert_eq!(summary(&planned), vec![(id, Action::Update)]);
    let attributes: Vec<&str> = planned[0].attributes.iter().map(|a| a.attribute.as_str()).collect();
    assert_eq!(attributes, ["document"]);

    let mut m = Mocks::reading(&world);
    expect_read_secrets_put_once(&mut m);
    let applied = m.forbid_mutations().step().apply(&ctx()).await.unwrap();
    assert_eq!(applied, planned, "apply reports exactly what plan listed");
}

/// A group's delete AWS refuses while network interfaces still hold it is sent again by the
/// engine until it goes through; a group already gone (its release and its delete answered
/// not-found) is no error and no change.
#[tokio::test]
async fn a_held_group_is_deleted_once_let_go_and_one_already_gone_is_no_change() {
    let ctx = ctx();
    let groups = converged().groups;
    let held = groups.iter().find(|g| g.id == "sg-frontend").unwrap().clone();
    let gone = groups.iter().find(|g| g.id == "sg-api-gateway").unwrap().clone();
    let mut ec2 = MockEc2Api::new();
    let tries = Arc::new(Mutex::new(0));
    let t = tries.clone();
    ec2.expect_delete_security_group().withf(|g| g == "sg-frontend").times(3).returning(move |_| {
        let mut t = t.lock().unwrap();
        *t += 1;
        match *t {
            1 | 2 => Err(AwsError::new("DependencyViolation", "resource sg-frontend has a dependent object")),
            _ => Ok(()),
        }
    });
    ec2.expect_delete_security_group()
        .withf(|g| g == "sg-api-gateway")
        .times(1)
        .returning(|g| Err(AwsError::new("InvalidGroup.NotFound", format!("The security group '{g}' does not exist"))));
    // Their rules reference the load balancer's group: revoked first (the gone one's release
    // finds it gone: no error).
    ec2.expect_revoke_ingress().withf(|g, _| g == "sg-frontend").times(1).returning(|_, _| Ok(()));
    ec2.expect_revoke_ingress().withf(|g, _| g == "sg-api-gateway").times(1).returning(|g, _| {
        Err(AwsError::new("InvalidGroup.NotFound", format!("The security group '{g}' does not exist")))
    });
    let changes = crate::groups::prune(&ec2, &ctx, tap_core::Mode::Apply, &[held, gone], fast()).await.unwrap();
    let revoked = tap_core::AttrChange::new("ingress", Some("tcp 3000 from sg-alb".into()), None);
    let deleted = tap_core::Change::delete("security/sg/frontend", "tap-frontend-sg-dev");
    assert_eq!(changes, vec![tap_core::Change { attributes: vec![revoked], ..deleted }], "its release listed");
    assert_eq!(*tries.lock().unwrap(), 3, "refused twice, then deleted");
}

/// The security groups' changes of `changes`, by resource.
fn group_changes(mut changes: Vec<tap_core::Change>) -> Vec<tap_core::Change> {
    changes.retain(|c| c.resource.starts_with("security/sg/"));
    changes.sort_by(|a, b| a.resource.cmp(&b.resource));
    changes
}

/// A new environment whose api-gateway and processing-service allow each other (a cycle: no
/// order of creates gives every rule its peer's id): every group is created, then each gets
/// exactly the rules its create listed, and apply reports exactly what plan listed.
#[tokio::test]
async fn a_new_environment_whose_services_allow_each_other_is_applied_exactly_as_planned() {
    let mut config = Config::default();
    config.services[1].allow_from = vec!["processing-service".into()];
    let ctx = Context::new(config).with_region(REGION);
    ctx.put(NetworkOutputs { vpc_id: "vpc-1".into(), public_subnets: vec![], private_subnets: vec![] });
    let converge = |ec2: MockEc2Api, mode| {
        let ctx = &ctx;
        async move {
            let (ids, _) = tokio::sync::oneshot::channel();
            crate::groups::converge(&ec2, ctx, mode, ids).await.unwrap().changes
        }
    };
    let plan = converge(Mocks::reading(&World::default()).forbid_mutations().ec2, tap_core::Mode::Plan).await;

    let mut m = Mocks::reading(&World::default());
    let log: Arc<Mutex<Vec<String>>> = Arc::default();
    let l = log.clone();
    m.ec2.expect_create_security_group().times(4).returning(move |name, _, _, _| {
        l.lock().unwrap().push(format!("create {name}"));
        Ok(sg_id(name))
    });
    let authorized: Arc<Mutex<BTreeMap<String, Vec<Rule>>>> = Arc::default();
    let (a, l) = (authorized.clone(), log.clone());
    m.ec2.expect_authorize_ingress().times(4).returning(move |g, rules| {
        l.lock().unwrap().push(format!("authorize {g}"));
        assert!(a.lock().unwrap().insert(g.to_string(), rules.to_vec()).is_none(), "once per group");
        Ok(())
    });
    let apply = converge(m.forbid_mutations().ec2, tap_core::Mode::Apply).await;
    assert_eq!(group_changes(apply.clone()), group_changes(plan.clone()), "attribute by attribute");
    assert_eq!(apply.len(), 4, "four creates, nothing more: {apply:?}");

    // What each group got is what its create listed, its peers named by their new ids.
    let listed = |resource: &str| -> Vec<String> {
        let change = apply.iter().find(|c| c.resource == resource).unwrap();
        change.attributes.iter().map(|a| a.new.clone().unwrap()).collect()
    };
    assert_eq!(
        listed("security/sg/api-gateway"),
        ["tcp 8080 from tap-alb-sg-dev", "tcp 8080 from tap-processing-service-sg-dev"]
    );
    assert_eq!(listed("security/sg/processing-service"), ["tcp 9000 from tap-api-gateway-sg-dev"]);
    let authorized = authorized.lock().unwrap().clone();
    assert_eq!(authorized["sg-api-gateway"], [from_group(8080, "sg-alb"), from_group(8080, "sg-processing-service")]);
    assert_eq!(authorized["sg-processing-service"], [from_group(9000, "sg-api-gateway")]);
    assert_eq!(authorized["sg-frontend"], [from_group(3000, "sg-alb")]);
    assert_eq!(authorized["sg-alb"], [anywhere(80), anywhere(443)]);
    let log = log.lock().unwrap().clone();
    assert!(log[..4].iter().all(|l| l.starts_with("create")), "every group exists before any rule: {log:?}");
}

/// Two groups the config no longer declares, each allowing the other: plan lists each delete
/// with the rule its release revokes; apply revokes both before deleting either and reports
/// exactly what plan listed.
#[tokio::test]
async fn a_prune_of_two_groups_naming_each_other_is_applied_exactly_as_planned() {
    let mut world = converged();
    let old = |name: &str, peer: &str| ObservedGroup {
        id: format!("sg-{name}"),
        name: format!("tap-{name}-sg-dev"),
        vpc_id: "vpc-1".into(),
        component: Some(format!("security/sg/{name}")),
        tags: dev_tags(&format!("security/sg/{name}"), &format!("tap-{name}-sg-dev")),
        ingress: vec![from_group(7000, &format!("sg-{peer}")), anywhere(7001)],
        egress: vec![egress_all()],
    };
    world.groups.extend([old("old-a", "old-b"), old("old-b", "old-a")]);
    let plan = Mocks::reading(&world).forbid_mutations().step().plan(&ctx()).await.unwrap();

    let mut m = Mocks::reading(&world);
    let log: Arc<Mutex<Vec<String>>> = Arc::default();
    let l = log.clone();
    m.ec2.expect_revoke_ingress().times(2).returning(move |g, rules| {
        let peer = if g == "sg-old-a" { "sg-old-b" } else { "sg-old-a" };
        assert_eq!(rules, [from_group(7000, peer)], "only the rule naming a group");
        l.lock().unwrap().push(format!("revoke {g}"));
        Ok(())
    });
    let l = log.clone();
    m.ec2.expect_delete_security_group().times(2).returning(move |g| {
        l.lock().unwrap().push(format!("delete {g}"));
        Ok(())
    });
    let ctx = ctx();
    services_done(&ctx);
    let apply = m.forbid_mutations().step().apply(&ctx).await.unwrap();
    assert_eq!(group_changes(apply), group_changes(plan.clone()), "attribute by attribute");
    let listed = group_changes(plan);
    assert_eq!(listed.len(), 2, "{listed:?}");
    let revoked = tap_core::AttrChange::new("ingress", Some("tcp 7000 from sg-old-b".into()), None);
    assert_eq!((listed[0].action, &listed[0].attributes), (Action::Delete, &vec![revoked]));
    let log = log.lock().unwrap().clone();
    assert!(log[..2].iter().all(|l| l.starts_with("revoke")) && log.len() == 4, "{log:?}");
}

/// Destroy lists (plan) and does (apply) the same: each group's delete with the rules its
/// release revokes. The revokes go out at once, while the services and the load balancer are
/// still going; the deletes once they are gone.
#[tokio::test]
async fn destroy_revokes_while_the_holders_go_and_lists_what_it_does() {
    let ec2 = Mocks::reading(&converged()).forbid_mutations().ec2;
    let plan = crate::groups::destroy(&ec2, &ctx(), tap_core::Mode::Plan, fast()).await.unwrap();
    assert_eq!(plan.len(), 4);

    let mut m = Mocks::reading(&converged());
    let log: Arc<Mutex<Vec<String>>> = Arc::default();
    let l = log.clone();
    m.ec2.expect_revoke_ingress().times(3).returning(move |g, _| {
        l.lock().unwrap().push(format!("revoke {g}"));
        Ok(())
    });
    let l = log.clone();
    m.ec2.expect_delete_security_group().times(4).returning(move |g| {
        l.lock().unwrap().push(format!("delete {g}"));
        Ok(())
    });
    let ec2 = m.forbid_mutations().ec2;
    let ctx = ctx();
    ctx.expect_gone([tap_core::step::Gone::EcsServices, tap_core::step::Gone::LoadBalancer]);
    let destroy = crate::groups::destroy(&ec2, &ctx, tap_core::Mode::Apply, fast());
    let holders = async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let seen = log.lock().unwrap().clone();
        assert_eq!(seen.len(), 3, "the revokes, no delete, while the holders go: {seen:?}");
        ctx.give(tap_core::step::Gone::EcsServices);
        ctx.give(tap_core::step::Gone::LoadBalancer);
    };
    let (apply, ()) = tokio::join!(destroy, holders);
    assert_eq!(group_changes(apply.unwrap()), group_changes(plan), "attribute by attribute");
    assert_eq!(log.lock().unwrap().len(), 7);
}
