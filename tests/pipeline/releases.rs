//! A gray release judged from live traffic: the demo service's canary
//! fails, and the API says to roll it back.

use serde_json::{Value, json};
use vigil_testing::{Backend, on_both_backends};

use crate::harness::Stack;

on_both_backends!(a_failing_canary_of_the_demo_service_is_rolled_back);

/// The demo payment service in unit-a, stable 1.0.0 beside a canary 2.0.0
/// that fails a quarter of its order creations: through the SDK, the
/// collector, the bus and the aggregator, the release is rolled back on
/// its error ratio.
async fn a_failing_canary_of_the_demo_service_is_rolled_back(backend: Backend) {
    let Some(stack) = Stack::start(backend).await else {
        return;
    };
    let server = stack.api().await;
    let stable = stack.demo("unit-a", "1.0.0", "stable").await;
    let canary = stack.demo("unit-a", "2.0.0", "canary").await;
    let client = reqwest::Client::new();
    let post = |address: std::net::SocketAddr, path: &str, body: Value| {
        client
            .post(format!("http://{address}{path}"))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
    };
    let fault = json!({"route": "create", "version": "2.0.0", "error_rate": 0.25});
    let response = post(canary.address(), "/admin/faults", fault)
        .await
        .unwrap();
    assert!(response.status().is_success());
    let order = json!({"amount": 1250, "currency": "EUR"});
    let mut refused = [0, 0];
    for _ in 0..200 {
        for (i, address) in [stable.address(), canary.address()].into_iter().enumerate() {
            let status = post(address, "/orders", order.clone())
                .await
                .unwrap()
                .status();
            refused[i] += usize::from(!status.is_success());
        }
    }
    assert_eq!(
        refused,
        [0, 50],
        "every fourth creation of the canary fails"
    );

    let path = "/api/v1/releases/payments/health?version=2.0.0";
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    let body = loop {
        let body = server.ok(path).await;
        let samples = (
            body["signals"][0]["canary_samples"].as_u64(),
            body["signals"][0]["baseline_samples"].as_u64(),
        );
        if samples == (Some(200), Some(200)) {
            break body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the spans did not arrive: {body}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    };
    assert_eq!(body["verdict"], json!("rollback"), "{body}");
    assert_eq!(body["baseline_versions"], json!(["1.0.0"]));
    assert_eq!(
        (
            body["signals"][0]["signal"].clone(),
            body["signals"][0]["result"].clone(),
            body["signals"][0]["canary"].clone(),
            body["signals"][0]["baseline"].clone(),
        ),
        (json!("error_ratio"), json!("fail"), json!(0.25), json!(0.0))
    );
    let reason = body["reasons"][0].as_str().unwrap();
    assert!(
        reason.starts_with("error_ratio: canary 0.2500 against baseline 0.0000 (p = "),
        "{reason}"
    );
    stack.demos.trigger();
    stable.wait().await;
    canary.wait().await;
    stack.stop().await;
    server.wait().await;
}
