//! The prober against the demo payment service, through a real collector
//! onto the bus (in-process, and Kafka) and through the aggregator into the
//! store (SQLite, and ClickHouse): the spans of every run as exported, the
//! demo service's own spans joined to them, injected faults as failed steps
//! with their reason, and the runs' availability and latency in the store.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message as _;
use serde_json::json;
use vigil_demo::DemoService;
use vigil_domain::model::{CERTIFICATE_DAYS_LEFT, Kind, TLS_NOT_AFTER};
use vigil_domain::shutdown::Shutdown;
use vigil_domain::signal::Matcher;
use vigil_domain::time::rfc3339;
use vigil_store::{Aggregation, Store};
use vigil_synthetic::Synthetic;
use vigil_testing::{self as testing, Backend, on_both_backends};

use crate::harness::{INGEST, Stack, acme, now_s};

/// Spans read from the traces topic until `done` holds, by service.
async fn read_spans(stack: &mut Stack, done: impl Fn(&Spans) -> bool) -> Spans {
    let messages = testing::read_until(stack.traces.as_mut(), |messages| {
        done(&Spans::decode(messages))
    })
    .await;
    Spans::decode(&messages)
}

/// Spans as read from the bus, with their service's resource attributes.
#[derive(Default)]
struct Spans {
    by_service: HashMap<String, Vec<(Span, Vec<KeyValue>)>>,
}

impl Spans {
    fn decode(messages: &[vigil_bus::Message]) -> Spans {
        let mut spans = Spans::default();
        for message in messages {
            let request = ExportTraceServiceRequest::decode(message.payload.as_ref()).unwrap();
            for resource_spans in request.resource_spans {
                let resource = resource_spans.resource.unwrap_or_default().attributes;
                let service = text(&resource, "service.name").unwrap_or_default();
                for scope in resource_spans.scope_spans {
                    for span in scope.spans {
                        spans
                            .by_service
                            .entry(service.clone())
                            .or_default()
                            .push((span, resource.clone()));
                    }
                }
            }
        }
        spans
    }

    fn of(&self, service: &str) -> Vec<&Span> {
        self.by_service
            .get(service)
            .map(|spans| spans.iter().map(|(span, _)| span).collect())
            .unwrap_or_default()
    }
}

fn value(attributes: &[KeyValue], key: &str) -> Option<any_value::Value> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.clone()?.value)
}

fn text(attributes: &[KeyValue], key: &str) -> Option<String> {
    match value(attributes, key)? {
        any_value::Value::StringValue(text) => Some(text),
        _ => None,
    }
}

fn int(attributes: &[KeyValue], key: &str) -> Option<i64> {
    match value(attributes, key)? {
        any_value::Value::IntValue(n) => Some(n),
        _ => None,
    }
}

fn failure(span: &Span) -> Option<String> {
    text(&span.attributes, "vigil.probe.failure")
}

fn duration_ms(span: &Span) -> f64 {
    (span.end_time_unix_nano - span.start_time_unix_nano) as f64 / 1e6
}

/// One probe run: its root span and its steps by name.
struct Run<'a> {
    root: &'a Span,
    steps: BTreeMap<String, &'a Span>,
}

impl Run<'_> {
    fn location(&self) -> String {
        text(&self.root.attributes, "vigil.probe.location").unwrap()
    }
}

fn runs<'a>(probe_spans: &[&'a Span]) -> Vec<Run<'a>> {
    let mut runs: Vec<Run<'a>> = probe_spans
        .iter()
        .filter(|span| span.parent_span_id.is_empty())
        .map(|root| Run {
            root,
            steps: BTreeMap::new(),
        })
        .collect();
    for span in probe_spans.iter().filter(|s| !s.parent_span_id.is_empty()) {
        let run = runs
            .iter_mut()
            .find(|run| run.root.trace_id == span.trace_id)
            .expect("every step span belongs to a run");
        assert_eq!(span.parent_span_id, run.root.span_id);
        run.steps.insert(span.name.clone(), *span);
    }
    runs.sort_by_key(|run| run.root.start_time_unix_nano);
    runs
}

async fn add_fault(demo: &DemoService, fault: serde_json::Value) {
    let response = reqwest::Client::new()
        .post(format!("http://{}/admin/faults", demo.address()))
        .header("content-type", "application/json")
        .body(fault.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
}

const PAYMENT: &str = r#"
locations:
  unit-a: { vars: { base: "http://{unit-a}" } }
  unit-b: { vars: { base: "http://{unit-b}" } }
probes:
  - name: pay-e2e
    interval: 250ms
    jitter: 50ms
    timeout: 5s
    steps:
      - name: create
        http:
          method: POST
          url: "{{base}}/orders"
          json: { amount: 1250, currency: EUR }
        expect: { status: 201, json: [{ path: $.status, equals: created }] }
        extract: { order_id: $.id }
      - name: pay
        retries: 1
        http:
          method: POST
          url: "{{base}}/orders/{{order_id}}/pay"
          headers: { idempotency-key: "{{run.idempotency_key}}" }
        expect: { json: [{ path: $.status, equals: paid }] }
      - name: query
        http: { url: "{{base}}/orders/{{order_id}}" }
        expect: { latency: 150ms, json: [{ path: $.id, equals: "{{order_id}}" }] }
      - name: refund
        always: true
        http: { method: POST, url: "{{base}}/orders/{{order_id}}/refund" }
        expect: { json: [{ path: $.status, not_equals: created }] }
"#;

on_both_backends!(probes_of_the_demo_service_reach_the_bus_and_the_store);

/// Healthy runs from two units, then a failing payment in unit-b and a
/// slow query in unit-a: every run's spans on the bus as the prober
/// exported them, the demo service's spans inside the runs' traces, and
/// the same runs, failures and worst latency per location in the store.
async fn probes_of_the_demo_service_reach_the_bus_and_the_store(backend: Backend) {
    let Some(mut stack) = Stack::start(backend).await else {
        return;
    };
    let store = stack.pipeline.store.clone();
    let unit_a = stack.demo("unit-a", "1.4.0", "stable").await;
    let unit_b = stack.demo("unit-b", "1.4.0", "stable").await;
    stack.write_scenario(
        &PAYMENT
            .replace("{unit-a}", &unit_a.address().to_string())
            .replace("{unit-b}", &unit_b.address().to_string()),
    );
    let started_s = now_s();
    let stop_prober = Shutdown::new();
    let prober = Synthetic::start(&stack.config, stop_prober.clone())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    // The same faults go to both instances; each applies its own unit's.
    for demo in [&unit_a, &unit_b] {
        add_fault(
            demo,
            json!({"route": "pay", "unit": "unit-b", "error_rate": 1.0, "status": 503}),
        )
        .await;
        add_fault(
            demo,
            json!({"route": "query", "unit": "unit-a", "latency_ms": 250}),
        )
        .await;
    }
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    stop_prober.trigger();
    let metrics = Arc::clone(prober.metrics());
    prober.wait().await;
    let exported = metrics.exported_spans.get();
    // Stopping the instances flushes their SDKs' span queues.
    stack.demos.trigger();
    unit_a.wait().await;
    unit_b.wait().await;

    // Every request a step made (its attempts) is one server span of the
    // demo service.
    let requests = |spans: &Spans| -> i64 {
        spans
            .of("vigil-synthetic")
            .iter()
            .filter_map(|span| int(&span.attributes, "vigil.probe.attempts"))
            .sum()
    };
    let served = |spans: &Spans| spans.of("payments").iter().filter(|s| s.kind == 2).count() as i64;
    let spans = read_spans(&mut stack, |spans| {
        spans.of("vigil-synthetic").len() as u64 == exported && served(spans) == requests(spans)
    })
    .await;
    let probe_spans = spans.of("vigil-synthetic");
    assert_eq!(probe_spans.len() as u64, exported);
    let runs = runs(&probe_spans);
    let mut outcomes: BTreeMap<(String, String), usize> = BTreeMap::new();
    for run in &runs {
        let location = run.location();
        for span in std::iter::once(run.root).chain(run.steps.values().copied()) {
            assert_eq!(
                text(&span.attributes, "vigil.probe.name").unwrap(),
                "pay-e2e"
            );
            assert_eq!(
                text(&span.attributes, "vigil.probe.location").unwrap(),
                location
            );
            assert_eq!(
                value(&span.attributes, "vigil.synthetic"),
                Some(any_value::Value::BoolValue(true))
            );
        }
        let steps: Vec<&str> = run.steps.keys().map(String::as_str).collect();
        let outcome = match failure(run.root) {
            None => {
                assert_eq!(steps, ["create", "pay", "query", "refund"]);
                assert!(run.steps.values().all(|step| failure(step).is_none()));
                "ok".to_owned()
            }
            Some(reason) => {
                assert_eq!(run.root.status.as_ref().unwrap().message, reason);
                reason
            }
        };
        match (location.as_str(), outcome.as_str()) {
            (_, "ok") => {}
            ("unit-b", "step pay: expected status 2xx, got 503") => {
                // Tried twice; query skipped; the refund still ran.
                assert_eq!(steps, ["create", "pay", "refund"]);
                assert_eq!(
                    int(&run.steps["pay"].attributes, "vigil.probe.attempts"),
                    Some(2)
                );
                assert_eq!(
                    int(&run.steps["pay"].attributes, "http.response.status_code"),
                    Some(503)
                );
                assert_eq!(failure(run.steps["refund"]), None);
                assert_eq!(
                    int(&run.root.attributes, "vigil.probe.skipped_steps"),
                    Some(1)
                );
            }
            ("unit-a", reason) if reason.starts_with("step query: latency ") => {
                let ms: u64 = reason["step query: latency ".len()..]
                    .split(' ')
                    .next()
                    .unwrap()
                    .parse()
                    .unwrap();
                assert!(ms >= 250, "{reason}");
                assert!(
                    reason.ends_with(" ms over the budget of 150 ms"),
                    "{reason}"
                );
                assert_eq!(steps, ["create", "pay", "query", "refund"]);
                assert_eq!(failure(run.steps["refund"]), None);
            }
            other => panic!("unexpected run {other:?}"),
        }
        let kind = if outcome == "ok" { "ok" } else { "failed" };
        *outcomes.entry((location, kind.to_owned())).or_default() += 1;
    }
    for location in ["unit-a", "unit-b"] {
        for kind in ["ok", "failed"] {
            assert!(
                outcomes
                    .get(&(location.to_owned(), kind.to_owned()))
                    .copied()
                    .unwrap_or(0)
                    >= 2,
                "{outcomes:?}"
            );
        }
    }

    // The demo service's server spans are children of the probe's steps,
    // in the instance of the run's location.
    let steps_by_id: HashMap<&[u8], (&Run, &str)> = runs
        .iter()
        .flat_map(|run| {
            run.steps
                .iter()
                .map(move |(name, span)| (span.span_id.as_slice(), (run, name.as_str())))
        })
        .collect();
    let server: Vec<_> = spans.by_service["payments"]
        .iter()
        .filter(|(span, _)| span.kind == 2)
        .collect();
    assert_eq!(server.len() as i64, requests(&spans));
    for (span, resource) in server {
        let (run, step) = steps_by_id[span.parent_span_id.as_slice()];
        assert_eq!(span.trace_id, run.root.trace_id);
        assert_eq!(text(resource, "vigil.unit").unwrap(), run.location());
        let expected = match step {
            "create" => "POST /orders",
            "pay" => "POST /orders/{id}/pay",
            "query" => "GET /orders/{id}",
            _ => "POST /orders/{id}/refund",
        };
        assert_eq!(span.name, expected);
    }

    // The store holds every run: count, failures and the slowest, per
    // location.
    let mut expected: BTreeMap<String, (u64, u64, f64)> = BTreeMap::new();
    for run in &runs {
        let entry = expected.entry(run.location()).or_default();
        entry.0 += 1;
        entry.1 += u64::from(failure(run.root).is_some());
        entry.2 = entry.2.max(duration_ms(run.root));
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let stored = stored_runs(store.as_ref(), started_s).await;
        let counts: BTreeMap<_, _> = stored
            .iter()
            .map(|(k, v)| (k.clone(), (v.0, v.1)))
            .collect();
        let wanted: BTreeMap<_, _> = expected
            .iter()
            .map(|(k, v)| (k.clone(), (v.0, v.1)))
            .collect();
        if counts == wanted {
            for (location, (_, _, max)) in &expected {
                let stored_max = stored[location].2;
                assert!(
                    (stored_max - max).abs() < 1e-6,
                    "{location}: {stored_max} vs {max}"
                );
            }
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the store has {counts:?}, the bus {wanted:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    stack.stop().await;
}

/// Probe runs (root spans) in the store per location: count, failures and
/// the slowest, in ms.
async fn stored_runs(store: &dyn Store, from_s: u64) -> BTreeMap<String, (u64, u64, f64)> {
    let to_s = now_s() + 60;
    let query = Aggregation {
        tenant: acme(),
        kind: Kind::Probe,
        width_s: 10,
        from_s: from_s - from_s % 10 - 10,
        to_s: to_s - to_s % 10,
        step_s: 10,
        service: Some("vigil-synthetic".to_owned()),
        name: Some("pay-e2e".to_owned()),
        matchers: vec![Matcher::equal("vigil.probe.step", "")],
        group_by: vec!["vigil.probe.location".to_owned()],
        buckets: false,
        limit: 10_000,
    };
    let mut runs: BTreeMap<String, (u64, u64, f64)> = BTreeMap::new();
    for row in store.aggregate(&query).await.unwrap() {
        let entry = runs.entry(row.group[0].clone()).or_default();
        entry.0 += row.rollup.values.count();
        entry.1 += row.rollup.errors;
        entry.2 = entry.2.max(row.rollup.values.max().unwrap_or(0.0));
    }
    runs
}

/// gRPC steps against the collector's own client-telemetry service,
/// described by the descriptor set of `vigil-proto`: a request with one
/// valid and one absurdly old event passes with the rejection in its JSON
/// answer; a bad token answers UNAUTHENTICATED, which one step expects and
/// the next does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_steps_call_methods_from_a_descriptor_set() {
    let Some(mut stack) = Stack::start(Backend::Embedded).await else {
        return;
    };
    std::fs::write(
        stack.folder.join("vigil.pb"),
        vigil_proto::FILE_DESCRIPTOR_SET,
    )
    .unwrap();
    let now_ns = now_s() * 1_000_000_000;
    let scenario = r#"
probes:
  - name: client-ingest
    interval: 1h
    vars: { target: "http://@GRPC@", now: "@NOW@" }
    steps:
      - name: export
        grpc:
          target: "{{target}}"
          descriptors: vigil.pb
          method: vigil.client.v1.ClientService/Export
          metadata: { authorization: "Bearer @TOKEN@" }
          message:
            batches:
              - context: { appId: wallet, appVersion: "2.0", osName: ios }
                events:
                  - { timeUnixNano: "{{now}}", sessionStart: {} }
                  - { timeUnixNano: "1", sessionStart: {} }
        expect:
          json: [{ path: $.rejectedEvents, equals: "1" }]
      - name: refused
        grpc:
          target: "{{target}}"
          descriptors: vigil.pb
          method: vigil.client.v1.ClientService/Export
          metadata: { authorization: "Bearer wrong-token-0000000" }
        expect: { code: UNAUTHENTICATED }
      - name: unexpected
        grpc:
          target: "{{target}}"
          descriptors: vigil.pb
          method: vigil.client.v1.ClientService/Export
        expect: { code: OK }
"#
    .replace(
        "@GRPC@",
        &stack.pipeline.collector.grpc_address().to_string(),
    )
    .replace("@NOW@", &now_ns.to_string())
    .replace("@TOKEN@", INGEST);
    stack.write_scenario(&scenario);
    let stop_prober = Shutdown::new();
    let prober = Synthetic::start(&stack.config, stop_prober.clone())
        .await
        .unwrap();
    let spans = read_spans(&mut stack, |spans| spans.of("vigil-synthetic").len() == 4).await;
    stop_prober.trigger();
    prober.wait().await;
    let probe_spans = spans.of("vigil-synthetic");
    let runs = runs(&probe_spans);
    let [run] = &runs[..] else {
        panic!("{} runs", runs.len())
    };
    let export = run.steps["export"];
    assert_eq!(failure(export), None);
    assert_eq!(text(&export.attributes, "rpc.system").unwrap(), "grpc");
    assert_eq!(
        text(&export.attributes, "rpc.service").unwrap(),
        "vigil.client.v1.ClientService"
    );
    assert_eq!(text(&export.attributes, "rpc.method").unwrap(), "Export");
    assert_eq!(int(&export.attributes, "rpc.grpc.status_code"), Some(0));
    let refused = run.steps["refused"];
    assert_eq!(failure(refused), None);
    assert_eq!(int(&refused.attributes, "rpc.grpc.status_code"), Some(16));
    let unexpected = failure(run.steps["unexpected"]).unwrap();
    assert!(
        unexpected.starts_with("expected gRPC status OK, got UNAUTHENTICATED: "),
        "{unexpected}"
    );
    assert_eq!(
        failure(run.root).unwrap(),
        format!("step unexpected: {unexpected}")
    );
    // The valid event went on to the bus; the old one did not.
    let messages = testing::read_until(stack.client.as_mut(), |m| !m.is_empty()).await;
    let request =
        vigil_proto::client::v1::ExportClientRequest::decode(messages[0].payload.as_ref()).unwrap();
    assert_eq!(messages.len(), 1);
    assert_eq!(request.batches[0].events.len(), 1);
    assert_eq!(request.batches[0].events[0].time_unix_nano, now_ns);
}

/// A probe limited to one run at a time, at the two of its three locations
/// this process acts for, against a slow target: its runs never overlap and
/// the times they pass are counted as missed. A broken scenario file is
/// refused with its line and the probes keep running; a good one, noticed
/// by the file watcher, adds two probes, one of which runs out of its run
/// timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_keep_the_running_probes_and_runs_never_overlap() {
    let Some(mut stack) = Stack::start(Backend::Embedded).await else {
        return;
    };
    stack.config.synthetic.watch_interval_ms = 100;
    // This process acts for two of slow's three locations.
    stack.config.synthetic.locations = vec!["l1".into(), "l3".into(), "default".into()];
    let demo = stack.demo("unit-a", "1.4.0", "stable").await;
    add_fault(&demo, json!({"route": "create", "latency_ms": 300})).await;
    let slow = r#"
  - name: slow
    interval: 100ms
    locations: [l1, l2, l3]
    concurrency: 1
    steps:
      - name: create
        http: { method: POST, url: "http://@DEMO@/orders", json: { amount: 1, currency: EUR } }
"#
    .replace("@DEMO@", &demo.address().to_string());
    let fast = r#"
  - name: fast
    interval: 200ms
    steps:
      - name: health
        http: { url: "http://@DEMO@/healthz" }
"#
    .replace("@DEMO@", &demo.address().to_string());
    let deadline = r#"
  - name: deadline
    interval: 500ms
    timeout: 200ms
    steps:
      - name: create
        http: { method: POST, url: "http://@DEMO@/orders", json: { amount: 1, currency: EUR } }
"#
    .replace("@DEMO@", &demo.address().to_string());
    let file = stack.write_scenario(&format!("probes:{slow}"));
    let stop_prober = Shutdown::new();
    let prober = Synthetic::start(&stack.config, stop_prober.clone())
        .await
        .unwrap();
    let metrics = Arc::clone(prober.metrics());
    assert_eq!(metrics.scheduled.get(), 2);
    tokio::time::sleep(Duration::from_millis(1_500)).await;

    stack.write_scenario("probes:\n  - name: broken\n    interval: 1s\n");
    assert_eq!(
        prober.reload().await.unwrap_err(),
        format!("{}:2: probes[0]: missing field `steps`", file.display())
    );
    let before = metrics.steps_run();
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    assert!(metrics.steps_run() > before, "the running probe stopped");
    assert_eq!(metrics.scheduled.get(), 2);

    stack.write_scenario(&format!("probes:{slow}{fast}{deadline}"));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while metrics.scheduled.get() != 4 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the new file was not noticed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    stop_prober.trigger();
    prober.wait().await;
    let rendered = metrics.render();
    assert!(
        rendered.contains("vigil_synthetic_reloads_total{outcome=\"ok\"} 1\n"),
        "{rendered}"
    );
    let failed = "vigil_synthetic_reloads_total{outcome=\"failed\"} ";
    let refused: u64 = rendered
        .lines()
        .find_map(|line| line.strip_prefix(failed))
        .unwrap()
        .parse()
        .unwrap();
    // The explicit reload, and the watcher's own look at the same file.
    assert!((1..=2).contains(&refused), "{rendered}");
    let missed: u64 = rendered
        .lines()
        .find_map(|line| line.strip_prefix("vigil_synthetic_missed_runs_total{probe=\"slow\"} "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(missed > 0);

    let exported = metrics.exported_spans.get();
    let spans = read_spans(&mut stack, |spans| {
        spans.of("vigil-synthetic").len() as u64 == exported
    })
    .await;
    let probe_spans = spans.of("vigil-synthetic");
    let all = runs(&probe_spans);
    let name = |run: &Run| text(&run.root.attributes, "vigil.probe.name").unwrap();
    let slow_runs: Vec<&Run> = all.iter().filter(|run| name(run) == "slow").collect();
    let locations: std::collections::BTreeSet<String> =
        slow_runs.iter().map(|r| r.location()).collect();
    assert_eq!(locations, ["l1".to_owned(), "l3".to_owned()].into());
    for pair in slow_runs.windows(2) {
        assert!(
            pair[1].root.start_time_unix_nano >= pair[0].root.end_time_unix_nano,
            "two runs of slow overlap"
        );
    }
    assert!(slow_runs.iter().all(|run| duration_ms(run.root) >= 300.0));
    let fast_runs = all.iter().filter(|run| name(run) == "fast").count();
    assert!(fast_runs >= 3, "{fast_runs} runs of fast");
    assert!(
        all.iter()
            .filter(|run| name(run) != "deadline")
            .all(|run| failure(run.root).is_none())
    );
    // A run over its timeout stops its step there.
    let late: Vec<String> = all
        .iter()
        .filter(|run| name(run) == "deadline")
        .map(|run| failure(run.root).unwrap())
        .collect();
    assert!(!late.is_empty());
    for reason in late {
        assert!(
            reason.starts_with("step create: the run's timeout passed after "),
            "{reason}"
        );
        let ms: u64 = reason.rsplit(' ').nth(1).unwrap().parse().unwrap();
        assert!(ms >= 200, "{reason}");
    }
}

/// Probes of TLS targets, with the collector itself serving TLS from a test
/// CA that `synthetic.ca_file` names: HTTP and gRPC steps to it pass and
/// the runs are exported to it over HTTPS; a target whose certificate
/// another CA signed fails, unless its probe asks for
/// `insecure_skip_verify`. Each HTTP step records its target's expiry, and
/// the aggregator stores the days left as a series.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_check_certificates_and_report_their_expiry() {
    let pki = testing::pki::Pki::new();
    let collector_tls = pki.server_tls();
    let tls = collector_tls.clone();
    let Some(mut stack) = Stack::start_with(Backend::Embedded, |config| {
        config.collector.tls = Some(tls);
    })
    .await
    else {
        return;
    };
    let other_ca = testing::pki::Pki::new();
    let mut other_config = stack.config.clone();
    other_config.api.tls = Some(other_ca.server_tls());
    let stop_other = Shutdown::new();
    let other = vigil_api::Api::start(
        &other_config,
        Arc::clone(&stack.pipeline.store),
        stop_other.clone(),
    )
    .await
    .unwrap();
    std::fs::write(
        stack.folder.join("vigil.pb"),
        vigil_proto::FILE_DESCRIPTOR_SET,
    )
    .unwrap();
    let collector = &stack.pipeline.collector;
    let scenario = r#"
probes:
  - name: tls-trusted
    interval: 1h
    steps:
      - name: http
        http:
          method: POST
          url: "https://localhost:@HTTP@/v1/traces"
          headers: { authorization: "Bearer @TOKEN@" }
          json: { resourceSpans: [] }
      - name: grpc
        grpc:
          target: "https://localhost:@GRPC@"
          descriptors: vigil.pb
          method: vigil.client.v1.ClientService/Export
          metadata: { authorization: "Bearer @TOKEN@" }
  - name: tls-untrusted
    interval: 1h
    steps:
      - { name: http, http: { url: "https://localhost:@OTHER@/healthz" } }
  - name: tls-skip-verify
    interval: 1h
    insecure_skip_verify: true
    steps:
      - { name: http, http: { url: "https://localhost:@OTHER@/healthz" } }
"#
    .replace("@HTTP@", &collector.http_address().port().to_string())
    .replace("@GRPC@", &collector.grpc_address().port().to_string())
    .replace("@OTHER@", &other.address().port().to_string())
    .replace("@TOKEN@", INGEST);
    stack.write_scenario(&scenario);
    stack.config.synthetic.ca_file = Some(pki.ca_file.clone());
    stack.config.synthetic.otlp_endpoint =
        format!("https://localhost:{}", collector.http_address().port());
    let from_s = now_s();
    let stop_prober = Shutdown::new();
    let prober = Synthetic::start(&stack.config, stop_prober.clone())
        .await
        .unwrap();
    // Three roots and four steps, exported over HTTPS.
    let spans = read_spans(&mut stack, |spans| spans.of("vigil-synthetic").len() == 7).await;
    stop_prober.trigger();
    prober.wait().await;
    let probe_spans = spans.of("vigil-synthetic");
    let runs = runs(&probe_spans);
    let run = |name: &str| {
        runs.iter()
            .find(|run| run.root.name == name)
            .unwrap_or_else(|| panic!("no run of {name}"))
    };
    let not_after = |path: &std::path::Path| {
        let der = std::fs::read(path).unwrap();
        let der = rustls_pki_types::pem::PemObject::from_pem_slice(&der)
            .map(|c: rustls_pki_types::CertificateDer| c.to_vec())
            .unwrap();
        vigil_tls::not_after_unix_s(&der).unwrap()
    };
    let collector_expiry = not_after(&collector_tls.cert_file);
    let other_expiry = not_after(&other_config.api.tls.as_ref().unwrap().cert_file);

    let trusted = run("tls-trusted");
    assert_eq!(failure(trusted.root), None);
    let http = trusted.steps["http"];
    assert_eq!(
        int(&http.attributes, "http.response.status_code"),
        Some(200)
    );
    assert_eq!(
        text(&http.attributes, TLS_NOT_AFTER).unwrap(),
        rfc3339(collector_expiry * 1_000)
    );
    assert_eq!(
        int(&trusted.steps["grpc"].attributes, "rpc.grpc.status_code"),
        Some(0)
    );

    let untrusted = failure(run("tls-untrusted").steps["http"]).unwrap();
    assert!(untrusted.contains("certificate"), "{untrusted}");
    let skipped = run("tls-skip-verify").steps["http"];
    assert_eq!(failure(skipped), None);
    assert_eq!(
        text(&skipped.attributes, TLS_NOT_AFTER).unwrap(),
        rfc3339(other_expiry * 1_000)
    );

    // Days left, per probe, as the aggregator stores them.
    let expected = |span: &Span, expiry_s: u64| {
        (expiry_s as f64 * 1e3 - (span.end_time_unix_nano / 1_000_000) as f64) / 86_400_000.0
    };
    let wanted = BTreeMap::from([
        (
            "tls-skip-verify".to_owned(),
            expected(skipped, other_expiry),
        ),
        ("tls-trusted".to_owned(), expected(http, collector_expiry)),
    ]);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let to_s = now_s() + 60;
        let query = Aggregation {
            tenant: acme(),
            kind: Kind::Metric,
            width_s: 10,
            from_s: from_s - from_s % 10 - 10,
            to_s: to_s - to_s % 10,
            step_s: 10,
            service: Some("vigil-synthetic".to_owned()),
            name: Some(CERTIFICATE_DAYS_LEFT.to_owned()),
            matchers: Vec::new(),
            group_by: vec!["vigil.probe.name".to_owned()],
            buckets: false,
            limit: 10_000,
        };
        let rows = stack.pipeline.store.aggregate(&query).await.unwrap();
        let stored: BTreeMap<String, (u64, f64)> = rows
            .iter()
            .map(|row| {
                let values = &row.rollup.values;
                (row.group[0].clone(), (values.count(), values.sum()))
            })
            .collect();
        if stored.len() == wanted.len() {
            for (probe, days) in &wanted {
                let (count, sum) = stored[probe];
                assert_eq!(count, 1, "{probe}");
                assert!((sum - days).abs() < 1e-6, "{probe}: {sum} days, not {days}");
                assert!(*days > 364.0 && *days < 367.0, "{probe}: {days}");
            }
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "stored: {stored:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop_other.trigger();
    other.wait().await.unwrap();
    stack.stop().await;
}
