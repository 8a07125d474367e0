//! What the alerter keeps in the store: alerts, notification groups and
//! cooldowns as keyed state, every transition as history, and on start the
//! rules' ranges read back from the 10 s rows.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::json;
use vigil_domain::alert::Collection;
use vigil_domain::model::Kind;
use vigil_domain::tenant::TenantId;
use vigil_store::{
    HistoryEntry, HistoryQuery, RollupQuery, RollupStore, StateRecord, StateStore, StoreError,
};

use super::Control;
use crate::alerts::{Alert, State, Transition};
use crate::eval::Engine;
use crate::rules::Rule;
use crate::{Metrics, REBUILD_MAX_S};

/// The most transitions read back per tenant on start.
const RECALLED_MAX: usize = 100_000;

/// Every record of a collection, as (tenant, key, body); bodies that do not
/// read are logged and left out.
pub(crate) async fn read_state<T: serde::de::DeserializeOwned>(
    store: &dyn StateStore,
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

/// When each alert of `tenants` fired or resolved in `[from_ms, to_ms)`, as
/// (fingerprint, unix ms), from the history.
pub(crate) async fn recent_changes(
    store: &dyn StateStore,
    tenants: impl IntoIterator<Item = TenantId>,
    (from_ms, to_ms): (u64, u64),
) -> Result<Vec<(String, u64)>, StoreError> {
    let mut changes = Vec::new();
    for tenant in tenants {
        let entries = store
            .history(&HistoryQuery {
                tenant,
                from_ms,
                to_ms,
                rule: None,
                subject: None,
                limit: RECALLED_MAX,
            })
            .await?;
        for entry in entries.into_iter().filter(|e| e.kind == "transition") {
            let body: serde_json::Value = serde_json::from_str(&entry.body).unwrap_or_default();
            let to = body["to"].as_str();
            if [State::Firing, State::Resolved]
                .iter()
                .any(|state| to == Some(state.as_str()))
            {
                changes.push((entry.subject, entry.time_ms));
            }
        }
    }
    Ok(changes)
}

/// Feeds the engine the 10 s rows the store holds for its rules' ranges
/// (up to [`REBUILD_MAX_S`]) before `through_s`; returns the rows read.
pub(crate) async fn rebuild(
    engine: &mut Engine,
    store: &dyn RollupStore,
    through_s: u64,
) -> Result<usize, StoreError> {
    let mut count = 0;
    for ((tenant, kind, service), range_s) in selections(engine.rules()) {
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

/// What [`rebuild`] reads: each tenant, kind and service (`None`: all of
/// them) the rules read, over the longest range a rule reads it; a row is
/// read once, so a service's rows are read with all of its kind's when
/// some rule reads every service of that kind.
fn selections(rules: &[Arc<Rule>]) -> BTreeMap<(TenantId, Kind, Option<String>), u64> {
    let mut selections: BTreeMap<(TenantId, Kind, Option<String>), u64> = BTreeMap::new();
    for rule in rules {
        for (kind, service) in rule.reads() {
            let range = selections
                .entry((rule.tenant.clone(), kind, service))
                .or_default();
            *range = (*range).max(rule.range_s().min(REBUILD_MAX_S));
        }
    }
    let mut widened: BTreeMap<(TenantId, Kind), u64> = selections
        .iter()
        .filter(|((_, _, service), _)| service.is_none())
        .map(|((tenant, kind, _), range)| ((tenant.clone(), *kind), *range))
        .collect();
    selections.retain(|(tenant, kind, service), range| {
        let Some(all) = widened.get_mut(&(tenant.clone(), *kind)) else {
            return true;
        };
        *all = (*all).max(*range);
        service.is_none()
    });
    for ((tenant, kind), range) in widened {
        selections.insert((tenant, kind, None), range);
    }
    selections
}

impl Control {
    pub(super) async fn put(&self, records: &[StateRecord]) {
        if records.is_empty() {
            return;
        }
        if let Err(error) = self.store.put_state(records).await {
            self.metrics.store_failures.inc();
            tracing::error!(%error, "saving alert state failed");
        }
    }

    /// Saves the alerts that changed and records the transitions.
    pub(super) async fn record(&mut self, transitions: &[Transition], now_ms: u64) {
        let mut records = Vec::new();
        let mut history = Vec::new();
        for transition in transitions {
            let alert = &transition.alert;
            self.metrics.transition(transition.to);
            records.push(alert_record(alert, transition.to.is_none(), now_ms));
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
}

impl Control {
    /// Saves the alerts that started or stopped flapping and records it.
    pub(super) async fn record_flaps(&mut self, alerts: &[Alert], now_ms: u64) {
        let records: Vec<StateRecord> = alerts
            .iter()
            .map(|alert| alert_record(alert, false, now_ms))
            .collect();
        let history = alerts
            .iter()
            .map(|alert| {
                if alert.flapping {
                    tracing::warn!(rule = %alert.rule, fingerprint = %alert.fingerprint, "alert flapping: its notifications are held until it settles");
                }
                HistoryEntry {
                    tenant: alert.tenant.clone(),
                    time_ms: now_ms,
                    kind: if alert.flapping { "flapping" } else { "settled" }.into(),
                    rule: alert.rule.clone(),
                    subject: alert.fingerprint.clone(),
                    body: json!({
                        "state": alert.state.as_str(),
                        "labels": alert.labels,
                    })
                    .to_string(),
                }
            })
            .collect();
        self.put(&records).await;
        append(&*self.store, &self.metrics, history).await;
    }
}

pub(super) async fn append(store: &dyn StateStore, metrics: &Metrics, entries: Vec<HistoryEntry>) {
    if entries.is_empty() {
        return;
    }
    if let Err(error) = store.append_history(&entries).await {
        metrics.store_failures.inc();
        tracing::error!(%error, "recording alert history failed");
    }
}

pub(super) fn state_record<T: serde::Serialize>(
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

/// An alert as kept: by its fingerprint, deleted when `deleted`.
pub(super) fn alert_record(alert: &Alert, deleted: bool, now_ms: u64) -> StateRecord {
    StateRecord {
        deleted,
        ..state_record(
            Collection::Alert,
            &alert.tenant,
            &alert.fingerprint,
            alert,
            now_ms,
        )
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::rules;

    #[test]
    fn a_row_is_read_back_once_whichever_rules_read_it() {
        let vigil = "tenant: acme\nrules:\n  - {name: pay, type: absence, service: pay, for: 2h}\n  - {name: any, type: absence, for: 1m}\n  - {name: probe, type: absence, kind: probe, service: pay, for: 1m}\n";
        let prometheus = "groups:\n  - name: g\n    rules:\n      - {alert: up, expr: 'rate(x_total[30m]) > 1'}\n";
        let acme = TenantId::parse("acme").expect("tenant");
        let read = |files: &[(&str, &str)]| {
            let files: Vec<(PathBuf, String)> = files
                .iter()
                .map(|(name, text)| (PathBuf::from(name), (*text).to_owned()))
                .collect();
            let rules: Vec<Arc<Rule>> = rules::parse(&files, &|_| None, Some(&acme))
                .expect("rules load")
                .rules
                .into_iter()
                .map(Arc::new)
                .collect();
            selections(&rules)
                .into_iter()
                .map(|((_, kind, service), range)| (kind, service, range))
                .collect::<Vec<_>>()
        };
        // The spans of pay are read with every service's, over pay's 2 h.
        assert_eq!(
            read(&[("v.yaml", vigil)]),
            vec![
                (Kind::Span, None, 7_200),
                (Kind::Probe, Some("pay".to_owned()), 60)
            ]
        );
        // A PromQL rule reads every kind.
        assert_eq!(
            read(&[("v.yaml", vigil), ("p.yml", prometheus)]),
            vec![
                (Kind::Span, None, 7_200),
                (Kind::Metric, None, 1_800),
                (Kind::Client, None, 1_800),
                (Kind::Probe, None, 1_800),
            ]
        );
    }
}
