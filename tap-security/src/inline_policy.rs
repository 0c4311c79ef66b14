//! One inline policy of a role as a kind of the resource engine, for a policy whose document is
//! known only after the role must exist: the execution role's `read-secrets`, which names the
//! secrets' ARNs (they exist only once the secrets are made, beside the role). The role is
//! converged first (its trust and managed policy, which every task needs); this policy follows
//! through the engine like any resource, so plan lists it (`+` with its document, or `~` when the
//! secrets change) and apply makes exactly that call, `PutRolePolicy`.
//!
//! It carries no tags (IAM cannot tag an inline policy): its owner is its role's, and it is
//! converged only after the engine found that role to be this environment's. Deleting the role
//! deletes its inline policies first ([`crate::role`]); this kind deletes the policy alone when
//! its document has nothing left to name (no secrets).

use async_trait::async_trait;
use tap_core::resource::{ActionError, Deleted, Diff, During, Owner, Resource};
use tap_core::{AttrChange, AwsError};

use crate::iam::IamApi;
use crate::policy::{self, PolicyDocument};
use crate::role::{on_role, readable};

/// The policy to have.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyWant {
    /// The role's name.
    pub role: String,
    /// The policy's name.
    pub name: String,
    /// Its document.
    pub document: PolicyDocument,
    /// The role was created in this run: IAM may not know it everywhere yet.
    pub role_new: bool,
}

/// The policy as IAM has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyObserved {
    /// The role's name.
    pub role: String,
    /// The policy's name.
    pub name: String,
    /// Its document as IAM returned it (URL-encoded JSON) or as tap put it.
    pub document: String,
    /// The role was created in this run.
    pub role_new: bool,
}

/// The inline policy kind, over the crate's IAM seam.
pub struct InlinePolicy<'a> {
    /// The IAM calls.
    pub api: &'a dyn IamApi,
}

impl InlinePolicy<'_> {
    /// Puts `json` as `name` on `role` (retrying while a new role propagates).
    async fn put(&self, role: &str, name: &str, json: &str, role_new: bool) -> Result<(), ActionError> {
        on_role(role_new, role, "PutRolePolicy", || self.api.put_role_policy(role, name, json)).await
    }
}

/// The document's attribute: what plan lists and apply puts.
fn document(old: Option<String>, new: &str) -> AttrChange {
    AttrChange::new("document", old, Some(new.to_owned()))
}

#[async_trait]
impl Resource for InlinePolicy<'_> {
    type Desired = PolicyWant;
    type Observed = PolicyObserved;
    /// The document to put (JSON).
    type Update = String;
    const CREATE: &'static str = "PutRolePolicy";

    fn diff(&self, want: &PolicyWant, have: &PolicyObserved) -> Result<Option<Diff<String>>, String> {
        if policy::same_policy(&have.document, &want.document) {
            return Ok(None);
        }
        let json = want.document.to_json();
        Ok(Some(Diff::new(json.clone(), vec![document(Some(readable(&have.document)), &json)])))
    }

    /// By name among the role's inline policies: after a `PutRolePolicy` whose answer was lost,
    /// one there holds what was put (a put replaces the whole document).
    async fn find(&self, want: &PolicyWant) -> Result<Option<PolicyObserved>, AwsError> {
        let names = self.api.list_role_policies(&want.role).await?;
        Ok(names.contains(&want.name).then(|| PolicyObserved {
            role: want.role.clone(),
            name: want.name.clone(),
            document: want.document.to_json(),
            role_new: want.role_new,
        }))
    }

    /// Its role's: the caller converges it only under a role the engine found to be this
    /// environment's (IAM cannot tag an inline policy).
    async fn owner(&self, _have: &PolicyObserved, _env: &str) -> Result<Owner, ActionError> {
        Ok(Owner::This)
    }

    async fn create(&self, want: &PolicyWant) -> Result<PolicyObserved, AwsError> {
        let json = want.document.to_json();
        self.put(&want.role, &want.name, &json, want.role_new).await.map_err(|e| e.source)?;
        Ok(PolicyObserved { role: want.role.clone(), name: want.name.clone(), document: json, role_new: want.role_new })
    }

    fn create_attributes(&self, want: &PolicyWant) -> Vec<AttrChange> {
        vec![document(None, &want.document.to_json())]
    }

    async fn update(&self, have: &PolicyObserved, json: &String) -> Result<PolicyObserved, ActionError> {
        self.put(&have.role, &have.name, json, have.role_new).await?;
        Ok(PolicyObserved { document: json.clone(), ..have.clone() })
    }

    async fn delete(&self, have: &PolicyObserved) -> Result<Deleted, ActionError> {
        self.api.delete_role_policy(&have.role, &have.name).await.during("DeleteRolePolicy")?;
        Ok(Deleted::Now)
    }
}
