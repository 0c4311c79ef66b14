//! The IAM role as a [`Resource`] of the engine: its trust policy, exactly its managed policy
//! attachments and exactly its inline policies, compared semantically with what the one batched
//! `GetAccountAuthorizationDetails` read ([`crate::iam::read_roles`]) shows.
//!
//! What a role should have depends on its ARN (the partition of the managed policy, the account of
//! the task policy's log group), so [`RoleSpec::policies`] gives them from the role's
//! [`ArnParts`]; either half may be left out (`None`), which leaves it alone, and an inline policy
//! another kind converges is named apart (the execution role's `read-secrets`, see
//! [`crate::inline_policy`]).
//!
//! [`RoleUpdate`] is what [`Resource::diff`] finds: the trust policy to set, the managed policies
//! to attach and detach and the inline policies to put and delete; plan prints exactly its
//! attributes (`assume_role_policy`, `managed_policy`, `inline_policy.<name>`) and apply runs
//! exactly it. A role created in this run may still be unknown to IAM's other calls: on it, the
//! update retries while IAM answers `NoSuchEntity` (propagation).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use async_trait::async_trait;
use futures::future::try_join_all;
use tap_core::naming::Tag;
use tap_core::resource::{ActionError, Deleted, Diff, During, Owner, Resource};
use tap_core::wait::{retry_while, Backoff};
use tap_core::{AttrChange, AwsError, StepError};

use crate::iam::{IamApi, RoleDetail};
use crate::policy::{self, ArnParts, PolicyDocument};

/// What a role should have besides its trust policy, given its ARN's parts.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RolePolicies {
    /// Exactly these managed policy ARNs (`None`: left alone).
    pub managed: Option<BTreeSet<String>>,
    /// Exactly these inline policies, name → document (`None`: left alone).
    pub inline: Option<BTreeMap<String, PolicyDocument>>,
    /// Inline policies another kind converges ([`crate::inline_policy`]): left alone here, not
    /// deleted as extra.
    pub inline_apart: BTreeSet<String>,
}

/// The policies of a role from its ARN's parts.
pub type PoliciesFn = Box<dyn Fn(&ArnParts) -> RolePolicies + Send + Sync>;

/// What the config asks of one role.
pub struct RoleSpec {
    /// Role name.
    pub name: String,
    /// Its trust policy.
    pub trust: PolicyDocument,
    /// Its tags, set at creation.
    pub tags: Vec<Tag>,
    /// Its managed and inline policies, from its ARN.
    pub policies: PoliciesFn,
}

/// A role as AWS has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleObserved {
    /// Role name.
    pub name: String,
    /// What the batched read (or the create) shows.
    pub detail: RoleDetail,
    /// Created (or adopted) in this run: IAM may not know it everywhere yet.
    pub new: bool,
}

/// The update of an existing role, exactly what plan prints.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoleUpdate {
    /// The trust policy to set (JSON).
    pub trust_policy: Option<String>,
    /// Managed policy ARNs to attach.
    pub attach: Vec<String>,
    /// Managed policy ARNs to detach.
    pub detach: Vec<String>,
    /// Inline policies to put: name → JSON.
    pub put_inline: BTreeMap<String, String>,
    /// Inline policies to delete.
    pub delete_inline: Vec<String>,
}

/// The IAM role kind, over the crate's IAM seam; `region` completes the ARN parts.
pub struct Role<'a> {
    /// The IAM calls.
    pub api: &'a dyn IamApi,
    /// The region of the run.
    pub region: String,
}

impl Role<'_> {
    /// The ARN parts of `have`, or why its ARN is not a role ARN.
    pub fn arn_parts(&self, have: &RoleObserved) -> Result<ArnParts, String> {
        ArnParts::from_role_arn(&have.detail.arn, &self.region).ok_or_else(|| {
            format!(
                "IAM returned the role ARN {:?}, which is not arn:<partition>:iam::<account>:role/<name>",
                have.detail.arn
            )
        })
    }
}

/// A document as IAM returned it, decoded for people when it can be.
pub(crate) fn readable(raw: &str) -> String {
    policy::decode_document(raw).map(|v| v.to_string()).unwrap_or_else(|| raw.to_string())
}

/// IAM is eventually consistent: a role created a moment ago may still be unknown to the call
/// that attaches or puts a policy on it. Retries `op` while it says `NoSuchEntity` (or is
/// throttled), only when `new`.
pub(crate) async fn on_role<F, Fut>(new: bool, name: &str, action: &'static str, mut op: F) -> Result<(), ActionError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), AwsError>>,
{
    if !new {
        return op().await.during(action);
    }
    let transient = |e: &StepError| e.aws_error().is_some_and(|a| a.is_not_found() || a.retryable);
    retry_while(
        &format!("new IAM role {name} to propagate"),
        Backoff::with_timeout(Duration::from_secs(60)),
        transient,
        || {
            let call = op();
            async move { call.await.map_err(StepError::aws(name, action)) }
        },
    )
    .await
    .map_err(|e| match e {
        StepError::Aws { source, .. } => ActionError { action, source },
        other => ActionError { action, source: AwsError::new("Timeout", other.to_string()) },
    })
}

#[async_trait]
impl Resource for Role<'_> {
    type Desired = RoleSpec;
    type Observed = RoleObserved;
    type Update = RoleUpdate;
    const CREATE: &'static str = "CreateRole";

    fn diff(&self, want: &RoleSpec, have: &RoleObserved) -> Result<Option<Diff<RoleUpdate>>, String> {
        let parts = self.arn_parts(have)?;
        let policies = (want.policies)(&parts);
        let mut update = RoleUpdate::default();
        let mut attributes = vec![];
        if !policy::same_policy(&have.detail.trust_policy, &want.trust) {
            let json = want.trust.to_json();
            attributes.push(AttrChange::new(
                "assume_role_policy",
                Some(readable(&have.detail.trust_policy)),
                Some(json.clone()),
            ));
            update.trust_policy = Some(json);
        }
        if let Some(managed) = &policies.managed {
            let attached: BTreeSet<String> = have.detail.attached.iter().cloned().collect();
            update.attach = managed.difference(&attached).cloned().collect();
            update.detach = attached.difference(managed).cloned().collect();
            for arn in &update.attach {
                attributes.push(AttrChange::new("managed_policy", None, Some(arn.clone())));
            }
            for arn in &update.detach {
                attributes.push(AttrChange::new("managed_policy", Some(arn.clone()), None));
            }
        }
        if let Some(inline) = &policies.inline {
            for (policy_name, doc) in inline {
                let current = have.detail.inline.get(policy_name);
                if current.is_some_and(|raw| policy::same_policy(raw, doc)) {
                    continue;
                }
                let json = doc.to_json();
                attributes.push(AttrChange::new(
                    format!("inline_policy.{policy_name}"),
                    current.map(|raw| readable(raw)),
                    Some(json.clone()),
                ));
                update.put_inline.insert(policy_name.clone(), json);
            }
            update.delete_inline = have
                .detail
                .inline
                .keys()
                .filter(|p| !inline.contains_key(*p) && !policies.inline_apart.contains(*p))
                .cloned()
                .collect();
            for policy_name in &update.delete_inline {
                attributes.push(AttrChange::new(
                    format!("inline_policy.{policy_name}"),
                    Some("(present)".into()),
                    None,
                ));
            }
        }
        Ok((!attributes.is_empty()).then(|| Diff::new(update, attributes)))
    }

    /// From its tags (GetAccountAuthorizationDetails and GetRole report them): role names are
    /// account-wide, and `tap-api-x-task-dev` is both `dev`'s service `api-x` and `x-dev`'s
    /// service `api`… (and any name two environments derive alike).
    async fn owner(&self, have: &RoleObserved, env: &str) -> Result<Owner, ActionError> {
        Ok(Owner::of(&have.detail.tags, env))
    }

    async fn find(&self, want: &RoleSpec) -> Result<Option<RoleObserved>, AwsError> {
        Ok(self.api.get_role(&want.name).await?.map(|r| RoleObserved {
            name: want.name.clone(),
            detail: RoleDetail { arn: r.arn, trust_policy: r.trust_policy, tags: r.tags, ..Default::default() },
            new: true,
        }))
    }

    async fn create(&self, want: &RoleSpec) -> Result<RoleObserved, AwsError> {
        let trust = want.trust.to_json();
        let arn = self.api.create_role(&want.name, &trust, &want.tags).await?;
        Ok(RoleObserved {
            name: want.name.clone(),
            detail: RoleDetail { arn, trust_policy: trust, tags: want.tags.clone(), ..Default::default() },
            new: true,
        })
    }

    fn already_exists(&self, error: &AwsError) -> bool {
        error.is("EntityAlreadyExists")
    }

    async fn update(&self, have: &RoleObserved, update: &RoleUpdate) -> Result<RoleObserved, ActionError> {
        let (api, name, new) = (self.api, have.name.as_str(), have.new);
        let trust = async {
            match &update.trust_policy {
                Some(json) => api.update_assume_role_policy(name, json).await.during("UpdateAssumeRolePolicy"),
                None => Ok(()),
            }
        };
        let attach = try_join_all(
            update
                .attach
                .iter()
                .map(|arn| on_role(new, name, "AttachRolePolicy", move || api.attach_role_policy(name, arn))),
        );
        let detach = try_join_all(
            update
                .detach
                .iter()
                .map(|arn| async move { api.detach_role_policy(name, arn).await.during("DetachRolePolicy") }),
        );
        let put = try_join_all(update.put_inline.iter().map(|(policy_name, json)| {
            on_role(new, name, "PutRolePolicy", move || api.put_role_policy(name, policy_name, json))
        }));
        let delete = try_join_all(update.delete_inline.iter().map(|policy_name| async move {
            api.delete_role_policy(name, policy_name).await.during("DeleteRolePolicy")
        }));
        tokio::try_join!(trust, attach, detach, put, delete)?;
        Ok(have.clone())
    }

    async fn delete(&self, have: &RoleObserved) -> Result<Deleted, ActionError> {
        let (api, name) = (self.api, have.name.as_str());
        let gone_is_fine = |r: Result<(), AwsError>, action| match r {
            Err(e) if !e.is_not_found() => Err(ActionError { action, source: e }),
            _ => Ok(()),
        };
        let detach = try_join_all(
            have.detail
                .attached
                .iter()
                .map(|arn| async move { gone_is_fine(api.detach_role_policy(name, arn).await, "DetachRolePolicy") }),
        );
        let inline = try_join_all(
            have.detail
                .inline
                .keys()
                .map(|p| async move { gone_is_fine(api.delete_role_policy(name, p).await, "DeleteRolePolicy") }),
        );
        tokio::try_join!(detach, inline)?;
        api.delete_role(name).await.during("DeleteRole")?;
        Ok(Deleted::Now)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tap_core::resource::Engine;
    use tap_core::{Config, Context, Mode};

    use super::*;
    use crate::iam::MockIamApi;

    const ARN: &str = "arn:aws:iam::123456789012:role/tap-frontend-task-dev";
    const ADMIN: &str = "arn:aws:iam::aws:policy/AdministratorAccess";
    const WANTED: &str = "arn:aws:iam::aws:policy/ReadOnlyAccess";

    fn doc(action: &str) -> PolicyDocument {
        let mut doc = policy::ecs_tasks_trust_policy();
        doc.statement[0].principal = None;
        doc.statement[0].action = vec![action.to_string()];
        doc.statement[0].resource = Some(vec!["*".into()]);
        doc
    }

    fn want() -> RoleSpec {
        RoleSpec {
            name: "tap-frontend-task-dev".into(),
            trust: policy::ecs_tasks_trust_policy(),
            tags: vec![],
            policies: Box::new(|arn: &ArnParts| {
                assert_eq!(arn.account, "123456789012");
                RolePolicies {
                    managed: Some(BTreeSet::from([WANTED.to_string()])),
                    inline: Some(BTreeMap::from([
                        ("task-permissions".to_string(), doc("s3:GetObject")),
                        ("kept".to_string(), doc("sqs:SendMessage")),
                    ])),
                    inline_apart: BTreeSet::new(),
                }
            }),
        }
    }

    /// Trust, both managed directions, a changed, a kept and an extra inline policy.
    fn drifted() -> RoleObserved {
        let trust = policy::ecs_tasks_trust_policy().to_json().replace("ecs-tasks", "ec2");
        RoleObserved {
            name: "tap-frontend-task-dev".into(),
            detail: RoleDetail {
                arn: ARN.into(),
                trust_policy: trust,
                attached: vec![ADMIN.into()],
                inline: BTreeMap::from([
                    ("task-permissions".to_string(), doc("s3:*").to_json()),
                    ("kept".to_string(), doc("sqs:SendMessage").to_json()),
                    ("debug".to_string(), doc("iam:*").to_json()),
                ]),
                tags: tap_core::naming::Names::new(&tap_core::Config::default()).tags("security/role/x", "x"),
            },
            new: false,
        }
    }

    /// Every mutating call, as `(attribute it changes, removed)`.
    fn recording(calls: &Arc<Mutex<Vec<(String, bool)>>>) -> MockIamApi {
        let mut api = MockIamApi::new();
        let c = calls.clone();
        api.expect_update_assume_role_policy().returning(move |_, _| {
            c.lock().unwrap().push(("assume_role_policy".into(), false));
            Ok(())
        });
        let c = calls.clone();
        api.expect_attach_role_policy().returning(move |_, arn| {
            c.lock().unwrap().push((format!("managed_policy:{arn}"), false));
            Ok(())
        });
        let c = calls.clone();
        api.expect_detach_role_policy().returning(move |_, arn| {
            c.lock().unwrap().push((format!("managed_policy:{arn}"), true));
            Ok(())
        });
        let c = calls.clone();
        api.expect_put_role_policy().returning(move |_, p, _| {
            c.lock().unwrap().push((format!("inline_policy.{p}"), false));
            Ok(())
        });
        let c = calls.clone();
        api.expect_delete_role_policy().returning(move |_, p| {
            c.lock().unwrap().push((format!("inline_policy.{p}"), true));
            Ok(())
        });
        api.expect_create_role().never();
        api.expect_delete_role().never();
        api
    }

    #[tokio::test]
    async fn plan_lists_exactly_what_apply_changes_for_a_drifted_role() {
        let ctx = Context::new(Config::default());
        let calls = Arc::new(Mutex::new(vec![]));
        let api = recording(&calls);
        let role = Role { api: &api, region: "eu-west-1".into() };

        let plan = Engine::new(&ctx, "security", Mode::Plan);
        plan.converge(&role, "security/role/frontend-task", "tap-frontend-task-dev", &want(), Some(drifted()))
            .await
            .unwrap();
        assert!(calls.lock().unwrap().is_empty(), "plan makes no mutating call");
        let planned = plan.into_changes();
        assert_eq!(planned.len(), 1);
        let mut listed: Vec<(String, bool)> = planned[0]
            .attributes
            .iter()
            .map(|a| {
                let key = match a.attribute.as_str() {
                    "managed_policy" => format!("managed_policy:{}", a.old.clone().or(a.new.clone()).unwrap()),
                    other => other.to_string(),
                };
                (key, a.new.is_none())
            })
            .collect();
        assert_eq!(
            planned[0].attributes.iter().map(|a| a.attribute.as_str()).collect::<Vec<_>>(),
            vec![
                "assume_role_policy",
                "managed_policy",
                "managed_policy",
                "inline_policy.task-permissions",
                "inline_policy.debug"
            ]
        );
        let debug = planned[0].attributes.iter().find(|a| a.attribute == "inline_policy.debug").unwrap();
        assert_eq!((debug.old.as_deref(), debug.new.as_deref()), (Some("(present)"), None));

        let apply = Engine::new(&ctx, "security", Mode::Apply);
        apply
            .converge(&role, "security/role/frontend-task", "tap-frontend-task-dev", &want(), Some(drifted()))
            .await
            .unwrap();
        let applied = apply.into_changes();
        assert_eq!(applied, planned, "apply reports what plan listed");
        let mut made = calls.lock().unwrap().clone();
        made.sort();
        listed.sort();
        assert_eq!(made, listed, "apply makes exactly the calls of the attributes plan listed");
    }

    #[tokio::test]
    async fn a_role_in_sync_has_no_update() {
        let api = MockIamApi::new();
        let role = Role { api: &api, region: "eu-west-1".into() };
        let mut have = drifted();
        have.detail.trust_policy = policy::ecs_tasks_trust_policy().to_json();
        have.detail.attached = vec![WANTED.into()];
        have.detail.inline.remove("debug");
        have.detail.inline.insert("task-permissions".into(), doc("s3:GetObject").to_json());
        assert_eq!(role.diff(&want(), &have).unwrap(), None);
    }
}
