//! The [`Context`] a run shares between steps: the validated config, the names derived from it,
//! and the outputs steps write for each other.

use std::sync::{Arc, RwLock};

use crate::config::Config;
use crate::error::StepError;
use crate::naming::Names;
use crate::outputs::*;
use crate::progress::{ProgressEvent, ProgressSink};
use crate::step::OutputKind;

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
    progress: ProgressSlot,
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
            progress: ProgressSlot::default(),
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

    /// Writes this step's output.
    pub fn put<T: StepOutput>(&self, value: T) {
        let mut outputs = self.outputs.write().unwrap_or_else(|e| e.into_inner());
        *T::slot(&mut outputs) = Some(value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_output_names_reader_and_output() {
        let ctx = Context::new(Config::default());
        let err = ctx.get::<NetworkOutputs>("security").unwrap_err().to_string();
        assert!(err.contains("security") && err.contains("network"), "{err}");
        ctx.put(ClusterOutputs { name: "c".into(), arn: "a".into() });
        assert_eq!(ctx.get::<ClusterOutputs>("services").unwrap().name, "c");
    }
}
