//! Runs the registered steps as a dependency graph.
//!
//! Plan and apply start every step at once: a step reads its inputs with
//! [`Context::wait`](tap_core::Context::wait) right where it needs them, and producers write their
//! outputs as soon as they are known, so the graph is one of resources, not of steps (security
//! groups start when the VPC exists, not when the NAT gateways are up; IAM, ECR and log groups
//! start at once). When a step ends without its output, the steps waiting for it fail naming it.
//! Destroy starts every step at once too: each deletion waits, inside its step, for the
//! [`Gone`] milestones of other steps it declares (the services gone, the load balancer gone, …),
//! so the NAT gateways, the load balancer and the services all start deleting at once.
//! Every step is [declared](Context::declare) to the context, which refuses (in debug builds) a
//! wait for an input the step did not declare.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::stream::{FuturesUnordered, StreamExt};
use tap_core::step::{Gone, OutputKind};
use tap_core::{Change, Context, Step, StepError};

/// What the runner does with each step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// Read-only: list changes.
    Plan,
    /// Converge.
    Apply,
    /// Remove everything: every step at once, each deletion when what holds it is gone.
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
    /// A step's destroy waits for a milestone no registered step gives.
    #[error("step `{step}` waits for `{gone}` in destroy, but no registered step gives it")]
    Ungiven {
        /// The waiting step.
        step: &'static str,
        /// The milestone nobody gives.
        gone: Gone,
    },
    /// Two steps give the same milestone.
    #[error("steps `{0}` and `{1}` both give `{2}`")]
    DuplicateGiver(&'static str, &'static str, Gone),
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
        let mut givers: BTreeMap<Gone, &'static str> = BTreeMap::new();
        for s in &steps {
            for &gone in s.gives() {
                if let Some(other) = givers.insert(gone, s.name()) {
                    return Err(GraphError::DuplicateGiver(other, s.name(), gone));
                }
            }
        }
        for s in &steps {
            let reads = s.needs().iter().chain(s.prune_reads());
            if let Some(&output) = reads.into_iter().find(|n| !producers.contains_key(n)) {
                return Err(GraphError::Unproduced { step: s.name(), output });
            }
            if let Some(&gone) = s.destroy_waits().iter().find(|g| !givers.contains_key(g)) {
                return Err(GraphError::Ungiven { step: s.name(), gone });
            }
        }
        Ok(Runner { steps })
    }

    /// Runs every step at once: each waits inside for the inputs (plan, apply) or the milestones
    /// (destroy) it declares. The running ones finish after a failure (those waiting for the
    /// failed step's output or milestone fail too), and every failure is returned.
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
        let mut reports = Vec::new();
        let mut failures = Vec::new();
        for step in &self.steps {
            ctx.declare(step.as_ref());
        }
        if op == Operation::Destroy {
            ctx.expect_gone(self.steps.iter().flat_map(|s| s.gives().iter().copied()));
        } else {
            ctx.expect(self.steps.iter().map(|s| s.produces()));
        }
        let mut running: FuturesUnordered<_> = self
            .steps
            .iter()
            .map(|step| async move {
                let start = Instant::now();
                tracing::info!(step = step.name(), "{}", verb(op));
                observer.step_started(step.name());
                let result = match op {
                    Operation::Plan => step.plan(ctx).await,
                    Operation::Apply => step.apply(ctx).await,
                    Operation::Destroy => step.destroy(ctx).await,
                };
                let failure = result.as_ref().err().map(ToString::to_string);
                if op == Operation::Destroy {
                    ctx.close_gone(step.gives(), failure);
                } else {
                    ctx.close(step.produces(), failure);
                }
                (step.name(), start.elapsed(), result)
            })
            .collect();
        while let Some((name, elapsed, result)) = running.next().await {
            observer.step_finished(name, result.as_ref().map(Vec::as_slice), elapsed);
            match result {
                Ok(changes) => {
                    tracing::info!(
                        step = name,
                        changes = changes.len(),
                        elapsed_ms = elapsed.as_millis() as u64,
                        "done"
                    );
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

    /// A destroy that waits for the milestones it declares, logs, then gives its own.
    struct Deleter {
        name: &'static str,
        waits: &'static [Gone],
        gives: &'static [Gone],
        produces: OutputKind,
        log: Arc<Mutex<Vec<String>>>,
    }

    #[async_trait]
    impl Step for Deleter {
        fn name(&self) -> &'static str {
            self.name
        }
        fn needs(&self) -> &'static [OutputKind] {
            &[]
        }
        fn produces(&self) -> OutputKind {
            self.produces
        }
        fn destroy_waits(&self) -> &'static [Gone] {
            self.waits
        }
        fn gives(&self) -> &'static [Gone] {
            self.gives
        }
        async fn plan(&self, _: &Context) -> Result<Vec<Change>, StepError> {
            Ok(vec![])
        }
        async fn apply(&self, _: &Context) -> Result<Vec<Change>, StepError> {
            Ok(vec![])
        }
        async fn destroy(&self, ctx: &Context) -> Result<Vec<Change>, StepError> {
            self.log.lock().unwrap().push(format!("start {}", self.name));
            for &gone in self.waits {
                ctx.wait_gone(self.name, gone).await?;
            }
            tokio::task::yield_now().await;
            self.log.lock().unwrap().push(format!("deleted {}", self.name));
            Ok(vec![])
        }
    }

    #[tokio::test]
    async fn destroy_starts_every_step_at_once_and_deletions_wait_for_their_milestones() {
        let log = Arc::new(Mutex::new(vec![]));
        let step = |name, waits, gives, produces| -> Arc<dyn Step> {
            Arc::new(Deleter { name, waits, gives, produces, log: log.clone() })
        };
        let runner = Runner::new(vec![
            step("network", &[Gone::SecurityGroups], &[], OutputKind::Network),
            step("security", &[Gone::EcsServices], &[Gone::SecurityGroups], OutputKind::Security),
            step("services", &[], &[Gone::EcsServices], OutputKind::Services),
        ])
        .unwrap();
        runner.run(&Context::new(Config::default()), Operation::Destroy).await.unwrap();
        let log = log.lock().unwrap().clone();
        let pos = |s: &str| log.iter().position(|l| l == s).unwrap();
        assert!(pos("start network") < pos("deleted services"), "every step starts at once: {log:?}");
        assert!(pos("deleted services") < pos("deleted security"), "{log:?}");
        assert!(pos("deleted security") < pos("deleted network"), "{log:?}");
    }

    #[tokio::test]
    async fn a_failed_giver_fails_its_waiters_naming_it() {
        let log = Arc::new(Mutex::new(vec![]));
        let giver: Arc<dyn Step> = Arc::new(Fake {
            name: "services",
            needs: &[],
            produces: OutputKind::Services,
            log: log.clone(),
            fail: true,
        });
        struct FailingDestroy(Arc<dyn Step>);
        #[async_trait]
        impl Step for FailingDestroy {
            fn name(&self) -> &'static str {
                self.0.name()
            }
            fn needs(&self) -> &'static [OutputKind] {
                &[]
            }
            fn produces(&self) -> OutputKind {
                self.0.produces()
            }
            fn gives(&self) -> &'static [Gone] {
                &[Gone::EcsServices]
            }
            async fn plan(&self, _: &Context) -> Result<Vec<Change>, StepError> {
                Ok(vec![])
            }
            async fn apply(&self, _: &Context) -> Result<Vec<Change>, StepError> {
                Ok(vec![])
            }
            async fn destroy(&self, _: &Context) -> Result<Vec<Change>, StepError> {
                Err(StepError::Timeout { what: "ECS service tap-fe-dev to drain".into(), seconds: 1 })
            }
        }
        let waiter: Arc<dyn Step> = Arc::new(Deleter {
            name: "cluster",
            waits: &[Gone::EcsServices],
            gives: &[],
            produces: OutputKind::Cluster,
            log: log.clone(),
        });
        let runner = Runner::new(vec![Arc::new(FailingDestroy(giver)), waiter]).unwrap();
        let err = runner.run(&Context::new(Config::default()), Operation::Destroy).await.unwrap_err();
        assert_eq!(err.not_run, vec!["cluster"], "{err}");
        assert!(err.to_string().contains("drain"), "{err}");
        assert!(!log.lock().unwrap().contains(&"deleted cluster".to_string()));
    }

    #[test]
    fn a_milestone_nobody_gives_is_refused_naming_step_and_milestone() {
        let log = Arc::new(Mutex::new(vec![]));
        let waiter: Arc<dyn Step> = Arc::new(Deleter {
            name: "network",
            waits: &[Gone::Namespace],
            gives: &[],
            produces: OutputKind::Network,
            log,
        });
        let msg = Runner::new(vec![waiter]).err().unwrap().to_string();
        assert!(msg.contains("network") && msg.contains("namespace gone"), "{msg}");
    }

    /// Reads what it does not declare: `NetworkOutputs` in apply, a milestone in destroy.
    struct Sneaky;

    #[async_trait]
    impl Step for Sneaky {
        fn name(&self) -> &'static str {
            "ingress"
        }
        fn needs(&self) -> &'static [OutputKind] {
            &[]
        }
        fn produces(&self) -> OutputKind {
            OutputKind::Ingress
        }
        async fn plan(&self, _: &Context) -> Result<Vec<Change>, StepError> {
            Ok(vec![])
        }
        async fn apply(&self, ctx: &Context) -> Result<Vec<Change>, StepError> {
            ctx.wait::<NetworkOutputs>("ingress").await?;
            Ok(vec![])
        }
        async fn destroy(&self, ctx: &Context) -> Result<Vec<Change>, StepError> {
            ctx.wait_gone("ingress", Gone::EcsServices).await?;
            Ok(vec![])
        }
    }

    #[tokio::test]
    async fn a_wait_for_an_undeclared_input_is_refused_naming_step_and_input() {
        let log = Arc::default();
        let runner =
            Runner::new(vec![fake("network", &[], OutputKind::Network, &log), Arc::new(Sneaky) as Arc<dyn Step>])
                .unwrap();
        let err = runner.run(&Context::new(Config::default()), Operation::Apply).await.unwrap_err();
        let [(step, StepError::Undeclared { input, .. })] = err.failures.as_slice() else { panic!("{err}") };
        assert_eq!((*step, input.as_str()), ("ingress", "network"), "{err}");
        assert!(err.to_string().contains("needs()"), "says where to declare it: {err}");

        let err = runner.run(&Context::new(Config::default()), Operation::Destroy).await.unwrap_err();
        let [(step, StepError::Undeclared { input, .. })] = err.failures.as_slice() else { panic!("{err}") };
        assert_eq!((*step, input.as_str()), ("ingress", "ecs-services gone"), "{err}");
        assert!(err.to_string().contains("destroy_waits()"), "{err}");
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
