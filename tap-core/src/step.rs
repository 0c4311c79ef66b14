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
/// step at once; each deletion starts when what holds it is gone). Given by one step
/// ([`Step::gives`]) through [`Context::give`], awaited with [`Context::wait_gone`] by the steps
/// that declare it in [`Step::destroy_waits`]. Never a runner ordering edge.
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

/// One concern of the platform (network, registry, …): converges its resources to the config.
///
/// Every input a step waits for is declared once, here: [`Step::needs`] (ordering inputs, which
/// the runner checks are produced), [`Step::prune_reads`] (outputs awaited only before deleting
/// what the config no longer declares) and [`Step::destroy_waits`] (milestones of other steps'
/// deletions). [`Context::wait`] and [`Context::wait_gone`] refuse, in debug builds, an input the
/// reading step did not declare.
#[async_trait]
pub trait Step: Send + Sync {
    /// Short name, e.g. `network`.
    fn name(&self) -> &'static str;
    /// Outputs of other steps this one reads (the runner orders steps by them).
    fn needs(&self) -> &'static [OutputKind];
    /// The output this step writes into the context.
    fn produces(&self) -> OutputKind;
    /// Outputs this step awaits in apply only before its prune, as a signal that their producer's
    /// own prune is done (e.g. a removed service's group waits for the service's deletion): not
    /// ordering edges (the producer reads this step's output, so an edge would be a cycle).
    fn prune_reads(&self) -> &'static [OutputKind] {
        &[]
    }
    /// Milestones of other steps' deletions that this step's destroy waits for.
    fn destroy_waits(&self) -> &'static [Gone] {
        &[]
    }
    /// Milestones this step's destroy gives (each is given at the latest when its destroy ends).
    fn gives(&self) -> &'static [Gone] {
        &[]
    }
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
