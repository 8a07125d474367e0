//! The active series of each tenant, over every kind (metric, span, client
//! and probe series alike), and the limit on how many there may be.
//!
//! A series is active from its first point until it goes unseen for
//! `series_idle_s` (wall clock): within the next minute it is forgotten, and
//! its next point makes it new again. A new series past the tenant's limit is refused, its
//! points counted in `vigil_aggregator_series_refused_total`, while the
//! tenant's known series go on; as in Mimir and VictoriaMetrics, a sender's
//! label explosion costs its own new series, never the others' data or the
//! aggregator's memory.
//!
//! The limit holds per aggregator process (as Mimir's per-ingester limit):
//! aggregators sharing a topic's partitions each count what they hold. A
//! restarted aggregator counts again from the series of the windows it
//! restores, partition by partition as each gets its first message; a point
//! refused before the restart may be taken by the replay, and nothing is
//! counted twice.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use vigil_domain::model::SeriesKey;
use vigil_domain::tenant::TenantId;

use crate::IdMap;
use crate::metrics::Metrics;

/// How often a tenant's series unseen for the idle time are forgotten.
const SWEEP_S: u64 = 60;

/// The active series of every tenant, shared by the pipelines of one
/// aggregator. One lock, taken once per bus message (see [`Admission`]).
#[derive(Debug)]
pub struct ActiveSeries {
    max_per_tenant: usize,
    idle_s: u64,
    tenants: Mutex<HashMap<TenantId, Tenant>>,
}

#[derive(Debug, Default)]
struct Tenant {
    /// Per series id: when last seen (unix seconds).
    seen: IdMap<u64, u64>,
    swept_s: u64,
    /// When the limit was last reported in the log.
    warned_s: Option<u64>,
}

impl ActiveSeries {
    pub fn new(max_per_tenant: usize, idle_s: u64) -> Self {
        ActiveSeries {
            max_per_tenant,
            idle_s,
            tenants: Mutex::default(),
        }
    }

    /// The gate of one message's observations: holds the lock until dropped.
    pub fn admission<'a>(&'a self, now_s: u64, metrics: &'a Metrics) -> Admission<'a> {
        Admission {
            active: self,
            tenants: self.tenants.lock().unwrap_or_else(PoisonError::into_inner),
            current: None,
            now_s,
            metrics,
        }
    }

    /// Counts the series of restored windows as active, whatever the limit:
    /// they were admitted before.
    pub fn restore<'a>(
        &self,
        series: impl IntoIterator<Item = &'a SeriesKey>,
        now_s: u64,
        metrics: &Metrics,
    ) {
        let mut admission = self.admission(now_s, metrics);
        for key in series {
            let tenant = admission.tenant(&key.tenant);
            tenant.seen.insert(key.id(), now_s);
            let active = tenant.seen.len();
            metrics.set_active_series(&key.tenant, active);
        }
    }
}

/// The active series while one message's observations go through.
pub struct Admission<'a> {
    active: &'a ActiveSeries,
    tenants: MutexGuard<'a, HashMap<TenantId, Tenant>>,
    /// The tenant of the last observation, out of `tenants` until another
    /// comes (or the admission ends): a message's observations are all of
    /// one tenant, looked up once rather than per observation.
    current: Option<(TenantId, Tenant)>,
    now_s: u64,
    metrics: &'a Metrics,
}

impl Drop for Admission<'_> {
    fn drop(&mut self) {
        if let Some((id, tenant)) = self.current.take() {
            self.tenants.insert(id, tenant);
        }
    }
}

impl Admission<'_> {
    /// Whether a point of `series` (whose id is `id`) may be counted: its
    /// series is known, or new with room under its tenant's limit. A refusal
    /// is counted, and logged once a minute per tenant.
    pub fn admit(&mut self, series: &SeriesKey, id: u64) -> bool {
        let (max, idle_s, now_s) = (self.active.max_per_tenant, self.active.idle_s, self.now_s);
        let metrics = self.metrics;
        let tenant = self.tenant(&series.tenant);
        if let Some(seen) = tenant.seen.get_mut(&id) {
            *seen = now_s;
            return true;
        }
        if tenant.seen.len() < max {
            tenant.seen.insert(id, now_s);
            metrics.set_active_series(&series.tenant, tenant.seen.len());
            return true;
        }
        metrics.series_refused(&series.tenant, series.kind.as_str());
        if tenant
            .warned_s
            .is_none_or(|at| now_s.saturating_sub(at) >= SWEEP_S)
        {
            tenant.warned_s = Some(now_s);
            tracing::warn!(
                tenant = %series.tenant, limit = max, idle_s,
                kind = %series.kind, service = %series.service, name = %series.name,
                "a tenant is at its limit of active series: new series are refused until some go unseen"
            );
        }
        false
    }

    /// A tenant's series, those unseen for the idle time forgotten once a
    /// minute.
    fn tenant(&mut self, id: &TenantId) -> &mut Tenant {
        let now_s = self.now_s;
        if self
            .current
            .as_ref()
            .is_none_or(|(current, _)| current != id)
        {
            if let Some((previous, tenant)) = self.current.take() {
                self.tenants.insert(previous, tenant);
            }
            let tenant = self.tenants.remove(id).unwrap_or_else(|| Tenant {
                swept_s: now_s,
                ..Tenant::default()
            });
            self.current = Some((id.clone(), tenant));
        }
        let (_, tenant) = self.current.as_mut().expect("the tenant was taken above");
        if now_s.saturating_sub(tenant.swept_s) >= SWEEP_S {
            tenant.swept_s = now_s;
            let idle_s = self.active.idle_s;
            tenant
                .seen
                .retain(|_, seen| now_s.saturating_sub(*seen) < idle_s);
            self.metrics.set_active_series(id, tenant.seen.len());
        }
        tenant
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::points::{Amount, Observation};
    use vigil_domain::model::Kind;

    fn observation(tenant: &str, kind: Kind, name: &str) -> Observation {
        Observation::new(
            SeriesKey::new(
                TenantId::parse(tenant).unwrap(),
                kind,
                "checkout",
                name,
                Vec::new(),
            ),
            0,
            Amount::Point {
                value: 1.0,
                error: false,
            },
        )
    }

    /// The names of the observations `active` lets through at `now_s`.
    fn admitted(
        active: &ActiveSeries,
        metrics: &Metrics,
        batch: &[Observation],
        now_s: u64,
    ) -> Vec<String> {
        let mut admission = active.admission(now_s, metrics);
        batch
            .iter()
            .filter(|o| admission.admit(&o.series, o.id))
            .map(|o| o.series.name.clone())
            .collect()
    }

    #[test]
    fn new_series_past_the_limit_are_refused_across_kinds_and_known_ones_pass() {
        let active = ActiveSeries::new(3, 600);
        let metrics = Metrics::new();
        let batch = [
            observation("acme", Kind::Metric, "a"),
            observation("acme", Kind::Span, "b"),
            observation("acme", Kind::Metric, "a"),
            observation("acme", Kind::Client, "c"),
            observation("acme", Kind::Probe, "d"),
            observation("acme", Kind::Span, "b"),
        ];
        assert_eq!(
            admitted(&active, &metrics, &batch, 1_000),
            ["a", "b", "a", "c", "b"]
        );
        // Another tenant has its own room.
        let other = [observation("other", Kind::Probe, "d")];
        assert_eq!(admitted(&active, &metrics, &other, 1_000), ["d"]);
        let rendered = metrics.render();
        for line in [
            r#"vigil_aggregator_series_refused_total{tenant="acme",kind="probe"} 1"#,
            r#"vigil_aggregator_active_series{tenant="acme"} 3"#,
            r#"vigil_aggregator_active_series{tenant="other"} 1"#,
        ] {
            assert!(rendered.contains(line), "{line} not in\n{rendered}");
        }
    }

    #[test]
    fn series_unseen_for_the_idle_time_make_room() {
        let active = ActiveSeries::new(2, 600);
        let metrics = Metrics::new();
        let admit = |name: &str, now_s: u64| {
            let batch = [observation("acme", Kind::Span, name)];
            !admitted(&active, &metrics, &batch, now_s).is_empty()
        };
        assert!(admit("a", 0));
        assert!(admit("b", 0));
        assert!(!admit("c", 100));
        // "a" stays active by being seen; "b" goes idle.
        assert!(admit("a", 500));
        assert!(!admit("c", 599), "\"b\" is not idle yet");
        // Swept once a minute: within a minute of going idle.
        assert!(
            admit("c", 659),
            "\"b\" unseen for 600 s and more is forgotten"
        );
        assert!(!admit("b", 659), "and is new again, past the limit");
        let rendered = metrics.render();
        assert!(
            rendered.contains(r#"vigil_aggregator_active_series{tenant="acme"} 2"#),
            "{rendered}"
        );
    }

    #[test]
    fn restored_series_count_whatever_the_limit() {
        let active = ActiveSeries::new(1, 600);
        let metrics = Metrics::new();
        let restored = [
            observation("acme", Kind::Span, "a").series,
            observation("acme", Kind::Span, "b").series,
        ];
        active.restore(restored.iter().map(|s| &**s), 0, &metrics);
        let batch = [
            observation("acme", Kind::Span, "b"),
            observation("acme", Kind::Span, "c"),
        ];
        assert_eq!(admitted(&active, &metrics, &batch, 10), ["b"]);
    }
}
