//! The operator's experience of `tap`, end to end against moto_server: the JSON documents of plan,
//! deploy, outputs, status, logs, unlock and destroy and the exit codes; progress as plain lines
//! without a terminal and as a live view under a pseudo-terminal (`script` from util-linux);
//! `tap logs`; shell completions; errors that name the resource, the action, AWS's code and a
//! hint; the `single` NAT mode and switching NAT modes both ways; and the README's configuration
//! table checked against the code's defaults.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

use aws_sdk_ec2::types::{Filter, NatGatewayState, RouteTable, Tag};
use serde_json::Value;
use tests::{tap_binary, tap_command, tap_json, Run, TestEnv};

/// `tap <args>` with extra environment variables.
fn tap_with(env: &TestEnv, vars: &[(&str, &str)], args: &[&str]) -> Run {
    Run::from(env.command().envs(vars.iter().copied()).args(args).output().expect("run tap"))
}

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object().map(|o| o.keys().cloned().collect()).unwrap_or_default()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// Checks the documented shape of a plan / deploy / destroy document.
fn assert_changes_doc(doc: &Value, command: &str, env: &TestEnv) {
    for key in [
        "format_version",
        "command",
        "environment",
        "region",
        "changed",
        "changes",
        "summary",
        "steps",
        "calls",
        "elapsed_ms",
        "peak_rss_kb",
    ] {
        assert!(doc.get(key).is_some(), "{command}: `{key}` missing from {doc:#}");
    }
    assert_eq!(doc["format_version"], 1);
    assert_eq!(doc["command"], command);
    assert_eq!(doc["environment"], env.suffix.as_str());
    assert_eq!(doc["region"], env.region.as_str());
    let changes = doc["changes"].as_array().expect("changes is an array");
    let mut counted: BTreeMap<String, u64> = BTreeMap::new();
    for c in changes {
        let k = keys(c);
        assert!(k.is_superset(&set(&["step", "resource", "name", "action"])), "{c}");
        assert!(k.is_subset(&set(&["step", "resource", "name", "action", "attributes", "reason"])), "{c}");
        let action = c["action"].as_str().unwrap();
        assert!(["create", "update", "delete"].contains(&action), "{c}");
        *counted.entry(action.to_owned()).or_default() += 1;
        for a in c["attributes"].as_array().into_iter().flatten() {
            assert_eq!(keys(a), set(&["attribute", "old", "new"]), "{a}");
        }
    }
    assert_eq!(keys(&doc["summary"]), set(&["create", "update", "delete", "keep", "refuse", "conflict", "unchanged"]));
    for action in ["create", "update", "delete"] {
        assert_eq!(doc["summary"][action].as_u64(), Some(counted.get(action).copied().unwrap_or(0)), "{action}");
    }
    assert!(doc["summary"]["unchanged"].is_u64());
    assert_eq!(doc["changed"], Value::Bool(!changes.is_empty()));
    let steps: BTreeSet<String> =
        doc["steps"].as_array().unwrap().iter().map(|s| s["step"].as_str().unwrap().to_owned()).collect();
    assert_eq!(
        steps,
        set(&["network", "registry", "cluster", "security", "ingress", "discovery", "alarms", "services"])
    );
    for s in doc["steps"].as_array().unwrap() {
        assert_eq!(keys(s), set(&["step", "elapsed_ms", "changes", "unchanged"]), "{s}");
    }
    assert!(keys(&doc["calls"]).is_superset(&set(&["total", "mutating", "attempts", "by_operation"])));
    assert!(doc["calls"]["total"].as_u64().unwrap() > 0);
    assert!(doc["elapsed_ms"].is_u64());
}

#[tokio::test]
async fn json_documents_and_exit_codes_of_every_command() {
    let env = TestEnv::new("op-json");

    // plan: exit 2 with --detailed-exitcode when there is something to do, 0 without the flag.
    let plan = tap_json(&env, &["plan", "--detailed-exitcode"], 2);
    assert_changes_doc(&plan, "plan", &env);
    assert_eq!(plan["calls"]["mutating"], 0);
    assert!(plan["summary"]["create"].as_u64().unwrap() >= 50, "{}", plan["summary"]);
    tap_json(&env, &["plan"], 0);

    let deploy = tap_json(&env, &["deploy", "--no-wait"], 0);
    assert_changes_doc(&deploy, "deploy", &env);
    assert_eq!(deploy["summary"]["create"], plan["summary"]["create"], "deploy does what plan showed");

    // Converged: plan exits 0 and counts what it found unchanged (network and ingress report it).
    let again = tap_json(&env, &["plan", "--detailed-exitcode"], 0);
    assert_changes_doc(&again, "plan", &env);
    assert_eq!(again["changed"], false);
    assert!(again["summary"]["unchanged"].as_u64().unwrap() >= 23, "{}", again["summary"]);
    let network = again["steps"].as_array().unwrap().iter().find(|s| s["step"] == "network").unwrap();
    assert_eq!(network["unchanged"], 18, "VPC, 6 subnets, IGW, 3 EIPs, 3 NATs, 4 route tables");

    // The cost and topology switches are honoured: Container Insights, the capacity strategy and
    // a certificate (HTTPS listener) each show up as the changes they need.
    let cert = "arn:aws:acm:us-east-1:123456789012:certificate/0f0e0d0c-aaaa-bbbb-cccc-000000000001";
    let switches = [
        ("TAP_CLUSTER__CONTAINER_INSIGHTS", "true"),
        ("TAP_CLUSTER__SPOT_WEIGHT", "2"),
        ("TAP_CLUSTER__ON_DEMAND_BASE", "0"),
        ("TAP_INGRESS__CERTIFICATE_ARN", cert),
    ];
    let switched =
        tap_with(&env, &switches, &["--output", "json", "plan", "--detailed-exitcode"]).expect_code(2).json();
    let changes = switched["changes"].as_array().unwrap();
    let find = |resource: &str| changes.iter().find(|c| c["resource"] == resource);
    let cluster = find("cluster/ecs-cluster").expect("the cluster is updated");
    assert_eq!(cluster["action"], "update");
    let attributes: Vec<&str> =
        cluster["attributes"].as_array().unwrap().iter().map(|a| a["attribute"].as_str().unwrap()).collect();
    assert!(attributes.contains(&"container_insights"), "{cluster}");
    assert!(attributes.len() >= 2, "the capacity strategy differs too: {cluster}");
    assert!(
        changes
            .iter()
            .any(|c| c["resource"].as_str().unwrap().starts_with("services/ecs-service/") && c["action"] == "update"),
        "the services follow the cluster's strategy: {changes:?}"
    );
    assert!(
        changes
            .iter()
            .any(|c| c["step"] == "ingress" && c["resource"] == "ingress/listener/https" && c["action"] == "create"),
        "a certificate adds the HTTPS listener: {changes:?}"
    );

    // outputs: exactly the 12 stack outputs.
    let outputs = tap_json(&env, &["outputs"], 0);
    assert_eq!(keys(&outputs), set(&tests::SPEC_OUTPUT_KEYS));
    for (k, v) in outputs.as_object().unwrap() {
        match v {
            Value::String(s) => assert!(!s.is_empty(), "{k}"),
            Value::Array(a) => {
                assert_eq!(a.len(), 3, "{k}");
                assert!(a.iter().all(|id| id.as_str().is_some_and(|s| s.starts_with("subnet-"))), "{k}: {a:?}");
            }
            other => panic!("{k} is {other}"),
        }
    }
    assert!(outputs["vpcId"].as_str().unwrap().starts_with("vpc-"));
    assert_eq!(outputs["clusterName"], format!("tap-cluster-{}", env.suffix));

    // status: one entry per service with the documented fields.
    let status = tap_json(&env, &["status"], 0);
    assert_eq!(keys(&status), set(&["environment", "region", "services"]));
    let services = status["services"].as_array().unwrap();
    assert_eq!(services.len(), 3);
    for s in services {
        assert_eq!(
            keys(s),
            set(&[
                "name",
                "ecs_service",
                "status",
                "desired",
                "running",
                "pending",
                "rollout_state",
                "task_definition",
                "revision",
                "target_health",
                "alarms",
            ]),
            "{s}"
        );
        assert!(s["desired"].is_i64() && s["running"].is_i64() && s["pending"].is_i64());
        for a in s["alarms"].as_array().unwrap() {
            assert_eq!(keys(a), set(&["name", "alarm", "state"]), "{a}");
        }
    }

    // unlock: one document, also when there is no lock.
    let unlock = tap_json(&env, &["unlock"], 0);
    assert_eq!(unlock, serde_json::json!({"environment": env.suffix, "removed": false, "holder": null}));

    // logs: the service's log group, from --since on.
    let logs = env.clients().await.logs;
    let group = format!("/ecs/tap-frontend-{}", env.suffix);
    let stream = "frontend/frontend/0123456789";
    logs.create_log_stream().log_group_name(&group).log_stream_name(stream).send().await.unwrap();
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64;
    let event = |t: i64, m: &str| {
        aws_sdk_cloudwatchlogs::types::InputLogEvent::builder().timestamp(t).message(m).build().unwrap()
    };
    logs.put_log_events()
        .log_group_name(&group)
        .log_stream_name(stream)
        .log_events(event(now - 3 * 3_600_000, "an old line"))
        .log_events(event(now - 60_000, "listening on :3000"))
        .log_events(event(now - 1_000, "GET / 200"))
        .send()
        .await
        .unwrap();
    let doc = tap_json(&env, &["logs", "frontend", "--since", "10m"], 0);
    assert_eq!(keys(&doc), set(&["service", "environment", "log_group", "since_ms", "events"]));
    assert_eq!(doc["log_group"], group.as_str());
    let messages: Vec<&str> =
        doc["events"].as_array().unwrap().iter().map(|e| e["message"].as_str().unwrap()).collect();
    assert_eq!(messages, ["listening on :3000", "GET / 200"], "oldest first, nothing before --since");
    for e in doc["events"].as_array().unwrap() {
        assert_eq!(keys(e), set(&["timestamp", "time", "stream", "message", "id"]));
        assert_eq!(e["stream"], stream);
        assert!(e["time"].as_str().unwrap().ends_with('Z'));
    }
    let text = env.tap(&["logs", "frontend", "--since", "4h"]).success().stdout;
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(lines[0].ends_with(&format!("{stream} an old line")), "{text}");
    let unknown = env.tap(&["logs", "no-such-service"]).expect_code(1);
    assert!(unknown.stderr.contains("no service `no-such-service`") && unknown.stderr.contains("frontend"));
    assert!(env.tap(&["logs", "frontend", "--since", "ten"]).expect_code(1).stderr.contains("--since"));

    // A bad config: exit 1, and with --output json an error document on stdout.
    let bad = tap_with(
        &env,
        &[("TAP_NETWORK__VPC_CIDR", "10.0.0.0/33")],
        &["--output", "json", "plan", "--detailed-exitcode"],
    )
    .expect_code(1);
    assert!(bad.json()["error"]["message"].as_str().unwrap().contains("network.vpc_cidr"), "{}", bad.stdout);

    let destroy = tap_json(&env, &["destroy", "--yes"], 0);
    assert_changes_doc(&destroy, "destroy", &env);
    assert!(destroy["changes"].as_array().unwrap().iter().all(|c| c["action"] == "delete"));
    assert!(destroy["summary"]["delete"].as_u64().unwrap() >= 50);

    // Nothing deployed: outputs fails (exit 1) saying what to do, as text and as a JSON document.
    let gone = env.tap(&["--output", "json", "outputs"]).expect_code(1);
    assert!(gone.stderr.contains("tap deploy"), "{}", gone.stderr);
    assert_eq!(gone.json()["command"], "outputs");
}

/// Runs `tap` under a pseudo-terminal with `script -qec`, returning the transcript.
fn under_pty(env: &TestEnv, args: &[&str]) -> (Option<i32>, String) {
    let script = which("script").expect("`script` (util-linux) is needed for the pseudo-terminal test");
    let quote = |s: &str| format!("'{}'", s.replace('\'', r"'\''"));
    let mut line = vec![quote(&tap_binary().to_string_lossy())];
    for a in ["--env", &env.suffix, "--region", &env.region, "--endpoint-url", &env.endpoint].iter().chain(args) {
        line.push(quote(a));
    }
    let out = Command::new(script)
        .args(["-qec", &line.join(" "), "/dev/null"])
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_ENDPOINT_URL")
        .env_remove("RUST_LOG")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("TERM", "xterm-256color")
        .env("NO_COLOR", "1")
        .current_dir(std::env::temp_dir())
        .stdin(Stdio::null())
        .output()
        .expect("run script");
    (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned())
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

#[tokio::test]
async fn progress_is_plain_without_a_terminal_and_live_under_a_pty() {
    let env = TestEnv::new("op-pty");

    // No terminal: plain timestamped lines on stderr, no escape sequences; results on stdout.
    let plan = tap_with(&env, &[("RUST_LOG", "warn")], &["plan"]).success();
    for step in ["network", "registry", "cluster", "security", "ingress", "discovery", "alarms", "services"] {
        assert!(plan.stderr.contains(&format!("{step:<10} planning")), "{step} start in:\n{}", plan.stderr);
        assert!(plan.stderr.contains(&format!("{step:<10} done: ")), "{step} end in:\n{}", plan.stderr);
    }
    assert!(
        plan.stderr.lines().filter(|l| !l.contains(" WARN ")).all(|l| l.starts_with('[') || l.starts_with("Plan: ")),
        "{}",
        plan.stderr
    );
    assert!(!plan.stderr.contains('\u{1b}'), "{:?}", plan.stderr);
    assert!(plan.stderr.lines().last().unwrap().starts_with("Plan: "), "the totals close the progress");
    assert!(plan.stdout.starts_with("network\n  + network/vpc  tap-vpc-op-pty\n"), "{}", plan.stdout);
    assert!(plan.stdout.contains("\n  + services/ecs-service/frontend  tap-frontend-op-pty\n"), "{}", plan.stdout);
    let last = plan.stdout.lines().last().unwrap();
    assert!(last.starts_with("Plan: ") && last.contains(" to create") && last.contains("AWS calls"), "{last}");
    assert!(!plan.stdout.contains('\u{1b}'), "no color without a terminal");

    // Deploy without a terminal: each resource change as a line, then the summary.
    let deploy = tap_with(&env, &[("RUST_LOG", "warn")], &["deploy", "--no-wait"]).success();
    assert!(deploy.stderr.contains("network    + network/vpc (tap-vpc-op-pty)"), "{}", deploy.stderr);
    assert!(deploy.stderr.contains("network    + network/nat/3 (tap-nat-3-op-pty)"), "{}", deploy.stderr);
    let summary = deploy.stdout.lines().last().unwrap();
    assert!(
        summary.starts_with("Deploy complete: ")
            && summary.contains(" created, 0 updated, 0 deleted, 0 unchanged; ")
            && summary.contains("AWS calls (")
            && summary.ends_with("s."),
        "{summary}"
    );

    // --progress none: nothing but logs on stderr.
    let quiet = tap_with(&env, &[("RUST_LOG", "warn")], &["--progress", "none", "plan"]).success();
    assert!(!quiet.stderr.contains("planning") && !quiet.stderr.contains("done:"), "{}", quiet.stderr);

    // --color always colors the plan even without a terminal.
    let colored = tap_with(&env, &[("TAP_CLUSTER__SPOT_WEIGHT", "3")], &["--color", "always", "plan"]).success();
    assert!(colored.stdout.contains("\u{1b}[33m~ cluster/ecs-cluster"), "{:?}", colored.stdout);

    // A pseudo-terminal: the live view redraws spinners in place and leaves a ✓ line per step.
    let (code, live) = under_pty(&env, &["plan"]);
    assert_eq!(code, Some(0), "{live}");
    assert!(live.contains("\u{1b}[") && live.contains('\r'), "the live view redraws in place: {live:?}");
    for step in ["network", "registry", "cluster", "security", "ingress", "discovery", "alarms", "services"] {
        assert!(live.contains(&format!("✓ {step}")), "✓ {step} in {live:?}");
    }
    assert!(live.contains("network    no changes, 18 unchanged"), "{live:?}");
    assert!(live.contains("No changes: environment `op-pty` matches the configuration"), "{live:?}");
    assert!(!live.contains("] network    planning"), "no plain lines on a terminal: {live:?}");

    let (code, live) = under_pty(&env, &["destroy", "--yes"]);
    assert_eq!(code, Some(0), "{live}");
    assert!(live.contains("- network/vpc"), "each deletion is shown: {live:?}");
    assert!(live.contains("Destroy complete: "), "{live:?}");
    tap_json(&env, &["plan", "--detailed-exitcode"], 2);
}

#[test]
fn completions_for_each_shell_need_no_config_and_no_aws() {
    let dir = std::env::temp_dir().join(format!("tap-completions-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("tap.toml"), "not = [valid").unwrap();
    for (shell, marker) in [("bash", "_tap()"), ("zsh", "#compdef tap"), ("fish", "complete -c tap")] {
        let out = tap_command().args(["completions", shell]).current_dir(&dir).output().unwrap();
        assert!(out.status.success(), "{shell}: {}", String::from_utf8_lossy(&out.stderr));
        let script = String::from_utf8_lossy(&out.stdout);
        assert!(script.contains(marker), "{shell}: {script}");
        for word in ["deploy", "plan", "destroy", "outputs", "status", "logs", "completions", "detailed-exitcode"] {
            assert!(script.contains(word), "{shell} completes {word}");
        }
    }
    let bad = tap_command().args(["completions", "tcsh"]).output().unwrap();
    assert_eq!(bad.status.code(), Some(2), "clap rejects an unknown shell");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn errors_name_the_resource_the_action_the_code_and_a_hint() {
    let env = TestEnv::new("op-err");

    // No credentials anywhere in the chain.
    let home = std::env::temp_dir().join(format!("tap-nohome-{}", std::process::id()));
    std::fs::create_dir_all(&home).unwrap();
    let out = env
        .command()
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env_remove("AWS_SESSION_TOKEN")
        .env("HOME", &home)
        .env("AWS_CONFIG_FILE", home.join("config"))
        .env("AWS_SHARED_CREDENTIALS_FILE", home.join("credentials"))
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .args(["plan"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("error: plan failed"), "{stderr}");
    assert!(stderr.contains("    resource: network/") && stderr.contains("    action:   Describe"), "{stderr}");
    assert!(stderr.contains("    code:     (none"), "{stderr}");
    assert!(stderr.contains("hint: no AWS credentials were found"), "{stderr}");
    assert_eq!(stderr.matches("hint: ").count(), 1, "one hint for one cause: {stderr}");

    // Not a region name: refused before any call.
    let out = tap_command()
        .args(["--env", &env.suffix, "--region", "eu-wst", "--endpoint-url", &env.endpoint, "plan"])
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .current_dir(std::env::temp_dir())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("`eu-wst` is not an AWS region name"), "{stderr}");

    // AWS answers with an error code: every call throttled (through the fault proxy), one attempt
    // and no patience for throttling.
    let proxy = tap_moto::proxy::Proxy::start(
        tests::moto().port(),
        tap_moto::proxy::Faults { throttle_percent: 100, ..Default::default() },
    )
    .unwrap();
    let throttled = TestEnv { endpoint: proxy.endpoint(), ..env.clone() };
    let patience = [("TAP_AWS__MAX_ATTEMPTS", "1"), ("TAP_AWS__THROTTLE_PATIENCE_SECONDS", "0")];
    let run = tap_with(&throttled, &patience, &["--output", "json", "plan"]).expect_code(1);
    let doc = run.json();
    let failures = doc["error"]["failures"].as_array().unwrap();
    assert!(!failures.is_empty(), "{doc:#}");
    for f in failures {
        assert!(f["step"].is_string() && f["resource"].is_string() && f["action"].is_string(), "{f}");
        // The protocols spell it differently: EC2 `RequestLimitExceeded`, JSON APIs `ThrottlingException`, …
        let code = f["code"].as_str().unwrap_or_default();
        assert!(tap_core::error::THROTTLING_CODES.contains(&code), "{f}");
        assert!(f["hint"].as_str().is_some_and(|h| h.contains("aws.max_attempts")), "{f}");
        assert!(run.stderr.contains(&format!("    code:     {code}\n")), "{}", run.stderr);
        let resource = f["resource"].as_str().unwrap();
        assert!(run.stderr.contains(&format!("    resource: {resource}\n")), "{}", run.stderr);
    }
    assert_eq!(run.stderr.matches("hint: AWS kept throttling").count(), 1, "{}", run.stderr);
}

// ----- NAT modes -----

fn env_filter(suffix: &str) -> Filter {
    Filter::builder().name("tag:Environment").values(suffix).build()
}

fn tag<'a>(tags: &'a [Tag], key: &str) -> Option<&'a str> {
    tags.iter().find(|t| t.key() == Some(key)).and_then(|t| t.value())
}

/// NAT gateways (not deleted), Elastic IPs and route tables of an environment.
struct Nats {
    nats: Vec<aws_sdk_ec2::types::NatGateway>,
    eips: Vec<aws_sdk_ec2::types::Address>,
    tables: Vec<RouteTable>,
    public_subnets: BTreeMap<String, String>,
}

impl Nats {
    async fn read(ec2: &aws_sdk_ec2::Client, suffix: &str) -> Nats {
        let nats = ec2.describe_nat_gateways().filter(env_filter(suffix)).send().await.unwrap().nat_gateways().to_vec();
        let eips = ec2.describe_addresses().filters(env_filter(suffix)).send().await.unwrap().addresses().to_vec();
        let tables =
            ec2.describe_route_tables().filters(env_filter(suffix)).send().await.unwrap().route_tables().to_vec();
        let subnets = ec2.describe_subnets().filters(env_filter(suffix)).send().await.unwrap().subnets().to_vec();
        Nats {
            nats: nats
                .into_iter()
                .filter(|n| {
                    !matches!(
                        n.state(),
                        Some(NatGatewayState::Deleted | NatGatewayState::Deleting | NatGatewayState::Failed)
                    )
                })
                .collect(),
            eips,
            tables,
            public_subnets: subnets
                .iter()
                .filter(|s| tag(s.tags(), "tap:component").is_some_and(|c| c.starts_with("network/subnet/public-")))
                .map(|s| (s.subnet_id().unwrap().to_owned(), s.availability_zone().unwrap().to_owned()))
                .collect(),
        }
    }

    /// Private route table component → NAT gateway id of its default route.
    fn private_routes(&self) -> BTreeMap<String, String> {
        self.tables
            .iter()
            .filter_map(|t| {
                let component = tag(t.tags(), "tap:component")?;
                component.starts_with("network/route-table/private-").then_some(())?;
                let nat = t
                    .routes()
                    .iter()
                    .find(|r| r.destination_cidr_block() == Some("0.0.0.0/0"))
                    .and_then(|r| r.nat_gateway_id())
                    .unwrap_or("(none)");
                Some((component.to_owned(), nat.to_owned()))
            })
            .collect()
    }

    fn nat_ids(&self) -> BTreeSet<String> {
        self.nats.iter().map(|n| n.nat_gateway_id().unwrap().to_owned()).collect()
    }

    /// Exactly one NAT + one EIP, in a public subnet, and every private subnet routed through it.
    fn assert_single(&self) -> String {
        assert_eq!(self.nats.len(), 1, "exactly one NAT gateway: {:?}", self.nat_ids());
        assert_eq!(self.eips.len(), 1, "exactly one Elastic IP: {:?}", self.eips);
        let nat = &self.nats[0];
        let id = nat.nat_gateway_id().unwrap().to_owned();
        assert!(self.public_subnets.contains_key(nat.subnet_id().unwrap()), "the NAT is in a public subnet");
        let allocation = nat.nat_gateway_addresses().first().and_then(|a| a.allocation_id()).unwrap();
        assert_eq!(self.eips[0].allocation_id(), Some(allocation), "the NAT uses the environment's EIP");
        let routes = self.private_routes();
        assert_eq!(routes.len(), 3, "{routes:?}");
        assert!(routes.values().all(|n| *n == id), "all private subnets route through {id}: {routes:?}");
        id
    }

    /// One NAT + EIP per AZ, each private table routed through its own AZ's NAT.
    fn assert_one_per_az(&self) {
        assert_eq!(self.nats.len(), 3, "{:?}", self.nat_ids());
        assert_eq!(self.eips.len(), 3);
        let azs: BTreeSet<&String> = self.nats.iter().map(|n| &self.public_subnets[n.subnet_id().unwrap()]).collect();
        assert_eq!(azs.len(), 3, "one NAT per AZ");
        let routes = self.private_routes();
        let targets: BTreeSet<&String> = routes.values().collect();
        assert_eq!(targets.len(), 3, "each private table has its own NAT: {routes:?}");
        assert!(targets.iter().all(|t| self.nat_ids().contains(*t)), "{routes:?}");
    }
}

/// (resource, action) of the network step's changes.
fn network_changes(doc: &Value) -> BTreeSet<(String, String)> {
    tests::changes_of(doc, "network").into_iter().collect()
}

fn pairs(items: &[(&str, &str)]) -> BTreeSet<(String, String)> {
    items.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
}

#[tokio::test]
async fn single_nat_mode_and_switching_modes_converge() {
    let env = TestEnv::new("op-nat");
    let ec2 = env.clients().await.ec2;
    let single = [("TAP_NETWORK__NAT_GATEWAYS", "single")];
    let per_az = [("TAP_NETWORK__NAT_GATEWAYS", "one-per-az")];
    let json = |vars: &[(&str, &str)], args: &[&str], code: i32| {
        let mut all = vec!["--output", "json"];
        all.extend_from_slice(args);
        tap_with(&env, vars, &all).expect_code(code).json()
    };

    // `single` from nothing: one NAT, one EIP, every private subnet routed through it.
    let first = json(&single, &["deploy", "--no-wait"], 0);
    let created = network_changes(&first);
    assert!(created.contains(&("network/nat/1".into(), "create".into())));
    assert!(!created.iter().any(|(r, _)| r == "network/nat/2" || r == "network/eip/2"), "{created:?}");
    let nat1 = Nats::read(&ec2, &env.suffix).await.assert_single();
    json(&single, &["plan", "--detailed-exitcode"], 0);

    // Switching to one NAT per AZ: two NATs and EIPs more, two private tables repointed.
    let plan = json(&per_az, &["plan", "--detailed-exitcode"], 2);
    let expected = pairs(&[
        ("network/eip/2", "create"),
        ("network/eip/3", "create"),
        ("network/nat/2", "create"),
        ("network/nat/3", "create"),
        ("network/route-table/private-2", "update"),
        ("network/route-table/private-3", "update"),
    ]);
    assert_eq!(network_changes(&plan), expected);
    assert_eq!(network_changes(&json(&per_az, &["deploy", "--no-wait"], 0)), expected);
    let per_az_state = Nats::read(&ec2, &env.suffix).await;
    per_az_state.assert_one_per_az();
    assert!(per_az_state.nat_ids().contains(&nat1), "the first NAT is kept");
    json(&per_az, &["plan", "--detailed-exitcode"], 0);

    // And back: the extra NATs and EIPs are removed, the routes repointed to the remaining NAT.
    let plan = json(&single, &["plan", "--detailed-exitcode"], 2);
    let expected = pairs(&[
        ("network/eip/2", "delete"),
        ("network/eip/3", "delete"),
        ("network/nat/2", "delete"),
        ("network/nat/3", "delete"),
        ("network/route-table/private-2", "update"),
        ("network/route-table/private-3", "update"),
    ]);
    assert_eq!(network_changes(&plan), expected);
    let back = json(&single, &["deploy", "--no-wait"], 0);
    assert_eq!(network_changes(&back), expected);
    assert_eq!(Nats::read(&ec2, &env.suffix).await.assert_single(), nat1, "routes go to the NAT that stayed");
    let settled = json(&single, &["plan", "--detailed-exitcode"], 0);
    assert_eq!(settled["calls"]["mutating"], 0);

    tap_json(&env, &["destroy", "--yes"], 0);
    let left = Nats::read(&ec2, &env.suffix).await;
    assert!(left.nats.is_empty() && left.eips.is_empty() && left.tables.is_empty(), "destroy removes them all");
}

// ----- README -----

/// Every leaf of the config's JSON form, objects flattened with `.` (arrays are leaves).
fn flatten(prefix: &str, v: &Value, out: &mut BTreeMap<String, Value>) {
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                flatten(&key, v, out);
            }
        }
        other => {
            out.insert(prefix.to_owned(), other.clone());
        }
    }
}

/// The backticked parts of a table cell.
fn ticked(cell: &str) -> Vec<String> {
    cell.split('`').skip(1).step_by(2).map(str::to_owned).collect()
}

/// The rows of the README's configuration table: key → (default cell, env var cell).
fn readme_config_table() -> BTreeMap<String, (String, String)> {
    let readme = std::fs::read_to_string(workspace_root().join("README.md")).unwrap();
    let section = readme.split("### Configuration reference").nth(1).expect("a `### Configuration reference` section");
    let section = section.split("\n## ").next().unwrap();
    let mut rows = BTreeMap::new();
    for line in section.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        assert_eq!(cells.len(), 4, "key | default | env var | meaning: {line}");
        let key = ticked(cells[0]);
        assert_eq!(key.len(), 1, "one key per row: {line}");
        assert!(rows.insert(key[0].clone(), (cells[1].to_owned(), cells[2].to_owned())).is_none(), "{line}");
    }
    rows
}

fn default_matches(value: &Value, cell: &str) -> bool {
    let shown = ticked(cell);
    match value {
        Value::Null => shown.is_empty() && cell.starts_with("none"),
        Value::Bool(b) => shown == [b.to_string()],
        Value::String(s) => shown == [s.clone()],
        Value::Number(n) => shown.len() == 1 && shown[0].parse::<f64>().ok() == n.as_f64(),
        Value::Array(items) => {
            let want: Vec<String> = items
                .iter()
                .map(|i| match i {
                    Value::String(s) => s.clone(),
                    Value::Object(o) => o.get("name").and_then(Value::as_str).unwrap_or_default().to_owned(),
                    other => other.to_string(),
                })
                .collect();
            shown == want
        }
        Value::Object(_) => false,
    }
}

#[test]
fn readme_configuration_table_matches_the_code() {
    let mut defaults = BTreeMap::new();
    flatten("", &serde_json::to_value(tap_core::Config::default()).unwrap(), &mut defaults);
    let table = readme_config_table();

    let documented: BTreeSet<&String> = table.keys().collect();
    let in_code: BTreeSet<&String> = defaults.keys().collect();
    assert_eq!(
        documented,
        in_code,
        "README keys without code: {:?}; code keys missing from the README: {:?}",
        documented.difference(&in_code).collect::<Vec<_>>(),
        in_code.difference(&documented).collect::<Vec<_>>()
    );
    for (key, (default, env_var)) in &table {
        assert!(default_matches(&defaults[key], default), "`{key}`: README says {default}, the code {}", defaults[key]);
        let expected = format!("TAP_{}", key.to_uppercase().replace('.', "__"));
        assert_eq!(ticked(env_var), [expected], "`{key}`'s environment variable");
    }

    // tap.example.toml sets (or shows, commented) every key.
    let example = std::fs::read_to_string(workspace_root().join("tap.example.toml")).unwrap();
    let mut section = String::new();
    let mut seen = BTreeSet::new();
    for line in example.lines() {
        let l = line.trim().trim_start_matches('#').trim();
        if l.starts_with('[') && !l.starts_with("[[") && l.ends_with(']') {
            section = l.trim_matches(['[', ']']).to_owned();
        } else if let Some((k, _)) = l.split_once(" = ") {
            let k = k.trim();
            seen.insert(if section.is_empty() { k.to_owned() } else { format!("{section}.{k}") });
            seen.insert(k.to_owned());
        } else if l.starts_with("[[") {
            seen.insert(l.trim_matches(['[', ']']).to_owned());
        }
    }
    for key in table.keys() {
        assert!(seen.contains(key), "tap.example.toml does not show `{key}`");
    }
}

#[tokio::test]
async fn the_example_config_is_valid_and_is_the_default_platform() {
    let env = TestEnv::new("op-example");
    let example = workspace_root().join("tap.example.toml");
    let plan = tap_json(&env, &["--config", example.to_str().unwrap(), "plan"], 0);
    let default = tap_json(&env, &["plan"], 0);
    let resources = |doc: &Value| -> BTreeSet<String> {
        doc["changes"].as_array().unwrap().iter().map(|c| format!("{} {}", c["action"], c["resource"])).collect()
    };
    assert_eq!(resources(&plan), resources(&default), "the example describes the default platform");
    assert_eq!(plan["environment"], env.suffix.as_str(), "--env wins over the file");
}
