//! Playbooks on the real bus and store, against the signed receiver that
//! fails the first two attempts of each call.

use super::*;
use vigil_domain::playbook::{Approval, PLAYBOOKS_SWITCH, Run, RunState, StepState, Switch};
use vigil_store::StateRecord;

/// Playbooks for alerts of `pay-errors`, one per unit: u1's recovers, u2's
/// check cannot pass and escalates, u3's waits for an approval, u4's is a
/// dry run.
fn playbooks() -> String {
    let check = r#"
          service: pay
          signal: error_ratio
          op: '<'
          value: 0.01
          min_count: 10
          where: {vigil.unit: "{{vigil.unit}}"}"#;
    format!(
        r#"
tenant: acme
playbooks:
  - name: drain
    rules: [pay-errors]
    if: ['vigil.unit="u1"']
    steps:
      - call: rollback
      - check:{check}
          for: 10s
          deadline: 2m
      - escalate: oncall
        if: ['check="failed"']
  - name: drain-in-vain
    rules: [pay-errors]
    if: ['vigil.unit="u2"']
    steps:
      - call: rollback
      - check:{check}
          deadline: 20s
      - escalate: oncall
        if: ['check="failed"']
  - name: gated
    rules: [pay-errors]
    if: ['vigil.unit="u3"']
    steps:
      - approve: oncall
        timeout: 5m
      - call: rollback
      - check:{check}
          deadline: 5m
  - name: rehearsal
    matchers: ['vigil.unit="u4"']
    dry_run: true
    steps:
      - call: rollback
      - check:{check}
"#
    )
}

async fn runs(store: &dyn Store) -> Vec<Run> {
    store
        .state(Collection::Run)
        .await
        .unwrap()
        .into_iter()
        .map(|r| serde_json::from_str(&r.body).unwrap())
        .collect()
}

async fn run_of(store: &dyn Store, playbook: &str) -> Option<Run> {
    runs(store)
        .await
        .into_iter()
        .find(|r| r.playbook == playbook)
}

/// Waits until the run of `playbook` satisfies `done`.
async fn wait_for_run(
    store: &dyn Store,
    playbook: &str,
    what: &str,
    done: impl Fn(&Run) -> bool,
) -> Run {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if let Some(run) = run_of(store, playbook).await
            && done(&run)
        {
            return run;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {playbook}: {what}; runs: {:?}",
            runs(store).await
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Publishes a row per unit for each 10 s window from now until `until`
/// holds: `errors` of 40 requests failed, by unit.
async fn feed(
    s: &Setup,
    seq: &mut u64,
    errors: &[(&str, u64)],
    mut until: impl AsyncFnMut() -> bool,
) {
    let mut window = 0;
    loop {
        let now = now_s() - now_s() % 10;
        if now != window {
            window = now;
            let rows: Vec<RollupRow> = errors
                .iter()
                .map(|(unit, e)| row(unit, now, 40, *e))
                .collect();
            *seq += 1;
            publish(&*s.bus, &s.config, *seq, &rows).await;
        }
        if until().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn the_playbooks_recover_escalate_wait_rehearse_and_stop(backend: Backend) {
    let stop = Shutdown::new();
    let (receiver, base) = receiver(stop.clone()).await;
    let Some(mut s) = setup(backend, &base).await else {
        return;
    };
    std::fs::write(s.folder.join("playbooks.yaml"), playbooks()).unwrap();
    // A playbook may call only the hosts the configuration lists.
    let refused = Alerter::start(
        &s.config,
        Arc::clone(&s.bus),
        s.store.clone(),
        Shutdown::new(),
    )
    .await
    .err()
    .expect("a call to a host not listed is refused")
    .to_string();
    assert!(
        refused.contains("playbooks.yaml:")
            && refused.contains("playbook drain: steps[0]: call rollback: the host 127.0.0.1:")
            && refused.ends_with("is not in alerter.playbook_hosts"),
        "{refused}"
    );
    s.config.alerter.playbook_hosts = vec!["127.0.0.1".into()];
    let first = Shutdown::new();
    let alerter = s.alerter(first.clone()).await;
    let store = &*s.store;
    let mut seq = 0;

    // Every unit fails: an alert each, a run each (u4's a dry run).
    let failing = [("u1", 20), ("u2", 20), ("u3", 20), ("u4", 20)];
    feed(&s, &mut seq, &failing, async || {
        runs(store).await.len() == 4
    })
    .await;
    let rehearsal = run_of(store, "rehearsal").await.unwrap();
    assert_eq!(rehearsal.state, RunState::DryRun);
    assert_eq!(
        rehearsal.steps[0].detail,
        json!({"dryRun": true, "url": format!("{base}/rollback/pay"), "body": {"unit": "u4", "ratio": 0.5}})
    );
    assert!(
        !receiver
            .all()
            .iter()
            .any(|r| r.idempotency_key.starts_with(&rehearsal.id)),
        "a dry run calls nothing"
    );
    let drain = wait_for_run(store, "drain", "its call answered", |r| {
        r.steps[0].state == StepState::Done
    })
    .await;
    assert_eq!(drain.steps[0].detail["status"], json!(200));
    assert_eq!(drain.steps[0].detail["attempts"], json!(3));

    // A restart once the call was answered: the new alerter takes the run
    // up at its check, and the call is not made again.
    first.trigger();
    alerter.wait().await;
    let second = Shutdown::new();
    let alerter = s.alerter(second.clone()).await;

    // u1 recovers; u2 stays broken; u3 waits for its approval.
    let mixed = [("u1", 0), ("u2", 20), ("u3", 20)];
    feed(&s, &mut seq, &mixed, async || {
        run_of(store, "drain")
            .await
            .is_some_and(|r| r.state.is_over())
            && run_of(store, "drain-in-vain")
                .await
                .is_some_and(|r| r.state.is_over())
    })
    .await;
    let drain = run_of(store, "drain").await.unwrap();
    assert_eq!(drain.state, RunState::Recovered, "{drain:?}");
    let states: Vec<StepState> = drain.steps.iter().map(|s| s.state).collect();
    assert_eq!(
        states,
        [StepState::Done, StepState::Done, StepState::Skipped]
    );
    assert_eq!(drain.steps[1].detail["where"], json!({"vigil.unit": "u1"}));
    let key = format!("{}-0", drain.id);
    let attempts: Vec<(usize, bool)> = receiver
        .all()
        .iter()
        .filter(|r| r.idempotency_key == key)
        .map(|r| (r.attempt, r.accepted))
        .collect();
    assert_eq!(
        attempts,
        [(1, false), (2, false), (3, true)],
        "one call, answered once"
    );
    let call = receiver.accepted("/rollback/pay");
    let call = call.iter().find(|r| r.idempotency_key == key).unwrap();
    assert_eq!(call.body, json!({"unit": "u1", "ratio": 0.5}));

    let in_vain = run_of(store, "drain-in-vain").await.unwrap();
    assert_eq!(in_vain.state, RunState::Failed, "{in_vain:?}");
    let states: Vec<StepState> = in_vain.steps.iter().map(|s| s.state).collect();
    assert_eq!(
        states,
        [StepState::Done, StepState::Failed, StepState::Done]
    );
    let escalated = wait_for("the escalation", Duration::from_secs(10), || {
        receiver
            .accepted("/hook")
            .into_iter()
            .find(|r| r.body["vigil"]["playbook"]["kind"] == "escalate")
    })
    .await;
    assert_eq!(escalated.idempotency_key, format!("{}-2", in_vain.id));
    assert_eq!(
        escalated.body["vigil"]["playbook"]["run"],
        json!(in_vain.id)
    );
    assert_eq!(escalated.body["commonLabels"]["vigil.unit"], "u2");

    // u3's run waits; its receiver was told where to approve it.
    let gated = run_of(store, "gated").await.unwrap();
    assert_eq!(gated.state, RunState::Waiting);
    assert!(
        !receiver
            .all()
            .iter()
            .any(|r| r.idempotency_key == format!("{}-1", gated.id)),
        "nothing is called before the approval"
    );
    let told = wait_for("the approval request", Duration::from_secs(10), || {
        receiver
            .accepted("/hook")
            .into_iter()
            .find(|r| r.body["vigil"]["playbook"]["kind"] == "approve")
    })
    .await;
    assert_eq!(
        told.body["vigil"]["playbook"]["approveURL"],
        json!(format!("/api/v1/playbooks/runs/{}/approve", gated.id))
    );
    // The approval as `POST /api/v1/playbooks/runs/{id}/approve` writes it.
    let approval = Approval {
        by: "sre@example.com".into(),
        at_ms: now_s() * 1_000,
    };
    store
        .put_state(&[StateRecord {
            collection: Collection::Approval,
            tenant: TenantId::parse("acme").unwrap(),
            key: gated.id.clone(),
            version: approval.at_ms,
            body: serde_json::to_string(&approval).unwrap(),
            deleted: false,
        }])
        .await
        .unwrap();
    let gated = wait_for_run(store, "gated", "its call after the approval", |r| {
        r.steps[1].state == StepState::Done
    })
    .await;
    assert_eq!(gated.steps[0].detail["approvedBy"], "sre@example.com");
    assert_eq!(gated.state, RunState::Running);

    // The alert's timeline: detected, fired, notified, remediated.
    let alerts = store.state(Collection::Alert).await.unwrap();
    let u2: vigil_domain::alert::Alert = alerts
        .iter()
        .map(|r| serde_json::from_str::<vigil_domain::alert::Alert>(&r.body).unwrap())
        .find(|a| a.labels.get("vigil.unit").map(String::as_str) == Some("u2"))
        .unwrap();
    assert_eq!(u2.remediation_started_ms, Some(in_vain.started_ms));
    assert!(u2.notified_ms.is_some_and(|n| n >= u2.fired_ms.unwrap()));
    assert_eq!(u2.recovered_ms, None, "its check never passed");

    // The kill switch: the running run stops, a new alert starts none.
    let switch = Switch {
        paused: true,
        by: "admin@example.com".into(),
        at_ms: now_s() * 1_000,
    };
    store
        .put_state(&[StateRecord {
            collection: Collection::Switch,
            tenant: TenantId::parse("ops").unwrap(),
            key: PLAYBOOKS_SWITCH.into(),
            version: switch.at_ms,
            body: serde_json::to_string(&switch).unwrap(),
            deleted: false,
        }])
        .await
        .unwrap();
    let gated = wait_for_run(store, "gated", "aborted", |r| r.state.is_over()).await;
    assert_eq!(gated.state, RunState::Aborted);
    assert_eq!(
        gated.reason,
        "the playbooks were paused (by admin@example.com)"
    );
    let before = runs(store).await.len();
    feed(&s, &mut seq, &[("u1", 20)], async || {
        let history = store
            .history(&HistoryQuery {
                tenant: TenantId::parse("acme").unwrap(),
                from_ms: 0,
                to_ms: u64::MAX,
                rule: None,
                subject: None,
                limit: 1_000,
            })
            .await
            .unwrap();
        history.iter().any(|e| {
            e.kind == "playbook" && e.body.contains("\"refused\"") && e.body.contains("paused")
        })
    })
    .await;
    assert_eq!(
        runs(store).await.len(),
        before,
        "no run starts while paused"
    );

    second.trigger();
    alerter.wait().await;
    stop.trigger();
}

on_both_backends!(the_playbooks_recover_escalate_wait_rehearse_and_stop);
