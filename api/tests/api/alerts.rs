//! Alerts and history as the alerter keeps them; silences through the API.

use vigil_domain::located::Located;

use super::*;

fn alert(tenant_name: &str, rule: &str, unit: &str, state: AlertState, since_ms: u64) -> Alert {
    let labels = BTreeMap::from([
        ("alertname".to_owned(), rule.to_owned()),
        ("tenant".to_owned(), tenant_name.to_owned()),
        ("service.name".to_owned(), "pay".to_owned()),
        ("vigil.unit".to_owned(), unit.to_owned()),
    ]);
    Alert {
        fingerprint: fingerprint(&labels),
        tenant: tenant(tenant_name),
        rule: rule.to_owned(),
        labels,
        annotations: BTreeMap::from([("summary".to_owned(), format!("pay is failing in {unit}"))]),
        state,
        active_since_ms: since_ms,
        fired_ms: (state == AlertState::Firing).then_some(since_ms + 30_000),
        resolved_ms: None,
        value: Some(0.25),
        last_held_ms: since_ms,
        located: Vec::new(),
        flapping: false,
        notified_ms: None,
        remediation_started_ms: None,
        recovered_ms: None,
    }
}

/// Alerts and history as the alerter keeps them, read through the API;
/// silences made, listed, replaced and expired through it.
async fn alerts_history_and_silences(backend: Backend) {
    let Some(config) = testing::config(backend) else {
        return;
    };
    let config = api_config(config);
    let store = store::open(&config.store).await.unwrap();
    let now_ms = now_s() * 1000;
    // Located by the alerter when it fired.
    let firing = Alert {
        located: vec![Located {
            labels: BTreeMap::from([("http.route".to_owned(), "/pay".to_owned())]),
            actual: 0.5,
            expected: 0.01,
            share: 1.0,
            score: 0.5,
        }],
        notified_ms: Some(now_ms - 89_000),
        remediation_started_ms: Some(now_ms - 88_500),
        ..alert(
            "acme",
            "pay-errors",
            "u1",
            AlertState::Firing,
            now_ms - 120_000,
        )
    };
    let pending = alert(
        "acme",
        "pay-errors",
        "u2",
        AlertState::Pending,
        now_ms - 5_000,
    );
    let theirs = alert(
        "evil",
        "pay-errors",
        "u1",
        AlertState::Firing,
        now_ms - 60_000,
    );
    let records: Vec<StateRecord> = [&firing, &pending, &theirs]
        .iter()
        .map(|alert| StateRecord {
            collection: Collection::Alert,
            tenant: alert.tenant.clone(),
            key: alert.fingerprint.clone(),
            version: 1,
            body: serde_json::to_string(alert).unwrap(),
            deleted: false,
        })
        .collect();
    store.put_state(&records).await.unwrap();
    let entry =
        |tenant_name: &str, time_ms: u64, kind: &str, subject: &str, body: Value| HistoryEntry {
            tenant: tenant(tenant_name),
            time_ms,
            kind: kind.into(),
            rule: "pay-errors".into(),
            subject: subject.into(),
            body: body.to_string(),
        };
    store
        .append_history(&[
            entry(
                "acme",
                now_ms - 120_000,
                "transition",
                &firing.fingerprint,
                json!({"from": "inactive", "to": "pending"}),
            ),
            entry(
                "acme",
                now_ms - 90_000,
                "transition",
                &firing.fingerprint,
                json!({"from": "pending", "to": "firing"}),
            ),
            entry(
                "acme",
                now_ms - 80_000,
                "notification",
                "acme/0:{}",
                json!({"receiver": "oncall", "ok": true}),
            ),
            entry(
                "evil",
                now_ms - 80_000,
                "notification",
                "evil/0:{}",
                json!({"receiver": "evil", "ok": true}),
            ),
        ])
        .await
        .unwrap();
    let server = Server::start(&config, store).await;

    let body = server.ok("/api/v1/alerts").await;
    assert_eq!(
        body["alerts"][0],
        json!({
            "fingerprint": firing.fingerprint,
            "rule": "pay-errors",
            "state": "firing",
            "labels": {"alertname": "pay-errors", "tenant": "acme", "service.name": "pay", "vigil.unit": "u1"},
            "annotations": {"summary": "pay is failing in u1"},
            "active_since": now_ms - 120_000,
            "fired_at": now_ms - 90_000,
            "resolved_at": null,
            "value": 0.25,
            "located": [{"labels": {"http.route": "/pay"}, "actual": 0.5, "expected": 0.01, "share": 1.0, "score": 0.5}],
            "flapping": false,
            "silenced_by": [],
            "timeline": {
                "detected_at": now_ms - 120_000,
                "fired_at": now_ms - 90_000,
                "first_notified_at": now_ms - 89_000,
                "remediation_started_at": now_ms - 88_500,
                "recovered_at": null,
                "seconds_to": {"fire": 30.0, "notify": 31.0, "remediate": 31.5, "recover": null},
            },
        }),
        "firing first"
    );
    let fingerprints = |body: &Value| -> Vec<String> {
        body["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["fingerprint"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        fingerprints(&body),
        vec![firing.fingerprint.clone(), pending.fingerprint.clone()],
        "acme's two, not evil's"
    );
    let body = server.ok("/api/v1/alerts?state=pending").await;
    assert_eq!(fingerprints(&body), vec![pending.fingerprint.clone()]);
    let filter = urlencode("vigil.unit!=\"u2\"");
    let body = server.ok(&format!("/api/v1/alerts?filter={filter}")).await;
    assert_eq!(fingerprints(&body), vec![firing.fingerprint.clone()]);
    let (status, body) = server.get(Some(ACME), "/api/v1/alerts?state=on").await;
    assert_eq!(
        (status, body["error"]["parameter"].clone()),
        (400, json!("state"))
    );

    let body = server.ok("/api/v1/alerts/history").await;
    let kinds: Vec<(&str, u64)> = body["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["kind"].as_str().unwrap(), e["time"].as_u64().unwrap()))
        .collect();
    assert_eq!(
        kinds,
        vec![
            ("notification", now_ms - 80_000),
            ("transition", now_ms - 90_000),
            ("transition", now_ms - 120_000)
        ],
        "newest first, acme's only"
    );
    assert_eq!(
        body["entries"][1]["details"],
        json!({"from": "pending", "to": "firing"})
    );
    let body = server
        .ok(&format!(
            "/api/v1/alerts/history?subject={}&limit=1",
            firing.fingerprint
        ))
        .await;
    assert_eq!(body["entries"].as_array().unwrap().len(), 1);
    assert_eq!(body["entries"][0]["time"], json!(now_ms - 90_000));

    // Silences: a viewer may not make one; bad ones name the field.
    use reqwest::Method;
    let unit_u1 = json!([{"name": "vigil.unit", "value": "u1"}]);
    let good =
        json!({"matchers": unit_u1, "ends_at": "now+1h", "created_by": "sre", "comment": "deploy"});
    let (status, body) = server.post_silence(ACME, good.clone()).await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (403, json!("forbidden")),
        "{body}"
    );
    for (bad, field) in [
        (json!({"matchers": unit_u1, "created_by": "sre"}), "body"),
        (
            json!({"matchers": unit_u1, "ends_at": "now-1m", "created_by": "sre"}),
            "ends_at",
        ),
        (
            json!({"matchers": unit_u1, "ends_at": "tomorrow", "created_by": "sre"}),
            "ends_at",
        ),
        (
            json!({"matchers": [], "ends_at": "now+1h", "created_by": "sre"}),
            "matchers",
        ),
        (
            json!({"matchers": [{"name": "unit", "value": "u1", "is_regex": true}], "ends_at": "now+1h", "created_by": "sre"}),
            "body",
        ),
        (
            json!({"matchers": unit_u1, "ends_at": "now+1h", "created_by": " "}),
            "created_by",
        ),
        (
            json!({"matchers": unit_u1, "ends_at": "now+1h", "created_by": "sre", "recurring": {"cron": "0 25 * * *", "duration": "1h"}}),
            "body",
        ),
        (
            json!({"matchers": unit_u1, "ends_at": "now+1h", "created_by": "sre", "recurring": {"cron": "0 2 * * *", "duration": "10s"}}),
            "recurring.duration",
        ),
    ] {
        let (status, body) = server.post_silence(EDITOR, bad.clone()).await;
        assert_eq!(
            (status, body["error"]["parameter"].clone()),
            (400, json!(field)),
            "{bad}: {body}"
        );
    }
    let (status, active) = server.post_silence(EDITOR, good).await;
    assert_eq!(status, 200, "{active}");
    let id = active["id"].as_str().unwrap().to_owned();
    assert_eq!((id.len(), &id[14..15]), (36, "4"), "a UUID v4: {id}");
    assert_eq!(active["status"], json!("active"));
    assert_eq!(
        active["matchers"],
        json!([{"name": "vigil.unit", "value": "u1", "is_equal": true}])
    );
    let ends_at = active["ends_at"].as_u64().unwrap();
    assert!(
        (now_ms + 3_600_000..now_ms + 3_660_000).contains(&ends_at),
        "{active}"
    );

    // A nightly window that opens twelve hours from now: pending until then.
    let later = now_ms / 60_000 + 12 * 60;
    let cron = format!("{} {} * * *", later % 60, later / 60 % 24);
    let nightly = json!({"matchers": [{"name": "service.name", "value": "pay"}], "ends_at": "now+7d",
                         "recurring": {"cron": cron, "duration": "90m"}, "created_by": "sre", "comment": "nightly"});
    let (status, recurring) = server.post_silence(EDITOR, nightly.clone()).await;
    assert_eq!(
        (status, recurring["status"].clone()),
        (200, json!("pending")),
        "{recurring}"
    );
    assert_eq!(
        recurring["recurring"],
        json!({"cron": cron, "duration_ms": 5_400_000})
    );
    let recurring_id = recurring["id"].as_str().unwrap().to_owned();

    let body = server.ok("/api/v1/alerts?state=firing").await;
    assert_eq!(
        body["alerts"][0]["silenced_by"],
        json!([id]),
        "the u1 silence mutes it, the nightly one is not open"
    );
    let ids = |body: &Value| -> Vec<String> {
        body["silences"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        ids(&server.ok("/api/v1/silences").await),
        vec![id.clone(), recurring_id.clone()]
    );
    assert_eq!(
        ids(&server.ok("/api/v1/silences?status=pending").await),
        vec![recurring_id.clone()]
    );
    let (_, body) = server.get(Some(EVIL), "/api/v1/silences").await;
    assert_eq!(body["silences"], json!([]), "acme's silences are acme's");

    // Replacing keeps the id; an unknown id is not created.
    let mut changed = nightly.clone();
    changed["id"] = json!(recurring_id);
    changed["comment"] = json!("nightly, moved");
    let (status, body) = server.post_silence(EDITOR, changed.clone()).await;
    assert_eq!(
        (status, body["comment"].clone()),
        (200, json!("nightly, moved"))
    );
    changed["id"] = json!("no-such-silence");
    let (status, _) = server.post_silence(EDITOR, changed).await;
    assert_eq!(status, 404);
    let body = server.ok("/api/v1/silences").await;
    assert_eq!(ids(&body), vec![id.clone(), recurring_id.clone()]);
    assert_eq!(body["silences"][1]["comment"], json!("nightly, moved"));

    // Expiring: only acme (or an admin reading acme) may; it stays listed.
    let path = format!("/api/v1/silences/{id}");
    let (status, _) = server.send(Method::DELETE, ACME, &path, None).await;
    assert_eq!(status, 403, "a viewer");
    let (status, _) = server.send(Method::DELETE, ADMIN, &path, None).await;
    assert_eq!(status, 404, "the admin's own tenant has no such silence");
    let (status, expired) = server
        .send(Method::DELETE, ADMIN, &format!("{path}?tenant=acme"), None)
        .await;
    assert_eq!(
        (status, expired["status"].clone()),
        (200, json!("expired")),
        "{expired}"
    );
    let body = server.ok("/api/v1/alerts?state=firing").await;
    assert_eq!(body["alerts"][0]["silenced_by"], json!([]));
    assert_eq!(
        ids(&server.ok("/api/v1/silences?status=expired").await),
        vec![id.clone()]
    );
    let (status, again) = server.send(Method::DELETE, EDITOR, &path, None).await;
    assert_eq!(
        (status, again["ends_at"].clone()),
        (200, expired["ends_at"].clone()),
        "expiring twice changes nothing"
    );
    server.stop().await;
}

on_both_backends!(alerts_history_and_silences,);
