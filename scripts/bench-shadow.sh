#!/usr/bin/env bash
# What the shadow-AI monitor costs a tunnel: downloads through a CONNECT
# tunnel to a catalogued AI host (huggingface.co, pinned to the fake
# provider; not intercepted, so sluice only relays bytes and attributes the
# tunnel when it ends), with `shadow.enabled` on and off. Each download is a
# fresh CONNECT, so the per-tunnel work (catalog lookup, usage record,
# metrics) is in every sample. Reports MB/s through the tunnels and sluice's
# CPU time per MB and per tunnel, as a markdown table.
#
# Usage: scripts/bench-shadow.sh
# Environment:
#   CARGO_TARGET_DIR   build directory (default $HOME/.cache/sluice-target)
#   BENCH_DOWNLOADS    downloads per run (default 400)
#   BENCH_PARALLEL     concurrent downloads (default 4)
#   BENCH_ROUNDS       runs per setting, alternating on/off (default 3)
#   BENCH_SKIP_BUILD=1 use the binaries already built
#   BENCH_KEEP=1       keep the temp directory
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/sluice-target}
downloads=${BENCH_DOWNLOADS:-400}
parallel=${BENCH_PARALLEL:-4}
rounds=${BENCH_ROUNDS:-3}
sluice_bin=$CARGO_TARGET_DIR/release/sluice
examples=$CARGO_TARGET_DIR/release/examples

work=$(mktemp -d "${TMPDIR:-/tmp}/sluice-shadowbench.XXXXXX")
bench_name=bench-shadow
# shellcheck source=scripts/bench-lib.sh
source "$repo/scripts/bench-lib.sh"

if [[ ${BENCH_SKIP_BUILD:-0} != 1 ]]; then
    (cd "$repo" && cargo build --release --examples --bin sluice) >&2
fi
command -v curl >/dev/null || die "curl is needed"

start_fake "$examples/fake_provider"

run() {
    local enabled=$1 admin_port proxy_port pid start end cpu0 cpu1 url
    admin_port=$(free_port)
    proxy_port=$(free_port)
    rm -rf "$work/audit" "$work/ca"
    cat >"$work/sluice.yaml" <<EOF
gateway: { listen: "127.0.0.1:$(free_port)" }
admin: { listen: "127.0.0.1:$admin_port" }
policies_dir: $repo/policies
audit: { dir: $work/audit }
ca: { dir: $work/ca }
identity: { anonymous_team: default }
upstream:
  extra_ca_file: $work/fake-ca.pem
  resolve: { "huggingface.co:$fake_port": "127.0.0.1:$fake_port" }
local: { backend: none }
proxy: { listen: "127.0.0.1:$proxy_port", allowed_ports: [$fake_port], allow_private: ["127.0.0.0/8"] }
shadow: { enabled: $enabled, fingerprint_key: $work/fingerprint.key }
EOF
    "$sluice_bin" serve --config "$work/sluice.yaml" >"$work/sluice.log" 2>&1 &
    pid=$!
    pids+=("$pid")
    for _ in $(seq 1 100); do
        http_ok "$admin_port" /readyz && break
        sleep 0.1
    done
    http_ok "$admin_port" /readyz || die "sluice did not start: $(tail -5 "$work/sluice.log")"
    url="https://huggingface.co:$fake_port/TheBloke/x-GGUF/resolve/main/x.gguf"
    cpu0=$(cpu_us "$pid")
    start=$(date +%s%N)
    seq 1 "$downloads" | xargs -P "$parallel" -I{} \
        curl -sf -o /dev/null --proxy "http://127.0.0.1:$proxy_port" --cacert "$work/fake-ca.pem" "$url"
    end=$(date +%s%N)
    cpu1=$(cpu_us "$pid")
    stop "$pid"
    # 300,000 bytes per download (tests/support/fake_provider.rs).
    awk -v n="$downloads" -v ns=$((end - start)) -v cpu=$((cpu1 - cpu0)) -v on="$enabled" 'BEGIN {
        mb = n * 300000 / 1e6
        printf "| %s | %d | %.1f | %.0f | %.0f |\n", on, n, mb / (ns / 1e9), cpu / mb, cpu / n }'
}

echo "| monitor | tunnels | MB/s | sluice CPU µs per MB | sluice CPU µs per tunnel |"
echo "|---|---:|---:|---:|---:|"
for _ in $(seq 1 "$rounds"); do
    run true
    run false
done
