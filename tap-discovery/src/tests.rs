//! Unit tests of the discovery step over a mocked [`CloudMapApi`](crate::CloudMapApi).

use super::*;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tap_core::naming::{Names, Tag};
use tap_core::outputs::SubnetRef;
use tap_core::{Action, AttrChange, AwsError, Config};

fn ctx_with_vpc(vpc_id: &str) -> Context {
    let ctx = Context::new(Config::default());
    let subnet = |id: &str| SubnetRef { az: "us-east-1a".into(), id: id.into() };
    ctx.put(NetworkOutputs {
        vpc_id: vpc_id.into(),
        public_subnets: vec![subnet("subnet-a")],
        private_subnets: vec![subnet("subnet-b")],
    });
    ctx
}

fn step(mock: MockCloudMapApi) -> DiscoveryStep {
    DiscoveryStep::new(Arc::new(mock))
}

/// destroy reads no other step's outputs: a context without them.
fn no_outputs() -> Context {
    Context::new(Config::default())
}

fn ctx() -> Context {
    ctx_with_vpc("vpc-123")
}

fn namespace() -> ObservedNamespace {
    ObservedNamespace {
        id: "ns-1".into(),
        arn: "arn:aws:servicediscovery:us-east-1:123456789012:namespace/ns-1".into(),
        name: "tap-dev.local".into(),
    }
}

fn service(ttl: i64) -> ObservedService {
    ObservedService {
        id: "srv-1".into(),
        arn: "arn:aws:servicediscovery:us-east-1:123456789012:service/srv-1".into(),
        name: "processing-service".into(),
        namespace_id: Some("ns-1".into()),
        dns_records: vec![DnsRecordSpec { record_type: "A".into(), ttl }],
        routing_policy: Some("MULTIVALUE".into()),
        custom_health_check: Some(Some(1)),
        description: Some(service_description("ns-1")),
    }
}

/// How `ListServices` shows a service: no namespace id.
fn listed(svc: ObservedService) -> ObservedService {
    ObservedService { namespace_id: None, ..svc }
}

/// Another environment's service of the same name, in namespace `ns-9`.
fn foreign() -> ObservedService {
    ObservedService {
        id: "srv-9".into(),
        namespace_id: Some("ns-9".into()),
        description: Some(service_description("ns-9")),
        ..service(10)
    }
}

fn operation(status: &str) -> OperationState {
    OperationState { status: status.into(), error_code: None, error_message: None, targets: BTreeMap::new() }
}

fn success(target: &str, id: &str) -> OperationState {
    OperationState { targets: BTreeMap::from([(target.into(), id.into())]), ..operation("SUCCESS") }
}

fn failed(code: &str, message: &str) -> OperationState {
    OperationState { error_code: Some(code.into()), error_message: Some(message.into()), ..operation("FAIL") }
}

/// Forbids every write not expected before this call: mockall answers a call with the first
/// expectation that matches it and is not used up.
fn no_mutations(mock: &mut MockCloudMapApi) {
    mock.expect_create_private_dns_namespace().never();
    mock.expect_create_service().never();
    mock.expect_update_service_dns().never();
    mock.expect_deregister_instance().never();
    mock.expect_delete_service().never();
    mock.expect_delete_namespace().never();
}

/// Namespace and service exist; `service` decides what the service looks like. The listing
/// carries everything compared, so no `GetService` is made.
fn existing(mock: &mut MockCloudMapApi, svc: ObservedService) {
    mock.expect_list_private_dns_namespaces().times(1).returning(|| {
        Ok(vec![ObservedNamespace { name: "tap-other.local".into(), id: "ns-9".into(), arn: "x".into() }, namespace()])
    });
    let other = ObservedService { id: "srv-7".into(), name: "not-configured".into(), ..listed(service(10)) };
    mock.expect_list_services()
        .withf(|ns: &str| ns == "ns-1")
        .times(1)
        .returning(move |_| Ok(vec![listed(svc.clone()), other.clone()]));
    mock.expect_get_service().never();
    // The unconfigured service is a prune candidate: its tags say it is not tap's.
    mock.expect_list_tags().times(..=1).returning(|_| Ok(vec![]));
}

#[tokio::test]
async fn creates_namespace_in_the_vpc_then_the_service() {
    let mut mock = MockCloudMapApi::new();
    mock.expect_list_private_dns_namespaces().times(1).returning(|| Ok(vec![]));
    mock.expect_create_private_dns_namespace()
        .withf(|name: &str, vpc: &str, token: &str, tags: &[Tag]| {
            name == "tap-dev.local"
                && vpc == "vpc-123"
                && token == client_token(&["tap", "dev", "namespace", "vpc-123"])
                && tags.contains(&("Environment".into(), "dev".into()))
                && tags.contains(&("tap:component".into(), NAMESPACE_COMPONENT.into()))
        })
        .times(1)
        .returning(|_, _, _, _| Ok(NamespaceCreation::Operation("op-1".into())));
    let polls = AtomicUsize::new(0);
    mock.expect_get_operation().withf(|id: &str| id == "op-1").times(2).returning(move |_| {
        if polls.fetch_add(1, Ordering::SeqCst) == 0 {
            Ok(operation("SUBMITTED"))
        } else {
            Ok(success("NAMESPACE", "ns-1"))
        }
    });
    mock.expect_get_namespace().withf(|id: &str| id == "ns-1").times(1).returning(|_| Ok(Some(namespace())));
    // A namespace created just now holds no services: no listing.
    mock.expect_list_services().never();
    mock.expect_create_service()
        .withf(|d: &ServiceDefinition, tags: &[Tag]| {
            d.name == "processing-service"
                && d.namespace_id == "ns-1"
                && d.dns_records == [DnsRecordSpec { record_type: "A".into(), ttl: 10 }]
                && d.routing_policy == "MULTIVALUE"
                && d.failure_threshold == 1
                && d.creator_request_id == client_token(&["tap", "dev", "processing-service", "ns-1"])
                && d.description == service_description("ns-1")
                && tags.contains(&("Name".into(), "processing-service".into()))
                && tags.contains(&("tap:component".into(), "discovery/service/processing-service".into()))
        })
        .times(1)
        .returning(|_, _| Ok(service(10)));
    mock.expect_update_service_dns().never();
    let ctx = ctx();
    let changes = step(mock).apply(&ctx).await.unwrap();
    assert_eq!(
        changes,
        vec![
            Change::create(NAMESPACE_COMPONENT, "tap-dev.local"),
            Change::create("discovery/service/processing-service", "processing-service")
        ]
    );
    let out = ctx.get::<DiscoveryOutputs>("t").unwrap();
    assert_eq!((out.namespace_id.as_str(), out.namespace_name.as_str()), ("ns-1", "tap-dev.local"));
    assert_eq!(out.services["processing-service"].id, "srv-1");
    assert_eq!(out.services.len(), 1, "only services with discovery = true");
}

#[tokio::test]
async fn matching_namespace_and_service_get_no_mutating_call() {
    let mut mock = MockCloudMapApi::new();
    existing(&mut mock, service(10));
    no_mutations(&mut mock);
    let ctx = ctx();
    assert!(step(mock).apply(&ctx).await.unwrap().is_empty());
    assert_eq!(ctx.get::<DiscoveryOutputs>("t").unwrap().services["processing-service"].arn, service(10).arn);
}

#[tokio::test]
async fn a_listed_service_without_the_description_is_read_with_get_service() {
    // Created before tap described its services: GetService tells its namespace.
    let mut mock = MockCloudMapApi::new();
    mock.expect_list_private_dns_namespaces().times(1).returning(|| Ok(vec![namespace()]));
    mock.expect_list_services()
        .times(1)
        .returning(|_| Ok(vec![ObservedService { description: None, ..listed(service(10)) }]));
    mock.expect_get_service()
        .withf(|id: &str| id == "srv-1")
        .times(1)
        .returning(|_| Ok(Some(ObservedService { description: None, ..service(10) })));
    no_mutations(&mut mock);
    let ctx = ctx();
    assert!(step(mock).apply(&ctx).await.unwrap().is_empty());
    assert_eq!(ctx.get::<DiscoveryOutputs>("t").unwrap().services["processing-service"].id, "srv-1");
}

#[tokio::test]
async fn another_namespaces_service_in_the_listing_is_not_taken_for_ours() {
    // An endpoint that ignores the namespace filter lists another environment's service.
    let mut mock = MockCloudMapApi::new();
    mock.expect_list_private_dns_namespaces().times(1).returning(|| Ok(vec![namespace()]));
    mock.expect_list_services().times(1).returning(|_| Ok(vec![listed(foreign())]));
    mock.expect_get_service().withf(|id: &str| id == "srv-9").times(1).returning(|_| Ok(Some(foreign())));
    mock.expect_create_service()
        .withf(|d: &ServiceDefinition, _: &[Tag]| d.namespace_id == "ns-1")
        .times(1)
        .returning(|_, _| Ok(service(10)));
    mock.expect_update_service_dns().never();
    let ctx = ctx();
    let changes = step(mock).apply(&ctx).await.unwrap();
    assert_eq!(changes, vec![Change::create("discovery/service/processing-service", "processing-service")]);
    assert_eq!(ctx.get::<DiscoveryOutputs>("t").unwrap().services["processing-service"].id, "srv-1");

    // Both listed: ours is recognized by its description, the other one is not even read.
    let mut mock = MockCloudMapApi::new();
    mock.expect_list_private_dns_namespaces().times(1).returning(|| Ok(vec![namespace()]));
    mock.expect_list_services().times(1).returning(|_| Ok(vec![listed(foreign()), listed(service(10))]));
    mock.expect_get_service().never();
    no_mutations(&mut mock);
    let ctx = ctx_with_vpc("vpc-123");
    assert!(step(mock).apply(&ctx).await.unwrap().is_empty());
    assert_eq!(ctx.get::<DiscoveryOutputs>("t").unwrap().services["processing-service"].id, "srv-1");
}

#[tokio::test]
async fn drifted_ttl_gets_exactly_one_update() {
    let mut mock = MockCloudMapApi::new();
    existing(&mut mock, service(60));
    mock.expect_update_service_dns()
        .withf(|id: &str, records: &[DnsRecordSpec]| {
            id == "srv-1" && records == [DnsRecordSpec { record_type: "A".into(), ttl: 10 }]
        })
        .times(1)
        .returning(|_, _| Ok("op-2".into()));
    mock.expect_get_operation().withf(|id: &str| id == "op-2").times(1).returning(|_| Ok(success("SERVICE", "srv-1")));
    no_mutations(&mut mock);
    let changes = step(mock).apply(&ctx()).await.unwrap();
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0].action, Action::Update);
    assert_eq!(
        changes[0].attributes,
        vec![AttrChange::new("dns_records", Some("A ttl=60".into()), Some("A ttl=10".into()))]
    );
}

#[tokio::test]
async fn routing_policy_cannot_be_changed_in_place() {
    let mut mock = MockCloudMapApi::new();
    existing(&mut mock, ObservedService { routing_policy: Some("WEIGHTED".into()), ..service(10) });
    no_mutations(&mut mock);
    let err = step(mock).apply(&ctx()).await.unwrap_err();
    assert!(matches!(err, StepError::Conflict { .. }), "{err}");
    assert!(err.to_string().contains("WEIGHTED"), "{err}");
}

#[tokio::test]
async fn failed_operation_fails_clearly() {
    let mut mock = MockCloudMapApi::new();
    mock.expect_list_private_dns_namespaces().returning(|| Ok(vec![]));
    mock.expect_create_private_dns_namespace().returning(|_, _, _, _| Ok(NamespaceCreation::Operation("op-1".into())));
    mock.expect_get_operation().returning(|_| Ok(failed("CANNOT_CREATE_HOSTED_ZONE", "the VPC has no DNS support")));
    mock.expect_create_service().never();
    let err = step(mock).apply(&ctx()).await.unwrap_err().to_string();
    assert!(
        err.contains("CreatePrivateDnsNamespace")
            && err.contains("CANNOT_CREATE_HOSTED_ZONE")
            && err.contains("DNS support"),
        "{err}"
    );
}

#[tokio::test]
async fn throttling_surfaces_as_retryable() {
    let mut mock = MockCloudMapApi::new();
    mock.expect_list_private_dns_namespaces().returning(|| Err(AwsError::throttling()));
    no_mutations(&mut mock);
    let err = step(mock).apply(&ctx()).await.unwrap_err();
    assert!(err.is_retryable(), "{err}");
    assert!(err.to_string().contains("ListNamespaces"), "{err}");
}

#[tokio::test]
async fn plan_makes_no_mutating_call() {
    let mut mock = MockCloudMapApi::new();
    mock.expect_list_private_dns_namespaces().times(1).returning(|| Ok(vec![]));
    no_mutations(&mut mock);
    let ctx = ctx();
    let changes = step(mock).plan(&ctx).await.unwrap();
    assert_eq!(changes.len(), 2);
    assert!(changes.iter().all(|c| c.action == Action::Create));
    assert_eq!(ctx.get::<DiscoveryOutputs>("t").unwrap().namespace_id, PENDING);

    let mut mock = MockCloudMapApi::new();
    existing(&mut mock, service(300));
    no_mutations(&mut mock);
    let changes = step(mock).plan(&ctx).await.unwrap();
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0].action, Action::Update);
}

#[tokio::test]
async fn a_namespace_whose_create_answer_was_lost_is_adopted() {
    let mut mock = MockCloudMapApi::new();
    let listed = AtomicUsize::new(0);
    // Not there at the first look; there once the resent create says its domain exists.
    mock.expect_list_private_dns_namespaces()
        .times(2)
        .returning(move || Ok(if listed.fetch_add(1, Ordering::SeqCst) == 0 { vec![] } else { vec![namespace()] }));
    mock.expect_create_private_dns_namespace()
        .times(1)
        .returning(|_, _, _, _| Err(AwsError::new("ConflictingDomainExists", "vpc-123")));
    // The engine adopts what its lookup found: no read back.
    mock.expect_get_namespace().never();
    mock.expect_list_services().never();
    mock.expect_create_service().times(1).returning(|d, _| Ok(service(d.dns_records[0].ttl)));
    let ctx = ctx_with_vpc("vpc-123");
    step(mock).apply(&ctx).await.unwrap();
    assert_eq!(ctx.get::<DiscoveryOutputs>("t").unwrap().namespace_id, "ns-1");
}

#[tokio::test]
async fn plan_with_a_pending_vpc_calls_nothing_with_it() {
    // Only the lookup by name (it runs while the VPC is still coming): any other call fails the test.
    let mut mock = MockCloudMapApi::new();
    mock.expect_list_private_dns_namespaces().times(1).returning(|| Ok(vec![]));
    let ctx = ctx_with_vpc(PENDING);
    let changes = step(mock).plan(&ctx).await.unwrap();
    assert_eq!(changes.len(), 2);
    let out = ctx.get::<DiscoveryOutputs>("t").unwrap();
    assert_eq!((out.namespace_id.as_str(), out.services["processing-service"].id.as_str()), (PENDING, PENDING));
}

#[tokio::test]
async fn apply_with_a_pending_vpc_is_refused() {
    let mut mock = MockCloudMapApi::new();
    mock.expect_list_private_dns_namespaces().times(1).returning(|| Ok(vec![]));
    let err = step(mock).apply(&ctx_with_vpc(PENDING)).await.unwrap_err();
    assert!(matches!(err, StepError::MissingOutput { .. }), "{err}");
}

#[tokio::test]
async fn destroy_on_an_empty_environment_succeeds() {
    let mut mock = MockCloudMapApi::new();
    mock.expect_list_private_dns_namespaces().times(1).returning(|| Ok(vec![]));
    no_mutations(&mut mock);
    let changes = step(mock).destroy(&no_outputs()).await.unwrap();
    assert!(changes.is_empty());
}

#[tokio::test]
async fn destroy_deregisters_deletes_services_then_namespace() {
    let mut mock = MockCloudMapApi::new();
    mock.expect_list_private_dns_namespaces().times(1).returning(|| Ok(vec![namespace()]));
    mock.expect_list_services().withf(|ns: &str| ns == "ns-1").times(1).returning(|_| Ok(vec![listed(service(10))]));
    mock.expect_get_service().never();
    // Listed again when the delete is sent again: deregistered by then.
    let listed = AtomicUsize::new(0);
    mock.expect_list_instances().withf(|id: &str| id == "srv-1").times(2).returning(move |_| {
        Ok(if listed.fetch_add(1, Ordering::SeqCst) == 0 { vec!["10.0.10.5".into()] } else { vec![] })
    });
    mock.expect_deregister_instance()
        .withf(|srv: &str, inst: &str| srv == "srv-1" && inst == "10.0.10.5")
        .times(1)
        .returning(|_, _| Ok("op-d".into()));
    mock.expect_get_operation()
        .withf(|id: &str| id == "op-d")
        .times(1)
        .returning(|_| Ok(success("INSTANCE", "10.0.10.5")));
    let in_use_once = AtomicUsize::new(0);
    mock.expect_delete_service().withf(|id: &str| id == "srv-1").times(2).returning(move |_| {
        if in_use_once.fetch_add(1, Ordering::SeqCst) == 0 {
            Err(AwsError::new("ResourceInUse", "instances are still registered"))
        } else {
            Ok(())
        }
    });
    mock.expect_delete_namespace().withf(|id: &str| id == "ns-1").times(1).returning(|_| Ok("op-n".into()));
    mock.expect_get_operation().withf(|id: &str| id == "op-n").times(1).returning(|_| Ok(success("NAMESPACE", "ns-1")));
    let changes = step(mock).destroy(&no_outputs()).await.unwrap();
    assert_eq!(
        changes,
        vec![
            Change::delete("discovery/service/processing-service", "processing-service"),
            Change::delete(NAMESPACE_COMPONENT, "tap-dev.local")
        ]
    );
}

#[tokio::test]
async fn destroy_treats_not_found_as_done() {
    let mut mock = MockCloudMapApi::new();
    mock.expect_list_private_dns_namespaces().returning(|| Ok(vec![namespace()]));
    mock.expect_list_services().returning(|_| Ok(vec![ObservedService { description: None, ..listed(service(10)) }]));
    mock.expect_get_service().returning(|_| Ok(Some(service(10))));
    mock.expect_list_instances().returning(|_| Ok(vec![]));
    mock.expect_delete_service().times(1).returning(|_| Err(AwsError::new("ServiceNotFound", "gone")));
    mock.expect_delete_namespace().times(1).returning(|_| Err(AwsError::new("NamespaceNotFound", "gone")));
    let changes = step(mock).destroy(&no_outputs()).await.unwrap();
    assert!(changes.is_empty());
}

/// Another service of namespace `ns-1`, `id` named `name`.
fn other_service(id: &str, name: &str) -> ObservedService {
    let arn = format!("arn:aws:servicediscovery:us-east-1:123456789012:service/{id}");
    ObservedService { id: id.into(), arn, name: name.into(), ..service(10) }
}

fn with_removed(mock: &mut MockCloudMapApi) {
    mock.expect_list_private_dns_namespaces().times(1).returning(|| Ok(vec![namespace()]));
    // srv-5: a tap-made service of this environment that the config no longer declares.
    let (removed, hand_made) = (other_service("srv-5", "old-worker"), other_service("srv-6", "hand-made"));
    mock.expect_list_services()
        .times(1)
        .returning(move |_| Ok(vec![listed(service(10)), listed(removed.clone()), listed(hand_made.clone())]));
    mock.expect_get_service().never();
    mock.expect_list_tags().times(2).returning(|arn| {
        Ok(if arn.ends_with("srv-5") {
            Names::new(&Config::default()).tags("discovery/service/old-worker", "old-worker")
        } else {
            // In the namespace, but not tagged by tap for this environment: left alone.
            vec![("Environment".into(), "dev".into())]
        })
    });
}

#[tokio::test]
async fn plan_lists_a_removed_service_without_waiting_for_the_services_step() {
    let mut mock = MockCloudMapApi::new();
    with_removed(&mut mock);
    no_mutations(&mut mock);
    mock.expect_list_instances().never();
    // Plan must not wait for the services step's prune.
    let changes = step(mock).plan(&ctx()).await.unwrap();
    assert_eq!(changes, vec![Change::delete("discovery/service/old-worker", "old-worker")]);
}

#[tokio::test]
async fn a_removed_service_is_deleted_once_the_services_step_is_done() {
    let mut mock = MockCloudMapApi::new();
    with_removed(&mut mock);
    let deleted = Arc::new(AtomicUsize::new(0));
    mock.expect_list_instances().withf(|id: &str| id == "srv-5").times(1).returning(|_| Ok(vec![]));
    let d = deleted.clone();
    mock.expect_delete_service().withf(|id: &str| id == "srv-5").times(1).returning(move |_| {
        d.fetch_add(1, Ordering::SeqCst);
        Ok(())
    });
    no_mutations(&mut mock);
    let ctx = ctx();
    ctx.expect_pruned([Pruned::Services]);
    let step = step(mock);
    let apply = step.apply(&ctx);
    tokio::pin!(apply);
    // The step publishes its outputs, then waits for the services step before deleting.
    tokio::select! {
        _ = &mut apply => panic!("deleted before the services step published its outputs"),
        _ = tokio::time::sleep(std::time::Duration::from_millis(50)) => {}
    }
    assert!(ctx.try_get::<DiscoveryOutputs>().is_some(), "outputs published before the prune");
    assert_eq!(deleted.load(Ordering::SeqCst), 0);
    ctx.give_pruned(Pruned::Services);
    let changes = apply.await.unwrap();
    assert_eq!(changes, vec![Change::delete("discovery/service/old-worker", "old-worker")]);
    assert_eq!(deleted.load(Ordering::SeqCst), 1);
}

/// The namespace kind on the engine: what plan lists is what apply does, change by change.
#[tokio::test]
async fn plan_lists_exactly_the_changes_apply_makes() {
    // From nothing: the namespace and its service.
    let empty = |mock: &mut MockCloudMapApi| {
        mock.expect_list_private_dns_namespaces().times(1).returning(|| Ok(vec![]));
    };
    let mut plan_mock = MockCloudMapApi::new();
    empty(&mut plan_mock);
    no_mutations(&mut plan_mock);
    let planned = step(plan_mock).plan(&ctx()).await.unwrap();
    let mut mock = MockCloudMapApi::new();
    empty(&mut mock);
    mock.expect_create_private_dns_namespace()
        .times(1)
        .returning(|_, _, _, _| Ok(NamespaceCreation::Operation("op-1".into())));
    mock.expect_get_operation().times(1).returning(|_| Ok(success("NAMESPACE", "ns-1")));
    mock.expect_get_namespace().times(1).returning(|_| Ok(Some(namespace())));
    mock.expect_create_service().times(1).returning(|_, _| Ok(service(10)));
    let applied = step(mock).apply(&ctx()).await.unwrap();
    assert_eq!(planned, applied);
    assert_eq!(
        applied,
        vec![
            Change::create(NAMESPACE_COMPONENT, "tap-dev.local"),
            Change::create("discovery/service/processing-service", "processing-service")
        ]
    );

    // The namespace there, the service's TTL drifted: only the service's update.
    let mut plan_mock = MockCloudMapApi::new();
    existing(&mut plan_mock, service(60));
    no_mutations(&mut plan_mock);
    let planned = step(plan_mock).plan(&ctx()).await.unwrap();
    let mut mock = MockCloudMapApi::new();
    existing(&mut mock, service(60));
    mock.expect_update_service_dns().times(1).returning(|_, _| Ok("op-2".into()));
    mock.expect_get_operation().times(1).returning(|_| Ok(success("SERVICE", "srv-1")));
    mock.expect_create_private_dns_namespace().never();
    let applied = step(mock).apply(&ctx()).await.unwrap();
    assert_eq!(planned, applied);
    assert_eq!(applied.len(), 1);
}

/// A step whose Cloud Map operations may run only briefly.
fn impatient(mock: MockCloudMapApi) -> DiscoveryStep {
    DiscoveryStep {
        api: Arc::new(mock),
        backoff: Backoff {
            initial: Duration::from_millis(1),
            max: Duration::from_millis(2),
            timeout: Duration::from_millis(30),
        },
    }
}

#[tokio::test]
async fn a_namespace_creation_that_never_ends_times_out_naming_the_create() {
    let mut mock = MockCloudMapApi::new();
    mock.expect_list_private_dns_namespaces().times(1).returning(|| Ok(vec![]));
    mock.expect_create_private_dns_namespace()
        .times(1)
        .returning(|_, _, _, _| Ok(NamespaceCreation::Operation("op-1".into())));
    mock.expect_get_operation().returning(|_| Ok(operation("PENDING")));
    mock.expect_get_namespace().never();
    mock.expect_create_service().never();
    let err = impatient(mock).apply(&ctx()).await.unwrap_err().to_string();
    assert!(err.contains(NAMESPACE_COMPONENT) && err.contains("CreatePrivateDnsNamespace"), "{err}");
    assert!(err.contains("op-1"), "names the operation: {err}");
}

#[tokio::test]
async fn an_existing_namespace_answered_by_the_create_is_read_and_taken() {
    // `NamespaceAlreadyExists` names the namespace (the same CreatorRequestId): no operation.
    let mut mock = MockCloudMapApi::new();
    mock.expect_list_private_dns_namespaces().times(1).returning(|| Ok(vec![]));
    mock.expect_create_private_dns_namespace()
        .times(1)
        .returning(|_, _, _, _| Ok(NamespaceCreation::Exists("ns-1".into())));
    mock.expect_get_operation().never();
    mock.expect_get_namespace().withf(|id: &str| id == "ns-1").times(1).returning(|_| Ok(Some(namespace())));
    mock.expect_create_service().times(1).returning(|_, _| Ok(service(10)));
    let ctx = ctx();
    let changes = step(mock).apply(&ctx).await.unwrap();
    assert_eq!(changes[0], Change::create(NAMESPACE_COMPONENT, "tap-dev.local"));
    assert_eq!(ctx.get::<DiscoveryOutputs>("t").unwrap().namespace_arn, namespace().arn);
}

/// An empty namespace of the environment, as destroy finds it.
fn empty_namespace(mock: &mut MockCloudMapApi) {
    mock.expect_list_private_dns_namespaces().times(1).returning(|| Ok(vec![namespace()]));
    mock.expect_list_services().times(1).returning(|_| Ok(vec![]));
    mock.expect_delete_service().never();
}

#[tokio::test]
async fn a_namespace_deletion_is_polled_until_it_succeeds() {
    let mut mock = MockCloudMapApi::new();
    empty_namespace(&mut mock);
    mock.expect_delete_namespace().withf(|id: &str| id == "ns-1").times(1).returning(|_| Ok("op-n".into()));
    let polls = AtomicUsize::new(0);
    mock.expect_get_operation().withf(|id: &str| id == "op-n").times(3).returning(move |_| {
        Ok(if polls.fetch_add(1, Ordering::SeqCst) < 2 { operation("PENDING") } else { success("NAMESPACE", "ns-1") })
    });
    let changes = step(mock).destroy(&no_outputs()).await.unwrap();
    assert_eq!(changes, vec![Change::delete(NAMESPACE_COMPONENT, "tap-dev.local")]);
}

#[tokio::test]
async fn a_failed_namespace_deletion_fails_naming_the_delete() {
    let mut mock = MockCloudMapApi::new();
    empty_namespace(&mut mock);
    mock.expect_delete_namespace().times(1).returning(|_| Ok("op-n".into()));
    mock.expect_get_operation()
        .times(1)
        .returning(|_| Ok(failed("INTERNAL_FAILURE", "hosted zone could not be deleted")));
    let err = step(mock).destroy(&no_outputs()).await.unwrap_err();
    let err = err.to_string();
    assert!(
        err.contains("DeleteNamespace") && err.contains("INTERNAL_FAILURE") && err.contains("hosted zone"),
        "{err}"
    );
}

#[tokio::test]
async fn a_namespace_already_gone_on_delete_is_no_change() {
    let mut mock = MockCloudMapApi::new();
    empty_namespace(&mut mock);
    mock.expect_delete_namespace().times(1).returning(|_| Err(AwsError::new("NamespaceNotFound", "gone")));
    mock.expect_get_operation().never();
    let changes = step(mock).destroy(&no_outputs()).await.unwrap();
    assert!(changes.is_empty(), "{changes:?}");
}

#[tokio::test]
async fn a_namespace_still_in_use_is_deleted_once_freed() {
    let mut mock = MockCloudMapApi::new();
    empty_namespace(&mut mock);
    let refused = AtomicUsize::new(0);
    mock.expect_delete_namespace().times(2).returning(move |_| {
        if refused.fetch_add(1, Ordering::SeqCst) == 0 {
            Err(AwsError::new("ResourceInUse", "the namespace still holds a service"))
        } else {
            Ok("op-n".into())
        }
    });
    mock.expect_get_operation().times(1).returning(|_| Ok(success("NAMESPACE", "ns-1")));
    let changes = step(mock).destroy(&no_outputs()).await.unwrap();
    assert_eq!(changes, vec![Change::delete(NAMESPACE_COMPONENT, "tap-dev.local")]);
}
