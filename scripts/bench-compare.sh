#!/usr/bin/env bash
# One-command comparison benchmark (issue #7): usher lb vs HAProxy vs NGINX vs a direct
# connection, interleaved, rr and cookie-sticky, c64/c256, 1 and 2 proxy threads.
# Installs what is missing (haproxy nginx wrk via apt), builds usher and usher-bench in release,
# then runs `usher-bench compare`, which writes docs/bench/compare-YYYY-MM-DD.md and raw outputs
# under docs/bench/raw/compare-YYYY-MM-DD/ and prints the summary.
#
# Usage: scripts/bench-compare.sh [--quick] [--reps N] [--duration SECS] [other usher-bench compare flags]
#   --quick: 1 repetition of 2 s (for trying things; the docs need the default 3 × 5 s).
set -euo pipefail
cd "$(dirname "$0")/.."

bench_name=bench-compare
# shellcheck source=scripts/bench-prepare.sh
. scripts/bench-prepare.sh

target="${CARGO_TARGET_DIR:-target}"
cargo build --release --quiet -p usher -p usher-bench
exec "$target/release/usher-bench" compare --usher "$target/release/usher" --out docs/bench "$@"
