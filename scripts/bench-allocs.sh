#!/usr/bin/env bash
# Heap allocations (default) or CPU instructions (--instructions) per proxied request, per
# affinity mode (issue #7: "no allocation per request that can be avoided", "sticky costs little").
# Runs `usher lb` (one thread, two backend entries on one `usher-bench backend`) under valgrind,
# sends SMALL and then LARGE requests over one keep-alive connection with curl (after one request
# that fetches the affinity cookie, if the mode sets one) and prints
# (count at LARGE − count at SMALL) / (LARGE − SMALL), so start-up and shutdown cancel out.
#   allocations:  dhat, on a build with the system allocator (`--no-default-features`: mimalloc
#                 maps its own memory, which valgrind cannot see), built into target/allocs;
#   instructions: callgrind, on the release build as shipped (user-space instructions only; the
#                 kernel's share of a request is not counted).
# Installs valgrind and curl when missing.
#
# Usage: scripts/bench-allocs.sh [--instructions] [SMALL] [LARGE]     (defaults 300 1300)
# Per-site detail: the dhat-*.json / callgrind-*.out files it leaves in target/allocs/ open in
# dhat's viewer / callgrind_annotate.
set -euo pipefail
cd "$(dirname "$0")/.."
what=allocations
if [ "${1:-}" = --instructions ]; then what=instructions; shift; fi
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
if [ "$what" = allocations ]; then
  CARGO_TARGET_DIR="$out" cargo build --release --quiet -p usher --no-default-features
  usher_bin="$out/release/usher"
else
  cargo build --release --quiet -p usher
  usher_bin="${CARGO_TARGET_DIR:-target}/release/usher"
fi
cargo build --release --quiet -p usher-bench
bench_bin="${CARGO_TARGET_DIR:-target}/release/usher-bench"
work=$(mktemp -d); pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

"$bench_bin" backend --name b0 >"$work/b0.out" 2>&1 &
pids+=($!)
for _ in $(seq 100); do grep -q listening "$work/b0.out" && break; sleep 0.05; done
bport=$(awk '/listening/ { n = split($3, a, ":"); print a[n] }' "$work/b0.out")

# The allocation or instruction count of one `usher lb` run serving $2 requests with affinity $1.
count() {
  local aff=$1 n=$2 port up tool
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  if [ "$what" = allocations ]; then
    tool=(--tool=dhat --dhat-out-file="$out/dhat-$aff-$n.json")
  else
    tool=(--tool=callgrind --callgrind-out-file="$out/callgrind-$aff-$n.out")
  fi
  valgrind "${tool[@]}" "$usher_bin" lb \
    --threads 1 --admin-listen off --policy round-robin --affinity "$aff" \
    --listen "127.0.0.1:$port" --backend "b0=127.0.0.1:$bport" --backend "b1=127.0.0.1:$bport" \
    >"$work/u.out" 2>"$work/u.err" &
  up=$!
  for _ in $(seq 600); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
  rm -f "$work/jar"
  curl -s -c "$work/jar" -o /dev/null "http://127.0.0.1:$port/"
  curl -s -b "$work/jar" -o /dev/null "http://127.0.0.1:$port/?[1-$n]"
  kill -INT "$up"; wait "$up" || true
  if [ "$what" = allocations ]; then
    awk '/Total:/ { gsub(",", "", $(NF-1)); print $(NF-1) }' "$work/u.err"
  else
    awk '/Collected :/ { print $NF }' "$work/u.err"
  fi
}

printf '%-8s %s per request\n' affinity "$what"
for aff in none cookie; do
  a=$(count "$aff" "$small"); b=$(count "$aff" "$large")
  awk -v aff="$aff" -v a="$a" -v b="$b" -v n=$((large - small)) -v s="$small" -v l="$large" \
    'BEGIN { printf "%-8s %.2f   (%d at %d requests, %d more at %d)\n", aff, (b - a) / n, a, s, b - a, l }'
done
