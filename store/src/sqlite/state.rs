//! The alerter's state and history in SQLite.

use async_trait::async_trait;
use rusqlite::params;
use vigil_domain::alert::Collection;
use vigil_domain::tenant::TenantId;

use super::{SqliteStore, bound_to_sql, fatal, from_sql, to_sql};
use crate::codec::corrupt;
use crate::{HistoryEntry, HistoryQuery, StateRecord, StateStore, StoreError, day_of};

#[async_trait]
impl StateStore for SqliteStore {
    async fn put_state(&self, records: &[StateRecord]) -> Result<(), StoreError> {
        let records = records.to_vec();
        self.run(move |connection| {
            let tx = connection.transaction().map_err(fatal)?;
            {
                let mut upsert = tx
                    .prepare_cached(
                        "INSERT INTO state (collection, tenant, key, version, body, deleted)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                         ON CONFLICT (collection, tenant, key) DO UPDATE
                         SET version = excluded.version, body = excluded.body,
                             deleted = excluded.deleted
                         WHERE excluded.version >= state.version",
                    )
                    .map_err(fatal)?;
                for record in &records {
                    upsert
                        .execute(params![
                            record.collection.as_str(),
                            record.tenant.as_str(),
                            record.key,
                            to_sql(record.version),
                            record.body,
                            record.deleted,
                        ])
                        .map_err(fatal)?;
                }
            }
            tx.commit().map_err(fatal)
        })
        .await
    }

    async fn state(&self, collection: Collection) -> Result<Vec<StateRecord>, StoreError> {
        self.run(move |connection| {
            let mut statement = connection
                .prepare_cached(
                    "SELECT tenant, key, version, body FROM state
                     WHERE collection = ?1 AND NOT deleted ORDER BY tenant, key",
                )
                .map_err(fatal)?;
            let mut rows = statement.query([collection.as_str()]).map_err(fatal)?;
            let mut records = Vec::new();
            while let Some(row) = rows.next().map_err(fatal)? {
                let tenant: String = row.get(0).map_err(fatal)?;
                records.push(StateRecord {
                    collection,
                    tenant: TenantId::parse(&tenant).map_err(|e| corrupt("tenant", e))?,
                    key: row.get(1).map_err(fatal)?,
                    version: from_sql(row.get(2).map_err(fatal)?),
                    body: row.get(3).map_err(fatal)?,
                    deleted: false,
                });
            }
            Ok(records)
        })
        .await
    }

    async fn append_history(&self, entries: &[HistoryEntry]) -> Result<(), StoreError> {
        let entries = entries.to_vec();
        self.run(move |connection| {
            let tx = connection.transaction().map_err(fatal)?;
            {
                let mut insert = tx
                    .prepare_cached(
                        "INSERT INTO history (tenant, time_ms, kind, rule, subject, body, day)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    )
                    .map_err(fatal)?;
                for entry in &entries {
                    insert
                        .execute(params![
                            entry.tenant.as_str(),
                            to_sql(entry.time_ms),
                            entry.kind,
                            entry.rule,
                            entry.subject,
                            entry.body,
                            to_sql(day_of(entry.time_ms / 1_000)),
                        ])
                        .map_err(fatal)?;
                }
            }
            tx.commit().map_err(fatal)
        })
        .await
    }

    async fn history(&self, query: &HistoryQuery) -> Result<Vec<HistoryEntry>, StoreError> {
        let query = query.clone();
        self.run(move |connection| {
            let mut statement = connection
                .prepare_cached(
                    "SELECT time_ms, kind, rule, subject, body FROM history
                     WHERE tenant = ?1 AND time_ms >= ?2 AND time_ms < ?3
                        AND (?4 IS NULL OR rule = ?4) AND (?5 IS NULL OR subject = ?5)
                     ORDER BY time_ms DESC, rowid DESC LIMIT ?6",
                )
                .map_err(fatal)?;
            let mut rows = statement
                .query(params![
                    query.tenant.as_str(),
                    bound_to_sql(query.from_ms),
                    bound_to_sql(query.to_ms),
                    query.rule,
                    query.subject,
                    i64::try_from(query.limit).unwrap_or(i64::MAX),
                ])
                .map_err(fatal)?;
            let mut entries = Vec::new();
            while let Some(row) = rows.next().map_err(fatal)? {
                entries.push(HistoryEntry {
                    tenant: query.tenant.clone(),
                    time_ms: from_sql(row.get(0).map_err(fatal)?),
                    kind: row.get(1).map_err(fatal)?,
                    rule: row.get(2).map_err(fatal)?,
                    subject: row.get(3).map_err(fatal)?,
                    body: row.get(4).map_err(fatal)?,
                });
            }
            Ok(entries)
        })
        .await
    }

    async fn lease(
        &self,
        name: &str,
        holder: &str,
        now_ms: u64,
        ttl_ms: u64,
    ) -> Result<bool, StoreError> {
        let (name, holder) = (name.to_owned(), holder.to_owned());
        self.run(move |connection| {
            let tx = connection.transaction().map_err(fatal)?;
            tx.execute(
                "INSERT INTO leases (name, holder, expires_ms) VALUES (?1, ?2, ?3)
                 ON CONFLICT (name) DO UPDATE SET
                    holder = excluded.holder, expires_ms = excluded.expires_ms
                 WHERE leases.holder = excluded.holder OR leases.expires_ms <= ?4",
                params![name, holder, to_sql(now_ms + ttl_ms), to_sql(now_ms)],
            )
            .map_err(fatal)?;
            let held: String = tx
                .query_row(
                    "SELECT holder FROM leases WHERE name = ?1",
                    [&name],
                    |row| row.get(0),
                )
                .map_err(fatal)?;
            tx.commit().map_err(fatal)?;
            Ok(held == holder)
        })
        .await
    }

    async fn release(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        let (name, holder) = (name.to_owned(), holder.to_owned());
        self.run(move |connection| {
            connection
                .execute(
                    "UPDATE leases SET expires_ms = 0 WHERE name = ?1 AND holder = ?2",
                    params![name, holder],
                )
                .map_err(fatal)?;
            Ok(())
        })
        .await
    }
}
