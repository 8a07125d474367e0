//! Log records and crashes in ClickHouse.

use async_trait::async_trait;
use clickhouse::Row;
use serde::{Deserialize, Serialize};
use vigil_domain::tenant::TenantId;

use super::{ClickHouseStore, classify, day_u32};
use crate::codec::corrupt;
use crate::{
    CrashCount, CrashDimension, CrashGroupCount, CrashQuery, CrashReach, EventKind, EventQuery,
    EventRecord, EventStore, StoreError,
};

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

#[derive(Row, Deserialize)]
struct CrashGroupRow {
    fingerprint: String,
    exception_type: String,
    message: String,
    events: u64,
    first_ns: u64,
    last_ns: u64,
}

#[derive(Row, Deserialize)]
struct CrashReachRow {
    key: String,
    sessions: u64,
    users: u64,
    without_session: u64,
}

#[derive(Row, Deserialize)]
struct CrashCountRow {
    fingerprint: String,
    value: String,
    events: u64,
    first_ns: u64,
    last_ns: u64,
}

/// A crash as a row of `crashes`: its dimensions as columns, named by
/// [`CrashDimension::name`].
#[derive(Row, Serialize)]
struct CrashRow {
    tenant: String,
    app: String,
    time_ns: u64,
    id: u64,
    fingerprint: String,
    exception_type: String,
    message: String,
    version: String,
    os: String,
    os_version: String,
    device: String,
    kind: String,
    foreground: String,
    recurred: String,
    user_hash: String,
    session_hash: String,
    day: u32,
}

impl CrashRow {
    fn of(event: &EventRecord) -> Self {
        let attribute = |key: &str| {
            event
                .attributes
                .iter()
                .find(|(k, _)| k == key)
                .map_or_else(String::new, |(_, v)| v.clone())
        };
        let [version, os, os_version, device, kind, foreground, recurred] =
            CrashDimension::ALL.map(|d| attribute(d.attribute()));
        CrashRow {
            tenant: event.tenant.as_str().to_owned(),
            app: event.service.clone(),
            time_ns: event.time_ns,
            id: event.id,
            fingerprint: event.fingerprint.clone(),
            exception_type: event.name.clone(),
            message: event.body.clone(),
            version,
            os,
            os_version,
            device,
            kind,
            foreground,
            recurred,
            user_hash: attribute("user.id_hash"),
            session_hash: attribute("session.id_hash"),
            day: day_u32(event.time_ns / 1_000_000_000),
        }
    }
}

#[async_trait]
impl EventStore for ClickHouseStore {
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
        self.insert_all("events", rows.collect()).await?;
        // Written after the events: a failure between the two is retried
        // whole, and a crash counts once by its id.
        let crashes: Vec<CrashRow> = events
            .iter()
            .filter(|event| event.kind == EventKind::Crash)
            .map(CrashRow::of)
            .collect();
        if crashes.is_empty() {
            return Ok(());
        }
        self.insert_all("crashes", crashes).await
    }

    async fn events(&self, query: &EventQuery) -> Result<Vec<EventRecord>, StoreError> {
        // ClickHouse 18.16 reads the whole range to give its newest rows
        // (reading in order came with 19.14): the range is read from its
        // newest end in windows that do not overlap, each 4 times the one
        // before from a 16th of the range, until the page is full. A
        // common search reads its last window only; a rare one the range
        // once, in three or four queries.
        let newest = query.before.map_or(query.to_ns, |(time_ns, _)| {
            time_ns.saturating_add(1).min(query.to_ns)
        });
        let mut size = (newest.saturating_sub(query.from_ns) / 16).max(1);
        let mut high = newest;
        let mut rows = Vec::new();
        while high > query.from_ns && rows.len() < query.limit {
            let low = high.saturating_sub(size).max(query.from_ns);
            rows.extend(
                self.window(query, low, high, query.limit - rows.len())
                    .await?,
            );
            high = low;
            size = size.saturating_mul(4);
        }
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

    async fn crash_groups(&self, query: &CrashQuery) -> Result<Vec<CrashGroupCount>, StoreError> {
        let rows: Vec<CrashGroupRow> = self
            .crash_select(
                query,
                "fingerprint, argMax(exception_type, time_ns) AS exception_type,
                    argMax(message, time_ns) AS message, uniqExact(id) AS events,
                    min(time_ns) AS first_ns, max(time_ns) AS last_ns",
                "GROUP BY fingerprint ORDER BY events DESC, fingerprint",
            )
            .fetch_all()
            .await
            .map_err(classify)?;
        Ok(rows
            .into_iter()
            .map(|row| CrashGroupCount {
                fingerprint: row.fingerprint,
                exception_type: row.exception_type,
                message: row.message,
                events: row.events,
                first_ns: row.first_ns,
                last_ns: row.last_ns,
            })
            .collect())
    }

    async fn crash_reach(
        &self,
        query: &CrashQuery,
        by: Option<CrashDimension>,
    ) -> Result<Vec<CrashReach>, StoreError> {
        let key = by.map_or("fingerprint", CrashDimension::name);
        // A crash without a session hash counts once, replayed or not.
        let columns = format!(
            "{key} AS key, uniqExactIf(session_hash, session_hash != '') AS sessions,
                uniqExactIf(user_hash, user_hash != '') AS users,
                uniqExactIf(id, session_hash = '') AS without_session"
        );
        let rows: Vec<CrashReachRow> = self
            .crash_select(query, &columns, "GROUP BY key ORDER BY key")
            .fetch_all()
            .await
            .map_err(classify)?;
        Ok(rows
            .into_iter()
            .map(|row| CrashReach {
                key: row.key,
                sessions: row.sessions,
                users: row.users,
                without_session: row.without_session,
            })
            .collect())
    }

    async fn crash_counts(
        &self,
        query: &CrashQuery,
        by: CrashDimension,
    ) -> Result<Vec<CrashCount>, StoreError> {
        let columns = format!(
            "fingerprint, {} AS value, uniqExact(id) AS events, min(time_ns) AS first_ns,
                max(time_ns) AS last_ns",
            by.name()
        );
        let rows: Vec<CrashCountRow> = self
            .crash_select(
                query,
                &columns,
                "GROUP BY fingerprint, value ORDER BY fingerprint, events DESC, value",
            )
            .fetch_all()
            .await
            .map_err(classify)?;
        Ok(rows
            .into_iter()
            .map(|row| CrashCount {
                fingerprint: row.fingerprint,
                value: row.value,
                events: row.events,
                first_ns: row.first_ns,
                last_ns: row.last_ns,
            })
            .collect())
    }
}

impl ClickHouseStore {
    /// `SELECT {columns} FROM crashes` over the crashes of `query`, then
    /// `{rest}` (GROUP BY, ORDER BY). Crashes are counted by distinct id:
    /// a crash written twice (a replay) and not yet merged counts once.
    fn crash_select(
        &self,
        query: &CrashQuery,
        columns: &str,
        rest: &str,
    ) -> clickhouse::query::Query {
        let filters: String = query
            .filters
            .iter()
            .map(|(dimension, _)| format!(" AND {} = ?", dimension.name()))
            .collect();
        let fingerprints = match query.fingerprints.len() {
            0 => String::new(),
            n => format!(" AND fingerprint IN ({})", vec!["?"; n].join(", ")),
        };
        let mut select = self
            .client
            .query(&format!(
                "SELECT {columns} FROM crashes
                 WHERE tenant = ? AND app = ? AND day >= ? AND day <= ?
                    AND time_ns >= ? AND time_ns < ?{filters}{fingerprints}
                 {rest}"
            ))
            .bind(query.tenant.as_str())
            .bind(query.app.as_str())
            .bind(day_u32(query.from_ns / 1_000_000_000))
            .bind(day_u32(query.to_ns / 1_000_000_000))
            .bind(query.from_ns)
            .bind(query.to_ns);
        for (_, value) in &query.filters {
            select = select.bind(value.as_str());
        }
        for fingerprint in &query.fingerprints {
            select = select.bind(fingerprint.as_str());
        }
        select
    }

    /// The newest `limit` events of `query` in `[from_ns, to_ns)`.
    async fn window(
        &self,
        query: &EventQuery,
        from_ns: u64,
        to_ns: u64,
        limit: usize,
    ) -> Result<Vec<EventRow>, StoreError> {
        // One bound value per wanted name and attribute pair; the values
        // never enter the SQL.
        let names = match query.names.len() {
            0 => String::new(),
            n => format!(" AND upper(name) IN ({})", vec!["?"; n].join(", ")),
        };
        let attributes =
            " AND arrayExists((k, v) -> k = ? AND v = ?, attribute_keys, attribute_values)"
                .repeat(query.attributes.len());
        let (before_time, before_id) = query.before.unzip();
        let mut select = self
            .client
            .query(&format!(
                "SELECT ?fields FROM events
                 WHERE tenant = ? AND kind = ? AND day >= ? AND day <= ?
                    AND time_ns >= ? AND time_ns < ?
                    AND (? = 0 OR service = ?) AND (? = 0 OR trace_id = ?)
                    AND (? = 0 OR span_id = ?) AND (? = 0 OR fingerprint = ?)
                    AND (? = 0 OR positionCaseInsensitiveUTF8(body, ?) > 0)
                    AND (? = 0 OR time_ns < ? OR (time_ns = ? AND id < ?)){names}{attributes}
                 ORDER BY time_ns DESC, id DESC LIMIT 1 BY id LIMIT ?"
            ))
            .bind(query.tenant.as_str())
            .bind(query.kind.as_str())
            .bind(day_u32(from_ns / 1_000_000_000))
            .bind(day_u32(to_ns / 1_000_000_000))
            .bind(from_ns)
            .bind(to_ns);
        for filter in [
            &query.service,
            &query.trace_id,
            &query.span_id,
            &query.fingerprint,
            &query.text,
        ] {
            select = select
                .bind(u8::from(filter.is_some()))
                .bind(filter.as_deref().unwrap_or(""));
        }
        select = select
            .bind(u8::from(before_time.is_some()))
            .bind(before_time.unwrap_or(0))
            .bind(before_time.unwrap_or(0))
            .bind(before_id.unwrap_or(0));
        for name in &query.names {
            select = select.bind(name.to_uppercase());
        }
        for (key, value) in &query.attributes {
            select = select.bind(key.as_str()).bind(value.as_str());
        }
        select
            .bind(u64::try_from(limit).unwrap_or(u64::MAX))
            .fetch_all()
            .await
            .map_err(classify)
    }
}
