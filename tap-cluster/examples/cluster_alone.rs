//! The ECS cluster of an environment (Fargate and Fargate Spot capacity providers) built with
//! `tap-cluster` alone (and tap-core) against a local `moto_server`: deploy, a second plan that is
//! empty, destroy.
//!
//! ```sh
//! cargo run -p tap-cluster --example cluster_alone                 # starts its own moto_server
//! AWS_ENDPOINT_URL=http://127.0.0.1:5000 cargo run -p tap-cluster --example cluster_alone
//! ```

use tap_cluster::ClusterStep;
use tap_core::outputs::ClusterOutputs;
use tap_core::{Config, Context, Step};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The emulator AWS_ENDPOINT_URL names (the tests' one), or one of our own (alive while `_moto` is).
    let (session, _moto) = tap_moto::session::example_session().await?;

    let config = Config { environment: "cluster-alone".into(), ..Config::default() };
    config.validate()?;
    let ctx = Context::new(config);
    let step = ClusterStep::from_session(&session);

    println!("deploy:");
    for change in step.apply(&ctx).await? {
        println!("  {change}");
    }
    let cluster: ClusterOutputs = ctx.get("example")?;
    println!("  {} ({})", cluster.name, cluster.arn);
    let again = step.plan(&ctx).await?;
    println!("second plan: {} change(s)", again.len());
    assert!(again.is_empty(), "a converged cluster plans nothing");

    println!("destroy:");
    for change in step.destroy(&ctx).await? {
        println!("  {change}");
    }
    println!("calls: {}", session.counter().snapshot().total);
    Ok(())
}
