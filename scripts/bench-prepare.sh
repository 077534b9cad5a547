# Sourced by scripts/bench-*.sh (set bench_name first): installs what the comparison needs
# (haproxy, nginx, wrk, taskset, a C compiler; Rust when missing), stops the packaged services
# apt may start, and raises the file-descriptor limit for the large-concurrency runs.
need_apt=()
for tool in haproxy nginx wrk; do
  command -v "$tool" >/dev/null 2>&1 || need_apt+=("$tool")
done
command -v taskset >/dev/null 2>&1 || need_apt+=(util-linux)
command -v cc >/dev/null 2>&1 || need_apt+=(build-essential)
if ((${#need_apt[@]})); then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "$bench_name: installing ${need_apt[*]}" >&2
  $sudo apt-get update -qq
  # The packaged services are not used (we run our own processes); stop them if apt started them.
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}"
  for svc in haproxy nginx; do
    $sudo systemctl stop "$svc" >/dev/null 2>&1 || $sudo service "$svc" stop >/dev/null 2>&1 || true
  done
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "$bench_name: installing Rust with rustup" >&2
  curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
  # shellcheck disable=SC1091
  . "$HOME/.cargo/env"
fi

# wrk -c1024 and HAProxy's maxconn need file descriptors: raise the soft limit as far as allowed.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
echo "$bench_name: fd limit $(ulimit -n), $(nproc) CPUs" >&2

