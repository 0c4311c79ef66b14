//! `tap-core`: everything the tap concern crates share, and no AWS resource logic.
//!
//! - [`config`]: the typed [`Config`] (every setting of the SPEC as a default), layered with figment
//!   (defaults → `tap.toml` → `TAP_*` env vars → flags) and validated before any AWS call.
//! - [`naming`]: the one place that decides every resource name and tag set of an environment.
//! - [`step`]: the [`Step`] contract (plan / apply / destroy) and the [`Change`] model plans are made of.
//! - [`context`]: the [`Context`] steps read their inputs from and write their outputs to.
//! - [`outputs`]: the plain data steps hand each other (subnet ids, SG ids, ARNs, …).
//! - [`aws`]: the [`aws::AwsSession`] each concern crate builds its own SDK clients from (with
//!   [`sdk_client!`]): the SDK config, an interceptor that counts every AWS call
//!   ([`aws::CallCounter`]) and, for a read-only pass, a [`aws::WriteGuard`] that refuses every
//!   mutating call before it is sent. tap-core depends on no `aws-sdk-*` service crate.
//! - [`error`]: [`StepError`] and [`AwsError`], which keep AWS's error code and message.
//! - [`wait`]: bounded polling with backoff for AWS's asynchronous operations.
//! - [`idempotent`]: creates that happen exactly once even when AWS's answer is lost.
//! - [`fanout`]: per-service work started in order, a bounded number at a time.
//! - [`progress`]: live progress events steps may report through the [`Context`].
//! - [`quota`]: the quotas the preflight checks (codes, names, documented defaults), what a run
//!   needs and what is in use, as plain data; the per-load-balancer limits a config can break.
//! - [`resource`]: the resource engine — one find / compare / create / update / delete / prune life
//!   cycle that every resource kind of every concern crate runs through.
//!
//! ```
//! use tap_core::{Config, naming::Names};
//! let mut config = Config::default();
//! config.environment = "dev".into();
//! config.validate().unwrap();
//! let names = Names::new(&config);
//! assert_eq!(names.cluster(), "tap-cluster-dev");
//! ```
#![forbid(unsafe_code)]

pub mod aws;
pub mod config;
pub mod context;
pub mod error;
pub mod fanout;
pub mod idempotent;
pub mod naming;
pub mod outputs;
pub mod pace;
pub mod progress;
pub mod quota;
pub mod resource;
pub mod step;
pub mod strategy;
pub mod throttle;
pub mod wait;

pub use config::Config;
pub use context::Context;
pub use error::{AwsError, StepError};
pub use step::{Action, AttrChange, Change, Mode, Step};
