//! `tap-security`: the security groups, IAM roles and Secrets Manager secrets of a tap environment.
//!
//! - [`groups`]: the load balancer's security group (TCP 80 and 443 from anywhere) and one group per
//!   service (its port from the load balancer's group when routed, and from the groups of the
//!   services in its `allow_from`); rules converge exactly, extra rules are revoked. The kind is
//!   [`security_group`], its EC2 calls [`ec2`], a rule [`rule`].
//! - [`iam`] and [`policy`]: the shared task-execution role (managed
//!   `AmazonECSTaskExecutionRolePolicy` + `secretsmanager:GetSecretValue` on exactly the secrets,
//!   its inline policy `read-secrets`, a kind of its own: [`inline_policy`])
//!   and one task role per service (its own log group, plus its `permissions`), all trusted by
//!   `ecs-tasks.amazonaws.com`; typed policy documents compared semantically.
//! - The ECS infrastructure role for load balancers (trust `ecs.amazonaws.com`, the AWS-managed
//!   `AmazonECSInfrastructureRolePolicyForLoadBalancers`, nothing else), only while a service's
//!   deployment strategy shifts traffic: ECS assumes it to move traffic between target groups.
//! - [`quota`]: for the quota preflight, the roles a plan creates and the account's role count.
//! - [`secrets`]: one secret per `config.secrets` entry, a JSON object of fixed and generated
//!   fields, created once and never regenerated, read or printed afterwards.
//!
//! The three run concurrently; only the execution role's inline policy waits for the secret ARNs.
//!
//! **Prune**: what the environment owns (by its tags `ManagedBy=tap`, `Environment`,
//! `tap:component`) and the config no longer declares — a removed service's group and task role —
//! is listed by plan as deleted and deleted by deploy once the services step has published its
//! outputs (its own prune done: the tasks holding the group's network interfaces are gone). A
//! secret holds data: it is listed as kept unless `deploy.prune_data` (then deleted without a
//! recovery window, as destroy does). Destroy finds everything by tags, whatever the config says.
//!
//! **Reads** from the [`Context`]: `NetworkOutputs::vpc_id` (the VPC of the security groups).
//! **Writes**: [`SecurityOutputs`] (group ids, role ARNs, secret ARNs; [`PENDING`](tap_core::outputs::PENDING) in plan mode for
//! what deploy would create).
//!
//! ```no_run
//! # async fn example(session: &tap_core::aws::AwsSession) -> Result<(), tap_core::StepError> {
//! use tap_core::outputs::{NetworkOutputs, SecurityOutputs};
//! use tap_core::{Config, Context, Step};
//!
//! let ctx = Context::new(Config::default());
//! ctx.put(NetworkOutputs { vpc_id: "vpc-0abc".into(), public_subnets: vec![], private_subnets: vec![] });
//! let step = tap_security::SecurityStep::from_session(session);
//! for change in step.plan(&ctx).await? {
//!     println!("{change}");
//! }
//! let outputs: SecurityOutputs = ctx.get("example")?;
//! println!("execution role: {}", outputs.execution_role_arn);
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]

pub mod ec2;
pub mod groups;
pub mod iam;
pub mod inline_policy;
pub mod policy;
pub mod quota;
pub mod role;
pub mod rule;
pub mod secrets;
pub mod security_group;

use std::sync::Arc;

use async_trait::async_trait;
use std::collections::BTreeMap;

use tap_core::aws::AwsSession;
use tap_core::context::Gathered;
use tap_core::outputs::SecurityOutputs;
use tap_core::step::{Contract, Gone, OutputKind, Pruned};
use tap_core::wait::Backoff;
use tap_core::{Change, Context, Mode, Step, StepError};

pub use ec2::{Ec2Api, SdkEc2};
pub use iam::{IamApi, SdkIam};
pub use secrets::{SdkSecrets, SecretValue, SecretsApi};

/// The step's name.
pub const STEP: &str = "security";

/// The security step: security groups, IAM roles and secrets.
pub struct SecurityStep {
    ec2: Arc<dyn Ec2Api>,
    iam: Arc<dyn IamApi>,
    secrets: Arc<dyn SecretsApi>,
    dependency_backoff: Backoff,
}

impl SecurityStep {
    /// A step over these APIs.
    pub fn new(ec2: Arc<dyn Ec2Api>, iam: Arc<dyn IamApi>, secrets: Arc<dyn SecretsApi>) -> Self {
        SecurityStep { ec2, iam, secrets, dependency_backoff: groups::dependency_backoff() }
    }

    /// A step over real EC2, IAM and Secrets Manager clients built from `session` (its counter
    /// and guard attached).
    pub fn from_session(session: &AwsSession) -> Self {
        Self::new(
            Arc::new(SdkEc2(tap_core::sdk_client!(aws_sdk_ec2, session))),
            Arc::new(SdkIam(tap_core::sdk_client!(aws_sdk_iam, session))),
            Arc::new(SdkSecrets(tap_core::sdk_client!(aws_sdk_secretsmanager, session))),
        )
    }

    /// How long `destroy` retries deleting a security group that still has dependencies.
    pub fn with_dependency_backoff(mut self, backoff: Backoff) -> Self {
        self.dependency_backoff = backoff;
        self
    }

    /// The one code path of plan and apply: compares AWS with the config, changes it in
    /// [`Mode::Apply`], writes [`SecurityOutputs`] and returns the changes.
    #[tracing::instrument(name = "security", skip_all, fields(mode = ?mode))]
    pub async fn converge(&self, ctx: &Context, mode: Mode) -> Result<Vec<Change>, StepError> {
        let (group_ids_tx, group_ids_rx) = tokio::sync::oneshot::channel();
        let groups = groups::converge(&*self.ec2, ctx, mode, group_ids_tx);
        // Every role of the environment from ONE IAM read, shared by the task roles and the
        // execution role (whichever asks first makes it, beside the groups and the secrets).
        let observed_roles = tokio::sync::OnceCell::new();
        let roles = || observed_roles.get_or_try_init(|| iam::read_roles(&*self.iam, ctx));
        let infrastructure_engine = tap_core::resource::Engine::new(ctx, STEP, mode);
        let infrastructure_role =
            async { iam::converge_infrastructure_role(&*self.iam, ctx, &infrastructure_engine, roles().await?).await };
        let execution_engine = tap_core::resource::Engine::new(ctx, STEP, mode);
        // The task roles start once the execution role is done: every service needs that one,
        // and IAM's writes are few a second, so it goes first, not somewhere in a hundred.
        let (execution_done, execution_gate) = tokio::sync::oneshot::channel::<()>();
        let execution = async {
            let engine = &execution_engine;
            let (secrets, role) = tokio::try_join!(secrets::converge(&*self.secrets, ctx, mode), async {
                iam::converge_execution_role(&*self.iam, ctx, engine, roles().await?).await
            })?;
            let arns: Vec<String> =
                ctx.config.secrets.iter().filter_map(|s| secrets.arns.get(&s.name).cloned()).collect();
            let arn = iam::finish_execution_role(&*self.iam, ctx, engine, role, &arns).await?;
            let _ = execution_done.send(());
            Ok::<_, StepError>((secrets, arn))
        };
        let group_ids = async {
            match group_ids_rx.await {
                Ok(ids) => Ok::<_, StepError>(ids),
                // The groups failed before their ids were known: their error ends the step.
                Err(_) => std::future::pending().await,
            }
        };
        // Other steps read only ids. The output is written in part once what every service needs
        // is there (the groups' ids, the execution role, the secrets, the infrastructure role),
        // then after each task role (a service's task definition needs only its own, see
        // `Context::wait_for`), and whole once every role is done, while the groups' rules are
        // still being written (the step still fails if those fail).
        let shared: std::sync::Mutex<Option<SecurityOutputs>> = std::sync::Mutex::default();
        let made_roles = Gathered::default();
        let made = |service: &str, arn: &str| {
            let base = shared.lock().unwrap_or_else(|e| e.into_inner());
            made_roles.add(service, arn.to_owned(), |task_role_arns| {
                if let Some(base) = base.clone() {
                    ctx.put_partial(SecurityOutputs { task_role_arns, ..base });
                }
            });
        };
        let base = async {
            let (group_ids, (secrets, execution_role), infrastructure_role_arn) =
                tokio::try_join!(group_ids, execution, infrastructure_role)?;
            let base = SecurityOutputs {
                alb_security_group_id: group_ids.alb,
                service_security_group_ids: group_ids.services,
                execution_role_arn: execution_role.clone(),
                task_role_arns: BTreeMap::new(),
                secret_arns: secrets.arns.clone(),
                infrastructure_role_arn,
            };
            let mut slot = shared.lock().unwrap_or_else(|e| e.into_inner());
            *slot = Some(base.clone());
            ctx.put_partial(SecurityOutputs { task_role_arns: made_roles.all(), ..base.clone() });
            drop(slot);
            Ok::<_, StepError>((base, secrets, execution_role))
        };
        let task_roles = async {
            if execution_gate.await.is_err() {
                // The execution role failed: its error ends the step.
                std::future::pending::<()>().await;
            }
            iam::converge_task_roles(&*self.iam, ctx, mode, roles().await?, &made).await
        };
        let publish = async {
            let ((base, secrets, execution_role), task_roles) = tokio::try_join!(base, task_roles)?;
            ctx.put(SecurityOutputs {
                task_role_arns: task_roles.iter().map(|(service, arn, _)| (service.clone(), arn.clone())).collect(),
                ..base
            });
            Ok::<_, StepError>((task_roles, secrets, execution_role))
        };
        let (groups, (task_roles, secrets, _)) = tokio::try_join!(groups, publish)?;

        let mut changes = groups.changes;
        changes.extend(execution_engine.into_changes());
        changes.extend(infrastructure_engine.into_changes());
        changes.extend(task_roles.into_iter().flat_map(|(_, _, role)| role));
        changes.extend(secrets.changes);

        // Prune: what the environment owns (by its tags) and the config no longer declares.
        let roles = match observed_roles.get() {
            Some(roles) => iam::undeclared_roles(ctx, roles),
            None => vec![],
        };
        let deletes =
            !groups.undeclared.is_empty() || !roles.is_empty() || secrets::prune_deletes(ctx, &secrets.undeclared);
        if mode.is_apply() && deletes {
            // A removed service's group is held by its tasks' network interfaces and its role by
            // its tasks: wait for the services step's own prune.
            ctx.wait_pruned(Pruned::Services).await?;
        }
        let (pruned_groups, pruned_roles, pruned_secrets) = tokio::try_join!(
            groups::prune(&*self.ec2, ctx, mode, &groups.undeclared, self.dependency_backoff),
            iam::prune(&*self.iam, ctx, mode, &roles),
            secrets::prune(&*self.secrets, ctx, mode, secrets.undeclared),
        )?;
        changes.extend(pruned_groups.into_iter().chain(pruned_roles).chain(pruned_secrets));
        Ok(changes)
    }
}

#[async_trait]
impl Step for SecurityStep {
    fn contract(&self) -> Contract {
        Contract::new(STEP, OutputKind::Security)
            .reads(&[OutputKind::Network])
            .prune_waits(&[Pruned::Services])
            .destroy_waits(&[Gone::EcsServices, Gone::LoadBalancer])
            .gives(&[Gone::SecurityGroups])
    }

    async fn plan(&self, ctx: &Context) -> Result<Vec<Change>, StepError> {
        self.converge(ctx, Mode::Plan).await
    }

    async fn apply(&self, ctx: &Context) -> Result<Vec<Change>, StepError> {
        self.converge(ctx, Mode::Apply).await
    }

    #[tracing::instrument(name = "security.destroy", skip_all)]
    async fn destroy(&self, ctx: &Context) -> Result<Vec<Change>, StepError> {
        let (groups, roles, secrets) = tokio::try_join!(
            groups::destroy(&*self.ec2, ctx, Mode::Apply, self.dependency_backoff),
            iam::destroy(&*self.iam, ctx),
            secrets::destroy(&*self.secrets, ctx),
        )?;
        Ok(groups.into_iter().chain(roles).chain(secrets).collect())
    }
}

#[cfg(test)]
mod tests;
