//! The Prometheus HTTP API's catalogue paths, over each store holding the
//! known data, read by the API's own client and by a real promtool (2.42)
//! authenticating with basic auth as promtool does.

use vigil_domain::distribution::RELATIVE_ERROR;

use super::*;

/// The `data` of a successful Prometheus answer from `GET path` as `token`.
async fn data(server: &Server, token: &str, path: &str) -> Value {
    let (status, body) = server.get(Some(token), path).await;
    assert_eq!(status, 200, "{path}: {body}");
    assert_eq!(body["status"], "success", "{path}: {body}");
    body["data"].clone()
}

fn strings(value: &Value) -> Vec<&str> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect()
}

async fn catalogue_paths_answer_as_prometheus_does(backend: Backend) {
    let Some((server, _)) = start_with_known_data(backend).await else {
        return;
    };
    let base = "/prometheus/api/v1";
    let labels = data(&server, ACME, &format!("{base}/labels")).await;
    for label in [
        "__name__",
        "app",
        "app_version",
        "probe",
        "service",
        "span_kind",
        "span_name",
        "vigil_probe_location",
        "vigil_unit",
    ] {
        assert!(strings(&labels).contains(&label), "{label} not in {labels}");
    }
    let names = data(&server, ACME, &format!("{base}/label/__name__/values")).await;
    assert_eq!(
        strings(&names),
        [
            "vigil_client_app_start_bucket",
            "vigil_client_app_start_sum",
            "vigil_client_app_start_total",
            "vigil_client_crashes_bucket",
            "vigil_client_crashes_sum",
            "vigil_client_crashes_total",
            "vigil_client_frames_bucket",
            "vigil_client_frames_frozen_bucket",
            "vigil_client_frames_frozen_sum",
            "vigil_client_frames_frozen_total",
            "vigil_client_frames_slow_bucket",
            "vigil_client_frames_slow_sum",
            "vigil_client_frames_slow_total",
            "vigil_client_frames_sum",
            "vigil_client_frames_total",
            "vigil_client_sessions_bucket",
            "vigil_client_sessions_sum",
            "vigil_client_sessions_total",
            "vigil_probe_duration_seconds_bucket",
            "vigil_probe_duration_seconds_count",
            "vigil_probe_duration_seconds_sum",
            "vigil_probe_failures_total",
            "vigil_probe_runs_total",
            "vigil_span_duration_seconds_bucket",
            "vigil_span_duration_seconds_count",
            "vigil_span_duration_seconds_sum",
            "vigil_span_errors_total",
            "vigil_span_requests_total",
        ]
    );
    // Selectors with every matcher; an absent label matches "".
    let selector = urlencode(
        r#"vigil_span_requests_total{service="pay",span_kind=~"serv.*",vigil_unit!="u2",http_route!~"/x"}"#,
    );
    let series = data(&server, ACME, &format!("{base}/series?match[]={selector}")).await;
    assert_eq!(
        series,
        json!([{
            "__name__": "vigil_span_requests_total",
            "http_route": "/pay",
            "service": "pay",
            "span_kind": "server",
            "span_name": "POST /pay",
            "vigil_unit": "u1",
        }])
    );
    let metadata = data(
        &server,
        ACME,
        &format!(
            "{base}/metadata?match[]={}",
            urlencode(r#"{probe="pay-e2e"}"#)
        ),
    )
    .await;
    let kind = |name: &str| json!([{"type": name, "help": "", "unit": ""}]);
    assert_eq!(
        metadata,
        json!({
            "vigil_probe_duration_seconds_bucket": kind("histogram"),
            "vigil_probe_duration_seconds_count": kind("histogram"),
            "vigil_probe_duration_seconds_sum": kind("histogram"),
            "vigil_probe_failures_total": kind("counter"),
            "vigil_probe_runs_total": kind("counter"),
        })
    );
    let units = data(
        &server,
        ACME,
        &format!(
            "{base}/label/vigil_unit/values?match[]={}",
            urlencode("vigil_span_errors_total")
        ),
    )
    .await;
    assert_eq!(strings(&units), ["u1", "u2"]);
    // Another tenant sees its own series only.
    let evil = data(&server, EVIL, &format!("{base}/label/span_name/values")).await;
    assert_eq!(strings(&evil), ["POST /pay"]);
    let evil_services = data(&server, EVIL, &format!("{base}/label/service/values")).await;
    assert_eq!(strings(&evil_services), ["pay"]);

    // Prometheus's errors: a series request needs a selector, and it must
    // parse; no token is 401.
    let (status, body) = server.get(Some(ACME), &format!("{base}/series")).await;
    assert_eq!(
        (status, body),
        (
            400,
            json!({"status": "error", "errorType": "bad_data", "error": "no match[] parameter provided"})
        )
    );
    let (status, body) = server
        .get(
            Some(ACME),
            &format!("{base}/series?match[]={}", urlencode("up{")),
        )
        .await;
    assert_eq!((status, &body["errorType"]), (400, &json!("bad_data")));
    let (status, body) = server.get(None, &format!("{base}/labels")).await;
    assert_eq!((status, &body["status"]), (401, &json!("error")));

    // Basic auth, the token as the password, as promtool and Grafana send it.
    let address = server.api.address();
    let basic = server
        .client
        .get(format!("http://{address}{base}/label/probe/values"))
        .basic_auth("grafana", Some(ACME))
        .send()
        .await
        .unwrap();
    assert_eq!(basic.status(), 200);
    let body: Value = serde_json::from_str(&basic.text().await.unwrap()).unwrap();
    assert_eq!(body["data"], json!(["pay-e2e"]));
    // An admin names the tenant as Mimir's clients do; a viewer may not.
    for (token, status) in [(ADMIN, 200), (ACME, 403)] {
        let response = server
            .client
            .get(format!("http://{address}{base}/label/service/values"))
            .bearer_auth(token)
            .header("x-scope-orgid", "evil")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), status);
        if status == 200 {
            let body: Value = serde_json::from_str(&response.text().await.unwrap()).unwrap();
            assert_eq!(body["data"], json!(["pay"]));
        }
    }
    if let Some(promtool) = testing::program("promtool") {
        let run = |args: &[&str]| {
            let output = std::process::Command::new(&promtool)
                .args(args)
                .output()
                .unwrap();
            assert!(output.status.success(), "{output:?}");
            String::from_utf8(output.stdout).unwrap()
        };
        let url = format!("http://user:{ACME}@{address}/prometheus");
        assert_eq!(run(&["query", "labels", &url, "probe"]), "pay-e2e\n");
        let series = run(&[
            "query",
            "series",
            &url,
            "--match",
            r#"vigil_probe_runs_total{vigil_probe_step="create"}"#,
        ]);
        assert_eq!(
            series,
            "{__name__=\"vigil_probe_runs_total\", probe=\"pay-e2e\", service=\"vigil-synthetic\", \
             vigil_probe_location=\"u1\", vigil_probe_step=\"create\"}\n"
        );
    }
    // Every path is in the API's OpenAPI document, with the methods routed.
    let document = server.ok("/api/v1/openapi.json").await;
    let documented: Vec<(String, Vec<String>)> = document["paths"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(path, _)| path.starts_with(base))
        .map(|(path, methods)| {
            let methods = methods.as_object().unwrap().keys().cloned().collect();
            (path.clone(), methods)
        })
        .collect();
    let both = || vec!["get".to_owned(), "post".to_owned()];
    let get = || vec!["get".to_owned()];
    assert_eq!(
        documented,
        vec![
            (format!("{base}/label/{{name}}/values"), get()),
            (format!("{base}/labels"), both()),
            (format!("{base}/metadata"), get()),
            (format!("{base}/query"), both()),
            (format!("{base}/query_range"), both()),
            (format!("{base}/series"), both()),
            (format!("{base}/status/buildinfo"), get()),
        ]
    );
    server.stop().await;
}

/// `query` and `query_range` over the known data, in Prometheus's exact
/// shapes, and their errors with Prometheus's types and codes. At `t + 120`
/// (`t` a whole minute): u1's 100 spans (5 failed, 1 to 100 ms) in
/// `[t, t + 10)`, u2's 50 (10 failed, 111 to 160 ms) in `[t + 60, t + 70)`.
async fn queries_answer_as_prometheus_does(backend: Backend) {
    let Some((server, t)) = start_with_known_data(backend).await else {
        return;
    };
    let at = t + 120;
    let instant = |token, query: &str| {
        let path = format!(
            "/prometheus/api/v1/query?query={}&time={at}",
            urlencode(query)
        );
        let server = &server;
        async move { server.get(Some(token), &path).await }
    };
    let pay = r#"{service="pay",span_name="POST /pay"}"#;
    let (status, body) = instant(
        ACME,
        &format!("sum by (vigil_unit) (increase(vigil_span_requests_total{pay}[2m]))"),
    )
    .await;
    assert_eq!(
        (status, body),
        (
            200,
            json!({"status": "success", "data": {"resultType": "vector", "result": [
                {"metric": {"vigil_unit": "u1"}, "value": [at, "100"]},
                {"metric": {"vigil_unit": "u2"}, "value": [at, "50"]},
            ]}})
        )
    );
    let (_, body) = instant(
        ACME,
        &format!(
            "sum(increase(vigil_span_errors_total{pay}[2m])) / sum(increase(vigil_span_requests_total{pay}[2m]))"
        ),
    )
    .await;
    assert_eq!(body["data"]["result"][0]["value"], json!([at, "0.1"]));
    // The exact maximum of both units, 160 ms, from the merged distributions.
    let (_, body) = instant(
        ACME,
        &format!("histogram_quantile(1, sum(rate(vigil_span_duration_seconds_bucket{pay}[2m])))"),
    )
    .await;
    let max: f64 = body["data"]["result"][0]["value"][1]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((max - 0.16).abs() < 1e-12, "{body}");
    // Another tenant counts its own 7 spans only.
    let (_, body) = instant(EVIL, "sum(increase(vigil_span_requests_total[2m]))").await;
    assert_eq!(body["data"]["result"][0]["value"], json!([at, "7"]));

    let range = format!(
        "/prometheus/api/v1/query_range?query={}&start={}&end={at}&step=60",
        urlencode(&format!(
            "sum(increase(vigil_span_requests_total{pay}[1m]))"
        )),
        t + 60
    );
    let (status, body) = server.get(Some(ACME), &range).await;
    assert_eq!(
        (status, body),
        (
            200,
            json!({"status": "success", "data": {"resultType": "matrix", "result": [
                {"metric": {}, "values": [[t + 60, "100"], [at, "50"]]},
            ]}})
        )
    );

    // Errors as Prometheus answers them.
    let error = |status: u16, kind: &str, message: &str| {
        (
            status,
            json!({"status": "error", "errorType": kind, "error": message}),
        )
    };
    assert_eq!(
        instant(ACME, "sum(").await,
        error(
            400,
            "bad_data",
            "invalid parameter \"query\": unclosed left parenthesis"
        )
    );
    assert_eq!(
        instant(
            ACME,
            "holt_winters(vigil_span_requests_total[5m], 0.5, 0.5)"
        )
        .await,
        error(
            400,
            "bad_data",
            "function \"holt_winters\" is not supported by Vigil's PromQL"
        )
    );
    // A distribution left as it is (a Grafana heatmap) answers as classic
    // cumulative buckets, per second for a rate: the 180 spans over 120 s.
    let (status, body) = instant(
        ACME,
        "sum by (le) (rate(vigil_span_duration_seconds_bucket[2m]))",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let mut buckets: Vec<(f64, f64)> = body["data"]["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let le = s["metric"]["le"].as_str().unwrap();
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().unwrap()
            };
            (le, s["value"][1].as_str().unwrap().parse().unwrap())
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    assert_eq!(buckets.last(), Some(&(f64::INFINITY, 1.5)));
    assert!(
        buckets.windows(2).all(|w| w[0].1 <= w[1].1),
        "cumulative: {buckets:?}"
    );
    // The bucket bounded by 2^(-13/4) s = 105.1 ms holds the 130 spans of
    // 100 ms or less (u1's 1..=100, the 20 queries and ledger's 10), not
    // u2's 111 ms and more.
    let at_105_ms: Vec<(f64, f64)> = buckets
        .iter()
        .copied()
        .filter(|(le, _)| *le > 0.1 && *le < 0.111)
        .collect();
    assert_eq!(at_105_ms, [((-13f64 / 4.0).exp2(), 130.0 / 120.0)]);
    let ranged = |query: &str, step: &str| {
        format!(
            "/prometheus/api/v1/query_range?query={}&start={t}&end={at}&step={step}",
            urlencode(query)
        )
    };
    assert_eq!(
        server.get(Some(ACME), &ranged("1", "0")).await,
        error(
            400,
            "bad_data",
            "invalid parameter \"step\": zero or negative query resolution step widths are not accepted. Try a positive integer"
        )
    );
    assert_eq!(
        server.get(Some(ACME), &ranged("1", "0.01")).await,
        error(
            400,
            "bad_data",
            "exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the query resolution (?step=XX)"
        )
    );
    assert_eq!(
        server.get(Some(ACME), &ranged("\"text\"", "60")).await,
        error(
            400,
            "bad_data",
            "invalid expression type \"string\" for range query, must be Scalar or instant Vector"
        )
    );
    let (status, body) = server.get(None, &ranged("1", "60")).await;
    assert_eq!((status, &body["status"]), (401, &json!("error")));
    server.stop().await;
}

/// Sums by label of a selector's rate or increase are merged by the store
/// (one row per group and window): over 60 series of 30 windows each (at
/// 10 s; 5 at 1 min), more than `api.max_points` (100) read series by
/// series, they answer, with
/// the exact sums; the same sum not mergeable (a product inside) is read
/// series by series and refused at the limit.
async fn sums_of_many_series_are_merged_by_the_store(backend: Backend) {
    let Some(config) = testing::config(backend) else {
        return;
    };
    let mut config = api_config(config);
    config.api.max_points = 100;
    let store = store::open(&config.store).await.unwrap();
    let t = now_s() - now_s() % 60 - 20 * 60;
    let mut rows = Vec::new();
    let mut catalogue = Vec::new();
    for i in 0..60 {
        // u0: 1 request of 10 ms per window; u1: 2 of 30 ms, one failed;
        // u2, excluded by the selectors below, 1 of 50 ms.
        let unit = ["u0", "u1", "u2"][i % 3];
        let key = series(
            "acme",
            Kind::Span,
            "wide",
            "GET /wide",
            &[("vigil.unit", unit), ("instance", &format!("i{i}"))],
        );
        let window = match unit {
            "u0" => rollup([10.0], 0),
            "u1" => rollup([30.0, 30.0], 1),
            _ => rollup([50.0], 0),
        };
        // 10 s windows, and the 1 min windows they make, as an aggregator
        // writes them.
        for (width_s, count, per) in [(10, 30, 1), (60, 5, 6)] {
            let mut merged = Rollup::default();
            for _ in 0..per {
                merged.merge(&window);
            }
            for w in 0..count {
                rows.push(RollupRow {
                    series: Arc::clone(&key),
                    partition: 0,
                    width_s,
                    start_s: t + u64::from(width_s) * w,
                    rollup: merged.clone(),
                    correction: false,
                });
            }
        }
        catalogue.push(CatalogueEntry {
            series: (*key).clone(),
            first_seen_s: t,
            last_seen_s: t + 290,
        });
    }
    store.record_series(&catalogue).await.unwrap();
    store
        .write(&Flush::rows("test", now_s(), rows))
        .await
        .unwrap();
    let server = Server::start(&config, store).await;
    let at = t + 300;
    let query = |query: String| {
        let path = format!(
            "/prometheus/api/v1/query?query={}&time={at}",
            urlencode(&query)
        );
        let server = &server;
        async move { server.get(Some(ACME), &path).await }
    };
    let wide = r#"service="wide",vigil_unit!="u2""#;
    let (status, body) = query(format!(
        "sum by (vigil_unit) (increase(vigil_span_requests_total{{{wide}}}[5m]))"
    ))
    .await;
    assert_eq!(
        (status, body),
        (
            200,
            json!({"status": "success", "data": {"resultType": "vector", "result": [
                {"metric": {"vigil_unit": "u0"}, "value": [at, "600"]},
                {"metric": {"vigil_unit": "u1"}, "value": [at, "1200"]},
            ]}})
        )
    );
    let (status, body) = query(format!(
        "sum by (vigil_unit) (rate(vigil_span_errors_total{{{wide}}}[5m])) / sum by (vigil_unit) (rate(vigil_span_requests_total{{{wide}}}[5m]))"
    ))
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["data"]["result"],
        json!([
            {"metric": {"vigil_unit": "u0"}, "value": [at, "0"]},
            {"metric": {"vigil_unit": "u1"}, "value": [at, "0.5"]},
        ])
    );
    let (status, body) = query(format!(
        "histogram_quantile(0.5, sum by (le, vigil_unit) (rate(vigil_span_duration_seconds_bucket{{{wide}}}[5m])))"
    ))
    .await;
    assert_eq!(status, 200, "{body}");
    let result = body["data"]["result"].as_array().unwrap();
    assert_eq!(result.len(), 2, "{body}");
    for (series, seconds) in result.iter().zip([0.010, 0.030]) {
        let value: f64 = series["value"][1].as_str().unwrap().parse().unwrap();
        assert!(
            (value - seconds).abs() <= seconds * RELATIVE_ERROR,
            "{series}"
        );
    }
    let (status, body) = query(format!(
        "sum by (vigil_unit) (increase(vigil_span_requests_total{{{wide}}}[5m]) * 1)"
    ))
    .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["errorType"], "execution", "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("api.max_points"),
        "{body}"
    );
    server.stop().await;
}

on_both_backends!(
    catalogue_paths_answer_as_prometheus_does,
    queries_answer_as_prometheus_does,
    sums_of_many_series_are_merged_by_the_store
);
