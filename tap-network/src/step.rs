//! The network step: one converge pass for plan and apply, and the destroy walk.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::future::try_join_all;
use tap_core::aws::AwsSession;
use tap_core::idempotent::{create_or_adopt, Recovery};
use tap_core::naming::Names;
use tap_core::outputs::{is_known, NetworkOutputs, SubnetRef, PENDING};
use tap_core::progress::ProgressEvent;
use tap_core::step::{diff, Contract, Gone, OutputKind};
use tap_core::wait::{poll_until, retry_while, Backoff};
use tap_core::{Action, AttrChange, AwsError, Change, Context, Mode, Step, StepError};

use crate::api::*;
use crate::desired::*;
use crate::sdk::SdkEc2;

/// How long the step waits for EC2's asynchronous work.
#[derive(Debug, Clone, Copy)]
pub struct Waits {
    /// NAT gateways becoming `available` or `deleted` (usually one to three minutes).
    pub nat: Backoff,
    /// Retrying deletes that fail with `DependencyViolation` while AWS releases network interfaces
    /// (e.g. of a load balancer deleted just before).
    pub dependency: Backoff,
}

impl Default for Waits {
    fn default() -> Self {
        Waits {
            // At most 5 s between polls: a deletion's end is not announced, and each second
            // late holds what waits behind it (Elastic IPs, subnets, the VPC).
            nat: Backoff {
                initial: Duration::from_secs(1),
                max: Duration::from_secs(5),
                timeout: Duration::from_secs(900),
            },
            dependency: Backoff {
                initial: Duration::from_secs(1),
                max: Duration::from_secs(5),
                timeout: Duration::from_secs(600),
            },
        }
    }
}

/// The step's name, in progress events.
const STEP: &str = "network";

/// The network step: VPC, subnets, internet gateway, Elastic IPs, NAT gateways and route tables.
pub struct NetworkStep {
    api: Arc<dyn Ec2Api>,
    waits: Waits,
}

impl NetworkStep {
    /// A step over `api`.
    pub fn new(api: Arc<dyn Ec2Api>) -> Self {
        NetworkStep { api, waits: Waits::default() }
    }

    /// A step over a real EC2 client built from `session` (its counter and guard attached).
    pub fn from_session(session: &AwsSession) -> Self {
        Self::new(Arc::new(SdkEc2(tap_core::sdk_client!(aws_sdk_ec2, session))))
    }

    /// Replaces the wait bounds (tests use short ones).
    pub fn with_waits(mut self, waits: Waits) -> Self {
        self.waits = waits;
        self
    }

    fn pass<'a>(&'a self, ctx: &'a Context, mode: Mode) -> Pass<'a> {
        Pass { ctx, api: self.api.as_ref(), waits: self.waits, mode, names: &ctx.names, changes: Changes::default() }
    }

    #[tracing::instrument(name = "network", skip_all, fields(env = ctx.names.env(), ?mode))]
    async fn converge(&self, ctx: &Context, mode: Mode) -> Result<Vec<Change>, StepError> {
        let pass = self.pass(ctx, mode);
        let outputs = pass.converge(&ctx.config.network).await?;
        ctx.put(outputs);
        Ok(pass.changes.into_vec())
    }

    #[tracing::instrument(name = "network", skip_all, fields(env = ctx.names.env()))]
    async fn destroy_all(&self, ctx: &Context) -> Result<Vec<Change>, StepError> {
        let pass = self.pass(ctx, Mode::Apply);
        pass.destroy().await?;
        Ok(pass.changes.into_vec())
    }
}

#[async_trait]
impl Step for NetworkStep {
    fn contract(&self) -> Contract {
        Contract::new(STEP, OutputKind::Network).destroy_waits(&[
            Gone::EcsServices,
            Gone::LoadBalancer,
            Gone::SecurityGroups,
            Gone::Namespace,
        ])
    }

    async fn plan(&self, ctx: &Context) -> Result<Vec<Change>, StepError> {
        self.converge(ctx, Mode::Plan).await
    }

    async fn apply(&self, ctx: &Context) -> Result<Vec<Change>, StepError> {
        self.converge(ctx, Mode::Apply).await
    }

    async fn destroy(&self, ctx: &Context) -> Result<Vec<Change>, StepError> {
        self.destroy_all(ctx).await
    }
}

/// The changes of one pass; concurrent tasks record into it.
#[derive(Debug, Default)]
struct Changes(Mutex<Vec<Change>>);

impl Changes {
    fn push(&self, change: Change) {
        tracing::info!("{change}");
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(change);
    }

    fn into_vec(self) -> Vec<Change> {
        self.0.into_inner().unwrap_or_else(|e| e.into_inner())
    }
}

/// The id of a resource after a find-or-create.
struct Ensured {
    id: String,
    created: bool,
}

/// What exists of the environment before the pass changes anything.
#[derive(Debug, Default)]
struct Observed {
    subnets: Vec<ObservedSubnet>,
    internet_gateways: Vec<ObservedInternetGateway>,
    addresses: Vec<ObservedAddress>,
    nats: Vec<ObservedNat>,
    route_tables: Vec<ObservedRouteTable>,
}

impl Observed {
    /// Keeps only the subnets and route tables in the VPC `vpc_id`; none when there is no VPC yet.
    fn in_vpc(mut self, vpc_id: Option<&str>) -> Observed {
        self.subnets.retain(|s| vpc_id == Some(s.vpc_id.as_str()));
        self.route_tables.retain(|t| vpc_id == Some(t.vpc_id.as_str()));
        self
    }
}

/// The first resource carrying the logical id `component`.
fn by_component<'a, T: Tagged>(items: &'a [T], component: &str) -> Option<&'a T> {
    items.iter().find(|r| r.component() == Some(component))
}

/// `Ok(true)` when the call succeeded, `Ok(false)` when the resource was already gone.
fn gone_ok(result: Result<(), AwsError>) -> Result<bool, AwsError> {
    match result {
        Ok(()) => Ok(true),
        Err(e) if e.is_not_found() || e.is("Gateway.NotAttached") => Ok(false),
        Err(e) => Err(e),
    }
}

fn is_dependency_violation(e: &StepError) -> bool {
    e.aws_error().is_some_and(|a| a.is("DependencyViolation"))
}

/// The zones of the layout's AZ positions, read from the subnets that exist: `Some` only when every
/// subnet of the layout exists (found by its logical id), the public and private subnet of each
/// position share a zone, and the positions' zones are distinct.
fn zones_of_subnets(
    settings: &tap_core::config::NetworkSettings,
    names: &Names,
    subnets: &[ObservedSubnet],
) -> Option<Vec<String>> {
    let positions = Layout::new(settings, names, vec![String::new(); settings.az_count]);
    let mut zones: Vec<Option<String>> = vec![None; settings.az_count];
    for spec in &positions.subnets {
        let az = &by_component(subnets, &spec.component)?.az;
        match &zones[spec.index] {
            Some(known) if known != az => return None,
            _ => zones[spec.index] = Some(az.clone()),
        }
    }
    let zones: Vec<String> = zones.into_iter().collect::<Option<_>>()?;
    let distinct: std::collections::BTreeSet<&String> = zones.iter().collect();
    (distinct.len() == zones.len()).then_some(zones)
}

/// The step's outputs: the VPC and the subnets of `layout` (ids in layout order), by tier in AZ order.
fn network_outputs(vpc_id: &str, layout: &Layout, subnet_ids: &[String]) -> NetworkOutputs {
    let refs = |tier: Tier| -> Vec<SubnetRef> {
        layout
            .subnets
            .iter()
            .zip(subnet_ids)
            .filter(|(s, _)| s.tier == tier)
            .map(|(s, id)| SubnetRef { az: s.az.clone(), id: id.clone() })
            .collect()
    };
    NetworkOutputs {
        vpc_id: vpc_id.to_owned(),
        public_subnets: refs(Tier::Public),
        private_subnets: refs(Tier::Private),
    }
}

/// A change to the route table's default route or subnet associations.
#[derive(Debug, Clone, PartialEq, Eq)]
enum RouteFix {
    CreateRoute,
    ReplaceRoute,
    Associate { subnet_id: String },
    MoveAssociation { association_id: String },
}

/// Compares one route table with what it should hold: the default route to `target` and an
/// association with each of `subnets`. `all` are every route table of the VPC (a subnet associated
/// with another of them is moved rather than associated).
fn route_table_fixes(
    table: Option<&ObservedRouteTable>,
    all: &[ObservedRouteTable],
    target: &RouteTarget,
    subnets: &[String],
) -> (Vec<RouteFix>, Vec<AttrChange>) {
    let mut fixes = Vec::new();
    let mut attrs = Vec::new();
    let attribute = format!("route {DEFAULT_ROUTE}");
    match table.and_then(|t| t.routes.iter().find(|r| r.destination == DEFAULT_ROUTE)) {
        None => {
            fixes.push(RouteFix::CreateRoute);
            attrs.push(AttrChange::new(attribute, None, Some(target.id().to_owned())));
        }
        Some(route) if route.target.as_ref() != Some(target) => {
            fixes.push(RouteFix::ReplaceRoute);
            attrs.push(AttrChange::new(
                attribute,
                route.target.as_ref().map(|t| t.id().to_owned()),
                Some(target.id().to_owned()),
            ));
        }
        Some(_) => {}
    }
    let associated = |t: &ObservedRouteTable, subnet: &str| {
        t.associations.iter().find(|a| !a.main && a.subnet_id.as_deref() == Some(subnet)).cloned()
    };
    for subnet in subnets {
        if table.is_some_and(|t| associated(t, subnet).is_some()) {
            continue;
        }
        let elsewhere = all
            .iter()
            .filter(|t| table.is_none_or(|own| own.id != t.id))
            .find_map(|t| associated(t, subnet).map(|a| (t, a)));
        match elsewhere {
            Some((other, association)) if is_known(subnet) => {
                fixes.push(RouteFix::MoveAssociation { association_id: association.id });
                attrs.push(AttrChange::new(
                    "association",
                    Some(format!("{subnet} (with {})", other.id)),
                    Some(subnet.clone()),
                ));
            }
            _ => {
                fixes.push(RouteFix::Associate { subnet_id: subnet.clone() });
                attrs.push(AttrChange::new("association", None, Some(subnet.clone())));
            }
        }
    }
    (fixes, attrs)
}

/// One converge or destroy pass over the environment.
struct Pass<'a> {
    ctx: &'a Context,
    api: &'a dyn Ec2Api,
    waits: Waits,
    mode: Mode,
    names: &'a Names,
    changes: Changes,
}

impl Pass<'_> {
    fn env(&self) -> &str {
        self.names.env()
    }

    /// Records a change and reports it as progress.
    fn record(&self, change: Change) {
        self.ctx.progress(ProgressEvent::Changed { step: STEP, change: &change });
        self.changes.push(change);
    }

    /// Reports that the step waits for `what`.
    fn waiting(&self, what: &str) {
        self.ctx.progress(ProgressEvent::Waiting { step: STEP, what });
    }

    /// Keeps `existing`, or records the creation and, in apply mode, runs `create`.
    async fn ensure<F, Fut>(
        &self,
        existing: Option<&str>,
        component: &str,
        name: &str,
        action: &'static str,
        create: F,
    ) -> Result<Ensured, StepError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<String, AwsError>>,
    {
        if let Some(id) = existing {
            self.ctx.progress(ProgressEvent::Found { step: STEP, resource: component });
            return Ok(Ensured { id: id.to_owned(), created: false });
        }
        let change = Change::create(component, name);
        self.changes.push(change.clone());
        if !self.mode.is_apply() {
            self.ctx.progress(ProgressEvent::Changed { step: STEP, change: &change });
            return Ok(Ensured { id: PENDING.into(), created: true });
        }
        self.ctx.progress(ProgressEvent::Working { step: STEP, resource: component, action: Action::Create });
        let id = create().await.map_err(StepError::aws(component, action))?;
        tracing::debug!(resource = component, id, "created");
        self.ctx.progress(ProgressEvent::Changed { step: STEP, change: &change });
        Ok(Ensured { id, created: true })
    }

    /// Runs a create whose answer may be lost: the SDK does not resend it blindly (see
    /// `sdk.rs`), so a lost answer (or an "already exists" code in `exists`) makes this look the
    /// resource up with `find` (by its tags) and adopt it, creating again only when nothing is there.
    async fn create_once<T, F, FFut, C, CFut>(
        &self,
        component: &str,
        exists: &[&str],
        find: F,
        create: C,
    ) -> Result<T, AwsError>
    where
        F: FnMut() -> FFut,
        FFut: Future<Output = Result<Option<T>, AwsError>>,
        C: FnMut() -> CFut,
        CFut: Future<Output = Result<T, AwsError>>,
    {
        create_or_adopt(component, Recovery::default(), |e| exists.iter().any(|code| e.is(code)), find, create).await
    }

    /// The id of the environment's resource carrying the logical id `component`, among `found`.
    fn component_id<T: Tagged>(found: Vec<T>, component: &str, id: impl Fn(&T) -> &str) -> Option<String> {
        by_component(&found, component).map(|r| id(r).to_owned())
    }

    async fn converge(&self, settings: &tap_core::config::NetworkSettings) -> Result<NetworkOutputs, StepError> {
        // Round 1: the VPC and everything else of the environment, all found by tags at once.
        // Without a VPC nothing of the layout exists yet: its creation and the zones (round 2)
        // start as soon as DescribeVpcs answers, without waiting for the other lookups.
        let vpc_first = async {
            let vpcs = self.api.find_vpcs(self.env()).await.map_err(StepError::aws(VPC, "DescribeVpcs"))?;
            if by_component(&vpcs, VPC).is_some() {
                return Ok::<_, StepError>((vpcs, None));
            }
            // Joined without cancelling: a zone error does not abandon a CreateVpc in flight.
            let (vpc, azs) = tokio::join!(self.ensure_vpc(&vpcs, &settings.vpc_cidr), self.zones(settings.az_count));
            Ok((vpcs, Some((vpc, azs))))
        };
        let (first, observed) = tokio::join!(vpc_first, self.observe());
        let ((vpcs, created), observed) = (first?, observed?);
        // A VPC that does not exist holds nothing, and one created here is known to be empty: no
        // lookup follows the CreateVpc.
        let observed = observed.in_vpc(by_component(&vpcs, VPC).map(|v| v.id.as_str()));
        let (vpc, azs) = match created {
            Some((vpc, azs)) => (vpc?, azs?),
            None => {
                // An existing VPC: when every subnet exists they name the zones; only a subnet
                // still to be placed needs DescribeAvailabilityZones.
                let vpc = self.ensure_vpc(&vpcs, &settings.vpc_cidr).await?;
                let azs = match zones_of_subnets(settings, self.names, &observed.subnets) {
                    Some(azs) => azs,
                    None => self.zones(settings.az_count).await?,
                };
                (vpc, azs)
            }
        };
        let layout = Layout::new(settings, self.names, azs);

        // Round 3: subnets, internet gateway, Elastic IPs and DNS attributes together. The VPC and
        // subnets are all other steps read: they are published as soon as the subnets exist, so
        // security groups, the load balancer and Cloud Map start while the rest (and then the NAT
        // gateways, minutes on AWS) come up.
        let publish = async {
            let subnet_ids = self.ensure_subnets(&vpc.id, &layout, &observed).await?;
            let outputs = network_outputs(&vpc.id, &layout, &subnet_ids);
            self.ctx.put(outputs.clone());
            Ok::<_, StepError>((subnet_ids, outputs))
        };
        let ((subnet_ids, outputs), igw_id, eip_ids, ()) = tokio::try_join!(
            publish,
            self.ensure_internet_gateway(&vpc.id, &observed),
            self.ensure_addresses(&layout, &observed),
            self.ensure_dns(&vpc),
        )?;

        let public_ids: Vec<String> = outputs.public_subnets.iter().map(|s| s.id.clone()).collect();
        let nat_ids = self.ensure_nat_gateways(&layout, &observed, &public_ids, &eip_ids).await?;
        self.ensure_route_tables(&vpc.id, &layout, &observed, &subnet_ids, &igw_id, &nat_ids).await?;
        self.remove_extra_nat_gateways(&layout, &observed).await?;
        Ok(outputs)
    }

    /// The first `count` available zones, by name.
    async fn zones(&self, count: usize) -> Result<Vec<String>, StepError> {
        let zones = self
            .api
            .available_zones()
            .await
            .map_err(StepError::aws("network/availability-zones", "DescribeAvailabilityZones"))?;
        if zones.len() < count {
            return Err(StepError::Conflict {
                resource: "network/availability-zones".into(),
                message: format!(
                    "the region has {} available zone(s) ({zones:?}) but network.az_count is {count}",
                    zones.len()
                ),
            });
        }
        Ok(zones.into_iter().take(count).collect())
    }

    /// Everything of the environment a converge compares with, found by its tags alone (so the
    /// lookups run at the same time as the VPC's); [`Observed::in_vpc`] then keeps what is in the
    /// VPC.
    async fn observe(&self) -> Result<Observed, StepError> {
        let env = self.env();
        let (subnets, internet_gateways, addresses, nats, route_tables) = tokio::try_join!(
            async {
                self.api.find_subnets(env, None).await.map_err(StepError::aws("network/subnet", "DescribeSubnets"))
            },
            async {
                self.api
                    .find_internet_gateways(env)
                    .await
                    .map_err(StepError::aws(INTERNET_GATEWAY, "DescribeInternetGateways"))
            },
            async { self.api.find_addresses(env).await.map_err(StepError::aws("network/eip", "DescribeAddresses")) },
            async {
                self.api.find_nat_gateways(env).await.map_err(StepError::aws("network/nat", "DescribeNatGateways"))
            },
            async {
                self.api
                    .find_route_tables(env, None)
                    .await
                    .map_err(StepError::aws("network/route-table", "DescribeRouteTables"))
            },
        )?;
        Ok(Observed { subnets, internet_gateways, addresses, nats, route_tables })
    }

    async fn ensure_vpc(&self, vpcs: &[ObservedVpc], cidr: &str) -> Result<Ensured, StepError> {
        let existing = by_component(vpcs, VPC);
        if let Some(vpc) = existing.filter(|v| v.cidr != cidr) {
            return Err(StepError::Conflict {
                resource: VPC.into(),
                message: format!(
                    "VPC {} has CIDR {} but network.vpc_cidr is {cidr}; a VPC's CIDR cannot change in place: restore the setting or destroy the environment first",
                    vpc.id, vpc.cidr
                ),
            });
        }
        let name = self.names.vpc();
        let tags = self.names.tags(VPC, &name);
        self.ensure(existing.map(|v| v.id.as_str()), VPC, &name, "CreateVpc", || {
            self.create_once(
                VPC,
                &[],
                || async { Ok(Self::component_id(self.api.find_vpcs(self.env()).await?, VPC, |v| &v.id)) },
                || self.api.create_vpc(cidr, &tags),
            )
        })
        .await
    }

    /// DNS support and DNS hostnames on. For an existing VPC: read both, then modify only what is
    /// off, one attribute per call and support before hostnames (EC2 refuses hostnames without
    /// support). A VPC created by this pass is not read: a new VPC has DNS support on and DNS
    /// hostnames off (on AWS and moto), so only hostnames is turned on (its create is the change).
    async fn ensure_dns(&self, vpc: &Ensured) -> Result<(), StepError> {
        if !is_known(&vpc.id) {
            return Ok(());
        }
        if vpc.created {
            if self.mode.is_apply() {
                self.api
                    .set_vpc_attribute(&vpc.id, VpcAttribute::DnsHostnames, true)
                    .await
                    .map_err(StepError::aws(VPC, "ModifyVpcAttribute"))?;
            }
            return Ok(());
        }
        let observed = try_join_all(VpcAttribute::ALL.map(|attribute| async move {
            let on = self
                .api
                .vpc_attribute(&vpc.id, attribute)
                .await
                .map_err(StepError::aws(VPC, "DescribeVpcAttribute"))?;
            Ok::<_, StepError>((attribute, on))
        }))
        .await?;
        let mut attrs = Vec::new();
        for (attribute, on) in observed {
            diff(&mut attrs, attribute.label(), &on, &true);
            if !on && self.mode.is_apply() {
                self.api
                    .set_vpc_attribute(&vpc.id, attribute, true)
                    .await
                    .map_err(StepError::aws(VPC, "ModifyVpcAttribute"))?;
            }
        }
        if !attrs.is_empty() {
            self.record(Change::update(VPC, self.names.vpc(), attrs));
        }
        Ok(())
    }

    /// Every subnet of the layout, created together; ids in layout order.
    async fn ensure_subnets(
        &self,
        vpc_id: &str,
        layout: &Layout,
        observed: &Observed,
    ) -> Result<Vec<String>, StepError> {
        try_join_all(layout.subnets.iter().map(|spec| self.ensure_subnet(vpc_id, spec, observed))).await
    }

    async fn ensure_subnet(&self, vpc_id: &str, spec: &SubnetSpec, observed: &Observed) -> Result<String, StepError> {
        let existing = by_component(&observed.subnets, &spec.component);
        if let Some(subnet) = existing.filter(|s| s.cidr != spec.cidr || s.az != spec.az) {
            return Err(StepError::Conflict {
                resource: spec.component.clone(),
                message: format!(
                    "subnet {} is {} in {} but the config wants {} in {}; a subnet cannot move in place: restore the setting or destroy the environment first",
                    subnet.id, subnet.cidr, subnet.az, spec.cidr, spec.az
                ),
            });
        }
        let tags = self.names.tags(&spec.component, &spec.name);
        let subnet = self
            .ensure(existing.map(|s| s.id.as_str()), &spec.component, &spec.name, "CreateSubnet", || {
                self.create_once(
                    &spec.component,
                    &["InvalidSubnet.Conflict"],
                    || async {
                        let found = self.api.find_subnets(self.env(), Some(vpc_id)).await?;
                        Ok(Self::component_id(found, &spec.component, |s| &s.id))
                    },
                    || self.api.create_subnet(vpc_id, &spec.cidr, &spec.az, &tags),
                )
            })
            .await?;
        Ok(subnet.id)
    }

    /// The internet gateway, attached to the VPC.
    async fn ensure_internet_gateway(&self, vpc_id: &str, observed: &Observed) -> Result<String, StepError> {
        let name = self.names.name("igw");
        let existing = by_component(&observed.internet_gateways, INTERNET_GATEWAY);
        let tags = self.names.tags(INTERNET_GATEWAY, &name);
        let igw = self
            .ensure(existing.map(|g| g.id.as_str()), INTERNET_GATEWAY, &name, "CreateInternetGateway", || {
                self.create_once(
                    INTERNET_GATEWAY,
                    &[],
                    || async {
                        let found = self.api.find_internet_gateways(self.env()).await?;
                        Ok(Self::component_id(found, INTERNET_GATEWAY, |g| &g.id))
                    },
                    || self.api.create_internet_gateway(&tags),
                )
            })
            .await?;
        let attached: &[String] = existing.map(|g| g.attached_vpcs.as_slice()).unwrap_or_default();
        if attached.iter().any(|v| v == vpc_id) {
            return Ok(igw.id);
        }
        if let Some(other) = attached.first() {
            return Err(StepError::Conflict {
                resource: INTERNET_GATEWAY.into(),
                message: format!("internet gateway {} is attached to {other}, not to the environment's VPC {vpc_id}; detach it first", igw.id),
            });
        }
        if !igw.created {
            self.record(Change::update(
                INTERNET_GATEWAY,
                &name,
                vec![AttrChange::new("attached_vpc", None, Some(vpc_id.to_owned()))],
            ));
        }
        if self.mode.is_apply() {
            let attached_here = || async {
                let found = self.api.find_internet_gateways(self.env()).await?;
                Ok(found.iter().any(|g| g.id == igw.id && g.attached_vpcs.iter().any(|v| v == vpc_id)).then_some(()))
            };
            self.create_once(INTERNET_GATEWAY, &["Resource.AlreadyAssociated"], attached_here, || {
                self.api.attach_internet_gateway(&igw.id, vpc_id)
            })
            .await
            .map_err(StepError::aws(INTERNET_GATEWAY, "AttachInternetGateway"))?;
        }
        Ok(igw.id)
    }

    /// One Elastic IP per NAT gateway, allocated together; allocation ids in NAT order.
    async fn ensure_addresses(&self, layout: &Layout, observed: &Observed) -> Result<Vec<String>, StepError> {
        try_join_all(layout.nats.iter().map(|spec| async move {
            let existing = by_component(&observed.addresses, &spec.eip_component);
            let tags = self.names.tags(&spec.eip_component, &spec.eip_name);
            let eip = self
                .ensure(
                    existing.map(|a| a.allocation_id.as_str()),
                    &spec.eip_component,
                    &spec.eip_name,
                    "AllocateAddress",
                    || {
                        self.create_once(
                            &spec.eip_component,
                            &[],
                            || async {
                                let found = self.api.find_addresses(self.env()).await?;
                                Ok(Self::component_id(found, &spec.eip_component, |a| &a.allocation_id))
                            },
                            || self.api.allocate_address(&tags),
                        )
                    },
                )
                .await?;
            Ok(eip.id)
        }))
        .await
    }

    /// The NAT gateways, created together and awaited until `available`; ids in NAT order.
    async fn ensure_nat_gateways(
        &self,
        layout: &Layout,
        observed: &Observed,
        public_ids: &[String],
        eip_ids: &[String],
    ) -> Result<Vec<String>, StepError> {
        try_join_all(layout.nats.iter().zip(eip_ids).map(|(spec, allocation_id)| {
            self.ensure_nat_gateway(spec, observed, &public_ids[spec.index], allocation_id)
        }))
        .await
    }

    async fn ensure_nat_gateway(
        &self,
        spec: &NatSpec,
        observed: &Observed,
        subnet_id: &str,
        allocation_id: &str,
    ) -> Result<String, StepError> {
        let ours = || observed.nats.iter().filter(|n| n.component.as_deref() == Some(spec.component.as_str()));
        // Failed and deleted NAT gateways stay visible for a while but are not "found".
        let existing = ours().find(|n| n.state.is_usable());
        // A failed attempt must not be answered again by its client token: count the failed or
        // deleted ones so that a replacement sends a fresh token.
        let generation = ours().filter(|n| !n.state.is_usable()).count().to_string();
        let token = client_token(&[self.env(), &spec.component, subnet_id, allocation_id, &generation]);
        let tags = self.names.tags(&spec.component, &spec.name);
        let nat = self
            .ensure(existing.map(|n| n.id.as_str()), &spec.component, &spec.name, "CreateNatGateway", || {
                self.create_once(
                    &spec.component,
                    &[],
                    || async {
                        let found = self.api.find_nat_gateways(self.env()).await?;
                        Ok(found
                            .into_iter()
                            .find(|n| n.component.as_deref() == Some(spec.component.as_str()) && n.state.is_usable())
                            .map(|n| n.id))
                    },
                    || self.api.create_nat_gateway(subnet_id, allocation_id, &token, &tags),
                )
            })
            .await?;
        let ready = existing.is_some_and(|n| n.state == NatState::Available);
        if self.mode.is_apply() && !ready {
            self.wait_nat_available(&spec.component, &nat.id).await?;
        }
        Ok(nat.id)
    }

    async fn wait_nat_available(&self, component: &str, nat_id: &str) -> Result<(), StepError> {
        let what = format!("NAT gateway {nat_id} ({component}) to become available");
        self.waiting(&what);
        poll_until(&what, self.waits.nat, || async {
            let nat = self.api.nat_gateway(nat_id).await.map_err(StepError::aws(component, "DescribeNatGateways"))?;
            match nat.map(|n| (n.state, n.failure)) {
                Some((NatState::Available, _)) => Ok(Some(())),
                // Not yet visible (eventual consistency) or still being created.
                None | Some((NatState::Pending, _)) => Ok(None),
                Some((state, failure)) => Err(StepError::Conflict {
                    resource: component.into(),
                    message: format!(
                        "NAT gateway {nat_id} went to state {state:?}{}; run deploy again to replace it",
                        failure.map(|f| format!(" ({f})")).unwrap_or_default()
                    ),
                }),
            }
        })
        .await
    }

    /// The public route table and the private ones, converged together.
    async fn ensure_route_tables(
        &self,
        vpc_id: &str,
        layout: &Layout,
        observed: &Observed,
        subnet_ids: &[String],
        igw_id: &str,
        nat_ids: &[String],
    ) -> Result<(), StepError> {
        let subnet_id = |tier: Tier, index: usize| -> String {
            layout
                .subnets
                .iter()
                .zip(subnet_ids)
                .find(|(s, _)| s.tier == tier && s.index == index)
                .map(|(_, id)| id.clone())
                .unwrap_or_else(|| PENDING.into())
        };
        try_join_all(layout.route_tables.iter().map(|spec| {
            let target = match spec.default_route {
                DefaultRoute::InternetGateway => RouteTarget::Gateway(igw_id.to_owned()),
                DefaultRoute::Nat(i) => RouteTarget::NatGateway(nat_ids[i].clone()),
            };
            let subnets: Vec<String> = spec.subnets.iter().map(|&i| subnet_id(spec.tier, i)).collect();
            async move { self.ensure_route_table(vpc_id, spec, observed, target, subnets).await }
        }))
        .await?;
        Ok(())
    }

    async fn ensure_route_table(
        &self,
        vpc_id: &str,
        spec: &RouteTableSpec,
        observed: &Observed,
        target: RouteTarget,
        subnets: Vec<String>,
    ) -> Result<(), StepError> {
        let existing = by_component(&observed.route_tables, &spec.component);
        let token = client_token(&[self.env(), &spec.component, vpc_id]);
        let tags = self.names.tags(&spec.component, &spec.name);
        let table = self
            .ensure(existing.map(|t| t.id.as_str()), &spec.component, &spec.name, "CreateRouteTable", || {
                self.create_once(
                    &spec.component,
                    &[],
                    || async {
                        let found = self.api.find_route_tables(self.env(), Some(vpc_id)).await?;
                        Ok(Self::component_id(found, &spec.component, |t| &t.id))
                    },
                    || self.api.create_route_table(vpc_id, &token, &tags),
                )
            })
            .await?;
        let (fixes, attrs) = route_table_fixes(existing, &observed.route_tables, &target, &subnets);
        if !table.created && !attrs.is_empty() {
            self.record(Change::update(&spec.component, &spec.name, attrs));
        }
        if !self.mode.is_apply() {
            return Ok(());
        }
        let component = spec.component.as_str();
        // The table as AWS holds it now, for adopting a route or association whose create lost
        // its answer.
        let current = || async {
            let found = self.api.find_route_tables(self.env(), Some(vpc_id)).await?;
            Ok::<_, AwsError>(found.into_iter().find(|t| t.id == table.id))
        };
        let (route_fixes, association_fixes): (Vec<RouteFix>, Vec<RouteFix>) =
            fixes.into_iter().partition(|f| matches!(f, RouteFix::CreateRoute | RouteFix::ReplaceRoute));
        for fix in route_fixes {
            if fix == RouteFix::CreateRoute {
                let routed = || async {
                    Ok(current()
                        .await?
                        .is_some_and(|t| {
                            t.routes
                                .iter()
                                .any(|r| r.destination == DEFAULT_ROUTE && r.target.as_ref() == Some(&target))
                        })
                        .then_some(()))
                };
                self.create_once(component, &["RouteAlreadyExists"], routed, || {
                    self.api.create_route(&table.id, DEFAULT_ROUTE, &target)
                })
                .await
                .map_err(StepError::aws(component, "CreateRoute"))?;
            } else {
                self.api
                    .replace_route(&table.id, DEFAULT_ROUTE, &target)
                    .await
                    .map_err(StepError::aws(component, "ReplaceRoute"))?;
            }
        }
        try_join_all(association_fixes.into_iter().map(|fix| {
            let table_id = table.id.as_str();
            async move {
                match fix {
                    RouteFix::Associate { subnet_id } => {
                        let associated = || async {
                            Ok(current().await?.and_then(|t| {
                                t.associations
                                    .into_iter()
                                    .find(|a| !a.main && a.subnet_id.as_deref() == Some(subnet_id.as_str()))
                                    .map(|a| a.id)
                            }))
                        };
                        self.create_once(component, &["Resource.AlreadyAssociated"], associated, || {
                            self.api.associate_route_table(table_id, &subnet_id)
                        })
                        .await
                        .map_err(StepError::aws(component, "AssociateRouteTable"))
                    }
                    RouteFix::MoveAssociation { association_id } => self
                        .api
                        .replace_route_table_association(&association_id, table_id)
                        .await
                        .map_err(StepError::aws(component, "ReplaceRouteTableAssociation")),
                    RouteFix::CreateRoute | RouteFix::ReplaceRoute => Ok(String::new()),
                }
            }
        }))
        .await?;
        Ok(())
    }

    /// NAT gateways and Elastic IPs the layout no longer has (e.g. after switching to a single
    /// NAT): deleted once the route tables point elsewhere, the addresses once their NAT is gone.
    async fn remove_extra_nat_gateways(&self, layout: &Layout, observed: &Observed) -> Result<(), StepError> {
        let extra = |component: Option<&str>, prefix: &str, wanted: &dyn Fn(&str) -> bool| {
            component.is_some_and(|c| c.starts_with(prefix) && !wanted(c))
        };
        let nats = observed.nats.iter().filter(|n| {
            matches!(n.state, NatState::Pending | NatState::Available | NatState::Deleting)
                && extra(n.component.as_deref(), NAT_PREFIX, &|c| layout.nats.iter().any(|s| s.component == c))
        });
        try_join_all(nats.map(|n| self.delete_nat_gateway(n))).await?;
        let addresses = observed.addresses.iter().filter(|a| {
            extra(a.component.as_deref(), EIP_PREFIX, &|c| layout.nats.iter().any(|s| s.eip_component == c))
        });
        try_join_all(addresses.map(|a| self.release_address(a))).await?;
        Ok(())
    }

    // ----- deleting (shared by converge and destroy) -----

    /// Deletes a NAT gateway (unless it is already being deleted) and waits until it is gone.
    async fn delete_nat_gateway(&self, nat: &ObservedNat) -> Result<(), StepError> {
        let component = nat.component.as_deref().unwrap_or("network/nat");
        if nat.state != NatState::Deleting {
            self.record(Change::delete(component, &nat.id));
            if !self.mode.is_apply() {
                return Ok(());
            }
            gone_ok(self.api.delete_nat_gateway(&nat.id).await)
                .map_err(StepError::aws(component, "DeleteNatGateway"))?;
        }
        if !self.mode.is_apply() {
            return Ok(());
        }
        let what = format!("NAT gateway {} ({component}) to be deleted", nat.id);
        self.waiting(&what);
        poll_until(&what, self.waits.nat, || async {
            let now = self.api.nat_gateway(&nat.id).await.map_err(StepError::aws(component, "DescribeNatGateways"))?;
            Ok(now.is_none_or(|n| matches!(n.state, NatState::Deleted | NatState::Failed)).then_some(()))
        })
        .await
    }

    async fn release_address(&self, address: &ObservedAddress) -> Result<(), StepError> {
        let component = address.component.as_deref().unwrap_or("network/eip");
        self.record(Change::delete(component, &address.allocation_id));
        if self.mode.is_apply() {
            gone_ok(self.api.release_address(&address.allocation_id).await)
                .map_err(StepError::aws(component, "ReleaseAddress"))?;
        }
        Ok(())
    }

    /// Runs a delete, again while EC2 answers `DependencyViolation` (network interfaces of
    /// something deleted just before are still being released); a resource already gone is fine.
    async fn delete_retrying<F, Fut>(
        &self,
        component: &str,
        id: &str,
        action: &'static str,
        op: F,
    ) -> Result<bool, StepError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<(), AwsError>>,
    {
        retry_while(&format!("{action} {id} ({component})"), self.waits.dependency, is_dependency_violation, || async {
            gone_ok(op().await).map_err(StepError::aws(component, action))
        })
        .await
    }

    /// Removes the environment's network, found by tags. Everything is read at once; the NAT
    /// gateways and the route tables go at once; the subnets and the internet gateway once the
    /// NAT gateways are deleted (their Elastic IPs released) and the services and the load
    /// balancer are gone ([`Gone`]), retrying while their network interfaces are released; the
    /// VPC last, once the security groups and the Cloud Map namespace are gone too.
    async fn destroy(&self) -> Result<(), StepError> {
        let env = self.env();
        let (nats, addresses, tables, igws, subnets, vpcs) = tokio::try_join!(
            async {
                self.api.find_nat_gateways(env).await.map_err(StepError::aws("network/nat", "DescribeNatGateways"))
            },
            async { self.api.find_addresses(env).await.map_err(StepError::aws("network/eip", "DescribeAddresses")) },
            async {
                self.api
                    .find_route_tables(env, None)
                    .await
                    .map_err(StepError::aws("network/route-table", "DescribeRouteTables"))
            },
            async {
                self.api
                    .find_internet_gateways(env)
                    .await
                    .map_err(StepError::aws(INTERNET_GATEWAY, "DescribeInternetGateways"))
            },
            async {
                self.api.find_subnets(env, None).await.map_err(StepError::aws("network/subnet", "DescribeSubnets"))
            },
            async { self.api.find_vpcs(env).await.map_err(StepError::aws(VPC, "DescribeVpcs")) },
        )?;
        let nats_and_addresses = async {
            let live =
                nats.iter().filter(|n| matches!(n.state, NatState::Pending | NatState::Available | NatState::Deleting));
            try_join_all(live.map(|n| self.delete_nat_gateway(n))).await?;
            // An Elastic IP is in use until its NAT gateway is deleted.
            try_join_all(addresses.iter().map(|a| self.release_address(a))).await
        };
        // What holds the subnets and the VPC's public addresses.
        let holders_gone = async {
            tokio::try_join!(
                nats_and_addresses,
                try_join_all(tables.iter().map(|t| self.delete_route_table(t))),
                self.ctx.wait_gone(Gone::EcsServices),
                self.ctx.wait_gone(Gone::LoadBalancer),
            )
            .map(drop)
        };
        holders_gone.await?;
        tokio::try_join!(
            try_join_all(igws.iter().map(|g| self.delete_internet_gateway(g))),
            try_join_all(subnets.iter().map(|s| {
                let component = s.component.as_deref().unwrap_or("network/subnet");
                async move {
                    if self.delete_retrying(component, &s.id, "DeleteSubnet", || self.api.delete_subnet(&s.id)).await? {
                        self.record(Change::delete(component, &s.id));
                    }
                    Ok::<_, StepError>(())
                }
            })),
        )?;

        if vpcs.is_empty() {
            return Ok(());
        }
        tokio::try_join!(self.ctx.wait_gone(Gone::SecurityGroups), self.ctx.wait_gone(Gone::Namespace))?;
        try_join_all(vpcs.iter().map(|v| {
            let component = v.component.as_deref().unwrap_or(VPC);
            async move {
                if self.delete_retrying(component, &v.id, "DeleteVpc", || self.api.delete_vpc(&v.id)).await? {
                    self.record(Change::delete(component, &v.id));
                }
                Ok::<_, StepError>(())
            }
        }))
        .await?;
        Ok(())
    }

    /// Disassociates a route table's subnets and deletes it; the VPC's main table is left to the VPC.
    async fn delete_route_table(&self, table: &ObservedRouteTable) -> Result<(), StepError> {
        let component = table.component.as_deref().unwrap_or("network/route-table");
        if table.is_main() {
            tracing::warn!(
                resource = component,
                id = table.id,
                "route table is the VPC's main route table; it goes with the VPC"
            );
            return Ok(());
        }
        try_join_all(table.associations.iter().map(|a| async move {
            gone_ok(self.api.disassociate_route_table(&a.id).await)
                .map_err(StepError::aws(component, "DisassociateRouteTable"))
        }))
        .await?;
        if self
            .delete_retrying(component, &table.id, "DeleteRouteTable", || self.api.delete_route_table(&table.id))
            .await?
        {
            self.record(Change::delete(component, &table.id));
        }
        Ok(())
    }

    /// Detaches an internet gateway from its VPCs (again while public addresses are still being
    /// unmapped) and deletes it.
    async fn delete_internet_gateway(&self, igw: &ObservedInternetGateway) -> Result<(), StepError> {
        let component = igw.component.as_deref().unwrap_or(INTERNET_GATEWAY);
        try_join_all(igw.attached_vpcs.iter().map(|vpc_id| {
            self.delete_retrying(component, &igw.id, "DetachInternetGateway", move || {
                self.api.detach_internet_gateway(&igw.id, vpc_id)
            })
        }))
        .await?;
        if self
            .delete_retrying(component, &igw.id, "DeleteInternetGateway", || self.api.delete_internet_gateway(&igw.id))
            .await?
        {
            self.record(Change::delete(component, &igw.id));
        }
        Ok(())
    }
}
