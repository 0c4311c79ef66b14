//! Unit tests of the registry step over a mocked [`EcrApi`](crate::EcrApi).

use super::*;
use serde_json::Value;
use tap_core::naming::Tag;
use tap_core::naming::{Names, TAG_COMPONENT, TAG_ENVIRONMENT};
use tap_core::{AwsError, Config};

use crate::repository::policy_matches;

fn ctx() -> Context {
    Context::new(Config::default())
}

fn repo(name: &str, immutable_tags: bool, scan_on_push: bool) -> ObservedRepository {
    ObservedRepository {
        name: name.into(),
        arn: format!("arn:aws:ecr:us-east-1:123456789012:repository/{name}"),
        uri: format!("123456789012.dkr.ecr.us-east-1.amazonaws.com/{name}"),
        immutable_tags,
        scan_on_push,
    }
}

/// The tags of a repository named `tap-…-{env}` (`x-dev` and `prod` told from `dev`).
fn tags_by_arn(arn: &str) -> Vec<Tag> {
    let name = arn.rsplit('/').next().unwrap();
    let env = ["x-dev", "prod"].into_iter().find(|e| name.ends_with(&format!("-{e}"))).unwrap_or("dev");
    Names::new(&Config { environment: env.into(), ..Config::default() }).tags("registry/repository/x", name)
}

fn tags_answered(mock: &mut MockEcrApi) {
    mock.expect_list_tags().returning(|arn| Ok(tags_by_arn(arn)));
}

const NAMES: [&str; 3] = ["tap-frontend-dev", "tap-api-gateway-dev", "tap-processing-service-dev"];

fn all_matching() -> Vec<ObservedRepository> {
    NAMES.iter().map(|n| repo(n, true, true)).collect()
}

fn desired_policy_text() -> String {
    // Other formatting and key order than tap's own text: the comparison is semantic.
    r#"{ "rules": [ { "action": {"type": "expire"}, "selection": {"countNumber": 10, "countType": "imageCountMoreThan", "tagStatus": "any"},
        "description": "Keep the last 10 images", "rulePriority": 1 } ] }"#
        .into()
}

fn no_mutations(mock: &mut MockEcrApi) {
    mock.expect_create_repository().never();
    mock.expect_put_image_tag_mutability().never();
    mock.expect_put_image_scanning_configuration().never();
    mock.expect_put_lifecycle_policy().never();
    mock.expect_delete_repository().never();
}

#[test]
fn policy_keeps_the_configured_count() {
    let p = lifecycle_policy(10);
    assert_eq!(p["rules"][0]["selection"]["countNumber"], 10);
    assert_eq!(p["rules"][0]["selection"]["countType"], "imageCountMoreThan");
    assert_eq!(p["rules"][0]["action"]["type"], "expire");
    assert!(policy_matches(Some(&desired_policy_text()), &p));
    assert!(!policy_matches(Some(&desired_policy_text().replace("10", "11")), &p));
    assert!(!policy_matches(Some("not json"), &p));
    assert!(!policy_matches(None, &p));
}

#[tokio::test]
async fn creates_every_repository_with_the_spec_settings() {
    let mut mock = MockEcrApi::new();
    // One listing of the registry finds what exists (no DescribeRepositories by name).
    mock.expect_describe_repositories().never();
    mock.expect_list_repositories().times(1).returning(|| Ok(vec![]));
    mock.expect_create_repository()
        .withf(|name: &str, immutable: &bool, scan: &bool, tags: &[Tag]| {
            let tag = |k: &str, v: &str| tags.contains(&(k.to_string(), v.to_string()));
            NAMES.contains(&name)
                && *immutable
                && *scan
                && tag("Environment", "dev")
                && tag("Project", "tap")
                && tag("ManagedBy", "tap")
                && tag("Name", name)
                && tags.iter().any(|(k, v)| k == TAG_COMPONENT && v.starts_with(COMPONENT_PREFIX))
        })
        .times(3)
        .returning(|name, i, s, _| Ok(repo(name, i, s)));
    mock.expect_put_lifecycle_policy()
        .withf(|name: &str, text: &str| {
            NAMES.contains(&name) && serde_json::from_str::<Value>(text).unwrap() == lifecycle_policy(10)
        })
        .times(3)
        .returning(|_, _| Ok(()));
    mock.expect_get_lifecycle_policy().never();
    mock.expect_put_image_tag_mutability().never();
    mock.expect_put_image_scanning_configuration().never();
    let ctx = ctx();
    let changes = RegistryStep::new(Arc::new(mock)).apply(&ctx).await.unwrap();
    assert_eq!(changes.len(), 3);
    assert!(changes.iter().all(|c| c.action == tap_core::Action::Create));
    let out = ctx.get::<RegistryOutputs>("test").unwrap();
    assert_eq!(out.repositories["api-gateway"].uri, "123456789012.dkr.ecr.us-east-1.amazonaws.com/tap-api-gateway-dev");
}

/// The first create's answer was lost and the retry says "already exists": the repository is
/// adopted when it carries this environment's tags, and a conflict naming its owner otherwise.
#[tokio::test]
async fn a_repository_that_already_exists_is_adopted_only_when_ours() {
    for (env_tag, adopted) in [("dev", true), ("someone-else", false)] {
        let mut mock = MockEcrApi::new();
        // Not found by the first look (the batch and the listing); found by the adoption's.
        mock.expect_describe_repositories().returning(move |names| {
            if names.len() == 1 && names[0] == "tap-frontend-dev" {
                Ok(vec![repo("tap-frontend-dev", true, true)])
            } else {
                Err(AwsError::new("RepositoryNotFoundException", "not found"))
            }
        });
        mock.expect_list_repositories().returning(|| Ok(vec![]));
        mock.expect_create_repository().returning(|name, i, s, _| {
            if name == "tap-frontend-dev" {
                Err(AwsError::new("RepositoryAlreadyExistsException", "exists"))
            } else {
                Ok(repo(name, i, s))
            }
        });
        let tag = env_tag.to_string();
        mock.expect_list_tags().times(1).returning(move |arn| {
            let name = arn.rsplit('/').next().unwrap();
            Ok(Names::new(&Config { environment: tag.clone(), ..Config::default() })
                .tags("registry/repository/x", name))
        });
        mock.expect_get_lifecycle_policy().returning(|_| Ok(None));
        mock.expect_put_lifecycle_policy().returning(|_, _| Ok(()));
        let ctx = ctx();
        let result = RegistryStep::new(Arc::new(mock)).apply(&ctx).await;
        if adopted {
            assert_eq!(result.unwrap().len(), 3);
            let out = ctx.get::<RegistryOutputs>("test").unwrap();
            assert!(out.repositories["frontend"].arn.contains("tap-frontend-dev"));
        } else {
            let err = result.unwrap_err();
            assert!(matches!(err, StepError::Conflict { .. }), "{err}");
            let err = err.to_string();
            assert!(err.contains("tap-frontend-dev") && err.contains("`someone-else`"), "{err}");
        }
    }
}

#[tokio::test]
async fn finds_the_existing_ones_when_some_are_missing() {
    let mut mock = MockEcrApi::new();
    tags_answered(&mut mock);
    // One listing of the registry finds what exists (no DescribeRepositories by name).
    mock.expect_describe_repositories().never();
    // One listing finds them (another environment's repository among them is ignored).
    mock.expect_list_repositories()
        .times(1)
        .returning(|| Ok(vec![repo("tap-frontend-dev", true, true), repo("tap-frontend-prod", true, true)]));
    mock.expect_get_lifecycle_policy().times(1).returning(|_| Ok(Some(desired_policy_text())));
    mock.expect_create_repository()
        .withf(|name: &str, _: &bool, _: &bool, _: &[Tag]| name != "tap-frontend-dev")
        .times(2)
        .returning(|n, i, s, _| Ok(repo(n, i, s)));
    mock.expect_put_lifecycle_policy()
        .withf(|name: &str, _: &str| name != "tap-frontend-dev")
        .times(2)
        .returning(|_, _| Ok(()));
    let changes = RegistryStep::new(Arc::new(mock)).apply(&ctx()).await.unwrap();
    assert_eq!(changes.len(), 2);
}

#[tokio::test]
async fn matching_repositories_get_no_mutating_call() {
    let mut mock = MockEcrApi::new();
    tags_answered(&mut mock);
    mock.expect_list_repositories().times(1).returning(|| Ok(all_matching()));
    mock.expect_get_lifecycle_policy().times(3).returning(|_| Ok(Some(desired_policy_text())));
    no_mutations(&mut mock);
    let ctx = ctx();
    let changes = RegistryStep::new(Arc::new(mock)).apply(&ctx).await.unwrap();
    assert!(changes.is_empty(), "{changes:?}");
    assert_eq!(ctx.get::<RegistryOutputs>("test").unwrap().repositories.len(), 3);
}

#[tokio::test]
async fn removed_lifecycle_policy_is_put_back_and_nothing_else() {
    let mut mock = MockEcrApi::new();
    tags_answered(&mut mock);
    mock.expect_list_repositories().times(1).returning(|| Ok(all_matching()));
    mock.expect_get_lifecycle_policy()
        .times(3)
        .returning(|name| Ok((name != "tap-api-gateway-dev").then(desired_policy_text)));
    mock.expect_put_lifecycle_policy()
        .withf(|name: &str, text: &str| {
            name == "tap-api-gateway-dev" && serde_json::from_str::<Value>(text).unwrap() == lifecycle_policy(10)
        })
        .times(1)
        .returning(|_, _| Ok(()));
    mock.expect_create_repository().never();
    mock.expect_put_image_tag_mutability().never();
    mock.expect_put_image_scanning_configuration().never();
    let changes = RegistryStep::new(Arc::new(mock)).apply(&ctx()).await.unwrap();
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0].action, tap_core::Action::Update);
    assert_eq!(changes[0].attributes[0].attribute, "lifecycle_policy");
}

#[tokio::test]
async fn mutable_tags_are_made_immutable() {
    let mut mock = MockEcrApi::new();
    tags_answered(&mut mock);
    mock.expect_list_repositories()
        .times(1)
        .returning(|| Ok(NAMES.iter().map(|n| repo(n, *n != "tap-frontend-dev", true)).collect()));
    mock.expect_get_lifecycle_policy().times(3).returning(|_| Ok(Some(desired_policy_text())));
    mock.expect_put_image_tag_mutability()
        .withf(|name: &str, immutable: &bool| name == "tap-frontend-dev" && *immutable)
        .times(1)
        .returning(|_, _| Ok(()));
    mock.expect_create_repository().never();
    mock.expect_put_lifecycle_policy().never();
    mock.expect_put_image_scanning_configuration().never();
    let changes = RegistryStep::new(Arc::new(mock)).apply(&ctx()).await.unwrap();
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0].attributes[0].new.as_deref(), Some("\"IMMUTABLE\""));
}

#[tokio::test]
async fn plan_lists_drift_and_creates_without_mutating() {
    let mut mock = MockEcrApi::new();
    tags_answered(&mut mock);
    mock.expect_describe_repositories()
        .withf(|names: &[String]| names.len() == 3)
        .returning(|_| Err(AwsError::new("RepositoryNotFoundException", "x")));
    mock.expect_list_repositories().returning(|| Ok(vec![repo("tap-frontend-dev", true, false)]));
    mock.expect_get_lifecycle_policy().returning(|_| Ok(None));
    no_mutations(&mut mock);
    let ctx = ctx();
    let changes = RegistryStep::new(Arc::new(mock)).plan(&ctx).await.unwrap();
    assert_eq!(changes.iter().filter(|c| c.action == tap_core::Action::Create).count(), 2);
    let update = changes.iter().find(|c| c.action == tap_core::Action::Update).unwrap();
    let attrs: Vec<&str> = update.attributes.iter().map(|a| a.attribute.as_str()).collect();
    assert_eq!(attrs, ["scan_on_push", "lifecycle_policy"]);
    assert_eq!(ctx.get::<RegistryOutputs>("test").unwrap().repositories["api-gateway"].arn, PENDING);
}

/// `tap-frontend-dev` carries environment `x-dev`'s tags (its service `frontend` of `x`…, or
/// any name two environments share): plan lists a conflict naming `x-dev`, apply stops before
/// any write, and it is never reported as this environment's repository.
#[tokio::test]
async fn a_repository_of_this_name_with_another_environments_tags_is_a_conflict() {
    for mode in [Mode::Plan, Mode::Apply] {
        let mut mock = MockEcrApi::new();
        mock.expect_list_repositories().times(1).returning(|| Ok(all_matching()));
        mock.expect_get_lifecycle_policy().returning(|_| Ok(Some(desired_policy_text())));
        mock.expect_list_tags().returning(|arn| {
            let name = arn.rsplit('/').next().unwrap();
            let env = if name == "tap-frontend-dev" { "x-dev" } else { "dev" };
            Ok(Names::new(&Config { environment: env.into(), ..Config::default() }).tags("registry/repository/x", name))
        });
        no_mutations(&mut mock);
        let ctx = ctx();
        let result = RegistryStep::new(Arc::new(mock)).converge(&ctx, mode).await;
        if mode.is_apply() {
            let err = result.unwrap_err();
            assert!(matches!(err, StepError::Conflict { .. }), "{err}");
            assert!(err.to_string().contains("tap-frontend-dev") && err.to_string().contains("`x-dev`"), "{err}");
            continue;
        }
        let changes = result.unwrap();
        assert_eq!(changes.len(), 1, "{changes:?}");
        assert_eq!(changes[0].action, tap_core::Action::Conflict);
        assert_eq!(changes[0].resource, "registry/repository/frontend");
        assert!(changes[0].reason.as_deref().unwrap().contains("environment `x-dev`"), "{changes:?}");
        let out = ctx.get::<RegistryOutputs>("test").unwrap();
        assert_eq!(out.repositories["frontend"].uri, PENDING, "not reported as this environment's");
    }
}

#[tokio::test]
async fn throttling_surfaces_as_retryable() {
    let mut mock = MockEcrApi::new();
    mock.expect_list_repositories().returning(|| Err(AwsError::throttling()));
    no_mutations(&mut mock);
    let err = RegistryStep::new(Arc::new(mock)).apply(&ctx()).await.unwrap_err();
    assert!(err.is_retryable(), "{err}");
    assert!(err.to_string().contains("DescribeRepositories"), "{err}");
}

#[tokio::test]
async fn destroy_on_an_empty_registry_succeeds() {
    let mut mock = MockEcrApi::new();
    mock.expect_list_repositories().times(1).returning(|| Ok(vec![]));
    no_mutations(&mut mock);
    let changes = RegistryStep::new(Arc::new(mock)).destroy(&ctx()).await.unwrap();
    assert!(changes.is_empty());
}

#[tokio::test]
async fn destroy_force_deletes_only_this_environments_repositories() {
    let mut mock = MockEcrApi::new();
    mock.expect_list_repositories().times(1).returning(|| {
        Ok(vec![
            repo("tap-frontend-dev", true, true),
            repo("tap-old-service-dev", true, true),
            repo("tap-frontend-x-dev", true, true),
            repo("tap-frontend-prod", true, true),
            repo("unrelated", true, true),
        ])
    });
    mock.expect_list_tags().times(3).returning(|arn| {
        let env = if arn.ends_with("x-dev") { "x-dev" } else { "dev" };
        let name = arn.rsplit('/').next().unwrap();
        Ok(Names::new(&Config { environment: env.into(), ..Config::default() }).tags("registry/repository/x", name))
    });
    mock.expect_delete_repository()
        .withf(|name: &str, force: &bool| (name == "tap-frontend-dev" || name == "tap-old-service-dev") && *force)
        .times(2)
        .returning(|_, _| Ok(()));
    let changes = RegistryStep::new(Arc::new(mock)).destroy(&ctx()).await.unwrap();
    assert_eq!(changes.len(), 2);
    assert!(changes.iter().all(|c| c.action == tap_core::Action::Delete));
}

/// The registry after the config dropped `processing-service` and `old` (both still there,
/// with this environment's tags), beside a look-alike without tap's tags and another
/// environment's repository.
fn pruned_registry(prune_data: bool, with_images: bool) -> (MockEcrApi, Context) {
    let mut mock = MockEcrApi::new();
    mock.expect_list_repositories().times(1).returning(|| {
        let mut repos = all_matching();
        repos.push(repo("tap-old-dev", true, true));
        repos.push(repo("tap-hand-made-dev", true, true));
        repos.push(repo("tap-old-prod", true, true));
        Ok(repos)
    });
    mock.expect_get_lifecycle_policy().times(2).returning(|_| Ok(Some(desired_policy_text())));
    // The repositories of this environment's name are asked for their tags (whose they are).
    mock.expect_list_tags().withf(|arn: &str| arn.ends_with("-dev")).times(5).returning(|arn| {
        let name = arn.rsplit('/').next().unwrap();
        if name == "tap-hand-made-dev" {
            // Named like tap's, but not tagged as managed by tap.
            return Ok(vec![(TAG_ENVIRONMENT.to_string(), "dev".to_string())]);
        }
        let service = name.strip_prefix("tap-").and_then(|n| n.strip_suffix("-dev")).unwrap();
        Ok(Names::new(&Config::default()).tags(&format!("registry/repository/{service}"), name))
    });
    // `old` is empty; `processing-service` holds images when `with_images`.
    mock.expect_has_images()
        .times(if prune_data { 0 } else { 2 })
        .returning(move |name| Ok(with_images && name == "tap-processing-service-dev"));
    mock.expect_create_repository().never();
    mock.expect_put_lifecycle_policy().never();
    let mut config = Config::default();
    config.services.retain(|s| s.name != "processing-service");
    config.deploy.prune_data = prune_data;
    (mock, Context::new(config))
}

#[tokio::test]
async fn a_removed_services_repository_is_kept_while_it_holds_images() {
    let (mut mock, ctx) = pruned_registry(false, true);
    mock.expect_delete_repository()
        .withf(|name: &str, force: &bool| name == "tap-old-dev" && *force)
        .times(1)
        .returning(|_, _| Ok(()));
    let changes = RegistryStep::new(Arc::new(mock)).apply(&ctx).await.unwrap();
    let mut got: Vec<(String, tap_core::Action)> = changes.iter().map(|c| (c.name.clone(), c.action)).collect();
    got.sort();
    assert_eq!(
        got,
        [
            ("tap-old-dev".to_string(), tap_core::Action::Delete),
            ("tap-processing-service-dev".to_string(), tap_core::Action::Keep)
        ]
    );
    assert_eq!(ctx.get::<RegistryOutputs>("test").unwrap().repositories.len(), 2);
}

#[tokio::test]
async fn with_prune_data_a_repository_holding_images_is_deleted_too() {
    let (mut mock, ctx) = pruned_registry(true, true);
    mock.expect_delete_repository()
        .withf(|name: &str, force: &bool| (name == "tap-old-dev" || name == "tap-processing-service-dev") && *force)
        .times(2)
        .returning(|_, _| Ok(()));
    let changes = RegistryStep::new(Arc::new(mock)).apply(&ctx).await.unwrap();
    assert_eq!(changes.len(), 2, "{changes:?}");
    assert!(changes.iter().all(|c| c.action == tap_core::Action::Delete));
}

#[tokio::test]
async fn plan_lists_the_prune_without_deleting() {
    let (mut mock, ctx) = pruned_registry(false, false);
    mock.expect_delete_repository().never();
    let changes = RegistryStep::new(Arc::new(mock)).plan(&ctx).await.unwrap();
    let mut got: Vec<(String, tap_core::Action)> = changes.iter().map(|c| (c.name.clone(), c.action)).collect();
    got.sort();
    // Both are empty here: both would be deleted; the hand-made one is not tap's.
    assert_eq!(
        got,
        [
            ("tap-old-dev".to_string(), tap_core::Action::Delete),
            ("tap-processing-service-dev".to_string(), tap_core::Action::Delete)
        ]
    );
}
