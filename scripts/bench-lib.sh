# Shared helpers for the bench scripts; source it after setting `work`
# (a temp dir) and `bench_name`. Every process started goes into `pids` and
# is stopped on exit.

pids=()

cleanup() {
    local pid
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${pids[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    if [[ ${BENCH_KEEP:-0} == 1 ]]; then
        echo "kept $work" >&2
    else
        rm -rf "$work"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

die() {
    echo "$bench_name: $*" >&2
    exit 1
}

# Stops one process this script started and forgets it.
stop() {
    local pid=$1 p keep=()
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    for p in "${pids[@]}"; do
        [[ $p == "$pid" ]] || keep+=("$p")
    done
    pids=("${keep[@]}")
}

# A port nobody listens on right now. Racy in principle, fine on a bench box.
free_port() {
    local port
    for _ in $(seq 1 100); do
        port=$((20000 + RANDOM % 40000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "$port"
            return 0
        fi
    done
    die "no free port found"
}

listening() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# True when GET http://127.0.0.1:PORT/PATH answers 200 (no curl needed).
http_ok() {
    local port=$1 path=$2 status
    exec 3<>"/dev/tcp/127.0.0.1/$port" || return 1
    printf 'GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n' "$path" >&3
    IFS= read -r -t 2 status <&3 || status=
    exec 3<&- 3>&-
    [[ $status == "HTTP/1."?" 200"* ]]
}

# Reads a numeric field from loadgen's one-line JSON.
field() {
    sed -E "s/.*\"$2\":([0-9.eE+-]+).*/\1/" <<<"$1"
}


# CPU time (user + system) a process has used so far, in microseconds.
cpu_us() {
    local stat ticks
    stat=$(cat "/proc/$1/stat") || return 1
    # Fields after the parenthesised command name; utime and stime are 14 and 15.
    read -r -a f <<<"${stat##*) }"
    ticks=$((f[11] + f[12]))
    echo $((ticks * 1000000 / $(getconf CLK_TCK)))
}

# Starts the fake provider (binary $1) on an OS-chosen port, its CA in
# $work/fake-ca.pem; sets fake_pid and fake_port.
start_fake() {
    local line
    "$1" --listen 127.0.0.1:0 --ca-out "$work/fake-ca.pem" >"$work/fake.out" 2>"$work/fake.err" &
    fake_pid=$!
    pids+=("$fake_pid")
    fake_port=
    for _ in $(seq 1 100); do
        if line=$(grep -m1 '^listening on ' "$work/fake.out" 2>/dev/null); then
            fake_port=${line##*:}
            break
        fi
        sleep 0.1
    done
    [[ -n $fake_port ]] || die "fake provider did not start: $(cat "$work/fake.err")"
    echo "fake provider on 127.0.0.1:$fake_port" >&2
}

# Builds sluice and the bench examples (unless BENCH_SKIP_BUILD=1) and
# checks they are there. Needs `repo`, `bin` and `sluice_bin`.
build_binaries() {
    local b
    if [[ ${BENCH_SKIP_BUILD:-0} != 1 ]]; then
        echo "building release binaries in $CARGO_TARGET_DIR ..." >&2
        (cd "$repo" && cargo build --release --examples --bin sluice) >&2
    fi
    for b in "$bin/examples/fake_provider" "$bin/examples/loadgen" "$sluice_bin"; do
        [[ -x $b ]] || die "missing $b"
    done
}

# Sets gw_port and admin_port: free, and apart from the fake's.
pick_gateway_ports() {
    gw_port=$(free_port)
    admin_port=$(free_port)
    while [[ $gw_port == "$fake_port" ]]; do gw_port=$(free_port); done
    while [[ $admin_port == "$gw_port" || $admin_port == "$fake_port" ]]; do admin_port=$(free_port); done
}

# Starts `sluice serve --config $work/sluice.yaml` and waits up to 30 s
# for its /readyz on admin_port; sets sluice_pid.
start_sluice() {
    (cd "$work" && exec "$sluice_bin" serve --config "$work/sluice.yaml") \
        >"$work/sluice.out" 2>"$work/sluice.err" &
    sluice_pid=$!
    pids+=("$sluice_pid")
    for _ in $(seq 1 300); do
        if http_ok "$admin_port" /readyz 2>/dev/null; then
            echo "sluice gateway on 127.0.0.1:$gw_port (admin $admin_port)" >&2
            return 0
        fi
        kill -0 "$sluice_pid" 2>/dev/null || die "sluice exited: $(tail -n 20 "$work/sluice.err")"
        sleep 0.1
    done
    die "sluice not ready after 30 s: $(tail -n 20 "$work/sluice.err")"
}
