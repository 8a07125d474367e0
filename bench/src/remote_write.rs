//! `vigil bench remote-write`: Prometheus remote-write into any receiver
//! already running — a Vigil collector, `vigil up`, VictoriaMetrics, a
//! Prometheus with its receiver on — so that receivers can be compared side
//! by side with one load generator. The receiver's CPU time comes from
//! `/proc/<pid>/stat`, so the figures are its own, not the generator's.
//!
//! The payload is the one of a Prometheus agent's remote-write queue:
//! `--series` series (`bench_metric_<n % 10>` with job, instance and
//! series labels), `--samples` samples each, one second apart, in one
//! snappy-compressed `WriteRequest`, posted again and again from
//! `--connections` connections.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use prost::Message as _;
use vigil_proto::prometheus::{Label, Sample, TimeSeries, WriteRequest};

use crate::collector::{BenchError, Figures, cpu_seconds};

/// What to send, and where.
#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// The receiver's write URL: Vigil's collector
    /// http://127.0.0.1:4318/api/v1/write, VictoriaMetrics
    /// http://127.0.0.1:8428/api/v1/write.
    #[arg(long)]
    pub url: String,
    /// The receiver's process id, whose CPU time is measured.
    #[arg(long)]
    pub pid: u32,
    /// A bearer token, for receivers that want one.
    #[arg(long)]
    pub token: Option<String>,
    /// Series per request.
    #[arg(long, default_value_t = 1000)]
    pub series: usize,
    /// Samples per series per request.
    #[arg(long, default_value_t = 10)]
    pub samples: usize,
    /// Concurrent connections.
    #[arg(long, default_value_t = 8)]
    pub connections: usize,
    /// Seconds of load.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
}

/// The request body: `series` series of `samples` samples, snappy-compressed.
pub fn payload(series: usize, samples: usize) -> Vec<u8> {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    let label = |name: &str, value: String| Label {
        name: name.to_owned(),
        value,
    };
    let write = WriteRequest {
        timeseries: (0..series)
            .map(|n| TimeSeries {
                // Sorted by name, as Prometheus sends them.
                labels: vec![
                    label("__name__", format!("bench_metric_{}", n % 10)),
                    label("instance", format!("host-{}:9100", n / 10 % 100)),
                    label("job", "bench".to_owned()),
                    label("series", n.to_string()),
                ],
                samples: (0..samples)
                    .map(|k| Sample {
                        value: (n * samples + k) as f64,
                        timestamp: now_ms - 1_000 * (samples - k) as i64,
                    })
                    .collect(),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    snap::raw::Encoder::new()
        .compress_vec(&write.encode_to_vec())
        .unwrap_or_default()
}

/// Posts the payload from every connection until `options.seconds` pass;
/// a request pushed back (429, 503) waits 100 ms and goes again. The
/// figures count samples, with the receiver's CPU time; and the bytes of
/// one request on the wire.
pub async fn run(options: &Options) -> Result<(Figures, usize), BenchError> {
    let body = bytes::Bytes::from(payload(options.series, options.samples));
    let per_request = (options.series * options.samples) as u64;
    let cpu_before = cpu_seconds(options.pid)?;
    let start = Instant::now();
    let deadline = start + Duration::from_secs(options.seconds);
    let tasks: Vec<_> = (0..options.connections)
        .map(|_| {
            let (body, url, token) = (body.clone(), options.url.clone(), options.token.clone());
            tokio::spawn(async move {
                let client = reqwest::Client::new();
                let mut sent = 0u64;
                while Instant::now() < deadline {
                    let mut request = client
                        .post(&url)
                        .header("content-type", "application/x-protobuf")
                        .header("content-encoding", "snappy")
                        .header("x-prometheus-remote-write-version", "0.1.0")
                        .body(body.clone());
                    if let Some(token) = &token {
                        request = request.bearer_auth(token);
                    }
                    let response = request
                        .send()
                        .await
                        .map_err(|e| BenchError::Start(format!("{url}: {e}")))?;
                    let status = response.status();
                    if status.is_success() {
                        sent += 1;
                    } else if matches!(status.as_u16(), 429 | 503) {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    } else {
                        let text = response.text().await.unwrap_or_default();
                        return Err(BenchError::Start(format!("{url}: {status} {text}")));
                    }
                }
                Ok(sent)
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
    let figures = Figures {
        items: requests * per_request,
        seconds,
        collector_cpu_seconds: cpu_seconds(options.pid)? - cpu_before,
    };
    Ok((figures, body.len()))
}
