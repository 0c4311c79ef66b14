//! End-to-end test harness: one `moto_server` per test binary on a free 127.0.0.1 port, the real
//! `tap` binary run against it, and SDK clients to read back what it built.
//!
//! Every test uses its own environment suffix and its own region ([`TestEnv::new`]), so tests in one
//! binary run in parallel against the same emulator without touching each other (moto keeps state
//! per region; IAM is global, and its names carry the suffix).

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

use tap_core::aws::AwsClients;

pub use tap_moto::Moto;

/// The emulator shared by the tests of this binary, started (and emptied) on first use.
pub fn moto() -> &'static Moto {
    static MOTO: OnceLock<Moto> = OnceLock::new();
    MOTO.get_or_init(|| {
        let moto = Moto::start().expect("start moto_server (see tap-moto: MOTO_SERVER, .tap/moto-venv or PATH)");
        moto.reset().expect("reset moto_server");
        moto
    })
}

/// The `tap` binary of this build (`TAP_BIN` overrides).
///
/// `cargo test --workspace` builds it before any test runs (tap-cli's own integration test needs
/// it); when running only this package, build it first: `cargo build -p tap-cli`. Building it from
/// here is not an option: cargo holds the build lock while tests run.
pub fn tap_binary() -> PathBuf {
    if let Some(bin) = std::env::var_os("TAP_BIN") {
        return PathBuf::from(bin);
    }
    // target/<profile>/deps/<this test> → target/<profile>/tap
    let exe = std::env::current_exe().expect("current exe");
    let bin = exe.parent().and_then(|d| d.parent()).expect("target dir").join("tap");
    assert!(bin.is_file(), "{} is missing: run `cargo build -p tap-cli` first (cargo xtask ci does)", bin.display());
    bin
}

/// Regions moto knows; each test takes the next one.
const REGIONS: &[&str] = &[
    "us-east-1",
    "us-east-2",
    "us-west-1",
    "us-west-2",
    "eu-west-1",
    "eu-west-2",
    "eu-west-3",
    "eu-central-1",
    "eu-north-1",
    "ap-southeast-1",
    "ap-southeast-2",
    "ap-northeast-1",
    "ap-northeast-2",
    "ap-south-1",
    "ca-central-1",
    "sa-east-1",
];

/// The outcome of one `tap` run.
#[derive(Debug)]
pub struct Run {
    /// Exit code (`None` when killed by a signal).
    pub code: Option<i32>,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Run {
    fn from(out: Output) -> Run {
        Run {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Panics with both streams unless the exit code is `code`.
    pub fn expect_code(self, code: i32) -> Run {
        assert_eq!(
            self.code,
            Some(code),
            "tap exited {:?}\n--- stdout\n{}\n--- stderr\n{}",
            self.code,
            self.stdout,
            self.stderr
        );
        self
    }

    /// Panics unless it succeeded.
    pub fn success(self) -> Run {
        self.expect_code(0)
    }

    /// Stdout parsed as one JSON document.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}\n--- stderr\n{}", self.stdout, self.stderr))
    }
}

/// One test's environment: its own suffix and region on the shared emulator.
#[derive(Debug, Clone)]
pub struct TestEnv {
    /// Environment suffix.
    pub suffix: String,
    /// Region.
    pub region: String,
    /// Emulator endpoint.
    pub endpoint: String,
}

impl TestEnv {
    /// A fresh environment named `suffix` in a region no other test of this binary uses.
    pub fn new(suffix: &str) -> TestEnv {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let i = NEXT.fetch_add(1, Ordering::SeqCst);
        assert!(i < REGIONS.len(), "more tests in one binary than regions; share a region with distinct suffixes");
        TestEnv { suffix: suffix.into(), region: REGIONS[i].into(), endpoint: moto().endpoint() }
    }

    /// A second environment in the same region as this one.
    pub fn sibling(&self, suffix: &str) -> TestEnv {
        TestEnv { suffix: suffix.into(), ..self.clone() }
    }

    /// The `tap` command with this environment's suffix, region, endpoint and dummy credentials.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(tap_binary());
        cmd.args(["--env", &self.suffix, "--region", &self.region, "--endpoint-url", &self.endpoint])
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env_remove("AWS_PROFILE")
            .env_remove("AWS_ENDPOINT_URL")
            .env("NO_COLOR", "1")
            .env("RUST_LOG", "info")
            .current_dir(std::env::temp_dir())
            .stdin(Stdio::null());
        cmd
    }

    /// Runs `tap <args>` and collects its output.
    pub fn tap(&self, args: &[&str]) -> Run {
        Run::from(self.command().args(args).output().expect("run tap"))
    }

    /// SDK clients for this environment's region on the emulator, to read back what tap built.
    pub async fn clients(&self) -> AwsClients {
        let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new(self.region.clone()))
            .endpoint_url(&self.endpoint)
            .credentials_provider(aws_sdk_ec2::config::Credentials::new("testing", "testing", None, None, "tap-tests"))
            .load()
            .await;
        AwsClients::from_sdk_config(config)
    }
}
