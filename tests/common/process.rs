//! A background `agora` process for the integration tests that need one running (`tests/cli.rs`,
//! `tests/alert_rules.rs`), included by path so those tests do not also take in the Helm helpers.

use std::process::{Command, Stdio};

/// A background `agora` process, killed when the test ends however it ends.
pub struct Background(pub std::process::Child);

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `agora ARGS` in the repository, its output discarded and the caller's `AGORA_*`
/// variables removed, so only the arguments configure it.
pub fn background(args: &[&str]) -> Background {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_agora"));
    cmd.args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("AGORA_") {
            cmd.env_remove(name);
        }
    }
    Background(cmd.spawn().expect("spawning agora"))
}

/// A loopback port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}
