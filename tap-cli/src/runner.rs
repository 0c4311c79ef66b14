//! Runs the registered steps as a dependency graph.
//!
//! Plan and apply start every step at once: a step reads its inputs with
//! [`Context::wait`](tap_core::Context::wait) right where it needs them, and producers write their
//! outputs as soon as they are known, so the graph is one of resources, not of steps (security
//! groups start when the VPC exists, not when the NAT gateways are up; IAM, ECR and log groups
//! start at once). When a step ends without its output, the steps waiting for it fail naming it.
//! Destroy walks the step graph in reverse: a step starts when every step reading its output is
//! done.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::stream::{FuturesUnordered, StreamExt};
use tap_core::step::OutputKind;
use tap_core::{Change, Context, Step, StepError};

/// What the runner does with each step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// Read-only: list changes.
    Plan,
    /// Converge.
    Apply,
    /// Remove everything, in reverse dependency order.
    Destroy,
}

/// The outcome of one step.
#[derive(Debug)]
pub struct StepReport {
    /// Step name.
    pub step: &'static str,
    /// Changes it listed or made.
    pub changes: Vec<Change>,
    /// Wall time.
    pub elapsed: Duration,
}

/// The graph could not be built.
#[derive(Debug, thiserror::Error)]
pub enum GraphError {
    /// A step reads an output that no registered step produces.
    #[error("step `{step}` needs the `{output}` output, but no registered step produces it")]
    Unproduced {
        /// The reading step.
        step: &'static str,
        /// The output nobody produces.
        output: OutputKind,
    },
    /// Two steps produce the same output.
    #[error("steps `{0}` and `{1}` both produce the `{2}` output")]
    Duplicate(&'static str, &'static str, OutputKind),
}

/// A step failed; the others that were running were allowed to finish.
#[derive(Debug, thiserror::Error)]
#[error("{} step(s) failed: {}", .failures.len(), .failures.iter().map(|(s, e)| format!("{s}: {e}")).collect::<Vec<_>>().join("; "))]
pub struct RunError {
    /// Step name → its error.
    pub failures: Vec<(&'static str, StepError)>,
    /// Steps that stopped because an input they wait for was never written (its step failed).
    pub not_run: Vec<&'static str>,
    /// What the steps that finished did.
    pub completed: Vec<StepReport>,
}

/// Told when each step starts and finishes, e.g. to draw progress. Both methods default to
/// doing nothing.
pub trait RunObserver: Send + Sync {
    /// `step` starts.
    fn step_started(&self, step: &'static str) {
        let _ = step;
    }
    /// `step` finished after `elapsed`, with the changes it returned or its error.
    fn step_finished(&self, step: &'static str, result: Result<&[Change], &StepError>, elapsed: Duration) {
        let _ = (step, result, elapsed);
    }
}

/// An observer that ignores everything.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoObserver;

impl RunObserver for NoObserver {}

/// The registered steps, checked to form a graph.
pub struct Runner {
    steps: Vec<Arc<dyn Step>>,
}

impl Runner {
    /// Checks that every input is produced by exactly one step.
    pub fn new(steps: Vec<Arc<dyn Step>>) -> Result<Self, GraphError> {
        let mut producers: BTreeMap<OutputKind, &'static str> = BTreeMap::new();
        for s in &steps {
            if let Some(other) = producers.insert(s.produces(), s.name()) {
                return Err(GraphError::Duplicate(other, s.name(), s.produces()));
            }
        }
        for s in &steps {
            if let Some(&output) = s.needs().iter().find(|n| !producers.contains_key(n)) {
                return Err(GraphError::Unproduced { step: s.name(), output });
            }
        }
        Ok(Runner { steps })
    }

    /// Indices of the steps `i` must wait for before it starts: none for plan and apply (inputs
    /// are awaited inside the steps), its consumers for destroy.
    fn blockers(&self, i: usize, op: Operation) -> BTreeSet<usize> {
        let step = &self.steps[i];
        (0..self.steps.len())
            .filter(|&j| op == Operation::Destroy && self.steps[j].needs().contains(&step.produces()))
            .collect()
    }

    /// Runs every step, each as soon as its blockers are done. After a failure no new step
    /// starts, the running ones finish (those waiting for the failed step's output fail too), and
    /// every failure is returned.
    pub async fn run(&self, ctx: &Context, op: Operation) -> Result<Vec<StepReport>, RunError> {
        self.run_observed(ctx, op, &NoObserver).await
    }

    /// [`Runner::run`], telling `observer` when each step starts and finishes.
    pub async fn run_observed(
        &self,
        ctx: &Context,
        op: Operation,
        observer: &dyn RunObserver,
    ) -> Result<Vec<StepReport>, RunError> {
        let blockers: Vec<BTreeSet<usize>> = (0..self.steps.len()).map(|i| self.blockers(i, op)).collect();
        let mut done = BTreeSet::new();
        let mut started = BTreeSet::new();
        let mut running = FuturesUnordered::new();
        let mut reports = Vec::new();
        let mut failures = Vec::new();
        if op != Operation::Destroy {
            ctx.expect(self.steps.iter().map(|s| s.produces()));
        }
        loop {
            if failures.is_empty() {
                for (i, needs) in blockers.iter().enumerate() {
                    if !started.contains(&i) && needs.is_subset(&done) {
                        started.insert(i);
                        let step = self.steps[i].clone();
                        running.push(async move {
                            let start = Instant::now();
                            tracing::info!(step = step.name(), "{}", verb(op));
                            observer.step_started(step.name());
                            let result = match op {
                                Operation::Plan => step.plan(ctx).await,
                                Operation::Apply => step.apply(ctx).await,
                                Operation::Destroy => step.destroy(ctx).await,
                            };
                            if op != Operation::Destroy {
                                let failure = result.as_ref().err().map(ToString::to_string);
                                ctx.close(step.produces(), failure);
                            }
                            (i, step.name(), start.elapsed(), result)
                        });
                    }
                }
            }
            let Some((i, name, elapsed, result)) = running.next().await else { break };
            observer.step_finished(name, result.as_ref().map(Vec::as_slice), elapsed);
            match result {
                Ok(changes) => {
                    tracing::info!(
                        step = name,
                        changes = changes.len(),
                        elapsed_ms = elapsed.as_millis() as u64,
                        "done"
                    );
                    done.insert(i);
                    reports.push(StepReport { step: name, changes, elapsed });
                }
                Err(e) => {
                    tracing::error!(step = name, error = %e, "failed");
                    failures.push((name, e));
                }
            }
        }
        if failures.is_empty() {
            Ok(reports)
        } else {
            // A step that stopped only because an input's producer failed is not a failure of
            // its own: it is reported as not run, next to the root causes.
            let (blocked, roots): (Vec<_>, Vec<_>) =
                failures.into_iter().partition(|(_, e)| matches!(e, StepError::MissingOutput { .. }));
            let (failures, not_run) = if roots.is_empty() {
                (blocked, vec![])
            } else {
                (roots, blocked.into_iter().map(|(step, _)| step).collect())
            };
            Err(RunError { failures, not_run, completed: reports })
        }
    }
}

fn verb(op: Operation) -> &'static str {
    match op {
        Operation::Plan => "planning",
        Operation::Apply => "applying",
        Operation::Destroy => "destroying",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_trait::async_trait;
    use std::sync::Mutex;
    use tap_core::outputs::{NetworkOutputs, RegistryOutputs, SecurityOutputs};
    use tap_core::Config;

    struct Fake {
        name: &'static str,
        needs: &'static [OutputKind],
        produces: OutputKind,
        log: Arc<Mutex<Vec<String>>>,
        fail: bool,
    }

    #[async_trait]
    impl Step for Fake {
        fn name(&self) -> &'static str {
            self.name
        }
        fn needs(&self) -> &'static [OutputKind] {
            self.needs
        }
        fn produces(&self) -> OutputKind {
            self.produces
        }
        async fn plan(&self, _: &Context) -> Result<Vec<Change>, StepError> {
            self.log.lock().unwrap().push(format!("plan {}", self.name));
            Ok(vec![])
        }
        /// Waits for its inputs, logs "start", yields, logs "end", then fails or writes its output.
        async fn apply(&self, ctx: &Context) -> Result<Vec<Change>, StepError> {
            for &input in self.needs {
                match input {
                    OutputKind::Network => ctx.wait::<NetworkOutputs>(self.name).await.map(drop)?,
                    OutputKind::Security => ctx.wait::<SecurityOutputs>(self.name).await.map(drop)?,
                    other => panic!("fake steps do not read {other}"),
                }
            }
            self.log.lock().unwrap().push(format!("start {}", self.name));
            tokio::task::yield_now().await;
            self.log.lock().unwrap().push(format!("end {}", self.name));
            if self.fail {
                return Err(StepError::Timeout { what: self.name.into(), seconds: 1 });
            }
            match self.produces {
                OutputKind::Network => {
                    ctx.put(NetworkOutputs { vpc_id: "vpc-1".into(), public_subnets: vec![], private_subnets: vec![] })
                }
                OutputKind::Registry => ctx.put(RegistryOutputs { repositories: Default::default() }),
                // Security is read by nothing here: leaving it unwritten exercises `close`.
                _ => {}
            }
            Ok(vec![Change::create(self.name, self.name)])
        }
        async fn destroy(&self, _: &Context) -> Result<Vec<Change>, StepError> {
            self.log.lock().unwrap().push(format!("destroy {}", self.name));
            Ok(vec![])
        }
    }

    fn fake(
        name: &'static str,
        needs: &'static [OutputKind],
        produces: OutputKind,
        log: &Arc<Mutex<Vec<String>>>,
    ) -> Arc<dyn Step> {
        Arc::new(Fake { name, needs, produces, log: log.clone(), fail: false })
    }

    #[test]
    fn unproduced_input_names_step_and_output() {
        let log = Arc::default();
        let err =
            Runner::new(vec![fake("services", &[OutputKind::Ingress], OutputKind::Services, &log)]).err().unwrap();
        let msg = err.to_string();
        assert!(msg.contains("services") && msg.contains("ingress"), "{msg}");
    }

    #[tokio::test]
    async fn independent_steps_overlap_and_dependents_wait() {
        let log = Arc::new(Mutex::new(vec![]));
        let runner = Runner::new(vec![
            fake("network", &[], OutputKind::Network, &log),
            fake("registry", &[], OutputKind::Registry, &log),
            fake("security", &[OutputKind::Network], OutputKind::Security, &log),
        ])
        .unwrap();
        let ctx = Context::new(Config::default());
        let reports = runner.run(&ctx, Operation::Apply).await.unwrap();
        assert_eq!(reports.len(), 3);
        let log = log.lock().unwrap().clone();
        let pos = |s: &str| log.iter().position(|l| l == s).unwrap();
        assert!(pos("start registry") < pos("end network"), "independent steps run concurrently: {log:?}");
        assert!(pos("end network") < pos("start security"), "security waits for network: {log:?}");
    }

    #[tokio::test]
    async fn destroy_runs_in_reverse() {
        let log = Arc::new(Mutex::new(vec![]));
        let runner = Runner::new(vec![
            fake("network", &[], OutputKind::Network, &log),
            fake("security", &[OutputKind::Network], OutputKind::Security, &log),
        ])
        .unwrap();
        runner.run(&Context::new(Config::default()), Operation::Destroy).await.unwrap();
        assert_eq!(*log.lock().unwrap(), vec!["destroy security", "destroy network"]);
    }

    #[tokio::test]
    async fn failure_stops_dependents() {
        let log = Arc::new(Mutex::new(vec![]));
        let failing: Arc<dyn Step> =
            Arc::new(Fake { name: "network", needs: &[], produces: OutputKind::Network, log: log.clone(), fail: true });
        let runner =
            Runner::new(vec![failing, fake("security", &[OutputKind::Network], OutputKind::Security, &log)]).unwrap();
        let err = runner.run(&Context::new(Config::default()), Operation::Apply).await.unwrap_err();
        let failed: Vec<_> = err.failures.iter().map(|(step, e)| format!("{step}: {e}")).collect();
        assert_eq!(failed.len(), 1, "{failed:?}");
        assert!(failed[0].starts_with("network"), "{failed:?}");
        assert_eq!(err.not_run, vec!["security"], "security stopped waiting for the network output");
        assert!(!log.lock().unwrap().iter().any(|l| l.contains("security")), "security never ran its work");
    }

    #[derive(Default)]
    struct Recorder(Mutex<Vec<String>>);

    impl RunObserver for Recorder {
        fn step_started(&self, step: &'static str) {
            self.0.lock().unwrap().push(format!("started {step}"));
        }
        fn step_finished(&self, step: &'static str, result: Result<&[Change], &StepError>, _: Duration) {
            let outcome = match result {
                Ok(changes) => format!("{} change(s)", changes.len()),
                Err(_) => "failed".into(),
            };
            self.0.lock().unwrap().push(format!("finished {step}: {outcome}"));
        }
    }

    #[tokio::test]
    async fn observer_sees_each_step_start_and_finish() {
        let log = Arc::new(Mutex::new(vec![]));
        let failing: Arc<dyn Step> = Arc::new(Fake {
            name: "registry",
            needs: &[],
            produces: OutputKind::Registry,
            log: log.clone(),
            fail: true,
        });
        let runner = Runner::new(vec![fake("network", &[], OutputKind::Network, &log), failing]).unwrap();
        let observer = Recorder::default();
        runner.run_observed(&Context::new(Config::default()), Operation::Apply, &observer).await.unwrap_err();
        let seen = observer.0.lock().unwrap().clone();
        for line in
            ["started network", "started registry", "finished network: 1 change(s)", "finished registry: failed"]
        {
            assert!(seen.contains(&line.to_string()), "{line} in {seen:?}");
        }
        let pos = |s: &str| seen.iter().position(|l| l == s).unwrap();
        assert!(pos("started network") < pos("finished network: 1 change(s)"));
    }
}
