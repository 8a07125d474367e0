//! Protobuf read in place — a message's fields in the order they are written,
//! their values borrowed from its bytes — and written field by field. For the messages read by the
//! million, where prost's owned strings and vectors would be made only to be
//! compared and dropped: the collector's remote-write bodies and its decoding
//! budget, the aggregator's OTLP gauges and sums. Inlined where it is used:
//! without it, the calls across crates took an eighth of `vigil up`'s CPU
//! under remote-write load.

/// Why bytes are not the message they should be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed(pub &'static str);

impl std::fmt::Display for Malformed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for Malformed {}

/// Wire types, as protobuf numbers them.
pub const VARINT: u8 = 0;
pub const FIXED64: u8 = 1;
pub const LENGTH_DELIMITED: u8 = 2;
const START_GROUP: u8 = 3;
const END_GROUP: u8 = 4;
pub const FIXED32: u8 = 5;

/// How deep groups may nest, as prost's recursion limit.
const MAX_GROUP_DEPTH: usize = 100;

/// A field's value, by wire type.
#[derive(Debug, Clone, Copy)]
pub enum Value<'a> {
    Varint(u64),
    Fixed64(u64),
    Fixed32,
    Bytes(&'a [u8]),
    /// A group (proto2's, deprecated): skipped whole, as prost skips an
    /// unknown one.
    Group,
}

impl<'a> Value<'a> {
    /// A length-delimited field's bytes (a message, a string, packed values).
    #[inline]
    pub fn bytes(self) -> Result<&'a [u8], Malformed> {
        match self {
            Value::Bytes(bytes) => Ok(bytes),
            _ => Err(Malformed("a message field has the wrong wire type")),
        }
    }

    #[inline]
    pub fn varint(self) -> Result<u64, Malformed> {
        match self {
            Value::Varint(value) => Ok(value),
            _ => Err(Malformed("a varint field has the wrong wire type")),
        }
    }

    #[inline]
    pub fn fixed64(self) -> Result<u64, Malformed> {
        match self {
            Value::Fixed64(value) => Ok(value),
            _ => Err(Malformed("a 64-bit field has the wrong wire type")),
        }
    }
}

/// One field: its number, its value, and the bytes it took in its message
/// (key included), as offsets.
pub struct Field<'a> {
    pub number: u32,
    pub value: Value<'a>,
    pub span: (usize, usize),
}

/// The fields of one message, in the order they are written.
pub struct Fields<'a> {
    message: &'a [u8],
    at: usize,
}

impl<'a> Fields<'a> {
    #[inline]
    pub fn new(message: &'a [u8]) -> Self {
        Fields { message, at: 0 }
    }

    #[inline(always)]
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

    #[inline]
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

    /// A field's number and wire type.
    #[inline(always)]
    fn key(&mut self) -> Result<(u32, u8), Malformed> {
        let key = self.varint()?;
        let number = u32::try_from(key >> 3)
            .ok()
            .filter(|&n| n > 0)
            .ok_or(Malformed("a field number is out of range"))?;
        Ok((number, (key & 7) as u8))
    }

    /// Moves past the group `number` whose start was just read, nested
    /// groups and all, up to its end.
    fn skip_group(&mut self, number: u32) -> Result<(), Malformed> {
        let mut open = vec![number];
        while let Some(&innermost) = open.last() {
            let (number, wire_type) = self.key()?;
            match wire_type {
                VARINT => {
                    self.varint()?;
                }
                FIXED64 => {
                    self.take(8)?;
                }
                LENGTH_DELIMITED => {
                    let length = self.varint()?;
                    self.take(length)?;
                }
                START_GROUP if open.len() < MAX_GROUP_DEPTH => open.push(number),
                START_GROUP => return Err(Malformed("groups nest too deep")),
                END_GROUP if number == innermost => {
                    open.pop();
                }
                END_GROUP => return Err(Malformed("a group ends with another's number")),
                FIXED32 => {
                    self.take(4)?;
                }
                _ => return Err(Malformed("a field has an unknown wire type")),
            }
        }
        Ok(())
    }

    #[inline(always)]
    fn field(&mut self) -> Result<Field<'a>, Malformed> {
        let start = self.at;
        let (number, wire_type) = self.key()?;
        let value = match wire_type {
            VARINT => Value::Varint(self.varint()?),
            FIXED64 => Value::Fixed64(u64::from_le_bytes(
                self.take(8)?.try_into().expect("eight bytes"),
            )),
            LENGTH_DELIMITED => {
                let length = self.varint()?;
                Value::Bytes(self.take(length)?)
            }
            START_GROUP => {
                self.skip_group(number)?;
                Value::Group
            }
            END_GROUP => return Err(Malformed("a group ends that never began")),
            FIXED32 => {
                self.take(4)?;
                Value::Fixed32
            }
            _ => return Err(Malformed("a field has an unknown wire type")),
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

    #[inline]
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

/// Writes a field's key.
#[inline]
pub fn write_key(out: &mut Vec<u8>, number: u32, wire_type: u8) {
    write_varint(out, u64::from(number) << 3 | u64::from(wire_type));
}

/// Writes a length-delimited field's key and length (its content follows).
#[inline]
pub fn write_field(out: &mut Vec<u8>, number: u32, length: usize) {
    write_key(out, number, LENGTH_DELIMITED);
    write_varint(out, length as u64);
}

#[inline]
pub fn write_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push(value as u8 | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// The bytes a length-delimited field of `length` bytes takes: its key (of
/// a field number below 16), its length and its content.
#[inline]
pub fn field_len(length: usize) -> usize {
    1 + prost::length_delimiter_len(length) + length
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;
    use crate::prometheus::{Label, Sample, TimeSeries};

    #[test]
    fn fields_are_read_in_order_with_their_places() {
        let series = TimeSeries {
            labels: vec![Label {
                name: "job".to_owned(),
                value: "api".to_owned(),
            }],
            samples: vec![Sample {
                value: 2.5,
                timestamp: -1,
            }],
            histograms: Vec::new(),
        };
        let bytes = series.encode_to_vec();
        let fields: Vec<Field<'_>> = Fields::new(&bytes).map(Result::unwrap).collect();
        let numbers: Vec<u32> = fields.iter().map(|f| f.number).collect();
        assert_eq!(numbers, [1, 2]);
        assert_eq!(fields[0].span, (0, 12));
        assert_eq!(fields[1].span, (12, bytes.len()));
        let label = fields[0].value.bytes().unwrap();
        assert_eq!(Label::decode(label).unwrap(), series.labels[0]);
        let sample: Vec<Value<'_>> = Fields::new(fields[1].value.bytes().unwrap())
            .map(|f| f.unwrap().value)
            .collect();
        assert_eq!(f64::from_bits(sample[0].fixed64().unwrap()), 2.5);
        assert_eq!(sample[1].varint().unwrap() as i64, -1);
    }

    #[test]
    fn broken_bytes_end_the_fields_with_an_error() {
        let cases: [(&[u8], &str); 5] = [
            (&[0x0a, 5, 1], "a field runs past the end of its message"),
            (&[0x09, 1, 2], "a field runs past the end of its message"),
            (&[0x08, 0x80], "a varint runs past the end"),
            (
                &[
                    0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                ],
                "a varint is longer than ten bytes",
            ),
            (&[0x03], "a field number is out of range"),
        ];
        for (bytes, reason) in cases {
            let mut fields = Fields::new(bytes);
            assert_eq!(
                fields.next().map(|f| f.err()),
                Some(Some(Malformed(reason)))
            );
            assert!(fields.next().is_none(), "nothing after an error");
        }
        for (bytes, reason) in [
            (&[0x0f][..], "a field has an unknown wire type"),
            (&[0x0c], "a group ends that never began"),
            (&[0x0b, 0x14], "a group ends with another's number"),
            (&[0x0b, 0x08], "a varint runs past the end"),
        ] {
            assert_eq!(
                Fields::new(bytes).next().map(|f| f.err()),
                Some(Some(Malformed(reason))),
                "{bytes:?}"
            );
        }
        let deep: Vec<u8> = [0x0b].repeat(MAX_GROUP_DEPTH + 1);
        assert_eq!(
            Fields::new(&deep).next().map(|f| f.err()),
            Some(Some(Malformed("groups nest too deep")))
        );
    }

    #[test]
    fn what_is_written_reads_back_and_prost_reads_it() {
        let mut out = Vec::new();
        write_field(&mut out, 1, 3);
        out.extend_from_slice(b"job");
        write_key(&mut out, 2, VARINT);
        write_varint(&mut out, 300);
        assert_eq!(out.len(), field_len(3) + 3);
        let fields: Vec<(u32, String)> = Fields::new(&out)
            .map(|f| f.map(|f| (f.number, format!("{:?}", f.value))))
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            fields,
            [
                (1, "Bytes([106, 111, 98])".to_owned()),
                (2, "Varint(300)".to_owned())
            ]
        );
        let mut label = Vec::new();
        write_field(&mut label, 1, 3);
        label.extend_from_slice(b"job");
        write_field(&mut label, 2, 200);
        label.extend_from_slice(&[b'x'; 200]);
        assert_eq!(
            label,
            Label {
                name: "job".to_owned(),
                value: "x".repeat(200),
            }
            .encode_to_vec()
        );
    }

    #[test]
    fn groups_are_skipped_whole_as_prost_skips_them() {
        // Field 9, a group holding a varint, a nested group 2 and a string,
        // then field 2, a varint: a Sample's timestamp of 42 to prost.
        let bytes = [
            0x4b, 0x08, 0x01, 0x13, 0x18, 0x05, 0x14, 0x1a, 0x01, b'x', 0x4c, 0x10, 0x2a,
        ];
        let fields: Vec<(u32, String)> = Fields::new(&bytes)
            .map(|f| f.map(|f| (f.number, format!("{:?}", f.value))))
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            fields,
            [(9, "Group".to_owned()), (2, "Varint(42)".to_owned())]
        );
        assert_eq!(
            Sample::decode(&bytes[..]).unwrap(),
            Sample {
                value: 0.0,
                timestamp: 42
            }
        );
    }
}
