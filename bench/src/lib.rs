//! `vigil bench …`: every figure Vigil reports about itself, one module per
//! component measured, each with its options as a `clap::Args` struct.
//!
//! - [`collector`]: throughput, CPU and memory of one collector process;
//! - [`bus`]: `vigil up` ingest with the durable bus per fsync policy, and
//!   the bus log's recovery time;
//! - [`aggregator`]: store writes per second, and lag to a queryable rollup;
//! - [`alerter`]: one window's rows and rule evaluation on one core;
//! - [`prober`]: probe steps per second and schedule lateness;
//! - [`remote_write`]: Prometheus remote-write into any running receiver;
//! - [`ingest`]: points/s and CPU per point through the whole pipeline;
//! - [`api`]: dashboard API latency over a loaded store;
//! - [`localize`]: root-cause localization's F1 and time per case;
//! - [`detection`]: fault to firing webhook, through every component.
//! - [`recovery`]: fault to a playbook run that recovered, with no human.
//!
//! Benchmarks print their figures; nothing here runs in production.

#![allow(clippy::print_stdout, reason = "a benchmark prints its figures")]

pub mod aggregator;
pub mod alerter;
pub mod api;
pub mod bus;
pub mod collector;
pub mod crashes;
pub mod detection;
pub mod ingest;
pub mod localize;
pub mod logs;
pub mod prober;
pub mod recovery;
pub mod remote_write;

use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use std::time::Duration;

use vigil_config::Config;
use vigil_domain::distribution::Distribution;

type Error = Box<dyn std::error::Error>;

/// What to measure.
#[derive(Debug, clap::Subcommand)]
pub enum Bench {
    /// Time for one core to take a 10 s window's rows and evaluate every
    /// rule at its boundary (rules of four types over span series).
    Alerter(alerter::Options),
    /// Throughput, CPU and memory of one collector process writing to Kafka
    /// (`bus.kafka` of the configuration), driven over loopback.
    Collector(collector::Options),
    /// Ingest through `vigil up` (embedded bus, SQLite) with each fsync
    /// policy of the bus log, and the time to recover a log after a crash.
    Bus(bus::Options),
    /// Rollup rows per second written to the configured store (`store` of
    /// the configuration), in flushes of 10k, 50k and 100k rows; then the
    /// lag from bus acknowledgement to a queryable 10 s rollup under load,
    /// through an aggregator on the configured bus and store.
    Aggregator(aggregator::Options),
    /// Time from the demo payment service starting to fail to the alert's
    /// webhook arriving, through collector, bus, aggregator and alerter on
    /// the configured bus and store.
    Detection(detection::Options),
    /// Time from a fault in the demo (unit-b fails half of its requests)
    /// to the page, to the playbook's first call (traffic shifted away) and
    /// to its run ending recovered, on the configured bus and store.
    Recovery(recovery::Options),
    /// Probe steps per second one prober runs against a local demo
    /// payment service, and how late runs start against their schedule.
    Synthetic(prober::Options),
    /// Dashboard API latency over the configured store loaded with span
    /// rollups: one service's p99 over 24 h at a 1 min step, and the
    /// services list.
    Api(api::Options),
    /// Log search latency (`/api/v1/logs`) over the configured store
    /// loaded with 10 million log records over 24 hours.
    Logs(logs::Options),
    /// Crash group latency (`/api/v1/crashes`) over the configured store
    /// loaded with 1 million crashes of one app over 24 hours.
    Crashes(crashes::Options),
    /// PromQL latency (`/prometheus/api/v1/query_range`) over the
    /// configured store loaded as for `api`: the request rate and p99 by
    /// unit over 24 h at a 1 min step, of one service and of every series.
    Promql(api::Options),
    /// The console's pages rendered on the server over the configured
    /// store loaded as for `api`: the overview and one service over the
    /// last hour and 24 h, the alerts and probes pages.
    Console(api::Options),
    /// Prometheus remote-write samples per second into a receiver already
    /// running (a Vigil collector, `vigil up`, VictoriaMetrics…), and per
    /// second of that receiver's CPU (`--pid`): one load generator to
    /// compare receivers side by side.
    RemoteWrite(remote_write::Options),
    /// Points per second and CPU-seconds per million points through the
    /// whole pipeline (collector, bus, aggregator, store), driven over
    /// loopback by remote-write, OTLP metrics and OTLP spans: one `vigil
    /// up`, or a collector and an aggregator on Kafka, each measured.
    Ingest(ingest::Options),
    /// Root-cause localization on one core: F1 and time per case over
    /// generated cases of 48,000 and of 1,000,000 leaves.
    Localize(localize::Options),
}

/// An OTLP attribute with a string value, for the generated load.
fn string_attribute(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.to_owned())),
        }),
        ..Default::default()
    }
}

/// Runs one benchmark on the configuration's bus and store and prints its
/// figures.
pub async fn run(config: Config, bench: Bench) -> Result<(), Error> {
    match bench {
        Bench::Alerter(options) => run_alerter(options).await,
        Bench::Collector(options) => run_collector(config, options).await,
        Bench::Bus(options) => run_bus(config, options).await,
        Bench::Aggregator(options) => run_aggregator(config, options).await,
        Bench::Detection(options) => run_detection(config, options).await,
        Bench::Recovery(options) => run_recovery(config, options).await,
        Bench::Synthetic(options) => run_prober(config, options).await,
        Bench::Api(options) => run_api(config, options, api::Suite::Api).await,
        Bench::Promql(options) => run_api(config, options, api::Suite::Promql).await,
        Bench::Console(options) => run_api(config, options, api::Suite::Console).await,
        Bench::Logs(options) => {
            run_events(config, options.records, options.requests, api::Suite::Logs).await
        }
        Bench::Crashes(options) => {
            run_events(
                config,
                options.records,
                options.requests,
                api::Suite::Crashes,
            )
            .await
        }
        Bench::RemoteWrite(options) => run_remote_write(options).await,
        Bench::Ingest(options) => run_ingest(config, options).await,
        Bench::Localize(options) => run_localize(options),
    }
}

fn run_localize(options: localize::Options) -> Result<(), Error> {
    let print = |what: String, figures: localize::Figures| {
        println!(
            "localize: {what} ({} leaves), {} cases: F1 {:.3}; per case p50 {:.0} ms, max {:.0} ms",
            figures.leaves,
            figures.cases,
            figures.f1,
            figures.p50.as_secs_f64() * 1e3,
            figures.max.as_secs_f64() * 1e3
        );
    };
    if !options.dataset.is_empty() {
        for directory in &options.dataset {
            let figures = localize::run_dataset(directory)?;
            print(
                format!(
                    "{} (dimensions of {:?} values)",
                    directory.display(),
                    figures.sizes
                ),
                figures,
            );
        }
        return Ok(());
    }
    for (sizes, cases) in [
        (vec![10, 12, 10, 8, 5], options.cases),
        (vec![10; 6], options.large_cases),
    ] {
        let figures = localize::run(&sizes, cases, options.seed);
        print(format!("dimensions of {:?} values", figures.sizes), figures);
    }
    Ok(())
}

async fn run_remote_write(options: remote_write::Options) -> Result<(), Error> {
    let (figures, request_bytes) = remote_write::run(&options).await?;
    println!(
        "remote-write to {} (pid {}): {} series x {} samples per request ({request_bytes} bytes snappy), {} connections, {:.1} s",
        options.url,
        options.pid,
        options.series,
        options.samples,
        options.connections,
        figures.seconds
    );
    println!(
        "  {:.0} samples/s; {:.0} samples per receiver CPU-second ({:.2} CPU-s per million)",
        figures.per_second(),
        figures.per_core_second(),
        figures.cpu_seconds_per_million()
    );
    Ok(())
}

async fn run_ingest(config: Config, options: ingest::Options) -> Result<(), Error> {
    let exe = match &options.exe {
        Some(exe) => exe.clone(),
        None => std::env::current_exe()?,
    };
    println!(
        "ingest through {}: {} connections, {} s per workload; CPU counted until the aggregator took everything",
        match options.deployment {
            ingest::Deployment::Embedded =>
                "vigil up (embedded bus, fsync interval; SQLite)".to_owned(),
            ingest::Deployment::Kafka => format!(
                "vigil collector + vigil aggregator (Kafka at {}, {:?} store)",
                config.bus.kafka.brokers, config.store.kind
            ),
        },
        options.connections,
        options.seconds
    );
    let figures = ingest::run(&exe, &config, &options)
        .await
        .map_err(|e| -> Error { e.to_string().into() })?;
    for figures in figures {
        let cpu: Vec<String> = figures
            .cpu_seconds
            .iter()
            .map(|(name, seconds)| {
                format!("{name} {:.2}", figures.cpu_seconds_per_million(*seconds))
            })
            .collect();
        println!(
            "  {:<17} {:>9.0} points/s   CPU-s per million points: {}   (drained {:.1} s after the load)",
            figures.workload,
            figures.per_second(),
            cpu.join(", "),
            figures.drain_seconds
        );
    }
    Ok(())
}

async fn run_alerter(options: alerter::Options) -> Result<(), Error> {
    let figures = tokio::task::spawn_blocking(move || alerter::run(options)).await??;
    let quantiles = |d: &Distribution| {
        let q = |q: f64| d.quantile(q).unwrap_or(0.0);
        format!(
            "p50 {:.0} / p99 {:.0} / max {:.0} ms",
            q(0.5),
            q(0.99),
            q(1.0)
        )
    };
    println!(
        "alerter: {} rules over {} series ({} groups in the feeds rules share), {} windows after an hour of warm-up, one thread",
        figures.rules,
        figures.series,
        figures.groups,
        figures.total_ms.count()
    );
    println!(
        "  taking a window's rows   {}",
        quantiles(&figures.ingest_ms)
    );
    println!(
        "  evaluating the boundary  {}",
        quantiles(&figures.evaluate_ms)
    );
    println!(
        "  per window               {}",
        quantiles(&figures.total_ms)
    );
    println!(
        "  a slide over its rows    {}",
        quantiles(&figures.slide_ms)
    );
    println!("  active verdicts          {}", figures.active_verdicts);
    Ok(())
}

async fn run_detection(config: Config, options: detection::Options) -> Result<(), Error> {
    let trials = options.trials;
    println!(
        "detection: {} s of healthy traffic, then {trials} faults (half of the demo's requests fail), {:?} bus, {:?} store; about {} s",
        options.healthy,
        config.bus.kind,
        config.store.kind,
        20 + options.healthy + trials as u64 * 30
    );
    let detection = detection::run(config, options).await?;
    println!(
        "  false alerts on {} s of healthy traffic: {}{}",
        options.healthy,
        detection.false_alerts.len(),
        if detection.false_alerts.is_empty() {
            String::new()
        } else {
            format!(" ({})", detection.false_alerts.join(", "))
        }
    );
    let rank = nearest_rank(detection.latencies);
    let q = |q| rank(q).as_secs_f64();
    println!(
        "  fault to firing webhook: p50 {:.1} s, p90 {:.1} s, p99 {:.1} s, max {:.1} s (min {:.1} s)",
        q(0.5),
        q(0.9),
        q(0.99),
        q(1.0),
        q(0.0)
    );
    Ok(())
}

/// The nearest-rank quantiles of `values` (of 20, p99 is the largest; q 0
/// the smallest).
pub fn nearest_rank(mut values: Vec<Duration>) -> impl Fn(f64) -> Duration {
    values.sort_unstable();
    move |q| {
        let rank = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len().max(1));
        values.get(rank - 1).copied().unwrap_or_default()
    }
}

async fn run_recovery(config: Config, options: recovery::Options) -> Result<(), Error> {
    let trials = options.trials;
    println!(
        "recovery: {trials} faults (unit-b fails half of its requests; the demo's unit-drain playbook shifts its traffic and checks), {:?} bus, {:?} store; about {} s",
        config.bus.kind,
        config.store.kind,
        30 + trials * 90
    );
    let results = recovery::run(config, trials).await?;
    let line = |what: &str, pick: fn(&recovery::Trial) -> Duration| {
        let rank = nearest_rank(results.iter().map(pick).collect());
        let q = |q| rank(q).as_secs_f64();
        println!(
            "  fault to {what:<18} p50 {:>5.1} s, p99 {:>5.1} s, max {:>5.1} s (min {:.1} s)",
            q(0.5),
            q(0.99),
            q(1.0),
            q(0.0)
        );
    };
    line("page accepted", |t| t.paged);
    line("first call", |t| t.acted);
    line("run ended", |t| t.ended);
    let recovered = results.iter().filter(|t| t.recovered).count();
    println!("  runs recovered: {recovered} of {}", results.len());
    Ok(())
}

async fn run_prober(config: Config, options: prober::Options) -> Result<(), Error> {
    let figures = prober::run(&config, options).await?;
    println!(
        "{} probes of 4 steps every {} ms ({:.0} steps/s offered) for {:.1} s:",
        options.probes,
        options.interval_ms,
        options.probes as f64 * 4_000.0 / options.interval_ms as f64,
        figures.seconds
    );
    println!(
        "  steps run: {} ({:.0} steps/s), failed: {}",
        figures.steps,
        figures.steps_per_second(),
        figures.failed_steps
    );
    println!(
        "  schedule lateness: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        figures.lateness_p50_ms, figures.lateness_p99_ms, figures.lateness_max_ms
    );
    println!(
        "  CPU: {:.2} cores (prober, target and span sink in one process)",
        figures.cores
    );
    Ok(())
}

async fn run_api(config: Config, options: api::Options, suite: api::Suite) -> Result<(), Error> {
    let shape = options.shape;
    let store = vigil_store::open(&config.store).await?;
    if shape.series > 0 {
        let loaded = api::load(store.as_ref(), shape).await?;
        println!(
            "loaded {} rollup rows into the {:?} store in {:.0} s: {} span series over {} services (and their services' and tenant's totals, in 8 partitions); 1 h windows over {} days, 1 min over 25 h, 10 s over {} h",
            loaded.rows,
            config.store.kind,
            loaded.took.as_secs_f64(),
            shape.series,
            shape.services,
            shape.days,
            shape.raw_hours
        );
    }
    print_figures(api::measure(&config, store, options.requests, suite).await?);
    Ok(())
}

/// Loads `records` log records or crashes (by `suite`), then times the
/// suite's pages.
async fn run_events(
    config: Config,
    records: u64,
    requests: usize,
    suite: api::Suite,
) -> Result<(), Error> {
    let store = vigil_store::open(&config.store).await?;
    if records > 0 {
        let (took, what) = if suite == api::Suite::Crashes {
            (crashes::load(store.as_ref(), records).await?, "crashes")
        } else {
            (logs::load(store.as_ref(), records).await?, "log records")
        };
        println!(
            "loaded {records} {what} into the {:?} store in {:.0} s ({:.0} records/s)",
            config.store.kind,
            took.as_secs_f64(),
            records as f64 / took.as_secs_f64()
        );
    }
    print_figures(api::measure(&config, store, requests, suite).await?);
    Ok(())
}

fn print_figures(figures: Vec<api::Figure>) {
    for figure in figures {
        println!(
            "  {:<50} {:<10} {} requests: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            figure.what,
            if figure.cached { "cached" } else { "uncached" },
            figure.requests,
            figure.p50.as_secs_f64() * 1e3,
            figure.p99.as_secs_f64() * 1e3,
            figure.max.as_secs_f64() * 1e3
        );
    }
}

async fn run_aggregator(config: Config, options: aggregator::Options) -> Result<(), Error> {
    let aggregator::Options {
        rows,
        rate,
        seconds,
    } = options;
    let store = vigil_store::open(&config.store).await?;
    println!(
        "rollup rows into the {:?} store, one atomic flush (rows + checkpoint) at a time:",
        config.store.kind
    );
    for figure in aggregator::store_writes(store.as_ref(), rows).await? {
        println!(
            "  {:>7} rows per flush: {:>10.0} rows/s   ({} flushes, slowest {:.0} ms)",
            figure.rows_per_flush,
            figure.rows_per_second,
            figure.flushes,
            figure.max_flush.as_secs_f64() * 1e3
        );
    }
    if seconds > 0 {
        println!(
            "lag from bus acknowledgement to a queryable 10 s rollup, {rate} points/s for {seconds} s, {:?} bus, {:?} store:",
            config.bus.kind, config.store.kind
        );
        let lag = aggregator::lag(config, rate, seconds).await?;
        println!(
            "  {} points acknowledged ({:.0} points/s); {} markers: p50 {:.2} s, p99 {:.2} s, max {:.2} s",
            lag.points,
            lag.points_per_second,
            lag.markers,
            lag.p50.as_secs_f64(),
            lag.p99.as_secs_f64(),
            lag.max.as_secs_f64()
        );
    }
    Ok(())
}

async fn run_bus(config: Config, options: bus::Options) -> Result<(), Error> {
    let exe = std::env::current_exe()?;
    let load = &options.load;
    println!(
        "vigil up (embedded bus, SQLite): {} connections, {} items per request, {} s per signal",
        load.connections, load.batch, load.seconds
    );
    let figures = bus::run(&exe, &config, &options).await?;
    for (fsync, report) in &figures.ingest {
        for (name, figures) in [("metric points", &report.metrics), ("spans", &report.spans)] {
            println!(
                "  fsync {:<8} {name:<13} {:>9.0}/s   {:>9.0}/s per core   {:>6.2} CPU-s per million",
                format!("{fsync:?}").to_lowercase(),
                figures.per_second(),
                figures.per_core_second(),
                figures.cpu_seconds_per_million()
            );
        }
    }
    let recovery = &figures.recovery;
    println!(
        "  recovery: {} MiB ({} records) readable again {:.2} s after the bus was dropped unconsumed",
        recovery.bytes >> 20,
        recovery.records,
        recovery.seconds
    );
    Ok(())
}

async fn run_collector(config: Config, options: collector::Options) -> Result<(), Error> {
    let exe = std::env::current_exe()?;
    println!(
        "collector into Kafka at {} (acks=all): {} connections, {} items per request, {} s per signal",
        config.bus.kafka.brokers, options.connections, options.batch, options.seconds
    );
    let report = collector::run(&exe, &config, &options).await?;
    for (name, figures) in [
        ("metric data points", &report.metrics),
        ("spans", &report.spans),
    ] {
        println!(
            "  {name:<18} {:>10.0}/s   {:>10.0}/s per collector core   {:>6.2} CPU-s per million",
            figures.per_second(),
            figures.per_core_second(),
            figures.cpu_seconds_per_million()
        );
    }
    println!(
        "  peak RSS           {:>10.1} MiB",
        report.peak_rss_bytes as f64 / (1024.0 * 1024.0)
    );
    Ok(())
}
