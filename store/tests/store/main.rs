//! The store conformance suite: every test runs on SQLite and on ClickHouse,
//! one module per concern of the store traits.

mod events;
mod rollups;
mod spans;
mod state;

use std::sync::Arc;

use vigil_domain::tenant::TenantId;
use vigil_store::{EventKind, EventQuery, RollupQuery, Store};
use vigil_testing::{Backend, on_both_backends, store_config};

use crate::events::event;
use crate::rollups::{flush, rollup, row, series};
use crate::spans::span;

pub const DAY: u64 = 86_400;
pub const NOW: u64 = 20_000 * DAY + 3_600;

pub async fn open(backend: Backend) -> Option<Arc<dyn Store>> {
    let config = store_config(backend)?;
    Some(vigil_store::open(&config).await.expect("the store opens"))
}

pub fn tenant(name: &str) -> TenantId {
    TenantId::parse(name).expect("valid tenant")
}

async fn migrations_are_applied_once(backend: Backend) {
    let Some(store) = open(backend).await else {
        return;
    };
    assert_eq!(store.migrate().await.expect("migrates"), Vec::<u32>::new());
}

async fn retention_drops_whole_old_days(backend: Backend) {
    let Some(store) = open(backend).await else {
        return;
    };
    let pay = series("acme", "pay", "POST /pay", "u1");
    let old_day = NOW - 10 * DAY;
    let mut old = flush(vec![], vec![row(&pay, 10, old_day, rollup(&[1.0], 0))]);
    old.time_s = old_day;
    store.write(&old).await.expect("writes");
    store
        .write(&flush(vec![], vec![row(&pay, 10, NOW, rollup(&[2.0], 0))]))
        .await
        .expect("writes");
    let trace = "0af7651916cd43dd8448eb211c80319c";
    store
        .write_spans(&[
            span(trace, "b7ad6b7169203331", "", old_day * 1_000_000_000),
            span(trace, "00f067aa0ba902b7", "", NOW * 1_000_000_000),
        ])
        .await
        .expect("writes");

    store
        .write_events(&[
            event(EventKind::Crash, 1, NOW - 20 * DAY, "wallet", "f00d"),
            event(EventKind::Crash, 2, old_day, "wallet", "f00d"),
        ])
        .await
        .expect("writes");

    // Defaults: spans 7 days, events 14, rollups 400; no rollup is dropped yet.
    store.enforce_retention(NOW).await.expect("enforces");
    let crashes = EventQuery::new(tenant("acme"), EventKind::Crash, 0, u64::MAX);
    let kept: Vec<u64> = store
        .events(&crashes)
        .await
        .expect("reads")
        .iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(kept, vec![2]);
    let spans = store.trace(&tenant("acme"), trace).await.expect("reads");
    assert_eq!(
        spans.iter().map(|s| s.span_id.as_str()).collect::<Vec<_>>(),
        vec!["00f067aa0ba902b7"]
    );
    let all = RollupQuery::new(10, 0, u64::MAX / 2);
    assert_eq!(store.rollups(&all).await.expect("reads").len(), 2);
    store
        .enforce_retention(NOW + 395 * DAY)
        .await
        .expect("enforces");
    let left = store.rollups(&all).await.expect("reads");
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].start_s, NOW);
}

on_both_backends!(migrations_are_applied_once, retention_drops_whole_old_days);

/// Pages of a SQLite file as another connection sees them: (in use, free).
fn pages(path: &std::path::Path) -> (i64, i64) {
    let connection = rusqlite::Connection::open(path).expect("opens");
    let count = |pragma: &str| {
        connection
            .query_row(&format!("PRAGMA {pragma}"), [], |row| row.get::<_, i64>(0))
            .expect("reads")
    };
    (count("page_count"), count("freelist_count"))
}

/// Retention on SQLite gives the space of what it dropped back: 4,000 old
/// spans of 2 KiB (8 MiB) go, the file's pages shrink by at least that much
/// and none are left free; the recent span stays.
#[tokio::test]
async fn sqlite_retention_returns_the_space_it_frees() {
    let config = store_config(Backend::Embedded).expect("SQLite is always there");
    let store = vigil_store::open(&config).await.expect("the store opens");
    let old_day = NOW - 10 * DAY;
    let padding = "x".repeat(2_048);
    let old: Vec<_> = (0..4_000u64)
        .map(|i| {
            let mut span = span(
                "0af7651916cd43dd8448eb211c80319c",
                &format!("{i:016x}"),
                "",
                old_day * 1_000_000_000 + i,
            );
            span.attributes.push(("padding".into(), padding.clone()));
            span
        })
        .collect();
    for chunk in old.chunks(500) {
        store.write_spans(chunk).await.expect("writes");
    }
    let recent = span(
        "4bf92f3577b34da6a3ce929d0e0e4736",
        "00f067aa0ba902b7",
        "",
        NOW * 1_000_000_000,
    );
    store
        .write_spans(std::slice::from_ref(&recent))
        .await
        .expect("writes");
    let (before, _) = pages(&config.sqlite.path);

    store.enforce_retention(NOW).await.expect("enforces");
    let (after, free) = pages(&config.sqlite.path);
    let page_size = 4_096;
    assert!(
        before - after >= 4_000 * 2_048 / page_size,
        "{before} pages before, {after} after"
    );
    assert_eq!(free, 0);
    let kept = store
        .trace(&tenant("acme"), "4bf92f3577b34da6a3ce929d0e0e4736")
        .await
        .expect("reads");
    assert_eq!(kept, vec![recent]);
    let gone = store
        .trace(&tenant("acme"), "0af7651916cd43dd8448eb211c80319c")
        .await
        .expect("reads");
    assert!(gone.is_empty());
}

/// ClickHouse behind TLS (a TLS-terminating proxy with a certificate of a
/// test CA, as ClickHouse's own `https_port` would be): with
/// `store.clickhouse.ca_file` naming the CA, the store migrates, writes and
/// reads over `https://`; without it, the certificate is refused and the
/// store reports itself unavailable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clickhouse_is_reached_over_https_trusting_the_configured_ca() {
    let Some(mut config) = store_config(Backend::Kafka) else {
        return;
    };
    let pki = vigil_testing::pki::Pki::new();
    let plain = config
        .clickhouse
        .url
        .trim_start_matches("http://")
        .to_owned();
    let terminator = vigil_testing::TlsTerminator::start(&plain, &pki.server_tls()).await;
    config.clickhouse.url = format!("https://localhost:{}", terminator.port());

    let untrusting = vigil_store::connect(&config).unwrap();
    let refused = untrusting.ping().await.unwrap_err();
    assert!(refused.is_retryable(), "{refused}");
    assert!(refused.to_string().contains("certificate"), "{refused}");

    config.clickhouse.ca_file = Some(pki.ca_file.clone());
    let store = vigil_store::open(&config)
        .await
        .expect("migrates over https");
    let pay = series("acme", "pay", "POST /pay", "u1");
    store
        .write(&flush(
            vec![],
            vec![row(&pay, 10, NOW, rollup(&[2.0, 4.0], 1))],
        ))
        .await
        .expect("writes over https");
    let rows = store
        .rollups(&RollupQuery::new(10, NOW - 60, NOW + 60))
        .await
        .expect("reads over https");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].rollup.values.count(), 2);
    assert_eq!(rows[0].rollup.errors, 1);
}
