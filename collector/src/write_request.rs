//! A Prometheus remote-write request read in place (`vigil_proto::wire`):
//! label names and values stay borrowed from the body. prost would make two
//! strings of every label of every series, most of them to be copied into an
//! attribute and dropped (`job`, `instance` and `__name__` name a resource
//! and a metric shared by many series). Native histograms and metadata,
//! rare, are decoded with prost. What prost refuses is refused here: wrong
//! wire types, fields past their message's end, strings that are not UTF-8.

use vigil_proto::prometheus::{Histogram, MetricMetadata, Sample};
use vigil_proto::wire::{Fields, Malformed};

/// `prometheus.WriteRequest`: timeseries = 1, metadata = 3.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct WriteRequest<'a> {
    pub(crate) timeseries: Vec<TimeSeries<'a>>,
    pub(crate) metadata: Vec<MetricMetadata>,
}

/// `prometheus.TimeSeries`: labels = 1, samples = 2, histograms = 4.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct TimeSeries<'a> {
    pub(crate) labels: Vec<Label<'a>>,
    pub(crate) samples: Vec<Sample>,
    pub(crate) histograms: Vec<Histogram>,
}

/// `prometheus.Label`: name = 1, value = 2.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Label<'a> {
    pub(crate) name: &'a str,
    pub(crate) value: &'a str,
}

/// Why a body is not a remote-write request.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReadError {
    #[error("{0}")]
    Wire(#[from] Malformed),
    #[error("{0}")]
    Message(#[from] prost::DecodeError),
}

impl<'a> WriteRequest<'a> {
    pub(crate) fn read(body: &'a [u8]) -> Result<Self, ReadError> {
        let mut write = WriteRequest::default();
        for field in Fields::new(body) {
            let field = field?;
            match field.number {
                1 => write
                    .timeseries
                    .push(TimeSeries::read(field.value.bytes()?)?),
                3 => write
                    .metadata
                    .push(prost::Message::decode(field.value.bytes()?)?),
                _ => {}
            }
        }
        Ok(write)
    }
}

impl<'a> TimeSeries<'a> {
    fn read(message: &'a [u8]) -> Result<Self, ReadError> {
        let mut series = TimeSeries::default();
        for field in Fields::new(message) {
            let field = field?;
            match field.number {
                1 => series.labels.push(Label::read(field.value.bytes()?)?),
                2 => series.samples.push(sample(field.value.bytes()?)?),
                4 => series
                    .histograms
                    .push(prost::Message::decode(field.value.bytes()?)?),
                _ => {}
            }
        }
        Ok(series)
    }
}

impl<'a> Label<'a> {
    fn read(message: &'a [u8]) -> Result<Self, Malformed> {
        let mut label = Label::default();
        for field in Fields::new(message) {
            let field = field?;
            let text = || {
                std::str::from_utf8(field.value.bytes()?)
                    .map_err(|_| Malformed("a label is not UTF-8"))
            };
            match field.number {
                1 => label.name = text()?,
                2 => label.value = text()?,
                _ => {}
            }
        }
        Ok(label)
    }
}

/// `prometheus.Sample`: value = 1 (a double), timestamp = 2 (an int64).
fn sample(message: &[u8]) -> Result<Sample, Malformed> {
    let mut sample = Sample::default();
    for field in Fields::new(message) {
        let field = field?;
        match field.number {
            1 => sample.value = f64::from_bits(field.value.fixed64()?),
            2 => sample.timestamp = field.value.varint()? as i64,
            _ => {}
        }
    }
    Ok(sample)
}

/// What prost reads, with its labels borrowed: what [`WriteRequest::read`]
/// must read (`fuzz.rs`).
#[cfg(test)]
pub(crate) fn borrowed(write: &vigil_proto::prometheus::WriteRequest) -> WriteRequest<'_> {
    WriteRequest {
        timeseries: write
            .timeseries
            .iter()
            .map(|s| TimeSeries {
                labels: s
                    .labels
                    .iter()
                    .map(|l| Label {
                        name: &l.name,
                        value: &l.value,
                    })
                    .collect(),
                samples: s.samples.clone(),
                histograms: s.histograms.clone(),
            })
            .collect(),
        metadata: write.metadata.clone(),
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;
    use vigil_proto::prometheus;

    use super::*;

    #[test]
    fn a_request_reads_as_prost_reads_it() {
        let write = prometheus::WriteRequest {
            timeseries: vec![prometheus::TimeSeries {
                labels: vec![
                    prometheus::Label {
                        name: "__name__".to_owned(),
                        value: "up".to_owned(),
                    },
                    prometheus::Label {
                        name: "job".to_owned(),
                        value: "api".to_owned(),
                    },
                ],
                samples: vec![
                    Sample {
                        value: 1.5,
                        timestamp: -3,
                    },
                    Sample {
                        value: f64::NAN,
                        timestamp: 1_700_000_000_000,
                    },
                ],
                histograms: vec![Histogram {
                    sum: 2.0,
                    schema: -1,
                    ..Default::default()
                }],
            }],
            metadata: vec![MetricMetadata {
                r#type: 1,
                metric_family_name: "up".to_owned(),
                ..Default::default()
            }],
        };
        let bytes = write.encode_to_vec();
        let read = WriteRequest::read(&bytes).unwrap();
        // Compared as printed: NaN is not equal to itself.
        assert_eq!(format!("{read:?}"), format!("{:?}", borrowed(&write)));
        assert_eq!(read.timeseries[0].labels[1].value, "api");
    }

    #[test]
    fn what_prost_refuses_is_refused() {
        let cases: [&[u8]; 4] = [
            // A label that is not UTF-8.
            &[0x0a, 4, 0x0a, 2, 0x0a, 0xff],
            // A sample's value with a varint's wire type.
            &[0x0a, 4, 0x12, 2, 0x08, 1],
            // A series running past the body.
            &[0x0a, 9, 0x12],
            // A histogram that is not one.
            &[0x0a, 3, 0x22, 1, 0x07],
        ];
        for bytes in cases {
            assert!(
                prometheus::WriteRequest::decode(bytes).is_err(),
                "{bytes:?}"
            );
            assert!(WriteRequest::read(bytes).is_err(), "{bytes:?}");
        }
    }
}
