//! `GET /api/v1/localize` over each store: pay's server spans in three
//! units, two versions and two routes (12 leaves), a baseline hour of 100
//! requests a minute per leaf with 1 % failed, then 10 minutes in which
//! unit b's version 1.1.0 fails half its requests on both routes and unit
//! c's traffic drops to a fifth; and an app's crashes and a probe's steps.

use super::*;

/// Rollups of pay's `POST /pay` in `unit`, `version` and `route`: per
/// minute of `[from_s, to_s)` `requests` requests of which `failed`
/// failed, written at 1 min and, for whole hours, at 1 h.
fn minutes(
    key: &Arc<SeriesKey>,
    (from_s, to_s): (u64, u64),
    requests: usize,
    failed: usize,
) -> Vec<RollupRow> {
    let minute = rollup((0..requests).map(|i| 10.0 + i as f64), failed);
    let mut rows: Vec<RollupRow> = (from_s..to_s)
        .step_by(60)
        .map(|start_s| RollupRow {
            series: Arc::clone(key),
            partition: 0,
            width_s: 60,
            start_s,
            rollup: minute.clone(),
            correction: false,
        })
        .collect();
    if to_s - from_s == 3_600 {
        let mut hour = Rollup::default();
        for _ in 0..60 {
            hour.merge(&minute);
        }
        rows.push(RollupRow {
            series: Arc::clone(key),
            partition: 0,
            width_s: 3_600,
            start_s: from_s,
            rollup: hour,
            correction: false,
        });
    }
    rows
}

/// A closed hour three hours back (the baseline), and the ten minutes
/// after it (the incident).
fn ranges() -> ((u64, u64), (u64, u64)) {
    let hour = now_s() - now_s() % 3_600 - 3 * 3_600;
    ((hour, hour + 3_600), (hour + 3_600, hour + 4_200))
}

/// The API over a store holding `rows` of the series `keys`, seen from the
/// baseline to the incident's end; `None` without the backend.
async fn serve(
    backend: Backend,
    (baseline, incident): ((u64, u64), (u64, u64)),
    keys: &[Arc<SeriesKey>],
    rows: Vec<RollupRow>,
) -> Option<Server> {
    let config = api_config(testing::config(backend)?);
    let store = store::open(&config.store).await.unwrap();
    let catalogue: Vec<CatalogueEntry> = keys
        .iter()
        .map(|key| CatalogueEntry {
            series: (**key).clone(),
            first_seen_s: baseline.0,
            last_seen_s: incident.1,
        })
        .collect();
    store.record_series(&catalogue).await.unwrap();
    store
        .write(&Flush::rows("test", now_s(), rows))
        .await
        .unwrap();
    Some(Server::start(&config, store).await)
}

async fn causes_are_the_label_sets_that_changed(backend: Backend) {
    let (baseline, incident) = ranges();
    let hour = baseline.0;
    let mut rows = Vec::new();
    let mut keys = Vec::new();
    for unit in ["a", "b", "c"] {
        for version in ["1.0.0", "1.1.0"] {
            for route in ["/pay", "/refund"] {
                let key = series(
                    "acme",
                    Kind::Span,
                    "pay",
                    "POST /pay",
                    &[
                        ("span.kind", "server"),
                        ("vigil.unit", unit),
                        ("service.version", version),
                        ("http.route", route),
                    ],
                );
                rows.extend(minutes(&key, baseline, 100, 1));
                let (requests, failed) = match (unit, version) {
                    ("b", "1.1.0") => (100, 50),
                    ("c", _) => (20, 0),
                    _ => (100, 1),
                };
                rows.extend(minutes(&key, incident, requests, failed));
                keys.push(key);
            }
        }
    }
    let Some(server) = serve(backend, (baseline, incident), &keys, rows).await else {
        return;
    };
    let range = format!("from={}&to={}", incident.0 * 1000, incident.1 * 1000);
    let localize = |signal: &str, extra: &str| {
        let path = format!("/api/v1/localize?kind=span&service=pay&signal={signal}&{range}{extra}");
        let server = &server;
        async move { server.get(Some(ACME), &path).await }
    };

    // The error ratio: b's 1.1.0, on both routes, alone.
    let (status, body) = localize("error_ratio", "").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["dimensions"],
        json!(["http.route", "service.version", "vigil.unit"]),
        "span.kind, name and service take one value"
    );
    assert_eq!(body["leaves"], 12);
    assert_eq!(
        body["baseline_from"],
        json!(hour * 1000),
        "the hour before from"
    );
    let causes = body["root_causes"].as_array().unwrap();
    assert_eq!(causes.len(), 1, "{body}");
    let cause = &causes[0];
    assert_eq!(
        cause["labels"],
        json!({"service.version": "1.1.0", "vigil.unit": "b"})
    );
    assert_eq!(cause["actual"], 0.5);
    assert!((number(&cause["expected"]) - 0.01).abs() < 1e-12, "{cause}");
    // Failed: 2 leaves × 10 min × 50, 6 × 10 × 1 (c fails none); of
    // 2 × 10 × 20 + 10 × 10 × 100 requests.
    let requests = 2.0 * 10.0 * 20.0 * 2.0 + 8.0 * 10.0 * 100.0;
    assert!(
        (number(&body["actual_total"]) - (1_000.0 + 60.0) / requests).abs() < 1e-12,
        "{body}"
    );
    // Availability falls where the error ratio rises.
    let (_, body) = localize("availability", "").await;
    assert_eq!(
        body["root_causes"][0]["labels"],
        json!({"service.version": "1.1.0", "vigil.unit": "b"})
    );
    assert_eq!(body["root_causes"][0]["actual"], 0.5);

    // The request count: c's drop, against the baseline hour scaled to
    // ten minutes.
    let (status, body) = localize("count", "").await;
    assert_eq!(status, 200, "{body}");
    let causes = body["root_causes"].as_array().unwrap();
    assert_eq!(causes.len(), 1, "{body}");
    assert_eq!(causes[0]["labels"], json!({"vigil.unit": "c"}));
    assert_eq!(causes[0]["actual"], 4.0 * 10.0 * 20.0);
    assert!((number(&causes[0]["expected"]) - 4_000.0).abs() < 1e-9);

    // Dimensions given: without the unit, the version is what is left.
    let (_, body) = localize("error_ratio", "&dimensions=service.version,http.route").await;
    assert_eq!(
        body["root_causes"][0]["labels"],
        json!({"service.version": "1.1.0"}),
        "{body}"
    );
    // A baseline given: the incident against itself changes nothing.
    let (_, body) = localize(
        "error_ratio",
        &format!(
            "&baseline_from={}&baseline_to={}",
            incident.0 * 1000,
            incident.1 * 1000
        ),
    )
    .await;
    assert_eq!(body["root_causes"], json!([]), "{body}");

    // Refusals name the parameter.
    let (status, body) = localize("mean", "").await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["parameter"], "signal", "{body}");
    let (status, body) = localize("count", "&dimensions=bad label").await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["parameter"], "dimensions", "{body}");
    // Another tenant sees nothing to localize.
    let (status, body) = server
        .get(
            Some(EVIL),
            &format!("/api/v1/localize?kind=span&service=pay&signal=count&{range}"),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["parameter"], "dimensions", "{body}");
    server.stop().await;
}

/// Client telemetry and probes are localized by their own labels: an
/// app's crashes rose on 5.1 on Android (both regions), and the pay step of
/// the probe from unit-b fails half its runs.
async fn every_kind_is_localized_by_its_labels(backend: Backend) {
    let (baseline, incident) = ranges();
    let mut rows = Vec::new();
    let mut keys = Vec::new();
    for version in ["5.0", "5.1"] {
        for os in ["Android", "iOS"] {
            for region in ["eu", "us"] {
                let key = series(
                    "acme",
                    Kind::Client,
                    "wallet",
                    "client.crashes",
                    &[
                        ("app.version", version),
                        ("os.name", os),
                        ("cloud.region", region),
                    ],
                );
                rows.extend(minutes(&key, baseline, 10, 0));
                let crashes = if (version, os) == ("5.1", "Android") {
                    40
                } else {
                    10
                };
                rows.extend(minutes(&key, incident, crashes, 0));
                keys.push(key);
            }
        }
    }
    for location in ["unit-a", "unit-b"] {
        for step in ["create", "pay"] {
            let key = series(
                "acme",
                Kind::Probe,
                "vigil-synthetic",
                "pay-e2e",
                &[
                    ("vigil.probe.location", location),
                    ("vigil.probe.step", step),
                    ("status", "unset"),
                ],
            );
            rows.extend(minutes(&key, baseline, 6, 0));
            let failed = if (location, step) == ("unit-b", "pay") {
                3
            } else {
                0
            };
            rows.extend(minutes(&key, incident, 6, failed));
            keys.push(key);
        }
    }
    let Some(server) = serve(backend, (baseline, incident), &keys, rows).await else {
        return;
    };
    let range = format!("from={}&to={}", incident.0 * 1000, incident.1 * 1000);

    let (status, body) = server
        .get(
            Some(ACME),
            &format!("/api/v1/localize?kind=client&service=wallet&name=client.crashes&signal=count&{range}"),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let causes = body["root_causes"].as_array().unwrap();
    assert_eq!(causes.len(), 1, "{body}");
    assert_eq!(
        causes[0]["labels"],
        json!({"app.version": "5.1", "os.name": "Android"})
    );
    // Two regions, ten minutes of 40 crashes; 10 a minute expected.
    assert_eq!(causes[0]["actual"], 800.0);
    assert!(
        (number(&causes[0]["expected"]) - 200.0).abs() < 1e-9,
        "{body}"
    );

    let (status, body) = server
        .get(
            Some(ACME),
            &format!("/api/v1/localize?kind=probe&name=pay-e2e&signal=error_ratio&{range}"),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["dimensions"],
        json!(["vigil.probe.location", "vigil.probe.step"]),
        "{body}"
    );
    let causes = body["root_causes"].as_array().unwrap();
    assert_eq!(causes.len(), 1, "{body}");
    assert_eq!(
        causes[0]["labels"],
        json!({"vigil.probe.location": "unit-b", "vigil.probe.step": "pay"})
    );
    assert_eq!(causes[0]["actual"], 0.5);
    assert_eq!(causes[0]["expected"], 0.0);
    server.stop().await;
}

on_both_backends!(
    causes_are_the_label_sets_that_changed,
    every_kind_is_localized_by_its_labels,
);
