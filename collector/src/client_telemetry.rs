//! Client telemetry (`vigil.client.v1`) as one more signal: the same
//! authentication, limits, validation and `partial_success` as OTLP, one bus
//! message per batch, keyed `{tenant}/{app_id}`.

use prost::Message as _;
use vigil_bus::Topics;
use vigil_proto::client::v1::{
    ClientBatch, ClientContext, ClientEvent, ExportClientRequest, ExportClientResponse,
};

use crate::budget::Root;
use crate::limits::Admission;
use crate::otlp::{Export, ExportRequest, retain_valid};
use crate::validate::{Item, Rejection, Rejections, Rules, finite};

const COHORTS: [&str; 4] = ["", "canary", "baseline", "stable"];

/// The most stack frames and breadcrumbs one crash may carry (Sentry keeps
/// 250 frames and 100 breadcrumbs).
const MAX_FRAMES: usize = 256;
const MAX_BREADCRUMBS: usize = 100;

impl Export for ExportClientRequest {
    type Response = ExportClientResponse;
    const NAME: &'static str = "client";
    const ITEMS: &'static str = "events";

    fn topic(topics: &Topics) -> &str {
        &topics.client
    }

    fn validate(
        &mut self,
        rules: &Rules,
        _admission: &mut Admission<'_>,
        rejections: &mut Rejections,
    ) {
        for batch in &mut self.batches {
            if let Err(rejection) = check_context(rules, batch.context.as_ref()) {
                rejections.add(rejection, batch.events.len() as u64);
                batch.events.clear();
                continue;
            }
            retain_valid(&mut batch.events, rejections, |event| {
                let what = Item::new("client event", kind(event).unwrap_or_default());
                check_event(rules, what, event)
            });
        }
        self.batches.retain(|b| !b.events.is_empty());
    }

    fn split(self) -> Vec<(String, Self)> {
        self.batches
            .into_iter()
            .map(|batch: ClientBatch| {
                let app = batch
                    .context
                    .as_ref()
                    .map(|c| c.app_id.clone())
                    .unwrap_or_default();
                (
                    app,
                    ExportClientRequest {
                        batches: vec![batch],
                    },
                )
            })
            .collect()
    }

    fn items(&self) -> usize {
        self.batches.iter().map(|b| b.events.len()).sum()
    }

    fn response(rejections: &Rejections) -> Self::Response {
        ExportClientResponse {
            rejected_events: rejections.count() as i64,
            error_message: rejections.message(Self::ITEMS),
        }
    }

    fn payload(&self) -> Vec<u8> {
        self.encode_to_vec()
    }
}

impl ExportRequest for ExportClientRequest {
    const BUDGET: Root = Root::Client;
}

fn check_context(rules: &Rules, context: Option<&ClientContext>) -> Result<(), Rejection> {
    let Some(context) = context else {
        return Err(Rejection::new(
            "missing_context",
            "a batch has no context; app_id, app_version and os_name are required",
        ));
    };
    let what = Item::new("batch of app", &context.app_id);
    for (field, value) in [
        ("app_id", &context.app_id),
        ("app_version", &context.app_version),
        ("os_name", &context.os_name),
    ] {
        if value.is_empty() {
            return Err(Rejection::new(
                "missing_context",
                format!("{what}: {field} is required"),
            ));
        }
    }
    if !COHORTS.contains(&context.cohort.as_str()) {
        return Err(Rejection::new(
            "bad_cohort",
            format!(
                "{what}: cohort {:?} is not one of canary, baseline, stable (or empty)",
                context.cohort
            ),
        ));
    }
    for (field, value) in [
        ("user_id_hash", &context.user_id_hash),
        ("session_id_hash", &context.session_id_hash),
    ] {
        let hashed =
            (16..=128).contains(&value.len()) && value.bytes().all(|b| b.is_ascii_hexdigit());
        if !value.is_empty() && !hashed {
            return Err(Rejection::new(
                "unhashed_id",
                format!("{what}: {field} must be a hash (16 to 128 hex digits), never a raw id"),
            ));
        }
    }
    for (field, value) in [
        ("os_version", &context.os_version),
        ("device_model", &context.device_model),
        ("network_type", &context.network_type),
        ("unit", &context.unit),
        ("region", &context.region),
    ] {
        rules.text(what, field, value)?;
    }
    Ok(())
}

/// The name of the one kind of event that is set, `None` when none is.
fn kind(event: &ClientEvent) -> Option<&'static str> {
    kinds(event).next()
}

fn kinds(event: &ClientEvent) -> impl Iterator<Item = &'static str> {
    [
        (event.session_start.is_some(), "session_start"),
        (event.session_end.is_some(), "session_end"),
        (event.app_start.is_some(), "app_start"),
        (event.crash.is_some(), "crash"),
        (event.stutter.is_some(), "stutter"),
        (event.network_request.is_some(), "network_request"),
        (event.power.is_some(), "power"),
        (event.memory.is_some(), "memory"),
        (event.page_load.is_some(), "page_load"),
        (event.anr.is_some(), "anr"),
        (event.storage.is_some(), "storage"),
    ]
    .into_iter()
    .filter_map(|(set, name)| set.then_some(name))
}

fn check_event(rules: &Rules, what: Item<'_>, event: &ClientEvent) -> Result<(), Rejection> {
    let set: Vec<&str> = kinds(event).collect();
    match set.len() {
        1 => {}
        0 => {
            return Err(Rejection::new(
                "no_event",
                "client event: none of session_start, session_end, app_start, crash, anr, \
                 stutter, network_request, power, memory, storage, page_load is set",
            ));
        }
        _ => {
            return Err(Rejection::new(
                "several_events",
                format!(
                    "client event: sets {}; send one kind per event",
                    set.join(" and ")
                ),
            ));
        }
    }
    rules.time(what, "time_unix_nano", event.time_unix_nano)?;
    if let Some(end) = &event.session_end {
        non_negative(what, "duration_ms", end.duration_ms)?;
    }
    if let Some(start) = &event.app_start {
        one_of(what, "kind", &start.kind, &["cold", "warm"])?;
        non_negative(what, "duration_ms", start.duration_ms)?;
    }
    if let Some(crash) = &event.crash {
        one_of(what, "kind", &crash.kind, &["managed", "native"])?;
        if crash.exception_type.is_empty() {
            return Err(Rejection::new(
                "missing_field",
                format!("{what}: exception_type is required"),
            ));
        }
        rules.text(what, "message", &crash.message)?;
        rules.text(what, "stack_fingerprint", &crash.stack_fingerprint)?;
        rules.text(what, "thread", &crash.thread)?;
        rules.count(what, "frames", crash.frames.len(), MAX_FRAMES)?;
        rules.count(
            what,
            "breadcrumbs",
            crash.breadcrumbs.len(),
            MAX_BREADCRUMBS,
        )?;
        for frame in &crash.frames {
            for (field, value) in [
                ("frames.function", &frame.function),
                ("frames.module", &frame.module),
                ("frames.file", &frame.file),
                ("frames.address", &frame.address),
            ] {
                rules.text(what, field, value)?;
            }
        }
        for breadcrumb in &crash.breadcrumbs {
            rules.text(what, "breadcrumbs.category", &breadcrumb.category)?;
            rules.text(what, "breadcrumbs.message", &breadcrumb.message)?;
        }
    }
    if let Some(anr) = &event.anr {
        non_negative(what, "duration_ms", anr.duration_ms)?;
    }
    if let Some(stutter) = &event.stutter {
        for &duration in &stutter.frame_durations_ms {
            non_negative(what, "frame_durations_ms", duration)?;
        }
        non_negative(what, "refresh_rate_hz", stutter.refresh_rate_hz)?;
        if stutter.slow_frames > stutter.total_frames
            || stutter.frozen_frames > stutter.total_frames
        {
            return Err(Rejection::new(
                "count_mismatch",
                format!(
                    "{what}: {} slow and {} frozen frames out of {} in all",
                    stutter.slow_frames, stutter.frozen_frames, stutter.total_frames
                ),
            ));
        }
    }
    if let Some(request) = &event.network_request {
        for (field, value) in [("host", &request.host), ("method", &request.method)] {
            if value.is_empty() {
                return Err(Rejection::new(
                    "missing_field",
                    format!("{what}: {field} is required"),
                ));
            }
        }
        if request.status_code > 599 {
            return Err(Rejection::new(
                "out_of_range",
                format!(
                    "{what}: status_code {} is not an HTTP status",
                    request.status_code
                ),
            ));
        }
        non_negative(what, "duration_ms", request.duration_ms)?;
        rules.text(what, "route", &request.route)?;
        rules.text(what, "error", &request.error)?;
    }
    if let Some(power) = &event.power {
        for (field, value) in [
            ("interval_ms", power.interval_ms),
            ("battery_drain_percent", power.battery_drain_percent),
            ("wake_lock_ms", power.wake_lock_ms),
            ("cpu_time_ms", power.cpu_time_ms),
            ("gps_ms", power.gps_ms),
            ("sensor_ms", power.sensor_ms),
        ] {
            non_negative(what, field, value)?;
        }
        finite(what, "battery_level", power.battery_level)?;
        if !(0.0..=1.0).contains(&power.battery_level) {
            return Err(Rejection::new(
                "out_of_range",
                format!(
                    "{what}: battery_level {} is outside [0, 1]",
                    power.battery_level
                ),
            ));
        }
    }
    if let Some(page) = &event.page_load {
        for (field, value) in [
            ("ttfb_ms", page.ttfb_ms),
            ("first_contentful_paint_ms", page.first_contentful_paint_ms),
            ("dom_content_loaded_ms", page.dom_content_loaded_ms),
            ("load_ms", page.load_ms),
            (
                "largest_contentful_paint_ms",
                page.largest_contentful_paint_ms,
            ),
            (
                "interaction_to_next_paint_ms",
                page.interaction_to_next_paint_ms,
            ),
            ("cumulative_layout_shift", page.cumulative_layout_shift),
        ] {
            non_negative(what, field, value)?;
        }
        rules.text(what, "route", &page.route)?;
    }
    Ok(())
}

fn non_negative(what: Item<'_>, field: &str, value: f64) -> Result<(), Rejection> {
    finite(what, field, value)?;
    if value < 0.0 {
        return Err(Rejection::new(
            "negative_value",
            format!("{what}: {field} is {value}; it cannot be negative"),
        ));
    }
    Ok(())
}

fn one_of(what: Item<'_>, field: &str, value: &str, allowed: &[&str]) -> Result<(), Rejection> {
    if allowed.contains(&value) {
        return Ok(());
    }
    Err(Rejection::new(
        "bad_value",
        format!(
            "{what}: {field} {value:?} is not one of {}",
            allowed.join(", ")
        ),
    ))
}
