//! A security group rule in canonical form ([`Rule`]: protocol, ports, one peer), as the kind
//! compares it and plan shows it.

use std::fmt;

/// Where traffic of a rule comes from (ingress) or goes to (egress).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RuleSource {
    /// An IPv4 CIDR block.
    Cidr(String),
    /// An IPv6 CIDR block.
    Ipv6Cidr(String),
    /// Another security group, by id.
    Group(String),
    /// A managed prefix list, by id.
    PrefixList(String),
}

/// One security group rule: protocol, port range and one source.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Rule {
    /// `tcp`, `udp`, `icmp`, … or `-1` for all traffic.
    pub protocol: String,
    /// First port (`None` for all traffic).
    pub from_port: Option<i32>,
    /// Last port (`None` for all traffic).
    pub to_port: Option<i32>,
    /// The peer.
    pub source: RuleSource,
}

impl Rule {
    /// TCP on one port from `source`.
    pub fn tcp(port: u16, source: RuleSource) -> Self {
        Rule { protocol: "tcp".into(), from_port: Some(port.into()), to_port: Some(port.into()), source }
    }

    /// All traffic to or from `source`.
    pub fn all(source: RuleSource) -> Self {
        Rule { protocol: "-1".into(), from_port: None, to_port: None, source }
    }

    /// A rule as EC2 describes it, in canonical form (protocol names, no ports for all traffic).
    pub fn normalized(protocol: &str, from_port: Option<i32>, to_port: Option<i32>, source: RuleSource) -> Self {
        let protocol = match protocol.to_ascii_lowercase().as_str() {
            "6" => "tcp".to_string(),
            "17" => "udp".to_string(),
            "1" => "icmp".to_string(),
            "all" => "-1".to_string(),
            p => p.to_string(),
        };
        if protocol == "-1" {
            Rule { protocol, from_port: None, to_port: None, source }
        } else {
            Rule { protocol, from_port, to_port, source }
        }
    }

    /// Whether its peer is another security group (what holds that group).
    pub fn references_group(&self) -> bool {
        matches!(self.source, RuleSource::Group(_))
    }
}

impl Rule {
    /// `tcp 80`, `tcp 1024-2048`, `all traffic`.
    pub fn ports(&self) -> String {
        match (self.from_port, self.to_port) {
            _ if self.protocol == "-1" => "all traffic".to_string(),
            (Some(a), Some(b)) if a == b => format!("{} {a}", self.protocol),
            (Some(a), Some(b)) => format!("{} {a}-{b}", self.protocol),
            _ => self.protocol.clone(),
        }
    }

    /// The CIDR, group id or prefix list id of the peer.
    pub fn peer(&self) -> &str {
        match &self.source {
            RuleSource::Cidr(c) | RuleSource::Ipv6Cidr(c) => c,
            RuleSource::Group(g) => g,
            RuleSource::PrefixList(p) => p,
        }
    }

    pub(crate) fn ingress_label(&self) -> String {
        format!("{} from {}", self.ports(), self.peer())
    }

    pub(crate) fn egress_label(&self) -> String {
        format!("{} to {}", self.ports(), self.peer())
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.ports(), self.peer())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_are_normalized_and_shown() {
        assert_eq!(
            Rule::normalized("-1", Some(-1), Some(-1), RuleSource::Cidr("0.0.0.0/0".into())),
            Rule::all(RuleSource::Cidr("0.0.0.0/0".into()))
        );
        assert_eq!(
            Rule::normalized("6", Some(22), Some(22), RuleSource::Cidr("0.0.0.0/0".into())),
            Rule::tcp(22, RuleSource::Cidr("0.0.0.0/0".into()))
        );
        assert_eq!(Rule::tcp(22, RuleSource::Cidr("0.0.0.0/0".into())).to_string(), "tcp 22 0.0.0.0/0");
        assert_eq!(Rule::all(RuleSource::Group("sg-1".into())).to_string(), "all traffic sg-1");
    }
}
