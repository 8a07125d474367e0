//! Raw spans in SQLite.

use async_trait::async_trait;
use rusqlite::params;
use vigil_domain::tenant::TenantId;

use super::{SPAN_COLUMNS, SqliteStore, bound_to_sql, fatal, span_from_row, to_sql};
use crate::{SpanQuery, SpanRecord, StoreError, TraceStore, day_of};

#[async_trait]
impl TraceStore for SqliteStore {
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
                // `+start_ns`: without it SQLite reads the trace through
                // spans_by_time, every span of the tenant, for the order.
                .prepare_cached(&format!(
                    "SELECT {SPAN_COLUMNS} FROM spans WHERE tenant = ?1 AND trace_id = ?2
                     ORDER BY +start_ns, span_id"
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
}
