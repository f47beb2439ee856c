#!/usr/bin/env bash
# Measures what policy reloads cost requests in flight: runs the fake
# provider and sluice in front of it, drives the gateway with the
# closed-loop load generator at one concurrency, once with the policies
# left alone and once while the policy file is rewritten over and over
# (each rewrite a real change, saved as editors do: write a temporary
# file, rename it over). Prints a markdown table: latencies, errors, and
# how many reloads sluice made during the run.
#
# Usage: scripts/bench-reload.sh
# Environment:
#   CARGO_TARGET_DIR   build directory (default $HOME/.cache/sluice-target)
#   BENCH_DURATION     measured seconds per run (default 10)
#   BENCH_WARMUP       warmup seconds per run (default 2)
#   BENCH_CONCURRENCY  one concurrency (default 64)
#   BENCH_EDIT_EVERY   seconds between policy rewrites (default 0.2)
#   BENCH_ROUNDS       quiet/reloading pairs, alternated (default 2): the
#                      spread between rounds of the same kind is the noise
#   BENCH_KEEP=1       keep the temp directory (config, logs) for inspection
#   BENCH_SKIP_BUILD=1 use the binaries already in $CARGO_TARGET_DIR/release
#   BENCH_SLUICE       sluice binary (default $CARGO_TARGET_DIR/release/sluice)
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/sluice-target}
duration=${BENCH_DURATION:-10}
warmup=${BENCH_WARMUP:-2}
c=${BENCH_CONCURRENCY:-64}
every=${BENCH_EDIT_EVERY:-0.2}
rounds=${BENCH_ROUNDS:-2}

bin=$CARGO_TARGET_DIR/release
sluice_bin=${BENCH_SLUICE:-$bin/sluice}
work=$(mktemp -d "${TMPDIR:-/tmp}/sluice-bench.XXXXXX")
bench_name=bench-reload
# shellcheck source=scripts/bench-lib.sh
source "$repo/scripts/bench-lib.sh"

build_binaries

start_fake "$bin/examples/fake_provider"

pick_gateway_ports

# The shipped policies: org.yaml, a profile, three teams, and every
# reload loads all of them (and the catalog) again.
mkdir -p "$work/policies" "$work/audit"
cp -R "$repo/policies/." "$work/policies/"
cat >"$work/sluice.yaml" <<YAML
gateway: { listen: "127.0.0.1:$gw_port" }
admin: { listen: "127.0.0.1:$admin_port" }
policies_dir: $work/policies
audit: { dir: $work/audit }
identity: { anonymous_team: default }
providers:
  openai: { base_url: "https://api.openai.com", api_key_env: FAKE_OPENAI_KEY }
  anthropic: { base_url: "https://api.anthropic.com", api_key_env: FAKE_ANTHROPIC_KEY }
upstream:
  extra_ca_file: $work/fake-ca.pem
  resolve: { "api.openai.com:443": "127.0.0.1:$fake_port", "api.anthropic.com:443": "127.0.0.1:$fake_port" }
local: { backend: none }
YAML

export FAKE_OPENAI_KEY=sk-fake-openai
export FAKE_ANTHROPIC_KEY=sk-ant-fake
start_sluice

# One counter from /metrics (no curl needed).
metric() {
    local line value=0
    exec 3<>"/dev/tcp/127.0.0.1/$admin_port" || return 1
    printf 'GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n' >&3
    while IFS= read -r line <&3; do
        if [[ $line == "$1 "* ]]; then
            value=${line##* }
            value=${value%$'\r'}
        fi
    done
    exec 3<&- 3>&-
    echo "$value"
}

# Two valid versions of default.yaml: the shipped one, and one with a
# rule no benchmark request matches.
cp "$work/policies/default.yaml" "$work/default.a"
sed 's/^rules:$/rules:\n  - name: bench-never\n    when: { model: ["bench-no-such-model"] }\n    then: block/' \
    "$work/default.a" >"$work/default.b"
cmp -s "$work/default.a" "$work/default.b" && die "could not make the edited policy"

# Rewrites default.yaml every $every seconds, alternating the two versions.
edit_loop() {
    local policy=$work/policies/default.yaml i=0
    while :; do
        if ((i % 2)); then cp "$work/default.a" "$policy.tmp"; else cp "$work/default.b" "$policy.tmp"; fi
        mv "$policy.tmp" "$policy"
        i=$((i + 1))
        sleep "$every"
    done
}

run() {
    "$bin/examples/loadgen" --json --duration "$duration" --warmup "$warmup" --concurrency "$c" \
        --url "http://127.0.0.1:$gw_port/v1/chat/completions" || die "loadgen failed (see $work/sluice.err)"
}

rows=()
for mode in $(for _ in $(seq 1 "$rounds"); do echo quiet reloading; done); do
    ok0=$(metric 'sluice_policy_loads_total{result="ok"}')
    err0=$(metric 'sluice_policy_loads_total{result="error"}')
    editor=
    if [[ $mode == reloading ]]; then
        edit_loop &
        editor=$!
        pids+=("$editor")
    fi
    echo "c=$c: $mode ..." >&2
    out=$(run)
    if [[ -n $editor ]]; then
        stop "$editor"
        # Let the last edit load before the next run starts.
        sleep 1
    fi
    ok1=$(metric 'sluice_policy_loads_total{result="ok"}')
    err1=$(metric 'sluice_policy_loads_total{result="error"}')
    errs=$(($(field "$out" errors_status) + $(field "$out" errors_transport)))
    rows+=("$(awk -v m="$mode" -v c="$c" -v p50="$(field "$out" p50_ms)" -v p99="$(field "$out" p99_ms)" \
        -v p999="$(field "$out" p999_ms)" -v max="$(field "$out" max_ms)" -v rps="$(field "$out" rps)" \
        -v n="$(field "$out" requests)" -v e="$errs" -v r=$((ok1 - ok0)) -v re=$((err1 - err0)) \
        'BEGIN { printf "| %s | %s | %.3f | %.3f | %.3f | %.3f | %.0f | %d | %d | %d | %d |", m, c, p50, p99, p999, max, rps, n, e, r, re }')")
done
grep -q 'policy reload refused' "$work/sluice.err" && echo "warning: a reload was refused: see $work/sluice.err" >&2

echo
echo "Policy reloads under load: non-streaming OpenAI chat completion via the gateway, HTTP/1.1" \
    "keep-alive, ${duration} s per run after ${warmup} s warmup; 'reloading' rewrites default.yaml" \
    "every ${every} s (latencies in ms)."
echo
echo "| run | c | p50 | p99 | p99.9 | max | rps | requests | errors | reloads ok | reloads refused |"
echo "|---|---|---|---|---|---|---|---|---|---|---|"
printf '%s\n' "${rows[@]}"
