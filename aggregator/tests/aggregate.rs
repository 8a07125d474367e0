//! The aggregator end to end: OTLP messages on the bus (as the collector
//! writes them) become exactly the rollups, spans and catalogue entries they
//! hold, on the embedded pair (in-process bus, SQLite) and on Kafka with
//! ClickHouse.

use std::sync::Arc;
use std::time::Duration;
use vigil_testing::string_attribute as text;

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint,
    ResourceMetrics, ScopeMetrics, Sum, metric, number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use prost::Message as _;
use vigil_aggregator::Aggregator;
use vigil_bus::{self as bus, Bus, Record, rollups};
use vigil_config::Config;
use vigil_domain::distribution::{Distribution, RELATIVE_ERROR};
use vigil_domain::model::{Kind, Rollup};
use vigil_domain::shutdown::Shutdown;
use vigil_domain::tenant::TenantId;
use vigil_proto::bus::v1::DeadLetter;
use vigil_proto::client::v1::{
    AppStart, ClientBatch, ClientContext, ClientEvent, Crash, ExportClientRequest, SessionStart,
    Stutter,
};
use vigil_store::{self as store, EventKind, EventQuery, RollupQuery, Store};
use vigil_testing::{self as testing, Backend, Proxy, now_s, on_both_backends};

const NS: u64 = 1_000_000_000;
const TRACE: [u8; 16] = [7; 16];

fn resource() -> Option<Resource> {
    Some(Resource {
        attributes: vec![text("service.name", "pay"), text("vigil.unit", "u1")],
        ..Default::default()
    })
}

/// `count` server spans of `POST /pay` ending at `time_s`, lasting 1, 2, …
/// ms; the first `errors` of them failed.
fn spans(first_id: u64, count: u64, errors: u64, time_s: u64) -> Vec<u8> {
    let spans = (0..count)
        .map(|i| {
            let end = time_s * NS;
            Span {
                trace_id: TRACE.to_vec(),
                span_id: (first_id + i).to_be_bytes().to_vec(),
                name: "POST /pay".into(),
                kind: 2,
                start_time_unix_nano: end - (i + 1) * 1_000_000,
                end_time_unix_nano: end,
                attributes: vec![text("http.route", "/pay")],
                status: Some(Status {
                    code: if i < errors { 2 } else { 0 },
                    message: String::new(),
                }),
                ..Default::default()
            }
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: resource(),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

fn metrics(metrics: Vec<Metric>) -> Vec<u8> {
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: resource(),
            scope_metrics: vec![ScopeMetrics {
                metrics,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

fn number(start_s: u64, time_s: u64, value: f64) -> NumberDataPoint {
    NumberDataPoint {
        start_time_unix_nano: start_s * NS,
        time_unix_nano: time_s * NS,
        value: Some(number_data_point::Value::AsDouble(value)),
        ..Default::default()
    }
}

fn sum(name: &str, temporality: AggregationTemporality, points: Vec<NumberDataPoint>) -> Metric {
    Metric {
        name: name.into(),
        data: Some(metric::Data::Sum(Sum {
            data_points: points,
            aggregation_temporality: temporality as i32,
            is_monotonic: true,
        })),
        ..Default::default()
    }
}

fn gauge(name: &str, points: Vec<NumberDataPoint>) -> Metric {
    Metric {
        name: name.into(),
        data: Some(metric::Data::Gauge(Gauge {
            data_points: points,
        })),
        ..Default::default()
    }
}

fn cumulative_histogram(start_s: u64, time_s: u64, counts: Vec<u64>, sum: f64) -> Metric {
    Metric {
        name: "latency_ms".into(),
        data: Some(metric::Data::Histogram(Histogram {
            data_points: vec![HistogramDataPoint {
                start_time_unix_nano: start_s * NS,
                time_unix_nano: time_s * NS,
                count: counts.iter().sum(),
                sum: Some(sum),
                bucket_counts: counts,
                explicit_bounds: vec![10.0, 100.0],
                ..Default::default()
            }],
            aggregation_temporality: AggregationTemporality::Cumulative as i32,
        })),
        ..Default::default()
    }
}

struct Setup {
    config: Config,
    bus: Arc<dyn Bus>,
    store: Arc<dyn Store>,
}

async fn setup(backend: Backend) -> Option<Setup> {
    let mut config = testing::config(backend)?;
    config.aggregator.flush_interval_ms = 200;
    let bus = bus::connect(&config.bus).expect("bus");
    let store = store::open(&config.store).await.expect("store");
    Some(Setup { config, bus, store })
}

impl Setup {
    async fn publish(&self, topic: &str, payloads: Vec<Vec<u8>>) {
        let records = payloads
            .into_iter()
            .map(|payload| Record::new(bytes::Bytes::from_static(b"acme/pay"), payload))
            .collect();
        self.bus.publish(topic, records).await.expect("published");
    }

    async fn start(&self) -> (Aggregator, Shutdown) {
        let shutdown = Shutdown::new();
        let aggregator = Aggregator::start(
            &self.config,
            Arc::clone(&self.bus),
            self.store.clone(),
            shutdown.clone(),
        )
        .await
        .expect("aggregator starts");
        (aggregator, shutdown)
    }

    /// The stored rollups of service pay's `kind` and `name` (the tenant's
    /// totals: no service) in the window of width `width_s` holding
    /// `time_s`, merged.
    async fn total(&self, kind: Kind, name: &str, width_s: u32, time_s: u64) -> Rollup {
        let from = time_s - time_s % u64::from(width_s);
        let mut query = RollupQuery::new(width_s, from, from + u64::from(width_s));
        query.tenant = Some(TenantId::parse("acme").expect("tenant"));
        query.kind = Some(kind);
        // The tenant's totals belong to no service.
        query.service = Some(if kind == Kind::Tenant { "" } else { "pay" }.into());
        query.name = Some(name.into());
        let mut total = Rollup::default();
        for row in self.store.rollups(&query).await.expect("reads rollups") {
            total.merge(&row.rollup);
        }
        total
    }

    /// Waits until the rollup reaches `count` points, then a little longer,
    /// so that a point counted twice shows too.
    async fn settled(
        &self,
        kind: Kind,
        name: &str,
        width_s: u32,
        time_s: u64,
        count: u64,
    ) -> Rollup {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while self.total(kind, name, width_s, time_s).await.values.count() < count {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{name} at {width_s} s never reached {count} points"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(Duration::from_millis(800)).await;
        self.total(kind, name, width_s, time_s).await
    }
}

impl Setup {
    /// An aggregator reaching the setup's ClickHouse through a proxy.
    async fn start_behind_proxy(&self) -> (Proxy, Aggregator, Shutdown) {
        let clickhouse = self.config.store.clickhouse.url.replace("http://", "");
        let proxy = Proxy::start(&clickhouse).await;
        let mut proxied = self.config.store.clone();
        proxied.clickhouse.url = format!("http://{}", proxy.address());
        let shutdown = Shutdown::new();
        let aggregator = Aggregator::start(
            &self.config,
            Arc::clone(&self.bus),
            store::connect(&proxied).expect("store"),
            shutdown.clone(),
        )
        .await
        .expect("aggregator starts");
        (proxy, aggregator, shutdown)
    }
}

fn assert_rollup(rollup: &Rollup, count: u64, sum: f64, errors: u64) {
    assert_eq!(rollup.values.count(), count, "count");
    assert!(
        (rollup.values.sum() - sum).abs() < 1e-9,
        "sum {} ≠ {sum}",
        rollup.values.sum()
    );
    assert_eq!(rollup.errors, errors, "errors");
}

async fn every_signal_is_rolled_up_exactly(backend: Backend) {
    let Some(setup) = setup(backend).await else {
        return;
    };
    let topics = setup.config.bus.topics();
    let (aggregator, shutdown) = setup.start().await;
    let now = now_s();
    let old = now - 7200;
    let start = now - 600;

    setup
        .publish(
            &topics.traces,
            vec![
                spans(1, 60, 4, now),
                spans(61, 40, 3, now),
                spans(1000, 20, 1, old),
            ],
        )
        .await;
    setup
        .publish(
            &topics.metrics,
            vec![
                metrics(vec![
                    sum(
                        "payments_total",
                        AggregationTemporality::Delta,
                        vec![number(0, now, 1.0), number(0, now, 2.0)],
                    ),
                    sum(
                        "requests_total",
                        AggregationTemporality::Cumulative,
                        vec![number(start, now, 5.0)],
                    ),
                    cumulative_histogram(start, now, vec![1, 2, 0], 60.0),
                    gauge("queue_depth", vec![number(0, now, 4.0)]),
                ]),
                // The same cumulative points exported again add nothing.
                metrics(vec![
                    sum(
                        "payments_total",
                        AggregationTemporality::Delta,
                        vec![number(0, now, 3.0)],
                    ),
                    sum(
                        "requests_total",
                        AggregationTemporality::Cumulative,
                        vec![number(start, now, 5.0)],
                    ),
                    cumulative_histogram(start, now, vec![1, 2, 0], 60.0),
                    gauge("queue_depth", vec![number(0, now, 8.0)]),
                ]),
                metrics(vec![
                    sum(
                        "requests_total",
                        AggregationTemporality::Cumulative,
                        vec![number(start, now, 9.0)],
                    ),
                    cumulative_histogram(start, now, vec![1, 3, 1], 260.0),
                ]),
            ],
        )
        .await;

    // Spans: 100 on time, durations 1..=60 and 1..=40 ms.
    let latency = setup.settled(Kind::Span, "POST /pay", 10, now, 100).await;
    let exact_sum: f64 = (1..=60).chain(1..=40).map(f64::from).sum();
    assert_rollup(&latency, 100, exact_sum, 7);
    assert_eq!(latency.values.min(), Some(1.0));
    assert_eq!(latency.values.max(), Some(60.0));
    let mut exact: Vec<f64> = (1..=60).chain(1..=40).map(f64::from).collect();
    exact.sort_by(f64::total_cmp);
    let p99 = latency.values.quantile(0.99).expect("p99");
    assert!(
        (p99 - exact[98]).abs() <= exact[98] * RELATIVE_ERROR,
        "p99 {p99}"
    );

    // 20 late spans, two hours old: correction rows at every width.
    for width in [10, 60, 3600] {
        let late = setup.settled(Kind::Span, "POST /pay", width, old, 20).await;
        assert_rollup(&late, 20, (1..=20).map(f64::from).sum(), 1);
    }
    assert_eq!(aggregator.metrics().late_points.get(), 20);

    // Service pay's total holds the same spans, on time and late alike,
    // and is no point of its own; so does the tenant's (pay is its only
    // service).
    for (kind, name) in [(Kind::Service, "pay"), (Kind::Tenant, "")] {
        let total = setup.settled(kind, name, 10, now, 100).await;
        assert_rollup(&total, 100, exact_sum, 7);
        assert_eq!(total.values.to_buckets(), latency.values.to_buckets());
        for width in [10, 60, 3600] {
            let late = setup.settled(kind, name, width, old, 20).await;
            assert_rollup(&late, 20, (1..=20).map(f64::from).sum(), 1);
        }
    }

    let payments = setup
        .settled(Kind::Metric, "payments_total", 10, now, 3)
        .await;
    assert_rollup(&payments, 3, 6.0, 0);
    let requests = setup
        .settled(Kind::Metric, "requests_total", 10, now, 3)
        .await;
    assert_rollup(&requests, 3, 9.0, 0);
    let histogram = setup.settled(Kind::Metric, "latency_ms", 10, now, 5).await;
    assert_eq!(histogram.values.count(), 5);
    assert_eq!(histogram.values.sum(), 260.0);
    let gauge = setup.settled(Kind::Metric, "queue_depth", 10, now, 2).await;
    assert_rollup(&gauge, 2, 12.0, 0);
    assert_eq!(
        (gauge.values.min(), gauge.values.max()),
        (Some(4.0), Some(8.0))
    );

    let acme = TenantId::parse("acme").expect("tenant");
    let trace = setup
        .store
        .trace(&acme, &"07".repeat(16))
        .await
        .expect("reads the trace");
    assert_eq!(trace.len(), 120);
    assert_eq!(trace.iter().filter(|s| s.status_code == 2).count(), 8);

    let catalogue = setup
        .store
        .series(&acme, Some(Kind::Metric), Some("pay"))
        .await
        .expect("reads the catalogue");
    let mut names: Vec<&str> = catalogue.iter().map(|e| e.series.name.as_str()).collect();
    names.dedup();
    assert_eq!(
        names,
        vec![
            "latency_ms",
            "payments_total",
            "queue_depth",
            "requests_total"
        ]
    );
    let requests_entry = catalogue
        .iter()
        .find(|e| e.series.name == "requests_total")
        .expect("requests_total in the catalogue");
    assert_eq!(requests_entry.series.label("vigil.unit"), Some("u1"));
    assert_eq!(
        (requests_entry.first_seen_s, requests_entry.last_seen_s),
        (now, now)
    );

    shutdown.trigger();
    aggregator.wait().await.expect("stops cleanly");
}

async fn a_restart_neither_loses_nor_double_counts(backend: Backend) {
    let Some(setup) = setup(backend).await else {
        return;
    };
    let topics = setup.config.bus.topics();
    let now = now_s();
    let start = now - 600;
    let counter = |value| {
        metrics(vec![
            sum(
                "requests_total",
                AggregationTemporality::Cumulative,
                vec![number(start, now, value)],
            ),
            sum(
                "payments_total",
                AggregationTemporality::Delta,
                vec![number(0, now, 1.0)],
            ),
        ])
    };

    let (aggregator, shutdown) = setup.start().await;
    setup.publish(&topics.metrics, vec![counter(10.0)]).await;
    setup
        .publish(&topics.traces, vec![spans(1, 5, 1, now)])
        .await;
    setup
        .settled(Kind::Metric, "requests_total", 10, now, 1)
        .await;
    setup.settled(Kind::Span, "POST /pay", 10, now, 5).await;
    shutdown.trigger();
    aggregator.wait().await.expect("stops cleanly");

    // While it is down: the counter goes on, exported twice.
    setup
        .publish(&topics.metrics, vec![counter(15.0), counter(15.0)])
        .await;
    setup
        .publish(&topics.traces, vec![spans(100, 3, 0, now)])
        .await;
    let (aggregator, shutdown) = setup.start().await;
    let requests = setup
        .settled(Kind::Metric, "requests_total", 10, now, 3)
        .await;
    assert_rollup(&requests, 3, 15.0, 0);
    let payments = setup
        .settled(Kind::Metric, "payments_total", 10, now, 3)
        .await;
    assert_rollup(&payments, 3, 3.0, 0);
    let spans = setup.settled(Kind::Span, "POST /pay", 10, now, 8).await;
    assert_rollup(&spans, 8, 15.0 + 6.0, 1);
    shutdown.trigger();
    aggregator.wait().await.expect("stops cleanly");
}

/// `vigil up` started again over the same data: a new embedded bus on the
/// same log, then on a new log (its directory lost, or the store written
/// by a version whose bus lived in memory), the store with the earlier
/// processes' checkpoints. Nothing the new process publishes is taken for
/// already counted, nothing counted is counted again.
#[tokio::test]
async fn a_new_embedded_bus_over_the_same_store_loses_nothing() {
    let Some(mut setup) = setup(Backend::Embedded).await else {
        return;
    };
    let topics = setup.config.bus.topics();
    let now = now_s();
    // A running SDK's counter, exported cumulatively before and after each restart.
    let counter = |value| {
        metrics(vec![sum(
            "requests_total",
            AggregationTemporality::Cumulative,
            vec![number(now - 600, now, value)],
        )])
    };
    let (aggregator, shutdown) = setup.start().await;
    setup.publish(&topics.metrics, vec![counter(10.0)]).await;
    setup
        .publish(&topics.traces, vec![spans(1, 5, 1, now)])
        .await;
    setup.settled(Kind::Span, "POST /pay", 10, now, 5).await;
    setup
        .settled(Kind::Metric, "requests_total", 10, now, 1)
        .await;
    shutdown.trigger();
    aggregator.wait().await.expect("stops cleanly");

    let fresh_log = vigil_testing::embedded_bus_config();
    for (restart, log) in [setup.config.bus.embedded.clone(), fresh_log]
        .into_iter()
        .enumerate()
    {
        // The earlier process is gone, and so is its hold on the log.
        let Setup {
            mut config,
            bus: earlier,
            store,
        } = setup;
        drop(earlier);
        config.bus.embedded = log;
        let bus = bus::connect(&config.bus).expect("a new bus");
        setup = Setup { config, bus, store };
        let (aggregator, shutdown) = setup.start().await;
        let total = 10.0 + 5.0 * (restart + 1) as f64;
        setup.publish(&topics.metrics, vec![counter(total)]).await;
        setup
            .publish(
                &topics.traces,
                vec![spans(100 + 10 * restart as u64, 3, 0, now)],
            )
            .await;
        let requests = setup
            .settled(Kind::Metric, "requests_total", 10, now, restart as u64 + 2)
            .await;
        assert_rollup(&requests, restart as u64 + 2, total, 0);
        let expected = 5 + 3 * (restart as u64 + 1);
        let spans = setup
            .settled(Kind::Span, "POST /pay", 10, now, expected)
            .await;
        assert_rollup(&spans, expected, 15.0 + 6.0 * (restart + 1) as f64, 1);
        shutdown.trigger();
        aggregator.wait().await.expect("stops cleanly");
    }
}

/// A wallet app's session: started, a cold start of `start_ms`, stutter with
/// 3 of 10 frames slow, and `crashes` crashes of one fingerprint.
fn client_batch(time_s: u64, start_ms: f64, crashes: usize) -> ClientBatch {
    let at = |event: ClientEvent| ClientEvent {
        time_unix_nano: time_s * NS,
        ..event
    };
    let mut events = vec![
        at(ClientEvent {
            session_start: Some(SessionStart {}),
            ..Default::default()
        }),
        at(ClientEvent {
            app_start: Some(AppStart {
                kind: "cold".into(),
                duration_ms: start_ms,
            }),
            ..Default::default()
        }),
        at(ClientEvent {
            stutter: Some(Stutter {
                total_frames: 10,
                slow_frames: 3,
                ..Default::default()
            }),
            ..Default::default()
        }),
    ];
    events.extend((0..crashes).map(|_| {
        at(ClientEvent {
            crash: Some(Crash {
                kind: "native".into(),
                exception_type: "SIGSEGV".into(),
                stack_fingerprint: "f00d".into(),
                ..Default::default()
            }),
            ..Default::default()
        })
    }));
    ClientBatch {
        context: Some(ClientContext {
            app_id: "pay".into(),
            app_version: "2.1.0".into(),
            os_name: "android".into(),
            cohort: "canary".into(),
            ..Default::default()
        }),
        events,
    }
}

fn log_records(time_s: u64, severities: &[i32]) -> Vec<u8> {
    let records = severities
        .iter()
        .map(|&severity_number| LogRecord {
            time_unix_nano: time_s * NS,
            severity_number,
            body: Some(AnyValue {
                value: Some(any_value::Value::StringValue(format!(
                    "severity {severity_number}"
                ))),
            }),
            trace_id: TRACE.to_vec(),
            ..Default::default()
        })
        .collect();
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: resource(),
            scope_logs: vec![ScopeLogs {
                log_records: records,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

async fn client_telemetry_and_logs_are_rolled_up_and_kept(backend: Backend) {
    let Some(setup) = setup(backend).await else {
        return;
    };
    let topics = setup.config.bus.topics();
    let (aggregator, shutdown) = setup.start().await;
    let now = now_s();
    let client = ExportClientRequest {
        batches: vec![client_batch(now, 800.0, 1), client_batch(now, 1200.0, 0)],
    };
    setup
        .publish(
            &topics.client,
            vec![client.encode_to_vec(), client.encode_to_vec()],
        )
        .await;
    setup
        .publish(&topics.logs, vec![log_records(now, &[9, 13, 17, 21, 9])])
        .await;

    // Two messages of two sessions each.
    let sessions = setup
        .settled(Kind::Client, "client.sessions", 10, now, 4)
        .await;
    assert_rollup(&sessions, 4, 4.0, 0);
    let starts = setup
        .settled(Kind::Client, "client.app_start", 10, now, 4)
        .await;
    assert_rollup(&starts, 4, 4000.0, 0);
    assert_eq!(
        (starts.values.min(), starts.values.max()),
        (Some(800.0), Some(1200.0))
    );
    let crashes = setup
        .settled(Kind::Client, "client.crashes", 10, now, 2)
        .await;
    assert_rollup(&crashes, 2, 2.0, 2);
    let slow = setup
        .settled(Kind::Client, "client.frames.slow", 10, now, 4)
        .await;
    assert_rollup(&slow, 4, 12.0, 0);
    let frames = setup
        .settled(Kind::Client, "client.frames", 10, now, 4)
        .await;
    assert_rollup(&frames, 4, 40.0, 0);

    let logs = setup.settled(Kind::Metric, "log.records", 10, now, 5).await;
    assert_rollup(&logs, 5, 5.0, 2);

    // Crashes and log records kept raw, once each although a crash came twice
    // in equal messages (they are two crashes: two offsets).
    let acme = TenantId::parse("acme").expect("tenant");
    let range = ((now - 1) * NS, (now + 1) * NS);
    let crash_events = setup
        .store
        .events(&EventQuery::new(
            acme.clone(),
            EventKind::Crash,
            range.0,
            range.1,
        ))
        .await
        .expect("reads crashes");
    assert_eq!(crash_events.len(), 2);
    assert!(crash_events.iter().all(|c| {
        c.fingerprint == "f00d"
            && c.service == "pay"
            && c.attributes
                .contains(&("vigil.cohort".into(), "canary".into()))
    }));
    let mut by_trace = EventQuery::new(acme, EventKind::Log, range.0, range.1);
    by_trace.trace_id = Some("07".repeat(16));
    let log_events = setup.store.events(&by_trace).await.expect("reads logs");
    let mut severities: Vec<&str> = log_events.iter().map(|e| e.name.as_str()).collect();
    severities.sort_unstable();
    assert_eq!(severities, vec!["ERROR", "FATAL", "INFO", "INFO", "WARN"]);
    assert_eq!(aggregator.metrics().events_written.get(), 7);
    shutdown.trigger();
    aggregator.wait().await.expect("stops cleanly");
}

/// Every flush's rows reach the rollups topic; a message that cannot be
/// read goes to the dead-letter topic with its reason, and the messages
/// after it in its partition are still counted.
async fn flushes_are_published_and_bad_messages_dead_lettered(backend: Backend) {
    let Some(setup) = setup(backend).await else {
        return;
    };
    let topics = setup.config.bus.topics();
    let (aggregator, shutdown) = setup.start().await;
    let now = now_s();
    // One key: one partition, in this order.
    setup
        .publish(
            &topics.traces,
            vec![
                spans(1, 30, 2, now),
                b"\x0a\xff\xff not protobuf".to_vec(),
                spans(31, 20, 1, now),
            ],
        )
        .await;
    setup
        .bus
        .publish(
            &topics.traces,
            vec![Record::new(
                bytes::Bytes::from_static(b"no-slash"),
                spans(60, 1, 0, now),
            )],
        )
        .await
        .expect("published");

    let counted = setup.settled(Kind::Span, "POST /pay", 10, now, 50).await;
    assert_rollup(&counted, 50, (1..=30).chain(1..=20).map(f64::from).sum(), 3);

    let mut letters = setup
        .bus
        .subscribe(&topics.dead_letter, "test-dead-letters")
        .await
        .expect("subscribes");
    let letters = testing::read_until(letters.as_mut(), |m| m.len() >= 2).await;
    let mut letters: Vec<DeadLetter> = letters
        .iter()
        .map(|m| DeadLetter::decode(&m.payload[..]).expect("a dead letter"))
        .collect();
    letters.sort_by(|a, b| a.key.cmp(&b.key));
    assert_eq!(letters.len(), 2);
    assert_eq!(letters[0].key, b"acme/pay");
    assert_eq!(letters[0].payload, b"\x0a\xff\xff not protobuf");
    assert_eq!(letters[0].source, topics.traces);
    assert!(
        letters[0]
            .reason
            .starts_with("payload is not a OTLP ExportTraceServiceRequest"),
        "{}",
        letters[0].reason
    );
    assert_eq!(letters[1].key, b"no-slash");
    assert_eq!(
        letters[1].reason,
        "message key \"no-slash\" is not `tenant/service`"
    );

    // The published 10 s rows add up to what the store holds, and each
    // partition's seq only grows.
    let mut published = setup
        .bus
        .subscribe(&topics.rollups, "test-rollups")
        .await
        .expect("subscribes");
    let mut total = Rollup::default();
    let mut last_seq = std::collections::HashMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while total.values.count() < 50 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "published {total:?}"
        );
        for message in published
            .poll(100, Duration::from_millis(200))
            .await
            .expect("polls")
        {
            let batch = rollups::decode(&message.payload).expect("a rollup batch");
            assert_eq!(batch.source, topics.traces);
            let last = last_seq.insert(batch.partition, batch.seq);
            assert!(
                last.is_none_or(|last| last < batch.seq),
                "seq {last:?} then {}",
                batch.seq
            );
            for row in batch.rows.iter().filter(|r| {
                r.width_s == 10 && r.series.name == "POST /pay" && r.start_s == now - now % 10
            }) {
                total.merge(&row.rollup);
            }
        }
    }
    assert_eq!(total.values.count(), counted.values.count());
    assert_eq!(total.errors, counted.errors);
    assert_eq!(total.values.to_buckets(), counted.values.to_buckets());
    let metrics = aggregator.metrics();
    assert_eq!(metrics.dead_letters.get(), 2);
    assert_eq!(metrics.undecodable_messages.get(), 2);
    assert!(metrics.published_batches.get() >= 1);
    let scraped = reqwest::get(format!("http://{}/metrics", aggregator.metrics_address()))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("a body");
    assert!(
        scraped.contains(
            "\n# TYPE vigil_aggregator_dead_letters counter\nvigil_aggregator_dead_letters_total 2\n"
        ),
        "{scraped}"
    );
    shutdown.trigger();
    aggregator.wait().await.expect("stops cleanly");
}

/// Aggregators joining and leaving one group mid-stream: the partitions
/// move between them, and every span is counted once.
async fn a_rebalance_neither_loses_nor_double_counts(backend: Backend) {
    let Some(setup) = setup(backend).await else {
        return;
    };
    let topics = setup.config.bus.topics();
    let now = now_s();
    let keys = ["acme/pay-a", "acme/pay-b", "acme/pay-c", "acme/pay-d"];
    let (first, stop_first) = setup.start().await;
    let first_metrics = Arc::clone(first.metrics());
    let mut first = Some(first);
    let mut second = None;
    for round in 0..30u64 {
        if round == 10 {
            second = Some(setup.start().await);
        }
        if round == 20 {
            stop_first.trigger();
            first
                .take()
                .expect("running")
                .wait()
                .await
                .expect("stops cleanly");
        }
        let records = keys
            .iter()
            .zip(0u64..)
            .map(|(key, k)| {
                Record::new(
                    bytes::Bytes::from_static(key.as_bytes()),
                    spans(round * 100 + k * 10, 5, 1, now),
                )
            })
            .collect();
        setup
            .bus
            .publish(&topics.traces, records)
            .await
            .expect("published");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (second, stop_second) = second.expect("started");
    let total = setup.settled(Kind::Span, "POST /pay", 10, now, 600).await;
    assert_rollup(&total, 600, 30.0 * 4.0 * 15.0, 120);
    let taken = |metrics: &vigil_aggregator::Metrics| metrics.messages.get();
    assert!(
        taken(&first_metrics) > 0,
        "the first aggregator took nothing"
    );
    assert!(
        taken(second.metrics()) > 0,
        "the second aggregator took nothing"
    );
    stop_second.trigger();
    second.wait().await.expect("stops cleanly");
}

/// ClickHouse cut off mid-stream: the aggregator stops, retries with
/// backoff, and once ClickHouse is back every span is stored exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_clickhouse_delays_but_loses_nothing() {
    let Some(setup) = setup(Backend::Kafka).await else {
        return;
    };
    let topics = setup.config.bus.topics();
    let (proxy, aggregator, shutdown) = setup.start_behind_proxy().await;
    let now = now_s();

    setup
        .publish(&topics.traces, vec![spans(1, 10, 1, now)])
        .await;
    setup.settled(Kind::Span, "POST /pay", 10, now, 10).await;

    proxy.cut();
    setup
        .publish(
            &topics.traces,
            vec![spans(11, 20, 2, now), spans(31, 30, 0, now)],
        )
        .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let during = setup.total(Kind::Span, "POST /pay", 10, now).await;
    assert_eq!(
        during.values.count(),
        10,
        "nothing is written while it is down"
    );
    assert!(aggregator.metrics().failed_flushes.get() > 0);

    proxy.restore();
    let total = setup.settled(Kind::Span, "POST /pay", 10, now, 60).await;
    let sum: f64 = (1..=10).chain(1..=20).chain(1..=30).map(f64::from).sum();
    assert_rollup(&total, 60, sum, 3);
    shutdown.trigger();
    aggregator.wait().await.expect("stops cleanly");
}

/// ClickHouse takes a flush and its answer is lost: the aggregator's retry
/// finds the flush's checkpoint in the store and writes nothing twice.
#[tokio::test]
async fn a_flush_whose_answer_was_lost_is_not_written_twice() {
    let Some(setup) = setup(Backend::Kafka).await else {
        return;
    };
    let topics = setup.config.bus.topics();
    let (proxy, aggregator, shutdown) = setup.start_behind_proxy().await;
    let now = now_s();
    setup
        .publish(&topics.traces, vec![spans(1, 10, 1, now)])
        .await;
    setup.settled(Kind::Span, "POST /pay", 10, now, 10).await;

    proxy.drop_answer_to(&["INSERT", "rollups"]);
    setup
        .publish(&topics.traces, vec![spans(11, 20, 2, now)])
        .await;
    let total = setup.settled(Kind::Span, "POST /pay", 10, now, 30).await;
    assert!(proxy.dropped_answer(), "the insert's answer was dropped");
    assert!(aggregator.metrics().failed_flushes.get() > 0);
    let sum: f64 = (1..=10).chain(1..=20).map(f64::from).sum();
    assert_rollup(&total, 30, sum, 3);
    shutdown.trigger();
    aggregator.wait().await.expect("stops cleanly");
}

/// Distribution::quantile of what the store merged equals the one of the
/// same values recorded directly.
async fn stored_distributions_equal_recorded_ones(backend: Backend) {
    let Some(setup) = setup(backend).await else {
        return;
    };
    let topics = setup.config.bus.topics();
    let (aggregator, shutdown) = setup.start().await;
    let now = now_s();
    let payloads = (0..10).map(|i| spans(i * 50, 50, 0, now)).collect();
    setup.publish(&topics.traces, payloads).await;
    let stored = setup.settled(Kind::Span, "POST /pay", 10, now, 500).await;
    let mut direct = Distribution::new();
    for _ in 0..10 {
        for ms in 1..=50 {
            direct.record(f64::from(ms)).expect("finite");
        }
    }
    assert_eq!(stored.values.to_buckets(), direct.to_buckets());
    shutdown.trigger();
    aggregator.wait().await.expect("stops cleanly");
}

/// A tenant at its limit of active series (3 here: one span series, two
/// gauges) keeps its known series while the points of a new one are refused
/// and counted, and a restarted aggregator still counts the series of the
/// windows it restores (a partition's, at its first message).
async fn a_tenant_at_its_series_limit_keeps_its_known_series(backend: Backend) {
    let Some(mut setup) = setup(backend).await else {
        return;
    };
    setup.config.aggregator.max_active_series_per_tenant = 3;
    let topics = setup.config.bus.topics();
    let (aggregator, shutdown) = setup.start().await;
    let now = now_s();
    setup
        .publish(&topics.traces, vec![spans(1, 5, 0, now)])
        .await;
    setup.settled(Kind::Span, "POST /pay", 10, now, 5).await;
    let gauges = |names: &[&str], value: f64| {
        metrics(
            names
                .iter()
                .map(|name| gauge(name, vec![number(0, now, value)]))
                .collect(),
        )
    };
    setup
        .publish(
            &topics.metrics,
            vec![gauges(&["g1", "g2"], 1.0), gauges(&["g3", "g1"], 2.0)],
        )
        .await;
    assert_rollup(
        &setup.settled(Kind::Metric, "g1", 10, now, 2).await,
        2,
        3.0,
        0,
    );
    assert_rollup(&setup.total(Kind::Metric, "g2", 10, now).await, 1, 1.0, 0);
    assert_eq!(
        setup
            .total(Kind::Metric, "g3", 10, now)
            .await
            .values
            .count(),
        0
    );
    let rendered = aggregator.metrics().render();
    for line in [
        r#"vigil_aggregator_series_refused_total{tenant="acme",kind="metric"} 1"#,
        r#"vigil_aggregator_active_series{tenant="acme"} 3"#,
    ] {
        assert!(rendered.contains(line), "{line} not in\n{rendered}");
    }
    shutdown.trigger();
    aggregator.wait().await.expect("stops cleanly");

    // Partitions resume at their first message: traffic goes on as before.
    let (aggregator, shutdown) = setup.start().await;
    setup
        .publish(&topics.traces, vec![spans(6, 5, 0, now)])
        .await;
    setup.settled(Kind::Span, "POST /pay", 10, now, 10).await;
    setup
        .publish(
            &topics.metrics,
            vec![gauges(&["g3"], 4.0), gauges(&["g2"], 8.0)],
        )
        .await;
    assert_rollup(
        &setup.settled(Kind::Metric, "g2", 10, now, 2).await,
        2,
        9.0,
        0,
    );
    assert_eq!(
        setup
            .total(Kind::Metric, "g3", 10, now)
            .await
            .values
            .count(),
        0
    );
    let rendered = aggregator.metrics().render();
    assert!(
        rendered
            .contains(r#"vigil_aggregator_series_refused_total{tenant="acme",kind="metric"} 1"#),
        "{rendered}"
    );
    shutdown.trigger();
    aggregator.wait().await.expect("stops cleanly");
}

on_both_backends!(
    a_tenant_at_its_series_limit_keeps_its_known_series,
    every_signal_is_rolled_up_exactly,
    a_restart_neither_loses_nor_double_counts,
    stored_distributions_equal_recorded_ones,
    client_telemetry_and_logs_are_rolled_up_and_kept,
    flushes_are_published_and_bad_messages_dead_lettered,
    a_rebalance_neither_loses_nor_double_counts,
);
