//! Signals read from rollups (counts, rates, ratios, quantiles) and the
//! label matchers that select series: the one vocabulary of the query API
//! and the alerter's rules.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::model::{Rollup, SeriesKey};

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

    /// Whether the signal's value grows with its window (count, sum) or
    /// needs the window's length (rate): such a signal cannot be judged
    /// over a window that is still filling.
    pub fn is_extensive(self) -> bool {
        matches!(self, Signal::Count | Signal::Sum | Signal::Rate)
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

/// Whether `key` may name a label: ASCII letters, digits, `.`, `_`, `-`.
pub fn is_label_name(key: &str) -> bool {
    !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
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
        if !is_label_name(key) {
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
            name: key.to_owned(),
            value,
            is_equal: equal,
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

/// What makes an event good for an objective (an SLO, a burn-rate rule).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Sli {
    /// It did not fail.
    #[default]
    Availability,
    /// It took at most the threshold.
    Latency,
}

impl Sli {
    /// The latency threshold of an objective on this SLI, checked: a
    /// latency SLI needs a finite threshold above 0 ms, an availability SLI
    /// has none. The one check of the configuration's SLOs and the
    /// alerter's burn-rate rules.
    pub fn threshold(self, threshold_ms: Option<f64>) -> Result<Option<f64>, &'static str> {
        match (self, threshold_ms) {
            (Sli::Latency, Some(ms)) if ms.is_finite() && ms > 0.0 => Ok(Some(ms)),
            (Sli::Latency, _) => Err("a latency objective needs threshold_ms above 0"),
            (Sli::Availability, Some(_)) => {
                Err("only a latency objective has threshold_ms; remove it or set sli to latency")
            }
            (Sli::Availability, None) => Ok(None),
        }
    }
}

/// One label matcher: the label `name` equals `value` (`is_equal`, the
/// default) or differs from it; a missing label reads as "". The one matcher
/// of query filters, rules, silences and inhibitions, for series and alerts
/// alike (see [`Labels`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Matcher {
    pub name: String,
    pub value: String,
    #[serde(default = "yes")]
    pub is_equal: bool,
}

fn yes() -> bool {
    true
}

impl Matcher {
    /// `name` equals `value`.
    pub fn equal(name: impl Into<String>, value: impl Into<String>) -> Self {
        Matcher {
            name: name.into(),
            value: value.into(),
            is_equal: true,
        }
    }

    pub fn matches(&self, labels: &impl Labels) -> bool {
        (labels.label(&self.name) == self.value) == self.is_equal
    }
}

/// Whatever carries labels a [`Matcher`] reads: a series, an alert's label
/// set.
pub trait Labels {
    /// The label's value, "" when there is none.
    fn label(&self, name: &str) -> &str;
}

impl Labels for SeriesKey {
    fn label(&self, name: &str) -> &str {
        label_of(self, name)
    }
}

impl Labels for BTreeMap<String, String> {
    fn label(&self, name: &str) -> &str {
        self.get(name).map_or("", String::as_str)
    }
}

/// A series' label as matchers and groups see it: `service.name` and `name`
/// are its service and name; a label it does not have is "".
pub fn label_of<'a>(series: &'a SeriesKey, key: &str) -> &'a str {
    match key {
        "service.name" => &series.service,
        "name" => &series.name,
        _ => series.label(key).unwrap_or(""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_parse_quoted_values_and_refuse_the_rest() {
        let matchers =
            parse_filter(r#"vigil.unit="u1", http.route!="/a \"b\", c""#).expect("parses");
        assert_eq!(
            matchers,
            vec![
                Matcher {
                    name: "vigil.unit".into(),
                    value: "u1".into(),
                    is_equal: true
                },
                Matcher {
                    name: "http.route".into(),
                    value: "/a \"b\", c".into(),
                    is_equal: false
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
