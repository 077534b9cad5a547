#!/usr/bin/env bash
# Scaling curves of usher lb (issue #7, part 2): concurrency 64/256/1024, 10 000 idle
# keep-alive connections (RSS), 3/30/300 backends per policy, the learned app-cookie table
# (1k → 1M entries: bytes per entry) and the sealed cookie vs no affinity.
# Installs what is missing (haproxy nginx wrk via apt), builds usher and usher-bench in release,
# then runs `usher-bench scaling`, which writes docs/bench/scaling-YYYY-MM-DD.md and raw outputs
# under docs/bench/raw/scaling-YYYY-MM-DD/ and prints the report.
#
# Usage: scripts/bench-scaling.sh [--quick] [--reps N] [--parts conc,idle,backends,appcookie,sticky] [other flags]
#   --quick: 1 repetition of 2 s, app-cookie table up to 100k entries.
set -euo pipefail
cd "$(dirname "$0")/.."

bench_name=bench-scaling
# shellcheck source=scripts/bench-prepare.sh
. scripts/bench-prepare.sh

target="${CARGO_TARGET_DIR:-target}"
cargo build --release --quiet -p usher -p usher-bench
exec "$target/release/usher-bench" scaling --usher "$target/release/usher" --out docs/bench "$@"
