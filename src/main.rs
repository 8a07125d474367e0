//! `vigil`: one binary for every Vigil component. This file only parses the
//! command line, sets up logging and the runtime, and calls into the crates;
//! `up` (with `demo`) runs all of them in one process, and `detection` is
//! the one benchmark that needs all of them.

mod demo;
mod detection;
mod up;

use std::error::Error;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracing_subscriber::filter::Targets;
use vigil_aggregator::Aggregator;
use vigil_alerter::Alerter;
use vigil_collector::Collector;
use vigil_collector::bench::BenchOptions;
use vigil_config::Config;
use vigil_dashboard_api::Api;
use vigil_domain::shutdown::Shutdown;
use vigil_synthetic::Prober;
use vigil_synthetic::demo::{DemoOptions, DemoService};

/// Vigil: availability monitoring for a whole payment ecosystem.
#[derive(Debug, Parser)]
#[command(name = "vigil", version)]
struct Cli {
    /// Configuration file (TOML). `VIGIL_SECTION__KEY=value` variables
    /// override its keys.
    #[arg(long, short, env = "VIGIL_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// Log filter: a level (`info`) or per-target levels (`warn,vigil_collector=debug`).
    #[arg(long, env = "VIGIL_LOG", default_value = "info", global = true)]
    log: Targets,
    /// What to run; `up` when none is given.
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run every component in one process: collector, aggregator, alerter,
    /// prober and API (the embedded bus and SQLite unless configured).
    Up {
        /// Also run the demo: the payment service in two units with a
        /// canary, its probes, a mobile app's telemetry, example rules and
        /// SLO, and a webhook sink that prints alerts.
        #[arg(long)]
        demo: bool,
        /// Where data goes: the SQLite store, the demo's files.
        #[arg(long, default_value = "vigil-data")]
        data: PathBuf,
        /// The demo's first payment instance listens here, the other two on
        /// the next ports; 0: any free ports.
        #[arg(long, default_value_t = 8081)]
        demo_port: u16,
    },
    /// Validate the configuration and print it with every default filled in.
    Config,
    /// Run the collector: OTLP over gRPC and HTTP onto the bus.
    Collector,
    /// Run the aggregator: bus to rollups, spans and the catalogue in the store.
    Aggregator,
    /// Run the dashboard API over the store.
    Api,
    /// Run the synthetic prober: the scenarios of `synthetic.scenarios` on
    /// their schedules, exported as traces to the collector.
    Synthetic,
    /// Run the alerter: the rules of `alerter.rules` on the windows the
    /// aggregators publish; notification and remediation webhooks.
    Alerter,
    /// The demo payment service the prober and the demo probe.
    #[command(subcommand)]
    Demo(Demo),
    /// Create or upgrade the store's schema, then exit.
    Migrate,
    /// Measure a component and print its figures.
    #[command(subcommand)]
    Bench(Bench),
}

#[derive(Debug, Subcommand)]
enum Demo {
    /// Serve one instance: orders, payments, refunds, and `/admin/faults`.
    Serve {
        /// Where it listens.
        #[arg(long, default_value = "127.0.0.1:8081")]
        listen: std::net::SocketAddr,
        /// `vigil.unit` of its telemetry: the data-center unit it runs in.
        #[arg(long, default_value = "unit-a")]
        unit: String,
        /// `service.version`.
        #[arg(long, default_value = "1.0.0")]
        version: String,
        /// `vigil.cohort`: stable, canary or baseline.
        #[arg(long, default_value = "stable")]
        cohort: String,
        /// The collector's OTLP/HTTP address its spans go to.
        #[arg(long, default_value = "http://127.0.0.1:4318")]
        otlp_endpoint: String,
        /// The ingest token its spans are exported with.
        #[arg(long, env = "VIGIL_DEMO_TOKEN")]
        token: Option<String>,
    },
    /// Inject a fault into the demo of a running `vigil up --demo`: the
    /// instances it matches fail or slow down the requests of `route`.
    Fault {
        /// The `--data` folder of the running `vigil up --demo`.
        #[arg(long, default_value = "vigil-data")]
        data: PathBuf,
        /// Only instances of this unit (unit-a, unit-b).
        #[arg(long)]
        unit: Option<String>,
        /// Only instances of this version (1.0.0, 1.1.0).
        #[arg(long)]
        version: Option<String>,
        /// Only instances of this cohort (stable, canary).
        #[arg(long)]
        cohort: Option<String>,
        /// create, pay, query or refund; every route when unset.
        #[arg(long)]
        route: Option<String>,
        /// The share of matching requests that fail, 0 to 1.
        #[arg(long, default_value_t = 0.0)]
        error_rate: f64,
        /// Added to each matching request.
        #[arg(long, default_value_t = 0)]
        latency_ms: u64,
        /// Clear every fault instead.
        #[arg(long)]
        clear: bool,
    },
}

#[derive(Debug, Subcommand)]
enum Bench {
    /// Time for one core to take a 10 s window's rows and evaluate every
    /// rule at its boundary (rules of four types over span series).
    Alerter {
        #[arg(long, default_value_t = 10_000)]
        rules: usize,
        #[arg(long, default_value_t = 100_000)]
        series: usize,
        /// Windows measured, after an hour of windows as warm-up.
        #[arg(long, default_value_t = 30)]
        windows: usize,
    },
    /// Throughput, CPU and memory of one collector process writing to Kafka
    /// (`bus.kafka` of the configuration), driven over loopback.
    Collector {
        /// Seconds of load for each signal.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Concurrent gRPC connections.
        #[arg(long, default_value_t = 8)]
        connections: usize,
        /// Data points or spans per request.
        #[arg(long, default_value_t = 1000)]
        batch: usize,
    },
    /// Rollup rows per second written to the configured store (`store` of
    /// the configuration), in flushes of 10k, 50k and 100k rows; then the
    /// lag from bus acknowledgement to a queryable 10 s rollup under load,
    /// through an aggregator on the configured bus and store.
    Aggregator {
        /// Rows written for each flush size.
        #[arg(long, default_value_t = 500_000)]
        rows: usize,
        /// Data points per second of the lag load.
        #[arg(long, default_value_t = 100_000)]
        rate: u64,
        /// Seconds of lag load; 0 skips the lag measurement.
        #[arg(long, default_value_t = 30)]
        seconds: u64,
    },
    /// Time from the demo payment service starting to fail to the alert's
    /// webhook arriving, through collector, bus, aggregator and alerter on
    /// the configured bus and store.
    Detection {
        /// Faults injected and timed, one after the other (each ~30 s).
        #[arg(long, default_value_t = 20)]
        trials: usize,
    },
    /// Probe steps per second one prober runs against a local demo
    /// payment service, and how late runs start against their schedule.
    Synthetic {
        /// Copies of the four-step payment probe.
        #[arg(long, default_value_t = 100)]
        probes: usize,
        /// Milliseconds between runs of each probe.
        #[arg(long, default_value_t = 200)]
        interval_ms: u64,
        /// Seconds of load.
        #[arg(long, default_value_t = 20)]
        seconds: u64,
    },
    /// Dashboard API latency over the configured store loaded with span
    /// rollups: one service's p99 over 24 h at a 1 min step, and the
    /// services list.
    Api {
        /// Span series to load (0 measures what the store already holds).
        #[arg(long, default_value_t = 10_000)]
        series: usize,
        /// Services the series are spread over (20 operations, 5 units).
        #[arg(long, default_value_t = 100)]
        services: usize,
        /// Days of 1 h rollups; 1 min rollups cover the last 25 hours.
        #[arg(long, default_value_t = 7)]
        days: u64,
        /// Hours of 10 s rollups.
        #[arg(long, default_value_t = 2)]
        raw_hours: u64,
        /// Requests timed per path.
        #[arg(long, default_value_t = 200)]
        requests: usize,
    },
}

/// Exit status for a configuration the user must fix.
const CONFIG_ERROR: u8 = 2;

#[allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "the CLI talks to its user"
)]
fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::load(cli.config.as_deref()) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("vigil: invalid configuration: {error}");
            return ExitCode::from(CONFIG_ERROR);
        }
    };
    let command = cli.command.unwrap_or(Command::Up {
        demo: false,
        data: PathBuf::from("vigil-data"),
        demo_port: 8081,
    });
    let outcome = match command {
        Command::Up {
            demo,
            data,
            demo_port,
        } => {
            let options = up::Options {
                demo,
                data,
                demo_port,
            };
            serve(&cli.log, up::run(config, options))
        }
        Command::Demo(Demo::Fault {
            data,
            unit,
            version,
            cohort,
            route,
            error_rate,
            latency_ms,
            clear,
        }) => {
            let fault = (!clear).then(|| {
                serde_json::json!({
                    "unit": unit, "version": version, "cohort": cohort, "route": route,
                    "error_rate": error_rate, "latency_ms": latency_ms,
                })
            });
            serve(&cli.log, demo_fault(data, fault))
        }
        Command::Config => {
            print!("{}", config.to_toml());
            Ok(())
        }
        Command::Collector => serve(&cli.log, collector(config)),
        Command::Aggregator => serve(&cli.log, aggregator(config)),
        Command::Api => serve(&cli.log, api(config)),
        Command::Migrate => serve(&cli.log, migrate(config)),
        Command::Synthetic => serve(&cli.log, synthetic(config)),
        Command::Alerter => serve(&cli.log, alerter(config)),
        Command::Demo(Demo::Serve {
            listen,
            unit,
            version,
            cohort,
            otlp_endpoint,
            token,
        }) => {
            let options = DemoOptions {
                listen,
                service_name: "payments".to_owned(),
                unit,
                version,
                cohort,
                otlp_endpoint: Some(otlp_endpoint),
                token,
            };
            serve(&cli.log, demo(options))
        }
        Command::Bench(Bench::Alerter {
            rules,
            series,
            windows,
        }) => {
            let options = vigil_alerter::bench::BenchOptions {
                rules,
                series,
                windows,
            };
            serve(&cli.log, bench_alerter(options))
        }
        Command::Bench(Bench::Synthetic {
            probes,
            interval_ms,
            seconds,
        }) => {
            let options = vigil_synthetic::bench::BenchOptions {
                probes,
                interval_ms,
                seconds,
            };
            serve(&cli.log, bench_synthetic(config, options))
        }
        Command::Bench(Bench::Collector {
            seconds,
            connections,
            batch,
        }) => {
            let options = BenchOptions {
                seconds,
                connections,
                batch,
            };
            serve(&cli.log, bench_collector(config, options))
        }
        Command::Bench(Bench::Aggregator {
            rows,
            rate,
            seconds,
        }) => serve(&cli.log, bench_aggregator(config, rows, rate, seconds)),
        Command::Bench(Bench::Detection { trials }) => {
            serve(&cli.log, bench_detection(config, trials))
        }
        Command::Bench(Bench::Api {
            series,
            services,
            days,
            raw_hours,
            requests,
        }) => {
            let shape = vigil_dashboard_api::bench::Shape {
                series,
                services,
                days,
                raw_hours,
            };
            serve(&cli.log, bench_api(config, shape, requests))
        }
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("vigil: {error}");
            ExitCode::FAILURE
        }
    }
}

type Outcome = Result<(), Box<dyn Error>>;

/// Runs a long-lived component on a multi-threaded runtime, logging to stderr.
fn serve(log: &Targets, component: impl Future<Output = Outcome>) -> Outcome {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())),
        )
        .with(log.clone())
        .try_init()?;
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(component)
}

#[allow(clippy::print_stdout, reason = "the CLI says where it listens")]
async fn collector(config: Config) -> Outcome {
    let shutdown = Shutdown::on_signals()?;
    let bus = vigil_bus::connect(&config.bus)?;
    let collector = Collector::start(&config, bus, shutdown).await?;
    println!(
        "vigil collector: OTLP/gRPC on {}, OTLP/HTTP on {}",
        collector.grpc_address(),
        collector.http_address()
    );
    collector.wait().await?;
    Ok(())
}

#[allow(clippy::print_stdout, reason = "the CLI says what it reads and writes")]
async fn aggregator(config: Config) -> Outcome {
    let shutdown = Shutdown::on_signals()?;
    let bus = vigil_bus::connect(&config.bus)?;
    let store = vigil_store::open(&config.store).await?;
    let aggregator = Aggregator::start(&config, bus, store, shutdown).await?;
    println!(
        "vigil aggregator: group {} on {:?} bus into the {:?} store; metrics on http://{}/metrics",
        config.aggregator.group,
        config.bus.kind,
        config.store.kind,
        aggregator.metrics_address()
    );
    aggregator.wait().await?;
    Ok(())
}

#[allow(clippy::print_stdout, reason = "the CLI says where it listens")]
async fn api(config: Config) -> Outcome {
    let shutdown = Shutdown::on_signals()?;
    let store = vigil_store::open(&config.store).await?;
    let api = Api::start(&config, store, shutdown).await?;
    println!(
        "vigil api: on http://{}/api/v1 over the {:?} store",
        api.address(),
        config.store.kind
    );
    api.wait().await?;
    Ok(())
}

#[allow(clippy::print_stdout, reason = "the CLI says what it runs")]
async fn synthetic(config: Config) -> Outcome {
    let shutdown = Shutdown::on_signals()?;
    let prober = Prober::start(&config, shutdown).await?;
    println!(
        "vigil synthetic: {} scheduled probe locations, runs exported to {}; metrics on http://{}/metrics; SIGHUP reloads the scenarios",
        prober.metrics().scheduled.get(),
        config.synthetic.otlp_endpoint,
        prober.metrics_address()
    );
    prober.wait().await;
    Ok(())
}

#[allow(clippy::print_stdout, reason = "a benchmark prints its figures")]
async fn bench_alerter(options: vigil_alerter::bench::BenchOptions) -> Outcome {
    let figures = tokio::task::spawn_blocking(move || vigil_alerter::bench::run(options)).await??;
    let quantiles = |d: &vigil_domain::distribution::Distribution| {
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
    println!("  active verdicts          {}", figures.active_verdicts);
    Ok(())
}

#[allow(clippy::print_stdout, reason = "a benchmark prints its figures")]
async fn bench_detection(config: Config, trials: usize) -> Outcome {
    println!(
        "detection: {trials} faults (half of the demo's requests fail), {:?} bus, {:?} store; about {} s",
        config.bus.kind,
        config.store.kind,
        20 + trials * 30
    );
    let mut latencies = detection::run(config, trials).await?;
    latencies.sort();
    // Nearest rank: of 20 trials, p99 is the slowest.
    let q = |q: f64| {
        let rank = ((q * latencies.len() as f64).ceil() as usize).clamp(1, latencies.len());
        latencies.get(rank - 1).map_or(0.0, |d| d.as_secs_f64())
    };
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

#[allow(clippy::print_stdout, reason = "the CLI says what it runs")]
async fn alerter(config: Config) -> Outcome {
    let shutdown = Shutdown::on_signals()?;
    let bus = vigil_bus::connect(&config.bus)?;
    let store = vigil_store::open(&config.store).await?;
    let alerter = Alerter::start(&config, bus, store, shutdown).await?;
    println!(
        "vigil alerter: {} rules on the {:?} bus's rollups; metrics on http://{}/metrics; SIGHUP reloads the rules",
        alerter.metrics().rules.get(),
        config.bus.kind,
        alerter.metrics_address()
    );
    alerter.wait().await;
    Ok(())
}

#[allow(clippy::print_stdout, reason = "the CLI says what it did")]
async fn demo_fault(data: PathBuf, fault: Option<serde_json::Value>) -> Outcome {
    let what = match &fault {
        Some(fault) => format!("fault {fault} sent to"),
        None => "faults cleared on".to_owned(),
    };
    for instance in demo::fault(&data, fault).await? {
        println!("{what} {instance}");
    }
    Ok(())
}

#[allow(clippy::print_stdout, reason = "the CLI says where it listens")]
async fn demo(options: DemoOptions) -> Outcome {
    let shutdown = Shutdown::on_signals()?;
    let (unit, version, cohort) = (
        options.unit.clone(),
        options.version.clone(),
        options.cohort.clone(),
    );
    let service = DemoService::start(options, shutdown).await?;
    println!(
        "vigil demo: payments {version} ({cohort}) of {unit} on http://{}; faults at /admin/faults",
        service.address()
    );
    service.wait().await;
    Ok(())
}

#[allow(clippy::print_stdout, reason = "a benchmark prints its figures")]
async fn bench_synthetic(config: Config, options: vigil_synthetic::bench::BenchOptions) -> Outcome {
    let figures = vigil_synthetic::bench::run(&config, options).await?;
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

#[allow(clippy::print_stdout, reason = "the CLI says what it did")]
async fn migrate(config: Config) -> Outcome {
    let store = vigil_store::connect(&config.store)?;
    let applied = store.migrate().await?;
    println!(
        "vigil migrate: {:?} store is up to date; migrations applied now: {applied:?}",
        config.store.kind
    );
    Ok(())
}

#[allow(clippy::print_stdout, reason = "a benchmark prints its figures")]
async fn bench_api(
    config: Config,
    shape: vigil_dashboard_api::bench::Shape,
    requests: usize,
) -> Outcome {
    let store = vigil_store::open(&config.store).await?;
    if shape.series > 0 {
        let loaded = vigil_dashboard_api::bench::load(store.as_ref(), shape).await?;
        println!(
            "loaded {} rollup rows into the {:?} store in {:.0} s: {} span series over {} services; 1 h windows over {} days, 1 min over 25 h, 10 s over {} h",
            loaded.rows,
            config.store.kind,
            loaded.took.as_secs_f64(),
            shape.series,
            shape.services,
            shape.days,
            shape.raw_hours
        );
    }
    for figure in vigil_dashboard_api::bench::measure(&config, store, requests).await? {
        println!(
            "  {:<45} {} requests: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            figure.what,
            figure.requests,
            figure.p50.as_secs_f64() * 1e3,
            figure.p99.as_secs_f64() * 1e3,
            figure.max.as_secs_f64() * 1e3
        );
    }
    Ok(())
}

#[allow(clippy::print_stdout, reason = "a benchmark prints its figures")]
async fn bench_aggregator(config: Config, rows: usize, rate: u64, seconds: u64) -> Outcome {
    let store = vigil_store::open(&config.store).await?;
    println!(
        "rollup rows into the {:?} store, one atomic flush (rows + checkpoint) at a time:",
        config.store.kind
    );
    for figure in vigil_aggregator::bench::store_writes(store.as_ref(), rows).await? {
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
        let lag = vigil_aggregator::bench::lag(config, rate, seconds).await?;
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

#[allow(clippy::print_stdout, reason = "a benchmark prints its figures")]
async fn bench_collector(config: Config, options: BenchOptions) -> Outcome {
    let exe = std::env::current_exe()?;
    println!(
        "collector into Kafka at {} (acks=all): {} connections, {} items per request, {} s per signal",
        config.bus.kafka.brokers, options.connections, options.batch, options.seconds
    );
    let report = vigil_collector::bench::run(&exe, &config, &options).await?;
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
