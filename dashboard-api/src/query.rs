//! `GET /api/v1/query`: series of points computed from stored rollups.
//!
//! The rows of one width (the widest of 1 h, 1 min and 10 s that divides the
//! step) are filtered by label matchers, grouped by the `group_by` labels and
//! by step, and merged — counts, sums and distributions add up — before a
//! signal is read from each merged rollup. Quantiles therefore come from the
//! merged distribution of every point in the step, never from averaging
//! per-window quantiles.

use std::collections::BTreeMap;

use vigil_core::model::{Kind, Rollup};
use vigil_core::store::{StoredRollup, WIDTHS};

/// The widest range one query may cover.
pub const MAX_RANGE_S: u64 = 400 * 86_400;
/// The most steps one query may return per series.
pub const MAX_POINTS: u64 = 11_000;

/// A query parameter that cannot be used, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("parameter {parameter}: {reason}")]
pub struct BadParameter {
    pub parameter: String,
    pub reason: String,
}

impl BadParameter {
    pub fn new(parameter: impl Into<String>, reason: impl Into<String>) -> Self {
        BadParameter {
            parameter: parameter.into(),
            reason: reason.into(),
        }
    }
}

/// What is read from each merged rollup.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Signal {
    /// Points (spans, samples, events).
    Count,
    /// Sum of the values: for counters, the increase.
    Sum,
    /// Points per second.
    Rate,
    Mean,
    Min,
    Max,
    /// Failed points over all points.
    ErrorRatio,
    /// 1 − error ratio.
    Availability,
    /// A quantile of the values, 0 < q < 1.
    Quantile(f64),
}

impl Signal {
    /// Every signal name the API accepts.
    pub const NAMES: [&'static str; 13] = [
        "count",
        "sum",
        "rate",
        "mean",
        "min",
        "max",
        "error_ratio",
        "availability",
        "p50",
        "p90",
        "p95",
        "p99",
        "p999",
    ];

    pub fn parse(name: &str) -> Option<Signal> {
        Some(match name {
            "count" => Signal::Count,
            "sum" => Signal::Sum,
            "rate" => Signal::Rate,
            "mean" => Signal::Mean,
            "min" => Signal::Min,
            "max" => Signal::Max,
            "error_ratio" => Signal::ErrorRatio,
            "availability" => Signal::Availability,
            "p50" => Signal::Quantile(0.5),
            "p90" => Signal::Quantile(0.9),
            "p95" => Signal::Quantile(0.95),
            "p99" => Signal::Quantile(0.99),
            "p999" => Signal::Quantile(0.999),
            _ => return None,
        })
    }

    /// The signal's value over a step of `step_s` seconds; `None` without
    /// points.
    pub fn value(self, rollup: &Rollup, step_s: u64) -> Option<f64> {
        let values = &rollup.values;
        let count = values.count();
        if count == 0 {
            return None;
        }
        let errors = rollup.errors as f64 / count as f64;
        match self {
            Signal::Count => Some(count as f64),
            Signal::Sum => Some(values.sum()),
            Signal::Rate => Some(count as f64 / step_s as f64),
            Signal::Mean => values.mean(),
            Signal::Min => values.min(),
            Signal::Max => values.max(),
            Signal::ErrorRatio => Some(errors),
            Signal::Availability => Some(1.0 - errors),
            Signal::Quantile(q) => values.quantile(q),
        }
    }
}

/// One label matcher of `filter`: `key="value"` or `key!="value"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Matcher {
    pub key: String,
    pub value: String,
    pub equal: bool,
}

impl Matcher {
    fn matches(&self, value: Option<&str>) -> bool {
        (value.unwrap_or("") == self.value) == self.equal
    }
}

/// Parses `key="value",key!="value",…`; values are double-quoted, with `\"`
/// and `\\` inside.
pub fn parse_filter(text: &str) -> Result<Vec<Matcher>, String> {
    let mut matchers = Vec::new();
    let mut rest = text.trim();
    while !rest.is_empty() {
        let operator = rest
            .find(['=', '!'])
            .ok_or_else(|| format!("expected key=\"value\" at {rest:?}"))?;
        let key = rest[..operator].trim();
        let plain_key = !key.is_empty()
            && key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if !plain_key {
            return Err(format!("{key:?} is not a label name"));
        }
        let (equal, after) = if rest[operator..].starts_with("!=") {
            (false, &rest[operator + 2..])
        } else {
            (true, &rest[operator + 1..])
        };
        let mut chars = after.trim_start().char_indices();
        if chars.next().map(|(_, c)| c) != Some('"') {
            return Err(format!("the value of {key} must be double-quoted"));
        }
        let quoted = after.trim_start();
        let mut value = String::new();
        let mut end = None;
        let mut escaped = false;
        for (i, c) in chars {
            match (escaped, c) {
                (true, _) => {
                    value.push(c);
                    escaped = false;
                }
                (false, '\\') => escaped = true,
                (false, '"') => {
                    end = Some(i);
                    break;
                }
                (false, _) => value.push(c),
            }
        }
        let end = end.ok_or_else(|| format!("the value of {key} has no closing quote"))?;
        matchers.push(Matcher {
            key: key.to_owned(),
            value,
            equal,
        });
        rest = quoted[end + 1..].trim_start();
        if let Some(next) = rest.strip_prefix(',') {
            rest = next.trim_start();
        } else if !rest.is_empty() {
            return Err(format!("expected , between matchers at {rest:?}"));
        }
    }
    Ok(matchers)
}

/// A validated query.
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    pub kind: Kind,
    pub name: Option<String>,
    pub service: Option<String>,
    pub filter: Vec<Matcher>,
    pub group_by: Vec<String>,
    pub signal: Signal,
    /// `[from_s, to_s)`, aligned to the step.
    pub from_s: u64,
    pub to_s: u64,
    pub step_s: u64,
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
        kind: Kind,
        signal: Signal,
        (from_s, to_s): (u64, u64),
        step_s: u64,
    ) -> Result<Query, BadParameter> {
        if step_s == 0 || !step_s.is_multiple_of(10) {
            return Err(BadParameter::new(
                "step",
                format!("must be a positive multiple of 10 s, got {step_s} s"),
            ));
        }
        if from_s >= to_s {
            return Err(BadParameter::new("from", "must be before to"));
        }
        if to_s - from_s > MAX_RANGE_S {
            return Err(BadParameter::new(
                "to",
                format!(
                    "the range is {} days; at most 400 days",
                    (to_s - from_s).div_ceil(86_400)
                ),
            ));
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
            kind,
            name: None,
            service: None,
            filter: Vec::new(),
            group_by: Vec::new(),
            signal,
            from_s,
            to_s,
            step_s,
        })
    }

    /// The rollup width to read: the widest that divides the step.
    pub fn width_s(&self) -> u32 {
        WIDTHS
            .iter()
            .rev()
            .copied()
            .find(|&width| self.step_s.is_multiple_of(u64::from(width)))
            .unwrap_or(WIDTHS[0])
    }

    /// The series of `rows` (one width, as the store returns them): filtered,
    /// grouped, merged per step, then the signal read; groups in label order,
    /// points in time order, steps without points left out.
    pub fn evaluate(&self, rows: &[StoredRollup]) -> Vec<Series> {
        let mut groups: BTreeMap<Vec<(String, String)>, BTreeMap<u64, Rollup>> = BTreeMap::new();
        for row in rows {
            let series = &row.series;
            let selected = series.kind == self.kind
                && self.name.as_ref().is_none_or(|name| *name == series.name)
                && self
                    .service
                    .as_ref()
                    .is_none_or(|service| *service == series.service)
                && row.start_s >= self.from_s
                && row.start_s < self.to_s
                && self.filter.iter().all(|m| m.matches(label(series, &m.key)));
            if !selected {
                continue;
            }
            let group = self
                .group_by
                .iter()
                .map(|key| (key.clone(), label(series, key).unwrap_or("").to_owned()))
                .collect();
            let step = row.start_s - (row.start_s - self.from_s) % self.step_s;
            groups
                .entry(group)
                .or_default()
                .entry(step)
                .or_default()
                .merge(&row.rollup);
        }
        groups
            .into_iter()
            .map(|(labels, steps)| Series {
                labels,
                points: steps
                    .iter()
                    .filter_map(|(&start, rollup)| {
                        Some((start, self.signal.value(rollup, self.step_s)?))
                    })
                    .collect(),
            })
            .filter(|series| !series.points.is_empty())
            .collect()
    }
}

/// A series' label, where `service.name` and the series name count too.
fn label<'a>(series: &'a vigil_core::model::SeriesKey, key: &str) -> Option<&'a str> {
    match key {
        "service.name" => Some(&series.service),
        "name" => Some(&series.name),
        _ => series.label(key),
    }
}

#[cfg(test)]
mod tests {
    use vigil_core::distribution::RELATIVE_ERROR;
    use vigil_core::model::SeriesKey;
    use vigil_core::tenant::TenantId;

    use super::*;

    fn row(service: &str, unit: &str, start_s: u64, values: &[f64], errors: u64) -> StoredRollup {
        let mut rollup = Rollup::default();
        for (i, &value) in values.iter().enumerate() {
            rollup
                .record(value, (i as u64) < errors)
                .expect("finite values");
        }
        StoredRollup {
            series: SeriesKey::new(
                TenantId::parse("acme").expect("tenant"),
                Kind::Span,
                service,
                "POST /pay",
                vec![("vigil.unit".into(), unit.into())],
            ),
            width_s: 10,
            start_s,
            rollup,
        }
    }

    #[test]
    fn steps_merge_windows_before_reading_the_signal() {
        // Two 10 s windows in one 60 s step: the p50 of all twenty values,
        // not the mean of two medians.
        let first: Vec<f64> = (1..=10).map(f64::from).collect();
        let second: Vec<f64> = (91..=100).map(f64::from).collect();
        let rows = vec![
            row("pay", "u1", 1_000_020, &first, 1),
            row("pay", "u2", 1_000_030, &second, 3),
            row("pay", "u1", 1_000_090, &first, 0),
        ];
        let mut query = Query::new(
            Kind::Span,
            Signal::Quantile(0.5),
            (1_000_000, 1_000_120),
            60,
        )
        .expect("valid");
        assert_eq!(query.width_s(), 60);
        let series = query.evaluate(&rows);
        assert_eq!(series.len(), 1);
        let (start, p50) = series[0].points[0];
        assert_eq!(start, 999_960 + 60);
        assert!((p50 - 10.0).abs() <= 10.0 * RELATIVE_ERROR, "p50 {p50}");
        assert_eq!(series[0].points.len(), 2);

        query.signal = Signal::ErrorRatio;
        query.group_by = vec!["vigil.unit".into()];
        let series = query.evaluate(&rows);
        let ratios: Vec<(&str, Vec<(u64, f64)>)> = series
            .iter()
            .map(|s| (s.labels[0].1.as_str(), s.points.clone()))
            .collect();
        assert_eq!(
            ratios,
            vec![
                ("u1", vec![(1_000_020, 0.1), (1_000_080, 0.0)]),
                ("u2", vec![(1_000_020, 0.3)])
            ]
        );

        query.signal = Signal::Rate;
        query.group_by.clear();
        query.filter = parse_filter(r#"vigil.unit!="u2""#).expect("parses");
        let rates = query.evaluate(&rows);
        assert_eq!(
            rates[0].points,
            vec![(1_000_020, 10.0 / 60.0), (1_000_080, 10.0 / 60.0)]
        );
    }

    #[test]
    fn the_step_picks_the_widest_rollup_that_divides_it() {
        let width = |step| {
            Query::new(Kind::Span, Signal::Count, (0, 86_400), step)
                .expect("valid")
                .width_s()
        };
        assert_eq!(
            (width(10), width(30), width(60), width(600), width(7200)),
            (10, 10, 60, 60, 3600)
        );
    }

    #[test]
    fn bad_ranges_and_steps_name_the_parameter() {
        let error = |from, to, step| {
            Query::new(Kind::Span, Signal::Count, (from, to), step).expect_err("refused")
        };
        assert_eq!(error(10, 5, 10).parameter, "from");
        assert_eq!(error(0, 60, 15).parameter, "step");
        assert_eq!(
            error(0, 401 * 86_400, 86_400).to_string(),
            "parameter to: the range is 401 days; at most 400 days"
        );
        assert_eq!(
            error(0, 86_400 * 2, 10).to_string(),
            "parameter step: 17280 points per series; at most 11000: use a longer step"
        );
    }

    #[test]
    fn filters_parse_quoted_values_and_refuse_the_rest() {
        let matchers =
            parse_filter(r#"vigil.unit="u1", http.route!="/a \"b\", c""#).expect("parses");
        assert_eq!(
            matchers,
            vec![
                Matcher {
                    key: "vigil.unit".into(),
                    value: "u1".into(),
                    equal: true
                },
                Matcher {
                    key: "http.route".into(),
                    value: "/a \"b\", c".into(),
                    equal: false
                },
            ]
        );
        assert!(parse_filter("").expect("empty is no filter").is_empty());
        for bad in [
            "unit=u1",
            r#"="u1""#,
            r#"unit="u1"#,
            r#"unit="u1" x="y""#,
            r#"a b="c""#,
        ] {
            assert!(parse_filter(bad).is_err(), "{bad} accepted");
        }
    }
}
