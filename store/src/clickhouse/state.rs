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
}
