//! The commands: load and validate the config (before any AWS call), build the clients and steps,
//! run them, and render the result.

use std::collections::BTreeMap;
use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use serde::Serialize;
use serde_json::{json, Value};
use tap_core::aws::{AwsClients, CallCounts};
use tap_core::outputs::{is_known, ClusterOutputs, IngressOutputs, NetworkOutputs, RegistryOutputs, ServicesOutputs};
use tap_core::{Action, Change, Config, Context};

use crate::cli::{Cli, Command, OutputFormat};
use crate::lock::EnvLock;
use crate::runner::{Operation, RunError, Runner, StepReport};
use crate::steps;

/// Runs the command line; the exit code on success (plan's detailed exit code may be 2).
pub async fn run(cli: &Cli) -> Result<ExitCode> {
    let config = Config::load(cli.config.as_deref(), cli.overrides())?;
    if let Command::Destroy { yes: false, .. } = cli.command {
        confirm_destroy(&config.environment)?;
    }
    let clients = AwsClients::load(&config.aws).await;
    let region = clients.region().map(str::to_owned).context(
        "no AWS region: pass --region, set AWS_REGION, or set `aws.region` in tap.toml (or a region in your profile)",
    )?;
    let ctx = Context::new(config).with_region(region);
    let runner = Runner::new(steps::all(&clients))?;
    let start = Instant::now();
    let lock = match cli.command {
        Command::Deploy { lock_timeout, .. } | Command::Destroy { lock_timeout, .. } => {
            let lock = EnvLock::new(&clients, ctx.names.env(), command_name(&cli.command));
            lock.acquire(Duration::from_secs(lock_timeout)).await?;
            Some(lock)
        }
        _ => None,
    };
    let result = tokio::select! {
        result = execute(cli, &ctx, &runner, &clients) => result,
        _ = tokio::signal::ctrl_c() => {
            // No local state exists: stopping between calls leaves only what AWS already holds,
            // which the next deploy converges and destroy removes.
            Err(anyhow::anyhow!("interrupted: run `tap deploy` again to finish, or `tap destroy` to remove what was made"))
        }
    };
    if let Some(lock) = lock {
        if let Err(e) = lock.release().await {
            tracing::warn!(error = %e, "could not release the environment lock; `tap unlock` removes it");
        }
    }
    if cli.stats {
        print_stats(&clients.counter.snapshot(), start.elapsed().as_millis());
    }
    result
}

async fn execute(cli: &Cli, ctx: &Context, runner: &Runner, clients: &AwsClients) -> Result<ExitCode> {
    let start = Instant::now();
    match &cli.command {
        Command::Deploy { .. } => {
            let reports = run_steps(runner, ctx, Operation::Apply).await?;
            render_changes(cli, ctx, "deploy", &reports, clients, start)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Plan { detailed_exitcode, .. } => {
            let reports = run_steps(runner, ctx, Operation::Plan).await?;
            render_changes(cli, ctx, "plan", &reports, clients, start)?;
            let changed = reports.iter().any(|r| !r.changes.is_empty());
            Ok(if *detailed_exitcode && changed { ExitCode::from(2) } else { ExitCode::SUCCESS })
        }
        Command::Destroy { .. } => {
            let reports = run_steps(runner, ctx, Operation::Destroy).await?;
            render_changes(cli, ctx, "destroy", &reports, clients, start)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Outputs => {
            run_steps(runner, ctx, Operation::Plan).await?;
            let outputs = stack_outputs(ctx)?;
            match cli.output {
                OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&outputs)?),
                OutputFormat::Text => {
                    for (k, v) in outputs.as_object().into_iter().flatten() {
                        let shown = match v {
                            Value::String(s) => s.clone(),
                            other => other.to_string(),
                        };
                        println!("{k} = {shown}");
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Unlock => {
            let lock = EnvLock::new(clients, ctx.names.env(), "unlock");
            match lock.holder().await? {
                Some(holder) => {
                    lock.release().await?;
                    println!(
                        "Removed the lock of environment `{}` held by {} ({} s old).",
                        ctx.names.env(),
                        holder.holder,
                        holder.age_seconds
                    );
                }
                None => println!("Environment `{}` is not locked.", ctx.names.env()),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Status => {
            let api = tap_services::SdkServices::from_clients(clients);
            let services = tap_services::status::status(&api, ctx).await?;
            match cli.output {
                OutputFormat::Json => {
                    let doc = json!({"environment": ctx.names.env(), "services": services});
                    println!("{}", serde_json::to_string_pretty(&doc)?);
                }
                OutputFormat::Text => print!("{}", tap_services::status::render_table(ctx.names.env(), &services)),
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn run_steps(runner: &Runner, ctx: &Context, op: Operation) -> Result<Vec<StepReport>> {
    runner.run(ctx, op).await.map_err(|e: RunError| {
        for report in &e.completed {
            for change in &report.changes {
                tracing::info!(step = report.step, "{change}");
            }
        }
        anyhow::Error::new(e)
    })
}

/// Counts of created, updated and deleted resources.
#[derive(Debug, Default, Serialize)]
struct Summary {
    create: usize,
    update: usize,
    delete: usize,
}

fn summarize<'a>(changes: impl Iterator<Item = &'a Change>) -> Summary {
    let mut s = Summary::default();
    for c in changes {
        match c.action {
            Action::Create => s.create += 1,
            Action::Update => s.update += 1,
            Action::Delete => s.delete += 1,
        }
    }
    s
}

fn render_changes(
    cli: &Cli,
    ctx: &Context,
    command: &str,
    reports: &[StepReport],
    clients: &AwsClients,
    start: Instant,
) -> Result<()> {
    let summary = summarize(reports.iter().flat_map(|r| r.changes.iter()));
    let mut out = std::io::stdout().lock();
    match cli.output {
        OutputFormat::Json => {
            let changes: Vec<Value> = reports
                .iter()
                .flat_map(|r| {
                    r.changes.iter().map(move |c| {
                        let mut v = serde_json::to_value(c).unwrap_or(Value::Null);
                        v["step"] = json!(r.step);
                        v
                    })
                })
                .collect();
            let doc = json!({
                "command": command,
                "environment": ctx.names.env(),
                "changes": changes,
                "summary": summary,
                "steps": reports
                    .iter()
                    .map(|r| json!({"step": r.step, "elapsed_ms": r.elapsed.as_millis() as u64, "changes": r.changes.len()}))
                    .collect::<Vec<_>>(),
                "calls": clients.counter.snapshot(),
                "elapsed_ms": start.elapsed().as_millis() as u64,
                "peak_rss_kb": peak_rss_kb(),
            });
            writeln!(out, "{}", serde_json::to_string_pretty(&doc)?)?;
        }
        OutputFormat::Text => {
            let mut by_step: BTreeMap<&str, &Vec<Change>> = BTreeMap::new();
            for r in reports.iter().filter(|r| !r.changes.is_empty()) {
                by_step.insert(r.step, &r.changes);
            }
            for (step, changes) in by_step {
                writeln!(out, "{step}")?;
                for c in changes {
                    writeln!(out, "  {}", c.to_string().replace('\n', "\n  "))?;
                }
            }
            let verbs = match command {
                "plan" => ("to create", "to update", "to delete"),
                _ => ("created", "updated", "deleted"),
            };
            if summary.create + summary.update + summary.delete == 0 {
                writeln!(out, "No changes: environment `{}` matches the configuration.", ctx.names.env())?;
            } else {
                writeln!(
                    out,
                    "{}: {} {}, {} {}, {} {}.",
                    capitalize(command),
                    summary.create,
                    verbs.0,
                    summary.update,
                    verbs.1,
                    summary.delete,
                    verbs.2
                )?;
            }
        }
    }
    Ok(())
}

/// Peak resident memory of this process (Linux `VmHWM`), for the benchmark.
fn peak_rss_kb() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    c.next().map(|f| f.to_uppercase().collect::<String>() + c.as_str()).unwrap_or_default()
}

/// The 12 stack outputs of SPEC.md §1, from what a read-only pass found in AWS.
fn stack_outputs(ctx: &Context) -> Result<Value> {
    let env = ctx.names.env();
    let not_deployed = |what: &str| anyhow::anyhow!("environment `{env}` has no {what} yet: run `tap deploy` first");
    let network: NetworkOutputs = ctx.try_get().ok_or_else(|| not_deployed("network"))?;
    let registry: RegistryOutputs = ctx.try_get().ok_or_else(|| not_deployed("registry"))?;
    let cluster: ClusterOutputs = ctx.try_get().ok_or_else(|| not_deployed("cluster"))?;
    let ingress: IngressOutputs = ctx.try_get().ok_or_else(|| not_deployed("load balancer"))?;
    let services: ServicesOutputs = ctx.try_get().ok_or_else(|| not_deployed("services"))?;
    let service_arn = |name: &str| services.service_arns.get(name).cloned().unwrap_or_default();
    let repo_url = |name: &str| registry.repositories.get(name).map(|r| r.uri.clone()).unwrap_or_default();
    let doc = json!({
        "vpcId": network.vpc_id,
        "albDnsName": ingress.dns_name,
        "clusterName": cluster.name,
        "clusterArn": cluster.arn,
        "frontendServiceArn": service_arn("frontend"),
        "apiGatewayServiceArn": service_arn("api-gateway"),
        "processingServiceArn": service_arn("processing-service"),
        "frontendEcrUrl": repo_url("frontend"),
        "apiGatewayEcrUrl": repo_url("api-gateway"),
        "processingServiceEcrUrl": repo_url("processing-service"),
        "publicSubnetIds": network.public_subnets.iter().map(|s| s.id.clone()).collect::<Vec<_>>(),
        "privateSubnetIds": network.private_subnets.iter().map(|s| s.id.clone()).collect::<Vec<_>>(),
    });
    let missing: Vec<&String> = doc
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(_, v)| match v {
            Value::String(s) => !is_known(s),
            Value::Array(a) => a.is_empty() || a.iter().any(|x| !x.as_str().is_some_and(is_known)),
            _ => false,
        })
        .map(|(k, _)| k)
        .collect();
    if !missing.is_empty() {
        bail!("environment `{env}` is not fully deployed (missing: {missing:?}): run `tap deploy` first");
    }
    Ok(doc)
}

fn command_name(command: &Command) -> &'static str {
    match command {
        Command::Deploy { .. } => "deploy",
        Command::Plan { .. } => "plan",
        Command::Destroy { .. } => "destroy",
        Command::Outputs => "outputs",
        Command::Status => "status",
        Command::Unlock => "unlock",
    }
}

fn confirm_destroy(env: &str) -> Result<()> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        bail!("refusing to destroy environment `{env}` without confirmation: stdin is not a terminal; pass --yes");
    }
    eprint!("This removes every resource of environment `{env}`. Type the environment name to confirm: ");
    std::io::stderr().flush()?;
    let mut answer = String::new();
    stdin.lock().read_line(&mut answer)?;
    if answer.trim() != env {
        bail!("destroy cancelled: the answer did not match `{env}`");
    }
    Ok(())
}

fn print_stats(counts: &CallCounts, elapsed_ms: u128) {
    eprintln!(
        "AWS calls: {} total, {} mutating, {} HTTP attempts, {} ms",
        counts.total, counts.mutating, counts.attempts, elapsed_ms
    );
    for (op, n) in &counts.by_operation {
        eprintln!("  {n:>4}  {op}");
    }
}
