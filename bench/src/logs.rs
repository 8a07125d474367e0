//! `vigil bench logs`: log search over a loaded store. [`load`] writes
//! `records` log records of tenant `bench` (default 10 million), spread
//! evenly over the last 24 hours and 50 services, a fifth of them ERROR,
//! each with a trace id, a span id, two attributes and a body of a few
//! words; one record in a million holds the word `needle`. Then
//! [`crate::api::measure`] times the API's searches ([`Suite::Logs`](crate::api::Suite)).

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use vigil_domain::tenant::TenantId;
use vigil_store::{EventKind, EventRecord, Store};

/// `vigil bench logs`.
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct Options {
    /// Log records to load (0 measures what the store already holds).
    #[arg(long, default_value_t = 10_000_000)]
    pub records: u64,
    /// Requests timed per search.
    #[arg(long, default_value_t = 20)]
    pub requests: usize,
}

const SERVICES: u64 = 50;
const PER_WRITE: u64 = 100_000;
const DAY_NS: u64 = 86_400 * 1_000_000_000;
const WORDS: [&str; 8] = [
    "accepted",
    "declined",
    "retried",
    "timed out",
    "reserved",
    "refunded",
    "settled",
    "queued",
];

/// The trace id of record `i`: one trace per 20 records.
pub fn trace_id(i: u64) -> String {
    format!("{:032x}", 0xfeed_0000_0000_u64 + i / 20)
}

/// Writes the records; how long it took.
pub async fn load(store: &dyn Store, records: u64) -> Result<Duration, Box<dyn std::error::Error>> {
    load_events(store, records, |tenant, i, time_ns| EventRecord {
        tenant: tenant.clone(),
        kind: EventKind::Log,
        id: i,
        time_ns,
        service: format!("service-{}", i % SERVICES),
        name: if i % 5 == 0 { "ERROR" } else { "INFO" }.into(),
        body: if i % 1_000_000 == 500_000 {
            format!("order {i}: card needle by the issuer")
        } else {
            format!("order {i}: card {} by the issuer", WORDS[(i % 8) as usize])
        },
        trace_id: trace_id(i),
        span_id: format!("{:016x}", i),
        fingerprint: String::new(),
        attributes: vec![
            ("vigil.unit".into(), format!("unit-{}", i % 5)),
            ("http.route".into(), format!("/r{}", i % 20)),
        ],
    })
    .await
}

/// Writes `records` events of tenant `bench`, `event(tenant, i, time)`
/// the `i`th, spread evenly over the last 24 hours, in writes of 100,000;
/// how long it took. Also [`crate::crashes::load`]'s.
pub async fn load_events(
    store: &dyn Store,
    records: u64,
    event: impl Fn(&TenantId, u64, u64) -> EventRecord,
) -> Result<Duration, Box<dyn std::error::Error>> {
    let tenant = TenantId::parse("bench")?;
    let now_ns = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos() as u64;
    let start = Instant::now();
    let step = DAY_NS / records.max(1);
    let mut from = 0;
    while from < records {
        let to = (from + PER_WRITE).min(records);
        let batch: Vec<EventRecord> = (from..to)
            .map(|i| event(&tenant, i, now_ns - DAY_NS + i * step))
            .collect();
        store.write_events(&batch).await?;
        from = to;
    }
    Ok(start.elapsed())
}
