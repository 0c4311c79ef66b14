//! The network's settings (`[network]`): the VPC's block, the subnets and the NAT layout.

use super::*;

/// How many NAT gateways the private subnets route through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NatMode {
    /// One NAT gateway per availability zone (no cross-AZ single point of failure).
    OnePerAz,
    /// One NAT gateway shared by every private subnet (cheaper, for non-production).
    Single,
}

/// VPC layout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetworkSettings {
    /// The VPC's CIDR block.
    pub vpc_cidr: String,
    /// How many availability zones (the first ones available) to spread over.
    pub az_count: usize,
    /// One public subnet CIDR per AZ.
    pub public_subnet_cidrs: Vec<String>,
    /// One private subnet CIDR per AZ.
    pub private_subnet_cidrs: Vec<String>,
    /// NAT gateway layout.
    pub nat_gateways: NatMode,
}

impl Default for NetworkSettings {
    fn default() -> Self {
        NetworkSettings {
            vpc_cidr: "10.0.0.0/16".into(),
            az_count: 3,
            public_subnet_cidrs: vec!["10.0.0.0/24".into(), "10.0.1.0/24".into(), "10.0.2.0/24".into()],
            private_subnet_cidrs: vec!["10.0.10.0/24".into(), "10.0.11.0/24".into(), "10.0.12.0/24".into()],
            nat_gateways: NatMode::OnePerAz,
        }
    }
}

fn parse_cidr(p: &mut Vec<ConfigError>, field: &str, value: &str) -> Option<Ipv4Net> {
    let Ok(net) = value.parse::<Ipv4Net>() else {
        p.push(invalid(field, value, "must be an IPv4 CIDR block like 10.0.0.0/16"));
        return None;
    };
    if net.trunc() != net {
        p.push(invalid(field, value, format!("has host bits set; the block is {}", net.trunc())));
        return None;
    }
    Some(net)
}

impl Config {
    pub(super) fn validate_network(&self, p: &mut Vec<ConfigError>) {
        let n = &self.network;
        let vpc = parse_cidr(p, "network.vpc_cidr", &n.vpc_cidr);
        if let Some(vpc) = vpc {
            if !(16..=28).contains(&vpc.prefix_len()) {
                p.push(invalid("network.vpc_cidr", &n.vpc_cidr, "a VPC block must be between /16 and /28"));
            }
        }
        p.extend(between("network.az_count", n.az_count, 1..=6, ""));
        let mut seen: Vec<(String, Ipv4Net)> = Vec::new();
        for (list_name, list) in
            [("public_subnet_cidrs", &n.public_subnet_cidrs), ("private_subnet_cidrs", &n.private_subnet_cidrs)]
        {
            if list.len() != n.az_count {
                p.push(invalid(
                    format!("network.{list_name}"),
                    format!("{list:?}"),
                    format!("needs exactly one CIDR per availability zone (az_count = {})", n.az_count),
                ));
            }
            for (i, cidr) in list.iter().enumerate() {
                let field = format!("network.{list_name}[{i}]");
                let Some(net) = parse_cidr(p, &field, cidr) else { continue };
                if let Some(vpc) = vpc {
                    if !vpc.contains(&net) {
                        p.push(invalid(&field, cidr, format!("subnet is outside the VPC {}", n.vpc_cidr)));
                    }
                }
                if !(16..=28).contains(&net.prefix_len()) {
                    p.push(invalid(&field, cidr, "a subnet block must be between /16 and /28"));
                }
                if let Some((other, _)) = seen.iter().find(|(_, o)| o.contains(&net) || net.contains(o)) {
                    p.push(invalid(&field, cidr, format!("overlaps {other}")));
                }
                seen.push((format!("{field} ({cidr})"), net));
            }
        }
    }
}
