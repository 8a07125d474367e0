//! SLOs, client health and probes add up.

use super::*;

async fn slos_clients_and_probes_add_up(backend: Backend) {
    let Some((server, _)) = start_with_known_data(backend).await else {
        return;
    };
    let body = server.ok("/api/v1/slo").await;
    let slos = body["slos"].as_array().unwrap();
    assert_eq!(slos.len(), 2);
    let availability = &slos[0];
    assert_eq!(
        (
            availability["events"].clone(),
            availability["good"].clone(),
            availability["bad"].clone()
        ),
        (json!(150), json!(135), json!(15))
    );
    assert_within(&availability["sli_percent"], 90.0, 1e-12);
    assert_within(&availability["error_budget"]["allowed_bad"], 1.5, 1e-12);
    assert_within(
        &availability["error_budget"]["remaining_percent"],
        -900.0,
        1e-12,
    );
    assert_eq!(
        availability["burn_rates"]["5m"],
        Value::Null,
        "nothing in the last 5 minutes"
    );
    for window in ["1h", "6h", "3d"] {
        assert_within(&availability["burn_rates"][window], 10.0, 1e-9);
    }
    let latency = &slos[1];
    assert_eq!(
        (latency["name"].clone(), latency["bad"].clone()),
        (json!("pay-latency"), json!(50))
    );
    let (status, body) = server.get(Some(ACME), "/api/v1/slo?name=nope").await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (404, json!("not_found"))
    );

    let body = server.ok("/api/v1/client/health?app=wallet-ios").await;
    let version = &body["apps"][0]["versions"][0];
    assert_eq!(body["apps"][0]["app"], "wallet-ios");
    assert_eq!(
        (
            version["version"].clone(),
            version["sessions"].clone(),
            version["crashes"].clone()
        ),
        (json!("2.0"), json!(100.0), json!(3))
    );
    assert_eq!(version["crashed_sessions"], json!(2));
    assert_within(&version["crash_free_sessions"], 0.98, 1e-12);
    assert_eq!(
        version["crashes_by_type"],
        json!([{"exception_type": "NSRangeException", "crash_kind": "native", "crashes": 3}])
    );
    assert_eq!(version["app_start_ms"]["cold"]["count"], json!(100));
    assert_within(&version["app_start_ms"]["cold"]["p90"], 589.0, 0.01);
    assert_within(&version["slow_frame_rate"], 0.05, 1e-12);
    assert_within(&version["frozen_frame_rate"], 0.005, 1e-12);

    let body = server.ok("/api/v1/probes").await;
    let probe = &body["probes"][0];
    assert_eq!(
        (
            probe["name"].clone(),
            probe["runs"].clone(),
            probe["failed"].clone()
        ),
        (json!("pay-e2e"), json!(10), json!(1))
    );
    assert_within(&probe["availability"], 0.9, 1e-12);
    assert_eq!(probe["locations"][0]["location"], "u1");
    assert_within(&probe["p50_ms"], 240.0, 0.01);
    let body = server
        .ok("/api/v1/probes/pay-e2e/runs?from=now-1h&location=u2")
        .await;
    let runs = body["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2);
    assert_eq!(
        (
            runs[0]["ok"].clone(),
            runs[0]["failure"].clone(),
            runs[0]["duration_ms"].clone()
        ),
        (json!(false), json!("card declined"), json!(230.0))
    );
    assert_eq!(
        (runs[1]["ok"].clone(), runs[1]["failure"].clone()),
        (json!(true), Value::Null)
    );
    server.stop().await;
}

on_both_backends!(slos_clients_and_probes_add_up,);
