//! Raw spans, kept for trace lookup and search.

use async_trait::async_trait;
use vigil_domain::tenant::TenantId;

use crate::StoreError;

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

/// Raw spans.
#[async_trait]
pub trait TraceStore: Send + Sync {
    /// Keeps spans for lookup. Writing a span again (same tenant, trace and
    /// span id) keeps one copy.
    async fn write_spans(&self, spans: &[SpanRecord]) -> Result<(), StoreError>;

    /// Every span of one trace, ordered by start.
    async fn trace(&self, tenant: &TenantId, trace_id: &str)
    -> Result<Vec<SpanRecord>, StoreError>;

    /// The spans the query selects, newest first (by start, then span id).
    async fn search_spans(&self, query: &SpanQuery) -> Result<Vec<SpanRecord>, StoreError>;
}
