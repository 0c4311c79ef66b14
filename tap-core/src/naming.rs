//! The one place that decides every name, logical id and tag set of an environment.
//!
//! State lives in AWS itself: a later run finds each resource again by its name or by the tags
//! below (`Environment` + `tap:component`), never through a local state file.

use crate::config::Config;

/// Tag key carrying the project name (`tap`).
pub const TAG_PROJECT: &str = "Project";
/// Tag key carrying the environment suffix.
pub const TAG_ENVIRONMENT: &str = "Environment";
/// Tag key marking resources tap manages (`tap`).
pub const TAG_MANAGED_BY: &str = "ManagedBy";
/// Tag key carrying the resource's name.
pub const TAG_NAME: &str = "Name";
/// Tag key carrying the logical id, e.g. `network/subnet/private-1`.
pub const TAG_COMPONENT: &str = "tap:component";
/// Value of the `Project` and `ManagedBy` tags.
pub const PROJECT: &str = "tap";

/// One tag.
pub type Tag = (String, String);

/// Names and tags of one environment, derived from its config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    env: String,
    services: Vec<String>,
    route_short_names: Vec<String>,
    /// Short names of the routes whose service shifts traffic (it has an alternate target group).
    shifting_short_names: Vec<String>,
    secrets: Vec<String>,
}

impl Names {
    /// The names of the environment `config` describes.
    pub fn new(config: &Config) -> Self {
        Names {
            env: config.environment.clone(),
            services: config.services.iter().map(|s| s.name.clone()).collect(),
            route_short_names: config
                .services
                .iter()
                .filter_map(|s| s.route.as_ref().map(|r| r.short_name.clone()))
                .collect(),
            shifting_short_names: config
                .services
                .iter()
                .filter(|s| config.strategy_of(s).strategy.shifts_traffic())
                .filter_map(|s| s.route.as_ref().map(|r| r.short_name.clone()))
                .collect(),
            secrets: config.secrets.iter().map(|s| s.name.clone()).collect(),
        }
    }

    /// The environment suffix `{s}`.
    pub fn env(&self) -> &str {
        &self.env
    }

    /// `tap-{base}-{s}`: the general shape of a name.
    pub fn name(&self, base: &str) -> String {
        format!("tap-{base}-{}", self.env)
    }

    /// The standard tags of a resource: Project, Environment, ManagedBy, Name and the logical id.
    pub fn tags(&self, component: &str, name: &str) -> Vec<Tag> {
        vec![
            (TAG_PROJECT.into(), PROJECT.into()),
            (TAG_ENVIRONMENT.into(), self.env.clone()),
            (TAG_MANAGED_BY.into(), PROJECT.into()),
            (TAG_NAME.into(), name.into()),
            (TAG_COMPONENT.into(), component.into()),
        ]
    }

    /// VPC name.
    pub fn vpc(&self) -> String {
        self.name("vpc")
    }
    /// ECS cluster name.
    pub fn cluster(&self) -> String {
        self.name("cluster")
    }
    /// ECR repository name of a service.
    pub fn repository(&self, service: &str) -> String {
        self.name(service)
    }
    /// Security group name of the load balancer.
    pub fn alb_security_group(&self) -> String {
        self.name("alb-sg")
    }
    /// Security group name of a service.
    pub fn service_security_group(&self, service: &str) -> String {
        self.name(&format!("{service}-sg"))
    }
    /// The task-execution role shared by all services.
    pub fn execution_role(&self) -> String {
        self.name("task-execution")
    }
    /// The task role of a service.
    pub fn task_role(&self, service: &str) -> String {
        self.name(&format!("{service}-task"))
    }
    /// Secrets Manager name of a logical secret (e.g. `db-credentials`).
    pub fn secret(&self, logical: &str) -> String {
        self.name(logical)
    }
    /// Load balancer name (32 characters at most).
    pub fn load_balancer(&self) -> String {
        self.name("alb")
    }
    /// Target group name of a routed service (32 characters at most).
    pub fn target_group(&self, short_name: &str) -> String {
        self.name(short_name)
    }
    /// The alternate target group of a traffic-shifting routed service (32 characters at most):
    /// the new revision registers there while ECS moves traffic.
    pub fn alternate_target_group(&self, short_name: &str) -> String {
        self.name(&format!("{short_name}-alt"))
    }
    /// The role ECS assumes to move a traffic-shifting service's traffic on the load balancer.
    pub fn infrastructure_role(&self) -> String {
        self.name("ecs-infrastructure")
    }
    /// Cloud Map private DNS namespace.
    pub fn namespace(&self) -> String {
        format!("tap-{}.local", self.env)
    }
    /// Log group of a service.
    pub fn log_group(&self, service: &str) -> String {
        format!("/ecs/tap-{service}-{}", self.env)
    }
    /// Task definition family of a service.
    pub fn task_family(&self, service: &str) -> String {
        self.name(service)
    }
    /// ECS service name of a service.
    pub fn ecs_service(&self, service: &str) -> String {
        self.name(service)
    }
    /// The prefix of every CloudWatch alarm of the environment, `tap-{s}-`: the environment comes
    /// first so that `DescribeAlarms AlarmNamePrefix` finds its alarms (and those of environments
    /// whose suffix extends this one, told apart by their tags) without listing every tap alarm.
    pub fn alarm_prefix(&self) -> String {
        format!("tap-{}-", self.env)
    }
    /// A service's CloudWatch alarm `tap-{s}-{service}-{what}`, e.g. `tap-dev-frontend-cpu-high`.
    pub fn alarm(&self, service: &str, what: &str) -> String {
        format!("{}{service}-{what}", self.alarm_prefix())
    }
    /// The trade-data bucket the processing service may use.
    pub fn trade_data_bucket(&self) -> String {
        self.name("trade-data")
    }

    /// Every name tap gives a resource in an AWS namespace where names must be unique (security
    /// groups of the VPC, IAM roles, secrets, …), with what it belongs to: two equal names in one
    /// namespace would make tap treat two resources as one.
    pub fn resource_names(&self) -> Vec<NamedResource> {
        let tap = |namespace, name, what| NamedResource { namespace, name, owner: Owner::Tap(what) };
        let mut out = vec![
            tap("security group", self.alb_security_group(), "load balancer"),
            tap("IAM role", self.execution_role(), "task-execution role"),
            tap("load balancer", self.load_balancer(), "load balancer"),
        ];
        for (i, s) in self.services.iter().enumerate() {
            let svc = |namespace, name| NamedResource { namespace, name, owner: Owner::Service(i) };
            out.push(svc("security group", self.service_security_group(s)));
            out.push(svc("IAM role", self.task_role(s)));
            out.push(svc("ECR repository", self.repository(s)));
            out.push(svc("ECS service", self.ecs_service(s)));
            out.push(svc("task definition family", self.task_family(s)));
            out.push(svc("log group", self.log_group(s)));
            out.push(svc("Cloud Map service", s.clone()));
        }
        for short in &self.route_short_names {
            out.push(tap("target group", self.target_group(short), "route"));
        }
        for short in &self.shifting_short_names {
            out.push(tap("target group", self.alternate_target_group(short), "alternate target group"));
        }
        if !self.shifting_short_names.is_empty() {
            out.push(tap("IAM role", self.infrastructure_role(), "ECS infrastructure role"));
        }
        for (i, s) in self.secrets.iter().enumerate() {
            out.push(NamedResource { namespace: "secret", name: self.secret(s), owner: Owner::Secret(i) });
        }
        out
    }

    /// Every generated name that has an AWS length limit: (what, name, limit).
    pub fn limited_names(&self) -> Vec<(&'static str, String, usize)> {
        let mut out = vec![
            ("load balancer", self.load_balancer(), 32),
            ("IAM role", self.execution_role(), 64),
            ("S3 bucket", self.trade_data_bucket(), 63),
            ("ECS cluster", self.cluster(), 255),
            ("Cloud Map namespace", self.namespace(), 253),
        ];
        for short in &self.route_short_names {
            out.push(("target group", self.target_group(short), 32));
        }
        for short in &self.shifting_short_names {
            out.push(("target group", self.alternate_target_group(short), 32));
        }
        if !self.shifting_short_names.is_empty() {
            out.push(("IAM role", self.infrastructure_role(), 64));
        }
        for s in &self.services {
            out.push(("IAM role", self.task_role(s), 64));
            out.push(("ECR repository", self.repository(s), 256));
            out.push(("ECS service", self.ecs_service(s), 255));
            out.push(("log group", self.log_group(s), 512));
            out.push(("security group", self.service_security_group(s), 255));
            // The longest of the service's alarm names.
            out.push(("CloudWatch alarm", self.alarm(s, "unhealthy-targets"), 255));
            // Cloud Map service names are DNS labels.
            out.push(("Cloud Map service", s.clone(), 63));
        }
        for s in &self.secrets {
            out.push(("secret", self.secret(s), 512));
        }
        out
    }
}

/// What a generated name belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// One of tap's own resources, e.g. the load balancer.
    Tap(&'static str),
    /// The service at this index of `services`.
    Service(usize),
    /// The secret at this index of `secrets`.
    Secret(usize),
}

/// A name in an AWS namespace where names are unique.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedResource {
    /// The namespace, e.g. `security group`.
    pub namespace: &'static str,
    /// The name.
    pub name: String,
    /// What it belongs to.
    pub owner: Owner,
}

/// The idempotency token of one logical create: `tap-` and 32 hex digits, 36 characters, which
/// every token field tap fills takes (EC2 `ClientToken` ≤ 64, ECS `clientToken` ≤ 36, Secrets
/// Manager `ClientRequestToken` 32–64, Cloud Map `CreatorRequestId` ≤ 64). The same `parts` give
/// the same token in every run and every release (two FNV-1a hashes of the parts joined with `/`,
/// not std's hasher, whose output may change between Rust releases), so a create resent after a
/// lost answer or a crash cannot make a second resource.
pub fn client_token(parts: &[&str]) -> String {
    let seed = parts.join("/");
    let fnv1a = |offset: u64| seed.bytes().fold(offset, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3));
    format!("tap-{:016x}{:016x}", fnv1a(0xcbf2_9ce4_8422_2325), fnv1a(0x6c62_272e_07bb_0142))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_spec() {
        let c = Config { environment: "pr-7".into(), ..Config::default() };
        let n = Names::new(&c);
        assert_eq!(n.repository("api-gateway"), "tap-api-gateway-pr-7");
        assert_eq!(n.load_balancer(), "tap-alb-pr-7");
        assert_eq!(n.target_group("fe"), "tap-fe-pr-7");
        assert_eq!(n.namespace(), "tap-pr-7.local");
        assert_eq!(n.log_group("frontend"), "/ecs/tap-frontend-pr-7");
        assert_eq!(n.secret("db-credentials"), "tap-db-credentials-pr-7");
        assert_eq!(n.trade_data_bucket(), "tap-trade-data-pr-7");
        assert_eq!(n.alarm("frontend", "cpu-high"), "tap-pr-7-frontend-cpu-high");
        assert!(n.alarm("frontend", "cpu-high").starts_with(&n.alarm_prefix()));
    }

    #[test]
    fn tags_carry_env_and_component() {
        let n = Names::new(&Config::default());
        let tags = n.tags("network/vpc", "tap-vpc-dev");
        for (k, v) in [
            ("Project", "tap"),
            ("Environment", "dev"),
            ("ManagedBy", "tap"),
            ("Name", "tap-vpc-dev"),
            ("tap:component", "network/vpc"),
        ] {
            assert!(tags.contains(&(k.to_string(), v.to_string())), "missing {k}={v}");
        }
    }

    #[test]
    fn client_tokens_are_stable_distinct_and_fit_every_token_field() {
        let token = client_token(&["tap", "dev", "secret", "db-credentials", "initial-version"]);
        // The value an earlier release sent for this secret's first version: a redeploy after an
        // upgrade resends the same token.
        assert_eq!(token, "tap-30b79c3c07b2791ff8f5df6939121522");
        assert_eq!(token.len(), 36);
        assert!(token.starts_with("tap-") && token[4..].chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(token, client_token(&["tap", "dev", "secret", "db-credentials", "initial-version"]));
        assert_ne!(token, client_token(&["tap", "dev", "secret", "api-keys", "initial-version"]));
        assert_ne!(client_token(&["a", "b"]), client_token(&["ab"]), "parts stay apart");
    }
}
