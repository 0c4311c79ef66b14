//! Build script: records what `tap --version` reports besides the version — the git commit the
//! binary was built from, whether the tree had uncommitted changes, and the target triple.
//!
//! `TAP_BUILD_COMMIT` and `TAP_BUILD_DIRTY` (`true`/`false`) override git (`cargo xtask dist`
//! passes them, read fresh from git, so a release never carries a stale flag). Without them the
//! commit comes from git when the package sits in the workspace's own checkout; a source tree
//! without `.git` (a tarball) or without git builds as well, with the commit unknown.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=TAP_BUILD_COMMIT");
    println!("cargo:rerun-if-env-changed=TAP_BUILD_DIRTY");
    println!("cargo:rustc-env=TAP_BUILD_TARGET={}", std::env::var("TARGET").unwrap_or_default());

    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let explicit = std::env::var("TAP_BUILD_COMMIT").ok().filter(|c| !c.is_empty());
    let (commit, dirty) = match explicit {
        Some(commit) => (commit, std::env::var("TAP_BUILD_DIRTY").unwrap_or_default()),
        None => match from_git(&manifest_dir) {
            Some((commit, dirty)) => (commit, dirty.to_string()),
            None => (String::new(), String::new()),
        },
    };
    // Empty values mean "unknown" (src/version.rs).
    println!("cargo:rustc-env=TAP_BUILD_COMMIT={commit}");
    println!("cargo:rustc-env=TAP_BUILD_DIRTY={dirty}");
}

/// `git` in `dir`, its trimmed stdout when it succeeds.
fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git").arg("-C").arg(dir).args(args).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// The commit and dirty flag of the workspace checkout, and the git files whose change must rerun
/// this script. `None` when the package is not in its own checkout (no `.git`, no git, or an
/// unpacked source tree inside some other repository).
fn from_git(manifest_dir: &Path) -> Option<(String, bool)> {
    let workspace = manifest_dir.parent()?;
    let toplevel = PathBuf::from(git(manifest_dir, &["rev-parse", "--show-toplevel"])?);
    if toplevel.canonicalize().ok()? != workspace.canonicalize().ok()? {
        return None;
    }
    let commit = git(manifest_dir, &["rev-parse", "HEAD"])?;
    // Tracked changes only, like `git describe --dirty`: an untracked scratch file is not in the build.
    let dirty = !git(manifest_dir, &["status", "--porcelain", "--untracked-files=no"])?.is_empty();

    // Any tracked file's edit may flip the dirty flag: watching each (cargo compares mtimes) keeps
    // `tap --version` of a dev build true, at the price of rerunning this script after an edit.
    if let Some(files) = git(workspace, &["ls-files", "-z"]) {
        for file in files.split('\0').filter(|f| !f.is_empty()) {
            let path = workspace.join(file);
            if path.exists() {
                println!("cargo:rerun-if-changed={}", path.display());
            }
        }
    }
    // HEAD moves on checkout, the branch ref on commit, the index on `git add` / `git status`.
    let mut watched = vec!["HEAD".to_owned(), "index".to_owned(), "packed-refs".to_owned()];
    if let Some(branch) = git(manifest_dir, &["symbolic-ref", "-q", "HEAD"]) {
        watched.push(branch);
    }
    for name in watched {
        if let Some(path) = git(manifest_dir, &["rev-parse", "--path-format=absolute", "--git-path", &name]) {
            // A path that does not exist would rerun the script on every build.
            if Path::new(&path).exists() {
                println!("cargo:rerun-if-changed={path}");
            }
        }
    }
    Some((commit, dirty))
}
