//! Fuzz targets of everything the collector reads from the network, run by
//! `cargo test` (see `vigil_testing::fuzz`; `VIGIL_FUZZ_CASES=1000000` for a
//! long run): OTLP protobuf (traces, metrics, logs), client telemetry,
//! remote-write and OTLP/JSON, as valid encodings mutated and as random
//! bytes, each through the same steps a request takes: the budget's walk,
//! decoding, validation and the split into one message per resource.
//!
//! Properties: nothing panics; every item is either kept or counted as
//! rejected; what is kept encodes and decodes back to itself.

use std::fmt::Debug;
use std::time::{Instant, SystemTime};

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use proptest::prelude::*;
use prost::Message;
use vigil_config::{CollectorConfig, LimitsConfig};
use vigil_domain::tenant::TenantId;
use vigil_proto::client::v1::ExportClientRequest;
use vigil_proto::prometheus::{Label, Sample, TimeSeries, WriteRequest};
use vigil_testing::fuzz::seeds::{logs, metrics, now_ns, traces};
use vigil_testing::fuzz::{config, mutations};

use crate::budget::{self, Root};
use crate::json;
use crate::limits::{Admission, SeriesLimiter};
use crate::otlp::{Export, ExportRequest};
use crate::remote_write;
use crate::validate::{Rejections, Rules};
use crate::write_request;

fn client() -> ExportClientRequest {
    let json = format!(
        r#"{{"batches": [{{"context": {{"appId": "wallet", "appVersion": "2.0", "osName": "ios"}},
            "events": [{{"timeUnixNano": {now}, "sessionStart": {{}}}},
                       {{"timeUnixNano": {now}, "crash": {{"kind": "native"}}}}]}}]}}"#,
        now = now_ns()
    );
    json::decode(json.as_bytes()).expect("a valid client batch")
}

fn remote_write() -> WriteRequest {
    let now_ms = (now_ns() / 1_000_000) as i64;
    WriteRequest {
        timeseries: vec![TimeSeries {
            labels: vec![
                Label {
                    name: "__name__".to_owned(),
                    value: "http_requests_total".to_owned(),
                },
                Label {
                    name: "job".to_owned(),
                    value: "pay".to_owned(),
                },
            ],
            samples: vec![
                Sample {
                    value: 1.0,
                    timestamp: now_ms - 1_000,
                },
                Sample {
                    value: f64::NAN,
                    timestamp: now_ms,
                },
            ],
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// Takes `request` through validation and the split, as the collector does
/// before publishing, checks that every item is kept or counted as rejected,
/// and returns the parts.
fn validated<S: Export>(
    mut request: S,
    mut rejections: Rejections,
) -> Result<Vec<S>, TestCaseError> {
    let rules = Rules::new(&CollectorConfig::default(), SystemTime::now());
    let limiter = SeriesLimiter::new(&LimitsConfig::default());
    let tenant = TenantId::parse("fuzz").expect("a tenant id");
    let received = request.items() as u64 + rejections.count();
    request.validate(
        &rules,
        &mut Admission::new(&tenant, Instant::now(), &limiter),
        &mut rejections,
    );
    prop_assert_eq!(
        request.items() as u64 + rejections.count(),
        received,
        "every item is kept or counted as rejected"
    );
    Ok(request.split().into_iter().map(|(_, part)| part).collect())
}

/// [`validated`], and each part encodes and decodes back to itself.
fn check<S>(request: S, rejections: Rejections) -> Result<(), TestCaseError>
where
    S: ExportRequest + PartialEq + Debug,
{
    for part in validated(request, rejections)? {
        let bytes = part.payload();
        prop_assert_eq!(S::decode(&bytes[..]).ok(), Some(part));
    }
    Ok(())
}

/// Bytes as a protobuf body of `S`: walked by the budget, then decoded.
fn protobuf<S>(bytes: &[u8]) -> Result<(), TestCaseError>
where
    S: ExportRequest + PartialEq + Debug,
{
    let estimate = budget::estimate(S::BUDGET, bytes);
    prop_assert!(estimate >= bytes.len());
    match S::decode(bytes) {
        Ok(request) => check(request, Rejections::default()),
        Err(_) => Ok(()),
    }
}

/// Bytes as an OTLP/JSON body of `S`.
fn otlp_json<S>(bytes: &[u8]) -> Result<(), TestCaseError>
where
    S: ExportRequest + PartialEq + Debug,
{
    prop_assert!(budget::estimate_json(bytes) >= bytes.len());
    match json::decode::<S>(bytes) {
        Ok(request) => check(request, Rejections::default()),
        Err(_) => Ok(()),
    }
}

fn encodings<M: Message + serde::Serialize>(message: &M) -> (Vec<u8>, Vec<u8>) {
    let json = serde_json::to_vec(message).expect("serializable");
    (message.encode_to_vec(), json)
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn fuzz_otlp_traces(bytes in mutations(vec![encodings(&traces()).0])) {
        protobuf::<ExportTraceServiceRequest>(&bytes)?;
    }

    #[test]
    fn fuzz_otlp_metrics(bytes in mutations(vec![encodings(&metrics()).0])) {
        protobuf::<ExportMetricsServiceRequest>(&bytes)?;
    }

    #[test]
    fn fuzz_otlp_logs(bytes in mutations(vec![encodings(&logs()).0])) {
        protobuf::<ExportLogsServiceRequest>(&bytes)?;
    }

    #[test]
    fn fuzz_client_telemetry(bytes in mutations(vec![client().encode_to_vec()])) {
        protobuf::<ExportClientRequest>(&bytes)?;
    }

    #[test]
    fn fuzz_otlp_json(bytes in mutations(vec![
        encodings(&traces()).1,
        encodings(&metrics()).1,
        encodings(&logs()).1,
    ])) {
        otlp_json::<ExportTraceServiceRequest>(&bytes)?;
        otlp_json::<ExportMetricsServiceRequest>(&bytes)?;
        otlp_json::<ExportLogsServiceRequest>(&bytes)?;
    }

    #[test]
    fn fuzz_remote_write(bytes in mutations(vec![remote_write().encode_to_vec()])) {
        prop_assert!(budget::estimate(Root::RemoteWrite, &bytes) >= bytes.len());
        let read = write_request::WriteRequest::read(&bytes);
        if let Ok(expected) = WriteRequest::decode(&bytes[..]) {
            // What prost reads is read in place alike.
            prop_assert!(read.is_ok(), "{:?}", read.as_ref().err());
            let read = read.as_ref().map(|write| format!("{write:?}"));
            prop_assert_eq!(read.unwrap_or_default(), format!("{:?}", write_request::borrowed(&expected)));
        }
        if let Ok(write) = read {
            let mut rejections = Rejections::default();
            let mut gathering = crate::classic_histogram::Gathering::default();
            let now = std::time::Instant::now();
            let request = remote_write::to_otlp(write, Some(&mut gathering), now, &mut rejections);
            for part in validated(request, rejections)? {
                // The bus message is OTLP: it decodes with every point, and
                // prost writes it again byte for byte.
                let bytes = part.payload();
                let decoded = ExportMetricsServiceRequest::decode(&bytes[..]);
                prop_assert!(decoded.is_ok());
                let decoded = decoded.unwrap_or_default();
                prop_assert_eq!(decoded.items(), part.items());
                prop_assert_eq!(decoded.encode_to_vec(), bytes);
            }
        }
    }
}
