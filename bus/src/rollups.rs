//! What the aggregator publishes for the alerter and other readers: each
//! flush's rollup rows (`vigil.bus.v1.RollupBatch`), and the messages it could
//! not read (`vigil.bus.v1.DeadLetter`). See `proto/vigil/bus/v1/rollup.proto`.

use std::sync::Arc;

use prost::Message as _;
use vigil_proto::bus::v1 as proto;

use super::{Message, Record};
use vigil_domain::distinct::Distinct;
use vigil_domain::distribution::Distribution;
use vigil_domain::model::{Checkpoint, RollupRow};
use vigil_domain::model::{Kind, Rollup, SeriesKey};
use vigil_domain::tenant::TenantId;

/// Encoded rows one message holds at most, in bytes: a flush larger than
/// this is split (Kafka's default record limit is 1 MiB).
pub const MAX_BATCH_BYTES: usize = 512 * 1024;

/// One flush of one partition, or a part of it.
#[derive(Debug, Clone)]
pub struct RollupBatch {
    pub source: String,
    pub partition: i32,
    pub seq: u64,
    pub watermark_s: u64,
    /// This message's place among the `parts` of the flush, from 0.
    pub part: u32,
    pub parts: u32,
    pub rows: Vec<RollupRow>,
}

/// Why a published message could not be read.
#[derive(Debug, thiserror::Error)]
pub enum RollupDecodeError {
    #[error("not a vigil.bus.v1.RollupBatch: {0}")]
    Payload(#[from] prost::DecodeError),
    #[error("rollup {index}: {reason}")]
    Row { index: usize, reason: String },
}

fn encode_row(row: &RollupRow) -> proto::Rollup {
    let series = &row.series;
    proto::Rollup {
        tenant: series.tenant.as_str().to_owned(),
        kind: series.kind.as_str().to_owned(),
        service: series.service.clone(),
        name: series.name.clone(),
        labels: series
            .labels()
            .iter()
            .map(|(key, value)| proto::Label {
                key: key.clone(),
                value: value.clone(),
            })
            .collect(),
        width_s: row.width_s,
        start_s: row.start_s,
        values: Some((&row.rollup.values).into()),
        errors: row.rollup.errors,
        correction: row.correction,
        users: row.rollup.users.to_bytes(),
    }
}

fn decode_row(row: proto::Rollup, partition: i32) -> Result<RollupRow, String> {
    let tenant = TenantId::parse(&row.tenant).map_err(|e| format!("tenant: {e}"))?;
    let kind = Kind::parse(&row.kind).ok_or_else(|| format!("unknown kind {:?}", row.kind))?;
    let values = match &row.values {
        Some(values) => Distribution::try_from(values).map_err(|e| format!("values: {e}"))?,
        None => Distribution::new(),
    };
    let users = Distinct::from_bytes(&row.users).map_err(|e| format!("users: {e}"))?;
    let labels = row.labels.into_iter().map(|l| (l.key, l.value)).collect();
    Ok(RollupRow {
        series: Arc::new(SeriesKey::new(tenant, kind, row.service, row.name, labels)),
        partition,
        width_s: row.width_s,
        start_s: row.start_s,
        rollup: Rollup {
            values,
            errors: row.errors,
            users,
        },
        correction: row.correction,
    })
}

/// The records of one partition's flush: `rows` in parts of at most
/// [`MAX_BATCH_BYTES`], keyed `{source}/{partition}`.
pub fn encode(source: &str, checkpoint: &Checkpoint, rows: &[RollupRow]) -> Vec<Record> {
    let mut parts: Vec<Vec<proto::Rollup>> = Vec::new();
    let mut current = Vec::new();
    let mut size = 0;
    for row in rows {
        let encoded = encode_row(row);
        // The row, its field tag and its length prefix.
        let length = encoded.encoded_len();
        let length = 1 + prost::length_delimiter_len(length) + length;
        if size + length > MAX_BATCH_BYTES && !current.is_empty() {
            parts.push(std::mem::take(&mut current));
            size = 0;
        }
        size += length;
        current.push(encoded);
    }
    parts.push(current);
    let count = u32::try_from(parts.len()).unwrap_or(u32::MAX);
    let key = format!("{source}/{}", checkpoint.partition);
    parts
        .into_iter()
        .zip(0..)
        .map(|(rollups, part)| {
            let batch = proto::RollupBatch {
                source: source.to_owned(),
                partition: checkpoint.partition,
                seq: checkpoint.seq,
                watermark_s: checkpoint.watermark_s,
                part,
                parts: count,
                rollups,
            };
            Record::new(key.clone(), batch.encode_to_vec())
        })
        .collect()
}

/// Reads one published batch.
pub fn decode(payload: &[u8]) -> Result<RollupBatch, RollupDecodeError> {
    let batch = proto::RollupBatch::decode(payload)?;
    let partition = batch.partition;
    let rows = batch
        .rollups
        .into_iter()
        .enumerate()
        .map(|(index, row)| {
            decode_row(row, partition).map_err(|reason| RollupDecodeError::Row { index, reason })
        })
        .collect::<Result<_, _>>()?;
    Ok(RollupBatch {
        source: batch.source,
        partition,
        seq: batch.seq,
        watermark_s: batch.watermark_s,
        part: batch.part,
        parts: batch.parts,
        rows,
    })
}

/// The dead-letter record of a message that `source` could not read.
pub fn dead_letter(source: &str, message: &Message, reason: &str) -> Record {
    let letter = proto::DeadLetter {
        source: source.to_owned(),
        partition: message.partition,
        offset: message.offset,
        key: message.key.to_vec(),
        payload: message.payload.to_vec(),
        reason: reason.to_owned(),
    };
    Record::new(message.key.clone(), letter.encode_to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(index: u64) -> RollupRow {
        let series = SeriesKey::new(
            TenantId::parse("acme").expect("tenant"),
            Kind::Span,
            "pay",
            "POST /pay",
            vec![("vigil.unit".into(), format!("u{index}"))],
        );
        let mut rollup = Rollup::default();
        for ms in 1..=index % 50 + 1 {
            rollup.record(ms as f64, ms == 1).expect("finite");
        }
        for user in 0..index % 3 {
            rollup.users.insert(&format!("user-{user}"));
        }
        RollupRow {
            series: Arc::new(series),
            partition: 3,
            width_s: 10,
            start_s: 1_000 + index * 10,
            rollup,
            correction: index % 2 == 1,
        }
    }

    #[test]
    fn a_flush_round_trips_in_parts_small_enough_for_kafka() {
        let checkpoint = Checkpoint {
            seq: 7,
            partition: 3,
            next_offset: 100,
            watermark_s: 2_000,
        };
        let rows: Vec<RollupRow> = (0..20_000).map(row).collect();
        let records = encode("vigil.otlp.traces", &checkpoint, &rows);
        assert!(records.len() > 1, "{} parts", records.len());
        let mut decoded = Vec::new();
        for (i, record) in records.iter().enumerate() {
            assert!(record.payload.len() <= MAX_BATCH_BYTES + 64);
            assert_eq!(&record.key[..], b"vigil.otlp.traces/3");
            let batch = decode(&record.payload).expect("decodes");
            assert_eq!(
                (batch.seq, batch.watermark_s, batch.partition),
                (7, 2_000, 3)
            );
            assert_eq!(batch.part as usize, i);
            assert_eq!(batch.parts as usize, records.len());
            decoded.extend(batch.rows);
        }
        assert_eq!(decoded.len(), rows.len());
        for (got, sent) in decoded.iter().zip(&rows) {
            assert_eq!(got.series, sent.series);
            assert_eq!(
                (got.width_s, got.start_s, got.correction),
                (sent.width_s, sent.start_s, sent.correction)
            );
            assert_eq!(got.rollup.errors, sent.rollup.errors);
            assert_eq!(got.rollup.values.count(), sent.rollup.values.count());
            assert_eq!(got.rollup.values.sum(), sent.rollup.values.sum());
            assert_eq!(
                got.rollup.values.to_buckets(),
                sent.rollup.values.to_buckets()
            );
            assert_eq!(got.rollup.users, sent.rollup.users);
        }
    }

    #[test]
    fn a_broken_row_is_named() {
        let mut batch = proto::RollupBatch::default();
        batch.rollups.push(encode_row(&row(1)));
        batch.rollups.push(proto::Rollup {
            tenant: "acme".into(),
            kind: "gauge".into(),
            ..Default::default()
        });
        let error = decode(&batch.encode_to_vec()).expect_err("refused");
        assert_eq!(error.to_string(), "rollup 1: unknown kind \"gauge\"");
        assert!(decode(b"\xff\xff").is_err());
    }
}
