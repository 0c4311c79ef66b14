//! The route table resource kind (`network/route-table/public`, `…/private-{n}`), run by the
//! resource engine ([`tap_core::resource`]).
//!
//! - **diff**: the default route (`0.0.0.0/0`) goes to its target (the internet gateway, or the
//!   zone's NAT gateway) and each of its subnets is associated with it. The typed update
//!   ([`RouteTableUpdate`]) names each call: `CreateRoute` or `ReplaceRoute`, `AssociateRouteTable`
//!   for a subnet associated nowhere, `ReplaceRouteTableAssociation` for one associated with
//!   another table of the VPC (the step tells the kind which, [`RouteTableWant::elsewhere`]).
//! - **create**: `CreateRouteTable` with a client token, tagged at creation; its route and
//!   associations are set by the engine's settle after create, and listed on the create's change
//!   ([`Resource::create_attributes`]), in plan and apply alike.
//! - **update**: a route or association whose answer was lost (or answered
//!   `RouteAlreadyExists` / `Resource.AlreadyAssociated`) is checked by reading the table again.
//! - **delete**: disassociate its subnets, then `DeleteRouteTable`; held while EC2 answers
//!   `DependencyViolation`. The VPC's main route table is never one of the environment's (it goes
//!   with the VPC).
//! - **owner**: from the table's tags.

use std::collections::BTreeMap;

use async_trait::async_trait;
use futures::future::try_join_all;
use tap_core::idempotent::{create_or_adopt, Recovery};
use tap_core::naming::Tag;
use tap_core::outputs::is_known;
use tap_core::resource::{ActionError, Deleted, Diff, During, Owner, Resource};
use tap_core::{AttrChange, AwsError};

use crate::api::{Ec2Api, ObservedAssociation, ObservedRoute, ObservedRouteTable, RouteTarget, Tagged};
use crate::desired::DEFAULT_ROUTE;

/// A route table the config asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteTableWant {
    /// Logical id.
    pub component: String,
    /// The VPC it belongs to.
    pub vpc_id: String,
    /// `ClientToken` of its create.
    pub client_token: String,
    /// Tags to create it with.
    pub tags: Vec<Tag>,
    /// Target of `0.0.0.0/0`.
    pub target: RouteTarget,
    /// The subnets associated with it.
    pub subnets: Vec<String>,
    /// Subnet → (the other table of the VPC it is associated with, that association's id).
    pub elsewhere: BTreeMap<String, (String, String)>,
}

/// How the default route changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteChange {
    /// `CreateRoute`: the table has none.
    Create,
    /// `ReplaceRoute`: it points elsewhere.
    Replace,
}

/// What an update of a route table does, each part only when it differs.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RouteTableUpdate {
    /// The default route to its target.
    pub route: Option<(RouteChange, RouteTarget)>,
    /// Subnets to associate (`AssociateRouteTable`).
    pub associate: Vec<String>,
    /// (association id, subnet) to move here (`ReplaceRouteTableAssociation`).
    pub relocate: Vec<(String, String)>,
}

/// The route table kind over the EC2 seam.
pub struct RouteTableKind<'a> {
    api: &'a dyn Ec2Api,
    env: &'a str,
    recovery: Recovery,
}

impl<'a> RouteTableKind<'a> {
    /// The kind over `api` for environment `env`; a route or association with an unknown outcome
    /// is looked for within `recovery`.
    pub fn new(api: &'a dyn Ec2Api, env: &'a str, recovery: Recovery) -> Self {
        RouteTableKind { api, env, recovery }
    }

    /// The table `id` as AWS has it now.
    async fn current(&self, vpc_id: &str, id: &str) -> Result<Option<ObservedRouteTable>, AwsError> {
        Ok(self.api.find_route_tables(self.env, Some(vpc_id)).await?.into_iter().find(|t| t.id == id))
    }
}

fn associated<'t>(table: &'t ObservedRouteTable, subnet: &str) -> Option<&'t ObservedAssociation> {
    table.associations.iter().find(|a| !a.main && a.subnet_id.as_deref() == Some(subnet))
}

/// The update turning `have` (`None`: a table to create) into `want`, and its attributes.
fn changes(want: &RouteTableWant, have: Option<&ObservedRouteTable>) -> (RouteTableUpdate, Vec<AttrChange>) {
    let mut update = RouteTableUpdate::default();
    let mut attrs = Vec::new();
    let attribute = format!("route {DEFAULT_ROUTE}");
    let target = Some(want.target.id().to_owned());
    match have.and_then(|t| t.routes.iter().find(|r| r.destination == DEFAULT_ROUTE)) {
        None => {
            update.route = Some((RouteChange::Create, want.target.clone()));
            attrs.push(AttrChange::new(attribute, None, target));
        }
        Some(route) if route.target.as_ref() != Some(&want.target) => {
            update.route = Some((RouteChange::Replace, want.target.clone()));
            attrs.push(AttrChange::new(attribute, route.target.as_ref().map(|t| t.id().to_owned()), target));
        }
        Some(_) => {}
    }
    for subnet in &want.subnets {
        if have.is_some_and(|t| associated(t, subnet).is_some()) {
            continue;
        }
        let other = want.elsewhere.get(subnet).filter(|(table, _)| have.is_none_or(|own| own.id != *table));
        match other {
            Some((table, association)) if is_known(subnet) => {
                update.relocate.push((association.clone(), subnet.clone()));
                attrs.push(AttrChange::new(
                    "association",
                    Some(format!("{subnet} (with {table})")),
                    Some(subnet.clone()),
                ));
            }
            _ => {
                update.associate.push(subnet.clone());
                attrs.push(AttrChange::new("association", None, Some(subnet.clone())));
            }
        }
    }
    (update, attrs)
}

#[async_trait]
impl Resource for RouteTableKind<'_> {
    type Desired = RouteTableWant;
    type Observed = ObservedRouteTable;
    type Update = RouteTableUpdate;
    const CREATE: &'static str = "CreateRouteTable";

    fn diff(&self, want: &RouteTableWant, have: &ObservedRouteTable) -> Result<Option<Diff<RouteTableUpdate>>, String> {
        let (update, attrs) = changes(want, Some(have));
        Ok((!attrs.is_empty()).then(|| Diff::new(update, attrs)))
    }

    fn create_attributes(&self, want: &RouteTableWant) -> Vec<AttrChange> {
        changes(want, None).1
    }

    async fn find(&self, want: &RouteTableWant) -> Result<Option<ObservedRouteTable>, AwsError> {
        let found = self.api.find_route_tables(self.env, Some(&want.vpc_id)).await?;
        Ok(found.into_iter().find(|t| t.component() == Some(want.component.as_str())))
    }

    async fn owner(&self, have: &ObservedRouteTable, env: &str) -> Result<Owner, ActionError> {
        Ok(have.owner(env))
    }

    async fn create(&self, want: &RouteTableWant) -> Result<ObservedRouteTable, AwsError> {
        let id = self.api.create_route_table(&want.vpc_id, &want.client_token, &want.tags).await?;
        Ok(ObservedRouteTable {
            id,
            vpc_id: want.vpc_id.clone(),
            routes: vec![],
            associations: vec![],
            tags: want.tags.clone(),
        })
    }

    async fn update(
        &self,
        have: &ObservedRouteTable,
        update: &RouteTableUpdate,
    ) -> Result<ObservedRouteTable, ActionError> {
        let mut now = have.clone();
        let (vpc_id, table_id) = (have.vpc_id.as_str(), have.id.as_str());
        if let Some((change, target)) = &update.route {
            match change {
                RouteChange::Create => {
                    let routed = || async {
                        let t = self.current(vpc_id, table_id).await?;
                        let there = t.is_some_and(|t| {
                            t.routes.iter().any(|r| r.destination == DEFAULT_ROUTE && r.target.as_ref() == Some(target))
                        });
                        Ok(there.then_some(()))
                    };
                    create_or_adopt(
                        table_id,
                        self.recovery,
                        |e| e.is("RouteAlreadyExists"),
                        routed,
                        || self.api.create_route(table_id, DEFAULT_ROUTE, target),
                    )
                    .await
                    .during("CreateRoute")?
                }
                RouteChange::Replace => {
                    self.api.replace_route(table_id, DEFAULT_ROUTE, target).await.during("ReplaceRoute")?
                }
            }
            now.routes.retain(|r| r.destination != DEFAULT_ROUTE);
            now.routes.push(ObservedRoute { destination: DEFAULT_ROUTE.into(), target: Some(target.clone()) });
        }
        let associations = try_join_all(update.associate.iter().map(|subnet| async move {
            let found = || async {
                let t = self.current(vpc_id, table_id).await?;
                Ok(t.and_then(|t| associated(&t, subnet).map(|a| a.id.clone())))
            };
            let id = create_or_adopt(
                table_id,
                self.recovery,
                |e| e.is("Resource.AlreadyAssociated"),
                found,
                || self.api.associate_route_table(table_id, subnet),
            )
            .await
            .during("AssociateRouteTable")?;
            Ok::<_, ActionError>(ObservedAssociation { id, subnet_id: Some(subnet.clone()), main: false })
        }));
        let relocated = try_join_all(update.relocate.iter().map(|(association, subnet)| async move {
            let id = self
                .api
                .replace_route_table_association(association, table_id)
                .await
                .during("ReplaceRouteTableAssociation")?;
            Ok::<_, ActionError>(ObservedAssociation { id, subnet_id: Some(subnet.clone()), main: false })
        }));
        let (associated, relocated) = tokio::try_join!(associations, relocated)?;
        now.associations.extend(associated.into_iter().chain(relocated));
        Ok(now)
    }

    async fn delete(&self, have: &ObservedRouteTable) -> Result<Deleted, ActionError> {
        try_join_all(have.associations.iter().filter(|a| !a.main).map(|a| async move {
            match self.api.disassociate_route_table(&a.id).await {
                Err(e) if e.is_not_found() => Ok(()),
                other => other.during("DisassociateRouteTable"),
            }
        }))
        .await?;
        self.api.delete_route_table(&have.id).await.during("DeleteRouteTable")?;
        Ok(Deleted::Now)
    }

    fn held(&self, error: &AwsError) -> bool {
        error.is("DependencyViolation")
    }
}
