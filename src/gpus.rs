//! `agora gpus` and the agent's GPU monitor: what the node has, found through NVML or simulated.

use std::{io::Write, net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;
use gpu_runtime::gpus::{
    GpuSource, Monitor,
    nvml::{self, NvmlGpus},
    simulated::SimulatedGpus,
};

use crate::cli::GpusArgs;

/// Prints what NVML finds on this machine. Where NVML is unavailable the command says why and
/// exits non-zero, so scripts notice; `--json` still prints the report (`unavailable` set).
pub fn run(args: &GpusArgs, out: &mut impl Write) -> anyhow::Result<()> {
    let found = nvml::discover();
    if args.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&found)?)?;
    } else if found.unavailable.is_none() {
        writeln!(
            out,
            "{:<4} {:<13} {:<28} {:>9} {:>4} {:>9} {:>7} {:<8} {:>5} {:>6} {:>6} {:>7}  UUID",
            "GPU",
            "model",
            "product",
            "memory",
            "CC",
            "PCIe",
            "NVLink",
            "health",
            "util",
            "temp",
            "power",
            "SM MHz"
        )?;
        for (gpu, sample) in found.gpus.iter().zip(&found.samples) {
            let opt = |v: Option<String>| v.unwrap_or_else(|| "-".into());
            writeln!(
                out,
                "{:<4} {:<13} {:<28} {:>6}MiB {:>4} {:>9} {:>7} {:<8} {:>4}% {:>5}C {:>5}W {:>7}  {}",
                gpu.index,
                gpu.device.model,
                gpu.product_name,
                gpu.memory_mib,
                gpu.device.compute_capability,
                opt(gpu
                    .pcie_generation
                    .zip(gpu.pcie_width)
                    .map(|(g, w)| format!("gen{g} x{w}"))),
                opt(gpu.nvlink_active_links.map(|n| n.to_string())),
                if gpu.device.healthy {
                    "healthy"
                } else {
                    "UNHEALTHY"
                },
                opt(sample.utilization_percent.map(|v| v.to_string())),
                opt(sample.temperature_c.map(|v| v.to_string())),
                opt(sample.power_watts.map(|v| format!("{v:.0}"))),
                opt(sample.sm_clock_mhz.map(|v| v.to_string())),
                gpu.device.uuid,
            )?;
        }
        if let Some(gpu) = found.gpus.first() {
            writeln!(
                out,
                "driver {}, CUDA {}",
                gpu.driver_version.as_deref().unwrap_or("unknown"),
                gpu.cuda_version.as_deref().unwrap_or("unknown")
            )?;
        }
        for error in &found.errors {
            writeln!(out, "note: {error}")?;
        }
    }
    match &found.unavailable {
        Some(why) => anyhow::bail!("NVML is unavailable: {why}"),
        None => Ok(()),
    }
}

/// The agent's GPU monitor: simulated GPUs for `--simulate-gpus SPEC`, otherwise NVML's, sampled in
/// the background every `interval`, and served on `metrics_listen` when given.
pub async fn agent_monitor(
    simulate: Option<&str>,
    node_name: &str,
    interval: Duration,
    metrics_listen: Option<SocketAddr>,
) -> anyhow::Result<Arc<Monitor>> {
    let source: Box<dyn GpuSource> = match simulate {
        Some(spec) => Box::new(
            SimulatedGpus::new(spec, node_name)
                .with_context(|| format!("--simulate-gpus {spec:?}"))?,
        ),
        None => Box::new(NvmlGpus::open().map_err(|e| {
            anyhow::anyhow!(
                "cannot find this machine's GPUs through NVML: {}; to run the agent without GPUs \
                 (development, tests), offer simulated ones with --simulate-gpus SPEC, e.g. \
                 `--simulate-gpus 8xH100-80GB`",
                nvml::explain(&e)
            )
        })?),
    };
    anyhow::ensure!(
        !source.inventory().is_empty(),
        "NVML works but reports no GPU on this machine; nothing to offer (use --simulate-gpus \
         SPEC to try Agora without GPUs)"
    );
    let monitor = Arc::new(Monitor::new(source, interval, &host_name(node_name)));
    tokio::spawn(Arc::clone(&monitor).run());
    if let Some(address) = metrics_listen {
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .with_context(|| format!("--metrics-listen {address}: cannot listen there"))?;
        let served = Arc::clone(&monitor);
        tokio::spawn(async move {
            if let Err(e) = gpu_runtime::gpus::metrics::serve(listener, served).await {
                tracing::error!(error = %e, "the metrics endpoint stopped");
            }
        });
        tracing::info!(%address, "serving /metrics");
    }
    Ok(monitor)
}

/// The kernel's host name, as dcgm-exporter's `Hostname` label has it; the node name where the
/// kernel does not say.
fn host_name(node_name: &str) -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| node_name.to_string())
}
