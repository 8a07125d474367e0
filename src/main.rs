//! `vigil`: one binary for every Vigil component. This file only parses the
//! command line and calls into the crates; no logic lives here.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use vigil_core::config::Config;

/// Vigil: availability monitoring for a whole payment ecosystem.
#[derive(Debug, Parser)]
#[command(name = "vigil", version)]
struct Cli {
    /// Configuration file (TOML). `VIGIL_SECTION__KEY=value` variables
    /// override its keys.
    #[arg(long, short, env = "VIGIL_CONFIG", global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Validate the configuration and print it with every default filled in.
    Config,
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
    match cli.command {
        Command::Config => print!("{}", config.to_toml()),
    }
    ExitCode::SUCCESS
}
