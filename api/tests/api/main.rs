//! The dashboard API over real stores (SQLite, and ClickHouse next to
//! Kafka): known rollups and spans written to the store and read back
//! through HTTP with reqwest. Data through every component to the API:
//! `tests/pipeline/`.

mod alerts;
mod console;
mod fuzz;
mod localize;
mod logs;
mod playbooks;
mod prometheus;
mod queries;
mod releases;
mod slo;
mod traces;

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Value, json};
use vigil_api::Api;
use vigil_config::{ApiToken, Config, Role, Secret, Sli, SloConfig, StoreKind};
use vigil_domain::alert::{Alert, Collection, State as AlertState, fingerprint};
use vigil_domain::model::RollupRow;
use vigil_domain::model::{Kind, Rollup, SeriesKey};
use vigil_domain::shutdown::Shutdown;
use vigil_domain::tenant::TenantId;
use vigil_store::{
    self as store, CatalogueEntry, EventKind, EventRecord, Flush, HistoryEntry, SpanRecord,
    StateRecord, Store, WIDTHS,
};
use vigil_testing::{
    self as testing, Backend, assert_within, away_from_midnight, now_s, number, on_both_backends,
};

const ACME: &str = "acme-viewer-token-0123";
const EVIL: &str = "evil-viewer-token-0123";
const ADMIN: &str = "ops-admin-token-012345";
const EDITOR: &str = "acme-editor-token-0123";

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
    // The catalogue, as the aggregator records it beside the rows.
    let mut catalogue: Vec<CatalogueEntry> = Vec::new();
    for row in &rows {
        if !catalogue.iter().any(|e| e.series == *row.series) {
            catalogue.push(CatalogueEntry {
                series: (*row.series).clone(),
                first_seen_s: row.start_s,
                last_seen_s: row.start_s,
            });
        }
    }
    store.record_series(&catalogue).await.unwrap();
    store
        .write(&Flush {
            source: "test".into(),
            time_s: now,
            checkpoints: Vec::new(),
            rows,
            cumulative: Vec::new(),
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
    store.write_events(&logs(start)).await.unwrap();
    store.write_events(&crashes(start)).await.unwrap();
    t
}

/// The three crashes of wallet-ios 2.0 that its rollups count, in two
/// sessions: crash-free sessions are 98 of 100.
fn crashes(start: u64) -> Vec<EventRecord> {
    (0..3)
        .map(|i| EventRecord {
            tenant: tenant("acme"),
            kind: EventKind::Crash,
            id: i,
            time_ns: start + i * 1_000_000,
            service: "wallet-ios".into(),
            name: "NSRangeException".into(),
            body: String::new(),
            trace_id: String::new(),
            span_id: String::new(),
            fingerprint: "range-1".into(),
            attributes: vec![
                ("app.version".into(), "2.0".into()),
                ("crash.kind".into(), "native".into()),
                ("session.id_hash".into(), format!("{:032x}", i / 2)),
            ],
        })
        .collect()
}

/// Log records: three of the trace (the last of span `charge`), one of
/// another trace, one of ledger's, and one of evil's, 10 ms apart from
/// `start`.
fn logs(start: u64) -> Vec<EventRecord> {
    let log = |id: u64,
               tenant_name: &str,
               service: &str,
               severity: &str,
               trace: &str,
               span: &str,
               body: &str| {
        EventRecord {
            tenant: tenant(tenant_name),
            kind: EventKind::Log,
            id,
            time_ns: start + id * 10_000_000,
            service: service.into(),
            name: severity.into(),
            body: body.into(),
            trace_id: trace.into(),
            span_id: span.into(),
            fingerprint: String::new(),
            attributes: vec![("vigil.unit".into(), "u1".into())],
        }
    };
    vec![
        log(
            1,
            "acme",
            "pay",
            "INFO",
            TRACE,
            "00000000000000a1",
            "payment accepted for checkout",
        ),
        log(
            2,
            "acme",
            "pay",
            "WARN",
            TRACE,
            "00000000000000b2",
            "stock reserved late",
        ),
        log(
            3,
            "acme",
            "pay",
            "ERROR",
            TRACE,
            "00000000000000c3",
            "Card DECLINED by issuer",
        ),
        log(
            4,
            "acme",
            "pay",
            "ERROR",
            &"e".repeat(32),
            "",
            "card declined by issuer",
        ),
        log(5, "acme", "ledger", "INFO", "", "", "ledger closed"),
        log(
            6,
            "evil",
            "pay",
            "ERROR",
            TRACE,
            "00000000000000c3",
            "card declined by evil",
        ),
    ]
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

async fn start_with_known_data(backend: Backend) -> Option<(Server, u64)> {
    let mut config = api_config(testing::config(backend)?);
    config.slos = slos();
    let store = store::open(&config.store).await.unwrap();
    let t = write_known_data(store.as_ref()).await;
    Some((Server::start(&config, store).await, t))
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
