//! Raw spans in ClickHouse.

use async_trait::async_trait;
use clickhouse::Row;
use serde::{Deserialize, Serialize};
use vigil_domain::tenant::TenantId;

use super::{ClickHouseStore, classify, day_u32};
use crate::codec::corrupt;
use crate::{SpanQuery, SpanRecord, StoreError, TraceStore};

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

#[async_trait]
impl TraceStore for ClickHouseStore {
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
}
