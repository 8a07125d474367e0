//! Rollups, the series catalogue and the checkpoints that make their
//! writes exactly-once: what aggregators write and every reader of rollups
//! (API, alerter) reads.

use async_trait::async_trait;
use vigil_domain::model::{Checkpoint, CumulativeState, Kind, Rollup, RollupRow, SeriesKey};
use vigil_domain::signal::Matcher;
use vigil_domain::tenant::TenantId;

use crate::StoreError;

/// Everything one aggregator flush writes, atomically.
#[derive(Debug, Clone)]
pub struct Flush {
    /// The bus topic the rows come from.
    pub source: String,
    /// When the flush was made, unix seconds: its rows are kept by this day.
    pub time_s: u64,
    pub checkpoints: Vec<Checkpoint>,
    pub rows: Vec<RollupRow>,
    /// The cumulative series whose last point changed since the previous
    /// flush of their partitions.
    pub cumulative: Vec<CumulativeState>,
}

impl Flush {
    /// Rows alone, from `source`, made at `time_s`: no checkpoint, no
    /// cumulative state (a backfill, a test's known data).
    pub fn rows(source: &str, time_s: u64, rows: Vec<RollupRow>) -> Flush {
        Flush {
            source: source.to_owned(),
            time_s,
            checkpoints: Vec::new(),
            rows,
            cumulative: Vec::new(),
        }
    }
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
    /// Whether the merged rollups keep their distributions' buckets, for
    /// quantiles; without them each is a
    /// [`vigil_domain::distribution::Distribution::summary`] (count,
    /// sum, min, max and errors), and the store reads and merges no buckets.
    pub buckets: bool,
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

/// How often a series' last-seen is written to the catalogue again while
/// it is seen: a catalogue entry may be up to this much behind.
pub const CATALOGUE_REFRESH_S: u64 = 3_600;

/// A series in the catalogue, with when it was first and last seen (window
/// starts, unix seconds).
#[derive(Debug, Clone, PartialEq)]
pub struct CatalogueEntry {
    pub series: SeriesKey,
    pub first_seen_s: u64,
    pub last_seen_s: u64,
}

/// Rollups with their catalogue and checkpoints.
#[async_trait]
pub trait RollupStore: Send + Sync {
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

    /// The last state of every cumulative series of `source`'s `partition`
    /// as of a message before `before_offset` (the checkpoint's next
    /// offset), when that point's time is at or after `since_ns`.
    async fn cumulative(
        &self,
        source: &str,
        partition: i32,
        before_offset: i64,
        since_ns: u64,
    ) -> Result<Vec<CumulativeState>, StoreError>;

    /// The rollups the query selects, one per series and window, ordered by
    /// window start.
    async fn rollups(&self, query: &RollupQuery) -> Result<Vec<StoredRollup>, StoreError>;

    /// Merged rollups per group and step, ordered by group then step, at
    /// most `limit`.
    async fn aggregate(&self, query: &Aggregation) -> Result<Vec<Aggregated>, StoreError>;

    /// The catalogue of a tenant's series, optionally of one kind and service.
    async fn series(
        &self,
        tenant: &TenantId,
        kind: Option<Kind>,
        service: Option<&str>,
    ) -> Result<Vec<CatalogueEntry>, StoreError>;
}
