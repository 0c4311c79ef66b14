//! The network step's wiring: the desired values from the config, what runs concurrently, and
//! what it publishes. Every resource's life cycle is the engine's ([`tap_core::resource`]) and
//! its kind's (one module per kind).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::future::try_join_all;
use tap_core::aws::AwsSession;
use tap_core::config::NetworkSettings;
use tap_core::idempotent::Recovery;
use tap_core::naming::{client_token, Names};
use tap_core::outputs::{NetworkOutputs, SubnetRef, PENDING};
use tap_core::resource::Engine;
use tap_core::step::{Contract, Gone, OutputKind};
use tap_core::wait::Backoff;
use tap_core::{Change, Context, Mode, Step, StepError};

use crate::api::*;
use crate::desired::*;
use crate::elastic_ip::{ElasticIpKind, ElasticIpWant};
use crate::internet_gateway::{InternetGatewayKind, InternetGatewayWant};
use crate::nat_gateway::{NatGatewayKind, NatGatewayWant};
use crate::route_table::{RouteTableKind, RouteTableWant};
use crate::sdk::SdkEc2;
use crate::subnet::{SubnetKind, SubnetWant};
use crate::vpc::{VpcKind, VpcState, VpcWant};
use crate::STEP;

/// How long the step waits for EC2's asynchronous work.
#[derive(Debug, Clone, Copy)]
pub struct Waits {
    /// NAT gateways becoming `available` or `deleted` (usually one to three minutes), and an
    /// Elastic IP still held by a NAT gateway being deleted.
    pub nat: Backoff,
    /// Retrying deletes EC2 refuses while something still holds the resource (`DependencyViolation`
    /// while AWS releases network interfaces, e.g. of a load balancer deleted just before).
    pub dependency: Backoff,
    /// A create, route or association whose outcome is unknown: how long it is looked for.
    pub recovery: Recovery,
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
            recovery: Recovery::default(),
        }
    }
}

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
        let engine =
            Engine::new(ctx, STEP, mode).with_recovery(self.waits.recovery).with_hold_backoff(self.waits.dependency);
        let api = self.api.as_ref();
        let env = ctx.names.env();
        Pass {
            ctx,
            api,
            names: &ctx.names,
            engine,
            waits: self.waits,
            vpc: VpcKind::new(api),
            subnet: SubnetKind::new(api),
            igw: InternetGatewayKind::new(api, env, self.waits.recovery),
            eip: ElasticIpKind::new(api, env),
            nat: NatGatewayKind::new(ctx, api, self.waits.nat),
            route_table: RouteTableKind::new(api, env, self.waits.recovery),
        }
    }

    #[tracing::instrument(name = "network", skip_all, fields(env = ctx.names.env(), ?mode))]
    async fn converge(&self, ctx: &Context, mode: Mode) -> Result<Vec<Change>, StepError> {
        let pass = self.pass(ctx, mode);
        let outputs = pass.converge(&ctx.config.network).await?;
        ctx.put(outputs);
        Ok(pass.engine.into_changes())
    }

    #[tracing::instrument(name = "network", skip_all, fields(env = ctx.names.env()))]
    async fn destroy_all(&self, ctx: &Context) -> Result<Vec<Change>, StepError> {
        let pass = self.pass(ctx, Mode::Apply);
        pass.destroy().await?;
        Ok(pass.engine.into_changes())
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

/// The id of what a converge returned: [`PENDING`] for what plan would create.
fn id_or_pending<T>(found: Option<T>, id: impl FnOnce(T) -> String) -> String {
    found.map(id).unwrap_or_else(|| PENDING.into())
}

/// The zones of the layout's AZ positions, read from the subnets that exist: `Some` only when every
/// subnet of the layout exists (found by its logical id), the public and private subnet of each
/// position share a zone, and the positions' zones are distinct.
fn zones_of_subnets(settings: &NetworkSettings, names: &Names, subnets: &[ObservedSubnet]) -> Option<Vec<String>> {
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

/// One converge or destroy pass over the environment: the engine and the kinds.
struct Pass<'a> {
    ctx: &'a Context,
    api: &'a dyn Ec2Api,
    names: &'a Names,
    engine: Engine<'a>,
    waits: Waits,
    vpc: VpcKind<'a>,
    subnet: SubnetKind<'a>,
    igw: InternetGatewayKind<'a>,
    eip: ElasticIpKind<'a>,
    nat: NatGatewayKind<'a>,
    route_table: RouteTableKind<'a>,
}

impl Pass<'_> {
    fn env(&self) -> &str {
        self.names.env()
    }

    fn apply(&self) -> bool {
        self.engine.mode().is_apply()
    }

    fn vpc_want(&self, cidr: &str) -> VpcWant {
        let name = self.names.vpc();
        VpcWant { tags: self.names.tags(VPC, &name), name, cidr: cidr.into(), env: self.env().into() }
    }

    async fn converge(&self, settings: &NetworkSettings) -> Result<NetworkOutputs, StepError> {
        let vpc_want = self.vpc_want(&settings.vpc_cidr);
        // Round 1: the VPC and everything else of the environment, all found by tags at once.
        // Without a VPC nothing of the layout exists yet: its creation and the zones (round 2)
        // start as soon as DescribeVpcs answers, without waiting for the other lookups.
        let vpc_first = async {
            let vpcs = self.api.find_vpcs(self.env()).await.map_err(StepError::aws(VPC, "DescribeVpcs"))?;
            if let Some(vpc) = by_component(&vpcs, VPC) {
                return Ok::<_, StepError>((Some(vpc.clone()), None));
            }
            // Joined without cancelling: a zone error does not abandon a CreateVpc in flight.
            let (vpc, azs) = tokio::join!(
                self.engine.converge(&self.vpc, VPC, &vpc_want.name, &vpc_want, None),
                self.zones(settings.az_count)
            );
            Ok((None, Some((vpc, azs))))
        };
        let (first, observed) = tokio::join!(vpc_first, self.observe());
        let ((existing, created), observed) = (first?, observed?);
        // A VPC that does not exist holds nothing, and one created here is known to be empty: no
        // lookup follows the CreateVpc.
        let observed = observed.in_vpc(existing.as_ref().map(|v| v.id.as_str()));
        let (vpc_id, azs) = match created {
            Some((vpc, azs)) => (id_or_pending(vpc?, |v: VpcState| v.vpc.id), azs?),
            None => {
                // An existing VPC: when every subnet exists they name the zones; only a subnet
                // still to be placed needs DescribeAvailabilityZones.
                let vpc_id = existing.as_ref().map(|v| v.id.clone()).unwrap_or_default();
                let azs = match zones_of_subnets(settings, self.names, &observed.subnets) {
                    Some(azs) => azs,
                    None => self.zones(settings.az_count).await?,
                };
                (vpc_id, azs)
            }
        };
        let layout = Layout::new(settings, self.names, azs);

        // Round 3: subnets, internet gateway, Elastic IPs and an existing VPC's DNS attributes
        // together. The VPC and subnets are all other steps read: they are published as soon as
        // the subnets exist, so security groups, the load balancer and Cloud Map start while the
        // rest (and then the NAT gateways, minutes on AWS) come up.
        let publish = async {
            let subnet_ids = self.converge_subnets(&vpc_id, &layout, &observed).await?;
            let outputs = network_outputs(&vpc_id, &layout, &subnet_ids);
            self.ctx.put(outputs.clone());
            Ok::<_, StepError>((subnet_ids, outputs))
        };
        let existing_vpc = async {
            let Some(vpc) = existing else { return Ok(()) };
            let state = self.vpc.read(vpc).await.map_err(StepError::aws(VPC, "DescribeVpcAttribute"))?;
            self.engine.converge(&self.vpc, VPC, &vpc_want.name, &vpc_want, Some(state)).await.map(drop)
        };
        let ((subnet_ids, outputs), igw_id, eip_ids, ()) = tokio::try_join!(
            publish,
            self.converge_internet_gateway(&vpc_id, &observed),
            self.converge_addresses(&layout, &observed),
            existing_vpc,
        )?;

        let public_ids: Vec<String> = outputs.public_subnets.iter().map(|s| s.id.clone()).collect();
        let nat_ids = self.converge_nat_gateways(&layout, &observed, &public_ids, &eip_ids).await?;
        self.converge_route_tables(&vpc_id, &layout, &observed, &subnet_ids, &igw_id, &nat_ids).await?;
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

    /// Everything of the environment but the VPC, found by its tags alone (so the lookups run at
    /// the same time as the VPC's); [`Observed::in_vpc`] then keeps what is in the VPC.
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

    /// Every subnet of the layout, together; ids in layout order.
    async fn converge_subnets(
        &self,
        vpc_id: &str,
        layout: &Layout,
        observed: &Observed,
    ) -> Result<Vec<String>, StepError> {
        try_join_all(layout.subnets.iter().map(|spec| async move {
            let want = SubnetWant {
                component: spec.component.clone(),
                env: self.env().into(),
                vpc_id: vpc_id.into(),
                cidr: spec.cidr.clone(),
                az: spec.az.clone(),
                tags: self.names.tags(&spec.component, &spec.name),
            };
            let have = by_component(&observed.subnets, &spec.component).cloned();
            let subnet = self.engine.converge(&self.subnet, &spec.component, &spec.name, &want, have).await?;
            Ok::<_, StepError>(id_or_pending(subnet, |s| s.id))
        }))
        .await
    }

    /// The internet gateway, attached to the VPC.
    async fn converge_internet_gateway(&self, vpc_id: &str, observed: &Observed) -> Result<String, StepError> {
        let name = self.names.name("igw");
        let want = InternetGatewayWant { vpc_id: vpc_id.into(), tags: self.names.tags(INTERNET_GATEWAY, &name) };
        let have = by_component(&observed.internet_gateways, INTERNET_GATEWAY).cloned();
        let igw = self.engine.converge(&self.igw, INTERNET_GATEWAY, &name, &want, have).await?;
        Ok(id_or_pending(igw, |g| g.id))
    }

    /// One Elastic IP per NAT gateway, together; allocation ids in NAT order.
    async fn converge_addresses(&self, layout: &Layout, observed: &Observed) -> Result<Vec<String>, StepError> {
        try_join_all(layout.nats.iter().map(|spec| async move {
            let want = ElasticIpWant {
                component: spec.eip_component.clone(),
                tags: self.names.tags(&spec.eip_component, &spec.eip_name),
            };
            let have = by_component(&observed.addresses, &spec.eip_component).cloned();
            let eip = self.engine.converge(&self.eip, &spec.eip_component, &spec.eip_name, &want, have).await?;
            Ok::<_, StepError>(id_or_pending(eip, |a| a.allocation_id))
        }))
        .await
    }

    /// The NAT gateways, together, each awaited until `available`; ids in NAT order.
    async fn converge_nat_gateways(
        &self,
        layout: &Layout,
        observed: &Observed,
        public_ids: &[String],
        eip_ids: &[String],
    ) -> Result<Vec<String>, StepError> {
        try_join_all(layout.nats.iter().zip(eip_ids).map(|(spec, allocation_id)| {
            self.converge_nat_gateway(spec, observed, &public_ids[spec.index], allocation_id)
        }))
        .await
    }

    async fn converge_nat_gateway(
        &self,
        spec: &NatSpec,
        observed: &Observed,
        subnet_id: &str,
        allocation_id: &str,
    ) -> Result<String, StepError> {
        let ours = || observed.nats.iter().filter(|n| n.component() == Some(spec.component.as_str()));
        // Failed and deleted NAT gateways stay visible for a while but are not "found".
        let have = ours().find(|n| n.state.is_usable()).cloned();
        // A failed attempt must not be answered again by its client token: count the failed or
        // deleted ones so that a replacement sends a fresh token.
        let generation = ours().filter(|n| !n.state.is_usable()).count().to_string();
        let want = NatGatewayWant {
            component: spec.component.clone(),
            subnet_id: subnet_id.into(),
            allocation_id: allocation_id.into(),
            client_token: client_token(&[self.env(), &spec.component, subnet_id, allocation_id, &generation]),
            tags: self.names.tags(&spec.component, &spec.name),
        };
        if have.is_none() && self.apply() {
            self.wait_address_free(spec, observed, allocation_id).await?;
        }
        let ready = have.as_ref().is_some_and(|n| n.state == NatState::Available);
        let nat = self.engine.converge(&self.nat, &spec.component, &spec.name, &want, have).await?;
        let id = id_or_pending(nat, |n| n.id);
        if self.apply() && !ready {
            self.nat.wait_available(&spec.component, &id).await?;
        }
        Ok(id)
    }

    /// Before creating a NAT gateway: its Elastic IP, when it exists and is still associated (with
    /// a NAT gateway being deleted, e.g. by an interrupted destroy), is waited for until AWS frees
    /// it, instead of a `CreateNatGateway` that fails with `Resource.AlreadyAssociated`.
    async fn wait_address_free(
        &self,
        spec: &NatSpec,
        observed: &Observed,
        allocation_id: &str,
    ) -> Result<(), StepError> {
        let held = by_component(&observed.addresses, &spec.eip_component)
            .is_some_and(|a| a.allocation_id == allocation_id && a.association_id.is_some());
        if !held {
            return Ok(());
        }
        let next = format!("creating {}", spec.component);
        self.eip.wait_free(self.ctx, &spec.eip_component, allocation_id, &next, self.waits.nat).await
    }

    /// The public route table and the private ones, together.
    async fn converge_route_tables(
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
            let have = by_component(&observed.route_tables, &spec.component).cloned();
            // Where each of its subnets is associated now, if with another table of the VPC.
            let elsewhere: BTreeMap<String, (String, String)> = subnets
                .iter()
                .filter_map(|subnet| {
                    observed.route_tables.iter().filter(|t| have.as_ref().is_none_or(|own| own.id != t.id)).find_map(
                        |t| {
                            let a = t.associations.iter().find(|a| !a.main && a.subnet_id.as_ref() == Some(subnet))?;
                            Some((subnet.clone(), (t.id.clone(), a.id.clone())))
                        },
                    )
                })
                .collect();
            let want = RouteTableWant {
                component: spec.component.clone(),
                vpc_id: vpc_id.into(),
                client_token: client_token(&[self.env(), &spec.component, vpc_id]),
                tags: self.names.tags(&spec.component, &spec.name),
                target,
                subnets,
                elsewhere,
            };
            async move { self.engine.converge(&self.route_table, &spec.component, &spec.name, &want, have).await }
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
        let nats: Vec<&ObservedNat> = observed
            .nats
            .iter()
            .filter(|n| extra(n.component(), NAT_PREFIX, &|c| layout.nats.iter().any(|s| s.component == c)))
            .collect();
        let addresses: Vec<&ObservedAddress> = observed
            .addresses
            .iter()
            .filter(|a| extra(a.component(), EIP_PREFIX, &|c| layout.nats.iter().any(|s| s.eip_component == c)))
            .collect();
        self.delete_nats_then_addresses(&nats, &addresses).await
    }

    /// Deletes `nats` (waiting until each is `deleted`), then `addresses` (an Elastic IP is in use
    /// until its NAT gateway is deleted).
    async fn delete_nats_then_addresses(
        &self,
        nats: &[&ObservedNat],
        addresses: &[&ObservedAddress],
    ) -> Result<(), StepError> {
        // A NAT gateway already `deleting` is no change: apply only waits for it.
        let live = nats.iter().filter(|n| match n.state {
            NatState::Pending | NatState::Available => true,
            NatState::Deleting => self.apply(),
            _ => false,
        });
        try_join_all(live.map(|n| self.engine.delete(&self.nat, n.component().unwrap_or("network/nat"), &n.id, n)))
            .await?;
        try_join_all(
            addresses
                .iter()
                .map(|a| self.engine.delete(&self.eip, a.component().unwrap_or("network/eip"), &a.allocation_id, a)),
        )
        .await?;
        Ok(())
    }

    /// Removes the environment's network, found by tags. Everything is read at once; the NAT
    /// gateways and the route tables go at once; the subnets and the internet gateway once the
    /// NAT gateways are deleted (their Elastic IPs released) and the services and the load
    /// balancer are gone ([`Gone`]), the engine retrying while EC2 says something still holds
    /// them; the VPC last, once the security groups and the Cloud Map namespace are gone too.
    async fn destroy(&self) -> Result<(), StepError> {
        let (observed, vpcs) = tokio::try_join!(self.observe(), async {
            self.api.find_vpcs(self.env()).await.map_err(StepError::aws(VPC, "DescribeVpcs"))
        })?;
        let Observed { subnets, internet_gateways: igws, addresses, nats, route_tables: tables } = observed;
        let nats: Vec<&ObservedNat> = nats.iter().collect();
        let addresses: Vec<&ObservedAddress> = addresses.iter().collect();
        // The VPC's main route table goes with the VPC.
        let tables = tables
            .iter()
            .filter(|t| !t.is_main())
            .map(|t| self.engine.delete(&self.route_table, t.component().unwrap_or("network/route-table"), &t.id, t));
        // What holds the subnets and the VPC's public addresses.
        tokio::try_join!(
            self.delete_nats_then_addresses(&nats, &addresses),
            try_join_all(tables),
            self.ctx.wait_gone(Gone::EcsServices),
            self.ctx.wait_gone(Gone::LoadBalancer),
        )?;
        tokio::try_join!(
            try_join_all(
                igws.iter()
                    .map(|g| { self.engine.delete(&self.igw, g.component().unwrap_or(INTERNET_GATEWAY), &g.id, g) })
            ),
            try_join_all(
                subnets
                    .iter()
                    .map(|s| { self.engine.delete(&self.subnet, s.component().unwrap_or("network/subnet"), &s.id, s) })
            ),
        )?;
        if vpcs.is_empty() {
            return Ok(());
        }
        tokio::try_join!(self.ctx.wait_gone(Gone::SecurityGroups), self.ctx.wait_gone(Gone::Namespace))?;
        try_join_all(vpcs.into_iter().map(|vpc| async move {
            let component = vpc.component().unwrap_or(VPC).to_owned();
            let id = vpc.id.clone();
            let state = VpcState { vpc, dns_support: None, dns_hostnames: None };
            self.engine.delete(&self.vpc, &component, &id, &state).await
        }))
        .await?;
        Ok(())
    }
}
