//! The network of an environment built with `tap-network` alone — no `tap` binary, no other
//! step — against a local `moto_server` (the one `AWS_ENDPOINT_URL` names, or one it starts; see
//! `tap-moto`). It deploys the network with a single NAT gateway, shows that a second plan is
//! empty, then destroys everything.
//!
//! ```sh
//! cargo run -p tap-network --example network_alone                 # starts its own moto_server
//! AWS_ENDPOINT_URL=http://127.0.0.1:5000 cargo run -p tap-network --example network_alone
//! ```

use tap_core::config::NatMode;
use tap_core::outputs::NetworkOutputs;
use tap_core::{Config, Context, Step};
use tap_network::NetworkStep;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The emulator AWS_ENDPOINT_URL names (the tests' one), or one of our own (alive while `_moto` is).
    let (session, _moto) = tap_moto::session::example_session().await?;
    let step = NetworkStep::from_session(&session);

    let mut config = Config { environment: "network-alone".into(), ..Config::default() };
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
