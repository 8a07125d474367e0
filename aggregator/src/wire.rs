//! Protobuf read in place, for the messages the aggregator reads by the
//! million: OTLP gauges and sums. prost builds every data point's attributes
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

/// Why bytes are not the message they should be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Malformed(pub &'static str);

/// A field's value, by wire type.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Value<'a> {
    Varint(u64),
    Fixed64(u64),
    Fixed32,
    Bytes(&'a [u8]),
}

impl<'a> Value<'a> {
    /// A length-delimited field's bytes (a message, a string, packed values).
    pub(crate) fn bytes(self) -> Result<&'a [u8], Malformed> {
        match self {
            Value::Bytes(bytes) => Ok(bytes),
            _ => Err(Malformed("a message field has the wrong wire type")),
        }
    }

    pub(crate) fn varint(self) -> Result<u64, Malformed> {
        match self {
            Value::Varint(value) => Ok(value),
            _ => Err(Malformed("a varint field has the wrong wire type")),
        }
    }

    pub(crate) fn fixed64(self) -> Result<u64, Malformed> {
        match self {
            Value::Fixed64(value) => Ok(value),
            _ => Err(Malformed("a 64-bit field has the wrong wire type")),
        }
    }
}

/// One field: its number, its value, and the bytes it took in its message
/// (key included), as offsets.
pub(crate) struct Field<'a> {
    pub(crate) number: u32,
    pub(crate) value: Value<'a>,
    pub(crate) span: (usize, usize),
}

/// The fields of one message, in the order they are written.
pub(crate) struct Fields<'a> {
    message: &'a [u8],
    at: usize,
}

impl<'a> Fields<'a> {
    pub(crate) fn new(message: &'a [u8]) -> Self {
        Fields { message, at: 0 }
    }

    fn varint(&mut self) -> Result<u64, Malformed> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let &byte = self
                .message
                .get(self.at)
                .ok_or(Malformed("a varint runs past the end"))?;
            self.at += 1;
            value |= u64::from(byte & 0x7f) << shift;
            if byte < 0x80 {
                return Ok(value);
            }
        }
        Err(Malformed("a varint is longer than ten bytes"))
    }

    fn take(&mut self, length: u64) -> Result<&'a [u8], Malformed> {
        let end = usize::try_from(length)
            .ok()
            .and_then(|length| self.at.checked_add(length))
            .filter(|&end| end <= self.message.len())
            .ok_or(Malformed("a field runs past the end of its message"))?;
        let bytes = &self.message[self.at..end];
        self.at = end;
        Ok(bytes)
    }

    fn field(&mut self) -> Result<Field<'a>, Malformed> {
        let start = self.at;
        let key = self.varint()?;
        let number = u32::try_from(key >> 3)
            .ok()
            .filter(|&n| n > 0)
            .ok_or(Malformed("a field number is out of range"))?;
        let value = match key & 7 {
            0 => Value::Varint(self.varint()?),
            1 => Value::Fixed64(u64::from_le_bytes(
                self.take(8)?.try_into().expect("eight bytes"),
            )),
            2 => {
                let length = self.varint()?;
                Value::Bytes(self.take(length)?)
            }
            5 => {
                self.take(4)?;
                Value::Fixed32
            }
            _ => return Err(Malformed("a field has a wire type OTLP does not use")),
        };
        Ok(Field {
            number,
            value,
            span: (start, self.at),
        })
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = Result<Field<'a>, Malformed>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.at >= self.message.len() {
            return None;
        }
        let field = self.field();
        if field.is_err() {
            self.at = self.message.len();
        }
        Some(field)
    }
}

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
            (&[0x3b], "a field has a wire type OTLP does not use"),
        ];
        for (bytes, reason) in cases {
            assert_eq!(NumberPoint::read(bytes).unwrap_err(), Malformed(reason));
        }
    }
}
