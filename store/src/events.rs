//! Raw events: log records and crashes, kept for lookup.

use async_trait::async_trait;
use vigil_domain::tenant::TenantId;

use crate::StoreError;

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
/// `[from_ns, to_ns)`, newest first (by time, then id, both descending),
/// at most `limit`. `before` continues a search: only events after the
/// given one (its time and id) in that order.
#[derive(Debug, Clone)]
pub struct EventQuery {
    pub tenant: TenantId,
    pub kind: EventKind,
    pub from_ns: u64,
    pub to_ns: u64,
    pub service: Option<String>,
    pub trace_id: Option<String>,
    pub span_id: Option<String>,
    pub fingerprint: Option<String>,
    /// Any of these names (severities), compared upper-case; empty: any.
    pub names: Vec<String>,
    /// Text the body holds, compared case-insensitively (on SQLite, ASCII
    /// letters only).
    pub text: Option<String>,
    /// Attributes the event has, each key with exactly this value.
    pub attributes: Vec<(String, String)>,
    pub before: Option<(u64, u64)>,
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
            span_id: None,
            fingerprint: None,
            names: Vec::new(),
            text: None,
            attributes: Vec::new(),
            before: None,
            limit: 1_000,
        }
    }
}

/// Raw log records and crashes.
#[async_trait]
pub trait EventStore: Send + Sync {
    /// Keeps log records and crashes for lookup; an id written again keeps
    /// one copy.
    async fn write_events(&self, events: &[EventRecord]) -> Result<(), StoreError>;

    /// The events the query selects, newest first.
    async fn events(&self, query: &EventQuery) -> Result<Vec<EventRecord>, StoreError>;
}
