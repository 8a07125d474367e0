//! The Prometheus series a Vigil series is seen as, and how each of them
//! reads a window's rollup.
//!
//! | Vigil series | Prometheus series | labels |
//! |---|---|---|
//! | metric `m` of service `s` | `m` (dots as `_`) | `job="s"`, its attributes |
//! | span `n` of service `s` | `vigil_span_requests_total`, `vigil_span_errors_total`, `vigil_span_duration_seconds_bucket`, `_sum`, `_count` | `service="s"`, `span_name="n"`, `span_kind`, `status`, `vigil_unit`… |
//! | every span of service `s` (its total per span kind and deployment) | `vigil_service_requests_total`, `vigil_service_errors_total`, `vigil_service_duration_seconds_bucket`, `_sum`, `_count` | `service="s"`, `span_kind`, `vigil_unit`, `service_version`, `vigil_cohort`, `deployment_environment`, `cloud_region` |
//! | probe `p` | `vigil_probe_runs_total`, `vigil_probe_failures_total`, `vigil_probe_duration_seconds_bucket`, `_sum`, `_count` | `service`, `probe="p"`, `vigil_probe_step`, `vigil_probe_location`, `status` |
//! | client signal `client.x` of app `a` | `vigil_client_x_total`, `vigil_client_x_sum`, `vigil_client_x_bucket` | `app="a"`, its dimensions |
//!
//! Label names keep what Prometheus allows, the rest as `_`
//! (`vigil.unit` → `vigil_unit`).
//!
//! A metric is a counter when its name ends in `_total` (each window holds
//! its increase, as the aggregator stores a cumulative counter), a gauge
//! otherwise. A metric `m` can also be queried as `m_bucket` (its
//! distribution: what an OpenTelemetry or classic Prometheus histogram is
//! stored as), `m_count` and `m_sum` (counters of its values), and, when
//! its name does not end in `_total`, as `m_total`: the counter of its
//! values' sum, which is what an OpenTelemetry counter `m` is read as (the
//! aggregator stores a monotonic sum's increases, whatever its name), under
//! the name OpenTelemetry's Prometheus exporters give it. A metric that has
//! one of these names itself is read as itself; they are not listed in the
//! catalogue.
//!
//! A `_bucket` series carries its whole distribution in each sample, as a
//! Prometheus native histogram does, and has no `le` label: a classic
//! `histogram_quantile(0.99, sum by (le) (rate(x_bucket[5m])))` reads the
//! merged distribution (grouping by the absent `le` changes nothing).
//!
//! A tenant's totals (every span of every service) have no name: a sum of
//! `vigil_span_*` over every service by span kind and deployment labels
//! reads them in place of the span series.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::LazyLock;

use vigil_domain::model::{Kind, SeriesKey};
use vigil_domain::prometheus::{label_name, metric_name};

/// A Prometheus series: its labels, `__name__` among them.
pub type Labels = BTreeMap<String, String>;

/// Durations of spans and probe steps are stored in milliseconds and read
/// as Prometheus's seconds.
const MS: f64 = 0.001;

/// What a counter counts in a window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Part {
    /// Points: requests, runs, observations.
    Count,
    /// Points that failed.
    Errors,
    /// The sum of the values, times `unit`: a counter's increase, a
    /// histogram's sum.
    Sum { unit: f64 },
}

/// How a window's rollup is read as a Prometheus sample.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Reading {
    /// A counter: each window adds its increase.
    Counter(Part),
    /// A gauge: the samples of the window (their mean is its level).
    Gauge,
    /// A histogram: the distribution of the window, values times `unit`.
    Histogram { unit: f64 },
}

/// One Prometheus series of a Vigil series.
#[derive(Debug, Clone, PartialEq)]
pub struct Named {
    pub labels: Labels,
    pub reading: Reading,
    /// Whether the catalogue lists it (a metric's `_bucket`, `_count` and
    /// `_sum` are only queried).
    pub listed: bool,
}

/// The Prometheus series a Vigil series is seen as (see the module's table).
pub fn prometheus_series(key: &SeriesKey) -> Vec<Named> {
    prometheus_series_named(key, |_| true)
}

/// The Prometheus series of `key` whose name `wanted` takes: the labels are
/// built only when some name is.
pub fn prometheus_series_named(key: &SeriesKey, wanted: impl Fn(&str) -> bool) -> Vec<Named> {
    let listed = |name: String, reading| (Cow::Owned(name), reading, true);
    let (names, own) = match key.kind {
        Kind::Metric => {
            let name = metric_name(&key.name);
            let reading = if name.ends_with("_total") {
                Reading::Counter(Part::Sum { unit: 1.0 })
            } else {
                Reading::Gauge
            };
            let queried =
                |suffix: &str, reading| (Cow::Owned(format!("{name}_{suffix}")), reading, false);
            let mut names = vec![
                queried("bucket", Reading::Histogram { unit: 1.0 }),
                queried("count", Reading::Counter(Part::Count)),
                queried("sum", Reading::Counter(Part::Sum { unit: 1.0 })),
            ];
            if reading == Reading::Gauge {
                names.push(queried("total", Reading::Counter(Part::Sum { unit: 1.0 })));
            }
            names.push(listed(name, reading));
            (names, vec![("job", key.service.as_str())])
        }
        Kind::Span => (
            counted(&SPAN),
            vec![
                ("service", key.service.as_str()),
                ("span_name", key.name.as_str()),
            ],
        ),
        Kind::Service => (counted(&SERVICE), vec![("service", key.service.as_str())]),
        // A tenant's totals are read in place of its span series when they
        // answer alike, never by a name of their own.
        Kind::Tenant => return Vec::new(),
        Kind::Probe => (
            counted(&PROBE),
            vec![
                ("service", key.service.as_str()),
                ("probe", key.name.as_str()),
            ],
        ),
        Kind::Client => {
            let base = format!("vigil_{}", metric_name(&key.name));
            (
                vec![
                    listed(format!("{base}_bucket"), Reading::Histogram { unit: 1.0 }),
                    listed(
                        format!("{base}_sum"),
                        Reading::Counter(Part::Sum { unit: 1.0 }),
                    ),
                    listed(format!("{base}_total"), Reading::Counter(Part::Count)),
                ],
                vec![("app", key.service.as_str())],
            )
        }
    };
    let names: Vec<(Cow<'static, str>, Reading, bool)> = names
        .into_iter()
        .filter(|(name, _, _)| wanted(name))
        .collect();
    if names.is_empty() {
        return Vec::new();
    }
    let mut labels: Labels = key
        .labels()
        .iter()
        .map(|(k, v)| (label_name(k), v.clone()))
        .collect();
    for (name, value) in own {
        labels.insert(name.to_owned(), value.to_owned());
    }
    names
        .into_iter()
        .map(|(name, reading, listed)| {
            let mut series = labels.clone();
            series.insert("__name__".to_owned(), name.into_owned());
            Named {
                labels: series,
                reading,
                listed,
            }
        })
        .collect()
}

/// The names of the family of a `vigil_<kind>` series, made once.
type Family = LazyLock<[(String, Reading); 5]>;

static SPAN: Family = LazyLock::new(|| family("span", "requests", "errors"));
static SERVICE: Family = LazyLock::new(|| family("service", "requests", "errors"));
static PROBE: Family = LazyLock::new(|| family("probe", "runs", "failures"));

/// The family of a `vigil_<kind>` series that counts `events`, `failures`
/// among them, and their duration in seconds.
fn family(kind: &str, events: &str, failures: &str) -> [(String, Reading); 5] {
    let duration = format!("vigil_{kind}_duration_seconds");
    [
        (
            format!("{duration}_bucket"),
            Reading::Histogram { unit: MS },
        ),
        (format!("{duration}_count"), Reading::Counter(Part::Count)),
        (
            format!("{duration}_sum"),
            Reading::Counter(Part::Sum { unit: MS }),
        ),
        (
            format!("vigil_{kind}_{failures}_total"),
            Reading::Counter(Part::Errors),
        ),
        (
            format!("vigil_{kind}_{events}_total"),
            Reading::Counter(Part::Count),
        ),
    ]
}

/// A family's names, listed, borrowed.
fn counted(family: &'static Family) -> Vec<(Cow<'static, str>, Reading, bool)> {
    family
        .iter()
        .map(|(name, reading)| (Cow::Borrowed(name.as_str()), *reading, true))
        .collect()
}

/// The Vigil label a Prometheus label `name` of `series` reads, as
/// `vigil_domain::signal::label_of` takes labels (`service.name` and `name`
/// for the series' service and name): `Ok(None)` when the series has no
/// such label; [`Unmapped`] for `__name__`, or when two of its labels are
/// both seen as `name`.
pub fn vigil_label(series: &SeriesKey, name: &str) -> Result<Option<String>, Unmapped> {
    if name == "__name__" {
        return Err(Unmapped);
    }
    let own = match (series.kind, name) {
        _ if service_label(series.kind) == Some(name) => Some("service.name"),
        (Kind::Span, "span_name") | (Kind::Probe, "probe") => Some("name"),
        _ => None,
    };
    if let Some(own) = own {
        return Ok(Some(own.to_owned()));
    }
    let mut keys = series
        .labels()
        .iter()
        .filter(|(key, _)| label_name(key) == name)
        .map(|(key, _)| key);
    match (keys.next(), keys.next()) {
        (None, _) => Ok(None),
        (Some(key), None) => Ok(Some(key.clone())),
        (Some(_), Some(_)) => Err(Unmapped),
    }
}

/// The Prometheus label that holds the service of a series of `kind`.
pub fn service_label(kind: Kind) -> Option<&'static str> {
    match kind {
        Kind::Metric => Some("job"),
        Kind::Span | Kind::Probe | Kind::Service => Some("service"),
        Kind::Client => Some("app"),
        Kind::Tenant => None,
    }
}

/// The kinds whose series a Prometheus series named `name` can be: a
/// metric's name is its own, the others' begin with `vigil_<kind>_`.
pub fn kinds_named(name: &str) -> Vec<Kind> {
    let mut kinds = vec![Kind::Metric];
    kinds.extend(
        [Kind::Span, Kind::Service, Kind::Probe, Kind::Client]
            .into_iter()
            .filter(|kind| name.starts_with(&format!("vigil_{}_", kind.as_str()))),
    );
    kinds
}

/// A Prometheus label that is no one label of a Vigil series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unmapped;
