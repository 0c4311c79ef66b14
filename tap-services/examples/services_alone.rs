//! The plan of the services step (log groups, task definitions, ECS services, auto scaling) made
//! with `tap-services` alone (and tap-core) against a local `moto_server`. The services step reads
//! the outputs of all seven other steps; this example puts hand-made ones into the [`Context`] and
//! plans — what a first deploy would create — without a single mutating call.
//!
//! ```sh
//! cargo run -p tap-services --example services_alone                 # starts its own moto_server
//! AWS_ENDPOINT_URL=http://127.0.0.1:5000 cargo run -p tap-services --example services_alone
//! ```

use std::collections::BTreeMap;

use tap_core::outputs::{
    AlarmsOutputs, ClusterOutputs, DiscoveryOutputs, DiscoveryService, IngressOutputs, NetworkOutputs, RegistryOutputs,
    Repository, SecurityOutputs, SubnetRef,
};
use tap_core::{Config, Context, Step};
use tap_services::ServicesStep;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The emulator AWS_ENDPOINT_URL names (the tests' one), or one of our own (alive while `_moto` is).
    let (session, _moto) = tap_moto::session::example_session().await?;

    let config = Config { environment: "services-alone".into(), ..Config::default() };
    config.validate()?;
    let ctx = Context::new(config);
    // The six other steps' outputs, by hand: the services step reads every one of them. With
    // nothing deployed behind them, the plan is what a first deploy would create.
    let (region, account) = ("us-east-1", "123456789012");
    let services: Vec<String> = ctx.config.services.iter().map(|s| s.name.clone()).collect();
    let per_service = |f: &dyn Fn(&str) -> String| -> BTreeMap<String, String> {
        services.iter().map(|s| (s.clone(), f(s))).collect()
    };
    let subnets = |first: u8| -> Vec<SubnetRef> {
        ["a", "b", "c"]
            .iter()
            .zip(first..)
            .map(|(az, i)| SubnetRef { az: format!("{region}{az}"), id: format!("subnet-{i:017x}") })
            .collect()
    };
    ctx.put(NetworkOutputs {
        vpc_id: "vpc-0123456789abcdef0".into(),
        public_subnets: subnets(1),
        private_subnets: subnets(4),
    });
    ctx.put(RegistryOutputs {
        repositories: services
            .iter()
            .map(|s| {
                let name = format!("tap-{s}-services-alone");
                let uri = format!("{account}.dkr.ecr.{region}.amazonaws.com/{name}");
                let arn = format!("arn:aws:ecr:{region}:{account}:repository/{name}");
                (s.clone(), Repository { name, arn, uri, created: false })
            })
            .collect(),
    });
    ctx.put(ClusterOutputs {
        name: ctx.names.cluster(),
        arn: format!("arn:aws:ecs:{region}:{account}:cluster/{}", ctx.names.cluster()),
    });
    ctx.put(SecurityOutputs {
        alb_security_group_id: "sg-00000000000000001".into(),
        service_security_group_ids: per_service(&|_| "sg-00000000000000002".into()),
        execution_role_arn: format!("arn:aws:iam::{account}:role/tap-execution-services-alone"),
        task_role_arns: per_service(&|s| format!("arn:aws:iam::{account}:role/tap-{s}-task-services-alone")),
        secret_arns: ctx
            .config
            .secrets
            .iter()
            .map(|s| (s.name.clone(), format!("arn:aws:secretsmanager:{region}:{account}:secret:{}", s.name)))
            .collect(),
        infrastructure_role_arn: None,
    });
    ctx.put(IngressOutputs {
        load_balancer_arn: format!("arn:aws:elasticloadbalancing:{region}:{account}:loadbalancer/app/tap-alb/1"),
        dns_name: "tap-alb-services-alone.example.com".into(),
        target_group_arns: per_service(&|s| {
            format!("arn:aws:elasticloadbalancing:{region}:{account}:targetgroup/{s}/1")
        }),
        traffic_shifts: BTreeMap::new(),
    });
    ctx.put(DiscoveryOutputs {
        namespace_id: "ns-0000000000000001".into(),
        namespace_arn: format!("arn:aws:servicediscovery:{region}:{account}:namespace/ns-0000000000000001"),
        namespace_name: "tap-services-alone.local".into(),
        services: per_service(&|_| String::new())
            .into_keys()
            .map(|s| {
                let id = "srv-0000000000000001".to_string();
                let arn = format!("arn:aws:servicediscovery:{region}:{account}:service/{id}");
                (s, DiscoveryService { id, arn })
            })
            .collect(),
    });
    // The alarms each service names in its deployment configuration.
    ctx.put(AlarmsOutputs {
        alarm_names: per_service(&|_| String::new())
            .into_keys()
            .map(|s| (s.clone(), vec![ctx.names.alarm(&s, "cpu-high"), ctx.names.alarm(&s, "memory-high")]))
            .collect(),
    });
    let step = ServicesStep::from_session(&session);

    let plan = step.plan(&ctx).await?;
    println!("plan: {} change(s)", plan.len());
    for change in &plan {
        println!("  {change}");
    }
    assert!(!plan.is_empty(), "nothing is deployed: the plan creates the services");
    let counts = session.counter().snapshot();
    println!("calls: {} (mutating: {})", counts.total, counts.mutating);
    assert_eq!(counts.mutating, 0, "plan makes no mutating call");
    Ok(())
}
