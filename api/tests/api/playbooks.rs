//! Playbooks and runs as the alerter keeps them, read through the API;
//! approvals and the kill switch written through it, by role.

use vigil_domain::playbook::{Approval, Run, RunState, StepRecord, StepState, Switch};

use super::*;

fn run(tenant_name: &str, id: &str, state: RunState, started_ms: u64) -> Run {
    let step = |kind: &str, state| StepRecord {
        kind: kind.into(),
        target: "oncall".into(),
        state,
        started_ms: Some(started_ms),
        ended_ms: None,
        detail: Value::Null,
    };
    Run {
        id: id.into(),
        tenant: tenant(tenant_name),
        playbook: "gated".into(),
        rule: "pay-errors".into(),
        alert: "0123456789abcdef".into(),
        labels: BTreeMap::from([("vigil.unit".to_owned(), "u1".to_owned())]),
        located: BTreeMap::new(),
        state,
        started_ms,
        ended_ms: state.is_over().then_some(started_ms + 42_000),
        step: 0,
        steps: vec![
            step("approve", StepState::Running),
            step("check", StepState::Pending),
        ],
        reason: String::new(),
    }
}

async fn runs_approvals_and_the_kill_switch(backend: Backend) {
    let Some(config) = testing::config(backend) else {
        return;
    };
    let config = api_config(config);
    let store = store::open(&config.store).await.unwrap();
    let now_ms = now_s() * 1000;
    let prefix = testing::unique_name("run");
    let waiting = run(
        "acme",
        &format!("{prefix}-w"),
        RunState::Waiting,
        now_ms - 60_000,
    );
    let recovered = run(
        "acme",
        &format!("{prefix}-r"),
        RunState::Recovered,
        now_ms - 120_000,
    );
    let theirs = run(
        "evil",
        &format!("{prefix}-e"),
        RunState::Waiting,
        now_ms - 30_000,
    );
    let records: Vec<StateRecord> = [&waiting, &recovered, &theirs]
        .iter()
        .map(|run| StateRecord {
            collection: Collection::Run,
            tenant: run.tenant.clone(),
            key: run.id.clone(),
            version: 1,
            body: serde_json::to_string(run).unwrap(),
            deleted: false,
        })
        .collect();
    store.put_state(&records).await.unwrap();
    let server = Server::start(&config, Arc::clone(&store)).await;

    // The tenant's runs of the range, newest first, and per rule.
    let body = server
        .ok(&format!(
            "/api/v1/playbooks/runs?rule=pay-errors&from={}",
            now_ms - 600_000
        ))
        .await;
    let ids: Vec<&str> = body["runs"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["id"].as_str())
        .filter(|id| id.starts_with(&prefix))
        .collect();
    assert_eq!(ids, [waiting.id.as_str(), recovered.id.as_str()]);
    let waiting_only = server
        .ok(&format!(
            "/api/v1/playbooks/runs?state=waiting&from={}",
            now_ms - 600_000
        ))
        .await;
    assert!(
        waiting_only["runs"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["state"] == "waiting")
    );
    let (status, bad) = server
        .get(Some(ACME), "/api/v1/playbooks/runs?state=resting")
        .await;
    assert_eq!(
        (status, bad["error"]["parameter"].as_str()),
        (400, Some("state"))
    );
    assert_eq!(
        server
            .ok(&format!("/api/v1/playbooks/runs/{}", waiting.id))
            .await,
        serde_json::to_value(&waiting).unwrap()
    );
    let (status, _) = server
        .get(Some(ACME), &format!("/api/v1/playbooks/runs/{}", theirs.id))
        .await;
    assert_eq!(status, 404, "another tenant's run is not found");

    // A viewer may not approve; an editor may, a waiting run only.
    let approve = |id: &str| format!("/api/v1/playbooks/runs/{id}/approve");
    let by = json!({"by": "sre@example.com"});
    let (status, body) = server
        .send(
            reqwest::Method::POST,
            ACME,
            &approve(&waiting.id),
            Some(by.clone()),
        )
        .await;
    assert_eq!(status, 403, "{body}");
    let (status, body) = server
        .send(
            reqwest::Method::POST,
            EDITOR,
            &approve(&recovered.id),
            Some(by.clone()),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("conflict")),
        "{body}"
    );
    let (status, body) = server
        .send(
            reqwest::Method::POST,
            EDITOR,
            &approve(&theirs.id),
            Some(by.clone()),
        )
        .await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = server
        .send(
            reqwest::Method::POST,
            EDITOR,
            &approve(&waiting.id),
            Some(by),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let approvals = store.state(Collection::Approval).await.unwrap();
    let approval = approvals.iter().find(|r| r.key == waiting.id).unwrap();
    assert_eq!(approval.tenant, tenant("acme"));
    let approval: Approval = serde_json::from_str(&approval.body).unwrap();
    assert_eq!(approval.by, "sre@example.com");
    assert!(approval.at_ms >= now_ms);

    // The kill switch needs an admin.
    let pause = json!({"paused": true, "by": "admin@example.com"});
    let (status, body) = server
        .send(
            reqwest::Method::POST,
            EDITOR,
            "/api/v1/playbooks/pause",
            Some(pause.clone()),
        )
        .await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .ends_with("needs an admin token")
    );
    let (status, body) = server
        .send(
            reqwest::Method::POST,
            ADMIN,
            "/api/v1/playbooks/pause",
            Some(pause),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let paused = server.ok("/api/v1/playbooks").await;
    assert_eq!(paused["paused"]["by"], "admin@example.com");
    let (status, _) = server
        .send(
            reqwest::Method::POST,
            ADMIN,
            "/api/v1/playbooks/pause",
            Some(json!({"paused": false, "by": "admin@example.com"})),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(server.ok("/api/v1/playbooks").await["paused"], Value::Null);
    let switch: Vec<Switch> = store
        .state(Collection::Switch)
        .await
        .unwrap()
        .iter()
        .map(|r| serde_json::from_str(&r.body).unwrap())
        .collect();
    assert!(switch.iter().all(|s| !s.paused));
    server.stop().await;
}

on_both_backends!(runs_approvals_and_the_kill_switch);
