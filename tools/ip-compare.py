#!/usr/bin/env python3
"""ip-compare.py: crafted IP-layer packets for tools/ip-compare.sh.

`probe` sends every case's packets to one stack through a raw AF_PACKET
socket on IFACE (a veth towards the Linux server, or tcpd's TUN) from a
source address nobody owns (10.0.0.100, fd00::100), so no kernel of ours
answers the replies; it prints one JSON object per case with the answers
it saw. `merge` prints two such outputs side by side.

Cases (each on its own connection or ICMP id):
  pmtu4 / pmtu6         an established download; frag-needed 1280 / PTB 1280
                        quoting the first unacknowledged segment
  pmtu4_floor / pmtu6_floor   the same with MTU 300 / 1000 (below the floor)
  forged4               frag-needed 1280 quoting a sequence number outside
                        SND.UNA..SND.NXT; then everything is acknowledged
  frag4 / frag6         a 3000-byte echo request in three fragments
  overlap4 / overlap6   the same with the second fragment overlapping the first
  tiny4                 a TCP SYN whose first fragment holds 8 bytes of it
  atomic6               an echo request in an atomic fragment (RFC 6946)
  opt00..opt11          an ICMPv6 echo request with a destination option of
                        unknown type whose high bits are 00, 01, 10, 11
  hbh_late6             hop-by-hop options after a destination options header
  rh0_6                 a type 0 routing header with segments left 1
  closed4               a SYN to a closed port
  timeout4 / timeout6   only the first fragment of an echo request; answers
                        are collected for 32 s / 62 s (with --timeouts)

Only the standard library: the packets are built by hand with struct.
"""

import json
import os
import random
import select
import socket
import struct
import sys
import time

ETH_P_ALL = 0x0003
ETH_P_IP = 0x0800
ETH_P_IPV6 = 0x86DD
PACKET_OUTGOING = 4


def csum(data):
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return (~s) & 0xFFFF


def a4(s):
    return socket.inet_pton(socket.AF_INET, s)


def a6(s):
    return socket.inet_pton(socket.AF_INET6, s)


def ip4(src, dst, proto, payload, ident=0, flags_off=0x4000, ttl=64):
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), ident, flags_off,
                      ttl, proto, 0, a4(src), a4(dst))
    c = csum(hdr)
    return hdr[:10] + struct.pack("!H", c) + hdr[12:] + payload


def ip6(src, dst, nh, payload, hlim=64):
    return struct.pack("!IHBB16s16s", 6 << 28, len(payload), nh, hlim, a6(src), a6(dst)) + payload


def l4sum(v6, src, dst, proto, seg):
    if v6:
        ph = a6(src) + a6(dst) + struct.pack("!IxxxB", len(seg), proto)
    else:
        ph = a4(src) + a4(dst) + struct.pack("!xBH", proto, len(seg))
    return csum(ph + seg)


def tcp(v6, src, dst, sport, dport, seq, ack, flags, opts=b"", data=b"", win=65535):
    off = (20 + len(opts)) // 4
    seg = struct.pack("!HHIIBBHHH", sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF,
                      off << 4, flags, win, 0, 0) + opts + data
    c = l4sum(v6, src, dst, 6, seg)
    return seg[:16] + struct.pack("!H", c) + seg[18:]


def icmp4(typ, code, rest, body):
    m = struct.pack("!BBH", typ, code, 0) + rest + body
    return m[:2] + struct.pack("!H", csum(m)) + m[4:]


def icmp6(src, dst, typ, code, rest, body):
    m = struct.pack("!BBH", typ, code, 0) + rest + body
    c = l4sum(True, src, dst, 58, m)
    return m[:2] + struct.pack("!H", c) + m[4:]


FIN, SYN, RST, PSH, ACK = 1, 2, 4, 8, 16


class Link:
    def __init__(self, iface, mac):
        self.iface = iface
        self.mac = bytes.fromhex(mac.replace(":", "")) if mac else b"\0" * 6
        self.s = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_ALL))
        self.s.bind((iface, ETH_P_ALL))
        self.s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)

    def send(self, pkt):
        proto = ETH_P_IPV6 if pkt[0] >> 4 == 6 else ETH_P_IP
        self.s.sendto(pkt, (self.iface, proto, 0, 0, self.mac))

    def recv(self, secs, want):
        """Packets received within `secs` for which want(pkt) holds."""
        out = []
        end = time.time() + secs
        while True:
            left = end - time.time()
            if left <= 0:
                return out
            r, _, _ = select.select([self.s], [], [], left)
            if not r:
                continue
            pkt, addr = self.s.recvfrom(70000)
            if addr[2] == PACKET_OUTGOING or not pkt:
                continue
            if want(pkt):
                out.append((time.time(), pkt))

    def drain(self):
        self.s.setblocking(False)
        try:
            while True:
                self.s.recv(70000)
        except BlockingIOError:
            pass
        self.s.setblocking(True)


def parse(pkt):
    """(version, src, dst, proto, l4 bytes, info dict) of an IP packet."""
    v = pkt[0] >> 4
    info = {}
    if v == 4:
        ihl = (pkt[0] & 15) * 4
        tot, ident, fo = struct.unpack("!HHH", pkt[2:8])
        info.update(len=tot, id=ident, df=bool(fo & 0x4000), mf=bool(fo & 0x2000),
                    off=(fo & 0x1FFF) * 8)
        l4 = pkt[ihl:tot] if info["off"] == 0 else b""
        return 4, socket.inet_ntop(socket.AF_INET, pkt[12:16]), \
            socket.inet_ntop(socket.AF_INET, pkt[16:20]), pkt[9], l4, info
    if v == 6:
        plen, nh = struct.unpack("!HB", pkt[4:7])
        info.update(len=40 + plen)
        src = socket.inet_ntop(socket.AF_INET6, pkt[8:24])
        dst = socket.inet_ntop(socket.AF_INET6, pkt[24:40])
        body = pkt[40:40 + plen]
        while nh in (0, 43, 60, 44):
            if nh == 44:
                fo, ident = struct.unpack("!HI", body[2:8])
                info.update(frag=True, off=fo & 0xFFF8, mf=bool(fo & 1), id=ident)
                nh, body = body[0], body[8:]
                if info["off"]:
                    return 6, src, dst, nh, b"", info
                continue
            n = (body[1] + 1) * 8
            nh, body = body[0], body[n:]
        return 6, src, dst, nh, body, info
    return v, "", "", 0, b"", info


def describe(pkt, isn=None):
    v, src, dst, proto, l4, info = parse(pkt)
    frag = ""
    if info.get("mf") or info.get("off"):
        frag = " frag off=%d%s" % (info["off"], " MF" if info.get("mf") else "")
    if info.get("frag") and not frag:
        frag = " atomic-frag"
    df = " DF" if info.get("df") else ""
    base = "len=%d%s%s" % (info["len"], df, frag)
    if proto == 6 and len(l4) >= 20:
        sp, dp, seq, ack, off, fl, win = struct.unpack("!HHIIBBH", l4[:16])
        data = len(l4) - (off >> 4) * 4
        names = "".join(c for b, c in ((SYN, "S"), (FIN, "F"), (RST, "R"), (PSH, "P")) if fl & b) or "."
        rel = (seq - isn) & 0xFFFFFFFF if isn is not None else seq
        mss = ""
        opts = l4[20:(off >> 4) * 4]
        i = 0
        while i < len(opts):
            k = opts[i]
            if k == 0:
                break
            if k == 1:
                i += 1
                continue
            if i + 1 >= len(opts):
                break
            ln = max(opts[i + 1], 2)
            if k == 2 and ln == 4:
                mss = " mss=%d" % struct.unpack("!H", opts[i + 2:i + 4])[0]
            i += ln
        return "TCP [%s] seq=%d data=%d%s %s" % (names, rel, data, mss, base)
    if proto == 1 and len(l4) >= 4:
        t, c = l4[0], l4[1]
        name = {0: "echo-reply", 3: "unreach", 11: "time-exceeded", 12: "param-problem"}.get(t, "type%d" % t)
        extra = ""
        if t == 3 and c == 4:
            extra = " mtu=%d" % struct.unpack("!H", l4[6:8])[0]
        if t == 12:
            extra = " ptr=%d" % l4[4]
        return "ICMP %s/%d%s %s" % (name, c, extra, base)
    if proto == 58 and len(l4) >= 4:
        t, c = l4[0], l4[1]
        name = {129: "echo-reply", 1: "unreach", 2: "too-big", 3: "time-exceeded",
                4: "param-problem"}.get(t, "type%d" % t)
        extra = " ptr=%d" % struct.unpack("!I", l4[4:8])[0] if t == 4 else ""
        return "ICMPv6 %s/%d%s %s" % (name, c, extra, base)
    if proto == 1 or proto == 58:
        return "ICMP fragment %s" % base
    return "proto %d %s" % (proto, base)


class Prober:
    def __init__(self, link, src4, dst4, src6, dst6):
        self.l = link
        self.src4, self.dst4, self.src6, self.dst6 = src4, dst4, src6, dst6
        self.port = 40000 + random.randrange(10000)

    def addrs(self, v6):
        return (self.src6, self.dst6) if v6 else (self.src4, self.dst4)

    def use_source(self, n):
        """Case `n` gets its own source (10.0.0.n, fd00::n): each stack
        caches path MTUs per destination, and one case must not see what
        an earlier one taught it."""
        self.src4 = "10.0.0.%d" % n
        self.src6 = "fd00::%x" % n

    def ip(self, v6, proto, payload, **kw):
        s, d = self.addrs(v6)
        return ip6(s, d, proto, payload) if v6 else ip4(s, d, proto, payload, **kw)

    def from_target(self, v6, proto=None, port=None):
        s, d = self.addrs(v6)

        def want(pkt):
            v, src, dst, pr, l4, info = parse(pkt)
            if v != (6 if v6 else 4) or src != d or dst != s:
                return False
            if proto is not None and pr != proto and not (info.get("off") or info.get("mf")):
                return False
            if port is not None and pr == 6 and len(l4) >= 4 and struct.unpack("!H", l4[2:4])[0] != port:
                return False
            return True
        return want

    # ----- TCP -----------------------------------------------------------

    def connect(self, v6, path="/bytes/300000"):
        """Handshake and a request; returns (sport, isn, our next seq, flight)."""
        s, d = self.addrs(v6)
        self.port += 1
        sp = self.port
        mss = 1440 if v6 else 1460
        opts = struct.pack("!BBH", 2, 4, mss) + bytes([4, 2, 8, 10]) + struct.pack("!II", 1, 0) \
            + bytes([1, 3, 3, 7])
        iss = random.randrange(1 << 32)
        want = self.from_target(v6, 6, sp)
        self.l.drain()
        self.l.send(self.ip(v6, 6, tcp(v6, s, d, sp, 80, iss, 0, SYN, opts, win=65535)))
        got = self.l.recv(1.0, want)
        synack = [p for _, p in got if parse(p)[4][13] & SYN]
        if not synack:
            return None
        l4 = parse(synack[0])[4]
        isn, = struct.unpack("!I", l4[4:8])
        tsval = self.peer_ts(l4)
        ack = isn + 1
        ts = bytes([1, 1, 8, 10]) + struct.pack("!II", 2, tsval)
        req = ("GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % path).encode()
        # Window 64 KiB unscaled: the server's initial window fills the flight.
        self.l.send(self.ip(v6, 6, tcp(v6, s, d, sp, 80, iss + 1, ack, ACK, ts, win=65535 >> 7)))
        self.l.send(self.ip(v6, 6, tcp(v6, s, d, sp, 80, iss + 1, ack, ACK | PSH, ts, req,
                                       win=65535 >> 7)))
        flight = [p for _, p in self.l.recv(0.3, want)]
        return sp, isn, iss + 1 + len(req), flight

    @staticmethod
    def peer_ts(l4):
        off = (l4[12] >> 4) * 4
        o = l4[20:off]
        i = 0
        while i + 1 < len(o):
            if o[i] == 1:
                i += 1
                continue
            if o[i] == 8 and i + 10 <= len(o):
                return struct.unpack("!I", o[i + 2:i + 6])[0]
            if o[i] == 0:
                break
            i += max(o[i + 1], 2)
        return 0

    def reset(self, v6, sp, seq):
        s, d = self.addrs(v6)
        self.l.send(self.ip(v6, 6, tcp(v6, s, d, sp, 80, seq, 0, RST)))

    def too_big(self, v6, quoted, mtu):
        """frag-needed / packet-too-big from a router (10.0.0.1 / fd00::1 is
        the kernel side; any source works) quoting `quoted`."""
        s, d = self.addrs(v6)
        if v6:
            body = quoted[:1232]
            m = icmp6(s, d, 2, 0, struct.pack("!I", mtu), body)
            return ip6(s, d, 58, m)
        body = quoted[:28]
        m = icmp4(3, 4, struct.pack("!HH", 0, mtu), body)
        return ip4(s, d, 1, m)

    def data_segs(self, flight):
        return [p for p in flight if len(parse(p)[4]) > (parse(p)[4][12] >> 4) * 4]

    def case_pmtu(self, v6, mtu, forged=False):
        c = self.connect(v6)
        if c is None:
            return ["no SYN-ACK"]
        sp, isn, seq, flight = c
        segs = self.data_segs(flight)
        out = ["flight: " + summarize(segs, isn)]
        if not segs:
            self.reset(v6, sp, seq)
            return out
        q = bytearray(segs[0])
        if forged:
            # A sequence number 1 MB beyond anything sent.
            hl = 40 if v6 else (q[0] & 15) * 4
            old, = struct.unpack("!I", q[hl + 4:hl + 8])
            q[hl + 4:hl + 8] = struct.pack("!I", (old + 1000000) & 0xFFFFFFFF)
        want = self.from_target(v6, 6, sp)
        self.l.send(self.too_big(v6, bytes(q), mtu))
        after = [p for _, p in self.l.recv(0.15, want)]
        out.append("within 150 ms of the ICMP: " + summarize(after, isn))
        if forged:
            # Acknowledge the flight: what comes next shows the MSS.
            top = max(((struct.unpack("!I", parse(p)[4][4:8])[0] - isn) & 0xFFFFFFFF)
                      + len(parse(p)[4]) - (parse(p)[4][12] >> 4) * 4 for p in segs)
            s, d = self.addrs(v6)
            self.l.send(self.ip(v6, 6, tcp(v6, s, d, sp, 80, seq, isn + top, ACK,
                                           win=65535 >> 7)))
            nxt = [p for _, p in self.l.recv(0.15, want)]
            out.append("after ACK of the flight: " + summarize(nxt, isn))
        self.reset(v6, sp, seq)
        return out

    def case_closed(self):
        s, d = self.addrs(False)
        self.port += 1
        self.l.send(ip4(s, d, 6, tcp(False, s, d, self.port, 81, 12345, 0, SYN)))
        return [describe(p) for _, p in self.l.recv(0.3, self.from_target(False))]

    # ----- fragments and ICMP echo ---------------------------------------

    def echo(self, v6, n, ident):
        s, d = self.addrs(v6)
        data = bytes(i % 251 for i in range(n))
        if v6:
            return icmp6(s, d, 128, 0, struct.pack("!HH", ident, 1), data)
        return icmp4(8, 0, struct.pack("!HH", ident, 1), data)

    def frags(self, v6, payload, cuts, ident, proto):
        """Fragments of `payload` at [(start, end, more)]."""
        out = []
        for a, b, more in cuts:
            part = payload[a:b]
            if v6:
                fh = struct.pack("!BBHI", proto, 0, a | (1 if more else 0), ident)
                out.append(self.ip(True, 44, fh + part))
            else:
                out.append(self.ip(False, proto, part, ident=ident & 0xFFFF,
                                   flags_off=(0x2000 if more else 0) | (a // 8)))
        return out

    def case_frag(self, v6, overlap=False, only_first=False, wait=0.5):
        ident = random.randrange(1, 65535)
        m = self.echo(v6, 3000, ident)
        proto = 58 if v6 else 1
        if only_first:
            cuts = [(0, 1440, True)]
        elif overlap:
            cuts = [(0, 1440, True), (1432, 2880, True), (2880, len(m), False)]
        else:
            cuts = [(0, 1440, True), (1440, 2880, True), (2880, len(m), False)]
        self.l.drain()
        for f in self.frags(v6, m, cuts, ident, proto):
            self.l.send(f)
        got = self.l.recv(wait, self.from_target(v6))
        return [describe(p) for _, p in got] or ["(nothing)"]

    def case_tiny(self):
        s, d = self.addrs(False)
        self.port += 1
        seg = tcp(False, s, d, self.port, 80, 777, 0, SYN, struct.pack("!BBH", 2, 4, 1460))
        ident = random.randrange(1, 65535)
        fs = self.frags(False, seg, [(0, 8, True), (8, len(seg), False)], ident, 6)
        for f in fs:
            self.l.send(f)
        got = self.l.recv(0.4, self.from_target(False))
        for _, p in got:
            l4 = parse(p)[4]
            if parse(p)[3] == 6 and l4[13] & SYN:
                self.l.send(ip4(s, d, 6, tcp(False, s, d, self.port, 80, 778, 0, RST)))
        return [describe(p) for _, p in got] or ["(nothing)"]

    def case_atomic6(self):
        ident = random.randrange(1, 65535)
        m = self.echo(True, 56, ident)
        fh = struct.pack("!BBHI", 58, 0, 0, ident)
        self.l.send(self.ip(True, 44, fh + m))
        return [describe(p) for _, p in self.l.recv(0.3, self.from_target(True))] or ["(nothing)"]

    def case_ext6(self, headers):
        """An echo request behind `headers`: [(next-header number, body)]."""
        ident = random.randrange(1, 65535)
        m = self.echo(True, 56, ident)
        chain = m
        nh = 58
        for num, body in reversed(headers):
            hdr = bytes([nh]) + body
            chain = hdr + chain
            nh = num
        self.l.send(self.ip(True, nh, chain))
        return [describe(p) for _, p in self.l.recv(0.3, self.from_target(True))] or ["(nothing)"]


def dest_opt(typ):
    # Hdr Ext Len 0 (8 bytes): next header (prepended), len, then option
    # `typ` with 2 bytes of data, then PadN of 2.
    return bytes([0, typ, 2, 0, 0, 1, 0])


def summarize(pkts, isn):
    """Data segments as runs: '10 x 1448 B from seq 1', plus other packets."""
    runs = []
    for p in pkts:
        v, src, dst, proto, l4, info = parse(p)
        if proto != 6 or len(l4) < 20:
            runs.append([describe(p), 1, None])
            continue
        data = len(l4) - (l4[12] >> 4) * 4
        seq = (struct.unpack("!I", l4[4:8])[0] - isn) & 0xFFFFFFFF
        key = "%d B%s" % (data, " DF" if info.get("df") else "")
        if data == 0:
            key = describe(p, isn)
        if runs and runs[-1][0] == key:
            runs[-1][1] += 1
        else:
            runs.append([key, 1, seq])
    if not runs:
        return "(nothing)"
    return ", ".join("%d x %s%s" % (n, k, "" if s is None else " from seq %d" % s)
                     for k, n, s in runs)


def probe(argv):
    import argparse
    ap = argparse.ArgumentParser()
    ap.add_argument("--iface", required=True)
    ap.add_argument("--mac", default="")
    ap.add_argument("--timeouts", action="store_true")
    ap.add_argument("--cases", default="")
    a = ap.parse_args(argv)
    p = Prober(Link(a.iface, a.mac), "10.0.0.100", "10.0.0.2", "fd00::100", "fd00::2")
    cases = [
        ("pmtu4", lambda: p.case_pmtu(False, 1280)),
        ("pmtu4_floor", lambda: p.case_pmtu(False, 300)),
        ("pmtu6", lambda: p.case_pmtu(True, 1280)),
        ("pmtu6_floor", lambda: p.case_pmtu(True, 1000)),
        ("forged4", lambda: p.case_pmtu(False, 1280, forged=True)),
        ("frag4", lambda: p.case_frag(False)),
        ("frag6", lambda: p.case_frag(True)),
        ("overlap4", lambda: p.case_frag(False, overlap=True)),
        ("overlap6", lambda: p.case_frag(True, overlap=True)),
        ("tiny4", p.case_tiny),
        ("atomic6", p.case_atomic6),
        ("opt00", lambda: p.case_ext6([(60, dest_opt(0x1E))])),
        ("opt01", lambda: p.case_ext6([(60, dest_opt(0x5E))])),
        ("opt10", lambda: p.case_ext6([(60, dest_opt(0x9E))])),
        ("opt11", lambda: p.case_ext6([(60, dest_opt(0xDE))])),
        ("hbh_late6", lambda: p.case_ext6([(60, dest_opt(0x1E)), (0, dest_opt(0x1E))])),
        ("rh0_6", lambda: p.case_ext6([(43, bytes([2, 0, 1, 0, 0, 0, 0]) + bytes(16))])),
        ("closed4", p.case_closed),
    ]
    if a.timeouts:
        cases.append(("timeout4", lambda: p.case_frag(False, only_first=True, wait=32)))
        cases.append(("timeout6", lambda: p.case_frag(True, only_first=True, wait=62)))
    only = set(a.cases.split(",")) if a.cases else None
    for i, (name, f) in enumerate(cases):
        if only and name not in only:
            continue
        p.use_source(100 + i)
        try:
            ans = f()
        except Exception as e:  # a case that breaks says so and the rest run
            ans = ["probe error: %r" % e]
        print(json.dumps({"case": name, "answers": ans}), flush=True)
        time.sleep(0.1)


def merge(argv):
    left, right = argv[0], argv[1]
    names = argv[2:4] if len(argv) >= 4 else ["linux", "tcpd"]

    def load(path):
        d = {}
        for line in open(path):
            line = line.strip()
            if line.startswith("{"):
                o = json.loads(line)
                d[o["case"]] = o["answers"]
        return d
    a, b = load(left), load(right)
    for case in list(dict.fromkeys(list(a) + list(b))):
        la, lb = a.get(case, ["(not run)"]), b.get(case, ["(not run)"])
        same = "same" if la == lb else "DIFFERS"
        print("== %s (%s)" % (case, same))
        for i in range(max(len(la), len(lb))):
            x = la[i] if i < len(la) else ""
            y = lb[i] if i < len(lb) else ""
            print("  %-6s %s" % (names[0] + ":", x))
            print("  %-6s %s" % (names[1] + ":", y))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "merge":
        merge(sys.argv[2:])
    elif len(sys.argv) > 1 and sys.argv[1] == "probe":
        probe(sys.argv[2:])
    else:
        print(__doc__)
        sys.exit(2)
