#!/usr/bin/env bash
# Re-records the pcap fixtures in captures/ from live sessions between tcpd
# and the kernel's own TCP clients (curl, python3 sockets, ping), and the
# foreign (kernel-to-kernel) captures used by `tcpd-replay play`.
#
#   sudo tools/record-fixtures.sh            # all fixtures
#   sudo tools/record-fixtures.sh echo_halfclose ping   # some of them
#
# Each fixture runs in its own network namespace, created here and removed
# on exit (also on failure): tcpd's TUN device, tcpd, tcpdump and every
# client live inside it and only talk to addresses inside it.
#
# tcpd runs with --workers 0 (services inline on the reactor thread: the
# only mode whose captures replay byte for byte) and a fixed --seed. When a
# session is over, the script notes the time and stops tcpd with SIGTERM;
# records from that moment on (the shutdown's FIN/RST, if any) are cut from
# the capture, since a replay cannot know when the signal came.
#
# Needs root, python3, curl, ping, tcpdump, ip, nc (OpenBSD netcat, for
# foreign_nc). Uses $TCPD, else
# ${CARGO_TARGET_DIR:-target}/release/tcpd (build it with
# `cargo build --release -p tcpd`).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=$ROOT/captures
TCPD=${TCPD:-${CARGO_TARGET_DIR:-$ROOT/target}/release/tcpd}
[ "$(id -u)" = 0 ] || { echo "record-fixtures: needs root (network namespaces, TUN)" >&2; exit 1; }
[ -x "$TCPD" ] || { echo "record-fixtures: no tcpd binary at $TCPD (cargo build --release -p tcpd)" >&2; exit 1; }
for t in python3 curl ping tcpdump ip nc; do
    command -v "$t" >/dev/null || { echo "record-fixtures: $t not found" >&2; exit 1; }
done

NS=""
DAEMON_PID=""
DUMP_PID=""
WORK=$(mktemp -d /tmp/tcpd-fixtures.XXXXXX)

cleanup() {
    if [ -n "$DAEMON_PID" ]; then kill -KILL "$DAEMON_PID" 2>/dev/null || true; fi
    if [ -n "$DUMP_PID" ]; then kill -KILL "$DUMP_PID" 2>/dev/null || true; fi
    if [ -n "$NS" ]; then ip netns del "$NS" 2>/dev/null || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

new_ns() {
    NS="tcpd-fixture-$$-$RANDOM"
    ip netns add "$NS"
    ip netns exec "$NS" ip link set lo up
}

del_ns() {
    ip netns del "$NS"
    NS=""
}

in_ns() { ip netns exec "$NS" "$@"; }

# The python clients used below.
cat > "$WORK/client.py" <<'PY'
import socket, struct, sys, time

def conn(host, port, fam=socket.AF_INET):
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect((host, port))
    return s

def read_all(s):
    out = b""
    while True:
        b = s.recv(65536)
        if not b:
            return out
        out += b

cmd = sys.argv[1]
if cmd == "echo":            # echo, then half-close and read the rest
    fam = socket.AF_INET6 if ":" in sys.argv[2] else socket.AF_INET
    s = conn(sys.argv[2], 7, fam)
    sent = b""
    for i in range(5):
        m = b"hello %d from the kernel client\n" % i
        s.sendall(m); sent += m
        got = b""
        while len(got) < len(m):
            got += s.recv(4096)
        assert got == m, got
        time.sleep(0.01)
    s.shutdown(socket.SHUT_WR)
    assert read_all(s) == b""
    s.close()
elif cmd == "upload":        # 200 KB to discard, half-close, wait for tcpd's FIN
    s = conn(sys.argv[2], 9)
    data = bytes(i % 253 for i in range(200_000))
    s.sendall(data)
    s.shutdown(socket.SHUT_WR)
    assert read_all(s) == b""
    s.close()
elif cmd == "rst-download":  # abort a /bytes download with SO_LINGER 0
    # A small receive buffer keeps tcpd window-limited (and the capture
    # small); the client stops reading after 3000 bytes and resets at once,
    # while tcpd has segments in flight and more queued to send.
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
    s.settimeout(10)
    s.connect((sys.argv[2], 80))
    s.sendall(b"GET /bytes/1000000 HTTP/1.1\r\nHost: tcpd\r\n\r\n")
    got = b""
    while len(got) < 3000:
        b = s.recv(1000)
        assert b, "tcpd closed early"
        got += b
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()
elif cmd == "stall-download":  # a reader that stops: tcpd probes a zero window
    # A small receive buffer fills after a few segments; the client reads
    # nothing for 1.7 s, so tcpd's persist timer probes the closed window
    # (200, 400, 800 ms apart), then it reads everything.
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.settimeout(10)
    s.connect((sys.argv[2], 80))
    s.sendall(b"GET /bytes/60000 HTTP/1.1\r\nHost: tcpd\r\nConnection: close\r\n\r\n")
    time.sleep(1.7)
    got = read_all(s)
    body = got.split(b"\r\n\r\n", 1)[1]
    assert body == bytes(i % 251 for i in range(60000)), len(body)
    s.close()
elif cmd == "trickle":       # small writes to discard, far apart: delayed ACKs
    s = conn(sys.argv[2], 9)
    for i in range(int(sys.argv[3])):
        s.sendall(b"tick %02d\n" % i)
        time.sleep(0.06)     # longer than tcpd's 40 ms delayed-ACK timer
    s.shutdown(socket.SHUT_WR)
    assert read_all(s) == b""
    s.close()
elif cmd == "rst":           # echo some data, then close with SO_LINGER 0: RST
    s = conn(sys.argv[2], 7)
    s.sendall(b"x" * 3000)
    got = b""
    while len(got) < 3000:
        got += s.recv(4096)
    s.sendall(b"y" * 2000)
    time.sleep(0.05)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()
elif cmd == "closed":        # SYN to a port nobody listens on
    for port in (81, 8081):
        try:
            conn(sys.argv[2], port)
            sys.exit("connected to a closed port?")
        except ConnectionRefusedError:
            pass
elif cmd == "synflood":      # raw SYNs from an address nobody answers for
    import random
    dst, count = sys.argv[2], int(sys.argv[3])
    src = "10.0.0.77"        # on tun0's subnet, owned by nobody: no RST comes back
    r = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    def csum(b):
        if len(b) % 2: b += b"\0"
        s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
        while s >> 16: s = (s & 0xffff) + (s >> 16)
        return ~s & 0xffff
    rnd = random.Random(4987)
    for i in range(count):
        opt = struct.pack("!BBH", 2, 4, 1460) + b"\x01\x01\x04\x02"
        off = (5 + len(opt) // 4) << 4
        seg = struct.pack("!HHIIBBHHH", 20000 + i, 80, rnd.getrandbits(32), 0, off, 0x02,
                          64240, 0, 0) + opt
        ph = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!BBH", 0, 6, len(seg))
        seg = seg[:16] + struct.pack("!H", csum(ph + seg)) + seg[18:]
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(seg), i & 0xffff, 0x4000, 64, 6, 0,
                         socket.inet_aton(src), socket.inet_aton(dst))
        ip = ip[:10] + struct.pack("!H", csum(ip)) + ip[12:]
        r.sendto(ip + seg, (dst, 0))
    r.close()
elif cmd == "echo-server":   # the kernel's echo server for foreign captures
    fam = socket.AF_INET6 if ":" in sys.argv[2] else socket.AF_INET
    l = socket.socket(fam, socket.SOCK_STREAM)
    l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    l.bind((sys.argv[2], int(sys.argv[3])))
    l.listen(16)
    open(sys.argv[4], "w").close()
    for _ in range(int(sys.argv[5])):
        c, _ = l.accept()
        while True:
            try:
                b = c.recv(65536)
            except ConnectionResetError:
                break
            if not b:
                break
            c.sendall(b)
        c.close()
elif cmd == "echo-client":   # like "echo" against any address and port
    fam = socket.AF_INET6 if ":" in sys.argv[2] else socket.AF_INET
    s = conn(sys.argv[2], int(sys.argv[3]), fam)
    data = bytes((i * 7) % 256 for i in range(int(sys.argv[4])))
    s.sendall(data)
    s.shutdown(socket.SHUT_WR)
    assert read_all(s) == data
    s.close()
else:
    sys.exit("unknown command " + cmd)
PY

# Cuts the records at and after a wall-clock time (µs) from a pcap.
cat > "$WORK/cut.py" <<'PY'
import struct, sys
path, cut = sys.argv[1], int(sys.argv[2])
b = open(path, "rb").read()
out, off, kept, dropped = [b[:24]], 24, 0, 0
while off + 16 <= len(b):
    sec, usec, incl, orig = struct.unpack("<IIII", b[off:off + 16])
    rec = b[off:off + 16 + incl]
    off += 16 + incl
    if sec * 1_000_000 + usec < cut:
        out.append(rec); kept += 1
    else:
        dropped += 1
open(path, "wb").write(b"".join(out))
# An offload capture's list of segmented packets loses the groups cut off
# (a group's segments share one time stamp: all kept or all cut).
try:
    lines = open(path + ".gso").read().split("\n")
    keep = [l for l in lines if l and sum(map(int, l.split())) <= kept]
    open(path + ".gso", "w").write("".join(l + "\n" for l in keep))
except FileNotFoundError:
    pass
print(f"  {kept} packets ({dropped} after the stop signal cut)")
PY

now_us() { date +%s%6N; }

wait_tun() {
    for _ in $(seq 1 100); do
        if in_ns ip -4 addr show dev tun0 2>/dev/null | grep -q 10.0.0.1 &&
           [ -z "$(in_ns ip -6 addr show dev tun0 tentative 2>/dev/null)" ] &&
           in_ns ip -6 addr show dev tun0 2>/dev/null | grep -q fd00::1; then
            return 0
        fi
        sleep 0.05
    done
    echo "record-fixtures: tun0 did not come up" >&2
    return 1
}

# start_tcpd NAME SEED [tcpd flags...]
# Fixtures named offload_* are recorded with TUN offload (tcpd's default;
# the capture holds the segments the wire carried and NAME.pcap.gso lists
# the super-packets they were cut from); the others without, as they were
# first recorded (offload was off with --pcap then).
start_tcpd() {
    local name=$1 seed=$2
    shift 2
    local offload=--no-offload
    [[ $name == offload_* ]] && offload=""
    rm -f "$OUT/$name.pcap" "$OUT/$name.pcap.json" "$OUT/$name.pcap.gso"
    # `ip netns exec` execs tcpd: $! is tcpd itself.
    # shellcheck disable=SC2086
    ip netns exec "$NS" "$TCPD" tun0 --workers 0 --seed "$seed" --pcap "$OUT/$name.pcap" $offload "$@" \
        >"$WORK/$name.log" 2>&1 &
    DAEMON_PID=$!
    wait_tun
    sleep 0.2
}

stop_tcpd() {
    local name=$1
    sleep 0.3
    local cut
    cut=$(now_us)
    # SIGTERM: the same graceful stop as SIGINT (a background job of a
    # script starts with SIGINT ignored).
    kill -TERM "$DAEMON_PID"
    wait "$DAEMON_PID" || { echo "tcpd failed:"; cat "$WORK/$name.log"; return 1; }
    DAEMON_PID=""
    python3 "$WORK/cut.py" "$OUT/$name.pcap" "$cut"
}

# fixture NAME SEED "tcpd flags" client commands...
fixture() {
    local name=$1 seed=$2 flags=$3
    shift 3
    echo "== $name"
    new_ns
    # shellcheck disable=SC2086
    start_tcpd "$name" "$seed" $flags
    in_ns bash -c "$*"
    stop_tcpd "$name"
    del_ns
}

# foreign NAME SERVER-CMD CLIENT-CMD: a kernel-to-kernel session on lo,
# recorded by tcpdump.
foreign() {
    local name=$1 server=$2 client=$3
    echo "== $name (foreign)"
    new_ns
    in_ns ip addr add ::1/128 dev lo 2>/dev/null || true
    rm -f "$OUT/$name.pcap"
    ip netns exec "$NS" tcpdump -Z root --immediate-mode -i lo -s 0 -U -w "$OUT/$name.pcap" tcp >"$WORK/$name.tcpdump" 2>&1 &
    DUMP_PID=$!
    sleep 0.5
    ip netns exec "$NS" bash -c "$server" &
    local spid=$!
    sleep 0.5
    in_ns bash -c "$client"
    sleep 0.3
    kill -TERM "$spid" 2>/dev/null || true
    wait "$spid" 2>/dev/null || true
    sleep 1 # let tcpdump write out what it has
    kill -TERM "$DUMP_PID"
    wait "$DUMP_PID" || true
    DUMP_PID=""
    tail -n 3 "$WORK/$name.tcpdump"
    del_ns
}

C="python3 $WORK/client.py"
SELECTED="$*"
sel() { [ -z "$SELECTED" ] || [[ " $SELECTED " == *" $1 "* ]]; }

sel echo_halfclose && fixture echo_halfclose 1 "" "$C echo 10.0.0.2"
sel http_keepalive && fixture http_keepalive 2 "" \
    "curl -sS -o /dev/null -o /dev/null http://10.0.0.2/bytes/1000 http://10.0.0.2/bytes/20000"
sel http_download && fixture http_download 3 "" \
    "curl -sS -o $WORK/dl http://10.0.0.2/bytes/524288 && test \$(stat -c %s $WORK/dl) = 524288"
sel upload_discard && fixture upload_discard 4 "" "$C upload 10.0.0.2"
sel client_rst && fixture client_rst 5 "" "$C rst-download 10.0.0.2"
sel syn_closed_port && fixture syn_closed_port 6 "" "$C closed 10.0.0.2"
sel ping && fixture ping 7 "" "ping -c 3 -i 0.2 -q 10.0.0.2 >/dev/null && ping -6 -c 2 -i 0.2 -q fd00::2 >/dev/null"
sel fault_transfer && fixture fault_transfer 8 \
    "--fault-drop 0.02 --fault-reorder 0.03 --fault-seed 11" \
    "curl -sS -o $WORK/f http://10.0.0.2/bytes/200000 && test \$(stat -c %s $WORK/f) = 200000"
sel fault_upload && fixture fault_upload 11 \
    "--fault-drop 0.02 --fault-reorder 0.03 --fault-seed 12" "$C upload 10.0.0.2"
# The SYN burst comes from 10.0.0.77, an address on tun0's subnet that no
# interface owns: tcpd's SYN-ACKs to it come back into the namespace's kernel
# and are dropped there (no forwarding), so no RST empties the SYN queue.
sel syn_cookies && fixture syn_cookies 9 "" \
    "$C synflood 10.0.0.2 1100 && curl -sS -o /dev/null http://10.0.0.2/bytes/3000"
sel ipv6_session && fixture ipv6_session 10 "" \
    "$C echo fd00::2 && curl -sS -o /dev/null 'http://[fd00::2]/bytes/30000'"
sel delayed_ack && fixture delayed_ack 12 "" "$C trickle 10.0.0.2 20"
sel zero_window && fixture zero_window 13 "" "$C stall-download 10.0.0.2"
# Reordering without loss: fast retransmits that prove needless, reported by
# the kernel's D-SACKs, and undone.
sel reorder_transfer && fixture reorder_transfer 14 \
    "--fault-reorder 0.08 --fault-seed 15" \
    "curl -sS -o $WORK/r http://10.0.0.2/bytes/200000 && test \$(stat -c %s $WORK/r) = 200000"
# With offload: the kernel's TSO segments up (discard) and tcpd's down
# (/bytes), cut into MTU-sized segments in the capture.
sel offload_transfer && fixture offload_transfer 16 "" \
    "$C upload 10.0.0.2 && curl -sS -o $WORK/o http://10.0.0.2/bytes/300000 && test \$(stat -c %s $WORK/o) = 300000"

sel foreign_http && foreign foreign_http \
    "cd $WORK && exec python3 -m http.server 8000 --bind 127.0.0.1" \
    "curl -sS -o /dev/null http://127.0.0.1:8000/ && curl -sS -o /dev/null http://127.0.0.1:8000/client.py"
sel foreign_echo && foreign foreign_echo \
    "exec $C echo-server 127.0.0.1 7007 $WORK/ready 2" \
    "$C echo-client 127.0.0.1 7007 5000 && $C echo-client 127.0.0.1 7007 100000"
sel foreign_echo6 && foreign foreign_echo6 \
    "exec $C echo-server ::1 7007 $WORK/ready 1" \
    "$C echo-client ::1 7007 20000"
sel foreign_nc && foreign foreign_nc \
    "exec $C echo-server 127.0.0.1 7 $WORK/ready 1" \
    "printf 'one line\\ntwo lines\\n' | nc -N 127.0.0.1 7 >/dev/null"
sel foreign_rst && foreign foreign_rst \
    "exec $C echo-server 127.0.0.1 7 $WORK/ready 1" \
    "$C rst 127.0.0.1"
# Two SYNs refused with RST (ports 81 and 8081, nobody listens), then a
# real session: `play` leaves the refused ones out.
sel foreign_refused && foreign foreign_refused \
    "exec $C echo-server 127.0.0.1 7007 $WORK/ready 1" \
    "$C closed 127.0.0.1 && $C echo-client 127.0.0.1 7007 3000"

ls -l "$OUT"/*.pcap
echo "record-fixtures: done; now run: cargo test --test replay"
