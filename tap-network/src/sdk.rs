//! [`Ec2Api`] over the real `aws_sdk_ec2::Client`.

use async_trait::async_trait;
use aws_sdk_ec2::types::{
    self as ec2, DomainType, Filter, NatGatewayState, ResourceType, TagSpecification, VpcAttributeName,
};
use aws_sdk_ec2::Client;
use tap_core::error::IfFound;
use tap_core::idempotent::NoBlindRetry;
use tap_core::naming::{Tag, PROJECT, TAG_ENVIRONMENT, TAG_MANAGED_BY};
use tap_core::AwsError;

use crate::api::*;

/// [`Ec2Api`] over the SDK client.
#[derive(Debug, Clone)]
pub struct SdkEc2(pub Client);

/// For creates that EC2 does not make idempotent (or that moto does not, despite a client token):
/// the SDK must not resend them when their outcome is unknown (no answer, or a 5xx answer); the
/// step looks the resource up first (see `tap_core::idempotent`).
fn no_blind_retry() -> aws_sdk_ec2::config::Builder {
    aws_sdk_ec2::Config::builder().retry_classifier(NoBlindRetry)
}

/// Every item of a paginated listing, all pages.
macro_rules! all_items {
    ($request:expr) => {
        $request.into_paginator().items().send().try_collect().await?
    };
}

fn filter(name: &str, value: &str) -> Filter {
    Filter::builder().name(name).values(value).build()
}

/// EC2 filters selecting the environment's resources.
fn env_filters(env: &str) -> Vec<Filter> {
    vec![filter(&format!("tag:{TAG_ENVIRONMENT}"), env), filter(&format!("tag:{TAG_MANAGED_BY}"), PROJECT)]
}

fn tag_value<'a>(tags: &'a [ec2::Tag], key: &str) -> Option<&'a str> {
    tags.iter().find(|t| t.key() == Some(key)).and_then(|t| t.value())
}

/// Checks the tags again on what EC2 returned (the filters are the contract; this keeps a
/// lenient implementation of them from leaking other environments' resources in).
fn owned(tags: &[ec2::Tag], env: &str) -> bool {
    tag_value(tags, TAG_ENVIRONMENT) == Some(env) && tag_value(tags, TAG_MANAGED_BY) == Some(PROJECT)
}

fn tags(tags: &[ec2::Tag]) -> Vec<Tag> {
    tags.iter().map(|t| (s(t.key()), s(t.value()))).collect()
}

fn tag_spec(resource: ResourceType, tags: &[Tag]) -> TagSpecification {
    TagSpecification::builder()
        .resource_type(resource)
        .set_tags(Some(tags.iter().map(|(k, v)| ec2::Tag::builder().key(k).value(v).build()).collect()))
        .build()
}

fn s(value: Option<&str>) -> String {
    value.unwrap_or_default().to_owned()
}

fn missing(what: &str) -> AwsError {
    AwsError::local(format!("EC2 returned no {what}"))
}

fn unsupported_target(id: &str) -> AwsError {
    AwsError::local(format!("tap routes only to internet and NAT gateways, not to {id}"))
}

fn sdk_attribute(attribute: VpcAttribute) -> VpcAttributeName {
    match attribute {
        VpcAttribute::DnsSupport => VpcAttributeName::EnableDnsSupport,
        VpcAttribute::DnsHostnames => VpcAttributeName::EnableDnsHostnames,
    }
}

fn nat_state(state: Option<&NatGatewayState>) -> NatState {
    match state {
        Some(NatGatewayState::Pending) => NatState::Pending,
        Some(NatGatewayState::Available) => NatState::Available,
        Some(NatGatewayState::Deleting) => NatState::Deleting,
        Some(NatGatewayState::Deleted) => NatState::Deleted,
        Some(NatGatewayState::Failed) => NatState::Failed,
        Some(other) => NatState::Other(other.as_str().to_owned()),
        None => NatState::Other(String::new()),
    }
}

fn observed_nat(n: &ec2::NatGateway) -> ObservedNat {
    ObservedNat {
        id: s(n.nat_gateway_id()),
        subnet_id: s(n.subnet_id()),
        state: nat_state(n.state()),
        failure: n.failure_message().map(str::to_owned),
        tags: tags(n.tags()),
    }
}

fn route_target(r: &ec2::Route) -> Option<RouteTarget> {
    if let Some(id) = r.nat_gateway_id() {
        return Some(RouteTarget::NatGateway(id.to_owned()));
    }
    if let Some(id) = r.gateway_id() {
        return Some(RouteTarget::Gateway(id.to_owned()));
    }
    [
        r.instance_id(),
        r.network_interface_id(),
        r.transit_gateway_id(),
        r.vpc_peering_connection_id(),
        r.egress_only_internet_gateway_id(),
        r.local_gateway_id(),
        r.carrier_gateway_id(),
    ]
    .into_iter()
    .flatten()
    .next()
    .map(|id| RouteTarget::Other(id.to_owned()))
}

fn observed_route_table(rt: &ec2::RouteTable) -> ObservedRouteTable {
    ObservedRouteTable {
        id: s(rt.route_table_id()),
        vpc_id: s(rt.vpc_id()),
        routes: rt
            .routes()
            .iter()
            .filter_map(|r| {
                r.destination_cidr_block().map(|d| ObservedRoute { destination: d.to_owned(), target: route_target(r) })
            })
            .collect(),
        associations: rt
            .associations()
            .iter()
            .map(|a| ObservedAssociation {
                id: s(a.route_table_association_id()),
                subnet_id: a.subnet_id().map(str::to_owned),
                main: a.main().unwrap_or(false),
            })
            .collect(),
        tags: tags(rt.tags()),
    }
}

/// Sorts by id so that every run sees the same order.
fn sorted<T>(mut items: Vec<T>, id: impl Fn(&T) -> &str) -> Vec<T> {
    items.sort_by(|a, b| id(a).cmp(id(b)));
    items
}

#[async_trait]
impl Ec2Api for SdkEc2 {
    async fn available_zones(&self) -> Result<Vec<String>, AwsError> {
        let out = self.0.describe_availability_zones().filters(filter("state", "available")).send().await?;
        let mut zones: Vec<String> =
            out.availability_zones().iter().filter_map(|z| z.zone_name().map(str::to_owned)).collect();
        zones.sort();
        Ok(zones)
    }

    async fn find_vpcs(&self, env: &str) -> Result<Vec<ObservedVpc>, AwsError> {
        let vpcs = all_items!(self.0.describe_vpcs().set_filters(Some(env_filters(env))));
        let found = vpcs
            .iter()
            .filter(|v| owned(v.tags(), env))
            .map(|v| ObservedVpc { id: s(v.vpc_id()), cidr: s(v.cidr_block()), tags: tags(v.tags()) })
            .collect();
        Ok(sorted(found, |v| &v.id))
    }

    async fn create_vpc(&self, cidr: &str, tags: &[Tag]) -> Result<String, AwsError> {
        let out = self
            .0
            .create_vpc()
            .cidr_block(cidr)
            .tag_specifications(tag_spec(ResourceType::Vpc, tags))
            .customize()
            .config_override(no_blind_retry())
            .send()
            .await?;
        out.vpc().and_then(|v| v.vpc_id()).map(str::to_owned).ok_or_else(|| missing("VPC id"))
    }

    async fn vpc_attribute(&self, vpc_id: &str, attribute: VpcAttribute) -> Result<bool, AwsError> {
        let out = self.0.describe_vpc_attribute().vpc_id(vpc_id).attribute(sdk_attribute(attribute)).send().await?;
        let value = match attribute {
            VpcAttribute::DnsSupport => out.enable_dns_support(),
            VpcAttribute::DnsHostnames => out.enable_dns_hostnames(),
        };
        Ok(value.and_then(|v| v.value()).unwrap_or(false))
    }

    async fn set_vpc_attribute(&self, vpc_id: &str, attribute: VpcAttribute, value: bool) -> Result<(), AwsError> {
        let v = ec2::AttributeBooleanValue::builder().value(value).build();
        let req = self.0.modify_vpc_attribute().vpc_id(vpc_id);
        let req = match attribute {
            VpcAttribute::DnsSupport => req.enable_dns_support(v),
            VpcAttribute::DnsHostnames => req.enable_dns_hostnames(v),
        };
        req.send().await?;
        Ok(())
    }

    async fn delete_vpc(&self, vpc_id: &str) -> Result<(), AwsError> {
        self.0.delete_vpc().vpc_id(vpc_id).send().await?;
        Ok(())
    }

    async fn find_subnets<'a>(&self, env: &str, vpc_id: Option<&'a str>) -> Result<Vec<ObservedSubnet>, AwsError> {
        let mut filters = env_filters(env);
        filters.extend(vpc_id.map(|v| filter("vpc-id", v)));
        let subnets = all_items!(self.0.describe_subnets().set_filters(Some(filters)));
        let found = subnets
            .iter()
            .filter(|sn| owned(sn.tags(), env) && vpc_id.is_none_or(|v| sn.vpc_id() == Some(v)))
            .map(|sn| ObservedSubnet {
                id: s(sn.subnet_id()),
                vpc_id: s(sn.vpc_id()),
                cidr: s(sn.cidr_block()),
                az: s(sn.availability_zone()),
                tags: tags(sn.tags()),
            })
            .collect();
        Ok(sorted(found, |sn| &sn.id))
    }

    async fn create_subnet(&self, vpc_id: &str, cidr: &str, az: &str, tags: &[Tag]) -> Result<String, AwsError> {
        let out = self
            .0
            .create_subnet()
            .vpc_id(vpc_id)
            .cidr_block(cidr)
            .availability_zone(az)
            .tag_specifications(tag_spec(ResourceType::Subnet, tags))
            .customize()
            .config_override(no_blind_retry())
            .send()
            .await?;
        out.subnet().and_then(|sn| sn.subnet_id()).map(str::to_owned).ok_or_else(|| missing("subnet id"))
    }

    async fn delete_subnet(&self, subnet_id: &str) -> Result<(), AwsError> {
        self.0.delete_subnet().subnet_id(subnet_id).send().await?;
        Ok(())
    }

    async fn find_internet_gateways(&self, env: &str) -> Result<Vec<ObservedInternetGateway>, AwsError> {
        let igws = all_items!(self.0.describe_internet_gateways().set_filters(Some(env_filters(env))));
        let found = igws
            .iter()
            .filter(|g| owned(g.tags(), env))
            .map(|g| ObservedInternetGateway {
                id: s(g.internet_gateway_id()),
                attached_vpcs: g
                    .attachments()
                    .iter()
                    .filter(|a| {
                        !matches!(a.state(), Some(ec2::AttachmentStatus::Detached | ec2::AttachmentStatus::Detaching))
                    })
                    .filter_map(|a| a.vpc_id().map(str::to_owned))
                    .collect(),
                tags: tags(g.tags()),
            })
            .collect();
        Ok(sorted(found, |g| &g.id))
    }

    async fn create_internet_gateway(&self, tags: &[Tag]) -> Result<String, AwsError> {
        let out = self
            .0
            .create_internet_gateway()
            .tag_specifications(tag_spec(ResourceType::InternetGateway, tags))
            .customize()
            .config_override(no_blind_retry())
            .send()
            .await?;
        out.internet_gateway()
            .and_then(|g| g.internet_gateway_id())
            .map(str::to_owned)
            .ok_or_else(|| missing("internet gateway id"))
    }

    async fn attach_internet_gateway(&self, igw_id: &str, vpc_id: &str) -> Result<(), AwsError> {
        self.0
            .attach_internet_gateway()
            .internet_gateway_id(igw_id)
            .vpc_id(vpc_id)
            .customize()
            .config_override(no_blind_retry())
            .send()
            .await?;
        Ok(())
    }

    async fn detach_internet_gateway(&self, igw_id: &str, vpc_id: &str) -> Result<(), AwsError> {
        self.0.detach_internet_gateway().internet_gateway_id(igw_id).vpc_id(vpc_id).send().await?;
        Ok(())
    }

    async fn delete_internet_gateway(&self, igw_id: &str) -> Result<(), AwsError> {
        self.0.delete_internet_gateway().internet_gateway_id(igw_id).send().await?;
        Ok(())
    }

    async fn find_addresses(&self, env: &str) -> Result<Vec<ObservedAddress>, AwsError> {
        let out = self.0.describe_addresses().set_filters(Some(env_filters(env))).send().await?;
        let found = out
            .addresses()
            .iter()
            .filter(|a| owned(a.tags(), env) && a.allocation_id().is_some())
            .map(|a| ObservedAddress {
                allocation_id: s(a.allocation_id()),
                association_id: a.association_id().map(str::to_owned),
                tags: tags(a.tags()),
            })
            .collect();
        Ok(sorted(found, |a| &a.allocation_id))
    }

    async fn allocate_address(&self, tags: &[Tag]) -> Result<String, AwsError> {
        let out = self
            .0
            .allocate_address()
            .domain(DomainType::Vpc)
            .tag_specifications(tag_spec(ResourceType::ElasticIp, tags))
            .customize()
            .config_override(no_blind_retry())
            .send()
            .await?;
        out.allocation_id().map(str::to_owned).ok_or_else(|| missing("allocation id"))
    }

    async fn release_address(&self, allocation_id: &str) -> Result<(), AwsError> {
        self.0.release_address().allocation_id(allocation_id).send().await?;
        Ok(())
    }

    async fn find_nat_gateways(&self, env: &str) -> Result<Vec<ObservedNat>, AwsError> {
        let nats = all_items!(self.0.describe_nat_gateways().set_filter(Some(env_filters(env))));
        let found = nats.iter().filter(|n| owned(n.tags(), env)).map(observed_nat).collect();
        Ok(sorted(found, |n| &n.id))
    }

    async fn nat_gateway(&self, nat_id: &str) -> Result<Option<ObservedNat>, AwsError> {
        let found =
            self.0.describe_nat_gateways().nat_gateway_ids(nat_id).send().await.map_err(AwsError::from).if_found()?;
        Ok(found
            .and_then(|out| out.nat_gateways().iter().find(|n| n.nat_gateway_id() == Some(nat_id)).map(observed_nat)))
    }

    async fn create_nat_gateway(
        &self,
        subnet_id: &str,
        allocation_id: &str,
        client_token: &str,
        tags: &[Tag],
    ) -> Result<String, AwsError> {
        let out = self
            .0
            .create_nat_gateway()
            .subnet_id(subnet_id)
            .allocation_id(allocation_id)
            .connectivity_type(ec2::ConnectivityType::Public)
            .client_token(client_token)
            .tag_specifications(tag_spec(ResourceType::Natgateway, tags))
            .customize()
            .config_override(no_blind_retry())
            .send()
            .await?;
        out.nat_gateway().and_then(|n| n.nat_gateway_id()).map(str::to_owned).ok_or_else(|| missing("NAT gateway id"))
    }

    async fn delete_nat_gateway(&self, nat_id: &str) -> Result<(), AwsError> {
        self.0.delete_nat_gateway().nat_gateway_id(nat_id).send().await?;
        Ok(())
    }

    async fn find_route_tables<'a>(
        &self,
        env: &str,
        vpc_id: Option<&'a str>,
    ) -> Result<Vec<ObservedRouteTable>, AwsError> {
        let mut filters = env_filters(env);
        filters.extend(vpc_id.map(|v| filter("vpc-id", v)));
        let tables = all_items!(self.0.describe_route_tables().set_filters(Some(filters)));
        let found = tables
            .iter()
            .filter(|rt| owned(rt.tags(), env) && vpc_id.is_none_or(|v| rt.vpc_id() == Some(v)))
            .map(observed_route_table)
            .collect();
        Ok(sorted(found, |rt| &rt.id))
    }

    async fn create_route_table(&self, vpc_id: &str, client_token: &str, tags: &[Tag]) -> Result<String, AwsError> {
        let out = self
            .0
            .create_route_table()
            .vpc_id(vpc_id)
            .client_token(client_token)
            .tag_specifications(tag_spec(ResourceType::RouteTable, tags))
            .customize()
            .config_override(no_blind_retry())
            .send()
            .await?;
        out.route_table().and_then(|rt| rt.route_table_id()).map(str::to_owned).ok_or_else(|| missing("route table id"))
    }

    async fn create_route(
        &self,
        route_table_id: &str,
        destination: &str,
        target: &RouteTarget,
    ) -> Result<(), AwsError> {
        let req = self.0.create_route().route_table_id(route_table_id).destination_cidr_block(destination);
        let req = match target {
            RouteTarget::NatGateway(id) => req.nat_gateway_id(id),
            RouteTarget::Gateway(id) => req.gateway_id(id),
            RouteTarget::Other(id) => return Err(unsupported_target(id)),
        };
        req.customize().config_override(no_blind_retry()).send().await?;
        Ok(())
    }

    async fn replace_route(
        &self,
        route_table_id: &str,
        destination: &str,
        target: &RouteTarget,
    ) -> Result<(), AwsError> {
        let req = self.0.replace_route().route_table_id(route_table_id).destination_cidr_block(destination);
        let req = match target {
            RouteTarget::NatGateway(id) => req.nat_gateway_id(id),
            RouteTarget::Gateway(id) => req.gateway_id(id),
            RouteTarget::Other(id) => return Err(unsupported_target(id)),
        };
        req.send().await?;
        Ok(())
    }

    async fn associate_route_table(&self, route_table_id: &str, subnet_id: &str) -> Result<String, AwsError> {
        let out = self
            .0
            .associate_route_table()
            .route_table_id(route_table_id)
            .subnet_id(subnet_id)
            .customize()
            .config_override(no_blind_retry())
            .send()
            .await?;
        out.association_id().map(str::to_owned).ok_or_else(|| missing("association id"))
    }

    async fn replace_route_table_association(
        &self,
        association_id: &str,
        route_table_id: &str,
    ) -> Result<String, AwsError> {
        let out = self
            .0
            .replace_route_table_association()
            .association_id(association_id)
            .route_table_id(route_table_id)
            .send()
            .await?;
        out.new_association_id().map(str::to_owned).ok_or_else(|| missing("association id"))
    }

    async fn disassociate_route_table(&self, association_id: &str) -> Result<(), AwsError> {
        self.0.disassociate_route_table().association_id(association_id).send().await?;
        Ok(())
    }

    async fn delete_route_table(&self, route_table_id: &str) -> Result<(), AwsError> {
        self.0.delete_route_table().route_table_id(route_table_id).send().await?;
        Ok(())
    }
}
