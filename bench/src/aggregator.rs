//! `vigil bench aggregator`:
//!
//! - [`store_writes`]: how fast rollup rows reach the configured store
//!   (flushes of 10k, 50k and 100k rows over 10k series, each row a
//!   distribution of 20 latencies, as one atomic flush with its checkpoint);
//! - [`lag`]: how long after the bus acknowledged a data point (the moment
//!   the collector answers its client) the point's 10 s rollup can be read
//!   from the store, under a steady load.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;

use opentelemetry_proto::tonic::metrics::v1::{
    Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, metric, number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message as _;
use vigil_bus::{self as bus, Record};
use vigil_config::Config;
use vigil_domain::model::{Checkpoint, RollupRow};
use vigil_domain::model::{Kind, Rollup, SeriesKey};
use vigil_domain::shutdown::Shutdown;
use vigil_domain::tenant::TenantId;
use vigil_store::{self as store, Flush, RollupQuery, RollupStore, StoreError};

use vigil_aggregator::Aggregator;

use crate::string_attribute;

/// `vigil bench aggregator`.
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct Options {
    /// Rows written for each flush size.
    #[arg(long, default_value_t = 500_000)]
    pub rows: usize,
    /// Data points per second of the lag load.
    #[arg(long, default_value_t = 100_000)]
    pub rate: u64,
    /// Seconds of lag load; 0 skips the lag measurement.
    #[arg(long, default_value_t = 30)]
    pub seconds: u64,
}

/// One measured flush size.
#[derive(Debug, Clone)]
pub struct WriteFigure {
    pub rows_per_flush: usize,
    pub flushes: usize,
    pub rows_per_second: f64,
    /// Slowest flush.
    pub max_flush: Duration,
}

/// Writes `total_rows` rows for each flush size and reports the rates.
pub async fn store_writes(
    store: &dyn RollupStore,
    total_rows: usize,
) -> Result<Vec<WriteFigure>, StoreError> {
    let tenant = TenantId::parse("bench").map_err(|e| StoreError::Fatal {
        reason: e.to_string(),
    })?;
    let series: Vec<Arc<SeriesKey>> = (0..10_000)
        .map(|i| {
            Arc::new(SeriesKey::new(
                tenant.clone(),
                Kind::Span,
                format!("service-{}", i % 50),
                format!("GET /route/{}", i / 50),
                vec![
                    ("vigil.unit".into(), format!("u{}", i % 4)),
                    ("service.version".into(), "1.4.2".into()),
                    ("span.kind".into(), "server".into()),
                    ("status".into(), "ok".into()),
                ],
            ))
        })
        .collect();
    let mut rollup = Rollup::default();
    for ms in 1..=20 {
        rollup
            .record(f64::from(ms) * 3.7, ms == 20)
            .map_err(|e| StoreError::Fatal {
                reason: e.to_string(),
            })?;
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut figures = Vec::new();
    let mut seq = 0;
    for rows_per_flush in [10_000, 50_000, 100_000] {
        let flushes = total_rows.div_ceil(rows_per_flush);
        let mut max_flush = Duration::ZERO;
        let started = Instant::now();
        for flush_index in 0..flushes {
            seq += 1;
            let rows = (0..rows_per_flush)
                .map(|i| RollupRow {
                    series: Arc::clone(&series[i % series.len()]),
                    partition: 0,
                    width_s: 10,
                    start_s: now - now % 10 - 10 * (i / series.len()) as u64,
                    rollup: rollup.clone(),
                    correction: false,
                })
                .collect();
            let flush = Flush {
                source: "bench".into(),
                time_s: now,
                checkpoints: vec![Checkpoint {
                    seq,
                    partition: 0,
                    next_offset: i64::try_from(flush_index).unwrap_or(0),
                    watermark_s: now,
                }],
                rows,
                cumulative: Vec::new(),
            };
            let one = Instant::now();
            store.write(&flush).await?;
            max_flush = max_flush.max(one.elapsed());
        }
        let elapsed = started.elapsed().as_secs_f64();
        figures.push(WriteFigure {
            rows_per_flush,
            flushes,
            rows_per_second: (flushes * rows_per_flush) as f64 / elapsed,
            max_flush,
        });
    }
    Ok(figures)
}

/// What [`lag`] measured.
#[derive(Debug, Clone)]
pub struct LagFigures {
    /// Data points the bus acknowledged, and their rate.
    pub points: u64,
    pub points_per_second: f64,
    /// Marker points whose lag was measured, and the lag quantiles.
    pub markers: usize,
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
}

/// Points per published message.
const POINTS_PER_MESSAGE: usize = 1_000;
/// Services the load is spread over (message keys, so partitions).
const SERVICES: usize = 8;
/// How often the store is asked whether the markers arrived.
const LOOK_EVERY: Duration = Duration::from_millis(50);

/// One message of gauge points of `service`, at `time_ns`: `points` series
/// of `bench.load`, then, if given, the marker series `bench.lag`.
fn load_message(service: usize, points: usize, time_ns: u64, marker: Option<u64>) -> Vec<u8> {
    let gauge = |name: &str, points: Vec<NumberDataPoint>| Metric {
        name: name.into(),
        data: Some(metric::Data::Gauge(Gauge {
            data_points: points,
        })),
        ..Default::default()
    };
    let point = |label: &str, value: u64| NumberDataPoint {
        attributes: vec![string_attribute(label, &value.to_string())],
        time_unix_nano: time_ns,
        value: Some(number_data_point::Value::AsDouble(value as f64)),
        ..Default::default()
    };
    let mut metrics = vec![gauge(
        "bench.load",
        (0..points as u64).map(|i| point("series", i)).collect(),
    )];
    metrics.extend(marker.map(|m| gauge("bench.lag", vec![point("marker", m)])));
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![string_attribute(
                    "service.name",
                    &format!("bench-{service}"),
                )],
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                metrics,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

fn unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// Runs an aggregator on the configured bus and store (its own topics and
/// group), publishes `rate` gauge points per second for `seconds`, and
/// every 100 ms a marker point whose acknowledgement time is noted; a
/// reader polls the store for the markers' 10 s rollups. The lag of a
/// marker is from its acknowledgement to the first read that finds it.
pub async fn lag(
    mut config: Config,
    rate: u64,
    seconds: u64,
) -> Result<LagFigures, Box<dyn std::error::Error>> {
    let run = format!("bench_lag_{}", unix_ns());
    config.bus.topic_prefix = format!("{run}.");
    config.aggregator.group = run.clone();
    let bus = bus::connect(&config.bus)?;
    let store = store::open(&config.store).await?;
    let shutdown = Shutdown::new();
    let aggregator =
        Aggregator::start(&config, Arc::clone(&bus), store.clone(), shutdown.clone()).await?;
    let topic = config.bus.topics().metrics;
    let tenant = TenantId::parse("bench")?;

    // Markers: acknowledged at, and first seen at.
    let acknowledged: Arc<std::sync::Mutex<HashMap<u64, Instant>>> = Arc::default();
    let reader = {
        let store = Arc::clone(&store);
        let acknowledged = Arc::clone(&acknowledged);
        let tenant = tenant.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let mut seen: HashMap<u64, Instant> = HashMap::new();
            let from = unix_ns() / 1_000_000_000 - 20;
            while !shutdown.is_triggered() {
                let mut query = RollupQuery::new(10, from, u64::MAX >> 1);
                query.tenant = Some(tenant.clone());
                query.kind = Some(Kind::Metric);
                query.name = Some("bench.lag".into());
                if let Ok(rows) = store.rollups(&query).await {
                    let now = Instant::now();
                    for row in rows {
                        if let Some(marker) =
                            row.series.label("marker").and_then(|m| m.parse().ok())
                        {
                            seen.entry(marker).or_insert(now);
                        }
                    }
                }
                tokio::time::sleep(LOOK_EVERY).await;
            }
            let acknowledged = acknowledged.lock().map(|a| a.clone()).unwrap_or_default();
            let mut lags: Vec<Duration> = seen
                .iter()
                .filter_map(|(marker, at)| {
                    Some(at.saturating_duration_since(*acknowledged.get(marker)?))
                })
                .collect();
            lags.sort_unstable();
            lags
        })
    };

    let messages_per_second = (rate / POINTS_PER_MESSAGE as u64).max(1);
    let interval = Duration::from_secs_f64(1.0 / messages_per_second as f64);
    let started = Instant::now();
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut points = 0u64;
    let mut marker = 0u64;
    let mut next_marker = started;
    let mut message = 0usize;
    while started.elapsed() < Duration::from_secs(seconds) {
        ticker.tick().await;
        let with_marker = Instant::now() >= next_marker;
        let this_marker = with_marker.then_some(marker);
        let service = message % SERVICES;
        let payload = load_message(service, POINTS_PER_MESSAGE, unix_ns(), this_marker);
        let key = bus::message_key(&tenant, &format!("bench-{service}"));
        bus.publish(&topic, vec![Record::new(key, payload)]).await?;
        points += POINTS_PER_MESSAGE as u64;
        message += 1;
        if let Some(m) = this_marker {
            if let Ok(mut acknowledged) = acknowledged.lock() {
                acknowledged.insert(m, Instant::now());
            }
            marker += 1;
            next_marker += Duration::from_millis(100);
        }
    }
    let points_per_second = points as f64 / started.elapsed().as_secs_f64();
    // Time for the last markers to arrive.
    tokio::time::sleep(Duration::from_secs(15)).await;
    shutdown.trigger();
    let lags = reader.await?;
    aggregator.wait().await?;
    let quantile = |q: f64| {
        lags.get(((lags.len() as f64 * q).ceil() as usize).saturating_sub(1))
            .copied()
            .unwrap_or_default()
    };
    Ok(LagFigures {
        points,
        points_per_second,
        markers: lags.len(),
        p50: quantile(0.5),
        p99: quantile(0.99),
        max: lags.last().copied().unwrap_or_default(),
    })
}
