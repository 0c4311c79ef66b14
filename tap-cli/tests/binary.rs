//! The built binary answers `--version`. (This integration test also makes `cargo test --workspace`
//! build the `tap` binary before the end-to-end tests in `tests/` run it.)

#[test]
fn version_names_the_binary() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tap"))
        .arg("--version")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("tap "));
}

#[test]
fn version_names_commit_and_target_as_text_and_json() {
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_tap"))
            .args(args)
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let text = run(&["--version"]);
    assert!(text.starts_with(&format!("tap {} (commit ", env!("CARGO_PKG_VERSION"))), "{text}");
    let json: serde_json::Value = serde_json::from_str(&run(&["--output", "json", "--version"])).unwrap();
    assert_eq!(json["version"], env!("CARGO_PKG_VERSION"));
    assert!(json["target"].as_str().is_some_and(|t| text.contains(t)), "{json} vs {text}");
    // Built from this git checkout: the commit is known, and the text shows its first 12 digits.
    let commit = json["commit"].as_str().expect("the tests run in a git checkout");
    assert!(text.contains(&commit[..12]), "{text}");
    assert!(json["dirty"].is_boolean());
}
