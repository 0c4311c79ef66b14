//! Developer automation, rust-analyzer style: `cargo xtask <ci|demo|bench>`.
//!
//! - `ci`: `cargo fmt --check`, `cargo clippy -D warnings`, and every test (the end-to-end tests
//!   start their own `moto_server`; it is installed first when missing).
//! - `demo`: the main job end to end against a local emulator: deploy, show the plan is empty,
//!   print the outputs, destroy.
//! - `bench`: wall time and AWS calls of deploy from empty, a no-op redeploy, plan and destroy.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use tap_moto::Moto;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let root = tap_moto::workspace_root();
    std::env::set_current_dir(&root)?;
    match args.first().map(String::as_str) {
        Some("ci") => ci(),
        Some("demo") => demo(),
        Some("bench") => bench(&args[1..]),
        _ => {
            eprintln!("usage: cargo xtask <ci|demo|bench [--runs N]>");
            std::process::exit(2)
        }
    }
}

fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
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
    std::iter::once(cmd.get_program()).chain(cmd.get_args()).map(|s| s.to_string_lossy().into_owned()).collect::<Vec<_>>().join(" ")
}

fn ci() -> Result<()> {
    run(cargo().args(["fmt", "--all", "--", "--check"]))?;
    run(cargo().args(["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"]))?;
    let moto = tap_moto::moto_server_path().context("installing moto_server")?;
    run(cargo().args(["build", "--package", "tap-cli", "--bin", "tap"]))?;
    run(cargo().args(["test", "--workspace"]).env("MOTO_SERVER", moto))?;
    Ok(())
}

/// Builds `tap` and returns its path.
fn build_tap() -> Result<PathBuf> {
    run(cargo().args(["build", "--quiet", "--package", "tap-cli", "--bin", "tap"]))?;
    let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("target"));
    Ok(target.join("debug").join("tap"))
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
    let bin = build_tap()?;
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

/// One measured `tap` run: its JSON document.
fn measured(bin: &Path, moto: &Moto, args: &[&str]) -> Result<Value> {
    let mut cmd = tap(bin, moto, "bench", "us-east-1");
    cmd.args(["--output", "json"]).args(args).stderr(Stdio::null());
    let out = cmd.output().with_context(|| display(&cmd))?;
    if !out.status.success() && out.status.code() != Some(2) {
        bail!("`{}` failed: {}", display(&cmd), out.status);
    }
    Ok(serde_json::from_slice(&out.stdout)?)
}

fn median(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or(0)
}

fn bench(args: &[String]) -> Result<()> {
    let runs: usize = match args.iter().position(|a| a == "--runs") {
        Some(i) => args.get(i + 1).context("--runs needs a number")?.parse()?,
        None => 3,
    };
    let bin = build_tap()?;
    let moto = Moto::start().context("starting moto_server")?;
    let phases: [(&str, &[&str]); 4] = [
        ("deploy from empty", &["deploy", "--no-wait"]),
        ("no-op redeploy", &["deploy", "--no-wait"]),
        ("plan", &["plan"]),
        ("destroy", &["destroy", "--yes"]),
    ];
    let mut samples: Vec<Vec<Value>> = vec![Vec::new(); phases.len()];
    for _ in 0..runs {
        moto.reset()?;
        for (i, (_, a)) in phases.iter().enumerate() {
            samples[i].push(measured(&bin, &moto, a)?);
        }
    }
    let mut rows = Vec::new();
    println!("{:<20} {:>10} {:>8} {:>9}", "phase", "wall ms", "calls", "mutating");
    for ((name, _), runs) in phases.iter().zip(&samples) {
        let wall = median(runs.iter().map(|r| r["elapsed_ms"].as_u64().unwrap_or(0)).collect());
        let calls = median(runs.iter().map(|r| r["calls"]["total"].as_u64().unwrap_or(0)).collect());
        let mutating = median(runs.iter().map(|r| r["calls"]["mutating"].as_u64().unwrap_or(0)).collect());
        println!("{name:<20} {wall:>10} {calls:>8} {mutating:>9}");
        rows.push(json!({"phase": name, "wall_ms_median": wall, "calls": calls, "mutating_calls": mutating, "runs": runs.len()}));
    }
    println!("{}", serde_json::to_string(&json!({"bench": rows}))?);
    Ok(())
}
