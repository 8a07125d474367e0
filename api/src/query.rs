//! `GET /api/v1/query`: series of a signal, computed from merged rollups.
//!
//! The store merges the selected series' rollups per group (the values of
//! the `group_by` labels) and per step — counts, sums and distributions add
//! up — and a signal is read from each merged rollup. Quantiles therefore
//! come from the merged distribution of every point in the step, never from
//! averaging per-window quantiles.
//!
//! Which rollups: a step is covered by the widest windows that divide it and
//! have closed (1 h, then 1 min), and by 10 s windows for the part still
//! open, so the newest step is as fresh as the last flush (see [`cover`]).

use std::collections::BTreeMap;

use vigil_domain::model::{Kind, Rollup};
use vigil_domain::signal::Signal;
use vigil_domain::signal::{Matcher, parse_filter};
use vigil_store::WIDTHS;

use crate::error::BadParameter;
use crate::params::Params;

/// The widest range one query may cover.
pub const MAX_RANGE_S: u64 = 400 * 86_400;
/// The most steps one query may return per series.
pub const MAX_POINTS: u64 = 11_000;

/// Which series to read and how to group them.
#[derive(Debug, Clone, PartialEq)]
pub struct Selection {
    pub kind: Kind,
    pub service: Option<String>,
    pub name: Option<String>,
    pub matchers: Vec<Matcher>,
    pub group_by: Vec<String>,
    /// Whether the read needs the distributions' buckets (quantiles); the
    /// store skips them otherwise.
    pub buckets: bool,
}

impl Selection {
    pub fn new(kind: Kind) -> Self {
        Selection {
            kind,
            service: None,
            name: None,
            matchers: Vec::new(),
            group_by: Vec::new(),
            buckets: true,
        }
    }

    /// The selection of a request's `kind`, `name`, `service` and `filter`.
    pub fn from_params(params: &Params) -> Result<Selection, BadParameter> {
        let kind_name = params.get("kind").ok_or_else(|| {
            BadParameter::new(
                "kind",
                "required: span, metric, client, probe, service or tenant",
            )
        })?;
        let kind = Kind::parse(kind_name).ok_or_else(|| {
            BadParameter::new(
                "kind",
                format!(
                    "unknown kind {kind_name:?}; use span, metric, client, probe, service or tenant"
                ),
            )
        })?;
        Ok(Selection {
            name: params.text("name"),
            service: params.text("service"),
            matchers: parse_filter(params.get("filter").unwrap_or(""))
                .map_err(|e| BadParameter::new("filter", e))?,
            ..Selection::new(kind)
        })
    }

    /// Only series whose label `key` is `value`.
    pub fn matching(mut self, key: &str, value: &str) -> Self {
        self.matchers.push(Matcher::equal(key, value));
        self
    }

    pub fn grouped_by(mut self, keys: &[&str]) -> Self {
        self.group_by = keys.iter().map(|&key| key.to_owned()).collect();
        self
    }
}

/// Rollups merged per group and step (step start, unix seconds).
pub type Merged = BTreeMap<(Vec<String>, u64), Rollup>;

/// A validated query.
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    pub selection: Selection,
    pub signal: Signal,
    /// `[from_s, to_s)`, aligned to the step — unless the step holds the
    /// whole range, which is then read exactly as asked.
    pub from_s: u64,
    pub to_s: u64,
    pub step_s: u64,
    /// One step over exactly `[from_s, to_s)`: a step at least as long as
    /// the range (aligned steps would split it in two and reach outside it).
    pub whole: bool,
}

/// One series of the answer: its group's label values and its points
/// (step start, unix seconds; value).
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub labels: Vec<(String, String)>,
    pub points: Vec<(u64, f64)>,
}

impl Query {
    /// A query over `[from_s, to_s)` by `step_s`, checking what every query
    /// must respect: a step that is a whole number of 10 s, `from < to`, at
    /// most [`MAX_RANGE_S`] and [`MAX_POINTS`] steps.
    pub fn new(
        selection: Selection,
        signal: Signal,
        (from_s, to_s): (u64, u64),
        step_s: u64,
    ) -> Result<Query, BadParameter> {
        if step_s == 0 || !step_s.is_multiple_of(10) {
            return Err(BadParameter::new(
                "step",
                format!("must be a positive multiple of 10 s (10000 ms), got {step_s} s"),
            ));
        }
        if from_s >= to_s {
            return Err(BadParameter::new("from", "must be before to"));
        }
        if to_s - from_s > MAX_RANGE_S {
            return Err(BadParameter::new(
                "to",
                format!(
                    "the range is {:.1} days; at most 400 days",
                    (to_s - from_s) as f64 / 86_400.0
                ),
            ));
        }
        if step_s >= to_s - from_s {
            return Ok(Query {
                selection,
                signal,
                from_s,
                to_s,
                step_s: to_s - from_s,
                whole: true,
            });
        }
        let from_s = from_s - from_s % step_s;
        let to_s = to_s.div_ceil(step_s) * step_s;
        let steps = (to_s - from_s) / step_s;
        if steps > MAX_POINTS {
            return Err(BadParameter::new(
                "step",
                format!("{steps} points per series; at most {MAX_POINTS}: use a longer step"),
            ));
        }
        Ok(Query {
            selection,
            signal,
            from_s,
            to_s,
            step_s,
            whole: false,
        })
    }

    /// The step the store merges by: none for one step over the whole
    /// range.
    pub fn store_step(&self) -> Option<u64> {
        (!self.whole).then_some(self.step_s)
    }

    /// The series of merged rollups: groups in label order, points in time
    /// order, steps without points left out.
    pub fn series(&self, merged: &Merged) -> Vec<Series> {
        let mut series: Vec<Series> = Vec::new();
        for ((group, start), rollup) in merged {
            let Some(value) = self.signal.value(rollup, self.step_s) else {
                continue;
            };
            let labels: Vec<(String, String)> = self
                .selection
                .group_by
                .iter()
                .cloned()
                .zip(group.iter().cloned())
                .collect();
            match series.last_mut() {
                Some(last) if last.labels == labels => last.points.push((*start, value)),
                _ => series.push(Series {
                    labels,
                    points: vec![(*start, value)],
                }),
            }
        }
        series
    }
}

/// The rollup widths that fit in a step, widest first: those dividing it,
/// or every width without a step.
pub fn widths(step_s: Option<u64>) -> Vec<u32> {
    WIDTHS
        .iter()
        .rev()
        .copied()
        .filter(|&width| step_s.is_none_or(|step| step.is_multiple_of(u64::from(width))))
        .collect()
}

/// One store read: windows of one width starting in `[from_s, to_s)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    pub width_s: u32,
    pub from_s: u64,
    pub to_s: u64,
}

/// The reads that cover `[from_s, to_s)` (aligned to the narrowest width)
/// with the widest windows possible: each width in `widths` (widest first)
/// covers its whole windows inside the range that end by `closed_until`;
/// the narrowest covers the rest.
pub fn cover(from_s: u64, to_s: u64, widths: &[u32], closed_until: u64) -> Vec<Segment> {
    let Some((&width, narrower)) = widths.split_first() else {
        return Vec::new();
    };
    if from_s >= to_s {
        return Vec::new();
    }
    if narrower.is_empty() {
        return vec![Segment {
            width_s: width,
            from_s,
            to_s,
        }];
    }
    let w = u64::from(width);
    let start = from_s.div_ceil(w) * w;
    let end = to_s.min(closed_until) / w * w;
    if start >= end {
        return cover(from_s, to_s, narrower, closed_until);
    }
    let mut segments = cover(from_s, start, narrower, closed_until);
    segments.push(Segment {
        width_s: width,
        from_s: start,
        to_s: end,
    });
    segments.extend(cover(end, to_s, narrower, closed_until));
    segments
}

#[cfg(test)]
mod tests {
    use vigil_domain::distribution::RELATIVE_ERROR;

    use super::*;

    fn rollup(values: &[f64], errors: u64) -> Rollup {
        let mut rollup = Rollup::default();
        for (i, &value) in values.iter().enumerate() {
            rollup
                .record(value, (i as u64) < errors)
                .expect("finite values");
        }
        rollup
    }

    fn query(signal: Signal, group_by: &[&str]) -> Query {
        let selection = Selection::new(Kind::Span).grouped_by(group_by);
        Query::new(selection, signal, (1_000_000, 1_000_120), 60).expect("valid")
    }

    #[test]
    fn signals_are_read_from_each_merged_step() {
        let mut merged = Merged::new();
        let mut both = rollup(&(1..=10).map(f64::from).collect::<Vec<_>>(), 1);
        both.merge(&rollup(&(91..=100).map(f64::from).collect::<Vec<_>>(), 3));
        merged.insert((vec!["u1".into()], 999_960), both);
        merged.insert((vec!["u1".into()], 1_000_020), rollup(&[5.0, 7.0], 0));
        merged.insert((vec!["u2".into()], 999_960), rollup(&[], 0));
        merged.insert((vec!["u2".into()], 1_000_020), rollup(&[3.0], 1));

        // The p50 of all twenty values, not the mean of two medians.
        let p50 = query(Signal::Quantile(0.5), &["vigil.unit"]).series(&merged);
        assert!((p50[0].points[0].1 - 10.0).abs() <= 10.0 * RELATIVE_ERROR);
        let ratios = query(Signal::ErrorRatio, &["vigil.unit"]).series(&merged);
        assert_eq!(
            ratios,
            vec![
                Series {
                    labels: vec![("vigil.unit".into(), "u1".into())],
                    points: vec![(999_960, 0.2), (1_000_020, 0.0)],
                },
                Series {
                    labels: vec![("vigil.unit".into(), "u2".into())],
                    points: vec![(1_000_020, 1.0)],
                },
            ],
            "an empty step has no point"
        );
        let rates = query(Signal::Rate, &["vigil.unit"]).series(&merged);
        assert_eq!(
            rates[0].points,
            vec![(999_960, 20.0 / 60.0), (1_000_020, 2.0 / 60.0)]
        );
    }

    #[test]
    fn a_step_reads_the_widths_that_divide_it() {
        assert_eq!(widths(Some(10)), vec![10]);
        assert_eq!(widths(Some(30)), vec![10]);
        assert_eq!(widths(Some(600)), vec![60, 10]);
        assert_eq!(widths(Some(7200)), vec![3600, 60, 10]);
        assert_eq!(widths(None), vec![3600, 60, 10]);
    }

    #[test]
    fn closed_wide_windows_cover_the_middle_and_narrow_ones_the_edges() {
        let segment = |width_s, from_s, to_s| Segment {
            width_s,
            from_s,
            to_s,
        };
        // Windows closed up to 10:58 (so hours up to 10:00), from 07:30 to
        // 11:00.
        assert_eq!(
            cover(27_000, 39_600, &[3600, 60, 10], 39_480),
            vec![
                segment(60, 27_000, 28_800),
                segment(3600, 28_800, 36_000),
                segment(60, 36_000, 39_480),
                segment(10, 39_480, 39_600),
            ]
        );
        // Nothing closed: all of it from 10 s windows.
        assert_eq!(
            cover(27_000, 27_600, &[3600, 60, 10], 0),
            vec![segment(10, 27_000, 27_600)]
        );
        // A range inside one hour, everything closed.
        assert_eq!(
            cover(27_010, 27_130, &[3600, 60, 10], u64::MAX),
            vec![
                segment(10, 27_010, 27_060),
                segment(60, 27_060, 27_120),
                segment(10, 27_120, 27_130),
            ]
        );
    }

    #[test]
    fn bad_ranges_and_steps_name_the_parameter() {
        let error = |from, to, step| {
            Query::new(Selection::new(Kind::Span), Signal::Count, (from, to), step)
                .expect_err("refused")
        };
        assert_eq!(error(10, 5, 10).parameter, "from");
        assert_eq!(error(0, 60, 15).parameter, "step");
        assert_eq!(
            error(0, 401 * 86_400, 86_400).to_string(),
            "parameter to: the range is 401.0 days; at most 400 days"
        );
        assert_eq!(
            error(0, 86_400 * 2, 10).to_string(),
            "parameter step: 17280 points per series; at most 11000: use a longer step"
        );
    }
}
