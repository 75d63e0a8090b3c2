//! The OpenAPI 3.1 document of the hub, generated from the code: operations from the table below,
//! schemas from the very types the handlers use (`schemars`, JSON Schema 2020-12, which OpenAPI 3.1
//! adopts as its schema dialect). The request body of `POST /v1/jobs` is the CRD's spec type, so the
//! document, the CRD and the hub's validation cannot disagree. Checked in as `docs/openapi.json`;
//! a test fails when the two differ, and another that every operation here is routed.

use crds::{agent, rest, v1alpha1};
use schemars::{JsonSchema, SchemaGenerator, generate::SchemaSettings};
use serde_json::{Map, Value, json};

/// Who may call an operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Auth {
    None,
    ApiKey,
    NodeToken,
}

/// Builds the schema of a body, registering the types it refers to.
type SchemaFn = fn(&mut SchemaGenerator) -> Value;

/// A documented response: status, description, and the body's schema if it has one.
type ResponseDoc = (u16, &'static str, Option<SchemaFn>);

/// One documented operation.
pub struct Operation {
    pub method: &'static str,
    pub path: &'static str,
    pub id: &'static str,
    pub summary: &'static str,
    pub auth: Auth,
    pub query: &'static [(&'static str, &'static str, &'static str)],
    request: Option<SchemaFn>,
    responses: &'static [ResponseDoc],
}

fn schema<T: JsonSchema>(generator: &mut SchemaGenerator) -> Value {
    generator.subschema_for::<T>().to_value()
}

/// A submission: a whole ComputeJob manifest, or just its spec.
fn submission(generator: &mut SchemaGenerator) -> Value {
    let spec = schema::<v1alpha1::ComputeJobSpec>(generator);
    json!({
        "oneOf": [
            {
                "title": "ComputeJob manifest",
                "type": "object",
                "required": ["apiVersion", "kind", "spec"],
                "properties": {
                    "apiVersion": {"const": "agora.dev/v1alpha1"},
                    "kind": {"const": "ComputeJob"},
                    "metadata": {"type": "object", "properties": {"name": {
                        "type": "string", "maxLength": 253,
                        "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
                    }}},
                    "spec": spec
                }
            },
            {"title": "ComputeJob spec", "allOf": [spec.clone()], "not": {"required": ["apiVersion"]}}
        ]
    })
}

/// A body of raw bytes (`application/octet-stream`), such as a bandwidth probe's upload.
fn binary_body(_: &mut SchemaGenerator) -> Value {
    json!({"type": "string", "contentMediaType": "application/octet-stream"})
}

/// The schema of a page size.
const LIMIT_SCHEMA: &str = r#"{"type": "integer", "minimum": 1, "maximum": 500}"#;

/// Answers every operation that reads a body or a query may give.
const ERRORS: [ResponseDoc; 2] = [
    (400, "Malformed request", Some(schema::<rest::ErrorBody>)),
    (
        422,
        "A field is invalid; `field` names it",
        Some(schema::<rest::ErrorBody>),
    ),
];

/// The answer of any rate-limited operation (every one under `/v1`) once its budget is spent.
const RATE_LIMITED: ResponseDoc = (
    429,
    "Too many requests for this credential or client address; `Retry-After` says when to retry",
    Some(schema::<rest::ErrorBody>),
);

/// Every operation of the API.
pub const OPERATIONS: &[Operation] = &[
    Operation {
        method: "post",
        path: "/v1/jobs",
        id: "submitJob",
        summary: "Submit a job (JSON or YAML; a ComputeJob manifest or its spec). Idempotent under an Idempotency-Key header.",
        auth: Auth::ApiKey,
        query: &[],
        request: Some(submission),
        responses: &[
            (201, "The job was created", Some(schema::<rest::Job>)),
            (
                200,
                "The same Idempotency-Key and body were submitted before: that job",
                Some(schema::<rest::Job>),
            ),
            (
                409,
                "The Idempotency-Key was used with a different body",
                Some(schema::<rest::ErrorBody>),
            ),
            (
                413,
                "The body is too large",
                Some(schema::<rest::ErrorBody>),
            ),
            (
                415,
                "Unsupported media type",
                Some(schema::<rest::ErrorBody>),
            ),
            (
                422,
                "A field is invalid; `field` names it",
                Some(schema::<rest::ErrorBody>),
            ),
        ],
    },
    Operation {
        method: "get",
        path: "/v1/jobs",
        id: "listJobs",
        summary: "List the tenant's jobs, newest first",
        auth: Auth::ApiKey,
        query: &[
            (
                "phase",
                r#"{"type": "string", "enum": ["Pending", "Scheduled", "Running", "Verifying", "Succeeded", "Failed", "Cancelled"]}"#,
                "Only jobs in this phase",
            ),
            ("limit", LIMIT_SCHEMA, "Page size, 1 to 500 (default 50)"),
            (
                "after",
                r#"{"type": "string"}"#,
                "The `next` cursor of the previous page",
            ),
        ],
        request: None,
        responses: &[(200, "A page of jobs", Some(schema::<rest::List<rest::Job>>))],
    },
    Operation {
        method: "get",
        path: "/v1/jobs/{id}",
        id: "getJob",
        summary: "Read a job",
        auth: Auth::ApiKey,
        query: &[],
        request: None,
        responses: &[
            (200, "The job", Some(schema::<rest::Job>)),
            (
                404,
                "No such job for this tenant",
                Some(schema::<rest::ErrorBody>),
            ),
        ],
    },
    Operation {
        method: "delete",
        path: "/v1/jobs/{id}",
        id: "cancelJob",
        summary: "Cancel a job; its workers are stopped. Cancelling a cancelled job is a no-op.",
        auth: Auth::ApiKey,
        query: &[],
        request: None,
        responses: &[
            (200, "The cancelled job", Some(schema::<rest::Job>)),
            (
                404,
                "No such job for this tenant",
                Some(schema::<rest::ErrorBody>),
            ),
            (
                409,
                "The job already ended",
                Some(schema::<rest::ErrorBody>),
            ),
        ],
    },
    Operation {
        method: "get",
        path: "/v1/jobs/{id}/verifications",
        id: "listJobVerifications",
        summary: "How a job's attempts were verified (SpotCheck, Redundant): the sample's seed and chunks, the verifier and tie-breaker jobs, the verdict and, for a failed check, the evidence",
        auth: Auth::ApiKey,
        query: &[],
        request: None,
        responses: &[
            (
                200,
                "The verifications, attempt by attempt",
                Some(schema::<rest::List<rest::Verification>>),
            ),
            (
                404,
                "No such job for this tenant",
                Some(schema::<rest::ErrorBody>),
            ),
        ],
    },
    Operation {
        method: "get",
        path: "/v1/jobs/{id}/events",
        id: "listJobEvents",
        summary: "A job's event log: every phase change with its reason",
        auth: Auth::ApiKey,
        query: &[
            ("limit", LIMIT_SCHEMA, "Page size, 1 to 500 (default 50)"),
            (
                "after",
                r#"{"type": "string", "pattern": "^[0-9]{0,18}$"}"#,
                "The `next` cursor of the previous page (empty: the first page)",
            ),
        ],
        request: None,
        responses: &[
            (
                200,
                "The events, oldest first",
                Some(schema::<rest::JobEventList>),
            ),
            (
                404,
                "No such job for this tenant",
                Some(schema::<rest::ErrorBody>),
            ),
        ],
    },
    Operation {
        method: "get",
        path: "/v1/nodes",
        id: "listNodes",
        summary: "List registered GPU nodes by name",
        auth: Auth::ApiKey,
        query: &[
            ("limit", LIMIT_SCHEMA, "Page size, 1 to 500 (default 50)"),
            (
                "after",
                r#"{"type": "string"}"#,
                "The `next` cursor of the previous page",
            ),
        ],
        request: None,
        responses: &[(
            200,
            "A page of nodes",
            Some(schema::<rest::List<rest::Node>>),
        )],
    },
    Operation {
        method: "get",
        path: "/v1/nodes/{name}",
        id: "getNode",
        summary: "Read a node",
        auth: Auth::ApiKey,
        query: &[],
        request: None,
        responses: &[
            (200, "The node", Some(schema::<rest::Node>)),
            (404, "No such node", Some(schema::<rest::ErrorBody>)),
        ],
    },
    Operation {
        method: "get",
        path: "/v1/settlement/batches",
        id: "listSettlementBatches",
        summary: "List settlement batches by id (oldest epoch first), optionally in one state",
        auth: Auth::ApiKey,
        query: &[
            (
                "state",
                r#"{"type": "string", "enum": ["built", "posted", "confirmed", "final", "challenged"]}"#,
                "Only batches in this state",
            ),
            ("limit", LIMIT_SCHEMA, "Page size, 1 to 500 (default 50)"),
            (
                "after",
                r#"{"type": "string"}"#,
                "The `next` cursor of the previous page",
            ),
        ],
        request: None,
        responses: &[
            (
                200,
                "A page of batches",
                Some(schema::<rest::List<rest::SettlementBatch>>),
            ),
            (400, "A bad query", Some(schema::<rest::ErrorBody>)),
        ],
    },
    Operation {
        method: "get",
        path: "/v1/settlement/batches/{id}",
        id: "getSettlementBatch",
        summary: "Read a settlement batch: its root, totals, state and transaction",
        auth: Auth::ApiKey,
        query: &[],
        request: None,
        responses: &[
            (200, "The batch", Some(schema::<rest::SettlementBatch>)),
            (404, "No such batch", Some(schema::<rest::ErrorBody>)),
        ],
    },
    Operation {
        method: "get",
        path: "/v1/receipts",
        id: "listReceipts",
        summary: "A job's usage receipts, each with the batch that settles it (if one does yet)",
        auth: Auth::ApiKey,
        query: &[("job", r#"{"type": "string"}"#, "The job (required)")],
        request: None,
        responses: &[
            (
                200,
                "The job's receipts",
                Some(schema::<rest::List<rest::ReceiptItem>>),
            ),
            (400, "No job given", Some(schema::<rest::ErrorBody>)),
            (
                404,
                "No such job for this tenant",
                Some(schema::<rest::ErrorBody>),
            ),
        ],
    },
    Operation {
        method: "get",
        path: "/v1/receipts/{id}/proof",
        id: "getReceiptProof",
        summary: "A settled receipt's Merkle inclusion proof in its batch (RFC 6962)",
        auth: Auth::ApiKey,
        query: &[],
        request: None,
        responses: &[
            (200, "The proof", Some(schema::<rest::ReceiptProof>)),
            (400, "Not a receipt id", Some(schema::<rest::ErrorBody>)),
            (
                404,
                "No batch settles this receipt (yet)",
                Some(schema::<rest::ErrorBody>),
            ),
        ],
    },
    Operation {
        method: "get",
        path: "/v1/settlement/slashes",
        id: "listSettlementSlashes",
        summary: "List the slashes asked of the settlement contract (oldest first): pending, posted with what the contract took, or failed with why",
        auth: Auth::ApiKey,
        query: &[
            (
                "operator",
                r#"{"type": "string"}"#,
                "Only the slashes of this operator (chain address)",
            ),
            (
                "state",
                r#"{"type": "string", "enum": ["pending", "posted", "failed"]}"#,
                "Only slashes in this state",
            ),
            ("limit", LIMIT_SCHEMA, "Page size, 1 to 500 (default 50)"),
            (
                "after",
                r#"{"type": "string"}"#,
                "The `next` cursor of the previous page",
            ),
        ],
        request: None,
        responses: &[
            (
                200,
                "A page of slashes",
                Some(schema::<rest::List<crate::slashing::SlashView>>),
            ),
            (400, "A bad query", Some(schema::<rest::ErrorBody>)),
        ],
    },
    Operation {
        method: "get",
        path: "/v1/operators/{address}/statement",
        id: "getOperatorStatement",
        summary: "An operator's earnings statement for a period: jobs, GPU-hours, gross, fee, slashes, net, with batch and transaction references. JSON, or CSV with `Accept: text/csv` or `format=csv`. Income counts when its batch went final.",
        auth: Auth::ApiKey,
        query: &[
            (
                "from",
                r#"{"type": "string"}"#,
                "Start of the period (inclusive): RFC 3339, a date (midnight UTC) or Unix milliseconds; default: the start of the current UTC month, or of the month `to` ends",
            ),
            (
                "to",
                r#"{"type": "string"}"#,
                "End of the period (exclusive), same forms; default: the start of the month after `from`. At most 400 days after `from`",
            ),
            (
                "format",
                r#"{"type": "string", "enum": ["json", "csv"]}"#,
                "json (default) or csv; without it, `Accept: text/csv` asks for CSV",
            ),
        ],
        request: None,
        responses: &[
            (
                200,
                "The statement (a zero statement if nothing paid the operator); as CSV, one row per job, batch and slash and a total row",
                Some(schema::<crate::statement::Statement>),
            ),
            (
                400,
                "Not a chain address, or a bad period or format; `field` names it",
                Some(schema::<rest::ErrorBody>),
            ),
        ],
    },
    Operation {
        method: "get",
        path: "/v1/operators/{address}",
        id: "getOperatorAccount",
        summary: "An operator's account on the chain: bank balance (where net pay arrives), bonded and unbonding stake, slashed total, jail, registered nodes",
        auth: Auth::ApiKey,
        query: &[],
        request: None,
        responses: &[
            (200, "The account", Some(schema::<rest::OperatorAccount>)),
            (
                400,
                "Not a chain address; `field` names it",
                Some(schema::<rest::ErrorBody>),
            ),
            (
                503,
                "No chain configured (`no_chain`), or the chain did not answer (`chain_unavailable`)",
                Some(schema::<rest::ErrorBody>),
            ),
        ],
    },
    Operation {
        method: "get",
        path: "/v1/settlement/chain",
        id: "getSettlementChain",
        summary: "The chain the hub settles on: its label (the embedded devnet says it is simulated), the epoch, the contract's params and running totals",
        auth: Auth::ApiKey,
        query: &[],
        request: None,
        responses: &[
            (200, "The chain", Some(schema::<rest::ChainInfo>)),
            (
                503,
                "No chain configured (`no_chain`), or the chain did not answer (`chain_unavailable`)",
                Some(schema::<rest::ErrorBody>),
            ),
        ],
    },
    Operation {
        method: "get",
        path: "/v1/prices",
        id: "listPrices",
        summary: "Base price per GPU class; a job pays max(node ask, base price), never above its maximum",
        auth: Auth::ApiKey,
        query: &[],
        request: None,
        responses: &[(200, "Base prices", Some(schema::<rest::PriceList>))],
    },
    Operation {
        method: "post",
        path: "/v1/quotes",
        id: "quoteJob",
        summary: "Price and tentative placement of a job on the current fleet, without submitting it",
        auth: Auth::ApiKey,
        query: &[],
        request: Some(submission),
        responses: &[
            (
                200,
                "The quote (placeable or not, with the reason)",
                Some(schema::<rest::Quote>),
            ),
            (
                413,
                "The body is too large",
                Some(schema::<rest::ErrorBody>),
            ),
            (
                415,
                "Unsupported media type",
                Some(schema::<rest::ErrorBody>),
            ),
        ],
    },
    Operation {
        method: "post",
        path: "/v1/agent/challenge",
        id: "issueRegistrationChallenge",
        summary: "Agent: get a single-use challenge for the node's public key, to sign into its registration",
        auth: Auth::None,
        query: &[],
        request: Some(schema::<agent::ChallengeRequest>),
        responses: &[(
            200,
            "The challenge and when it expires",
            Some(schema::<agent::ChallengeResponse>),
        )],
    },
    Operation {
        method: "post",
        path: "/v1/agent/register",
        id: "registerNode",
        summary: "Agent: register a node with a signed challenge and receive its token",
        auth: Auth::None,
        query: &[],
        request: Some(schema::<agent::RegisterRequest>),
        responses: &[
            (
                200,
                "The node's token",
                Some(schema::<agent::RegisterResponse>),
            ),
            (
                401,
                "The challenge or the signature was refused; `field` names which",
                Some(schema::<rest::ErrorBody>),
            ),
            (
                409,
                "The node name is bound to another public key",
                Some(schema::<rest::ErrorBody>),
            ),
            (422, "A field is invalid", Some(schema::<rest::ErrorBody>)),
        ],
    },
    Operation {
        method: "post",
        path: "/v1/agent/heartbeat",
        id: "heartbeat",
        summary: "Agent: report liveness, inventory changes and held assignments; learn what to stop",
        auth: Auth::NodeToken,
        query: &[],
        request: Some(schema::<agent::HeartbeatRequest>),
        responses: &[(
            200,
            "Assignments to stop",
            Some(schema::<agent::HeartbeatResponse>),
        )],
    },
    Operation {
        method: "get",
        path: "/v1/agent/assignments",
        id: "pollAssignments",
        summary: "Agent: long-poll for the assignments the node should run",
        auth: Auth::NodeToken,
        query: &[(
            "waitSeconds",
            r#"{"type": "integer", "minimum": 0}"#,
            "Wait up to this long (at most 30 s) for work when there is none",
        )],
        request: None,
        responses: &[(
            200,
            "The node's live assignments",
            Some(schema::<agent::AssignmentList>),
        )],
    },
    Operation {
        method: "post",
        path: "/v1/agent/assignments/{id}/status",
        id: "reportAssignmentStatus",
        summary: "Agent: report a worker's state; each report carries its seq, and a replayed or overtaken one is refused",
        auth: Auth::NodeToken,
        query: &[],
        request: Some(schema::<agent::StatusReport>),
        responses: &[
            (204, "Recorded", None),
            (
                404,
                "No such assignment on this node",
                Some(schema::<rest::ErrorBody>),
            ),
            (
                409,
                "The assignment already ended differently (assignment_final), or the report's seq is not above the last one applied (stale_report)",
                Some(schema::<rest::ErrorBody>),
            ),
        ],
    },
    Operation {
        method: "post",
        path: "/v1/agent/assignments/{id}/checkpoint",
        id: "reportCheckpoint",
        summary: "Agent: report a checkpoint a worker saved; the job keeps its latest by step and hands it to later attempts",
        auth: Auth::NodeToken,
        query: &[],
        request: Some(schema::<agent::CheckpointReport>),
        responses: &[
            (
                204,
                "Recorded, or older than the job's checkpoint (which stays)",
                None,
            ),
            (
                404,
                "No such assignment on this node",
                Some(schema::<rest::ErrorBody>),
            ),
            (
                409,
                "The assignment ended or was lost; its checkpoints no longer count (assignment_final), or the report's seq is not above the last one applied (stale_report)",
                Some(schema::<rest::ErrorBody>),
            ),
        ],
    },
    Operation {
        method: "post",
        path: "/v1/agent/assignments/{id}/receipts",
        id: "reportReceipt",
        summary: "Agent: send a signed, cumulative usage receipt for an assignment; the hub keeps the latest per assignment for settlement",
        auth: Auth::NodeToken,
        query: &[],
        request: Some(schema::<agent::ReceiptReport>),
        responses: &[
            (
                204,
                "Stored as the assignment's latest receipt, or an exact replay of it",
                None,
            ),
            (
                401,
                "The signature is not the node's registered key's over the receipt (invalid_signature)",
                Some(schema::<rest::ErrorBody>),
            ),
            (
                404,
                "No such assignment on this node",
                Some(schema::<rest::ErrorBody>),
            ),
            (
                409,
                "The receipt states another node, job, assignment, network, price or GPU count than the hub agreed (receipt_mismatch, naming the field), or its sequence is not above the stored receipt's (stale_receipt)",
                Some(schema::<rest::ErrorBody>),
            ),
            (
                422,
                "The window starts before the assignment was placed or ends after now or after it finished (beyond 30 s of clock skew), or the GPU time does not fit in it",
                Some(schema::<rest::ErrorBody>),
            ),
        ],
    },
    Operation {
        method: "post",
        path: "/v1/agent/assignments/{id}/opening",
        id: "openCommitments",
        summary: "Agent: open the commitments a heartbeat answer asked for (`openings`): the rows of C of the requested chunks in turn, u32 little-endian (application/octet-stream, at most 8 MiB), signed in the `x-agora-signature` header; the hub checks them against the commitments and with Freivalds' algorithm",
        auth: Auth::NodeToken,
        query: &[],
        request: Some(binary_body),
        responses: &[
            (
                200,
                "The hub's finding, `passed` or `failed` (also for a repeat of an answered opening)",
                Some(schema::<agent::OpeningAnswer>),
            ),
            (
                404,
                "No opening is asked of this assignment on this node (never asked, or the check moved on)",
                Some(schema::<rest::ErrorBody>),
            ),
            (
                413,
                "The body is larger than 8 MiB",
                Some(schema::<rest::ErrorBody>),
            ),
            (
                422,
                "The body is not the requested chunks' rows (its size names the expected one), or the signature is missing or not the node's; nothing is recorded",
                Some(schema::<rest::ErrorBody>),
            ),
        ],
    },
    Operation {
        method: "get",
        path: "/v1/agent/bandwidth",
        id: "downloadBandwidthProbe",
        summary: "Agent: download N random bytes (application/octet-stream) to measure the node's downlink from the hub",
        auth: Auth::NodeToken,
        query: &[(
            "bytes",
            r#"{"type": "integer", "minimum": 1, "maximum": 16777216}"#,
            "How many bytes to send (required, at most 16 MiB)",
        )],
        request: None,
        responses: &[
            (200, "N random bytes (application/octet-stream)", None),
            (
                503,
                "The hub is serving as many bandwidth probes as it allows at once (bandwidth_busy); `Retry-After` says when to probe again",
                Some(schema::<rest::ErrorBody>),
            ),
        ],
    },
    Operation {
        method: "post",
        path: "/v1/agent/bandwidth",
        id: "uploadBandwidthProbe",
        summary: "Agent: upload up to 16 MiB (application/octet-stream) to measure the node's uplink; the hub discards it and answers how many bytes it read and how long that took",
        auth: Auth::NodeToken,
        query: &[],
        request: Some(binary_body),
        responses: &[
            (
                200,
                "Bytes read and the time they took",
                Some(schema::<agent::BandwidthUpload>),
            ),
            (
                413,
                "The body is larger than 16 MiB",
                Some(schema::<rest::ErrorBody>),
            ),
            (
                503,
                "The hub is serving as many bandwidth probes as it allows at once (bandwidth_busy); `Retry-After` says when to probe again",
                Some(schema::<rest::ErrorBody>),
            ),
        ],
    },
    Operation {
        method: "get",
        path: "/healthz",
        id: "healthz",
        summary: "Liveness",
        auth: Auth::None,
        query: &[],
        request: None,
        responses: &[(200, "The process is alive", None)],
    },
    Operation {
        method: "get",
        path: "/readyz",
        id: "readyz",
        summary: "Readiness: the database answers",
        auth: Auth::None,
        query: &[],
        request: None,
        responses: &[
            (200, "Ready", None),
            (503, "Not ready", Some(schema::<rest::ErrorBody>)),
        ],
    },
    Operation {
        method: "get",
        path: "/metrics",
        id: "metrics",
        summary: "Prometheus metrics (text format)",
        auth: Auth::None,
        query: &[],
        request: None,
        responses: &[(200, "Metrics", None)],
    },
    Operation {
        method: "get",
        path: "/openapi.json",
        id: "openapi",
        summary: "This document",
        auth: Auth::None,
        query: &[],
        request: None,
        responses: &[(200, "The OpenAPI document", None)],
    },
];

/// The whole OpenAPI document.
pub fn document() -> Value {
    let mut generator = SchemaSettings::draft2020_12()
        .with(|s| {
            s.definitions_path = "/components/schemas".into();
            s.meta_schema = None;
        })
        .into_generator();
    let mut paths = Map::new();
    for op in OPERATIONS {
        let mut operation = Map::new();
        operation.insert("operationId".into(), op.id.into());
        operation.insert("summary".into(), op.summary.into());
        operation.insert("tags".into(), json!([tag(op.path)]));
        let mut parameters: Vec<Value> = path_parameters(op.path);
        parameters.extend(op.query.iter().map(|(name, schema, description)| {
            let schema: Value = serde_json::from_str(schema).expect("query parameter schemas are JSON");
            json!({"name": name, "in": "query", "required": false, "description": description, "schema": schema})
        }));
        if op.id == "submitJob" {
            parameters.push(json!({
                "name": "Idempotency-Key", "in": "header", "required": false,
                "description": "Retries with the same key and body return the same job",
                "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[!-~]+$"}
            }));
        }
        if !parameters.is_empty() {
            operation.insert("parameters".into(), Value::Array(parameters));
        }
        if let Some(request) = op.request {
            let body = request(&mut generator);
            let mut content = Map::new();
            let media_type = if op.id == "uploadBandwidthProbe" {
                "application/octet-stream"
            } else {
                "application/json"
            };
            content.insert(media_type.into(), json!({"schema": body}));
            if matches!(op.id, "submitJob" | "quoteJob") {
                content.insert("application/yaml".into(), json!({"schema": body}));
            }
            operation.insert(
                "requestBody".into(),
                json!({"required": true, "content": content}),
            );
        }
        let mut responses = Map::new();
        let auth_errors: &[ResponseDoc] = match op.auth {
            // Registration is limited per client address; health, metrics and this document not.
            Auth::None if op.path.starts_with("/v1/") => &[RATE_LIMITED],
            Auth::None => &[],
            _ => &[
                (
                    401,
                    "Missing or unknown credentials",
                    Some(schema::<rest::ErrorBody>),
                ),
                RATE_LIMITED,
            ],
        };
        let body_errors: &[ResponseDoc] = if op.request.is_some() || !op.query.is_empty() {
            &ERRORS
        } else {
            &[]
        };
        for (status, description, body) in op.responses.iter().chain(auth_errors).chain(body_errors)
        {
            let mut response = Map::new();
            response.insert("description".into(), (*description).into());
            if *status == 429 {
                response.insert(
                    "headers".into(),
                    json!({"Retry-After": {
                        "description": "Whole seconds until a request will be accepted",
                        "schema": {"type": "integer", "minimum": 1}
                    }}),
                );
            }
            if let Some(body) = body {
                let mut content = json!({"application/json": {"schema": body(&mut generator)}});
                if op.id == "getOperatorStatement" && *status == 200 {
                    // The same statement as CSV (docs/settlement.md, "Earnings statements").
                    content["text/csv"] = json!({"schema": {"type": "string"}});
                }
                response.insert("content".into(), content);
            }
            responses.insert(status.to_string(), Value::Object(response));
        }
        operation.insert("responses".into(), Value::Object(responses));
        match op.auth {
            Auth::None => operation.insert("security".into(), json!([])),
            Auth::ApiKey => operation.insert("security".into(), json!([{"apiKey": []}])),
            Auth::NodeToken => operation.insert("security".into(), json!([{"nodeToken": []}])),
        };
        let entry = paths
            .entry(op.path.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
        entry
            .as_object_mut()
            .expect("path items are objects")
            .insert(op.method.into(), Value::Object(operation));
    }
    let mut schemas = Value::Object(generator.take_definitions(true));
    openapi_31_bounds(&mut schemas);
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Agora hub API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Submit GPU jobs, follow them, and see the node registry. Agents use the /v1/agent operations.",
            "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"}
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "apiKey": {"type": "http", "scheme": "bearer", "description": "A tenant's API key"},
                "nodeToken": {"type": "http", "scheme": "bearer", "description": "The token from /v1/agent/register"}
            }
        }
    })
}

fn tag(path: &str) -> &'static str {
    if path.starts_with("/v1/jobs") {
        "jobs"
    } else if path.starts_with("/v1/prices") || path.starts_with("/v1/quotes") {
        "market"
    } else if path.starts_with("/v1/nodes") {
        "nodes"
    } else if path.starts_with("/v1/settlement")
        || path.starts_with("/v1/receipts")
        || path.starts_with("/v1/operators")
    {
        "settlement"
    } else if path.starts_with("/v1/agent") {
        "agent"
    } else {
        "system"
    }
}

fn path_parameters(path: &str) -> Vec<Value> {
    path.split('/')
        .filter_map(|segment| segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
        .collect()
}

/// The CRD types carry OpenAPI 3.0's boolean `exclusiveMinimum` beside `minimum` (what the
/// Kubernetes API server reads); JSON Schema 2020-12 wants the bound itself as `exclusiveMinimum`.
fn openapi_31_bounds(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (bound, exclusive) in [
                ("minimum", "exclusiveMinimum"),
                ("maximum", "exclusiveMaximum"),
            ] {
                if map.get(exclusive) == Some(&Value::Bool(true)) {
                    if let Some(limit) = map.remove(bound) {
                        map.insert(exclusive.into(), limit);
                    }
                } else if map.get(exclusive) == Some(&Value::Bool(false)) {
                    map.remove(exclusive);
                }
            }
            map.values_mut().for_each(openapi_31_bounds);
        }
        Value::Array(items) => items.iter_mut().for_each(openapi_31_bounds),
        _ => {}
    }
}
