//! The load balancer of an environment built with `tap-ingress` alone, against a local
//! `moto_server` (the one `AWS_ENDPOINT_URL` names, or one it starts; see `tap-moto`). The inputs
//! other steps would hand over — a VPC with public subnets and the load balancer's security group —
//! are made here with the EC2 SDK (a dev-dependency only) and put into the [`Context`] by hand.
//!
//! ```sh
//! cargo run -p tap-ingress --example ingress_alone                 # starts its own moto_server
//! AWS_ENDPOINT_URL=http://127.0.0.1:5000 cargo run -p tap-ingress --example ingress_alone
//! ```

use std::collections::BTreeMap;

use tap_core::outputs::{IngressOutputs, NetworkOutputs, SecurityOutputs, SubnetRef};
use tap_core::{Config, Context, Step};
use tap_ingress::IngressStep;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The emulator AWS_ENDPOINT_URL names (the tests' one), or one of our own (alive while `_moto` is).
    let (session, _moto) = tap_moto::session::example_session().await?;
    let ec2 = aws_sdk_ec2::Client::new(session.sdk_config());

    // What the network and security steps would have made.
    let vpc_id =
        ec2.create_vpc().cidr_block("10.0.0.0/16").send().await?.vpc.and_then(|v| v.vpc_id).unwrap_or_default();
    let mut public_subnets = Vec::new();
    for (i, az) in ["us-east-1a", "us-east-1b", "us-east-1c"].into_iter().enumerate() {
        let subnet = ec2
            .create_subnet()
            .vpc_id(&vpc_id)
            .cidr_block(format!("10.0.{i}.0/24"))
            .availability_zone(az)
            .send()
            .await?;
        let id = subnet.subnet.and_then(|s| s.subnet_id).unwrap_or_default();
        public_subnets.push(SubnetRef { az: az.into(), id });
    }
    let sg =
        ec2.create_security_group().group_name("alb-example").description("example").vpc_id(&vpc_id).send().await?;

    let config = Config { environment: "ingress-alone".into(), ..Config::default() };
    config.validate()?;
    let ctx = Context::new(config);
    ctx.put(NetworkOutputs { vpc_id: vpc_id.clone(), public_subnets, private_subnets: vec![] });
    ctx.put(SecurityOutputs {
        alb_security_group_id: sg.group_id.unwrap_or_default(),
        service_security_group_ids: BTreeMap::new(),
        execution_role_arn: String::new(),
        task_role_arns: BTreeMap::new(),
        secret_arns: BTreeMap::new(),
        infrastructure_role_arn: None,
    });

    let step = IngressStep::from_session(&session);
    println!("deploy:");
    for change in step.apply(&ctx).await? {
        println!("  {change}");
    }
    let ingress: IngressOutputs = ctx.get("example")?;
    println!("load balancer http://{}", ingress.dns_name);
    for (service, arn) in &ingress.target_group_arns {
        println!("  {service} → {arn}");
    }
    assert!(step.plan(&ctx).await?.is_empty(), "a converged ingress plans nothing");

    println!("destroy:");
    for change in step.destroy(&ctx).await? {
        println!("  {change}");
    }
    Ok(())
}
