//! Services and queries answer exactly; bad requests name the parameter;
//! tenants see only their own data; limits, health, metrics and the OpenAPI
//! document; a query over its time is stopped.

use super::*;
use vigil_domain::model::{service_total, tenant_total};

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
            "unknown kind \"spans\"; use span, metric, client, probe, service or tenant",
        ),
        (
            "/api/v1/query?signal=p99",
            "kind",
            "required: span, metric, client, probe, service or tenant",
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
            cumulative: Vec::new(),
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
    // The Prometheus API's paths are checked with it (prometheus.rs).
    let paths: Vec<&String> = document["paths"]
        .as_object()
        .unwrap()
        .keys()
        .filter(|path| !path.starts_with("/prometheus/"))
        .collect();
    assert_eq!(
        paths,
        vec![
            "/api/v1/alerts",
            "/api/v1/alerts/history",
            "/api/v1/client/health",
            "/api/v1/crashes",
            "/api/v1/crashes/{fingerprint}",
            "/api/v1/localize",
            "/api/v1/logs",
            "/api/v1/playbooks",
            "/api/v1/playbooks/pause",
            "/api/v1/playbooks/runs",
            "/api/v1/playbooks/runs/{id}",
            "/api/v1/playbooks/runs/{id}/approve",
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

/// A service-wide read — every span of a service or of all, filtered and
/// grouped by service, span kind and deployment labels only — reads the
/// totals once they cover the range: the tenant's for every service when
/// neither filtered nor grouped by service, else the services'; any other
/// read, the spans. Totals that differ from the spans on purpose show which
/// was read.
async fn service_wide_reads_take_the_services_totals(backend: Backend) {
    let Some(config) = testing::config(backend) else {
        return;
    };
    let config = api_config(config);
    let store = store::open(&config.store).await.unwrap();
    let t = write_known_data(store.as_ref()).await;
    let server = Server::start(&config, Arc::clone(&store)).await;
    let (from, to) = ((t - 60) * 1000, (t + 180) * 1000);
    let count = |extra: &str| {
        format!("/api/v1/query?kind=span&signal=count&step=1h&from={from}&to={to}{extra}")
    };
    let of_pay = |extra: &str| count(&format!("&service=pay{extra}"));
    let groups = |body: Value| -> Vec<(Value, f64)> {
        let mut groups: Vec<(Value, f64)> = body["series"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                let points = s["points"].as_array().unwrap();
                (
                    s["labels"].clone(),
                    points.iter().map(|p| number(&p[1])).sum(),
                )
            })
            .collect();
        groups.sort_by_key(|group| group.0.to_string());
        groups
    };
    let sum = |body: Value| -> f64 { groups(body).iter().map(|(_, n)| n).sum() };
    // No totals yet: the 150 server and 20 internal spans.
    assert_eq!(sum(server.ok(&of_pay("")).await), 170.0);

    let span = |service: &str, name: &str, labels: &[(&str, &str)]| {
        let labels = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        SeriesKey::new(tenant("acme"), Kind::Span, service, name, labels)
    };
    let at_unit = |unit| {
        span(
            "pay",
            "POST /pay",
            &[
                ("span.kind", "server"),
                ("vigil.unit", unit),
                ("http.route", "/pay"),
            ],
        )
    };
    let ledger = span("ledger", "post", &[("span.kind", "internal")]);
    let services = [
        (service_total(&at_unit("u1")), 7),
        (service_total(&at_unit("u2")), 3),
        (service_total(&ledger), 10),
    ];
    let tenants = [
        (tenant_total(&at_unit("u1")), 40),
        (tenant_total(&at_unit("u2")), 20),
        (tenant_total(&ledger), 30),
    ];
    let write = async |totals: &[(SeriesKey, usize)]| {
        let mut rows = Vec::new();
        for (series, n) in totals {
            rows.extend(rows_at(
                &Arc::new(series.clone()),
                t + 5,
                &rollup(vec![1.0; *n], 0),
            ));
        }
        store
            .write(&Flush::rows("test", now_s(), rows))
            .await
            .unwrap();
        let covering: Vec<CatalogueEntry> = totals
            .iter()
            .map(|(series, _)| CatalogueEntry {
                series: series.clone(),
                first_seen_s: t - 3_600,
                last_seen_s: t,
            })
            .collect();
        store.record_series(&covering).await.unwrap();
    };
    write(&services).await;
    assert_eq!(sum(server.ok(&of_pay("")).await), 10.0);
    assert_eq!(sum(server.ok(&of_pay("&group_by=span.kind")).await), 10.0);
    let server_kind = urlencode(r#"span.kind="server""#);
    assert_eq!(
        sum(server.ok(&of_pay(&format!("&filter={server_kind}"))).await),
        10.0
    );
    let unit = urlencode(r#"vigil.unit="u1""#);
    assert_eq!(
        sum(server.ok(&of_pay(&format!("&filter={unit}"))).await),
        7.0
    );
    assert_eq!(
        groups(server.ok(&of_pay("&group_by=vigil.unit")).await),
        vec![
            (json!({"vigil.unit": "u1"}), 7.0),
            (json!({"vigil.unit": "u2"}), 3.0)
        ]
    );
    // Every service, without the tenant's totals: the services'.
    assert_eq!(sum(server.ok(&count("")).await), 20.0);
    write(&tenants).await;
    assert_eq!(sum(server.ok(&count("")).await), 90.0);
    assert_eq!(
        groups(server.ok(&count("&group_by=vigil.unit")).await),
        vec![
            (json!({"vigil.unit": ""}), 30.0),
            (json!({"vigil.unit": "u1"}), 40.0),
            (json!({"vigil.unit": "u2"}), 20.0)
        ]
    );
    // PromQL sums of span series read them alike.
    let promql = async |query: &str| -> Vec<(String, String)> {
        let at = t + 120;
        let path = format!(
            "/prometheus/api/v1/query?query={}&time={at}",
            urlencode(query)
        );
        let body = server.ok(&path).await;
        let mut samples: Vec<(String, String)> = body["data"]["result"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                assert_eq!(s["value"][0], json!(at));
                (
                    s["metric"].to_string(),
                    s["value"][1].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        samples.sort();
        samples
    };
    let queries: [(&str, &[(&str, &str)]); 3] = [
        (
            "sum by (vigil_unit) (increase(vigil_span_requests_total[2m]))",
            &[
                (r#"{"vigil_unit":"u1"}"#, "40"),
                (r#"{"vigil_unit":"u2"}"#, "20"),
                ("{}", "30"),
            ],
        ),
        (
            r#"sum by (vigil_unit) (increase(vigil_span_requests_total{service="pay"}[2m]))"#,
            &[
                (r#"{"vigil_unit":"u1"}"#, "7"),
                (r#"{"vigil_unit":"u2"}"#, "3"),
            ],
        ),
        (
            r#"sum by (span_name) (increase(vigil_span_requests_total{service="pay"}[2m]))"#,
            &[
                (r#"{"span_name":"POST /pay"}"#, "150"),
                (r#"{"span_name":"db.query"}"#, "20"),
            ],
        ),
    ];
    for (query, expected) in queries {
        let expected: Vec<(String, String)> = expected
            .iter()
            .map(|(metric, value)| ((*metric).to_owned(), (*value).to_owned()))
            .collect();
        assert_eq!(promql(query).await, expected, "{query}");
    }
    // Grouped by service: the services' totals.
    assert_eq!(
        groups(server.ok(&count("&group_by=service.name")).await),
        vec![
            (json!({"service.name": "ledger"}), 10.0),
            (json!({"service.name": "pay"}), 10.0)
        ]
    );
    // One operation, a span dimension: the spans.
    assert_eq!(sum(server.ok(&of_pay("&name=POST%20/pay")).await), 150.0);
    let route = urlencode(r#"http.route="/pay""#);
    assert_eq!(
        sum(server.ok(&of_pay(&format!("&filter={route}"))).await),
        150.0
    );
    // A range that starts before the totals: the spans.
    let early = format!(
        "/api/v1/query?kind=span&service=pay&signal=count&step=1h&from={}&to={to}",
        (t - 7_200) * 1000
    );
    assert_eq!(sum(server.ok(&early).await), 170.0);
    // The services list reads the services' totals.
    let body = server.ok("/api/v1/services").await;
    let requests: Vec<(Value, Value)> = body["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["service"].clone(), s["requests"].clone()))
        .collect();
    assert_eq!(
        requests,
        vec![(json!("ledger"), json!(10)), (json!("pay"), json!(10))]
    );
    server.stop().await;
}

/// A dashboard's refresh: the closed windows a query merged are kept, and
/// the same query again reads none of them from the store.
async fn repeated_queries_take_closed_windows_from_the_cache(backend: Backend) {
    let Some(config) = testing::config(backend) else {
        return;
    };
    let config = api_config(config);
    let store = store::open(&config.store).await.unwrap();
    let t = write_known_data(store.as_ref()).await;
    let server = Server::start(&config, Arc::clone(&store)).await;
    let path = format!(
        "/api/v1/query?kind=span&service=pay&signal=count&step=1m&group_by=vigil.unit&from={}&to={}",
        (t - 60) * 1000,
        (t + 180) * 1000
    );
    let windows = async || -> Vec<String> {
        let (_, metrics) = server.get(None, "/metrics").await;
        metrics
            .as_str()
            .unwrap()
            .lines()
            .filter(|line| line.starts_with("vigil_api_merged_windows_total"))
            .map(str::to_owned)
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect()
    };
    // u1's and u2's server spans, and the internal ones without a unit.
    let first = server.ok(&path).await;
    assert_eq!(
        windows().await,
        [
            r#"vigil_api_merged_windows_total{from="cache"} 0"#,
            r#"vigil_api_merged_windows_total{from="store"} 3"#
        ]
    );
    assert_eq!(server.ok(&path).await, first);
    assert_eq!(
        windows().await,
        [
            r#"vigil_api_merged_windows_total{from="cache"} 3"#,
            r#"vigil_api_merged_windows_total{from="store"} 3"#
        ]
    );
    server.stop().await;
}

/// A step at least as long as the range reads exactly the range, as one
/// point starting at `from`: aligned to the hour, it would also hold u1's
/// spans before the range.
async fn a_step_as_long_as_the_range_reads_exactly_the_range(backend: Backend) {
    let Some((server, t)) = start_with_known_data(backend).await else {
        return;
    };
    let (from, to) = ((t + 30) * 1000, (t + 90) * 1000);
    for (signal, expected) in [("count", 50.0), ("rate", 50.0 / 60.0)] {
        let body = server
            .ok(&format!(
                "/api/v1/query?kind=span&service=pay&name=POST%20%2Fpay&signal={signal}&step=1h&from={from}&to={to}"
            ))
            .await;
        assert_eq!(
            body["series"][0]["points"],
            json!([[from, expected]]),
            "{body}"
        );
        assert_eq!(body["series"].as_array().unwrap().len(), 1, "{body}");
        assert_eq!(
            (body["from"].clone(), body["step"].clone()),
            (json!(from), json!(60_000))
        );
    }
    server.stop().await;
}

on_both_backends!(
    a_step_as_long_as_the_range_reads_exactly_the_range,
    repeated_queries_take_closed_windows_from_the_cache,
    service_wide_reads_take_the_services_totals,
    services_and_queries_answer_exactly,
    bad_requests_name_the_parameter,
    tenants_see_only_their_own_data,
    limits_health_metrics_and_openapi,
);
