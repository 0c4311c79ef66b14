//! Typed IAM policy documents (serialized with `serde_json`), the desired documents of every role,
//! and the semantic comparison of a desired document with the one IAM returns.
//!
//! IAM returns documents URL-encoded and in whatever shape they were written (`"Action": "x"` or
//! `"Action": ["x"]`), so [`same_policy`] decodes, parses and normalizes both sides before
//! comparing: a role is only updated when its policy really differs.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;
use tap_core::config::{ServiceSpec, TaskPermission};
use tap_core::naming::Names;

/// The policy language version every document uses.
pub const POLICY_VERSION: &str = "2012-10-17";

/// Name of the execution role's inline policy that reads the secrets.
pub const EXECUTION_SECRETS_POLICY: &str = "read-secrets";
/// Name of each task role's inline policy.
pub const TASK_POLICY: &str = "task-permissions";

/// An IAM policy document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct PolicyDocument {
    /// Always [`POLICY_VERSION`].
    pub version: &'static str,
    /// The statements.
    pub statement: Vec<Statement>,
}

/// `Allow` or `Deny`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Effect {
    /// Grants the actions.
    Allow,
    /// Denies the actions.
    Deny,
}

/// Who may assume a role (trust policies only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Principal {
    /// AWS service principals, e.g. `ecs-tasks.amazonaws.com`.
    pub service: Vec<String>,
}

/// One statement of a policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Statement {
    /// Statement id, for people reading the policy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    /// Allow or deny.
    pub effect: Effect,
    /// The principal (trust policies only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub principal: Option<Principal>,
    /// Actions, never `*`.
    pub action: Vec<String>,
    /// Resources (absent in trust policies).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource: Option<Vec<String>>,
    /// Condition operator → key → value.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub condition: Option<BTreeMap<String, BTreeMap<String, String>>>,
}

impl Statement {
    fn allow(sid: &str, actions: &[&str], resources: Vec<String>) -> Self {
        Statement {
            sid: Some(sid.into()),
            effect: Effect::Allow,
            principal: None,
            action: actions.iter().map(|a| a.to_string()).collect(),
            resource: Some(resources),
            condition: None,
        }
    }
}

impl PolicyDocument {
    /// A document with these statements.
    pub fn new(statement: Vec<Statement>) -> Self {
        PolicyDocument { version: POLICY_VERSION, statement }
    }

    /// The JSON IAM receives.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("policy documents are plain data and always serialize")
    }

    /// The document as a JSON value.
    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).expect("policy documents are plain data and always serialize")
    }
}

/// The account, partition and region ARNs are built with (the first two parsed from a role ARN).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArnParts {
    /// `aws`, `aws-cn`, `aws-us-gov`, …
    pub partition: String,
    /// The 12-digit account id.
    pub account: String,
    /// The region of the run.
    pub region: String,
}

impl ArnParts {
    /// Partition and account of `role_arn` (`arn:{partition}:iam::{account}:role/{name}`), with
    /// `region`; `None` when the ARN is not of that shape.
    pub fn from_role_arn(role_arn: &str, region: &str) -> Option<Self> {
        let mut parts = role_arn.splitn(6, ':');
        let (arn, partition, service, _region, account) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if arn != "arn" || service != "iam" || partition.is_empty() || account.is_empty() {
            return None;
        }
        Some(ArnParts { partition: partition.into(), account: account.into(), region: region.into() })
    }
}

/// The trust policy of every role: ECS tasks may assume it.
pub fn ecs_tasks_trust_policy() -> PolicyDocument {
    PolicyDocument::new(vec![Statement {
        sid: None,
        effect: Effect::Allow,
        principal: Some(Principal { service: vec!["ecs-tasks.amazonaws.com".into()] }),
        action: vec!["sts:AssumeRole".into()],
        resource: None,
        condition: None,
    }])
}

/// Trust policy of the role ECS itself assumes (the infrastructure role for load balancers).
pub fn ecs_trust_policy() -> PolicyDocument {
    PolicyDocument::new(vec![Statement {
        sid: None,
        effect: Effect::Allow,
        principal: Some(Principal { service: vec!["ecs.amazonaws.com".into()] }),
        action: vec!["sts:AssumeRole".into()],
        resource: None,
        condition: None,
    }])
}

/// The AWS-managed policy of the ECS infrastructure role for load balancers: what ECS needs to
/// move traffic between a service's target groups on its listener rules.
pub fn infrastructure_managed_policy_arn(partition: &str) -> String {
    format!("arn:{partition}:iam::aws:policy/AmazonECSInfrastructureRolePolicyForLoadBalancers")
}

/// The AWS-managed policy attached to the execution role (pull images, write logs).
pub fn execution_managed_policy_arn(partition: &str) -> String {
    format!("arn:{partition}:iam::aws:policy/service-role/AmazonECSTaskExecutionRolePolicy")
}

/// The execution role's inline policy: `secretsmanager:GetSecretValue` on exactly these secret
/// ARNs; `None` when there are no secrets (an empty `Resource` is not a valid policy).
pub fn execution_secrets_policy(secret_arns: &[String]) -> Option<PolicyDocument> {
    if secret_arns.is_empty() {
        return None;
    }
    Some(PolicyDocument::new(vec![Statement::allow(
        "ReadSecrets",
        &["secretsmanager:GetSecretValue"],
        secret_arns.to_vec(),
    )]))
}

/// A service's task role policy: write to its own log group, plus its extra permissions.
pub fn task_policy(names: &Names, service: &ServiceSpec, arn: &ArnParts) -> PolicyDocument {
    let ArnParts { partition, account, region } = arn;
    let log_group = names.log_group(&service.name);
    let mut statements = vec![Statement::allow(
        "WriteOwnLogs",
        &["logs:CreateLogStream", "logs:PutLogEvents"],
        vec![format!("arn:{partition}:logs:{region}:{account}:log-group:{log_group}:*")],
    )];
    let mut permissions = service.permissions.clone();
    permissions.sort();
    permissions.dedup();
    for permission in permissions {
        match permission {
            TaskPermission::DiscoverInstances => statements.push(Statement {
                // Cloud Map offers no resource scope for DiscoverInstances: the namespace condition limits it.
                condition: Some(BTreeMap::from([(
                    "StringEquals".to_string(),
                    BTreeMap::from([("servicediscovery:NamespaceName".to_string(), names.namespace())]),
                )])),
                ..Statement::allow(
                    "DiscoverInstancesInNamespace",
                    &["servicediscovery:DiscoverInstances"],
                    vec!["*".into()],
                )
            }),
            TaskPermission::TradeDataBucket => {
                let bucket = names.trade_data_bucket();
                statements.push(Statement::allow(
                    "TradeDataObjects",
                    &["s3:GetObject", "s3:PutObject", "s3:DeleteObject"],
                    vec![format!("arn:{partition}:s3:::{bucket}/*")],
                ));
                statements.push(Statement::allow(
                    "TradeDataList",
                    &["s3:ListBucket"],
                    vec![format!("arn:{partition}:s3:::{bucket}")],
                ));
            }
        }
    }
    PolicyDocument::new(statements)
}

/// Decodes a document as IAM returns it: URL-encoded (RFC 3986) JSON, or plain JSON.
pub fn decode_document(raw: &str) -> Option<Value> {
    if let Ok(v) = serde_json::from_str(raw) {
        return Some(v);
    }
    let decoded = percent_decode(raw, false)?;
    serde_json::from_str(&decoded).ok().or_else(|| serde_json::from_str(&percent_decode(raw, true)?).ok())
}

/// `%XX` → byte; with `plus_is_space`, `+` → space (form encoding).
fn percent_decode(raw: &str, plus_is_space: bool) -> Option<String> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = raw.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// A policy in a canonical shape: single values become one-element lists and order-free lists are
/// sorted (statements; actions and resources; principal and condition values).
pub fn normalize(policy: &Value) -> Value {
    match policy {
        Value::Object(doc) => Value::Object(
            doc.iter()
                .map(|(k, v)| {
                    let v = if k == "Statement" { sorted_list(map_list(v, normalize_statement)) } else { v.clone() };
                    (k.clone(), v)
                })
                .collect(),
        ),
        other => other.clone(),
    }
}

fn map_list(value: &Value, f: fn(&Value) -> Value) -> Value {
    match value {
        Value::Array(items) => Value::Array(items.iter().map(f).collect()),
        single => Value::Array(vec![f(single)]),
    }
}

fn normalize_statement(statement: &Value) -> Value {
    let Value::Object(s) = statement else { return statement.clone() };
    Value::Object(
        s.iter()
            .map(|(k, v)| {
                let v = match k.as_str() {
                    "Action" | "NotAction" | "Resource" | "NotResource" => sorted_list(v.clone()),
                    "Principal" | "NotPrincipal" => values_as_lists(v),
                    "Condition" => match v {
                        Value::Object(ops) => {
                            Value::Object(ops.iter().map(|(op, m)| (op.clone(), values_as_lists(m))).collect())
                        }
                        other => other.clone(),
                    },
                    _ => v.clone(),
                };
                (k.clone(), v)
            })
            .collect(),
    )
}

// `{"k": "v"}` → `{"k": ["v"]}`, lists sorted.
fn values_as_lists(value: &Value) -> Value {
    match value {
        Value::Object(m) => Value::Object(m.iter().map(|(k, v)| (k.clone(), sorted_list(v.clone()))).collect()),
        other => other.clone(),
    }
}

fn sorted_list(value: Value) -> Value {
    let mut items = match value {
        Value::Array(items) => items,
        other => vec![other],
    };
    items.sort_by_key(|v| v.to_string());
    Value::Array(items)
}

/// Whether the document IAM returned (`observed`, raw) means the same as `desired`.
pub fn same_policy(observed: &str, desired: &PolicyDocument) -> bool {
    decode_document(observed).is_some_and(|v| normalize(&v) == normalize(&desired.to_value()))
}

/// Whether any statement allows every action (`"Action": "*"` or `["*"]`).
pub fn has_wildcard_action(policy: &Value) -> bool {
    let statements = match policy.get("Statement") {
        Some(Value::Array(s)) => s.clone(),
        Some(other) => vec![other.clone()],
        None => vec![],
    };
    statements.iter().any(|s| match s.get("Action") {
        Some(Value::String(a)) => a == "*",
        Some(Value::Array(a)) => a.iter().any(|x| x == "*"),
        _ => false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use tap_core::Config;

    fn parts() -> ArnParts {
        ArnParts::from_role_arn("arn:aws:iam::123456789012:role/tap-frontend-task-dev", "eu-west-1").unwrap()
    }

    fn policy_of(service: &str) -> Value {
        let config = Config::default();
        let names = Names::new(&config);
        task_policy(&names, config.service(service).unwrap(), &parts()).to_value()
    }

    #[test]
    fn parses_partition_and_account_from_role_arn() {
        let p = ArnParts::from_role_arn("arn:aws-cn:iam::111122223333:role/path/x", "cn-north-1").unwrap();
        assert_eq!(
            (p.partition.as_str(), p.account.as_str(), p.region.as_str()),
            ("aws-cn", "111122223333", "cn-north-1")
        );
        assert!(ArnParts::from_role_arn("not-an-arn", "r").is_none());
        assert!(ArnParts::from_role_arn("arn:aws:s3:::bucket", "r").is_none());
    }

    #[test]
    fn trust_policy_is_ecs_tasks_only() {
        assert_eq!(
            ecs_tasks_trust_policy().to_value(),
            json!({"Version": "2012-10-17", "Statement": [{
                "Effect": "Allow",
                "Principal": {"Service": ["ecs-tasks.amazonaws.com"]},
                "Action": ["sts:AssumeRole"]
            }]})
        );
    }

    #[test]
    fn execution_policy_reads_exactly_the_secrets() {
        let arns = vec![
            "arn:aws:secretsmanager:eu-west-1:123456789012:secret:tap-db-credentials-dev-AbCdEf".to_string(),
            "arn:aws:secretsmanager:eu-west-1:123456789012:secret:tap-api-keys-dev-GhIjKl".to_string(),
        ];
        let doc = execution_secrets_policy(&arns).unwrap().to_value();
        assert_eq!(
            doc,
            json!({"Version": "2012-10-17", "Statement": [{
                "Sid": "ReadSecrets",
                "Effect": "Allow",
                "Action": ["secretsmanager:GetSecretValue"],
                "Resource": [
                    "arn:aws:secretsmanager:eu-west-1:123456789012:secret:tap-db-credentials-dev-AbCdEf",
                    "arn:aws:secretsmanager:eu-west-1:123456789012:secret:tap-api-keys-dev-GhIjKl"
                ]
            }]})
        );
        assert!(!has_wildcard_action(&doc));
        assert!(execution_secrets_policy(&[]).is_none());
        assert_eq!(
            execution_managed_policy_arn("aws"),
            "arn:aws:iam::aws:policy/service-role/AmazonECSTaskExecutionRolePolicy"
        );
    }

    #[test]
    fn frontend_policy_writes_its_own_logs_only() {
        let doc = policy_of("frontend");
        assert_eq!(
            doc,
            json!({"Version": "2012-10-17", "Statement": [{
                "Sid": "WriteOwnLogs",
                "Effect": "Allow",
                "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
                "Resource": ["arn:aws:logs:eu-west-1:123456789012:log-group:/ecs/tap-frontend-dev:*"]
            }]})
        );
        assert!(!has_wildcard_action(&doc));
    }

    #[test]
    fn api_gateway_policy_discovers_in_its_namespace_only() {
        let doc = policy_of("api-gateway");
        assert_eq!(
            doc,
            json!({"Version": "2012-10-17", "Statement": [
                {
                    "Sid": "WriteOwnLogs",
                    "Effect": "Allow",
                    "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
                    "Resource": ["arn:aws:logs:eu-west-1:123456789012:log-group:/ecs/tap-api-gateway-dev:*"]
                },
                {
                    "Sid": "DiscoverInstancesInNamespace",
                    "Effect": "Allow",
                    "Action": ["servicediscovery:DiscoverInstances"],
                    "Resource": ["*"],
                    "Condition": {"StringEquals": {"servicediscovery:NamespaceName": "tap-dev.local"}}
                }
            ]})
        );
        assert!(!has_wildcard_action(&doc));
    }

    #[test]
    fn processing_policy_reaches_the_trade_data_bucket_only() {
        let doc = policy_of("processing-service");
        assert_eq!(
            doc,
            json!({"Version": "2012-10-17", "Statement": [
                {
                    "Sid": "WriteOwnLogs",
                    "Effect": "Allow",
                    "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
                    "Resource": ["arn:aws:logs:eu-west-1:123456789012:log-group:/ecs/tap-processing-service-dev:*"]
                },
                {
                    "Sid": "TradeDataObjects",
                    "Effect": "Allow",
                    "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"],
                    "Resource": ["arn:aws:s3:::tap-trade-data-dev/*"]
                },
                {
                    "Sid": "TradeDataList",
                    "Effect": "Allow",
                    "Action": ["s3:ListBucket"],
                    "Resource": ["arn:aws:s3:::tap-trade-data-dev"]
                }
            ]})
        );
        assert!(!has_wildcard_action(&doc));
    }

    #[test]
    fn wildcard_action_is_detected() {
        assert!(has_wildcard_action(&json!({"Statement": {"Effect": "Allow", "Action": "*", "Resource": "*"}})));
        assert!(has_wildcard_action(&json!({"Statement": [{"Effect": "Allow", "Action": ["s3:GetObject", "*"]}]})));
        assert!(!has_wildcard_action(
            &json!({"Statement": [{"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"}]})
        ));
    }

    #[test]
    fn url_encoded_single_value_document_is_the_same_policy() {
        // What IAM returns for a document written by hand with single values instead of lists.
        let raw = "%7B%22Version%22%3A%20%222012-10-17%22%2C%20%22Statement%22%3A%20%7B%22Effect%22%3A%20%22Allow%22%2C%20\
                   %22Principal%22%3A%20%7B%22Service%22%3A%20%22ecs-tasks.amazonaws.com%22%7D%2C%20%22Action%22%3A%20%22sts%3AAssumeRole%22%7D%7D";
        assert!(same_policy(raw, &ecs_tasks_trust_policy()));
        assert!(same_policy(&ecs_tasks_trust_policy().to_json(), &ecs_tasks_trust_policy()));
        let other = raw.replace("ecs-tasks", "ec2");
        assert!(!same_policy(&other, &ecs_tasks_trust_policy()));
        assert!(!same_policy("%7Bnot json", &ecs_tasks_trust_policy()));
    }

    #[test]
    fn order_of_actions_and_condition_shape_do_not_matter() {
        let config = Config::default();
        let names = Names::new(&config);
        let desired = task_policy(&names, config.service("api-gateway").unwrap(), &parts());
        let mut reordered = desired.to_value();
        reordered["Statement"][0]["Action"] = json!(["logs:PutLogEvents", "logs:CreateLogStream"]);
        reordered["Statement"][1]["Condition"]["StringEquals"]["servicediscovery:NamespaceName"] =
            json!(["tap-dev.local"]);
        reordered["Statement"][1]["Resource"] = json!("*");
        assert!(same_policy(&reordered.to_string(), &desired));
        reordered["Statement"][1]["Condition"]["StringEquals"]["servicediscovery:NamespaceName"] =
            json!("tap-prod.local");
        assert!(!same_policy(&reordered.to_string(), &desired));
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%20b%2Fc+d", false).unwrap(), "a b/c+d");
        assert_eq!(percent_decode("a+b", true).unwrap(), "a b");
        assert!(percent_decode("%4", false).is_none());
        assert!(percent_decode("%zz", false).is_none());
    }
}
