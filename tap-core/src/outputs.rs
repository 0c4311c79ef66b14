//! The plain data one step hands to the next. Every field is an AWS identifier; during `plan`, an
//! identifier of a resource that does not exist yet is [`PENDING`].

use std::collections::BTreeMap;

use serde::Serialize;

/// Stands in, during `plan`, for the id of a resource that deploy would create.
pub const PENDING: &str = "(known after apply)";

/// Whether `id` is a real identifier rather than [`PENDING`].
pub fn is_known(id: &str) -> bool {
    id != PENDING && !id.is_empty()
}

/// The stack-output keys of a service's ARN and repository URL: `<camelCaseName>ServiceArn` and
/// `<camelCaseName>EcrUrl`, except that a name already ending in `-service` is not doubled, so the
/// default three give SPEC.md's `frontendServiceArn`, `apiGatewayServiceArn`,
/// `processingServiceArn` and `…EcrUrl`.
pub fn service_output_keys(service: &str) -> (String, String) {
    let mut camel = String::with_capacity(service.len());
    let mut upper = false;
    for c in service.chars() {
        if c == '-' {
            upper = true;
        } else if upper {
            camel.push(c.to_ascii_uppercase());
            upper = false;
        } else {
            camel.push(c);
        }
    }
    let arn = if camel.ends_with("Service") { format!("{camel}Arn") } else { format!("{camel}ServiceArn") };
    (arn, format!("{camel}EcrUrl"))
}

/// One subnet and its availability zone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SubnetRef {
    /// Availability zone name.
    pub az: String,
    /// Subnet id.
    pub id: String,
}

/// Written by the network step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NetworkOutputs {
    /// VPC id.
    pub vpc_id: String,
    /// Public subnets, one per AZ, in AZ order.
    pub public_subnets: Vec<SubnetRef>,
    /// Private subnets, one per AZ, in AZ order.
    pub private_subnets: Vec<SubnetRef>,
}

/// One ECR repository.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Repository {
    /// Repository name.
    pub name: String,
    /// Repository ARN.
    pub arn: String,
    /// `<account>.dkr.ecr.<region>.amazonaws.com/<name>`.
    pub uri: String,
    /// Created by this run, so it holds no image yet (nobody needs to ask ECR).
    pub created: bool,
}

/// Written by the registry step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RegistryOutputs {
    /// Service name → its repository.
    pub repositories: BTreeMap<String, Repository>,
}

/// Written by the cluster step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClusterOutputs {
    /// Cluster name.
    pub name: String,
    /// Cluster ARN.
    pub arn: String,
}

/// Written by the security step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SecurityOutputs {
    /// Security group of the load balancer.
    pub alb_security_group_id: String,
    /// Service name → its security group id.
    pub service_security_group_ids: BTreeMap<String, String>,
    /// The shared task-execution role ARN.
    pub execution_role_arn: String,
    /// Service name → its task role ARN.
    pub task_role_arns: BTreeMap<String, String>,
    /// Logical secret name → secret ARN (never the value).
    pub secret_arns: BTreeMap<String, String>,
    /// The role ECS assumes to move traffic on the load balancer, while a service shifts traffic.
    pub infrastructure_role_arn: Option<String>,
}

/// Written by the ingress step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IngressOutputs {
    /// Load balancer ARN.
    pub load_balancer_arn: String,
    /// Load balancer DNS name.
    pub dns_name: String,
    /// Routed service name → target group ARN.
    pub target_group_arns: BTreeMap<String, String>,
    /// Routed service name → what ECS needs to shift its traffic, for each service whose
    /// deployment strategy shifts traffic (blue-green, canary, linear).
    pub traffic_shifts: BTreeMap<String, TrafficShift>,
}

/// The load balancer resources ECS moves a traffic-shifting service's traffic with
/// (`loadBalancers[].advancedConfiguration`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TrafficShift {
    /// The second target group: the new revision's tasks register here during a deployment.
    pub alternate_target_group_arn: String,
    /// The forward-only listener rule whose weights ECS moves from one target group to the other.
    pub production_listener_rule_arn: String,
    /// The rule that reaches the new revision before production traffic moves.
    pub test_listener_rule_arn: String,
}

/// One Cloud Map service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DiscoveryService {
    /// Service id.
    pub id: String,
    /// Service ARN (ECS `serviceRegistries` takes it).
    pub arn: String,
}

/// Written by the discovery step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DiscoveryOutputs {
    /// Namespace id.
    pub namespace_id: String,
    /// Namespace ARN.
    pub namespace_arn: String,
    /// Namespace DNS name, e.g. `tap-dev.local`.
    pub namespace_name: String,
    /// Service name → its Cloud Map service.
    pub services: BTreeMap<String, DiscoveryService>,
}

/// Written by the services step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServicesOutputs {
    /// Service name → ECS service ARN.
    pub service_arns: BTreeMap<String, String>,
}

/// Written by the alarms step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AlarmsOutputs {
    /// Service name → the names of its CloudWatch alarms, sorted (what its
    /// `deploymentConfiguration.alarms` names); no entry for any service when alarms are disabled.
    pub alarm_names: BTreeMap<String, Vec<String>>,
}

#[cfg(test)]
mod tests {
    use super::service_output_keys;

    #[test]
    fn output_keys_are_camel_case_and_give_the_specs_for_the_default_services() {
        let keys = |s: &str| {
            let (arn, url) = service_output_keys(s);
            [arn, url]
        };
        assert_eq!(keys("frontend"), ["frontendServiceArn", "frontendEcrUrl"]);
        assert_eq!(keys("api-gateway"), ["apiGatewayServiceArn", "apiGatewayEcrUrl"]);
        assert_eq!(keys("processing-service"), ["processingServiceArn", "processingServiceEcrUrl"]);
        assert_eq!(keys("billing-v2"), ["billingV2ServiceArn", "billingV2EcrUrl"]);
    }
}
