//! Tenants and their API keys.

use sha2::{Digest, Sha256};
use sqlx::Row;

use super::{Result, Store, now_ms};

/// The SHA-256 of a secret, hex-encoded: how API keys and node tokens are stored.
pub fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
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

    /// Records `key` as an API key of `tenant_id` (idempotent).
    pub async fn add_api_key(&self, tenant_id: &str, key: &str) -> Result<()> {
        let prefix: String = key.chars().take(12).collect();
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

    /// The tenant an API key belongs to, if it is a known key.
    pub async fn tenant_for_key(&self, key: &str) -> Result<Option<String>> {
        let row = sqlx::query("SELECT tenant_id FROM api_keys WHERE key_hash = $1")
            .bind(hash_secret(key))
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.try_get("tenant_id")).transpose()?)
    }
}
