//! Earnings statements: what an operator (a hardware owner's chain address) was paid in a period,
//! for its own accounting and tax reporting (docs/settlement.md, "Earnings statements").
//!
//! Income counts when it is paid: a statement covers the batches the hub recorded final in
//! `[from, to)`, whatever epoch their receipts are from. Its money comes from the payouts the
//! relayer recorded from the contract's `agora_payout` events (gross, fee, net per batch), less
//! the slashes the contract took in the period; its jobs and GPU-hours from the batches' leaves,
//! each receipt counting only the GPU time its assignment's previous settled receipt did not (a
//! job settled across several batches counts its hours once). Everything in it is derived from
//! what is public on chain (batch roots and totals, payout and slash events) and the receipts
//! behind them, so any API key may read any operator's statement.

use std::collections::{BTreeMap, BTreeSet};

use jiff::{Timestamp, ToSpan, civil::Date, tz::TimeZone};
use schemars::JsonSchema;
use serde::Serialize;
use settlement::receipt::Receipt;

use crate::store::{Store, StoreError};

/// The longest period one statement covers: a year and a month, so any tax year fits.
pub const MAX_PERIOD_DAYS: i64 = 400;

/// An operator's earnings in a period. Amounts are micro-units of the contract's denom, as decimal
/// strings (exact whatever their size; slashes come from stakes, which may exceed 64 bits).
#[derive(Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Statement {
    /// The operator's chain address (the `operatorAddress` its nodes registered with).
    pub operator: String,
    /// The period, `[from, to)`, RFC 3339 UTC.
    pub from: String,
    pub to: String,
    /// The denom paid in, when the hub recorded it with the payouts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub denom: Option<String>,
    pub totals: Totals,
    /// One line per job and node, oldest job first.
    pub jobs: Vec<JobLine>,
    /// One line per batch that paid the operator, in the order they went final.
    pub batches: Vec<BatchLine>,
    /// The slashes the contract took from the operator's stake in the period.
    pub slashes: Vec<SlashLine>,
}

/// A statement's totals.
#[derive(Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Totals {
    /// Distinct jobs paid for.
    pub jobs: u64,
    /// GPU time paid for, in GPU-milliseconds, and in GPU-hours with three decimals.
    pub gpu_millis: u64,
    pub gpu_hours: String,
    /// What the batches paid before the protocol fee.
    pub gross: String,
    /// The protocol fee the contract kept.
    pub fee: String,
    /// What slashes took from the operator's stake.
    pub slashes: String,
    /// `gross − fee − slashes` (negative when slashes exceed the earnings).
    pub net: String,
}

/// What one job paid the operator in the period, on one of its nodes.
#[derive(Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobLine {
    pub job: String,
    pub node: String,
    pub gpu_millis: u64,
    pub gpu_hours: String,
    /// Paid for the job in the period, before the fee (the fee is charged per batch).
    pub gross: String,
    /// The batches that paid it, in the order they settled its receipts.
    pub batches: Vec<String>,
}

/// What one final batch paid the operator.
#[derive(Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BatchLine {
    pub batch: String,
    /// The epoch whose receipts it settles, RFC 3339.
    pub period_from: String,
    pub period_to: String,
    /// When the hub recorded it final.
    pub final_at: String,
    /// The transactions that posted and finalized (paid) it.
    pub post_tx: Option<String>,
    pub finalize_tx: Option<String>,
    pub gross: String,
    pub fee: String,
    pub net: String,
}

/// A slash the contract took.
#[derive(Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SlashLine {
    pub id: String,
    pub reason: String,
    /// What it took, in micro-units; absent if the transaction did not say.
    pub amount: Option<String>,
    pub tx: Option<String>,
    /// When the hub recorded it.
    pub at: String,
}

/// Why a period was refused: the query parameter at fault and what is expected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeriodError {
    pub field: &'static str,
    pub message: String,
}

/// An instant as a statement takes it: an RFC 3339 timestamp (`2026-11-01T00:00:00Z`), a date
/// (`2026-11-01`, midnight UTC) or Unix milliseconds.
pub fn parse_instant(field: &'static str, text: &str) -> Result<i64, PeriodError> {
    let error = || PeriodError {
        field,
        message: format!(
            "{text:?} is not a time: use RFC 3339 (2026-11-01T00:00:00Z), a date (2026-11-01, \
             midnight UTC) or Unix milliseconds"
        ),
    };
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return text.parse::<i64>().map_err(|_| error());
    }
    if let Ok(timestamp) = text.parse::<Timestamp>() {
        return Ok(timestamp.as_millisecond());
    }
    let date = text.parse::<Date>().map_err(|_| error())?;
    date.to_zoned(TimeZone::UTC)
        .map(|zoned| zoned.timestamp().as_millisecond())
        .map_err(|_| error())
}

/// The first instant of the UTC calendar month `months` after the one holding `ms`.
fn month_start(ms: i64, months: i32) -> Option<i64> {
    let date = Timestamp::from_millisecond(ms)
        .ok()?
        .to_zoned(TimeZone::UTC)
        .date()
        .first_of_month()
        .checked_add(months.months())
        .ok()?;
    Some(
        date.to_zoned(TimeZone::UTC)
            .ok()?
            .timestamp()
            .as_millisecond(),
    )
}

/// The period `[from, to)` a statement covers, from its query parameters: without either, the
/// current calendar month (UTC); with one, the calendar month it starts or ends.
pub fn period(
    from: Option<&str>,
    to: Option<&str>,
    now_ms: i64,
) -> Result<(i64, i64), PeriodError> {
    let from = from.map(|t| parse_instant("from", t)).transpose()?;
    let to = to.map(|t| parse_instant("to", t)).transpose()?;
    let out_of_range = |field| PeriodError {
        field,
        message: "is out of the supported range of times".into(),
    };
    let (from, to) = match (from, to) {
        (Some(from), Some(to)) => (from, to),
        (Some(from), None) => (
            from,
            month_start(from, 1).ok_or_else(|| out_of_range("from"))?,
        ),
        (None, Some(to)) => (
            month_start(to.saturating_sub(1), 0).ok_or_else(|| out_of_range("to"))?,
            to,
        ),
        (None, None) => (
            month_start(now_ms, 0).ok_or_else(|| out_of_range("from"))?,
            month_start(now_ms, 1).ok_or_else(|| out_of_range("to"))?,
        ),
    };
    if Timestamp::from_millisecond(from).is_err() {
        return Err(out_of_range("from"));
    }
    if Timestamp::from_millisecond(to).is_err() {
        return Err(out_of_range("to"));
    }
    if to <= from {
        return Err(PeriodError {
            field: "to",
            message: "must be after from: a statement covers [from, to)".into(),
        });
    }
    if to - from > MAX_PERIOD_DAYS * 86_400_000 {
        return Err(PeriodError {
            field: "to",
            message: format!(
                "a statement covers at most {MAX_PERIOD_DAYS} days; ask for shorter periods"
            ),
        });
    }
    Ok((from, to))
}

/// A Unix-ms time as RFC 3339 UTC.
fn rfc3339(ms: i64) -> String {
    Timestamp::from_millisecond(ms)
        .unwrap_or(Timestamp::UNIX_EPOCH)
        .to_string()
}

/// GPU-milliseconds as GPU-hours with three decimals, rounded half up.
pub fn gpu_hours(gpu_millis: u64) -> String {
    let milli_hours = (u128::from(gpu_millis) + 1_800) / 3_600;
    format!("{}.{:03}", milli_hours / 1_000, milli_hours % 1_000)
}

fn decode(body: &str, what: &str) -> Result<Receipt, StoreError> {
    hex::decode(body)
        .ok()
        .and_then(|bytes| Receipt::decode(&bytes).ok())
        .ok_or_else(|| StoreError::Corrupt(format!("the settled receipt {what} does not decode")))
}

/// The statement of `operator` for `[from_ms, to_ms)`; a zero statement if nothing paid it.
pub async fn statement(
    store: &Store,
    operator: &str,
    from_ms: i64,
    to_ms: i64,
) -> Result<Statement, StoreError> {
    let payouts = store.operator_payouts(operator, from_ms, to_ms).await?;
    let leaves = store.operator_leaves(operator, from_ms, to_ms).await?;
    let slashes = store.operator_slashes(operator, from_ms, to_ms).await?;

    #[derive(Default)]
    struct Job {
        gpu_millis: u64,
        gross: u64,
        /// In the order they settled the job's receipts.
        batches: Vec<String>,
    }
    let mut jobs: BTreeMap<(String, String), Job> = BTreeMap::new();
    for (leaf, previous) in &leaves {
        let what = format!("{}.{}", leaf.assignment_id, leaf.sequence);
        let receipt = decode(&leaf.body, &what)?;
        let before = match previous {
            Some(body) => decode(body, &format!("before {what}"))?.gpu_millis,
            None => 0,
        };
        let job = jobs
            .entry((leaf.job_id.clone(), receipt.node.clone()))
            .or_default();
        job.gpu_millis = job
            .gpu_millis
            .saturating_add(receipt.gpu_millis.saturating_sub(before));
        job.gross = job.gross.saturating_add(leaf.paid_micros);
        if !job.batches.contains(&leaf.batch_id) {
            job.batches.push(leaf.batch_id.clone());
        }
    }

    let gross: u128 = payouts.iter().map(|p| u128::from(p.gross)).sum();
    let fee: u128 = payouts.iter().map(|p| u128::from(p.fee)).sum();
    let slashed: u128 = slashes
        .iter()
        .filter_map(|s| s.amount.as_deref()?.parse::<u128>().ok())
        .sum();
    let net = i128::try_from(gross)
        .unwrap_or(i128::MAX)
        .saturating_sub(i128::try_from(fee).unwrap_or(i128::MAX))
        .saturating_sub(i128::try_from(slashed).unwrap_or(i128::MAX));
    let gpu_millis = jobs.values().map(|j| j.gpu_millis).sum::<u64>();
    let distinct_jobs = jobs.keys().map(|(job, _)| job).collect::<BTreeSet<_>>();
    let denoms = payouts
        .iter()
        .filter_map(|p| p.denom.clone())
        .collect::<BTreeSet<_>>();

    Ok(Statement {
        operator: operator.to_string(),
        from: rfc3339(from_ms),
        to: rfc3339(to_ms),
        denom: (denoms.len() == 1)
            .then(|| denoms.into_iter().next())
            .flatten(),
        totals: Totals {
            jobs: distinct_jobs.len() as u64,
            gpu_millis,
            gpu_hours: gpu_hours(gpu_millis),
            gross: gross.to_string(),
            fee: fee.to_string(),
            slashes: slashed.to_string(),
            net: net.to_string(),
        },
        jobs: jobs
            .into_iter()
            .map(|((job, node), line)| JobLine {
                job,
                node,
                gpu_millis: line.gpu_millis,
                gpu_hours: gpu_hours(line.gpu_millis),
                gross: line.gross.to_string(),
                batches: line.batches,
            })
            .collect(),
        batches: payouts
            .into_iter()
            .map(|p| BatchLine {
                batch: p.batch_id,
                period_from: rfc3339(p.period_from_ms),
                period_to: rfc3339(p.period_to_ms),
                final_at: rfc3339(p.final_at),
                post_tx: p.post_tx,
                finalize_tx: p.finalize_tx,
                gross: p.gross.to_string(),
                fee: p.fee.to_string(),
                net: p.net.to_string(),
            })
            .collect(),
        slashes: slashes
            .into_iter()
            .map(|s| SlashLine {
                id: s.id,
                reason: s.reason,
                amount: s.amount,
                tx: s.tx,
                at: rfc3339(s.posted_at.unwrap_or(s.requested_at)),
            })
            .collect(),
    })
}

/// The CSV columns, in order.
pub const CSV_HEADER: [&str; 12] = [
    "kind",
    "id",
    "node",
    "batches",
    "gpu_millis",
    "gpu_hours",
    "gross_micros",
    "fee_micros",
    "slash_micros",
    "net_micros",
    "tx",
    "at",
];

/// The statement as CSV (RFC 4180: CRLF line ends, fields quoted when they hold a comma, a quote
/// or a line break). After the header, one row per line of the statement, its `kind` saying
/// which: `job` (id = job; gross), `batch` (id = batch; gross, fee, net; tx = the finalize
/// transaction; at = when it went final), `slash` (id = slash; slash_micros; tx; at; node =
/// reason), and last one `total` (id = operator; node empty; batches = `from/to`; every amount).
/// Amounts are integers in micro-units.
pub fn to_csv(statement: &Statement) -> String {
    let mut out = String::new();
    let mut row = |fields: [&str; 12]| {
        let line = fields.iter().map(|f| csv_field(f)).collect::<Vec<_>>();
        out.push_str(&line.join(","));
        out.push_str("\r\n");
    };
    row(CSV_HEADER);
    for job in &statement.jobs {
        let batches = job.batches.join(" ");
        let gpu = job.gpu_millis.to_string();
        row([
            "job",
            &job.job,
            &job.node,
            &batches,
            &gpu,
            &job.gpu_hours,
            &job.gross,
            "",
            "",
            "",
            "",
            "",
        ]);
    }
    for batch in &statement.batches {
        row([
            "batch",
            &batch.batch,
            "",
            "",
            "",
            "",
            &batch.gross,
            &batch.fee,
            "",
            &batch.net,
            batch.finalize_tx.as_deref().unwrap_or(""),
            &batch.final_at,
        ]);
    }
    for slash in &statement.slashes {
        row([
            "slash",
            &slash.id,
            &slash.reason,
            "",
            "",
            "",
            "",
            "",
            slash.amount.as_deref().unwrap_or(""),
            "",
            slash.tx.as_deref().unwrap_or(""),
            &slash.at,
        ]);
    }
    let t = &statement.totals;
    let period = format!("{}/{}", statement.from, statement.to);
    let gpu = t.gpu_millis.to_string();
    row([
        "total",
        &statement.operator,
        "",
        &period,
        &gpu,
        &t.gpu_hours,
        &t.gross,
        &t.fee,
        &t.slashes,
        &t.net,
        "",
        "",
    ]);
    out
}

/// One CSV field, quoted if it must be.
fn csv_field(field: &str) -> String {
    if field.contains([',', '"', '\r', '\n']) {
        format!("\"{}\"", field.replace('"', "\"\""))
    } else {
        field.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_default_to_calendar_months_and_name_the_bad_field() {
        let now = parse_instant("now", "2026-11-29T09:00:00Z").unwrap();
        let month = period(None, None, now).unwrap();
        assert_eq!(
            (rfc3339(month.0), rfc3339(month.1)),
            ("2026-11-01T00:00:00Z".into(), "2026-12-01T00:00:00Z".into())
        );
        let december = period(Some("2026-12-15"), None, now).unwrap();
        assert_eq!(rfc3339(december.1), "2027-01-01T00:00:00Z");
        let ending = period(None, Some("2026-11-01T00:00:00Z"), now).unwrap();
        assert_eq!(rfc3339(ending.0), "2026-10-01T00:00:00Z");
        assert_eq!(
            period(Some("1700000000000"), Some("1700000000001"), now).unwrap(),
            (1_700_000_000_000, 1_700_000_000_001)
        );
        assert_eq!(
            period(Some("yesterday"), None, now).unwrap_err().field,
            "from"
        );
        assert_eq!(
            period(None, Some("2026-13-01"), now).unwrap_err().field,
            "to"
        );
        assert_eq!(
            period(Some("2026-11-02"), Some("2026-11-01"), now)
                .unwrap_err()
                .field,
            "to"
        );
        assert_eq!(
            period(Some("2025-01-01"), Some("2027-01-01"), now)
                .unwrap_err()
                .field,
            "to"
        );
    }

    #[test]
    fn gpu_hours_have_three_decimals() {
        assert_eq!(gpu_hours(0), "0.000");
        assert_eq!(gpu_hours(3_600_000), "1.000");
        assert_eq!(gpu_hours(20_000), "0.006");
        assert_eq!(gpu_hours(1_799), "0.000");
        assert_eq!(gpu_hours(1_800), "0.001");
    }

    #[test]
    fn csv_fields_are_quoted_as_rfc_4180_says() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("two\nlines"), "\"two\nlines\"");
    }
}
