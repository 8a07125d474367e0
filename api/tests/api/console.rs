//! The console in a real browser (headless Chromium through ChromeDriver)
//! over the known data, on both stores: every page loads without a
//! JavaScript error or a failed request, shows what the API answers, and
//! only an editor silences. Each page leaves a screenshot under
//! `target/console-screenshots/`.

use reqwest::redirect::Policy;
use serde_json::Value;
use vigil_testing::browser::Browser;

use super::*;

on_both_backends!(
    pages_show_what_the_api_answers,
    only_an_editor_silences,
    sessions_and_forms_are_checked
);

/// WebDriver's key codes.
const TAB: &str = "\u{E004}";
const ENTER: &str = "\u{E007}";

/// acme's silences, as the API lists them.
async fn silences(server: &Server) -> Vec<Value> {
    let (status, body) = server.get(Some(ACME), "/api/v1/silences").await;
    assert_eq!(status, 200, "{body}");
    body["silences"].as_array().unwrap().clone()
}

/// A form's body.
fn form(pairs: &[(&str, &str)]) -> String {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

/// Signs in with `token` through the sign-in form.
async fn sign_in(browser: &Browser, server: &Server, token: &str) {
    browser
        .goto(&format!("http://{}/console/", server.api.address()))
        .await;
    assert!(
        browser.location().await.starts_with("/console/sign-in"),
        "a visitor without a session is sent to sign in"
    );
    browser
        .eval(&format!(
            "document.querySelector('#token').value = {token:?}; document.querySelector('form').submit(); return true"
        ))
        .await;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while browser.location().await.starts_with("/console/sign-in") {
        assert!(tokio::time::Instant::now() < deadline, "not signed in");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    browser.wait_loaded().await;
}

/// Opens a console page, checks the browser logged no error, and writes
/// its screenshot.
async fn open(browser: &Browser, server: &Server, path: &str, screenshot: &str) {
    browser
        .goto(&format!("http://{}{path}", server.api.address()))
        .await;
    let errors = browser.severe().await;
    assert!(errors.is_empty(), "{path}: {errors:?}");
    browser.screenshot(screenshot).await;
}

/// The values of the circles of the chart titled `chart`, by series.
async fn drawn(browser: &Browser, chart: &str) -> BTreeMap<String, Vec<f64>> {
    let found = browser
        .eval(&format!(
            "const chart = document.querySelector('svg[data-chart={chart:?}]');
             if (!chart) return null;
             return Array.from(chart.querySelectorAll('g.series')).map(g => [g.dataset.series,
               Array.from(g.querySelectorAll('circle')).map(c => Number(c.dataset.value))]);"
        ))
        .await;
    serde_json::from_value::<Vec<(String, Vec<f64>)>>(found.clone())
        .unwrap_or_else(|_| panic!("no chart {chart:?}: {found}"))
        .into_iter()
        .collect()
}

/// The present points of a query answer, by its groups' values.
fn answered(answer: &Value) -> BTreeMap<String, Vec<f64>> {
    answer["series"]
        .as_array()
        .unwrap()
        .iter()
        .map(|series| {
            let name: Vec<&str> = series["labels"]
                .as_object()
                .unwrap()
                .values()
                .map(|v| v.as_str().unwrap())
                .collect();
            let points = series["points"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|p| p[1].as_f64())
                .collect();
            (name.join(" · "), points)
        })
        .collect()
}

async fn pages_show_what_the_api_answers(backend: Backend) {
    let Some(config) = testing::config(backend) else {
        return;
    };
    let mut config = api_config(config);
    config.slos = slos();
    let store = store::open(&config.store).await.unwrap();
    write_known_data(store.as_ref()).await;
    super::releases::write_releases(store.as_ref()).await;
    let server = Server::start(&config, store).await;
    let Some(browser) = Browser::start().await else {
        return;
    };
    let name = |page: &str| format!("{backend:?}-{page}").to_lowercase();
    sign_in(&browser, &server, ACME).await;

    open(&browser, &server, "/console/?range=1h", &name("overview")).await;
    let rows = browser
        .eval("return Array.from(document.querySelectorAll('tr[data-service]')).map(r => r.dataset.service)")
        .await;
    assert_eq!(
        rows,
        serde_json::json!(["checkout", "ledger", "pay"]),
        "acme's services only"
    );
    // The chart holds one circle per point the API answers, with its value.
    let (_, answer) = server
        .get(
            Some(ACME),
            "/api/v1/query?kind=span&signal=error_ratio&group_by=vigil.unit&filter=span.kind%3D%22server%22&step=1m&from=now-1h&to=now",
        )
        .await;
    let expected = answered(&answer);
    assert_eq!(
        expected.keys().collect::<Vec<_>>(),
        ["u1", "u2", "unit-a", "unit-b"],
        "{answer}"
    );
    assert_eq!(drawn(&browser, "Error ratio by unit").await, expected);

    open(
        &browser,
        &server,
        "/console/services/pay?range=1h",
        &name("service"),
    )
    .await;
    let (_, answer) = server
        .get(
            Some(ACME),
            "/api/v1/query?kind=span&service=pay&signal=p99&group_by=vigil.unit&filter=span.kind%3D%22server%22&step=1m&from=now-1h&to=now",
        )
        .await;
    assert_eq!(drawn(&browser, "p99 latency").await, answered(&answer));
    // The heatmap's cells add up to the server spans: u1's 100 and u2's 50.
    let cells = browser
        .eval("return Array.from(document.querySelectorAll('rect.cell')).reduce((sum, c) => sum + Number(c.dataset.count), 0)")
        .await;
    assert_eq!(cells.as_f64(), Some(150.0), "{cells}");
    let operations = browser
        .eval("return Array.from(document.querySelectorAll('table.operations th[scope=row]')).map(t => t.textContent)")
        .await;
    assert_eq!(operations, serde_json::json!(["POST /pay"]));
    // The failed and the slow spans are the span search's answers: the
    // trace's two failed spans, and those over the service's p99.
    let listed = |section: &str| {
        format!(
            "return Array.from(document.querySelectorAll('section[aria-labelledby={section}] table.spans tbody tr')).map(r => r.children[1].textContent)"
        )
    };
    let operations_of = |answer: &Value| -> Vec<String> {
        answer["spans"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["operation"].as_str().unwrap().to_owned())
            .collect()
    };
    let (_, failed) = server
        .get(
            Some(ACME),
            "/api/v1/traces?service=pay&error=true&limit=10&from=now-1h&to=now",
        )
        .await;
    let mut expected = operations_of(&failed);
    assert_eq!(
        browser.eval(&listed("failed")).await,
        serde_json::json!(expected)
    );
    expected.sort();
    assert_eq!(expected, ["POST /pay", "charge"]);
    let (_, whole) = server
        .get(
            Some(ACME),
            "/api/v1/query?kind=span&service=pay&signal=p99&filter=span.kind%3D%22server%22&step=1h&from=now-1h&to=now",
        )
        .await;
    let p99 = whole["series"][0]["points"][0][1].as_f64().unwrap();
    let (_, slow) = server
        .get(
            Some(ACME),
            &format!(
                "/api/v1/traces?service=pay&min_duration={}&limit=10&from=now-1h&to=now",
                p99.ceil() as u64
            ),
        )
        .await;
    assert_eq!(
        browser.eval(&listed("slow")).await,
        serde_json::json!(operations_of(&slow))
    );
    // Grouped by version instead.
    open(
        &browser,
        &server,
        "/console/services/pay?range=1h&by=service.version",
        &name("service-by-version"),
    )
    .await;

    // The trace's waterfall: a bar per span the API answers.
    open(
        &browser,
        &server,
        &format!("/console/traces/{TRACE}?range=1h"),
        &name("trace"),
    )
    .await;
    let (_, trace) = server
        .get(Some(ACME), &format!("/api/v1/traces/{TRACE}"))
        .await;
    let bars = browser
        .eval("return document.querySelectorAll('ol.waterfall li.span .bar').length")
        .await;
    assert_eq!(bars, trace["span_count"], "{trace}");
    assert_eq!(trace["span_count"], 4);

    // The release report: the API's verdict, and its p-values to the digit.
    open(
        &browser,
        &server,
        "/console/releases?service=checkout&version=1.1&range=1h",
        &name("release"),
    )
    .await;
    let (_, health) = server
        .get(
            Some(ACME),
            "/api/v1/releases/checkout/health?version=1.1&from=now-1h&to=now",
        )
        .await;
    let shown = browser
        .eval("return [document.querySelector('[data-verdict]').dataset.verdict,
                 Array.from(document.querySelectorAll('tr[data-signal]')).map(r => [r.dataset.signal, r.querySelector('td[data-p]').dataset.p])]")
        .await;
    let expected: Vec<(String, String)> = health["signals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let p = s["p_value"]
                .as_f64()
                .map_or(String::new(), |p| p.to_string());
            (s["signal"].as_str().unwrap().to_owned(), p)
        })
        .collect();
    assert_eq!(shown[0], health["verdict"], "{health}");
    assert_eq!(health["verdict"], "promote", "{health}");
    assert_eq!(
        serde_json::from_value::<Vec<(String, String)>>(shown[1].clone()).unwrap(),
        expected
    );

    // The app's versions and the probes' grid, as the API reads them.
    open(
        &browser,
        &server,
        "/console/apps?range=1h&app=wallet-ios",
        &name("apps"),
    )
    .await;
    let (_, health) = server
        .get(
            Some(ACME),
            "/api/v1/client/health?app=wallet-ios&from=now-1h&to=now",
        )
        .await;
    let shown = browser
        .eval("return document.querySelector('table[data-app=\"wallet-ios\"] tr[data-version=\"2.0\"] td[data-value]').dataset.value")
        .await;
    let expected = &health["apps"][0]["versions"][0];
    assert_eq!(expected["version"], "2.0", "{health}");
    assert_eq!(
        shown.as_str().unwrap().parse::<f64>().ok(),
        expected["crash_free_sessions"].as_f64(),
        "{health}"
    );
    open(
        &browser,
        &server,
        "/console/probes?range=1h&probe=pay-e2e",
        &name("probes"),
    )
    .await;
    let (_, probes) = server
        .get(Some(ACME), "/api/v1/probes?from=now-1h&to=now")
        .await;
    let availability = browser
        .eval("return document.querySelector('tr[data-probe=\"pay-e2e\"] td[data-location=\"u1\"]').dataset.availability")
        .await;
    assert_eq!(
        availability.as_str().unwrap().parse::<f64>().ok(),
        probes["probes"][0]["locations"][0]["availability"].as_f64(),
        "{probes}"
    );
    assert_eq!(probes["probes"][0]["locations"][0]["location"], "u1");

    open(
        &browser,
        &server,
        "/console/alerts?range=1h",
        &name("alerts"),
    )
    .await;
    // By keyboard alone: Tab reaches the Alerts link, Enter follows it.
    open(
        &browser,
        &server,
        "/console/?range=1h",
        &name("overview-keyboard"),
    )
    .await;
    let mut focused = Value::Null;
    for _ in 0..10 {
        browser.press(TAB).await;
        focused = browser
            .eval("return document.activeElement.textContent")
            .await;
        if focused == "Alerts" {
            break;
        }
    }
    assert_eq!(focused, "Alerts", "Tab never reached the Alerts link");
    browser.screenshot(&name("overview-keyboard-focus")).await;
    browser.press(ENTER).await;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while !browser.location().await.starts_with("/console/alerts") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "Enter did not follow the link"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    browser.wait_loaded().await;

    // At a phone's width the pages still load and hold their tables.
    browser.resize(390, 844).await;
    open(
        &browser,
        &server,
        "/console/?range=1h",
        &name("overview-phone"),
    )
    .await;
    browser.quit().await;
    server.stop().await;
}

async fn only_an_editor_silences(backend: Backend) {
    let Some((server, _)) = start_with_known_data(backend).await else {
        return;
    };
    let Some(browser) = Browser::start().await else {
        return;
    };
    let name = |page: &str| format!("{backend:?}-{page}").to_lowercase();
    // A viewer has no form; one sent anyway (with the session's own form
    // token) is refused by the API, and the page says so.
    sign_in(&browser, &server, ACME).await;
    open(&browser, &server, "/console/alerts", &name("alerts-viewer")).await;
    let form = browser
        .eval("return document.querySelector('form.silence') === null")
        .await;
    assert_eq!(form, Value::Bool(true), "a viewer sees no silence form");
    browser
        .eval(
            "const f = document.createElement('form'); f.method = 'post'; f.action = '/console/silences';
             const csrf = document.querySelector('input[name=csrf]').value;
             for (const [k, v] of Object.entries({csrf, matchers: 'vigil.unit=\"u1\"', ends_at: 'now+1h', created_by: 'viewer'})) {
               const i = document.createElement('input'); i.name = k; i.value = v; f.appendChild(i);
             }
             document.body.appendChild(f); f.submit(); return true",
        )
        .await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    browser.wait_loaded().await;
    let refusal = browser
        .eval("const p = document.querySelector('p.failure'); return p && [p.dataset.status, p.textContent]")
        .await;
    assert_eq!(refusal[0], "403", "{refusal}");
    browser.screenshot(&name("alerts-viewer-refused")).await;
    assert!(silences(&server).await.is_empty());
    // The refusal is the one failed request the browser saw.
    let errors = browser.severe().await;
    assert!(errors.len() == 1 && errors[0].contains("403"), "{errors:?}");

    // An editor's silence, made in the form, is the API's.
    let signed_out = browser
        .eval("document.querySelector('form.sign-out').submit(); return true")
        .await;
    assert_eq!(signed_out, Value::Bool(true));
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    sign_in(&browser, &server, EDITOR).await;
    open(&browser, &server, "/console/alerts", &name("alerts-editor")).await;
    browser
        .eval(
            "const f = document.querySelector('form.silence');
             f.matchers.value = 'vigil.unit=\"u2\",service.name=\"pay\"';
             f.ends_at.value = 'now+2h'; f.created_by.value = 'sre@example.com';
             f.comment.value = 'deploying u2'; f.submit(); return true",
        )
        .await;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    let made = loop {
        let made = silences(&server).await;
        if !made.is_empty() {
            break made;
        }
        assert!(tokio::time::Instant::now() < deadline, "no silence made");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(made.len(), 1);
    assert_eq!(
        made[0]["matchers"],
        serde_json::json!([
            {"name": "vigil.unit", "value": "u2", "is_equal": true},
            {"name": "service.name", "value": "pay", "is_equal": true},
        ])
    );
    assert_eq!(made[0]["created_by"], "sre@example.com");
    assert_eq!(made[0]["status"], "active");
    browser.wait_loaded().await;
    assert_eq!(
        browser.location().await,
        "/console/alerts?range=1h&refresh=off"
    );
    let listed = browser
        .eval("return Array.from(document.querySelectorAll('tr[data-silence]')).map(r => r.dataset.silence)")
        .await;
    assert_eq!(listed, serde_json::json!([made[0]["id"]]));
    let errors = browser.severe().await;
    assert!(errors.is_empty(), "{errors:?}");
    browser.screenshot(&name("alerts-silenced")).await;
    browser.quit().await;
    server.stop().await;
}

/// Without a browser: the session cookie's flags, a sign-in refused, a
/// form without the session's token refused before the API is asked.
async fn sessions_and_forms_are_checked(backend: Backend) {
    let Some((server, _)) = start_with_known_data(backend).await else {
        return;
    };
    let client = reqwest::Client::builder()
        .redirect(Policy::none())
        .build()
        .unwrap();
    let base = format!("http://{}", server.api.address());
    let page = client.get(format!("{base}/console/")).send().await.unwrap();
    assert_eq!(page.status(), 303);
    assert_eq!(
        page.headers()["location"],
        "/console/sign-in?next=%2Fconsole%2F"
    );
    let refused = client
        .post(format!("{base}/console/sign-in"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(&[("token", "not-a-token")]))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    let signed = client
        .post(format!("{base}/console/sign-in"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(&[
            ("token", EDITOR),
            ("next", "https://elsewhere.example/"),
        ]))
        .send()
        .await
        .unwrap();
    assert_eq!(signed.status(), 303);
    assert_eq!(
        signed.headers()["location"],
        "/console/",
        "never another site"
    );
    let cookies: Vec<&str> = signed
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert_eq!(cookies.len(), 2, "{cookies:?}");
    for cookie in &cookies {
        assert!(
            cookie.ends_with("; Path=/console; HttpOnly; SameSite=Strict"),
            "{cookie}"
        );
    }
    let session: Vec<&str> = cookies
        .iter()
        .map(|c| c.split(';').next().unwrap())
        .collect();
    let forged = client
        .post(format!("{base}/console/silences"))
        .header("cookie", session.join("; "))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(&[
            ("csrf", "0".repeat(64).as_str()),
            ("matchers", "vigil.unit=\"u1\""),
            ("ends_at", "now+1h"),
            ("created_by", "forger"),
        ]))
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);
    let (_, listed) = server.get(Some(ACME), "/api/v1/silences").await;
    assert_eq!(listed["silences"], serde_json::json!([]));
    let page = client
        .get(format!("{base}/console/"))
        .header("cookie", session.join("; "))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let policy = page.headers()["content-security-policy"].to_str().unwrap();
    assert!(policy.contains("script-src 'self'"), "{policy}");

    // An admin reads another tenant through the tenant field; a viewer
    // asking for another tenant is refused by the API, and the page says so.
    let session_of = |token: &str| {
        let client = client.clone();
        let base = base.clone();
        let token = token.to_owned();
        async move {
            let signed = client
                .post(format!("{base}/console/sign-in"))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(form(&[("token", &token)]))
                .send()
                .await
                .unwrap();
            signed
                .headers()
                .get_all("set-cookie")
                .iter()
                .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_owned())
                .collect::<Vec<_>>()
                .join("; ")
        }
    };
    let overview = |cookie: String, query: &'static str| {
        let client = client.clone();
        let base = base.clone();
        async move {
            let page = client
                .get(format!("{base}/console/?range=1h{query}"))
                .header("cookie", cookie)
                .send()
                .await
                .unwrap();
            assert_eq!(page.status(), 200);
            page.text().await.unwrap()
        }
    };
    let admin = session_of(ADMIN).await;
    let own = overview(admin.clone(), "").await;
    assert!(
        own.contains("No service sent spans in this range."),
        "{own}"
    );
    let acme = overview(admin, "&tenant=acme").await;
    assert!(acme.contains(r#"data-service="pay""#), "{acme}");
    let viewer = session_of(ACME).await;
    let refused = overview(viewer, "&tenant=evil").await;
    assert!(refused.contains(r#"data-status="403""#), "{refused}");
    assert!(!refused.contains("data-service="), "{refused}");
    server.stop().await;
}
