//! Self-metrics in the OpenMetrics text format ([`render`], for every
//! component), and the HTTP endpoint `GET /metrics` + `GET /healthz` of the
//! components that serve nothing else over HTTP (aggregator, prober,
//! alerter), and of the collector apart from its public ingest ports.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::encoding::text::encode;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::shutdown::Shutdown;

/// Every metric of `registry` in the OpenMetrics text format.
pub fn render(registry: &Registry) -> String {
    let mut text = String::new();
    // Writing into a String cannot fail.
    let _ = encode(&mut text, registry);
    text
}

/// Renders a component's metrics in the OpenMetrics text format.
pub type Render = Arc<dyn Fn() -> String + Send + Sync>;

/// Binds `listen` and serves until `shutdown`; the bound address and the task.
pub async fn serve(
    listen: SocketAddr,
    render: Render,
    shutdown: Shutdown,
) -> std::io::Result<(SocketAddr, JoinHandle<()>)> {
    let listener = TcpListener::bind(listen).await?;
    let address = listener.local_addr()?;
    let router = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(render);
    let task = tokio::spawn(async move {
        let served = axum::serve(listener, router)
            .with_graceful_shutdown(async move { shutdown.wait().await })
            .await;
        if let Err(error) = served {
            tracing::error!(%error, %address, "the metrics endpoint failed");
        }
    });
    Ok((address, task))
}

async fn metrics(State(render): State<Render>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        render(),
    )
}
