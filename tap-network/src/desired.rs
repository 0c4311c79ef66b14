//! The desired layout of the network, derived from the config and the region's zones: which
//! subnets, NAT gateways and route tables exist, with their logical ids, names and settings.

use tap_core::config::{NatMode, NetworkSettings};
use tap_core::naming::Names;

/// Logical id of the VPC.
pub const VPC: &str = "network/vpc";
/// Logical id of the internet gateway.
pub const INTERNET_GATEWAY: &str = "network/igw";
/// Prefix of the NAT gateways' logical ids (`network/nat/{n}`).
pub const NAT_PREFIX: &str = "network/nat/";
/// Prefix of the Elastic IPs' logical ids (`network/eip/{n}`).
pub const EIP_PREFIX: &str = "network/eip/";
/// The destination of the default routes.
pub const DEFAULT_ROUTE: &str = "0.0.0.0/0";

/// Whether a subnet (and its route table) faces the internet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    /// Routes `0.0.0.0/0` to the internet gateway; holds the NAT gateways and the load balancer.
    Public,
    /// Routes `0.0.0.0/0` to a NAT gateway; holds the services.
    Private,
}

impl Tier {
    /// `public` or `private`, as used in logical ids and names.
    pub fn label(self) -> &'static str {
        match self {
            Tier::Public => "public",
            Tier::Private => "private",
        }
    }
}

/// One subnet to have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubnetSpec {
    /// Public or private.
    pub tier: Tier,
    /// Position of its AZ (0-based).
    pub index: usize,
    /// Logical id, e.g. `network/subnet/public-1`.
    pub component: String,
    /// Name tag, e.g. `tap-public-1-dev`.
    pub name: String,
    /// CIDR block.
    pub cidr: String,
    /// Availability zone.
    pub az: String,
}

/// One NAT gateway to have, with its Elastic IP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatSpec {
    /// Position of its AZ (0-based); it lives in that AZ's public subnet.
    pub index: usize,
    /// Logical id of the NAT gateway, e.g. `network/nat/1`.
    pub component: String,
    /// Name tag of the NAT gateway.
    pub name: String,
    /// Logical id of its Elastic IP, e.g. `network/eip/1`.
    pub eip_component: String,
    /// Name tag of its Elastic IP.
    pub eip_name: String,
}

/// Where a route table's default route goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DefaultRoute {
    /// The internet gateway.
    InternetGateway,
    /// The NAT gateway at this position of the NAT specs.
    Nat(usize),
}

/// One route table to have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteTableSpec {
    /// Logical id, e.g. `network/route-table/private-1`.
    pub component: String,
    /// Name tag.
    pub name: String,
    /// Target of `0.0.0.0/0`.
    pub default_route: DefaultRoute,
    /// Which subnets it is associated with: tier and AZ positions.
    pub tier: Tier,
    /// AZ positions of the associated subnets of `tier`.
    pub subnets: Vec<usize>,
}

/// The whole desired layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// Public subnets then private subnets, each in AZ order.
    pub subnets: Vec<SubnetSpec>,
    /// NAT gateways (one per AZ, or one in the first AZ).
    pub nats: Vec<NatSpec>,
    /// The public route table, then one private route table per AZ.
    pub route_tables: Vec<RouteTableSpec>,
}

impl Layout {
    /// The layout for `settings` over `azs` (exactly `settings.az_count` zone names).
    pub fn new(settings: &NetworkSettings, names: &Names, azs: Vec<String>) -> Layout {
        let subnets = [(Tier::Public, &settings.public_subnet_cidrs), (Tier::Private, &settings.private_subnet_cidrs)]
            .into_iter()
            .flat_map(|(tier, cidrs)| {
                cidrs.iter().zip(&azs).enumerate().map(move |(i, (cidr, az))| subnet_spec(names, tier, i, cidr, az))
            })
            .collect();
        let nat_count = match settings.nat_gateways {
            NatMode::OnePerAz => azs.len(),
            NatMode::Single => 1.min(azs.len()),
        };
        let nats = (0..nat_count).map(|i| nat_spec(names, i)).collect();
        let mut route_tables = vec![RouteTableSpec {
            component: "network/route-table/public".into(),
            name: names.name("public-rt"),
            default_route: DefaultRoute::InternetGateway,
            tier: Tier::Public,
            subnets: (0..azs.len()).collect(),
        }];
        route_tables.extend((0..azs.len()).map(|i| RouteTableSpec {
            component: format!("network/route-table/private-{}", i + 1),
            name: names.name(&format!("private-rt-{}", i + 1)),
            default_route: DefaultRoute::Nat(i.min(nat_count.saturating_sub(1))),
            tier: Tier::Private,
            subnets: vec![i],
        }));
        Layout { subnets, nats, route_tables }
    }
}

fn subnet_spec(names: &Names, tier: Tier, index: usize, cidr: &str, az: &str) -> SubnetSpec {
    let base = format!("{}-{}", tier.label(), index + 1);
    SubnetSpec {
        tier,
        index,
        component: format!("network/subnet/{base}"),
        name: names.name(&base),
        cidr: cidr.into(),
        az: az.into(),
    }
}

fn nat_spec(names: &Names, index: usize) -> NatSpec {
    let n = index + 1;
    NatSpec {
        index,
        component: format!("{NAT_PREFIX}{n}"),
        name: names.name(&format!("nat-{n}")),
        eip_component: format!("{EIP_PREFIX}{n}"),
        eip_name: names.name(&format!("eip-{n}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tap_core::Config;

    fn azs() -> Vec<String> {
        vec!["us-east-1a".into(), "us-east-1b".into(), "us-east-1c".into()]
    }

    #[test]
    fn default_layout_is_the_spec() {
        let config = Config::default();
        let layout = Layout::new(&config.network, &Names::new(&config), azs());
        let cidrs: Vec<(&str, &str, &str)> =
            layout.subnets.iter().map(|s| (s.component.as_str(), s.cidr.as_str(), s.az.as_str())).collect();
        assert_eq!(
            cidrs,
            vec![
                ("network/subnet/public-1", "10.0.0.0/24", "us-east-1a"),
                ("network/subnet/public-2", "10.0.1.0/24", "us-east-1b"),
                ("network/subnet/public-3", "10.0.2.0/24", "us-east-1c"),
                ("network/subnet/private-1", "10.0.10.0/24", "us-east-1a"),
                ("network/subnet/private-2", "10.0.11.0/24", "us-east-1b"),
                ("network/subnet/private-3", "10.0.12.0/24", "us-east-1c"),
            ]
        );
        assert_eq!(layout.subnets[0].name, "tap-public-1-dev");
        assert_eq!(layout.nats.len(), 3);
        assert_eq!(layout.nats[2].eip_component, "network/eip/3");
        let routes: Vec<DefaultRoute> = layout.route_tables.iter().map(|r| r.default_route).collect();
        assert_eq!(
            routes,
            vec![DefaultRoute::InternetGateway, DefaultRoute::Nat(0), DefaultRoute::Nat(1), DefaultRoute::Nat(2)]
        );
        assert_eq!(layout.route_tables[0].subnets, vec![0, 1, 2]);
    }

    #[test]
    fn single_nat_layout_routes_every_private_table_through_it() {
        let mut config = Config::default();
        config.network.nat_gateways = NatMode::Single;
        let layout = Layout::new(&config.network, &Names::new(&config), azs());
        assert_eq!(layout.nats.len(), 1);
        assert!(layout.route_tables[1..].iter().all(|r| r.default_route == DefaultRoute::Nat(0)));
    }
}
