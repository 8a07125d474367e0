//! An app's stability signals as its SDK sends them — sessions that crash,
//! launch crashes and a crash loop, ANRs, a 120 Hz screen's slow frames,
//! traffic, power, memory and storage — through the collector, the bus, the
//! aggregator and the store, read back exactly from the API.

use serde_json::{Value, json};
use std::time::Duration;

use vigil_testing::{Backend, number, on_both_backends};

use crate::harness::{ApiClient, Stack, now_s};

on_both_backends!(
    stability_signals_are_read_back_exactly,
    users_are_counted_within_the_sketch_bound
);

/// `signal` of the client series `name` of app `kiosk` over `range`, once
/// the aggregator has written it.
async fn value(server: &ApiClient, range: &str, name: &str, signal: &str) -> f64 {
    let path = format!(
        "/api/v1/query?kind=client&service=kiosk&name={name}&signal={signal}&step=1d&{range}"
    );
    let body = server
        .eventually(&path, Duration::from_secs(60), |body| {
            body["series"][0]["points"][0][1].is_number()
        })
        .await;
    number(&body["series"][0]["points"][0][1])
}

async fn stability_signals_are_read_back_exactly(backend: Backend) {
    let Some(stack) = Stack::start(backend).await else {
        return;
    };
    let server = stack.api().await;
    let to = now_s() * 1000;
    let from = to - 600_000;
    let at = |event: &str, body: Value| {
        let mut e = json!({ "timeUnixNano": (from + 60_000) * 1_000_000 });
        e[event] = body;
        e
    };
    // Sessions 1 and 2 are user a's, 3 user b's, 4 user c's.
    let batch = |session: u64, events: Vec<Value>| {
        let user = format!("{:016x}", [0xa, 0xa, 0xb, 0xc][session as usize - 1]);
        json!({
            "context": {"appId": "kiosk", "appVersion": "3.0", "osName": "android",
                        "sessionIdHash": format!("{session:032x}"), "userIdHash": user},
            "events": events,
        })
    };
    let crash = |launch: bool, consecutive: u32| {
        json!({"kind": "native", "exceptionType": "SIGABRT", "stackFingerprint": "boot",
               "duringLaunch": launch, "consecutiveLaunchCrashes": consecutive})
    };
    let batches = vec![
        // Four sessions; session 1 crashes twice (one crashed session),
        // session 2 once; three launches start, three crash while
        // launching, the third in a row a crash loop.
        batch(
            1,
            vec![
                at("sessionStart", json!({})),
                at("appStart", json!({"kind": "cold", "durationMs": 900.0})),
                at("crash", crash(false, 0)),
                at("crash", crash(true, 1)),
            ],
        ),
        batch(
            2,
            vec![
                at("sessionStart", json!({})),
                at("appStart", json!({"kind": "cold", "durationMs": 900.0})),
                at("crash", crash(true, 2)),
            ],
        ),
        batch(
            3,
            vec![
                at("sessionStart", json!({})),
                at("appStart", json!({"kind": "warm", "durationMs": 300.0})),
                at("crash", crash(true, 3)),
                at("anr", json!({"durationMs": 5000.0, "foreground": true})),
                at(
                    "stutter",
                    json!({"frameDurationsMs": [8.0, 9.0, 20.0, 800.0],
                                     "totalFrames": 4, "frozenFrames": 1, "refreshRateHz": 120.0}),
                ),
            ],
        ),
        batch(
            4,
            vec![
                at("sessionStart", json!({})),
                at(
                    "networkRequest",
                    json!({"host": "api.kiosk.example", "method": "POST",
                    "route": "/v1/pay", "statusCode": 200, "durationMs": 120.0,
                    "bytesSent": 1000, "bytesReceived": 6000}),
                ),
                at(
                    "networkRequest",
                    json!({"host": "api.kiosk.example", "method": "POST",
                    "route": "/v1/pay", "statusCode": 200, "durationMs": 100.0,
                    "bytesSent": 1000, "bytesReceived": 2000, "repeated": true}),
                ),
                at(
                    "power",
                    json!({"batteryLevel": 0.8, "foreground": true,
                    "intervalMs": 1_800_000.0, "batteryDrainPercent": 3.0,
                    "wakeLockMs": 60_000.0, "cpuTimeMs": 120_000.0, "gpsMs": 30_000.0,
                    "sensorMs": 6_000.0}),
                ),
                at(
                    "power",
                    json!({"batteryLevel": 0.7, "intervalMs": 3_600_000.0,
                    "batteryDrainPercent": 1.0}),
                ),
                at(
                    "memory",
                    json!({"residentBytes": 300_000_000u64,
                    "availableBytes": 500_000_000u64, "lowMemoryKill": true}),
                ),
                at(
                    "storage",
                    json!({"appDataBytes": 40_000_000u64, "cacheBytes": 9_000_000u64}),
                ),
            ],
        ),
    ];
    stack.send_client(batches).await;

    let range = format!("from={from}&to={to}");
    // Every series, read as the API reads it.
    for (name, signal, expected) in [
        ("client.sessions", "sum", 4.0),
        ("client.crashes.launch", "count", 3.0),
        ("client.crash_loops", "count", 1.0),
        ("client.anrs", "mean", 5000.0),
        ("client.frames", "sum", 4.0),
        ("client.frames.slow", "sum", 3.0),
        ("client.frames.frozen", "sum", 1.0),
        ("client.http.bytes_sent", "sum", 2000.0),
        ("client.http.bytes_received", "sum", 8000.0),
        ("client.http.repeated", "count", 1.0),
        ("client.power.drain", "max", 6.0),
        ("client.power.drain", "min", 1.0),
        ("client.power.wake_lock", "max", 120_000.0),
        ("client.power.cpu", "max", 240_000.0),
        ("client.power.gps", "max", 60_000.0),
        ("client.power.sensor", "max", 12_000.0),
        ("client.memory.available", "max", 500_000_000.0),
        ("client.memory.kills", "count", 1.0),
        ("client.storage.app_data", "max", 40_000_000.0),
        ("client.storage.cache", "max", 9_000_000.0),
    ] {
        let read = value(&server, &range, name, signal).await;
        assert_eq!(read, expected, "{signal} of {name}");
    }

    // And what client health makes of them.
    let path = format!("/api/v1/client/health?app=kiosk&{range}");
    let body = server
        .eventually(&path, Duration::from_secs(60), |body| {
            let version = &body["apps"][0]["versions"][0];
            version["crashes"] == 4 && version["low_memory_kills"] == 1
        })
        .await;
    let version = &body["apps"][0]["versions"][0];
    let expected = json!({
        "version": "3.0", "sessions": 4.0, "crashes": 4, "crashed_sessions": 3,
        "crash_free_sessions": 0.25, "users": 3, "crashed_users": 2,
        "crash_free_users": 1.0 - 2.0 / 3.0, "launch_crashes": 3, "launch_crash_rate": 0.5,
        "crash_loops": 1, "anrs": 1, "anrs_per_session": 0.25, "frames": 4.0,
        "slow_frame_rate": 0.75, "frozen_frame_rate": 0.25,
        "bytes_sent_per_session": 500.0, "bytes_received_per_session": 2000.0,
        "repeated_request_share": 0.5,
        "battery_drain_per_hour": {"foreground": 6.0, "background": 1.0},
        "low_memory_kills": 1,
    });
    for (key, value) in expected.as_object().unwrap() {
        assert_eq!(&version[key], value, "{key}: {version}");
    }
    stack.stop().await;
    server.wait().await;
}

/// 5,000 users of app fleet, one batch each as their devices send them:
/// even users start two sessions, every 25th crashes. Client health counts
/// the users (not the 7,500 sessions) and the crashed ones within the
/// sketch's 2 %, and crash-free users from them.
async fn users_are_counted_within_the_sketch_bound(backend: Backend) {
    let Some(stack) = Stack::start(backend).await else {
        return;
    };
    let server = stack.api().await;
    let to = now_s() * 1000;
    let from = to - 600_000;
    let time = (from + 60_000) * 1_000_000;
    for part in 0..10 {
        let batches = (part * 500..(part + 1) * 500)
            .map(|user: u64| {
                let mut events = vec![json!({"timeUnixNano": time, "sessionStart": {}})];
                if user.is_multiple_of(2) {
                    events.push(json!({"timeUnixNano": time + 1, "sessionStart": {}}));
                }
                if user.is_multiple_of(25) {
                    events.push(json!({"timeUnixNano": time + 2,
                        "crash": {"kind": "managed", "exceptionType": "OOM",
                                  "stackFingerprint": "oom"}}));
                }
                json!({
                    "context": {"appId": "fleet", "appVersion": "1.0", "osName": "ios",
                                "userIdHash": format!("{user:016x}")},
                    "events": events,
                })
            })
            .collect();
        stack.send_client(batches).await;
    }
    let path = format!("/api/v1/client/health?app=fleet&from={from}&to={to}");
    let body = server
        .eventually(&path, Duration::from_secs(90), |body| {
            let version = &body["apps"][0]["versions"][0];
            version["sessions"] == 7_500.0 && version["crashes"] == 200
        })
        .await;
    let version = &body["apps"][0]["versions"][0];
    let users = version["users"].as_u64().expect("users");
    let crashed = version["crashed_users"].as_u64().expect("crashed users");
    assert!(users.abs_diff(5_000) <= 100, "users {users}: {version}");
    assert!(
        crashed.abs_diff(200) <= 4,
        "crashed users {crashed}: {version}"
    );
    let crash_free = version["crash_free_users"]
        .as_f64()
        .expect("crash-free users");
    // (serde_json reads floats to within an ulp)
    assert!((crash_free - (1.0 - crashed as f64 / users as f64)).abs() < 1e-12);
    // Exactly 0.96; the bounds above keep it within 0.002.
    assert!((crash_free - 0.96).abs() <= 0.002, "{version}");
    stack.stop().await;
    server.wait().await;
}
