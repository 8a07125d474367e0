//! Releases judged canary against baseline.

use super::*;

/// Span and client rollups of releases, as the aggregator writes them,
/// ten minutes ago.
pub(super) async fn write_releases(store: &dyn Store) {
    let t = now_s() - now_s() % 60 - 600;
    let mut rows = Vec::new();
    let mut spans = |version: &str, unit: &str, cohort: &str, ms: f64, n: usize, errors: usize| {
        let labels = [
            ("service.version", version),
            ("vigil.unit", unit),
            ("vigil.cohort", cohort),
            ("span.kind", "server"),
        ];
        let key = series("acme", Kind::Span, "checkout", "POST /checkout", &labels);
        rows.extend(rows_at(
            &key,
            t,
            &rollup(std::iter::repeat_n(ms, n), errors),
        ));
    };
    spans("1.0", "unit-a", "stable", 100.0, 1_000, 10);
    spans("1.0", "unit-b", "stable", 100.0, 1_000, 500);
    spans("1.1", "unit-a", "canary", 100.0, 1_000, 10);
    spans("1.2", "unit-a", "canary", 100.0, 30, 0);
    spans("1.3", "unit-a", "canary", 300.0, 1_000, 10);
    let mut client =
        |version: &str, cohort: &str, name: &str, extra: &[(&str, &str)], values: Vec<f64>| {
            let mut labels = vec![
                ("app.version", version),
                ("vigil.unit", "unit-a"),
                ("vigil.cohort", cohort),
            ];
            labels.extend(extra);
            let key = series("acme", Kind::Client, "wallet-ios", name, &labels);
            rows.extend(rows_at(&key, t, &rollup(values, 0)));
        };
    for (version, cohort, start_ms, slow, crashes) in [
        (
            "5.0",
            "stable",
            800.0,
            100.0,
            [("NullPointerException", 5), ("IndexOutOfBounds", 0)],
        ),
        (
            "5.1",
            "canary",
            820.0,
            110.0,
            [("NullPointerException", 10), ("IndexOutOfBounds", 30)],
        ),
    ] {
        client(version, cohort, "client.sessions", &[], vec![1.0; 1_000]);
        client(
            version,
            cohort,
            "client.app_start",
            &[],
            vec![start_ms; 1_000],
        );
        client(version, cohort, "client.frames", &[], vec![100.0; 100]);
        client(version, cohort, "client.frames.slow", &[], vec![slow]);
        // The canary crashes while launching 30 times in 1,030 launches,
        // the baseline twice in 1,002; ANRs about alike.
        let (launch_crashes, anrs) = if version == "5.1" { (30, 12) } else { (2, 10) };
        client(
            version,
            cohort,
            "client.crashes.launch",
            &[],
            vec![1.0; launch_crashes],
        );
        client(version, cohort, "client.anrs", &[], vec![5000.0; anrs]);
        // The canary drains the battery a fifth faster in the foreground;
        // background use is not judged.
        let drain = if version == "5.1" { 7.2 } else { 6.0 };
        for (foreground, drain) in [("true", drain), ("false", 50.0)] {
            client(
                version,
                cohort,
                "client.power.drain",
                &[("power.foreground", foreground)],
                vec![drain; 200],
            );
        }
        for (kind, n) in crashes {
            if n > 0 {
                client(
                    version,
                    cohort,
                    "client.crashes",
                    &[("exception.type", kind)],
                    vec![1.0; n],
                );
            }
        }
    }
    // Each version's 1,000 sessions are of 1,000 users; 5.0's crashes are
    // of 5 of them, 5.1's 40 of 8 (the same users crash again and again):
    // its crash rate fails, its share of users with a crash (0.8 % against
    // 0.5 %) does not.
    for row in &mut rows {
        let series = &row.series;
        let crashed = if series.label("app.version") == Some("5.1") {
            8
        } else {
            5
        };
        let users = match series.name.as_str() {
            "client.sessions" => 1_000,
            "client.crashes" => crashed,
            _ => 0,
        };
        for user in 0..users {
            row.rollup.users.insert(&format!("user-{user}"));
        }
    }
    // A crash type of unit-b only, where the canary does not run: not in
    // the baseline of any crash type.
    let labels = [
        ("app.version", "5.0"),
        ("vigil.unit", "unit-b"),
        ("vigil.cohort", "stable"),
        ("exception.type", "OutOfMemoryError"),
    ];
    let key = series(
        "acme",
        Kind::Client,
        "wallet-ios",
        "client.crashes",
        &labels,
    );
    rows.extend(rows_at(&key, t, &rollup(vec![1.0; 50], 0)));
    store
        .write(&Flush {
            source: "test".into(),
            time_s: now_s(),
            checkpoints: Vec::new(),
            rows,
            cumulative: Vec::new(),
        })
        .await
        .unwrap();
}

/// (signal, result, canary samples, baseline samples) of each signal.
fn results(body: &Value) -> Vec<(String, String, u64, u64)> {
    body["signals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["signal"].as_str().unwrap().to_owned(),
                s["result"].as_str().unwrap().to_owned(),
                s["canary_samples"].as_u64().unwrap(),
                s["baseline_samples"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn owned(rows: &[(&str, &str, u64, u64)]) -> Vec<(String, String, u64, u64)> {
    rows.iter()
        .map(|&(a, b, c, d)| (a.to_owned(), b.to_owned(), c, d))
        .collect()
}

async fn releases_are_judged_canary_against_baseline(backend: Backend) {
    let Some(config) = testing::config(backend) else {
        return;
    };
    away_from_midnight().await;
    let config = api_config(config);
    let store = store::open(&config.store).await.unwrap();
    write_releases(store.as_ref()).await;
    let server = Server::start(&config, store).await;
    let health = |query: &str| format!("/api/v1/releases/checkout/health?{query}");

    // A healthy canary: the baseline is 1.0 in unit-a only (unit-b's
    // failures and the other canaries are not its baseline).
    let body = server.ok(&health("version=1.1")).await;
    assert_eq!(
        (
            body["verdict"].clone(),
            body["baseline_versions"].clone(),
            body["units"].clone()
        ),
        (json!("promote"), json!(["1.0"]), json!(["unit-a"])),
        "{body}"
    );
    assert_eq!(
        results(&body),
        owned(&[
            ("error_ratio", "pass", 1_000, 1_000),
            ("latency_p50", "pass", 1_000, 1_000),
            ("latency_p99", "pass", 1_000, 1_000),
        ])
    );
    assert_eq!(body["signals"][0]["canary"], json!(0.01));
    assert_eq!(body["signals"][0]["baseline"], json!(0.01));
    assert_eq!(body["signals"][0]["test"], json!("two_proportion"));
    assert_eq!(body["signals"][1]["test"], json!("mann_whitney"));

    // Too little traffic: inconclusive, with how many more are needed.
    let body = server.ok(&health("version=1.2")).await;
    assert_eq!(body["verdict"], json!("hold"), "{body}");
    assert_eq!(
        body["reasons"][0],
        json!(
            "error_ratio: too few events to judge (30 canary, 1000 baseline); 70 more for the canary and 0 for the baseline"
        )
    );
    assert_eq!(
        body["signals"][0]["needed"],
        json!({"canary": 70, "baseline": 0})
    );
    assert_eq!(body["signals"][0]["p_value"], Value::Null);
    let body = server.ok(&health("version=1.2&min_samples=20")).await;
    assert_eq!(body["verdict"], json!("promote"), "{body}");

    // Injected latency: rolled back on the latency signals, naming them.
    let body = server
        .ok(&health("version=1.3&baseline=1.0&unit=unit-a"))
        .await;
    assert_eq!(body["verdict"], json!("rollback"), "{body}");
    assert_eq!(
        results(&body),
        owned(&[
            ("error_ratio", "pass", 1_000, 1_000),
            ("latency_p50", "fail", 1_000, 1_000),
            ("latency_p99", "fail", 1_000, 1_000),
        ])
    );
    let reasons = body["reasons"].as_array().unwrap();
    assert_eq!(reasons.len(), 2);
    assert!(
        reasons[0]
            .as_str()
            .unwrap()
            .starts_with("latency_p50: canary 30"),
        "{reasons:?}"
    );
    let p50 = body["signals"][1]["canary"].as_f64().unwrap();
    assert!((p50 - 300.0).abs() <= 300.0 * 0.0055, "{p50}");

    // An app release judged from client telemetry alone.
    let body = server
        .ok("/api/v1/releases/wallet-ios/health?version=5.1")
        .await;
    assert_eq!(body["verdict"], json!("rollback"), "{body}");
    assert_eq!(
        results(&body),
        owned(&[
            ("crash_rate", "fail", 1_000, 1_000),
            // The sketch estimates the 1,000 users as 994 (0.6 %).
            ("user_crash_rate", "pass", 994, 994),
            ("app_start_p90", "pass", 1_000, 1_000),
            ("launch_crash_rate", "fail", 1_030, 1_002),
            ("anr_rate", "pass", 1_000, 1_000),
            ("battery_drain_p50", "fail", 200, 200),
            ("slow_frame_rate", "pass", 10_000, 10_000),
        ])
    );
    assert_eq!(body["signals"][1]["canary"], json!(8.0 / 994.0));
    assert_eq!(body["signals"][1]["baseline"], json!(5.0 / 994.0));
    assert_eq!(body["signals"][3]["canary"], json!(30.0 / 1030.0));
    assert_eq!(body["signals"][3]["baseline"], json!(2.0 / 1002.0));
    assert_eq!(body["signals"][0]["canary"], json!(0.04));
    assert_eq!(body["signals"][0]["baseline"], json!(0.005));
    let by_type: Vec<(String, String)> = body["crash_rate_by_type"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| {
            (
                j["signal"].as_str().unwrap().to_owned(),
                j["result"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        by_type,
        vec![
            (
                "crash_rate{exception.type=\"IndexOutOfBounds\"}".to_owned(),
                "fail".to_owned()
            ),
            (
                "crash_rate{exception.type=\"NullPointerException\"}".to_owned(),
                "pass".to_owned()
            ),
            (
                "crash_rate{exception.type=\"OutOfMemoryError\"}".to_owned(),
                "pass".to_owned()
            ),
        ]
    );
    assert_eq!(
        (
            body["crash_rate_by_type"][2]["canary"].clone(),
            body["crash_rate_by_type"][2]["baseline"].clone()
        ),
        (json!(0.0), json!(0.0)),
        "unit-b's crashes are outside the canary's units"
    );
    let reasons: Vec<&str> = body["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    assert_eq!(reasons.len(), 4, "{reasons:?}");
    assert!(reasons[0].starts_with("crash_rate: canary 0.0400 against baseline 0.0050 (p = "));
    assert!(reasons[1].starts_with("launch_crash_rate: canary 0.0291 against baseline 0.0020"));
    assert!(
        reasons[2].starts_with("battery_drain_p50: canary 7.2"),
        "{reasons:?}"
    );
    assert!(
        reasons[3].starts_with("crash_rate{exception.type=\"IndexOutOfBounds\"}: canary 0.0300")
    );

    let (status, body) = server.get(Some(ACME), &health("")).await;
    assert_eq!(
        (status, body["error"]["parameter"].clone()),
        (400, json!("version"))
    );
    let (_, body) = server.get(Some(EVIL), &health("version=1.3")).await;
    assert_eq!(
        (body["verdict"].clone(), body["signals"].clone()),
        (json!("hold"), json!([])),
        "evil has no checkout releases"
    );
    server.stop().await;
}

on_both_backends!(releases_are_judged_canary_against_baseline,);
