//! Each concern crate runs alone: its `examples/<crate>_alone.rs` (which uses only that crate and
//! tap-core) is run against the shared moto_server and must succeed and print what it made.
//!
//! `cargo test --workspace` builds every example before any test runs; a narrower selection must
//! build them first (`cargo build --workspace --examples`).

use std::path::PathBuf;
use std::process::Command;

/// The example binary `name` of this build: `<target>/debug/examples/<name>`, beside the
/// `deps/` folder this test binary runs from.
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let profile_dir = exe.parent().and_then(|deps| deps.parent()).expect("target profile folder");
    let path = profile_dir.join("examples").join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(path.is_file(), "{} is not built: run `cargo build --workspace --examples` first", path.display());
    path
}

/// Runs example `name` against the emulator; its stdout, after asserting it succeeded and shows
/// each of `expected`.
fn run_alone(name: &str, expected: &[&str]) -> String {
    let out = Command::new(example(name))
        .env("AWS_ENDPOINT_URL", tests::moto().endpoint())
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env_remove("AWS_PROFILE")
        .output()
        .expect("run the example");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{name} failed: {}\nstdout:\n{stdout}\nstderr:\n{stderr}", out.status);
    for text in expected {
        assert!(stdout.contains(text), "{name} did not print {text:?}:\n{stdout}");
    }
    stdout.into_owned()
}

#[test]
fn network_runs_alone() {
    run_alone("network_alone", &["+ network/vpc", "second plan: 0 change(s)", "- network/vpc"]);
}

#[test]
fn registry_runs_alone() {
    run_alone(
        "registry_alone",
        &["+ registry/repository/frontend", "second plan: 0 change(s)", "- registry/repository/frontend"],
    );
}

#[test]
fn cluster_runs_alone() {
    run_alone(
        "cluster_alone",
        &["+ cluster/ecs-cluster (tap-cluster-cluster-alone)", "second plan: 0 change(s)", "- cluster/ecs-cluster"],
    );
}

#[test]
fn security_runs_alone() {
    run_alone(
        "security_alone",
        &[
            "+ security/sg/alb",
            "+ security/role/task-execution",
            "second plan: 0 change(s)",
            "- security/secret/db-credentials",
        ],
    );
}

#[test]
fn ingress_runs_alone() {
    run_alone("ingress_alone", &["load balancer http://", "destroy:"]);
}

#[test]
fn discovery_runs_alone() {
    run_alone(
        "discovery_alone",
        &["+ discovery/namespace", "second plan: 0 change(s)", "- discovery/namespace (tap-discovery-alone.local)"],
    );
}

#[test]
fn services_plans_alone() {
    run_alone(
        "services_alone",
        &["+ services/ecs-service/frontend", "+ services/log-group/api-gateway", "(mutating: 0)"],
    );
}

#[test]
fn alarms_runs_alone() {
    run_alone(
        "alarms_alone",
        &[
            "+ alarms/cpu-high/frontend (tap-alarms-alone-frontend-cpu-high)",
            "+ alarms/target-5xx/api-gateway",
            "second plan: 0 change(s)",
            "- alarms/memory-high/processing-service",
        ],
    );
}
