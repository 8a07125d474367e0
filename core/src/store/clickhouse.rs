//! The ClickHouse store, over HTTP with RowBinary (the `clickhouse` crate with
//! schema validation off, which ClickHouse 18.16 needs). The schema keeps to
//! what 18.16 and current servers share: MergeTree families, arrays, `sumMap`,
//! UInt64 times, and partitions by day for retention.
//!
//! Atomicity: one INSERT into one partition, in one block, is written as one
//! part or not at all. A flush is one INSERT into `rollups`, all of its rows
//! (its checkpoint rows included) carry the flush's day as partition key, and
//! the block size is raised above the largest flush, so a flush is atomic.
//! Checkpoints are rows of `rollups` with `kind = 'checkpoint'` for that reason.

use async_trait::async_trait;
use clickhouse::{Client, Row, RowOwned, RowWrite};
use serde::{Deserialize, Serialize};

use super::codec::{Stats, corrupt, label_arrays, merge_rows, series_from};
use super::{
    Aggregated, Aggregation, CatalogueEntry, Checkpoint, EventKind, EventQuery, EventRecord, Flush,
    HistoryEntry, HistoryQuery, RollupQuery, SpanQuery, SpanRecord, StateRecord, Store, StoreError,
    StoredRollup, day_of,
};
use crate::config::StoreConfig;
use crate::model::Kind;
use crate::tenant::TenantId;

/// The `kind` of checkpoint rows, which no series has.
const CHECKPOINT_KIND: &str = "checkpoint";
/// Rows one INSERT block may hold: above any flush (`aggregator.max_flush_rows`
/// is at most one million), so a flush is one block.
const MAX_INSERT_BLOCK_ROWS: &str = "2000000";

/// Schema versions, applied in order and recorded in `vigil_migrations`.
const MIGRATIONS: &[(u32, &str, &[&str])] = &[
    (
    1,
    "rollups, spans, series",
    &[
        "CREATE TABLE IF NOT EXISTS rollups (
            tenant String, kind String, service String, name String,
            label_keys Array(String), label_values Array(String), series UInt64,
            width UInt32, start UInt64,
            count UInt64, sum Float64, min Float64, max Float64, errors UInt64,
            bucket_keys Array(Int32), bucket_counts Array(UInt64), correction UInt8,
            source String, bus_partition Int32, seq UInt64, next_offset Int64,
            replay_from Int64, watermark UInt64, day UInt32
        ) ENGINE = MergeTree PARTITION BY day
        ORDER BY (tenant, kind, service, name, width, start, series)",
        "CREATE TABLE IF NOT EXISTS spans (
            tenant String, trace_id String, span_id String, parent_span_id String,
            service String, name String, kind String, start_ns UInt64, duration_ns UInt64,
            status_code UInt8, status_message String,
            attribute_keys Array(String), attribute_values Array(String), day UInt32
        ) ENGINE = ReplacingMergeTree PARTITION BY day ORDER BY (tenant, trace_id, span_id)",
        "CREATE TABLE IF NOT EXISTS series (
            tenant String, kind String, service String, name String,
            label_keys Array(String), label_values Array(String), series UInt64,
            first_seen UInt64, last_seen UInt64
        ) ENGINE = ReplacingMergeTree ORDER BY (tenant, kind, service, name, series, first_seen, last_seen)",
    ],
    ),
    (
        2,
        "events",
        &["CREATE TABLE IF NOT EXISTS events (
            tenant String, kind String, id UInt64, time_ns UInt64, service String, name String,
            body String, trace_id String, span_id String, fingerprint String,
            attribute_keys Array(String), attribute_values Array(String), day UInt32
        ) ENGINE = ReplacingMergeTree PARTITION BY day ORDER BY (tenant, kind, time_ns, id)"],
    ),
    (
        3,
        "rollups ordered by width, service and time",
        // Queries read one width over a time range, of one service or of
        // all. With the name before the width, a range of one width was
        // spread over every name's block of every width.
        // `rollups` holds every row after each statement, so a rerun after
        // a failure anywhere drops the leftovers and starts over.
        &[
            "DROP TABLE IF EXISTS rollups_v2",
            "DROP TABLE IF EXISTS rollups_v3",
            "CREATE TABLE rollups_v3 AS rollups ENGINE = MergeTree PARTITION BY day
                ORDER BY (tenant, kind, width, service, start, name, series)",
            "INSERT INTO rollups_v3 SELECT * FROM rollups",
            "RENAME TABLE rollups TO rollups_v2, rollups_v3 TO rollups",
            "DROP TABLE rollups_v2",
        ],
    ),
    (
        4,
        "alerter state and history",
        &[
            // The greatest version of a key is kept; reads use FINAL.
            "CREATE TABLE IF NOT EXISTS state (
                collection String, tenant String, key String, version UInt64,
                body String, deleted UInt8
            ) ENGINE = ReplacingMergeTree(version) ORDER BY (collection, tenant, key)",
            "CREATE TABLE IF NOT EXISTS history (
                tenant String, time_ms UInt64, kind String, rule String, subject String,
                body String, day UInt32
            ) ENGINE = MergeTree PARTITION BY day ORDER BY (tenant, time_ms)",
        ],
    ),
];

/// The ClickHouse store.
#[derive(Clone)]
pub struct ClickHouseStore {
    /// Without a database: for creating it.
    server: Client,
    client: Client,
    database: String,
    span_retention_days: u64,
    event_retention_days: u64,
    rollup_retention_days: u64,
}

impl std::fmt::Debug for ClickHouseStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClickHouseStore")
            .field("database", &self.database)
            .finish_non_exhaustive()
    }
}

/// ClickHouse error codes that the same call may get past later: too many
/// parts, memory, timeouts, a table being altered. Anything else (bad data,
/// bad SQL, unknown tables) is not retried. Network errors always are.
const RETRYABLE_CODES: &[&str] = &[
    "Code: 159",
    "Code: 160",
    "Code: 202",
    "Code: 209",
    "Code: 210",
    "Code: 241",
    "Code: 242",
    "Code: 252",
    "Code: 473",
];

fn classify(error: clickhouse::error::Error) -> StoreError {
    let reason = error.to_string();
    let retryable = match &error {
        clickhouse::error::Error::Network(_) | clickhouse::error::Error::TimedOut => true,
        clickhouse::error::Error::BadResponse(text) => {
            RETRYABLE_CODES.iter().any(|code| text.contains(code))
        }
        _ => false,
    };
    if retryable {
        StoreError::Unavailable { reason }
    } else {
        StoreError::Fatal { reason }
    }
}

#[derive(Row, Serialize, Default)]
struct RollupOut {
    tenant: String,
    kind: String,
    service: String,
    name: String,
    label_keys: Vec<String>,
    label_values: Vec<String>,
    series: u64,
    width: u32,
    start: u64,
    count: u64,
    sum: f64,
    min: f64,
    max: f64,
    errors: u64,
    bucket_keys: Vec<i32>,
    bucket_counts: Vec<u64>,
    correction: u8,
    source: String,
    bus_partition: i32,
    seq: u64,
    next_offset: i64,
    replay_from: i64,
    watermark: u64,
    day: u32,
}

#[derive(Row, Deserialize)]
struct RollupIn {
    tenant: String,
    kind: String,
    service: String,
    name: String,
    label_keys: Vec<String>,
    label_values: Vec<String>,
    width: u32,
    start: u64,
    count: u64,
    sum: f64,
    min: f64,
    max: f64,
    errors: u64,
    buckets: (Vec<i32>, Vec<u64>),
}

#[derive(Row, Deserialize)]
struct AggregatedIn {
    group: Vec<String>,
    start: u64,
    count: u64,
    sum: f64,
    min: f64,
    max: f64,
    errors: u64,
    buckets: (Vec<i32>, Vec<u64>),
}

/// A value bound to a `?` of a query, in the order of the `?`s.
enum Bound {
    Text(String),
    Number(u64),
}

/// The SQL of a label as matchers and groups see it (see
/// [`super::label_of`]), and the key to bind when it is an array lookup.
fn label_sql(key: &str) -> (&'static str, Option<Bound>) {
    match key {
        "service.name" => ("service", None),
        "name" => ("name", None),
        _ => (
            "label_values[indexOf(label_keys, ?)]",
            Some(Bound::Text(key.to_owned())),
        ),
    }
}

#[derive(Row, Deserialize)]
struct CheckpointIn {
    seq: u64,
    next_offset: i64,
    replay_from: i64,
    watermark: u64,
}

#[derive(Row, Serialize, Deserialize)]
struct SpanRow {
    tenant: String,
    trace_id: String,
    span_id: String,
    parent_span_id: String,
    service: String,
    name: String,
    kind: String,
    start_ns: u64,
    duration_ns: u64,
    status_code: u8,
    status_message: String,
    attribute_keys: Vec<String>,
    attribute_values: Vec<String>,
    day: u32,
}

impl SpanRow {
    fn into_record(self) -> Result<SpanRecord, StoreError> {
        Ok(SpanRecord {
            tenant: TenantId::parse(&self.tenant).map_err(|e| corrupt("tenant", e))?,
            trace_id: self.trace_id,
            span_id: self.span_id,
            parent_span_id: self.parent_span_id,
            service: self.service,
            name: self.name,
            kind: self.kind,
            start_ns: self.start_ns,
            duration_ns: self.duration_ns,
            status_code: self.status_code,
            status_message: self.status_message,
            attributes: self
                .attribute_keys
                .into_iter()
                .zip(self.attribute_values)
                .collect(),
        })
    }
}

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

#[derive(Row, Serialize, Deserialize)]
struct EventRow {
    tenant: String,
    kind: String,
    id: u64,
    time_ns: u64,
    service: String,
    name: String,
    body: String,
    trace_id: String,
    span_id: String,
    fingerprint: String,
    attribute_keys: Vec<String>,
    attribute_values: Vec<String>,
    day: u32,
}

#[derive(Row, Serialize, Deserialize)]
struct SeriesRow {
    tenant: String,
    kind: String,
    service: String,
    name: String,
    label_keys: Vec<String>,
    label_values: Vec<String>,
    series: u64,
    first_seen: u64,
    last_seen: u64,
}

#[derive(Row, Deserialize)]
struct PartitionIn {
    table: String,
    day: u32,
}

/// A day number as ClickHouse stores it (days since the epoch fit in u32).
fn day_u32(time_s: u64) -> u32 {
    u32::try_from(day_of(time_s)).unwrap_or(u32::MAX)
}

impl ClickHouseStore {
    /// A store on the configured server; nothing is contacted until used.
    pub fn new(config: &StoreConfig) -> Self {
        let settings = &config.clickhouse;
        let server = Client::default()
            .with_url(&settings.url)
            .with_user(&settings.user)
            .with_password(settings.password.expose())
            .with_validation(false);
        ClickHouseStore {
            client: server.clone().with_database(&settings.database),
            server,
            database: settings.database.clone(),
            span_retention_days: u64::from(config.span_retention_days),
            event_retention_days: u64::from(config.event_retention_days),
            rollup_retention_days: u64::from(config.rollup_retention_days),
        }
    }

    async fn insert_all<T: RowOwned + RowWrite>(
        &self,
        table: &str,
        rows: Vec<T>,
    ) -> Result<(), StoreError> {
        let mut insert = self
            .client
            .insert::<T>(table)
            .await
            .map_err(classify)?
            .with_setting("max_insert_block_size", MAX_INSERT_BLOCK_ROWS);
        for row in rows {
            insert.write(&row).await.map_err(classify)?;
        }
        insert.end().await.map_err(classify)
    }
}

#[async_trait]
impl Store for ClickHouseStore {
    async fn migrate(&self) -> Result<Vec<u32>, StoreError> {
        self.server
            .query(&format!("CREATE DATABASE IF NOT EXISTS {}", self.database))
            .execute()
            .await
            .map_err(classify)?;
        self.client
            .query(
                "CREATE TABLE IF NOT EXISTS vigil_migrations (
                    version UInt32, name String, applied_at DateTime
                ) ENGINE = MergeTree ORDER BY version",
            )
            .execute()
            .await
            .map_err(classify)?;
        let done: Vec<u32> = self
            .client
            .query("SELECT version FROM vigil_migrations")
            .fetch_all()
            .await
            .map_err(classify)?;
        let mut applied = Vec::new();
        for &(version, name, statements) in MIGRATIONS {
            if done.contains(&version) {
                continue;
            }
            for statement in statements {
                self.client
                    .query(statement)
                    .execute()
                    .await
                    .map_err(classify)?;
            }
            self.client
                .query("INSERT INTO vigil_migrations SELECT ?, ?, now()")
                .bind(version)
                .bind(name)
                .execute()
                .await
                .map_err(classify)?;
            applied.push(version);
        }
        Ok(applied)
    }

    async fn write(&self, flush: &Flush) -> Result<(), StoreError> {
        let day = day_u32(flush.time_s);
        let source = flush.source.as_str();
        let rows = flush.rows.iter().map(|row| {
            let stats = Stats::of(&row.rollup);
            let (label_keys, label_values) = label_arrays(&row.series);
            RollupOut {
                tenant: row.series.tenant.as_str().to_owned(),
                kind: row.series.kind.as_str().to_owned(),
                service: row.series.service.clone(),
                name: row.series.name.clone(),
                label_keys,
                label_values,
                series: row.series.id(),
                width: row.width_s,
                start: row.start_s,
                count: stats.count,
                sum: stats.sum,
                min: stats.min,
                max: stats.max,
                errors: stats.errors,
                bucket_keys: stats.keys,
                bucket_counts: stats.counts,
                correction: u8::from(row.correction),
                source: source.to_owned(),
                bus_partition: row.partition,
                day,
                ..RollupOut::default()
            }
        });
        let checkpoints = flush.checkpoints.iter().map(|c| RollupOut {
            kind: CHECKPOINT_KIND.to_owned(),
            source: source.to_owned(),
            bus_partition: c.partition,
            seq: c.seq,
            next_offset: c.next_offset,
            replay_from: c.replay_from,
            watermark: c.watermark_s,
            day,
            ..RollupOut::default()
        });
        self.insert_all("rollups", checkpoints.chain(rows).collect())
            .await
    }

    async fn record_series(&self, entries: &[CatalogueEntry]) -> Result<(), StoreError> {
        let rows = entries.iter().map(|entry| {
            let (label_keys, label_values) = label_arrays(&entry.series);
            SeriesRow {
                tenant: entry.series.tenant.as_str().to_owned(),
                kind: entry.series.kind.as_str().to_owned(),
                service: entry.series.service.clone(),
                name: entry.series.name.clone(),
                label_keys,
                label_values,
                series: entry.series.id(),
                first_seen: entry.first_seen_s,
                last_seen: entry.last_seen_s,
            }
        });
        self.insert_all("series", rows.collect()).await
    }

    async fn checkpoint(
        &self,
        source: &str,
        partition: i32,
    ) -> Result<Option<Checkpoint>, StoreError> {
        let row: Option<CheckpointIn> = self
            .client
            .query(
                "SELECT seq, next_offset, replay_from, watermark FROM rollups
                 WHERE tenant = '' AND kind = ? AND source = ? AND bus_partition = ?
                 ORDER BY seq DESC LIMIT 1",
            )
            .bind(CHECKPOINT_KIND)
            .bind(source)
            .bind(partition)
            .fetch_optional()
            .await
            .map_err(classify)?;
        Ok(row.map(|row| Checkpoint {
            seq: row.seq,
            partition,
            next_offset: row.next_offset,
            replay_from: row.replay_from,
            watermark_s: row.watermark,
        }))
    }

    async fn rollups(&self, query: &RollupQuery) -> Result<Vec<StoredRollup>, StoreError> {
        let mut sql = String::from(
            "SELECT tenant, kind, service, name, any(label_keys), any(label_values), width, start,
                sum(count), sum(sum), min(min), max(max), sum(errors),
                sumMap(bucket_keys, bucket_counts)
             FROM rollups
             WHERE kind != ? AND width = ? AND start >= ? AND start < ?",
        );
        let mut filters: Vec<String> = Vec::new();
        let mut push = |column: &str, value: String| {
            sql.push_str(&format!(" AND {column} = ?"));
            filters.push(value);
        };
        if let Some(tenant) = &query.tenant {
            push("tenant", tenant.as_str().to_owned());
        }
        if let Some(kind) = query.kind {
            push("kind", kind.as_str().to_owned());
        }
        if let Some(service) = &query.service {
            push("service", service.clone());
        }
        if let Some(name) = &query.name {
            push("name", name.clone());
        }
        if let Some((source, _)) = &query.source {
            push("source", source.clone());
        }
        if let Some((_, partition)) = &query.source {
            sql.push_str(&format!(" AND bus_partition = {partition}"));
        }
        sql.push_str(
            " GROUP BY tenant, kind, service, name, series, width, start ORDER BY start, series",
        );
        let mut statement = self
            .client
            .query(&sql)
            .bind(CHECKPOINT_KIND)
            .bind(query.width_s)
            .bind(query.from_s)
            .bind(query.to_s);
        for value in filters {
            statement = statement.bind(value);
        }
        let rows: Vec<RollupIn> = statement.fetch_all().await.map_err(classify)?;
        let stored = rows
            .into_iter()
            .map(|row| {
                let series = series_from(
                    &row.tenant,
                    &row.kind,
                    row.service,
                    row.name,
                    row.label_keys,
                    row.label_values,
                )?;
                let rollup = Stats {
                    count: row.count,
                    sum: row.sum,
                    min: row.min,
                    max: row.max,
                    errors: row.errors,
                    keys: row.buckets.0,
                    counts: row.buckets.1,
                }
                .into_rollup()?;
                Ok(StoredRollup {
                    series,
                    width_s: row.width,
                    start_s: row.start,
                    rollup,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok(merge_rows(stored))
    }

    async fn aggregate(&self, query: &Aggregation) -> Result<Vec<Aggregated>, StoreError> {
        // Label names and values are bound, never written into the SQL.
        let mut bound = Vec::new();
        let mut groups = Vec::new();
        for key in &query.group_by {
            let (sql, key) = label_sql(key);
            groups.push(sql);
            bound.extend(key);
        }
        bound.extend([
            Bound::Number(query.step_s),
            Bound::Number(query.step_s),
            Bound::Text(query.tenant.as_str().to_owned()),
            Bound::Text(query.kind.as_str().to_owned()),
            Bound::Number(u64::from(query.width_s)),
            // Rows are kept by the day of their flush, which is at most a
            // day before their window's (points from the near future).
            Bound::Number(day_of(query.from_s).saturating_sub(1)),
            Bound::Number(query.from_s),
            Bound::Number(query.to_s),
        ]);
        let mut filters = String::new();
        for (column, value) in [("service", &query.service), ("name", &query.name)] {
            if let Some(value) = value {
                filters.push_str(&format!(" AND {column} = ?"));
                bound.push(Bound::Text(value.clone()));
            }
        }
        for matcher in &query.matchers {
            let (sql, key) = label_sql(&matcher.key);
            let operator = if matcher.equal { "=" } else { "!=" };
            filters.push_str(&format!(" AND {sql} {operator} ?"));
            bound.extend(key);
            bound.push(Bound::Text(matcher.value.clone()));
        }
        bound.push(Bound::Number(
            u64::try_from(query.limit).unwrap_or(u64::MAX),
        ));
        let sql = format!(
            "SELECT CAST([{groups}] AS Array(String)) AS group,
                intDiv(start, ?) * ? AS step_start,
                sum(count) AS total, sum(sum) AS value_sum, minIf(min, count > 0) AS low,
                maxIf(max, count > 0) AS high, sum(errors) AS failed,
                sumMap(bucket_keys, bucket_counts) AS merged_buckets
             FROM rollups
             WHERE tenant = ? AND kind = ? AND width = ? AND day >= ? AND start >= ? AND start < ?
                {filters}
             GROUP BY group, step_start ORDER BY group, step_start LIMIT ?",
            groups = groups.join(", "),
        );
        let mut statement = self.client.query(&sql);
        for value in bound {
            statement = match value {
                Bound::Text(text) => statement.bind(text),
                Bound::Number(number) => statement.bind(number),
            };
        }
        let rows: Vec<AggregatedIn> = statement.fetch_all().await.map_err(classify)?;
        rows.into_iter()
            .map(|row| {
                let rollup = Stats {
                    count: row.count,
                    sum: row.sum,
                    min: row.min,
                    max: row.max,
                    errors: row.errors,
                    keys: row.buckets.0,
                    counts: row.buckets.1,
                }
                .into_rollup()?;
                Ok(Aggregated {
                    group: row.group,
                    start_s: row.start,
                    rollup,
                })
            })
            .collect()
    }

    async fn write_spans(&self, spans: &[SpanRecord]) -> Result<(), StoreError> {
        let rows = spans.iter().map(|span| {
            let (attribute_keys, attribute_values) = span.attributes.iter().cloned().unzip();
            SpanRow {
                tenant: span.tenant.as_str().to_owned(),
                trace_id: span.trace_id.clone(),
                span_id: span.span_id.clone(),
                parent_span_id: span.parent_span_id.clone(),
                service: span.service.clone(),
                name: span.name.clone(),
                kind: span.kind.clone(),
                start_ns: span.start_ns,
                duration_ns: span.duration_ns,
                status_code: span.status_code,
                status_message: span.status_message.clone(),
                attribute_keys,
                attribute_values,
                day: day_u32(span.start_ns / 1_000_000_000),
            }
        });
        self.insert_all("spans", rows.collect()).await
    }

    async fn trace(
        &self,
        tenant: &TenantId,
        trace_id: &str,
    ) -> Result<Vec<SpanRecord>, StoreError> {
        let rows: Vec<SpanRow> = self
            .client
            .query(
                "SELECT ?fields FROM spans WHERE tenant = ? AND trace_id = ?
                 ORDER BY start_ns, span_id LIMIT 1 BY span_id",
            )
            .bind(tenant.as_str())
            .bind(trace_id)
            .fetch_all()
            .await
            .map_err(classify)?;
        rows.into_iter().map(SpanRow::into_record).collect()
    }

    async fn search_spans(&self, query: &SpanQuery) -> Result<Vec<SpanRecord>, StoreError> {
        // One bound pair per wanted attribute; the values never enter the SQL.
        let attributes =
            " AND arrayExists((k, v) -> k = ? AND v = ?, attribute_keys, attribute_values)"
                .repeat(query.attributes.len());
        let (before_start, before_span) = query.before.clone().unzip();
        let mut select = self
            .client
            .query(&format!(
                "SELECT ?fields FROM spans
                 WHERE tenant = ? AND day >= ? AND day <= ? AND start_ns >= ? AND start_ns < ?
                    AND (? = 0 OR service = ?) AND (? = 0 OR name = ?) AND duration_ns >= ?
                    AND (? = 0 OR (status_code = 2) = ?)
                    AND (? = 0 OR start_ns < ? OR (start_ns = ? AND span_id < ?))
                    AND (? = 0 OR parent_span_id = ''){attributes}
                 ORDER BY start_ns DESC, span_id DESC LIMIT 1 BY trace_id, span_id LIMIT ?"
            ))
            .bind(query.tenant.as_str())
            .bind(day_u32(query.from_ns / 1_000_000_000))
            .bind(day_u32(query.to_ns / 1_000_000_000))
            .bind(query.from_ns)
            .bind(query.to_ns)
            .bind(u8::from(query.service.is_some()))
            .bind(query.service.as_deref().unwrap_or(""))
            .bind(u8::from(query.name.is_some()))
            .bind(query.name.as_deref().unwrap_or(""))
            .bind(query.min_duration_ns.unwrap_or(0))
            .bind(u8::from(query.error.is_some()))
            .bind(u8::from(query.error.unwrap_or(false)))
            .bind(u8::from(before_start.is_some()))
            .bind(before_start.unwrap_or(0))
            .bind(before_start.unwrap_or(0))
            .bind(before_span.as_deref().unwrap_or(""))
            .bind(u8::from(query.root_only));
        for (key, value) in &query.attributes {
            select = select.bind(key.as_str()).bind(value.as_str());
        }
        let rows: Vec<SpanRow> = select
            .bind(u64::try_from(query.limit).unwrap_or(u64::MAX))
            .fetch_all()
            .await
            .map_err(classify)?;
        rows.into_iter().map(SpanRow::into_record).collect()
    }

    async fn write_events(&self, events: &[EventRecord]) -> Result<(), StoreError> {
        let rows = events.iter().map(|event| {
            let (attribute_keys, attribute_values) = event.attributes.iter().cloned().unzip();
            EventRow {
                tenant: event.tenant.as_str().to_owned(),
                kind: event.kind.as_str().to_owned(),
                id: event.id,
                time_ns: event.time_ns,
                service: event.service.clone(),
                name: event.name.clone(),
                body: event.body.clone(),
                trace_id: event.trace_id.clone(),
                span_id: event.span_id.clone(),
                fingerprint: event.fingerprint.clone(),
                attribute_keys,
                attribute_values,
                day: day_u32(event.time_ns / 1_000_000_000),
            }
        });
        self.insert_all("events", rows.collect()).await
    }

    async fn events(&self, query: &EventQuery) -> Result<Vec<EventRecord>, StoreError> {
        let rows: Vec<EventRow> = self
            .client
            .query(
                "SELECT ?fields FROM events
                 WHERE tenant = ? AND kind = ? AND time_ns >= ? AND time_ns < ?
                    AND (? = 0 OR service = ?) AND (? = 0 OR trace_id = ?)
                    AND (? = 0 OR fingerprint = ?)
                 ORDER BY time_ns DESC, id LIMIT 1 BY id LIMIT ?",
            )
            .bind(query.tenant.as_str())
            .bind(query.kind.as_str())
            .bind(query.from_ns)
            .bind(query.to_ns)
            .bind(u8::from(query.service.is_some()))
            .bind(query.service.as_deref().unwrap_or(""))
            .bind(u8::from(query.trace_id.is_some()))
            .bind(query.trace_id.as_deref().unwrap_or(""))
            .bind(u8::from(query.fingerprint.is_some()))
            .bind(query.fingerprint.as_deref().unwrap_or(""))
            .bind(u64::try_from(query.limit).unwrap_or(u64::MAX))
            .fetch_all()
            .await
            .map_err(classify)?;
        rows.into_iter()
            .map(|row| {
                Ok(EventRecord {
                    tenant: TenantId::parse(&row.tenant).map_err(|e| corrupt("tenant", e))?,
                    kind: EventKind::parse(&row.kind)
                        .ok_or_else(|| corrupt("event kind", &row.kind))?,
                    id: row.id,
                    time_ns: row.time_ns,
                    service: row.service,
                    name: row.name,
                    body: row.body,
                    trace_id: row.trace_id,
                    span_id: row.span_id,
                    fingerprint: row.fingerprint,
                    attributes: row
                        .attribute_keys
                        .into_iter()
                        .zip(row.attribute_values)
                        .collect(),
                })
            })
            .collect()
    }

    async fn series(
        &self,
        tenant: &TenantId,
        kind: Option<Kind>,
        service: Option<&str>,
    ) -> Result<Vec<CatalogueEntry>, StoreError> {
        let rows: Vec<SeriesRow> = self
            .client
            .query(
                "SELECT tenant, kind, service, name, any(label_keys), any(label_values), series,
                    min(first_seen), max(last_seen)
                 FROM series
                 WHERE tenant = ? AND (? = '' OR kind = ?) AND (? = 0 OR service = ?)
                 GROUP BY tenant, kind, service, name, series
                 ORDER BY kind, service, name, series",
            )
            .bind(tenant.as_str())
            .bind(kind.map_or("", Kind::as_str))
            .bind(kind.map_or("", Kind::as_str))
            .bind(u8::from(service.is_some()))
            .bind(service.unwrap_or(""))
            .fetch_all()
            .await
            .map_err(classify)?;
        rows.into_iter()
            .map(|row| {
                Ok(CatalogueEntry {
                    series: series_from(
                        &row.tenant,
                        &row.kind,
                        row.service,
                        row.name,
                        row.label_keys,
                        row.label_values,
                    )?,
                    first_seen_s: row.first_seen,
                    last_seen_s: row.last_seen,
                })
            })
            .collect()
    }

    async fn put_state(&self, records: &[StateRecord]) -> Result<(), StoreError> {
        let rows = records.iter().map(|record| StateRow {
            collection: record.collection.clone(),
            tenant: record.tenant.as_str().to_owned(),
            key: record.key.clone(),
            version: record.version,
            body: record.body.clone(),
            deleted: u8::from(record.deleted),
        });
        self.insert_all("state", rows.collect()).await
    }

    async fn state(&self, collection: &str) -> Result<Vec<StateRecord>, StoreError> {
        let rows: Vec<StateRow> = self
            .client
            .query(
                "SELECT ?fields FROM state FINAL WHERE collection = ? AND deleted = 0
                 ORDER BY tenant, key",
            )
            .bind(collection)
            .fetch_all()
            .await
            .map_err(classify)?;
        rows.into_iter()
            .map(|row| {
                Ok(StateRecord {
                    collection: row.collection,
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

    async fn ping(&self) -> Result<(), StoreError> {
        self.client
            .query("SELECT 1")
            .fetch_one::<u8>()
            .await
            .map(drop)
            .map_err(classify)
    }

    async fn enforce_retention(&self, now_s: u64) -> Result<(), StoreError> {
        let today = day_of(now_s);
        let partitions: Vec<PartitionIn> = self
            .client
            .query(
                "SELECT DISTINCT table, toUInt32(partition) FROM system.parts
                 WHERE database = ? AND active
                    AND table IN ('spans', 'events', 'rollups', 'history')",
            )
            .bind(&self.database)
            .fetch_all()
            .await
            .map_err(classify)?;
        for partition in partitions {
            let retention = match partition.table.as_str() {
                "spans" => self.span_retention_days,
                "events" | "history" => self.event_retention_days,
                _ => self.rollup_retention_days,
            };
            if u64::from(partition.day) + retention < today {
                self.client
                    .query(&format!(
                        "ALTER TABLE {} DROP PARTITION {}",
                        partition.table, partition.day
                    ))
                    .execute()
                    .await
                    .map_err(classify)?;
            }
        }
        Ok(())
    }
}
