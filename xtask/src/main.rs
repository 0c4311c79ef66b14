//! Developer automation, rust-analyzer style: `cargo xtask <ci|tidy|demo|bench|dist|release|package>`.
//!
//! - `tidy`: the architecture invariants a machine can check (see [`tidy`] and ARCHITECTURE.md):
//!   each concern crate's normal dependencies, `//!` docs at each crate root, no `todo!`.
//! - `ci`: `cargo fmt --check`, tidy, `cargo clippy -D warnings`, and every test (the end-to-end tests
//!   start their own `moto_server`; it is installed first when missing).
//! - `demo`: the main job end to end against a local emulator: deploy, show the plan is empty,
//!   print the outputs, destroy.
//! - `bench`: wall time and AWS calls of deploy from empty, a no-op redeploy, plan and destroy;
//!   with `--rate-limits`, through AWS's documented API rate limits (`tap_moto::rate_limits`),
//!   with the calls throttled and the least wall time the buckets allow; `--environments K` runs K
//!   environments at once against the same buckets.
//! - `dist [--target T]`: the release archive with completions, man pages, `SHA256SUMS` and a
//!   CycloneDX SBOM, smoke-tested (see [`dist`], [`sbom`]).
//! - `release <version> [--execute]`: bump, date the CHANGELOG, commit and tag; a dry run unless
//!   `--execute` (see [`release`]).
//! - `package`: `cargo package` of every publishable library crate (see [`package`]).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use tap_moto::proxy::{Fate, SeenCall};
use tap_moto::rate_limits::{Floor, RateLimits};
use tap_moto::Moto;

mod clock;
mod dist;
mod git;
mod package;
mod release;
mod sbom;
mod tidy;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let root = tap_moto::workspace_root();
    std::env::set_current_dir(&root)?;
    match args.first().map(String::as_str) {
        Some("ci") => ci(),
        Some("tidy") => tidy(),
        Some("demo") => demo(),
        Some("bench") => bench(&args[1..]),
        Some("dist") => dist::run_dist(&args[1..]),
        Some("release") => release::run_release(&args[1..]),
        Some("package") => package::check(&dist::metadata(&root, None)?).map(|_| ()),
        _ => {
            eprintln!(
                "usage: cargo xtask <ci|tidy|demo|bench [--runs N] [--latency-ms N] [--services N] [--async-delete-window-s N] [--call-log DIR] [--rate-limits | --rate-limits-observe] [--environments K] [--timeout-s N]\n\
                 \x20                 |dist [--target TRIPLE]|release <version> [--execute]|package>"
            );
            std::process::exit(2)
        }
    }
}

/// A nested `cargo`, with the environment a plain `cargo` in a shell has.
///
/// `cargo run` gives xtask its own package's variables (`CARGO_MANIFEST_DIR`, `CARGO_PKG_*`, …).
/// Build scripts under the AWS SDK (aws-lc-sys, via rustls) rerun when those change, so a nested
/// cargo that kept them rebuilt the whole SDK (tens of minutes) instead of sharing the compiled
/// dependencies with a `cargo test` or `cargo build` run from a shell.
fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    for (key, _) in std::env::vars_os() {
        let Some(name) = key.to_str() else { continue };
        let package_variable = name.starts_with("CARGO_PKG_")
            || matches!(
                name,
                "CARGO_MANIFEST_DIR"
                    | "CARGO_MANIFEST_PATH"
                    | "CARGO_MANIFEST_LINKS"
                    | "CARGO_CRATE_NAME"
                    | "CARGO_BIN_NAME"
                    | "CARGO_PRIMARY_PACKAGE"
                    | "OUT_DIR"
            );
        if package_variable {
            cmd.env_remove(&key);
        }
    }
    cmd
}

fn run(cmd: &mut Command) -> Result<()> {
    eprintln!("$ {}", display(cmd));
    let status = cmd.status().with_context(|| format!("running {}", display(cmd)))?;
    if !status.success() {
        bail!("`{}` failed: {status}", display(cmd));
    }
    Ok(())
}

fn display(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|s| s.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

fn ci() -> Result<()> {
    run(cargo().args(["fmt", "--all", "--", "--check"]))?;
    tidy()?;
    run(cargo().args(["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"]))?;
    let moto = tap_moto::moto_server_path().context("installing moto_server")?;
    // `cargo test --workspace` builds the `tap` binary too (tap-cli's integration test needs it),
    // with the same features as the tests: a separate `cargo build -p tap-cli` would compile the
    // AWS SDK crates a second time with another feature set.
    run(cargo().args(["test", "--workspace"]).env("MOTO_SERVER", moto))?;
    Ok(())
}

/// Checks the architecture invariants over `cargo metadata` and the sources (see [`tidy`]).
fn tidy() -> Result<()> {
    eprintln!("$ cargo xtask tidy");
    let out = cargo().args(["metadata", "--format-version", "1"]).output().context("running cargo metadata")?;
    if !out.status.success() {
        bail!("cargo metadata failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let metadata: Value = serde_json::from_slice(&out.stdout).context("reading cargo metadata")?;
    let problems = tidy::run(&tap_moto::workspace_root(), &metadata);
    if !problems.is_empty() {
        for problem in &problems {
            eprintln!("tidy: {problem}");
        }
        bail!("tidy: {} problem(s) (the invariants are in ARCHITECTURE.md)", problems.len());
    }
    eprintln!("tidy: ok");
    Ok(())
}

/// Builds `tap` (optimised for `release`, as the bench measures it: a debug build spends several
/// times the CPU per call signing and parsing) and returns its path.
fn build_tap(release: bool) -> Result<PathBuf> {
    let mut cmd = cargo();
    cmd.args(["build", "--quiet", "--package", "tap-cli", "--bin", "tap"]);
    if release {
        cmd.arg("--release");
    }
    run(&mut cmd)?;
    let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("target"));
    Ok(target.join(if release { "release" } else { "debug" }).join("tap"))
}

/// `tap` pointed at the emulator with dummy credentials.
fn tap(bin: &Path, moto: &Moto, env: &str, region: &str) -> Command {
    let mut cmd = Command::new(bin);
    cmd.args(["--env", env, "--region", region, "--endpoint-url", &moto.endpoint()])
        .env("AWS_ACCESS_KEY_ID", "demo")
        .env("AWS_SECRET_ACCESS_KEY", "demo")
        .env_remove("AWS_PROFILE");
    cmd
}

fn demo() -> Result<()> {
    let bin = build_tap(false)?;
    let moto = Moto::start().context("starting moto_server")?;
    eprintln!("moto_server listening on {}", moto.endpoint());
    let (env, region) = ("demo", "us-east-1");
    run(tap(&bin, &moto, env, region).args(["deploy", "--no-wait"]))?;
    eprintln!("\n# a second look: the plan must be empty");
    run(tap(&bin, &moto, env, region).args(["plan", "--detailed-exitcode"]))?;
    eprintln!("\n# outputs");
    run(tap(&bin, &moto, env, region).args(["outputs"]))?;
    eprintln!("\n# destroy");
    run(tap(&bin, &moto, env, region).args(["destroy", "--yes"]))?;
    eprintln!("\ndemo finished: deployed, verified an empty plan, printed outputs, destroyed");
    Ok(())
}

/// Bench options: `--runs N`, `--latency-ms N`, `--services N`, `--async-delete-window-s N`,
/// `--call-log DIR`, `--rate-limits`, `--rate-limits-observe`, `--environments K`, `--timeout-s N`.
struct BenchOptions {
    runs: usize,
    latency_ms: u64,
    services: usize,
    /// `--async-delete-window-s N`: the proxy models AWS's asynchronous deletions, each taking N s
    /// (`tap_moto::async_deletes`); 0: off.
    async_delete_window_s: u64,
    /// `--call-log DIR`: each measured run's call log (every AWS call, its end time and duration).
    call_log: Option<PathBuf>,
    /// `--rate-limits`: the proxy throttles calls as AWS's documented token buckets do
    /// (`tap_moto::rate_limits`), shared by every environment.
    rate_limits: bool,
    /// `--rate-limits-observe`: the same buckets named for every call but never throttling: the
    /// floor the calls of an unthrottled run would meet.
    observe_rate_limits: bool,
    /// `--environments K`: K environments run each phase at once through one proxy.
    environments: usize,
    /// `--timeout-s N`: a `tap` run taking longer is killed and counted as failed.
    timeout_s: u64,
}

impl BenchOptions {
    fn parse(args: &[String]) -> Result<BenchOptions> {
        const WITH_VALUE: [&str; 7] = [
            "--runs",
            "--latency-ms",
            "--services",
            "--async-delete-window-s",
            "--call-log",
            "--environments",
            "--timeout-s",
        ];
        let mut i = 0;
        while let Some(arg) = args.get(i) {
            match arg.as_str() {
                a if WITH_VALUE.contains(&a) => i += 2,
                "--rate-limits" | "--rate-limits-observe" => i += 1,
                other => bail!("unknown bench option `{other}`"),
            }
        }
        let value = |flag: &str, default: u64| -> Result<u64> {
            match args.iter().position(|a| a == flag) {
                Some(i) => args
                    .get(i + 1)
                    .with_context(|| format!("{flag} needs a number"))?
                    .parse()
                    .with_context(|| format!("{flag} needs a number")),
                None => Ok(default),
            }
        };
        let options = BenchOptions {
            runs: value("--runs", 3)? as usize,
            latency_ms: value("--latency-ms", 0)?,
            services: value("--services", 3)? as usize,
            async_delete_window_s: value("--async-delete-window-s", 0)?,
            call_log: args.iter().position(|a| a == "--call-log").and_then(|i| args.get(i + 1)).map(PathBuf::from),
            rate_limits: args.iter().any(|a| a == "--rate-limits"),
            observe_rate_limits: args.iter().any(|a| a == "--rate-limits-observe"),
            environments: value("--environments", 1)? as usize,
            timeout_s: value("--timeout-s", 1800)?,
        };
        if options.runs == 0 || options.services == 0 || options.services > 500 {
            bail!("--runs must be at least 1 and --services between 1 and 500");
        }
        if options.rate_limits && options.observe_rate_limits {
            bail!("--rate-limits and --rate-limits-observe exclude each other");
        }
        if !(1..=20).contains(&options.environments) || options.timeout_s == 0 {
            bail!("--environments must be between 1 and 20 and --timeout-s at least 1");
        }
        Ok(options)
    }

    /// The environments each phase runs: `bench`, or `bench-1` … `bench-K`.
    fn environment_names(&self) -> Vec<String> {
        if self.environments == 1 {
            vec!["bench".to_owned()]
        } else {
            (1..=self.environments).map(|k| format!("bench-{k}")).collect()
        }
    }
}

/// A `tap.toml` with the default services (the first `count` of them, routed ones first, so the
/// listener keeps its default) plus generated ones, up to `count` services.
fn services_config(count: usize) -> String {
    use tap_core::config::platform::{API_GATEWAY, FRONTEND, PROCESSING};
    let mut toml: String = [FRONTEND, API_GATEWAY, PROCESSING].into_iter().take(count).collect();
    for i in 3..count {
        toml.push_str(&format!(
            "\n[[services]]\nname = \"worker-{i}\"\ncpu = 256\nmemory = 512\nport = {}\nallow_from = [\"api-gateway\"]\ndiscovery = true\n",
            10000 + i
        ));
    }
    toml
}

/// `tap --env <env>` against the bench endpoint, in the bench's working directory.
fn bench_tap(bin: &Path, endpoint: &str, workdir: &Path, env: &str) -> Command {
    let mut cmd = Command::new(bin);
    cmd.args(["--env", env, "--region", "us-east-1", "--endpoint-url", endpoint])
        .current_dir(workdir)
        .env("AWS_ACCESS_KEY_ID", "bench")
        .env("AWS_SECRET_ACCESS_KEY", "bench")
        .env_remove("AWS_PROFILE")
        .stderr(Stdio::null());
    cmd
}

/// What one measured `tap` run did.
struct Outcome {
    env: String,
    /// Its exit code (`None`: ended by a signal, or killed at the timeout).
    code: Option<i32>,
    timed_out: bool,
    /// Its JSON document, when it printed one (a failed run prints none).
    doc: Option<Value>,
    /// The process's wall time.
    wall: Duration,
    /// The last lines of its stderr: why it failed.
    stderr_tail: String,
}

impl Outcome {
    /// Exit 0, or 2 (plan: there are changes).
    fn ok(&self) -> bool {
        !self.timed_out && matches!(self.code, Some(0 | 2))
    }

    /// "exit 1", "killed after 1800 s", … and why: the failures of its JSON error document (step,
    /// action, resource, AWS code), else the end of its stderr.
    fn failure(&self, timeout: Duration) -> String {
        let how = match (self.timed_out, self.code) {
            (true, _) => format!("killed after {} s", timeout.as_secs()),
            (false, Some(code)) => format!("exit {code}"),
            (false, None) => "ended by a signal".to_owned(),
        };
        let failures: Vec<String> = self
            .doc
            .as_ref()
            .and_then(|d| d["error"]["failures"].as_array())
            .into_iter()
            .flatten()
            .map(|f| {
                ["step", "action", "resource", "code", "message"]
                    .iter()
                    .filter_map(|k| f[*k].as_str())
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect();
        let why = if failures.is_empty() {
            self.stderr_tail.clone()
        } else {
            let more = failures.len().saturating_sub(3);
            let mut why = failures.into_iter().take(3).collect::<Vec<_>>().join("; ");
            if more > 0 {
                why.push_str(&format!("; and {more} more"));
            }
            why
        };
        format!("{}: {how}: {why}", self.env)
    }

    /// The wall time of its steps, when it reported them.
    fn steps_ms(&self) -> Option<u64> {
        self.doc.as_ref().and_then(|d| d["elapsed_ms"].as_u64())
    }
}

/// One measured `tap` run of `env`, killed if it takes longer than `timeout`; its call log goes
/// to `call_log` when given.
fn measured(
    bin: &Path,
    endpoint: &str,
    workdir: &Path,
    env: &str,
    args: &[&str],
    call_log: Option<&Path>,
    timeout: Duration,
) -> Result<Outcome> {
    let mut cmd = bench_tap(bin, endpoint, workdir, env);
    cmd.args(["--output", "json"]).args(args).stdout(Stdio::piped());
    match call_log {
        Some(path) => cmd.env("RUST_LOG", "warn,tap_core::aws=debug").stderr(std::fs::File::create(path)?),
        None => cmd.stderr(Stdio::piped()),
    };
    let start = Instant::now();
    let mut child = cmd.spawn().with_context(|| display(&cmd))?;
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        pipe.map(|mut p| {
            std::thread::spawn(move || {
                let mut bytes = Vec::new();
                let _ = p.read_to_end(&mut bytes);
                bytes
            })
        })
    };
    let stdout = drain(child.stdout.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let stderr = drain(child.stderr.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let (status, timed_out) = loop {
        if let Some(status) = child.try_wait()? {
            break (Some(status), false);
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            break (None, true);
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let wall = start.elapsed();
    let joined = |h: Option<std::thread::JoinHandle<Vec<u8>>>| h.and_then(|h| h.join().ok()).unwrap_or_default();
    let out = joined(stdout);
    let mut err = String::from_utf8_lossy(&joined(stderr)).into_owned();
    if let Some(path) = call_log {
        err = std::fs::read_to_string(path).unwrap_or_default();
    }
    let tail: Vec<&str> = err.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    let stderr_tail = tail[tail.len().saturating_sub(3)..].join(" | ");
    Ok(Outcome {
        env: env.to_owned(),
        code: status.and_then(|s| s.code()),
        timed_out,
        doc: serde_json::from_slice(&out).ok(),
        wall,
        stderr_tail,
    })
}

/// One phase: `tap <args>` of every environment at once; their outcomes in order.
fn run_phase(
    bin: &Path,
    endpoint: &str,
    workdir: &Path,
    envs: &[String],
    args: &[&str],
    logs: &[Option<PathBuf>],
    timeout: Duration,
) -> Result<Vec<Outcome>> {
    std::thread::scope(|scope| {
        let runs: Vec<_> = envs
            .iter()
            .zip(logs)
            .map(|(env, log)| scope.spawn(move || measured(bin, endpoint, workdir, env, args, log.as_deref(), timeout)))
            .collect();
        runs.into_iter().map(|r| r.join().map_err(|_| anyhow::anyhow!("a bench thread panicked"))?).collect()
    })
}

/// An unmeasured `tap plan` of the environment `warm-up`, which touches every service tap uses.
fn warm_up(bin: &Path, endpoint: &str, workdir: &Path) -> Result<()> {
    let mut cmd = bench_tap(bin, endpoint, workdir, "warm-up");
    cmd.arg("plan").stderr(Stdio::piped());
    let out = cmd.output().with_context(|| display(&cmd))?;
    if !out.status.success() {
        bail!("`{}` failed: {}\n{}", display(&cmd), out.status, String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

fn median(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or(0)
}

/// One phase of one run, over its environments.
struct Sample {
    /// The steps' wall time (the longest of the environments'), or the process's when a run
    /// printed no document (it failed).
    wall_ms: u64,
    /// AWS calls as `tap` counts them (summed over environments; failed runs count none).
    calls: u64,
    mutating: u64,
    /// The longest critical path of the environments.
    critical: u64,
    rss_kb: u64,
    /// Whether every environment's run reported its steps (else the counts above are empty).
    reported: bool,
    /// The environments' runs, and the failures among them.
    outcomes: Vec<Outcome>,
    /// Calls the proxy answered with a throttling error, and all it saw.
    throttled: u64,
    proxy_calls: u64,
    /// What the rate limits impose on the calls of the phase, per bucket, largest first.
    floors: Vec<Floor>,
    /// The throttled calls per bucket (or operation), most first.
    throttled_by: Vec<(String, u64)>,
}

impl Sample {
    fn of(outcomes: Vec<Outcome>, seen: &[SeenCall], limits: Option<&RateLimits>) -> Sample {
        let docs: Vec<&Value> = outcomes.iter().filter_map(|o| o.doc.as_ref()).collect();
        let field = |doc: &Value, path: &[&str]| path.iter().fold(doc, |v, k| &v[*k]).as_u64().unwrap_or(0);
        let sum = |path: &[&str]| docs.iter().map(|d| field(d, path)).sum::<u64>();
        let max = |path: &[&str]| docs.iter().map(|d| field(d, path)).max().unwrap_or(0);
        let steps: Option<Vec<u64>> = outcomes.iter().map(Outcome::steps_ms).collect();
        let reported = steps.is_some();
        let wall_ms = match steps {
            Some(steps) => steps.into_iter().max().unwrap_or(0),
            None => outcomes.iter().map(|o| o.wall.as_millis() as u64).max().unwrap_or(0),
        };
        Sample {
            wall_ms,
            calls: sum(&["calls", "total"]),
            mutating: sum(&["calls", "mutating"]),
            critical: max(&["calls", "critical_path"]),
            rss_kb: max(&["peak_rss_kb"]),
            throttled: seen.iter().filter(|c| c.fate == Fate::Throttled).count() as u64,
            proxy_calls: seen.len() as u64,
            floors: limits.map(|l| l.floors(seen)).unwrap_or_default(),
            throttled_by: throttled_by(seen),
            reported,
            outcomes,
        }
    }

    fn failed(&self) -> usize {
        self.outcomes.iter().filter(|o| !o.ok()).count()
    }
}

/// The throttled calls among `seen`, counted per bucket that refused them (any bucket of the call
/// named) or, without buckets, per operation; most first.
fn throttled_by(seen: &[SeenCall]) -> Vec<(String, u64)> {
    let mut counts: std::collections::BTreeMap<String, u64> = std::collections::BTreeMap::new();
    for call in seen.iter().filter(|c| c.fate == Fate::Throttled) {
        let names: Vec<String> = call.buckets.iter().map(ToString::to_string).collect();
        let key = if names.is_empty() { call.operation.clone() } else { names.join(" + ") };
        *counts.entry(key).or_default() += 1;
    }
    let mut counts: Vec<(String, u64)> = counts.into_iter().collect();
    counts.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    counts
}

fn bench(args: &[String]) -> Result<()> {
    let options = BenchOptions::parse(args)?;
    let bin = std::env::var_os("XTASK_TAP_BIN").map(PathBuf::from).map_or_else(|| build_tap(true), Ok)?;
    let moto = Moto::start().context("starting moto_server")?;
    let proxy = tap_moto::proxy::Proxy::start(
        moto.port(),
        tap_moto::proxy::Faults {
            latency: Duration::from_millis(options.latency_ms),
            async_delete_window: (options.async_delete_window_s > 0)
                .then(|| Duration::from_secs(options.async_delete_window_s)),
            ..Default::default()
        },
    )?;
    let limits = (options.rate_limits || options.observe_rate_limits).then(RateLimits::aws_documented);
    let proxied =
        options.latency_ms > 0 || options.async_delete_window_s > 0 || limits.is_some() || options.environments > 1;
    let endpoint = if proxied { proxy.endpoint() } else { moto.endpoint() };
    let workdir = std::env::temp_dir().join(format!("tap-bench-{}", std::process::id()));
    std::fs::create_dir_all(&workdir)?;
    std::fs::write(workdir.join("tap.toml"), services_config(options.services))?;
    let envs = options.environment_names();
    let timeout = Duration::from_secs(options.timeout_s);
    let phases: [(&str, &[&str]); 4] = [
        ("deploy from empty", &["deploy", "--no-wait"]),
        ("no-op redeploy", &["deploy", "--no-wait"]),
        ("plan", &["plan"]),
        ("destroy", &["destroy", "--yes"]),
    ];
    let mut samples: Vec<Vec<Sample>> = phases.iter().map(|_| Vec::new()).collect();
    for run in 0..options.runs {
        moto.reset()?;
        // moto builds each service's backend on the first call in a region (EC2 alone takes
        // seconds); real AWS has no such cost, so an unmeasured plan of another environment pays
        // it, outside the rate limits; the measured phases then start from full buckets.
        proxy.set_rate_limits(None);
        warm_up(&bin, &endpoint, &workdir)?;
        if options.observe_rate_limits {
            proxy.observe_rate_limits(limits.clone());
        } else {
            proxy.set_rate_limits(limits.clone());
        }
        for (i, (name, a)) in phases.iter().enumerate() {
            eprintln!("run {}/{}: {name}", run + 1, options.runs);
            let logs: Vec<Option<PathBuf>> = envs
                .iter()
                .map(|env| {
                    let suffix = if envs.len() > 1 { format!("-{env}") } else { String::new() };
                    options
                        .call_log
                        .as_ref()
                        .map(|dir| dir.join(format!("{}-{}{suffix}.log", name.replace(' ', "-"), run + 1)))
                })
                .collect();
            if let Some(dir) = &options.call_log {
                std::fs::create_dir_all(dir)?;
            }
            let mark = proxy.calls().len();
            let outcomes = run_phase(&bin, &endpoint, &workdir, &envs, a, &logs, timeout)?;
            let seen = proxy.calls().split_off(mark);
            let sample = Sample::of(outcomes, &seen, limits.as_ref());
            for o in sample.outcomes.iter().filter(|o| !o.ok()) {
                eprintln!("run {}/{}: {name} failed: {}", run + 1, options.runs, o.failure(timeout));
            }
            samples[i].push(sample);
        }
    }
    let _ = std::fs::remove_dir_all(&workdir);
    report(&options, &phases.map(|(name, _)| name), &samples, timeout)
}

/// Prints the table, the floors, the failures and the JSON line; fails if a `tap` run failed.
fn report(options: &BenchOptions, phases: &[&str], samples: &[Vec<Sample>], timeout: Duration) -> Result<()> {
    let rate_columns = options.rate_limits || options.observe_rate_limits;
    println!(
        "services: {}, environments: {}, latency: {} ms/call, async deletions: {} s, rate limits: {}, runs: {} (medians)",
        options.services,
        options.environments,
        options.latency_ms,
        options.async_delete_window_s,
        match (options.rate_limits, options.observe_rate_limits) {
            (true, _) => "AWS documented",
            (_, true) => "AWS documented, observed only (nothing throttled)",
            _ => "off",
        },
        options.runs,
    );
    let mut header = format!(
        "{:<18} {:>7} {:>9} {:>6} {:>9} {:>9} {:>13} {:>9} {:>9}",
        "phase", "failed", "wall ms", "calls", "mutating", "critical", "crit×latency", "wall/crit", "rss MiB"
    );
    if rate_columns {
        header.push_str(&format!(" {:>6} {:>9} {:>9} {:>10}", "seen", "throttled", "floor ms", "wall/floor"));
    }
    println!("{header}");
    let mut rows = Vec::new();
    let mut notes = Vec::new();
    let mut failures = 0;
    for (name, runs) in phases.iter().zip(samples) {
        let pick = |f: &dyn Fn(&Sample) -> u64| median(runs.iter().map(f).collect());
        // What tap reports: over the runs that reported (a failed run prints no counts).
        let reported: Vec<&Sample> = runs.iter().filter(|s| s.reported).collect();
        let tap_pick = |f: &dyn Fn(&Sample) -> u64| {
            (!reported.is_empty()).then(|| median(reported.iter().map(|s| f(s)).collect()))
        };
        let wall = pick(&|s| s.wall_ms);
        let calls = tap_pick(&|s| s.calls);
        let mutating = tap_pick(&|s| s.mutating);
        let critical = tap_pick(&|s| s.critical);
        let rss_kb = tap_pick(&|s| s.rss_kb);
        let throttled = pick(&|s| s.throttled);
        let proxy_calls = pick(&|s| s.proxy_calls);
        let floor_ms = pick(&|s| s.floors.first().map_or(0, |f| f.duration.as_millis() as u64));
        let failed: usize = runs.iter().map(Sample::failed).sum();
        let attempted: usize = runs.iter().map(|s| s.outcomes.len()).sum();
        failures += failed;
        let latency_floor = critical.unwrap_or(0) * options.latency_ms;
        let ratio = |num: u64, den: u64| if den > 0 { format!("{:.2}", num as f64 / den as f64) } else { "-".into() };
        let show = |v: Option<u64>| v.map_or_else(|| "-".to_owned(), |v| v.to_string());
        let mut line = format!(
            "{name:<18} {:>7} {wall:>9} {:>6} {:>9} {:>9} {latency_floor:>13} {:>9} {:>9}",
            format!("{failed}/{attempted}"),
            show(calls),
            show(mutating),
            show(critical),
            ratio(wall, latency_floor),
            rss_kb.map_or_else(|| "-".to_owned(), |kb| format!("{:.1}", kb as f64 / 1024.0)),
        );
        if rate_columns {
            line.push_str(&format!(" {proxy_calls:>6} {throttled:>9} {floor_ms:>9} {:>10}", ratio(wall, floor_ms)));
        }
        println!("{line}");
        let floors = runs.last().map(|s| s.floors.as_slice()).unwrap_or_default();
        let floor = floors.first();
        if !floors.is_empty() {
            let top: Vec<String> = floors
                .iter()
                .take(3)
                .map(|f| {
                    format!(
                        "{} ms {} ({} calls, burst {}, refill {}/s)",
                        f.duration.as_millis(),
                        f.bucket,
                        f.calls,
                        f.limit.capacity,
                        f.limit.refill_per_second
                    )
                })
                .collect();
            notes.push(format!("floors of {name}: {}", top.join("; ")));
        }
        let throttled_by = runs.last().map(|s| s.throttled_by.clone()).unwrap_or_default();
        if !throttled_by.is_empty() {
            let top: Vec<String> = throttled_by.iter().take(5).map(|(b, n)| format!("{b} ×{n}")).collect();
            let more = throttled_by.len().saturating_sub(5);
            let more = if more > 0 { format!(", {more} more") } else { String::new() };
            notes.push(format!("throttled in {name}: {}{more}", top.join(", ")));
        }
        let errors: Vec<String> = runs
            .iter()
            .enumerate()
            .flat_map(|(r, s)| {
                s.outcomes
                    .iter()
                    .filter(|o| !o.ok())
                    .map(move |o| format!("{name}, run {}: {}", r + 1, o.failure(timeout)))
            })
            .collect();
        notes.extend(errors.iter().map(|e| format!("failed: {e}")));
        rows.push(json!({
            "phase": name, "wall_ms": wall, "calls": calls, "mutating_calls": mutating,
            "critical_path_calls": critical, "critical_path_x_latency_ms": latency_floor, "peak_rss_kb": rss_kb,
            "failed_runs": failed, "runs": attempted, "errors": errors,
            "proxy_calls": proxy_calls, "throttled_calls": throttled,
            "rate_limit_floor_ms": floor_ms, "rate_limit_floor_bucket": floor.map(|f| f.bucket.to_string()),
            // Every bucket the last run's calls went beyond the burst of: its floor in ms.
            "rate_limit_floors_ms": floors.iter().filter(|f| !f.duration.is_zero())
                .map(|f| (f.bucket.to_string(), json!(f.duration.as_millis() as u64)))
                .collect::<serde_json::Map<_, _>>(),
            "throttled_by_bucket": throttled_by.iter().map(|(b, n)| (b.clone(), json!(n))).collect::<serde_json::Map<_, _>>(),
            // Where the time went in the last run: each step's wall time (steps overlap).
            "step_ms": runs.last().and_then(|s| s.outcomes.iter().find_map(|o| o.doc.as_ref())).map(|d| d["steps"]
                .as_array().into_iter().flatten()
                .map(|s| (s["step"].as_str().unwrap_or("?").to_owned(), s["elapsed_ms"].clone()))
                .collect::<serde_json::Map<_, _>>()),
        }));
    }
    for note in &notes {
        println!("{note}");
    }
    println!(
        "{}",
        serde_json::to_string(&json!({"services": options.services, "environments": options.environments,
                "latency_ms": options.latency_ms, "async_delete_window_s": options.async_delete_window_s,
                "rate_limits": options.rate_limits, "rate_limits_observed": options.observe_rate_limits,
                "runs": options.runs, "phases": rows}))?
    );
    if failures > 0 {
        bail!("{failures} tap run(s) failed (see `failed:` above)");
    }
    Ok(())
}
