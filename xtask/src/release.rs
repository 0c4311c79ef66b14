//! `cargo xtask release <version> [--execute]`: bump, date, commit and tag a release.
//!
//! A dry run by default: it checks what it can without changing anything (a clean tree, a version
//! above the current one, no tag `v<version>` yet, an Unreleased section with entries) and prints
//! the plan. With `--execute` it then runs `cargo xtask ci` (and stops if it is red), bumps
//! `[workspace.package] version` and every internal requirement in `[workspace.dependencies]`
//! (`tap-core = { path = "tap-core", version = "=<version>", … }`), refreshes Cargo.lock, moves
//! CHANGELOG's Unreleased entries under `## [<version>] - <date>`, checks that every library crate
//! still packages (`cargo xtask package`), commits and tags `v<version>`. A failure after the
//! first edit puts the files back.

use std::path::Path;

use anyhow::{bail, Context, Result};
use semver::Version;
use serde_json::Value;

use crate::{clock, git, package};

/// The files a release edits, relative to the workspace root.
pub const EDITED: &[&str] = &["Cargo.toml", "Cargo.lock", "CHANGELOG.md"];

/// The current `[workspace.package] version` of a root manifest.
pub fn current_version(manifest: &str) -> Result<Version> {
    let doc: toml_edit::DocumentMut = manifest.parse().context("parsing Cargo.toml")?;
    let version = doc
        .get("workspace")
        .and_then(|w| w.get("package"))
        .and_then(|p| p.get("version"))
        .and_then(|v| v.as_str())
        .context("Cargo.toml has no [workspace.package] version")?;
    Version::parse(version).with_context(|| format!("[workspace.package] version {version:?}"))
}

/// The root manifest with `[workspace.package] version = next` and each internal dependency of
/// `[workspace.dependencies]` (a `path` with a `version`) required at `=next`; the names of those
/// dependencies. Formatting and comments are kept.
pub fn bump_manifest(manifest: &str, next: &Version) -> Result<(String, Vec<String>)> {
    let mut doc: toml_edit::DocumentMut = manifest.parse().context("parsing Cargo.toml")?;
    let package = doc
        .get_mut("workspace")
        .and_then(|w| w.get_mut("package"))
        .and_then(|p| p.as_table_like_mut())
        .context("Cargo.toml has no [workspace.package]")?;
    let Some(version) = package.get_mut("version").and_then(|v| v.as_value_mut()) else {
        bail!("Cargo.toml has no [workspace.package] version");
    };
    *version = with_decor(next.to_string(), version);

    let mut bumped = Vec::new();
    if let Some(deps) =
        doc.get_mut("workspace").and_then(|w| w.get_mut("dependencies")).and_then(|d| d.as_table_like_mut())
    {
        for (name, dep) in deps.iter_mut() {
            let Some(dep) = dep.as_table_like_mut() else { continue };
            if dep.get("path").is_none() {
                continue;
            }
            if let Some(version) = dep.get_mut("version").and_then(|v| v.as_value_mut()) {
                *version = with_decor(format!("={next}"), version);
                bumped.push(name.to_string());
            }
        }
    }
    Ok((doc.to_string(), bumped))
}

/// A string value that keeps the spacing around the one it replaces.
fn with_decor(value: String, old: &toml_edit::Value) -> toml_edit::Value {
    let mut new = toml_edit::Value::from(value);
    *new.decor_mut() = old.decor().clone();
    new
}

/// The Unreleased section's entries (its lines up to the next `## ` heading), trimmed.
fn unreleased_entries(changelog: &str) -> Result<(usize, usize, String)> {
    let lines: Vec<&str> = changelog.lines().collect();
    let start = lines
        .iter()
        .position(|l| l.trim().eq_ignore_ascii_case("## [Unreleased]"))
        .context("CHANGELOG.md has no `## [Unreleased]` section")?;
    let end = lines[start + 1..].iter().position(|l| l.starts_with("## ")).map_or(lines.len(), |i| start + 1 + i);
    let entries = lines[start + 1..end].join("\n").trim().to_owned();
    if !entries.lines().any(|l| l.trim_start().starts_with("- ") || l.trim_start().starts_with("* ")) {
        bail!("CHANGELOG.md's Unreleased section lists no change: nothing to release");
    }
    Ok((start, end, entries))
}

/// CHANGELOG.md (keep-a-changelog) with the Unreleased entries moved under
/// `## [version] - date` and an empty Unreleased section above it.
pub fn move_unreleased(changelog: &str, version: &Version, date: &str) -> Result<String> {
    let (start, end, entries) = unreleased_entries(changelog)?;
    let lines: Vec<&str> = changelog.lines().collect();
    if lines.iter().any(|l| l.starts_with(&format!("## [{version}]"))) {
        bail!("CHANGELOG.md already has a section for {version}");
    }
    let mut out: Vec<String> = lines[..start].iter().map(|l| l.to_string()).collect();
    out.push("## [Unreleased]".into());
    out.push(String::new());
    out.push(format!("## [{version}] - {date}"));
    out.push(String::new());
    out.push(entries);
    if end < lines.len() {
        out.push(String::new());
        out.extend(lines[end..].iter().map(|l| l.to_string()));
    }
    Ok(out.join("\n") + "\n")
}

/// Writes the bumped Cargo.toml and CHANGELOG.md under `root`; the internal dependencies bumped.
pub fn bump_files(root: &Path, next: &Version, date: &str) -> Result<Vec<String>> {
    let manifest = std::fs::read_to_string(root.join("Cargo.toml"))?;
    let changelog = std::fs::read_to_string(root.join("CHANGELOG.md")).context("reading CHANGELOG.md")?;
    let (manifest, bumped) = bump_manifest(&manifest, next)?;
    let changelog = move_unreleased(&changelog, next, date)?;
    std::fs::write(root.join("Cargo.toml"), manifest)?;
    std::fs::write(root.join("CHANGELOG.md"), changelog)?;
    Ok(bumped)
}

/// Checks `cargo metadata` after a bump: every member at `next`, and every dependency on a
/// member that carries a version requiring exactly `next`.
pub fn check_bumped(metadata: &Value, next: &Version) -> Result<()> {
    let empty = Vec::new();
    let members: Vec<&str> =
        metadata["workspace_members"].as_array().unwrap_or(&empty).iter().filter_map(Value::as_str).collect();
    let packages: Vec<&Value> = metadata["packages"]
        .as_array()
        .unwrap_or(&empty)
        .iter()
        .filter(|p| p["id"].as_str().is_some_and(|id| members.contains(&id)))
        .collect();
    let names: Vec<&str> = packages.iter().filter_map(|p| p["name"].as_str()).collect();
    let mut problems = Vec::new();
    for package in &packages {
        let name = package["name"].as_str().unwrap_or_default();
        if package["version"].as_str() != Some(next.to_string().as_str()) {
            problems.push(format!("{name} is at {} (its version is not the workspace's)", package["version"]));
        }
        for dep in package["dependencies"].as_array().unwrap_or(&empty) {
            let dep_name = dep["name"].as_str().unwrap_or_default();
            let req = dep["req"].as_str().unwrap_or_default();
            if names.contains(&dep_name) && req != "*" && req != format!("={next}") {
                problems.push(format!("{name} requires {dep_name} {req}, not ={next}"));
            }
        }
    }
    if !problems.is_empty() {
        bail!("after the bump:\n  {}", problems.join("\n  "));
    }
    Ok(())
}

/// `cargo xtask release <version> [--execute]` on the workspace.
pub fn run_release(args: &[String]) -> Result<()> {
    release_in(&tap_moto::workspace_root(), args)
}

/// `cargo xtask release` on the workspace at `root`.
fn release_in(root: &Path, args: &[String]) -> Result<()> {
    let execute = args.iter().any(|a| a == "--execute");
    let positional: Vec<&String> = args.iter().filter(|a| !a.starts_with("--")).collect();
    let (Some(version), 1, true) =
        (positional.first(), positional.len(), args.iter().all(|a| !a.starts_with("--") || a == "--execute"))
    else {
        bail!("usage: cargo xtask release <version> [--execute]");
    };
    let next = Version::parse(version.trim_start_matches('v'))
        .with_context(|| format!("{version:?} is not a version like 1.2.3"))?;
    let tag = format!("v{next}");
    let date = clock::date(clock::now());

    git::require_clean(root)?;
    let manifest = std::fs::read_to_string(root.join("Cargo.toml"))?;
    let current = current_version(&manifest)?;
    if next <= current {
        bail!("{next} is not above the current version {current}");
    }
    if git::tag_exists(root, &tag)? {
        bail!("tag {tag} exists already");
    }
    let (_, bumped) = bump_manifest(&manifest, &next)?;
    let changelog = std::fs::read_to_string(root.join("CHANGELOG.md")).context("reading CHANGELOG.md")?;
    let (_, _, entries) = unreleased_entries(&changelog)?;
    let metadata = crate::dist::metadata(root, None)?;
    let (crates, registry) = package::publishable(&metadata)?;

    println!("release {current} -> {next} ({})", if execute { "executing" } else { "dry run: nothing is changed" });
    println!("  1. cargo xtask ci (stop if red)");
    println!("  2. Cargo.toml: [workspace.package] version = \"{next}\"");
    println!("     [workspace.dependencies] {} = {{ version = \"={next}\" }}", bumped.join(", "));
    println!("     Cargo.lock refreshed; cargo metadata must show every member at {next}");
    println!(
        "  3. CHANGELOG.md: the Unreleased entries ({} lines) under `## [{next}] - {date}`",
        entries.lines().count()
    );
    println!("  4. cargo package of {} (registry: {})", crates.join(", "), registry.as_deref().unwrap_or("crates.io"));
    println!("  5. git commit -m \"Release {next}\" ({}) and git tag -a {tag}", EDITED.join(", "));
    if !execute {
        println!("run `cargo xtask release {next} --execute` to do it");
        return Ok(());
    }

    crate::ci().context("cargo xtask ci is red: no release")?;
    git::require_clean(root).context("cargo xtask ci left changes behind")?;
    let result = (|| -> Result<()> {
        bump_files(root, &next, &date)?;
        // `cargo metadata` rewrites the workspace's own entries of Cargo.lock, nothing else.
        let metadata = crate::dist::metadata(root, None)?;
        check_bumped(&metadata, &next)?;
        package::check(&metadata)?;
        Ok(())
    })();
    if let Err(e) = result {
        let mut restore = vec!["checkout", "--"];
        restore.extend(EDITED);
        git::git(root, &restore).context("putting the edited files back")?;
        return Err(e.context("the release stopped; the edited files are back as they were"));
    }
    let mut add = vec!["add", "--"];
    add.extend(EDITED);
    git::git(root, &add)?;
    git::git(root, &["commit", "-q", "-m", &format!("Release {next}")])?;
    git::git(root, &["tag", "-a", &tag, "-m", &format!("tap {next}")])?;
    println!("committed \"Release {next}\" and tagged {tag}; next:");
    println!("  git push origin HEAD {tag}");
    println!("  cargo xtask dist        # the archive, SHA256SUMS and the SBOM in dist/");
    if let Some(registry) = registry {
        println!(
            "  cargo publish --registry {registry} {}",
            crates.iter().map(|c| format!("-p {c}")).collect::<Vec<_>>().join(" ")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHANGELOG: &str =
        "# Changelog\n\nIntro.\n\n## [Unreleased]\n\n### Added\n- a thing\n\n## [0.1.0] - 2026-01-01\n\n- first\n";

    #[test]
    fn the_manifest_bump_sets_the_version_and_the_internal_requirements_keeping_the_rest() {
        let manifest = r#"[workspace.package]
version = "0.1.0"   # the release
edition = "2021"

[workspace.dependencies]
tap-core = { path = "tap-core", version = "=0.1.0", registry = "internal" }
tap-moto = { path = "tap-moto" }
serde = { version = "1", features = ["derive"] }
"#;
        let next = Version::parse("0.2.0").unwrap();
        let (out, bumped) = bump_manifest(manifest, &next).unwrap();
        assert_eq!(bumped, ["tap-core"]);
        assert!(out.contains("version = \"0.2.0\"   # the release"), "{out}");
        assert!(
            out.contains(r#"tap-core = { path = "tap-core", version = "=0.2.0", registry = "internal" }"#),
            "{out}"
        );
        assert!(out.contains(r#"tap-moto = { path = "tap-moto" }"#) && out.contains(r#"serde = { version = "1""#));
        assert_eq!(current_version(&out).unwrap(), next);
    }

    #[test]
    fn the_unreleased_entries_move_under_the_dated_version() {
        let out = move_unreleased(CHANGELOG, &Version::parse("0.2.0").unwrap(), "2026-12-07").unwrap();
        assert_eq!(
            out,
            "# Changelog\n\nIntro.\n\n## [Unreleased]\n\n## [0.2.0] - 2026-12-07\n\n### Added\n- a thing\n\n## [0.1.0] - 2026-01-01\n\n- first\n"
        );
        let err = move_unreleased(&out, &Version::parse("0.3.0").unwrap(), "2026-12-08").unwrap_err();
        assert!(err.to_string().contains("lists no change"), "{err}");
        let err = move_unreleased(CHANGELOG, &Version::parse("0.1.0").unwrap(), "2026-12-08").unwrap_err();
        assert!(err.to_string().contains("already has a section"), "{err}");
    }

    /// The workspace's sources (no .git, no build output) copied into a temporary folder.
    fn scratch_copy() -> tempfile::TempDir {
        fn copy(from: &Path, to: &Path) {
            std::fs::create_dir_all(to).unwrap();
            for entry in std::fs::read_dir(from).unwrap() {
                let entry = entry.unwrap();
                let name = entry.file_name();
                if [".git", "target", ".tap", "dist"].iter().any(|skip| name == *skip) {
                    continue;
                }
                if entry.file_type().unwrap().is_dir() {
                    copy(&entry.path(), &to.join(&name));
                } else {
                    std::fs::copy(entry.path(), to.join(&name)).unwrap();
                }
            }
        }
        let dir = tempfile::tempdir().unwrap();
        copy(&tap_moto::workspace_root(), dir.path());
        dir
    }

    #[test]
    fn the_bump_on_a_scratch_copy_moves_every_crate_and_requirement_to_the_new_version() {
        let scratch = scratch_copy();
        let root = scratch.path();
        // Right after a release the Unreleased section is empty: give the copy an entry to move.
        let changelog = std::fs::read_to_string(root.join("CHANGELOG.md")).unwrap();
        let changelog = changelog.replacen("## [Unreleased]\n", "## [Unreleased]\n\n### Fixed\n- A change.\n", 1);
        std::fs::write(root.join("CHANGELOG.md"), changelog).unwrap();
        let current = current_version(&std::fs::read_to_string(root.join("Cargo.toml")).unwrap()).unwrap();
        let next = Version::new(current.major, current.minor + 1, 0);
        let bumped = bump_files(root, &next, "2026-12-07").unwrap();
        assert!(bumped.contains(&"tap-core".to_owned()) && bumped.contains(&"tap-network".to_owned()), "{bumped:?}");

        let out = std::process::Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
            .args(["metadata", "--format-version", "1", "--no-deps", "--offline"])
            .current_dir(root)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let metadata: Value = serde_json::from_slice(&out.stdout).unwrap();
        check_bumped(&metadata, &next).unwrap();
        assert!(check_bumped(&metadata, &current).is_err(), "the check sees a stale version");
        let changelog = std::fs::read_to_string(root.join("CHANGELOG.md")).unwrap();
        assert!(changelog.contains(&format!("## [Unreleased]\n\n## [{next}] - 2026-12-07\n")), "{changelog}");
    }

    #[test]
    fn a_release_refuses_a_dirty_tree_before_anything_else() {
        let repo = crate::git::tests::scratch_repo();
        std::fs::write(repo.path().join("a.txt"), "edited\n").unwrap();
        for args in [&["9.0.0".to_owned()][..], &["9.0.0".to_owned(), "--execute".to_owned()]] {
            let err = release_in(repo.path(), args).unwrap_err().to_string();
            assert!(err.contains("uncommitted changes") && err.contains("a.txt"), "{err}");
        }
        assert_eq!(std::fs::read_to_string(repo.path().join("a.txt")).unwrap(), "edited\n");
        assert!(!git::tag_exists(repo.path(), "v9.0.0").unwrap());
    }

    #[test]
    fn a_release_refuses_a_bad_version_or_usage() {
        let repo = crate::git::tests::scratch_repo();
        assert!(release_in(repo.path(), &["one.two".to_owned()]).unwrap_err().to_string().contains("not a version"));
        assert!(release_in(repo.path(), &[]).unwrap_err().to_string().contains("usage"));
        assert!(release_in(repo.path(), &["1.0.0".to_owned(), "--force".to_owned()])
            .unwrap_err()
            .to_string()
            .contains("usage"));
    }
}
