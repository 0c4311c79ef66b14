//! The `tap` command line itself: help, and bad input rejected before any AWS call.
//!
//! Malformed configs point `--endpoint-url` at a loopback listener owned by the test: it must see
//! no connection at all, so the rejection provably happened before any AWS call.

use std::io::Read;
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tests::tap_command;

/// A loopback listener that counts every connection made to it.
struct CallTrap {
    port: u16,
    connections: Arc<AtomicUsize>,
}

impl CallTrap {
    fn new() -> CallTrap {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let connections = Arc::new(AtomicUsize::new(0));
        let seen = connections.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                seen.fetch_add(1, Ordering::SeqCst);
                let mut s = stream;
                let _ = s.set_read_timeout(Some(Duration::from_millis(100)));
                let _ = s.read(&mut [0u8; 1024]);
            }
        });
        CallTrap { port, connections }
    }
}

fn workdir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tap-cli-test-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

struct Case {
    name: &'static str,
    args: &'static [&'static str],
    env: &'static [(&'static str, &'static str)],
    toml: Option<&'static str>,
    expect: &'static [&'static str],
}

const CASES: &[Case] = &[
    Case { name: "bad-suffix", args: &["--env", "Bad_Suffix!", "plan"], env: &[], toml: None, expect: &["`environment`", "Bad_Suffix!", "lowercase"] },
    Case { name: "empty-suffix", args: &["--env", "", "plan"], env: &[], toml: None, expect: &["`environment`", "empty"] },
    Case { name: "dash-suffix", args: &["--env", "dev-", "plan"], env: &[], toml: None, expect: &["`environment`", "start or end"] },
    Case {
        name: "long-suffix",
        args: &["--env", "abcdefghijklmnopqrstuvwxyz0123", "plan"],
        env: &[],
        toml: None,
        expect: &["`environment`", "load balancer", "32"],
    },
    Case {
        name: "fargate-pair",
        args: &["plan"],
        env: &[],
        toml: Some("[[services]]\nname = \"web\"\ncpu = 512\nmemory = 8192\nport = 80\n"),
        expect: &["`services[0].memory`", "8192", "Fargate"],
    },
    Case {
        name: "bad-cidr-env",
        args: &["plan"],
        env: &[("TAP_NETWORK__VPC_CIDR", "10.0.0.0/33")],
        toml: None,
        expect: &["`network.vpc_cidr`", "10.0.0.0/33"],
    },
    Case {
        name: "overlap",
        args: &["plan"],
        env: &[],
        toml: Some("[network]\nprivate_subnet_cidrs = [\"10.0.1.0/24\", \"10.0.11.0/24\", \"10.0.12.0/24\"]\n"),
        expect: &["`network.private_subnet_cidrs[0]`", "overlaps"],
    },
    Case {
        name: "outside-vpc",
        args: &["plan"],
        env: &[],
        toml: Some("[network]\npublic_subnet_cidrs = [\"10.0.0.0/24\", \"10.0.1.0/24\", \"192.168.0.0/24\"]\n"),
        expect: &["`network.public_subnet_cidrs[2]`", "outside the VPC"],
    },
    Case {
        name: "scaling",
        args: &["plan"],
        env: &[("TAP_SCALING__MIN_CAPACITY", "20")],
        toml: None,
        expect: &["`scaling.min_capacity`", "20", "max_capacity"],
    },
    Case {
        name: "dup-port",
        args: &["plan"],
        env: &[],
        toml: Some(
            "[[services]]\nname = \"a\"\ncpu = 256\nmemory = 512\nport = 80\n[[services]]\nname = \"b\"\ncpu = 256\nmemory = 512\nport = 80\n",
        ),
        expect: &["`services[1].port`", "unique"],
    },
    Case {
        name: "unknown-key",
        args: &["plan"],
        env: &[],
        toml: Some("[network]\nvpc_cdir = \"10.0.0.0/16\"\n"),
        expect: &["vpc_cdir"],
    },
    Case {
        name: "retention",
        args: &["plan"],
        env: &[("TAP_LOGS__RETENTION_DAYS", "31")],
        toml: None,
        expect: &["`logs.retention_days`", "31"],
    },
    Case {
        name: "hyphen-suffix",
        args: &["--env", "-lead", "plan"],
        env: &[],
        toml: None,
        expect: &["`environment`", "-lead", "start or end"],
    },
    Case {
        name: "service-named-alb",
        args: &["plan"],
        env: &[],
        toml: Some("[[services]]\nname = \"alb\"\ncpu = 256\nmemory = 512\nport = 80\n"),
        expect: &["`services[0].name`", "tap-alb-sg-dev", "load balancer's security group"],
    },
    Case {
        name: "every-problem",
        args: &["plan"],
        env: &[("TAP_LOGS__RETENTION_DAYS", "31"), ("TAP_SCALING__MIN_CAPACITY", "20"), ("TAP_ENVIRONMENT", "Dev")],
        toml: None,
        expect: &["3 problems", "`environment`", "`scaling.min_capacity`", "`logs.retention_days`"],
    },
    Case {
        name: "image-tag",
        args: &["deploy", "--no-wait", "--image-tag", "bad tag"],
        env: &[],
        toml: None,
        expect: &["`image_tag`", "bad tag"],
    },
];

#[test]
fn malformed_configs_are_rejected_before_any_aws_call() {
    let trap = CallTrap::new();
    for case in CASES {
        let dir = workdir(case.name);
        if let Some(toml) = case.toml {
            std::fs::write(dir.join("tap.toml"), toml).unwrap();
        }
        let out = tap_command()
            .args(["--region", "us-east-1", "--endpoint-url", &format!("http://127.0.0.1:{}", trap.port)])
            .args(case.args)
            .envs(case.env.iter().copied())
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .current_dir(&dir)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{}: expected exit 1, stderr:\n{stderr}", case.name);
        for needle in case.expect {
            assert!(stderr.contains(needle), "{}: stderr lacks {needle:?}:\n{stderr}", case.name);
        }
        assert!(out.stdout.is_empty(), "{}: nothing on stdout", case.name);
        let _ = std::fs::remove_dir_all(&dir);
    }
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(trap.connections.load(Ordering::SeqCst), 0, "a rejected config must make no AWS call");
    assert!(CASES.len() >= 14);
}

#[test]
fn missing_config_file_is_named() {
    let out = tap_command().args(["--config", "/nonexistent/tap.toml", "plan"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/tap.toml"));
}

#[test]
fn help_lists_the_commands_and_global_flags() {
    let out = tap_command().arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for word in [
        "deploy",
        "plan",
        "destroy",
        "outputs",
        "status",
        "--config",
        "--env",
        "--region",
        "--profile",
        "--endpoint-url",
        "--output",
        "--log-format",
        "--stats",
    ] {
        assert!(help.contains(word), "help lacks {word}:\n{help}");
    }
    let deploy = tap_command().args(["deploy", "--help"]).output().unwrap();
    let deploy = String::from_utf8_lossy(&deploy.stdout);
    assert!(deploy.contains("--no-wait") && deploy.contains("--image-tag"), "{deploy}");
    let plan = tap_command().args(["plan", "--help"]).output().unwrap();
    assert!(String::from_utf8_lossy(&plan.stdout).contains("--detailed-exitcode"));
}

#[test]
fn destroy_without_yes_refuses_when_stdin_is_not_a_terminal() {
    let trap = CallTrap::new();
    let out = tap_command()
        .args(["--region", "us-east-1", "--endpoint-url", &format!("http://127.0.0.1:{}", trap.port), "destroy"])
        .stdin(std::process::Stdio::null())
        .current_dir(std::env::temp_dir())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--yes"));
    assert_eq!(trap.connections.load(Ordering::SeqCst), 0);
}

/// A directory without `tap.toml`, for runs that must see no configuration file.
fn empty_dir(name: &str) -> PathBuf {
    let dir = workdir(name);
    let _ = std::fs::remove_file(dir.join("tap.toml"));
    dir
}

#[test]
fn each_configuration_error_is_shown_once() {
    let dir = workdir("shown-once");
    std::fs::write(dir.join("tap.toml"), "[network]\nvpc_cdir = \"10.0.0.0/16\"\n").unwrap();
    let out = tap_command().args(["--region", "us-east-1", "plan"]).current_dir(&dir).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.matches("unknown field").count(), 1, "shown once:\n{stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line:\n{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_run_without_a_region_prints_only_taps_error_line() {
    let dir = empty_dir("no-region");
    // Empty AWS config files: no profile gives a region (a missing file would earn its own warning).
    std::fs::write(dir.join("aws-config"), "").unwrap();
    std::fs::write(dir.join("aws-credentials"), "").unwrap();
    let out = tap_command()
        .args(["plan"])
        .env_remove("AWS_REGION")
        .env_remove("AWS_DEFAULT_REGION")
        .env_remove("AWS_PROFILE")
        .env_remove("RUST_LOG")
        .env_remove("TAP_AWS__REGION")
        .env("AWS_CONFIG_FILE", dir.join("aws-config"))
        .env("AWS_SHARED_CREDENTIALS_FILE", dir.join("aws-credentials"))
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .current_dir(&dir)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(out.stdout.is_empty());
    assert_eq!(
        stderr,
        "error: no AWS region: pass --region, set AWS_REGION, or set `aws.region` in tap.toml (or a region in your profile)\n"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn cost_itemizes_the_configured_environment_without_an_aws_call() {
    let trap = CallTrap::new();
    let dir = empty_dir("cost");
    let run = |args: &[&str]| {
        tap_command()
            .args(["--region", "us-east-1", "--endpoint-url", &format!("http://127.0.0.1:{}", trap.port)])
            .args(args)
            .env_remove("RUST_LOG")
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .current_dir(&dir)
            .output()
            .unwrap()
    };
    let out = run(&["--output", "json", "cost"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.stderr.is_empty(), "no logs: {}", String::from_utf8_lossy(&out.stderr));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["currency"], "USD");
    let items = doc["items"].as_array().unwrap();
    let monthly =
        |r: &str| items.iter().filter(|i| i["resource"] == r).map(|i| i["monthly"].as_f64().unwrap()).sum::<f64>();
    assert_eq!(monthly("network/nat/2"), 32.85, "730 h × $0.045");
    assert_eq!(monthly("network/eip/2"), 3.65, "730 h × $0.005");
    let sum: f64 = items.iter().map(|i| i["monthly"].as_f64().unwrap()).sum();
    assert!((sum - doc["monthly"].as_f64().unwrap()).abs() < 0.05, "{doc}");
    assert!(!doc["not_included"].as_array().unwrap().is_empty());

    let single = tap_command()
        .args(["--region", "us-east-1", "--output", "json", "cost"])
        .env("TAP_NETWORK__NAT_GATEWAYS", "single")
        .env("TAP_COST__PRICES__NAT_GATEWAY_HOUR", "0.04")
        .current_dir(&dir)
        .output()
        .unwrap();
    let single: serde_json::Value = serde_json::from_slice(&single.stdout).unwrap();
    let nats: Vec<&serde_json::Value> = single["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["resource"].as_str().unwrap().starts_with("network/nat/"))
        .collect();
    assert_eq!(nats.len(), 1);
    assert_eq!(nats[0]["monthly"], 29.2, "the negotiated price: 730 h × $0.04");

    let text = run(&["cost"]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("network/nat/3") && text.contains("total") && text.contains("Not included"), "{text}");
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(trap.connections.load(Ordering::SeqCst), 0, "the estimate needs no AWS call");
    let _ = std::fs::remove_dir_all(&dir);
}
