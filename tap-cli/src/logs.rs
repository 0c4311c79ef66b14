//! `tap logs SERVICE [--since 10m] [--follow]`: the events of a service's CloudWatch Logs group
//! (`/ecs/tap-{service}-{s}`), oldest first; `--follow` keeps polling for new ones until Ctrl-C.

use std::collections::BTreeSet;
use std::io::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Result};
use aws_sdk_cloudwatchlogs::Client;
use serde::Serialize;
use serde_json::json;
use tap_core::{AwsError, Context, StepError};

use crate::cli::OutputFormat;

/// One log event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LogEvent {
    /// Milliseconds since the Unix epoch.
    pub timestamp: i64,
    /// The same, as RFC 3339 UTC.
    pub time: String,
    /// Log stream (`{service}/{container}/{task id}` for ECS tasks).
    pub stream: String,
    /// The message.
    pub message: String,
    /// CloudWatch's event id (unique within the group).
    pub id: String,
}

/// Parses `90s`, `10m`, `2h`, `1d` (or a bare number of seconds).
pub fn parse_since(text: &str) -> Result<Duration> {
    let t = text.trim();
    let (digits, unit) = t.split_at(t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len()));
    let n: u64 = match digits.parse() {
        Ok(n) => n,
        Err(_) => bail!("--since `{text}`: expected a duration like 30s, 10m, 2h or 1d"),
    };
    let seconds = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        other => bail!("--since `{text}`: unknown unit `{other}` (use s, m, h or d)"),
    };
    Ok(Duration::from_secs(seconds))
}

/// RFC 3339 UTC with milliseconds for epoch milliseconds.
pub fn rfc3339(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or_default()
}

/// Every event of `group` from `start_ms` on, oldest first.
async fn fetch(client: &Client, group: &str, start_ms: i64) -> Result<Vec<LogEvent>, StepError> {
    let mut events = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let out = client
            .filter_log_events()
            .log_group_name(group)
            .start_time(start_ms)
            .set_next_token(token.clone())
            .send()
            .await
            .map_err(AwsError::from)
            .map_err(StepError::aws(group, "FilterLogEvents"))?;
        for e in out.events() {
            let timestamp = e.timestamp().unwrap_or_default();
            events.push(LogEvent {
                timestamp,
                time: rfc3339(timestamp),
                stream: e.log_stream_name().unwrap_or_default().to_owned(),
                message: e.message().unwrap_or_default().trim_end().to_owned(),
                id: e.event_id().unwrap_or_default().to_owned(),
            });
        }
        match out.next_token() {
            Some(next) if Some(next) != token.as_deref() && !out.events().is_empty() => token = Some(next.to_owned()),
            _ => break,
        }
    }
    events.sort_by_key(|e| e.timestamp);
    Ok(events)
}

fn line(e: &LogEvent) -> String {
    format!("{} {} {}", e.time, e.stream, e.message)
}

/// Prints the service's log events; with `follow`, keeps polling every 2 s until interrupted.
pub async fn run(
    client: &Client,
    ctx: &Context,
    service: &str,
    since: Duration,
    follow: bool,
    output: OutputFormat,
) -> Result<()> {
    if ctx.config.service(service).is_none() {
        let known: Vec<&str> = ctx.config.services.iter().map(|s| s.name.as_str()).collect();
        bail!("no service `{service}` in the configuration (services: {})", known.join(", "));
    }
    let group = ctx.names.log_group(service);
    let start = now_ms() - since.as_millis() as i64;
    let events = match fetch(client, &group, start).await {
        Err(e) if e.aws_error().is_some_and(AwsError::is_not_found) => bail!(
            "log group {group} of service `{service}` does not exist in environment `{}`: deploy it first (`tap deploy`)",
            ctx.names.env()
        ),
        other => other?,
    };
    let mut out = std::io::stdout().lock();
    if !follow {
        match output {
            OutputFormat::Json => {
                let doc = json!({
                    "service": service,
                    "environment": ctx.names.env(),
                    "log_group": group,
                    "since_ms": start,
                    "events": events,
                });
                writeln!(out, "{}", serde_json::to_string_pretty(&doc)?)?;
            }
            OutputFormat::Text => {
                for e in &events {
                    writeln!(out, "{}", line(e))?;
                }
            }
        }
        return Ok(());
    }
    drop(out);
    follow_from(client, &group, events, start, output).await
}

/// Prints `first`, then polls for newer events forever (the caller stops it on Ctrl-C). JSON
/// output is one event object per line here, since the stream has no end.
async fn follow_from(
    client: &Client,
    group: &str,
    first: Vec<LogEvent>,
    start: i64,
    output: OutputFormat,
) -> Result<()> {
    let show = |e: &LogEvent| -> Result<()> {
        let mut out = std::io::stdout().lock();
        match output {
            OutputFormat::Json => writeln!(out, "{}", serde_json::to_string(e)?)?,
            OutputFormat::Text => writeln!(out, "{}", line(e))?,
        }
        out.flush()?;
        Ok(())
    };
    let mut seen: BTreeSet<String> = BTreeSet::new();
    let mut last = start;
    let mut batch = first;
    loop {
        for e in batch.iter().filter(|e| !seen.contains(&e.id)) {
            show(e)?;
        }
        if let Some(max) = batch.iter().map(|e| e.timestamp).max() {
            // Keep only the ids at the newest timestamp: the next poll starts there.
            if max > last {
                seen.clear();
                last = max;
            }
        }
        seen.extend(batch.iter().filter(|e| e.timestamp >= last).map(|e| e.id.clone()));
        tokio::time::sleep(Duration::from_secs(2)).await;
        batch = fetch(client, group, last).await?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_durations() {
        assert_eq!(parse_since("10m").unwrap(), Duration::from_secs(600));
        assert_eq!(parse_since("2h").unwrap(), Duration::from_secs(7200));
        assert_eq!(parse_since("1d").unwrap(), Duration::from_secs(86_400));
        assert_eq!(parse_since("45").unwrap(), Duration::from_secs(45));
        assert!(parse_since("10 minutes").is_err());
        assert!(parse_since("m").is_err());
        assert!(parse_since("5w").unwrap_err().to_string().contains("unknown unit"));
    }

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(rfc3339(1_700_000_000_000), "2023-11-14T22:13:20.000Z");
    }
}
