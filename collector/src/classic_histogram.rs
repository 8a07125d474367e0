//! Prometheus classic histograms into OTLP histograms. A family `foo`
//! arrives as the series `foo_bucket{le=…}` (cumulative counts of
//! observations up to each bound), `foo_sum` and `foo_count`, one sample per
//! series per scrape, and a scrape's series may be split over requests.
//! The parts of one point (same family, labels and timestamp) are gathered
//! per tenant until its `+Inf` bucket, sum and count are all in (Prometheus
//! writes a family's buckets first, then the sum and the count), then become
//! one cumulative OTLP histogram point of metric `foo`, so quantiles,
//! heatmaps and canary tests work on it. A bucket still missing then (a
//! scrape split out of order) merges into the next bound up: the counts stay
//! right, the resolution is coarser. Parts that never complete are dropped
//! after [`PART_TTL`] and counted (`incomplete_histogram`).

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::metrics::v1::HistogramDataPoint;

use vigil_domain::tenant::TenantId;

use crate::otlp::string_attribute;
use crate::validate::{Rejection, Rejections};

/// How long the parts of a point wait for the rest.
pub(crate) const PART_TTL: Duration = Duration::from_secs(60);
/// How long a family is remembered as a histogram after its last buckets.
const FAMILY_TTL: Duration = Duration::from_secs(600);
/// Points waiting for parts, per tenant.
const MAX_WAITING: usize = 100_000;
/// How often waiting points are checked for their age.
const SWEEP: Duration = Duration::from_secs(1);

/// Which part of a classic histogram a series is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Part {
    /// A cumulative bucket, by its upper bound (`+Inf` included).
    Bucket(f64),
    Sum,
    Count,
}

/// Where a point belongs: its resource (job, instance), family, attributes
/// (the labels but `__name__`, `job`, `instance` and `le`) and time.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct PointKey {
    pub(crate) job: String,
    pub(crate) instance: String,
    pub(crate) family: String,
    pub(crate) attributes: Vec<(String, String)>,
    pub(crate) time_ms: i64,
}

#[derive(Debug)]
struct Partial {
    buckets: Vec<(f64, f64)>,
    sum: Option<f64>,
    count: Option<f64>,
    since: Instant,
    samples: u64,
}

impl Partial {
    fn add(&mut self, part: Part, value: f64) {
        self.samples += 1;
        match part {
            Part::Bucket(bound) => self.buckets.push((bound, value)),
            Part::Sum => self.sum = Some(value),
            Part::Count => self.count = Some(value),
        }
    }

    /// Whether its `+Inf` bucket, sum and count are all in.
    fn is_complete(&self) -> bool {
        self.sum.is_some()
            && self.count.is_some()
            && self
                .buckets
                .iter()
                .any(|(bound, _)| *bound == f64::INFINITY)
    }
}

/// Every tenant's histograms in the making, each behind its own lock.
#[derive(Debug, Default)]
pub(crate) struct Histograms {
    tenants: Mutex<HashMap<TenantId, Arc<Mutex<Gathering>>>>,
}

impl Histograms {
    /// The histograms `tenant` is gathering (tenants are the configured ones
    /// and the anonymous one: a bounded map).
    pub(crate) fn of(&self, tenant: &TenantId) -> Arc<Mutex<Gathering>> {
        let mut tenants = self.tenants.lock().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(tenants.entry(tenant.clone()).or_default())
    }
}

/// One tenant's histograms in the making.
#[derive(Debug, Default)]
pub(crate) struct Gathering {
    /// Families whose buckets were seen lately: their `_sum` and `_count`
    /// are parts too.
    families: HashMap<String, Instant>,
    /// Points waiting for parts.
    points: BTreeMap<PointKey, Partial>,
    /// Points completed by the parts added since the last take.
    complete: Vec<(PointKey, Partial)>,
    /// When waiting points were last checked for their age.
    swept: Option<Instant>,
}

/// The family a `_bucket` series with an `le` label belongs to, and its bound.
pub(crate) fn bucket(name: &str, le: Option<&str>) -> Option<(String, f64)> {
    let family = name.strip_suffix("_bucket")?;
    let bound = match le? {
        "+Inf" | "Inf" | "inf" => f64::INFINITY,
        text => text.parse::<f64>().ok().filter(|b| !b.is_nan())?,
    };
    Some((family.to_owned(), bound))
}

impl Gathering {
    /// Remembers `families` as histograms at `now`.
    pub(crate) fn saw_buckets<'a>(
        &mut self,
        families: impl IntoIterator<Item = &'a str>,
        now: Instant,
    ) {
        for family in families {
            match self.families.get_mut(family) {
                Some(seen) => *seen = now,
                None => {
                    self.families.insert(family.to_owned(), now);
                }
            }
        }
    }

    /// The part series `name` is: a bucket (`le` given), or the sum or count
    /// of a family known as a histogram.
    pub(crate) fn part(&self, name: &str, le: Option<&str>) -> Option<(String, Part)> {
        if let Some((family, bound)) = bucket(name, le) {
            return Some((family, Part::Bucket(bound)));
        }
        let (family, part) = if let Some(family) = name.strip_suffix("_sum") {
            (family, Part::Sum)
        } else {
            (name.strip_suffix("_count")?, Part::Count)
        };
        self.families
            .contains_key(family)
            .then(|| (family.to_owned(), part))
    }

    /// Adds one part's sample; refused (and counted) when too many points
    /// wait already.
    pub(crate) fn add(
        &mut self,
        key: PointKey,
        part: Part,
        value: f64,
        now: Instant,
        rejections: &mut Rejections,
    ) {
        if !self.points.contains_key(&key) && self.points.len() >= MAX_WAITING {
            rejections.add(
                Rejection::new(
                    "histogram_backlog",
                    format!(
                        "histogram {:?}: {MAX_WAITING} points wait for their other parts already",
                        key.family
                    ),
                ),
                1,
            );
            return;
        }
        match self.points.entry(key) {
            // One part never completes a point.
            Entry::Vacant(entry) => {
                let mut partial = Partial {
                    buckets: Vec::new(),
                    sum: None,
                    count: None,
                    since: now,
                    samples: 0,
                };
                partial.add(part, value);
                entry.insert(partial);
            }
            Entry::Occupied(mut entry) => {
                entry.get_mut().add(part, value);
                if entry.get().is_complete() {
                    self.complete.push(entry.remove_entry());
                }
            }
        }
    }

    /// The points whose parts came in since the last take, as OTLP points;
    /// broken ones are counted in `rejections`. Once a second, parts waiting
    /// longer than [`PART_TTL`] are dropped and counted, and families unseen
    /// for long forgotten.
    pub(crate) fn take_complete(
        &mut self,
        now: Instant,
        rejections: &mut Rejections,
    ) -> Vec<(PointKey, HistogramDataPoint)> {
        let mut points = Vec::with_capacity(self.complete.len());
        for (key, partial) in self.complete.drain(..) {
            match point(&key, partial) {
                Ok(point) => points.push((key, point)),
                Err(rejection) => rejections.add(rejection, 1),
            }
        }
        // The waiting points' age, once a second at most: not per request.
        if self
            .swept
            .is_some_and(|at| now.saturating_duration_since(at) < SWEEP)
        {
            return points;
        }
        self.swept = Some(now);
        let expired: Vec<PointKey> = self
            .points
            .iter()
            .filter(|(_, p)| now.saturating_duration_since(p.since) >= PART_TTL)
            .map(|(key, _)| key.clone())
            .collect();
        for key in expired {
            if let Some(partial) = self.points.remove(&key) {
                rejections.add(
                    Rejection::new(
                        "incomplete_histogram",
                        format!(
                            "histogram {:?}: its +Inf bucket, sum or count did not come within {} s",
                            key.family,
                            PART_TTL.as_secs()
                        ),
                    ),
                    partial.samples,
                );
            }
        }
        self.families
            .retain(|_, seen| now.saturating_duration_since(*seen) < FAMILY_TTL);
        points
    }
}

/// The OTLP point of a complete set of parts.
fn point(key: &PointKey, mut partial: Partial) -> Result<HistogramDataPoint, Rejection> {
    let broken = |why: &str| {
        Rejection::new(
            "invalid_histogram",
            format!("histogram {:?}: {why}", key.family),
        )
    };
    partial.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    partial.buckets.dedup_by(|later, earlier| {
        // The last sample of a bound given twice wins.
        let same = later.0 == earlier.0;
        if same {
            earlier.1 = later.1;
        }
        same
    });
    let whole = |value: f64| value.is_finite() && value >= 0.0 && value.fract() == 0.0;
    let mut counts = Vec::with_capacity(partial.buckets.len());
    let mut below = 0.0;
    for &(_, cumulative) in &partial.buckets {
        if !whole(cumulative) || cumulative < below {
            return Err(broken(
                "bucket counts must be whole, not negative, and grow with le",
            ));
        }
        counts.push((cumulative - below) as u64);
        below = cumulative;
    }
    let sum = partial.sum.filter(|s| s.is_finite());
    Ok(HistogramDataPoint {
        attributes: key
            .attributes
            .iter()
            .map(|(name, value)| string_attribute(name, value))
            .collect::<Vec<KeyValue>>(),
        time_unix_nano: u64::try_from(key.time_ms)
            .unwrap_or(0)
            .saturating_mul(1_000_000),
        count: below as u64,
        sum,
        bucket_counts: counts,
        explicit_bounds: partial
            .buckets
            .iter()
            .map(|(bound, _)| *bound)
            .filter(|bound| bound.is_finite())
            .collect(),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(time_ms: i64) -> PointKey {
        PointKey {
            job: "api".into(),
            instance: "h:9090".into(),
            family: "rpc_seconds".into(),
            attributes: vec![("code".into(), "200".into())],
            time_ms,
        }
    }

    #[test]
    fn parts_split_over_requests_make_one_point() {
        let mut gathering = Gathering::default();
        let mut rejections = Rejections::default();
        let now = Instant::now();
        gathering.saw_buckets(["rpc_seconds"], now);
        assert_eq!(
            gathering.part("rpc_seconds_sum", None),
            Some(("rpc_seconds".into(), Part::Sum))
        );
        assert_eq!(gathering.part("other_sum", None), None, "a summary's sum");
        for (bound, cumulative) in [(0.1, 2.0), (0.5, 5.0)] {
            gathering.add(
                key(1),
                Part::Bucket(bound),
                cumulative,
                now,
                &mut rejections,
            );
        }
        assert!(gathering.take_complete(now, &mut rejections).is_empty());
        // The rest in the next request; the 1.0 bucket was lost.
        gathering.add(
            key(1),
            Part::Bucket(f64::INFINITY),
            7.0,
            now,
            &mut rejections,
        );
        gathering.add(key(1), Part::Sum, 3.5, now, &mut rejections);
        gathering.add(key(1), Part::Count, 7.0, now, &mut rejections);
        let points = gathering.take_complete(now, &mut rejections);
        assert_eq!(points.len(), 1);
        let point = &points[0].1;
        assert_eq!(point.explicit_bounds, [0.1, 0.5]);
        assert_eq!(point.bucket_counts, [2, 3, 2]);
        assert_eq!((point.count, point.sum), (7, Some(3.5)));
        assert_eq!(point.time_unix_nano, 1_000_000);
        assert_eq!(rejections.count(), 0);
    }

    #[test]
    fn broken_and_incomplete_points_are_counted() {
        let mut gathering = Gathering::default();
        let mut rejections = Rejections::default();
        let now = Instant::now();
        for (bound, cumulative) in [(0.1, 5.0), (f64::INFINITY, 3.0)] {
            gathering.add(
                key(1),
                Part::Bucket(bound),
                cumulative,
                now,
                &mut rejections,
            );
        }
        gathering.add(key(1), Part::Sum, 1.0, now, &mut rejections);
        gathering.add(key(1), Part::Count, 3.0, now, &mut rejections);
        gathering.add(key(2), Part::Bucket(0.1), 1.0, now, &mut rejections);
        assert!(gathering.take_complete(now, &mut rejections).is_empty());
        assert!(
            gathering
                .take_complete(now + PART_TTL, &mut rejections)
                .is_empty()
        );
        let reasons: Vec<(&str, u64)> = rejections.by_reason().collect();
        assert_eq!(
            reasons,
            [("incomplete_histogram", 1), ("invalid_histogram", 1)]
        );
    }
}
