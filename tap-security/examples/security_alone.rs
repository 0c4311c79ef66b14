//! The security groups, IAM roles and secrets of an environment built with `tap-security` alone
//! (and tap-core) against a local `moto_server`. The input the network step would hand over, a
//! VPC, is made here with the crate's own EC2 SDK and put into the [`Context`] by hand: deploy, a
//! second plan that is empty, destroy.
//!
//! ```sh
//! cargo run -p tap-security --example security_alone                 # starts its own moto_server
//! AWS_ENDPOINT_URL=http://127.0.0.1:5000 cargo run -p tap-security --example security_alone
//! ```

use tap_core::outputs::{NetworkOutputs, SecurityOutputs};
use tap_core::{Config, Context, Step};
use tap_security::SecurityStep;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The emulator AWS_ENDPOINT_URL names (the tests' one), or one of our own (alive while `_moto` is).
    let (session, _moto) = tap_moto::session::example_session().await?;

    // What the network step would have made: a VPC, made here with this crate's own EC2 SDK.
    let ec2: aws_sdk_ec2::Client = tap_core::sdk_client!(aws_sdk_ec2, &session);
    let vpc = ec2.create_vpc().cidr_block("10.0.0.0/16").send().await?;
    let vpc_id = vpc.vpc.and_then(|v| v.vpc_id).ok_or("CreateVpc returned no id")?;

    let config = Config { environment: "security-alone".into(), ..Config::default() };
    config.validate()?;
    let ctx = Context::new(config);
    ctx.put(NetworkOutputs { vpc_id: vpc_id.clone(), public_subnets: vec![], private_subnets: vec![] });
    let step = SecurityStep::from_session(&session);

    println!("deploy:");
    for change in step.apply(&ctx).await? {
        println!("  {change}");
    }
    let security: SecurityOutputs = ctx.get("example")?;
    println!("  execution role {}", security.execution_role_arn);
    for (service, group) in &security.service_security_group_ids {
        println!("  {service}: security group {group}, task role {}", security.task_role_arns[service]);
    }
    let again = step.plan(&ctx).await?;
    println!("second plan: {} change(s)", again.len());
    assert!(again.is_empty(), "converged security plans nothing");

    println!("destroy:");
    for change in step.destroy(&ctx).await? {
        println!("  {change}");
    }
    ec2.delete_vpc().vpc_id(&vpc_id).send().await?;
    println!("calls: {}", session.counter().snapshot().total);
    Ok(())
}
