//! `usher-bench`: the tools behind `scripts/bench-compare.sh`.

mod backend;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "usher-bench", about = "Usher's comparison benchmark tools")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// A tiny HTTP/1.1 backend (one thread) that names itself in `X-Backend`.
    Backend(backend::BackendArgs),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Backend(a) => backend::run(a),
    }
}
