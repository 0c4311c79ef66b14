//! IAM roles: the task-execution role shared by all services and one task role per service, each
//! with the ECS tasks trust policy, exactly the managed policies it should have and its inline
//! policies (see [`crate::policy`] for the documents). Documents are compared semantically, so a
//! role is only written to when its policy really differs.
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
use std::time::Duration;

use async_trait::async_trait;
use futures::future::try_join_all;
use tap_core::config::ServiceSpec;
use tap_core::idempotent::{create_or_adopt, NoBlindRetry, Recovery};
use tap_core::naming::{Tag, PROJECT, TAG_MANAGED_BY};
use tap_core::outputs::{is_known, PENDING};
use tap_core::progress::ProgressEvent;
use tap_core::wait::{retry_while, Backoff};
use tap_core::{Action, AttrChange, AwsError, Change, Context, Mode, StepError};

use crate::policy::{self, ArnParts, PolicyDocument};

/// A role as `GetRole` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedRole {
    /// Role ARN.
    pub arn: String,
    /// The trust policy as IAM returns it (URL-encoded JSON).
    pub trust_policy: String,
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

fn none_if_not_found<T>(result: Result<T, AwsError>) -> Result<Option<T>, AwsError> {
    match result {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e),
    }
}

#[async_trait]
impl IamApi for SdkIam {
    async fn get_role(&self, name: &str) -> Result<Option<ObservedRole>, AwsError> {
        let out = none_if_not_found(self.0.get_role().role_name(name).send().await.map_err(AwsError::from))?;
        Ok(out.and_then(|o| {
            o.role().map(|r| ObservedRole {
                arn: r.arn().to_string(),
                trust_policy: r.assume_role_policy_document().unwrap_or_default().to_string(),
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
    let mut names = vec![ctx.names.execution_role()];
    names.extend(ctx.config.services.iter().map(|s| ctx.names.task_role(&s.name)));
    api.role_details(&names).await.map_err(StepError::aws(ROLES_COMPONENT, "GetAccountAuthorizationDetails"))
}

/// A role after its first phase: it exists (or, in plan mode, would be created), with its trust
/// policy and managed attachments converged.
#[derive(Debug, Clone)]
pub struct RoleState {
    /// Logical id.
    pub component: String,
    /// Role name.
    pub name: String,
    /// Role ARN ([`PENDING`] in plan mode when it would be created).
    pub arn: String,
    /// It did not exist: it was (or would be) created in this run.
    pub created: bool,
    /// What differed on an existing role.
    pub attributes: Vec<AttrChange>,
    /// The inline policies the role had when read (name → document as IAM returns it); empty
    /// when it is created.
    pub observed_inline: BTreeMap<String, String>,
}

impl RoleState {
    /// The change this role contributes, if any.
    pub fn change(self) -> Option<Change> {
        if self.created {
            Some(Change::create(self.component, self.name))
        } else if self.attributes.is_empty() {
            None
        } else {
            Some(Change::update(self.component, self.name, self.attributes))
        }
    }

    fn arn_parts(&self, ctx: &Context) -> Result<ArnParts, StepError> {
        ArnParts::from_role_arn(&self.arn, &ctx.region).ok_or_else(|| StepError::Conflict {
            resource: self.component.clone(),
            message: format!(
                "IAM returned the role ARN {:?}, which is not arn:<partition>:iam::<account>:role/<name>",
                self.arn
            ),
        })
    }
}

/// Phase one of a role: create it when `observed` (its detail from [`read_roles`]) is `None`,
/// else converge its trust policy and its managed attachments (`managed` gives the desired policy
/// ARNs from the role's ARN parts).
pub async fn ensure_role(
    api: &dyn IamApi,
    ctx: &Context,
    mode: Mode,
    component: String,
    name: String,
    observed: Option<&RoleDetail>,
    managed: impl Fn(&ArnParts) -> Vec<String>,
) -> Result<RoleState, StepError> {
    let id = component.as_str();
    let trust = policy::ecs_tasks_trust_policy();
    let Some(observed) = observed else {
        let mut state = RoleState {
            component: component.clone(),
            name: name.clone(),
            arn: PENDING.into(),
            created: true,
            attributes: vec![],
            observed_inline: BTreeMap::new(),
        };
        if mode.is_apply() {
            let tags = ctx.names.tags(id, &name);
            // A lost answer or `EntityAlreadyExists` (the role of this environment's name was made
            // by a run whose answer was lost): adopt the role by its name.
            let trust_json = trust.to_json();
            state.arn = create_or_adopt(
                id,
                Recovery::default(),
                |e| e.is("EntityAlreadyExists"),
                || async { Ok(api.get_role(&name).await?.map(|r| r.arn)) },
                || api.create_role(&name, &trust_json, &tags),
            )
            .await
            .map_err(StepError::aws(id, "CreateRole"))?;
            let desired = managed(&state.arn_parts(ctx)?);
            let n = name.as_str();
            try_join_all(desired.iter().map(|arn| {
                while_new_role_propagates(id, move || async move {
                    api.attach_role_policy(n, arn).await.map_err(StepError::aws(id, "AttachRolePolicy"))
                })
            }))
            .await?;
        }
        return Ok(state);
    };
    ctx.progress(ProgressEvent::Found { step: "security", resource: id });
    let mut state = RoleState {
        component: component.clone(),
        name: name.clone(),
        arn: observed.arn.clone(),
        created: false,
        attributes: vec![],
        observed_inline: observed.inline.clone(),
    };
    let desired_managed: BTreeSet<String> = managed(&state.arn_parts(ctx)?).into_iter().collect();
    let trust_ok = policy::same_policy(&observed.trust_policy, &trust);
    let attached: BTreeSet<String> = observed.attached.iter().cloned().collect();
    if !trust_ok {
        let old = policy::decode_document(&observed.trust_policy)
            .map(|v| v.to_string())
            .unwrap_or(observed.trust_policy.clone());
        state.attributes.push(AttrChange::new("assume_role_policy", Some(old), Some(trust.to_json())));
    }
    let to_attach: Vec<&String> = desired_managed.difference(&attached).collect();
    let to_detach: Vec<&String> = attached.difference(&desired_managed).collect();
    for arn in &to_attach {
        state.attributes.push(AttrChange::new("managed_policy", None, Some(arn.to_string())));
    }
    for arn in &to_detach {
        state.attributes.push(AttrChange::new("managed_policy", Some(arn.to_string()), None));
    }
    if mode.is_apply() {
        let name = name.as_str();
        let trust_json = trust.to_json();
        let update_trust = async {
            if !trust_ok {
                api.update_assume_role_policy(name, &trust_json)
                    .await
                    .map_err(StepError::aws(id, "UpdateAssumeRolePolicy"))?;
            }
            Ok::<_, StepError>(())
        };
        let attach = try_join_all(to_attach.iter().map(|arn| async move {
            api.attach_role_policy(name, arn).await.map_err(StepError::aws(id, "AttachRolePolicy"))
        }));
        let detach = try_join_all(to_detach.iter().map(|arn| async move {
            api.detach_role_policy(name, arn).await.map_err(StepError::aws(id, "DetachRolePolicy"))
        }));
        tokio::try_join!(update_trust, attach, detach)?;
    }
    Ok(state)
}

/// IAM is eventually consistent: a role created a moment ago may still be unknown to the call
/// that attaches a policy to it. Retries `op` while it says `NoSuchEntity` (or is throttled).
async fn while_new_role_propagates<F, Fut>(id: &str, op: F) -> Result<(), StepError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), StepError>>,
{
    let transient = |e: &StepError| e.aws_error().is_some_and(|a| a.is_not_found() || a.retryable);
    retry_while(
        &format!("new IAM role {id} to propagate"),
        Backoff::with_timeout(Duration::from_secs(60)),
        transient,
        op,
    )
    .await
}

/// Phase two of a role: exactly the `desired` inline policies (name → document), each compared
/// semantically with the one the role had when read ([`RoleState::observed_inline`]); a missing or
/// different one is put, one of another name deleted.
pub async fn converge_inline(
    api: &dyn IamApi,
    mode: Mode,
    role: &mut RoleState,
    desired: BTreeMap<String, PolicyDocument>,
) -> Result<(), StepError> {
    let (component, role_name) = (role.component.clone(), role.name.clone());
    let (id, name) = (component.as_str(), role_name.as_str());
    if role.created {
        if mode.is_apply() {
            try_join_all(desired.iter().map(|(policy_name, doc)| {
                let json = doc.to_json();
                while_new_role_propagates(id, move || {
                    let json = json.clone();
                    async move {
                        api.put_role_policy(name, policy_name, &json).await.map_err(StepError::aws(id, "PutRolePolicy"))
                    }
                })
            }))
            .await?;
        }
        return Ok(());
    }
    // Which desired policies are missing or differ, and which present ones are not tap's.
    let observed = std::mem::take(&mut role.observed_inline);
    let to_put: Vec<_> = desired
        .iter()
        .filter_map(|(policy_name, doc)| {
            let current = observed.get(policy_name);
            if current.is_some_and(|raw| policy::same_policy(raw, doc)) {
                return None;
            }
            let old = current.map(|raw| policy::decode_document(raw).map(|v| v.to_string()).unwrap_or(raw.clone()));
            Some((policy_name, doc, old))
        })
        .collect();
    let to_delete: Vec<String> = observed.into_keys().filter(|p| !desired.contains_key(p)).collect();
    for (policy_name, doc, old) in &to_put {
        role.attributes.push(AttrChange::new(format!("inline_policy.{policy_name}"), old.clone(), Some(doc.to_json())));
    }
    for policy_name in &to_delete {
        role.attributes.push(AttrChange::new(format!("inline_policy.{policy_name}"), Some("(present)".into()), None));
    }
    if mode.is_apply() {
        let put = try_join_all(to_put.iter().map(|(policy_name, doc, _)| async move {
            api.put_role_policy(name, policy_name, &doc.to_json()).await.map_err(StepError::aws(id, "PutRolePolicy"))
        }));
        let delete = try_join_all(to_delete.iter().map(|policy_name| async move {
            api.delete_role_policy(name, policy_name).await.map_err(StepError::aws(id, "DeleteRolePolicy"))
        }));
        tokio::try_join!(put, delete)?;
    }
    Ok(())
}

/// Phase one of the execution role (it needs the secret ARNs only for phase two); `roles` is
/// what [`read_roles`] read.
pub async fn ensure_execution_role(
    api: &dyn IamApi,
    ctx: &Context,
    mode: Mode,
    roles: &BTreeMap<String, RoleDetail>,
) -> Result<RoleState, StepError> {
    let name = ctx.names.execution_role();
    let observed = roles.get(&name);
    ensure_role(api, ctx, mode, EXECUTION_COMPONENT.into(), name, observed, |arn| {
        vec![policy::execution_managed_policy_arn(&arn.partition)]
    })
    .await
}

/// Phase two of the execution role: its inline policy reads exactly `secret_arns`.
pub async fn finish_execution_role(
    api: &dyn IamApi,
    mode: Mode,
    mut role: RoleState,
    secret_arns: &[String],
) -> Result<RoleState, StepError> {
    let desired = policy::execution_secrets_policy(secret_arns)
        .map(|doc| BTreeMap::from([(policy::EXECUTION_SECRETS_POLICY.to_string(), doc)]))
        .unwrap_or_default();
    if mode.is_apply() && secret_arns.iter().any(|a| !is_known(a)) {
        return Err(StepError::Conflict {
            resource: role.component.clone(),
            message: "a secret ARN is unknown after apply; the execution role policy cannot name it".into(),
        });
    }
    converge_inline(api, mode, &mut role, desired).await?;
    Ok(role)
}

/// Both phases of a service's task role; `observed` is its detail from [`read_roles`].
pub async fn converge_task_role(
    api: &dyn IamApi,
    ctx: &Context,
    mode: Mode,
    service: &ServiceSpec,
    observed: Option<&RoleDetail>,
) -> Result<RoleState, StepError> {
    let name = ctx.names.task_role(&service.name);
    let mut role = ensure_role(api, ctx, mode, task_component(&service.name), name, observed, |_| vec![]).await?;
    if role.created && !mode.is_apply() {
        return Ok(role);
    }
    let doc = policy::task_policy(&ctx.names, service, &role.arn_parts(ctx)?);
    converge_inline(api, mode, &mut role, BTreeMap::from([(policy::TASK_POLICY.to_string(), doc)])).await?;
    Ok(role)
}

/// Every task role, concurrently; `roles` is what [`read_roles`] read.
pub async fn converge_task_roles(
    api: &dyn IamApi,
    ctx: &Context,
    mode: Mode,
    roles: &BTreeMap<String, RoleDetail>,
) -> Result<Vec<(String, RoleState)>, StepError> {
    try_join_all(ctx.config.services.iter().map(|s| async move {
        let observed = roles.get(&ctx.names.task_role(&s.name));
        Ok::<_, StepError>((s.name.clone(), converge_task_role(api, ctx, mode, s, observed).await?))
    }))
    .await
}

/// The logical id of a role when its tags say this environment owns it and it is one of tap's
/// roles (`security/role/…`).
pub fn owned_role(detail: &RoleDetail, env: &str) -> Option<String> {
    tap_core::resource::owned(&detail.tags, env, String::new).filter(|id| id.starts_with("security/role/"))
}

/// The roles of the environment (by their tags) that the config no longer declares: (logical id,
/// role name, detail); `roles` is what [`read_roles`] read.
pub fn undeclared_roles(ctx: &Context, roles: &BTreeMap<String, RoleDetail>) -> Vec<(String, String, RoleDetail)> {
    let mut declared_names: BTreeSet<String> = BTreeSet::from([ctx.names.execution_role()]);
    declared_names.extend(ctx.config.services.iter().map(|s| ctx.names.task_role(&s.name)));
    let mut declared: BTreeSet<String> = BTreeSet::from([EXECUTION_COMPONENT.to_string()]);
    declared.extend(ctx.config.services.iter().map(|s| task_component(&s.name)));
    roles
        .iter()
        .filter(|(name, _)| !declared_names.contains(*name))
        .filter_map(|(name, detail)| {
            let id = owned_role(detail, ctx.names.env())?;
            (!declared.contains(&id)).then(|| (id, name.clone(), detail.clone()))
        })
        .collect()
}

/// Lists (plan) or deletes (apply) the `undeclared` roles (see [`undeclared_roles`]); the caller
/// has waited for the services that used them to go.
pub async fn prune(
    api: &dyn IamApi,
    ctx: &Context,
    mode: Mode,
    undeclared: &[(String, String, RoleDetail)],
) -> Result<Vec<Change>, StepError> {
    if !mode.is_apply() {
        return Ok(undeclared.iter().map(|(id, name, _)| Change::delete(id, name)).collect());
    }
    let changes = try_join_all(
        undeclared.iter().map(|(id, name, detail)| delete_role(api, ctx, id.clone(), name.clone(), detail)),
    )
    .await?;
    Ok(changes.into_iter().flatten().collect())
}

/// Deletes one role: its managed policies detached and its inline policies deleted (as `detail`
/// shows them), then the role. A role already gone is not reported.
async fn delete_role(
    api: &dyn IamApi,
    ctx: &Context,
    component: String,
    name: String,
    detail: &RoleDetail,
) -> Result<Option<Change>, StepError> {
    let id = component.as_str();
    let n = name.as_str();
    ctx.progress(ProgressEvent::Working { step: "security", resource: id, action: Action::Delete });
    let detach = try_join_all(detail.attached.iter().map(|arn| async move {
        match api.detach_role_policy(n, arn).await {
            Err(e) if !e.is_not_found() => Err(StepError::aws(id, "DetachRolePolicy")(e)),
            _ => Ok(()),
        }
    }));
    let delete_inline = try_join_all(detail.inline.keys().map(|p| async move {
        match api.delete_role_policy(n, p).await {
            Err(e) if !e.is_not_found() => Err(StepError::aws(id, "DeleteRolePolicy")(e)),
            _ => Ok(()),
        }
    }));
    tokio::try_join!(detach, delete_inline)?;
    match api.delete_role(n).await {
        Ok(()) => Ok(Some(Change::delete(component, name))),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(StepError::aws(id, "DeleteRole")(e)),
    }
}

/// Deletes every role of the environment: the execution role and the task roles the config names,
/// and every other role its tags say it owns (a service removed from the config since), all read
/// with one `GetAccountAuthorizationDetails`.
pub async fn destroy(api: &dyn IamApi, ctx: &Context) -> Result<Vec<Change>, StepError> {
    let roles = read_roles(api, ctx).await?;
    let mut named: BTreeMap<String, String> =
        BTreeMap::from([(ctx.names.execution_role(), EXECUTION_COMPONENT.into())]);
    named.extend(ctx.config.services.iter().map(|s| (ctx.names.task_role(&s.name), task_component(&s.name))));
    let env = ctx.names.env();
    let doomed: Vec<(String, String, &RoleDetail)> = roles
        .iter()
        .filter_map(|(name, detail)| {
            let id = named.get(name).cloned().or_else(|| owned_role(detail, env))?;
            Some((id, name.clone(), detail))
        })
        .collect();
    let changes =
        try_join_all(doomed.into_iter().map(|(id, name, detail)| delete_role(api, ctx, id, name, detail))).await?;
    Ok(changes.into_iter().flatten().collect())
}
