//! IAM roles: the task-execution role shared by all services and one task role per service, each
//! with the ECS tasks trust policy, exactly the managed policies it should have and its inline
//! policies (see [`crate::policy`] for the documents). Documents are compared semantically, so a
//! role is only written to when its policy really differs. Each role runs through the resource
//! engine as the kind [`crate::role::Role`] (create-or-adopt, one typed update whose attributes
//! plan prints, prune, delete); this module reads the roles and wires them into the step.
//!
//! Deploy and plan read every role of the environment at once, with one paginated
//! `GetAccountAuthorizationDetails(Filter=Role)` ([`read_roles`]): it gives each role's ARN, trust
//! policy, attached managed policies and inline policies with their documents. A missing role is
//! created; an edited or deleted inline policy of tap's is repaired, and an inline policy someone
//! added under another name is deleted (the SPEC gives each role exactly its policies). The same read
//! carries each role's tags: a role the environment owns (`ManagedBy=tap`, `Environment`) that the
//! config no longer declares is deleted by deploy ([`prune`], once the services step is done), and
//! destroy deletes every role of the environment by its tags, whatever the config now says.

use std::collections::{BTreeMap, BTreeSet};

use async_trait::async_trait;
use futures::future::try_join_all;
use tap_core::config::ServiceSpec;
use tap_core::error::IfFound;
use tap_core::idempotent::NoBlindRetry;
use tap_core::naming::{Tag, PROJECT, TAG_MANAGED_BY};
use tap_core::outputs::{is_known, PENDING};
use tap_core::resource::{Engine, Owned};
use tap_core::{AwsError, Change, Context, Mode, StepError};

use crate::inline_policy::{InlinePolicy, PolicyObserved, PolicyWant};
use crate::policy::{self, ArnParts};
use crate::role::{PoliciesFn, Role, RoleObserved, RolePolicies, RoleSpec};
use crate::STEP;

/// A role as `GetRole` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedRole {
    /// Role ARN.
    pub arn: String,
    /// The trust policy as IAM returns it (URL-encoded JSON).
    pub trust_policy: String,
    /// Its tags (GetRole reports them): whose it is.
    pub tags: Vec<Tag>,
}

/// A role as `GetAccountAuthorizationDetails` shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoleDetail {
    /// Role ARN.
    pub arn: String,
    /// The trust policy as IAM returns it (URL-encoded JSON).
    pub trust_policy: String,
    /// The ARNs of the attached managed policies.
    pub attached: Vec<String>,
    /// The inline policies: name → document as IAM returns it (URL-encoded JSON).
    pub inline: BTreeMap<String, String>,
    /// Its tags (ownership: `ManagedBy=tap`, `Environment`, `tap:component`).
    pub tags: Vec<Tag>,
}

/// The IAM calls this crate makes.
#[cfg_attr(any(test, feature = "test-util"), mockall::automock)]
#[async_trait]
pub trait IamApi: Send + Sync {
    /// `GetRole`; `None` when there is no such role (used to adopt a role after a lost
    /// `CreateRole` answer).
    async fn get_role(&self, name: &str) -> Result<Option<ObservedRole>, AwsError>;
    /// One paginated `GetAccountAuthorizationDetails(Filter=Role)`, keeping the roles of `names`
    /// and every role tagged `ManagedBy=tap` (whatever its environment: the step keeps its own by
    /// the `Environment` tag); role name → its detail, a role that does not exist is absent.
    async fn role_details(&self, names: &[String]) -> Result<BTreeMap<String, RoleDetail>, AwsError>;
    /// `CreateRole` with its trust policy and tags; returns the ARN.
    async fn create_role(&self, name: &str, trust_policy: &str, tags: &[Tag]) -> Result<String, AwsError>;
    /// `UpdateAssumeRolePolicy`.
    async fn update_assume_role_policy(&self, name: &str, trust_policy: &str) -> Result<(), AwsError>;
    /// `ListAttachedRolePolicies`: the ARNs of the attached managed policies (destroy).
    async fn list_attached_role_policies(&self, name: &str) -> Result<Vec<String>, AwsError>;
    /// `AttachRolePolicy`.
    async fn attach_role_policy(&self, name: &str, policy_arn: &str) -> Result<(), AwsError>;
    /// `DetachRolePolicy`.
    async fn detach_role_policy(&self, name: &str, policy_arn: &str) -> Result<(), AwsError>;
    /// `ListRolePolicies`: the names of the inline policies (destroy deletes all of them).
    async fn list_role_policies(&self, name: &str) -> Result<Vec<String>, AwsError>;
    /// `PutRolePolicy`.
    async fn put_role_policy(&self, name: &str, policy_name: &str, document: &str) -> Result<(), AwsError>;
    /// `DeleteRolePolicy`.
    async fn delete_role_policy(&self, name: &str, policy_name: &str) -> Result<(), AwsError>;
    /// `DeleteRole`.
    async fn delete_role(&self, name: &str) -> Result<(), AwsError>;
}

/// [`IamApi`] over the AWS SDK.
#[derive(Debug, Clone)]
pub struct SdkIam(pub aws_sdk_iam::Client);

#[async_trait]
impl IamApi for SdkIam {
    async fn get_role(&self, name: &str) -> Result<Option<ObservedRole>, AwsError> {
        let out = self.0.get_role().role_name(name).send().await.map_err(AwsError::from).if_found()?;
        Ok(out.and_then(|o| {
            o.role().map(|r| ObservedRole {
                arn: r.arn().to_string(),
                trust_policy: r.assume_role_policy_document().unwrap_or_default().to_string(),
                tags: r.tags().iter().map(|t| (t.key().to_string(), t.value().to_string())).collect(),
            })
        }))
    }

    async fn role_details(&self, names: &[String]) -> Result<BTreeMap<String, RoleDetail>, AwsError> {
        // MaxItems 1000 (the API's maximum) keeps it to one page on most accounts.
        let pages: Vec<_> = self
            .0
            .get_account_authorization_details()
            .filter(aws_sdk_iam::types::EntityType::Role)
            .max_items(1000)
            .into_paginator()
            .send()
            .try_collect()
            .await?;
        let wanted: BTreeSet<&str> = names.iter().map(String::as_str).collect();
        Ok(pages
            .iter()
            .flat_map(|page| page.role_detail_list())
            .filter_map(|role| {
                let tags: Vec<Tag> = role.tags().iter().map(|t| (t.key().to_owned(), t.value().to_owned())).collect();
                let managed = tags.iter().any(|(k, v)| k == TAG_MANAGED_BY && v == PROJECT);
                let name = role.role_name().filter(|n| managed || wanted.contains(n))?;
                let detail = RoleDetail {
                    tags,
                    arn: role.arn().unwrap_or_default().to_string(),
                    trust_policy: role.assume_role_policy_document().unwrap_or_default().to_string(),
                    attached: role
                        .attached_managed_policies()
                        .iter()
                        .filter_map(|p| p.policy_arn())
                        .map(str::to_owned)
                        .collect(),
                    inline: role
                        .role_policy_list()
                        .iter()
                        .filter_map(|p| {
                            Some((p.policy_name()?.to_string(), p.policy_document().unwrap_or_default().to_string()))
                        })
                        .collect(),
                };
                Some((name.to_string(), detail))
            })
            .collect())
    }

    async fn create_role(&self, name: &str, trust_policy: &str, tags: &[Tag]) -> Result<String, AwsError> {
        let tags = tags
            .iter()
            .map(|(k, v)| aws_sdk_iam::types::Tag::builder().key(k).value(v).build())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| AwsError::new("InvalidTag", e.to_string()))?;
        let out = self
            .0
            .create_role()
            .role_name(name)
            .assume_role_policy_document(trust_policy)
            .set_tags(Some(tags))
            .customize()
            .config_override(aws_sdk_iam::Config::builder().retry_classifier(NoBlindRetry))
            .send()
            .await?;
        Ok(out.role().map(|r| r.arn().to_string()).unwrap_or_default())
    }

    async fn update_assume_role_policy(&self, name: &str, trust_policy: &str) -> Result<(), AwsError> {
        self.0.update_assume_role_policy().role_name(name).policy_document(trust_policy).send().await?;
        Ok(())
    }

    async fn list_attached_role_policies(&self, name: &str) -> Result<Vec<String>, AwsError> {
        let policies =
            self.0.list_attached_role_policies().role_name(name).into_paginator().items().send().try_collect().await?;
        Ok(policies.iter().filter_map(|p| p.policy_arn()).map(str::to_owned).collect())
    }

    async fn attach_role_policy(&self, name: &str, policy_arn: &str) -> Result<(), AwsError> {
        self.0.attach_role_policy().role_name(name).policy_arn(policy_arn).send().await?;
        Ok(())
    }

    async fn detach_role_policy(&self, name: &str, policy_arn: &str) -> Result<(), AwsError> {
        self.0.detach_role_policy().role_name(name).policy_arn(policy_arn).send().await?;
        Ok(())
    }

    async fn list_role_policies(&self, name: &str) -> Result<Vec<String>, AwsError> {
        Ok(self.0.list_role_policies().role_name(name).into_paginator().items().send().try_collect().await?)
    }

    async fn put_role_policy(&self, name: &str, policy_name: &str, document: &str) -> Result<(), AwsError> {
        self.0.put_role_policy().role_name(name).policy_name(policy_name).policy_document(document).send().await?;
        Ok(())
    }

    async fn delete_role_policy(&self, name: &str, policy_name: &str) -> Result<(), AwsError> {
        self.0.delete_role_policy().role_name(name).policy_name(policy_name).send().await?;
        Ok(())
    }

    async fn delete_role(&self, name: &str) -> Result<(), AwsError> {
        self.0.delete_role().role_name(name).send().await?;
        Ok(())
    }
}

/// Logical id of the execution role.
pub const EXECUTION_COMPONENT: &str = "security/role/task-execution";

/// Logical id named by an error of the read of all roles ([`read_roles`]).
pub const ROLES_COMPONENT: &str = "security/roles";

/// Logical id of a service's task role.
pub fn task_component(service: &str) -> String {
    format!("security/role/{service}-task")
}

/// Every role of the environment (the execution role and each service's task role) that exists,
/// by name, from one paginated `GetAccountAuthorizationDetails(Filter=Role)`.
///
/// One call instead of four per role (`GetRole`, `ListAttachedRolePolicies`, `GetRolePolicy`,
/// `ListRolePolicies`): a no-op deploy with 3 services makes 1 IAM call instead of 16.
pub async fn read_roles(api: &dyn IamApi, ctx: &Context) -> Result<BTreeMap<String, RoleDetail>, StepError> {
    let mut names = vec![ctx.names.execution_role(), ctx.names.infrastructure_role()];
    names.extend(ctx.config.services.iter().map(|s| ctx.names.task_role(&s.name)));
    api.role_details(&names).await.map_err(StepError::aws(ROLES_COMPONENT, "GetAccountAuthorizationDetails"))
}

/// The role kind of this run (see [`crate::role`]).
pub fn kind<'a>(api: &'a dyn IamApi, ctx: &Context) -> Role<'a> {
    Role { api, region: ctx.region.clone() }
}

/// What the read shows of the role `name`.
fn observed(name: &str, detail: &RoleDetail) -> RoleObserved {
    RoleObserved { name: name.to_string(), detail: detail.clone(), new: false }
}

/// A role of the environment: the ECS tasks trust policy, its tags and `policies`.
fn spec(ctx: &Context, component: &str, name: &str, policies: PoliciesFn) -> RoleSpec {
    RoleSpec {
        name: name.to_string(),
        trust: policy::ecs_tasks_trust_policy(),
        tags: ctx.names.tags(component, name),
        policies,
    }
}

/// Logical id of the ECS infrastructure role for load balancers.
pub const INFRASTRUCTURE_COMPONENT: &str = "security/role/ecs-infrastructure";

/// Whether any service's strategy shifts traffic (and so needs the infrastructure role).
fn needs_infrastructure_role(ctx: &Context) -> bool {
    ctx.config.services.iter().any(|s| s.route.is_some() && ctx.config.strategy_of(s).strategy.shifts_traffic())
}

/// The ECS infrastructure role for load balancers, while a service shifts traffic: trusted by
/// `ecs.amazonaws.com`, the AWS-managed `AmazonECSInfrastructureRolePolicyForLoadBalancers` and
/// nothing else. Returns its ARN ([`PENDING`] in plan mode when it would be created), `None` when
/// no service needs it (an existing one is then pruned with the roles the config no longer
/// declares).
pub async fn converge_infrastructure_role(
    api: &dyn IamApi,
    ctx: &Context,
    engine: &Engine<'_>,
    roles: &BTreeMap<String, RoleDetail>,
) -> Result<Option<String>, StepError> {
    if !needs_infrastructure_role(ctx) {
        return Ok(None);
    }
    let name = ctx.names.infrastructure_role();
    let want = RoleSpec {
        name: name.clone(),
        trust: policy::ecs_trust_policy(),
        tags: ctx.names.tags(INFRASTRUCTURE_COMPONENT, &name),
        policies: Box::new(|arn: &ArnParts| RolePolicies {
            managed: Some(BTreeSet::from([policy::infrastructure_managed_policy_arn(&arn.partition)])),
            inline: Some(BTreeMap::new()),
            inline_apart: BTreeSet::new(),
        }),
    };
    let have = roles.get(&name).map(|d| observed(&name, d));
    let role = engine.converge(&kind(api, ctx), INFRASTRUCTURE_COMPONENT, &name, &want, have).await?;
    Ok(Some(role.map(|r| r.detail.arn).unwrap_or_else(|| PENDING.into())))
}

/// Logical id of the execution role's inline policy `read-secrets` (see [`crate::inline_policy`]).
pub const EXECUTION_SECRETS_COMPONENT: &str = "security/role/task-execution/read-secrets";

/// The execution role after its first phase (beside the secrets).
#[derive(Debug, Clone)]
pub struct ExecutionRole {
    /// What exists now (`None` in plan mode when it would be created, or when it is another's).
    pub role: Option<RoleObserved>,
    /// It is another environment's (or not tap's): plan lists the conflict, and nothing under it.
    pub conflict: bool,
}

/// Phase one of the execution role, on `engine`: trust and managed policy, created when missing;
/// `roles` is what [`read_roles`] read. Its inline policy `read-secrets` names the secret ARNs and
/// so follows once they are known ([`finish_execution_role`]): it is left alone here.
pub async fn converge_execution_role(
    api: &dyn IamApi,
    ctx: &Context,
    engine: &Engine<'_>,
    roles: &BTreeMap<String, RoleDetail>,
) -> Result<ExecutionRole, StepError> {
    let name = ctx.names.execution_role();
    let want = spec(
        ctx,
        EXECUTION_COMPONENT,
        &name,
        Box::new(|arn: &ArnParts| RolePolicies {
            managed: Some(BTreeSet::from([policy::execution_managed_policy_arn(&arn.partition)])),
            inline: Some(BTreeMap::new()),
            inline_apart: BTreeSet::from([policy::EXECUTION_SECRETS_POLICY.to_string()]),
        }),
    );
    let have = roles.get(&name).map(|d| observed(&name, d));
    let existed = have.is_some();
    let role = engine.converge(&kind(api, ctx), EXECUTION_COMPONENT, &name, &want, have).await?;
    Ok(ExecutionRole { conflict: existed && role.is_none(), role })
}

/// Phase two of the execution role, on `engine`: its inline policy `read-secrets` reading exactly
/// `secret_arns` (put, updated, or deleted when there is no secret), as the kind
/// [`InlinePolicy`]. Returns the role's ARN ([`PENDING`] in plan mode when it would be created).
pub async fn finish_execution_role(
    api: &dyn IamApi,
    ctx: &Context,
    engine: &Engine<'_>,
    role: ExecutionRole,
    secret_arns: &[String],
) -> Result<String, StepError> {
    let id = EXECUTION_SECRETS_COMPONENT;
    if engine.mode().is_apply() && secret_arns.iter().any(|a| !is_known(a)) {
        return Err(StepError::Conflict {
            resource: id.into(),
            message: "a secret ARN is unknown after apply; the execution role policy cannot name it".into(),
        });
    }
    if role.conflict {
        return Ok(PENDING.into());
    }
    let role_name = ctx.names.execution_role();
    let policy_name = policy::EXECUTION_SECRETS_POLICY;
    let name = format!("{role_name}/{policy_name}");
    let role_new = role.role.as_ref().is_some_and(|r| r.new);
    let have = role.role.as_ref().and_then(|r| {
        let document = r.detail.inline.get(policy_name)?.clone();
        Some(PolicyObserved { role: role_name.clone(), name: policy_name.into(), document, role_new })
    });
    let kind = InlinePolicy { api };
    match policy::execution_secrets_policy(secret_arns) {
        Some(document) => {
            let want = PolicyWant { role: role_name.clone(), name: policy_name.into(), document, role_new };
            engine.converge(&kind, id, &name, &want, have).await?;
        }
        None => {
            if let Some(have) = have {
                engine.delete(&kind, id, &name, &have).await?;
            }
        }
    }
    Ok(role.role.map(|r| r.detail.arn).unwrap_or_else(|| PENDING.into()))
}

/// Converges one service's task role; `observed` is its detail from [`read_roles`]. Returns its
/// ARN ([`PENDING`] in plan mode when it would be created).
pub async fn converge_task_role(
    api: &dyn IamApi,
    ctx: &Context,
    engine: &Engine<'_>,
    service: &ServiceSpec,
    detail: Option<&RoleDetail>,
) -> Result<String, StepError> {
    let name = ctx.names.task_role(&service.name);
    let (names, spec_of) = (ctx.names.clone(), service.clone());
    let want = spec(
        ctx,
        &task_component(&service.name),
        &name,
        Box::new(move |arn: &ArnParts| RolePolicies {
            managed: Some(BTreeSet::new()),
            inline: Some(BTreeMap::from([(
                policy::TASK_POLICY.to_string(),
                policy::task_policy(&names, &spec_of, arn),
            )])),
            inline_apart: BTreeSet::new(),
        }),
    );
    let have = detail.map(|d| observed(&name, d));
    let role = engine.converge(&kind(api, ctx), &task_component(&service.name), &name, &want, have).await?;
    Ok(role.map(|r| r.detail.arn).unwrap_or_else(|| PENDING.into()))
}

/// Every task role, each with its own engine, started in the config's order and `aws.max_in_flight`
/// at a time (under IAM's rate limit each role gets its policy before new roles are made, see
/// `tap_core::fanout`): (service, ARN, changes), in the config's order; `roles` is what
/// [`read_roles`] read. `made` hears of each role (service, ARN) as soon as it is done.
pub async fn converge_task_roles(
    api: &dyn IamApi,
    ctx: &Context,
    mode: Mode,
    roles: &BTreeMap<String, RoleDetail>,
    made: &(dyn Fn(&str, &str) + Sync),
) -> Result<Vec<(String, String, Vec<Change>)>, StepError> {
    let roles = ctx.config.services.iter().map(|s| async move {
        let engine = Engine::new(ctx, STEP, mode);
        let detail = roles.get(&ctx.names.task_role(&s.name));
        let arn = converge_task_role(api, ctx, &engine, s, detail).await?;
        made(&s.name, &arn);
        Ok::<_, StepError>((s.name.clone(), arn, engine.into_changes()))
    });
    tap_core::fanout::in_order(roles, ctx.config.aws.max_in_flight).await
}

/// The logical id of a role when its tags say this environment owns it and it is one of tap's
/// roles (`security/role/…`).
pub fn owned_role(detail: &RoleDetail, env: &str) -> Option<String> {
    tap_core::resource::owned(&detail.tags, env, String::new).filter(|id| id.starts_with("security/role/"))
}

/// The roles of the environment (by their tags) that the config no longer declares: (logical id,
/// role name, detail); `roles` is what [`read_roles`] read.
pub fn undeclared_roles(ctx: &Context, roles: &BTreeMap<String, RoleDetail>) -> Vec<(String, String, RoleDetail)> {
    let declared_names = declared_names(ctx);
    let declared: BTreeSet<String> = declared_names.values().cloned().collect();
    roles
        .iter()
        .filter(|(name, _)| !declared_names.contains_key(*name))
        .filter_map(|(name, detail)| {
            let id = owned_role(detail, ctx.names.env())?;
            (!declared.contains(&id)).then(|| (id, name.clone(), detail.clone()))
        })
        .collect()
}

/// The roles the config declares: name → logical id.
fn declared_names(ctx: &Context) -> BTreeMap<String, String> {
    let mut named: BTreeMap<String, String> =
        BTreeMap::from([(ctx.names.execution_role(), EXECUTION_COMPONENT.into())]);
    if needs_infrastructure_role(ctx) {
        named.insert(ctx.names.infrastructure_role(), INFRASTRUCTURE_COMPONENT.into());
    }
    named.extend(ctx.config.services.iter().map(|s| (ctx.names.task_role(&s.name), task_component(&s.name))));
    named
}

/// Lists (plan) or deletes (apply) the `undeclared` roles (see [`undeclared_roles`]) with the
/// engine's prune; the caller has waited for the services that used them to go.
pub async fn prune(
    api: &dyn IamApi,
    ctx: &Context,
    mode: Mode,
    undeclared: &[(String, String, RoleDetail)],
) -> Result<Vec<Change>, StepError> {
    let engine = Engine::new(ctx, STEP, mode);
    let owned: Vec<Owned<RoleObserved>> = undeclared
        .iter()
        .map(|(id, name, detail)| Owned { id: id.clone(), name: name.clone(), observed: observed(name, detail) })
        .collect();
    engine.prune(&kind(api, ctx), owned, &BTreeSet::new()).await?;
    Ok(engine.into_changes())
}

/// Deletes every role of the environment: the execution role and the task roles the config names,
/// and every other role its tags say it owns (a service removed from the config since), all read
/// with one `GetAccountAuthorizationDetails`; each with its managed policies detached and its
/// inline policies deleted first. A role already gone is not reported.
pub async fn destroy(api: &dyn IamApi, ctx: &Context) -> Result<Vec<Change>, StepError> {
    let roles = read_roles(api, ctx).await?;
    let named = declared_names(ctx);
    let env = ctx.names.env();
    let engine = Engine::new(ctx, STEP, Mode::Apply);
    let role_kind = kind(api, ctx);
    let (engine_ref, kind_ref) = (&engine, &role_kind);
    try_join_all(roles.iter().filter_map(|(name, detail)| {
        let id = named.get(name).cloned().or_else(|| owned_role(detail, env))?;
        Some(async move { engine_ref.delete(kind_ref, &id, name, &observed(name, detail)).await })
    }))
    .await?;
    Ok(engine.into_changes())
}
