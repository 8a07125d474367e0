//! `vigil`: one binary for every Vigil component. This file only parses the
//! command line, sets up logging and the runtime, and calls into the crates.

use std::error::Error;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracing_subscriber::filter::Targets;
use vigil_collector::Collector;
use vigil_core::config::Config;
use vigil_core::shutdown::Shutdown;

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
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Validate the configuration and print it with every default filled in.
    Config,
    /// Run the collector: OTLP over gRPC and HTTP onto the bus.
    Collector,
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
    let outcome = match cli.command {
        Command::Config => {
            print!("{}", config.to_toml());
            Ok(())
        }
        Command::Collector => serve(&cli.log, collector(config)),
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
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
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
    let bus = vigil_core::bus::connect(&config.bus)?;
    let collector = Collector::start(&config, bus, shutdown).await?;
    println!(
        "vigil collector: OTLP/gRPC on {}, OTLP/HTTP on {}",
        collector.grpc_address(),
        collector.http_address()
    );
    collector.wait().await?;
    Ok(())
}
