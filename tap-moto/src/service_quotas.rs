//! A Service Quotas double for the proxy ([`crate::proxy::Proxy::set_quotas`]): moto's own Service
//! Quotas knows only the `vpc` service's defaults and lacks `GetAWSDefaultServiceQuota`.
//!
//! It answers, in the awsJson 1.1 protocol (`X-Amz-Target: ServiceQuotasV20190624.<Op>`), as the
//! Service Quotas API Reference describes them:
//! - `GetServiceQuota` `{ServiceCode, QuotaCode}` → `{"Quota": ServiceQuota}`: the account's
//!   applied value (set by a test), else AWS's default from the double's own table;
//! - `GetAWSDefaultServiceQuota` → `{"Quota": ServiceQuota}` with the default value;
//! - `ListServiceQuotas` / `ListAWSDefaultServiceQuotas` `{ServiceCode, NextToken, MaxResults}` →
//!   `{"Quotas": [ServiceQuota], "NextToken"}` (pages of `MaxResults`, 100 by default).
//!
//! A `ServiceQuota` has `ServiceCode`, `ServiceName`, `QuotaArn`
//! (`arn:aws:servicequotas:<region>:<account>:<service>/<code>`; no account in a default's ARN),
//! `QuotaCode`, `QuotaName`, `Value`, `Unit` (`None`), `Adjustable`, `GlobalQuota`. Errors:
//! `NoSuchResourceException` for a service or quota code the table does not hold, and for a
//! global quota asked outside `us-east-1` (AWS answers global quotas there only);
//! `IllegalArgumentException` for a missing `ServiceCode` or `QuotaCode`, or an unparsable
//! `NextToken` / `MaxResults` out of 1..=100.
//!
//! Left out: every other operation (quota increase requests, templates, tags, utilization), the
//! `UsageMetric` and `Period` fields, `QuotaAppliedAtLevel` / `ContextId` (resource-level quotas),
//! `AccessDeniedException` (every caller may read), per-region applied values (a value set applies
//! in every region), and every service and quota the table below does not hold.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde_json::{json, Value};

use crate::rollout::Reply;

/// The account id of the quota ARNs (moto's default account).
const ACCOUNT: &str = "123456789012";

/// One quota of the double's table: AWS's documented default.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DefaultQuota {
    /// Service code.
    pub service_code: &'static str,
    /// Service name.
    pub service_name: &'static str,
    /// Quota code.
    pub quota_code: &'static str,
    /// Quota name.
    pub quota_name: &'static str,
    /// Default value.
    pub value: f64,
    /// Whether an increase can be requested.
    pub adjustable: bool,
    /// A global quota (answered in `us-east-1` only).
    pub global: bool,
}

const EC2: &str = "Amazon Elastic Compute Cloud (Amazon EC2)";
const VPC: &str = "Amazon Virtual Private Cloud (Amazon VPC)";
const ELB: &str = "Elastic Load Balancing (ELB)";
const FARGATE: &str = "AWS Fargate";
const IAM: &str = "AWS Identity and Access Management (IAM)";

const fn quota(
    service_code: &'static str,
    service_name: &'static str,
    quota_code: &'static str,
    quota_name: &'static str,
    value: f64,
    adjustable: bool,
) -> DefaultQuota {
    DefaultQuota { service_code, service_name, quota_code, quota_name, value, adjustable, global: false }
}

/// The double's defaults, from AWS's documentation: the EC2 User Guide's Elastic IP quota; "Amazon
/// VPC quotas"; "Quotas for your Application Load Balancers"; the General Reference's "Amazon ECS
/// endpoints and quotas" (Fargate On-Demand vCPUs 6; Spot taken as the same); "IAM and AWS STS
/// quotas".
pub const DEFAULTS: &[DefaultQuota] = &[
    quota("ec2", EC2, "L-0263D0A3", "EC2-VPC Elastic IPs", 5.0, true),
    quota("vpc", VPC, "L-F678F1CE", "VPCs per Region", 5.0, true),
    quota("vpc", VPC, "L-A4707A72", "Internet gateways per Region", 5.0, true),
    quota("vpc", VPC, "L-FE5A380F", "NAT gateways per Availability Zone", 5.0, true),
    quota("vpc", VPC, "L-407747CB", "Subnets per VPC", 200.0, true),
    quota("vpc", VPC, "L-E79EC296", "VPC security groups per Region", 2500.0, true),
    quota("elasticloadbalancing", ELB, "L-53DA6B97", "Application Load Balancers per Region", 50.0, true),
    quota("elasticloadbalancing", ELB, "L-B22855CB", "Target Groups per Region", 3000.0, true),
    quota("fargate", FARGATE, "L-3032A538", "Fargate On-Demand vCPU resource count", 6.0, true),
    quota("fargate", FARGATE, "L-36FBB829", "Fargate Spot vCPU resource count", 6.0, true),
    DefaultQuota {
        service_code: "iam",
        service_name: IAM,
        quota_code: "L-FE177D64",
        quota_name: "Roles per account",
        value: 1000.0,
        adjustable: true,
        global: true,
    },
];

/// The double: the account's applied values over [`DEFAULTS`].
#[derive(Debug, Default)]
pub struct ServiceQuotas {
    applied: Mutex<BTreeMap<(String, String), f64>>,
}

/// The operations the double answers.
pub const OPERATIONS: [&str; 4] =
    ["GetServiceQuota", "GetAWSDefaultServiceQuota", "ListServiceQuotas", "ListAWSDefaultServiceQuotas"];

impl ServiceQuotas {
    /// A double with `applied` values: (service code, quota code) → value.
    pub fn new(applied: impl IntoIterator<Item = ((String, String), f64)>) -> ServiceQuotas {
        ServiceQuotas { applied: Mutex::new(applied.into_iter().collect()) }
    }

    /// Sets the account's applied value of a quota.
    pub fn set(&self, service_code: &str, quota_code: &str, value: f64) {
        self.applied
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert((service_code.to_owned(), quota_code.to_owned()), value);
    }

    /// The answer to `operation` of Service Quotas (`target` is the `X-Amz-Target` header's
    /// prefix check: only `ServiceQuotasV20190624` calls are the double's), or `None` when it is
    /// not one the double answers.
    pub fn answer(&self, operation: &str, region: &str, body: &[u8]) -> Option<Reply> {
        if !OPERATIONS.contains(&operation) {
            return None;
        }
        let request: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        let text = |k: &str| request.get(k).and_then(Value::as_str).map(str::to_owned);
        let Some(service) = text("ServiceCode") else {
            return Some(Reply::error("IllegalArgumentException", "ServiceCode is required"));
        };
        let known: Vec<&DefaultQuota> = DEFAULTS.iter().filter(|q| q.service_code == service).collect();
        if known.is_empty() {
            return Some(no_such_resource());
        }
        let applied = operation == "GetServiceQuota" || operation == "ListServiceQuotas";
        match operation {
            "GetServiceQuota" | "GetAWSDefaultServiceQuota" => {
                let Some(code) = text("QuotaCode") else {
                    return Some(Reply::error("IllegalArgumentException", "QuotaCode is required"));
                };
                let Some(q) = known.iter().find(|q| q.quota_code == code) else {
                    return Some(no_such_resource());
                };
                if q.global && region != "us-east-1" {
                    return Some(no_such_resource());
                }
                Some(Reply::ok(json!({"Quota": self.shape(q, region, applied)})))
            }
            _ => {
                let start = match text("NextToken").map(|t| t.parse::<usize>()) {
                    None => 0,
                    Some(Ok(n)) => n,
                    Some(Err(_)) => return Some(Reply::error("IllegalArgumentException", "Invalid NextToken")),
                };
                let max = request.get("MaxResults").and_then(Value::as_u64).unwrap_or(100) as usize;
                if !(1..=100).contains(&max) {
                    return Some(Reply::error("IllegalArgumentException", "MaxResults must be between 1 and 100"));
                }
                let listed: Vec<&&DefaultQuota> = known.iter().filter(|q| !q.global || region == "us-east-1").collect();
                let page: Vec<Value> =
                    listed.iter().skip(start).take(max).map(|q| self.shape(q, region, applied)).collect();
                let mut out = json!({"Quotas": page});
                if start + max < listed.len() {
                    out["NextToken"] = json!((start + max).to_string());
                }
                Some(Reply::ok(out))
            }
        }
    }

    /// A `ServiceQuota` object: the applied value when `applied` and one is set, else the default.
    fn shape(&self, q: &DefaultQuota, region: &str, applied: bool) -> Value {
        let set = self
            .applied
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(q.service_code.to_owned(), q.quota_code.to_owned()))
            .copied();
        let value = if applied { set.unwrap_or(q.value) } else { q.value };
        let account = if applied { ACCOUNT } else { "" };
        json!({
            "ServiceCode": q.service_code,
            "ServiceName": q.service_name,
            "QuotaArn": format!("arn:aws:servicequotas:{region}:{account}:{}/{}", q.service_code, q.quota_code),
            "QuotaCode": q.quota_code,
            "QuotaName": q.quota_name,
            "Value": value,
            "Unit": "None",
            "Adjustable": q.adjustable,
            "GlobalQuota": q.global,
        })
    }
}

fn no_such_resource() -> Reply {
    Reply::error("NoSuchResourceException", "The request failed because the specified service does not exist.")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(sq: &ServiceQuotas, op: &str, region: &str, body: Value) -> (u16, Value) {
        let reply = sq.answer(op, region, body.to_string().as_bytes()).expect("the double's operation");
        (reply.status, serde_json::from_str(&reply.body).unwrap())
    }

    #[test]
    fn an_applied_value_is_the_accounts_and_the_default_stays_awss() {
        let sq = ServiceQuotas::default();
        sq.set("ec2", "L-0263D0A3", 5.0);
        sq.set("vpc", "L-F678F1CE", 8.0);
        let body = json!({"ServiceCode": "vpc", "QuotaCode": "L-F678F1CE"});
        let (status, got) = call(&sq, "GetServiceQuota", "eu-west-1", body.clone());
        assert_eq!(status, 200);
        let q = &got["Quota"];
        assert_eq!(q["Value"], 8.0);
        assert_eq!(q["QuotaName"], "VPCs per Region");
        assert_eq!(q["QuotaArn"], "arn:aws:servicequotas:eu-west-1:123456789012:vpc/L-F678F1CE");
        for field in ["ServiceCode", "ServiceName", "QuotaCode", "Unit", "Adjustable", "GlobalQuota"] {
            assert!(!q[field].is_null(), "{field} in {q}");
        }
        let (_, default) = call(&sq, "GetAWSDefaultServiceQuota", "eu-west-1", body);
        assert_eq!(default["Quota"]["Value"], 5.0);
        assert_eq!(default["Quota"]["QuotaArn"], "arn:aws:servicequotas:eu-west-1::vpc/L-F678F1CE");
        let (_, unset) =
            call(&sq, "GetServiceQuota", "eu-west-1", json!({"ServiceCode": "fargate", "QuotaCode": "L-3032A538"}));
        assert_eq!(unset["Quota"]["Value"], 6.0, "an unset code answers AWS's default");
    }

    #[test]
    fn unknown_codes_global_quotas_elsewhere_and_bad_requests_are_errors() {
        let sq = ServiceQuotas::default();
        let error = |op, region, body: Value| {
            let reply = sq.answer(op, region, body.to_string().as_bytes()).unwrap();
            (reply.status, reply.error_type.unwrap_or_default())
        };
        let nsr = (400, "NoSuchResourceException".to_owned());
        assert_eq!(error("GetServiceQuota", "eu-west-1", json!({"ServiceCode": "ec2", "QuotaCode": "L-NOPE"})), nsr);
        assert_eq!(
            error("GetServiceQuota", "eu-west-1", json!({"ServiceCode": "nope", "QuotaCode": "L-0263D0A3"})),
            nsr
        );
        let iam = json!({"ServiceCode": "iam", "QuotaCode": "L-FE177D64"});
        assert_eq!(error("GetServiceQuota", "eu-west-1", iam.clone()), nsr, "global quotas live in us-east-1");
        assert_eq!(call(&sq, "GetServiceQuota", "us-east-1", iam).1["Quota"]["GlobalQuota"], true);
        let illegal = (400, "IllegalArgumentException".to_owned());
        assert_eq!(error("GetServiceQuota", "eu-west-1", json!({"ServiceCode": "ec2"})), illegal);
        assert_eq!(error("ListServiceQuotas", "eu-west-1", json!({"ServiceCode": "vpc", "MaxResults": 0})), illegal);
        assert!(sq.answer("RequestServiceQuotaIncrease", "eu-west-1", b"{}").is_none(), "not the double's");
    }

    #[test]
    fn lists_page_with_next_tokens() {
        let sq = ServiceQuotas::default();
        sq.set("vpc", "L-F678F1CE", 9.0);
        let (_, first) = call(&sq, "ListServiceQuotas", "eu-west-1", json!({"ServiceCode": "vpc", "MaxResults": 4}));
        assert_eq!(first["Quotas"].as_array().unwrap().len(), 4);
        let token = first["NextToken"].as_str().unwrap().to_owned();
        let (_, rest) = call(
            &sq,
            "ListServiceQuotas",
            "eu-west-1",
            json!({"ServiceCode": "vpc", "MaxResults": 4, "NextToken": token}),
        );
        let rest = rest["Quotas"].as_array().unwrap().clone();
        assert_eq!(rest.len(), 1);
        assert!(first["Quotas"].as_array().unwrap().iter().chain(&rest).any(|q| q["Value"] == 9.0));
        let (_, defaults) = call(&sq, "ListAWSDefaultServiceQuotas", "eu-west-1", json!({"ServiceCode": "vpc"}));
        assert!(defaults["Quotas"].as_array().unwrap().iter().all(|q| q["Value"] != 9.0));
        assert!(defaults.get("NextToken").is_none());
    }
}
