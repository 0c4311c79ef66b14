//! AWS's asynchronous deletions, which moto carries out at once, modelled in the proxy.
//!
//! The proxy learns from the calls it forwards which subnets and security groups each NAT
//! gateway, load balancer and ECS service holds (their network interfaces), and which Elastic IP
//! each NAT gateway uses. With a window set ([`crate::proxy::Faults::async_delete_window`]), a
//! holder keeps holding for that long after its deletion, as on AWS:
//!
//! - a deleted NAT gateway stays `deleting` in `DescribeNatGateways`, and its Elastic IP cannot be
//!   released (`InvalidIPAddress.InUse`) nor its subnet deleted;
//! - a deleted load balancer's or service's network interfaces still hold their subnets and
//!   security groups: `DeleteSubnet` and `DeleteSecurityGroup` answer `DependencyViolation`;
//! - the internet gateway cannot be detached from a VPC while a NAT gateway or load balancer
//!   there still maps public addresses.
//!
//! A holder that was never deleted holds for good, so a destroy that deletes out of order is
//! refused here as AWS refuses it.
//!
//! **A NAT gateway's Elastic IP.** AWS's `DeleteNatGateway` reference: "Deleting a public NAT
//! gateway disassociates its Elastic IP address, but does not release the address from your
//! account"; the address stays associated (`DescribeAddresses` shows its `AssociationId`) while the
//! NAT gateway is `deleting`, and is free once it is `deleted`. moto marks the NAT gateway
//! `deleted` at once and never disassociates the address, so a later `CreateNatGateway` with it
//! fails with `Resource.AlreadyAssociated` for ever. The model frees it as AWS does: when a deleted
//! NAT gateway's window has passed (at once without a window), the proxy sends moto
//! `DisassociateAddress` for each of its public IPs ([`AsyncDeletes::due_frees`]), before it
//! forwards the next call. A NAT gateway deleted through a proxy that did not see it created is
//! learnt from moto's `DescribeNatGateways` ([`AsyncDeletes::learn_nat`]).
//!
//! Left out: the time AWS takes to disassociate after `deleted` (none here), secondary addresses
//! (`DisassociateNatGatewayAddress` and its drain), and AWS's answer to a `CreateNatGateway` with an
//! address still held (moto refuses the call with `Resource.AlreadyAssociated`; AWS may instead
//! create the NAT gateway and fail it with that code): moto's answer is passed on as it is.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// What the proxy has learnt about the resources that hold others.
#[derive(Debug, Default)]
pub struct AsyncDeletes {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// `nat:<id>`, `elb:<arn>`, `ecs:<service name>` → what it holds.
    holders: HashMap<String, Holder>,
    /// Subnet id → its VPC id (from `CreateSubnet`).
    subnet_vpc: HashMap<String, String>,
}

#[derive(Debug, Default)]
struct Holder {
    subnets: Vec<String>,
    groups: Vec<String>,
    addresses: Vec<String>,
    /// Whether it maps public addresses (NAT gateways, load balancers): blocks the IGW detach.
    public: bool,
    deleted_at: Option<Instant>,
    /// A NAT gateway's public IPs (its Elastic IPs), freed once it is `deleted`.
    public_ips: Vec<String>,
    /// The region it lives in (moto keeps one backend per region).
    region: String,
    /// Whether its addresses were freed.
    freed: bool,
}

impl Holder {
    fn holds(&self, window: Duration) -> bool {
        self.deleted_at.is_none_or(|at| at.elapsed() < window)
    }
}

/// An EC2 refusal: the error code and message.
pub(crate) type Refusal = (&'static str, String);

impl AsyncDeletes {
    /// Before forwarding an EC2 call: the error AWS would answer now, if any.
    pub(crate) fn refusal(&self, window: Duration, op: &str, body: &str) -> Option<Refusal> {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let holding = || state.holders.values().filter(|h| h.holds(window));
        match op {
            "DeleteSubnet" => {
                let id = form_value(body, "SubnetId")?;
                holding().any(|h| h.subnets.contains(&id)).then(|| {
                    ("DependencyViolation", format!("The subnet '{id}' has dependencies and cannot be deleted."))
                })
            }
            "DeleteSecurityGroup" => {
                let id = form_value(body, "GroupId")?;
                holding()
                    .any(|h| h.groups.contains(&id))
                    .then(|| ("DependencyViolation", format!("resource {id} has a dependent object")))
            }
            "ReleaseAddress" => {
                let id = form_value(body, "AllocationId")?;
                holding()
                    .any(|h| h.addresses.contains(&id))
                    .then(|| ("InvalidIPAddress.InUse", format!("Address {id} is in use.")))
            }
            "DetachInternetGateway" => {
                let vpc = form_value(body, "VpcId")?;
                let in_vpc = |h: &Holder| h.subnets.iter().any(|s| state.subnet_vpc.get(s) == Some(&vpc));
                holding().any(|h| h.public && in_vpc(h)).then(|| {
                    ("DependencyViolation", format!("Network {vpc} has some mapped public address(es). Please unmap those public address(es) before detaching the gateway."))
                })
            }
            _ => None,
        }
    }

    /// Whether the model knows the NAT gateway `id` (saw it created or learnt it).
    pub(crate) fn knows_nat(&self, id: &str) -> bool {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).holders.contains_key(&format!("nat:{id}"))
    }

    /// Learns the NAT gateway `id` of `region` from moto's `DescribeNatGateways` answer `xml` (its
    /// subnet, Elastic IPs and their public IPs), unless it is known already.
    pub(crate) fn learn_nat(&self, id: &str, region: &str, xml: &str) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.holders.entry(format!("nat:{id}")).or_insert_with(|| nat_holder(xml, region));
    }

    /// The Elastic IPs to free now: the public IPs, with their region, of each deleted NAT gateway
    /// whose window has passed (`Duration::ZERO`: deletions take effect at once) and that were not
    /// freed yet. Each is returned once; the caller disassociates them in moto.
    pub(crate) fn due_frees(&self, window: Duration) -> Vec<(String, String)> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let mut due = Vec::new();
        for (key, holder) in state.holders.iter_mut() {
            if key.starts_with("nat:") && holder.deleted_at.is_some() && !holder.holds(window) && !holder.freed {
                holder.freed = true;
                due.extend(holder.public_ips.iter().map(|ip| (holder.region.clone(), ip.clone())));
            }
        }
        due
    }

    /// After a call succeeded upstream: records what it created or deleted; `ecs` is whether the
    /// call went to ECS (whose JSON `CreateService` is not Cloud Map's), `region` the call's.
    pub(crate) fn observe(&self, op: &str, ecs: bool, region: &str, body: &str, response: &str) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        match (op, ecs) {
            ("CreateSubnet", false) => {
                if let (Some(vpc), Some(id)) = (form_value(body, "VpcId"), xml_value(response, "subnetId")) {
                    state.subnet_vpc.insert(id, vpc);
                }
            }
            ("CreateNatGateway", false) => {
                if let Some(id) = xml_value(response, "natGatewayId") {
                    let mut holder = nat_holder(response, region);
                    holder.subnets = form_value(body, "SubnetId").into_iter().collect();
                    holder.addresses = form_value(body, "AllocationId").into_iter().collect();
                    state.holders.insert(format!("nat:{id}"), holder);
                }
            }
            ("DeleteNatGateway", false) => {
                deleted(&mut state, format!("nat:{}", form_value(body, "NatGatewayId").unwrap_or_default()), now)
            }
            ("CreateLoadBalancer", false) => {
                if let Some(arn) = xml_value(response, "LoadBalancerArn") {
                    let holder = Holder {
                        subnets: form_values(body, "Subnets.member."),
                        groups: form_values(body, "SecurityGroups.member."),
                        public: true,
                        ..Holder::default()
                    };
                    state.holders.insert(format!("elb:{arn}"), holder);
                }
            }
            ("DeleteLoadBalancer", false) => {
                deleted(&mut state, format!("elb:{}", form_value(body, "LoadBalancerArn").unwrap_or_default()), now)
            }
            ("CreateService" | "UpdateService", true) => {
                let Ok(request) = serde_json::from_str::<serde_json::Value>(body) else { return };
                let name = request["serviceName"].as_str().or(request["service"].as_str()).map(service_name);
                let vpc = &request["networkConfiguration"]["awsvpcConfiguration"];
                let (Some(name), false) = (name, vpc.is_null()) else { return };
                let strings = |v: &serde_json::Value| {
                    v.as_array().into_iter().flatten().filter_map(|s| s.as_str().map(str::to_owned)).collect()
                };
                let holder = Holder {
                    subnets: strings(&vpc["subnets"]),
                    groups: strings(&vpc["securityGroups"]),
                    ..Holder::default()
                };
                state.holders.insert(format!("ecs:{name}"), holder);
            }
            ("DeleteService", true) => {
                let Ok(request) = serde_json::from_str::<serde_json::Value>(body) else { return };
                if let Some(name) = request["service"].as_str().map(service_name) {
                    deleted(&mut state, format!("ecs:{name}"), now);
                }
            }
            _ => {}
        }
    }

    /// A `DescribeNatGateways` answer with each NAT gateway still in its window shown `deleting`
    /// (moto reports `deleted` at once); other answers unchanged.
    pub(crate) fn rewrite(&self, window: Duration, op: &str, response: Vec<u8>) -> Vec<u8> {
        if op != "DescribeNatGateways" {
            return response;
        }
        let deleting: Vec<String> = {
            let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            state
                .holders
                .iter()
                .filter(|(_, h)| h.deleted_at.is_some() && h.holds(window))
                .filter_map(|(k, _)| k.strip_prefix("nat:").map(str::to_owned))
                .collect()
        };
        let Some(split) = response.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4) else { return response };
        let body = String::from_utf8_lossy(&response[split..]).into_owned();
        let rewritten = still_deleting(&body, &deleting);
        if rewritten == body {
            return response;
        }
        let head = String::from_utf8_lossy(&response[..split]);
        let head: String = head
            .split_inclusive("\r\n")
            .map(|line| {
                if line.to_ascii_lowercase().starts_with("content-length:") {
                    format!("Content-Length: {}\r\n", rewritten.len())
                } else {
                    line.to_owned()
                }
            })
            .collect();
        [head.into_bytes(), rewritten.into_bytes()].concat()
    }
}

/// A NAT gateway as moto describes it (`CreateNatGateway`'s or `DescribeNatGateways`' answer for
/// one): its subnet, allocation ids and public IPs.
fn nat_holder(xml: &str, region: &str) -> Holder {
    Holder {
        subnets: xml_value(xml, "subnetId").into_iter().collect(),
        addresses: xml_values(xml, "allocationId"),
        public_ips: xml_values(xml, "publicIp"),
        public: true,
        region: region.to_owned(),
        ..Holder::default()
    }
}

fn deleted(state: &mut State, key: String, now: Instant) {
    if let Some(h) = state.holders.get_mut(&key) {
        h.deleted_at.get_or_insert(now);
    }
}

/// `tap-x` of `tap-x` or of an ARN `arn:aws:ecs:…:service/cluster/tap-x`.
fn service_name(s: &str) -> String {
    s.rsplit('/').next().unwrap_or(s).to_owned()
}

/// Each top-level `<item>` of `<natGatewaySet>` whose `natGatewayId` is in `ids` gets
/// `<state>deleting</state>` instead of `deleted`.
fn still_deleting(body: &str, ids: &[String]) -> String {
    if ids.is_empty() {
        return body.to_owned();
    }
    let mut out = String::with_capacity(body.len() + 16);
    let mut rest = body;
    let mut depth = 0usize;
    let mut item_start: Option<usize> = None;
    loop {
        let open = rest.find("<item>");
        let close = rest.find("</item>");
        let (at, is_open) = match (open, close) {
            (Some(o), Some(c)) if o < c => (o, true),
            (_, Some(c)) => (c, false),
            (Some(o), None) => (o, true),
            (None, None) => break,
        };
        let tag_len = if is_open { "<item>".len() } else { "</item>".len() };
        let (before, after) = rest.split_at(at + tag_len);
        if is_open {
            if depth == 0 {
                out.push_str(&before[..at]);
                item_start = Some(out.len());
                out.push_str("<item>");
            } else {
                out.push_str(before);
            }
            depth += 1;
        } else {
            out.push_str(before);
            depth = depth.saturating_sub(1);
            if depth == 0 {
                if let Some(start) = item_start.take() {
                    let item = &out[start..];
                    if ids.iter().any(|id| item.contains(&format!("<natGatewayId>{id}</natGatewayId>"))) {
                        let fixed = item.replacen("<state>deleted</state>", "<state>deleting</state>", 1);
                        out.truncate(start);
                        out.push_str(&fixed);
                    }
                }
            }
        }
        rest = after;
    }
    out.push_str(rest);
    out
}

/// The percent-decoded value of `key` in a form-encoded body.
pub(crate) fn form_value(body: &str, key: &str) -> Option<String> {
    body.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == key).then(|| percent_decode(v))
    })
}

/// The values of `prefix1`, `prefix2`, … (a query protocol's list), in order.
fn form_values(body: &str, prefix: &str) -> Vec<String> {
    let mut found: Vec<(u32, String)> = body
        .split('&')
        .filter_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            Some((k.strip_prefix(prefix)?.parse().ok()?, percent_decode(v)))
        })
        .collect();
    found.sort();
    found.into_iter().map(|(_, v)| v).collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%').then(|| s.get(i + 1..i + 3)).flatten();
        match escaped.and_then(|hex| u8::from_str_radix(hex, 16).ok()) {
            Some(b) => {
                out.push(b);
                i += 3;
            }
            None => {
                out.push(if bytes[i] == b'+' { b' ' } else { bytes[i] });
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The text of the first `<tag>…</tag>` in an XML answer.
fn xml_value(xml: &str, tag: &str) -> Option<String> {
    crate::upstream::tag(xml, tag).map(str::to_owned)
}

/// The text of every `<tag>…</tag>` in an XML answer, in order.
fn xml_values(xml: &str, tag: &str) -> Vec<String> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(start) = rest.find(&open).map(|i| i + open.len()) {
        let Some(end) = rest[start..].find(&close).map(|i| i + start) else { break };
        out.push(rest[start..end].to_owned());
        rest = &rest[end..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Duration = Duration::from_millis(200);

    fn model_with_nat_and_lb() -> AsyncDeletes {
        let m = AsyncDeletes::default();
        m.observe(
            "CreateSubnet",
            false,
            "us-east-1",
            "Action=CreateSubnet&VpcId=vpc-1",
            "<subnetId>subnet-pub</subnetId>",
        );
        m.observe(
            "CreateNatGateway",
            false,
            "us-east-1",
            "Action=CreateNatGateway&SubnetId=subnet-pub&AllocationId=eipalloc-1",
            "<natGateway><natGatewayAddressSet><item><allocationId>eipalloc-1</allocationId><publicIp>1.2.3.4</publicIp></item></natGatewayAddressSet><natGatewayId>nat-1</natGatewayId></natGateway>",
        );
        m.observe(
            "CreateLoadBalancer",
            false,
            "us-east-1",
            "Action=CreateLoadBalancer&Subnets.member.1=subnet-pub&SecurityGroups.member.1=sg-alb",
            "<LoadBalancerArn>arn:aws:elasticloadbalancing:us-east-1:1:loadbalancer/app/tap/1</LoadBalancerArn>",
        );
        m
    }

    #[test]
    fn a_holder_refuses_until_its_window_after_deletion_has_passed() {
        let m = model_with_nat_and_lb();
        let refused = |op: &str, body: &str| m.refusal(WINDOW, op, body).map(|(code, _)| code);
        assert_eq!(refused("DeleteSubnet", "SubnetId=subnet-pub"), Some("DependencyViolation"), "held while alive");
        assert_eq!(refused("ReleaseAddress", "AllocationId=eipalloc-1"), Some("InvalidIPAddress.InUse"));
        assert_eq!(
            refused("DetachInternetGateway", "InternetGatewayId=igw-1&VpcId=vpc-1"),
            Some("DependencyViolation")
        );
        assert_eq!(refused("DetachInternetGateway", "InternetGatewayId=igw-2&VpcId=vpc-2"), None, "another VPC");
        assert_eq!(refused("DeleteSubnet", "SubnetId=subnet-other"), None);

        m.observe(
            "DeleteLoadBalancer",
            false,
            "us-east-1",
            "Action=DeleteLoadBalancer&LoadBalancerArn=arn%3Aaws%3Aelasticloadbalancing%3Aus-east-1%3A1%3Aloadbalancer%2Fapp%2Ftap%2F1",
            "",
        );
        m.observe("DeleteNatGateway", false, "us-east-1", "Action=DeleteNatGateway&NatGatewayId=nat-1", "");
        assert_eq!(refused("DeleteSecurityGroup", "GroupId=sg-alb"), Some("DependencyViolation"), "in the window");
        assert!(m.due_frees(WINDOW).is_empty(), "the address stays associated while the NAT gateway is deleting");
        let nat = "HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n<natGatewaySet><item><natGatewayAddressSet><item><allocationId>eipalloc-1</allocationId></item></natGatewayAddressSet><natGatewayId>nat-1</natGatewayId><state>deleted</state></item></natGatewaySet>";
        let shown = String::from_utf8(m.rewrite(WINDOW, "DescribeNatGateways", nat.as_bytes().to_vec())).unwrap();
        assert!(shown.contains("<state>deleting</state>"), "{shown}");
        let body = shown.split("\r\n\r\n").nth(1).unwrap();
        assert!(shown.contains(&format!("Content-Length: {}\r\n", body.len())), "{shown}");

        std::thread::sleep(WINDOW);
        assert_eq!(refused("DeleteSecurityGroup", "GroupId=sg-alb"), None, "released after the window");
        assert_eq!(refused("ReleaseAddress", "AllocationId=eipalloc-1"), None);
        assert_eq!(refused("DetachInternetGateway", "VpcId=vpc-1"), None);
        assert_eq!(
            m.due_frees(WINDOW),
            [("us-east-1".to_owned(), "1.2.3.4".to_owned())],
            "freed once the NAT gateway is deleted"
        );
        assert!(m.due_frees(WINDOW).is_empty(), "freed once");
        let shown = m.rewrite(WINDOW, "DescribeNatGateways", nat.as_bytes().to_vec());
        assert_eq!(shown, nat.as_bytes(), "deleted once the window has passed");
    }

    #[test]
    fn without_a_window_a_deleted_nat_gateways_address_is_freed_at_once_and_a_live_ones_never() {
        let m = model_with_nat_and_lb();
        assert!(m.due_frees(Duration::ZERO).is_empty(), "a live NAT gateway holds its address");
        let described = "<natGatewaySet><item><natGatewayAddressSet><item><allocationId>eipalloc-9</allocationId><publicIp>5.6.7.8</publicIp></item></natGatewayAddressSet><natGatewayId>nat-9</natGatewayId><subnetId>subnet-9</subnetId><state>available</state></item></natGatewaySet>";
        assert!(!m.knows_nat("nat-9"));
        m.learn_nat("nat-9", "eu-west-1", described);
        assert!(m.knows_nat("nat-9"));
        m.observe("DeleteNatGateway", false, "eu-west-1", "Action=DeleteNatGateway&NatGatewayId=nat-9", "");
        assert_eq!(m.due_frees(Duration::ZERO), [("eu-west-1".to_owned(), "5.6.7.8".to_owned())]);
        assert!(
            m.refusal(Duration::ZERO, "DeleteSubnet", "SubnetId=subnet-9").is_none(),
            "a NAT gateway learnt on its deletion holds nothing once deleted"
        );
    }

    #[test]
    fn an_ecs_service_holds_its_subnets_and_group_until_the_window_after_its_deletion() {
        let m = AsyncDeletes::default();
        let create = r#"{"cluster":"c","serviceName":"tap-fe","networkConfiguration":{"awsvpcConfiguration":{"subnets":["subnet-a"],"securityGroups":["sg-fe"]}}}"#;
        m.observe("CreateService", true, "us-east-1", create, "{}");
        m.observe("CreateService", false, "us-east-1", r#"{"Name":"processing"}"#, "{}");
        assert!(m.refusal(WINDOW, "DeleteSecurityGroup", "GroupId=sg-fe").is_some());
        m.observe(
            "DeleteService",
            true,
            "us-east-1",
            r#"{"cluster":"c","service":"arn:aws:ecs:r:1:service/c/tap-fe","force":true}"#,
            "{}",
        );
        assert!(m.refusal(WINDOW, "DeleteSubnet", "SubnetId=subnet-a").is_some(), "still in its window");
        std::thread::sleep(WINDOW);
        assert!(m.refusal(WINDOW, "DeleteSubnet", "SubnetId=subnet-a").is_none());
    }
}
