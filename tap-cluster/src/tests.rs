//! Unit tests of the cluster step over a mocked [`EcsApi`](crate::EcsApi).

use super::*;
use tap_core::config::ClusterSettings;
use tap_core::naming::Tag;
use tap_core::{Action, AwsError, Config};

fn ctx() -> Context {
    Context::new(Config::default())
}

fn matching() -> ObservedCluster {
    let spec = ClusterSpec::new("tap-cluster-dev", &ClusterSettings::default());
    ObservedCluster {
        name: spec.name,
        arn: "arn:aws:ecs:us-east-1:123456789012:cluster/tap-cluster-dev".into(),
        status: "ACTIVE".into(),
        container_insights: Some("disabled".into()),
        capacity_providers: spec.capacity_providers,
        default_strategy: spec.default_strategy,
        tags: tap_core::naming::Names::new(&Config::default()).tags(COMPONENT, "tap-cluster-dev"),
    }
}

fn no_mutations(mock: &mut MockEcsApi) {
    mock.expect_create_cluster().never();
    mock.expect_update_container_insights().never();
    mock.expect_put_capacity_providers().never();
    mock.expect_delete_cluster().never();
}

#[test]
fn spec_is_20_percent_on_demand() {
    let spec = ClusterSpec::new("c", &ClusterSettings::default());
    assert_eq!(spec.capacity_providers, ["FARGATE", "FARGATE_SPOT"]);
    assert_eq!(
        spec.default_strategy,
        [
            StrategyItem { provider: "FARGATE".into(), base: 1, weight: 1 },
            StrategyItem { provider: "FARGATE_SPOT".into(), base: 0, weight: 4 }
        ]
    );
    assert_eq!(spec.container_insights, "disabled");
}

#[tokio::test]
async fn creates_the_cluster_with_providers_strategy_and_tags() {
    let mut mock = MockEcsApi::new();
    mock.expect_describe_cluster().withf(|n: &str| n == "tap-cluster-dev").times(1).returning(|_| Ok(None));
    mock.expect_create_cluster()
        .withf(|spec: &ClusterSpec, tags: &[Tag]| {
            spec == &ClusterSpec::new("tap-cluster-dev", &ClusterSettings::default())
                && tags.contains(&("Environment".into(), "dev".into()))
                && tags.contains(&("Name".into(), "tap-cluster-dev".into()))
                && tags.contains(&("tap:component".into(), COMPONENT.into()))
        })
        .times(1)
        .returning(|_, _| Ok(matching()));
    mock.expect_update_container_insights().never();
    mock.expect_put_capacity_providers().never();
    let ctx = ctx();
    let changes = ClusterStep::new(Arc::new(mock)).apply(&ctx).await.unwrap();
    assert_eq!(changes, vec![Change::create(COMPONENT, "tap-cluster-dev")]);
    assert_eq!(ctx.get::<ClusterOutputs>("t").unwrap().arn, matching().arn);
}

#[tokio::test]
async fn create_that_drops_the_strategy_is_corrected_in_the_same_run() {
    let mut mock = MockEcsApi::new();
    mock.expect_describe_cluster().returning(|_| Ok(None));
    mock.expect_create_cluster()
        .times(1)
        .returning(|_, _| Ok(ObservedCluster { default_strategy: vec![], ..matching() }));
    mock.expect_put_capacity_providers().times(1).returning(|_, _, _| Ok(()));
    mock.expect_update_container_insights().never();
    let changes = ClusterStep::new(Arc::new(mock)).apply(&ctx()).await.unwrap();
    assert_eq!(changes.len(), 1);
}

#[tokio::test]
async fn inactive_cluster_is_created_again() {
    let mut mock = MockEcsApi::new();
    mock.expect_describe_cluster().returning(|_| Ok(Some(ObservedCluster { status: "INACTIVE".into(), ..matching() })));
    mock.expect_create_cluster().times(1).returning(|_, _| Ok(matching()));
    mock.expect_update_container_insights().never();
    mock.expect_put_capacity_providers().never();
    let changes = ClusterStep::new(Arc::new(mock)).apply(&ctx()).await.unwrap();
    assert_eq!(changes[0].action, Action::Create);
}

#[tokio::test]
async fn matching_cluster_gets_no_mutating_call() {
    let mut mock = MockEcsApi::new();
    mock.expect_describe_cluster().times(1).returning(|_| Ok(Some(matching())));
    no_mutations(&mut mock);
    let ctx = ctx();
    assert!(ClusterStep::new(Arc::new(mock)).apply(&ctx).await.unwrap().is_empty());
    assert_eq!(ctx.get::<ClusterOutputs>("t").unwrap().name, "tap-cluster-dev");
}

#[tokio::test]
async fn strategy_order_does_not_matter() {
    let mut mock = MockEcsApi::new();
    mock.expect_describe_cluster().returning(|_| {
        let mut c = matching();
        c.default_strategy.reverse();
        c.capacity_providers.reverse();
        Ok(Some(c))
    });
    no_mutations(&mut mock);
    assert!(ClusterStep::new(Arc::new(mock)).apply(&ctx()).await.unwrap().is_empty());
}

#[tokio::test]
async fn drifted_strategy_gets_exactly_one_put() {
    let mut mock = MockEcsApi::new();
    mock.expect_describe_cluster().returning(|_| {
        let mut c = matching();
        c.default_strategy[1].weight = 1;
        Ok(Some(c))
    });
    mock.expect_put_capacity_providers()
        .withf(|name: &str, providers: &[String], strategy: &[StrategyItem]| {
            name == "tap-cluster-dev"
                && providers == ["FARGATE", "FARGATE_SPOT"]
                && strategy == ClusterSpec::new("x", &ClusterSettings::default()).default_strategy
        })
        .times(1)
        .returning(|_, _, _| Ok(()));
    mock.expect_create_cluster().never();
    mock.expect_update_container_insights().never();
    let changes = ClusterStep::new(Arc::new(mock)).apply(&ctx()).await.unwrap();
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0].attributes.len(), 1);
    assert_eq!(changes[0].attributes[0].attribute, "default_capacity_provider_strategy");
}

#[tokio::test]
async fn plan_lists_exactly_the_update_apply_makes() {
    let drifted = || {
        let mut c = matching();
        c.default_strategy[1].weight = 1;
        c.container_insights = None;
        c
    };
    let mut config = Config::default();
    config.cluster.container_insights = true;
    let ctx = Context::new(config);
    let mut plan_mock = MockEcsApi::new();
    plan_mock.expect_describe_cluster().returning(move |_| Ok(Some(drifted())));
    no_mutations(&mut plan_mock);
    let planned = ClusterStep::new(Arc::new(plan_mock)).plan(&ctx).await.unwrap();

    let mut mock = MockEcsApi::new();
    mock.expect_describe_cluster().returning(move |_| Ok(Some(drifted())));
    mock.expect_update_container_insights().times(1).returning(|_, _| Ok(()));
    mock.expect_put_capacity_providers().times(1).returning(|_, _, _| Ok(()));
    mock.expect_create_cluster().never();
    let applied = ClusterStep::new(Arc::new(mock)).apply(&ctx).await.unwrap();
    assert_eq!(planned, applied);
    let attrs: Vec<&str> = applied[0].attributes.iter().map(|a| a.attribute.as_str()).collect();
    assert_eq!(attrs, ["container_insights", "default_capacity_provider_strategy"]);
}

#[tokio::test]
async fn container_insights_follows_the_config() {
    let mut mock = MockEcsApi::new();
    mock.expect_describe_cluster().returning(|_| Ok(Some(matching())));
    mock.expect_update_container_insights()
        .withf(|n: &str, v: &str| n == "tap-cluster-dev" && v == "enabled")
        .times(1)
        .returning(|_, _| Ok(()));
    mock.expect_put_capacity_providers().never();
    mock.expect_create_cluster().never();
    let mut config = Config::default();
    config.cluster.container_insights = true;
    let changes = ClusterStep::new(Arc::new(mock)).apply(&Context::new(config)).await.unwrap();
    assert_eq!(changes[0].attributes[0].attribute, "container_insights");
}

#[tokio::test]
async fn plan_makes_no_mutating_call() {
    let mut mock = MockEcsApi::new();
    mock.expect_describe_cluster().returning(|_| Ok(None));
    no_mutations(&mut mock);
    let ctx = ctx();
    let changes = ClusterStep::new(Arc::new(mock)).plan(&ctx).await.unwrap();
    assert_eq!(changes, vec![Change::create(COMPONENT, "tap-cluster-dev")]);
    assert_eq!(ctx.get::<ClusterOutputs>("t").unwrap().arn, PENDING);

    let mut mock = MockEcsApi::new();
    mock.expect_describe_cluster()
        .returning(|_| Ok(Some(ObservedCluster { capacity_providers: vec![], ..matching() })));
    no_mutations(&mut mock);
    let changes = ClusterStep::new(Arc::new(mock)).plan(&ctx).await.unwrap();
    assert_eq!(changes[0].action, Action::Update);
}

#[tokio::test]
async fn throttling_surfaces_as_retryable() {
    let mut mock = MockEcsApi::new();
    mock.expect_describe_cluster().returning(|_| Err(AwsError::throttling()));
    no_mutations(&mut mock);
    let err = ClusterStep::new(Arc::new(mock)).apply(&ctx()).await.unwrap_err();
    assert!(err.is_retryable());
    assert!(err.to_string().contains("DescribeClusters"), "{err}");
}

#[tokio::test]
async fn destroy_on_an_empty_environment_succeeds() {
    let mut mock = MockEcsApi::new();
    mock.expect_describe_cluster().returning(|_| Ok(None));
    no_mutations(&mut mock);
    assert!(ClusterStep::new(Arc::new(mock)).destroy(&ctx()).await.unwrap().is_empty());

    let mut mock = MockEcsApi::new();
    mock.expect_describe_cluster().returning(|_| Ok(Some(ObservedCluster { status: "INACTIVE".into(), ..matching() })));
    no_mutations(&mut mock);
    assert!(ClusterStep::new(Arc::new(mock)).destroy(&ctx()).await.unwrap().is_empty());
}

#[tokio::test]
async fn destroy_deletes_and_treats_not_found_as_done() {
    let mut mock = MockEcsApi::new();
    mock.expect_describe_cluster().returning(|_| Ok(Some(matching())));
    mock.expect_delete_cluster().withf(|n: &str| n == "tap-cluster-dev").times(1).returning(|_| Ok(()));
    let changes = ClusterStep::new(Arc::new(mock)).destroy(&ctx()).await.unwrap();
    assert_eq!(changes, vec![Change::delete(COMPONENT, "tap-cluster-dev")]);

    let mut mock = MockEcsApi::new();
    mock.expect_describe_cluster().returning(|_| Ok(Some(matching())));
    mock.expect_delete_cluster().times(1).returning(|_| Err(AwsError::new("ClusterNotFoundException", "gone")));
    assert!(ClusterStep::new(Arc::new(mock)).destroy(&ctx()).await.unwrap().is_empty());
}
