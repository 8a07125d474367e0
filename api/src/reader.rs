//! How handlers read the store: one tenant's data, merged rollups from the
//! widest windows that have closed, within the configured point limit.

use std::sync::Arc;

use vigil_domain::model::{Kind, Rollup, SPAN_KIND};
use vigil_domain::tenant::TenantId;
use vigil_store::{Aggregation, Store};

use crate::error::ApiError;
use crate::query::{Merged, Selection, cover, widths};

/// The store as one request of one tenant reads it.
pub struct Reader {
    pub store: Arc<dyn Store>,
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
                limit: self.max_points + 1,
            };
            for row in self.store.aggregate(&aggregation).await? {
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

    /// `selection` read from the services' totals ([`Kind::Service`]) when
    /// they answer it alike: every span of a service or of all, filtered and
    /// grouped by service and span kind only, over a range they cover (they
    /// are kept from the first start of a version that writes them: a
    /// service's from its own first total, every service's from the
    /// earliest). One series per service and span kind is read instead of
    /// each operation's.
    async fn through_totals(
        &self,
        selection: &Selection,
        from_s: u64,
    ) -> Result<Option<Selection>, ApiError> {
        let total_labels = ["service.name", SPAN_KIND];
        let answerable = selection.kind == Kind::Span
            && selection.name.is_none()
            && selection
                .matchers
                .iter()
                .all(|m| total_labels.contains(&m.name.as_str()))
            && selection
                .group_by
                .iter()
                .all(|key| total_labels.contains(&key.as_str()));
        if !answerable {
            return Ok(None);
        }
        // The catalogue of the service's totals (of every service's when the
        // selection names none).
        let since = self
            .store
            .series(
                &self.tenant,
                Some(Kind::Service),
                selection.service.as_deref(),
            )
            .await?
            .iter()
            .map(|entry| entry.first_seen_s)
            .min();
        Ok(since
            .is_some_and(|since| since <= from_s)
            .then(|| Selection {
                kind: Kind::Service,
                ..selection.clone()
            }))
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
