//! End-to-end test of the ingress step: `tap deploy --no-wait` against moto_server, read back with
//! the ELBv2 and EC2 SDKs (load balancer, target groups, listener, rule), health-check drift seen by
//! `plan --detailed-exitcode` and repaired by deploy, a second deploy without mutating ELB calls, and
//! a destroy that leaves no load balancer or target group of the environment behind.

use std::collections::BTreeSet;

use aws_sdk_ec2::types::Filter;
use aws_sdk_elasticloadbalancingv2::types::{ActionTypeEnum, LoadBalancer, TargetGroup};
use serde_json::Value;
use tests::{changes_of, tap_json, TestEnv};

const ELB: &str = "Elastic Load Balancing v2";

/// Mutating ELBv2 operations and their counts.
fn elb_mutations(doc: &Value) -> Vec<(String, u64)> {
    let ops = tests::mutating_calls(doc).into_iter();
    ops.filter_map(|(key, n)| Some((key.strip_prefix(ELB)?.strip_prefix(':')?.to_string(), n))).collect()
}

async fn load_balancer(elb: &aws_sdk_elasticloadbalancingv2::Client, name: &str) -> Option<LoadBalancer> {
    match elb.describe_load_balancers().names(name).send().await {
        Ok(out) => out.load_balancers().first().cloned(),
        Err(e) => {
            let e = tap_core::AwsError::from(e);
            assert!(e.is_not_found(), "DescribeLoadBalancers: {e}");
            None
        }
    }
}

async fn target_group(elb: &aws_sdk_elasticloadbalancingv2::Client, name: &str) -> Option<TargetGroup> {
    match elb.describe_target_groups().names(name).send().await {
        Ok(out) => out.target_groups().first().cloned(),
        Err(e) => {
            let e = tap_core::AwsError::from(e);
            assert!(e.is_not_found(), "DescribeTargetGroups: {e}");
            None
        }
    }
}

#[tokio::test]
async fn ingress_step_builds_the_spec_repairs_drift_and_destroys() {
    let env = TestEnv::new("ingress-e2e");
    let s = env.suffix.clone();
    let (lb_name, fe_name, api_name) = (format!("tap-alb-{s}"), format!("tap-fe-{s}"), format!("tap-api-{s}"));

    let first = tap_json(&env, &["deploy", "--no-wait"], 0);
    let created = changes_of(&first, "ingress");
    for resource in [
        "ingress/load-balancer",
        "ingress/target-group/frontend",
        "ingress/target-group/api-gateway",
        "ingress/listener/http",
        "ingress/listener/http/rule/api-gateway",
    ] {
        assert!(created.contains(&(resource.to_string(), "create".to_string())), "{resource} not created: {created:?}");
    }

    let clients = env.clients().await;
    let (elb, ec2) = (&clients.elbv2, &clients.ec2);

    // The load balancer: internet-facing application LB over the 3 public subnets with the ALB SG.
    let lb = load_balancer(elb, &lb_name).await.expect("load balancer exists");
    assert_eq!(lb.scheme().map(|s| s.as_str()), Some("internet-facing"));
    assert_eq!(lb.r#type().map(|t| t.as_str()), Some("application"));
    let lb_arn = lb.load_balancer_arn().unwrap().to_string();
    let vpc_id = lb.vpc_id().unwrap().to_string();
    let subnet_ids: Vec<String> =
        lb.availability_zones().iter().filter_map(|az| az.subnet_id().map(str::to_owned)).collect();
    assert_eq!(subnet_ids.len(), 3, "{subnet_ids:?}");
    let subnets = ec2.describe_subnets().set_subnet_ids(Some(subnet_ids.clone())).send().await.unwrap();
    let cidrs: BTreeSet<&str> = subnets.subnets().iter().filter_map(|s| s.cidr_block()).collect();
    assert_eq!(cidrs, BTreeSet::from(["10.0.0.0/24", "10.0.1.0/24", "10.0.2.0/24"]), "the public subnets");
    let azs: BTreeSet<&str> = subnets.subnets().iter().filter_map(|s| s.availability_zone()).collect();
    assert_eq!(azs.len(), 3, "one subnet per AZ");
    let alb_sg = ec2
        .describe_security_groups()
        .filters(Filter::builder().name("group-name").values(format!("tap-alb-sg-{s}")).build())
        .filters(Filter::builder().name("vpc-id").values(&vpc_id).build())
        .send()
        .await
        .unwrap();
    let alb_sg_id = alb_sg.security_groups().first().and_then(|g| g.group_id()).expect("ALB SG").to_string();
    assert_eq!(lb.security_groups(), [alb_sg_id]);
    let dns = lb.dns_name().unwrap().to_string();
    assert!(!dns.is_empty());

    // Target groups.
    let fe = target_group(elb, &fe_name).await.expect("frontend target group");
    let api = target_group(elb, &api_name).await.expect("api target group");
    for (tg, port, path) in [(&fe, 3000, "/"), (&api, 8080, "/health")] {
        let name = tg.target_group_name().unwrap();
        assert_eq!(tg.target_type().map(|t| t.as_str()), Some("ip"), "{name}");
        assert_eq!(tg.protocol().map(|p| p.as_str()), Some("HTTP"), "{name}");
        assert_eq!(tg.port(), Some(port), "{name}");
        assert_eq!(tg.vpc_id(), Some(vpc_id.as_str()), "{name}");
        assert_eq!(tg.health_check_path(), Some(path), "{name}");
        assert_eq!(tg.healthy_threshold_count(), Some(2), "{name}");
        assert_eq!(tg.unhealthy_threshold_count(), Some(3), "{name}");
        assert_eq!(tg.health_check_interval_seconds(), Some(30), "{name}");
    }
    let (fe_arn, api_arn) = (fe.target_group_arn().unwrap().to_string(), api.target_group_arn().unwrap().to_string());

    // Listener :80 → frontend; rule /api/* → api-gateway.
    let listeners = elb.describe_listeners().load_balancer_arn(&lb_arn).send().await.unwrap();
    assert_eq!(listeners.listeners().len(), 1, "{:?}", listeners.listeners());
    let http = &listeners.listeners()[0];
    assert_eq!(http.port(), Some(80));
    assert_eq!(http.protocol().map(|p| p.as_str()), Some("HTTP"));
    let default = &http.default_actions()[0];
    assert_eq!(default.r#type(), Some(&ActionTypeEnum::Forward));
    assert_eq!(default.target_group_arn(), Some(fe_arn.as_str()));
    let rules = elb.describe_rules().listener_arn(http.listener_arn().unwrap()).send().await.unwrap();
    let path_rules: Vec<_> = rules.rules().iter().filter(|r| !r.is_default().unwrap_or(false)).collect();
    assert_eq!(path_rules.len(), 1, "{path_rules:?}");
    let rule = path_rules[0];
    assert_eq!(rule.priority(), Some("10"));
    let condition = &rule.conditions()[0];
    assert_eq!(condition.field(), Some("path-pattern"));
    let values =
        condition.path_pattern_config().map(|p| p.values().to_vec()).unwrap_or_else(|| condition.values().to_vec());
    assert_eq!(values, ["/api/*"]);
    assert_eq!(rule.actions()[0].target_group_arn(), Some(api_arn.as_str()));

    // Drift: someone changes the api health-check path.
    elb.modify_target_group().target_group_arn(&api_arn).health_check_path("/drifted").send().await.unwrap();
    let plan = tap_json(&env, &["plan", "--detailed-exitcode"], 2);
    let planned: Vec<&Value> = plan["changes"].as_array().unwrap().iter().filter(|c| c["step"] == "ingress").collect();
    assert_eq!(planned.len(), 1, "{planned:?}");
    assert_eq!(planned[0]["resource"], "ingress/target-group/api-gateway");
    assert_eq!(planned[0]["action"], "update");
    assert_eq!(planned[0]["attributes"][0]["attribute"], "health_check_path");
    assert!(elb_mutations(&plan).is_empty(), "plan mutated: {:?}", elb_mutations(&plan));
    assert_eq!(
        target_group(elb, &api_name).await.unwrap().health_check_path(),
        Some("/drifted"),
        "plan changed nothing"
    );

    let repair = tap_json(&env, &["deploy", "--no-wait"], 0);
    assert_eq!(
        changes_of(&repair, "ingress"),
        [("ingress/target-group/api-gateway".to_string(), "update".to_string())]
    );
    assert_eq!(elb_mutations(&repair), [("ModifyTargetGroup".to_string(), 1)], "{}", repair["calls"]);
    assert_eq!(target_group(elb, &api_name).await.unwrap().health_check_path(), Some("/health"));

    // A deploy right after makes no mutating ELB call and changes nothing.
    let again = tap_json(&env, &["deploy", "--no-wait"], 0);
    assert!(changes_of(&again, "ingress").is_empty(), "{:?}", changes_of(&again, "ingress"));
    assert!(elb_mutations(&again).is_empty(), "{:?}", elb_mutations(&again));

    // Destroy leaves no load balancer or target group of the environment.
    let destroyed = tap_json(&env, &["destroy", "--yes"], 0);
    let deleted = changes_of(&destroyed, "ingress");
    for resource in ["ingress/load-balancer", "ingress/target-group/frontend", "ingress/target-group/api-gateway"] {
        assert!(deleted.contains(&(resource.to_string(), "delete".to_string())), "{resource} not deleted: {deleted:?}");
    }
    assert!(load_balancer(elb, &lb_name).await.is_none());
    assert!(target_group(elb, &fe_name).await.is_none());
    assert!(target_group(elb, &api_name).await.is_none());
    let all_lbs = elb.describe_load_balancers().send().await.unwrap();
    assert!(all_lbs.load_balancers().iter().all(|l| !l.load_balancer_name().unwrap_or_default().ends_with(&s)));
    let all_tgs = elb.describe_target_groups().send().await.unwrap();
    assert!(all_tgs.target_groups().iter().all(|t| !t.target_group_name().unwrap_or_default().ends_with(&s)));

    // Destroying again is a no-op.
    let again = tap_json(&env, &["destroy", "--yes"], 0);
    assert!(changes_of(&again, "ingress").is_empty(), "{:?}", changes_of(&again, "ingress"));
}
