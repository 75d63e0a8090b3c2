//! Tenants and their API keys.
//!
//! A key is shown once, when it is created; the store keeps only its SHA-256 (keys are 256-bit
//! random secrets, so a slow password hash would add nothing) and its first characters, the
//! *prefix*, by which people tell keys apart in `agora admin key list` and revoke them. Revoking
//! marks the row instead of deleting it, so the list keeps the history.

use sha2::{Digest, Sha256};
use sqlx::Row;

use super::{Result, Store, now_ms};

/// How many leading characters of a key are kept in clear to identify it: `agora_` and six hex
/// digits, enough to tell a tenant's few keys apart, far too few to guess the rest.
pub const KEY_PREFIX_CHARS: usize = 12;

/// The SHA-256 of a secret, hex-encoded: how API keys and node tokens are stored.
pub fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// What may be shown about an API key: never the key, nor its hash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiKeyInfo {
    /// The tenant's name.
    pub tenant: String,
    /// The key's first [`KEY_PREFIX_CHARS`] characters.
    pub prefix: String,
    /// When the key was created, in Unix milliseconds.
    pub created_at: i64,
    /// When the key was revoked, in Unix milliseconds; `None` while it works.
    pub revoked_at: Option<i64>,
}

/// What revoking by prefix did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RevokeOutcome {
    /// The one key with that prefix is revoked now (or already was: revoking is idempotent).
    Revoked(ApiKeyInfo),
    /// No key has that prefix.
    NotFound,
    /// Several keys share the prefix; nothing was revoked, since a guess could lock out the wrong
    /// tenant. The list names them so the operator can tell which to keep.
    Ambiguous(Vec<ApiKeyInfo>),
}

impl Store {
    /// The id of the tenant called `name`, creating it if needed.
    pub async fn ensure_tenant(&self, name: &str) -> Result<String> {
        let id = format!("tenant-{name}");
        sqlx::query("INSERT INTO tenants (id, name, created_at) VALUES ($1, $2, $3) ON CONFLICT (name) DO NOTHING")
            .bind(&id)
            .bind(name)
            .bind(now_ms())
            .execute(&self.pool)
            .await?;
        let row = sqlx::query("SELECT id FROM tenants WHERE name = $1")
            .bind(name)
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get("id")?)
    }

    /// Records `key` as an API key of `tenant_id` (idempotent). A key that was revoked stays
    /// revoked: presenting it again here does not bring it back.
    pub async fn add_api_key(&self, tenant_id: &str, key: &str) -> Result<()> {
        let prefix: String = key.chars().take(KEY_PREFIX_CHARS).collect();
        sqlx::query(
            "INSERT INTO api_keys (key_hash, tenant_id, prefix, created_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (key_hash) DO NOTHING",
        )
        .bind(hash_secret(key))
        .bind(tenant_id)
        .bind(prefix)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Mints a new API key for the tenant called `tenant` (created if needed) and returns it with
    /// what may be shown about it. The key itself is in the return value only: the store keeps its
    /// hash. Its prefix is unique among stored keys, so it can always be revoked by prefix.
    pub async fn create_api_key(&self, tenant: &str) -> Result<(String, ApiKeyInfo)> {
        let tenant_id = self.ensure_tenant(tenant).await?;
        loop {
            let key = crate::ids::secret("agora_");
            let prefix: String = key.chars().take(KEY_PREFIX_CHARS).collect();
            // One in 16.7 million per existing key; draw again rather than share a prefix.
            let taken = sqlx::query("SELECT 1 FROM api_keys WHERE prefix = $1")
                .bind(&prefix)
                .fetch_optional(&self.pool)
                .await?
                .is_some();
            if taken {
                continue;
            }
            let created_at = now_ms();
            sqlx::query(
                "INSERT INTO api_keys (key_hash, tenant_id, prefix, created_at) VALUES ($1, $2, $3, $4)",
            )
            .bind(hash_secret(&key))
            .bind(&tenant_id)
            .bind(&prefix)
            .bind(created_at)
            .execute(&self.pool)
            .await?;
            let info = ApiKeyInfo {
                tenant: tenant.to_string(),
                prefix,
                created_at,
                revoked_at: None,
            };
            return Ok((key, info));
        }
    }

    /// Every API key, revoked ones included, by tenant and then age.
    pub async fn list_api_keys(&self) -> Result<Vec<ApiKeyInfo>> {
        let rows = sqlx::query(
            "SELECT t.name AS tenant, k.prefix, k.created_at, k.revoked_at \
             FROM api_keys k JOIN tenants t ON t.id = k.tenant_id \
             ORDER BY t.name, k.created_at, k.prefix",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(key_info).collect()
    }

    /// Revokes the key whose prefix is `prefix`. From the moment this returns, the key
    /// authenticates nothing: every request looks its key up in the store.
    pub async fn revoke_api_key(&self, prefix: &str) -> Result<RevokeOutcome> {
        let mut keys = self.keys_with_prefix(prefix).await?;
        match keys.len() {
            0 => return Ok(RevokeOutcome::NotFound),
            1 => {}
            _ => return Ok(RevokeOutcome::Ambiguous(keys)),
        }
        sqlx::query("UPDATE api_keys SET revoked_at = $1 WHERE prefix = $2 AND revoked_at IS NULL")
            .bind(now_ms())
            .bind(prefix)
            .execute(&self.pool)
            .await?;
        // Read back, so an earlier revocation keeps its own time.
        keys = self.keys_with_prefix(prefix).await?;
        Ok(match keys.pop() {
            Some(key) => RevokeOutcome::Revoked(key),
            None => RevokeOutcome::NotFound,
        })
    }

    async fn keys_with_prefix(&self, prefix: &str) -> Result<Vec<ApiKeyInfo>> {
        let rows = sqlx::query(
            "SELECT t.name AS tenant, k.prefix, k.created_at, k.revoked_at \
             FROM api_keys k JOIN tenants t ON t.id = k.tenant_id \
             WHERE k.prefix = $1 ORDER BY k.created_at",
        )
        .bind(prefix)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(key_info).collect()
    }

    /// The tenant an API key belongs to, if it is a known key that has not been revoked.
    pub async fn tenant_for_key(&self, key: &str) -> Result<Option<String>> {
        let row = sqlx::query(
            "SELECT tenant_id FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL",
        )
        .bind(hash_secret(key))
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| r.try_get("tenant_id")).transpose()?)
    }
}

fn key_info(row: &sqlx::any::AnyRow) -> Result<ApiKeyInfo> {
    Ok(ApiKeyInfo {
        tenant: row.try_get("tenant")?,
        prefix: row.try_get("prefix")?,
        created_at: row.try_get("created_at")?,
        revoked_at: row.try_get("revoked_at")?,
    })
}
