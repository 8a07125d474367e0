//! The embedded store: one SQLite file in WAL mode. Calls run on tokio's
//! blocking threads, one at a time over one connection; a flush is one
//! transaction, so it is written whole or not at all.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension, params, params_from_iter};

use super::codec::{Stats, blob_buckets, buckets_blob, corrupt, extend_buckets, merge_rows};
use super::{
    Aggregated, Aggregation, CatalogueEntry, Checkpoint, EventQuery, EventRecord, Flush,
    HistoryEntry, HistoryQuery, RollupQuery, SpanQuery, SpanRecord, StateRecord, Store, StoreError,
    StoredRollup, day_of, label_of,
};
use crate::config::StoreConfig;
use crate::model::{Kind, SeriesKey};
use crate::tenant::TenantId;

/// Schema versions, applied in order and recorded in `vigil_migrations`.
const MIGRATIONS: &[(u32, &str, &str)] = &[
    (
        1,
        "rollups, checkpoints, spans, series",
        "CREATE TABLE rollups (
        tenant TEXT NOT NULL, kind TEXT NOT NULL, service TEXT NOT NULL, name TEXT NOT NULL,
        labels TEXT NOT NULL, series INTEGER NOT NULL,
        width INTEGER NOT NULL, start INTEGER NOT NULL,
        count INTEGER NOT NULL, sum REAL NOT NULL, min REAL NOT NULL, max REAL NOT NULL,
        errors INTEGER NOT NULL, buckets BLOB NOT NULL, correction INTEGER NOT NULL,
        source TEXT NOT NULL, bus_partition INTEGER NOT NULL, day INTEGER NOT NULL
    );
    CREATE INDEX rollups_by_series ON rollups (tenant, kind, service, name, width, start);
    CREATE INDEX rollups_by_source ON rollups (source, bus_partition, width, start);
    CREATE INDEX rollups_by_day ON rollups (day);
    CREATE TABLE checkpoints (
        source TEXT NOT NULL, bus_partition INTEGER NOT NULL, seq INTEGER NOT NULL,
        next_offset INTEGER NOT NULL, replay_from INTEGER NOT NULL, watermark INTEGER NOT NULL,
        PRIMARY KEY (source, bus_partition)
    );
    CREATE TABLE spans (
        tenant TEXT NOT NULL, trace_id TEXT NOT NULL, span_id TEXT NOT NULL,
        parent_span_id TEXT NOT NULL, service TEXT NOT NULL, name TEXT NOT NULL,
        kind TEXT NOT NULL, start_ns INTEGER NOT NULL, duration_ns INTEGER NOT NULL,
        status_code INTEGER NOT NULL, status_message TEXT NOT NULL, attributes TEXT NOT NULL,
        day INTEGER NOT NULL,
        PRIMARY KEY (tenant, trace_id, span_id)
    ) WITHOUT ROWID;
    CREATE INDEX spans_by_service ON spans (tenant, service, start_ns);
    CREATE INDEX spans_by_day ON spans (day);
    CREATE TABLE series (
        series INTEGER PRIMARY KEY, tenant TEXT NOT NULL, kind TEXT NOT NULL,
        service TEXT NOT NULL, name TEXT NOT NULL, labels TEXT NOT NULL,
        first_seen INTEGER NOT NULL, last_seen INTEGER NOT NULL
    );
    CREATE INDEX series_by_tenant ON series (tenant, kind, service, name);",
    ),
    (
        2,
        "events, spans by time",
        "CREATE TABLE events (
            tenant TEXT NOT NULL, kind TEXT NOT NULL, id INTEGER NOT NULL,
            time_ns INTEGER NOT NULL, service TEXT NOT NULL, name TEXT NOT NULL,
            body TEXT NOT NULL, trace_id TEXT NOT NULL, span_id TEXT NOT NULL,
            fingerprint TEXT NOT NULL, attributes TEXT NOT NULL, day INTEGER NOT NULL,
            PRIMARY KEY (tenant, kind, id)
        ) WITHOUT ROWID;
        CREATE INDEX events_by_time ON events (tenant, kind, time_ns);
        CREATE INDEX events_by_day ON events (day);
        CREATE INDEX spans_by_time ON spans (tenant, start_ns);",
    ),
    (
        3,
        "rollups by service and by time",
        // Queries select a width and a time range, for one service or for all:
        // with the name before the width, the old index read every width and
        // every day of a service.
        "DROP INDEX rollups_by_series;
        CREATE INDEX rollups_by_service ON rollups (tenant, kind, service, width, start);
        CREATE INDEX rollups_by_time ON rollups (tenant, kind, width, start);",
    ),
    (
        4,
        "alerter state and history",
        "CREATE TABLE state (
            collection TEXT NOT NULL, tenant TEXT NOT NULL, key TEXT NOT NULL,
            version INTEGER NOT NULL, body TEXT NOT NULL, deleted INTEGER NOT NULL,
            PRIMARY KEY (collection, tenant, key)
        ) WITHOUT ROWID;
        CREATE TABLE history (
            tenant TEXT NOT NULL, time_ms INTEGER NOT NULL, kind TEXT NOT NULL,
            rule TEXT NOT NULL, subject TEXT NOT NULL, body TEXT NOT NULL, day INTEGER NOT NULL
        );
        CREATE INDEX history_by_time ON history (tenant, time_ms);
        CREATE INDEX history_by_day ON history (day);",
    ),
];

/// How much of the file is memory-mapped (address space, not memory).
const MMAP_BYTES: i64 = 64 << 30;

/// The embedded store.
#[derive(Clone)]
pub struct SqliteStore {
    connection: Arc<Mutex<Connection>>,
    span_retention_days: u64,
    event_retention_days: u64,
    rollup_retention_days: u64,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").finish_non_exhaustive()
    }
}

fn fatal(error: rusqlite::Error) -> StoreError {
    match error {
        rusqlite::Error::SqliteFailure(code, _)
            if matches!(
                code.code,
                rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
            ) =>
        {
            StoreError::Unavailable {
                reason: error.to_string(),
            }
        }
        _ => StoreError::Fatal {
            reason: error.to_string(),
        },
    }
}

/// SQLite integers are signed; ids and counters are stored bit for bit.
fn to_sql(value: u64) -> i64 {
    value as i64
}
fn from_sql(value: i64) -> u64 {
    value as u64
}
/// A time bound, kept within what a signed column compares correctly.
fn bound_to_sql(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// The columns [`span_from_row`] reads, in order.
const SPAN_COLUMNS: &str = "trace_id, span_id, parent_span_id, service, name, kind, start_ns, \
    duration_ns, status_code, status_message, attributes";

fn span_from_row(tenant: &TenantId, row: &rusqlite::Row<'_>) -> Result<SpanRecord, StoreError> {
    let attributes: String = row.get(10).map_err(fatal)?;
    Ok(SpanRecord {
        tenant: tenant.clone(),
        trace_id: row.get(0).map_err(fatal)?,
        span_id: row.get(1).map_err(fatal)?,
        parent_span_id: row.get(2).map_err(fatal)?,
        service: row.get(3).map_err(fatal)?,
        name: row.get(4).map_err(fatal)?,
        kind: row.get(5).map_err(fatal)?,
        start_ns: from_sql(row.get(6).map_err(fatal)?),
        duration_ns: from_sql(row.get(7).map_err(fatal)?),
        status_code: row.get(8).map_err(fatal)?,
        status_message: row.get(9).map_err(fatal)?,
        attributes: serde_json::from_str(&attributes).map_err(|e| corrupt("span attributes", e))?,
    })
}

fn labels_json(series: &SeriesKey) -> String {
    serde_json::to_string(series.labels()).unwrap_or_default()
}

fn series_from_row(
    tenant: &str,
    kind: &str,
    service: String,
    name: String,
    labels: &str,
) -> Result<SeriesKey, StoreError> {
    let labels: Vec<(String, String)> =
        serde_json::from_str(labels).map_err(|e| corrupt("labels", e))?;
    let (keys, values) = labels.into_iter().unzip();
    super::codec::series_from(tenant, kind, service, name, keys, values)
}

impl SqliteStore {
    /// Opens (or creates) the file the configuration names, and its folder.
    pub fn open(config: &StoreConfig) -> Result<Self, StoreError> {
        let path = &config.sqlite.path;
        if let Some(folder) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(folder).map_err(|e| StoreError::Fatal {
                reason: format!("cannot create {}: {e}", folder.display()),
            })?;
        }
        Self::with_connection(Connection::open(path).map_err(fatal)?, config, path)
    }

    fn with_connection(
        connection: Connection,
        config: &StoreConfig,
        path: &Path,
    ) -> Result<Self, StoreError> {
        connection
            .pragma_update(None, "journal_mode", "WAL")
            .and_then(|()| connection.pragma_update(None, "synchronous", "NORMAL"))
            // Reads of one service's windows land on pages all over the file:
            // mapped, they cost no system call each.
            .and_then(|()| connection.pragma_update(None, "mmap_size", MMAP_BYTES))
            .and_then(|()| connection.busy_timeout(std::time::Duration::from_secs(5)))
            .map_err(|e| StoreError::Fatal {
                reason: format!("cannot set up {}: {e}", path.display()),
            })?;
        Ok(SqliteStore {
            connection: Arc::new(Mutex::new(connection)),
            span_retention_days: u64::from(config.span_retention_days),
            event_retention_days: u64::from(config.event_retention_days),
            rollup_retention_days: u64::from(config.rollup_retention_days),
        })
    }

    /// Runs `job` with the connection on a blocking thread.
    async fn run<T: Send + 'static>(
        &self,
        job: impl FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let connection = Arc::clone(&self.connection);
        tokio::task::spawn_blocking(move || {
            let mut connection = connection.lock().unwrap_or_else(PoisonError::into_inner);
            job(&mut connection)
        })
        .await
        .map_err(|e| StoreError::Fatal {
            reason: format!("store task failed: {e}"),
        })?
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn migrate(&self) -> Result<Vec<u32>, StoreError> {
        self.run(|connection| {
            let tx = connection.transaction().map_err(fatal)?;
            tx.execute_batch(
                "CREATE TABLE IF NOT EXISTS vigil_migrations (
                    version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL)",
            )
            .map_err(fatal)?;
            let mut applied = Vec::new();
            for &(version, name, sql) in MIGRATIONS {
                let done: Option<i64> = tx
                    .query_row(
                        "SELECT version FROM vigil_migrations WHERE version = ?1",
                        [version],
                        |row| row.get(0),
                    )
                    .optional()
                    .map_err(fatal)?;
                if done.is_some() {
                    continue;
                }
                tx.execute_batch(sql).map_err(fatal)?;
                tx.execute(
                    "INSERT INTO vigil_migrations (version, name, applied_at) VALUES (?1, ?2, unixepoch())",
                    params![version, name],
                )
                .map_err(fatal)?;
                applied.push(version);
            }
            tx.commit().map_err(fatal)?;
            Ok(applied)
        })
        .await
    }

    async fn write(&self, flush: &Flush) -> Result<(), StoreError> {
        let flush = flush.clone();
        self.run(move |connection| {
            let day = to_sql(day_of(flush.time_s));
            let tx = connection.transaction().map_err(fatal)?;
            {
                let mut insert = tx
                    .prepare_cached(
                        "INSERT INTO rollups (tenant, kind, service, name, labels, series, width,
                            start, count, sum, min, max, errors, buckets, correction, source,
                            bus_partition, day)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14,
                            ?15, ?16, ?17, ?18)",
                    )
                    .map_err(fatal)?;
                for row in &flush.rows {
                    let stats = Stats::of(&row.rollup);
                    let series = &row.series;
                    insert
                        .execute(params![
                            series.tenant.as_str(),
                            series.kind.as_str(),
                            series.service,
                            series.name,
                            labels_json(series),
                            to_sql(series.id()),
                            row.width_s,
                            to_sql(row.start_s),
                            to_sql(stats.count),
                            stats.sum,
                            stats.min,
                            stats.max,
                            to_sql(stats.errors),
                            buckets_blob(&stats.keys, &stats.counts),
                            row.correction,
                            flush.source,
                            row.partition,
                            day,
                        ])
                        .map_err(fatal)?;
                }
                let mut checkpoint = tx
                    .prepare_cached(
                        "INSERT OR REPLACE INTO checkpoints
                            (source, bus_partition, seq, next_offset, replay_from, watermark)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    )
                    .map_err(fatal)?;
                for c in &flush.checkpoints {
                    checkpoint
                        .execute(params![
                            flush.source,
                            c.partition,
                            to_sql(c.seq),
                            c.next_offset,
                            c.replay_from,
                            to_sql(c.watermark_s),
                        ])
                        .map_err(fatal)?;
                }
            }
            tx.commit().map_err(fatal)
        })
        .await
    }

    async fn record_series(&self, entries: &[CatalogueEntry]) -> Result<(), StoreError> {
        let entries = entries.to_vec();
        self.run(move |connection| {
            let tx = connection.transaction().map_err(fatal)?;
            {
                let mut upsert = tx
                    .prepare_cached(
                        "INSERT INTO series (series, tenant, kind, service, name, labels,
                            first_seen, last_seen)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                         ON CONFLICT (series) DO UPDATE SET
                            first_seen = min(first_seen, excluded.first_seen),
                            last_seen = max(last_seen, excluded.last_seen)",
                    )
                    .map_err(fatal)?;
                for entry in &entries {
                    let series = &entry.series;
                    upsert
                        .execute(params![
                            to_sql(series.id()),
                            series.tenant.as_str(),
                            series.kind.as_str(),
                            series.service,
                            series.name,
                            labels_json(series),
                            to_sql(entry.first_seen_s),
                            to_sql(entry.last_seen_s),
                        ])
                        .map_err(fatal)?;
                }
            }
            tx.commit().map_err(fatal)
        })
        .await
    }

    async fn checkpoint(
        &self,
        source: &str,
        partition: i32,
    ) -> Result<Option<Checkpoint>, StoreError> {
        let source = source.to_owned();
        self.run(move |connection| {
            connection
                .query_row(
                    "SELECT seq, next_offset, replay_from, watermark FROM checkpoints
                     WHERE source = ?1 AND bus_partition = ?2",
                    params![source, partition],
                    |row| {
                        Ok(Checkpoint {
                            seq: from_sql(row.get(0)?),
                            partition,
                            next_offset: row.get(1)?,
                            replay_from: row.get(2)?,
                            watermark_s: from_sql(row.get(3)?),
                        })
                    },
                )
                .optional()
                .map_err(fatal)
        })
        .await
    }

    async fn rollups(&self, query: &RollupQuery) -> Result<Vec<StoredRollup>, StoreError> {
        let query = query.clone();
        self.run(move |connection| {
            let mut sql = String::from(
                "SELECT tenant, kind, service, name, labels, width, start, count, sum, min, max,
                    errors, buckets
                 FROM rollups WHERE width = ? AND start >= ? AND start < ?",
            );
            let mut values = vec![
                Value::from(query.width_s),
                Value::from(to_sql(query.from_s)),
                Value::from(to_sql(query.to_s)),
            ];
            let mut filter = |column: &str, value: Value| {
                sql.push_str(&format!(" AND {column} = ?"));
                values.push(value);
            };
            if let Some(tenant) = &query.tenant {
                filter("tenant", Value::from(tenant.as_str().to_owned()));
            }
            if let Some(kind) = query.kind {
                filter("kind", Value::from(kind.as_str().to_owned()));
            }
            if let Some(service) = &query.service {
                filter("service", Value::from(service.clone()));
            }
            if let Some(name) = &query.name {
                filter("name", Value::from(name.clone()));
            }
            if let Some((source, partition)) = &query.source {
                filter("source", Value::from(source.clone()));
                filter("bus_partition", Value::from(*partition));
            }
            let mut statement = connection.prepare_cached(&sql).map_err(fatal)?;
            let mut rows = statement.query(params_from_iter(values)).map_err(fatal)?;
            let mut stored = Vec::new();
            while let Some(row) = rows.next().map_err(fatal)? {
                let tenant: String = row.get(0).map_err(fatal)?;
                let kind: String = row.get(1).map_err(fatal)?;
                let labels: String = row.get(4).map_err(fatal)?;
                let series = series_from_row(
                    &tenant,
                    &kind,
                    row.get(2).map_err(fatal)?,
                    row.get(3).map_err(fatal)?,
                    &labels,
                )?;
                let blob: Vec<u8> = row.get(12).map_err(fatal)?;
                let (keys, counts) = blob_buckets(&blob)?;
                let stats = Stats {
                    count: from_sql(row.get(7).map_err(fatal)?),
                    sum: row.get(8).map_err(fatal)?,
                    min: row.get(9).map_err(fatal)?,
                    max: row.get(10).map_err(fatal)?,
                    errors: from_sql(row.get(11).map_err(fatal)?),
                    keys,
                    counts,
                };
                stored.push(StoredRollup {
                    series,
                    width_s: row.get(5).map_err(fatal)?,
                    start_s: from_sql(row.get(6).map_err(fatal)?),
                    rollup: stats.into_rollup()?,
                });
            }
            Ok(merge_rows(stored))
        })
        .await
    }

    async fn write_spans(&self, spans: &[SpanRecord]) -> Result<(), StoreError> {
        let spans = spans.to_vec();
        self.run(move |connection| {
            let tx = connection.transaction().map_err(fatal)?;
            {
                let mut insert = tx
                    .prepare_cached(
                        "INSERT OR IGNORE INTO spans (tenant, trace_id, span_id, parent_span_id,
                            service, name, kind, start_ns, duration_ns, status_code,
                            status_message, attributes, day)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
                    )
                    .map_err(fatal)?;
                for span in &spans {
                    insert
                        .execute(params![
                            span.tenant.as_str(),
                            span.trace_id,
                            span.span_id,
                            span.parent_span_id,
                            span.service,
                            span.name,
                            span.kind,
                            to_sql(span.start_ns),
                            to_sql(span.duration_ns),
                            span.status_code,
                            span.status_message,
                            serde_json::to_string(&span.attributes).unwrap_or_default(),
                            to_sql(day_of(span.start_ns / 1_000_000_000)),
                        ])
                        .map_err(fatal)?;
                }
            }
            tx.commit().map_err(fatal)
        })
        .await
    }

    async fn trace(
        &self,
        tenant: &TenantId,
        trace_id: &str,
    ) -> Result<Vec<SpanRecord>, StoreError> {
        let (tenant, trace_id) = (tenant.clone(), trace_id.to_owned());
        self.run(move |connection| {
            let mut statement = connection
                .prepare_cached(&format!(
                    "SELECT {SPAN_COLUMNS} FROM spans WHERE tenant = ?1 AND trace_id = ?2
                     ORDER BY start_ns, span_id"
                ))
                .map_err(fatal)?;
            let mut rows = statement
                .query(params![tenant.as_str(), trace_id])
                .map_err(fatal)?;
            let mut spans = Vec::new();
            while let Some(row) = rows.next().map_err(fatal)? {
                spans.push(span_from_row(&tenant, row)?);
            }
            Ok(spans)
        })
        .await
    }

    async fn search_spans(&self, query: &SpanQuery) -> Result<Vec<SpanRecord>, StoreError> {
        let query = query.clone();
        self.run(move |connection| {
            let mut statement = connection
                .prepare_cached(&format!(
                    "SELECT {SPAN_COLUMNS} FROM spans
                     WHERE tenant = ?1 AND start_ns >= ?2 AND start_ns < ?3
                        AND (?4 IS NULL OR service = ?4) AND (?5 IS NULL OR name = ?5)
                        AND (?6 IS NULL OR duration_ns >= ?6)
                        AND (?7 IS NULL OR (status_code = 2) = ?7)
                        AND (?8 IS NULL OR start_ns < ?8 OR (start_ns = ?8 AND span_id < ?9))
                        AND (NOT ?12 OR parent_span_id = '')
                        AND NOT EXISTS (
                            SELECT 1 FROM json_each(?10) AS wanted WHERE NOT EXISTS (
                                SELECT 1 FROM json_each(spans.attributes) AS has
                                WHERE has.value ->> 0 = wanted.value ->> 0
                                    AND has.value ->> 1 = wanted.value ->> 1))
                     ORDER BY start_ns DESC, span_id DESC LIMIT ?11"
                ))
                .map_err(fatal)?;
            let (before_start, before_span) = query.before.clone().unzip();
            let mut rows = statement
                .query(params![
                    query.tenant.as_str(),
                    bound_to_sql(query.from_ns),
                    bound_to_sql(query.to_ns),
                    query.service,
                    query.name,
                    query.min_duration_ns.map(bound_to_sql),
                    query.error,
                    before_start.map(bound_to_sql),
                    before_span,
                    serde_json::to_string(&query.attributes).unwrap_or_default(),
                    i64::try_from(query.limit).unwrap_or(i64::MAX),
                    query.root_only,
                ])
                .map_err(fatal)?;
            let mut spans = Vec::new();
            while let Some(row) = rows.next().map_err(fatal)? {
                spans.push(span_from_row(&query.tenant, row)?);
            }
            Ok(spans)
        })
        .await
    }

    async fn aggregate(&self, query: &Aggregation) -> Result<Vec<Aggregated>, StoreError> {
        let query = query.clone();
        self.run(move |connection| {
            let mut sql = String::from(
                "SELECT series, service, name, labels, start, count, sum, min, max, errors, buckets
                 FROM rollups
                 WHERE tenant = ? AND kind = ? AND width = ? AND start >= ? AND start < ?",
            );
            let mut values = vec![
                Value::from(query.tenant.as_str().to_owned()),
                Value::from(query.kind.as_str().to_owned()),
                Value::from(query.width_s),
                Value::from(bound_to_sql(query.from_s)),
                Value::from(bound_to_sql(query.to_s)),
            ];
            for (column, value) in [("service", &query.service), ("name", &query.name)] {
                if let Some(value) = value {
                    sql.push_str(&format!(" AND {column} = ?"));
                    values.push(Value::from(value.clone()));
                }
            }
            let mut statement = connection.prepare_cached(&sql).map_err(fatal)?;
            let mut rows = statement.query(params_from_iter(values)).map_err(fatal)?;
            // Labels are parsed once per series: the index of its group, or
            // None when the matchers leave it out. Rows are summed as stored
            // (buckets appended) and made distributions once per output row.
            let mut series_groups: HashMap<i64, Option<usize>> = HashMap::new();
            let mut groups: Vec<Vec<String>> = Vec::new();
            let mut group_index: HashMap<Vec<String>, usize> = HashMap::new();
            let mut merged: HashMap<(usize, u64), Stats> = HashMap::new();
            while let Some(row) = rows.next().map_err(fatal)? {
                let id: i64 = row.get(0).map_err(fatal)?;
                let group = match series_groups.entry(id) {
                    Entry::Occupied(entry) => *entry.get(),
                    Entry::Vacant(entry) => {
                        let labels: String = row.get(3).map_err(fatal)?;
                        let series = series_from_row(
                            query.tenant.as_str(),
                            query.kind.as_str(),
                            row.get(1).map_err(fatal)?,
                            row.get(2).map_err(fatal)?,
                            &labels,
                        )?;
                        let group = query.matchers.iter().all(|m| m.matches(&series)).then(|| {
                            let values: Vec<String> = query
                                .group_by
                                .iter()
                                .map(|key| label_of(&series, key).to_owned())
                                .collect();
                            *group_index.entry(values.clone()).or_insert_with(|| {
                                groups.push(values);
                                groups.len() - 1
                            })
                        });
                        *entry.insert(group)
                    }
                };
                let Some(group) = group else {
                    continue;
                };
                let start = from_sql(row.get(4).map_err(fatal)?);
                let key = (group, start - start % query.step_s);
                if !merged.contains_key(&key) && merged.len() >= query.limit {
                    break;
                }
                let stats = merged.entry(key).or_default();
                let count = from_sql(row.get(5).map_err(fatal)?);
                let (min, max): (f64, f64) =
                    (row.get(7).map_err(fatal)?, row.get(8).map_err(fatal)?);
                if count > 0 {
                    let first = stats.count == 0;
                    stats.min = if first { min } else { stats.min.min(min) };
                    stats.max = if first { max } else { stats.max.max(max) };
                }
                stats.count += count;
                stats.sum += row.get::<_, f64>(6).map_err(fatal)?;
                stats.errors += from_sql(row.get(9).map_err(fatal)?);
                let blob = row
                    .get_ref(10)
                    .map_err(fatal)?
                    .as_blob()
                    .map_err(|e| corrupt("buckets", e))?;
                extend_buckets(blob, &mut stats.keys, &mut stats.counts)?;
            }
            let mut out: Vec<Aggregated> = merged
                .into_iter()
                .map(|((group, start_s), stats)| {
                    Ok(Aggregated {
                        group: groups[group].clone(),
                        start_s,
                        rollup: stats.into_rollup()?,
                    })
                })
                .collect::<Result<_, StoreError>>()?;
            out.sort_by(|a, b| (&a.group, a.start_s).cmp(&(&b.group, b.start_s)));
            Ok(out)
        })
        .await
    }

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

    async fn series(
        &self,
        tenant: &TenantId,
        kind: Option<Kind>,
        service: Option<&str>,
    ) -> Result<Vec<CatalogueEntry>, StoreError> {
        let tenant = tenant.clone();
        let service = service.map(str::to_owned);
        self.run(move |connection| {
            let mut statement = connection
                .prepare_cached(
                    "SELECT tenant, kind, service, name, labels, first_seen, last_seen FROM series
                     WHERE tenant = ?1 AND (?2 IS NULL OR kind = ?2)
                        AND (?3 IS NULL OR service = ?3)
                     ORDER BY kind, service, name, series",
                )
                .map_err(fatal)?;
            let mut rows = statement
                .query(params![tenant.as_str(), kind.map(Kind::as_str), service])
                .map_err(fatal)?;
            let mut entries = Vec::new();
            while let Some(row) = rows.next().map_err(fatal)? {
                let tenant: String = row.get(0).map_err(fatal)?;
                let kind: String = row.get(1).map_err(fatal)?;
                let labels: String = row.get(4).map_err(fatal)?;
                entries.push(CatalogueEntry {
                    series: series_from_row(
                        &tenant,
                        &kind,
                        row.get(2).map_err(fatal)?,
                        row.get(3).map_err(fatal)?,
                        &labels,
                    )?,
                    first_seen_s: from_sql(row.get(5).map_err(fatal)?),
                    last_seen_s: from_sql(row.get(6).map_err(fatal)?),
                });
            }
            Ok(entries)
        })
        .await
    }

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
                            record.collection,
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

    async fn state(&self, collection: &str) -> Result<Vec<StateRecord>, StoreError> {
        let collection = collection.to_owned();
        self.run(move |connection| {
            let mut statement = connection
                .prepare_cached(
                    "SELECT tenant, key, version, body FROM state
                     WHERE collection = ?1 AND NOT deleted ORDER BY tenant, key",
                )
                .map_err(fatal)?;
            let mut rows = statement.query([&collection]).map_err(fatal)?;
            let mut records = Vec::new();
            while let Some(row) = rows.next().map_err(fatal)? {
                let tenant: String = row.get(0).map_err(fatal)?;
                records.push(StateRecord {
                    collection: collection.clone(),
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

    async fn ping(&self) -> Result<(), StoreError> {
        self.run(|connection| {
            connection
                .query_row("SELECT 1", [], |_| Ok(()))
                .map_err(fatal)
        })
        .await
    }

    async fn enforce_retention(&self, now_s: u64) -> Result<(), StoreError> {
        let today = day_of(now_s);
        let spans_before = to_sql(today.saturating_sub(self.span_retention_days));
        let events_before = to_sql(today.saturating_sub(self.event_retention_days));
        let rollups_before = to_sql(today.saturating_sub(self.rollup_retention_days));
        self.run(move |connection| {
            connection
                .execute("DELETE FROM spans WHERE day < ?1", [spans_before])
                .and_then(|_| {
                    connection.execute("DELETE FROM events WHERE day < ?1", [events_before])
                })
                .and_then(|_| {
                    connection.execute("DELETE FROM history WHERE day < ?1", [events_before])
                })
                .and_then(|_| {
                    connection.execute("DELETE FROM rollups WHERE day < ?1", [rollups_before])
                })
                .map(drop)
                .map_err(fatal)
        })
        .await
    }
}
