//! `vigil bench crashes`: crash groups over a loaded store. [`load`] writes
//! `records` crashes of tenant `bench` (default 1 million), spread evenly
//! over the last 24 hours, all of one app, as the aggregator writes them:
//! 1,000 groups (a few frequent, most rare), 20 versions released one after
//! the other, 40 device models, two OSes, a session and a user per crash
//! (two crashes per session), two stack frames each. Then
//! [`crate::api::measure`] times the API's crash pages
//! ([`Suite::Crashes`](crate::api::Suite)).

use std::time::Duration;

use vigil_domain::tenant::TenantId;
use vigil_store::{EventKind, EventRecord, Store};

/// `vigil bench crashes`.
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct Options {
    /// Crashes to load (0 measures what the store already holds).
    #[arg(long, default_value_t = 1_000_000)]
    pub records: u64,
    /// Requests timed per page.
    #[arg(long, default_value_t = 20)]
    pub requests: usize,
}

/// The app every crash is of.
pub const APP: &str = "bench-app";
const GROUPS: u64 = 1_000;
const VERSIONS: u64 = 20;

/// Writes the crashes; how long it took.
pub async fn load(store: &dyn Store, records: u64) -> Result<Duration, Box<dyn std::error::Error>> {
    crate::logs::load_events(store, records, |tenant, i, time_ns| {
        crash(tenant, i, time_ns, i * VERSIONS / records)
    })
    .await
}

/// Crash `i`, of version `5.{version}`.
fn crash(tenant: &TenantId, i: u64, time_ns: u64, version: u64) -> EventRecord {
    // Squared: group 0 is the most frequent, most groups are rare.
    let spread = (i.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32) % GROUPS;
    let group = spread * spread / GROUPS;
    let native = group.is_multiple_of(4);
    let frames = format!(
        r#"[{{"function":"f{group}","module":"Wallet","file":"F{group}.swift","line":{},"inApp":true,"address":""}},{{"function":"main","module":"libdyld.dylib","file":"","line":0,"inApp":false,"address":"0x1a2b"}}]"#,
        i % 100
    );
    let attributes = [
        ("app.version", format!("5.{version}")),
        (
            "os.name",
            if i.is_multiple_of(3) {
                "android"
            } else {
                "ios"
            }
            .to_owned(),
        ),
        ("device.model.identifier", format!("model-{}", i % 40)),
        ("os.version", format!("{}", 14 + i % 4)),
        ("user.id_hash", format!("{:032x}", i % 200_000)),
        ("session.id_hash", format!("{:032x}", i / 2)),
        ("thread.name", "main".to_owned()),
        ("crash.frames", frames),
        (
            "crash.kind",
            if native { "native" } else { "managed" }.to_owned(),
        ),
        ("exception.type", format!("Error{}", group % 50)),
        ("crash.foreground", (!i.is_multiple_of(5)).to_string()),
        ("crash.recurred", i.is_multiple_of(7).to_string()),
    ];
    EventRecord {
        tenant: tenant.clone(),
        kind: EventKind::Crash,
        id: i,
        time_ns,
        service: APP.to_owned(),
        name: format!("Error{}", group % 50),
        body: format!("crash {i} in group {group}"),
        trace_id: String::new(),
        span_id: String::new(),
        fingerprint: format!("group-{group:03}"),
        attributes: attributes
            .into_iter()
            .map(|(key, value)| (key.to_owned(), value))
            .collect(),
    }
}
