//! `tap-cluster`: the environment's ECS cluster `tap-cluster-{s}`, with the FARGATE and
//! FARGATE_SPOT capacity providers, a default strategy (FARGATE base `on_demand_base` weight
//! `on_demand_weight` + FARGATE_SPOT weight `spot_weight`) and the Container Insights setting.
//!
//! - Reads from the [`Context`]: only the config (`cluster.*`) and the names.
//! - Adds: [`ClusterOutputs`] — the cluster's name and ARN.
//! - Finds the cluster by name with `DescribeClusters` (settings and tags included); an `INACTIVE`
//!   cluster (what a deleted cluster looks like for a while) counts as missing and is created
//!   again. Drift of the setting or of the capacity providers is repaired, and only then.
//! - The cluster is a [`Resource`](tap_core::resource::Resource) of the engine ([`Cluster`]): its
//!   typed [`ClusterUpdate`] is both what plan prints and the calls apply makes.
//!
//! ```no_run
//! # async fn demo(session: &tap_core::aws::AwsSession) -> Result<(), tap_core::StepError> {
//! use tap_core::{Config, Context, Step};
//! let step = tap_cluster::ClusterStep::from_session(session);
//! let ctx = Context::new(Config::default());
//! step.apply(&ctx).await?;
//! println!("{}", ctx.get::<tap_core::outputs::ClusterOutputs>("demo")?.arn);
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]

use std::sync::Arc;

use async_trait::async_trait;
use aws_sdk_ecs::types::{CapacityProviderStrategyItem, ClusterField, ClusterSetting, ClusterSettingName};
use tap_core::config::ClusterSettings;
use tap_core::naming::Tag;
use tap_core::outputs::{ClusterOutputs, PENDING};
use tap_core::resource::{ActionError, Deleted, Diff, During, Engine, Owner, Resource};
use tap_core::step::{diff, Gone, OutputKind};
use tap_core::{AwsError, Change, Context, Mode, Step, StepError};

/// The step's name.
pub const STEP: &str = "cluster";
/// Logical id of the cluster.
pub const COMPONENT: &str = "cluster/ecs-cluster";
/// The on-demand Fargate capacity provider.
pub const FARGATE: &str = "FARGATE";
/// The Fargate Spot capacity provider.
pub const FARGATE_SPOT: &str = "FARGATE_SPOT";
/// Name of the Container Insights cluster setting.
pub const CONTAINER_INSIGHTS: &str = "containerInsights";

/// One entry of a capacity-provider strategy.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct StrategyItem {
    /// Capacity provider name.
    pub provider: String,
    /// Tasks placed on this provider before weights apply.
    pub base: i32,
    /// Relative share of the tasks beyond the bases.
    pub weight: i32,
}

/// What the cluster should look like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSpec {
    /// Cluster name.
    pub name: String,
    /// `containerInsights` setting value: `enabled` or `disabled`.
    pub container_insights: String,
    /// Capacity providers, sorted.
    pub capacity_providers: Vec<String>,
    /// Default capacity-provider strategy, sorted by provider.
    pub default_strategy: Vec<StrategyItem>,
}

impl ClusterSpec {
    /// The cluster of the config's `cluster` settings, named `name`.
    pub fn new(name: impl Into<String>, settings: &ClusterSettings) -> Self {
        let to_i32 = |v: u32| i32::try_from(v).unwrap_or(i32::MAX);
        ClusterSpec {
            name: name.into(),
            container_insights: if settings.container_insights { "enabled" } else { "disabled" }.into(),
            capacity_providers: vec![FARGATE.into(), FARGATE_SPOT.into()],
            default_strategy: vec![
                StrategyItem {
                    provider: FARGATE.into(),
                    base: to_i32(settings.on_demand_base),
                    weight: to_i32(settings.on_demand_weight),
                },
                StrategyItem { provider: FARGATE_SPOT.into(), base: 0, weight: to_i32(settings.spot_weight) },
            ],
        }
    }
}

/// A cluster as ECS reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedCluster {
    /// Cluster name.
    pub name: String,
    /// Cluster ARN.
    pub arn: String,
    /// `ACTIVE`, `PROVISIONING`, `DEPROVISIONING`, `FAILED` or `INACTIVE`.
    pub status: String,
    /// The `containerInsights` setting, when reported.
    pub container_insights: Option<String>,
    /// Capacity providers, sorted.
    pub capacity_providers: Vec<String>,
    /// Default capacity-provider strategy, sorted by provider.
    pub default_strategy: Vec<StrategyItem>,
    /// Its tags.
    pub tags: Vec<Tag>,
}

/// The ECS calls this crate makes.
#[cfg_attr(any(test, feature = "test-util"), mockall::automock)]
#[async_trait]
pub trait EcsApi: Send + Sync {
    /// `DescribeClusters` (include SETTINGS and TAGS); `None` when ECS reports it missing.
    async fn describe_cluster(&self, name: &str) -> Result<Option<ObservedCluster>, AwsError>;
    /// `CreateCluster` with the setting, capacity providers, default strategy and tags.
    async fn create_cluster(&self, spec: &ClusterSpec, tags: &[Tag]) -> Result<ObservedCluster, AwsError>;
    /// `UpdateClusterSettings` for `containerInsights`.
    async fn update_container_insights(&self, name: &str, value: &str) -> Result<(), AwsError>;
    /// `PutClusterCapacityProviders`.
    async fn put_capacity_providers(
        &self,
        name: &str,
        providers: &[String],
        strategy: &[StrategyItem],
    ) -> Result<(), AwsError>;
    /// `DeleteCluster`.
    async fn delete_cluster(&self, name: &str) -> Result<(), AwsError>;
}

/// [`EcsApi`] over the real SDK client.
#[derive(Debug, Clone)]
pub struct SdkEcs(pub aws_sdk_ecs::Client);

fn strategy_items(strategy: &[StrategyItem]) -> Result<Vec<CapacityProviderStrategyItem>, AwsError> {
    strategy
        .iter()
        .map(|s| {
            CapacityProviderStrategyItem::builder()
                .capacity_provider(&s.provider)
                .base(s.base)
                .weight(s.weight)
                .build()
                .map_err(|e| AwsError::local(format!("invalid request: {e}")))
        })
        .collect()
}

fn observed(c: &aws_sdk_ecs::types::Cluster) -> ObservedCluster {
    let mut capacity_providers = c.capacity_providers().to_vec();
    capacity_providers.sort();
    let mut default_strategy: Vec<StrategyItem> = c
        .default_capacity_provider_strategy()
        .iter()
        .map(|s| StrategyItem { provider: s.capacity_provider().to_owned(), base: s.base(), weight: s.weight() })
        .collect();
    default_strategy.sort();
    ObservedCluster {
        name: c.cluster_name().unwrap_or_default().to_owned(),
        arn: c.cluster_arn().unwrap_or_default().to_owned(),
        status: c.status().unwrap_or_default().to_owned(),
        container_insights: c
            .settings()
            .iter()
            .find(|s| s.name() == Some(&ClusterSettingName::ContainerInsights))
            .and_then(|s| s.value().map(str::to_owned)),
        capacity_providers,
        default_strategy,
        tags: c.tags().iter().filter_map(|t| Some((t.key()?.to_owned(), t.value()?.to_owned()))).collect(),
    }
}

fn insights(value: &str) -> ClusterSetting {
    ClusterSetting::builder().name(ClusterSettingName::ContainerInsights).value(value).build()
}

#[async_trait]
impl EcsApi for SdkEcs {
    async fn describe_cluster(&self, name: &str) -> Result<Option<ObservedCluster>, AwsError> {
        let out = self
            .0
            .describe_clusters()
            .clusters(name)
            .include(ClusterField::Settings)
            .include(ClusterField::Tags)
            .send()
            .await?;
        Ok(out.clusters().iter().map(observed).find(|c| c.name == name))
    }

    async fn create_cluster(&self, spec: &ClusterSpec, tags: &[Tag]) -> Result<ObservedCluster, AwsError> {
        let tags = tags.iter().map(|(k, v)| aws_sdk_ecs::types::Tag::builder().key(k).value(v).build()).collect();
        let out = self
            .0
            .create_cluster()
            .cluster_name(&spec.name)
            .settings(insights(&spec.container_insights))
            .set_capacity_providers(Some(spec.capacity_providers.clone()))
            .set_default_capacity_provider_strategy(Some(strategy_items(&spec.default_strategy)?))
            .set_tags(Some(tags))
            .send()
            .await?;
        out.cluster().map(observed).ok_or_else(|| AwsError::new("InvalidResponse", "CreateCluster returned no cluster"))
    }

    async fn update_container_insights(&self, name: &str, value: &str) -> Result<(), AwsError> {
        self.0.update_cluster_settings().cluster(name).settings(insights(value)).send().await?;
        Ok(())
    }

    async fn put_capacity_providers(
        &self,
        name: &str,
        providers: &[String],
        strategy: &[StrategyItem],
    ) -> Result<(), AwsError> {
        self.0
            .put_cluster_capacity_providers()
            .cluster(name)
            .set_capacity_providers(Some(providers.to_vec()))
            .set_default_capacity_provider_strategy(Some(strategy_items(strategy)?))
            .send()
            .await?;
        Ok(())
    }

    async fn delete_cluster(&self, name: &str) -> Result<(), AwsError> {
        self.0.delete_cluster().cluster(name).send().await?;
        Ok(())
    }
}

/// The ECS cluster as a [`Resource`] of the engine: found by name (an `INACTIVE` one, what a
/// deleted cluster looks like for a while, counts as missing), created with its tags, its setting
/// and capacity providers repaired by one typed [`ClusterUpdate`].
pub struct Cluster<'a> {
    api: &'a dyn EcsApi,
    tags: Vec<Tag>,
}

/// What differs on an existing cluster, and the calls that repair it: plan prints its
/// attributes, apply makes exactly these calls.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClusterUpdate {
    /// `UpdateClusterSettings` to this `containerInsights` value.
    pub container_insights: Option<String>,
    /// `PutClusterCapacityProviders` with these providers and default strategy.
    pub capacity: Option<(Vec<String>, Vec<StrategyItem>)>,
}

impl<'a> Cluster<'a> {
    /// The cluster of `api`, tagged `tags` when created.
    pub fn new(api: &'a dyn EcsApi, tags: Vec<Tag>) -> Self {
        Cluster { api, tags }
    }

    async fn apply_update(&self, name: &str, update: &ClusterUpdate) -> Result<(), ActionError> {
        let settings = async {
            match &update.container_insights {
                Some(value) => self.api.update_container_insights(name, value).await.during("UpdateClusterSettings"),
                None => Ok(()),
            }
        };
        let providers = async {
            match &update.capacity {
                Some((providers, strategy)) => self
                    .api
                    .put_capacity_providers(name, providers, strategy)
                    .await
                    .during("PutClusterCapacityProviders"),
                None => Ok(()),
            }
        };
        tokio::try_join!(settings, providers)?;
        Ok(())
    }
}

#[async_trait]
impl Resource for Cluster<'_> {
    type Desired = ClusterSpec;
    type Observed = ObservedCluster;
    type Update = ClusterUpdate;
    const CREATE: &'static str = "CreateCluster";

    fn diff(&self, want: &ClusterSpec, have: &ObservedCluster) -> Result<Option<Diff<ClusterUpdate>>, String> {
        Ok(update_for(want, have))
    }

    async fn find(&self, want: &ClusterSpec) -> Result<Option<ObservedCluster>, AwsError> {
        Ok(self.api.describe_cluster(&want.name).await?.filter(|c| c.status != "INACTIVE"))
    }

    /// From its tags (DescribeClusters with `include = TAGS`). `tap-cluster-{s}` is a name no
    /// other environment derives, but one made by hand is no more tap's to change.
    async fn owner(&self, have: &ObservedCluster, env: &str) -> Result<Owner, ActionError> {
        Ok(Owner::of(&have.tags, env))
    }

    /// Creates the cluster; what the create call did not store (some endpoints drop the default
    /// strategy) the engine corrects in the same run, from what this returns.
    async fn create(&self, want: &ClusterSpec) -> Result<ObservedCluster, AwsError> {
        self.api.create_cluster(want, &self.tags).await
    }

    async fn update(&self, have: &ObservedCluster, update: &ClusterUpdate) -> Result<ObservedCluster, ActionError> {
        self.apply_update(&have.name, update).await?;
        Ok(have.clone())
    }

    async fn delete(&self, have: &ObservedCluster) -> Result<Deleted, ActionError> {
        self.api.delete_cluster(&have.name).await.during("DeleteCluster")?;
        Ok(Deleted::Now)
    }
}

/// The ECS cluster of an environment.
pub struct ClusterStep {
    api: Arc<dyn EcsApi>,
}

impl ClusterStep {
    /// A step over any [`EcsApi`] (a mock in tests).
    pub fn new(api: Arc<dyn EcsApi>) -> Self {
        ClusterStep { api }
    }

    /// A step over a real ECS client built from `session` (its counter and guard attached).
    pub fn from_session(session: &tap_core::aws::AwsSession) -> Self {
        Self::new(Arc::new(SdkEcs(tap_core::sdk_client!(aws_sdk_ecs, session))))
    }

    fn resource(&self, ctx: &Context, spec: &ClusterSpec) -> Cluster<'_> {
        Cluster::new(self.api.as_ref(), ctx.names.tags(COMPONENT, &spec.name))
    }

    async fn converge(&self, ctx: &Context, mode: Mode) -> Result<Vec<Change>, StepError> {
        let spec = ClusterSpec::new(ctx.names.cluster(), &ctx.config.cluster);
        let cluster = self.resource(ctx, &spec);
        let engine = Engine::new(ctx, STEP, mode);
        let observed = cluster.find(&spec).await.map_err(StepError::aws(COMPONENT, "DescribeClusters"))?;
        let converged = engine.converge(&cluster, COMPONENT, &spec.name, &spec, observed).await?;
        let arn = converged.map_or_else(|| PENDING.to_owned(), |c| c.arn);
        ctx.put(ClusterOutputs { name: spec.name.clone(), arn });
        Ok(engine.into_changes())
    }
}

/// The update that makes `observed` what `spec` wants, ignoring the order of providers and
/// strategy items (`None` when nothing differs). A cluster that reports no Container Insights
/// setting has it disabled (the ECS default).
fn update_for(spec: &ClusterSpec, observed: &ObservedCluster) -> Option<Diff<ClusterUpdate>> {
    let mut attrs = Vec::new();
    let mut update = ClusterUpdate::default();
    let insights = observed.container_insights.clone().unwrap_or_else(|| "disabled".into());
    if insights != spec.container_insights {
        diff(&mut attrs, "container_insights", &insights, &spec.container_insights);
        update.container_insights = Some(spec.container_insights.clone());
    }
    let sorted = |v: &[String]| {
        let mut v = v.to_vec();
        v.sort();
        v
    };
    let show = |s: &[StrategyItem]| {
        sorted(&s.iter().map(|i| format!("{} base={} weight={}", i.provider, i.base, i.weight)).collect::<Vec<_>>())
    };
    let (have_providers, want_providers) = (sorted(&observed.capacity_providers), sorted(&spec.capacity_providers));
    let (have_strategy, want_strategy) = (show(&observed.default_strategy), show(&spec.default_strategy));
    diff(&mut attrs, "capacity_providers", &have_providers, &want_providers);
    diff(&mut attrs, "default_capacity_provider_strategy", &have_strategy, &want_strategy);
    if have_providers != want_providers || have_strategy != want_strategy {
        update.capacity = Some((spec.capacity_providers.clone(), spec.default_strategy.clone()));
    }
    (!attrs.is_empty()).then(|| Diff::new(update, attrs))
}

#[async_trait]
impl Step for ClusterStep {
    fn name(&self) -> &'static str {
        STEP
    }

    fn needs(&self) -> &'static [OutputKind] {
        &[]
    }

    fn produces(&self) -> OutputKind {
        OutputKind::Cluster
    }

    fn destroy_waits(&self) -> &'static [Gone] {
        &[Gone::EcsServices]
    }

    #[tracing::instrument(skip_all, name = "cluster.plan")]
    async fn plan(&self, ctx: &Context) -> Result<Vec<Change>, StepError> {
        self.converge(ctx, Mode::Plan).await
    }

    #[tracing::instrument(skip_all, name = "cluster.apply")]
    async fn apply(&self, ctx: &Context) -> Result<Vec<Change>, StepError> {
        self.converge(ctx, Mode::Apply).await
    }

    #[tracing::instrument(skip_all, name = "cluster.destroy")]
    async fn destroy(&self, ctx: &Context) -> Result<Vec<Change>, StepError> {
        let spec = ClusterSpec::new(ctx.names.cluster(), &ctx.config.cluster);
        let cluster = self.resource(ctx, &spec);
        let engine = Engine::new(ctx, STEP, Mode::Apply);
        let found = cluster.find(&spec).await.map_err(StepError::aws(COMPONENT, "DescribeClusters"))?;
        if let Some(found) = found {
            // ECS refuses to delete a cluster that still has services.
            ctx.wait_gone(STEP, Gone::EcsServices).await?;
            engine.delete(&cluster, COMPONENT, &spec.name, &found).await?;
        }
        Ok(engine.into_changes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tap_core::{Action, Config};

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
        mock.expect_describe_cluster()
            .returning(|_| Ok(Some(ObservedCluster { status: "INACTIVE".into(), ..matching() })));
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
        mock.expect_describe_cluster()
            .returning(|_| Ok(Some(ObservedCluster { status: "INACTIVE".into(), ..matching() })));
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
}
