//! Log records and crashes in SQLite.

use async_trait::async_trait;
use rusqlite::params;

use super::{SqliteStore, bound_to_sql, fatal, from_sql, to_sql};
use crate::codec::corrupt;
use crate::{EventQuery, EventRecord, EventStore, StoreError, day_of};

#[async_trait]
impl EventStore for SqliteStore {
    async fn write_events(&self, events: &[EventRecord]) -> Result<(), StoreError> {
        let events = events.to_vec();
        self.run(move |connection| {
            let tx = connection.transaction().map_err(fatal)?;
            {
                let mut insert = tx
                    .prepare_cached(
                        "INSERT OR IGNORE INTO events (tenant, kind, id, time_ns, service, name,
                            body, trace_id, span_id, fingerprint, attributes, day)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
                    )
                    .map_err(fatal)?;
                for event in &events {
                    insert
                        .execute(params![
                            event.tenant.as_str(),
                            event.kind.as_str(),
                            to_sql(event.id),
                            to_sql(event.time_ns),
                            event.service,
                            event.name,
                            event.body,
                            event.trace_id,
                            event.span_id,
                            event.fingerprint,
                            serde_json::to_string(&event.attributes).unwrap_or_default(),
                            to_sql(day_of(event.time_ns / 1_000_000_000)),
                        ])
                        .map_err(fatal)?;
                }
            }
            tx.commit().map_err(fatal)
        })
        .await
    }

    async fn events(&self, query: &EventQuery) -> Result<Vec<EventRecord>, StoreError> {
        let query = query.clone();
        self.run(move |connection| {
            let mut statement = connection
                .prepare_cached(
                    "SELECT id, time_ns, service, name, body, trace_id, span_id, fingerprint,
                        attributes
                     FROM events
                     WHERE tenant = ?1 AND kind = ?2 AND time_ns >= ?3 AND time_ns < ?4
                        AND (?5 IS NULL OR service = ?5) AND (?6 IS NULL OR trace_id = ?6)
                        AND (?7 IS NULL OR fingerprint = ?7)
                     ORDER BY time_ns DESC, id LIMIT ?8",
                )
                .map_err(fatal)?;
            let mut rows = statement
                .query(params![
                    query.tenant.as_str(),
                    query.kind.as_str(),
                    bound_to_sql(query.from_ns),
                    bound_to_sql(query.to_ns),
                    query.service,
                    query.trace_id,
                    query.fingerprint,
                    i64::try_from(query.limit).unwrap_or(i64::MAX),
                ])
                .map_err(fatal)?;
            let mut events = Vec::new();
            while let Some(row) = rows.next().map_err(fatal)? {
                let attributes: String = row.get(8).map_err(fatal)?;
                events.push(EventRecord {
                    tenant: query.tenant.clone(),
                    kind: query.kind,
                    id: from_sql(row.get(0).map_err(fatal)?),
                    time_ns: from_sql(row.get(1).map_err(fatal)?),
                    service: row.get(2).map_err(fatal)?,
                    name: row.get(3).map_err(fatal)?,
                    body: row.get(4).map_err(fatal)?,
                    trace_id: row.get(5).map_err(fatal)?,
                    span_id: row.get(6).map_err(fatal)?,
                    fingerprint: row.get(7).map_err(fatal)?,
                    attributes: serde_json::from_str(&attributes)
                        .map_err(|e| corrupt("event attributes", e))?,
                });
            }
            Ok(events)
        })
        .await
    }
}
