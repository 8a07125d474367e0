//! `vigil bench collector`: throughput and cost of one collector process.
//!
//! The collector runs as a child process (`vigil collector`, this same binary)
//! on the Kafka bus of the configuration, with acks=all. Several gRPC
//! connections send pre-built OTLP requests over loopback for a fixed time,
//! first metrics, then spans. The child's own CPU time and peak resident
//! memory come from `/proc`, so the figures are the collector's alone, not the
//! load generator's.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use tonic::transport::Channel;
use vigil_config::{BusKind, Config};
use vigil_domain::tenant::TenantId;

use crate::string_attribute;

/// What to run.
#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// Seconds of load for each signal.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Concurrent gRPC connections.
    #[arg(long, default_value_t = 8)]
    pub connections: usize,
    /// Data points or spans per request.
    #[arg(long, default_value_t = 1000)]
    pub batch: usize,
}

/// The figures of one signal (or of one remote-write run).
#[derive(Debug, Clone)]
pub struct Figures {
    pub items: u64,
    pub seconds: f64,
    /// CPU time of the process that took the items (a collector, `vigil
    /// up`, or any remote-write receiver).
    pub collector_cpu_seconds: f64,
}

impl Figures {
    pub fn per_second(&self) -> f64 {
        self.items as f64 / self.seconds
    }

    /// Items per second of collector CPU: the throughput of one core.
    pub fn per_core_second(&self) -> f64 {
        self.items as f64 / self.collector_cpu_seconds
    }

    pub fn cpu_seconds_per_million(&self) -> f64 {
        self.collector_cpu_seconds * 1e6 / self.items as f64
    }
}

/// The figures of a whole run.
#[derive(Debug, Clone)]
pub struct BenchReport {
    pub metrics: Figures,
    pub spans: Figures,
    pub peak_rss_bytes: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("cannot start the collector: {0}")]
    Start(String),
    #[error("cannot reach the collector: {0}")]
    Connect(#[from] tonic::transport::Error),
    #[error("the collector refused a request: {0}")]
    Refused(#[from] tonic::Status),
    #[error("cannot read the collector's /proc entry: {0}")]
    Proc(String),
}

/// Runs the benchmark against a collector started from `exe` (the `vigil`
/// binary) with `config`, moved onto Kafka.
pub async fn run(
    exe: &Path,
    config: &Config,
    options: &Options,
) -> Result<BenchReport, BenchError> {
    let mut config = config.clone();
    config.bus.kind = BusKind::Kafka;
    fresh_topics(&mut config);
    let mut collector = VigilProcess::start(exe, &config, &["collector"])?;
    let report = load(&mut collector, options).await;
    collector.stop();
    report
}

/// Sends metrics, then spans, to the OTLP/gRPC listener of `collector`.
pub(crate) async fn load(
    collector: &mut VigilProcess,
    options: &Options,
) -> Result<BenchReport, BenchError> {
    let endpoint = format!("http://{}", collector.address("OTLP/gRPC ")?);

    let batch = options.batch as u64;

    let request = metrics_request(options.batch);
    let mut clients = Vec::new();
    for _ in 0..options.connections {
        clients.push(MetricsServiceClient::connect(endpoint.clone()).await?);
    }
    let export = move |mut client: MetricsServiceClient<Channel>| {
        let request = request.clone();
        async move { client.export(request).await.map(drop) }
    };
    let metrics = measure(collector, options, batch, clients, export).await?;

    let request = spans_request(options.batch);
    let mut clients = Vec::new();
    for _ in 0..options.connections {
        clients.push(TraceServiceClient::connect(endpoint.clone()).await?);
    }
    let export = move |mut client: TraceServiceClient<Channel>| {
        let request = request.clone();
        async move { client.export(request).await.map(drop) }
    };
    let spans = measure(collector, options, batch, clients, export).await?;

    let peak_rss_bytes = collector.peak_rss_bytes()?;
    Ok(BenchReport {
        metrics,
        spans,
        peak_rss_bytes,
    })
}

/// Sends requests with `export` from every client, one task each, until
/// `options.seconds` pass, counting `items_per_request` per answered request
/// and the collector's CPU time meanwhile.
async fn measure<Client, Export, Sent>(
    collector: &VigilProcess,
    options: &Options,
    items_per_request: u64,
    clients: Vec<Client>,
    export: Export,
) -> Result<Figures, BenchError>
where
    Client: Clone + Send + 'static,
    Export: Fn(Client) -> Sent + Clone + Send + 'static,
    Sent: Future<Output = Result<(), tonic::Status>> + Send,
{
    let cpu_before = collector.cpu_seconds()?;
    let start = Instant::now();
    let deadline = start + Duration::from_secs(options.seconds);
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|client| {
            let export = export.clone();
            tokio::spawn(async move {
                let mut sent = 0u64;
                while Instant::now() < deadline {
                    match export(client.clone()).await {
                        Ok(()) => sent += 1,
                        // Pushed back (the bus is full while the aggregator
                        // catches up): a client waits and tries again.
                        Err(status)
                            if matches!(
                                status.code(),
                                tonic::Code::ResourceExhausted | tonic::Code::Unavailable
                            ) =>
                        {
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                        Err(status) => return Err(status),
                    }
                }
                Ok::<_, tonic::Status>(sent)
            })
        })
        .collect();
    let mut requests = 0;
    for task in tasks {
        requests += task
            .await
            .map_err(|e| BenchError::Start(format!("load task failed: {e}")))??;
    }
    let seconds = start.elapsed().as_secs_f64();
    let collector_cpu_seconds = collector.cpu_seconds()? - cpu_before;
    Ok(Figures {
        items: requests * items_per_request,
        seconds,
        collector_cpu_seconds,
    })
}

/// A `vigil` child process (`vigil collector`, `vigil aggregator`, `vigil
/// up`) whose CPU time and memory are measured, and whose addresses are read
/// from what it prints.
pub(crate) struct VigilProcess {
    child: Child,
    /// Its standard output, line by line, and the lines read so far.
    printed: std::sync::mpsc::Receiver<String>,
    lines: Vec<String>,
    config_path: std::path::PathBuf,
}

impl VigilProcess {
    /// Runs `exe` with `args` (the subcommand) on `base`, with its listeners
    /// on free ports and one tenant without limits. Processes that share a
    /// bus share `base`'s topics: give it topics of its own with
    /// [`fresh_topics`].
    pub(crate) fn start(exe: &Path, base: &Config, args: &[&str]) -> Result<Self, BenchError> {
        let mut config = base.clone();
        let run = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        config.collector.grpc_listen = ([127, 0, 0, 1], 0).into();
        config.collector.http_listen = ([127, 0, 0, 1], 0).into();
        config.collector.metrics_listen = ([127, 0, 0, 1], 0).into();
        config.aggregator.metrics_listen = ([127, 0, 0, 1], 0).into();
        config.alerter.metrics_listen = ([127, 0, 0, 1], 0).into();
        config.synthetic.metrics_listen = ([127, 0, 0, 1], 0).into();
        config.api.listen = ([127, 0, 0, 1], 0).into();
        config.collector.anonymous_tenant = TenantId::parse("bench").ok();
        config.collector.tenants.clear();
        config.collector.limits.tenant_items_per_second = u64::MAX / 4;
        config.collector.limits.tenant_burst_items = u64::MAX / 4;
        let config_path =
            std::env::temp_dir().join(format!("vigil-bench-{}-{run}.toml", std::process::id()));
        std::fs::write(&config_path, config.to_toml()).map_err(|e| {
            BenchError::Start(format!("cannot write {}: {e}", config_path.display()))
        })?;
        let mut child = Command::new(exe)
            .arg("--config")
            .arg(&config_path)
            .args(args)
            .env("VIGIL_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| BenchError::Start(format!("cannot run {}: {e}", exe.display())))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| BenchError::Start("no standard output".to_owned()))?;
        // Read to the end, so that no later line meets a closed pipe.
        let (line, printed) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for text in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = line.send(text);
            }
        });
        Ok(VigilProcess {
            child,
            printed,
            lines: Vec::new(),
            config_path,
        })
    }

    /// The address printed after `marker` (`vigil collector` prints
    /// "OTLP/gRPC on <address>, …", `vigil up` "  collector   OTLP/gRPC
    /// http://<address>  …", `vigil aggregator` "metrics on
    /// http://<address>/metrics"), waiting up to a minute for it.
    pub(crate) fn address(&mut self, marker: &str) -> Result<String, BenchError> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let found = self.lines.iter().find_map(|line| {
                let rest = line.split(marker).nth(1)?;
                let address = rest
                    .trim_start_matches("on ")
                    .trim_start_matches("http://")
                    .split([',', ' ', '/'])
                    .next()?;
                Some(address.to_owned())
            });
            if let Some(found) = found {
                return Ok(found);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.printed.recv_timeout(left).map_err(|_| {
                BenchError::Start(format!("no address after {marker:?} was printed"))
            })?;
            self.lines.push(line);
        }
    }

    /// User plus system CPU time of the collector so far.
    pub(crate) fn cpu_seconds(&self) -> Result<f64, BenchError> {
        cpu_seconds(self.child.id())
    }

    pub(crate) fn peak_rss_bytes(&self) -> Result<u64, BenchError> {
        let path = format!("/proc/{}/status", self.child.id());
        let status = std::fs::read_to_string(&path).map_err(|e| BenchError::Proc(e.to_string()))?;
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmHWM:"))
            .and_then(|value| {
                value
                    .trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
            .map(|kib| kib * 1024)
            .ok_or_else(|| BenchError::Proc(format!("no VmHWM in {path}")))
    }

    pub(crate) fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.config_path);
    }
}

/// Topics no earlier run wrote: a prefix of this process and time.
pub(crate) fn fresh_topics(config: &mut Config) {
    let run = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    config.bus.topic_prefix = format!("bench.{}.{run}.", std::process::id());
}

/// User plus system CPU time of process `pid` so far.
pub(crate) fn cpu_seconds(pid: u32) -> Result<f64, BenchError> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).map_err(|e| BenchError::Proc(e.to_string()))?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after ')'.
    match (ticks(11), ticks(12)) {
        (Some(user), Some(system)) => Ok((user + system) as f64 / CLOCK_TICKS_PER_SECOND),
        _ => Err(BenchError::Proc(format!("unexpected {path}: {stat}"))),
    }
}

/// `USER_HZ`, the unit of `/proc/<pid>/stat` times: 100 on Linux everywhere.
const CLOCK_TICKS_PER_SECOND: f64 = 100.0;

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// `batch` gauge points over 10 services, each point its own series among a
/// fixed set, as a fleet reporting host metrics would.
fn metrics_request(batch: usize) -> ExportMetricsServiceRequest {
    crate::ingest::gauges("http.server.active_requests", ("host", "host-"), batch, 1)
}

/// `batch` server spans over 10 services, with the attributes a traced HTTP
/// handler carries.
pub(crate) fn spans_request(batch: usize) -> ExportTraceServiceRequest {
    let now = now_ns();
    let services = 10;
    let per_service = batch.div_ceil(services);
    ExportTraceServiceRequest {
        resource_spans: (0..services)
            .map(|s| ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![string_attribute("service.name", &format!("svc-{s}"))],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    spans: (0..per_service)
                        .map(|i| Span {
                            trace_id: (i as u128 + 1).to_be_bytes().to_vec(),
                            span_id: (i as u64 + 1).to_be_bytes().to_vec(),
                            name: "POST /pay".to_owned(),
                            kind: 2,
                            start_time_unix_nano: now - 5_000_000,
                            end_time_unix_nano: now,
                            attributes: vec![
                                string_attribute("http.route", "/pay"),
                                string_attribute("http.request.method", "POST"),
                                string_attribute("vigil.unit", "unit-a"),
                            ],
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                }],
                ..Default::default()
            })
            .collect(),
    }
}
