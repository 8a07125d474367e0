//! Log records searched and paged, and beside their trace's spans.

use super::*;

async fn logs_are_searched_paged_and_shown_with_their_trace(backend: Backend) {
    let Some((server, t)) = start_with_known_data(backend).await else {
        return;
    };
    let range = format!("from={}&to={}", t * 1000, (t + 60) * 1000);
    let bodies = |body: &Value| -> Vec<String> {
        body["logs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["body"].as_str().unwrap().to_owned())
            .collect()
    };
    // Newest first, acme's only.
    let all = server.ok(&format!("/api/v1/logs?{range}")).await;
    assert_eq!(
        bodies(&all),
        [
            "ledger closed",
            "card declined by issuer",
            "Card DECLINED by issuer",
            "stock reserved late",
            "payment accepted for checkout"
        ]
    );
    let start_ms = (t + 5) as f64 * 1000.0;
    assert_eq!(
        all["logs"][2],
        json!({
            "time": start_ms + 30.0,
            "service": "pay",
            "severity": "ERROR",
            "body": "Card DECLINED by issuer",
            "trace_id": TRACE,
            "span_id": "00000000000000c3",
            "attributes": {"vigil.unit": "u1"},
        })
    );
    assert_eq!(all["next_cursor"], Value::Null);
    for (filter, expected) in [
        (
            "service=pay&severity=error,warn",
            vec![
                "card declined by issuer",
                "Card DECLINED by issuer",
                "stock reserved late",
            ],
        ),
        (
            "q=declined%20BY",
            vec!["card declined by issuer", "Card DECLINED by issuer"],
        ),
        (
            &*format!("trace_id={}", TRACE.to_uppercase()),
            vec![
                "Card DECLINED by issuer",
                "stock reserved late",
                "payment accepted for checkout",
            ],
        ),
        ("span_id=00000000000000b2", vec!["stock reserved late"]),
        ("attributes=vigil.unit%3D%22u2%22", vec![]),
        (
            "service=ledger&attributes=vigil.unit%3D%22u1%22",
            vec!["ledger closed"],
        ),
    ] {
        let body = server.ok(&format!("/api/v1/logs?{range}&{filter}")).await;
        assert_eq!(bodies(&body), expected, "{filter}");
    }
    // Pages of two that neither skip nor repeat.
    let mut seen = Vec::new();
    let mut cursor = String::new();
    loop {
        let body = server
            .ok(&format!("/api/v1/logs?{range}&limit=2{cursor}"))
            .await;
        seen.extend(bodies(&body));
        match body["next_cursor"].as_str() {
            Some(next) => cursor = format!("&cursor={next}"),
            None => break,
        }
    }
    assert_eq!(seen, bodies(&all));
    for (bad, parameter) in [
        ("trace_id=xyz", "trace_id"),
        ("span_id=123", "span_id"),
        ("cursor=yesterday", "cursor"),
        ("attributes=vigil.unit!%3D%22u1%22", "attributes"),
        ("limit=0", "limit"),
    ] {
        let (status, body) = server
            .get(Some(ACME), &format!("/api/v1/logs?{range}&{bad}"))
            .await;
        assert_eq!(
            (status, body["error"]["parameter"].as_str()),
            (400, Some(parameter)),
            "{bad}: {body}"
        );
    }

    // The trace, with its log records in time order.
    let trace = server.ok(&format!("/api/v1/traces/{TRACE}")).await;
    let logs: Vec<(&str, &str)> = trace["logs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["span_id"].as_str().unwrap(),
                l["severity"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        logs,
        [
            ("00000000000000a1", "INFO"),
            ("00000000000000b2", "WARN"),
            ("00000000000000c3", "ERROR")
        ]
    );
    server.stop().await;
}

on_both_backends!(logs_are_searched_paged_and_shown_with_their_trace);
