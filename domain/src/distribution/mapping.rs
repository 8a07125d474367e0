//! The bucket mapping: OpenTelemetry's base-2 exponential mapping at the fixed
//! scale [`SCALE`], and the `Int32` key encoding used in storage.
//!
//! Bucket `i` holds the values in `(2^(i/64), 2^((i+1)/64)]` (upper-inclusive,
//! as in OTLP exponential histograms), so an OTLP histogram at a finer scale
//! maps onto these buckets exactly by an arithmetic shift of its indices.

use std::sync::LazyLock;

/// The scale of every [`Distribution`](super::Distribution): 2^6 = 64 buckets
/// per power of two.
pub const SCALE: i32 = 6;

/// Buckets per power of two.
const SUB_BUCKETS: i32 = 1 << SCALE;

/// Ratio of a bucket's upper to its lower boundary: `2^(1/64)`.
pub(crate) static BASE: LazyLock<f64> = LazyLock::new(|| (1.0 / f64::from(SUB_BUCKETS)).exp2());

/// Largest relative error of any estimate made from a bucket, when the bucket
/// is represented by `2·lower·upper / (lower + upper)`: `(b − 1)/(b + 1)` for
/// `b = 2^(1/64)`, that is 0.5415%.
pub const RELATIVE_ERROR: f64 = 0.005_416;

/// Key of the zero bucket in the storage encoding.
pub(crate) const ZERO_KEY: i32 = -(1 << 20);
/// Negative values' keys are their bucket index plus this offset.
pub(crate) const NEGATIVE_KEY_OFFSET: i32 = 1 << 20;
/// The bucket of the smallest positive f64, the subnormal 2^-1074.
const MIN_INDEX: i32 = -1074 * SUB_BUCKETS - 1;
/// The bucket of the largest f64, just below 2^1024.
const MAX_INDEX: i32 = 1024 * SUB_BUCKETS - 1;

/// Bits of the mantissa that select a cell of the lookup table.
const CELL_BITS: u32 = 8;
const MANTISSA_BITS: u32 = 52;
const MANTISSA_MASK: u64 = (1 << MANTISSA_BITS) - 1;

struct Tables {
    /// `boundaries[j] = 2^(j/64)` for j in 0..=64: the sub-bucket boundaries
    /// within one power of two, as mantissas in `[1, 2]`.
    boundaries: [f64; SUB_BUCKETS as usize + 1],
    /// For each of the 256 equal cells of the mantissa range `[1, 2)`, how many
    /// boundaries lie strictly below the cell's start. Boundaries are at least
    /// 1.09% apart and cells are 0.39% wide, so at most one boundary falls inside
    /// a cell, and one comparison finishes the count.
    below_cell: [u8; 1 << CELL_BITS],
}

static TABLES: LazyLock<Tables> = LazyLock::new(|| {
    let mut boundaries = [0.0; SUB_BUCKETS as usize + 1];
    for (j, b) in boundaries.iter_mut().enumerate() {
        *b = (j as f64 / f64::from(SUB_BUCKETS)).exp2();
    }
    boundaries[0] = 1.0;
    boundaries[SUB_BUCKETS as usize] = 2.0;
    let mut below_cell = [0; 1 << CELL_BITS];
    for (cell, below) in below_cell.iter_mut().enumerate() {
        let start = 1.0 + cell as f64 / f64::from(1u32 << CELL_BITS);
        *below = boundaries.iter().filter(|&&b| b < start).count() as u8;
    }
    Tables {
        boundaries,
        below_cell,
    }
});

/// The bucket index of a finite, strictly positive value.
#[inline]
pub(crate) fn index_of(value: f64) -> i32 {
    debug_assert!(value.is_finite() && value > 0.0);
    let mut bits = value.to_bits();
    let mut exponent = ((bits >> MANTISSA_BITS) & 0x7ff) as i32;
    if exponent == 0 {
        // Subnormal: scale by 2^64 (exact) to get a normal number, then undo.
        bits = (value * f64::from_bits(0x43f0_0000_0000_0000)).to_bits();
        exponent = ((bits >> MANTISSA_BITS) & 0x7ff) as i32 - 64;
    }
    let exponent = exponent - 1023;
    let mantissa = f64::from_bits((bits & MANTISSA_MASK) | 0x3ff0_0000_0000_0000);
    let tables = &*TABLES;
    let cell = ((bits & MANTISSA_MASK) >> (MANTISSA_BITS - CELL_BITS)) as usize;
    let below = usize::from(tables.below_cell[cell]);
    let below = below + usize::from(tables.boundaries[below] < mantissa);
    exponent * SUB_BUCKETS + below as i32 - 1
}

/// Whether `index` can be the bucket of a finite non-zero f64.
pub(crate) fn is_valid_index(index: i32) -> bool {
    (MIN_INDEX..=MAX_INDEX).contains(&index)
}

/// Lower boundary of bucket `index`: `2^(index/64)`.
pub(crate) fn lower_bound(index: i32) -> f64 {
    (f64::from(index) / f64::from(SUB_BUCKETS)).exp2()
}

/// The value that stands for bucket `index` in estimates: the point whose
/// largest relative distance to any value of the bucket is smallest.
pub(crate) fn representative(index: i32) -> f64 {
    let base = *BASE;
    lower_bound(index) * (2.0 * base / (1.0 + base))
}

/// One bucket of a distribution, by where it sits on the number line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Bucket {
    Negative(i32),
    Zero,
    Positive(i32),
}

impl Bucket {
    pub(crate) fn key(self) -> i32 {
        match self {
            Bucket::Negative(index) => NEGATIVE_KEY_OFFSET + index,
            Bucket::Zero => ZERO_KEY,
            Bucket::Positive(index) => index,
        }
    }

    pub(crate) fn from_key(key: i32) -> Option<Bucket> {
        if key == ZERO_KEY {
            Some(Bucket::Zero)
        } else if is_valid_index(key) {
            Some(Bucket::Positive(key))
        } else {
            let index = key.checked_sub(NEGATIVE_KEY_OFFSET)?;
            is_valid_index(index).then_some(Bucket::Negative(index))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reference mapping from the OTLP specification, computed with a
    /// logarithm; exact except within a rounding error of a boundary.
    fn index_by_log(value: f64) -> i32 {
        ((value.log2() * f64::from(SUB_BUCKETS)).ceil() as i32) - 1
    }

    #[test]
    fn powers_of_two_close_the_bucket_below_them() {
        assert_eq!(index_of(1.0), -1);
        assert_eq!(index_of(2.0), 63);
        assert_eq!(index_of(0.5), -65);
        assert_eq!(index_of(1024.0), 10 * 64 - 1);
        assert_eq!(index_of(f64::from_bits(1.0f64.to_bits() + 1)), 0);
    }

    #[test]
    fn mapping_agrees_with_the_logarithm_across_the_range() {
        let mut value = 1e-300;
        while value < 1e300 {
            let by_log = index_by_log(value);
            let index = index_of(value);
            // A value within rounding of a boundary may land on either side.
            assert!((index - by_log).abs() <= 1, "{value}: {index} vs {by_log}");
            if index != by_log {
                let boundary = lower_bound(by_log.max(index));
                assert!((value / boundary - 1.0).abs() < 1e-12, "{value}");
            }
            value *= 1.000_37;
        }
    }

    #[test]
    fn every_value_lies_in_its_bucket() {
        for value in [1e-9, 3.3e-7, 0.001, 0.7, 1.5, 299.0, 1e6, 1e12, 7.7e200] {
            let index = index_of(value);
            let (lower, upper) = (lower_bound(index), lower_bound(index + 1));
            assert!(lower < value * (1.0 + 1e-15) && value <= upper * (1.0 + 1e-15));
        }
    }

    #[test]
    fn subnormals_and_extremes_map_inside_the_key_range() {
        let smallest = f64::from_bits(1);
        assert_eq!(index_of(smallest), MIN_INDEX);
        assert_eq!(index_of(f64::MIN_POSITIVE), -1022 * 64 - 1);
        assert_eq!(index_of(f64::MAX), MAX_INDEX);
    }

    #[test]
    fn representative_is_within_the_stated_error_of_both_boundaries() {
        for index in [-700, -1, 0, 1, 63, 640, 2000] {
            let rep = representative(index);
            let (lower, upper) = (lower_bound(index), lower_bound(index + 1));
            assert!((rep / lower - 1.0) <= RELATIVE_ERROR);
            assert!((1.0 - rep / upper) <= RELATIVE_ERROR);
        }
    }

    #[test]
    fn keys_round_trip_and_reject_out_of_range() {
        for bucket in [
            Bucket::Zero,
            Bucket::Positive(-68737),
            Bucket::Positive(65535),
            Bucket::Negative(-68737),
            Bucket::Negative(0),
            Bucket::Negative(65535),
        ] {
            assert_eq!(Bucket::from_key(bucket.key()), Some(bucket));
        }
        assert_eq!(Bucket::from_key(MAX_INDEX + 1), None);
        assert_eq!(Bucket::from_key(NEGATIVE_KEY_OFFSET + MIN_INDEX - 1), None);
        assert_eq!(Bucket::from_key(i32::MIN), None);
        assert_eq!(Bucket::from_key(i32::MAX), None);
    }
}
