//! PromQL over Vigil's rollups, shared by the dashboard API's Prometheus
//! paths (`api/src/prometheus`) and the alerter's Prometheus rule files.
//!
//! - [`names`]: the Prometheus series each Vigil series is seen as, and
//!   how each reads a window's rollup;
//! - [`eval`]: expressions evaluated over the windows of the series their
//!   selectors chose;
//! - here: which series a selector chooses.
//!
//! Where the windows come from is the caller's: the API reads them from
//! the store, the alerter keeps them from the stream of 10 s windows.

pub mod eval;
pub mod names;

use std::collections::HashMap;

use promql_parser::label::{MatchOp, Matcher, Matchers};
use promql_parser::parser::VectorSelector;

use names::{Labels, Named};

/// Whether `labels` pass `matchers` (each `or` group is an alternative).
pub fn matches(matchers: &Matchers, labels: &Labels) -> bool {
    let all = |group: &[Matcher]| {
        group
            .iter()
            .all(|m| m.is_match(labels.get(&m.name).map_or("", String::as_str)))
    };
    all(&matchers.matchers)
        && (matchers.or_matchers.is_empty() || matchers.or_matchers.iter().any(|group| all(group)))
}

/// A selector's matchers, its metric name among them.
pub fn matchers(selector: &VectorSelector) -> Matchers {
    let mut matchers = selector.matchers.clone();
    if let Some(name) = &selector.name {
        matchers
            .matchers
            .push(Matcher::new(MatchOp::Equal, "__name__", name));
    }
    matchers
}

/// The series `candidates` hold once each by their Prometheus labels, in
/// the labels' order: a series listed under a name (a metric named
/// `m_count`) wins over one only queried so (metric `m`'s `_count`).
pub fn distinct<K>(candidates: impl IntoIterator<Item = (K, Named)>) -> Vec<(K, Named)> {
    let mut chosen: HashMap<Labels, (K, Named)> = HashMap::new();
    for (key, named) in candidates {
        match chosen.get(&named.labels) {
            Some((_, held)) if held.listed || !named.listed => {}
            _ => {
                chosen.insert(named.labels.clone(), (key, named));
            }
        }
    }
    let mut chosen: Vec<(K, Named)> = chosen.into_values().collect();
    chosen.sort_by(|a, b| a.1.labels.cmp(&b.1.labels));
    chosen
}
