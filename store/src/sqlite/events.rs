//! Log records and crashes in SQLite.

use async_trait::async_trait;
use rusqlite::params;
use rusqlite::types::Value;

use super::{SqliteStore, bound_to_sql, fatal, from_sql, to_sql};
use crate::codec::corrupt;
use crate::{
    CrashCount, CrashDimension, CrashGroupCount, CrashQuery, CrashReach, EventKind, EventQuery,
    EventRecord, EventStore, StoreError, day_of,
};

/// SQL conditions and the values they bind, numbered in order: only the
/// filters given become clauses, as `(? IS NULL OR x = ?)` would keep
/// SQLite from the index on x.
struct Clauses {
    sql: String,
    values: Vec<Value>,
}

impl Clauses {
    /// Conditions after the first `values.len()` parameters of a query.
    fn after(values: Vec<Value>) -> Self {
        Clauses {
            sql: String::new(),
            values,
        }
    }

    /// Adds ` AND {sql}`, each `?` of which binds the next of `given`.
    fn and(&mut self, sql: &str, given: Vec<Value>) {
        let mut given = given.into_iter();
        self.sql.push_str(" AND ");
        for c in sql.chars() {
            self.sql.push(c);
            if c == '?' {
                self.values.push(given.next().unwrap_or(Value::Null));
                self.sql.push_str(&self.values.len().to_string());
            }
        }
    }

    /// The next parameter's number, binding `value`.
    fn bind(&mut self, value: Value) -> usize {
        self.values.push(value);
        self.values.len()
    }
}

/// The crashes of `query` as clauses after tenant ?1, app ?2 and the range
/// ?3–?4.
fn crash_clauses(query: &CrashQuery) -> Clauses {
    let mut clauses = Clauses::after(vec![
        query.tenant.as_str().to_owned().into(),
        query.app.clone().into(),
        bound_to_sql(query.from_ns).into(),
        bound_to_sql(query.to_ns).into(),
    ]);
    for (dimension, value) in &query.filters {
        clauses.and(
            &format!("{} = ?", dimension.name()),
            vec![value.clone().into()],
        );
    }
    if !query.fingerprints.is_empty() {
        // Bound one by one, so that the planner sees a short list and
        // reads the groups' index.
        let list = vec!["?"; query.fingerprints.len()].join(", ");
        clauses.and(
            &format!("fingerprint IN ({list})"),
            query
                .fingerprints
                .iter()
                .map(|f| f.clone().into())
                .collect(),
        );
    }
    clauses
}

/// The table the crashes of `query` are read from: a few groups' crashes
/// through the groups' index (without statistics SQLite scans the range
/// instead: 110 ms instead of 65 for one group of 30,000 crashes among a
/// million), more of them in time order.
fn crash_source(query: &CrashQuery) -> &'static str {
    if (1..=4).contains(&query.fingerprints.len()) {
        "crashes INDEXED BY crashes_by_group"
    } else {
        "crashes"
    }
}

/// An attribute of an event, empty when it has none.
fn attribute<'a>(event: &'a EventRecord, key: &str) -> &'a str {
    event
        .attributes
        .iter()
        .find(|(k, _)| k == key)
        .map_or("", |(_, v)| v.as_str())
}

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
                let mut crash = tx
                    .prepare_cached(
                        "INSERT OR IGNORE INTO crashes (tenant, id, app, fingerprint, time_ns,
                            exception_type, message, version, os, os_version, device, kind,
                            foreground, recurred, user_hash, session_hash, day)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14,
                            ?15, ?16, ?17)",
                    )
                    .map_err(fatal)?;
                for event in events.iter().filter(|e| e.kind == EventKind::Crash) {
                    let [version, os, os_version, device, kind, foreground, recurred] =
                        CrashDimension::ALL.map(|d| attribute(event, d.attribute()));
                    crash
                        .execute(params![
                            event.tenant.as_str(),
                            to_sql(event.id),
                            event.service,
                            event.fingerprint,
                            to_sql(event.time_ns),
                            event.name,
                            event.body,
                            version,
                            os,
                            os_version,
                            device,
                            kind,
                            foreground,
                            recurred,
                            attribute(event, "user.id_hash"),
                            attribute(event, "session.id_hash"),
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
            let mut clauses = Clauses::after(vec![
                query.tenant.as_str().to_owned().into(),
                query.kind.as_str().to_owned().into(),
                bound_to_sql(query.from_ns).into(),
                bound_to_sql(query.to_ns).into(),
            ]);
            for (column, filter) in [
                ("service", &query.service),
                ("trace_id", &query.trace_id),
                ("span_id", &query.span_id),
                ("fingerprint", &query.fingerprint),
            ] {
                if let Some(wanted) = filter {
                    clauses.and(&format!("{column} = ?"), vec![wanted.clone().into()]);
                }
            }
            if !query.names.is_empty() {
                let names: Vec<String> = query.names.iter().map(|n| n.to_uppercase()).collect();
                clauses.and(
                    "upper(name) IN (SELECT value FROM json_each(?))",
                    vec![serde_json::to_string(&names).unwrap_or_default().into()],
                );
            }
            if let Some(text) = &query.text {
                clauses.and(
                    "instr(lower(body), lower(?)) > 0",
                    vec![text.clone().into()],
                );
            }
            if let Some((time_ns, id)) = query.before {
                clauses.and(
                    "(time_ns, id) < (?, ?)",
                    vec![bound_to_sql(time_ns).into(), to_sql(id).into()],
                );
            }
            if !query.attributes.is_empty() {
                clauses.and(
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
            let limit = clauses.bind(i64::try_from(query.limit).unwrap_or(i64::MAX).into());
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
                     WHERE tenant = ?1 AND kind = ?2 AND time_ns >= ?3 AND time_ns < ?4{}
                     ORDER BY time_ns DESC, id DESC LIMIT ?{limit}",
                    clauses.sql
                ))
                .map_err(fatal)?;
            let mut rows = statement
                .query(rusqlite::params_from_iter(clauses.values))
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

    async fn crash_groups(&self, query: &CrashQuery) -> Result<Vec<CrashGroupCount>, StoreError> {
        let clauses = crash_clauses(query);
        let source = crash_source(query);
        self.run(move |connection| {
            let filters = &clauses.sql;
            // The newest crash's type and message: one step down the
            // group's index per group.
            let newest = |column: &str| {
                format!(
                    "(SELECT {column} FROM crashes INDEXED BY crashes_by_group
                      WHERE tenant = ?1 AND app = ?2 AND fingerprint = g.fingerprint
                        AND time_ns >= ?3 AND time_ns < ?4{filters}
                      ORDER BY time_ns DESC LIMIT 1)"
                )
            };
            let mut statement = connection
                .prepare_cached(&format!(
                    "SELECT g.*, {}, {} FROM (
                        SELECT fingerprint, count(*) AS events, min(time_ns), max(time_ns)
                        FROM {source}
                        WHERE tenant = ?1 AND app = ?2 AND time_ns >= ?3 AND time_ns < ?4{filters}
                        GROUP BY fingerprint) AS g
                     ORDER BY events DESC, fingerprint",
                    newest("exception_type"),
                    newest("message"),
                ))
                .map_err(fatal)?;
            let mut rows = statement
                .query(rusqlite::params_from_iter(&clauses.values))
                .map_err(fatal)?;
            let mut groups = Vec::new();
            while let Some(row) = rows.next().map_err(fatal)? {
                groups.push(CrashGroupCount {
                    fingerprint: row.get(0).map_err(fatal)?,
                    events: from_sql(row.get(1).map_err(fatal)?),
                    first_ns: from_sql(row.get(2).map_err(fatal)?),
                    last_ns: from_sql(row.get(3).map_err(fatal)?),
                    exception_type: row.get(4).map_err(fatal)?,
                    message: row.get(5).map_err(fatal)?,
                });
            }
            Ok(groups)
        })
        .await
    }

    async fn crash_reach(
        &self,
        query: &CrashQuery,
        by: Option<CrashDimension>,
    ) -> Result<Vec<CrashReach>, StoreError> {
        let clauses = crash_clauses(query);
        let source = crash_source(query);
        self.run(move |connection| {
            let key = by.map_or("fingerprint", CrashDimension::name);
            let mut statement = connection
                .prepare_cached(&format!(
                    "SELECT {key}, count(DISTINCT nullif(session_hash, '')),
                        count(DISTINCT nullif(user_hash, '')), sum(session_hash = '')
                     FROM {source}
                     WHERE tenant = ?1 AND app = ?2 AND time_ns >= ?3 AND time_ns < ?4{}
                     GROUP BY {key} ORDER BY {key}",
                    clauses.sql
                ))
                .map_err(fatal)?;
            let mut rows = statement
                .query(rusqlite::params_from_iter(&clauses.values))
                .map_err(fatal)?;
            let mut reach = Vec::new();
            while let Some(row) = rows.next().map_err(fatal)? {
                reach.push(CrashReach {
                    key: row.get(0).map_err(fatal)?,
                    sessions: from_sql(row.get(1).map_err(fatal)?),
                    users: from_sql(row.get(2).map_err(fatal)?),
                    without_session: from_sql(row.get(3).map_err(fatal)?),
                });
            }
            Ok(reach)
        })
        .await
    }

    async fn crash_counts(
        &self,
        query: &CrashQuery,
        by: CrashDimension,
    ) -> Result<Vec<CrashCount>, StoreError> {
        let clauses = crash_clauses(query);
        let source = crash_source(query);
        self.run(move |connection| {
            let by = by.name();
            let mut statement = connection
                .prepare_cached(&format!(
                    "SELECT fingerprint, {by}, count(*) AS events, min(time_ns), max(time_ns)
                     FROM {source}
                     WHERE tenant = ?1 AND app = ?2 AND time_ns >= ?3 AND time_ns < ?4{}
                     GROUP BY fingerprint, {by}
                     ORDER BY fingerprint, events DESC, {by}",
                    clauses.sql
                ))
                .map_err(fatal)?;
            let mut rows = statement
                .query(rusqlite::params_from_iter(&clauses.values))
                .map_err(fatal)?;
            let mut counts = Vec::new();
            while let Some(row) = rows.next().map_err(fatal)? {
                counts.push(CrashCount {
                    fingerprint: row.get(0).map_err(fatal)?,
                    value: row.get(1).map_err(fatal)?,
                    events: from_sql(row.get(2).map_err(fatal)?),
                    first_ns: from_sql(row.get(3).map_err(fatal)?),
                    last_ns: from_sql(row.get(4).map_err(fatal)?),
                });
            }
            Ok(counts)
        })
        .await
    }
}
