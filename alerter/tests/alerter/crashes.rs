//! `crash_group` rules over crashes in the real store: a group back in a
//! new version pages by volume, a new one by velocity (of users, or of
//! sessions for an app naming no user), an ongoing one not.

use super::*;
use vigil_store::{EventKind, EventRecord};

/// A crash of `app` in `version`, group `fingerprint`, session `session`
/// of user `user` (none: empty), `ago_s` seconds ago.
fn crash(
    id: u64,
    (app, fingerprint, version): (&str, &str, &str),
    (session, user): (u64, &str),
    ago_s: u64,
) -> EventRecord {
    let mut attributes = vec![
        ("app.version".into(), version.into()),
        ("session.id_hash".into(), format!("{session:032x}")),
    ];
    if !user.is_empty() {
        attributes.push(("user.id_hash".into(), user.into()));
    }
    EventRecord {
        tenant: TenantId::parse("acme").unwrap(),
        kind: EventKind::Crash,
        id,
        time_ns: (now_s() - ago_s) * 1_000_000_000,
        service: app.into(),
        name: format!("{fingerprint}-type"),
        body: String::new(),
        trace_id: String::new(),
        span_id: String::new(),
        fingerprint: fingerprint.into(),
        attributes,
    }
}

/// A 10 s row of `app`'s `client.sessions` in `version`: `n` sessions of
/// `users` (none: no user named).
fn sessions((app, version): (&str, &str), start_s: u64, n: u64, users: &[&str]) -> RollupRow {
    let mut rollup = Rollup::default();
    for _ in 0..n {
        rollup.record(1.0, false).unwrap();
    }
    for user in users {
        rollup.users.insert(user);
    }
    ten_s_row(
        (Kind::Client, app, "client.sessions"),
        vec![("app.version".into(), version.into())],
        start_s,
        rollup,
    )
}

async fn crash_groups_page_by_volume_and_by_velocity(backend: Backend) {
    let stop = Shutdown::new();
    let (receiver, base) = receiver(stop.clone()).await;
    let Some(s) = setup(backend, &base).await else {
        return;
    };
    std::fs::write(
        s.folder.join("rules.yaml"),
        format!(
            "tenant: acme
rules:
  - {{name: wallet-crashes, type: crash_group, service: wallet, window: 10m, min_count: 3}}
  - {{name: wallet-velocity, type: crash_group, service: wallet, window: 10m, states: [], velocity: 0.4}}
  - {{name: kiosk-velocity, type: crash_group, service: kiosk, window: 10m, states: [], velocity: 0.4}}
receivers:
  - {{name: oncall, url: '{base}/hook', secret: {SECRET}}}
route:
  receiver: oncall
  group_by: [alertname, crash.fingerprint]
  group_wait: 0s
"
        ),
    )
    .unwrap();
    let wallet = |fingerprint, version| ("wallet", fingerprint, version);
    let crashes = vec![
        // 1.2's 10 sessions are of 5 users, a to e.
        // Back in 1.2 after 1.1 ran without it: regressed, 3 crashes in
        // one session, of one user (0.2 of 1.2's users, under the velocity).
        crash(1, wallet("old-npe", "1.0"), (1, "a"), 3_600),
        crash(2, wallet("old-npe", "1.2"), (2, "a"), 120),
        crash(3, wallet("old-npe", "1.2"), (2, "a"), 110),
        crash(4, wallet("old-npe", "1.2"), (2, "a"), 100),
        // New in 1.2, two crashes of two users: 0.4 of its users (0.2 of
        // its sessions).
        crash(5, wallet("new-oom", "1.2"), (3, "b"), 90),
        crash(6, wallet("new-oom", "1.2"), (4, "c"), 80),
        // In 1.1 and 1.2: ongoing, however many.
        crash(7, wallet("anr-sync", "1.1"), (5, "d"), 300),
        crash(8, wallet("anr-sync", "1.2"), (6, "d"), 70),
        crash(9, wallet("anr-sync", "1.2"), (6, "d"), 60),
        crash(10, wallet("anr-sync", "1.2"), (6, "d"), 50),
        // Kiosk names no user: two of its 4 sessions crash, 0.5.
        crash(11, ("kiosk", "hang", "7"), (7, ""), 40),
        crash(12, ("kiosk", "hang", "7"), (8, ""), 30),
    ];
    s.store.write_events(&crashes).await.unwrap();
    let window = now_s() - now_s() % 10;
    let rows = vec![
        sessions(("wallet", "1.1"), window - 300, 4, &["d", "f"]),
        sessions(("wallet", "1.2"), window - 120, 6, &["a", "b", "c"]),
        sessions(("wallet", "1.2"), window - 60, 4, &["c", "d", "e"]),
        sessions(("kiosk", "7"), window - 60, 4, &[]),
    ];
    s.store
        .write(&Flush::rows("test", now_s(), rows))
        .await
        .unwrap();
    let alerter = s.alerter(stop.clone()).await;
    // Any rollups message: the alerter evaluates once its consumer holds
    // the topic's partitions.
    publish(&*s.bus, &s.config, 1, &[row("u1", window, 10, 0)]).await;
    let pages = wait_for("the three pages", Duration::from_secs(60), || {
        let pages = receiver.accepted("/hook");
        (pages.len() >= 3).then_some(pages)
    })
    .await;
    let mut seen: Vec<(Value, Value, Value)> = pages
        .iter()
        .map(|page| {
            let alert = &page.body["alerts"][0];
            let labels = &alert["labels"];
            (
                labels["alertname"].clone(),
                json!([
                    labels["app.version"],
                    labels["crash.fingerprint"],
                    labels["exception.type"],
                    labels["crash.state"]
                ]),
                alert["vigil"]["value"].clone(),
            )
        })
        .collect();
    seen.sort_by_key(|(name, _, _)| name.to_string());
    assert_eq!(
        seen,
        vec![
            (
                json!("kiosk-velocity"),
                json!(["7", "hang", "hang-type", "new"]),
                json!(0.5)
            ),
            (
                json!("wallet-crashes"),
                json!(["1.2", "old-npe", "old-npe-type", "regressed"]),
                json!(3.0)
            ),
            (
                json!("wallet-velocity"),
                json!(["1.2", "new-oom", "new-oom-type", "new"]),
                json!(0.4)
            ),
        ]
    );
    // Nothing else comes: the ongoing group and the slow ones page not.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(receiver.accepted("/hook").len(), 3);
    stop.trigger();
    alerter.wait().await;
    let _ = std::fs::remove_dir_all(&s.folder);
}

on_both_backends!(crash_groups_page_by_volume_and_by_velocity);
