#!/usr/bin/env bash
# Heap allocations per proxied request (issue #7: "no allocation per request that can be
# avoided"). Builds usher with the system allocator (`--no-default-features`: mimalloc maps its
# own memory, which valgrind cannot see) into target/allocs, runs `usher lb` (one thread, two
# backend entries on one `usher-bench backend`) under valgrind's dhat, sends SMALL and then
# LARGE requests over one keep-alive connection with curl, and prints
# (allocations at LARGE − allocations at SMALL) / (LARGE − SMALL) per affinity mode, so start-up
# and shutdown cancel out. Installs valgrind and curl when missing.
#
# Usage: scripts/bench-allocs.sh [SMALL] [LARGE]     (defaults 300 1300)
# Per-site detail: the dhat-*.json files it leaves in target/allocs/ open in dhat's viewer.
set -euo pipefail
cd "$(dirname "$0")/.."
small=${1:-300}; large=${2:-1300}
need=()
command -v valgrind >/dev/null 2>&1 || need+=(valgrind)
command -v curl >/dev/null 2>&1 || need+=(curl)
if ((${#need[@]})); then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
fi
out="${CARGO_TARGET_DIR:-target}/allocs"
mkdir -p "$out"
CARGO_TARGET_DIR="$out" cargo build --release --quiet -p usher --no-default-features
cargo build --release --quiet -p usher-bench
bench_bin="${CARGO_TARGET_DIR:-target}/release/usher-bench"
work=$(mktemp -d); pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

"$bench_bin" backend --name b0 >"$work/b0.out" 2>&1 &
pids+=($!)
for _ in $(seq 100); do grep -q listening "$work/b0.out" && break; sleep 0.05; done
bport=$(awk '/listening/ { n = split($3, a, ":"); print a[n] }' "$work/b0.out")

# Allocation count of one `usher lb` run serving $2 requests with affinity $1.
blocks() {
  local aff=$1 n=$2 port up
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  valgrind --tool=dhat --dhat-out-file="$out/dhat-$aff-$n.json" "$out/release/usher" lb \
    --threads 1 --admin-listen off --policy round-robin --affinity "$aff" \
    --listen "127.0.0.1:$port" --backend "b0=127.0.0.1:$bport" --backend "b1=127.0.0.1:$bport" \
    >"$work/u.out" 2>"$work/u.err" &
  up=$!
  for _ in $(seq 600); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
  # One request to get the affinity cookie (if any), then n over one connection.
  curl -s -c "$work/jar" -o /dev/null "http://127.0.0.1:$port/"
  curl -s -b "$work/jar" -o /dev/null "http://127.0.0.1:$port/?[1-$n]"
  kill -INT "$up"; wait "$up" || true
  awk '/Total:/ { gsub(",", "", $(NF-1)); print $(NF-1) }' "$work/u.err"
}

printf '%-8s %s\n' affinity 'allocations per request'
for aff in none cookie; do
  a=$(blocks "$aff" "$small"); b=$(blocks "$aff" "$large")
  awk -v aff="$aff" -v a="$a" -v b="$b" -v n=$((large - small)) \
    'BEGIN { printf "%-8s %.2f   (%d blocks at %d requests, %d more at %d)\n", aff, (b - a) / n, a, '"$small"', b - a, '"$large"' }'
done
