//! The `deployer` executable as a user runs it: help, completions, exit codes, and a bad
//! configuration refused before any network call (no AWS endpoint is even configured).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

fn deployer(args: &[&str], dir: &std::path::Path) -> (i32, String, String) {
    let out = Command::new(e2e::bin_path("deployer"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn help_completions_and_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let (code, out, _) = deployer(&["--help"], dir.path());
    assert_eq!(code, 0);
    for cmd in [
        "plan",
        "up",
        "status",
        "destroy",
        "vault-init",
        "completions",
    ] {
        assert!(out.contains(cmd), "{cmd} missing from --help");
    }
    for shell in ["bash", "zsh", "fish"] {
        let (code, out, _) = deployer(&["completions", shell], dir.path());
        assert_eq!(code, 0);
        assert!(
            out.contains("deployer") && out.len() > 1000,
            "{shell} completion"
        );
    }
    assert_eq!(deployer(&["frobnicate"], dir.path()).0, 64);

    // A bad value: exit 1, the key named, before any AWS call (none is configured to answer).
    e2e::deploy::fake_zip(dir.path(), b"\x7fELF");
    let (code, _, err) = deployer(
        &[
            "plan",
            "--lambda-zip",
            "replicator.zip",
            "--set",
            "schedule=cron(0 * * * * *)",
            "--set",
            "vault_inbound_cidr=10.0.0.0/8",
        ],
        dir.path(),
    );
    assert_eq!(code, 1);
    assert!(err.contains("schedule: day-of-month"), "{err}");
    let (code, _, err) = deployer(
        &[
            "up",
            "--lambda-zip",
            "missing.zip",
            "--set",
            "vault_inbound_cidr=10.0.0.0/8",
        ],
        dir.path(),
    );
    assert_eq!(code, 1);
    assert!(
        err.contains("missing.zip") && err.contains("package-lambda.sh"),
        "{err}"
    );
}

#[test]
fn vault_init_arguments_never_show_a_token_or_unseal_key_in_debug_output() {
    use clap::Parser as _;
    let cli = deployer::cli::Cli::try_parse_from([
        "deployer",
        "vault-init",
        "--token",
        "s.PLANTED-admin-9c1",
        "--unseal-key",
        "PLANTED-unseal-1",
        "--unseal-key",
        "PLANTED-unseal-2",
    ])
    .unwrap();
    let shown = format!("{cli:?}");
    assert!(!shown.contains("PLANTED"), "{shown}");
    assert!(shown.contains("<redacted>"), "{shown}");
}
