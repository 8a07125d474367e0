//! Prometheus alerting rules on the stream of windows: the series their
//! selectors choose keep their 10 s windows over the longest range any of
//! them reads (lookback and offset included), and at each boundary each
//! expression is evaluated at that instant by `vigil_promql`, over those
//! windows, as the API's `/prometheus/api/v1/query` evaluates it over the
//! store's. Each series of the result is a verdict, labelled as the result
//! is without `__name__`, valued by its sample.
//!
//! Which selectors choose a series, and as which Prometheus series, is
//! worked out once per series; a selector several rules share is one.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use promql_parser::label::Matchers;
use vigil_domain::model::{Rollup, SeriesKey};
use vigil_domain::tenant::TenantId;
use vigil_promql::eval::{Data, Evaluator, Fetched, Sample, Value, Window, selector_key};
use vigil_promql::names::{Named, prometheus_series};
use vigil_promql::{distinct, matchers, selects};

use crate::eval::Verdict;
use crate::rules::{Check, Expression, Rule, STEP_S};

/// A selector of the rules, with its tenant.
#[derive(Debug)]
struct Selector {
    tenant: TenantId,
    matchers: Matchers,
}

/// A chosen series and its windows.
#[derive(Debug)]
struct Kept {
    series: SeriesKey,
    /// The selectors choosing it (their index), each with the Prometheus
    /// series it is seen as.
    chosen: Arc<[(usize, Named)]>,
    /// Rollups by window start, with the window's width.
    windows: BTreeMap<u64, (u64, Arc<Rollup>)>,
}

impl Kept {
    fn windows(&self) -> Arc<[Window]> {
        self.windows
            .iter()
            .map(|(&start_s, (width_s, rollup))| Window {
                start_ms: start_s as i64 * 1_000,
                end_ms: (start_s + width_s) as i64 * 1_000,
                rollup: Arc::clone(rollup),
            })
            .collect()
    }
}

/// The windows the PromQL rules read, and their last errors.
#[derive(Debug, Default)]
pub struct Promql {
    selectors: Vec<Selector>,
    /// Selector index by tenant and [`selector_key`].
    index: HashMap<(TenantId, String), usize>,
    /// How long before a boundary windows are kept.
    keep_s: u64,
    /// Which selectors choose each series seen, by series id.
    routes: HashMap<u64, Arc<[(usize, Named)]>>,
    kept: HashMap<u64, Kept>,
    /// What each rule's evaluation last failed with, by rule index.
    errors: HashMap<usize, String>,
}

impl Promql {
    pub fn new(rules: &[Arc<Rule>]) -> Promql {
        let mut promql = Promql::default();
        for rule in rules {
            let Check::Promql(expression) = &rule.check else {
                continue;
            };
            promql.keep_s = promql.keep_s.max(rule.range_s() + STEP_S);
            for need in &expression.needs {
                let key = (rule.tenant.clone(), selector_key(&need.selector));
                if !promql.index.contains_key(&key) {
                    promql.index.insert(key, promql.selectors.len());
                    promql.selectors.push(Selector {
                        tenant: rule.tenant.clone(),
                        matchers: matchers(&need.selector),
                    });
                }
            }
        }
        promql
    }

    /// Takes over the windows `old` kept of the series these rules choose.
    pub fn adopt(&mut self, old: &mut Promql) {
        for (id, kept) in std::mem::take(&mut old.kept) {
            let chosen = self.route(id, &kept.series);
            if !chosen.is_empty() {
                self.kept.insert(id, Kept { chosen, ..kept });
            }
        }
    }

    /// Series whose windows are kept.
    pub fn series(&self) -> usize {
        self.kept.len()
    }

    fn route(&mut self, id: u64, series: &SeriesKey) -> Arc<[(usize, Named)]> {
        if let Some(chosen) = self.routes.get(&id) {
            return Arc::clone(chosen);
        }
        let mut chosen = Vec::new();
        let named = prometheus_series(series);
        for (at, selector) in self.selectors.iter().enumerate() {
            if selector.tenant != series.tenant {
                continue;
            }
            for one in &named {
                if selects(&selector.matchers, one) {
                    chosen.push((at, one.clone()));
                }
            }
        }
        let chosen: Arc<[(usize, Named)]> = chosen.into();
        self.routes.insert(id, Arc::clone(&chosen));
        chosen
    }

    /// Keeps a series' window if a selector chooses the series, unless it
    /// ended before what is kept at `evaluated_through`.
    pub fn ingest(
        &mut self,
        series: &SeriesKey,
        width_s: u64,
        start_s: u64,
        rollup: &Rollup,
        evaluated_through: u64,
    ) {
        if self.selectors.is_empty()
            || start_s + width_s <= evaluated_through.saturating_sub(self.keep_s)
        {
            return;
        }
        let id = series.id();
        let chosen = self.route(id, series);
        if chosen.is_empty() {
            return;
        }
        let kept = self.kept.entry(id).or_insert_with(|| Kept {
            series: series.clone(),
            chosen,
            windows: BTreeMap::new(),
        });
        let (width, merged) = kept.windows.entry(start_s).or_default();
        *width = (*width).max(width_s);
        Arc::make_mut(merged).merge(rollup);
    }

    /// The verdicts of each PromQL rule at `boundary`, by rule index.
    pub fn evaluate(&mut self, rules: &[Arc<Rule>], boundary: u64, verdicts: &mut Vec<Verdict>) {
        let t_ms = boundary as i64 * 1_000;
        let mut windows: HashMap<u64, Arc<[Window]>> = HashMap::new();
        for (i, rule) in rules.iter().enumerate() {
            let Check::Promql(expression) = &rule.check else {
                continue;
            };
            let data = self.data(rule, expression, &mut windows);
            let steps = [t_ms];
            let result = Evaluator {
                steps: &steps,
                data: &data,
            }
            .eval(&expression.expr)
            .map_err(|error| error.to_string())
            .and_then(|value| found(i, value, expression.limit));
            match result {
                Ok(found) => {
                    if self.errors.remove(&i).is_some() {
                        tracing::info!(rule = %rule.name, "the rule evaluates again");
                    }
                    verdicts.extend(found);
                }
                Err(error) => {
                    if self.errors.get(&i) != Some(&error) {
                        tracing::warn!(rule = %rule.name, %error, "the rule's expression failed; it has no alerts until it evaluates");
                        self.errors.insert(i, error);
                    }
                }
            }
        }
        let oldest = boundary.saturating_sub(self.keep_s);
        for kept in self.kept.values_mut() {
            kept.windows = kept.windows.split_off(&oldest);
        }
        self.kept.retain(|_, kept| !kept.windows.is_empty());
    }

    /// The series each selector of `expression` chose, with their windows
    /// (made once per boundary for all the rules).
    fn data(
        &self,
        rule: &Rule,
        expression: &Expression,
        windows: &mut HashMap<u64, Arc<[Window]>>,
    ) -> Data {
        let mut data = Data::new();
        for need in &expression.needs {
            let key = selector_key(&need.selector);
            if data.contains_key(&key) {
                continue;
            }
            let Some(&at) = self.index.get(&(rule.tenant.clone(), key.clone())) else {
                continue;
            };
            let candidates = self.kept.iter().flat_map(|(id, kept)| {
                kept.chosen
                    .iter()
                    .filter(move |(selector, _)| *selector == at)
                    .map(move |(_, named)| ((*id, kept), named.clone()))
            });
            let fetched = distinct(candidates)
                .into_iter()
                .map(|((id, kept), named)| {
                    let windows = windows.entry(id).or_insert_with(|| kept.windows());
                    Fetched::new(named.labels, named.reading, Arc::clone(windows))
                })
                .collect();
            data.insert(key, fetched);
        }
        data
    }
}

/// The verdicts of rule `rule`'s result: each series with a value,
/// labelled without its name; a scalar is one without labels. More than
/// `limit` (when not 0) is an error, as in Prometheus.
fn found(rule: usize, value: Value, limit: u64) -> Result<Vec<Verdict>, String> {
    let verdicts: Vec<Verdict> = match value {
        Value::Scalar(values) => vec![Verdict {
            rule,
            labels: Vec::new(),
            value: Some(values[0]),
        }],
        Value::Vector(series) => series
            .into_iter()
            .filter_map(|s| match s.points.into_iter().next().flatten()? {
                Sample::Float(v) => Some(Ok(Verdict {
                    rule,
                    labels: s
                        .labels
                        .into_iter()
                        .filter(|(name, _)| name != "__name__")
                        .collect(),
                    value: Some(v),
                })),
                Sample::Histogram(_) => Some(Err(
                    "the result holds distributions (a _bucket series): read them with histogram_quantile(), or use _count and _sum".to_owned(),
                )),
            })
            .collect::<Result<_, _>>()?,
        Value::String(_) => {
            return Err("the expression is a string, not a vector or a scalar".to_owned());
        }
    };
    if limit > 0 && verdicts.len() as u64 > limit {
        return Err(format!(
            "exceeded limit of {limit} with {} alerts",
            verdicts.len()
        ));
    }
    Ok(verdicts)
}
