//! The [`Context`] a run shares between steps: the validated config, the names derived from it,
//! and the outputs steps write for each other.
//!
//! Outputs are the edges of the run's dependency graph, at resource level rather than step level:
//! a step reads an input with [`Context::wait`] right where it needs it, and a producer may write
//! its output as soon as the resources it describes exist (the network step writes the VPC and
//! subnets before its NAT gateways are up). So the runner can start every step at once and each
//! call still starts as soon as its inputs are known.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, RwLock};

use tokio::sync::Notify;

use crate::config::Config;
use crate::error::StepError;
use crate::naming::Names;
use crate::outputs::*;
use crate::progress::{ProgressEvent, ProgressSink};
use crate::step::{Gone, OutputKind, Step};

/// Everything a step reads besides AWS itself.
#[derive(Debug)]
pub struct Context {
    /// The validated configuration.
    pub config: Arc<Config>,
    /// Names and tags of this environment.
    pub names: Names,
    /// The AWS region the run talks to (for ARNs the steps build, e.g. log group ARNs).
    pub region: String,
    outputs: RwLock<Outputs>,
    /// Outputs written in part so far ([`Context::put_partial`]), read by [`Context::wait_for`].
    partial: RwLock<Outputs>,
    arrivals: Mutex<Arrivals>,
    published: Notify,
    progress: ProgressSlot,
    declared: RwLock<BTreeMap<String, Declared>>,
}

/// What a step declares it waits for ([`Step::needs`], [`Step::prune_reads`],
/// [`Step::destroy_waits`]), registered by the runner with [`Context::declare`].
#[derive(Debug, Clone)]
struct Declared {
    needs: &'static [OutputKind],
    prune_reads: &'static [OutputKind],
    destroy_waits: &'static [Gone],
}

/// Which outputs are still to come in this run, and which will never come.
#[derive(Debug, Default)]
struct Arrivals {
    /// Outputs a running step will write: [`Context::wait`] waits for these.
    coming: BTreeSet<OutputKind>,
    /// Outputs whose producer ended without writing them, and why.
    missing: BTreeMap<OutputKind, String>,
    /// Milestones a running destroy will give: [`Context::wait_gone`] waits for these.
    gone_coming: BTreeSet<Gone>,
    /// Milestones whose giver failed, and why.
    gone_missing: BTreeMap<Gone, String>,
}

/// The optional progress sink (a newtype only to give it a `Debug`).
#[derive(Default, Clone)]
struct ProgressSlot(Option<Arc<dyn ProgressSink>>);

impl std::fmt::Debug for ProgressSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "Some(ProgressSink)" } else { "None" })
    }
}

/// The outputs written so far.
#[derive(Debug, Default, Clone)]
pub struct Outputs {
    network: Option<NetworkOutputs>,
    registry: Option<RegistryOutputs>,
    cluster: Option<ClusterOutputs>,
    security: Option<SecurityOutputs>,
    ingress: Option<IngressOutputs>,
    discovery: Option<DiscoveryOutputs>,
    services: Option<ServicesOutputs>,
    alarms: Option<AlarmsOutputs>,
}

/// A value one step writes and others read.
pub trait StepOutput: Clone + Send + Sync + 'static {
    /// Which output this is.
    const KIND: OutputKind;
    /// Its slot in [`Outputs`].
    fn slot(outputs: &mut Outputs) -> &mut Option<Self>;
}

macro_rules! step_output {
    ($ty:ty, $kind:ident, $field:ident) => {
        impl StepOutput for $ty {
            const KIND: OutputKind = OutputKind::$kind;
            fn slot(outputs: &mut Outputs) -> &mut Option<Self> {
                &mut outputs.$field
            }
        }
    };
}
step_output!(NetworkOutputs, Network, network);
step_output!(RegistryOutputs, Registry, registry);
step_output!(ClusterOutputs, Cluster, cluster);
step_output!(SecurityOutputs, Security, security);
step_output!(IngressOutputs, Ingress, ingress);
step_output!(DiscoveryOutputs, Discovery, discovery);
step_output!(ServicesOutputs, Services, services);
step_output!(AlarmsOutputs, Alarms, alarms);

/// A step's per-service entries as they are made, for writing its output in part after each
/// ([`Context::put_partial`]).
#[derive(Debug)]
pub struct Gathered<V> {
    entries: Mutex<BTreeMap<String, V>>,
}

impl<V> Default for Gathered<V> {
    fn default() -> Self {
        Gathered { entries: Mutex::default() }
    }
}

impl<V: Clone> Gathered<V> {
    /// Adds `key`'s entry and hands every entry so far to `publish`, under the lock, so that
    /// concurrent additions publish in order and a later part never lacks an earlier entry.
    pub fn add(&self, key: impl Into<String>, value: V, publish: impl FnOnce(BTreeMap<String, V>)) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.insert(key.into(), value);
        publish(entries.clone());
    }

    /// Every entry so far.
    pub fn all(&self) -> BTreeMap<String, V> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Context {
    /// A context for `config` (which should already be validated).
    pub fn new(config: Config) -> Self {
        let names = Names::new(&config);
        let region = config.aws.region.clone().unwrap_or_else(|| "us-east-1".into());
        Context {
            config: Arc::new(config),
            names,
            region,
            outputs: RwLock::default(),
            partial: RwLock::default(),
            arrivals: Mutex::default(),
            published: Notify::new(),
            progress: ProgressSlot::default(),
            declared: RwLock::default(),
        }
    }

    /// Registers what `step` declares it waits for (the runner does this for each step it runs):
    /// from then on, in debug builds, [`Context::wait`] and [`Context::wait_gone`] refuse, with
    /// [`StepError::Undeclared`], an input that step did not declare. Steps that are not
    /// registered (a step driven alone, e.g. in its unit tests) are not checked.
    pub fn declare(&self, step: &dyn Step) {
        let declared =
            Declared { needs: step.needs(), prune_reads: step.prune_reads(), destroy_waits: step.destroy_waits() };
        self.declared.write().unwrap_or_else(|e| e.into_inner()).insert(step.name().to_owned(), declared);
    }

    /// `Err` when `reader` is registered and declares neither `kind` in its needs nor in its
    /// prune reads (debug builds only).
    fn check_output(&self, reader: &str, kind: OutputKind) -> Result<(), StepError> {
        let declared = self.declared.read().unwrap_or_else(|e| e.into_inner());
        match declared.get(reader) {
            Some(d) if cfg!(debug_assertions) && !d.needs.contains(&kind) && !d.prune_reads.contains(&kind) => {
                Err(StepError::Undeclared {
                    step: reader.into(),
                    input: kind.to_string(),
                    declare: "needs() if it orders the step, else prune_reads()",
                    declared: format!("needs {:?}, prune_reads {:?}", d.needs, d.prune_reads),
                })
            }
            _ => Ok(()),
        }
    }

    /// `Err` when `reader` is registered and does not declare `gone` in its destroy waits (debug
    /// builds only).
    fn check_gone(&self, reader: &str, gone: Gone) -> Result<(), StepError> {
        let declared = self.declared.read().unwrap_or_else(|e| e.into_inner());
        match declared.get(reader) {
            Some(d) if cfg!(debug_assertions) && !d.destroy_waits.contains(&gone) => Err(StepError::Undeclared {
                step: reader.into(),
                input: gone.to_string(),
                declare: "destroy_waits()",
                declared: format!("destroy_waits {:?}", d.destroy_waits),
            }),
            _ => Ok(()),
        }
    }

    /// Declares milestones that steps of this destroy will give (the runner calls this before
    /// starting them): [`Context::wait_gone`] waits for those and returns at once for any other.
    pub fn expect_gone(&self, gones: impl IntoIterator<Item = Gone>) {
        self.arrivals().gone_coming.extend(gones);
    }

    /// Gives a milestone: what it names is deleted; the steps [waiting](Context::wait_gone) for it
    /// go on.
    pub fn give(&self, gone: Gone) {
        self.arrivals().gone_coming.remove(&gone);
        self.published.notify_waiters();
    }

    /// The giver of `gones` has ended: when it succeeded everything they name is gone; when it
    /// failed (`failure` says why) the steps still waiting for them fail naming the reason.
    pub fn close_gone(&self, gones: &[Gone], failure: Option<String>) {
        let mut arrivals = self.arrivals();
        for &gone in gones {
            if arrivals.gone_coming.remove(&gone) {
                if let Some(error) = &failure {
                    arrivals.gone_missing.insert(gone, format!("the step deleting it failed ({error})"));
                }
            }
        }
        drop(arrivals);
        self.published.notify_waiters();
    }

    /// Waits until `gone` is given (at once when no step of this run gives it: nothing of it is
    /// left to wait for); `reader` is the waiting step, named in the error when its giver failed.
    pub async fn wait_gone(&self, reader: &str, gone: Gone) -> Result<(), StepError> {
        self.check_gone(reader, gone)?;
        loop {
            let published = self.published.notified();
            tokio::pin!(published);
            published.as_mut().enable();
            {
                let arrivals = self.arrivals();
                if let Some(why) = arrivals.gone_missing.get(&gone) {
                    return Err(StepError::MissingOutput {
                        step: reader.into(),
                        output: gone.to_string(),
                        why: why.clone(),
                    });
                }
                if !arrivals.gone_coming.contains(&gone) {
                    return Ok(());
                }
            }
            published.await;
        }
    }

    /// Installs a sink for the [`ProgressEvent`]s steps report (see [`crate::progress`]).
    pub fn with_progress(mut self, sink: Arc<dyn ProgressSink>) -> Self {
        self.progress = ProgressSlot(Some(sink));
        self
    }

    /// Reports a progress event to the installed sink, if any (steps MAY call this; it is a no-op
    /// without a sink).
    pub fn progress(&self, event: ProgressEvent<'_>) {
        if let Some(sink) = &self.progress.0 {
            sink.event(event);
        }
    }

    /// Sets the region the clients resolved (from the AWS chain when the config names none).
    pub fn with_region(mut self, region: impl Into<String>) -> Self {
        self.region = region.into();
        self
    }

    /// Reads an output another step wrote; `reader` is the reading step, named in the error.
    pub fn get<T: StepOutput>(&self, reader: &str) -> Result<T, StepError> {
        let mut outputs = self.outputs.write().unwrap_or_else(|e| e.into_inner());
        T::slot(&mut outputs).clone().ok_or_else(|| StepError::MissingOutput {
            step: reader.into(),
            output: T::KIND.to_string(),
            why: "it was not written (did the step producing it run first?)".into(),
        })
    }

    /// Reads an output if it was written.
    pub fn try_get<T: StepOutput>(&self) -> Option<T> {
        let mut outputs = self.outputs.write().unwrap_or_else(|e| e.into_inner());
        T::slot(&mut outputs).clone()
    }

    /// Writes this step's output (it may do so before it ends, as soon as the output is known),
    /// waking the steps [waiting](Context::wait) for it.
    pub fn put<T: StepOutput>(&self, value: T) {
        let mut outputs = self.outputs.write().unwrap_or_else(|e| e.into_inner());
        *T::slot(&mut outputs) = Some(value);
        drop(outputs);
        self.published.notify_waiters();
    }

    /// Writes this step's output in part: what is known so far, e.g. the task roles made so far
    /// while the others are still being made. [`Context::wait`] ignores it (it waits for the whole
    /// output); [`Context::wait_for`] returns it once it holds what the reader asks for. A
    /// producer writes the whole output with [`Context::put`] in the end, as always.
    pub fn put_partial<T: StepOutput>(&self, value: T) {
        let mut partial = self.partial.write().unwrap_or_else(|e| e.into_inner());
        *T::slot(&mut partial) = Some(value);
        drop(partial);
        self.published.notify_waiters();
    }

    /// Reads an input as soon as it holds what `ready` asks for (an entry for one service, say),
    /// whole or in part ([`Context::put_partial`]); else as [`Context::wait`]: the whole output
    /// once written, whatever `ready` says, or the error of an output that will never come.
    /// This lets one service's resources go ahead while another's inputs are still being made.
    pub async fn wait_for<T: StepOutput>(&self, reader: &str, ready: impl Fn(&T) -> bool) -> Result<T, StepError> {
        self.check_output(reader, T::KIND)?;
        loop {
            let published = self.published.notified();
            tokio::pin!(published);
            published.as_mut().enable();
            if let Some(value) = self.try_get::<T>() {
                return Ok(value);
            }
            let partial = {
                let mut partial = self.partial.write().unwrap_or_else(|e| e.into_inner());
                T::slot(&mut partial).clone()
            };
            if let Some(value) = partial.filter(|v| ready(v)) {
                return Ok(value);
            }
            {
                let arrivals = self.arrivals();
                if let Some(why) = arrivals.missing.get(&T::KIND) {
                    return Err(StepError::MissingOutput {
                        step: reader.into(),
                        output: T::KIND.to_string(),
                        why: why.clone(),
                    });
                }
                if !arrivals.coming.contains(&T::KIND) {
                    return self.get(reader);
                }
            }
            published.await;
        }
    }

    /// Declares outputs that steps of this run will write (the runner calls this before starting
    /// them): [`Context::wait`] waits for those and fails at once for any other missing output.
    pub fn expect(&self, kinds: impl IntoIterator<Item = OutputKind>) {
        self.arrivals().coming.extend(kinds);
    }

    /// The producer of `kind` has ended (`failure` says why, when it failed). If it never wrote
    /// the output, every step waiting for it gets an error naming the reason instead of waiting on.
    pub fn close(&self, kind: OutputKind, failure: Option<String>) {
        let mut arrivals = self.arrivals();
        arrivals.coming.remove(&kind);
        if self.has(kind) {
            return;
        }
        let why = match failure {
            Some(error) => format!("the step producing it failed ({error})"),
            None => "the step producing it ended without writing it".into(),
        };
        arrivals.missing.insert(kind, why);
        drop(arrivals);
        self.published.notify_waiters();
    }

    /// Reads an input, waiting while a running step is still to write it; `reader` is the
    /// reading step, named in the error when the input will never come. A registered reader
    /// ([`Context::declare`]) that declares `T` neither in its needs nor its prune reads is
    /// refused in debug builds.
    pub async fn wait<T: StepOutput>(&self, reader: &str) -> Result<T, StepError> {
        // No part will do: only the whole output.
        self.wait_for(reader, |_| false).await
    }

    fn has(&self, kind: OutputKind) -> bool {
        let outputs = self.outputs.read().unwrap_or_else(|e| e.into_inner());
        match kind {
            OutputKind::Network => outputs.network.is_some(),
            OutputKind::Registry => outputs.registry.is_some(),
            OutputKind::Cluster => outputs.cluster.is_some(),
            OutputKind::Security => outputs.security.is_some(),
            OutputKind::Ingress => outputs.ingress.is_some(),
            OutputKind::Discovery => outputs.discovery.is_some(),
            OutputKind::Services => outputs.services.is_some(),
            OutputKind::Alarms => outputs.alarms.is_some(),
        }
    }

    fn arrivals(&self) -> std::sync::MutexGuard<'_, Arrivals> {
        self.arrivals.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn network() -> NetworkOutputs {
        NetworkOutputs { vpc_id: "vpc-1".into(), public_subnets: vec![], private_subnets: vec![] }
    }

    #[tokio::test]
    async fn wait_returns_an_output_written_later_by_a_running_step() {
        let ctx = Arc::new(Context::new(Config::default()));
        ctx.expect([OutputKind::Network]);
        let reader = tokio::spawn({
            let ctx = ctx.clone();
            async move { ctx.wait::<NetworkOutputs>("security").await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!reader.is_finished(), "the reader waits while the producer runs");
        ctx.put(network());
        let got = tokio::time::timeout(Duration::from_secs(5), reader).await.unwrap().unwrap().unwrap();
        assert_eq!(got.vpc_id, "vpc-1");
    }

    #[tokio::test]
    async fn wait_for_takes_a_partial_output_that_holds_what_it_asks_and_wait_does_not() {
        let ctx = Arc::new(Context::new(Config::default()));
        ctx.expect([OutputKind::Services]);
        let registry = |names: &[&str]| ServicesOutputs {
            service_arns: names.iter().map(|n| (n.to_string(), format!("arn/{n}"))).collect(),
        };
        let wants = |name: &'static str| {
            let ctx = ctx.clone();
            tokio::spawn(async move {
                ctx.wait_for::<ServicesOutputs>("alarms", |r| r.service_arns.contains_key(name)).await
            })
        };
        let (api, worker) = (wants("api"), wants("worker"));
        let whole = tokio::spawn({
            let ctx = ctx.clone();
            async move { ctx.wait::<ServicesOutputs>("alarms").await }
        });
        ctx.put_partial(registry(&["api"]));
        let got = tokio::time::timeout(Duration::from_secs(5), api).await.unwrap().unwrap().unwrap();
        assert_eq!(got.service_arns.len(), 1, "the part holding `api` is enough for its reader");
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!worker.is_finished() && !whole.is_finished(), "the others wait on");
        ctx.put(registry(&["api", "worker"]));
        let got = tokio::time::timeout(Duration::from_secs(5), worker).await.unwrap().unwrap().unwrap();
        assert_eq!(got.service_arns.len(), 2);
        let got = tokio::time::timeout(Duration::from_secs(5), whole).await.unwrap().unwrap().unwrap();
        assert_eq!(got.service_arns.len(), 2);
        // A whole output that still lacks the entry is returned: the reader names what is missing.
        let ctx = Context::new(Config::default());
        ctx.put(registry(&[]));
        let got = ctx.wait_for::<ServicesOutputs>("alarms", |r| r.service_arns.contains_key("x")).await.unwrap();
        assert!(got.service_arns.is_empty());
    }

    #[tokio::test]
    async fn wait_fails_when_the_producer_fails_or_nobody_produces_it() {
        let ctx = Arc::new(Context::new(Config::default()));
        ctx.expect([OutputKind::Network]);
        let reader = tokio::spawn({
            let ctx = ctx.clone();
            async move { ctx.wait::<NetworkOutputs>("security").await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        ctx.close(OutputKind::Network, Some("CreateVpc on network/vpc failed".into()));
        let err = tokio::time::timeout(Duration::from_secs(5), reader).await.unwrap().unwrap().unwrap_err();
        let err = err.to_string();
        assert!(err.contains("security") && err.contains("network") && err.contains("CreateVpc"), "{err}");

        let err = ctx.wait::<ClusterOutputs>("services").await.unwrap_err().to_string();
        assert!(err.contains("services") && err.contains("cluster"), "not expected: fails at once: {err}");
    }

    #[tokio::test]
    async fn closing_after_the_output_was_written_changes_nothing() {
        let ctx = Context::new(Config::default());
        ctx.expect([OutputKind::Network]);
        ctx.put(network());
        ctx.close(OutputKind::Network, Some("a later part failed".into()));
        assert_eq!(ctx.wait::<NetworkOutputs>("security").await.unwrap().vpc_id, "vpc-1");
    }

    #[test]
    fn missing_output_names_reader_and_output() {
        let ctx = Context::new(Config::default());
        let err = ctx.get::<NetworkOutputs>("security").unwrap_err().to_string();
        assert!(err.contains("security") && err.contains("network"), "{err}");
        ctx.put(ClusterOutputs { name: "c".into(), arn: "a".into() });
        assert_eq!(ctx.get::<ClusterOutputs>("services").unwrap().name, "c");
    }

    #[tokio::test]
    async fn wait_gone_waits_for_a_coming_milestone_and_not_for_one_nobody_gives() {
        let ctx = Arc::new(Context::new(Config::default()));
        ctx.wait_gone("network", Gone::Namespace).await.expect("no giver in this run: nothing to wait for");
        ctx.expect_gone([Gone::SecurityGroups]);
        let waiter = tokio::spawn({
            let ctx = ctx.clone();
            async move { ctx.wait_gone("network", Gone::SecurityGroups).await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished(), "waits while the giver runs");
        ctx.give(Gone::SecurityGroups);
        tokio::time::timeout(Duration::from_secs(5), waiter).await.unwrap().unwrap().unwrap();

        ctx.expect_gone([Gone::EcsServices]);
        ctx.close_gone(&[Gone::EcsServices], Some("DeleteService failed".into()));
        let err = ctx.wait_gone("cluster", Gone::EcsServices).await.unwrap_err().to_string();
        assert!(err.contains("cluster") && err.contains("ecs-services gone") && err.contains("DeleteService"), "{err}");
    }
}
