//! `agora bench agent`: the resource cost of the node agent. A real hub on loopback (SQLite) and a
//! real `agora agent` process with 8 simulated GPUs sampled every second and `/metrics` on; the
//! agent's resident memory and CPU time are read from `/proc/PID/status` and `/proc/PID/stat` after a
//! warm-up, over the measured seconds. Targets (issue 5): ≤ 25 MB resident, ≤ 1 % of one core.

use std::{
    io::{Read, Write},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::Context;

/// Resident memory target, MB.
pub const RSS_TARGET_MB: f64 = 25.0;
/// CPU target, percent of one core.
pub const CPU_TARGET_PERCENT: f64 = 1.0;
/// Simulated GPUs of the measured agent.
const GPUS: u32 = 8;
/// Time for the agent to register and settle before measuring.
const WARM_UP: Duration = Duration::from_secs(3);
/// Kernel clock ticks per second of `/proc/PID/stat` times (`USER_HZ`, 100 on every Linux ABI
/// Agora builds for; reading `sysconf` would need libc for one constant).
const CLOCK_TICKS_PER_S: f64 = 100.0;

#[derive(clap::Args, Debug)]
pub struct AgentBenchArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Seconds measured after a 3 s warm-up (CPU time comes in 10 ms ticks: keep it ≥ 30 s for a
    /// meaningful figure).
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub seconds: u64,
}

/// What was measured (`--json` prints each field under its name).
#[derive(Debug)]
pub struct Report {
    /// Resident memory at the end of the run, MB (VmRSS).
    pub rss_mb: f64,
    /// Peak resident memory, MB (VmHWM).
    pub peak_rss_mb: f64,
    /// CPU time over the measured seconds, percent of one core.
    pub cpu_percent: f64,
    /// Seconds measured.
    pub seconds: u64,
    /// Simulated GPUs of the agent.
    pub gpus: u32,
    /// The agent's telemetry interval.
    pub telemetry_interval_s: u64,
    /// Series in the agent's `/metrics` at the end (scraped over HTTP).
    pub metrics_series: usize,
    /// `agora_agent_gpus_healthy` of the final scrape.
    pub gpus_healthy: u32,
}

pub async fn run(args: AgentBenchArgs) -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("agora-bench-agent-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let result = measure(&args, &dir).await;
    let _ = std::fs::remove_dir_all(&dir);
    let report = result?;
    if args.json {
        let json = serde_json::json!({
            "rss_mb": report.rss_mb,
            "peak_rss_mb": report.peak_rss_mb,
            "cpu_percent": report.cpu_percent,
            "rss_target_mb": RSS_TARGET_MB,
            "cpu_target_percent": CPU_TARGET_PERCENT,
            "seconds": report.seconds,
            "gpus": report.gpus,
            "telemetry_interval_s": report.telemetry_interval_s,
            "metrics_series": report.metrics_series,
            "gpus_healthy": report.gpus_healthy,
        });
        println!("{}", serde_json::to_string_pretty(&json)?);
        return Ok(());
    }
    println!(
        "Agent with {} simulated GPUs, telemetry every {} s, /metrics on, {} s measured",
        report.gpus, report.telemetry_interval_s, report.seconds
    );
    println!("{:<24} {:>10}  target", "", "measured");
    println!(
        "{:<24} {:>10.1}  ≤ {RSS_TARGET_MB}",
        "resident memory MB", report.rss_mb
    );
    println!("{:<24} {:>10.1}", "peak resident MB", report.peak_rss_mb);
    println!(
        "{:<24} {:>10.2}  ≤ {CPU_TARGET_PERCENT}",
        "CPU % of one core", report.cpu_percent
    );
    println!(
        "{} metric series; {} GPUs healthy",
        report.metrics_series, report.gpus_healthy
    );
    Ok(())
}

async fn measure(args: &AgentBenchArgs, dir: &std::path::Path) -> anyhow::Result<Report> {
    let hub = api::RunningHub::start(api::HubConfig {
        listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        database_url: format!("sqlite://{}", dir.join("hub.db").display()),
        settings: api::HubSettings::default(),
        api_key_file: None,
        tls: None,
        allow_plain_http: false,
        chain: None,
    })
    .await?;
    let measured = measure_agent(args, dir, &hub.url()).await;
    let stopped = hub.shutdown().await;
    let report = measured?;
    stopped.context("shutting the hub down")?;
    Ok(report)
}

/// Kills the agent when dropped, whatever happened to the measurement.
struct AgentProcess(Child);

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn measure_agent(
    args: &AgentBenchArgs,
    dir: &std::path::Path,
    hub_url: &str,
) -> anyhow::Result<Report> {
    let metrics_address = free_loopback_address()?;
    let key: PathBuf = dir.join("node.key");
    let telemetry_interval_s = 1;
    let child = Command::new(std::env::current_exe()?)
        .args([
            "--log", "warn", "agent", "--hub", hub_url, "--region", "bench",
        ])
        .args(["--name", "gn-bench-agent", "--key"])
        .arg(&key)
        .args(["--simulate-gpus", &format!("{GPUS}xH100-80GB")])
        .args([
            "--telemetry-interval-seconds",
            &telemetry_interval_s.to_string(),
        ])
        .args(["--metrics-listen", &metrics_address.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting `agora agent`")?;
    let mut agent = AgentProcess(child);
    let pid = agent.0.id();
    tokio::time::sleep(WARM_UP).await;
    if let Some(status) = agent.0.try_wait()? {
        anyhow::bail!("the agent exited during the warm-up: {status}");
    }
    let before = cpu_ticks(pid)?;
    let started = std::time::Instant::now();
    tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    let after = cpu_ticks(pid)?;
    let elapsed = started.elapsed().as_secs_f64();
    let (rss_kib, peak_kib) = memory_kib(pid)?;
    let metrics = tokio::task::spawn_blocking(move || scrape(metrics_address)).await??;
    let series = metrics
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .count();
    let gpus_healthy = metrics
        .lines()
        .find_map(|l| l.strip_prefix("agora_agent_gpus_healthy "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    drop(agent);
    Ok(Report {
        rss_mb: rss_kib as f64 / 1024.0,
        peak_rss_mb: peak_kib as f64 / 1024.0,
        cpu_percent: (after - before) as f64 / CLOCK_TICKS_PER_S / elapsed * 100.0,
        seconds: args.seconds,
        gpus: GPUS,
        telemetry_interval_s,
        metrics_series: series,
        gpus_healthy,
    })
}

/// A loopback address nothing listens on now (the agent binds it a moment later).
fn free_loopback_address() -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(listener.local_addr()?)
}

/// User plus system CPU time of the process, in clock ticks (`/proc/PID/stat` fields 14 and 15).
fn cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat (Linux only)"))?;
    // The command name (field 2) is in parentheses and may hold spaces: count from after it.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .context("unexpected /proc/PID/stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3, so fields 14 and 15 are at 11 and 12.
    let field = |i: usize| -> anyhow::Result<u64> {
        Ok(fields.get(i).context("short /proc/PID/stat")?.parse()?)
    };
    Ok(field(11)? + field(12)?)
}

/// Resident and peak resident memory, KiB (`VmRSS`, `VmHWM` of `/proc/PID/status`).
fn memory_kib(pid: u32) -> anyhow::Result<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status (Linux only)"))?;
    let value = |name: &str| -> anyhow::Result<u64> {
        let line = status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .with_context(|| format!("no {name} in /proc/PID/status"))?;
        Ok(line.trim().trim_end_matches("kB").trim().parse()?)
    };
    Ok((value("VmRSS:")?, value("VmHWM:")?))
}

/// `GET /metrics` over plain HTTP/1.0: the benchmark checks the endpoint as a scraper sees it.
fn scrape(address: SocketAddr) -> anyhow::Result<String> {
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(5))
        .with_context(|| format!("connecting to the agent's /metrics on {address}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(stream, "GET /metrics HTTP/1.0\r\nHost: {address}\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .context("malformed HTTP response from /metrics")?;
    anyhow::ensure!(
        head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"),
        "/metrics answered: {head}"
    );
    Ok(body.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let pid = std::process::id();
        assert!(cpu_ticks(pid).is_ok());
        let (rss, peak) = memory_kib(pid).unwrap();
        assert!(rss > 0 && peak >= rss);
    }
}
