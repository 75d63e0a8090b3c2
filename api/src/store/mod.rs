//! The hub's store: every SQL statement the hub runs lives in this module.
//!
//! One code path serves SQLite (the embedded default, WAL mode) and PostgreSQL (production, several
//! hub replicas) through sqlx's `Any` driver: the statements use only the SQL both accept
//! (`$n` parameters, `RETURNING`, `ON CONFLICT`), and values are restricted to integers and text
//! (times as Unix milliseconds, money as integer micro-units, documents as JSON text), which both
//! engines store exactly. Migrations are per backend under `api/migrations/{sqlite,postgres}`.

pub mod accounts;
mod assignments;
mod heartbeats;
mod jobs;
mod keys;
mod leases;
mod metrics_queries;
mod nodes;
pub mod openings;
mod placements;
mod prices;
pub mod probes;
pub mod receipts;
mod rows;
pub mod settlement;
pub mod verification;

use std::{str::FromStr, time::Duration};

use sqlx::{
    AnyPool, Transaction,
    any::{AnyConnectOptions, AnyPoolOptions},
};

pub use self::{
    assignments::{AssignmentOutcome, CheckpointOutcome, NewAssignment},
    heartbeats::LiveAssignment,
    jobs::{CancelOutcome, NewJob, SubmitOutcome},
    keys::{ApiKeyInfo, KEY_PREFIX_CHARS, RevokeOutcome, hash_secret},
    leases::{Fence, Lease},
    nodes::Registration,
    placements::{Placement, QueueMark},
    rows::{AssignmentRow, Checkpoint, EventRow, JobRow, NodeRow},
};

/// What can go wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("unsupported database URL {0:?}: use sqlite://PATH or postgres://…")]
    UnsupportedUrl(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Which engine a store runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A handle on the hub's database; cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
}

impl Store {
    /// Connects to `url` (`sqlite://PATH` — created if missing — or `postgres://…`) and applies
    /// pending migrations.
    pub async fn connect(url: &str) -> Result<Self> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Backend::Postgres
        } else {
            return Err(StoreError::UnsupportedUrl(url.to_string()));
        };
        let url = match backend {
            Backend::Sqlite if !url.contains("mode=") => {
                format!("{url}{}mode=rwc", if url.contains('?') { '&' } else { '?' })
            }
            _ => url.to_string(),
        };
        let options = AnyConnectOptions::from_str(&url)?;
        let pool = match backend {
            // WAL lets readers proceed while one writer writes; the busy timeout makes writers
            // queue instead of failing. Both are per-connection settings.
            Backend::Sqlite => {
                AnyPoolOptions::new()
                    .max_connections(4)
                    // No ping per checkout: a broken connection fails its statement and the caller
                    // retries (loops) or answers 500 once (requests) — cheaper than a round trip
                    // before every statement, which cost about a third of the hub's CPU.
                    .test_before_acquire(false)
                    .after_connect(|conn, _| {
                        Box::pin(async move {
                            sqlx::query("PRAGMA journal_mode = WAL")
                                .execute(&mut *conn)
                                .await?;
                            sqlx::query("PRAGMA busy_timeout = 10000")
                                .execute(&mut *conn)
                                .await?;
                            sqlx::query("PRAGMA foreign_keys = ON")
                                .execute(&mut *conn)
                                .await?;
                            sqlx::query("PRAGMA synchronous = NORMAL")
                                .execute(&mut *conn)
                                .await?;
                            Ok(())
                        })
                    })
                    .connect_with(options)
                    .await?
            }
            Backend::Postgres => {
                AnyPoolOptions::new()
                    .max_connections(16)
                    .test_before_acquire(false)
                    .acquire_timeout(Duration::from_secs(10))
                    .connect_with(options)
                    .await?
            }
        };
        let store = Self { pool, backend };
        store.migrate().await?;
        Ok(store)
    }

    async fn migrate(&self) -> Result<()> {
        match self.backend {
            Backend::Sqlite => {
                sqlx::migrate!("./migrations/sqlite")
                    .run(&self.pool)
                    .await?
            }
            Backend::Postgres => {
                sqlx::migrate!("./migrations/postgres")
                    .run(&self.pool)
                    .await?
            }
        }
        Ok(())
    }

    /// The engine behind this store.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Checks that the database answers (for `/readyz`).
    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Starts a write transaction. On SQLite it takes the write lock up front (`BEGIN IMMEDIATE`),
    /// so two writers queue on the busy timeout instead of one failing when it upgrades its lock.
    async fn write_tx(&self) -> Result<Transaction<'static, sqlx::Any>> {
        Ok(match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => self.pool.begin().await?,
        })
    }

    /// Closes every connection.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// The current time in Unix milliseconds, the store's unit of time.
pub fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

/// Keyset pagination: lists fetch `limit + 1` rows; if the extra one came, there is a next page,
/// whose cursor is the key of the last row kept.
fn cut_page<T>(rows: &mut Vec<T>, limit: u32, key: impl Fn(&T) -> String) -> Option<String> {
    if rows.len() > limit as usize {
        rows.truncate(limit as usize);
        rows.last().map(key)
    } else {
        None
    }
}

/// `($1, $2, …), ($k+1, …), …`: `rows` value tuples of `width` parameters each, for the
/// multi-row statements that write a batch in one round trip.
pub(super) fn placeholders(rows: usize, width: usize) -> String {
    (0..rows)
        .map(|r| {
            let params: Vec<String> = (1..=width).map(|c| format!("${}", r * width + c)).collect();
            format!("({})", params.join(", "))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Whether an error is a unique-constraint violation (a lost race or a duplicate, not a fault).
fn is_unique_violation(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.is_unique_violation())
}

#[cfg(test)]
mod tests {
    #[test]
    fn value_tuples_number_their_parameters_in_order() {
        assert_eq!(super::placeholders(2, 3), "($1, $2, $3), ($4, $5, $6)");
    }
}
