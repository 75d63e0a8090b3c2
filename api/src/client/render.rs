//! Text views of jobs and nodes for `agora job …` and `agora node …`.
//!
//! Pure functions of the wire types and a `now` argument: the CLI passes the current time, tests a
//! fixed one, so ages render the same on every run.

use crds::{
    rest::{Job, Node},
    v1alpha1::{BuiltinWorkload, ComputeJobSpec, JobKind, VerificationMode, Workload},
};
use jiff::Timestamp;

use super::table::{Table, width};

/// Shown for a value that is not set, as kubectl does.
const NONE: &str = "<none>";

/// More nodes than this in the NODES column are summarised as `+N more`, so that a 64-worker job
/// does not push the AGE column off the screen; `agora job get` lists every worker.
const MAX_NODES_SHOWN: usize = 3;

/// A jobs list in the shape of `kubectl get`: one line per job, ages relative to `now`.
pub fn jobs_table(jobs: &[Job], now: Timestamp) -> String {
    let mut t = Table::new([
        "ID", "NAME", "KIND", "PHASE", "WORKERS", "GPUS", "PRICE", "NODES", "AGE",
    ]);
    for job in jobs {
        t.row([
            job.id.clone(),
            job.name.clone().unwrap_or_else(|| NONE.into()),
            kind_str(job.spec.kind).into(),
            job.status.phase.to_string(),
            job.spec.resources.workers.to_string(),
            job.spec.total_gpus().to_string(),
            price_cell(job),
            nodes_cell(job),
            age(job.status.submit_time.as_ref().map(|t| t.0), now),
        ]);
    }
    t.render()
}

/// A nodes list in the shape of `kubectl get`: capacity, price and liveness at a glance.
pub fn nodes_table(nodes: &[Node], now: Timestamp) -> String {
    let mut t = Table::new([
        "NAME",
        "REGION",
        "MODEL",
        "GPUS",
        "FREE",
        "PRICE",
        "READY",
        "SIMULATED",
        "LAST HEARTBEAT",
    ]);
    for node in nodes {
        let s = &node.status;
        t.row([
            node.name.clone(),
            node.spec.region.clone(),
            s.gpu_model.clone().unwrap_or_else(|| NONE.into()),
            s.capacity.to_string(),
            s.free.to_string(),
            node.spec.price_per_gpu_hour.to_string(),
            node_ready(node).into(),
            if s.simulated { "yes" } else { "no" }.into(),
            match &s.last_heartbeat {
                Some(t) => age(Some(t.0), now),
                None => "<never>".into(),
            },
        ]);
    }
    t.render()
}

/// The status of a node's `Ready` condition (`True`, `False`, `Unknown`), `Unknown` when the hub
/// has not reported one.
pub fn node_ready(node: &Node) -> &str {
    node.status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .map_or("Unknown", |c| c.status.as_str())
}

/// One job in the shape of `kubectl describe`: what was asked, what was agreed, where it runs,
/// what it used and when each step happened.
pub fn job_detail(job: &Job, now: Timestamp) -> String {
    let spec = &job.spec;
    let status = &job.status;
    let mut d = Describe::default();

    d.field("ID", &job.id);
    d.field("Name", job.name.as_deref().unwrap_or(NONE));
    d.field("Kind", kind_str(spec.kind));
    d.field("Phase", status.phase.as_str());
    if let Some(reason) = &status.reason {
        d.field("Reason", reason);
    }
    if let Some(message) = &status.message {
        d.field("Message", message);
    }

    d.field("Workload", workload_summary(&spec.workload));
    if let Some(command) = &spec.workload.command {
        d.sub_field("Command", shell_words(command));
    }
    if let Some(args) = &spec.workload.args {
        d.sub_field("Args", shell_words(args));
    }
    if !spec.workload.env.is_empty() {
        // Names only: env values often carry tokens, and `-o json` shows them to whoever needs them.
        let names: Vec<&str> = spec.workload.env.iter().map(|e| e.name.as_str()).collect();
        d.sub_field("Env", names.join(", "));
    }

    d.field("Resources", resources_summary(spec));
    if let Some(gpu) = &spec.resources.gpu {
        if !gpu.models.is_empty() {
            d.sub_field("GPU models", gpu.models.join(", "));
        }
        if let Some(mem) = gpu.min_memory_gib {
            d.sub_field("Min GPU memory", format!("{mem} GiB"));
        }
        if let Some(cc) = &gpu.min_compute_capability {
            d.sub_field("Min compute capability", cc);
        }
    }

    if let Some(p) = &spec.placement {
        d.heading("Placement constraints");
        if !p.regions.is_empty() {
            d.sub_field("Regions", p.regions.join(", "));
        }
        if let Some(r) = &p.user_region {
            d.sub_field("User region", r);
        }
        if let Some(ms) = p.max_latency_ms {
            d.sub_field("Max latency", format!("{ms} ms"));
        }
        if let Some(mbps) = p.min_bandwidth_mbps {
            d.sub_field("Min bandwidth", format!("{mbps} Mbit/s"));
        }
        if let Some(sites) = &p.data_locality {
            let sites: Vec<String> = sites
                .iter()
                .map(|s| match &s.dataset {
                    Some(ds) => format!("{} ({ds})", s.node),
                    None => s.node.clone(),
                })
                .collect();
            d.sub_field("Data sites", sites.join(", "));
        }
    }

    let max = spec.pricing.max_price_per_gpu_hour;
    d.field(
        "Price",
        match &status.placement {
            Some(p) => format!("{} per GPU-hour (max {max})", p.price_per_gpu_hour),
            None => format!("not agreed yet (max {max} per GPU-hour)"),
        },
    );
    if let Some(rt) = spec.max_runtime {
        d.field("Max runtime", span(std::time::Duration::from(rt).as_secs()));
    }
    if let Some(v) = &spec.verification {
        d.field(
            "Verification",
            match (v.mode, v.sample_rate) {
                (VerificationMode::SpotCheck, Some(rate)) => {
                    format!("SpotCheck (sample rate {rate})")
                }
                (VerificationMode::SpotCheck, None) => "SpotCheck (default sample rate)".into(),
                (VerificationMode::Redundant, _) => "Redundant".into(),
                (VerificationMode::None, _) => "None".into(),
            },
        );
    }
    d.field(
        "Attempts",
        format!("{} of {}", status.attempts, spec.max_attempts()),
    );

    match &status.placement {
        Some(p) if !p.workers.is_empty() => {
            let mut t = Table::new(["RANK", "NODE", "REGION", "GPUS"]);
            let mut workers: Vec<_> = p.workers.iter().collect();
            workers.sort_by_key(|w| w.rank);
            for w in workers {
                let gpus = if w.gpus.is_empty() {
                    NONE.to_string()
                } else {
                    w.gpus.join(", ")
                };
                t.row([w.rank.to_string(), w.node.clone(), w.region.clone(), gpus]);
            }
            d.heading("Workers");
            d.block(&t.render());
        }
        _ => d.field("Workers", "not placed"),
    }

    if let Some(u) = &status.usage {
        d.field(
            "Usage",
            format!("{} GPU-seconds, cost {}", u.gpu_seconds, u.cost),
        );
    }
    if !job.results.is_empty() {
        let mut t = Table::new(["RANK", "NODE", "BACKEND", "RESULT"]);
        for w in &job.results {
            let r = &w.result;
            let backend = serde_json::to_value(r.backend)
                .ok()
                .and_then(|v| v.as_str().map(String::from))
                .unwrap_or_default();
            let shown = match (&r.tflops, &r.output_digest) {
                (Some(tflops), _) => format!("{tflops:.2} TFLOPS"),
                (None, Some(digest)) => format!(
                    "digest {digest} ({} chunk commitments)",
                    r.chunk_commitments.len()
                ),
                (None, None) => "-".into(),
            };
            t.row([w.rank.to_string(), w.node.clone(), backend, shown]);
        }
        d.heading("Results");
        d.block(&t.render());
    }
    if let Some(s) = &status.settlement {
        let mut parts = Vec::new();
        if let Some(b) = &s.batch {
            parts.push(format!("batch {b}"));
        }
        if let Some(tx) = &s.tx {
            parts.push(format!("tx {tx}"));
        }
        if !parts.is_empty() {
            d.field("Settlement", parts.join(", "));
        }
    }

    if !status.conditions.is_empty() {
        let mut t = Table::new(["TYPE", "STATUS", "REASON", "AGE", "MESSAGE"]);
        for c in &status.conditions {
            t.row([
                c.type_.clone(),
                c.status.clone(),
                c.reason.clone(),
                age(Some(c.last_transition_time.0), now),
                c.message.clone(),
            ]);
        }
        d.heading("Conditions");
        d.block(&t.render());
    }

    for (key, time) in [
        ("Submitted", &status.submit_time),
        ("Scheduled", &status.schedule_time),
        ("Started", &status.start_time),
        ("Completed", &status.completion_time),
    ] {
        if let Some(t) = time {
            d.field(key, timestamp(t.0, now));
        }
    }
    d.render()
}

/// How long ago `then` was, in kubectl's short form: `45s`, `3m`, `2h`, `4d`, `2y`; `<unknown>`
/// without a time. A time in the future (the hub's clock ahead of ours) shows as `0s` rather than
/// a negative age.
pub fn age(then: Option<Timestamp>, now: Timestamp) -> String {
    let Some(then) = then else {
        return "<unknown>".into();
    };
    let secs = now.duration_since(then).as_secs().max(0);
    let (m, h, d) = (secs / 60, secs / 3600, secs / 86_400);
    if secs < 60 {
        format!("{secs}s")
    } else if m < 60 {
        format!("{m}m")
    } else if h < 24 {
        format!("{h}h")
    } else if d < 365 {
        format!("{d}d")
    } else {
        format!("{}y", d / 365)
    }
}

/// A point in time as RFC 3339 in UTC to the second, followed by its age.
fn timestamp(t: Timestamp, now: Timestamp) -> String {
    format!(
        "{} ({} ago)",
        t.strftime("%Y-%m-%dT%H:%M:%SZ"),
        age(Some(t), now)
    )
}

/// A whole number of seconds as `6h`, `1h30m`, `90s` → `1m30s`: the units a user wrote.
fn span(secs: u64) -> String {
    if secs == 0 {
        return "0s".into();
    }
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    let mut out = String::new();
    for (n, unit) in [(h, "h"), (m, "m"), (s, "s")] {
        if n > 0 {
            out.push_str(&format!("{n}{unit}"));
        }
    }
    out
}

fn kind_str(kind: JobKind) -> &'static str {
    match kind {
        JobKind::Inference => "Inference",
        JobKind::Training => "Training",
        JobKind::Batch => "Batch",
        JobKind::Federated => "Federated",
    }
}

/// The agreed price once placed; before that the job's ceiling, marked `≤` so the two never read
/// alike.
fn price_cell(job: &Job) -> String {
    match &job.status.placement {
        Some(p) => p.price_per_gpu_hour.to_string(),
        None => format!("≤ {}", job.spec.pricing.max_price_per_gpu_hour),
    }
}

/// Distinct nodes of the job in rank order, from the placement when there is one, else from the
/// status' `nodes` summary.
fn nodes_cell(job: &Job) -> String {
    let mut nodes: Vec<&str> = Vec::new();
    match &job.status.placement {
        Some(p) if !p.workers.is_empty() => {
            let mut workers: Vec<_> = p.workers.iter().collect();
            workers.sort_by_key(|w| w.rank);
            for w in workers {
                if !nodes.contains(&w.node.as_str()) {
                    nodes.push(&w.node);
                }
            }
        }
        _ => {
            for n in job.status.nodes.as_deref().unwrap_or("").split(',') {
                let n = n.trim();
                if !n.is_empty() && !nodes.contains(&n) {
                    nodes.push(n);
                }
            }
        }
    }
    if nodes.is_empty() {
        return NONE.into();
    }
    let shown = nodes[..nodes.len().min(MAX_NODES_SHOWN)].join(",");
    match nodes.len().saturating_sub(MAX_NODES_SHOWN) {
        0 => shown,
        more => format!("{shown} +{more} more"),
    }
}

fn workload_summary(w: &Workload) -> String {
    match (&w.builtin, &w.image) {
        (Some(b), _) => format!("builtin {}", builtin_summary(b)),
        (None, Some(image)) => format!("container {image}"),
        (None, None) => "process".into(),
    }
}

fn builtin_summary(b: &BuiltinWorkload) -> String {
    if let Some(s) = &b.sleep {
        format!("sleep ({})", span(u64::from(s.duration_seconds)))
    } else if let Some(m) = &b.matmul_benchmark {
        format!(
            "matmulBenchmark ({n}×{n}, {} iterations)",
            m.iterations,
            n = m.size
        )
    } else if let Some(v) = &b.verifiable_matmul {
        format!(
            "verifiableMatmul ({n}×{n}, {} rows per chunk, seed {})",
            v.chunk_rows,
            v.seed,
            n = v.n
        )
    } else {
        b.name().into()
    }
}

fn resources_summary(spec: &ComputeJobSpec) -> String {
    let r = &spec.resources;
    let plural = |n: u32, word: &str| {
        if n == 1 {
            format!("{n} {word}")
        } else {
            format!("{n} {word}s")
        }
    };
    format!(
        "{} × {} = {}",
        plural(r.workers, "worker"),
        plural(r.gpus_per_worker, "GPU"),
        plural(spec.total_gpus(), "GPU")
    )
}

/// Words joined with spaces, quoting those a shell would split or interpret, so a command can be
/// read (and mostly pasted) as written.
fn shell_words(words: &[String]) -> String {
    words
        .iter()
        .map(|w| {
            let plain = !w.is_empty()
                && w.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c));
            if plain {
                w.clone()
            } else {
                format!("'{}'", w.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Builder of a describe view: `Key:` labels with values aligned per indentation level, headings,
/// and indented blocks (sub-tables).
#[derive(Default)]
struct Describe {
    lines: Vec<DescribeLine>,
}

enum DescribeLine {
    Field {
        indent: usize,
        key: String,
        value: String,
    },
    Block(String),
}

impl Describe {
    fn field(&mut self, key: &str, value: impl Into<String>) {
        self.push_field(0, key, value.into());
    }

    fn sub_field(&mut self, key: &str, value: impl Into<String>) {
        self.push_field(1, key, value.into());
    }

    fn heading(&mut self, key: &str) {
        self.push_field(0, key, String::new());
    }

    /// Lines indented one level under the preceding heading.
    fn block(&mut self, text: &str) {
        self.lines.push(DescribeLine::Block(text.to_string()));
    }

    fn push_field(&mut self, indent: usize, key: &str, value: String) {
        self.lines.push(DescribeLine::Field {
            indent,
            key: key.to_string(),
            value,
        });
    }

    fn render(&self) -> String {
        let widths = self.key_widths();
        let mut out = String::new();
        for (line, key_width) in self.lines.iter().zip(widths) {
            match line {
                DescribeLine::Field { indent, key, value } => {
                    let pad = "  ".repeat(*indent);
                    if value.is_empty() {
                        out.push_str(&format!("{pad}{key}:\n"));
                        continue;
                    }
                    let label = format!("{key}:");
                    let col = key_width + 2;
                    let continuation = " ".repeat(pad.len() + col);
                    for (i, part) in value.lines().enumerate() {
                        if i == 0 {
                            out.push_str(&format!("{pad}{label:<col$}{part}\n"));
                        } else {
                            out.push_str(&format!("{continuation}{part}\n"));
                        }
                    }
                }
                DescribeLine::Block(text) => {
                    for l in text.lines() {
                        out.push_str(&format!("  {l}\n"));
                    }
                }
            }
        }
        out
    }

    /// The label width (key and colon) each line pads to: top-level values share one column
    /// across the whole view; nested values share one per run of consecutive nested lines, so a
    /// long nested key in one group does not push every other group to the right.
    fn key_widths(&self) -> Vec<usize> {
        let label = |line: &DescribeLine| match line {
            DescribeLine::Field { indent, key, value } if !value.is_empty() => {
                Some((*indent, width(key) + 1))
            }
            _ => None,
        };
        let top = self
            .lines
            .iter()
            .filter_map(label)
            .filter(|(indent, _)| *indent == 0)
            .map(|(_, w)| w)
            .max()
            .unwrap_or(0);
        let mut widths = vec![top; self.lines.len()];
        let mut i = 0;
        while i < self.lines.len() {
            let nested = |j: usize| matches!(&self.lines[j], DescribeLine::Field { indent, .. } if *indent > 0);
            if !nested(i) {
                i += 1;
                continue;
            }
            let start = i;
            while i < self.lines.len() && nested(i) {
                i += 1;
            }
            let run = (start..i)
                .filter_map(|j| label(&self.lines[j]))
                .map(|(_, w)| w)
                .max()
                .unwrap_or(0);
            widths[start..i].fill(run);
        }
        widths
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: &str = "2026-03-01T12:00:00Z";

    fn now() -> Timestamp {
        NOW.parse().unwrap()
    }

    fn ago(secs: i64) -> Timestamp {
        now() - jiff::SignedDuration::from_secs(secs)
    }

    /// A job as the hub would send it, built from JSON so the tests also pin the wire shape.
    fn job(v: serde_json::Value) -> Job {
        serde_json::from_value(v).unwrap()
    }

    fn pending_job() -> Job {
        job(serde_json::json!({
            "id": "job-01a",
            "spec": {
                "kind": "Batch",
                "workload": {"builtin": {"sleep": {"durationSeconds": 30}}},
                "resources": {"workers": 1, "gpusPerWorker": 1},
                "pricing": {"maxPricePerGpuHour": "2.50"}
            },
            "status": {"phase": "Pending", "submitTime": ago(45).to_string()}
        }))
    }

    fn running_job() -> Job {
        job(serde_json::json!({
            "id": "job-01b",
            "name": "llama-lora",
            "spec": {
                "kind": "Training",
                "workload": {
                    "image": "ghcr.io/acme/train:1.4",
                    "command": ["python", "train.py"],
                    "args": ["--note", "it's big"],
                    "env": [{"name": "EPOCHS", "value": "3"}, {"name": "HF_TOKEN", "value": "secret"}]
                },
                "resources": {
                    "workers": 4, "gpusPerWorker": 2,
                    "gpu": {"models": ["H100-80GB", "A100-80GB"], "minMemoryGiB": 40, "minComputeCapability": "8.0"}
                },
                "placement": {"regions": ["eu-west", "eu-central"], "userRegion": "eu-west", "maxLatencyMs": 30, "minBandwidthMbps": 1000},
                "pricing": {"maxPricePerGpuHour": "2.50"},
                "maxRuntime": "6h",
                "verification": {"mode": "SpotCheck", "sampleRate": 0.05},
                "retry": {"maxAttempts": 3}
            },
            "status": {
                "phase": "Running",
                "conditions": [{
                    "type": "Scheduled", "status": "True", "reason": "Placed",
                    "message": "4 workers in eu-west", "lastTransitionTime": ago(170).to_string()
                }],
                "placement": {
                    "workers": [
                        {"rank": 1, "node": "gn-7f3a", "gpus": ["GPU-c", "GPU-d"], "region": "eu-west"},
                        {"rank": 0, "node": "gn-7f3a", "gpus": ["GPU-a", "GPU-b"], "region": "eu-west"},
                        {"rank": 2, "node": "gn-81bc", "gpus": ["GPU-e", "GPU-f"], "region": "eu-west"},
                        {"rank": 3, "node": "gn-99aa", "gpus": ["GPU-g", "GPU-h"], "region": "eu-central"}
                    ],
                    "pricePerGpuHour": "1.90"
                },
                "nodes": "gn-7f3a,gn-81bc,gn-99aa",
                "attempts": 1,
                "usage": {"gpuSeconds": 5400, "cost": "2.85"},
                "settlement": {"batch": "batch-7"},
                "submitTime": ago(3 * 3600 + 5).to_string(),
                "scheduleTime": ago(180).to_string(),
                "startTime": ago(170).to_string()
            }
        }))
    }

    fn node(name: &str, ready: Option<&str>, heartbeat: Option<i64>, simulated: bool) -> Node {
        let mut status = serde_json::json!({
            "gpuModel": "H100-80GB", "capacity": 8, "allocatable": 8, "allocated": 2, "free": 6,
            "simulated": simulated
        });
        if let Some(r) = ready {
            status["conditions"] = serde_json::json!([{
                "type": "Ready", "status": r, "reason": "Heartbeat", "message": "",
                "lastTransitionTime": ago(60).to_string()
            }]);
        }
        if let Some(h) = heartbeat {
            status["lastHeartbeat"] = serde_json::json!(ago(h).to_string());
        }
        serde_json::from_value(serde_json::json!({
            "name": name,
            "spec": {"region": "eu-west", "pricePerGpuHour": "1.75"},
            "status": status
        }))
        .unwrap()
    }

    /// Asserts that in every line of `table` a value starts exactly where `column`'s header does:
    /// preceded by padding and not itself blank.
    fn assert_column_aligned(table: &str, column: &str) {
        let lines: Vec<&str> = table.lines().collect();
        let start = lines[0].find(column).unwrap();
        let col = lines[0][..start].chars().count();
        for l in &lines[1..] {
            let chars: Vec<char> = l.chars().collect();
            assert!(
                chars.len() > col,
                "{column}: line too short: {l:?}\n{table}"
            );
            assert_eq!(
                chars[col - 1],
                ' ',
                "{column}: value not at column start: {l:?}\n{table}"
            );
            assert_ne!(
                chars[col], ' ',
                "{column}: no value at column start: {l:?}\n{table}"
            );
        }
    }

    #[test]
    fn ages_read_like_kubectl() {
        let cases = [
            (0, "0s"),
            (45, "45s"),
            (59, "59s"),
            (60, "1m"),
            (3 * 60 + 20, "3m"),
            (59 * 60 + 59, "59m"),
            (2 * 3600 + 59, "2h"),
            (23 * 3600, "23h"),
            (4 * 86_400 + 3600, "4d"),
            (364 * 86_400, "364d"),
            (2 * 365 * 86_400, "2y"),
        ];
        for (secs, want) in cases {
            assert_eq!(age(Some(ago(secs)), now()), want, "{secs}s");
        }
        assert_eq!(age(Some(ago(-30)), now()), "0s", "clock skew");
        assert_eq!(age(None, now()), "<unknown>");
    }

    #[test]
    fn jobs_table_shows_gpu_totals_prices_nodes_and_ages() {
        let out = jobs_table(&[running_job(), pending_job()], now());
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 3);
        let cells = |l: &str| {
            l.split("   ")
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .map(String::from)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            cells(lines[0]),
            [
                "ID", "NAME", "KIND", "PHASE", "WORKERS", "GPUS", "PRICE", "NODES", "AGE"
            ]
        );
        assert_eq!(
            cells(lines[1]),
            [
                "job-01b",
                "llama-lora",
                "Training",
                "Running",
                "4",
                "8",
                "1.90",
                "gn-7f3a,gn-81bc,gn-99aa",
                "3h"
            ]
        );
        assert_eq!(
            cells(lines[2]),
            [
                "job-01a", "<none>", "Batch", "Pending", "1", "1", "≤ 2.50", "<none>", "45s"
            ]
        );
    }

    #[test]
    fn jobs_table_columns_are_aligned() {
        let out = jobs_table(&[running_job(), pending_job()], now());
        for column in [
            "NAME", "KIND", "PHASE", "WORKERS", "GPUS", "PRICE", "NODES", "AGE",
        ] {
            assert_column_aligned(&out, column);
        }
        assert!(
            out.lines().all(|l| !l.ends_with(' ')),
            "trailing spaces:\n{out}"
        );
    }

    #[test]
    fn many_nodes_are_summarised() {
        let mut j = running_job();
        j.status.placement = None;
        j.status.nodes = Some("a,b,c,d,e".into());
        assert_eq!(nodes_cell(&j), "a,b,c +2 more");
    }

    #[test]
    fn nodes_table_shows_readiness_and_heartbeat_age() {
        let nodes = [
            node("gn-7f3a", Some("True"), Some(4), true),
            node("gn-lost-long-name", Some("False"), Some(3 * 60 + 10), false),
            node("gn-new", None, None, false),
        ];
        let out = nodes_table(&nodes, now());
        assert_eq!(
            out,
            "NAME                REGION    MODEL       GPUS   FREE   PRICE   READY     SIMULATED   LAST HEARTBEAT\n\
             gn-7f3a             eu-west   H100-80GB   8      6      1.75    True      yes         4s\n\
             gn-lost-long-name   eu-west   H100-80GB   8      6      1.75    False     no          3m\n\
             gn-new              eu-west   H100-80GB   8      6      1.75    Unknown   no          <never>\n"
        );
        for column in ["REGION", "READY", "LAST HEARTBEAT"] {
            assert_column_aligned(&out, column);
        }
    }

    #[test]
    fn job_detail_shows_what_builtin_workers_computed() {
        let mut j = pending_job();
        j.spec.workload = serde_json::from_value(serde_json::json!({
            "builtin": {"verifiableMatmul": {"n": 64, "chunkRows": 16, "seed": 42}}
        }))
        .unwrap();
        j.results = serde_json::from_value(serde_json::json!([
            {"rank": 0, "node": "gn-a", "result": {"backend": "cuda", "tflops": 41.234}},
            {"rank": 1, "node": "gn-b", "result": {
                "backend": "cpu-reference", "outputDigest": "13e9ce56",
                "chunkCommitments": ["1f78", "2a"]
            }}
        ]))
        .unwrap();
        let out = job_detail(&j, now());
        assert!(
            out.contains("builtin verifiableMatmul (64×64, 16 rows per chunk, seed 42)"),
            "{out}"
        );
        assert!(out.contains("Results:\n  RANK   NODE   BACKEND"), "{out}");
        assert!(
            out.contains("0      gn-a   cuda            41.23 TFLOPS"),
            "{out}"
        );
        assert!(
            out.contains("1      gn-b   cpu-reference   digest 13e9ce56 (2 chunk commitments)"),
            "{out}"
        );
    }

    #[test]
    fn job_detail_describes_a_running_job() {
        let out = job_detail(&running_job(), now());
        let expected = "\
ID:            job-01b
Name:          llama-lora
Kind:          Training
Phase:         Running
Workload:      container ghcr.io/acme/train:1.4
  Command:  python train.py
  Args:     --note 'it'\\''s big'
  Env:      EPOCHS, HF_TOKEN
Resources:     4 workers × 2 GPUs = 8 GPUs
  GPU models:              H100-80GB, A100-80GB
  Min GPU memory:          40 GiB
  Min compute capability:  8.0
Placement constraints:
  Regions:        eu-west, eu-central
  User region:    eu-west
  Max latency:    30 ms
  Min bandwidth:  1000 Mbit/s
Price:         1.90 per GPU-hour (max 2.50)
Max runtime:   6h
Verification:  SpotCheck (sample rate 0.05)
Attempts:      1 of 3
Workers:
  RANK   NODE      REGION       GPUS
  0      gn-7f3a   eu-west      GPU-a, GPU-b
  1      gn-7f3a   eu-west      GPU-c, GPU-d
  2      gn-81bc   eu-west      GPU-e, GPU-f
  3      gn-99aa   eu-central   GPU-g, GPU-h
Usage:         5400 GPU-seconds, cost 2.85
Settlement:    batch batch-7
Conditions:
  TYPE        STATUS   REASON   AGE   MESSAGE
  Scheduled   True     Placed   2m    4 workers in eu-west
Submitted:     2026-03-01T08:59:55Z (3h ago)
Scheduled:     2026-03-01T11:57:00Z (3m ago)
Started:       2026-03-01T11:57:10Z (2m ago)
";
        assert_eq!(out, expected, "\n{out}");
        assert!(!out.contains("secret"), "env values must not be shown");
    }

    #[test]
    fn job_detail_of_a_pending_job_says_what_is_not_decided_yet() {
        let mut j = pending_job();
        j.status.reason = Some("Unschedulable".into());
        j.status.message = Some("no node with 1 free GPU under 2.50\nwaiting for capacity".into());
        let out = job_detail(&j, now());
        let expected = "\
ID:         job-01a
Name:       <none>
Kind:       Batch
Phase:      Pending
Reason:     Unschedulable
Message:    no node with 1 free GPU under 2.50
            waiting for capacity
Workload:   builtin sleep (30s)
Resources:  1 worker × 1 GPU = 1 GPU
Price:      not agreed yet (max 2.50 per GPU-hour)
Attempts:   0 of 1
Workers:    not placed
Submitted:  2026-03-01T11:59:15Z (45s ago)
";
        assert_eq!(out, expected, "\n{out}");
    }

    #[test]
    fn spans_use_the_largest_units() {
        assert_eq!(span(6 * 3600), "6h");
        assert_eq!(span(5400), "1h30m");
        assert_eq!(span(90), "1m30s");
        assert_eq!(span(3601), "1h1s");
        assert_eq!(span(0), "0s");
    }
}
