//! Log records and crashes: kept once, found by every filter.

use vigil_store::{
    CrashCount, CrashDimension, CrashGroupCount, CrashQuery, CrashReach, EventKind, EventQuery,
    EventRecord,
};
use vigil_testing::{Backend, on_both_backends};

use crate::{NOW, open, tenant};

pub fn event(
    kind: EventKind,
    id: u64,
    time_s: u64,
    service: &str,
    fingerprint: &str,
) -> EventRecord {
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

/// Log records found by severity, span, attributes and text, and read in
/// pages that neither skip nor repeat a record.
async fn logs_are_searched_and_paged(backend: Backend) {
    let Some(store) = open(backend).await else {
        return;
    };
    let logs: Vec<EventRecord> = (0..7)
        .map(|i| {
            let mut log = event(EventKind::Log, i, NOW, "pay", "");
            // Two records share each time: the id orders them.
            log.time_ns = NOW * 1_000_000_000 + i / 2;
            log.name = ["error", "INFO", "Warn"][i as usize % 3].into();
            log.span_id = format!("{i:016x}");
            log.body = format!("card {i} DECLINED by the issuer");
            log.attributes = vec![("http.route".into(), format!("/r{}", i % 2))];
            log
        })
        .collect();
    store.write_events(&logs).await.expect("writes");
    let search = |edit: &dyn Fn(&mut EventQuery)| {
        let mut query = EventQuery::new(tenant("acme"), EventKind::Log, 0, u64::MAX);
        edit(&mut query);
        let store = &store;
        async move {
            store
                .events(&query)
                .await
                .expect("reads")
                .iter()
                .map(|e| e.id)
                .collect::<Vec<u64>>()
        }
    };
    assert_eq!(search(&|_| {}).await, [6, 5, 4, 3, 2, 1, 0]);
    assert_eq!(
        search(&|q| q.names = vec!["ERROR".into(), "warn".into()]).await,
        [6, 5, 3, 2, 0]
    );
    assert_eq!(
        search(&|q| q.span_id = Some(format!("{:016x}", 4))).await,
        [4]
    );
    assert_eq!(
        search(&|q| q.attributes = vec![("http.route".into(), "/r1".into())]).await,
        [5, 3, 1]
    );
    assert_eq!(
        search(&|q| q.text = Some("declined by".into())).await.len(),
        7
    );
    assert_eq!(search(&|q| q.text = Some("card 3 ".into())).await, [3]);
    assert_eq!(
        search(&|q| q.text = Some("100%".into())).await,
        Vec::<u64>::new()
    );
    // A range read from its newest end in windows (on ClickHouse): a 16 ns
    // range's first window holds record 6 only, the next the others.
    let base = NOW * 1_000_000_000;
    let narrow = |limit: usize| {
        move |q: &mut EventQuery| {
            q.from_ns = base - 12;
            q.to_ns = base + 4;
            q.limit = limit;
        }
    };
    assert_eq!(search(&narrow(3)).await, [6, 5, 4]);
    assert_eq!(search(&narrow(100)).await, [6, 5, 4, 3, 2, 1, 0]);
    // Pages of three, each after the last record of the one before.
    let mut pages = Vec::new();
    let mut before = None;
    loop {
        let mut query = EventQuery::new(tenant("acme"), EventKind::Log, 0, u64::MAX);
        query.limit = 3;
        query.before = before;
        let page = store.events(&query).await.expect("reads");
        pages.push(page.iter().map(|e| e.id).collect::<Vec<u64>>());
        match page.last() {
            Some(last) if page.len() == 3 => before = Some((last.time_ns, last.id)),
            _ => break,
        }
    }
    assert_eq!(pages, [vec![6, 5, 4], vec![3, 2, 1], vec![0]]);
}

/// A crash of the app `wallet` with its dimensions: version, session and
/// user hashes, device and kind.
fn crash(
    id: u64,
    fingerprint: &str,
    [version, session, user, device, kind]: [&str; 5],
) -> EventRecord {
    let mut crash = event(EventKind::Crash, id, NOW + id, "wallet", fingerprint);
    crash.name = if kind == "native" {
        "SIGSEGV"
    } else {
        "IllegalStateException"
    }
    .into();
    crash.body = format!("crash {id}");
    crash.attributes = [
        ("app.version", version),
        ("os.name", "android"),
        ("device.model.identifier", device),
        ("crash.kind", kind),
        ("crash.foreground", "true"),
        ("session.id_hash", session),
        ("user.id_hash", user),
    ]
    .into_iter()
    .filter(|(_, value)| !value.is_empty())
    .map(|(key, value)| (key.to_owned(), value.to_owned()))
    .collect();
    crash
}

/// Crash groups count each crash once (a replayed one too), sessions and
/// users by distinct hash (none for a crash without one), and honour every
/// filter.
async fn crash_groups_count_crashes_sessions_and_users(backend: Backend) {
    let Some(store) = open(backend).await else {
        return;
    };
    let crashes = vec![
        crash(0, "f00d", ["2.0", "5e55", "a1", "A", "managed"]),
        crash(1, "f00d", ["2.1", "5e56", "a1", "B", "managed"]),
        crash(2, "f00d", ["2.1", "5e56", "a1", "B", "managed"]),
        crash(3, "f00d", ["2.1", "", "", "A", "managed"]),
        crash(4, "beef", ["2.1", "5e57", "a2", "A", "native"]),
        crash(5, "beef", ["2.1", "5e58", "a2", "A", "native"]),
    ];
    let mut other_app = crash(6, "f00d", ["2.1", "5e59", "a3", "A", "managed"]);
    other_app.service = "shop".into();
    store.write_events(&crashes).await.expect("writes");
    store
        .write_events(&[crashes[1].clone(), other_app])
        .await
        .expect("writes again");

    let ns = |s: u64| s * 1_000_000_000;
    let all = CrashQuery {
        tenant: tenant("acme"),
        app: "wallet".into(),
        from_ns: ns(NOW),
        to_ns: ns(NOW + 60),
        filters: Vec::new(),
        fingerprints: Vec::new(),
    };
    let group = |fingerprint: &str, events: u64, first: u64, last: u64| CrashGroupCount {
        fingerprint: fingerprint.into(),
        exception_type: crashes[last as usize].name.clone(),
        message: format!("crash {last}"),
        events,
        first_ns: ns(NOW + first) + first,
        last_ns: ns(NOW + last) + last,
    };
    let reach = |key: &str, sessions: u64, users: u64, without_session: u64| CrashReach {
        key: key.into(),
        sessions,
        users,
        without_session,
    };
    assert_eq!(
        store.crash_groups(&all).await.expect("reads"),
        [group("f00d", 4, 0, 3), group("beef", 2, 4, 5)]
    );
    assert_eq!(
        store.crash_reach(&all, None).await.expect("reads"),
        [reach("beef", 2, 1, 0), reach("f00d", 2, 1, 1)]
    );
    assert_eq!(
        store
            .crash_reach(&all, Some(CrashDimension::Version))
            .await
            .expect("reads"),
        [reach("2.0", 1, 1, 0), reach("2.1", 3, 2, 1)]
    );

    let mut filtered = all.clone();
    filtered.filters = vec![(CrashDimension::Version, "2.1".into())];
    filtered.from_ns = ns(NOW + 2);
    assert_eq!(
        store.crash_groups(&filtered).await.expect("reads"),
        [group("beef", 2, 4, 5), group("f00d", 2, 2, 3)]
    );
    filtered.fingerprints = vec!["f00d".into()];
    assert_eq!(
        store.crash_reach(&filtered, None).await.expect("reads"),
        [reach("f00d", 1, 1, 1)]
    );
    let mut native = all.clone();
    native.filters = vec![
        (CrashDimension::Kind, "native".into()),
        (CrashDimension::Device, "A".into()),
    ];
    native.fingerprints = vec!["beef".into(), "cafe".into()];
    assert_eq!(
        store.crash_groups(&native).await.expect("reads"),
        [group("beef", 2, 4, 5)]
    );
    let mut injected = all.clone();
    injected.filters = vec![(CrashDimension::Os, "android' OR '1'='1".into())];
    assert!(
        store
            .crash_groups(&injected)
            .await
            .expect("reads")
            .is_empty()
    );

    let count = |fingerprint: &str, value: &str, events: u64, first: u64, last: u64| CrashCount {
        fingerprint: fingerprint.into(),
        value: value.into(),
        events,
        first_ns: ns(NOW + first) + first,
        last_ns: ns(NOW + last) + last,
    };
    assert_eq!(
        store
            .crash_counts(&all, CrashDimension::Version)
            .await
            .expect("reads"),
        [
            count("beef", "2.1", 2, 4, 5),
            count("f00d", "2.1", 3, 1, 3),
            count("f00d", "2.0", 1, 0, 0),
        ]
    );
    let mut f00d = all.clone();
    f00d.fingerprints = vec!["f00d".into()];
    assert_eq!(
        store
            .crash_counts(&f00d, CrashDimension::Device)
            .await
            .expect("reads"),
        [count("f00d", "A", 2, 0, 3), count("f00d", "B", 2, 1, 2)]
    );
    let mut other = all.clone();
    other.tenant = tenant("evil");
    assert!(store.crash_groups(&other).await.expect("reads").is_empty());
}

on_both_backends!(
    events_are_kept_once_and_found_by_every_filter,
    logs_are_searched_and_paged,
    crash_groups_count_crashes_sessions_and_users,
);
