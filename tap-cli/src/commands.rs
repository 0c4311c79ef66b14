//! The commands: load and validate the config (before any AWS call), build the clients and steps,
//! run them, and render the result.
//!
//! Deploy and destroy write only under the environment lock, and take it only when they have
//! something to write: they read the lock while they look through read-only clients
//! ([`WriteGuard`]) — deploy plans, destroy runs its pass with every mutating call refused. A live
//! holder is reported before any write (the look is discarded; had the run to wait for the holder,
//! it looks again once the holder is gone). Nothing to write: that look is the result (a deploy
//! that waits for its rollouts waits in a read-only converge pass), and the run made no mutating
//! call. Otherwise they take the lock (its create; taking over a stale one), and converge or
//! destroy from a fresh look at AWS while the lock's lease is renewed; a lock lost meanwhile stops
//! the run. So the lock adds one round trip before the first write on the happy path.

use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use serde_json::{json, Value};
use tap_core::aws::{AwsSession, CallCounts, WriteGuard};
use tap_core::outputs::{
    is_known, service_output_keys, ClusterOutputs, IngressOutputs, NetworkOutputs, RegistryOutputs, ServicesOutputs,
};
use tap_core::{Config, Context};

use crate::cli::{Cli, Command, OutputFormat};
use crate::lock::{EnvLock, HeldLock, LockHolder, Stale, Taken};
use crate::progress::{Progress, ProgressMode};
use crate::render::{self, ChangesDoc, Style, Summary};
use crate::runner::{Operation, RunError, RunObserver, Runner, StepReport};
use crate::{cost, errors, list, logs, quotas, steps};

/// The environment of this run, once the config is loaded (for error documents).
static ENVIRONMENT: OnceLock<String> = OnceLock::new();

/// Runs the command line; the exit code on success (plan's detailed exit code may be 2).
pub async fn run(cli: &Cli) -> Result<ExitCode> {
    if let Command::Completions { shell } = cli.command {
        match std::io::stdout().lock().write_all(&crate::manual::completion(shell)) {
            Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => return Err(e.into()),
            _ => return Ok(ExitCode::SUCCESS),
        }
    }
    if let Command::Manpages { dir } = &cli.command {
        let written =
            crate::manual::write_all(dir).with_context(|| format!("writing man pages into {}", dir.display()))?;
        for page in written {
            println!("{}", page.display());
        }
        return Ok(ExitCode::SUCCESS);
    }
    let config = Config::load(cli.config.as_deref(), cli.overrides())?;
    let _ = ENVIRONMENT.set(config.environment.clone());
    if let Some(region) = &config.aws.region {
        check_region_name(region)?;
    }
    if let Command::Destroy { yes: false, .. } = cli.command {
        confirm_destroy(&config.environment)?;
    }
    let clients = crate::aws::load(&config.aws).await;
    let region = clients.region().map(str::to_owned).context(
        "no AWS region: pass --region, set AWS_REGION, or set `aws.region` in tap.toml (or a region in your profile)",
    )?;
    let steps = steps::all(&clients);
    let order: Vec<&'static str> = steps.iter().map(|s| s.contract().name).collect();
    let op = operation(&cli.command).unwrap_or(Operation::Plan);
    let progress = Arc::new(Progress::new(cli.progress_mode(), op));
    let ctx = Context::new(config).with_region(region).with_progress(progress.clone());
    let runner = Runner::new(steps)?;
    let start = Instant::now();
    let (lock, lock_timeout) = match cli.command {
        Command::Deploy { lock_timeout, .. }
        | Command::Destroy { lock_timeout, .. }
        | Command::Rollback { lock_timeout, .. } => {
            (Some(EnvLock::new(&clients, ctx.names.env(), cli.command.name())), lock_timeout.map(Duration::from_secs))
        }
        _ => (None, None),
    };
    let held = Mutex::new(None);
    let run = Run {
        cli,
        ctx: &ctx,
        runner: &runner,
        clients: &clients,
        progress: &progress,
        order: &order,
        start,
        lock: lock.as_ref(),
        lock_timeout,
        held: &held,
        quotas: Mutex::new(None),
    };
    let result = tokio::select! {
        result = run.execute() => result,
        _ = tokio::signal::ctrl_c() => {
            if matches!(cli.command, Command::Logs { .. }) {
                Ok(ExitCode::SUCCESS)
            } else {
                // No local state exists: stopping between calls leaves only what AWS already
                // holds, which the next deploy converges and destroy removes.
                Err(anyhow::anyhow!("interrupted: run `tap deploy` again to finish, or `tap destroy` to remove what was made"))
            }
        }
    };
    progress.finish(None);
    let held = held.lock().unwrap_or_else(|e| e.into_inner()).take();
    if let Some(held) = held {
        if let Err(e) = held.release().await {
            tracing::warn!(error = %e, "could not release the environment lock; `tap unlock` removes it");
        }
    }
    if cli.stats {
        print_stats(&clients.counter().snapshot(), start.elapsed().as_millis());
    }
    result
}

/// Shows an error of the run: on stderr for people (resource, action, AWS code and message, and
/// hints), and with `--output json` also as one JSON document on stdout.
pub fn report_error(cli: &Cli, err: &anyhow::Error) {
    eprint!("{}", errors::render_text(cli.command.name(), err));
    if cli.output == OutputFormat::Json && !matches!(cli.command, Command::Completions { .. }) {
        let doc = errors::render_json(cli.command.name(), ENVIRONMENT.get().map(String::as_str), err);
        if let Ok(text) = serde_json::to_string_pretty(&doc) {
            println!("{text}");
        }
    }
}

/// The runner operation of a command that runs the steps.
fn operation(command: &Command) -> Option<Operation> {
    match command {
        Command::Deploy { .. } => Some(Operation::Apply),
        Command::Plan { .. } => Some(Operation::Plan),
        Command::Destroy { .. } => Some(Operation::Destroy),
        _ => None,
    }
}

/// Rejects a region that cannot be an AWS region name (`eu-west-1`, `us-gov-east-1`, …) before
/// any call, instead of failing later on an endpoint that does not resolve.
fn check_region_name(region: &str) -> Result<()> {
    let parts: Vec<&str> = region.split('-').collect();
    let ok = parts.len() >= 3
        && parts.iter().all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()))
        && parts[0].len() == 2
        && parts[0].chars().all(|c| c.is_ascii_lowercase())
        && parts.last().is_some_and(|p| p.chars().all(|c| c.is_ascii_digit()));
    if !ok {
        bail!(
            "`{region}` is not an AWS region name (like eu-west-1 or us-east-2): check --region, AWS_REGION or `aws.region`"
        );
    }
    Ok(())
}

/// What the read-only look of a deploy or destroy saw ([`Run::look`]).
struct Look {
    guard: WriteGuard,
    read_only: Runner,
    quiet: Arc<Progress>,
    ctx: Context,
    looked: Option<Result<Vec<StepReport>>>,
}

/// One run of a command, with everything it needs.
struct Run<'a> {
    cli: &'a Cli,
    ctx: &'a Context,
    runner: &'a Runner,
    clients: &'a AwsSession,
    progress: &'a Arc<Progress>,
    order: &'a [&'static str],
    start: Instant,
    /// The environment lock (deploy and destroy), taken only when there is something to write.
    lock: Option<&'a EnvLock>,
    /// `--lock-timeout`.
    lock_timeout: Option<Duration>,
    /// The lock while this run holds it: released by [`run`] however the run ends (Ctrl-C too).
    held: &'a Mutex<Option<HeldLock>>,
    /// The quota preflight of this plan or deploy, once made (rendered with the changes).
    quotas: Mutex<Option<tap_quotas::Preflight>>,
}

impl Run<'_> {
    async fn execute(&self) -> Result<ExitCode> {
        let (cli, ctx, clients) = (self.cli, self.ctx, self.clients);
        match &cli.command {
            Command::Deploy { .. } | Command::Destroy { .. } => {
                let op = operation(&cli.command).unwrap_or(Operation::Apply);
                self.write(op).await?;
                Ok(ExitCode::SUCCESS)
            }
            Command::Plan { detailed_exitcode, .. } => {
                let summary = self.changes(Operation::Plan).await?;
                Ok(if *detailed_exitcode && summary.changed() { ExitCode::from(2) } else { ExitCode::SUCCESS })
            }
            Command::Outputs => {
                self.runner.run(ctx, Operation::Plan).await?;
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
            Command::Rollback { services, to, .. } => self.rollback(services, *to).await,
            Command::Run { service, command, .. } => self.run_task(service, command).await,
            Command::Unlock => {
                let lock = EnvLock::new(clients, ctx.names.env(), "unlock");
                let holder = lock.force_release().await?;
                match cli.output {
                    OutputFormat::Json => {
                        let doc = json!({
                            "environment": ctx.names.env(),
                            "removed": holder.is_some(),
                            "holder": holder.as_ref().map(|h| json!({
                                "holder": h.holder,
                                "age_seconds": h.age_seconds,
                                "run": h.run,
                                "host": h.host,
                                "pid": h.pid,
                                "lease_until": h.lease_until,
                            })),
                        });
                        println!("{}", serde_json::to_string_pretty(&doc)?);
                    }
                    OutputFormat::Text => match holder {
                        Some(holder) => println!(
                            "Removed the lock of environment `{}` held by {} ({} s old).",
                            ctx.names.env(),
                            holder.describe(),
                            holder.age_seconds
                        ),
                        None => println!("Environment `{}` is not locked.", ctx.names.env()),
                    },
                }
                Ok(ExitCode::SUCCESS)
            }
            Command::Status { service: Some(service) } => {
                known_service(&ctx.config, service)?;
                let api = tap_services::SdkServices::from_session(clients);
                let alarms_api = tap_alarms::SdkAlarms::from_session(clients);
                let (detail, mut alarms) = tokio::try_join!(
                    tap_services::status::detail(&api, ctx, service),
                    tap_alarms::status::status(&alarms_api, ctx)
                )?;
                let alarms = alarms.remove(service.as_str()).unwrap_or_default();
                match cli.output {
                    OutputFormat::Json => {
                        let mut service = serde_json::to_value(&detail)?;
                        service["alarms"] = serde_json::to_value(&alarms)?;
                        let doc = json!({"environment": ctx.names.env(), "region": ctx.region, "service": service});
                        println!("{}", serde_json::to_string_pretty(&doc)?);
                    }
                    OutputFormat::Text => {
                        print!("{}", tap_services::status::render_detail(&detail));
                        let single = std::collections::BTreeMap::from([(service.clone(), alarms)]);
                        print!("{}", tap_alarms::status::render_table(&single));
                    }
                }
                Ok(ExitCode::SUCCESS)
            }
            Command::Status { service: None } => {
                let api = tap_services::SdkServices::from_session(clients);
                let alarms_api = tap_alarms::SdkAlarms::from_session(clients);
                let (services, alarms) = tokio::try_join!(
                    tap_services::status::status(&api, ctx),
                    tap_alarms::status::status(&alarms_api, ctx)
                )?;
                match cli.output {
                    OutputFormat::Json => {
                        // Each service's alarms beside its counts.
                        let services: Vec<Value> = services
                            .iter()
                            .map(|s| {
                                let mut doc = serde_json::to_value(s)?;
                                doc["alarms"] = serde_json::to_value(alarms.get(&s.name).cloned().unwrap_or_default())?;
                                Ok(doc)
                            })
                            .collect::<Result<_>>()?;
                        let doc = json!({"environment": ctx.names.env(), "region": ctx.region, "services": services});
                        println!("{}", serde_json::to_string_pretty(&doc)?);
                    }
                    OutputFormat::Text => {
                        print!("{}", tap_services::status::render_table(ctx.names.env(), &services));
                        print!("{}", tap_alarms::status::render_table(&alarms));
                    }
                }
                Ok(ExitCode::SUCCESS)
            }
            Command::Logs { service, since, follow } => {
                let since = logs::parse_since(since)?;
                logs::run(
                    &tap_core::sdk_client!(aws_sdk_cloudwatchlogs, clients),
                    ctx,
                    service,
                    since,
                    *follow,
                    cli.output,
                )
                .await?;
                Ok(ExitCode::SUCCESS)
            }
            Command::Cost => {
                match cli.output {
                    OutputFormat::Json => {
                        println!("{}", serde_json::to_string_pretty(&cost::estimate_json(&ctx.config, &ctx.region))?)
                    }
                    OutputFormat::Text => print!("{}", cost::estimate_text(&ctx.config, &ctx.region)),
                }
                Ok(ExitCode::SUCCESS)
            }
            Command::List => {
                let environments = list::environments(clients, &ctx.config).await?;
                match cli.output {
                    OutputFormat::Json => {
                        println!(
                            "{}",
                            serde_json::to_string_pretty(&list::to_json(&ctx.region, &ctx.config, &environments))?
                        )
                    }
                    OutputFormat::Text => print!("{}", list::to_text(&ctx.region, &ctx.config, &environments)),
                }
                Ok(ExitCode::SUCCESS)
            }
            Command::Completions { .. } | Command::Manpages { .. } => Ok(ExitCode::SUCCESS),
        }
    }

    /// Runs the steps for `op` with progress, then prints the changes and the totals.
    async fn changes(&self, op: Operation) -> Result<Summary> {
        let started = Instant::now();
        let reports = run_steps(self.runner, self.ctx, op, self.progress.as_ref()).await?;
        if op == Operation::Plan {
            let preflight = quotas::preflight(self.clients, self.ctx, &reports).await?;
            *self.quotas.lock().unwrap_or_else(|e| e.into_inner()) = Some(preflight);
        }
        self.render(op, &reports, self.progress, started.elapsed())
    }

    /// Deploy (`Apply`) or destroy: look first through read-only clients (a plan, or the destroy
    /// pass with every mutating call refused); with nothing to write, that look is the result and
    /// no lock is taken. Otherwise take the lock and run `op` from a fresh look at AWS.
    async fn write(&self, op: Operation) -> Result<Summary> {
        let started = Instant::now();
        let lock = self.lock.context("deploy and destroy run with an environment lock")?;
        // The lock is read while the look runs: a live holder is reported before any write.
        let check = async { lock.check(self.lock_timeout).await.map_err(anyhow::Error::from) };
        let (waited, first) = tokio::try_join!(check, self.look(op))?;
        let Look { guard, read_only, quiet, ctx: look_ctx, looked } = match waited {
            false => first,
            // The lock was held when the look ran: its holder may have changed AWS since.
            true => self.look(op).await?,
        };
        // Deploy refuses what its look marks `!` (e.g. a running service moving to an image its
        // repository does not have) before it takes the lock or writes anything.
        if let (Operation::Apply, Some(Ok(reports))) = (op, &looked) {
            if let Some(refused) = errors::Refused::of(reports) {
                return Err(refused.into());
            }
            // What it would add against the account's quotas, before the lock and any write (a
            // deploy that creates nothing asks nothing here).
            let preflight = quotas::preflight(&self.clients.read_only(&guard), &look_ctx, reports).await?;
            if let Some(shortfall) = preflight.shortfall() {
                return Err(shortfall.into());
            }
            *self.quotas.lock().unwrap_or_else(|e| e.into_inner()) = Some(preflight);
        }
        let nothing_to_write = match (&looked, guard.attempted()) {
            (Some(Ok(reports)), None) => reports.iter().all(|r| r.changes.is_empty()),
            _ => false,
        };
        if nothing_to_write {
            let waits = op == Operation::Apply && self.ctx.config.deploy.wait;
            if !waits {
                tracing::info!("nothing to change: no lock taken");
                let reports = looked.and_then(Result::ok).unwrap_or_default();
                return self.render(op, &reports, &quiet, started.elapsed());
            }
            // A deploy that changes nothing still waits for the rollouts: the converge pass,
            // read-only, which writes nothing when AWS still matches and waits where deploy waits.
            let ctx = self.fresh_context(self.progress.clone());
            let converged = tokio::select! {
                result = run_steps(&read_only, &ctx, op, self.progress.as_ref()) => Some(result),
                _ = guard.tripped() => None,
            };
            if let (Some(result), None) = (converged, guard.attempted()) {
                return self.render(op, &result?, self.progress, started.elapsed());
            }
        }
        match (&looked, guard.attempted()) {
            (_, Some(first)) => tracing::info!(first_write = %first, "changes to make: taking the environment lock"),
            (Some(Err(e)), None) => {
                tracing::info!(error = %e, "the read-only look failed: taking the lock and running for real")
            }
            _ => tracing::info!("changes to make: taking the environment lock"),
        }
        // `--lock-timeout` bounds the whole wait: what the first look waited counts.
        let timeout = self.lock_timeout.map(|t| t.saturating_sub(self.start.elapsed()));
        if let Taken::TookOver(holder, why) = lock.acquire(timeout).await? {
            tracing::warn!("{}", took_over(&holder, why));
        }
        let held = lock.hold();
        let lost = held.lost_signal();
        *self.held.lock().unwrap_or_else(|e| e.into_inner()) = Some(held);
        // `self.ctx` has not run anything yet: what steps read in it comes from this pass.
        let reports = tokio::select! {
            result = run_steps(self.runner, self.ctx, op, self.progress.as_ref()) => result?,
            why = lost.wait() => bail!(
                "lost the environment lock: {why}; stopped, so that two runs never write at once: run `tap {}` again",
                self.cli.command.name()
            ),
        };
        self.render(op, &reports, self.progress, started.elapsed())
    }

    /// `tap run`: a one-off task; its log lines on stdout as they come (text), and its
    /// container's exit code as tap's.
    async fn run_task(&self, service: &str, command: &[String]) -> Result<ExitCode> {
        let ctx = self.ctx;
        known_service(&ctx.config, service)?;
        let api = tap_services::SdkServices::from_session(self.clients);
        let backoff = tap_core::wait::Backoff {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(5),
            timeout: Duration::from_secs(ctx.config.deploy.timeout_seconds),
        };
        let json = self.cli.output == OutputFormat::Json;
        let mut lines: Vec<String> = Vec::new();
        let mut on_line = |line: &str| {
            if json {
                lines.push(line.to_string());
            } else {
                println!("{line}");
            }
        };
        let done =
            tap_services::rollout::run_one_off(&api, ctx, service, command.to_vec(), backoff, &mut on_line).await?;
        if json {
            let doc = json!({"command": "run", "environment": ctx.names.env(), "service": service,
                "task": done, "lines": lines});
            println!("{}", serde_json::to_string_pretty(&doc)?);
        }
        // The container's code is tap's (a shell sees only its low 8 bits anyway).
        Ok(ExitCode::from(done.exit_code.clamp(0, 255) as u8))
    }

    /// `tap rollback`: under the environment lock, the services back on an earlier revision,
    /// waited for like a deploy.
    async fn rollback(&self, services: &[String], to: Option<i32>) -> Result<ExitCode> {
        let ctx = self.ctx;
        for service in services {
            known_service(&ctx.config, service)?;
        }
        let chosen = if services.is_empty() {
            ctx.config.services.iter().map(|s| s.name.clone()).collect()
        } else {
            services.to_vec()
        };
        let lock = self.lock.context("rollback runs with the environment lock")?;
        if let Taken::TookOver(holder, why) = lock.acquire(self.lock_timeout).await? {
            tracing::warn!("{}", took_over(&holder, why));
        }
        let held = lock.hold();
        let lost = held.lost_signal();
        *self.held.lock().unwrap_or_else(|e| e.into_inner()) = Some(held);
        let api = tap_services::SdkServices::from_session(self.clients);
        let backoff = tap_core::wait::Backoff {
            initial: Duration::from_secs(2),
            max: Duration::from_secs(15),
            timeout: Duration::from_secs(ctx.config.deploy.timeout_seconds),
        };
        let done = tokio::select! {
            result = tap_services::rollout::rollback(&api, ctx, &chosen, to, backoff) => result?,
            why = lost.wait() => bail!("lost the environment lock: {why}; stopped: run `tap rollback` again"),
        };
        match self.cli.output {
            OutputFormat::Json => {
                let doc = json!({"command": "rollback", "environment": ctx.names.env(), "services": done});
                println!("{}", serde_json::to_string_pretty(&doc)?);
            }
            OutputFormat::Text => {
                for r in &done {
                    println!("{}: {} -> {}", r.service, r.from, r.to);
                }
            }
        }
        Ok(ExitCode::SUCCESS)
    }

    /// The read-only look of a deploy (a plan) or a destroy (its pass with every mutating call
    /// refused); `looked` is `None` when the pass tried to write (the guard tripped).
    async fn look(&self, op: Operation) -> Result<Look> {
        let guard = WriteGuard::new();
        let read_only = Runner::new(steps::all(&self.clients.read_only(&guard)))?;
        let look_op = if op == Operation::Destroy { Operation::Destroy } else { Operation::Plan };
        let quiet = Arc::new(Progress::new(ProgressMode::Off, look_op));
        let ctx = self.fresh_context(quiet.clone());
        let looked = tokio::select! {
            result = run_steps(&read_only, &ctx, look_op, quiet.as_ref()) => Some(result),
            _ = guard.tripped() => None,
        };
        Ok(Look { guard, read_only, quiet, ctx, looked })
    }

    /// A context like this run's that nothing has written to yet, reporting to `progress`.
    fn fresh_context(&self, progress: Arc<Progress>) -> Context {
        Context::new((*self.ctx.config).clone()).with_region(self.ctx.region.clone()).with_progress(progress)
    }

    /// Prints the changes of `reports` and the totals; `counts` is the progress that saw the
    /// steps (its "unchanged" counts).
    fn render(
        &self,
        op: Operation,
        reports: &[StepReport],
        counts: &Progress,
        steps_elapsed: Duration,
    ) -> Result<Summary> {
        let (cli, ctx) = (self.cli, self.ctx);
        let ordered = render::ordered(reports, self.order);
        let summary = Summary::of(ordered.iter().flat_map(|r| r.changes.iter()), counts.unchanged());
        let calls = self.clients.counter().snapshot();
        let total = render::total_line(op, ctx.names.env(), &summary, &calls, self.start.elapsed());
        // Plan and deploy: the monthly estimate before and after (destroy removes it all).
        let cost = (op != Operation::Destroy).then(|| {
            let changes: Vec<&tap_core::Change> = ordered.iter().flat_map(|r| r.changes.iter()).collect();
            cost::Comparison::of(&ctx.config, &ctx.region, &changes)
        });
        // The totals close the progress on stderr too, unless stdout shows them on the same terminal.
        let stdout_shows_it = cli.output == OutputFormat::Text && std::io::stdout().is_terminal();
        self.progress.finish((!stdout_shows_it).then_some(total.as_str()));

        let preflight =
            self.quotas.lock().unwrap_or_else(|e| e.into_inner()).clone().filter(|_| op != Operation::Destroy);
        let mut out = std::io::stdout().lock();
        match cli.output {
            OutputFormat::Json => {
                let unchanged = counts.unchanged_by_step();
                let doc = render::changes_json(&ChangesDoc {
                    command: cli.command.name(),
                    environment: ctx.names.env(),
                    region: &ctx.region,
                    reports: &ordered,
                    summary,
                    unchanged_by_step: &unchanged,
                    calls: &calls,
                    elapsed: steps_elapsed,
                    peak_rss_kb: peak_rss_kb(),
                    cost: cost.as_ref().map(cost::Comparison::to_json),
                });
                let mut doc = doc;
                if let Some(preflight) = &preflight {
                    doc["quotas"] = quotas::to_json(preflight);
                }
                writeln!(out, "{}", serde_json::to_string_pretty(&doc)?)?;
            }
            OutputFormat::Text => {
                write!(out, "{}", render::changes_text(&ordered, Style { color: cli.color() }))?;
                if summary.changed() {
                    writeln!(out)?;
                }
                if let Some(preflight) = &preflight {
                    write!(out, "{}", preflight.render_text())?;
                }
                if let Some(cost) = &cost {
                    writeln!(out, "{}", cost.line())?;
                }
                writeln!(out, "{total}")?;
            }
        }
        Ok(summary)
    }
}

/// An error naming the configured services unless `service` is one of them.
fn known_service(config: &Config, service: &str) -> Result<()> {
    if config.service(service).is_none() {
        let known: Vec<&str> = config.services.iter().map(|s| s.name.as_str()).collect();
        bail!("no service `{service}` in the configuration (services: {})", known.join(", "));
    }
    Ok(())
}

/// What a run says when it took over a stale lock.
fn took_over(holder: &LockHolder, why: Stale) -> String {
    let run = holder.run.as_deref().unwrap_or("?");
    match why {
        Stale::ProcessGone => format!("took over the lock of run {run} ({}), whose process is gone", holder.holder),
        Stale::LeaseEnded(ago) => {
            format!("took over the lock of run {run} ({}), whose lease ended {ago} s ago", holder.holder)
        }
    }
}

async fn run_steps(
    runner: &Runner,
    ctx: &Context,
    op: Operation,
    observer: &dyn RunObserver,
) -> Result<Vec<StepReport>> {
    runner.run_observed(ctx, op, observer).await.map_err(|e: RunError| {
        for report in &e.completed {
            for change in &report.changes {
                tracing::info!(step = report.step, "{change}");
            }
        }
        anyhow::Error::new(e)
    })
}

/// Peak resident memory of this process (Linux `VmHWM`), for the benchmark.
fn peak_rss_kb() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// The stack outputs of SPEC.md §1 (12 for the default three services: each service adds its ARN
/// and repository URL), from what a read-only pass found in AWS.
fn stack_outputs(ctx: &Context) -> Result<Value> {
    let env = ctx.names.env();
    let not_deployed = |what: &str| anyhow::anyhow!("environment `{env}` has no {what} yet: run `tap deploy` first");
    let network: NetworkOutputs = ctx.try_get().ok_or_else(|| not_deployed("network"))?;
    let registry: RegistryOutputs = ctx.try_get().ok_or_else(|| not_deployed("registry"))?;
    let cluster: ClusterOutputs = ctx.try_get().ok_or_else(|| not_deployed("cluster"))?;
    let ingress: IngressOutputs = ctx.try_get().ok_or_else(|| not_deployed("load balancer"))?;
    let services: ServicesOutputs = ctx.try_get().ok_or_else(|| not_deployed("services"))?;
    let mut doc = json!({
        "vpcId": network.vpc_id,
        "albDnsName": ingress.dns_name,
        "clusterName": cluster.name,
        "clusterArn": cluster.arn,
        "publicSubnetIds": network.public_subnets.iter().map(|s| s.id.clone()).collect::<Vec<_>>(),
        "privateSubnetIds": network.private_subnets.iter().map(|s| s.id.clone()).collect::<Vec<_>>(),
    });
    for service in &ctx.config.services {
        let (arn_key, url_key) = service_output_keys(&service.name);
        doc[arn_key] = json!(services.service_arns.get(&service.name).cloned().unwrap_or_default());
        doc[url_key] = json!(registry.repositories.get(&service.name).map(|r| r.uri.clone()).unwrap_or_default());
    }
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
        "AWS calls: {} total, {} mutating, {} HTTP attempts ({} retries, {} throttled), {} ms waited between attempts, {} ms",
        counts.total,
        counts.mutating,
        counts.attempts,
        counts.retries(),
        counts.throttled,
        counts.waited_ms,
        elapsed_ms
    );
    for (op, n) in &counts.by_operation {
        eprintln!("  {n:>4}  {op}");
    }
}
