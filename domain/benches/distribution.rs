//! `cargo bench -p vigil-domain`: prints the figures of the `Distribution`
//! against its targets (record ≥ 50M values/s on one core; merging two
//! 300-bucket distributions ≤ 2 µs; a quantile of a 300-bucket distribution
//! ≤ 1 µs). A plain harness: the median of repeated timed runs, no framework.

#![allow(clippy::print_stdout, reason = "a benchmark prints its figures")]

use std::hint::black_box;
use std::time::{Duration, Instant};

use vigil_domain::distribution::Distribution;

const RUNS: usize = 15;

/// Median time of one call of `f` over `RUNS` runs of `iterations` calls.
fn time_per_call(iterations: u64, mut f: impl FnMut()) -> Duration {
    let mut runs: Vec<Duration> = (0..RUNS)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..iterations {
                f();
            }
            start.elapsed() / iterations as u32
        })
        .collect();
    runs.sort();
    runs[RUNS / 2]
}

/// Latency-like values: lognormal around 20 ms, from a fixed seed.
fn latencies(n: usize) -> Vec<f64> {
    let mut state = 0x5eed_u64;
    let mut unit = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 11) + 1) as f64 / (1u64 << 53) as f64
    };
    (0..n)
        .map(|_| {
            let normal = (-2.0 * unit().ln()).sqrt() * (std::f64::consts::TAU * unit()).cos();
            (3.0 + normal).exp()
        })
        .collect()
}

/// A distribution with exactly 300 non-empty buckets, starting at `first`.
fn three_hundred_buckets(first: i32) -> Distribution {
    let mut distribution = Distribution::new();
    for i in first..first + 300 {
        let value = ((f64::from(i) + 0.5) / 64.0).exp2();
        distribution.record_n(value, 1 + (i % 17) as u64).unwrap();
    }
    assert_eq!(distribution.to_buckets().0.len(), 300);
    distribution
}

fn main() {
    let values = latencies(1 << 20);
    let mut sink = Distribution::new();
    let per_batch = time_per_call(1, || {
        for &v in &values {
            sink.record(black_box(v)).unwrap();
        }
    });
    let record_rate = values.len() as f64 / per_batch.as_secs_f64();
    black_box(&sink);

    let a = three_hundred_buckets(0);
    let b = three_hundred_buckets(150);
    let mut merged = a.clone();
    let merge = time_per_call(100_000, || merged.merge(black_box(&b)));
    black_box(&merged);
    let merge_fresh = time_per_call(100_000, || {
        let mut fresh = black_box(&a).clone();
        fresh.merge(black_box(&b));
        black_box(fresh);
    });

    let p99 = time_per_call(1_000_000, || {
        black_box(black_box(&a).quantile(black_box(0.99)));
    });
    let p50 = time_per_call(1_000_000, || {
        black_box(black_box(&a).quantile(black_box(0.5)));
    });
    let to_buckets = time_per_call(100_000, || {
        black_box(black_box(&a).to_buckets());
    });

    println!("Distribution (one core, median of {RUNS} runs)");
    println!(
        "  record                          {:>8.1} M values/s   (target ≥ 50 M/s)",
        record_rate / 1e6
    );
    println!(
        "  merge 300 + 300 buckets          {:>8.0} ns          (target ≤ 2000 ns)",
        merge.as_nanos()
    );
    println!(
        "  clone + merge 300 + 300 buckets  {:>8.0} ns",
        merge_fresh.as_nanos()
    );
    println!(
        "  quantile p99, 300 buckets        {:>8.0} ns          (target ≤ 1000 ns)",
        p99.as_nanos()
    );
    println!(
        "  quantile p50, 300 buckets        {:>8.0} ns",
        p50.as_nanos()
    );
    println!(
        "  to_buckets, 300 buckets          {:>8.0} ns",
        to_buckets.as_nanos()
    );
}
