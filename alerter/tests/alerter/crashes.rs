//! `crash_group` rules over crashes in the real store: a group back in a
//! new version pages by volume, a new one by velocity, an ongoing one not.

use super::*;
use vigil_store::{EventKind, EventRecord};

/// A crash of app wallet in `version`, group `fingerprint`, session
/// `session`, `ago_s` seconds ago.
fn crash(id: u64, fingerprint: &str, version: &str, session: u64, ago_s: u64) -> EventRecord {
    EventRecord {
        tenant: TenantId::parse("acme").unwrap(),
        kind: EventKind::Crash,
        id,
        time_ns: (now_s() - ago_s) * 1_000_000_000,
        service: "wallet".into(),
        name: format!("{fingerprint}-type"),
        body: String::new(),
        trace_id: String::new(),
        span_id: String::new(),
        fingerprint: fingerprint.into(),
        attributes: vec![
            ("app.version".into(), version.into()),
            ("session.id_hash".into(), format!("{session:032x}")),
        ],
    }
}

/// A 10 s row of wallet's `client.sessions` in `version`: `n` sessions.
fn sessions(version: &str, start_s: u64, n: u64) -> RollupRow {
    let mut rollup = Rollup::default();
    for _ in 0..n {
        rollup.record(1.0, false).unwrap();
    }
    RollupRow {
        series: Arc::new(SeriesKey::new(
            TenantId::parse("acme").unwrap(),
            Kind::Client,
            "wallet",
            "client.sessions",
            vec![("app.version".into(), version.into())],
        )),
        partition: 0,
        width_s: 10,
        start_s,
        rollup,
        correction: false,
    }
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
  - {{name: wallet-velocity, type: crash_group, service: wallet, window: 10m, states: [], velocity: 0.2}}
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
    let crashes = vec![
        // Back in 1.2 after 1.1 ran without it: regressed, 3 crashes in
        // one session of 1.2's 10 (0.1, under the velocity).
        crash(1, "old-npe", "1.0", 1, 3_600),
        crash(2, "old-npe", "1.2", 2, 120),
        crash(3, "old-npe", "1.2", 2, 110),
        crash(4, "old-npe", "1.2", 2, 100),
        // New in 1.2, two crashes in two of its 10 sessions: 0.2.
        crash(5, "new-oom", "1.2", 3, 90),
        crash(6, "new-oom", "1.2", 4, 80),
        // In 1.1 and 1.2: ongoing, however many.
        crash(7, "anr-sync", "1.1", 5, 300),
        crash(8, "anr-sync", "1.2", 6, 70),
        crash(9, "anr-sync", "1.2", 6, 60),
        crash(10, "anr-sync", "1.2", 6, 50),
    ];
    s.store.write_events(&crashes).await.unwrap();
    let window = now_s() - now_s() % 10;
    let rows = vec![
        sessions("1.1", window - 300, 4),
        sessions("1.2", window - 120, 6),
        sessions("1.2", window - 60, 4),
    ];
    s.store
        .write(&Flush::rows("test", now_s(), rows))
        .await
        .unwrap();
    let alerter = s.alerter(stop.clone()).await;
    // Any rollups message: the alerter evaluates once its consumer holds
    // the topic's partitions.
    publish(&*s.bus, &s.config, 1, &[row("u1", window, 10, 0)]).await;
    let pages = wait_for("both pages", Duration::from_secs(60), || {
        let pages = receiver.accepted("/hook");
        (pages.len() >= 2).then_some(pages)
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
                json!("wallet-crashes"),
                json!(["1.2", "old-npe", "old-npe-type", "regressed"]),
                json!(3.0)
            ),
            (
                json!("wallet-velocity"),
                json!(["1.2", "new-oom", "new-oom-type", "new"]),
                json!(0.2)
            ),
        ]
    );
    // Nothing else comes: the ongoing group and the slow ones page not.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(receiver.accepted("/hook").len(), 2);
    stop.trigger();
    alerter.wait().await;
    let _ = std::fs::remove_dir_all(&s.folder);
}

on_both_backends!(crash_groups_page_by_volume_and_by_velocity);
