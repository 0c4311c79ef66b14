//! [`AlarmsApi`] over the real CloudWatch client.
//!
//! `aws-sdk-cloudwatch` is pinned to 1.99.0, the last release speaking the AWS Query protocol:
//! later releases speak only Smithy RPC v2 CBOR, which the local emulator (moto 5.2) does not
//! understand. CloudWatch serves both protocols, so this makes no difference on AWS.

use async_trait::async_trait;
use aws_sdk_cloudwatch as cloudwatch;
use cloudwatch::types::{ComparisonOperator, Dimension, Metric, MetricAlarm, MetricDataQuery, Statistic};
use std::sync::Arc;

use tap_core::aws::AwsSession;
use tap_core::naming::Tag;
use tap_core::pace::Pacer;
use tap_core::AwsError;

use crate::api::{AlarmMetric, AlarmSpec, AlarmsApi, MetricStat, ObservedAlarm};

/// CloudWatch's documented rate for `PutMetricAlarm` and for `DeleteAlarms`, each: 3 a second
/// per account and region (its service quotas page). A run writes 2 to 4 alarms a service at
/// once, so it paces them rather than having most throttled.
const ALARM_WRITES_PER_SECOND: u32 = 3;

/// [`AlarmsApi`] over the real SDK client.
#[derive(Debug, Clone)]
pub struct SdkAlarms {
    client: cloudwatch::Client,
    puts: Arc<Pacer>,
    deletes: Arc<Pacer>,
}

impl SdkAlarms {
    /// The CloudWatch client of `session` (with its call counter and write guard).
    pub fn from_session(session: &AwsSession) -> Self {
        SdkAlarms::new(tap_core::sdk_client!(aws_sdk_cloudwatch, session))
    }

    /// Over `client`, with the run's alarm writes paced to CloudWatch's rate.
    pub fn new(client: cloudwatch::Client) -> Self {
        let pacer = || Arc::new(Pacer::new(f64::from(ALARM_WRITES_PER_SECOND), ALARM_WRITES_PER_SECOND));
        SdkAlarms { client, puts: pacer(), deletes: pacer() }
    }
}

fn dimensions(dims: &[Dimension]) -> Vec<(String, String)> {
    dims.iter().map(|d| (d.name().unwrap_or_default().to_owned(), d.value().unwrap_or_default().to_owned())).collect()
}

fn sdk_dimensions(dims: &[(String, String)]) -> Vec<Dimension> {
    dims.iter().map(|(k, v)| Dimension::builder().name(k).value(v).build()).collect()
}

/// The metric math of an alarm: the metric queries in id order, and the expression that returns data.
fn observed_math(queries: &[MetricDataQuery]) -> Option<AlarmMetric> {
    let mut metrics: Vec<(String, MetricStat)> = Vec::new();
    let mut expression = None;
    for q in queries {
        match (q.metric_stat(), q.expression()) {
            (Some(stat), _) => {
                let metric = stat.metric()?;
                metrics.push((
                    q.id().unwrap_or_default().to_owned(),
                    MetricStat::new(
                        metric.namespace().unwrap_or_default(),
                        metric.metric_name().unwrap_or_default(),
                        dimensions(metric.dimensions()),
                        stat.stat().unwrap_or_default(),
                    ),
                ));
            }
            (None, Some(e)) if q.return_data() != Some(false) => expression = Some(e.to_owned()),
            _ => {}
        }
    }
    metrics.sort_by(|a, b| a.0.cmp(&b.0));
    Some(AlarmMetric::Math { metrics: metrics.into_iter().map(|(_, m)| m).collect(), expression: expression? })
}

fn observed(a: &MetricAlarm) -> ObservedAlarm {
    let math_period = a.metrics().iter().find_map(|q| q.metric_stat().and_then(|s| s.period()));
    let metric = match (a.metric_name(), a.metrics()) {
        (Some(name), _) => Some(AlarmMetric::Single(MetricStat::new(
            a.namespace().unwrap_or_default(),
            name,
            dimensions(a.dimensions()),
            a.statistic().map(|s| s.as_str()).unwrap_or_default(),
        ))),
        (None, queries) if !queries.is_empty() => observed_math(queries),
        _ => None,
    };
    ObservedAlarm {
        name: a.alarm_name().unwrap_or_default().to_owned(),
        arn: a.alarm_arn().unwrap_or_default().to_owned(),
        description: a.alarm_description().map(str::to_owned),
        metric,
        period: a.period().or(math_period),
        evaluation_periods: a.evaluation_periods(),
        threshold: a.threshold(),
        comparison: a.comparison_operator().map(|c| c.as_str().to_owned()),
        treat_missing_data: a.treat_missing_data().map(str::to_owned),
        state: a.state_value().map(|s| s.as_str().to_owned()),
        tags: None,
    }
}

fn metric_query(id: String, m: &MetricStat, period: i32) -> MetricDataQuery {
    let metric = Metric::builder()
        .namespace(&m.namespace)
        .metric_name(&m.metric_name)
        .set_dimensions(Some(sdk_dimensions(&m.dimensions)))
        .build();
    MetricDataQuery::builder()
        .id(id)
        .metric_stat(cloudwatch::types::MetricStat::builder().metric(metric).period(period).stat(&m.statistic).build())
        .return_data(false)
        .build()
}

#[async_trait]
impl AlarmsApi for SdkAlarms {
    async fn list_alarms(&self, prefix: &str) -> Result<Vec<ObservedAlarm>, AwsError> {
        let pages = self
            .client
            .describe_alarms()
            .alarm_name_prefix(prefix)
            .max_records(100)
            .into_paginator()
            .send()
            .try_collect()
            .await?;
        Ok(pages.iter().flat_map(|p| p.metric_alarms()).map(observed).collect())
    }

    async fn find_alarm(&self, name: &str) -> Result<Option<ObservedAlarm>, AwsError> {
        let out = self.client.describe_alarms().alarm_names(name).send().await?;
        Ok(out.metric_alarms().iter().find(|a| a.alarm_name() == Some(name)).map(observed))
    }

    async fn put_metric_alarm(&self, spec: &AlarmSpec) -> Result<(), AwsError> {
        self.puts.ready().await;
        let mut req = self
            .client
            .put_metric_alarm()
            .alarm_name(&spec.name)
            .alarm_description(&spec.description)
            .evaluation_periods(spec.evaluation_periods)
            .threshold(spec.threshold)
            .comparison_operator(ComparisonOperator::from(spec.comparison.as_str()))
            .treat_missing_data(&spec.treat_missing_data)
            .set_tags(Some(
                spec.tags.iter().map(|(k, v)| cloudwatch::types::Tag::builder().key(k).value(v).build()).collect(),
            ));
        req = match &spec.metric {
            AlarmMetric::Single(m) => req
                .namespace(&m.namespace)
                .metric_name(&m.metric_name)
                .statistic(Statistic::from(m.statistic.as_str()))
                .set_dimensions(Some(sdk_dimensions(&m.dimensions)))
                .period(spec.period),
            AlarmMetric::Math { metrics, expression } => {
                let mut queries: Vec<MetricDataQuery> = metrics
                    .iter()
                    .enumerate()
                    .map(|(i, m)| metric_query(format!("m{}", i + 1), m, spec.period))
                    .collect();
                queries.push(
                    MetricDataQuery::builder()
                        .id("e1")
                        .expression(expression)
                        .label(&spec.name)
                        .return_data(true)
                        .build(),
                );
                req.set_metrics(Some(queries))
            }
        };
        req.send().await?;
        Ok(())
    }

    async fn delete_alarms(&self, names: &[String]) -> Result<(), AwsError> {
        self.deletes.ready().await;
        self.client.delete_alarms().set_alarm_names(Some(names.to_vec())).send().await?;
        Ok(())
    }

    async fn list_tags(&self, arn: &str) -> Result<Vec<Tag>, AwsError> {
        let out = self.client.list_tags_for_resource().resource_arn(arn).send().await?;
        Ok(out
            .tags()
            .iter()
            .map(|t| (t.key().unwrap_or_default().to_owned(), t.value().unwrap_or_default().to_owned()))
            .collect())
    }
}
