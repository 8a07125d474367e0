//! PromQL through `/prometheus/api/v1`, read by real clients: a real
//! Prometheus (2.42) scrapes a target whose counters and classic histogram
//! grow by fixed amounts at each scrape, and remote-writes what it scrapes to the
//! collector; the same expressions are asked of Prometheus and of Vigil at
//! the same instants. The OpenTelemetry SDK's spans and metrics are read by
//! `promtool query range` and compared with `/api/v1/query`'s answers for
//! the same signals.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use vigil_testing::daemon::Daemon;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use vigil_testing::{self as testing, Backend, on_both_backends};

use crate::harness::{ACME, INGEST, Stack, metric_exporter, now_s, number, tracer_provider};

on_both_backends!(promql_answers_as_prometheus_and_the_query_api_do);

/// The exposition of the target at its `s`-th scrape: per scrape (a
/// second), 10 requests of code 200 and 1 of code 500; queue depths 7 and
/// 3; 10 latencies (5 of 0.05 s, 4 of 0.2 s, 1 of 0.8 s). Counted per
/// scrape rather than from the clock, so that no two scrapes a second apart
/// see the same second, or seconds two apart.
fn exposition(s: u64) -> String {
    format!(
        "# TYPE demo_requests_total counter\n\
         demo_requests_total{{route=\"/pay\",code=\"200\"}} {ok}\n\
         demo_requests_total{{route=\"/pay\",code=\"500\"}} {s}\n\
         # TYPE demo_queue_depth gauge\n\
         demo_queue_depth{{queue=\"a\"}} 7\n\
         demo_queue_depth{{queue=\"b\"}} 3\n\
         # TYPE demo_latency_seconds histogram\n\
         demo_latency_seconds_bucket{{le=\"0.1\"}} {fast}\n\
         demo_latency_seconds_bucket{{le=\"0.25\"}} {mid}\n\
         demo_latency_seconds_bucket{{le=\"0.5\"}} {mid}\n\
         demo_latency_seconds_bucket{{le=\"1\"}} {ok}\n\
         demo_latency_seconds_bucket{{le=\"+Inf\"}} {ok}\n\
         demo_latency_seconds_sum {sum}\n\
         demo_latency_seconds_count {ok}\n",
        ok = 10 * s,
        fast = 5 * s,
        mid = 9 * s,
        sum = 1.85 * s as f64,
    )
}

/// Serves [`exposition`] on `listener`, one scrape more at each request.
async fn serve_target(listener: tokio::net::TcpListener) {
    let scrapes = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            return;
        };
        let scrapes = std::sync::Arc::clone(&scrapes);
        tokio::spawn(async move {
            let mut request = Vec::new();
            let mut buffer = [0u8; 4096];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buffer).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => request.extend_from_slice(&buffer[..n]),
                }
            }
            let body = exposition(scrapes.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
            let response = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes()).await;
        });
    }
}

/// The answer of a Prometheus API at `url` (`.../api/v1/query?...`) as a
/// map from labels (without `instance`, which Vigil does not keep as a
/// label) to value; a scalar under the key `scalar`.
async fn answer(client: &reqwest::Client, url: &str, token: Option<&str>) -> BTreeMap<String, f64> {
    let mut request = client.get(url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let body: Value = serde_json::from_str(&response.text().await.unwrap()).unwrap();
    assert_eq!(
        (status.as_u16(), &body["status"]),
        (200, &Value::from("success")),
        "{url}: {body}"
    );
    let data = &body["data"];
    let value = |v: &Value| -> f64 { v[1].as_str().unwrap().parse().unwrap() };
    match data["resultType"].as_str().unwrap() {
        "scalar" => BTreeMap::from([("scalar".to_owned(), value(&data["result"]))]),
        "vector" => data["result"]
            .as_array()
            .unwrap()
            .iter()
            .map(|sample| {
                let mut labels = sample["metric"].as_object().unwrap().clone();
                labels.remove("instance");
                (Value::Object(labels).to_string(), value(&sample["value"]))
            })
            .collect(),
        other => panic!("{other}: {body}"),
    }
}

fn urlencode(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// A real Prometheus and Vigil answer the same expressions over the data
/// Prometheus scraped and remote-wrote; promtool reads the SDK's data from
/// Vigil as `/api/v1/query` does.
async fn promql_answers_as_prometheus_and_the_query_api_do(backend: Backend) {
    let Some(promtool) = testing::program("promtool") else {
        return;
    };
    let Some(stack) = Stack::start(backend).await else {
        return;
    };
    let api = stack.api().await;
    let client = reqwest::Client::new();

    let target = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target_address = target.local_addr().unwrap();
    let started = now_s();
    let serving = tokio::spawn(serve_target(target));
    let Some(prometheus) = Daemon::prometheus(|_| {
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: demo\n    static_configs:\n      - targets: [\"{target_address}\"]\nremote_write:\n  - url: {endpoint}/api/v1/write\n    authorization:\n      credentials: {INGEST}\n    queue_config:\n      batch_send_deadline: 1s\n",
            endpoint = stack.otlp_endpoint(),
        )
    })
    .await
    else {
        return;
    };

    let (from_s, to_s) = send_sdk_data(&stack).await;
    let vigil = format!("http://{}", api.address());
    sdk_data_reads_the_same_through_promtool(&stack, &api, &promtool, &vigil, from_s, to_s).await;

    // 45 s of scrapes, then the instant 5 s ago (on a 10 s boundary, so
    // Vigil's windows tile every range) is asked of both.
    let ready = started + 50;
    while now_s() < ready {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let t = (now_s() - 5) / 10 * 10;
    // (expression, relative tolerance): counters' rates are exact in Vigil
    // and extrapolated by Prometheus from samples a second apart; a
    // quantile is within its bucket, (0.1, 0.25].
    let table: [(&str, f64); 23] = [
        ("sum(rate(demo_requests_total[30s]))", 0.04),
        ("sum by (code) (rate(demo_requests_total[30s]))", 0.04),
        ("increase(demo_requests_total{code=\"200\"}[30s])", 0.04),
        (
            "rate(demo_requests_total{code=\"500\"}[30s]) / ignoring(code) rate(demo_requests_total{code=\"200\"}[30s])",
            0.04,
        ),
        (
            "sum(rate(demo_requests_total{code=~\"5..\"}[30s])) / sum(rate(demo_requests_total[30s]))",
            0.04,
        ),
        ("irate(demo_requests_total{code=\"200\"}[30s])", 0.04),
        ("demo_queue_depth", 0.0),
        ("sum(demo_queue_depth)", 0.0),
        ("avg(demo_queue_depth)", 0.0),
        ("max(demo_queue_depth) - min(demo_queue_depth)", 0.0),
        ("count(demo_queue_depth)", 0.0),
        ("demo_queue_depth > 5", 0.0),
        ("demo_queue_depth > bool 5", 0.0),
        ("topk(1, demo_queue_depth)", 0.0),
        ("quantile(0.5, demo_queue_depth)", 0.0),
        ("avg_over_time(demo_queue_depth[30s])", 0.0),
        ("max_over_time(demo_queue_depth[30s] offset 10s)", 0.0),
        ("count_over_time(demo_queue_depth[30s])", 0.04),
        ("clamp_max(abs(-demo_queue_depth), 5)", 0.0),
        (
            "label_replace(demo_queue_depth, \"q\", \"queue-$1\", \"queue\", \"(.*)\")",
            0.0,
        ),
        ("scalar(sum(demo_queue_depth)) * 2", 0.0),
        (
            "rate(demo_latency_seconds_sum[30s]) / rate(demo_latency_seconds_count[30s])",
            0.04,
        ),
        ("sum(rate(demo_latency_seconds_count[30s]))", 0.04),
    ];
    let both = async |expression: &str| {
        let query = format!("/api/v1/query?query={}&time={t}", urlencode(expression));
        let theirs = answer(&client, &format!("{}{query}", prometheus.url()), None).await;
        let ours = answer(&client, &format!("{vigil}/prometheus{query}"), Some(ACME)).await;
        (theirs, ours)
    };
    for (expression, tolerance) in table {
        let (theirs, ours) = both(expression).await;
        assert_eq!(
            theirs.keys().collect::<Vec<_>>(),
            ours.keys().collect::<Vec<_>>(),
            "{expression}"
        );
        for (labels, value) in &theirs {
            let error = (ours[labels] - value).abs();
            assert!(
                error <= tolerance * value.abs(),
                "{expression} {labels}: Vigil {} and Prometheus {value}",
                ours[labels]
            );
        }
    }
    // A quantile of the classic histogram: Prometheus interpolates in the
    // bucket of the 8th of 10 latencies (0.2125), Vigil reads the merged
    // distribution of the buckets; both within that bucket, (0.1, 0.25].
    // (Not the 9th, the last of its bucket: Prometheus's extrapolated rates
    // may round its rank into the next bucket.)
    let (theirs, ours) =
        both("histogram_quantile(0.8, sum by (le) (rate(demo_latency_seconds_bucket[30s])))").await;
    for p80 in [theirs["{}"], ours["{}"]] {
        assert!(p80 > 0.1 && p80 <= 0.25, "{theirs:?} {ours:?}");
    }
    drop(prometheus);
    serving.abort();
    stack.stop().await;
    api.wait().await;
}

/// What the SDK's counter `payments` adds up to: `i % 7 + 1` for the 150
/// spans of u1 and the 60 of u2.
const PAID: f64 = 597.0 + 238.0;

/// Spans of `checkout` in units u1 and u2 (every tenth failed), a
/// histogram metric and a counter ([`PAID`] in all), sent by the
/// OpenTelemetry SDK; returns the range of 10 s steps they fall in.
async fn send_sdk_data(stack: &Stack) -> (u64, u64) {
    use opentelemetry::KeyValue;
    use opentelemetry::metrics::MeterProvider as _;
    use opentelemetry::trace::{Span as _, SpanKind, Status, Tracer as _, TracerProvider as _};
    use opentelemetry_sdk::Resource;
    use opentelemetry_sdk::metrics::SdkMeterProvider;

    let endpoint = stack.otlp_endpoint();
    let first = SystemTime::now() - Duration::from_secs(25);
    let from_s = first.duration_since(UNIX_EPOCH).unwrap().as_secs() / 10 * 10 - 10;
    tokio::task::spawn_blocking(move || {
        for (unit, spans) in [("u1", 150u64), ("u2", 60)] {
            let resource = Resource::builder()
                .with_service_name("checkout")
                .with_attribute(KeyValue::new("vigil.unit", unit))
                .build();
            let provider = tracer_provider(&endpoint, resource.clone());
            let tracer = provider.tracer("vigil-test");
            for i in 0..spans {
                // Spread over 20 s, 5 to 400 ms long.
                let begin = first + Duration::from_millis(i * 20_000 / spans);
                let mut span = tracer
                    .span_builder("POST /pay")
                    .with_kind(SpanKind::Server)
                    .with_start_time(begin)
                    .start(&tracer);
                if i % 10 == 0 {
                    span.set_status(Status::error("declined"));
                }
                span.end_with_timestamp(begin + Duration::from_millis(5 + (i * 37) % 395));
            }
            provider.force_flush().unwrap();
            provider.shutdown().unwrap();

            let provider = SdkMeterProvider::builder()
                .with_resource(resource)
                .with_periodic_exporter(metric_exporter(&endpoint))
                .build();
            let meter = provider.meter("vigil-test");
            let latency = meter.f64_histogram("payment.latency").build();
            let paid = meter.u64_counter("payments").build();
            for i in 1..=spans {
                latency.record(i as f64, &[]);
                paid.add(i % 7 + 1, &[]);
            }
            provider.force_flush().unwrap();
            provider.shutdown().unwrap();
        }
    })
    .await
    .unwrap();
    (from_s, now_s().div_ceil(10) * 10 + 10)
}

/// The SDK's data read by `promtool query range` (basic auth, as promtool
/// sends it) equal `/api/v1/query`'s answers: a PromQL point at `t` over
/// `[t − 10s, t)` is the query API's step starting at `t − 10`.
async fn sdk_data_reads_the_same_through_promtool(
    stack: &Stack,
    api: &crate::harness::ApiClient,
    promtool: &std::path::Path,
    vigil: &str,
    from_s: u64,
    to_s: u64,
) {
    let range = format!("from={}&to={}", from_s * 1000, to_s * 1000);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let body = api
            .ok(&format!(
                "/api/v1/query?kind=span&service=checkout&signal=count&step=1d&{range}"
            ))
            .await;
        let metric = api
            .ok(&format!("/api/v1/query?kind=metric&service=checkout&name=payment.latency&signal=count&step=1d&{range}"))
            .await;
        let paid = api
            .ok(&format!("/api/v1/query?kind=metric&service=checkout&name=payments&signal=sum&step=1d&{range}"))
            .await;
        let spans = body["series"][0]["points"][0][1].as_f64();
        let points = metric["series"][0]["points"][0][1].as_f64();
        let paid_sum: f64 = paid["series"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|series| series["points"][0][1].as_f64())
            .sum();
        if spans == Some(210.0) && points == Some(210.0) && paid_sum == PAID {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{body} {metric} {paid}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let spans = r#"{service="checkout"}"#;
    let by_unit = |inner: &str| format!("sum by (vigil_unit) ({inner})");
    let bucket = format!("rate(vigil_span_duration_seconds_bucket{spans}[10s])");
    // (PromQL, the query API's parameters, the factor from its unit).
    let table: Vec<(String, &str, f64)> = vec![
        (
            by_unit(&format!("rate(vigil_span_requests_total{spans}[10s])")),
            "kind=span&service=checkout&signal=rate&group_by=vigil.unit",
            1.0,
        ),
        (
            by_unit(&format!("increase(vigil_span_requests_total{spans}[10s])")),
            "kind=span&service=checkout&signal=count&group_by=vigil.unit",
            1.0,
        ),
        (
            by_unit(&format!(
                "increase(vigil_span_duration_seconds_count{spans}[10s])"
            )),
            "kind=span&service=checkout&signal=count&group_by=vigil.unit",
            1.0,
        ),
        (
            format!(
                "{} / {}",
                by_unit(&format!("increase(vigil_span_errors_total{spans}[10s])")),
                by_unit(&format!("increase(vigil_span_requests_total{spans}[10s])"))
            ),
            "kind=span&service=checkout&signal=error_ratio&group_by=vigil.unit",
            1.0,
        ),
        (
            format!(
                "1 - sum(rate(vigil_span_errors_total{spans}[10s])) / sum(rate(vigil_span_requests_total{spans}[10s]))"
            ),
            "kind=span&service=checkout&signal=availability",
            1.0,
        ),
        (
            format!("histogram_quantile(0.99, sum by (le, vigil_unit) ({bucket}))"),
            "kind=span&service=checkout&signal=p99&group_by=vigil.unit",
            0.001,
        ),
        (
            format!("histogram_quantile(0.5, sum by (le) ({bucket}))"),
            "kind=span&service=checkout&signal=p50",
            0.001,
        ),
        (
            format!("histogram_quantile(0.9, sum by (vigil_unit) ({bucket}))"),
            "kind=span&service=checkout&signal=p90&group_by=vigil.unit",
            0.001,
        ),
        (
            format!("histogram_quantile(1, sum({bucket}))"),
            "kind=span&service=checkout&signal=max",
            0.001,
        ),
        (
            format!("histogram_quantile(0, sum({bucket}))"),
            "kind=span&service=checkout&signal=min",
            0.001,
        ),
        (
            format!(
                "sum(rate(vigil_span_duration_seconds_sum{spans}[10s])) / sum(rate(vigil_span_duration_seconds_count{spans}[10s]))"
            ),
            "kind=span&service=checkout&signal=mean",
            0.001,
        ),
        // The service's totals, written by the aggregator beside its spans,
        // against what the spans answer (a filter on `status`, true of every
        // span, keeps the query API on the spans).
        (
            format!("sum(increase(vigil_service_requests_total{spans}[10s]))"),
            "kind=span&service=checkout&signal=count&filter=status!%3D%22-%22",
            1.0,
        ),
        (
            format!(
                "sum(increase(vigil_service_errors_total{spans}[10s])) / sum(increase(vigil_service_requests_total{spans}[10s]))"
            ),
            "kind=span&service=checkout&signal=error_ratio&filter=status!%3D%22-%22",
            1.0,
        ),
        (
            format!(
                "histogram_quantile(0.5, sum(rate(vigil_service_duration_seconds_bucket{spans}[10s])))"
            ),
            "kind=span&service=checkout&signal=p50&filter=status!%3D%22-%22",
            0.001,
        ),
        (
            "histogram_quantile(0.5, sum(rate(payment_latency_bucket{job=\"checkout\"}[10s])))"
                .to_owned(),
            "kind=metric&service=checkout&name=payment.latency&signal=p50",
            1.0,
        ),
        // An OpenTelemetry counter not named `…_total`, read under the
        // name OpenTelemetry's Prometheus exporters give it.
        (
            "sum(increase(payments_total[10s]))".to_owned(),
            "kind=metric&service=checkout&name=payments&signal=sum",
            1.0,
        ),
        (
            r#"sum by (vigil_unit) (rate(payments_total{job="checkout"}[10s]))"#.to_owned(),
            "kind=metric&service=checkout&name=payments&signal=sum&group_by=vigil.unit",
            0.1,
        ),
        (
            "sum(increase(payment_latency_count[10s]))".to_owned(),
            "kind=metric&service=checkout&name=payment.latency&signal=count",
            1.0,
        ),
        (
            "sum(count_over_time(payment_latency[10s]))".to_owned(),
            "kind=metric&service=checkout&name=payment.latency&signal=count",
            1.0,
        ),
        (
            "max(max_over_time(payment_latency[10s]))".to_owned(),
            "kind=metric&service=checkout&name=payment.latency&signal=max",
            1.0,
        ),
        (
            "min(min_over_time(payment_latency[10s]))".to_owned(),
            "kind=metric&service=checkout&name=payment.latency&signal=min",
            1.0,
        ),
        (
            "sum(sum_over_time(payment_latency[10s]))".to_owned(),
            "kind=metric&service=checkout&name=payment.latency&signal=sum",
            1.0,
        ),
    ];
    let url = format!(
        "http://grafana:{ACME}@{}/prometheus",
        vigil.trim_start_matches("http://")
    );
    for (expression, parameters, factor) in &table {
        let output = std::process::Command::new(promtool)
            .args(["query", "range", "-o", "json"])
            .arg(format!("--start={}", from_s + 10))
            .arg(format!("--end={to_s}"))
            .arg("--step=10s")
            .arg(&url)
            .arg(expression)
            .output()
            .unwrap();
        assert!(output.status.success(), "{expression}: {output:?}");
        let promql: Value = serde_json::from_slice(&output.stdout).unwrap();
        let query = api
            .ok(&format!("/api/v1/query?{parameters}&{range}&step=10s"))
            .await;
        // group → (step start → value), the query API's label names as
        // Prometheus's.
        let mut expected: BTreeMap<String, BTreeMap<u64, f64>> = BTreeMap::new();
        for series in query["series"].as_array().unwrap() {
            let labels: BTreeMap<String, String> = series["labels"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.replace('.', "_"), v.as_str().unwrap().to_owned()))
                .collect();
            let points = series["points"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| (p[0].as_u64().unwrap() / 1000, number(&p[1]) * factor))
                .collect();
            expected.insert(format!("{labels:?}"), points);
        }
        let mut found: BTreeMap<String, BTreeMap<u64, f64>> = BTreeMap::new();
        for series in promql.as_array().unwrap() {
            let labels: BTreeMap<String, String> =
                serde_json::from_value(series["metric"].clone()).unwrap();
            let points = series["values"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| {
                    let t = p[0].as_f64().unwrap() as u64;
                    (t - 10, p[1].as_str().unwrap().parse::<f64>().unwrap())
                })
                .collect();
            found.insert(format!("{labels:?}"), points);
        }
        assert_eq!(
            found.keys().collect::<Vec<_>>(),
            expected.keys().collect::<Vec<_>>(),
            "{expression}"
        );
        for (labels, points) in &expected {
            let ours = &found[labels];
            assert_eq!(
                ours.keys().collect::<Vec<_>>(),
                points.keys().collect::<Vec<_>>(),
                "{expression} {labels}"
            );
            for (t, value) in points {
                assert!(
                    (ours[t] - value).abs() <= 1e-9 * value.abs().max(1.0),
                    "{expression} {labels} at {t}: PromQL {} and the query API {value}",
                    ours[t]
                );
            }
        }
    }
    let _ = stack;
}
