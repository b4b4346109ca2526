#!/usr/bin/env bash
# tools/flood-bench.sh: connect + GET / latency of a legitimate client while a
# real SYN flood (hping3 --flood) hits the HTTP port: tcpd on a TUN device
# against the Linux kernel (tcpd-refserver over a veth pair), in one run,
# alternating, with and without the flood (issue 11, item 3).
#
#   sudo tools/flood-bench.sh [--runs N] [--secs S] [--tcpd LABEL=PATH ...]
#
# Everything happens in network namespaces this script creates (names
# h-flood-<pid>-<random>-*) and removes again on every exit path:
#   - tcpd:   one namespace per tcpd binary holds the TUN device, tcpd
#             (10.0.0.2), the kernel side (10.0.0.1, the flood's source, and
#             10.0.0.3, the latency client's), hping3 and the client;
#   - kernel: a server namespace (tcpd-refserver on 10.9.0.2: backlog 4096,
#             Linux defaults otherwise, syncookies=1) and a client namespace
#             (10.9.0.1 the flood's source, 10.9.0.3 the client's) joined by
#             a veth pair, MTU 1500.
# Packets go nowhere else: with --flood-src rand, hping3's spoofed sources
# make the answers (SYN-ACKs) go to addresses no namespace owns, and the
# namespace that gets them drops them (no forwarding). Only processes
# started here are stopped, by PID.
#
# The flood: `hping3 --flood -S -p 80 TARGET` (Debian's hping3, installed
# here with apt-get if missing): one thread sending SYNs as fast as its raw
# socket takes them, each from the next source port. The legitimate client
# binds another address than the flood, so tcpd's per-source limit
# (--max-connections-per-source) does not refuse it for the flood's sake.
#
# Reported per system and phase: the client's p50/p90/p99/max and failures
# (`tcpload latency`: one exchange at a time, --rate per second); for the
# flood phase the rate the flood was offered at and the rate the receiver
# took it (tcpd: packets it read from the TUN, and what the kernel dropped
# because the TUN's queue was full; Linux: packets veth delivered to the
# server namespace, and its SYN-cookie and overflow counters), and for tcpd
# its CPU time per packet read (ns).
#
# Needs: root, iproute2, hping3, jq, coreutils, and the binaries of
# `cargo build --release -p tcpd -p tools` (built here unless --no-build).

set -euo pipefail

usage() {
    cat <<'EOF'
usage: tools/flood-bench.sh [options]
  --runs N           rounds (each: every system idle, then flooded) [3]
  --secs S           seconds the latency client runs per phase [5]
  --rate R           exchanges per second of the latency client [200]
  --flood-src MODE   host: hping3 sends from the kernel side's address (the
                     SYN-ACKs reach the kernel, which answers RST) [host];
                     rand: --rand-source (spoofed, the classic SYN flood)
  --tcpd LABEL=PATH[,nice=N][,qlen=N][,arg=WORD...]
                     a tcpd binary to measure (repeatable: before/after
                     comparisons in one run), optionally at nice N, with the
                     TUN's txqueuelen set to N after start, and with extra
                     arguments (one word each, e.g. arg=--reactor-nice=-10)
                     [tcpd=<bin-dir>/tcpd]
  --tcpd-args ARGS   extra arguments for every tcpd (one string)
  --nice N           run tcpd at nice N (e.g. -10: a user-space stack competes
                     with the flooder for CPU, where the kernel's receive path
                     runs in softirq, charged to the sender) [0]
  --no-kernel        skip the Linux reference
  --perf             perf record each tcpd during its first flood phase and
                     print the top of the report (needs perf)
  --bin-dir DIR      where tcpd, tcpload, tcpd-refserver are
                     [$CARGO_TARGET_DIR/release or <repo>/target/release]
  --no-build         do not run cargo build first
  --keep-logs DIR    copy the logs to DIR
  -h, --help         this text
EOF
}

die() {
    echo "flood-bench.sh: $*" >&2
    exit 1
}

RUNS=3
SECS=5
RATE=200
FLOOD_SRC=host
TCPD_SPECS=()
TCPD_ARGS=""
KERNEL=1
NICE=0
PERF=0
BIN_DIR=""
BUILD=1
KEEP_LOGS=""

while [ $# -gt 0 ]; do
    case "$1" in
        --runs) RUNS="${2:?--runs needs a number}"; shift ;;
        --secs) SECS="${2:?--secs needs a number}"; shift ;;
        --rate) RATE="${2:?--rate needs a number}"; shift ;;
        --flood-src) FLOOD_SRC="${2:?--flood-src needs host or rand}"; shift ;;
        --tcpd) TCPD_SPECS+=("${2:?--tcpd needs LABEL=PATH}"); shift ;;
        --tcpd-args) TCPD_ARGS="${2?--tcpd-args needs a string}"; shift ;;
        --nice) NICE="${2:?--nice needs a number}"; shift ;;
        --no-kernel) KERNEL=0 ;;
        --perf) PERF=1 ;;
        --bin-dir) BIN_DIR="${2:?--bin-dir needs a directory}"; shift ;;
        --no-build) BUILD=0 ;;
        --keep-logs) KEEP_LOGS="${2:?--keep-logs needs a directory}"; shift ;;
        -h | --help) usage; exit 0 ;;
        *) usage >&2; die "unknown option: $1" ;;
    esac
    shift
done

is_uint() { [[ "$1" =~ ^[0-9]+$ ]]; }
is_uint "$RUNS" && [ "$RUNS" -ge 1 ] && [ "$RUNS" -le 50 ] || die "--runs must be 1..50, not $RUNS"
is_uint "$SECS" && [ "$SECS" -ge 1 ] && [ "$SECS" -le 600 ] || die "--secs must be 1..600, not $SECS"
is_uint "$RATE" && [ "$RATE" -ge 1 ] && [ "$RATE" -le 5000 ] || die "--rate must be 1..5000, not $RATE"
[[ "$NICE" =~ ^-?[0-9]+$ ]] && [ "$NICE" -ge -20 ] && [ "$NICE" -le 19 ] || die "--nice must be -20..19, not $NICE"
case "$FLOOD_SRC" in host | rand) ;; *) die "--flood-src takes host or rand, not '$FLOOD_SRC'" ;; esac

[ "$(id -u)" = 0 ] || die "needs root (it creates network namespaces, a TUN device and a veth pair); run it with sudo"
for tool in ip timeout awk jq; do
    command -v "$tool" >/dev/null || die "needs '$tool' (Debian: apt-get install iproute2 coreutils gawk jq)"
done
if ! command -v hping3 >/dev/null; then
    echo "flood-bench.sh: installing hping3 (apt-get)" >&2
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq hping3; } >/dev/null ||
        die "cannot install hping3 (apt-get install hping3)"
fi
[ "$PERF" = 0 ] || command -v perf >/dev/null || die "--perf needs perf (Debian: linux-perf)"

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ -z "$BIN_DIR" ]; then
    BIN_DIR="${CARGO_TARGET_DIR:-$REPO/target}/release"
fi
if [ "$BUILD" = 1 ] && ! command -v cargo >/dev/null; then
    echo "flood-bench.sh: cargo is not on PATH; using the binaries in $BIN_DIR as they are" >&2
    BUILD=0
fi
if [ "$BUILD" = 1 ]; then
    echo "flood-bench.sh: cargo build --release -p tcpd -p tools" >&2
    (cd "$REPO" && cargo build --release -p tcpd -p tools) || die "cargo build failed"
fi
TCPLOAD="$BIN_DIR/tcpload"
REFSERVER="$BIN_DIR/tcpd-refserver"
for b in "$TCPLOAD" "$REFSERVER"; do
    [ -x "$b" ] || die "missing $b (cargo build --release -p tools, or --bin-dir)"
done
[ "${#TCPD_SPECS[@]}" -gt 0 ] || TCPD_SPECS=("tcpd=$BIN_DIR/tcpd")
declare -A TCPD_BIN
TCPD_LABELS=()
declare -A TCPD_NICE TCPD_QLEN TCPD_XARGS
for spec in "${TCPD_SPECS[@]}"; do
    label=${spec%%=*} rest=${spec#*=}
    IFS=',' read -r -a parts <<<"$rest"
    path=${parts[0]}
    TCPD_NICE[$label]=$NICE
    TCPD_QLEN[$label]=""
    TCPD_XARGS[$label]=""
    for opt in "${parts[@]:1}"; do
        case "$opt" in
            nice=*) TCPD_NICE[$label]=${opt#nice=} ;;
            qlen=*) TCPD_QLEN[$label]=${opt#qlen=} ;;
            arg=*) TCPD_XARGS[$label]+=" ${opt#arg=}" ;;
            *) die "--tcpd $label: unknown option '$opt' (nice=N, qlen=N, arg=WORD)" ;;
        esac
    done
    [[ "${TCPD_NICE[$label]}" =~ ^-?[0-9]+$ ]] || die "--tcpd $label: nice must be a number"
    [ -z "${TCPD_QLEN[$label]}" ] || is_uint "${TCPD_QLEN[$label]}" || die "--tcpd $label: qlen must be a number"
    [[ "$label" =~ ^[A-Za-z0-9_.-]+$ ]] && [ "$label" != kernel ] || die "--tcpd LABEL must be [A-Za-z0-9_.-]+ and not 'kernel', not '$label'"
    [ -x "$path" ] || die "missing tcpd binary $path"
    [ -z "${TCPD_BIN[$label]:-}" ] || die "--tcpd label '$label' given twice"
    TCPD_BIN[$label]=$path
    TCPD_LABELS+=("$label")
done

# ---------------------------------------------------------------- cleanup

ID="$$-$(printf '%04x' $((RANDOM)))"
NS_PREFIX="h-flood-$ID"
TMP="$(mktemp -d "/tmp/h-flood-$ID.XXXXXX")"
CREATED_NS=()
STARTED_PIDS=()

stop_pid() {
    # Stops one process this script started: SIGTERM (SIGINT for hping3,
    # which prints its totals then), up to 5 s, then SIGKILL.
    local pid=$1 sig=${2:-TERM} i
    kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
    kill -"$sig" "$pid" 2>/dev/null || true
    for i in $(seq 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        echo "flood-bench.sh: PID $pid did not stop on SIG$sig; killing it" >&2
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}

forget_pid() {
    local keep=() p
    for p in "${STARTED_PIDS[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done
    STARTED_PIDS=("${keep[@]}")
}

cleanup() {
    local rc=$? pid ns
    set +e
    trap - EXIT INT TERM HUP
    # Floods first (they are what loads the machine), then the servers.
    for pid in "${STARTED_PIDS[@]}"; do
        stop_pid "$pid"
    done
    for ns in "${CREATED_NS[@]}"; do
        ip netns del "$ns" 2>/dev/null || echo "flood-bench.sh: could not remove namespace $ns" >&2
    done
    if [ -n "$KEEP_LOGS" ]; then
        mkdir -p "$KEEP_LOGS" && cp -r "$TMP"/. "$KEEP_LOGS"/ && echo "flood-bench.sh: logs in $KEEP_LOGS" >&2
    fi
    rm -rf "$TMP"
    exit "$rc"
}
trap cleanup EXIT
trap 'echo "flood-bench.sh: interrupted" >&2; exit 130' INT TERM HUP

new_ns() {
    local ns="$NS_PREFIX-$1"
    ip netns add "$ns"
    CREATED_NS+=("$ns")
    ip -n "$ns" link set lo up
    ip netns exec "$ns" sysctl -qw net.ipv4.ip_local_port_range="1024 65000" net.ipv4.tcp_tw_reuse=1
    NEW_NS=$ns
}

# `ip netns exec` execs its command, so $! is the program's own PID.
start_bg() {
    local log=$1
    shift
    "$@" >"$log" 2>&1 &
    STARTED_PIDS+=("$!")
    LAST_PID=$!
}

# ---------------------------------------------------------------- systems under test

# Per system: NS (client side), SRV_NS (where the receiver's counters are),
# DST, SRC (the client's address), FLOOD_FROM, PID (the server), IFACE.
declare -A S_NS S_SRV_NS S_DST S_SRC S_FLOOD_FROM S_PID S_IFACE
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
    ip -n "$cli" addr add 10.9.0.3/24 dev veth-c
    ip -n "$srv" link set veth-s up
    ip -n "$cli" link set veth-c up
    # Replies to spoofed sources leave by the veth (as tcpd's leave by the
    # TUN) and are dropped on the other side, which does not forward.
    ip -n "$srv" route add default via 10.9.0.1
    ip -n "$cli" route add default via 10.9.0.2
    ip netns exec "$srv" sysctl -qw net.ipv4.tcp_syncookies=1
    start_bg "$TMP/kernel.server.log" ip netns exec "$srv" "$REFSERVER" --addr 10.9.0.2 --backlog 4096
    S_NS[kernel]=$cli S_SRV_NS[kernel]=$srv S_DST[kernel]=10.9.0.2 S_SRC[kernel]=10.9.0.3
    S_FLOOD_FROM[kernel]=10.9.0.1 S_PID[kernel]=$LAST_PID S_IFACE[kernel]=veth-s
    ip netns exec "$cli" timeout 20 "$TCPLOAD" wait --addr 10.9.0.2:80 --timeout 10 >/dev/null ||
        die "tcpd-refserver did not come up: $(tail -n 3 "$TMP/kernel.server.log")"
    SUTS+=(kernel)
}

setup_tcpd() {
    local label=$1 ns
    new_ns "t-$label"
    ns=$NEW_NS
    # shellcheck disable=SC2086 # TCPD_ARGS is a list of words
    start_bg "$TMP/$label.server.log" ip netns exec "$ns" nice -n "${TCPD_NICE[$label]}" "${TCPD_BIN[$label]}" tun0 -q --mtu 1500 --no-ipv6 $TCPD_ARGS ${TCPD_XARGS[$label]}
    S_NS[$label]=$ns S_SRV_NS[$label]=$ns S_DST[$label]=10.0.0.2 S_SRC[$label]=10.0.0.3
    S_FLOOD_FROM[$label]=10.0.0.1 S_PID[$label]=$LAST_PID S_IFACE[$label]=tun0
    ip netns exec "$ns" timeout 20 "$TCPLOAD" wait --addr 10.0.0.2:80 --timeout 10 >/dev/null ||
        die "tcpd ($label) did not come up: $(tail -n 5 "$TMP/$label.server.log")"
    ip -n "$ns" addr add 10.0.0.3/24 dev tun0
    [ -z "${TCPD_QLEN[$label]}" ] || ip -n "$ns" link set tun0 txqueuelen "${TCPD_QLEN[$label]}"
    ip -n "$ns" route add default via 10.0.0.2 dev tun0 2>/dev/null || true
    SUTS+=("$label")
}

for label in "${TCPD_LABELS[@]}"; do setup_tcpd "$label"; done
[ "$KERNEL" = 0 ] || setup_kernel

# ---------------------------------------------------------------- counters

# ifstat NS IFACE FIELD: a field of /sys/class/net/IFACE/statistics in NS.
ifstat() {
    ip netns exec "$1" cat "/sys/class/net/$2/statistics/$3"
}

# cpu_ticks PID: user + system time of a process, in clock ticks.
cpu_ticks() {
    awk '{ print $14 + $15 }' "/proc/$1/stat"
}

# snapshot SUT: "tx_or_rx_packets dropped cpu_ticks" of the receiver side.
# tcpd: the TUN's tx counters (tx_packets counts what tcpd read, tx_dropped
# what the kernel dropped on a full queue). Linux: veth-s's rx counters
# (what veth delivered into the server namespace).
snapshot() {
    local s=$1 a b c
    if [ "$s" = kernel ]; then
        a=$(ifstat "${S_SRV_NS[$s]}" veth-s rx_packets)
        b=$(ifstat "${S_NS[$s]}" veth-c tx_dropped)
    else
        a=$(ifstat "${S_SRV_NS[$s]}" tun0 tx_packets)
        b=$(ifstat "${S_SRV_NS[$s]}" tun0 tx_dropped)
    fi
    c=$(cpu_ticks "${S_PID[$s]}")
    echo "$a $b $c"
}

# nstat_kernel: the server namespace's TCP counters of interest.
nstat_kernel() {
    ip netns exec "${S_SRV_NS[kernel]}" nstat -az 2>/dev/null |
        awk '$1 ~ /^(TcpExtSyncookiesSent|TcpExtSyncookiesRecv|TcpExtListenOverflows|TcpExtListenDrops|TcpExtTCPReqQFullDrop|TcpExtTCPReqQFullDoCookies|TcpPassiveOpens)$/ { printf "%s=%s ", $1, $2 }'
}

# tcpd_stats SUT: a few of tcpd's /stats counters (fetched over the TUN).
tcpd_stats() {
    local s=$1
    ip netns exec "${S_NS[$s]}" curl -s --max-time 5 "http://${S_DST[$s]}/stats" 2>/dev/null |
        jq -r '[.tcp.syn_cookies_sent, .tcp.syn_cookies_ok, .tcp.passive_opens, .daemon.rx_flood_yields, (.drops // {} | to_entries | map(select(.value > 0) | "\(.key)=\(.value)") | join(","))] | "syn_cookies_sent=\(.[0]) syn_cookies_ok=\(.[1]) passive_opens=\(.[2]) rx_flood_yields=\(.[3]) drops=\(.[4])"' 2>/dev/null || echo "stats unavailable"
}

CLK_TCK=$(getconf CLK_TCK)

# ---------------------------------------------------------------- measuring

RESULTS="$TMP/results"
: >"$RESULTS"

# latency SUT PHASE RUN: runs the client; appends "SUT PHASE RUN p50 p90 p99 max ok failed".
latency() {
    local s=$1 phase=$2 run=$3 log="$TMP/$1.$2.$3.latency.log" line
    if ! ip netns exec "${S_NS[$s]}" timeout $((SECS + 60)) "$TCPLOAD" --io-timeout 5 latency \
        --addr "${S_DST[$s]}:80" --src "${S_SRC[$s]}" --rate "$RATE" --duration "$SECS" >"$log" 2>&1; then
        echo "flood-bench.sh: $s $phase run $run: client failed: $(tail -n 2 "$log")" >&2
    fi
    line=$(grep '^RESULT test=latency' "$log" || true)
    if [ -z "$line" ]; then
        echo "$s $phase $run - - - - 0 -" >>"$RESULTS"
        return
    fi
    get() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<"$line"; }
    echo "$s $phase $run $(get p50_ms) $(get p90_ms) $(get p99_ms) $(get max_ms) $(get ok) $(get failed)" >>"$RESULTS"
    printf '  %-10s %-6s p50 %8s ms  p90 %8s ms  p99 %8s ms  max %8s ms  ok %s failed %s\n' \
        "$s" "$phase" "$(get p50_ms)" "$(get p90_ms)" "$(get p99_ms)" "$(get max_ms)" "$(get ok)" "$(get failed)"
}

# flood_phase SUT RUN: hping3 against the SUT while the client measures.
FLOODS="$TMP/floods"
: >"$FLOODS"
flood_phase() {
    local s=$1 run=$2 hlog="$TMP/$1.flood.$2.hping.log" hpid before after t0 t1 perf_pid=""
    local src_args=(-a "${S_FLOOD_FROM[$s]}")
    [ "$FLOOD_SRC" = host ] || src_args=(--rand-source)
    start_bg "$hlog" ip netns exec "${S_NS[$s]}" hping3 --flood -q -S -p 80 "${src_args[@]}" "${S_DST[$s]}"
    hpid=$LAST_PID
    sleep 1
    local k0=""
    [ "$s" != kernel ] || k0=$(nstat_kernel)
    if [ "$PERF" = 1 ] && [ "$run" = 1 ] && [ "$s" != kernel ]; then
        perf record -q -g -o "$TMP/$s.perf.data" -p "${S_PID[$s]}" -- sleep "$SECS" >/dev/null 2>&1 &
        perf_pid=$!
    fi
    before=$(snapshot "$s")
    t0=$(date +%s.%N)
    latency "$s" flood "$run"
    t1=$(date +%s.%N)
    after=$(snapshot "$s")
    local k1=""
    [ "$s" != kernel ] || k1=$(nstat_kernel)
    stop_pid "$hpid" INT
    forget_pid "$hpid"
    [ -z "$perf_pid" ] || wait "$perf_pid" 2>/dev/null || true
    # shellcheck disable=SC2206 # three numbers
    local b=($before) a=($after)
    awk -v s="$s" -v run="$run" -v dt="$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')" \
        -v pk=$((a[0] - b[0])) -v dr=$((a[1] - b[1])) -v cpu=$((a[2] - b[2])) -v tck="$CLK_TCK" 'BEGIN {
            ns = pk > 0 ? cpu / tck * 1e9 / pk : 0
            printf "%s %s %.0f %.0f %.0f %.0f\n", s, run, pk / dt, dr / dt, ns, cpu / tck / dt * 100
        }' >>"$FLOODS"
    tail -n 1 "$FLOODS" | awk '{ printf "  %-10s flood  receiver took %d packets/s, kernel dropped %d/s before it, receiver CPU %d ns per packet (%d %% of a core)\n", $1, $3, $4, $5, $6 }'
    echo "  $s       hping3: $(grep -E 'packets (transmitted|tramitted)' "$hlog" | head -n 1)"
    if [ "$s" = kernel ]; then
        echo "  kernel     before: $k0"
        echo "  kernel     after:  $k1"
    else
        echo "  $s       /stats: $(tcpd_stats "$s")"
    fi
    if [ -n "$perf_pid" ] && [ -s "$TMP/$s.perf.data" ]; then
        perf report -q -i "$TMP/$s.perf.data" --no-children --percent-limit 1.5 --stdio -g none \
            >"$TMP/$s.perf.txt" 2>/dev/null || true
        echo "  $s perf (self time, >= 1.5 %):"
        sed 's/^/      /' "$TMP/$s.perf.txt" | head -n 40
    fi
    # Let the flood's half-open connections and TIME-WAITs drain.
    sleep 2
}

echo "flood-bench.sh: ${SUTS[*]}; $RUNS rounds of $SECS s per phase, client $RATE/s, flood source $FLOOD_SRC; load $(cut -d' ' -f1-3 /proc/loadavg)"
for run in $(seq "$RUNS"); do
    echo "round $run"
    for s in "${SUTS[@]}"; do
        latency "$s" idle "$run"
        flood_phase "$s" "$run"
    done
done

# ---------------------------------------------------------------- table

median() { sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print "-"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
col() { awk -v s="$1" -v p="$2" -v c="$3" '$1 == s && $2 == p && $c != "-" { print $c }' "$RESULTS" | median; }
fcol() { awk -v s="$1" -v c="$2" '$1 == s { print $c }' "$FLOODS" | median; }
sumf() { awk -v s="$1" -v p="$2" '$1 == s && $2 == p && $9 != "-" { f += $9 } END { print f + 0 }' "$RESULTS"; }

echo
echo "medians of $RUNS rounds (load at the end $(cut -d' ' -f1-3 /proc/loadavg)):"
printf '%-12s %10s %10s %10s %10s %8s %14s %14s %10s\n' system "idle p50" "idle p99" "flood p50" "flood p99" failed "flood taken/s" "dropped/s" "ns/packet"
for s in "${SUTS[@]}"; do
    printf '%-12s %10s %10s %10s %10s %8s %14s %14s %10s\n' "$s" \
        "$(col "$s" idle 4)" "$(col "$s" idle 6)" "$(col "$s" flood 4)" "$(col "$s" flood 6)" \
        "$(($(sumf "$s" idle) + $(sumf "$s" flood)))" "$(fcol "$s" 3)" "$(fcol "$s" 4)" "$(fcol "$s" 5)"
done
echo "(ms; failed: failed exchanges over all rounds, both phases; target: flood p99 under 5 ms)"
for s in "${SUTS[@]}"; do
    echo "RESULT test=flood system=$s idle_p99_ms=$(col "$s" idle 6) flood_p50_ms=$(col "$s" flood 4) flood_p99_ms=$(col "$s" flood 6) flood_max_ms=$(col "$s" flood 7) taken_pps=$(fcol "$s" 3) dropped_pps=$(fcol "$s" 4) ns_per_packet=$(fcol "$s" 5)"
done
