//! The [`Context`] a run shares between steps: the validated config, the names derived from it,
//! and the outputs steps write for each other.
//!
//! Outputs are the edges of the run's dependency graph, at resource level rather than step level:
//! a step reads an input with [`Context::wait`] right where it needs it, and a producer may write
//! its output as soon as the resources it describes exist (the network step writes the VPC and
//! subnets before its NAT gateways are up). So the runner can start every step at once and each
//! call still starts as soon as its inputs are known.
//!
//! The runner hands each step its own handle, [`Context::for_step`], which carries the step's
//! [`Contract`]: every read names its step by construction, and a read, wait, write or milestone
//! the contract does not declare is refused with [`StepError::Undeclared`] — in every build. A
//! handle made with [`Context::new`] belongs to no step (a tool reading what a run wrote, or a
//! step driven alone in its unit tests): its reads are not checked.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, RwLock};

use tokio::sync::Notify;

use crate::config::Config;
use crate::error::StepError;
use crate::naming::Names;
use crate::outputs::*;
use crate::progress::{ProgressEvent, ProgressSink};
use crate::step::{Contract, Gone, OutputKind, Pruned};

/// Everything a step reads besides AWS itself: the run's shared state, seen through the handle of
/// one step ([`Context::for_step`]) or of none ([`Context::new`]).
#[derive(Debug)]
pub struct Context {
    /// The validated configuration.
    pub config: Arc<Config>,
    /// Names and tags of this environment.
    pub names: Names,
    /// The AWS region the run talks to (for ARNs the steps build, e.g. log group ARNs).
    pub region: String,
    shared: Arc<Shared>,
    /// The step this handle belongs to; `None` for a handle of no step (unchecked).
    step: Option<Contract>,
}

/// What every handle of one run shares.
#[derive(Debug, Default)]
struct Shared {
    outputs: RwLock<Outputs>,
    /// Outputs written in part so far ([`Context::put_partial`]), read by [`Context::wait_for`].
    partial: RwLock<Outputs>,
    arrivals: Mutex<Arrivals>,
    published: Notify,
    progress: RwLock<ProgressSlot>,
    /// Writes and milestones a step's handle refused (it does not declare them), by step: the
    /// runner fails the step with it ([`Context::take_refused`]).
    refused: Mutex<BTreeMap<&'static str, StepError>>,
}

/// A milestone of either kind, as the arrivals track them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Signal {
    Gone(Gone),
    Pruned(Pruned),
}

impl std::fmt::Display for Signal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Signal::Gone(g) => g.fmt(f),
            Signal::Pruned(p) => p.fmt(f),
        }
    }
}

/// Which outputs are still to come in this run, and which will never come.
#[derive(Debug, Default)]
struct Arrivals {
    /// Outputs a running step will write: [`Context::wait`] waits for these.
    coming: BTreeSet<OutputKind>,
    /// Outputs whose producer ended without writing them, and why.
    missing: BTreeMap<OutputKind, String>,
    /// Milestones a running step will give: [`Context::wait_gone`] and [`Context::wait_pruned`]
    /// wait for these.
    signals_coming: BTreeSet<Signal>,
    /// Milestones whose giver failed, and why.
    signals_missing: BTreeMap<Signal, String>,
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

macro_rules! step_outputs {
    ($($ty:ty => $kind:ident, $field:ident;)*) => {
        $(impl StepOutput for $ty {
            const KIND: OutputKind = OutputKind::$kind;
            fn slot(outputs: &mut Outputs) -> &mut Option<Self> {
                &mut outputs.$field
            }
        })*

        impl Outputs {
            fn has(&self, kind: OutputKind) -> bool {
                match kind {
                    $(OutputKind::$kind => self.$field.is_some(),)*
                }
            }
        }
    };
}
step_outputs! {
    NetworkOutputs => Network, network;
    RegistryOutputs => Registry, registry;
    ClusterOutputs => Cluster, cluster;
    SecurityOutputs => Security, security;
    IngressOutputs => Ingress, ingress;
    DiscoveryOutputs => Discovery, discovery;
    ServicesOutputs => Services, services;
    AlarmsOutputs => Alarms, alarms;
}

/// The output a contract writes, as a list (for [`Context::check`]).
fn produced(contract: &Contract) -> &[OutputKind] {
    std::slice::from_ref(&contract.produces)
}

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
    /// A context for `config` (which should already be validated): the handle of no step.
    pub fn new(config: Config) -> Self {
        let names = Names::new(&config);
        let region = config.aws.region.clone().unwrap_or_else(|| "us-east-1".into());
        Context { config: Arc::new(config), names, region, shared: Arc::default(), step: None }
    }

    /// The handle of the step whose contract is `contract` over the same run (the runner makes
    /// one per step): its reads, waits, writes and milestones are checked against `contract`.
    pub fn for_step(&self, contract: Contract) -> Context {
        Context {
            config: self.config.clone(),
            names: self.names.clone(),
            region: self.region.clone(),
            shared: self.shared.clone(),
            step: Some(contract),
        }
    }

    /// The contract of the step this handle belongs to (`None`: no step).
    pub fn contract(&self) -> Option<&Contract> {
        self.step.as_ref()
    }

    /// The name errors give the reader: its step, or `(no step)`.
    fn reader(&self) -> &'static str {
        self.step.map_or("(no step)", |c| c.name)
    }

    /// `Err` when this is a step's handle and its contract does not declare `input` where
    /// `declared` (the contract's list, named `declare`) says.
    fn check<T: PartialEq + std::fmt::Debug + std::fmt::Display>(
        &self,
        input: T,
        declare: &'static str,
        declared: fn(&Contract) -> &[T],
    ) -> Result<(), StepError> {
        match &self.step {
            Some(contract) if !declared(contract).contains(&input) => Err(StepError::Undeclared {
                step: contract.name.into(),
                input: input.to_string(),
                declare,
                declared: format!("{declare} {:?}", declared(contract)),
            }),
            _ => Ok(()),
        }
    }

    /// Whether this handle may write or give what `check` says; when not, the refusal is kept
    /// for the runner, which fails the step with it (a write has no error to return).
    fn may_write(&self, check: Result<(), StepError>) -> bool {
        match (check, &self.step) {
            (Ok(()), _) => true,
            (Err(e), Some(contract)) => {
                tracing::error!(step = contract.name, error = %e, "refused");
                self.shared.refused.lock().unwrap_or_else(|e| e.into_inner()).entry(contract.name).or_insert(e);
                false
            }
            (Err(_), None) => true,
        }
    }

    /// The first write or milestone this step's handle refused, if any (the runner asks once the
    /// step has ended, and fails it with this error).
    pub fn take_refused(&self) -> Option<StepError> {
        let step = self.step.as_ref()?;
        self.shared.refused.lock().unwrap_or_else(|e| e.into_inner()).remove(step.name)
    }

    /// Declares milestones that steps of this run will give (the runner calls this before
    /// starting them): [`Context::wait_gone`] waits for those and returns at once for any other.
    pub fn expect_gone(&self, gones: impl IntoIterator<Item = Gone>) {
        self.arrivals().signals_coming.extend(gones.into_iter().map(Signal::Gone));
    }

    /// Declares [`Pruned`] milestones that steps of this apply will give (the runner calls this
    /// in apply only): [`Context::wait_pruned`] waits for those and returns at once for any other.
    pub fn expect_pruned(&self, pruned: impl IntoIterator<Item = Pruned>) {
        self.arrivals().signals_coming.extend(pruned.into_iter().map(Signal::Pruned));
    }

    /// Gives a milestone: what it names is deleted; the steps [waiting](Context::wait_gone) for it
    /// go on. A step's handle gives only what its contract's `gives` declares.
    pub fn give(&self, gone: Gone) {
        if self.may_write(self.check(gone, "Contract::gives", |c| c.gives)) {
            self.signal(Signal::Gone(gone));
        }
    }

    /// Gives a [`Pruned`] milestone: this step's prune is done; the steps
    /// [waiting](Context::wait_pruned) for it go on. A step's handle gives only what its
    /// contract's `prunes` declares.
    pub fn give_pruned(&self, pruned: Pruned) {
        if self.may_write(self.check(pruned, "Contract::prunes", |c| c.prunes)) {
            self.signal(Signal::Pruned(pruned));
        }
    }

    /// Whether `pruned` was given (or is not expected in this run).
    pub fn is_pruned(&self, pruned: Pruned) -> bool {
        !self.arrivals().signals_coming.contains(&Signal::Pruned(pruned))
    }

    fn signal(&self, signal: Signal) {
        self.arrivals().signals_coming.remove(&signal);
        self.shared.published.notify_waiters();
    }

    /// The giver of `gones` has ended: when it succeeded everything they name is gone; when it
    /// failed (`failure` says why) the steps still waiting for them fail naming the reason.
    pub fn close_gone(&self, gones: &[Gone], failure: Option<String>) {
        self.close_signals(gones.iter().map(|&g| Signal::Gone(g)), failure);
    }

    /// The giver of `pruned` has ended: as [`Context::close_gone`].
    pub fn close_pruned(&self, pruned: &[Pruned], failure: Option<String>) {
        self.close_signals(pruned.iter().map(|&p| Signal::Pruned(p)), failure);
    }

    fn close_signals(&self, signals: impl Iterator<Item = Signal>, failure: Option<String>) {
        let mut arrivals = self.arrivals();
        for signal in signals {
            if arrivals.signals_coming.remove(&signal) {
                if let Some(error) = &failure {
                    arrivals.signals_missing.insert(signal, format!("the step giving it failed ({error})"));
                }
            }
        }
        drop(arrivals);
        self.shared.published.notify_waiters();
    }

    /// Waits until `gone` is given (at once when no step of this run gives it: nothing of it is
    /// left to wait for). A step's handle waits only for what its contract's `destroy_waits`
    /// declares.
    pub async fn wait_gone(&self, gone: Gone) -> Result<(), StepError> {
        self.check(gone, "Contract::destroy_waits", |c| c.destroy_waits)?;
        self.wait_signal(Signal::Gone(gone)).await
    }

    /// Waits until `pruned` is given (at once when no step of this run gives it, as in plan). A
    /// step's handle waits only for what its contract's `prune_waits` declares.
    pub async fn wait_pruned(&self, pruned: Pruned) -> Result<(), StepError> {
        self.check(pruned, "Contract::prune_waits", |c| c.prune_waits)?;
        self.wait_signal(Signal::Pruned(pruned)).await
    }

    async fn wait_signal(&self, signal: Signal) -> Result<(), StepError> {
        loop {
            let published = self.shared.published.notified();
            tokio::pin!(published);
            published.as_mut().enable();
            {
                let arrivals = self.arrivals();
                if let Some(why) = arrivals.signals_missing.get(&signal) {
                    return Err(StepError::MissingOutput {
                        step: self.reader().into(),
                        output: signal.to_string(),
                        why: why.clone(),
                    });
                }
                if !arrivals.signals_coming.contains(&signal) {
                    return Ok(());
                }
            }
            published.await;
        }
    }

    /// Installs a sink for the [`ProgressEvent`]s steps report (see [`crate::progress`]).
    pub fn with_progress(self, sink: Arc<dyn ProgressSink>) -> Self {
        *self.shared.progress.write().unwrap_or_else(|e| e.into_inner()) = ProgressSlot(Some(sink));
        self
    }

    /// Reports a progress event to the installed sink, if any (steps MAY call this; it is a no-op
    /// without a sink).
    pub fn progress(&self, event: ProgressEvent<'_>) {
        let sink = self.shared.progress.read().unwrap_or_else(|e| e.into_inner()).0.clone();
        if let Some(sink) = sink {
            sink.event(event);
        }
    }

    /// Sets the region the clients resolved (from the AWS chain when the config names none).
    pub fn with_region(mut self, region: impl Into<String>) -> Self {
        self.region = region.into();
        self
    }

    /// Reads an output written so far, without waiting (for tests and tools; steps read with
    /// [`Context::wait`]); `reader` names the reader in the error of a handle of no step. A
    /// step's handle reads only what its contract's `reads` declares.
    pub fn get<T: StepOutput>(&self, reader: &str) -> Result<T, StepError> {
        self.check(T::KIND, "Contract::reads", |c| c.reads)?;
        let reader = self.step.map_or(reader, |c| c.name);
        self.written::<T>().ok_or_else(|| StepError::MissingOutput {
            step: reader.into(),
            output: T::KIND.to_string(),
            why: "it was not written (did the step producing it run first?)".into(),
        })
    }

    /// Reads an output if it was written. A step's handle reads only what its contract's `reads`
    /// declares: an undeclared read returns `None` and fails the step.
    pub fn try_get<T: StepOutput>(&self) -> Option<T> {
        if !self.may_write(self.check(T::KIND, "Contract::reads", |c| c.reads)) {
            return None;
        }
        self.written()
    }

    fn written<T: StepOutput>(&self) -> Option<T> {
        T::slot(&mut self.shared.outputs.write().unwrap_or_else(|e| e.into_inner())).clone()
    }

    /// Writes this step's output (it may do so before it ends, as soon as the output is known),
    /// waking the steps [waiting](Context::wait) for it. A step's handle writes only the output
    /// its contract `produces`: another is not written, and the step fails.
    pub fn put<T: StepOutput>(&self, value: T) {
        self.store(&self.shared.outputs, value);
    }

    /// Writes this step's output in part: what is known so far, e.g. the task roles made so far
    /// while the others are still being made. [`Context::wait`] ignores it (it waits for the whole
    /// output); [`Context::wait_for`] returns it once it holds what the reader asks for. A
    /// producer writes the whole output with [`Context::put`] in the end, as always. Checked as
    /// [`Context::put`].
    pub fn put_partial<T: StepOutput>(&self, value: T) {
        self.store(&self.shared.partial, value);
    }

    /// Writes `value` into `slots` (whole or partial outputs) when the contract allows it, waking
    /// the waiters.
    fn store<T: StepOutput>(&self, slots: &RwLock<Outputs>, value: T) {
        if self.may_write(self.check(T::KIND, "Contract::produces", produced)) {
            *T::slot(&mut slots.write().unwrap_or_else(|e| e.into_inner())) = Some(value);
            self.shared.published.notify_waiters();
        }
    }

    /// Reads an input as soon as it holds what `ready` asks for (an entry for one service, say),
    /// whole or in part ([`Context::put_partial`]); else as [`Context::wait`]: the whole output
    /// once written, whatever `ready` says, or the error of an output that will never come.
    /// This lets one service's resources go ahead while another's inputs are still being made.
    /// A step's handle reads only what its contract's `reads` declares.
    pub async fn wait_for<T: StepOutput>(&self, ready: impl Fn(&T) -> bool) -> Result<T, StepError> {
        self.check(T::KIND, "Contract::reads", |c| c.reads)?;
        loop {
            let published = self.shared.published.notified();
            tokio::pin!(published);
            published.as_mut().enable();
            if let Some(value) = self.written::<T>() {
                return Ok(value);
            }
            let partial = T::slot(&mut self.shared.partial.write().unwrap_or_else(|e| e.into_inner())).clone();
            if let Some(value) = partial.filter(|v| ready(v)) {
                return Ok(value);
            }
            {
                let arrivals = self.arrivals();
                if let Some(why) = arrivals.missing.get(&T::KIND) {
                    return Err(StepError::MissingOutput {
                        step: self.reader().into(),
                        output: T::KIND.to_string(),
                        why: why.clone(),
                    });
                }
                if !arrivals.coming.contains(&T::KIND) {
                    return self.get(self.reader());
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
        if self.shared.outputs.read().unwrap_or_else(|e| e.into_inner()).has(kind) {
            return;
        }
        let why = match failure {
            Some(error) => format!("the step producing it failed ({error})"),
            None => "the step producing it ended without writing it".into(),
        };
        arrivals.missing.insert(kind, why);
        drop(arrivals);
        self.shared.published.notify_waiters();
    }

    /// Reads an input, waiting while a running step is still to write it; the error names this
    /// handle's step when the input will never come. A step's handle reads only what its
    /// contract's `reads` declares.
    pub async fn wait<T: StepOutput>(&self) -> Result<T, StepError> {
        // No part will do: only the whole output.
        self.wait_for(|_| false).await
    }

    fn arrivals(&self) -> std::sync::MutexGuard<'_, Arrivals> {
        self.shared.arrivals.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const SECURITY: Contract = Contract::new("security", OutputKind::Security)
        .reads(&[OutputKind::Network])
        .prune_waits(&[Pruned::Services])
        .destroy_waits(&[Gone::EcsServices])
        .gives(&[Gone::SecurityGroups]);
    const ALARMS: Contract = Contract::new("alarms", OutputKind::Alarms).reads(&[OutputKind::Services]);
    const SERVICES: Contract =
        Contract::new("services", OutputKind::Services).reads(&[OutputKind::Cluster]).prunes(&[Pruned::Services]);
    const NETWORK: Contract = Contract::new("network", OutputKind::Network)
        .destroy_waits(&[Gone::SecurityGroups, Gone::Namespace])
        .gives(&[]);

    fn network() -> NetworkOutputs {
        NetworkOutputs { vpc_id: "vpc-1".into(), public_subnets: vec![], private_subnets: vec![] }
    }

    #[tokio::test]
    async fn wait_returns_an_output_written_later_by_a_running_step() {
        let ctx = Context::new(Config::default());
        ctx.expect([OutputKind::Network]);
        let security = ctx.for_step(SECURITY);
        let reader = tokio::spawn(async move { security.wait::<NetworkOutputs>().await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!reader.is_finished(), "the reader waits while the producer runs");
        ctx.for_step(NETWORK).put(network());
        let got = tokio::time::timeout(Duration::from_secs(5), reader).await.unwrap().unwrap().unwrap();
        assert_eq!(got.vpc_id, "vpc-1");
    }

    #[tokio::test]
    async fn wait_for_takes_a_partial_output_that_holds_what_it_asks_and_wait_does_not() {
        let ctx = Context::new(Config::default());
        ctx.expect([OutputKind::Services]);
        let registry = |names: &[&str]| ServicesOutputs {
            service_arns: names.iter().map(|n| (n.to_string(), format!("arn/{n}"))).collect(),
        };
        let wants = |name: &'static str| {
            let alarms = ctx.for_step(ALARMS);
            tokio::spawn(async move { alarms.wait_for::<ServicesOutputs>(|r| r.service_arns.contains_key(name)).await })
        };
        let (api, worker) = (wants("api"), wants("worker"));
        let whole = tokio::spawn({
            let alarms = ctx.for_step(ALARMS);
            async move { alarms.wait::<ServicesOutputs>().await }
        });
        let services = ctx.for_step(SERVICES);
        services.put_partial(registry(&["api"]));
        let got = tokio::time::timeout(Duration::from_secs(5), api).await.unwrap().unwrap().unwrap();
        assert_eq!(got.service_arns.len(), 1, "the part holding `api` is enough for its reader");
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!worker.is_finished() && !whole.is_finished(), "the others wait on");
        services.put(registry(&["api", "worker"]));
        let got = tokio::time::timeout(Duration::from_secs(5), worker).await.unwrap().unwrap().unwrap();
        assert_eq!(got.service_arns.len(), 2);
        let got = tokio::time::timeout(Duration::from_secs(5), whole).await.unwrap().unwrap().unwrap();
        assert_eq!(got.service_arns.len(), 2);
        assert!(services.take_refused().is_none(), "the producer's writes are declared");
        // A whole output that still lacks the entry is returned: the reader names what is missing.
        let ctx = Context::new(Config::default());
        ctx.put(registry(&[]));
        let got = ctx.for_step(ALARMS).wait_for::<ServicesOutputs>(|r| r.service_arns.contains_key("x")).await.unwrap();
        assert!(got.service_arns.is_empty());
    }

    #[tokio::test]
    async fn wait_fails_when_the_producer_fails_or_nobody_produces_it() {
        let ctx = Context::new(Config::default());
        ctx.expect([OutputKind::Network]);
        let security = ctx.for_step(SECURITY);
        let reader = tokio::spawn(async move { security.wait::<NetworkOutputs>().await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        ctx.close(OutputKind::Network, Some("CreateVpc on network/vpc failed".into()));
        let err = tokio::time::timeout(Duration::from_secs(5), reader).await.unwrap().unwrap().unwrap_err();
        let err = err.to_string();
        assert!(err.contains("security") && err.contains("network") && err.contains("CreateVpc"), "{err}");

        let err = ctx.for_step(SERVICES).wait::<ClusterOutputs>().await.unwrap_err().to_string();
        assert!(err.contains("services") && err.contains("cluster"), "not expected: fails at once: {err}");
    }

    #[tokio::test]
    async fn closing_after_the_output_was_written_changes_nothing() {
        let ctx = Context::new(Config::default());
        ctx.expect([OutputKind::Network]);
        ctx.put(network());
        ctx.close(OutputKind::Network, Some("a later part failed".into()));
        assert_eq!(ctx.for_step(SECURITY).wait::<NetworkOutputs>().await.unwrap().vpc_id, "vpc-1");
    }

    #[test]
    fn missing_output_names_reader_and_output() {
        let ctx = Context::new(Config::default());
        let err = ctx.get::<NetworkOutputs>("security").unwrap_err().to_string();
        assert!(err.contains("security") && err.contains("network"), "{err}");
        ctx.put(ClusterOutputs { name: "c".into(), arn: "a".into() });
        assert_eq!(ctx.get::<ClusterOutputs>("services").unwrap().name, "c");
        let err = ctx.for_step(SECURITY).get::<NetworkOutputs>("a free string").unwrap_err().to_string();
        assert!(err.contains("`security`") && !err.contains("free string"), "a step's handle names its step: {err}");
    }

    #[tokio::test]
    async fn wait_gone_waits_for_a_coming_milestone_and_not_for_one_nobody_gives() {
        let ctx = Context::new(Config::default());
        let network = ctx.for_step(NETWORK);
        network.wait_gone(Gone::Namespace).await.expect("no giver in this run: nothing to wait for");
        ctx.expect_gone([Gone::SecurityGroups]);
        let waiter = tokio::spawn(async move { network.wait_gone(Gone::SecurityGroups).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished(), "waits while the giver runs");
        ctx.for_step(SECURITY).give(Gone::SecurityGroups);
        tokio::time::timeout(Duration::from_secs(5), waiter).await.unwrap().unwrap().unwrap();

        ctx.expect_gone([Gone::EcsServices]);
        ctx.close_gone(&[Gone::EcsServices], Some("DeleteService failed".into()));
        let err = ctx.for_step(SECURITY).wait_gone(Gone::EcsServices).await.unwrap_err().to_string();
        assert!(
            err.contains("security") && err.contains("ecs-services gone") && err.contains("DeleteService"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn wait_pruned_waits_for_the_giver_in_apply_and_not_at_all_when_nobody_expects_it() {
        let ctx = Context::new(Config::default());
        let security = ctx.for_step(SECURITY);
        // Plan: the runner expects no prune milestone.
        security.wait_pruned(Pruned::Services).await.expect("nothing expected: at once");
        ctx.expect_pruned([Pruned::Services]);
        assert!(!ctx.is_pruned(Pruned::Services));
        let waiter = tokio::spawn(async move { security.wait_pruned(Pruned::Services).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished(), "waits while the services step prunes");
        ctx.for_step(SERVICES).give_pruned(Pruned::Services);
        tokio::time::timeout(Duration::from_secs(5), waiter).await.unwrap().unwrap().unwrap();
        assert!(ctx.is_pruned(Pruned::Services));

        ctx.expect_pruned([Pruned::Services]);
        ctx.close_pruned(&[Pruned::Services], Some("DeleteService failed".into()));
        let err = ctx.for_step(SECURITY).wait_pruned(Pruned::Services).await.unwrap_err().to_string();
        assert!(err.contains("security") && err.contains("services pruned") && err.contains("DeleteService"), "{err}");
    }

    /// The guard is not a debug assertion: this test runs, and passes, under `--release` too.
    #[tokio::test]
    async fn a_step_handle_refuses_what_its_contract_does_not_declare_in_every_build() {
        let ctx = Context::new(Config::default());
        ctx.put(network());
        ctx.put(ClusterOutputs { name: "c".into(), arn: "a".into() });
        let alarms = ctx.for_step(ALARMS);
        let undeclared = |err: StepError, input: &str, declare: &str| match err {
            StepError::Undeclared { step, input: got, declare: where_, .. } => {
                assert_eq!((step.as_str(), got.as_str(), where_), ("alarms", input, declare));
            }
            other => panic!("not refused: {other}"),
        };
        undeclared(alarms.wait::<NetworkOutputs>().await.unwrap_err(), "network", "Contract::reads");
        undeclared(alarms.wait_for::<ClusterOutputs>(|_| true).await.unwrap_err(), "cluster", "Contract::reads");
        undeclared(alarms.get::<NetworkOutputs>("alarms").unwrap_err(), "network", "Contract::reads");
        undeclared(
            alarms.wait_gone(Gone::EcsServices).await.unwrap_err(),
            "ecs-services gone",
            "Contract::destroy_waits",
        );
        undeclared(alarms.wait_pruned(Pruned::Services).await.unwrap_err(), "services pruned", "Contract::prune_waits");
        assert!(alarms.take_refused().is_none());

        // Writes have no error to return: they are not made, and the runner fails the step.
        alarms.put_partial(network());
        undeclared(alarms.take_refused().expect("refused"), "network", "Contract::produces");
        alarms.put(ServicesOutputs { service_arns: Default::default() });
        assert!(ctx.try_get::<ServicesOutputs>().is_none(), "an undeclared write is not made");
        undeclared(alarms.take_refused().expect("refused"), "services", "Contract::produces");
        ctx.expect_gone([Gone::SecurityGroups]);
        alarms.give(Gone::SecurityGroups);
        undeclared(alarms.take_refused().expect("refused"), "security-groups gone", "Contract::gives");
        ctx.expect_pruned([Pruned::Services]);
        alarms.give_pruned(Pruned::Services);
        assert!(!ctx.is_pruned(Pruned::Services), "an undeclared milestone is not given");
        undeclared(alarms.take_refused().expect("refused"), "services pruned", "Contract::prunes");
        assert!(alarms.try_get::<NetworkOutputs>().is_none());
        undeclared(alarms.take_refused().expect("refused"), "network", "Contract::reads");
        // The message says where to declare it.
        let err = alarms.wait::<NetworkOutputs>().await.unwrap_err().to_string();
        assert!(err.contains("alarms") && err.contains("network") && err.contains("Contract::reads"), "{err}");
    }
}
