//! Imports of OTLP histogram data points into a [`Distribution`]. Missing sum,
//! min or max are estimated from the bucket representatives.

use super::mapping::{SCALE, is_valid_index, representative};
use super::{Distribution, DistributionError};

/// The fields of one OTLP `ExponentialHistogramDataPoint` that carry values.
#[derive(Debug, Clone, Copy, Default)]
pub struct ExponentialHistogram<'a> {
    pub scale: i32,
    pub zero_count: u64,
    pub positive_offset: i32,
    pub positive_counts: &'a [u64],
    pub negative_offset: i32,
    pub negative_counts: &'a [u64],
    pub sum: Option<f64>,
    pub min: Option<f64>,
    pub max: Option<f64>,
}

/// The fields of one OTLP `HistogramDataPoint` (explicit bounds) that carry values.
#[derive(Debug, Clone, Copy, Default)]
pub struct ExplicitHistogram<'a> {
    /// Upper bounds of every bucket but the last, strictly increasing.
    pub bounds: &'a [f64],
    /// `bounds.len() + 1` counts, or none at all.
    pub counts: &'a [u64],
    pub sum: Option<f64>,
    pub min: Option<f64>,
    pub max: Option<f64>,
}

const MIN_OTLP_SCALE: i32 = -10;
const MAX_OTLP_SCALE: i32 = 20;

impl Distribution {
    /// Builds a distribution from an OTLP exponential histogram point.
    ///
    /// At scale `s ≥ 6` this is exact: source bucket `i` becomes bucket
    /// `i >> (s − 6)` (the OTLP downscale), and quantiles keep the usual
    /// [`RELATIVE_ERROR`](super::RELATIVE_ERROR). At `s < 6` the source is
    /// coarser than we are; each source bucket's count goes to the bucket at its
    /// geometric midpoint, so a quantile is within `2^(2^-(s+1))·(1 + 0.0055) − 1`
    /// of the exact one: 1.6% at scale 5, 2.7% at 4, 5.0% at 3 — the resolution
    /// the source itself had.
    pub fn from_exponential(point: &ExponentialHistogram<'_>) -> Result<Self, DistributionError> {
        let scale = point.scale;
        if !(MIN_OTLP_SCALE..=MAX_OTLP_SCALE).contains(&scale) {
            return Err(DistributionError::InvalidScale { scale });
        }
        let mut distribution = Distribution::new();
        let mut estimated_sum = 0.0;
        let mut count = point.zero_count;
        distribution.zero = point.zero_count;
        for (offset, counts, sign) in [
            (point.positive_offset, point.positive_counts, 1.0),
            (point.negative_offset, point.negative_counts, -1.0),
        ] {
            for (position, &n) in counts.iter().enumerate().filter(|&(_, &n)| n > 0) {
                let index = to_our_index(scale, i64::from(offset) + position as i64).ok_or(
                    DistributionError::IndexOutOfRange {
                        offset,
                        len: counts.len(),
                    },
                )?;
                if sign > 0.0 {
                    distribution.positive.add(index, n);
                } else {
                    distribution.negative.add(index, n);
                }
                estimated_sum += sign * representative(index) * n as f64;
                count = count
                    .checked_add(n)
                    .ok_or(DistributionError::CountOverflow)?;
            }
        }
        distribution.count = count;
        distribution.finish_import(point.sum.unwrap_or(estimated_sum), point.min, point.max)?;
        Ok(distribution)
    }

    /// Builds a distribution from an OTLP explicit-bucket histogram point.
    ///
    /// Each bucket's count goes to the point of `(lo, hi]` (narrowed to the
    /// point's min and max when known) with the smallest relative distance to
    /// both ends, so a quantile that falls in a bucket with `0 < lo` is within
    /// `(hi − lo)/(hi + lo) + 0.55%` of the exact one. The unbounded first and
    /// last buckets stand at their finite bound, or at the point's min or max
    /// when given. A point without bucket counts gives an empty distribution.
    pub fn from_explicit(point: &ExplicitHistogram<'_>) -> Result<Self, DistributionError> {
        let mut distribution = Distribution::new();
        if point.counts.is_empty() {
            return Ok(distribution);
        }
        let bounds = point.bounds;
        if point.counts.len() != bounds.len() + 1 {
            return Err(DistributionError::BoundsMismatch {
                bounds: bounds.len(),
                counts: point.counts.len(),
            });
        }
        if let Some(index) = (0..bounds.len())
            .find(|&i| !bounds[i].is_finite() || (i > 0 && bounds[i] <= bounds[i - 1]))
        {
            return Err(DistributionError::BoundsNotIncreasing { index });
        }
        let mut estimated_sum = 0.0;
        for (j, &n) in point.counts.iter().enumerate().filter(|&(_, &n)| n > 0) {
            let low = if j == 0 {
                f64::NEG_INFINITY
            } else {
                bounds[j - 1]
            };
            let high = bounds.get(j).copied().unwrap_or(f64::INFINITY);
            let value = explicit_representative(low, high, point);
            distribution.add_to_bucket(value, n);
            distribution.count = distribution
                .count
                .checked_add(n)
                .ok_or(DistributionError::CountOverflow)?;
            estimated_sum += value * n as f64;
        }
        distribution.finish_import(point.sum.unwrap_or(estimated_sum), point.min, point.max)?;
        Ok(distribution)
    }

    /// Sets the statistics of an imported distribution, estimating min and max
    /// from its lowest and highest buckets when the point had none.
    fn finish_import(
        &mut self,
        sum: f64,
        min: Option<f64>,
        max: Option<f64>,
    ) -> Result<(), DistributionError> {
        if self.count == 0 {
            return Ok(());
        }
        let lowest = if let Some((_, high)) = self.negative.range() {
            -representative(high)
        } else if self.zero > 0 {
            0.0
        } else {
            self.positive
                .range()
                .map_or(0.0, |(low, _)| representative(low))
        };
        let highest = if let Some((_, high)) = self.positive.range() {
            representative(high)
        } else if self.zero > 0 {
            0.0
        } else {
            self.negative
                .range()
                .map_or(0.0, |(low, _)| -representative(low))
        };
        self.set_stats(sum, min.unwrap_or(lowest), max.unwrap_or(highest))
    }
}

/// The most buckets one side of an OTLP exponential histogram (or one
/// explicit histogram) may span: OpenTelemetry SDKs default to 160, so this
/// leaves room for any honest exporter while bounding what one point, or the
/// difference of two cumulative points, may allocate (128 KiB of counts).
pub const MAX_OTLP_BUCKETS: usize = 16_384;

/// Whether `len` buckets from `offset` at `scale` all stand for finite
/// values (the mapping is monotonic: the ends decide).
pub fn exponential_range_is_valid(scale: i32, offset: i32, len: usize) -> bool {
    if len == 0 {
        return true;
    }
    let last = i64::from(offset) + len as i64 - 1;
    (MIN_OTLP_SCALE..=MAX_OTLP_SCALE).contains(&scale)
        && to_our_index(scale, i64::from(offset)).is_some()
        && to_our_index(scale, last).is_some()
}

/// Our bucket index for bucket `index` of an exponential histogram at `scale`,
/// `None` when it lies outside the range of f64 values.
fn to_our_index(scale: i32, index: i64) -> Option<i32> {
    let ours = if scale >= SCALE {
        index >> (scale - SCALE)
    } else {
        let shift = SCALE - scale;
        (index << shift) + (1 << (shift - 1))
    };
    i32::try_from(ours)
        .ok()
        .filter(|&ours| is_valid_index(ours))
}

/// The value that stands for the explicit bucket `(low, high]`.
fn explicit_representative(low: f64, high: f64, point: &ExplicitHistogram<'_>) -> f64 {
    let (mut low, mut high) = (low, high);
    // Every value of the point lies in [min, max]; narrow the bucket to that
    // when the two are consistent with it.
    if let Some(min) = point.min.filter(|&min| min <= high) {
        low = low.max(min);
    }
    if let Some(max) = point.max.filter(|&max| max >= low) {
        high = high.min(max);
    }
    match (low.is_finite(), high.is_finite()) {
        // Same sign: the point nearest, relatively, to both ends.
        (true, true) if low > 0.0 || high < 0.0 => 2.0 * low * high / (low + high),
        (true, true) => (low + high) / 2.0,
        (true, false) => low,
        (false, true) => high,
        (false, false) => 0.0,
    }
}
