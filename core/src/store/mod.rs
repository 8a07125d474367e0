//! Where Vigil keeps its data: rollups, raw spans, logs and crashes, and the
//! series catalogue.
//! Two implementations share the [`Store`] trait and one conformance suite
//! (`core/tests/store.rs`):
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
mod sqlite;

use std::sync::Arc;

use async_trait::async_trait;

pub use clickhouse::ClickHouseStore;
pub use sqlite::SqliteStore;

use crate::config::{StoreConfig, StoreKind};
use crate::model::{Kind, Rollup, SeriesKey};
use crate::tenant::TenantId;

/// The rollup widths, in seconds: 10 s windows written as they fill, 1 min
/// and 1 h windows written when they close.
pub const WIDTHS: [u32; 3] = [10, 60, 3600];

/// How far an aggregator got in one bus partition, written with the rows it
/// covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checkpoint {
    /// Increases by one with every flush of the partition: the latest wins.
    pub seq: u64,
    pub partition: i32,
    /// Every message before this offset is in the store.
    pub next_offset: i64,
    /// Messages from here to `next_offset` rebuild per-series state
    /// (cumulative counters) without being counted again.
    pub replay_from: i64,
    /// Windows that ended (plus the allowed lateness) by this time, in unix
    /// seconds, had closed.
    pub watermark_s: u64,
}

/// One row to write: a rollup of a series over a window.
#[derive(Debug, Clone)]
pub struct RollupRow {
    pub series: Arc<SeriesKey>,
    pub partition: i32,
    pub width_s: u32,
    /// Window start, unix seconds.
    pub start_s: u64,
    pub rollup: Rollup,
    /// Data for a window that had already closed.
    pub correction: bool,
}

/// Everything one aggregator flush writes, atomically.
#[derive(Debug, Clone)]
pub struct Flush {
    /// The bus topic the rows come from.
    pub source: String,
    /// When the flush was made, unix seconds: its rows are kept by this day.
    pub time_s: u64,
    pub checkpoints: Vec<Checkpoint>,
    pub rows: Vec<RollupRow>,
}

/// A series and window with every stored row of it merged.
#[derive(Debug, Clone)]
pub struct StoredRollup {
    pub series: SeriesKey,
    pub width_s: u32,
    pub start_s: u64,
    pub rollup: Rollup,
}

/// Which rollups to read: windows of one width starting in `[from_s, to_s)`.
#[derive(Debug, Clone)]
pub struct RollupQuery {
    pub width_s: u32,
    pub from_s: u64,
    pub to_s: u64,
    pub tenant: Option<TenantId>,
    pub kind: Option<Kind>,
    pub service: Option<String>,
    pub name: Option<String>,
    /// Only rows an aggregator wrote for this bus topic and partition.
    pub source: Option<(String, i32)>,
}

impl RollupQuery {
    /// Every rollup of width `width_s` starting in `[from_s, to_s)`.
    pub fn new(width_s: u32, from_s: u64, to_s: u64) -> Self {
        RollupQuery {
            width_s,
            from_s,
            to_s,
            tenant: None,
            kind: None,
            service: None,
            name: None,
            source: None,
        }
    }
}

/// One label matcher: the series' label `key` equals (or differs from)
/// `value`. A series without the label has it as "". The keys
/// `service.name` and `name` are the series' service and name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Matcher {
    pub key: String,
    pub value: String,
    pub equal: bool,
}

impl Matcher {
    pub fn matches(&self, series: &SeriesKey) -> bool {
        (label_of(series, &self.key) == self.value) == self.equal
    }
}

/// A series' label as matchers and groups see it: `service.name` and `name`
/// are its service and name; a label it does not have is "".
pub fn label_of<'a>(series: &'a SeriesKey, key: &str) -> &'a str {
    match key {
        "service.name" => &series.service,
        "name" => &series.name,
        _ => series.label(key).unwrap_or(""),
    }
}

/// Which rollups to merge: one tenant's series of one kind, windows of one
/// width starting in `[from_s, to_s)`, selected by service, name and label
/// matchers, merged per group (the values of the `group_by` labels) and per
/// step of `step_s`. Steps start at multiples of `step_s`, a multiple of
/// `width_s`, so a window lies in one step.
#[derive(Debug, Clone)]
pub struct Aggregation {
    pub tenant: TenantId,
    pub kind: Kind,
    pub width_s: u32,
    pub from_s: u64,
    pub to_s: u64,
    pub step_s: u64,
    pub service: Option<String>,
    pub name: Option<String>,
    pub matchers: Vec<Matcher>,
    pub group_by: Vec<String>,
    /// At most this many merged rows are returned.
    pub limit: usize,
}

/// One group's rollup over one step.
#[derive(Debug, Clone)]
pub struct Aggregated {
    /// The values of the `group_by` labels, in their order.
    pub group: Vec<String>,
    /// The step's start, unix seconds.
    pub start_s: u64,
    pub rollup: Rollup,
}

/// One span as kept for lookup.
#[derive(Debug, Clone, PartialEq)]
pub struct SpanRecord {
    pub tenant: TenantId,
    /// Lower-case hex, 32 characters.
    pub trace_id: String,
    /// Lower-case hex, 16 characters.
    pub span_id: String,
    /// Empty for a root span.
    pub parent_span_id: String,
    pub service: String,
    pub name: String,
    /// `internal`, `server`, `client`, `producer`, `consumer` or `unspecified`.
    pub kind: String,
    pub start_ns: u64,
    pub duration_ns: u64,
    /// OTLP status code: 0 unset, 1 ok, 2 error.
    pub status_code: u8,
    pub status_message: String,
    /// Resource and span attributes, as text.
    pub attributes: Vec<(String, String)>,
}

/// Which spans to find: one tenant's spans that started in
/// `[from_ns, to_ns)` and match every given filter, newest first, at most
/// `limit`. `before` continues a search: only spans after the given one in
/// that order (its start and span id).
#[derive(Debug, Clone)]
pub struct SpanQuery {
    pub tenant: TenantId,
    pub from_ns: u64,
    pub to_ns: u64,
    pub service: Option<String>,
    /// The span name (operation).
    pub name: Option<String>,
    pub min_duration_ns: Option<u64>,
    /// Only failed spans (status error), or only the others.
    pub error: Option<bool>,
    /// Attributes (resource or span) the span must have, with these values.
    pub attributes: Vec<(String, String)>,
    /// Only spans without a parent: whole requests, probe runs.
    pub root_only: bool,
    pub before: Option<(u64, String)>,
    pub limit: usize,
}

impl SpanQuery {
    /// Up to 100 spans of `tenant` that started in `[from_ns, to_ns)`.
    pub fn new(tenant: TenantId, from_ns: u64, to_ns: u64) -> Self {
        SpanQuery {
            tenant,
            from_ns,
            to_ns,
            service: None,
            name: None,
            min_duration_ns: None,
            error: None,
            attributes: Vec::new(),
            root_only: false,
            before: None,
            limit: 100,
        }
    }
}

/// What a raw event is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// An OTLP log record.
    Log,
    /// A crash reported by a mobile or web app.
    Crash,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Log => "log",
            EventKind::Crash => "crash",
        }
    }

    pub fn parse(name: &str) -> Option<EventKind> {
        [EventKind::Log, EventKind::Crash]
            .into_iter()
            .find(|kind| kind.as_str() == name)
    }
}

/// One log record or crash, as kept for lookup.
#[derive(Debug, Clone, PartialEq)]
pub struct EventRecord {
    pub tenant: TenantId,
    pub kind: EventKind,
    /// Unique per event and the same when it is written again (a replay):
    /// the store keeps one copy per id.
    pub id: u64,
    /// When it happened, unix nanoseconds.
    pub time_ns: u64,
    /// The service, or the app for a crash.
    pub service: String,
    /// The severity of a log record, the exception type of a crash.
    pub name: String,
    /// The body of a log record, the message of a crash.
    pub body: String,
    /// The trace and span a log record belongs to, lower-case hex or empty.
    pub trace_id: String,
    pub span_id: String,
    /// The stack fingerprint of a crash; empty for a log record.
    pub fingerprint: String,
    pub attributes: Vec<(String, String)>,
}

/// Which raw events to read: one tenant's events of one kind in
/// `[from_ns, to_ns)`, newest first, at most `limit`.
#[derive(Debug, Clone)]
pub struct EventQuery {
    pub tenant: TenantId,
    pub kind: EventKind,
    pub from_ns: u64,
    pub to_ns: u64,
    pub service: Option<String>,
    pub trace_id: Option<String>,
    pub fingerprint: Option<String>,
    pub limit: usize,
}

impl EventQuery {
    /// Up to 1,000 events of `kind` of `tenant` in `[from_ns, to_ns)`.
    pub fn new(tenant: TenantId, kind: EventKind, from_ns: u64, to_ns: u64) -> Self {
        EventQuery {
            tenant,
            kind,
            from_ns,
            to_ns,
            service: None,
            trace_id: None,
            fingerprint: None,
            limit: 1_000,
        }
    }
}

/// A series in the catalogue, with when it was first and last seen (window
/// starts, unix seconds).
#[derive(Debug, Clone, PartialEq)]
pub struct CatalogueEntry {
    pub series: SeriesKey,
    pub first_seen_s: u64,
    pub last_seen_s: u64,
}

/// A piece of state kept by key: the alerter's alerts, silences and
/// notification log. Of the versions written for one key the greatest is
/// kept; a deleted key is no longer read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateRecord {
    /// What the state is: `alert`, `silence`, `notification`, ….
    pub collection: String,
    pub tenant: TenantId,
    pub key: String,
    /// Orders the writes of one key: the greatest wins.
    pub version: u64,
    /// JSON, as the owner of the collection writes it.
    pub body: String,
    pub deleted: bool,
}

/// One entry of the alerter's history: a transition, a notification or a
/// remediation, kept for `GET /api/v1/alerts/history`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryEntry {
    pub tenant: TenantId,
    /// When it happened, unix milliseconds.
    pub time_ms: u64,
    /// `transition`, `notification` or `action`.
    pub kind: String,
    /// The rule it concerns.
    pub rule: String,
    /// The alert's fingerprint, or the notification group's key.
    pub subject: String,
    /// JSON: what happened.
    pub body: String,
}

/// Which history to read: one tenant's entries in `[from_ms, to_ms)`,
/// newest first, at most `limit`.
#[derive(Debug, Clone)]
pub struct HistoryQuery {
    pub tenant: TenantId,
    pub from_ms: u64,
    pub to_ms: u64,
    pub rule: Option<String>,
    pub subject: Option<String>,
    pub limit: usize,
}

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

/// A store. See the module documentation for the guarantees.
#[async_trait]
pub trait Store: Send + Sync {
    /// Creates or upgrades the schema; each migration is applied once and
    /// recorded. Returns the versions it applied now.
    async fn migrate(&self) -> Result<Vec<u32>, StoreError>;

    /// Writes a flush: all of it or, on error, none of it.
    async fn write(&self, flush: &Flush) -> Result<(), StoreError>;

    /// Adds series to the catalogue, or widens when they were seen.
    async fn record_series(&self, entries: &[CatalogueEntry]) -> Result<(), StoreError>;

    /// The latest checkpoint of `source`'s `partition`, if any flush wrote one.
    async fn checkpoint(
        &self,
        source: &str,
        partition: i32,
    ) -> Result<Option<Checkpoint>, StoreError>;

    /// The rollups the query selects, one per series and window, ordered by
    /// window start.
    async fn rollups(&self, query: &RollupQuery) -> Result<Vec<StoredRollup>, StoreError>;

    /// Merged rollups per group and step, ordered by group then step, at
    /// most `limit`.
    async fn aggregate(&self, query: &Aggregation) -> Result<Vec<Aggregated>, StoreError>;

    /// Keeps spans for lookup. Writing a span again (same tenant, trace and
    /// span id) keeps one copy.
    async fn write_spans(&self, spans: &[SpanRecord]) -> Result<(), StoreError>;

    /// Every span of one trace, ordered by start.
    async fn trace(&self, tenant: &TenantId, trace_id: &str)
    -> Result<Vec<SpanRecord>, StoreError>;

    /// The spans the query selects, newest first (by start, then span id).
    async fn search_spans(&self, query: &SpanQuery) -> Result<Vec<SpanRecord>, StoreError>;

    /// Keeps log records and crashes for lookup; an id written again keeps
    /// one copy.
    async fn write_events(&self, events: &[EventRecord]) -> Result<(), StoreError>;

    /// The events the query selects, newest first.
    async fn events(&self, query: &EventQuery) -> Result<Vec<EventRecord>, StoreError>;

    /// The catalogue of a tenant's series, optionally of one kind and service.
    async fn series(
        &self,
        tenant: &TenantId,
        kind: Option<Kind>,
        service: Option<&str>,
    ) -> Result<Vec<CatalogueEntry>, StoreError>;

    /// Writes state records: all of them or, on error, none.
    async fn put_state(&self, records: &[StateRecord]) -> Result<(), StoreError>;

    /// The newest version of every key of `collection` that is not deleted,
    /// of every tenant, ordered by tenant and key.
    async fn state(&self, collection: &str) -> Result<Vec<StateRecord>, StoreError>;

    /// Appends history entries.
    async fn append_history(&self, entries: &[HistoryEntry]) -> Result<(), StoreError>;

    /// The history the query selects, newest first.
    async fn history(&self, query: &HistoryQuery) -> Result<Vec<HistoryEntry>, StoreError>;

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
        StoreKind::ClickHouse => Arc::new(ClickHouseStore::new(config)),
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
