//! OTLP gauges and sums read in place (`vigil_proto::wire`): the messages
//! the aggregator reads by the million. prost builds every data point's attributes
//! as owned strings, to be compared and dropped again; here a point's
//! attributes stay the bytes they are in the message, compared as bytes with
//! the previous point's, and decoded (with prost) only for a series not seen
//! just before. Everything else is decoded with prost as before.
//!
//! Differences from prost, on malformed input only: what is skipped here
//! (instrumentation scopes, exemplars, a metric's description, unit and
//! metadata) is not checked, so a message broken only there is read rather
//! than sent to the dead-letter topic.

use std::borrow::Cow;

use vigil_proto::wire::{Fields, Malformed};

/// An OTLP `NumberDataPoint`, read in place.
#[derive(Debug)]
pub(crate) struct NumberPoint<'a> {
    /// Its `attributes` fields as written (keys and lengths included): equal
    /// bytes, equal attributes.
    pub(crate) attributes: Cow<'a, [u8]>,
    pub(crate) start_time_unix_nano: u64,
    pub(crate) time_unix_nano: u64,
    /// `as_double` or `as_int`, the last one written (as a oneof reads).
    pub(crate) value: Option<f64>,
    pub(crate) flags: u32,
}

impl<'a> NumberPoint<'a> {
    /// Reads a `NumberDataPoint`: start = 2, time = 3, as_double = 4,
    /// as_int = 6, attributes = 7, flags = 8.
    pub(crate) fn read(message: &'a [u8]) -> Result<Self, Malformed> {
        let mut point = NumberPoint {
            attributes: Cow::Borrowed(&[]),
            start_time_unix_nano: 0,
            time_unix_nano: 0,
            value: None,
            flags: 0,
        };
        // The attributes' fields, while they follow one another.
        let mut attributes: Option<(usize, usize)> = None;
        for field in Fields::new(message) {
            let field = field?;
            match field.number {
                2 => point.start_time_unix_nano = field.value.fixed64()?,
                3 => point.time_unix_nano = field.value.fixed64()?,
                4 => point.value = Some(f64::from_bits(field.value.fixed64()?)),
                6 => point.value = Some(field.value.fixed64()? as i64 as f64),
                7 => {
                    field.value.bytes()?;
                    let (start, end) = field.span;
                    match (&mut point.attributes, &mut attributes) {
                        (Cow::Borrowed(_), Some((_, last))) if *last == start => *last = end,
                        (Cow::Borrowed(_), None) => attributes = Some((start, end)),
                        (Cow::Borrowed(_), Some((first, last))) => {
                            // Apart: copied together.
                            let mut owned = message[*first..*last].to_vec();
                            owned.extend_from_slice(&message[start..end]);
                            point.attributes = Cow::Owned(owned);
                        }
                        (Cow::Owned(owned), _) => owned.extend_from_slice(&message[start..end]),
                    }
                }
                8 => {
                    point.flags = u32::try_from(field.value.varint()?)
                        .map_err(|_| Malformed("flags are wider than 32 bits"))?;
                }
                _ => {}
            }
        }
        if let (Cow::Borrowed(_), Some((first, last))) = (&point.attributes, attributes) {
            point.attributes = Cow::Borrowed(&message[first..last]);
        }
        Ok(point)
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
    use opentelemetry_proto::tonic::metrics::v1::{NumberDataPoint, number_data_point};
    use prost::Message;

    use super::*;

    fn attribute(key: &str, value: &str) -> KeyValue {
        KeyValue {
            key: key.to_owned(),
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue(value.to_owned())),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_point_reads_as_prost_reads_it() {
        let point = NumberDataPoint {
            attributes: vec![attribute("code", "200"), attribute("path", "/pay")],
            start_time_unix_nano: 5,
            time_unix_nano: 1_000_000_000,
            value: Some(number_data_point::Value::AsInt(-7)),
            flags: 1,
            ..Default::default()
        };
        let bytes = point.encode_to_vec();
        let read = NumberPoint::read(&bytes).unwrap();
        assert_eq!(
            (
                read.start_time_unix_nano,
                read.time_unix_nano,
                read.value,
                read.flags
            ),
            (5, 1_000_000_000, Some(-7.0), 1)
        );
        let mut attributes = Vec::new();
        for field in Fields::new(&read.attributes) {
            let field = field.unwrap();
            assert_eq!(field.number, 7);
            attributes.push(KeyValue::decode(field.value.bytes().unwrap()).unwrap());
        }
        assert_eq!(attributes, point.attributes);
        assert!(matches!(read.attributes, Cow::Borrowed(_)));
    }

    #[test]
    fn attributes_apart_are_read_together_and_the_last_value_wins() {
        let first = NumberDataPoint {
            attributes: vec![attribute("a", "1")],
            value: Some(number_data_point::Value::AsDouble(1.5)),
            ..Default::default()
        };
        let second = NumberDataPoint {
            attributes: vec![attribute("b", "2")],
            value: Some(number_data_point::Value::AsInt(3)),
            ..Default::default()
        };
        // Two messages written one after the other merge into one.
        let mut bytes = first.encode_to_vec();
        bytes.extend(second.encode_to_vec());
        let prost = NumberDataPoint::decode(&bytes[..]).unwrap();
        let read = NumberPoint::read(&bytes).unwrap();
        assert_eq!(read.value, Some(3.0));
        assert_eq!(
            prost.value,
            Some(number_data_point::Value::AsInt(3)),
            "prost reads the same"
        );
        let together = NumberDataPoint {
            attributes: prost.attributes,
            ..Default::default()
        }
        .encode_to_vec();
        assert_eq!(read.attributes.as_ref(), &together[..]);
        assert!(matches!(read.attributes, Cow::Owned(_)));
    }

    #[test]
    fn broken_bytes_are_errors() {
        let cases: [(&[u8], &str); 5] = [
            (&[0x19, 1, 2], "a field runs past the end of its message"),
            (&[0x3a, 5, 1], "a field runs past the end of its message"),
            (&[0x40, 0xff], "a varint runs past the end"),
            (&[0x18, 1], "a 64-bit field has the wrong wire type"),
            (&[0x3f], "a field has an unknown wire type"),
        ];
        for (bytes, reason) in cases {
            assert_eq!(NumberPoint::read(bytes).unwrap_err(), Malformed(reason));
        }
    }
}
