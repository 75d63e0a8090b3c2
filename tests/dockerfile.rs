//! The image (`Dockerfile`, `.dockerignore`) against what the charts and the workspace expect of it.
//! No container runtime runs here, so these read the files: they catch the drift that would only
//! show in a cluster (a pod that cannot find its binary, a hub that may not run as its user, an image
//! that no longer builds because a new workspace member is not in the build context).

use std::{fs, path::Path};

use serde_yaml::Value;

fn read(path: &str) -> String {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    fs::read_to_string(&full).unwrap_or_else(|e| panic!("reading {}: {e}", full.display()))
}

/// The Dockerfile's instructions as (keyword, arguments), continuation lines joined and comments
/// dropped.
fn instructions() -> Vec<(String, String)> {
    let mut joined = Vec::new();
    let mut current = String::new();
    for line in read("Dockerfile").lines() {
        let line = line.trim();
        if line.starts_with('#') || (line.is_empty() && current.is_empty()) {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(part) => {
                current.push_str(part);
                current.push(' ');
            }
            None => {
                current.push_str(line);
                joined.push(std::mem::take(&mut current));
            }
        }
    }
    joined
        .into_iter()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let (keyword, rest) = l.trim().split_once(char::is_whitespace).unwrap_or((&l, ""));
            (keyword.to_uppercase(), rest.trim().to_string())
        })
        .collect()
}

/// The instructions of the last stage (the image that ships).
fn final_stage() -> Vec<(String, String)> {
    let all = instructions();
    let start = all
        .iter()
        .rposition(|(k, _)| k == "FROM")
        .expect("a FROM in the Dockerfile");
    all[start..].to_vec()
}

/// The single value of `keyword` in the final stage.
fn final_value(keyword: &str) -> String {
    let values: Vec<String> = final_stage()
        .into_iter()
        .filter(|(k, _)| k == keyword)
        .map(|(_, v)| v)
        .collect();
    assert_eq!(
        values.len(),
        1,
        "the final stage should have one {keyword}: {values:?}"
    );
    values[0].clone()
}

/// Where the final stage puts the binary built in the `build` stage.
fn binary_path() -> String {
    let copy = final_value("COPY");
    assert!(
        copy.starts_with("--from=build "),
        "the final stage copies the binary from the build stage: COPY {copy}"
    );
    copy.split_whitespace()
        .last()
        .expect("COPY has a destination")
        .to_string()
}

/// The workspace's `key = "value"` under `[section]` of the root Cargo.toml.
fn cargo_value(section: &str, key: &str) -> String {
    let manifest = read("Cargo.toml");
    let body = manifest
        .split(&format!("[{section}]\n"))
        .nth(1)
        .unwrap_or_else(|| panic!("no [{section}] in Cargo.toml"));
    body.lines()
        .take_while(|l| !l.starts_with('['))
        .find_map(|l| {
            let (k, v) = l.split_once('=')?;
            (k.trim() == key).then(|| v.trim().trim_matches('"').to_string())
        })
        .unwrap_or_else(|| panic!("no {key} under [{section}] in Cargo.toml"))
}

/// The workspace members listed in the root Cargo.toml.
fn workspace_members() -> Vec<String> {
    let manifest = read("Cargo.toml");
    let list = manifest
        .split("members = [")
        .nth(1)
        .and_then(|rest| rest.split(']').next())
        .expect("a members list in Cargo.toml");
    list.split(',')
        .map(|m| m.trim().trim_matches('"').to_string())
        .filter(|m| !m.is_empty())
        .collect()
}

fn chart_values(chart: &str) -> Value {
    serde_yaml::from_str(&read(&format!("charts/{chart}/values.yaml")))
        .unwrap_or_else(|e| panic!("charts/{chart}/values.yaml: {e}"))
}

#[test]
fn the_builder_is_the_workspace_rust_on_the_runtime_debian() {
    let froms: Vec<String> = instructions()
        .into_iter()
        .filter(|(k, _)| k == "FROM")
        .map(|(_, v)| v)
        .collect();
    assert_eq!(
        froms.len(),
        2,
        "a build stage and a runtime stage: {froms:?}"
    );
    let builder = froms[0]
        .strip_suffix(" AS build")
        .and_then(|image| image.strip_prefix("rust:"))
        .unwrap_or_else(|| panic!("the first stage is `rust:… AS build`: {}", froms[0]));
    let (version, codename) = builder
        .split_once('-')
        .unwrap_or_else(|| panic!("a Debian-based Rust tag such as 1.94-bookworm: {builder}"));
    assert_eq!(
        version,
        cargo_value("workspace.package", "rust-version"),
        "the image builds with the workspace's rust-version, so the declared minimum is what ships"
    );
    let debian = match codename {
        "bookworm" => "12",
        "trixie" => "13",
        other => panic!("unknown Debian codename in the builder tag: {other}"),
    };
    let runtime = &froms[1];
    assert!(
        runtime.starts_with(&format!("gcr.io/distroless/cc-debian{debian}:")),
        "the runtime must be the builder's Debian release ({codename} = {debian}), or the binary \
         may need a newer glibc than the runtime has: {runtime}"
    );
}

#[test]
fn both_charts_start_the_binary_the_image_has() {
    let binary = binary_path();
    let (dir, name) = binary.rsplit_once('/').expect("an absolute binary path");
    let entrypoint: Vec<String> =
        serde_json::from_str(&final_value("ENTRYPOINT")).expect("ENTRYPOINT in exec (JSON) form");
    assert_eq!(
        entrypoint.first(),
        Some(&binary),
        "ENTRYPOINT runs the binary"
    );
    let path = final_value("ENV");
    let path = path
        .strip_prefix("PATH=")
        .unwrap_or_else(|| panic!("the final stage sets PATH: ENV {path}"));
    for template in [
        "charts/agora/templates/deployment.yaml",
        "charts/agora-node/templates/daemonset.yaml",
    ] {
        let command = read(template)
            .lines()
            .find_map(|l| l.trim().strip_prefix("command:").map(str::trim))
            .map(|c| {
                serde_json::from_str::<Vec<String>>(c)
                    .unwrap_or_else(|e| panic!("{template}: command {c} ({e})"))
            });
        match command.as_deref() {
            // No command: the image's ENTRYPOINT runs, checked above.
            None => {}
            Some([program, ..]) if program.starts_with('/') => {
                assert_eq!(program, &binary, "{template} runs a path the image lacks");
            }
            Some([program, ..]) => {
                assert_eq!(program, name, "{template} runs a program the image lacks");
                assert!(
                    path.split(':').any(|d| d == dir),
                    "{template} runs `{program}` by name, but {dir} is not on the image's PATH {path}"
                );
            }
            Some([]) => panic!("{template}: an empty command"),
        }
    }
}

#[test]
fn the_image_user_is_the_hub_charts_and_the_agent_sets_its_own() {
    let user = final_value("USER");
    let (uid, gid) = user
        .split_once(':')
        .map(|(u, g)| (u.parse::<i64>(), g.parse::<i64>()))
        .unwrap_or_else(|| panic!("USER as numeric uid:gid (runAsNonRoot needs numbers): {user}"));
    let (uid, gid) = (uid.expect("a numeric uid"), gid.expect("a numeric gid"));
    assert_ne!(uid, 0, "the image runs as a user, not root");

    let hub = chart_values("agora");
    for context in ["podSecurityContext", "securityContext"] {
        assert_eq!(
            hub[context]["runAsUser"].as_i64(),
            Some(uid),
            "charts/agora {context}.runAsUser must be the image's USER"
        );
        assert_eq!(hub[context]["runAsNonRoot"].as_bool(), Some(true));
    }
    assert_eq!(hub["podSecurityContext"]["runAsGroup"].as_i64(), Some(gid));

    // The agent runs as root without capabilities (its hostPath state directory is root's), so
    // its chart must say so itself rather than inherit the image's user.
    let node = chart_values("agora-node");
    assert!(
        node["podSecurityContext"]["runAsUser"].as_i64().is_some(),
        "charts/agora-node sets podSecurityContext.runAsUser explicitly"
    );
}

#[test]
fn the_build_context_holds_every_workspace_member_and_nothing_local() {
    let ignore = read(".dockerignore");
    let patterns: Vec<&str> = ignore
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    assert_eq!(
        patterns.first(),
        Some(&"*"),
        ".dockerignore is an allowlist: it starts by excluding everything"
    );
    let admitted: Vec<&str> = patterns
        .iter()
        .filter_map(|p| p.strip_prefix('!'))
        .collect();
    let mut needed = vec!["Cargo.toml".to_string(), "Cargo.lock".to_string()];
    // The root package's binary (src/main.rs) and every member's manifest and sources.
    needed.push("src".to_string());
    for member in workspace_members() {
        needed.push(member.split('/').next().expect("a member path").to_string());
    }
    for path in needed {
        assert!(
            admitted.contains(&path.as_str()),
            "{path} is read by `cargo build --locked --bin agora` but .dockerignore leaves it out \
             of the build context"
        );
    }
    for local in ["target", ".agora", "agora-node.key", "agora-agent-state"] {
        assert!(
            !admitted.contains(&local),
            "{local} must stay out of the image"
        );
    }
    assert!(
        patterns.contains(&"**/target"),
        "build outputs inside admitted directories stay out too"
    );
}
