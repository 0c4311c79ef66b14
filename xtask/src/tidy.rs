//! `cargo xtask tidy`: the architecture invariants of ARCHITECTURE.md that a machine can check.
//!
//! - Each concern crate's normal dependencies (declared, and everything they pull in, as
//!   `cargo tree -e normal` shows it) hold only the `aws-sdk-*` crates of its own concern
//!   ([`SDK_ALLOWED`]) and no other concern crate; tap-core holds no `aws-sdk-*` crate at all.
//! - Every library, binary and example root opens with `//!` docs.
//! - No `todo!` / `unimplemented!` in non-test code.
//!
//! The dependency check is a function over `cargo metadata --format-version 1` JSON, so a test can
//! feed it a doctored copy of the real workspace's metadata.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_json::Value;

/// The library crates whose normal dependencies are checked, with the `aws-sdk-*` crates each may
/// use. tap-services reads what it deploys against (image digests in ECR, its tasks' target
/// health in ELBv2), so it declares those two SDK crates as its own.
pub const SDK_ALLOWED: &[(&str, &[&str])] = &[
    ("tap-core", &[]),
    ("tap-network", &["aws-sdk-ec2"]),
    ("tap-registry", &["aws-sdk-ecr"]),
    ("tap-cluster", &["aws-sdk-ecs"]),
    ("tap-security", &["aws-sdk-ec2", "aws-sdk-iam", "aws-sdk-secretsmanager"]),
    ("tap-ingress", &["aws-sdk-elasticloadbalancingv2"]),
    ("tap-discovery", &["aws-sdk-servicediscovery"]),
    ("tap-alarms", &["aws-sdk-cloudwatch"]),
    ("tap-quotas", &["aws-sdk-servicequotas"]),
    (
        "tap-services",
        &[
            "aws-sdk-ecs",
            "aws-sdk-cloudwatchlogs",
            "aws-sdk-applicationautoscaling",
            "aws-sdk-ecr",
            "aws-sdk-elasticloadbalancingv2",
        ],
    ),
];

/// Workspace crates outside the concern rule: the binary and the dev tooling may use anything.
const UNCHECKED: &[&str] = &["tap-cli", "tap-moto", "xtask", "tests"];

/// The concern crates (every checked crate but tap-core).
fn concerns() -> impl Iterator<Item = &'static str> {
    SDK_ALLOWED.iter().map(|(name, _)| *name).filter(|name| *name != "tap-core")
}

/// Runs every check on the workspace at `root`; the problems found, one line each.
pub fn run(root: &Path, metadata: &Value) -> Vec<String> {
    let mut problems = check_dependencies(metadata);
    problems.extend(check_sources(root, metadata));
    problems
}

/// A normal (not dev, not build) dependency edge of the resolve graph or a manifest.
fn is_normal(kind: &Value) -> bool {
    kind.is_null()
}

/// The dependency rule over `cargo metadata` JSON: declared normal dependencies first (the
/// clearest message), then the normal-dependency closure of the resolve graph (what
/// `cargo tree -e normal` shows: an SDK crate pulled in through another dependency).
pub fn check_dependencies(metadata: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    let empty = Vec::new();
    let members: BTreeSet<&str> =
        metadata["workspace_members"].as_array().unwrap_or(&empty).iter().filter_map(Value::as_str).collect();
    let packages = metadata["packages"].as_array().unwrap_or(&empty);
    let allowed: BTreeMap<&str, &[&str]> = SDK_ALLOWED.iter().copied().collect();
    let concern_names: BTreeSet<&str> = concerns().collect();

    for package in packages.iter().filter(|p| p["id"].as_str().is_some_and(|id| members.contains(id))) {
        let name = package["name"].as_str().unwrap_or_default();
        let Some(own) = allowed.get(name) else {
            if name.starts_with("tap-") && !UNCHECKED.contains(&name) {
                problems.push(format!(
                    "{name}: a workspace crate tidy does not know; add it to SDK_ALLOWED in xtask/src/tidy.rs"
                ));
            }
            continue;
        };
        for dep in package["dependencies"].as_array().unwrap_or(&empty).iter().filter(|d| is_normal(&d["kind"])) {
            let dep_name = dep["name"].as_str().unwrap_or_default();
            if is_sdk(dep_name) && !own.contains(&dep_name) {
                problems
                    .push(format!("{name}: depends on {dep_name}, the SDK crate of another concern ({})", only(own)));
            } else if dep_name == "aws-config" {
                problems
                    .push(format!("{name}: depends on aws-config (config loading is tap-cli's; take an AwsSession)"));
            } else if concern_names.contains(dep_name) || (name == "tap-core" && dep_name.starts_with("tap-")) {
                problems.push(format!("{name}: depends on {dep_name} (a concern crate never depends on another)"));
            }
        }
    }
    if !problems.is_empty() {
        return problems;
    }

    // The resolve graph: package id → (name, normal dependency ids).
    let nodes = metadata["resolve"]["nodes"].as_array().unwrap_or(&empty);
    let names: BTreeMap<&str, &str> =
        packages.iter().filter_map(|p| Some((p["id"].as_str()?, p["name"].as_str()?))).collect();
    let graph: BTreeMap<&str, Vec<&str>> = nodes
        .iter()
        .filter_map(|node| {
            let deps = node["deps"]
                .as_array()?
                .iter()
                .filter(|d| d["dep_kinds"].as_array().is_some_and(|ks| ks.iter().any(|k| is_normal(&k["kind"]))))
                .filter_map(|d| d["pkg"].as_str())
                .collect();
            Some((node["id"].as_str()?, deps))
        })
        .collect();
    for (id, name) in names.iter().filter(|(id, _)| members.contains(*id)) {
        let Some(own) = allowed.get(name) else { continue };
        let mut seen = BTreeSet::new();
        let mut stack = vec![*id];
        while let Some(at) = stack.pop() {
            for &next in graph.get(at).into_iter().flatten() {
                if seen.insert(next) {
                    stack.push(next);
                }
            }
        }
        let foreign: BTreeSet<&str> =
            seen.iter().filter_map(|id| names.get(id).copied()).filter(|n| is_sdk(n) && !own.contains(n)).collect();
        for dep in foreign {
            problems.push(format!("{name}: pulls in {dep} through its dependencies ({})", only(own)));
        }
    }
    problems
}

fn is_sdk(name: &str) -> bool {
    name.starts_with("aws-sdk-")
}

fn only(own: &[&str]) -> String {
    if own.is_empty() {
        "it may use no aws-sdk-* crate".into()
    } else {
        format!("it may use only {}", own.join(", "))
    }
}

/// `//!` docs at every library, binary and example root, and no `todo!` / `unimplemented!` in the
/// non-test code of any workspace crate.
pub fn check_sources(root: &Path, metadata: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    let empty = Vec::new();
    let members: BTreeSet<&str> =
        metadata["workspace_members"].as_array().unwrap_or(&empty).iter().filter_map(Value::as_str).collect();
    for package in metadata["packages"].as_array().unwrap_or(&empty) {
        if !package["id"].as_str().is_some_and(|id| members.contains(id)) {
            continue;
        }
        for target in package["targets"].as_array().unwrap_or(&empty) {
            let kinds = target["kind"].as_array().unwrap_or(&empty);
            let is_root = kinds.iter().filter_map(Value::as_str).any(|k| matches!(k, "lib" | "bin" | "example"));
            let Some(path) = target["src_path"].as_str() else { continue };
            if is_root {
                let text = std::fs::read_to_string(path).unwrap_or_default();
                if !text.lines().find(|l| !l.trim().is_empty()).is_some_and(|l| l.starts_with("//!")) {
                    problems.push(format!("{}: the crate root opens without `//!` docs", relative(root, path)));
                }
            }
        }
        let Some(dir) = package["manifest_path"].as_str().and_then(|p| Path::new(p).parent()) else { continue };
        for sub in ["src", "examples"] {
            for file in rust_files(&dir.join(sub)) {
                let text = std::fs::read_to_string(&file).unwrap_or_default();
                problems.extend(unfinished(&text).into_iter().map(|(line, mac)| {
                    format!("{}:{line}: `{mac}` in non-test code", relative(root, &file.to_string_lossy()))
                }));
            }
        }
    }
    problems
}

/// The `todo!` / `unimplemented!` calls of `text` before its test module (`#[cfg(test)]`), with
/// their line numbers. Files named `tests.rs` are test modules whole.
fn unfinished(text: &str) -> Vec<(usize, String)> {
    let macros = [concat!("todo", "!"), concat!("unimplemented", "!")];
    let mut found = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim_start().starts_with("#[cfg(test)]") {
            break;
        }
        let code = line.split("//").next().unwrap_or_default();
        for mac in macros {
            let mut rest = code;
            while let Some(at) = rest.find(mac) {
                let before = rest[..at].chars().next_back();
                if !before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                    found.push((i + 1, mac.to_string()));
                }
                rest = &rest[at + mac.len()..];
            }
        }
    }
    found
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return files };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") && path.file_name().is_some_and(|n| n != "tests.rs") {
            files.push(path);
        }
    }
    files.sort();
    files
}

fn relative(root: &Path, path: &str) -> String {
    Path::new(path).strip_prefix(root).map(|p| p.display().to_string()).unwrap_or_else(|_| path.to_string())
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use serde_json::json;

    use super::*;

    /// The real workspace's metadata (a plain `cargo metadata`: it reads manifests, builds nothing).
    fn workspace_metadata() -> Value {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let out = Command::new(cargo)
            .args(["metadata", "--format-version", "1"])
            .current_dir(tap_moto::workspace_root())
            .output()
            .expect("cargo metadata");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).expect("metadata JSON")
    }

    fn package<'a>(metadata: &'a mut Value, name: &str) -> &'a mut Value {
        metadata["packages"]
            .as_array_mut()
            .unwrap()
            .iter_mut()
            .find(|p| p["name"] == name && p["source"].is_null())
            .unwrap_or_else(|| panic!("no workspace package {name}"))
    }

    fn id_of(metadata: &Value, name: &str) -> String {
        let packages = metadata["packages"].as_array().unwrap();
        packages.iter().find(|p| p["name"] == name).and_then(|p| p["id"].as_str()).unwrap().to_string()
    }

    #[test]
    fn the_workspace_as_it_is_passes() {
        let metadata = workspace_metadata();
        assert_eq!(check_dependencies(&metadata), Vec::<String>::new());
        assert_eq!(check_sources(&tap_moto::workspace_root(), &metadata), Vec::<String>::new());
    }

    #[test]
    fn a_concern_crate_declaring_another_concerns_sdk_crate_fails_naming_both() {
        let mut metadata = workspace_metadata();
        let dependencies = package(&mut metadata, "tap-cluster")["dependencies"].as_array_mut().unwrap();
        dependencies.push(json!({"name": "aws-sdk-ec2", "kind": null, "source": "registry+https://github.com/rust-lang/crates.io-index"}));
        let problems = check_dependencies(&metadata);
        assert_eq!(
            problems,
            ["tap-cluster: depends on aws-sdk-ec2, the SDK crate of another concern (it may use only aws-sdk-ecs)"]
        );
    }

    #[test]
    fn tap_core_with_any_sdk_crate_or_aws_config_fails() {
        let mut metadata = workspace_metadata();
        let dependencies = package(&mut metadata, "tap-core")["dependencies"].as_array_mut().unwrap();
        dependencies.push(json!({"name": "aws-sdk-ecs", "kind": null}));
        dependencies.push(json!({"name": "aws-config", "kind": null}));
        let problems = check_dependencies(&metadata);
        assert!(problems.iter().any(|p| p.starts_with("tap-core: depends on aws-sdk-ecs")), "{problems:?}");
        assert!(problems.iter().any(|p| p.starts_with("tap-core: depends on aws-config")), "{problems:?}");
    }

    #[test]
    fn a_dev_dependency_on_a_foreign_sdk_crate_is_fine() {
        // Examples and tests may use other SDK crates: dev-dependencies do not reach a user.
        let mut metadata = workspace_metadata();
        let dependencies = package(&mut metadata, "tap-cluster")["dependencies"].as_array_mut().unwrap();
        dependencies.push(json!({"name": "aws-sdk-iam", "kind": "dev"}));
        assert_eq!(check_dependencies(&metadata), Vec::<String>::new());
    }

    #[test]
    fn a_concern_crate_depending_on_another_fails() {
        let mut metadata = workspace_metadata();
        let dependencies = package(&mut metadata, "tap-services")["dependencies"].as_array_mut().unwrap();
        dependencies.push(json!({"name": "tap-ingress", "kind": null}));
        assert_eq!(
            check_dependencies(&metadata),
            ["tap-services: depends on tap-ingress (a concern crate never depends on another)"]
        );
    }

    #[test]
    fn an_sdk_crate_pulled_in_through_another_dependency_fails() {
        // tap-discovery → tap-core, and (doctored) tap-core → aws-sdk-iam in the resolve graph only.
        let mut metadata = workspace_metadata();
        let (core, iam) = (id_of(&metadata, "tap-core"), id_of(&metadata, "aws-sdk-iam"));
        let node = metadata["resolve"]["nodes"].as_array_mut().unwrap().iter_mut().find(|n| n["id"] == core).unwrap();
        node["deps"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": "aws_sdk_iam", "pkg": iam, "dep_kinds": [{"kind": null, "target": null}]}));
        let problems = check_dependencies(&metadata);
        assert!(
            problems.contains(
                &"tap-core: pulls in aws-sdk-iam through its dependencies (it may use no aws-sdk-* crate)".to_string()
            ),
            "{problems:?}"
        );
        assert!(problems.contains(&"tap-discovery: pulls in aws-sdk-iam through its dependencies (it may use only aws-sdk-servicediscovery)".to_string()), "{problems:?}");
    }

    #[test]
    fn an_unknown_tap_crate_must_be_classified() {
        let mut metadata = workspace_metadata();
        package(&mut metadata, "tap-cluster")["name"] = json!("tap-billing");
        assert!(check_dependencies(&metadata)
            .iter()
            .any(|p| p.starts_with("tap-billing: a workspace crate tidy does not know")));
    }

    #[test]
    fn unfinished_code_is_found_outside_tests_only() {
        let todo = concat!("to", "do!()");
        let text = format!("fn a() {{ {todo} }}\n// {todo} in a comment\nfn my_{todo}\n#[cfg(test)]\nmod tests {{ fn b() {{ {todo} }} }}\n");
        assert_eq!(unfinished(&text), [(1, concat!("to", "do!").to_string())]);
    }
}
