//! The alarms' part of `tap status`: the state of each configured service's alarms, read live
//! with one listing (`DescribeAlarms` under the environment's prefix).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;
use tap_core::{Context, StepError};

use crate::alarm::What;
use crate::api::AlarmsApi;

/// The state of one alarm.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AlarmState {
    /// Alarm name, e.g. `tap-dev-frontend-cpu-high`.
    pub name: String,
    /// What it watches: `cpu-high`, `memory-high`, `unhealthy-targets` or `target-5xx`.
    pub alarm: String,
    /// `OK`, `ALARM`, `INSUFFICIENT_DATA`, or `MISSING` when it does not exist.
    pub state: String,
}

/// Service name → the states of its alarms (none when `alarms.enabled` is off).
pub async fn status(api: &dyn AlarmsApi, ctx: &Context) -> Result<BTreeMap<String, Vec<AlarmState>>, StepError> {
    let found = if ctx.config.alarms.enabled {
        api.list_alarms(&ctx.names.alarm_prefix()).await.map_err(StepError::aws("alarms/alarms", "DescribeAlarms"))?
    } else {
        vec![]
    };
    let enabled = ctx.config.alarms.enabled;
    Ok(ctx
        .config
        .services
        .iter()
        .map(|s| {
            let states = What::of(s.route.is_some())
                .filter(|_| enabled)
                .map(|what| {
                    let name = ctx.names.alarm(&s.name, what.slug());
                    let state = found
                        .iter()
                        .find(|a| a.name == name)
                        .map(|a| a.state.clone().unwrap_or_else(|| "INSUFFICIENT_DATA".into()))
                        .unwrap_or_else(|| "MISSING".into());
                    AlarmState { name, alarm: what.slug().into(), state }
                })
                .collect();
            (s.name.clone(), states)
        })
        .collect())
}

/// A plain-text table, one alarm per line, for `tap status`.
pub fn render_table(states: &BTreeMap<String, Vec<AlarmState>>) -> String {
    let rows: Vec<[&str; 3]> = states
        .iter()
        .flat_map(|(service, alarms)| {
            alarms.iter().map(move |a| [service.as_str(), a.alarm.as_str(), a.state.as_str()])
        })
        .collect();
    if rows.is_empty() {
        return "Alarms: none (alarms.enabled is off)\n".into();
    }
    let header = ["SERVICE", "ALARM", "STATE"];
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let mut out = String::from("Alarms\n");
    for row in std::iter::once(header).chain(rows) {
        let line: Vec<String> = row.iter().zip(widths).map(|(c, w)| format!("{c:<w$}")).collect();
        let _ = writeln!(out, "{}", line.join("  ").trim_end());
    }
    out
}
