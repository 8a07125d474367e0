//! The notification outbox. A notification that falls due is written to
//! the store ([`Collection::Outbox`]) in the same write as the group state
//! that made it due, and stays there until its receiver accepts it: a
//! round of attempts that fails is tried again after a wait that doubles
//! from 1 s up to `alerter.notification_retry_max_ms`, across restarts,
//! always with the same idempotency key, until `alerter.notification_max_age_s`
//! has passed; then it is dropped, and that is recorded and counted. So a
//! receiver that is down for an hour still gets every page, once per key.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::mpsc;
use vigil_domain::alert::Collection;
use vigil_store::{HistoryEntry, StateRecord};

use super::Control;
use super::state::{append, state_record};
use crate::notify::Notification;
use crate::rules::ReceiverKind;
use crate::{alertmanager, webhook};

/// A notification waiting for its receiver, as kept in the store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Pending {
    pub notification: Notification,
    /// When it fell due, unix ms.
    pub created_ms: u64,
    /// Attempts made so far, over every round.
    pub attempts: u32,
    /// Rounds of attempts that failed.
    pub rounds: u32,
    /// When the next round may start, unix ms.
    pub next_attempt_ms: u64,
}

/// How a round of attempts went.
pub(crate) struct Delivered {
    key: String,
    outcome: webhook::Outcome,
}

/// Pending notifications by idempotency key, and the rounds under way.
pub(crate) struct Outbox {
    pending: BTreeMap<String, Pending>,
    in_flight: HashSet<String>,
    done_tx: mpsc::UnboundedSender<Delivered>,
    done_rx: mpsc::UnboundedReceiver<Delivered>,
}

impl Outbox {
    /// The outbox as the store kept it.
    pub(crate) fn restore(pending: impl IntoIterator<Item = Pending>) -> Outbox {
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        Outbox {
            pending: pending
                .into_iter()
                .map(|p| (p.notification.idempotency_key.clone(), p))
                .collect(),
            in_flight: HashSet::new(),
            done_tx,
            done_rx,
        }
    }

    /// Adds a notification that fell due at `now_ms`; the record to write
    /// with the group state.
    pub(crate) fn add(&mut self, notification: Notification, now_ms: u64) -> StateRecord {
        let pending = Pending {
            notification,
            created_ms: now_ms,
            attempts: 0,
            rounds: 0,
            next_attempt_ms: now_ms,
        };
        let record = record(&pending, now_ms);
        self.pending
            .insert(pending.notification.idempotency_key.clone(), pending);
        record
    }

    pub(crate) fn len(&self) -> usize {
        self.pending.len()
    }
}

fn record(pending: &Pending, now_ms: u64) -> StateRecord {
    let notification = &pending.notification;
    state_record(
        Collection::Outbox,
        &notification.tenant,
        &notification.idempotency_key,
        pending,
        now_ms,
    )
}

/// The wait before the first round after a failed one.
const ROUND_BACKOFF_FIRST: Duration = Duration::from_secs(1);

/// How long a stopping alerter waits for the rounds under way.
pub(super) const DRAIN_WAIT: Duration = Duration::from_secs(10);

impl Control {
    /// Settles the rounds that ended, then starts a round for every
    /// pending notification that is due and not under way.
    pub(super) async fn deliver(&mut self, now_ms: u64) {
        self.settle(now_ms).await;
        self.start_due(now_ms);
    }

    /// At a stop: waits, for [`DRAIN_WAIT`] at most, for the rounds under
    /// way and records how they went, so that a page its receiver accepted
    /// is not sent again after the restart. (A round cut short by a crash
    /// is sent again, with the same idempotency key.)
    pub(super) async fn drain_outbox(&mut self) {
        let deadline = std::time::Instant::now() + DRAIN_WAIT;
        while !self.outbox.in_flight.is_empty() && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
            self.settle(crate::now_ms()).await;
        }
    }

    /// Records the rounds that ended: accepted or expired pages leave the
    /// outbox, the others wait for their next round.
    async fn settle(&mut self, now_ms: u64) {
        let mut records = Vec::new();
        let mut history = Vec::new();
        while let Ok(done) = self.outbox.done_rx.try_recv() {
            self.outbox.in_flight.remove(&done.key);
            let Some(mut pending) = self.outbox.pending.remove(&done.key) else {
                continue;
            };
            pending.attempts += done.outcome.attempts;
            let sent = done.outcome.error.is_none();
            let max_age_ms = self.settings.notification_max_age_s * 1_000;
            let expired = !sent && now_ms.saturating_sub(pending.created_ms) >= max_age_ms;
            let outcome = if sent {
                "sent"
            } else if expired {
                "expired"
            } else {
                "failed"
            };
            self.metrics.notification(outcome);
            if !sent {
                tracing::warn!(
                    receiver = %pending.notification.receiver,
                    group = %pending.notification.group_key,
                    error = ?done.outcome.error,
                    attempts = pending.attempts,
                    outcome,
                    "notification not accepted"
                );
            }
            history.push(entry(&pending, outcome, &done.outcome, now_ms));
            if sent {
                // The incident's timeline: when someone was first told.
                for (fingerprint, state) in &pending.notification.alerts {
                    if *state == crate::alerts::State::Firing
                        && let Some(alert) = self.alerts.get_mut(fingerprint)
                        && alert.notified_ms.is_none()
                    {
                        alert.notified_ms = Some(now_ms);
                        records.push(super::state::alert_record(alert, false, now_ms));
                    }
                }
            }
            if sent || expired {
                records.push(StateRecord {
                    deleted: true,
                    ..record(&pending, now_ms)
                });
            } else {
                pending.rounds += 1;
                let wait = webhook::backoff(
                    ROUND_BACKOFF_FIRST,
                    pending.rounds,
                    Duration::from_millis(self.settings.notification_retry_max_ms),
                );
                pending.next_attempt_ms = now_ms + wait.as_millis() as u64;
                records.push(record(&pending, now_ms));
                self.outbox.pending.insert(done.key, pending);
            }
        }
        self.put(&records).await;
        append(&*self.store, &self.metrics, history).await;
        self.metrics.outbox.set(self.outbox.len() as i64);
    }

    /// Starts a round for every pending notification that is due and not
    /// under way.
    fn start_due(&mut self, now_ms: u64) {
        let due: Vec<Pending> = self
            .outbox
            .pending
            .values()
            .filter(|p| {
                p.next_attempt_ms <= now_ms
                    && !self
                        .outbox
                        .in_flight
                        .contains(&p.notification.idempotency_key)
            })
            .cloned()
            .collect();
        for pending in due {
            self.start_round(pending);
        }
    }

    /// One round of attempts on its own task; its outcome comes back to
    /// [`Control::deliver`].
    fn start_round(&mut self, pending: Pending) {
        let notification = pending.notification;
        let key = notification.idempotency_key.clone();
        let done = self.outbox.done_tx.clone();
        let Some(receiver) = self.ruleset.receivers.get(&notification.receiver) else {
            // A receiver removed by a reload can never accept it.
            let outcome = webhook::Outcome {
                attempts: 0,
                status: None,
                error: Some(format!("no receiver is named {:?}", notification.receiver)),
            };
            let _ = done.send(Delivered { key, outcome });
            return;
        };
        let (url, body) = match receiver.kind {
            ReceiverKind::Webhook => (receiver.url.clone(), notification.payload.to_string()),
            ReceiverKind::Alertmanager => (
                alertmanager::alerts_url(&receiver.url),
                alertmanager::postable(&notification.payload, crate::now_ms()).to_string(),
            ),
        };
        let call = webhook::Call {
            url,
            method: reqwest::Method::POST,
            body: body.into_bytes(),
            headers: receiver.headers.clone(),
            secret: receiver.secret.clone(),
            idempotency_key: key.clone(),
            timeout: receiver.timeout,
            max_attempts: receiver.max_attempts,
        };
        self.outbox.in_flight.insert(key.clone());
        let client = self.client.clone();
        tokio::spawn(async move {
            let outcome = webhook::send(&client, &call).await;
            let _ = done.send(Delivered { key, outcome });
        });
    }
}

/// The history entry of a round that ended.
fn entry(pending: &Pending, outcome: &str, round: &webhook::Outcome, now_ms: u64) -> HistoryEntry {
    let notification = &pending.notification;
    let rule = notification.payload["commonLabels"]["alertname"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    HistoryEntry {
        tenant: notification.tenant.clone(),
        time_ms: now_ms,
        kind: "notification".into(),
        rule,
        subject: notification.group_key.clone(),
        body: json!({
            "receiver": notification.receiver,
            "idempotencyKey": notification.idempotency_key,
            "status": notification.payload["status"],
            "alerts": notification.alerts.iter().map(|(fp, s)| json!({"fingerprint": fp, "status": s.as_str()})).collect::<Vec<_>>(),
            "outcome": outcome,
            "attempts": pending.attempts,
            "rounds": pending.rounds + 1,
            "httpStatus": round.status,
            "error": round.error,
            "pendingSinceMs": pending.created_ms,
        })
        .to_string(),
    }
}
