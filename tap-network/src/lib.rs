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
//! from local state; `destroy` finds everything of the environment the same way and removes it in
//! dependency order, waiting for NAT gateway deletion and retrying while EC2 still reports
//! dependencies (network interfaces being released).
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
#![forbid(unsafe_code)]

pub mod api;
pub mod desired;
mod sdk;
mod step;

#[cfg(test)]
mod tests;

pub use api::Ec2Api;
#[cfg(any(test, feature = "test-util"))]
pub use api::MockEc2Api;
pub use sdk::SdkEc2;
pub use step::{NetworkStep, Waits};
