//! From a rule's YAML to a [`Rule`](super::Rule): each key checked, every
//! reason naming the key.

use std::collections::BTreeMap;
use std::time::Duration;

use vigil_domain::canary::Criteria;
use vigil_domain::crash::CrashState;
use vigil_domain::model::Kind;
use vigil_domain::signal::{Matcher, Signal, is_label_name, parse_filter};
use vigil_domain::template::{JsonTemplate, Template};
use vigil_domain::tenant::TenantId;

use super::spec::{ActionSpec, AnomalyMethod, BurnWindowSpec, RuleSpec, RuleType};
use super::{Action, BurnWindow, Check, MAX_RANGE_S, Method, Rule, STEP_S};

pub(super) fn check_rule(
    spec: RuleSpec,
    file_tenant: Option<TenantId>,
    actions: &BTreeMap<String, Action>,
) -> Result<Rule, String> {
    if spec.name.is_empty() || spec.name.len() > 200 {
        return Err("the name must hold 1 to 200 characters".into());
    }
    let tenant = match spec.tenant.as_deref() {
        Some(tenant) => TenantId::parse(tenant).map_err(|e| format!("tenant: {e}"))?,
        None => {
            file_tenant.ok_or("no tenant: set `tenant:` on the rule or at the top of the file")?
        }
    };
    let matchers =
        parse_filter(spec.filter.as_deref().unwrap_or("")).map_err(|e| format!("filter: {e}"))?;
    for key in &spec.group_by {
        if !is_label_name(key) {
            return Err(format!("group_by: {key:?} is not a label name"));
        }
    }
    for key in spec.labels.keys() {
        if !is_label_name(key) {
            return Err(format!("labels: {key:?} is not a label name"));
        }
    }
    let mut annotations = BTreeMap::new();
    for (key, text) in spec.annotations {
        let template = Template::parse(&text).map_err(|e| format!("annotations.{key}: {e}"))?;
        annotations.insert(key, template);
    }
    for action in &spec.actions {
        if !actions.contains_key(action) {
            return Err(format!(
                "actions: no action is named {action:?} (defined: {})",
                names(actions.keys())
            ));
        }
    }
    let for_s = spec.r#for.map_or(0, |d| d.0.as_secs());
    let window_s = match spec.window {
        Some(window) => step_multiple("window", window.0)?,
        None => STEP_S,
    };
    let signal = || -> Result<Signal, String> {
        let name = spec
            .signal
            .as_deref()
            .ok_or_else(|| format!("signal is required: one of {}", Signal::NAMES.join(", ")))?;
        Signal::parse(name).ok_or_else(|| {
            format!(
                "signal: unknown signal {name:?}; one of {}",
                Signal::NAMES.join(", ")
            )
        })
    };
    let unused = |fields: &[(&str, bool)]| -> Result<(), String> {
        match fields.iter().find(|(_, set)| *set) {
            Some((field, _)) => Err(format!(
                "{field} does not apply to a {} rule",
                spec.r#type.as_str()
            )),
            None => Ok(()),
        }
    };
    if !matches!(spec.r#type, RuleType::CrashGroup) {
        unused(&[
            ("states", spec.states.is_some()),
            ("velocity", spec.velocity.is_some()),
        ])?;
    }
    let check = match spec.r#type {
        RuleType::CrashGroup => {
            unused(&[
                ("signal", spec.signal.is_some()),
                ("op", spec.op.is_some()),
                ("value", spec.value.is_some()),
                ("objective", spec.objective.is_some()),
                ("method", spec.method.is_some()),
                ("series", spec.series.is_some()),
                ("filter", spec.filter.is_some()),
                ("group_by", !spec.group_by.is_empty()),
            ])?;
            if spec.service.is_none() {
                return Err("service is required: the app whose crash groups are watched".into());
            }
            let states = match &spec.states {
                None => vec![CrashState::New, CrashState::Regressed],
                Some(names) => names
                    .iter()
                    .map(|name| {
                        CrashState::parse(name).ok_or_else(|| {
                            format!("states: {name:?} is not one of new, regressed, ongoing")
                        })
                    })
                    .collect::<Result<_, _>>()?,
            };
            if let Some(velocity) = spec.velocity
                && !(velocity > 0.0 && velocity <= 1.0)
            {
                return Err(format!(
                    "velocity must be a share of users above 0 and at most 1, got {velocity}"
                ));
            }
            Check::CrashGroup {
                window_s: spec
                    .window
                    .map_or(Ok(3_600), |w| step_multiple("window", w.0))?,
                states,
                min_count: spec.min_count.unwrap_or(1),
                velocity: spec.velocity,
            }
        }
        RuleType::Threshold => {
            unused(&[
                ("objective", spec.objective.is_some()),
                ("windows", spec.windows.is_some()),
                ("method", spec.method.is_some()),
            ])?;
            let op = spec.op.ok_or("op is required: one of >, >=, <, <=")?;
            let value = spec.value.ok_or("value is required")?;
            if !value.is_finite() {
                return Err("value must be a finite number".into());
            }
            Check::Threshold {
                signal: signal()?,
                window_s,
                op,
                value,
                min_count: spec.min_count.unwrap_or(1),
            }
        }
        RuleType::Absence => {
            unused(&[
                ("signal", spec.signal.is_some()),
                ("op", spec.op.is_some()),
                ("value", spec.value.is_some()),
                ("objective", spec.objective.is_some()),
                ("method", spec.method.is_some()),
            ])?;
            if for_s < STEP_S {
                return Err(format!(
                    "for is required: how long without data, at least {STEP_S}s"
                ));
            }
            Check::Absence
        }
        RuleType::BurnRate => {
            unused(&[
                ("signal", spec.signal.is_some()),
                ("op", spec.op.is_some()),
                ("value", spec.value.is_some()),
                ("method", spec.method.is_some()),
            ])?;
            let objective = spec
                .objective
                .ok_or("objective is required: the percent of good events, e.g. 99.9")?;
            if !(objective > 0.0 && objective < 100.0) {
                return Err(format!(
                    "objective must be a percent between 0 and 100 (exclusive), got {objective}"
                ));
            }
            let latency_ms = spec.sli.unwrap_or_default().threshold(spec.threshold_ms)?;
            let windows = match spec.windows {
                Some(windows) if windows.is_empty() => {
                    return Err("windows must hold at least one pair".into());
                }
                Some(windows) => windows
                    .into_iter()
                    .enumerate()
                    .map(|(i, w)| check_burn_window(i, w))
                    .collect::<Result<_, _>>()?,
                None => vec![
                    BurnWindow {
                        long_s: 3_600,
                        short_s: 300,
                        factor: 14.4,
                        severity: "page".into(),
                    },
                    BurnWindow {
                        long_s: 6 * 3_600,
                        short_s: 1_800,
                        factor: 6.0,
                        severity: "ticket".into(),
                    },
                ],
            };
            Check::BurnRate {
                latency_ms,
                budget: (100.0 - objective) / 100.0,
                windows,
            }
        }
        RuleType::Anomaly => {
            unused(&[
                ("op", spec.op.is_some()),
                ("value", spec.value.is_some()),
                ("objective", spec.objective.is_some()),
            ])?;
            let method = match spec.method.unwrap_or_default() {
                AnomalyMethod::Zscore => {
                    let history_s = match spec.history {
                        Some(history) => step_multiple("history", history.0)?,
                        None => 3_600,
                    };
                    if history_s < 6 * STEP_S {
                        return Err("history must cover at least 1m (6 evaluations)".into());
                    }
                    let threshold = spec.threshold.unwrap_or(3.5);
                    if !(threshold.is_finite() && threshold > 0.0) {
                        return Err("threshold must be a positive number".into());
                    }
                    Method::ZScore {
                        history_s,
                        threshold,
                    }
                }
                AnomalyMethod::Seasonal => {
                    let period_s = match spec.period.as_deref() {
                        Some("1d") | None => 86_400,
                        Some("1w") => 7 * 86_400,
                        Some(other) => {
                            return Err(format!("period: {other:?} is not 1d or 1w"));
                        }
                    };
                    let tolerance = spec.tolerance.unwrap_or(0.5);
                    if !(tolerance.is_finite() && tolerance > 0.0) {
                        return Err("tolerance must be a positive fraction, e.g. 0.5".into());
                    }
                    Method::Seasonal {
                        period_s,
                        tolerance,
                    }
                }
            };
            let direction = spec.direction.unwrap_or_default();
            Check::Anomaly {
                signal: signal()?,
                window_s,
                method,
                direction,
                min_count: spec.min_count.unwrap_or(1),
            }
        }
        RuleType::Canary => {
            unused(&[
                ("signal", spec.signal.is_some()),
                ("op", spec.op.is_some()),
                ("value", spec.value.is_some()),
                ("objective", spec.objective.is_some()),
                ("method", spec.method.is_some()),
            ])?;
            let defaults = vigil_config::CanaryConfig::default().criteria();
            let criteria = Criteria {
                min_samples: spec.min_samples.unwrap_or(defaults.min_samples),
                significance: spec.significance.unwrap_or(defaults.significance),
                tolerance: spec.tolerance.unwrap_or(defaults.tolerance),
            };
            criteria
                .check()
                .map_err(|(field, reason)| format!("{field} {reason}"))?;
            Check::Canary {
                window_s: spec
                    .window
                    .map_or(Ok(600), |w| step_multiple("window", w.0))?,
                criteria,
            }
        }
    };
    let kind = match (&check, spec.kind) {
        (Check::CrashGroup { .. }, None | Some(Kind::Client)) => Kind::Client,
        (Check::CrashGroup { .. }, Some(_)) => {
            return Err("a crash_group rule watches an app's crashes: kind must be client".into());
        }
        (_, kind) => kind.unwrap_or(Kind::Span),
    };
    let mut matchers = matchers;
    if let Check::Canary { .. } = check {
        if !spec.group_by.is_empty() {
            return Err("group_by does not apply to a canary rule: it compares versions, units and cohorts itself".into());
        }
        match kind {
            Kind::Span => matchers.push(Matcher::equal("span.kind", "server")),
            Kind::Client => {
                if spec.series.is_some() {
                    return Err("series does not apply to a client canary rule: it reads the app's crashes, starts, ANRs, frames, battery and traffic itself".into());
                }
            }
            _ => {
                return Err("a canary rule judges server spans (kind span) or an app's releases (kind client)".into());
            }
        }
    }
    let rule = Rule {
        name: spec.name,
        tenant,
        kind,
        service: spec.service,
        series: spec.series,
        matchers,
        group_by: spec.group_by,
        check,
        for_s,
        keep_firing_for_s: spec.keep_firing_for.map_or(0, |d| d.0.as_secs()),
        labels: spec.labels,
        annotations,
        actions: spec.actions,
    };
    if rule.range_s() > MAX_RANGE_S {
        return Err(format!(
            "looks back {} s; at most {MAX_RANGE_S} s (8 days)",
            rule.range_s()
        ));
    }
    Ok(rule)
}

pub(super) fn check_burn_window(index: usize, spec: BurnWindowSpec) -> Result<BurnWindow, String> {
    let at = |field: &str| format!("windows[{index}].{field}");
    let long_s = step_multiple(&at("long"), spec.long.0)?;
    let short_s = step_multiple(&at("short"), spec.short.0)?;
    if short_s >= long_s {
        return Err(format!("{} must be shorter than long", at("short")));
    }
    if !(spec.factor.is_finite() && spec.factor > 0.0) {
        return Err(format!("{} must be a positive number", at("factor")));
    }
    Ok(BurnWindow {
        long_s,
        short_s,
        factor: spec.factor,
        severity: spec.severity,
    })
}

/// A duration in whole seconds that is a positive multiple of [`STEP_S`].
pub(super) fn step_multiple(field: &str, duration: Duration) -> Result<u64, String> {
    let seconds = duration.as_secs();
    if duration.subsec_nanos() != 0 || seconds == 0 || !seconds.is_multiple_of(STEP_S) {
        return Err(format!(
            "{field} must be a positive multiple of {STEP_S}s, got {} ms",
            duration.as_millis()
        ));
    }
    Ok(seconds)
}

pub(super) fn names<'a>(names: impl Iterator<Item = &'a String>) -> String {
    let names: Vec<&str> = names.map(String::as_str).collect();
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}

/// The signing secret: written in the file (`secret`) or read from the
/// environment (`secret_env`), not both.
pub(super) fn secret(
    inline: Option<String>,
    env_name: Option<String>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<String>, String> {
    match (inline, env_name) {
        (Some(_), Some(_)) => Err("set secret or secret_env, not both".into()),
        (Some(secret), None) if secret.is_empty() => Err("secret must not be empty".into()),
        (Some(secret), None) => Ok(Some(secret)),
        (None, Some(name)) => env(&name)
            .map(Some)
            .ok_or_else(|| format!("secret_env: the environment variable {name} is not set")),
        (None, None) => Ok(None),
    }
}

pub(super) fn check_url(url: &str) -> Result<(), String> {
    if url.starts_with("http://") || url.starts_with("https://") {
        Ok(())
    } else {
        Err(format!(
            "url must start with http:// or https://, got {url:?}"
        ))
    }
}

pub(super) fn check_headers(
    headers: BTreeMap<String, String>,
) -> Result<Vec<(String, String)>, String> {
    headers
        .into_iter()
        .map(|(name, value)| {
            reqwest::header::HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| format!("headers: {name:?} is not a header name"))?;
            reqwest::header::HeaderValue::from_str(&value)
                .map_err(|_| format!("headers: the value of {name} is not a header value"))?;
            Ok((name, value))
        })
        .collect()
}

pub(super) fn check_attempts(attempts: u32) -> Result<u32, String> {
    if (1..=20).contains(&attempts) {
        Ok(attempts)
    } else {
        Err(format!(
            "max_attempts must be between 1 and 20, got {attempts}"
        ))
    }
}

pub(super) fn check_action(
    spec: ActionSpec,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Action, String> {
    let url = Template::parse(&spec.url).map_err(|e| format!("url: {e}"))?;
    check_url(&spec.url)?;
    let host_is_written = url.variables().next().is_none()
        || url
            .literal_prefix()
            .split_once("://")
            .is_some_and(|(_, rest)| rest.contains('/'));
    if !host_is_written {
        return Err(format!(
            "url: the scheme and host must be written out, variables may fill only the path \
             and query, got {:?}",
            spec.url
        ));
    }
    let method = spec.method.as_str().to_owned();
    Ok(Action {
        name: spec.name,
        url,
        method,
        body: JsonTemplate::parse(&spec.body).map_err(|e| format!("body: {e}"))?,
        headers: check_headers(spec.headers)?,
        secret: secret(spec.secret, spec.secret_env, env)?,
        timeout: spec.timeout.0,
        max_attempts: check_attempts(spec.max_attempts)?,
        cooldown_s: spec.cooldown.0.as_secs(),
        dry_run: spec.dry_run,
    })
}

pub(super) fn check_matchers(field: &str, texts: &[String]) -> Result<Vec<Matcher>, String> {
    let mut matchers = Vec::new();
    for text in texts {
        matchers.extend(parse_filter(text).map_err(|e| format!("{field}: {e}"))?);
    }
    Ok(matchers)
}
