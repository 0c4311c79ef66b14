//! Developer automation, rust-analyzer style: `cargo xtask <ci|tidy|demo|bench|dist|release|package>`.
//!
//! - `tidy`: the architecture invariants a machine can check (see [`tidy`] and ARCHITECTURE.md):
//!   each concern crate's normal dependencies, `//!` docs at each crate root, no `todo!`.
//! - `ci`: `cargo fmt --check`, tidy, `cargo clippy -D warnings`, and every test (the end-to-end tests
//!   start their own `moto_server`; it is installed first when missing).
//! - `demo`: the main job end to end against a local emulator: deploy, show the plan is empty,
//!   print the outputs, destroy.
//! - `bench`: wall time and AWS calls of deploy from empty, a no-op redeploy, plan and destroy.
//! - `dist [--target T]`: the release archive with completions, man pages, `SHA256SUMS` and a
//!   CycloneDX SBOM, smoke-tested (see [`dist`], [`sbom`]).
//! - `release <version> [--execute]`: bump, date the CHANGELOG, commit and tag; a dry run unless
//!   `--execute` (see [`release`]).
//! - `package`: `cargo package` of every publishable library crate (see [`package`]).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
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
                "usage: cargo xtask <ci|tidy|demo|bench [--runs N] [--latency-ms N] [--services N] [--async-delete-window-s N] [--call-log DIR]\n\
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

/// Bench options: `--runs N`, `--latency-ms N`, `--services N`, `--async-delete-window-s N`.
struct BenchOptions {
    runs: usize,
    latency_ms: u64,
    services: usize,
    /// `--async-delete-window-s N`: the proxy models AWS's asynchronous deletions, each taking N s
    /// (`tap_moto::async_deletes`); 0: off.
    async_delete_window_s: u64,
    /// `--call-log DIR`: each measured run's call log (every AWS call, its end time and duration).
    call_log: Option<PathBuf>,
}

impl BenchOptions {
    fn parse(args: &[String]) -> Result<BenchOptions> {
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
        };
        if options.runs == 0 || options.services == 0 || options.services > 200 {
            bail!("--runs must be at least 1 and --services between 1 and 200");
        }
        Ok(options)
    }
}

/// A `tap.toml` with the three default services plus generated ones, up to `count` services.
fn services_config(count: usize) -> String {
    let mut toml = String::from(
        r#"[[services]]
name = "frontend"
cpu = 512
memory = 1024
port = 3000
environment = { NODE_ENV = "production", API_ENDPOINT = "http://{alb_dns}/api" }
route = { short_name = "fe", health_check_path = "/" }

[[services]]
name = "api-gateway"
cpu = 1024
memory = 2048
port = 8080
environment = { PROCESSING_SERVICE_URL = "http://processing-service.{namespace}:9000" }
secrets = { DB_CREDENTIALS = "db-credentials", API_KEYS = "api-keys" }
route = { short_name = "api", path_pattern = "/api/*", priority = 10, health_check_path = "/health" }
permissions = ["discover-instances"]

[[services]]
name = "processing-service"
cpu = 2048
memory = 4096
port = 9000
environment = { WORKER_THREADS = "4" }
secrets = { DB_CREDENTIALS = "db-credentials" }
discovery = true
allow_from = ["api-gateway"]
permissions = ["trade-data-bucket"]
"#,
    );
    for i in 3..count {
        toml.push_str(&format!(
            "\n[[services]]\nname = \"worker-{i}\"\ncpu = 256\nmemory = 512\nport = {}\nallow_from = [\"api-gateway\"]\ndiscovery = true\n",
            10000 + i
        ));
    }
    if count < 3 {
        keep_first_services(&mut toml, count);
    }
    toml
}

/// Keeps only the first `count` default services (routed ones first, so the listener keeps its default).
fn keep_first_services(toml: &mut String, count: usize) {
    let parts: Vec<&str> = toml.split("[[services]]").filter(|p| !p.trim().is_empty()).collect();
    *toml = parts.iter().take(count).map(|p| format!("[[services]]{p}")).collect();
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

/// One measured `tap` run: its JSON document; its call log goes to `call_log` when given.
fn measured(bin: &Path, endpoint: &str, workdir: &Path, args: &[&str], call_log: Option<&Path>) -> Result<Value> {
    let mut cmd = bench_tap(bin, endpoint, workdir, "bench");
    cmd.args(["--output", "json"]).args(args);
    if let Some(path) = call_log {
        cmd.env("RUST_LOG", "warn,tap_core::aws=debug").stderr(std::fs::File::create(path)?);
    }
    let out = cmd.output().with_context(|| display(&cmd))?;
    if !out.status.success() && out.status.code() != Some(2) {
        bail!("`{}` failed: {}", display(&cmd), out.status);
    }
    Ok(serde_json::from_slice(&out.stdout)?)
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

fn bench(args: &[String]) -> Result<()> {
    let options = BenchOptions::parse(args)?;
    let bin = std::env::var_os("XTASK_TAP_BIN").map(PathBuf::from).map_or_else(|| build_tap(true), Ok)?;
    let moto = Moto::start().context("starting moto_server")?;
    let proxy = tap_moto::proxy::Proxy::start(
        moto.port(),
        tap_moto::proxy::Faults {
            latency: std::time::Duration::from_millis(options.latency_ms),
            async_delete_window: (options.async_delete_window_s > 0)
                .then(|| std::time::Duration::from_secs(options.async_delete_window_s)),
            ..Default::default()
        },
    )?;
    let proxied = options.latency_ms > 0 || options.async_delete_window_s > 0;
    let endpoint = if proxied { proxy.endpoint() } else { moto.endpoint() };
    let workdir = std::env::temp_dir().join(format!("tap-bench-{}", std::process::id()));
    std::fs::create_dir_all(&workdir)?;
    std::fs::write(workdir.join("tap.toml"), services_config(options.services))?;
    let phases: [(&str, &[&str]); 4] = [
        ("deploy from empty", &["deploy", "--no-wait"]),
        ("no-op redeploy", &["deploy", "--no-wait"]),
        ("plan", &["plan"]),
        ("destroy", &["destroy", "--yes"]),
    ];
    let mut samples: Vec<Vec<Value>> = vec![Vec::new(); phases.len()];
    for run in 0..options.runs {
        moto.reset()?;
        // moto builds each service's backend on the first call in a region (EC2 alone takes
        // seconds); real AWS has no such cost, so an unmeasured plan of another environment pays it.
        warm_up(&bin, &endpoint, &workdir)?;
        for (i, (name, a)) in phases.iter().enumerate() {
            eprintln!("run {}/{}: {name}", run + 1, options.runs);
            let log =
                options.call_log.as_ref().map(|dir| dir.join(format!("{}-{}.log", name.replace(' ', "-"), run + 1)));
            if let Some(dir) = &options.call_log {
                std::fs::create_dir_all(dir)?;
            }
            samples[i].push(measured(&bin, &endpoint, &workdir, a, log.as_deref())?);
        }
    }
    let _ = std::fs::remove_dir_all(&workdir);
    println!(
        "services: {}, latency: {} ms/call, async deletions: {} s, runs: {} (medians)\n{:<18} {:>9} {:>6} {:>9} {:>9} {:>13} {:>9} {:>9}",
        options.services,
        options.latency_ms,
        options.async_delete_window_s,
        options.runs,
        "phase",
        "wall ms",
        "calls",
        "mutating",
        "critical",
        "crit×latency",
        "wall/crit",
        "rss MiB"
    );
    let mut rows = Vec::new();
    for ((name, _), runs) in phases.iter().zip(&samples) {
        let pick = |f: &dyn Fn(&Value) -> u64| median(runs.iter().map(f).collect());
        let wall = pick(&|r| r["elapsed_ms"].as_u64().unwrap_or(0));
        let calls = pick(&|r| r["calls"]["total"].as_u64().unwrap_or(0));
        let mutating = pick(&|r| r["calls"]["mutating"].as_u64().unwrap_or(0));
        let critical = pick(&|r| r["calls"]["critical_path"].as_u64().unwrap_or(0));
        let rss_kb = pick(&|r| r["peak_rss_kb"].as_u64().unwrap_or(0));
        let floor = critical * options.latency_ms;
        let ratio = if floor > 0 { format!("{:.2}", wall as f64 / floor as f64) } else { "-".into() };
        println!(
            "{name:<18} {wall:>9} {calls:>6} {mutating:>9} {critical:>9} {floor:>13} {ratio:>9} {:>9.1}",
            rss_kb as f64 / 1024.0
        );
        rows.push(json!({
            "phase": name, "wall_ms": wall, "calls": calls, "mutating_calls": mutating,
            "critical_path_calls": critical, "critical_path_x_latency_ms": floor, "peak_rss_kb": rss_kb,
            // Where the time went in the last run: each step's wall time (steps overlap).
            "step_ms": runs.last().map(|r| r["steps"].as_array().into_iter().flatten()
                .map(|s| (s["step"].as_str().unwrap_or("?").to_owned(), s["elapsed_ms"].clone()))
                .collect::<serde_json::Map<_, _>>()),
        }));
    }
    println!(
        "{}",
        serde_json::to_string(&json!({"services": options.services, "latency_ms": options.latency_ms,
                "async_delete_window_s": options.async_delete_window_s, "runs": options.runs, "phases": rows}))?
    );
    Ok(())
}
