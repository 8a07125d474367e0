//! Client telemetry over HTTP/JSON: events arrive exactly; invalid events
//! and batches are rejected and counted.

use super::*;

fn client_context(app: &str) -> serde_json::Value {
    serde_json::json!({
        "appId": app,
        "appVersion": "5.2.0",
        "osName": "android",
        "osVersion": "14",
        "deviceModel": "SM-S918B",
        "networkType": "wifi",
        "userIdHash": "9f86d081884c7d659a2feaa0c55ad015",
        "sessionIdHash": "a3f5c1d2e4b6a7980123456789abcdef",
        "unit": "unit-a",
        "region": "eu-west-1",
        "cohort": "canary"
    })
}

async fn client_events_over_http_json_arrive_exactly(backend: Backend) {
    use vigil_proto::client::v1::ExportClientRequest;
    let Some(harness) = Harness::start(backend).await else {
        return;
    };
    let t = now_ns();
    let body = serde_json::json!({
        "batches": [{
            "context": client_context("com.acme.wallet"),
            "events": [
                { "timeUnixNano": t, "sessionStart": {} },
                { "timeUnixNano": t, "appStart": { "kind": "cold", "durationMs": 812.5 } },
                { "timeUnixNano": t, "networkRequest": {
                    "host": "api.acme.com", "route": "/v1/pay", "method": "POST",
                    "statusCode": 503, "durationMs": 1200.0, "bytesSent": 512, "bytesReceived": 87 } },
                { "timeUnixNano": t, "stutter": { "totalFrames": 600, "slowFrames": 12, "frozenFrames": 1 } },
                { "timeUnixNano": t, "power": { "batteryLevel": 0.42, "charging": false, "thermalState": "fair" } },
                { "timeUnixNano": t, "memory": { "residentBytes": 268435456, "lowMemoryWarning": true } },
                { "timeUnixNano": t, "crash": {
                    "foreground": true, "kind": "native", "exceptionType": "SIGSEGV",
                    "stackFingerprint": "c0ffee", "recurredOnNextLaunch": true } },
                { "timeUnixNano": t, "sessionEnd": { "durationMs": 65000.0 } }
            ]
        }, {
            "context": client_context("wallet-web"),
            "events": [
                { "timeUnixNano": t, "pageLoad": {
                    "route": "/checkout", "ttfbMs": 120.0, "firstContentfulPaintMs": 480.0,
                    "loadMs": 1900.0, "largestContentfulPaintMs": 1400.0,
                    "interactionToNextPaintMs": 90.0, "cumulativeLayoutShift": 0.02 } }
            ]
        }]
    });
    let response = reqwest::Client::new()
        .post(harness.http_url("/v1/client"))
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let answer: serde_json::Value =
        serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
    assert_eq!(
        answer,
        serde_json::json!({ "rejectedEvents": 0, "errorMessage": "" })
    );

    let topic = harness.config.bus.topics().client;
    let messages = harness.read(&topic, |m| m.len() >= 2).await;
    let mut keys: Vec<&[u8]> = messages.iter().map(|m| &m.key[..]).collect();
    keys.sort();
    assert_eq!(keys, [&b"acme/com.acme.wallet"[..], b"acme/wallet-web"]);
    let batches: Vec<_> = decode::<ExportClientRequest>(&messages)
        .into_iter()
        .flat_map(|r| r.batches)
        .collect();
    let wallet = batches
        .iter()
        .find(|b| b.context.as_ref().unwrap().app_id == "com.acme.wallet")
        .unwrap();
    let context = wallet.context.as_ref().unwrap();
    assert_eq!(
        (
            context.app_version.as_str(),
            context.cohort.as_str(),
            context.unit.as_str()
        ),
        ("5.2.0", "canary", "unit-a")
    );
    assert_eq!(wallet.events.len(), 8);
    let start = wallet.events[1].app_start.as_ref().unwrap();
    assert_eq!((start.kind.as_str(), start.duration_ms), ("cold", 812.5));
    let request = wallet.events[2].network_request.as_ref().unwrap();
    assert_eq!(
        (
            request.status_code,
            request.duration_ms,
            request.bytes_sent,
            request.bytes_received
        ),
        (503, 1200.0, 512, 87)
    );
    let stutter = wallet.events[3].stutter.as_ref().unwrap();
    assert_eq!(
        (
            stutter.total_frames,
            stutter.slow_frames,
            stutter.frozen_frames
        ),
        (600, 12, 1)
    );
    let crash = wallet.events[6].crash.as_ref().unwrap();
    assert_eq!(
        (
            crash.kind.as_str(),
            crash.exception_type.as_str(),
            crash.foreground,
            crash.recurred_on_next_launch
        ),
        ("native", "SIGSEGV", true, true)
    );
    assert_eq!(
        wallet
            .events
            .iter()
            .map(|e| e.time_unix_nano)
            .collect::<Vec<_>>(),
        vec![t; 8]
    );
    let web = batches
        .iter()
        .find(|b| b.context.as_ref().unwrap().app_id == "wallet-web")
        .unwrap();
    let page = web.events[0].page_load.as_ref().unwrap();
    assert_eq!(
        (
            page.largest_contentful_paint_ms,
            page.cumulative_layout_shift
        ),
        (1400.0, 0.02)
    );
    harness.stop().await;
}

#[tokio::test]
async fn invalid_client_events_and_batches_are_rejected_and_counted() {
    use vigil_proto::client::v1::client_service_client::ClientServiceClient;
    use vigil_proto::client::v1::{
        AppStart, ClientBatch, ClientContext, ClientEvent, Crash, ExportClientRequest, PowerSample,
        SessionStart,
    };
    let harness = Harness::start(Backend::Embedded).await.unwrap();
    let t = now_ns();
    let context = |app: &str, user: &str| ClientContext {
        app_id: app.to_owned(),
        app_version: "5.2.0".to_owned(),
        os_name: "ios".to_owned(),
        user_id_hash: user.to_owned(),
        ..Default::default()
    };
    let request = ExportClientRequest {
        batches: vec![
            ClientBatch {
                context: Some(context("com.acme.wallet", "")),
                events: vec![
                    ClientEvent {
                        time_unix_nano: t,
                        session_start: Some(SessionStart {}),
                        ..Default::default()
                    },
                    ClientEvent {
                        time_unix_nano: t,
                        app_start: Some(AppStart {
                            kind: "lukewarm".to_owned(),
                            duration_ms: 10.0,
                        }),
                        ..Default::default()
                    },
                    ClientEvent {
                        time_unix_nano: t,
                        power: Some(PowerSample {
                            battery_level: 1.5,
                            ..Default::default()
                        }),
                        ..Default::default()
                    },
                    ClientEvent {
                        time_unix_nano: t,
                        crash: Some(Crash::default()),
                        session_start: Some(SessionStart {}),
                        ..Default::default()
                    },
                    ClientEvent {
                        time_unix_nano: t,
                        ..Default::default()
                    },
                ],
            },
            ClientBatch {
                context: Some(context("com.acme.wallet", "jane@example.com")),
                events: vec![
                    ClientEvent {
                        time_unix_nano: t,
                        session_start: Some(SessionStart {}),
                        ..Default::default()
                    };
                    3
                ],
            },
        ],
    };
    let mut client = ClientServiceClient::connect(harness.grpc_url())
        .await
        .unwrap();
    let response = client
        .export(with_token(request, Some(TOKEN)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.rejected_events, 7);
    assert_eq!(
        response.error_message,
        "7 events rejected: client event \"app_start\": kind \"lukewarm\" is not one of cold, warm; \
         client event \"power\": battery_level 1.5 is outside [0, 1]; client event: sets \
         session_start and crash; send one kind per event; client event: none of session_start, \
         session_end, app_start, crash, anr, stutter, network_request, power, memory, storage, \
         page_load is set; \
         batch of app \"com.acme.wallet\": user_id_hash must be a hash (16 to 128 hex digits), \
         never a raw id"
    );
    let topic = harness.config.bus.topics().client;
    let messages = harness.read(&topic, |m| !m.is_empty()).await;
    let stored = decode::<ExportClientRequest>(&messages);
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].batches[0].events.len(), 1);
    assert!(stored[0].batches[0].events[0].session_start.is_some());
    harness.stop().await;
}

vigil_testing::on_both_backends!(client_events_over_http_json_arrive_exactly,);
