//! Faults, through real processes: an agent killed mid-job (the hub declares its node lost and
//! runs the job's next attempt elsewhere), the hub killed mid-job and restarted on the same database
//! (the job carries on as if nothing happened), and over a thousand malformed, oversized, ill-typed
//! and unauthorized requests (each answered 4xx in the API's error shape, and nothing changes).
//!
//! Processes are killed with SIGKILL, as a crash, the OOM killer or a pulled plug would: no
//! graceful shutdown, nothing flushed. Every wait is a poll with a deadline.
//!
//! Needs the binary: `cargo build --bin agora && cargo test -p e2e --test faults`. The PostgreSQL
//! variants run when `AGORA_TEST_POSTGRES_URL` is set (`export AGORA_TEST_POSTGRES_URL=$(
//! ./scripts/postgres-up)`), and fail without it when `AGORA_REQUIRE_POSTGRES=1`.
#![cfg(unix)]

use std::{
    collections::BTreeMap,
    os::unix::process::ExitStatusExt,
    process::ExitStatus,
    time::{Duration, Instant},
};

use e2e::{
    Api, Backend, NodeKey, Process, RawClient, RawReply, RawRequest, ServerHub, ServerOptions,
    TestDatabase, job_id, node_is_ready, placed_node, poll_until, run_cli, timestamp, wait_ready,
};
use serde_json::{Value, json};

/// Long enough for any placement or state change on loopback, short enough to fail fast.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);

/// The hub's request body limit (docs/api.md: 1 MiB).
const BODY_LIMIT: usize = 1024 * 1024;

/// A ComputeJob manifest running the builtin sleep for `seconds`, with `max_attempts` attempts.
fn sleep_job(name: &str, seconds: u64, max_attempts: u32) -> Value {
    json!({
        "apiVersion": "agora.dev/v1alpha1",
        "kind": "ComputeJob",
        "metadata": {"name": name},
        "spec": {
            "kind": "Batch",
            "workload": {"builtin": {"sleep": {"durationSeconds": seconds}}},
            "resources": {"workers": 1, "gpusPerWorker": 1},
            "pricing": {"maxPricePerGpuHour": "5.00"},
            "retry": {"maxAttempts": max_attempts}
        }
    })
}

/// An event of a job's log in one line: `from→to reason attempt N [on node]`.
fn event_line(event: &Value) -> String {
    let mut line = format!(
        "{}→{} {} attempt {}",
        event["from"].as_str().unwrap_or(""),
        event["to"].as_str().unwrap_or("?"),
        event["reason"].as_str().unwrap_or("?"),
        event["attempt"]
    );
    if let Some(node) = event["node"].as_str() {
        line.push_str(&format!(" on {node}"));
    }
    line
}

/// Checks that a log is one chain of phase changes: each event starts where the previous one
/// ended, times never go backwards, and no event appears twice.
fn assert_chained(events: &[Value]) {
    for pair in events.windows(2) {
        let (before, after) = (&pair[0], &pair[1]);
        assert_eq!(
            after["from"],
            before["to"],
            "the event log has a gap: {} is followed by {}\n{events:#?}",
            event_line(before),
            event_line(after)
        );
        assert!(
            timestamp(&after["time"]) >= timestamp(&before["time"]),
            "the event log goes back in time\n{events:#?}"
        );
        assert_ne!(before, after, "an event is duplicated\n{events:#?}");
    }
}

fn assert_killed(status: ExitStatus, what: &str) {
    assert_eq!(
        status.signal(),
        Some(9),
        "{what} should have died of SIGKILL, exited {status}"
    );
}

/// How long `from` → `to` took by the job's own timestamps.
fn span(job: &Value, from: &str, to: &str) -> Duration {
    let (a, b) = (
        timestamp(&job["status"][from]),
        timestamp(&job["status"][to]),
    );
    Duration::try_from(b.duration_since(a))
        .unwrap_or_else(|_| panic!("{to} before {from}: {job:#}"))
}

// ------------------------------------------------------------------------------------------------
// 1. An agent killed mid-job.
// ------------------------------------------------------------------------------------------------

#[test]
fn agent_killed_mid_job_is_lost_and_the_job_succeeds_on_the_other_node() {
    let test_started = Instant::now();
    let dir = tempfile::tempdir().expect("a temp dir");
    let db = TestDatabase::fresh(Backend::Sqlite, dir.path()).expect("SQLite");
    // A short node timeout, so that the loss is noticed in seconds; heartbeats well within it.
    let options = ServerOptions {
        node_timeout_seconds: 4,
        heartbeat_interval_seconds: 1,
        unlimited: true,
    };
    let hub = ServerHub::start(dir.path(), &db.url, options);
    let api = hub.api();
    let names = ["gn-fault-a", "gn-fault-b"];
    let mut agents: Vec<Process> = vec![
        hub.agent(names[0], "eu-west", "1xH100-80GB", "1.00"),
        hub.agent(names[1], "eu-west", "1xH100-80GB", "1.50"),
    ];
    wait_ready(&api, &names, STEP_TIMEOUT);

    // Two attempts allowed: the first will be lost with its node.
    let duration = 4;
    let id = job_id(&api.submit(&sleep_job("outlives-its-node", duration, 2)));
    let running = api.wait_for_phase(&id, "Running", STEP_TIMEOUT);
    let victim = placed_node(&running);
    let victim_index = names
        .iter()
        .position(|n| *n == victim)
        .unwrap_or_else(|| panic!("placed on an unknown node {victim}"));
    let survivor = names[1 - victim_index];

    assert_killed(agents[victim_index].kill(), &victim);
    let killed = Instant::now();

    let done = api.wait_for_phase(&id, "Succeeded", STEP_TIMEOUT * 2);
    let recovered = killed.elapsed();
    let status = &done["status"];
    assert_eq!(status["attempts"], 2, "{done:#}");
    assert_eq!(placed_node(&done), survivor, "{done:#}");
    assert_eq!(status["reason"], "Completed", "{done:#}");
    // The second attempt ran the whole workload, on the survivor.
    let ran = span(&done, "startTime", "completionTime");
    assert!(
        ran >= Duration::from_secs(duration - 1),
        "attempt 2 ran {ran:?} of a {duration} s sleep (timestamps are whole seconds): {done:#}"
    );

    let events = api.events(&id).expect("the event log");
    let lines: Vec<String> = events.iter().map(event_line).collect();
    let expected = vec![
        "→Pending Submitted attempt 0".to_string(),
        format!("Pending→Scheduled Placed attempt 1 on {victim}"),
        "Scheduled→Running Started attempt 1".to_string(),
        // The failure's own event keeps the phase; the next moves the job back to Pending.
        format!("Running→Running NodeLost attempt 1 on {victim}"),
        format!("Running→Pending Retrying attempt 1 on {victim}"),
        format!("Pending→Scheduled Placed attempt 2 on {survivor}"),
        "Scheduled→Running Started attempt 2".to_string(),
        "Running→Succeeded Completed attempt 2".to_string(),
    ];
    assert_eq!(lines, expected, "the event log:\n{events:#?}");
    let lost = &events[3];
    let message = lost["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(&victim) && message.contains("no heartbeat"),
        "the NodeLost event should say which node went silent: {lost:#}"
    );
    assert_chained(&events);

    // The lost node is NotReady with its GPU released; the survivor is Ready and idle again.
    let lost_node = api.node(&victim).expect("the lost node is still listed");
    assert!(!node_is_ready(&lost_node), "{lost_node:#}");
    assert_eq!(lost_node["status"]["allocated"], 0, "{lost_node:#}");
    assert_eq!(lost_node["status"]["free"], 0, "{lost_node:#}");
    let idle = poll_until("the survivor's GPU to be free", STEP_TIMEOUT, || {
        let n = api.node(survivor)?;
        if n["status"]["allocated"] == 0 && n["status"]["free"] == 1 {
            Ok(n)
        } else {
            Err(n["status"].to_string())
        }
    });
    assert!(node_is_ready(&idle), "{idle:#}");
    assert!(
        agents[1 - victim_index].exit_status().is_none(),
        "the surviving agent stopped\n{}",
        agents[1 - victim_index].log_tail()
    );
    println!(
        "agent {victim} killed mid-job: attempt 2 Succeeded on {survivor} {recovered:?} after the \
         kill (node timeout 4 s, {duration} s sleep); test took {:?}",
        test_started.elapsed()
    );
}

// ------------------------------------------------------------------------------------------------
// 2. The hub killed mid-job and restarted on the same database.
// ------------------------------------------------------------------------------------------------

/// The node timeout of the restart test: comfortably above the time a hub takes to start again,
/// so that an agent silent only while the hub was down is not lost.
const RESTART_NODE_TIMEOUT: u64 = 10;

fn hub_killed_mid_job(backend: Backend) {
    let test_started = Instant::now();
    let dir = tempfile::tempdir().expect("a temp dir");
    let Some(db) = TestDatabase::fresh(backend, dir.path()) else {
        return;
    };
    let options = ServerOptions {
        node_timeout_seconds: RESTART_NODE_TIMEOUT,
        heartbeat_interval_seconds: 1,
        unlimited: true,
    };
    let mut hub = ServerHub::start(dir.path(), &db.url, options);
    let node = "gn-fault-solo";
    let mut agent = hub.agent(node, "eu-west", "1xH100-80GB", "1.00");
    let api = hub.api();
    wait_ready(&api, &[node], STEP_TIMEOUT);

    // One attempt only: were the node declared lost, the job would fail, not quietly retry.
    let duration = 6;
    let id = job_id(&api.submit(&sleep_job("outlives-its-hub", duration, 1)));
    let running = api.wait_for_phase(&id, "Running", STEP_TIMEOUT);
    assert_eq!(placed_node(&running), node);
    let before = api.events(&id).expect("the event log before the crash");

    assert_killed(hub.kill(), "the hub");
    let down = Instant::now();
    hub.start_again();
    let restart = down.elapsed();
    assert!(
        restart < Duration::from_secs(RESTART_NODE_TIMEOUT / 2),
        "the hub took {restart:?} to serve again, too close to the node timeout \
         ({RESTART_NODE_TIMEOUT} s) for this test to mean anything"
    );
    assert!(
        agent.exit_status().is_none(),
        "the agent stopped when the hub died\n{}",
        agent.log_tail()
    );
    let api = hub.api();

    let done = api.wait_for_phase(&id, "Succeeded", STEP_TIMEOUT * 2);
    let status = &done["status"];
    assert_eq!(status["attempts"], 1, "{done:#}");
    assert_eq!(placed_node(&done), node, "{done:#}");
    assert_eq!(status["reason"], "Completed", "{done:#}");
    let ran = span(&done, "startTime", "completionTime");
    assert!(
        ran >= Duration::from_secs(duration - 1),
        "the job ran {ran:?} of a {duration} s sleep (timestamps are whole seconds): {done:#}"
    );
    assert!(
        status["usage"]["gpuSeconds"]
            .as_u64()
            .is_some_and(|s| s + 1 >= duration),
        "usage: {done:#}"
    );

    let events = api.events(&id).expect("the event log");
    let lines: Vec<String> = events.iter().map(event_line).collect();
    assert_eq!(
        lines,
        vec![
            "→Pending Submitted attempt 0".to_string(),
            format!("Pending→Scheduled Placed attempt 1 on {node}"),
            "Scheduled→Running Started attempt 1".to_string(),
            "Running→Succeeded Completed attempt 1".to_string(),
        ],
        "the event log:\n{events:#?}"
    );
    assert_chained(&events);
    assert_eq!(
        &events[..before.len()],
        &before[..],
        "the restart rewrote the event log's past"
    );

    // The node stayed Ready throughout and its GPU is free again.
    let idle = poll_until("the node's GPU to be free", STEP_TIMEOUT, || {
        let n = api.node(node)?;
        if n["status"]["allocated"] == 0 && n["status"]["free"] == 1 {
            Ok(n)
        } else {
            Err(n["status"].to_string())
        }
    });
    assert!(node_is_ready(&idle), "{idle:#}");
    println!(
        "{backend:?}: hub SIGKILLed with a job Running, serving again in {restart:?}; the job \
         Succeeded on attempt 1 with a complete log; test took {:?}",
        test_started.elapsed()
    );
}

#[test]
fn hub_killed_mid_job_and_restarted_the_job_succeeds_sqlite() {
    hub_killed_mid_job(Backend::Sqlite);
}

#[test]
fn hub_killed_mid_job_and_restarted_the_job_succeeds_postgres() {
    hub_killed_mid_job(Backend::Postgres);
}

// ------------------------------------------------------------------------------------------------
// 3. A thousand bad requests.
// ------------------------------------------------------------------------------------------------

/// SplitMix64: a tiny deterministic generator, so every run sends the same requests.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    fn hex(&mut self, digits: usize) -> String {
        (0..digits)
            .map(|_| char::from_digit(self.below(16) as u32, 16).expect("a hex digit"))
            .collect()
    }
}

/// What a bad request must get back, beyond "a 4xx in the API's error shape".
#[derive(Clone, Debug, Default)]
struct Expect {
    /// Allowed statuses; empty allows any 4xx.
    statuses: Vec<u16>,
    code: Option<&'static str>,
    /// The `field` the error must name.
    field: Option<String>,
    /// Refused by the HTTP layer before the hub's router sees it (a URI over 64 KiB): any 4xx,
    /// and the body cannot be the API's.
    transport: bool,
}

fn expect(statuses: &[u16], code: &'static str) -> Expect {
    Expect {
        statuses: statuses.to_vec(),
        code: Some(code),
        ..Expect::default()
    }
}

fn expect_any(statuses: &[u16]) -> Expect {
    Expect {
        statuses: statuses.to_vec(),
        ..Expect::default()
    }
}

fn invalid_field(field: impl Into<String>) -> Expect {
    Expect {
        statuses: vec![422],
        code: Some("invalid_field"),
        field: Some(field.into()),
        transport: false,
    }
}

struct Case {
    label: String,
    request: RawRequest,
    expect: Expect,
}

/// The codes docs/api.md and docs/agent-protocol.md list for each status.
fn codes_for(status: u16) -> &'static [&'static str] {
    match status {
        400 => &[
            "malformed_body",
            "invalid_query",
            "invalid_header",
            "invalid_path",
            "unsupported_protocol_version",
        ],
        401 => &["unauthenticated", "invalid_signature", "invalid_challenge"],
        404 => &["not_found", "no_such_route"],
        405 => &["method_not_allowed"],
        409 => &[
            "idempotency_key_reused",
            "job_finished",
            "assignment_final",
            "node_key_mismatch",
            "stale_report",
        ],
        413 => &["body_too_large"],
        415 => &["unsupported_media_type"],
        422 => &["invalid_field"],
        429 => &["rate_limited"],
        _ => &[],
    }
}

/// What is wrong with `reply` to `case`, if anything.
fn judge(case: &Case, reply: &RawReply) -> Option<String> {
    let status = reply.status;
    if !(400..500).contains(&status) {
        return Some(format!("answered {status}: {}", clip(&reply.text())));
    }
    let expect = &case.expect;
    if !expect.statuses.is_empty() && !expect.statuses.contains(&status) {
        return Some(format!(
            "answered {status}, expected one of {:?}: {}",
            expect.statuses,
            clip(&reply.text())
        ));
    }
    if expect.transport {
        return None;
    }
    if !reply.content_type.starts_with("application/json") {
        return Some(format!(
            "{status} with content type {:?}, not JSON: {}",
            reply.content_type,
            clip(&reply.text())
        ));
    }
    let Some(body) = reply.json() else {
        return Some(format!(
            "{status} with a body that is not JSON: {}",
            clip(&reply.text())
        ));
    };
    let error = &body["error"];
    let code = error["code"].as_str().unwrap_or_default();
    let message = error["message"].as_str().unwrap_or_default();
    if code.is_empty()
        || message.is_empty()
        || !error["field"].is_null() && !error["field"].is_string()
    {
        return Some(format!("{status} not in the API's error shape: {body}"));
    }
    if body.as_object().is_some_and(|o| o.len() != 1) {
        return Some(format!(
            "{status} with more than `error` in the body: {body}"
        ));
    }
    if !codes_for(status).contains(&code) {
        return Some(format!(
            "{status} with code {code:?}, which the docs do not list for it: {body}"
        ));
    }
    if let Some(want) = expect.code
        && code != want
    {
        return Some(format!("{status} {code}, expected {want}: {body}"));
    }
    // The field at fault is the error's `field`, or among the problems its message lists (a
    // document with several problems is refused naming the first in `field` and all of them in
    // the message).
    if let Some(want) = &expect.field
        && error["field"].as_str() != Some(want.as_str())
        && !message.contains(&format!("{want}: "))
    {
        return Some(format!(
            "{status} {code} naming field {}, expected {want:?}: {body}",
            error["field"]
        ));
    }
    if status == 422 && error["field"].as_str().is_none_or(str::is_empty) {
        return Some(format!("422 without the field at fault: {body}"));
    }
    None
}

fn clip(text: &str) -> String {
    if text.len() <= 300 {
        text.to_string()
    } else {
        let cut = (0..=300)
            .rev()
            .find(|i| text.is_char_boundary(*i))
            .unwrap_or(0);
        format!("{}… ({} bytes)", &text[..cut], text.len())
    }
}

/// A path into a JSON document: object keys and array indices.
#[derive(Clone, Debug)]
enum Seg {
    Key(String),
    Index(usize),
}

/// Every position below the root of `doc`, parents before children.
fn positions(doc: &Value) -> Vec<Vec<Seg>> {
    fn walk(value: &Value, here: &mut Vec<Seg>, out: &mut Vec<Vec<Seg>>) {
        match value {
            Value::Object(map) => {
                for (key, child) in map {
                    here.push(Seg::Key(key.clone()));
                    out.push(here.clone());
                    walk(child, here, out);
                    here.pop();
                }
            }
            Value::Array(items) => {
                for (i, child) in items.iter().enumerate() {
                    here.push(Seg::Index(i));
                    out.push(here.clone());
                    walk(child, here, out);
                    here.pop();
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(doc, &mut Vec::new(), &mut out);
    out
}

fn at<'a>(doc: &'a Value, path: &[Seg]) -> &'a Value {
    path.iter().fold(doc, |v, seg| match seg {
        Seg::Key(k) => &v[k.as_str()],
        Seg::Index(i) => &v[*i],
    })
}

fn at_mut<'a>(doc: &'a mut Value, path: &[Seg]) -> &'a mut Value {
    path.iter().fold(doc, |v, seg| match seg {
        Seg::Key(k) => &mut v[k.as_str()],
        Seg::Index(i) => &mut v[*i],
    })
}

fn replaced(doc: &Value, path: &[Seg], value: Value) -> Value {
    let mut copy = doc.clone();
    *at_mut(&mut copy, path) = value;
    copy
}

/// The API's field notation for `path` under `prefix`: `spec.resources.gpu.models[0]`; `body`
/// for the root of an agent request.
fn dotted(prefix: &str, path: &[Seg]) -> String {
    let mut field = prefix.to_string();
    for seg in path {
        match seg {
            Seg::Key(k) => {
                if !field.is_empty() {
                    field.push('.');
                }
                field.push_str(k);
            }
            Seg::Index(i) => field.push_str(&format!("[{i}]")),
        }
    }
    if field.is_empty() {
        "body".into()
    } else {
        field
    }
}

/// JSON's types, with integers apart from other numbers as JSON Schema has them.
fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Values of another type than `original` (never null: null means "not set" for optional fields).
fn wrong_values(original: &Value) -> Vec<Value> {
    let mine = json_type(original);
    [
        json!("not-the-right-type"),
        json!(12345),
        json!(1.5),
        json!(true),
        json!([]),
        json!({}),
    ]
    .into_iter()
    .filter(|v| {
        let theirs = json_type(v);
        // A number field takes integers too.
        theirs != mine && !(mine == "number" && theirs == "integer")
    })
    .collect()
}

/// The bytes of `Authorization: Bearer <token>`.
fn bearer(token: &str) -> Vec<u8> {
    format!("Bearer {token}").into_bytes()
}

/// A request with `authorization` (or none) and a JSON body.
fn request(method: &str, path: &str, authorization: Option<Vec<u8>>, body: &[u8]) -> RawRequest {
    let mut headers = Vec::new();
    if let Some(auth) = authorization {
        headers.push(("authorization".to_string(), auth));
    }
    if !body.is_empty() {
        headers.push(("content-type".to_string(), b"application/json".to_vec()));
    }
    RawRequest {
        method: method.to_string(),
        path: path.to_string(),
        headers,
        body: body.to_vec(),
    }
}

fn with_header(mut request: RawRequest, name: &str, value: &[u8]) -> RawRequest {
    request
        .headers
        .retain(|(n, _)| !n.eq_ignore_ascii_case(name));
    request.headers.push((name.to_string(), value.to_vec()));
    request
}

/// The high-s twin of a low-s ECDSA signature (`r ‖ s` hex): s' = n − s, an equally valid
/// signature of the same message, which the hub must refuse (one encoding per proof).
fn high_s(signature_hex: &str) -> String {
    // The order of secp256k1.
    const N: [u8; 32] = [
        0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
        0xFE, 0xBA, 0xAE, 0xDC, 0xE6, 0xAF, 0x48, 0xA0, 0x3B, 0xBF, 0xD2, 0x5E, 0x8C, 0xD0, 0x36,
        0x41, 0x41,
    ];
    let bytes = hex::decode(signature_hex).expect("a hex signature");
    let (r, s) = bytes.split_at(32);
    let mut out = [0u8; 32];
    let mut borrow = 0i16;
    for i in (0..32).rev() {
        let mut d = i16::from(N[i]) - i16::from(s[i]) - borrow;
        borrow = i16::from(d < 0);
        if d < 0 {
            d += 256;
        }
        out[i] = d as u8;
    }
    let high = format!("{}{}", hex::encode(r), hex::encode(out));
    // Check the arithmetic: the twin is a different encoding of the same signature.
    let parse = |h: &str| {
        k256::ecdsa::Signature::from_slice(&hex::decode(h).expect("hex")).expect("a signature")
    };
    assert_ne!(high, signature_hex);
    assert_eq!(parse(&high).normalize_s(), parse(signature_hex));
    high
}

/// Everything the bad requests aim at: a hub with a job in each kind of phase, its agent, a node
/// whose token the test holds, and keys of other tenants.
struct Target {
    hub: ServerHub,
    agent: Process,
    api: Api,
    /// Tenant `default`'s key.
    key: String,
    /// Tenant `team-b`'s key: it must see none of `default`'s jobs.
    other_key: String,
    /// A revoked key of tenant `team-c`.
    revoked_key: String,
    /// The agent process's node (it runs `running`).
    node_a: String,
    /// A node the test registered itself (too expensive for any job here), and its token.
    node_b: String,
    token_b: String,
    /// Jobs: Succeeded (submitted with Idempotency-Key `fault-done`), Running on `node_a`, and
    /// Pending (a container job no node here can run).
    done: String,
    running: String,
    pending: String,
    /// Their assignments on `node_a`.
    done_assignment: String,
    running_assignment: String,
    /// A signed registration of `node_a`'s name by another key, over a challenge issued for that
    /// key: the hub must refuse it (the name is bound to the agent's key).
    stolen_name_registration: Value,
    /// `node_b`'s registration, signed over a fresh challenge, with a high-s signature.
    high_s_registration: Value,
    /// Whether status and checkpoint reports carry a sequence number (`seq`), as the hub's
    /// OpenAPI document says.
    report_seq: bool,
}

/// A status or checkpoint report as the hub's protocol version wants it: with `seq` (1) when
/// reports are sequenced.
fn sequenced(t: &Target, mut report: Value) -> Value {
    if t.report_seq {
        report["seq"] = json!(1);
    }
    report
}

/// A valid registration body of a simulated one-GPU node (unsigned: placeholders of the right
/// shape for the proof).
fn registration(name: &str, key: &NodeKey, price: &str) -> Value {
    json!({
        "name": name,
        "region": "eu-west",
        "pricePerGpuHour": price,
        "operatorAddress": "cosmos1qyqszqgpqyqszqgpqyqszqgpqyqszqgp2cyq8z",
        "gpus": [{
            "uuid": format!("GPU-SIM-{name}-0"),
            "model": "H100-80GB",
            "memoryGiB": 80,
            "computeCapability": "9.0",
            "healthy": true,
            "simulated": true
        }],
        "capabilities": ["builtin:sleep"],
        "simulated": true,
        "agentVersion": "0.1.0",
        "publicKey": key.public_key(),
        "challenge": "ab".repeat(32),
        "signature": "cd".repeat(64)
    })
}

/// Asks the hub for a challenge for `key` and signs `body` over it.
fn signed(raw: &RawClient, body: &Value, key: &NodeKey) -> Value {
    let reply = raw
        .send(&request(
            "POST",
            "/v1/agent/challenge",
            None,
            json!({"publicKey": key.public_key()})
                .to_string()
                .as_bytes(),
        ))
        .expect("asking for a challenge");
    assert_eq!(reply.status, 200, "challenge: {}", reply.text());
    let challenge = reply.json().expect("JSON")["challenge"]
        .as_str()
        .expect("a challenge")
        .to_string();
    let mut body = body.clone();
    let name = body["name"].as_str().expect("a name").to_string();
    let operator = body["operatorAddress"].as_str().map(str::to_string);
    body["challenge"] = challenge.clone().into();
    body["signature"] = key
        .sign_registration(&challenge, &name, operator.as_deref())
        .into();
    body
}

/// `agora admin key create --tenant TENANT`: the new key, and its prefix (what `agora admin key
/// revoke` takes), from the command's "Created API key PREFIX for tenant …".
fn create_key(database_url: &str, tenant: &str) -> (String, String) {
    let out = run_cli(
        &[
            "admin",
            "key",
            "create",
            "--tenant",
            tenant,
            "--database-url",
            database_url,
        ],
        &[],
        e2e::CLI_TIMEOUT,
    );
    out.assert_success();
    let prefix = out
        .stderr
        .split_whitespace()
        .skip_while(|w| *w != "key")
        .nth(1)
        .unwrap_or_else(|| panic!("no key prefix in {out}"))
        .to_string();
    (out.stdout.trim().to_string(), prefix)
}

fn assignment_of(job: &str, attempt: u32) -> String {
    format!("asg-{}-{attempt}-0", job.trim_start_matches("job-"))
}

fn set_up_target(dir: &std::path::Path, db: &TestDatabase) -> Target {
    // Rate limits off: a thousand requests in a few seconds is the point, not abuse. A long node
    // timeout: the test's own node never heartbeats, and must stay Ready throughout.
    let options = ServerOptions {
        node_timeout_seconds: 600,
        heartbeat_interval_seconds: 5,
        unlimited: true,
    };
    let hub = ServerHub::start(dir, &db.url, options);
    let api = hub.api();
    let raw = RawClient::new(&hub.url);
    let node_a = "gn-fault-agent".to_string();
    let agent = hub.agent(&node_a, "eu-west", "2xH100-80GB", "1.00");
    wait_ready(&api, &[&node_a], STEP_TIMEOUT);
    // The agent reports its (simulated) benchmark score once at start: wait for it, so the state
    // compared below does not change on its own.
    poll_until("the agent's benchmark score", STEP_TIMEOUT, || {
        let node = api.node(&node_a)?;
        node.get("benchmark")
            .map(|_| ())
            .ok_or_else(|| format!("{node}"))
    });

    // The test's own node, at a price no job here accepts.
    let node_b = "gn-fault-mine".to_string();
    let key_b = NodeKey::from_seed(&node_b);
    let body = signed(&raw, &registration(&node_b, &key_b, "50.00"), &key_b);
    let reply = raw
        .send(&request(
            "POST",
            "/v1/agent/register",
            None,
            body.to_string().as_bytes(),
        ))
        .expect("registering");
    assert_eq!(reply.status, 200, "registering {node_b}: {}", reply.text());
    let token_b = reply.json().expect("JSON")["token"]
        .as_str()
        .expect("a token")
        .to_string();

    let (other_key, _) = create_key(&hub.database_url, "team-b");
    let (revoked_key, prefix) = create_key(&hub.database_url, "team-c");
    run_cli(
        &[
            "admin",
            "key",
            "revoke",
            &prefix,
            "--database-url",
            &hub.database_url,
        ],
        &[],
        e2e::CLI_TIMEOUT,
    )
    .assert_success();

    // A finished job, submitted with an Idempotency-Key.
    let done_request = with_header(
        request(
            "POST",
            "/v1/jobs",
            Some(bearer(&hub.api_key)),
            sleep_job("fault-done", 1, 1).to_string().as_bytes(),
        ),
        "idempotency-key",
        b"fault-done",
    );
    let reply = raw.send(&done_request).expect("submitting");
    assert_eq!(reply.status, 201, "{}", reply.text());
    let done = job_id(&reply.json().expect("JSON"));
    api.wait_for_phase(&done, "Succeeded", STEP_TIMEOUT);
    let running = job_id(&api.submit(&sleep_job("fault-running", 3600, 1)));
    api.wait_for_phase(&running, "Running", STEP_TIMEOUT);
    let pending = job_id(&api.submit(&json!({
        "kind": "Batch",
        "workload": {"image": "ghcr.io/acme/train:1.4", "command": ["python", "train.py"]},
        "resources": {"workers": 1, "gpusPerWorker": 1},
        "pricing": {"maxPricePerGpuHour": "5.00"}
    })));
    poll_until(
        "the container job to be Unschedulable",
        STEP_TIMEOUT,
        || {
            let job = api.job(&pending)?;
            if job["status"]["reason"] == "Unschedulable" {
                Ok(())
            } else {
                Err(job["status"].to_string())
            }
        },
    );

    // Another key signs a registration of the agent's name over its own challenge.
    let thief = NodeKey::from_seed("a thief");
    let stolen_name_registration = signed(&raw, &registration(&node_a, &thief, "1.00"), &thief);
    let mut high_s_registration = signed(&raw, &registration(&node_b, &key_b, "50.00"), &key_b);
    let low = high_s_registration["signature"]
        .as_str()
        .expect("a signature")
        .to_string();
    high_s_registration["signature"] = high_s(&low).into();

    let openapi = raw
        .send(&request("GET", "/openapi.json", None, b""))
        .expect("GET /openapi.json")
        .json()
        .expect("the OpenAPI document");
    let report_seq = openapi["components"]["schemas"]["StatusReport"]["properties"]
        .get("seq")
        .is_some();

    Target {
        report_seq,
        key: hub.api_key.clone(),
        agent,
        api,
        other_key,
        revoked_key,
        done_assignment: assignment_of(&done, 1),
        running_assignment: assignment_of(&running, 1),
        node_a,
        node_b,
        token_b,
        done,
        running,
        pending,
        stolen_name_registration,
        high_s_registration,
        hub,
    }
}

/// What the hub shows of its state: every job (as listed and as read), every job's events, every
/// node, and what tenant `team-b` sees; less what changes by itself (heartbeat times).
fn snapshot(target: &Target) -> String {
    let api = &target.api;
    let jobs = api.get_ok("/v1/jobs?limit=500").expect("the job list");
    let mut per_job = BTreeMap::new();
    for job in jobs["items"].as_array().expect("items") {
        let id = job["id"].as_str().expect("an id");
        per_job.insert(
            id.to_string(),
            json!({
                "job": api.job(id).expect("a job"),
                "events": api.events(id).expect("events"),
            }),
        );
    }
    let mut nodes = api.get_ok("/v1/nodes?limit=500").expect("the node list");
    for node in nodes["items"].as_array_mut().expect("items") {
        // Live readings change with every heartbeat: GPU telemetry and network measurements.
        let node = node.as_object_mut().expect("a node");
        node.remove("telemetry");
        let status = node
            .get_mut("status")
            .and_then(Value::as_object_mut)
            .expect("a status");
        status.remove("lastHeartbeat");
        status.remove("network");
        for condition in status
            .get_mut("conditions")
            .and_then(Value::as_array_mut)
            .expect("conditions")
        {
            condition
                .as_object_mut()
                .expect("a condition")
                .remove("lastTransitionTime");
        }
    }
    let other = Api::new(&target.hub.url, &target.other_key)
        .get_ok("/v1/jobs?limit=500")
        .expect("team-b's job list");
    serde_json::to_string_pretty(&json!({
        "jobs": jobs,
        "each job": per_job,
        "nodes": nodes,
        "team-b jobs": other,
    }))
    .expect("JSON")
}

/// Where two snapshots first differ, with some context.
fn first_difference(before: &str, after: &str) -> String {
    let (a, b): (Vec<&str>, Vec<&str>) = (before.lines().collect(), after.lines().collect());
    let i = a
        .iter()
        .zip(&b)
        .position(|(x, y)| x != y)
        .unwrap_or(a.len().min(b.len()));
    let from = i.saturating_sub(8);
    format!(
        "before (lines {from}..):\n{}\n\nafter:\n{}",
        a[from..(i + 8).min(a.len())].join("\n"),
        b[from..(i + 8).min(b.len())].join("\n")
    )
}

/// A metric's samples (`name{labels} value`) from the hub's Prometheus text.
fn metric_lines(raw: &RawClient, name: &str) -> Vec<String> {
    let reply = raw
        .send(&request("GET", "/metrics", None, b""))
        .expect("GET /metrics");
    assert_eq!(reply.status, 200);
    reply
        .text()
        .lines()
        .filter(|l| l.starts_with(name))
        .map(str::to_string)
        .collect()
}

/// The bodies of a job submission the wrong-type cases break, field by field: every field of the
/// ComputeJob spec appears in one of them. Each is valid as it is (checked with a quote first).
fn submission_bases() -> Vec<Value> {
    vec![
        json!({
            "kind": "Batch",
            "workload": {"builtin": {"sleep": {"durationSeconds": 60}}},
            "resources": {
                "workers": 1,
                "gpusPerWorker": 1,
                "gpu": {"models": ["H100-80GB"], "minMemoryGiB": 40, "minComputeCapability": "8.0"}
            },
            "placement": {
                "regions": ["eu-west"],
                "userRegion": "eu-west",
                "maxLatencyMs": 100,
                "minBandwidthMbps": 100
            },
            "pricing": {"maxPricePerGpuHour": "5.00"},
            "maxRuntime": "1h",
            "verification": {"mode": "SpotCheck", "sampleRate": 0.5},
            "retry": {"maxAttempts": 2}
        }),
        json!({
            "kind": "Training",
            "workload": {
                "image": "ghcr.io/acme/train:1.4",
                "command": ["python", "train.py"],
                "args": ["--epochs", "3"],
                "env": [{"name": "EPOCHS", "value": "3"}]
            },
            "resources": {
                "workers": 2,
                "gpusPerWorker": 1,
                "pipelineStages": 2,
                "communication": {"activationsGB": "0.25", "gradientsGB": "2"}
            },
            "pricing": {"maxPricePerGpuHour": "5.00"},
            "retry": {"maxAttempts": 1}
        }),
        json!({
            "kind": "Federated",
            "workload": {"builtin": {"matmulBenchmark": {"size": 1024, "iterations": 10}}},
            "resources": {"workers": 2, "gpusPerWorker": 1},
            "placement": {
                "dataLocality": [
                    {"node": "gn-fault-agent", "dataset": "shard-a"},
                    {"node": "gn-fault-mine", "dataset": "shard-b"}
                ]
            },
            "pricing": {"maxPricePerGpuHour": "5.00"},
            "verification": {"mode": "Redundant"}
        }),
    ]
}

/// A whole manifest around `spec`.
fn manifest(spec: &Value) -> Value {
    json!({
        "apiVersion": "agora.dev/v1alpha1",
        "kind": "ComputeJob",
        "metadata": {"name": "fault-case"},
        "spec": spec
    })
}

/// Bodies that are not JSON at all (or not one JSON document).
const MALFORMED: &[&[u8]] = &[
    b"",
    b"{",
    b"}",
    b"{\"kind\":",
    b"{'kind': 'Batch'}",
    b"{\"a\": 1,}",
    b"[1, 2",
    b"{\"a\" 1}",
    b"\xff\xfe{\x00}",
    b"{\"a\": \"\xc3\x28\"}",
    b"{\"a\": \"\x01\"}",
    b"{} trailing",
    b"{\"a\": 1}{\"b\": 2}",
    b"NaN",
    b"{\"a\": NaN}",
    b"{\"a\": Infinity}",
    b"// a comment\n{}",
    b"\"unterminated",
    b"{\"a\": 1e99999}",
    b"{\"a\": -}",
    b"tru",
    b"{\"a\": 01}",
    b"{\"a\": \"\\u12\"}",
    b"{\"a\": \"\\ud800\"}",
    b"\x00",
];

/// Bodies that are JSON, but not an object.
const NOT_OBJECTS: &[&str] = &["null", "[]", "[{}]", "42", "\"a string\"", "true"];

/// YAML a submission with `Content-Type: application/yaml` may be and still be refused.
const BAD_YAML: &[&str] = &[
    "kind: [unclosed",
    "kind: Batch\n  workload: {",
    "\tkind: Batch",
    "kind: 'unterminated",
    "kind: *undefined_alias",
    "---\nkind: Batch\n---\nkind: Batch\n",
    "- just\n- a\n- list\n",
    "just a string",
    "kind: Batch\nkind: Batch\n",
    "? [complex, key]\n: value\n",
    "kind: !!binary not-base64!\n",
    "a: &a [\"x\",\"x\",\"x\",\"x\",\"x\",\"x\",\"x\",\"x\",\"x\"]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\nf: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]\ng: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]\nh: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]\n",
];

/// `Authorization` values that authenticate nobody.
fn bad_authorizations(rng: &mut Rng, t: &Target) -> Vec<(String, Option<Vec<u8>>)> {
    let mut flipped = t.key.clone();
    let last = flipped.pop().expect("a key");
    flipped.push(if last == '0' { '1' } else { '0' });
    vec![
        ("no Authorization".into(), None),
        ("an empty Authorization".into(), Some(Vec::new())),
        ("`Bearer` alone".into(), Some(b"Bearer".to_vec())),
        ("`Bearer ` and spaces".into(), Some(b"Bearer    ".to_vec())),
        (
            "Basic credentials".into(),
            Some(b"Basic dXNlcjpwYXNzd29yZA==".to_vec()),
        ),
        (
            "the key under another scheme".into(),
            Some(format!("Token {}", t.key).into_bytes()),
        ),
        (
            "the key without a scheme".into(),
            Some(t.key.clone().into_bytes()),
        ),
        (
            "a made-up key".into(),
            Some(bearer(&format!("agora_{}", rng.hex(64)))),
        ),
        (
            "the key with its last digit changed".into(),
            Some(bearer(&flipped)),
        ),
        (
            "the key truncated".into(),
            Some(bearer(&t.key[..t.key.len() - 1])),
        ),
        (
            "the key with a suffix".into(),
            Some(bearer(&format!("{}x", t.key))),
        ),
        (
            "the key upper-cased".into(),
            Some(bearer(&t.key.to_uppercase())),
        ),
        (
            "the key twice".into(),
            Some(bearer(&format!("{} {}", t.key, t.key))),
        ),
        ("a revoked key".into(), Some(bearer(&t.revoked_key))),
        ("a node token".into(), Some(bearer(&t.token_b))),
        (
            "bytes that are not UTF-8".into(),
            Some([b"Bearer \xff\xfe".as_slice(), t.key.as_bytes()].concat()),
        ),
        ("a 64 KiB key".into(), Some(bearer(&"k".repeat(64 * 1024)))),
    ]
}

/// `Authorization` values that identify no node.
fn bad_node_authorizations(rng: &mut Rng, t: &Target) -> Vec<(String, Option<Vec<u8>>)> {
    vec![
        ("no Authorization".into(), None),
        ("an empty Authorization".into(), Some(Vec::new())),
        ("`Bearer` alone".into(), Some(b"Bearer".to_vec())),
        (
            "Basic credentials".into(),
            Some(b"Basic dXNlcjpwYXNzd29yZA==".to_vec()),
        ),
        (
            "the token without a scheme".into(),
            Some(t.token_b.clone().into_bytes()),
        ),
        (
            "a made-up token".into(),
            Some(bearer(&format!("agt_{}", rng.hex(64)))),
        ),
        (
            "the token truncated".into(),
            Some(bearer(&t.token_b[..t.token_b.len() - 1])),
        ),
        (
            "the token upper-cased".into(),
            Some(bearer(&t.token_b.to_uppercase())),
        ),
        ("a user's API key".into(), Some(bearer(&t.key))),
        (
            "bytes that are not UTF-8".into(),
            Some(b"Bearer agt_\xff\xfe".to_vec()),
        ),
        (
            "a 64 KiB token".into(),
            Some(bearer(&"t".repeat(64 * 1024))),
        ),
    ]
}

/// A request to send as method, path, `Authorization` and body.
type Route = (&'static str, String, Option<Vec<u8>>, Vec<u8>);

/// The bad requests, in the order they are sent.
#[derive(Default)]
struct Cases(Vec<Case>);

impl Cases {
    fn add(&mut self, label: String, request: RawRequest, expect: Expect) {
        self.0.push(Case {
            label,
            request,
            expect,
        });
    }
}

/// Valid requests' parts that the bad requests are made from.
struct Bodies {
    /// `Authorization` with tenant `default`'s key, and with node B's token.
    key: Option<Vec<u8>>,
    node: Option<Vec<u8>>,
    /// A valid job spec, as JSON and as bytes.
    valid_spec: Value,
    valid_job: Vec<u8>,
    /// Valid agent requests: node B's heartbeat (it would be answered 200, so it is only ever
    /// sent broken), a status report and a checkpoint (node B's token on node A's assignment:
    /// 404), a registration of a new node by `stranger` (with a false proof: 401), and a
    /// challenge request (which would create a challenge, so it too is only sent broken).
    heartbeat: Value,
    report: Value,
    checkpoint: Value,
    stranger: NodeKey,
    register_body: Value,
    challenge_body: Value,
}

impl Bodies {
    fn new(t: &Target) -> Bodies {
        let valid_spec = sleep_job("fault-case", 1, 1)["spec"].clone();
        let stranger = NodeKey::from_seed("a stranger");
        Bodies {
            key: Some(bearer(&t.key)),
            node: Some(bearer(&t.token_b)),
            valid_job: valid_spec.to_string().into_bytes(),
            valid_spec,
            heartbeat: json!({
                "gpus": [registration(&t.node_b, &NodeKey::from_seed(&t.node_b), "50.00")["gpus"][0]],
                "assignments": [{"id": "asg-0000000000000000000-1-0", "state": "Running"}]
            }),
            report: sequenced(
                t,
                json!({"state": "Failed", "exitCode": 3, "message": "fault test"}),
            ),
            checkpoint: sequenced(t, json!({"uri": "s3://bucket/ckpt/step-5", "step": 5})),
            register_body: registration("gn-fault-new", &stranger, "1.00"),
            challenge_body: json!({"publicKey": stranger.public_key()}),
            stranger,
        }
    }
}

/// Every bad request, in a fixed order from a fixed seed.
fn bad_requests(t: &Target) -> Vec<Case> {
    let mut rng = Rng(0x00A6_08A0_FA17_5EED);
    let mut cases = Cases::default();
    let bodies = Bodies::new(t);
    for section in [
        user_credentials,
        node_credentials,
        other_nodes,
        other_tenants,
        submission_fields,
        agent_fields,
        malformed_bodies,
        huge_strings,
        bad_paths,
        bad_queries,
        wrong_methods,
        content_types,
        protocol_versions,
        mutations,
    ] {
        section(t, &bodies, &mut rng, &mut cases);
    }
    cases.0
}

/// Credentials on user routes: nobody's key.
fn user_credentials(t: &Target, b: &Bodies, rng: &mut Rng, cases: &mut Cases) {
    let Bodies { valid_job, .. } = b;
    let done = &t.done;
    let running = &t.running;
    let pending = &t.pending;
    let user_routes: Vec<(&str, String, Vec<u8>)> = vec![
        ("GET", "/v1/jobs".into(), vec![]),
        ("GET", "/v1/jobs?limit=5".into(), vec![]),
        ("POST", "/v1/jobs".into(), valid_job.clone()),
        ("GET", format!("/v1/jobs/{done}"), vec![]),
        ("GET", format!("/v1/jobs/{running}/events"), vec![]),
        ("DELETE", format!("/v1/jobs/{running}"), vec![]),
        ("DELETE", format!("/v1/jobs/{pending}"), vec![]),
        ("GET", "/v1/nodes".into(), vec![]),
        ("GET", format!("/v1/nodes/{}", t.node_a), vec![]),
        ("GET", "/v1/prices".into(), vec![]),
        ("POST", "/v1/quotes".into(), valid_job.clone()),
    ];
    for (what, auth) in bad_authorizations(rng, t) {
        for (method, path, body) in &user_routes {
            cases.add(
                format!("{method} {path} with {what}"),
                request(method, path, auth.clone(), body),
                expect(&[401], "unauthenticated"),
            );
        }
    }
}

/// Credentials on agent routes: no node's token.
fn node_credentials(t: &Target, b: &Bodies, rng: &mut Rng, cases: &mut Cases) {
    let Bodies {
        heartbeat,
        report,
        checkpoint,
        ..
    } = b;
    let asg_running = &t.running_assignment;
    let agent_routes: Vec<(&str, String, Vec<u8>)> = vec![
        (
            "POST",
            "/v1/agent/heartbeat".into(),
            heartbeat.to_string().into_bytes(),
        ),
        ("GET", "/v1/agent/assignments?waitSeconds=0".into(), vec![]),
        (
            "POST",
            format!("/v1/agent/assignments/{asg_running}/status"),
            report.to_string().into_bytes(),
        ),
        (
            "POST",
            format!("/v1/agent/assignments/{asg_running}/checkpoint"),
            checkpoint.to_string().into_bytes(),
        ),
    ];
    for (what, auth) in bad_node_authorizations(rng, t) {
        for (method, path, body) in &agent_routes {
            cases.add(
                format!("{method} {path} with {what}"),
                request(method, path, auth.clone(), body),
                expect(&[401], "unauthenticated"),
            );
        }
    }
}

/// A node's token on another node's assignments.
fn other_nodes(t: &Target, b: &Bodies, _rng: &mut Rng, cases: &mut Cases) {
    let Bodies {
        node,
        report,
        checkpoint,
        ..
    } = b;
    let asg_running = &t.running_assignment;
    let asg_done = &t.done_assignment;
    for state in ["Starting", "Running", "Succeeded", "Failed", "Stopped"] {
        for asg in [asg_running, asg_done] {
            cases.add(
                format!("node B reports {state} on node A's assignment {asg}"),
                request(
                    "POST",
                    &format!("/v1/agent/assignments/{asg}/status"),
                    node.clone(),
                    sequenced(t, json!({"state": state, "exitCode": 0}))
                        .to_string()
                        .as_bytes(),
                ),
                expect(&[404], "not_found"),
            );
        }
    }
    for asg in [asg_running, asg_done] {
        cases.add(
            format!("node B checkpoints node A's assignment {asg}"),
            request(
                "POST",
                &format!("/v1/agent/assignments/{asg}/checkpoint"),
                node.clone(),
                checkpoint.to_string().as_bytes(),
            ),
            expect(&[404], "not_found"),
        );
    }
    cases.add(
        "node B reports on an assignment of a job that does not exist".into(),
        request(
            "POST",
            "/v1/agent/assignments/asg-1a2256b1efdf3582032-1-0/status",
            node.clone(),
            report.to_string().as_bytes(),
        ),
        expect(&[404], "not_found"),
    );
}

/// Another tenant's key on this tenant's jobs; a finished job; a reused or malformed Idempotency-Key.
fn other_tenants(t: &Target, b: &Bodies, _rng: &mut Rng, cases: &mut Cases) {
    let Bodies { key, valid_job, .. } = b;
    let done = &t.done;
    let running = &t.running;
    let pending = &t.pending;
    let other = Some(bearer(&t.other_key));
    for (method, path) in [
        ("GET", format!("/v1/jobs/{done}")),
        ("GET", format!("/v1/jobs/{running}")),
        ("GET", format!("/v1/jobs/{done}/events")),
        ("GET", format!("/v1/jobs/{running}/events")),
        ("DELETE", format!("/v1/jobs/{running}")),
        ("DELETE", format!("/v1/jobs/{pending}")),
        ("DELETE", format!("/v1/jobs/{done}")),
    ] {
        cases.add(
            format!("{method} {path} as another tenant"),
            request(method, &path, other.clone(), b""),
            expect(&[404], "not_found"),
        );
    }
    cases.add(
        "cancelling a job that already succeeded".into(),
        request("DELETE", &format!("/v1/jobs/{done}"), key.clone(), b""),
        expect(&[409], "job_finished"),
    );
    cases.add(
        "a new body under the Idempotency-Key of an earlier job".into(),
        with_header(
            request("POST", "/v1/jobs", key.clone(), valid_job),
            "idempotency-key",
            b"fault-done",
        ),
        expect(&[409], "idempotency_key_reused"),
    );
    for (what, value) in [
        ("empty", Vec::new()),
        ("256 characters", vec![b'k'; 256]),
        ("a space", b"two words".to_vec()),
        ("bytes that are not ASCII", b"key-\xe2\x82\xac".to_vec()),
        ("64 KiB", vec![b'k'; 64 * 1024]),
    ] {
        cases.add(
            format!("a valid job with an Idempotency-Key of {what}"),
            with_header(
                request("POST", "/v1/jobs", key.clone(), valid_job),
                "idempotency-key",
                &value,
            ),
            expect(&[400], "invalid_header"),
        );
    }
}

/// Wrong types and unknown fields in job submissions, field by field.
fn submission_fields(_t: &Target, b: &Bodies, rng: &mut Rng, cases: &mut Cases) {
    let Bodies {
        key, valid_spec, ..
    } = b;
    for (b, base) in submission_bases().iter().enumerate() {
        for path in positions(base) {
            for wrong in wrong_values(at(base, &path)) {
                // Alternate the shapes and routes a submission comes in by.
                let whole = rng.below(2) == 0;
                let body = if whole {
                    manifest(&replaced(base, &path, wrong.clone()))
                } else {
                    replaced(base, &path, wrong.clone())
                };
                let route = *rng.pick(&["/v1/jobs", "/v1/jobs", "/v1/quotes"]);
                let content_type =
                    *rng.pick(&["application/json", "application/json", "application/yaml"]);
                cases.add(
                    format!(
                        "POST {route} ({}, base {b}) with {} = {wrong}",
                        if whole { "manifest" } else { "spec" },
                        dotted("spec", &path)
                    ),
                    with_header(
                        request("POST", route, key.clone(), body.to_string().as_bytes()),
                        "content-type",
                        content_type.as_bytes(),
                    ),
                    invalid_field(dotted("spec", &path)),
                );
            }
            if at(base, &path).is_object() {
                let mut body = base.clone();
                at_mut(&mut body, &path)["unknownField"] = json!(1);
                let field = format!("{}.unknownField", dotted("spec", &path));
                cases.add(
                    format!("POST /v1/jobs (base {b}) with an unknown field {field}"),
                    request("POST", "/v1/jobs", key.clone(), body.to_string().as_bytes()),
                    invalid_field(field),
                );
            }
        }
        let mut body = base.clone();
        body["unknownField"] = json!("x");
        cases.add(
            format!("POST /v1/jobs (base {b}) with an unknown top-level spec field"),
            request("POST", "/v1/jobs", key.clone(), body.to_string().as_bytes()),
            invalid_field("spec.unknownField"),
        );
        let mut whole = manifest(base);
        whole["unknownField"] = json!("x");
        cases.add(
            format!("POST /v1/jobs (base {b}) manifest with an unknown top-level field"),
            request(
                "POST",
                "/v1/jobs",
                key.clone(),
                whole.to_string().as_bytes(),
            ),
            invalid_field("unknownField"),
        );
    }
    let whole = manifest(valid_spec);
    for (field, values) in [
        (
            "apiVersion",
            vec![
                json!(1),
                json!("agora.dev/v2"),
                json!(["agora.dev/v1alpha1"]),
            ],
        ),
        ("kind", vec![json!(1), json!("Deployment"), json!({})]),
        ("metadata", vec![json!("name"), json!(1), json!([])]),
        (
            "metadata.name",
            vec![
                json!(1),
                json!("Not A DNS Name"),
                json!("x".repeat(300)),
                json!([]),
            ],
        ),
    ] {
        for value in values {
            let mut body = whole.clone();
            match field.split_once('.') {
                Some((a, b)) => body[a][b] = value.clone(),
                None => body[field] = value.clone(),
            }
            cases.add(
                format!(
                    "POST /v1/jobs manifest with {field} = {}",
                    clip(&value.to_string())
                ),
                request("POST", "/v1/jobs", key.clone(), body.to_string().as_bytes()),
                invalid_field(field),
            );
        }
    }
    let mut no_spec = whole.clone();
    no_spec.as_object_mut().expect("an object").remove("spec");
    cases.add(
        "POST /v1/jobs manifest without a spec".into(),
        request(
            "POST",
            "/v1/jobs",
            key.clone(),
            no_spec.to_string().as_bytes(),
        ),
        invalid_field("spec"),
    );
    for required in ["kind", "workload", "pricing"] {
        let mut body = valid_spec.clone();
        body.as_object_mut().expect("an object").remove(required);
        cases.add(
            format!("POST /v1/jobs spec without {required}"),
            request("POST", "/v1/jobs", key.clone(), body.to_string().as_bytes()),
            expect_any(&[422]),
        );
    }
}

/// Wrong types and unknown fields in agent requests, field by field; false registration proofs.
fn agent_fields(t: &Target, b: &Bodies, _rng: &mut Rng, cases: &mut Cases) {
    let Bodies {
        node,
        heartbeat,
        report,
        checkpoint,
        stranger,
        register_body,
        challenge_body,
        ..
    } = b;
    let asg_running = &t.running_assignment;
    let agent_bodies: Vec<(&str, String, Option<Vec<u8>>, &Value)> = vec![
        (
            "challenge",
            "/v1/agent/challenge".into(),
            None,
            challenge_body,
        ),
        ("register", "/v1/agent/register".into(), None, register_body),
        (
            "heartbeat",
            "/v1/agent/heartbeat".into(),
            node.clone(),
            heartbeat,
        ),
        (
            "status",
            format!("/v1/agent/assignments/{asg_running}/status"),
            node.clone(),
            report,
        ),
        (
            "checkpoint",
            format!("/v1/agent/assignments/{asg_running}/checkpoint"),
            node.clone(),
            checkpoint,
        ),
    ];
    for (what, path, auth, base) in &agent_bodies {
        for position in positions(base) {
            for wrong in wrong_values(at(base, &position)) {
                cases.add(
                    format!("{what} with {} = {wrong}", dotted("", &position)),
                    request(
                        "POST",
                        path,
                        auth.clone(),
                        replaced(base, &position, wrong).to_string().as_bytes(),
                    ),
                    invalid_field(dotted("", &position)),
                );
            }
        }
        for position in std::iter::once(Vec::new()).chain(positions(base)) {
            // GPU descriptions (`GpuDevice`, shared with the GpuNode resource's status) do not
            // refuse unknown fields in the published schema; every agent request does.
            let in_gpus = matches!(position.first(), Some(Seg::Key(k)) if k == "gpus");
            if !at(base, &position).is_object() || in_gpus {
                continue;
            }
            let mut body = (*base).clone();
            at_mut(&mut body, &position)["unknownField"] = json!(true);
            cases.add(
                format!("{what} with an unknown field in {}", dotted("", &position)),
                request("POST", path, auth.clone(), body.to_string().as_bytes()),
                expect_any(&[422]),
            );
        }
        for not_object in NOT_OBJECTS {
            cases.add(
                format!("{what} with the body {not_object}"),
                request("POST", path, auth.clone(), not_object.as_bytes()),
                invalid_field("body"),
            );
        }
    }
    cases.add(
        "register with a well-formed but false proof".into(),
        request(
            "POST",
            "/v1/agent/register",
            None,
            register_body.to_string().as_bytes(),
        ),
        expect(&[401], "invalid_signature"),
    );
    cases.add(
        "register another key's node name (signed over that key's challenge)".into(),
        request(
            "POST",
            "/v1/agent/register",
            None,
            t.stolen_name_registration.to_string().as_bytes(),
        ),
        expect(&[409], "node_key_mismatch"),
    );
    let mut renamed = t.stolen_name_registration.clone();
    renamed["name"] = json!("gn-fault-renamed");
    cases.add(
        "register a name other than the one signed".into(),
        request(
            "POST",
            "/v1/agent/register",
            None,
            renamed.to_string().as_bytes(),
        ),
        expect(&[401], "invalid_signature"),
    );
    let mut swapped = t.stolen_name_registration.clone();
    swapped["publicKey"] = json!(stranger.public_key());
    swapped["name"] = json!("gn-fault-new");
    swapped["signature"] = json!(stranger.sign_registration(
        swapped["challenge"].as_str().expect("a challenge"),
        "gn-fault-new",
        swapped["operatorAddress"].as_str(),
    ));
    cases.add(
        "register with a challenge issued for another key".into(),
        request(
            "POST",
            "/v1/agent/register",
            None,
            swapped.to_string().as_bytes(),
        ),
        expect(&[401], "invalid_challenge"),
    );
    cases.add(
        "register with a high-s signature (a second encoding of a valid proof)".into(),
        request(
            "POST",
            "/v1/agent/register",
            None,
            t.high_s_registration.to_string().as_bytes(),
        ),
        expect(&[401], "invalid_signature"),
    );
    for (what, value) in [
        (
            "an uncompressed-looking key",
            json!(format!("04{}", "ab".repeat(32))),
        ),
        (
            "a point off the curve",
            json!(format!("02{}", "ff".repeat(32))),
        ),
        (
            "upper-case hex",
            json!(stranger.public_key().to_uppercase()),
        ),
        ("65 digits", json!(stranger.public_key()[..65].to_string())),
    ] {
        cases.add(
            format!("challenge for {what}"),
            request(
                "POST",
                "/v1/agent/challenge",
                None,
                json!({"publicKey": value}).to_string().as_bytes(),
            ),
            invalid_field("publicKey"),
        );
    }
}

/// Malformed, truncated, corrupted, deeply nested and oversized bodies on every route that takes one; bad YAML.
fn malformed_bodies(t: &Target, b: &Bodies, rng: &mut Rng, cases: &mut Cases) {
    let Bodies {
        key,
        node,
        valid_spec,
        valid_job,
        heartbeat,
        report,
        checkpoint,
        register_body,
        challenge_body,
        ..
    } = b;
    let asg_running = &t.running_assignment;
    let body_routes: Vec<(String, Option<Vec<u8>>, Vec<u8>)> = vec![
        ("/v1/jobs".into(), key.clone(), valid_job.clone()),
        ("/v1/quotes".into(), key.clone(), valid_job.clone()),
        (
            "/v1/agent/challenge".into(),
            None,
            challenge_body.to_string().into_bytes(),
        ),
        (
            "/v1/agent/register".into(),
            None,
            register_body.to_string().into_bytes(),
        ),
        (
            "/v1/agent/heartbeat".into(),
            node.clone(),
            heartbeat.to_string().into_bytes(),
        ),
        (
            format!("/v1/agent/assignments/{asg_running}/status"),
            node.clone(),
            report.to_string().into_bytes(),
        ),
        (
            format!("/v1/agent/assignments/{asg_running}/checkpoint"),
            node.clone(),
            checkpoint.to_string().into_bytes(),
        ),
    ];
    for (path, auth, valid) in &body_routes {
        for body in MALFORMED {
            cases.add(
                format!(
                    "POST {path} with the malformed body {:?}",
                    String::from_utf8_lossy(body)
                ),
                request("POST", path, auth.clone(), body),
                expect(&[400], "malformed_body"),
            );
        }
        // A strict prefix of a JSON object is never JSON.
        for _ in 0..6 {
            let cut = 1 + rng.below(valid.len() - 1);
            cases.add(
                format!(
                    "POST {path} with its body cut at byte {cut} of {}",
                    valid.len()
                ),
                request("POST", path, auth.clone(), &valid[..cut]),
                expect(&[400], "malformed_body"),
            );
        }
        // A control character or an invalid UTF-8 byte anywhere breaks JSON, in a string or not.
        for _ in 0..6 {
            let at = rng.below(valid.len() + 1);
            let byte = *rng.pick(&[0x00u8, 0x01, 0x08, 0x0b, 0x0c, 0x1b, 0x1f, 0x80, 0xc0, 0xff]);
            let mut body = valid.clone();
            body.insert(at, byte);
            cases.add(
                format!("POST {path} with byte {byte:#04x} inserted at {at}"),
                request("POST", path, auth.clone(), &body),
                expect(&[400], "malformed_body"),
            );
        }
        // Nesting past the parser's limit, alone and inside a field.
        for depth in [129, 10_000, 200_000] {
            let body = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
            cases.add(
                format!("POST {path} with arrays nested {depth} deep"),
                request("POST", path, auth.clone(), body.as_bytes()),
                expect(&[400], "malformed_body"),
            );
        }
        let body = format!(
            "{{\"a\": {}1{}}}",
            "{\"b\": ".repeat(5_000),
            "}".repeat(5_000)
        );
        cases.add(
            format!("POST {path} with objects nested 5,000 deep inside a field"),
            request("POST", path, auth.clone(), body.as_bytes()),
            expect(&[400], "malformed_body"),
        );
        // Over the body limit: padding after a valid document (JSON whitespace, so the document
        // itself would be accepted were the limit not enforced), and one big string.
        for size in [
            BODY_LIMIT + 1,
            BODY_LIMIT + 4096,
            2 * BODY_LIMIT,
            8 * BODY_LIMIT,
        ] {
            let mut body = valid.clone();
            body.resize(size, b' ');
            cases.add(
                format!("POST {path} with a valid body padded to {size} bytes"),
                request("POST", path, auth.clone(), &body),
                expect(&[413], "body_too_large"),
            );
        }
        let body = format!("{{\"x\": \"{}\"}}", "a".repeat(BODY_LIMIT + 10));
        cases.add(
            format!("POST {path} with a string over the body limit"),
            request("POST", path, auth.clone(), body.as_bytes()),
            expect(&[413], "body_too_large"),
        );
    }
    // Nesting within the parser's limit, where a number belongs: a type error, not a crash.
    let mut deep = valid_spec.clone();
    deep["workload"]["builtin"]["sleep"]["durationSeconds"] =
        serde_json::from_str(&format!("{}1{}", "[".repeat(100), "]".repeat(100))).expect("JSON");
    cases.add(
        "a job with durationSeconds nested in 100 arrays".into(),
        request("POST", "/v1/jobs", key.clone(), deep.to_string().as_bytes()),
        invalid_field("spec.workload.builtin.sleep.durationSeconds"),
    );
    let mut deep_heartbeat = heartbeat.clone();
    deep_heartbeat["assignments"] =
        serde_json::from_str(&format!("{}{}", "[".repeat(100), "]".repeat(100))).expect("JSON");
    cases.add(
        "a heartbeat with assignments nested in 100 arrays".into(),
        request(
            "POST",
            "/v1/agent/heartbeat",
            node.clone(),
            deep_heartbeat.to_string().as_bytes(),
        ),
        expect_any(&[422]),
    );
    for body in NOT_OBJECTS {
        for route in ["/v1/jobs", "/v1/quotes"] {
            cases.add(
                format!("POST {route} with the body {body}"),
                request("POST", route, key.clone(), body.as_bytes()),
                expect(&[400], "malformed_body"),
            );
        }
    }
    for yaml in BAD_YAML {
        for route in ["/v1/jobs", "/v1/quotes"] {
            cases.add(
                format!("POST {route} with the YAML {:?}", clip(yaml)),
                with_header(
                    request("POST", route, key.clone(), yaml.as_bytes()),
                    "content-type",
                    b"application/yaml",
                ),
                expect_any(&[400, 422]),
            );
        }
    }
    let deep_yaml = format!("{}1{}", "[".repeat(10_000), "]".repeat(10_000));
    let deep_block: String = (0..200)
        .map(|i| format!("{}a:\n", "  ".repeat(i)))
        .collect();
    for yaml in [deep_yaml, deep_block] {
        cases.add(
            "POST /v1/jobs with YAML nested past the parser's limit".into(),
            with_header(
                request("POST", "/v1/jobs", key.clone(), yaml.as_bytes()),
                "content-type",
                b"application/yaml",
            ),
            expect_any(&[400, 422]),
        );
    }
}

/// Huge strings and out-of-range values within the body limit.
fn huge_strings(t: &Target, b: &Bodies, _rng: &mut Rng, cases: &mut Cases) {
    let Bodies {
        key,
        node,
        valid_spec,
        report,
        checkpoint,
        register_body,
        ..
    } = b;
    let asg_running = &t.running_assignment;
    let huge = "x".repeat(200_000);
    for (field, path) in [
        ("spec.workload.image", vec!["workload", "image"]),
        ("spec.placement.userRegion", vec!["placement", "userRegion"]),
        (
            "spec.pricing.maxPricePerGpuHour",
            vec!["pricing", "maxPricePerGpuHour"],
        ),
        ("spec.maxRuntime", vec!["maxRuntime"]),
        ("spec.kind", vec!["kind"]),
    ] {
        let mut body = valid_spec.clone();
        if field == "spec.workload.image" {
            body["workload"] = json!({"image": huge});
        } else {
            let mut slot = &mut body;
            for segment in &path {
                slot = &mut slot[*segment];
            }
            *slot = json!(huge);
        }
        cases.add(
            format!("a job with a 200 KB {field}"),
            request("POST", "/v1/jobs", key.clone(), body.to_string().as_bytes()),
            invalid_field(field),
        );
    }
    for (what, price) in [
        ("a price of 10^200", "1".to_string() + &"0".repeat(200)),
        (
            "a price beyond 64 bits of micro-units",
            "18446744073709551616".to_string(),
        ),
        ("a price with 7 decimals", "0.0000001".to_string()),
        ("a negative price", "-5.00".to_string()),
        ("a zero price", "0".to_string()),
    ] {
        let mut body = valid_spec.clone();
        body["pricing"]["maxPricePerGpuHour"] = json!(price);
        cases.add(
            format!("a job with {what}"),
            request("POST", "/v1/jobs", key.clone(), body.to_string().as_bytes()),
            invalid_field("spec.pricing.maxPricePerGpuHour"),
        );
    }
    for (what, slot, value) in [
        ("a 200 KB name", "name", json!(huge)),
        ("a 200 KB region", "region", json!(huge)),
        ("a 200 KB agentVersion", "agentVersion", json!(huge)),
        ("a 200 KB public key", "publicKey", json!(huge)),
        (
            "10,000 capabilities",
            "capabilities",
            json!(vec!["builtin:sleep"; 10_000]),
        ),
        (
            "65 GPUs",
            "gpus",
            json!(vec![register_body["gpus"][0].clone(); 65]),
        ),
    ] {
        let mut body = register_body.clone();
        body[slot] = value;
        cases.add(
            format!("register with {what}"),
            request(
                "POST",
                "/v1/agent/register",
                None,
                body.to_string().as_bytes(),
            ),
            expect_any(&[401, 422]),
        );
    }
    for (what, body, field) in [
        (
            "a status message of 5,000 bytes",
            sequenced(t, json!({"state": "Failed", "message": "m".repeat(5_000)})),
            "message",
        ),
        (
            "a status message of 200 KB",
            sequenced(t, json!({"state": "Failed", "message": huge})),
            "message",
        ),
    ] {
        cases.add(
            format!("node B reports on its own behalf with {what}"),
            request(
                "POST",
                &format!("/v1/agent/assignments/{asg_running}/status"),
                node.clone(),
                body.to_string().as_bytes(),
            ),
            invalid_field(field),
        );
    }
    for (what, body) in [
        (
            "a 3,000-character uri",
            sequenced(t, json!({"uri": "s".repeat(3_000), "step": 1})),
        ),
        (
            "a uri with a newline",
            sequenced(t, json!({"uri": "s3://a\nb", "step": 1})),
        ),
        ("an empty uri", sequenced(t, json!({"uri": "", "step": 1}))),
        (
            "a negative step",
            sequenced(t, json!({"uri": "s3://a", "step": -1})),
        ),
        (
            "a step of 2^64 - 1",
            sequenced(
                t,
                json!({"uri": "s3://a", "step": 18_446_744_073_709_551_615u64}),
            ),
        ),
    ] {
        cases.add(
            format!("checkpoint with {what}"),
            request(
                "POST",
                &format!("/v1/agent/assignments/{asg_running}/checkpoint"),
                node.clone(),
                body.to_string().as_bytes(),
            ),
            expect_any(&[404, 422]),
        );
    }

    if t.report_seq {
        for seq in [json!(0), json!(-1), json!(9_223_372_036_854_775_808u64)] {
            for (what, path, body) in [
                (
                    "status",
                    format!("/v1/agent/assignments/{asg_running}/status"),
                    &report,
                ),
                (
                    "checkpoint",
                    format!("/v1/agent/assignments/{asg_running}/checkpoint"),
                    &checkpoint,
                ),
            ] {
                let mut body = Value::clone(body);
                body["seq"] = seq.clone();
                cases.add(
                    format!("a {what} report with seq {seq}"),
                    request("POST", &path, node.clone(), body.to_string().as_bytes()),
                    invalid_field("seq"),
                );
            }
        }
    }
}

/// Bad ids in paths, and paths that name no route.
fn bad_paths(t: &Target, b: &Bodies, rng: &mut Rng, cases: &mut Cases) {
    let Bodies {
        key,
        node,
        report,
        checkpoint,
        ..
    } = b;
    let done = &t.done;
    let long_id = format!("job-{}", "0".repeat(8_000));
    let bad_ids: Vec<String> = vec![
        "%00".into(),
        "job-%00".into(),
        "%FF".into(),
        "%C0%AF".into(),
        "job-".into(),
        "job-zzz".into(),
        "%2E%2E".into(),
        "a%2Fb".into(),
        "%E3%82%B8%E3%83%A7%E3%83%96".into(),
        long_id,
        "%27%20OR%20%271%27%3D%271".into(),
        "job-1%3BDROP%20TABLE%20jobs".into(),
        "null".into(),
        "-1".into(),
        "%20".into(),
        "*".into(),
        format!("job-{}", rng.hex(19)),
        done.to_uppercase(),
        format!("{done}%20"),
        format!("{done}%00"),
    ];
    for id in &bad_ids {
        for (method, path, auth, body) in [
            ("GET", format!("/v1/jobs/{id}"), key.clone(), vec![]),
            ("GET", format!("/v1/jobs/{id}/events"), key.clone(), vec![]),
            ("DELETE", format!("/v1/jobs/{id}"), key.clone(), vec![]),
            ("GET", format!("/v1/nodes/{id}"), key.clone(), vec![]),
            (
                "POST",
                format!("/v1/agent/assignments/{id}/status"),
                node.clone(),
                report.to_string().into_bytes(),
            ),
            (
                "POST",
                format!("/v1/agent/assignments/{id}/checkpoint"),
                node.clone(),
                checkpoint.to_string().into_bytes(),
            ),
        ] {
            cases.add(
                format!("{method} {} (a bad id)", clip(&path)),
                request(method, &path, auth, &body),
                expect_any(&[400, 404]),
            );
        }
    }
    let very_long = format!("/v1/jobs/job-{}", "0".repeat(70_000));
    cases.add(
        "GET a 70 KB path".into(),
        request("GET", &very_long, key.clone(), b""),
        Expect {
            statuses: vec![404, 414],
            transport: true,
            ..Expect::default()
        },
    );
    for path in [
        "/v1/job".to_string(),
        "/v2/jobs".into(),
        "/v1/jobs/".into(),
        "/v1/jobs//events".into(),
        format!("/v1/jobs/{done}/cancel"),
        format!("/v1/jobs/{done}/events/1"),
        "/v1/agent/".into(),
        "/v1/agent/assignments/x".into(),
        "/v1/nodes/a/b".into(),
        "/admin".into(),
        "/v1/jobs/%2F..%2F..%2Fetc%2Fpasswd".into(),
        "/.env".into(),
    ] {
        cases.add(
            format!("GET {path}"),
            request("GET", &path, key.clone(), b""),
            expect_any(&[400, 404]),
        );
    }
}

/// Bad query parameters: limits, phases, page tokens, unknown parameters, waitSeconds.
fn bad_queries(_t: &Target, b: &Bodies, rng: &mut Rng, cases: &mut Cases) {
    let Bodies { key, node, .. } = b;
    for value in [
        "0",
        "501",
        "-1",
        "abc",
        "1.5",
        "1e2",
        "99999999999999999999",
        "",
        "%00",
        "0x10",
        "%205",
        "5%20",
        "５",
    ] {
        for route in ["/v1/jobs", "/v1/nodes"] {
            cases.add(
                format!("GET {route}?limit={value}"),
                request("GET", &format!("{route}?limit={value}"), key.clone(), b""),
                Expect {
                    field: Some("limit".into()),
                    ..expect(&[400], "invalid_query")
                },
            );
            cases.add(
                format!("GET {route}?after=(a page token)&limit={value}"),
                request(
                    "GET",
                    &format!("{route}?after={}&limit={value}", rng.hex(12)),
                    key.clone(),
                    b"",
                ),
                Expect {
                    field: Some("limit".into()),
                    ..expect(&[400], "invalid_query")
                },
            );
        }
    }
    // A page token is an id or a name: one with a NUL cannot exist (and PostgreSQL cannot even
    // compare text with it).
    for route in ["/v1/jobs", "/v1/nodes"] {
        for token in ["%00", "job-%00", "gn-%00-x"] {
            cases.add(
                format!("GET {route}?after={token}"),
                request("GET", &format!("{route}?after={token}"), key.clone(), b""),
                Expect {
                    field: Some("after".into()),
                    ..expect(&[400], "invalid_query")
                },
            );
        }
    }
    for value in ["Bogus", "running", "RUNNING", "", "%00", "Pending,Running"] {
        cases.add(
            format!("GET /v1/jobs?phase={value}"),
            request("GET", &format!("/v1/jobs?phase={value}"), key.clone(), b""),
            Expect {
                field: Some("phase".into()),
                ..expect(&[400], "invalid_query")
            },
        );
    }
    for query in [
        "foo=1",
        "limt=5",
        "Limit=5",
        "page=2",
        "offset=0&limit=5",
        "after=x&cursor=y",
    ] {
        for route in ["/v1/jobs", "/v1/nodes"] {
            cases.add(
                format!("GET {route}?{query}"),
                request("GET", &format!("{route}?{query}"), key.clone(), b""),
                expect(&[400], "invalid_query"),
            );
        }
    }
    for value in [
        "-1",
        "abc",
        "1.5",
        "",
        "1e3",
        "99999999999999999999999",
        "%00",
        "0x10",
        "+",
        "%2B-1",
    ] {
        cases.add(
            format!("GET /v1/agent/assignments?waitSeconds={value}"),
            request(
                "GET",
                &format!("/v1/agent/assignments?waitSeconds={value}"),
                node.clone(),
                b"",
            ),
            Expect {
                field: Some("waitSeconds".into()),
                ..expect(&[400], "invalid_query")
            },
        );
    }
}

/// Methods a route does not take.
fn wrong_methods(t: &Target, b: &Bodies, _rng: &mut Rng, cases: &mut Cases) {
    let Bodies {
        key,
        node,
        valid_job,
        ..
    } = b;
    let running = &t.running;
    let asg_running = &t.running_assignment;
    let methods: Vec<(&str, String)> = vec![
        ("PUT", "/v1/jobs".into()),
        ("PATCH", "/v1/jobs".into()),
        ("DELETE", "/v1/jobs".into()),
        ("PUT", format!("/v1/jobs/{running}")),
        ("PATCH", format!("/v1/jobs/{running}")),
        ("POST", format!("/v1/jobs/{running}")),
        ("POST", format!("/v1/jobs/{running}/events")),
        ("DELETE", format!("/v1/jobs/{running}/events")),
        ("PUT", format!("/v1/jobs/{running}/events")),
        ("POST", "/v1/nodes".into()),
        ("DELETE", "/v1/nodes".into()),
        ("PUT", format!("/v1/nodes/{}", t.node_a)),
        ("DELETE", format!("/v1/nodes/{}", t.node_a)),
        ("PATCH", format!("/v1/nodes/{}", t.node_a)),
        ("GET", "/v1/quotes".into()),
        ("PUT", "/v1/quotes".into()),
        ("POST", "/v1/prices".into()),
        ("DELETE", "/v1/prices".into()),
        ("GET", "/v1/agent/heartbeat".into()),
        ("PUT", "/v1/agent/heartbeat".into()),
        ("GET", "/v1/agent/register".into()),
        ("DELETE", "/v1/agent/register".into()),
        ("GET", "/v1/agent/challenge".into()),
        ("POST", "/v1/agent/assignments".into()),
        ("DELETE", "/v1/agent/assignments".into()),
        ("GET", format!("/v1/agent/assignments/{asg_running}/status")),
        ("PUT", format!("/v1/agent/assignments/{asg_running}/status")),
        (
            "DELETE",
            format!("/v1/agent/assignments/{asg_running}/status"),
        ),
        (
            "GET",
            format!("/v1/agent/assignments/{asg_running}/checkpoint"),
        ),
        ("POST", "/healthz".into()),
        ("DELETE", "/readyz".into()),
        ("POST", "/metrics".into()),
        ("PUT", "/openapi.json".into()),
        ("OPTIONS", "/v1/jobs".into()),
        ("OPTIONS", format!("/v1/jobs/{running}")),
        ("TRACE", "/v1/jobs".into()),
        ("FROBNICATE", "/v1/jobs".into()),
        ("FROBNICATE", format!("/v1/jobs/{running}")),
    ];
    for (method, path) in &methods {
        let auth = if path.starts_with("/v1/agent/") {
            node.clone()
        } else {
            key.clone()
        };
        cases.add(
            format!("{method} {path}"),
            request(method, path, auth, valid_job),
            expect(&[405], "method_not_allowed"),
        );
    }
}

/// Content types the hub does not read.
fn content_types(_t: &Target, b: &Bodies, _rng: &mut Rng, cases: &mut Cases) {
    let Bodies { key, valid_job, .. } = b;
    for content_type in [
        "text/plain",
        "text/html",
        "application/xml",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/octet-stream",
        "image/png",
        "application/jsonx",
        "json",
        "application/json-patch+json",
        "*/*",
        ";",
        "application/ json",
    ] {
        for route in ["/v1/jobs", "/v1/quotes"] {
            cases.add(
                format!("POST {route} with a valid job as {content_type}"),
                with_header(
                    request("POST", route, key.clone(), valid_job),
                    "content-type",
                    content_type.as_bytes(),
                ),
                expect(&[415], "unsupported_media_type"),
            );
        }
    }
    let yaml_job = "kind: Batch\nworkload: {builtin: {sleep: {durationSeconds: 1}}}\n\
                    pricing: {maxPricePerGpuHour: \"5.00\"}\n";
    cases.add(
        "POST /v1/jobs with a YAML job labelled JSON".into(),
        request("POST", "/v1/jobs", key.clone(), yaml_job.as_bytes()),
        expect(&[400], "malformed_body"),
    );
}

/// Agent protocol versions the hub does not speak.
fn protocol_versions(t: &Target, b: &Bodies, _rng: &mut Rng, cases: &mut Cases) {
    let Bodies {
        node,
        heartbeat,
        report,
        checkpoint,
        register_body,
        challenge_body,
        ..
    } = b;
    let asg_running = &t.running_assignment;
    let versioned: Vec<Route> = vec![
        (
            "POST",
            "/v1/agent/challenge".into(),
            None,
            challenge_body.to_string().into_bytes(),
        ),
        (
            "POST",
            "/v1/agent/register".into(),
            None,
            register_body.to_string().into_bytes(),
        ),
        (
            "POST",
            "/v1/agent/heartbeat".into(),
            node.clone(),
            heartbeat.to_string().into_bytes(),
        ),
        (
            "GET",
            "/v1/agent/assignments?waitSeconds=0".into(),
            node.clone(),
            vec![],
        ),
        (
            "POST",
            format!("/v1/agent/assignments/{asg_running}/status"),
            node.clone(),
            report.to_string().into_bytes(),
        ),
        (
            "POST",
            format!("/v1/agent/assignments/{asg_running}/checkpoint"),
            node.clone(),
            checkpoint.to_string().into_bytes(),
        ),
    ];
    for version in ["v2", "v0", "", "V1", "v1 beta", "1"] {
        for (method, path, auth, body) in &versioned {
            cases.add(
                format!("{method} {path} announcing agent protocol {version:?}"),
                with_header(
                    request(method, path, auth.clone(), body),
                    "agora-protocol-version",
                    version.as_bytes(),
                ),
                expect(&[400], "unsupported_protocol_version"),
            );
        }
    }
}

/// Seeded mutations of valid bodies: a wrong type, a cut, or nesting past the parser's limit at a random spot.
fn mutations(t: &Target, b: &Bodies, rng: &mut Rng, cases: &mut Cases) {
    let Bodies {
        key,
        node,
        valid_spec,
        heartbeat,
        report,
        register_body,
        ..
    } = b;
    let asg_running = &t.running_assignment;
    let bases: Vec<(String, Option<Vec<u8>>, Value)> = vec![
        ("/v1/jobs".into(), key.clone(), valid_spec.clone()),
        (
            "/v1/jobs".into(),
            key.clone(),
            submission_bases()[0].clone(),
        ),
        (
            "/v1/quotes".into(),
            key.clone(),
            submission_bases()[1].clone(),
        ),
        ("/v1/agent/register".into(), None, register_body.clone()),
        (
            "/v1/agent/heartbeat".into(),
            node.clone(),
            heartbeat.clone(),
        ),
        (
            format!("/v1/agent/assignments/{asg_running}/status"),
            node.clone(),
            report.clone(),
        ),
    ];
    for _ in 0..300 {
        let (path, auth, base) = rng.pick(&bases).clone();
        let spots = positions(&base);
        let spot = rng.pick(&spots).clone();
        let prefix = if path.starts_with("/v1/agent/") {
            ""
        } else {
            "spec"
        };
        match rng.below(3) {
            0 => {
                let wrongs = wrong_values(at(&base, &spot));
                let wrong = rng.pick(&wrongs).clone();
                cases.add(
                    format!(
                        "mutation: POST {path} with {} = {wrong}",
                        dotted(prefix, &spot)
                    ),
                    request(
                        "POST",
                        &path,
                        auth,
                        replaced(&base, &spot, wrong).to_string().as_bytes(),
                    ),
                    invalid_field(dotted(prefix, &spot)),
                );
            }
            1 => {
                let text = base.to_string();
                let cut = 1 + rng.below(text.len() - 1);
                cases.add(
                    format!("mutation: POST {path} cut at byte {cut}"),
                    request("POST", &path, auth, &text.as_bytes()[..cut]),
                    expect(&[400], "malformed_body"),
                );
            }
            _ => {
                let depth = 129 + rng.below(2_000);
                let nested = format!("{}0{}", "[".repeat(depth), "]".repeat(depth));
                let mut text = replaced(&base, &spot, json!("__HOLE__")).to_string();
                text = text.replace("\"__HOLE__\"", &nested);
                cases.add(
                    format!(
                        "mutation: POST {path} with {} nested {depth} deep",
                        dotted(prefix, &spot)
                    ),
                    request("POST", &path, auth, text.as_bytes()),
                    expect(&[400], "malformed_body"),
                );
            }
        }
    }
}

/// Sends every bad request to a hub holding a finished, a running and a pending job, a live
/// agent and a node of the test's own; checks each answer (a 4xx, in the API's error shape, with
/// the code the docs give for it and, where one field is at fault, that field), then that the
/// hub shows exactly what it showed before: jobs, events, nodes, another tenant's view, the
/// submission counter, no 5xx in its own request metrics.
fn bad_requests_change_nothing(backend: Backend) {
    let test_started = Instant::now();
    let dir = tempfile::tempdir().expect("a temp dir");
    let Some(db) = TestDatabase::fresh(backend, dir.path()) else {
        return;
    };
    let mut target = set_up_target(dir.path(), &db);
    let raw = RawClient::new(&target.hub.url);

    // The bases of the wrong-type cases are valid as they are: a quote answers 200 for each.
    for base in submission_bases() {
        let reply = raw
            .send(&request(
                "POST",
                "/v1/quotes",
                Some(bearer(&target.key)),
                base.to_string().as_bytes(),
            ))
            .expect("a quote");
        assert_eq!(
            reply.status,
            200,
            "the base {base} is not valid: {}",
            reply.text()
        );
    }

    let cases = bad_requests(&target);
    assert!(cases.len() >= 1_000, "only {} cases", cases.len());
    let submitted_before = metric_lines(&raw, "agora_jobs_submitted_total");
    let before = snapshot(&target);

    let sending = Instant::now();
    let mut failures = Vec::new();
    let mut by_status: BTreeMap<u16, usize> = BTreeMap::new();
    for (i, case) in cases.iter().enumerate() {
        // Bodies over the limit and paths over 64 KiB are refused before they are read: send
        // those as curl would, reading the answer while writing.
        let big = case.request.body.len() > BODY_LIMIT || case.request.path.len() > 60_000;
        let sent = if big {
            raw.send_over_socket(&case.request)
        } else {
            raw.send(&case.request)
        };
        match sent {
            Ok(reply) => {
                *by_status.entry(reply.status).or_default() += 1;
                if let Some(why) = judge(case, &reply) {
                    failures.push(format!("#{i} {}: {why}", case.label));
                }
            }
            Err(e) => failures.push(format!("#{i} {}: no answer: {}", case.label, clip(&e))),
        }
    }
    let sent_in = sending.elapsed();

    assert!(
        target.hub.process.exit_status().is_none(),
        "the hub died\n{}",
        target.hub.process.log_tail()
    );
    assert!(
        target.agent.exit_status().is_none(),
        "the agent died\n{}",
        target.agent.log_tail()
    );
    assert!(
        failures.is_empty(),
        "{} of {} bad requests were not answered as they should be:\n{}",
        failures.len(),
        cases.len(),
        failures
            .iter()
            .take(60)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );

    let after = snapshot(&target);
    assert!(
        before == after,
        "the bad requests changed the hub's state:\n{}",
        first_difference(&before, &after)
    );
    assert_eq!(
        metric_lines(&raw, "agora_jobs_submitted_total"),
        submitted_before,
        "jobs were submitted"
    );
    let errors: Vec<String> = metric_lines(&raw, "agora_http_requests_total")
        .into_iter()
        .filter(|l| l.contains("status=\"5"))
        .collect();
    assert!(
        errors.is_empty(),
        "the hub counted 5xx answers: {errors:#?}"
    );
    // The running job is still running where it was, and the test's node still works.
    let running = target.api.job(&target.running).expect("the running job");
    assert_eq!(running["status"]["phase"], "Running", "{running:#}");
    assert_eq!(placed_node(&running), target.node_a);
    let reply = raw
        .send(&request(
            "GET",
            "/v1/agent/assignments?waitSeconds=0",
            Some(bearer(&target.token_b)),
            b"",
        ))
        .expect("a poll");
    assert_eq!(
        reply.status,
        200,
        "node B's token stopped working: {}",
        reply.text()
    );

    println!(
        "{backend:?}: {} bad requests in {sent_in:?}, answered {by_status:?}; nothing changed; \
         test took {:?}",
        cases.len(),
        test_started.elapsed()
    );
}

#[test]
fn a_thousand_bad_requests_get_4xx_and_change_nothing_sqlite() {
    bad_requests_change_nothing(Backend::Sqlite);
}

#[test]
fn a_thousand_bad_requests_get_4xx_and_change_nothing_postgres() {
    bad_requests_change_nothing(Backend::Postgres);
}
