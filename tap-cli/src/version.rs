//! `tap --version`: the version, the git commit the binary was built from (and whether the tree
//! had uncommitted changes) and the target triple, as text or with `--output json` as JSON.
//!
//! The commit and target come from `build.rs`; a build from a source tree without git says
//! `unknown` (JSON: `null`).

use std::ffi::OsString;

use serde_json::{json, Value};

/// What the binary knows about its own build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildInfo {
    /// The package version, e.g. `0.1.0`.
    pub version: &'static str,
    /// The full commit hash, when built from a git checkout.
    pub commit: Option<&'static str>,
    /// Whether tracked files had uncommitted changes (known only with the commit).
    pub dirty: Option<bool>,
    /// The target triple, e.g. `x86_64-unknown-linux-gnu`.
    pub target: &'static str,
}

/// This binary's build.
pub const BUILD: BuildInfo = BuildInfo {
    version: env!("CARGO_PKG_VERSION"),
    commit: non_empty(env!("TAP_BUILD_COMMIT")),
    dirty: match env!("TAP_BUILD_DIRTY").as_bytes() {
        b"true" => Some(true),
        b"false" => Some(false),
        _ => None,
    },
    target: env!("TAP_BUILD_TARGET"),
};

const fn non_empty(s: &'static str) -> Option<&'static str> {
    if s.is_empty() {
        None
    } else {
        Some(s)
    }
}

impl BuildInfo {
    /// One line: `tap 0.1.0 (commit 0123456789ab-dirty, x86_64-unknown-linux-gnu)`.
    pub fn text(&self) -> String {
        let commit = match (self.commit, self.dirty) {
            (Some(c), Some(true)) => format!("{}-dirty", &c[..c.len().min(12)]),
            (Some(c), _) => c[..c.len().min(12)].to_owned(),
            (None, _) => "unknown".to_owned(),
        };
        format!("tap {} (commit {commit}, {})", self.version, self.target)
    }

    /// `{"name": "tap", "version", "commit", "dirty", "target"}`; unknown values are `null`.
    pub fn json(&self) -> Value {
        json!({
            "name": "tap",
            "version": self.version,
            "commit": self.commit,
            "dirty": self.dirty,
            "target": self.target,
        })
    }
}

/// Whether the command line asks for JSON output (`--output json` or `--output=json`). clap
/// answers `--version` before the other flags are taken apart, so `main` looks for itself.
pub fn wants_json(args: impl IntoIterator<Item = OsString>) -> bool {
    let args: Vec<String> = args.into_iter().map(|a| a.to_string_lossy().into_owned()).collect();
    let end = args.iter().position(|a| a == "--").unwrap_or(args.len());
    let args = &args[..end];
    args.iter().any(|a| a == "--output=json") || args.windows(2).any(|w| w[0] == "--output" && w[1] == "json")
}

/// Prints the version to stdout, as JSON when `json`.
pub fn print(json: bool) {
    if json {
        println!("{}", serde_json::to_string_pretty(&BUILD.json()).unwrap_or_default());
    } else {
        println!("{}", BUILD.text());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<OsString> {
        s.split_whitespace().map(OsString::from).collect()
    }

    #[test]
    fn json_is_asked_for_with_either_spelling_before_a_double_dash() {
        assert!(wants_json(args("tap --version --output json")));
        assert!(wants_json(args("tap --output=json -V")));
        assert!(!wants_json(args("tap --version")));
        assert!(!wants_json(args("tap --output text --version")));
        assert!(!wants_json(args("tap run api -- --output json")));
    }

    #[test]
    fn text_names_version_short_commit_dirty_and_target() {
        let info = BuildInfo {
            version: "1.2.3",
            commit: Some("0123456789abcdef0123456789abcdef01234567"),
            dirty: Some(true),
            target: "x86_64-unknown-linux-gnu",
        };
        assert_eq!(info.text(), "tap 1.2.3 (commit 0123456789ab-dirty, x86_64-unknown-linux-gnu)");
        let clean = BuildInfo { dirty: Some(false), ..info.clone() };
        assert_eq!(clean.text(), "tap 1.2.3 (commit 0123456789ab, x86_64-unknown-linux-gnu)");
        assert_eq!(clean.json()["commit"], "0123456789abcdef0123456789abcdef01234567");
        assert_eq!(clean.json()["dirty"], false);
    }

    #[test]
    fn a_build_without_git_says_unknown() {
        let info = BuildInfo { version: "1.2.3", commit: None, dirty: None, target: "aarch64-apple-darwin" };
        assert_eq!(info.text(), "tap 1.2.3 (commit unknown, aarch64-apple-darwin)");
        assert_eq!(info.json()["commit"], Value::Null);
        assert_eq!(info.json()["dirty"], Value::Null);
    }

    #[test]
    fn this_build_knows_its_target_and_version() {
        assert_eq!(BUILD.version, env!("CARGO_PKG_VERSION"));
        assert!(BUILD.target.contains('-'), "target triple: {:?}", BUILD.target);
        // The workspace is a git checkout when its tests run, so the commit is a full hash.
        if let Some(commit) = BUILD.commit {
            assert!(commit.len() >= 40 && commit.chars().all(|c| c.is_ascii_hexdigit()), "{commit}");
            assert!(BUILD.dirty.is_some());
        }
    }
}
