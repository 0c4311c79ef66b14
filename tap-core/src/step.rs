//! The step contract and the change model that plans are made of.

use std::fmt;

use async_trait::async_trait;
use serde::Serialize;

use crate::context::Context;
use crate::error::StepError;

/// Whether a converge pass only looks (`plan`) or also acts (`apply`). Steps run one code path for
/// both, so what plan shows is what apply does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Read-only: list the changes.
    Plan,
    /// Make the changes.
    Apply,
}

impl Mode {
    /// Whether mutating calls may be made.
    pub fn is_apply(self) -> bool {
        self == Mode::Apply
    }
}

/// The outputs steps hand each other; each is produced by exactly one step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum OutputKind {
    /// [`crate::outputs::NetworkOutputs`]
    Network,
    /// [`crate::outputs::RegistryOutputs`]
    Registry,
    /// [`crate::outputs::ClusterOutputs`]
    Cluster,
    /// [`crate::outputs::SecurityOutputs`]
    Security,
    /// [`crate::outputs::IngressOutputs`]
    Ingress,
    /// [`crate::outputs::DiscoveryOutputs`]
    Discovery,
    /// [`crate::outputs::ServicesOutputs`]
    Services,
    /// [`crate::outputs::AlarmsOutputs`]
    Alarms,
}

impl fmt::Display for OutputKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = serde_json::to_value(self).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
        f.write_str(&s)
    }
}

/// A milestone of a step's deletions that another step's deletions wait for (destroy runs every
/// step at once; each deletion starts when what holds it is gone). Given by one step (its
/// [`Contract::gives`]) through [`Context::give`], awaited with [`Context::wait_gone`] by the steps
/// that declare it in their [`Contract::destroy_waits`]. Never a runner ordering edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Gone {
    /// The ECS services are deleted and INACTIVE: their tasks stopped, their targets and Cloud
    /// Map instances deregistered (their network interfaces may still be released for a while).
    EcsServices,
    /// The load balancer is deleted (its network interfaces may still hold the ALB's security
    /// group, public subnets and public addresses for a while).
    LoadBalancer,
    /// The security groups are deleted.
    SecurityGroups,
    /// The Cloud Map namespace is deleted (and with it its hosted zone's association with the VPC).
    Namespace,
}

impl fmt::Display for Gone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = serde_json::to_value(self).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
        write!(f, "{s} gone")
    }
}

/// A milestone of apply: one step's prune is done, so other steps may delete what it held.
/// Given by one step (its [`Contract::prunes`]) through [`Context::give_pruned`] once its prune
/// is done, awaited with [`Context::wait_pruned`] by the steps that declare it in their
/// [`Contract::prune_waits`], right before their own prune. Plan prunes nothing: the runner
/// expects no such milestone in plan, so a wait for one returns at once there. Never a runner
/// ordering edge (the giver reads the waiters' outputs: an edge would be a cycle).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Pruned {
    /// The ECS services the config no longer declares are deleted (INACTIVE): their task roles,
    /// security groups, target groups and Cloud Map services are no longer held.
    Services,
}

impl fmt::Display for Pruned {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = serde_json::to_value(self).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
        write!(f, "{s} pruned")
    }
}

/// Everything a step declares, as one value: its name, the output it writes, the inputs it reads
/// and the milestones it awaits and gives. The runner builds and checks the graph from it
/// ([`Step::contract`]); the context hands each step a handle that carries it
/// ([`Context::for_step`]) and refuses, in every build, a read, wait, write or milestone the
/// contract does not declare ([`crate::StepError::Undeclared`]).
///
/// What each part does, exactly:
/// - `reads`: the outputs the step reads with [`Context::wait`] / [`Context::wait_for`]. Each is
///   produced by exactly one step, and the reads of all steps form no cycle (the runner checks
///   both before running), so every read ends. The runner starts every step at once: a read orders
///   the work after it, not the step's start (the graph is one of resources, not of steps).
/// - `prune_waits`: [`Pruned`] milestones awaited in apply only, right before the step's prune.
/// - `destroy_waits`: [`Gone`] milestones awaited in destroy before the deletions they hold.
/// - `gives` / `prunes`: the milestones the step gives in destroy / in apply after its prune.
///
/// ```
/// use tap_core::step::{Contract, Gone, OutputKind, Pruned};
/// const SECURITY: Contract = Contract::new("security", OutputKind::Security)
///     .reads(&[OutputKind::Network])
///     .prune_waits(&[Pruned::Services])
///     .destroy_waits(&[Gone::EcsServices, Gone::LoadBalancer])
///     .gives(&[Gone::SecurityGroups]);
/// assert!(SECURITY.may_read(OutputKind::Network) && !SECURITY.may_read(OutputKind::Ingress));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Contract {
    /// Short name, e.g. `network`.
    pub name: &'static str,
    /// The output this step writes (whole with [`Context::put`], in part with
    /// [`Context::put_partial`]).
    pub produces: OutputKind,
    /// Outputs of other steps it reads.
    pub reads: &'static [OutputKind],
    /// Milestones of apply it awaits before its prune.
    pub prune_waits: &'static [Pruned],
    /// Milestones of other steps' deletions its destroy awaits.
    pub destroy_waits: &'static [Gone],
    /// Milestones its destroy gives (each at the latest when its destroy ends).
    pub gives: &'static [Gone],
    /// Milestones its apply gives once its prune is done (at the latest when its apply ends).
    pub prunes: &'static [Pruned],
}

impl Contract {
    /// A step named `name` that writes `produces` and declares nothing else yet.
    pub const fn new(name: &'static str, produces: OutputKind) -> Self {
        Contract { name, produces, reads: &[], prune_waits: &[], destroy_waits: &[], gives: &[], prunes: &[] }
    }
    /// With the outputs it reads.
    pub const fn reads(self, reads: &'static [OutputKind]) -> Self {
        Contract { reads, ..self }
    }
    /// With the milestones it awaits before its prune.
    pub const fn prune_waits(self, prune_waits: &'static [Pruned]) -> Self {
        Contract { prune_waits, ..self }
    }
    /// With the milestones its destroy awaits.
    pub const fn destroy_waits(self, destroy_waits: &'static [Gone]) -> Self {
        Contract { destroy_waits, ..self }
    }
    /// With the milestones its destroy gives.
    pub const fn gives(self, gives: &'static [Gone]) -> Self {
        Contract { gives, ..self }
    }
    /// With the milestones its apply gives after its prune.
    pub const fn prunes(self, prunes: &'static [Pruned]) -> Self {
        Contract { prunes, ..self }
    }
    /// Whether it may read `kind` (one of its `reads`).
    pub fn may_read(&self, kind: OutputKind) -> bool {
        self.reads.contains(&kind)
    }
}

/// One concern of the platform (network, registry, …): converges its resources to the config.
///
/// Its [`Contract`] is everything it declares; the runner passes each method a context handle
/// that carries it ([`Context::for_step`]), so each read names its step by construction.
#[async_trait]
pub trait Step: Send + Sync {
    /// What this step produces, reads, awaits and gives (see [`Contract`]).
    fn contract(&self) -> Contract;
    /// Read-only: compares AWS with the desired state and lists the changes; writes its outputs
    /// (with [`crate::outputs::PENDING`] for what does not exist yet) so later steps can plan.
    async fn plan(&self, ctx: &Context) -> Result<Vec<Change>, StepError>;
    /// Converges AWS to the desired state, writes its outputs and returns the changes it made.
    async fn apply(&self, ctx: &Context) -> Result<Vec<Change>, StepError>;
    /// Removes everything this step owns (found by name and tags, without reading other steps'
    /// outputs, waiting only for the [`Gone`] milestones it declares); succeeds on a partial or
    /// already-empty environment.
    async fn destroy(&self, ctx: &Context) -> Result<Vec<Change>, StepError>;
}

/// What happens to one resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// It does not exist and will be created.
    Create,
    /// It exists and some attributes differ.
    Update,
    /// It exists and will be removed.
    Delete,
    /// The config no longer declares it, but it holds data (an ECR repository with images, a
    /// secret): left in place unless `deploy --prune-data` is given.
    Keep,
    /// Deploy refuses to go on because of it (e.g. a running service would move to an image its
    /// repository does not have); [`Change::reason`] says why and how to proceed.
    Refuse,
    /// A resource of this name exists and is not this environment's (another environment's tags,
    /// or no tap tags at all): never adopted, updated or deleted; deploy refuses before any write.
    /// [`Change::reason`] names its owner.
    Conflict,
}

impl Action {
    /// `+`, `~` or `-`, as in a terraform plan; `=` for a resource kept.
    pub fn symbol(self) -> char {
        match self {
            Action::Create => '+',
            Action::Update => '~',
            Action::Delete => '-',
            Action::Keep => '=',
            Action::Refuse | Action::Conflict => '!',
        }
    }
}

/// One attribute that differs: what AWS has and what the config wants.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AttrChange {
    /// Attribute name, e.g. `enable_dns_hostnames`.
    pub attribute: String,
    /// Observed value (`None` when absent).
    pub old: Option<String>,
    /// Desired value (`None` when it goes away).
    pub new: Option<String>,
}

impl AttrChange {
    /// An attribute going from `old` to `new`.
    pub fn new(attribute: impl Into<String>, old: Option<String>, new: Option<String>) -> Self {
        AttrChange { attribute: attribute.into(), old, new }
    }

    /// A secret attribute: the change is shown, never the values.
    pub fn sensitive(attribute: impl Into<String>) -> Self {
        AttrChange { attribute: attribute.into(), old: Some("(sensitive)".into()), new: Some("(sensitive)".into()) }
    }
}

/// Pushes an [`AttrChange`] when `observed != desired`.
pub fn diff<T: PartialEq + fmt::Debug>(changes: &mut Vec<AttrChange>, attribute: &str, observed: &T, desired: &T) {
    if observed != desired {
        changes.push(AttrChange::new(attribute, Some(format!("{observed:?}")), Some(format!("{desired:?}"))));
    }
}

/// One resource that is created, updated or deleted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    /// Logical id, e.g. `network/subnet/private-1`.
    pub resource: String,
    /// AWS name or id, for people.
    pub name: String,
    /// What happens.
    pub action: Action,
    /// For updates: the attributes that differ.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub attributes: Vec<AttrChange>,
    /// For refusals: why deploy refuses, for people.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl Change {
    /// A resource to create.
    pub fn create(resource: impl Into<String>, name: impl Into<String>) -> Self {
        Change {
            resource: resource.into(),
            name: name.into(),
            action: Action::Create,
            attributes: vec![],
            reason: None,
        }
    }
    /// A resource to update.
    pub fn update(resource: impl Into<String>, name: impl Into<String>, attributes: Vec<AttrChange>) -> Self {
        Change { resource: resource.into(), name: name.into(), action: Action::Update, attributes, reason: None }
    }
    /// A resource to delete.
    pub fn delete(resource: impl Into<String>, name: impl Into<String>) -> Self {
        Change {
            resource: resource.into(),
            name: name.into(),
            action: Action::Delete,
            attributes: vec![],
            reason: None,
        }
    }
    /// A resource no longer declared that is kept because it holds data (see [`Action::Keep`]).
    pub fn keep(resource: impl Into<String>, name: impl Into<String>) -> Self {
        Change { resource: resource.into(), name: name.into(), action: Action::Keep, attributes: vec![], reason: None }
    }
    /// Something deploy refuses to do, and why (see [`Action::Refuse`]).
    pub fn refuse(resource: impl Into<String>, name: impl Into<String>, reason: impl Into<String>) -> Self {
        Change {
            resource: resource.into(),
            name: name.into(),
            action: Action::Refuse,
            attributes: vec![],
            reason: Some(reason.into()),
        }
    }
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} ({})", self.action.symbol(), self.resource, self.name)?;
        if let Some(reason) = &self.reason {
            write!(f, ": {reason}")?;
        }
        for a in &self.attributes {
            write!(
                f,
                "\n    {}: {} -> {}",
                a.attribute,
                a.old.as_deref().unwrap_or("(none)"),
                a.new.as_deref().unwrap_or("(none)")
            )?;
        }
        Ok(())
    }
}
