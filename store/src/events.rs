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

/// What a crash is counted by: an attribute of its event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CrashDimension {
    Version,
    Os,
    OsVersion,
    Device,
    /// `managed` or `native`.
    Kind,
    /// `true` or `false`.
    Foreground,
    /// `true` or `false`: the app crashed again on its next launch.
    Recurred,
}

impl CrashDimension {
    pub const ALL: [CrashDimension; 7] = [
        CrashDimension::Version,
        CrashDimension::Os,
        CrashDimension::OsVersion,
        CrashDimension::Device,
        CrashDimension::Kind,
        CrashDimension::Foreground,
        CrashDimension::Recurred,
    ];

    /// Its short name: `version`, `os`, `os_version`, `device`, `kind`,
    /// `foreground`, `recurred`.
    pub fn name(self) -> &'static str {
        match self {
            CrashDimension::Version => "version",
            CrashDimension::Os => "os",
            CrashDimension::OsVersion => "os_version",
            CrashDimension::Device => "device",
            CrashDimension::Kind => "kind",
            CrashDimension::Foreground => "foreground",
            CrashDimension::Recurred => "recurred",
        }
    }

    /// The attribute of a crash event that holds it.
    pub fn attribute(self) -> &'static str {
        match self {
            CrashDimension::Version => "app.version",
            CrashDimension::Os => "os.name",
            CrashDimension::OsVersion => "os.version",
            CrashDimension::Device => "device.model.identifier",
            CrashDimension::Kind => "crash.kind",
            CrashDimension::Foreground => "crash.foreground",
            CrashDimension::Recurred => "crash.recurred",
        }
    }
}

/// Which crashes to count: one app's in `[from_ns, to_ns)`, of the given
/// groups (all when empty), with each dimension of `filters` at its value.
#[derive(Debug, Clone)]
pub struct CrashQuery {
    pub tenant: TenantId,
    pub app: String,
    pub from_ns: u64,
    pub to_ns: u64,
    pub filters: Vec<(CrashDimension, String)>,
    pub fingerprints: Vec<String>,
}

/// One crash group's share of the crashes a [`CrashQuery`] selects.
#[derive(Debug, Clone, PartialEq)]
pub struct CrashGroupCount {
    pub fingerprint: String,
    /// The exception type and message of its newest crash.
    pub exception_type: String,
    pub message: String,
    pub events: u64,
    pub first_ns: u64,
    pub last_ns: u64,
}

/// How many sessions and users the crashes of one group (or of one value
/// of a dimension) hit: distinct session and user hashes, and the crashes
/// sent without a session hash.
#[derive(Debug, Clone, PartialEq)]
pub struct CrashReach {
    /// The fingerprint, or the dimension's value.
    pub key: String,
    pub sessions: u64,
    pub users: u64,
    pub without_session: u64,
}

/// The crashes of one group with one value of a dimension.
#[derive(Debug, Clone, PartialEq)]
pub struct CrashCount {
    pub fingerprint: String,
    pub value: String,
    pub events: u64,
    pub first_ns: u64,
    pub last_ns: u64,
}

/// Raw log records and crashes.
#[async_trait]
pub trait EventStore: Send + Sync {
    /// Keeps log records and crashes for lookup; an id written again keeps
    /// one copy.
    async fn write_events(&self, events: &[EventRecord]) -> Result<(), StoreError>;

    /// The events the query selects, newest first.
    async fn events(&self, query: &EventQuery) -> Result<Vec<EventRecord>, StoreError>;

    /// The crashes the query selects, per group (stack fingerprint), most
    /// crashes first, then by fingerprint.
    async fn crash_groups(&self, query: &CrashQuery) -> Result<Vec<CrashGroupCount>, StoreError>;

    /// The sessions and users the crashes the query selects hit, per group
    /// or, with `by`, per value of a dimension (every group together),
    /// ordered by key. Distinct counts cost more than counts: the API asks
    /// for the groups of a page only.
    async fn crash_reach(
        &self,
        query: &CrashQuery,
        by: Option<CrashDimension>,
    ) -> Result<Vec<CrashReach>, StoreError>;

    /// The crashes the query selects, per group and value of `by`, ordered
    /// by fingerprint, then most crashes first, then by value.
    async fn crash_counts(
        &self,
        query: &CrashQuery,
        by: CrashDimension,
    ) -> Result<Vec<CrashCount>, StoreError>;
}
