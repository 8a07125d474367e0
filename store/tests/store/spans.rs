//! Raw spans: kept once, found by trace and by every filter, paged.

use vigil_store::{SpanQuery, SpanRecord};
use vigil_testing::{Backend, on_both_backends};

use crate::{NOW, open, tenant};

pub fn span(trace: &str, id: &str, parent: &str, start_ns: u64) -> SpanRecord {
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
pub fn searchable_spans() -> Vec<SpanRecord> {
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

on_both_backends!(
    spans_are_kept_once_and_found_by_trace,
    spans_are_found_by_every_filter_and_paged,
);
