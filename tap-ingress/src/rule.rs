//! The listener rule resource kind: one path rule per routed service with a path pattern, on the
//! listener that forwards (`/api/*` → the api-gateway target group), run by the resource engine
//! ([`tap_core::resource`]).
//!
//! - **diff**: conditions and where it forwards, converged with one `ModifyRule` that sends only
//!   what differs ([`RuleUpdate`]). A traffic-shifting service's rules forward to its two target
//!   groups; the weights between them are ECS's during and after a deployment, never "repaired".
//! - **find** (adoption after a create whose outcome is unknown, or `PriorityInUse`): the
//!   listener's rule at the same priority, only when it is the one wanted (same conditions and
//!   actions); another rule there is a conflict, reported as AWS's `PriorityInUse`.
//! - Rules are matched by priority; a rule at a priority no longer wanted is pruned when its tags
//!   say the environment owns it (see the step).

use async_trait::async_trait;
use tap_core::resource::{ActionError, Deleted, Diff, During, Owner, Resource};
use tap_core::AwsError;

use crate::api::{sorted_conditions, ElbApi, ObservedRule, RuleSpec, RuleUpdate};
use crate::{push_attr, show_actions, show_conditions};

/// What the config asks of one rule: its listener and its settings.
#[derive(Debug, Clone)]
pub struct RuleWant {
    /// The listener it is on.
    pub listener_arn: String,
    /// Priority, path pattern, target group and tags.
    pub spec: RuleSpec,
}

/// The listener rule kind over the ELBv2 seam.
pub struct RuleKind<'a> {
    api: &'a dyn ElbApi,
}

impl<'a> RuleKind<'a> {
    /// The kind over `api`.
    pub fn new(api: &'a dyn ElbApi) -> Self {
        RuleKind { api }
    }
}

#[async_trait]
impl Resource for RuleKind<'_> {
    type Desired = RuleWant;
    type Observed = ObservedRule;
    /// The wanted rule and what of it differs.
    type Update = RuleUpdate;
    const CREATE: &'static str = "CreateRule";

    fn diff(&self, want: &RuleWant, have: &ObservedRule) -> Result<Option<Diff<RuleUpdate>>, String> {
        let want_c = want.spec.conditions();
        let have_c = sorted_conditions(&have.conditions);
        let conditions = have_c != want_c;
        let actions = !want.spec.target.matches(&have.actions);
        let mut attrs = Vec::new();
        push_attr(&mut attrs, "conditions", conditions, show_conditions(&have_c), show_conditions(&want_c));
        push_attr(&mut attrs, "actions", actions, show_actions(&have.actions), show_actions(&want.spec.actions()));
        Ok((!attrs.is_empty()).then(|| Diff::new(RuleUpdate { spec: want.spec.clone(), conditions, actions }, attrs)))
    }

    /// Its load balancer's: found only on the listeners of this environment's own load balancer
    /// (a rule there that tap did not write is matched by priority and converged; the prune
    /// deletes only rules whose tags are the environment's).
    async fn owner(&self, _have: &ObservedRule, _env: &str) -> Result<Owner, ActionError> {
        Ok(Owner::This)
    }

    async fn find(&self, want: &RuleWant) -> Result<Option<ObservedRule>, AwsError> {
        let rules = self.api.list_rules(&want.listener_arn).await?;
        let spec = &want.spec;
        Ok(rules.into_iter().find(|r| {
            r.priority == Some(spec.priority)
                && sorted_conditions(&r.conditions) == spec.conditions()
                && spec.target.matches(&r.actions)
        }))
    }

    async fn create(&self, want: &RuleWant) -> Result<ObservedRule, AwsError> {
        let arn = self.api.create_rule(&want.listener_arn, &want.spec).await?;
        Ok(ObservedRule {
            arn,
            priority: Some(want.spec.priority),
            is_default: false,
            conditions: want.spec.conditions(),
            actions: want.spec.actions(),
        })
    }

    fn already_exists(&self, error: &AwsError) -> bool {
        error.is("PriorityInUse")
    }

    async fn update(&self, have: &ObservedRule, update: &RuleUpdate) -> Result<ObservedRule, ActionError> {
        self.api.modify_rule(&have.arn, update).await.during("ModifyRule")?;
        Ok(have.clone())
    }

    async fn delete(&self, have: &ObservedRule) -> Result<Deleted, ActionError> {
        self.api.delete_rule(&have.arn).await.during("DeleteRule")?;
        Ok(Deleted::Now)
    }
}
