//! The network of an environment built with `tap-network` alone — no `tap` binary, no other
//! step — against a local `moto_server` that this example starts (see `tap-moto` for where it
//! comes from). It deploys the network with a single NAT gateway, shows that a second plan is
//! empty, then destroys everything.
//!
//! ```sh
//! cargo run -p tap-network --example network_alone
//! ```

use std::sync::Arc;

use aws_config::{BehaviorVersion, Region};
use aws_sdk_ec2::config::Credentials;
use tap_core::config::NatMode;
use tap_core::outputs::NetworkOutputs;
use tap_core::{Config, Context, Step};
use tap_network::{NetworkStep, SdkEc2};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let moto = tap_moto::Moto::start()?;
    let sdk = aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(moto.endpoint())
        .credentials_provider(Credentials::new("testing", "testing", None, None, "example"))
        .load()
        .await;
    let step = NetworkStep::new(Arc::new(SdkEc2(aws_sdk_ec2::Client::new(&sdk))));

    let mut config = Config { environment: "example".into(), ..Config::default() };
    config.network.nat_gateways = NatMode::Single;
    config.validate()?;
    let ctx = Context::new(config);

    println!("deploy:");
    for change in step.apply(&ctx).await? {
        println!("  {change}");
    }
    let network: NetworkOutputs = ctx.get("example")?;
    println!("VPC {}", network.vpc_id);
    for subnet in network.private_subnets.iter().chain(&network.public_subnets) {
        println!("  subnet {} in {}", subnet.id, subnet.az);
    }

    let again = step.plan(&ctx).await?;
    println!("second plan: {} change(s)", again.len());
    assert!(again.is_empty(), "a converged network plans nothing");

    println!("destroy:");
    for change in step.destroy(&ctx).await? {
        println!("  {change}");
    }
    Ok(())
}
