#!/usr/bin/env bash
# Diagnostic for issue #7: what each proxy makes the *other* processes do. Runs usher lb and
# HAProxy (adding the same request headers usher adds) side by side in front of three
# `usher-bench backend`s, interleaved, with the comparison's pinning (wrk on CPU 0, the
# one-thread proxy on CPU 1, backends floating), and prints per 1 000 requests the context
# switches of wrk, the backends and the proxy (voluntary / involuntary, from
# /proc/PID/task/*/status) and per request the CPU time of each (from /proc/PID/stat and
# /usr/bin/time). Not a throughput benchmark: use scripts/bench-compare.sh for that.
#
# Usage: scripts/bench-sched.sh [REPS] [SECONDS] [CONNS]     (defaults 4 5 64)
set -euo pipefail
cd "$(dirname "$0")/.."
bench_name=bench-sched
# shellcheck source=scripts/bench-prepare.sh
. scripts/bench-prepare.sh
command -v /usr/bin/time >/dev/null 2>&1 || {
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq time
}
reps=${1:-4}; secs=${2:-5}; conns=${3:-64}
target="${CARGO_TARGET_DIR:-target}"
cargo build --release --quiet -p usher -p usher-bench
bin=$(cd "$target/release" && pwd)
work=$(mktemp -d); pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() {
  for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.05; done
  echo "bench-sched: nothing listens on $1" >&2; return 1
}

bports=(); bpids=()
for i in 0 1 2; do
  taskset -c 0,1 "$bin/usher-bench" backend --name "b$i" >"$work/b$i.out" 2>&1 &
  pids+=($!); bpids+=($!)
done
for i in 0 1 2; do
  for _ in $(seq 100); do grep -q listening "$work/b$i.out" && break; sleep 0.05; done
  bports+=("$(awk '/listening/ { n = split($3, a, ":"); print a[n] }' "$work/b$i.out")")
done

hport=$(free_port); uport=$(free_port)
cat >"$work/haproxy.cfg" <<EOF
global
    nbthread 1
    maxconn 4000
defaults
    mode http
    option http-keep-alive
    http-reuse always
    timeout connect 2s
    timeout client 30s
    timeout server 30s
frontend fe
    bind 127.0.0.1:$hport
    unique-id-format %[uuid()]
    http-request set-header X-Request-Id %[unique-id] unless { req.hdr(x-request-id) -m found }
    http-request set-var(txn.rid) req.hdr(x-request-id)
    http-after-response set-header X-Request-Id %[var(txn.rid)]
    option forwardfor
    http-request set-header X-Forwarded-Proto http
    http-request set-header X-Forwarded-Host %[req.hdr(host)]
    http-request set-header Forwarded 'for=%[src];host="%[req.hdr(host)]";proto=http'
    default_backend be
backend be
    balance roundrobin
    server b0 127.0.0.1:${bports[0]}
    server b1 127.0.0.1:${bports[1]}
    server b2 127.0.0.1:${bports[2]}
EOF
taskset -c 1 haproxy -f "$work/haproxy.cfg" -db >"$work/haproxy.log" 2>&1 &
pids+=($!); hpid=$!
taskset -c 1 "$bin/usher" lb --threads 1 --admin-listen off --policy round-robin --affinity none \
  --listen "127.0.0.1:$uport" --idle-timeout 10m \
  --backend "b0=127.0.0.1:${bports[0]}" --backend "b1=127.0.0.1:${bports[1]}" \
  --backend "b2=127.0.0.1:${bports[2]}" >"$work/usher.log" 2>&1 &
pids+=($!); upid=$!
wait_port "$hport"; wait_port "$uport"

# Sum of voluntary and involuntary switches over every thread of the given processes.
switches() {
  local v=0 n=0 t
  for p in "$@"; do
    for t in /proc/"$p"/task/*/status; do
      v=$((v + $(awk '/^voluntary_ctxt/ { print $2 }' "$t")))
      n=$((n + $(awk '/^nonvoluntary_ctxt/ { print $2 }' "$t")))
    done
  done
  echo "$v $n"
}
# Sum of utime + stime (clock ticks) of the given processes.
ticks() {
  local t=0 p
  for p in "$@"; do t=$((t + $(awk '{ print $14 + $15 }' "/proc/$p/stat"))); done
  echo "$t"
}

# utime and stime (clock ticks) of one process.
split_ticks() { awk '{ print $14, $15 }' "/proc/$1/stat"; }

tck=$(getconf CLK_TCK)
for addr in "$hport" "$uport"; do
  taskset -c 0 wrk -t1 -c"$conns" -d1s "http://127.0.0.1:$addr/" >/dev/null
done
printf '%-8s %8s %8s | %-15s | %-15s | %-15s | %s\n' system 'req/s' p99 \
  'wrk sw/1k v/i' 'backend sw/1k' 'proxy sw/1k' 'CPU µs/req: proxy (user+sys) backends wrk'
for rep in $(seq "$reps"); do
  for sys in haproxy usher; do
    if [ "$sys" = haproxy ]; then port=$hport; ppid=$hpid; else port=$uport; ppid=$upid; fi
    read -r bv0 bn0 <<<"$(switches "${bpids[@]}")"; read -r pv0 pn0 <<<"$(switches "$ppid")"
    pc0=$(ticks "$ppid"); bc0=$(ticks "${bpids[@]}"); read -r pu0 ps0 <<<"$(split_ticks "$ppid")"
    out=$({ /usr/bin/time -f 'TIME %w %c %U %S' taskset -c 0 \
      wrk -t1 -c"$conns" -d"${secs}s" --latency "http://127.0.0.1:$port/"; } 2>&1)
    read -r bv1 bn1 <<<"$(switches "${bpids[@]}")"; read -r pv1 pn1 <<<"$(switches "$ppid")"
    pc1=$(ticks "$ppid"); bc1=$(ticks "${bpids[@]}"); read -r pu1 ps1 <<<"$(split_ticks "$ppid")"
    read -r wv wn wu ws <<<"$(awk '/^TIME/ { print $2, $3, $4, $5 }' <<<"$out")"
    n=$(awk '/requests in/ { print $1 }' <<<"$out")
    rps=$(awk '/Requests\/sec/ { print $2 }' <<<"$out")
    p99=$(awk '$1 == "99%" { print $2 }' <<<"$out")
    awk -v s="$sys" -v rps="$rps" -v p99="$p99" -v n="$n" -v tck="$tck" \
      -v wv="$wv" -v wn="$wn" -v wc="$wu $ws" -v bv=$((bv1 - bv0)) -v bn=$((bn1 - bn0)) \
      -v pv=$((pv1 - pv0)) -v pn=$((pn1 - pn0)) -v pc=$((pc1 - pc0)) -v bc=$((bc1 - bc0)) -v pu=$((pu1 - pu0)) -v ps=$((ps1 - ps0)) \
      'BEGIN {
        k = n / 1000; split(wc, w, " ")
        us = tck * n / 1e6
        printf "%-8s %8.0f %8s | %6.1f / %6.1f | %6.1f / %6.1f | %6.1f / %6.1f | %5.1f (%4.1f+%4.1f) %5.1f %5.1f\n",
          s, rps, p99, wv / k, wn / k, bv / k, bn / k, pv / k, pn / k,
          pc / us, pu / us, ps / us, bc / us, (w[1] + w[2]) * 1e6 / n
      }'
  done
done
