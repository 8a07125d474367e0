//! Client telemetry (`vigil.client.v1`) to observations: per app, series of
//! kind [`Kind::Client`] named after what they measure, with the app
//! version, OS, device model, unit, cohort and region as dimensions.
//!
//! | series | one value per | value | error |
//! |---|---|---|---|
//! | `client.sessions` | session start | 1 | — |
//! | `client.session.duration` | session end | duration, ms | — |
//! | `client.app_start` (`start.kind` cold/warm) | app start | duration, ms | — |
//! | `client.crashes` (`crash.kind`, `exception.type`, `crash.foreground`, `crash.recurred`) | crash | 1 | always |
//! | `client.frames`, `client.frames.slow`, `client.frames.frozen` | stutter report | frames | — |
//! | `client.frame.duration` | frame duration given | duration, ms | over 16 ms |
//! | `client.http` (`http.host`, `http.route`, `http.request.method`, `http.response.status_code`) | request | duration, ms | no response, or 5xx |
//! | `client.battery` (`power.charging`, `power.thermal_state`) | power sample | level, 0–1 | — |
//! | `client.memory.resident` | memory sample | bytes | low-memory warning |
//! | `client.page.<timing>` (`page.route`) | page load | ms (CLS unitless) | — |
//!
//! Rates follow from sums: crashes per session is the count of
//! `client.crashes` over the sum of `client.sessions`, the slow-frame rate
//! the sum of `client.frames.slow` over the sum of `client.frames`. Crash
//! events themselves are kept raw, with their stack fingerprint.

use vigil_domain::model::{Fnv, Kind, SeriesKey};
use vigil_domain::tenant::TenantId;
use vigil_proto::client::v1::{ClientContext, ClientEvent, Crash, ExportClientRequest};
use vigil_store::{EventKind, EventRecord};

use crate::points::{Amount, DecodeError, Observation, decode, seconds};

/// A frame slower than this, in ms, is slow (one missed 60 Hz vsync).
const SLOW_FRAME_MS: f64 = 16.0;

/// Observations and crash events of one client telemetry message.
pub struct Client {
    pub observations: Vec<Observation>,
    pub crashes: Vec<EventRecord>,
}

/// Reads an `ExportClientRequest`. `event_id` numbers the message's events
/// so that writing them again (a replay) keeps one copy.
pub fn client(
    tenant: &TenantId,
    payload: &[u8],
    event_id: impl Fn(usize) -> u64,
) -> Result<Client, DecodeError> {
    let request: ExportClientRequest = decode(payload, "vigil.client.v1.ExportClientRequest")?;
    let mut out = Client {
        observations: Vec::new(),
        crashes: Vec::new(),
    };
    let mut index = 0;
    for batch in request.batches {
        let context = batch.context.unwrap_or_default();
        let series = Series::of(tenant, &context);
        for event in &batch.events {
            let time_s = seconds(event.time_unix_nano);
            let mut push = |series: SeriesKey, value: f64, error: bool| {
                out.observations.push(Observation {
                    series,
                    time_s,
                    amount: Amount::Point { value, error },
                });
            };
            observe(&series, event, &mut push);
            if let Some(crash) = &event.crash {
                out.crashes.push(EventRecord {
                    tenant: tenant.clone(),
                    kind: EventKind::Crash,
                    id: event_id(index),
                    time_ns: event.time_unix_nano,
                    service: context.app_id.clone(),
                    name: crash.exception_type.clone(),
                    body: crash.message.clone(),
                    trace_id: String::new(),
                    span_id: String::new(),
                    fingerprint: fingerprint(crash),
                    attributes: crash_attributes(&series, &context, crash),
                });
            }
            index += 1;
        }
    }
    Ok(out)
}

/// The series of one app and context.
struct Series<'a> {
    tenant: &'a TenantId,
    app: &'a str,
    labels: Vec<(String, String)>,
}

impl<'a> Series<'a> {
    fn of(tenant: &'a TenantId, context: &'a ClientContext) -> Self {
        let labels = [
            ("app.version", &context.app_version),
            ("os.name", &context.os_name),
            ("device.model.identifier", &context.device_model),
            ("vigil.unit", &context.unit),
            ("vigil.cohort", &context.cohort),
            ("cloud.region", &context.region),
        ]
        .into_iter()
        .filter(|(_, value)| !value.is_empty())
        .map(|(key, value)| (key.to_owned(), value.clone()))
        .collect();
        Series {
            tenant,
            app: &context.app_id,
            labels,
        }
    }

    fn key(&self, name: &str, extra: &[(&str, String)]) -> SeriesKey {
        let mut labels = self.labels.clone();
        labels.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
        SeriesKey::new(self.tenant.clone(), Kind::Client, self.app, name, labels)
    }
}

/// Pushes the observations of one event.
fn observe(series: &Series, event: &ClientEvent, push: &mut impl FnMut(SeriesKey, f64, bool)) {
    if event.session_start.is_some() {
        push(series.key("client.sessions", &[]), 1.0, false);
    }
    if let Some(end) = &event.session_end {
        push(
            series.key("client.session.duration", &[]),
            end.duration_ms,
            false,
        );
    }
    if let Some(start) = &event.app_start {
        let kind = [("start.kind", start.kind.clone())];
        push(
            series.key("client.app_start", &kind),
            start.duration_ms,
            false,
        );
    }
    if let Some(crash) = &event.crash {
        push(
            series.key("client.crashes", &crash_labels(crash)),
            1.0,
            true,
        );
    }
    if let Some(stutter) = &event.stutter {
        let given = stutter.frame_durations_ms.len() as u64;
        let slow_given = stutter
            .frame_durations_ms
            .iter()
            .filter(|&&ms| ms > SLOW_FRAME_MS)
            .count() as u64;
        let total = stutter.total_frames.max(given);
        let slow = stutter.slow_frames.max(slow_given);
        push(series.key("client.frames", &[]), total as f64, false);
        push(series.key("client.frames.slow", &[]), slow as f64, false);
        push(
            series.key("client.frames.frozen", &[]),
            stutter.frozen_frames as f64,
            false,
        );
        let frame = series.key("client.frame.duration", &[]);
        for &ms in &stutter.frame_durations_ms {
            push(frame.clone(), ms, ms > SLOW_FRAME_MS);
        }
    }
    if let Some(request) = &event.network_request {
        let labels = [
            ("http.host", request.host.clone()),
            ("http.route", request.route.clone()),
            ("http.request.method", request.method.clone()),
            ("http.response.status_code", request.status_code.to_string()),
        ];
        let failed = request.status_code == 0 || request.status_code >= 500;
        push(
            series.key("client.http", &labels),
            request.duration_ms,
            failed || !request.error.is_empty(),
        );
    }
    if let Some(power) = &event.power {
        let labels = [
            ("power.charging", power.charging.to_string()),
            ("power.thermal_state", power.thermal_state.clone()),
        ];
        push(
            series.key("client.battery", &labels),
            power.battery_level,
            false,
        );
    }
    if let Some(memory) = &event.memory {
        push(
            series.key("client.memory.resident", &[]),
            memory.resident_bytes as f64,
            memory.low_memory_warning,
        );
    }
    if let Some(page) = &event.page_load {
        let route = [("page.route", page.route.clone())];
        let timings = [
            ("client.page.load", page.load_ms),
            ("client.page.ttfb", page.ttfb_ms),
            ("client.page.fcp", page.first_contentful_paint_ms),
            ("client.page.dom_content_loaded", page.dom_content_loaded_ms),
            ("client.page.lcp", page.largest_contentful_paint_ms),
            ("client.page.inp", page.interaction_to_next_paint_ms),
            ("client.page.cls", page.cumulative_layout_shift),
        ];
        // Zero is "not measured" in proto3; the load time is always kept.
        for (name, value) in timings {
            if value != 0.0 || name == "client.page.load" {
                push(series.key(name, &route), value, false);
            }
        }
    }
}

/// The dimensions of a crash, on its series and its event.
fn crash_labels(crash: &Crash) -> [(&'static str, String); 4] {
    [
        ("crash.kind", crash.kind.clone()),
        ("exception.type", crash.exception_type.clone()),
        ("crash.foreground", crash.foreground.to_string()),
        ("crash.recurred", crash.recurred_on_next_launch.to_string()),
    ]
}

/// The group of a crash: its stack fingerprint as sent or, without one,
/// 16 hex digits of a hash of its exception type and its frames' modules
/// and functions — the app's own frames when any is marked, else all —
/// or, without frames, of its exception type and message. Lines and
/// addresses, which move between builds, are left out.
fn fingerprint(crash: &Crash) -> String {
    if !crash.stack_fingerprint.is_empty() {
        return crash.stack_fingerprint.clone();
    }
    let mut hash = Fnv::default();
    hash.write(crash.exception_type.as_bytes());
    let in_app = crash.frames.iter().any(|frame| frame.in_app);
    let frames: Vec<_> = crash
        .frames
        .iter()
        .filter(|frame| frame.in_app || !in_app)
        .collect();
    if frames.is_empty() {
        hash.write(b"\0message\0");
        hash.write(crash.message.as_bytes());
    }
    for frame in frames {
        for part in [&frame.module, &frame.function] {
            hash.write(b"\0");
            hash.write(part.as_bytes());
        }
    }
    format!("{:016x}", hash.finish())
}

/// What a crash event keeps: its series' labels, the crash's own, the
/// context too fine-grained for a series (OS version, network, user and
/// session hashes), the thread, and its frames and breadcrumbs as JSON in
/// the client's form (`crash.frames`, `crash.breadcrumbs`).
fn crash_attributes(
    series: &Series,
    context: &ClientContext,
    crash: &Crash,
) -> Vec<(String, String)> {
    let json = |empty: bool, value: serde_json::Result<String>| {
        if empty {
            String::new()
        } else {
            value.unwrap_or_default()
        }
    };
    let details = [
        ("os.version", context.os_version.clone()),
        ("network.type", context.network_type.clone()),
        ("user.id_hash", context.user_id_hash.clone()),
        ("session.id_hash", context.session_id_hash.clone()),
        ("thread.name", crash.thread.clone()),
        (
            "crash.frames",
            json(
                crash.frames.is_empty(),
                serde_json::to_string(&crash.frames),
            ),
        ),
        (
            "crash.breadcrumbs",
            json(
                crash.breadcrumbs.is_empty(),
                serde_json::to_string(&crash.breadcrumbs),
            ),
        ),
    ];
    let mut attributes = series.labels.clone();
    attributes.extend(
        details
            .into_iter()
            .chain(crash_labels(crash))
            .filter(|(_, value)| !value.is_empty())
            .map(|(key, value)| (key.to_owned(), value)),
    );
    attributes
}

#[cfg(test)]
mod tests {
    use prost::Message as _;
    use vigil_proto::client::v1::{
        Breadcrumb, ClientBatch, Crash, SessionStart, StackFrame, Stutter,
    };

    use super::*;

    fn context() -> ClientContext {
        ClientContext {
            app_id: "wallet".into(),
            app_version: "2.1.0".into(),
            os_name: "android".into(),
            unit: "u1".into(),
            cohort: "canary".into(),
            ..Default::default()
        }
    }

    #[test]
    fn events_become_series_and_crashes_are_kept() {
        let tenant = TenantId::parse("acme").expect("tenant");
        let events = vec![
            ClientEvent {
                time_unix_nano: 20_000_000_000,
                session_start: Some(SessionStart {}),
                ..Default::default()
            },
            ClientEvent {
                time_unix_nano: 21_000_000_000,
                crash: Some(Crash {
                    kind: "native".into(),
                    exception_type: "SIGSEGV".into(),
                    stack_fingerprint: "f00d".into(),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ClientEvent {
                time_unix_nano: 22_000_000_000,
                stutter: Some(Stutter {
                    frame_durations_ms: vec![8.0, 20.0, 800.0],
                    total_frames: 0,
                    slow_frames: 0,
                    frozen_frames: 1,
                }),
                ..Default::default()
            },
        ];
        let request = ExportClientRequest {
            batches: vec![ClientBatch {
                context: Some(context()),
                events,
            }],
        };
        let out = client(&tenant, &request.encode_to_vec(), |i| 100 + i as u64).expect("decodes");
        let seen: Vec<(&str, f64, bool)> = out
            .observations
            .iter()
            .map(|o| match o.amount {
                Amount::Point { value, error } => (o.series.name.as_str(), value, error),
                Amount::Many(_) => panic!("client events are single values"),
            })
            .collect();
        assert_eq!(
            seen,
            vec![
                ("client.sessions", 1.0, false),
                ("client.crashes", 1.0, true),
                ("client.frames", 3.0, false),
                ("client.frames.slow", 2.0, false),
                ("client.frames.frozen", 1.0, false),
                ("client.frame.duration", 8.0, false),
                ("client.frame.duration", 20.0, true),
                ("client.frame.duration", 800.0, true),
            ]
        );
        let crash = &out.observations[1].series;
        assert_eq!(crash.kind, Kind::Client);
        assert_eq!(crash.service, "wallet");
        assert_eq!(crash.label("exception.type"), Some("SIGSEGV"));
        assert_eq!(crash.label("vigil.cohort"), Some("canary"));
        assert_eq!(crash.label("device.model.identifier"), None);
        assert_eq!(out.observations[1].time_s, 21);
        assert_eq!(out.crashes.len(), 1);
        assert_eq!(out.crashes[0].id, 101);
        assert_eq!(out.crashes[0].fingerprint, "f00d");
        assert_eq!(out.crashes[0].service, "wallet");
    }

    fn frame(module: &str, function: &str, line: u32, in_app: bool) -> StackFrame {
        StackFrame {
            module: module.into(),
            function: function.into(),
            line,
            in_app,
            ..Default::default()
        }
    }

    /// Crashes without a fingerprint are grouped by type and in-app frames,
    /// whatever their lines and library frames; by message without frames.
    #[test]
    fn crashes_without_a_fingerprint_are_grouped_by_their_own_frames() {
        let crash = |frames: Vec<StackFrame>, message: &str| Crash {
            exception_type: "IllegalStateException".into(),
            message: message.into(),
            frames,
            ..Default::default()
        };
        let pay = frame("com.acme.wallet", "CheckoutViewModel.pay", 42, true);
        let libc = frame("libc.so", "abort", 7, false);
        let one = crash(vec![libc.clone(), pay.clone()], "order 1");
        let moved = crash(
            vec![frame("libart.so", "throw", 1, false), {
                let mut p = pay.clone();
                p.line = 43;
                p
            }],
            "order 2",
        );
        assert_eq!(fingerprint(&one), fingerprint(&moved));
        assert_eq!(fingerprint(&one).len(), 16);
        let other = crash(
            vec![frame(
                "com.acme.wallet",
                "CheckoutViewModel.refund",
                42,
                true,
            )],
            "order 1",
        );
        assert_ne!(fingerprint(&one), fingerprint(&other));
        // Without in-app frames, all frames count.
        let native = crash(vec![libc.clone()], "x");
        assert_ne!(fingerprint(&native), fingerprint(&crash(vec![], "x")));
        assert_eq!(
            fingerprint(&crash(vec![], "x")),
            fingerprint(&crash(vec![], "x"))
        );
        assert_ne!(
            fingerprint(&crash(vec![], "x")),
            fingerprint(&crash(vec![], "y"))
        );
        let mut given = one.clone();
        given.stack_fingerprint = "f00d".into();
        assert_eq!(fingerprint(&given), "f00d");
        // Frames and breadcrumbs are kept in the client's JSON form.
        let context = context();
        let tenant = TenantId::parse("acme").expect("tenant");
        let series = Series::of(&tenant, &context);
        let mut kept = one.clone();
        kept.thread = "main".into();
        kept.breadcrumbs = vec![Breadcrumb {
            time_unix_nano: 5,
            category: "ui.tap".into(),
            message: "Pay".into(),
        }];
        let attributes = crash_attributes(&series, &context, &kept);
        let get = |key: &str| {
            attributes
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("thread.name"), Some("main"));
        assert_eq!(
            get("crash.breadcrumbs"),
            Some(r#"[{"timeUnixNano":5,"category":"ui.tap","message":"Pay"}]"#)
        );
        assert_eq!(
            get("crash.frames"),
            Some(
                r#"[{"function":"abort","module":"libc.so","file":"","line":7,"inApp":false,"address":""},{"function":"CheckoutViewModel.pay","module":"com.acme.wallet","file":"","line":42,"inApp":true,"address":""}]"#
            )
        );
        assert_eq!(get("network.type"), None);
    }
}
