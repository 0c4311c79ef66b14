//! The EC2 seam of the security groups: the calls ([`Ec2Api`]), their SDK implementation
//! ([`SdkEc2`]) and a group as `DescribeSecurityGroups` shows it ([`ObservedGroup`]).

use async_trait::async_trait;
use aws_sdk_ec2::types::{
    Filter, IpPermission, IpRange, Ipv6Range, PrefixListId, ResourceType, TagSpecification, UserIdGroupPair,
};
use tap_core::idempotent::NoBlindRetry;
use tap_core::naming::{Tag, TAG_COMPONENT, TAG_ENVIRONMENT};
use tap_core::AwsError;

use crate::rule::{Rule, RuleSource};

/// A security group as `DescribeSecurityGroups` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedGroup {
    /// Group id.
    pub id: String,
    /// Group name.
    pub name: String,
    /// The VPC it is in.
    pub vpc_id: String,
    /// Value of the `tap:component` tag.
    pub component: Option<String>,
    /// All its tags (ownership: `ManagedBy=tap` and `Environment`).
    pub tags: Vec<Tag>,
    /// Ingress rules, one per source.
    pub ingress: Vec<Rule>,
    /// Egress rules, one per destination.
    pub egress: Vec<Rule>,
}

/// The EC2 calls this crate makes.
#[cfg_attr(any(test, feature = "test-util"), mockall::automock)]
#[async_trait]
pub trait Ec2Api: Send + Sync {
    /// `DescribeSecurityGroups` filtered by tag `Environment` = `env` and, when given, the VPC.
    async fn describe_security_groups(&self, env: &str, vpc_id: Option<String>)
        -> Result<Vec<ObservedGroup>, AwsError>;
    /// `CreateSecurityGroup` with `TagSpecifications`; returns the group id.
    async fn create_security_group(
        &self,
        name: &str,
        description: &str,
        vpc_id: &str,
        tags: &[Tag],
    ) -> Result<String, AwsError>;
    /// `AuthorizeSecurityGroupIngress`.
    async fn authorize_ingress(&self, group_id: &str, rules: &[Rule]) -> Result<(), AwsError>;
    /// `RevokeSecurityGroupIngress`.
    async fn revoke_ingress(&self, group_id: &str, rules: &[Rule]) -> Result<(), AwsError>;
    /// `AuthorizeSecurityGroupEgress`.
    async fn authorize_egress(&self, group_id: &str, rules: &[Rule]) -> Result<(), AwsError>;
    /// `RevokeSecurityGroupEgress`.
    async fn revoke_egress(&self, group_id: &str, rules: &[Rule]) -> Result<(), AwsError>;
    /// `DeleteSecurityGroup`.
    async fn delete_security_group(&self, group_id: &str) -> Result<(), AwsError>;
}

/// [`Ec2Api`] over the AWS SDK.
#[derive(Debug, Clone)]
pub struct SdkEc2(pub aws_sdk_ec2::Client);

fn rules_of(permissions: &[IpPermission]) -> Vec<Rule> {
    let mut rules = Vec::new();
    for p in permissions {
        let rule = |source| Rule::normalized(p.ip_protocol().unwrap_or("-1"), p.from_port(), p.to_port(), source);
        rules.extend(p.ip_ranges().iter().filter_map(|r| r.cidr_ip()).map(|c| rule(RuleSource::Cidr(c.into()))));
        rules
            .extend(p.ipv6_ranges().iter().filter_map(|r| r.cidr_ipv6()).map(|c| rule(RuleSource::Ipv6Cidr(c.into()))));
        rules.extend(
            p.user_id_group_pairs().iter().filter_map(|g| g.group_id()).map(|g| rule(RuleSource::Group(g.into()))),
        );
        rules.extend(
            p.prefix_list_ids()
                .iter()
                .filter_map(|l| l.prefix_list_id())
                .map(|l| rule(RuleSource::PrefixList(l.into()))),
        );
    }
    rules
}

fn permissions_of(rules: &[Rule]) -> Vec<IpPermission> {
    rules
        .iter()
        .map(|r| {
            let b = IpPermission::builder().ip_protocol(&r.protocol).set_from_port(r.from_port).set_to_port(r.to_port);
            match &r.source {
                RuleSource::Cidr(c) => b.ip_ranges(IpRange::builder().cidr_ip(c).build()),
                RuleSource::Ipv6Cidr(c) => b.ipv6_ranges(Ipv6Range::builder().cidr_ipv6(c).build()),
                RuleSource::Group(g) => b.user_id_group_pairs(UserIdGroupPair::builder().group_id(g).build()),
                RuleSource::PrefixList(l) => b.prefix_list_ids(PrefixListId::builder().prefix_list_id(l).build()),
            }
            .build()
        })
        .collect()
}

/// Creates the SDK must not resend blindly when their outcome is unknown (no answer, or a 5xx
/// answer): the step looks first (see `tap_core::idempotent`).
fn no_blind_retry() -> aws_sdk_ec2::config::Builder {
    aws_sdk_ec2::Config::builder().retry_classifier(NoBlindRetry)
}

#[async_trait]
impl Ec2Api for SdkEc2 {
    async fn describe_security_groups(
        &self,
        env: &str,
        vpc_id: Option<String>,
    ) -> Result<Vec<ObservedGroup>, AwsError> {
        let mut filters = vec![Filter::builder().name(format!("tag:{TAG_ENVIRONMENT}")).values(env).build()];
        if let Some(vpc) = vpc_id {
            filters.push(Filter::builder().name("vpc-id").values(vpc).build());
        }
        let groups = self
            .0
            .describe_security_groups()
            .set_filters(Some(filters))
            .into_paginator()
            .items()
            .send()
            .try_collect()
            .await?;
        Ok(groups
            .into_iter()
            .map(|g| ObservedGroup {
                id: g.group_id().unwrap_or_default().to_string(),
                name: g.group_name().unwrap_or_default().to_string(),
                vpc_id: g.vpc_id().unwrap_or_default().to_string(),
                component: g
                    .tags()
                    .iter()
                    .find(|t| t.key() == Some(TAG_COMPONENT))
                    .and_then(|t| t.value())
                    .map(str::to_owned),
                tags: g
                    .tags()
                    .iter()
                    .map(|t| (t.key().unwrap_or_default().to_owned(), t.value().unwrap_or_default().to_owned()))
                    .collect(),
                ingress: rules_of(g.ip_permissions()),
                egress: rules_of(g.ip_permissions_egress()),
            })
            .collect())
    }

    async fn create_security_group(
        &self,
        name: &str,
        description: &str,
        vpc_id: &str,
        tags: &[Tag],
    ) -> Result<String, AwsError> {
        let tags = TagSpecification::builder()
            .resource_type(ResourceType::SecurityGroup)
            .set_tags(Some(
                tags.iter().map(|(k, v)| aws_sdk_ec2::types::Tag::builder().key(k).value(v).build()).collect(),
            ))
            .build();
        let out = self
            .0
            .create_security_group()
            .group_name(name)
            .description(description)
            .vpc_id(vpc_id)
            .tag_specifications(tags)
            .customize()
            .config_override(no_blind_retry())
            .send()
            .await?;
        Ok(out.group_id().unwrap_or_default().to_string())
    }

    async fn authorize_ingress(&self, group_id: &str, rules: &[Rule]) -> Result<(), AwsError> {
        self.0
            .authorize_security_group_ingress()
            .group_id(group_id)
            .set_ip_permissions(Some(permissions_of(rules)))
            .customize()
            .config_override(no_blind_retry())
            .send()
            .await?;
        Ok(())
    }

    async fn revoke_ingress(&self, group_id: &str, rules: &[Rule]) -> Result<(), AwsError> {
        self.0
            .revoke_security_group_ingress()
            .group_id(group_id)
            .set_ip_permissions(Some(permissions_of(rules)))
            .send()
            .await?;
        Ok(())
    }

    async fn authorize_egress(&self, group_id: &str, rules: &[Rule]) -> Result<(), AwsError> {
        self.0
            .authorize_security_group_egress()
            .group_id(group_id)
            .set_ip_permissions(Some(permissions_of(rules)))
            .customize()
            .config_override(no_blind_retry())
            .send()
            .await?;
        Ok(())
    }

    async fn revoke_egress(&self, group_id: &str, rules: &[Rule]) -> Result<(), AwsError> {
        self.0
            .revoke_security_group_egress()
            .group_id(group_id)
            .set_ip_permissions(Some(permissions_of(rules)))
            .send()
            .await?;
        Ok(())
    }

    async fn delete_security_group(&self, group_id: &str) -> Result<(), AwsError> {
        self.0.delete_security_group().group_id(group_id).send().await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sdk_permissions_round_trip() {
        let rules = vec![
            Rule::tcp(80, RuleSource::Cidr("0.0.0.0/0".into())),
            Rule::tcp(9000, RuleSource::Group("sg-123".into())),
            Rule::all(RuleSource::Ipv6Cidr("::/0".into())),
        ];
        assert_eq!(rules_of(&permissions_of(&rules)), rules);
    }
}
