//! Prometheus alerting rule files, as Prometheus 2.42 reads them:
//!
//! ```yaml
//! groups:
//!   - name: payments
//!     rules:
//!       - alert: PaymentsErrorRatio
//!         expr: sum by (vigil_unit) (rate(vigil_span_errors_total{service="payments"}[1m]))
//!           / sum by (vigil_unit) (rate(vigil_span_requests_total{service="payments"}[1m])) > 0.05
//!         for: 30s
//!         keep_firing_for: 1m
//!         labels: {severity: page}
//!         annotations:
//!           summary: "{{ $labels.vigil_unit }} fails {{ $value | humanizePercentage }}"
//! ```
//!
//! Each alerting rule becomes a [`Rule`] whose check is its expression
//! ([`Check::Promql`]), evaluated at every 10 s boundary on the stream
//! (`eval.rs`), with the lifecycle, routes and history of Vigil's own
//! rules. A file is one when its top level holds `groups:`; its tenant is
//! `alerter.prometheus_tenant`. What promtool refuses, Vigil refuses, with
//! the same reasons; beyond that Vigil refuses, saying so:
//!
//! - recording rules (`record:`): Vigil does not write series back;
//! - expressions its PromQL does not evaluate (subqueries, `@`, functions
//!   it lacks), named;
//! - templated label values, and annotation templates beyond
//!   `{{ $value }}`, `{{ $labels.name }}` (or `.Value`, `.Labels.name`),
//!   optionally piped to a formatting function (`humanize`,
//!   `humanizePercentage`, `printf "%.2f"`…), which is accepted and leaves
//!   the value as Vigil writes values: to three decimals.
//!
//! A group's `interval` is accepted and does not change the cadence (every
//! 10 s window is evaluated); its `limit` caps each rule's alerts as in
//! Prometheus: a rule that would have more has none, and says why.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;
use std::time::Duration;

use promql_parser::parser::{self, Expr};
use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};
use vigil_domain::model::Kind;
use vigil_domain::template::Template;
use vigil_domain::tenant::TenantId;
use vigil_domain::yaml::{self, FileError};
use vigil_promql::eval::{Need, needs};

use super::{Check, Rule};

/// Whether `text` is a Prometheus rule file: a top-level `groups:`.
pub(super) fn is_prometheus(text: &str) -> bool {
    text.lines().any(|line| {
        line.strip_prefix("groups")
            .is_some_and(|rest| rest.trim_start().starts_with(':'))
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSpec {
    groups: Vec<GroupSpec>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GroupSpec {
    #[serde(default)]
    name: String,
    /// Checked as Prometheus does; every window is evaluated.
    #[serde(default, rename = "interval", deserialize_with = "checked_duration")]
    _interval: (),
    #[serde(default)]
    limit: Option<u64>,
    #[serde(default)]
    rules: Vec<RuleSpec>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleSpec {
    #[serde(default)]
    record: Option<Scalar>,
    #[serde(default)]
    alert: Option<Scalar>,
    #[serde(default)]
    expr: Option<Scalar>,
    #[serde(default)]
    r#for: Option<PromDuration>,
    #[serde(default)]
    keep_firing_for: Option<PromDuration>,
    #[serde(default)]
    labels: BTreeMap<String, Scalar>,
    #[serde(default)]
    annotations: BTreeMap<String, Scalar>,
}

/// A PromQL expression, parsed once, with the selectors it reads.
#[derive(Debug, Clone)]
pub struct Expression {
    /// As written.
    pub text: String,
    pub expr: Expr,
    pub needs: Vec<Need>,
    /// The most alerts the rule may have at once (its group's `limit`);
    /// 0: no limit.
    pub limit: u64,
}

impl PartialEq for Expression {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text && self.limit == other.limit
    }
}

/// The alerting rules of one Prometheus rule file, in file order, each
/// with its line.
pub(super) fn parse(
    file: &Path,
    text: &str,
    tenant: Option<&TenantId>,
) -> Result<Vec<(usize, Rule)>, FileError> {
    let invalid = |line: usize, message: String| FileError::Invalid {
        file: file.to_owned(),
        line,
        message,
    };
    let spec: FileSpec = yaml::parse(text).map_err(|(line, message)| invalid(line, message))?;
    let mut names = BTreeSet::new();
    let mut rules = Vec::new();
    let mut from = 0;
    for (g, group) in spec.groups.into_iter().enumerate() {
        let group_line = yaml::name_line(text, &group.name, from);
        from = group_line.map_or(from, |i| i + 1);
        let group_line = group_line.map_or(1, |i| i + 1);
        if group.name.is_empty() {
            return Err(invalid(
                group_line,
                format!("group {g}: Groupname must not be empty"),
            ));
        }
        if !names.insert(group.name.clone()) {
            return Err(invalid(
                group_line,
                format!("groupname: \"{}\" is repeated in the same file", group.name),
            ));
        }
        for (r, spec) in group.rules.into_iter().enumerate() {
            let (key, name) = match (&spec.alert, &spec.record) {
                (Some(alert), _) => ("alert", alert.0.clone()),
                (None, Some(record)) => ("record", record.0.clone()),
                (None, None) => ("alert", String::new()),
            };
            let line = yaml::key_line(text, key, &name, from);
            from = line.map_or(from, |i| i + 1);
            let line = line.map_or(group_line, |i| i + 1);
            let tenant = tenant.ok_or_else(|| {
                invalid(
                    line,
                    "a Prometheus rule file names no tenant: set alerter.prometheus_tenant"
                        .to_owned(),
                )
            })?;
            let rule = check(spec, tenant.clone(), group.limit.unwrap_or(0)).map_err(|reason| {
                invalid(
                    line,
                    format!("group {:?}, rule {}, {name:?}: {reason}", group.name, r + 1),
                )
            })?;
            rules.push((line, rule));
        }
    }
    Ok(rules)
}

fn check(spec: RuleSpec, tenant: TenantId, limit: u64) -> Result<Rule, String> {
    let alert = spec.alert.map(|a| a.0).filter(|a| !a.is_empty());
    let record = spec.record.map(|r| r.0).filter(|r| !r.is_empty());
    let name = match (alert, record) {
        (Some(_), Some(_)) => return Err("only one of 'record' and 'alert' must be set".into()),
        (None, None) => return Err("one of 'record' or 'alert' must be set".into()),
        (None, Some(_)) => {
            return Err("recording rules are not evaluated by Vigil (it keeps no series written back); write the expression into the alerts that use it".into());
        }
        (Some(alert), None) => alert,
    };
    let text = spec.expr.map(|e| e.0).unwrap_or_default();
    if text.is_empty() {
        return Err("field 'expr' must be set in rule".into());
    }
    let expr = parser::parse(&text).map_err(|e| format!("could not parse expression: {e}"))?;
    let mut wanted = Vec::new();
    needs(&expr, &mut wanted).map_err(|e| e.to_string())?;
    let mut labels = BTreeMap::new();
    for (key, value) in spec.labels {
        if !is_label_name(&key) {
            return Err(format!("invalid label name: {key}"));
        }
        if value.0.contains("{{") {
            return Err(format!(
                "labels.{key}: Vigil's alert labels are fixed text; a templated label value is not supported"
            ));
        }
        labels.insert(key, value.0);
    }
    let mut annotations = BTreeMap::new();
    for (key, text) in spec.annotations {
        if !is_label_name(&key) {
            return Err(format!("invalid annotation name: {key}"));
        }
        let template = go_template(&text.0)
            .and_then(|text| Template::parse(&text))
            .map_err(|reason| format!("annotations.{key}: {reason}"))?;
        annotations.insert(key, template);
    }
    Ok(Rule {
        name,
        tenant,
        kind: Kind::Metric,
        service: None,
        series: None,
        matchers: Vec::new(),
        group_by: Vec::new(),
        check: Check::Promql(Box::new(Expression {
            text,
            expr,
            needs: wanted,
            limit,
        })),
        for_s: spec.r#for.map_or(0, |d| d.0.as_secs()),
        keep_firing_for_s: spec.keep_firing_for.map_or(0, |d| d.0.as_secs()),
        labels,
        annotations,
        actions: Vec::new(),
    })
}

/// Prometheus's label names: `[a-zA-Z_][a-zA-Z0-9_]*`.
fn is_label_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// The formatting functions an annotation's value may be piped to.
const FORMATS: [&str; 9] = [
    "humanize",
    "humanize1024",
    "humanizePercentage",
    "humanizeDuration",
    "humanizeTimestamp",
    "printf",
    "title",
    "toUpper",
    "toLower",
];

/// An annotation's Go template as a Vigil template: `{{ $value }}` and
/// `{{ $labels.x }}` (or `.Value`, `.Labels.x`) become `{{value}}` and
/// `{{x}}`; formatting pipes are dropped; anything else is refused.
fn go_template(text: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = text;
    while let Some(open) = rest.find("{{") {
        let mut before = &rest[..open];
        let after = &rest[open + 2..];
        let close = after
            .find("}}")
            .ok_or_else(|| format!("{text:?}: unclosed action"))?;
        let mut action = &after[..close];
        // `{{-` and `-}}` trim the white space beside them.
        if let Some(trimmed) = action.strip_prefix("- ") {
            action = trimmed;
            before = before.trim_end();
        }
        out.push_str(before);
        rest = &after[close + 2..];
        if let Some(trimmed) = action.strip_suffix(" -") {
            action = trimmed;
            rest = rest.trim_start();
        }
        let mut pipeline = action.split('|').map(str::trim);
        let head = pipeline.next().unwrap_or("");
        let variable = if head == "$value" || head == ".Value" {
            "value"
        } else if let Some(label) = head
            .strip_prefix("$labels.")
            .or_else(|| head.strip_prefix(".Labels."))
        {
            if !is_label_name(label) {
                return Err(format!("{text:?}: {head} is not a label"));
            }
            label
        } else {
            return Err(format!(
                "{text:?}: Vigil fills in {{{{ $value }}}} and {{{{ $labels.name }}}}, not {{{{ {} }}}}",
                action.trim()
            ));
        };
        for function in pipeline {
            let word = function.split_whitespace().next().unwrap_or("");
            if !FORMATS.contains(&word) {
                return Err(format!(
                    "{text:?}: Vigil does not support the template function {word:?} (only formatting: {})",
                    FORMATS.join(", ")
                ));
            }
        }
        out.push_str("{{");
        out.push_str(variable);
        out.push_str("}}");
    }
    out.push_str(rest);
    Ok(out)
}

/// A YAML scalar read as text, as Prometheus's YAML nodes read `expr: 1`.
struct Scalar(String);

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Text;
        impl Visitor<'_> for Text {
            type Value = Scalar;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<Scalar, E> {
                Ok(Scalar(text.to_owned()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
        }
        deserializer.deserialize_any(Text)
    }
}

fn checked_duration<'de, D: Deserializer<'de>>(deserializer: D) -> Result<(), D::Error> {
    PromDuration::deserialize(deserializer).map(drop)
}

/// A duration as Prometheus writes one (`model.ParseDuration`): `0`, or
/// whole numbers of units from `y` to `ms`, each at most once and in that
/// order (`1h30m`, `0s`); no fractions, no bare numbers.
struct PromDuration(Duration);

/// Prometheus's duration units, in the order they must come.
const UNITS: [(&str, u64); 7] = [
    ("y", 365 * 86_400_000),
    ("w", 7 * 86_400_000),
    ("d", 86_400_000),
    ("h", 3_600_000),
    ("m", 60_000),
    ("s", 1_000),
    ("ms", 1),
];

fn prometheus_duration(text: &str) -> Option<Duration> {
    if text == "0" {
        return Some(Duration::ZERO);
    }
    let mut rest = text;
    let mut ms: u64 = 0;
    let mut next_unit = 0;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        let number: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let letters = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let unit = &rest[..letters];
        rest = &rest[letters..];
        let at = UNITS[next_unit..].iter().position(|(u, _)| *u == unit)? + next_unit;
        ms = ms.checked_add(number.checked_mul(UNITS[at].1)?)?;
        next_unit = at + 1;
    }
    (!text.is_empty()).then_some(Duration::from_millis(ms))
}

impl<'de> Deserialize<'de> for PromDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = Scalar::deserialize(deserializer)?.0;
        prometheus_duration(&text)
            .map(PromDuration)
            .ok_or_else(|| de::Error::custom(format!("not a valid duration string: {text:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn annotation_templates_read_the_value_and_labels() {
        assert_eq!(
            go_template("{{ $labels.vigil_unit }} fails {{ $value | humanizePercentage }}")
                .unwrap(),
            "{{vigil_unit}} fails {{value}}"
        );
        assert_eq!(
            go_template("v={{.Value}} on {{ .Labels.job }}; {{- $value | printf \"%.2f\" -}} !")
                .unwrap(),
            "v={{value}} on {{job}};{{value}}!"
        );
        assert!(
            go_template("{{ if gt $value 1.0 }}big{{ end }}")
                .unwrap_err()
                .contains("not {{ if gt $value 1.0 }}")
        );
        assert!(
            go_template("{{ $value | query }}")
                .unwrap_err()
                .contains("\"query\"")
        );
        assert!(go_template("{{ $value ").unwrap_err().contains("unclosed"));
    }

    #[test]
    fn durations_are_prometheus_durations() {
        let read = |text: &str| yaml::parse::<PromDuration>(text).map(|d| d.0);
        assert_eq!(read("0").unwrap(), Duration::ZERO);
        assert_eq!(read("1h30m").unwrap(), Duration::from_secs(5_400));
        assert_eq!(read("'5m'").unwrap(), Duration::from_secs(300));
        assert_eq!(read("0s").unwrap(), Duration::ZERO);
        assert_eq!(
            read("1d2h3m4s5ms").unwrap(),
            Duration::from_millis(93_784_005)
        );
        assert!(read("1m1h").is_err(), "units out of order");
        assert!(read("1m1m").is_err(), "a unit twice");
        assert!(read("5").is_err());
        assert!(read("''").is_err());
        assert!(read("1.5m").is_err());
        assert!(read("30").is_err());
        assert!(read("soon").is_err());
    }
}
