//! Progress of `deploy`, `plan` and `destroy` on stderr: a live view (indicatif spinners, one per
//! running step, with each resource change printed above them as it happens) when stderr is a
//! terminal, plain timestamped lines otherwise, or nothing.
//!
//! [`Progress`] is both the runner's [`RunObserver`] (step start and finish, and the changes a
//! step returns) and the [`ProgressSink`] installed in the [`Context`](tap_core::Context) (the
//! per-resource events steps may report). It also counts, whatever it shows, the resources that
//! steps reported as found and did not change: the summary's "unchanged".
//!
//! Logs written while the live view is drawn go through [`LogWriter`], which suspends the view
//! for the line, so bars and log lines never mangle each other.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use tap_core::progress::{ProgressEvent, ProgressSink};
use tap_core::{Action, Change, StepError};

use crate::runner::{Operation, RunObserver};

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressMode {
    /// Spinners redrawn in place (stderr is a terminal).
    Live,
    /// One line per event (stderr is a file or a pipe).
    Plain,
    /// Nothing.
    Off,
}

/// The live view currently drawn, for [`LogWriter`].
static ACTIVE: Mutex<Option<MultiProgress>> = Mutex::new(None);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A `tracing` writer to stderr that suspends the live view while it writes a line.
#[derive(Debug, Default)]
pub struct LogWriter {
    buf: Vec<u8>,
}

impl Write for LogWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LogWriter {
    fn drop(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        let active = lock(&ACTIVE).clone();
        let write = || {
            let _ = std::io::stderr().lock().write_all(&self.buf);
        };
        match active {
            Some(multi) => multi.suspend(write),
            None => write(),
        }
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriterMaker {
    type Writer = LogWriter;
    fn make_writer(&'a self) -> LogWriter {
        LogWriter::default()
    }
}

/// Makes a [`LogWriter`] per log event.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogWriterMaker;

/// What one step did, as far as progress knows.
#[derive(Debug)]
struct StepState {
    bar: Option<ProgressBar>,
    /// Resources a change was seen for (reported live or returned).
    changed: BTreeSet<String>,
    /// Changes already printed: (resource, action).
    shown: BTreeSet<(String, Action)>,
    /// Resources reported as found.
    found: BTreeSet<String>,
    /// Waits already printed (plain mode prints each once).
    waits: BTreeSet<String>,
}

impl StepState {
    fn unchanged(&self) -> usize {
        self.found.difference(&self.changed).count()
    }
}

/// Progress of one run.
pub struct Progress {
    mode: ProgressMode,
    op: Operation,
    start: Instant,
    multi: Option<MultiProgress>,
    steps: Mutex<BTreeMap<String, StepState>>,
    out: Mutex<Box<dyn Write + Send>>,
}

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Progress").field("mode", &self.mode).field("op", &self.op).finish_non_exhaustive()
    }
}

impl Progress {
    /// Progress of `op`, shown on stderr in `mode`.
    pub fn new(mode: ProgressMode, op: Operation) -> Self {
        let multi = (mode == ProgressMode::Live).then(|| {
            let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(10));
            *lock(&ACTIVE) = Some(multi.clone());
            multi
        });
        Progress {
            mode,
            op,
            start: Instant::now(),
            multi,
            steps: Mutex::default(),
            out: Mutex::new(Box::new(std::io::stderr())),
        }
    }

    /// Plain-line progress written to `out` (for tests).
    #[cfg(test)]
    pub fn plain_to(op: Operation, out: Box<dyn Write + Send>) -> Self {
        Progress {
            mode: ProgressMode::Plain,
            op,
            start: Instant::now(),
            multi: None,
            steps: Mutex::default(),
            out: Mutex::new(out),
        }
    }

    /// Resources steps found and left unchanged, per step.
    pub fn unchanged_by_step(&self) -> BTreeMap<String, usize> {
        lock(&self.steps).iter().map(|(s, st)| (s.clone(), st.unchanged())).collect()
    }

    /// Resources steps found and left unchanged, in all.
    pub fn unchanged(&self) -> usize {
        lock(&self.steps).values().map(StepState::unchanged).sum()
    }

    /// A line above the live view, or a plain line.
    fn line(&self, text: &str) {
        match (&self.mode, &self.multi) {
            (ProgressMode::Off, _) => {}
            (ProgressMode::Live, Some(multi)) => {
                let _ = multi.println(text);
            }
            _ => {
                let mut out = lock(&self.out);
                let _ = writeln!(out, "{text}");
                let _ = out.flush();
            }
        }
    }

    fn stamp(&self) -> String {
        format!("[{:>6.1}s]", self.start.elapsed().as_secs_f64())
    }

    /// Whether single changes are shown as they happen (plan shows them on stdout instead).
    fn shows_changes(&self) -> bool {
        self.op != Operation::Plan
    }

    fn change_line(&self, step: &str, change: &Change) -> String {
        match self.mode {
            ProgressMode::Live => {
                format!("  {} {} ({})  {}", change.action.symbol(), change.resource, change.name, self.stamp())
            }
            _ => {
                format!("{} {step:<10} {} {} ({})", self.stamp(), change.action.symbol(), change.resource, change.name)
            }
        }
    }

    /// Records (and shows, once) one change of `step`.
    fn record_change(&self, steps: &mut BTreeMap<String, StepState>, step: &str, change: &Change) -> Option<String> {
        let state = steps.entry(step.to_owned()).or_insert_with(|| StepState::new(None));
        state.changed.insert(change.resource.clone());
        let fresh = state.shown.insert((change.resource.clone(), change.action));
        (fresh && self.shows_changes()).then(|| self.change_line(step, change))
    }

    /// Ends the live view (again is fine); prints `summary` (when given) as the last line.
    pub fn finish(&self, summary: Option<&str>) {
        if self.multi.is_some() {
            // The finished step lines stay on screen as the record of the run.
            *lock(&ACTIVE) = None;
        }
        if let (Some(summary), true) = (summary, self.mode != ProgressMode::Off) {
            let mut out = lock(&self.out);
            let _ = writeln!(out, "{summary}");
            let _ = out.flush();
        }
    }

    fn spinner_style() -> ProgressStyle {
        ProgressStyle::with_template("{spinner:.cyan} {prefix:<10} {elapsed:>4} {wide_msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner())
            .tick_strings(&["⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏", "✓"])
    }

    fn done_style() -> ProgressStyle {
        ProgressStyle::with_template("{prefix:<12} {wide_msg}").unwrap_or_else(|_| ProgressStyle::default_spinner())
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if self.multi.is_some() {
            *lock(&ACTIVE) = None;
        }
    }
}

impl StepState {
    fn new(bar: Option<ProgressBar>) -> Self {
        StepState {
            bar,
            changed: BTreeSet::new(),
            shown: BTreeSet::new(),
            found: BTreeSet::new(),
            waits: BTreeSet::new(),
        }
    }
}

/// `3 created, 1 updated, 2 unchanged` (or `to create` … for plan); `no changes` when all are 0.
pub fn counts_phrase(op: Operation, create: usize, update: usize, delete: usize, unchanged: usize) -> String {
    let (c, u, d) = match op {
        Operation::Plan => ("to create", "to update", "to delete"),
        _ => ("created", "updated", "deleted"),
    };
    let mut parts = Vec::new();
    for (n, word) in [(create, c), (update, u), (delete, d)] {
        if n > 0 {
            parts.push(format!("{n} {word}"));
        }
    }
    if parts.is_empty() {
        parts.push("no changes".into());
    }
    if unchanged > 0 {
        parts.push(format!("{unchanged} unchanged"));
    }
    parts.join(", ")
}

impl RunObserver for Progress {
    fn step_started(&self, step: &'static str) {
        let bar = self.multi.as_ref().map(|multi| {
            let bar = multi.add(ProgressBar::new_spinner());
            bar.set_style(Self::spinner_style());
            bar.set_prefix(step);
            bar.set_message(format!("{}…", self.op.verb()));
            bar.enable_steady_tick(Duration::from_millis(100));
            bar
        });
        lock(&self.steps).insert(step.to_owned(), StepState::new(bar));
        if self.mode == ProgressMode::Plain {
            self.line(&format!("{} {step:<10} {}", self.stamp(), self.op.verb()));
        }
    }

    fn step_finished(&self, step: &'static str, result: Result<&[Change], &StepError>, elapsed: Duration) {
        let mut lines = Vec::new();
        let (bar, message) = {
            let mut steps = lock(&self.steps);
            if let Ok(changes) = result {
                for change in changes {
                    lines.extend(self.record_change(&mut steps, step, change));
                }
            }
            let state = steps.entry(step.to_owned()).or_insert_with(|| StepState::new(None));
            let message = match result {
                Ok(changes) => {
                    let count = |a: Action| changes.iter().filter(|c| c.action == a).count();
                    let phrase = counts_phrase(
                        self.op,
                        count(Action::Create),
                        count(Action::Update),
                        count(Action::Delete),
                        state.unchanged(),
                    );
                    format!("{phrase} ({:.1}s)", elapsed.as_secs_f64())
                }
                Err(e) => format!("failed after {:.1}s: {e}", elapsed.as_secs_f64()),
            };
            (state.bar.take(), message)
        };
        for line in lines {
            self.line(&line);
        }
        let ok = result.is_ok();
        match bar {
            Some(bar) => {
                bar.set_style(Self::done_style());
                bar.set_prefix(format!("{} {step}", if ok { "✓" } else { "✗" }));
                bar.finish_with_message(message);
            }
            None => {
                if self.mode == ProgressMode::Plain {
                    let status = if ok { "done:" } else { "FAILED:" };
                    self.line(&format!("{} {step:<10} {status} {message}", self.stamp()));
                }
            }
        }
    }
}

impl ProgressSink for Progress {
    fn event(&self, event: ProgressEvent<'_>) {
        let step = event.step().to_owned();
        let mut steps = lock(&self.steps);
        let line = match event {
            ProgressEvent::Changed { change, .. } => self.record_change(&mut steps, &step, change),
            ProgressEvent::Found { resource, .. } => {
                steps.entry(step).or_insert_with(|| StepState::new(None)).found.insert(resource.to_owned());
                None
            }
            ProgressEvent::Working { resource, action, .. } => {
                let state = steps.entry(step).or_insert_with(|| StepState::new(None));
                if let Some(bar) = &state.bar {
                    let doing = match action {
                        Action::Create => "creating",
                        Action::Update => "updating",
                        Action::Delete => "deleting",
                        Action::Keep => "keeping",
                        Action::Refuse | Action::Conflict => "refusing",
                    };
                    bar.set_message(format!("{doing} {resource}"));
                }
                None
            }
            ProgressEvent::Waiting { what, .. } => {
                let state = steps.entry(step.clone()).or_insert_with(|| StepState::new(None));
                match &state.bar {
                    Some(bar) => {
                        bar.set_message(format!("waiting for {what}"));
                        None
                    }
                    None => state
                        .waits
                        .insert(what.to_owned())
                        .then(|| format!("{} {step:<10} waiting for {what}", self.stamp())),
                }
            }
        };
        drop(steps);
        if let Some(line) = line {
            self.line(&line);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// A writer whose bytes the test can read.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Shared {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    #[test]
    fn plain_lines_show_each_change_once_and_count_unchanged() {
        let out = Shared::default();
        let p = Progress::plain_to(Operation::Apply, Box::new(out.clone()));
        p.step_started("network");
        let vpc = Change::create("network/vpc", "tap-vpc-dev");
        p.event(ProgressEvent::Changed { step: "network", change: &vpc });
        for r in ["network/igw", "network/subnet/public-1", "network/route-table/private-1"] {
            p.event(ProgressEvent::Found { step: "network", resource: r });
        }
        p.event(ProgressEvent::Waiting { step: "network", what: "NAT gateway nat-1 to become available" });
        p.event(ProgressEvent::Waiting { step: "network", what: "NAT gateway nat-1 to become available" });
        let route = Change::update("network/route-table/private-1", "rt", vec![]);
        p.step_finished("network", Ok(&[vpc.clone(), route]), Duration::from_millis(1500));
        p.finish(Some("Deploy complete."));

        let text = out.text();
        assert_eq!(text.matches("+ network/vpc (tap-vpc-dev)").count(), 1, "shown once though reported twice:\n{text}");
        assert_eq!(text.matches("waiting for NAT gateway").count(), 1, "{text}");
        assert!(text.contains("network    applying"), "{text}");
        assert!(text.contains("network    done: 1 created, 1 updated, 2 unchanged (1.5s)"), "{text}");
        assert!(text.lines().last() == Some("Deploy complete."), "{text}");
        assert!(!text.contains('\u{1b}'), "no escape sequences in plain mode: {text:?}");
        assert_eq!(p.unchanged(), 2);
        assert_eq!(p.unchanged_by_step()["network"], 2);
    }

    #[test]
    fn plan_progress_does_not_repeat_the_changes_and_failures_are_named() {
        let out = Shared::default();
        let p = Progress::plain_to(Operation::Plan, Box::new(out.clone()));
        p.step_started("registry");
        p.step_finished("registry", Ok(&[Change::create("registry/repository/frontend", "r")]), Duration::ZERO);
        p.step_started("cluster");
        let err = StepError::Timeout { what: "cluster".into(), seconds: 3 };
        p.step_finished("cluster", Err(&err), Duration::ZERO);
        let text = out.text();
        assert!(!text.contains("registry/repository/frontend"), "{text}");
        assert!(text.contains("registry   done: 1 to create"), "{text}");
        assert!(text.contains("cluster    FAILED: failed after 0.0s: timed out"), "{text}");
    }

    #[test]
    fn off_shows_nothing_but_still_counts() {
        let p = Progress::new(ProgressMode::Off, Operation::Apply);
        p.step_started("network");
        p.event(ProgressEvent::Found { step: "network", resource: "network/vpc" });
        p.step_finished("network", Ok(&[]), Duration::ZERO);
        p.finish(Some("summary"));
        assert_eq!(p.unchanged(), 1);
    }

    #[test]
    fn counts_phrase_reads_well() {
        assert_eq!(counts_phrase(Operation::Plan, 0, 0, 0, 0), "no changes");
        assert_eq!(counts_phrase(Operation::Apply, 2, 0, 1, 5), "2 created, 1 deleted, 5 unchanged");
        assert_eq!(counts_phrase(Operation::Plan, 1, 1, 0, 0), "1 to create, 1 to update");
    }
}
