//! Rule files: what to watch (rules), where to say it (receivers and the
//! route tree), what to keep quiet (inhibition rules) and what to do
//! (remediation actions, and playbooks: see [`playbooks`]). One or more
//! YAML files, each holding any of:
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
//!     keep_firing_for: 1m         # firing until false this long (default 0)
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
//!   - name: wallet-release
//!     type: canary                # kind: client: each canary app version against
//!     kind: client                # its baseline on the app's client series (crash,
//!     service: wallet-ios         # launch crash, ANR and crash loop rates, app
//!     window: 30m                 # start, battery, traffic, slow frames); labelled
//!     actions: [rollback]         # app.version and the failed signal
//!   - name: wallet-crash-groups
//!     type: crash_group           # the app's crash groups (vigil_store::crash_groups)
//!     service: wallet-ios         # over the window: a group in one of states with
//!     window: 1h                  # at least min_count crashes, or one that hit
//!     states: [new, regressed]    # velocity of its last version's users;
//!     min_count: 10               # labelled app.version, crash.fingerprint,
//!     velocity: 0.01              # exception.type, crash.state (control/crashes.rs)
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

mod checks;
mod playbooks;
mod prometheus;
mod routing;
mod spec;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use vigil_domain::canary::Criteria;
use vigil_domain::crash::CrashState;
use vigil_domain::model::Kind;
use vigil_domain::signal::Matcher;
use vigil_domain::signal::Signal;
use vigil_domain::template::{JsonTemplate, Template};
use vigil_domain::tenant::TenantId;
use vigil_domain::yaml::{self, FileError};
use vigil_promql::eval::offset_ms;

use checks::{check_action, check_rule};
use routing::{check_inhibition, check_receiver, check_receivers_exist, check_route};
use spec::FileSpec;

pub use playbooks::{CheckStep, Playbook, Step, StepKind};
pub use prometheus::Expression;

/// The finest window the aggregators publish: rule windows are multiples.
pub const STEP_S: u64 = 10;
/// The longest range a rule may look back over (a seasonal baseline of a
/// week plus its window).
pub const MAX_RANGE_S: u64 = 8 * 86_400;

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
    pub playbooks: Vec<Playbook>,
    /// The rules of the playbooks' checks: evaluated like the others, they
    /// make no alerts (see [`Ruleset::engine_rules`]).
    pub checks: Vec<Rule>,
}

impl Ruleset {
    /// What the engine evaluates: the rules, then the playbooks' checks; a
    /// verdict of index [`Ruleset::rules`]`.len()` or more is a check's.
    pub fn engine_rules(&self) -> Vec<std::sync::Arc<Rule>> {
        self.rules
            .iter()
            .chain(&self.checks)
            .cloned()
            .map(std::sync::Arc::new)
            .collect()
    }

    /// Refuses playbooks that call a host not on `hosts`
    /// (`alerter.playbook_hosts`).
    pub fn check_hosts(self, hosts: &[String]) -> Result<Ruleset, FileError> {
        for playbook in &self.playbooks {
            playbooks::check_hosts(playbook, &self.actions, hosts).map_err(|message| {
                FileError::Invalid {
                    file: playbook.file.clone(),
                    line: playbook.line,
                    message: format!("playbook {}: {message}", playbook.name),
                }
            })?;
        }
        Ok(self)
    }
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
    /// How long a firing alert stays firing once the condition stopped
    /// holding (Prometheus's `keep_firing_for`): a condition that comes
    /// and goes does not resolve and fire again.
    pub keep_firing_for_s: u64,
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
    /// A Prometheus alerting rule's expression: each series of its result
    /// at a boundary is a verdict (see `prometheus.rs`).
    Promql(Box<Expression>),
    /// An app's crash groups over the last `window_s`, as
    /// `vigil_store::crash_groups` judges them: a group in one of `states`
    /// with at least `min_count` crashes, or (with `velocity`) one whose
    /// crashed users in its last version are at least this share of that
    /// version's users (of its sessions, for an app naming no user). Read from the store by the control loop at
    /// each boundary, not from the stream (`control/crashes.rs`).
    CrashGroup {
        window_s: u64,
        states: Vec<CrashState>,
        min_count: u64,
        velocity: Option<f64>,
    },
}

/// A threshold's comparison, written `>`, `>=`, `<` or `<=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Op {
    #[serde(rename = ">")]
    Above,
    #[serde(rename = ">=")]
    AtLeast,
    #[serde(rename = "<")]
    Below,
    #[serde(rename = "<=")]
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

/// Which way an anomaly counts: `up`, `down` or `both`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    #[default]
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

    /// Whether the rule is also judged between boundaries, over its window
    /// and the freshest rows (see [`crate::eval`]): thresholds and
    /// anomalies of signals that do not depend on the window's length, and
    /// burn rates.
    pub fn slides(&self) -> bool {
        match &self.check {
            Check::Threshold { signal, .. } | Check::Anomaly { signal, .. } => {
                !signal.is_extensive()
            }
            Check::BurnRate { .. } => true,
            Check::Absence | Check::Canary { .. } | Check::Promql(_) | Check::CrashGroup { .. } => {
                false
            }
        }
    }

    /// How far back the rule reads, in seconds.
    pub fn range_s(&self) -> u64 {
        match &self.check {
            Check::Threshold { window_s, .. }
            | Check::Canary { window_s, .. }
            | Check::CrashGroup { window_s, .. } => *window_s,
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
            Check::Promql(expression) => {
                let back_ms = expression
                    .needs
                    .iter()
                    .map(|need| need.range_ms + offset_ms(&need.selector).max(0))
                    .max()
                    .unwrap_or(0);
                u64::try_from(back_ms).unwrap_or(0).div_ceil(1_000)
            }
        }
    }

    /// Whether `alert` is one of this rule's: its name and tenant, and the
    /// rule's own labels (Prometheus rules may share a name and differ by
    /// them).
    pub fn owns(&self, alert: &vigil_domain::alert::Alert) -> bool {
        self.name == alert.rule
            && self.tenant == alert.tenant
            && self
                .labels
                .iter()
                .all(|(key, value)| alert.labels.get(key) == Some(value))
    }

    /// What the rule reads, by kind and service (`None`: every service).
    pub fn reads(&self) -> Vec<(Kind, Option<String>)> {
        match self.check {
            // A selector may choose any kind's series.
            Check::Promql(_) => [Kind::Span, Kind::Metric, Kind::Client, Kind::Probe]
                .map(|kind| (kind, None))
                .to_vec(),
            // Crashes, not rollups.
            Check::CrashGroup { .. } => Vec::new(),
            _ => vec![(self.kind, self.service.clone())],
        }
    }
}

/// What a receiver is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReceiverKind {
    /// Takes the notification itself (Alertmanager's webhook format).
    #[default]
    Webhook,
    /// An Alertmanager: its alerts are posted to `<url>/api/v2/alerts` and
    /// posted again while they fire (see `alertmanager.rs`).
    Alertmanager,
}

/// Who receives notifications: a webhook, or an Alertmanager.
#[derive(Debug, Clone, PartialEq)]
pub struct Receiver {
    pub name: String,
    pub kind: ReceiverKind,
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
/// `*.yml`), with secrets from this process's environment; Prometheus
/// rule files are evaluated on `prometheus_tenant`'s series.
pub fn load(paths: &[PathBuf], prometheus_tenant: Option<&TenantId>) -> Result<Ruleset, FileError> {
    let files = yaml::files(paths).map_err(|(file, source)| FileError::Read { file, source })?;
    let mut texts = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).map_err(|source| FileError::Read {
            file: file.clone(),
            source,
        })?;
        texts.push((file, text));
    }
    parse(&texts, &|name| std::env::var(name).ok(), prometheus_tenant)
}

/// The ruleset of the given files' texts; `env` reads secrets.
pub fn parse(
    files: &[(PathBuf, String)],
    env: &dyn Fn(&str) -> Option<String>,
    prometheus_tenant: Option<&TenantId>,
) -> Result<Ruleset, FileError> {
    let mut set = Ruleset::default();
    let mut specs = Vec::new();
    // Where each name was defined, to report duplicates.
    let mut rule_names: BTreeMap<String, (PathBuf, usize)> = BTreeMap::new();
    let mut route_file: Option<(PathBuf, usize)> = None;
    let mut alerts: Vec<(PathBuf, usize, Rule)> = Vec::new();
    let mut playbook_specs = Vec::new();
    for (file, text) in files {
        if prometheus::is_prometheus(text) {
            for (line, rule) in prometheus::parse(file, text, prometheus_tenant)? {
                alerts.push((file.clone(), line, rule));
            }
            continue;
        }
        let invalid = |line: usize, message: String| FileError::Invalid {
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
        let playbooks_at = text
            .lines()
            .position(|l| l.starts_with("playbooks:"))
            .unwrap_or(0);
        for playbook in spec.playbooks {
            let line = yaml::name_line(text, &playbook.name(), playbooks_at).map_or(1, |i| i + 1);
            playbook_specs.push((file.clone(), line, file_tenant.clone(), playbook));
        }
    }
    // Rules name actions and routes name receivers of any file.
    for (file, line, tenant, spec) in specs {
        let name = spec.name.clone();
        let rule =
            check_rule(spec, tenant, &set.actions).map_err(|message| FileError::Invalid {
                file: file.clone(),
                line,
                message: format!("rule {name}: {message}"),
            })?;
        set.rules.push(rule);
    }
    // Prometheus alerts may share a name among themselves, as in
    // Prometheus, but not with a rule of Vigil's.
    for (file, line, rule) in alerts {
        if let Some((other, other_line)) = rule_names.get(&rule.name) {
            return Err(FileError::Invalid {
                file,
                line,
                message: format!(
                    "alert {}: the name is taken by the rule of {}:{other_line}",
                    rule.name,
                    other.display()
                ),
            });
        }
        set.rules.push(rule);
    }
    // Playbooks name rules, actions and receivers of any file.
    let mut playbook_names = BTreeMap::new();
    for (file, line, tenant, spec) in playbook_specs {
        let name = spec.name();
        let invalid = |message: String| FileError::Invalid {
            file: file.clone(),
            line,
            message: format!("playbook {name}: {message}"),
        };
        if let Some(other) = playbook_names.insert(name.clone(), (file.clone(), line)) {
            return Err(invalid(format!(
                "the name is taken by {}:{}",
                other.0.display(),
                other.1
            )));
        }
        let is_rule = |rule: &str| set.rules.iter().any(|r| r.name == rule);
        let (playbook, checks) = playbooks::check_playbook(
            spec,
            tenant,
            &file,
            line,
            &set.actions,
            &set.receivers,
            &is_rule,
        )
        .map_err(invalid)?;
        set.playbooks.push(playbook);
        set.checks.extend(checks);
    }
    if let Some(route) = &set.route {
        let (file, line) = route_file.unwrap_or_default();
        check_receivers_exist(route, &set.receivers).map_err(|message| FileError::Invalid {
            file,
            line,
            message,
        })?;
    }
    Ok(set)
}
