//! Where Vigil keeps its data: rollups, raw spans, logs and crashes, and the
//! series catalogue.
//! Four narrow traits, one per concern, so that a component sees only what
//! it uses: [`RollupStore`] (rollups, the catalogue, checkpoints),
//! [`TraceStore`] (raw spans), [`EventStore`] (logs and crashes) and
//! [`StateStore`] (the alerter's state and history). [`Store`] is all four
//! plus the schema and retention; [`IngestStore`] and [`AlertStore`] are what
//! the aggregator and the alerter use. Two implementations, each one file per
//! concern, share them and one conformance suite (`store/tests/store/`):
//!
//! - [`SqliteStore`]: one embedded SQLite file (WAL mode), for `vigil up`;
//! - [`ClickHouseStore`]: ClickHouse over HTTP, for scale-out.
//!
//! Exactly-once: an aggregator writes each [`Flush`] — its rollup rows and the
//! bus [`Checkpoint`]s they cover — atomically, and on start resumes from the
//! checkpoints the store holds. Rows are additive: reads merge every row of a
//! series and window (partial rows of an open window, correction rows of a
//! closed one) into one [`StoredRollup`].

mod clickhouse;
mod codec;
pub mod crash_groups;
mod events;
mod retention;
mod rollups;
mod spans;
mod sqlite;
mod state;

use std::sync::Arc;

use async_trait::async_trait;

pub use clickhouse::ClickHouseStore;
pub use events::{
    CrashCount, CrashDimension, CrashGroupCount, CrashQuery, CrashReach, EventKind, EventQuery,
    EventRecord, EventStore,
};
pub use retention::Retention;
pub use rollups::{
    Aggregated, Aggregation, CATALOGUE_REFRESH_S, CatalogueEntry, Flush, RollupQuery, RollupStore,
    StoredRollup,
};
pub use spans::{SpanQuery, SpanRecord, TraceStore};
pub use sqlite::SqliteStore;
pub use state::{HistoryEntry, HistoryQuery, StateRecord, StateStore};
use vigil_config::{StoreConfig, StoreKind};

/// The rollup widths, in seconds: 10 s windows written as they fill, 1 min
/// and 1 h windows written when they close.
pub const WIDTHS: [u32; 3] = [10, 60, 3600];

/// Days the state of a cumulative series is kept after the flush that wrote
/// it: a series unseen longer than `aggregator.cumulative_max_staleness_s`
/// (a day at most) is forgotten anyway.
pub const CUMULATIVE_RETENTION_DAYS: u64 = 1;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store cannot be reached or is overloaded; the same call may work
    /// later.
    #[error("the store is unavailable ({reason}); retry later")]
    Unavailable { reason: String },
    /// The store refused the call or answered with something unreadable.
    #[error("store error: {reason}")]
    Fatal { reason: String },
}

impl StoreError {
    /// Whether the same call may succeed later without changing it.
    pub fn is_retryable(&self) -> bool {
        matches!(self, StoreError::Unavailable { .. })
    }
}

/// What an aggregator writes and reads back: rollups with their checkpoints
/// and catalogue, raw spans, raw events.
pub trait IngestStore: RollupStore + TraceStore + EventStore {}

impl<T: RollupStore + TraceStore + EventStore + ?Sized> IngestStore for T {}

/// What the alerter reads and keeps: rollups (to rebuild its windows), its
/// state with history, and crashes (its `crash_group` rules).
pub trait AlertStore: RollupStore + StateStore + EventStore {}

impl<T: RollupStore + StateStore + EventStore + ?Sized> AlertStore for T {}

/// A whole store: every concern, plus its schema and retention. See the
/// module documentation for the guarantees. A component takes the narrowest
/// of these traits that serves it ([`IngestStore`], [`AlertStore`], or one
/// concern's trait); an `Arc<dyn Store>` coerces to any of them.
#[async_trait]
pub trait Store: IngestStore + AlertStore {
    /// Creates or upgrades the schema; each migration is applied once and
    /// recorded. Returns the versions it applied now.
    async fn migrate(&self) -> Result<Vec<u32>, StoreError>;

    /// Answers when the store can be reached.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Drops whole days of data past their retention, as of `now_s`
    /// (history is kept as long as events).
    async fn enforce_retention(&self, now_s: u64) -> Result<(), StoreError>;
}

/// The store the configuration names, as it is (see [`open`]).
pub fn connect(config: &StoreConfig) -> Result<Arc<dyn Store>, StoreError> {
    Ok(match config.kind {
        StoreKind::Sqlite => Arc::new(SqliteStore::open(config)?),
        StoreKind::ClickHouse => Arc::new(ClickHouseStore::new(config)?),
    })
}

/// The store the configuration names, with its schema migrated.
pub async fn open(config: &StoreConfig) -> Result<Arc<dyn Store>, StoreError> {
    let store = connect(config)?;
    store.migrate().await?;
    Ok(store)
}

/// Days since the unix epoch of a unix time in seconds.
fn day_of(time_s: u64) -> u64 {
    time_s / 86_400
}
