//! Base prices per GPU class, persisted so a hub restart keeps the market where it was.

use scheduler::pricing::ClassPrice;
use sqlx::Row;

use super::{
    Result, Store, StoreError,
    leases::{Fence, check_fence},
    now_ms,
};

impl Store {
    /// The base prices the last epoch left.
    pub async fn load_prices(&self) -> Result<Vec<ClassPrice>> {
        let rows = sqlx::query("SELECT gpu_class, base_micros, utilization_bps, change_bps FROM base_prices ORDER BY gpu_class")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| {
                let out_of_range = |column: &str| {
                    StoreError::Corrupt(format!("base_prices.{column} out of range"))
                };
                Ok(ClassPrice {
                    class: row.try_get("gpu_class")?,
                    base_micros: u64::try_from(row.try_get::<i64, _>("base_micros")?)
                        .map_err(|_| out_of_range("base_micros"))?,
                    utilization_bps: u32::try_from(row.try_get::<i64, _>("utilization_bps")?)
                        .map_err(|_| out_of_range("utilization_bps"))?,
                    change_bps: i32::try_from(row.try_get::<i64, _>("change_bps")?)
                        .map_err(|_| out_of_range("change_bps"))?,
                })
            })
            .collect()
    }

    /// Records an epoch's prices, all classes in one transaction.
    pub async fn save_prices(&self, prices: &[ClassPrice]) -> Result<()> {
        self.save_prices_fenced(prices, None).await.map(|_| ())
    }

    /// [`Store::save_prices`] under `fence`: returns false, saving nothing, when the fence's lease
    /// has moved on (the pricing loop's replica is no longer the leader).
    pub async fn save_prices_fenced(
        &self,
        prices: &[ClassPrice],
        fence: Option<&Fence>,
    ) -> Result<bool> {
        let now = now_ms();
        let mut tx = self.write_tx().await?;
        if !check_fence(&mut tx, fence).await? {
            return Ok(false);
        }
        for price in prices {
            sqlx::query(
                "INSERT INTO base_prices (gpu_class, base_micros, utilization_bps, change_bps, updated_at) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (gpu_class) DO UPDATE SET base_micros = excluded.base_micros, \
                 utilization_bps = excluded.utilization_bps, change_bps = excluded.change_bps, updated_at = excluded.updated_at",
            )
            .bind(&price.class)
            .bind(super::nodes::micros(price.base_micros)?)
            .bind(i64::from(price.utilization_bps))
            .bind(i64::from(price.change_bps))
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(true)
    }
}
