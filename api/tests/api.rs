//! The dashboard API over real stores (SQLite, and ClickHouse next to
//! Kafka): known rollups and spans written to the store and read back
//! through HTTP with reqwest. Data through every component to the API:
//! `tests/pipeline/`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use vigil_api::Api;
use vigil_config::{ApiToken, Config, Role, Secret, Sli, SloConfig, StoreKind};
use vigil_domain::alert::{Alert, Collection, State as AlertState, fingerprint};
use vigil_domain::model::RollupRow;
use vigil_domain::model::{Kind, Rollup, SeriesKey};
use vigil_domain::shutdown::Shutdown;
use vigil_domain::tenant::TenantId;
use vigil_store::{self as store, Flush, HistoryEntry, SpanRecord, StateRecord, Store, WIDTHS};
use vigil_testing::on_both_backends;
use vigil_testing::{self as testing, Backend};

const ACME: &str = "acme-viewer-token-0123";
const EVIL: &str = "evil-viewer-token-0123";
const ADMIN: &str = "ops-admin-token-012345";
const EDITOR: &str = "acme-editor-token-0123";

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn tenant(name: &str) -> TenantId {
    TenantId::parse(name).unwrap()
}

/// An API on a free port over the store of `config`, with tokens for
/// tenants acme and evil (viewers) and an admin of tenant ops.
struct Server {
    api: Api,
    shutdown: Shutdown,
    client: reqwest::Client,
}

fn api_config(mut config: Config) -> Config {
    config.api.listen = ([127, 0, 0, 1], 0).into();
    let token = |secret: &str, name: &str, role| ApiToken {
        token: Secret::new(secret),
        tenant: tenant(name),
        role,
    };
    config.api.tokens = vec![
        token(ACME, "acme", Role::Viewer),
        token(EVIL, "evil", Role::Viewer),
        token(ADMIN, "ops", Role::Admin),
        token(EDITOR, "acme", Role::Editor),
    ];
    config
}

impl Server {
    async fn start(config: &Config, store: Arc<dyn Store>) -> Server {
        let shutdown = Shutdown::new();
        let api = Api::start(config, store, shutdown.clone()).await.unwrap();
        Server {
            api,
            shutdown,
            client: reqwest::Client::new(),
        }
    }

    /// The status and JSON body of `GET path` with `token`.
    async fn get(&self, token: Option<&str>, path: &str) -> (u16, Value) {
        let mut request = self
            .client
            .get(format!("http://{}{path}", self.api.address()));
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, body)
    }

    /// The status and JSON body of `method path` with `token` and a JSON
    /// body.
    async fn send(
        &self,
        method: reqwest::Method,
        token: &str,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut request = self
            .client
            .request(method, format!("http://{}{path}", self.api.address()))
            .header("authorization", format!("Bearer {token}"));
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// `POST /api/v1/silences` of `silence` with `token`.
    async fn post_silence(&self, token: &str, silence: Value) -> (u16, Value) {
        self.send(
            reqwest::Method::POST,
            token,
            "/api/v1/silences",
            Some(silence),
        )
        .await
    }

    /// The body of `GET path` as acme, which must answer 200.
    async fn ok(&self, path: &str) -> Value {
        let (status, body) = self.get(Some(ACME), path).await;
        assert_eq!(status, 200, "{path}: {body}");
        body
    }

    async fn stop(self) {
        self.shutdown.trigger();
        self.api.wait().await.unwrap();
    }
}

/// `values` as one rollup, the first `errors` of them failed.
fn rollup(values: impl IntoIterator<Item = f64>, errors: usize) -> Rollup {
    let mut rollup = Rollup::default();
    for (i, value) in values.into_iter().enumerate() {
        rollup.record(value, i < errors).unwrap();
    }
    rollup
}

/// Rows of every width for the windows holding `time_s`, as an aggregator
/// writes them.
fn rows_at(series: &Arc<SeriesKey>, time_s: u64, rollup: &Rollup) -> Vec<RollupRow> {
    WIDTHS
        .iter()
        .map(|&width| RollupRow {
            series: Arc::clone(series),
            partition: 0,
            width_s: width,
            start_s: time_s - time_s % u64::from(width),
            rollup: rollup.clone(),
            correction: false,
        })
        .collect()
}

fn series(
    tenant_name: &str,
    kind: Kind,
    service: &str,
    name: &str,
    labels: &[(&str, &str)],
) -> Arc<SeriesKey> {
    Arc::new(SeriesKey::new(
        tenant(tenant_name),
        kind,
        service,
        name,
        labels
            .iter()
            .map(|&(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
    ))
}

fn span(
    trace: &str,
    id: &str,
    parent: &str,
    name: &str,
    start_ns: u64,
    ms: u64,
    error: bool,
) -> SpanRecord {
    SpanRecord {
        tenant: tenant("acme"),
        trace_id: trace.into(),
        span_id: id.into(),
        parent_span_id: parent.into(),
        service: "pay".into(),
        name: name.into(),
        kind: "server".into(),
        start_ns,
        duration_ns: ms * 1_000_000,
        status_code: if error { 2 } else { 1 },
        status_message: if error {
            "card declined".into()
        } else {
            String::new()
        },
        attributes: vec![("vigil.unit".into(), "u1".into())],
    }
}

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

/// Writes the known data, twenty minutes ago (a closed minute `t`):
/// - acme's pay `POST /pay` server spans: unit u1 1..=100 ms with 5 errors
///   at `t`, unit u2 111..=160 ms with 10 errors a minute later; 20
///   internal `db.query` spans; ledger's 10 internal spans, 1 failed;
/// - evil's pay: 7 server spans;
/// - probe pay-e2e: 10 runs at u1 (200..=290 ms, one failed) and steps;
/// - app wallet-ios 2.0: 100 sessions, 3 crashes, cold starts 500..=599 ms,
///   1000 frames of which 50 slow and 5 frozen;
/// - a trace: POST /pay → reserve, charge → db.
async fn write_known_data(store: &dyn Store) -> u64 {
    let now = now_s();
    let t = now - now % 60 - 20 * 60;
    let server = |unit| {
        series(
            "acme",
            Kind::Span,
            "pay",
            "POST /pay",
            &[
                ("span.kind", "server"),
                ("vigil.unit", unit),
                ("http.route", "/pay"),
            ],
        )
    };
    let mut rows = Vec::new();
    rows.extend(rows_at(
        &server("u1"),
        t + 5,
        &rollup((1..=100).map(f64::from), 5),
    ));
    rows.extend(rows_at(
        &server("u2"),
        t + 65,
        &rollup((111..=160).map(f64::from), 10),
    ));
    let internal = series(
        "acme",
        Kind::Span,
        "pay",
        "db.query",
        &[("span.kind", "internal")],
    );
    rows.extend(rows_at(&internal, t + 5, &rollup([0.5; 20], 0)));
    let ledger = series(
        "acme",
        Kind::Span,
        "ledger",
        "post",
        &[("span.kind", "internal")],
    );
    rows.extend(rows_at(&ledger, t + 5, &rollup([2.0; 10], 1)));
    let evil = series(
        "evil",
        Kind::Span,
        "pay",
        "POST /pay",
        &[("span.kind", "server")],
    );
    rows.extend(rows_at(&evil, t + 5, &rollup([9.0; 7], 0)));
    let run = series(
        "acme",
        Kind::Probe,
        "vigil-synthetic",
        "pay-e2e",
        &[("vigil.probe.step", ""), ("vigil.probe.location", "u1")],
    );
    rows.extend(rows_at(
        &run,
        t + 5,
        &rollup((0..10).map(|i| f64::from(200 + 10 * i)), 1),
    ));
    let step = series(
        "acme",
        Kind::Probe,
        "vigil-synthetic",
        "pay-e2e",
        &[
            ("vigil.probe.step", "create"),
            ("vigil.probe.location", "u1"),
        ],
    );
    rows.extend(rows_at(&step, t + 5, &rollup([50.0; 10], 0)));
    let client = |name, labels: &[(&str, &str)]| {
        let mut all = vec![("app.version", "2.0")];
        all.extend_from_slice(labels);
        series("acme", Kind::Client, "wallet-ios", name, &all)
    };
    rows.extend(rows_at(
        &client("client.sessions", &[]),
        t + 5,
        &rollup([1.0; 100], 0),
    ));
    rows.extend(rows_at(
        &client(
            "client.crashes",
            &[
                ("exception.type", "NSRangeException"),
                ("crash.kind", "native"),
            ],
        ),
        t + 5,
        &rollup([1.0; 3], 3),
    ));
    rows.extend(rows_at(
        &client("client.app_start", &[("start.kind", "cold")]),
        t + 5,
        &rollup((500..600).map(f64::from), 0),
    ));
    rows.extend(rows_at(
        &client("client.frames", &[]),
        t + 5,
        &rollup([1000.0], 0),
    ));
    rows.extend(rows_at(
        &client("client.frames.slow", &[]),
        t + 5,
        &rollup([50.0], 0),
    ));
    rows.extend(rows_at(
        &client("client.frames.frozen", &[]),
        t + 5,
        &rollup([5.0], 0),
    ));
    store
        .write(&Flush {
            source: "test".into(),
            time_s: now,
            checkpoints: Vec::new(),
            rows,
        })
        .await
        .unwrap();

    let start = (t + 5) * 1_000_000_000;
    let mut spans = vec![
        span(TRACE, "00000000000000a1", "", "POST /pay", start, 120, true),
        span(
            TRACE,
            "00000000000000b2",
            "00000000000000a1",
            "reserve",
            start + 1_000_000,
            30,
            false,
        ),
        span(
            TRACE,
            "00000000000000c3",
            "00000000000000a1",
            "charge",
            start + 40_000_000,
            70,
            true,
        ),
        span(
            TRACE,
            "00000000000000d4",
            "00000000000000c3",
            "db",
            start + 45_000_000,
            10,
            false,
        ),
    ];
    for i in 0..5u64 {
        let mut run = span(
            &format!("{:032x}", 0xabc0 + i),
            &format!("{:016x}", 0xe0 + i),
            "",
            "pay-e2e",
            start + i * 1_000_000_000,
            200 + 10 * i,
            i == 3,
        );
        run.service = "vigil-synthetic".into();
        run.attributes = vec![
            ("vigil.probe.name".into(), "pay-e2e".into()),
            (
                "vigil.probe.location".into(),
                if i % 2 == 0 { "u1" } else { "u2" }.into(),
            ),
        ];
        spans.push(run);
    }
    store.write_spans(&spans).await.unwrap();
    t
}

fn slos() -> Vec<SloConfig> {
    let slo = |name: &str, sli, threshold_ms| SloConfig {
        name: name.into(),
        tenant: tenant("acme"),
        description: String::new(),
        kind: Kind::Span,
        service: Some("pay".into()),
        series: Some("POST /pay".into()),
        labels: BTreeMap::new(),
        sli,
        threshold_ms,
        objective_percent: 99.0,
        window_days: 7,
    };
    vec![
        slo("pay-availability", Sli::Availability, None),
        slo("pay-latency", Sli::Latency, Some(105.0)),
    ]
}

fn number(value: &Value) -> f64 {
    value
        .as_f64()
        .unwrap_or_else(|| panic!("not a number: {value}"))
}

fn assert_within(value: &Value, exact: f64, relative: f64) {
    let value = number(value);
    assert!(
        (value - exact).abs() <= exact.abs() * relative,
        "{value} is not within {relative} of {exact}"
    );
}

async fn start_with_known_data(backend: Backend) -> Option<(Server, u64)> {
    let mut config = api_config(testing::config(backend)?);
    config.slos = slos();
    let store = store::open(&config.store).await.unwrap();
    let t = write_known_data(store.as_ref()).await;
    Some((Server::start(&config, store).await, t))
}

async fn services_and_queries_answer_exactly(backend: Backend) {
    let Some((server, t)) = start_with_known_data(backend).await else {
        return;
    };
    let body = server.ok("/api/v1/services").await;
    let services = body["services"].as_array().unwrap();
    assert_eq!(services.len(), 2, "{body}");
    let (ledger, pay) = (&services[0], &services[1]);
    assert_eq!(ledger["service"], "ledger");
    assert_eq!(
        (
            ledger["requests"].clone(),
            ledger["errors"].clone(),
            ledger["spans"].clone()
        ),
        (json!(10), json!(1), json!("all"))
    );
    assert_eq!(pay["service"], "pay");
    assert_eq!(
        (
            pay["requests"].clone(),
            pay["errors"].clone(),
            pay["spans"].clone()
        ),
        (json!(150), json!(15), json!("entry"))
    );
    assert_within(&pay["error_ratio"], 0.1, 1e-12);
    assert_within(&pay["availability"], 0.9, 1e-12);
    assert_within(&pay["p50_ms"], 75.0, 0.01);
    assert_within(&pay["p99_ms"], 159.0, 0.01);

    let (from, to) = ((t - 60) * 1000, (t + 180) * 1000);
    let query = |signal: &str, extra: &str| {
        format!(
            "/api/v1/query?kind=span&service=pay&name=POST%20/pay&signal={signal}&from={from}&to={to}{extra}"
        )
    };
    let body = server
        .ok(&query("p50", "&group_by=vigil.unit&step=60000"))
        .await;
    let series = body["series"].as_array().unwrap();
    assert_eq!(series.len(), 2, "{body}");
    assert_eq!(series[0]["labels"], json!({"vigil.unit": "u1"}));
    assert_eq!(series[0]["points"].as_array().unwrap().len(), 1);
    assert_eq!(series[0]["points"][0][0], json!(t * 1000));
    assert_within(&series[0]["points"][0][1], 50.0, 0.01);
    assert_eq!(series[1]["points"][0][0], json!((t + 60) * 1000));
    assert_within(&series[1]["points"][0][1], 135.0, 0.01);

    let body = server.ok(&query("error_ratio", "&step=1m")).await;
    assert_eq!(
        body["series"][0]["points"],
        json!([[t * 1000, 0.05], [(t + 60) * 1000, 0.2]])
    );
    let body = server.ok(&query("count", "&step=3m")).await;
    assert_eq!(body["step"], json!(180_000));
    let counts: f64 = body["series"][0]["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| number(&p[1]))
        .sum();
    assert_eq!(counts, 150.0);
    let body = server.ok(&query("rate", "&step=1m")).await;
    assert_within(&body["series"][0]["points"][0][1], 100.0 / 60.0, 1e-12);
    let body = server
        .ok(&query(
            "count",
            &format!(
                "&filter={}",
                urlencode(r#"vigil.unit!="u1",http.route="/pay""#)
            ),
        ))
        .await;
    assert_eq!(
        body["series"][0]["points"],
        json!([[(t + 60) * 1000, 50.0]])
    );

    // Filter values are data: SQL in them matches nothing and harms nothing.
    for injection in ["' OR 1=1 --", "x'); DROP TABLE rollups; --", "\\' OR ''='"] {
        let filter = urlencode(&format!(
            "vigil.unit=\"{}\"",
            injection.replace('"', "\\\"")
        ));
        let body = server
            .ok(&query(
                "count",
                &format!("&filter={filter}&group_by=vigil.unit"),
            ))
            .await;
        assert_eq!(body["series"], json!([]), "{injection}");
        let body = server
            .ok(&format!(
                "/api/v1/query?kind=span&signal=count&service={}&from={from}&to={to}",
                urlencode(injection)
            ))
            .await;
        assert_eq!(body["series"], json!([]), "{injection}");
    }
    let body = server.ok(&query("count", "")).await;
    assert_eq!(
        body["series"][0]["points"].as_array().unwrap().len(),
        2,
        "the rollups are still there"
    );
    server.stop().await;
}

fn urlencode(text: &str) -> String {
    let mut encoded = String::new();
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            encoded.push(byte as char);
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

async fn bad_requests_name_the_parameter(backend: Backend) {
    let Some((server, _)) = start_with_known_data(backend).await else {
        return;
    };
    let cases = [
        (
            "/api/v1/query?kind=span&signal=p99&colour=red",
            "colour",
            "unknown parameter; this path takes kind, signal, name, service, filter, group_by, from, to, step, tenant",
        ),
        (
            "/api/v1/query?kind=span&signal=p42",
            "signal",
            "unknown signal \"p42\"; use one of count, sum, rate, mean, min, max, error_ratio, availability, p50, p90, p95, p99, p999",
        ),
        (
            "/api/v1/query?kind=spans&signal=p99",
            "kind",
            "unknown kind \"spans\"; use span, metric, client or probe",
        ),
        (
            "/api/v1/query?signal=p99",
            "kind",
            "required: span, metric, client or probe",
        ),
        (
            "/api/v1/query?kind=span&signal=p99&from=now&to=now-1h",
            "from",
            "must be before to",
        ),
        (
            "/api/v1/query?kind=span&signal=p99&from=now-401d",
            "to",
            "the range is 401.0 days; at most 400 days",
        ),
        (
            "/api/v1/query?kind=span&signal=p99&from=0&to=604800000&step=10s",
            "step",
            "60480 points per series; at most 11000: use a longer step",
        ),
        (
            "/api/v1/query?kind=span&signal=p99&step=15s",
            "step",
            "must be a positive multiple of 10 s (10000 ms), got 15 s",
        ),
        (
            "/api/v1/query?kind=span&signal=p99&filter=unit%3Du1",
            "filter",
            "the value of unit must be double-quoted",
        ),
        (
            "/api/v1/query?kind=span&signal=p99&from=yesterday",
            "from",
            "\"yesterday\" is not a time: use RFC 3339 (2026-11-22T07:30:00Z), unix ms or now-<duration> (now-15m)",
        ),
        (
            "/api/v1/traces?limit=0",
            "limit",
            "must be a whole number from 1 to 1000, got \"0\"",
        ),
        (
            "/api/v1/traces?error=maybe",
            "error",
            "must be true or false, got \"maybe\"",
        ),
        (
            "/api/v1/traces?cursor=abc",
            "cursor",
            "not a cursor this API returned",
        ),
        (
            "/api/v1/traces/not-a-trace",
            "trace_id",
            "must be 32 hex digits",
        ),
        (
            "/api/v1/services?from=1&from=2",
            "from",
            "given twice; give it once",
        ),
    ];
    for (path, parameter, reason) in cases {
        let (status, body) = server.get(Some(ACME), path).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert_eq!(
            body,
            json!({"error": {"code": "bad_parameter", "parameter": parameter, "message": format!("parameter {parameter}: {reason}")}}),
            "{path}"
        );
    }
    let (status, body) = server.get(None, "/api/v1/services?colour=red").await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (401, json!("unauthenticated")),
        "the token comes first"
    );
    let (status, body) = server
        .get(Some("not-a-known-token-000"), "/api/v1/services")
        .await;
    assert_eq!(
        (status, body),
        (
            401,
            json!({"error": {"code": "unauthenticated", "message": "unknown token"}})
        )
    );
    let (status, body) = server.get(Some(ACME), "/api/v1/nothing").await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (404, json!("not_found"))
    );
    server.stop().await;
}

async fn tenants_see_only_their_own_data(backend: Backend) {
    let Some((server, t)) = start_with_known_data(backend).await else {
        return;
    };
    let (status, body) = server.get(Some(EVIL), "/api/v1/services").await;
    assert_eq!(status, 200);
    assert_eq!(body["services"].as_array().unwrap().len(), 1);
    assert_eq!(
        (
            body["services"][0]["service"].clone(),
            body["services"][0]["requests"].clone()
        ),
        (json!("pay"), json!(7))
    );
    let range = format!("from={}&to={}", (t - 60) * 1000, (t + 180) * 1000);
    let (_, body) = server
        .get(
            Some(EVIL),
            &format!("/api/v1/query?kind=span&signal=count&service=pay&step=10m&{range}"),
        )
        .await;
    assert_eq!(
        body["series"][0]["points"][0][1],
        json!(7.0),
        "evil's 7 spans, none of acme's 150"
    );
    let (status, _) = server
        .get(Some(EVIL), &format!("/api/v1/traces/{TRACE}"))
        .await;
    assert_eq!(status, 404);
    let (_, body) = server
        .get(Some(EVIL), &format!("/api/v1/traces?{range}"))
        .await;
    assert_eq!(body["spans"], json!([]));
    let (_, body) = server.get(Some(EVIL), "/api/v1/probes").await;
    assert_eq!(body["probes"], json!([]));
    let (_, body) = server.get(Some(EVIL), "/api/v1/slo").await;
    assert_eq!(body["slos"], json!([]), "acme's objectives are acme's");
    let (status, body) = server.get(Some(EVIL), "/api/v1/services?tenant=acme").await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (403, json!("forbidden"))
    );
    let (status, body) = server
        .get(Some(ADMIN), "/api/v1/services?tenant=acme")
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        body["services"].as_array().unwrap().len(),
        2,
        "an admin reads any tenant"
    );
    server.stop().await;
}

async fn traces_are_trees_and_searches_page(backend: Backend) {
    let Some((server, t)) = start_with_known_data(backend).await else {
        return;
    };
    let body = server
        .ok(&format!("/api/v1/traces/{}", TRACE.to_uppercase()))
        .await;
    assert_eq!(
        (body["span_count"].clone(), body["error_count"].clone()),
        (json!(4), json!(2))
    );
    assert_eq!(body["duration_ms"], json!(120.0));
    assert_eq!(body["services"], json!(["pay"]));
    let roots = body["roots"].as_array().unwrap();
    assert_eq!(roots.len(), 1);
    let root = &roots[0];
    assert_eq!(
        (
            root["operation"].clone(),
            root["status"].clone(),
            root["status_message"].clone()
        ),
        (json!("POST /pay"), json!("error"), json!("card declined"))
    );
    assert_eq!(root["attributes"], json!({"vigil.unit": "u1"}));
    let children: Vec<&str> = root["children"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["operation"].as_str().unwrap())
        .collect();
    assert_eq!(children, vec!["reserve", "charge"]);
    assert_eq!(root["children"][1]["children"][0]["operation"], "db");
    assert_eq!(
        root["children"][1]["children"][0]["duration_ms"],
        json!(10.0)
    );
    let (status, _) = server
        .get(Some(ACME), &format!("/api/v1/traces/{}", "f".repeat(32)))
        .await;
    assert_eq!(status, 404);

    let range = format!("from={}&to={}", t * 1000, (t + 60) * 1000);
    let ids = |body: &Value| -> Vec<String> {
        body["spans"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["span_id"].as_str().unwrap().to_owned())
            .collect()
    };
    let body = server
        .ok(&format!(
            "/api/v1/traces?{range}&service=pay&min_duration=50&error=true"
        ))
        .await;
    assert_eq!(ids(&body), vec!["00000000000000c3", "00000000000000a1"]);
    let body = server
        .ok(&format!(
            "/api/v1/traces?{range}&root=true&attributes={}",
            urlencode(r#"vigil.probe.location="u1""#)
        ))
        .await;
    assert_eq!(
        ids(&body),
        vec!["00000000000000e4", "00000000000000e2", "00000000000000e0"]
    );
    let mut pages = Vec::new();
    let mut path = format!("/api/v1/traces?{range}&limit=3");
    loop {
        let body = server.ok(&path).await;
        pages.push(ids(&body).len());
        match body["next_cursor"].as_str() {
            Some(cursor) => path = format!("/api/v1/traces?{range}&limit=3&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(pages, vec![3, 3, 3, 0], "nine spans in pages of three");
    server.stop().await;
}

async fn slos_clients_and_probes_add_up(backend: Backend) {
    let Some((server, _)) = start_with_known_data(backend).await else {
        return;
    };
    let body = server.ok("/api/v1/slo").await;
    let slos = body["slos"].as_array().unwrap();
    assert_eq!(slos.len(), 2);
    let availability = &slos[0];
    assert_eq!(
        (
            availability["events"].clone(),
            availability["good"].clone(),
            availability["bad"].clone()
        ),
        (json!(150), json!(135), json!(15))
    );
    assert_within(&availability["sli_percent"], 90.0, 1e-12);
    assert_within(&availability["error_budget"]["allowed_bad"], 1.5, 1e-12);
    assert_within(
        &availability["error_budget"]["remaining_percent"],
        -900.0,
        1e-12,
    );
    assert_eq!(
        availability["burn_rates"]["5m"],
        Value::Null,
        "nothing in the last 5 minutes"
    );
    for window in ["1h", "6h", "3d"] {
        assert_within(&availability["burn_rates"][window], 10.0, 1e-9);
    }
    let latency = &slos[1];
    assert_eq!(
        (latency["name"].clone(), latency["bad"].clone()),
        (json!("pay-latency"), json!(50))
    );
    let (status, body) = server.get(Some(ACME), "/api/v1/slo?name=nope").await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (404, json!("not_found"))
    );

    let body = server.ok("/api/v1/client/health?app=wallet-ios").await;
    let version = &body["apps"][0]["versions"][0];
    assert_eq!(body["apps"][0]["app"], "wallet-ios");
    assert_eq!(
        (
            version["version"].clone(),
            version["sessions"].clone(),
            version["crashes"].clone()
        ),
        (json!("2.0"), json!(100.0), json!(3))
    );
    assert_within(&version["crash_free_sessions"], 0.97, 1e-12);
    assert_eq!(
        version["crashes_by_type"],
        json!([{"exception_type": "NSRangeException", "crash_kind": "native", "crashes": 3}])
    );
    assert_eq!(version["app_start_ms"]["cold"]["count"], json!(100));
    assert_within(&version["app_start_ms"]["cold"]["p90"], 589.0, 0.01);
    assert_within(&version["slow_frame_rate"], 0.05, 1e-12);
    assert_within(&version["frozen_frame_rate"], 0.005, 1e-12);

    let body = server.ok("/api/v1/probes").await;
    let probe = &body["probes"][0];
    assert_eq!(
        (
            probe["name"].clone(),
            probe["runs"].clone(),
            probe["failed"].clone()
        ),
        (json!("pay-e2e"), json!(10), json!(1))
    );
    assert_within(&probe["availability"], 0.9, 1e-12);
    assert_eq!(probe["locations"][0]["location"], "u1");
    assert_within(&probe["p50_ms"], 240.0, 0.01);
    let body = server
        .ok("/api/v1/probes/pay-e2e/runs?from=now-1h&location=u2")
        .await;
    let runs = body["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2);
    assert_eq!(
        (
            runs[0]["ok"].clone(),
            runs[0]["failure"].clone(),
            runs[0]["duration_ms"].clone()
        ),
        (json!(false), json!("card declined"), json!(230.0))
    );
    assert_eq!(
        (runs[1]["ok"].clone(), runs[1]["failure"].clone()),
        (json!(true), Value::Null)
    );
    server.stop().await;
}

async fn limits_health_metrics_and_openapi(backend: Backend) {
    let Some(config) = testing::config(backend) else {
        return;
    };
    let mut config = api_config(config);
    config.api.max_points = 1_000;
    let store = store::open(&config.store).await.unwrap();
    // 1,100 windows of 10 s in a row: 1,100 points at a 10 s step, 184 at 1 min.
    let t = now_s() - now_s() % 60 - 4 * 3600;
    let busy = series(
        "acme",
        Kind::Span,
        "busy",
        "tick",
        &[("span.kind", "server")],
    );
    let rows = (0..1_100)
        .flat_map(|i| rows_at(&busy, t + 10 * i, &rollup([1.0], 0)))
        .collect();
    store
        .write(&Flush {
            source: "test".into(),
            time_s: now_s(),
            checkpoints: Vec::new(),
            rows,
        })
        .await
        .unwrap();
    let server = Server::start(&config, store).await;
    let range = format!("from={}&to={}", t * 1000, (t + 11_000) * 1000);
    let (status, body) = server
        .get(
            Some(ACME),
            &format!("/api/v1/query?kind=span&signal=count&step=1m&{range}"),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let points = body["series"][0]["points"].as_array().unwrap();
    assert_eq!(points.len(), 184);
    assert_eq!(points.iter().map(|p| number(&p[1])).sum::<f64>(), 1_100.0);
    let (status, body) = server
        .get(
            Some(ACME),
            &format!("/api/v1/query?kind=span&signal=count&step=10s&{range}"),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["limit"], "api.max_points");
    assert_eq!(body["error"]["code"], "limit_exceeded");

    let (status, body) = server.get(None, "/healthz").await;
    assert_eq!((status, body), (200, json!("ok")));
    let (status, body) = server.get(None, "/readyz").await;
    assert_eq!((status, body), (200, json!("ready")));
    let (status, document) = server.get(None, "/api/v1/openapi.json").await;
    assert_eq!(status, 200);
    let paths: Vec<&String> = document["paths"].as_object().unwrap().keys().collect();
    assert_eq!(
        paths,
        vec![
            "/api/v1/alerts",
            "/api/v1/alerts/history",
            "/api/v1/client/health",
            "/api/v1/probes",
            "/api/v1/probes/{name}/runs",
            "/api/v1/query",
            "/api/v1/releases/{service}/health",
            "/api/v1/services",
            "/api/v1/silences",
            "/api/v1/silences/{id}",
            "/api/v1/slo",
            "/api/v1/traces",
            "/api/v1/traces/{trace_id}"
        ]
    );
    let params: Vec<&str> = document["paths"]["/api/v1/query"]["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        params,
        vec![
            "kind", "signal", "name", "service", "filter", "group_by", "from", "to", "step",
            "tenant"
        ]
    );
    let (_, metrics) = server.get(None, "/metrics").await;
    let metrics = metrics.as_str().unwrap().to_owned();
    assert!(
        metrics.contains("vigil_api_requests_total{path=\"/api/v1/query\",status=\"422\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("vigil_api_requests_total{path=\"/api/v1/query\",status=\"200\"} 1"),
        "{metrics}"
    );
    server.stop().await;
}

/// A store that never answers: the query timeout stops the request.
#[tokio::test]
async fn a_query_over_its_time_is_stopped_with_422() {
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = silent.local_addr().unwrap();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((connection, _)) = silent.accept().await {
            held.push(connection);
        }
    });
    let mut config = api_config(Config::default());
    config.store.kind = StoreKind::ClickHouse;
    config.store.clickhouse.url = format!("http://{address}");
    config.api.query_timeout_ms = 300;
    let store = store::connect(&config.store).unwrap();
    let server = Server::start(&config, store).await;
    let (status, body) = server
        .get(Some(ACME), "/api/v1/query?kind=span&signal=p99")
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(
        body,
        json!({"error": {"code": "limit_exceeded", "limit": "api.query_timeout_ms",
            "message": "api.query_timeout_ms: the query ran longer than 300 ms and was stopped; narrow the range or the selection"}})
    );
    let (status, _) = server.get(None, "/readyz").await;
    assert_eq!(status, 503);
    server.stop().await;
    hold.abort();
}

/// Waits while the UTC day is about to turn, so a one-day step holds the
/// whole test.
async fn away_from_midnight() {
    let into_day = now_s() % 86_400;
    if into_day > 86_400 - 120 {
        tokio::time::sleep(std::time::Duration::from_secs(86_400 - into_day + 1)).await;
    }
}

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
    let firing = alert(
        "acme",
        "pay-errors",
        "u1",
        AlertState::Firing,
        now_ms - 120_000,
    );
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
            "silenced_by": [],
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

/// Span and client rollups of releases, as the aggregator writes them,
/// ten minutes ago.
async fn write_releases(store: &dyn Store) {
    let t = now_s() - now_s() % 60 - 600;
    let mut rows = Vec::new();
    let mut spans = |version: &str, unit: &str, cohort: &str, ms: f64, n: usize, errors: usize| {
        let labels = [
            ("service.version", version),
            ("vigil.unit", unit),
            ("vigil.cohort", cohort),
            ("span.kind", "server"),
        ];
        let key = series("acme", Kind::Span, "checkout", "POST /checkout", &labels);
        rows.extend(rows_at(
            &key,
            t,
            &rollup(std::iter::repeat_n(ms, n), errors),
        ));
    };
    spans("1.0", "unit-a", "stable", 100.0, 1_000, 10);
    spans("1.0", "unit-b", "stable", 100.0, 1_000, 500);
    spans("1.1", "unit-a", "canary", 100.0, 1_000, 10);
    spans("1.2", "unit-a", "canary", 100.0, 30, 0);
    spans("1.3", "unit-a", "canary", 300.0, 1_000, 10);
    let mut client =
        |version: &str, cohort: &str, name: &str, extra: &[(&str, &str)], values: Vec<f64>| {
            let mut labels = vec![
                ("app.version", version),
                ("vigil.unit", "unit-a"),
                ("vigil.cohort", cohort),
            ];
            labels.extend(extra);
            let key = series("acme", Kind::Client, "wallet-ios", name, &labels);
            rows.extend(rows_at(&key, t, &rollup(values, 0)));
        };
    for (version, cohort, start_ms, slow, crashes) in [
        (
            "5.0",
            "stable",
            800.0,
            100.0,
            [("NullPointerException", 5), ("IndexOutOfBounds", 0)],
        ),
        (
            "5.1",
            "canary",
            820.0,
            110.0,
            [("NullPointerException", 10), ("IndexOutOfBounds", 30)],
        ),
    ] {
        client(version, cohort, "client.sessions", &[], vec![1.0; 1_000]);
        client(
            version,
            cohort,
            "client.app_start",
            &[],
            vec![start_ms; 1_000],
        );
        client(version, cohort, "client.frames", &[], vec![100.0; 100]);
        client(version, cohort, "client.frames.slow", &[], vec![slow]);
        for (kind, n) in crashes {
            if n > 0 {
                client(
                    version,
                    cohort,
                    "client.crashes",
                    &[("exception.type", kind)],
                    vec![1.0; n],
                );
            }
        }
    }
    // A crash type of unit-b only, where the canary does not run: not in
    // the baseline of any crash type.
    let labels = [
        ("app.version", "5.0"),
        ("vigil.unit", "unit-b"),
        ("vigil.cohort", "stable"),
        ("exception.type", "OutOfMemoryError"),
    ];
    let key = series(
        "acme",
        Kind::Client,
        "wallet-ios",
        "client.crashes",
        &labels,
    );
    rows.extend(rows_at(&key, t, &rollup(vec![1.0; 50], 0)));
    store
        .write(&Flush {
            source: "test".into(),
            time_s: now_s(),
            checkpoints: Vec::new(),
            rows,
        })
        .await
        .unwrap();
}

/// (signal, result, canary samples, baseline samples) of each signal.
fn results(body: &Value) -> Vec<(String, String, u64, u64)> {
    body["signals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["signal"].as_str().unwrap().to_owned(),
                s["result"].as_str().unwrap().to_owned(),
                s["canary_samples"].as_u64().unwrap(),
                s["baseline_samples"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn owned(rows: &[(&str, &str, u64, u64)]) -> Vec<(String, String, u64, u64)> {
    rows.iter()
        .map(|&(a, b, c, d)| (a.to_owned(), b.to_owned(), c, d))
        .collect()
}

async fn releases_are_judged_canary_against_baseline(backend: Backend) {
    let Some(config) = testing::config(backend) else {
        return;
    };
    away_from_midnight().await;
    let config = api_config(config);
    let store = store::open(&config.store).await.unwrap();
    write_releases(store.as_ref()).await;
    let server = Server::start(&config, store).await;
    let health = |query: &str| format!("/api/v1/releases/checkout/health?{query}");

    // A healthy canary: the baseline is 1.0 in unit-a only (unit-b's
    // failures and the other canaries are not its baseline).
    let body = server.ok(&health("version=1.1")).await;
    assert_eq!(
        (
            body["verdict"].clone(),
            body["baseline_versions"].clone(),
            body["units"].clone()
        ),
        (json!("promote"), json!(["1.0"]), json!(["unit-a"])),
        "{body}"
    );
    assert_eq!(
        results(&body),
        owned(&[
            ("error_ratio", "pass", 1_000, 1_000),
            ("latency_p50", "pass", 1_000, 1_000),
            ("latency_p99", "pass", 1_000, 1_000),
        ])
    );
    assert_eq!(body["signals"][0]["canary"], json!(0.01));
    assert_eq!(body["signals"][0]["baseline"], json!(0.01));
    assert_eq!(body["signals"][0]["test"], json!("two_proportion"));
    assert_eq!(body["signals"][1]["test"], json!("mann_whitney"));

    // Too little traffic: inconclusive, with how many more are needed.
    let body = server.ok(&health("version=1.2")).await;
    assert_eq!(body["verdict"], json!("hold"), "{body}");
    assert_eq!(
        body["reasons"][0],
        json!(
            "error_ratio: too few events to judge (30 canary, 1000 baseline); 70 more for the canary and 0 for the baseline"
        )
    );
    assert_eq!(
        body["signals"][0]["needed"],
        json!({"canary": 70, "baseline": 0})
    );
    assert_eq!(body["signals"][0]["p_value"], Value::Null);
    let body = server.ok(&health("version=1.2&min_samples=20")).await;
    assert_eq!(body["verdict"], json!("promote"), "{body}");

    // Injected latency: rolled back on the latency signals, naming them.
    let body = server
        .ok(&health("version=1.3&baseline=1.0&unit=unit-a"))
        .await;
    assert_eq!(body["verdict"], json!("rollback"), "{body}");
    assert_eq!(
        results(&body),
        owned(&[
            ("error_ratio", "pass", 1_000, 1_000),
            ("latency_p50", "fail", 1_000, 1_000),
            ("latency_p99", "fail", 1_000, 1_000),
        ])
    );
    let reasons = body["reasons"].as_array().unwrap();
    assert_eq!(reasons.len(), 2);
    assert!(
        reasons[0]
            .as_str()
            .unwrap()
            .starts_with("latency_p50: canary 30"),
        "{reasons:?}"
    );
    let p50 = body["signals"][1]["canary"].as_f64().unwrap();
    assert!((p50 - 300.0).abs() <= 300.0 * 0.0055, "{p50}");

    // An app release judged from client telemetry alone.
    let body = server
        .ok("/api/v1/releases/wallet-ios/health?version=5.1")
        .await;
    assert_eq!(body["verdict"], json!("rollback"), "{body}");
    assert_eq!(
        results(&body),
        owned(&[
            ("crash_rate", "fail", 1_000, 1_000),
            ("app_start_p90", "pass", 1_000, 1_000),
            ("slow_frame_rate", "pass", 10_000, 10_000),
        ])
    );
    assert_eq!(body["signals"][0]["canary"], json!(0.04));
    assert_eq!(body["signals"][0]["baseline"], json!(0.005));
    let by_type: Vec<(String, String)> = body["crash_rate_by_type"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| {
            (
                j["signal"].as_str().unwrap().to_owned(),
                j["result"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        by_type,
        vec![
            (
                "crash_rate{exception.type=\"IndexOutOfBounds\"}".to_owned(),
                "fail".to_owned()
            ),
            (
                "crash_rate{exception.type=\"NullPointerException\"}".to_owned(),
                "pass".to_owned()
            ),
            (
                "crash_rate{exception.type=\"OutOfMemoryError\"}".to_owned(),
                "pass".to_owned()
            ),
        ]
    );
    assert_eq!(
        (
            body["crash_rate_by_type"][2]["canary"].clone(),
            body["crash_rate_by_type"][2]["baseline"].clone()
        ),
        (json!(0.0), json!(0.0)),
        "unit-b's crashes are outside the canary's units"
    );
    let reasons: Vec<&str> = body["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert!(reasons[0].starts_with("crash_rate: canary 0.0400 against baseline 0.0050 (p = "));
    assert!(
        reasons[1].starts_with("crash_rate{exception.type=\"IndexOutOfBounds\"}: canary 0.0300")
    );

    let (status, body) = server.get(Some(ACME), &health("")).await;
    assert_eq!(
        (status, body["error"]["parameter"].clone()),
        (400, json!("version"))
    );
    let (_, body) = server.get(Some(EVIL), &health("version=1.3")).await;
    assert_eq!(
        (body["verdict"].clone(), body["signals"].clone()),
        (json!("hold"), json!([])),
        "evil has no checkout releases"
    );
    server.stop().await;
}

on_both_backends!(
    releases_are_judged_canary_against_baseline,
    alerts_history_and_silences,
    services_and_queries_answer_exactly,
    bad_requests_name_the_parameter,
    tenants_see_only_their_own_data,
    traces_are_trees_and_searches_page,
    slos_clients_and_probes_add_up,
    limits_health_metrics_and_openapi,
);
