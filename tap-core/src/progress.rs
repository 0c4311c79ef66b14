//! Live progress events a step MAY report while it works, for progress views (the `tap` binary
//! draws them with indicatif on a terminal, or as plain lines otherwise).
//!
//! Reporting is optional: the `tap` runner itself reports when each step starts and finishes and
//! every change the step returns. A step that also reports as it goes gives a finer live view
//! (which resource is being created right now, what it is waiting for) and lets the final summary
//! count the resources that were checked and left unchanged.
//!
//! Steps never depend on how events are shown: they call [`Context::progress`], which does
//! nothing when no sink is installed (as in unit tests).
//!
//! ```
//! use std::sync::{Arc, Mutex};
//! use tap_core::progress::{ProgressEvent, ProgressSink};
//! use tap_core::{Action, Config, Context};
//!
//! #[derive(Default)]
//! struct Collect(Mutex<Vec<String>>);
//! impl ProgressSink for Collect {
//!     fn event(&self, event: ProgressEvent<'_>) {
//!         self.0.lock().unwrap().push(event.to_string());
//!     }
//! }
//!
//! let sink = Arc::new(Collect::default());
//! let ctx = Context::new(Config::default()).with_progress(sink.clone());
//! ctx.progress(ProgressEvent::Working { step: "network", resource: "network/vpc", action: Action::Create });
//! ctx.progress(ProgressEvent::Found { step: "network", resource: "network/igw" });
//! assert_eq!(*sink.0.lock().unwrap(), ["network: + network/vpc …", "network: found network/igw"]);
//! ```
//!
//! [`Context::progress`]: crate::Context::progress

use std::fmt;

use crate::step::{Action, Change};

/// Something a step is doing or has done.
#[derive(Debug, Clone, Copy)]
pub enum ProgressEvent<'a> {
    /// The step starts a create, update or delete of `resource` (apply mode), which may take a
    /// while.
    Working {
        /// The reporting step, e.g. `network`.
        step: &'a str,
        /// Logical id, e.g. `network/nat/1`.
        resource: &'a str,
        /// What is being done.
        action: Action,
    },
    /// A resource was created, updated or deleted (in plan mode: would be).
    Changed {
        /// The reporting step.
        step: &'a str,
        /// The change.
        change: &'a Change,
    },
    /// A resource exists in AWS and was compared with the config. Unless a [`Changed`] event (or a
    /// returned change) names it too, it is unchanged.
    ///
    /// [`Changed`]: ProgressEvent::Changed
    Found {
        /// The reporting step.
        step: &'a str,
        /// Logical id.
        resource: &'a str,
    },
    /// The step waits for AWS (a NAT gateway becoming available, a load balancer being deleted…).
    Waiting {
        /// The reporting step.
        step: &'a str,
        /// What it waits for, for people.
        what: &'a str,
    },
}

impl ProgressEvent<'_> {
    /// The reporting step.
    pub fn step(&self) -> &str {
        match self {
            ProgressEvent::Working { step, .. }
            | ProgressEvent::Changed { step, .. }
            | ProgressEvent::Found { step, .. }
            | ProgressEvent::Waiting { step, .. } => step,
        }
    }
}

impl fmt::Display for ProgressEvent<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProgressEvent::Working { step, resource, action } => write!(f, "{step}: {} {resource} …", action.symbol()),
            ProgressEvent::Changed { step, change } => {
                write!(f, "{step}: {} {} ({})", change.action.symbol(), change.resource, change.name)
            }
            ProgressEvent::Found { step, resource } => write!(f, "{step}: found {resource}"),
            ProgressEvent::Waiting { step, what } => write!(f, "{step}: waiting for {what}"),
        }
    }
}

/// Receives progress events; must be cheap and must not block (it is called from inside steps).
pub trait ProgressSink: Send + Sync {
    /// One event.
    fn event(&self, event: ProgressEvent<'_>);
}
