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
//! - the same point exported twice adds nothing;
//! - two exponential histograms whose buckets lie further apart than
//!   [`MAX_OTLP_BUCKETS`] (a hostile or broken exporter) are a reset too, so
//!   no difference allocates more than that.
//!
//! The state of a series is its last point. Every flush writes the points
//! that changed with the partition's checkpoint ([`Cumulative::changed`]),
//! and a partition resuming reads them back ([`Cumulative::restore`]), so
//! a restart on any bus goes on from them and never counts a series' whole
//! value again. A series unseen (in event time) for the staleness is
//! forgotten.

use vigil_domain::distribution::MAX_OTLP_BUCKETS;
use vigil_domain::model::CumulativeState;

use crate::{IdMap, IdSet};

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
    series: IdMap<u64, Last>,
    /// Series with a new last point since [`Cumulative::changed`].
    changed: IdSet<u64>,
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
        self.changed.insert(series);
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
        let series = &self.series;
        self.changed.retain(|id| series.contains_key(id));
    }

    /// The last points that changed since the previous call, to store with
    /// the flush of `partition`.
    pub fn changed(&mut self, partition: i32) -> Vec<CumulativeState> {
        self.changed
            .drain()
            .filter_map(|id| {
                let last = self.series.get(&id)?;
                Some(CumulativeState {
                    partition,
                    series: id,
                    offset: last.offset,
                    time_ns: last.time_ns,
                    state: encode(last.start_ns, &last.value),
                })
            })
            .collect()
    }

    /// The state stored by earlier flushes. A state that does not decode
    /// (never written by this version) is skipped: its series' next point
    /// becomes its base, as for a series without a start time.
    pub fn restore(states: Vec<CumulativeState>) -> Self {
        let mut series = IdMap::with_capacity_and_hasher(states.len(), Default::default());
        for stored in states {
            match decode(&stored.state) {
                Some((start_ns, value)) => {
                    series.insert(
                        stored.series,
                        Last {
                            start_ns,
                            time_ns: stored.time_ns,
                            offset: stored.offset,
                            value,
                        },
                    );
                }
                None => tracing::warn!(
                    series = stored.series,
                    "the stored state of a cumulative series is unreadable; it starts over"
                ),
            }
        }
        Cumulative {
            series,
            changed: IdSet::default(),
        }
    }
}

/// A series' state as bytes: its start time and last value, little-endian,
/// the value tagged 0 (sum), 1 (explicit histogram) or 2 (exponential).
fn encode(start_ns: u64, value: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(32);
    out.extend_from_slice(&start_ns.to_le_bytes());
    let counts = |out: &mut Vec<u8>, counts: &[u64]| {
        out.extend_from_slice(&(counts.len() as u32).to_le_bytes());
        counts
            .iter()
            .for_each(|n| out.extend_from_slice(&n.to_le_bytes()));
    };
    match value {
        Value::Sum(sum) => {
            out.push(0);
            out.extend_from_slice(&sum.to_le_bytes());
        }
        Value::Explicit {
            bounds,
            counts: n,
            sum,
        } => {
            out.push(1);
            out.extend_from_slice(&(bounds.len() as u32).to_le_bytes());
            bounds
                .iter()
                .for_each(|b| out.extend_from_slice(&b.to_le_bytes()));
            counts(&mut out, n);
            out.extend_from_slice(&sum.to_le_bytes());
        }
        Value::Exponential(e) => {
            out.push(2);
            out.extend_from_slice(&e.scale.to_le_bytes());
            out.extend_from_slice(&e.zero_count.to_le_bytes());
            out.extend_from_slice(&e.positive_offset.to_le_bytes());
            counts(&mut out, &e.positive);
            out.extend_from_slice(&e.negative_offset.to_le_bytes());
            counts(&mut out, &e.negative);
            out.extend_from_slice(&e.sum.to_le_bytes());
        }
    }
    out
}

/// Reads what [`encode`] wrote; `None` if the bytes are not such a state.
fn decode(bytes: &[u8]) -> Option<(u64, Value)> {
    let mut reader = Reader(bytes);
    let start_ns = reader.u64()?;
    let value = match reader.byte()? {
        0 => Value::Sum(reader.f64()?),
        1 => {
            let bounds = (0..reader.len()?)
                .map(|_| reader.f64())
                .collect::<Option<_>>()?;
            let counts = reader.counts()?;
            Value::Explicit {
                bounds,
                counts,
                sum: reader.f64()?,
            }
        }
        2 => Value::Exponential(Exponential {
            scale: reader.i32()?,
            zero_count: reader.u64()?,
            positive_offset: reader.i32()?,
            positive: reader.counts()?,
            negative_offset: reader.i32()?,
            negative: reader.counts()?,
            sum: reader.f64()?,
        }),
        _ => return None,
    };
    reader.0.is_empty().then_some((start_ns, value))
}

/// Reads little-endian fields off the front of a byte slice.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.0.split_first_chunk::<N>()?;
        self.0 = rest;
        Some(*head)
    }

    fn byte(&mut self) -> Option<u8> {
        Some(self.take::<1>()?[0])
    }

    fn u64(&mut self) -> Option<u64> {
        self.take().map(u64::from_le_bytes)
    }

    fn i32(&mut self) -> Option<i32> {
        self.take().map(i32::from_le_bytes)
    }

    fn f64(&mut self) -> Option<f64> {
        self.take().map(f64::from_le_bytes)
    }

    /// A length, at most what the remaining bytes can hold at 8 each.
    fn len(&mut self) -> Option<usize> {
        let len = self.take().map(u32::from_le_bytes)? as usize;
        (len <= self.0.len() / 8).then_some(len)
    }

    fn counts(&mut self) -> Option<Vec<u64>> {
        (0..self.len()?).map(|_| self.u64()).collect()
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
/// A shift of 63 or more (scales far apart, as a hostile point may have)
/// leaves every index of an `i32` offset at 0 or −1, as the limit of the
/// shift would, instead of overflowing.
fn downscale(histogram: &Exponential, scale: i32) -> Exponential {
    let shift = u32::try_from(i64::from(histogram.scale) - i64::from(scale))
        .unwrap_or(0)
        .min(63);
    let rebucket = |offset: i32, counts: &[u64]| -> (i32, Vec<u64>) {
        if shift == 0 || counts.is_empty() {
            return (offset, counts.to_vec());
        }
        let first = i64::from(offset) >> shift;
        let mut out: Vec<u64> = Vec::new();
        for (position, &n) in counts.iter().enumerate() {
            let index = (i64::from(offset) + position as i64) >> shift;
            let slot = usize::try_from(index - first).unwrap_or(0);
            if out.len() <= slot {
                out.resize(slot + 1, 0);
            }
            out[slot] += n;
        }
        // `first` is an `i32` shifted right, so it fits.
        (i32::try_from(first).unwrap_or(0), out)
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
/// `None` if any bucket went down, or if together they span more than
/// [`MAX_OTLP_BUCKETS`].
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
    if high - low > MAX_OTLP_BUCKETS as i64 {
        return None;
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

    /// Regression (found by `fuzz_metrics_through_the_cumulative_state`):
    /// scales 40 apart overflowed the shift that brings buckets to the
    /// coarser scale and ended the aggregator.
    #[test]
    fn scales_far_apart_subtract_at_the_coarser_one() {
        let mut c = Cumulative::default();
        let at = |scale, offset, positive: Vec<u64>, sum| {
            Value::Exponential(Exponential {
                scale,
                zero_count: 0,
                positive_offset: offset,
                positive,
                negative_offset: 0,
                negative: vec![],
                sum,
            })
        };
        c.delta(1, 9, 1, 0, at(20, 5, vec![1, 2], 1.0));
        // At scale −20 every bucket of offsets 5 and 6 is bucket 0.
        assert_eq!(
            c.delta(1, 9, 2, 1, at(-20, 0, vec![7], 4.0)),
            Some(at(-20, 0, vec![4], 3.0))
        );
    }

    /// Regression: offsets 1000 then −2³¹ made the difference allocate
    /// 2³¹ counts (16 GiB) and ended the process.
    #[test]
    fn histograms_too_far_apart_are_a_reset_not_an_allocation() {
        let mut c = Cumulative::default();
        let at = |offset, positive: Vec<u64>, sum| {
            Value::Exponential(Exponential {
                scale: 20,
                zero_count: 0,
                positive_offset: offset,
                positive,
                negative_offset: 0,
                negative: vec![],
                sum,
            })
        };
        c.delta(1, 9, 1, 0, at(1_000, vec![1, 2], 1.0));
        let far = at(i32::MIN, vec![5], 2.0);
        assert_eq!(c.delta(1, 9, 2, 1, far.clone()), Some(far), "a reset");
        // Near buckets still subtract.
        assert_eq!(
            c.delta(1, 9, 3, 2, at(i32::MIN, vec![5, 1], 3.0)),
            Some(at(i32::MIN, vec![0, 1], 1.0))
        );
    }

    #[test]
    fn a_restored_state_goes_on_where_the_stored_one_stopped() {
        let mut c = Cumulative::default();
        let histogram = Value::Explicit {
            bounds: vec![1.0, 10.0],
            counts: vec![1, 2, 3],
            sum: 30.5,
        };
        let exponential = Value::Exponential(Exponential {
            scale: 3,
            zero_count: 2,
            positive_offset: -4,
            positive: vec![1, 0, 7],
            negative_offset: 2,
            negative: vec![5],
            sum: -1.25,
        });
        c.delta(1, 9, 1_000, 10, sum(40.0));
        c.delta(2, 9, 2_000, 11, histogram.clone());
        c.delta(3, 9, 3_000, 12, exponential.clone());
        let mut stored = c.changed(4);
        assert!(c.changed(4).is_empty(), "nothing changed since");
        stored.sort_by_key(|s| s.series);
        let offsets: Vec<(i32, u64, i64, u64)> = stored
            .iter()
            .map(|s| (s.partition, s.series, s.offset, s.time_ns))
            .collect();
        assert_eq!(
            offsets,
            vec![(4, 1, 10, 1_000), (4, 2, 11, 2_000), (4, 3, 12, 3_000)]
        );
        assert_eq!(decode(&stored[1].state), Some((9, histogram)));
        assert_eq!(decode(&stored[2].state), Some((9, exponential)));

        let mut restored = Cumulative::restore(stored);
        // The same point again adds nothing; the next adds its increase only.
        assert_eq!(restored.delta(1, 9, 1_000, 20, sum(40.0)), Some(sum(0.0)));
        assert_eq!(restored.delta(1, 9, 4_000, 21, sum(43.0)), Some(sum(3.0)));
        assert_eq!(restored.changed(4).len(), 1);
    }

    #[test]
    fn unreadable_states_are_skipped() {
        let good = encode(9, &sum(1.0));
        assert_eq!(decode(&good[..good.len() - 1]), None);
        assert_eq!(decode(&[good.as_slice(), &[0]].concat()), None);
        let mut huge = 9u64.to_le_bytes().to_vec();
        huge.push(1);
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(decode(&huge), None, "a length past the bytes left");
        let restored = Cumulative::restore(vec![CumulativeState {
            partition: 0,
            series: 1,
            offset: 0,
            time_ns: 0,
            state: huge,
        }]);
        assert!(restored.series.is_empty());
    }

    #[test]
    fn forgotten_series_are_not_stored() {
        let mut c = Cumulative::default();
        c.delta(1, 9, 1_000, 10, sum(1.0));
        c.delta(2, 9, 5_000, 12, sum(1.0));
        c.forget_before(2_000);
        let stored = c.changed(0);
        assert_eq!(stored.iter().map(|s| s.series).collect::<Vec<_>>(), [2]);
    }
}
