#!/usr/bin/env bash
# tools/bench.sh: tcpd on a TUN device against the Linux kernel's TCP over a
# veth pair, in one run, side by side, and a table of the ratios.
#
#   sudo tools/bench.sh [--quick] [--runs N] [--workers N[,N...]] ...
#   sudo tools/bench.sh --quick --figures upload,download   # just the transfers
#
# Everything happens in network namespaces this script creates (names
# tcpd-bench-<pid>-<random>-*) and removes again on every exit path:
#   - tcpd:   one namespace per tcpd configuration holds the TUN device,
#             tcpd (10.0.0.2) and the clients (kernel side 10.0.0.1);
#   - the offload configurations (--configs, issue 7): "rootless" is tcpd
#             --no-configure as uid 65534 on a persistent TUN device that
#             root created for that uid and gave its addresses (a private
#             mount namespace holds a world-usable /dev/net/tun node), and
#             "pcap" is the default configuration recording --pcap to a
#             file in /dev/shm (tmpfs; emptied after each figure, removed at
#             exit); both measured on upload and download only, and shown
#             beside the default configuration's ratios (target: within 10 %);
#   - kernel: a server namespace (tcpd-refserver on 10.9.0.2) and a client
#             namespace (10.9.0.1) joined by a veth pair, MTU 1500.
# Packets go nowhere else. Only processes started here are stopped, by PID.
#
# Each figure is measured --runs times, alternating tcpd and kernel, and
# the table shows medians. HTTP figures GET / by default: tcpd's status page
# (~3.4 KB) against tcpd-refserver's page, padded to 3400 bytes so that both
# move the same bytes; --http-path /bytes/N compares identical bodies. Round-trip figures pin client and server (all
# threads) to CPU 0: waking the other vCPU costs ~70 µs here and would
# swamp the stack's own latency.
#
# Needs: root, iproute2, procps/util-linux (taskset), coreutils, and the
# binaries of `cargo build --release -p tcpd -p tools` (built here unless
# --no-build).

set -euo pipefail

usage() {
    cat <<'EOF'
usage: tools/bench.sh [options]
  --quick            short run: 1 run per figure, smaller transfers, 2 s HTTP runs
  --runs N           runs per figure (median reported) [3; 1 with --quick]
  --workers LIST     tcpd --workers values, comma-separated; "default" means no
                     flag, 0 services inline on the reactor [default,2: the
                     default configuration (one worker thread per core but the
                     reactor's) and two worker threads]
  --kernel-only      measure only the kernel reference (no tcpd)
  --figures LIST     figures to measure, comma-separated, of upload, download, rtt,
                     bulk (64-connection transfers before the idle figure, whose
                     "after bulk" RSS it sets up), idle, http_ka, http_close, cps [all]
  --configs LIST     offload configurations beside the default one, measured on
                     upload and download: rootless, pcap, or none [rootless,pcap]
  --http-path PATH   path the HTTP figures GET [/]
  --hold N           idle connections for the "idle" figures [10000]
  --hold-100k        also hold 100 000 idle connections on tcpd and report its RSS
  --bin-dir DIR      where tcpd, tcpload, tcpd-refserver are
                     [$CARGO_TARGET_DIR/release or <repo>/target/release]
  --no-build         do not run cargo build first
  --keep-logs DIR    copy the server and client logs to DIR
  -h, --help         this text
EOF
}

die() {
    echo "bench.sh: $*" >&2
    exit 1
}

QUICK=0
RUNS=""
WORKERS_LIST="default,2"
KERNEL_ONLY=0
HOLD_N=10000
HOLD_100K=0
BIN_DIR=""
BUILD=1
KEEP_LOGS=""
HTTP_PATH="/"
FIGURES_LIST="upload,download,rtt,bulk,idle,http_ka,http_close,cps"
CONFIGS_LIST="rootless,pcap"

while [ $# -gt 0 ]; do
    case "$1" in
        --quick) QUICK=1 ;;
        --runs) RUNS="${2:?--runs needs a number}"; shift ;;
        --workers) WORKERS_LIST="${2:?--workers needs a value}"; shift ;;
        --kernel-only) KERNEL_ONLY=1 ;;
        --figures) FIGURES_LIST="${2:?--figures needs a list}"; shift ;;
        --configs) CONFIGS_LIST="${2:?--configs needs a list}"; shift ;;
        --http-path) HTTP_PATH="${2:?--http-path needs a path}"; shift ;;
        --hold) HOLD_N="${2:?--hold needs a number}"; shift ;;
        --hold-100k) HOLD_100K=1 ;;
        --bin-dir) BIN_DIR="${2:?--bin-dir needs a directory}"; shift ;;
        --no-build) BUILD=0 ;;
        --keep-logs) KEEP_LOGS="${2:?--keep-logs needs a directory}"; shift ;;
        -h | --help) usage; exit 0 ;;
        *) usage >&2; die "unknown option: $1" ;;
    esac
    shift
done

is_uint() { [[ "$1" =~ ^[0-9]+$ ]]; }
if [ -z "$RUNS" ]; then
    if [ "$QUICK" = 1 ]; then RUNS=1; else RUNS=3; fi
fi
is_uint "$RUNS" && [ "$RUNS" -ge 1 ] && [ "$RUNS" -le 50 ] || die "--runs must be 1..50, not $RUNS"
is_uint "$HOLD_N" && [ "$HOLD_N" -ge 1 ] && [ "$HOLD_N" -le 19000 ] ||
    die "--hold must be 1..19000 (one client process; the fd limit here is 20000), not $HOLD_N"
IFS=',' read -r -a WORKERS <<<"$WORKERS_LIST"
IFS=',' read -r -a FIGURES <<<"$FIGURES_LIST"
for f in "${FIGURES[@]}"; do
    case "$f" in upload | download | rtt | bulk | idle | http_ka | http_close | cps) ;;
        *) die "--figures takes upload, download, rtt, bulk, idle, http_ka, http_close, cps, not '$f'" ;;
    esac
done
CONFIGS=()
[ "$CONFIGS_LIST" = none ] || IFS=',' read -r -a CONFIGS <<<"$CONFIGS_LIST"
for c in "${CONFIGS[@]}"; do
    case "$c" in rootless | pcap) ;; *) die "--configs takes rootless, pcap or none, not '$c'" ;; esac
done
for w in "${WORKERS[@]}"; do
    [ "$w" = default ] || is_uint "$w" || die "--workers takes numbers or 'default', not '$w'"
done

[ "$(id -u)" = 0 ] || die "needs root (it creates network namespaces, a TUN device and a veth pair); run it with sudo"
for tool in ip taskset timeout awk sed sort getconf; do
    command -v "$tool" >/dev/null || die "needs '$tool' (Debian: apt-get install iproute2 util-linux coreutils gawk)"
done

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ -z "$BIN_DIR" ]; then
    BIN_DIR="${CARGO_TARGET_DIR:-$REPO/target}/release"
fi
if [ "$BUILD" = 1 ] && ! command -v cargo >/dev/null; then
    # Under sudo, ~/.cargo/bin is often not on PATH: use what is built.
    echo "bench.sh: cargo is not on PATH; using the binaries in $BIN_DIR as they are" >&2
    BUILD=0
fi
if [ "$BUILD" = 1 ]; then
    pkgs=(-p tools)
    [ "$KERNEL_ONLY" = 1 ] || pkgs+=(-p tcpd)
    echo "bench.sh: cargo build --release ${pkgs[*]}" >&2
    (cd "$REPO" && cargo build --release "${pkgs[@]}") || die "cargo build failed"
fi
TCPD="$BIN_DIR/tcpd"
TCPLOAD="$BIN_DIR/tcpload"
REFSERVER="$BIN_DIR/tcpd-refserver"
for b in "$TCPLOAD" "$REFSERVER"; do
    [ -x "$b" ] || die "missing $b (cargo build --release -p tools, or --bin-dir)"
done
[ "$KERNEL_ONLY" = 1 ] || [ -x "$TCPD" ] || die "missing $TCPD (cargo build --release -p tcpd), or use --kernel-only"

# ---------------------------------------------------------------- sizes

if [ "$QUICK" = 1 ]; then
    XFER=512M RTT_COUNT=20000 HTTP_SECS=2 HTTP_THREADS=16
else
    XFER=2G RTT_COUNT=100000 HTTP_SECS=5 HTTP_THREADS=16
fi
CPS_CONNS=8
# A transfer slower than this is cut short and reported as failed.
if [ "$QUICK" = 1 ]; then MAX_XFER_SECS=30; else MAX_XFER_SECS=60; fi
NCPU=$(getconf _NPROCESSORS_ONLN)
CLK_TCK=$(getconf CLK_TCK)
ALL_CPUS="0-$((NCPU - 1))"

# ---------------------------------------------------------------- cleanup

ID="$$-$(printf '%04x' $((RANDOM)))"
NS_PREFIX="tcpd-bench-$ID"
TMP="$(mktemp -d "/tmp/tcpd-bench-$ID.XXXXXX")"
CREATED_NS=()
STARTED_PIDS=()
SHARED_BIN=""
PCAP_DIR=""

stop_pid() {
    # Stops one process this script started: SIGTERM, up to 5 s, then SIGKILL.
    local pid=$1 i
    kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        echo "bench.sh: PID $pid did not stop on SIGTERM; killing it" >&2
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}

cleanup() {
    local rc=$? pid ns
    set +e
    trap - EXIT INT TERM HUP
    for pid in "${STARTED_PIDS[@]}"; do
        stop_pid "$pid"
    done
    for ns in "${CREATED_NS[@]}"; do
        ip netns del "$ns" 2>/dev/null || echo "bench.sh: could not remove namespace $ns" >&2
    done
    if [ -n "$KEEP_LOGS" ]; then
        mkdir -p "$KEEP_LOGS" && cp -r "$TMP"/. "$KEEP_LOGS"/ && echo "bench.sh: logs in $KEEP_LOGS" >&2
    fi
    rm -rf "$TMP"
    [ -z "$SHARED_BIN" ] || rm -rf "$SHARED_BIN"
    [ -z "$PCAP_DIR" ] || rm -rf "$PCAP_DIR"
    exit "$rc"
}
trap cleanup EXIT
trap 'echo "bench.sh: interrupted" >&2; exit 130' INT TERM HUP

# new_ns SUFFIX: creates namespace $NS_PREFIX-SUFFIX and sets NEW_NS.
new_ns() {
    local ns="$NS_PREFIX-$1"
    ip netns add "$ns"
    CREATED_NS+=("$ns")
    ip -n "$ns" link set lo up
    # Client-side knobs, inside our own namespace only: a wide ephemeral
    # port range and TIME-WAIT reuse for connection-per-request runs.
    ip netns exec "$ns" sysctl -qw net.ipv4.ip_local_port_range="1024 65000" net.ipv4.tcp_tw_reuse=1
    NEW_NS=$ns
}

# Starts a command in the background and records its PID. `ip netns exec`
# and `taskset` exec their command, so $! is the server's own PID.
start_bg() {
    local log=$1
    shift
    "$@" >"$log" 2>&1 &
    STARTED_PIDS+=("$!")
    LAST_PID=$!
}

forget_pid() {
    local keep=() p
    for p in "${STARTED_PIDS[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done
    STARTED_PIDS=("${keep[@]}")
}

# ---------------------------------------------------------------- systems under test

# Per system under test: SUT_NS (client namespace), SUT_IP, SUT_PID, SUT_LABEL.
declare -A SUT_NS SUT_IP SUT_PID SUT_LABEL
SUTS=()

setup_kernel() {
    local srv cli
    new_ns ksrv
    srv=$NEW_NS
    new_ns kcli
    cli=$NEW_NS
    ip -n "$srv" link add veth-s mtu 1500 type veth peer name veth-c netns "$cli" mtu 1500
    ip -n "$srv" addr add 10.9.0.2/24 dev veth-s
    ip -n "$cli" addr add 10.9.0.1/24 dev veth-c
    ip -n "$srv" link set veth-s up
    ip -n "$cli" link set veth-c up
    start_bg "$TMP/kernel.server.log" ip netns exec "$srv" "$REFSERVER" --addr 10.9.0.2
    SUT_NS[kernel]=$cli SUT_IP[kernel]=10.9.0.2 SUT_PID[kernel]=$LAST_PID SUT_LABEL[kernel]="kernel (veth)"
    ip netns exec "$cli" timeout 20 "$TCPLOAD" wait --addr 10.9.0.2:7 --timeout 10 >/dev/null ||
        die "tcpd-refserver did not come up: $(tail -n 3 "$TMP/kernel.server.log")"
    SUTS+=(kernel)
}

setup_tcpd() {
    local w=$1 key="tcpd-w$1" ns flags=()
    new_ns "tun-w$w"
    ns=$NEW_NS
    [ "$w" = default ] || flags=(--workers "$w")
    # The idle figures hold HOLD_N connections from one client address.
    flags+=(--max-connections 0 --max-connections-per-source 0)
    start_bg "$TMP/$key.server.log" ip netns exec "$ns" "$TCPD" tun0 -q --mtu 1500 "${flags[@]}"
    SUT_NS[$key]=$ns SUT_IP[$key]=10.0.0.2 SUT_PID[$key]=$LAST_PID SUT_LABEL[$key]="tcpd --workers $w"
    if ! ip netns exec "$ns" timeout 20 "$TCPLOAD" wait --addr 10.0.0.2:7 --timeout 10 >/dev/null; then
        die "tcpd ($key) did not come up: $(tail -n 5 "$TMP/$key.server.log")"
    fi
    SUTS+=("$key")
}

# ---------------------------------------------------------------- offload configurations (issue 7)

# Keys of the offload configurations set up (measured on upload/download).
EXTRA_SUTS=()
is_extra() { [[ " ${EXTRA_SUTS[*]} " == *" $1 "* ]]; }

# rootless: what the README's "Running without root" describes. Root creates
# a persistent device owned by uid 65534 and gives it its addresses (and the
# transmit queue tcpd sets when it configures a device itself); tcpd attaches
# with --no-configure as that uid. A clone's target/ may be in a folder other
# users cannot enter: the uid runs a world-executable copy of the binary.
# /dev/net/tun may be root-only: a private mount namespace gets its own
# world-usable node (as tests/live.rs does); nothing outside changes.
setup_tcpd_rootless() {
    local key=tcpd-rootless ns
    new_ns tun-rootless
    ns=$NEW_NS
    ip -n "$ns" tuntap add tun0 mode tun user 65534
    ip -n "$ns" addr add 10.0.0.1/24 dev tun0
    ip -n "$ns" link set tun0 txqueuelen 10000
    ip -n "$ns" link set tun0 up
    SHARED_BIN=$(mktemp -d /tmp/tcpd-bench-bin-XXXXXX)
    chmod 0755 "$SHARED_BIN"
    install -m 0755 "$TCPD" "$SHARED_BIN/tcpd"
    # unshare, sh and setpriv exec: $! is tcpd itself.
    start_bg "$TMP/$key.server.log" ip netns exec "$ns" unshare -m --propagation private sh -c \
        "mount -t tmpfs tcpd-bench /dev/net && mknod -m 0666 /dev/net/tun c 10 200 && \
         exec setpriv --reuid=65534 --regid=65534 --clear-groups $SHARED_BIN/tcpd tun0 --no-configure --no-ipv6"
    SUT_NS[$key]=$ns SUT_IP[$key]=10.0.0.2 SUT_PID[$key]=$LAST_PID SUT_LABEL[$key]="tcpd rootless"
    if ! ip netns exec "$ns" timeout 20 "$TCPLOAD" wait --addr 10.0.0.2:7 --timeout 10 >/dev/null; then
        die "tcpd ($key) did not come up: $(tail -n 5 "$TMP/$key.server.log")"
    fi
    grep -q 'offload=true' "$TMP/$key.server.log" ||
        echo "bench.sh: tcpd rootless runs without offload: $(grep -i offload "$TMP/$key.server.log" | tail -n 1)" >&2
    SUTS+=("$key")
    EXTRA_SUTS+=("$key")
}

# pcap: the default configuration recording every packet to a tmpfs file.
setup_tcpd_pcap() {
    local key=tcpd-pcap ns
    new_ns tun-pcap
    ns=$NEW_NS
    PCAP_DIR=$(mktemp -d /dev/shm/tcpd-bench-pcap-XXXXXX)
    start_bg "$TMP/$key.server.log" ip netns exec "$ns" "$TCPD" tun0 -q --mtu 1500 --pcap "$PCAP_DIR/bench.pcap"
    SUT_NS[$key]=$ns SUT_IP[$key]=10.0.0.2 SUT_PID[$key]=$LAST_PID SUT_LABEL[$key]="tcpd --pcap"
    if ! ip netns exec "$ns" timeout 20 "$TCPLOAD" wait --addr 10.0.0.2:7 --timeout 10 >/dev/null; then
        die "tcpd ($key) did not come up: $(tail -n 5 "$TMP/$key.server.log")"
    fi
    SUTS+=("$key")
    EXTRA_SUTS+=("$key")
}

# After each figure: the capture file is emptied (tcpd's writer goes on at
# its offset; tmpfs keeps the hole sparse), so RAM holds one figure's capture.
pcap_trim() { [ -z "$PCAP_DIR" ] || truncate -s 0 "$PCAP_DIR/bench.pcap" 2>/dev/null || true; }

# The offload configurations' upload and download beside the default one's.
print_offload_configs() {
    local base=tcpd-wdefault fig t kv bv tv br tr rel verdict
    [ "${#EXTRA_SUTS[@]}" -gt 0 ] || return 0
    echo
    echo "## offload configurations: medians of $RUNS run(s); ratio = tcpd / kernel of the same run"
    printf '| %-26s | %-15s | %10s | %6s | %13s | %8s | %-4s |\n' figure configuration tcpd ratio "default ratio" relative "±10%"
    printf '|%s|%s|%s|%s|%s|%s|%s|\n' ---------------------------- ----------------- ------------ -------- --------------- ---------- ------
    for fig in upload download; do
        kv=$(median "$fig" kernel 4)
        bv=$(median "$fig" "$base" 4)
        br=$(awk -v a="$bv" -v b="$kv" 'BEGIN { if (a == "NA" || b == "NA" || b + 0 == 0) print "NA"; else printf "%.2f", a / b }')
        for t in "${EXTRA_SUTS[@]}"; do
            tv=$(median "$fig" "$t" 4)
            tr=$(awk -v a="$tv" -v b="$kv" 'BEGIN { if (a == "NA" || b == "NA" || b + 0 == 0) print "NA"; else printf "%.2f", a / b }')
            rel=$(awk -v a="$tv" -v b="$bv" 'BEGIN { if (a == "NA" || b == "NA" || b + 0 == 0) print "NA"; else printf "%.2f", a / b }')
            verdict=$(awk -v r="$rel" 'BEGIN { if (r == "NA") print "?"; else print (r + 0 >= 0.9 ? "pass" : "FAIL") }')
            printf '| %-26s | %-15s | %10s | %6s | %13s | %8s | %-4s |\n' "$(fig_name "$fig")" "${SUT_LABEL[$t]}" "$tv" "$tr" "$br" "$rel" "$verdict"
        done
    done
    # What the capture holds: a writer thread that cannot keep up drops
    # records (counted in pcap_lost) rather than slow the stack down.
    if is_extra tcpd-pcap && kill -0 "${SUT_PID[tcpd-pcap]}" 2>/dev/null; then
        kill -USR1 "${SUT_PID[tcpd-pcap]}"
        sleep 0.5
        echo "tcpd --pcap capture: $(grep -o 'pcap_records=[0-9]* pcap_lost=[0-9]*' "$TMP/tcpd-pcap.server.log" | tail -n 1) (over all figures)"
    fi
}

# ---------------------------------------------------------------- measuring

# cpu_ticks PID: user + system time of all threads, in clock ticks
# (/proc/PID/stat fields 14 and 15; the command name may hold spaces).
cpu_ticks() {
    sed 's/.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'
}
rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
hwm_kb() { awk '/^VmHWM:/ {print $2}' "/proc/$1/status"; }

# result FILE KEY: the value of KEY on the RESULT line of FILE.
result() {
    sed -n 's/^RESULT //p' "$1" | tail -n 1 | tr ' ' '\n' | awk -F= -v k="$2" '$1 == k {print $2}'
}

# alive SUT: whether the server still runs; says so once when it died, so
# that the other systems' figures are still measured and printed.
declare -A SUT_DEAD
alive() {
    kill -0 "${SUT_PID[$1]}" 2>/dev/null && return 0
    if [ -z "${SUT_DEAD[$1]:-}" ]; then
        SUT_DEAD[$1]=1
        echo "bench.sh: ${SUT_LABEL[$1]} (PID ${SUT_PID[$1]}) is no longer running; its log ends:" >&2
        tail -n 5 "$TMP/$1.server.log" >&2
    fi
    return 1
}

# client SUT LOG ARGS...: runs tcpload in the SUT's client namespace.
client() {
    local sut=$1 log=$2
    shift 2
    if ! ip netns exec "${SUT_NS[$sut]}" timeout 300 "$@" >"$log" 2>&1; then
        echo "bench.sh: client failed on ${SUT_LABEL[$sut]}: $*" >&2
        tail -n 3 "$log" >&2
        return 1
    fi
}

# Pins every thread of the server to CPU 0, or back to all CPUs.
pin_server() { taskset -a -p -c "$2" "${SUT_PID[$1]}" >/dev/null 2>&1 || true; }

RESULTS="$TMP/results"
: >"$RESULTS"
record() { echo "$1 $2 $3 $4 $5" >>"$RESULTS"; } # figure sut run value cpu_seconds

# measure FIGURE SUT RUN: one sample of one figure.
measure() {
    local fig=$1 sut=$2 run=$3 ip=${SUT_IP[$2]} pid=${SUT_PID[$2]}
    local log="$TMP/$sut.$fig.$run.log" t0 t1 value="" cpu
    if ! alive "$sut"; then
        [ "$fig" = idle ] && { record rss_idle "$sut" "$run" NA 0; fig=rtt_idle; }
        record "$fig" "$sut" "$run" NA 0
        return 0
    fi
    t0=$(cpu_ticks "$pid")
    case "$fig" in
        upload)
            client "$sut" "$log" "$TCPLOAD" upload --addr "$ip:9" --bytes "$XFER" --max-secs "$MAX_XFER_SECS" &&
                value=$(result "$log" mbps) ;;
        download)
            client "$sut" "$log" "$TCPLOAD" download --addr "$ip:80" --bytes "$XFER" --max-secs "$MAX_XFER_SECS" &&
                value=$(result "$log" mbps) ;;
        rtt)
            pin_server "$sut" 0
            client "$sut" "$log" taskset -c 0 "$TCPLOAD" rtt --addr "$ip:7" --count "$RTT_COUNT" &&
                value=$(result "$log" p50_us)
            pin_server "$sut" "$ALL_CPUS" ;;
        http_ka)
            client "$sut" "$log" "$TCPLOAD" http --addr "$ip:80" --threads "$HTTP_THREADS" --duration "$HTTP_SECS" --path "$HTTP_PATH" &&
                value=$(result "$log" rps) ;;
        cps)
            client "$sut" "$log" "$TCPLOAD" cps --addr "$ip:7" --conns "$CPS_CONNS" --duration "$HTTP_SECS" &&
                value=$(result "$log" cps) ;;
        http_close)
            client "$sut" "$log" "$TCPLOAD" http --addr "$ip:80" --threads "$HTTP_THREADS" --duration "$HTTP_SECS" --path "$HTTP_PATH" --close &&
                value=$(result "$log" rps) ;;
        idle)
            measure_idle "$sut" "$run"
            return ;;
        bulk)
            bulk_transfers "$sut" "$run"
            return ;;
    esac
    t1=$(cpu_ticks "$pid" 2>/dev/null || echo "$t0")
    cpu=$(awk -v a="$t0" -v b="$t1" -v hz="$CLK_TCK" 'BEGIN {printf "%.2f", (b - a) / hz}')
    record "$fig" "$sut" "$run" "${value:-NA}" "$cpu"
    printf '  %-12s %-20s run %d: %s (server CPU %s s)\n' "$fig" "${SUT_LABEL[$sut]}" "$run" "${value:-FAILED}" "$cpu" >&2
}

# The idle figures: open HOLD_N idle connections, then the server's RSS and
# the pinned round trip with them open.
measure_idle() {
    local sut=$1 run=$2 ip=${SUT_IP[$1]} pid=${SUT_PID[$1]}
    local hlog="$TMP/$sut.hold.$run.log" log="$TMP/$sut.rtt_idle.$run.log"
    local hpid i ok=0 value="" rss t0 t1 cpu
    t0=$(cpu_ticks "$pid")
    start_bg "$hlog" ip netns exec "${SUT_NS[$sut]}" "$TCPLOAD" hold --addr "$ip:7" --count "$HOLD_N" --duration 600
    hpid=$LAST_PID
    for i in $(seq 600); do
        if grep -q '^RESULT test=hold' "$hlog"; then ok=1; break; fi
        kill -0 "$hpid" 2>/dev/null || break
        sleep 0.1
    done
    if [ "$ok" = 1 ]; then
        # tcpd gives idle memory back in 1 s steps (--mem-release, two steps
        # to empty a pool): measure the held state, not the moment after.
        sleep "$RSS_SETTLE"
        rss=$(rss_kb "$pid")
        record rss_idle "$sut" "$run" "$(awk -v k="$rss" 'BEGIN {printf "%.1f", k / 1024}')" 0
        pin_server "$sut" 0
        client "$sut" "$log" taskset -c 0 "$TCPLOAD" rtt --addr "$ip:7" --count "$RTT_COUNT" &&
            value=$(result "$log" p50_us)
        pin_server "$sut" "$ALL_CPUS"
    else
        echo "bench.sh: holding $HOLD_N connections failed on ${SUT_LABEL[$sut]}: $(tail -n 2 "$hlog")" >&2
        record rss_idle "$sut" "$run" NA 0
    fi
    stop_pid "$hpid"
    forget_pid "$hpid"
    # Let the server see the FINs of the held connections before the next figure.
    sleep 1
    t1=$(cpu_ticks "$pid" 2>/dev/null || echo "$t0")
    cpu=$(awk -v a="$t0" -v b="$t1" -v hz="$CLK_TCK" 'BEGIN {printf "%.2f", (b - a) / hz}')
    record rtt_idle "$sut" "$run" "${value:-NA}" "$cpu"
    printf '  %-12s %-20s run %d: rtt %s µs, RSS %s kB (server CPU %s s)\n' idle "${SUT_LABEL[$sut]}" "$run" "${value:-FAILED}" "${rss:-?}" "$cpu" >&2
}

# ---- memory after bulk transfers (issue 7 part 3)
#
# The RSS figures: "fresh" holds HOLD_N idle connections on a daemon that
# has moved no bulk data yet (measured once, before any other figure);
# the "idle" figure holds them again after the upload and download figures
# and after the "bulk" step below, which runs BULK_CONNS concurrent uploads
# and downloads (many connections grow many buffers at once: what a single
# transfer never shows).
RSS_SETTLE=3
BULK_CONNS=64
measure_fresh_rss() {
    local sut=$1 ip=${SUT_IP[$1]} pid=${SUT_PID[$1]} hlog="$TMP/$1.hold.fresh.log" hpid i ok=0 rss
    alive "$sut" || { record rss_fresh "$sut" 1 NA 0; return 0; }
    start_bg "$hlog" ip netns exec "${SUT_NS[$sut]}" "$TCPLOAD" hold --addr "$ip:7" --count "$HOLD_N" --duration 600
    hpid=$LAST_PID
    for i in $(seq 600); do
        if grep -q '^RESULT test=hold' "$hlog"; then ok=1; break; fi
        kill -0 "$hpid" 2>/dev/null || break
        sleep 0.1
    done
    if [ "$ok" = 1 ]; then
        sleep "$RSS_SETTLE"
        rss=$(rss_kb "$pid")
        record rss_fresh "$sut" 1 "$(awk -v k="$rss" 'BEGIN {printf "%.1f", k / 1024}')" 0
    else
        record rss_fresh "$sut" 1 NA 0
    fi
    printf '  %-12s %-20s: RSS %s kB with %s idle connections\n' fresh "${SUT_LABEL[$sut]}" "${rss:-?}" "$HOLD_N" >&2
    stop_pid "$hpid"
    forget_pid "$hpid"
    sleep 1
}
# bulk_transfers SUT RUN: concurrent uploads and downloads before the idle figure.
bulk_transfers() {
    local sut=$1 run=$2 ip=${SUT_IP[$1]} b
    alive "$sut" || return 0
    b=$XFER
    client "$sut" "$TMP/$sut.bulk_up.$run.log" "$TCPLOAD" upload --addr "$ip:9" --bytes "$b" --conns "$BULK_CONNS" --max-secs "$MAX_XFER_SECS" || true
    client "$sut" "$TMP/$sut.bulk_down.$run.log" "$TCPLOAD" download --addr "$ip:80" --bytes "$b" --conns "$BULK_CONNS" --max-secs "$MAX_XFER_SECS" || true
    printf '  %-12s %-20s run %d: %s up + %s down over %d connections, RSS now %s kB\n' bulk "${SUT_LABEL[$sut]}" "$run" "$b" "$b" "$BULK_CONNS" "$(rss_kb "${SUT_PID[$sut]}" 2>/dev/null || echo '?')" >&2
}

# Holds 100 000 idle connections on one tcpd (6 client processes, one
# source address each) and reports its RSS.
hold_100k() {
    local sut=$1 ns=${SUT_NS[$1]} pid=${SUT_PID[$1]} k hpids=() ok logs=() rss
    echo "== 100 000 idle connections on ${SUT_LABEL[$sut]}" >&2
    for k in 1 2 3 4 5 6; do
        ip -n "$ns" addr add "10.0.0.$((10 + k))/24" dev tun0
        start_bg "$TMP/$sut.hold100k.$k.log" ip netns exec "$ns" "$TCPLOAD" hold --addr 10.0.0.2:7 \
            --count 16667 --src-addrs "10.0.0.$((10 + k))" --duration 600
        hpids+=("$LAST_PID")
        logs+=("$TMP/$sut.hold100k.$k.log")
    done
    for i in $(seq 1200); do
        ok=0
        for k in "${logs[@]}"; do grep -q '^RESULT test=hold' "$k" && ok=$((ok + 1)); done
        [ "$ok" = 6 ] && break
        for k in "${hpids[@]}"; do kill -0 "$k" 2>/dev/null || break 2; done
        sleep 0.1
    done
    if [ "$ok" = 6 ]; then
        sleep 1
        rss=$(rss_kb "$pid")
        HOLD100K_LINE="tcpd RSS with 100 002 idle connections (${SUT_LABEL[$sut]}): $(awk -v k="$rss" 'BEGIN {printf "%.1f MB", k / 1024}') (target < 300 MB: $(awk -v k="$rss" 'BEGIN {print (k / 1024 < 300) ? "pass" : "FAIL"}'))"
    else
        HOLD100K_LINE="100 000 idle connections on ${SUT_LABEL[$sut]}: failed ($(cat "${logs[@]}" | grep -v '^hold:' | tail -n 2 | tr '\n' ' '))"
    fi
    echo "$HOLD100K_LINE" >&2
    for k in "${hpids[@]}"; do
        stop_pid "$k"
        forget_pid "$k"
    done
    sleep 2
}

# ---------------------------------------------------------------- run

echo "== tcpd benchmark $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(uname -r), $NCPU CPUs, git $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo '?')" >&2
echo "   namespaces $NS_PREFIX-*, runs $RUNS, transfers $XFER, rtt count $RTT_COUNT, HTTP GET $HTTP_PATH ${HTTP_SECS}s x $HTTP_THREADS threads, idle $HOLD_N" >&2
echo "   load average at start: $(cut -d' ' -f1-3 /proc/loadavg) (other work on the machine skews every figure)" >&2

setup_kernel
if [ "$KERNEL_ONLY" = 0 ]; then
    for w in "${WORKERS[@]}"; do setup_tcpd "$w"; done
    for c in "${CONFIGS[@]}"; do "setup_tcpd_$c"; done
fi
TCPD_SUTS=()
for s in "${SUTS[@]}"; do [ "$s" = kernel ] || TCPD_SUTS+=("$s"); done

# The fresh-daemon RSS, before any transfer, for the idle figure's ratio.
if [[ " ${FIGURES[*]} " == *" idle "* ]]; then
    for s in "${SUTS[@]}"; do is_extra "$s" || measure_fresh_rss "$s"; done
fi
for fig in "${FIGURES[@]}"; do
    for run in $(seq "$RUNS"); do
        # Alternate which system goes first.
        order=("${SUTS[@]}")
        if [ $((run % 2)) = 0 ]; then
            order=()
            for ((i = ${#SUTS[@]} - 1; i >= 0; i--)); do order+=("${SUTS[$i]}"); done
        fi
        for sut in "${order[@]}"; do
            if is_extra "$sut"; then
                case "$fig" in upload | download) ;; *) continue ;; esac
            fi
            measure "$fig" "$sut" "$run" || true
            [ "$sut" != tcpd-pcap ] || pcap_trim
        done
    done
done

HOLD100K_LINE=""
if [ "$HOLD_100K" = 1 ] && [ "${#TCPD_SUTS[@]}" -gt 0 ]; then  # TCPD_SUTS[0]: a --workers one
    hold_100k "${TCPD_SUTS[0]}"
fi

# ---------------------------------------------------------------- table

# median FIGURE SUT COLUMN(4 value, 5 cpu)
median() {
    awk -v f="$1" -v s="$2" -v c="$3" '$1 == f && $2 == s && $c != "NA" {print $c}' "$RESULTS" |
        sort -g | awk '{v[NR] = $1} END {
            if (NR == 0) { print "NA"; exit }
            if (NR % 2) print v[(NR + 1) / 2]; else printf "%.2f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

fig_name() {
    case "$1" in
        upload) echo "upload to discard (MB/s)" ;;
        download) echo "download /bytes/N (MB/s)" ;;
        rtt) echo "1-byte echo RTT p50, 1 CPU (us)" ;;
        rtt_idle) echo "same RTT, $HOLD_N idle conns (us)" ;;
        http_ka) echo "HTTP keep-alive (req/s)" ;;
        http_close) echo "HTTP Connection: close (req/s)" ;;
        rss_idle) echo "RSS, $HOLD_N idle, after bulk (MB)" ;;
        rss_fresh) echo "RSS, $HOLD_N idle, fresh (MB)" ;;
        cps) echo "connect+echo+close/s, $CPS_CONNS clients" ;;
    esac
}
# target FIGURE -> "op value kind": kind ratio or abs
target() {
    case "$1" in
        upload) echo ">= 0.6 ratio" ;;
        download) echo ">= 0.35 ratio" ;;
        rtt) echo "<= 1.3 ratio" ;;
        rtt_idle) echo "<= 1.4 ratio" ;;
        http_ka) echo ">= 1.0 ratio" ;;
        http_close) echo ">= 0.8 ratio" ;;
        rss_idle) echo "<= 30 abs" ;;
        rss_fresh) echo "- - none" ;;
        cps) echo "- - none" ;;
    esac
}

print_table() {
    local t=$1 fig tv kv ratio op goal kind verdict tgt cpu
    echo
    echo "## ${SUT_LABEL[$t]} vs ${SUT_LABEL[kernel]}: medians of $RUNS run(s), MTU 1500"
    printf '| %-34s | %10s | %10s | %6s | %-12s | %-4s | %s |\n' figure tcpd kernel ratio target pass "tcpd CPU s"
    printf '|%s|%s|%s|%s|%s|%s|%s|\n' "------------------------------------" ------------ ------------ -------- -------------- ------ ------------
    for fig in upload download rtt rtt_idle http_ka http_close rss_fresh rss_idle cps; do
        tv=$(median "$fig" "$t" 4)
        kv=$(median "$fig" kernel 4)
        read -r op goal kind <<<"$(target "$fig")"
        ratio=$(awk -v a="$tv" -v b="$kv" 'BEGIN { if (a == "NA" || b == "NA" || b + 0 == 0) print "NA"; else printf "%.2f", a / b }')
        if [ "$kind" = none ]; then
            tgt="(none)"
            verdict="-"
        elif [ "$kind" = abs ]; then
            tgt="$op $goal MB"
            verdict=$(awk -v a="$tv" -v g="$goal" 'BEGIN { if (a == "NA") print "?"; else print ((a + 0 <= g + 0) ? "pass" : "FAIL") }')
        else
            tgt="$op $goal"
            verdict=$(awk -v r="$ratio" -v g="$goal" -v op="$op" 'BEGIN {
                if (r == "NA") { print "?"; exit }
                ok = (op == ">=") ? (r + 0 >= g + 0) : (r + 0 <= g + 0); print ok ? "pass" : "FAIL" }')
        fi
        cpu=$(median "$fig" "$t" 5)
        if [ "$fig" = rss_idle ] || [ "$fig" = rss_fresh ]; then
            # An absolute target; the kernel keeps its sockets outside the
            # process. The after-bulk row's ratio is to tcpd's fresh figure
            # (goal <= 1.5).
            ratio="-"
            cpu="-"
            [ "$fig" = rss_idle ] && ratio=$(awk -v a="$tv" -v b="$(median rss_fresh "$t" 4)" 'BEGIN { if (a == "NA" || b == "NA" || b + 0 == 0) print "-"; else printf "%.2f", a / b }')
        fi
        printf '| %-34s | %10s | %10s | %6s | %-12s | %-4s | %10s |\n' "$(fig_name "$fig")" "$tv" "$kv" "$ratio" "$tgt" "$verdict" "$cpu"
    done
    local pid=${SUT_PID[$t]}
    if kill -0 "$pid" 2>/dev/null; then
        echo "tcpd totals: CPU $(awk -v t="$(cpu_ticks "$pid")" -v hz="$CLK_TCK" 'BEGIN {printf "%.1f", t / hz}') s," \
            "RSS now $(awk -v k="$(rss_kb "$pid")" 'BEGIN {printf "%.1f", k / 1024}') MB," \
            "peak RSS $(awk -v k="$(hwm_kb "$pid")" 'BEGIN {printf "%.1f", k / 1024}') MB"
    else
        echo "tcpd is no longer running (see its log)"
    fi
}

print_kernel_only() {
    local fig
    echo
    echo "## ${SUT_LABEL[kernel]}: medians of $RUNS run(s), MTU 1500"
    printf '| %-34s | %10s | %12s |\n' figure kernel "server CPU s"
    printf '|%s|%s|%s|\n' "------------------------------------" ------------ --------------
    for fig in upload download rtt rtt_idle http_ka http_close rss_fresh rss_idle cps; do
        printf '| %-34s | %10s | %12s |\n' "$(fig_name "$fig")" "$(median "$fig" kernel 4)" "$(median "$fig" kernel 5)"
    done
}

if [ "${#TCPD_SUTS[@]}" = 0 ]; then
    print_kernel_only
else
    for t in "${TCPD_SUTS[@]}"; do is_extra "$t" || print_table "$t"; done
    print_offload_configs
fi
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "(RSS after bulk: its ratio column is to tcpd's own fresh figure, goal <= 1.5; measured ${RSS_SETTLE} s after the $HOLD_N connections are up, after $BULK_CONNS-connection uploads and downloads.)"
echo "(kernel RSS is tcpd-refserver's; the kernel's socket memory is not in it. CPU s: server process user+system time during the figure, all runs' median.)"
[ -z "$HOLD100K_LINE" ] || echo "$HOLD100K_LINE"
echo
echo "raw samples (figure system run value cpu_s):"
sort -k1,1 -k2,2 -k3,3n "$RESULTS" | sed 's/^/  /'
