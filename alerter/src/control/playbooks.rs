//! Playbook runs: started when an alert of a bound rule fires, carried out
//! a step at a time at each tick, each step's state written to the store
//! (`Collection::Run`) before what it does is sent, so a restarted alerter
//! takes every run up at its step. A call that was sent and not answered
//! before a crash is sent again with the same idempotency key (the run's
//! id and the step's number): its receiver, which deduplicates by key,
//! does it once; a call that was answered is never sent again.
//!
//! Safety: one run per playbook and alert at a time, at most
//! `max_runs_per_hour` runs of a playbook in any hour, calls only to
//! `alerter.playbook_hosts`, and the kill switch
//! (`POST /api/v1/playbooks/pause`): while it is on no run starts, and the
//! running ones stop before their next step.

use std::collections::{BTreeMap, HashSet};

use serde_json::{Value, json};
use tokio::sync::mpsc;
use vigil_domain::alert::Collection;
use vigil_domain::playbook::{Approval, Run, RunState, StepRecord, StepState, Switch};
use vigil_domain::signal::Matcher;
use vigil_domain::template::Vars;
use vigil_store::{HistoryEntry, StateRecord};

use super::Control;
use super::remediation::{render_action, webhook_call};
use super::state::{alert_record, append, state_record};
use crate::alerts::{self, Alert, State, Transition};
use crate::eval::Verdict;
use crate::rules::{Playbook, StepKind};
use crate::webhook;

/// How long an ended run is kept in the store.
const RUN_RETENTION_MS: u64 = 30 * 86_400_000;
const HOUR_MS: u64 = 3_600_000;

/// A call's answer, back from its task.
pub(crate) struct Answered {
    run: String,
    step: usize,
    outcome: webhook::Outcome,
}

/// The runs under way and those of the last hour (for the hourly limit).
pub(crate) struct Runs {
    runs: BTreeMap<String, Run>,
    /// Calls sent and not yet answered: (run, step).
    in_flight: HashSet<(String, usize)>,
    answered_tx: mpsc::UnboundedSender<Answered>,
    answered_rx: mpsc::UnboundedReceiver<Answered>,
    /// The kill switch as last read.
    pub(crate) switch: Option<Switch>,
    /// Runs started since the last [`Control::advance_runs`], not yet written.
    fresh: Vec<String>,
}

impl Runs {
    /// The runs as the store kept them: those not over, and those of the
    /// last hour.
    pub(crate) fn restore(saved: impl IntoIterator<Item = Run>, now_ms: u64) -> Runs {
        let (answered_tx, answered_rx) = mpsc::unbounded_channel();
        Runs {
            runs: saved
                .into_iter()
                .filter(|run| !run.state.is_over() || run.started_ms + HOUR_MS > now_ms)
                .map(|run| (run.id.clone(), run))
                .collect(),
            in_flight: HashSet::new(),
            answered_tx,
            answered_rx,
            switch: None,
            fresh: Vec::new(),
        }
    }

    fn paused(&self) -> Option<&Switch> {
        self.switch.as_ref().filter(|s| s.paused)
    }

    /// Why `run` of `playbook` may not start now, if it may not: the kill
    /// switch, a run of the playbook for the same alert under way, or the
    /// playbook's runs of the last hour.
    fn refusal(&self, playbook: &Playbook, run: &Run, now_ms: u64) -> Option<String> {
        let same_playbook = |r: &&Run| r.playbook == run.playbook && r.tenant == run.tenant;
        let runs = || self.runs.values().filter(same_playbook);
        if let Some(switch) = self.paused() {
            Some(format!("the playbooks are paused (by {})", switch.by))
        } else if runs().any(|r| !r.state.is_over() && r.alert == run.alert) {
            Some("a run for this alert is under way".to_owned())
        } else if runs().filter(|r| r.started_ms + HOUR_MS > now_ms).count()
            >= playbook.max_runs_per_hour as usize
        {
            Some(format!(
                "{} runs in the last hour already (max_runs_per_hour)",
                playbook.max_runs_per_hour
            ))
        } else {
            None
        }
    }

    pub(crate) fn live(&self) -> usize {
        self.runs.values().filter(|r| !r.state.is_over()).count()
    }
}

/// The runs the store holds that ended too long ago, to delete.
pub(crate) fn expired(saved: &[Run], now_ms: u64) -> Vec<StateRecord> {
    saved
        .iter()
        .filter(|run| {
            run.ended_ms
                .is_some_and(|ended| ended + RUN_RETENTION_MS < now_ms)
        })
        .map(|run| StateRecord {
            deleted: true,
            ..state_record(Collection::Run, &run.tenant, &run.id, &(), now_ms)
        })
        .collect()
}

/// A run's id: its playbook, alert and start, hashed.
fn run_id(playbook: &str, alert: &str, started_ms: u64) -> String {
    alerts::fingerprint(&BTreeMap::from([
        ("playbook".to_owned(), playbook.to_owned()),
        ("alert".to_owned(), alert.to_owned()),
        ("started".to_owned(), started_ms.to_string()),
    ]))
}

/// A run of `playbook` for `alert` starting at `now_ms`, its steps pending.
fn new_run(playbook: &Playbook, alert: &Alert, now_ms: u64) -> Run {
    Run {
        id: run_id(&playbook.name, &alert.fingerprint, now_ms),
        tenant: alert.tenant.clone(),
        playbook: playbook.name.clone(),
        rule: alert.rule.clone(),
        alert: alert.fingerprint.clone(),
        labels: alert.labels.clone(),
        located: alert
            .located
            .first()
            .map(|l| l.labels.clone())
            .unwrap_or_default(),
        state: RunState::Running,
        started_ms: now_ms,
        ended_ms: None,
        step: 0,
        steps: playbook
            .steps
            .iter()
            .map(|step| StepRecord {
                kind: step.kind.as_str().into(),
                target: step.kind.target(),
                state: StepState::Pending,
                started_ms: None,
                ended_ms: None,
                detail: Value::Null,
            })
            .collect(),
        reason: String::new(),
    }
}

/// What templates and `if` matchers read (see `rules::playbooks`).
fn run_vars(run: &Run, value: Option<f64>, service: Option<&str>) -> Vars {
    let mut vars = alerts::vars(&run.labels, value, service);
    for (key, value) in &run.located {
        vars.insert(format!("located.{key}"), Value::from(value.as_str()));
    }
    vars.insert("check".into(), Value::from(last_check(run)));
    vars
}

/// How the run's last check that ended went: `passed`, `failed`, or "".
fn last_check(run: &Run) -> &'static str {
    run.steps
        .iter()
        .rev()
        .filter(|s| s.kind == "check")
        .find_map(|s| match s.state {
            StepState::Done => Some("passed"),
            StepState::Failed => Some("failed"),
            _ => None,
        })
        .unwrap_or("")
}

/// Whether `matchers` hold on `vars` (each read as text).
fn holds(matchers: &[Matcher], vars: &Vars) -> bool {
    let labels: BTreeMap<String, String> = vars
        .iter()
        .map(|(key, value)| {
            let text = match value {
                Value::String(text) => text.clone(),
                Value::Null => String::new(),
                other => other.to_string(),
            };
            (key.clone(), text)
        })
        .collect();
    matchers.iter().all(|m| m.matches(&labels))
}

impl Control {
    fn binds(playbook: &Playbook, alert: &Alert) -> bool {
        playbook.tenant == alert.tenant
            && (playbook.rules.contains(&alert.rule)
                || (!playbook.matchers.is_empty()
                    && playbook.matchers.iter().all(|m| m.matches(&alert.labels))))
    }

    /// Starts the runs of the playbooks bound to alerts that started
    /// firing (not silenced ones).
    pub(super) async fn start_runs(&mut self, transitions: &[Transition], now_ms: u64) {
        let mut history = Vec::new();
        let mut started = Vec::new();
        for transition in transitions.iter().filter(|t| t.to == Some(State::Firing)) {
            let alert = &transition.alert;
            if self
                .silences
                .iter()
                .any(|s| s.is_active(now_ms) && s.matches(&alert.labels))
            {
                continue;
            }
            let service = self
                .engine
                .rules()
                .iter()
                .find(|r| r.owns(alert))
                .and_then(|r| r.service.clone());
            for playbook in self
                .ruleset
                .playbooks
                .iter()
                .filter(|p| Self::binds(p, alert))
            {
                let mut run = new_run(playbook, alert, now_ms);
                let vars = run_vars(&run, alert.value, service.as_deref());
                if !holds(&playbook.when, &vars) {
                    continue;
                }
                if let Some(reason) = self.runs.refusal(playbook, &run, now_ms) {
                    self.metrics.run("refused");
                    history.push(HistoryEntry {
                        tenant: alert.tenant.clone(),
                        time_ms: now_ms,
                        kind: "playbook".into(),
                        rule: alert.rule.clone(),
                        subject: alert.fingerprint.clone(),
                        body: json!({"playbook": playbook.name, "outcome": "refused", "reason": reason})
                            .to_string(),
                    });
                    continue;
                }
                if playbook.dry_run || self.settings.dry_run {
                    // Over at once: advance_runs records its end.
                    self.dry_run(&mut run, playbook, &vars, now_ms);
                } else {
                    self.metrics.run(run.state.as_str());
                    history.push(run_entry(&run, now_ms));
                }
                started.push(run.id.clone());
                self.runs.fresh.push(run.id.clone());
                self.runs.runs.insert(run.id.clone(), run);
            }
        }
        // The runs themselves are written by advance_runs, in this tick,
        // before their first call goes out.
        let mut records = Vec::new();
        for id in &started {
            let fingerprint = self.runs.runs[id].alert.clone();
            if let Some(alert) = self.alerts.get_mut(&fingerprint)
                && alert.remediation_started_ms.is_none()
            {
                alert.remediation_started_ms = Some(now_ms);
                records.push(alert_record(alert, false, now_ms));
            }
        }
        self.put(&records).await;
        append(&*self.store, &self.metrics, history).await;
    }

    /// A dry run: every step recorded as what it would do, nothing done.
    fn dry_run(&self, run: &mut Run, playbook: &Playbook, vars: &Vars, now_ms: u64) {
        for (step, record) in playbook.steps.iter().zip(&mut run.steps) {
            record.started_ms = Some(now_ms);
            record.ended_ms = Some(now_ms);
            if !holds(&step.when, vars) {
                record.state = StepState::Skipped;
                continue;
            }
            record.state = StepState::Done;
            record.detail = match &step.kind {
                StepKind::Call(name) => match render_action(&self.ruleset.actions[name], vars) {
                    Ok((url, body)) => json!({"dryRun": true, "url": url, "body": body}),
                    Err(error) => json!({"dryRun": true, "error": error}),
                },
                StepKind::Check(check) => {
                    json!({"dryRun": true, "where": render_where(&check.where_, vars)})
                }
                _ => json!({"dryRun": true}),
            };
        }
        run.step = run.steps.len();
        run.state = RunState::DryRun;
        run.ended_ms = Some(now_ms);
        run.reason = "dry run: nothing was called".into();
    }

    /// Carries every live run as far as it can go now: answers of calls,
    /// the checks' verdicts of the boundaries evaluated (`rounds`), waits
    /// that ended, approvals given.
    pub(super) async fn advance_runs(&mut self, rounds: &[(u64, Vec<Verdict>)], now_ms: u64) {
        let mut changed = self.take_answers(now_ms);
        changed.extend(self.runs.fresh.drain(..));
        if self
            .runs
            .runs
            .values()
            .any(|r| r.state == RunState::Waiting)
        {
            self.read_approvals(&mut changed, now_ms).await;
        }
        let mut calls = Vec::new();
        let mut notifications = Vec::new();
        let ids: Vec<String> = self
            .runs
            .runs
            .iter()
            .filter(|(_, r)| !r.state.is_over())
            .map(|(id, _)| id.clone())
            .collect();
        for id in ids {
            let Some(mut run) = self.runs.runs.remove(&id) else {
                continue;
            };
            let before = run.clone();
            self.step(&mut run, rounds, now_ms, &mut calls, &mut notifications);
            if run != before {
                changed.insert(id.clone());
            }
            self.runs.runs.insert(id, run);
        }
        let mut records = Vec::new();
        let mut history = Vec::new();
        for id in &changed {
            let run = &self.runs.runs[id];
            records.push(state_record(
                Collection::Run,
                &run.tenant,
                &run.id,
                run,
                now_ms,
            ));
            if run.state.is_over() && run.ended_ms == Some(now_ms) {
                self.metrics.run(run.state.as_str());
                history.push(run_entry(run, now_ms));
                if run.state == RunState::Recovered
                    && let Some(alert) = self.alerts.get_mut(&run.alert)
                    && alert.recovered_ms.is_none()
                {
                    alert.recovered_ms = Some(now_ms);
                    records.push(alert_record(alert, false, now_ms));
                }
            }
        }
        for notification in notifications {
            records.push(self.outbox.add(notification, now_ms));
        }
        // The steps are written before their calls go out.
        self.put(&records).await;
        append(&*self.store, &self.metrics, history).await;
        for (run, step, call) in calls {
            self.send_call(run, step, call);
        }
        // Runs over for an hour only count against the hourly limit.
        self.runs
            .runs
            .retain(|_, r| !r.state.is_over() || r.started_ms + HOUR_MS > now_ms);
        self.metrics.runs.set(self.runs.live() as i64);
    }

    /// At a stop: waits, for [`super::outbox::DRAIN_WAIT`] at most, for the
    /// calls under way and records their answers, so that a call answered
    /// is not made again after the restart.
    pub(super) async fn drain_calls(&mut self) {
        let deadline = std::time::Instant::now() + super::outbox::DRAIN_WAIT;
        while !self.runs.in_flight.is_empty() && std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            let now_ms = crate::now_ms();
            let records: Vec<StateRecord> = self
                .take_answers(now_ms)
                .iter()
                .map(|id| {
                    let run = &self.runs.runs[id];
                    state_record(Collection::Run, &run.tenant, &run.id, run, now_ms)
                })
                .collect();
            self.put(&records).await;
        }
    }

    /// The answers of calls that came back, recorded in their runs; the
    /// runs changed.
    fn take_answers(&mut self, now_ms: u64) -> HashSet<String> {
        let mut changed = HashSet::new();
        while let Ok(answered) = self.runs.answered_rx.try_recv() {
            self.runs
                .in_flight
                .remove(&(answered.run.clone(), answered.step));
            if let Some(run) = self.runs.runs.get_mut(&answered.run) {
                let step = &mut run.steps[answered.step];
                let outcome = &answered.outcome;
                step.state = if outcome.error.is_none() {
                    StepState::Done
                } else {
                    StepState::Failed
                };
                step.ended_ms = Some(now_ms);
                step.detail["attempts"] = json!(outcome.attempts);
                step.detail["status"] = json!(outcome.status);
                step.detail["error"] = json!(outcome.error);
                self.metrics.action(if outcome.error.is_none() {
                    "sent"
                } else {
                    "failed"
                });
                changed.insert(answered.run);
            }
        }
        changed
    }

    fn send_call(&mut self, run: String, step: usize, call: webhook::Call) {
        if !self.runs.in_flight.insert((run.clone(), step)) {
            return;
        }
        let (client, answered) = (self.client.clone(), self.runs.answered_tx.clone());
        tokio::spawn(async move {
            let outcome = webhook::send(&client, &call).await;
            let _ = answered.send(Answered { run, step, outcome });
        });
    }

    /// Moves `run` along as far as it can go now.
    fn step(
        &self,
        run: &mut Run,
        rounds: &[(u64, Vec<Verdict>)],
        now_ms: u64,
        calls: &mut Vec<(String, usize, webhook::Call)>,
        notifications: &mut Vec<crate::notify::Notification>,
    ) {
        let Some(playbook) = self
            .ruleset
            .playbooks
            .iter()
            .find(|p| p.name == run.playbook && p.tenant == run.tenant)
        else {
            return end(
                run,
                RunState::Aborted,
                "the playbook was removed by a reload",
                now_ms,
            );
        };
        if playbook.steps.len() != run.steps.len() {
            return end(
                run,
                RunState::Aborted,
                "the playbook's steps changed during the run",
                now_ms,
            );
        }
        if let Some(switch) = self.runs.paused() {
            let reason = format!("the playbooks were paused (by {})", switch.by);
            return end(run, RunState::Aborted, &reason, now_ms);
        }
        let alert = self.alerts.get(&run.alert);
        let service = self
            .engine
            .rules()
            .iter()
            .find(|r| r.name == run.rule && r.tenant == run.tenant)
            .and_then(|r| r.service.clone());
        while run.step < run.steps.len() {
            let index = run.step;
            let step = &playbook.steps[index];
            let vars = run_vars(run, alert.and_then(|a| a.value), service.as_deref());
            let record = &mut run.steps[index];
            if record.state == StepState::Pending {
                if !holds(&step.when, &vars) {
                    record.state = StepState::Skipped;
                    run.step += 1;
                    continue;
                }
                record.state = StepState::Running;
                record.started_ms = Some(now_ms);
                match &step.kind {
                    StepKind::Call(name) => {
                        let action = &self.ruleset.actions[name];
                        match render_action(action, &vars) {
                            Ok((url, body)) => {
                                let key = format!("{}-{index}", run.id);
                                record.detail = json!({"url": url, "method": action.method, "body": body, "idempotencyKey": key});
                            }
                            Err(error) => {
                                record.state = StepState::Failed;
                                record.ended_ms = Some(now_ms);
                                record.detail = json!({"error": error});
                            }
                        }
                    }
                    StepKind::Check(check) => {
                        record.detail = json!({"where": render_where(&check.where_, &vars)});
                    }
                    StepKind::Approve { receiver, .. } | StepKind::Escalate(receiver) => {
                        notifications.push(
                            self.dispatcher
                                .playbook_notification(alert, run, index, receiver, now_ms),
                        );
                        let record = &mut run.steps[index];
                        record.detail = json!({"receiver": receiver});
                        if matches!(step.kind, StepKind::Escalate(_)) {
                            record.state = StepState::Done;
                            record.ended_ms = Some(now_ms);
                        }
                    }
                    StepKind::Wait(_) => {}
                }
            }
            let record = &mut run.steps[index];
            if record.state == StepState::Running {
                let started_ms = record.started_ms.unwrap_or(now_ms);
                match &step.kind {
                    StepKind::Call(name) => {
                        // Sent now, or again after a restart that cut it short.
                        if !self.runs.in_flight.contains(&(run.id.clone(), index)) {
                            let action = &self.ruleset.actions[name];
                            let detail = &record.detail;
                            calls.push((
                                run.id.clone(),
                                index,
                                webhook_call(
                                    action,
                                    detail["url"].as_str().unwrap_or_default().to_owned(),
                                    &detail["body"],
                                    detail["idempotencyKey"]
                                        .as_str()
                                        .unwrap_or_default()
                                        .to_owned(),
                                ),
                            ));
                        }
                    }
                    StepKind::Wait(wait) => {
                        if now_ms >= started_ms + wait.as_millis() as u64 {
                            record.state = StepState::Done;
                            record.ended_ms = Some(now_ms);
                        }
                    }
                    StepKind::Check(check) => judge(record, check, rounds, &self.engine, now_ms),
                    StepKind::Approve { timeout, .. } => {
                        if now_ms >= started_ms + timeout.as_millis() as u64 {
                            record.state = StepState::Failed;
                            record.ended_ms = Some(now_ms);
                            let reason = format!("not approved within {} s", timeout.as_secs());
                            return end(run, RunState::Aborted, &reason, now_ms);
                        }
                        run.state = RunState::Waiting;
                    }
                    StepKind::Escalate(_) => {}
                }
            }
            if matches!(run.steps[index].state, StepState::Running) {
                return;
            }
            run.state = RunState::Running;
            run.step += 1;
        }
        match last_check(run) {
            "passed" => end(run, RunState::Recovered, "its last check passed", now_ms),
            _ => end(run, RunState::Failed, "its last check did not pass", now_ms),
        }
    }

    /// Takes the approvals given for waiting runs.
    async fn read_approvals(&mut self, changed: &mut HashSet<String>, now_ms: u64) {
        let records = match self.store.state(Collection::Approval).await {
            Ok(records) => records,
            Err(error) => {
                self.metrics.store_failures.inc();
                tracing::warn!(%error, "reading approvals failed");
                return;
            }
        };
        let mut done = Vec::new();
        for record in records {
            let Some(run) = self.runs.runs.get_mut(&record.key) else {
                continue;
            };
            let Ok(approval) = serde_json::from_str::<Approval>(&record.body) else {
                continue;
            };
            if run.tenant != record.tenant || run.state != RunState::Waiting {
                continue;
            }
            let step = &mut run.steps[run.step];
            step.state = StepState::Done;
            step.ended_ms = Some(now_ms);
            step.detail["approvedBy"] = json!(approval.by);
            step.detail["approvedAtMs"] = json!(approval.at_ms);
            run.state = RunState::Running;
            changed.insert(run.id.clone());
            done.push(StateRecord {
                deleted: true,
                version: record.version.max(now_ms) + 1,
                ..record
            });
        }
        self.put(&done).await;
    }

    /// Reads the kill switch (with the silences).
    pub(super) async fn read_switch(&mut self) {
        match self.store.state(Collection::Switch).await {
            Ok(records) => {
                self.runs.switch = Switch::latest(records.iter().map(|r| (&*r.key, &*r.body)));
            }
            Err(error) => {
                self.metrics.store_failures.inc();
                tracing::warn!(%error, "reading the playbooks' switch failed; the last one read stays");
            }
        }
    }

    /// Writes the playbooks loaded (`Collection::Playbook`), for
    /// `GET /api/v1/playbooks`, and deletes those no longer loaded.
    pub(crate) async fn publish_playbooks(&self, now_ms: u64) {
        let mut records: Vec<StateRecord> = self
            .ruleset
            .playbooks
            .iter()
            .map(|p| {
                state_record(
                    Collection::Playbook,
                    &p.tenant,
                    &p.name,
                    &describe(p),
                    now_ms,
                )
            })
            .collect();
        match self.store.state(Collection::Playbook).await {
            Ok(saved) => records.extend(
                saved
                    .into_iter()
                    .filter(|r| {
                        !self
                            .ruleset
                            .playbooks
                            .iter()
                            .any(|p| p.name == r.key && p.tenant == r.tenant)
                    })
                    .map(|r| StateRecord {
                        deleted: true,
                        version: now_ms,
                        ..r
                    }),
            ),
            Err(error) => tracing::warn!(%error, "reading the playbooks published failed"),
        }
        self.put(&records).await;
    }
}

/// Ends `run` as `state`.
fn end(run: &mut Run, state: RunState, reason: &str, now_ms: u64) {
    run.state = state;
    run.ended_ms = Some(now_ms);
    run.reason = reason.to_owned();
}

/// A check's `where`, rendered at the step's start; a variable missing
/// renders as "" (no group has it: the check cannot pass, which the run
/// then says).
fn render_where(
    where_: &[(String, vigil_domain::template::Template)],
    vars: &Vars,
) -> BTreeMap<String, String> {
    where_
        .iter()
        .map(|(key, template)| (key.clone(), template.render(vars).unwrap_or_default()))
        .collect()
}

/// Judges a running check on the boundaries evaluated since it started:
/// it passes once its condition held for the group its `where` selects at
/// every boundary for `for`; it fails at its deadline.
fn judge(
    record: &mut StepRecord,
    check: &crate::rules::CheckStep,
    rounds: &[(u64, Vec<Verdict>)],
    engine: &crate::eval::Engine,
    now_ms: u64,
) {
    let started_ms = record.started_ms.unwrap_or(now_ms);
    let wanted: BTreeMap<String, String> =
        serde_json::from_value(record.detail["where"].clone()).unwrap_or_default();
    for (boundary_s, verdicts) in rounds {
        let boundary_ms = boundary_s * 1_000;
        if boundary_ms < started_ms {
            continue;
        }
        let held = verdicts.iter().any(|verdict| {
            engine.rules()[verdict.rule].name == check.rule
                && wanted
                    .iter()
                    .all(|(key, value)| verdict.labels.iter().any(|(k, v)| k == key && v == value))
        });
        if !held {
            record.detail["holdingSinceMs"] = Value::Null;
            continue;
        }
        let since = record.detail["holdingSinceMs"]
            .as_u64()
            .unwrap_or(boundary_ms);
        record.detail["holdingSinceMs"] = json!(since);
        if boundary_ms >= since + check.for_s * 1_000 {
            record.state = StepState::Done;
            record.ended_ms = Some(now_ms);
            record.detail["passedAtMs"] = json!(boundary_ms);
            return;
        }
    }
    if now_ms >= started_ms + check.deadline_s * 1_000 {
        record.state = StepState::Failed;
        record.ended_ms = Some(now_ms);
    }
}

/// The history entry of a run that started or ended.
fn run_entry(run: &Run, now_ms: u64) -> HistoryEntry {
    HistoryEntry {
        tenant: run.tenant.clone(),
        time_ms: now_ms,
        kind: "playbook".into(),
        rule: run.rule.clone(),
        subject: run.alert.clone(),
        body: json!({
            "playbook": run.playbook,
            "run": run.id,
            "outcome": run.state.as_str(),
            "reason": run.reason,
        })
        .to_string(),
    }
}

/// What `GET /api/v1/playbooks` shows of a playbook.
fn describe(playbook: &Playbook) -> Value {
    let matchers = |ms: &[Matcher]| {
        ms.iter()
            .map(|m| {
                format!(
                    "{}{}{:?}",
                    m.name,
                    if m.is_equal { "=" } else { "!=" },
                    m.value
                )
            })
            .collect::<Vec<_>>()
    };
    json!({
        "name": playbook.name,
        "rules": playbook.rules,
        "matchers": matchers(&playbook.matchers),
        "if": matchers(&playbook.when),
        "max_runs_per_hour": playbook.max_runs_per_hour,
        "dry_run": playbook.dry_run,
        "steps": playbook.steps.iter().map(|step| {
            let mut described = json!({"kind": step.kind.as_str(), "target": step.kind.target()});
            if !step.when.is_empty() {
                described["if"] = json!(matchers(&step.when));
            }
            if let StepKind::Check(check) = &step.kind {
                described["for_s"] = json!(check.for_s);
                described["deadline_s"] = json!(check.deadline_s);
            }
            described
        }).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_domain::tenant::TenantId;

    fn playbook(max_runs_per_hour: u32) -> Playbook {
        Playbook {
            name: "drain".into(),
            tenant: TenantId::parse("acme").unwrap(),
            rules: vec!["pay-errors".into()],
            matchers: Vec::new(),
            when: Vec::new(),
            max_runs_per_hour,
            dry_run: false,
            steps: Vec::new(),
            file: "rules.yaml".into(),
            line: 1,
        }
    }

    fn run(id: &str, tenant: &str, alert: &str, state: RunState, started_ms: u64) -> Run {
        Run {
            id: id.into(),
            tenant: TenantId::parse(tenant).unwrap(),
            playbook: "drain".into(),
            rule: "pay-errors".into(),
            alert: alert.into(),
            labels: BTreeMap::new(),
            located: BTreeMap::new(),
            state,
            started_ms,
            ended_ms: None,
            step: 0,
            steps: Vec::new(),
            reason: String::new(),
        }
    }

    #[test]
    fn a_run_waits_for_the_one_under_way_the_hourly_limit_and_the_switch() {
        const NOW: u64 = 10 * HOUR_MS;
        let runs = |saved: Vec<Run>| Runs::restore(saved, NOW);
        let next = run("new", "acme", "a1", RunState::Running, NOW);
        assert_eq!(runs(Vec::new()).refusal(&playbook(1), &next, NOW), None);
        // One run per playbook and alert at a time; another alert's may go.
        let under_way = runs(vec![run(
            "r1",
            "acme",
            "a1",
            RunState::Waiting,
            NOW - 5 * HOUR_MS,
        )]);
        assert_eq!(
            under_way.refusal(&playbook(3), &next, NOW).as_deref(),
            Some("a run for this alert is under way")
        );
        let other = run("new", "acme", "a2", RunState::Running, NOW);
        assert_eq!(under_way.refusal(&playbook(3), &other, NOW), None);
        // Runs over count against the hour they started in, of their tenant.
        let hour = runs(vec![
            run("r1", "acme", "a2", RunState::Recovered, NOW - HOUR_MS + 1),
            run("r2", "acme", "a3", RunState::Failed, NOW - HOUR_MS / 2),
            run("r3", "evil", "a4", RunState::Failed, NOW - 60_000),
        ]);
        assert_eq!(
            hour.refusal(&playbook(2), &next, NOW).as_deref(),
            Some("2 runs in the last hour already (max_runs_per_hour)")
        );
        assert_eq!(hour.refusal(&playbook(3), &next, NOW), None);
        assert_eq!(
            hour.refusal(&playbook(2), &next, NOW + 1),
            None,
            "r1 is an hour old"
        );
        // The kill switch refuses whatever else holds.
        let mut paused = runs(Vec::new());
        paused.switch = Some(Switch {
            paused: true,
            by: "ops".into(),
            at_ms: NOW,
        });
        assert_eq!(
            paused.refusal(&playbook(3), &next, NOW).as_deref(),
            Some("the playbooks are paused (by ops)")
        );
        paused.switch = Switch::latest([
            ("playbooks", r#"{"paused": true, "by": "ops", "at_ms": 1}"#),
            ("playbooks", r#"{"paused": false, "by": "ops", "at_ms": 2}"#),
            ("other", r#"{"paused": true, "by": "x", "at_ms": 3}"#),
        ]);
        assert_eq!(
            paused.refusal(&playbook(3), &next, NOW),
            None,
            "unpaused last"
        );
    }
}
