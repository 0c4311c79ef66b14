//! Secrets Manager secrets `tap-{name}-{s}`: a JSON object of fixed fields and fields whose values
//! Secrets Manager generates. Created once and never regenerated or rewritten: later deploys only
//! look at their metadata (they never read the value), and a secret scheduled for deletion is
//! restored.
//!
//! The environment's secrets are found with one `ListSecrets` filtered by their `Environment` tag
//! (secrets scheduled for deletion included): the configured ones by name, and those the config no
//! longer declares by their tags (kept, as data, unless `deploy.prune_data`).
//! `ListSecrets` may lag a few minutes behind changes, so a configured secret it does not show is
//! looked up with `DescribeSecret` before it is created. (The other way round, a secret deleted in
//! the last few minutes may still be listed; a deploy after that window creates it again.)
//!
//! Secret values live only in [`SecretValue`], whose `Debug` and `Display` print `(redacted)`, so
//! they cannot reach a log line, a plan or an error message.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use async_trait::async_trait;
use futures::future::try_join_all;
use tap_core::config::SecretSpec;
use tap_core::error::IfFound;
use tap_core::naming::{Tag, TAG_ENVIRONMENT};
use tap_core::outputs::PENDING;
use tap_core::resource::{owned, ActionError, Deleted, Diff, During, Engine, Owned, Owner, Resource};
use tap_core::{Action, AttrChange, AwsError, Change, Context, Mode, StepError};

/// Length of every generated value.
pub const GENERATED_LENGTH: i64 = 32;

/// Characters generated values never contain: quotes, whitespace and the characters that have a
/// meaning in connection strings and URLs (`user:pass@host/db?x=y`, `key=value;…`).
pub const EXCLUDED_CHARACTERS: &str = "\"'`\\/@:;?#[]{}()<>%&+=,|^~$! ";

/// A secret value (a generated password or a whole secret document). Its `Debug` and `Display`
/// print `(redacted)`; only [`SecretValue::expose`] gives the value, to send it to AWS.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretValue(String);

impl SecretValue {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Self {
        SecretValue(value.into())
    }

    /// The value itself: only for the request that stores it in AWS.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("(redacted)")
    }
}

impl fmt::Display for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("(redacted)")
    }
}

/// A secret as `DescribeSecret` or `ListSecrets` shows it (metadata only, never the value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedSecret {
    /// The full ARN (with Secrets Manager's random suffix).
    pub arn: String,
    /// `DeletedDate` is set: the secret is scheduled for deletion and can be restored.
    pub scheduled_for_deletion: bool,
    /// Its tags (whose it is: secret names are shared, `tap-api-keys-x-dev` is both `dev`'s
    /// secret `api-keys-x` and `x-dev`'s `api-keys`).
    pub tags: Vec<Tag>,
}

/// A secret as `ListSecrets` shows it, with its name and tags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaggedSecret {
    /// Secret name.
    pub name: String,
    /// Its metadata.
    pub secret: ObservedSecret,
    /// Its tags.
    pub tags: Vec<Tag>,
}

/// A `CreateSecret` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSecret {
    /// Secret name.
    pub name: String,
    /// Description.
    pub description: String,
    /// The JSON document (redacted in `Debug`).
    pub value: SecretValue,
    /// Idempotency token, derived from the environment and the logical name.
    pub client_request_token: String,
    /// Tags.
    pub tags: Vec<Tag>,
}

/// The Secrets Manager calls this crate makes.
#[cfg_attr(any(test, feature = "test-util"), mockall::automock)]
#[async_trait]
pub trait SecretsApi: Send + Sync {
    /// `DescribeSecret`; `None` when there is no such secret.
    async fn describe_secret(&self, name: &str) -> Result<Option<ObservedSecret>, AwsError>;
    /// `ListSecrets` filtered by tag key `Environment` and tag value `env` (scheduled deletions
    /// included, all pages): every secret that may be the environment's, with its tags (the step
    /// checks them).
    async fn list_owned_secrets(&self, env: &str) -> Result<Vec<TaggedSecret>, AwsError>;
    /// `GetRandomPassword` of `length` characters without `exclude_characters`.
    async fn get_random_password(&self, length: i64, exclude_characters: &str) -> Result<SecretValue, AwsError>;
    /// `CreateSecret`; returns the ARN.
    async fn create_secret(&self, secret: &NewSecret) -> Result<String, AwsError>;
    /// `RestoreSecret` (cancels a scheduled deletion).
    async fn restore_secret(&self, name: &str) -> Result<(), AwsError>;
    /// `DeleteSecret` with `ForceDeleteWithoutRecovery`.
    async fn delete_secret(&self, name: &str) -> Result<(), AwsError>;
}

/// [`SecretsApi`] over the AWS SDK.
#[derive(Debug, Clone)]
pub struct SdkSecrets(pub aws_sdk_secretsmanager::Client);

#[async_trait]
impl SecretsApi for SdkSecrets {
    async fn describe_secret(&self, name: &str) -> Result<Option<ObservedSecret>, AwsError> {
        let found = self.0.describe_secret().secret_id(name).send().await.map_err(AwsError::from).if_found()?;
        Ok(found.map(|out| ObservedSecret {
            arn: out.arn().unwrap_or_default().to_string(),
            scheduled_for_deletion: out.deleted_date().is_some(),
            tags: out
                .tags()
                .iter()
                .map(|t| (t.key().unwrap_or_default().to_string(), t.value().unwrap_or_default().to_string()))
                .collect(),
        }))
    }

    async fn list_owned_secrets(&self, env: &str) -> Result<Vec<TaggedSecret>, AwsError> {
        use aws_sdk_secretsmanager::types::{Filter, FilterNameStringType};
        let filters = [
            Filter::builder().key(FilterNameStringType::TagKey).values(TAG_ENVIRONMENT).build(),
            Filter::builder().key(FilterNameStringType::TagValue).values(env).build(),
        ];
        let pages = self
            .0
            .list_secrets()
            .set_filters(Some(filters.to_vec()))
            .include_planned_deletion(true)
            .into_paginator()
            .send()
            .try_collect()
            .await?;
        Ok(pages
            .iter()
            .flat_map(|page| page.secret_list())
            .map(|entry| {
                let tags: Vec<Tag> = entry
                    .tags()
                    .iter()
                    .map(|t| (t.key().unwrap_or_default().to_string(), t.value().unwrap_or_default().to_string()))
                    .collect();
                TaggedSecret {
                    name: entry.name().unwrap_or_default().to_string(),
                    secret: ObservedSecret {
                        arn: entry.arn().unwrap_or_default().to_string(),
                        scheduled_for_deletion: entry.deleted_date().is_some(),
                        tags: tags.clone(),
                    },
                    tags,
                }
            })
            .collect())
    }

    async fn get_random_password(&self, length: i64, exclude_characters: &str) -> Result<SecretValue, AwsError> {
        let out = self
            .0
            .get_random_password()
            .password_length(length)
            .exclude_characters(exclude_characters)
            .include_space(false)
            .require_each_included_type(true)
            .send()
            .await?;
        out.random_password()
            .map(SecretValue::new)
            .ok_or_else(|| AwsError::new("MissingRandomPassword", "GetRandomPassword returned no password"))
    }

    async fn create_secret(&self, secret: &NewSecret) -> Result<String, AwsError> {
        let tags = secret
            .tags
            .iter()
            .map(|(k, v)| aws_sdk_secretsmanager::types::Tag::builder().key(k).value(v).build())
            .collect::<Vec<_>>();
        let out = self
            .0
            .create_secret()
            .name(&secret.name)
            .description(&secret.description)
            .secret_string(secret.value.expose())
            .client_request_token(&secret.client_request_token)
            .set_tags(Some(tags))
            .send()
            .await?;
        Ok(out.arn().unwrap_or_default().to_string())
    }

    async fn restore_secret(&self, name: &str) -> Result<(), AwsError> {
        self.0.restore_secret().secret_id(name).send().await?;
        Ok(())
    }

    async fn delete_secret(&self, name: &str) -> Result<(), AwsError> {
        self.0.delete_secret().secret_id(name).force_delete_without_recovery(true).send().await?;
        Ok(())
    }
}

/// Logical id of a secret.
pub fn component(logical: &str) -> String {
    format!("security/secret/{logical}")
}

/// The `CreateSecret` idempotency token of a secret: the same for every run of the same
/// environment (and the value earlier releases sent), so a retried create does not make a second
/// version.
pub fn client_request_token(env: &str, logical: &str) -> String {
    tap_core::naming::client_token(&["tap", env, "secret", logical, "initial-version"])
}

/// A secret as the engine knows it: its name and metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedSecret {
    /// Secret name.
    pub name: String,
    /// Its metadata.
    pub secret: ObservedSecret,
}

/// The one update a secret gets: a secret scheduled for deletion is restored (its value is never
/// rewritten).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Restore;

/// The secret resource kind (see [`tap_core::resource`]): created once with generated values and
/// a deterministic `ClientRequestToken`, restored when scheduled for deletion, deleted without a
/// recovery window, and data-bearing (a prune keeps it unless `deploy.prune_data`).
pub struct SecretKind<'a> {
    api: &'a dyn SecretsApi,
    ctx: &'a Context,
}

impl<'a> SecretKind<'a> {
    /// The kind over `api`.
    pub fn new(api: &'a dyn SecretsApi, ctx: &'a Context) -> Self {
        SecretKind { api, ctx }
    }
}

#[async_trait]
impl Resource for SecretKind<'_> {
    type Desired = SecretSpec;
    type Observed = NamedSecret;
    type Update = Restore;
    const CREATE: &'static str = "CreateSecret";

    fn diff(&self, _want: &SecretSpec, have: &NamedSecret) -> Result<Option<Diff<Restore>>, String> {
        Ok(have.secret.scheduled_for_deletion.then(|| {
            Diff::new(
                Restore,
                vec![AttrChange::new("scheduled_for_deletion", Some("true".into()), Some("false".into()))],
            )
        }))
    }

    async fn find(&self, want: &SecretSpec) -> Result<Option<NamedSecret>, AwsError> {
        let name = self.ctx.names.secret(&want.name);
        Ok(self.api.describe_secret(&name).await?.map(|secret| NamedSecret { name, secret }))
    }

    async fn create(&self, want: &SecretSpec) -> Result<NamedSecret, AwsError> {
        let name = self.ctx.names.secret(&want.name);
        let generated = try_join_all(want.generated_fields.iter().map(|field| async move {
            let value = self.api.get_random_password(GENERATED_LENGTH, EXCLUDED_CHARACTERS).await?;
            Ok::<_, AwsError>((field.as_str(), value))
        }))
        .await?;
        let secret = NewSecret {
            name: name.clone(),
            description: format!("tap {} of environment {}", want.name, self.ctx.names.env()),
            value: document(want, &generated),
            client_request_token: client_request_token(self.ctx.names.env(), &want.name),
            tags: self.ctx.names.tags(&component(&want.name), &name),
        };
        let arn = self.api.create_secret(&secret).await?;
        Ok(NamedSecret { name, secret: ObservedSecret { arn, scheduled_for_deletion: false, tags: secret.tags } })
    }

    /// From its tags (reported by `ListSecrets` and `DescribeSecret` alike). The listing's tag
    /// filter matches value *prefixes* (`dev` lists `dev-x`'s secrets too), and a secret found by
    /// name may be another environment's.
    async fn owner(&self, have: &NamedSecret, env: &str) -> Result<Owner, ActionError> {
        Ok(Owner::of(&have.secret.tags, env))
    }

    /// Created meanwhile (a concurrent or interrupted run): that one is kept, never overwritten.
    fn already_exists(&self, error: &AwsError) -> bool {
        error.is("ResourceExistsException")
    }

    async fn update(&self, have: &NamedSecret, _update: &Restore) -> Result<NamedSecret, ActionError> {
        tracing::info!(secret = %have.name, "restoring secret scheduled for deletion");
        self.api.restore_secret(&have.name).await.during("RestoreSecret")?;
        Ok(have.clone())
    }

    /// Without a recovery window, as destroy always did. Some endpoints refuse to act on a secret
    /// that is scheduled for deletion: it is restored first, then deleted for good.
    async fn delete(&self, have: &NamedSecret) -> Result<Deleted, ActionError> {
        match self.api.delete_secret(&have.name).await {
            Err(e) if have.secret.scheduled_for_deletion && e.is("InvalidRequestException") => {
                self.api.restore_secret(&have.name).await.during("RestoreSecret")?;
                self.api.delete_secret(&have.name).await.during("DeleteSecret")?;
            }
            other => other.during("DeleteSecret")?,
        }
        Ok(Deleted::Now)
    }

    async fn holds_data(&self, _have: &NamedSecret) -> Result<bool, ActionError> {
        Ok(true)
    }
}

/// The secrets' ARNs by logical name, and the changes.
#[derive(Debug, Default)]
pub struct SecretsResult {
    /// Logical name → ARN ([`PENDING`] in plan mode for a secret to create).
    pub arns: BTreeMap<String, String>,
    /// Created or restored secrets.
    pub changes: Vec<Change>,
    /// Secrets of the environment (by their tags) the config no longer declares.
    pub undeclared: Vec<Owned<NamedSecret>>,
}

/// The secrets of the environment by their tags (`security/secret/…`), not scheduled for
/// deletion, whose name is not one of `declared`.
fn undeclared(ctx: &Context, tagged: Vec<TaggedSecret>, declared: &[String]) -> Vec<Owned<NamedSecret>> {
    tagged
        .into_iter()
        .filter(|t| !declared.contains(&t.name) && !t.secret.scheduled_for_deletion)
        .filter_map(|t| {
            let id = owned(&t.tags, ctx.names.env(), String::new).filter(|id| id.starts_with("security/secret/"))?;
            Some(Owned { id, name: t.name.clone(), observed: NamedSecret { name: t.name, secret: t.secret } })
        })
        .collect()
}

/// Makes every configured secret exist (never touching the value of one that does), and finds
/// the environment's secrets the config no longer declares.
pub async fn converge(api: &dyn SecretsApi, ctx: &Context, mode: Mode) -> Result<SecretsResult, StepError> {
    let names: Vec<String> = ctx.config.secrets.iter().map(|s| ctx.names.secret(&s.name)).collect();
    // One listing of the environment's secrets (by tag) finds the configured ones and those the
    // config no longer declares.
    let tagged =
        api.list_owned_secrets(ctx.names.env()).await.map_err(StepError::aws("security/secret/*", "ListSecrets"))?;
    let listed: BTreeMap<String, ObservedSecret> =
        tagged.iter().filter(|t| names.contains(&t.name)).map(|t| (t.name.clone(), t.secret.clone())).collect();
    let kind = SecretKind::new(api, ctx);
    let engine = Engine::new(ctx, "security", mode);
    let arns = try_join_all(ctx.config.secrets.iter().zip(&names).map(|(spec, name)| {
        let (kind, engine) = (&kind, &engine);
        let listed = listed.get(name).cloned();
        async move {
            let id = component(&spec.name);
            let have = match listed {
                Some(secret) => Some(NamedSecret { name: name.clone(), secret }),
                // Not listed: missing, or created too recently for ListSecrets to show it.
                None => kind.find(spec).await.map_err(StepError::aws(&id, "DescribeSecret"))?,
            };
            let now = engine.converge(kind, &id, name, spec, have).await?;
            Ok::<_, StepError>((spec.name.clone(), now.map_or_else(|| PENDING.to_string(), |s| s.secret.arn)))
        }
    }))
    .await?;
    // What a create writes, for plan (the keys, never the values).
    let changes = engine
        .into_changes()
        .into_iter()
        .map(|mut c| {
            if c.action == Action::Create {
                if let Some(spec) = ctx.config.secrets.iter().find(|s| component(&s.name) == c.resource) {
                    let keys: Vec<&str> =
                        spec.fixed_fields.keys().chain(spec.generated_fields.iter()).map(String::as_str).collect();
                    c.attributes = vec![AttrChange::new("keys", None, Some(keys.join(", ")))];
                }
            }
            c
        })
        .collect();
    Ok(SecretsResult { arns: arns.into_iter().collect(), changes, undeclared: undeclared(ctx, tagged, &names) })
}

/// Whether pruning `undeclared` deletes anything (a secret holds data: only with
/// `deploy.prune_data`).
pub fn prune_deletes(ctx: &Context, undeclared: &[Owned<NamedSecret>]) -> bool {
    ctx.config.deploy.prune_data && !undeclared.is_empty()
}

/// Lists as kept, or with `deploy.prune_data` deletes (plan: lists), the secrets the config no
/// longer declares; the caller has waited for the services that used them to go.
pub async fn prune(
    api: &dyn SecretsApi,
    ctx: &Context,
    mode: Mode,
    undeclared: Vec<Owned<NamedSecret>>,
) -> Result<Vec<Change>, StepError> {
    let engine = Engine::new(ctx, "security", mode);
    engine.prune(&SecretKind::new(api, ctx), undeclared, &BTreeSet::new()).await?;
    Ok(engine.into_changes())
}

/// The secret's JSON document: the fixed fields and the generated ones.
fn document(spec: &SecretSpec, generated: &[(&str, SecretValue)]) -> SecretValue {
    let mut fields: BTreeMap<&str, &str> = spec.fixed_fields.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    for (field, value) in generated {
        fields.insert(*field, value.expose());
    }
    // A map of strings always serializes.
    SecretValue::new(serde_json::to_string(&fields).unwrap_or_default())
}

/// Deletes every secret of the environment without a recovery window: the configured ones and
/// every other one its tags say it owns. Secrets Manager accepts a forced delete of a secret that
/// does not exist, so configured ones are looked up first (only what existed is reported); one
/// already scheduled for deletion is deleted at once.
pub async fn destroy(api: &dyn SecretsApi, ctx: &Context) -> Result<Vec<Change>, StepError> {
    let kind = SecretKind::new(api, ctx);
    let engine = Engine::new(ctx, "security", Mode::Apply);
    let names: Vec<String> = ctx.config.secrets.iter().map(|s| ctx.names.secret(&s.name)).collect();
    let tagged =
        api.list_owned_secrets(ctx.names.env()).await.map_err(StepError::aws("security/secret/*", "ListSecrets"))?;
    let configured = try_join_all(ctx.config.secrets.iter().map(|spec| async {
        let id = component(&spec.name);
        let found = kind.find(spec).await.map_err(StepError::aws(&id, "DescribeSecret"))?;
        Ok::<_, StepError>(found.map(|observed| Owned { id, name: observed.name.clone(), observed }))
    }))
    .await?;
    let env = ctx.names.env();
    let others = tagged.into_iter().filter(|t| !names.contains(&t.name)).filter_map(|t| {
        let id = owned(&t.tags, env, String::new).filter(|id| id.starts_with("security/secret/"))?;
        Some(Owned { id, name: t.name.clone(), observed: NamedSecret { name: t.name, secret: t.secret } })
    });
    let doomed: Vec<Owned<NamedSecret>> = configured.into_iter().flatten().chain(others).collect();
    try_join_all(doomed.iter().map(|o| engine.delete(&kind, &o.id, &o.name, &o.observed))).await?;
    Ok(engine.into_changes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_value_never_prints() {
        let v = SecretValue::new("hunter2-very-secret");
        assert_eq!(format!("{v}"), "(redacted)");
        assert_eq!(format!("{v:?}"), "(redacted)");
        let req = NewSecret {
            name: "tap-db-credentials-dev".into(),
            description: "d".into(),
            value: v.clone(),
            client_request_token: "t".into(),
            tags: vec![],
        };
        let shown = format!("{req:?} {req:#?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("(redacted)"));
        assert_eq!(v.expose(), "hunter2-very-secret");
    }

    #[test]
    fn document_holds_fixed_and_generated_fields() {
        let spec = SecretSpec {
            name: "db-credentials".into(),
            fixed_fields: BTreeMap::from([("username".into(), "tap_admin".into())]),
            generated_fields: vec!["password".into()],
        };
        let doc = document(&spec, &[("password", SecretValue::new("pw"))]);
        let parsed: serde_json::Value = serde_json::from_str(doc.expose()).unwrap();
        assert_eq!(parsed, serde_json::json!({"username": "tap_admin", "password": "pw"}));
        assert_eq!(format!("{doc:?}"), "(redacted)");
    }

    #[test]
    fn request_token_is_deterministic_and_valid() {
        let a = client_request_token("dev", "db-credentials");
        assert_eq!(a, client_request_token("dev", "db-credentials"));
        assert_ne!(a, client_request_token("dev", "api-keys"));
        assert_ne!(a, client_request_token("prod", "db-credentials"));
        assert!((32..=64).contains(&a.len()), "{a}");
    }
}
