//! The agent's on-disk state (`--state-dir`): what must survive the agent's own restart.
//!
//! - [`Outbox`]: reports for the hub that must not be lost: final status reports, usage
//!   receipts ([`crate::receipts`]) and checkpoint reports. Each record is one JSON file, written
//!   to a temporary name, fsync'd, renamed into place and the directory fsync'd, so a crash leaves
//!   either the whole record or none. A record is removed once the hub acknowledged it
//!   (`409 stale_report` counts: the hub has it). Records are numbered in the order they were
//!   written, and a restarted agent delivers what it finds in that order, which keeps each
//!   assignment's reports in their `seq` order.
//! - [`Started`]: every assignment the agent started, written (fsync'd) before the work starts and
//!   removed once its final report was acknowledged, with the last report number used on it. A
//!   restarted agent that is sent one of these again knows it ran it before, and must not run it a
//!   second time; its next report continues the numbering, so the hub does not take it for a
//!   replay.
//!
//! The files are small and written a few times per assignment, synchronously: an fsync of a small
//! file is cheap next to the network round trip that follows each write.

use std::{
    collections::{HashMap, HashSet},
    fs,
    io::Write,
    path::{Path, PathBuf},
    sync::{Mutex, PoisonError},
};

use anyhow::Context;
use serde::{Deserialize, Serialize};
use tracing::warn;

use crate::executor::WorkerId;

/// The longest assignment id the agent keeps state for; ids name files.
const MAX_ID_LEN: usize = 128;

/// Checks that an id from the hub can name a file: letters, digits, `-` and `_`, at most
/// [`MAX_ID_LEN`] bytes (the hub's ids are `asg-…`). Anything else could reach outside the state
/// directory.
pub fn check_id(id: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        !id.is_empty()
            && id.len() <= MAX_ID_LEN
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
        "assignment id {id:?} is not 1 to {MAX_ID_LEN} letters, digits, `-` or `_`"
    );
    Ok(())
}

/// Creates `dir` (and its parents) if missing, readable by the agent's user only.
pub fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))
}

/// Writes `bytes` to `path` so that after a crash the file holds either them or what it held
/// before: a temporary file, fsync'd, renamed over `path`, and the directory fsync'd.
fn write_durably(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut file = fs::File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    fs::rename(&tmp, path)?;
    sync_dir(path)
}

/// Removes `path` durably (a missing file is not an error).
fn remove_durably(path: &Path) -> std::io::Result<()> {
    match fs::remove_file(path) {
        Ok(()) => sync_dir(path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Fsyncs the directory holding `path`, so a rename or removal in it survives a crash.
fn sync_dir(path: &Path) -> std::io::Result<()> {
    match path.parent() {
        #[cfg(unix)]
        Some(dir) => fs::File::open(dir)?.sync_all(),
        _ => Ok(()),
    }
}

/// JSON files in `dir` by file stem, skipping temporaries a crash left behind.
fn json_files(dir: &Path) -> anyhow::Result<Vec<(String, PathBuf)>> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "json")
            && let Some(stem) = path.file_stem().and_then(|s| s.to_str())
        {
            files.push((stem.to_string(), path));
        } else if path.extension().is_some_and(|e| e == "tmp") {
            let _ = fs::remove_file(&path);
        }
    }
    files.sort();
    Ok(files)
}

/// One report waiting for the hub's acknowledgement.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    /// The record's place in the outbox: delivery goes in this order.
    pub number: u64,
    /// The assignment the report is about.
    pub assignment: String,
    /// The report's `seq` on its assignment.
    pub seq: u64,
    /// What the report is, which says where it goes (`status`: a status report; `receipt`: a
    /// usage receipt; `checkpoint`: a checkpoint report).
    pub kind: String,
    /// The report as the hub takes it.
    pub body: serde_json::Value,
}

/// The kind of a record holding a [`crds::agent::StatusReport`].
pub const STATUS: &str = "status";

/// The kind of a record holding a [`crds::agent::CheckpointReport`].
pub const CHECKPOINT: &str = "checkpoint";

/// Reports kept on disk until the hub acknowledges them (see the module docs).
#[derive(Debug)]
pub struct Outbox {
    dir: PathBuf,
    next: Mutex<u64>,
}

impl Outbox {
    /// Opens the outbox in `dir` (created if missing) and returns what it holds, in delivery
    /// order. A record that cannot be read is reported and left where it is.
    pub fn open(dir: &Path) -> anyhow::Result<(Self, Vec<Record>)> {
        create_private_dir(dir)?;
        let mut records = Vec::new();
        let mut next = 1;
        for (stem, path) in json_files(dir)? {
            let Ok(number) = stem.parse::<u64>() else {
                warn!(file = %path.display(), "not an outbox record; ignored");
                continue;
            };
            next = next.max(number + 1);
            match fs::read(&path)
                .map_err(anyhow::Error::from)
                .and_then(|b| Ok(serde_json::from_slice::<Record>(&b)?))
            {
                Ok(record) => records.push(record),
                Err(e) => {
                    warn!(file = %path.display(), error = %e, "cannot read an outbox record; left in place")
                }
            }
        }
        let outbox = Self {
            dir: dir.to_path_buf(),
            next: Mutex::new(next),
        };
        Ok((outbox, records))
    }

    /// Writes a record durably and returns it; once this returns, an agent restart still delivers
    /// it.
    pub fn push(
        &self,
        assignment: &str,
        seq: u64,
        kind: &str,
        body: &impl Serialize,
    ) -> anyhow::Result<Record> {
        let mut next = self.next.lock().unwrap_or_else(PoisonError::into_inner);
        let record = Record {
            number: *next,
            assignment: assignment.to_string(),
            seq,
            kind: kind.to_string(),
            body: serde_json::to_value(body)?,
        };
        let path = self.path(record.number);
        write_durably(&path, &serde_json::to_vec(&record)?)
            .with_context(|| format!("writing {}", path.display()))?;
        *next += 1;
        Ok(record)
    }

    /// Removes a record the hub acknowledged.
    pub fn remove(&self, record: &Record) -> anyhow::Result<()> {
        let path = self.path(record.number);
        remove_durably(&path).with_context(|| format!("removing {}", path.display()))
    }

    fn path(&self, number: u64) -> PathBuf {
        // Zero-padded, so that file names sort in delivery order.
        self.dir.join(format!("{number:020}.json"))
    }
}

/// What is kept of one started assignment.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
struct StartedEntry {
    /// The last report number used on the assignment.
    last_seq: u64,
    /// Which worker it is, to find what is left of it after a restart.
    #[serde(default)]
    worker: WorkerId,
}

/// The assignments this agent started and has not seen acknowledged as ended (see the module
/// docs).
#[derive(Debug)]
pub struct Started {
    dir: PathBuf,
    entries: Mutex<HashMap<String, StartedEntry>>,
    /// Those a previous run of the agent started: they must not run again.
    previous: Mutex<HashSet<String>>,
}

impl Started {
    /// Opens the journal in `dir` (created if missing); what it holds was started by a previous
    /// run of the agent.
    pub fn open(dir: &Path) -> anyhow::Result<Self> {
        create_private_dir(dir)?;
        let mut entries = HashMap::new();
        for (id, path) in json_files(dir)? {
            let entry = fs::read(&path)
                .map_err(anyhow::Error::from)
                .and_then(|b| Ok(serde_json::from_slice::<StartedEntry>(&b)?));
            match entry {
                Ok(entry) => {
                    entries.insert(id, entry);
                }
                // The file exists, so the assignment was started; its numbering is lost, and
                // reports continue from a number far above any an assignment reaches.
                Err(e) => {
                    warn!(file = %path.display(), error = %e, "cannot read a started assignment's record");
                    let entry = StartedEntry {
                        last_seq: 1 << 32,
                        worker: WorkerId::default(),
                    };
                    entries.insert(id, entry);
                }
            }
        }
        let previous = entries.keys().cloned().collect();
        Ok(Self {
            dir: dir.to_path_buf(),
            entries: Mutex::new(entries),
            previous: Mutex::new(previous),
        })
    }

    /// Whether a previous run of the agent started `id`.
    pub fn started_before(&self, id: &str) -> bool {
        self.previous
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(id)
    }

    /// Those of the assignments a previous run of the agent started that are not finished yet,
    /// with the worker each is.
    pub fn previous(&self) -> Vec<(String, WorkerId)> {
        let previous = self.previous.lock().unwrap_or_else(PoisonError::into_inner);
        let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        let mut list: Vec<_> = previous
            .iter()
            .map(|id| {
                let worker = entries
                    .get(id)
                    .map(|e| e.worker.clone())
                    .unwrap_or_default();
                (id.clone(), worker)
            })
            .collect();
        list.sort_by(|a, b| a.0.cmp(&b.0));
        list
    }

    /// Records durably that `id` (worker `worker`) is being started; call before starting
    /// anything of it.
    pub fn record(&self, id: &str, worker: WorkerId) -> anyhow::Result<()> {
        check_id(id)?;
        let entry = StartedEntry {
            last_seq: 0,
            worker,
        };
        self.write(id, &entry)?;
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id.to_string(), entry);
        Ok(())
    }

    /// The number of the next new report on `id`, recorded durably before it is returned, so
    /// that no number is ever used twice on an assignment, across restarts too.
    pub fn next_seq(&self, id: &str) -> anyhow::Result<u64> {
        check_id(id)?;
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        let mut entry = entries.get(id).cloned().unwrap_or_default();
        entry.last_seq += 1;
        self.write(id, &entry)?;
        let seq = entry.last_seq;
        entries.insert(id.to_string(), entry);
        Ok(seq)
    }

    /// Forgets `id`: its final report was acknowledged (or the hub no longer wants it).
    pub fn finish(&self, id: &str) -> anyhow::Result<()> {
        check_id(id)?;
        remove_durably(&self.path(id))
            .with_context(|| format!("removing {}", self.path(id).display()))?;
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(id);
        self.previous
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(id);
        Ok(())
    }

    fn write(&self, id: &str, entry: &StartedEntry) -> anyhow::Result<()> {
        let path = self.path(id);
        write_durably(&path, &serde_json::to_vec(entry)?)
            .with_context(|| format!("writing {}", path.display()))
    }

    fn path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn worker() -> WorkerId {
        WorkerId {
            job: "job-1".into(),
            attempt: 2,
            rank: 1,
        }
    }

    #[test]
    fn records_survive_a_reopen_in_order_until_removed() {
        let dir = tempfile::tempdir().unwrap();
        let (outbox, pending) = Outbox::open(dir.path()).unwrap();
        assert!(pending.is_empty());
        let first = outbox
            .push("asg-b", 2, STATUS, &serde_json::json!({"seq": 2}))
            .unwrap();
        let second = outbox
            .push("asg-a", 3, STATUS, &serde_json::json!({"seq": 3}))
            .unwrap();
        let third = outbox
            .push("asg-b", 3, STATUS, &serde_json::json!({"seq": 3}))
            .unwrap();
        outbox.remove(&second).unwrap();
        drop(outbox);

        let (outbox, pending) = Outbox::open(dir.path()).unwrap();
        assert_eq!(pending, [first.clone(), third.clone()]);
        // Numbering continues after the highest on disk.
        let fourth = outbox.push("asg-c", 1, STATUS, &1).unwrap();
        assert_eq!(fourth.number, third.number + 1);
        outbox.remove(&first).unwrap();
        outbox.remove(&third).unwrap();
        outbox.remove(&fourth).unwrap();
        outbox.remove(&fourth).unwrap();
        let (_, pending) = Outbox::open(dir.path()).unwrap();
        assert!(pending.is_empty());
    }

    #[test]
    fn a_broken_record_is_left_alone_and_the_rest_delivered() {
        let dir = tempfile::tempdir().unwrap();
        let (outbox, _) = Outbox::open(dir.path()).unwrap();
        let good = outbox.push("asg-a", 2, STATUS, &2).unwrap();
        fs::write(dir.path().join("00000000000000000007.json"), b"{torn").unwrap();
        fs::write(dir.path().join("00000000000000000008.json.tmp"), b"{").unwrap();
        drop(outbox);
        let (outbox, pending) = Outbox::open(dir.path()).unwrap();
        assert_eq!(pending, [good]);
        assert!(dir.path().join("00000000000000000007.json").exists());
        assert!(!dir.path().join("00000000000000000008.json.tmp").exists());
        assert_eq!(outbox.push("asg-a", 3, STATUS, &3).unwrap().number, 8);
    }

    #[test]
    fn report_numbers_continue_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let started = Started::open(dir.path()).unwrap();
        started.record("asg-1", worker()).unwrap();
        started.record("asg-2", worker()).unwrap();
        assert_eq!(started.next_seq("asg-1").unwrap(), 1);
        assert_eq!(started.next_seq("asg-1").unwrap(), 2);
        started.finish("asg-2").unwrap();
        assert!(!started.started_before("asg-1"), "started by this run");
        drop(started);

        let started = Started::open(dir.path()).unwrap();
        assert!(started.started_before("asg-1"));
        assert!(!started.started_before("asg-2"), "finished");
        assert_eq!(started.previous(), [("asg-1".to_string(), worker())]);
        assert_eq!(started.next_seq("asg-1").unwrap(), 3);
        started.finish("asg-1").unwrap();
        assert!(!started.started_before("asg-1"));
        let started = Started::open(dir.path()).unwrap();
        assert!(!started.started_before("asg-1"));
    }

    #[test]
    fn ids_that_could_leave_the_state_directory_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let started = Started::open(dir.path()).unwrap();
        for bad in ["", "../etc/passwd", "a/b", "asg.1", &"a".repeat(129)] {
            let err = started.record(bad, worker()).unwrap_err().to_string();
            assert!(err.contains("assignment id"), "{bad}: {err}");
        }
        assert!(check_id("asg-01HZX_9").is_ok());
    }

    #[cfg(unix)]
    #[test]
    fn the_state_directory_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state/outbox");
        Outbox::open(&state).unwrap();
        for dir in [dir.path().join("state"), state] {
            let mode = fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o700, "{}", dir.display());
        }
    }
}
