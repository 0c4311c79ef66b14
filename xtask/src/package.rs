//! `cargo xtask package`: `cargo package` of every publishable library crate, together.
//!
//! Publishable means: a workspace member with a library target whose `publish` is not `false`
//! (tap-core and the concern crates; tap-cli, tap-moto, tests and xtask say `publish = false`),
//! so a new library crate is checked without being listed here. Cargo packages them as one set:
//! a crate's dependency on another of the set (e.g. `tap-core = "=0.1.0"`) resolves to the
//! package just made, not to the registry.
//!
//! They are published to the private registry their `publish` names (`internal`; crates.io has
//! an unrelated `tap-core`). Packaging resolves the set's own crates through that registry's
//! index, so the check points the registry at an empty local index of its own (in the target
//! folder): it checks that each crate builds from its packaged sources, wherever the registry is.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::{cargo, git, run};

/// The publishable library crates of the workspace and the one registry they may go to.
pub fn publishable(metadata: &Value) -> Result<(Vec<String>, Option<String>)> {
    let empty = Vec::new();
    let members: Vec<&str> =
        metadata["workspace_members"].as_array().unwrap_or(&empty).iter().filter_map(Value::as_str).collect();
    let mut crates = Vec::new();
    let mut registries = std::collections::BTreeSet::new();
    for package in metadata["packages"].as_array().unwrap_or(&empty) {
        if !package["id"].as_str().is_some_and(|id| members.contains(&id)) {
            continue;
        }
        let is_lib = package["targets"]
            .as_array()
            .unwrap_or(&empty)
            .iter()
            .any(|t| t["kind"].as_array().is_some_and(|ks| ks.iter().any(|k| k == "lib")));
        // `publish`: null = anywhere, [] = `publish = false`, [names] = those registries.
        let publish = &package["publish"];
        if !is_lib || publish.as_array().is_some_and(Vec::is_empty) {
            continue;
        }
        for registry in publish.as_array().unwrap_or(&empty).iter().filter_map(Value::as_str) {
            registries.insert(registry.to_owned());
        }
        crates.push(package["name"].as_str().unwrap_or_default().to_owned());
    }
    crates.sort();
    if registries.len() > 1 {
        bail!("the library crates name different registries: {registries:?}; they are packaged as one set");
    }
    Ok((crates, registries.into_iter().next()))
}

/// An empty git registry index at `dir` (a `config.json`, one commit).
fn empty_index(dir: &Path) -> Result<()> {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir)?;
    let dl = format!("file://{}/{{crate}}-{{version}}.crate", dir.display());
    std::fs::write(dir.join("config.json"), serde_json::json!({ "dl": dl }).to_string())?;
    git::git(dir, &["init", "-q", "."])?;
    git::git(dir, &["add", "config.json"])?;
    git::git(dir, &["-c", "user.name=xtask", "-c", "user.email=xtask@localhost", "commit", "-q", "-m", "empty index"])?;
    Ok(())
}

/// `CARGO_REGISTRIES_<NAME>_INDEX`, the variable that sets registry `name`'s index.
pub fn index_variable(registry: &str) -> String {
    format!("CARGO_REGISTRIES_{}_INDEX", registry.to_uppercase().replace('-', "_"))
}

/// Runs `cargo package` over every publishable library crate; `--allow-dirty` because a release
/// checks its bumped, not yet committed manifests.
pub fn check(metadata: &Value) -> Result<Vec<String>> {
    let (crates, registry) = publishable(metadata)?;
    if crates.is_empty() {
        bail!("no publishable library crate in the workspace");
    }
    let mut cmd = cargo();
    cmd.args(["package", "--allow-dirty"]);
    // Cargo verifies each crate as a workspace of its own, without this workspace's profiles; no
    // debug info (as `[profile.dev.package."*"]` has for dependencies here) lets it reuse the
    // dependencies a `cargo build` or `cargo test` compiled instead of building the SDK again.
    cmd.env("CARGO_PROFILE_DEV_DEBUG", "false");
    for name in &crates {
        cmd.args(["--package", name]);
    }
    if let Some(registry) = &registry {
        let target_dir = PathBuf::from(metadata["target_directory"].as_str().context("no target_directory")?);
        let index = target_dir.join("package-check-index");
        empty_index(&index)?;
        cmd.env(index_variable(registry), format!("file://{}", index.display()));
    }
    run(&mut cmd)?;
    eprintln!("cargo package: ok for {}", crates.join(", "));
    Ok(crates)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_library_crates_are_publishable_to_one_private_registry_and_the_rest_not() {
        let metadata = crate::dist::metadata(&tap_moto::workspace_root(), None).unwrap();
        let (crates, registry) = publishable(&metadata).unwrap();
        for name in ["tap-core", "tap-network", "tap-registry", "tap-cluster", "tap-security", "tap-ingress"] {
            assert!(crates.contains(&name.to_owned()), "{name} missing from {crates:?}");
        }
        for name in ["tap-cli", "tap-moto", "tests", "xtask"] {
            assert!(!crates.contains(&name.to_owned()), "{name} is not published");
        }
        assert_eq!(registry.as_deref(), Some("internal"));
        assert_eq!(index_variable("my-reg"), "CARGO_REGISTRIES_MY_REG_INDEX");
    }
}
