//! The aggregator: bus in, rollups out.
//!
//! In: OTLP metrics, traces and logs and client telemetry from the bus. Out:
//! into the store, 10 s, 1 min and 1 h rollups per series (count, sum, min,
//! max, errors, distribution), raw spans, log records and crashes, and the
//! series catalogue — exactly once, across crashes and rebalances (see
//! `partition.rs`).
//!
//! - [`window`]: event-time tumbling windows with allowed lateness;
//! - `points.rs`: which series a span or data point belongs to;
//! - `logs.rs`, `client_telemetry.rs`: the same for log records and client telemetry;
//! - `cumulative.rs`: cumulative sums and histograms to deltas;
//! - `partition.rs`: one bus partition's state and checkpoint;
//! - `active.rs`: each tenant's active series and their limit;
//! - `stream.rs`: the consumer loop of one topic (one [`Stream`](stream::Stream) of data);

mod active;
mod client_telemetry;
mod cumulative;
#[cfg(test)]
mod fuzz;
mod logs;
mod metrics;
mod partition;
mod points;
mod stream;
pub mod window;
mod wire;

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use vigil_bus::{Bus, BusError};
use vigil_config::Config;
use vigil_domain::metrics_endpoint;
use vigil_domain::shutdown::Shutdown;
use vigil_store::IngestStore;

use active::ActiveSeries;
pub use metrics::Metrics;
use stream::{Stream, StreamLoop};

/// A map keyed by series ids (already hashes): hashed with FxHash rather
/// than SipHash, which took a tenth of the CPU under remote-write load.
pub(crate) type IdMap<K, V> = std::collections::HashMap<K, V, rustc_hash::FxBuildHasher>;
pub(crate) type IdSet<K> = std::collections::HashSet<K, rustc_hash::FxBuildHasher>;

/// How long to wait before starting a pipeline over after a failure.
const RESTART_BACKOFF: Duration = Duration::from_secs(1);

/// Why the aggregator could not start.
#[derive(Debug, thiserror::Error)]
pub enum AggregatorError {
    #[error("cannot create topic {topic}: {source}")]
    Topic { topic: String, source: BusError },
    #[error("cannot serve metrics on {address}: {source}")]
    Listen {
        address: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("aggregator task failed: {0}")]
    Task(String),
}

/// A running aggregator.
pub struct Aggregator {
    metrics: Arc<Metrics>,
    metrics_address: std::net::SocketAddr,
    server: JoinHandle<()>,
    /// Each says whether it took everything the bus held when it stopped.
    pipelines: Vec<JoinHandle<bool>>,
}

impl Aggregator {
    /// Creates the topics it reads and starts one pipeline per topic. When
    /// `shutdown` is set off they take what the bus holds (for a while),
    /// flush and stop; [`Aggregator::wait`] for that.
    pub async fn start(
        config: &Config,
        bus: Arc<dyn Bus>,
        store: Arc<dyn IngestStore>,
        shutdown: Shutdown,
    ) -> Result<Aggregator, AggregatorError> {
        let topics = config.bus.topics();
        for topic in topics.all() {
            bus.create_topic(topic, config.bus.partitions)
                .await
                .map_err(|source| AggregatorError::Topic {
                    topic: topic.to_owned(),
                    source,
                })?;
        }
        let metrics = Arc::new(Metrics::new());
        let listen = config.aggregator.metrics_listen;
        let render = Arc::clone(&metrics);
        let (metrics_address, server) =
            metrics_endpoint::serve(listen, Arc::new(move || render.render()), shutdown.clone())
                .await
                .map_err(|source| AggregatorError::Listen {
                    address: listen,
                    source,
                })?;
        let active = Arc::new(ActiveSeries::new(
            config.aggregator.max_active_series_per_tenant,
            config.aggregator.series_idle_s,
        ));
        let mut pipelines = Vec::new();
        for signal in [
            Stream::Metrics,
            Stream::Traces,
            Stream::Logs,
            Stream::Client,
        ] {
            let pipeline = StreamLoop::new(
                signal,
                config.aggregator.clone(),
                Arc::clone(&store),
                Arc::clone(&bus),
                topics.clone(),
                Arc::clone(&metrics),
                Arc::clone(&active),
            );
            // One group per topic: a rebalance of one topic (a member died)
            // never holds up the other.
            let group = format!("{}.{}", config.aggregator.group, signal.as_str());
            pipelines.push(tokio::spawn(consume(
                pipeline,
                Arc::clone(&bus),
                group,
                shutdown.clone(),
            )));
        }
        Ok(Aggregator {
            metrics,
            metrics_address,
            server,
            pipelines,
        })
    }

    /// The self-metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Where `GET /metrics` is served.
    pub fn metrics_address(&self) -> std::net::SocketAddr {
        self.metrics_address
    }

    /// Returns once every pipeline has flushed and stopped: whether each
    /// took everything the bus held first.
    pub async fn wait(self) -> Result<bool, AggregatorError> {
        let failed = |e: tokio::task::JoinError| AggregatorError::Task(e.to_string());
        let mut drained = true;
        for pipeline in self.pipelines {
            drained &= pipeline.await.map_err(failed)?;
        }
        self.server.await.map_err(failed)?;
        Ok(drained)
    }
}

/// Runs a pipeline until shutdown, starting it over (new consumer, state from
/// the store) whenever it fails; whether it took everything the bus held.
async fn consume(
    mut pipeline: StreamLoop,
    bus: Arc<dyn Bus>,
    group: String,
    shutdown: Shutdown,
) -> bool {
    while !shutdown.is_triggered() {
        let outcome = match bus.subscribe(&pipeline.source, &group).await {
            Ok(mut consumer) => pipeline
                .run(consumer.as_mut(), &shutdown)
                .await
                .map_err(|e| e.to_string()),
            Err(error) => Err(error.to_string()),
        };
        match outcome {
            Ok(drained) => return drained,
            Err(error) => {
                pipeline.forget();
                tracing::error!(%error, source = %pipeline.source, "aggregator pipeline failed; starting over from the store");
                tokio::time::sleep(RESTART_BACKOFF).await;
            }
        }
    }
    // Stopped while starting over: what the bus holds waits for the next start.
    false
}
