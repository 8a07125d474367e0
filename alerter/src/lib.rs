//! The alerter: rules evaluated on the stream of windows the aggregators
//! publish, alerts through their lifecycle, notification and remediation
//! webhooks.
//!
//! In: rule files ([`rules`]), the rollups topic (each aggregator flush's
//! 10 s rows), silences from the store (written by the API). Out: webhook
//! calls (notifications in Alertmanager's format, remediation actions), and
//! in the store the alerts, the notification groups and the history of
//! every transition, notification and action.
//!
//! One loop does it all, in order: take the published rows, and once a
//! second evaluate every 10 s boundary that passed
//! `alerter.evaluation_delay_ms` ago ([`eval`]), move alerts along
//! ([`alerts`]), fire the actions of alerts that started firing, and send
//! the notifications that are due ([`notify`]). Webhook calls run on their
//! own tasks, so a slow receiver holds nothing up.
//!
//! A restart resumes: alerts and notification groups are read back from
//! the store (nothing is fired or sent again), the rules' ranges are read
//! back from the store's 10 s rows, and the topic is read from the group's
//! committed offsets on; windows the store gave are not counted again.

pub mod alerts;
mod control;
pub mod eval;
mod metrics;
pub mod notify;
pub mod rules;
pub mod webhook;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use vigil_bus::{Bus, BusError, Topics};
use vigil_config::Config;
use vigil_domain::alert::Collection;
use vigil_domain::metrics_endpoint;
use vigil_domain::shutdown::Shutdown;
use vigil_domain::yaml::{self, FileError};
use vigil_store::{AlertStore, StoreError};

pub use metrics::Metrics;

use alerts::{Alert, Alerts};
use control::{Control, Outbox, Pending, read_state, rebuild};
use eval::Engine;
use notify::{Dispatcher, GroupState};
use rules::Rule;

/// How often the loop evaluates, sends and reads silences.
const TICK: Duration = Duration::from_secs(1);
const SILENCE_REFRESH: Duration = Duration::from_secs(2);
/// How long evaluation waits for the consumer's partitions on start.
const ASSIGNMENT_WAIT: Duration = Duration::from_secs(60);
/// The longest range read back from the store on start.
const REBUILD_MAX_S: u64 = 6 * 3_600;

#[derive(Debug, thiserror::Error)]
pub enum AlerterError {
    #[error("invalid rules: {0}")]
    Rules(#[from] FileError),
    #[error(transparent)]
    Bus(#[from] BusError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot listen on {address}: {source}")]
    Listen {
        address: SocketAddr,
        source: std::io::Error,
    },
}

type Reply = oneshot::Sender<Result<usize, String>>;

/// A running alerter.
pub struct Alerter {
    metrics: Arc<Metrics>,
    metrics_address: SocketAddr,
    reloads: mpsc::Sender<Reply>,
    tasks: Vec<JoinHandle<()>>,
}

impl Alerter {
    /// Loads the rules, restores what the store kept, and starts.
    pub async fn start(
        config: &Config,
        bus: Arc<dyn Bus>,
        store: Arc<dyn AlertStore>,
        shutdown: Shutdown,
    ) -> Result<Alerter, AlerterError> {
        let settings = config.alerter.clone();
        let watch = yaml::Watch::new(&settings.rules);
        let ruleset = rules::load(&settings.rules)?;
        let metrics = Arc::new(Metrics::new());
        let render = Arc::clone(&metrics);
        let listen = settings.metrics_listen;
        let (metrics_address, server) =
            metrics_endpoint::serve(listen, Arc::new(move || render.render()), shutdown.clone())
                .await
                .map_err(|source| AlerterError::Listen {
                    address: listen,
                    source,
                })?;
        let topics = Topics::with_prefix(&config.bus.topic_prefix);
        bus.create_topic(&topics.rollups, config.bus.partitions)
            .await?;
        // Subscribed before the store is read: nothing published in between
        // is missed.
        let consumer = bus.subscribe(&topics.rollups, &settings.group).await?;
        let now_ms = now_ms();
        let saved_alerts = read_state::<Alert>(&*store, Collection::Alert).await?;
        let saved_groups = read_state::<GroupState>(&*store, Collection::Notification).await?;
        let cooldowns = read_state::<u64>(&*store, Collection::Action).await?;
        let outbox = read_state::<Pending>(&*store, Collection::Outbox).await?;
        let rules: Vec<Arc<Rule>> = ruleset.rules.iter().cloned().map(Arc::new).collect();
        let mut engine = Engine::new(rules, now_ms / 1_000);
        let rebuilt_through = engine.evaluated_through();
        let restored = rebuild(&mut engine, &*store, rebuilt_through).await?;
        tracing::info!(
            rules = ruleset.rules.len(),
            alerts = saved_alerts.len(),
            groups = saved_groups.len(),
            undelivered = outbox.len(),
            restored,
            "alerter started"
        );
        let client = reqwest::Client::builder()
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        let mut control = Control {
            dispatcher: Dispatcher::new(
                &ruleset,
                &settings.external_url,
                saved_groups.into_iter().map(|(_, group)| group).collect(),
            ),
            alerts: Alerts::restore(saved_alerts.into_iter().map(|(_, alert)| alert)),
            ruleset,
            engine,
            rebuilt_through,
            silences: Vec::new(),
            silences_read: None,
            cooldowns: cooldowns.into_iter().collect(),
            settings,
            watch,
            store,
            client,
            metrics: Arc::clone(&metrics),
            outbox: Outbox::restore(outbox.into_iter().map(|(_, pending)| pending)),
        };
        control
            .metrics
            .rules
            .set(control.ruleset.rules.len() as i64);
        let (reloads, requests) = mpsc::channel(4);
        let task = tokio::spawn(async move { control.serve(consumer, requests, shutdown).await });
        Ok(Alerter {
            metrics,
            metrics_address,
            reloads,
            tasks: vec![server, task],
        })
    }

    /// Reads the rule files again; the number of rules, or why they were
    /// refused (the running rules stay).
    pub async fn reload(&self) -> Result<usize, String> {
        let (reply, answer) = oneshot::channel();
        self.reloads
            .send(reply)
            .await
            .map_err(|_| "the alerter has stopped".to_owned())?;
        answer
            .await
            .map_err(|_| "the alerter has stopped".to_owned())?
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    pub fn metrics_address(&self) -> SocketAddr {
        self.metrics_address
    }

    /// Waits until shutdown.
    pub async fn wait(self) {
        drop(self.reloads);
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
