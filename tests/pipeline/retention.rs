//! Retention runs by itself in the process that owns the store: spans,
//! rollups and history older than their retention are gone within a run of
//! the schedule, and what is recent stays.

use std::sync::Arc;
use std::time::Duration;

use vigil_domain::alert::Collection;
use vigil_domain::model::{Checkpoint, Kind, Rollup, RollupRow, SeriesKey};
use vigil_store::{Flush, HistoryEntry, HistoryQuery, RollupQuery, SpanRecord, StateRecord, Store};
use vigil_testing::{Backend, on_both_backends};

use crate::harness::{Stack, acme, now_s};

on_both_backends!(old_data_is_dropped_on_schedule);

const DAY: u64 = 86_400;
const OLD_TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
const NEW_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

fn span(trace: &str, start_s: u64) -> SpanRecord {
    SpanRecord {
        tenant: acme(),
        trace_id: trace.into(),
        span_id: "00f067aa0ba902b7".into(),
        parent_span_id: String::new(),
        service: "pay".into(),
        name: "POST /pay".into(),
        kind: "server".into(),
        start_ns: start_s * 1_000_000_000,
        duration_ns: 1_000_000,
        status_code: 0,
        status_message: String::new(),
        attributes: Vec::new(),
    }
}

fn flush(series: &Arc<SeriesKey>, time_s: u64) -> Flush {
    let mut rollup = Rollup::default();
    rollup.record(1.0, false).unwrap();
    Flush {
        source: "retention-test".into(),
        time_s,
        checkpoints: Vec::<Checkpoint>::new(),
        rows: vec![RollupRow {
            series: Arc::clone(series),
            partition: 0,
            width_s: 10,
            start_s: time_s - time_s % 10,
            rollup,
            correction: false,
        }],
        cumulative: Vec::new(),
    }
}

fn history(time_s: u64) -> HistoryEntry {
    HistoryEntry {
        tenant: acme(),
        time_ms: time_s * 1_000,
        kind: "transition".into(),
        rule: "pay-errors".into(),
        subject: format!("at-{time_s}"),
        body: "{}".into(),
    }
}

/// What is stored of each kind written at `time_s`: (spans, history
/// entries, rollups).
async fn stored(store: &dyn Store, time_s: u64, trace: &str) -> (usize, usize, usize) {
    let history = HistoryQuery {
        tenant: acme(),
        from_ms: 0,
        to_ms: u64::MAX >> 1,
        rule: None,
        subject: Some(format!("at-{time_s}")),
        limit: 10,
    };
    let mut rollups = RollupQuery::new(10, time_s - time_s % 10, time_s + 10);
    rollups.source = Some(("retention-test".into(), 0));
    (
        store.trace(&acme(), trace).await.unwrap().len(),
        store.history(&history).await.unwrap().len(),
        store.rollups(&rollups).await.unwrap().len(),
    )
}

async fn old_data_is_dropped_on_schedule(backend: Backend) {
    // Retention every 3 s; spans kept 7 days, history 14, rollups 400.
    let Some(stack) = Stack::start_with(backend, |config| {
        config.store.retention_interval_s = 3;
    })
    .await
    else {
        return;
    };
    let retention = &stack.pipeline.retention;
    // After the run at start, and before the next: old and new data.
    tokio::time::timeout(Duration::from_secs(30), retention.ran(1))
        .await
        .expect("the run at start ended");
    let store = stack.pipeline.store.clone();
    let now = now_s();
    // One day of each kind past its retention.
    let old = now - 8 * DAY;
    let old_history = now - 15 * DAY;
    let old_rollup = now - 401 * DAY;
    store
        .write_spans(&[span(OLD_TRACE, old), span(NEW_TRACE, now)])
        .await
        .unwrap();
    store
        .append_history(&[history(old_history), history(now)])
        .await
        .unwrap();
    let series = Arc::new(SeriesKey::new(
        acme(),
        Kind::Span,
        "pay",
        "POST /pay",
        vec![],
    ));
    store.write(&flush(&series, old_rollup)).await.unwrap();
    store.write(&flush(&series, now)).await.unwrap();
    // A state record is never dropped by age.
    let state = StateRecord {
        collection: Collection::Silence,
        tenant: acme(),
        key: "s1".into(),
        version: 1,
        body: "{}".into(),
        deleted: false,
    };
    store.put_state(std::slice::from_ref(&state)).await.unwrap();
    let old_kept = |store| async move {
        (
            stored(store, old, OLD_TRACE).await.0,
            stored(store, old_history, OLD_TRACE).await.1,
            stored(store, old_rollup, OLD_TRACE).await.2,
        )
    };
    assert_eq!(old_kept(&*store).await, (1, 1, 1));

    // The next run drops exactly the old ones.
    tokio::time::timeout(Duration::from_secs(30), retention.ran(2))
        .await
        .expect("the scheduled run ended");
    assert_eq!(old_kept(&*store).await, (0, 0, 0));
    assert_eq!(stored(&*store, now, NEW_TRACE).await, (1, 1, 1));
    assert_eq!(store.state(Collection::Silence).await.unwrap(), vec![state]);
    stack.stop().await;
}
