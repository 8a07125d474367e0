//! Starting and stopping the collector's two servers.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tonic::service::Routes;
use tower::util::MapResponseLayer;
use vigil_bus::{Bus, BusError};
use vigil_config::Config;
use vigil_domain::metrics_endpoint;
use vigil_domain::shutdown::Shutdown;
use vigil_tls::server::{H2, HTTP_1_1, Listener};

use crate::ingest::Ingest;
use crate::{grpc, http};

/// Why the collector could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum CollectorError {
    #[error("cannot listen on {address}: {source}")]
    Bind {
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error("collector.tls: {0}")]
    Tls(#[from] vigil_tls::TlsError),
    #[error("cannot serve the collector's metrics on {address}: {source}")]
    Metrics {
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot create topic {topic}: {source}")]
    Topic { topic: String, source: BusError },
    #[error("the {server} server failed: {message}")]
    Serve {
        server: &'static str,
        message: String,
    },
}

/// A running collector.
pub struct Collector {
    grpc_address: SocketAddr,
    http_address: SocketAddr,
    metrics_address: SocketAddr,
    grpc: JoinHandle<Result<(), CollectorError>>,
    http: JoinHandle<Result<(), CollectorError>>,
    metrics: JoinHandle<()>,
}

impl Collector {
    /// Creates the topics, binds both ports and starts serving. The servers
    /// drain and stop when `shutdown` is set off; [`Collector::wait`] for that.
    pub async fn start(
        config: &Config,
        bus: Arc<dyn Bus>,
        shutdown: Shutdown,
    ) -> Result<Collector, CollectorError> {
        let topics = config.bus.topics();
        for topic in topics.all() {
            bus.create_topic(topic, config.bus.partitions)
                .await
                .map_err(|source| CollectorError::Topic {
                    topic: topic.to_owned(),
                    source,
                })?;
        }
        let collector = &config.collector;
        let ingest = Arc::new(Ingest::new(collector, bus, topics));
        let (grpc_listener, grpc_address) = bind(collector.grpc_listen).await?;
        let (http_listener, http_address) = bind(collector.http_listen).await?;
        let tls = collector.tls.as_ref();
        let grpc_listener = Listener::new(grpc_listener, tls, &[H2])?;
        let http_listener = Listener::new(http_listener, tls, &[HTTP_1_1])?;

        let grpc_routes = Routes::from(grpc::routes(Arc::clone(&ingest)).into_axum_router().layer(
            axum::middleware::from_fn_with_state(Arc::clone(&ingest), grpc::admit),
        ));
        let grpc_shutdown = shutdown.clone();
        // One connection holds at most this many requests, with headers of
        // at most 64 KiB (hyper's default is 16 MiB per request).
        let streams = collector.max_streams_per_connection;
        let grpc = tokio::spawn(async move {
            tonic::transport::Server::builder()
                .max_concurrent_streams(streams)
                .concurrency_limit_per_connection(streams as usize)
                .http2_max_header_list_size(64 * 1024)
                .layer(MapResponseLayer::new(grpc::otlp_status_codes))
                .add_routes(grpc_routes)
                .serve_with_incoming_shutdown(grpc_listener.into_incoming(), grpc_shutdown.wait())
                .await
                .map_err(|e| CollectorError::Serve {
                    server: "OTLP/gRPC",
                    message: e.to_string(),
                })
        });
        let render = Arc::clone(&ingest);
        let (metrics_address, metrics) = metrics_endpoint::serve(
            collector.metrics_listen,
            Arc::new(move || render.metrics.render()),
            shutdown.clone(),
        )
        .await
        .map_err(|source| CollectorError::Metrics {
            address: collector.metrics_listen,
            source,
        })?;
        let router = http::router(ingest);
        let http = tokio::spawn(async move {
            axum::serve(http_listener, router)
                .with_graceful_shutdown(async move { shutdown.wait().await })
                .await
                .map_err(|e| CollectorError::Serve {
                    server: "OTLP/HTTP",
                    message: e.to_string(),
                })
        });
        tracing::info!(
            grpc = %grpc_address, http = %http_address, metrics = %metrics_address,
            tls = tls.is_some(), "collector listening"
        );
        Ok(Collector {
            grpc_address,
            http_address,
            metrics_address,
            grpc,
            http,
            metrics,
        })
    }

    /// Where OTLP/gRPC is served.
    pub fn grpc_address(&self) -> SocketAddr {
        self.grpc_address
    }

    /// Where OTLP/HTTP is served.
    pub fn http_address(&self) -> SocketAddr {
        self.http_address
    }

    /// Where the collector's own `GET /metrics` is served.
    pub fn metrics_address(&self) -> SocketAddr {
        self.metrics_address
    }

    /// Returns when the servers have stopped (after the shutdown signal).
    pub async fn wait(self) -> Result<(), CollectorError> {
        let _ = self.metrics.await;
        for (server, handle) in [("OTLP/gRPC", self.grpc), ("OTLP/HTTP", self.http)] {
            handle.await.map_err(|e| CollectorError::Serve {
                server,
                message: e.to_string(),
            })??;
        }
        Ok(())
    }
}

async fn bind(address: SocketAddr) -> Result<(TcpListener, SocketAddr), CollectorError> {
    let bind_error = |source| CollectorError::Bind { address, source };
    let listener = TcpListener::bind(address).await.map_err(bind_error)?;
    let local = listener.local_addr().map_err(bind_error)?;
    Ok((listener, local))
}
