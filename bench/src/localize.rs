//! `vigil bench localize`: root-cause localization's F1 and time per case
//! on one core, over cases generated as RiskLoc's paper generates its
//! synthetic datasets (`vigil_domain::localize::synthetic`): its S shape
//! (5 dimensions of 10, 12, 10, 8 and 5 values: 48,000 leaves) and 6
//! dimensions of 10 values (1,000,000 leaves).
//!
//! With `--dataset`, over the cases of a dataset in the format RiskLoc's
//! and Squeeze's published datasets share instead: a directory of
//! `<case>.csv` files (one column per dimension, `real` and `predict`)
//! and `injection_info.csv` (`timestamp`: the case, `set`: its causes as
//! `a=a1&b=b3;c=c2`). So the same cases run through RiskLoc's own code and
//! through Vigil's are scored alike.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use vigil_domain::localize::synthetic::{Case, Rng, case, score};
use vigil_domain::localize::{Leaf, Settings, localize};

#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// Cases of the 48,000-leaf shape.
    #[arg(long, default_value_t = 50)]
    pub cases: usize,
    /// Cases of the 1,000,000-leaf shape.
    #[arg(long, default_value_t = 3)]
    pub large_cases: usize,
    #[arg(long, default_value_t = 121)]
    pub seed: u64,
    /// A directory of cases in RiskLoc's dataset format, run instead of
    /// the generated shapes (repeatable).
    #[arg(long)]
    pub dataset: Vec<PathBuf>,
}

/// The figures of one shape or dataset.
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
    let mut tally = Tally::default();
    for _ in 0..cases {
        tally.localize(&case(&mut rng, sizes));
    }
    tally.figures(sizes)
}

/// Localizes every case of a dataset in RiskLoc's format.
pub fn run_dataset(directory: &Path) -> Result<Figures, Box<dyn std::error::Error>> {
    let mut info = csv::Reader::from_path(directory.join("injection_info.csv"))?;
    let headers = info.headers()?.clone();
    let column = |name: &str| {
        headers
            .iter()
            .position(|h| h == name)
            .ok_or_else(|| format!("injection_info.csv has no {name} column"))
    };
    let (case_at, set_at) = (column("timestamp")?, column("set")?);
    let mut tally = Tally::default();
    let mut sizes = Vec::new();
    for record in info.records() {
        let record = record?;
        let read = read_case(
            &directory.join(format!("{}.csv", &record[case_at])),
            &record[set_at],
        )?;
        sizes.clone_from(&read.sizes);
        tally.localize(&read);
    }
    Ok(tally.figures(&sizes))
}

/// One case file and its causes: dimensions are the columns other than
/// `real` and `predict`, in name order (as RiskLoc reads them), their values
/// numbered as they come.
fn read_case(path: &Path, set: &str) -> Result<Case, Box<dyn std::error::Error>> {
    let mut reader = csv::Reader::from_path(path)?;
    let headers = reader.headers()?.clone();
    let at = |name: &str| {
        headers
            .iter()
            .position(|h| h == name)
            .ok_or_else(|| format!("{} has no {name} column", path.display()))
    };
    let (real_at, predict_at) = (at("real")?, at("predict")?);
    let mut dimensions: Vec<(&str, usize)> = headers
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != real_at && *i != predict_at)
        .map(|(i, name)| (name, i))
        .collect();
    dimensions.sort_unstable();
    let mut numbers: Vec<HashMap<String, u32>> = vec![HashMap::new(); dimensions.len()];
    let mut leaves = Vec::new();
    for record in reader.records() {
        let record = record?;
        let values = dimensions
            .iter()
            .zip(&mut numbers)
            .map(|((_, column), numbers)| {
                let next = numbers.len() as u32;
                *numbers.entry(record[*column].to_owned()).or_insert(next)
            })
            .collect();
        let (actual, expected): (f64, f64) =
            (record[real_at].parse()?, record[predict_at].parse()?);
        leaves.push(Leaf {
            values,
            actual,
            expected,
            // As RiskLoc weighs a leaf of 0 and forecast 0: nothing.
            seen: actual != 0.0 || expected != 0.0,
        });
    }
    let mut causes = Vec::new();
    for cause in set.split(';').filter(|c| !c.is_empty()) {
        let mut element = Vec::new();
        for pair in cause.split('&') {
            let (name, value) = pair
                .split_once('=')
                .ok_or_else(|| format!("cause {cause:?}: {pair:?} is not dimension=value"))?;
            let d = dimensions
                .iter()
                .position(|(n, _)| *n == name)
                .ok_or_else(|| format!("cause {cause:?}: no dimension {name}"))?;
            // A value no leaf has cannot be found: it counts as missed.
            let v = numbers[d].get(value).copied().unwrap_or(u32::MAX);
            element.push((d, v));
        }
        element.sort_unstable();
        if !causes.contains(&element) {
            causes.push(element);
        }
    }
    Ok(Case {
        sizes: numbers.iter().map(|n| n.len() as u32).collect(),
        leaves,
        causes,
    })
}

/// Causes found and missed, and the time taken, over cases.
#[derive(Default)]
struct Tally {
    tp: usize,
    fp: usize,
    missed: usize,
    took: Vec<Duration>,
    leaves: usize,
}

impl Tally {
    fn localize(&mut self, case: &Case) {
        let settings = Settings {
            max_causes: 20,
            ..Settings::default()
        };
        let started = Instant::now();
        let found: Vec<Vec<(usize, u32)>> = localize(&case.sizes, &case.leaves, settings)
            .into_iter()
            .map(|cause| cause.element)
            .collect();
        self.took.push(started.elapsed());
        let (t, f, n) = score(&found, &case.causes);
        self.tp += t;
        self.fp += f;
        self.missed += n;
        self.leaves = case.leaves.len();
    }

    fn figures(mut self, sizes: &[u32]) -> Figures {
        self.took.sort_unstable();
        let cases = self.took.len();
        Figures {
            sizes: sizes.to_vec(),
            leaves: self.leaves,
            cases,
            f1: 2.0 * self.tp as f64 / (2 * self.tp + self.fp + self.missed).max(1) as f64,
            p50: self.took.get(cases / 2).copied().unwrap_or_default(),
            max: self.took.last().copied().unwrap_or_default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dataset_in_risklocs_format_is_read_and_scored() {
        let directory = std::env::temp_dir().join(format!("vigil-localize-{}", std::process::id()));
        std::fs::create_dir_all(&directory).expect("a directory");
        // Columns in any order; dimensions are read in name order. Every
        // leaf of b=b2 fell by half: the cause.
        std::fs::write(
            directory.join("1650.csv"),
            "b,real,a,predict\nb1,100,a1,100\nb1,80,a2,82\nb2,50,a1,100\nb2,40,a2,80\nb3,0,a1,0\nb3,30,a2,29\n",
        )
        .expect("a case");
        // A true cause named in another order, and one no leaf has.
        std::fs::write(
            directory.join("injection_info.csv"),
            "timestamp,set\n1650,b=b2;a=a9&b=b1\n",
        )
        .expect("the labels");
        let case = read_case(&directory.join("1650.csv"), "b=b2;b=b1&a=a9").expect("read");
        assert_eq!(case.sizes, vec![2, 3]);
        assert_eq!(case.causes, vec![vec![(1, 1)], vec![(0, u32::MAX), (1, 0)]]);
        assert_eq!(
            case.leaves.iter().map(|l| l.seen).collect::<Vec<_>>(),
            vec![true, true, true, true, false, true]
        );
        let figures = run_dataset(&directory).expect("scored");
        assert_eq!((figures.cases, figures.leaves), (1, 6));
        // b=b2 found, the other missed: F1 = 2 / (2 + 0 + 1).
        assert!((figures.f1 - 2.0 / 3.0).abs() < 1e-12, "{figures:?}");
        std::fs::remove_dir_all(&directory).expect("removed");
    }
}
