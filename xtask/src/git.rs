//! The few git questions `dist` and `release` ask, through the `git` command.

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};

/// `git -C root args…`: its trimmed stdout, or an error with git's stderr.
pub fn git(root: &Path, args: &[&str]) -> Result<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(root)
        .args(args)
        .output()
        .with_context(|| format!("running git {}", args.join(" ")))?;
    if !out.status.success() {
        bail!("`git {}` failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim_end().to_owned())
}

/// The checked-out commit (full hash), or `None` outside a git checkout.
pub fn head(root: &Path) -> Option<String> {
    git(root, &["rev-parse", "HEAD"]).ok()
}

/// `git status --porcelain` lines: changed tracked files, and untracked ones unless
/// `tracked_only` (ignored files never count).
pub fn changes(root: &Path, tracked_only: bool) -> Result<Vec<String>> {
    let mut args = vec!["status", "--porcelain"];
    if tracked_only {
        args.push("--untracked-files=no");
    }
    Ok(git(root, &args)?.lines().map(str::to_owned).collect())
}

/// Refuses a tree with any change, tracked or untracked, naming the files.
pub fn require_clean(root: &Path) -> Result<()> {
    let changes = changes(root, false)?;
    if !changes.is_empty() {
        bail!("the working tree has uncommitted changes; commit or stash them first:\n  {}", changes.join("\n  "));
    }
    Ok(())
}

/// Whether tag `name` exists.
pub fn tag_exists(root: &Path, name: &str) -> Result<bool> {
    Ok(!git(root, &["tag", "--list", name])?.is_empty())
}

/// The commit time of HEAD, seconds since the epoch: the timestamp of reproducible artifacts.
pub fn head_time(root: &Path) -> Option<u64> {
    git(root, &["log", "-1", "--format=%ct"]).ok()?.trim().parse().ok()
}

#[cfg(test)]
pub mod tests {
    use super::*;

    /// A fresh repository in a temporary folder with one committed file, `a.txt`.
    pub fn scratch_repo() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.txt"), "one\n").unwrap();
        for args in [
            &["init", "-q", "."][..],
            &["add", "a.txt"],
            &["-c", "user.name=t", "-c", "user.email=t@localhost", "commit", "-q", "-m", "one"],
        ] {
            git(dir.path(), args).unwrap();
        }
        dir
    }

    #[test]
    fn a_clean_tree_passes_and_edits_or_new_files_are_refused_by_name() {
        let repo = scratch_repo();
        require_clean(repo.path()).unwrap();
        assert_eq!(head(repo.path()).unwrap().len(), 40);

        std::fs::write(repo.path().join("new.txt"), "x").unwrap();
        let err = require_clean(repo.path()).unwrap_err().to_string();
        assert!(err.contains("uncommitted changes") && err.contains("new.txt"), "{err}");
        assert!(changes(repo.path(), true).unwrap().is_empty(), "an untracked file is no tracked change");

        std::fs::remove_file(repo.path().join("new.txt")).unwrap();
        std::fs::write(repo.path().join("a.txt"), "two\n").unwrap();
        let err = require_clean(repo.path()).unwrap_err().to_string();
        assert!(err.contains("a.txt"), "{err}");
        assert_eq!(changes(repo.path(), true).unwrap(), vec![" M a.txt".to_owned()]);
    }
}
