//! OTLP logs to raw events and one series per service and severity:
//! `log.records` (kind metric), one point of value 1 per record, an error
//! from severity ERROR up, so error-log rates can be queried and alerted on
//! like any series. The records themselves are kept as [`EventKind::Log`]
//! events, with their trace and span ids.

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use vigil_domain::model::{Kind, SeriesKey, hex};
use vigil_domain::tenant::TenantId;
use vigil_store::{EventKind, EventRecord};

use crate::points::{Amount, DecodeError, Observation, decode, resource_labels, seconds, text};

/// The series every log record counts in.
pub const LOG_SERIES: &str = "log.records";
/// OTLP severity numbers: 17–20 are ERROR, 21–24 FATAL.
const FIRST_ERROR_SEVERITY: i32 = 17;

/// Observations and events of one logs message.
pub struct Logs {
    pub observations: Vec<Observation>,
    pub events: Vec<EventRecord>,
}

/// The severity text OTLP's number stands for, when the record gives none.
fn severity_name(number: i32) -> &'static str {
    match number {
        1..=4 => "TRACE",
        5..=8 => "DEBUG",
        9..=12 => "INFO",
        13..=16 => "WARN",
        17..=20 => "ERROR",
        21..=24 => "FATAL",
        _ => "UNSPECIFIED",
    }
}

/// Reads an `ExportLogsServiceRequest`. `event_id` numbers the message's
/// records so that writing them again (a replay) keeps one copy.
pub fn logs(
    tenant: &TenantId,
    payload: &[u8],
    event_id: impl Fn(usize) -> u64,
) -> Result<Logs, DecodeError> {
    let request: ExportLogsServiceRequest = decode(payload, "OTLP ExportLogsServiceRequest")?;
    let mut out = Logs {
        observations: Vec::new(),
        events: Vec::new(),
    };
    for resource_logs in request.resource_logs {
        let resource = resource_logs.resource.unwrap_or_default().attributes;
        let (service, base_labels) = resource_labels(&resource);
        for record in resource_logs
            .scope_logs
            .into_iter()
            .flat_map(|scope| scope.log_records)
        {
            let time_ns = if record.time_unix_nano == 0 {
                record.observed_time_unix_nano
            } else {
                record.time_unix_nano
            };
            let severity = if record.severity_text.is_empty() {
                severity_name(record.severity_number).to_owned()
            } else {
                record.severity_text.clone()
            };
            let mut labels = base_labels.clone();
            labels.push(("severity".to_owned(), severity.clone()));
            out.observations.push(Observation::new(
                SeriesKey::new(tenant.clone(), Kind::Metric, &service, LOG_SERIES, labels),
                seconds(time_ns),
                Amount::Point {
                    value: 1.0,
                    error: record.severity_number >= FIRST_ERROR_SEVERITY,
                },
            ));
            out.events.push(EventRecord {
                tenant: tenant.clone(),
                kind: EventKind::Log,
                id: event_id(out.events.len()),
                time_ns,
                service: service.clone(),
                name: severity,
                body: text(record.body.as_ref()),
                trace_id: hex(&record.trace_id),
                span_id: hex(&record.span_id),
                fingerprint: String::new(),
                attributes: resource
                    .iter()
                    .chain(&record.attributes)
                    .map(|kv| (kv.key.clone(), text(kv.value.as_ref())))
                    .collect(),
            });
        }
    }
    Ok(out)
}
