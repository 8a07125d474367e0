//! Fuzzing every path's query and path parameters, as a client would send
//! them, against the API over each real store holding the known data. The
//! paths and their parameters come from the API's own OpenAPI document.
//! Values are mutations of valid ones (times, durations, signals, label
//! filters, trace ids, quotes and escapes for the stores' query languages);
//! now and then the whole query string is mutated bytes. Property: the API
//! never fails inside (no 5xx: a store query that breaks on a value is a
//! bug, not an outage), and every refusal is the documented JSON error, a
//! bad parameter named.

use proptest::prelude::*;
use proptest::test_runner::TestRunner;
use vigil_testing::fuzz::{config, mutations};

use super::*;

/// Valid and nearly valid values of every kind of parameter.
const VALUES: &[&str] = &[
    "now",
    "now-1h",
    "now+5m",
    "2026-11-22T07:30:00.25+01:00",
    "1795332600000",
    "10s",
    "1m",
    "7d",
    "60000",
    "p99",
    "p99.9",
    "error_ratio",
    "availability",
    "rate",
    "mean",
    "count",
    "span",
    "metric",
    "client",
    "probe",
    "pay",
    "POST /pay",
    "pay-e2e",
    "wallet-ios",
    "2.0",
    r#"vigil.unit="u1", span.kind!="internal""#,
    r#"service.version=~"1\\..*""#,
    "vigil.unit",
    "unit,version",
    TRACE,
    "true",
    "false",
    "0",
    "1000",
    "18446744073709551616",
    "-1",
    "acme",
    "firing",
    "' OR 1=1 --",
    "\\'\"`%_*?{}[]\\x00",
];

/// One request: a path with its path parameters filled and a query string.
#[derive(Debug, Clone)]
struct Case {
    path: String,
    query: String,
}

/// The GET paths of the OpenAPI document, each with its path and query
/// parameters' names; not the Prometheus API's, whose errors are
/// Prometheus's (its own target below).
fn get_paths(document: &Value) -> Vec<(String, Vec<String>, Vec<String>)> {
    let mut paths = Vec::new();
    for (path, methods) in document["paths"].as_object().unwrap() {
        let Some(get) = methods.get("get") else {
            continue;
        };
        if get["tags"] == json!(["prometheus"]) {
            continue;
        }
        let names = |place: &str| -> Vec<String> {
            get["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|p| p["in"] == place)
                .map(|p| p["name"].as_str().unwrap().to_owned())
                .collect()
        };
        paths.push((path.clone(), names("path"), names("query")));
    }
    paths
}

fn value() -> impl Strategy<Value = String> {
    let seeds = VALUES.iter().map(|v| v.as_bytes().to_vec()).collect();
    mutations(seeds).prop_map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
}

fn cases(paths: Vec<(String, Vec<String>, Vec<String>)>) -> impl Strategy<Value = Case> {
    let count = paths.len();
    let plain: Vec<String> = paths
        .iter()
        .filter(|(_, path_params, _)| path_params.is_empty())
        .map(|(path, _, _)| path.clone())
        .collect();
    let structured = (
        0..count,
        prop::collection::vec((any::<prop::sample::Index>(), value()), 0..6),
        prop::collection::vec(value(), 2),
    )
        .prop_map(move |(at, given, path_values)| {
            let (template, path_params, query_params) = &paths[at];
            let mut path = template.clone();
            for (name, value) in path_params.iter().zip(&path_values) {
                path = path.replace(&format!("{{{name}}}"), &urlencode(value));
            }
            let mut query = form_urlencoded::Serializer::new(String::new());
            for (index, value) in &given {
                // Now and then a name no path takes.
                let name = if index.index(8) == 0 {
                    "limt"
                } else {
                    &query_params[index.index(query_params.len())]
                };
                query.append_pair(name, value);
            }
            Case {
                path,
                query: query.finish(),
            }
        });
    let raw = (
        prop::sample::select(plain),
        mutations(vec![
            b"kind=span&service=pay&name=POST%20%2Fpay&signal=p99&step=1m&from=now-1h".to_vec(),
            b"service=pay&filter=vigil.unit%3D%22u1%22&limit=5&cursor=abc".to_vec(),
        ]),
    )
        .prop_map(|(path, bytes)| Case {
            path,
            // Kept to what a URL may carry; the rest percent-encoded.
            query: urlencode(&String::from_utf8_lossy(&bytes))
                .replace("%26", "&")
                .replace("%3D", "="),
        });
    prop_oneof![9 => structured, 1 => raw]
}

async fn no_parameter_breaks_the_api(backend: Backend) {
    let Some((server, _)) = start_with_known_data(backend).await else {
        return;
    };
    let document = server.ok("/api/v1/openapi.json").await;
    let paths = get_paths(&document);
    assert!(paths.len() >= 10, "{paths:?}");
    let mut runner = TestRunner::new(config());
    let answered = std::sync::Mutex::new(BTreeMap::<u16, u64>::new());
    runner
        .run(&cases(paths), |case| {
            let target = format!("{}?{}", case.path, case.query);
            let (status, body) = tokio::task::block_in_place(|| {
                tokio::runtime::Handle::current().block_on(server.get(Some(ACME), &target))
            });
            *answered.lock().unwrap().entry(status).or_default() += 1;
            prop_assert!(status < 500, "{target}: {status} {body}");
            if status != 200 {
                let error = &body["error"];
                prop_assert!(
                    error["code"].is_string() && error["message"].is_string(),
                    "{target}: {status} {body}"
                );
            }
            if status == 400 {
                prop_assert!(error_names_a_parameter(&body), "{target}: {body}");
            }
            Ok(())
        })
        .unwrap();
    // Both answers were reached: the values are near enough to valid.
    let answered = answered.into_inner().unwrap();
    assert!(answered.contains_key(&200), "{answered:?}");
    assert!(answered.contains_key(&400), "{answered:?}");
    server.stop().await;
}

fn error_names_a_parameter(body: &Value) -> bool {
    body["error"]["code"] == "bad_parameter" && body["error"]["parameter"].is_string()
}

/// Mutated series selectors through the Prometheus API's `match[]`: never
/// a 5xx, every refusal Prometheus's `bad_data`.
async fn no_selector_breaks_the_prometheus_api(backend: Backend) {
    let Some((server, _)) = start_with_known_data(backend).await else {
        return;
    };
    let selectors = mutations(vec![
        br#"vigil_span_requests_total{service="pay",vigil_unit=~"u[12]",status!="error",x!~".+"}"#
            .to_vec(),
        br#"{__name__=~"vigil_.*", probe="pay-e2e"}"#.to_vec(),
    ]);
    let answered = std::sync::Mutex::new(BTreeMap::<u16, u64>::new());
    TestRunner::new(config())
        .run(&selectors, |bytes| {
            let selector = String::from_utf8_lossy(&bytes);
            let target = format!("/prometheus/api/v1/series?match[]={}", urlencode(&selector));
            let (status, body) = tokio::task::block_in_place(|| {
                tokio::runtime::Handle::current().block_on(server.get(Some(ACME), &target))
            });
            *answered.lock().unwrap().entry(status).or_default() += 1;
            prop_assert!(
                status == 200 || status == 400,
                "{selector}: {status} {body}"
            );
            let expected = if status == 200 { "success" } else { "error" };
            prop_assert_eq!(&body["status"], &json!(expected), "{}: {}", selector, body);
            Ok(())
        })
        .unwrap();
    let answered = answered.into_inner().unwrap();
    assert!(
        answered.contains_key(&200) && answered.contains_key(&400),
        "{answered:?}"
    );
    server.stop().await;
}

on_both_backends!(
    no_parameter_breaks_the_api,
    no_selector_breaks_the_prometheus_api
);
