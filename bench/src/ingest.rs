//! `vigil bench ingest`: what a point costs through the whole pipeline —
//! collector, bus, aggregator, store — driven over loopback.
//!
//! `--deployment embedded` runs one `vigil up` (the durable embedded bus,
//! SQLite) as a child process; `--deployment kafka` runs `vigil collector`
//! and `vigil aggregator` on the configuration's Kafka bus and store, each
//! measured on its own. Four workloads, one after the other:
//!
//! - `remote-write`: Prometheus remote-write, 1,000 series × 10 samples per
//!   request (the payload of `vigil bench remote-write`, which any other
//!   receiver can be given);
//! - `otlp-many-series`: OTLP gauges, 1,000 points per request each of its
//!   own series, 100,000 series in turn (many series, few points);
//! - `otlp-many-points`: OTLP gauges, 10 series × 100 points per request
//!   (few series, many points);
//! - `otlp-spans`: OTLP server spans, 1,000 per request.
//!
//! Load runs for `--seconds`; then the aggregator is given until it has
//! taken everything (its observation counter stands still for a second).
//! The CPU of each process is counted from the first request until then,
//! so what the aggregator does after the load is paid for, and the points
//! counted are those the aggregator took (a point the collector refused
//! costs and counts nothing). The rate and series limits are lifted.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use opentelemetry_proto::tonic::metrics::v1::{
    Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use vigil_config::{BusKind, Config, StoreKind};

use crate::collector::{VigilProcess, fresh_topics, spans_request};
use crate::{remote_write, string_attribute};

/// Where the pipeline runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Deployment {
    /// One `vigil up`: embedded bus, SQLite.
    Embedded,
    /// `vigil collector` and `vigil aggregator` on the configuration's
    /// Kafka bus and store.
    Kafka,
}

/// What to run.
#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// Seconds of load per workload.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Concurrent connections.
    #[arg(long, default_value_t = 8)]
    pub connections: usize,
    #[arg(long, value_enum, default_value_t = Deployment::Embedded)]
    pub deployment: Deployment,
    /// Where the embedded deployment's data directory goes (default: the
    /// system's temporary directory).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// The `vigil` binary run as the pipeline (default: this one): two
    /// builds compared side by side under one load generator.
    #[arg(long)]
    pub exe: Option<PathBuf>,
    /// Only these workloads (`remote-write`, `otlp-many-series`,
    /// `otlp-many-points`, `otlp-spans`; default: all, in that order): a
    /// broker that keeps what it was sent (tansu's memory storage) slows
    /// down as it fills, so a workload after a faster one meets a fuller
    /// broker.
    #[arg(long = "workload")]
    pub workloads: Vec<String>,
}

/// The figures of one workload.
#[derive(Debug, Clone)]
pub struct Figures {
    pub workload: &'static str,
    pub points: u64,
    pub load_seconds: f64,
    /// From the end of the load until the aggregator had taken it all.
    pub drain_seconds: f64,
    /// CPU seconds of each process measured, by its name.
    pub cpu_seconds: Vec<(&'static str, f64)>,
}

impl Figures {
    /// Points the aggregator took per second of load.
    pub fn per_second(&self) -> f64 {
        self.points as f64 / self.load_seconds
    }

    pub fn cpu_seconds_per_million(&self, cpu_seconds: f64) -> f64 {
        cpu_seconds * 1e6 / self.points as f64
    }
}

type Error = Box<dyn std::error::Error + Send + Sync>;

/// One request's body, of one of the protocols.
#[derive(Clone)]
enum Body {
    RemoteWrite(Bytes),
    Metrics(ExportMetricsServiceRequest),
    Spans(ExportTraceServiceRequest),
}

/// A workload: its name and the requests sent in turn.
struct Workload {
    name: &'static str,
    bodies: Vec<Body>,
}

fn workloads() -> Vec<Workload> {
    vec![
        Workload {
            name: "remote-write",
            bodies: vec![Body::RemoteWrite(Bytes::from(remote_write::payload(
                1_000, 10,
            )))],
        },
        Workload {
            name: "otlp-many-series",
            bodies: (0..100)
                .map(|turn| {
                    let prefix = format!("q-{turn}-");
                    Body::Metrics(gauges("queue.depth", ("queue", &prefix), 1_000, 1))
                })
                .collect(),
        },
        Workload {
            name: "otlp-many-points",
            bodies: vec![Body::Metrics(gauges(
                "queue.depth",
                ("queue", "q-"),
                10,
                100,
            ))],
        },
        Workload {
            name: "otlp-spans",
            bodies: vec![Body::Spans(spans_request(1_000))],
        },
    ]
}

/// `series` series of gauge `metric` over 10 services, told apart by
/// attribute `key` (`{prefix}{i}`), `points` each a second apart ending now.
pub(crate) fn gauges(
    metric: &str,
    (key, prefix): (&str, &str),
    series: usize,
    points: usize,
) -> ExportMetricsServiceRequest {
    let now_s = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let per_service = series.div_ceil(10);
    let resource_metrics = (0..10)
        .map(|s| ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![string_attribute("service.name", &format!("svc-{s}"))],
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![Metric {
                    name: metric.to_owned(),
                    data: Some(Data::Gauge(Gauge {
                        data_points: (0..per_service)
                            .flat_map(|i| {
                                (0..points).map(move |k| NumberDataPoint {
                                    attributes: vec![
                                        string_attribute(key, &format!("{prefix}{i}")),
                                        string_attribute("vigil.unit", "unit-a"),
                                    ],
                                    time_unix_nano: (now_s - (points - k) as u64) * 1_000_000_000,
                                    value: Some(number_data_point::Value::AsDouble(k as f64)),
                                    ..Default::default()
                                })
                            })
                            .collect(),
                    })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        })
        .collect();
    ExportMetricsServiceRequest { resource_metrics }
}

/// The processes measured, the collector's addresses and the aggregator's
/// metrics URL.
struct Pipeline {
    processes: Vec<(&'static str, VigilProcess)>,
    grpc: String,
    http: String,
    aggregator_metrics: String,
    data: Option<PathBuf>,
}

impl Pipeline {
    fn start(exe: &Path, config: &Config, options: &Options) -> Result<Pipeline, Error> {
        let mut config = config.clone();
        fresh_topics(&mut config);
        // The load measures the pipeline, not its limits: 100,000 series
        // are new within the first seconds.
        config.collector.limits.max_new_series_per_metric_per_minute = 10_000_000;
        config.collector.limits.max_active_series_per_tenant = 1_000_000;
        config.aggregator.max_active_series_per_tenant = 1_000_000;
        match options.deployment {
            Deployment::Embedded => {
                let data = options
                    .dir
                    .clone()
                    .unwrap_or_else(std::env::temp_dir)
                    .join(format!("vigil-bench-ingest-{}", std::process::id()));
                std::fs::create_dir_all(&data)?;
                config.bus.kind = BusKind::Embedded;
                config.bus.embedded.path = Some(data.join("bus"));
                config.store.kind = StoreKind::Sqlite;
                config.store.sqlite.path = data.join("vigil.sqlite");
                let data_arg = data.display().to_string();
                let mut up = VigilProcess::start(exe, &config, &["up", "--data", &data_arg])?;
                let grpc = up.address("OTLP/gRPC ")?;
                let http = up.address("OTLP/HTTP ")?;
                let aggregator_metrics = up.address("aggregator  metrics ")?;
                Ok(Pipeline {
                    grpc,
                    processes: vec![("vigil up", up)],
                    http,
                    aggregator_metrics,
                    data: Some(data),
                })
            }
            Deployment::Kafka => {
                config.bus.kind = BusKind::Kafka;
                let mut collector = VigilProcess::start(exe, &config, &["collector"])?;
                let mut aggregator = VigilProcess::start(exe, &config, &["aggregator"])?;
                let grpc = collector.address("OTLP/gRPC ")?;
                let http = collector.address("OTLP/HTTP ")?;
                let aggregator_metrics = aggregator.address("metrics on ")?;
                Ok(Pipeline {
                    grpc,
                    processes: vec![
                        ("vigil collector", collector),
                        ("vigil aggregator", aggregator),
                    ],
                    http,
                    aggregator_metrics,
                    data: None,
                })
            }
        }
    }

    fn cpu_seconds(&self) -> Result<Vec<f64>, Error> {
        self.processes
            .iter()
            .map(|(_, process)| Ok(process.cpu_seconds()?))
            .collect()
    }

    fn stop(self) -> Result<(), Error> {
        for (_, process) in self.processes {
            process.stop();
        }
        if let Some(data) = self.data {
            std::fs::remove_dir_all(data)?;
        }
        Ok(())
    }
}

/// Runs every workload through a pipeline started from `exe` (the `vigil`
/// binary) with `config`.
pub async fn run(exe: &Path, config: &Config, options: &Options) -> Result<Vec<Figures>, Error> {
    let chosen: Vec<Workload> = workloads()
        .into_iter()
        .filter(|w| options.workloads.is_empty() || options.workloads.iter().any(|n| n == w.name))
        .collect();
    if chosen.is_empty() {
        let names: Vec<&str> = workloads().iter().map(|w| w.name).collect();
        return Err(Error::from(format!(
            "no workload is called {:?}; there are {names:?}",
            options.workloads
        )));
    }
    let pipeline = Pipeline::start(exe, config, options)?;
    let mut figures = Vec::new();
    for workload in chosen {
        match measure(&pipeline, &workload, options).await {
            Ok(found) => figures.push(found),
            Err(error) => {
                pipeline.stop()?;
                return Err(error);
            }
        }
    }
    pipeline.stop()?;
    Ok(figures)
}

async fn measure(
    pipeline: &Pipeline,
    workload: &Workload,
    options: &Options,
) -> Result<Figures, Error> {
    let observed = || observations(&pipeline.aggregator_metrics);
    let taken_before = observed().await?;
    let before = pipeline.cpu_seconds()?;
    let start = Instant::now();
    drive(pipeline, workload, options).await?;
    let load_seconds = start.elapsed().as_secs_f64();
    // Taken once the aggregator's count stands still for a second.
    let ended = Instant::now();
    let mut last = observed().await?;
    let mut still = 0;
    while still < 4 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = observed().await?;
        still = if now == last { still + 1 } else { 0 };
        last = now;
        if ended.elapsed() > Duration::from_secs(600) {
            return Err("the aggregator did not take the load within 10 minutes".into());
        }
    }
    let drain_seconds = ended.elapsed().as_secs_f64() - 1.0;
    let after = pipeline.cpu_seconds()?;
    Ok(Figures {
        workload: workload.name,
        points: (last - taken_before) as u64,
        load_seconds,
        drain_seconds: drain_seconds.max(0.0),
        cpu_seconds: pipeline
            .processes
            .iter()
            .zip(before.iter().zip(after))
            .map(|((name, _), (before, after))| (*name, after - before))
            .collect(),
    })
}

/// Sends the workload's requests from `options.connections` tasks until
/// the load's time is up. A request pushed back
/// (429, 503, RESOURCE_EXHAUSTED, UNAVAILABLE) is tried again 100 ms later.
async fn drive(pipeline: &Pipeline, workload: &Workload, options: &Options) -> Result<(), Error> {
    let deadline = Instant::now() + Duration::from_secs(options.seconds);
    let mut tasks = Vec::new();
    for task in 0..options.connections {
        let bodies = workload.bodies.clone();
        let (grpc, http) = (
            format!("http://{}", pipeline.grpc),
            format!("http://{}/api/v1/write", pipeline.http),
        );
        tasks.push(tokio::spawn(async move {
            let mut metrics = MetricsServiceClient::connect(grpc.clone()).await?;
            let mut traces = TraceServiceClient::connect(grpc).await?;
            let web = reqwest::Client::new();
            let mut turn = task;
            while Instant::now() < deadline {
                let body = &bodies[turn % bodies.len()];
                turn += 1;
                let pushed_back = match body {
                    Body::RemoteWrite(payload) => {
                        let response = web
                            .post(&http)
                            .header("content-type", "application/x-protobuf")
                            .header("content-encoding", "snappy")
                            .header("x-prometheus-remote-write-version", "0.1.0")
                            .body(payload.clone())
                            .send()
                            .await?;
                        let status = response.status();
                        if !status.is_success() && !matches!(status.as_u16(), 429 | 503) {
                            let text = response.text().await.unwrap_or_default();
                            return Err(format!("{http}: {status} {text}").into());
                        }
                        !status.is_success()
                    }
                    Body::Metrics(request) => {
                        pushed_back(metrics.export(request.clone()).await.map(drop))?
                    }
                    Body::Spans(request) => {
                        pushed_back(traces.export(request.clone()).await.map(drop))?
                    }
                };
                if pushed_back {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
            Ok::<(), Error>(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok(())
}

/// Whether a gRPC answer pushed back; an error otherwise.
fn pushed_back(answer: Result<(), tonic::Status>) -> Result<bool, Error> {
    match answer {
        Ok(()) => Ok(false),
        Err(status)
            if matches!(
                status.code(),
                tonic::Code::ResourceExhausted | tonic::Code::Unavailable
            ) =>
        {
            Ok(true)
        }
        Err(status) => Err(status.into()),
    }
}

/// The observations the aggregator took so far.
async fn observations(address: &str) -> Result<f64, Error> {
    let text = reqwest::get(format!("http://{address}/metrics"))
        .await?
        .text()
        .await?;
    Ok(text
        .lines()
        .find_map(|line| line.strip_prefix("vigil_aggregator_observations_total "))
        .and_then(|value| value.trim().parse::<f64>().ok())
        .unwrap_or(0.0))
}
