//! `Distribution`: a log-bucketed histogram with bounded relative error,
//! exactly mergeable, and stored as `(Int32 keys, UInt64 counts)` arrays that
//! ClickHouse merges with `sumMap`.
//!
//! Values go into the buckets of OpenTelemetry's base-2 exponential mapping at
//! the fixed scale 6 (see `mapping.rs`). Any quantile is within
//! [`RELATIVE_ERROR`] (0.55%) of the exact nearest-rank quantile of the
//! recorded values; count, min and max are exact and the sum is the float sum.
//! Merging adds bucket counts, so it is associative, commutative, and equal to
//! recording every value into one distribution.
//!
//! OTLP histogram points come in through [`Distribution::from_exponential`]
//! (exact at any scale ≥ 6) and [`Distribution::from_explicit`]; coarser
//! sources keep the resolution they had, with the bounds given there.

mod buckets;
mod import;
mod mapping;

use buckets::Buckets;
pub use import::{
    ExplicitHistogram, ExponentialHistogram, MAX_OTLP_BUCKETS, exponential_range_is_valid,
};
use mapping::{Bucket, index_of, representative};
pub use mapping::{RELATIVE_ERROR, SCALE};

/// Why a value or a stored form was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DistributionError {
    #[error("value {value} is not a finite number; only finite values can be recorded")]
    NotFinite { value: f64 },
    #[error("{field} is {value}, which is not a finite number")]
    NonFiniteStat { field: &'static str, value: f64 },
    #[error("min {min} is greater than max {max}")]
    MinAboveMax { min: f64, max: f64 },
    #[error("{keys} bucket keys but {counts} counts; the two arrays must have the same length")]
    LengthMismatch { keys: usize, counts: usize },
    #[error("bucket key {key} is not a valid distribution key")]
    InvalidKey { key: i32 },
    #[error("exponential histogram scale {scale} is outside the OTLP range -10..=20")]
    InvalidScale { scale: i32 },
    #[error(
        "exponential histogram bucket offset {offset} with {len} buckets leaves the index range"
    )]
    IndexOutOfRange { offset: i32, len: usize },
    #[error(
        "explicit histogram has {counts} bucket counts for {bounds} bounds; it needs bounds + 1"
    )]
    BoundsMismatch { bounds: usize, counts: usize },
    #[error("explicit bounds must be finite and strictly increasing; bound {index} is not")]
    BoundsNotIncreasing { index: usize },
    #[error("bucket counts add up to more than 2^64")]
    CountOverflow,
}

/// A log-bucketed histogram of f64 values. See the module documentation.
#[derive(Debug, Clone)]
pub struct Distribution {
    positive: Buckets,
    negative: Buckets,
    zero: u64,
    count: u64,
    sum: f64,
    min: f64,
    max: f64,
}

impl Default for Distribution {
    fn default() -> Self {
        Distribution {
            positive: Buckets::default(),
            negative: Buckets::default(),
            zero: 0,
            count: 0,
            sum: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
        }
    }
}

impl Distribution {
    /// An empty distribution.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records one value.
    #[inline]
    pub fn record(&mut self, value: f64) -> Result<(), DistributionError> {
        self.record_n(value, 1)
    }

    /// Records `n` occurrences of `value`; `n = 0` records nothing.
    #[inline]
    pub fn record_n(&mut self, value: f64, n: u64) -> Result<(), DistributionError> {
        if !value.is_finite() {
            return Err(DistributionError::NotFinite { value });
        }
        if n == 0 {
            return Ok(());
        }
        self.add_to_bucket(value, n);
        self.count = self.count.saturating_add(n);
        self.sum += value * n as f64;
        self.min = self.min.min(value);
        self.max = self.max.max(value);
        Ok(())
    }

    /// Adds `n` to the bucket of a finite `value`, leaving the statistics alone.
    #[inline]
    fn add_to_bucket(&mut self, value: f64, n: u64) {
        if value > 0.0 {
            self.positive.add(index_of(value), n);
        } else if value < 0.0 {
            self.negative.add(index_of(-value), n);
        } else {
            self.zero = self.zero.saturating_add(n);
        }
    }

    /// Adds every value of `other` to this distribution.
    pub fn merge(&mut self, other: &Distribution) {
        if other.count == 0 {
            return;
        }
        self.positive.merge(&other.positive);
        self.negative.merge(&other.negative);
        self.zero = self.zero.saturating_add(other.zero);
        self.count = self.count.saturating_add(other.count);
        self.sum += other.sum;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
    }

    /// The bytes its buckets take on the heap (beside the struct itself).
    pub fn heap_bytes(&self) -> usize {
        self.positive.heap_bytes() + self.negative.heap_bytes()
    }

    /// Number of recorded values.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Sum of the recorded values (0 when empty).
    pub fn sum(&self) -> f64 {
        self.sum
    }

    /// Smallest recorded value, `None` when empty.
    pub fn min(&self) -> Option<f64> {
        (self.count > 0).then_some(self.min)
    }

    /// Largest recorded value, `None` when empty.
    pub fn max(&self) -> Option<f64> {
        (self.count > 0).then_some(self.max)
    }

    /// Arithmetic mean, `None` when empty.
    pub fn mean(&self) -> Option<f64> {
        (self.count > 0).then(|| self.sum / self.count as f64)
    }

    /// The `q`-quantile (nearest rank: the value at rank ⌈q·count⌉, at least 1),
    /// within [`RELATIVE_ERROR`] of the exact one. `q = 0` gives the exact min
    /// and `q = 1` the exact max. `None` when empty, when `q` is not in
    /// `[0, 1]`, or for a [`Distribution::summary`] between its min and max.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.count == 0 || !(0.0..=1.0).contains(&q) {
            return None;
        }
        let rank = ((q * self.count as f64).ceil() as u64).clamp(1, self.count);
        if rank == 1 {
            return Some(self.min);
        }
        if rank == self.count {
            return Some(self.max);
        }
        let estimate = self.value_at_rank(rank)?;
        Some(estimate.clamp(self.min, self.max))
    }

    /// How many values are above `threshold`: exact for values further than
    /// [`RELATIVE_ERROR`] from it; a value closer may be counted on either
    /// side (its bucket's representative decides).
    pub fn count_above(&self, threshold: f64) -> u64 {
        if self.count == 0 || self.max <= threshold {
            return 0;
        }
        if self.min > threshold {
            return self.count;
        }
        let negative: u64 = self
            .negative
            .iter()
            .filter(|&(index, _)| -representative(index) > threshold)
            .map(|(_, n)| n)
            .sum();
        let zero = if threshold < 0.0 { self.zero } else { 0 };
        let positive: u64 = self
            .positive
            .iter()
            .filter(|&(index, _)| representative(index) > threshold)
            .map(|(_, n)| n)
            .sum();
        negative + zero + positive
    }

    /// The non-empty buckets from the smallest values up: each one's
    /// representative value (within [`RELATIVE_ERROR`] of its values) and
    /// count. Two distributions share their buckets, so equal
    /// representatives are the same bucket.
    pub fn ascending(&self) -> impl Iterator<Item = (f64, u64)> + '_ {
        let negative = self
            .negative
            .iter()
            .rev()
            .map(|(index, n)| (-representative(index), n));
        let zero = (self.zero > 0).then_some((0.0, self.zero));
        let positive = self
            .positive
            .iter()
            .map(|(index, n)| (representative(index), n));
        negative.chain(zero).chain(positive)
    }

    /// The representative value of the bucket holding the `rank`-th smallest
    /// value (1-based, `rank ≤ count`); `None` when the buckets hold fewer
    /// values (a [`Distribution::summary`]).
    fn value_at_rank(&self, rank: u64) -> Option<f64> {
        let mut seen = 0;
        for (index, n) in self.negative.iter().rev() {
            seen += n;
            if seen >= rank {
                return Some(-representative(index));
            }
        }
        seen += self.zero;
        if seen >= rank {
            return Some(0.0);
        }
        for (index, n) in self.positive.iter() {
            seen += n;
            if seen >= rank {
                return Some(representative(index));
            }
        }
        None
    }

    /// The non-empty buckets in the storage encoding: keys (ascending) and their
    /// counts, the arrays stored in ClickHouse and merged there with `sumMap`.
    pub fn to_buckets(&self) -> (Vec<i32>, Vec<u64>) {
        let mut pairs: Vec<(i32, u64)> = Vec::new();
        if self.zero > 0 {
            pairs.push((Bucket::Zero.key(), self.zero));
        }
        pairs.extend(
            self.positive
                .iter()
                .map(|(i, n)| (Bucket::Positive(i).key(), n)),
        );
        pairs.extend(
            self.negative
                .iter()
                .map(|(i, n)| (Bucket::Negative(i).key(), n)),
        );
        pairs.sort_unstable_by_key(|&(key, _)| key);
        pairs.into_iter().unzip()
    }

    /// Rebuilds a distribution from stored bucket arrays and statistics, such as
    /// a row merged by ClickHouse (`sumMap` of the buckets, sum of sums, min of
    /// mins, max of maxes). A key may repeat; its counts add up.
    pub fn from_buckets(
        keys: &[i32],
        counts: &[u64],
        sum: f64,
        min: f64,
        max: f64,
    ) -> Result<Self, DistributionError> {
        if keys.len() != counts.len() {
            return Err(DistributionError::LengthMismatch {
                keys: keys.len(),
                counts: counts.len(),
            });
        }
        let mut distribution = Distribution::new();
        for (&key, &n) in keys.iter().zip(counts) {
            if n == 0 {
                continue;
            }
            match Bucket::from_key(key).ok_or(DistributionError::InvalidKey { key })? {
                Bucket::Negative(index) => distribution.negative.add(index, n),
                Bucket::Zero => distribution.zero = distribution.zero.saturating_add(n),
                Bucket::Positive(index) => distribution.positive.add(index, n),
            }
            distribution.count = distribution
                .count
                .checked_add(n)
                .ok_or(DistributionError::CountOverflow)?;
        }
        if distribution.count > 0 {
            distribution.set_stats(sum, min, max)?;
        }
        Ok(distribution)
    }

    /// A distribution known by its statistics only, without buckets: what a
    /// read that needs no quantile takes, so that the store need not read or
    /// merge buckets. Count, sum, min, max and mean are right; quantiles
    /// other than the min and max are `None`, and merging it with a
    /// distribution that has buckets leaves their quantiles wrong.
    pub fn summary(count: u64, sum: f64, min: f64, max: f64) -> Result<Self, DistributionError> {
        let mut distribution = Distribution::new();
        if count > 0 {
            distribution.count = count;
            distribution.set_stats(sum, min, max)?;
        }
        Ok(distribution)
    }

    /// Sets sum, min and max after checking them.
    fn set_stats(&mut self, sum: f64, min: f64, max: f64) -> Result<(), DistributionError> {
        for (field, value) in [("sum", sum), ("min", min), ("max", max)] {
            if !value.is_finite() {
                return Err(DistributionError::NonFiniteStat { field, value });
            }
        }
        if min > max {
            return Err(DistributionError::MinAboveMax { min, max });
        }
        self.sum = sum;
        self.min = min;
        self.max = max;
        Ok(())
    }
}

impl From<&Distribution> for vigil_proto::bus::v1::Distribution {
    fn from(distribution: &Distribution) -> Self {
        let (keys, counts) = distribution.to_buckets();
        vigil_proto::bus::v1::Distribution {
            keys,
            counts,
            sum: distribution.sum,
            min: distribution.min().unwrap_or(0.0),
            max: distribution.max().unwrap_or(0.0),
        }
    }
}

impl TryFrom<&vigil_proto::bus::v1::Distribution> for Distribution {
    type Error = DistributionError;

    fn try_from(message: &vigil_proto::bus::v1::Distribution) -> Result<Self, Self::Error> {
        Distribution::from_buckets(
            &message.keys,
            &message.counts,
            message.sum,
            message.min,
            message.max,
        )
    }
}

#[cfg(test)]
mod tests;
