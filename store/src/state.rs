//! Keyed state and its history: the alerter's alerts, silences and
//! notification groups (see [`Collection`]), and what happened to them.

use async_trait::async_trait;
use vigil_domain::alert::Collection;
use vigil_domain::tenant::TenantId;

use crate::StoreError;

/// A piece of state kept by key: the alerter's alerts, silences and
/// notification log. Of the versions written for one key the greatest is
/// kept; a deleted key is no longer read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateRecord {
    pub collection: Collection,
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

/// Keyed state with its history.
#[async_trait]
pub trait StateStore: Send + Sync {
    /// Writes state records: all of them or, on error, none.
    async fn put_state(&self, records: &[StateRecord]) -> Result<(), StoreError>;

    /// The newest version of every key of `collection` that is not deleted,
    /// of every tenant, ordered by tenant and key.
    async fn state(&self, collection: Collection) -> Result<Vec<StateRecord>, StoreError>;

    /// Appends history entries.
    async fn append_history(&self, entries: &[HistoryEntry]) -> Result<(), StoreError>;

    /// The history the query selects, newest first.
    async fn history(&self, query: &HistoryQuery) -> Result<Vec<HistoryEntry>, StoreError>;

    /// Takes or renews lease `name` for `holder` until `now_ms + ttl_ms`,
    /// unless another holder's lease runs past `now_ms`; whether `holder`
    /// holds it after the call. One holder at a time: on SQLite by a
    /// transaction; on ClickHouse, which cannot compare and set, a holder
    /// that takes the lease over reads it back after writing, once any
    /// rival's write would show (see `clickhouse/state.rs`).
    async fn lease(
        &self,
        name: &str,
        holder: &str,
        now_ms: u64,
        ttl_ms: u64,
    ) -> Result<bool, StoreError>;

    /// Ends `holder`'s lease `name` at once, if it holds it.
    async fn release(&self, name: &str, holder: &str) -> Result<(), StoreError>;
}
