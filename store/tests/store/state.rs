//! The alerter's keyed state and its history.

use vigil_domain::alert::Collection;
use vigil_store::{HistoryEntry, HistoryQuery, StateRecord};
use vigil_testing::{Backend, on_both_backends};

use crate::{NOW, open, tenant};

pub fn state(tenant_name: &str, key: &str, version: u64, body: &str, deleted: bool) -> StateRecord {
    StateRecord {
        collection: Collection::Silence,
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
                collection: Collection::Alert,
                ..state("acme", "a1", 1, "{}", false)
            },
        ])
        .await
        .expect("writes");
    let read: Vec<(String, String, u64, String)> = store
        .state(Collection::Silence)
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
    assert_eq!(
        store.state(Collection::Alert).await.expect("reads").len(),
        1
    );
    // A deleted key comes back when written again with a greater version.
    store
        .put_state(&[state("acme", "s2", 5, r#"{"v":5}"#, false)])
        .await
        .expect("writes");
    assert_eq!(
        store.state(Collection::Silence).await.expect("reads").len(),
        3
    );
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

/// One holder at a time; a lease that ran out or was released goes to the
/// next who asks.
async fn a_lease_has_one_holder_until_it_runs_out(backend: Backend) {
    let Some(store) = open(backend).await else {
        return;
    };
    let t = NOW * 1_000;
    let lease = |holder: &'static str, at: u64| {
        let store = &store;
        async move {
            store
                .lease("alerter", holder, at, 10_000)
                .await
                .expect("lease")
        }
    };
    assert!(lease("a", t).await, "a free lease is taken");
    assert!(!lease("b", t + 1_000).await, "held by a");
    assert!(lease("a", t + 5_000).await, "renewed until t + 15 s");
    assert!(!lease("b", t + 14_000).await, "still held by a");
    assert!(lease("b", t + 15_000).await, "run out: taken over");
    assert!(!lease("a", t + 16_000).await, "a lost it");
    store.release("alerter", "a").await.expect("release");
    assert!(!lease("a", t + 17_000).await, "only the holder releases");
    store.release("alerter", "b").await.expect("release");
    assert!(lease("a", t + 18_000).await, "released: taken at once");
    assert!(
        store
            .lease("another", "b", t + 18_000, 10_000)
            .await
            .expect("lease"),
        "leases are by name"
    );
}

on_both_backends!(
    a_lease_has_one_holder_until_it_runs_out,
    state_keeps_the_newest_version_of_each_key,
    history_is_read_newest_first_by_rule_and_subject,
);
