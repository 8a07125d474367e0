//! Where an alert's change is: when an alert of a threshold, anomaly or
//! burn-rate rule starts firing, the label sets that explain the change of
//! its signal over its rule's window against the hour before
//! (`vigil_domain::located`, as `GET /api/v1/localize` answers), among the
//! rule's series of the alert's group, over every other label they carry.
//! Kept on the alert, so its notifications (`vigil.located`) and
//! `GET /api/v1/alerts` show them.

use std::collections::HashMap;
use std::sync::Arc;

use vigil_domain::located::{self, Groups, Located, MAX_DIMENSIONS, Measure};
use vigil_domain::model::Kind;
use vigil_domain::signal::Matcher;
use vigil_domain::tenant::TenantId;
use vigil_store::{Aggregation, CatalogueEntry, StoreError};

use super::Control;
use crate::alerts::{Alert, State, Transition};
use crate::rules::{Check, Rule, STEP_S};

/// The baseline: the hour before the rule's window.
const BASELINE_S: u64 = 3_600;
/// Causes kept per alert.
const CAUSES: usize = 3;
/// The most groups read per range; more, and the alert is not located.
const MAX_LEAVES: usize = 100_000;

/// The catalogues read while locating one tick's alerts, by tenant, kind
/// and service: alerts of one rule firing together read theirs once.
type Catalogues = HashMap<(TenantId, Kind, Option<String>), Arc<[CatalogueEntry]>>;

impl Control {
    /// Locates the change of each alert that started firing; what cannot be
    /// read is logged and leaves the alert without causes.
    pub(super) async fn locate(&mut self, transitions: &mut [Transition], now_ms: u64) {
        let mut catalogues = Catalogues::new();
        for transition in transitions
            .iter_mut()
            .filter(|t| t.to == Some(State::Firing))
        {
            let alert = &transition.alert;
            let Some(rule) = self.engine.rules().iter().find(|r| r.owns(alert)).cloned() else {
                continue;
            };
            let Some((measure, window_s)) = question(&rule) else {
                continue;
            };
            match self
                .explain(&rule, alert, (measure, window_s), now_ms, &mut catalogues)
                .await
            {
                Ok(found) => {
                    self.alerts.locate(&alert.fingerprint, found.clone());
                    transition.alert.located = found;
                }
                Err(error) => {
                    tracing::warn!(%error, rule = %rule.name, "locating the alert's change failed");
                }
            }
        }
    }

    async fn explain(
        &self,
        rule: &Rule,
        alert: &Alert,
        (measure, window_s): (Measure, u64),
        now_ms: u64,
        catalogues: &mut Catalogues,
    ) -> Result<Vec<Located>, StoreError> {
        // The rule's series of the alert's group.
        let mut matchers = rule.matchers.clone();
        for key in &rule.group_by {
            if let Some(value) = alert.labels.get(key) {
                matchers.push(Matcher::equal(key, value));
            }
        }
        let which = (rule.tenant.clone(), rule.kind, rule.service.clone());
        let catalogue = match catalogues.get(&which) {
            Some(catalogue) => Arc::clone(catalogue),
            None => {
                let read: Arc<[CatalogueEntry]> = self
                    .store
                    .series(&rule.tenant, Some(rule.kind), rule.service.as_deref())
                    .await?
                    .into();
                catalogues.insert(which, Arc::clone(&read));
                read
            }
        };
        let selected = catalogue
            .iter()
            .map(|entry| &entry.series)
            .filter(|series| {
                rule.series.as_ref().is_none_or(|n| *n == series.name)
                    && matchers.iter().all(|m| m.matches(*series))
            });
        let dimensions = located::dimensions(selected, measure, &rule.group_by);
        if dimensions.is_empty() || dimensions.len() > MAX_DIMENSIONS {
            return Ok(Vec::new());
        }
        // The range the rule judged: its window before the boundary and,
        // for a rule that slides, the rows published since.
        let at_s = alert.fired_ms.unwrap_or(alert.active_since_ms) / 1_000;
        let boundary_s = at_s - at_s % STEP_S;
        let from_s = boundary_s.saturating_sub(window_s);
        let now_s = (now_ms / 1_000).max(boundary_s);
        let (to_s, range_s) = if rule.slides() {
            (now_s - now_s % STEP_S + STEP_S, now_s - from_s)
        } else {
            (boundary_s, window_s)
        };
        let read = |from_s: u64, to_s: u64| {
            let query = Aggregation {
                tenant: rule.tenant.clone(),
                kind: rule.kind,
                width_s: STEP_S as u32,
                from_s,
                to_s,
                // One step over the range (two where it crosses a multiple).
                step_s: (to_s - from_s).div_ceil(STEP_S) * STEP_S,
                service: rule.service.clone(),
                name: rule.series.clone(),
                matchers: matchers.clone(),
                group_by: dimensions.clone(),
                // A latency measure counts values above a quantile.
                buckets: true,
                limit: MAX_LEAVES,
            };
            async move {
                let rows = self.store.aggregate(&query).await?;
                // Cut at the limit, the leaves would lie.
                let complete = rows.len() < MAX_LEAVES;
                let mut groups: Groups = HashMap::new();
                for row in rows {
                    groups.entry(row.group).or_default().merge(&row.rollup);
                }
                Ok::<_, StoreError>(complete.then_some(groups))
            }
        };
        let (Some(now), Some(before)) = (
            read(from_s, to_s).await?,
            read(from_s.saturating_sub(BASELINE_S), from_s).await?,
        ) else {
            tracing::info!(rule = %rule.name, "more than {MAX_LEAVES} leaves: the alert is not located");
            return Ok(Vec::new());
        };
        Ok(located::explain(
            measure,
            &dimensions,
            &now,
            &before,
            (range_s, BASELINE_S),
            CAUSES,
        )
        .causes)
    }
}

/// The measure of the signal a rule judges, and over how long; `None` for
/// rules whose change cannot be located (absence, canary, PromQL, means
/// and extremes).
fn question(rule: &Rule) -> Option<(Measure, u64)> {
    match &rule.check {
        Check::Threshold {
            signal, window_s, ..
        }
        | Check::Anomaly {
            signal, window_s, ..
        } => Some((Measure::of(*signal)?, *window_s)),
        Check::BurnRate {
            latency_ms,
            windows,
            ..
        } => {
            let measure = latency_ms.map_or(Measure::Failures(false), Measure::Over);
            Some((measure, windows.iter().map(|w| w.short_s).min()?))
        }
        _ => None,
    }
}
