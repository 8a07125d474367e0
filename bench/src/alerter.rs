//! `vigil bench alerter`: how long one core takes to take a window's rows
//! and evaluate every rule at its boundary.
//!
//! `rules` rules over `series` span series, in one process, no I/O: the
//! series belong to `rules / 10` services (10 units × the rest in
//! operations each); each service has 10 rules grouped by unit: 4 on p99
//! over 1 min, 3 on the error ratio over 1 min, 2 multi-window burn rates
//! (1 h/5 min, 6 h/30 min) and 1 robust z-score anomaly. Each 10 s window
//! every series gets a row of 20 points; the figures are per window, after
//! the first hour of windows has filled the rules' ranges.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use vigil_domain::distribution::Distribution;
use vigil_domain::model::{Kind, Rollup, SeriesKey};
use vigil_domain::tenant::TenantId;
use vigil_domain::yaml::FileError;

use vigil_alerter::eval::Engine;
use vigil_alerter::rules;

#[derive(Debug, Clone, Copy, clap::Args)]
pub struct Options {
    #[arg(long, default_value_t = 10_000)]
    pub rules: usize,
    #[arg(long, default_value_t = 100_000)]
    pub series: usize,
    /// Windows measured, after an hour of windows as warm-up.
    #[arg(long, default_value_t = 30)]
    pub windows: usize,
}

/// What one run measured.
#[derive(Debug)]
pub struct Figures {
    pub rules: usize,
    pub series: usize,
    pub groups: usize,
    /// Per window, in ms: taking the rows, evaluating the boundary, both.
    pub ingest_ms: Distribution,
    pub evaluate_ms: Distribution,
    pub total_ms: Distribution,
    /// A slide between boundaries over the window's rows, once they are in.
    pub slide_ms: Distribution,
    pub active_verdicts: usize,
}

fn rule_file(services: usize) -> String {
    let mut text = String::from("tenant: acme\nrules:\n");
    for s in 0..services {
        let service = format!("svc-{s}");
        for k in 0..4 {
            text.push_str(&format!(
                "  - {{name: p99-{s}-{k}, type: threshold, service: {service}, group_by: [vigil.unit], signal: p99, window: 1m, op: '>', value: {}}}\n",
                300 + 100 * k
            ));
        }
        for k in 0..3 {
            text.push_str(&format!(
                "  - {{name: errors-{s}-{k}, type: threshold, service: {service}, group_by: [vigil.unit], signal: error_ratio, window: 1m, op: '>', value: 0.0{}}}\n",
                k + 1
            ));
        }
        for k in 0..2 {
            text.push_str(&format!(
                "  - {{name: slo-{s}-{k}, type: burn_rate, service: {service}, group_by: [vigil.unit], objective: 99.{}}}\n",
                9 - k
            ));
        }
        text.push_str(&format!(
            "  - {{name: anomaly-{s}, type: anomaly, service: {service}, group_by: [vigil.unit], signal: p99, window: 1m, method: zscore, history: 30m}}\n"
        ));
    }
    text
}

/// Runs the benchmark.
pub fn run(options: Options) -> Result<Figures, FileError> {
    let services = (options.rules / 10).max(1);
    let files = vec![(PathBuf::from("bench.yaml"), rule_file(services))];
    let set = rules::parse(&files, &|_| None, None)?;
    let rules: Vec<Arc<rules::Rule>> = set.rules.into_iter().map(Arc::new).collect();
    let rule_count = rules.len();
    let tenant = TenantId::parse("acme").unwrap_or_else(|_| unreachable!("a valid tenant id"));
    let per_service = (options.series / services).max(1);
    let series: Vec<SeriesKey> = (0..services * per_service)
        .map(|i| {
            let (service, j) = (i / per_service, i % per_service);
            SeriesKey::new(
                tenant.clone(),
                Kind::Span,
                format!("svc-{service}"),
                format!("op-{}", j / 10),
                vec![("vigil.unit".into(), format!("u{}", j % 10))],
            )
        })
        .collect();
    // A few shapes of rollup, so rows are not all alike.
    let shapes: Vec<Rollup> = (0..16u64)
        .map(|k| {
            let mut rollup = Rollup::default();
            for i in 0..20u64 {
                let ms = 20.0 + ((i * 37 + k * 11) % 400) as f64;
                rollup
                    .record(ms, (i + k) % 50 == 0)
                    .unwrap_or_else(|_| unreachable!("finite"));
            }
            rollup
        })
        .collect();
    let start = 1_800_000_000;
    let mut engine = Engine::new(rules, start);
    let warm_up = 360;
    let mut figures = Figures {
        rules: rule_count,
        series: series.len(),
        groups: 0,
        ingest_ms: Distribution::new(),
        evaluate_ms: Distribution::new(),
        total_ms: Distribution::new(),
        slide_ms: Distribution::new(),
        active_verdicts: 0,
    };
    let take = |engine: &mut Engine, w: usize| {
        let window = start + w as u64 * 10;
        for (i, key) in series.iter().enumerate() {
            engine.ingest(key, 10, window, &shapes[(i + w) % shapes.len()]);
        }
    };
    take(&mut engine, 0);
    for w in 0..warm_up + options.windows {
        let boundary = start + w as u64 * 10 + 10;
        let began = Instant::now();
        let verdicts = engine.advance(boundary);
        let evaluated = began.elapsed();
        // The next window's rows, then one slide over them (of the nine
        // between two boundaries).
        take(&mut engine, w + 1);
        let ingested = began.elapsed() - evaluated;
        let sliding = Instant::now();
        engine.slide();
        let slid = sliding.elapsed();
        if w >= warm_up {
            let ms = |d: std::time::Duration| d.as_secs_f64() * 1_000.0;
            let _ = figures.ingest_ms.record(ms(ingested));
            let _ = figures.evaluate_ms.record(ms(evaluated));
            let _ = figures.total_ms.record(ms(ingested + evaluated));
            let _ = figures.slide_ms.record(ms(slid));
            figures.active_verdicts += verdicts.iter().map(|(_, v)| v.len()).sum::<usize>();
        }
    }
    figures.groups = engine.groups();
    Ok(figures)
}
