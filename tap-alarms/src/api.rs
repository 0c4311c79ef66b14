//! The narrow seam over CloudWatch: exactly the calls the alarms step and `tap status` make, with
//! small domain types instead of SDK types. Its one implementation over the real client is
//! [`crate::sdk::SdkAlarms`].

use std::fmt;

use async_trait::async_trait;
use tap_core::naming::Tag;
use tap_core::AwsError;

/// One metric and the statistic an alarm takes of it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct MetricStat {
    /// Namespace, e.g. `AWS/ECS`.
    pub namespace: String,
    /// Metric name, e.g. `CPUUtilization`.
    pub metric_name: String,
    /// Dimensions (name, value), sorted by name.
    pub dimensions: Vec<(String, String)>,
    /// Statistic, e.g. `Average`, `Maximum` or `Sum`.
    pub statistic: String,
}

impl MetricStat {
    /// A metric whose dimensions are sorted by name, as they are compared.
    pub fn new(namespace: &str, metric_name: &str, mut dimensions: Vec<(String, String)>, statistic: &str) -> Self {
        dimensions.sort();
        MetricStat {
            namespace: namespace.into(),
            metric_name: metric_name.into(),
            dimensions,
            statistic: statistic.into(),
        }
    }
}

impl fmt::Display for MetricStat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dims: Vec<String> = self.dimensions.iter().map(|(k, v)| format!("{k}={v}")).collect();
        write!(f, "{} {} {} [{}]", self.namespace, self.metric_name, self.statistic, dims.join(", "))
    }
}

/// What an alarm watches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AlarmMetric {
    /// One metric (`MetricName`, `Namespace`, `Statistic`, `Dimensions`, `Period`).
    Single(MetricStat),
    /// A metric math expression over several metrics (`Metrics`: `m1`…`mN` that return no data,
    /// and the expression `e1` that does), e.g. the sum over a service's two target groups.
    Math {
        /// The metrics, `m1`, `m2`, … in order.
        metrics: Vec<MetricStat>,
        /// The expression over them, e.g. `SUM([m1, m2])`.
        expression: String,
    },
}

impl AlarmMetric {
    /// The sum of `metrics` (`SUM([m1, m2, …])`); one metric alone is [`AlarmMetric::Single`].
    pub fn sum(mut metrics: Vec<MetricStat>) -> Self {
        if metrics.len() == 1 {
            return AlarmMetric::Single(metrics.remove(0));
        }
        let ids: Vec<String> = (1..=metrics.len()).map(|i| format!("m{i}")).collect();
        AlarmMetric::Math { expression: format!("SUM([{}])", ids.join(", ")), metrics }
    }

    /// How many metrics the alarm evaluates (CloudWatch bills an alarm per metric).
    pub fn metric_count(&self) -> usize {
        match self {
            AlarmMetric::Single(_) => 1,
            AlarmMetric::Math { metrics, .. } => metrics.len(),
        }
    }
}

impl fmt::Display for AlarmMetric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AlarmMetric::Single(m) => write!(f, "{m}"),
            AlarmMetric::Math { metrics, expression } => {
                write!(f, "{expression}")?;
                for (i, m) in metrics.iter().enumerate() {
                    write!(f, "; m{} = {m}", i + 1)?;
                }
                Ok(())
            }
        }
    }
}

/// What `PutMetricAlarm` sends: the alarm's whole definition (a put replaces it).
#[derive(Debug, Clone, PartialEq)]
pub struct AlarmSpec {
    /// Alarm name (unique in the region).
    pub name: String,
    /// Description.
    pub description: String,
    /// What it watches.
    pub metric: AlarmMetric,
    /// Seconds of one period.
    pub period: i32,
    /// Periods that must breach.
    pub evaluation_periods: i32,
    /// The threshold.
    pub threshold: f64,
    /// e.g. `GreaterThanOrEqualToThreshold`.
    pub comparison: String,
    /// `missing`, `notBreaching`, `breaching` or `ignore`.
    pub treat_missing_data: String,
    /// Tags (CloudWatch applies them when the put creates the alarm, and ignores them after).
    pub tags: Vec<Tag>,
}

/// An alarm as CloudWatch reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct ObservedAlarm {
    /// Alarm name.
    pub name: String,
    /// Alarm ARN (for its tags).
    pub arn: String,
    /// Description.
    pub description: Option<String>,
    /// What it watches (`None` for a shape tap does not read, e.g. an anomaly band).
    pub metric: Option<AlarmMetric>,
    /// Seconds of one period (the top-level period, or the first metric's in metric math).
    pub period: Option<i32>,
    /// Periods that must breach.
    pub evaluation_periods: Option<i32>,
    /// The threshold.
    pub threshold: Option<f64>,
    /// Comparison operator.
    pub comparison: Option<String>,
    /// How missing data is treated (`None`: CloudWatch's default, `missing`).
    pub treat_missing_data: Option<String>,
    /// `OK`, `ALARM` or `INSUFFICIENT_DATA`.
    pub state: Option<String>,
    /// Its tags, when already read (`ListTagsForResource`; DescribeAlarms does not report them).
    pub tags: Option<Vec<Tag>>,
}

impl ObservedAlarm {
    /// What an alarm just put with `spec` holds (`PutMetricAlarm` answers nothing).
    pub fn from_spec(spec: &AlarmSpec) -> Self {
        ObservedAlarm {
            name: spec.name.clone(),
            arn: String::new(),
            description: Some(spec.description.clone()),
            metric: Some(spec.metric.clone()),
            period: Some(spec.period),
            evaluation_periods: Some(spec.evaluation_periods),
            threshold: Some(spec.threshold),
            comparison: Some(spec.comparison.clone()),
            treat_missing_data: Some(spec.treat_missing_data.clone()),
            state: None,
            tags: Some(spec.tags.clone()),
        }
    }
}

/// Exactly the CloudWatch calls tap makes.
#[cfg_attr(any(test, feature = "test-util"), mockall::automock)]
#[async_trait]
pub trait AlarmsApi: Send + Sync {
    /// `DescribeAlarms AlarmNamePrefix=..`, every page: the metric alarms whose name starts with
    /// `prefix`.
    async fn list_alarms(&self, prefix: &str) -> Result<Vec<ObservedAlarm>, AwsError>;
    /// `DescribeAlarms AlarmNames=[name]`; `None` when there is no such alarm.
    async fn find_alarm(&self, name: &str) -> Result<Option<ObservedAlarm>, AwsError>;
    /// `PutMetricAlarm`: creates the alarm, or replaces its definition.
    async fn put_metric_alarm(&self, spec: &AlarmSpec) -> Result<(), AwsError>;
    /// `DeleteAlarms AlarmNames=..` (at most 100).
    async fn delete_alarms(&self, names: &[String]) -> Result<(), AwsError>;
    /// `ListTagsForResource ResourceARN=..`.
    async fn list_tags(&self, arn: &str) -> Result<Vec<Tag>, AwsError>;
}
