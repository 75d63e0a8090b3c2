//! Workload traces: what `agora simulate` replays. A trace is a list of jobs, each an arrival time
//! and the parts of a ComputeJob spec that placement reads, named as the spec names them
//! (`gpusPerWorker`, `maxPricePerGpuHour`, `userRegion`, `minBandwidthMbps`, …). It is read from CSV
//! (one job a row under a header) or JSON (an array of objects, or one object a line); both go
//! through the same field checks, and an error names the line and the field. The format is in
//! docs/simulate.md, with examples/simulate-trace.csv and examples/simulate-trace.json.

use std::{collections::BTreeMap, fmt, str::FromStr};

use crds::{
    money::Price,
    v1alpha1::{
        ComputeJobSpec, GpuRequirements, JobKind, Placement, Pricing, Resources, Retry, Workload,
    },
};

use super::fleet::REGIONS;

/// One job of a trace.
#[derive(Clone, Debug, PartialEq)]
pub struct TraceJob {
    /// When the job is submitted, in virtual milliseconds from the start of the run.
    pub arrival_ms: u64,
    pub kind: JobKind,
    pub workers: u32,
    pub gpus_per_worker: u32,
    /// Acceptable GPU models; empty: any.
    pub models: Vec<String>,
    pub min_memory_gib: Option<u32>,
    pub max_price_micros: u64,
    /// Acceptable regions; empty: any.
    pub regions: Vec<String>,
    pub user_region: Option<String>,
    pub max_latency_ms: Option<u32>,
    pub min_bandwidth_mbps: Option<u32>,
    /// How long the job runs once placed, in virtual milliseconds.
    pub duration_ms: u64,
    /// Attempts allowed including the first (the spec's `retry.maxAttempts`, default 1): a job
    /// whose node fails is placed again elsewhere until it has used them up.
    pub max_attempts: u32,
}

impl TraceJob {
    /// The ComputeJob spec the hub would have received: the scheduler's request is derived from it
    /// by the hub's own conversion (`api::scheduling::request_for`). The workload is a container
    /// image, which every simulated node can run.
    pub fn spec(&self) -> ComputeJobSpec {
        let placement = (!self.regions.is_empty()
            || self.user_region.is_some()
            || self.max_latency_ms.is_some()
            || self.min_bandwidth_mbps.is_some())
        .then(|| Placement {
            regions: self.regions.clone(),
            user_region: self.user_region.clone(),
            max_latency_ms: self.max_latency_ms,
            min_bandwidth_mbps: self.min_bandwidth_mbps,
            ..Placement::default()
        });
        let gpu =
            (!self.models.is_empty() || self.min_memory_gib.is_some()).then(|| GpuRequirements {
                models: self.models.clone(),
                min_memory_gib: self.min_memory_gib,
                ..GpuRequirements::default()
            });
        ComputeJobSpec {
            kind: self.kind,
            workload: Workload {
                image: Some("simulated/workload:latest".into()),
                ..Workload::default()
            },
            resources: Resources {
                workers: self.workers,
                gpus_per_worker: self.gpus_per_worker,
                gpu,
                pipeline_stages: None,
                communication: None,
            },
            placement,
            pricing: Pricing {
                max_price_per_gpu_hour: Price::from_micros(self.max_price_micros),
            },
            max_runtime: None,
            verification: None,
            retry: (self.max_attempts > 1).then_some(Retry {
                max_attempts: self.max_attempts,
            }),
        }
    }

    /// GPUs the job holds while it runs.
    pub fn gpus(&self) -> u64 {
        u64::from(self.workers) * u64::from(self.gpus_per_worker)
    }
}

/// A trace that cannot be read: where, which field, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceError {
    /// 1-based line of the file.
    pub line: usize,
    /// The field at fault, as the trace names it; `None` for a syntax error of the row itself.
    pub field: Option<String>,
    pub message: String,
}

impl fmt::Display for TraceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.field {
            Some(field) => write!(f, "line {}, field {field}: {}", self.line, self.message),
            None => write!(f, "line {}: {}", self.line, self.message),
        }
    }
}

impl std::error::Error for TraceError {}

/// Every field a trace may have, in the CSV column order of the examples.
pub const FIELDS: [&str; 13] = [
    "arrivalSeconds",
    "kind",
    "workers",
    "gpusPerWorker",
    "models",
    "minMemoryGiB",
    "maxPricePerGpuHour",
    "regions",
    "userRegion",
    "maxLatencyMs",
    "minBandwidthMbps",
    "durationSeconds",
    "maxAttempts",
];

/// One cell of a row: text, or a list (JSON arrays; `;`-separated in CSV).
#[derive(Clone, Debug)]
enum Cell {
    Text(String),
    List(Vec<String>),
}

/// Reads a trace, CSV or JSON by its content: JSON starts with `[` or `{`.
pub fn parse(text: &str) -> Result<Vec<TraceJob>, TraceError> {
    let mut jobs = match text.trim_start().chars().next() {
        Some('[') | Some('{') => parse_json(text)?,
        _ => parse_csv(text)?,
    };
    // Arrival order; jobs arriving together keep the trace's order.
    jobs.sort_by_key(|j| j.arrival_ms);
    Ok(jobs)
}

fn parse_csv(text: &str) -> Result<Vec<TraceJob>, TraceError> {
    let mut lines = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim()))
        .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'));
    let Some((header_line, header)) = lines.next() else {
        return Ok(Vec::new());
    };
    let columns: Vec<&str> = header.split(',').map(str::trim).collect();
    for column in &columns {
        if !FIELDS.contains(column) {
            return Err(TraceError {
                line: header_line,
                field: Some(column.to_string()),
                message: format!("unknown column (known: {})", FIELDS.join(", ")),
            });
        }
    }
    let mut jobs = Vec::new();
    for (line, row) in lines {
        let cells: Vec<&str> = row.split(',').map(str::trim).collect();
        if cells.len() != columns.len() {
            return Err(TraceError {
                line,
                field: None,
                message: format!(
                    "{} cells, the header has {} columns",
                    cells.len(),
                    columns.len()
                ),
            });
        }
        let row: BTreeMap<String, Cell> = columns
            .iter()
            .zip(cells)
            .filter(|(_, cell)| !cell.is_empty())
            .map(|(column, cell)| {
                let value = if matches!(*column, "models" | "regions") {
                    Cell::List(cell.split(';').map(|s| s.trim().to_string()).collect())
                } else {
                    Cell::Text(cell.to_string())
                };
                (column.to_string(), value)
            })
            .collect();
        jobs.push(job(line, &row)?);
    }
    Ok(jobs)
}

/// JSON: an array of objects, or objects one after another (JSON Lines). Each object is read on
/// its own so that an error can name the line it starts on.
fn parse_json(text: &str) -> Result<Vec<TraceJob>, TraceError> {
    let line_of = |offset: usize| text[..offset.min(text.len())].matches('\n').count() + 1;
    let mut offset = text.len() - text.trim_start().len();
    let array = text[offset..].starts_with('[');
    if array {
        offset += 1;
    }
    let mut jobs = Vec::new();
    loop {
        offset = skip_whitespace(text, offset);
        let rest = &text[offset..];
        if rest.is_empty() {
            if array {
                return Err(TraceError {
                    line: line_of(offset),
                    field: None,
                    message: "the JSON array is not closed with ]".into(),
                });
            }
            break;
        }
        if array && rest.starts_with(']') {
            break;
        }
        let start = offset;
        let mut stream = serde_json::Deserializer::from_str(rest).into_iter::<serde_json::Value>();
        let value = match stream.next() {
            Some(Ok(value)) => value,
            Some(Err(e)) => {
                return Err(TraceError {
                    line: line_of(start) + e.line().saturating_sub(1),
                    field: None,
                    message: format!("invalid JSON: {e}"),
                });
            }
            None => break,
        };
        offset += stream.byte_offset();
        let line = line_of(start);
        let serde_json::Value::Object(object) = value else {
            return Err(TraceError {
                line,
                field: None,
                message: "each job must be a JSON object".into(),
            });
        };
        let mut row = BTreeMap::new();
        for (key, value) in object {
            let cell = match value {
                serde_json::Value::Null => continue,
                serde_json::Value::String(s) => Cell::Text(s),
                serde_json::Value::Number(n) => Cell::Text(n.to_string()),
                serde_json::Value::Array(items) => Cell::List(
                    items
                        .into_iter()
                        .map(|item| match item {
                            serde_json::Value::String(s) => Ok(s),
                            other => Err(TraceError {
                                line,
                                field: Some(key.clone()),
                                message: format!("list items must be strings, got {other}"),
                            }),
                        })
                        .collect::<Result<_, _>>()?,
                ),
                other => {
                    return Err(TraceError {
                        line,
                        field: Some(key),
                        message: format!("expected a string, number or list, got {other}"),
                    });
                }
            };
            row.insert(key, cell);
        }
        jobs.push(job(line, &row)?);
        offset = skip_whitespace(text, offset);
        if array && text[offset..].starts_with(',') {
            offset += 1;
        }
    }
    Ok(jobs)
}

fn skip_whitespace(text: &str, offset: usize) -> usize {
    offset + (text[offset..].len() - text[offset..].trim_start().len())
}

/// One job from its cells, every field checked.
fn job(line: usize, row: &BTreeMap<String, Cell>) -> Result<TraceJob, TraceError> {
    let error = |field: &str, message: String| TraceError {
        line,
        field: Some(field.to_string()),
        message,
    };
    if let Some(unknown) = row.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(error(
            unknown,
            format!("unknown field (known: {})", FIELDS.join(", ")),
        ));
    }
    let text = |field: &str| -> Result<Option<&str>, TraceError> {
        match row.get(field) {
            None => Ok(None),
            Some(Cell::Text(s)) => Ok(Some(s.as_str())),
            Some(Cell::List(_)) => Err(error(field, "expected one value, got a list".into())),
        }
    };
    let list = |field: &str| -> Vec<String> {
        match row.get(field) {
            None => Vec::new(),
            Some(Cell::Text(s)) => vec![s.clone()],
            Some(Cell::List(items)) => items.iter().filter(|s| !s.is_empty()).cloned().collect(),
        }
    };
    let number = |field: &str, min: u32, max: u32| -> Result<Option<u32>, TraceError> {
        text(field)?
            .map(|s| {
                u32::from_str(s)
                    .ok()
                    .filter(|n| (min..=max).contains(n))
                    .ok_or_else(|| {
                        error(
                            field,
                            format!("must be a whole number {min}..={max}, got {s:?}"),
                        )
                    })
            })
            .transpose()
    };
    let seconds = |field: &str, positive: bool| -> Result<u64, TraceError> {
        let s = text(field)?.ok_or_else(|| error(field, "is required".into()))?;
        let value = f64::from_str(s)
            .ok()
            .filter(|v| v.is_finite() && *v >= 0.0 && *v <= 1e9 && (!positive || *v > 0.0))
            .ok_or_else(|| {
                let wanted = if positive { "> 0" } else { ">= 0" };
                error(field, format!("must be seconds {wanted}, got {s:?}"))
            })?;
        Ok((value * 1000.0)
            .round()
            .max(if positive { 1.0 } else { 0.0 }) as u64)
    };
    let region = |field: &str, name: &str| -> Result<String, TraceError> {
        if REGIONS.contains(&name) {
            Ok(name.to_string())
        } else {
            Err(error(
                field,
                format!(
                    "unknown region {name:?} (the simulated fleet's regions: {})",
                    REGIONS.join(", ")
                ),
            ))
        }
    };

    let arrival_ms = seconds("arrivalSeconds", false)?;
    let kind = match text("kind")? {
        None | Some("Inference") => JobKind::Inference,
        Some("Training") => JobKind::Training,
        Some("Batch") => JobKind::Batch,
        Some(other) => {
            return Err(error(
                "kind",
                format!("must be Inference, Training or Batch, got {other:?}"),
            ));
        }
    };
    let workers = number("workers", 1, 1024)?.unwrap_or(1);
    let gpus_per_worker = number("gpusPerWorker", 1, 16)?.unwrap_or(1);
    let price = text("maxPricePerGpuHour")?
        .ok_or_else(|| error("maxPricePerGpuHour", "is required".into()))?;
    let max_price_micros = Price::from_str(price)
        .map_err(|e| error("maxPricePerGpuHour", e.to_string()))?
        .micros();
    let regions = list("regions")
        .iter()
        .map(|r| region("regions", r))
        .collect::<Result<_, _>>()?;
    let user_region = text("userRegion")?
        .map(|r| region("userRegion", r))
        .transpose()?;
    let max_latency_ms = number("maxLatencyMs", 1, 100_000)?;
    if max_latency_ms.is_some() && user_region.is_none() && workers == 1 {
        return Err(error(
            "maxLatencyMs",
            "bounds the RTT to userRegion for one worker: set userRegion too".into(),
        ));
    }
    Ok(TraceJob {
        arrival_ms,
        kind,
        workers,
        gpus_per_worker,
        models: list("models"),
        min_memory_gib: number("minMemoryGiB", 0, 10_000)?,
        max_price_micros,
        regions,
        user_region,
        max_latency_ms,
        min_bandwidth_mbps: number("minBandwidthMbps", 1, 10_000_000)?,
        duration_ms: seconds("durationSeconds", true)?,
        max_attempts: number("maxAttempts", 1, 100)?.unwrap_or(1),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "arrivalSeconds,kind,workers,gpusPerWorker,models,minMemoryGiB,maxPricePerGpuHour,regions,userRegion,maxLatencyMs,minBandwidthMbps,durationSeconds";

    #[test]
    fn csv_rows_become_jobs_in_arrival_order() {
        let text = format!(
            "{HEADER}\n# a comment\n30,Training,2,8,H100-80GB;A100-80GB,,4.50,,,,1000,7200\n0.5,Inference,1,1,,24,2,,tokyo,150,,600.25\n"
        );
        let jobs = parse(&text).unwrap();
        assert_eq!(jobs.len(), 2);
        assert_eq!(jobs[0].arrival_ms, 500);
        assert_eq!(jobs[0].user_region.as_deref(), Some("tokyo"));
        assert_eq!(jobs[0].max_latency_ms, Some(150));
        assert_eq!(jobs[0].duration_ms, 600_250);
        assert_eq!(jobs[0].max_price_micros, 2_000_000);
        assert_eq!(jobs[1].kind, JobKind::Training);
        assert_eq!(jobs[1].models, ["H100-80GB", "A100-80GB"]);
        assert_eq!(jobs[1].min_bandwidth_mbps, Some(1000));
        assert_eq!(jobs[1].gpus(), 16);
    }

    #[test]
    fn json_array_and_json_lines_read_alike() {
        let array = r#"[
  {"arrivalSeconds": 0, "kind": "Batch", "gpusPerWorker": 4, "maxPricePerGpuHour": "3.00", "durationSeconds": 60},
  {"arrivalSeconds": 1.5, "workers": 2, "models": ["H100-80GB"], "maxPricePerGpuHour": "4", "minBandwidthMbps": 500, "durationSeconds": 10}
]"#;
        let lines = r#"{"arrivalSeconds": 0, "kind": "Batch", "gpusPerWorker": 4, "maxPricePerGpuHour": "3.00", "durationSeconds": 60}
{"arrivalSeconds": 1.5, "workers": 2, "models": ["H100-80GB"], "maxPricePerGpuHour": "4", "minBandwidthMbps": 500, "durationSeconds": 10}"#;
        let a = parse(array).unwrap();
        assert_eq!(a, parse(lines).unwrap());
        assert_eq!(a[1].arrival_ms, 1500);
        assert_eq!(a[1].workers, 2);
        assert_eq!(a[0].kind, JobKind::Batch);
    }

    #[test]
    fn errors_name_the_line_and_the_field() {
        let text =
            format!("{HEADER}\n0,Inference,1,1,,,2.00,,,,,60\n5,Inference,1,1,,,cheap,,,,,60\n");
        let e = parse(&text).unwrap_err();
        assert_eq!(
            (e.line, e.field.as_deref()),
            (3, Some("maxPricePerGpuHour"))
        );
        assert!(
            e.to_string()
                .starts_with("line 3, field maxPricePerGpuHour:"),
            "{e}"
        );

        let text = format!("{HEADER}\n\n0,Inference,0,1,,,2.00,,,,,60\n");
        let e = parse(&text).unwrap_err();
        assert_eq!((e.line, e.field.as_deref()), (3, Some("workers")));

        let e = parse(&format!("{HEADER}\n0,Inference,1,1,,,2.00,,mars,,,60\n")).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("userRegion"));
        assert!(e.message.contains("mars"));

        let e = parse(&format!("{HEADER}\n0,Inference,1,1,,,2.00,,,,,0\n")).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("durationSeconds"));

        let e = parse("arrivalSeconds,gpus\n").unwrap_err();
        assert_eq!((e.line, e.field.as_deref()), (1, Some("gpus")));

        let json = "[\n{\"arrivalSeconds\": 0, \"maxPricePerGpuHour\": \"1\", \"durationSeconds\": 5},\n{\"arrivalSeconds\": 0,\n \"maxPricePerGpuHour\": \"1\"}\n]";
        let e = parse(json).unwrap_err();
        assert_eq!((e.line, e.field.as_deref()), (3, Some("durationSeconds")));
        assert_eq!(e.message, "is required");

        let e = parse("{\"arrivalSeconds\": 0, \"gpu\": 1}").unwrap_err();
        assert_eq!(e.field.as_deref(), Some("gpu"));

        let e = parse("[{\"arrivalSeconds\": 0,}]").unwrap_err();
        assert_eq!((e.line, e.field), (1, None));
    }

    #[test]
    fn the_spec_carries_what_placement_reads() {
        let job = parse(&format!(
            "{HEADER}\n0,Training,4,8,H100-80GB,80,3.50,virginia;ohio,,,2000,3600\n"
        ))
        .unwrap()
        .remove(0);
        let request = api::scheduling::request_for(&job.spec());
        assert_eq!(request.workers, 4);
        assert_eq!(request.gpus_per_worker, 8);
        assert_eq!(request.models, ["H100-80GB"]);
        assert_eq!(request.min_memory_gib, 80);
        assert_eq!(request.max_price_micros, 3_500_000);
        assert_eq!(request.regions, ["virginia", "ohio"]);
        assert_eq!(request.min_bandwidth_mbps, Some(2000));
        assert_eq!(request.capability, "container");
    }
}
