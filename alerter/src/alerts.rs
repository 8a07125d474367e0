//! The alert lifecycle: inactive → pending → firing → resolved, one alert
//! per rule and group, named by the fingerprint of its labels.
//!
//! A boundary's verdicts are the conditions that hold: a verdict makes an
//! alert pending, and firing once it has held for the rule's `for` (at
//! once when `for` is 0). An alert without a verdict at a boundary (its
//! condition stopped holding, its group went quiet, its rule was removed)
//! is dropped when pending and resolved when firing. Alerts are serialised
//! as they are, so a restart resumes each where it was.

use std::collections::{BTreeMap, VecDeque};

use vigil_domain::template::Vars;

pub use vigil_domain::alert::{Alert, State, fingerprint};

use crate::eval::Verdict;
use crate::rules::Rule;

/// A change of an alert's state; `from: None` is a new alert, `to: None` a
/// pending alert dropped.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    pub alert: Alert,
    pub from: Option<State>,
    pub to: Option<State>,
}

/// The alerts of every rule, by fingerprint.
#[derive(Debug, Default)]
pub struct Alerts {
    alerts: BTreeMap<String, Alert>,
    /// When each alert fired or resolved within the flap window, by
    /// fingerprint (a restart reads them back from the history:
    /// [`Alerts::recall`]).
    changes: BTreeMap<String, VecDeque<u64>>,
    flap: Flap,
    /// The value each firing alert was last saved with, and when (unix
    /// ms): alerts are saved on transitions, and a changed value at most
    /// every [`VALUE_SAVE_MS`].
    saved: BTreeMap<String, (Option<f64>, u64)>,
}

/// How often at most a firing alert's changed value is saved, so that
/// `GET /api/v1/alerts` reads a value at most this old.
pub const VALUE_SAVE_MS: u64 = 60_000;

/// When an alert is flapping: more than `changes` firings and resolutions
/// within `window_ms`; it settles at half as many. `changes` 0: never.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Flap {
    pub changes: usize,
    pub window_ms: u64,
}

impl Alerts {
    /// Alerts as they were saved.
    pub fn restore(alerts: impl IntoIterator<Item = Alert>, flap: Flap) -> Self {
        Alerts {
            alerts: alerts
                .into_iter()
                .map(|alert| (alert.fingerprint.clone(), alert))
                .collect(),
            changes: BTreeMap::new(),
            flap,
            saved: BTreeMap::new(),
        }
    }

    /// Takes back when alerts fired or resolved, as (fingerprint, unix
    /// ms), so flap detection goes on counting across a restart.
    pub fn recall(&mut self, changes: impl IntoIterator<Item = (String, u64)>) {
        for (fingerprint, at_ms) in changes {
            let times = self.changes.entry(fingerprint).or_default();
            let at = times.partition_point(|&t| t <= at_ms);
            times.insert(at, at_ms);
        }
    }

    /// Marks the alerts that started or stopped flapping at `now_ms`, and
    /// returns them as they are now.
    pub fn flaps(&mut self, now_ms: u64) -> Vec<Alert> {
        let mut changed = Vec::new();
        if self.flap.changes == 0 {
            // Flap detection was turned off: what it held settles.
            for alert in self.alerts.values_mut().filter(|a| a.flapping) {
                alert.flapping = false;
                changed.push(alert.clone());
            }
            return changed;
        }
        let oldest = now_ms.saturating_sub(self.flap.window_ms);
        self.changes.retain(|fingerprint, times| {
            while times.front().is_some_and(|&t| t < oldest) {
                times.pop_front();
            }
            if let Some(alert) = self.alerts.get_mut(fingerprint) {
                let flapping = if alert.flapping {
                    times.len() > self.flap.changes / 2
                } else {
                    times.len() > self.flap.changes
                };
                if flapping != alert.flapping {
                    alert.flapping = flapping;
                    changed.push(alert.clone());
                }
            }
            !times.is_empty()
        });
        changed
    }

    pub fn get_mut(&mut self, fingerprint: &str) -> Option<&mut Alert> {
        self.alerts.get_mut(fingerprint)
    }

    pub fn get(&self, fingerprint: &str) -> Option<&Alert> {
        self.alerts.get(fingerprint)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Alert> {
        self.alerts.values()
    }

    /// The firing alerts whose value changed since they were last saved,
    /// at least [`VALUE_SAVE_MS`] ago, as they are now; they count as
    /// saved at `now_ms`.
    pub fn values_to_save(&mut self, now_ms: u64) -> Vec<Alert> {
        let mut due = Vec::new();
        for alert in self.alerts.values().filter(|a| a.state == State::Firing) {
            let saved = self
                .saved
                .entry(alert.fingerprint.clone())
                .or_insert((alert.value, now_ms));
            if saved.0 != alert.value && now_ms >= saved.1 + VALUE_SAVE_MS {
                *saved = (alert.value, now_ms);
                due.push(alert.clone());
            }
        }
        let alerts = &self.alerts;
        self.saved.retain(|fingerprint, _| {
            alerts
                .get(fingerprint)
                .is_some_and(|a| a.state == State::Firing)
        });
        due
    }

    /// Sets what explains a firing alert's change.
    pub fn locate(&mut self, fingerprint: &str, located: Vec<vigil_domain::located::Located>) {
        if let Some(alert) = self.alerts.get_mut(fingerprint) {
            alert.located = located;
        }
    }

    /// Forgets a resolved alert once everyone was told.
    pub fn remove_resolved(&mut self, fingerprint: &str) -> Option<Alert> {
        match self.alerts.get(fingerprint) {
            Some(alert) if alert.state == State::Resolved => self.alerts.remove(fingerprint),
            _ => None,
        }
    }

    /// Applies one boundary's verdicts at `now_ms`.
    pub fn apply(
        &mut self,
        rules: &[std::sync::Arc<Rule>],
        verdicts: &[Verdict],
        now_ms: u64,
    ) -> Vec<Transition> {
        self.judge(rules, verdicts, now_ms, true)
    }

    /// Applies the verdicts of a slide (`crate::eval::Engine::slide`) at
    /// `now_ms`: they start and hold alerts, but stop none. A slide's
    /// window is longer than the boundary's that follows it (it still
    /// holds the slot the boundary drops), so the rows that made it hold
    /// weigh more at the boundary, but the older rows it also holds may
    /// make it stop an alert the boundary would start again at once.
    pub fn apply_slide(
        &mut self,
        rules: &[std::sync::Arc<Rule>],
        verdicts: &[Verdict],
        now_ms: u64,
    ) -> Vec<Transition> {
        self.judge(rules, verdicts, now_ms, false)
    }

    /// Applies verdicts; with `stops`, the alerts without one stop.
    fn judge(
        &mut self,
        rules: &[std::sync::Arc<Rule>],
        verdicts: &[Verdict],
        now_ms: u64,
        stops: bool,
    ) -> Vec<Transition> {
        let mut transitions = Vec::new();
        let mut held = std::collections::BTreeSet::new();
        for verdict in verdicts {
            let rule = &rules[verdict.rule];
            let labels = labels_of(rule, &verdict.labels);
            let fingerprint = fingerprint(&labels);
            held.insert(fingerprint.clone());
            let annotations = annotate(rule, &labels, verdict.value);
            let for_ms = rule.pending_s() * 1_000;
            match self.alerts.get_mut(&fingerprint) {
                Some(alert) if alert.state != State::Resolved => {
                    alert.value = verdict.value;
                    alert.annotations = annotations;
                    alert.last_held_ms = now_ms;
                    if alert.state == State::Pending && now_ms >= alert.active_since_ms + for_ms {
                        alert.state = State::Firing;
                        alert.fired_ms = Some(now_ms);
                        transitions.push(Transition {
                            alert: alert.clone(),
                            from: Some(State::Pending),
                            to: Some(State::Firing),
                        });
                    }
                }
                _ => {
                    let state = if for_ms == 0 {
                        State::Firing
                    } else {
                        State::Pending
                    };
                    let alert = Alert {
                        fingerprint: fingerprint.clone(),
                        tenant: rule.tenant.clone(),
                        rule: rule.name.clone(),
                        labels,
                        annotations,
                        state,
                        active_since_ms: now_ms,
                        fired_ms: (state == State::Firing).then_some(now_ms),
                        resolved_ms: None,
                        value: verdict.value,
                        last_held_ms: now_ms,
                        located: Vec::new(),
                        // A flapping alert that fires again still flaps.
                        flapping: self
                            .alerts
                            .get(&fingerprint)
                            .is_some_and(|old| old.flapping),
                        notified_ms: None,
                        remediation_started_ms: None,
                        recovered_ms: None,
                    };
                    transitions.push(Transition {
                        alert: alert.clone(),
                        from: None,
                        to: Some(state),
                    });
                    self.alerts.insert(fingerprint, alert);
                }
            }
        }
        let stopped: Vec<String> = self
            .alerts
            .iter()
            .filter(|(fingerprint, alert)| {
                stops
                    && alert.state != State::Resolved
                    && !held.contains(*fingerprint)
                    && !kept_firing(rules, alert, now_ms)
            })
            .map(|(fingerprint, _)| fingerprint.clone())
            .collect();
        for fingerprint in stopped {
            let Some(mut alert) = self.alerts.remove(&fingerprint) else {
                continue;
            };
            let from = alert.state;
            if from == State::Pending {
                transitions.push(Transition {
                    alert,
                    from: Some(State::Pending),
                    to: None,
                });
            } else {
                alert.state = State::Resolved;
                alert.resolved_ms = Some(now_ms);
                transitions.push(Transition {
                    alert: alert.clone(),
                    from: Some(from),
                    to: Some(State::Resolved),
                });
                self.alerts.insert(fingerprint, alert);
            }
        }
        for transition in &transitions {
            // Saved with the transition.
            self.saved.insert(
                transition.alert.fingerprint.clone(),
                (transition.alert.value, now_ms),
            );
            if matches!(transition.to, Some(State::Firing | State::Resolved)) {
                self.changes
                    .entry(transition.alert.fingerprint.clone())
                    .or_default()
                    .push_back(now_ms);
            }
        }
        transitions
    }
}

/// Whether `alert`, firing, stays so although its condition stopped
/// holding: its rule's `keep_firing_for` has not passed since it last held.
fn kept_firing(rules: &[std::sync::Arc<Rule>], alert: &Alert, now_ms: u64) -> bool {
    alert.state == State::Firing
        && rules
            .iter()
            .find(|rule| rule.owns(alert))
            .is_some_and(|rule| {
                now_ms.saturating_sub(alert.last_held_ms) < rule.keep_firing_for_s * 1_000
            })
}

/// An alert's labels: `alertname`, `tenant`, the group's and the rule's
/// (the rule's own win over a group label of the same name).
fn labels_of(rule: &Rule, group: &[(String, String)]) -> BTreeMap<String, String> {
    let mut labels: BTreeMap<String, String> = group.iter().cloned().collect();
    labels.extend(rule.labels.clone());
    labels.insert("alertname".into(), rule.name.clone());
    labels.insert("tenant".into(), rule.tenant.as_str().to_owned());
    labels
}

/// The variables templates see: every label, `value` and, where the rule
/// has one, `service`.
pub fn vars(labels: &BTreeMap<String, String>, value: Option<f64>, service: Option<&str>) -> Vars {
    let mut vars: Vars = labels
        .iter()
        .map(|(key, value)| (key.clone(), serde_json::Value::from(value.as_str())))
        .collect();
    // To three decimals; a whole number reads as one (430, not 430.0).
    let value =
        value
            .map(|v| (v * 1_000.0).round() / 1_000.0)
            .map_or(serde_json::Value::Null, |v| {
                if v.fract() == 0.0 && v.abs() < 9e15 {
                    serde_json::Value::from(v as i64)
                } else {
                    serde_json::Number::from_f64(v).map_or(serde_json::Value::Null, Into::into)
                }
            });
    vars.insert("value".into(), value);
    if let Some(service) = service {
        vars.entry("service".into())
            .or_insert_with(|| serde_json::Value::from(service));
    }
    vars
}

fn annotate(
    rule: &Rule,
    labels: &BTreeMap<String, String>,
    value: Option<f64>,
) -> BTreeMap<String, String> {
    let vars = vars(labels, value, rule.service.as_deref());
    rule.annotations
        .iter()
        .map(|(key, template)| {
            // A label the group does not have reads as "": annotations are
            // text for people, not requests.
            let text = template.render(&vars).unwrap_or_else(|_| {
                let mut vars = vars.clone();
                for name in template.variables() {
                    vars.entry(name.to_owned()).or_insert_with(|| "".into());
                }
                template.render(&vars).unwrap_or_default()
            });
            (key.clone(), text)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::sync::Arc;

    use super::*;
    use crate::rules;

    fn rule(yaml: &str) -> Vec<Arc<Rule>> {
        let files = vec![(
            PathBuf::from("r.yaml"),
            format!("tenant: acme\nrules:\n  - {yaml}\n"),
        )];
        rules::parse(&files, &|_| None, None)
            .expect("loads")
            .rules
            .into_iter()
            .map(Arc::new)
            .collect()
    }

    fn verdict(unit: &str, value: f64) -> Verdict {
        Verdict {
            rule: 0,
            labels: vec![("vigil.unit".into(), unit.into())],
            value: Some(value),
        }
    }

    fn states(transitions: &[Transition]) -> Vec<(Option<State>, Option<State>)> {
        transitions.iter().map(|t| (t.from, t.to)).collect()
    }

    #[test]
    fn a_slide_starts_alerts_and_stops_none() {
        let rules = rule(
            "{name: errors, type: threshold, service: pay, group_by: [vigil.unit], signal: error_ratio, op: '>', value: 0.1}",
        );
        let mut alerts = Alerts::default();
        let t = 1_000_000;
        let fired = alerts.apply_slide(&rules, &[verdict("u1", 0.5)], t);
        assert_eq!(states(&fired), vec![(None, Some(State::Firing))]);
        assert_eq!(fired[0].alert.fired_ms, Some(t));
        // A slide whose condition no longer holds stops nothing…
        assert!(alerts.apply_slide(&rules, &[], t + 1_000).is_empty());
        let alert = alerts.iter().next().expect("the alert");
        assert_eq!(alert.state, State::Firing);
        // …the next boundary does.
        let stopped = alerts.apply(&rules, &[], t + 2_000);
        assert_eq!(
            states(&stopped),
            vec![(Some(State::Firing), Some(State::Resolved))]
        );
    }

    #[test]
    fn a_firing_alerts_changed_value_is_saved_at_most_once_a_minute() {
        let rules = rule(
            "{name: errors, type: threshold, service: pay, group_by: [vigil.unit], signal: error_ratio, op: '>', value: 0.1}",
        );
        let mut alerts = Alerts::default();
        let t = 1_000_000;
        // Fires at 0.5, saved with its transition.
        assert_eq!(alerts.apply(&rules, &[verdict("u1", 0.5)], t).len(), 1);
        assert!(alerts.values_to_save(t).is_empty());
        alerts.apply(&rules, &[verdict("u1", 0.6)], t + 10_000);
        assert!(
            alerts.values_to_save(t + 10_000).is_empty(),
            "within a minute"
        );
        alerts.apply(&rules, &[verdict("u1", 0.7)], t + 60_000);
        let due = alerts.values_to_save(t + 60_000);
        assert_eq!(
            due.iter().map(|a| a.value).collect::<Vec<_>>(),
            vec![Some(0.7)]
        );
        // Unchanged: nothing to save, however long.
        alerts.apply(&rules, &[verdict("u1", 0.7)], t + 200_000);
        assert!(alerts.values_to_save(t + 200_000).is_empty());
    }

    #[test]
    fn an_alert_that_comes_and_goes_too_often_flaps_until_it_settles() {
        let rules = rule(
            "{name: errors, type: threshold, service: pay, group_by: [vigil.unit], signal: error_ratio, op: '>', value: 0.1}",
        );
        let flap = Flap {
            changes: 4,
            window_ms: 600_000,
        };
        let mut alerts = Alerts::restore([], flap);
        let t = 1_000_000;
        // Fires and resolves every 10 s: the fifth change (third firing)
        // is one too many.
        let mut flapped_at = None;
        for k in 0..5u64 {
            let verdicts = if k % 2 == 0 {
                vec![verdict("u1", 0.5)]
            } else {
                vec![]
            };
            let at = t + k * 10_000;
            alerts.apply(&rules, &verdicts, at);
            let changed = alerts.flaps(at);
            if !changed.is_empty() {
                assert!(changed[0].flapping);
                flapped_at = Some(k);
            }
        }
        assert_eq!(flapped_at, Some(4));
        let alert = alerts.iter().next().expect("the alert");
        assert_eq!((alert.state, alert.flapping), (State::Firing, true));
        // It stays firing; it settles once no more than 2 changes are left
        // in the last 10 minutes: the changes at +20 s, +30 s and +40 s
        // leave the window after +620 s, +630 s.
        let mut settled_at = None;
        for k in 5..70u64 {
            let at = t + k * 10_000;
            alerts.apply(&rules, &[verdict("u1", 0.5)], at);
            if let Some(alert) = alerts.flaps(at).first() {
                assert!(!alert.flapping);
                settled_at = Some(at - t);
                break;
            }
        }
        assert_eq!(settled_at, Some(630_000));
    }

    #[test]
    fn changes_recalled_after_a_restart_count_toward_flapping() {
        let rules = rule(
            "{name: errors, type: threshold, service: pay, group_by: [vigil.unit], signal: error_ratio, op: '>', value: 0.1}",
        );
        let flap = Flap {
            changes: 4,
            window_ms: 600_000,
        };
        let t = 1_000_000;
        // Before the restart it fired and resolved twice.
        let mut before = Alerts::restore([], flap);
        for k in 0..4u64 {
            let verdicts = if k % 2 == 0 {
                vec![verdict("u1", 0.5)]
            } else {
                vec![]
            };
            before.apply(&rules, &verdicts, t + k * 10_000);
        }
        let fingerprint = before.iter().next().expect("the alert").fingerprint.clone();
        // Restarted from nothing but those four changes (the history), its
        // third firing is the fifth change: one too many.
        let mut after = Alerts::restore([], flap);
        after.recall(
            (0..4u64)
                .rev()
                .map(|k| (fingerprint.clone(), t + k * 10_000)),
        );
        let at = t + 40_000;
        after.apply(&rules, &[verdict("u1", 0.5)], at);
        let flapping: Vec<bool> = after.flaps(at).iter().map(|a| a.flapping).collect();
        assert_eq!(flapping, vec![true]);
        // Changes older than the window do not count.
        let mut late = Alerts::restore([], flap);
        late.recall((0..4u64).map(|k| (fingerprint.clone(), t + k * 10_000)));
        let at = t + 640_000;
        late.apply(&rules, &[verdict("u1", 0.5)], at);
        assert!(late.flaps(at).is_empty());
        // Flap detection turned off: an alert still marked flapping settles.
        let mut off = Alerts::restore(
            after.iter().cloned(),
            Flap {
                changes: 0,
                window_ms: 600_000,
            },
        );
        let settled: Vec<bool> = off.flaps(at).iter().map(|a| a.flapping).collect();
        assert_eq!(settled, vec![false]);
        assert!(off.flaps(at + 1_000).is_empty());
    }

    #[test]
    fn keep_firing_for_holds_a_firing_alert_through_a_gap() {
        let rules = rule(
            "{name: errors, type: threshold, service: pay, group_by: [vigil.unit], signal: error_ratio, op: '>', value: 0.1, keep_firing_for: 30s}",
        );
        let mut alerts = Alerts::default();
        let t = 1_000_000;
        let fired = alerts.apply(&rules, &[verdict("u1", 0.5)], t);
        assert_eq!(states(&fired), vec![(None, Some(State::Firing))]);
        // The condition stops holding for 20 s, then holds again: no change.
        assert!(alerts.apply(&rules, &[], t + 10_000).is_empty());
        assert!(alerts.apply(&rules, &[], t + 29_999).is_empty());
        assert!(
            alerts
                .apply(&rules, &[verdict("u1", 0.4)], t + 40_000)
                .is_empty()
        );
        // Then 30 s without it: resolved, once.
        assert!(alerts.apply(&rules, &[], t + 69_999).is_empty());
        let resolved = alerts.apply(&rules, &[], t + 70_000);
        assert_eq!(
            states(&resolved),
            vec![(Some(State::Firing), Some(State::Resolved))]
        );
        assert_eq!(resolved[0].alert.resolved_ms, Some(t + 70_000));
    }

    #[test]
    fn alerts_pend_fire_and_resolve() {
        let rules = rule(
            "{name: slow, type: threshold, service: pay, group_by: [vigil.unit], signal: p99, op: '>', value: 300, for: 20s, labels: {severity: page}, annotations: {summary: 'p99 {{value}} ms in {{vigil.unit}} of {{service}}'}}",
        );
        let mut alerts = Alerts::default();
        let t = 1_000_000;
        let started = alerts.apply(&rules, &[verdict("u1", 412.5)], t);
        assert_eq!(states(&started), vec![(None, Some(State::Pending))]);
        let alert = &started[0].alert;
        assert_eq!(
            alert.labels,
            BTreeMap::from([
                ("alertname".into(), "slow".into()),
                ("severity".into(), "page".into()),
                ("tenant".into(), "acme".into()),
                ("vigil.unit".into(), "u1".into()),
            ])
        );
        assert_eq!(alert.annotations["summary"], "p99 412.5 ms in u1 of pay");
        assert_eq!(alert.fingerprint, fingerprint(&alert.labels));
        assert!(
            alerts
                .apply(&rules, &[verdict("u1", 420.0)], t + 10_000)
                .is_empty()
        );
        let fired = alerts.apply(&rules, &[verdict("u1", 430.0)], t + 20_000);
        assert_eq!(
            states(&fired),
            vec![(Some(State::Pending), Some(State::Firing))]
        );
        assert_eq!(fired[0].alert.fired_ms, Some(t + 20_000));
        assert_eq!(
            fired[0].alert.annotations["summary"],
            "p99 430 ms in u1 of pay"
        );
        // No verdict for it any more resolves it, like one that fails.
        let resolved = alerts.apply(&rules, &[], t + 30_000);
        assert_eq!(
            states(&resolved),
            vec![(Some(State::Firing), Some(State::Resolved))]
        );
        assert_eq!(resolved[0].alert.resolved_ms, Some(t + 30_000));
        // Resolved stays until removed; holding again starts a new alert.
        let again = alerts.apply(&rules, &[verdict("u1", 500.0)], t + 40_000);
        assert_eq!(states(&again), vec![(None, Some(State::Pending))]);
        // A pending alert that stops holding is dropped.
        let dropped = alerts.apply(&rules, &[], t + 50_000);
        assert_eq!(states(&dropped), vec![(Some(State::Pending), None)]);
        assert!(alerts.get(&alert.fingerprint).is_none());
    }

    #[test]
    fn for_zero_fires_at_once_and_groups_are_apart() {
        let rules = rule(
            "{name: errors, type: threshold, group_by: [vigil.unit], signal: error_ratio, op: '>', value: 0.1}",
        );
        let mut alerts = Alerts::default();
        let fired = alerts.apply(&rules, &[verdict("u1", 0.5), verdict("u2", 0.2)], 5_000);
        assert_eq!(
            states(&fired),
            vec![(None, Some(State::Firing)), (None, Some(State::Firing))]
        );
        assert_ne!(fired[0].alert.fingerprint, fired[1].alert.fingerprint);
        assert_eq!(alerts.iter().count(), 2);
    }
}
