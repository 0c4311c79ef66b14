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
