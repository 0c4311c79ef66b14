//! The security group resource kind, run by the resource engine ([`tap_core::resource`]).
//!
//! - **diff**: the rules converge exactly, as one typed [`RuleFix`] (what to authorize and revoke,
//!   ingress and egress): missing rules are authorized, any other rule (someone opened port 22) is
//!   revoked; egress is the default "all traffic to anywhere" rule. The attributes plan prints are
//!   derived from the same fix apply runs.
//! - **find** (adoption after a create whose outcome is unknown, or `InvalidGroup.Duplicate`): the
//!   environment's groups in the VPC, by `tap:component` tag, then by name.
//! - **create**: the group, tagged at creation (AWS gives it the default egress rule); its rules
//!   are listed with the create and added by the engine's second half of the create
//!   ([`tap_core::resource::Engine::complete`]) once every group's id is known (rules reference
//!   each other's groups, maybe in a cycle).
//! - Authorizing is done exactly once: after a lost answer, or `InvalidPermission.Duplicate`, the
//!   group is read again and the rules count as added when all of them are there.
//!
//! - **release** (before any group of a set is deleted, listed on each delete): the rules by
//!   which the group references other groups, revoked, so that no group of the set holds another.
//! - **delete**: `DeleteSecurityGroup`; while AWS answers `DependencyViolation` (network
//!   interfaces still released) the engine sends it again, backing off.

use std::collections::BTreeSet;

use async_trait::async_trait;
use tap_core::idempotent::{create_or_adopt, Recovery};
use tap_core::naming::Tag;
use tap_core::resource::{ActionError, Deleted, Diff, During, Owner, Resource};
use tap_core::{AttrChange, AwsError};

use crate::ec2::{Ec2Api, ObservedGroup};
use crate::rule::{Rule, RuleSource};

/// What the config asks of one group.
#[derive(Debug, Clone)]
pub struct GroupWant {
    /// Logical id (`security/sg/…`).
    pub component: String,
    /// Group name.
    pub name: String,
    /// Description (set at creation).
    pub description: String,
    /// The VPC.
    pub vpc_id: String,
    /// Tags set at creation.
    pub tags: Vec<Tag>,
    /// The ingress rules, each with the label plan shows (`tcp 3000 from tap-alb-sg-dev`); empty
    /// while the ids of the groups they reference are not known yet.
    pub ingress: Vec<(Rule, String)>,
}

/// The typed update of a group's rules: plan prints it, apply runs exactly it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuleFix {
    /// Ingress rules to authorize.
    pub authorize: Vec<Rule>,
    /// Ingress rules to revoke.
    pub revoke: Vec<Rule>,
    /// Egress rules to authorize.
    pub authorize_egress: Vec<Rule>,
    /// Egress rules to revoke.
    pub revoke_egress: Vec<Rule>,
}

impl RuleFix {
    /// The revokes of the rules by which `group` references other groups (its release).
    fn release(group: &ObservedGroup) -> RuleFix {
        let naming_groups = |rules: &[Rule]| rules.iter().filter(|r| r.references_group()).cloned().collect();
        RuleFix {
            revoke: naming_groups(&group.ingress),
            revoke_egress: naming_groups(&group.egress),
            ..Default::default()
        }
    }

    /// The attributes it changes, but the authorized ingress rules (whose labels name their peers).
    fn attributes_but_authorize(&self) -> Vec<AttrChange> {
        let revoke = self.revoke.iter().map(|r| AttrChange::new("ingress", Some(r.ingress_label()), None));
        let add_egress = self.authorize_egress.iter().map(|r| AttrChange::new("egress", None, Some(r.egress_label())));
        let revoke_egress = self.revoke_egress.iter().map(|r| AttrChange::new("egress", Some(r.egress_label()), None));
        revoke.chain(add_egress).chain(revoke_egress).collect()
    }
}

/// The one egress rule every group has: all traffic to anywhere.
pub fn default_egress() -> Rule {
    Rule::all(RuleSource::Cidr("0.0.0.0/0".into()))
}

/// The security group kind over the EC2 seam, for environment `env`.
pub struct SecurityGroupKind<'a> {
    api: &'a dyn Ec2Api,
    env: &'a str,
}

impl<'a> SecurityGroupKind<'a> {
    /// The kind over `api`.
    pub fn new(api: &'a dyn Ec2Api, env: &'a str) -> Self {
        SecurityGroupKind { api, env }
    }

    /// Adds ingress (or egress) rules exactly once (see the module docs).
    async fn authorize_once(&self, group_id: &str, rules: &[Rule], egress: bool) -> Result<(), AwsError> {
        let present = || async {
            let groups = self.api.describe_security_groups(self.env, None).await?;
            Ok(groups.into_iter().find(|g| g.id == group_id).and_then(|g| {
                let have = if egress { g.egress } else { g.ingress };
                rules.iter().all(|r| have.contains(r)).then_some(())
            }))
        };
        create_or_adopt(
            group_id,
            Recovery::default(),
            |e| e.is("InvalidPermission.Duplicate"),
            present,
            || async {
                if egress {
                    self.api.authorize_egress(group_id, rules).await
                } else {
                    self.api.authorize_ingress(group_id, rules).await
                }
            },
        )
        .await
    }
}

#[async_trait]
impl Resource for SecurityGroupKind<'_> {
    type Desired = GroupWant;
    type Observed = ObservedGroup;
    type Update = RuleFix;
    const CREATE: &'static str = "CreateSecurityGroup";

    /// From its tags (DescribeSecurityGroups reports them). Groups are found in the
    /// environment's own VPC, so another environment's group of the same name is not seen here;
    /// one without tap's tags (made by hand in this VPC) is a conflict.
    async fn owner(&self, have: &ObservedGroup, env: &str) -> Result<Owner, ActionError> {
        Ok(Owner::of(&have.tags, env))
    }

    fn diff(&self, want: &GroupWant, have: &ObservedGroup) -> Result<Option<Diff<RuleFix>>, String> {
        let desired_egress = [default_egress()];
        let present: BTreeSet<&Rule> = have.ingress.iter().collect();
        let wanted: BTreeSet<&Rule> = want.ingress.iter().map(|(r, _)| r).collect();
        let authorize: Vec<&(Rule, String)> = want.ingress.iter().filter(|(r, _)| !present.contains(r)).collect();
        let revoke: Vec<Rule> =
            have.ingress.iter().filter(|r| !wanted.contains(r)).cloned().collect::<BTreeSet<_>>().into_iter().collect();
        let present_egress: BTreeSet<&Rule> = have.egress.iter().collect();
        let authorize_egress: Vec<Rule> =
            desired_egress.iter().filter(|r| !present_egress.contains(r)).cloned().collect();
        let revoke_egress: Vec<Rule> = have
            .egress
            .iter()
            .filter(|r| !desired_egress.contains(r))
            .cloned()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();

        let labels = authorize.iter().map(|(_, label)| label.clone());
        let attributes: Vec<AttrChange> = labels.map(|l| AttrChange::new("ingress", None, Some(l))).collect();
        let fix = RuleFix {
            authorize: authorize.into_iter().map(|(r, _)| r.clone()).collect(),
            revoke,
            authorize_egress,
            revoke_egress,
        };
        let attributes = [attributes, fix.attributes_but_authorize()].concat();
        Ok((!attributes.is_empty()).then(|| Diff::new(fix, attributes)))
    }

    async fn find(&self, want: &GroupWant) -> Result<Option<ObservedGroup>, AwsError> {
        let groups = self.api.describe_security_groups(self.env, Some(want.vpc_id.clone())).await?;
        let found = groups
            .iter()
            .find(|g| g.component.as_deref() == Some(want.component.as_str()))
            .or_else(|| groups.iter().find(|g| g.name == want.name));
        Ok(found.cloned())
    }

    async fn create(&self, want: &GroupWant) -> Result<ObservedGroup, AwsError> {
        let id = self.api.create_security_group(&want.name, &want.description, &want.vpc_id, &want.tags).await?;
        Ok(ObservedGroup {
            id,
            name: want.name.clone(),
            vpc_id: want.vpc_id.clone(),
            component: Some(want.component.clone()),
            tags: want.tags.clone(),
            ingress: vec![],
            egress: vec![default_egress()],
        })
    }

    fn already_exists(&self, error: &AwsError) -> bool {
        error.is("InvalidGroup.Duplicate")
    }

    /// The rules of `want`: the step adds them to a created group once every group's id is known
    /// (rules reference each other's groups), so the create lists them.
    fn create_attributes(&self, want: &GroupWant) -> Vec<AttrChange> {
        want.ingress.iter().map(|(_, label)| AttrChange::new("ingress", None, Some(label.clone()))).collect()
    }

    /// Not here: the rules of a new group name other groups, some still being created; the step
    /// has the engine add them once every id is known ([`crate::groups::converge`]).
    fn settle_after_create(&self) -> bool {
        false
    }

    /// `DependencyViolation`: network interfaces (of a load balancer or tasks just deleted) or
    /// another group's rule still hold the group; they are released asynchronously.
    fn held(&self, error: &AwsError) -> bool {
        error.is("DependencyViolation")
    }

    async fn update(&self, have: &ObservedGroup, fix: &RuleFix) -> Result<ObservedGroup, ActionError> {
        let id = have.id.as_str();
        let authorize = async {
            if fix.authorize.is_empty() {
                return Ok(());
            }
            self.authorize_once(id, &fix.authorize, false).await.during("AuthorizeSecurityGroupIngress")
        };
        let revoke = async {
            if fix.revoke.is_empty() {
                return Ok(());
            }
            self.api.revoke_ingress(id, &fix.revoke).await.during("RevokeSecurityGroupIngress")
        };
        let authorize_egress = async {
            if fix.authorize_egress.is_empty() {
                return Ok(());
            }
            self.authorize_once(id, &fix.authorize_egress, true).await.during("AuthorizeSecurityGroupEgress")
        };
        let revoke_egress = async {
            if fix.revoke_egress.is_empty() {
                return Ok(());
            }
            self.api.revoke_egress(id, &fix.revoke_egress).await.during("RevokeSecurityGroupEgress")
        };
        tokio::try_join!(authorize, revoke, authorize_egress, revoke_egress)?;
        Ok(have.clone())
    }

    /// Its rules naming other groups (`- ingress: tcp 8080 from sg-…`).
    fn release_attributes(&self, have: &ObservedGroup) -> Vec<AttrChange> {
        RuleFix::release(have).attributes_but_authorize()
    }

    /// Revokes them, with the update's calls.
    async fn release(&self, have: &ObservedGroup) -> Result<(), ActionError> {
        self.update(have, &RuleFix::release(have)).await.map(drop)
    }

    async fn delete(&self, have: &ObservedGroup) -> Result<Deleted, ActionError> {
        self.api.delete_security_group(&have.id).await.during("DeleteSecurityGroup")?;
        Ok(Deleted::Now)
    }
}
