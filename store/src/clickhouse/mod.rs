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

mod events;
mod rollups;
mod spans;
mod state;

use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use clickhouse::{Client, Row, RowOwned, RowWrite};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;
use vigil_config::StoreConfig;
use vigil_domain::error_chain;
use vigil_tls::client::Verification;

use crate::{CUMULATIVE_RETENTION_DAYS, Store, StoreError, day_of};

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
    (
        5,
        "cumulative series state",
        // Written just before the flush it belongs to, so not atomically
        // with it: a reader takes the latest state before the checkpoint's
        // next offset. A row past it, left by a flush that failed after it,
        // describes the same messages as the retried flush's and is used
        // only once a checkpoint covers it. Plain MergeTree: a merge must
        // not drop the valid state for such a row.
        &["CREATE TABLE IF NOT EXISTS cumulative (
            source String, bus_partition Int32, series UInt64, offset Int64,
            time_ns UInt64, state Array(UInt8), day UInt32
        ) ENGINE = MergeTree PARTITION BY day ORDER BY (source, bus_partition, series, offset)"],
    ),
    (
        6,
        "leases",
        &["CREATE TABLE IF NOT EXISTS leases (
            name String, holder String, expires_ms UInt64, version UInt64
        ) ENGINE = ReplacingMergeTree(version) ORDER BY name"],
    ),
    (
        7,
        "crashes by app and group",
        // Crash groups count crashes by their dimensions: read from the
        // events' attribute arrays (frames among them), one group's page
        // took 0.7 s over 1M crashes. Each crash event is also a row here,
        // ordered by app and group; counts are of distinct ids, so a
        // replayed crash, or a rerun of this backfill, counts once.
        &[
            "CREATE TABLE IF NOT EXISTS crashes (
                tenant String, app String, time_ns UInt64, id UInt64, fingerprint String,
                exception_type String, message String, version String, os String,
                os_version String, device String, kind String, foreground String,
                recurred String, user_hash String, session_hash String, day UInt32
            ) ENGINE = ReplacingMergeTree PARTITION BY day
            ORDER BY (tenant, app, fingerprint, time_ns, id)",
            "INSERT INTO crashes SELECT tenant, service, time_ns, id, fingerprint, name, body,
                attribute_values[indexOf(attribute_keys, 'app.version')],
                attribute_values[indexOf(attribute_keys, 'os.name')],
                attribute_values[indexOf(attribute_keys, 'os.version')],
                attribute_values[indexOf(attribute_keys, 'device.model.identifier')],
                attribute_values[indexOf(attribute_keys, 'crash.kind')],
                attribute_values[indexOf(attribute_keys, 'crash.foreground')],
                attribute_values[indexOf(attribute_keys, 'crash.recurred')],
                attribute_values[indexOf(attribute_keys, 'user.id_hash')],
                attribute_values[indexOf(attribute_keys, 'session.id_hash')], day
            FROM events WHERE kind = 'crash'",
        ],
    ),
    (
        8,
        "distinct users with rollups",
        // The HyperLogLog registers of the users a client series' points
        // came from (`vigil_domain::distinct`); empty where none is named.
        // Merged in Rust: 18.16 has no maxMap.
        &["ALTER TABLE rollups ADD COLUMN users Array(UInt8)"],
    ),
    (
        9,
        "rollups in granules of 1,024 rows",
        // A service's day at 1 min is 1,440 rows, but its buckets were
        // read in whole granules of 8,192 rows of arrays: 45 ms of the
        // read. 18.16 sets the granularity only when a table is made; as in
        // migration 3, a rerun drops the leftovers and starts over.
        &[
            "DROP TABLE IF EXISTS rollups_v4",
            "DROP TABLE IF EXISTS rollups_v5",
            "CREATE TABLE rollups_v5 AS rollups ENGINE = MergeTree PARTITION BY day
                ORDER BY (tenant, kind, width, service, start, name, series)
                SETTINGS index_granularity = 1024",
            "INSERT INTO rollups_v5 SELECT * FROM rollups",
            "RENAME TABLE rollups TO rollups_v4, rollups_v5 TO rollups",
            "DROP TABLE rollups_v4",
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
    // NOT_ENOUGH_SPACE: writes go on once the disk has room again.
    "Code: 243",
    "Code: 252",
    "Code: 473",
];

fn classify(error: clickhouse::error::Error) -> StoreError {
    let reason = error_chain(&error);
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

#[derive(Row, Deserialize)]
struct PartitionIn {
    table: String,
    day: u32,
}

/// How ClickHouse's HTTP interface is reached: as the clickhouse crate's own
/// default client does (TCP keepalive 60 s; the caller closes idle
/// connections after 2 s, under ClickHouse's 3 s), with Vigil's TLS
/// configuration for `https://`.
fn connector(ca_file: Option<&Path>) -> Result<HttpsConnector<HttpConnector>, StoreError> {
    let tls = vigil_tls::client::config(ca_file, Verification::Verify).map_err(|e| {
        StoreError::Fatal {
            reason: format!("store.clickhouse.ca_file: {e}"),
        }
    })?;
    let mut tcp = HttpConnector::new();
    tcp.set_keepalive(Some(Duration::from_secs(60)));
    tcp.enforce_http(false);
    Ok(HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(tcp))
}

/// A day number as ClickHouse stores it (days since the epoch fit in u32).
fn day_u32(time_s: u64) -> u32 {
    u32::try_from(day_of(time_s)).unwrap_or(u32::MAX)
}

impl ClickHouseStore {
    /// A store on the configured server; nothing is contacted until used.
    /// An `https://` url is reached with TLS, trusting the system's roots
    /// and `ca_file`'s CAs.
    pub fn new(config: &StoreConfig) -> Result<Self, StoreError> {
        let settings = &config.clickhouse;
        let http = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(2))
            .build(connector(settings.ca_file.as_deref())?);
        let server = Client::with_http_client(http)
            .with_url(&settings.url)
            .with_user(&settings.user)
            .with_password(settings.password.expose())
            .with_validation(false);
        Ok(ClickHouseStore {
            client: server.clone().with_database(&settings.database),
            server,
            database: settings.database.clone(),
            span_retention_days: u64::from(config.span_retention_days),
            event_retention_days: u64::from(config.event_retention_days),
            rollup_retention_days: u64::from(config.rollup_retention_days),
        })
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
                match self.client.query(statement).execute().await {
                    // A column added by a run that stopped before it was
                    // recorded (18.16 has no ADD COLUMN IF NOT EXISTS).
                    Err(clickhouse::error::Error::BadResponse(text))
                        if text.contains("Code: 44,") && statement.contains("ADD COLUMN") => {}
                    done => done.map_err(classify)?,
                }
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
                    AND table IN ('spans', 'events', 'crashes', 'rollups', 'history', 'cumulative')",
            )
            .bind(&self.database)
            .fetch_all()
            .await
            .map_err(classify)?;
        for partition in partitions {
            let retention = match partition.table.as_str() {
                "spans" => self.span_retention_days,
                "events" | "crashes" | "history" => self.event_retention_days,
                "cumulative" => CUMULATIVE_RETENTION_DAYS,
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
