//! `vigil`: one binary for every Vigil component. This file only parses the
//! command line, sets up logging and the runtime, and calls into the crates:
//! each component's, `vigil-up` (all of them in one process), `vigil-demo`
//! and `vigil-bench`.

use std::error::Error;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use tracing_subscriber::filter::Targets;
use vigil_aggregator::Aggregator;
use vigil_alerter::Alerter;
use vigil_api::Api;
use vigil_collector::Collector;
use vigil_config::Config;
use vigil_demo::{DemoOptions, DemoService};
use vigil_domain::shutdown::Shutdown;
use vigil_store::Retention;
use vigil_synthetic::Synthetic;

/// mimalloc rather than the system allocator: the allocator was a third of
/// `vigil up`'s time under remote-write load (README, "Benchmarks").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    Bench(vigil_bench::Bench),
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
            let options = vigil_up::Options {
                demo,
                data,
                demo_port,
            };
            serve(&cli.log, vigil_up::run(config, options))
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
        Command::Bench(bench) => serve(&cli.log, vigil_bench::run(config, bench)),
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
        "vigil collector: OTLP/gRPC on {}, OTLP/HTTP on {} ({}); metrics on http://{}/metrics",
        collector.grpc_address(),
        collector.http_address(),
        if config.collector.tls.is_some() {
            "TLS"
        } else {
            "plain"
        },
        collector.metrics_address()
    );
    collector.wait().await?;
    Ok(())
}

#[allow(clippy::print_stdout, reason = "the CLI says what it reads and writes")]
async fn aggregator(config: Config) -> Outcome {
    let shutdown = Shutdown::on_signals()?;
    let bus = vigil_bus::connect(&config.bus)?;
    let store = vigil_store::open(&config.store).await?;
    let retention = Retention::start(Arc::clone(&store), &config.store, shutdown.clone());
    let aggregator = Aggregator::start(&config, bus, store, shutdown).await?;
    println!(
        "vigil aggregator: group {} on {:?} bus into the {:?} store; metrics on http://{}/metrics",
        config.aggregator.group,
        config.bus.kind,
        config.store.kind,
        aggregator.metrics_address()
    );
    aggregator.wait().await?;
    retention.wait().await;
    Ok(())
}

#[allow(clippy::print_stdout, reason = "the CLI says where it listens")]
async fn api(config: Config) -> Outcome {
    let shutdown = Shutdown::on_signals()?;
    let store = vigil_store::open(&config.store).await?;
    let api = Api::start(&config, store, shutdown).await?;
    println!(
        "vigil api: on {}://{}/api/v1 over the {:?} store",
        if config.api.tls.is_some() {
            "https"
        } else {
            "http"
        },
        api.address(),
        config.store.kind
    );
    api.wait().await?;
    Ok(())
}

#[allow(clippy::print_stdout, reason = "the CLI says what it runs")]
async fn synthetic(config: Config) -> Outcome {
    let shutdown = Shutdown::on_signals()?;
    let prober = Synthetic::start(&config, shutdown).await?;
    println!(
        "vigil synthetic: {} scheduled probe locations, runs exported to {}; metrics on http://{}/metrics; SIGHUP reloads the scenarios",
        prober.metrics().scheduled.get(),
        config.synthetic.otlp_endpoint,
        prober.metrics_address()
    );
    prober.wait().await;
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
    for instance in vigil_demo::fault(&data, fault).await? {
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
