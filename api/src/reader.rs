//! How handlers read the store: one tenant's data, merged rollups from the
//! widest windows that have closed, within the configured point limit.

use std::sync::Arc;

use vigil_domain::model::{Kind, Rollup, TOTAL_LABELS};
use vigil_domain::tenant::TenantId;
use vigil_store::{Aggregated, Aggregation, Store};

use crate::cache::Cache;

use crate::error::ApiError;
use crate::query::{Merged, Selection, cover, widths};

/// The store as one request of one tenant reads it.
pub struct Reader {
    pub store: Arc<dyn Store>,
    pub cache: Arc<Cache>,
    pub tenant: TenantId,
    /// Unix seconds.
    pub now_s: u64,
    /// How long after its end a window is in the store, closed: the
    /// aggregator's allowed lateness and flush interval, and a margin.
    pub settle_s: u64,
    pub max_points: usize,
}

impl Reader {
    /// The rollups of `selection` over `[from_s, to_s)` (aligned to 10 s),
    /// merged per group and per step of `step_s` (steps start at multiples
    /// of it), or per group only (keyed by `from_s`) without a step.
    pub async fn merged(
        &self,
        selection: &Selection,
        from_s: u64,
        to_s: u64,
        step_s: Option<u64>,
    ) -> Result<Merged, ApiError> {
        let totals = self.through_totals(selection, from_s).await?;
        let selection = totals.as_ref().unwrap_or(selection);
        let closed_until = self.now_s.saturating_sub(self.settle_s);
        let mut merged = Merged::new();
        for segment in cover(from_s, to_s, &widths(step_s), closed_until) {
            // Without a step, one step as long as the segment (two at most,
            // as steps are aligned): few rows to merge here.
            let length = segment.to_s - segment.from_s;
            let width = u64::from(segment.width_s);
            let aggregation = Aggregation {
                tenant: self.tenant.clone(),
                kind: selection.kind,
                width_s: segment.width_s,
                from_s: segment.from_s,
                to_s: segment.to_s,
                step_s: step_s.unwrap_or(length.div_ceil(width) * width),
                service: selection.service.clone(),
                name: selection.name.clone(),
                matchers: selection.matchers.clone(),
                group_by: selection.group_by.clone(),
                buckets: selection.buckets,
                limit: self.max_points + 1,
            };
            for row in self.aggregate(&aggregation).await? {
                let start = if step_s.is_some() {
                    row.start_s
                } else {
                    from_s
                };
                merged
                    .entry((row.group, start))
                    .or_default()
                    .merge(&row.rollup);
            }
            if merged.len() > self.max_points {
                return Err(ApiError::Limit {
                    limit: "api.max_points",
                    message: format!(
                        "the answer holds more than {} points; narrow the range, use a longer step or group by fewer labels",
                        self.max_points
                    ),
                });
            }
        }
        Ok(merged)
    }

    /// `selection` read from the span series' totals when they answer it
    /// alike: every span of a service or of all, filtered and grouped by
    /// service, span kind and deployment labels only ([`TOTAL_LABELS`]),
    /// over a range they cover. A read of every service that neither
    /// filters nor groups by service takes the tenant's totals
    /// ([`Kind::Tenant`]), others the services' ([`Kind::Service`]). Totals
    /// are kept from the first start of a version that writes them: a
    /// service's from its own first total, every service's from the
    /// earliest. A few series per span kind and deployment are read instead
    /// of each operation's.
    pub async fn through_totals(
        &self,
        selection: &Selection,
        from_s: u64,
    ) -> Result<Option<Selection>, ApiError> {
        let service_wide = |key: &str| key == "service.name" || TOTAL_LABELS.contains(&key);
        let answerable = selection.kind == Kind::Span
            && selection.name.is_none()
            && selection.matchers.iter().all(|m| service_wide(&m.name))
            && selection.group_by.iter().all(|key| service_wide(key));
        if !answerable {
            return Ok(None);
        }
        let of_every_service = selection.service.is_none()
            && selection.matchers.iter().all(|m| m.name != "service.name")
            && selection.group_by.iter().all(|key| key != "service.name");
        let levels: &[Kind] = if of_every_service {
            &[Kind::Tenant, Kind::Service]
        } else {
            &[Kind::Service]
        };
        for &kind in levels {
            // The catalogue of the service's totals (of every service's when
            // the selection names none).
            let since = self
                .store
                .series(&self.tenant, Some(kind), selection.service.as_deref())
                .await?
                .iter()
                .map(|entry| entry.first_seen_s)
                .min();
            if since.is_some_and(|since| since <= from_s) {
                return Ok(Some(Selection {
                    kind,
                    ..selection.clone()
                }));
            }
        }
        Ok(None)
    }

    /// The store's merged rollups of `query`, its closed windows kept
    /// between requests ([`Cache`]).
    pub async fn aggregate(&self, query: &Aggregation) -> Result<Vec<Aggregated>, ApiError> {
        let closed_until = self.now_s.saturating_sub(self.settle_s);
        let store = &self.store;
        Ok(self
            .cache
            .counted(query, closed_until, |query| async move {
                store.aggregate(&query).await
            })
            .await?)
    }

    /// Like [`Reader::merged`] without a step: one rollup per group.
    pub async fn totals(
        &self,
        selection: &Selection,
        from_s: u64,
        to_s: u64,
    ) -> Result<Vec<(Vec<String>, Rollup)>, ApiError> {
        let merged = self.merged(selection, from_s, to_s, None).await?;
        Ok(merged
            .into_iter()
            .map(|((group, _), rollup)| (group, rollup))
            .collect())
    }
}
