//! Prometheus native histograms into OTLP exponential histograms: both
//! have buckets of base 2^(2^-n) (Prometheus's schema is OTLP's scale), but
//! Prometheus's bucket `i` holds (base^(i-1), base^i] where OTLP's holds
//! (base^i, base^(i+1)], so indices move down by one; Prometheus's sparse
//! spans (and, for integer histograms, count deltas) become OTLP's dense
//! counts from an offset. A side whose buckets would span more than
//! [`MAX_BUCKETS`] once its gaps are filled is refused before anything is
//! allocated, like an OTLP histogram with more buckets than that.

use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::metrics::v1::ExponentialHistogramDataPoint;
use opentelemetry_proto::tonic::metrics::v1::exponential_histogram_data_point::Buckets;
use vigil_domain::distribution::MAX_OTLP_BUCKETS;
use vigil_proto::prometheus::histogram::{Count, ResetHint, ZeroCount};
use vigil_proto::prometheus::{BucketSpan, Histogram};

use crate::validate::Rejection;

/// The most buckets one side may span, gaps included: as many as an OTLP
/// histogram may hold.
pub(crate) const MAX_BUCKETS: usize = MAX_OTLP_BUCKETS;

/// The OTLP point of native histogram `histogram` of metric `name`, with
/// `attributes`, or why it cannot be one.
pub(crate) fn point(
    name: &str,
    histogram: &Histogram,
    attributes: Vec<KeyValue>,
) -> Result<ExponentialHistogramDataPoint, Rejection> {
    let broken = |reason: &'static str, why: String| {
        Rejection::new(reason, format!("native histogram {name:?}: {why}"))
    };
    if histogram.reset_hint() == ResetHint::Gauge {
        return Err(broken(
            "gauge_histogram",
            "gauge histograms are not supported".to_owned(),
        ));
    }
    let count = match histogram.count {
        Some(Count::CountInt(count)) => Some(count),
        Some(Count::CountFloat(count)) => whole(count),
        None => Some(0),
    };
    let zero_count = match histogram.zero_count {
        Some(ZeroCount::ZeroCountInt(count)) => Some(count),
        Some(ZeroCount::ZeroCountFloat(count)) => whole(count),
        None => Some(0),
    };
    let (Some(count), Some(zero_count)) = (count, zero_count) else {
        return Err(broken(
            "invalid_histogram",
            "counts must be whole and not negative".to_owned(),
        ));
    };
    let side = |spans: &[BucketSpan], deltas: &[i64], counts: &[f64]| {
        buckets(spans, deltas, counts).map_err(|why| broken("invalid_histogram", why))
    };
    let positive = side(
        &histogram.positive_spans,
        &histogram.positive_deltas,
        &histogram.positive_counts,
    )?;
    let negative = side(
        &histogram.negative_spans,
        &histogram.negative_deltas,
        &histogram.negative_counts,
    )?;
    Ok(ExponentialHistogramDataPoint {
        attributes,
        time_unix_nano: u64::try_from(histogram.timestamp)
            .unwrap_or(0)
            .saturating_mul(1_000_000),
        count,
        sum: histogram.sum.is_finite().then_some(histogram.sum),
        scale: histogram.schema,
        zero_count,
        zero_threshold: histogram.zero_threshold,
        positive,
        negative,
        ..Default::default()
    })
}

fn whole(count: f64) -> Option<u64> {
    (count.is_finite() && count >= 0.0 && count.fract() == 0.0).then_some(count as u64)
}

/// One side's dense OTLP buckets, from Prometheus's spans and either its
/// deltas (integer histograms) or its counts (float histograms).
fn buckets(
    spans: &[BucketSpan],
    deltas: &[i64],
    counts: &[f64],
) -> Result<Option<Buckets>, String> {
    let Some(first) = spans.first() else {
        return Ok(None);
    };
    // The width, gaps included, before anything is allocated.
    let mut width = 0i64;
    for (i, span) in spans.iter().enumerate() {
        if i > 0 {
            if span.offset < 0 {
                return Err("a span starts before the previous one ends".to_owned());
            }
            width += i64::from(span.offset);
        }
        width += i64::from(span.length);
    }
    if width > MAX_BUCKETS as i64 {
        return Err(format!(
            "its buckets span {width} indices, more than {MAX_BUCKETS}"
        ));
    }
    let values: Vec<u64> = if deltas.is_empty() {
        counts
            .iter()
            .map(|&count| whole(count))
            .collect::<Option<_>>()
            .ok_or("bucket counts must be whole and not negative")?
    } else {
        let mut running = 0i64;
        deltas
            .iter()
            .map(|delta| {
                running = running.checked_add(*delta)?;
                u64::try_from(running).ok()
            })
            .collect::<Option<_>>()
            .ok_or("bucket deltas must add up to counts that are not negative")?
    };
    let lengths: u64 = spans.iter().map(|s| u64::from(s.length)).sum();
    if lengths != values.len() as u64 {
        return Err(format!(
            "its spans hold {lengths} buckets, its counts {}",
            values.len()
        ));
    }
    let mut dense = vec![0u64; usize::try_from(width).unwrap_or(0)];
    let (mut at, mut next) = (0usize, values.iter());
    for (i, span) in spans.iter().enumerate() {
        if i > 0 {
            at += span.offset as usize;
        }
        for _ in 0..span.length {
            if let (Some(slot), Some(value)) = (dense.get_mut(at), next.next()) {
                *slot = *value;
            }
            at += 1;
        }
    }
    // Prometheus's index i is OTLP's i - 1.
    let offset = i32::try_from(i64::from(first.offset) - 1)
        .map_err(|_| "the first bucket's index is out of range".to_owned())?;
    Ok(Some(Buckets {
        offset,
        bucket_counts: dense,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(offset: i32, length: u32) -> BucketSpan {
        BucketSpan { offset, length }
    }

    #[test]
    fn spans_and_deltas_become_dense_buckets_one_index_down() {
        // Schema 0: buckets (0.5, 1], (1, 2] at indices 0 and 1, then a gap
        // of two, then (8, 16] at index 4.
        let histogram = Histogram {
            count: Some(Count::CountInt(12)),
            sum: 40.0,
            schema: 0,
            zero_threshold: 0.001,
            zero_count: Some(ZeroCount::ZeroCountInt(2)),
            positive_spans: vec![span(0, 2), span(2, 1)],
            positive_deltas: vec![3, 1, -2],
            negative_spans: vec![span(1, 1)],
            negative_counts: vec![],
            negative_deltas: vec![3],
            timestamp: 1_000,
            ..Default::default()
        };
        let point = point("rpc", &histogram, Vec::new()).unwrap();
        assert_eq!(
            point.positive,
            Some(Buckets {
                offset: -1,
                bucket_counts: vec![3, 4, 0, 0, 2]
            })
        );
        assert_eq!(
            point.negative,
            Some(Buckets {
                offset: 0,
                bucket_counts: vec![3]
            })
        );
        assert_eq!((point.count, point.zero_count, point.scale), (12, 2, 0));
        assert_eq!((point.sum, point.zero_threshold), (Some(40.0), 0.001));
        assert_eq!(point.time_unix_nano, 1_000_000_000);
    }

    #[test]
    fn float_counts_are_taken_when_whole() {
        let histogram = Histogram {
            count: Some(Count::CountFloat(3.0)),
            positive_spans: vec![span(5, 2)],
            positive_counts: vec![1.0, 2.0],
            ..Default::default()
        };
        let point = point("rpc", &histogram, Vec::new()).unwrap();
        assert_eq!(point.positive.unwrap().bucket_counts, [1, 2]);
        let fractional = Histogram {
            positive_counts: vec![1.5, 2.0],
            ..histogram
        };
        assert_eq!(point_reason(&fractional), "invalid_histogram");
    }

    fn point_reason(histogram: &Histogram) -> &'static str {
        point("rpc", histogram, Vec::new()).unwrap_err().reason
    }

    #[test]
    fn hostile_and_broken_histograms_are_refused_unallocated() {
        let wide = Histogram {
            positive_spans: vec![span(0, 1), span(i32::MAX, 1)],
            positive_deltas: vec![1, 0],
            ..Default::default()
        };
        let error = point("rpc", &wide, Vec::new()).unwrap_err();
        assert_eq!(
            error.message,
            "native histogram \"rpc\": its buckets span 2147483649 indices, more than 16384"
        );
        let negative = Histogram {
            positive_spans: vec![span(0, 2)],
            positive_deltas: vec![1, -2],
            ..Default::default()
        };
        assert_eq!(point_reason(&negative), "invalid_histogram");
        let short = Histogram {
            positive_spans: vec![span(0, 3)],
            positive_deltas: vec![1],
            ..Default::default()
        };
        assert_eq!(point_reason(&short), "invalid_histogram");
        let gauge = Histogram {
            reset_hint: ResetHint::Gauge as i32,
            ..Default::default()
        };
        assert_eq!(point_reason(&gauge), "gauge_histogram");
    }
}
