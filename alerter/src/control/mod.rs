//! The alerter's one loop: it takes the published rows, evaluates each
//! boundary, moves alerts along and sends what is due. Notifications go
//! through the [`outbox`] until their receiver accepts them; remediation
//! actions are in [`remediation`], playbook runs in [`playbooks`], what it
//! keeps in the store in [`state`].

mod crashes;
mod located;
mod outbox;
mod playbooks;
mod remediation;
mod state;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use vigil_bus::{self as bus, Consumer, positions_after, rollups};
use vigil_config::AlerterConfig;
use vigil_domain::alert::Collection;
use vigil_domain::shutdown::{self, Shutdown};
use vigil_domain::signal::Matcher;
use vigil_domain::silence::Silence;
use vigil_domain::yaml;
use vigil_store::{AlertStore, StateRecord};

use crate::alerts::{Alerts, State};
use crate::eval::Engine;
use crate::notify::Dispatcher;
use crate::rules::{self, Ruleset};
use crate::{ASSIGNMENT_WAIT, Metrics, Reply, SILENCE_REFRESH, TICK, now_ms};
pub(crate) use outbox::{Outbox, Pending};
pub(crate) use playbooks::{Runs, expired};
use state::{alert_record, state_record};
pub(crate) use state::{read_state, rebuild, recent_changes};

pub(crate) struct Control {
    pub(crate) settings: AlerterConfig,
    pub(crate) watch: yaml::Watch,
    pub(crate) ruleset: Ruleset,
    pub(crate) engine: Engine,
    /// Windows before this came from the store.
    pub(crate) rebuilt_through: u64,
    pub(crate) alerts: Alerts,
    pub(crate) dispatcher: Dispatcher,
    pub(crate) silences: Vec<Silence>,
    pub(crate) silences_read: Option<Instant>,
    /// When an action last fired, by `action/rule/fingerprint`.
    pub(crate) cooldowns: HashMap<String, u64>,
    pub(crate) store: Arc<dyn AlertStore>,
    pub(crate) client: reqwest::Client,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) outbox: Outbox,
    pub(crate) runs: Runs,
    /// The last verdicts of each `crash_group` rule read, by rule index,
    /// and the boundary they were read at.
    pub(crate) crash_verdicts: HashMap<usize, Vec<crate::eval::Verdict>>,
    pub(crate) crashes_read_at: u64,
}

/// One evaluation's verdicts: a boundary's, or a slide's between two.
struct Round {
    at_ms: u64,
    verdicts: Vec<crate::eval::Verdict>,
    slide: bool,
}

impl Control {
    /// Runs the loop while this alerter leads (holds the lease) and until
    /// `shutdown`; on shutdown, waits for the notifications in flight.
    pub(crate) async fn serve(
        &mut self,
        mut consumer: Box<dyn Consumer>,
        requests: &mut mpsc::Receiver<Reply>,
        shutdown: &Shutdown,
        leading: &watch::Receiver<bool>,
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
        while !shutdown.is_triggered() && *leading.borrow() {
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
                && self.watch.settled_change();
            if watched.elapsed() >= watch_every {
                watched = Instant::now();
            }
            if reply.is_some() || hangup || changed {
                let outcome = self.reload().await;
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
        if shutdown.is_triggered() {
            self.drain_outbox().await;
            self.drain_calls().await;
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

    async fn reload(&mut self) -> Result<usize, String> {
        self.watch.read();
        match rules::load(
            &self.settings.rules,
            self.settings.prometheus_tenant.as_ref(),
        )
        .and_then(|ruleset| ruleset.check_hosts(&self.settings.playbook_hosts))
        {
            Ok(ruleset) => {
                self.metrics.reload(true);
                let count = ruleset.rules.len();
                // Rules that did not change keep their groups' data: the
                // new engine gets the windows the old one still has.
                let mut engine =
                    Engine::new(ruleset.engine_rules(), self.engine.evaluated_through());
                engine.adopt(&mut self.engine);
                self.engine = engine;
                let dispatcher = std::mem::take(&mut self.dispatcher);
                self.dispatcher = dispatcher.reload(&ruleset);
                self.ruleset = ruleset;
                // Rule indices change with the rules.
                self.crash_verdicts.clear();
                self.crashes_read_at = 0;
                self.publish_playbooks(now_ms()).await;
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
        let due_ms = now_ms.saturating_sub(self.settings.evaluation_delay_ms);
        let started = Instant::now();
        let mut rounds: Vec<Round> = self
            .engine
            .advance(due_ms / 1_000)
            .into_iter()
            .map(|(boundary, verdicts)| Round {
                at_ms: boundary * 1_000,
                verdicts,
                slide: false,
            })
            .collect();
        // Crash group rules read the store once per tick, at its last
        // boundary; their verdicts hold for each boundary of the tick.
        if let Some(last) = rounds.last() {
            let crashes = self.crash_verdicts(last.at_ms / 1_000).await;
            for round in &mut rounds {
                round.verdicts.extend(crashes.iter().cloned());
            }
        } else if due_ms > self.engine.evaluated_through() * 1_000 {
            // Between boundaries, the rules that slide judge the freshest
            // rows.
            rounds.push(Round {
                at_ms: due_ms,
                verdicts: self.engine.slide(),
                slide: true,
            });
        }
        if !rounds.is_empty() {
            self.metrics
                .evaluation_seconds
                .observe(started.elapsed().as_secs_f64());
        }
        let mut transitions = Vec::new();
        let mut flaps = Vec::new();
        // Verdicts of the playbooks' checks make no alerts: runs read them
        // at boundaries.
        let alerting = self.ruleset.rules.len();
        let mut checked = Vec::new();
        for round in rounds {
            let (alerts, checks): (Vec<_>, Vec<_>) =
                round.verdicts.into_iter().partition(|v| v.rule < alerting);
            let rules = self.engine.rules();
            transitions.extend(if round.slide {
                self.alerts.apply_slide(rules, &alerts, round.at_ms)
            } else {
                self.alerts.apply(rules, &alerts, round.at_ms)
            });
            flaps.extend(self.alerts.flaps(round.at_ms));
            if !round.slide {
                checked.push((round.at_ms / 1_000, checks));
            }
        }
        if !flaps.is_empty() {
            self.record_flaps(&flaps, now_ms).await;
        }
        // What `GET /api/v1/alerts` reads of firing alerts' values.
        let refreshed: Vec<StateRecord> = self
            .alerts
            .values_to_save(now_ms)
            .iter()
            .map(|alert| alert_record(alert, false, now_ms))
            .collect();
        self.put(&refreshed).await;
        self.refresh_silences().await;
        if !transitions.is_empty() {
            self.locate(&mut transitions, now_ms).await;
            self.record(&transitions, now_ms).await;
            self.remediate(&transitions, now_ms).await;
            self.start_runs(&transitions, now_ms).await;
        }
        self.advance_runs(&checked, now_ms).await;
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
                records.push(alert_record(&alert, true, now_ms));
            }
        }
        // The group states that made notifications due and the
        // notifications themselves are written together.
        for notification in tick.notifications {
            records.push(self.outbox.add(notification, now_ms));
        }
        self.put(&records).await;
        self.deliver(now_ms).await;
        let firing = self
            .alerts
            .iter()
            .filter(|a| a.state == State::Firing)
            .count();
        self.metrics.firing.set(firing as i64);
        self.metrics.groups.set(self.engine.groups() as i64);
    }

    async fn refresh_silences(&mut self) {
        if self
            .silences_read
            .is_some_and(|at| at.elapsed() < SILENCE_REFRESH)
        {
            return;
        }
        self.read_switch().await;
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
}
