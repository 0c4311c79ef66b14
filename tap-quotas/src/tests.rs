//! The adding-up and the decision, over a mocked Service Quotas.

use super::*;
use tap_core::quota::{Need, QuotaKey, Usage};

fn eips(n: f64) -> Need {
    Need::new(QuotaKey::ElasticIps, n, (1..=n as usize).map(|i| format!("network/eip/{i}")).collect())
}

fn in_use(key: QuotaKey, n: f64) -> Usage {
    Usage { key, zone: None, in_use: n }
}

fn applied(key: QuotaKey, value: f64) -> Limit {
    Limit { key, value, source: Source::Applied }
}

#[test]
fn a_quota_exactly_met_is_fine_one_over_is_refused_naming_quota_code_numbers_and_the_fix() {
    let met =
        Preflight::decide(&[eips(2.0)], &[in_use(QuotaKey::ElasticIps, 3.0)], &[applied(QuotaKey::ElasticIps, 5.0)]);
    assert!(met.shortfall().is_none() && met.warnings().is_empty(), "{met:?}");
    assert_eq!(met.rows[0].left(), 0.0);

    let over =
        Preflight::decide(&[eips(3.0)], &[in_use(QuotaKey::ElasticIps, 3.0)], &[applied(QuotaKey::ElasticIps, 5.0)]);
    let refused = over.shortfall().expect("one over is refused");
    let text = refused.to_string();
    for needle in [
        "EC2-VPC Elastic IPs (L-0263D0A3, service ec2)",
        "3 in use + 3 this deploy adds = 6 > quota 5 (applied (Service Quotas))",
        "aws service-quotas request-service-quota-increase --service-code ec2 --quota-code L-0263D0A3 --desired-value 6",
    ] {
        assert!(text.contains(needle), "{needle} in {text}");
    }
    let shown = over.render_text();
    assert!(shown.contains("! EC2-VPC Elastic IPs (L-0263D0A3)") && shown.contains("SHORT by 1"), "{shown}");
}

#[test]
fn needs_add_up_per_quota_and_zone() {
    let needs = vec![
        eips(1.0),
        eips(2.0),
        Need::new(QuotaKey::NatGatewaysPerAz, 1.0, vec!["network/nat/1".into()]).in_zone("eu-west-1a"),
        Need::new(QuotaKey::NatGatewaysPerAz, 1.0, vec!["network/nat/2".into()]).in_zone("eu-west-1b"),
        Need::new(QuotaKey::FargateOnDemandVcpu, 4.2, vec![]),
        Need::new(QuotaKey::FargateOnDemandVcpu, 1.8, vec![]),
    ];
    let usage = vec![Usage { key: QuotaKey::NatGatewaysPerAz, zone: Some("eu-west-1a".into()), in_use: 5.0 }];
    let limits = vec![
        applied(QuotaKey::ElasticIps, 5.0),
        applied(QuotaKey::NatGatewaysPerAz, 5.0),
        applied(QuotaKey::FargateOnDemandVcpu, 6.0),
    ];
    let p = Preflight::decide(&needs, &usage, &limits);
    let row =
        |key, zone: Option<&str>| p.rows.iter().find(|r| r.quota.key == key && r.zone.as_deref() == zone).unwrap();
    assert_eq!(row(QuotaKey::ElasticIps, None).adds, 3.0);
    assert_eq!(row(QuotaKey::ElasticIps, None).resources.len(), 3);
    assert!(row(QuotaKey::NatGatewaysPerAz, Some("eu-west-1a")).short(), "5 in use + 1 > 5 in that zone");
    assert!(!row(QuotaKey::NatGatewaysPerAz, Some("eu-west-1b")).short());
    assert!(!row(QuotaKey::FargateOnDemandVcpu, None).short(), "4.2 + 1.8 vCPUs meet 6 exactly");
    let refused = p.shortfall().unwrap();
    assert_eq!(refused.rows.len(), 1);
    assert!(refused.to_string().contains("NAT gateways per Availability Zone (eu-west-1a) (L-FE5A380F"), "{refused}");
}

#[tokio::test]
async fn the_applied_value_wins_then_the_aws_default_then_the_documented_one_saying_so() {
    let mut api = MockQuotasApi::new();
    api.expect_get_service_quota().returning(|q| match q.key {
        QuotaKey::ElasticIps => Ok(Some(5.0)),
        QuotaKey::Vpcs => Err(AwsError::new("NoSuchResourceException", "no applied value")),
        QuotaKey::LoadBalancers => Err(AwsError::new("AccessDeniedException", "not permitted")),
        _ => Err(AwsError::new("NoSuchResourceException", "unknown")),
    });
    api.expect_get_aws_default_service_quota().returning(|q| match q.key {
        QuotaKey::Vpcs => Ok(Some(7.0)),
        QuotaKey::LoadBalancers => Err(AwsError::new("AccessDeniedException", "not permitted")),
        _ => Err(AwsError::server_error("InternalFailure", "not implemented")),
    });
    let keys = [QuotaKey::ElasticIps, QuotaKey::Vpcs, QuotaKey::LoadBalancers, QuotaKey::TargetGroups];
    let limits = limits(&api, &keys).await;
    assert_eq!(limits[0], applied(QuotaKey::ElasticIps, 5.0));
    assert_eq!((limits[1].value, &limits[1].source), (7.0, &Source::AwsDefault));
    assert_eq!(limits[2].value, 50.0, "the documented default");
    let denied = limits[2].source.to_string();
    assert!(
        denied.contains("GetServiceQuota: AccessDeniedException; GetAWSDefaultServiceQuota: AccessDeniedException"),
        "{denied}"
    );
    assert_eq!(limits[3].value, 3000.0);
    let said = limits[3].source.to_string();
    assert!(
        said.contains("NoSuchResourceException") && said.contains("GetAWSDefaultServiceQuota: InternalFailure"),
        "{said}"
    );
}

#[test]
fn a_shortfall_against_a_documented_default_only_warns() {
    let limits = [Limit {
        key: QuotaKey::ElasticIps,
        value: 5.0,
        source: Source::Documented { why: "GetServiceQuota: NoSuchResourceException".into() },
    }];
    let p = Preflight::decide(&[eips(3.0)], &[in_use(QuotaKey::ElasticIps, 3.0)], &limits);
    assert!(p.shortfall().is_none(), "the account may have more than the documented default");
    assert_eq!(p.warnings().len(), 1);
    let shown = p.render_text();
    assert!(shown.contains("? EC2-VPC Elastic IPs") && shown.contains("documented default"), "{shown}");
}

#[test]
fn global_quotas_are_raised_in_us_east_1() {
    let p = Preflight::decide(
        &[Need::new(QuotaKey::IamRoles, 4.0, vec![])],
        &[in_use(QuotaKey::IamRoles, 999.0)],
        &[applied(QuotaKey::IamRoles, 1000.0)],
    );
    assert!(p.rows[0].raise_command().ends_with("--quota-code L-FE177D64 --desired-value 1003 --region us-east-1"));
}
