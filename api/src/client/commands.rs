//! `agora job …` and `agora node …`: the clap types the binary mounts and the code that runs them.

use std::{
    io::{self, Read, Write},
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context, anyhow, bail};
use crds::{
    rest::{Job, List},
    v1alpha1::JobPhase,
};
use jiff::Timestamp;
use serde::Serialize;

use super::{
    error::ClientError,
    http::{CONTENT_TYPE_JSON, CONTENT_TYPE_YAML, HubClient, HubTrust},
    render,
};

/// How often `submit --wait` asks for the job's state.
const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// How long `submit --wait` rides out a hub that stopped answering (a restart, a network blip)
/// before giving up; the job itself keeps running on the hub either way.
const WAIT_OUTAGE_TOLERANCE: Duration = Duration::from_secs(30);

/// Where the hub is and who is asking. Every flag is global, so it may come before or after the
/// subcommand: `agora job get ID --output json`.
#[derive(clap::Args, Debug, Clone)]
pub struct HubArgs {
    /// Base URL of the hub.
    #[arg(
        long,
        global = true,
        env = "AGORA_HUB",
        default_value = "http://127.0.0.1:7600"
    )]
    pub hub: String,
    /// API key, sent as a bearer token (`agora dev` writes one to DATA_DIR/api-key).
    #[arg(long, global = true, env = "AGORA_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Output format: a kubectl-style view, or the API's JSON for scripts.
    #[arg(long, short = 'o', global = true, value_enum, default_value_t = Output::Table)]
    pub output: Output,
    /// Trust only this CA (PEM) for the hub's certificate, instead of the system's roots.
    #[arg(long, global = true, env = "AGORA_HUB_CA", value_name = "FILE")]
    pub hub_ca: Option<PathBuf>,
    /// Allow plain http:// to a hub that is not on this machine (the API key travels in clear).
    #[arg(long, global = true, env = "AGORA_ALLOW_PLAIN_HTTP")]
    pub allow_plain_http: bool,
}

impl HubArgs {
    /// A client for the hub these flags name.
    pub fn client(&self) -> anyhow::Result<HubClient> {
        let ca_pem = match &self.hub_ca {
            Some(path) => Some(
                std::fs::read(path)
                    .with_context(|| format!("reading the hub CA {}", path.display()))?,
            ),
            None => None,
        };
        let trust = HubTrust {
            ca_pem,
            allow_plain_http: self.allow_plain_http,
        };
        Ok(HubClient::with_trust(
            &self.hub,
            self.api_key.clone(),
            &trust,
        )?)
    }
}

/// Output format of the client commands.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    /// Aligned columns (lists) or a describe view (one job).
    Table,
    /// Pretty-printed JSON of the API's wire types.
    Json,
}

/// `agora job …`
#[derive(clap::Subcommand, Debug, Clone)]
pub enum JobCommand {
    /// Submit a job from a ComputeJob manifest or a bare spec (YAML or JSON; `-` reads YAML from
    /// stdin).
    Submit {
        /// The manifest file, or `-` for stdin.
        file: PathBuf,
        /// Makes a retried submission return the job the first one created instead of a second
        /// job (any unique string, e.g. a UUID).
        #[arg(long)]
        idempotency_key: Option<String>,
        /// Follow the job until it finishes; exit non-zero unless it succeeds.
        #[arg(long)]
        wait: bool,
    },
    /// Show one job in detail.
    Get {
        /// The job's id (`job-…`).
        id: String,
    },
    /// List jobs, newest first.
    List {
        /// Only jobs in this phase (Pending, Scheduled, Running, Verifying, Succeeded, Failed,
        /// Cancelled).
        #[arg(long)]
        phase: Option<String>,
        /// Jobs per page.
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..))]
        limit: u32,
        /// Start after this cursor (the `next` of a previous page, as `-o json` shows it).
        #[arg(long, conflicts_with = "all")]
        after: Option<String>,
        /// Follow the pages to the end instead of stopping after the first.
        #[arg(long)]
        all: bool,
    },
    /// Cancel a job; its workers are stopped and it ends Cancelled.
    Cancel {
        /// The job's id (`job-…`).
        id: String,
    },
}

/// `agora node …`
#[derive(clap::Subcommand, Debug, Clone)]
pub enum NodeCommand {
    /// List the GPU nodes the hub knows.
    List {
        /// Nodes per page.
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..))]
        limit: u32,
        /// Start after this cursor (the `next` of a previous page, as `-o json` shows it).
        #[arg(long, conflicts_with = "all")]
        after: Option<String>,
        /// Follow the pages to the end instead of stopping after the first.
        #[arg(long)]
        all: bool,
    },
}

/// Runs one `agora job …` command against the hub.
pub async fn run_job(hub: &HubArgs, cmd: JobCommand) -> anyhow::Result<()> {
    let client = hub.client()?;
    match cmd {
        JobCommand::Submit {
            file,
            idempotency_key,
            wait,
        } => {
            let (body, content_type) = read_job_file(&file).await?;
            let job = client
                .submit(body, content_type, idempotency_key.as_deref())
                .await?;
            if !wait {
                return match hub.output {
                    Output::Table => {
                        print(&format!("{} submitted ({})\n", job.id, job.status.phase))
                    }
                    Output::Json => print_json(&job),
                };
            }
            // With --wait and JSON, stdout carries only the final job so that it stays one JSON
            // document; progress goes to stderr.
            let progress = |line: &str| match hub.output {
                Output::Table => print(&format!("{line}\n")),
                Output::Json => {
                    eprintln!("{line}");
                    Ok(())
                }
            };
            progress(&format!("{} submitted ({})", job.id, job.status.phase))?;
            let done = wait_until_final(&client, job, progress).await?;
            if hub.output == Output::Json {
                print_json(&done)?;
            }
            if done.status.phase == JobPhase::Succeeded {
                Ok(())
            } else {
                Err(anyhow!(
                    "job {} ended {}",
                    done.id,
                    phase_line_detail(&done)
                ))
            }
        }
        JobCommand::Get { id } => {
            let job = client
                .get_job(&id)
                .await
                .map_err(|e| not_found(e, "job", &id))?;
            match hub.output {
                Output::Table => print(&render::job_detail(&job, Timestamp::now())),
                Output::Json => print_json(&job),
            }
        }
        JobCommand::List {
            phase,
            limit,
            after,
            all,
        } => {
            let phase = phase.as_deref().map(parse_phase).transpose()?;
            let client = &client;
            let list = collect_pages(after, all, move |after| async move {
                client.list_jobs(phase, Some(limit), after.as_deref()).await
            })
            .await?;
            match hub.output {
                Output::Json => print_json(&list),
                Output::Table if list.items.is_empty() => {
                    eprintln!("No jobs found.");
                    Ok(())
                }
                Output::Table => {
                    print(&render::jobs_table(&list.items, Timestamp::now()))?;
                    more_hint(&list);
                    Ok(())
                }
            }
        }
        JobCommand::Cancel { id } => {
            let job = client
                .cancel_job(&id)
                .await
                .map_err(|e| not_found(e, "job", &id))?;
            match hub.output {
                Output::Table => print(&format!("{} cancelled ({})\n", job.id, job.status.phase)),
                Output::Json => print_json(&job),
            }
        }
    }
}

/// Runs one `agora node …` command against the hub.
pub async fn run_node(hub: &HubArgs, cmd: NodeCommand) -> anyhow::Result<()> {
    let client = hub.client()?;
    match cmd {
        NodeCommand::List { limit, after, all } => {
            let client = &client;
            let list = collect_pages(after, all, move |after| async move {
                client.list_nodes(Some(limit), after.as_deref()).await
            })
            .await?;
            match hub.output {
                Output::Json => print_json(&list),
                Output::Table if list.items.is_empty() => {
                    eprintln!("No nodes found: start an agent with `agora agent --hub URL`.");
                    Ok(())
                }
                Output::Table => {
                    print(&render::nodes_table(&list.items, Timestamp::now()))?;
                    more_hint(&list);
                    Ok(())
                }
            }
        }
    }
}

/// Reads the job file (or stdin for `-`) and picks the content type the hub should parse it as.
async fn read_job_file(file: &Path) -> anyhow::Result<(Vec<u8>, &'static str)> {
    let file = file.to_path_buf();
    let from_stdin = file.as_os_str() == "-";
    // Reading is blocking I/O; keep it off the async worker threads.
    let bytes = tokio::task::spawn_blocking({
        let file = file.clone();
        move || -> anyhow::Result<Vec<u8>> {
            let mut buf = Vec::new();
            if from_stdin {
                io::stdin()
                    .read_to_end(&mut buf)
                    .context("cannot read the job from stdin")?;
            } else {
                buf = std::fs::read(&file)
                    .with_context(|| format!("cannot read job file {}", file.display()))?;
            }
            Ok(buf)
        }
    })
    .await
    .context("reading the job file was interrupted")??;
    let shown = if from_stdin {
        "stdin".to_string()
    } else {
        file.display().to_string()
    };
    if bytes.iter().all(u8::is_ascii_whitespace) {
        bail!("{shown} is empty: expected a ComputeJob manifest or spec");
    }
    // Stdin has no name to go by; YAML is the safe choice there, since a YAML parser reads JSON too.
    let content_type = if from_stdin {
        CONTENT_TYPE_YAML
    } else {
        content_type_for(&file, &bytes)
    };
    Ok((bytes, content_type))
}

/// The content type of a job file: by extension (`.yaml`/`.yml`, `.json`), and for any other name
/// by its first character, since a JSON document starts with `{` and a manifest in YAML does not.
fn content_type_for(path: &Path, bytes: &[u8]) -> &'static str {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    match ext.as_deref() {
        Some("yaml" | "yml") => CONTENT_TYPE_YAML,
        Some("json") => CONTENT_TYPE_JSON,
        _ => match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
            Some(b'{') => CONTENT_TYPE_JSON,
            _ => CONTENT_TYPE_YAML,
        },
    }
}

/// A phase as typed by a person: exact, or in any letter case (`running`).
fn parse_phase(s: &str) -> anyhow::Result<JobPhase> {
    JobPhase::ALL
        .into_iter()
        .find(|p| p.as_str().eq_ignore_ascii_case(s))
        .ok_or_else(|| {
            let all: Vec<&str> = JobPhase::ALL.iter().map(|p| p.as_str()).collect();
            anyhow!("unknown phase {s:?}: expected one of {}", all.join(", "))
        })
}

/// One page from `after`, or with `all` every page to the end, as one list (`next` is the cursor
/// after the last page fetched).
async fn collect_pages<T, F, Fut>(
    after: Option<String>,
    all: bool,
    mut fetch: F,
) -> anyhow::Result<List<T>>
where
    F: FnMut(Option<String>) -> Fut,
    Fut: Future<Output = Result<List<T>, ClientError>>,
{
    let mut page = fetch(after).await?;
    if !all {
        return Ok(page);
    }
    let mut items = std::mem::take(&mut page.items);
    let mut seen = Vec::new();
    while let Some(cursor) = page.next.take() {
        // A hub that hands back a cursor it already gave would loop forever; stop with an error.
        if seen.contains(&cursor) {
            bail!("the hub returned the page cursor {cursor:?} twice; stopping");
        }
        seen.push(cursor.clone());
        page = fetch(Some(cursor)).await?;
        items.append(&mut page.items);
    }
    Ok(List { items, next: None })
}

/// Polls the job every [`POLL_INTERVAL`] until it reaches a final phase, reporting each phase
/// change through `progress`. Short hub outages are ridden out, API errors are not.
async fn wait_until_final(
    client: &HubClient,
    mut job: Job,
    progress: impl Fn(&str) -> anyhow::Result<()>,
) -> anyhow::Result<Job> {
    let mut outage_since: Option<tokio::time::Instant> = None;
    while !job.status.phase.is_final() {
        tokio::time::sleep(POLL_INTERVAL).await;
        match client.get_job(&job.id).await {
            Ok(now) => {
                outage_since = None;
                if now.status.phase != job.status.phase {
                    progress(&format!("{} {}", now.id, phase_line_detail(&now)))?;
                }
                job = now;
            }
            Err(
                e @ (ClientError::Unreachable { .. }
                | ClientError::Timeout { .. }
                | ClientError::Transport { .. }),
            ) => {
                let since = *outage_since.get_or_insert_with(|| {
                    eprintln!("warning: {e}; still waiting for {}", job.id);
                    tokio::time::Instant::now()
                });
                if since.elapsed() >= WAIT_OUTAGE_TOLERANCE {
                    return Err(anyhow!(e).context(format!(
                        "gave up waiting for job {} (last seen {})",
                        job.id, job.status.phase
                    )));
                }
            }
            Err(e) => return Err(anyhow!(e).context(format!("while waiting for job {}", job.id))),
        }
    }
    Ok(job)
}

/// `Failed (NodeLost): node gn-1 stopped sending heartbeats` — the phase with its reason and
/// message when the hub gave them.
fn phase_line_detail(job: &Job) -> String {
    let mut s = job.status.phase.to_string();
    if let Some(reason) = &job.status.reason {
        s.push_str(&format!(" ({reason})"));
    }
    if let Some(message) = &job.status.message {
        s.push_str(&format!(": {message}"));
    }
    s
}

/// A 404 on a named job reads better as "no job X" than as the hub's generic text.
fn not_found(err: ClientError, what: &str, id: &str) -> anyhow::Error {
    match &err {
        ClientError::Api(api) if api.is_not_found() => {
            anyhow!(err).context(format!("no {what} {id:?} on this hub"))
        }
        _ => anyhow!(err),
    }
}

/// Tells the reader on stderr that the table is one page of several.
fn more_hint<T>(list: &List<T>) {
    if let Some(next) = &list.next {
        eprintln!("(more on the next page: --after {next}, or --all for every page)");
    }
}

fn print_json<T: Serialize>(value: &T) -> anyhow::Result<()> {
    let mut text = serde_json::to_string_pretty(value).context("cannot encode the answer")?;
    text.push('\n');
    print(&text)
}

/// Writes to stdout; a closed pipe (`agora job list | head`) ends the output quietly instead of
/// panicking as `print!` would.
fn print(text: &str) -> anyhow::Result<()> {
    let mut out = io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => Err(e).context("cannot write to stdout"),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::*;

    /// The shape in which the binary mounts these commands.
    #[derive(clap::Parser, Debug)]
    struct Cli {
        #[command(subcommand)]
        cmd: Top,
    }

    #[derive(clap::Subcommand, Debug)]
    enum Top {
        Job {
            #[command(flatten)]
            hub: HubArgs,
            #[command(subcommand)]
            cmd: JobCommand,
        },
        Node {
            #[command(flatten)]
            hub: HubArgs,
            #[command(subcommand)]
            cmd: NodeCommand,
        },
    }

    fn parse(args: &[&str]) -> Top {
        Cli::try_parse_from(std::iter::once("agora").chain(args.iter().copied()))
            .unwrap()
            .cmd
    }

    #[test]
    fn the_cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn hub_flags_work_after_the_subcommand() {
        let Top::Job { hub, cmd } = parse(&[
            "job",
            "get",
            "job-1",
            "--output",
            "json",
            "--hub",
            "http://h:1",
            "--api-key",
            "k",
        ]) else {
            panic!("not a job command");
        };
        assert_eq!(hub.output, Output::Json);
        assert_eq!(hub.hub, "http://h:1");
        assert_eq!(hub.api_key.as_deref(), Some("k"));
        assert!(matches!(cmd, JobCommand::Get { id } if id == "job-1"));

        let Top::Node { hub, cmd } = parse(&["node", "-o", "json", "list", "--all"]) else {
            panic!("not a node command");
        };
        assert_eq!(hub.output, Output::Json);
        assert!(matches!(
            cmd,
            NodeCommand::List {
                all: true,
                limit: 50,
                after: None
            }
        ));
    }

    #[test]
    fn list_takes_a_phase_limit_and_all() {
        let Top::Job { cmd, .. } =
            parse(&["job", "list", "--phase", "Running", "--limit", "5", "--all"])
        else {
            panic!("not a job command");
        };
        assert!(matches!(
            cmd,
            JobCommand::List { phase: Some(ref p), limit: 5, all: true, after: None } if p == "Running"
        ));
        let zero = Cli::try_parse_from(["agora", "job", "list", "--limit", "0"]);
        assert!(zero.is_err(), "a zero page size is refused");
        let both = Cli::try_parse_from(["agora", "job", "list", "--all", "--after", "c"]);
        assert!(both.is_err(), "--after and --all conflict");
    }

    #[test]
    fn submit_takes_a_file_a_key_and_wait() {
        let Top::Job { cmd, .. } =
            parse(&["job", "submit", "-", "--idempotency-key", "abc", "--wait"])
        else {
            panic!("not a job command");
        };
        assert!(matches!(
            cmd,
            JobCommand::Submit { ref file, idempotency_key: Some(ref k), wait: true }
                if file.as_os_str() == "-" && k == "abc"
        ));
    }

    #[test]
    fn content_type_follows_the_extension_then_the_content() {
        assert_eq!(
            content_type_for(Path::new("job.yaml"), b"{}"),
            CONTENT_TYPE_YAML
        );
        assert_eq!(
            content_type_for(Path::new("job.YML"), b"spec:"),
            CONTENT_TYPE_YAML
        );
        assert_eq!(
            content_type_for(Path::new("job.json"), b"{}"),
            CONTENT_TYPE_JSON
        );
        assert_eq!(
            content_type_for(Path::new("job.txt"), b"\n  {\"spec\":{}}"),
            CONTENT_TYPE_JSON
        );
        assert_eq!(
            content_type_for(Path::new("job"), b"apiVersion: agora.dev/v1alpha1"),
            CONTENT_TYPE_YAML
        );
    }

    #[tokio::test]
    async fn job_files_are_read_with_their_content_type() {
        let dir = tempfile::tempdir().unwrap();
        let json = dir.path().join("job.json");
        std::fs::write(&json, br#"{"kind":"Batch"}"#).unwrap();
        let (bytes, ct) = read_job_file(&json).await.unwrap();
        assert_eq!(
            (bytes.as_slice(), ct),
            (&br#"{"kind":"Batch"}"#[..], CONTENT_TYPE_JSON)
        );

        let empty = dir.path().join("empty.yaml");
        std::fs::write(&empty, b"\n  \n").unwrap();
        let err = read_job_file(&empty).await.unwrap_err().to_string();
        assert!(
            err.ends_with("is empty: expected a ComputeJob manifest or spec"),
            "{err}"
        );

        let missing = dir.path().join("missing.yaml");
        let err = read_job_file(&missing).await.unwrap_err().to_string();
        assert!(err.starts_with("cannot read job file "), "{err}");
    }

    #[test]
    fn phases_are_matched_in_any_case() {
        assert_eq!(parse_phase("Running").unwrap(), JobPhase::Running);
        assert_eq!(parse_phase("succeeded").unwrap(), JobPhase::Succeeded);
        let err = parse_phase("Done").unwrap_err().to_string();
        assert_eq!(
            err,
            "unknown phase \"Done\": expected one of Pending, Scheduled, Running, Verifying, \
             Succeeded, Failed, Cancelled"
        );
    }

    #[tokio::test]
    async fn all_pages_are_followed_and_joined() {
        let pages = |after: Option<String>| async move {
            Ok(match after.as_deref() {
                None => List {
                    items: vec![1, 2],
                    next: Some("c1".into()),
                },
                Some("c1") => List {
                    items: vec![3],
                    next: Some("c2".into()),
                },
                _ => List {
                    items: vec![4],
                    next: None,
                },
            })
        };
        let all = collect_pages(None, true, pages).await.unwrap();
        assert_eq!(
            all,
            List {
                items: vec![1, 2, 3, 4],
                next: None
            }
        );
        let one = collect_pages(None, false, pages).await.unwrap();
        assert_eq!(
            one,
            List {
                items: vec![1, 2],
                next: Some("c1".into())
            }
        );
        let from = collect_pages(Some("c1".into()), false, pages)
            .await
            .unwrap();
        assert_eq!(from.items, vec![3]);
    }

    #[tokio::test]
    async fn a_repeating_cursor_stops_with_an_error() {
        let looping = |_after: Option<String>| async move {
            Ok::<_, ClientError>(List {
                items: vec![1],
                next: Some("same".into()),
            })
        };
        let err = collect_pages(None, true, looping)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("cursor \"same\" twice"), "{err}");
    }
}
