//! What the alerter keeps in the store: alerts, notification groups and
//! cooldowns as keyed state, every transition as history, and on start the
//! rules' ranges read back from the 10 s rows.

use std::collections::BTreeMap;

use serde_json::json;
use vigil_domain::alert::Collection;
use vigil_domain::tenant::TenantId;
use vigil_store::{HistoryEntry, RollupQuery, RollupStore, StateRecord, StateStore, StoreError};

use super::Control;
use crate::alerts::{State, Transition};
use crate::eval::Engine;
use crate::{Metrics, REBUILD_MAX_S};

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

/// Feeds the engine the 10 s rows the store holds for its rules' ranges
/// (up to [`REBUILD_MAX_S`]) before `through_s`; returns the rows read.
pub(crate) async fn rebuild(
    engine: &mut Engine,
    store: &dyn RollupStore,
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
