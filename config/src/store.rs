//! `[store]`: SQLite or ClickHouse, and how long data is kept.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::tls::check_file;
use crate::{ConfigError, Secret, check_range};

/// Which store keeps Vigil's data, and how to reach it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// `sqlite` (one embedded file) or `clickhouse`.
    #[serde(default)]
    pub kind: StoreKind,
    /// Days raw spans are kept; older day partitions are dropped.
    #[serde(default = "default_span_retention_days")]
    pub span_retention_days: u32,
    /// Days raw log records and crashes are kept.
    #[serde(default = "default_event_retention_days")]
    pub event_retention_days: u32,
    /// Days rollups are kept (by the day they were written).
    #[serde(default = "default_rollup_retention_days")]
    pub rollup_retention_days: u32,
    /// How often the process that owns the store (`vigil up`, each
    /// `vigil aggregator`) drops what is past its retention, in seconds.
    #[serde(default = "default_retention_interval_s")]
    pub retention_interval_s: u64,
    #[serde(default)]
    pub sqlite: SqliteStoreConfig,
    #[serde(default)]
    pub clickhouse: ClickHouseStoreConfig,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            kind: StoreKind::default(),
            span_retention_days: default_span_retention_days(),
            event_retention_days: default_event_retention_days(),
            rollup_retention_days: default_rollup_retention_days(),
            retention_interval_s: default_retention_interval_s(),
            sqlite: SqliteStoreConfig::default(),
            clickhouse: ClickHouseStoreConfig::default(),
        }
    }
}

/// The store implementations.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StoreKind {
    #[default]
    Sqlite,
    #[serde(rename = "clickhouse")]
    ClickHouse,
}

/// The embedded store: one SQLite file in WAL mode.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqliteStoreConfig {
    #[serde(default = "default_sqlite_path")]
    pub path: PathBuf,
}

impl Default for SqliteStoreConfig {
    fn default() -> Self {
        SqliteStoreConfig {
            path: default_sqlite_path(),
        }
    }
}

/// The ClickHouse store, over HTTP.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClickHouseStoreConfig {
    #[serde(default = "default_clickhouse_url")]
    pub url: String,
    /// Created by `vigil migrate` (and at start-up) when missing.
    #[serde(default = "default_clickhouse_database")]
    pub database: String,
    #[serde(default = "default_clickhouse_user")]
    pub user: String,
    #[serde(default = "default_clickhouse_password")]
    pub password: Secret,
    /// A CA file (PEM) that ClickHouse's https certificate (an `https://`
    /// url) may be signed by, beside the system's roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
}

impl Default for ClickHouseStoreConfig {
    fn default() -> Self {
        ClickHouseStoreConfig {
            url: default_clickhouse_url(),
            database: default_clickhouse_database(),
            user: default_clickhouse_user(),
            password: default_clickhouse_password(),
            ca_file: None,
        }
    }
}

fn default_span_retention_days() -> u32 {
    7
}

fn default_event_retention_days() -> u32 {
    14
}

fn default_rollup_retention_days() -> u32 {
    400
}

fn default_sqlite_path() -> PathBuf {
    PathBuf::from("vigil-data/vigil.sqlite")
}

fn default_clickhouse_url() -> String {
    "http://127.0.0.1:8123".to_owned()
}

fn default_clickhouse_database() -> String {
    "vigil".to_owned()
}

fn default_retention_interval_s() -> u64 {
    3_600
}

fn default_clickhouse_user() -> String {
    "default".to_owned()
}

fn default_clickhouse_password() -> Secret {
    Secret::new("")
}

impl StoreConfig {
    /// Checks what types alone cannot.
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        let store = self;
        if let Some(ca) = &store.clickhouse.ca_file {
            check_file("store.clickhouse.ca_file", ca)?;
        }
        for (key, days) in [
            ("store.span_retention_days", store.span_retention_days),
            ("store.event_retention_days", store.event_retention_days),
            ("store.rollup_retention_days", store.rollup_retention_days),
        ] {
            check_range(key, days, 1..=3650, " days")?;
        }
        check_range(
            "store.retention_interval_s",
            store.retention_interval_s,
            1..=86_400,
            " (a day)",
        )?;
        let database = &store.clickhouse.database;
        let plain = !database.is_empty()
            && database.len() <= 64
            && database
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !plain {
            return Err(ConfigError::invalid(
                "store.clickhouse.database",
                format!("may hold only ASCII letters, digits and '_' (1 to 64), got {database:?}"),
            ));
        }
        if !store.clickhouse.url.starts_with("http://")
            && !store.clickhouse.url.starts_with("https://")
        {
            return Err(ConfigError::invalid(
                "store.clickhouse.url",
                format!(
                    "must be an http:// or https:// URL of ClickHouse's HTTP interface, got {:?}",
                    store.clickhouse.url
                ),
            ));
        }
        Ok(())
    }
}
