//! `tap-quotas`: the quota preflight of a tap run — what the run would add, against the account's
//! quotas and what is in use, decided before anything is written.
//!
//! - **Reads**: the needs ([`tap_core::quota::Need`]) and usage ([`tap_core::quota::Usage`]) the
//!   concern crates count from a plan (each its own quotas, with its own SDK client), and the quota
//!   values from Service Quotas ([`QuotasApi`], over `aws-sdk-servicequotas`): the applied value
//!   (`GetServiceQuota`), else AWS's default (`GetAWSDefaultServiceQuota`), else the documented
//!   default of [`tap_core::quota::QUOTAS`] when the API gives no value or may not be called —
//!   each value says where it came from ([`Source`]). Global quotas (IAM roles) are asked in
//!   `us-east-1`, the only region Service Quotas answers them in.
//! - **Adds** nothing to the context: [`Preflight`] is the headroom per quota touched (in use,
//!   this run adds, limit, source), which `plan` shows, and its [`Shortfall`] refuses a deploy
//!   before any write. A shortfall against a value Service Quotas gave is refused; against a
//!   documented default only (the API could not tell), it is a warning: the account may have more.
//!
//! Only quotas a run adds to are asked, concurrently: a redeploy that adds nothing makes no call.
//!
//! ```
//! use tap_core::quota::{Need, QuotaKey, Usage};
//! use tap_quotas::{Limit, Preflight, Source};
//!
//! let needs = vec![Need::new(QuotaKey::ElasticIps, 3.0, vec!["network/eip/1".into()])];
//! let usage = vec![Usage { key: QuotaKey::ElasticIps, zone: None, in_use: 3.0 }];
//! let limits = vec![Limit { key: QuotaKey::ElasticIps, value: 5.0, source: Source::Applied }];
//! let preflight = Preflight::decide(&needs, &usage, &limits);
//! let refused = preflight.shortfall().unwrap();
//! assert!(refused.to_string().contains("EC2-VPC Elastic IPs (L-0263D0A3, service ec2)"));
//! assert!(refused.to_string().contains("--desired-value 6"));
//! ```
#![forbid(unsafe_code)]

use std::fmt;

use async_trait::async_trait;
use aws_sdk_servicequotas as sq;
use serde::Serialize;
use tap_core::aws::AwsSession;
use tap_core::quota::{Need, Quota, QuotaKey, Scope, Usage};
use tap_core::AwsError;

/// The Service Quotas calls of the preflight.
#[cfg_attr(any(test, feature = "test-util"), mockall::automock)]
#[async_trait]
pub trait QuotasApi: Send + Sync {
    /// `GetServiceQuota`: the account's applied value (`None` when the answer has none).
    async fn get_service_quota(&self, quota: &Quota) -> Result<Option<f64>, AwsError>;
    /// `GetAWSDefaultServiceQuota`: AWS's default value.
    async fn get_aws_default_service_quota(&self, quota: &Quota) -> Result<Option<f64>, AwsError>;
}

/// [`QuotasApi`] over the SDK: a client of the run's region, and one in `us-east-1` for global
/// quotas.
#[derive(Debug, Clone)]
pub struct SdkQuotas {
    regional: sq::Client,
    global: sq::Client,
}

impl SdkQuotas {
    /// Clients built from `session` (its counter, limiter and guard attached). A value is optional
    /// to the preflight (without it the documented default is shown and only warned about), so a
    /// call is tried once instead of spending the run's retry budget (and time) on it.
    pub fn from_session(session: &AwsSession) -> Self {
        let client: sq::Client = tap_core::sdk_client!(aws_sdk_servicequotas, session);
        let builder = client
            .config()
            .to_builder()
            .retry_config(aws_sdk_servicequotas::config::retry::RetryConfig::standard().with_max_attempts(1));
        SdkQuotas {
            regional: sq::Client::from_conf(builder.clone().build()),
            global: sq::Client::from_conf(builder.region(sq::config::Region::new("us-east-1")).build()),
        }
    }

    fn client(&self, quota: &Quota) -> &sq::Client {
        if quota.scope == Scope::Global {
            &self.global
        } else {
            &self.regional
        }
    }
}

#[async_trait]
impl QuotasApi for SdkQuotas {
    async fn get_service_quota(&self, quota: &Quota) -> Result<Option<f64>, AwsError> {
        let out = self
            .client(quota)
            .get_service_quota()
            .service_code(quota.service_code)
            .quota_code(quota.quota_code)
            .send()
            .await?;
        Ok(out.quota().and_then(|q| q.value()))
    }

    async fn get_aws_default_service_quota(&self, quota: &Quota) -> Result<Option<f64>, AwsError> {
        let out = self
            .client(quota)
            .get_aws_default_service_quota()
            .service_code(quota.service_code)
            .quota_code(quota.quota_code)
            .send()
            .await?;
        Ok(out.quota().and_then(|q| q.value()))
    }
}

/// Where a quota value came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Source {
    /// The account's applied value (`GetServiceQuota`).
    Applied,
    /// AWS's default for the quota (`GetAWSDefaultServiceQuota`).
    AwsDefault,
    /// AWS's documented default (the table in `tap_core::quota`): Service Quotas gave no value.
    Documented {
        /// Why: what Service Quotas answered.
        why: String,
    },
}

impl Source {
    /// Whether Service Quotas itself gave the value (a shortfall against it is refused).
    pub fn from_service_quotas(&self) -> bool {
        !matches!(self, Source::Documented { .. })
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Applied => f.write_str("applied (Service Quotas)"),
            Source::AwsDefault => f.write_str("AWS default (Service Quotas)"),
            Source::Documented { why } => write!(f, "documented default ({why})"),
        }
    }
}

/// The value of one quota and where it came from.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Limit {
    /// Which quota.
    pub key: QuotaKey,
    /// Its value.
    pub value: f64,
    /// Where it came from.
    pub source: Source,
}

fn describe(e: &AwsError) -> String {
    match &e.code {
        Some(code) => code.clone(),
        None => e.message.chars().take(80).collect(),
    }
}

/// The value of each quota in `keys`: the applied value, else AWS's default, else the documented
/// one (never an error: a value that cannot be read falls back). Every quota, and both of a
/// quota's values, are asked at once: the preflight stands between deploy's look and its first
/// write, and a second round trip there would hold every step back.
pub async fn limits(api: &dyn QuotasApi, keys: &[QuotaKey]) -> Vec<Limit> {
    futures::future::join_all(keys.iter().map(|&key| async move {
        let quota = key.quota();
        let (applied, default) = futures::join!(api.get_service_quota(quota), api.get_aws_default_service_quota(quota));
        let applied_failure = match applied {
            Ok(Some(value)) => return Limit { key, value, source: Source::Applied },
            Ok(None) => "GetServiceQuota gave no value".to_owned(),
            Err(e) => format!("GetServiceQuota: {}", describe(&e)),
        };
        let documented = |why: String| Limit { key, value: quota.default, source: Source::Documented { why } };
        match default {
            Ok(Some(value)) => Limit { key, value, source: Source::AwsDefault },
            Ok(None) => documented(format!("{applied_failure}; GetAWSDefaultServiceQuota gave no value")),
            Err(e) => documented(format!("{applied_failure}; GetAWSDefaultServiceQuota: {}", describe(&e))),
        }
    }))
    .await
}

/// The headroom of one quota (in one zone, for a per-zone quota).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Headroom {
    /// The quota.
    pub quota: Quota,
    /// The availability zone, for a per-zone quota.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    /// In use in the account (region, zone).
    pub in_use: f64,
    /// What this run adds.
    pub adds: f64,
    /// The quota's value.
    pub limit: f64,
    /// Where the value came from.
    pub source: Source,
    /// The resources that add to it.
    pub resources: Vec<String>,
}

/// Allows for float sums of vCPUs (`4.2 + 1.8`).
const EPSILON: f64 = 1e-6;

impl Headroom {
    /// In use plus what the run adds exceeds the quota.
    pub fn short(&self) -> bool {
        self.in_use + self.adds > self.limit + EPSILON
    }

    /// What is left after this run (negative: the shortfall).
    pub fn left(&self) -> f64 {
        self.limit - self.in_use - self.adds
    }

    /// The quota's display name, with the zone.
    pub fn label(&self) -> String {
        match &self.zone {
            Some(zone) => format!("{} ({zone})", self.quota.name),
            None => self.quota.name.to_owned(),
        }
    }

    /// The value to ask for: what this run needs, whole.
    pub fn desired_value(&self) -> f64 {
        (self.in_use + self.adds - EPSILON).ceil()
    }

    /// The command that asks AWS to raise the quota to [`Headroom::desired_value`].
    pub fn raise_command(&self) -> String {
        let region = if self.quota.scope == Scope::Global { " --region us-east-1" } else { "" };
        format!(
            "aws service-quotas request-service-quota-increase --service-code {} --quota-code {} --desired-value {}{region}",
            self.quota.service_code,
            self.quota.quota_code,
            number(self.desired_value())
        )
    }
}

/// A count without a needless `.0`, vCPUs with one decimal.
pub fn number(n: f64) -> String {
    if (n - n.round()).abs() < EPSILON {
        format!("{}", n.round() as i64)
    } else {
        format!("{n:.1}")
    }
}

/// The preflight's result: the headroom of every quota the run touches.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Preflight {
    /// One row per quota (and zone) the run adds to, in the table's order.
    pub rows: Vec<Headroom>,
}

impl Preflight {
    /// Adds the needs up per quota (and zone) and sets them against what is in use and the
    /// quota's value. A need without a usage count starts from 0 in use; without a value, the
    /// documented default (said so).
    pub fn decide(needs: &[Need], usage: &[Usage], limits: &[Limit]) -> Preflight {
        let mut rows: Vec<Headroom> = Vec::new();
        for need in needs.iter().filter(|n| n.amount > 0.0) {
            if let Some(row) = rows.iter_mut().find(|r| r.quota.key == need.key && r.zone == need.zone) {
                row.adds += need.amount;
                row.resources.extend(need.resources.iter().cloned());
                continue;
            }
            let quota = *need.key.quota();
            let in_use =
                usage.iter().filter(|u| u.key == need.key && u.zone == need.zone).map(|u| u.in_use).fold(0.0, f64::max);
            let (limit, source) = match limits.iter().find(|l| l.key == need.key) {
                Some(l) => (l.value, l.source.clone()),
                None => (quota.default, Source::Documented { why: "not asked".into() }),
            };
            rows.push(Headroom {
                quota,
                zone: need.zone.clone(),
                in_use,
                adds: need.amount,
                limit,
                source,
                resources: need.resources.clone(),
            });
        }
        rows.sort_by(|a, b| (a.quota.key, &a.zone).cmp(&(b.quota.key, &b.zone)));
        Preflight { rows }
    }

    /// The quotas the run would exceed.
    pub fn short(&self) -> impl Iterator<Item = &Headroom> {
        self.rows.iter().filter(|r| r.short())
    }

    /// The shortfalls that refuse a deploy (values Service Quotas gave), if any.
    pub fn shortfall(&self) -> Option<Shortfall> {
        let rows: Vec<Headroom> = self.short().filter(|r| r.source.from_service_quotas()).cloned().collect();
        (!rows.is_empty()).then_some(Shortfall { rows })
    }

    /// The shortfalls against a documented default only: warnings (the account may have more).
    pub fn warnings(&self) -> Vec<&Headroom> {
        self.short().filter(|r| !r.source.from_service_quotas()).collect()
    }

    /// The headroom as text: one line per quota, a shortfall marked `!`.
    pub fn render_text(&self) -> String {
        if self.rows.is_empty() {
            return String::new();
        }
        let mut out = String::from("Quotas (in use + this run adds / limit):\n");
        let width = self.rows.iter().map(|r| r.label().len() + r.quota.quota_code.len() + 3).max().unwrap_or(0);
        for r in &self.rows {
            let mark = match (r.short(), r.source.from_service_quotas()) {
                (false, _) => " ",
                (true, true) => "!",
                (true, false) => "?",
            };
            let name = format!("{} ({})", r.label(), r.quota.quota_code);
            let status = if r.short() {
                format!("SHORT by {}", number(-r.left()))
            } else {
                format!("{} left", number(r.left()))
            };
            out.push_str(&format!(
                "  {mark} {name:<width$}  {} + {} / {}  {status}; {}\n",
                number(r.in_use),
                number(r.adds),
                number(r.limit),
                r.source
            ));
        }
        for r in self.short() {
            let what = if r.source.from_service_quotas() {
                "deploy refuses this"
            } else {
                "Service Quotas could not confirm the value: deploy warns and goes on"
            };
            out.push_str(&format!("  {what}; raise it: {}\n", r.raise_command()));
        }
        out
    }
}

/// A deploy would exceed quotas Service Quotas reports: refused before any write.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub struct Shortfall {
    /// The quotas exceeded.
    pub rows: Vec<Headroom>,
}

impl fmt::Display for Shortfall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "this deploy would exceed the account's quotas in the region: ")?;
        for (i, r) in self.rows.iter().enumerate() {
            if i > 0 {
                write!(f, "; ")?;
            }
            write!(
                f,
                "{} ({}, service {}): {} in use + {} this deploy adds = {} > quota {} ({}); raise it with `{}`",
                r.label(),
                r.quota.quota_code,
                r.quota.service_code,
                number(r.in_use),
                number(r.adds),
                number(r.in_use + r.adds),
                number(r.limit),
                r.source,
                r.raise_command()
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
