//! `cargo bench -p vigil-aggregator`: points per second through the windows
//! on one core (target ≥ 1M/s), closing windows as event time advances.

#![allow(clippy::print_stdout, reason = "a benchmark prints its figures")]

use std::hint::black_box;
use std::time::Instant;

use vigil_aggregator::window::Windows;

const SERIES: u64 = 10_000;
const POINTS: u64 = 4_000_000;
/// Points per second of event time: 100k points/s spread over the series.
const POINTS_PER_SECOND: u64 = 100_000;
const RUNS: usize = 7;

fn main() {
    // Latency-like values from a fixed generator.
    let mut state = 0x5eed_u64;
    let values: Vec<f64> = (0..1 << 16)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            1.0 + (state >> 40) as f64 / 1e3
        })
        .collect();
    let mut rates = Vec::new();
    let mut closed_rows = 0;
    for _ in 0..RUNS {
        let mut windows = Windows::new(30);
        let start = Instant::now();
        let mut rows = 0;
        for i in 0..POINTS {
            let time_s = 1_700_000_000 + i / POINTS_PER_SECOND;
            let series = i.wrapping_mul(0x9e37_79b9_7f4a_7c15) % SERIES;
            let value = values[(i as usize) & 0xffff];
            black_box(windows.record(series, time_s, value, i % 97 == 0)).ok();
            if i % POINTS_PER_SECOND == POINTS_PER_SECOND - 1 {
                rows += windows.close(time_s).len();
            }
        }
        rows += windows.close(u64::MAX / 2).len();
        rates.push(POINTS as f64 / start.elapsed().as_secs_f64());
        closed_rows = rows;
    }
    rates.sort_by(f64::total_cmp);
    println!("Windowing (one core, median of {RUNS} runs; {SERIES} series, 10 s / 1 min / 1 h)");
    println!(
        "  points through windows   {:>8.2} M/s   (target ≥ 1 M/s per core)",
        rates[RUNS / 2] / 1e6
    );
    println!("  rollup rows closed       {closed_rows:>8} per run of {POINTS} points");
}
