//! Retention on a schedule: the process that owns the store (`vigil up`,
//! each `vigil aggregator`) drops what is past its retention at start and
//! then every `store.retention_interval_s`. Dropping is idempotent, so
//! several aggregators doing it is harmless.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::task::JoinHandle;
use vigil_domain::shutdown::Shutdown;

use crate::Store;

/// The running schedule.
pub struct Retention {
    task: JoinHandle<()>,
}

impl Retention {
    /// Enforces retention now and every `interval` until `shutdown`.
    pub fn start(store: Arc<dyn Store>, interval: Duration, shutdown: Shutdown) -> Retention {
        let task = tokio::spawn(async move {
            while !shutdown.is_triggered() {
                let now_s = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                let started = std::time::Instant::now();
                match store.enforce_retention(now_s).await {
                    Ok(()) => tracing::debug!(
                        seconds = started.elapsed().as_secs_f64(),
                        "retention enforced"
                    ),
                    // The next run tries again; nothing is lost by waiting.
                    Err(error) => tracing::warn!(%error, "enforcing retention failed"),
                }
                tokio::select! {
                    () = tokio::time::sleep(interval) => {}
                    () = shutdown.wait() => {}
                }
            }
        });
        Retention { task }
    }

    /// Returns once the schedule stopped (after the shutdown).
    pub async fn wait(self) {
        let _ = self.task.await;
    }
}
