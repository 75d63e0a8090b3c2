//! Several hosts on one machine, for the multi-host tests: each host is a Linux network namespace
//! with its own interface (`eth0`) on a shared bridge, and its own link limits.
//!
//! ```text
//!   this test process (root namespace): 198.18.N.1 on bridge ae2e-PID-br
//!        │ (the delay proxies listen here; see crate::delay_proxy)
//!   ┌────┴─────────────┬─────────────────────┬── …
//!   ae2e-PID-0         ae2e-PID-1            ae2e-PID-2      veth ends in the root namespace
//!   │                  │ tbf (downlink)      │ tbf (downlink)
//!   eth0 198.18.N.10   eth0 198.18.N.11      eth0 198.18.N.12
//!   agora-e2e-PID-hub  agora-e2e-PID-a       agora-e2e-PID-b  namespaces
//!                      tbf (uplink)          tbf (uplink)
//! ```
//!
//! A host's bandwidth limit is a `tc tbf` qdisc on both ends of its veth pair: on `eth0` inside the
//! namespace it holds what the host sends (its uplink), on the bridge's end what it receives (its
//! downlink). Latency is not here: this project's CI kernels have no `netem`.
//!
//! Names carry the creating process's id (`agora-e2e-PID-…` for namespaces, `ae2e-PID-…` for
//! interfaces, within the kernel's 15 characters), so concurrent runs do not collide; the subnet
//! is a free /24 of 198.18.0.0/15 (RFC 2544's range for benchmarking, never routed). A [`Fabric`]
//! deletes everything it made when dropped, even while a test unwinds from a panic: it kills every
//! process left in its namespaces, deletes the namespaces (and with them their veth pairs and
//! qdiscs) and the bridge. A run killed outright (SIGKILL, a CI timeout) cannot clean up, so
//! [`Fabric::create`] first sweeps what such runs left: anything under these prefixes whose process
//! is no longer running.
//!
//! Needs root (`ip netns`, `tc`); [`available_or_skip`] says whether a test can run, and fails it
//! instead of skipping when `AGORA_REQUIRE_NETNS=1` (set by `scripts/test`, so CI cannot pass by
//! skipping).

use std::{
    env,
    net::Ipv4Addr,
    path::Path,
    process::{Command, Stdio},
    sync::atomic::{AtomicBool, Ordering},
};

/// Every namespace a fabric makes starts with this, then the process id.
pub const NETNS_PREFIX: &str = "agora-e2e-";

/// Every interface a fabric makes in the root namespace starts with this, then the process id.
pub const LINK_PREFIX: &str = "ae2e-";

/// Set to `1` to fail, not skip, where network namespaces cannot be used.
pub const REQUIRE_ENV: &str = "AGORA_REQUIRE_NETNS";

/// Only one fabric per process at a time: the names are per process.
static FABRIC_ALIVE: AtomicBool = AtomicBool::new(false);

/// Why this machine cannot run namespace tests (not root, no `ip` or `tc`, namespaces refused), or
/// `None`.
pub fn unavailable() -> Option<String> {
    let uid = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    match uid {
        Ok(uid) if uid == "0" => {}
        Ok(uid) => {
            return Some(format!(
                "network namespaces and tc need root (`id -u` is {uid})"
            ));
        }
        Err(e) => return Some(format!("`id -u` could not run: {e}")),
    }
    for tool in ["ip", "tc"] {
        let found = Command::new(tool)
            .arg("-V")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            return Some(format!("`{tool}` (iproute2) is not installed"));
        }
    }
    // Root without the capability (an unprivileged container) cannot make namespaces.
    let probe = format!("{NETNS_PREFIX}{}-probe", std::process::id());
    if let Err(e) = run(&["ip", "netns", "add", &probe]) {
        return Some(format!("cannot make a network namespace: {e}"));
    }
    let _ = run(&["ip", "netns", "del", &probe]);
    None
}

/// Whether a namespace test can run here: `true` if so; otherwise prints why `test` is skipped and
/// returns `false`, or panics when `AGORA_REQUIRE_NETNS=1`.
pub fn available_or_skip(test: &str) -> bool {
    let Some(why) = unavailable() else {
        return true;
    };
    assert!(
        env::var(REQUIRE_ENV).as_deref() != Ok("1"),
        "{REQUIRE_ENV}=1 but {test} cannot run: {why}"
    );
    eprintln!("skipped {test}: {why}; CI runs it as root");
    false
}

/// Runs a command to completion: its stdout, or an error naming the command and its stderr.
fn run(args: &[&str]) -> Result<String, String> {
    let output = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{}: {e}", args.join(" ")))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(format!(
            "{}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// One host of a fabric.
#[derive(Clone, Debug)]
pub struct Host {
    /// The name given to [`Fabric::add_host`].
    pub name: String,
    /// The network namespace (`agora-e2e-PID-NAME`).
    pub namespace: String,
    /// The address of its `eth0` on the bridge.
    pub address: Ipv4Addr,
    /// The rate `tc tbf` holds each direction of its link to, Mbit/s; `None`: unlimited.
    pub limit_mbit: Option<u32>,
}

/// A bridge and the hosts on it; see the module docs. Dropping it deletes them all.
pub struct Fabric {
    pid: u32,
    /// The first three octets of the /24 on the bridge.
    prefix: [u8; 3],
    /// The bridge, once made.
    bridge: Option<String>,
    /// Namespaces made and not yet removed.
    namespaces: Vec<String>,
    /// Hosts added so far (removed ones too): numbers their addresses and links.
    added: u8,
}

impl Fabric {
    /// Sweeps what earlier runs left (see [`sweep_leftovers`]), then makes the bridge on a free
    /// /24 with its first address in this (the root) namespace.
    pub fn create() -> Result<Fabric, String> {
        if FABRIC_ALIVE.swap(true, Ordering::SeqCst) {
            return Err("a Fabric already exists in this process (names are per process)".into());
        }
        // From here on, dropping `fabric` clears FABRIC_ALIVE and deletes what was made.
        let mut fabric = Fabric {
            pid: std::process::id(),
            prefix: [0; 3],
            bridge: None,
            namespaces: Vec::new(),
            added: 0,
        };
        for removed in sweep_leftovers() {
            eprintln!("removed a leftover of an earlier run: {removed}");
        }
        fabric.prefix = free_subnet(fabric.pid)?;
        let bridge = format!("{LINK_PREFIX}{}-br", fabric.pid);
        run(&["ip", "link", "add", &bridge, "type", "bridge"])?;
        fabric.bridge = Some(bridge.clone());
        let cidr = format!("{}/24", fabric.gateway());
        run(&["ip", "addr", "add", &cidr, "dev", &bridge])?;
        run(&["ip", "link", "set", &bridge, "up"])?;
        Ok(fabric)
    }

    /// The bridge's address in the root namespace: where this process (its proxies) is reached.
    pub fn gateway(&self) -> Ipv4Addr {
        let [a, b, c] = self.prefix;
        Ipv4Addr::new(a, b, c, 1)
    }

    /// Adds a host named `name` (letters, digits and `-`) in a namespace of its own, on the
    /// bridge; with `limit_mbit`, both directions of its link are held to that rate by `tc tbf`.
    pub fn add_host(&mut self, name: &str, limit_mbit: Option<u32>) -> Result<Host, String> {
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return Err(format!("host name {name:?}: letters, digits and '-' only"));
        }
        // Two digits keep the longest link name (`ae2e-4194304-99`) within 15 characters.
        if self.added >= 100 {
            return Err("at most 100 hosts per fabric".into());
        }
        let index = self.added;
        self.added += 1;
        let namespace = format!("{NETNS_PREFIX}{}-{name}", self.pid);
        run(&["ip", "netns", "add", &namespace])?;
        self.namespaces.push(namespace.clone());
        let bridge = self.bridge.clone().ok_or("the fabric has no bridge")?;
        // Created with its peer already inside the namespace: no name clash in the root one.
        let link = format!("{LINK_PREFIX}{}-{index}", self.pid);
        run(&[
            "ip", "link", "add", &link, "type", "veth", "peer", "name", "eth0", "netns", &namespace,
        ])?;
        run(&["ip", "link", "set", &link, "master", &bridge])?;
        run(&["ip", "link", "set", &link, "up"])?;
        let [a, b, c] = self.prefix;
        let address = Ipv4Addr::new(a, b, c, 10 + index);
        let cidr = format!("{address}/24");
        run(&["ip", "-n", &namespace, "addr", "add", &cidr, "dev", "eth0"])?;
        run(&["ip", "-n", &namespace, "link", "set", "lo", "up"])?;
        run(&["ip", "-n", &namespace, "link", "set", "eth0", "up"])?;
        if let Some(mbit) = limit_mbit {
            let rate = format!("{mbit}mbit");
            // A bucket of 2 ms at the rate (tbf cannot reach high rates with less: timer ticks),
            // at least a few packets; a queue of at most 10 ms beyond it, so that a saturated link
            // (a bandwidth probe) delays other traffic (RTT probes) little, as a short-queued
            // router would.
            let burst = format!("{}kb", (mbit as u64 * 2 / 8).max(8));
            let tbf = [
                "root", "tbf", "rate", &rate, "burst", &burst, "latency", "10ms",
            ];
            let mut uplink = vec!["ip", "netns", "exec", &namespace, "tc", "qdisc", "add"];
            uplink.extend(["dev", "eth0"]);
            uplink.extend(tbf);
            run(&uplink)?;
            let mut downlink = vec!["tc", "qdisc", "add", "dev", &link];
            downlink.extend(tbf);
            run(&downlink)?;
        }
        Ok(Host {
            name: name.to_string(),
            namespace,
            address,
            limit_mbit,
        })
    }

    /// `cmd` to run inside `host`'s namespace (`ip netns exec`, which then execs the program:
    /// the child's pid is the program's).
    pub fn command(&self, host: &Host, cmd: Command) -> Command {
        let mut wrapped = Command::new("ip");
        wrapped
            .args(["netns", "exec", &host.namespace])
            .arg(cmd.get_program())
            .args(cmd.get_args())
            .current_dir(cmd.get_current_dir().unwrap_or(Path::new(".")))
            .stdin(Stdio::null());
        for (name, value) in cmd.get_envs() {
            match value {
                Some(value) => wrapped.env(name, value),
                None => wrapped.env_remove(name),
            };
        }
        wrapped
    }

    /// Takes `host` off the network as a machine that dies would go: every process in its
    /// namespace killed with SIGKILL, the namespace deleted (and with it its link).
    pub fn remove_host(&mut self, host: &Host) -> Result<(), String> {
        kill_all_in(&host.namespace);
        run(&["ip", "netns", "del", &host.namespace])?;
        self.namespaces.retain(|n| *n != host.namespace);
        Ok(())
    }
}

impl Drop for Fabric {
    fn drop(&mut self) {
        for namespace in self.namespaces.drain(..) {
            kill_all_in(&namespace);
            // Deleting a namespace deletes the veth end in it, the peer on the bridge and both
            // qdiscs.
            if let Err(e) = run(&["ip", "netns", "del", &namespace]) {
                eprintln!("cleaning up: {e}");
            }
        }
        if let Some(bridge) = self.bridge.take()
            && let Err(e) = run(&["ip", "link", "del", &bridge])
        {
            eprintln!("cleaning up: {e}");
        }
        FABRIC_ALIVE.store(false, Ordering::SeqCst);
    }
}

/// SIGKILLs every process in `namespace` (`ip netns pids`). A process this test spawned stays a
/// zombie until its handle reaps it; it holds no namespace then.
fn kill_all_in(namespace: &str) {
    let Ok(pids) = run(&["ip", "netns", "pids", namespace]) else {
        return;
    };
    for pid in pids.split_whitespace() {
        let _ = run(&["kill", "-KILL", pid]);
    }
}

/// A /24 of 198.18.0.0/15 no interface of this namespace has an address in, starting from one
/// picked by `pid` (so concurrent runs start apart).
fn free_subnet(pid: u32) -> Result<[u8; 3], String> {
    let addresses = run(&["ip", "-o", "-4", "addr", "show"])?;
    for step in 0..512 {
        let n = (pid + step) % 512;
        let prefix = [198, 18 + (n / 256) as u8, (n % 256) as u8];
        let taken = format!(" {}.{}.{}.", prefix[0], prefix[1], prefix[2]);
        if !addresses.contains(&taken) {
            return Ok(prefix);
        }
    }
    Err("no free /24 in 198.18.0.0/15".into())
}

/// The process id in a name made by a fabric (`PREFIX` + pid + `-…`).
fn owner(name: &str, prefix: &str) -> Option<u32> {
    name.strip_prefix(prefix)?.split('-').next()?.parse().ok()
}

/// Whether the process `pid` (which made a fabric) may still be using it: any live process but
/// this one, which has no fabric yet when it sweeps. A leftover whose id a new, unrelated process
/// got is left alone until that process ends: sweeping a live run would be worse.
fn still_running(pid: u32) -> bool {
    pid != std::process::id() && Path::new(&format!("/proc/{pid}")).exists()
}

/// Deletes the namespaces (after killing what runs in them) and root-namespace interfaces that
/// fabrics of processes that are no longer running left behind, and says what it deleted.
pub fn sweep_leftovers() -> Vec<String> {
    let mut removed = Vec::new();
    let namespaces = run(&["ip", "netns", "list"]).unwrap_or_default();
    for line in namespaces.lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        if owner(name, NETNS_PREFIX).is_some_and(|pid| !still_running(pid)) {
            kill_all_in(name);
            match run(&["ip", "netns", "del", name]) {
                Ok(_) => removed.push(format!("namespace {name}")),
                Err(e) => eprintln!("sweeping: {e}"),
            }
        }
    }
    // Veth ends went with their namespaces; bridges (and any veth end left) are deleted here.
    let links = run(&["ip", "-o", "link", "show"]).unwrap_or_default();
    for line in links.lines() {
        // `12: ae2e-4242-br: <…>` or `13: ae2e-4242-1@if2: <…>`.
        let Some(name) = line.split(": ").nth(1).and_then(|n| n.split('@').next()) else {
            continue;
        };
        if owner(name, LINK_PREFIX).is_some_and(|pid| !still_running(pid)) {
            match run(&["ip", "link", "del", name]) {
                Ok(_) => removed.push(format!("interface {name}")),
                Err(e) => eprintln!("sweeping: {e}"),
            }
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_made_by_a_fabric_give_back_their_process_id() {
        assert_eq!(owner("agora-e2e-4242-hub", NETNS_PREFIX), Some(4242));
        assert_eq!(owner("ae2e-4194304-br", LINK_PREFIX), Some(4_194_304));
        assert_eq!(owner("ae2e-17-3", LINK_PREFIX), Some(17));
        // Other tests' names and non-numbers are not ours to sweep.
        assert_eq!(owner("agora-bw-hub-4242", NETNS_PREFIX), None);
        assert_eq!(owner("agora-e2e-x-hub", NETNS_PREFIX), None);
        // The longest link name fits the kernel's 15 characters.
        assert!(format!("{LINK_PREFIX}4194304-br").len() <= 15);
    }

    #[test]
    fn this_process_is_never_a_concurrent_run() {
        assert!(!still_running(std::process::id()));
    }
}
