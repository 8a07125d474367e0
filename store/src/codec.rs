//! How rows travel between Rust and the stores: label arrays, bucket blobs,
//! and merging rows of the same series and window.

use std::collections::HashMap;

use crate::{StoreError, StoredRollup};
use vigil_domain::distinct::Distinct;
use vigil_domain::distribution::Distribution;
use vigil_domain::model::{Kind, Rollup, SeriesKey};
use vigil_domain::tenant::TenantId;

/// A stored row that does not make a series or a rollup again.
pub(super) fn corrupt(what: &str, reason: impl std::fmt::Display) -> StoreError {
    StoreError::Fatal {
        reason: format!("stored {what} is unreadable: {reason}"),
    }
}

/// The label keys and values as two arrays.
pub(super) fn label_arrays(series: &SeriesKey) -> (Vec<String>, Vec<String>) {
    series.labels().iter().cloned().unzip()
}

/// A series from its stored columns.
pub(super) fn series_from(
    tenant: &str,
    kind: &str,
    service: String,
    name: String,
    keys: Vec<String>,
    values: Vec<String>,
) -> Result<SeriesKey, StoreError> {
    let tenant = TenantId::parse(tenant).map_err(|e| corrupt("tenant", e))?;
    let kind = Kind::parse(kind).ok_or_else(|| corrupt("kind", kind))?;
    if keys.len() != values.len() {
        return Err(corrupt("labels", "keys and values differ in length"));
    }
    let labels = keys.into_iter().zip(values).collect();
    Ok(SeriesKey::new(tenant, kind, service, name, labels))
}

/// The statistics and buckets of a rollup as stored.
#[derive(Debug, Clone, Default)]
pub(super) struct Stats {
    pub count: u64,
    pub sum: f64,
    pub min: f64,
    pub max: f64,
    pub errors: u64,
    pub keys: Vec<i32>,
    pub counts: Vec<u64>,
    pub users: Distinct,
}

impl Stats {
    pub fn of(rollup: &Rollup) -> Stats {
        let (keys, counts) = rollup.values.to_buckets();
        Stats {
            count: rollup.values.count(),
            sum: rollup.values.sum(),
            min: rollup.values.min().unwrap_or(0.0),
            max: rollup.values.max().unwrap_or(0.0),
            errors: rollup.errors,
            keys,
            counts,
            users: rollup.users.clone(),
        }
    }

    /// Adds the users of stored registers.
    pub fn merge_users(&mut self, bytes: &[u8]) -> Result<(), StoreError> {
        if !bytes.is_empty() {
            let users = Distinct::from_bytes(bytes).map_err(|e| corrupt("users", e))?;
            self.users.merge(&users);
        }
        Ok(())
    }

    /// The merged rollup; without `buckets` (none were read), its
    /// distribution is a [`Distribution::summary`].
    pub fn into_rollup(self, buckets: bool) -> Result<Rollup, StoreError> {
        let values = if buckets {
            Distribution::from_buckets(&self.keys, &self.counts, self.sum, self.min, self.max)
        } else {
            Distribution::summary(self.count, self.sum, self.min, self.max)
        }
        .map_err(|e| corrupt("distribution", e))?;
        if values.count() != self.count {
            return Err(corrupt(
                "distribution",
                format!("count {} but buckets hold {}", self.count, values.count()),
            ));
        }
        Ok(Rollup {
            values,
            errors: self.errors,
            users: self.users,
        })
    }
}

/// Buckets as one blob: per bucket, the key (i32) then the count (u64),
/// little-endian.
pub(super) fn buckets_blob(keys: &[i32], counts: &[u64]) -> Vec<u8> {
    let mut blob = Vec::with_capacity(keys.len() * 12);
    for (key, count) in keys.iter().zip(counts) {
        blob.extend_from_slice(&key.to_le_bytes());
        blob.extend_from_slice(&count.to_le_bytes());
    }
    blob
}

/// The inverse of [`buckets_blob`].
pub(super) fn blob_buckets(blob: &[u8]) -> Result<(Vec<i32>, Vec<u64>), StoreError> {
    let (mut keys, mut counts) = (Vec::new(), Vec::new());
    extend_buckets(blob, &mut keys, &mut counts)?;
    Ok((keys, counts))
}

/// Appends the buckets of a blob to `keys` and `counts`.
pub(super) fn extend_buckets(
    blob: &[u8],
    keys: &mut Vec<i32>,
    counts: &mut Vec<u64>,
) -> Result<(), StoreError> {
    if !blob.len().is_multiple_of(12) {
        return Err(corrupt("buckets", format!("{} bytes", blob.len())));
    }
    for chunk in blob.chunks_exact(12) {
        let (key, count) = chunk.split_at(4);
        keys.push(i32::from_le_bytes(key.try_into().unwrap_or_default()));
        counts.push(u64::from_le_bytes(count.try_into().unwrap_or_default()));
    }
    Ok(())
}

/// Merges rows of the same series and window, ordered by window start then
/// series id.
pub(super) fn merge_rows(rows: impl IntoIterator<Item = StoredRollup>) -> Vec<StoredRollup> {
    let mut merged: HashMap<(u64, u32, u64), StoredRollup> = HashMap::new();
    for row in rows {
        let key = (row.series.id(), row.width_s, row.start_s);
        match merged.get_mut(&key) {
            Some(existing) => existing.rollup.merge(&row.rollup),
            None => {
                merged.insert(key, row);
            }
        }
    }
    let mut rows: Vec<(u64, StoredRollup)> = merged
        .into_iter()
        .map(|((id, _, _), row)| (id, row))
        .collect();
    rows.sort_by_key(|(id, row)| (row.start_s, *id));
    rows.into_iter().map(|(_, row)| row).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_blobs_round_trip() {
        let keys = vec![-1_048_576, 0, 7, 1_048_600];
        let counts = vec![1, u64::MAX, 3, 4];
        let blob = buckets_blob(&keys, &counts);
        assert_eq!(blob.len(), 48);
        assert_eq!(blob_buckets(&blob).expect("decodes"), (keys, counts));
        assert!(blob_buckets(&blob[..47]).is_err());
    }
}
