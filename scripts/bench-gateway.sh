#!/usr/bin/env bash
# Measures the latency sluice adds in gateway mode: runs the fake provider,
# starts sluice in front of it, and drives both with the closed-loop load
# generator at several concurrencies. Prints a markdown table.
#
# Usage: scripts/bench-gateway.sh
# Environment:
#   CARGO_TARGET_DIR   build directory (default $HOME/.cache/sluice-target)
#   BENCH_DURATION     measured seconds per run (default 10)
#   BENCH_WARMUP       warmup seconds per run (default 2)
#   BENCH_CONCURRENCY  space-separated list (default "1 16 64")
#   BENCH_KEEP=1       keep the temp directory (config, logs) for inspection
#   BENCH_SKIP_BUILD=1 use the binaries already in $CARGO_TARGET_DIR/release
#   BENCH_SLUICE       sluice binary (default $CARGO_TARGET_DIR/release/sluice),
#                      for A/B runs of two builds
#   BENCH_EXTRA_CONFIG YAML appended to sluice's config (e.g. an exporter)
#   BENCH_DEFAULT_POLICY_EXTRA YAML appended to the default team's policy
#                      (e.g. `limits:`)
#   BENCH_AUDIT        extra keys for the `audit:` map (e.g. `durability: batched`)
#   BENCH_METRICS      file to save sluice's /metrics to after the runs (e.g.
#                      the group commits: sluice_audit_sync_seconds)
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/sluice-target}
duration=${BENCH_DURATION:-10}
warmup=${BENCH_WARMUP:-2}
concurrencies=${BENCH_CONCURRENCY:-"1 16 64"}

bin=$CARGO_TARGET_DIR/release
sluice_bin=${BENCH_SLUICE:-$bin/sluice}
work=$(mktemp -d "${TMPDIR:-/tmp}/sluice-bench.XXXXXX")
bench_name=bench-gateway
# shellcheck source=scripts/bench-lib.sh
source "$repo/scripts/bench-lib.sh"

build_binaries

start_fake "$bin/examples/fake_provider"

pick_gateway_ports

mkdir -p "$work/policies" "$work/audit"
if [[ -d $repo/policies ]]; then
    cp -R "$repo/policies/." "$work/policies/"
fi
if [[ -n ${BENCH_DEFAULT_POLICY_EXTRA:-} ]]; then
    printf '\n%s\n' "$BENCH_DEFAULT_POLICY_EXTRA" >>"$work/policies/default.yaml"
fi
cat >"$work/sluice.yaml" <<EOF
gateway: { listen: "127.0.0.1:$gw_port" }
admin: { listen: "127.0.0.1:$admin_port" }
policies_dir: $work/policies
audit: { dir: $work/audit${BENCH_AUDIT:+, $BENCH_AUDIT} }
identity: { anonymous_team: default }
providers:
  openai: { base_url: "https://api.openai.com", api_key_env: FAKE_OPENAI_KEY }
  anthropic: { base_url: "https://api.anthropic.com", api_key_env: FAKE_ANTHROPIC_KEY }
upstream:
  extra_ca_file: $work/fake-ca.pem
  resolve: { "api.openai.com:443": "127.0.0.1:$fake_port", "api.anthropic.com:443": "127.0.0.1:$fake_port" }
# This measures the cloud path; the local model would only take memory.
local: { backend: none }
${BENCH_EXTRA_CONFIG:-}
EOF

export FAKE_OPENAI_KEY=sk-fake-openai
export FAKE_ANTHROPIC_KEY=sk-ant-fake
start_sluice

loadgen() {
    "$bin/examples/loadgen" --json --duration "$duration" --warmup "$warmup" "$@"
}

# CPU per request of one process over a loadgen run (warm-up included, at
# the measured rate): less sensitive to other load than req/s.
cpu_per_request() {
    awk -v us="$1" -v rps="$(field "$2" rps)" -v secs=$((duration + warmup)) \
        'BEGIN { printf "%.1f", us / (rps * secs) }'
}

rows=()
cpu_rows=()
for c in $concurrencies; do
    echo "c=$c: direct ..." >&2
    fake_cpu0=$(cpu_us "$fake_pid")
    direct=$(loadgen --concurrency "$c" --ca "$work/fake-ca.pem" \
        --resolve "api.openai.com:443:127.0.0.1:$fake_port" \
        --url https://api.openai.com:443/v1/chat/completions) ||
        die "direct run failed at c=$c"
    fake_cpu1=$(cpu_us "$fake_pid")
    echo "c=$c: via sluice ..." >&2
    sluice_cpu0=$(cpu_us "$sluice_pid")
    via=$(loadgen --concurrency "$c" \
        --url "http://127.0.0.1:$gw_port/v1/chat/completions") ||
        die "via-sluice run failed at c=$c (see $work/sluice.err)"
    sluice_cpu1=$(cpu_us "$sluice_pid")
    fake_cpu2=$(cpu_us "$fake_pid")
    cpu_rows+=("| $c | $(cpu_per_request $((fake_cpu1 - fake_cpu0)) "$direct") | $(cpu_per_request $((fake_cpu2 - fake_cpu1)) "$via") | $(cpu_per_request $((sluice_cpu1 - sluice_cpu0)) "$via") |")
    for run in "$direct" "$via"; do
        errs=$(($(field "$run" errors_status) + $(field "$run" errors_transport)))
        ((errs == 0)) || echo "warning: c=$c: $errs errors in: $run" >&2
    done
    rows+=("$(awk -v c="$c" \
        -v d50="$(field "$direct" p50_ms)" -v d99="$(field "$direct" p99_ms)" -v drps="$(field "$direct" rps)" \
        -v v50="$(field "$via" p50_ms)" -v v99="$(field "$via" p99_ms)" -v vrps="$(field "$via" rps)" \
        'BEGIN { printf "| %s | %.3f | %.3f | %.0f | %.3f | %.3f | %.0f | %+.3f | %+.3f |", c, d50, d99, drps, v50, v99, vrps, v50 - d50, v99 - d99 }')")
done

if [[ -n ${BENCH_METRICS:-} ]]; then
    curl -fsS "http://127.0.0.1:$admin_port/metrics" >"$BENCH_METRICS" || echo "warning: could not save /metrics" >&2
fi

echo
echo "Gateway overhead, non-streaming OpenAI chat completion, HTTP/1.1 keep-alive," \
    "${duration} s per run after ${warmup} s warmup (latencies in ms)."
echo
echo "| c | direct p50 | direct p99 | direct rps | via sluice p50 | via sluice p99 | via sluice rps | added p50 | added p99 |"
echo "|---|---|---|---|---|---|---|---|---|"
printf '%s\n' "${rows[@]}"
echo
echo "CPU time per request (µs, user + system, from /proc):"
echo
echo "| c | fake provider, direct | fake provider, via sluice | sluice |"
echo "|---|---|---|---|"
printf '%s\n' "${cpu_rows[@]}"
