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
pub mod eval;
mod metrics;
pub mod notify;
pub mod rules;
pub mod webhook;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::json;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use vigil_bus::{self as bus, Bus, BusError, Consumer, Topics, positions_after, rollups};
use vigil_config::{AlerterConfig, Config};
use vigil_domain::alert::Collection;
use vigil_domain::shutdown::{self, Shutdown};
use vigil_domain::signal::Matcher;
use vigil_domain::silence::Silence;
use vigil_domain::tenant::TenantId;
use vigil_domain::{metrics_endpoint, yaml};
use vigil_store::{HistoryEntry, RollupQuery, StateRecord, Store, StoreError};

pub use metrics::Metrics;
pub use rules::RulesError;

use alerts::{Alert, Alerts, State, Transition};
use eval::Engine;
use notify::{Dispatcher, GroupState, Notification};
use rules::{Rule, Ruleset};

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
    Rules(#[from] RulesError),
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
        store: Arc<dyn Store>,
        shutdown: Shutdown,
    ) -> Result<Alerter, AlerterError> {
        let settings = config.alerter.clone();
        let seen = yaml::fingerprint(&settings.rules);
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
        let rules: Vec<Arc<Rule>> = ruleset.rules.iter().cloned().map(Arc::new).collect();
        let mut engine = Engine::new(rules, now_ms / 1_000);
        let rebuilt_through = engine.evaluated_through();
        let restored = rebuild(&mut engine, &*store, rebuilt_through).await?;
        tracing::info!(
            rules = ruleset.rules.len(),
            alerts = saved_alerts.len(),
            groups = saved_groups.len(),
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
            seen,
            store,
            client,
            metrics: Arc::clone(&metrics),
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

/// Every record of a collection, as (tenant, key, body); bodies that do not
/// read are logged and left out.
async fn read_state<T: serde::de::DeserializeOwned>(
    store: &dyn Store,
    collection: Collection,
) -> Result<Vec<(String, T)>, StoreError> {
    let records = store.state(collection).await?;
    Ok(records
        .into_iter()
        .filter_map(|record| match serde_json::from_str(&record.body) {
            Ok(value) => Some((record.key, value)),
            Err(error) => {
                tracing::warn!(%error, collection = collection.as_str(), key = %record.key, "unreadable state left out");
                None
            }
        })
        .collect())
}

/// Feeds the engine the 10 s rows the store holds for its rules' ranges
/// (up to [`REBUILD_MAX_S`]) before `through_s`; returns the rows read.
async fn rebuild(
    engine: &mut Engine,
    store: &dyn Store,
    through_s: u64,
) -> Result<usize, StoreError> {
    let mut selections: BTreeMap<(TenantId, vigil_domain::model::Kind, Option<String>), u64> =
        BTreeMap::new();
    for rule in engine.rules() {
        let range = selections
            .entry((rule.tenant.clone(), rule.kind, rule.service.clone()))
            .or_default();
        *range = (*range).max(rule.range_s().min(REBUILD_MAX_S));
    }
    let mut count = 0;
    for ((tenant, kind, service), range_s) in selections {
        let mut query = RollupQuery::new(10, through_s.saturating_sub(range_s), through_s);
        query.tenant = Some(tenant);
        query.kind = Some(kind);
        query.service = service;
        let rows = store.rollups(&query).await?;
        count += rows.len();
        for row in rows {
            engine.ingest(
                &row.series,
                u64::from(row.width_s),
                row.start_s,
                &row.rollup,
            );
        }
    }
    Ok(count)
}

struct Control {
    settings: AlerterConfig,
    seen: yaml::Fingerprint,
    ruleset: Ruleset,
    engine: Engine,
    /// Windows before this came from the store.
    rebuilt_through: u64,
    alerts: Alerts,
    dispatcher: Dispatcher,
    silences: Vec<Silence>,
    silences_read: Option<Instant>,
    /// When an action last fired, by `action/rule/fingerprint`.
    cooldowns: HashMap<String, u64>,
    store: Arc<dyn Store>,
    client: reqwest::Client,
    metrics: Arc<Metrics>,
}

impl Control {
    async fn serve(
        &mut self,
        mut consumer: Box<dyn Consumer>,
        mut requests: mpsc::Receiver<Reply>,
        shutdown: Shutdown,
    ) {
        let mut hangups = shutdown::hangups();
        let watch_every = Duration::from_millis(self.settings.watch_interval_ms);
        let mut watched = Instant::now();
        let mut ticked = Instant::now();
        let mut handle = true;
        // Until the consumer holds partitions (a Kafka group may take seconds
        // to assign them after a restart) a boundary would be judged
        // without its data; the evaluation waits, up to a limit.
        let started = Instant::now();
        let mut assigned = false;
        while !shutdown.is_triggered() {
            match consumer.poll(2_000, Duration::from_millis(200)).await {
                Ok(messages) => {
                    for message in &messages {
                        self.take(message);
                    }
                    if !messages.is_empty()
                        && let Err(error) = consumer.commit(&positions_after(&messages)).await
                    {
                        tracing::warn!(%error, "committing rollups offsets failed");
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "polling the rollups topic failed");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
            let mut reply = None;
            if handle {
                match requests.try_recv() {
                    Ok(request) => reply = Some(request),
                    Err(mpsc::error::TryRecvError::Disconnected) => handle = false,
                    Err(mpsc::error::TryRecvError::Empty) => {}
                }
            }
            let hangup = hangups.try_recv().is_ok();
            let changed = !watch_every.is_zero()
                && watched.elapsed() >= watch_every
                && yaml::fingerprint(&self.settings.rules) != self.seen;
            if watched.elapsed() >= watch_every {
                watched = Instant::now();
            }
            if reply.is_some() || hangup || changed {
                let outcome = self.reload();
                if let Some(reply) = reply {
                    let _ = reply.send(outcome);
                }
            }
            assigned = assigned || !consumer.assignment().is_empty();
            if ticked.elapsed() >= TICK && (assigned || started.elapsed() >= ASSIGNMENT_WAIT) {
                ticked = Instant::now();
                self.tick(now_ms()).await;
            }
        }
    }

    /// Takes one published batch.
    fn take(&mut self, message: &bus::Message) {
        match rollups::decode(&message.payload) {
            Ok(batch) => {
                for row in &batch.rows {
                    // Rows of windows the store gave back were counted.
                    if row.width_s == 10 && row.start_s >= self.rebuilt_through {
                        self.engine
                            .ingest(&row.series, 10, row.start_s, &row.rollup);
                        self.metrics.rows.inc();
                    }
                }
            }
            Err(error) => {
                self.metrics.unreadable.inc();
                tracing::warn!(%error, offset = message.offset, "unreadable rollup batch skipped");
            }
        }
    }

    fn reload(&mut self) -> Result<usize, String> {
        self.seen = yaml::fingerprint(&self.settings.rules);
        match rules::load(&self.settings.rules) {
            Ok(ruleset) => {
                self.metrics.reload(true);
                let count = ruleset.rules.len();
                let rules: Vec<Arc<Rule>> = ruleset.rules.iter().cloned().map(Arc::new).collect();
                // Rules that did not change keep their groups' data: the
                // new engine gets the windows the old one still has.
                let mut engine = Engine::new(rules, self.engine.evaluated_through());
                engine.adopt(&mut self.engine);
                self.engine = engine;
                let dispatcher = std::mem::take(&mut self.dispatcher);
                self.dispatcher = dispatcher.reload(&ruleset);
                self.ruleset = ruleset;
                self.metrics.rules.set(count as i64);
                tracing::info!(rules = count, "rules reloaded");
                Ok(count)
            }
            Err(error) => {
                self.metrics.reload(false);
                tracing::error!(%error, "rules reload refused; the running rules are kept");
                Err(error.to_string())
            }
        }
    }

    async fn tick(&mut self, now_ms: u64) {
        let due_s = now_ms.saturating_sub(self.settings.evaluation_delay_ms) / 1_000;
        let started = Instant::now();
        let rounds = self.engine.advance(due_s);
        if !rounds.is_empty() {
            self.metrics
                .evaluation_seconds
                .observe(started.elapsed().as_secs_f64());
        }
        let mut transitions = Vec::new();
        for (boundary, verdicts) in rounds {
            transitions.extend(
                self.alerts
                    .apply(self.engine.rules(), &verdicts, boundary * 1_000),
            );
        }
        self.refresh_silences().await;
        if !transitions.is_empty() {
            self.record(&transitions, now_ms).await;
            self.remediate(&transitions, now_ms).await;
        }
        let tick = self.dispatcher.tick(&self.alerts, &self.silences, now_ms);
        let mut records: Vec<StateRecord> = tick
            .changed
            .iter()
            .map(|group| {
                state_record(
                    Collection::Notification,
                    &group.tenant,
                    &group.key,
                    group,
                    now_ms,
                )
            })
            .collect();
        for (tenant, key) in &tick.removed {
            records.push(StateRecord {
                deleted: true,
                ..state_record(Collection::Notification, tenant, key, &(), now_ms)
            });
        }
        for fingerprint in &tick.done {
            if let Some(alert) = self.alerts.remove_resolved(fingerprint) {
                records.push(StateRecord {
                    deleted: true,
                    ..state_record(
                        Collection::Alert,
                        &alert.tenant,
                        fingerprint,
                        &alert,
                        now_ms,
                    )
                });
            }
        }
        self.put(&records).await;
        for notification in tick.notifications {
            self.notify(notification);
        }
        let firing = self
            .alerts
            .iter()
            .filter(|a| a.state == State::Firing)
            .count();
        self.metrics.firing.set(firing as i64);
        self.metrics.groups.set(self.engine.groups() as i64);
    }

    async fn put(&self, records: &[StateRecord]) {
        if records.is_empty() {
            return;
        }
        if let Err(error) = self.store.put_state(records).await {
            self.metrics.store_failures.inc();
            tracing::error!(%error, "saving alert state failed");
        }
    }

    async fn refresh_silences(&mut self) {
        if self
            .silences_read
            .is_some_and(|at| at.elapsed() < SILENCE_REFRESH)
        {
            return;
        }
        match self.store.state(Collection::Silence).await {
            Ok(records) => {
                self.silences_read = Some(Instant::now());
                self.silences = records
                    .into_iter()
                    .filter_map(|record| {
                        let mut silence: Silence = serde_json::from_str(&record.body).ok()?;
                        // A silence mutes its own tenant's alerts only.
                        silence
                            .matchers
                            .push(Matcher::equal("tenant", record.tenant.as_str()));
                        Some(silence)
                    })
                    .collect();
            }
            Err(error) => {
                self.metrics.store_failures.inc();
                tracing::warn!(%error, "reading silences failed; the last ones read stay");
            }
        }
    }

    /// Saves the alerts that changed and records the transitions.
    async fn record(&mut self, transitions: &[Transition], now_ms: u64) {
        let mut records = Vec::new();
        let mut history = Vec::new();
        for transition in transitions {
            let alert = &transition.alert;
            self.metrics.transition(transition.to);
            records.push(match transition.to {
                Some(_) => state_record(
                    Collection::Alert,
                    &alert.tenant,
                    &alert.fingerprint,
                    alert,
                    now_ms,
                ),
                None => StateRecord {
                    deleted: true,
                    ..state_record(
                        Collection::Alert,
                        &alert.tenant,
                        &alert.fingerprint,
                        alert,
                        now_ms,
                    )
                },
            });
            history.push(HistoryEntry {
                tenant: alert.tenant.clone(),
                time_ms: now_ms,
                kind: "transition".into(),
                rule: alert.rule.clone(),
                subject: alert.fingerprint.clone(),
                body: json!({
                    "from": transition.from.map_or("inactive", State::as_str),
                    "to": transition.to.map_or("inactive", State::as_str),
                    "labels": alert.labels,
                    "annotations": alert.annotations,
                    "value": alert.value,
                })
                .to_string(),
            });
        }
        self.put(&records).await;
        append(&*self.store, &self.metrics, history).await;
    }

    /// Fires the actions of alerts that started firing and are not
    /// silenced, once per firing and at most once per cooldown.
    async fn remediate(&mut self, transitions: &[Transition], now_ms: u64) {
        let mut records = Vec::new();
        for transition in transitions.iter().filter(|t| t.to == Some(State::Firing)) {
            let alert = &transition.alert;
            let silenced = self
                .silences
                .iter()
                .any(|s| s.is_active(now_ms) && s.matches(&alert.labels));
            let Some(rule) = self.engine.rules().iter().find(|r| r.name == alert.rule) else {
                continue;
            };
            for name in &rule.actions {
                let Some(action) = self.ruleset.actions.get(name) else {
                    continue;
                };
                let key = format!("{name}/{}", alert.fingerprint);
                let cooling = self
                    .cooldowns
                    .get(&key)
                    .is_some_and(|at| now_ms < at + action.cooldown_s * 1_000);
                let skipped = if silenced {
                    Some("silenced")
                } else if cooling {
                    Some("cooldown")
                } else {
                    None
                };
                let vars = alerts::vars(&alert.labels, alert.value, rule.service.as_deref());
                let rendered = action
                    .url
                    .render(&vars)
                    .map_err(|missing| format!("url: {} is not a label of the alert", missing.0))
                    .and_then(|url| {
                        action
                            .body
                            .render(&vars)
                            .map(|body| (url, body))
                            .map_err(|missing| {
                                format!("body: {} is not a label of the alert", missing.0)
                            })
                    });
                let dry_run = action.dry_run || self.settings.dry_run;
                let mut entry = json!({
                    "action": name,
                    "alert": alert.fingerprint,
                    "dryRun": dry_run,
                });
                let call = match (skipped, rendered) {
                    (Some(reason), _) => {
                        entry["outcome"] = json!("skipped");
                        entry["reason"] = json!(reason);
                        None
                    }
                    (None, Err(error)) => {
                        entry["outcome"] = json!("failed");
                        entry["error"] = json!(error);
                        None
                    }
                    (None, Ok((url, body))) => {
                        entry["url"] = json!(url);
                        entry["body"] = body.clone();
                        self.cooldowns.insert(key.clone(), now_ms);
                        records.push(state_record(
                            Collection::Action,
                            &alert.tenant,
                            &key,
                            &now_ms,
                            now_ms,
                        ));
                        if dry_run {
                            entry["outcome"] = json!("dry_run");
                            None
                        } else {
                            Some(webhook::Call {
                                url,
                                method: reqwest::Method::from_bytes(action.method.as_bytes())
                                    .unwrap_or(reqwest::Method::POST),
                                body: body.to_string().into_bytes(),
                                headers: action.headers.clone(),
                                secret: action.secret.clone(),
                                idempotency_key: format!(
                                    "{}-{}",
                                    alert.fingerprint,
                                    alert.fired_ms.unwrap_or(now_ms)
                                ),
                                timeout: action.timeout,
                                max_attempts: action.max_attempts,
                            })
                        }
                    }
                };
                let history = HistoryEntry {
                    tenant: alert.tenant.clone(),
                    time_ms: now_ms,
                    kind: "action".into(),
                    rule: alert.rule.clone(),
                    subject: alert.fingerprint.clone(),
                    body: String::new(),
                };
                match call {
                    None => {
                        self.metrics
                            .action(entry["outcome"].as_str().unwrap_or("failed"));
                        append(
                            &*self.store,
                            &self.metrics,
                            vec![HistoryEntry {
                                body: entry.to_string(),
                                ..history
                            }],
                        )
                        .await;
                    }
                    Some(call) => {
                        let (client, store, metrics) = (
                            self.client.clone(),
                            Arc::clone(&self.store),
                            Arc::clone(&self.metrics),
                        );
                        tokio::spawn(async move {
                            let outcome = webhook::send(&client, &call).await;
                            let ok = outcome.error.is_none();
                            entry["outcome"] = json!(if ok { "sent" } else { "failed" });
                            entry["attempts"] = json!(outcome.attempts);
                            entry["status"] = json!(outcome.status);
                            entry["error"] = json!(outcome.error);
                            metrics.action(if ok { "sent" } else { "failed" });
                            let entry = HistoryEntry {
                                time_ms: self::now_ms(),
                                body: entry.to_string(),
                                ..history
                            };
                            append(&*store, &metrics, vec![entry]).await;
                        });
                    }
                }
            }
        }
        self.put(&records).await;
    }

    /// Sends one notification on its own task and records how it went.
    fn notify(&self, notification: Notification) {
        let Some(receiver) = self.ruleset.receivers.get(&notification.receiver) else {
            return;
        };
        let call = webhook::Call {
            url: receiver.url.clone(),
            method: reqwest::Method::POST,
            body: notification.payload.to_string().into_bytes(),
            headers: receiver.headers.clone(),
            secret: receiver.secret.clone(),
            idempotency_key: notification.idempotency_key.clone(),
            timeout: receiver.timeout,
            max_attempts: receiver.max_attempts,
        };
        let (client, store, metrics) = (
            self.client.clone(),
            Arc::clone(&self.store),
            Arc::clone(&self.metrics),
        );
        tokio::spawn(async move {
            let outcome = webhook::send(&client, &call).await;
            let ok = outcome.error.is_none();
            metrics.notification(ok);
            if !ok {
                tracing::warn!(
                    receiver = %notification.receiver, group = %notification.group_key,
                    error = ?outcome.error, attempts = outcome.attempts, "notification failed"
                );
            }
            let rule = notification.payload["commonLabels"]["alertname"]
                .as_str()
                .unwrap_or("")
                .to_owned();
            let entry = HistoryEntry {
                tenant: notification.tenant.clone(),
                time_ms: now_ms(),
                kind: "notification".into(),
                rule,
                subject: notification.group_key.clone(),
                body: json!({
                    "receiver": notification.receiver,
                    "idempotencyKey": notification.idempotency_key,
                    "status": notification.payload["status"],
                    "alerts": notification.alerts.iter().map(|(fp, s)| json!({"fingerprint": fp, "status": s.as_str()})).collect::<Vec<_>>(),
                    "outcome": if ok { "sent" } else { "failed" },
                    "attempts": outcome.attempts,
                    "httpStatus": outcome.status,
                    "error": outcome.error,
                })
                .to_string(),
            };
            append(&*store, &metrics, vec![entry]).await;
        });
    }
}

async fn append(store: &dyn Store, metrics: &Metrics, entries: Vec<HistoryEntry>) {
    if entries.is_empty() {
        return;
    }
    if let Err(error) = store.append_history(&entries).await {
        metrics.store_failures.inc();
        tracing::error!(%error, "recording alert history failed");
    }
}

fn state_record<T: serde::Serialize>(
    collection: Collection,
    tenant: &TenantId,
    key: &str,
    value: &T,
    now_ms: u64,
) -> StateRecord {
    StateRecord {
        collection,
        tenant: tenant.clone(),
        key: key.to_owned(),
        version: now_ms,
        body: serde_json::to_string(value).unwrap_or_default(),
        deleted: false,
    }
}
