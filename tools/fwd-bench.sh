#!/usr/bin/env bash
# tools/fwd-bench.sh: a sandbox namespace's network through tcpd against the
# tools users would pick instead, in one run, alternately, same workloads:
#
#   kernel       the kernel alone: a veth pair between the sandbox and the
#                outer namespace (MTU 1500), no user-space hop
#   slirp4netns  slirp4netns --configure --mtu 65520 (podman's MTU)
#                --disable-host-loopback --disable-dns for the sandbox
#   pasta        pasta --config-net (passt; MTU 65520), no port forwarding
#                (-t/-u/-T/-U none), no gateway mapping (--no-map-gw)
#   tcpd-transp  tcpd --netns SANDBOX --transparent --default-route (TUN MTU
#                1500, TSO offload)
#   tcpd-fwd     tcpd --netns SANDBOX --forward 5201=D:5201 --forward
#                7777=D:7777 (the sandbox connects to the stack, 10.0.0.2)
#
# Workloads, each from a client in the sandbox to a server in the outer
# namespace at D = 192.0.2.1: iperf3 upload and download (-R), one stream
# and -P 4, for a fixed duration; 1-byte echo round trips (tcpload rtt, p50;
# client, relay and server pinned, all threads, to CPU 0, since waking the
# other vCPU costs ~70 µs here) against tcpd-refserver's echo; connect +
# 1-byte echo + close per second from 8 clients (tcpload cps).
#
# Usage: sudo tools/fwd-bench.sh [--quick] [--runs N] [--secs S]
#            [--configs kernel,slirp4netns,pasta,tcpd-transp,tcpd-fwd]
#            [--ns-prefix P] [--bin-dir DIR] [--no-build]
#
# Nothing leaves the namespaces this script creates (names P-<pid>-*,
# removed on every exit path): everything runs in an outer namespace, whose
# only link is a veth pair to a "void" namespace that forwards nothing (the
# outer's default route points there, as slirp4netns and pasta want one);
# the sandbox is made anew for every configuration and run. Only processes
# started here are stopped, by PID. The tcpd rows need `--transparent` /
# `--forward` (issue 9's forwarding): without them in `tcpd --help` they
# are skipped with a note.
#
# Each figure is measured --runs times (configurations alternate within a
# run); the table shows medians and the ratios of the tcpd rows against
# pasta, slirp4netns and the kernel (throughput and cps: higher is better;
# round trip: lower is better).
#
# Needs: root, iproute2, util-linux (nsenter, taskset), iperf3, slirp4netns,
# passt (pasta), coreutils, awk, and `cargo build --release -p tcpd -p tools`
# (built here unless --no-build).

set -euo pipefail

usage() {
    sed -n '2,44p' "$0" | sed 's/^# \{0,1\}//'
}

die() {
    echo "fwd-bench.sh: $*" >&2
    exit 1
}

QUICK=0
RUNS=""
SECS=""
CONFIGS="kernel,slirp4netns,pasta,tcpd-transp,tcpd-fwd"
PREFIX="tcpd-fwdbench"
BIN_DIR=""
BUILD=1
while [ $# -gt 0 ]; do
    case "$1" in
    --quick) QUICK=1 ;;
    --runs) RUNS="${2:?--runs needs N}"; shift ;;
    --secs) SECS="${2:?--secs needs S}"; shift ;;
    --configs) CONFIGS="${2:?--configs needs a list}"; shift ;;
    --ns-prefix) PREFIX="${2:?--ns-prefix needs a prefix}"; shift ;;
    --bin-dir) BIN_DIR="${2:?--bin-dir needs DIR}"; shift ;;
    --no-build) BUILD=0 ;;
    -h | --help) usage; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
    esac
    shift
done
if [ "$QUICK" = 1 ]; then
    RUNS="${RUNS:-1}"; SECS="${SECS:-2}"; RTT_COUNT=5000; CPS_SECS=1
else
    RUNS="${RUNS:-3}"; SECS="${SECS:-5}"; RTT_COUNT=20000; CPS_SECS=3
fi
case "$RUNS" in '' | *[!0-9]* | 0) die "--runs must be a positive number" ;; esac
case "$SECS" in '' | *[!0-9]* | 0) die "--secs must be a positive number of seconds" ;; esac

[ "$(id -u)" = 0 ] || die "needs root (network namespaces, TUN devices)"
for tool in ip nsenter taskset iperf3 awk sort timeout; do
    command -v "$tool" >/dev/null || die "$tool not found"
done

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
if [ -z "$BIN_DIR" ]; then
    BIN_DIR="${CARGO_TARGET_DIR:-$ROOT/target}/release"
fi
if [ "$BUILD" = 1 ]; then
    (cd "$ROOT" && cargo build --release -p tcpd -p tools) >&2
fi
TCPD="$BIN_DIR/tcpd"
TCPLOAD="$BIN_DIR/tcpload"
REFSERVER="$BIN_DIR/tcpd-refserver"
for b in "$TCPD" "$TCPLOAD" "$REFSERVER"; do
    [ -x "$b" ] || die "$b missing (cargo build --release -p tcpd -p tools)"
done

NCPU="$(getconf _NPROCESSORS_ONLN)"
TAG="$PREFIX-$$"
OUTER="$TAG-outer"
VOID="$TAG-void"
SBX="$TAG-sbx"
DEST=192.0.2.1
TMP="$(mktemp -d)"
PIDS=()
OURS=()

cleanup() {
    set +e
    for p in "${PIDS[@]}"; do
        kill "$p" 2>/dev/null
    done
    for p in "${PIDS[@]}"; do
        wait "$p" 2>/dev/null
    done
    for n in "${OURS[@]}"; do
        ip netns del "$n" 2>/dev/null
    done
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A command in the outer namespace. nsenter changes only the network
# namespace and execs its command.
in_outer() { nsenter --net="/run/netns/$OUTER" -- "$@"; }
# The same in the background: BG_PID is the command's own PID (the `&`
# is inside the function, so bash forks once and nsenter execs in place;
# `in_outer X &` would give the PID of a subshell, and killing that would
# leave X running).
bg_outer() {
    nsenter --net="/run/netns/$OUTER" -- "$@" &
    BG_PID=$!
    PIDS+=("$BG_PID")
}

mkns() {
    ip netns add "$1"
    OURS+=("$1")
    ip -n "$1" link set lo up
    # Connections per second open tens of thousands of connections from
    # each side of a relay; without reuse of TIME-WAIT ports (the default
    # reuses them for 127.0.0.0/8 only) the ports run out within a run and
    # the figure measures that, and what one configuration left behind.
    ip netns exec "$1" sysctl -qw net.ipv4.tcp_tw_reuse=1 \
        net.ipv4.ip_local_port_range="1024 65535"
}

delns() {
    ip netns del "$1" 2>/dev/null || true
    local keep=()
    for n in "${OURS[@]}"; do [ "$n" = "$1" ] || keep+=("$n"); done
    OURS=("${keep[@]}")
}

# Stops one process we started (by PID) and forgets it.
stop_pid() {
    kill "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
    local keep=()
    for p in "${PIDS[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done
    PIDS=("${keep[@]}")
}

# Waits up to 10 s for `cmd` to succeed.
wait_for() {
    local i
    for i in $(seq 100); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.1
    done
    return 1
}

has_default() { ip -n "$SBX" route show default | grep -q .; }

# --- the outer namespace and its servers ------------------------------------
mkns "$OUTER"
mkns "$VOID"
ip -n "$OUTER" link add up0 type veth peer name up1 netns "$VOID"
ip -n "$OUTER" addr add "$DEST/24" dev up0
ip -n "$OUTER" link set up0 up
ip -n "$VOID" addr add 192.0.2.254/24 dev up1
ip -n "$VOID" link set up1 up
ip -n "$OUTER" route add default via 192.0.2.254 dev up0
# The void answers for 192.0.2.254 only and forwards nothing.
ip netns exec "$VOID" sysctl -qw net.ipv4.ip_forward=0

bg_outer iperf3 -s -p 5201 >"$TMP/iperf3-server.log" 2>&1
bg_outer "$REFSERVER" --addr "$DEST" --echo 7777 --discard 0 --http 0 >"$TMP/refserver.log" 2>&1
REF_PID=$BG_PID
wait_for in_outer "$TCPLOAD" wait --addr "$DEST:7777" --timeout 1 ||
    die "tcpd-refserver did not come up: $(tail -n 3 "$TMP/refserver.log")"
wait_for in_outer sh -c "ss -ltn | grep -q ':5201 '" || die "iperf3 -s did not come up"

HELP="$("$TCPD" --help)"
has_flag() { grep -q -- "$1" <<<"$HELP"; }

declare -A SKIP=()
IFS=, read -r -a CFGS <<<"$CONFIGS"
for c in "${CFGS[@]}"; do
    case "$c" in
    kernel) ;;
    slirp4netns) command -v slirp4netns >/dev/null || SKIP[$c]="slirp4netns not installed (apt-get install slirp4netns)" ;;
    pasta) command -v pasta >/dev/null || SKIP[$c]="pasta not installed (apt-get install passt)" ;;
    tcpd-transp) has_flag '--transparent' || SKIP[$c]="this tcpd has no --transparent (issue 9's forwarding not merged)" ;;
    tcpd-fwd) has_flag '--forward' || SKIP[$c]="this tcpd has no --forward (issue 9's forwarding not merged)" ;;
    *) die "unknown configuration $c (kernel, slirp4netns, pasta, tcpd-transp, tcpd-fwd)" ;;
    esac
done

# --- one configuration: set up the sandbox's network ------------------------
RELAY_PID=""
TARGET=""
setup() {
    local c="$1"
    mkns "$SBX"
    RELAY_PID=""
    TARGET="$DEST"
    case "$c" in
    kernel)
        ip -n "$OUTER" link add k0 type veth peer name k1 netns "$SBX"
        ip -n "$OUTER" addr add 10.77.0.1/24 dev k0
        ip -n "$OUTER" link set k0 up
        ip -n "$SBX" addr add 10.77.0.2/24 dev k1
        ip -n "$SBX" link set k1 up
        ip -n "$SBX" route add default via 10.77.0.1
        ;;
    slirp4netns)
        bg_outer slirp4netns --configure --mtu 65520 --disable-host-loopback --disable-dns \
            --netns-type=path "/run/netns/$SBX" tap0 >"$TMP/relay.log" 2>&1
        RELAY_PID=$BG_PID
        ;;
    pasta)
        # --runas 0: as root pasta would switch to nobody, who may not
        # enter the sandbox. No ports forwarded either way, no gateway
        # mapped to the outer's loopback; addresses as on up0.
        bg_outer pasta -f -q --runas 0 --config-net --netns "/run/netns/$SBX" \
            -t none -u none -T none -U none --no-map-gw \
            -a 192.0.2.2 -n 24 -g 192.0.2.254 -i up0 >"$TMP/relay.log" 2>&1
        RELAY_PID=$BG_PID
        ;;
    tcpd-transp)
        bg_outer "$TCPD" tun0 --netns "$SBX" --transparent --default-route --seed 1 -q \
            >"$TMP/relay.log" 2>&1
        RELAY_PID=$BG_PID
        ;;
    tcpd-fwd)
        bg_outer "$TCPD" tun0 --netns "$SBX" --echo 0 --discard 0 --http 0 --seed 1 -q \
            --forward "5201=$DEST:5201" --forward "7777=$DEST:7777" >"$TMP/relay.log" 2>&1
        RELAY_PID=$BG_PID
        TARGET=10.0.0.2
        ;;
    esac
    case "$c" in
    tcpd-fwd) wait_for sh -c "ip -n '$SBX' addr show tun0 | grep -q 10.0.0.1" ;;
    *) wait_for has_default ;;
    esac || die "$c: the sandbox's network did not come up: $(tail -n 3 "$TMP/relay.log" 2>/dev/null)"
    sleep 0.2
}

teardown() {
    [ -n "$RELAY_PID" ] && stop_pid "$RELAY_PID"
    RELAY_PID=""
    ip -n "$OUTER" link del k0 2>/dev/null || true
    delns "$SBX"
}

# --- the workloads -----------------------------------------------------------
# iperf3's receiver figure (the [SUM] line with -P), in Gbit/s.
iperf() {
    local out try
    # The server may still be closing the previous test ("the server is
    # busy"): try again a moment later, up to three times.
    for try in 1 2 3; do
        out="$(timeout $((SECS + 20)) nsenter --net="/run/netns/$SBX" -- iperf3 -c "$TARGET" \
            -p 5201 -t "$SECS" -f m "$@" 2>&1)" && break
        grep -q "server is busy" <<<"$out" || break
        sleep 1
    done
    grep -q receiver <<<"$out" || { echo "iperf3 $*: $(tail -n 2 <<<"$out")" >&2; echo NA; return; }
    awk '/receiver/ { v = $(NF - 2) } END { if (v == "") print "NA"; else printf "%.2f\n", v / 1000 }' <<<"$out"
}

pin() { [ -n "$1" ] && taskset -a -p -c "$2" "$1" >/dev/null 2>&1 || true; }

rtt() {
    local out
    pin "$RELAY_PID" 0
    pin "$REF_PID" 0
    out="$(timeout 120 nsenter --net="/run/netns/$SBX" -- taskset -c 0 "$TCPLOAD" rtt \
        --addr "$TARGET:7777" --count "$RTT_COUNT" 2>&1)" || out=""
    pin "$RELAY_PID" "0-$((NCPU - 1))"
    pin "$REF_PID" "0-$((NCPU - 1))"
    sed -n 's/^RESULT test=rtt .*p50_us=\([0-9.]*\).*/\1/p' <<<"$out" | head -n 1 | grep . || echo NA
}

cps() {
    local out
    out="$(timeout 120 nsenter --net="/run/netns/$SBX" -- "$TCPLOAD" cps --addr "$TARGET:7777" \
        --conns 8 --duration "$CPS_SECS" 2>&1)" || out=""
    sed -n 's/^RESULT test=cps .* cps=\([0-9]*\).*/\1/p' <<<"$out" | head -n 1 | grep . || echo NA
}

FIGS=(up1 up4 down1 down4 rtt cps)
declare -A FIG_NAME=(
    [up1]="iperf3 upload, 1 stream (Gbit/s)"
    [up4]="iperf3 upload, -P 4 (Gbit/s)"
    [down1]="iperf3 download, 1 stream (Gbit/s)"
    [down4]="iperf3 download, -P 4 (Gbit/s)"
    [rtt]="1-byte echo round trip p50, one CPU (µs)"
    [cps]="connect+echo+close /s, 8 clients"
)

RESULTS="$TMP/results"
: >"$RESULTS"
echo "fwd-bench: $RUNS run(s), iperf3 ${SECS} s, $RTT_COUNT round trips, cps ${CPS_SECS} s; load average $(cut -d' ' -f1-3 /proc/loadavg)" >&2
for run in $(seq "$RUNS"); do
    for c in "${CFGS[@]}"; do
        [ -n "${SKIP[$c]:-}" ] && continue
        setup "$c"
        for f in "${FIGS[@]}"; do
            case "$f" in
            up1) v="$(iperf)" ;;
            up4) v="$(iperf -P 4)" ;;
            down1) v="$(iperf -R)" ;;
            down4) v="$(iperf -R -P 4)" ;;
            rtt) v="$(rtt)" ;;
            cps) v="$(cps)" ;;
            esac
            echo "$c $f $v" >>"$RESULTS"
            echo "  run $run $c $f: $v" >&2
        done
        teardown
    done
done

# --- the table ---------------------------------------------------------------
median() {
    awk -v c="$1" -v f="$2" '$1 == c && $2 == f && $3 != "NA" { print $3 }' "$RESULTS" |
        sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print "NA"; else if (NR % 2) print v[(NR + 1) / 2]; else printf "%.2f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
ratio() {
    awk -v a="$1" -v b="$2" 'BEGIN { if (a == "NA" || b == "NA" || b == 0) print "-"; else printf "%.2f\n", a / b }'
}

declare -A MED=()
for c in "${CFGS[@]}"; do
    for f in "${FIGS[@]}"; do
        MED[$c.$f]="$(median "$c" "$f")"
    done
done

echo
echo "Medians of $RUNS run(s) ($(date -u +%Y-%m-%dT%H:%MZ), $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')):"
printf '| %-42s |' "figure"
for c in "${CFGS[@]}"; do printf ' %-11s |' "$c"; done
echo
printf '|%s|' "--------------------------------------------"
for c in "${CFGS[@]}"; do printf '%s|' "-------------"; done
echo
for f in "${FIGS[@]}"; do
    printf '| %-42s |' "${FIG_NAME[$f]}"
    for c in "${CFGS[@]}"; do
        if [ -n "${SKIP[$c]:-}" ]; then printf ' %-11s |' "skipped"; else printf ' %-11s |' "${MED[$c.$f]}"; fi
    done
    echo
done

for t in tcpd-transp tcpd-fwd; do
    case ",$CONFIGS," in *",$t,"*) ;; *) continue ;; esac
    [ -n "${SKIP[$t]:-}" ] && continue
    echo
    echo "$t / other, same run (throughput, cps: > 1 is faster; round trip: < 1 is faster):"
    printf '| %-42s | %-8s | %-11s | %-8s |\n' "figure" "/ pasta" "/ slirp4netns" "/ kernel"
    printf '|%s|%s|%s|%s|\n' "--------------------------------------------" "----------" "---------------" "----------"
    for f in "${FIGS[@]}"; do
        printf '| %-42s | %-8s | %-13s | %-8s |\n' "${FIG_NAME[$f]}" \
            "$(ratio "${MED[$t.$f]}" "${MED[pasta.$f]:-NA}")" \
            "$(ratio "${MED[$t.$f]}" "${MED[slirp4netns.$f]:-NA}")" \
            "$(ratio "${MED[$t.$f]}" "${MED[kernel.$f]:-NA}")"
    done
done
for o in pasta slirp4netns; do
    case ",$CONFIGS," in *",$o,"*) ;; *) continue ;; esac
    [ -n "${SKIP[$o]:-}" ] && continue
    case ",$CONFIGS," in *",kernel,"*) ;; *) continue ;; esac
    echo
    echo "$o / kernel: $(for f in "${FIGS[@]}"; do printf '%s %s  ' "$f" "$(ratio "${MED[$o.$f]}" "${MED[kernel.$f]}")"; done)"
done
for c in "${CFGS[@]}"; do
    [ -n "${SKIP[$c]:-}" ] && echo && echo "$c: skipped: ${SKIP[$c]}"
done
exit 0
