//! The resource engine: one life cycle for every AWS resource tap manages.
//!
//! Each resource kind (a target group, a security group, an ECS service…) says only what is
//! specific to it, by implementing [`Resource`]: how to compare what AWS has with what the config
//! wants ([`Resource::diff`], which returns a **typed** update together with the attributes it
//! changes), and how to find, create, update and delete one. The [`Engine`] runs that life cycle
//! the same way for plan, apply and destroy:
//!
//! - **converge** ([`Engine::converge`]): missing → create (in plan mode: listed, and its id is
//!   `None` so the caller publishes [`PENDING`](crate::outputs::PENDING)); present → compare, and
//!   when the diff has an update, apply runs exactly that update, and plan prints exactly its
//!   attributes; in sync → left alone and reported as found.
//! - **outcome unknown**: a create whose answer was lost, timed out or was a 5xx, or that AWS answers
//!   "already exists", is never resent blindly: the engine looks the resource up with
//!   [`Resource::find`] and adopts it ([`create_or_adopt`]).
//! - **ownership** ([`Resource::owner`], [`Owner`]): names are `tap-{base}-{env}`, so two
//!   environments can share one (service `api-x` of `dev` and service `api` of `x-dev` both make
//!   `tap-api-x-dev`). A resource found by name is converged, adopted or deleted only when it
//!   carries this environment's tags (`Project=tap`, `ManagedBy=tap`, `Environment={env}`); one
//!   that carries another environment's tags, or none of tap's, is a **conflict**
//!   ([`Action::Conflict`]): plan lists it naming its owner, apply fails on it before touching it
//!   (deploy refuses in its read-only look, before any write), a create AWS answers "already
//!   exists" for it is not adopted, and a delete (prune, destroy) skips it, saying so.
//! - **prune** ([`Engine::prune`]): what the environment owns (found by its tags, see [`owned`])
//!   and the config no longer declares is deleted, except a data-bearing resource
//!   ([`Resource::holds_data`]) without consent (`deploy --prune-data`), which is listed as kept.
//! - **complete** ([`Engine::complete`]): the second half of a create that cannot be whole at
//!   creation (a security group's rules name groups created beside it): its update runs through
//!   the engine, and what it does beyond what the create listed is recorded as an update.
//! - **delete** ([`Engine::delete`], [`Engine::delete_all`]): one already gone is no error and no
//!   change. What a resource holds of the others deleted with it ([`Resource::release`]: a
//!   security group's rules naming other groups) is taken back from every one before any is
//!   deleted, and listed on its delete, in plan and apply alike.
//! - every step: progress events ([`ProgressEvent`]) per resource, the error context (resource +
//!   AWS action) and the change list the step returns.
//!
//! ```
//! use async_trait::async_trait;
//! use tap_core::resource::{ActionError, Deleted, Diff, Engine, Owner, Resource};
//! use tap_core::{AttrChange, AwsError, Config, Context, Mode};
//!
//! /// A toy kind: a named number.
//! struct Counter;
//!
//! #[async_trait]
//! impl Resource for Counter {
//!     type Desired = u32;
//!     type Observed = u32;
//!     type Update = u32; // the value to set
//!     const CREATE: &'static str = "CreateCounter";
//!
//!     fn diff(&self, want: &u32, have: &u32) -> Result<Option<Diff<u32>>, String> {
//!         Ok((want != have).then(|| Diff::new(*want, vec![AttrChange::new("value", Some(have.to_string()), Some(want.to_string()))])))
//!     }
//!     async fn find(&self, _want: &u32) -> Result<Option<u32>, AwsError> { Ok(None) }
//!     async fn owner(&self, _have: &u32, _env: &str) -> Result<Owner, ActionError> { Ok(Owner::This) }
//!     async fn create(&self, want: &u32) -> Result<u32, AwsError> { Ok(*want) }
//!     async fn update(&self, _have: &u32, update: &u32) -> Result<u32, ActionError> { Ok(*update) }
//!     async fn delete(&self, _have: &u32) -> Result<Deleted, ActionError> { Ok(Deleted::Now) }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let ctx = Context::new(Config::default());
//! let engine = Engine::new(&ctx, "toy", Mode::Plan);
//! let id = engine.converge(&Counter, "toy/counter/a", "a", &2, Some(1)).await.unwrap();
//! assert_eq!(id, Some(1), "plan reports what exists");
//! let changes = engine.into_changes();
//! assert_eq!(changes[0].attributes[0].new.as_deref(), Some("2"));
//! # }
//! ```

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Mutex;

use async_trait::async_trait;
use futures::future::try_join_all;

use crate::context::Context;
use crate::error::{AwsError, StepError};
use crate::idempotent::{create_or_adopt, Recovery};
use crate::naming::{Tag, PROJECT, TAG_COMPONENT, TAG_ENVIRONMENT, TAG_MANAGED_BY, TAG_PROJECT};
use crate::progress::ProgressEvent;
use crate::step::{Action, AttrChange, Change, Mode};
use crate::wait::{retry_while, Backoff};

/// What apply will do to an existing resource: the typed update it executes and the attributes
/// it changes, which are what plan prints.
#[derive(Debug, Clone, PartialEq)]
pub struct Diff<U> {
    /// The update apply runs.
    pub update: U,
    /// The attributes it changes (observed → desired).
    pub attributes: Vec<AttrChange>,
}

impl<U> Diff<U> {
    /// An update and the attributes it changes.
    pub fn new(update: U, attributes: Vec<AttrChange>) -> Self {
        Diff { update, attributes }
    }
}

/// How a delete ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deleted {
    /// It was deleted by this call (or its deletion started, where AWS deletes asynchronously).
    Now,
    /// It was already gone (or going): someone else deleted it; no change.
    AlreadyGone,
}

impl Deleted {
    /// From a delete call read with [`crate::error::IfFound`]: `None` (AWS said it does not
    /// exist) is [`Deleted::AlreadyGone`].
    pub fn unless_gone<T>(found: Option<T>) -> Deleted {
        if found.is_some() {
            Deleted::Now
        } else {
            Deleted::AlreadyGone
        }
    }
}

/// An AWS call that failed, with the action that failed (one update may take several calls).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionError {
    /// The AWS operation, e.g. `ModifyTargetGroup`.
    pub action: &'static str,
    /// What AWS said.
    pub source: AwsError,
}

impl ActionError {
    /// The [`StepError`] of this failure on resource `id`.
    pub fn on(self, id: &str) -> StepError {
        StepError::Aws { resource: id.into(), action: self.action, source: self.source }
    }
}

/// Names the action of a failed call: `api.modify(..).await.during("ModifyTargetGroup")?`.
pub trait During<T> {
    /// The result, its error tagged with `action`.
    fn during(self, action: &'static str) -> Result<T, ActionError>;
}

impl<T> During<T> for Result<T, AwsError> {
    fn during(self, action: &'static str) -> Result<T, ActionError> {
        self.map_err(|source| ActionError { action, source })
    }
}

/// One kind of AWS resource, as the engine needs to know it. Implementations hold the narrow AWS
/// seam of their crate; every method makes the calls of one life-cycle action and nothing else.
#[async_trait]
pub trait Resource: Send + Sync {
    /// What the config asks for (everything a create needs).
    type Desired: Send + Sync;
    /// What AWS has (everything diff, update and delete need, ids included).
    type Observed: Clone + Send + Sync;
    /// One typed update: what plan prints is derived from the same value apply executes.
    type Update: Send + Sync;
    /// The AWS action that creates one (named in errors).
    const CREATE: &'static str;

    /// Compares AWS with the config: `Ok(None)` in sync, `Ok(Some(diff))` to update, `Err(why)`
    /// when the difference cannot be converged in place (reported as a conflict).
    fn diff(&self, want: &Self::Desired, have: &Self::Observed) -> Result<Option<Diff<Self::Update>>, String>;

    /// Looks up the one resource `want` describes (by name or tags): used to adopt after a create
    /// whose outcome is unknown or that AWS answered "already exists". The engine adopts it only
    /// when [`Resource::owner`] says it is this environment's.
    async fn find(&self, want: &Self::Desired) -> Result<Option<Self::Observed>, AwsError>;

    /// Whose `have` (found by name) is, for environment `env`: from the tags AWS reports for it
    /// (read here when the observed value does not carry them), or, for a kind AWS cannot tag or
    /// whose tags tap cannot read, [`Owner::This`] because the caller found it only under a
    /// resource this environment owns (say which in the implementation). The engine converges,
    /// adopts and deletes only what is [`Owner::This`]; anything else is a conflict.
    async fn owner(&self, have: &Self::Observed, env: &str) -> Result<Owner, ActionError>;

    /// Creates it, tagged at creation. Must not be resent by the SDK when its outcome is unknown
    /// (see [`crate::idempotent::NoBlindRetry`]): the engine looks it up instead.
    async fn create(&self, want: &Self::Desired) -> Result<Self::Observed, AwsError>;

    /// Whether AWS's error says the resource already exists (then it is looked up and adopted).
    fn already_exists(&self, error: &AwsError) -> bool {
        let _ = error;
        false
    }

    /// The attributes a create sets, for plan and apply alike: what a create does beyond making
    /// the resource (a VPC's DNS hostnames, set by a call after `CreateVpc`; a role's inline
    /// policy), so that plan's `+` lists all that apply will do. Empty by default.
    fn create_attributes(&self, want: &Self::Desired) -> Vec<AttrChange> {
        let _ = want;
        vec![]
    }

    /// Runs `update` on `have` and returns what exists afterwards: `have` with the update applied,
    /// or a new identity where AWS makes one (a task definition's next revision).
    async fn update(&self, have: &Self::Observed, update: &Self::Update) -> Result<Self::Observed, ActionError>;

    /// Deletes `have`. A resource already gone is no error: say [`Deleted::AlreadyGone`], or fail
    /// with AWS's not-found error ([`AwsError::is_not_found`]), which the engine takes the same way.
    async fn delete(&self, have: &Self::Observed) -> Result<Deleted, ActionError>;

    /// What deleting `have` first takes back from the others deleted with it: a security group's
    /// rules naming other groups, which would hold those. Listed on the delete's change, in plan
    /// and apply alike; nothing by default.
    fn release_attributes(&self, have: &Self::Observed) -> Vec<AttrChange> {
        let _ = have;
        vec![]
    }

    /// Takes back exactly what [`Resource::release_attributes`] lists. The engine runs it for
    /// every resource of a set before it deletes any; not-found is taken as already released.
    async fn release(&self, have: &Self::Observed) -> Result<(), ActionError> {
        let _ = have;
        Ok(())
    }

    /// Whether AWS refused a delete because something still holds the resource for a while
    /// (`DependencyViolation` while network interfaces are released, `ResourceInUse`): the engine
    /// sends the delete again, backing off, until [`Engine::with_hold_backoff`]'s deadline.
    fn held(&self, error: &AwsError) -> bool {
        let _ = error;
        false
    }

    /// How many resources one [`Resource::delete_many`] call deletes: more than 1 where AWS's
    /// delete takes a list (CloudWatch `DeleteAlarms` takes 100 names), which saves calls against
    /// the API's rate limit.
    const DELETE_BATCH: usize = 1;

    /// Deletes all of `haves` (at most [`Resource::DELETE_BATCH`]) in one call. The default
    /// deletes them one by one.
    async fn delete_many(&self, haves: &[&Self::Observed]) -> Result<(), ActionError> {
        for have in haves {
            self.delete(have).await?;
        }
        Ok(())
    }

    /// Whether the engine compares what a create returned (or adopted) with `want` and runs the
    /// update for what differs, right after the create. Turn it off for a kind whose step calls
    /// [`Engine::settle`] itself (beside other calls, to keep the run's chain of calls short).
    fn settle_after_create(&self) -> bool {
        true
    }

    /// Whether `have` holds data a prune must not delete without consent (an ECR repository with
    /// images, a secret). Destroy deletes it anyway.
    async fn holds_data(&self, have: &Self::Observed) -> Result<bool, ActionError> {
        let _ = have;
        Ok(false)
    }
}

/// A resource the environment owns, as found in AWS: its logical id (the `tap:component` tag), its
/// name for people, and what AWS has.
#[derive(Debug, Clone)]
pub struct Owned<O> {
    /// Logical id, e.g. `ingress/target-group/frontend`.
    pub id: String,
    /// AWS name or id.
    pub name: String,
    /// What AWS has.
    pub observed: O,
}

/// Whose a resource is, as its tags say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    /// This environment's: `Project=tap`, `ManagedBy=tap`, `Environment={env}`.
    This,
    /// Another tap environment's: the value of its `Environment` tag.
    Other(String),
    /// Not tap's: it lacks tap's tags (`Project=tap`, `ManagedBy=tap`, an `Environment`).
    Unmanaged,
}

impl Owner {
    /// The owner `tags` name, seen from environment `env`.
    pub fn of(tags: &[Tag], env: &str) -> Owner {
        let get = |key: &str| tags.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str());
        if get(TAG_MANAGED_BY) != Some(PROJECT) || get(TAG_PROJECT) != Some(PROJECT) {
            return Owner::Unmanaged;
        }
        match get(TAG_ENVIRONMENT) {
            Some(e) if e == env => Owner::This,
            Some(e) => Owner::Other(e.to_owned()),
            None => Owner::Unmanaged,
        }
    }

    /// Whether it is this environment's.
    pub fn is_this(&self) -> bool {
        *self == Owner::This
    }

    /// Whose `name` is, for people: `tap-api-x-dev belongs to environment `dev` (…)`.
    pub fn whose(&self, name: &str, env: &str) -> String {
        match self {
            Owner::This => format!("{name} belongs to this environment, `{env}`"),
            Owner::Other(other) => {
                format!("{name} belongs to environment `{other}` (tags Environment={other}, ManagedBy=tap)")
            }
            Owner::Unmanaged => {
                format!("{name} exists and is not tap's (it lacks the tags Project=tap, ManagedBy=tap, Environment)")
            }
        }
    }

    /// Why a resource named `name` is not this environment's (`env`), and what to do, for people.
    pub fn conflict_reason(&self, name: &str, env: &str) -> String {
        let whose = self.whose(name, env);
        match self {
            Owner::Unmanaged => format!(
                "conflict: {whose}; tap never adopts, changes or deletes what it did not make: remove or rename \
                 it, or pick another environment suffix"
            ),
            _ => format!(
                "conflict: {whose}; environment `{env}` derives the same name, and an environment never adopts, \
                 changes or deletes what another owns: rename the service (or pick another environment suffix) \
                 so that the names differ"
            ),
        }
    }
}

impl Change {
    /// A resource of this environment's name that is not this environment's (see
    /// [`Action::Conflict`]): `owner` says whose it is.
    pub fn conflict(resource: impl Into<String>, name: impl Into<String>, owner: &Owner, env: &str) -> Self {
        let name = name.into();
        let reason = owner.conflict_reason(&name, env);
        Change { resource: resource.into(), name, action: Action::Conflict, attributes: vec![], reason: Some(reason) }
    }
}

/// The logical id of a resource when its tags say this environment owns it (`Project=tap`,
/// `ManagedBy=tap`, `Environment={env}`, see [`Owner::of`]): its `tap:component` tag, or
/// `fallback` when that tag is missing.
pub fn owned(tags: &[Tag], env: &str, fallback: impl FnOnce() -> String) -> Option<String> {
    if !Owner::of(tags, env).is_this() {
        return None;
    }
    Some(tags.iter().find(|(k, _)| k == TAG_COMPONENT).map(|(_, v)| v.clone()).unwrap_or_else(fallback))
}

/// Runs the life cycle of resources for one step in one mode, and collects the changes it listed
/// or made. Safe to share between concurrent converges of one step.
#[derive(Debug)]
pub struct Engine<'a> {
    ctx: &'a Context,
    step: &'static str,
    mode: Mode,
    recovery: Recovery,
    hold: Backoff,
    changes: Mutex<Vec<Change>>,
}

impl<'a> Engine<'a> {
    /// An engine for `step` in `mode`.
    pub fn new(ctx: &'a Context, step: &'static str, mode: Mode) -> Self {
        Engine { ctx, step, mode, recovery: Recovery::default(), hold: Backoff::default(), changes: Mutex::default() }
    }

    /// Replaces how long a delete AWS refuses while something holds the resource
    /// ([`Resource::held`]) is sent again.
    pub fn with_hold_backoff(mut self, hold: Backoff) -> Self {
        self.hold = hold;
        self
    }

    /// Replaces how long a create with an unknown outcome is looked for before creating again.
    pub fn with_recovery(mut self, recovery: Recovery) -> Self {
        self.recovery = recovery;
        self
    }

    /// Plan or apply.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The context the engine reports progress to.
    pub fn ctx(&self) -> &'a Context {
        self.ctx
    }

    /// Converges one resource: `have` is what AWS has (read by the caller, usually in one batched
    /// call for all resources of the kind). Returns what exists afterwards, or `None` in plan mode
    /// for a resource still to be created.
    pub async fn converge<R: Resource>(
        &self,
        resource: &R,
        id: &str,
        name: &str,
        want: &R::Desired,
        have: Option<R::Observed>,
    ) -> Result<Option<R::Observed>, StepError> {
        let Some(have) = have else {
            return self.create(resource, id, name, want).await;
        };
        let owner = self.owner(resource, id, &have).await?;
        if !owner.is_this() {
            return self.conflict(id, name, &owner);
        }
        self.found(id);
        let Some(Diff { update, attributes }) = self.diff(resource, id, name, want, &have)? else {
            return Ok(Some(have));
        };
        let now = if self.mode.is_apply() {
            self.working(id, Action::Update);
            let now = resource.update(&have, &update).await.map_err(|e| e.on(id))?;
            tracing::info!(step = self.step, resource = id, name, "updated");
            now
        } else {
            have
        };
        self.record(Change::update(id, name, attributes));
        Ok(Some(now))
    }

    /// Creates one resource (in plan mode: lists it and returns `None`).
    async fn create<R: Resource>(
        &self,
        resource: &R,
        id: &str,
        name: &str,
        want: &R::Desired,
    ) -> Result<Option<R::Observed>, StepError> {
        let created = Change { attributes: resource.create_attributes(want), ..Change::create(id, name) };
        if !self.mode.is_apply() {
            self.record(created);
            return Ok(None);
        }
        self.working(id, Action::Create);
        // Adopted only when it is this environment's: one found with another owner's tags (its
        // name is this environment's too) is a conflict, never taken over.
        let foreign: Mutex<Option<Owner>> = Mutex::default();
        let find = || async {
            let Some(found) = resource.find(want).await? else { return Ok(None) };
            let owner = resource.owner(&found, self.ctx.names.env()).await.map_err(|e| e.source)?;
            if owner.is_this() {
                return Ok(Some(found));
            }
            *foreign.lock().unwrap_or_else(|e| e.into_inner()) = Some(owner);
            Ok(None)
        };
        let mut made =
            create_or_adopt(id, self.recovery, |e| resource.already_exists(e), find, || resource.create(want))
                .await
                .map_err(|e| match foreign.lock().unwrap_or_else(|e| e.into_inner()).take() {
                    Some(owner) => self.conflict_error(id, name, &owner),
                    None => StepError::aws(id, R::CREATE)(e),
                })?;
        // What exists now may still differ from what was asked: an adopted resource (its create's
        // answer was lost) lacks what the create's follow-up calls set, and some endpoints drop
        // fields on create. It is converged in this same run, so plan's `+` is what deploy leaves.
        if resource.settle_after_create() {
            made = self.settle(resource, id, name, want, made).await?;
        }
        tracing::info!(step = self.step, resource = id, name, "created");
        self.record(created);
        Ok(Some(made))
    }

    /// Sets what a create just `made` lacks of `want` (an adopted resource misses its create's
    /// follow-up calls; some endpoints drop fields on create), recording nothing: the create's
    /// change already stands for `want`. The engine runs it right after the create, unless the
    /// kind turns [`Resource::settle_after_create`] off so that its step runs it beside other
    /// calls (the ECS service, beside its scaling). Nothing in plan mode.
    pub async fn settle<R: Resource>(
        &self,
        resource: &R,
        id: &str,
        name: &str,
        want: &R::Desired,
        made: R::Observed,
    ) -> Result<R::Observed, StepError> {
        Ok(self.update_created(resource, id, name, want, made).await?.0)
    }

    /// The update from what a create `made` to `want` (apply mode only): what exists afterwards and
    /// the attributes it set. The tail of [`Engine::settle`] and [`Engine::complete`].
    async fn update_created<R: Resource>(
        &self,
        resource: &R,
        id: &str,
        name: &str,
        want: &R::Desired,
        made: R::Observed,
    ) -> Result<(R::Observed, Vec<AttrChange>), StepError> {
        if !self.mode.is_apply() {
            return Ok((made, vec![]));
        }
        let Some(Diff { update, attributes }) = self.diff(resource, id, name, want, &made)? else {
            return Ok((made, vec![]));
        };
        let set: Vec<&str> = attributes.iter().map(|a| a.attribute.as_str()).collect();
        tracing::info!(step = self.step, resource = id, ?set, "setting what the create did not");
        let now = resource.update(&made, &update).await.map_err(|e| e.on(id))?;
        Ok((now, attributes))
    }

    /// The second half of a create whose `want` could not be whole at creation (a security group's
    /// rules name groups created beside it): the update from what the create `made` to `want`,
    /// whose attributes the create listed ([`Resource::create_attributes`]). Whatever it sets
    /// beyond those (an attribute, or a value, the create did not list) is recorded as an update,
    /// so apply reports all it does. Nothing in plan mode, where the create is only listed.
    pub async fn complete<R: Resource>(
        &self,
        resource: &R,
        id: &str,
        name: &str,
        want: &R::Desired,
        made: R::Observed,
    ) -> Result<R::Observed, StepError> {
        let (now, attributes) = self.update_created(resource, id, name, want, made).await?;
        let unlisted: Vec<AttrChange> = {
            let changes = self.changes.lock().unwrap_or_else(|e| e.into_inner());
            // By attribute and value set: the create's lists no old value, the update's what the
            // create made (a default).
            let created = changes.iter().filter(|c| c.resource == id && c.action == Action::Create);
            let listed: Vec<&AttrChange> = created.flat_map(|c| &c.attributes).collect();
            let listed = |a: &AttrChange| listed.iter().any(|l| l.attribute == a.attribute && l.new == a.new);
            attributes.into_iter().filter(|a| !listed(a)).collect()
        };
        if !unlisted.is_empty() {
            tracing::warn!(step = self.step, resource = id, ?unlisted, "done beyond what the create listed");
            self.record(Change::update(id, name, unlisted));
        }
        Ok(now)
    }

    /// Deletes one resource (in plan mode: lists it), after its [`Resource::release`]. One already
    /// gone (AWS answers not-found) is not an error and not a change: someone else deleted it.
    /// Returns whether it was (or, in plan mode, would be) deleted.
    pub async fn delete<R: Resource>(
        &self,
        resource: &R,
        id: &str,
        name: &str,
        have: &R::Observed,
    ) -> Result<bool, StepError> {
        self.release(resource, id, name, have).await?;
        self.delete_one(resource, id, name, have).await
    }

    /// [`Engine::delete`] of one already released.
    async fn delete_one<R: Resource>(
        &self,
        resource: &R,
        id: &str,
        name: &str,
        have: &R::Observed,
    ) -> Result<bool, StepError> {
        if !self.deletable(resource, id, name, have).await? {
            return Ok(false);
        }
        if self.mode.is_apply() {
            self.working(id, Action::Delete);
            let held = |e: &StepError| {
                let held = matches!(e, StepError::Aws { source, .. } if resource.held(source));
                if held {
                    tracing::info!(step = self.step, resource = id, name, error = %e, "still held: deleting again shortly");
                }
                held
            };
            let what = format!("{name} to be let go by what still holds it, to delete it");
            match retry_while(&what, self.hold, held, || async { resource.delete(have).await.map_err(|e| e.on(id)) })
                .await
            {
                Ok(Deleted::Now) => {}
                Ok(Deleted::AlreadyGone) => return Ok(false),
                Err(StepError::Aws { source, .. }) if source.is_not_found() => return Ok(false),
                Err(e) => return Err(e),
            }
            tracing::info!(step = self.step, resource = id, name, "deleted");
        }
        self.record(Change { attributes: resource.release_attributes(have), ..Change::delete(id, name) });
        Ok(true)
    }

    /// Runs `have`'s [`Resource::release`] (apply mode, when it lists something and `have` is this
    /// environment's). Not-found is already released.
    async fn release<R: Resource>(
        &self,
        resource: &R,
        id: &str,
        name: &str,
        have: &R::Observed,
    ) -> Result<(), StepError> {
        if !self.mode.is_apply()
            || resource.release_attributes(have).is_empty()
            || !self.deletable(resource, id, name, have).await?
        {
            return Ok(());
        }
        self.working(id, Action::Delete);
        match resource.release(have).await {
            Err(e) if !e.source.is_not_found() => Err(e.on(id)),
            _ => {
                tracing::info!(step = self.step, resource = id, name, "released what it holds of others");
                Ok(())
            }
        }
    }

    /// Deletes `doomed` (in plan mode: lists them), concurrently, [`Resource::DELETE_BATCH`] at a
    /// time where the kind's API takes a list, after every one's [`Resource::release`]. A batch AWS
    /// refuses because one of them is already gone is deleted again one by one, so what is gone
    /// stays no error and no change. Returns, for each, whether it was (or would be) deleted.
    pub async fn delete_all<R: Resource>(
        &self,
        resource: &R,
        doomed: &[&Owned<R::Observed>],
    ) -> Result<Vec<bool>, StepError> {
        self.delete_all_when(resource, doomed, async { Ok(()) }).await
    }

    /// [`Engine::delete_all`] whose deletes (in apply mode) wait for `ready` (what holds them to
    /// go), while the releases run at once, before it.
    pub async fn delete_all_when<R: Resource>(
        &self,
        resource: &R,
        doomed: &[&Owned<R::Observed>],
        ready: impl Future<Output = Result<(), StepError>>,
    ) -> Result<Vec<bool>, StepError> {
        if self.mode.is_apply() {
            try_join_all(doomed.iter().map(|o| self.release(resource, &o.id, &o.name, &o.observed))).await?;
            ready.await?;
        }
        if R::DELETE_BATCH <= 1 || doomed.len() <= 1 || !self.mode.is_apply() {
            return self.delete_each(resource, doomed).await;
        }
        // Only what is this environment's goes into a batch; the rest is skipped (and said so).
        let mine = try_join_all(doomed.iter().map(|o| self.deletable(resource, &o.id, &o.name, &o.observed))).await?;
        let ours: Vec<&Owned<R::Observed>> = doomed.iter().zip(&mine).filter(|(_, m)| **m).map(|(o, _)| *o).collect();
        let mut deleted = self.delete_batches(resource, &ours).await?.into_iter();
        Ok(mine.iter().map(|m| *m && deleted.next().unwrap_or(false)).collect())
    }

    /// [`Engine::delete_all`] in batches of [`Resource::DELETE_BATCH`], of resources known to be
    /// this environment's.
    async fn delete_batches<R: Resource>(
        &self,
        resource: &R,
        doomed: &[&Owned<R::Observed>],
    ) -> Result<Vec<bool>, StepError> {
        let batches = try_join_all(doomed.chunks(R::DELETE_BATCH).map(|chunk| async move {
            for o in chunk {
                self.working(&o.id, Action::Delete);
            }
            let haves: Vec<&R::Observed> = chunk.iter().map(|o| &o.observed).collect();
            match resource.delete_many(&haves).await {
                Ok(()) => {
                    for o in chunk {
                        tracing::info!(step = self.step, resource = o.id, name = o.name, "deleted");
                        let attributes = resource.release_attributes(&o.observed);
                        self.record(Change { attributes, ..Change::delete(&o.id, &o.name) });
                    }
                    Ok(vec![true; chunk.len()])
                }
                // One of them gone, or held: each on its own, which says so or waits.
                Err(e) if e.source.is_not_found() || resource.held(&e.source) => {
                    self.delete_each(resource, chunk).await
                }
                Err(e) => Err(e.on(&chunk[0].id)),
            }
        }))
        .await?;
        Ok(batches.into_iter().flatten().collect())
    }

    /// [`Engine::delete`] of each of `doomed`, concurrently.
    async fn delete_each<R: Resource>(
        &self,
        resource: &R,
        doomed: &[&Owned<R::Observed>],
    ) -> Result<Vec<bool>, StepError> {
        try_join_all(doomed.iter().map(|o| self.delete_one(resource, &o.id, &o.name, &o.observed))).await
    }

    /// Deletes every owned resource whose id is not `declared` ([`Engine::delete_all`]). A
    /// data-bearing one is kept (and listed as [`Action::Keep`]) unless the config allows pruning
    /// data (`deploy.prune_data`). Returns the ones deleted (or, in plan mode, to be deleted).
    pub async fn prune<R: Resource>(
        &self,
        resource: &R,
        owned: Vec<Owned<R::Observed>>,
        declared: &BTreeSet<String>,
    ) -> Result<Vec<Owned<R::Observed>>, StepError> {
        let undeclared: Vec<Owned<R::Observed>> = owned.into_iter().filter(|o| !declared.contains(&o.id)).collect();
        let prune_data = self.ctx.config.deploy.prune_data;
        let kept = try_join_all(undeclared.iter().map(|o| async move {
            let keep = !prune_data && resource.holds_data(&o.observed).await.map_err(|e| e.on(&o.id))?;
            if keep {
                self.record(Change::keep(&o.id, &o.name));
            }
            Ok::<_, StepError>(keep)
        }))
        .await?;
        let doomed: Vec<&Owned<R::Observed>> =
            undeclared.iter().zip(&kept).filter(|(_, keep)| !**keep).map(|(o, _)| o).collect();
        let deleted = self.delete_all(resource, &doomed).await?;
        Ok(doomed.into_iter().zip(deleted).filter(|(_, d)| *d).map(|(o, _)| o.clone()).collect())
    }

    /// `resource.diff`, what cannot converge in place a conflict on `id`.
    fn diff<R: Resource>(
        &self,
        resource: &R,
        id: &str,
        name: &str,
        want: &R::Desired,
        have: &R::Observed,
    ) -> Result<Option<Diff<R::Update>>, StepError> {
        resource
            .diff(want, have)
            .map_err(|message| StepError::Conflict { resource: id.into(), message: format!("{name}: {message}") })
    }

    /// Whose `have` is, for this engine's environment.
    async fn owner<R: Resource>(&self, resource: &R, id: &str, have: &R::Observed) -> Result<Owner, StepError> {
        resource.owner(have, self.ctx.names.env()).await.map_err(|e| e.on(id))
    }

    /// A resource found by this environment's name that is not this environment's: plan lists the
    /// conflict (and the caller goes on as if it did not exist yet: its outputs are pending);
    /// apply fails on it before any call touches it.
    fn conflict<O>(&self, id: &str, name: &str, owner: &Owner) -> Result<Option<O>, StepError> {
        if self.mode.is_apply() {
            return Err(self.conflict_error(id, name, owner));
        }
        tracing::warn!(step = self.step, resource = id, name, ?owner, "not this environment's: a conflict");
        self.record(Change::conflict(id, name, owner, self.ctx.names.env()));
        Ok(None)
    }

    /// The error apply stops with on a conflict.
    fn conflict_error(&self, id: &str, name: &str, owner: &Owner) -> StepError {
        StepError::Conflict { resource: id.into(), message: owner.conflict_reason(name, self.ctx.names.env()) }
    }

    /// Whether `have` may be deleted: only when it is this environment's. Another's (or one
    /// without tap's tags) is skipped with a warning, whatever the caller found it by.
    async fn deletable<R: Resource>(
        &self,
        resource: &R,
        id: &str,
        name: &str,
        have: &R::Observed,
    ) -> Result<bool, StepError> {
        let owner = match resource.owner(have, self.ctx.names.env()).await {
            Ok(owner) => owner,
            // Gone meanwhile: nothing to delete, no change.
            Err(e) if e.source.is_not_found() => return Ok(false),
            Err(e) => return Err(e.on(id)),
        };
        if owner.is_this() {
            return Ok(true);
        }
        tracing::warn!(
            step = self.step,
            resource = id,
            name,
            "left alone: {}; an environment never deletes what another owns",
            owner.whose(name, self.ctx.names.env())
        );
        Ok(false)
    }

    /// Reports a resource that exists and was compared (unchanged unless a change names it too).
    fn found(&self, id: &str) {
        self.ctx.progress(ProgressEvent::Found { step: self.step, resource: id });
    }

    /// Reports that work on `id` starts.
    fn working(&self, id: &str, action: Action) {
        self.ctx.progress(ProgressEvent::Working { step: self.step, resource: id, action });
    }

    /// Records a change made (or, in plan mode, to be made) and reports it.
    fn record(&self, change: Change) {
        self.ctx.progress(ProgressEvent::Changed { step: self.step, change: &change });
        self.changes.lock().unwrap_or_else(|e| e.into_inner()).push(change);
    }

    /// The changes listed or made so far, in the order they happened.
    pub fn changes(&self) -> Vec<Change> {
        self.changes.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The changes, consuming the engine.
    pub fn into_changes(self) -> Vec<Change> {
        self.changes.into_inner().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::progress::ProgressSink;
    use std::collections::BTreeMap;
    use std::sync::Arc;
    use std::time::Duration;

    /// A fake AWS holding named records with a `size` and `data` flag, and tags.
    #[derive(Default)]
    struct FakeAws {
        records: Mutex<BTreeMap<String, Record>>,
        calls: Mutex<Vec<String>>,
        /// Creates that take effect but whose answer is lost.
        lose_create_answers: Mutex<u32>,
        /// Creates store size 0 (as an endpoint that drops a field, or a create whose follow-up
        /// call never ran).
        drop_size_on_create: bool,
        /// Deletes refused with `DependencyViolation` before one goes through.
        holds: Mutex<u32>,
        /// Creates are not settled in the same call: the caller completes them.
        two_halves: bool,
    }

    #[derive(Debug, Clone, PartialEq)]
    struct Record {
        name: String,
        size: u32,
        colour: String,
        data: bool,
        tags: Vec<Tag>,
        /// Records it names, which hold them: a record named by another is not deleted.
        links: Vec<String>,
    }

    #[derive(Debug, Clone, PartialEq)]
    enum Update {
        Resize(u32),
        Repaint(String),
        Both(u32, String),
    }

    struct Fake<'a> {
        aws: &'a FakeAws,
    }

    impl Fake<'_> {
        fn call(&self, what: String) {
            self.aws.calls.lock().unwrap().push(what);
        }
    }

    #[async_trait]
    impl Resource for Fake<'_> {
        type Desired = Record;
        type Observed = Record;
        type Update = Update;
        const CREATE: &'static str = "CreateRecord";

        fn diff(&self, want: &Record, have: &Record) -> Result<Option<Diff<Update>>, String> {
            if want.data != have.data {
                return Err("the data flag cannot change in place".into());
            }
            let mut attrs = vec![];
            crate::step::diff(&mut attrs, "size", &have.size, &want.size);
            crate::step::diff(&mut attrs, "colour", &have.colour, &want.colour);
            let update = match (want.size != have.size, want.colour != have.colour) {
                (false, false) => return Ok(None),
                (true, false) => Update::Resize(want.size),
                (false, true) => Update::Repaint(want.colour.clone()),
                (true, true) => Update::Both(want.size, want.colour.clone()),
            };
            Ok(Some(Diff::new(update, attrs)))
        }

        async fn find(&self, want: &Record) -> Result<Option<Record>, AwsError> {
            self.call(format!("find {}", want.name));
            Ok(self.aws.records.lock().unwrap().get(&want.name).cloned())
        }

        fn already_exists(&self, error: &AwsError) -> bool {
            error.is("RecordAlreadyExists")
        }

        async fn owner(&self, have: &Record, env: &str) -> Result<Owner, ActionError> {
            Ok(Owner::of(&have.tags, env))
        }

        async fn create(&self, want: &Record) -> Result<Record, AwsError> {
            self.call(format!("create {}", want.name));
            let mut stored = want.clone();
            if self.aws.drop_size_on_create {
                stored.size = 0;
            }
            if self.aws.records.lock().unwrap().contains_key(&want.name) {
                return Err(AwsError::new("RecordAlreadyExists", "a record of this name exists"));
            }
            self.aws.records.lock().unwrap().insert(want.name.clone(), stored.clone());
            let mut lose = self.aws.lose_create_answers.lock().unwrap();
            if *lose > 0 {
                *lose -= 1;
                // The create took effect; its answer never arrived.
                return Err(AwsError::no_answer("connection reset"));
            }
            Ok(stored)
        }

        fn create_attributes(&self, want: &Record) -> Vec<AttrChange> {
            vec![AttrChange::new("size", None, Some(want.size.to_string()))]
        }

        async fn update(&self, have: &Record, update: &Update) -> Result<Record, ActionError> {
            self.call(format!("update {} {update:?}", have.name));
            let mut records = self.aws.records.lock().unwrap();
            let r = records.get_mut(&have.name).unwrap();
            match update {
                Update::Resize(s) => r.size = *s,
                Update::Repaint(c) => r.colour = c.clone(),
                Update::Both(s, c) => (r.size, r.colour) = (*s, c.clone()),
            }
            Ok(r.clone())
        }

        async fn delete(&self, have: &Record) -> Result<Deleted, ActionError> {
            self.call(format!("delete {}", have.name));
            let mut holds = self.aws.holds.lock().unwrap();
            if *holds > 0 {
                *holds -= 1;
                return Err(AwsError::new("DependencyViolation", "still in use")).during("DeleteRecord");
            }
            let mut records = self.aws.records.lock().unwrap();
            if records.values().any(|r| r.links.contains(&have.name)) {
                return Err(AwsError::new("DependencyViolation", "named by another")).during("DeleteRecord");
            }
            match records.remove(&have.name) {
                Some(_) => Ok(Deleted::Now),
                None if have.name.starts_with("going") => Ok(Deleted::AlreadyGone),
                None => Err(AwsError::new("RecordNotFound", "no such record")).during("DeleteRecord"),
            }
        }

        fn held(&self, error: &AwsError) -> bool {
            error.is("DependencyViolation")
        }

        fn settle_after_create(&self) -> bool {
            !self.aws.two_halves
        }

        fn release_attributes(&self, have: &Record) -> Vec<AttrChange> {
            have.links.iter().map(|l| AttrChange::new("link", Some(l.clone()), None)).collect()
        }

        async fn release(&self, have: &Record) -> Result<(), ActionError> {
            self.call(format!("release {}", have.name));
            match self.aws.records.lock().unwrap().get_mut(&have.name) {
                Some(r) => {
                    r.links.clear();
                    Ok(())
                }
                None => Err(AwsError::new("RecordNotFound", "no such record")).during("Unlink"),
            }
        }

        async fn holds_data(&self, have: &Record) -> Result<bool, ActionError> {
            Ok(have.data)
        }
    }

    /// A kind whose delete takes a list of two, and deletes none when one of them is gone (as
    /// CloudWatch's `DeleteAlarms` does).
    #[derive(Default)]
    struct Pairs {
        names: Mutex<BTreeSet<String>>,
        calls: Mutex<Vec<Vec<String>>>,
    }

    #[async_trait]
    impl Resource for Pairs {
        type Desired = String;
        type Observed = String;
        type Update = ();
        const CREATE: &'static str = "CreatePair";
        const DELETE_BATCH: usize = 2;

        fn diff(&self, _want: &String, _have: &String) -> Result<Option<Diff<()>>, String> {
            Ok(None)
        }
        async fn find(&self, _want: &String) -> Result<Option<String>, AwsError> {
            Ok(None)
        }
        async fn owner(&self, have: &String, _env: &str) -> Result<Owner, ActionError> {
            Ok(if have == "theirs" { Owner::Other("dev".into()) } else { Owner::This })
        }
        async fn create(&self, want: &String) -> Result<String, AwsError> {
            Ok(want.clone())
        }
        async fn update(&self, have: &String, _update: &()) -> Result<String, ActionError> {
            Ok(have.clone())
        }
        async fn delete(&self, have: &String) -> Result<Deleted, ActionError> {
            self.delete_many(&[have]).await.map(|()| Deleted::Now)
        }
        async fn delete_many(&self, haves: &[&String]) -> Result<(), ActionError> {
            self.calls.lock().unwrap().push(haves.iter().map(|h| h.to_string()).collect());
            let mut names = self.names.lock().unwrap();
            if haves.iter().any(|h| !names.contains(*h)) {
                return Err(AwsError::new("ResourceNotFound", "no such pair")).during("DeletePairs");
            }
            for h in haves {
                names.remove(*h);
            }
            Ok(())
        }
    }

    fn pairs_named(names: &[&str]) -> Vec<Owned<String>> {
        names
            .iter()
            .map(|n| Owned { id: format!("fake/pair/{n}"), name: n.to_string(), observed: n.to_string() })
            .collect()
    }

    #[tokio::test]
    async fn a_kind_whose_delete_takes_a_list_is_deleted_in_batches_and_one_gone_is_no_change() {
        let pairs = Pairs::default();
        pairs.names.lock().unwrap().extend(["a", "b", "c", "e"].map(String::from));
        // `d` is already gone: its batch is refused whole, then deleted one by one.
        let doomed = pairs_named(&["a", "b", "c", "d", "e"]);
        let ctx = Context::new(Config::default());
        let engine = Engine::new(&ctx, "fake", Mode::Apply);
        let deleted = engine.delete_all(&pairs, &doomed.iter().collect::<Vec<_>>()).await.unwrap();
        assert_eq!(deleted, [true, true, true, false, true]);
        let calls = pairs.calls.lock().unwrap().clone();
        let batches: Vec<usize> = calls.iter().map(Vec::len).collect();
        assert_eq!(&batches[..3], [2, 2, 1], "{calls:?}");
        assert_eq!(calls.len(), 5, "the refused batch again one by one: {calls:?}");
        assert!(pairs.names.lock().unwrap().is_empty());
        let changes = engine.into_changes();
        let gone: BTreeSet<&str> = changes.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(gone, BTreeSet::from(["a", "b", "c", "e"]), "`d` was gone: no change");

        // Plan mode lists each, one by one, and calls nothing.
        let pairs = Pairs::default();
        let engine = Engine::new(&ctx, "fake", Mode::Plan);
        let listed = engine.delete_all(&pairs, &doomed.iter().collect::<Vec<_>>()).await.unwrap();
        assert_eq!(listed, [true; 5]);
        assert!(pairs.calls.lock().unwrap().is_empty());
    }

    fn record(env: &str, name: &str, size: u32) -> Record {
        Record {
            name: name.into(),
            size,
            colour: "blue".into(),
            data: false,
            links: vec![],
            tags: vec![
                (TAG_PROJECT.into(), PROJECT.into()),
                (TAG_MANAGED_BY.into(), PROJECT.into()),
                (TAG_ENVIRONMENT.into(), env.into()),
                (TAG_COMPONENT.into(), format!("fake/record/{name}")),
            ],
        }
    }

    fn fast() -> Recovery {
        Recovery { attempts: 3, lookup: Duration::from_millis(20), lookup_delay: Duration::from_millis(1) }
    }

    /// Sends a held delete again within milliseconds, for five seconds.
    fn quick() -> Backoff {
        Backoff { initial: Duration::from_millis(1), max: Duration::from_millis(2), timeout: Duration::from_secs(5) }
    }

    /// Plans, then applies, a converge of `want` (name → record) over what `aws` holds, and prunes
    /// what is owned and not wanted. Returns (plan changes, apply changes).
    async fn run(aws: &FakeAws, ctx: &Context, want: &[Record]) -> (Vec<Change>, Vec<Change>) {
        let fake = Fake { aws };
        let mut out = vec![];
        for mode in [Mode::Plan, Mode::Apply] {
            let engine = Engine::new(ctx, "fake", mode).with_recovery(fast());
            let existing: Vec<Record> = aws.records.lock().unwrap().values().cloned().collect();
            for w in want {
                let have = existing.iter().find(|r| r.name == w.name).cloned();
                engine.converge(&fake, &format!("fake/record/{}", w.name), &w.name, w, have).await.unwrap();
            }
            let owned_now: Vec<Owned<Record>> = existing
                .iter()
                .filter_map(|r| {
                    let id = owned(&r.tags, ctx.names.env(), String::new)?;
                    Some(Owned { id, name: r.name.clone(), observed: r.clone() })
                })
                .collect();
            let declared = want.iter().map(|w| format!("fake/record/{}", w.name)).collect();
            engine.prune(&fake, owned_now, &declared).await.unwrap();
            out.push(engine.into_changes());
        }
        let apply = out.pop().unwrap();
        (out.pop().unwrap(), apply)
    }

    fn ctx(env: &str) -> Context {
        Context::new(Config { environment: env.into(), ..Config::default() })
    }

    #[tokio::test]
    async fn plan_lists_exactly_what_apply_does_attribute_by_attribute() {
        let aws = FakeAws::default();
        let ctx = ctx("dev");
        aws.records.lock().unwrap().insert("a".into(), record("dev", "a", 1));
        aws.records.lock().unwrap().insert("b".into(), record("dev", "b", 1));
        let mut b = record("dev", "b", 3);
        b.colour = "red".into();
        let want = [record("dev", "a", 1), b.clone(), record("dev", "c", 5)];
        let (plan, apply) = run(&aws, &ctx, &want).await;
        assert_eq!(plan, apply, "what plan printed is what apply did");
        let b_change = plan.iter().find(|c| c.name == "b").unwrap();
        let attrs: Vec<&str> = b_change.attributes.iter().map(|a| a.attribute.as_str()).collect();
        assert_eq!(attrs, ["size", "colour"]);
        assert!(
            aws.calls.lock().unwrap().contains(&"update b Both(3, \"red\")".to_owned()),
            "the update that ran is the one whose attributes plan printed: {:?}",
            aws.calls.lock().unwrap()
        );
        assert_eq!(aws.records.lock().unwrap().get("b"), Some(&b));
        let (plan, apply) = run(&aws, &ctx, &want).await;
        assert!(plan.is_empty() && apply.is_empty(), "converged: {plan:?} {apply:?}");
        assert!(!aws.calls.lock().unwrap().iter().any(|c| c == "update a Resize(1)"), "a in sync is left alone");
    }

    #[tokio::test]
    async fn a_create_with_an_unknown_outcome_is_adopted_not_repeated() {
        let aws = FakeAws::default();
        *aws.lose_create_answers.lock().unwrap() = 1;
        let ctx = ctx("dev");
        let (_, apply) = run(&aws, &ctx, &[record("dev", "a", 1)]).await;
        let created = Change {
            attributes: vec![AttrChange::new("size", None, Some("1".into()))],
            ..Change::create("fake/record/a", "a")
        };
        assert_eq!(apply, vec![created], "a create lists the attributes it sets");
        let calls = aws.calls.lock().unwrap().clone();
        assert_eq!(calls, ["create a", "find a"], "looked up after the lost answer, not sent again");
    }

    #[tokio::test]
    async fn what_a_create_left_unset_is_set_in_the_same_run_also_after_adoption() {
        for lost in [0, 1] {
            let aws = FakeAws { drop_size_on_create: true, ..FakeAws::default() };
            *aws.lose_create_answers.lock().unwrap() = lost;
            let ctx = ctx("dev");
            let (plan, apply) = run(&aws, &ctx, &[record("dev", "a", 4)]).await;
            assert_eq!(plan, apply, "plan's `+` is all deploy reports");
            assert_eq!(aws.records.lock().unwrap()["a"].size, 4, "lost answer: {lost}");
            let (plan, _) = run(&aws, &ctx, &[record("dev", "a", 4)]).await;
            assert!(plan.is_empty(), "converged in one run: {plan:?}");
        }
    }

    #[tokio::test]
    async fn prune_deletes_only_what_carries_this_environments_tags_and_keeps_data() {
        let aws = FakeAws::default();
        let ctx = ctx("dev");
        {
            let mut records = aws.records.lock().unwrap();
            records.insert("a".into(), record("dev", "a", 1));
            records.insert("gone".into(), record("dev", "gone", 1));
            records.insert("other-env".into(), record("prod", "other-env", 1));
            let mut foreign = record("dev", "foreign", 1);
            foreign.tags.retain(|(k, _)| k != TAG_MANAGED_BY);
            records.insert("foreign".into(), foreign);
            let mut data = record("dev", "data", 1);
            data.data = true;
            records.insert("data".into(), data);
        }
        let (plan, apply) = run(&aws, &ctx, &[record("dev", "a", 1)]).await;
        assert_eq!(plan, apply);
        let mut got: Vec<(String, Action)> = apply.iter().map(|c| (c.name.clone(), c.action)).collect();
        got.sort();
        assert_eq!(got, [("data".to_owned(), Action::Keep), ("gone".to_owned(), Action::Delete)]);
        let left: Vec<String> = aws.records.lock().unwrap().keys().cloned().collect();
        assert_eq!(left, ["a", "data", "foreign", "other-env"]);

        let mut config = Config { environment: "dev".into(), ..Config::default() };
        config.deploy.prune_data = true;
        let (_, apply) = run(&aws, &Context::new(config), &[record("dev", "a", 1)]).await;
        assert_eq!(apply, vec![Change::delete("fake/record/data", "data")], "with consent, data goes too");
    }

    #[tokio::test]
    async fn conflicts_name_the_resource_and_deletes_of_gone_resources_succeed() {
        let aws = FakeAws::default();
        let ctx = ctx("dev");
        let fake = Fake { aws: &aws };
        let engine = Engine::new(&ctx, "fake", Mode::Apply);
        let mut want = record("dev", "a", 1);
        want.data = true;
        let err = engine.converge(&fake, "fake/record/a", "a", &want, Some(record("dev", "a", 1))).await.unwrap_err();
        assert!(err.to_string().contains("fake/record/a") && err.to_string().contains("in place"), "{err}");
        let gone = engine.delete(&fake, "fake/record/x", "x", &record("dev", "x", 1)).await.unwrap();
        assert!(!gone && engine.changes().is_empty(), "a resource already gone is no change");
        aws.records.lock().unwrap().insert("y".into(), record("dev", "y", 1));
        assert!(engine.delete(&fake, "fake/record/y", "y", &record("dev", "y", 1)).await.unwrap());
        assert_eq!(engine.changes(), vec![Change::delete("fake/record/y", "y")]);
    }

    /// A delete AWS refuses while something holds the resource is sent again until it goes
    /// through; one the kind finds already gone is no change; an update's new identity is what
    /// converge returns.
    #[tokio::test]
    async fn a_held_delete_is_sent_again_one_already_gone_is_no_change_and_an_update_returns_what_exists_now() {
        let aws = FakeAws::default();
        *aws.holds.lock().unwrap() = 2;
        aws.records.lock().unwrap().insert("a".into(), record("dev", "a", 1));
        let ctx = ctx("dev");
        let fake = Fake { aws: &aws };
        let engine = Engine::new(&ctx, "fake", Mode::Apply).with_hold_backoff(quick());
        assert!(engine.delete(&fake, "fake/record/a", "a", &record("dev", "a", 1)).await.unwrap());
        let deletes = aws.calls.lock().unwrap().iter().filter(|c| *c == "delete a").count();
        assert_eq!(deletes, 3, "two refusals, then the delete that went through");
        assert!(!engine.delete(&fake, "fake/record/going", "going", &record("dev", "going", 1)).await.unwrap());
        assert_eq!(engine.changes(), vec![Change::delete("fake/record/a", "a")], "already gone: no change");

        // Held past the deadline: the error names the resource and what AWS said.
        *aws.holds.lock().unwrap() = u32::MAX;
        aws.records.lock().unwrap().insert("b".into(), record("dev", "b", 1));
        let brief = Backoff { timeout: Duration::from_millis(20), ..quick() };
        let engine = Engine::new(&ctx, "fake", Mode::Apply).with_hold_backoff(brief);
        let err = engine.delete(&fake, "fake/record/b", "b", &record("dev", "b", 1)).await.unwrap_err();
        assert!(err.to_string().contains("fake/record/b") && err.to_string().contains("DependencyViolation"), "{err}");
        *aws.holds.lock().unwrap() = 0;

        let now =
            engine.converge(&fake, "fake/record/b", "b", &record("dev", "b", 9), Some(record("dev", "b", 1))).await;
        assert_eq!(now.unwrap().map(|r| r.size), Some(9), "converge returns what the update left");
    }

    /// `dev`'s record `a` and one without tap's tags, `b`, as environment `x-dev` would find them
    /// by the names it derives: plan lists each as a conflict naming its owner, apply stops before
    /// touching them, a create AWS answers "already exists" for is not adopted, and a delete (prune,
    /// destroy) leaves them alone.
    #[tokio::test]
    async fn what_carries_another_environments_tags_is_a_conflict_never_adopted_changed_or_deleted() {
        let aws = FakeAws::default();
        let theirs = record("dev", "a", 1);
        let mut untagged = record("dev", "b", 1);
        untagged.tags.clear();
        aws.records.lock().unwrap().insert("a".into(), theirs.clone());
        aws.records.lock().unwrap().insert("b".into(), untagged.clone());
        let ctx = ctx("x-dev");
        let fake = Fake { aws: &aws };
        let (want_a, want_b) = (record("x-dev", "a", 7), record("x-dev", "b", 7));

        let plan = Engine::new(&ctx, "fake", Mode::Plan);
        let a = plan.converge(&fake, "fake/record/a", "a", &want_a, Some(theirs.clone())).await.unwrap();
        let b = plan.converge(&fake, "fake/record/b", "b", &want_b, Some(untagged.clone())).await.unwrap();
        assert!(a.is_none() && b.is_none(), "what is not ours is not reported as existing");
        let changes = plan.into_changes();
        let got: Vec<(&str, Action)> = changes.iter().map(|c| (c.resource.as_str(), c.action)).collect();
        assert_eq!(got, [("fake/record/a", Action::Conflict), ("fake/record/b", Action::Conflict)]);
        let reason = changes[0].reason.as_deref().unwrap();
        assert!(reason.contains("environment `dev`") && reason.contains("a belongs to"), "{reason}");
        assert!(changes[1].reason.as_deref().unwrap().contains("not tap's"), "{changes:?}");

        let apply = Engine::new(&ctx, "fake", Mode::Apply).with_recovery(fast());
        let err = apply.converge(&fake, "fake/record/a", "a", &want_a, Some(theirs.clone())).await.unwrap_err();
        assert!(matches!(err, StepError::Conflict { .. }), "{err}");
        assert!(err.to_string().contains("fake/record/a") && err.to_string().contains("`dev`"), "{err}");
        // Not seen by a listing, then created: AWS says it exists, and it is not adopted.
        let err = apply.converge(&fake, "fake/record/a", "a", &want_a, None).await.unwrap_err();
        assert!(matches!(err, StepError::Conflict { .. }) && err.to_string().contains("`dev`"), "{err}");
        // Deletes, one by one or in a prune, leave them alone.
        assert!(!apply.delete(&fake, "fake/record/a", "a", &theirs).await.unwrap());
        let found = [("a", &theirs), ("b", &untagged)].map(|(n, r)| Owned {
            id: format!("fake/record/{n}"),
            name: n.into(),
            observed: r.clone(),
        });
        assert!(apply.prune(&fake, found.to_vec(), &BTreeSet::new()).await.unwrap().is_empty());
        assert!(apply.changes().is_empty(), "{:?}", apply.changes());
        assert_eq!(aws.records.lock().unwrap().get("a"), Some(&theirs), "dev's record is untouched");
        assert_eq!(aws.records.lock().unwrap().get("b"), Some(&untagged));
        let calls = aws.calls.lock().unwrap().clone();
        assert!(calls.iter().all(|c| !c.starts_with("update") && !c.starts_with("delete")), "{calls:?}");
    }

    /// A kind whose delete takes a list: what is not the environment's stays out of the batch.
    #[tokio::test]
    async fn a_batch_delete_leaves_out_what_is_not_the_environments() {
        let pairs = Pairs::default();
        pairs.names.lock().unwrap().extend(["a", "b", "theirs"].map(String::from));
        let doomed = pairs_named(&["a", "theirs", "b"]);
        let ctx = Context::new(Config::default());
        let engine = Engine::new(&ctx, "fake", Mode::Apply);
        let deleted = engine.delete_all(&pairs, &doomed.iter().collect::<Vec<_>>()).await.unwrap();
        assert_eq!(deleted, [true, false, true]);
        assert_eq!(pairs.calls.lock().unwrap().clone(), [vec!["a".to_owned(), "b".to_owned()]]);
        assert_eq!(pairs.names.lock().unwrap().iter().collect::<Vec<_>>(), ["theirs"]);
    }

    /// A create in two halves: the second ([`Engine::complete`]) runs the update to what the
    /// create listed and records nothing more; what it sets beyond that is recorded as an update.
    #[tokio::test]
    async fn a_creates_second_half_does_what_the_create_listed_and_records_the_rest() {
        let aws = FakeAws { drop_size_on_create: true, two_halves: true, ..FakeAws::default() };
        let (ctx, fake) = (ctx("dev"), Fake { aws: &aws });
        let mut want = record("dev", "a", 4);
        let plan = Engine::new(&ctx, "fake", Mode::Plan);
        assert_eq!(plan.converge(&fake, "fake/record/a", "a", &want, None).await.unwrap(), None);
        let made = record("dev", "a", 0);
        assert_eq!(plan.complete(&fake, "fake/record/a", "a", &want, made).await.unwrap().size, 0, "plan: nothing");

        let apply = Engine::new(&ctx, "fake", Mode::Apply);
        let made = apply.converge(&fake, "fake/record/a", "a", &want, None).await.unwrap().unwrap();
        assert_eq!(made.size, 0, "the first half leaves the size unset");
        let now = apply.complete(&fake, "fake/record/a", "a", &want, made).await.unwrap();
        assert_eq!(now.size, 4);
        assert_eq!(aws.calls.lock().unwrap().clone(), ["create a", "update a Resize(4)"]);
        assert_eq!(apply.changes(), plan.into_changes(), "the create listed all the second half did");

        // A second half that sets more than the create listed (its colour): recorded.
        want.name = "b".into();
        let made = apply.converge(&fake, "fake/record/b", "b", &want, None).await.unwrap().unwrap();
        want.colour = "red".into();
        apply.complete(&fake, "fake/record/b", "b", &want, made).await.unwrap();
        let changes = apply.into_changes();
        let colour = AttrChange::new("colour", Some("\"blue\"".into()), Some("\"red\"".into()));
        assert_eq!(changes.last(), Some(&Change::update("fake/record/b", "b", vec![colour])), "{changes:?}");
    }

    /// Records of a set that name each other: every release runs once, before any delete (and
    /// before `ready`), each listed on its delete as in plan; a release that finds its record
    /// gone is no error, and the gone record no change.
    #[tokio::test]
    async fn a_set_is_released_before_any_delete_once_each_and_a_gone_one_is_no_error() {
        let aws = FakeAws::default();
        let linked = |name: &str, links: &[&str]| Record {
            links: links.iter().map(|l| l.to_string()).collect(),
            ..record("dev", name, 1)
        };
        let (a, b, c) = (linked("a", &["b", "c"]), linked("b", &["a"]), linked("c", &["a"]));
        aws.records.lock().unwrap().extend([a.clone(), b.clone(), c.clone()].map(|r| (r.name.clone(), r)));
        let doomed =
            [a, b, c].map(|r| Owned { id: format!("fake/record/{}", r.name), name: r.name.clone(), observed: r });
        let doomed: Vec<&Owned<Record>> = doomed.iter().collect();
        let (ctx, fake) = (ctx("dev"), Fake { aws: &aws });
        let plan = Engine::new(&ctx, "fake", Mode::Plan);
        plan.delete_all(&fake, &doomed).await.unwrap();
        assert!(aws.calls.lock().unwrap().is_empty(), "plan calls nothing");
        let plan = plan.into_changes();
        assert_eq!(
            plan[0].attributes,
            [("b", None), ("c", None)].map(|(l, n)| AttrChange::new("link", Some(l.into()), n))
        );

        let apply = Engine::new(&ctx, "fake", Mode::Apply).with_hold_backoff(quick());
        let ready = async {
            fake.call("ready".into());
            Ok(())
        };
        assert_eq!(apply.delete_all_when(&fake, &doomed, ready).await.unwrap(), [true; 3]);
        let mut apply = apply.into_changes();
        apply.sort_by(|x, y| x.resource.cmp(&y.resource));
        assert_eq!(apply, plan, "apply lists what plan did, attribute by attribute");
        let calls = aws.calls.lock().unwrap().clone();
        assert_eq!(calls[3], "ready", "{calls:?}");
        let mut released = calls[..3].to_vec();
        released.sort();
        assert_eq!(released, ["release a", "release b", "release c"], "once each, before any delete: {calls:?}");
        assert_eq!(calls[4..].iter().filter(|c| c.starts_with("delete")).count(), 3, "{calls:?}");

        // Gone before its release: no error, no change.
        aws.calls.lock().unwrap().clear();
        let gone = Owned { id: "fake/record/x".into(), name: "x".into(), observed: linked("x", &["a"]) };
        let engine = Engine::new(&ctx, "fake", Mode::Apply);
        assert_eq!(engine.delete_all(&fake, &[&gone]).await.unwrap(), [false]);
        assert!(engine.changes().is_empty());
        assert_eq!(aws.calls.lock().unwrap().clone(), ["release x", "delete x"]);
    }

    #[test]
    fn the_owner_is_read_from_all_three_tags() {
        let tags = |pairs: &[(&str, &str)]| -> Vec<Tag> {
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
        };
        let full = tags(&[("Project", "tap"), ("ManagedBy", "tap"), ("Environment", "dev")]);
        assert_eq!(Owner::of(&full, "dev"), Owner::This);
        assert_eq!(Owner::of(&full, "x-dev"), Owner::Other("dev".into()));
        assert_eq!(Owner::of(&full[1..], "dev"), Owner::Unmanaged, "no Project=tap");
        assert_eq!(Owner::of(&full[..2], "dev"), Owner::Unmanaged, "no Environment");
        assert_eq!(Owner::of(&[], "dev"), Owner::Unmanaged);
    }

    #[tokio::test]
    async fn every_resource_is_reported_as_it_goes() {
        #[derive(Default)]
        struct Collect(Mutex<Vec<String>>);
        impl ProgressSink for Collect {
            fn event(&self, event: ProgressEvent<'_>) {
                self.0.lock().unwrap().push(event.to_string());
            }
        }
        let aws = FakeAws::default();
        aws.records.lock().unwrap().insert("a".into(), record("dev", "a", 1));
        let sink = Arc::new(Collect::default());
        let ctx = ctx("dev").with_progress(sink.clone());
        let (_, _) = run(&aws, &ctx, &[record("dev", "a", 1), record("dev", "b", 1)]).await;
        let events = sink.0.lock().unwrap().clone();
        assert!(events.contains(&"fake: found fake/record/a".to_owned()), "{events:?}");
        assert!(events.contains(&"fake: + fake/record/b …".to_owned()), "{events:?}");
        assert!(events.contains(&"fake: + fake/record/b (b)".to_owned()), "{events:?}");
    }
}
