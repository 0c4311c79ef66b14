//! End-to-end tests of the network step: `tap` against moto_server, read back with the EC2 SDK.
//!
//! Deploy builds the VPC (CIDR, DNS attributes), six subnets over three AZs, the internet gateway,
//! one EIP + NAT gateway per AZ and the route tables; a second deploy makes no mutating call; plan's
//! detailed exit code tells whether anything is to do; deleted or redirected routes are repaired;
//! destroy leaves nothing of the environment; and two environments side by side stay apart.
//! Other registered steps run too (that is expected); the assertions look at EC2 network resources.

use std::collections::{BTreeMap, BTreeSet};

use aws_sdk_ec2::types::{Filter, NatGatewayState, RouteTable, Tag, VpcAttributeName};
use aws_sdk_ec2::Client;
use serde_json::Value;
use tests::{tap_json, TestEnv};

const PUBLIC: [&str; 3] = ["10.0.0.0/24", "10.0.1.0/24", "10.0.2.0/24"];
const PRIVATE: [&str; 3] = ["10.0.10.0/24", "10.0.11.0/24", "10.0.12.0/24"];

/// (resource, action) of the network step's changes.
fn network_changes(doc: &Value) -> BTreeSet<(String, String)> {
    tests::changes_of(doc, "network").into_iter().collect()
}

fn tag<'a>(tags: &'a [Tag], key: &str) -> Option<&'a str> {
    tags.iter().find(|t| t.key() == Some(key)).and_then(|t| t.value())
}

fn of_env(tags: &[Tag], suffix: &str) -> bool {
    tag(tags, "Environment") == Some(suffix)
}

fn env_filter(suffix: &str) -> Filter {
    Filter::builder().name("tag:Environment").values(suffix).build()
}

/// What EC2 holds for one environment (checked client-side against the tags too).
#[derive(Debug)]
struct Network {
    vpcs: Vec<aws_sdk_ec2::types::Vpc>,
    subnets: Vec<aws_sdk_ec2::types::Subnet>,
    igws: Vec<aws_sdk_ec2::types::InternetGateway>,
    nats: Vec<aws_sdk_ec2::types::NatGateway>,
    addresses: Vec<aws_sdk_ec2::types::Address>,
    tables: Vec<RouteTable>,
}

impl Network {
    async fn read(ec2: &Client, suffix: &str) -> Network {
        let vpcs = ec2.describe_vpcs().filters(env_filter(suffix)).send().await.unwrap().vpcs().to_vec();
        let subnets = ec2.describe_subnets().filters(env_filter(suffix)).send().await.unwrap().subnets().to_vec();
        let igws = ec2
            .describe_internet_gateways()
            .filters(env_filter(suffix))
            .send()
            .await
            .unwrap()
            .internet_gateways()
            .to_vec();
        let nats = ec2.describe_nat_gateways().filter(env_filter(suffix)).send().await.unwrap().nat_gateways().to_vec();
        let addresses = ec2.describe_addresses().filters(env_filter(suffix)).send().await.unwrap().addresses().to_vec();
        let tables =
            ec2.describe_route_tables().filters(env_filter(suffix)).send().await.unwrap().route_tables().to_vec();
        Network {
            vpcs: vpcs.into_iter().filter(|v| of_env(v.tags(), suffix)).collect(),
            subnets: subnets.into_iter().filter(|s| of_env(s.tags(), suffix)).collect(),
            igws: igws.into_iter().filter(|g| of_env(g.tags(), suffix)).collect(),
            nats: nats
                .into_iter()
                .filter(|n| {
                    of_env(n.tags(), suffix)
                        && !matches!(n.state(), Some(NatGatewayState::Deleted | NatGatewayState::Failed))
                })
                .collect(),
            addresses: addresses.into_iter().filter(|a| of_env(a.tags(), suffix)).collect(),
            tables: tables.into_iter().filter(|t| of_env(t.tags(), suffix)).collect(),
        }
    }

    fn is_empty(&self) -> bool {
        self.vpcs.is_empty()
            && self.subnets.is_empty()
            && self.igws.is_empty()
            && self.nats.is_empty()
            && self.addresses.is_empty()
            && self.tables.is_empty()
    }

    fn vpc_id(&self) -> String {
        assert_eq!(self.vpcs.len(), 1, "exactly one VPC: {:?}", self.vpcs);
        self.vpcs[0].vpc_id().unwrap().to_owned()
    }

    /// The route table associated with `subnet_id`.
    fn table_of(&self, subnet_id: &str) -> &RouteTable {
        let found: Vec<&RouteTable> =
            self.tables.iter().filter(|t| t.associations().iter().any(|a| a.subnet_id() == Some(subnet_id))).collect();
        assert_eq!(found.len(), 1, "subnet {subnet_id} has exactly one route table association");
        found[0]
    }

    fn component_id<'a>(&'a self, component: &str) -> &'a str {
        self.tables
            .iter()
            .find(|t| tag(t.tags(), "tap:component") == Some(component))
            .and_then(|t| t.route_table_id())
            .unwrap()
    }
}

/// The `0.0.0.0/0` route's target: (gateway id, NAT gateway id).
fn default_route(table: &RouteTable) -> (Option<String>, Option<String>) {
    table
        .routes()
        .iter()
        .find(|r| r.destination_cidr_block() == Some("0.0.0.0/0"))
        .map(|r| (r.gateway_id().map(str::to_owned), r.nat_gateway_id().map(str::to_owned)))
        .unwrap_or_default()
}

/// Checks everything SPEC.md §1 says about the network of `suffix`.
async fn assert_network_is_the_spec(ec2: &Client, suffix: &str) -> Network {
    let net = Network::read(ec2, suffix).await;
    let vpc_id = net.vpc_id();
    assert_eq!(net.vpcs[0].cidr_block(), Some("10.0.0.0/16"));
    for (attribute, name) in
        [(VpcAttributeName::EnableDnsSupport, "support"), (VpcAttributeName::EnableDnsHostnames, "hostnames")]
    {
        let out = ec2.describe_vpc_attribute().vpc_id(&vpc_id).attribute(attribute).send().await.unwrap();
        let value = out.enable_dns_support().or(out.enable_dns_hostnames()).and_then(|v| v.value());
        assert_eq!(value, Some(true), "DNS {name} is on");
    }

    assert_eq!(net.subnets.len(), 6, "{:?}", net.subnets);
    assert!(net.subnets.iter().all(|s| s.vpc_id() == Some(vpc_id.as_str())));
    let by_cidr: BTreeMap<&str, &aws_sdk_ec2::types::Subnet> =
        net.subnets.iter().map(|s| (s.cidr_block().unwrap(), s)).collect();
    let cidrs: BTreeSet<&str> = by_cidr.keys().copied().collect();
    assert_eq!(cidrs, PUBLIC.iter().chain(&PRIVATE).copied().collect());
    let az = |cidr: &str| by_cidr[cidr].availability_zone().unwrap().to_owned();
    let public_azs: BTreeSet<String> = PUBLIC.iter().map(|c| az(c)).collect();
    assert_eq!(public_azs.len(), 3, "public subnets spread over 3 AZs");
    for (public, private) in PUBLIC.iter().zip(PRIVATE) {
        assert_eq!(az(public), az(private), "one public and one private subnet per AZ");
    }
    let public_ids: BTreeMap<String, String> =
        PUBLIC.iter().map(|c| (by_cidr[c].subnet_id().unwrap().to_owned(), az(c))).collect();

    assert_eq!(net.igws.len(), 1);
    let igw_id = net.igws[0].internet_gateway_id().unwrap().to_owned();
    let attached: Vec<&str> = net.igws[0].attachments().iter().filter_map(|a| a.vpc_id()).collect();
    assert_eq!(attached, vec![vpc_id.as_str()], "internet gateway attached to the VPC");

    assert_eq!(net.addresses.len(), 3, "3 Elastic IPs");
    assert_eq!(net.nats.len(), 3, "3 NAT gateways: {:?}", net.nats);
    let mut nat_by_az = BTreeMap::new();
    for nat in &net.nats {
        assert_eq!(nat.state(), Some(&NatGatewayState::Available));
        let subnet = nat.subnet_id().unwrap();
        let az =
            public_ids.get(subnet).unwrap_or_else(|| panic!("NAT {:?} is in a public subnet", nat.nat_gateway_id()));
        assert!(nat_by_az.insert(az.clone(), nat.nat_gateway_id().unwrap().to_owned()).is_none(), "one NAT per AZ");
        let allocation = nat.nat_gateway_addresses().first().and_then(|a| a.allocation_id()).unwrap();
        assert!(
            net.addresses.iter().any(|a| a.allocation_id() == Some(allocation)),
            "NAT uses one of the environment's EIPs"
        );
    }

    assert_eq!(net.tables.len(), 4, "1 public + 3 private route tables");
    for cidr in PUBLIC {
        let table = net.table_of(by_cidr[cidr].subnet_id().unwrap());
        assert_eq!(
            default_route(table),
            (Some(igw_id.clone()), None),
            "public subnet {cidr} routes 0.0.0.0/0 to the IGW"
        );
    }
    let mut private_tables = BTreeSet::new();
    for cidr in PRIVATE {
        let table = net.table_of(by_cidr[cidr].subnet_id().unwrap());
        private_tables.insert(table.route_table_id().unwrap().to_owned());
        assert_eq!(
            default_route(table),
            (None, Some(nat_by_az[&az(cidr)].clone())),
            "private subnet {cidr} routes 0.0.0.0/0 to its AZ's NAT"
        );
    }
    assert_eq!(private_tables.len(), 3, "one private route table per AZ");
    net
}

#[tokio::test]
async fn network_deploy_builds_the_spec_is_idempotent_repairs_routes_and_destroys() {
    let env = TestEnv::new("net-e2e");
    let ec2 = env.clients().await.ec2;

    let plan = tap_json(&env, &["plan", "--detailed-exitcode"], 2);
    let planned = network_changes(&plan);
    assert_eq!(planned.len(), 18, "VPC, 6 subnets, IGW, 3 EIPs, 3 NATs, 4 route tables: {planned:?}");
    assert!(planned.iter().all(|(_, action)| action == "create"));
    assert!(Network::read(&ec2, &env.suffix).await.is_empty(), "plan creates nothing");

    let first = tap_json(&env, &["deploy", "--no-wait"], 0);
    assert_eq!(network_changes(&first), planned, "deploy does what plan showed");
    let net = assert_network_is_the_spec(&ec2, &env.suffix).await;

    let second = tap_json(&env, &["deploy", "--no-wait"], 0);
    assert!(network_changes(&second).is_empty());
    tap_json(&env, &["plan", "--detailed-exitcode"], 0);

    // Drift: one private route deleted, another pointed at the wrong NAT.
    let (rt1, rt2) =
        (net.component_id("network/route-table/private-1"), net.component_id("network/route-table/private-2"));
    let nat_of_rt1 = default_route(net.tables.iter().find(|t| t.route_table_id() == Some(rt1)).unwrap()).1.unwrap();
    ec2.delete_route().route_table_id(rt1).destination_cidr_block("0.0.0.0/0").send().await.unwrap();
    ec2.replace_route()
        .route_table_id(rt2)
        .destination_cidr_block("0.0.0.0/0")
        .nat_gateway_id(&nat_of_rt1)
        .send()
        .await
        .unwrap();
    let drift = tap_json(&env, &["plan", "--detailed-exitcode"], 2);
    let expected: BTreeSet<(String, String)> =
        [("network/route-table/private-1", "update"), ("network/route-table/private-2", "update")]
            .iter()
            .map(|(r, a)| (r.to_string(), a.to_string()))
            .collect();
    assert_eq!(network_changes(&drift), expected);
    let repair = tap_json(&env, &["deploy", "--no-wait"], 0);
    assert_eq!(network_changes(&repair), expected);
    assert_network_is_the_spec(&ec2, &env.suffix).await;

    let destroyed = tap_json(&env, &["destroy", "--yes"], 0);
    assert!(network_changes(&destroyed).iter().all(|(_, action)| action == "delete"));
    let left = Network::read(&ec2, &env.suffix).await;
    assert!(left.is_empty(), "destroy leaves nothing of the environment: {left:#?}");
    tap_json(&env, &["destroy", "--yes"], 0);

    // The call counts, checked last so that a broken counter does not hide the checks above.
    assert!(
        first["calls"]["total"].as_u64().unwrap_or(0) > 0,
        "the call counter recorded no call of the first deploy: {}",
        first["calls"]
    );
    assert_eq!(
        second["calls"]["mutating"],
        0,
        "second deploy makes no mutating call: {:?}",
        tests::mutating_calls(&second)
    );
    let repaired: BTreeMap<String, u64> =
        tests::mutating_calls(&repair).into_iter().filter(|(op, _)| op.starts_with("EC2:")).collect();
    assert_eq!(
        repaired,
        BTreeMap::from([("EC2:CreateRoute".to_owned(), 1), ("EC2:ReplaceRoute".to_owned(), 1)]),
        "the drift is repaired with exactly one CreateRoute and one ReplaceRoute"
    );
}

#[tokio::test]
async fn two_environments_side_by_side_do_not_touch_each_other() {
    let one = TestEnv::new("net-one");
    let other = one.sibling("net-other");
    let ec2 = one.clients().await.ec2;

    std::thread::scope(|s| {
        let a = s.spawn(|| tap_json(&one, &["deploy", "--no-wait"], 0));
        let b = s.spawn(|| tap_json(&other, &["deploy", "--no-wait"], 0));
        a.join().unwrap();
        b.join().unwrap();
    });
    let net_one = assert_network_is_the_spec(&ec2, &one.suffix).await;
    let net_other = assert_network_is_the_spec(&ec2, &other.suffix).await;
    assert_ne!(net_one.vpc_id(), net_other.vpc_id());

    let again = tap_json(&other, &["deploy", "--no-wait"], 0);
    assert!(network_changes(&again).is_empty(), "the other environment's deploy changes nothing of its network");

    tap_json(&one, &["destroy", "--yes"], 0);
    assert!(Network::read(&ec2, &one.suffix).await.is_empty());
    let still = assert_network_is_the_spec(&ec2, &other.suffix).await;
    assert_eq!(still.vpc_id(), net_other.vpc_id(), "destroying one environment leaves the other's VPC");
    tap_json(&other, &["plan", "--detailed-exitcode"], 0);

    tap_json(&other, &["destroy", "--yes"], 0);
    assert!(Network::read(&ec2, &other.suffix).await.is_empty());
}
