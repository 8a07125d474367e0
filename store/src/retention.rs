//! Retention on a schedule: the process that owns the store (`vigil up`,
//! each `vigil aggregator`) drops what is past its retention at start and
//! then every `store.retention_interval_s`. Dropping is idempotent, so
//! several aggregators doing it is harmless.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;
use tokio::task::JoinHandle;
use vigil_config::StoreConfig;
use vigil_domain::shutdown::Shutdown;

use crate::Store;

/// The running schedule.
pub struct Retention {
    task: JoinHandle<()>,
    runs: watch::Receiver<u64>,
}

impl Retention {
    /// Enforces the retention of `config` now and every
    /// `config.retention_interval_s` until `shutdown`.
    pub fn start(store: Arc<dyn Store>, config: &StoreConfig, shutdown: Shutdown) -> Retention {
        let interval = Duration::from_secs(config.retention_interval_s);
        let (ran, runs) = watch::channel(0);
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
                ran.send_modify(|runs| *runs += 1);
                tokio::select! {
                    () = tokio::time::sleep(interval) => {}
                    () = shutdown.wait() => {}
                }
            }
        });
        Retention { task, runs }
    }

    /// Returns once `n` runs have ended since the start (successful or
    /// not), or the schedule stopped.
    pub async fn ran(&self, n: u64) {
        let mut runs = self.runs.clone();
        let _ = runs.wait_for(|&done| done >= n).await;
    }

    /// Returns once the schedule stopped (after the shutdown).
    pub async fn wait(self) {
        let _ = self.task.await;
    }
}
