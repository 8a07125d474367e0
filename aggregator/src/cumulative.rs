//! Cumulative to delta: what a cumulative sum or histogram gained since its
//! previous point, per series.
//!
//! Rules (those of the OpenTelemetry Collector's `cumulativetodelta`, made
//! deterministic so that a replay computes the same deltas):
//! - a series seen for the first time counts from its start time: the whole
//!   value is new if the point has a start time, nothing if it has none (the
//!   point only becomes the base);
//! - a changed start time, or a value (any bucket) below the previous one, is
//!   a reset: the whole value is new;
//! - the same point exported twice adds nothing.
//!
//! The state of a series is its last point, so it can be rebuilt by replaying
//! the bus from [`Cumulative::replay_from`]. A series unseen (in event time)
//! for the staleness is forgotten.

use std::collections::HashMap;

/// The value of a cumulative point.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Sum(f64),
    Explicit {
        bounds: Vec<f64>,
        counts: Vec<u64>,
        sum: f64,
    },
    Exponential(Exponential),
}

/// Buckets of an exponential histogram, as OTLP carries them.
#[derive(Debug, Clone, PartialEq)]
pub struct Exponential {
    pub scale: i32,
    pub zero_count: u64,
    pub positive_offset: i32,
    pub positive: Vec<u64>,
    pub negative_offset: i32,
    pub negative: Vec<u64>,
    pub sum: f64,
}

#[derive(Debug, Clone)]
struct Last {
    start_ns: u64,
    time_ns: u64,
    offset: i64,
    value: Value,
}

/// Per-series state for turning cumulative points into deltas.
#[derive(Debug, Default)]
pub struct Cumulative {
    series: HashMap<u64, Last>,
}

impl Cumulative {
    /// Takes point `value` of `series` (from the bus message at `offset`) and
    /// returns what it adds since the previous one, or `None` when it adds
    /// nothing to count (a base point, or an unchanged one).
    pub fn delta(
        &mut self,
        series: u64,
        start_ns: u64,
        time_ns: u64,
        offset: i64,
        value: Value,
    ) -> Option<Value> {
        let current = Last {
            start_ns,
            time_ns,
            offset,
            value,
        };
        let previous = self.series.insert(series, current.clone());
        let delta = match previous {
            None if start_ns == 0 => None,
            None => Some(current.value),
            Some(previous) if previous.start_ns != start_ns => Some(current.value),
            Some(previous) => Some(difference(&previous.value, &current.value)),
        }?;
        (!is_empty(&delta)).then_some(delta)
    }

    /// Forgets series whose last point is older than `horizon_ns`.
    pub fn forget_before(&mut self, horizon_ns: u64) {
        self.series.retain(|_, last| last.time_ns >= horizon_ns);
    }

    /// The first bus offset to replay so that every remembered series gets
    /// its last point back; `next_offset` when nothing is remembered.
    pub fn replay_from(&self, next_offset: i64) -> i64 {
        self.series
            .values()
            .map(|last| last.offset)
            .min()
            .map_or(next_offset, |oldest| oldest.min(next_offset))
    }
}

fn is_empty(value: &Value) -> bool {
    match value {
        Value::Sum(_) => false,
        Value::Explicit { counts, .. } => counts.iter().all(|&n| n == 0),
        Value::Exponential(e) => {
            e.zero_count == 0 && e.positive.iter().chain(&e.negative).all(|&n| n == 0)
        }
    }
}

/// `current − previous`, or `current` itself when the series was reset.
fn difference(previous: &Value, current: &Value) -> Value {
    match (previous, current) {
        (Value::Sum(before), Value::Sum(now)) if now >= before => Value::Sum(now - before),
        (
            Value::Explicit {
                bounds: b0,
                counts: c0,
                sum: s0,
            },
            Value::Explicit {
                bounds,
                counts,
                sum,
            },
        ) if b0 == bounds => match subtract(c0, counts) {
            Some(counts) => Value::Explicit {
                bounds: bounds.clone(),
                counts,
                sum: sum - s0,
            },
            None => current.clone(),
        },
        (Value::Exponential(before), Value::Exponential(now)) => {
            exponential_difference(before, now).unwrap_or_else(|| current.clone())
        }
        _ => current.clone(),
    }
}

/// Element-wise `after − before`, `None` if any count went down.
fn subtract(before: &[u64], after: &[u64]) -> Option<Vec<u64>> {
    if before.len() != after.len() {
        return None;
    }
    before
        .iter()
        .zip(after)
        .map(|(&b, &a)| a.checked_sub(b))
        .collect()
}

/// The difference of two exponential histograms, at the coarser scale of
/// the two (an SDK lowers the scale of a cumulative histogram as its range
/// grows); `None` on a reset.
fn exponential_difference(before: &Exponential, now: &Exponential) -> Option<Value> {
    let scale = before.scale.min(now.scale);
    let before = downscale(before, scale);
    let now = downscale(now, scale);
    let (positive_offset, positive) = subtract_at(
        (before.positive_offset, &before.positive),
        (now.positive_offset, &now.positive),
    )?;
    let (negative_offset, negative) = subtract_at(
        (before.negative_offset, &before.negative),
        (now.negative_offset, &now.negative),
    )?;
    Some(Value::Exponential(Exponential {
        scale,
        zero_count: now.zero_count.checked_sub(before.zero_count)?,
        positive_offset,
        positive,
        negative_offset,
        negative,
        sum: now.sum - before.sum,
    }))
}

/// The histogram at a coarser `scale`: bucket `i` becomes `i >> (s − scale)`.
fn downscale(histogram: &Exponential, scale: i32) -> Exponential {
    let shift = u32::try_from(histogram.scale - scale).unwrap_or(0);
    let rebucket = |offset: i32, counts: &[u64]| -> (i32, Vec<u64>) {
        if shift == 0 || counts.is_empty() {
            return (offset, counts.to_vec());
        }
        let first = offset >> shift;
        let mut out: Vec<u64> = Vec::new();
        for (position, &n) in counts.iter().enumerate() {
            let index = (i64::from(offset) + position as i64) >> shift;
            let slot = usize::try_from(index - i64::from(first)).unwrap_or(0);
            if out.len() <= slot {
                out.resize(slot + 1, 0);
            }
            out[slot] += n;
        }
        (first, out)
    };
    let (positive_offset, positive) = rebucket(histogram.positive_offset, &histogram.positive);
    let (negative_offset, negative) = rebucket(histogram.negative_offset, &histogram.negative);
    Exponential {
        scale,
        zero_count: histogram.zero_count,
        positive_offset,
        positive,
        negative_offset,
        negative,
        sum: histogram.sum,
    }
}

/// `after − before` for bucket arrays that may start at different offsets;
/// `None` if any bucket went down.
fn subtract_at(before: (i32, &[u64]), after: (i32, &[u64])) -> Option<(i32, Vec<u64>)> {
    let at = |(offset, counts): (i32, &[u64]), index: i64| -> u64 {
        usize::try_from(index - i64::from(offset))
            .ok()
            .and_then(|i| counts.get(i).copied())
            .unwrap_or(0)
    };
    let spans = [before, after]
        .into_iter()
        .filter(|(_, counts)| !counts.is_empty())
        .map(|(offset, counts)| (i64::from(offset), i64::from(offset) + counts.len() as i64));
    let (low, high) = spans.fold((i64::MAX, i64::MIN), |(lo, hi), (a, b)| {
        (lo.min(a), hi.max(b))
    });
    if low >= high {
        return Some((0, Vec::new()));
    }
    let counts = (low..high)
        .map(|index| at(after, index).checked_sub(at(before, index)))
        .collect::<Option<Vec<u64>>>()?;
    Some((i32::try_from(low).ok()?, counts))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sum(v: f64) -> Value {
        Value::Sum(v)
    }

    #[test]
    fn sums_become_increases_with_resets() {
        let mut c = Cumulative::default();
        assert_eq!(c.delta(1, 100, 1_000, 0, sum(5.0)), Some(sum(5.0)));
        assert_eq!(c.delta(1, 100, 2_000, 1, sum(8.0)), Some(sum(3.0)));
        // Exported twice: adds nothing to the total.
        assert_eq!(c.delta(1, 100, 2_000, 2, sum(8.0)), Some(sum(0.0)));
        // The counter went down: a restart, everything is new.
        assert_eq!(c.delta(1, 100, 3_000, 3, sum(2.0)), Some(sum(2.0)));
        // A new start time: a restart too.
        assert_eq!(c.delta(1, 500, 4_000, 4, sum(9.0)), Some(sum(9.0)));
        // Without a start time the first point is only the base.
        assert_eq!(c.delta(2, 0, 1_000, 5, sum(40.0)), None);
        assert_eq!(c.delta(2, 0, 2_000, 6, sum(41.0)), Some(sum(1.0)));
    }

    #[test]
    fn explicit_histograms_subtract_per_bucket_and_detect_resets() {
        let mut c = Cumulative::default();
        let h = |counts: Vec<u64>, sum: f64| Value::Explicit {
            bounds: vec![1.0, 10.0],
            counts,
            sum,
        };
        assert_eq!(
            c.delta(1, 9, 1, 0, h(vec![1, 2, 0], 12.0)),
            Some(h(vec![1, 2, 0], 12.0))
        );
        assert_eq!(
            c.delta(1, 9, 2, 1, h(vec![1, 5, 1], 60.0)),
            Some(h(vec![0, 3, 1], 48.0))
        );
        // The same cumulative histogram twice must not be counted twice.
        assert_eq!(c.delta(1, 9, 3, 2, h(vec![1, 5, 1], 60.0)), None);
        assert_eq!(
            c.delta(1, 9, 4, 3, h(vec![0, 1, 0], 2.0)),
            Some(h(vec![0, 1, 0], 2.0))
        );
    }

    #[test]
    fn exponential_histograms_subtract_across_a_scale_change() {
        let mut c = Cumulative::default();
        let e = |scale, offset, positive: Vec<u64>, sum| {
            Value::Exponential(Exponential {
                scale,
                zero_count: 1,
                positive_offset: offset,
                positive,
                negative_offset: 0,
                negative: vec![],
                sum,
            })
        };
        c.delta(1, 9, 1, 0, e(2, 4, vec![1, 1, 2], 10.0));
        // At scale 1, buckets 4,5 → 2 and 6 → 3: before is [2, 2] from offset 2.
        let delta = c.delta(1, 9, 2, 1, e(1, 2, vec![3, 4, 1], 20.0));
        let mut expected = e(1, 2, vec![1, 2, 1], 10.0);
        if let Value::Exponential(x) = &mut expected {
            x.zero_count = 0;
        }
        assert_eq!(delta, Some(expected));
    }

    #[test]
    fn replay_starts_at_the_oldest_remembered_point() {
        let mut c = Cumulative::default();
        c.delta(1, 9, 1_000, 10, sum(1.0));
        c.delta(2, 9, 5_000, 12, sum(1.0));
        c.delta(1, 9, 6_000, 14, sum(2.0));
        assert_eq!(c.replay_from(20), 12);
        c.forget_before(5_500);
        assert_eq!(c.replay_from(20), 14);
        c.forget_before(10_000);
        assert_eq!(c.replay_from(20), 20);
    }
}
