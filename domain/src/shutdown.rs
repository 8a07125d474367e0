//! One shutdown signal for the whole process: the first SIGINT or SIGTERM (or
//! a call to [`Shutdown::trigger`]) reaches every task holding a clone, so
//! servers stop accepting, drain, flush, and return. A second signal exits at
//! once, for the operator whose clean shutdown hangs.

use std::sync::Arc;

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

/// Exit status after a second signal: 128 + SIGINT, as shells report it.
const FORCED_EXIT_CODE: i32 = 130;

/// A shutdown signal shared by every task; clone it freely.
#[derive(Debug, Clone)]
pub struct Shutdown {
    sender: Arc<watch::Sender<bool>>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Shutdown {
            sender: Arc::new(watch::channel(false).0),
        }
    }
}

impl Shutdown {
    /// A signal that only [`trigger`](Self::trigger) sets off.
    pub fn new() -> Self {
        Self::default()
    }

    /// A signal set off by the first SIGINT or SIGTERM; a second one exits the
    /// process. Must be called inside a Tokio runtime; the handlers are in place
    /// when it returns.
    pub fn on_signals() -> std::io::Result<Self> {
        let shutdown = Shutdown::new();
        let mut interrupt = signal(SignalKind::interrupt())?;
        let mut terminate = signal(SignalKind::terminate())?;
        let trigger = shutdown.clone();
        tokio::spawn(async move {
            for attempt in 0.. {
                let name = tokio::select! {
                    _ = interrupt.recv() => "SIGINT",
                    _ = terminate.recv() => "SIGTERM",
                };
                if attempt == 0 {
                    tracing::info!(
                        signal = name,
                        "shutting down; send it again to exit at once"
                    );
                    trigger.trigger();
                } else {
                    tracing::warn!(
                        signal = name,
                        "second signal: exiting without a clean shutdown"
                    );
                    std::process::exit(FORCED_EXIT_CODE);
                }
            }
        });
        Ok(shutdown)
    }

    /// Sets off the signal; every waiter returns.
    pub fn trigger(&self) {
        self.sender.send_replace(true);
    }

    /// Whether the signal has been set off.
    pub fn is_triggered(&self) -> bool {
        *self.sender.borrow()
    }

    /// Returns once the signal is set off (at once if it already was).
    pub async fn wait(&self) {
        let mut receiver = self.sender.subscribe();
        // The sender lives as long as `self`, so this cannot fail.
        let _ = receiver.wait_for(|&triggered| triggered).await;
    }
}

/// SIGHUP, as a stream (never on platforms without it): what asks a
/// component to read its files again.
pub fn hangups() -> tokio::sync::mpsc::Receiver<()> {
    let (sender, receiver) = tokio::sync::mpsc::channel(1);
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::hangup()) {
            Ok(mut hangup) => {
                tokio::spawn(async move {
                    while hangup.recv().await.is_some() {
                        if sender.send(()).await.is_err() {
                            break;
                        }
                    }
                });
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGHUP; reloads follow file changes only")
            }
        }
    }
    receiver
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    async fn waiters_finish(shutdown: &Shutdown, tasks: usize) -> usize {
        let handles: Vec<_> = (0..tasks)
            .map(|_| {
                let shutdown = shutdown.clone();
                tokio::spawn(async move { shutdown.wait().await })
            })
            .collect();
        let mut finished = 0;
        for handle in handles {
            if tokio::time::timeout(Duration::from_secs(5), handle)
                .await
                .is_ok()
            {
                finished += 1;
            }
        }
        finished
    }

    #[tokio::test]
    async fn trigger_reaches_every_task() {
        let shutdown = Shutdown::new();
        assert!(!shutdown.is_triggered());
        let pending = tokio::time::timeout(Duration::from_millis(50), shutdown.wait()).await;
        assert!(pending.is_err(), "wait returned before the trigger");
        let waiters = {
            let shutdown = shutdown.clone();
            tokio::spawn(async move { waiters_finish(&shutdown, 3).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        shutdown.trigger();
        assert_eq!(waiters.await.unwrap(), 3);
        assert!(shutdown.is_triggered());
        // Waiting after the fact returns at once.
        assert_eq!(waiters_finish(&shutdown, 2).await, 2);
    }

    #[tokio::test]
    async fn sigterm_reaches_every_task() {
        let shutdown = Shutdown::on_signals().unwrap();
        let waiters = {
            let shutdown = shutdown.clone();
            tokio::spawn(async move { waiters_finish(&shutdown, 4).await })
        };
        let status = std::process::Command::new("kill")
            .args(["-TERM", &std::process::id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        assert_eq!(waiters.await.unwrap(), 4);
        assert!(shutdown.is_triggered());
    }
}
