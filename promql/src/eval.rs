//! PromQL evaluated over windows of rollups.
//!
//! Vigil keeps no raw samples: a series is a run of windows (10 s, 1 min,
//! 1 h), each with its count, sum, min, max, failures and distribution. A
//! query is evaluated at every step `t` (milliseconds) over the windows
//! that start before `t`, as `names.rs` says each series reads them:
//!
//! - an instant selector takes the newest window starting before `t` and
//!   ending after `t − 5m`: a gauge's level is the mean of that window, a
//!   counter's value is its running total since the first window read (so
//!   use counters through `rate`/`increase`, as in Prometheus), a
//!   histogram's sample is the window's distribution;
//! - a range selector `[r]` takes the windows starting in `[t − r, t)`:
//!   `rate` and `increase` of a counter add up the windows' increases
//!   (each the exact increase between consecutive samples, so there is
//!   nothing to extrapolate), `*_over_time` of a gauge merge the windows'
//!   counts, sums, extremes and distributions; `rate` of a histogram merges
//!   its distributions;
//! - `histogram_quantile(φ, …)` reads the merged distribution (within
//!   `vigil_domain::distribution::RELATIVE_ERROR`), never interpolating
//!   between bucket bounds.
//!
//! Functions and operators follow Prometheus 2.42: names are dropped where
//! Prometheus drops them, matching with `on`/`ignoring`, `group_left` and
//! `group_right`, `bool`, set operators. What is not implemented (subqueries,
//! `@`, some functions) is refused as `bad_data`, named.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use chrono::{Datelike, Timelike};

use promql_parser::label::MatchOp;
use promql_parser::parser::{
    AggregateExpr, BinaryExpr, Call, Expr, LabelModifier, Offset, VectorMatchCardinality,
    VectorSelector,
};
use vigil_domain::distribution::Distribution;
use vigil_domain::model::Rollup;

use crate::names::{Labels, Part, Reading};

/// How far back an instant selector looks for a sample.
pub const LOOKBACK_MS: i64 = 300_000;

/// One window of a series: `[start_ms, end_ms)`.
#[derive(Debug, Clone)]
pub struct Window {
    pub start_ms: i64,
    pub end_ms: i64,
    /// Shared: a caller keeping windows across evaluations (the alerter)
    /// hands them over without copying their distributions.
    pub rollup: Arc<Rollup>,
}

/// A selected series with its windows in time order. The Prometheus
/// series of one Vigil series (`_total`, `_bucket`…) share its windows.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub labels: Labels,
    pub reading: Reading,
    windows: Arc<[Window]>,
    /// For counters, the running total at the end of each window.
    totals: Vec<f64>,
}

impl Fetched {
    /// A series of `windows`, which are in time order.
    pub fn new(labels: Labels, reading: Reading, windows: Arc<[Window]>) -> Fetched {
        debug_assert!(windows.is_sorted_by_key(|w| w.start_ms));
        let totals = match reading {
            Reading::Counter(part) => windows
                .iter()
                .scan(0.0, |total, w| {
                    *total += increase(part, &w.rollup);
                    Some(*total)
                })
                .collect(),
            _ => Vec::new(),
        };
        Fetched {
            labels,
            reading,
            windows,
            totals,
        }
    }

    /// The samples of the windows starting in `[from_ms, to_ms)`, each at
    /// the window's end: what a range selector asked for alone answers.
    pub fn samples(&self, from_ms: i64, to_ms: i64) -> impl Iterator<Item = (i64, Sample)> + '_ {
        self.within(from_ms, to_ms)
            .filter_map(|i| Some((self.windows[i].end_ms, self.sample(i)?)))
    }

    /// The sample of window `i`: a gauge's mean, a counter's running total,
    /// a histogram's distribution.
    fn sample(&self, i: usize) -> Option<Sample> {
        let window = &self.windows[i];
        Some(match self.reading {
            Reading::Gauge => Sample::Float(window.rollup.values.mean()?),
            Reading::Counter(_) => Sample::Float(self.totals[i]),
            Reading::Histogram { unit } => Sample::Histogram(Box::new(Histogram {
                distribution: window.rollup.values.clone(),
                unit,
                rate_s: None,
            })),
        })
    }

    /// The indices of the windows starting in `[from_ms, to_ms)`.
    fn within(&self, from_ms: i64, to_ms: i64) -> std::ops::Range<usize> {
        let lo = self.windows.partition_point(|w| w.start_ms < from_ms);
        let hi = self.windows.partition_point(|w| w.start_ms < to_ms);
        lo..hi.max(lo)
    }
}

/// What a counter's window adds.
fn increase(part: Part, rollup: &Rollup) -> f64 {
    match part {
        Part::Count => rollup.values.count() as f64,
        Part::Errors => rollup.errors as f64,
        Part::Sum { unit } => rollup.values.sum() * unit,
    }
}

/// The series read for each selector, by [`selector_key`].
pub type Data = HashMap<String, Vec<Fetched>>;

/// What a selector reads: its text without a range (the offset included).
pub fn selector_key(selector: &VectorSelector) -> String {
    selector.to_string()
}

/// A selector to read, and how far before each step.
#[derive(Debug, Clone)]
pub struct Need {
    pub selector: VectorSelector,
    pub range_ms: i64,
}

/// The selectors `expr` reads; subqueries and `@` are refused.
pub fn needs(expr: &Expr, out: &mut Vec<Need>) -> Result<(), EvalError> {
    let mut selector = |selector: &VectorSelector, range_ms| {
        if selector.at.is_some() {
            return Err(EvalError::unsupported("the @ modifier"));
        }
        out.push(Need {
            selector: selector.clone(),
            range_ms,
        });
        Ok(())
    };
    match expr {
        Expr::VectorSelector(vs) => selector(vs, LOOKBACK_MS),
        Expr::MatrixSelector(ms) => selector(&ms.vs, millis(ms.range)),
        Expr::Aggregate(aggregate) => {
            if let Some(param) = &aggregate.param {
                needs(param, out)?;
            }
            needs(&aggregate.expr, out)
        }
        Expr::Unary(unary) => needs(&unary.expr, out),
        Expr::Binary(binary) => {
            needs(&binary.lhs, out)?;
            needs(&binary.rhs, out)
        }
        Expr::Paren(paren) => needs(&paren.expr, out),
        Expr::Call(call) => call.args.args.iter().try_for_each(|arg| needs(arg, out)),
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) => Ok(()),
        Expr::Subquery(_) => Err(EvalError::unsupported("subqueries")),
        Expr::Extension(_) => Err(EvalError::unsupported("extensions")),
    }
}

/// A duration of the expression in milliseconds.
pub fn millis(duration: std::time::Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// A selector's offset in milliseconds (negative for `offset -5m`).
pub fn offset_ms(selector: &VectorSelector) -> i64 {
    match &selector.offset {
        None => 0,
        Some(Offset::Pos(d)) => millis(*d),
        Some(Offset::Neg(d)) => -millis(*d),
    }
}

/// Why an expression cannot be evaluated, as Prometheus's error types.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EvalError {
    /// The expression asks for what Vigil does not do, or is ill-formed.
    #[error("{0}")]
    BadData(String),
    /// The data make the expression fail (duplicate series in a match).
    #[error("{0}")]
    Execution(String),
}

impl EvalError {
    fn unsupported(what: &str) -> EvalError {
        EvalError::BadData(format!("Vigil's PromQL does not support {what}"))
    }
}

/// A histogram sample: a distribution whose values are read times `unit`.
#[derive(Debug, Clone)]
pub struct Histogram {
    pub distribution: Distribution,
    pub unit: f64,
    /// For a `rate`, the seconds its counts are over (they are read per
    /// second); NaN for a sum of rates over different ranges.
    pub rate_s: Option<f64>,
}

/// One sample of a series at one step.
#[derive(Debug, Clone)]
pub enum Sample {
    Float(f64),
    Histogram(Box<Histogram>),
}

impl Sample {
    fn float(&self) -> Option<f64> {
        match self {
            Sample::Float(v) => Some(*v),
            Sample::Histogram(_) => None,
        }
    }
}

/// A series of the answer: one point (or none) per step.
#[derive(Debug, Clone)]
pub struct Series {
    pub labels: Labels,
    pub points: Vec<Option<Sample>>,
}

/// What an expression evaluates to, over every step.
#[derive(Debug, Clone)]
pub enum Value {
    Scalar(Vec<f64>),
    Vector(Vec<Series>),
    String(String),
}

/// Series built step by step, in label order; two samples with the same
/// labels at one step are an error, as in Prometheus.
struct Builder {
    steps: usize,
    series: BTreeMap<Labels, Vec<Option<Sample>>>,
}

impl Builder {
    fn new(steps: usize) -> Builder {
        Builder {
            steps,
            series: BTreeMap::new(),
        }
    }

    fn put(&mut self, labels: Labels, step: usize, sample: Sample) -> Result<(), EvalError> {
        self.put_series(labels, [(step, sample)])
    }

    /// Puts the samples of one series, `(step, sample)`: its labels are
    /// looked up once, not once per step.
    fn put_series(
        &mut self,
        labels: Labels,
        samples: impl IntoIterator<Item = (usize, Sample)>,
    ) -> Result<(), EvalError> {
        let steps = self.steps;
        let points = self
            .series
            .entry(labels)
            .or_insert_with(|| vec![None; steps]);
        for (step, sample) in samples {
            if points[step].is_some() {
                return Err(EvalError::Execution(
                    "vector cannot contain metrics with the same labelset".to_owned(),
                ));
            }
            points[step] = Some(sample);
        }
        Ok(())
    }

    fn build(self) -> Vec<Series> {
        self.series
            .into_iter()
            .filter(|(_, points)| points.iter().any(Option::is_some))
            .map(|(labels, points)| Series { labels, points })
            .collect()
    }
}

/// The samples of `points` with their steps.
fn stepped(points: Vec<Option<Sample>>) -> impl Iterator<Item = (usize, Sample)> {
    points
        .into_iter()
        .enumerate()
        .filter_map(|(step, point)| Some((step, point?)))
}

/// The labels a `by` or `on` list keeps, or those a `without` or
/// `ignoring` list leaves (the name never among them).
fn kept(labels: &Labels, modifier: &LabelModifier) -> Labels {
    let keep = |name: &String| match modifier {
        LabelModifier::Include(by) => by.labels.contains(name),
        LabelModifier::Exclude(without) => name != "__name__" && !without.labels.contains(name),
    };
    labels
        .iter()
        .filter(|(k, _)| keep(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// `labels`, without the name when `drop_name`.
fn named(labels: &Labels, drop_name: bool) -> Labels {
    if drop_name {
        without_name(labels)
    } else {
        labels.clone()
    }
}

fn without_name(labels: &Labels) -> Labels {
    let mut labels = labels.clone();
    labels.remove("__name__");
    labels
}

/// Evaluates expressions at `steps` (unix milliseconds) over `data`.
pub struct Evaluator<'a> {
    pub steps: &'a [i64],
    pub data: &'a Data,
}

impl Evaluator<'_> {
    pub fn eval(&self, expr: &Expr) -> Result<Value, EvalError> {
        match expr {
            Expr::NumberLiteral(n) => Ok(Value::Scalar(vec![n.val; self.steps.len()])),
            Expr::StringLiteral(s) => Ok(Value::String(s.val.clone())),
            Expr::Paren(paren) => self.eval(&paren.expr),
            Expr::Unary(unary) => match self.eval(&unary.expr)? {
                Value::Scalar(values) => Ok(Value::Scalar(values.iter().map(|v| -v).collect())),
                Value::Vector(series) => self.per_step(series, true, |_, v| Some(-v)),
                Value::String(_) => Err(EvalError::BadData("cannot negate a string".into())),
            },
            Expr::VectorSelector(selector) => Ok(Value::Vector(self.instant(selector))),
            Expr::MatrixSelector(_) => Err(EvalError::BadData(
                "a range vector must be the argument of a function".into(),
            )),
            Expr::Aggregate(aggregate) => self.aggregate(aggregate).map(Value::Vector),
            Expr::Binary(binary) => self.binary(binary),
            Expr::Call(call) => self.call(call),
            Expr::Subquery(_) => Err(EvalError::unsupported("subqueries")),
            Expr::Extension(_) => Err(EvalError::unsupported("extensions")),
        }
    }

    fn fetched(&self, selector: &VectorSelector) -> &[Fetched] {
        self.data
            .get(&selector_key(selector))
            .map_or(&[], Vec::as_slice)
    }

    fn instant(&self, selector: &VectorSelector) -> Vec<Series> {
        let offset = offset_ms(selector);
        self.fetched(selector)
            .iter()
            .map(|fetched| Series {
                labels: fetched.labels.clone(),
                points: self
                    .steps
                    .iter()
                    .map(|&t| sample_at(fetched, t - offset))
                    .collect(),
            })
            .filter(|series| series.points.iter().any(Option::is_some))
            .collect()
    }

    /// Argument `index` of `call`, as `take` reads it (the parser has
    /// checked the types; this names a mismatch all the same).
    fn arg<T>(
        &self,
        call: &Call,
        index: usize,
        kind: &str,
        take: fn(Value) -> Option<T>,
    ) -> Result<T, EvalError> {
        take(self.eval(&call.args.args[index])?).ok_or_else(|| {
            EvalError::BadData(format!(
                "argument {} of {} must be {kind}",
                index + 1,
                call.func.name
            ))
        })
    }

    fn scalar_arg(&self, call: &Call, index: usize) -> Result<Vec<f64>, EvalError> {
        self.arg(call, index, "a scalar", |v| match v {
            Value::Scalar(values) => Some(values),
            _ => None,
        })
    }

    fn vector_arg(&self, call: &Call, index: usize) -> Result<Vec<Series>, EvalError> {
        self.arg(call, index, "an instant vector", |v| match v {
            Value::Vector(series) => Some(series),
            _ => None,
        })
    }

    fn string_arg(&self, call: &Call, index: usize) -> Result<String, EvalError> {
        self.arg(call, index, "a string", |v| match v {
            Value::String(text) => Some(text),
            _ => None,
        })
    }

    fn call(&self, call: &Call) -> Result<Value, EvalError> {
        let name = call.func.name;
        let math = |f: fn(f64) -> f64| -> Result<Value, EvalError> {
            let series = self.vector_arg(call, 0)?;
            self.per_step(series, true, |_, v| Some(f(v)))
        };
        match name {
            "abs" => math(f64::abs),
            "ceil" => math(f64::ceil),
            "floor" => math(f64::floor),
            "exp" => math(f64::exp),
            "ln" => math(f64::ln),
            "log2" => math(f64::log2),
            "log10" => math(f64::log10),
            "sqrt" => math(f64::sqrt),
            "sgn" => math(|v| {
                if v == 0.0 || v.is_nan() {
                    v
                } else {
                    v.signum()
                }
            }),
            "round" => {
                let series = self.vector_arg(call, 0)?;
                let to = if call.args.len() > 1 {
                    self.scalar_arg(call, 1)?
                } else {
                    vec![1.0; self.steps.len()]
                };
                self.per_step(series, true, |step, v| {
                    Some((v / to[step] + 0.5).floor() * to[step])
                })
            }
            "clamp" => {
                let series = self.vector_arg(call, 0)?;
                let (min, max) = (self.scalar_arg(call, 1)?, self.scalar_arg(call, 2)?);
                self.per_step(series, true, |step, v| {
                    (min[step] <= max[step]).then(|| v.max(min[step]).min(max[step]))
                })
            }
            "clamp_min" => {
                let series = self.vector_arg(call, 0)?;
                let min = self.scalar_arg(call, 1)?;
                self.per_step(series, true, |step, v| Some(v.max(min[step])))
            }
            "clamp_max" => {
                let series = self.vector_arg(call, 0)?;
                let max = self.scalar_arg(call, 1)?;
                self.per_step(series, true, |step, v| Some(v.min(max[step])))
            }
            "time" => Ok(Value::Scalar(
                self.steps.iter().map(|&t| t as f64 / 1000.0).collect(),
            )),
            "vector" => {
                let values = self.scalar_arg(call, 0)?;
                let points = values.into_iter().map(|v| Some(Sample::Float(v))).collect();
                Ok(Value::Vector(vec![Series {
                    labels: Labels::new(),
                    points,
                }]))
            }
            "scalar" => {
                let series = self.vector_arg(call, 0)?;
                let values = (0..self.steps.len())
                    .map(|step| {
                        let mut present = series
                            .iter()
                            .filter_map(|s| s.points[step].as_ref().and_then(Sample::float));
                        match (present.next(), present.next()) {
                            (Some(v), None) => v,
                            _ => f64::NAN,
                        }
                    })
                    .collect();
                Ok(Value::Scalar(values))
            }
            "sort" | "sort_desc" => {
                let mut series = self.vector_arg(call, 0)?;
                let last = self.steps.len().saturating_sub(1);
                let value = |s: &Series| {
                    s.points
                        .get(last)
                        .and_then(|p| p.as_ref().and_then(Sample::float))
                        .unwrap_or(f64::NAN)
                };
                series.sort_by(|a, b| value(a).total_cmp(&value(b)));
                if name == "sort_desc" {
                    series.reverse();
                }
                Ok(Value::Vector(series))
            }
            "acos" => math(f64::acos),
            "acosh" => math(f64::acosh),
            "asin" => math(f64::asin),
            "asinh" => math(f64::asinh),
            "atan" => math(f64::atan),
            "atanh" => math(f64::atanh),
            "cos" => math(f64::cos),
            "cosh" => math(f64::cosh),
            "sin" => math(f64::sin),
            "sinh" => math(f64::sinh),
            "tan" => math(f64::tan),
            "tanh" => math(f64::tanh),
            "deg" => math(f64::to_degrees),
            "rad" => math(f64::to_radians),
            "pi" => Ok(Value::Scalar(vec![std::f64::consts::PI; self.steps.len()])),
            _ if DATE_FUNCTIONS.contains(&name) => self.date(call),
            "label_replace" => self.label_replace(call),
            "label_join" => self.label_join(call),
            "absent" | "absent_over_time" => self.absent(call),
            "timestamp" => self.timestamp(call),
            "histogram_quantile" => {
                let phi = self.scalar_arg(call, 0)?;
                let series = self.vector_arg(call, 1)?;
                let mut out = Builder::new(self.steps.len());
                for s in series {
                    let mut labels = without_name(&s.labels);
                    labels.remove("le");
                    let quantiles = s.points.iter().enumerate().filter_map(|(step, point)| {
                        let Some(Sample::Histogram(h)) = point else {
                            return None;
                        };
                        Some((step, Sample::Float(quantile_of(h, phi[step]))))
                    });
                    out.put_series(labels, quantiles)?;
                }
                Ok(Value::Vector(out.build()))
            }
            _ if RANGE_FUNCTIONS.contains(&name) => self.range_call(call),
            _ => Err(EvalError::BadData(format!(
                "function {name:?} is not supported by Vigil's PromQL"
            ))),
        }
    }

    /// Applies `f(step, value)` to every float sample (histograms are
    /// dropped), dropping the name when `drop_name`.
    fn per_step(
        &self,
        series: Vec<Series>,
        drop_name: bool,
        f: impl Fn(usize, f64) -> Option<f64>,
    ) -> Result<Value, EvalError> {
        let mut out = Builder::new(self.steps.len());
        for s in series {
            let labels = named(&s.labels, drop_name);
            let values = s.points.iter().enumerate().filter_map(|(step, point)| {
                let v = f(step, point.as_ref().and_then(Sample::float)?)?;
                Some((step, Sample::Float(v)))
            });
            out.put_series(labels, values)?;
        }
        Ok(Value::Vector(out.build()))
    }

    /// `day_of_week(v)`, `hour(v)`…: the part of the UTC date each value
    /// (unix seconds) falls on; of `vector(time())` without an argument.
    fn date(&self, call: &Call) -> Result<Value, EvalError> {
        let name = call.func.name;
        let part = move |v: f64| -> f64 {
            let Some(at) = (v.is_finite())
                .then(|| chrono::DateTime::from_timestamp(v.floor() as i64, 0))
                .flatten()
            else {
                return f64::NAN;
            };
            f64::from(match name {
                "day_of_month" => at.day(),
                "day_of_week" => at.weekday().num_days_from_sunday(),
                "day_of_year" => at.ordinal(),
                "days_in_month" => u32::from(at.num_days_in_month()),
                "hour" => at.hour(),
                "minute" => at.minute(),
                "month" => at.month(),
                _ => return f64::from(at.year()),
            })
        };
        if call.args.is_empty() {
            let values = self
                .steps
                .iter()
                .map(|&t| Some(Sample::Float(part(t.div_euclid(1000) as f64))));
            return Ok(Value::Vector(vec![Series {
                labels: Labels::new(),
                points: values.collect(),
            }]));
        }
        let series = self.vector_arg(call, 0)?;
        self.per_step(series, true, |_, v| Some(part(v)))
    }

    /// `timestamp(v)`: when each sample was taken — for a selector, the end
    /// of the window read (at most the step's time); otherwise the step's
    /// time, as in Prometheus.
    fn timestamp(&self, call: &Call) -> Result<Value, EvalError> {
        let Some(Expr::VectorSelector(selector)) = call.args.args.first().map(|arg| arg.as_ref())
        else {
            let series = self.vector_arg(call, 0)?;
            return self.per_step(series, true, |step, _| {
                Some(self.steps[step] as f64 / 1000.0)
            });
        };
        let offset = offset_ms(selector);
        let mut out = Builder::new(self.steps.len());
        for fetched in self.fetched(selector) {
            let times = self.steps.iter().enumerate().filter_map(|(step, &t)| {
                let window = &fetched.windows[newest_at(fetched, t - offset)?];
                let taken = window.end_ms.min(t - offset) as f64 / 1000.0;
                Some((step, Sample::Float(taken)))
            });
            out.put_series(without_name(&fetched.labels), times)?;
        }
        Ok(Value::Vector(out.build()))
    }

    fn relabel(&self, series: Vec<Series>, f: impl Fn(&mut Labels)) -> Result<Value, EvalError> {
        let mut out = Builder::new(self.steps.len());
        for s in series {
            let mut labels = s.labels.clone();
            f(&mut labels);
            labels.retain(|_, v| !v.is_empty());
            out.put_series(labels, stepped(s.points))?;
        }
        Ok(Value::Vector(out.build()))
    }

    fn label_replace(&self, call: &Call) -> Result<Value, EvalError> {
        let series = self.vector_arg(call, 0)?;
        let destination = self.string_arg(call, 1)?;
        let replacement = self.string_arg(call, 2)?;
        let source = self.string_arg(call, 3)?;
        let pattern = self.string_arg(call, 4)?;
        let regex = regex::Regex::new(&format!("^(?s:{pattern})$")).map_err(|e| {
            EvalError::BadData(format!(
                "invalid regular expression in label_replace(): {e}"
            ))
        })?;
        if !is_label_name(&destination) {
            return Err(EvalError::BadData(format!(
                "invalid destination label name in label_replace(): {destination}"
            )));
        }
        self.relabel(series, |labels| {
            let value = labels.get(&source).cloned().unwrap_or_default();
            if let Some(captures) = regex.captures(&value) {
                let mut replaced = String::new();
                captures.expand(&replacement, &mut replaced);
                labels.insert(destination.clone(), replaced);
            }
        })
    }

    fn label_join(&self, call: &Call) -> Result<Value, EvalError> {
        let series = self.vector_arg(call, 0)?;
        let destination = self.string_arg(call, 1)?;
        let separator = self.string_arg(call, 2)?;
        let sources = (3..call.args.len())
            .map(|i| self.string_arg(call, i))
            .collect::<Result<Vec<_>, _>>()?;
        self.relabel(series, |labels| {
            let joined: Vec<&str> = sources
                .iter()
                .map(|s| labels.get(s).map_or("", String::as_str))
                .collect();
            let joined = joined.join(&separator);
            labels.insert(destination.clone(), joined);
        })
    }

    /// `absent(v)`: 1 where `v` has no sample, labelled by the equality
    /// matchers of its selector.
    fn absent(&self, call: &Call) -> Result<Value, EvalError> {
        let arg = &call.args.args[0];
        let (selector, present) = match arg.as_ref() {
            Expr::MatrixSelector(ms) => {
                let series = self
                    .range_values(&ms.vs, millis(ms.range), |_, _, _| Some(Sample::Float(1.0)))?;
                (Some(&ms.vs), series)
            }
            Expr::VectorSelector(vs) => (Some(vs), self.instant(vs)),
            _ => (None, self.vector_arg(call, 0)?),
        };
        let mut labels = Labels::new();
        if let Some(selector) = selector {
            for m in &selector.matchers.matchers {
                if matches!(m.op, MatchOp::Equal) && m.name != "__name__" {
                    labels.insert(m.name.clone(), m.value.clone());
                }
            }
        }
        let points = (0..self.steps.len())
            .map(|step| {
                let any = present.iter().any(|s| s.points[step].is_some());
                (!any).then_some(Sample::Float(1.0))
            })
            .collect();
        let series = Series { labels, points };
        let found = series.points.iter().any(Option::is_some);
        Ok(Value::Vector(if found { vec![series] } else { Vec::new() }))
    }

    fn range_call(&self, call: &Call) -> Result<Value, EvalError> {
        let name = call.func.name;
        let (param, arg) = match name {
            "quantile_over_time" => (Some(self.scalar_arg(call, 0)?), &call.args.args[1]),
            "predict_linear" => (Some(self.scalar_arg(call, 1)?), &call.args.args[0]),
            _ => (None, &call.args.args[0]),
        };
        let Expr::MatrixSelector(ms) = arg.as_ref() else {
            return Err(EvalError::BadData(format!(
                "{name}() takes a range vector, like x[5m]"
            )));
        };
        let range_ms = millis(ms.range);
        let offset = offset_ms(&ms.vs);
        let series = self.range_values(&ms.vs, range_ms, |fetched, span, step| {
            let over = Over {
                range_ms,
                at_ms: self.steps[step] - offset,
                param: param.as_ref().map_or(0.0, |p| p[step]),
            };
            over_range(name, fetched, span, over)
        })?;
        let drop_name = name != "last_over_time";
        let mut out = Builder::new(self.steps.len());
        for s in series {
            out.put_series(named(&s.labels, drop_name), stepped(s.points))?;
        }
        Ok(Value::Vector(out.build()))
    }

    /// For every series of `selector` and step, `f` over the windows
    /// starting in `[t − range, t)`, when there are any.
    fn range_values(
        &self,
        selector: &VectorSelector,
        range_ms: i64,
        f: impl Fn(&Fetched, std::ops::Range<usize>, usize) -> Option<Sample>,
    ) -> Result<Vec<Series>, EvalError> {
        let offset = offset_ms(selector);
        Ok(self
            .fetched(selector)
            .iter()
            .map(|fetched| Series {
                labels: fetched.labels.clone(),
                points: self
                    .steps
                    .iter()
                    .enumerate()
                    .map(|(step, &t)| {
                        let t = t - offset;
                        let span = fetched.within(t - range_ms, t);
                        if span.is_empty() {
                            None
                        } else {
                            f(fetched, span, step)
                        }
                    })
                    .collect(),
            })
            .filter(|s| s.points.iter().any(Option::is_some))
            .collect())
    }

    fn aggregate(&self, aggregate: &AggregateExpr) -> Result<Vec<Series>, EvalError> {
        let op = aggregate.op.to_string();
        let series = match self.eval(&aggregate.expr)? {
            Value::Vector(series) => series,
            _ => {
                return Err(EvalError::BadData(format!(
                    "{op}() aggregates an instant vector"
                )));
            }
        };
        let param = match &aggregate.param {
            Some(param) if op != "count_values" => match self.eval(param)? {
                Value::Scalar(values) => Some(values),
                _ => {
                    return Err(EvalError::BadData(format!(
                        "the parameter of {op}() must be a scalar"
                    )));
                }
            },
            _ => None,
        };
        // count_values' label: a string.
        let value_label = match aggregate.param.as_deref() {
            Some(Expr::StringLiteral(label)) if op == "count_values" => {
                if !is_label_name(&label.val) {
                    return Err(EvalError::BadData(format!(
                        "invalid label name {:?}",
                        label.val
                    )));
                }
                Some(label.val.clone())
            }
            _ if op == "count_values" => {
                return Err(EvalError::BadData(
                    "the parameter of count_values() must be a string".to_owned(),
                ));
            }
            _ => None,
        };
        let group_of = |labels: &Labels| {
            aggregate
                .modifier
                .as_ref()
                .map_or_else(Labels::new, |modifier| kept(labels, modifier))
        };
        // Each series' group, found once; then, step by step, each group's
        // samples, taken out of their series.
        let mut index: BTreeMap<Labels, usize> = BTreeMap::new();
        let group_of_series: Vec<usize> = series
            .iter()
            .map(|s| {
                let next = index.len();
                *index.entry(group_of(&s.labels)).or_insert(next)
            })
            .collect();
        let steps = self.steps.len();
        let mut group_labels: Vec<&Labels> = vec![&EMPTY; index.len()];
        for (labels, &group) in &index {
            group_labels[group] = labels;
        }
        let mut series = series;
        let mut members: Vec<Vec<(usize, Sample)>> = vec![Vec::new(); index.len()];
        let mut points: Vec<Vec<Option<Sample>>> = vec![vec![None; steps]; index.len()];
        // topk and bottomk keep their members' labels, count_values makes
        // its own.
        let mut ranked_out = Builder::new(steps);
        for step in 0..steps {
            for (i, s) in series.iter_mut().enumerate() {
                if let Some(sample) = s.points[step].take() {
                    members[group_of_series[i]].push((i, sample));
                }
            }
            for (group, samples) in members.iter_mut().enumerate() {
                if samples.is_empty() {
                    continue;
                }
                let floats: Vec<f64> = samples.iter().filter_map(|(_, s)| s.float()).collect();
                let value = match op.as_str() {
                    "sum" => {
                        if let Some(merged) = merge_histograms(samples.drain(..).map(|(_, s)| s)) {
                            points[group][step] = Some(merged);
                            continue;
                        }
                        floats.iter().sum::<f64>()
                    }
                    "avg" => floats.iter().sum::<f64>() / floats.len() as f64,
                    "min" => floats.iter().copied().fold(f64::NAN, nan_min),
                    "max" => floats.iter().copied().fold(f64::NAN, nan_max),
                    "count" => samples.len() as f64,
                    "group" => 1.0,
                    "stddev" | "stdvar" => {
                        let n = floats.len() as f64;
                        let mean = floats.iter().sum::<f64>() / n;
                        let var = floats.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
                        if op == "stddev" { var.sqrt() } else { var }
                    }
                    "quantile" => {
                        let phi = param.as_ref().map_or(f64::NAN, |p| p[step]);
                        quantile(phi, floats.clone())
                    }
                    "topk" | "bottomk" => {
                        let k = param.as_ref().map_or(0.0, |p| p[step]);
                        let k = if k.is_finite() && k >= 1.0 {
                            k as usize
                        } else {
                            0
                        };
                        let mut ranked: Vec<(usize, f64)> = samples
                            .drain(..)
                            .filter_map(|(i, s)| s.float().map(|v| (i, v)))
                            .collect();
                        ranked.sort_by(|a, b| {
                            if op == "topk" {
                                b.1.total_cmp(&a.1)
                            } else {
                                a.1.total_cmp(&b.1)
                            }
                        });
                        for (i, v) in ranked.into_iter().take(k) {
                            ranked_out.put(series[i].labels.clone(), step, Sample::Float(v))?;
                        }
                        continue;
                    }
                    "count_values" => {
                        let label = value_label.as_deref().unwrap_or_default();
                        let mut counts: BTreeMap<String, f64> = BTreeMap::new();
                        for v in &floats {
                            *counts.entry(float_text(*v)).or_default() += 1.0;
                        }
                        for (value, n) in counts {
                            let mut labels = group_labels[group].clone();
                            labels.insert(label.to_owned(), value);
                            ranked_out.put(labels, step, Sample::Float(n))?;
                        }
                        samples.clear();
                        continue;
                    }
                    other => {
                        return Err(EvalError::BadData(format!(
                            "aggregation {other:?} is not supported by Vigil's PromQL"
                        )));
                    }
                };
                if !floats.is_empty() || matches!(op.as_str(), "count" | "group") {
                    points[group][step] = Some(Sample::Float(value));
                }
                samples.clear();
            }
        }
        if matches!(op.as_str(), "topk" | "bottomk" | "count_values") {
            return Ok(ranked_out.build());
        }
        // In label order, as the builder gives them.
        Ok(index
            .into_iter()
            .map(|(labels, group)| Series {
                labels,
                points: std::mem::take(&mut points[group]),
            })
            .filter(|s| s.points.iter().any(Option::is_some))
            .collect())
    }

    fn binary(&self, binary: &BinaryExpr) -> Result<Value, EvalError> {
        let op = binary.op.to_string().to_lowercase();
        let return_bool = binary.return_bool();
        let comparison = binary.op.is_comparison_operator();
        let lhs = self.eval(&binary.lhs)?;
        let rhs = self.eval(&binary.rhs)?;
        match (lhs, rhs) {
            (Value::Scalar(l), Value::Scalar(r)) => {
                let values = l
                    .iter()
                    .zip(&r)
                    .map(|(&l, &r)| {
                        let (value, keep) = operate(&op, l, r);
                        if comparison {
                            f64::from(u8::from(keep))
                        } else {
                            value
                        }
                    })
                    .collect();
                Ok(Value::Scalar(values))
            }
            (Value::Vector(series), Value::Scalar(scalar)) => {
                self.vector_scalar(&op, series, &scalar, false, comparison, return_bool)
            }
            (Value::Scalar(scalar), Value::Vector(series)) => {
                self.vector_scalar(&op, series, &scalar, true, comparison, return_bool)
            }
            (Value::Vector(l), Value::Vector(r)) => self.vector_vector(binary, &op, l, r),
            _ => Err(EvalError::BadData(format!(
                "operator {op} is not defined on strings"
            ))),
        }
    }

    fn vector_scalar(
        &self,
        op: &str,
        series: Vec<Series>,
        scalar: &[f64],
        swapped: bool,
        comparison: bool,
        return_bool: bool,
    ) -> Result<Value, EvalError> {
        if binary_set_operator(op) {
            return Err(EvalError::BadData(format!(
                "set operator {op} not allowed in binary scalar expression"
            )));
        }
        let drop_name = !comparison || return_bool;
        self.per_step(series, drop_name, |step, v| {
            let (l, r) = if swapped {
                (scalar[step], v)
            } else {
                (v, scalar[step])
            };
            let (value, keep) = operate(op, l, r);
            if !comparison {
                Some(value)
            } else if return_bool {
                Some(f64::from(u8::from(keep)))
            } else {
                keep.then_some(v)
            }
        })
    }

    fn vector_vector(
        &self,
        binary: &BinaryExpr,
        op: &str,
        lhs: Vec<Series>,
        rhs: Vec<Series>,
    ) -> Result<Value, EvalError> {
        let modifier = binary.modifier.clone().unwrap_or_default();
        let signature = |labels: &Labels| match &modifier.matching {
            Some(matching) => kept(labels, matching),
            None => without_name(labels),
        };
        let lhs_signatures: Vec<_> = lhs.iter().map(|s| signature(&s.labels)).collect();
        let rhs_signatures: Vec<_> = rhs.iter().map(|s| signature(&s.labels)).collect();
        let mut out = Builder::new(self.steps.len());
        if binary_set_operator(op) {
            for step in 0..self.steps.len() {
                let present = |series: &[Series], signatures: &[Labels]| {
                    series
                        .iter()
                        .zip(signatures)
                        .filter(|(s, _)| s.points[step].is_some())
                        .map(|(_, sig)| sig.clone())
                        .collect::<BTreeSet<_>>()
                };
                let right = present(&rhs, &rhs_signatures);
                for (s, sig) in lhs.iter().zip(&lhs_signatures) {
                    let Some(sample) = &s.points[step] else {
                        continue;
                    };
                    let keep = match op {
                        "and" => right.contains(sig),
                        _ => op == "or" || !right.contains(sig),
                    };
                    if keep {
                        out.put(s.labels.clone(), step, sample.clone())?;
                    }
                }
                if op == "or" {
                    let left = present(&lhs, &lhs_signatures);
                    for (s, sig) in rhs.iter().zip(&rhs_signatures) {
                        if let Some(sample) = &s.points[step]
                            && !left.contains(sig)
                        {
                            out.put(s.labels.clone(), step, sample.clone())?;
                        }
                    }
                }
            }
            return Ok(Value::Vector(out.build()));
        }
        let comparison = binary.op.is_comparison_operator();
        let return_bool = modifier.return_bool;
        // The "many" side is matched to the "one" side; one-to-one is
        // many-to-one where the many side must be unique too.
        let (card, include) = match &modifier.card {
            VectorMatchCardinality::ManyToOne(labels) => (Card::ManyToOne, labels.labels.clone()),
            VectorMatchCardinality::OneToMany(labels) => (Card::OneToMany, labels.labels.clone()),
            _ => (Card::OneToOne, Vec::new()),
        };
        let (many, many_sigs, one, one_sigs) = if card == Card::OneToMany {
            (&rhs, &rhs_signatures, &lhs, &lhs_signatures)
        } else {
            (&lhs, &lhs_signatures, &rhs, &rhs_signatures)
        };
        for step in 0..self.steps.len() {
            let mut ones: HashMap<&Labels, (usize, f64)> = HashMap::new();
            for (i, (s, sig)) in one.iter().zip(one_sigs).enumerate() {
                if let Some(v) = s.points[step].as_ref().and_then(Sample::float)
                    && ones.insert(sig, (i, v)).is_some()
                {
                    return Err(EvalError::Execution(format!(
                        "found duplicate series for the match group {} on the {} hand-side of the operation: many-to-many matching not allowed: matching labels must be unique on one side",
                        show(sig),
                        if card == Card::OneToMany {
                            "left"
                        } else {
                            "right"
                        },
                    )));
                }
            }
            let mut matched: HashMap<&Labels, usize> = HashMap::new();
            for (s, sig) in many.iter().zip(many_sigs) {
                let Some(mv) = s.points[step].as_ref().and_then(Sample::float) else {
                    continue;
                };
                let Some(&(one_index, ov)) = ones.get(sig) else {
                    continue;
                };
                if card == Card::OneToOne && matched.insert(sig, one_index).is_some() {
                    return Err(EvalError::Execution(format!(
                        "multiple matches for labels: many-to-one matching must be explicit (group_left/group_right); group {}",
                        show(sig)
                    )));
                }
                let (l, r) = if card == Card::OneToMany {
                    (ov, mv)
                } else {
                    (mv, ov)
                };
                let (value, keep) = operate(op, l, r);
                let value = if !comparison {
                    value
                } else if return_bool {
                    f64::from(u8::from(keep))
                } else if keep {
                    l
                } else {
                    continue;
                };
                let mut labels = s.labels.clone();
                if !comparison || return_bool {
                    labels.remove("__name__");
                }
                if card == Card::OneToOne {
                    match &modifier.matching {
                        Some(LabelModifier::Include(on)) => {
                            labels.retain(|k, _| on.labels.contains(k));
                        }
                        Some(LabelModifier::Exclude(ignoring)) => {
                            labels.retain(|k, _| !ignoring.labels.contains(k));
                        }
                        None => {}
                    }
                }
                for name in &include {
                    match one[one_index].labels.get(name) {
                        Some(v) if !v.is_empty() => {
                            labels.insert(name.clone(), v.clone());
                        }
                        _ => {
                            labels.remove(name);
                        }
                    }
                }
                out.put(labels, step, Sample::Float(value)).map_err(|_| {
                    EvalError::Execution(
                        "multiple matches for labels: grouping labels must ensure unique matches"
                            .to_owned(),
                    )
                })?;
            }
        }
        Ok(Value::Vector(out.build()))
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Card {
    OneToOne,
    ManyToOne,
    OneToMany,
}

fn show(signature: &Labels) -> String {
    let pairs: Vec<String> = signature
        .iter()
        .map(|(k, v)| format!("{k}={v:?}"))
        .collect();
    format!("{{{}}}", pairs.join(", "))
}

fn binary_set_operator(op: &str) -> bool {
    matches!(op, "and" | "or" | "unless")
}

/// No labels.
static EMPTY: Labels = Labels::new();

/// A float as Prometheus writes it in a label (`count_values`).
fn float_text(v: f64) -> String {
    if v == f64::INFINITY {
        "+Inf".to_owned()
    } else if v == f64::NEG_INFINITY {
        "-Inf".to_owned()
    } else {
        v.to_string()
    }
}

fn is_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// `l op r`, and for comparisons whether it holds.
fn operate(op: &str, l: f64, r: f64) -> (f64, bool) {
    match op {
        "+" => (l + r, true),
        "-" => (l - r, true),
        "*" => (l * r, true),
        "/" => (l / r, true),
        "%" => (l % r, true),
        "^" => (l.powf(r), true),
        "atan2" => (l.atan2(r), true),
        "==" => (l, l == r),
        "!=" => (l, l != r),
        ">" => (l, l > r),
        "<" => (l, l < r),
        ">=" => (l, l >= r),
        "<=" => (l, l <= r),
        _ => (f64::NAN, false),
    }
}

fn nan_min(a: f64, b: f64) -> f64 {
    if a.is_nan() || b < a { b } else { a }
}

fn nan_max(a: f64, b: f64) -> f64 {
    if a.is_nan() || b > a { b } else { a }
}

/// Prometheus's φ-quantile of values: linear between the closest ranks.
fn quantile(phi: f64, mut values: Vec<f64>) -> f64 {
    if values.is_empty() || phi.is_nan() {
        return f64::NAN;
    }
    if phi < 0.0 {
        return f64::NEG_INFINITY;
    }
    if phi > 1.0 {
        return f64::INFINITY;
    }
    values.sort_by(f64::total_cmp);
    let rank = phi * (values.len() - 1) as f64;
    let lower = rank.floor() as usize;
    let upper = (lower + 1).min(values.len() - 1);
    let weight = rank - lower as f64;
    values[lower] * (1.0 - weight) + values[upper] * weight
}

fn quantile_of(histogram: &Histogram, phi: f64) -> f64 {
    if phi < 0.0 {
        return f64::NEG_INFINITY;
    }
    if phi > 1.0 {
        return f64::INFINITY;
    }
    histogram
        .distribution
        .quantile(phi)
        .map_or(f64::NAN, |v| v * histogram.unit)
}

/// The sum of the histogram samples among `samples`, if any.
fn merge_histograms(samples: impl Iterator<Item = Sample>) -> Option<Sample> {
    let mut merged: Option<Box<Histogram>> = None;
    for sample in samples {
        if let Sample::Histogram(h) = sample {
            match &mut merged {
                Some(m) => {
                    m.distribution.merge(&h.distribution);
                    if m.rate_s != h.rate_s {
                        m.rate_s = Some(f64::NAN);
                    }
                }
                None => merged = Some(h),
            }
        }
    }
    merged.map(Sample::Histogram)
}

/// The sample of a series at `t` (see the module documentation).
fn sample_at(fetched: &Fetched, t: i64) -> Option<Sample> {
    fetched.sample(newest_at(fetched, t)?)
}

/// The window of a series read at `t`: the newest begun before it, unless
/// it ended more than the lookback before.
fn newest_at(fetched: &Fetched, t: i64) -> Option<usize> {
    let newest = fetched
        .windows
        .partition_point(|w| w.start_ms < t)
        .checked_sub(1)?;
    (fetched.windows[newest].end_ms > t - LOOKBACK_MS).then_some(newest)
}

/// The functions of a range vector.
/// The functions that read a part of a date.
const DATE_FUNCTIONS: [&str; 8] = [
    "day_of_month",
    "day_of_week",
    "day_of_year",
    "days_in_month",
    "hour",
    "minute",
    "month",
    "year",
];

const RANGE_FUNCTIONS: [&str; 19] = [
    "deriv",
    "predict_linear",
    "rate",
    "increase",
    "irate",
    "delta",
    "idelta",
    "avg_over_time",
    "sum_over_time",
    "min_over_time",
    "max_over_time",
    "count_over_time",
    "last_over_time",
    "quantile_over_time",
    "stddev_over_time",
    "stdvar_over_time",
    "present_over_time",
    "changes",
    "resets",
];

/// Where a range function is evaluated.
#[derive(Debug, Clone, Copy)]
struct Over {
    /// The range, `[at − range, at)`.
    range_ms: i64,
    /// The evaluation time, its offset taken off.
    at_ms: i64,
    /// `quantile_over_time`'s φ, `predict_linear`'s seconds ahead.
    param: f64,
}

/// A range function over the windows `span` of `fetched`.
fn over_range(
    name: &str,
    fetched: &Fetched,
    span: std::ops::Range<usize>,
    over: Over,
) -> Option<Sample> {
    let windows = &fetched.windows[span.clone()];
    let range_s = over.range_ms as f64 / 1000.0;
    let phi = over.param;
    let float = |v: f64| Some(Sample::Float(v));
    let merged = || {
        let mut values = Distribution::new();
        for w in windows {
            values.merge(&w.rollup.values);
        }
        values
    };
    if name == "count_over_time" {
        return float(windows.iter().map(|w| w.rollup.values.count() as f64).sum());
    }
    if name == "present_over_time" {
        return float(1.0);
    }
    if name == "deriv" || name == "predict_linear" {
        // A gauge's level is its window's mean, at the window's middle; a
        // counter's its running total, at the window's end.
        let seconds = |ms: i64| (ms - over.at_ms) as f64 / 1000.0;
        let points: Vec<(f64, f64)> = match fetched.reading {
            Reading::Gauge => windows
                .iter()
                .filter_map(|w| {
                    Some((
                        seconds((w.start_ms + w.end_ms) / 2),
                        w.rollup.values.mean()?,
                    ))
                })
                .collect(),
            Reading::Counter(_) => windows
                .iter()
                .zip(&fetched.totals[span])
                .map(|(w, &total)| (seconds(w.end_ms), total))
                .collect(),
            Reading::Histogram { .. } => return None,
        };
        let (slope, intercept) = least_squares(&points)?;
        return float(if name == "deriv" {
            slope
        } else {
            intercept + slope * over.param
        });
    }
    match fetched.reading {
        Reading::Histogram { unit } => {
            let distribution = match name {
                "rate" | "increase" => merged(),
                "last_over_time" => windows.last()?.rollup.values.clone(),
                _ => return None,
            };
            Some(Sample::Histogram(Box::new(Histogram {
                distribution,
                unit,
                rate_s: (name == "rate").then_some(range_s),
            })))
        }
        Reading::Counter(part) => {
            let increases = windows.iter().map(|w| increase(part, &w.rollup));
            let totals = &fetched.totals[span];
            match name {
                "rate" => float(increases.sum::<f64>() / range_s),
                "increase" | "delta" => float(increases.sum()),
                "irate" => {
                    let last = windows.last()?;
                    let width_s = (last.end_ms - last.start_ms) as f64 / 1000.0;
                    float(increase(part, &last.rollup) / width_s)
                }
                "idelta" => float(increase(part, &windows.last()?.rollup)),
                _ => levels(name, totals, phi),
            }
        }
        Reading::Gauge => {
            let means: Vec<f64> = windows
                .iter()
                .filter_map(|w| w.rollup.values.mean())
                .collect();
            match name {
                "rate" | "increase" => {
                    if means.len() < 2 {
                        return None;
                    }
                    let rise: f64 = means
                        .windows(2)
                        .map(|pair| {
                            if pair[1] >= pair[0] {
                                pair[1] - pair[0]
                            } else {
                                pair[1]
                            }
                        })
                        .sum();
                    float(if name == "rate" { rise / range_s } else { rise })
                }
                "irate" | "idelta" => {
                    let [.., prev, last] = windows else {
                        return None;
                    };
                    let (p, l) = (prev.rollup.values.mean()?, last.rollup.values.mean()?);
                    if name == "idelta" {
                        return float(l - p);
                    }
                    let rise = if l >= p { l - p } else { l };
                    float(rise / ((last.start_ms - prev.start_ms) as f64 / 1000.0))
                }
                "delta" => {
                    (means.len() >= 2).then(|| Sample::Float(means[means.len() - 1] - means[0]))
                }
                "avg_over_time" => {
                    let (sum, count) = windows.iter().fold((0.0, 0u64), |(s, c), w| {
                        (s + w.rollup.values.sum(), c + w.rollup.values.count())
                    });
                    (count > 0).then(|| Sample::Float(sum / count as f64))
                }
                "sum_over_time" => float(windows.iter().map(|w| w.rollup.values.sum()).sum()),
                "min_over_time" => windows
                    .iter()
                    .filter_map(|w| w.rollup.values.min())
                    .reduce(f64::min)
                    .map(Sample::Float),
                "max_over_time" => windows
                    .iter()
                    .filter_map(|w| w.rollup.values.max())
                    .reduce(f64::max)
                    .map(Sample::Float),
                "last_over_time" => means.last().copied().map(Sample::Float),
                "changes" | "resets" => float(turns(name, &means)),
                "quantile_over_time" => {
                    if !(0.0..=1.0).contains(&phi) {
                        return float(if phi < 0.0 {
                            f64::NEG_INFINITY
                        } else {
                            f64::INFINITY
                        });
                    }
                    merged().quantile(phi).map(Sample::Float)
                }
                "stddev_over_time" | "stdvar_over_time" => {
                    let values = merged();
                    let mean = values.mean()?;
                    let n = values.count() as f64;
                    let var = values
                        .ascending()
                        .map(|(v, c)| c as f64 * (v - mean).powi(2))
                        .sum::<f64>()
                        / n;
                    float(if name == "stddev_over_time" {
                        var.sqrt()
                    } else {
                        var
                    })
                }
                _ => None,
            }
        }
    }
}

/// The slope and intercept (at x = 0) of the least-squares line through
/// `points`, as Prometheus's `deriv` and `predict_linear` fit their
/// samples; `None` for fewer than two points.
fn least_squares(points: &[(f64, f64)]) -> Option<(f64, f64)> {
    if points.len() < 2 {
        return None;
    }
    let n = points.len() as f64;
    let (sx, sy) = points
        .iter()
        .fold((0.0, 0.0), |(sx, sy), (x, y)| (sx + x, sy + y));
    let (mx, my) = (sx / n, sy / n);
    let (sxy, sxx) = points.iter().fold((0.0, 0.0), |(sxy, sxx), (x, y)| {
        (sxy + (x - mx) * (y - my), sxx + (x - mx) * (x - mx))
    });
    let slope = sxy / sxx;
    Some((slope, my - slope * mx))
}

/// A `*_over_time` function over a counter's running totals.
fn levels(name: &str, totals: &[f64], phi: f64) -> Option<Sample> {
    let n = totals.len() as f64;
    let mean = totals.iter().sum::<f64>() / n;
    let value = match name {
        "avg_over_time" => mean,
        "sum_over_time" => totals.iter().sum(),
        "min_over_time" => totals.iter().copied().reduce(f64::min)?,
        "max_over_time" => totals.iter().copied().reduce(f64::max)?,
        "last_over_time" => *totals.last()?,
        "quantile_over_time" => quantile(phi, totals.to_vec()),
        "stdvar_over_time" => totals.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n,
        "stddev_over_time" => (totals.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n).sqrt(),
        "changes" | "resets" => turns(name, totals),
        _ => return None,
    };
    Some(Sample::Float(value))
}

/// `changes`: how often consecutive levels differ; `resets`: how often one
/// is below the one before (a counter's running totals never are).
fn turns(name: &str, levels: &[f64]) -> f64 {
    levels
        .windows(2)
        .filter(|pair| {
            if name == "resets" {
                pair[1] < pair[0]
            } else {
                pair[1] != pair[0]
            }
        })
        .count() as f64
}

#[cfg(test)]
mod tests {
    use vigil_domain::distribution::RELATIVE_ERROR;

    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// Windows of 10 s from `start_s`, one per list of values.
    fn windows(start_s: i64, values: &[&[f64]]) -> Arc<[Window]> {
        values
            .iter()
            .enumerate()
            .map(|(i, values)| {
                let mut rollup = Rollup::default();
                for &v in *values {
                    rollup.record(v, v < 0.0).unwrap();
                }
                let start_ms = (start_s + 10 * i as i64) * 1000;
                Window {
                    start_ms,
                    end_ms: start_ms + 10_000,
                    rollup: Arc::new(rollup),
                }
            })
            .collect()
    }

    /// `query` evaluated at `steps` (seconds) over `data` (selector text →
    /// its series).
    fn eval(query: &str, data: &[(&str, Vec<Fetched>)], steps: &[i64]) -> Result<Value, EvalError> {
        let expr = promql_parser::parser::parse(query).unwrap();
        let data: Data = data
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        let steps: Vec<i64> = steps.iter().map(|s| s * 1000).collect();
        Evaluator {
            steps: &steps,
            data: &data,
        }
        .eval(&expr)
    }

    fn floats(value: Value) -> Vec<(Labels, Vec<Option<f64>>)> {
        let Value::Vector(series) = value else {
            panic!("{value:?}");
        };
        series
            .into_iter()
            .map(|s| {
                let points = s
                    .points
                    .iter()
                    .map(|p| p.as_ref().and_then(Sample::float))
                    .collect();
                (s.labels, points)
            })
            .collect()
    }

    fn requests(unit: &str, per_window: &[&[f64]]) -> Fetched {
        Fetched::new(
            labels(&[("__name__", "reqs_total"), ("unit", unit)]),
            Reading::Counter(Part::Sum { unit: 1.0 }),
            windows(1000, per_window),
        )
    }

    #[test]
    fn rate_and_increase_add_up_the_increases_of_whole_windows() {
        // Increases of 5, 10, 20, 40 in four 10 s windows from 1000 s.
        let data = [(
            "reqs_total",
            vec![requests("a", &[&[5.0], &[4.0, 6.0], &[20.0], &[40.0]])],
        )];
        let rate = floats(eval("rate(reqs_total[20s])", &data, &[1020, 1040]).unwrap());
        assert_eq!(
            rate,
            vec![(
                labels(&[("unit", "a")]),
                vec![Some(15.0 / 20.0), Some(60.0 / 20.0)]
            )]
        );
        let increase = floats(eval("increase(reqs_total[40s])", &data, &[1040]).unwrap());
        assert_eq!(increase[0].1, vec![Some(75.0)]);
        // Running totals 5, 15, 35, 75: three changes, never a reset.
        let changes = floats(eval("changes(reqs_total[40s])", &data, &[1040]).unwrap());
        assert_eq!(changes[0].1, vec![Some(3.0)]);
        let resets = floats(eval("resets(reqs_total[40s])", &data, &[1040]).unwrap());
        assert_eq!(resets[0].1, vec![Some(0.0)]);
        // A bare counter is its running total; it keeps its name.
        let total = floats(eval("reqs_total", &data, &[1030, 1040, 1400]).unwrap());
        assert_eq!(total[0].0["__name__"], "reqs_total");
        assert_eq!(total[0].1, vec![Some(35.0), Some(75.0), None]);
    }

    #[test]
    fn aggregations_group_and_binary_operators_match() {
        let data = [(
            "reqs_total",
            vec![
                requests("a", &[&[10.0], &[10.0]]),
                requests("b", &[&[30.0], &[50.0]]),
            ],
        )];
        let at = &[1020];
        let sum = floats(eval("sum(rate(reqs_total[20s]))", &data, at).unwrap());
        assert_eq!(sum, vec![(Labels::new(), vec![Some(5.0)])]);
        let by = floats(eval("sum by (unit) (increase(reqs_total[20s]))", &data, at).unwrap());
        assert_eq!(by[1], (labels(&[("unit", "b")]), vec![Some(80.0)]));
        let top = floats(eval("topk(1, increase(reqs_total[20s]))", &data, at).unwrap());
        assert_eq!(top, vec![(labels(&[("unit", "b")]), vec![Some(80.0)])]);
        let share = floats(
            eval(
                "increase(reqs_total[20s]) / ignoring(unit) group_left sum(increase(reqs_total[20s]))",
                &data,
                at,
            )
            .unwrap(),
        );
        assert_eq!(share[0].1, vec![Some(0.2)]);
        assert_eq!(share[1].1, vec![Some(0.8)]);
        let filtered = floats(eval("increase(reqs_total[20s]) > 50", &data, at).unwrap());
        assert_eq!(filtered, vec![(labels(&[("unit", "b")]), vec![Some(80.0)])]);
        let boolean = floats(eval("increase(reqs_total[20s]) > bool 50", &data, at).unwrap());
        assert_eq!(boolean[0].1, vec![Some(0.0)]);
        let quantile = floats(eval("quantile(0.5, increase(reqs_total[20s]))", &data, at).unwrap());
        assert_eq!(quantile[0].1, vec![Some(50.0)]);
        // Two series of the same labels on one side are an error.
        let error = eval("reqs_total + on() reqs_total", &data, at).unwrap_err();
        assert!(matches!(error, EvalError::Execution(_)), "{error:?}");
        let absent = floats(eval(r#"absent(nope{unit="c"})"#, &data, at).unwrap());
        assert_eq!(absent, vec![(labels(&[("unit", "c")]), vec![Some(1.0)])]);
        let replaced = floats(
            eval(
                r#"label_replace(sum by (unit) (increase(reqs_total[20s])), "dc", "dc-$1", "unit", "(.*)")"#,
                &data,
                at,
            )
            .unwrap(),
        );
        assert_eq!(replaced[0].0, labels(&[("dc", "dc-a"), ("unit", "a")]));
    }

    #[test]
    fn gauges_read_their_windows_and_histograms_their_distributions() {
        let gauge = Fetched::new(
            labels(&[("__name__", "temp")]),
            Reading::Gauge,
            windows(1000, &[&[1.0, 3.0], &[10.0], &[5.0, 7.0]]),
        );
        let data = [("temp", vec![gauge])];
        let at = &[1030];
        let read = |q| floats(eval(q, &data, at).unwrap())[0].1[0].unwrap();
        assert_eq!(read("temp"), 6.0);
        assert_eq!(read("avg_over_time(temp[30s])"), 26.0 / 5.0);
        assert_eq!(read("max_over_time(temp[30s])"), 10.0);
        assert_eq!(read("min_over_time(temp[20s])"), 5.0);
        assert_eq!(read("count_over_time(temp[30s])"), 5.0);
        assert_eq!(read("sum_over_time(temp[30s])"), 26.0);
        assert_eq!(read("delta(temp[30s])"), 4.0);
        // Means 2, 10, 6: two changes, one of them down.
        assert_eq!(read("changes(temp[30s])"), 2.0);
        assert_eq!(read("resets(temp[30s])"), 1.0);
        assert_eq!(read("changes(temp[10s])"), 0.0);
        // The newest window, 1020–1030 s, ended by 1030 s; read at 1025 s,
        // the sample is that step's; an expression's samples are the step's.
        assert_eq!(read("timestamp(temp)"), 1030.0);
        let at_1025 = floats(eval("timestamp(temp)", &data, &[1025]).unwrap());
        assert_eq!(at_1025[0].1, vec![Some(1025.0)]);
        assert_eq!(at_1025[0].0, Labels::new());
        let at_1035 = |q| floats(eval(q, &data, &[1035]).unwrap())[0].1[0];
        assert_eq!(at_1035("timestamp(temp)"), Some(1030.0));
        assert_eq!(at_1035("timestamp(temp * 2)"), Some(1035.0));
        assert_eq!(read("clamp_max(temp, 2)"), 2.0);
        let values: Vec<f64> = (1..=1000).map(f64::from).collect();
        let latency = |unit| {
            Fetched::new(
                labels(&[("__name__", "lat_bucket"), ("unit", unit)]),
                Reading::Histogram { unit: 0.001 },
                windows(1000, &[&values[..500], &values[500..]]),
            )
        };
        let data = [("lat_bucket", vec![latency("a"), latency("b")])];
        let p99 = floats(
            eval(
                "histogram_quantile(0.99, sum by (le) (rate(lat_bucket[20s])))",
                &data,
                &[1020],
            )
            .unwrap(),
        );
        let p99 = p99[0].1[0].unwrap();
        assert!((p99 - 0.990).abs() <= 0.990 * RELATIVE_ERROR, "{p99}");
        let merged = eval("sum(rate(lat_bucket[20s]))", &data, &[1020]).map(floats);
        assert_eq!(
            merged.unwrap()[0].1,
            vec![None],
            "a distribution is no float"
        );
    }

    #[test]
    fn dates_are_read_in_utc() {
        // 2024-02-29 13:45:30 UTC, a Thursday, the 60th day of a leap year.
        let at = 1_709_214_330;
        let data = [(
            "t",
            vec![Fetched::new(
                labels(&[("__name__", "t"), ("unit", "a")]),
                Reading::Gauge,
                windows(1000, &[&[at as f64]]),
            )],
        )];
        let read = |q: &str| floats(eval(q, &data, &[1010]).unwrap());
        for (function, expected) in [
            ("year", 2024.0),
            ("month", 2.0),
            ("day_of_month", 29.0),
            ("day_of_week", 4.0),
            ("day_of_year", 60.0),
            ("days_in_month", 29.0),
            ("hour", 13.0),
            ("minute", 45.0),
        ] {
            assert_eq!(
                read(&format!("{function}(t)")),
                vec![(labels(&[("unit", "a")]), vec![Some(expected)])],
                "{function}"
            );
        }
        // Without an argument, of the evaluation time: 1970-01-01 00:16:50.
        let now = floats(eval("minute()", &data, &[1010]).unwrap());
        assert_eq!(now, vec![(Labels::new(), vec![Some(16.0)])]);
        assert_eq!(read("deg(vector(pi()))")[0].1, vec![Some(180.0)]);
        assert_eq!(read("cos(vector(0))")[0].1, vec![Some(1.0)]);
    }

    #[test]
    fn deriv_and_predict_linear_fit_a_line() {
        // A gauge rising 2 a second: window means 10, 30, 50 at their
        // middles, 1005, 1015, 1025 s.
        let gauge = Fetched::new(
            labels(&[("__name__", "g")]),
            Reading::Gauge,
            windows(1000, &[&[5.0, 15.0], &[30.0], &[50.0]]),
        );
        let data = [
            ("g", vec![gauge]),
            ("reqs_total", vec![requests("a", &[&[5.0], &[5.0], &[5.0]])]),
        ];
        let read = |q: &str| floats(eval(q, &data, &[1030]).unwrap())[0].1[0].unwrap();
        assert!((read("deriv(g[30s])") - 2.0).abs() < 1e-9);
        // At 1030 s the line is at 60; 100 s later at 260.
        assert!((read("predict_linear(g[30s], 100)") - 260.0).abs() < 1e-9);
        // Running totals 5, 10, 15 at 1010, 1020, 1030 s: half a request a
        // second.
        assert!((read("deriv(reqs_total[30s])") - 0.5).abs() < 1e-9);
        assert!((read("predict_linear(reqs_total[30s], 60)") - 45.0).abs() < 1e-9);
        let one = floats(eval("deriv(g[10s])", &data, &[1010]).unwrap());
        assert!(one.is_empty(), "one point has no slope: {one:?}");
    }

    #[test]
    fn count_values_counts_each_value() {
        let gauge = |unit: &str, value: f64| {
            Fetched::new(
                labels(&[("__name__", "g"), ("unit", unit)]),
                Reading::Gauge,
                windows(1000, &[&[value]]),
            )
        };
        let data = [("g", vec![gauge("a", 2.0), gauge("b", 2.0), gauge("c", 0.5)])];
        let counted = floats(eval(r#"count_values("v", g)"#, &data, &[1010]).unwrap());
        assert_eq!(
            counted,
            vec![
                (labels(&[("v", "0.5")]), vec![Some(1.0)]),
                (labels(&[("v", "2")]), vec![Some(2.0)]),
            ]
        );
        let error = eval(r#"count_values("not a label", g)"#, &data, &[1010]).unwrap_err();
        assert_eq!(error.to_string(), "invalid label name \"not a label\"");
    }

    #[test]
    fn what_is_not_done_is_named() {
        let unsupported = |q: &str| {
            let expr = promql_parser::parser::parse(q).unwrap();
            let error = match needs(&expr, &mut Vec::new()) {
                Err(error) => error,
                Ok(()) => eval(q, &[], &[1000]).unwrap_err(),
            };
            error.to_string()
        };
        assert_eq!(
            unsupported("holt_winters(x[5m], 0.5, 0.5)"),
            "function \"holt_winters\" is not supported by Vigil's PromQL"
        );
        assert_eq!(
            unsupported("max_over_time(rate(x[1m])[5m:1m])"),
            "Vigil's PromQL does not support subqueries"
        );
    }
}
