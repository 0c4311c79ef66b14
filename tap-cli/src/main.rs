//! `tap`: deploys, plans, destroys and inspects a complete ECS Fargate platform on AWS.
//!
//! Results (plans, outputs, status, summaries) go to stdout — text, or one JSON document with
//! `--output json` — and logs go to stderr through `tracing`.
#![forbid(unsafe_code)]

mod cli;
mod commands;
mod errors;
mod lock;
mod logs;
mod progress;
mod render;
mod runner;
mod steps;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
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
