//! AWS's API request rate limits, modelled in the proxy ([`crate::proxy::Proxy::set_rate_limits`]):
//! token buckets per account and region, per service and per class of call, as AWS documents
//! them, so that a test or benchmark sees what a deploy of many services meets at scale.
//!
//! # What is modelled
//!
//! Every call is identified by its service (the signing name in its credential scope, else its
//! `X-Amz-Target` prefix or its query `Version`), its operation and its region, and draws one
//! token from each bucket that applies to it. A bucket holds at most `capacity` tokens (the
//! burst), starts full and refills continuously at `refill_per_second` (the sustained rate):
//! tokens = min(capacity, tokens + elapsed × rate), computed when a call arrives, so no thread
//! ticks. A call finding any of its buckets below one token is answered with that service's own
//! throttling error and not forwarded (it takes no token); otherwise it takes one from each.
//! Buckets belong to the proxy, not to a client: several `tap` processes through one proxy
//! share them, as environments in one account do. IAM's buckets are global (IAM has one
//! endpoint), every other service's are per region.
//!
//! The figures of [`RateLimits::aws_documented`], and where they come from:
//!
//! - **EC2** ([Request throttling for the Amazon EC2 API]): limits apply to each API action
//!   separately ("Limits are applied to individual API actions, not API action categories"), with
//!   the figures of its category: non-mutating (`Describe*`, `List*`, `Search*`, `Get*`) 100
//!   burst / 20 per second; the seven *unfiltered and unpaginated* non-mutating actions
//!   (`DescribeInstances`, `DescribeInstanceStatus`, `DescribeNetworkInterfaces`,
//!   `DescribeSecurityGroups`, `DescribeSnapshots`, `DescribeSpotInstanceRequests`,
//!   `DescribeVolumes`) called with no `Filter.N`, `MaxResults` or `NextToken` 50 / 10; mutating
//!   50 / 5; resource-intensive (`AuthorizeSecurityGroupIngress`, `RevokeSecurityGroupIngress`,
//!   `CreateKeyPair`, the VPC peering and spot request actions) 50 / 5; and the *uncategorized*
//!   actions of the page's second table that concern VPCs, network interfaces, NAT gateways,
//!   tags, instances, volumes, snapshots, images and endpoints with their own figures (e.g.
//!   `CreateNatGateway` and `DeleteNatGateway` 10 / 1, `CreateTags` and `DeleteTags` 100 / 10,
//!   `RunInstances` 5 / 2, `CreateVpcEndpoint` 4 / 0.3). Throttled: HTTP 503 `RequestLimitExceeded`.
//! - **ECS** ([Request throttling for the Amazon ECS API]): one bucket per category, shared by its
//!   actions: cluster modify 20 / 1, cluster read 50 / 20, task definition modify 20 / 1, task
//!   definition read 50 / 20, task definition deletion 5 / 1, capacity provider modify 10 / 1 and
//!   read 50 / 20, tag modify 20 / 10 and read 50 / 20, setting modify 10 / 1 and read 50 / 20,
//!   cluster resource modify (`RunTask`, `StopTask`, …) 100 / 40 and read (`DescribeTasks`,
//!   `ListTasks`, …) 100 / 20, agent modify 200 / 120, service modify (`CreateService`,
//!   `UpdateService`, `DeleteService`) 50 / 5, service read 100 / 20, service deployment 50 / 20,
//!   service revision 50 / 20, task protection 200 / 80, `ListServicesByNamespace` 10 / 1.
//!   Throttled: 400 `ThrottlingException`.
//! - **Elastic Load Balancing v2** ([Request throttling for the ELB API]): one account-level
//!   bucket shared by every action, 40 / 10, and besides it one per category: resource-intensive
//!   (`CreateLoadBalancer`, `SetSubnets`) 10 / 0.2, registration (`RegisterTargets`,
//!   `DeregisterTargets`) 20 / 4, non-mutating (`Describe*`) 40 / 10, mutating 20 / 3, and the
//!   uncategorized trust store and resource policy actions with theirs. Throttled: 400
//!   `Throttling` (the query protocol's code; the page names it `ThrottlingException`).
//! - **CloudWatch Logs** ([CloudWatch Logs quotas]): transactions per second per action:
//!   `CreateLogGroup`, `DeleteLogGroup`, `DescribeLogGroups`, `DescribeLogStreams`,
//!   `FilterLogEvents` 5, `GetLogEvents` 10, `CreateLogStream` 50, `PutLogEvents` 800.
//! - **CloudWatch** ([CloudWatch service quotas]): per action, `DescribeAlarms` and
//!   `DescribeAlarmsForMetric` 9 TPS, `PutMetricAlarm`, `DeleteAlarms`, `DescribeAlarmHistory`,
//!   `EnableAlarmActions`, `DisableAlarmActions`, `SetAlarmState` 3, `ListMetrics` 25,
//!   `GetMetricData` 50, `GetMetricStatistics` 400, `PutMetricData` 500, the dashboard actions
//!   10. Throttled: 400 `Throttling` (tap speaks CloudWatch's query protocol).
//! - **ECR** ([Amazon ECR service quotas]): the image push and pull actions per action
//!   (`PutImage` 10 TPS, `InitiateLayerUpload` and `CompleteLayerUpload` 100, `UploadLayerPart`
//!   and `GetAuthorizationToken` 500, `BatchCheckLayerAvailability` 1000, `BatchGetImage` 2000,
//!   `GetDownloadUrlForLayer` 3000).
//! - **Secrets Manager** ([AWS Secrets Manager quotas]): combined rates, one bucket per group:
//!   `DescribeSecret` + `GetSecretValue` 10,000 per second; `PutSecretValue`, `UpdateSecret`,
//!   `UpdateSecretVersionStage` and the replication actions 50; `TagResource` + `UntagResource`
//!   50; the resource policy actions 50; `RestoreSecret` 50; `RotateSecret` +
//!   `CancelRotateSecret` 50; `BatchGetSecretValue` 100.
//! - **Cloud Map** ([Cloud Map DiscoverInstances throttling]): `DiscoverInstances` 2,000 / 1,000,
//!   throttled with `RequestLimitExceeded`.
//! - **STS** ([IAM and AWS STS quotas]): 600 requests per second per account and region, shared
//!   by its credentialed operations.
//!
//! A quota given as transactions per second with no burst is a bucket of that many tokens
//! refilled at that rate.
//!
//! # Where AWS documents no figure: conservative defaults
//!
//! IAM, Application Auto Scaling, Cloud Map (but `DiscoverInstances`), ECR's control plane
//! (`CreateRepository`, `DescribeRepositories`, `DescribeImages`, `ListImages`,
//! `PutLifecyclePolicy`, tagging, …) and ECS actions missing from its table
//! (`StopServiceDeployment`, …) publish no request rates. For them, one bucket shared by all
//! their mutating actions, 10 burst / 2 per second (between ECS's 1 per second for its modify
//! categories and EC2's 5 per second for mutating actions), and one shared by all their
//! non-mutating actions, 20 / 10 (half of EC2's and ECS's 20 per second reads). CloudWatch Logs'
//! undocumented actions (`PutRetentionPolicy`, `TagResource`, `ListTagsForResource`, …) get its
//! lowest documented rate, 5 per second, mutating and non-mutating each; CloudWatch's
//! (`TagResource`, `ListTagsForResource`, …) 3 and 9 per second, the figures of its alarm
//! actions; Secrets Manager's (`CreateSecret`, `DeleteSecret`, `ListSecrets`,
//! `GetRandomPassword`, …) 50 per second, its documented control plane rate. Mutating means
//! anything but `Describe*`, `List*`, `Get*`, `Search*`, `Discover*`, `BatchGet*`, `Lookup*`.
//! JSON services' throttling error is 400 `ThrottlingException`; IAM's and STS's (query) 400
//! `Throttling`. Every code used is one the SDK's retry classifier counts as throttling.
//!
//! # What is left out
//!
//! EC2's resource token buckets (instances launched or terminated, on top of the request
//! buckets), its separate console buckets, and its uncategorized actions outside the families
//! above (they fall into their category); Fargate's own rate of `RunTask`; the per-log-stream
//! `PutLogEvents` limit; CloudWatch's data point rates of `GetMetricData`; quota increases,
//! regional differences (e.g. `PutLogEvents` is 1,500 in three regions: 800 is kept); calls AWS
//! services make on an account's behalf (their own buckets, not modelled); S3 and any service
//! not listed here (never throttled). AWS also throttles on things no page states (load,
//! per-resource rates); only the documented buckets are modelled.
//!
//! [Request throttling for the Amazon EC2 API]: https://docs.aws.amazon.com/ec2/latest/devguide/ec2-api-throttling.html
//! [Request throttling for the Amazon ECS API]: https://docs.aws.amazon.com/AmazonECS/latest/APIReference/request-throttling.html
//! [Request throttling for the ELB API]: https://docs.aws.amazon.com/elasticloadbalancing/latest/userguide/elb-api-throttling.html
//! [CloudWatch Logs quotas]: https://docs.aws.amazon.com/AmazonCloudWatch/latest/logs/cloudwatch_limits_cwl.html
//! [CloudWatch service quotas]: https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/cloudwatch_limits.html
//! [Amazon ECR service quotas]: https://docs.aws.amazon.com/AmazonECR/latest/userguide/service-quotas.html
//! [AWS Secrets Manager quotas]: https://docs.aws.amazon.com/secretsmanager/latest/userguide/reference_limits.html
//! [Cloud Map DiscoverInstances throttling]: https://docs.aws.amazon.com/cloud-map/latest/dg/throttling.html
//! [IAM and AWS STS quotas]: https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_iam-quotas.html

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::proxy::{ec2_error_body, http_response, query_error_body, Fate, SeenCall};

/// An AWS service whose request rates are modelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Service {
    /// Amazon EC2 (query protocol, `Version=2016-11-15`).
    Ec2,
    /// Amazon ECS (JSON).
    Ecs,
    /// Elastic Load Balancing v2 (query).
    Elbv2,
    /// IAM (query, global).
    Iam,
    /// Amazon ECR (JSON).
    Ecr,
    /// CloudWatch Logs (JSON).
    Logs,
    /// CloudWatch metrics and alarms (query, as tap speaks it).
    CloudWatch,
    /// Secrets Manager (JSON).
    SecretsManager,
    /// Cloud Map, `servicediscovery` (JSON).
    CloudMap,
    /// Application Auto Scaling (JSON).
    AppAutoScaling,
    /// STS (query).
    Sts,
}

impl Service {
    /// Every modelled service.
    pub const ALL: [Service; 11] = [
        Service::Ec2,
        Service::Ecs,
        Service::Elbv2,
        Service::Iam,
        Service::Ecr,
        Service::Logs,
        Service::CloudWatch,
        Service::SecretsManager,
        Service::CloudMap,
        Service::AppAutoScaling,
        Service::Sts,
    ];

    /// The service of a signing name (the fourth part of a SigV4 credential scope).
    pub fn from_signing_name(name: &str) -> Option<Service> {
        Some(match name {
            "ec2" => Service::Ec2,
            "ecs" => Service::Ecs,
            "elasticloadbalancing" => Service::Elbv2,
            "iam" => Service::Iam,
            "ecr" => Service::Ecr,
            "logs" => Service::Logs,
            "monitoring" => Service::CloudWatch,
            "secretsmanager" => Service::SecretsManager,
            "servicediscovery" => Service::CloudMap,
            "application-autoscaling" => Service::AppAutoScaling,
            "sts" => Service::Sts,
            _ => return None,
        })
    }

    /// The service of a JSON request's `X-Amz-Target` prefix (the part before the `.`).
    fn from_target_prefix(prefix: &str) -> Option<Service> {
        Some(match prefix {
            "AmazonEC2ContainerServiceV20141113" => Service::Ecs,
            "AmazonEC2ContainerRegistry_V20150921" => Service::Ecr,
            "Logs_20140328" => Service::Logs,
            "secretsmanager" => Service::SecretsManager,
            "Route53AutoNaming_v20170314" => Service::CloudMap,
            "AnyScaleFrontendService" => Service::AppAutoScaling,
            "GraniteServiceVersion20100801" => Service::CloudWatch,
            _ => return None,
        })
    }

    /// The service of a query request's API `Version`.
    fn from_query_version(version: &str) -> Option<Service> {
        Some(match version {
            "2016-11-15" => Service::Ec2,
            "2015-12-01" => Service::Elbv2,
            "2010-05-08" => Service::Iam,
            "2010-08-01" => Service::CloudWatch,
            "2011-06-15" => Service::Sts,
            _ => return None,
        })
    }

    /// The service a request is for: the signing name of its credential scope, else its
    /// `X-Amz-Target` prefix, else its query `Version`; `None` for any other service.
    pub fn of_request(head: &str, body: &str) -> Option<Service> {
        let scope = head.split("Credential=").nth(1).and_then(|c| c.split('/').nth(3));
        if let Some(service) = scope.and_then(Service::from_signing_name) {
            return Some(service);
        }
        let target = head.lines().find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.trim().eq_ignore_ascii_case("x-amz-target").then(|| value.trim().to_owned())
        });
        if let Some(target) = target {
            return target.split_once('.').and_then(|(prefix, _)| Service::from_target_prefix(prefix));
        }
        body.split('&').find_map(|kv| kv.strip_prefix("Version=")).and_then(Service::from_query_version)
    }

    /// Whether its protocol is AWS JSON (`X-Amz-Target`), not query.
    fn speaks_json(self) -> bool {
        !matches!(self, Service::Ec2 | Service::Elbv2 | Service::Iam | Service::CloudWatch | Service::Sts)
    }

    /// Short name, as in reports.
    pub fn name(self) -> &'static str {
        match self {
            Service::Ec2 => "ec2",
            Service::Ecs => "ecs",
            Service::Elbv2 => "elbv2",
            Service::Iam => "iam",
            Service::Ecr => "ecr",
            Service::Logs => "logs",
            Service::CloudWatch => "cloudwatch",
            Service::SecretsManager => "secretsmanager",
            Service::CloudMap => "servicediscovery",
            Service::AppAutoScaling => "application-autoscaling",
            Service::Sts => "sts",
        }
    }
}

impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One bucket's figures: at most `capacity` tokens (the burst), refilled at `refill_per_second`
/// (the sustained rate).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limit {
    /// Most tokens the bucket holds; it starts full.
    pub capacity: f64,
    /// Tokens added per second, continuously, up to the capacity.
    pub refill_per_second: f64,
}

impl Limit {
    /// A bucket of `capacity` tokens refilled at `refill_per_second`.
    pub const fn new(capacity: f64, refill_per_second: f64) -> Limit {
        Limit { capacity, refill_per_second }
    }

    /// A quota of `n` transactions per second with no stated burst: `n` tokens, `n` a second.
    pub const fn per_second(n: f64) -> Limit {
        Limit { capacity: n, refill_per_second: n }
    }
}

/// The class of calls sharing the catch-all bucket of mutating actions of a service.
pub const MUTATING: &str = "mutating";
/// The class of calls sharing the catch-all bucket of non-mutating actions of a service.
pub const NON_MUTATING: &str = "non-mutating";

/// A group of actions with one documented quota.
struct Group {
    /// Its class name (a key of [`RateLimits`]).
    class: &'static str,
    /// Its actions; empty: the one action named like the class.
    actions: &'static [&'static str],
    /// Whether each action has a bucket of its own with these figures (EC2 and the per-action
    /// TPS quotas), rather than the group sharing one.
    per_action: bool,
    limit: Limit,
}

impl Group {
    fn holds(&self, op: &str) -> bool {
        if self.actions.is_empty() {
            self.class == op
        } else {
            self.actions.contains(&op)
        }
    }
}

const fn own(action: &'static str, limit: Limit) -> Group {
    Group { class: action, actions: &[], per_action: true, limit }
}

const fn shared(class: &'static str, actions: &'static [&'static str], limit: Limit) -> Group {
    Group { class, actions, per_action: false, limit }
}

const fn each(class: &'static str, actions: &'static [&'static str], limit: Limit) -> Group {
    Group { class, actions, per_action: true, limit }
}

/// A service's documented (or default) figures and how its calls are sorted into classes.
struct Table {
    service: Service,
    /// Checked in order; the first group holding the action is its class.
    groups: &'static [Group],
    /// A bucket every call of the service draws from as well (ELB's account-level bucket).
    every_call: Option<Group>,
    /// The catch-all classes of actions in no group: (mutating, non-mutating), or none.
    catch_all: Option<(Limit, Limit)>,
    /// Whether the catch-all buckets are per action (EC2) or shared.
    catch_all_per_action: bool,
}

/// The catch-all figures where AWS documents none (see the module docs).
const UNDOCUMENTED: (Limit, Limit) = (Limit::new(10.0, 2.0), Limit::new(20.0, 10.0));

/// The EC2 actions whose unfiltered, unpaginated calls draw from a smaller bucket.
const EC2_UNFILTERED: &[&str] = &[
    "DescribeInstances",
    "DescribeInstanceStatus",
    "DescribeNetworkInterfaces",
    "DescribeSecurityGroups",
    "DescribeSnapshots",
    "DescribeSpotInstanceRequests",
    "DescribeVolumes",
];
const EC2_UNFILTERED_CLASS: &str = "unfiltered-non-mutating";

const EC2: Table = Table {
    service: Service::Ec2,
    groups: &[
        each(
            "resource-intensive",
            &[
                "AcceptVpcPeeringConnection",
                "AuthorizeSecurityGroupIngress",
                "CancelSpotInstanceRequests",
                "CreateKeyPair",
                "CreateVpcPeeringConnection",
                "DeleteVpcPeeringConnection",
                "RejectVpcPeeringConnection",
                "RevokeSecurityGroupIngress",
                "RequestSpotInstances",
            ],
            Limit::new(50.0, 5.0),
        ),
        each(EC2_UNFILTERED_CLASS, EC2_UNFILTERED, Limit::new(50.0, 10.0)),
        // Uncategorized actions with their own figures (VPC, ENI, NAT, tags, instances, volumes,
        // snapshots, images, endpoints).
        own("AssignIpv6Addresses", Limit::new(100.0, 5.0)),
        own("AssignPrivateIpAddresses", Limit::new(100.0, 5.0)),
        own("AssignPrivateNatGatewayAddress", Limit::new(10.0, 1.0)),
        own("AssociateIamInstanceProfile", Limit::new(100.0, 5.0)),
        own("AssociateNatGatewayAddress", Limit::new(10.0, 1.0)),
        own("CopyImage", Limit::new(100.0, 1.0)),
        own("CreateDefaultSubnet", Limit::new(1.0, 1.0)),
        own("CreateDefaultVpc", Limit::new(1.0, 1.0)),
        own("CreateLaunchTemplateVersion", Limit::new(100.0, 5.0)),
        own("CreateNatGateway", Limit::new(10.0, 1.0)),
        own("CreateNetworkInterface", Limit::new(100.0, 5.0)),
        own("CreateSnapshot", Limit::new(100.0, 5.0)),
        own("CreateSnapshots", Limit::new(100.0, 5.0)),
        own("CreateSubnetCidrReservation", Limit::new(5.0, 1.0)),
        own("CreateTags", Limit::new(100.0, 10.0)),
        own("CreateVolume", Limit::new(100.0, 5.0)),
        own("CreateVpcEndpoint", Limit::new(4.0, 0.3)),
        own("CreateVpcEndpointServiceConfiguration", Limit::new(10.0, 1.0)),
        own("DeleteNatGateway", Limit::new(10.0, 1.0)),
        own("DeleteNetworkInterface", Limit::new(100.0, 5.0)),
        own("DeleteSnapshot", Limit::new(100.0, 5.0)),
        own("DeleteSubnetCidrReservation", Limit::new(5.0, 1.0)),
        own("DeleteTags", Limit::new(100.0, 10.0)),
        own("DeleteVolume", Limit::new(100.0, 5.0)),
        own("DeleteVpcEndpoints", Limit::new(4.0, 0.3)),
        own("DeleteVpcEndpointServiceConfigurations", Limit::new(10.0, 1.0)),
        own("DeregisterImage", Limit::new(100.0, 5.0)),
        own("DescribeSecurityGroupReferences", Limit::new(20.0, 5.0)),
        own("DescribeStaleSecurityGroups", Limit::new(20.0, 5.0)),
        own("DisassociateIamInstanceProfile", Limit::new(100.0, 5.0)),
        own("DisassociateNatGatewayAddress", Limit::new(10.0, 1.0)),
        own("ModifyImageAttribute", Limit::new(100.0, 5.0)),
        own("ModifyInstanceMetadataOptions", Limit::new(100.0, 5.0)),
        own("ModifyLaunchTemplate", Limit::new(100.0, 5.0)),
        own("ModifyNetworkInterfaceAttribute", Limit::new(100.0, 5.0)),
        own("ModifySnapshotAttribute", Limit::new(100.0, 5.0)),
        own("ModifyVpcEndpoint", Limit::new(4.0, 0.3)),
        own("ModifyVpcEndpointServiceConfiguration", Limit::new(10.0, 1.0)),
        own("RunInstances", Limit::new(5.0, 2.0)),
        own("StartInstances", Limit::new(5.0, 2.0)),
        own("TerminateInstances", Limit::new(100.0, 5.0)),
        own("UnassignPrivateIpAddresses", Limit::new(100.0, 5.0)),
        own("UnassignPrivateNatGatewayAddress", Limit::new(10.0, 1.0)),
    ],
    every_call: None,
    catch_all: Some((Limit::new(50.0, 5.0), Limit::new(100.0, 20.0))),
    catch_all_per_action: true,
};

const ECS: Table = Table {
    service: Service::Ecs,
    groups: &[
        shared(
            "cluster-modify",
            &[
                "CreateCluster",
                "DeleteCluster",
                "PutClusterCapacityProviders",
                "UpdateCluster",
                "UpdateClusterSettings",
            ],
            Limit::new(20.0, 1.0),
        ),
        shared("cluster-read", &["DescribeClusters", "ListClusters"], Limit::new(50.0, 20.0)),
        shared(
            "task-definition-modify",
            &["DeregisterTaskDefinition", "RegisterTaskDefinition"],
            Limit::new(20.0, 1.0),
        ),
        shared(
            "task-definition-read",
            &["DescribeTaskDefinition", "ListTaskDefinitions", "ListTaskDefinitionFamilies"],
            Limit::new(50.0, 20.0),
        ),
        shared("task-definition-deletion", &["DeleteTaskDefinitions"], Limit::new(5.0, 1.0)),
        shared(
            "capacity-provider-modify",
            &["CreateCapacityProvider", "DeleteCapacityProvider", "UpdateCapacityProvider"],
            Limit::new(10.0, 1.0),
        ),
        shared("capacity-provider-read", &["DescribeCapacityProviders"], Limit::new(50.0, 20.0)),
        shared("tag-modify", &["TagResource", "UntagResource"], Limit::new(20.0, 10.0)),
        shared("tag-read", &["ListTagsForResource"], Limit::new(50.0, 20.0)),
        shared(
            "setting-modify",
            &["DeleteAccountSetting", "PutAccountSetting", "PutAccountSettingDefault"],
            Limit::new(10.0, 1.0),
        ),
        shared("setting-read", &["ListAccountSettings"], Limit::new(50.0, 20.0)),
        shared(
            "cluster-resource-modify",
            &[
                "DeleteAttributes",
                "DeregisterContainerInstance",
                "ExecuteCommand",
                "PutAttributes",
                "RunTask",
                "StartTask",
                "StopTask",
                "UpdateContainerAgent",
                "UpdateContainerInstancesState",
            ],
            Limit::new(100.0, 40.0),
        ),
        shared(
            "cluster-resource-read",
            &["DescribeContainerInstances", "DescribeTasks", "ListAttributes", "ListContainerInstances", "ListTasks"],
            Limit::new(100.0, 20.0),
        ),
        shared(
            "agent-modify",
            &[
                "RegisterContainerInstance",
                "SubmitAttachmentStateChanges",
                "SubmitContainerStateChange",
                "SubmitTaskStateChange",
            ],
            Limit::new(200.0, 120.0),
        ),
        shared("service-modify", &["CreateService", "DeleteService", "UpdateService"], Limit::new(50.0, 5.0)),
        shared("service-read", &["DescribeServices", "ListServices"], Limit::new(100.0, 20.0)),
        shared("service-deployment", &["DescribeServiceDeployments", "ListServiceDeployments"], Limit::new(50.0, 20.0)),
        shared("service-revision", &["DescribeServiceRevisions"], Limit::new(50.0, 20.0)),
        shared("task-protection", &["UpdateTaskProtection", "GetTaskProtection"], Limit::new(200.0, 80.0)),
        shared("cluster-service-resource-read", &["ListServicesByNamespace"], Limit::new(10.0, 1.0)),
    ],
    every_call: None,
    catch_all: Some(UNDOCUMENTED),
    catch_all_per_action: false,
};

const ELBV2: Table = Table {
    service: Service::Elbv2,
    groups: &[
        shared("resource-intensive", &["CreateLoadBalancer", "SetSubnets"], Limit::new(10.0, 0.2)),
        shared("registration", &["RegisterTargets", "DeregisterTargets"], Limit::new(20.0, 4.0)),
        shared("create-trust-store", &["CreateTrustStore"], Limit::new(10.0, 0.2)),
        shared(
            "trust-store-modify",
            &[
                "AddTrustStoreRevocations",
                "DeleteSharedTrustStoreAssociation",
                "DeleteTrustStore",
                "ModifyTrustStore",
                "RemoveTrustStoreRevocations",
            ],
            Limit::new(10.0, 0.2),
        ),
        shared(
            "uncategorized-get",
            &["GetResourcePolicy", "GetTrustStoreCaCertificatesBundle", "GetTrustStoreRevocationContent"],
            Limit::new(20.0, 4.0),
        ),
    ],
    every_call: Some(shared("account", &[], Limit::new(40.0, 10.0))),
    catch_all: Some((Limit::new(20.0, 3.0), Limit::new(40.0, 10.0))),
    catch_all_per_action: false,
};

const IAM: Table = Table {
    service: Service::Iam,
    groups: &[],
    every_call: None,
    catch_all: Some(UNDOCUMENTED),
    catch_all_per_action: false,
};

const ECR: Table = Table {
    service: Service::Ecr,
    groups: &[
        own("BatchCheckLayerAvailability", Limit::per_second(1000.0)),
        own("BatchGetImage", Limit::per_second(2000.0)),
        own("CompleteLayerUpload", Limit::per_second(100.0)),
        own("GetAuthorizationToken", Limit::per_second(500.0)),
        own("GetDownloadUrlForLayer", Limit::per_second(3000.0)),
        own("InitiateLayerUpload", Limit::per_second(100.0)),
        own("PutImage", Limit::per_second(10.0)),
        own("UploadLayerPart", Limit::per_second(500.0)),
    ],
    every_call: None,
    catch_all: Some(UNDOCUMENTED),
    catch_all_per_action: false,
};

const LOGS: Table = Table {
    service: Service::Logs,
    groups: &[
        own("CreateLogGroup", Limit::per_second(5.0)),
        own("DeleteLogGroup", Limit::per_second(5.0)),
        own("DescribeLogGroups", Limit::per_second(5.0)),
        own("DescribeLogStreams", Limit::per_second(5.0)),
        own("FilterLogEvents", Limit::per_second(5.0)),
        own("GetLogEvents", Limit::per_second(10.0)),
        own("CreateLogStream", Limit::per_second(50.0)),
        own("PutLogEvents", Limit::per_second(800.0)),
    ],
    every_call: None,
    catch_all: Some((Limit::per_second(5.0), Limit::per_second(5.0))),
    catch_all_per_action: false,
};

const CLOUDWATCH: Table = Table {
    service: Service::CloudWatch,
    groups: &[
        own("DescribeAlarms", Limit::per_second(9.0)),
        own("DescribeAlarmsForMetric", Limit::per_second(9.0)),
        own("PutMetricAlarm", Limit::per_second(3.0)),
        own("DeleteAlarms", Limit::per_second(3.0)),
        own("DescribeAlarmHistory", Limit::per_second(3.0)),
        own("DisableAlarmActions", Limit::per_second(3.0)),
        own("EnableAlarmActions", Limit::per_second(3.0)),
        own("SetAlarmState", Limit::per_second(3.0)),
        own("ListMetrics", Limit::per_second(25.0)),
        own("GetMetricData", Limit::per_second(50.0)),
        own("GetMetricStatistics", Limit::per_second(400.0)),
        own("PutMetricData", Limit::per_second(500.0)),
        own("GetMetricWidgetImage", Limit::per_second(20.0)),
        each(
            "dashboards",
            &["DeleteDashboards", "GetDashboard", "ListDashboards", "PutDashboard"],
            Limit::per_second(10.0),
        ),
        each("anomaly-detectors", &["PutAnomalyDetector", "DescribeAnomalyDetectors"], Limit::per_second(10.0)),
        own("DeleteAnomalyDetector", Limit::per_second(5.0)),
    ],
    every_call: None,
    catch_all: Some((Limit::per_second(3.0), Limit::per_second(9.0))),
    catch_all_per_action: false,
};

const SECRETS_MANAGER: Table = Table {
    service: Service::SecretsManager,
    groups: &[
        shared("describe-and-get-value", &["DescribeSecret", "GetSecretValue"], Limit::per_second(10_000.0)),
        shared(
            "put-and-update",
            &[
                "PutSecretValue",
                "RemoveRegionsFromReplication",
                "ReplicateSecretToRegion",
                "StopReplicationToReplica",
                "UpdateSecret",
                "UpdateSecretVersionStage",
            ],
            Limit::per_second(50.0),
        ),
        shared(
            "resource-policy",
            &["DeleteResourcePolicy", "GetResourcePolicy", "PutResourcePolicy", "ValidateResourcePolicy"],
            Limit::per_second(50.0),
        ),
        shared("restore", &["RestoreSecret"], Limit::per_second(50.0)),
        shared("rotate", &["RotateSecret", "CancelRotateSecret"], Limit::per_second(50.0)),
        shared("tag", &["TagResource", "UntagResource"], Limit::per_second(50.0)),
        shared("batch-get-value", &["BatchGetSecretValue"], Limit::per_second(100.0)),
    ],
    every_call: None,
    catch_all: Some((Limit::per_second(50.0), Limit::per_second(50.0))),
    catch_all_per_action: false,
};

const CLOUD_MAP: Table = Table {
    service: Service::CloudMap,
    groups: &[shared("discover-instances", &["DiscoverInstances"], Limit::new(2000.0, 1000.0))],
    every_call: None,
    catch_all: Some(UNDOCUMENTED),
    catch_all_per_action: false,
};

const APP_AUTO_SCALING: Table = Table {
    service: Service::AppAutoScaling,
    groups: &[],
    every_call: None,
    catch_all: Some(UNDOCUMENTED),
    catch_all_per_action: false,
};

const STS: Table = Table {
    service: Service::Sts,
    groups: &[],
    every_call: Some(shared("requests", &[], Limit::per_second(600.0))),
    catch_all: None,
    catch_all_per_action: false,
};

const TABLES: [&Table; 11] =
    [&EC2, &ECS, &ELBV2, &IAM, &ECR, &LOGS, &CLOUDWATCH, &SECRETS_MANAGER, &CLOUD_MAP, &APP_AUTO_SCALING, &STS];

fn table(service: Service) -> &'static Table {
    TABLES.iter().copied().find(|t| t.service == service).unwrap_or(&STS)
}

/// Whether an action only reads.
pub fn is_non_mutating(op: &str) -> bool {
    ["Describe", "List", "Get", "Search", "Discover", "BatchGet", "Lookup"].iter().any(|p| op.starts_with(p))
}

/// Whether an EC2 query request names neither a filter nor pagination.
fn unfiltered_and_unpaginated(body: &str) -> bool {
    !body
        .split('&')
        .any(|kv| kv.starts_with("Filter.") || kv.starts_with("MaxResults=") || kv.starts_with("NextToken="))
}

/// The classes a call draws a token from, each with whether its bucket is the action's own.
fn classes(service: Service, op: &str, body: &str) -> Vec<(&'static str, bool)> {
    let table = table(service);
    let mut out: Vec<(&'static str, bool)> = table.every_call.iter().map(|g| (g.class, g.per_action)).collect();
    let group = table.groups.iter().find(|g| {
        g.holds(op)
            && !(service == Service::Ec2 && g.class == EC2_UNFILTERED_CLASS && !unfiltered_and_unpaginated(body))
    });
    match group {
        Some(g) => out.push((g.class, g.per_action)),
        None if table.catch_all.is_some() => {
            out.push((if is_non_mutating(op) { NON_MUTATING } else { MUTATING }, table.catch_all_per_action))
        }
        None => {}
    }
    out
}

/// One token bucket: a class of a service in a region, and the action when each action of the
/// class has its own.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BucketId {
    /// The service.
    pub service: Service,
    /// The region (`global` for IAM).
    pub region: String,
    /// The class ([`RateLimits`] keys its figures by service and class).
    pub class: String,
    /// The action, when it has a bucket of its own with its class's figures.
    pub action: Option<String>,
}

impl fmt::Display for BucketId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}[{}] {}", self.service, self.region, self.class)?;
        match &self.action {
            Some(action) if *action != self.class => write!(f, " {action}"),
            _ => Ok(()),
        }
    }
}

/// Token bucket figures per service and class of call, set on the proxy with
/// [`crate::proxy::Proxy::set_rate_limits`]. A class with no figures is not limited, so
/// [`RateLimits::default`] limits nothing and a test can limit only what it looks at.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RateLimits {
    limits: BTreeMap<(Service, String), Limit>,
}

impl RateLimits {
    /// AWS's documented figures, and the conservative defaults where it documents none (see the
    /// module docs for both and their sources).
    pub fn aws_documented() -> RateLimits {
        let mut limits = RateLimits::default();
        for t in TABLES {
            for g in t.groups.iter().chain(&t.every_call) {
                limits = limits.with(t.service, g.class, g.limit);
            }
            if let Some((mutating, non_mutating)) = t.catch_all {
                limits = limits.with(t.service, MUTATING, mutating).with(t.service, NON_MUTATING, non_mutating);
            }
        }
        limits
    }

    /// These limits with `class` of `service` set to `limit`. The classes are the module docs'
    /// (e.g. ECS `"service-modify"`, ELB `"account"`, EC2 `"unfiltered-non-mutating"`), an action
    /// name for an action with figures of its own (e.g. EC2 `"CreateNatGateway"`, Logs
    /// `"CreateLogGroup"`), and [`MUTATING`] / [`NON_MUTATING`] for the rest of a service.
    pub fn with(mut self, service: Service, class: &str, limit: Limit) -> RateLimits {
        self.limits.insert((service, class.to_owned()), limit);
        self
    }

    /// The figures of `class` of `service`, if it is limited.
    pub fn limit(&self, service: Service, class: &str) -> Option<Limit> {
        self.limits.get(&(service, class.to_owned())).copied()
    }

    /// The limited buckets a call of `op` to `service` in `region` draws from (`body`: the
    /// request body, for EC2's filters and pagination).
    pub fn buckets(&self, service: Service, region: &str, op: &str, body: &str) -> Vec<BucketId> {
        let region = if service == Service::Iam { "global" } else { region };
        classes(service, op, body)
            .into_iter()
            .filter(|(class, _)| self.limits.contains_key(&(service, (*class).to_owned())))
            .map(|(class, per_action)| BucketId {
                service,
                region: region.to_owned(),
                class: class.to_owned(),
                action: per_action.then(|| op.to_owned()),
            })
            .collect()
    }

    /// The least wall time the buckets allow for `calls` (as [`SeenCall::buckets`] recorded them),
    /// starting from full buckets: for each bucket, the calls that took a token beyond its
    /// capacity, divided by its refill rate; the largest, with its bucket and call count.
    pub fn lower_bound<'a>(&self, calls: impl IntoIterator<Item = &'a SeenCall>) -> Option<Floor> {
        self.floors(calls).into_iter().next()
    }

    /// What each bucket imposes on `calls` (see [`RateLimits::lower_bound`]), largest first.
    pub fn floors<'a>(&self, calls: impl IntoIterator<Item = &'a SeenCall>) -> Vec<Floor> {
        let mut counts: BTreeMap<&BucketId, u64> = BTreeMap::new();
        for call in calls.into_iter().filter(|c| !matches!(c.fate, Fate::Throttled | Fate::Stalled)) {
            for bucket in &call.buckets {
                *counts.entry(bucket).or_default() += 1;
            }
        }
        let mut floors: Vec<Floor> = counts
            .into_iter()
            .filter_map(|(bucket, calls)| {
                let limit = self.limit(bucket.service, &bucket.class)?;
                let excess = (calls as f64 - limit.capacity).max(0.0);
                let seconds = if excess == 0.0 { 0.0 } else { excess / limit.refill_per_second };
                Some(Floor {
                    duration: Duration::from_secs_f64(seconds.min(1e9)),
                    bucket: bucket.clone(),
                    calls,
                    limit,
                })
            })
            .collect();
        floors.sort_by(|a, b| b.duration.cmp(&a.duration).then_with(|| b.calls.cmp(&a.calls)));
        floors
    }
}

/// The wall time one bucket imposes on a set of calls ([`RateLimits::lower_bound`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Floor {
    /// (calls − capacity) / refill rate, at least zero.
    pub duration: Duration,
    /// The bucket.
    pub bucket: BucketId,
    /// The calls that took a token from it.
    pub calls: u64,
    /// Its figures.
    pub limit: Limit,
}

#[derive(Debug, Clone, Copy)]
struct Tokens {
    tokens: f64,
    at: Instant,
}

/// The buckets' state: limits plus the tokens each bucket holds, shared by every call of a proxy.
#[derive(Debug)]
pub struct RateLimiter {
    limits: RateLimits,
    enforce: bool,
    buckets: Mutex<HashMap<BucketId, Tokens>>,
}

impl RateLimiter {
    /// Full buckets for `limits`.
    pub fn new(limits: RateLimits) -> RateLimiter {
        RateLimiter { limits, enforce: true, buckets: Mutex::new(HashMap::new()) }
    }

    /// `limits` only to name each call's buckets ([`SeenCall::buckets`], for
    /// [`RateLimits::lower_bound`]): no call is throttled.
    pub fn observing(limits: RateLimits) -> RateLimiter {
        RateLimiter { enforce: false, ..RateLimiter::new(limits) }
    }

    /// Whether calls finding an empty bucket are throttled.
    pub fn enforces(&self) -> bool {
        self.enforce
    }

    /// The figures.
    pub fn limits(&self) -> &RateLimits {
        &self.limits
    }

    /// Takes one token from each of `buckets` at `now` if every one holds one; else takes none
    /// and returns the first empty bucket.
    pub fn admit(&self, buckets: &[BucketId], now: Instant) -> Result<(), BucketId> {
        let mut state = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let mut levels = Vec::with_capacity(buckets.len());
        for id in buckets {
            let Some(limit) = self.limits.limit(id.service, &id.class) else { continue };
            let held = state.get(id).copied().unwrap_or(Tokens { tokens: limit.capacity, at: now });
            let elapsed = now.saturating_duration_since(held.at).as_secs_f64();
            let tokens = (held.tokens + elapsed * limit.refill_per_second).min(limit.capacity);
            if tokens < 1.0 {
                return Err(id.clone());
            }
            levels.push((id, tokens));
        }
        for (id, tokens) in levels {
            state.insert(id.clone(), Tokens { tokens: tokens - 1.0, at: now });
        }
        Ok(())
    }
}

/// The HTTP answer AWS gives a throttled call of `op` to `service`: EC2's `503
/// RequestLimitExceeded`, the other query services' `400 Throttling`, the JSON services' `400
/// ThrottlingException` (Cloud Map's `DiscoverInstances`: `RequestLimitExceeded`).
pub fn throttling_response(service: Service, op: &str) -> Vec<u8> {
    let (status, content_type, code, body) = match service {
        Service::Ec2 => {
            let code = "RequestLimitExceeded";
            let body = ec2_error_body(code, "Request limit exceeded.", "tap-proxy-rate-limit");
            ("503 Service Unavailable", "text/xml", code, body)
        }
        s if !s.speaks_json() => {
            let code = "Throttling";
            let body = query_error_body("Sender", code, "Rate exceeded", "tap-proxy-rate-limit");
            ("400 Bad Request", "text/xml", code, body)
        }
        s => {
            let code = if s == Service::CloudMap && op == "DiscoverInstances" {
                "RequestLimitExceeded"
            } else {
                "ThrottlingException"
            };
            (
                "400 Bad Request",
                "application/x-amz-json-1.1",
                code,
                format!(r#"{{"__type":"{code}","message":"Rate exceeded"}}"#),
            )
        }
    };
    let headers = format!("x-amzn-ErrorType: {code}\r\nx-amzn-RequestId: tap-proxy-rate-limit\r\n");
    http_response(status, content_type, &headers, &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(limits: &RateLimits, service: Service, op: &str, body: &str) -> Vec<String> {
        limits.buckets(service, "us-east-1", op, body).iter().map(ToString::to_string).collect()
    }

    #[test]
    fn services_are_told_by_credential_scope_target_or_version() {
        let signed = "POST / HTTP/1.1\r\nAuthorization: AWS4-HMAC-SHA256 Credential=AKID/20250101/eu-west-1/elasticloadbalancing/aws4_request, SignedHeaders=host\r\n";
        assert_eq!(Service::of_request(signed, "Action=DescribeLoadBalancers"), Some(Service::Elbv2));
        let cloud_map = "POST / HTTP/1.1\r\nX-Amz-Target: Route53AutoNaming_v20170314.CreateService\r\n";
        assert_eq!(Service::of_request(cloud_map, "{}"), Some(Service::CloudMap));
        let ecs = "POST / HTTP/1.1\r\nx-amz-target: AmazonEC2ContainerServiceV20141113.CreateService\r\n";
        assert_eq!(Service::of_request(ecs, "{}"), Some(Service::Ecs));
        assert_eq!(
            Service::of_request("POST / HTTP/1.1\r\n", "Action=CreateRole&Version=2010-05-08"),
            Some(Service::Iam)
        );
        assert_eq!(
            Service::of_request("POST / HTTP/1.1\r\n", "Action=DescribeVpcs&Version=2016-11-15"),
            Some(Service::Ec2)
        );
        assert_eq!(Service::of_request("GET /bucket HTTP/1.1\r\n", ""), None, "S3 is not modelled");
    }

    #[test]
    fn calls_fall_into_their_documented_classes() {
        let limits = RateLimits::aws_documented();
        // EC2: a bucket per action, with its category's figures.
        assert_eq!(
            ids(&limits, Service::Ec2, "DescribeVpcs", "Action=DescribeVpcs"),
            ["ec2[us-east-1] non-mutating DescribeVpcs"]
        );
        assert_eq!(ids(&limits, Service::Ec2, "CreateSubnet", ""), ["ec2[us-east-1] mutating CreateSubnet"]);
        assert_eq!(ids(&limits, Service::Ec2, "CreateNatGateway", ""), ["ec2[us-east-1] CreateNatGateway"]);
        assert_eq!(
            ids(&limits, Service::Ec2, "AuthorizeSecurityGroupIngress", ""),
            ["ec2[us-east-1] resource-intensive AuthorizeSecurityGroupIngress"]
        );
        assert_eq!(
            ids(&limits, Service::Ec2, "DescribeSecurityGroups", "Action=DescribeSecurityGroups&GroupId.1=sg-1"),
            ["ec2[us-east-1] unfiltered-non-mutating DescribeSecurityGroups"]
        );
        assert_eq!(
            ids(&limits, Service::Ec2, "DescribeSecurityGroups", "Action=DescribeSecurityGroups&Filter.1.Name=vpc-id"),
            ["ec2[us-east-1] non-mutating DescribeSecurityGroups"]
        );
        // ECS: one bucket per category; ELB: its category's and the account's.
        assert_eq!(ids(&limits, Service::Ecs, "UpdateService", "{}"), ["ecs[us-east-1] service-modify"]);
        assert_eq!(ids(&limits, Service::Ecs, "StopServiceDeployment", "{}"), ["ecs[us-east-1] mutating"]);
        assert_eq!(
            ids(&limits, Service::Elbv2, "RegisterTargets", ""),
            ["elbv2[us-east-1] account", "elbv2[us-east-1] registration"]
        );
        assert_eq!(ids(&limits, Service::Iam, "CreateRole", ""), ["iam[global] mutating"], "IAM is global");
        assert_eq!(ids(&limits, Service::Logs, "PutRetentionPolicy", "{}"), ["logs[us-east-1] mutating"]);
        assert_eq!(ids(&limits, Service::CloudWatch, "PutMetricAlarm", ""), ["cloudwatch[us-east-1] PutMetricAlarm"]);
        assert_eq!(limits.limit(Service::Ecs, "task-definition-modify"), Some(Limit::new(20.0, 1.0)));
        assert_eq!(limits.limit(Service::Elbv2, "account"), Some(Limit::new(40.0, 10.0)));
        // A class without figures is not limited.
        let only_ecs = RateLimits::default().with(Service::Ecs, "service-modify", Limit::new(1.0, 1.0));
        assert!(only_ecs.buckets(Service::Ec2, "us-east-1", "CreateVpc", "").is_empty());
        assert!(only_ecs.buckets(Service::Ecs, "us-east-1", "DescribeServices", "").is_empty());
    }

    #[test]
    fn a_burst_empties_the_bucket_then_calls_are_refused() {
        let limiter =
            RateLimiter::new(RateLimits::default().with(Service::Ecs, "service-modify", Limit::new(3.0, 1.0)));
        let bucket = limiter.limits().buckets(Service::Ecs, "us-east-1", "CreateService", "");
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(limiter.admit(&bucket, t0), Ok(()));
        }
        assert_eq!(limiter.admit(&bucket, t0), Err(bucket[0].clone()));
        assert_eq!(limiter.admit(&bucket, t0 + Duration::from_millis(500)), Err(bucket[0].clone()), "half a token");
    }

    #[test]
    fn buckets_refill_with_elapsed_time_up_to_their_capacity() {
        let limiter = RateLimiter::new(RateLimits::default().with(Service::Iam, MUTATING, Limit::new(2.0, 4.0)));
        let bucket = limiter.limits().buckets(Service::Iam, "us-east-1", "CreateRole", "");
        let t0 = Instant::now();
        assert!(limiter.admit(&bucket, t0).is_ok() && limiter.admit(&bucket, t0).is_ok());
        assert!(limiter.admit(&bucket, t0).is_err());
        // 4 tokens a second: one after 250 ms.
        assert!(limiter.admit(&bucket, t0 + Duration::from_millis(250)).is_ok());
        assert!(limiter.admit(&bucket, t0 + Duration::from_millis(260)).is_err());
        // A long pause refills no more than the capacity.
        let later = t0 + Duration::from_secs(60);
        assert!(limiter.admit(&bucket, later).is_ok() && limiter.admit(&bucket, later).is_ok());
        assert!(limiter.admit(&bucket, later).is_err());
    }

    #[test]
    fn buckets_are_independent_per_service_class_action_and_region() {
        let limits = RateLimits::default()
            .with(Service::Ecs, "service-modify", Limit::new(1.0, 0.001))
            .with(Service::Ecs, "service-read", Limit::new(1.0, 0.001))
            .with(Service::Ec2, MUTATING, Limit::new(1.0, 0.001))
            .with(Service::CloudMap, MUTATING, Limit::new(1.0, 0.001));
        let limiter = RateLimiter::new(limits);
        let t0 = Instant::now();
        let admit = |service, region: &str, op: &str| {
            limiter.admit(&limiter.limits().buckets(service, region, op, ""), t0).is_ok()
        };
        assert!(admit(Service::Ecs, "us-east-1", "CreateService"));
        assert!(!admit(Service::Ecs, "us-east-1", "UpdateService"), "one bucket for the category");
        assert!(admit(Service::Ecs, "us-east-1", "DescribeServices"), "reads have their own");
        assert!(admit(Service::CloudMap, "us-east-1", "CreateService"), "same name, another service");
        assert!(admit(Service::Ecs, "eu-west-1", "CreateService"), "another region");
        assert!(admit(Service::Ec2, "us-east-1", "CreateVpc"));
        assert!(admit(Service::Ec2, "us-east-1", "CreateSubnet"), "EC2 limits each action apart");
        assert!(!admit(Service::Ec2, "us-east-1", "CreateVpc"));
    }

    #[test]
    fn a_call_refused_by_one_bucket_takes_no_token_from_the_others() {
        let limits = RateLimits::default().with(Service::Elbv2, "account", Limit::new(2.0, 0.001)).with(
            Service::Elbv2,
            "registration",
            Limit::new(1.0, 0.001),
        );
        let limiter = RateLimiter::new(limits);
        let t0 = Instant::now();
        let register = limiter.limits().buckets(Service::Elbv2, "us-east-1", "RegisterTargets", "");
        let describe = limiter.limits().buckets(Service::Elbv2, "us-east-1", "DescribeTargetHealth", "");
        assert!(limiter.admit(&register, t0).is_ok());
        assert_eq!(limiter.admit(&register, t0).unwrap_err().class, "registration");
        assert!(limiter.admit(&describe, t0).is_ok(), "the refused call left the account bucket its token");
        assert_eq!(limiter.admit(&describe, t0).unwrap_err().class, "account");
    }

    #[test]
    fn each_protocol_gets_its_services_throttling_error() {
        // The codes the SDK's retry classifier treats as throttling (aws-runtime THROTTLING_ERRORS).
        let sdk_throttling = ["Throttling", "ThrottlingException", "RequestLimitExceeded"];
        let ec2 = String::from_utf8(throttling_response(Service::Ec2, "CreateVpc")).unwrap();
        assert!(ec2.starts_with("HTTP/1.1 503 "), "{ec2}");
        assert!(ec2.contains("<Errors><Error><Code>RequestLimitExceeded</Code>"), "{ec2}");
        for service in [Service::Iam, Service::Elbv2, Service::CloudWatch, Service::Sts] {
            let query = String::from_utf8(throttling_response(service, "Any")).unwrap();
            assert!(query.starts_with("HTTP/1.1 400 "), "{query}");
            assert!(query.contains("<Type>Sender</Type><Code>Throttling</Code>"), "{query}");
        }
        for service in [Service::Ecs, Service::Ecr, Service::Logs, Service::SecretsManager, Service::AppAutoScaling] {
            let json = String::from_utf8(throttling_response(service, "Any")).unwrap();
            assert!(json.starts_with("HTTP/1.1 400 ") && json.contains("application/x-amz-json-1.1"), "{json}");
            assert!(json.ends_with(r#"{"__type":"ThrottlingException","message":"Rate exceeded"}"#), "{json}");
        }
        let discover = String::from_utf8(throttling_response(Service::CloudMap, "DiscoverInstances")).unwrap();
        assert!(discover.contains(r#""__type":"RequestLimitExceeded""#), "{discover}");
        for service in Service::ALL {
            let response = String::from_utf8(throttling_response(service, "Any")).unwrap();
            let code = response.lines().find_map(|l| l.strip_prefix("x-amzn-ErrorType: ")).unwrap();
            assert!(sdk_throttling.contains(&code), "{service}: {code}");
            let length: usize =
                response.lines().find_map(|l| l.strip_prefix("Content-Length: ")).unwrap().parse().unwrap();
            assert_eq!(response.split("\r\n\r\n").nth(1).unwrap().len(), length);
        }
    }

    #[test]
    fn the_lower_bound_is_the_slowest_buckets_excess_over_its_refill() {
        let limits = RateLimits::default().with(Service::Ecs, "task-definition-modify", Limit::new(20.0, 1.0)).with(
            Service::Ecs,
            "service-modify",
            Limit::new(50.0, 5.0),
        );
        let call = |op: &str, fate| SeenCall {
            operation: op.to_owned(),
            fate,
            buckets: limits.buckets(Service::Ecs, "us-east-1", op, ""),
        };
        let mut calls: Vec<SeenCall> = (0..30).map(|_| call("RegisterTaskDefinition", Fate::Forwarded)).collect();
        calls.extend((0..100).map(|_| call("CreateService", Fate::Forwarded)));
        calls.extend((0..50).map(|_| call("RegisterTaskDefinition", Fate::Throttled)));
        let floor = limits.lower_bound(&calls).unwrap();
        // Task definitions: (30 − 20) / 1 = 10 s; services: (100 − 50) / 5 = 10 s, fewer calls... tie
        // broken by calls: services.
        assert_eq!(floor.duration, Duration::from_secs(10));
        assert_eq!(floor.bucket.class, "service-modify");
        assert_eq!(floor.calls, 100);
        calls.extend((0..5).map(|_| call("DeregisterTaskDefinition", Fate::Forwarded)));
        let floor = limits.lower_bound(&calls).unwrap();
        assert_eq!((floor.duration, floor.bucket.class.as_str()), (Duration::from_secs(15), "task-definition-modify"));
        let floors: Vec<String> = limits.floors(&calls).into_iter().map(|f| f.bucket.class).collect();
        assert_eq!(floors, ["task-definition-modify", "service-modify"]);
        assert_eq!(RateLimits::default().lower_bound(&[]), None);
    }
}
