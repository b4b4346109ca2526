//! A hand-crafting test peer for packet-level tests (after smoltcp's socket
//! tests and gVisor's packetimpact): one [`Endpoint`] under test, and a
//! "remote" that builds every segment it sends by hand and checks every
//! segment the endpoint emits, at explicit times.
//!
//! Two normalizations keep the tests readable:
//!
//! - **Sequence numbers.** The endpoint picks its ISS from a keyed hash
//!   (RFC 6528), so the peer learns it from the first SYN or SYN-ACK it
//!   receives and shifts the endpoint's sequence space so that its ISS reads
//!   as [`LOCAL_SEQ`]: received `seq` fields are shifted down, and the `ack`
//!   fields and SACK blocks the peer sends are shifted up by the same amount.
//!   [`Peer::forget_iss`] drops what was learned (a new connection on the
//!   same 4-tuple).
//! - **Timestamps.** The endpoint's TSval clock is milliseconds plus a
//!   per-connection offset (RFC 7323 §5.4); the peer learns the offset from
//!   the first SYN/SYN-ACK with timestamps, so received TSvals read as the
//!   endpoint's time in milliseconds, and the TSecr the peer sends is shifted
//!   back.
//!
//! The endpoint uses [`LOCAL_ADDR`]`:`[`LOCAL_PORT`] for passive and active
//! opens alike (the test configuration's ephemeral range is that one port).
//!
//! Every helper is `#[track_caller]`, so a failed expectation points at the
//! line of the test that made it.

#![allow(dead_code)]

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use tcp::wire::{
    emit_tcp, parse_ip, parse_tcp, tcp_payload_offset, SackBlocks, TcpFlags, TcpOptions, TcpRepr,
    PROTO_TCP,
};
use tcp::{Config, ConnId, Endpoint, Event, Instant, SeqNum};

/// The endpoint's IPv4 address.
pub const LOCAL_ADDR: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
/// The peer's IPv4 address.
pub const REMOTE_ADDR: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
/// The endpoint's IPv6 address.
pub const LOCAL_ADDR6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2);
/// The peer's IPv6 address.
pub const REMOTE_ADDR6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1);
/// The endpoint's port (listening port, and its only ephemeral port).
pub const LOCAL_PORT: u16 = 80;
/// The peer's port.
pub const REMOTE_PORT: u16 = 49500;
/// The endpoint's ISS, as the normalized sequence space shows it.
pub const LOCAL_SEQ: SeqNum = SeqNum(10_000);
/// The peer's ISS: close below 2^32, so a few kilobytes of data cross the wrap.
pub const REMOTE_SEQ: SeqNum = SeqNum(u32::MAX - 1000);
/// The MSS the peer announces, and the endpoint's own (MTU 1500, IPv4).
pub const MSS: u16 = 1460;
/// The endpoint's receive buffer in the test configuration: the largest
/// unscaled window, so windows need no shift unless a test asks for one.
pub const RCV_BUF: usize = 65535;

/// A segment as the tests write it. The ACK bit is implied by `ack` being
/// `Some` (as in smoltcp's `TcpRepr`); `flags` holds the other control bits.
#[derive(Clone, PartialEq, Eq)]
pub struct Seg {
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// Sequence number.
    pub seq: SeqNum,
    /// Acknowledgment number; `Some` sets the ACK bit.
    pub ack: Option<SeqNum>,
    /// SYN, FIN, RST, PSH (not ACK).
    pub flags: TcpFlags,
    /// The window field as sent.
    pub window: u16,
    /// Options.
    pub options: TcpOptions,
    /// Data.
    pub payload: Vec<u8>,
}

/// Short names for the control bits.
pub const NONE: TcpFlags = TcpFlags(0);
pub const SYN: TcpFlags = TcpFlags::SYN;
pub const FIN: TcpFlags = TcpFlags::FIN;
pub const RST: TcpFlags = TcpFlags::RST;
pub const PSH: TcpFlags = TcpFlags::PSH;

impl fmt::Debug for Seg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut fl = self.flags;
        if self.ack.is_some() {
            fl |= TcpFlags::ACK;
        }
        write!(
            f,
            "{} > {} [{}] seq {}",
            self.src_port, self.dst_port, fl, self.seq
        )?;
        if let Some(a) = self.ack {
            write!(f, " ack {a}")?;
        }
        write!(f, " win {} len {}", self.window, self.payload.len())?;
        let o = &self.options;
        if let Some(m) = o.mss {
            write!(f, " mss {m}")?;
        }
        if let Some(w) = o.window_scale {
            write!(f, " wscale {w}")?;
        }
        if o.sack_permitted {
            write!(f, " sackOK")?;
        }
        if let Some((v, e)) = o.timestamps {
            write!(f, " TS val {v} ecr {e}")?;
        }
        if !o.sack.is_empty() {
            write!(f, " sack {:?}", o.sack)?;
        }
        Ok(())
    }
}

impl Seg {
    /// SEG.LEN (RFC 9293 §3.4).
    pub fn seg_len(&self) -> u32 {
        self.payload.len() as u32 + u32::from(self.flags.syn()) + u32::from(self.flags.fin())
    }
}

/// The template of a segment the peer sends: from the peer's port to the
/// endpoint's, sequence number just past the peer's SYN, no ACK, a full
/// unscaled window. Adjust with struct-update syntax.
pub fn send_templ() -> Seg {
    Seg {
        src_port: REMOTE_PORT,
        dst_port: LOCAL_PORT,
        seq: REMOTE_SEQ + 1,
        ack: None,
        flags: NONE,
        window: 65535,
        options: TcpOptions::default(),
        payload: Vec::new(),
    }
}

/// The template of a segment we expect from the endpoint: from its port to
/// the peer's, sequence number just past its SYN, acknowledging the peer's
/// SYN, the full receive window.
pub fn recv_templ() -> Seg {
    Seg {
        src_port: LOCAL_PORT,
        dst_port: REMOTE_PORT,
        seq: LOCAL_SEQ + 1,
        ack: Some(REMOTE_SEQ + 1),
        flags: NONE,
        window: RCV_BUF as u16,
        options: TcpOptions::default(),
        payload: Vec::new(),
    }
}

/// SACK blocks from a list of `(left, right)` pairs.
pub fn sack(blocks: &[(SeqNum, SeqNum)]) -> SackBlocks {
    let mut s = SackBlocks::default();
    for (l, r) in blocks {
        s.push(*l, *r);
    }
    s
}

/// The test configuration: deterministic seed, one address, no timestamps
/// (tests that need them turn them on), a 64 KiB receive buffer of fixed
/// size (no auto-tuning: the expected windows and window scale stay
/// exact; `tests/autotune.rs` tests the tuning) and one ephemeral port.
pub fn test_config() -> Config {
    Config {
        seed: 0x5eed,
        addrs: vec![IpAddr::V4(LOCAL_ADDR), IpAddr::V6(LOCAL_ADDR6)],
        timestamps: false,
        recv_buffer: RCV_BUF,
        send_buffer: 256 * 1024,
        autotune_buffers: false,
        ephemeral_ports: (LOCAL_PORT, LOCAL_PORT),
        // The exact traces here pin the loss recovery from before RACK-TLP
        // (DupThresh, RTO without probes or F-RTO), which stays behind these
        // switches; tests/rack.rs has RACK-TLP's and F-RTO's traces.
        rack: false,
        tlp: false,
        frto: false,
        limited_transmit: false,
        ..Config::default()
    }
}

/// An instant `ms` milliseconds after zero.
pub fn ms(ms: u64) -> Instant {
    Instant::from_millis(ms)
}

/// The endpoint under test and the hand-crafting peer in front of it.
pub struct Peer {
    /// The endpoint under test.
    pub ep: Endpoint,
    /// The endpoint's address.
    pub local_ip: IpAddr,
    /// The peer's address.
    pub remote_ip: IpAddr,
    /// The connection under test, once accepted or connected.
    pub conn: Option<ConnId>,
    /// Actual ISS of the endpoint minus [`LOCAL_SEQ`], once learned.
    pub seq_delta: Option<u32>,
    /// Offset of the endpoint's TSval clock, once learned.
    pub ts_off: Option<u32>,
    /// Events drained while driving (kept for the test to inspect).
    pub events: Vec<Event>,
    buf: Vec<u8>,
}

impl Peer {
    /// A peer over IPv4 in front of a fresh endpoint with `cfg`.
    pub fn new(cfg: Config) -> Peer {
        Peer::with_addrs(cfg, IpAddr::V4(LOCAL_ADDR), IpAddr::V4(REMOTE_ADDR))
    }

    /// A peer over IPv6.
    pub fn new_v6(cfg: Config) -> Peer {
        Peer::with_addrs(cfg, IpAddr::V6(LOCAL_ADDR6), IpAddr::V6(REMOTE_ADDR6))
    }

    fn with_addrs(cfg: Config, local_ip: IpAddr, remote_ip: IpAddr) -> Peer {
        Peer {
            ep: Endpoint::new(cfg).unwrap(),
            local_ip,
            remote_ip,
            conn: None,
            seq_delta: None,
            ts_off: None,
            events: Vec::new(),
            buf: vec![0u8; 70_000],
        }
    }

    /// The connection under test.
    #[track_caller]
    pub fn id(&self) -> ConnId {
        self.conn.expect("no connection under test yet")
    }

    /// The endpoint's socket address.
    pub fn local(&self) -> SocketAddr {
        SocketAddr::new(self.local_ip, LOCAL_PORT)
    }

    /// The peer's socket address.
    pub fn remote(&self) -> SocketAddr {
        SocketAddr::new(self.remote_ip, REMOTE_PORT)
    }

    /// Forgets the learned ISS and timestamp offset (a new connection).
    pub fn forget_iss(&mut self) {
        self.seq_delta = None;
        self.ts_off = None;
    }

    /// Builds the IP packet for `seg` as the peer would send it.
    pub fn build(&mut self, seg: &Seg) -> Vec<u8> {
        let delta = self.seq_delta.unwrap_or(0);
        let mut options = seg.options;
        if let Some((val, ecr)) = options.timestamps {
            let syn_only = seg.flags.syn() && seg.ack.is_none();
            let ecr = if syn_only {
                ecr
            } else {
                ecr.wrapping_add(self.ts_off.unwrap_or(0))
            };
            options.timestamps = Some((val, ecr));
        }
        let mut blocks = SackBlocks::default();
        for (l, r) in seg.options.sack.as_slice() {
            blocks.push(*l + delta, *r + delta);
        }
        options.sack = blocks;
        let mut flags = seg.flags;
        if seg.ack.is_some() {
            flags |= TcpFlags::ACK;
        }
        let repr = TcpRepr {
            src_port: seg.src_port,
            dst_port: seg.dst_port,
            seq: seg.seq,
            ack: seg.ack.map_or(SeqNum(0), |a| a + delta),
            flags,
            window: seg.window,
            options,
        };
        let off = tcp_payload_offset(self.remote_ip, &repr);
        let mut buf = vec![0u8; off + seg.payload.len()];
        buf[off..].copy_from_slice(&seg.payload);
        let n = emit_tcp(
            &mut buf,
            self.remote_ip,
            self.local_ip,
            64,
            &repr,
            seg.payload.len(),
        )
        .expect("emit_tcp");
        buf.truncate(n);
        buf
    }

    /// Hands `seg` to the endpoint at `now`.
    #[track_caller]
    pub fn send(&mut self, now: Instant, seg: Seg) {
        let pkt = self.build(&seg);
        self.ep.handle(now, &pkt);
        self.drain_events();
    }

    /// Hands raw bytes to the endpoint at `now`.
    pub fn send_raw(&mut self, now: Instant, pkt: &[u8]) {
        self.ep.handle(now, pkt);
        self.drain_events();
    }

    /// Runs the endpoint's timers due at `now`.
    pub fn tick(&mut self, now: Instant) {
        self.ep.handle_timeout(now);
        self.drain_events();
    }

    /// The next packet the endpoint emits at `now` (timers due by then run
    /// first), raw.
    pub fn poll_raw(&mut self, now: Instant) -> Option<Vec<u8>> {
        self.tick(now);
        let n = self.ep.poll_transmit(now, &mut self.buf)?;
        let out = self.buf[..n].to_vec();
        self.drain_events();
        Some(out)
    }

    /// The next TCP segment the endpoint emits at `now`, normalized, or
    /// `None`. Panics on a packet that is not well-formed TCP between the
    /// two addresses.
    #[track_caller]
    pub fn poll(&mut self, now: Instant) -> Option<Seg> {
        let pkt = self.poll_raw(now)?;
        let ip = parse_ip(&pkt).unwrap_or_else(|e| panic!("endpoint emitted bad IP: {e:?}"));
        assert_eq!(ip.protocol, PROTO_TCP, "endpoint emitted a non-TCP packet");
        assert_eq!(ip.src, self.local_ip, "source address");
        assert_eq!(ip.dst, self.remote_ip, "destination address");
        let t = parse_tcp(&ip).unwrap_or_else(|e| panic!("endpoint emitted bad TCP: {e:?}"));
        if t.flags.syn() && self.seq_delta.is_none() {
            self.seq_delta = Some(t.seq.0.wrapping_sub(LOCAL_SEQ.0));
        }
        if let (true, None, Some((val, _))) = (t.flags.syn(), self.ts_off, t.options.timestamps) {
            self.ts_off = Some(val.wrapping_sub(now.as_millis() as u32));
        }
        let delta = self.seq_delta.unwrap_or(0);
        let mut options = t.options;
        if let Some((val, ecr)) = options.timestamps {
            options.timestamps = Some((val.wrapping_sub(self.ts_off.unwrap_or(0)), ecr));
        }
        let mut flags = TcpFlags(t.flags.0 & !TcpFlags::ACK.0);
        if flags.0 == 0 {
            flags = NONE;
        }
        Some(Seg {
            src_port: t.src_port,
            dst_port: t.dst_port,
            seq: t.seq - delta,
            ack: t.flags.ack().then_some(t.ack),
            flags,
            window: t.window,
            options,
            payload: t.payload.to_vec(),
        })
    }

    /// Expects the endpoint to emit exactly `want` at `now`.
    #[track_caller]
    pub fn expect(&mut self, now: Instant, want: &Seg) {
        match self.poll(now) {
            Some(got) if got == *want => {}
            Some(got) => {
                panic!("at {now:?}: unexpected segment\n  expected: {want:?}\n       got: {got:?}")
            }
            None => panic!("at {now:?}: nothing emitted\n  expected: {want:?}"),
        }
    }

    /// Expects the endpoint to emit nothing at `now`.
    #[track_caller]
    pub fn expect_nothing(&mut self, now: Instant) {
        if let Some(pkt) = self.poll_raw(now) {
            panic!(
                "at {now:?}: expected nothing, got {}",
                describe_any(&pkt, self)
            );
        }
    }

    /// Moves every pending event into `self.events`.
    pub fn drain_events(&mut self) {
        while let Some(e) = self.ep.poll_event() {
            self.events.push(e);
        }
    }

    /// Takes the events seen so far.
    pub fn take_events(&mut self) -> Vec<Event> {
        self.drain_events();
        std::mem::take(&mut self.events)
    }

    /// Everything readable on the connection under test, now.
    pub fn read_all(&mut self) -> Vec<u8> {
        let id = self.id();
        let mut out = Vec::new();
        let mut b = [0u8; 4096];
        while let Ok(n) = self.ep.recv(id, &mut b) {
            if n == 0 {
                break;
            }
            out.extend_from_slice(&b[..n]);
        }
        self.drain_events();
        out
    }

    /// Queues `data` on the connection under test; all of it must fit.
    #[track_caller]
    pub fn write(&mut self, data: &[u8]) {
        let id = self.id();
        assert_eq!(self.ep.send(id, data), Ok(data.len()), "send");
        self.drain_events();
    }

    /// The state of the connection under test.
    #[track_caller]
    pub fn state(&self) -> tcp::State {
        self.ep.state(self.id()).expect("connection alive")
    }

    /// How many connections the endpoint holds in `state`.
    pub fn count(&self, state: tcp::State) -> usize {
        self.ep
            .state_counts()
            .iter()
            .find(|(s, _)| *s == state)
            .map_or(0, |(_, n)| *n)
    }

    /// When the endpoint next wants `handle_timeout`.
    pub fn next_timeout(&mut self) -> Option<Instant> {
        self.ep.poll_timeout()
    }
}

fn describe_any(pkt: &[u8], p: &Peer) -> String {
    match parse_ip(pkt) {
        Ok(ip) if ip.protocol == PROTO_TCP => match parse_tcp(&ip) {
            Ok(t) => format!(
                "[{}] seq {} (normalized {}) ack {} win {} len {}",
                t.flags,
                t.seq,
                t.seq - p.seq_delta.unwrap_or(0),
                t.ack,
                t.window,
                t.payload.len()
            ),
            Err(e) => format!("bad TCP {e:?}"),
        },
        Ok(ip) => format!("IP protocol {} len {}", ip.protocol, ip.payload.len()),
        Err(e) => format!("bad IP {e:?}"),
    }
}

/// `send!(p, time T, segment)`: the peer sends `segment` at `T` ms.
macro_rules! send {
    ($p:expr, time $t:expr, $seg:expr) => {
        $p.send($crate::peer::ms($t), $seg)
    };
}

/// `recv!(p, time T, segment)` / `recv!(p, time T, [a, b, ...])`: the
/// endpoint emits exactly these segments at `T` ms (timers due by then run
/// first), in order.
macro_rules! recv {
    ($p:expr, time $t:expr, [$($seg:expr),* $(,)?]) => {{
        $( $p.expect($crate::peer::ms($t), &$seg); )*
    }};
    ($p:expr, time $t:expr, $seg:expr) => {
        $p.expect($crate::peer::ms($t), &$seg)
    };
}

/// `recv_nothing!(p, time T)`: the endpoint emits nothing at `T` ms.
macro_rules! recv_nothing {
    ($p:expr, time $t:expr) => {
        $p.expect_nothing($crate::peer::ms($t))
    };
}

/// Checks an ICMP(v6) error the endpoint emitted (addresses, protocol, the
/// ICMP checksum and, for IPv4, the header checksum) and returns its type,
/// code, the 4 bytes after the checksum, and the quoted packet.
#[track_caller]
pub fn icmp_error(pkt: &[u8], from: IpAddr, to: IpAddr) -> (u8, u8, u32, Vec<u8>) {
    use tcp::wire::{
        checksum_fold, checksum_sum, parse_ip, pseudo_header_sum, PROTO_ICMP, PROTO_ICMPV6,
    };
    let ip = parse_ip(pkt).unwrap();
    assert_eq!((ip.src, ip.dst), (from, to));
    let v6 = from.is_ipv6();
    assert_eq!(ip.protocol, if v6 { PROTO_ICMPV6 } else { PROTO_ICMP });
    let m = ip.payload;
    let init = if v6 {
        pseudo_header_sum(from, to, PROTO_ICMPV6, m.len() as u32)
    } else {
        0
    };
    assert_eq!(checksum_fold(checksum_sum(init, m)), 0, "ICMP checksum");
    if !v6 {
        assert_eq!(
            checksum_fold(checksum_sum(0, &pkt[..20])),
            0,
            "IP header checksum"
        );
    }
    (
        m[0],
        m[1],
        u32::from_be_bytes([m[4], m[5], m[6], m[7]]),
        m[8..].to_vec(),
    )
}
