#!/usr/bin/env bash
# Measures sluice's forward proxy (HTTPS_PROXY mode): runs the fake provider,
# starts sluice with the proxy on, and drives it with the closed-loop load
# generator over HTTPS at several concurrencies, next to
#   direct     loadgen straight to the fake provider (the baseline);
#   intercept  CONNECT api.openai.com through sluice, TLS terminated with
#              sluice's CA, every request through the policy pipeline;
#   tunnel     CONNECT to the fake provider's loopback address, which is not
#              on the intercept list: sluice only relays bytes;
#   mitmdump   the same intercepted run through mitmproxy (the peer).
# Then it opens many idle tunnels / intercepted connections and reports the
# proxy's resident memory per connection. Prints markdown tables.
#
# Usage: scripts/bench-proxy.sh
# Environment:
#   CARGO_TARGET_DIR     build directory (default $HOME/.cache/sluice-target)
#   BENCH_DURATION       measured seconds per run (default 10)
#   BENCH_WARMUP         warmup seconds per run (default 2)
#   BENCH_CONCURRENCY    space-separated list (default "1 16 64")
#   BENCH_MODES          subset of "direct intercept tunnel mitmdump"
#   BENCH_IDLE_TUNNELS   idle tunnels for the memory test (default 1000; 0 skips)
#   BENCH_IDLE_INTERCEPT idle intercepted connections (default 200; 0 skips)
#   BENCH_MAX_BUSY       before each run, wait (up to 60 s) until other work
#                        uses at most this % of all CPUs (default 25)
#   BENCH_SLUICE         sluice binary (default $CARGO_TARGET_DIR/release/sluice)
#   BENCH_EXAMPLES       dir with fake_provider and loadgen
#                        (default $CARGO_TARGET_DIR/release/examples)
#   BENCH_POLICIES       policies dir (default <repo>/policies)
#   MITMDUMP             mitmdump command (default mitmdump; the peer is
#                        skipped when it is not installed: pip install mitmproxy)
#   BENCH_RAW=FILE       also append every run's loadgen JSON (one per line)
#   BENCH_KEEP=1         keep the temp directory (config, logs) for inspection
#   BENCH_SKIP_BUILD=1   use the binaries already built
#   BENCH_SHADOW=false   turn the shadow-AI monitor off (default true)
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/sluice-target}
duration=${BENCH_DURATION:-10}
warmup=${BENCH_WARMUP:-2}
concurrencies=${BENCH_CONCURRENCY:-"1 16 64"}
modes=${BENCH_MODES:-"direct intercept tunnel mitmdump"}
idle_tunnels=${BENCH_IDLE_TUNNELS:-1000}
idle_intercept=${BENCH_IDLE_INTERCEPT:-200}
max_busy=${BENCH_MAX_BUSY:-25}
sluice_bin=${BENCH_SLUICE:-$CARGO_TARGET_DIR/release/sluice}
examples=${BENCH_EXAMPLES:-$CARGO_TARGET_DIR/release/examples}
policies=${BENCH_POLICIES:-$repo/policies}
mitmdump=${MITMDUMP:-mitmdump}

work=$(mktemp -d "${TMPDIR:-/tmp}/sluice-proxybench.XXXXXX")
bench_name=bench-proxy
# shellcheck source=scripts/bench-lib.sh
source "$repo/scripts/bench-lib.sh"

# Percent of all CPUs busy over one second, everything on the machine.
cpu_busy() {
    local a b
    read -r -a a < <(grep '^cpu ' /proc/stat)
    sleep 1
    read -r -a b < <(grep '^cpu ' /proc/stat)
    awk -v u1="${a[1]}" -v n1="${a[2]}" -v s1="${a[3]}" -v i1="${a[4]}" -v w1="${a[5]}" \
        -v q1="${a[6]}" -v sq1="${a[7]}" -v st1="${a[8]}" \
        -v u2="${b[1]}" -v n2="${b[2]}" -v s2="${b[3]}" -v i2="${b[4]}" -v w2="${b[5]}" \
        -v q2="${b[6]}" -v sq2="${b[7]}" -v st2="${b[8]}" 'BEGIN {
            busy = (u2 + n2 + s2 + q2 + sq2 + st2) - (u1 + n1 + s1 + q1 + sq1 + st1)
            idle = (i2 + w2) - (i1 + w1)
            printf "%.0f", (busy + idle > 0) ? 100 * busy / (busy + idle) : 0 }'
}

# Waits until the machine is quiet enough (our own servers idle between runs),
# and prints the busy % and 1-minute load it settled on.
wait_quiet() {
    local busy
    for _ in $(seq 1 12); do
        busy=$(cpu_busy)
        ((busy <= max_busy)) && break
        echo "  machine busy ($busy% CPU), waiting ..." >&2
        sleep 4
    done
    ((busy <= max_busy)) || echo "  warning: still $busy% busy, running anyway" >&2
    echo "$busy $(cut -d' ' -f1 /proc/loadavg)"
}

rss_kib() {
    awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"
}

if [[ ${BENCH_SKIP_BUILD:-0} != 1 ]]; then
    echo "building release binaries in $CARGO_TARGET_DIR ..." >&2
    (cd "$repo" && cargo build --release --examples --bin sluice) >&2
fi
for b in "$sluice_bin" "$examples/fake_provider" "$examples/loadgen"; do
    [[ -x $b ]] || die "missing $b"
done
command -v python3 >/dev/null || die "python3 is needed for the idle-connection test"
if [[ " $modes " == *" mitmdump "* ]] && ! command -v "$mitmdump" >/dev/null; then
    echo "warning: $mitmdump not found (pip install mitmproxy): skipping the peer" >&2
    modes=${modes//mitmdump/}
fi
# Each idle tunnel holds descriptors in the holder, sluice and the fake.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

start_fake "$examples/fake_provider"

gw_port=$(free_port)
admin_port=$(free_port)
proxy_port=$(free_port)
mitm_port=$(free_port)

mkdir -p "$work/policies" "$work/audit" "$work/ca" "$work/mitm"
if [[ -d $policies ]]; then
    cp -R "$policies/." "$work/policies/"
fi
cat >"$work/sluice.yaml" <<EOF
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
# This measures the cloud path; the local model would only take memory.
local: { backend: none }
shadow: { enabled: ${BENCH_SHADOW:-true} }
proxy:
  enabled: true
  listen: "127.0.0.1:$proxy_port"
  # The tunnel runs CONNECT straight to the fake provider's loopback port.
  allowed_ports: [443, $fake_port]
  allow_private: ["127.0.0.0/8"]
ca: { dir: $work/ca }
EOF

export FAKE_OPENAI_KEY=sk-fake-openai
export FAKE_ANTHROPIC_KEY=sk-ant-fake
sluice_pid=
start_sluice() {
    (cd "$work" && exec "$sluice_bin" serve --config "$work/sluice.yaml") \
        >>"$work/sluice.out" 2>>"$work/sluice.err" &
    sluice_pid=$!
    pids+=("$sluice_pid")
    local ready=0
    for _ in $(seq 1 300); do
        if http_ok "$admin_port" /readyz 2>/dev/null && listening "$proxy_port"; then
            ready=1
            break
        fi
        kill -0 "$sluice_pid" 2>/dev/null || die "sluice exited: $(tail -n 20 "$work/sluice.err")"
        sleep 0.1
    done
    ((ready)) || die "sluice not ready after 30 s: $(tail -n 20 "$work/sluice.err")"
    [[ -s $work/ca/ca.pem ]] || die "sluice did not create $work/ca/ca.pem"
}

# mitmdump keeps api.openai.com as SNI and Host and only changes where it
# connects, the way upstream.resolve does for sluice. Rewriting the CONNECT
# target (not the address in server_connect) keeps mitmproxy's upstream
# connection reuse: with server_connect it dialed per request and stalled.
cat >"$work/mitm_redirect.py" <<EOF
FAKE = ("127.0.0.1", $fake_port)


def http_connect(flow):
    if flow.request.host == "api.openai.com":
        flow.request.host, flow.request.port = FAKE
EOF
mitm_pid=
start_mitmdump() {
    (cd "$work" && exec "$mitmdump" -q --listen-host 127.0.0.1 --listen-port "$mitm_port" \
        --set confdir="$work/mitm" --set ssl_verify_upstream_trusted_ca="$work/fake-ca.pem" \
        --set connection_strategy=lazy -s "$work/mitm_redirect.py") \
        >>"$work/mitm.out" 2>&1 &
    mitm_pid=$!
    pids+=("$mitm_pid")
    for _ in $(seq 1 300); do
        if listening "$mitm_port" && [[ -s $work/mitm/mitmproxy-ca-cert.pem ]]; then
            return 0
        fi
        kill -0 "$mitm_pid" 2>/dev/null || die "mitmdump exited: $(tail -n 20 "$work/mitm.out")"
        sleep 0.1
    done
    die "mitmdump not ready after 30 s: $(tail -n 20 "$work/mitm.out")"
}

# Opens N connections through a proxy and holds them idle: CONNECT, TLS to
# the target through the tunnel, one request on it (a keep-alive connection
# that has been used), then nothing. Prints "ready N" and sleeps until killed.
cat >"$work/hold.py" <<'EOF'
import socket, ssl, sys, time

proxy_port, target, n, cafile, path = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
host = target.rsplit(":", 1)[0]
ctx = ssl.create_default_context(cafile=cafile)
ctx.set_alpn_protocols(["http/1.1"])
body = b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hello in one short sentence."}],"max_tokens":16}'
req = (b"POST " + path.encode() + b" HTTP/1.1\r\nHost: " + target.encode() +
       b"\r\nContent-Type: application/json\r\nContent-Length: " + str(len(body)).encode() +
       b"\r\n\r\n" + body)


def read_head(s):
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(4096)
        if not chunk:
            raise SystemExit("connection closed: %r" % buf[:200])
        buf += chunk
    head, rest = buf.split(b"\r\n\r\n", 1)
    return head, rest


held = []
for i in range(n):
    s = socket.create_connection(("127.0.0.1", int(proxy_port)))
    s.sendall(b"CONNECT " + target.encode() + b" HTTP/1.1\r\nHost: " + target.encode() + b"\r\n\r\n")
    head, _ = read_head(s)
    if not head.split(b" ", 2)[1].startswith(b"2"):
        raise SystemExit("CONNECT %d refused: %r" % (i, head[:200]))
    t = ctx.wrap_socket(s, server_hostname=host)
    t.sendall(req)
    head, rest = read_head(t)
    if b" 200 " not in head.split(b"\r\n", 1)[0] + b" ":
        raise SystemExit("request %d failed: %r" % (i, head[:200]))
    lower = head.lower()
    if b"content-length:" in lower:
        want = int(lower.split(b"content-length:", 1)[1].split(b"\r\n", 1)[0])
        while len(rest) < want:
            rest += t.recv(65536)
    else:
        while not rest.endswith(b"0\r\n\r\n"):
            rest += t.recv(65536)
    held.append(t)
print("ready", len(held), flush=True)
while True:
    time.sleep(3600)
EOF

# Starts hold.py in the background (hold_pid) and waits for its "ready".
hold_runs=0
hold_pid=
start_holder() { # port target n ca
    hold_runs=$((hold_runs + 1))
    local out=$work/hold.$hold_runs.out
    python3 "$work/hold.py" "$1" "$2" "$3" "$4" /v1/chat/completions >"$out" 2>&1 &
    hold_pid=$!
    pids+=("$hold_pid")
    for _ in $(seq 1 1200); do
        grep -q '^ready' "$out" 2>/dev/null && return 0
        kill -0 "$hold_pid" 2>/dev/null || break
        sleep 0.1
    done
    grep -q '^ready' "$out" 2>/dev/null || die "idle holder ($3 via port $1) failed: $(tail -n 5 "$out")"
}

# Sets mem_before / mem_after (KiB) for PID around holding N connections.
# Not run in a subshell, so that die() ends the script and pids stays right.
mem_before=
mem_after=
measure_idle() { # pid port target n ca
    # One connection first, so one-off costs (leaf minting, pools, lazy
    # tables) are not charged to the idle connections.
    start_holder "$2" "$3" 1 "$5"
    stop "$hold_pid"
    sleep 2
    mem_before=$(rss_kib "$1")
    start_holder "$2" "$3" "$4" "$5"
    sleep 2
    mem_after=$(rss_kib "$1")
    stop "$hold_pid"
}

loadgen() {
    "$examples/loadgen" --json --duration "$duration" --warmup "$warmup" "$@"
}

# --- idle memory (fresh processes, before any load) -------------------------
mem_rows=()
mem_row() { # label n before after
    mem_rows+=("$(awk -v l="$1" -v n="$2" -v b="$3" -v a="$4" \
        'BEGIN { printf "| %s | %d | %.1f | %.1f | %.1f |", l, n, b / 1024, a / 1024, (a - b) / n }')")
}
if ((idle_tunnels > 0)); then
    start_sluice
    echo "idle: $idle_tunnels tunnels through sluice ..." >&2
    measure_idle "$sluice_pid" "$proxy_port" "127.0.0.1:$fake_port" \
        "$idle_tunnels" "$work/fake-ca.pem"
    mem_row "sluice, tunnel (not intercepted)" "$idle_tunnels" "$mem_before" "$mem_after"
    stop "$sluice_pid"
fi
if ((idle_intercept > 0)); then
    start_sluice
    echo "idle: $idle_intercept intercepted connections through sluice ..." >&2
    measure_idle "$sluice_pid" "$proxy_port" "api.openai.com:443" \
        "$idle_intercept" "$work/ca/ca.pem"
    mem_row "sluice, intercepted" "$idle_intercept" "$mem_before" "$mem_after"
    stop "$sluice_pid"
    if [[ " $modes " == *" mitmdump "* ]]; then
        start_mitmdump
        echo "idle: $idle_intercept intercepted connections through mitmdump ..." >&2
        measure_idle "$mitm_pid" "$mitm_port" "api.openai.com:443" \
            "$idle_intercept" "$work/mitm/mitmproxy-ca-cert.pem"
        mem_row "mitmdump, intercepted" "$idle_intercept" "$mem_before" "$mem_after"
        stop "$mitm_pid"
    fi
fi

# --- load -------------------------------------------------------------------
start_sluice
echo "sluice proxy on 127.0.0.1:$proxy_port (admin $admin_port)" >&2
if [[ " $modes " == *" mitmdump "* ]]; then
    start_mitmdump
    echo "mitmdump on 127.0.0.1:$mitm_port" >&2
fi

declare -A result quiet
for c in $concurrencies; do
    for mode in $modes; do
        read -r busy load < <(wait_quiet)
        echo "c=$c $mode (machine $busy% busy, load $load) ..." >&2
        case $mode in
        direct)
            out=$(loadgen --concurrency "$c" --ca "$work/fake-ca.pem" \
                --resolve "api.openai.com:443:127.0.0.1:$fake_port" \
                --url https://api.openai.com/v1/chat/completions) ;;
        intercept)
            out=$(loadgen --concurrency "$c" --ca "$work/ca/ca.pem" \
                --proxy "http://127.0.0.1:$proxy_port" \
                --url https://api.openai.com/v1/chat/completions) ;;
        tunnel)
            out=$(loadgen --concurrency "$c" --ca "$work/fake-ca.pem" \
                --proxy "http://127.0.0.1:$proxy_port" \
                --url "https://127.0.0.1:$fake_port/v1/chat/completions") ;;
        mitmdump)
            out=$(loadgen --concurrency "$c" --ca "$work/mitm/mitmproxy-ca-cert.pem" \
                --proxy "http://127.0.0.1:$mitm_port" \
                --url https://api.openai.com/v1/chat/completions) ;;
        *) die "unknown mode $mode" ;;
        esac || die "$mode run failed at c=$c (logs in $work; BENCH_KEEP=1 keeps them)"
        errs=$(($(field "$out" errors_status) + $(field "$out" errors_transport)))
        ((errs == 0)) || echo "warning: c=$c $mode: $errs errors in: $out" >&2
        [[ -z ${BENCH_RAW:-} ]] ||
            echo "{\"mode\":\"$mode\",\"busy_pct\":$busy,\"load1\":$load,\"run\":$out}" >>"$BENCH_RAW"
        result[$mode,$c]=$out
        quiet[$mode,$c]="$busy% / $load"
    done
done

echo
echo "Machine: $(nproc) CPUs, $(awk '/^MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo)," \
    "$(grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')."
echo "Non-streaming OpenAI chat completion over HTTPS, HTTP/1.1 keep-alive, one connection" \
    "per worker, ${duration} s per run after ${warmup} s warmup. Latencies in ms."
echo
echo "| c | mode | rps | p50 | p90 | p99 | p99.9 | errors | CPU busy before / load1 |"
echo "|---|---|---|---|---|---|---|---|---|"
for c in $concurrencies; do
    for mode in $modes; do
        out=${result[$mode,$c]}
        awk -v c="$c" -v m="$mode" -v q="${quiet[$mode,$c]}" \
            -v rps="$(field "$out" rps)" -v p50="$(field "$out" p50_ms)" -v p90="$(field "$out" p90_ms)" \
            -v p99="$(field "$out" p99_ms)" -v p999="$(field "$out" p999_ms)" \
            -v e="$(($(field "$out" errors_status) + $(field "$out" errors_transport)))" \
            'BEGIN { printf "| %s | %s | %.0f | %.3f | %.3f | %.3f | %.3f | %d | %s |\n", c, m, rps, p50, p90, p99, p999, e, q }'
    done
done

if [[ -n ${result[direct,1]:-} ]]; then
    echo
    echo "Added vs direct (ms; throughput as a fraction of direct):"
    echo
    echo "| c | mode | added p50 | added p99 | rps / direct |"
    echo "|---|---|---|---|---|"
    for c in $concurrencies; do
        d=${result[direct,$c]}
        for mode in $modes; do
            [[ $mode == direct ]] && continue
            out=${result[$mode,$c]}
            awk -v c="$c" -v m="$mode" \
                -v d50="$(field "$d" p50_ms)" -v d99="$(field "$d" p99_ms)" -v drps="$(field "$d" rps)" \
                -v p50="$(field "$out" p50_ms)" -v p99="$(field "$out" p99_ms)" -v rps="$(field "$out" rps)" \
                'BEGIN { printf "| %s | %s | %+.3f | %+.3f | %.2f |\n", c, m, p50 - d50, p99 - d99, (drps > 0) ? rps / drps : 0 }'
        done
    done
fi

if [[ -n ${result[intercept,64]:-} && -n ${result[mitmdump,64]:-} ]]; then
    echo
    awk -v s="$(field "${result[intercept,64]}" rps)" -v m="$(field "${result[mitmdump,64]}" rps)" \
        'BEGIN { printf "Throughput at c=64, sluice intercept / mitmdump: %.0f / %.0f = %.1fx\n", s, m, (m > 0) ? s / m : 0 }'
fi

if ((${#mem_rows[@]} > 0)); then
    echo
    echo "Idle connections: proxy resident memory (VmRSS) before and after opening N idle"
    echo "keep-alive HTTPS connections through it (CONNECT, TLS, one request each)."
    echo
    echo "| proxy, connection kind | N | RSS before MiB | RSS after MiB | KiB per connection |"
    echo "|---|---|---|---|---|"
    printf '%s\n' "${mem_rows[@]}"
fi
