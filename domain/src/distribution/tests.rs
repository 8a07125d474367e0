//! Tests of `Distribution`: exactness of merges, quantile error bounds on
//! several shapes of data, imports, and the storage round trip.

use super::*;
use proptest::prelude::*;

/// The largest relative error the tests accept: the stated bound plus room for
/// a value that rounds onto a bucket boundary.
const BOUND: f64 = RELATIVE_ERROR + 1e-12;
const QUANTILES: [f64; 4] = [0.5, 0.9, 0.99, 0.999];

/// SplitMix64: a small, seedable generator, so a failing case can be replayed.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in (0, 1].
    fn unit(&mut self) -> f64 {
        ((self.next_u64() >> 11) + 1) as f64 / (1u64 << 53) as f64
    }

    fn normal(&mut self) -> f64 {
        (-2.0 * self.unit().ln()).sqrt() * (std::f64::consts::TAU * self.unit()).cos()
    }
}

#[derive(Debug, Clone, Copy)]
enum Shape {
    Uniform {
        low: f64,
        high: f64,
    },
    LogNormal {
        mu: f64,
        sigma: f64,
    },
    Bimodal {
        fast: f64,
        slow: f64,
        slow_share: f64,
    },
    Pareto {
        scale: f64,
        alpha: f64,
    },
}

impl Shape {
    fn sample(self, rng: &mut Rng) -> f64 {
        match self {
            Shape::Uniform { low, high } => low + (high - low) * rng.unit(),
            Shape::LogNormal { mu, sigma } => (mu + sigma * rng.normal()).exp(),
            Shape::Bimodal {
                fast,
                slow,
                slow_share,
            } => {
                let center = if rng.unit() < slow_share { slow } else { fast };
                (center * (1.0 + 0.1 * rng.normal())).abs()
            }
            Shape::Pareto { scale, alpha } => scale / rng.unit().powf(1.0 / alpha),
        }
    }
}

fn shapes() -> impl Strategy<Value = Shape> {
    prop_oneof![
        (0.0..1e3f64, 1.0..1e6f64).prop_map(|(low, span)| Shape::Uniform {
            low,
            high: low + span
        }),
        (-5.0..10.0f64, 0.1..3.0f64).prop_map(|(mu, sigma)| Shape::LogNormal { mu, sigma }),
        (1.0..50.0f64, 100.0..5000.0f64, 0.01..0.5f64).prop_map(|(fast, slow, slow_share)| {
            Shape::Bimodal {
                fast,
                slow,
                slow_share,
            }
        }),
        (1e-3..10.0f64, 0.5..3.0f64).prop_map(|(scale, alpha)| Shape::Pareto { scale, alpha }),
    ]
}

fn samples(shape: Shape, seed: u64, n: usize) -> Vec<f64> {
    let mut rng = Rng(seed);
    (0..n).map(|_| shape.sample(&mut rng)).collect()
}

fn record_all(values: &[f64]) -> Distribution {
    let mut distribution = Distribution::new();
    for &value in values {
        distribution.record(value).unwrap();
    }
    distribution
}

/// The nearest-rank quantile of `values`, the definition `quantile` estimates.
fn exact_quantile(values: &[f64], q: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn relative_error(estimate: f64, exact: f64) -> f64 {
    if exact == 0.0 {
        estimate.abs()
    } else {
        ((estimate - exact) / exact).abs()
    }
}

fn assert_quantiles_within(distribution: &Distribution, values: &[f64], bound: f64) {
    for q in QUANTILES {
        let exact = exact_quantile(values, q);
        let estimate = distribution.quantile(q).unwrap();
        let error = relative_error(estimate, exact);
        assert!(
            error <= bound,
            "q={q}: estimate {estimate}, exact {exact}, error {error} > {bound}"
        );
    }
}

/// Everything but the float sum must be identical; the sum may differ by
/// rounding, as float addition is not associative.
fn assert_same(a: &Distribution, b: &Distribution) {
    assert_eq!(a.to_buckets(), b.to_buckets());
    assert_eq!(a.count(), b.count());
    assert_eq!(a.min(), b.min());
    assert_eq!(a.max(), b.max());
    let scale = a.sum().abs().max(1.0);
    assert!(
        (a.sum() - b.sum()).abs() <= 1e-9 * scale,
        "{} vs {}",
        a.sum(),
        b.sum()
    );
}

fn mixed_values() -> impl Strategy<Value = Vec<f64>> {
    prop::collection::vec(
        prop_oneof![-1e6..1e6f64, Just(0.0), (1e-9..1e12f64), (-1e12..-1e-9f64)],
        0..300,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn quantiles_are_within_the_bound(shape in shapes(), seed in any::<u64>()) {
        let values = samples(shape, seed, 5_000);
        assert_quantiles_within(&record_all(&values), &values, BOUND);
    }

    #[test]
    fn count_above_is_exact_away_from_the_threshold(
        shape in shapes(),
        seed in any::<u64>(),
        q in 0.01f64..0.99,
    ) {
        let values = samples(shape, seed, 2_000);
        let distribution = record_all(&values);
        let threshold = exact_quantile(&values, q);
        let margin = threshold.abs() * RELATIVE_ERROR * 2.0;
        let surely_above = values.iter().filter(|&&v| v > threshold + margin).count() as u64;
        let maybe_above = values.iter().filter(|&&v| v > threshold - margin).count() as u64;
        let counted = distribution.count_above(threshold);
        prop_assert!(
            (surely_above..=maybe_above).contains(&counted),
            "{counted} not in {surely_above}..={maybe_above}"
        );
    }

    #[test]
    fn merge_equals_recording_everything_into_one(
        a in mixed_values(), b in mixed_values(), c in mixed_values()
    ) {
        let (da, db, dc) = (record_all(&a), record_all(&b), record_all(&c));
        let all: Vec<f64> = a.iter().chain(&b).chain(&c).copied().collect();

        let mut left = da.clone();
        left.merge(&db);
        left.merge(&dc);
        let mut right_inner = db.clone();
        right_inner.merge(&dc);
        let mut right = da.clone();
        right.merge(&right_inner);
        let mut reversed = dc.clone();
        reversed.merge(&db);
        reversed.merge(&da);

        let whole = record_all(&all);
        assert_same(&left, &whole);
        assert_same(&right, &whole);
        assert_same(&reversed, &whole);
    }

    #[test]
    fn storage_form_round_trips(values in mixed_values()) {
        let original = record_all(&values);
        let (keys, counts) = original.to_buckets();
        let restored = Distribution::from_buckets(
            &keys,
            &counts,
            original.sum(),
            original.min().unwrap_or(0.0),
            original.max().unwrap_or(0.0),
        )
        .unwrap();
        assert_same(&restored, &original);
        for q in QUANTILES {
            prop_assert_eq!(restored.quantile(q), original.quantile(q));
        }
    }

    #[test]
    fn exponential_histograms_at_finer_scales_import_exactly(
        shape in shapes(), seed in any::<u64>(), scale in 6..=20i32
    ) {
        let values = samples(shape, seed, 1_000);
        let point = exponential_point(&values, scale);
        let imported = Distribution::from_exponential(&point.as_point()).unwrap();
        assert_same(&imported, &record_all(&values));
    }
}

#[test]
fn statistics_are_exact() {
    let values: Vec<f64> = (1..=100).map(f64::from).collect();
    let distribution = record_all(&values);
    assert_eq!(distribution.count(), 100);
    assert_eq!(distribution.sum(), 5050.0);
    assert_eq!(distribution.min(), Some(1.0));
    assert_eq!(distribution.max(), Some(100.0));
    assert_eq!(distribution.mean(), Some(50.5));
    assert_eq!(distribution.quantile(0.0), Some(1.0));
    assert_eq!(distribution.quantile(1.0), Some(100.0));
    let median = distribution.quantile(0.5).unwrap();
    assert!(relative_error(median, 50.0) <= BOUND, "{median}");
    assert_eq!(distribution.quantile(1.5), None);
    assert_eq!(distribution.quantile(f64::NAN), None);
    assert_eq!(Distribution::new().quantile(0.5), None);
    assert_eq!(Distribution::new().min(), None);
}

#[test]
fn record_n_counts_each_occurrence() {
    let mut distribution = Distribution::new();
    distribution.record_n(2.5, 4).unwrap();
    distribution.record_n(7.0, 0).unwrap();
    assert_eq!(distribution.count(), 4);
    assert_eq!(distribution.sum(), 10.0);
    assert_eq!(distribution.max(), Some(2.5));
}

#[test]
fn zero_and_negative_values_keep_their_order() {
    let mut rng = Rng(7);
    let values: Vec<f64> = (0..10_000)
        .map(|i| match i % 4 {
            0 => 0.0,
            1 => -(1.0 + 1000.0 * rng.unit()),
            _ => 0.001 + 10.0 * rng.unit(),
        })
        .collect();
    let distribution = record_all(&values);
    for q in [0.1, 0.2, 0.3, 0.5, 0.9, 0.99] {
        let exact = exact_quantile(&values, q);
        let estimate = distribution.quantile(q).unwrap();
        assert!(
            relative_error(estimate, exact) <= BOUND,
            "q={q}: {estimate} vs {exact}"
        );
        assert!(estimate.signum() * exact.signum() >= 0.0);
    }
    assert_eq!(distribution.quantile(0.3), Some(0.0));
    assert!(distribution.quantile(0.2).unwrap() < -1.0);
}

#[test]
fn non_finite_values_are_refused_with_a_reason() {
    let mut distribution = Distribution::new();
    for value in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        let error = distribution.record(value).unwrap_err();
        assert!(
            matches!(error, DistributionError::NotFinite { value: v } if v.to_bits() == value.to_bits())
        );
        assert!(error.to_string().contains("not a finite number"), "{error}");
    }
    assert_eq!(distribution.count(), 0);
    assert_eq!(distribution.sum(), 0.0);
}

#[test]
fn values_from_a_nanosecond_to_a_terasecond_work() {
    let mut rng = Rng(11);
    let values: Vec<f64> = (0..20_000)
        .map(|_| 10f64.powf(-9.0 + 21.0 * rng.unit()))
        .chain([1e-9, 1e12])
        .collect();
    let distribution = record_all(&values);
    assert_quantiles_within(&distribution, &values, BOUND);
    assert_eq!(distribution.min(), Some(1e-9));
    assert_eq!(distribution.max(), Some(1e12));
    let (keys, _) = distribution.to_buckets();
    assert!(keys.len() > 4_000 && keys.len() < 4_500, "{}", keys.len());
}

#[test]
fn stored_forms_with_errors_are_refused() {
    let bad = |keys: &[i32], counts: &[u64], sum, min, max| {
        Distribution::from_buckets(keys, counts, sum, min, max).unwrap_err()
    };
    assert_eq!(
        bad(&[1, 2], &[1], 1.0, 1.0, 1.0),
        DistributionError::LengthMismatch { keys: 2, counts: 1 }
    );
    assert_eq!(
        bad(&[1 << 18], &[1], 1.0, 1.0, 1.0),
        DistributionError::InvalidKey { key: 1 << 18 }
    );
    assert_eq!(
        bad(&[1], &[1], 1.0, 2.0, 1.0),
        DistributionError::MinAboveMax { min: 2.0, max: 1.0 }
    );
    assert!(matches!(
        bad(&[1], &[1], f64::NAN, 1.0, 1.0),
        DistributionError::NonFiniteStat { field: "sum", .. }
    ));
    assert_eq!(
        bad(&[1, 2], &[u64::MAX, 1], 1.0, 1.0, 1.0),
        DistributionError::CountOverflow
    );
    let empty = Distribution::from_buckets(&[], &[], f64::NAN, 0.0, 0.0).unwrap();
    assert_eq!(empty.count(), 0);
}

#[test]
fn bus_message_round_trips() {
    let mut rng = Rng(3);
    let values: Vec<f64> = (0..1000).map(|_| 100.0 * rng.normal()).collect();
    let original = record_all(&values);
    let message = vigil_proto::bus::v1::Distribution::from(&original);
    let bytes = prost::Message::encode_to_vec(&message);
    let decoded: vigil_proto::bus::v1::Distribution = prost::Message::decode(&*bytes).unwrap();
    let restored = Distribution::try_from(&decoded).unwrap();
    assert_same(&restored, &original);
    assert_eq!(restored.sum(), original.sum());
}

/// An OTLP exponential histogram point built from values at `scale` with the
/// reference (logarithm) mapping of the OTLP specification.
struct OwnedExponential {
    scale: i32,
    zero_count: u64,
    positive: (i32, Vec<u64>),
    negative: (i32, Vec<u64>),
    sum: f64,
    min: f64,
    max: f64,
}

impl OwnedExponential {
    fn as_point(&self) -> ExponentialHistogram<'_> {
        ExponentialHistogram {
            scale: self.scale,
            zero_count: self.zero_count,
            positive_offset: self.positive.0,
            positive_counts: &self.positive.1,
            negative_offset: self.negative.0,
            negative_counts: &self.negative.1,
            sum: Some(self.sum),
            min: Some(self.min),
            max: Some(self.max),
        }
    }
}

fn exponential_point(values: &[f64], scale: i32) -> OwnedExponential {
    let index = |v: f64| ((v.log2() * 2f64.powi(scale)).ceil() as i64 - 1) as i32;
    let dense = |indices: Vec<i32>| -> (i32, Vec<u64>) {
        let Some(&low) = indices.iter().min() else {
            return (0, Vec::new());
        };
        let high = *indices.iter().max().unwrap();
        let mut counts = vec![0; (high - low + 1) as usize];
        for i in indices {
            counts[(i - low) as usize] += 1;
        }
        (low, counts)
    };
    OwnedExponential {
        scale,
        zero_count: values.iter().filter(|&&v| v == 0.0).count() as u64,
        positive: dense(
            values
                .iter()
                .filter(|&&v| v > 0.0)
                .map(|&v| index(v))
                .collect(),
        ),
        negative: dense(
            values
                .iter()
                .filter(|&&v| v < 0.0)
                .map(|&v| index(-v))
                .collect(),
        ),
        sum: values.iter().sum(),
        min: values.iter().copied().fold(f64::INFINITY, f64::min),
        max: values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
    }
}

#[test]
fn exponential_import_keeps_zeros_and_negatives() {
    let values = [-8.0, -0.5, 0.0, 0.0, 3.0, 1e6];
    let point = exponential_point(&values, 10);
    let imported = Distribution::from_exponential(&point.as_point()).unwrap();
    assert_same(&imported, &record_all(&values));
}

#[test]
fn coarser_exponential_histograms_import_within_their_resolution() {
    for (scale, bound) in [(5, 0.0164), (4, 0.0275), (3, 0.0500), (0, 0.4219)] {
        let values = samples(
            Shape::LogNormal {
                mu: 3.0,
                sigma: 1.5,
            },
            99,
            10_000,
        );
        let point = exponential_point(&values, scale);
        let imported = Distribution::from_exponential(&point.as_point()).unwrap();
        assert_eq!(imported.count(), 10_000);
        assert_eq!(imported.min(), Some(point.min));
        assert_quantiles_within(&imported, &values, bound);
    }
}

#[test]
fn exponential_import_estimates_missing_statistics() {
    let point = ExponentialHistogram {
        scale: 6,
        positive_offset: 64,
        positive_counts: &[3, 0, 1],
        ..Default::default()
    };
    let imported = Distribution::from_exponential(&point).unwrap();
    assert_eq!(imported.count(), 4);
    let (low, high) = (imported.min().unwrap(), imported.max().unwrap());
    assert!(low > 2.0 && low < 2.0 * 1.011, "{low}");
    assert!(high > 2.0 * 1.021 && high < 2.0 * 1.033, "{high}");
    assert!((imported.sum() - (3.0 * low + high)).abs() < 1e-9);
}

#[test]
fn invalid_exponential_histograms_are_refused() {
    let point = |scale, offset| ExponentialHistogram {
        scale,
        positive_offset: offset,
        positive_counts: &[1],
        ..Default::default()
    };
    assert_eq!(
        Distribution::from_exponential(&point(21, 0)).unwrap_err(),
        DistributionError::InvalidScale { scale: 21 }
    );
    assert_eq!(
        Distribution::from_exponential(&point(0, i32::MAX)).unwrap_err(),
        DistributionError::IndexOutOfRange {
            offset: i32::MAX,
            len: 1
        }
    );
    // At scale -10, bucket 0 is (1, 2^1024] and bucket 1 lies beyond every f64.
    assert!(Distribution::from_exponential(&point(-10, 0)).is_ok());
    assert_eq!(
        Distribution::from_exponential(&point(-10, 1)).unwrap_err(),
        DistributionError::IndexOutOfRange { offset: 1, len: 1 }
    );
}

#[test]
fn explicit_histograms_import_within_their_bucket_widths() {
    let bounds = [1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0];
    let values = samples(
        Shape::LogNormal {
            mu: 3.0,
            sigma: 1.0,
        },
        5,
        10_000,
    );
    let mut counts = vec![0u64; bounds.len() + 1];
    for &v in &values {
        counts[bounds.partition_point(|&b| b < v)] += 1;
    }
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let point = ExplicitHistogram {
        bounds: &bounds,
        counts: &counts,
        sum: Some(values.iter().sum()),
        min: Some(min),
        max: Some(max),
    };
    let imported = Distribution::from_explicit(&point).unwrap();
    assert_eq!(imported.count(), 10_000);
    assert_eq!((imported.min(), imported.max()), (Some(min), Some(max)));
    for q in [0.5, 0.9, 0.99] {
        let exact = exact_quantile(&values, q);
        let bucket = bounds.partition_point(|&b| b < exact);
        let (low, high) = (bounds[bucket - 1].max(min), bounds[bucket].min(max));
        let bound = (high - low) / (high + low) + BOUND;
        let estimate = imported.quantile(q).unwrap();
        assert!(relative_error(estimate, exact) <= bound, "q={q}");
    }
}

#[test]
fn invalid_explicit_histograms_are_refused() {
    let import = |bounds: &[f64], counts: &[u64]| {
        Distribution::from_explicit(&ExplicitHistogram {
            bounds,
            counts,
            ..Default::default()
        })
    };
    assert_eq!(
        import(&[1.0, 2.0], &[1, 1]).unwrap_err(),
        DistributionError::BoundsMismatch {
            bounds: 2,
            counts: 2
        }
    );
    assert_eq!(
        import(&[1.0, 1.0], &[1, 1, 1]).unwrap_err(),
        DistributionError::BoundsNotIncreasing { index: 1 }
    );
    assert_eq!(
        import(&[f64::NAN], &[1, 1]).unwrap_err(),
        DistributionError::BoundsNotIncreasing { index: 0 }
    );
    assert_eq!(import(&[], &[]).unwrap().count(), 0);
    let single = import(&[], &[5]).unwrap();
    assert_eq!((single.count(), single.quantile(0.5)), (5, Some(0.0)));
}

#[test]
fn a_summary_knows_its_statistics_but_no_quantile() {
    let summary = Distribution::summary(4, 10.0, 1.0, 4.0).unwrap();
    assert_eq!(
        (summary.count(), summary.sum(), summary.mean()),
        (4, 10.0, Some(2.5))
    );
    assert_eq!((summary.min(), summary.max()), (Some(1.0), Some(4.0)));
    assert_eq!(summary.quantile(0.0), Some(1.0));
    assert_eq!(summary.quantile(0.5), None);
    assert_eq!(summary.quantile(1.0), Some(4.0));
    assert_eq!(Distribution::summary(0, 0.0, 0.0, 0.0).unwrap().count(), 0);
    assert_eq!(
        Distribution::summary(1, 1.0, 2.0, 1.0).unwrap_err(),
        DistributionError::MinAboveMax { min: 2.0, max: 1.0 }
    );
}
