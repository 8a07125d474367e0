//! `query` and `query_range`: an expression parsed by `promql-parser`, its
//! selectors resolved against the catalogue and read from the rollups, then
//! evaluated by `promql.rs`, answered in Prometheus's shapes.
//!
//! Which rollups: the widest width that divides every range, offset, the
//! step and the first evaluation time (so a range `[t − r, t)` is made of
//! whole windows), where those windows have closed, and 10 s windows for
//! the rest, as `/api/v1/query` reads them (`crate::query::cover`).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::response::Response;
use promql_parser::label::MatchOp;
use promql_parser::parser::{self, Expr, LabelModifier};
use serde_json::{Value as Json, json};
use vigil_domain::model::{Kind, SeriesKey};
use vigil_domain::signal::Matcher;
use vigil_store::{Aggregation, CatalogueEntry, RollupQuery};

use vigil_promql::eval::{
    Data, EvalError, Evaluator, Fetched, Need, Sample, Series, Value, Window, millis, needs,
    offset_ms, selector_key,
};
use vigil_promql::names::{
    Labels, Named, Reading, kinds_named, prometheus_series_named, service_label, vigil_label,
};
use vigil_promql::{distinct, matchers, selects};

use super::{Asked, Form, PromError, seen_in, success};
use crate::auth::Caller;
use crate::error::ApiError;
use crate::query::{MAX_POINTS, Selection, cover, widths};
use crate::server::AppState;

impl From<EvalError> for PromError {
    fn from(error: EvalError) -> Self {
        match error {
            EvalError::BadData(message) => PromError::bad_data(message),
            EvalError::Execution(message) => PromError {
                status: axum::http::StatusCode::UNPROCESSABLE_ENTITY,
                kind: "execution",
                message,
            },
        }
    }
}

fn now_ms() -> i64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(now.as_millis()).unwrap_or(i64::MAX)
}

/// `GET|POST /query`: the expression at `time` (default now).
pub async fn instant(
    State(state): State<Arc<AppState>>,
    asked: Asked,
) -> Result<Response, PromError> {
    let form = &asked.form;
    let expr = expression(form)?;
    let time = form.time_ms("time")?.unwrap_or_else(now_ms);
    let steps = [time];
    let data = read(&state, &asked.caller, &expr, &steps, None).await?;
    if let Expr::MatrixSelector(ms) = &expr {
        return Ok(success(json!({
            "resultType": "matrix",
            "result": raw_windows(&data, &ms.vs, time, millis(ms.range))?,
        })));
    }
    let value = Evaluator {
        steps: &steps,
        data: &data,
    }
    .eval(&expr)?;
    let data = match value {
        Value::Scalar(values) => json!({
            "resultType": "scalar",
            "result": [timestamp(time), number(values[0])],
        }),
        Value::String(text) => json!({
            "resultType": "string",
            "result": [timestamp(time), text],
        }),
        Value::Vector(series) => {
            let result: Vec<Json> = floats(series)?
                .into_iter()
                .filter_map(|(labels, points)| {
                    let v = points[0]?;
                    Some(json!({"metric": labels, "value": [timestamp(time), number(v)]}))
                })
                .collect();
            json!({"resultType": "vector", "result": result})
        }
    };
    Ok(success(data))
}

/// `GET|POST /query_range`: the expression at every step from `start` to
/// `end`.
pub async fn range(
    State(state): State<Arc<AppState>>,
    asked: Asked,
) -> Result<Response, PromError> {
    let form = &asked.form;
    let expr = expression(form)?;
    let start = form
        .time_ms("start")?
        .ok_or_else(|| PromError::bad_data("invalid parameter \"start\": missing"))?;
    let end = form
        .time_ms("end")?
        .ok_or_else(|| PromError::bad_data("invalid parameter \"end\": missing"))?;
    if end < start {
        return Err(PromError::bad_data(
            "invalid parameter \"end\": end timestamp must not be before start time",
        ));
    }
    let step = step_ms(form)?;
    if (end - start) / step >= MAX_POINTS as i64 {
        return Err(PromError::bad_data(
            "exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the query resolution (?step=XX)",
        ));
    }
    if let kind @ (Expr::MatrixSelector(_) | Expr::StringLiteral(_)) = &expr {
        let kind = if matches!(kind, Expr::StringLiteral(_)) {
            "string"
        } else {
            "range vector"
        };
        return Err(PromError::bad_data(format!(
            "invalid expression type {kind:?} for range query, must be Scalar or instant Vector"
        )));
    }
    let steps: Vec<i64> = (0..=(end - start) / step)
        .map(|i| start + i * step)
        .collect();
    let data = read(&state, &asked.caller, &expr, &steps, Some(step)).await?;
    let value = Evaluator {
        steps: &steps,
        data: &data,
    }
    .eval(&expr)?;
    let series = match value {
        Value::Scalar(values) => vec![Series {
            labels: Labels::new(),
            points: values.into_iter().map(|v| Some(Sample::Float(v))).collect(),
        }],
        Value::Vector(mut series) => {
            series.sort_by(|a, b| a.labels.cmp(&b.labels));
            series
        }
        Value::String(_) => Vec::new(),
    };
    let result = floats(series)?
        .into_iter()
        .map(|(labels, points)| {
            let values: Vec<Json> = points
                .iter()
                .zip(&steps)
                .filter_map(|(point, &t)| Some(json!([timestamp(t), number((*point)?)])))
                .collect();
            Ok(json!({"metric": labels, "values": values}))
        })
        .collect::<Result<Vec<_>, PromError>>()?;
    Ok(success(json!({"resultType": "matrix", "result": result})))
}

fn expression(form: &Form) -> Result<Expr, PromError> {
    let text = form
        .all("query")
        .next()
        .ok_or_else(|| PromError::bad_data("invalid parameter \"query\": missing"))?;
    parser::parse(text)
        .map_err(|error| PromError::bad_data(format!("invalid parameter \"query\": {error}")))
}

/// The `step` parameter: seconds with a fraction, or a duration (`1m`).
fn step_ms(form: &Form) -> Result<i64, PromError> {
    let text = form
        .all("step")
        .next()
        .ok_or_else(|| PromError::bad_data("invalid parameter \"step\": missing"))?;
    let ms = match text.parse::<f64>() {
        Ok(seconds) if seconds.is_finite() => (seconds * 1000.0).round() as i64,
        _ => promql_parser::util::parse_duration(text)
            .map(|d| d.as_millis() as i64)
            .map_err(|_| {
                PromError::bad_data(format!(
                    "invalid parameter \"step\": cannot parse {text:?} to a valid duration"
                ))
            })?,
    };
    if ms <= 0 {
        return Err(PromError::bad_data(
            "invalid parameter \"step\": zero or negative query resolution step widths are not accepted. Try a positive integer",
        ));
    }
    Ok(ms)
}

/// A float of the answer; a distribution cannot be one.
fn float(sample: &Sample) -> Result<f64, PromError> {
    match sample {
        Sample::Float(v) => Ok(*v),
        Sample::Histogram(_) => Err(mixed()),
    }
}

fn mixed() -> PromError {
    EvalError::Execution("a series holds both floats and distributions".to_owned()).into()
}

/// A series of the answer as Prometheus has it: its labels, and a float or
/// none per step.
type Floats = (Labels, Vec<Option<f64>>);

/// The answer's series as Prometheus's series of floats, a point or none
/// per step. A series of distributions (a `_bucket` series read without
/// `histogram_quantile`, as a Grafana heatmap asks for it) is answered as
/// a classic histogram: one series per `le`, cumulative, at the upper
/// bounds of buckets growing by 2^¼ (±9 %; values ≤ 0 under `le="0"`),
/// and `+Inf`; a rate's counts per second.
fn floats(series: Vec<Series>) -> Result<Vec<Floats>, PromError> {
    let mut out = Vec::new();
    for s in series {
        let distributions = s
            .points
            .iter()
            .flatten()
            .any(|point| matches!(point, Sample::Histogram(_)));
        if distributions {
            out.extend(classic_buckets(&s)?);
        } else {
            let points = s
                .points
                .iter()
                .map(|point| point.as_ref().map(float).transpose())
                .collect::<Result<_, _>>()?;
            out.push((s.labels, points));
        }
    }
    Ok(out)
}

/// `series`' distributions as classic cumulative buckets (see [`floats`]).
fn classic_buckets(series: &Series) -> Result<Vec<Floats>, PromError> {
    // A bucket by the quarter-exponent of its upper bound (None: ≤ 0).
    type Bucket = Option<i64>;
    let mut bounds: BTreeSet<Bucket> = BTreeSet::new();
    let mut steps: Vec<Option<(BTreeMap<Bucket, u64>, f64)>> = Vec::new();
    for point in &series.points {
        let Some(point) = point else {
            steps.push(None);
            continue;
        };
        let Sample::Histogram(h) = point else {
            return Err(mixed());
        };
        let over = match h.rate_s {
            None => 1.0,
            Some(range_s) if range_s.is_finite() && range_s > 0.0 => range_s,
            Some(_) => {
                return Err(EvalError::Execution(
                    "rates over different ranges were summed into one distribution".to_owned(),
                )
                .into());
            }
        };
        let mut counts: BTreeMap<Bucket, u64> = BTreeMap::new();
        for (value, n) in h.distribution.ascending() {
            let value = value * h.unit;
            let bucket = (value > 0.0).then(|| (4.0 * value.log2()).ceil() as i64);
            *counts.entry(bucket).or_default() += n;
            bounds.insert(bucket);
        }
        steps.push(Some((counts, over)));
    }
    let named = |le: String| {
        let mut labels = series.labels.clone();
        labels.insert("le".to_owned(), le);
        labels
    };
    let below = |bound: Option<Bucket>| -> Vec<Option<f64>> {
        steps
            .iter()
            .map(|step| {
                let (counts, over) = step.as_ref()?;
                let n: u64 = counts
                    .iter()
                    .filter(|(bucket, _)| bound.is_none_or(|bound| **bucket <= bound))
                    .map(|(_, n)| n)
                    .sum();
                Some(n as f64 / over)
            })
            .collect()
    };
    let mut out: Vec<Floats> = bounds
        .iter()
        .map(|&bucket| {
            let le = bucket.map_or(0.0, |quarter| (quarter as f64 / 4.0).exp2());
            (named(number(le)), below(Some(bucket)))
        })
        .collect();
    out.push((named("+Inf".to_owned()), below(None)));
    Ok(out)
}

/// A time as Prometheus writes it: unix seconds, with milliseconds when
/// there are any.
fn timestamp(ms: i64) -> Json {
    if ms % 1000 == 0 {
        json!(ms / 1000)
    } else {
        json!(ms as f64 / 1000.0)
    }
}

/// A value as Prometheus writes it: a string, `NaN`, `+Inf`, `-Inf`.
fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_owned()
    } else if v == f64::INFINITY {
        "+Inf".to_owned()
    } else if v == f64::NEG_INFINITY {
        "-Inf".to_owned()
    } else {
        v.to_string()
    }
}

/// A range selector asked for alone: each series' windows in
/// `[time − range, time)`, each at its end.
fn raw_windows(
    data: &Data,
    selector: &promql_parser::parser::VectorSelector,
    time: i64,
    range_ms: i64,
) -> Result<Vec<Json>, PromError> {
    let t = time - offset_ms(selector);
    let mut result = Vec::new();
    for fetched in data
        .get(&selector_key(selector))
        .map_or(&[][..], Vec::as_slice)
    {
        let values: Vec<Json> = fetched
            .samples(t - range_ms, t)
            .map(|(end, sample)| float(&sample).map(|v| json!([timestamp(end), number(v)])))
            .collect::<Result<_, _>>()?;
        if !values.is_empty() {
            result.push(json!({"metric": fetched.labels, "values": values}));
        }
    }
    Ok(result)
}

/// Reads every selector of `expr` for evaluation at `steps`: the catalogue
/// once, then the rollups of each Vigil series once, over the span all
/// the selectors choosing it need (the error ratio of a span reads its
/// rollups once for `_errors_total` and `_requests_total`), one store read
/// per service and width.
async fn read(
    state: &AppState,
    caller: &Caller,
    expr: &Expr,
    steps: &[i64],
    step_ms: Option<i64>,
) -> Result<Data, PromError> {
    let mut wanted = Vec::new();
    needs(expr, &mut wanted)?;
    if wanted.is_empty() {
        return Ok(Data::new());
    }
    let (first, last) = (steps[0], steps[steps.len() - 1]);
    let from = wanted
        .iter()
        .map(|need| first - offset_ms(&need.selector) - need.range_ms)
        .min()
        .unwrap_or(first);
    let to = wanted
        .iter()
        .map(|need| last - offset_ms(&need.selector))
        .max()
        .unwrap_or(last);
    let from_s = (from.max(0) / 1000) as u64 / 10 * 10;
    let to_s = (to.max(0) as u64).div_ceil(1000).div_ceil(10) * 10;
    // The widths that tile every range, offset and step.
    let resolution = wanted
        .iter()
        .flat_map(|need| [need.range_ms, offset_ms(&need.selector).abs()])
        .chain([first, step_ms.unwrap_or(0)])
        .fold(0, gcd);
    let mut usable: Vec<u32> = widths(None)
        .into_iter()
        .filter(|&w| resolution % (i64::from(w) * 1000) == 0)
        .collect();
    if usable.is_empty() {
        usable = vec![10];
    }
    let catalogue = seen_in(state, &caller.tenant, from_s, to_s, &scopes(&wanted)).await?;
    let mut chosen: HashMap<String, Vec<(SeriesKey, Named)>> = wanted
        .iter()
        .map(|need| (selector_key(&need.selector), resolve(&catalogue, need)))
        .collect();
    let reader = state.reader(caller.tenant.clone(), (now_ms() / 1000) as u64);
    let closed_until = reader.now_s.saturating_sub(reader.settle_s);
    // Selectors only ever summed by the same labels are merged by the
    // store, one row per group and window, not read series by series.
    let mut data = Data::new();
    for (key, by) in merged_selectors(expr) {
        let Some(need) = wanted
            .iter()
            .find(|need| selector_key(&need.selector) == key)
        else {
            continue;
        };
        let Some(merge) = chosen
            .get(&key)
            .and_then(|series| Merge::of(&catalogue, need, series, &by))
        else {
            continue;
        };
        // Span series summed as their totals are, by span kind and
        // deployment: the totals' few series are read instead.
        let selection = reader
            .through_totals(&merge.selection, from_s)
            .await?
            .unwrap_or(merge.selection);
        let mut groups: HashMap<Vec<String>, Vec<Window>> = HashMap::new();
        let mut rows = 0;
        for segment in cover(from_s, to_s, &usable, closed_until) {
            let query = Aggregation {
                tenant: caller.tenant.clone(),
                kind: selection.kind,
                width_s: segment.width_s,
                from_s: segment.from_s,
                to_s: segment.to_s,
                step_s: u64::from(segment.width_s),
                service: selection.service.clone(),
                name: selection.name.clone(),
                matchers: selection.matchers.clone(),
                group_by: selection.group_by.clone(),
                buckets: selection.buckets,
                limit: reader.max_points + 1,
            };
            let merged = state.within(reader.aggregate(&query)).await?;
            rows += merged.len();
            if rows > reader.max_points {
                return Err(too_many(reader.max_points));
            }
            for row in merged {
                let start_ms = row.start_s as i64 * 1000;
                groups.entry(row.group).or_default().push(Window {
                    start_ms,
                    end_ms: start_ms + i64::from(segment.width_s) * 1000,
                    rollup: Arc::new(row.rollup),
                });
            }
        }
        let fetched = groups
            .into_iter()
            .map(|(group, mut windows)| {
                windows.sort_by_key(|w| w.start_ms);
                let labels: Labels = by
                    .iter()
                    .zip(group)
                    .filter(|(_, value)| !value.is_empty())
                    .map(|(name, value)| (name.clone(), value))
                    .collect();
                Fetched::new(labels, merge.reading, windows.into())
            })
            .collect();
        data.insert(key.clone(), fetched);
        chosen.remove(&key);
    }
    // One read per service (the store's index holds a service's names
    // together): of its one name when the series chosen share it, else of
    // all its names, never one read per name.
    let mut by_service: HashMap<(Kind, &str), HashSet<&SeriesKey>> = HashMap::new();
    for (series, _) in chosen.values().flatten() {
        by_service
            .entry((series.kind, &series.service))
            .or_default()
            .insert(series);
    }
    let mut windows: HashMap<SeriesKey, Vec<Window>> = HashMap::new();
    let mut windows_read = 0;
    for ((kind, service), wanted) in by_service {
        let mut names = wanted.iter().map(|series| &series.name);
        let first = names.next().cloned();
        let name = first.filter(|first| names.all(|name| name == first));
        for segment in cover(from_s, to_s, &usable, closed_until) {
            let query = RollupQuery {
                tenant: Some(caller.tenant.clone()),
                kind: Some(kind),
                service: Some(service.to_owned()),
                name: name.clone(),
                ..RollupQuery::new(segment.width_s, segment.from_s, segment.to_s)
            };
            let rows = state
                .within(async { Ok(reader.store.rollups(&query).await?) })
                .await?;
            for row in rows.into_iter().filter(|row| wanted.contains(&row.series)) {
                windows_read += 1;
                let start_ms = row.start_s as i64 * 1000;
                windows.entry(row.series).or_default().push(Window {
                    start_ms,
                    end_ms: start_ms + i64::from(row.width_s) * 1000,
                    rollup: Arc::new(row.rollup),
                });
            }
            if windows_read > reader.max_points {
                return Err(too_many(reader.max_points));
            }
        }
    }
    let windows: HashMap<SeriesKey, Arc<[Window]>> = windows
        .into_iter()
        .map(|(series, mut windows)| {
            windows.sort_by_key(|w| w.start_ms);
            (series, windows.into())
        })
        .collect();
    for (key, chosen) in chosen {
        let fetched = chosen
            .into_iter()
            .filter_map(|(series, named)| {
                let windows = Arc::clone(windows.get(&series)?);
                Some(Fetched::new(named.labels, named.reading, windows))
            })
            .collect();
        data.insert(key, fetched);
    }
    Ok(data)
}

/// The parts of the catalogue the selectors of `wanted` can choose from: for
/// a selector naming its metric by an equality, the kinds of series so named
/// (of one service when an equality on the kind's service label names it);
/// every series when a selector names none.
fn scopes(wanted: &[Need]) -> Vec<(Option<Kind>, Option<String>)> {
    let mut scopes: BTreeSet<(Kind, Option<String>)> = BTreeSet::new();
    for need in wanted {
        let matchers = matchers(&need.selector);
        if !matchers.or_matchers.is_empty() {
            return vec![(None, None)];
        }
        let equal = |label: &str| {
            matchers
                .matchers
                .iter()
                .find(|m| m.name == label && matches!(m.op, MatchOp::Equal))
                .map(|m| m.value.clone())
        };
        let Some(name) = equal("__name__") else {
            return vec![(None, None)];
        };
        for kind in kinds_named(&name) {
            scopes.insert((kind, service_label(kind).and_then(equal)));
        }
    }
    // A kind read whole holds its services' series.
    let whole: Vec<Kind> = scopes
        .iter()
        .filter(|(_, service)| service.is_none())
        .map(|(kind, _)| *kind)
        .collect();
    scopes
        .into_iter()
        .filter(|(kind, service)| service.is_none() || !whole.contains(kind))
        .map(|(kind, service)| (Some(kind), service))
        .collect()
}

fn too_many(max_points: usize) -> PromError {
    ApiError::Limit {
        limit: "api.max_points",
        message: format!(
            "the query reads more than {max_points} windows; narrow the range or the selection"
        ),
    }
    .into()
}

/// The selectors every use of which is `sum by (L) (rate(s[r]))` or
/// `increase`, with the same `L` (less `le`, which Vigil's distributions do
/// not have), by [`selector_key`]: what the store can merge per group, as
/// the sum of the groups' rates is the rate of their merged windows.
fn merged_selectors(expr: &Expr) -> HashMap<String, Vec<String>> {
    fn note(uses: &mut HashMap<String, Option<Vec<String>>>, key: String, by: Option<Vec<String>>) {
        let entry = uses.entry(key).or_insert_with(|| by.clone());
        if *entry != by {
            *entry = None;
        }
    }
    fn walk(expr: &Expr, uses: &mut HashMap<String, Option<Vec<String>>>) {
        match expr {
            Expr::Aggregate(aggregate) => {
                if let (Some(LabelModifier::Include(by)), None, Expr::Call(call)) = (
                    &aggregate.modifier,
                    &aggregate.param,
                    aggregate.expr.as_ref(),
                ) && aggregate.op.to_string() == "sum"
                    && matches!(call.func.name, "rate" | "increase")
                    && let [argument] = call.args.args.as_slice()
                    && let Expr::MatrixSelector(ms) = argument.as_ref()
                {
                    let mut by: Vec<String> =
                        by.labels.iter().filter(|l| *l != "le").cloned().collect();
                    by.sort();
                    by.dedup();
                    note(uses, selector_key(&ms.vs), Some(by));
                    return;
                }
                if let Some(param) = &aggregate.param {
                    walk(param, uses);
                }
                walk(&aggregate.expr, uses);
            }
            Expr::VectorSelector(vs) => note(uses, selector_key(vs), None),
            Expr::MatrixSelector(ms) => note(uses, selector_key(&ms.vs), None),
            Expr::Unary(unary) => walk(&unary.expr, uses),
            Expr::Binary(binary) => {
                walk(&binary.lhs, uses);
                walk(&binary.rhs, uses);
            }
            Expr::Paren(paren) => walk(&paren.expr, uses),
            Expr::Call(call) => call.args.args.iter().for_each(|arg| walk(arg, uses)),
            Expr::Subquery(subquery) => walk(&subquery.expr, uses),
            Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => {}
        }
    }
    let mut uses = HashMap::new();
    walk(expr, &mut uses);
    uses.into_iter()
        .filter_map(|(key, by)| Some((key, by?)))
        .collect()
}

/// How the store selects and groups a selector's series to merge them.
struct Merge {
    /// Grouped by the Vigil labels of the Prometheus labels summed by.
    selection: Selection,
    reading: Reading,
}

impl Merge {
    /// How the store merges `chosen`, the series `need` chose, by the
    /// Prometheus labels `by`: when they are of one kind and read alike,
    /// each label of `by` is one Vigil label, and the store's selection
    /// (kind, service, name and the selector's equality matchers) picks
    /// exactly them among the catalogue's series. `None` otherwise: they
    /// are read series by series.
    fn of(
        catalogue: &[CatalogueEntry],
        need: &Need,
        chosen: &[(SeriesKey, Named)],
        by: &[String],
    ) -> Option<Merge> {
        let ((first, named), rest) = chosen.split_first()?;
        let reading = named.reading;
        if matches!(reading, Reading::Gauge)
            || rest
                .iter()
                .any(|(series, named)| series.kind != first.kind || named.reading != reading)
        {
            return None;
        }
        let common = |field: fn(&SeriesKey) -> &String| {
            let value = field(first);
            rest.iter()
                .all(|(series, _)| field(series) == value)
                .then(|| value.clone())
        };
        let service = common(|series| &series.service);
        let name = common(|series| &series.name);
        let label = |prometheus: &str| -> Option<String> {
            let mut found: Option<String> = None;
            for (series, _) in chosen {
                if let Some(key) = vigil_label(series, prometheus).ok()? {
                    if found.as_ref().is_some_and(|f| *f != key) {
                        return None;
                    }
                    found = Some(key);
                }
            }
            // A label none of them has groups them all under "".
            Some(found.unwrap_or_else(|| prometheus.to_owned()))
        };
        let group_by = by.iter().map(|l| label(l)).collect::<Option<Vec<_>>>()?;
        let mut matchers = Vec::new();
        for m in &need.selector.matchers.matchers {
            let is_equal = match m.op {
                MatchOp::Equal => true,
                MatchOp::NotEqual => false,
                _ => continue,
            };
            if m.name == "__name__" {
                continue;
            }
            matchers.push(Matcher {
                name: label(&m.name)?,
                value: m.value.clone(),
                is_equal,
            });
        }
        let selects = |series: &SeriesKey| {
            series.kind == first.kind
                && service.as_ref().is_none_or(|s| *s == series.service)
                && name.as_ref().is_none_or(|n| *n == series.name)
                && matchers.iter().all(|m| m.matches(series))
        };
        let picked: HashSet<&SeriesKey> = catalogue
            .iter()
            .map(|entry| &entry.series)
            .filter(|series| selects(series))
            .collect();
        let exact = picked.len() == chosen.len()
            && chosen.iter().all(|(series, _)| picked.contains(series));
        exact.then_some(Merge {
            selection: Selection {
                kind: first.kind,
                service,
                name,
                matchers,
                group_by,
                buckets: matches!(reading, Reading::Histogram { .. }),
            },
            reading,
        })
    }
}

fn gcd(a: i64, b: i64) -> i64 {
    let (mut a, mut b) = (a.abs(), b.abs());
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// The Vigil series a selector chooses, each with the Prometheus series it
/// is seen as; a series named so in the catalogue wins over a metric's
/// `_bucket`, `_count` or `_sum` with the same labels.
fn resolve(catalogue: &[CatalogueEntry], need: &Need) -> Vec<(SeriesKey, Named)> {
    let matchers = matchers(&need.selector);
    // The name is matched first: the labels of names not asked for are
    // never built.
    let names: Vec<&promql_parser::label::Matcher> = if matchers.or_matchers.is_empty() {
        matchers
            .matchers
            .iter()
            .filter(|m| m.name == "__name__")
            .collect()
    } else {
        Vec::new()
    };
    let wanted = |name: &str| names.iter().all(|m| m.is_match(name));
    distinct(catalogue.iter().flat_map(|entry| {
        prometheus_series_named(&entry.series, wanted)
            .into_iter()
            .filter(|named| selects(&matchers, named))
            .map(|named| (entry.series.clone(), named))
    }))
}
