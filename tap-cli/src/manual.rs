//! What shells and `man` know about tap, generated from the clap command: shell completions
//! (`tap completions SHELL`) and man pages (`clap_mangen`: `tap.1` and one page per command,
//! `tap-deploy.1`, …, written by `tap manpages DIR`). `cargo xtask dist` packs both
//! into the release archive.

use std::path::{Path, PathBuf};

use clap::CommandFactory;

use crate::cli::Cli;

/// The completion script for `shell`.
pub fn completion(shell: clap_complete::Shell) -> Vec<u8> {
    let mut command = Cli::command();
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut command, "tap", &mut script);
    script
}

/// Writes `tap.1` and one page per visible command into `dir` (created when missing); the files
/// written, `tap.1` first, then each command's page after its parent's.
pub fn write_all(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut command = Cli::command().disable_help_subcommand(true);
    command.build();
    let mut written = Vec::new();
    write_page(command, dir, &mut written)?;
    Ok(written)
}

fn write_page(command: clap::Command, dir: &Path, written: &mut Vec<PathBuf>) -> std::io::Result<()> {
    let subcommands: Vec<clap::Command> = command.get_subcommands().filter(|s| !s.is_hide_set()).cloned().collect();
    // Every page names the tap version as its source (a subcommand has no version of its own).
    let man = clap_mangen::Man::new(command).source(format!("tap {}", env!("CARGO_PKG_VERSION"))).manual("tap manual");
    let path = dir.join(man.get_filename());
    let mut page = Vec::new();
    man.render(&mut page)?;
    std::fs::write(&path, page)?;
    written.push(path);
    for subcommand in subcommands {
        write_page(subcommand, dir, written)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_page_for_tap_and_each_visible_command_in_roff() {
        let dir = std::env::temp_dir().join(format!("tap-manpages-{}", std::process::id()));
        let written = write_all(&dir).unwrap();
        let names: Vec<String> =
            written.iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
        assert_eq!(names[0], "tap.1");
        let visible: Vec<String> = Cli::command()
            .get_subcommands()
            .filter(|s| !s.is_hide_set())
            .map(|s| format!("tap-{}.1", s.get_name()))
            .collect();
        assert_eq!(names[1..], visible[..]);
        assert!(names.contains(&"tap-deploy.1".to_owned()) && names.contains(&"tap-completions.1".to_owned()));
        assert!(!names.contains(&"tap-help.1".to_owned()), "{names:?}");

        let tap = std::fs::read_to_string(dir.join("tap.1")).unwrap();
        let source = format!("\"tap {}\"", env!("CARGO_PKG_VERSION"));
        assert!(tap.contains(".TH tap 1") && tap.contains(&source), "{}", &tap[..200.min(tap.len())]);
        assert!(tap.contains("deploy") && tap.contains("\\-\\-output"), "the options and commands are listed");
        let deploy = std::fs::read_to_string(dir.join("tap-deploy.1")).unwrap();
        assert!(deploy.contains(".TH tap-deploy 1") && deploy.contains(&source), "{deploy}");
        assert!(deploy.contains("\\-\\-no\\-wait"), "{deploy}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn completions_for_bash_zsh_and_fish_know_the_commands_and_flags() {
        use clap_complete::Shell;
        for (shell, marker) in
            [(Shell::Bash, "complete -F _tap"), (Shell::Zsh, "#compdef tap"), (Shell::Fish, "complete -c tap")]
        {
            let script = String::from_utf8(completion(shell)).unwrap();
            assert!(script.contains(marker), "{shell}: {marker} missing");
            for word in ["deploy", "plan", "rollback", "output"] {
                assert!(script.contains(word), "{shell}: {word} missing");
            }
        }
    }
}
