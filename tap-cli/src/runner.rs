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
//! The graph is built from each step's [`Contract`]: every read output produced by exactly one
//! step, the reads acyclic (so every wait ends), every awaited milestone given by exactly one step.
//! Each step runs with its own context handle ([`Context::for_step`]), which refuses, in every
//! build, a read, wait, write or milestone its contract does not declare; a refused write fails
//! the step when it ends. In apply, the [`Pruned`] milestones are expected (a step's prune waits
//! for them); plan prunes nothing, so there a wait for one returns at once.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::stream::{FuturesUnordered, StreamExt};
use tap_core::step::{Contract, Gone, OutputKind, Pruned};
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

impl Operation {
    /// What a step is doing: `planning`, `applying` or `destroying`.
    pub fn verb(self) -> &'static str {
        match self {
            Operation::Plan => "planning",
            Operation::Apply => "applying",
            Operation::Destroy => "destroying",
        }
    }
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
    /// A step's prune waits for a milestone no registered step gives.
    #[error("step `{step}` waits for `{pruned}` before its prune, but no registered step gives it")]
    UngivenPruned {
        /// The waiting step.
        step: &'static str,
        /// The milestone nobody gives.
        pruned: Pruned,
    },
    /// Two steps give the same prune milestone.
    #[error("steps `{0}` and `{1}` both give `{2}`")]
    DuplicatePruned(&'static str, &'static str, Pruned),
    /// The steps' reads form a cycle: each would wait for the next forever.
    #[error("the steps' reads form a cycle: {}", .0.join(" reads "))]
    Cycle(Vec<&'static str>),
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
    steps: Vec<(Arc<dyn Step>, Contract)>,
}

impl Runner {
    /// Checks the steps' contracts: every output and milestone produced or given by exactly one
    /// step, every read output produced and every awaited milestone given, and no cycle of reads.
    pub fn new(steps: Vec<Arc<dyn Step>>) -> Result<Self, GraphError> {
        let steps: Vec<(Arc<dyn Step>, Contract)> = steps.into_iter().map(|s| (s.clone(), s.contract())).collect();
        let contracts: Vec<Contract> = steps.iter().map(|(_, c)| *c).collect();
        let mut producers: BTreeMap<OutputKind, &'static str> = BTreeMap::new();
        let mut givers: BTreeMap<Gone, &'static str> = BTreeMap::new();
        let mut pruners: BTreeMap<Pruned, &'static str> = BTreeMap::new();
        for c in &contracts {
            if let Some(other) = producers.insert(c.produces, c.name) {
                return Err(GraphError::Duplicate(other, c.name, c.produces));
            }
            for &gone in c.gives {
                if let Some(other) = givers.insert(gone, c.name) {
                    return Err(GraphError::DuplicateGiver(other, c.name, gone));
                }
            }
            for &pruned in c.prunes {
                if let Some(other) = pruners.insert(pruned, c.name) {
                    return Err(GraphError::DuplicatePruned(other, c.name, pruned));
                }
            }
        }
        for c in &contracts {
            if let Some(&output) = c.reads.iter().find(|n| !producers.contains_key(n)) {
                return Err(GraphError::Unproduced { step: c.name, output });
            }
            if let Some(&gone) = c.destroy_waits.iter().find(|g| !givers.contains_key(g)) {
                return Err(GraphError::Ungiven { step: c.name, gone });
            }
            if let Some(&pruned) = c.prune_waits.iter().find(|p| !pruners.contains_key(p)) {
                return Err(GraphError::UngivenPruned { step: c.name, pruned });
            }
        }
        if let Some(cycle) = read_cycle(&contracts, &producers) {
            return Err(GraphError::Cycle(cycle));
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
        let contracts = || self.steps.iter().map(|(_, c)| c);
        match op {
            Operation::Destroy => ctx.expect_gone(contracts().flat_map(|c| c.gives.iter().copied())),
            Operation::Apply => {
                ctx.expect(contracts().map(|c| c.produces));
                ctx.expect_pruned(contracts().flat_map(|c| c.prunes.iter().copied()));
            }
            // Plan prunes nothing: no prune milestone is expected, a wait for one returns at once.
            Operation::Plan => ctx.expect(contracts().map(|c| c.produces)),
        }
        let mut running: FuturesUnordered<_> = self
            .steps
            .iter()
            .map(|(step, contract)| async move {
                let start = Instant::now();
                let name = contract.name;
                tracing::info!(step = name, "{}", op.verb());
                observer.step_started(name);
                // This step's handle: its reads name it, and what it does not declare is refused.
                let ctx = ctx.for_step(*contract);
                let mut result = match op {
                    Operation::Plan => step.plan(&ctx).await,
                    Operation::Apply => step.apply(&ctx).await,
                    Operation::Destroy => step.destroy(&ctx).await,
                };
                if let (Ok(_), Some(refused)) = (&result, ctx.take_refused()) {
                    result = Err(refused);
                }
                let failure = result.as_ref().err().map(ToString::to_string);
                match op {
                    Operation::Destroy => ctx.close_gone(contract.gives, failure),
                    Operation::Apply => {
                        ctx.close(contract.produces, failure.clone());
                        ctx.close_pruned(contract.prunes, failure);
                    }
                    Operation::Plan => ctx.close(contract.produces, failure),
                }
                (name, start.elapsed(), result)
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

/// A cycle of reads among `contracts` (each step reading the next one's output), if any.
fn read_cycle(contracts: &[Contract], producers: &BTreeMap<OutputKind, &'static str>) -> Option<Vec<&'static str>> {
    let reads = |name: &str| -> Vec<&'static str> {
        contracts
            .iter()
            .filter(|c| c.name == name)
            .flat_map(|c| c.reads.iter().filter_map(|r| producers.get(r).copied()))
            .collect()
    };
    // Depth-first, from every step, along the reads; a step met again on the path closes a cycle.
    fn visit(
        step: &'static str,
        path: &mut Vec<&'static str>,
        done: &mut Vec<&'static str>,
        reads: &dyn Fn(&str) -> Vec<&'static str>,
    ) -> Option<Vec<&'static str>> {
        if let Some(at) = path.iter().position(|s| *s == step) {
            let mut cycle = path[at..].to_vec();
            cycle.push(step);
            return Some(cycle);
        }
        if done.contains(&step) {
            return None;
        }
        path.push(step);
        for next in reads(step) {
            if let Some(cycle) = visit(next, path, done, reads) {
                return Some(cycle);
            }
        }
        path.pop();
        done.push(step);
        None
    }
    let mut done = Vec::new();
    contracts.iter().find_map(|c| visit(c.name, &mut Vec::new(), &mut done, &reads))
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
        fn contract(&self) -> Contract {
            Contract::new(self.name, self.produces).reads(self.needs)
        }
        async fn plan(&self, _: &Context) -> Result<Vec<Change>, StepError> {
            self.log.lock().unwrap().push(format!("plan {}", self.name));
            Ok(vec![])
        }
        /// Waits for its inputs, logs "start", yields, logs "end", then fails or writes its output.
        async fn apply(&self, ctx: &Context) -> Result<Vec<Change>, StepError> {
            for &input in self.needs {
                match input {
                    OutputKind::Network => ctx.wait::<NetworkOutputs>().await.map(drop)?,
                    OutputKind::Security => ctx.wait::<SecurityOutputs>().await.map(drop)?,
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
        fn contract(&self) -> Contract {
            Contract::new(self.name, self.produces).destroy_waits(self.waits).gives(self.gives)
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
                ctx.wait_gone(gone).await?;
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
            fn contract(&self) -> Contract {
                self.0.contract().gives(&[Gone::EcsServices])
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
        fn contract(&self) -> Contract {
            Contract::new("ingress", OutputKind::Ingress)
        }
        /// Writes what another step produces.
        async fn plan(&self, ctx: &Context) -> Result<Vec<Change>, StepError> {
            ctx.put(RegistryOutputs { repositories: Default::default() });
            Ok(vec![])
        }
        async fn apply(&self, ctx: &Context) -> Result<Vec<Change>, StepError> {
            ctx.wait::<NetworkOutputs>().await?;
            Ok(vec![])
        }
        async fn destroy(&self, ctx: &Context) -> Result<Vec<Change>, StepError> {
            ctx.wait_gone(Gone::EcsServices).await?;
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
        assert!(err.to_string().contains("Contract::reads"), "says where to declare it: {err}");

        let err = runner.run(&Context::new(Config::default()), Operation::Destroy).await.unwrap_err();
        let [(step, StepError::Undeclared { input, .. })] = err.failures.as_slice() else { panic!("{err}") };
        assert_eq!((*step, input.as_str()), ("ingress", "ecs-services gone"), "{err}");
        assert!(err.to_string().contains("Contract::destroy_waits"), "{err}");

        // A write of another step's output is not made, and fails the step when it ends.
        let ctx = Context::new(Config::default());
        let err = runner.run(&ctx, Operation::Plan).await.unwrap_err();
        let [(step, StepError::Undeclared { input, .. })] = err.failures.as_slice() else { panic!("{err}") };
        assert_eq!((*step, input.as_str()), ("ingress", "registry"), "{err}");
        assert!(ctx.try_get::<RegistryOutputs>().is_none());
    }

    #[test]
    fn reads_in_a_cycle_are_refused_naming_the_cycle() {
        let log = Arc::default();
        let err = Runner::new(vec![
            fake("network", &[OutputKind::Security], OutputKind::Network, &log),
            fake("security", &[OutputKind::Network], OutputKind::Security, &log),
        ])
        .err()
        .unwrap();
        assert!(matches!(err, GraphError::Cycle(_)), "{err}");
        assert!(err.to_string().contains("network reads security reads network"), "{err}");
    }

    /// Its prune waits for the milestones its contract awaits, then gives those it declares.
    struct Pruner {
        contract: Contract,
        log: Arc<Mutex<Vec<String>>>,
    }

    #[async_trait]
    impl Step for Pruner {
        fn contract(&self) -> Contract {
            self.contract
        }
        /// Waits as in apply, and gives nothing (plan prunes nothing).
        async fn plan(&self, ctx: &Context) -> Result<Vec<Change>, StepError> {
            for &pruned in self.contract.prune_waits {
                ctx.wait_pruned(pruned).await?;
            }
            self.log.lock().unwrap().push(format!("planned {}", self.contract.name));
            Ok(vec![])
        }
        async fn apply(&self, ctx: &Context) -> Result<Vec<Change>, StepError> {
            for &pruned in self.contract.prune_waits {
                ctx.wait_pruned(pruned).await?;
            }
            tokio::task::yield_now().await;
            self.log.lock().unwrap().push(format!("pruned {}", self.contract.name));
            for &pruned in self.contract.prunes {
                ctx.give_pruned(pruned);
            }
            Ok(vec![])
        }
        async fn destroy(&self, _: &Context) -> Result<Vec<Change>, StepError> {
            Ok(vec![])
        }
    }

    #[tokio::test]
    async fn in_apply_a_prune_waits_for_the_services_pruned_milestone_and_in_plan_not() {
        let log = Arc::new(Mutex::new(vec![]));
        let runner = Runner::new(vec![
            Arc::new(Pruner {
                contract: Contract::new("security", OutputKind::Security).prune_waits(&[Pruned::Services]),
                log: log.clone(),
            }) as Arc<dyn Step>,
            Arc::new(Pruner {
                contract: Contract::new("services", OutputKind::Services).prunes(&[Pruned::Services]),
                log: log.clone(),
            }),
        ])
        .unwrap();
        runner.run(&Context::new(Config::default()), Operation::Apply).await.unwrap();
        assert_eq!(*log.lock().unwrap(), ["pruned services", "pruned security"]);
        log.lock().unwrap().clear();
        let ctx = Context::new(Config::default());
        let plan = runner.run(&ctx, Operation::Plan);
        tokio::time::timeout(Duration::from_secs(5), plan).await.expect("plan waits for no prune").unwrap();
        assert_eq!(log.lock().unwrap().len(), 2, "{log:?}");

        let msg = Runner::new(vec![Arc::new(Pruner {
            contract: Contract::new("security", OutputKind::Security).prune_waits(&[Pruned::Services]),
            log,
        }) as Arc<dyn Step>])
        .err()
        .unwrap()
        .to_string();
        assert!(msg.contains("security") && msg.contains("services pruned"), "{msg}");
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
