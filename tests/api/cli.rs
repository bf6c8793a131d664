//! The `nimbus` command line, run as a real process.

use std::process::Command;
use std::time::{Duration, Instant};

fn nimbus() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_nimbus"));
    for (name, _) in std::env::vars().filter(|(k, _)| k.starts_with("NIMBUS_")) {
        command.env_remove(name);
    }
    command
}

#[test]
fn an_unreachable_database_fails_fast_with_a_clear_message() {
    let started = Instant::now();
    let output = nimbus()
        .args([
            "migrate",
            "--database-url",
            "mysql://nimbus:hunter2@127.0.0.1:1/nimbus",
        ])
        .output()
        .expect("nimbus runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("cannot connect to the database at mysql://nimbus:***@127.0.0.1:1/nimbus"),
        "{stderr}"
    );
    assert!(!stderr.contains("hunter2"), "the password leaked: {stderr}");
    assert!(started.elapsed() < Duration::from_secs(30), "it hung");
}

#[test]
fn key_create_prints_a_working_secret_and_schema_print_prints_the_core_schema() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_str().unwrap();
    let output = nimbus()
        .args([
            "key",
            "create",
            "--project",
            "default",
            "--scopes",
            "keys.read,users.read",
            "--data-dir",
            data_dir,
        ])
        .output()
        .expect("nimbus runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let secret = String::from_utf8(output.stdout).unwrap();
    assert!(secret.trim().starts_with("nk_"), "{secret}");

    let refused = nimbus()
        .args([
            "key",
            "create",
            "--scopes",
            "everything",
            "--data-dir",
            data_dir,
        ])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("INVALID_SCOPE"));

    let schema = nimbus().args(["schema", "print"]).output().unwrap();
    assert!(schema.status.success());
    let stored =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/schema/core.graphql"))
            .unwrap();
    assert_eq!(String::from_utf8(schema.stdout).unwrap(), stored);
}
