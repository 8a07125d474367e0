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
