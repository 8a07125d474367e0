//! Retention runs by itself in the process that owns the store: spans,
//! rollups and history older than their retention are gone within a run of
//! the schedule, and what is recent stays.

use std::sync::Arc;
use std::time::Duration;

use vigil_domain::alert::Collection;
use vigil_domain::model::{Checkpoint, Kind, Rollup, RollupRow, SeriesKey};
use vigil_store::{Flush, HistoryEntry, HistoryQuery, RollupQuery, SpanRecord, StateRecord};
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

async fn old_data_is_dropped_on_schedule(backend: Backend) {
    // Retention every second; spans kept 7 days, history 14, rollups 400.
    let Some(stack) = Stack::start_with(backend, |config| {
        config.store.retention_interval_s = 1;
    })
    .await
    else {
        return;
    };
    let store = stack.pipeline.store.clone();
    let now = now_s();
    let (old_spans, old_events, old_rollups) = (now - 8 * DAY, now - 15 * DAY, now - 401 * DAY);
    store
        .write_spans(&[span(OLD_TRACE, old_spans), span(NEW_TRACE, now)])
        .await
        .unwrap();
    store
        .append_history(&[history(old_events), history(now)])
        .await
        .unwrap();
    let series = Arc::new(SeriesKey::new(
        acme(),
        Kind::Span,
        "pay",
        "POST /pay",
        vec![],
    ));
    store.write(&flush(&series, old_rollups)).await.unwrap();
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

    let rollups = |from_s: u64| {
        let mut query = RollupQuery::new(10, from_s - from_s % 10, from_s + 10);
        query.source = Some(("retention-test".into(), 0));
        query
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let old = (
            store.trace(&acme(), OLD_TRACE).await.unwrap().len(),
            store
                .history(&HistoryQuery {
                    tenant: acme(),
                    from_ms: 0,
                    to_ms: (now + 1) * 1_000,
                    rule: None,
                    subject: Some(format!("at-{old_events}")),
                    limit: 10,
                })
                .await
                .unwrap()
                .len(),
            store.rollups(&rollups(old_rollups)).await.unwrap().len(),
        );
        if old == (0, 0, 0) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still there after 30 s (spans, history, rollups): {old:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(store.trace(&acme(), NEW_TRACE).await.unwrap().len(), 1);
    assert_eq!(store.rollups(&rollups(now)).await.unwrap().len(), 1);
    let recent = store
        .history(&HistoryQuery {
            tenant: acme(),
            from_ms: 0,
            to_ms: (now + 1) * 1_000,
            rule: None,
            subject: Some(format!("at-{now}")),
            limit: 10,
        })
        .await
        .unwrap();
    assert_eq!(recent.len(), 1);
    assert_eq!(store.state(Collection::Silence).await.unwrap(), vec![state]);
    stack.stop().await;
}
