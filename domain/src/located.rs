//! A signal's change explained: the groups of merged rollups (one per
//! combination of the dimensions' values) over a range and its baseline
//! made into the leaves of [`crate::localize`], and its causes given back
//! as labels with the signal's own values. Shared by the API's
//! `/api/v1/localize` and the alerter's located causes; the reads are the
//! caller's.
//!
//! A leaf's measure, by signal:
//!
//! - `count`, `rate`, `sum`: additive; its expected value is its baseline
//!   value scaled to the range's length;
//! - `error_ratio`, `availability`: its failed points, expected as its
//!   points in the range at its baseline error ratio (the whole baseline's
//!   for a leaf new in the range), so traffic moving between leaves is not
//!   taken for a cause and a drop of availability is a rise of failures;
//! - `p50`…`p999`: its points above the baseline's quantile of every leaf,
//!   expected as its points at its baseline share above it.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

use crate::localize::{Leaf, Settings, localize};
use crate::model::{Rollup, SeriesKey};
use crate::signal::{Signal, label_of};

/// Groups' rollups by the values of the dimensions, in their order.
pub type Groups = HashMap<Vec<String>, Rollup>;

/// A cause, as people read it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Located {
    /// One value of each of some dimensions.
    pub labels: BTreeMap<String, String>,
    /// The signal under these labels over the range, and what was expected
    /// of it (a ratio for ratios, a count for counts).
    pub actual: f64,
    pub expected: f64,
    /// Its share of the whole change.
    pub share: f64,
    /// Its risk score.
    pub score: f64,
}

/// What [`explain`] found.
#[derive(Debug, Clone, PartialEq)]
pub struct Explained {
    pub causes: Vec<Located>,
    pub actual_total: f64,
    pub expected_total: f64,
    pub leaves: usize,
}

/// The most dimensions one localization searches (2^12 − 1 cuboids).
pub const MAX_DIMENSIONS: usize = 12;

/// What a leaf's measure is made of: the signals that can be localized
/// (counts, rates, sums, error ratios, availability and quantiles; not
/// means or extremes).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Measure {
    /// Additive: points, or the sum of their values.
    Additive(Signal),
    /// Failed points, judged as a ratio (`true`: shown as availability).
    Failures(bool),
    /// Points above the baseline's quantile.
    Above(f64),
    /// Points above a fixed value: a latency objective's slow points.
    Over(f64),
}

impl Measure {
    /// The measure localizing `signal`, if it can be.
    pub fn of(signal: Signal) -> Option<Measure> {
        match signal {
            Signal::Count | Signal::Rate | Signal::Sum => Some(Measure::Additive(signal)),
            Signal::ErrorRatio => Some(Measure::Failures(false)),
            Signal::Availability => Some(Measure::Failures(true)),
            Signal::Quantile(q) => Some(Measure::Above(q)),
            Signal::Mean | Signal::Min | Signal::Max => None,
        }
    }
}

/// The labels of `series` that take two values or more, the series' own
/// `service.name` and `name` among them; a span's `status` is left out of
/// ratios, which it explains trivially, and so are the labels of `fixed`.
pub fn dimensions<'a>(
    series: impl IntoIterator<Item = &'a SeriesKey>,
    measure: Measure,
    fixed: &[String],
) -> Vec<String> {
    let mut values: BTreeMap<String, BTreeSet<&str>> = BTreeMap::new();
    for series in series {
        let own = ["service.name", "name"].map(|k| (k.to_owned(), label_of(series, k)));
        for (key, value) in series
            .labels()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str()))
            .chain(own)
        {
            values.entry(key).or_default().insert(value);
        }
    }
    let ratio = matches!(measure, Measure::Failures(_));
    values
        .into_iter()
        .filter(|(key, values)| {
            values.len() > 1 && !(ratio && key == "status") && !fixed.contains(key)
        })
        .map(|(key, _)| key)
        .collect()
}

/// The causes of the measure's change from `before` (over `baseline_s`
/// seconds) to `now` (over `range_s`), groups keyed by the values of
/// `dimensions`.
pub fn explain(
    measure: Measure,
    dimensions: &[String],
    now: &Groups,
    before: &Groups,
    (range_s, baseline_s): (u64, u64),
    max_causes: usize,
) -> Explained {
    let scale = range_s as f64 / baseline_s.max(1) as f64;
    let mut whole = Rollup::default();
    for rollup in before.values() {
        whole.merge(rollup);
    }
    let threshold = match measure {
        Measure::Above(q) => whole.values.quantile(q),
        Measure::Over(bound) => Some(bound),
        _ => None,
    };
    // Every group seen in either range is a leaf; each dimension's values
    // are numbered as they come.
    let mut index: Vec<Vec<String>> = vec![Vec::new(); dimensions.len()];
    let mut numbers: Vec<HashMap<&str, u32>> = vec![HashMap::new(); dimensions.len()];
    let mut leaves = Vec::new();
    let mut points = Vec::new();
    let groups: BTreeSet<&Vec<String>> = now.keys().chain(before.keys()).collect();
    let empty = Rollup::default();
    for group in groups {
        let values = group
            .iter()
            .enumerate()
            .map(|(d, value)| {
                *numbers[d].entry(value).or_insert_with(|| {
                    index[d].push(value.clone());
                    index[d].len() as u32 - 1
                })
            })
            .collect();
        let (in_range, in_baseline) = (
            now.get(group).unwrap_or(&empty),
            before.get(group).unwrap_or(&empty),
        );
        let (actual, expected) = leaf_values(
            measure,
            (in_range, in_baseline, &whole),
            scale,
            threshold,
            range_s,
        );
        points.push(in_range.values.count());
        leaves.push(Leaf {
            values,
            actual,
            expected,
            seen: in_range.values.count() + in_baseline.values.count() > 0,
        });
    }
    let sizes: Vec<u32> = index.iter().map(|values| values.len() as u32).collect();
    let settings = Settings {
        max_causes,
        ..Settings::default()
    };
    // A cause's signal: the measure itself when additive, else over its
    // points in the range.
    let shown = |actual: f64, expected: f64, points: u64| match measure {
        Measure::Additive(_) => (actual, expected),
        _ if points == 0 => (0.0, 0.0),
        Measure::Failures(availability) => {
            let (a, e) = (actual / points as f64, expected / points as f64);
            if availability {
                (1.0 - a, 1.0 - e)
            } else {
                (a, e)
            }
        }
        Measure::Above(_) | Measure::Over(_) => (actual / points as f64, expected / points as f64),
    };
    let causes = localize(&sizes, &leaves, settings)
        .into_iter()
        .map(|cause| {
            let labels = cause
                .element
                .iter()
                .map(|&(d, v)| (dimensions[d].clone(), index[d][v as usize].clone()))
                .collect();
            let under: u64 = leaves
                .iter()
                .zip(&points)
                .filter(|(leaf, _)| cause.element.iter().all(|&(d, v)| leaf.values[d] == v))
                .map(|(_, &p)| p)
                .sum();
            let (actual, expected) = shown(cause.actual, cause.expected, under);
            Located {
                labels,
                actual,
                expected,
                share: cause.share,
                score: cause.score,
            }
        })
        .collect();
    let (actual_total, expected_total) = shown(
        leaves.iter().map(|l| l.actual).sum(),
        leaves.iter().map(|l| l.expected).sum(),
        points.iter().sum(),
    );
    Explained {
        causes,
        actual_total,
        expected_total,
        leaves: leaves.len(),
    }
}

/// A leaf's actual and expected measure from its rollups in the range and
/// the baseline, and every leaf's baseline (`whole`).
fn leaf_values(
    measure: Measure,
    (now, before, whole): (&Rollup, &Rollup, &Rollup),
    scale: f64,
    threshold: Option<f64>,
    range_s: u64,
) -> (f64, f64) {
    let points = now.values.count() as f64;
    // A leaf's baseline, the whole baseline's for a leaf without one.
    let base = if before.values.count() > 0 {
        before
    } else {
        whole
    };
    let share_of = |part: f64| {
        let all = base.values.count();
        if all == 0 { 0.0 } else { part / all as f64 }
    };
    match measure {
        Measure::Additive(signal) => {
            let read = |rollup: &Rollup| match signal {
                Signal::Sum => rollup.values.sum(),
                Signal::Rate => rollup.values.count() as f64 / range_s as f64,
                _ => rollup.values.count() as f64,
            };
            (read(now), read(before) * scale)
        }
        Measure::Failures(_) => (now.errors as f64, points * share_of(base.errors as f64)),
        Measure::Above(_) | Measure::Over(_) => {
            let Some(threshold) = threshold else {
                return (0.0, 0.0);
            };
            let above = |rollup: &Rollup| rollup.values.count_above(threshold) as f64;
            (above(now), points * share_of(above(base)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` points of `ms`.
    fn points(n: u64, ms: f64) -> Rollup {
        let mut rollup = Rollup::default();
        for _ in 0..n {
            rollup.record(ms, false).expect("finite");
        }
        rollup
    }

    #[test]
    fn slow_points_over_a_fixed_bound_are_located() {
        let group = |unit: &str, route: &str| vec![unit.to_owned(), route.to_owned()];
        let dimensions = vec!["vigil.unit".to_owned(), "http.route".to_owned()];
        let mut before = Groups::new();
        let mut now = Groups::new();
        for unit in ["u1", "u2", "u3"] {
            for route in ["/pay", "/orders"] {
                let mut base = points(990, 50.0);
                base.merge(&points(10, 400.0));
                before.insert(group(unit, route), base);
                // u2's /pay: half its points over 300 ms now.
                let slow = if (unit, route) == ("u2", "/pay") {
                    50
                } else {
                    1
                };
                let mut recent = points(100 - slow, 50.0);
                recent.merge(&points(slow, 400.0));
                now.insert(group(unit, route), recent);
            }
        }
        let explained = explain(
            Measure::Over(300.0),
            &dimensions,
            &now,
            &before,
            (60, 600),
            3,
        );
        let causes: Vec<(&BTreeMap<String, String>, f64, f64)> = explained
            .causes
            .iter()
            .map(|c| (&c.labels, c.actual, c.expected))
            .collect();
        let labels: BTreeMap<String, String> = [("http.route", "/pay"), ("vigil.unit", "u2")]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .into();
        // Of its 100 points 50 were slow; 1 in 100 were before.
        assert_eq!(causes, vec![(&labels, 0.5, 0.01)]);
    }
}
