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
//! `alerter.evaluation_delay_ms` ago ([`eval`]) — or, between boundaries,
//! judge the rules that slide over the freshest rows — move alerts along
//! ([`alerts`]), fire the actions of alerts that started firing, and send
//! the notifications that are due ([`notify`]). Webhook calls run on their
//! own tasks, so a slow receiver holds nothing up.
//!
//! A restart resumes: alerts and notification groups are read back from
//! the store (nothing is fired or sent again), the rules' ranges are read
//! back from the store's 10 s rows, and the topic is read from the group's
//! committed offsets on; windows the store gave are not counted again.
//!
//! One alerter at a time judges and notifies: the one holding the lease
//! `alerter` in the store (`alerter.lease_ms`, renewed every third of it).
//! Others stand by, not reading the rollups topic; when the leader dies its
//! lease runs out and a standby begins a term as a restart would, from the
//! store. A leader that finds it lost the lease stops judging at once.

pub mod alertmanager;
pub mod alerts;
mod control;
pub mod eval;
mod metrics;
pub mod notify;
mod promql;
pub mod rules;
pub mod webhook;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use vigil_bus::{Bus, BusError, Consumer, Topics};
use vigil_config::{AlerterConfig, Config};
use vigil_domain::alert::Collection;
use vigil_domain::metrics_endpoint;
use vigil_domain::playbook::Run;
use vigil_domain::shutdown::Shutdown;
use vigil_domain::tenant::TenantId;
use vigil_domain::yaml::{self, FileError};
use vigil_store::{AlertStore, StoreError};

pub use metrics::Metrics;

use alerts::{Alert, Alerts};
use control::{Control, Outbox, Pending, Runs, expired, read_state, rebuild, recent_changes};
use eval::Engine;
use notify::{Dispatcher, GroupState};

/// How often the loop evaluates, sends and reads silences.
const TICK: Duration = Duration::from_secs(1);
const SILENCE_REFRESH: Duration = Duration::from_secs(2);
/// How long evaluation waits for the consumer's partitions on start.
const ASSIGNMENT_WAIT: Duration = Duration::from_secs(60);
/// The longest range read back from the store on start.
const REBUILD_MAX_S: u64 = 6 * 3_600;
/// The lease the alerters share.
const LEASE: &str = "alerter";
/// How long a standby waits before trying again to begin a term that failed.
const TERM_RETRY: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum AlerterError {
    #[error("invalid rules: {0}")]
    Rules(#[from] FileError),
    #[error(transparent)]
    Bus(#[from] BusError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("alerter.ca_file: {0}")]
    Tls(#[from] vigil_tls::TlsError),
    #[error("the webhook client: {0}")]
    Client(#[from] reqwest::Error),
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
    /// Loads the rules and starts: as the leader, having restored what the
    /// store kept, if it can take the lease now; on standby otherwise.
    pub async fn start(
        config: &Config,
        bus: Arc<dyn Bus>,
        store: Arc<dyn AlertStore>,
        shutdown: Shutdown,
    ) -> Result<Alerter, AlerterError> {
        let settings = config.alerter.clone();
        // Taken before the files are read: a change while they are is seen.
        let watch = yaml::Watch::new(&settings.rules);
        let ruleset = rules::load(&settings.rules, settings.prometheus_tenant.as_ref())
            .and_then(|ruleset| ruleset.check_hosts(&settings.playbook_hosts))?;
        let client = webhook::client(settings.ca_file.as_deref())?;
        let metrics = Arc::new(Metrics::new());
        metrics.rules.set(ruleset.rules.len() as i64);
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
        let parts = Parts {
            settings,
            client,
            bus,
            store,
            metrics: Arc::clone(&metrics),
            rollups: topics.rollups,
            holder: format!(
                "{}-{}",
                std::process::id(),
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos())
            ),
        };
        let leads = parts
            .store
            .lease(LEASE, &parts.holder, now_ms(), parts.settings.lease_ms)
            .await?;
        let first = if leads {
            Some(parts.begin(ruleset, watch).await?)
        } else {
            tracing::info!("another alerter holds the lease; standing by");
            None
        };
        let (leading_tx, leading) = watch::channel(leads);
        let renewal = tokio::spawn(renew(
            Arc::clone(&parts.store),
            parts.holder.clone(),
            parts.settings.lease_ms,
            leading_tx,
            shutdown.clone(),
        ));
        let (reloads, requests) = mpsc::channel(4);
        let task = tokio::spawn(parts.lead(first, requests, leading, shutdown));
        Ok(Alerter {
            metrics,
            metrics_address,
            reloads,
            tasks: vec![server, renewal, task],
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

    /// Stops at once, as if the process died: nothing is saved or sent,
    /// and the lease is left to run out.
    pub fn abort(self) {
        for task in self.tasks {
            task.abort();
        }
    }

    /// Waits until shutdown.
    pub async fn wait(self) {
        drop(self.reloads);
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// What an alerter needs to begin a term as the leader.
struct Parts {
    settings: AlerterConfig,
    /// What notifications and actions are sent with.
    client: reqwest::Client,
    bus: Arc<dyn Bus>,
    store: Arc<dyn AlertStore>,
    metrics: Arc<Metrics>,
    rollups: String,
    /// This alerter's name in the lease.
    holder: String,
}

impl Parts {
    /// Begins a term with `ruleset` (read as `watch` last saw the files):
    /// subscribes to the rollups topic, then restores what the store kept,
    /// as a restart does.
    async fn begin(
        &self,
        ruleset: rules::Ruleset,
        watch: yaml::Watch,
    ) -> Result<(Control, Box<dyn Consumer>), AlerterError> {
        let settings = self.settings.clone();
        let store = Arc::clone(&self.store);
        // Subscribed before the store is read: nothing published in between
        // is missed.
        let consumer = self.bus.subscribe(&self.rollups, &settings.group).await?;
        let now_ms = now_ms();
        let saved_alerts = read_state::<Alert>(&*store, Collection::Alert).await?;
        let saved_groups = read_state::<GroupState>(&*store, Collection::Notification).await?;
        let cooldowns = read_state::<u64>(&*store, Collection::Action).await?;
        let outbox = read_state::<Pending>(&*store, Collection::Outbox).await?;
        let runs: Vec<Run> = read_state::<Run>(&*store, Collection::Run)
            .await?
            .into_iter()
            .map(|(_, run)| run)
            .collect();
        store.put_state(&expired(&runs, now_ms)).await?;
        let flap = alerts::Flap {
            changes: settings.flap_changes as usize,
            window_ms: settings.flap_window_s * 1_000,
        };
        let changes = if flap.changes == 0 {
            Vec::new()
        } else {
            let tenants: BTreeSet<TenantId> =
                ruleset.rules.iter().map(|r| r.tenant.clone()).collect();
            let window = (now_ms.saturating_sub(flap.window_ms), now_ms + 1);
            recent_changes(&*store, tenants, window).await?
        };
        let mut engine = Engine::new(ruleset.engine_rules(), now_ms / 1_000);
        let rebuilt_through = engine.evaluated_through();
        let restored = rebuild(&mut engine, &*store, rebuilt_through).await?;
        tracing::info!(
            rules = ruleset.rules.len(),
            alerts = saved_alerts.len(),
            groups = saved_groups.len(),
            undelivered = outbox.len(),
            runs = runs.iter().filter(|r| !r.state.is_over()).count(),
            restored,
            "alerter leads"
        );
        let client = self.client.clone();
        let control = Control {
            dispatcher: Dispatcher::new(
                &ruleset,
                &settings.external_url,
                saved_groups.into_iter().map(|(_, group)| group).collect(),
            ),
            alerts: {
                let mut alerts =
                    Alerts::restore(saved_alerts.into_iter().map(|(_, alert)| alert), flap);
                alerts.recall(changes);
                alerts
            },
            ruleset,
            engine,
            rebuilt_through,
            silences: Vec::new(),
            silences_read: None,
            cooldowns: cooldowns.into_iter().collect(),
            watch,
            settings,
            store,
            client,
            metrics: Arc::clone(&self.metrics),
            outbox: Outbox::restore(outbox.into_iter().map(|(_, pending)| pending)),
            runs: Runs::restore(runs, now_ms),
            crash_verdicts: std::collections::HashMap::new(),
            crashes_read_at: 0,
        };
        control.publish_playbooks(now_ms).await;
        control
            .metrics
            .rules
            .set(control.ruleset.rules.len() as i64);
        Ok((control, consumer))
    }

    /// Leads while it holds the lease, stands by while it does not, until
    /// `shutdown`; then gives the lease up.
    async fn lead(
        self,
        mut first: Option<(Control, Box<dyn Consumer>)>,
        mut requests: mpsc::Receiver<Reply>,
        mut leading: watch::Receiver<bool>,
        shutdown: Shutdown,
    ) {
        loop {
            let term = match first.take() {
                Some(term) => term,
                None => {
                    tokio::select! {
                        () = shutdown.wait() => break,
                        Some(reply) = requests.recv() => {
                            // On standby a reload only checks the files.
                            let checked = rules::load(&self.settings.rules, self.settings.prometheus_tenant.as_ref())
                                .and_then(|ruleset| ruleset.check_hosts(&self.settings.playbook_hosts))
                                .map(|ruleset| ruleset.rules.len())
                                .map_err(|e| e.to_string());
                            let _ = reply.send(checked);
                            continue;
                        }
                        _ = leading.wait_for(|&leads| leads) => {}
                    }
                    let watch = yaml::Watch::new(&self.settings.rules);
                    let began = match rules::load(
                        &self.settings.rules,
                        self.settings.prometheus_tenant.as_ref(),
                    )
                    .and_then(|ruleset| ruleset.check_hosts(&self.settings.playbook_hosts))
                    {
                        Ok(ruleset) => self.begin(ruleset, watch).await,
                        Err(error) => Err(error.into()),
                    };
                    match began {
                        Ok(term) => term,
                        Err(error) => {
                            tracing::error!(%error, "cannot begin leading; trying again");
                            tokio::time::sleep(TERM_RETRY).await;
                            continue;
                        }
                    }
                }
            };
            let (mut control, consumer) = term;
            self.metrics.leader.set(1);
            control
                .serve(consumer, &mut requests, &shutdown, &leading)
                .await;
            self.metrics.leader.set(0);
            if shutdown.is_triggered() {
                break;
            }
            tracing::warn!("this alerter lost its lease; standing by");
        }
        if let Err(error) = self.store.release(LEASE, &self.holder).await {
            tracing::warn!(%error, "could not give the alerter lease up; it runs out by itself");
        }
    }
}

/// Takes or renews the lease every third of its length until `shutdown`,
/// telling the loop whether it leads. A renewal the store refuses keeps
/// the lease as long as the last one that succeeded lasts.
async fn renew(
    store: Arc<dyn AlertStore>,
    holder: String,
    lease_ms: u64,
    leading: watch::Sender<bool>,
    shutdown: Shutdown,
) {
    let mut every = tokio::time::interval(Duration::from_millis(lease_ms / 3));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut held_until = if *leading.borrow() {
        now_ms() + lease_ms
    } else {
        0
    };
    loop {
        tokio::select! {
            () = shutdown.wait() => return,
            _ = every.tick() => {}
        }
        let now = now_ms();
        let leads = match store.lease(LEASE, &holder, now, lease_ms).await {
            Ok(true) => {
                held_until = now + lease_ms;
                true
            }
            Ok(false) => false,
            Err(error) => {
                tracing::warn!(%error, "renewing the alerter lease failed");
                now_ms() < held_until
            }
        };
        leading.send_if_modified(|current| std::mem::replace(current, leads) != leads);
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
