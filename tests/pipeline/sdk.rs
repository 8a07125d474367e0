//! The OpenTelemetry SDK exports through the collector, the bus and the
//! aggregator; the API answers exactly what was sent.

use std::time::SystemTime;

use serde_json::json;
use vigil_testing::{Backend, on_both_backends};

use crate::harness::{
    Stack, assert_within, exact_quantile, metric_exporter, number, tracer_provider,
};

on_both_backends!(sdk_data_reads_back_exactly_through_every_component);

/// The OpenTelemetry SDK exports spans and metrics through the collector,
/// the bus and the aggregator into the store; the API answers exactly.
async fn sdk_data_reads_back_exactly_through_every_component(backend: Backend) {
    use opentelemetry::KeyValue;
    use opentelemetry::metrics::MeterProvider as _;
    use opentelemetry::trace::{Span as _, SpanKind, Status, Tracer as _, TracerProvider as _};
    use opentelemetry_sdk::Resource;
    use opentelemetry_sdk::metrics::{Aggregation, Instrument, SdkMeterProvider, Stream};

    let Some(stack) = Stack::start(backend).await else {
        return;
    };
    let server = stack.api().await;

    // 200 server spans of checkout, 7 to 296 ms, every tenth failed; a
    // counter adding up to 300; a histogram of 1..=500 (exponential, delta).
    let durations: Vec<u64> = (0..200u64).map(|i| 7 + (i * 37) % 290).collect();
    let endpoint = stack.otlp_endpoint();
    let sent = durations.clone();
    tokio::task::spawn_blocking(move || {
        let resource = Resource::builder().with_service_name("checkout").build();
        let provider = tracer_provider(&endpoint, resource.clone());
        let tracer = provider.tracer("vigil-test");
        let start = SystemTime::now() - std::time::Duration::from_secs(1);
        for (i, ms) in sent.iter().enumerate() {
            let begin = start + std::time::Duration::from_millis(i as u64);
            let mut span = tracer
                .span_builder("POST /pay")
                .with_kind(SpanKind::Server)
                .with_start_time(begin)
                .start(&tracer);
            if i % 10 == 0 {
                span.set_status(Status::error("declined"));
            }
            span.end_with_timestamp(begin + std::time::Duration::from_millis(*ms));
        }
        provider.force_flush().unwrap();
        provider.shutdown().unwrap();

        // Delta points keep their exact min and max (a cumulative point's
        // are not those of its increase), and 1,000 buckets keep the SDK at
        // the store's resolution for 1..=500.
        let exponential = |instrument: &Instrument| {
            (instrument.name() == "payment.latency").then(|| {
                Stream::builder()
                    .with_aggregation(Aggregation::Base2ExponentialHistogram {
                        max_size: 1_000,
                        max_scale: 20,
                        record_min_max: true,
                    })
                    .build()
                    .unwrap()
            })
        };
        let provider = SdkMeterProvider::builder()
            .with_resource(resource)
            .with_periodic_exporter(metric_exporter(&endpoint))
            .with_view(exponential)
            .build();
        let meter = provider.meter("vigil-test");
        let unit = [KeyValue::new("vigil.unit", "u1")];
        let counter = meter.u64_counter("payments").build();
        let latency = meter.f64_histogram("payment.latency").build();
        for i in 1..=500u64 {
            if i <= 300 {
                counter.add(1, &unit);
            }
            latency.record(i as f64, &unit);
        }
        provider.force_flush().unwrap();
        provider.shutdown().unwrap();
    })
    .await
    .unwrap();

    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    let pay = loop {
        let body = server.ok("/api/v1/services?from=now-10m").await;
        let found = body["services"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["service"] == "checkout")
            .cloned();
        if found.as_ref().is_some_and(|s| s["requests"] == json!(200)) {
            break found.unwrap();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the spans did not arrive: {body}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    };
    let values: Vec<f64> = durations.iter().map(|&ms| ms as f64).collect();
    assert_eq!(
        (pay["errors"].clone(), pay["spans"].clone()),
        (json!(20), json!("entry"))
    );
    assert_within(&pay["error_ratio"], 0.1, 1e-12);
    assert_within(&pay["p50_ms"], exact_quantile(&values, 0.5), 0.01);
    assert_within(&pay["p99_ms"], exact_quantile(&values, 0.99), 0.01);
    assert_within(&pay["mean_ms"], values.iter().sum::<f64>() / 200.0, 1e-9);

    let range = "from=now-10m&to=now%2B1m";
    let body = server
        .ok(&format!(
            "/api/v1/query?kind=span&service=checkout&name=POST%20/pay&signal=rate&step=10s&{range}"
        ))
        .await;
    let spans: f64 = body["series"][0]["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| number(&p[1]) * 10.0)
        .sum();
    assert!(
        (spans - 200.0).abs() < 1e-9,
        "rates add up to {spans} spans"
    );
    let body = server
        .ok(&format!(
            "/api/v1/query?kind=span&service=checkout&signal=error_ratio&step=1d&{range}"
        ))
        .await;
    assert_within(&body["series"][0]["points"][0][1], 0.1, 1e-12);

    let metric = |signal: &'static str, name: &'static str| {
        let server = &server;
        async move {
            let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
            loop {
                let body = server.ok(&format!("/api/v1/query?kind=metric&service=checkout&name={name}&signal={signal}&step=1d&{range}")).await;
                if let Some(value) = body["series"][0]["points"][0][1].as_f64() {
                    return (value, body["series"][0]["points"].as_array().unwrap().len());
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "{name} did not arrive: {body}"
                );
                tokio::time::sleep(std::time::Duration::from_millis(250)).await;
            }
        }
    };
    assert_eq!(metric("sum", "payments").await, (300.0, 1));
    let exact: Vec<f64> = (1..=500).map(f64::from).collect();
    assert_eq!(metric("count", "payment.latency").await, (500.0, 1));
    for (signal, q) in [("p50", 0.5), ("p99", 0.99)] {
        let (value, _) = metric(signal, "payment.latency").await;
        assert_within(&json!(value), exact_quantile(&exact, q), 0.01);
    }
    stack.stop().await;
    server.wait().await;
}
