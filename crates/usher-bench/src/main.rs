//! `usher-bench`: the tools behind `scripts/bench-compare.sh` and `scripts/bench-scaling.sh`:
//! a tiny backend, an idle-connection holder, a request driver, the comparison runner and the
//! scaling curves.

mod backend;
mod bench;
mod checks;
mod client;
mod compare;
mod compare_report;
mod configs;
mod drive;
mod idle;
mod machine;
mod procs;
mod procstat;
mod scaling;
mod scaling_parts;
mod stats;
mod systems;
mod wrk;

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
    /// Open N keep-alive connections, one GET on each, and hold them open.
    Idle(idle::IdleArgs),
    /// Send exactly N requests over C keep-alive connections.
    Drive(drive::DriveArgs),
    /// Direct vs usher lb vs HAProxy vs NGINX, interleaved; writes docs/bench/compare-DATE.md.
    Compare(compare::CompareArgs),
    /// usher lb's scaling curves; writes docs/bench/scaling-DATE.md.
    Scaling(scaling::ScalingArgs),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Backend(a) => backend::run(a),
        Command::Idle(a) => idle::run(a),
        Command::Drive(a) => drive::run(a),
        Command::Compare(a) => compare::run(a),
        Command::Scaling(a) => scaling::run(a),
    }
}
