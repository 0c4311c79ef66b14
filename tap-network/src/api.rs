//! The narrow seam between the network step and EC2: exactly the calls the step makes, returning
//! small domain types (not SDK types) so unit tests can mock them.

use async_trait::async_trait;
use tap_core::naming::{Tag, TAG_COMPONENT};
use tap_core::resource::Owner;
use tap_core::AwsError;

/// A VPC of the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedVpc {
    /// VPC id.
    pub id: String,
    /// Primary IPv4 CIDR block.
    pub cidr: String,
    /// Its tags (`tap:component`, the environment's, `Name`).
    pub tags: Vec<Tag>,
}

/// A boolean VPC attribute; EC2 reads and modifies them one per call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum VpcAttribute {
    /// `enableDnsSupport`: the Amazon-provided DNS server answers in the VPC.
    DnsSupport,
    /// `enableDnsHostnames`: instances get public DNS hostnames (Cloud Map private DNS needs it).
    DnsHostnames,
}

impl VpcAttribute {
    /// Both attributes, in a fixed order.
    pub const ALL: [VpcAttribute; 2] = [VpcAttribute::DnsSupport, VpcAttribute::DnsHostnames];

    /// The attribute's name in plans.
    pub fn label(self) -> &'static str {
        match self {
            VpcAttribute::DnsSupport => "enable_dns_support",
            VpcAttribute::DnsHostnames => "enable_dns_hostnames",
        }
    }
}

/// A subnet of the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedSubnet {
    /// Subnet id.
    pub id: String,
    /// The VPC it belongs to.
    pub vpc_id: String,
    /// IPv4 CIDR block.
    pub cidr: String,
    /// Availability zone name.
    pub az: String,
    /// Its tags (`tap:component`, the environment's, `Name`).
    pub tags: Vec<Tag>,
}

/// An internet gateway of the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedInternetGateway {
    /// Internet gateway id.
    pub id: String,
    /// VPCs it is attached (or attaching) to.
    pub attached_vpcs: Vec<String>,
    /// Its tags (`tap:component`, the environment's, `Name`).
    pub tags: Vec<Tag>,
}

/// An Elastic IP of the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedAddress {
    /// Allocation id.
    pub allocation_id: String,
    /// Association id while it is mapped to a network interface (e.g. a NAT gateway's).
    pub association_id: Option<String>,
    /// Its tags (`tap:component`, the environment's, `Name`).
    pub tags: Vec<Tag>,
}

/// Life-cycle state of a NAT gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NatState {
    /// Being created.
    Pending,
    /// Ready to route traffic.
    Available,
    /// Being deleted.
    Deleting,
    /// Deleted (AWS keeps showing it for a while).
    Deleted,
    /// Creation failed (AWS keeps showing it for a while).
    Failed,
    /// A state this crate does not know.
    Other(String),
}

impl NatState {
    /// Pending or available: a NAT gateway that exists and serves (or will serve) its subnet.
    pub fn is_usable(&self) -> bool {
        matches!(self, NatState::Pending | NatState::Available)
    }
}

/// A NAT gateway of the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedNat {
    /// NAT gateway id.
    pub id: String,
    /// The subnet it lives in.
    pub subnet_id: String,
    /// Its state.
    pub state: NatState,
    /// AWS's failure message when the state is `failed`.
    pub failure: Option<String>,
    /// Its tags (`tap:component`, the environment's, `Name`).
    pub tags: Vec<Tag>,
}

/// Where a route sends traffic.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum RouteTarget {
    /// An internet gateway (`igw-…`; also `local` for the VPC's own route).
    Gateway(String),
    /// A NAT gateway.
    NatGateway(String),
    /// Anything else (instance, peering, transit gateway, …), by its id.
    Other(String),
}

impl RouteTarget {
    /// The target's id.
    pub fn id(&self) -> &str {
        match self {
            RouteTarget::Gateway(id) | RouteTarget::NatGateway(id) | RouteTarget::Other(id) => id,
        }
    }
}

/// One IPv4 route of a route table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedRoute {
    /// Destination CIDR block.
    pub destination: String,
    /// Target; `None` when AWS reports none this crate understands.
    pub target: Option<RouteTarget>,
}

/// One association of a route table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedAssociation {
    /// Association id.
    pub id: String,
    /// The associated subnet (`None` for the main association or a gateway association).
    pub subnet_id: Option<String>,
    /// Whether this is the VPC's main association.
    pub main: bool,
}

/// A route table of the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedRouteTable {
    /// Route table id.
    pub id: String,
    /// The VPC it belongs to.
    pub vpc_id: String,
    /// Its IPv4 routes.
    pub routes: Vec<ObservedRoute>,
    /// Its associations.
    pub associations: Vec<ObservedAssociation>,
    /// Its tags (`tap:component`, the environment's, `Name`).
    pub tags: Vec<Tag>,
}

impl ObservedRouteTable {
    /// Whether this is the VPC's main route table.
    pub fn is_main(&self) -> bool {
        self.associations.iter().any(|a| a.main)
    }
}

/// A resource carrying tags: its logical id (`tap:component`) and its owner are read from them.
pub trait Tagged {
    /// Its tags.
    fn tags(&self) -> &[Tag];

    /// The `tap:component` tag, if any.
    fn component(&self) -> Option<&str> {
        self.tags().iter().find(|(k, _)| k == TAG_COMPONENT).map(|(_, v)| v.as_str())
    }

    /// Whose it is, for environment `env` ([`Owner::of`] its tags).
    fn owner(&self, env: &str) -> Owner {
        Owner::of(self.tags(), env)
    }
}

macro_rules! tagged {
    ($($ty:ty),*) => {$(
        impl Tagged for $ty {
            fn tags(&self) -> &[Tag] {
                &self.tags
            }
        }
    )*};
}
tagged!(ObservedVpc, ObservedSubnet, ObservedInternetGateway, ObservedAddress, ObservedNat, ObservedRouteTable);

/// Exactly the EC2 calls the network step makes.
///
/// Every `find_*` call returns only resources tagged `Environment = env` and `ManagedBy = tap`
/// (the implementation asks EC2 to filter by those tags and checks them again on what comes back).
#[cfg_attr(any(test, feature = "test-util"), mockall::automock)]
#[async_trait]
pub trait Ec2Api: Send + Sync {
    /// Names of the region's availability zones in state `available`, sorted by name.
    async fn available_zones(&self) -> Result<Vec<String>, AwsError>;

    /// The environment's VPCs.
    async fn find_vpcs(&self, env: &str) -> Result<Vec<ObservedVpc>, AwsError>;
    /// Creates a VPC tagged with `tags`; returns its id.
    async fn create_vpc(&self, cidr: &str, tags: &[Tag]) -> Result<String, AwsError>;
    /// Reads one boolean attribute of a VPC.
    async fn vpc_attribute(&self, vpc_id: &str, attribute: VpcAttribute) -> Result<bool, AwsError>;
    /// Sets one boolean attribute of a VPC.
    async fn set_vpc_attribute(&self, vpc_id: &str, attribute: VpcAttribute, value: bool) -> Result<(), AwsError>;
    /// Deletes a VPC.
    async fn delete_vpc(&self, vpc_id: &str) -> Result<(), AwsError>;

    /// The environment's subnets, all of them or only those of `vpc_id` (one DescribeSubnets).
    async fn find_subnets<'a>(&self, env: &str, vpc_id: Option<&'a str>) -> Result<Vec<ObservedSubnet>, AwsError>;
    /// Creates a subnet tagged with `tags`; returns its id.
    async fn create_subnet(&self, vpc_id: &str, cidr: &str, az: &str, tags: &[Tag]) -> Result<String, AwsError>;
    /// Deletes a subnet.
    async fn delete_subnet(&self, subnet_id: &str) -> Result<(), AwsError>;

    /// The environment's internet gateways.
    async fn find_internet_gateways(&self, env: &str) -> Result<Vec<ObservedInternetGateway>, AwsError>;
    /// Creates an internet gateway tagged with `tags`; returns its id.
    async fn create_internet_gateway(&self, tags: &[Tag]) -> Result<String, AwsError>;
    /// Attaches an internet gateway to a VPC.
    async fn attach_internet_gateway(&self, igw_id: &str, vpc_id: &str) -> Result<(), AwsError>;
    /// Detaches an internet gateway from a VPC.
    async fn detach_internet_gateway(&self, igw_id: &str, vpc_id: &str) -> Result<(), AwsError>;
    /// Deletes an internet gateway.
    async fn delete_internet_gateway(&self, igw_id: &str) -> Result<(), AwsError>;

    /// The environment's Elastic IPs.
    async fn find_addresses(&self, env: &str) -> Result<Vec<ObservedAddress>, AwsError>;
    /// Allocates a VPC Elastic IP tagged with `tags`; returns its allocation id.
    async fn allocate_address(&self, tags: &[Tag]) -> Result<String, AwsError>;
    /// Releases an Elastic IP.
    async fn release_address(&self, allocation_id: &str) -> Result<(), AwsError>;

    /// The environment's NAT gateways in every state (AWS shows deleted and failed ones for a while).
    async fn find_nat_gateways(&self, env: &str) -> Result<Vec<ObservedNat>, AwsError>;
    /// One NAT gateway by id; `None` when AWS no longer knows it.
    async fn nat_gateway(&self, nat_id: &str) -> Result<Option<ObservedNat>, AwsError>;
    /// Creates a public NAT gateway in `subnet_id` with the Elastic IP `allocation_id`, tagged with
    /// `tags`; `client_token` makes a retried create idempotent. Returns its id.
    async fn create_nat_gateway(
        &self,
        subnet_id: &str,
        allocation_id: &str,
        client_token: &str,
        tags: &[Tag],
    ) -> Result<String, AwsError>;
    /// Starts deleting a NAT gateway.
    async fn delete_nat_gateway(&self, nat_id: &str) -> Result<(), AwsError>;

    /// The environment's route tables, all of them or only those of `vpc_id`.
    async fn find_route_tables<'a>(
        &self,
        env: &str,
        vpc_id: Option<&'a str>,
    ) -> Result<Vec<ObservedRouteTable>, AwsError>;
    /// Creates a route table tagged with `tags`; `client_token` makes a retried create idempotent.
    async fn create_route_table(&self, vpc_id: &str, client_token: &str, tags: &[Tag]) -> Result<String, AwsError>;
    /// Adds a route.
    async fn create_route(&self, route_table_id: &str, destination: &str, target: &RouteTarget)
        -> Result<(), AwsError>;
    /// Points an existing route at another target.
    async fn replace_route(
        &self,
        route_table_id: &str,
        destination: &str,
        target: &RouteTarget,
    ) -> Result<(), AwsError>;
    /// Associates a subnet with a route table; returns the association id.
    async fn associate_route_table(&self, route_table_id: &str, subnet_id: &str) -> Result<String, AwsError>;
    /// Moves an existing subnet association to another route table; returns the new association id.
    async fn replace_route_table_association(
        &self,
        association_id: &str,
        route_table_id: &str,
    ) -> Result<String, AwsError>;
    /// Removes a subnet association.
    async fn disassociate_route_table(&self, association_id: &str) -> Result<(), AwsError>;
    /// Deletes a route table.
    async fn delete_route_table(&self, route_table_id: &str) -> Result<(), AwsError>;
}
