//! `usher`: one binary for every role. This file only parses arguments and dispatches.

mod lab;
mod lb;
mod logging;
mod shop;
mod up;

use clap::{Parser, Subcommand};

/// mimalloc instead of the system allocator: the proxy allocates and frees a few small blocks
/// per request on every thread, which glibc's malloc served with about 8 % more instructions per
/// proxied request (see docs/benchmarks.md, "2026-12-04"). Built with `no_thp`: with transparent
/// huge pages its arenas started `usher lb` at 23 MiB of RSS instead of 12. Off with
/// `--no-default-features`, for counting allocations under valgrind's dhat.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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

// Parsed once at start-up; boxing the big variant would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
enum Command {
    /// HTTP load balancer with session affinity (sticky sessions).
    Lb(lb::LbCommand),
    /// Measure every architecture side by side under a fault timeline.
    Lab(lab::LabCommand),
    /// The demo web shop (HTML pages and a JSON API on the session tier).
    Shop(shop::ShopCommand),
    /// Run one architecture live with a dashboard: kill, add and drain shops while you shop.
    Up(up::UpCommand),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    logging::init(cli.log_format);
    exit_with_parent();
    let result = match cli.command {
        Command::Lb(cmd) => lb::run(cmd),
        Command::Lab(cmd) => lab::run(cmd),
        Command::Shop(cmd) => shop::run(cmd),
        Command::Up(cmd) => up::run(cmd),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("usher: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// A child the lab started (`USHER_EXIT_WITH_PARENT` set) exits when its stdin closes, which
/// happens when the lab dies by any means — even `kill -9` — so no server outlives it.
fn exit_with_parent() {
    if std::env::var_os(usher_lab::EXIT_WITH_PARENT_ENV).is_none() {
        return;
    }
    std::thread::spawn(|| {
        let mut sink = [0u8; 64];
        let mut stdin = std::io::stdin();
        while let Ok(1..) = std::io::Read::read(&mut stdin, &mut sink) {}
        std::process::exit(0);
    });
}
