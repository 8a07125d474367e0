//! Playbooks: what the alerter does, step by step, when an alert of the
//! rules they are bound to fires, and how it knows whether that worked.
//!
//! ```yaml
//! playbooks:
//!   - name: canary-rollback
//!     rules: [payments-canary]       # alerts of these rules start a run,
//!     matchers: ['severity="page"']  # and alerts these match (either)
//!     if: ['service.version!=""']    # and only when these hold at the start
//!     max_runs_per_hour: 3           # default 3, per playbook
//!     dry_run: false                 # record every step, call nothing
//!     steps:
//!       - call: rollback             # an action of the rule files
//!       - wait: 10s
//!       - check:                     # a threshold rule's condition, judged at
//!           service: payments        # every 10 s boundary like a rule's
//!           filter: 'span.kind="server"'
//!           signal: error_ratio
//!           window: 30s
//!           op: '<'
//!           value: 0.01
//!           min_count: 20
//!           where: {vigil.unit: "{{vigil.unit}}"}  # the group judged
//!           for: 30s                 # it must hold this long
//!           deadline: 2m             # or the step fails
//!       - approve: oncall            # told with a link; waits for
//!         timeout: 30m               # POST /api/v1/playbooks/runs/{id}/approve
//!       - escalate: next-oncall      # a receiver, told and then on
//!         if: ['check="failed"']
//! ```
//!
//! Templates (`{{…}}` in an action's url and body, a check's `where`) and
//! `if` matchers read the alert's labels, `value`, `service`, the first
//! located cause's labels as `located.<label>`, and `check`: how the last
//! check went (`passed`, `failed`, or "" before any). A run ends
//! `recovered` when its last check passed, `failed` otherwise: a playbook
//! needs a check, since without one no run could tell.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;
use vigil_domain::signal::Matcher;
use vigil_domain::template::Template;
use vigil_domain::tenant::TenantId;
use vigil_domain::time::DurationSpec;

use super::checks::{check_matchers, check_rule};
use super::spec::RuleSpec;
use super::{Action, Receiver, Rule};

/// The most steps a playbook may have.
const MAX_STEPS: usize = 32;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PlaybookSpec {
    name: String,
    #[serde(default)]
    tenant: Option<String>,
    #[serde(default)]
    rules: Vec<String>,
    #[serde(default)]
    matchers: Vec<String>,
    #[serde(default, rename = "if")]
    when: Vec<String>,
    #[serde(default = "default_max_runs_per_hour")]
    max_runs_per_hour: u32,
    #[serde(default)]
    dry_run: bool,
    steps: Vec<StepSpec>,
}

impl PlaybookSpec {
    pub(super) fn name(&self) -> String {
        self.name.clone()
    }
}

fn default_max_runs_per_hour() -> u32 {
    3
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StepSpec {
    #[serde(default)]
    call: Option<String>,
    #[serde(default)]
    wait: Option<DurationSpec>,
    #[serde(default)]
    check: Option<Value>,
    #[serde(default)]
    approve: Option<String>,
    #[serde(default)]
    escalate: Option<String>,
    #[serde(default)]
    timeout: Option<DurationSpec>,
    #[serde(default, rename = "if")]
    when: Vec<String>,
}

/// A playbook as loaded.
#[derive(Debug, Clone, PartialEq)]
pub struct Playbook {
    pub name: String,
    pub tenant: TenantId,
    pub rules: Vec<String>,
    pub matchers: Vec<Matcher>,
    pub when: Vec<Matcher>,
    pub max_runs_per_hour: u32,
    pub dry_run: bool,
    pub steps: Vec<Step>,
    /// Where it is written, for errors found after loading.
    pub file: PathBuf,
    pub line: usize,
}

/// One step, carried out when its `when` holds.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub kind: StepKind,
    pub when: Vec<Matcher>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum StepKind {
    /// The action of this name.
    Call(String),
    Wait(Duration),
    Check(CheckStep),
    /// The receiver told; how long the run waits for an approval.
    Approve {
        receiver: String,
        timeout: Duration,
    },
    /// The receiver told.
    Escalate(String),
}

impl StepKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            StepKind::Call(_) => "call",
            StepKind::Wait(_) => "wait",
            StepKind::Check(_) => "check",
            StepKind::Approve { .. } => "approve",
            StepKind::Escalate(_) => "escalate",
        }
    }

    /// What it names, as a run records it.
    pub fn target(&self) -> String {
        match self {
            StepKind::Call(action) => action.clone(),
            StepKind::Wait(wait) => format!("{} s", wait.as_secs()),
            StepKind::Check(check) => check.rule.clone(),
            StepKind::Approve { receiver, .. } | StepKind::Escalate(receiver) => receiver.clone(),
        }
    }
}

/// A check: the condition of the rule named `rule` (one of
/// [`Ruleset::checks`](super::Ruleset)) must hold for the group `where`
/// selects for `for_s`, within `deadline_s` of the step's start.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckStep {
    pub rule: String,
    pub where_: Vec<(String, Template)>,
    pub for_s: u64,
    pub deadline_s: u64,
}

/// The playbook, and the rules of its checks.
pub(super) fn check_playbook(
    spec: PlaybookSpec,
    file_tenant: Option<TenantId>,
    file: &std::path::Path,
    line: usize,
    actions: &BTreeMap<String, Action>,
    receivers: &BTreeMap<String, Receiver>,
    rule_names: &dyn Fn(&str) -> bool,
) -> Result<(Playbook, Vec<Rule>), String> {
    if spec.name.is_empty() || spec.name.len() > 200 || spec.name.contains('#') {
        return Err("the name must hold 1 to 200 characters, without #".into());
    }
    let tenant = match spec.tenant.as_deref() {
        Some(tenant) => TenantId::parse(tenant).map_err(|e| format!("tenant: {e}"))?,
        None => file_tenant
            .clone()
            .ok_or("no tenant: set `tenant:` on the playbook or at the top of the file")?,
    };
    if spec.rules.is_empty() && spec.matchers.is_empty() {
        return Err("bind it to alerts: `rules:` (names) or `matchers:`".into());
    }
    if let Some(unknown) = spec.rules.iter().find(|name| !rule_names(name)) {
        return Err(format!("rules: no rule is named {unknown:?}"));
    }
    if spec.max_runs_per_hour == 0 {
        return Err("max_runs_per_hour must be at least 1".into());
    }
    if spec.steps.is_empty() || spec.steps.len() > MAX_STEPS {
        return Err(format!("steps: 1 to {MAX_STEPS}, got {}", spec.steps.len()));
    }
    let mut steps = Vec::new();
    let mut checks = Vec::new();
    for (index, step) in spec.steps.into_iter().enumerate() {
        let at = |message: String| format!("steps[{index}]: {message}");
        let when = check_matchers("if", &step.when).map_err(at)?;
        let given = [
            step.call.is_some(),
            step.wait.is_some(),
            step.check.is_some(),
            step.approve.is_some(),
            step.escalate.is_some(),
        ];
        if given.iter().filter(|g| **g).count() != 1 {
            return Err(at(
                "one of call, wait, check, approve or escalate, and only one".into(),
            ));
        }
        if step.timeout.is_some() && step.approve.is_none() {
            return Err(at("timeout is for approve steps".into()));
        }
        let receiver = |name: String| {
            if receivers.contains_key(&name) {
                Ok(name)
            } else {
                Err(at(format!("no receiver is named {name:?}")))
            }
        };
        let kind = if let Some(action) = step.call {
            if !actions.contains_key(&action) {
                return Err(at(format!("call: no action is named {action:?}")));
            }
            StepKind::Call(action)
        } else if let Some(wait) = step.wait {
            StepKind::Wait(wait.0)
        } else if let Some(check) = step.check {
            let name = format!("{}#{index}", spec.name);
            let (check, rule) =
                check_step(check, &name, &tenant).map_err(|m| at(format!("check: {m}")))?;
            checks.push(rule);
            StepKind::Check(check)
        } else if let Some(name) = step.approve {
            StepKind::Approve {
                receiver: receiver(name)?,
                timeout: step.timeout.map_or(Duration::from_secs(3_600), |t| t.0),
            }
        } else {
            StepKind::Escalate(receiver(step.escalate.unwrap_or_default())?)
        };
        steps.push(Step { kind, when });
    }
    if checks.is_empty() {
        return Err(
            "steps: a playbook needs a check, or no run could tell whether it recovered".into(),
        );
    }
    let playbook = Playbook {
        name: spec.name,
        tenant,
        rules: spec.rules,
        matchers: check_matchers("matchers", &spec.matchers)?,
        when: check_matchers("if", &spec.when)?,
        max_runs_per_hour: spec.max_runs_per_hour,
        dry_run: spec.dry_run,
        steps,
        file: file.to_owned(),
        line,
    };
    Ok((playbook, checks))
}

/// A check's step and its rule: the mapping is a threshold rule's keys,
/// with `where`, `for` and `deadline`; the keys of `where` are its
/// `group_by`.
fn check_step(check: Value, name: &str, tenant: &TenantId) -> Result<(CheckStep, Rule), String> {
    let Value::Object(mut fields) = check else {
        return Err("a mapping of a threshold rule's keys, with where, for and deadline".into());
    };
    let duration = |fields: &mut serde_json::Map<String, Value>, key: &str, default: u64| {
        fields
            .remove(key)
            .map(|value| {
                serde_json::from_value::<DurationSpec>(value)
                    .map(|d| d.0.as_secs())
                    .map_err(|e| format!("{key}: {e}"))
            })
            .transpose()
            .map(|d| d.unwrap_or(default))
    };
    let for_s = duration(&mut fields, "for", 0)?;
    let deadline_s = duration(&mut fields, "deadline", 300)?;
    if deadline_s <= for_s {
        return Err(format!(
            "deadline ({deadline_s} s) must be longer than for ({for_s} s)"
        ));
    }
    let where_: BTreeMap<String, String> = fields
        .remove("where")
        .map(serde_json::from_value)
        .transpose()
        .map_err(|e| format!("where: {e}"))?
        .unwrap_or_default();
    for key in [
        "name",
        "type",
        "tenant",
        "group_by",
        "labels",
        "annotations",
        "actions",
        "keep_firing_for",
    ] {
        if fields.contains_key(key) {
            return Err(format!("{key} is not a key of a check"));
        }
    }
    fields.insert("name".into(), Value::from(name));
    fields.insert("type".into(), Value::from("threshold"));
    fields.insert("tenant".into(), Value::from(tenant.as_str()));
    fields.insert(
        "group_by".into(),
        Value::from(where_.keys().cloned().collect::<Vec<_>>()),
    );
    let spec: RuleSpec =
        serde_json::from_value(Value::Object(fields)).map_err(|e| e.to_string())?;
    let rule = check_rule(spec, None, &BTreeMap::new())?;
    let where_ = where_
        .into_iter()
        .map(|(key, text)| {
            Template::parse(&text)
                .map(|template| (key.clone(), template))
                .map_err(|e| format!("where.{key}: {e}"))
        })
        .collect::<Result<_, _>>()?;
    Ok((
        CheckStep {
            rule: name.to_owned(),
            where_,
            for_s,
            deadline_s,
        },
        rule,
    ))
}

/// The host (and port, when written) a URL calls: what the allow-list
/// names.
fn host_of(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    authority.rsplit('@').next().unwrap_or(authority)
}

/// Whether `allowed` (`host` or `host:port`) lets a call to `host` go.
fn allowed(host: &str, allowed: &[String]) -> bool {
    let bare = host
        .rsplit_once(':')
        .filter(|(_, port)| port.chars().all(|c| c.is_ascii_digit()))
        .map_or(host, |(bare, _)| bare);
    allowed.iter().any(|a| a == host || a == bare)
}

/// Refuses a playbook whose calls go to a host not on `hosts`
/// (`alerter.playbook_hosts`).
pub(super) fn check_hosts(
    playbook: &Playbook,
    actions: &BTreeMap<String, Action>,
    hosts: &[String],
) -> Result<(), String> {
    for (index, step) in playbook.steps.iter().enumerate() {
        if let StepKind::Call(name) = &step.kind {
            let host = host_of(actions[name].url.literal_prefix());
            if !allowed(host, hosts) {
                return Err(format!(
                    "steps[{index}]: call {name}: the host {host} is not in alerter.playbook_hosts"
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_matched_with_or_without_their_port() {
        assert_eq!(
            host_of("http://user:pw@deployer:8080/roll?x=1"),
            "deployer:8080"
        );
        assert_eq!(host_of("https://deployer/roll"), "deployer");
        let list = ["deployer".to_owned(), "127.0.0.1:9000".to_owned()];
        assert!(allowed("deployer:8080", &list));
        assert!(allowed("deployer", &list));
        assert!(allowed("127.0.0.1:9000", &list));
        assert!(!allowed("127.0.0.1:9001", &list));
        assert!(!allowed("deployer.evil", &list));
    }
}
