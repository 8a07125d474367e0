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
//! | `client.crashes.launch` | crash while launching | 1 | always |
//! | `client.crash_loops` | the Nth launch crash in a row on a device (`aggregator.crash_loop_launches`) | 1 | always |
//! | `client.anrs` (`anr.foreground`) | ANR | blocked, ms | always |
//! | `client.frames`, `client.frames.slow`, `client.frames.frozen` | stutter report | frames | — |
//! | `client.frame.duration` | frame duration given | duration, ms | over the frame budget (1000 / refresh rate) |
//! | `client.http` (`http.host`, `http.route`, `http.request.method`, `http.response.status_code`) | request | duration, ms | no response, or 5xx |
//! | `client.http.bytes_sent`, `client.http.bytes_received` (as `client.http`) | request | bytes | — |
//! | `client.http.repeated` (as `client.http`) | repeated request | 1 | — |
//! | `client.battery` (`power.charging`, `power.thermal_state`) | power sample | level, 0–1 | — |
//! | `client.power.drain` (`power.foreground`) | power sample with usage | battery, % per hour | — |
//! | `client.power.wake_lock`, `.cpu`, `.gps`, `.sensor` (`power.foreground`) | power sample with usage | ms per hour | — |
//! | `client.memory.resident`, `client.memory.available` | memory sample | bytes | low-memory warning (resident) |
//! | `client.memory.kills` | low-memory kill | 1 | always |
//! | `client.storage.app_data`, `client.storage.cache` | storage sample | bytes | — |
//! | `client.page.<timing>` (`page.route`) | page load | ms (CLS unitless) | — |
//!
//! Rates follow from sums: crashes per session is the count of
//! `client.crashes` over the sum of `client.sessions`, the slow-frame rate
//! the sum of `client.frames.slow` over the sum of `client.frames`, bytes
//! per session the sum of `client.http.bytes_sent` over the sessions, the
//! share of repeated requests the count of `client.http.repeated` over
//! that of `client.http`. Power usage is per hour of the interval it was
//! measured over, so its mean is the drain per hour of foreground (or
//! background) use. Crash events themselves are kept raw, with their stack
//! fingerprint.
//!
//! The rollups of sessions, crashes, launch crashes, crash loops and ANRs
//! also count the distinct users (the context's `user_id_hash`) in a
//! mergeable sketch (`vigil_domain::distinct`): the users of an app
//! version are those of its sessions and crashes merged, and crash-free
//! users one less the share of them in the crashes' sketch.

use vigil_domain::model::{Fnv, Kind, Rollup, SeriesKey};
use vigil_domain::tenant::TenantId;
use vigil_proto::client::v1::{ClientContext, ClientEvent, Crash, ExportClientRequest};
use vigil_store::{EventKind, EventRecord};

use crate::points::{Amount, DecodeError, Observation, decode, seconds};

/// The refresh rate of a display that reports none.
const DEFAULT_REFRESH_HZ: f64 = 60.0;

const MS_PER_HOUR: f64 = 3_600_000.0;

/// Observations and crash events of one client telemetry message.
pub struct Client {
    pub observations: Vec<Observation>,
    pub crashes: Vec<EventRecord>,
}

/// Reads an `ExportClientRequest`. `event_id` numbers the message's events
/// so that writing them again (a replay) keeps one copy; a device's
/// `crash_loop_launches`th launch crash in a row is a crash loop.
pub fn client(
    tenant: &TenantId,
    payload: &[u8],
    event_id: impl Fn(usize) -> u64,
    crash_loop_launches: u32,
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
            let mut points = Points {
                observations: &mut out.observations,
                time_s: seconds(event.time_unix_nano),
                user: &context.user_id_hash,
            };
            observe(&series, event, crash_loop_launches, &mut points);
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

/// Where one event's observations go: its time, and the user its context
/// names, counted in the rollups of the series that count users.
struct Points<'a> {
    observations: &'a mut Vec<Observation>,
    time_s: u64,
    /// The context's user hash; empty: none.
    user: &'a str,
}

impl Points<'_> {
    fn push(&mut self, series: SeriesKey, value: f64, error: bool) {
        self.observations.push(Observation::new(
            series,
            self.time_s,
            Amount::Point { value, error },
        ));
    }

    /// A point whose rollups also count its user, so that the distinct
    /// users of sessions, crashes, launch crashes, crash loops and ANRs can
    /// be read over any range, version or region.
    fn of_user(&mut self, series: SeriesKey, value: f64, error: bool) {
        let mut rollup = Rollup::default();
        // A value the windows refuse goes as a point, refused and counted
        // as every other.
        if self.user.is_empty() || rollup.record(value, error).is_err() {
            return self.push(series, value, error);
        }
        rollup.users.insert(self.user);
        self.observations.push(Observation::new(
            series,
            self.time_s,
            Amount::Many(Box::new(rollup)),
        ));
    }
}

/// Pushes the observations of one event.
fn observe(series: &Series, event: &ClientEvent, crash_loop_launches: u32, out: &mut Points) {
    if event.session_start.is_some() {
        out.of_user(series.key("client.sessions", &[]), 1.0, false);
    }
    if let Some(end) = &event.session_end {
        out.push(
            series.key("client.session.duration", &[]),
            end.duration_ms,
            false,
        );
    }
    if let Some(start) = &event.app_start {
        let kind = [("start.kind", start.kind.clone())];
        out.push(
            series.key("client.app_start", &kind),
            start.duration_ms,
            false,
        );
    }
    if let Some(crash) = &event.crash {
        out.of_user(
            series.key("client.crashes", &crash_labels(crash)),
            1.0,
            true,
        );
        if crash.during_launch {
            out.of_user(series.key("client.crashes.launch", &[]), 1.0, true);
        }
        if crash.consecutive_launch_crashes == crash_loop_launches {
            out.of_user(series.key("client.crash_loops", &[]), 1.0, true);
        }
    }
    if let Some(anr) = &event.anr {
        let foreground = [("anr.foreground", anr.foreground.to_string())];
        out.of_user(
            series.key("client.anrs", &foreground),
            anr.duration_ms,
            true,
        );
    }
    if let Some(stutter) = &event.stutter {
        let refresh_hz = if stutter.refresh_rate_hz > 0.0 {
            stutter.refresh_rate_hz
        } else {
            DEFAULT_REFRESH_HZ
        };
        let budget_ms = 1000.0 / refresh_hz;
        let given = stutter.frame_durations_ms.len() as u64;
        let slow_given = stutter
            .frame_durations_ms
            .iter()
            .filter(|&&ms| ms > budget_ms)
            .count() as u64;
        let total = stutter.total_frames.max(given);
        let slow = stutter.slow_frames.max(slow_given);
        out.push(series.key("client.frames", &[]), total as f64, false);
        out.push(series.key("client.frames.slow", &[]), slow as f64, false);
        out.push(
            series.key("client.frames.frozen", &[]),
            stutter.frozen_frames as f64,
            false,
        );
        let frame = series.key("client.frame.duration", &[]);
        for &ms in &stutter.frame_durations_ms {
            out.push(frame.clone(), ms, ms > budget_ms);
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
        out.push(
            series.key("client.http", &labels),
            request.duration_ms,
            failed || !request.error.is_empty(),
        );
        for (name, bytes) in [
            ("client.http.bytes_sent", request.bytes_sent),
            ("client.http.bytes_received", request.bytes_received),
        ] {
            out.push(series.key(name, &labels), bytes as f64, false);
        }
        if request.repeated {
            out.push(series.key("client.http.repeated", &labels), 1.0, false);
        }
    }
    if let Some(power) = &event.power {
        let labels = [
            ("power.charging", power.charging.to_string()),
            ("power.thermal_state", power.thermal_state.clone()),
        ];
        out.push(
            series.key("client.battery", &labels),
            power.battery_level,
            false,
        );
        if power.interval_ms > 0.0 {
            let hours = power.interval_ms / MS_PER_HOUR;
            let foreground = [("power.foreground", power.foreground.to_string())];
            for (name, used) in [
                ("client.power.drain", power.battery_drain_percent),
                ("client.power.wake_lock", power.wake_lock_ms),
                ("client.power.cpu", power.cpu_time_ms),
                ("client.power.gps", power.gps_ms),
                ("client.power.sensor", power.sensor_ms),
            ] {
                out.push(series.key(name, &foreground), used / hours, false);
            }
        }
    }
    if let Some(memory) = &event.memory {
        out.push(
            series.key("client.memory.resident", &[]),
            memory.resident_bytes as f64,
            memory.low_memory_warning,
        );
        out.push(
            series.key("client.memory.available", &[]),
            memory.available_bytes as f64,
            false,
        );
        if memory.low_memory_kill {
            out.push(series.key("client.memory.kills", &[]), 1.0, true);
        }
    }
    if let Some(storage) = &event.storage {
        for (name, bytes) in [
            ("client.storage.app_data", storage.app_data_bytes),
            ("client.storage.cache", storage.cache_bytes),
        ] {
            out.push(series.key(name, &[]), bytes as f64, false);
        }
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
                out.push(series.key(name, &route), value, false);
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
        Anr, Breadcrumb, ClientBatch, Crash, MemorySample, NetworkRequest, PowerSample,
        SessionStart, StackFrame, StorageSample, Stutter,
    };

    use super::*;

    fn context() -> ClientContext {
        ClientContext {
            app_id: "wallet".into(),
            app_version: "2.1.0".into(),
            os_name: "android".into(),
            unit: "u1".into(),
            cohort: "canary".into(),
            user_id_hash: "user-1".into(),
            ..Default::default()
        }
    }

    /// An observation as (series, value, error, users counted).
    fn seen(o: &Observation) -> (&str, f64, bool, u64) {
        let name = o.series.name.as_str();
        match &o.amount {
            Amount::Point { value, error } => (name, *value, *error, 0),
            Amount::Many(rollup) => {
                assert_eq!(rollup.values.count(), 1, "{name}: one point");
                (
                    name,
                    rollup.values.sum(),
                    rollup.errors == 1,
                    rollup.users.count(),
                )
            }
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
                    refresh_rate_hz: 0.0,
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
        let out =
            client(&tenant, &request.encode_to_vec(), |i| 100 + i as u64, 3).expect("decodes");
        let seen: Vec<(&str, f64, bool, u64)> = out.observations.iter().map(seen).collect();
        assert_eq!(
            seen,
            vec![
                ("client.sessions", 1.0, false, 1),
                ("client.crashes", 1.0, true, 1),
                ("client.frames", 3.0, false, 0),
                ("client.frames.slow", 2.0, false, 0),
                ("client.frames.frozen", 1.0, false, 0),
                ("client.frame.duration", 8.0, false, 0),
                ("client.frame.duration", 20.0, true, 0),
                ("client.frame.duration", 800.0, true, 0),
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

    /// Launch crashes, crash loops, ANRs, the frame budget of a 120 Hz
    /// screen, traffic, power per hour, memory kills and storage.
    #[test]
    fn stability_signals_become_series() {
        let tenant = TenantId::parse("acme").expect("tenant");
        let at = |event: ClientEvent| ClientEvent {
            time_unix_nano: 20_000_000_000,
            ..event
        };
        let launch_crash = |consecutive| {
            at(ClientEvent {
                crash: Some(Crash {
                    kind: "native".into(),
                    exception_type: "SIGABRT".into(),
                    during_launch: true,
                    consecutive_launch_crashes: consecutive,
                    ..Default::default()
                }),
                ..Default::default()
            })
        };
        let events = vec![
            launch_crash(2),
            launch_crash(3),
            launch_crash(4),
            at(ClientEvent {
                anr: Some(Anr {
                    duration_ms: 5_000.0,
                    foreground: true,
                }),
                ..Default::default()
            }),
            at(ClientEvent {
                stutter: Some(Stutter {
                    frame_durations_ms: vec![8.0, 9.0, 20.0],
                    refresh_rate_hz: 120.0,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            at(ClientEvent {
                network_request: Some(NetworkRequest {
                    host: "api.acme.com".into(),
                    method: "GET".into(),
                    status_code: 200,
                    bytes_sent: 300,
                    bytes_received: 4_000,
                    repeated: true,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            at(ClientEvent {
                power: Some(PowerSample {
                    battery_level: 0.5,
                    interval_ms: 1_800_000.0,
                    battery_drain_percent: 2.0,
                    wake_lock_ms: 60_000.0,
                    cpu_time_ms: 90_000.0,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            at(ClientEvent {
                memory: Some(MemorySample {
                    resident_bytes: 100,
                    available_bytes: 900,
                    low_memory_kill: true,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            at(ClientEvent {
                storage: Some(StorageSample {
                    app_data_bytes: 5_000,
                    cache_bytes: 700,
                }),
                ..Default::default()
            }),
        ];
        let request = ExportClientRequest {
            batches: vec![ClientBatch {
                context: Some(context()),
                events,
            }],
        };
        let out = client(&tenant, &request.encode_to_vec(), |i| i as u64, 3).expect("decodes");
        let seen: Vec<(&str, f64, bool, u64)> = out
            .observations
            .iter()
            .filter(|o| o.series.name != "client.crashes")
            .map(seen)
            .collect();
        assert_eq!(
            seen,
            vec![
                ("client.crashes.launch", 1.0, true, 1),
                ("client.crashes.launch", 1.0, true, 1),
                ("client.crash_loops", 1.0, true, 1),
                ("client.crashes.launch", 1.0, true, 1),
                ("client.anrs", 5_000.0, true, 1),
                ("client.frames", 3.0, false, 0),
                ("client.frames.slow", 2.0, false, 0),
                ("client.frames.frozen", 0.0, false, 0),
                ("client.frame.duration", 8.0, false, 0),
                ("client.frame.duration", 9.0, true, 0),
                ("client.frame.duration", 20.0, true, 0),
                ("client.http", 0.0, false, 0),
                ("client.http.bytes_sent", 300.0, false, 0),
                ("client.http.bytes_received", 4_000.0, false, 0),
                ("client.http.repeated", 1.0, false, 0),
                ("client.battery", 0.5, false, 0),
                ("client.power.drain", 4.0, false, 0),
                ("client.power.wake_lock", 120_000.0, false, 0),
                ("client.power.cpu", 180_000.0, false, 0),
                ("client.power.gps", 0.0, false, 0),
                ("client.power.sensor", 0.0, false, 0),
                ("client.memory.resident", 100.0, false, 0),
                ("client.memory.available", 900.0, false, 0),
                ("client.memory.kills", 1.0, true, 0),
                ("client.storage.app_data", 5_000.0, false, 0),
                ("client.storage.cache", 700.0, false, 0),
            ]
        );
        let anr = out
            .observations
            .iter()
            .find(|o| o.series.name == "client.anrs")
            .expect("an ANR");
        assert_eq!(anr.series.label("anr.foreground"), Some("true"));
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
