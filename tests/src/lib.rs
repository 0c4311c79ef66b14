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

use tap_core::aws::AwsSession;

/// Every item of a paginated SDK listing (`$request.into_paginator().items()`); panics naming `$op`.
macro_rules! all_items {
    ($request:expr, $op:literal) => {
        $request.into_paginator().items().send().try_collect().await.expect($op)
    };
}

/// Every page of a paginated SDK listing; panics naming `$op`.
macro_rules! all_pages {
    ($request:expr, $op:literal) => {
        $request.into_paginator().send().try_collect().await.expect($op)
    };
}

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

/// The `tap` binary, never asking the instance-metadata address: no test does (the credential and
/// region chain would probe it when something is missing).
pub fn tap_command() -> Command {
    let mut cmd = Command::new(tap_binary());
    cmd.env("AWS_EC2_METADATA_DISABLED", "true");
    cmd
}

/// The `tap` binary of this build, built by this test run (`TAP_BIN` overrides).
///
/// The first call has Cargo build it as `cargo test --workspace` (what `cargo xtask ci` runs)
/// builds it, into this test binary's own target dir and profile: `cargo test --workspace
/// --no-run`, a no-op under `cargo xtask ci`. So a test never runs a `tap` older than the sources,
/// e.g. after `cargo test -p tests` alone, which builds no binary. (Not `cargo build -p tap-cli`:
/// without the workspace's dev-dependencies it unifies other features and would build the AWS SDK
/// crates and the binary a second way.) Cargo has released its build lock while tests run.
pub fn tap_binary() -> PathBuf {
    if let Some(bin) = std::env::var_os("TAP_BIN") {
        return PathBuf::from(bin);
    }
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(build_tap).clone()
}

/// Builds `tap` as [`tap_binary`] says; its path.
fn build_tap() -> PathBuf {
    // <target>/<profile>/deps/<this test>
    let exe = std::env::current_exe().expect("current exe");
    let profile_dir = exe.parent().and_then(|d| d.parent()).expect("the profile's dir");
    let target_dir = profile_dir.parent().expect("the target dir");
    let mut cargo = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    // Cargo gives a test its package's variables (CARGO_MANIFEST_DIR, CARGO_PKG_*, …): inherited,
    // they would count as changed for build scripts that watch them (ring's does) and rebuild the
    // SDK's TLS stack for nothing. The user's own Cargo settings stay.
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        let setting = ["CARGO_HOME", "CARGO_TARGET_DIR", "CARGO_INCREMENTAL", "CARGO_LOG"].contains(&key.as_ref())
            || ["CARGO_BUILD_", "CARGO_TERM_", "CARGO_NET_", "CARGO_HTTP_", "CARGO_REGISTR", "CARGO_PROFILE_"]
                .iter()
                .any(|p| key.starts_with(p));
        if (key.starts_with("CARGO") && !setting) || key == "OUT_DIR" {
            cargo.env_remove(key.as_ref());
        }
    }
    cargo.args(["test", "--workspace", "--no-run", "--quiet", "--manifest-path"]);
    cargo.arg(tap_moto::workspace_root().join("Cargo.toml")).arg("--target-dir").arg(target_dir);
    match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") | None => {}
        Some("release") => {
            cargo.arg("--release");
        }
        Some(name) => {
            cargo.args(["--profile", name]);
        }
    }
    let out = cargo.stdin(Stdio::null()).output().expect("run cargo to build tap");
    assert!(out.status.success(), "building tap failed:\n{}", String::from_utf8_lossy(&out.stderr));
    let bin = profile_dir.join(format!("tap{}", std::env::consts::EXE_SUFFIX));
    assert!(bin.is_file(), "{} is missing after cargo built it", bin.display());
    bin
}

/// The mutating operations of a run's JSON document (`calls.by_operation`), with their counts.
pub fn mutating_calls(doc: &serde_json::Value) -> std::collections::BTreeMap<String, u64> {
    doc["calls"]["by_operation"]
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(op, _)| tap_core::aws::is_mutating(op.rsplit(':').next().unwrap_or(op)))
        .map(|(op, n)| (op.clone(), n.as_u64().unwrap_or(0)))
        .collect()
}

/// The 12 stack outputs of SPEC.md's platform, as `tap outputs` names them.
pub const SPEC_OUTPUT_KEYS: [&str; 12] = [
    "vpcId",
    "albDnsName",
    "clusterName",
    "clusterArn",
    "frontendServiceArn",
    "apiGatewayServiceArn",
    "processingServiceArn",
    "frontendEcrUrl",
    "apiGatewayEcrUrl",
    "processingServiceEcrUrl",
    "publicSubnetIds",
    "privateSubnetIds",
];

/// `tap --output json <args>` in `env` that must exit with `code`: its JSON document.
pub fn tap_json(env: &TestEnv, args: &[&str], code: i32) -> serde_json::Value {
    let mut all = vec!["--output", "json"];
    all.extend_from_slice(args);
    env.tap(&all).expect_code(code).json()
}

/// (resource, action) of `step`'s changes in a run's JSON document, sorted.
pub fn changes_of(doc: &serde_json::Value, step: &str) -> Vec<(String, String)> {
    let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_owned();
    let changes = doc["changes"].as_array().into_iter().flatten().filter(|c| c["step"] == step);
    let mut v: Vec<_> = changes.map(|c| (text(&c["resource"]), text(&c["action"]))).collect();
    v.sort();
    v
}

/// Records `suffix` as taken by a test of this binary. IAM is global and the harness finds an
/// environment's roles by name (`tap-…-{suffix}`), so no suffix may equal another or end with
/// `-` + another (`base-drift` would count as `drift`'s).
fn claim(suffix: &str) {
    claim_except(suffix, None);
}

/// [`claim`], where a clash with `allowed` (a test's own other environment) is intended.
fn claim_except(suffix: &str, allowed: Option<&str>) {
    static TAKEN: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let mut taken = TAKEN.lock().unwrap_or_else(|e| e.into_inner());
    let clash = |a: &str, b: &str| a == b || a.ends_with(&format!("-{b}"));
    let mut others = taken.iter().filter(|t| Some(t.as_str()) != allowed);
    if let Some(other) = others.find(|t| clash(t, suffix) || clash(suffix, t)) {
        panic!("environment suffix {suffix:?} clashes with {other:?} (IAM names are global): pick another");
    }
    taken.push(suffix.to_string());
}

/// The region of [`TestEnv::alone_in_region`]: not in [`REGIONS`].
pub const OWN_REGION: &str = "eu-west-3";

/// Regions where moto has at least three availability zones; each test takes the next one.
const REGIONS: &[&str] = &[
    "us-east-1",
    "us-east-2",
    "us-west-2",
    "eu-west-1",
    "eu-west-2",
    "eu-central-1",
    "eu-north-1",
    "ap-southeast-1",
    "ap-southeast-2",
    "ap-northeast-1",
    "ap-northeast-2",
    "ap-south-1",
    "ca-central-1",
    "sa-east-1",
    "ap-northeast-3",
    "eu-south-1",
    "af-south-1",
    "me-south-1",
    "ap-east-1",
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

impl From<Output> for Run {
    fn from(out: Output) -> Run {
        Run {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

impl Run {
    /// Panics with both streams unless the exit code is `code`.
    pub fn expect_code(self, code: i32) -> Run {
        self.expect_code_in(code, "tap")
    }

    /// Panics with `context` and both streams unless the exit code is `code`.
    pub fn expect_code_in(self, code: i32, context: &str) -> Run {
        assert_eq!(
            self.code,
            Some(code),
            "{context}: tap exited {:?}\n--- stdout\n{}\n--- stderr\n{}",
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

    /// Panics with `context` unless it succeeded.
    pub fn success_in(self, context: &str) -> Run {
        self.expect_code_in(0, context)
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
    /// A fresh environment named `suffix` (unique among the tests), in a region of its own while
    /// regions last; then regions are shared round-robin — the suffix keeps environments apart (all
    /// end-to-end tests are one binary with one emulator). A test that reads a whole region (`tap
    /// list`) takes [`TestEnv::alone_in_region`].
    pub fn new(suffix: &str) -> TestEnv {
        claim(suffix);
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let i = NEXT.fetch_add(1, Ordering::SeqCst);
        TestEnv { suffix: suffix.into(), region: REGIONS[i % REGIONS.len()].into(), endpoint: moto().endpoint() }
    }

    /// A fresh environment named `suffix` in [`OWN_REGION`], which no other environment of this
    /// binary uses ([`TestEnv::sibling`]s aside); for one test only.
    pub fn alone_in_region(suffix: &str) -> TestEnv {
        claim(suffix);
        static TAKEN: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
        assert!(!TAKEN.swap(true, Ordering::SeqCst), "{OWN_REGION} is already taken by another test");
        TestEnv { suffix: suffix.into(), region: OWN_REGION.into(), endpoint: moto().endpoint() }
    }

    /// A fresh environment named `suffix` in `region`, which must be none of the regions the other
    /// tests share ([`OWN_REGION`] included) and is taken by this test only: for a test that
    /// counts what a whole region holds (quotas).
    pub fn in_region(suffix: &str, region: &str) -> TestEnv {
        static TAKEN: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
        assert!(!REGIONS.contains(&region) && region != OWN_REGION, "{region} is shared by other tests");
        let mut taken = TAKEN.lock().unwrap_or_else(|e| e.into_inner());
        assert!(!taken.iter().any(|r| r == region), "{region} is already taken by another test");
        taken.push(region.to_owned());
        claim(suffix);
        TestEnv { suffix: suffix.into(), region: region.into(), endpoint: moto().endpoint() }
    }

    /// A second environment in the same region as this one.
    pub fn sibling(&self, suffix: &str) -> TestEnv {
        claim(suffix);
        TestEnv { suffix: suffix.into(), ..self.clone() }
    }

    /// A second environment in this one's region whose suffix ends with this one's (`x-{suffix}`
    /// for `prefix` `x`): names `tap-{service}-{env}` of the two can collide (service `api-x` here
    /// and `api` there both make `tap-api-x-{suffix}`), on purpose. Its suffix must clash with no
    /// other test's.
    pub fn colliding_sibling(&self, prefix: &str) -> TestEnv {
        let suffix = format!("{prefix}-{}", self.suffix);
        claim_except(&suffix, Some(&self.suffix));
        TestEnv { suffix, ..self.clone() }
    }

    /// The `tap` command with this environment's suffix, region, endpoint and dummy credentials.
    pub fn command(&self) -> Command {
        let mut cmd = tap_command();
        cmd.args(["--env", &self.suffix, "--region", &self.region, "--endpoint-url", &self.endpoint])
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env_remove("AWS_PROFILE")
            .env_remove("AWS_ENDPOINT_URL")
            // `TAP_*` variables are configuration to tap; this one only tells the harness where tap is.
            .env_remove("TAP_BIN")
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
        AwsClients::new(AwsSession::new(config))
    }
}

/// One client per AWS service tap uses, for tests to read back (and tamper with) what tap built;
/// all built from one [`AwsSession`], so they share its call counter. (The product has no such
/// bundle: each concern crate builds its own clients from the session.)
#[derive(Debug, Clone)]
pub struct AwsClients {
    /// The session the clients were built from (pass it to a step's `from_session`).
    pub session: AwsSession,
    /// EC2.
    pub ec2: aws_sdk_ec2::Client,
    /// ECR.
    pub ecr: aws_sdk_ecr::Client,
    /// ECS.
    pub ecs: aws_sdk_ecs::Client,
    /// IAM.
    pub iam: aws_sdk_iam::Client,
    /// Secrets Manager.
    pub secrets: aws_sdk_secretsmanager::Client,
    /// Elastic Load Balancing v2.
    pub elbv2: aws_sdk_elasticloadbalancingv2::Client,
    /// Cloud Map.
    pub servicediscovery: aws_sdk_servicediscovery::Client,
    /// CloudWatch Logs.
    pub logs: aws_sdk_cloudwatchlogs::Client,
    /// Application Auto Scaling.
    pub autoscaling: aws_sdk_applicationautoscaling::Client,
    /// CloudWatch (alarms).
    pub cloudwatch: aws_sdk_cloudwatch::Client,
}

impl AwsClients {
    /// Every client, built from `session`.
    pub fn new(session: AwsSession) -> Self {
        let s = &session;
        AwsClients {
            ec2: tap_core::sdk_client!(aws_sdk_ec2, s),
            ecr: tap_core::sdk_client!(aws_sdk_ecr, s),
            ecs: tap_core::sdk_client!(aws_sdk_ecs, s),
            iam: tap_core::sdk_client!(aws_sdk_iam, s),
            secrets: tap_core::sdk_client!(aws_sdk_secretsmanager, s),
            elbv2: tap_core::sdk_client!(aws_sdk_elasticloadbalancingv2, s),
            servicediscovery: tap_core::sdk_client!(aws_sdk_servicediscovery, s),
            logs: tap_core::sdk_client!(aws_sdk_cloudwatchlogs, s),
            autoscaling: tap_core::sdk_client!(aws_sdk_applicationautoscaling, s),
            cloudwatch: tap_core::sdk_client!(aws_sdk_cloudwatch, s),
            session,
        }
    }
}

/// A fault-injecting proxy in front of the shared emulator (see [`tap_moto::proxy`]); point tap at
/// it with [`TestEnv::with_endpoint`]`(&proxy.endpoint())`.
pub fn proxy(faults: Faults) -> Proxy {
    Proxy::start(moto().port(), faults).expect("start the fault proxy")
}

pub use tap_moto::proxy::{Fate, Faults, Proxy};

/// The SPEC's three services as `tap.toml` fragments, for tests that write their own service
/// list (`[FRONTEND, API_GATEWAY].concat()`): the built-in defaults read the same text.
pub use tap_core::config::platform as services_toml;

impl TestEnv {
    /// The same environment, with `tap` sent to `endpoint` (e.g. a [`Proxy`] in front of the
    /// emulator). Read back with the original environment's [`TestEnv::clients`], which talk to
    /// the emulator directly.
    pub fn with_endpoint(&self, endpoint: &str) -> TestEnv {
        TestEnv { endpoint: endpoint.into(), ..self.clone() }
    }

    /// Writes `toml` as config file `label` of this environment (for `--config`) and returns its
    /// path; each test process and environment has a folder of its own.
    pub fn config_file(&self, label: &str, toml: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("tap-test-{}-{}", self.suffix, std::process::id()));
        std::fs::create_dir_all(&dir).expect("config folder");
        let path = dir.join(format!("{label}.toml"));
        std::fs::write(&path, toml).expect("config file");
        path
    }

    /// Pushes an image tagged `tag` into the ECR repository of each of `services` (straight to
    /// the emulator, with PutImage: a manifest of its own per repository and tag).
    pub async fn push_image(&self, services: &[&str], tag: &str) {
        let clients = self.clients().await;
        for service in services {
            let repo = format!("tap-{service}-{}", self.suffix);
            let seed = format!("{repo}:{tag}")
                .bytes()
                .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
            let manifest = format!(
                r#"{{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json","config":{{"mediaType":"application/vnd.docker.container.image.v1+json","size":2,"digest":"sha256:{seed:064x}"}},"layers":[]}}"#
            );
            clients
                .ecr
                .put_image()
                .repository_name(&repo)
                .image_manifest(manifest)
                .image_tag(tag)
                .send()
                .await
                .unwrap_or_else(|e| panic!("PutImage {repo}:{tag}: {e:?}"));
        }
    }

    /// Counts, with the SDK, every resource of this environment by kind (see [`Inventory`]).
    pub async fn inventory(&self) -> Inventory {
        Inventory::read(&self.clients().await, &self.suffix).await
    }
}

/// Resource kinds of an environment and how many of each the SPEC's default platform (three
/// services, two of them behind the load balancer, one in Cloud Map) has.
pub const SPEC_COUNTS: &[(&str, usize)] = &[
    ("ec2:vpc", 1),
    ("ec2:subnet", 6),
    ("ec2:internet-gateway", 1),
    ("ec2:nat-gateway", 3),
    ("ec2:elastic-ip", 3),
    ("ec2:route-table", 4),
    ("ec2:security-group", 4),
    ("iam:role", 4),
    ("secretsmanager:secret", 2),
    ("ecr:repository", 3),
    ("ecs:cluster", 1),
    ("servicediscovery:namespace", 1),
    ("servicediscovery:service", 1),
    ("elbv2:load-balancer", 1),
    ("elbv2:target-group", 2),
    ("elbv2:listener", 1),
    ("elbv2:rule", 1),
    ("logs:log-group", 3),
    ("ecs:task-definition-family", 3),
    ("ecs:service", 3),
    ("autoscaling:scalable-target", 3),
    ("autoscaling:scaling-policy", 3),
    ("cloudwatch:alarm", 10),
    ("logs:lock", 0),
];

/// How many resources of each kind an environment holds, counted with the SDK straight from the
/// emulator: EC2 resources by their `Environment` tag (NAT gateways not `deleted`/`failed`, the
/// VPC's default security group and main route table are not tap's), everything else by the names
/// tap gives them (`tap-…-{suffix}`, `/ecs/tap-…-{suffix}`, `tap-{suffix}.local`), clusters and ECS
/// services only while ACTIVE, task definition families with an ACTIVE revision. Listeners and
/// rules are those of the environment's load balancers (rules without the default one); Cloud Map
/// services those of its namespaces plus any whose namespace is gone; scaling targets and policies
/// those of its cluster's services; `logs:lock` is the environment lock's log group; alarms those
/// under `tap-{suffix}-` whose `Environment` tag is the suffix (4 per routed service, 2 per other).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inventory {
    /// Kind → count, for every kind of [`SPEC_COUNTS`].
    pub counts: std::collections::BTreeMap<&'static str, usize>,
}

impl Inventory {
    /// What the SPEC's default platform holds.
    pub fn spec() -> Inventory {
        Inventory { counts: SPEC_COUNTS.iter().copied().collect() }
    }

    /// Nothing at all.
    pub fn empty() -> Inventory {
        Inventory { counts: SPEC_COUNTS.iter().map(|&(k, _)| (k, 0)).collect() }
    }

    /// The kinds whose count differs from `expected`: (kind, found, expected).
    pub fn differences(&self, expected: &Inventory) -> Vec<(&'static str, usize, usize)> {
        self.counts
            .iter()
            .filter_map(|(&k, &n)| {
                let want = expected.counts.get(k).copied().unwrap_or(0);
                (n != want).then_some((k, n, want))
            })
            .collect()
    }

    /// Panics, listing every difference, unless this is exactly the SPEC's platform.
    pub fn assert_spec(&self, context: &str) {
        let diff = self.differences(&Inventory::spec());
        assert!(diff.is_empty(), "{context}: not exactly the SPEC's resources; (kind, found, expected): {diff:#?}");
    }

    /// Panics, listing what is left, unless the environment holds nothing.
    pub fn assert_empty(&self, context: &str) {
        let diff = self.differences(&Inventory::empty());
        assert!(diff.is_empty(), "{context}: resources left behind; (kind, found, expected): {diff:#?}");
    }

    /// Counts the resources of environment `suffix` through `clients`.
    pub async fn read(clients: &AwsClients, suffix: &str) -> Inventory {
        use aws_sdk_ec2::types::{Filter, NatGatewayState, Tag};

        let named = |name: &str| name.starts_with("tap-") && name.ends_with(&format!("-{suffix}"));
        let env_filter = || Filter::builder().name("tag:Environment").values(suffix).build();
        let ours = |tags: &[Tag]| tags.iter().any(|t| t.key() == Some("Environment") && t.value() == Some(suffix));
        let mut counts = std::collections::BTreeMap::new();
        let ec2 = &clients.ec2;

        let vpcs = ec2.describe_vpcs().filters(env_filter()).send().await.expect("DescribeVpcs");
        counts.insert("ec2:vpc", vpcs.vpcs().iter().filter(|v| ours(v.tags())).count());
        let subnets = ec2.describe_subnets().filters(env_filter()).send().await.expect("DescribeSubnets");
        counts.insert("ec2:subnet", subnets.subnets().iter().filter(|s| ours(s.tags())).count());
        let igws =
            ec2.describe_internet_gateways().filters(env_filter()).send().await.expect("DescribeInternetGateways");
        counts.insert("ec2:internet-gateway", igws.internet_gateways().iter().filter(|g| ours(g.tags())).count());
        let nats = ec2.describe_nat_gateways().filter(env_filter()).send().await.expect("DescribeNatGateways");
        let live_nat = |n: &&aws_sdk_ec2::types::NatGateway| {
            !matches!(n.state(), Some(NatGatewayState::Deleted | NatGatewayState::Failed))
        };
        counts
            .insert("ec2:nat-gateway", nats.nat_gateways().iter().filter(|n| ours(n.tags())).filter(live_nat).count());
        let addresses = ec2.describe_addresses().filters(env_filter()).send().await.expect("DescribeAddresses");
        counts.insert("ec2:elastic-ip", addresses.addresses().iter().filter(|a| ours(a.tags())).count());
        let tables = ec2.describe_route_tables().filters(env_filter()).send().await.expect("DescribeRouteTables");
        counts.insert("ec2:route-table", tables.route_tables().iter().filter(|t| ours(t.tags())).count());
        let groups = ec2.describe_security_groups().filters(env_filter()).send().await.expect("DescribeSecurityGroups");
        counts.insert(
            "ec2:security-group",
            groups.security_groups().iter().filter(|g| ours(g.tags()) && g.group_name() != Some("default")).count(),
        );

        let roles: Vec<_> = all_items!(clients.iam.list_roles(), "ListRoles");
        counts.insert("iam:role", roles.iter().filter(|r| named(r.role_name())).count());
        let pages: Vec<_> = all_pages!(clients.secrets.list_secrets(), "ListSecrets");
        let secrets: Vec<_> = pages.iter().flat_map(|p| p.secret_list()).collect();
        counts.insert(
            "secretsmanager:secret",
            secrets.iter().filter(|s| s.name().is_some_and(named) && s.deleted_date().is_none()).count(),
        );
        let repos: Vec<_> = all_items!(clients.ecr.describe_repositories(), "DescribeRepositories");
        counts.insert("ecr:repository", repos.iter().filter(|r| r.repository_name().is_some_and(named)).count());

        let cluster_arns: Vec<String> = all_items!(clients.ecs.list_clusters(), "ListClusters");
        let clusters = if cluster_arns.is_empty() {
            vec![]
        } else {
            let out = clients
                .ecs
                .describe_clusters()
                .set_clusters(Some(cluster_arns))
                .send()
                .await
                .expect("DescribeClusters");
            out.clusters().to_vec()
        };
        let active_clusters: Vec<&aws_sdk_ecs::types::Cluster> =
            clusters.iter().filter(|c| c.cluster_name().is_some_and(named) && c.status() == Some("ACTIVE")).collect();
        counts.insert("ecs:cluster", active_clusters.len());
        let mut ecs_services = Vec::new();
        for cluster in &active_clusters {
            let arn = cluster.cluster_arn().unwrap_or_default();
            let arns: Vec<String> = all_items!(clients.ecs.list_services().cluster(arn), "ListServices");
            for chunk in arns.chunks(10) {
                let out = clients
                    .ecs
                    .describe_services()
                    .cluster(arn)
                    .set_services(Some(chunk.to_vec()))
                    .send()
                    .await
                    .expect("DescribeServices");
                ecs_services.extend(out.services().iter().filter(|s| s.status() == Some("ACTIVE")).cloned());
            }
        }
        counts.insert("ecs:service", ecs_services.len());
        let families: Vec<String> = all_items!(
            clients
                .ecs
                .list_task_definition_families()
                .family_prefix("tap-")
                .status(aws_sdk_ecs::types::TaskDefinitionFamilyStatus::Active),
            "ListTaskDefinitionFamilies"
        );
        // moto keeps a family listed (ignoring the status filter) after its revisions are deleted,
        // so a family counts only while it has an ACTIVE revision.
        let mut active_families = 0;
        for family in families.iter().filter(|f| named(f)) {
            let active = clients
                .ecs
                .list_task_definitions()
                .family_prefix(family)
                .status(aws_sdk_ecs::types::TaskDefinitionStatus::Active)
                .send()
                .await
                .expect("ListTaskDefinitions");
            if !active.task_definition_arns().is_empty() {
                active_families += 1;
            }
        }
        counts.insert("ecs:task-definition-family", active_families);

        let pages: Vec<_> = all_pages!(clients.servicediscovery.list_namespaces(), "ListNamespaces");
        let namespaces: Vec<_> = pages.iter().flat_map(|p| p.namespaces()).collect();
        let namespace_name = format!("tap-{suffix}.local");
        let all_namespace_ids: Vec<String> = namespaces.iter().filter_map(|n| n.id().map(str::to_owned)).collect();
        let env_namespace_ids: Vec<String> = namespaces
            .iter()
            .filter(|n| n.name() == Some(namespace_name.as_str()))
            .filter_map(|n| n.id().map(str::to_owned))
            .collect();
        counts.insert("servicediscovery:namespace", env_namespace_ids.len());
        let pages: Vec<_> = all_pages!(clients.servicediscovery.list_services(), "ListServices (Cloud Map)");
        let sd_services: Vec<_> = pages.iter().flat_map(|p| p.services()).collect();
        let mut sd_count = 0;
        for s in &sd_services {
            let id = s.id().unwrap_or_default();
            let detail = clients.servicediscovery.get_service().id(id).send().await.expect("GetService (Cloud Map)");
            let ns = detail.service().and_then(|d| d.namespace_id()).unwrap_or_default().to_owned();
            if env_namespace_ids.contains(&ns) || !all_namespace_ids.contains(&ns) {
                sd_count += 1;
            }
        }
        counts.insert("servicediscovery:service", sd_count);

        let elbv2 = &clients.elbv2;
        let lbs: Vec<_> = all_items!(elbv2.describe_load_balancers(), "DescribeLoadBalancers");
        let env_lbs: Vec<_> = lbs.iter().filter(|l| l.load_balancer_name().is_some_and(named)).collect();
        counts.insert("elbv2:load-balancer", env_lbs.len());
        let tgs: Vec<_> = all_items!(elbv2.describe_target_groups(), "DescribeTargetGroups");
        counts.insert("elbv2:target-group", tgs.iter().filter(|t| t.target_group_name().is_some_and(named)).count());
        let (mut listeners, mut rules) = (0, 0);
        for lb in env_lbs {
            let out = elbv2
                .describe_listeners()
                .load_balancer_arn(lb.load_balancer_arn().unwrap_or_default())
                .send()
                .await
                .expect("DescribeListeners");
            for listener in out.listeners() {
                listeners += 1;
                let r = elbv2
                    .describe_rules()
                    .listener_arn(listener.listener_arn().unwrap_or_default())
                    .send()
                    .await
                    .expect("DescribeRules");
                rules += r.rules().iter().filter(|r| r.is_default() != Some(true)).count();
            }
        }
        counts.insert("elbv2:listener", listeners);
        counts.insert("elbv2:rule", rules);

        let groups: Vec<_> =
            all_items!(clients.logs.describe_log_groups().log_group_name_prefix("/ecs/tap-"), "DescribeLogGroups");
        let log_group_suffix = format!("-{suffix}");
        counts.insert(
            "logs:log-group",
            groups.iter().filter(|g| g.log_group_name().is_some_and(|n| n.ends_with(&log_group_suffix))).count(),
        );
        let lock_name = format!("/tap/locks/{suffix}");
        let locks = clients
            .logs
            .describe_log_groups()
            .log_group_name_prefix(&lock_name)
            .send()
            .await
            .expect("DescribeLogGroups");
        counts.insert(
            "logs:lock",
            locks.log_groups().iter().filter(|g| g.log_group_name() == Some(lock_name.as_str())).count(),
        );

        use aws_sdk_applicationautoscaling::types::ServiceNamespace;
        let resource_prefix = format!("service/tap-cluster-{suffix}/");
        let targets: Vec<_> = all_items!(
            clients.autoscaling.describe_scalable_targets().service_namespace(ServiceNamespace::Ecs),
            "DescribeScalableTargets"
        );
        counts.insert(
            "autoscaling:scalable-target",
            targets.iter().filter(|t| t.resource_id().starts_with(&resource_prefix)).count(),
        );
        let policies: Vec<_> = all_items!(
            clients.autoscaling.describe_scaling_policies().service_namespace(ServiceNamespace::Ecs),
            "DescribeScalingPolicies"
        );
        counts.insert(
            "autoscaling:scaling-policy",
            policies.iter().filter(|p| p.resource_id().starts_with(&resource_prefix)).count(),
        );
        let alarms = Alarms::read(clients, suffix).await;
        counts.insert("cloudwatch:alarm", alarms.0.len());
        Inventory { counts }
    }
}

/// The CloudWatch alarms of an environment, read back with the SDK: those under the prefix
/// `tap-{suffix}-` whose `Environment` tag is the suffix (the prefix alone would also match the
/// alarms of an environment named `{suffix}-…`).
#[derive(Debug, Clone)]
pub struct Alarms(pub Vec<aws_sdk_cloudwatch::types::MetricAlarm>);

impl Alarms {
    /// Reads every alarm of environment `suffix` through `clients`.
    pub async fn read(clients: &AwsClients, suffix: &str) -> Alarms {
        let cw = &clients.cloudwatch;
        let pages: Vec<_> =
            all_pages!(cw.describe_alarms().alarm_name_prefix(format!("tap-{suffix}-")), "DescribeAlarms");
        let mut ours = Vec::new();
        for alarm in pages.iter().flat_map(|page| page.metric_alarms()).cloned() {
            let tags = cw
                .list_tags_for_resource()
                .resource_arn(alarm.alarm_arn().unwrap_or_default())
                .send()
                .await
                .expect("ListTagsForResource");
            if tags.tags().iter().any(|t| t.key() == Some("Environment") && t.value() == Some(suffix)) {
                ours.push(alarm);
            }
        }
        ours.sort_by(|a, b| a.alarm_name().cmp(&b.alarm_name()));
        Alarms(ours)
    }

    /// The alarm named `name`.
    pub fn get(&self, name: &str) -> Option<&aws_sdk_cloudwatch::types::MetricAlarm> {
        self.0.iter().find(|a| a.alarm_name() == Some(name))
    }

    /// Every alarm's name, sorted.
    pub fn names(&self) -> Vec<String> {
        self.0.iter().filter_map(|a| a.alarm_name().map(str::to_owned)).collect()
    }
}
