//! The synthetic prober: scheduled multi-step transactions, reported as traces.
//!
//! In: scenario files (YAML, [`scenario`]) of probes, each a multi-step
//! transaction over HTTP or gRPC, run on a schedule from several locations.
//! Out: every run as an OTLP trace (a root span for the run, one span per
//! step, `vigil.probe.*` attributes) sent to a collector like any service's
//! traces, and a W3C `traceparent` in every request, so the target's own
//! spans join the run's trace.
//!
//! The scenarios are read again on SIGHUP and when a file changes; a reload
//! that fails leaves the running probes as they were. A probe whose
//! definition did not change keeps its schedule across a reload.

mod export;
mod grpc;
pub mod json_path;
mod metrics;
mod run;
pub mod scenario;
mod schedule;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::task::JoinHandle;
use vigil_config::{Config, SyntheticConfig};
use vigil_domain::shutdown::Shutdown;
use vigil_domain::yaml::{self, FileError};
use vigil_domain::{metrics_endpoint, shutdown};

pub use metrics::Metrics;

use export::Exporter;
use run::Runner;
use scenario::Probe;
use schedule::{Shared, Slot};

#[derive(Debug, thiserror::Error)]
pub enum ProberError {
    #[error("invalid scenario: {0}")]
    Scenario(#[from] FileError),
    #[error("synthetic.ca_file: {0}")]
    Tls(String),
    #[error("cannot listen on {address}: {source}")]
    Listen {
        address: SocketAddr,
        source: std::io::Error,
    },
}

/// A running prober.
pub struct Synthetic {
    metrics: Arc<Metrics>,
    metrics_address: SocketAddr,
    reloads: mpsc::Sender<oneshot::Sender<Result<usize, String>>>,
    tasks: Vec<JoinHandle<()>>,
}

type Reply = oneshot::Sender<Result<usize, String>>;

impl Synthetic {
    /// Reads the scenarios of `config.synthetic` (refusing to start on an
    /// invalid one) and starts every probe at every location this process
    /// acts for. It runs until `shutdown`; [`Synthetic::wait`] for that.
    pub async fn start(config: &Config, shutdown: Shutdown) -> Result<Synthetic, ProberError> {
        let settings = config.synthetic.clone();
        // Taken before the files are read: a change while they are is seen.
        let watch = yaml::Watch::new(&settings.scenarios);
        let probes = scenario::load(&settings.scenarios)?;
        let runner = Runner::new(settings.ca_file.as_deref()).map_err(ProberError::Tls)?;
        let metrics = Arc::new(Metrics::new());
        let render = Arc::clone(&metrics);
        let listen = settings.metrics_listen;
        let (metrics_address, server) =
            metrics_endpoint::serve(listen, Arc::new(move || render.render()), shutdown.clone())
                .await
                .map_err(|source| ProberError::Listen {
                    address: listen,
                    source,
                })?;
        let (exporter, export) =
            Exporter::start(&settings, runner.http_client(), Arc::clone(&metrics));
        let shared = Arc::new(Shared {
            runner,
            exporter,
            metrics: Arc::clone(&metrics),
            runs: Arc::new(Semaphore::new(settings.max_concurrent_runs)),
        });
        let mut control = Control {
            settings,
            watch,
            shared,
            running: HashMap::new(),
        };
        let scheduled = control.apply(probes).await;
        tracing::info!(scheduled, "prober started");
        let (reloads, requests) = mpsc::channel(4);
        let control = tokio::spawn(control.serve(requests, shutdown));
        Ok(Synthetic {
            metrics,
            metrics_address,
            reloads,
            tasks: vec![server, control, export],
        })
    }

    /// Reads the scenarios again now: the probe and location pairs now
    /// scheduled, or why the files were refused (the probes running before
    /// keep running).
    pub async fn reload(&self) -> Result<usize, String> {
        let (reply, answer) = oneshot::channel();
        self.reloads
            .send(reply)
            .await
            .map_err(|_| "the prober has stopped".to_owned())?;
        answer
            .await
            .map_err(|_| "the prober has stopped".to_owned())?
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Where `GET /metrics` is served.
    pub fn metrics_address(&self) -> SocketAddr {
        self.metrics_address
    }

    /// Waits until the prober has stopped: runs in flight finished and
    /// every span exported (or counted as dropped).
    pub async fn wait(self) {
        drop(self.reloads);
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// The running probes, by name, and what changes them.
struct Control {
    settings: SyntheticConfig,
    /// The scenario files as of their last reading.
    watch: yaml::Watch,
    shared: Arc<Shared>,
    running: HashMap<String, Running>,
}

struct Running {
    probe: Arc<Probe>,
    slots: Vec<Slot>,
}

impl Control {
    async fn serve(mut self, mut requests: mpsc::Receiver<Reply>, shutdown: Shutdown) {
        let mut hangups = shutdown::hangups();
        let watch_every = Duration::from_millis(self.settings.watch_interval_ms);
        let mut tick = tokio::time::interval(watch_every.max(Duration::from_millis(100)));
        // Once the handle is waited on, only SIGHUP and the files reload.
        let mut handle = true;
        loop {
            let reply = tokio::select! {
                () = shutdown.wait() => break,
                request = requests.recv(), if handle => match request {
                    Some(reply) => Some(reply),
                    None => {
                        handle = false;
                        continue;
                    }
                },
                Some(()) = hangups.recv() => None,
                _ = tick.tick(), if !watch_every.is_zero() => {
                    if !self.watch.settled_change() {
                        continue;
                    }
                    None
                }
            };
            self.watch.read();
            let outcome = match scenario::load(&self.settings.scenarios) {
                Ok(probes) => {
                    self.shared.metrics.reload(true);
                    let scheduled = self.apply(probes).await;
                    tracing::info!(scheduled, "scenarios reloaded");
                    Ok(scheduled)
                }
                Err(error) => {
                    self.shared.metrics.reload(false);
                    tracing::error!(%error, "scenario reload refused; the running probes are kept");
                    Err(error.to_string())
                }
            };
            if let Some(reply) = reply {
                let _ = reply.send(outcome);
            }
        }
        for (_, running) in self.running.drain() {
            for slot in running.slots {
                slot.stop().await;
            }
        }
        self.shared.metrics.scheduled.set(0);
    }

    /// Schedules `probes`: unchanged ones keep running (and their
    /// schedule), changed ones restart, the rest stop. The number of probe
    /// and location pairs now scheduled.
    async fn apply(&mut self, probes: Vec<Probe>) -> usize {
        let mut next = HashMap::new();
        for probe in probes {
            if let Some(running) = self.running.remove(&probe.name) {
                if *running.probe == probe {
                    next.insert(probe.name.clone(), running);
                    continue;
                }
                for slot in running.slots {
                    slot.stop().await;
                }
            }
            let probe = Arc::new(probe);
            let concurrency = Arc::new(Semaphore::new(probe.concurrency));
            let acting_for = &self.settings.locations;
            let slots: Vec<Slot> = (0..probe.locations.len())
                .filter(|&i| acting_for.is_empty() || acting_for.contains(&probe.locations[i].name))
                .map(|i| {
                    Slot::start(
                        Arc::clone(&probe),
                        i,
                        Arc::clone(&concurrency),
                        Arc::clone(&self.shared),
                    )
                })
                .collect();
            if slots.is_empty() {
                tracing::info!(probe = %probe.name, "no location of the probe is one this prober acts for");
            }
            next.insert(probe.name.clone(), Running { probe, slots });
        }
        for (_, gone) in self.running.drain() {
            for slot in gone.slots {
                slot.stop().await;
            }
        }
        self.running = next;
        let scheduled = self.running.values().map(|r| r.slots.len()).sum();
        self.shared
            .metrics
            .scheduled
            .set(i64::try_from(scheduled).unwrap_or(i64::MAX));
        scheduled
    }
}
