//! Prometheus remote-write: the same numbers arrive as OTLP metrics; what
//! cannot be stored is refused and the rest kept.

use super::*;
use vigil_testing::daemon::Daemon;

/// A series as labels and (value, timestamp in ms) samples.
type Series<'a> = (Vec<(&'a str, &'a str)>, Vec<(f64, i64)>);

fn remote_write_request(series: Vec<Series<'_>>) -> Vec<u8> {
    use vigil_proto::prometheus::{Label, Sample, TimeSeries, WriteRequest};
    let write = WriteRequest {
        timeseries: series
            .into_iter()
            .map(|(labels, samples)| TimeSeries {
                labels: labels
                    .into_iter()
                    .map(|(name, value)| Label {
                        name: name.to_owned(),
                        value: value.to_owned(),
                    })
                    .collect(),
                samples: samples
                    .into_iter()
                    .map(|(value, timestamp)| Sample { value, timestamp })
                    .collect(),
                histograms: Vec::new(),
            })
            .collect(),
        metadata: Vec::new(),
    };
    snap::raw::Encoder::new()
        .compress_vec(&write.encode_to_vec())
        .unwrap()
}

async fn post_remote_write(harness: &Harness, body: Vec<u8>, encoding: &str) -> reqwest::Response {
    reqwest::Client::new()
        .post(harness.http_url("/api/v1/write"))
        .header("authorization", format!("Bearer {TOKEN}"))
        .header("content-type", "application/x-protobuf")
        .header("content-encoding", encoding)
        .header("x-prometheus-remote-write-version", "0.1.0")
        .body(body)
        .send()
        .await
        .unwrap()
}

async fn remote_write_arrives_as_the_same_numbers(backend: Backend) {
    let Some(harness) = Harness::start(backend).await else {
        return;
    };
    let ms = (now_ns() / 1_000_000) as i64;
    let body = remote_write_request(vec![
        (
            vec![
                ("__name__", "payments_total"),
                ("code", "200"),
                ("instance", "pay-1:9090"),
                ("job", "payments"),
            ],
            vec![(41.0, ms - 15_000), (45.0, ms)],
        ),
        (
            vec![
                ("__name__", "queue_depth"),
                ("instance", "pay-1:9090"),
                ("job", "payments"),
            ],
            vec![(7.25, ms)],
        ),
    ]);
    let response = post_remote_write(&harness, body, "snappy").await;
    assert_eq!(response.status(), 204);

    let topic = harness.config.bus.topics().metrics;
    let messages = harness.read(&topic, |m| !m.is_empty()).await;
    assert!(messages.iter().all(|m| m.key == "acme/payments"));
    let requests = decode::<ExportMetricsServiceRequest>(&messages);
    let resource = requests[0].resource_metrics[0].resource.as_ref().unwrap();
    assert_eq!(
        string_attribute(&resource.attributes, "service.instance.id").as_deref(),
        Some("pay-1:9090")
    );
    let metrics = metrics_by_name(&messages);
    match &metrics["payments_total"].data {
        Some(Data::Sum(sum)) => {
            assert!(sum.is_monotonic);
            let points: Vec<(u64, Option<number_data_point::Value>, Option<String>)> = sum
                .data_points
                .iter()
                .map(|p| {
                    (
                        p.time_unix_nano,
                        p.value,
                        string_attribute(&p.attributes, "code"),
                    )
                })
                .collect();
            let at = |ms: i64| ms as u64 * 1_000_000;
            assert_eq!(
                points,
                [
                    (
                        at(ms - 15_000),
                        Some(number_data_point::Value::AsDouble(41.0)),
                        Some("200".to_owned())
                    ),
                    (
                        at(ms),
                        Some(number_data_point::Value::AsDouble(45.0)),
                        Some("200".to_owned())
                    ),
                ]
            );
        }
        other => panic!("{other:?}"),
    }
    match &metrics["queue_depth"].data {
        Some(Data::Gauge(gauge)) => {
            assert_eq!(gauge.data_points.len(), 1);
            assert_eq!(
                gauge.data_points[0].value,
                Some(number_data_point::Value::AsDouble(7.25))
            );
        }
        other => panic!("{other:?}"),
    }
    harness.stop().await;
}

#[tokio::test]
async fn remote_write_refuses_what_it_cannot_store_and_keeps_the_rest() {
    let harness = Harness::start(Backend::Embedded).await.unwrap();
    let ms = (now_ns() / 1_000_000) as i64;
    let stale = f64::from_bits(0x7ff0_0000_0000_0002);
    let body = remote_write_request(vec![
        (
            vec![("__name__", "up"), ("job", "api")],
            vec![(1.0, ms), (stale, ms + 1)],
        ),
        (
            vec![("__name__", "temperature"), ("job", "api")],
            vec![(f64::INFINITY, ms), (20.0, ms)],
        ),
    ]);
    // What could be stored was: 2xx, so that Prometheus does not count it
    // as failed; the rest is told in the body and counted.
    let response = post_remote_write(&harness, body.clone(), "snappy").await;
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    assert!(
        text.contains("metric \"temperature\": value is inf, not a finite number"),
        "{text}"
    );
    let topic = harness.config.bus.topics().metrics;
    let messages = harness.read(&topic, |m| !m.is_empty()).await;
    let metrics = metrics_by_name(&messages);
    let points = |name: &str| match &metrics[name].data {
        Some(Data::Gauge(g)) => g.data_points.len(),
        other => panic!("{other:?}"),
    };
    assert_eq!(
        (points("up"), points("temperature")),
        (1, 1),
        "the valid samples are stored"
    );

    // Only staleness markers and NaN (a quantile with no observations)
    // left out: gaps, not errors.
    let only_gaps = remote_write_request(vec![
        (vec![("__name__", "up"), ("job", "api")], vec![(stale, ms)]),
        (
            vec![("__name__", "rpc_seconds"), ("quantile", "0.99")],
            vec![(f64::NAN, ms)],
        ),
    ]);
    assert_eq!(
        post_remote_write(&harness, only_gaps, "snappy")
            .await
            .status(),
        204
    );
    // Not snappy-compressed, or not snappy at all.
    assert_eq!(
        post_remote_write(&harness, body, "gzip").await.status(),
        415
    );
    let response = post_remote_write(&harness, b"not snappy".to_vec(), "snappy").await;
    assert_eq!(response.status(), 400);
    assert!(
        response
            .text()
            .await
            .unwrap()
            .contains("malformed snappy body")
    );
    let metrics = harness.scrape().await;
    let rejected = |reason: &str| {
        let series = format!(
            r#"vigil_collector_items_rejected_total{{signal="metrics",tenant="acme",reason="{reason}"}}"#
        );
        sample(&metrics, &series)
    };
    assert_eq!(rejected("stale_marker"), Some(2.0));
    assert_eq!(rejected("nan"), Some(1.0));
    assert_eq!(rejected("not_finite"), Some(1.0), "{metrics}");
    harness.stop().await;
}

/// Labels are copied into every sample's data point: a series of 100
/// labels and 100,000 samples is 0.2 MB sent and more than a GB converted.
/// It is refused before it is decoded, and an honest request still passes.
#[tokio::test]
async fn remote_write_that_would_convert_past_the_budget_is_refused_unread() {
    let harness = Harness::start_configured(embedded_bus(), |config| {
        config.collector.max_decoded_bytes_in_flight = 64 << 20;
    })
    .await;
    let ms = (now_ns() / 1_000_000) as i64;
    let names: Vec<String> = (0..100).map(|n| format!("label_{n:02}")).collect();
    let value = "x".repeat(20);
    let mut labels = vec![("__name__", "wide")];
    labels.extend(names.iter().map(|name| (name.as_str(), value.as_str())));
    let wide = remote_write_request(vec![(labels, vec![(1.0, ms); 100_000])]);
    assert!(wide.len() < 300_000, "{} bytes", wide.len());
    let response = post_remote_write(&harness, wide, "snappy").await;
    assert_eq!(response.status(), 413);
    let text = response.text().await.unwrap();
    assert!(
        text.contains("more than the 64 MiB the collector decodes at once"),
        "{text}"
    );
    let honest = remote_write_request(vec![(
        vec![("__name__", "up"), ("job", "api")],
        vec![(1.0, ms)],
    )]);
    assert_eq!(
        post_remote_write(&harness, honest, "snappy").await.status(),
        204
    );
    harness.stop().await;
}

/// A native histogram arrives as an exponential histogram with the same
/// buckets (one index down: Prometheus's bucket i is OTLP's i - 1); one
/// spanning too many buckets is refused unfilled, the request answered 200.
#[tokio::test]
async fn native_histograms_arrive_as_exponential_histograms() {
    use vigil_proto::prometheus::{
        BucketSpan, Histogram, Label, TimeSeries, WriteRequest, histogram,
    };
    let harness = Harness::start(Backend::Embedded).await.unwrap();
    let ms = (now_ns() / 1_000_000) as i64;
    let native = |spans: Vec<BucketSpan>, deltas: Vec<i64>, count: u64| Histogram {
        count: Some(histogram::Count::CountInt(count)),
        sum: 12.5,
        schema: 2,
        zero_threshold: 0.001,
        zero_count: Some(histogram::ZeroCount::ZeroCountInt(1)),
        positive_spans: spans,
        positive_deltas: deltas,
        timestamp: ms,
        ..Default::default()
    };
    let write = WriteRequest {
        timeseries: vec![TimeSeries {
            labels: vec![
                Label {
                    name: "__name__".into(),
                    value: "rpc_seconds".into(),
                },
                Label {
                    name: "job".into(),
                    value: "api".into(),
                },
                Label {
                    name: "method".into(),
                    value: "pay".into(),
                },
            ],
            samples: Vec::new(),
            histograms: vec![
                native(
                    vec![
                        BucketSpan {
                            offset: 3,
                            length: 2,
                        },
                        BucketSpan {
                            offset: 1,
                            length: 1,
                        },
                    ],
                    vec![2, 1, -1],
                    8,
                ),
                native(
                    vec![
                        BucketSpan {
                            offset: 0,
                            length: 1,
                        },
                        BucketSpan {
                            offset: 100_000,
                            length: 1,
                        },
                    ],
                    vec![1, 0],
                    3,
                ),
            ],
        }],
        metadata: Vec::new(),
    };
    let body = snap::raw::Encoder::new()
        .compress_vec(&write.encode_to_vec())
        .unwrap();
    let response = post_remote_write(&harness, body, "snappy").await;
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    assert_eq!(
        text,
        "1 data points rejected: native histogram \"rpc_seconds\": its buckets span 100002 indices, more than 16384"
    );
    let topic = harness.config.bus.topics().metrics;
    let messages = harness.read(&topic, |m| !m.is_empty()).await;
    match &metrics_by_name(&messages)["rpc_seconds"].data {
        Some(Data::ExponentialHistogram(h)) => {
            assert_eq!(h.data_points.len(), 1);
            let point = &h.data_points[0];
            assert_eq!((point.scale, point.count, point.zero_count), (2, 8, 1));
            let positive = point.positive.as_ref().unwrap();
            assert_eq!(
                (positive.offset, &positive.bucket_counts[..]),
                (2, &[2, 3, 0, 2][..])
            );
            assert_eq!(point.attributes, vec![attribute("method", "pay")]);
        }
        other => panic!("{other:?}"),
    }
    harness.stop().await;
}

/// One of `prometheus`'s own metrics, summed over its series; `None`
/// while it has none (or does not answer yet).
async fn value(prometheus: &Daemon, metric: &str) -> Option<f64> {
    let url = format!("{}/api/v1/query?query=sum({metric})", prometheus.url());
    let text = reqwest::get(url).await.ok()?.text().await.ok()?;
    let answer: serde_json::Value = serde_json::from_str(&text).ok()?;
    answer["data"]["result"][0]["value"][1]
        .as_str()?
        .parse()
        .ok()
}

/// A real Prometheus (Debian's 2.42) scrapes itself every second and
/// remote-writes to the collector. Its summaries hold NaN quantiles, so
/// every batch used to be answered 400 and counted failed; now not one
/// sample of the first thousand and more is, and they arrive as metrics,
/// its classic histograms as histograms.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_counts_no_sample_failed() {
    let harness = Harness::start(Backend::Embedded).await.unwrap();
    let Some(prometheus) = Daemon::prometheus(|address| {
        format!(
            r#"
global:
  scrape_interval: 1s
scrape_configs:
  - job_name: prometheus
    static_configs:
      - targets: ["{address}"]
remote_write:
  - url: {url}
    authorization:
      credentials: {TOKEN}
    queue_config:
      batch_send_deadline: 1s
"#,
            url = harness.http_url("/api/v1/write"),
        )
    })
    .await
    else {
        return;
    };
    let deadline = Instant::now() + Duration::from_secs(90);
    let sent = loop {
        let sent = value(&prometheus, "prometheus_remote_storage_samples_total").await;
        if sent.is_some_and(|sent| sent >= 1_000.0) {
            break sent.unwrap_or_default();
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus sent {sent:?} samples"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(
        value(
            &prometheus,
            "prometheus_remote_storage_samples_failed_total"
        )
        .await,
        Some(0.0),
        "of {sent} samples sent"
    );
    let topic = harness.config.bus.topics().metrics;
    let messages = harness.read(&topic, |m| !m.is_empty()).await;
    let metrics = metrics_by_name(&messages);
    let names: Vec<&String> = metrics.keys().collect();
    assert!(
        metrics.contains_key("prometheus_http_requests_total"),
        "{names:?}"
    );
    // A classic histogram arrives as one histogram, its buckets as bounds;
    // a summary as its series.
    let family = "prometheus_http_request_duration_seconds";
    match &metrics[family].data {
        Some(Data::Histogram(h)) => {
            let point = &h.data_points[0];
            assert!(point.explicit_bounds.len() >= 5, "{point:?}");
            assert_eq!(point.bucket_counts.len(), point.explicit_bounds.len() + 1);
            assert_eq!(point.bucket_counts.iter().sum::<u64>(), point.count);
        }
        other => panic!("{other:?}"),
    }
    for gone in ["_bucket", "_sum", "_count"] {
        assert!(
            !metrics.contains_key(&format!("{family}{gone}")),
            "{names:?}"
        );
    }
    assert!(
        metrics.contains_key("go_gc_duration_seconds_sum"),
        "{names:?}"
    );
    let scraped = harness.scrape().await;
    let nan =
        r#"vigil_collector_items_rejected_total{signal="metrics",tenant="acme",reason="nan"}"#;
    assert!(sample(&scraped, nan).is_some_and(|n| n > 0.0), "{scraped}");
    drop(prometheus);
    harness.stop().await;
}

vigil_testing::on_both_backends!(remote_write_arrives_as_the_same_numbers,);
