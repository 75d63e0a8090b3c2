//! How a running workload tells its node agent it saved a checkpoint: one line on its stdout or
//! stderr, the prefix `AGORA_CHECKPOINT`, one space, and a JSON object with the checkpoint's
//! `uri` and `step`:
//!
//! ```text
//! AGORA_CHECKPOINT {"uri":"s3://bucket/run/step-1200","step":1200}
//! ```
//!
//! A log line is the one channel every executor already has (a child's pipes, a Pod's log), and
//! any framework can print one; the agent does not read the checkpoint, only hands its URI to the
//! hub, which gives it to a retried attempt as `AGORA_CHECKPOINT_URI` (`docs/workers.md`).
//!
//! Output arrives in chunks that split lines anywhere, so a [`Scanner`] keeps the unfinished line
//! between chunks, bounded to [`MAX_LINE_BYTES`]: a longer line is skipped to its end (a marker is
//! far shorter). A malformed marker is the workload's mistake, never the worker's failure: it is
//! logged (the first [`MAX_WARNINGS`] of a worker, so a loop printing bad markers cannot flood
//! the agent's log) and ignored. Only the newest checkpoint matters, so the [`CheckpointSink`] is
//! a `watch` channel that keeps the one with the highest step, as the hub does.

use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

use serde::Deserialize;
use tokio::sync::watch;
use tracing::{info, warn};

/// What starts a marker line; the JSON object follows after one space.
pub const PREFIX: &str = "AGORA_CHECKPOINT";

/// The longest line the scanner keeps; a longer one is skipped to its end.
pub const MAX_LINE_BYTES: usize = 4096;

/// The longest checkpoint URI, in bytes (what the hub accepts).
pub const MAX_URI_BYTES: usize = 2048;

/// The highest step: the hub stores steps as signed 64-bit integers.
pub const MAX_STEP: u64 = i64::MAX as u64;

/// How many malformed markers of one worker are logged; later ones are ignored silently.
pub const MAX_WARNINGS: usize = 5;

/// A checkpoint a workload reported.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    /// Where the checkpoint is stored (`s3://…`, `file:///…`).
    pub uri: String,
    /// The step it was taken at.
    pub step: u64,
}

/// Why a marker line was not taken.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MarkerError {
    /// No JSON object after the prefix, or not the one expected.
    #[error("expected `{PREFIX} {{\"uri\":\"…\",\"step\":N}}`: {0}")]
    Invalid(String),
    /// `uri` is empty or longer than [`MAX_URI_BYTES`].
    #[error("`uri` must be 1 to {MAX_URI_BYTES} bytes, not {0}")]
    UriLength(usize),
    /// `uri` holds a control character (a newline, a tab, …).
    #[error("`uri` must not contain control characters")]
    UriControl,
    /// `step` is above [`MAX_STEP`].
    #[error("`step` must be at most {MAX_STEP}, not {0}")]
    Step(u64),
    /// The line is longer than [`MAX_LINE_BYTES`].
    #[error("the marker line is longer than {MAX_LINE_BYTES} bytes")]
    TooLong,
}

/// Reads one line (without its `\n`): `None` when it is not a marker (ordinary output), else the
/// checkpoint or why the marker is malformed.
///
/// A marker starts the line with [`PREFIX`] followed by a space or tab, or nothing: a line such as
/// `AGORA_CHECKPOINT_URI=…` (a workload printing its environment) is not one.
pub fn parse_line(line: &[u8]) -> Option<Result<Checkpoint, MarkerError>> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let rest = after_prefix(line)?;
    Some(parse_object(rest.trim_ascii()))
}

/// What follows the prefix of a line that starts like a marker.
fn after_prefix(line: &[u8]) -> Option<&[u8]> {
    let rest = line.strip_prefix(PREFIX.as_bytes())?;
    (rest.is_empty() || rest.starts_with(b" ") || rest.starts_with(b"\t")).then_some(rest)
}

fn parse_object(json: &[u8]) -> Result<Checkpoint, MarkerError> {
    if json.is_empty() {
        return Err(MarkerError::Invalid("nothing follows the prefix".into()));
    }
    let checkpoint: Checkpoint =
        serde_json::from_slice(json).map_err(|e| MarkerError::Invalid(e.to_string()))?;
    if checkpoint.uri.is_empty() || checkpoint.uri.len() > MAX_URI_BYTES {
        return Err(MarkerError::UriLength(checkpoint.uri.len()));
    }
    if checkpoint.uri.chars().any(char::is_control) {
        return Err(MarkerError::UriControl);
    }
    if checkpoint.step > MAX_STEP {
        return Err(MarkerError::Step(checkpoint.step));
    }
    Ok(checkpoint)
}

/// Splits a stream of output chunks into lines and reads the markers among them.
#[derive(Debug, Default)]
pub struct Scanner {
    /// The line read so far (at most [`MAX_LINE_BYTES`]).
    line: Vec<u8>,
    /// Inside a line longer than [`MAX_LINE_BYTES`], skipped to its end.
    skipping: bool,
}

impl Scanner {
    /// Reads `chunk`, returning the markers of the lines it completes, in order.
    pub fn feed(&mut self, chunk: &[u8]) -> Vec<Result<Checkpoint, MarkerError>> {
        let mut found = Vec::new();
        let mut rest = chunk;
        while !rest.is_empty() {
            let (part, ended) = match rest.iter().position(|b| *b == b'\n') {
                Some(end) => (&rest[..end], true),
                None => (rest, false),
            };
            rest = if ended { &rest[part.len() + 1..] } else { &[] };
            if !self.skipping {
                if self.line.len() + part.len() > MAX_LINE_BYTES {
                    // Said once per line, and only when it was meant as a marker.
                    if is_marker_start(&self.line, part) {
                        found.push(Err(MarkerError::TooLong));
                    }
                    self.line.clear();
                    self.skipping = true;
                } else {
                    self.line.extend_from_slice(part);
                }
            }
            if ended {
                if !self.skipping {
                    found.extend(parse_line(&self.line));
                }
                self.line.clear();
                self.skipping = false;
            }
        }
        found
    }

    /// The output ended: reads the last line, which had no `\n`.
    pub fn finish(&mut self) -> Option<Result<Checkpoint, MarkerError>> {
        let line = std::mem::take(&mut self.line);
        let skipping = std::mem::replace(&mut self.skipping, false);
        if skipping { None } else { parse_line(&line) }
    }
}

/// Whether a line starting with `kept` then `next` starts like a marker.
fn is_marker_start(kept: &[u8], next: &[u8]) -> bool {
    let head: Vec<u8> = kept
        .iter()
        .chain(next)
        .take(PREFIX.len() + 1)
        .copied()
        .collect();
    after_prefix(&head).is_some()
}

/// Where executors put the checkpoints their workload reports; the worker's delivery reads the
/// other end ([`CheckpointSink::channel`]). Cheap to clone: every pipe of a worker writes to the
/// same sink, and its warnings count together.
#[derive(Clone, Debug)]
pub struct CheckpointSink {
    latest: Arc<watch::Sender<Option<Checkpoint>>>,
    warnings: Arc<AtomicUsize>,
}

impl CheckpointSink {
    /// A sink and the receiver of the newest checkpoint put into it.
    pub fn channel() -> (Self, watch::Receiver<Option<Checkpoint>>) {
        let (latest, receiver) = watch::channel(None);
        let sink = Self {
            latest: Arc::new(latest),
            warnings: Arc::new(AtomicUsize::new(0)),
        };
        (sink, receiver)
    }

    /// A scanner of one output stream that puts what it finds into this sink.
    pub fn scanner(&self) -> SinkScanner {
        SinkScanner {
            scanner: Scanner::default(),
            sink: self.clone(),
        }
    }

    /// Takes `checkpoint` as the newest, unless the sink has one at the same or a later step
    /// already (the hub would keep that one too).
    fn put(&self, checkpoint: Checkpoint) {
        let step = checkpoint.step;
        let uri = checkpoint.uri.clone();
        let taken = self.latest.send_if_modified(|latest| match latest {
            Some(kept) if kept.step >= checkpoint.step => false,
            _ => {
                *latest = Some(checkpoint);
                true
            }
        });
        if taken {
            info!(step, %uri, "the workload reported a checkpoint");
        } else {
            info!(step, %uri, "the workload reported a checkpoint not past its latest; ignored");
        }
    }

    /// Logs a malformed marker, unless the worker has had [`MAX_WARNINGS`] already.
    fn warn(&self, error: &MarkerError) {
        let count = self.warnings.fetch_add(1, Ordering::Relaxed) + 1;
        if count <= MAX_WARNINGS {
            let more = if count == MAX_WARNINGS {
                " (further malformed markers of this worker are not logged)"
            } else {
                ""
            };
            warn!(%error, "the workload printed a malformed {PREFIX} line; ignored{more}");
        }
    }

    fn take(&self, found: Result<Checkpoint, MarkerError>) {
        match found {
            Ok(checkpoint) => self.put(checkpoint),
            Err(e) => self.warn(&e),
        }
    }
}

/// A [`Scanner`] of one output stream, bound to a sink.
#[derive(Debug)]
pub struct SinkScanner {
    scanner: Scanner,
    sink: CheckpointSink,
}

impl SinkScanner {
    /// Reads a chunk of output.
    pub fn feed(&mut self, chunk: &[u8]) {
        for found in self.scanner.feed(chunk) {
            self.sink.take(found);
        }
    }

    /// The output ended.
    pub fn finish(&mut self) {
        if let Some(found) = self.scanner.finish() {
            self.sink.take(found);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checkpoint(uri: &str, step: u64) -> Checkpoint {
        Checkpoint {
            uri: uri.into(),
            step,
        }
    }

    #[test]
    fn reads_the_documented_marker() {
        assert_eq!(
            parse_line(br#"AGORA_CHECKPOINT {"uri":"s3://bucket/run/step-1200","step":1200}"#),
            Some(Ok(checkpoint("s3://bucket/run/step-1200", 1200)))
        );
        // A CRLF line, and spaces around the object, are fine.
        assert_eq!(
            parse_line(b"AGORA_CHECKPOINT  { \"step\": 0, \"uri\": \"file:///c\" } \r"),
            Some(Ok(checkpoint("file:///c", 0)))
        );
    }

    #[test]
    fn ordinary_output_is_not_a_marker() {
        for line in [
            &b"step 1200 saved"[..],
            b"",
            b"AGORA_CHECKPOINT_URI=s3://bucket/run/step-1200",
            b"AGORA_CHECKPOINTS {\"uri\":\"x\",\"step\":1}",
            b" AGORA_CHECKPOINT {\"uri\":\"x\",\"step\":1}",
            b"INFO AGORA_CHECKPOINT {\"uri\":\"x\",\"step\":1}",
            &[0xff, 0xfe, b'\n'],
        ] {
            assert_eq!(parse_line(line), None, "{}", String::from_utf8_lossy(line));
        }
    }

    #[test]
    fn malformed_markers_say_what_is_wrong() {
        let error = |line: &str| match parse_line(line.as_bytes()) {
            Some(Err(e)) => e.to_string(),
            other => panic!("{line}: {other:?}"),
        };
        assert!(error("AGORA_CHECKPOINT").contains("nothing follows"));
        assert!(error("AGORA_CHECKPOINT s3://x").contains("expected"));
        assert!(error(r#"AGORA_CHECKPOINT {"uri":"s3://x"}"#).contains("missing field `step`"));
        assert!(error(r#"AGORA_CHECKPOINT {"step":3}"#).contains("missing field `uri`"));
        assert!(
            error(r#"AGORA_CHECKPOINT {"uri":"s3://x","step":3,"stpe":4}"#)
                .contains("unknown field `stpe`")
        );
        assert!(error(r#"AGORA_CHECKPOINT {"uri":"s3://x","step":-1}"#).contains("-1"));
        assert!(error(r#"AGORA_CHECKPOINT {"uri":"s3://x","step":"12"}"#).contains("invalid type"));
        assert_eq!(
            error(r#"AGORA_CHECKPOINT {"uri":"","step":3}"#),
            "`uri` must be 1 to 2048 bytes, not 0"
        );
        let long = format!(
            r#"AGORA_CHECKPOINT {{"uri":"s3://{}","step":3}}"#,
            "a".repeat(2044)
        );
        assert_eq!(error(&long), "`uri` must be 1 to 2048 bytes, not 2049");
        let longest = format!(
            r#"AGORA_CHECKPOINT {{"uri":"s3://{}","step":3}}"#,
            "a".repeat(2043)
        );
        assert!(matches!(parse_line(longest.as_bytes()), Some(Ok(_))));
        for control in [
            r"s3://a\nb",
            r"s3://a\tb",
            r"s3://a\u0000b",
            r"s3://a\u007fb",
        ] {
            let line = format!(r#"AGORA_CHECKPOINT {{"uri":"{control}","step":3}}"#);
            assert_eq!(
                error(&line),
                "`uri` must not contain control characters",
                "{line}"
            );
        }
    }

    #[test]
    fn the_step_is_bounded_by_what_the_hub_stores() {
        let at = |step: u64| format!(r#"AGORA_CHECKPOINT {{"uri":"s3://x","step":{step}}}"#);
        assert_eq!(
            parse_line(at(MAX_STEP).as_bytes()),
            Some(Ok(checkpoint("s3://x", MAX_STEP)))
        );
        assert_eq!(
            parse_line(at(MAX_STEP + 1).as_bytes()),
            Some(Err(MarkerError::Step(MAX_STEP + 1)))
        );
        assert!(matches!(
            parse_line(
                format!(
                    r#"AGORA_CHECKPOINT {{"uri":"s3://x","step":1{}}}"#,
                    u64::MAX
                )
                .as_bytes()
            ),
            Some(Err(MarkerError::Invalid(_)))
        ));
    }

    #[test]
    fn a_marker_split_across_chunks_is_found() {
        let output = b"epoch 1\nAGORA_CHECKPOINT {\"uri\":\"s3://b/step-1\",\"step\":1}\nepoch 2\n\
                       AGORA_CHECKPOINT {\"uri\":\"s3://b/step-2\",\"step\":2}";
        // Every way of cutting the output in three finds both markers, the last one at the end.
        for first in 0..output.len() {
            for second in (first..output.len()).step_by(7) {
                let mut scanner = Scanner::default();
                let mut found = scanner.feed(&output[..first]);
                found.extend(scanner.feed(&output[first..second]));
                found.extend(scanner.feed(&output[second..]));
                found.extend(scanner.finish());
                assert_eq!(
                    found,
                    [
                        Ok(checkpoint("s3://b/step-1", 1)),
                        Ok(checkpoint("s3://b/step-2", 2))
                    ],
                    "cut at {first} and {second}"
                );
            }
        }
    }

    #[test]
    fn an_over_long_line_is_skipped_to_its_end() {
        let mut scanner = Scanner::default();
        let noise = vec![b'x'; MAX_LINE_BYTES * 3];
        assert!(scanner.feed(&noise).is_empty());
        assert!(scanner.feed(&noise[..10]).is_empty());
        // The tail of the long line does not read as a line of its own, even if it looks like one.
        assert!(
            scanner
                .feed(b"AGORA_CHECKPOINT {\"uri\":\"s3://no\",\"step\":9}\n")
                .is_empty()
        );
        assert_eq!(
            scanner.feed(b"AGORA_CHECKPOINT {\"uri\":\"s3://yes\",\"step\":10}\n"),
            [Ok(checkpoint("s3://yes", 10))]
        );

        // A marker too long to keep is reported, once, and the next line read normally.
        let long = format!(
            "AGORA_CHECKPOINT {{\"uri\":\"s3://{}\",\"step\":1}}\n",
            "a".repeat(MAX_LINE_BYTES)
        );
        let (head, tail) = long.as_bytes().split_at(10);
        assert!(scanner.feed(head).is_empty());
        assert_eq!(scanner.feed(tail), [Err(MarkerError::TooLong)]);
        assert_eq!(
            scanner.feed(b"AGORA_CHECKPOINT {\"uri\":\"s3://c\",\"step\":11}"),
            []
        );
        assert_eq!(scanner.finish(), Some(Ok(checkpoint("s3://c", 11))));
        assert_eq!(scanner.finish(), None);
        // A line of exactly the limit is still read.
        let exact = format!(
            "AGORA_CHECKPOINT {{\"uri\":\"s3://{}\",\"step\":1}}",
            "a".repeat(2000)
        );
        let padded = format!("{exact}{}\n", " ".repeat(MAX_LINE_BYTES - exact.len()));
        assert!(matches!(
            scanner.feed(padded.as_bytes()).as_slice(),
            [Ok(_)]
        ));
    }

    #[test]
    fn the_sink_keeps_the_highest_step() {
        let (sink, mut latest) = CheckpointSink::channel();
        let mut stdout = sink.scanner();
        let mut stderr = sink.scanner();
        stdout.feed(b"AGORA_CHECKPOINT {\"uri\":\"s3://b/step-5\",\"step\":5}\n");
        assert!(latest.has_changed().unwrap());
        assert_eq!(
            *latest.borrow_and_update(),
            Some(checkpoint("s3://b/step-5", 5))
        );
        // An older one, a malformed one and the same step again change nothing.
        stderr.feed(b"AGORA_CHECKPOINT {\"uri\":\"s3://b/step-4\",\"step\":4}\n");
        stderr.feed(b"AGORA_CHECKPOINT {\"uri\":\"s3://b/step-4\"}\n");
        stdout.feed(b"AGORA_CHECKPOINT {\"uri\":\"s3://b/other-5\",\"step\":5}\n");
        assert!(!latest.has_changed().unwrap());
        stderr.feed(b"AGORA_CHECKPOINT {\"uri\":\"s3://b/step-6\",\"step\":6}");
        assert!(!latest.has_changed().unwrap(), "the line is not over yet");
        stderr.finish();
        assert_eq!(
            *latest.borrow_and_update(),
            Some(checkpoint("s3://b/step-6", 6))
        );
    }
}
