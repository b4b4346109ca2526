//! The logic of the `tcp` crate's fuzz targets, kept apart from libFuzzer so
//! that it builds on stable Rust too.
//!
//! - The cargo-fuzz binaries in `fuzz_targets/` (nightly) call
//!   [`parse_packet`] and [`endpoint`] from this crate.
//! - `tcp/tests/fuzz_corpus.rs` includes this same file with `#[path]` and
//!   replays the checked-in corpus, the generated seeds and proptest inputs
//!   through the same functions in an ordinary `cargo test`.
//!
//! Both targets panic on a broken invariant; libFuzzer reports the panic as
//! a crash and saves the input.
//!
//! The `endpoint` target reads its input as a little program ([`Op`]s) whose
//! encoding is dense: every byte string decodes to some valid program, and
//! most operations build well-formed TCP segments (correct checksums,
//! sequence and acknowledgment numbers derived from what the endpoint sent)
//! so that the fuzzer reaches established connections, retransmissions,
//! reassembly, SYN cookies, TIME-WAIT and the rest, rather than being stopped
//! at the checksum.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash, Hasher};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use tcp::wire::{
    checksum_fold, checksum_sum, emit_icmp_echo_reply, emit_tcp, parse_icmp_echo, parse_ip,
    parse_tcp, parse_tcp_with, pseudo_header_sum, tcp_payload_offset, DropReason, IcmpEcho,
    IpPacket, SackBlocks, TcpFlags, TcpOptions, TcpRepr, PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP,
};
use tcp::{Config, ConnId, Duration, Endpoint, Event, Instant, Keepalive, SeqNum, Transmit};

// ===========================================================================
// parse_packet
// ===========================================================================

/// Runs every parser on `data` and checks what they return: nothing may
/// panic, and a packet that parses must survive a parse → emit → parse round
/// trip with the same fields (which checks `emit_tcp`'s checksums and
/// option encoder against the parser).
pub fn parse_packet(data: &[u8]) {
    let _ = TcpOptions::parse(data);
    let Ok(ip) = parse_ip(data) else {
        return;
    };
    assert_eq!(ip.src.is_ipv4(), ip.dst.is_ipv4(), "mixed address families");
    assert!(ip.payload.len() <= data.len(), "payload longer than packet");
    // Every parser must cope with every payload, whatever the protocol says.
    let tcp = parse_tcp(&ip);
    let icmp = parse_icmp_echo(&ip);
    // Without checksum verification (a device vouched for it) the parser
    // must still be safe, and agree with the verifying parse when that one
    // accepts the segment.
    let unverified = parse_tcp_with(&ip, false);
    if let Ok(seg) = &tcp {
        let u = unverified.expect("a segment valid with its checksum is valid without");
        assert_eq!(
            (u.src_port, u.dst_port, u.seq, u.ack, u.flags, u.window),
            (
                seg.src_port,
                seg.dst_port,
                seg.seq,
                seg.ack,
                seg.flags,
                seg.window
            )
        );
        assert_eq!((u.options, u.payload), (seg.options, seg.payload));
    }
    if ip.protocol == PROTO_TCP {
        if let Ok(seg) = tcp {
            tcp_round_trip(&ip, &seg);
        }
    }
    let icmp_family = matches!(
        (ip.protocol, ip.src),
        (PROTO_ICMP, IpAddr::V4(_)) | (PROTO_ICMPV6, IpAddr::V6(_))
    );
    if icmp_family {
        if let Ok(echo) = icmp {
            icmp_round_trip(&ip, &echo);
        }
    }
}

fn tcp_round_trip(ip: &IpPacket<'_>, seg: &tcp::wire::TcpSegment<'_>) {
    assert!(
        seg.options.sack.len() <= tcp::wire::MAX_SACK_BLOCKS,
        "too many SACK blocks"
    );
    if let Some(ws) = seg.options.window_scale {
        // RFC 7323 §2.3: the parser may keep the raw value, but it is a u8.
        let _ = ws;
    }
    let repr = TcpRepr {
        src_port: seg.src_port,
        dst_port: seg.dst_port,
        seq: seg.seq,
        ack: seg.ack,
        flags: seg.flags,
        window: seg.window,
        options: seg.options,
    };
    // Our encoder may pad differently from the sender; a header it cannot
    // express (over 60 bytes) is not a round-trip failure.
    if repr.options.encoded_len() > 40 {
        return;
    }
    let len = seg.payload.len();
    let off = tcp_payload_offset(ip.src, &repr);
    let mut buf = vec![0u8; off + len];
    buf[off..].copy_from_slice(seg.payload);
    let Some(n) = emit_tcp(&mut buf, ip.src, ip.dst, ip.ttl, &repr, len) else {
        // Only a packet that no longer fits the IP length field may fail.
        let max = if ip.src.is_ipv4() { 65535 } else { 65535 + 40 };
        assert!(off + len > max, "emit_tcp refused a segment that fits");
        return;
    };
    assert_eq!(n, off + len);
    let ip2 = parse_ip(&buf[..n]).expect("our own IP header must parse");
    assert_eq!(
        (ip2.src, ip2.dst, ip2.protocol),
        (ip.src, ip.dst, PROTO_TCP)
    );
    let seg2 = parse_tcp(&ip2).expect("our own TCP segment must parse");
    assert_eq!(
        (seg2.src_port, seg2.dst_port, seg2.seq, seg2.ack),
        (seg.src_port, seg.dst_port, seg.seq, seg.ack)
    );
    assert_eq!((seg2.flags, seg2.window), (seg.flags, seg.window));
    assert_eq!(seg2.options, seg.options, "options changed in a round trip");
    assert!(!seg2.bad_options, "our own options are malformed");
    assert_eq!(seg2.payload, seg.payload);
}

fn icmp_round_trip(ip: &IpPacket<'_>, echo: &IcmpEcho<'_>) {
    // A request to an address nothing may send from (0/8, broadcast,
    // multicast) gets no reply: the endpoint drops it (`valid_source`), and
    // `parse_ip` would drop the reply.
    if !tcp::wire::valid_source(ip.dst, ip.src) {
        return;
    }
    let iph = if ip.src.is_ipv4() { 20 } else { 40 };
    let mut buf = vec![0u8; iph + 8 + echo.data.len()];
    let Some(n) = emit_icmp_echo_reply(&mut buf, ip.dst, ip.src, echo) else {
        let max = if ip.src.is_ipv4() { 65535 } else { 65535 + 40 };
        assert!(buf.len() > max, "echo reply refused although it fits");
        return;
    };
    let ip2 = parse_ip(&buf[..n]).expect("our echo reply must parse");
    assert_eq!((ip2.src, ip2.dst), (ip.dst, ip.src));
    // A reply is a valid ICMP message that is not a request.
    assert_eq!(
        parse_icmp_echo(&ip2).err(),
        Some(DropReason::IcmpIgnored),
        "our echo reply has a bad checksum or type"
    );
    assert_eq!(&ip2.payload[8..], echo.data);
    assert_eq!(&ip2.payload[4..8], &ip.payload[4..8], "ident/seq changed");
}

// ===========================================================================
// endpoint: input encoding
// ===========================================================================

/// Reads the fuzz input; past the end every read gives zero.
pub struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// A reader over `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Reader { data, pos: 0 }
    }
    /// Whether every byte has been read.
    pub fn is_empty(&self) -> bool {
        self.pos >= self.data.len()
    }
    /// The next byte, or 0.
    pub fn u8(&mut self) -> u8 {
        let b = self.data.get(self.pos).copied().unwrap_or(0);
        self.pos += 1;
        b
    }
    /// The next two bytes, big-endian.
    pub fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.u8(), self.u8()])
    }
    /// The next four bytes, big-endian.
    pub fn u32(&mut self) -> u32 {
        u32::from_be_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }
    /// Up to `n` bytes (fewer at the end of the input).
    pub fn bytes(&mut self, n: usize) -> &'a [u8] {
        let start = self.pos.min(self.data.len());
        let end = self.pos.saturating_add(n).min(self.data.len());
        self.pos = self.pos.saturating_add(n);
        &self.data[start..end]
    }
}

/// Which sequence number a crafted segment carries, relative to the
/// simulated peer's own send sequence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SeqSel {
    /// The peer's next sequence number (in order).
    Next,
    /// Next plus a signed offset (old data, overlaps, just out of window).
    Delta(i16),
    /// Any number.
    Raw(u32),
    /// The last acknowledgment number the endpoint sent this peer.
    EpAck,
    /// Next plus an offset: out-of-order data beyond a hole.
    Ahead(u16),
}

/// Which acknowledgment number a crafted segment carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AckSel {
    /// Everything the endpoint has sent.
    All,
    /// Everything but the last `n` bytes (a partial ACK).
    Back(u16),
    /// The same as the peer's previous ACK (a duplicate ACK).
    Same,
    /// Any number.
    Raw(u32),
    /// Beyond what the endpoint sent (ACK of unsent data).
    Beyond(u16),
}

/// The timestamp option of a crafted segment (RFC 7323).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TsSel {
    /// TSval one tick after the previous one, TSecr echoing the endpoint.
    Fresh,
    /// The same TSval as last time.
    Same,
    /// A TSval far in the past (PAWS must reject it).
    Old,
    /// TSecr zero.
    ZeroEcr,
}

/// A TCP segment from a simulated peer, described relative to the state of
/// the conversation so that most mutations stay meaningful.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seg {
    /// Which peer (index into [`peer_addr`], 0..8).
    pub peer: u8,
    /// Which local port: 0 → 80, 1 → 7 (both listening), 2 → 9 (not
    /// listening), 3 → the port of the endpoint's last `connect` to this peer.
    pub port: u8,
    /// Sequence number.
    pub seq: SeqSel,
    /// Control bits, as on the wire.
    pub flags: u8,
    /// Acknowledgment number.
    pub ack: AckSel,
    /// MSS option.
    pub mss: Option<u16>,
    /// Window-scale option.
    pub wscale: Option<u8>,
    /// SACK-permitted option.
    pub sack_perm: bool,
    /// Timestamps option.
    pub ts: Option<TsSel>,
    /// SACK blocks as (offset from the peer's last ACK, length), at most 3.
    pub sack: Vec<(u16, u16)>,
    /// Window field.
    pub window: u16,
    /// Payload length (bytes of a known pattern).
    pub len: u16,
}

impl Default for Seg {
    fn default() -> Self {
        Seg {
            peer: 0,
            port: 0,
            seq: SeqSel::Next,
            flags: TcpFlags::ACK.0,
            ack: AckSel::All,
            mss: None,
            wscale: None,
            sack_perm: false,
            ts: None,
            sack: Vec::new(),
            window: 65535,
            len: 0,
        }
    }
}

impl Seg {
    fn decode(r: &mut Reader<'_>) -> Seg {
        let b0 = r.u8();
        let flags = r.u8();
        let b2 = r.u8();
        let seq = match b0 >> 5 {
            1 => SeqSel::Delta(r.u16() as i16),
            2 => SeqSel::Raw(r.u32()),
            3 => SeqSel::EpAck,
            4 => SeqSel::Ahead(r.u16()),
            _ => SeqSel::Next,
        };
        let ack = match b2 & 7 {
            1 => AckSel::Back(r.u16()),
            2 => AckSel::Same,
            3 => AckSel::Raw(r.u32()),
            4 => AckSel::Beyond(r.u16()),
            _ => AckSel::All,
        };
        let mss = (b2 & 0x08 != 0).then(|| r.u16());
        let wscale = (b2 & 0x10 != 0).then(|| r.u8());
        let sack_perm = b2 & 0x20 != 0;
        let ts = (b2 & 0x40 != 0).then(|| match r.u8() {
            1 => TsSel::Same,
            2 => TsSel::Old,
            3 => TsSel::ZeroEcr,
            _ => TsSel::Fresh,
        });
        let mut sack = Vec::new();
        if b2 & 0x80 != 0 {
            let n = 1 + r.u8() % 3;
            for _ in 0..n {
                sack.push((r.u16(), r.u16()));
            }
        }
        let window = r.u16();
        let len = match r.u8() {
            c @ 0..=199 => u16::from(c),
            c @ 200..=254 => (u16::from(c) - 199) * 128,
            _ => r.u16(),
        };
        Seg {
            peer: b0 & 7,
            port: (b0 >> 3) & 3,
            seq,
            flags,
            ack,
            mss,
            wscale,
            sack_perm,
            ts,
            sack,
            window,
            len,
        }
    }

    fn encode(&self, out: &mut Vec<u8>) {
        let seq_tag = match self.seq {
            SeqSel::Next => 0,
            SeqSel::Delta(_) => 1,
            SeqSel::Raw(_) => 2,
            SeqSel::EpAck => 3,
            SeqSel::Ahead(_) => 4,
        };
        let ack_tag = match self.ack {
            AckSel::All => 0,
            AckSel::Back(_) => 1,
            AckSel::Same => 2,
            AckSel::Raw(_) => 3,
            AckSel::Beyond(_) => 4,
        };
        out.push((self.peer & 7) | (self.port & 3) << 3 | seq_tag << 5);
        out.push(self.flags);
        let mut b2 = ack_tag;
        b2 |= u8::from(self.mss.is_some()) << 3;
        b2 |= u8::from(self.wscale.is_some()) << 4;
        b2 |= u8::from(self.sack_perm) << 5;
        b2 |= u8::from(self.ts.is_some()) << 6;
        b2 |= u8::from(!self.sack.is_empty()) << 7;
        out.push(b2);
        match self.seq {
            SeqSel::Delta(d) => out.extend_from_slice(&(d as u16).to_be_bytes()),
            SeqSel::Raw(v) => out.extend_from_slice(&v.to_be_bytes()),
            SeqSel::Ahead(v) => out.extend_from_slice(&v.to_be_bytes()),
            SeqSel::Next | SeqSel::EpAck => {}
        }
        match self.ack {
            AckSel::Back(v) | AckSel::Beyond(v) => out.extend_from_slice(&v.to_be_bytes()),
            AckSel::Raw(v) => out.extend_from_slice(&v.to_be_bytes()),
            AckSel::All | AckSel::Same => {}
        }
        if let Some(m) = self.mss {
            out.extend_from_slice(&m.to_be_bytes());
        }
        if let Some(w) = self.wscale {
            out.push(w);
        }
        if let Some(t) = self.ts {
            out.push(match t {
                TsSel::Fresh => 0,
                TsSel::Same => 1,
                TsSel::Old => 2,
                TsSel::ZeroEcr => 3,
            });
        }
        if !self.sack.is_empty() {
            let n = self.sack.len().clamp(1, 3);
            out.push((n - 1) as u8);
            for (a, b) in &self.sack[..n] {
                out.extend_from_slice(&a.to_be_bytes());
                out.extend_from_slice(&b.to_be_bytes());
            }
        }
        out.extend_from_slice(&self.window.to_be_bytes());
        match self.len {
            l @ 0..=199 => out.push(l as u8),
            l if l % 128 == 0 && l / 128 <= 55 => out.push((l / 128 + 199) as u8),
            l => {
                out.push(255);
                out.extend_from_slice(&l.to_be_bytes());
            }
        }
    }
}

/// What the simulated application does with a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AppAction {
    /// `close` (half-close, FIN).
    Close,
    /// `abort` (RST).
    Abort,
    /// Nagle off.
    NoDelay,
    /// Nagle on.
    Delay,
    /// Read everything readable.
    Recv,
    /// Release up to 1000 bytes held by `recv_hold`.
    Release,
}

/// One step of an `endpoint` fuzz program.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// A well-formed segment from a peer.
    Seg(Seg),
    /// A well-formed segment handed to `Endpoint::handle_offloaded` as if
    /// the device had verified its checksum.
    OffloadSeg(Seg),
    /// Raw bytes handed to `Endpoint::handle`.
    Raw(Vec<u8>),
    /// A well-formed segment with one byte flipped afterwards.
    Corrupt {
        /// The segment.
        seg: Seg,
        /// Byte position (modulo the packet length).
        at: u16,
        /// XOR mask (made non-zero).
        xor: u8,
    },
    /// A corrupted segment whose checksum the device claims to have
    /// verified (`handle_offloaded`): the damage reaches the TCP code.
    OffloadCorrupt {
        /// The segment.
        seg: Seg,
        /// Byte position (modulo the packet length).
        at: u16,
        /// XOR mask (made non-zero).
        xor: u8,
    },
    /// An ICMP echo request from a peer.
    Ping {
        /// Which peer.
        peer: u8,
        /// Data bytes.
        len: u8,
        /// Correct checksum or not.
        good: bool,
    },
    /// Time passes by this many milliseconds; due timers run.
    Wait(u8),
    /// Time passes by this many 10 ms units; due timers run.
    WaitLong(u16),
    /// The application sends this many pattern bytes.
    Send {
        /// Connection index (255: a stale handle).
        conn: u8,
        /// Bytes to offer.
        len: u16,
    },
    /// Another application call.
    App {
        /// Connection index (255: a stale handle).
        conn: u8,
        /// What to do.
        action: AppAction,
    },
    /// The application connects to a peer (bit 7 set: from an address
    /// that is not ours).
    Connect(u8),
    /// Open (`true`) or close a listener on port choice 0..4 (80, 7, 9, 8080).
    Listen(u8, bool),
}

impl Op {
    fn decode(r: &mut Reader<'_>) -> Option<Op> {
        if r.is_empty() {
            return None;
        }
        let tag = r.u8();
        Some(match tag % 16 {
            0..=6 if tag >= 0x80 => Op::OffloadSeg(Seg::decode(r)),
            0..=6 => Op::Seg(Seg::decode(r)),
            7 => {
                let n = match r.u8() {
                    255 => usize::from(r.u16()),
                    n => usize::from(n),
                };
                Op::Raw(r.bytes(n).to_vec())
            }
            8 if tag >= 0x80 => Op::OffloadCorrupt {
                seg: Seg::decode(r),
                at: r.u16(),
                xor: r.u8(),
            },
            8 => Op::Corrupt {
                seg: Seg::decode(r),
                at: r.u16(),
                xor: r.u8(),
            },
            9 => Op::Ping {
                peer: r.u8(),
                len: r.u8(),
                good: r.u8() & 1 == 0,
            },
            10 => Op::Wait(r.u8()),
            11 => Op::WaitLong(r.u16()),
            12 => Op::Send {
                conn: r.u8(),
                len: r.u16(),
            },
            13 => Op::App {
                conn: r.u8(),
                action: match r.u8() % 6 {
                    0 => AppAction::Close,
                    1 => AppAction::Abort,
                    2 => AppAction::NoDelay,
                    3 => AppAction::Delay,
                    4 => AppAction::Recv,
                    _ => AppAction::Release,
                },
            },
            14 => Op::Connect(r.u8()),
            _ => {
                let b = r.u8();
                Op::Listen(b & 3, b & 4 != 0)
            }
        })
    }

    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Op::Seg(s) => {
                out.push(0);
                s.encode(out);
            }
            Op::OffloadSeg(s) => {
                out.push(0x80);
                s.encode(out);
            }
            Op::Raw(b) => {
                out.push(7);
                if b.len() < 255 {
                    out.push(b.len() as u8);
                } else {
                    out.push(255);
                    let n = b.len().min(65535);
                    out.extend_from_slice(&(n as u16).to_be_bytes());
                }
                out.extend_from_slice(&b[..b.len().min(65535)]);
            }
            Op::Corrupt { seg, at, xor } | Op::OffloadCorrupt { seg, at, xor } => {
                out.push(if matches!(self, Op::Corrupt { .. }) {
                    8
                } else {
                    0x88
                });
                seg.encode(out);
                out.extend_from_slice(&at.to_be_bytes());
                out.push(*xor);
            }
            Op::Ping { peer, len, good } => {
                out.extend_from_slice(&[9, *peer, *len, u8::from(!*good)]);
            }
            Op::Wait(ms) => out.extend_from_slice(&[10, *ms]),
            Op::WaitLong(t) => {
                out.push(11);
                out.extend_from_slice(&t.to_be_bytes());
            }
            Op::Send { conn, len } => {
                out.extend_from_slice(&[12, *conn]);
                out.extend_from_slice(&len.to_be_bytes());
            }
            Op::App { conn, action } => {
                let a = match action {
                    AppAction::Close => 0,
                    AppAction::Abort => 1,
                    AppAction::NoDelay => 2,
                    AppAction::Delay => 3,
                    AppAction::Recv => 4,
                    AppAction::Release => 5,
                };
                out.extend_from_slice(&[13, *conn, a]);
            }
            Op::Connect(p) => out.extend_from_slice(&[14, *p]),
            Op::Listen(p, on) => out.extend_from_slice(&[15, (p & 3) | u8::from(*on) << 2]),
        }
    }
}

/// Endpoint configuration switches (the first input byte).
pub mod cfg {
    /// Timestamps on.
    pub const TS: u8 = 1;
    /// SACK on.
    pub const SACK: u8 = 2;
    /// Window scaling on.
    pub const WSCALE: u8 = 4;
    /// SYN cookies on.
    pub const COOKIES: u8 = 8;
    /// Nagle on.
    pub const NAGLE: u8 = 16;
    /// 2 KiB buffers instead of 64 KiB.
    pub const SMALL_BUFFERS: u8 = 32;
    /// Keep-alive on (1 s idle, 1 s interval, 3 probes).
    pub const KEEPALIVE: u8 = 64;
    /// Tight limits: SYN backlog 2, 8 connections, control queue 4, 2 OOO
    /// ranges, 2 challenge ACKs per second.
    pub const TIGHT: u8 = 128;
    /// Linux-like defaults.
    pub const DEFAULT: u8 = TS | SACK | WSCALE | COOKIES | NAGLE;
}

/// Simulated application switches (the second input byte).
pub mod app {
    /// Read on every `Readable`.
    pub const EAGER_READ: u8 = 1;
    /// Send 3000 bytes on `Connected`, on accept and on `Writable`.
    pub const EAGER_WRITE: u8 = 2;
    /// Echo back what is read.
    pub const ECHO: u8 = 4;
    /// Close on `PeerClosed`.
    pub const CLOSE_ON_EOF: u8 = 8;
    /// Abort every accepted connection (refuse it).
    pub const REFUSE: u8 = 16;
    /// Read with `recv_hold` and release only on [`super::AppAction::Release`].
    pub const HOLD: u8 = 32;
    /// A device with offload: `tso_max` 65535 and checksum offload on,
    /// output through `poll_transmit_offload` (the harness completes the
    /// checksum and checks every TSO piece against the MTU).
    pub const OFFLOAD: u8 = 64;
}

/// An `endpoint` fuzz input: configuration, application behaviour, program.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Program {
    /// [`cfg`] bits.
    pub config: u8,
    /// [`app`] bits.
    pub app: u8,
    /// The operations.
    pub ops: Vec<Op>,
}

impl Program {
    /// Decodes any byte string.
    pub fn decode(data: &[u8]) -> Program {
        let mut r = Reader::new(data);
        let config = r.u8();
        let app = r.u8();
        let mut ops = Vec::new();
        while let Some(op) = Op::decode(&mut r) {
            ops.push(op);
        }
        Program { config, app, ops }
    }
    /// Encodes for the corpus (decode(encode(p)) == p).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![self.config, self.app];
        for op in &self.ops {
            op.encode(&mut out);
        }
        out
    }
}

// ===========================================================================
// endpoint: execution
// ===========================================================================

/// Our IPv4 address.
pub const LOCAL_V4: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
/// Our IPv6 address.
pub const LOCAL_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1);
/// The ports choice 0..4 of [`Seg::port`] and [`Op::Listen`] name (3 is
/// replaced by the last connect's port for segments).
pub const PORTS: [u16; 4] = [80, 7, 9, 8080];

/// Peer `i % 8`: v4 and v6, two sharing an address, one near the port limit.
pub fn peer_addr(i: u8) -> SocketAddr {
    let v4 = |a, b, c, d, p| SocketAddr::new(IpAddr::V4(Ipv4Addr::new(a, b, c, d)), p);
    let v6 = |h, p| SocketAddr::new(IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, h)), p);
    match i % 8 {
        0 => v4(10, 0, 0, 2, 40000),
        1 => v4(10, 0, 0, 2, 40001),
        2 => v4(10, 0, 0, 3, 1024),
        3 => v4(192, 168, 7, 9, 65535),
        4 => v6(2, 40000),
        5 => v6(2, 40001),
        6 => v6(3, 5000),
        _ => v4(10, 0, 0, 2, 80),
    }
}

fn local_for(remote: SocketAddr) -> IpAddr {
    match remote {
        SocketAddr::V4(_) => IpAddr::V4(LOCAL_V4),
        SocketAddr::V6(_) => IpAddr::V6(LOCAL_V6),
    }
}

/// What the simulated peer knows about one conversation (peer, local port).
#[derive(Clone, Copy, Debug)]
struct Conversation {
    /// The peer's next sequence number.
    snd_nxt: SeqNum,
    /// The highest sequence number the endpoint has sent plus one.
    ep_nxt: SeqNum,
    /// The endpoint's last acknowledgment number.
    ep_ack: SeqNum,
    /// The peer's last acknowledgment number.
    last_ack: SeqNum,
    /// The peer's timestamp clock.
    ts_clock: u32,
    /// The endpoint's last TSval.
    ep_tsval: u32,
    /// The endpoint's initial sequence number (from its SYN or SYN-ACK).
    ep_iss: Option<SeqNum>,
}

impl Conversation {
    fn new(peer: u8, port: u16) -> Self {
        // Peer 0 starts just below 2^32 so that its data crosses the wrap.
        let isn = match peer {
            0 => 0xffff_ff00,
            p => u32::from(p).wrapping_mul(0x2545_f491) ^ u32::from(port) << 8,
        };
        Conversation {
            snd_nxt: SeqNum(isn),
            ep_nxt: SeqNum(0),
            ep_ack: SeqNum(isn),
            last_ack: SeqNum(0),
            ts_clock: 1000 + u32::from(peer) * 77,
            ep_tsval: 0,
            ep_iss: None,
        }
    }
}

/// Most connections the simulated application keeps handles to.
const MAX_APP_CONNS: usize = 32;
/// `poll_transmit` calls after one input before we call it a livelock.
const MAX_TX_PER_STEP: usize = 100_000;
/// `poll_event` calls after one input before we call it a livelock.
const MAX_EV_PER_STEP: usize = 100_000;

struct Harness {
    ep: Endpoint,
    now: Instant,
    app: u8,
    mtu: usize,
    offload: bool,
    max_conns: usize,
    conns: Vec<ConnId>,
    stale: Option<ConnId>,
    /// The last port `connect` chose per peer.
    connected: BTreeMap<u8, u16>,
    convs: BTreeMap<(u8, u16), Conversation>,
    /// Per connection, the next byte `recv` must return: peers send the
    /// low byte of each byte's sequence number, so the received stream
    /// counts up by one (mod 256) whatever the segmentation, overlaps and
    /// retransmissions. `None` for programs that corrupt data behind the
    /// checksum's back (`OffloadCorrupt`).
    rx_next: Option<BTreeMap<ConnId, u8>>,
    /// Per connection, the bytes `send` accepted: the application writes
    /// byte `i` of its stream as `i % 251`, and every data segment the
    /// endpoint emits must carry exactly that at its offset from the ISS.
    tx_sent: BTreeMap<ConnId, u64>,
    /// Handles `accept` or `connect` returned: only these may get events.
    known: BTreeSet<ConnId>,
    /// Handles that got `Closed`: no event may follow.
    closed: BTreeSet<ConnId>,
    /// Handles the application aborted: `Closed` must follow.
    aborted: BTreeSet<ConnId>,
    /// RST segments the endpoint emitted.
    rst_emitted: u64,
    buf: Vec<u8>,
    scratch: Vec<u8>,
    digest: std::collections::hash_map::DefaultHasher,
    handled: u64,
}

fn make_config(bits: u8, app_bits: u8) -> Config {
    let offload = app_bits & app::OFFLOAD != 0;
    let tight = bits & cfg::TIGHT != 0;
    let buffers = if bits & cfg::SMALL_BUFFERS != 0 {
        2048
    } else {
        65536
    };
    Config {
        seed: 0x5eed,
        addrs: vec![IpAddr::V4(LOCAL_V4), IpAddr::V6(LOCAL_V6)],
        timestamps: bits & cfg::TS != 0,
        sack: bits & cfg::SACK != 0,
        window_scaling: bits & cfg::WSCALE != 0,
        syn_cookies: bits & cfg::COOKIES != 0,
        nagle: bits & cfg::NAGLE != 0,
        send_buffer: buffers,
        recv_buffer: buffers,
        keepalive: (bits & cfg::KEEPALIVE != 0).then_some(Keepalive {
            idle: Duration::from_secs(1),
            interval: Duration::from_secs(1),
            count: 3,
        }),
        syn_backlog: if tight { 2 } else { 64 },
        max_connections: if tight { 8 } else { 256 },
        max_control_queue: if tight { 4 } else { 256 },
        max_ooo_ranges: if tight { 2 } else { 32 },
        challenge_ack_limit: if tight { 2 } else { 1000 },
        buffer_pool_bytes: if tight { 16 << 10 } else { 4 << 20 },
        tso_max: if offload { 65535 } else { 0 },
        checksum_offload: offload,
        ..Config::default()
    }
}

impl Harness {
    fn new(config_bits: u8, app: u8) -> Harness {
        let config = make_config(config_bits, app);
        let mtu = config.mtu;
        let max_conns = config.max_connections;
        let mut ep = Endpoint::new(config).expect("the fuzz configuration is valid");
        let backlog = if config_bits & cfg::TIGHT != 0 { 1 } else { 16 };
        ep.listen(PORTS[0], backlog).expect("listen 80");
        ep.listen(PORTS[1], backlog).expect("listen 7");
        Harness {
            ep,
            now: Instant::from_secs(1),
            app,
            mtu,
            offload: app & app::OFFLOAD != 0,
            max_conns,
            conns: Vec::new(),
            stale: None,
            connected: BTreeMap::new(),
            convs: BTreeMap::new(),
            rx_next: Some(BTreeMap::new()),
            tx_sent: BTreeMap::new(),
            known: BTreeSet::new(),
            closed: BTreeSet::new(),
            aborted: BTreeSet::new(),
            rst_emitted: 0,
            buf: vec![0u8; 65536 + 100],
            scratch: vec![0u8; 65536],
            digest: std::collections::hash_map::DefaultHasher::new(),
            handled: 0,
        }
    }

    fn conn(&self, i: u8) -> Option<ConnId> {
        if i == 255 {
            return self.stale;
        }
        if self.conns.is_empty() {
            return None;
        }
        Some(self.conns[usize::from(i) % self.conns.len()])
    }

    fn local_port(&self, seg: &Seg) -> u16 {
        match seg.port & 3 {
            3 => self.connected.get(&(seg.peer & 7)).copied().unwrap_or(80),
            p => PORTS[usize::from(p)],
        }
    }

    /// Builds the packet for `seg` into `self.buf`; returns its length.
    fn build(&mut self, seg: &Seg) -> usize {
        let peer = seg.peer & 7;
        let remote = peer_addr(peer);
        let lport = self.local_port(seg);
        let conv = self
            .convs
            .entry((peer, lport))
            .or_insert_with(|| Conversation::new(peer, lport));
        let flags = TcpFlags(seg.flags);
        let seq = match seg.seq {
            SeqSel::Next => conv.snd_nxt,
            SeqSel::Delta(d) => SeqNum(conv.snd_nxt.0.wrapping_add(i32::from(d) as u32)),
            SeqSel::Raw(v) => SeqNum(v),
            SeqSel::EpAck => conv.ep_ack,
            SeqSel::Ahead(v) => conv.snd_nxt + u32::from(v),
        };
        let ack = match seg.ack {
            AckSel::All => conv.ep_nxt,
            AckSel::Back(v) => conv.ep_nxt - u32::from(v),
            AckSel::Same => conv.last_ack,
            AckSel::Raw(v) => SeqNum(v),
            AckSel::Beyond(v) => conv.ep_nxt + u32::from(v),
        };
        let mut options = TcpOptions {
            mss: seg.mss,
            window_scale: seg.wscale,
            sack_permitted: seg.sack_perm,
            timestamps: None,
            sack: SackBlocks::default(),
        };
        if let Some(t) = seg.ts {
            let val = match t {
                TsSel::Fresh | TsSel::ZeroEcr => {
                    conv.ts_clock = conv.ts_clock.wrapping_add(1);
                    conv.ts_clock
                }
                TsSel::Same => conv.ts_clock,
                TsSel::Old => conv.ts_clock.wrapping_sub(0x4000_0000),
            };
            let ecr = if t == TsSel::ZeroEcr {
                0
            } else {
                conv.ep_tsval
            };
            options.timestamps = Some((val, ecr));
        }
        for &(off, len) in seg.sack.iter().take(3) {
            let left = conv.last_ack + u32::from(off);
            options.sack.push(left, left + u32::from(len));
        }
        // Keep the header expressible (at most 40 option bytes).
        while options.encoded_len() > 40 && !options.sack.is_empty() {
            let n = options.sack.len() - 1;
            options.sack.truncate(n);
        }
        let repr = TcpRepr {
            src_port: remote.port(),
            dst_port: lport,
            seq,
            ack,
            flags,
            window: seg.window,
            options,
        };
        // Bookkeeping of the simulated peer.
        let seg_len = u32::from(seg.len) + u32::from(flags.syn()) + u32::from(flags.fin());
        match seg.seq {
            _ if flags.syn() && !flags.ack() && !flags.rst() => conv.snd_nxt = seq + seg_len,
            SeqSel::Next | SeqSel::Delta(_) | SeqSel::EpAck if !flags.rst() => {
                conv.snd_nxt = conv.snd_nxt.max(seq + seg_len);
            }
            _ => {}
        }
        if flags.ack() {
            conv.last_ack = ack;
        }
        let local = local_for(remote);
        let off = tcp_payload_offset(remote.ip(), &repr);
        let len = usize::from(seg.len).min(self.buf.len() - off);
        // Each byte is the low byte of its own sequence number (data
        // starts after the SYN), so any mix of segments is consistent.
        let data_seq = seq + u32::from(flags.syn());
        for (k, b) in self.buf[off..off + len].iter_mut().enumerate() {
            *b = (data_seq.0 as usize).wrapping_add(k) as u8;
        }
        match emit_tcp(&mut self.buf, remote.ip(), local, 64, &repr, len) {
            Some(n) => n,
            None => {
                // Too long for the IP length field: send it without payload.
                emit_tcp(&mut self.buf, remote.ip(), local, 64, &repr, 0)
                    .expect("a header-only segment always fits")
            }
        }
    }

    fn handle_buf(&mut self, n: usize) {
        self.handled += 1;
        self.ep.handle(self.now, &self.buf[..n]);
    }

    fn run_op(&mut self, op: &Op) {
        // RFC 9293 §3.10.7: a RST is never sent in answer to a RST.
        let rst_in = matches!(op, Op::Seg(s) | Op::OffloadSeg(s) if TcpFlags(s.flags).rst());
        let rst_before = self.rst_emitted;
        self.run_op_inner(op);
        self.drain();
        if rst_in {
            assert_eq!(self.rst_emitted, rst_before, "a RST answered a RST");
        }
    }

    fn run_op_inner(&mut self, op: &Op) {
        match op {
            Op::Seg(seg) => {
                let n = self.build(seg);
                self.handle_buf(n);
            }
            Op::OffloadSeg(seg) => {
                let n = self.build(seg);
                self.handled += 1;
                self.ep.handle_offloaded(self.now, &self.buf[..n], true);
            }
            Op::OffloadCorrupt { seg, at, xor } => {
                let n = self.build(seg);
                self.buf[usize::from(*at) % n] ^= xor | 1;
                self.handled += 1;
                self.ep.handle_offloaded(self.now, &self.buf[..n], true);
            }
            Op::Raw(bytes) => {
                self.handled += 1;
                self.ep.handle(self.now, bytes);
            }
            Op::Corrupt { seg, at, xor } => {
                let n = self.build(seg);
                self.buf[usize::from(*at) % n] ^= xor | 1;
                self.handle_buf(n);
            }
            Op::Ping { peer, len, good } => {
                let remote = peer_addr(*peer);
                let data = [0xa5u8; 256];
                let echo = IcmpEcho {
                    ident: u16::from(*peer),
                    seq_no: u16::from(*len),
                    data: &data[..usize::from(*len)],
                };
                // Build a reply from the peer and turn it into a request.
                let n = emit_icmp_echo_reply(&mut self.buf, remote.ip(), local_for(remote), &echo)
                    .expect("room for an echo");
                let iph = if remote.is_ipv4() { 20 } else { 40 };
                self.buf[iph] = if remote.is_ipv4() { 8 } else { 128 };
                self.buf[iph + 2] = 0;
                self.buf[iph + 3] = 0;
                let init = if remote.is_ipv4() {
                    0
                } else {
                    pseudo_header_sum(
                        remote.ip(),
                        local_for(remote),
                        PROTO_ICMPV6,
                        (n - iph) as u32,
                    )
                };
                let mut c = checksum_fold(checksum_sum(init, &self.buf[iph..n]));
                if !good {
                    c ^= 0x5a5a;
                }
                self.buf[iph + 2..iph + 4].copy_from_slice(&c.to_be_bytes());
                self.handle_buf(n);
            }
            Op::Wait(ms) => {
                self.now += Duration::from_millis(u64::from(*ms));
                self.run_timers();
            }
            Op::WaitLong(t) => {
                self.now += Duration::from_millis(u64::from(*t) * 10);
                self.run_timers();
            }
            Op::Send { conn, len } => {
                if let Some(id) = self.conn(*conn) {
                    self.send(id, usize::from(*len));
                }
            }
            Op::App { conn, action } => {
                if let Some(id) = self.conn(*conn) {
                    match action {
                        AppAction::Close => {
                            let _ = self.ep.close(id);
                        }
                        AppAction::Abort => {
                            self.abort(id);
                        }
                        AppAction::NoDelay => {
                            let _ = self.ep.set_nodelay(id, true);
                        }
                        AppAction::Delay => {
                            let _ = self.ep.set_nodelay(id, false);
                        }
                        AppAction::Recv => self.read(id, false),
                        AppAction::Release => {
                            let _ = self.ep.release(id, 1000);
                        }
                    }
                }
            }
            Op::Connect(p) => {
                let remote = peer_addr(*p);
                let local = if p & 0x80 != 0 {
                    IpAddr::V4(Ipv4Addr::new(10, 9, 9, 9))
                } else {
                    local_for(remote)
                };
                match self.ep.connect(self.now, local, remote) {
                    Ok(id) => {
                        assert!(p & 0x80 == 0, "connect from a foreign address succeeded");
                        assert!(self.known.insert(id), "connect returned a live handle {id}");
                        let info = self.ep.info(id).expect("a new connection has info");
                        self.connected.insert(p & 7, info.local.port());
                        // A new conversation: forget the old one's numbers.
                        self.convs.remove(&(p & 7, info.local.port()));
                        self.adopt(id);
                    }
                    Err(e) => {
                        let _ = e;
                    }
                }
            }
            Op::Listen(p, on) => {
                let port = PORTS[usize::from(p & 3)];
                if *on {
                    let _ = self.ep.listen(port, 4);
                } else {
                    self.ep.unlisten(port);
                }
            }
        }
    }

    fn run_timers(&mut self) {
        for _ in 0..64 {
            match self.ep.poll_timeout() {
                Some(t) if t <= self.now => {
                    self.ep.handle_timeout(self.now);
                    self.drain();
                }
                _ => break,
            }
        }
    }

    fn abort(&mut self, id: ConnId) {
        if self.ep.abort(id).is_ok() {
            self.aborted.insert(id);
        }
    }

    fn adopt(&mut self, id: ConnId) {
        if self.conns.len() >= MAX_APP_CONNS {
            // The application has enough: refuse.
            self.abort(id);
            return;
        }
        self.conns.push(id);
    }

    fn send(&mut self, id: ConnId, len: usize) {
        let len = len.min(self.scratch.len());
        let sent = self.tx_sent.entry(id).or_insert(0);
        for (k, b) in self.scratch[..len].iter_mut().enumerate() {
            *b = ((*sent + k as u64) % 251) as u8;
        }
        if let Ok(n) = self.ep.send(id, &self.scratch[..len]) {
            assert!(n <= len, "send took more than offered");
            *sent += n as u64;
        }
    }

    /// Checks received bytes against the peers' pattern.
    fn check_rx(&mut self, id: ConnId, n: usize) {
        let Some(rx) = self.rx_next.as_mut() else {
            return;
        };
        let mut next = rx.get(&id).copied();
        for (k, &b) in self.scratch[..n].iter().enumerate() {
            if let Some(e) = next {
                assert_eq!(b, e, "{id}: byte {k} of a read is {b}, expected {e}");
            }
            next = Some(b.wrapping_add(1));
        }
        if let Some(v) = next {
            rx.insert(id, v);
        }
    }

    fn read(&mut self, id: ConnId, from_event: bool) {
        let hold = self.app & app::HOLD != 0 && from_event;
        for _ in 0..1000 {
            let r = if hold {
                self.ep.recv_hold(id, &mut self.scratch[..1500])
            } else {
                self.ep.recv(id, &mut self.scratch[..4096])
            };
            match r {
                Ok(0) => break,
                Ok(n) => {
                    assert!(n <= 4096, "recv wrote past the buffer");
                    n.hash(&mut self.digest);
                    self.check_rx(id, n);
                    if self.app & app::ECHO != 0 {
                        // As many bytes back (of the application's pattern).
                        self.send(id, n);
                    }
                }
                Err(_) => break,
            }
        }
    }

    fn on_event(&mut self, e: Event) {
        let id = match e {
            Event::Incoming { .. } => None,
            // The harness opens no deferred listeners.
            Event::Syn(_) | Event::SynExpired(_) => None,
            Event::Connected(id)
            | Event::Readable(id)
            | Event::Writable(id)
            | Event::PeerClosed(id)
            | Event::Reset(id)
            | Event::TimedOut(id)
            | Event::Unreachable(id, _)
            | Event::Closed(id) => Some(id),
        };
        if let Some(id) = id {
            assert!(
                self.known.contains(&id),
                "{e:?} for a handle never returned"
            );
            assert!(!self.closed.contains(&id), "{e:?} after Closed");
        }
        match e {
            Event::Syn(_) | Event::SynExpired(_) => {}
            Event::Incoming { port } => {
                (0u8, port).hash(&mut self.digest);
                while let Some(id) = self.ep.accept(port) {
                    id.hash(&mut self.digest);
                    assert!(self.known.insert(id), "accept returned {id} twice");
                    if self.app & app::REFUSE != 0 {
                        self.abort(id);
                        continue;
                    }
                    self.adopt(id);
                    if self.app & app::EAGER_WRITE != 0 {
                        self.send(id, 3000);
                    }
                }
            }
            Event::Connected(id) => {
                (1u8, id).hash(&mut self.digest);
                if self.app & app::EAGER_WRITE != 0 {
                    self.send(id, 3000);
                }
            }
            Event::Readable(id) => {
                (2u8, id).hash(&mut self.digest);
                if self.app & app::EAGER_READ != 0 {
                    self.read(id, true);
                }
            }
            Event::Writable(id) => {
                (3u8, id).hash(&mut self.digest);
                if self.app & app::EAGER_WRITE != 0 {
                    self.send(id, 3000);
                }
            }
            Event::PeerClosed(id) => {
                (4u8, id).hash(&mut self.digest);
                if self.app & app::EAGER_READ != 0 {
                    self.read(id, true);
                }
                if self.app & app::CLOSE_ON_EOF != 0 {
                    let _ = self.ep.close(id);
                }
            }
            Event::Reset(id) => (5u8, id).hash(&mut self.digest),
            Event::TimedOut(id) => (6u8, id).hash(&mut self.digest),
            Event::Unreachable(id, why) => (8u8, id, why).hash(&mut self.digest),
            Event::Closed(id) => {
                (7u8, id).hash(&mut self.digest);
                self.closed.insert(id);
                self.conns.retain(|c| *c != id);
                self.stale = Some(id);
                // The handle is dead: every call must say so, not panic.
                assert!(self.ep.send(id, b"x").is_err(), "send on a closed handle");
            }
        }
    }

    /// Checks one packet the endpoint emitted and updates the peers' view.
    fn observe(&mut self, t: Transmit) {
        let n = t.len;
        if t.partial_checksum {
            assert!(self.offload, "partial checksum without checksum offload");
            // Complete the checksum as the device would: sum from the TCP
            // header (the field holds the pseudo-header sum), complement.
            let iph = match self.buf.first().map(|b| b >> 4) {
                Some(4) => 20,
                Some(6) => 40,
                v => panic!("partial checksum on a packet of IP version {v:?}"),
            };
            assert!(n >= iph + 20, "partial checksum on a short packet");
            let c = checksum_fold(checksum_sum(0, &self.buf[iph..n]));
            self.buf[iph + 16..iph + 18].copy_from_slice(&c.to_be_bytes());
        }
        let pkt = &self.buf[..n];
        pkt.hash(&mut self.digest);
        let ip = parse_ip(pkt).expect("the endpoint emitted a packet that does not parse");
        assert!(
            ip.src == IpAddr::V4(LOCAL_V4) || ip.src == IpAddr::V6(LOCAL_V6),
            "emitted from an address that is not ours: {}",
            ip.src
        );
        match ip.protocol {
            PROTO_TCP => {}
            PROTO_ICMP | PROTO_ICMPV6 => {
                assert_eq!(
                    parse_icmp_echo(&ip).err(),
                    Some(DropReason::IcmpIgnored),
                    "emitted ICMP is not a valid echo reply"
                );
                return;
            }
            p => panic!("emitted protocol {p}"),
        }
        let seg = parse_tcp(&ip).expect("the endpoint emitted a bad TCP segment");
        let wire_len = if t.segment_size == 0 {
            n
        } else {
            assert!(self.offload, "a TSO segment without tso_max");
            // The device cuts the payload into pieces of `segment_size`.
            n - seg.payload.len() + seg.payload.len().min(usize::from(t.segment_size))
        };
        assert!(
            wire_len <= self.mtu,
            "emitted {wire_len} bytes on the wire, MTU {}",
            self.mtu
        );
        assert!(!seg.bad_options, "emitted malformed options");
        let f = seg.flags;
        if f.rst() {
            self.rst_emitted += 1;
        }
        assert!(
            !(f.syn() && (f.rst() || f.fin())),
            "emitted SYN with RST/FIN"
        );
        assert!(
            seg.options.mss.is_none() || f.syn(),
            "MSS option outside a SYN"
        );
        assert!(seg.src_port != 0 && seg.dst_port != 0, "port zero emitted");
        let remote = SocketAddr::new(ip.dst, seg.dst_port);
        // Replies to raw or corrupted packets go to whatever address they
        // came from; only the simulated peers keep a conversation.
        let Some(peer) = (0..8u8).find(|&p| peer_addr(p) == remote) else {
            return;
        };
        let conv = self
            .convs
            .entry((peer, seg.src_port))
            .or_insert_with(|| Conversation::new(peer, seg.src_port));
        if f.syn() {
            conv.ep_nxt = seg.seq + seg.seg_len();
            conv.ep_iss = Some(seg.seq);
        } else if !f.rst() {
            conv.ep_nxt = conv.ep_nxt.max(seg.seq + seg.seg_len());
        }
        if f.ack() {
            conv.ep_ack = seg.ack;
        }
        if let Some((val, _)) = seg.options.timestamps {
            conv.ep_tsval = val;
        }
        // The data must be the application's stream at this offset.
        if let (Some(iss), false) = (conv.ep_iss, f.syn() || f.rst()) {
            let start = (seg.seq - 1).diff(iss);
            for (k, &b) in seg.payload.iter().enumerate() {
                let off = i64::from(start) + k as i64;
                if off < 0 {
                    continue; // a keep-alive's garbage byte before the stream
                }
                let e = (off % 251) as u8;
                assert_eq!(
                    b, e,
                    "emitted byte at stream offset {off} is {b}, the application wrote {e}"
                );
            }
        }
    }

    /// Drains every output after an input, as a driver must.
    fn drain(&mut self) {
        for _round in 0..8 {
            let mut progress = false;
            let mut sent = 0;
            loop {
                let t = if self.offload {
                    self.ep.poll_transmit_offload(self.now, &mut self.buf)
                } else {
                    self.ep
                        .poll_transmit(self.now, &mut self.buf)
                        .map(|len| Transmit {
                            len,
                            segment_size: 0,
                            partial_checksum: false,
                        })
                };
                let Some(t) = t else { break };
                assert!(
                    t.len <= self.buf.len(),
                    "poll_transmit length past the buffer"
                );
                self.observe(t);
                sent += 1;
                assert!(sent < MAX_TX_PER_STEP, "poll_transmit does not stop");
                progress = true;
            }
            let mut events = 0;
            while let Some(e) = self.ep.poll_event() {
                self.on_event(e);
                events += 1;
                assert!(events < MAX_EV_PER_STEP, "poll_event does not stop");
                progress = true;
            }
            if !progress {
                break;
            }
        }
        assert!(
            self.ep.connection_count() <= self.max_conns,
            "connection table over its limit"
        );
        if let Some(t) = self.ep.poll_timeout() {
            t.hash(&mut self.digest);
        }
    }

    /// After the program: let time run so that every timer path fires.
    fn finish(&mut self) {
        let end = self.now + Duration::from_secs(600);
        for _ in 0..64 {
            match self.ep.poll_timeout() {
                Some(t) if t <= end => {
                    if t > self.now {
                        self.now = t;
                    }
                    self.ep.handle_timeout(self.now);
                    self.drain();
                }
                _ => break,
            }
        }
        assert_eq!(
            self.ep.stats().packets_in,
            self.handled,
            "packets_in does not count every handle() call"
        );
        for id in &self.aborted {
            assert!(
                self.closed.contains(id),
                "{id} was aborted but never Closed"
            );
        }
    }
}

/// What one run of an `endpoint` program produced.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// A digest of every packet the endpoint emitted and every event.
    pub digest: u64,
    /// The endpoint's counters at the end.
    pub stats: tcp::Stats,
}

/// Runs one `endpoint` program.
pub fn run_endpoint(data: &[u8]) -> Outcome {
    let prog = Program::decode(data);
    let mut h = Harness::new(prog.config, prog.app);
    if prog
        .ops
        .iter()
        .any(|op| matches!(op, Op::OffloadCorrupt { .. }))
    {
        h.rx_next = None;
    }
    h.drain();
    for op in &prog.ops {
        h.run_op(op);
    }
    h.finish();
    Outcome {
        digest: h.digest.finish(),
        stats: *h.ep.stats(),
    }
}

/// The `endpoint` fuzz target: runs the program twice and checks that the
/// endpoint is deterministic (same inputs, same bytes out).
pub fn endpoint(data: &[u8]) {
    let a = run_endpoint(data).digest;
    let b = run_endpoint(data).digest;
    assert_eq!(a, b, "the endpoint is not deterministic");
}

// ===========================================================================
// Seeds
// ===========================================================================

/// Seed inputs for `parse_packet`: valid and slightly broken packets of
/// every kind the parsers know.
pub fn parse_packet_seeds() -> Vec<(String, Vec<u8>)> {
    let a4 = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2));
    let b4 = IpAddr::V4(LOCAL_V4);
    let a6 = IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2));
    let b6 = IpAddr::V6(LOCAL_V6);
    let tcp = |src: IpAddr, dst: IpAddr, repr: &TcpRepr, payload: &[u8]| -> Vec<u8> {
        let off = tcp_payload_offset(src, repr);
        let mut buf = vec![0u8; off + payload.len()];
        buf[off..].copy_from_slice(payload);
        let n = emit_tcp(&mut buf, src, dst, 64, repr, payload.len()).expect("seed fits");
        buf.truncate(n);
        buf
    };
    let syn_opts = TcpOptions {
        mss: Some(1460),
        window_scale: Some(7),
        sack_permitted: true,
        timestamps: Some((12345, 0)),
        sack: SackBlocks::default(),
    };
    let syn = TcpRepr {
        src_port: 40000,
        dst_port: 80,
        seq: SeqNum(0xffff_fff0),
        ack: SeqNum(0),
        flags: TcpFlags::SYN,
        window: 64240,
        options: syn_opts,
    };
    let mut sack = SackBlocks::default();
    sack.push(SeqNum(1000), SeqNum(2000));
    sack.push(SeqNum(3000), SeqNum(4000));
    sack.push(SeqNum(5000), SeqNum(6000));
    let data = TcpRepr {
        flags: TcpFlags::ACK | TcpFlags::PSH,
        seq: SeqNum(1),
        ack: SeqNum(77),
        options: TcpOptions {
            timestamps: Some((5, 6)),
            sack,
            ..TcpOptions::default()
        },
        ..syn
    };
    let mut seeds: Vec<(String, Vec<u8>)> = vec![
        ("tcp-syn-v4".into(), tcp(a4, b4, &syn, b"")),
        ("tcp-syn-v6".into(), tcp(a6, b6, &syn, b"")),
        ("tcp-data-sack-v4".into(), tcp(a4, b4, &data, b"hello")),
        ("tcp-data-sack-v6".into(), tcp(a6, b6, &data, &[7u8; 300])),
    ];
    for (name, f) in [
        ("fin", TcpFlags::FIN | TcpFlags::ACK),
        ("rst", TcpFlags::RST),
        ("rst-ack", TcpFlags::RST | TcpFlags::ACK),
        ("syn-ack", TcpFlags::SYN | TcpFlags::ACK),
        ("syn-fin", TcpFlags::SYN | TcpFlags::FIN),
        ("all-flags", TcpFlags(0xff)),
    ] {
        let r = TcpRepr {
            flags: f,
            options: TcpOptions::default(),
            ..syn
        };
        seeds.push((format!("tcp-{name}-v4"), tcp(a4, b4, &r, b"")));
    }
    // Raw option bytes the encoder would never write: unknown kinds, bad
    // lengths, a zero length, an overrun, EOL in the middle.
    for (name, opts) in [
        (
            "unknown",
            &[30u8, 4, 0, 0, 2, 4, 5, 0xb4, 254, 2, 3, 3, 9, 0][..],
        ),
        ("zero-len", &[2, 4, 0, 100, 99, 0, 3, 3, 1, 0, 0, 0][..]),
        ("overrun", &[1, 1, 8, 10, 0, 0][..]),
        ("bad-known-len", &[2, 3, 1, 3, 2, 1, 8, 9, 0, 0, 0, 0][..]),
        ("eol-first", &[0, 2, 4, 5, 0xb4, 1, 1, 1][..]),
        (
            "sack-5-blocks",
            &[
                1, 1, 5, 34, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 4, 0, 0, 0, 5, 0, 0, 0,
                6, 0, 0, 0, 7, 0, 0, 0, 8,
            ][..],
        ),
    ] {
        let mut o = opts.to_vec();
        while o.len() % 4 != 0 {
            o.push(0);
        }
        seeds.push((format!("tcp-opts-{name}-v4"), raw_tcp_v4(a4, b4, &o, b"xy")));
    }
    // IPv4 with options (IHL 6), a fragment, trailing padding, UDP.
    let base = tcp(a4, b4, &data, b"abc");
    let mut with_opts = base[..20].to_vec();
    with_opts.extend_from_slice(&[1, 1, 1, 0]); // NOP NOP NOP EOL
    with_opts.extend_from_slice(&base[20..]);
    with_opts[0] = 0x46;
    let total = with_opts.len() as u16;
    with_opts[2..4].copy_from_slice(&total.to_be_bytes());
    fix_ipv4_checksum(&mut with_opts);
    seeds.push(("ipv4-options".into(), with_opts));
    let mut frag = base.clone();
    frag[6] = 0x20; // MF
    fix_ipv4_checksum(&mut frag);
    seeds.push(("ipv4-fragment".into(), frag));
    let mut frag2 = base.clone();
    frag2[6] = 0;
    frag2[7] = 8; // offset 64
    fix_ipv4_checksum(&mut frag2);
    seeds.push(("ipv4-fragment-offset".into(), frag2));
    let mut padded = base.clone();
    padded.extend_from_slice(&[0u8; 10]);
    seeds.push(("ipv4-trailing-padding".into(), padded));
    let mut udp = base.clone();
    udp[9] = 17;
    fix_ipv4_checksum(&mut udp);
    seeds.push(("ipv4-udp".into(), udp));
    let mut badsum = base.clone();
    badsum[10] ^= 0xff;
    seeds.push(("ipv4-bad-header-checksum".into(), badsum));
    let mut tcpsum = base.clone();
    let last = tcpsum.len() - 1;
    tcpsum[last] ^= 1;
    seeds.push(("tcp-bad-checksum".into(), tcpsum));
    seeds.push(("truncated-ipv4".into(), base[..30].to_vec()));
    seeds.push((
        "truncated-ipv6".into(),
        tcp(a6, b6, &syn, b"")[..39].to_vec(),
    ));
    let mut short_total = base.clone();
    short_total[2..4].copy_from_slice(&30u16.to_be_bytes());
    fix_ipv4_checksum(&mut short_total);
    seeds.push(("ipv4-total-length-short".into(), short_total));
    seeds.push(("empty".into(), Vec::new()));
    seeds.push(("version-5".into(), vec![0x50; 40]));
    // IPv6 with extension headers before TCP: hop-by-hop, destination
    // options, routing; and a fragment header.
    let v6 = tcp(a6, b6, &data, b"ext");
    for (name, kind) in [("hop-by-hop", 0u8), ("dest-opts", 60), ("routing", 43)] {
        seeds.push((format!("ipv6-{name}"), ipv6_with_ext(&v6, kind, 6)));
    }
    seeds.push(("ipv6-fragment-header".into(), ipv6_with_ext(&v6, 44, 6)));
    seeds.push(("ipv6-no-next-header".into(), ipv6_with_ext(&v6, 0, 59)));
    // ICMP echo requests, good and bad, and other ICMP types.
    for (name, src, dst, good) in [
        ("icmp-echo-v4", a4, b4, true),
        ("icmp-echo-v6", a6, b6, true),
        ("icmp-echo-v4-bad-sum", a4, b4, false),
        ("icmp-echo-v6-bad-sum", a6, b6, false),
    ] {
        seeds.push((name.into(), echo_request(src, dst, b"ping data", good)));
    }
    let mut reply = echo_request(a4, b4, b"pong", true);
    reply[20] = 0;
    let c = checksum_fold(checksum_sum(0, &{
        let mut m = reply[20..].to_vec();
        m[2] = 0;
        m[3] = 0;
        m
    }));
    reply[22..24].copy_from_slice(&c.to_be_bytes());
    seeds.push(("icmp-echo-reply-v4".into(), reply));
    seeds
}

fn fix_ipv4_checksum(p: &mut [u8]) {
    let ihl = usize::from(p[0] & 0x0f) * 4;
    p[10] = 0;
    p[11] = 0;
    let c = checksum_fold(checksum_sum(0, &p[..ihl]));
    p[10..12].copy_from_slice(&c.to_be_bytes());
}

/// An IPv4 TCP segment with raw option bytes (a multiple of four).
fn raw_tcp_v4(src: IpAddr, dst: IpAddr, opts: &[u8], payload: &[u8]) -> Vec<u8> {
    let th = 20 + opts.len();
    let mut t = vec![0u8; th + payload.len()];
    t[0..2].copy_from_slice(&40000u16.to_be_bytes());
    t[2..4].copy_from_slice(&80u16.to_be_bytes());
    t[4..8].copy_from_slice(&1u32.to_be_bytes());
    t[12] = ((th / 4) as u8) << 4;
    t[13] = TcpFlags::ACK.0;
    t[14..16].copy_from_slice(&1000u16.to_be_bytes());
    t[20..th].copy_from_slice(opts);
    t[th..].copy_from_slice(payload);
    let sum = checksum_sum(pseudo_header_sum(src, dst, PROTO_TCP, t.len() as u32), &t);
    t[16..18].copy_from_slice(&checksum_fold(sum).to_be_bytes());
    let mut p = vec![0u8; 20];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&((20 + t.len()) as u16).to_be_bytes());
    p[8] = 64;
    p[9] = PROTO_TCP;
    if let (IpAddr::V4(s), IpAddr::V4(d)) = (src, dst) {
        p[12..16].copy_from_slice(&s.octets());
        p[16..20].copy_from_slice(&d.octets());
    }
    fix_ipv4_checksum(&mut p);
    p.extend_from_slice(&t);
    p
}

/// Inserts an 8-byte extension header of type `kind` (whose next header is
/// `next`) between the IPv6 header and the payload of `pkt`.
fn ipv6_with_ext(pkt: &[u8], kind: u8, next: u8) -> Vec<u8> {
    let mut p = pkt[..40].to_vec();
    let plen = u16::from_be_bytes([p[4], p[5]]) + 8;
    p[4..6].copy_from_slice(&plen.to_be_bytes());
    p[6] = kind;
    if kind == 44 {
        // Fragment header: next, reserved, offset 0 + M flag, ident.
        p.extend_from_slice(&[next, 0, 0, 1, 0, 0, 0, 9]);
    } else {
        // Next header, length 0 (8 bytes), a PadN option of 4 bytes.
        p.extend_from_slice(&[next, 0, 1, 4, 0, 0, 0, 0]);
    }
    p.extend_from_slice(&pkt[40..]);
    p
}

fn echo_request(src: IpAddr, dst: IpAddr, data: &[u8], good: bool) -> Vec<u8> {
    let echo = IcmpEcho {
        ident: 0x1234,
        seq_no: 1,
        data,
    };
    let iph = if src.is_ipv4() { 20 } else { 40 };
    let mut buf = vec![0u8; iph + 8 + data.len()];
    let n = emit_icmp_echo_reply(&mut buf, src, dst, &echo).expect("room");
    buf[iph] = if src.is_ipv4() { 8 } else { 128 };
    buf[iph + 2] = 0;
    buf[iph + 3] = 0;
    let init = if src.is_ipv4() {
        0
    } else {
        pseudo_header_sum(src, dst, PROTO_ICMPV6, (n - iph) as u32)
    };
    let mut c = checksum_fold(checksum_sum(init, &buf[iph..n]));
    if !good {
        c ^= 0x0101;
    }
    buf[iph + 2..iph + 4].copy_from_slice(&c.to_be_bytes());
    buf
}

/// Seed programs for `endpoint`: handshakes, transfers, losses, closes,
/// cookies, TIME-WAIT, pings and junk, on IPv4 and IPv6.
pub fn endpoint_seeds() -> Vec<(String, Vec<u8>)> {
    let syn = |peer: u8, port: u8| {
        Op::Seg(Seg {
            peer,
            port,
            flags: TcpFlags::SYN.0,
            ack: AckSel::Raw(0),
            mss: Some(1460),
            wscale: Some(7),
            sack_perm: true,
            ts: Some(TsSel::Fresh),
            window: 64240,
            ..Seg::default()
        })
    };
    let plain_syn = |peer: u8, port: u8| {
        Op::Seg(Seg {
            peer,
            port,
            flags: TcpFlags::SYN.0,
            ack: AckSel::Raw(0),
            window: 8192,
            ..Seg::default()
        })
    };
    let ack = |peer: u8, port: u8, ts: bool| {
        Op::Seg(Seg {
            peer,
            port,
            ts: ts.then_some(TsSel::Fresh),
            ..Seg::default()
        })
    };
    let data = |peer: u8, port: u8, len: u16, ts: bool| {
        Op::Seg(Seg {
            peer,
            port,
            flags: (TcpFlags::ACK | TcpFlags::PSH).0,
            ts: ts.then_some(TsSel::Fresh),
            len,
            ..Seg::default()
        })
    };
    let fin = |peer: u8, port: u8, ts: bool| {
        Op::Seg(Seg {
            peer,
            port,
            flags: (TcpFlags::ACK | TcpFlags::FIN).0,
            ts: ts.then_some(TsSel::Fresh),
            ..Seg::default()
        })
    };
    let with = |op: Op, f: &dyn Fn(&mut Seg)| match op {
        Op::Seg(mut s) => {
            f(&mut s);
            Op::Seg(s)
        }
        o => o,
    };
    let handshake = |peer: u8, port: u8, ts: bool| -> Vec<Op> {
        if ts {
            vec![syn(peer, port), ack(peer, port, true)]
        } else {
            vec![plain_syn(peer, port), ack(peer, port, false)]
        }
    };
    let rw = app::EAGER_READ | app::EAGER_WRITE;
    let mut progs: Vec<(String, Program)> = Vec::new();
    let mut add = |name: &str, config: u8, app: u8, ops: Vec<Op>| {
        progs.push((name.into(), Program { config, app, ops }));
    };

    // Passive open, data both ways, close from the peer, on v4 and v6.
    for (v, peer) in [("v4", 0u8), ("v6", 4u8)] {
        let mut ops = handshake(peer, 0, true);
        ops.extend([
            data(peer, 0, 100, true),
            Op::Wait(50),
            data(peer, 0, 1448, true),
            data(peer, 0, 1448, true),
            ack(peer, 0, true),
            fin(peer, 0, true),
            Op::Wait(10),
            ack(peer, 0, true),
            Op::WaitLong(6500),
        ]);
        add(
            &format!("echo-close-{v}"),
            cfg::DEFAULT,
            rw | app::ECHO | app::CLOSE_ON_EOF,
            ops,
        );
    }
    // Without timestamps/SACK/window scaling.
    let mut ops = handshake(1, 1, false);
    ops.extend([
        data(1, 1, 536, false),
        data(1, 1, 536, false),
        Op::Send { conn: 0, len: 5000 },
        ack(1, 1, false),
        Op::App {
            conn: 0,
            action: AppAction::Close,
        },
        ack(1, 1, false),
        fin(1, 1, false),
        Op::WaitLong(7000),
    ]);
    add("plain-options", cfg::NAGLE, rw, ops);
    // Out of order, a hole filled, duplicate and overlapping data, SACK.
    let mut ops = handshake(0, 0, true);
    ops.extend([
        with(data(0, 0, 500, true), &|s| s.seq = SeqSel::Ahead(1000)),
        with(data(0, 0, 500, true), &|s| s.seq = SeqSel::Ahead(2000)),
        data(0, 0, 1000, true),
        with(data(0, 0, 700, true), &|s| s.seq = SeqSel::Delta(-300)),
        data(0, 0, 1000, true),
        with(data(0, 0, 100, true), &|s| s.seq = SeqSel::Raw(7)),
        Op::Wait(100),
    ]);
    add("reassembly", cfg::DEFAULT, app::EAGER_READ, ops);
    // The endpoint sends; the peer loses, duplicates and partially ACKs.
    let mut ops = handshake(2, 0, true);
    ops.push(Op::Send {
        conn: 0,
        len: 30000,
    });
    ops.push(with(ack(2, 0, true), &|s| s.ack = AckSel::Back(1448 * 6)));
    for _ in 0..3 {
        ops.push(with(ack(2, 0, true), &|s| s.ack = AckSel::Same));
    }
    ops.push(with(ack(2, 0, true), &|s| {
        s.ack = AckSel::Same;
        s.sack = vec![(1448, 1448 * 2), (1448 * 4, 1448)];
    }));
    ops.extend([
        Op::Wait(250),
        with(ack(2, 0, true), &|s| s.ack = AckSel::Back(1448 * 2)),
        ack(2, 0, true),
        Op::WaitLong(100),
        Op::WaitLong(300),
        ack(2, 0, true),
    ]);
    add("sender-loss-recovery", cfg::DEFAULT, 0, ops);
    // Zero window from the peer: persist probes with backoff, then open.
    let mut ops = handshake(3, 1, true);
    ops.extend([
        Op::Send { conn: 0, len: 4000 },
        with(ack(3, 1, true), &|s| s.window = 0),
        Op::WaitLong(50),
        Op::WaitLong(200),
        Op::WaitLong(800),
        with(ack(3, 1, true), &|s| s.window = 1000),
        ack(3, 1, true),
    ]);
    add("zero-window", cfg::DEFAULT, 0, ops);
    // Small receive buffer filled by a peer while the application holds data.
    let mut ops = handshake(0, 0, true);
    for _ in 0..4 {
        ops.push(data(0, 0, 1000, true));
    }
    ops.extend([
        Op::App {
            conn: 0,
            action: AppAction::Release,
        },
        Op::App {
            conn: 0,
            action: AppAction::Recv,
        },
        data(0, 0, 1000, true),
        Op::Wait(200),
    ]);
    add(
        "small-buffer-hold",
        cfg::DEFAULT | cfg::SMALL_BUFFERS,
        app::EAGER_READ | app::HOLD,
        ops,
    );
    // Active open from the endpoint, SYN-ACK from the peer, data, close.
    let synack = |peer: u8| {
        Op::Seg(Seg {
            peer,
            port: 3,
            flags: (TcpFlags::SYN | TcpFlags::ACK).0,
            mss: Some(1400),
            wscale: Some(2),
            sack_perm: true,
            ts: Some(TsSel::Fresh),
            ..Seg::default()
        })
    };
    for (v, peer) in [("v4", 2u8), ("v6", 6u8)] {
        add(
            &format!("active-open-{v}"),
            cfg::DEFAULT,
            rw | app::CLOSE_ON_EOF,
            vec![
                Op::Connect(peer),
                synack(peer),
                data(peer, 3, 200, true),
                ack(peer, 3, true),
                fin(peer, 3, true),
                ack(peer, 3, true),
                Op::WaitLong(7000),
            ],
        );
    }
    // Active open that times out with SYN retransmissions, and one refused.
    add(
        "connect-timeout",
        cfg::DEFAULT,
        0,
        vec![Op::Connect(1), Op::WaitLong(3000), Op::WaitLong(30000)],
    );
    add(
        "connect-refused",
        cfg::DEFAULT,
        0,
        vec![
            Op::Connect(5),
            Op::Seg(Seg {
                peer: 5,
                port: 3,
                flags: (TcpFlags::RST | TcpFlags::ACK).0,
                ..Seg::default()
            }),
            Op::Connect(0x80),
        ],
    );
    // Simultaneous open: both send SYN.
    add(
        "simultaneous-open",
        cfg::DEFAULT,
        rw,
        vec![
            Op::Connect(0),
            with(syn(0, 3), &|s| s.ack = AckSel::Raw(0)),
            synack(0),
            ack(0, 3, true),
        ],
    );
    // SYN flood past the backlog: SYN cookies, then a cookie ACK with data.
    let mut ops = Vec::new();
    for p in 0..6 {
        ops.push(syn(p, 0));
    }
    ops.push(data(5, 0, 10, true));
    ops.push(ack(4, 0, true));
    ops.push(with(ack(3, 0, true), &|s| s.ack = AckSel::Beyond(5)));
    add(
        "syn-cookies",
        cfg::DEFAULT | cfg::TIGHT,
        rw | app::ECHO,
        ops,
    );
    let mut ops = Vec::new();
    for p in 0..6 {
        ops.push(plain_syn(p, 1));
    }
    for p in 0..6 {
        ops.push(ack(p, 1, false));
    }
    add("syn-cookies-no-ts", cfg::COOKIES | cfg::TIGHT, rw, ops);
    // RST handling: exact, in-window (challenge ACK), out of window; SYN on
    // an established connection (challenge ACK).
    let mut ops = handshake(0, 0, true);
    ops.extend([
        with(ack(0, 0, true), &|s| {
            s.flags = TcpFlags::RST.0;
            s.seq = SeqSel::Delta(100);
        }),
        with(syn(0, 0), &|s| s.seq = SeqSel::Delta(5)),
        with(ack(0, 0, true), &|s| {
            s.flags = TcpFlags::RST.0;
            s.seq = SeqSel::Raw(0x1234_5678);
        }),
        with(ack(0, 0, true), &|s| s.flags = TcpFlags::RST.0),
    ]);
    add("rst-rules", cfg::DEFAULT, rw, ops);
    // Segments to nowhere (RST replies), pings, junk.
    add(
        "no-listener-and-junk",
        cfg::DEFAULT,
        0,
        vec![
            syn(0, 2),
            ack(1, 2, false),
            with(data(4, 2, 10, false), &|s| s.flags = TcpFlags::FIN.0),
            Op::Ping {
                peer: 0,
                len: 56,
                good: true,
            },
            Op::Ping {
                peer: 4,
                len: 8,
                good: true,
            },
            Op::Ping {
                peer: 1,
                len: 8,
                good: false,
            },
            Op::Raw(vec![0x45, 0, 0, 20]),
            Op::Raw(vec![0x60; 60]),
            Op::Corrupt {
                seg: match syn(0, 0) {
                    Op::Seg(s) => s,
                    _ => Seg::default(),
                },
                at: 30,
                xor: 0x10,
            },
        ],
    );
    // PAWS: an old timestamp on an established connection.
    let mut ops = handshake(0, 0, true);
    ops.extend([
        with(data(0, 0, 100, true), &|s| s.ts = Some(TsSel::Old)),
        data(0, 0, 100, true),
        with(data(0, 0, 100, true), &|s| s.ts = Some(TsSel::Same)),
    ]);
    add("paws", cfg::DEFAULT, rw, ops);
    // TIME-WAIT reuse by a new SYN with a higher sequence number.
    let mut ops = handshake(0, 0, true);
    ops.extend([
        Op::App {
            conn: 0,
            action: AppAction::Close,
        },
        ack(0, 0, true),
        fin(0, 0, true),
        Op::Wait(100),
        with(syn(0, 0), &|s| s.seq = SeqSel::Delta(1000)),
        ack(0, 0, true),
    ]);
    add("time-wait-reuse", cfg::DEFAULT, rw, ops);
    // Simultaneous close and the application aborting.
    let mut ops = handshake(4, 1, true);
    ops.extend([
        Op::App {
            conn: 0,
            action: AppAction::Close,
        },
        with(fin(4, 1, true), &|s| s.ack = AckSel::Back(1)),
        ack(4, 1, true),
        Op::WaitLong(6001),
    ]);
    add("simultaneous-close", cfg::DEFAULT, 0, ops);
    let mut ops = handshake(0, 1, true);
    ops.extend([
        Op::Send { conn: 0, len: 100 },
        Op::App {
            conn: 0,
            action: AppAction::Abort,
        },
        ack(0, 1, true),
        Op::Send { conn: 255, len: 10 },
    ]);
    add("abort", cfg::DEFAULT, 0, ops);
    // Keep-alive probes unanswered, then the user timeout.
    let mut ops = handshake(0, 0, true);
    ops.extend([Op::WaitLong(500), Op::WaitLong(500), Op::WaitLong(500)]);
    add("keepalive", cfg::DEFAULT | cfg::KEEPALIVE, 0, ops);
    let mut ops = handshake(0, 0, true);
    ops.extend([
        Op::Send { conn: 0, len: 2000 },
        Op::WaitLong(13000),
        Op::WaitLong(13000),
    ]);
    add("user-timeout", cfg::DEFAULT, 0, ops);
    // Listener closed with connections in its queues; refused connections.
    let mut ops = handshake(0, 0, true);
    ops.extend([syn(1, 0), Op::Listen(0, false), ack(1, 0, true), syn(2, 0)]);
    add("unlisten", cfg::DEFAULT, 0, ops);
    let mut ops = handshake(0, 0, true);
    ops.extend(handshake(1, 0, true));
    add("refuse", cfg::DEFAULT, app::REFUSE, ops);
    // Many connections from every peer, Nagle off, small writes.
    let mut ops = Vec::new();
    for p in 0..7 {
        ops.extend(handshake(p, p & 1, true));
    }
    for c in 0..7 {
        ops.push(Op::App {
            conn: c,
            action: AppAction::NoDelay,
        });
        ops.push(Op::Send { conn: c, len: 10 });
        ops.push(Op::Send { conn: c, len: 10 });
    }
    ops.push(Op::Wait(40));
    add("many-nodelay", cfg::DEFAULT, rw, ops);
    // Window scaling with a tiny MSS and a huge scale (clamped to 14).
    let mut ops = vec![
        with(syn(0, 0), &|s| {
            s.mss = Some(1);
            s.wscale = Some(200);
        }),
        ack(0, 0, true),
        Op::Send { conn: 0, len: 3000 },
        ack(0, 0, true),
    ];
    ops.push(with(ack(0, 0, true), &|s| s.window = 1));
    add("tiny-mss-big-wscale", cfg::DEFAULT, 0, ops);
    // Challenge ACKs past the rate limit: SYNs on an established connection.
    let mut ops = handshake(0, 0, true);
    for d in 1..6 {
        ops.push(with(syn(0, 0), &|s| s.seq = SeqSel::Delta(d)));
    }
    add("challenge-ack-limit", cfg::DEFAULT | cfg::TIGHT, 0, ops);
    // Every parse_packet seed as a raw packet to the endpoint (fragments,
    // IPv6 extension headers, ICMP echo replies, bad checksums, ...).
    let ops = parse_packet_seeds()
        .into_iter()
        .map(|(_, p)| Op::Raw(p))
        .collect();
    add("raw-packets", cfg::DEFAULT, 0, ops);

    progs
        .into_iter()
        .map(|(name, p)| (name, p.encode()))
        .collect()
}
