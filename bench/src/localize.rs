//! `vigil bench localize`: root-cause localization's F1 and time per case
//! on one core, over cases generated as RiskLoc's paper generates its
//! synthetic datasets (`vigil_domain::localize::synthetic`): its S shape
//! (5 dimensions of 10, 12, 10, 8 and 5 values: 48,000 leaves) and 6
//! dimensions of 10 values (1,000,000 leaves).

use std::time::{Duration, Instant};

use vigil_domain::localize::synthetic::{Rng, case, score};
use vigil_domain::localize::{Settings, localize};

#[derive(Debug, Clone, Copy, clap::Args)]
pub struct Options {
    /// Cases of the 48,000-leaf shape.
    #[arg(long, default_value_t = 50)]
    pub cases: usize,
    /// Cases of the 1,000,000-leaf shape.
    #[arg(long, default_value_t = 3)]
    pub large_cases: usize,
    #[arg(long, default_value_t = 121)]
    pub seed: u64,
}

/// The figures of one shape.
#[derive(Debug)]
pub struct Figures {
    pub sizes: Vec<u32>,
    pub leaves: usize,
    pub cases: usize,
    pub f1: f64,
    pub p50: Duration,
    pub max: Duration,
}

/// Localizes `cases` generated cases of dimensions of `sizes` values.
pub fn run(sizes: &[u32], cases: usize, seed: u64) -> Figures {
    let mut rng = Rng::new(seed);
    let (mut tp, mut fp, mut missed) = (0, 0, 0);
    let mut took = Vec::with_capacity(cases);
    let mut leaves = 0;
    for _ in 0..cases {
        let generated = case(&mut rng, sizes);
        leaves = generated.leaves.len();
        let settings = Settings {
            max_causes: 20,
            ..Settings::default()
        };
        let started = Instant::now();
        let found: Vec<Vec<(usize, u32)>> = localize(sizes, &generated.leaves, settings)
            .into_iter()
            .map(|cause| cause.element)
            .collect();
        took.push(started.elapsed());
        let (t, f, n) = score(&found, &generated.causes);
        tp += t;
        fp += f;
        missed += n;
    }
    took.sort_unstable();
    Figures {
        sizes: sizes.to_vec(),
        leaves,
        cases,
        f1: 2.0 * tp as f64 / (2 * tp + fp + missed).max(1) as f64,
        p50: took.get(cases / 2).copied().unwrap_or_default(),
        max: took.last().copied().unwrap_or_default(),
    }
}
