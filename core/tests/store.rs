//! The store conformance suite: every test runs on SQLite and on ClickHouse.

use std::sync::Arc;

use vigil_core::distribution::Distribution;
use vigil_core::model::{Kind, Rollup, SeriesKey};
use vigil_core::on_both_backends;
use vigil_core::store::{
    self, Aggregated, Aggregation, CatalogueEntry, Checkpoint, EventKind, EventQuery, EventRecord,
    Flush, HistoryEntry, HistoryQuery, Matcher, RollupQuery, RollupRow, SpanQuery, SpanRecord,
    StateRecord, Store,
};
use vigil_core::tenant::TenantId;
use vigil_core::testing::{Backend, store_config};

const DAY: u64 = 86_400;
const NOW: u64 = 20_000 * DAY + 3_600;

async fn open(backend: Backend) -> Option<Arc<dyn Store>> {
    let config = store_config(backend)?;
    Some(store::open(&config).await.expect("the store opens"))
}

fn tenant(name: &str) -> TenantId {
    TenantId::parse(name).expect("valid tenant")
}

fn series(tenant_name: &str, service: &str, name: &str, unit: &str) -> Arc<SeriesKey> {
    Arc::new(SeriesKey::new(
        tenant(tenant_name),
        Kind::Span,
        service,
        name,
        vec![
            ("vigil.unit".into(), unit.into()),
            (
                "http.route".into(),
                "/pay?x='; DROP TABLE rollups; --".into(),
            ),
        ],
    ))
}

fn rollup(values: &[f64], errors: u64) -> Rollup {
    let mut rollup = Rollup::default();
    for &value in values {
        rollup.record(value, false).expect("finite");
    }
    rollup.errors = errors;
    rollup
}

fn row(series: &Arc<SeriesKey>, width_s: u32, start_s: u64, rollup: Rollup) -> RollupRow {
    RollupRow {
        series: Arc::clone(series),
        partition: 3,
        width_s,
        start_s,
        rollup,
        correction: false,
    }
}

fn checkpoint(seq: u64, next_offset: i64) -> Checkpoint {
    Checkpoint {
        seq,
        partition: 3,
        next_offset,
        replay_from: next_offset - 5,
        watermark_s: NOW + seq,
    }
}

fn flush(checkpoints: Vec<Checkpoint>, rows: Vec<RollupRow>) -> Flush {
    Flush {
        source: "vigil.otlp.traces".into(),
        time_s: NOW,
        checkpoints,
        rows,
    }
}

async fn migrations_are_applied_once(backend: Backend) {
    let Some(store) = open(backend).await else {
        return;
    };
    assert_eq!(store.migrate().await.expect("migrates"), Vec::<u32>::new());
}

async fn partial_and_correction_rows_merge_into_one_window(backend: Backend) {
    let Some(store) = open(backend).await else {
        return;
    };
    let pay = series("acme", "pay", "POST /pay", "u1");
    let other_unit = series("acme", "pay", "POST /pay", "u2");
    let start = NOW - 40;
    store
        .write(&flush(
            vec![checkpoint(1, 100)],
            vec![
                row(&pay, 10, start, rollup(&[1.0, 2.0, 3.0], 1)),
                row(&other_unit, 10, start, rollup(&[50.0], 0)),
            ],
        ))
        .await
        .expect("first flush");
    let mut late = row(&pay, 10, start, rollup(&[0.5, 400.0], 2));
    late.correction = true;
    store
        .write(&flush(
            vec![checkpoint(2, 180)],
            vec![late, row(&pay, 10, start + 10, rollup(&[7.0], 0))],
        ))
        .await
        .expect("second flush");

    let mut query = RollupQuery::new(10, start, start + 10);
    query.tenant = Some(tenant("acme"));
    let rows = store.rollups(&query).await.expect("reads");
    assert_eq!(rows.len(), 2, "one row per series and window: {rows:?}");
    let merged = rows
        .iter()
        .find(|r| r.series == *pay)
        .expect("the u1 series");
    let mut expected = Distribution::new();
    for value in [1.0, 2.0, 3.0, 0.5, 400.0] {
        expected.record(value).expect("finite");
    }
    assert_eq!(merged.start_s, start);
    assert_eq!(merged.rollup.values.count(), 5);
    assert_eq!(merged.rollup.values.sum(), 406.5);
    assert_eq!(merged.rollup.values.min(), Some(0.5));
    assert_eq!(merged.rollup.values.max(), Some(400.0));
    assert_eq!(merged.rollup.errors, 3);
    assert_eq!(merged.rollup.values.to_buckets(), expected.to_buckets());
    assert_eq!(
        merged.series.label("http.route"),
        Some("/pay?x='; DROP TABLE rollups; --")
    );

    let checkpoint = store
        .checkpoint("vigil.otlp.traces", 3)
        .await
        .expect("reads the checkpoint");
    assert_eq!(checkpoint, Some(self::checkpoint(2, 180)));
    assert_eq!(
        store
            .checkpoint("vigil.otlp.traces", 4)
            .await
            .expect("reads"),
        None
    );
    assert_eq!(store.checkpoint("other", 3).await.expect("reads"), None);
}

async fn queries_select_by_every_filter(backend: Backend) {
    let Some(store) = open(backend).await else {
        return;
    };
    let start = NOW - 100;
    let acme = series("acme", "pay", "POST /pay", "u1");
    let evil = series("evil", "pay", "POST /pay", "u1");
    let refund = series("acme", "pay", "POST /refund", "u1");
    let shop = series("acme", "shop", "GET /", "u1");
    store
        .write(&flush(
            vec![checkpoint(1, 10)],
            vec![
                row(&acme, 10, start, rollup(&[1.0], 0)),
                row(&evil, 10, start, rollup(&[2.0], 0)),
                row(&refund, 10, start, rollup(&[3.0], 0)),
                row(&shop, 10, start, rollup(&[4.0], 0)),
                row(&acme, 60, start - 40, rollup(&[5.0], 0)),
            ],
        ))
        .await
        .expect("writes");
    let sums = |rows: Vec<store::StoredRollup>| -> Vec<f64> {
        rows.iter().map(|r| r.rollup.values.sum()).collect()
    };
    let base = RollupQuery::new(10, start, start + 1);
    assert_eq!(sums(store.rollups(&base).await.expect("reads")).len(), 4);
    let mut q = base.clone();
    q.tenant = Some(tenant("evil"));
    assert_eq!(sums(store.rollups(&q).await.expect("reads")), vec![2.0]);
    let mut q = base.clone();
    q.tenant = Some(tenant("acme"));
    q.service = Some("pay".into());
    q.name = Some("POST /refund".into());
    assert_eq!(sums(store.rollups(&q).await.expect("reads")), vec![3.0]);
    let mut q = base.clone();
    q.kind = Some(Kind::Metric);
    assert!(store.rollups(&q).await.expect("reads").is_empty());
    let mut q = base.clone();
    q.service = Some("pay' OR '1'='1".into());
    assert!(store.rollups(&q).await.expect("reads").is_empty());
    let mut q = base.clone();
    q.source = Some(("vigil.otlp.traces".into(), 3));
    assert_eq!(store.rollups(&q).await.expect("reads").len(), 4);
    q.source = Some(("vigil.otlp.traces".into(), 2));
    assert!(store.rollups(&q).await.expect("reads").is_empty());
    let minute = RollupQuery::new(60, start - 40, start);
    assert_eq!(
        sums(store.rollups(&minute).await.expect("reads")),
        vec![5.0]
    );
}

async fn rollups_merge_by_group_and_step(backend: Backend) {
    let Some(store) = open(backend).await else {
        return;
    };
    let start = NOW - NOW % 60 - 120;
    let u1 = series("acme", "pay", "POST /pay", "u1");
    let u2 = series("acme", "pay", "POST /pay", "u2");
    let refund = series("acme", "pay", "POST /refund", "u1");
    let other_service = series("acme", "ledger", "POST /pay", "u1");
    let other_tenant = series("evil", "pay", "POST /pay", "u1");
    let mut late = row(&u1, 10, start + 10, rollup(&[1000.0], 1));
    late.correction = true;
    store
        .write(&flush(
            vec![checkpoint(1, 100)],
            vec![
                row(&u1, 10, start, rollup(&[1.0, 2.0], 0)),
                row(&u1, 10, start + 50, rollup(&[3.0], 1)),
                late,
                row(&u1, 10, start + 60, rollup(&[4.0, 5.0, 6.0], 0)),
                row(&u2, 10, start + 20, rollup(&[100.0, 200.0], 2)),
                row(&refund, 10, start + 70, rollup(&[7.0], 0)),
                row(&other_service, 10, start, rollup(&[9.0], 0)),
                row(&other_tenant, 10, start, rollup(&[9.0], 0)),
                row(&u1, 60, start, rollup(&[8.0], 0)),
            ],
        ))
        .await
        .expect("writes");
    let base = Aggregation {
        tenant: tenant("acme"),
        kind: Kind::Span,
        width_s: 10,
        from_s: start,
        to_s: start + 120,
        step_s: 60,
        service: Some("pay".into()),
        name: None,
        matchers: Vec::new(),
        group_by: vec!["vigil.unit".into()],
        limit: 100,
    };
    let summary = |rows: Vec<Aggregated>| -> Vec<(Vec<String>, u64, u64, u64, f64)> {
        rows.into_iter()
            .map(|a| {
                let values = &a.rollup.values;
                let max = values.max().unwrap_or(f64::NAN);
                (a.group, a.start_s, values.count(), a.rollup.errors, max)
            })
            .collect()
    };
    let by_unit = store.aggregate(&base).await.expect("aggregates");
    let p50 = by_unit[0].rollup.values.quantile(0.5).expect("values");
    assert!((p50 - 2.0).abs() <= 2.0 * 0.0055, "merged p50 {p50}");
    assert_eq!(
        summary(by_unit),
        vec![
            (vec!["u1".into()], start, 4, 2, 1000.0),
            (vec!["u1".into()], start + 60, 4, 0, 7.0),
            (vec!["u2".into()], start, 2, 2, 200.0),
        ]
    );

    let mut query = base.clone();
    query.group_by = vec!["name".into(), "service.name".into()];
    query.service = None;
    query.step_s = 120;
    query.matchers = vec![
        Matcher {
            key: "vigil.unit".into(),
            value: "u2".into(),
            equal: false,
        },
        Matcher {
            key: "http.route".into(),
            value: "/pay?x='; DROP TABLE rollups; --".into(),
            equal: true,
        },
    ];
    assert_eq!(
        summary(store.aggregate(&query).await.expect("aggregates")),
        vec![
            (vec!["POST /pay".into(), "ledger".into()], start, 1, 0, 9.0),
            (vec!["POST /pay".into(), "pay".into()], start, 7, 2, 1000.0),
            (vec!["POST /refund".into(), "pay".into()], start, 1, 0, 7.0),
        ]
    );
    query.matchers[1].value = "' OR 1=1 --".into();
    assert!(
        store
            .aggregate(&query)
            .await
            .expect("aggregates")
            .is_empty()
    );

    let mut query = base.clone();
    query.group_by = Vec::new();
    query.name = Some("POST /refund".into());
    assert_eq!(
        summary(store.aggregate(&query).await.expect("aggregates")),
        vec![(Vec::new(), start + 60, 1, 0, 7.0)]
    );
    query.name = None;
    query.width_s = 60;
    assert_eq!(
        summary(store.aggregate(&query).await.expect("aggregates")),
        vec![(Vec::new(), start, 1, 0, 8.0)],
        "one width at a time"
    );

    let mut query = base.clone();
    query.limit = 2;
    assert_eq!(store.aggregate(&query).await.expect("aggregates").len(), 2);
    query.tenant = tenant("nobody");
    assert!(
        store
            .aggregate(&query)
            .await
            .expect("aggregates")
            .is_empty()
    );
}

fn span(trace: &str, id: &str, parent: &str, start_ns: u64) -> SpanRecord {
    SpanRecord {
        tenant: tenant("acme"),
        trace_id: trace.into(),
        span_id: id.into(),
        parent_span_id: parent.into(),
        service: "pay".into(),
        name: format!("op {id}"),
        kind: "server".into(),
        start_ns,
        duration_ns: 1_500_000,
        status_code: 2,
        status_message: "card declined".into(),
        attributes: vec![("http.route".into(), "/pay".into())],
    }
}

async fn spans_are_kept_once_and_found_by_trace(backend: Backend) {
    let Some(store) = open(backend).await else {
        return;
    };
    let trace = "0af7651916cd43dd8448eb211c80319c";
    let start = NOW * 1_000_000_000;
    let root = span(trace, "b7ad6b7169203331", "", start);
    let child = span(trace, "00f067aa0ba902b7", "b7ad6b7169203331", start + 10);
    let elsewhere = span(
        "1af7651916cd43dd8448eb211c80319c",
        "00f067aa0ba902b8",
        "",
        start,
    );
    store
        .write_spans(&[child.clone(), root.clone(), elsewhere])
        .await
        .expect("writes");
    store
        .write_spans(std::slice::from_ref(&root))
        .await
        .expect("writes again");
    let spans = store.trace(&tenant("acme"), trace).await.expect("reads");
    assert_eq!(spans, vec![root.clone(), child]);
    let mut roots = SpanQuery::new(tenant("acme"), start, start + 100);
    roots.root_only = true;
    roots.service = Some("pay".into());
    let found = store.search_spans(&roots).await.expect("searches");
    assert_eq!(
        found.iter().map(|s| s.span_id.as_str()).collect::<Vec<_>>(),
        vec!["b7ad6b7169203331", "00f067aa0ba902b8"],
        "roots only, newest first then by span id (descending)"
    );
    assert!(
        store
            .trace(&tenant("evil"), trace)
            .await
            .expect("reads")
            .is_empty()
    );
}

/// Twelve spans a second apart, newest last: services pay and refund in
/// turn, durations 1..=12 ms, every third failed, routes /a and /b in turn.
fn searchable_spans() -> Vec<SpanRecord> {
    (0..12u64)
        .map(|i| {
            let mut s = span(
                &format!("{i:032x}"),
                &format!("{i:016x}"),
                "",
                (NOW + i) * 1_000_000_000,
            );
            s.service = if i % 2 == 0 { "pay" } else { "refund" }.into();
            s.name = if i < 6 { "POST /pay" } else { "GET /order" }.into();
            s.duration_ns = (i + 1) * 1_000_000;
            s.status_code = if i % 3 == 0 { 2 } else { 0 };
            let route = if i % 2 == 0 { "/a" } else { "/b" };
            s.attributes = vec![
                ("http.route".into(), route.into()),
                ("vigil.unit".into(), format!("u{}", i % 4)),
            ];
            s
        })
        .collect()
}

async fn spans_are_found_by_every_filter_and_paged(backend: Backend) {
    let Some(store) = open(backend).await else {
        return;
    };
    let spans = searchable_spans();
    store.write_spans(&spans).await.expect("writes");
    store.write_spans(&spans[..3]).await.expect("writes again");
    let ids = |found: Vec<SpanRecord>| -> Vec<u64> {
        found
            .iter()
            .map(|s| u64::from_str_radix(&s.span_id, 16).expect("hex id"))
            .collect()
    };
    let all = SpanQuery::new(tenant("acme"), NOW * 1_000_000_000, u64::MAX);
    let found = store.search_spans(&all).await.expect("searches");
    assert_eq!(found.first(), spans.last(), "newest first, as written");
    assert_eq!(ids(found), (0..12).rev().collect::<Vec<_>>());

    let mut query = all.clone();
    query.service = Some("pay".into());
    query.name = Some("POST /pay".into());
    assert_eq!(
        ids(store.search_spans(&query).await.expect("searches")),
        vec![4, 2, 0]
    );

    let mut query = all.clone();
    query.min_duration_ns = Some(10_000_000);
    query.error = Some(true);
    assert_eq!(
        ids(store.search_spans(&query).await.expect("searches")),
        vec![9]
    );
    query.error = Some(false);
    assert_eq!(
        ids(store.search_spans(&query).await.expect("searches")),
        vec![11, 10]
    );

    let mut query = all.clone();
    query.attributes = vec![
        ("http.route".into(), "/a".into()),
        ("vigil.unit".into(), "u2".into()),
    ];
    assert_eq!(
        ids(store.search_spans(&query).await.expect("searches")),
        vec![10, 6, 2]
    );
    query
        .attributes
        .push(("http.route".into(), "' OR 1=1 --".into()));
    assert!(
        store
            .search_spans(&query)
            .await
            .expect("searches")
            .is_empty()
    );

    // Pages of five, each continuing after the last span of the one before.
    let mut query = all.clone();
    query.limit = 5;
    query.from_ns = (NOW + 1) * 1_000_000_000;
    query.to_ns = (NOW + 11) * 1_000_000_000;
    let mut pages = Vec::new();
    loop {
        let page = store.search_spans(&query).await.expect("searches");
        let Some(last) = page.last() else { break };
        query.before = Some((last.start_ns, last.span_id.clone()));
        pages.push(ids(page));
    }
    assert_eq!(pages, vec![vec![10, 9, 8, 7, 6], vec![5, 4, 3, 2, 1]]);

    let mut other = all.clone();
    other.tenant = tenant("evil");
    assert!(
        store
            .search_spans(&other)
            .await
            .expect("searches")
            .is_empty()
    );
}

fn event(kind: EventKind, id: u64, time_s: u64, service: &str, fingerprint: &str) -> EventRecord {
    EventRecord {
        tenant: tenant("acme"),
        kind,
        id,
        time_ns: time_s * 1_000_000_000 + id,
        service: service.into(),
        name: "SIGSEGV".into(),
        body: format!("event {id} with 'quotes' and \\ backslashes"),
        trace_id: if kind == EventKind::Log {
            "0af7651916cd43dd8448eb211c80319c".into()
        } else {
            String::new()
        },
        span_id: String::new(),
        fingerprint: fingerprint.into(),
        attributes: vec![("app.version".into(), "2.1.0".into())],
    }
}

async fn events_are_kept_once_and_found_by_every_filter(backend: Backend) {
    let Some(store) = open(backend).await else {
        return;
    };
    let crashes: Vec<EventRecord> = (0..5)
        .map(|i| {
            let app = if i < 3 { "wallet" } else { "shop" };
            let fingerprint = if i % 2 == 0 { "f00d" } else { "beef" };
            event(EventKind::Crash, i, NOW + i, app, fingerprint)
        })
        .collect();
    let log = event(EventKind::Log, 0, NOW, "pay", "");
    store.write_events(&crashes).await.expect("writes");
    store
        .write_events(&[crashes[1].clone(), log.clone()])
        .await
        .expect("writes again");

    let from = NOW * 1_000_000_000;
    let to = (NOW + 60) * 1_000_000_000;
    let all = EventQuery::new(tenant("acme"), EventKind::Crash, from, to);
    let found = store.events(&all).await.expect("reads");
    // Newest first, each once, exactly as written.
    let expected: Vec<EventRecord> = crashes.iter().rev().cloned().collect();
    assert_eq!(found, expected);

    let mut wallet = all.clone();
    wallet.service = Some("wallet".into());
    wallet.fingerprint = Some("f00d".into());
    let ids: Vec<u64> = store
        .events(&wallet)
        .await
        .expect("reads")
        .iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(ids, vec![2, 0]);

    let mut window = all.clone();
    window.from_ns = (NOW + 1) * 1_000_000_000;
    window.to_ns = (NOW + 3) * 1_000_000_000;
    window.limit = 1;
    let ids: Vec<u64> = store
        .events(&window)
        .await
        .expect("reads")
        .iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(ids, vec![2]);

    let mut injected = all.clone();
    injected.service = Some("wallet' OR '1'='1".into());
    assert!(store.events(&injected).await.expect("reads").is_empty());

    let mut logs = EventQuery::new(tenant("acme"), EventKind::Log, from, u64::MAX);
    logs.trace_id = Some(log.trace_id.clone());
    assert_eq!(store.events(&logs).await.expect("reads"), vec![log]);
    let other = EventQuery::new(tenant("evil"), EventKind::Crash, 0, u64::MAX);
    assert!(store.events(&other).await.expect("reads").is_empty());
}

async fn the_catalogue_widens_first_and_last_seen(backend: Backend) {
    let Some(store) = open(backend).await else {
        return;
    };
    let pay = series("acme", "pay", "POST /pay", "u1");
    let shop = series("acme", "shop", "GET /", "u1");
    let entry = |series: &Arc<SeriesKey>, first, last| CatalogueEntry {
        series: (**series).clone(),
        first_seen_s: first,
        last_seen_s: last,
    };
    store
        .record_series(&[entry(&pay, 100, 200), entry(&shop, 50, 60)])
        .await
        .expect("records");
    store
        .record_series(&[entry(&pay, 150, 300)])
        .await
        .expect("records");
    let all = store
        .series(&tenant("acme"), None, None)
        .await
        .expect("reads");
    assert_eq!(all, vec![entry(&pay, 100, 300), entry(&shop, 50, 60)]);
    let pay_only = store
        .series(&tenant("acme"), Some(Kind::Span), Some("pay"))
        .await
        .expect("reads");
    assert_eq!(pay_only, vec![entry(&pay, 100, 300)]);
    assert!(
        store
            .series(&tenant("acme"), Some(Kind::Metric), None)
            .await
            .expect("reads")
            .is_empty()
    );
    assert!(
        store
            .series(&tenant("evil"), None, None)
            .await
            .expect("reads")
            .is_empty()
    );
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

fn state(tenant_name: &str, key: &str, version: u64, body: &str, deleted: bool) -> StateRecord {
    StateRecord {
        collection: "silence".into(),
        tenant: tenant(tenant_name),
        key: key.into(),
        version,
        body: body.into(),
        deleted,
    }
}

async fn state_keeps_the_newest_version_of_each_key(backend: Backend) {
    let Some(store) = open(backend).await else {
        return;
    };
    store
        .put_state(&[
            state("acme", "s1", 1, r#"{"v":1}"#, false),
            state("acme", "s2", 1, r#"{"v":"it's"}"#, false),
            state("evil", "s1", 1, r#"{"v":"evil"}"#, false),
        ])
        .await
        .expect("writes");
    // A newer version replaces, an older one written late does not, a
    // deletion hides the key; other collections are apart.
    store
        .put_state(&[state("acme", "s1", 3, r#"{"v":3}"#, false)])
        .await
        .expect("writes");
    store
        .put_state(&[
            state("acme", "s1", 2, r#"{"v":2}"#, false),
            state("acme", "s2", 2, "", true),
            StateRecord {
                collection: "alert".into(),
                ..state("acme", "a1", 1, "{}", false)
            },
        ])
        .await
        .expect("writes");
    let read: Vec<(String, String, u64, String)> = store
        .state("silence")
        .await
        .expect("reads")
        .into_iter()
        .map(|r| (r.tenant.to_string(), r.key, r.version, r.body))
        .collect();
    assert_eq!(
        read,
        vec![
            ("acme".into(), "s1".into(), 3, r#"{"v":3}"#.into()),
            ("evil".into(), "s1".into(), 1, r#"{"v":"evil"}"#.into()),
        ]
    );
    assert_eq!(store.state("alert").await.expect("reads").len(), 1);
    // A deleted key comes back when written again with a greater version.
    store
        .put_state(&[state("acme", "s2", 5, r#"{"v":5}"#, false)])
        .await
        .expect("writes");
    assert_eq!(store.state("silence").await.expect("reads").len(), 3);
}

async fn history_is_read_newest_first_by_rule_and_subject(backend: Backend) {
    let Some(store) = open(backend).await else {
        return;
    };
    let entry = |tenant_name: &str, time_ms: u64, rule: &str, subject: &str| HistoryEntry {
        tenant: tenant(tenant_name),
        time_ms,
        kind: "transition".into(),
        rule: rule.into(),
        subject: subject.into(),
        body: format!(r#"{{"at":{time_ms}}}"#),
    };
    let base = NOW * 1_000;
    store
        .append_history(&[
            entry("acme", base, "latency", "f1"),
            entry("acme", base + 10, "latency", "f2"),
            entry("acme", base + 20, "errors", "f3"),
            entry("evil", base + 30, "latency", "f1"),
        ])
        .await
        .expect("writes");
    let query = |rule: Option<&str>, subject: Option<&str>, limit: usize| HistoryQuery {
        tenant: tenant("acme"),
        from_ms: base,
        to_ms: base + 1_000,
        rule: rule.map(str::to_owned),
        subject: subject.map(str::to_owned),
        limit,
    };
    let times =
        |entries: Vec<HistoryEntry>| entries.iter().map(|e| e.time_ms - base).collect::<Vec<_>>();
    let all = store.history(&query(None, None, 10)).await.expect("reads");
    assert_eq!(all[0].body, format!(r#"{{"at":{}}}"#, base + 20));
    assert_eq!(times(all), vec![20, 10, 0]);
    let latency = store.history(&query(Some("latency"), None, 10)).await;
    assert_eq!(times(latency.expect("reads")), vec![10, 0]);
    let f1 = store.history(&query(None, Some("f1"), 10)).await;
    assert_eq!(times(f1.expect("reads")), vec![0]);
    let newest = store.history(&query(None, None, 1)).await;
    assert_eq!(times(newest.expect("reads")), vec![20]);
}

on_both_backends!(
    state_keeps_the_newest_version_of_each_key,
    history_is_read_newest_first_by_rule_and_subject,
    migrations_are_applied_once,
    partial_and_correction_rows_merge_into_one_window,
    queries_select_by_every_filter,
    spans_are_kept_once_and_found_by_trace,
    events_are_kept_once_and_found_by_every_filter,
    spans_are_found_by_every_filter_and_paged,
    rollups_merge_by_group_and_step,
    the_catalogue_widens_first_and_last_seen,
    retention_drops_whole_old_days,
);
