#!/usr/bin/env bash
# ip-compare.sh: the IP layer of tcpd and of Linux, side by side (issue 10, item 5).
#
# The same crafted packets (tools/ip-compare.py: path MTU messages, forged
# ICMP, fragments, overlaps, tiny fragments, atomic fragments, IPv6
# extension headers and unknown options, reassembly timeouts) go once to
# the Linux kernel (tcpd-refserver's HTTP on the kernel's TCP, over a veth)
# and once to tcpd (over its TUN, --no-offload so the TUN carries wire-sized
# segments), from addresses nobody owns (10.0.0.100.., fd00::64..), so no
# kernel of ours answers the answers (each case from its own address). Both sides are captured with tcpdump;
# then the answers are printed side by side, case by case.
#
#   sudo tools/ip-compare.sh [--timeouts] [--cases a,b] [--out DIR] [--bin-dir DIR]
#
# --timeouts adds the reassembly timeout cases (32 s and 62 s more).
# Everything runs in namespaces made here (h-pmtu-cmp-*), removed on exit.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BIN_DIR="$ROOT/target/release"
OUT=""
PROBE_ARGS=()
while [ $# -gt 0 ]; do
    case "$1" in
        --timeouts) PROBE_ARGS+=(--timeouts) ;;
        --cases) PROBE_ARGS+=(--cases "$2"); shift ;;
        --out) OUT="$2"; shift ;;
        --bin-dir) BIN_DIR="$2"; shift ;;
        -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
        *) echo "ip-compare.sh: unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done
[ "$(id -u)" = 0 ] || { echo "ip-compare.sh: needs root (network namespaces)" >&2; exit 1; }
for t in ip tcpdump python3; do
    command -v "$t" >/dev/null || { echo "ip-compare.sh: $t missing" >&2; exit 1; }
done
for b in tcpd tcpd-refserver; do
    [ -x "$BIN_DIR/$b" ] || { echo "ip-compare.sh: $BIN_DIR/$b missing (cargo build --release -p tools && cargo build --release)" >&2; exit 1; }
done
OUT="${OUT:-$(mktemp -d /tmp/h-pmtu-cmp.XXXXXX)}"
mkdir -p "$OUT"

TAG="h-pmtu-cmp-$$"
P="$TAG-p"   # prober towards Linux
K="$TAG-k"   # Linux server
T="$TAG-t"   # tcpd and its prober
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    for ns in "$P" "$K" "$T"; do ip netns del "$ns" 2>/dev/null || true; done
}
trap cleanup EXIT INT TERM

for ns in "$P" "$K" "$T"; do
    ip netns add "$ns"
    ip -n "$ns" link set lo up
done

# Linux: K (10.0.0.2, fd00::2) <-veth-> P. One segment per packet
# (gso_max_segs 1), so the prober sees what the wire would.
ip -n "$K" link add k0 gso_max_segs 1 type veth peer name p0 netns "$P"
ip -n "$K" addr add 10.0.0.2/24 dev k0
ip -n "$K" addr add fd00::2/64 dev k0 nodad
ip -n "$K" link set k0 up
ip -n "$P" addr add 10.0.0.1/24 dev p0
ip -n "$P" addr add fd00::1/64 dev p0 nodad
ip -n "$P" link set p0 up
PMAC="$(ip netns exec "$P" cat /sys/class/net/p0/address)"
KMAC="$(ip netns exec "$K" cat /sys/class/net/k0/address)"
# The prober's sources, one per case: 10.0.0.100.., fd00::64..
for i in $(seq 100 130); do
    ip -n "$K" neigh add "10.0.0.$i" lladdr "$PMAC" dev k0 nud permanent
    ip -n "$K" neigh add "fd00::$(printf %x "$i")" lladdr "$PMAC" dev k0 nud permanent
done
# No ICMP rate limit in the way of a case that follows another.
ip netns exec "$K" sysctl -qw net.ipv4.icmp_ratelimit=0 net.ipv6.icmp.ratelimit=0
ip netns exec "$K" "$BIN_DIR/tcpd-refserver" --addr :: --threads 1 >"$OUT/refserver.log" 2>&1 &
PIDS+=($!)

# tcpd: T holds the TUN and the prober.
ip netns exec "$T" "$BIN_DIR/tcpd" --seed 5 --no-offload --workers 0 -q tcmp0 >"$OUT/tcpd.log" 2>&1 &
PIDS+=($!)

up=0
for _ in $(seq 100); do
    if ip netns exec "$T" bash -c 'exec 3<>/dev/tcp/10.0.0.2/80' 2>/dev/null \
        && ip netns exec "$K" bash -c 'exec 3<>/dev/tcp/10.0.0.2/80' 2>/dev/null; then
        up=1; break
    fi
    sleep 0.1
done
[ "$up" = 1 ] || { echo "ip-compare.sh: servers did not come up:"; tail -n 5 "$OUT"/*.log; exit 1; }

ip netns exec "$P" tcpdump -q -n -U -i p0 -w "$OUT/linux.pcap" 2>/dev/null &
PIDS+=($!)
ip netns exec "$T" tcpdump -q -n -U -i tcmp0 -w "$OUT/tcpd.pcap" 2>/dev/null &
PIDS+=($!)
sleep 1

PY="$ROOT/tools/ip-compare.py"
ip netns exec "$P" python3 "$PY" probe --iface p0 --mac "$KMAC" "${PROBE_ARGS[@]}" >"$OUT/linux.jsonl" &
LP=$!
ip netns exec "$T" python3 "$PY" probe --iface tcmp0 "${PROBE_ARGS[@]}" >"$OUT/tcpd.jsonl" &
TP=$!
wait "$LP" "$TP"
sleep 0.5

python3 "$PY" merge "$OUT/linux.jsonl" "$OUT/tcpd.jsonl" linux tcpd | tee "$OUT/side-by-side.txt"
echo
echo "captures: $OUT/linux.pcap $OUT/tcpd.pcap (tcpdump -nr FILE); answers: $OUT/side-by-side.txt"
