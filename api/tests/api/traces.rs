//! Traces are trees, and searches page.

use super::*;

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

on_both_backends!(traces_are_trees_and_searches_page,);
