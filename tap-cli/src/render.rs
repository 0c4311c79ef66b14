//! How the results of `plan`, `deploy` and `destroy` look on stdout: grouped by concern, `+`
//! create / `~` update (each differing attribute, old → new) / `-` delete, colored on a terminal,
//! and one closing line with the totals; or, with `--output json`, one JSON document (described in
//! the README, "JSON documents").

use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;
use serde_json::{json, Value};
use tap_core::aws::CallCounts;
use tap_core::{Action, Change};

use crate::progress::counts_phrase;
use crate::runner::{Operation, StepReport};

/// Version of the JSON documents; raised only when a field changes meaning or goes away.
pub const FORMAT_VERSION: u32 = 1;

/// ANSI colors, or none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Style {
    /// Whether to color.
    pub color: bool,
}

impl Style {
    fn paint(self, code: &str, text: &str) -> String {
        if self.color {
            format!("\u{1b}[{code}m{text}\u{1b}[0m")
        } else {
            text.to_owned()
        }
    }

    fn action(self, action: Action, text: &str) -> String {
        let code = match action {
            Action::Create => "32",
            Action::Update => "33",
            Action::Delete => "31",
            Action::Keep => "36",
            Action::Refuse | Action::Conflict => "1;31",
        };
        self.paint(code, text)
    }

    fn bold(self, text: &str) -> String {
        self.paint("1", text)
    }

    fn dim(self, text: &str) -> String {
        self.paint("2", text)
    }
}

/// Counts of created, updated, deleted and unchanged resources.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// Resources created (plan: to create).
    pub create: usize,
    /// Resources updated (plan: to update).
    pub update: usize,
    /// Resources deleted (plan: to delete).
    pub delete: usize,
    /// Resources found and left as they are (as far as the steps report them).
    pub unchanged: usize,
    /// Resources the config no longer declares, kept because they hold data (`--prune-data`
    /// deletes them).
    pub keep: usize,
    /// Refusals: what deploy will not do (a running service moving to an image its repository
    /// does not have); deploy stops before any change while there are any.
    pub refuse: usize,
    /// Conflicts: resources of this environment's names that another environment (or no tap
    /// environment) owns; deploy stops before any change while there are any.
    pub conflict: usize,
}

impl Summary {
    /// Counts the changes; `unchanged` comes from progress.
    pub fn of<'a>(changes: impl Iterator<Item = &'a Change>, unchanged: usize) -> Summary {
        let mut s = Summary { unchanged, ..Summary::default() };
        for c in changes {
            match c.action {
                Action::Create => s.create += 1,
                Action::Update => s.update += 1,
                Action::Delete => s.delete += 1,
                Action::Keep => s.keep += 1,
                Action::Refuse => s.refuse += 1,
                Action::Conflict => s.conflict += 1,
            }
        }
        s
    }

    /// Whether anything is (to be) created, updated or deleted, or refused.
    pub fn changed(&self) -> bool {
        self.create + self.update + self.delete + self.refuse + self.conflict > 0
    }
}

/// The reports in the order the steps are registered (the order of the platform's concerns).
pub fn ordered<'a>(reports: &'a [StepReport], order: &[&str]) -> Vec<&'a StepReport> {
    let mut out: Vec<&StepReport> = reports.iter().collect();
    out.sort_by_key(|r| order.iter().position(|s| *s == r.step).unwrap_or(usize::MAX));
    out
}

/// The changes, grouped by concern, as text.
pub fn changes_text(reports: &[&StepReport], style: Style) -> String {
    let mut out = String::new();
    for r in reports.iter().filter(|r| !r.changes.is_empty()) {
        let _ = writeln!(out, "{}", style.bold(r.step));
        for c in &r.changes {
            let head = format!("{} {}", c.action.symbol(), c.resource);
            if let Some(reason) = &c.reason {
                // A refusal: its reason names what it is about.
                let _ = writeln!(out, "  {}: {reason}", style.action(c.action, &head));
                continue;
            }
            let _ = writeln!(out, "  {}  {}", style.action(c.action, &head), style.dim(&c.name));
            for a in &c.attributes {
                let old = a.old.as_deref().unwrap_or("(none)");
                let new = a.new.as_deref().unwrap_or("(none)");
                let _ = writeln!(
                    out,
                    "      {}: {} → {}",
                    a.attribute,
                    style.action(Action::Delete, old),
                    style.action(Action::Create, new)
                );
            }
        }
    }
    out
}

/// The one closing line of a plan, deploy or destroy.
pub fn total_line(op: Operation, environment: &str, s: &Summary, calls: &CallCounts, wall: Duration) -> String {
    let mut line = total(op, environment, s, calls, wall);
    if s.keep > 0 {
        let n = s.keep;
        line = format!("{line} {n} no longer declared but kept: they hold data (deploy --prune-data deletes them).");
    }
    if s.refuse > 0 {
        let n = s.refuse;
        line = format!(
            "{line} {n} refused (!): deploy stops before any change (push the images, or deploy --allow-missing-image)."
        );
    }
    if s.conflict > 0 {
        let n = s.conflict;
        line = format!(
            "{line} {n} in conflict (!): another environment owns these names; deploy stops before any change \
             (rename the service or choose another environment suffix)."
        );
    }
    line
}

fn total(op: Operation, environment: &str, s: &Summary, calls: &CallCounts, wall: Duration) -> String {
    let counts = counts_phrase(op, s.create, s.update, s.delete, s.unchanged);
    let calls_and_time = format!("{} AWS calls ({} mutating), {:.1}s", calls.total, calls.mutating, wall.as_secs_f64());
    match op {
        Operation::Plan if !s.changed() => format!(
            "No changes: environment `{environment}` matches the configuration ({} unchanged; {calls_and_time}).",
            s.unchanged
        ),
        Operation::Plan => format!("Plan: {counts} ({calls_and_time})."),
        Operation::Apply => format!(
            "Deploy complete: {} created, {} updated, {} deleted, {} unchanged; {calls_and_time}.",
            s.create, s.update, s.delete, s.unchanged
        ),
        Operation::Destroy => format!(
            "Destroy complete: {} deleted, {} unchanged; {calls_and_time}.",
            s.delete + s.create + s.update,
            s.unchanged
        ),
    }
}

/// Everything the JSON document of a plan, deploy or destroy is made of.
#[derive(Debug)]
pub struct ChangesDoc<'a> {
    /// `plan`, `deploy` or `destroy`.
    pub command: &'a str,
    /// Environment suffix.
    pub environment: &'a str,
    /// Region.
    pub region: &'a str,
    /// The step reports, in concern order.
    pub reports: &'a [&'a StepReport],
    /// Totals.
    pub summary: Summary,
    /// Unchanged resources per step.
    pub unchanged_by_step: &'a std::collections::BTreeMap<String, usize>,
    /// AWS calls made.
    pub calls: &'a CallCounts,
    /// Wall time of the steps.
    pub elapsed: Duration,
    /// Peak resident memory, when known.
    pub peak_rss_kb: Option<u64>,
    /// The monthly cost estimate before and after (plan and deploy).
    pub cost: Option<Value>,
}

/// Every change of `reports` as JSON, with its step.
pub fn step_changes_json<'a>(reports: impl IntoIterator<Item = &'a StepReport>) -> Vec<Value> {
    let with_step = |r: &StepReport, c: &Change| {
        let mut v = serde_json::to_value(c).unwrap_or(Value::Null);
        v["step"] = json!(r.step);
        v
    };
    reports.into_iter().flat_map(|r| r.changes.iter().map(move |c| with_step(r, c))).collect()
}

/// The JSON document of a plan, deploy or destroy.
pub fn changes_json(d: &ChangesDoc<'_>) -> Value {
    let changes = step_changes_json(d.reports.iter().copied());
    let mut doc = json!({
        "format_version": FORMAT_VERSION,
        "command": d.command,
        "environment": d.environment,
        "region": d.region,
        "changed": d.summary.changed(),
        "changes": changes,
        "summary": d.summary,
        "steps": d.reports.iter().map(|r| json!({
            "step": r.step,
            "elapsed_ms": r.elapsed.as_millis() as u64,
            "changes": r.changes.len(),
            "unchanged": d.unchanged_by_step.get(r.step).copied().unwrap_or(0),
        })).collect::<Vec<_>>(),
        "calls": d.calls,
        "elapsed_ms": d.elapsed.as_millis() as u64,
        "peak_rss_kb": d.peak_rss_kb,
    });
    if let Some(cost) = &d.cost {
        doc["cost"] = cost.clone();
    }
    doc
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use tap_core::AttrChange;

    fn reports() -> Vec<StepReport> {
        vec![
            StepReport {
                step: "ingress",
                changes: vec![Change::delete("ingress/listener/443", "tap-alb-dev:443")],
                elapsed: Duration::from_millis(5),
            },
            StepReport {
                step: "network",
                changes: vec![
                    Change::create("network/vpc", "tap-vpc-dev"),
                    Change::update(
                        "network/route-table/private-2",
                        "tap-rt-private-2-dev",
                        vec![AttrChange::new("route 0.0.0.0/0", Some("nat-1".into()), Some("nat-2".into()))],
                    ),
                ],
                elapsed: Duration::from_millis(7),
            },
            StepReport { step: "registry", changes: vec![], elapsed: Duration::from_millis(1) },
        ]
    }

    #[test]
    fn text_is_grouped_by_concern_in_platform_order_with_attributes() {
        let reports = reports();
        let ordered = ordered(&reports, &["network", "registry", "ingress"]);
        let text = changes_text(&ordered, Style { color: false });
        let expected = "network\n  + network/vpc  tap-vpc-dev\n  ~ network/route-table/private-2  tap-rt-private-2-dev\n      route 0.0.0.0/0: nat-1 → nat-2\ningress\n  - ingress/listener/443  tap-alb-dev:443\n";
        assert_eq!(text, expected);
        let colored = changes_text(&ordered, Style { color: true });
        assert!(colored.contains("\u{1b}[32m+ network/vpc\u{1b}[0m"), "{colored:?}");
        assert!(colored.contains("\u{1b}[33m~ network/route-table/private-2"), "{colored:?}");
        assert!(colored.contains("\u{1b}[31m- ingress/listener/443"), "{colored:?}");
    }

    #[test]
    fn a_refusal_is_marked_with_its_reason_and_counted_in_the_totals() {
        let reports = vec![StepReport {
            step: "services",
            changes: vec![
                Change::update(
                    "services/task-definition/api-gateway",
                    "tap-api-gateway-dev",
                    vec![AttrChange::new("container.image", Some("r:v2".into()), Some("r:v9".into()))],
                ),
                Change::refuse(
                    "services/image/api-gateway",
                    "tap-api-gateway-dev:v9",
                    "tap-api-gateway-dev:v9 is not in the repository (it has: v2, v1)",
                ),
            ],
            elapsed: Duration::from_millis(3),
        }];
        let ordered = ordered(&reports, &["services"]);
        let text = changes_text(&ordered, Style { color: false });
        assert!(
            text.ends_with(
                "  ! services/image/api-gateway: tap-api-gateway-dev:v9 is not in the repository (it has: v2, v1)\n"
            ),
            "{text}"
        );
        let summary = Summary::of(ordered.iter().flat_map(|r| r.changes.iter()), 0);
        assert_eq!((summary.update, summary.refuse), (1, 1));
        assert!(summary.changed());
        let line = total_line(Operation::Plan, "dev", &summary, &CallCounts::default(), Duration::ZERO);
        assert!(line.contains("1 refused (!)") && line.contains("--allow-missing-image"), "{line}");
        let doc = changes_json(&ChangesDoc {
            command: "plan",
            environment: "dev",
            region: "eu-west-1",
            reports: &ordered,
            summary,
            unchanged_by_step: &BTreeMap::new(),
            calls: &CallCounts::default(),
            elapsed: Duration::ZERO,
            peak_rss_kb: None,
            cost: None,
        });
        assert_eq!(doc["changes"][1]["action"], "refuse");
        assert_eq!(doc["changes"][1]["reason"], "tap-api-gateway-dev:v9 is not in the repository (it has: v2, v1)");
        assert!(doc["changes"][0].get("reason").is_none(), "only refusals have a reason");
        assert_eq!(doc["summary"]["refuse"], 1);
    }

    #[test]
    fn total_lines() {
        let calls = CallCounts { total: 40, mutating: 3, ..CallCounts::default() };
        let s = Summary { create: 1, update: 1, delete: 1, unchanged: 9, keep: 0, refuse: 0, conflict: 0 };
        let wall = Duration::from_millis(2500);
        assert_eq!(
            total_line(Operation::Plan, "dev", &s, &calls, wall),
            "Plan: 1 to create, 1 to update, 1 to delete, 9 unchanged (40 AWS calls (3 mutating), 2.5s)."
        );
        assert_eq!(
            total_line(Operation::Apply, "dev", &s, &calls, wall),
            "Deploy complete: 1 created, 1 updated, 1 deleted, 9 unchanged; 40 AWS calls (3 mutating), 2.5s."
        );
        let none = Summary { unchanged: 9, ..Summary::default() };
        assert!(total_line(Operation::Plan, "dev", &none, &calls, wall).starts_with("No changes: environment `dev`"));
    }

    #[test]
    fn json_document_keeps_the_documented_fields() {
        let reports = reports();
        let ordered = ordered(&reports, &["network", "registry", "ingress"]);
        let summary = Summary::of(ordered.iter().flat_map(|r| r.changes.iter()), 4);
        let unchanged = BTreeMap::from([("network".to_owned(), 4)]);
        let calls = CallCounts::default();
        let doc = changes_json(&ChangesDoc {
            command: "plan",
            environment: "dev",
            region: "eu-west-1",
            reports: &ordered,
            summary,
            unchanged_by_step: &unchanged,
            calls: &calls,
            elapsed: Duration::from_millis(12),
            peak_rss_kb: Some(1),
            cost: Some(json!({"currency": "USD"})),
        });
        for key in [
            "format_version",
            "command",
            "environment",
            "region",
            "changed",
            "changes",
            "summary",
            "steps",
            "calls",
            "elapsed_ms",
            "peak_rss_kb",
        ] {
            assert!(doc.get(key).is_some(), "{key} in {doc}");
        }
        assert_eq!(
            doc["summary"],
            json!({"create": 1, "update": 1, "delete": 1, "keep": 0, "refuse": 0, "conflict": 0, "unchanged": 4})
        );
        assert_eq!(doc["cost"]["currency"], "USD");
        assert_eq!(
            doc["changes"][1]["attributes"][0],
            json!({"attribute": "route 0.0.0.0/0", "old": "nat-1", "new": "nat-2"})
        );
        assert_eq!(doc["changes"][0]["step"], "network");
        assert_eq!(doc["steps"][0], json!({"step": "network", "elapsed_ms": 7, "changes": 2, "unchanged": 4}));
        assert!(doc["changes"][0].get("attributes").is_none(), "empty attribute lists are left out");
    }
}
