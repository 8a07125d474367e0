//! Exactly-once across crashes: a known stream goes onto Kafka while `vigil
//! aggregator` processes are killed (SIGKILL) at random moments and started
//! again. At the end the store holds every count, sum, min, max and bucket of
//! the stream exactly — on ClickHouse and on SQLite.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum, metric,
    number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use prost::Message as _;
use vigil_bus::{self as bus, Record};
use vigil_config::Config;
use vigil_domain::distribution::Distribution;
use vigil_domain::model::{Kind, Rollup};
use vigil_domain::tenant::TenantId;
use vigil_store::{self as store, RollupQuery, Store};
use vigil_testing::{self as testing, Backend, now_s};

const NS: u64 = 1_000_000_000;
/// Messages of each signal in the stream.
const MESSAGES: u64 = 500;
const SPANS_PER_MESSAGE: u64 = 10;
const SERVICES: [&str; 3] = ["pay", "refund", "query"];

fn resource(service: &str) -> Option<Resource> {
    Some(Resource {
        attributes: vec![KeyValue {
            key: "service.name".into(),
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue(service.into())),
            }),
            ..Default::default()
        }],
        ..Default::default()
    })
}

/// Message `i` of the trace stream: spans lasting `i*10 + 1 ..= i*10 + 10` µs·100.
fn trace_message(i: u64, service: &str, time_s: u64) -> Vec<u8> {
    let spans = (0..SPANS_PER_MESSAGE)
        .map(|j| {
            let n = i * SPANS_PER_MESSAGE + j;
            Span {
                trace_id: n.to_be_bytes().repeat(2),
                span_id: n.to_be_bytes().to_vec(),
                name: "op".into(),
                kind: 2,
                start_time_unix_nano: time_s * NS - (n + 1) * 100_000,
                end_time_unix_nano: time_s * NS,
                status: Some(Status {
                    code: if n.is_multiple_of(7) { 2 } else { 1 },
                    message: String::new(),
                }),
                ..Default::default()
            }
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: resource(service),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

/// Message `i` of the metric stream: a delta sum adding `i + 1`, and a
/// cumulative sum standing at `1 + 2 + … + (i + 1)`.
fn metric_message(i: u64, service: &str, start_s: u64, time_s: u64) -> Vec<u8> {
    let point = |value: f64| NumberDataPoint {
        start_time_unix_nano: start_s * NS,
        time_unix_nano: time_s * NS,
        value: Some(number_data_point::Value::AsDouble(value)),
        ..Default::default()
    };
    let sum = |name: &str, temporality: AggregationTemporality, value: f64| Metric {
        name: name.into(),
        data: Some(metric::Data::Sum(Sum {
            data_points: vec![point(value)],
            aggregation_temporality: temporality as i32,
            is_monotonic: true,
        })),
        ..Default::default()
    };
    let n = i + 1;
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: resource(service),
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![
                    sum("added", AggregationTemporality::Delta, n as f64),
                    sum(
                        "total",
                        AggregationTemporality::Cumulative,
                        (n * (n + 1) / 2) as f64,
                    ),
                ],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

/// A small deterministic generator, seeded per run (the seed is printed).
struct Random(u64);

impl Random {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }
}

/// An aggregator process, killed (SIGKILL) when dropped, even by a failing test.
struct Aggregator(Child);

impl Drop for Aggregator {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(config_path: &std::path::Path) -> Aggregator {
    let child = Command::new(env!("CARGO_BIN_EXE_vigil"))
        .args(["--config"])
        .arg(config_path)
        .args(["--log", "warn", "aggregator"])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("vigil aggregator starts");
    Aggregator(child)
}

async fn total(store: &dyn Store, kind: Kind, service: &str, name: &str, time_s: u64) -> Rollup {
    let from = time_s - time_s % 10;
    let mut query = RollupQuery::new(10, from, from + 10);
    query.tenant = Some(TenantId::parse("acme").expect("tenant"));
    query.kind = Some(kind);
    query.service = Some(service.into());
    query.name = Some(name.into());
    let mut total = Rollup::default();
    for row in store.rollups(&query).await.expect("reads rollups") {
        total.merge(&row.rollup);
    }
    total
}

#[allow(clippy::print_stderr, reason = "the seed makes a failure reproducible")]
async fn survives_sigkill(store_backend: Backend) {
    let Some(mut config) = testing::config(Backend::Kafka) else {
        return;
    };
    let Some(store_config) = testing::store_config(store_backend) else {
        return;
    };
    config.store = store_config;
    config.bus.partitions = 3;
    config.aggregator.flush_interval_ms = 150;
    let folder = std::env::temp_dir().join(testing::unique_name("vigil_exactly_once"));
    std::fs::create_dir_all(&folder).expect("temp folder");
    let config_path = folder.join("vigil.toml");
    std::fs::write(&config_path, Config::to_toml(&config)).expect("config written");

    let bus = bus::connect(&config.bus).expect("bus");
    let topics = config.bus.topics();
    for topic in [&topics.metrics, &topics.traces] {
        bus.create_topic(topic, config.bus.partitions)
            .await
            .expect("topic");
    }
    let store = store::open(&config.store).await.expect("store");

    let seed = now_s() ^ u64::from(std::process::id());
    eprintln!("exactly-once seed {seed}");
    let mut random = Random(seed);
    let time_s = now_s();
    let start_s = time_s - 60;

    // The stream: published at a steady pace while the aggregator is killed.
    let publisher = {
        let bus = Arc::clone(&bus);
        let topics = topics.clone();
        tokio::spawn(async move {
            for i in 0..MESSAGES {
                for service in SERVICES {
                    let key = format!("acme/{service}");
                    bus.publish(
                        &topics.traces,
                        vec![Record::new(key.clone(), trace_message(i, service, time_s))],
                    )
                    .await
                    .expect("published spans");
                    bus.publish(
                        &topics.metrics,
                        vec![Record::new(
                            key,
                            metric_message(i, service, start_s, time_s),
                        )],
                    )
                    .await
                    .expect("published metrics");
                }
                tokio::time::sleep(Duration::from_millis(80)).await;
            }
        })
    };

    let mut child = spawn(&config_path);
    let mut kills = 0;
    while !publisher.is_finished() {
        tokio::time::sleep(Duration::from_millis(2_000 + random.below(5_000))).await;
        drop(child);
        kills += 1;
        // A killed member stays in its consumer groups until its session
        // times out (6 s); tansu 0.6 may never finish a rebalance that
        // waits for such a member, so the next process starts after that.
        tokio::time::sleep(Duration::from_secs(7)).await;
        child = spawn(&config_path);
    }
    publisher.await.expect("publisher");
    assert!(kills >= 3, "only {kills} kills happened");

    // What the stream holds, per service.
    let spans_total = MESSAGES * SPANS_PER_MESSAGE;
    let mut latency = Distribution::new();
    let mut errors = 0;
    for n in 0..spans_total {
        latency.record((n + 1) as f64 / 10.0).expect("finite");
        errors += u64::from(n.is_multiple_of(7));
    }
    let added: f64 = (1..=MESSAGES).map(|n| n as f64).sum();

    let deadline = tokio::time::Instant::now() + Duration::from_secs(240);
    for service in SERVICES {
        loop {
            let spans = total(store.as_ref(), Kind::Span, service, "op", time_s).await;
            let sums = total(store.as_ref(), Kind::Metric, service, "added", time_s).await;
            if spans.values.count() >= spans_total && sums.values.count() >= MESSAGES {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{service}: only {} spans and {} points arrived",
                spans.values.count(),
                sums.values.count()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    // A little longer, so a double count would show.
    tokio::time::sleep(Duration::from_secs(2)).await;
    drop(child);

    for service in SERVICES {
        let spans = total(store.as_ref(), Kind::Span, service, "op", time_s).await;
        assert_eq!(spans.values.count(), spans_total, "{service} span count");
        assert_eq!(spans.errors, errors, "{service} errors");
        assert_eq!(spans.values.min(), latency.min(), "{service} min");
        assert_eq!(spans.values.max(), latency.max(), "{service} max");
        assert!(
            (spans.values.sum() - latency.sum()).abs() < 1e-6,
            "{service} sum"
        );
        assert_eq!(
            spans.values.to_buckets(),
            latency.to_buckets(),
            "{service} buckets"
        );

        let delta = total(store.as_ref(), Kind::Metric, service, "added", time_s).await;
        assert_eq!(delta.values.count(), MESSAGES, "{service} delta points");
        assert_eq!(delta.values.sum(), added, "{service} delta sum");
        let cumulative = total(store.as_ref(), Kind::Metric, service, "total", time_s).await;
        assert_eq!(
            cumulative.values.count(),
            MESSAGES,
            "{service} cumulative points"
        );
        assert_eq!(
            cumulative.values.sum(),
            added,
            "{service} cumulative increase"
        );
    }
    let _ = std::fs::remove_dir_all(&folder);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_to_clickhouse_survives_sigkill() {
    survives_sigkill(Backend::Kafka).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_to_sqlite_survives_sigkill() {
    survives_sigkill(Backend::Embedded).await;
}
