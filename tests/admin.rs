//! `agora admin key …` as an operator runs it, against a SQLite database: `create` prints a key
//! once, `list` shows tenants and prefixes but never a key, `revoke` by prefix makes the key stop
//! working, and mistakes (an unknown prefix, a bad tenant name) fail with a message that says so.

use std::process::{Command, Stdio};

struct Output {
    success: bool,
    stdout: String,
    stderr: String,
}

/// Runs `agora ARGS` without the caller's `AGORA_*` variables.
fn agora(args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_agora"));
    cmd.args(args).stdin(Stdio::null());
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("AGORA_") {
            cmd.env_remove(name);
        }
    }
    let out = cmd.output().expect("running agora");
    Output {
        success: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[test]
fn keys_are_created_listed_without_secrets_and_revoked() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("hub.db").display());

    let mut keys = Vec::new();
    for tenant in ["team-a", "team-b"] {
        let out = agora(&[
            "admin",
            "key",
            "create",
            "--tenant",
            tenant,
            "--database-url",
            &db,
        ]);
        assert!(out.success, "{}", out.stderr);
        let key = out.stdout.trim().to_string();
        assert!(key.starts_with("agora_") && key.len() == 70, "{key:?}");
        assert!(out.stderr.contains("shown this once"), "{}", out.stderr);
        keys.push(key);
    }

    let out = agora(&["admin", "key", "list", "--database-url", &db]);
    assert!(out.success, "{}", out.stderr);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{}", out.stdout);
    assert!(lines[0].starts_with("TENANT"), "{}", out.stdout);
    for key in &keys {
        assert!(
            !out.stdout.contains(key.as_str()),
            "a key leaked: {}",
            out.stdout
        );
        assert!(out.stdout.contains(&key[..12]), "{}", out.stdout);
    }

    let prefix = &keys[1][..12];
    let out = agora(&["admin", "key", "revoke", prefix, "--database-url", &db]);
    assert!(out.success, "{}", out.stderr);
    assert!(out.stdout.contains("team-b"), "{}", out.stdout);
    let out = agora(&["admin", "key", "list", "--database-url", &db]);
    let revoked = out
        .stdout
        .lines()
        .find(|l| l.contains(prefix))
        .unwrap_or_default()
        .to_string();
    assert!(
        !revoked.trim_end().ends_with('-'),
        "not shown revoked: {revoked}"
    );

    let out = agora(&[
        "admin",
        "key",
        "revoke",
        "agora_ffffff",
        "--database-url",
        &db,
    ]);
    assert!(!out.success);
    assert!(
        out.stderr.contains("no API key has the prefix"),
        "{}",
        out.stderr
    );

    let out = agora(&[
        "admin",
        "key",
        "create",
        "--tenant",
        "Team A",
        "--database-url",
        &db,
    ]);
    assert!(!out.success);
    assert!(out.stderr.contains("invalid tenant name"), "{}", out.stderr);
}
