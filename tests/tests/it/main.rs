//! The end-to-end tests of tap, as one test binary (one link of the AWS SDK instead of one per
//! file, as uv and rust-analyzer do): one module per area, all against one shared loopback
//! moto_server (see the `tests` crate's harness). Run one area with
//! `cargo test --workspace --test it -- <module>::`.

mod alarms;
mod alone;
mod base_steps;
mod cli;
mod cost_list;
mod destroy_killed;
mod drift;
mod ingress;
mod lock;
mod network;
mod operator;
mod ownership;
mod prune;
mod quotas;
mod reliability;
mod rollout;
mod security;
mod services;
mod strategies;
