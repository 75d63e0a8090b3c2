//! Chain accounts the hub fills in itself on the embedded devnet (`crate::settling::devnet`):
//! an operator address for a node that registered without one, and a payer address for a tenant
//! that has none. On a real chain nobody calls these: addresses come from operators and admins.

use sqlx::Row;

use super::{Result, Store};

/// A tenant and the address its jobs are paid from, if it has one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TenantPayer {
    pub tenant_id: String,
    pub name: String,
    pub payer_address: Option<String>,
}

impl Store {
    /// Sets node `name`'s operator address to `address` unless it has one; true if it was set.
    pub async fn set_missing_operator_address(&self, name: &str, address: &str) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE nodes SET operator_address = $1 WHERE name = $2 AND operator_address IS NULL",
        )
        .bind(address)
        .bind(name)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Every tenant with its payer address, by name.
    pub async fn tenant_payers(&self) -> Result<Vec<TenantPayer>> {
        let rows = sqlx::query("SELECT id, name, payer_address FROM tenants ORDER BY name")
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter()
            .map(|row| {
                Ok(TenantPayer {
                    tenant_id: row.try_get("id")?,
                    name: row.try_get("name")?,
                    payer_address: row.try_get("payer_address")?,
                })
            })
            .collect()
    }
}
