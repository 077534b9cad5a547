//! `usher`: one binary for every role. This file only parses arguments and dispatches.

mod lb;
mod logging;

use clap::{Parser, Subcommand};

/// Usher: sticky and stateless web tiers, measured.
#[derive(Debug, Parser)]
#[command(name = "usher", version, about, propagate_version = true)]
struct Cli {
    /// Log format for stderr.
    #[arg(long, global = true, value_enum, default_value_t = logging::Format::Text)]
    log_format: logging::Format,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// HTTP load balancer with session affinity (sticky sessions).
    Lb(lb::LbCommand),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    logging::init(cli.log_format);
    let result = match cli.command {
        Command::Lb(cmd) => lb::run(cmd),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("usher: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
