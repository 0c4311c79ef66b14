//! The CloudWatch alarms of an environment made with `tap-alarms` alone (and tap-core) against a
//! local `moto_server` (the one `AWS_ENDPOINT_URL` names, or one it starts; see `tap-moto`). The
//! inputs the cluster and ingress steps would hand over — the cluster name, the load balancer and
//! the target groups — are put into the [`Context`] by hand: an alarm names its metric's
//! dimensions, nothing needs to exist behind them.
//!
//! ```sh
//! cargo run -p tap-alarms --example alarms_alone                 # starts its own moto_server
//! AWS_ENDPOINT_URL=http://127.0.0.1:5000 cargo run -p tap-alarms --example alarms_alone
//! ```

use std::collections::BTreeMap;

use tap_alarms::AlarmsStep;
use tap_core::outputs::{AlarmsOutputs, ClusterOutputs, IngressOutputs};
use tap_core::{Config, Context, Step};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The emulator AWS_ENDPOINT_URL names (the tests' one), or one of our own (alive while `_moto` is).
    let (session, _moto) = tap_moto::session::example_session().await?;

    let config = Config { environment: "alarms-alone".into(), ..Config::default() };
    config.validate()?;
    let ctx = Context::new(config);
    let elb = "arn:aws:elasticloadbalancing:us-east-1:123456789012";
    ctx.put(ClusterOutputs {
        name: ctx.names.cluster(),
        arn: format!("arn:aws:ecs:us-east-1:123456789012:cluster/{}", ctx.names.cluster()),
    });
    ctx.put(IngressOutputs {
        load_balancer_arn: format!("{elb}:loadbalancer/app/tap-alb-alarms-alone/50dc6c495c0c9188"),
        dns_name: "tap-alb-alarms-alone.example.com".into(),
        target_group_arns: BTreeMap::from([
            ("frontend".into(), format!("{elb}:targetgroup/tap-fe-alarms-alone/73e2d6bc24d8a067")),
            ("api-gateway".into(), format!("{elb}:targetgroup/tap-api-alarms-alone/943f017f100becff")),
        ]),
        traffic_shifts: BTreeMap::new(),
    });

    let step = AlarmsStep::from_session(&session);
    println!("deploy:");
    for change in step.apply(&ctx).await? {
        println!("  {change}");
    }
    let outputs: AlarmsOutputs = ctx.get("example")?;
    for (service, names) in &outputs.alarm_names {
        println!("  {service}: {}", names.join(", "));
    }
    let plan = step.plan(&ctx).await?;
    println!("second plan: {} change(s)", plan.len());
    assert!(plan.is_empty(), "converged alarms plan nothing");

    println!("destroy:");
    for change in step.destroy(&ctx).await? {
        println!("  {change}");
    }
    Ok(())
}
