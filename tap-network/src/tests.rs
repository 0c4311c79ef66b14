//! Unit tests of the network step over a mocked [`Ec2Api`].

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tap_core::config::NatMode;
use tap_core::idempotent::Recovery;
use tap_core::naming::{Tag, PROJECT, TAG_COMPONENT, TAG_ENVIRONMENT, TAG_MANAGED_BY, TAG_NAME, TAG_PROJECT};
use tap_core::outputs::{NetworkOutputs, PENDING};
use tap_core::wait::Backoff;
use tap_core::{Action, AwsError, Change, Config, Context, Step};

use crate::api::*;
use crate::{NetworkStep, Waits};

const AZS: [&str; 3] = ["us-east-1a", "us-east-1b", "us-east-1c"];
const PUBLIC: [&str; 3] = ["10.0.0.0/24", "10.0.1.0/24", "10.0.2.0/24"];
const PRIVATE: [&str; 3] = ["10.0.10.0/24", "10.0.11.0/24", "10.0.12.0/24"];

fn fast() -> Waits {
    let b =
        Backoff { initial: Duration::from_millis(1), max: Duration::from_millis(2), timeout: Duration::from_secs(2) };
    let recovery = Recovery { attempts: 3, lookup: Duration::from_millis(20), lookup_delay: Duration::from_millis(1) };
    Waits { nat: b, dependency: b, recovery }
}

fn step(mock: MockEc2Api) -> NetworkStep {
    NetworkStep::new(Arc::new(mock)).with_waits(fast())
}

fn ctx_with(mode: NatMode) -> Context {
    let mut config = Config::default();
    config.network.nat_gateways = mode;
    Context::new(config)
}

fn ctx() -> Context {
    ctx_with(NatMode::OnePerAz)
}

fn tag<'a>(tags: &'a [Tag], key: &str) -> &'a str {
    tags.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str()).unwrap_or_default()
}

/// The last path segment of the `tap:component` tag: `network/subnet/public-1` → `public-1`.
fn short(tags: &[Tag]) -> String {
    tag(tags, TAG_COMPONENT).rsplit('/').next().unwrap_or_default().to_owned()
}

/// The tags of the environment's resource with logical id `c` (environment `dev`).
fn comp(c: &str) -> Vec<Tag> {
    [(TAG_PROJECT, PROJECT), (TAG_MANAGED_BY, PROJECT), (TAG_ENVIRONMENT, "dev"), (TAG_COMPONENT, c)]
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .to_vec()
}

fn route(destination: &str, target: RouteTarget) -> ObservedRoute {
    ObservedRoute { destination: destination.into(), target: Some(target) }
}

fn association(id: &str, subnet: &str) -> ObservedAssociation {
    ObservedAssociation { id: id.into(), subnet_id: Some(subnet.into()), main: false }
}

fn nat(n: usize, state: NatState) -> ObservedNat {
    ObservedNat {
        id: format!("nat-{n}"),
        subnet_id: format!("subnet-public-{n}"),
        state,
        failure: None,
        tags: comp(&format!("network/nat/{n}")),
    }
}

fn private_table(i: usize, nat_id: &str) -> ObservedRouteTable {
    ObservedRouteTable {
        id: format!("rtb-private-{i}"),
        vpc_id: "vpc-1".into(),
        routes: vec![
            route("10.0.0.0/16", RouteTarget::Gateway("local".into())),
            route("0.0.0.0/0", RouteTarget::NatGateway(nat_id.into())),
        ],
        associations: vec![association(&format!("rtbassoc-private-{i}"), &format!("subnet-private-{i}"))],
        tags: comp(&format!("network/route-table/private-{i}")),
    }
}

/// What EC2 holds for the environment; installed into a mock as the answers of the read calls.
#[derive(Debug, Clone, Default)]
struct World {
    vpcs: Vec<ObservedVpc>,
    subnets: Vec<ObservedSubnet>,
    igws: Vec<ObservedInternetGateway>,
    addresses: Vec<ObservedAddress>,
    nats: Vec<ObservedNat>,
    tables: Vec<ObservedRouteTable>,
    dns_hostnames: bool,
    /// The VPC's DNS support is off (it is on in a new VPC, as on AWS).
    dns_support_off: bool,
    /// `Some(n)`: DescribeAvailabilityZones must be called exactly `n` times.
    zones_asked: Option<usize>,
    /// Every other read must be made exactly once (the VPC attributes twice when the VPC exists,
    /// never when it is created), as a deploy makes them when no create loses its answer.
    exact_reads: bool,
    /// The VPC-scoped lookups, in call order, with the VPC they asked for
    /// (`find_subnets None`, `find_route_tables Some("vpc-1")`, …).
    calls: Log<String>,
}

impl World {
    /// Nothing deployed (a new VPC has DNS support on and hostnames off, as on AWS).
    fn empty() -> World {
        World::default()
    }

    /// Exactly what a deploy with `mode` builds.
    fn deployed(mode: NatMode) -> World {
        let nat_count = if mode == NatMode::Single { 1 } else { 3 };
        let mut subnets = Vec::new();
        for (tier, cidrs) in [("public", PUBLIC), ("private", PRIVATE)] {
            for (i, (cidr, az)) in cidrs.iter().zip(AZS).enumerate() {
                subnets.push(ObservedSubnet {
                    id: format!("subnet-{tier}-{}", i + 1),
                    vpc_id: "vpc-1".into(),
                    cidr: (*cidr).into(),
                    az: az.into(),
                    tags: comp(&format!("network/subnet/{tier}-{}", i + 1)),
                });
            }
        }
        let public = ObservedRouteTable {
            id: "rtb-public".into(),
            vpc_id: "vpc-1".into(),
            routes: vec![
                route("10.0.0.0/16", RouteTarget::Gateway("local".into())),
                route("0.0.0.0/0", RouteTarget::Gateway("igw-1".into())),
            ],
            associations: (1..=3)
                .map(|i| association(&format!("rtbassoc-public-{i}"), &format!("subnet-public-{i}")))
                .collect(),
            tags: comp("network/route-table/public"),
        };
        let mut tables = vec![public];
        tables.extend((1..=3).map(|i| private_table(i, &format!("nat-{}", if nat_count == 1 { 1 } else { i }))));
        World {
            vpcs: vec![ObservedVpc { id: "vpc-1".into(), cidr: "10.0.0.0/16".into(), tags: comp("network/vpc") }],
            subnets,
            igws: vec![ObservedInternetGateway {
                id: "igw-1".into(),
                attached_vpcs: vec!["vpc-1".into()],
                tags: comp("network/igw"),
            }],
            addresses: (1..=nat_count)
                .map(|i| ObservedAddress {
                    allocation_id: format!("eipalloc-{i}"),
                    association_id: Some(format!("eipassoc-{i}")),
                    tags: comp(&format!("network/eip/{i}")),
                })
                .collect(),
            nats: (1..=nat_count).map(|i| nat(i, NatState::Available)).collect(),
            tables,
            dns_hostnames: true,
            ..World::default()
        }
    }

    /// Answers every read call from this world except `nat_gateway(id)`. Expectations set before
    /// it come first: mockall answers a call with the first that matches and is not used up.
    fn install_reads(self, mock: &mut MockEc2Api) {
        let zones = mock
            .expect_available_zones()
            .returning(|| Ok(vec!["us-east-1a".into(), "us-east-1b".into(), "us-east-1c".into(), "us-east-1d".into()]));
        if let Some(n) = self.zones_asked {
            zones.times(n);
        }
        let once = if self.exact_reads { 1..2 } else { 0..usize::MAX };
        let w = self.clone();
        mock.expect_find_vpcs().times(once.clone()).returning(move |_| Ok(w.vpcs.clone()));
        let w = self.clone();
        mock.expect_find_subnets().times(once.clone()).returning(move |_, vpc| {
            w.calls.lock().unwrap().push(format!("find_subnets {vpc:?}"));
            Ok(w.subnets.clone())
        });
        let w = self.clone();
        mock.expect_find_internet_gateways().times(once.clone()).returning(move |_| Ok(w.igws.clone()));
        let w = self.clone();
        mock.expect_find_addresses().times(once.clone()).returning(move |_| Ok(w.addresses.clone()));
        let w = self.clone();
        mock.expect_find_nat_gateways().times(once.clone()).returning(move |_| Ok(w.nats.clone()));
        let w = self.clone();
        mock.expect_find_route_tables().times(once).returning(move |_, vpc| {
            w.calls.lock().unwrap().push(format!("find_route_tables {vpc:?}"));
            Ok(w.tables.clone())
        });
        let (support, hostnames) = (!self.dns_support_off, self.dns_hostnames);
        // A VPC created by the pass is not read; an existing one is read once per attribute.
        let reads = if self.vpcs.is_empty() { 0 } else { 2 };
        let attribute_reads = if self.exact_reads { reads..reads + 1 } else { 0..usize::MAX };
        mock.expect_vpc_attribute()
            .times(attribute_reads)
            .returning(move |_, attribute| Ok(if attribute == VpcAttribute::DnsSupport { support } else { hostnames }));
    }

    /// Answers every read call from this world; NAT gateways read by id are `available`.
    fn install(self, mock: &mut MockEc2Api) {
        self.install_reads(mock);
        mock.expect_nat_gateway().returning(|id| Ok(Some(nat_in_state(id, NatState::Available))));
    }

    /// A mock answering every read from this world ([`World::install`]).
    fn mock(self) -> MockEc2Api {
        let mut mock = MockEc2Api::new();
        self.install(&mut mock);
        mock
    }

    /// [`World::mock`], on which every mutating call fails the test.
    fn read_only(self) -> MockEc2Api {
        let mut mock = self.mock();
        forbid_mutations(&mut mock);
        mock
    }
}

fn nat_in_state(id: &str, state: NatState) -> ObservedNat {
    ObservedNat { id: id.into(), subnet_id: String::new(), state, failure: None, tags: vec![] }
}

/// Makes every mutating call fail the test.
fn forbid_mutations(mock: &mut MockEc2Api) {
    mock.expect_create_vpc().never();
    mock.expect_set_vpc_attribute().never();
    mock.expect_delete_vpc().never();
    mock.expect_create_subnet().never();
    mock.expect_delete_subnet().never();
    mock.expect_create_internet_gateway().never();
    mock.expect_attach_internet_gateway().never();
    mock.expect_detach_internet_gateway().never();
    mock.expect_delete_internet_gateway().never();
    mock.expect_allocate_address().never();
    mock.expect_release_address().never();
    mock.expect_create_nat_gateway().never();
    mock.expect_delete_nat_gateway().never();
    mock.expect_create_route_table().never();
    mock.expect_create_route().never();
    mock.expect_replace_route().never();
    mock.expect_associate_route_table().never();
    mock.expect_replace_route_table_association().never();
    mock.expect_disassociate_route_table().never();
    mock.expect_delete_route_table().never();
}

type Log<T> = Arc<Mutex<Vec<T>>>;

fn sorted<T: Ord + Clone>(log: &Log<T>) -> Vec<T> {
    let mut v = log.lock().unwrap().clone();
    v.sort();
    v
}

/// What a full deploy from nothing created.
#[derive(Default)]
struct Created {
    /// (vpc, cidr, az, name) of each subnet.
    subnets: Log<(String, String, String, String)>,
    /// (component, subnet, allocation) of each NAT gateway.
    nats: Log<(String, String, String)>,
    /// (route table, target) of each route.
    routes: Log<(String, RouteTarget)>,
    /// (route table, subnet) of each association.
    associations: Log<(String, String)>,
}

/// Watches the mutating calls of a full deploy: appends each operation's name to `log`, followed
/// by ` (published)` when `ctx` already holds the [`NetworkOutputs`] at that moment.
#[derive(Clone, Default)]
struct Watch {
    ctx: Option<Arc<Context>>,
    log: Log<String>,
}

impl Watch {
    fn seen(&self, op: &str) {
        let published = self.ctx.as_ref().is_some_and(|c| c.try_get::<NetworkOutputs>().is_some());
        self.log.lock().unwrap().push(if published { format!("{op} (published)") } else { op.to_owned() });
    }
}

/// Expects the creates of a full deploy from nothing with `nat_count` NAT gateways; ids are derived
/// from the component tag (`subnet-public-1`, `nat-2`, `rtb-private-3`, …).
fn expect_full_create(mock: &mut MockEc2Api, nat_count: usize) -> Created {
    expect_full_create_watched(mock, nat_count, Watch::default())
}

/// [`expect_full_create`], reporting each mutating call to `watch`.
fn expect_full_create_watched(mock: &mut MockEc2Api, nat_count: usize, watch: Watch) -> Created {
    let w = watch.clone();
    mock.expect_create_vpc()
        .withf(|cidr, tags| {
            cidr == "10.0.0.0/16"
                && tag(tags, TAG_COMPONENT) == "network/vpc"
                && tag(tags, TAG_NAME) == "tap-vpc-dev"
                && tag(tags, TAG_ENVIRONMENT) == "dev"
        })
        .times(1)
        .returning(move |_, _| {
            w.seen("CreateVpc");
            Ok("vpc-1".into())
        });
    expect_full_create_but_the_vpc(mock, nat_count, watch)
}

/// [`expect_full_create_watched`] without the VPC's creation. The VPC is new, so the only DNS call
/// is the one that turns hostnames on.
fn expect_full_create_but_the_vpc(mock: &mut MockEc2Api, nat_count: usize, watch: Watch) -> Created {
    let created = Created::default();
    let w = watch.clone();
    mock.expect_set_vpc_attribute()
        .withf(|vpc, attribute, value| vpc == "vpc-1" && *attribute == VpcAttribute::DnsHostnames && *value)
        .times(1)
        .returning(move |_, _, _| {
            w.seen("ModifyVpcAttribute");
            Ok(())
        });

    let (log, w) = (created.subnets.clone(), watch.clone());
    mock.expect_create_subnet().times(6).returning(move |vpc, cidr, az, tags| {
        w.seen("CreateSubnet");
        log.lock().unwrap().push((vpc.into(), cidr.into(), az.into(), tag(tags, TAG_NAME).into()));
        Ok(format!("subnet-{}", short(tags)))
    });

    let w = watch.clone();
    mock.expect_create_internet_gateway().withf(|tags| tag(tags, TAG_COMPONENT) == "network/igw").times(1).returning(
        move |_| {
            w.seen("CreateInternetGateway");
            Ok("igw-1".into())
        },
    );
    let w = watch.clone();
    mock.expect_attach_internet_gateway().withf(|igw, vpc| igw == "igw-1" && vpc == "vpc-1").times(1).returning(
        move |_, _| {
            w.seen("AttachInternetGateway");
            Ok(())
        },
    );
    let w = watch.clone();
    mock.expect_allocate_address()
        .withf(|tags| tag(tags, TAG_COMPONENT).starts_with("network/eip/"))
        .times(nat_count)
        .returning(move |tags| {
            w.seen("AllocateAddress");
            Ok(format!("eipalloc-{}", short(tags)))
        });

    let (log, w) = (created.nats.clone(), watch.clone());
    mock.expect_create_nat_gateway().times(nat_count).returning(move |subnet, allocation, token, tags| {
        w.seen("CreateNatGateway");
        assert!(token.starts_with("tap-") && token.len() <= 64, "deterministic client token: {token}");
        log.lock().unwrap().push((tag(tags, TAG_COMPONENT).into(), subnet.into(), allocation.into()));
        Ok(format!("nat-{}", short(tags)))
    });

    let w = watch.clone();
    mock.expect_create_route_table().withf(|vpc, _, _| vpc == "vpc-1").times(4).returning(move |_, _, tags| {
        w.seen("CreateRouteTable");
        Ok(format!("rtb-{}", short(tags)))
    });
    let (log, w) = (created.routes.clone(), watch.clone());
    mock.expect_create_route().withf(|_, dest, _| dest == "0.0.0.0/0").times(4).returning(move |rt, _, target| {
        w.seen("CreateRoute");
        log.lock().unwrap().push((rt.into(), target.clone()));
        Ok(())
    });
    let (log, w) = (created.associations.clone(), watch);
    mock.expect_associate_route_table().times(6).returning(move |rt, subnet| {
        w.seen("AssociateRouteTable");
        log.lock().unwrap().push((rt.into(), subnet.into()));
        Ok(format!("rtbassoc-{subnet}"))
    });
    created
}

fn creates(changes: &[Change]) -> BTreeSet<String> {
    changes.iter().filter(|c| c.action == Action::Create).map(|c| c.resource.clone()).collect()
}

fn expected_creates(nat_count: usize) -> BTreeSet<String> {
    let mut set: BTreeSet<String> =
        ["network/vpc", "network/igw", "network/route-table/public"].into_iter().map(String::from).collect();
    for i in 1..=3 {
        set.insert(format!("network/subnet/public-{i}"));
        set.insert(format!("network/subnet/private-{i}"));
        set.insert(format!("network/route-table/private-{i}"));
    }
    for i in 1..=nat_count {
        set.insert(format!("network/eip/{i}"));
        set.insert(format!("network/nat/{i}"));
    }
    set
}

#[tokio::test(flavor = "current_thread")]
async fn from_nothing_creates_exactly_the_spec() {
    let mut mock = MockEc2Api::new();
    // Each lookup once, the zones once, and no VPC attribute read (the VPC is new).
    let world = World { exact_reads: true, zones_asked: Some(1), ..World::empty() };
    let calls = world.calls.clone();
    world.install(&mut mock);
    let created = expect_full_create_watched(&mut mock, 3, Watch { ctx: None, log: calls.clone() });
    let ctx = ctx();

    let changes = step(mock).apply(&ctx).await.unwrap();

    // The VPC-scoped lookups ask for the environment's resources in any VPC (at the same time as
    // DescribeVpcs; the CreateVpc does not wait for them), and none follows the creation.
    let calls = calls.lock().unwrap().clone();
    let count = |e: &str| calls.iter().filter(|c| *c == e).count();
    assert_eq!(
        (count("find_subnets None"), count("find_route_tables None"), count("CreateVpc")),
        (1, 1, 1),
        "{calls:?}"
    );
    assert!(!calls.iter().any(|c| c.contains("Some(")), "no VPC-scoped lookup: {calls:?}");
    assert_eq!(changes.len(), 18, "{changes:#?}");
    assert_eq!(creates(&changes), expected_creates(3));
    let subnets = sorted(&created.subnets);
    let mut expected: Vec<(String, String, String, String)> = Vec::new();
    for (tier, cidrs) in [("public", PUBLIC), ("private", PRIVATE)] {
        for (i, (cidr, az)) in cidrs.iter().zip(AZS).enumerate() {
            expected.push(("vpc-1".into(), (*cidr).into(), az.into(), format!("tap-{tier}-{}-dev", i + 1)));
        }
    }
    expected.sort();
    assert_eq!(subnets, expected, "6 subnets, one public and one private per AZ");
    assert_eq!(
        sorted(&created.nats),
        (1..=3)
            .map(|i| (format!("network/nat/{i}"), format!("subnet-public-{i}"), format!("eipalloc-{i}")))
            .collect::<Vec<_>>(),
        "one NAT per AZ, in that AZ's public subnet, with its own EIP"
    );
    assert_eq!(
        sorted(&created.routes),
        vec![
            ("rtb-private-1".into(), RouteTarget::NatGateway("nat-1".into())),
            ("rtb-private-2".into(), RouteTarget::NatGateway("nat-2".into())),
            ("rtb-private-3".into(), RouteTarget::NatGateway("nat-3".into())),
            ("rtb-public".into(), RouteTarget::Gateway("igw-1".into())),
        ]
    );
    let mut expected_assoc: Vec<(String, String)> =
        (1..=3).map(|i| ("rtb-public".into(), format!("subnet-public-{i}"))).collect();
    expected_assoc.extend((1..=3).map(|i| (format!("rtb-private-{i}"), format!("subnet-private-{i}"))));
    expected_assoc.sort();
    assert_eq!(sorted(&created.associations), expected_assoc);

    let out: NetworkOutputs = ctx.get("test").unwrap();
    assert_eq!(out.vpc_id, "vpc-1");
    let refs = |v: &[tap_core::outputs::SubnetRef]| v.iter().map(|s| (s.az.clone(), s.id.clone())).collect::<Vec<_>>();
    assert_eq!(
        refs(&out.public_subnets),
        AZS.iter().enumerate().map(|(i, az)| (az.to_string(), format!("subnet-public-{}", i + 1))).collect::<Vec<_>>()
    );
    assert_eq!(
        refs(&out.private_subnets),
        AZS.iter().enumerate().map(|(i, az)| (az.to_string(), format!("subnet-private-{}", i + 1))).collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "current_thread")]
async fn single_nat_mode_creates_one_nat_and_routes_every_private_table_through_it() {
    let mut mock = World::empty().mock();
    let created = expect_full_create(&mut mock, 1);
    let ctx = ctx_with(NatMode::Single);

    let changes = step(mock).apply(&ctx).await.unwrap();

    assert_eq!(creates(&changes), expected_creates(1));
    assert_eq!(sorted(&created.nats), vec![("network/nat/1".into(), "subnet-public-1".into(), "eipalloc-1".into())]);
    let private: Vec<RouteTarget> =
        sorted(&created.routes).into_iter().filter(|(rt, _)| rt.starts_with("rtb-private")).map(|(_, t)| t).collect();
    assert_eq!(private, vec![RouteTarget::NatGateway("nat-1".into()); 3]);
}

#[tokio::test(flavor = "current_thread")]
async fn matching_environment_makes_no_mutating_call() {
    for mode in [NatMode::OnePerAz, NatMode::Single] {
        let mock = World::deployed(mode).read_only();
        let ctx = ctx_with(mode);
        let changes = step(mock).apply(&ctx).await.unwrap();
        assert!(changes.is_empty(), "{mode:?}: {changes:#?}");
        let out: NetworkOutputs = ctx.get("test").unwrap();
        assert_eq!(out.vpc_id, "vpc-1");
        assert_eq!(out.private_subnets[2].id, "subnet-private-3");
    }
}

#[tokio::test(flavor = "current_thread")]
async fn matching_environment_makes_exactly_the_expected_reads() {
    for mode in [NatMode::OnePerAz, NatMode::Single] {
        // One call per kind, two VPC attributes, and no DescribeAvailabilityZones: the subnets
        // that exist name the zones.
        let world = World { zones_asked: Some(0), exact_reads: true, ..World::deployed(mode) };
        let calls = world.calls.clone();
        let mock = world.read_only();
        let ctx = ctx_with(mode);
        let changes = step(mock).apply(&ctx).await.unwrap();
        assert!(changes.is_empty(), "{mode:?}: {changes:#?}");
        let out: NetworkOutputs = ctx.get("test").unwrap();
        let azs: Vec<&str> = out.private_subnets.iter().map(|s| s.az.as_str()).collect();
        assert_eq!(azs, AZS);
        // The lookups run with DescribeVpcs, so they cannot name the VPC.
        assert_eq!(*calls.lock().unwrap(), vec!["find_subnets None", "find_route_tables None"]);
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_no_op_plan_or_deploy_never_asks_for_the_availability_zones() {
    for plan in [true, false] {
        let mock = World { zones_asked: Some(0), ..World::deployed(NatMode::OnePerAz) }.read_only();
        let ctx = ctx();
        let step = step(mock);
        let changes = if plan { step.plan(&ctx).await } else { step.apply(&ctx).await }.unwrap();
        assert!(changes.is_empty(), "plan {plan}: {changes:#?}");
        assert_eq!(ctx.get::<NetworkOutputs>("test").unwrap().public_subnets[1].az, "us-east-1b");
    }
}

#[tokio::test(flavor = "current_thread")]
async fn subnets_and_route_tables_outside_the_environments_vpc_are_ignored() {
    // Tagged like the environment's but in another VPC, and listed first.
    let stray = |world: &World| -> (Vec<ObservedSubnet>, Vec<ObservedRouteTable>) {
        let mut subnets = World::deployed(NatMode::OnePerAz).subnets;
        for s in &mut subnets {
            s.id = format!("{}-old", s.id);
            s.vpc_id = "vpc-old".into();
            s.cidr = "192.168.0.0/24".into();
        }
        subnets.extend(world.subnets.iter().cloned());
        let mut tables = World::deployed(NatMode::OnePerAz).tables;
        for t in &mut tables {
            t.id = format!("{}-old", t.id);
            t.vpc_id = "vpc-old".into();
            t.routes.clear();
        }
        tables.extend(world.tables.iter().cloned());
        (subnets, tables)
    };

    // Deployed: nothing to do, and the outputs name the subnets of the environment's VPC.
    let mut world = World::deployed(NatMode::OnePerAz);
    (world.subnets, world.tables) = stray(&world);
    let mock = world.read_only();
    let ctx = ctx();
    let changes = step(mock).apply(&ctx).await.unwrap();
    assert!(changes.is_empty(), "{changes:#?}");
    let out: NetworkOutputs = ctx.get("test").unwrap();
    assert_eq!(out.public_subnets[0].id, "subnet-public-1");

    // No VPC: nothing can be in it, so everything is created.
    let mut world = World::empty();
    (world.subnets, world.tables) = stray(&world);
    let mut mock = world.mock();
    expect_full_create(&mut mock, 3);
    let changes = step(mock).apply(&ctx).await.unwrap();
    assert_eq!(creates(&changes), expected_creates(3));
}

/// Other steps start on the VPC and subnets: they are published as soon as the subnets exist,
/// without waiting for the internet gateway, the Elastic IPs or the NAT gateways. A new VPC's DNS
/// hostnames are part of its create (the engine's settle after create), so they come first.
#[tokio::test(flavor = "current_thread")]
async fn network_outputs_are_published_as_soon_as_the_subnets_exist() {
    let mut mock = World::empty().mock();
    let ctx = Arc::new(ctx());
    let watch = Watch { ctx: Some(ctx.clone()), log: Log::default() };
    expect_full_create_watched(&mut mock, 3, watch.clone());

    step(mock).apply(&ctx).await.unwrap();

    let log = watch.log.lock().unwrap().clone();
    let published = |op: &str| -> Vec<bool> {
        log.iter().filter(|e| e.split(' ').next() == Some(op)).map(|e| e.ends_with("(published)")).collect()
    };
    assert_eq!(published("CreateVpc"), vec![false], "{log:?}");
    assert_eq!(published("ModifyVpcAttribute"), vec![false], "{log:?}");
    assert_eq!(published("CreateSubnet"), vec![false; 6], "{log:?}");
    assert_eq!(published("CreateNatGateway"), vec![true; 3], "{log:?}");
    // The mocks answer at once and the subnets are polled first: had the publication waited for
    // the calls running beside the subnets, these would see it unpublished.
    for op in ["CreateInternetGateway", "AttachInternetGateway"] {
        assert_eq!(published(op), vec![true], "{op}: {log:?}");
    }
    assert_eq!(published("AllocateAddress"), vec![true; 3], "{log:?}");
}

#[tokio::test(flavor = "current_thread")]
async fn availability_zones_are_asked_when_a_subnet_is_missing() {
    let mut world = World { zones_asked: Some(1), ..World::deployed(NatMode::OnePerAz) };
    world.subnets.retain(|s| s.id != "subnet-private-2");
    world.tables[2].associations.clear();
    let mut mock = world.mock();
    mock.expect_create_subnet()
        .withf(|vpc, cidr, az, tags| {
            vpc == "vpc-1" && cidr == "10.0.11.0/24" && az == "us-east-1b" && short(tags) == "private-2"
        })
        .times(1)
        .returning(|_, _, _, _| Ok("subnet-private-2".into()));
    mock.expect_associate_route_table()
        .withf(|rt, subnet| rt == "rtb-private-2" && subnet == "subnet-private-2")
        .times(1)
        .returning(|_, _| Ok("rtbassoc-new".into()));
    let changes = step(mock).apply(&ctx()).await.unwrap();
    assert_eq!(creates(&changes), BTreeSet::from(["network/subnet/private-2".to_string()]));

    // Subnets that disagree about a position's zone do not name it either.
    let mut world = World { zones_asked: Some(1), ..World::deployed(NatMode::OnePerAz) };
    world.subnets.iter_mut().find(|s| s.id == "subnet-private-2").unwrap().az = "us-east-1d".into();
    let mock = world.read_only();
    let err = step(mock).plan(&ctx()).await.unwrap_err();
    assert!(err.to_string().contains("subnet-private-2"), "{err}");
}

/// Applies over `world` (the deployed one-NAT-per-AZ world changed by `drift`) and returns the
/// changes; `expect` sets the only mutating calls allowed.
async fn apply_drifted(drift: impl FnOnce(&mut World), expect: impl FnOnce(&mut MockEc2Api)) -> Vec<Change> {
    let mut world = World::deployed(NatMode::OnePerAz);
    drift(&mut world);
    let mut mock = world.mock();
    expect(&mut mock);
    step(mock).apply(&ctx()).await.unwrap()
}

#[tokio::test(flavor = "current_thread")]
async fn deleted_route_is_recreated() {
    let changes = apply_drifted(
        |w| w.tables[2].routes.retain(|r| r.destination != "0.0.0.0/0"),
        |m| {
            m.expect_create_route()
                .withf(|rt, dest, target| {
                    rt == "rtb-private-2" && dest == "0.0.0.0/0" && *target == RouteTarget::NatGateway("nat-2".into())
                })
                .times(1)
                .returning(|_, _, _| Ok(()));
        },
    )
    .await;
    assert_eq!(changes.len(), 1);
    assert_eq!((changes[0].resource.as_str(), changes[0].action), ("network/route-table/private-2", Action::Update));
}

#[tokio::test(flavor = "current_thread")]
async fn route_pointing_elsewhere_is_replaced() {
    let changes = apply_drifted(
        |w| w.tables[3] = private_table(3, "nat-1"),
        |m| {
            m.expect_replace_route()
                .withf(|rt, dest, target| {
                    rt == "rtb-private-3" && dest == "0.0.0.0/0" && *target == RouteTarget::NatGateway("nat-3".into())
                })
                .times(1)
                .returning(|_, _, _| Ok(()));
        },
    )
    .await;
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0].attributes[0].old.as_deref(), Some("nat-1"));
    assert_eq!(changes[0].attributes[0].new.as_deref(), Some("nat-3"));
}

#[tokio::test(flavor = "current_thread")]
async fn missing_association_is_added() {
    let changes = apply_drifted(
        |w| w.tables[0].associations.retain(|a| a.subnet_id.as_deref() != Some("subnet-public-2")),
        |m| {
            m.expect_associate_route_table()
                .withf(|rt, subnet| rt == "rtb-public" && subnet == "subnet-public-2")
                .times(1)
                .returning(|_, _| Ok("a".into()));
        },
    )
    .await;
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0].resource, "network/route-table/public");
}

#[tokio::test(flavor = "current_thread")]
async fn subnet_associated_with_the_wrong_table_is_moved() {
    let changes = apply_drifted(
        |w| {
            w.tables[1].associations.clear();
            w.tables[2].associations.push(association("rtbassoc-stray", "subnet-private-1"));
        },
        |m| {
            m.expect_replace_route_table_association()
                .withf(|assoc, rt| assoc == "rtbassoc-stray" && rt == "rtb-private-1")
                .times(1)
                .returning(|_, _| Ok("b".into()));
        },
    )
    .await;
    assert_eq!(changes.len(), 1);
}

#[tokio::test(flavor = "current_thread")]
async fn dns_hostnames_off_is_the_one_fix() {
    // An existing VPC's attributes are read (once each) and only the one that is off is modified.
    let changes = apply_drifted(
        |w| {
            w.dns_hostnames = false;
            w.exact_reads = true;
        },
        |m| {
            m.expect_set_vpc_attribute()
                .withf(|vpc, attribute, value| vpc == "vpc-1" && *attribute == VpcAttribute::DnsHostnames && *value)
                .times(1)
                .returning(|_, _, _| Ok(()));
        },
    )
    .await;
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0].attributes[0].attribute, "enable_dns_hostnames");
}

#[tokio::test(flavor = "current_thread")]
async fn dns_support_off_is_turned_on_before_hostnames() {
    let order: Log<VpcAttribute> = Arc::default();
    let log = order.clone();
    let changes = apply_drifted(
        |w| (w.dns_support_off, w.dns_hostnames, w.exact_reads, w.zones_asked) = (true, false, true, Some(0)),
        |m| {
            m.expect_set_vpc_attribute().withf(|vpc, _, value| vpc == "vpc-1" && *value).times(2).returning(
                move |_, attribute, _| {
                    log.lock().unwrap().push(attribute);
                    Ok(())
                },
            );
        },
    )
    .await;
    assert_eq!(*order.lock().unwrap(), VpcAttribute::ALL);
    assert_eq!(changes.len(), 1, "{changes:#?}");
    assert_eq!(changes[0].attributes.len(), 2);
}

#[tokio::test(flavor = "current_thread")]
async fn detached_internet_gateway_is_attached() {
    let changes = apply_drifted(
        |w| w.igws[0].attached_vpcs.clear(),
        |m| {
            m.expect_attach_internet_gateway()
                .withf(|igw, vpc| igw == "igw-1" && vpc == "vpc-1")
                .times(1)
                .returning(|_, _| Ok(()));
        },
    )
    .await;
    assert_eq!(changes.len(), 1);
}

#[tokio::test(flavor = "current_thread")]
async fn failed_nat_is_not_found_and_gets_replaced_with_a_fresh_token() {
    let changes = apply_drifted(
        |w| {
            // A NAT gateway whose creation failed holds no address.
            w.nats[1].state = NatState::Failed;
            w.addresses[1].association_id = None;
        },
        |m| {
            let first_token =
                tap_core::naming::client_token(&["dev", "network/nat/2", "subnet-public-2", "eipalloc-2", "0"]);
            m.expect_create_nat_gateway()
                .withf(move |subnet, alloc, token, tags| {
                    subnet == "subnet-public-2"
                        && alloc == "eipalloc-2"
                        && token != first_token
                        && tag(tags, TAG_COMPONENT) == "network/nat/2"
                })
                .times(1)
                .returning(|_, _, _, _| Ok("nat-2b".into()));
            m.expect_replace_route()
                .withf(|rt, _, target| rt == "rtb-private-2" && *target == RouteTarget::NatGateway("nat-2b".into()))
                .times(1)
                .returning(|_, _, _| Ok(()));
        },
    )
    .await;
    let kinds: BTreeSet<(String, Action)> = changes.iter().map(|c| (c.resource.clone(), c.action)).collect();
    assert_eq!(
        kinds,
        BTreeSet::from([
            ("network/nat/2".into(), Action::Create),
            ("network/route-table/private-2".into(), Action::Update)
        ])
    );
}

#[tokio::test(flavor = "current_thread")]
async fn switching_to_single_nat_repoints_routes_then_removes_extra_nats_and_eips() {
    let mut mock = MockEc2Api::new();
    World::deployed(NatMode::OnePerAz).install_reads(&mut mock);
    // Once deleted, NAT gateways 2 and 3 read back as `deleted`.
    let deleted = Arc::new(Mutex::new(BTreeSet::<String>::new()));
    let gone = deleted.clone();
    mock.expect_nat_gateway().returning(move |id| {
        let state = if gone.lock().unwrap().contains(id) { NatState::Deleted } else { NatState::Available };
        Ok(Some(nat_in_state(id, state)))
    });
    let order: Log<String> = Arc::default();
    let log = order.clone();
    mock.expect_replace_route()
        .withf(|rt, _, target| {
            (rt == "rtb-private-2" || rt == "rtb-private-3") && *target == RouteTarget::NatGateway("nat-1".into())
        })
        .times(2)
        .returning(move |rt, _, _| {
            log.lock().unwrap().push(format!("route {rt}"));
            Ok(())
        });
    let (log, gone) = (order.clone(), deleted.clone());
    mock.expect_delete_nat_gateway().withf(|id| id == "nat-2" || id == "nat-3").times(2).returning(move |id| {
        log.lock().unwrap().push(format!("delete {id}"));
        gone.lock().unwrap().insert(id.to_owned());
        Ok(())
    });
    let log = order.clone();
    mock.expect_release_address().withf(|id| id == "eipalloc-2" || id == "eipalloc-3").times(2).returning(move |id| {
        log.lock().unwrap().push(format!("release {id}"));
        Ok(())
    });

    let changes = step(mock).apply(&ctx_with(NatMode::Single)).await.unwrap();

    let deletes: BTreeSet<String> =
        changes.iter().filter(|c| c.action == Action::Delete).map(|c| c.name.clone()).collect();
    assert_eq!(deletes, BTreeSet::from(["nat-2".into(), "nat-3".into(), "eipalloc-2".into(), "eipalloc-3".into()]));
    let order = order.lock().unwrap().clone();
    let last_route = order.iter().rposition(|e| e.starts_with("route")).unwrap();
    let first_delete = order.iter().position(|e| e.starts_with("delete")).unwrap();
    let last_delete = order.iter().rposition(|e| e.starts_with("delete")).unwrap();
    let first_release = order.iter().position(|e| e.starts_with("release")).unwrap();
    assert!(last_route < first_delete && last_delete < first_release, "routes move first, EIPs go last: {order:?}");
}

#[tokio::test(flavor = "current_thread")]
async fn throttling_surfaces_as_a_retryable_error() {
    let mut mock = MockEc2Api::new();
    mock.expect_find_vpcs().returning(|_| Err(AwsError::throttling()));
    // The other lookups run at the same time as DescribeVpcs.
    World::empty().install(&mut mock);
    forbid_mutations(&mut mock);
    let err = step(mock).apply(&ctx()).await.unwrap_err();
    assert!(err.is_retryable(), "{err}");
    assert!(err.to_string().contains("DescribeVpcs") && err.to_string().contains("network/vpc"), "{err}");

    let mut mock = World::empty().mock();
    mock.expect_create_vpc().returning(|_, _| Err(AwsError::throttling()));
    let err = step(mock).apply(&ctx()).await.unwrap_err();
    assert!(err.is_retryable() && err.to_string().contains("CreateVpc"), "{err}");
}

#[tokio::test(flavor = "current_thread")]
async fn plan_makes_no_mutating_call_and_reports_pending_ids() {
    let mock = World::empty().read_only();
    let ctx = ctx();
    let changes = step(mock).plan(&ctx).await.unwrap();
    assert_eq!(creates(&changes), expected_creates(3));
    assert_eq!(changes.len(), 18);
    let out: NetworkOutputs = ctx.get("test").unwrap();
    assert_eq!(out.vpc_id, PENDING);
    assert_eq!(out.public_subnets.len(), 3);
    assert!(out.public_subnets.iter().chain(&out.private_subnets).all(|s| s.id == PENDING));
    assert_eq!(out.private_subnets[1].az, "us-east-1b");

    // Drift is planned, not fixed.
    let mut world = World::deployed(NatMode::OnePerAz);
    world.tables[1].routes.clear();
    world.dns_hostnames = false;
    let mock = world.read_only();
    let changes = step(mock).plan(&ctx).await.unwrap();
    let updated: BTreeSet<String> = changes.iter().map(|c| c.resource.clone()).collect();
    assert_eq!(updated, BTreeSet::from(["network/vpc".into(), "network/route-table/private-1".into()]));
    assert!(changes.iter().all(|c| c.action == Action::Update));
}

#[tokio::test(flavor = "current_thread")]
async fn destroy_on_an_empty_environment_succeeds() {
    let mock = World::empty().read_only();
    let changes = step(mock).destroy(&ctx()).await.unwrap();
    assert!(changes.is_empty());
}

#[tokio::test(flavor = "current_thread")]
async fn destroy_removes_everything_in_order_and_retries_dependency_violations() {
    let world = World::deployed(NatMode::OnePerAz);
    let mut mock = MockEc2Api::new();
    world.install_reads(&mut mock);
    let order: Log<String> = Arc::default();
    let deleted = Arc::new(Mutex::new(BTreeSet::<String>::new()));

    let (log, gone) = (order.clone(), deleted.clone());
    mock.expect_delete_nat_gateway().times(3).returning(move |id| {
        log.lock().unwrap().push("nat".into());
        gone.lock().unwrap().insert(id.to_owned());
        Ok(())
    });
    let gone = deleted.clone();
    mock.expect_nat_gateway().returning(move |id| {
        let state = if gone.lock().unwrap().contains(id) { NatState::Deleted } else { NatState::Available };
        Ok(Some(nat_in_state(id, state)))
    });
    let log = order.clone();
    mock.expect_release_address().times(3).returning(move |_| {
        log.lock().unwrap().push("eip".into());
        Ok(())
    });
    mock.expect_disassociate_route_table().times(6).returning(|_| Ok(()));
    let log = order.clone();
    mock.expect_delete_route_table().times(4).returning(move |_| {
        log.lock().unwrap().push("rtb".into());
        Ok(())
    });
    let log = order.clone();
    mock.expect_detach_internet_gateway().withf(|igw, vpc| igw == "igw-1" && vpc == "vpc-1").times(1).returning(
        move |_, _| {
            log.lock().unwrap().push("detach".into());
            Ok(())
        },
    );
    mock.expect_delete_internet_gateway().times(1).returning(|_| Ok(()));
    // The first subnet delete meets an ENI still being released.
    let attempts = Arc::new(AtomicUsize::new(0));
    let (log, n) = (order.clone(), attempts.clone());
    mock.expect_delete_subnet().times(7).returning(move |_| {
        if n.fetch_add(1, Ordering::SeqCst) == 0 {
            return Err(AwsError::new("DependencyViolation", "The subnet has dependencies and cannot be deleted."));
        }
        log.lock().unwrap().push("subnet".into());
        Ok(())
    });
    let vpc_attempts = Arc::new(AtomicUsize::new(0));
    let (log, n) = (order.clone(), vpc_attempts.clone());
    mock.expect_delete_vpc().withf(|id| id == "vpc-1").times(3).returning(move |_| {
        if n.fetch_add(1, Ordering::SeqCst) < 2 {
            return Err(AwsError::new("DependencyViolation", "The vpc has dependencies and cannot be deleted."));
        }
        log.lock().unwrap().push("vpc".into());
        Ok(())
    });

    let changes = step(mock).destroy(&ctx()).await.unwrap();

    assert_eq!(changes.len(), 3 + 3 + 4 + 1 + 6 + 1, "{changes:#?}");
    assert!(changes.iter().all(|c| c.action == Action::Delete));
    let order = order.lock().unwrap().clone();
    let pos = |s: &str| order.iter().position(|e| e == s).unwrap();
    let last = |s: &str| order.iter().rposition(|e| e == s).unwrap();
    assert!(last("nat") < pos("eip"), "EIPs are released after the NATs are deleted: {order:?}");
    assert!(last("rtb") < pos("subnet") && last("eip") < pos("detach") && pos("detach") < pos("subnet"), "{order:?}");
    assert!(last("subnet") < pos("vpc"), "{order:?}");
}

#[tokio::test(flavor = "current_thread")]
async fn destroy_gives_up_on_a_lasting_dependency_violation_naming_the_resource() {
    let mut world = World::empty();
    world.vpcs = World::deployed(NatMode::OnePerAz).vpcs;
    let mut mock = world.mock();
    mock.expect_delete_vpc().returning(|_| Err(AwsError::new("DependencyViolation", "has dependencies")));
    let err = step(mock).destroy(&ctx()).await.unwrap_err();
    assert!(err.to_string().contains("DeleteVpc") && err.to_string().contains("network/vpc"), "{err}");
}

#[tokio::test(flavor = "current_thread")]
async fn destroy_treats_not_found_as_done() {
    let mut world = World::empty();
    world.subnets = World::deployed(NatMode::OnePerAz).subnets;
    let mut mock = world.mock();
    mock.expect_delete_subnet()
        .times(6)
        .returning(|id| Err(AwsError::new("InvalidSubnetID.NotFound", format!("{id} does not exist"))));
    let changes = step(mock).destroy(&ctx()).await.unwrap();
    assert!(changes.is_empty(), "nothing was deleted by this run: {changes:?}");
}

/// Collects the progress events a pass reports.
#[derive(Default)]
struct Events(Mutex<Vec<String>>);

impl tap_core::progress::ProgressSink for Events {
    fn event(&self, event: tap_core::progress::ProgressEvent<'_>) {
        self.0.lock().unwrap().push(event.to_string());
    }
}

impl Events {
    fn with(&self, prefix: &str) -> BTreeSet<String> {
        self.0.lock().unwrap().iter().filter(|e| e.starts_with(prefix)).cloned().collect()
    }
}

#[tokio::test(flavor = "current_thread")]
async fn progress_reports_every_resource_found_when_nothing_changes() {
    let mock = World::deployed(NatMode::OnePerAz).read_only();
    let events = Arc::new(Events::default());
    let ctx = Context::new(Config::default()).with_progress(events.clone());
    step(mock).apply(&ctx).await.unwrap();
    let found: BTreeSet<String> = expected_creates(3).into_iter().map(|r| format!("network: found {r}")).collect();
    assert_eq!(events.with("network: found"), found, "all 18 resources are reported found");
    assert!(events.with("network: +").is_empty());
}

#[tokio::test(flavor = "current_thread")]
async fn progress_reports_each_create_as_it_happens_and_the_nat_waits() {
    let mut mock = World::empty().mock();
    expect_full_create(&mut mock, 1);
    let events = Arc::new(Events::default());
    let ctx = ctx_with(NatMode::Single).with_progress(events.clone());
    let changes = step(mock).apply(&ctx).await.unwrap();
    let log = events.0.lock().unwrap().clone();
    for c in &changes {
        let working = format!("network: + {} …", c.resource);
        let done = format!("network: + {} ({})", c.resource, c.name);
        let (w, d) = (log.iter().position(|e| *e == working), log.iter().position(|e| *e == done));
        assert!(w.is_some() && d.is_some() && w < d, "{working} before {done}: {log:#?}");
    }
    assert_eq!(events.with("network: waiting for NAT gateway").len(), 1, "{log:#?}");
}

/// A create whose answer was lost (the SDK does not resend it) is looked up by its tags; when it
/// took effect it is adopted, never created a second time.
#[tokio::test(flavor = "current_thread")]
async fn a_lost_create_answer_is_adopted_not_repeated() {
    let mut mock = MockEc2Api::new();
    let vpcs: Log<ObservedVpc> = Arc::default();
    let seen = vpcs.clone();
    mock.expect_find_vpcs().returning(move |_| Ok(seen.lock().unwrap().clone()));
    // The adopted VPC was made by this pass: it is new, so its attributes are not read.
    mock.expect_vpc_attribute().never();
    World::empty().install(&mut mock);
    let made = vpcs.clone();
    mock.expect_create_vpc().times(1).returning(move |cidr, tags| {
        // EC2 made the VPC, then the connection dropped before its answer arrived.
        made.lock().unwrap().push(ObservedVpc { id: "vpc-1".into(), cidr: cidr.into(), tags: tags.to_vec() });
        Err(AwsError::no_answer("connection closed before message completed"))
    });
    expect_full_create_but_the_vpc(&mut mock, 3, Watch::default());
    let ctx = ctx();

    let changes = step(mock).apply(&ctx).await.unwrap();

    assert_eq!(vpcs.lock().unwrap().len(), 1, "exactly one VPC");
    assert_eq!(ctx.get::<NetworkOutputs>("test").unwrap().vpc_id, "vpc-1", "the lost VPC was adopted");
    assert_eq!(creates(&changes), expected_creates(3));
}

#[tokio::test(flavor = "current_thread")]
async fn destroy_starts_the_nat_gateways_at_once_and_the_rest_as_its_holders_go() {
    use tap_core::step::Gone;
    let world = World::deployed(NatMode::OnePerAz);
    let mut mock = MockEc2Api::new();
    world.install_reads(&mut mock);
    let order: Log<String> = Arc::default();
    let logged = |what: &'static str| {
        let log = order.clone();
        move || log.lock().unwrap().push(what.to_owned())
    };
    let nat = logged("nat");
    mock.expect_delete_nat_gateway().returning(move |_| {
        nat();
        Ok(())
    });
    mock.expect_nat_gateway().returning(|id| Ok(Some(nat_in_state(id, NatState::Deleted))));
    mock.expect_release_address().returning(|_| Ok(()));
    mock.expect_disassociate_route_table().returning(|_| Ok(()));
    mock.expect_delete_route_table().returning(|_| Ok(()));
    mock.expect_detach_internet_gateway().returning(|_, _| Ok(()));
    mock.expect_delete_internet_gateway().returning(|_| Ok(()));
    let subnet = logged("subnet");
    mock.expect_delete_subnet().returning(move |_| {
        subnet();
        Ok(())
    });
    let vpc = logged("vpc");
    mock.expect_delete_vpc().returning(move |_| {
        vpc();
        Ok(())
    });
    let ctx = Arc::new(ctx());
    ctx.expect_gone([Gone::EcsServices, Gone::LoadBalancer, Gone::SecurityGroups, Gone::Namespace]);
    let destroy = tokio::spawn({
        let ctx = ctx.clone();
        async move { step(mock).destroy(&ctx).await }
    });
    let settle = || async {
        for _ in 0..50 {
            tokio::task::yield_now().await;
        }
    };
    settle().await;
    assert_eq!(*order.lock().unwrap(), vec!["nat"; 3], "only the NAT gateways go before the services and the LB");
    ctx.give(Gone::EcsServices);
    ctx.give(Gone::LoadBalancer);
    settle().await;
    assert!(order.lock().unwrap().contains(&"subnet".to_owned()), "{order:?}");
    assert!(!order.lock().unwrap().contains(&"vpc".to_owned()), "the VPC waits for the groups and the namespace");
    ctx.give(Gone::SecurityGroups);
    ctx.give(Gone::Namespace);
    destroy.await.unwrap().unwrap();
    assert_eq!(order.lock().unwrap().last().map(String::as_str), Some("vpc"));
}

/// What a plan lists and what an apply does, over one world each: `(resource, action, attributes)`
/// in a fixed order (concurrent work records in the order it ends).
type Listed = Vec<(String, Action, Vec<(String, Option<String>, Option<String>)>)>;

fn listed(changes: &[Change]) -> Listed {
    let mut out: Listed = changes
        .iter()
        .map(|c| {
            let attrs = c.attributes.iter().map(|a| (a.attribute.clone(), a.old.clone(), a.new.clone())).collect();
            (c.resource.clone(), c.action, attrs)
        })
        .collect();
    out.sort_by_key(|c| (c.0.clone(), format!("{:?}", c.1)));
    out
}

/// Plans over `world` (no mutating call allowed), then applies over it with `expect` (the only
/// mutating calls allowed): the two change lists.
async fn plan_then_apply(world: World, expect: impl FnOnce(&mut MockEc2Api)) -> (Listed, Listed) {
    let mock = world.clone().read_only();
    let plan = step(mock).plan(&ctx()).await.unwrap();
    let mut mock = world.mock();
    expect(&mut mock);
    let apply = step(mock).apply(&ctx()).await.unwrap();
    (listed(&plan), listed(&apply))
}

/// Real drift of a deployed network — DNS hostnames turned off, a private table's default route
/// deleted, a public subnet's association removed, a subnet moved to another table, the internet
/// gateway detached, a NAT route pointing at another NAT — each planned then applied: what plan
/// lists is exactly what apply does, attribute by attribute, and apply makes only the calls for it.
#[tokio::test(flavor = "current_thread")]
async fn network_drift_is_planned_exactly_as_applied_attribute_by_attribute() {
    type Drift = Box<dyn FnOnce(&mut World)>;
    type Expect = Box<dyn FnOnce(&mut MockEc2Api)>;
    let cases: Vec<(&str, Drift, Expect, Listed)> = vec![
        (
            "DNS hostnames off",
            Box::new(|w| w.dns_hostnames = false),
            Box::new(|m| {
                m.expect_set_vpc_attribute()
                    .withf(|vpc, a, on| vpc == "vpc-1" && *a == VpcAttribute::DnsHostnames && *on)
                    .times(1)
                    .returning(|_, _, _| Ok(()));
            }),
            vec![(
                "network/vpc".into(),
                Action::Update,
                vec![("enable_dns_hostnames".into(), Some("false".into()), Some("true".into()))],
            )],
        ),
        (
            "a missing default route",
            Box::new(|w| w.tables[3].routes.retain(|r| r.destination != "0.0.0.0/0")),
            Box::new(|m| {
                m.expect_create_route()
                    .withf(|rt, d, t| {
                        rt == "rtb-private-3" && d == "0.0.0.0/0" && *t == RouteTarget::NatGateway("nat-3".into())
                    })
                    .times(1)
                    .returning(|_, _, _| Ok(()));
            }),
            vec![(
                "network/route-table/private-3".into(),
                Action::Update,
                vec![("route 0.0.0.0/0".into(), None, Some("nat-3".into()))],
            )],
        ),
        (
            "a missing association",
            Box::new(|w| w.tables[0].associations.retain(|a| a.subnet_id.as_deref() != Some("subnet-public-2"))),
            Box::new(|m| {
                m.expect_associate_route_table()
                    .withf(|rt, subnet| rt == "rtb-public" && subnet == "subnet-public-2")
                    .times(1)
                    .returning(|_, _| Ok("rtbassoc-new".into()));
            }),
            vec![(
                "network/route-table/public".into(),
                Action::Update,
                vec![("association".into(), None, Some("subnet-public-2".into()))],
            )],
        ),
        (
            "a subnet associated with another table",
            Box::new(|w| {
                w.tables[1].associations.clear();
                w.tables[0].associations.push(association("rtbassoc-stray", "subnet-private-1"));
            }),
            Box::new(|m| {
                m.expect_replace_route_table_association()
                    .withf(|a, rt| a == "rtbassoc-stray" && rt == "rtb-private-1")
                    .times(1)
                    .returning(|_, _| Ok("rtbassoc-moved".into()));
            }),
            vec![(
                "network/route-table/private-1".into(),
                Action::Update,
                vec![(
                    "association".into(),
                    Some("subnet-private-1 (with rtb-public)".into()),
                    Some("subnet-private-1".into()),
                )],
            )],
        ),
        (
            "the internet gateway detached",
            Box::new(|w| w.igws[0].attached_vpcs.clear()),
            Box::new(|m| {
                m.expect_attach_internet_gateway()
                    .withf(|igw, vpc| igw == "igw-1" && vpc == "vpc-1")
                    .times(1)
                    .returning(|_, _| Ok(()));
            }),
            vec![("network/igw".into(), Action::Update, vec![("attached_vpc".into(), None, Some("vpc-1".into()))])],
        ),
        (
            "a route to another NAT gateway",
            Box::new(|w| {
                let route = w.tables[2].routes.iter_mut().find(|r| r.destination == "0.0.0.0/0").unwrap();
                route.target = Some(RouteTarget::NatGateway("nat-1".into()));
            }),
            Box::new(|m| {
                m.expect_replace_route()
                    .withf(|rt, _, t| rt == "rtb-private-2" && *t == RouteTarget::NatGateway("nat-2".into()))
                    .times(1)
                    .returning(|_, _, _| Ok(()));
            }),
            vec![(
                "network/route-table/private-2".into(),
                Action::Update,
                vec![("route 0.0.0.0/0".into(), Some("nat-1".into()), Some("nat-2".into()))],
            )],
        ),
    ];
    for (what, drift, expect, want) in cases {
        let mut world = World::deployed(NatMode::OnePerAz);
        drift(&mut world);
        let (plan, apply) = plan_then_apply(world, expect).await;
        assert_eq!(plan, apply, "{what}: plan lists what apply does");
        assert_eq!(apply, want, "{what}");
    }
}

/// From nothing, plan lists every create with the attributes apply sets by calls after it (a new
/// VPC's DNS hostnames, the gateway's attachment, each table's route and associations): the same
/// resources and attribute names; plan's values name what is still to be created as pending.
#[tokio::test(flavor = "current_thread")]
async fn from_nothing_plan_lists_each_creates_attributes_as_apply_sets_them() {
    let mock = World::empty().read_only();
    let plan = listed(&step(mock).plan(&ctx()).await.unwrap());
    let mut mock = World::empty().mock();
    expect_full_create(&mut mock, 3);
    let apply = listed(&step(mock).apply(&ctx()).await.unwrap());
    let names = |l: &Listed| -> Vec<(String, Vec<String>)> {
        l.iter().map(|(r, _, attrs)| (r.clone(), attrs.iter().map(|a| a.0.clone()).collect())).collect()
    };
    assert_eq!(names(&plan), names(&apply));
    let attrs = |l: &Listed, r: &str| l.iter().find(|c| c.0 == r).unwrap().2.clone();
    assert_eq!(
        attrs(&apply, "network/vpc"),
        [
            ("enable_dns_support".to_owned(), None, Some("true".to_owned())),
            ("enable_dns_hostnames".to_owned(), None, Some("true".to_owned()))
        ]
    );
    assert_eq!(attrs(&apply, "network/igw"), [("attached_vpc".to_owned(), None, Some("vpc-1".to_owned()))]);
    assert_eq!(attrs(&apply, "network/route-table/public").len(), 4, "the route and three associations");
    assert_eq!(attrs(&plan, "network/igw"), [("attached_vpc".to_owned(), None, Some(PENDING.to_owned()))]);
}

/// A destroy interrupted after the NAT gateways' deletion started leaves their Elastic IPs
/// associated until AWS has deleted them. The next deploy waits for each address to be freed
/// (polling DescribeAddresses, saying why) and only then creates the NAT gateway again, instead of
/// a CreateNatGateway that fails with `Resource.AlreadyAssociated`; an address never freed ends the
/// wait, bounded, with an error naming it.
#[tokio::test(flavor = "current_thread")]
async fn a_nat_gateways_address_still_held_by_a_deleting_one_is_waited_for_before_the_create() {
    for freed_after in [Some(3usize), None] {
        let mut world = World::deployed(NatMode::OnePerAz);
        for nat in &mut world.nats {
            nat.state = NatState::Deleting;
        }
        let held = world.addresses.clone();
        let polls = Arc::new(AtomicUsize::new(0));
        let mut m2 = MockEc2Api::new();
        // Every read but the addresses' from the world; the addresses stay associated until the
        // poll `freed_after` (counting the deploy's first look).
        let p = polls.clone();
        m2.expect_find_addresses().returning(move |_| {
            let n = p.fetch_add(1, Ordering::SeqCst) + 1;
            let free = freed_after.is_some_and(|after| n >= after);
            Ok(held
                .iter()
                .cloned()
                .map(|mut a| {
                    if free {
                        a.association_id = None;
                    }
                    a
                })
                .collect())
        });
        world.install(&mut m2);
        let p = polls.clone();
        let created = Arc::new(AtomicUsize::new(0));
        let c = created.clone();
        m2.expect_create_nat_gateway().returning(move |_, _, _, tags| {
            assert!(p.load(Ordering::SeqCst) >= 3, "created only once the address was free");
            c.fetch_add(1, Ordering::SeqCst);
            Ok(format!("nat-{}b", short(tags)))
        });
        m2.expect_replace_route().returning(|_, _, _| Ok(()));
        let events = Arc::new(Events::default());
        let ctx = Context::new(Config::default()).with_progress(events.clone());
        let result = step(m2).apply(&ctx).await;
        let waits = events.with("network: waiting for Elastic IP");
        match freed_after {
            Some(_) => {
                let changes = result.unwrap();
                assert_eq!(created.load(Ordering::SeqCst), 3);
                let nats: Vec<&Change> = changes.iter().filter(|c| c.resource.starts_with("network/nat/")).collect();
                assert_eq!(nats.len(), 3, "{changes:?}");
                assert_eq!(waits.len(), 3, "one wait per address, saying why: {waits:?}");
                assert!(
                    waits.iter().all(|w| w.contains("still associated") && w.contains("being deleted")),
                    "{waits:?}"
                );
            }
            None => {
                let err = result.unwrap_err().to_string();
                assert!(
                    err.contains("timed out") && err.contains("Elastic IP eipalloc-") && err.contains("freed"),
                    "{err}"
                );
                assert_eq!(created.load(Ordering::SeqCst), 0, "no NAT gateway created over a held address");
            }
        }
    }
}
