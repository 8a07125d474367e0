//! Log records and crashes in SQLite.

use async_trait::async_trait;
use rusqlite::params;
use rusqlite::types::Value;

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
            // Only the filters given become clauses: `(? IS NULL OR x = ?)`
            // would keep SQLite from the index on x.
            let mut clauses = String::new();
            let mut values: Vec<Value> = vec![
                query.tenant.as_str().to_owned().into(),
                query.kind.as_str().to_owned().into(),
                bound_to_sql(query.from_ns).into(),
                bound_to_sql(query.to_ns).into(),
            ];
            // Each `?` of `sql` takes the next of `given`, numbered.
            let mut clause = |sql: &str, given: Vec<Value>| {
                let mut given = given.into_iter();
                clauses.push_str(" AND ");
                for c in sql.chars() {
                    clauses.push(c);
                    if c == '?' {
                        values.push(given.next().unwrap_or(Value::Null));
                        clauses.push_str(&values.len().to_string());
                    }
                }
            };
            for (column, filter) in [
                ("service", &query.service),
                ("trace_id", &query.trace_id),
                ("span_id", &query.span_id),
                ("fingerprint", &query.fingerprint),
            ] {
                if let Some(wanted) = filter {
                    clause(&format!("{column} = ?"), vec![wanted.clone().into()]);
                }
            }
            if !query.names.is_empty() {
                let names: Vec<String> = query.names.iter().map(|n| n.to_uppercase()).collect();
                clause(
                    "upper(name) IN (SELECT value FROM json_each(?))",
                    vec![serde_json::to_string(&names).unwrap_or_default().into()],
                );
            }
            if let Some(text) = &query.text {
                clause(
                    "instr(lower(body), lower(?)) > 0",
                    vec![text.clone().into()],
                );
            }
            if let Some((time_ns, id)) = query.before {
                clause(
                    "(time_ns, id) < (?, ?)",
                    vec![bound_to_sql(time_ns).into(), to_sql(id).into()],
                );
            }
            if !query.attributes.is_empty() {
                clause(
                    "NOT EXISTS (
                        SELECT 1 FROM json_each(?) AS wanted WHERE NOT EXISTS (
                            SELECT 1 FROM json_each(events.attributes) AS has
                            WHERE has.value ->> 0 = wanted.value ->> 0
                                AND has.value ->> 1 = wanted.value ->> 1))",
                    vec![
                        serde_json::to_string(&query.attributes)
                            .unwrap_or_default()
                            .into(),
                    ],
                );
            }
            values.push(i64::try_from(query.limit).unwrap_or(i64::MAX).into());
            // Without statistics SQLite reads a trace's few records through
            // the time index, for its order: over 10M records, 5 s instead
            // of 0.1 ms.
            let index = if query.trace_id.is_some() {
                " INDEXED BY events_by_trace"
            } else {
                ""
            };
            let mut statement = connection
                .prepare_cached(&format!(
                    "SELECT id, time_ns, service, name, body, trace_id, span_id, fingerprint,
                        attributes
                     FROM events{index}
                     WHERE tenant = ?1 AND kind = ?2 AND time_ns >= ?3 AND time_ns < ?4{clauses}
                     ORDER BY time_ns DESC, id DESC LIMIT ?{}",
                    values.len()
                ))
                .map_err(fatal)?;
            let mut rows = statement
                .query(rusqlite::params_from_iter(values))
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
