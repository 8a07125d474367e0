//! Rollups, the catalogue and checkpoints: exactly-once flushes, merges, filters, groups.

use std::sync::Arc;

use vigil_domain::distribution::Distribution;
use vigil_domain::model::{Checkpoint, CumulativeState, Kind, Rollup, RollupRow, SeriesKey};
use vigil_domain::signal::Matcher;
use vigil_store::{Aggregated, Aggregation, CatalogueEntry, Flush, RollupQuery, StoredRollup};
use vigil_testing::{Backend, on_both_backends};

use crate::{NOW, open, tenant};

pub fn series(tenant_name: &str, service: &str, name: &str, unit: &str) -> Arc<SeriesKey> {
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

pub fn rollup(values: &[f64], errors: u64) -> Rollup {
    let mut rollup = Rollup::default();
    for &value in values {
        rollup.record(value, false).expect("finite");
    }
    rollup.errors = errors;
    rollup
}

pub fn row(series: &Arc<SeriesKey>, width_s: u32, start_s: u64, rollup: Rollup) -> RollupRow {
    RollupRow {
        series: Arc::clone(series),
        partition: 3,
        width_s,
        start_s,
        rollup,
        correction: false,
    }
}

pub fn checkpoint(seq: u64, next_offset: i64) -> Checkpoint {
    Checkpoint {
        seq,
        partition: 3,
        next_offset,
        watermark_s: NOW + seq,
    }
}

pub fn flush(checkpoints: Vec<Checkpoint>, rows: Vec<RollupRow>) -> Flush {
    Flush {
        source: "vigil.otlp.traces".into(),
        time_s: NOW,
        checkpoints,
        rows,
        cumulative: Vec::new(),
    }
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
    let sums = |rows: Vec<StoredRollup>| -> Vec<f64> {
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
        buckets: true,
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
            name: "vigil.unit".into(),
            value: "u2".into(),
            is_equal: false,
        },
        Matcher::equal("http.route", "/pay?x='; DROP TABLE rollups; --"),
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

/// The totals of a service and of a tenant merge like any series, whether
/// the store merges their buckets itself or hands them over (a service's
/// totals), and a read without buckets keeps every statistic but quantiles.
async fn totals_and_summaries_merge_alike(backend: Backend) {
    let Some(store) = open(backend).await else {
        return;
    };
    let start = NOW - NOW % 60 - 120;
    let span = |service: &str, unit: &str| {
        SeriesKey::new(
            tenant("acme"),
            Kind::Span,
            service,
            "POST /pay",
            vec![
                ("span.kind".into(), "server".into()),
                ("vigil.unit".into(), unit.into()),
            ],
        )
    };
    let service = Arc::new(vigil_domain::model::service_total(&span("pay", "u1")));
    let whole = Arc::new(vigil_domain::model::tenant_total(&span("pay", "u1")));
    let other = Arc::new(vigil_domain::model::tenant_total(&span("ledger", "u2")));
    let (first, second) = ([1.0, 2.0, 3.0, 40.0], [2.0, 3.0, 500.0]);
    // Each total in two partitions' rows of one window, as two aggregators
    // write them.
    let mut rows = Vec::new();
    for total in [&service, &whole] {
        rows.push(row(total, 10, start, rollup(&first, 1)));
        let mut other_partition = row(total, 10, start + 5, rollup(&second, 2));
        other_partition.partition = 4;
        rows.push(other_partition);
    }
    rows.push(row(&other, 10, start, rollup(&[7.0], 0)));
    store
        .write(&flush(vec![checkpoint(1, 100)], rows))
        .await
        .expect("writes");
    let all = rollup(&[first.as_slice(), second.as_slice()].concat(), 3);
    let read = |kind: Kind, service: Option<&str>, buckets: bool| Aggregation {
        tenant: tenant("acme"),
        kind,
        width_s: 10,
        from_s: start,
        to_s: start + 60,
        step_s: 60,
        service: service.map(str::to_owned),
        name: None,
        matchers: Vec::new(),
        group_by: vec!["vigil.unit".into()],
        buckets,
        limit: 100,
    };
    for query in [
        read(Kind::Service, Some("pay"), true),
        read(Kind::Tenant, None, true),
    ] {
        let merged = store.aggregate(&query).await.expect("aggregates");
        let groups: Vec<Vec<String>> = merged.iter().map(|a| a.group.clone()).collect();
        let mut expected = vec![vec!["u1".to_owned()]];
        if query.kind == Kind::Tenant {
            expected.push(vec!["u2".to_owned()]);
        }
        assert_eq!(groups, expected, "{:?}", query.kind);
        let u1 = &merged[0].rollup;
        assert_eq!(u1.values.to_buckets(), all.values.to_buckets());
        assert_eq!(
            (u1.values.count(), u1.values.sum(), u1.errors),
            (7, 551.0, 3)
        );
        assert_eq!(u1.values.quantile(0.5), all.values.quantile(0.5));
    }
    let summaries = store
        .aggregate(&read(Kind::Service, Some("pay"), false))
        .await
        .expect("aggregates");
    let u1 = &summaries[0].rollup;
    assert_eq!(
        (u1.values.count(), u1.values.sum(), u1.errors),
        (7, 551.0, 3)
    );
    assert_eq!((u1.values.min(), u1.values.max()), (Some(1.0), Some(500.0)));
    assert_eq!(u1.values.quantile(0.5), None);
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

fn state(series: u64, offset: i64, time_ns: u64, state: &[u8]) -> CumulativeState {
    CumulativeState {
        partition: 3,
        series,
        offset,
        time_ns,
        state: state.to_vec(),
    }
}

/// The latest state of each series before the checkpoint's offset and not
/// older than asked; states past the offset (a flush that failed after
/// writing them) are not used until a checkpoint covers them.
async fn cumulative_state_is_read_back_as_of_the_checkpoint(backend: Backend) {
    let Some(store) = open(backend).await else {
        return;
    };
    let mut first = flush(vec![checkpoint(1, 100)], Vec::new());
    first.cumulative = vec![
        state(1, 10, 1_000, b"one-a"),
        state(2, 11, 1_100, b"two-a"),
        state(3, 12, 500, b"three-a\x00\xff"),
    ];
    store.write(&first).await.expect("first flush");
    let mut second = flush(vec![checkpoint(2, 200)], Vec::new());
    second.cumulative = vec![
        state(1, 150, 2_000, b"one-b"),
        state(2, 160, 2_100, b"two-b"),
    ];
    store.write(&second).await.expect("second flush");
    let mut other_partition = flush(Vec::new(), Vec::new());
    other_partition.cumulative = vec![CumulativeState {
        partition: 4,
        ..state(1, 150, 2_000, b"elsewhere")
    }];
    store.write(&other_partition).await.expect("third flush");

    let read = |before, since| {
        let store = &store;
        async move {
            let mut states = store
                .cumulative("vigil.otlp.traces", 3, before, since)
                .await
                .expect("reads");
            states.sort_by_key(|s| s.series);
            states
        }
    };
    assert_eq!(
        read(200, 0).await,
        vec![
            state(1, 150, 2_000, b"one-b"),
            state(2, 160, 2_100, b"two-b"),
            state(3, 12, 500, b"three-a\x00\xff"),
        ]
    );
    assert_eq!(
        read(200, 1_000).await,
        vec![
            state(1, 150, 2_000, b"one-b"),
            state(2, 160, 2_100, b"two-b")
        ],
        "the series unseen since before 1,000 ns is forgotten"
    );
    if backend == Backend::Kafka {
        // ClickHouse keeps every state: one before the offset is the answer.
        assert_eq!(
            read(155, 0).await,
            vec![
                state(1, 150, 2_000, b"one-b"),
                state(2, 11, 1_100, b"two-a"),
                state(3, 12, 500, b"three-a\x00\xff"),
            ]
        );
    }
}

/// The users of `range` (`user-{i}`) as a rollup of one session each.
fn sessions_of(range: std::ops::Range<u64>) -> Rollup {
    let mut rollup = Rollup::default();
    for i in range {
        rollup.record(1.0, false).expect("finite");
        rollup.users.insert(&format!("user-{i}"));
    }
    rollup
}

async fn users_merge_with_their_rollups(backend: Backend) {
    let Some(store) = open(backend).await else {
        return;
    };
    let start = NOW - NOW % 60 - 120;
    let app = |version: &str| {
        Arc::new(SeriesKey::new(
            tenant("acme"),
            Kind::Client,
            "wallet",
            "client.sessions",
            vec![("app.version".into(), version.into())],
        ))
    };
    let (old, new) = (app("1.0"), app("1.1"));
    // Sparse registers, dense ones (20,000 users), a correction of the same
    // window, and a row naming no user.
    let mut late = row(&old, 10, start, sessions_of(1_000..21_000));
    late.correction = true;
    store
        .write(&flush(
            vec![checkpoint(1, 100)],
            vec![
                row(&old, 10, start, sessions_of(0..100)),
                late,
                row(&old, 10, start + 10, sessions_of(50..150)),
                row(&new, 10, start, sessions_of(140..160)),
                row(&new, 10, start + 20, rollup(&[1.0], 0)),
            ],
        ))
        .await
        .expect("writes");
    let union = |ranges: &[std::ops::Range<u64>]| {
        let mut all = Rollup::default();
        for range in ranges {
            all.merge(&sessions_of(range.clone()));
        }
        all.users
    };
    let mut query = RollupQuery::new(10, start, start + 10);
    query.tenant = Some(tenant("acme"));
    let rows = store.rollups(&query).await.expect("reads");
    let window = rows.iter().find(|r| r.series == *old).expect("1.0");
    assert_eq!(window.rollup.users, union(&[0..100, 1_000..21_000]));
    assert_eq!(window.rollup.values.count(), 20_100);

    let merged = store
        .aggregate(&Aggregation {
            tenant: tenant("acme"),
            kind: Kind::Client,
            width_s: 10,
            from_s: start,
            to_s: start + 60,
            step_s: 60,
            service: Some("wallet".into()),
            name: None,
            matchers: Vec::new(),
            group_by: vec!["app.version".into()],
            buckets: false,
            limit: 100,
        })
        .await
        .expect("aggregates");
    let users: Vec<(String, u64)> = merged
        .iter()
        .map(|a| (a.group[0].clone(), a.rollup.users.count()))
        .collect();
    assert_eq!(users[1], ("1.1".to_owned(), 20));
    assert_eq!(
        merged[0].rollup.users,
        union(&[0..100, 1_000..21_000, 50..150])
    );
    // 20,150 users, within the sketch's 2 %.
    assert!(users[0].1.abs_diff(20_150) <= 403, "{users:?}");
}

on_both_backends!(
    cumulative_state_is_read_back_as_of_the_checkpoint,
    users_merge_with_their_rollups,
    totals_and_summaries_merge_alike,
    partial_and_correction_rows_merge_into_one_window,
    queries_select_by_every_filter,
    rollups_merge_by_group_and_step,
    the_catalogue_widens_first_and_last_seen,
);
