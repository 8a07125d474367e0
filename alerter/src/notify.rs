//! Who is told what, and when, as Alertmanager does it: firing and resolved
//! alerts follow the route tree to receivers, gather in groups (by the
//! route's `group_by` labels, within one tenant), and a group is notified
//! `group_wait` after it formed, then when it changed but no more often
//! than every `group_interval`, and again every `repeat_interval` while
//! anything fires.
//!
//! A firing alert that a silence matches, or that an inhibition rule mutes
//! (a firing source alert with the same `equal` labels), is left out of
//! notifications; its resolution is still sent, so a receiver that saw it
//! fire sees it end. A flapping alert is left out whatever its state, until
//! it settles: then the receiver is told where it settled. What each group last sent is kept in the store, so a
//! restart neither sends it again nor forgets it.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use vigil_domain::tenant::TenantId;
use vigil_domain::time::rfc3339;

use crate::alertmanager;
use crate::alerts::{Alert, Alerts, State};
use crate::rules::{Inhibition, ReceiverKind, Route, Ruleset};
use vigil_domain::signal::Matcher;
use vigil_domain::silence::Silence;

/// What a group last told its receiver, kept across restarts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupState {
    pub key: String,
    pub tenant: TenantId,
    pub receiver: String,
    pub labels: BTreeMap<String, String>,
    /// When its first alert came, unix ms.
    pub formed_ms: u64,
    pub last_sent_ms: Option<u64>,
    /// What the last notification said: status by fingerprint.
    pub sent: BTreeMap<String, State>,
    /// Notifications sent, the last one's number.
    pub sequence: u64,
}

/// One webhook call to make.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    pub tenant: TenantId,
    pub receiver: String,
    pub group_key: String,
    /// The same for every attempt of this notification, new for the next.
    pub idempotency_key: String,
    /// The body: Alertmanager's webhook format, version 4, and a `vigil`
    /// object.
    pub payload: Value,
    /// The alerts it carries, with their status.
    pub alerts: Vec<(String, State)>,
}

#[derive(Debug)]
struct Group {
    state: GroupState,
    group_wait_ms: u64,
    group_interval_ms: u64,
    repeat_interval_ms: u64,
    members: BTreeSet<String>,
}

/// The notification groups.
#[derive(Debug, Default)]
pub struct Dispatcher {
    route: Option<Route>,
    /// Receivers told again every [`alertmanager::RESEND_MS`] while
    /// anything fires, whatever the route says: Alertmanagers.
    resend: BTreeSet<String>,
    inhibitions: Vec<Inhibition>,
    external_url: String,
    groups: BTreeMap<String, Group>,
}

/// What one [`Dispatcher::tick`] produced.
#[derive(Debug, Default)]
pub struct Tick {
    pub notifications: Vec<Notification>,
    /// Group states that changed (to save), and groups gone (tenant, key).
    pub changed: Vec<GroupState>,
    pub removed: Vec<(TenantId, String)>,
    /// Resolved alerts every group was told about: they can be forgotten.
    pub done: Vec<String>,
}

impl Dispatcher {
    /// A dispatcher for `rules`' route tree, picking up the group states
    /// saved before.
    pub fn new(rules: &Ruleset, external_url: &str, saved: Vec<GroupState>) -> Self {
        let mut dispatcher = Dispatcher {
            route: rules.route.clone(),
            resend: resend(rules),
            inhibitions: rules.inhibitions.clone(),
            external_url: external_url.to_owned(),
            groups: BTreeMap::new(),
        };
        for state in saved {
            dispatcher.groups.insert(
                state.key.clone(),
                Group {
                    state,
                    // Until an alert routes to it again, a restored group
                    // only waits.
                    group_wait_ms: 0,
                    group_interval_ms: u64::MAX,
                    repeat_interval_ms: u64::MAX,
                    members: BTreeSet::new(),
                },
            );
        }
        dispatcher
    }

    /// A dispatcher for new rules that keeps the groups of this one.
    pub fn reload(self, rules: &Ruleset) -> Self {
        Dispatcher {
            route: rules.route.clone(),
            resend: resend(rules),
            inhibitions: rules.inhibitions.clone(),
            external_url: self.external_url,
            groups: self.groups,
        }
    }

    /// Whether an alert is muted: a flapping one, or a firing one a
    /// silence or an inhibition mutes.
    pub fn is_muted(
        &self,
        alert: &Alert,
        alerts: &Alerts,
        silences: &[Silence],
        now_ms: u64,
    ) -> bool {
        alert.flapping
            || alert.state == State::Firing
                && (silences
                    .iter()
                    .any(|s| s.is_active(now_ms) && s.matches(&alert.labels))
                    || self.is_inhibited(alert, alerts))
    }

    fn is_inhibited(&self, alert: &Alert, alerts: &Alerts) -> bool {
        let matches_all = |matchers: &[Matcher], labels: &BTreeMap<String, String>| {
            matchers.iter().all(|m| m.matches(labels))
        };
        self.inhibitions.iter().any(|rule| {
            matches_all(&rule.target, &alert.labels)
                && alerts.iter().any(|source| {
                    source.state == State::Firing
                        && source.fingerprint != alert.fingerprint
                        && source.tenant == alert.tenant
                        && matches_all(&rule.source, &source.labels)
                        && rule
                            .equal
                            .iter()
                            .all(|key| source.labels.get(key) == alert.labels.get(key))
                })
        })
    }

    /// Routes the alerts, and says which groups are due at `now_ms`.
    pub fn tick(&mut self, alerts: &Alerts, silences: &[Silence], now_ms: u64) -> Tick {
        let mut tick = Tick::default();
        let Some(root) = self.route.clone() else {
            tick.done = alerts
                .iter()
                .filter(|a| a.state == State::Resolved)
                .map(|a| a.fingerprint.clone())
                .collect();
            return tick;
        };
        for group in self.groups.values_mut() {
            group.members.clear();
        }
        for alert in alerts.iter().filter(|a| a.state != State::Pending) {
            let mut routes = Vec::new();
            matching_routes(&root, "0", &alert.labels, &mut routes);
            for (path, route) in routes {
                let labels: BTreeMap<String, String> = route
                    .group_by
                    .iter()
                    .filter_map(|key| alert.labels.get(key).map(|v| (key.clone(), v.clone())))
                    .collect();
                let key = format!("{}/{path}:{}", alert.tenant, label_text(&labels));
                let group = self.groups.entry(key.clone()).or_insert_with(|| Group {
                    state: GroupState {
                        key,
                        tenant: alert.tenant.clone(),
                        receiver: route.receiver.clone(),
                        labels,
                        // As of the alert, not of the tick that saw it.
                        formed_ms: alert.fired_ms.unwrap_or(now_ms).min(now_ms),
                        last_sent_ms: None,
                        sent: BTreeMap::new(),
                        sequence: 0,
                    },
                    group_wait_ms: 0,
                    group_interval_ms: 0,
                    repeat_interval_ms: 0,
                    members: BTreeSet::new(),
                });
                group.state.receiver = route.receiver.clone();
                group.group_wait_ms = route.group_wait_s * 1_000;
                group.group_interval_ms = route.group_interval_s * 1_000;
                group.repeat_interval_ms = route.repeat_interval_s * 1_000;
                if self.resend.contains(&route.receiver) {
                    group.repeat_interval_ms =
                        group.repeat_interval_ms.min(alertmanager::RESEND_MS);
                }
                group.members.insert(alert.fingerprint.clone());
            }
        }
        let mut told_resolved = BTreeSet::new();
        let mut still_held = BTreeSet::new();
        let keys: Vec<String> = self.groups.keys().cloned().collect();
        for key in keys {
            let Some(group) = self.groups.get(&key) else {
                continue;
            };
            let current: BTreeMap<String, State> = group
                .members
                .iter()
                .filter_map(|fp| alerts.get(fp))
                .filter(|alert| !self.is_muted(alert, alerts, silences, now_ms))
                .map(|alert| (alert.fingerprint.clone(), alert.state))
                .collect();
            if group.members.is_empty() {
                tick.removed.push((group.state.tenant.clone(), key.clone()));
                self.groups.remove(&key);
                continue;
            }
            let firing = current.values().any(|s| *s == State::Firing);
            let due = match group.state.last_sent_ms {
                None => {
                    !current.is_empty() && now_ms >= group.state.formed_ms + group.group_wait_ms
                }
                Some(last) => {
                    let since = now_ms.saturating_sub(last);
                    (current != group.state.sent && since >= group.group_interval_ms)
                        || (firing && since >= group.repeat_interval_ms)
                }
            };
            // Only what changes the receiver's view is sent: resolved
            // alerts it was told about, or that were muted while firing.
            let resolved_only = !firing
                && current
                    .keys()
                    .all(|fp| group.state.sent.get(fp) == Some(&State::Resolved));
            if resolved_only && !current.is_empty() {
                // The receiver already knows each of them ended (it fired
                // again while muted): they leave the group untold.
                if let Some(group) = self.groups.get_mut(&key) {
                    group
                        .members
                        .retain(|fp| current.get(fp) != Some(&State::Resolved));
                    still_held.extend(group.members.iter().cloned());
                }
                continue;
            }
            if !due || current.is_empty() {
                still_held.extend(group.members.iter().cloned());
                continue;
            }
            let notification = self.notification(&key, alerts, &current, now_ms);
            let Some(group) = self.groups.get_mut(&key) else {
                continue;
            };
            group.state.sequence += 1;
            group.state.last_sent_ms = Some(now_ms);
            group.state.sent = current.clone();
            for (fp, state) in &current {
                if *state == State::Resolved {
                    told_resolved.insert(fp.clone());
                }
            }
            // A resolved alert leaves the group once it was told.
            group
                .members
                .retain(|fp| current.get(fp) != Some(&State::Resolved));
            still_held.extend(group.members.iter().cloned());
            tick.changed.push(group.state.clone());
            tick.notifications.push(notification);
        }
        tick.done = alerts
            .iter()
            .filter(|a| a.state == State::Resolved && !still_held.contains(&a.fingerprint))
            .map(|a| a.fingerprint.clone())
            .collect();
        tick
    }

    fn notification(
        &self,
        key: &str,
        alerts: &Alerts,
        current: &BTreeMap<String, State>,
        now_ms: u64,
    ) -> Notification {
        let group = &self.groups[key];
        let sequence = group.state.sequence + 1;
        let members: Vec<&Alert> = current.keys().filter_map(|fp| alerts.get(fp)).collect();
        let common = |pick: fn(&Alert) -> &BTreeMap<String, String>| -> BTreeMap<String, String> {
            let mut common = members.first().map(|a| pick(a).clone()).unwrap_or_default();
            for alert in &members[1..] {
                common.retain(|k, v| pick(alert).get(k) == Some(v));
            }
            common
        };
        let firing = current.values().any(|s| *s == State::Firing);
        let idempotency_key = format!(
            "{}-{sequence}",
            crate::alerts::fingerprint(&BTreeMap::from([("group".to_owned(), key.to_owned(),)]))
        );
        let payload = json!({
            "version": "4",
            "groupKey": key,
            "truncatedAlerts": 0,
            "status": if firing { "firing" } else { "resolved" },
            "receiver": group.state.receiver,
            "groupLabels": group.state.labels,
            "commonLabels": common(|a| &a.labels),
            "commonAnnotations": common(|a| &a.annotations),
            "externalURL": self.external_url,
            "alerts": members.iter().map(|alert| self.alert_json(alert)).collect::<Vec<_>>(),
            "vigil": {
                "idempotencyKey": idempotency_key,
                "sequence": sequence,
                "tenant": group.state.tenant,
                "sentAt": rfc3339(now_ms),
            },
        });
        Notification {
            tenant: group.state.tenant.clone(),
            receiver: group.state.receiver.clone(),
            group_key: key.to_owned(),
            idempotency_key,
            payload,
            alerts: current.iter().map(|(fp, s)| (fp.clone(), *s)).collect(),
        }
    }

    /// What an `approve` or `escalate` step of `run` (its step `step`)
    /// tells `receiver`: the webhook format of notifications, with the
    /// alert when it is still kept, and a `vigil.playbook` object (the
    /// run, the step, and for an approval the URL to approve at).
    pub fn playbook_notification(
        &self,
        alert: Option<&Alert>,
        run: &vigil_domain::playbook::Run,
        step: usize,
        receiver: &str,
        now_ms: u64,
    ) -> Notification {
        let kind = run.steps[step].kind.as_str();
        let idempotency_key = format!("{}-{step}", run.id);
        let approve_url = (kind == "approve").then(|| {
            format!(
                "{}/api/v1/playbooks/runs/{}/approve",
                self.external_url.trim_end_matches('/'),
                run.id
            )
        });
        let payload = json!({
            "version": "4",
            "groupKey": format!("playbook/{}", run.id),
            "truncatedAlerts": 0,
            "status": alert.map_or("resolved", |a| if a.state == State::Firing { "firing" } else { "resolved" }),
            "receiver": receiver,
            "groupLabels": {"alertname": run.rule},
            "commonLabels": run.labels,
            "commonAnnotations": alert.map(|a| a.annotations.clone()).unwrap_or_default(),
            "externalURL": self.external_url,
            "alerts": alert.map(|a| vec![self.alert_json(a)]).unwrap_or_default(),
            "vigil": {
                "idempotencyKey": idempotency_key,
                "tenant": run.tenant,
                "sentAt": rfc3339(now_ms),
                "playbook": {
                    "name": run.playbook,
                    "run": run.id,
                    "step": step,
                    "kind": kind,
                    "approveURL": approve_url,
                    "steps": run.steps,
                },
            },
        });
        Notification {
            tenant: run.tenant.clone(),
            receiver: receiver.to_owned(),
            group_key: format!("playbook/{}", run.id),
            idempotency_key,
            payload,
            alerts: Vec::new(),
        }
    }

    fn alert_json(&self, alert: &Alert) -> Value {
        let firing = alert.state == State::Firing;
        json!({
            "status": if firing { "firing" } else { "resolved" },
            "labels": alert.labels,
            "annotations": alert.annotations,
            "startsAt": rfc3339(alert.fired_ms.unwrap_or(alert.active_since_ms)),
            "endsAt": alert.resolved_ms.map_or_else(|| "0001-01-01T00:00:00Z".to_owned(), rfc3339),
            "generatorURL": if self.external_url.is_empty() {
                String::new()
            } else {
                format!("{}/api/v1/alerts?fingerprint={}", self.external_url, alert.fingerprint)
            },
            "fingerprint": alert.fingerprint,
            "vigil": {"rule": alert.rule, "value": alert.value, "located": alert.located},
        })
    }
}

/// The receivers whose firing alerts are posted again every
/// [`alertmanager::RESEND_MS`].
fn resend(rules: &Ruleset) -> BTreeSet<String> {
    rules
        .receivers
        .values()
        .filter(|r| r.kind == ReceiverKind::Alertmanager)
        .map(|r| r.name.clone())
        .collect()
}

/// The routes an alert goes to: the deepest matching routes, the first
/// matching child of each level unless it says `continue`.
fn matching_routes<'a>(
    route: &'a Route,
    path: &str,
    labels: &BTreeMap<String, String>,
    found: &mut Vec<(String, &'a Route)>,
) {
    let before = found.len();
    for (i, child) in route.routes.iter().enumerate() {
        let matches = child.matchers.iter().all(|m| m.matches(labels));
        if matches {
            matching_routes(child, &format!("{path}.{i}"), labels, found);
            if !child.continue_matching {
                break;
            }
        }
    }
    if found.len() == before {
        found.push((path.to_owned(), route));
    }
}

/// `{a="1", b="2"}`.
fn label_text(labels: &BTreeMap<String, String>) -> String {
    let pairs: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    format!("{{{}}}", pairs.join(", "))
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::sync::Arc;

    use super::*;
    use crate::eval::Verdict;
    use crate::rules;
    use vigil_domain::signal::Matcher;

    const SET: &str = r#"
tenant: acme
rules:
  - {name: unit-down, type: absence, group_by: [vigil.unit], for: 1m, labels: {severity: page}}
  - {name: slow, type: threshold, group_by: [vigil.unit, service.name], signal: p99, op: '>', value: 1, labels: {severity: page}}
  - {name: budget, type: threshold, signal: p99, op: '>', value: 1, labels: {severity: ticket}}
receivers:
  - {name: pager, url: 'http://127.0.0.1:1/pager'}
  - {name: tickets, url: 'http://127.0.0.1:1/tickets'}
route:
  receiver: pager
  group_by: [alertname, vigil.unit]
  group_wait: 10s
  group_interval: 1m
  repeat_interval: 1h
  routes:
    - {matchers: ['severity="ticket"'], receiver: tickets, group_by: [alertname]}
inhibit_rules:
  - source_matchers: ['alertname="unit-down"']
    target_matchers: ['severity="page"']
    equal: [vigil.unit]
"#;

    struct Setup {
        rules: Vec<Arc<rules::Rule>>,
        alerts: Alerts,
        dispatcher: Dispatcher,
    }

    fn setup() -> Setup {
        let files = vec![(PathBuf::from("r.yaml"), SET.to_owned())];
        let set = rules::parse(&files, &|_| None, None).expect("loads");
        Setup {
            rules: set.rules.iter().cloned().map(Arc::new).collect(),
            dispatcher: Dispatcher::new(&set, "http://vigil:8080", Vec::new()),
            alerts: Alerts::default(),
        }
    }

    fn v(rule: usize, labels: &[(&str, &str)]) -> Verdict {
        Verdict {
            rule,
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            value: Some(2.0),
        }
    }

    /// (receiver, statuses by alertname and unit) of each notification.
    fn sent(tick: &Tick) -> Vec<(String, Vec<String>)> {
        tick.notifications
            .iter()
            .map(|n| {
                let alerts = n.payload["alerts"]
                    .as_array()
                    .expect("alerts")
                    .iter()
                    .map(|a| {
                        format!(
                            "{} {} {}",
                            a["labels"]["alertname"].as_str().unwrap_or(""),
                            a["labels"]["vigil.unit"].as_str().unwrap_or("-"),
                            a["status"].as_str().unwrap_or("")
                        )
                    })
                    .collect();
                (n.receiver.clone(), alerts)
            })
            .collect()
    }

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn groups_wait_then_batch_then_repeat() {
        let mut s = setup();
        let t = 1_000_000;
        let slow = |unit| v(1, &[("vigil.unit", unit), ("service.name", "pay")]);
        s.alerts.apply(&s.rules, &[slow("u1"), v(2, &[])], t);
        // group_wait: nothing before 10 s.
        assert!(
            s.dispatcher
                .tick(&s.alerts, &[], t + 9_000)
                .notifications
                .is_empty()
        );
        let first = s.dispatcher.tick(&s.alerts, &[], t + 10_000);
        assert_eq!(
            sent(&first),
            vec![
                ("tickets".into(), strings(&["budget - firing"])),
                ("pager".into(), strings(&["slow u1 firing"])),
            ]
        );
        let payload = &first.notifications[1].payload;
        assert_eq!(payload["version"], "4");
        assert_eq!(
            payload["groupLabels"],
            json!({"alertname": "slow", "vigil.unit": "u1"})
        );
        assert_eq!(payload["status"], "firing");
        assert_eq!(payload["vigil"]["sequence"], 1);
        // Another unit is another group, with its own group_wait.
        s.alerts
            .apply(&s.rules, &[slow("u1"), slow("u2"), v(2, &[])], t + 20_000);
        assert!(
            s.dispatcher
                .tick(&s.alerts, &[], t + 20_000)
                .notifications
                .is_empty()
        );
        let second = s.dispatcher.tick(&s.alerts, &[], t + 30_000);
        assert_eq!(
            sent(&second),
            vec![("pager".into(), strings(&["slow u2 firing"]))]
        );
        // A change within group_interval of the last notification waits.
        s.alerts
            .apply(&s.rules, &[slow("u2"), v(2, &[])], t + 30_000);
        assert!(
            s.dispatcher
                .tick(&s.alerts, &[], t + 60_000)
                .notifications
                .is_empty()
        );
        let resolved = s.dispatcher.tick(&s.alerts, &[], t + 70_000);
        assert_eq!(
            sent(&resolved),
            vec![("pager".into(), strings(&["slow u1 resolved"]))]
        );
        assert_eq!(resolved.done.len(), 1);
        assert_eq!(resolved.notifications[0].payload["vigil"]["sequence"], 2);
        for fp in &resolved.done {
            s.alerts.remove_resolved(fp);
        }
        // Unchanged firing groups repeat after repeat_interval.
        let repeat = s.dispatcher.tick(&s.alerts, &[], t + 10_000 + 3_600_000);
        assert_eq!(
            sent(&repeat),
            vec![("tickets".into(), strings(&["budget - firing"]))]
        );
        assert_ne!(
            first.notifications[0].idempotency_key,
            repeat.notifications[0].idempotency_key
        );
    }

    #[test]
    fn firing_groups_of_an_alertmanager_are_posted_again_every_minute() {
        let set = SET.replace(
            "{name: tickets, url: 'http://127.0.0.1:1/tickets'}",
            "{name: tickets, type: alertmanager, url: 'http://127.0.0.1:1'}",
        );
        let files = vec![(PathBuf::from("r.yaml"), set)];
        let set = rules::parse(&files, &|_| None, None).expect("loads");
        let rules: Vec<Arc<rules::Rule>> = set.rules.iter().cloned().map(Arc::new).collect();
        let mut dispatcher = Dispatcher::new(&set, "http://vigil:8080", Vec::new());
        let mut alerts = Alerts::default();
        let t = 1_000_000;
        let slow = v(1, &[("vigil.unit", "u1"), ("service.name", "pay")]);
        alerts.apply(&rules, &[slow, v(2, &[])], t);
        assert_eq!(
            dispatcher
                .tick(&alerts, &[], t + 10_000)
                .notifications
                .len(),
            2
        );
        // The webhook waits for its hour; the Alertmanager is told again
        // each minute, so that it does not resolve the alert by itself.
        for minute in 1..=3 {
            let tick = dispatcher.tick(&alerts, &[], t + 10_000 + minute * 60_000);
            assert_eq!(
                sent(&tick),
                vec![("tickets".into(), strings(&["budget - firing"]))],
                "minute {minute}"
            );
        }
    }

    #[test]
    fn inhibited_and_silenced_alerts_are_muted_but_their_end_is_sent() {
        let mut s = setup();
        let t = 1_000_000;
        let slow = |unit| v(1, &[("vigil.unit", unit), ("service.name", "pay")]);
        s.alerts.apply(
            &s.rules,
            &[slow("u1"), slow("u2"), v(0, &[("vigil.unit", "u1")])],
            t,
        );
        let silence = Silence {
            id: "s".into(),
            matchers: vec![Matcher::equal("vigil.unit", "u2")],
            starts_at_ms: 0,
            ends_at_ms: t + 3_600_000,
            recurring: None,
            created_by: "sre".into(),
            comment: String::new(),
        };
        // unit-down u1 inhibits slow u1 (same unit); slow u2 is silenced.
        let first = s
            .dispatcher
            .tick(&s.alerts, std::slice::from_ref(&silence), t + 10_000);
        assert_eq!(
            sent(&first),
            vec![("pager".into(), strings(&["unit-down u1 firing"]))]
        );
        // Both end while muted: their resolution is sent.
        s.alerts
            .apply(&s.rules, &[v(0, &[("vigil.unit", "u1")])], t + 20_000);
        let ended = s.dispatcher.tick(&s.alerts, &[silence], t + 80_000);
        assert_eq!(
            sent(&ended),
            vec![
                ("pager".into(), strings(&["slow u1 resolved"])),
                ("pager".into(), strings(&["slow u2 resolved"])),
            ]
        );
    }

    /// unit-down u1 fires (told), then comes and goes every 10 s: from
    /// its third firing it flaps and nothing more is sent, whatever it
    /// does, until it settles; then its state is sent once.
    #[test]
    fn a_flapping_alert_is_held_until_it_settles() {
        let mut s = setup();
        s.alerts = Alerts::restore(
            [],
            crate::alerts::Flap {
                changes: 4,
                window_ms: 600_000,
            },
        );
        let t = 1_000_000;
        let down = || v(0, &[("vigil.unit", "u1")]);
        let mut told = Vec::new();
        for k in 0..12u64 {
            let at = t + k * 10_000;
            let verdicts = if k % 2 == 0 { vec![down()] } else { vec![] };
            s.alerts.apply(&s.rules, &verdicts, at);
            s.alerts.flaps(at);
            // Ticks a minute apart, so group_interval never holds it back.
            let tick = s.dispatcher.tick(&s.alerts, &[], t + k * 60_000 + 10_000);
            told.extend(sent(&tick).into_iter().map(|(_, alerts)| (k, alerts)));
        }
        assert_eq!(
            told,
            vec![
                (0, strings(&["unit-down u1 firing"])),
                (1, strings(&["unit-down u1 resolved"])),
                (2, strings(&["unit-down u1 firing"])),
                (3, strings(&["unit-down u1 resolved"])),
            ],
            "the fifth change flaps: nothing after it"
        );
        // Then it fires and stays: once no more than 2 of its changes are
        // left in the last ten minutes it settles, and the receiver, told
        // it resolved, is told once that it fires.
        let mut settled_at = None;
        for k in 12..200u64 {
            let at = t + k * 10_000;
            s.alerts.apply(&s.rules, &[down()], at);
            if let Some(alert) = s.alerts.flaps(at).first() {
                assert!(!alert.flapping);
                settled_at = Some(at);
                break;
            }
        }
        // Its changes are 10 s apart, the last (firing) at +120 s: at
        // +710 s only those at +110 s and +120 s are in the window.
        assert_eq!(settled_at, Some(t + 710_000));
        let tick = s.dispatcher.tick(&s.alerts, &[], t + 20 * 60_000);
        assert_eq!(
            sent(&tick),
            vec![("pager".into(), strings(&["unit-down u1 firing"]))]
        );
        let tick = s.dispatcher.tick(&s.alerts, &[], t + 21 * 60_000);
        assert!(tick.notifications.is_empty());
    }

    /// An alert that fires again while muted and resolves, after its
    /// receiver was told it resolved, is not held for ever.
    #[test]
    fn a_resolution_the_receiver_knows_is_done() {
        let mut s = setup();
        let t = 1_000_000;
        let down = || v(0, &[("vigil.unit", "u1")]);
        s.alerts.apply(&s.rules, &[down()], t);
        s.dispatcher.tick(&s.alerts, &[], t + 10_000);
        s.alerts.apply(&s.rules, &[], t + 20_000);
        let resolved = s.dispatcher.tick(&s.alerts, &[], t + 80_000);
        assert_eq!(
            sent(&resolved),
            vec![("pager".into(), strings(&["unit-down u1 resolved"]))]
        );
        let silence = Silence {
            id: "s".into(),
            matchers: vec![Matcher::equal("vigil.unit", "u1")],
            starts_at_ms: 0,
            ends_at_ms: t + 3_600_000,
            recurring: None,
            created_by: "sre".into(),
            comment: String::new(),
        };
        s.alerts.apply(&s.rules, &[down()], t + 90_000);
        s.dispatcher
            .tick(&s.alerts, std::slice::from_ref(&silence), t + 100_000);
        s.alerts.apply(&s.rules, &[], t + 110_000);
        let tick = s.dispatcher.tick(&s.alerts, &[silence], t + 200_000);
        assert!(tick.notifications.is_empty(), "{:?}", sent(&tick));
        let fingerprint = s
            .alerts
            .iter()
            .next()
            .expect("the alert")
            .fingerprint
            .clone();
        assert_eq!(tick.done, vec![fingerprint]);
    }

    #[test]
    fn a_restored_group_does_not_send_again() {
        let mut s = setup();
        let t = 1_000_000;
        s.alerts.apply(&s.rules, &[v(2, &[])], t);
        let first = s.dispatcher.tick(&s.alerts, &[], t + 10_000);
        assert_eq!(first.notifications.len(), 1);
        let files = vec![(PathBuf::from("r.yaml"), SET.to_owned())];
        let set = rules::parse(&files, &|_| None, None).expect("loads");
        let saved: Vec<GroupState> = first.changed.clone();
        let restored_alerts =
            Alerts::restore(s.alerts.iter().cloned(), crate::alerts::Flap::default());
        let mut restarted = Dispatcher::new(&set, "", saved);
        assert!(
            restarted
                .tick(&restored_alerts, &[], t + 20_000)
                .notifications
                .is_empty()
        );
        assert!(
            restarted
                .tick(&restored_alerts, &[], t + 3_000_000)
                .notifications
                .is_empty()
        );
        let repeat = restarted.tick(&restored_alerts, &[], t + 10_000 + 3_600_000);
        assert_eq!(repeat.notifications.len(), 1);
        assert_eq!(repeat.notifications[0].payload["vigil"]["sequence"], 2);
    }
}
