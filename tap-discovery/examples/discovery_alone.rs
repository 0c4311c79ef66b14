//! The Cloud Map namespace and services of an environment built with `tap-discovery` alone (and
//! tap-core) against a local `moto_server`. The network step's output (the VPC id) is put into the
//! [`Context`] by hand: deploy, a second plan that is empty, destroy.
//!
//! ```sh
//! cargo run -p tap-discovery --example discovery_alone                 # starts its own moto_server
//! AWS_ENDPOINT_URL=http://127.0.0.1:5000 cargo run -p tap-discovery --example discovery_alone
//! ```

use tap_core::outputs::{DiscoveryOutputs, NetworkOutputs};
use tap_core::{Config, Context, Step};
use tap_discovery::DiscoveryStep;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The emulator AWS_ENDPOINT_URL names (the tests' one), or one of our own (alive while `_moto` is).
    let (session, _moto) = tap_moto::session::example_session().await?;

    let config = Config { environment: "discovery-alone".into(), ..Config::default() };
    config.validate()?;
    let ctx = Context::new(config);
    // What the network step would have made; Cloud Map only records the VPC id of a private
    // namespace, so this crate alone needs no EC2 SDK to make one.
    ctx.put(NetworkOutputs { vpc_id: "vpc-0123456789abcdef0".into(), public_subnets: vec![], private_subnets: vec![] });
    let step = DiscoveryStep::from_session(&session);

    println!("deploy:");
    for change in step.apply(&ctx).await? {
        println!("  {change}");
    }
    let discovery: DiscoveryOutputs = ctx.get("example")?;
    println!("  namespace {} ({})", discovery.namespace_name, discovery.namespace_id);
    for (service, registered) in &discovery.services {
        println!("  {service} → {}", registered.arn);
    }
    let again = step.plan(&ctx).await?;
    println!("second plan: {} change(s)", again.len());
    assert!(again.is_empty(), "converged discovery plans nothing");

    println!("destroy:");
    for change in step.destroy(&ctx).await? {
        println!("  {change}");
    }
    println!("calls: {}", session.counter().snapshot().total);
    Ok(())
}
