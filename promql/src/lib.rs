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
    all_match(&matchers.matchers, labels)
        && (matchers.or_matchers.is_empty()
            || matchers
                .or_matchers
                .iter()
                .any(|group| all_match(group, labels)))
}

fn all_match(group: &[Matcher], labels: &Labels) -> bool {
    group
        .iter()
        .all(|m| m.is_match(labels.get(&m.name).map_or("", String::as_str)))
}

/// Whether a selector with `matchers` chooses `named`: its labels match,
/// and a name it is only queried by (a metric's `_bucket`, `_count`, `_sum`
/// or `_total`, not in the catalogue) is asked for by that very name. As in
/// Prometheus, where those series exist only for histograms and counters,
/// `{__name__=~"m.*"}` finds `m` and not its `m_count` beside it.
pub fn selects(matchers: &Matchers, named: &Named) -> bool {
    if !matches(matchers, &named.labels) {
        return false;
    }
    if named.listed {
        return true;
    }
    let name = named.labels.get("__name__").map_or("", String::as_str);
    let names_it = |group: &[Matcher]| {
        group
            .iter()
            .any(|m| m.name == "__name__" && matches!(m.op, MatchOp::Equal) && m.value == name)
    };
    names_it(&matchers.matchers)
        || matchers
            .or_matchers
            .iter()
            .any(|group| names_it(group) && all_match(group, &named.labels))
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

#[cfg(test)]
mod tests {
    use promql_parser::parser::{self, Expr};
    use vigil_domain::model::{Kind, SeriesKey};
    use vigil_domain::tenant::TenantId;

    use super::*;
    use crate::names::prometheus_series;

    /// The names of gauge `m`'s Prometheus series that `selector` chooses.
    fn chosen(selector: &str) -> Vec<String> {
        let Ok(Expr::VectorSelector(selector)) = parser::parse(selector) else {
            panic!("{selector} is a vector selector");
        };
        let key = SeriesKey::new(
            TenantId::parse("acme").unwrap(),
            Kind::Metric,
            "pay",
            "m",
            Vec::new(),
        );
        let matchers = matchers(&selector);
        let mut names: Vec<String> = prometheus_series(&key)
            .iter()
            .filter(|named| selects(&matchers, named))
            .map(|named| named.labels["__name__"].clone())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn names_only_queried_answer_when_asked_for_by_name() {
        assert_eq!(chosen(r#"{__name__=~"m.*"}"#), ["m"]);
        assert_eq!(chosen(r#"{__name__!="x", job="pay"}"#), ["m"]);
        assert_eq!(chosen("m"), ["m"]);
        assert_eq!(chosen("m_count"), ["m_count"]);
        assert_eq!(chosen(r#"{__name__="m_total"}"#), ["m_total"]);
        assert_eq!(
            chosen(r#"{__name__=~"m_(count|sum)"}"#),
            Vec::<String>::new()
        );
        assert_eq!(
            chosen(r#"{__name__="m_sum" or __name__="m"}"#),
            ["m", "m_sum"]
        );
    }
}
