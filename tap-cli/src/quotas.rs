//! The quota preflight of plan and deploy: what the plan's changes add (each concern crate counts
//! its own), against what the account uses (each with its own SDK client) and the quota values
//! (`tap-quotas`, Service Quotas). Only quotas the run adds to are asked, all at once: a run that
//! creates nothing makes no call here.

use anyhow::Result;
use serde_json::{json, Value};
use tap_core::aws::AwsSession;
use tap_core::outputs::NetworkOutputs;
use tap_core::quota::{touched, Need};
use tap_core::{Change, Context};
use tap_quotas::{number, Preflight};

use crate::runner::StepReport;

/// What the changes of `reports` need of the account's quotas, step by step.
pub fn needs(ctx: &Context, reports: &[StepReport]) -> Vec<Need> {
    let of = |step: &str| -> Vec<Change> {
        reports.iter().filter(|r| r.step == step).flat_map(|r| r.changes.iter().cloned()).collect()
    };
    let zones: Vec<String> = ctx
        .try_get::<NetworkOutputs>()
        .map(|n| n.public_subnets.iter().map(|s| s.az.clone()).collect())
        .unwrap_or_default();
    [
        tap_network::quota::needs(&of("network"), &zones),
        tap_ingress::quota::needs(&of("ingress")),
        tap_services::quota::needs(&ctx.config, &of("services")),
        tap_security::quota::needs(&of("security")),
    ]
    .concat()
}

/// The preflight of `reports` (a plan, or deploy's read-only look), with clients from `session`.
pub async fn preflight(session: &AwsSession, ctx: &Context, reports: &[StepReport]) -> Result<Preflight> {
    let needs = needs(ctx, reports);
    let touched = touched(&needs);
    if touched.is_empty() {
        return Ok(Preflight::default());
    }
    let keys: Vec<_> = {
        let mut k: Vec<_> = touched.iter().map(|(k, _)| *k).collect();
        k.sort();
        k.dedup();
        k
    };
    let (network, ingress, services, security, quotas) = (
        tap_network::quota::usage_api(session),
        tap_ingress::quota::usage_api(session),
        tap_services::quota::usage_api(session),
        tap_security::quota::usage_api(session),
        tap_quotas::SdkQuotas::from_session(session),
    );
    let (usage, limits) = tokio::join!(
        futures::future::try_join_all([
            Box::pin(tap_network::quota::usage(&network, &touched))
                as std::pin::Pin<Box<dyn std::future::Future<Output = _> + Send>>,
            Box::pin(tap_ingress::quota::usage(&ingress, &touched)),
            Box::pin(tap_services::quota::usage(&services, &touched)),
            Box::pin(tap_security::quota::usage(&security, &touched)),
        ]),
        tap_quotas::limits(&quotas, &keys),
    );
    let usage = usage?.concat();
    let preflight = Preflight::decide(&needs, &usage, &limits);
    for r in preflight.warnings() {
        tracing::warn!(
            "{} ({}): {} in use + {} this run adds > {}, the documented default (Service Quotas gave no value: {}); \
             if the account's quota is not higher, the run will fail on it: {}",
            r.label(),
            r.quota.quota_code,
            number(r.in_use),
            number(r.adds),
            number(r.limit),
            r.source,
            r.raise_command()
        );
    }
    Ok(preflight)
}

/// The preflight as the `quotas` object of plan's and deploy's JSON.
pub fn to_json(preflight: &Preflight) -> Value {
    let rows: Vec<Value> = preflight
        .rows
        .iter()
        .map(|r| {
            json!({
                "quota": r.quota.name,
                "quota_code": r.quota.quota_code,
                "service_code": r.quota.service_code,
                "zone": r.zone,
                "in_use": r.in_use,
                "adds": r.adds,
                "limit": r.limit,
                "left": r.left(),
                "source": r.source.to_string(),
                "short": r.short(),
                "refuses": r.short() && r.source.from_service_quotas(),
                "resources": r.resources,
                "raise": r.short().then(|| r.raise_command()),
            })
        })
        .collect();
    json!({"refused": preflight.shortfall().is_some(), "rows": rows})
}
