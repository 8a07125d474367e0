//! Alertmanager as a receiver: a notification's alerts are posted to
//! Alertmanager's `POST /api/v2/alerts`, as Prometheus posts them, so every
//! receiver Alertmanager has (Slack, PagerDuty, e-mail, Opsgenie, Teams)
//! works through it.
//!
//! As with Prometheus, a firing alert carries an end `4 × RESEND` ahead and
//! is posted again every [`RESEND_MS`] while it fires (whatever the route's
//! `repeat_interval`: Alertmanager's own grouping and repeats decide what
//! its receivers see), so Alertmanager resolves it by itself if Vigil goes
//! silent; a resolved alert is posted with the time it ended.
//!
//! Alertmanager takes only Prometheus label names: label and annotation
//! names go through `vigil_domain::prometheus::label_name`
//! (`vigil.unit` → `vigil_unit`).

use serde_json::{Map, Value, json};
use vigil_domain::prometheus::label_name;
use vigil_domain::time::rfc3339;

/// How often firing alerts are posted again.
pub const RESEND_MS: u64 = 60_000;

/// Where alerts are posted, from the receiver's URL (Alertmanager's base).
pub fn alerts_url(base: &str) -> String {
    format!("{}/api/v2/alerts", base.trim_end_matches('/'))
}

/// The postable alerts of a notification's payload (Alertmanager's webhook
/// format, see `notify.rs`), at `now_ms`.
pub fn postable(payload: &Value, now_ms: u64) -> Value {
    let alerts = payload["alerts"].as_array().map_or(&[][..], Vec::as_slice);
    Value::Array(
        alerts
            .iter()
            .map(|alert| {
                let ends_at = match alert["status"].as_str() {
                    Some("resolved") => alert["endsAt"].clone(),
                    _ => json!(rfc3339(now_ms + 4 * RESEND_MS)),
                };
                let mut postable = json!({
                    "labels": names(&alert["labels"]),
                    "annotations": names(&alert["annotations"]),
                    "startsAt": alert["startsAt"],
                    "endsAt": ends_at,
                });
                // Alertmanager refuses an empty URL.
                if let Some(url) = alert["generatorURL"].as_str().filter(|u| !u.is_empty()) {
                    postable["generatorURL"] = json!(url);
                }
                postable
            })
            .collect(),
    )
}

/// `set` with Prometheus-legal names, its values as text.
fn names(set: &Value) -> Value {
    let mut legal = Map::new();
    for (name, value) in set.as_object().into_iter().flatten() {
        let value = value
            .as_str()
            .map_or_else(|| value.to_string(), str::to_owned);
        legal.insert(label_name(name), Value::String(value));
    }
    Value::Object(legal)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alerts_become_postable_with_prometheus_names_and_an_end() {
        let payload = json!({"alerts": [
            {"status": "firing", "labels": {"alertname": "pay-errors", "vigil.unit": "u1"},
             "annotations": {"summary": "0.3 fail"}, "startsAt": "2026-12-05T10:00:00Z",
             "endsAt": "0001-01-01T00:00:00Z", "generatorURL": ""},
            {"status": "resolved", "labels": {"alertname": "pay-errors", "9th": "x"},
             "annotations": {}, "startsAt": "2026-12-05T10:00:00Z",
             "endsAt": "2026-12-05T10:05:00Z", "generatorURL": "http://vigil/api/v1/alerts"},
        ]});
        let now_ms = 1_796_469_600_000; // 2026-12-05T11:20:00Z
        assert_eq!(
            postable(&payload, now_ms),
            json!([
                {"labels": {"alertname": "pay-errors", "vigil_unit": "u1"},
                 "annotations": {"summary": "0.3 fail"}, "startsAt": "2026-12-05T10:00:00Z",
                 "endsAt": "2026-12-05T11:24:00.000Z"},
                {"labels": {"alertname": "pay-errors", "_9th": "x"}, "annotations": {},
                 "startsAt": "2026-12-05T10:00:00Z", "endsAt": "2026-12-05T10:05:00Z",
                 "generatorURL": "http://vigil/api/v1/alerts"},
            ])
        );
        assert_eq!(
            alerts_url("http://am:9093/"),
            "http://am:9093/api/v2/alerts"
        );
    }
}
