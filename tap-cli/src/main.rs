//! `tap`: deploys, plans, destroys and inspects a complete ECS Fargate platform on AWS.
//!
//! Results (plans, outputs, status, summaries) go to stdout — text, or one JSON document with
//! `--output json` — and progress and logs go to stderr.
//!
//! - [`aws`]: loads the AWS config (the standard chain) into the session the steps build clients from.
//! - [`cli`]: the arguments, the config overrides they make, the log subscriber.
//! - [`commands`]: load and validate the config, build the clients and steps, run, render.
//! - [`runner`]: the steps as a dependency graph (concurrent where independent; reversed for
//!   destroy), telling a [`runner::RunObserver`] when each step starts and ends.
//! - [`progress`]: the live (indicatif) or plain-line progress view and the "unchanged" count.
//! - [`render`]: plan / deploy / destroy results as grouped text or the JSON document.
//! - [`errors`]: errors with the resource, action, AWS code and message, and hints.
//! - [`logs`]: `tap logs`; [`lock`]: the environment lock; [`steps`]: the registered steps.
//! - [`quotas`]: the quota preflight of plan and deploy (what the plan adds, in use, the limits).
//! - [`cost`]: the pricing table and the monthly estimate; [`list`]: `tap list`.
//! - [`version`]: `tap --version` (commit, dirty flag, target); [`manual`]: completions and man pages.
//!
//! ```sh
//! tap --env dev --region eu-west-1 plan --detailed-exitcode   # 0: nothing to do, 2: changes
//! tap --env dev --output json deploy --no-wait | jq .summary
//! tap --env dev logs frontend --since 30m --follow
//! tap completions zsh > "${fpath[1]}/_tap"
//! ```
#![forbid(unsafe_code)]

mod aws;
mod cli;
mod commands;
mod cost;
mod errors;
mod list;
mod lock;
mod logs;
mod manual;
mod progress;
mod quotas;
mod render;
mod runner;
mod steps;
mod version;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        // clap's own version line has no commit; ours has, and honours `--output json`.
        Err(e) if e.kind() == clap::error::ErrorKind::DisplayVersion => {
            version::print(version::wants_json(std::env::args_os()));
            return ExitCode::SUCCESS;
        }
        Err(e) => e.exit(),
    };
    cli::init_logging(&cli);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        match commands::run(&cli).await {
            Ok(code) => code,
            Err(e) => {
                commands::report_error(&cli, &e);
                ExitCode::FAILURE
            }
        }
    })
}
