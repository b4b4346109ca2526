#!/usr/bin/env bash
# tools/netem-bench.sh: tcpd and the Linux kernel's TCP over the same
# impaired link (tcpd-netem), in one run, alternately, with the same seeds.
#
#   sudo tools/netem-bench.sh [--cells LIST] [--runs N] [--bytes N]
#
# Topology (namespaces h-netem-<pid>-{cli,net,srv}, created here and
# removed on every exit path; only PIDs started here are stopped):
#
#   cli: c0 10.9.0.1 ==veth== n0 [net: tcpd-netem n0<->n1] n1 ==veth== s0 10.9.0.2 :srv
#   srv: tcpd on tun0 (10.0.0.2, routed via 10.9.0.2)  and  tcpd-refserver on 10.9.0.2
#
# Both servers sit behind the same relay and the same kernel hop; a fresh
# tcpd-netem with the same seed carries each measurement, so both stacks
# meet the same loss pattern. Each cell times --bytes downloads (GET
# /bytes/N) and uploads (to discard) with tcpload, median of --runs,
# alternating tcpd and Linux; retransmissions and RTOs come from tcpd's
# /stats and from nstat in the server namespace (for uploads the sender is
# the kernel client in both columns; its counters are not shown).
#
# Cells (name: netem flags, applied in each direction):
#   l{0,1,3,10}-r{0,10}-d{1,5,25}: loss %, reorder %, one-way delay ms
#   bottleneck: 100 Mbit/s, 50-packet queue, 20 ms;  lfn: 50 ms, no loss
# --cells takes a comma-separated list of names or shell globs
# [default: the headline cell l3-r10-d5]; "all" is the whole matrix.

set -euo pipefail

usage() {
    sed -n '2,26p' "$0" | sed 's/^# \{0,1\}//'
    cat <<'EOF2'
options:
  --cells LIST    cells to run (names or globs, comma-separated; "all")  [l3-r10-d5]
  --runs N        runs per cell and direction (median)                   [3]
  --bytes N       transfer size                                          [50M]
  --dirs LIST     download,upload                                        [download,upload]
  --seed N        tcpd-netem seed                                        [1]
  --bin-dir DIR   where tcpd, tcpload, tcpd-refserver, tcpd-netem are    [<repo>/target/release]
  --tcpd PATH     the tcpd binary (e.g. an older build to compare)       [BIN_DIR/tcpd]
  --svg FILE      also draw the table as an SVG bar chart of the ratios
  -h, --help      this text
EOF2
}

die() { echo "netem-bench.sh: $*" >&2; exit 1; }

CELLS="l3-r10-d5"; RUNS=3; BYTES=50M; DIRS="download,upload"; SEED=1; BIN_DIR=""; TCPD=""; SVG=""
while [ $# -gt 0 ]; do
    case "$1" in
        --cells) CELLS="${2:?--cells needs a list}"; shift ;;
        --runs) RUNS="${2:?--runs needs a number}"; shift ;;
        --bytes) BYTES="${2:?--bytes needs a size}"; shift ;;
        --dirs) DIRS="${2:?--dirs needs a list}"; shift ;;
        --seed) SEED="${2:?--seed needs a number}"; shift ;;
        --bin-dir) BIN_DIR="${2:?--bin-dir needs a directory}"; shift ;;
        --tcpd) TCPD="${2:?--tcpd needs a path}"; shift ;;
        --svg) SVG="${2:?--svg needs a file}"; shift ;;
        -h | --help) usage; exit 0 ;;
        *) usage >&2; die "unknown option: $1" ;;
    esac
    shift
done
[[ "$RUNS" =~ ^[1-9][0-9]*$ ]] || die "--runs must be a positive number"
[ "$(id -u)" = 0 ] || die "needs root (network namespaces, TUN, veth); run it with sudo"

REPO="$(cd "$(dirname "$0")/.." && pwd)"
BIN_DIR="${BIN_DIR:-$REPO/target/release}"
TCPD="${TCPD:-$BIN_DIR/tcpd}"
for b in "$TCPD" "$BIN_DIR/tcpload" "$BIN_DIR/tcpd-refserver" "$BIN_DIR/tcpd-netem"; do
    [ -x "$b" ] || die "missing $b (cargo build --release -p tcpd -p tools)"
done
TCPLOAD="$BIN_DIR/tcpload"

# The matrix.
declare -A CELL
for l in 0 1 3 10; do for r in 0 10; do for d in 1 5 25; do
    CELL[l$l-r$r-d$d]="--loss $l --reorder $r --delay $d"
done; done; done
CELL[bottleneck]="--rate 100 --queue 50 --delay 20"
CELL[lfn]="--delay 50"
ALL_CELLS="$(printf '%s\n' "${!CELL[@]}" | sort -V | tr '\n' ' ')"
SELECTED=()
IFS=, read -ra pats <<<"$CELLS"
for c in $ALL_CELLS; do
    for p in "${pats[@]}"; do
        # shellcheck disable=SC2053
        if [ "$p" = all ] || [[ "$c" == $p ]]; then SELECTED+=("$c"); break; fi
    done
done
[ ${#SELECTED[@]} -gt 0 ] || die "no cell matches --cells $CELLS (cells: $ALL_CELLS)"

P="h-netem-$$-$RANDOM"
CLI="$P-cli" NET="$P-net" SRV="$P-srv"
TMP="$(mktemp -d)"
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    for ns in "$CLI" "$NET" "$SRV"; do ip netns del "$ns" 2>/dev/null || true; done
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

for ns in "$CLI" "$NET" "$SRV"; do ip netns add "$ns"; ip -n "$ns" link set lo up; done
ip -n "$CLI" link add c0 type veth peer name n0 netns "$NET"
ip -n "$SRV" link add s0 type veth peer name n1 netns "$NET"
ip -n "$CLI" addr add 10.9.0.1/24 dev c0
ip -n "$SRV" addr add 10.9.0.2/24 dev s0
for i in n0 n1; do ip -n "$NET" link set "$i" promisc on up; done
ip -n "$CLI" link set c0 up
ip -n "$SRV" link set s0 up
ip -n "$CLI" route add 10.0.0.0/24 via 10.9.0.2
ip netns exec "$SRV" sysctl -qw net.ipv4.ip_forward=1

ip netns exec "$SRV" "$TCPD" tun0 -q --mtu 1500 --no-ipv6 --addr 10.0.0.2 --host-addr 10.0.0.1/24 \
    >"$TMP/tcpd.log" 2>&1 &
PIDS+=($!)
ip netns exec "$SRV" "$BIN_DIR/tcpd-refserver" --addr 10.9.0.2 >"$TMP/ref.log" 2>&1 &
PIDS+=($!)

NETEM_PID=""
start_netem() { # flags...
    ip netns exec "$NET" "$BIN_DIR/tcpd-netem" --a n0 --b n1 --seed "$SEED" "$@" >"$TMP/netem.log" 2>&1 &
    NETEM_PID=$!
    PIDS+=("$NETEM_PID")
    sleep 0.2
    kill -0 "$NETEM_PID" 2>/dev/null || die "tcpd-netem did not start: $(tail -n 2 "$TMP/netem.log")"
}
stop_netem() {
    kill -TERM "$NETEM_PID" 2>/dev/null || true
    wait "$NETEM_PID" 2>/dev/null || true
}

start_netem
ip netns exec "$CLI" timeout 20 "$TCPLOAD" wait --addr 10.0.0.2:7 --timeout 10 >/dev/null ||
    die "tcpd not reachable through the relay: $(tail -n 3 "$TMP/tcpd.log")"
ip netns exec "$CLI" timeout 20 "$TCPLOAD" wait --addr 10.9.0.2:7 --timeout 10 >/dev/null ||
    die "tcpd-refserver not reachable through the relay: $(tail -n 3 "$TMP/ref.log")"
stop_netem

tcpd_stat() { # name: a counter from tcpd's /stats (from the server namespace, not over the relay)
    { ip netns exec "$SRV" curl -s --max-time 30 http://10.0.0.2/stats || true; } | tr ',{}' '\n\n\n' |
        sed -n "s/^ *\"$1\": *\([0-9]*\).*/\1/p" | head -n1
}
linux_stat() { # name: an absolute nstat counter in the server namespace
    { ip netns exec "$SRV" nstat -asz "$1" 2>/dev/null || true; } | awk -v n="$1" '$1 == n { print $2 }' | head -n1
}
median() { sort -g | awk '{ a[NR] = $1 } END { if (NR == 0) print "nan"; else if (NR % 2) print a[(NR + 1) / 2]; else printf "%.3f\n", (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }

# measure SUT DIR FLAGS: one timed transfer; prints "seconds retrans rtos".
measure() {
    local sut=$1 dir=$2 flags=$3 ip port r0 t0 r1 t1 s e sub
    if [ "$sut" = tcpd ]; then ip=10.0.0.2; else ip=10.9.0.2; fi
    if [ "$dir" = download ]; then port=80 sub=download; else port=9 sub=upload; fi
    if [ "$sut" = tcpd ]; then r0=$(tcpd_stat retransmits); t0=$(tcpd_stat rto_timeouts)
    else r0=$(linux_stat TcpRetransSegs); t0=$(linux_stat TcpExtTCPTimeouts); fi
    # shellcheck disable=SC2086
    start_netem $flags
    s=$(date +%s.%N)
    if ! ip netns exec "$CLI" timeout 900 "$TCPLOAD" --io-timeout 60 "$sub" --addr "$ip:$port" --bytes "$BYTES" \
        >"$TMP/load.log" 2>&1; then
        e=nan
    else
        e=$(echo "$(date +%s.%N) - $s" | bc)
    fi
    stop_netem
    cat "$TMP/netem.log" >>"$TMP/netem-all.log"
    if [ "$sut" = tcpd ]; then r1=$(tcpd_stat retransmits); t1=$(tcpd_stat rto_timeouts)
    else r1=$(linux_stat TcpRetransSegs); t1=$(linux_stat TcpExtTCPTimeouts); fi
    echo "$e $(( ${r1:-0} - ${r0:-0} )) $(( ${t1:-0} - ${t0:-0} ))"
}

ROWS=()
echo "| cell | dir | tcpd s | Linux s | ratio | tcpd retrans | tcpd RTOs | Linux retrans | Linux RTOs |"
echo "|---|---|---|---|---|---|---|---|---|"
IFS=, read -ra dirs <<<"$DIRS"
for cell in "${SELECTED[@]}"; do
    for dir in "${dirs[@]}"; do
        : >"$TMP/tcpd.m"; : >"$TMP/linux.m"
        for ((i = 0; i < RUNS; i++)); do
            measure tcpd "$dir" "${CELL[$cell]}" >>"$TMP/tcpd.m"
            measure linux "$dir" "${CELL[$cell]}" >>"$TMP/linux.m"
        done
        ts=$(awk '{print $1}' "$TMP/tcpd.m" | median); ls=$(awk '{print $1}' "$TMP/linux.m" | median)
        tr=$(awk '{print $2}' "$TMP/tcpd.m" | median); tt=$(awk '{print $3}' "$TMP/tcpd.m" | median)
        lr=$(awk '{print $2}' "$TMP/linux.m" | median); lt=$(awk '{print $3}' "$TMP/linux.m" | median)
        ratio=$(awk -v a="$ts" -v b="$ls" 'BEGIN { if (a == "nan" || b == "nan" || b == 0) print "nan"; else printf "%.2f", a / b }')
        printf '| %s | %s | %.2f | %.2f | %s | %s | %s | %s | %s |\n' "$cell" "$dir" "$ts" "$ls" "$ratio" "$tr" "$tt" "$lr" "$lt"
        ROWS+=("$cell $dir $ratio")
    done
done
echo
echo "tcpd totals over the run: ACKs dropped by PAWS $(tcpd_stat paws), disordered ACKs taken $(tcpd_stat paws_disordered_acks), D-SACKs $(tcpd_stat dsacks_in), undone recoveries $(tcpd_stat spurious_recoveries), fast recoveries $(tcpd_stat fast_retransmits), RTOs $(tcpd_stat rto_timeouts), tail loss probes $(tcpd_stat tlp_probes) (repaired $(tcpd_stat tlp_repaired)), RACK markings $(tcpd_stat rack_marked_lost), reordering timeouts $(tcpd_stat rack_reo_timeouts), spurious RTOs undone by F-RTO $(tcpd_stat frto_spurious_rtos)"
linux_totals=""
for c in TcpExtTCPSackRecovery TcpExtTCPFullUndo TcpExtTCPPartialUndo TcpExtTCPDSACKUndo TcpExtTCPDSACKRecv \
    TcpExtTCPSACKReorder TcpExtTCPTSReorder TcpExtPAWSEstab TcpExtTCPLossProbes TcpExtTCPLossProbeRecovery TcpExtTCPSpuriousRTOs; do
    linux_totals+=" ${c#TcpExt} $(linux_stat "$c")"
done
echo "tcpd fast recoveries undone by the timestamp echo (Eifel) $(tcpd_stat eifel_undos); Linux server totals:$linux_totals"
echo "(medians of $RUNS runs, $BYTES each, netem seed $SEED; retrans/RTOs are the server's: tcpd /stats, Linux nstat)"

if [ -n "$SVG" ]; then
    # Bars of tcpd/Linux time ratios, a line at 1.0 and at the 1.2 target.
    n=${#ROWS[@]} w=760 bh=22
    h=$(( n * bh + 60 ))
    {
        echo "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"$w\" height=\"$h\" font-family=\"sans-serif\" font-size=\"12\">"
        echo "<text x=\"10\" y=\"18\">tcpd time / Linux time over tcpd-netem (lower is better)</text>"
        i=0
        for row in "${ROWS[@]}"; do
            read -r cell dir ratio <<<"$row"
            y=$(( 30 + i * bh ))
            bw=$(awk -v r="$ratio" 'BEGIN { if (r == "nan") r = 0; v = r * 150; if (v > 500) v = 500; printf "%d", v }')
            color=$(awk -v r="$ratio" 'BEGIN { print (r != "nan" && r <= 1.2) ? "#4a8" : "#c54" }')
            echo "<text x=\"10\" y=\"$(( y + 15 ))\">$cell $dir</text>"
            echo "<rect x=\"200\" y=\"$(( y + 3 ))\" width=\"$bw\" height=\"$(( bh - 6 ))\" fill=\"$color\"/>"
            echo "<text x=\"$(( 205 + bw ))\" y=\"$(( y + 15 ))\">$ratio</text>"
            i=$(( i + 1 ))
        done
        echo "<line x1=\"350\" y1=\"26\" x2=\"350\" y2=\"$(( h - 20 ))\" stroke=\"#000\" stroke-dasharray=\"4\"/>"
        echo "<line x1=\"380\" y1=\"26\" x2=\"380\" y2=\"$(( h - 20 ))\" stroke=\"#c54\" stroke-dasharray=\"2\"/>"
        echo "<text x=\"340\" y=\"$(( h - 5 ))\">1.0</text><text x=\"375\" y=\"$(( h - 5 ))\">1.2</text>"
        echo "</svg>"
    } >"$SVG"
    echo "chart: $SVG"
fi
