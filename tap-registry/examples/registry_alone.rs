//! The ECR repositories of an environment built with `tap-registry` alone (and tap-core) against
//! a local `moto_server`: deploy, a second plan that is empty, destroy.
//!
//! ```sh
//! cargo run -p tap-registry --example registry_alone                 # starts its own moto_server
//! AWS_ENDPOINT_URL=http://127.0.0.1:5000 cargo run -p tap-registry --example registry_alone
//! ```

use tap_core::outputs::RegistryOutputs;
use tap_core::{Config, Context, Step};
use tap_registry::RegistryStep;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The emulator AWS_ENDPOINT_URL names (the tests' one), or one of our own (alive while `_moto` is).
    let (session, _moto) = tap_moto::session::example_session().await?;

    let config = Config { environment: "registry-alone".into(), ..Config::default() };
    config.validate()?;
    let ctx = Context::new(config);
    let step = RegistryStep::from_session(&session);

    println!("deploy:");
    for change in step.apply(&ctx).await? {
        println!("  {change}");
    }
    let registry: RegistryOutputs = ctx.get("example")?;
    for (service, repo) in &registry.repositories {
        println!("  {service} → {}", repo.uri);
    }
    let again = step.plan(&ctx).await?;
    println!("second plan: {} change(s)", again.len());
    assert!(again.is_empty(), "converged repositories plan nothing");

    println!("destroy:");
    for change in step.destroy(&ctx).await? {
        println!("  {change}");
    }
    println!("calls: {}", session.counter().snapshot().total);
    Ok(())
}
