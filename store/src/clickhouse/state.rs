//! The alerter's state and history in ClickHouse.

use async_trait::async_trait;
use clickhouse::Row;
use serde::{Deserialize, Serialize};
use vigil_domain::alert::Collection;
use vigil_domain::tenant::TenantId;

use super::{ClickHouseStore, classify, day_u32};
use crate::codec::corrupt;
use crate::{HistoryEntry, HistoryQuery, StateRecord, StateStore, StoreError};

#[derive(Row, Serialize, Deserialize)]
struct StateRow {
    collection: String,
    tenant: String,
    key: String,
    version: u64,
    body: String,
    deleted: u8,
}

#[derive(Row, Serialize, Deserialize)]
struct HistoryRow {
    tenant: String,
    time_ms: u64,
    kind: String,
    rule: String,
    subject: String,
    body: String,
    day: u32,
}

#[async_trait]
impl StateStore for ClickHouseStore {
    async fn put_state(&self, records: &[StateRecord]) -> Result<(), StoreError> {
        let rows = records.iter().map(|record| StateRow {
            collection: record.collection.as_str().to_owned(),
            tenant: record.tenant.as_str().to_owned(),
            key: record.key.clone(),
            version: record.version,
            body: record.body.clone(),
            deleted: u8::from(record.deleted),
        });
        self.insert_all("state", rows.collect()).await
    }

    async fn state(&self, collection: Collection) -> Result<Vec<StateRecord>, StoreError> {
        let rows: Vec<StateRow> = self
            .client
            .query(
                "SELECT ?fields FROM state FINAL WHERE collection = ? AND deleted = 0
                 ORDER BY tenant, key",
            )
            .bind(collection.as_str())
            .fetch_all()
            .await
            .map_err(classify)?;
        rows.into_iter()
            .map(|row| {
                Ok(StateRecord {
                    collection,
                    tenant: TenantId::parse(&row.tenant).map_err(|e| corrupt("tenant", e))?,
                    key: row.key,
                    version: row.version,
                    body: row.body,
                    deleted: false,
                })
            })
            .collect()
    }

    async fn append_history(&self, entries: &[HistoryEntry]) -> Result<(), StoreError> {
        let rows = entries.iter().map(|entry| HistoryRow {
            tenant: entry.tenant.as_str().to_owned(),
            time_ms: entry.time_ms,
            kind: entry.kind.clone(),
            rule: entry.rule.clone(),
            subject: entry.subject.clone(),
            body: entry.body.clone(),
            day: day_u32(entry.time_ms / 1_000),
        });
        self.insert_all("history", rows.collect()).await
    }

    async fn history(&self, query: &HistoryQuery) -> Result<Vec<HistoryEntry>, StoreError> {
        let rows: Vec<HistoryRow> = self
            .client
            .query(
                "SELECT ?fields FROM history
                 WHERE tenant = ? AND time_ms >= ? AND time_ms < ?
                    AND (? = 0 OR rule = ?) AND (? = 0 OR subject = ?)
                 ORDER BY time_ms DESC LIMIT ?",
            )
            .bind(query.tenant.as_str())
            .bind(query.from_ms)
            .bind(query.to_ms)
            .bind(u8::from(query.rule.is_some()))
            .bind(query.rule.as_deref().unwrap_or(""))
            .bind(u8::from(query.subject.is_some()))
            .bind(query.subject.as_deref().unwrap_or(""))
            .bind(u64::try_from(query.limit).unwrap_or(u64::MAX))
            .fetch_all()
            .await
            .map_err(classify)?;
        Ok(rows
            .into_iter()
            .map(|row| HistoryEntry {
                tenant: query.tenant.clone(),
                time_ms: row.time_ms,
                kind: row.kind,
                rule: row.rule,
                subject: row.subject,
                body: row.body,
            })
            .collect())
    }

    /// ClickHouse has no compare-and-set: a holder writes its claim with a
    /// version (the time, then its name's hash to break ties), and the
    /// greatest version is the lease. One taking the lease over (from
    /// nobody, or from a holder whose lease ran out) reads it back after
    /// [`LEASE_SETTLE`], when a rival that saw the same expired lease has
    /// written its claim too; only the greatest claim goes on. A holder
    /// renewing reads back at once: it finds out it lost at its next
    /// renewal at the latest.
    async fn lease(
        &self,
        name: &str,
        holder: &str,
        now_ms: u64,
        ttl_ms: u64,
    ) -> Result<bool, StoreError> {
        let current = self.lease_now(name).await?;
        let renewing = current.as_ref().is_some_and(|c| c.holder == holder);
        if current
            .as_ref()
            .is_some_and(|c| !renewing && c.expires_ms > now_ms)
        {
            return Ok(false);
        }
        let mut hash = vigil_domain::model::Fnv::default();
        hash.write(holder.as_bytes());
        let version = now_ms
            .saturating_mul(1 << 16)
            .saturating_add(hash.finish() & 0xffff);
        let claim = LeaseRow {
            name: name.to_owned(),
            holder: holder.to_owned(),
            expires_ms: now_ms + ttl_ms,
            version: version.max(current.map_or(0, |c| c.version + 1)),
        };
        self.insert_all("leases", vec![claim]).await?;
        if !renewing {
            tokio::time::sleep(LEASE_SETTLE).await;
        }
        Ok(self
            .lease_now(name)
            .await?
            .is_some_and(|c| c.holder == holder))
    }

    async fn release(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        let Some(current) = self.lease_now(name).await? else {
            return Ok(());
        };
        if current.holder != holder {
            return Ok(());
        }
        let ended = LeaseRow {
            expires_ms: 0,
            version: current.version + 1,
            ..current
        };
        self.insert_all("leases", vec![ended]).await
    }
}

/// How long a holder taking a lease over waits before reading it back: far
/// longer than a rival's read and write of its own claim.
const LEASE_SETTLE: std::time::Duration = std::time::Duration::from_secs(1);

#[derive(Row, Serialize, Deserialize)]
struct LeaseRow {
    name: String,
    holder: String,
    expires_ms: u64,
    version: u64,
}

impl ClickHouseStore {
    /// The greatest claim of lease `name`.
    async fn lease_now(&self, name: &str) -> Result<Option<LeaseRow>, StoreError> {
        self.client
            .query(
                "SELECT name, holder, expires_ms, version FROM leases
                 WHERE name = ? ORDER BY version DESC LIMIT 1",
            )
            .bind(name)
            .fetch_optional()
            .await
            .map_err(classify)
    }
}
