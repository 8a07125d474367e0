//! Rule files: what to watch (rules), where to say it (receivers and the
//! route tree), what to keep quiet (inhibition rules) and what to do
//! (remediation actions). One or more YAML files, each holding any of:
//!
//! ```yaml
//! tenant: acme                    # the rules' tenant, unless a rule names one
//! rules:
//!   - name: pay-latency
//!     type: threshold             # threshold | absence | burn_rate | anomaly
//!     kind: span                  # span | metric | client | probe (default span)
//!     service: payments
//!     series: "POST /orders/{id}/pay"   # the series name (span name, metric, probe)
//!     filter: 'span.kind="server"'      # label matchers, as in GET /api/v1/query
//!     group_by: [vigil.unit]      # one alert per value
//!     signal: p99                 # any signal of GET /api/v1/query
//!     window: 1m                  # the signal over the last minute (10 s steps)
//!     op: ">"                     # > >= < <=
//!     value: 300
//!     min_count: 10               # fewer points: no verdict (the condition is false)
//!     for: 30s                    # pending this long before firing
//!     labels: {severity: page}
//!     annotations: {summary: "p99 {{value}} ms in {{vigil.unit}}"}
//!     actions: [rollback]
//!   - name: pay-probe-silent
//!     type: absence               # no data for `for`
//!     kind: probe
//!     series: pay-e2e
//!     group_by: [vigil.probe.location]
//!     for: 2m
//!   - name: pay-slo
//!     type: burn_rate             # multi-window, multi-burn-rate
//!     service: payments
//!     objective: 99.9             # percent of good events
//!     sli: availability           # or latency, with threshold_ms
//!     windows:                    # default: the two below
//!       - {long: 1h, short: 5m, factor: 14.4, severity: page}
//!       - {long: 6h, short: 30m, factor: 6, severity: ticket}
//!   - name: pay-errors-unusual
//!     type: anomaly
//!     signal: error_ratio
//!     window: 1m
//!     method: zscore              # robust z-score over `history`; or seasonal
//!     history: 1h                 # seasonal: period: 1d or 1w, tolerance: 0.5
//!     threshold: 3.5
//!     direction: up               # up | down | both
//!     min_count: 100
//!   - name: pay-canary
//!     type: canary                # each canary version (vigil.cohort=canary) of the
//!     service: payments           # service's server spans against its baseline
//!     window: 10m                 # (vigil_domain::canary): fires on a rollback verdict,
//!     min_samples: 100            # labelled service.version and the failed signal
//!     significance: 0.05
//!     tolerance: 0.1              # worse by more than 10 % of the baseline
//!     actions: [rollback]
//! receivers:
//!   - name: oncall
//!     url: http://hooks.example/alerts
//!     secret_env: ONCALL_HOOK_SECRET  # HMAC-SHA256 key, from the environment
//!                                     # (or `secret:` in the file)
//!     timeout: 5s
//!     max_attempts: 5
//! route:
//!   receiver: oncall
//!   group_by: [alertname, vigil.unit]
//!   group_wait: 30s
//!   group_interval: 5m
//!   repeat_interval: 4h
//!   routes:                        # children: the first that matches takes it
//!     - matchers: ['severity="ticket"']
//!       receiver: tickets
//!       continue: false
//! inhibit_rules:
//!   - source_matchers: ['alertname="unit-down"']
//!     target_matchers: ['severity="page"']
//!     equal: [vigil.unit]
//! actions:
//!   - name: rollback
//!     url: http://deployer.example/rollback
//!     body: {service: "{{service}}", unit: "{{vigil.unit}}"}
//!     cooldown: 10m
//!     dry_run: false
//! ```
//!
//! Every problem is reported with the file, the line and the reason; a set
//! of files that does not load leaves the running rules in place.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;
use vigil_domain::canary::Criteria;
use vigil_domain::model::Kind;
use vigil_domain::signal::Matcher;
use vigil_domain::signal::{Signal, is_label_name, parse_filter};
use vigil_domain::template::{JsonTemplate, Template};
use vigil_domain::tenant::TenantId;
use vigil_domain::time::DurationSpec;
use vigil_domain::yaml;

/// The finest window the aggregators publish: rule windows are multiples.
pub const STEP_S: u64 = 10;
/// The longest range a rule may look back over (a seasonal baseline of a
/// week plus its window).
pub const MAX_RANGE_S: u64 = 8 * 86_400;

/// Why rule files could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    #[error("{}: {source}", file.display())]
    Read {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("{}:{line}: {message}", file.display())]
    Invalid {
        file: PathBuf,
        line: usize,
        message: String,
    },
}

/// Everything the rule files say.
#[derive(Debug, Clone, Default)]
pub struct Ruleset {
    pub rules: Vec<Rule>,
    pub receivers: BTreeMap<String, Receiver>,
    /// The root of the route tree; without one, alerts are kept and shown
    /// but nobody is notified.
    pub route: Option<Route>,
    pub inhibitions: Vec<Inhibition>,
    pub actions: BTreeMap<String, Action>,
}

/// One rule: which series, how they are grouped, and what makes an alert.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub name: String,
    pub tenant: TenantId,
    pub kind: Kind,
    pub service: Option<String>,
    pub series: Option<String>,
    pub matchers: Vec<Matcher>,
    pub group_by: Vec<String>,
    pub check: Check,
    /// How long the condition must hold before the alert fires (for
    /// absence: how long without data).
    pub for_s: u64,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, Template>,
    pub actions: Vec<String>,
}

/// What a rule checks.
#[derive(Debug, Clone, PartialEq)]
pub enum Check {
    /// The signal over the last `window_s` compared with a value.
    Threshold {
        signal: Signal,
        window_s: u64,
        op: Op,
        value: f64,
        min_count: u64,
    },
    /// No data for the rule's `for_s`.
    Absence,
    /// The error budget burns at least `factor` times as fast as the
    /// objective allows over both windows of a pair.
    BurnRate {
        latency_ms: Option<f64>,
        /// The error budget: the fraction of events that may be bad, from
        /// `(100 − objective %) / 100`.
        budget: f64,
        windows: Vec<BurnWindow>,
    },
    /// The signal over the last `window_s` far from what is usual.
    Anomaly {
        signal: Signal,
        window_s: u64,
        method: Method,
        direction: Direction,
        min_count: u64,
    },
    /// Each canary version's server spans over the last `window_s` judged
    /// against its baseline (`vigil_domain::canary`): holds on a rollback.
    Canary { window_s: u64, criteria: Criteria },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Above,
    AtLeast,
    Below,
    AtMost,
}

impl Op {
    pub fn holds(self, value: f64, bound: f64) -> bool {
        match self {
            Op::Above => value > bound,
            Op::AtLeast => value >= bound,
            Op::Below => value < bound,
            Op::AtMost => value <= bound,
        }
    }
}

/// One pair of a multi-window burn-rate rule.
#[derive(Debug, Clone, PartialEq)]
pub struct BurnWindow {
    pub long_s: u64,
    pub short_s: u64,
    pub factor: f64,
    /// The `severity` label of its alerts.
    pub severity: String,
}

/// How an anomaly rule knows what is usual.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Method {
    /// |value − median| / (1.4826 · MAD) over the values of the last
    /// `history_s` (one per evaluation) exceeds `threshold`.
    ZScore { history_s: u64, threshold: f64 },
    /// The value differs from the one `period_s` earlier by more than
    /// `tolerance` of it.
    Seasonal { period_s: u64, tolerance: f64 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Up,
    Down,
    Both,
}

impl Rule {
    /// How long the condition must hold before the alert fires: `for`,
    /// except for absence, whose `for` is already the time without data.
    pub fn pending_s(&self) -> u64 {
        match self.check {
            Check::Absence => 0,
            _ => self.for_s,
        }
    }

    /// How far back the rule reads, in seconds.
    pub fn range_s(&self) -> u64 {
        match &self.check {
            Check::Threshold { window_s, .. } | Check::Canary { window_s, .. } => *window_s,
            Check::Absence => self.for_s,
            Check::BurnRate { windows, .. } => {
                windows.iter().map(|w| w.long_s).max().unwrap_or(STEP_S)
            }
            Check::Anomaly {
                window_s, method, ..
            } => match method {
                Method::ZScore { .. } => *window_s,
                Method::Seasonal { period_s, .. } => period_s + window_s,
            },
        }
    }
}

/// A webhook that receives notifications.
#[derive(Debug, Clone, PartialEq)]
pub struct Receiver {
    pub name: String,
    pub url: String,
    /// Signs each body (HMAC-SHA256); none: unsigned.
    pub secret: Option<String>,
    pub timeout: Duration,
    /// Attempts per notification, the first included.
    pub max_attempts: u32,
    pub headers: Vec<(String, String)>,
}

/// A node of the route tree.
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    pub receiver: String,
    pub matchers: Vec<Matcher>,
    pub group_by: Vec<String>,
    pub group_wait_s: u64,
    pub group_interval_s: u64,
    pub repeat_interval_s: u64,
    /// After matching, the siblings after it are tried too.
    pub continue_matching: bool,
    pub routes: Vec<Route>,
}

/// Alerts matching `target` are muted while an alert matching `source`
/// fires with the same values of the `equal` labels.
#[derive(Debug, Clone, PartialEq)]
pub struct Inhibition {
    pub source: Vec<Matcher>,
    pub target: Vec<Matcher>,
    pub equal: Vec<String>,
}

/// A remediation webhook a rule fires once per firing.
#[derive(Debug, Clone, PartialEq)]
pub struct Action {
    pub name: String,
    pub url: Template,
    pub method: String,
    pub body: JsonTemplate,
    pub headers: Vec<(String, String)>,
    pub secret: Option<String>,
    pub timeout: Duration,
    pub max_attempts: u32,
    /// After firing for an alert, the action waits this long before firing
    /// for the same rule and group again.
    pub cooldown_s: u64,
    pub dry_run: bool,
}

/// Reads every rule file of `paths` (files, or folders of `*.yaml` /
/// `*.yml`), with secrets from this process's environment.
pub fn load(paths: &[PathBuf]) -> Result<Ruleset, RulesError> {
    let files = yaml::files(paths).map_err(|(file, source)| RulesError::Read { file, source })?;
    let mut texts = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).map_err(|source| RulesError::Read {
            file: file.clone(),
            source,
        })?;
        texts.push((file, text));
    }
    parse(&texts, &|name| std::env::var(name).ok())
}

/// The ruleset of the given files' texts; `env` reads secrets.
pub fn parse(
    files: &[(PathBuf, String)],
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Ruleset, RulesError> {
    let mut set = Ruleset::default();
    let mut specs = Vec::new();
    // Where each name was defined, to report duplicates.
    let mut rule_names: BTreeMap<String, (PathBuf, usize)> = BTreeMap::new();
    let mut route_file: Option<(PathBuf, usize)> = None;
    for (file, text) in files {
        let invalid = |line: usize, message: String| RulesError::Invalid {
            file: file.clone(),
            line,
            message,
        };
        let spec: FileSpec = yaml::parse(text).map_err(|(line, message)| invalid(line, message))?;
        let line_of = |name: &str| yaml::name_line(text, name, 0).map_or(1, |i| i + 1);
        let file_tenant = spec
            .tenant
            .as_deref()
            .map(TenantId::parse)
            .transpose()
            .map_err(|e| invalid(1, format!("tenant: {e}")))?;
        for receiver in spec.receivers {
            let name = receiver.name.clone();
            let line = line_of(&name);
            let checked = check_receiver(receiver, env)
                .map_err(|message| invalid(line, format!("receiver {name}: {message}")))?;
            if set.receivers.insert(name.clone(), checked).is_some() {
                return Err(invalid(
                    line,
                    format!("receiver {name}: another receiver has the name"),
                ));
            }
        }
        for action in spec.actions {
            let name = action.name.clone();
            let line = line_of(&name);
            let checked = check_action(action, env)
                .map_err(|message| invalid(line, format!("action {name}: {message}")))?;
            if set.actions.insert(name.clone(), checked).is_some() {
                return Err(invalid(
                    line,
                    format!("action {name}: another action has the name"),
                ));
            }
        }
        if let Some(route) = spec.route {
            let line = text
                .lines()
                .position(|l| l.starts_with("route:"))
                .map_or(1, |i| i + 1);
            if let Some((other, other_line)) = &route_file {
                return Err(invalid(
                    line,
                    format!(
                        "route: there is one route tree, and {}:{other_line} has it",
                        other.display()
                    ),
                ));
            }
            route_file = Some((file.clone(), line));
            set.route = Some(check_route(route, None).map_err(|m| invalid(line, m))?);
        }
        for inhibition in spec.inhibit_rules {
            set.inhibitions
                .push(check_inhibition(inhibition).map_err(|m| invalid(1, m))?);
        }
        // Rules are in file order: each name is looked for after the last.
        let mut from = 0;
        for rule in spec.rules {
            let index = yaml::name_line(text, &rule.name, from);
            from = index.map_or(from, |i| i + 1);
            let line = index.map_or(1, |i| i + 1);
            if let Some((other, other_line)) = rule_names.get(&rule.name) {
                return Err(invalid(
                    line,
                    format!(
                        "rule {}: the name is taken by {}:{other_line}",
                        rule.name,
                        other.display()
                    ),
                ));
            }
            rule_names.insert(rule.name.clone(), (file.clone(), line));
            specs.push((file.clone(), line, file_tenant.clone(), rule));
        }
    }
    // Rules name actions and routes name receivers of any file.
    for (file, line, tenant, spec) in specs {
        let name = spec.name.clone();
        let rule =
            check_rule(spec, tenant, &set.actions).map_err(|message| RulesError::Invalid {
                file: file.clone(),
                line,
                message: format!("rule {name}: {message}"),
            })?;
        set.rules.push(rule);
    }
    if let Some(route) = &set.route {
        let (file, line) = route_file.unwrap_or_default();
        check_receivers_exist(route, &set.receivers).map_err(|message| RulesError::Invalid {
            file,
            line,
            message,
        })?;
    }
    Ok(set)
}

fn check_rule(
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
    let check = match spec.r#type {
        RuleType::Threshold => {
            unused(&[
                ("objective", spec.objective.is_some()),
                ("windows", spec.windows.is_some()),
                ("method", spec.method.is_some()),
            ])?;
            let op = match spec.op.as_deref() {
                Some(">") => Op::Above,
                Some(">=") => Op::AtLeast,
                Some("<") => Op::Below,
                Some("<=") => Op::AtMost,
                Some(other) => return Err(format!("op: {other:?} is not one of >, >=, <, <=")),
                None => return Err("op is required: one of >, >=, <, <=".into()),
            };
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
            let latency_ms = match (
                spec.sli.as_deref().unwrap_or("availability"),
                spec.threshold_ms,
            ) {
                ("availability", None) => None,
                ("availability", Some(_)) => {
                    return Err("threshold_ms applies to sli: latency only".into());
                }
                ("latency", Some(ms)) if ms.is_finite() && ms > 0.0 => Some(ms),
                ("latency", _) => {
                    return Err("sli latency needs threshold_ms, a positive number".into());
                }
                (other, _) => {
                    return Err(format!("sli: {other:?} is not availability or latency"));
                }
            };
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
            let method = match spec.method.as_deref().unwrap_or("zscore") {
                "zscore" => {
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
                "seasonal" => {
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
                other => return Err(format!("method: {other:?} is not zscore or seasonal")),
            };
            let direction = match spec.direction.as_deref().unwrap_or("up") {
                "up" => Direction::Up,
                "down" => Direction::Down,
                "both" => Direction::Both,
                other => return Err(format!("direction: {other:?} is not up, down or both")),
            };
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
    let kind = spec.kind.unwrap_or(Kind::Span);
    let mut matchers = matchers;
    if let Check::Canary { .. } = check {
        if kind != Kind::Span {
            return Err("a canary rule judges server spans: kind must be span (app releases: GET /api/v1/releases/{app}/health)".into());
        }
        if !spec.group_by.is_empty() {
            return Err("group_by does not apply to a canary rule: it compares versions, units and cohorts itself".into());
        }
        matchers.push(Matcher::equal("span.kind", "server"));
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

fn check_burn_window(index: usize, spec: BurnWindowSpec) -> Result<BurnWindow, String> {
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
fn step_multiple(field: &str, duration: Duration) -> Result<u64, String> {
    let seconds = duration.as_secs();
    if duration.subsec_nanos() != 0 || seconds == 0 || !seconds.is_multiple_of(STEP_S) {
        return Err(format!(
            "{field} must be a positive multiple of {STEP_S}s, got {} ms",
            duration.as_millis()
        ));
    }
    Ok(seconds)
}

fn names<'a>(names: impl Iterator<Item = &'a String>) -> String {
    let names: Vec<&str> = names.map(String::as_str).collect();
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}

/// The signing secret: written in the file (`secret`) or read from the
/// environment (`secret_env`), not both.
fn secret(
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

fn check_url(url: &str) -> Result<(), String> {
    if url.starts_with("http://") || url.starts_with("https://") {
        Ok(())
    } else {
        Err(format!(
            "url must start with http:// or https://, got {url:?}"
        ))
    }
}

fn check_headers(headers: BTreeMap<String, String>) -> Result<Vec<(String, String)>, String> {
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

fn check_attempts(attempts: u32) -> Result<u32, String> {
    if (1..=20).contains(&attempts) {
        Ok(attempts)
    } else {
        Err(format!(
            "max_attempts must be between 1 and 20, got {attempts}"
        ))
    }
}

fn check_receiver(
    spec: ReceiverSpec,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Receiver, String> {
    check_url(&spec.url)?;
    Ok(Receiver {
        name: spec.name,
        url: spec.url,
        secret: secret(spec.secret, spec.secret_env, env)?,
        timeout: spec.timeout.0,
        max_attempts: check_attempts(spec.max_attempts)?,
        headers: check_headers(spec.headers)?,
    })
}

fn check_action(spec: ActionSpec, env: &dyn Fn(&str) -> Option<String>) -> Result<Action, String> {
    let url = Template::parse(&spec.url).map_err(|e| format!("url: {e}"))?;
    check_url(&spec.url)?;
    let method = spec.method.to_ascii_uppercase();
    if !matches!(method.as_str(), "POST" | "PUT" | "PATCH") {
        return Err(format!(
            "method must be POST, PUT or PATCH, got {:?}",
            spec.method
        ));
    }
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

fn check_matchers(field: &str, texts: &[String]) -> Result<Vec<Matcher>, String> {
    let mut matchers = Vec::new();
    for text in texts {
        matchers.extend(parse_filter(text).map_err(|e| format!("{field}: {e}"))?);
    }
    Ok(matchers)
}

fn check_route(spec: RouteSpec, parent: Option<&Route>) -> Result<Route, String> {
    let receiver = match (spec.receiver, parent) {
        (Some(receiver), _) => receiver,
        (None, Some(parent)) => parent.receiver.clone(),
        (None, None) => return Err("route: the root route needs a receiver".into()),
    };
    let seconds = |value: Option<DurationSpec>, inherited: Option<u64>, default: u64| {
        value.map_or(inherited.unwrap_or(default), |d| d.0.as_secs())
    };
    let mut route = Route {
        receiver,
        matchers: check_matchers("route.matchers", &spec.matchers)?,
        group_by: spec
            .group_by
            .or_else(|| parent.map(|p| p.group_by.clone()))
            .unwrap_or_else(|| vec!["alertname".into()]),
        group_wait_s: seconds(spec.group_wait, parent.map(|p| p.group_wait_s), 30),
        group_interval_s: seconds(spec.group_interval, parent.map(|p| p.group_interval_s), 300),
        repeat_interval_s: seconds(
            spec.repeat_interval,
            parent.map(|p| p.repeat_interval_s),
            4 * 3_600,
        ),
        continue_matching: spec.r#continue,
        routes: Vec::new(),
    };
    if route.group_interval_s == 0 || route.repeat_interval_s == 0 {
        return Err("route: group_interval and repeat_interval must be positive".into());
    }
    let children = spec
        .routes
        .into_iter()
        .map(|child| check_route(child, Some(&route)))
        .collect::<Result<_, _>>()?;
    route.routes = children;
    Ok(route)
}

fn check_receivers_exist(
    route: &Route,
    receivers: &BTreeMap<String, Receiver>,
) -> Result<(), String> {
    if !receivers.contains_key(&route.receiver) {
        return Err(format!(
            "route: no receiver is named {:?} (defined: {})",
            route.receiver,
            names(receivers.keys())
        ));
    }
    route
        .routes
        .iter()
        .try_for_each(|child| check_receivers_exist(child, receivers))
}

fn check_inhibition(spec: InhibitSpec) -> Result<Inhibition, String> {
    let source = check_matchers("inhibit_rules.source_matchers", &spec.source_matchers)?;
    let target = check_matchers("inhibit_rules.target_matchers", &spec.target_matchers)?;
    if source.is_empty() || target.is_empty() {
        return Err("inhibit_rules: source_matchers and target_matchers must not be empty".into());
    }
    Ok(Inhibition {
        source,
        target,
        equal: spec.equal,
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSpec {
    #[serde(default)]
    tenant: Option<String>,
    #[serde(default)]
    rules: Vec<RuleSpec>,
    #[serde(default)]
    receivers: Vec<ReceiverSpec>,
    #[serde(default)]
    route: Option<RouteSpec>,
    #[serde(default)]
    inhibit_rules: Vec<InhibitSpec>,
    #[serde(default)]
    actions: Vec<ActionSpec>,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "snake_case")]
enum RuleType {
    Threshold,
    Absence,
    BurnRate,
    Anomaly,
    Canary,
}

impl RuleType {
    fn as_str(self) -> &'static str {
        match self {
            RuleType::Threshold => "threshold",
            RuleType::Absence => "absence",
            RuleType::BurnRate => "burn_rate",
            RuleType::Anomaly => "anomaly",
            RuleType::Canary => "canary",
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleSpec {
    name: String,
    r#type: RuleType,
    #[serde(default)]
    tenant: Option<String>,
    #[serde(default)]
    kind: Option<Kind>,
    #[serde(default)]
    service: Option<String>,
    #[serde(default)]
    series: Option<String>,
    #[serde(default)]
    filter: Option<String>,
    #[serde(default)]
    group_by: Vec<String>,
    #[serde(default)]
    signal: Option<String>,
    #[serde(default)]
    window: Option<DurationSpec>,
    #[serde(default)]
    op: Option<String>,
    #[serde(default)]
    value: Option<f64>,
    #[serde(default)]
    min_count: Option<u64>,
    #[serde(default)]
    r#for: Option<DurationSpec>,
    #[serde(default)]
    objective: Option<f64>,
    #[serde(default)]
    sli: Option<String>,
    #[serde(default)]
    threshold_ms: Option<f64>,
    #[serde(default)]
    windows: Option<Vec<BurnWindowSpec>>,
    #[serde(default)]
    method: Option<String>,
    #[serde(default)]
    history: Option<DurationSpec>,
    #[serde(default)]
    period: Option<String>,
    #[serde(default)]
    threshold: Option<f64>,
    #[serde(default)]
    tolerance: Option<f64>,
    #[serde(default)]
    direction: Option<String>,
    #[serde(default)]
    min_samples: Option<u64>,
    #[serde(default)]
    significance: Option<f64>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
    #[serde(default)]
    actions: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BurnWindowSpec {
    long: DurationSpec,
    short: DurationSpec,
    factor: f64,
    severity: String,
}

fn default_timeout() -> DurationSpec {
    DurationSpec(Duration::from_secs(5))
}
fn default_attempts() -> u32 {
    5
}
fn default_method() -> String {
    "POST".into()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReceiverSpec {
    name: String,
    url: String,
    #[serde(default)]
    secret: Option<String>,
    #[serde(default)]
    secret_env: Option<String>,
    #[serde(default = "default_timeout")]
    timeout: DurationSpec,
    #[serde(default = "default_attempts")]
    max_attempts: u32,
    #[serde(default)]
    headers: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RouteSpec {
    #[serde(default)]
    receiver: Option<String>,
    #[serde(default)]
    matchers: Vec<String>,
    #[serde(default)]
    group_by: Option<Vec<String>>,
    #[serde(default)]
    group_wait: Option<DurationSpec>,
    #[serde(default)]
    group_interval: Option<DurationSpec>,
    #[serde(default)]
    repeat_interval: Option<DurationSpec>,
    #[serde(default)]
    r#continue: bool,
    #[serde(default)]
    routes: Vec<RouteSpec>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InhibitSpec {
    source_matchers: Vec<String>,
    target_matchers: Vec<String>,
    #[serde(default)]
    equal: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ActionSpec {
    name: String,
    url: String,
    #[serde(default = "default_method")]
    method: String,
    #[serde(default)]
    body: Value,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    secret: Option<String>,
    #[serde(default)]
    secret_env: Option<String>,
    #[serde(default = "default_timeout")]
    timeout: DurationSpec,
    #[serde(default = "default_attempts")]
    max_attempts: u32,
    #[serde(default)]
    cooldown: DurationSpec,
    #[serde(default)]
    dry_run: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        (name == "HOOK_SECRET").then(|| "s3cret".to_owned())
    }

    fn error(text: &str) -> String {
        let files = vec![(PathBuf::from("rules/pay.yaml"), text.to_owned())];
        parse(&files, &env).expect_err("refused").to_string()
    }

    const GOOD: &str = r#"
tenant: acme
rules:
  - name: pay-latency
    type: threshold
    service: payments
    filter: 'span.kind="server"'
    group_by: [vigil.unit]
    signal: p99
    window: 1m
    op: ">"
    value: 300
    for: 30s
    labels: {severity: page}
    annotations: {summary: "p99 {{value}} ms in {{vigil.unit}}"}
    actions: [rollback]
  - name: pay-slo
    type: burn_rate
    service: payments
    objective: 99.9
  - name: probe-silent
    type: absence
    kind: probe
    series: pay-e2e
    for: 2m
  - name: errors-unusual
    type: anomaly
    signal: error_ratio
    window: 1m
    method: seasonal
    period: 1w
receivers:
  - name: oncall
    url: http://127.0.0.1:9/hook
    secret_env: HOOK_SECRET
route:
  receiver: oncall
  group_wait: 0s
  routes:
    - matchers: ['severity="ticket"']
      group_interval: 1m
actions:
  - name: rollback
    url: http://127.0.0.1:9/rollback/{{service}}
    body: {unit: "{{vigil.unit}}"}
    cooldown: 10m
"#;

    #[test]
    fn a_rule_file_reads_into_checked_rules() {
        let files = vec![(PathBuf::from("pay.yaml"), GOOD.to_owned())];
        let set = parse(&files, &env).expect("loads");
        assert_eq!(set.rules.len(), 4);
        let latency = &set.rules[0];
        assert_eq!(latency.tenant.as_str(), "acme");
        assert_eq!(latency.for_s, 30);
        assert_eq!(
            latency.check,
            Check::Threshold {
                signal: Signal::Quantile(0.99),
                window_s: 60,
                op: Op::Above,
                value: 300.0,
                min_count: 1,
            }
        );
        assert_eq!(latency.range_s(), 60);
        let Check::BurnRate {
            budget, windows, ..
        } = &set.rules[1].check
        else {
            panic!("a burn-rate rule");
        };
        assert!((budget - 0.001).abs() < 1e-12);
        assert_eq!(
            windows
                .iter()
                .map(|w| (w.long_s, w.short_s, w.factor, w.severity.as_str()))
                .collect::<Vec<_>>(),
            vec![(3_600, 300, 14.4, "page"), (21_600, 1_800, 6.0, "ticket")]
        );
        assert_eq!(set.rules[1].range_s(), 21_600);
        assert_eq!(set.rules[2].check, Check::Absence);
        assert_eq!(set.rules[3].range_s(), 7 * 86_400 + 60);
        assert_eq!(set.receivers["oncall"].secret.as_deref(), Some("s3cret"));
        let route = set.route.expect("a route");
        assert_eq!((route.group_wait_s, route.group_interval_s), (0, 300));
        // A child inherits what it does not set.
        let child = &route.routes[0];
        assert_eq!(child.receiver, "oncall");
        assert_eq!(
            (
                child.group_wait_s,
                child.group_interval_s,
                child.repeat_interval_s
            ),
            (0, 60, 14_400)
        );
        assert_eq!(set.actions["rollback"].cooldown_s, 600);
    }

    #[test]
    fn bad_rules_name_the_file_line_and_reason() {
        let cases: &[(&str, &str)] = &[
            (
                "rules:\n  - name: a\n    type: treshold\n",
                "rules/pay.yaml:3: rules[0].type: unknown variant `treshold`, expected one of `threshold`, `absence`, `burn_rate`, `anomaly`, `canary`",
            ),
            (
                "rules:\n  - name: a\n    type: threshold\n    signal: p99\n    op: '>'\n    value: 1\n",
                "rules/pay.yaml:2: rule a: no tenant: set `tenant:` on the rule or at the top of the file",
            ),
            (
                "tenant: acme\nrules:\n  - name: a\n    type: threshold\n    signal: p98\n    op: '>'\n    value: 1\n",
                "rules/pay.yaml:3: rule a: signal: unknown signal \"p98\"; one of count, sum, rate, mean, min, max, error_ratio, availability, p50, p90, p95, p99, p999",
            ),
            (
                "tenant: acme\nrules:\n  - name: a\n    type: threshold\n    signal: p99\n    op: '>'\n    value: 1\n    window: 15s\n",
                "rules/pay.yaml:3: rule a: window must be a positive multiple of 10s, got 15000 ms",
            ),
            (
                "tenant: acme\nrules:\n  - name: a\n    type: threshold\n    signal: p99\n    op: '=>'\n    value: 1\n",
                "rules/pay.yaml:3: rule a: op: \"=>\" is not one of >, >=, <, <=",
            ),
            (
                "tenant: acme\nrules:\n  - name: a\n    type: absence\n    signal: p99\n    for: 1m\n",
                "rules/pay.yaml:3: rule a: signal does not apply to a absence rule",
            ),
            (
                "tenant: acme\nrules:\n  - name: a\n    type: canary\n    service: pay\n    group_by: [vigil.unit]\n",
                "rules/pay.yaml:3: rule a: group_by does not apply to a canary rule: it compares versions, units and cohorts itself",
            ),
            (
                "tenant: acme\nrules:\n  - {name: a, type: canary, kind: client, service: wallet}\n",
                "rules/pay.yaml:3: rule a: a canary rule judges server spans: kind must be span (app releases: GET /api/v1/releases/{app}/health)",
            ),
            (
                "tenant: acme\nrules:\n  - {name: a, type: canary, service: pay, significance: 0.9}\n",
                "rules/pay.yaml:3: rule a: significance must be above 0 and at most 0.5 (0.05 is usual)",
            ),
            (
                "tenant: acme\nrules:\n  - name: a\n    type: burn_rate\n    objective: 100\n",
                "rules/pay.yaml:3: rule a: objective must be a percent between 0 and 100 (exclusive), got 100",
            ),
            (
                "tenant: acme\nrules:\n  - name: a\n    type: burn_rate\n    objective: 99\n    windows: [{long: 5m, short: 1h, factor: 2, severity: page}]\n",
                "rules/pay.yaml:3: rule a: windows[0].short must be shorter than long",
            ),
            (
                "tenant: acme\nrules:\n  - name: a\n    type: threshold\n    signal: p99\n    op: '>'\n    value: 1\n    actions: [rollback]\n",
                "rules/pay.yaml:3: rule a: actions: no action is named \"rollback\" (defined: none)",
            ),
            (
                "tenant: acme\nrules:\n  - name: a\n    type: threshold\n    signal: p99\n    op: '>'\n    value: 1\n    filter: unit=u1\n",
                "rules/pay.yaml:3: rule a: filter: the value of unit must be double-quoted",
            ),
            (
                "tenant: acme\nrules:\n  - name: a\n    type: absence\n    for: 1m\n  - name: a\n    type: absence\n    for: 1m\n",
                "rules/pay.yaml:6: rule a: the name is taken by rules/pay.yaml:3",
            ),
            (
                "receivers:\n  - name: hook\n    url: http://x/\n    secret_env: NOT_SET\n",
                "rules/pay.yaml:2: receiver hook: secret_env: the environment variable NOT_SET is not set",
            ),
            (
                "receivers:\n  - name: hook\n    url: http://x/\nroute:\n  receiver: pager\n",
                "rules/pay.yaml:4: route: no receiver is named \"pager\" (defined: hook)",
            ),
            (
                "actions:\n  - name: roll\n    url: ftp://x/\n",
                "rules/pay.yaml:2: action roll: url must start with http:// or https://, got \"ftp://x/\"",
            ),
            (
                "tenant: acme\nrules:\n  - name: a\n    type: anomaly\n    signal: p99\n    method: seasonal\n    period: 2d\n",
                "rules/pay.yaml:3: rule a: period: \"2d\" is not 1d or 1w",
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(&error(text), expected, "{text}");
        }
    }

    #[test]
    fn rule_names_are_unique_over_files() {
        let rule = "tenant: acme\nrules:\n  - name: a\n    type: absence\n    for: 1m\n";
        let files = vec![
            (PathBuf::from("one.yaml"), rule.to_owned()),
            (PathBuf::from("two.yaml"), format!("\n{rule}")),
        ];
        let error = parse(&files, &env).expect_err("refused").to_string();
        assert_eq!(error, "two.yaml:4: rule a: the name is taken by one.yaml:3");
    }

    #[test]
    fn a_rule_file_that_is_not_in_the_folder_is_named() {
        let error = load(&[PathBuf::from("/nonexistent/rules.yaml")])
            .expect_err("refused")
            .to_string();
        assert!(error.starts_with("/nonexistent/rules.yaml: "), "{error}");
    }
}
