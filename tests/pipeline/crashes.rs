//! An app's crashes, sent as its SDK sends them, grouped by stack: through
//! the collector, the bus, the aggregator and the store, the API lists the
//! groups with exact counts and states and shows a group's crashes as sent.

use serde_json::{Value, json};
use vigil_testing::{Backend, on_both_backends};

use crate::harness::{Stack, now_s};

on_both_backends!(crash_groups_are_counted_judged_and_shown_as_sent);

const MINUTE_MS: u64 = 60_000;

/// One batch of the app `wallet`'s events, `version` on an Android
/// device `device`, in the session and for the user given.
fn batch(version: &str, device: &str, session: u64, user: u64, events: Vec<Value>) -> Value {
    json!({
        "context": {
            "appId": "wallet", "appVersion": version, "osName": "android", "osVersion": "14",
            "deviceModel": device, "sessionIdHash": format!("{session:032x}"),
            "userIdHash": format!("{user:032x}"),
        },
        "events": events,
    })
}

fn at(time_ms: u64, event: &str, body: Value) -> Value {
    let mut event_json = json!({ "timeUnixNano": time_ms * 1_000_000 });
    event_json[event] = body;
    event_json
}

/// A native crash with the app's frame at `line`: grouped by its frames.
fn segv(line: u32) -> Value {
    json!({
        "kind": "native", "exceptionType": "SIGSEGV", "message": format!("at line {line}"),
        "thread": "main",
        "frames": [
            {"function": "memcpy", "module": "libc.so", "address": "0x7f00"},
            {"function": "Ledger::append", "module": "libwallet.so", "file": "ledger.cc",
             "line": line, "inApp": true},
        ],
        "breadcrumbs": [
            {"timeUnixNano": 5_000_000, "category": "ui.tap", "message": "Pay"},
        ],
    })
}

async fn crash_groups_are_counted_judged_and_shown_as_sent(backend: Backend) {
    let Some(stack) = Stack::start(backend).await else {
        return;
    };
    let server = stack.api().await;
    let to = now_s() * 1000;
    let from = to - 10 * MINUTE_MS;
    let npe = |foreground: bool| {
        json!({"kind": "managed", "exceptionType": "java.lang.NullPointerException",
               "message": "order was null", "foreground": foreground,
               "stackFingerprint": "checkout-npe"})
    };
    let session = |time_ms: u64| at(time_ms, "sessionStart", json!({}));
    let batches = vec![
        // 1.0, before the range: the NPE group's first crash.
        batch(
            "1.0",
            "Pixel 8",
            1,
            1,
            vec![
                session(from - 5 * MINUTE_MS),
                at(from - 5 * MINUTE_MS, "crash", npe(true)),
            ],
        ),
        // 1.1 runs without it: sessions only.
        batch("1.1", "Pixel 8", 2, 2, vec![session(from + MINUTE_MS)]),
        // 1.2: the NPE group is back (regressed), the SIGSEGV group new.
        batch(
            "1.2",
            "Pixel 8",
            5,
            5,
            vec![
                session(from + 2 * MINUTE_MS),
                at(from + 2 * MINUTE_MS, "crash", npe(true)),
            ],
        ),
        batch(
            "1.2",
            "SM-S918B",
            6,
            5,
            vec![at(from + 3 * MINUTE_MS, "crash", npe(true))],
        ),
        batch(
            "1.2",
            "Pixel 8",
            7,
            7,
            vec![at(from + 4 * MINUTE_MS, "crash", segv(42))],
        ),
        batch(
            "1.2",
            "SM-S918B",
            8,
            8,
            vec![
                at(from + 5 * MINUTE_MS, "crash", segv(42)),
                at(from + 6 * MINUTE_MS, "crash", segv(43)),
            ],
        ),
        // 1.3: an out-of-memory crash in the background that recurred.
        batch(
            "1.3",
            "Pixel 8",
            9,
            9,
            vec![at(
                from + 7 * MINUTE_MS,
                "crash",
                json!({"kind": "managed", "exceptionType": "java.lang.OutOfMemoryError",
                       "foreground": false, "recurredOnNextLaunch": true,
                       "stackFingerprint": "login-oom"}),
            )],
        ),
    ];
    stack.send_client(batches).await;

    let range = format!("app=wallet&from={from}&to={to}");
    let minute = |n: u64| (from + n * MINUTE_MS) as f64;
    let group = |fingerprint: &str, [events, sessions, users]: [u64; 3]| {
        json!({"fingerprint": fingerprint, "events": events, "sessions": sessions,
               "users": users})
    };
    // Until the aggregator has written every crash and the catalogue.
    let body = server
        .eventually(
            &format!("/api/v1/crashes?{range}"),
            std::time::Duration::from_secs(60),
            |body| {
                let states: Vec<&str> = body["groups"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|g| g["state"].as_str())
                    .collect();
                body["crashes"] == 6 && states == ["new", "regressed", "new"]
            },
        )
        .await;
    let segv_group = body["groups"][0]["fingerprint"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(segv_group.len(), 16, "{segv_group}");
    assert_eq!(
        body,
        json!({
            "app": "wallet", "from": from as f64, "to": to as f64, "crashes": 6,
            "groups": [
                {"fingerprint": segv_group, "exception_type": "SIGSEGV",
                 "message": "at line 43", "state": "new", "events": 3, "sessions": 2,
                 "users": 2, "share": 0.5, "previous_events": 0, "change": null,
                 "first_seen": minute(4), "last_seen": minute(6),
                 "first_version": "1.2", "last_version": "1.2"},
                {"fingerprint": "checkout-npe",
                 "exception_type": "java.lang.NullPointerException",
                 "message": "order was null", "state": "regressed", "events": 2,
                 "sessions": 2, "users": 1, "share": 2.0 / 6.0, "previous_events": 1,
                 "change": 1.0, "first_seen": (from - 5 * MINUTE_MS) as f64,
                 "last_seen": minute(3), "first_version": "1.0", "last_version": "1.2"},
                {"fingerprint": "login-oom", "exception_type": "java.lang.OutOfMemoryError",
                 "message": "", "state": "new", "events": 1, "sessions": 1, "users": 1,
                 "share": 1.0 / 6.0, "previous_events": 0, "change": null,
                 "first_seen": minute(7), "last_seen": minute(7),
                 "first_version": "1.3", "last_version": "1.3"},
            ],
        })
    );
    let fingerprints = |filter: &str| {
        let server = &server;
        let path = format!("/api/v1/crashes?{range}&{filter}");
        async move {
            let body = server.ok(&path).await;
            body["groups"]
                .as_array()
                .unwrap()
                .iter()
                .map(|g| {
                    group(
                        g["fingerprint"].as_str().unwrap(),
                        [&g["events"], &g["sessions"], &g["users"]].map(|n| n.as_u64().unwrap()),
                    )
                })
                .collect::<Vec<Value>>()
        }
    };
    assert_eq!(
        fingerprints("state=regressed").await,
        [group("checkout-npe", [2, 2, 1])]
    );
    assert_eq!(
        fingerprints("foreground=false&recurred=true").await,
        [group("login-oom", [1, 1, 1])]
    );
    assert_eq!(
        fingerprints("kind=native&device=SM-S918B").await,
        [group(&segv_group, [2, 1, 1])]
    );
    assert_eq!(fingerprints("version=1.1").await, Vec::<Value>::new());
    assert_eq!(
        fingerprints("limit=1").await,
        [group(&segv_group, [3, 2, 2])]
    );

    let detail = server
        .ok(&format!("/api/v1/crashes/{segv_group}?{range}&samples=2"))
        .await;
    assert_eq!(detail["group"]["events"], 3);
    assert_eq!(detail["group"]["share"], 1.0);
    let frames = |line: u32| {
        json!([
            {"function": "memcpy", "module": "libc.so", "file": "", "line": 0,
             "inApp": false, "address": "0x7f00"},
            {"function": "Ledger::append", "module": "libwallet.so", "file": "ledger.cc",
             "line": line, "inApp": true, "address": ""},
        ])
    };
    let sample = |minutes: u64, line: u32| {
        json!({
            "time": minute(minutes), "exception_type": "SIGSEGV",
            "message": format!("at line {line}"), "thread": "main",
            "frames": frames(line),
            "breadcrumbs": [{"timeUnixNano": 5_000_000, "category": "ui.tap", "message": "Pay"}],
            "version": "1.2", "os": "android", "os_version": "14", "device": "SM-S918B",
            "kind": "native", "foreground": false, "recurred": false,
            "attributes": {
                "session.id_hash": format!("{:032x}", 8),
                "user.id_hash": format!("{:032x}", 8),
            },
        })
    };
    assert_eq!(detail["samples"], json!([sample(6, 43), sample(5, 42)]));
    let share = |value: &str, events: u64| json!({"value": value, "events": events, "share": events as f64 / 3.0});
    assert_eq!(detail["versions"], json!([share("1.2", 3)]));
    assert_eq!(
        detail["devices"],
        json!([share("SM-S918B", 2), share("Pixel 8", 1)])
    );
    assert_eq!(detail["os"], json!([share("android", 3)]));
    assert_eq!(detail["os_versions"], json!([share("14", 3)]));

    let (status, missing) = server
        .get(&format!("/api/v1/crashes/no-such-group?{range}"))
        .await;
    assert_eq!(status, 404, "{missing}");
    let (status, bad) = server
        .get(&format!("/api/v1/crashes?{range}&state=resolved"))
        .await;
    assert_eq!(status, 400, "{bad}");
    assert_eq!(bad["error"]["parameter"], "state", "{bad}");
    stack.stop().await;
    server.wait().await;
}
