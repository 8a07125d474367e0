//! Remediation: the actions of rules whose alerts start firing, once per
//! firing and at most once per cooldown, dry-run when configured.

use std::sync::Arc;

use serde_json::{Value, json};
use vigil_domain::alert::Collection;
use vigil_domain::template::{UrlError, Vars};
use vigil_store::HistoryEntry;

use super::Control;
use super::state::{append, state_record};
use crate::alerts::{self, State, Transition};
use crate::rules::Action;
use crate::{now_ms, webhook};

/// An action's url and body, rendered with `vars`; or why not.
pub(super) fn render_action(action: &Action, vars: &Vars) -> Result<(String, Value), String> {
    let url = action.url.render_url(vars).map_err(|error| match error {
        UrlError::Missing(name) => format!("url: {name} is not a label of the alert"),
        UrlError::DotSegment(name) => {
            format!("url: the value of {name} would step up the path")
        }
    })?;
    let body = action
        .body
        .render(vars)
        .map_err(|missing| format!("body: {} is not a label of the alert", missing.0))?;
    Ok((url, body))
}

/// The call of `action` to `url` with `body`, under `idempotency_key`.
pub(super) fn webhook_call(
    action: &Action,
    url: String,
    body: &Value,
    idempotency_key: String,
) -> webhook::Call {
    webhook::Call {
        url,
        method: reqwest::Method::from_bytes(action.method.as_bytes())
            .unwrap_or(reqwest::Method::POST),
        body: body.to_string().into_bytes(),
        headers: action.headers.clone(),
        secret: action.secret.clone(),
        idempotency_key,
        timeout: action.timeout,
        max_attempts: action.max_attempts,
    }
}

impl Control {
    /// Fires the actions of alerts that started firing and are not
    /// silenced, once per firing and at most once per cooldown.
    pub(super) async fn remediate(&mut self, transitions: &[Transition], now_ms: u64) {
        let mut records = Vec::new();
        for transition in transitions.iter().filter(|t| t.to == Some(State::Firing)) {
            let alert = &transition.alert;
            let silenced = self
                .silences
                .iter()
                .any(|s| s.is_active(now_ms) && s.matches(&alert.labels));
            let Some(rule) = self.engine.rules().iter().find(|r| r.owns(alert)) else {
                continue;
            };
            for name in &rule.actions {
                let Some(action) = self.ruleset.actions.get(name) else {
                    continue;
                };
                let key = format!("{name}/{}", alert.fingerprint);
                let cooling = self
                    .cooldowns
                    .get(&key)
                    .is_some_and(|at| now_ms < at + action.cooldown_s * 1_000);
                let skipped = if silenced {
                    Some("silenced")
                } else if cooling {
                    Some("cooldown")
                } else {
                    None
                };
                let vars = alerts::vars(&alert.labels, alert.value, rule.service.as_deref());
                let rendered = render_action(action, &vars);
                let dry_run = action.dry_run || self.settings.dry_run;
                let mut entry = json!({
                    "action": name,
                    "alert": alert.fingerprint,
                    "dryRun": dry_run,
                });
                let call = match (skipped, rendered) {
                    (Some(reason), _) => {
                        entry["outcome"] = json!("skipped");
                        entry["reason"] = json!(reason);
                        None
                    }
                    (None, Err(error)) => {
                        entry["outcome"] = json!("failed");
                        entry["error"] = json!(error);
                        None
                    }
                    (None, Ok((url, body))) => {
                        entry["url"] = json!(url);
                        entry["body"] = body.clone();
                        self.cooldowns.insert(key.clone(), now_ms);
                        records.push(state_record(
                            Collection::Action,
                            &alert.tenant,
                            &key,
                            &now_ms,
                            now_ms,
                        ));
                        if dry_run {
                            entry["outcome"] = json!("dry_run");
                            None
                        } else {
                            let key = format!(
                                "{}-{}",
                                alert.fingerprint,
                                alert.fired_ms.unwrap_or(now_ms)
                            );
                            Some(webhook_call(action, url, &body, key))
                        }
                    }
                };
                let history = HistoryEntry {
                    tenant: alert.tenant.clone(),
                    time_ms: now_ms,
                    kind: "action".into(),
                    rule: alert.rule.clone(),
                    subject: alert.fingerprint.clone(),
                    body: String::new(),
                };
                match call {
                    None => {
                        self.metrics
                            .action(entry["outcome"].as_str().unwrap_or("failed"));
                        append(
                            &*self.store,
                            &self.metrics,
                            vec![HistoryEntry {
                                body: entry.to_string(),
                                ..history
                            }],
                        )
                        .await;
                    }
                    Some(call) => {
                        let (client, store, metrics) = (
                            self.client.clone(),
                            Arc::clone(&self.store),
                            Arc::clone(&self.metrics),
                        );
                        tokio::spawn(async move {
                            let outcome = webhook::send(&client, &call).await;
                            let ok = outcome.error.is_none();
                            entry["outcome"] = json!(if ok { "sent" } else { "failed" });
                            entry["attempts"] = json!(outcome.attempts);
                            entry["status"] = json!(outcome.status);
                            entry["error"] = json!(outcome.error);
                            metrics.action(if ok { "sent" } else { "failed" });
                            let entry = HistoryEntry {
                                time_ms: self::now_ms(),
                                body: entry.to_string(),
                                ..history
                            };
                            append(&*store, &metrics, vec![entry]).await;
                        });
                    }
                }
            }
        }
        self.put(&records).await;
    }
}
