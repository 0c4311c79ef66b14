//! `tap-network`: the network of a tap environment, converged through EC2.
//!
//! It builds the VPC (DNS support and DNS hostnames on), one public and one private subnet in each
//! of the first `network.az_count` available zones, an internet gateway attached to the VPC, one
//! Elastic IP + NAT gateway per zone (or a single one with `network.nat_gateways = "single"`), a
//! public route table (`0.0.0.0/0` → internet gateway) for the public subnets and one private
//! route table per zone (`0.0.0.0/0` → that zone's NAT gateway).
//!
//! - **Reads** from the [`Context`](tap_core::Context): only the config (`network.*`) and the
//!   environment's names and tags; it needs no other step's output.
//! - **Adds** [`NetworkOutputs`](tap_core::outputs::NetworkOutputs): the VPC id and the public and
//!   private subnets in zone order ([`PENDING`](tap_core::outputs::PENDING) ids during `plan` for
//!   what deploy would create).
//!
//! Every resource is found again by its tags (`Environment`, `ManagedBy`, `tap:component`), never
//! from local state, and runs on the resource engine ([`tap_core::resource`]), one module per
//! kind: [`vpc`] (its DNS attributes included), [`subnet`], [`internet_gateway`] (its attachment
//! included), [`elastic_ip`], [`nat_gateway`] and [`route_table`] (its default route and
//! associations included). What a create sets by calls after it is listed on the create's change
//! in plan and apply alike, so plan's changes are apply's, attribute by attribute. The step only
//! wires them: the desired values from the config ([`desired`]), what runs concurrently, what it
//! publishes, and the order of deletion (NAT gateways then their Elastic IPs, route tables, the
//! internet gateway and the subnets, the VPC), the engine retrying a delete EC2 refuses while
//! something still holds the resource. A deploy after an interrupted destroy waits, bounded and
//! saying why, for an Elastic IP a deleting NAT gateway still holds ([`elastic_ip`]).
//!
//! ```no_run
//! use std::sync::Arc;
//! use tap_core::{Config, Context, Step};
//! use tap_network::{NetworkStep, SdkEc2};
//!
//! # async fn run(client: aws_sdk_ec2::Client) -> Result<(), tap_core::StepError> {
//! let ctx = Context::new(Config::default());
//! let step = NetworkStep::new(Arc::new(SdkEc2(client)));
//! for change in step.plan(&ctx).await? {
//!     println!("{change}");
//! }
//! step.apply(&ctx).await?;
//! let network: tap_core::outputs::NetworkOutputs = ctx.get("example")?;
//! println!("VPC {}", network.vpc_id);
//! # Ok(())
//! # }
//! ```
//!
//! The desired layout is plain data, so what a setting means can be checked without AWS — here the
//! `single` NAT mode: one NAT gateway, and every private route table pointing at it.
//!
//! ```
//! use tap_core::{config::NatMode, naming::Names, Config};
//! use tap_network::desired::{DefaultRoute, Layout};
//!
//! let mut config = Config::default();
//! config.network.nat_gateways = NatMode::Single;
//! let azs = vec!["eu-west-1a".to_string(), "eu-west-1b".into(), "eu-west-1c".into()];
//! let layout = Layout::new(&config.network, &Names::new(&config), azs);
//! assert_eq!(layout.nats.len(), 1);
//! assert_eq!(layout.subnets.len(), 6);
//! assert!(layout.route_tables[1..].iter().all(|t| t.default_route == DefaultRoute::Nat(0)));
//! ```
//!
//! A complete run against a local emulator (it starts `moto_server`, deploys, plans again,
//! destroys): `cargo run -p tap-network --example network_alone`.
//!
//! For the quota preflight, [`quota`] says what a plan's changes add (VPC, internet gateway,
//! Elastic IPs, NAT gateways per zone) and counts what the account uses in the region.
//!
//! While it works, the step reports progress through [`Context::progress`](tap_core::Context::progress):
//! each resource found, each one created / updated / deleted, and the NAT gateway waits.
#![forbid(unsafe_code)]

pub mod api;
pub mod desired;
pub mod elastic_ip;
pub mod internet_gateway;
pub mod nat_gateway;
pub mod quota;
pub mod route_table;
mod sdk;
mod step;
pub mod subnet;
pub mod vpc;

#[cfg(test)]
mod tests;

pub use api::Ec2Api;
#[cfg(any(test, feature = "test-util"))]
pub use api::MockEc2Api;
pub use sdk::SdkEc2;
pub use step::{NetworkStep, Waits};

/// The step's name, in progress events and errors.
pub const STEP: &str = "network";
