//! The embedded store: one SQLite file in WAL mode. Calls run on tokio's
//! blocking threads, one at a time over one connection; a flush is one
//! transaction, so it is written whole or not at all.

mod events;
mod rollups;
mod spans;
mod state;

use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};
use vigil_config::StoreConfig;
use vigil_domain::tenant::TenantId;

use crate::codec::corrupt;
use crate::{CUMULATIVE_RETENTION_DAYS, SpanRecord, Store, StoreError, day_of};

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
    (
        5,
        "cumulative series state",
        // The latest state per series, replaced in each flush's transaction.
        "CREATE TABLE cumulative (
            source TEXT NOT NULL, bus_partition INTEGER NOT NULL, series INTEGER NOT NULL,
            offset INTEGER NOT NULL, time_ns INTEGER NOT NULL, state BLOB NOT NULL,
            day INTEGER NOT NULL,
            PRIMARY KEY (source, bus_partition, series)
        ) WITHOUT ROWID;
        CREATE INDEX cumulative_by_day ON cumulative (day);",
    ),
    (
        6,
        "leases",
        "CREATE TABLE leases (
            name TEXT PRIMARY KEY, holder TEXT NOT NULL, expires_ms INTEGER NOT NULL
        ) WITHOUT ROWID;",
    ),
    (
        7,
        "log records by trace and by service",
        // A trace's records and one service's newest, without a scan of
        // the tenant's range (GET /api/v1/logs, the trace view).
        "CREATE INDEX events_by_trace ON events (tenant, trace_id);
        CREATE INDEX events_by_service ON events (tenant, kind, service, time_ns);",
    ),
    (
        8,
        "crashes by app and group",
        // Crash groups count crashes by their dimensions: read from the
        // events' JSON attributes, 1M crashes took seconds. Each crash
        // event is also a row here, written in the same transaction,
        // stored in time order per app (a range is read in sequence; a
        // replayed crash has the same key), with a group's newest crash
        // and its versions read from indexes alone.
        "CREATE TABLE crashes (
            tenant TEXT NOT NULL, app TEXT NOT NULL, time_ns INTEGER NOT NULL,
            id INTEGER NOT NULL, fingerprint TEXT NOT NULL, exception_type TEXT NOT NULL,
            message TEXT NOT NULL, version TEXT NOT NULL, os TEXT NOT NULL,
            os_version TEXT NOT NULL, device TEXT NOT NULL, kind TEXT NOT NULL,
            foreground TEXT NOT NULL, recurred TEXT NOT NULL, user_hash TEXT NOT NULL,
            session_hash TEXT NOT NULL, day INTEGER NOT NULL,
            PRIMARY KEY (tenant, app, time_ns, id)
        ) WITHOUT ROWID;
        CREATE INDEX crashes_by_group ON crashes (tenant, app, fingerprint, time_ns);
        CREATE INDEX crashes_by_version ON crashes (tenant, app, fingerprint, version, time_ns);
        CREATE INDEX crashes_by_day ON crashes (day);
        INSERT INTO crashes
            SELECT tenant, service, time_ns, id, fingerprint, name, body,
                coalesce((SELECT a.value ->> 1 FROM json_each(attributes) AS a
                    WHERE a.value ->> 0 = 'app.version'), ''),
                coalesce((SELECT a.value ->> 1 FROM json_each(attributes) AS a
                    WHERE a.value ->> 0 = 'os.name'), ''),
                coalesce((SELECT a.value ->> 1 FROM json_each(attributes) AS a
                    WHERE a.value ->> 0 = 'os.version'), ''),
                coalesce((SELECT a.value ->> 1 FROM json_each(attributes) AS a
                    WHERE a.value ->> 0 = 'device.model.identifier'), ''),
                coalesce((SELECT a.value ->> 1 FROM json_each(attributes) AS a
                    WHERE a.value ->> 0 = 'crash.kind'), ''),
                coalesce((SELECT a.value ->> 1 FROM json_each(attributes) AS a
                    WHERE a.value ->> 0 = 'crash.foreground'), ''),
                coalesce((SELECT a.value ->> 1 FROM json_each(attributes) AS a
                    WHERE a.value ->> 0 = 'crash.recurred'), ''),
                coalesce((SELECT a.value ->> 1 FROM json_each(attributes) AS a
                    WHERE a.value ->> 0 = 'user.id_hash'), ''),
                coalesce((SELECT a.value ->> 1 FROM json_each(attributes) AS a
                    WHERE a.value ->> 0 = 'session.id_hash'), ''),
                day
            FROM events WHERE kind = 'crash';",
    ),
    (
        9,
        "distinct users with rollups",
        // The HyperLogLog registers of the users a client series' points
        // came from (`vigil_domain::distinct`); NULL where none is named.
        "ALTER TABLE rollups ADD COLUMN users BLOB;",
    ),
];

/// How much of the file is memory-mapped (address space, not memory).
const MMAP_BYTES: i64 = 64 << 30;

/// `PRAGMA auto_vacuum` of a file whose free pages can be returned a slice
/// at a time.
const INCREMENTAL_VACUUM: i64 = 2;

/// Pages returned to the file system per slice (16 MiB of 4 KiB pages).
const RECLAIM_PAGES: u32 = 4_096;

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

/// A SQLite error as a store error: busy, locked and a full disk pass (the
/// last once space is freed), so the caller retries them; the rest does not.
fn fatal(error: rusqlite::Error) -> StoreError {
    match error {
        rusqlite::Error::SqliteFailure(code, _)
            if matches!(
                code.code,
                rusqlite::ErrorCode::DatabaseBusy
                    | rusqlite::ErrorCode::DatabaseLocked
                    | rusqlite::ErrorCode::DiskFull
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
        // Takes effect in a new file only (before its first table), which
        // is what lets retention give freed pages back.
        connection
            .pragma_update(None, "auto_vacuum", "INCREMENTAL")
            .and_then(|()| connection.pragma_update(None, "journal_mode", "WAL"))
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

    /// Returns the pages deletes freed to the file system, a slice at a
    /// time so that writes go on in between. Only a file created with
    /// incremental auto-vacuum (every file this store creates) can; an
    /// older file keeps its free pages for new rows.
    async fn reclaim(&self) -> Result<(), StoreError> {
        let mode: i64 = self
            .run(|connection| {
                connection
                    .query_row("PRAGMA auto_vacuum", [], |row| row.get(0))
                    .map_err(fatal)
            })
            .await?;
        if mode != INCREMENTAL_VACUUM {
            return Ok(());
        }
        let mut left = i64::MAX;
        loop {
            let now_left: i64 = self
                .run(|connection| {
                    connection
                        .execute_batch(&format!("PRAGMA incremental_vacuum({RECLAIM_PAGES})"))
                        .map_err(fatal)?;
                    connection
                        .query_row("PRAGMA freelist_count", [], |row| row.get(0))
                        .map_err(fatal)
                })
                .await?;
            if now_left == 0 || now_left >= left {
                return Ok(());
            }
            left = now_left;
        }
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
        for (table, days) in [
            ("spans", self.span_retention_days),
            ("events", self.event_retention_days),
            ("crashes", self.event_retention_days),
            ("history", self.event_retention_days),
            ("rollups", self.rollup_retention_days),
            ("cumulative", CUMULATIVE_RETENTION_DAYS),
        ] {
            let before = to_sql(today.saturating_sub(days));
            // A day per statement, oldest first: writers wait for one day's
            // delete at most, never for the whole backlog.
            while self
                .run(move |connection| {
                    let oldest: Option<i64> = connection
                        .query_row(
                            &format!("SELECT MIN(day) FROM {table} WHERE day < ?1"),
                            [before],
                            |row| row.get(0),
                        )
                        .map_err(fatal)?;
                    let Some(day) = oldest else {
                        return Ok(false);
                    };
                    connection
                        .execute(&format!("DELETE FROM {table} WHERE day = ?1"), [day])
                        .map_err(fatal)?;
                    Ok(true)
                })
                .await?
            {}
        }
        self.reclaim().await
    }
}
