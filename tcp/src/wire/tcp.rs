//! The TCP header (RFC 9293 §3.1) and its options: MSS (RFC 9293 §3.7.1),
//! window scale and timestamps (RFC 7323), SACK (RFC 2018).

use super::checksum::{checksum_fold, checksum_sum, pseudo_header_sum};
use super::ip::{emit_ip_header, ip_header_len, IpPacket, PROTO_TCP};
use super::DropReason;
use crate::seq::SeqNum;
use core::fmt;
use std::net::IpAddr;

/// The TCP control bits.
#[derive(Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct TcpFlags(pub u8);

impl TcpFlags {
    /// No more data from sender.
    pub const FIN: TcpFlags = TcpFlags(0x01);
    /// Synchronize sequence numbers.
    pub const SYN: TcpFlags = TcpFlags(0x02);
    /// Reset the connection.
    pub const RST: TcpFlags = TcpFlags(0x04);
    /// Push function.
    pub const PSH: TcpFlags = TcpFlags(0x08);
    /// Acknowledgment field is significant.
    pub const ACK: TcpFlags = TcpFlags(0x10);
    /// Urgent pointer field is significant.
    pub const URG: TcpFlags = TcpFlags(0x20);
    /// ECN-Echo (RFC 3168).
    pub const ECE: TcpFlags = TcpFlags(0x40);
    /// Congestion Window Reduced (RFC 3168).
    pub const CWR: TcpFlags = TcpFlags(0x80);

    /// Whether every bit of `other` is set.
    pub const fn contains(self, other: TcpFlags) -> bool {
        self.0 & other.0 == other.0
    }
    /// FIN is set.
    pub const fn fin(self) -> bool {
        self.0 & 0x01 != 0
    }
    /// SYN is set.
    pub const fn syn(self) -> bool {
        self.0 & 0x02 != 0
    }
    /// RST is set.
    pub const fn rst(self) -> bool {
        self.0 & 0x04 != 0
    }
    /// PSH is set.
    pub const fn psh(self) -> bool {
        self.0 & 0x08 != 0
    }
    /// ACK is set.
    pub const fn ack(self) -> bool {
        self.0 & 0x10 != 0
    }
}

impl core::ops::BitOr for TcpFlags {
    type Output = TcpFlags;
    fn bitor(self, o: TcpFlags) -> TcpFlags {
        TcpFlags(self.0 | o.0)
    }
}
impl core::ops::BitOrAssign for TcpFlags {
    fn bitor_assign(&mut self, o: TcpFlags) {
        self.0 |= o.0;
    }
}

impl fmt::Debug for TcpFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}
/// tcpdump's notation: `S`, `S.`, `P.`, `F.`, `R` ...
impl fmt::Display for TcpFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = String::new();
        for (bit, c) in [
            (0x02, 'S'),
            (0x01, 'F'),
            (0x04, 'R'),
            (0x08, 'P'),
            (0x20, 'U'),
            (0x40, 'E'),
            (0x80, 'W'),
        ] {
            if self.0 & bit != 0 {
                s.push(c);
            }
        }
        if self.ack() {
            s.push('.');
        }
        if s.is_empty() {
            s.push_str("none");
        }
        f.write_str(&s)
    }
}

/// The most SACK blocks one segment carries (with timestamps, 3 fit; without, 4).
pub const MAX_SACK_BLOCKS: usize = 4;

/// Up to four SACK blocks, each `[left, right)` in sequence space (RFC 2018 §3).
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub struct SackBlocks {
    blocks: [(SeqNum, SeqNum); MAX_SACK_BLOCKS],
    len: u8,
}

impl SackBlocks {
    /// The blocks present.
    pub fn as_slice(&self) -> &[(SeqNum, SeqNum)] {
        &self.blocks[..usize::from(self.len)]
    }
    /// Adds a block; ignored when four are present.
    pub fn push(&mut self, left: SeqNum, right: SeqNum) {
        if usize::from(self.len) < MAX_SACK_BLOCKS {
            self.blocks[usize::from(self.len)] = (left, right);
            self.len += 1;
        }
    }
    /// Number of blocks.
    pub fn len(&self) -> usize {
        usize::from(self.len)
    }
    /// No blocks.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// Keeps at most `n` blocks.
    pub fn truncate(&mut self, n: usize) {
        self.len = self.len.min(n as u8);
    }
}

impl fmt::Debug for SackBlocks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.as_slice()).finish()
    }
}

/// The TCP options tcpd understands. Unknown options are skipped on parse.
#[derive(Clone, Copy, PartialEq, Eq, Default, Debug)]
pub struct TcpOptions {
    /// Maximum segment size (kind 2), only meaningful on SYN.
    pub mss: Option<u16>,
    /// Window scale shift (kind 3), only meaningful on SYN. Parsed as sent;
    /// RFC 7323 §2.3 says values above 14 are used as 14, which the
    /// connection applies.
    pub window_scale: Option<u8>,
    /// SACK-permitted (kind 4), only meaningful on SYN.
    pub sack_permitted: bool,
    /// Timestamps (kind 8): (TSval, TSecr).
    pub timestamps: Option<(u32, u32)>,
    /// SACK blocks (kind 5).
    pub sack: SackBlocks,
}

impl TcpOptions {
    /// The encoded length of these options, padded to a multiple of four.
    pub fn encoded_len(&self) -> usize {
        let mut n = 0;
        if self.mss.is_some() {
            n += 4;
        }
        if self.timestamps.is_some() || self.sack_permitted {
            // SACK-permitted rides with timestamps as Linux lays them out:
            // [SACKOK, TS] = 12 bytes, or [NOP, NOP, TS] / [NOP, NOP, SACKOK].
            n += if self.timestamps.is_some() { 12 } else { 4 };
        }
        if self.window_scale.is_some() {
            n += 4;
        }
        if !self.sack.is_empty() {
            n += 4 + 8 * self.sack.len();
        }
        n
    }

    fn write(&self, out: &mut [u8]) {
        let mut i = 0;
        if let Some(mss) = self.mss {
            out[i] = 2;
            out[i + 1] = 4;
            out[i + 2..i + 4].copy_from_slice(&mss.to_be_bytes());
            i += 4;
        }
        match (self.sack_permitted, self.timestamps) {
            (true, Some(_)) => {
                out[i] = 4;
                out[i + 1] = 2;
                i += 2;
            }
            (false, Some(_)) => {
                out[i] = 1;
                out[i + 1] = 1;
                i += 2;
            }
            (true, None) => {
                out[i..i + 4].copy_from_slice(&[1, 1, 4, 2]);
                i += 4;
            }
            (false, None) => {}
        }
        if let Some((val, ecr)) = self.timestamps {
            out[i] = 8;
            out[i + 1] = 10;
            out[i + 2..i + 6].copy_from_slice(&val.to_be_bytes());
            out[i + 6..i + 10].copy_from_slice(&ecr.to_be_bytes());
            i += 10;
        }
        if let Some(ws) = self.window_scale {
            out[i..i + 4].copy_from_slice(&[1, 3, 3, ws]);
            i += 4;
        }
        if !self.sack.is_empty() {
            out[i] = 1;
            out[i + 1] = 1;
            out[i + 2] = 5;
            out[i + 3] = (2 + 8 * self.sack.len()) as u8;
            i += 4;
            for (l, r) in self.sack.as_slice() {
                out[i..i + 4].copy_from_slice(&l.0.to_be_bytes());
                out[i + 4..i + 8].copy_from_slice(&r.0.to_be_bytes());
                i += 8;
            }
        }
    }

    /// Walks the option bytes (RFC 9293 §3.2). Unknown kinds are skipped by
    /// their length; a known kind with the wrong length is ignored. An
    /// option whose length is below 2 or runs past the header ends the walk,
    /// as Linux does (the segment is still processed); the return value says
    /// whether the walk ended that way.
    pub fn parse(mut b: &[u8]) -> (TcpOptions, bool) {
        let mut o = TcpOptions::default();
        while let Some(&kind) = b.first() {
            match kind {
                0 => break,
                1 => {
                    b = &b[1..];
                    continue;
                }
                _ => {}
            }
            let Some(&len) = b.get(1) else {
                return (o, true);
            };
            let len = usize::from(len);
            if len < 2 || len > b.len() {
                return (o, true);
            }
            let body = &b[2..len];
            match (kind, len) {
                (2, 4) => o.mss = Some(u16::from_be_bytes([body[0], body[1]])),
                (3, 3) => o.window_scale = Some(body[0]),
                (4, 2) => o.sack_permitted = true,
                (5, _) if (len - 2) % 8 == 0 => {
                    for c in body.chunks_exact(8) {
                        o.sack.push(
                            SeqNum(u32::from_be_bytes([c[0], c[1], c[2], c[3]])),
                            SeqNum(u32::from_be_bytes([c[4], c[5], c[6], c[7]])),
                        );
                    }
                }
                (8, 10) => {
                    o.timestamps = Some((
                        u32::from_be_bytes([body[0], body[1], body[2], body[3]]),
                        u32::from_be_bytes([body[4], body[5], body[6], body[7]]),
                    ))
                }
                _ => {}
            }
            b = &b[len..];
        }
        (o, false)
    }
}

/// A parsed, checksum-verified TCP segment.
#[derive(Clone, Copy, Debug)]
pub struct TcpSegment<'a> {
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// Sequence number (SEG.SEQ).
    pub seq: SeqNum,
    /// Acknowledgment number (SEG.ACK), meaningful when ACK is set.
    pub ack: SeqNum,
    /// Control bits.
    pub flags: TcpFlags,
    /// Window field as sent (unscaled).
    pub window: u16,
    /// Urgent pointer.
    pub urgent: u16,
    /// Options.
    pub options: TcpOptions,
    /// Whether the option walk stopped at a malformed option.
    pub bad_options: bool,
    /// The data.
    pub payload: &'a [u8],
}

impl TcpSegment<'_> {
    /// SEG.LEN: data plus one for SYN and one for FIN (RFC 9293 §3.4).
    pub fn seg_len(&self) -> u32 {
        self.payload.len() as u32 + u32::from(self.flags.syn()) + u32::from(self.flags.fin())
    }
}

/// Parses the TCP segment carried by `ip`, verifying its checksum with the
/// pseudo-header.
pub fn parse_tcp<'a>(ip: &IpPacket<'a>) -> Result<TcpSegment<'a>, DropReason> {
    parse_tcp_with(ip, true)
}

/// [`parse_tcp`], verifying the checksum only when `verify` is set: a
/// device with checksum offload (a TUN with `IFF_VNET_HDR`) vouches for
/// packets the local kernel built, whose checksum field then holds only the
/// pseudo-header sum.
pub fn parse_tcp_with<'a>(ip: &IpPacket<'a>, verify: bool) -> Result<TcpSegment<'a>, DropReason> {
    let b = ip.payload;
    if b.len() < 20 {
        return Err(DropReason::Truncated);
    }
    let doff = usize::from(b[12] >> 4) * 4;
    if doff < 20 || doff > b.len() {
        return Err(DropReason::BadTcpHeader);
    }
    if verify {
        let sum = checksum_sum(
            pseudo_header_sum(ip.src, ip.dst, PROTO_TCP, b.len() as u32),
            b,
        );
        if checksum_fold(sum) != 0 {
            return Err(DropReason::BadTcpChecksum);
        }
    }
    let (options, bad_options) = TcpOptions::parse(&b[20..doff]);
    Ok(TcpSegment {
        src_port: u16::from_be_bytes([b[0], b[1]]),
        dst_port: u16::from_be_bytes([b[2], b[3]]),
        seq: SeqNum(u32::from_be_bytes([b[4], b[5], b[6], b[7]])),
        ack: SeqNum(u32::from_be_bytes([b[8], b[9], b[10], b[11]])),
        flags: TcpFlags(b[13]),
        window: u16::from_be_bytes([b[14], b[15]]),
        urgent: u16::from_be_bytes([b[18], b[19]]),
        options,
        bad_options,
        payload: &b[doff..],
    })
}

/// A segment to emit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct TcpRepr {
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// Sequence number.
    pub seq: SeqNum,
    /// Acknowledgment number (written as is, even without ACK).
    pub ack: SeqNum,
    /// Control bits.
    pub flags: TcpFlags,
    /// Window field (already scaled down).
    pub window: u16,
    /// Options.
    pub options: TcpOptions,
}

impl TcpRepr {
    /// Header length including options.
    pub fn header_len(&self) -> usize {
        20 + self.options.encoded_len()
    }
}

/// Where the payload of a segment described by `repr` from `src` starts in
/// the packet buffer: the caller copies the payload there, then calls
/// [`emit_tcp`].
pub fn tcp_payload_offset(src: IpAddr, repr: &TcpRepr) -> usize {
    ip_header_len(src) + repr.header_len()
}

/// Writes the IP and TCP headers for `repr` into `buf` and computes the
/// checksums. The `payload_len` payload bytes must already be in place at
/// [`tcp_payload_offset`]. Returns the packet length, or `None` when `buf` is
/// too short or the addresses are of different families.
pub fn emit_tcp(
    buf: &mut [u8],
    src: IpAddr,
    dst: IpAddr,
    ttl: u8,
    repr: &TcpRepr,
    payload_len: usize,
) -> Option<usize> {
    emit_tcp_with(buf, src, dst, ttl, repr, payload_len, false)
}

/// [`emit_tcp`], but with `partial_checksum` the TCP checksum field gets
/// only the folded pseudo-header sum, for a device that completes it
/// (checksum offload: the `NEEDS_CSUM` of a virtio-net header, with
/// `csum_start` at the TCP header and `csum_offset` 16).
pub fn emit_tcp_with(
    buf: &mut [u8],
    src: IpAddr,
    dst: IpAddr,
    ttl: u8,
    repr: &TcpRepr,
    payload_len: usize,
    partial_checksum: bool,
) -> Option<usize> {
    let iph = ip_header_len(src);
    let th = repr.header_len();
    let total = iph + th + payload_len;
    if buf.len() < total {
        return None;
    }
    emit_ip_header(buf, src, dst, PROTO_TCP, th + payload_len, ttl, 0)?;
    let t = &mut buf[iph..total];
    t[0..2].copy_from_slice(&repr.src_port.to_be_bytes());
    t[2..4].copy_from_slice(&repr.dst_port.to_be_bytes());
    t[4..8].copy_from_slice(&repr.seq.0.to_be_bytes());
    t[8..12].copy_from_slice(&repr.ack.0.to_be_bytes());
    t[12] = ((th / 4) as u8) << 4;
    t[13] = repr.flags.0;
    t[14..16].copy_from_slice(&repr.window.to_be_bytes());
    t[16] = 0;
    t[17] = 0;
    t[18] = 0;
    t[19] = 0;
    repr.options.write(&mut t[20..th]);
    let pseudo = pseudo_header_sum(src, dst, PROTO_TCP, (th + payload_len) as u32);
    if partial_checksum {
        // The device adds the segment's own sum and complements.
        t[16..18].copy_from_slice(&(!checksum_fold(pseudo)).to_be_bytes());
    } else {
        let sum = checksum_sum(pseudo, t);
        t[16..18].copy_from_slice(&checksum_fold(sum).to_be_bytes());
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::super::parse_ip;
    use super::*;
    use proptest::prelude::*;

    fn addrs(v6: bool) -> (IpAddr, IpAddr) {
        if v6 {
            ("fd00::1".parse().unwrap(), "fd00::2".parse().unwrap())
        } else {
            ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap())
        }
    }

    fn build(v6: bool, repr: &TcpRepr, payload: &[u8]) -> Vec<u8> {
        let (s, d) = addrs(v6);
        let mut buf = vec![0u8; 1600];
        let off = tcp_payload_offset(s, repr);
        buf[off..off + payload.len()].copy_from_slice(payload);
        let n = emit_tcp(&mut buf, s, d, 64, repr, payload.len()).unwrap();
        buf.truncate(n);
        buf
    }

    #[test]
    fn syn_options_roundtrip_v4_v6() {
        for v6 in [false, true] {
            let repr = TcpRepr {
                src_port: 40000,
                dst_port: 80,
                seq: SeqNum(12345),
                ack: SeqNum(0),
                flags: TcpFlags::SYN,
                window: 65535,
                options: TcpOptions {
                    mss: Some(1460),
                    window_scale: Some(7),
                    sack_permitted: true,
                    timestamps: Some((1, 0)),
                    sack: SackBlocks::default(),
                },
            };
            let pkt = build(v6, &repr, b"");
            let ip = parse_ip(&pkt).unwrap();
            let seg = parse_tcp(&ip).unwrap();
            assert_eq!(seg.options, repr.options);
            assert_eq!(seg.flags, TcpFlags::SYN);
            assert_eq!(seg.seq, SeqNum(12345));
            assert!(!seg.bad_options);
            // etherparse, an independent implementation, agrees on the checksum.
            let sliced = etherparse::SlicedPacket::from_ip(&pkt).unwrap();
            match sliced.transport {
                Some(etherparse::TransportSlice::Tcp(t)) => {
                    assert!(t.syn());
                    assert_eq!(t.options().len(), 20);
                    let calc = match (ip.src, ip.dst) {
                        (IpAddr::V4(s), IpAddr::V4(d)) => t
                            .to_header()
                            .calc_checksum_ipv4_raw(s.octets(), d.octets(), &[])
                            .unwrap(),
                        (IpAddr::V6(s), IpAddr::V6(d)) => t
                            .to_header()
                            .calc_checksum_ipv6_raw(s.octets(), d.octets(), &[])
                            .unwrap(),
                        _ => unreachable!(),
                    };
                    assert_eq!(calc, t.checksum());
                }
                _ => panic!("not tcp"),
            }
        }
    }

    #[test]
    fn bad_checksum_and_offset_rejected() {
        let repr = TcpRepr {
            flags: TcpFlags::ACK,
            window: 100,
            ..Default::default()
        };
        let mut pkt = build(false, &repr, b"data");
        let last = pkt.len() - 1;
        pkt[last] ^= 0xff;
        assert_eq!(
            parse_tcp(&parse_ip(&pkt).unwrap()).unwrap_err(),
            DropReason::BadTcpChecksum
        );
        let mut pkt = build(false, &repr, b"data");
        pkt[20 + 12] = 0x40; // data offset 4 words
        assert_eq!(
            parse_tcp(&parse_ip(&pkt).unwrap()).unwrap_err(),
            DropReason::BadTcpHeader
        );
    }

    #[test]
    fn partial_checksum_completes_to_the_full_one() {
        let repr = TcpRepr {
            flags: TcpFlags::ACK | TcpFlags::PSH,
            window: 100,
            ..Default::default()
        };
        let full = build(false, &repr, b"some payload");
        let (s, d) = addrs(false);
        let mut part = full.clone();
        emit_tcp_with(&mut part, s, d, 64, &repr, 12, true).unwrap();
        assert_ne!(part, full);
        // What a device does: sum from csum_start over the segment (the
        // field holds the pseudo-header sum), complement, store.
        let t = &mut part[20..];
        let c = checksum_fold(checksum_sum(0, t));
        t[16..18].copy_from_slice(&c.to_be_bytes());
        assert_eq!(part, full);
        // And a trusted parse accepts the partial one.
        let mut part = full.clone();
        emit_tcp_with(&mut part, s, d, 64, &repr, 12, true).unwrap();
        let ip = parse_ip(&part).unwrap();
        assert!(parse_tcp(&ip).is_err());
        assert_eq!(parse_tcp_with(&ip, false).unwrap().payload, b"some payload");
    }

    #[test]
    fn unknown_options_are_skipped() {
        // kind 30 (MPTCP) with length 4, then MSS, then kind 254 len 2, then WS.
        let opts = [30, 4, 0, 0, 2, 4, 0x05, 0xb4, 254, 2, 3, 3, 9, 0];
        let (o, bad) = TcpOptions::parse(&opts);
        assert_eq!(o.mss, Some(1460));
        assert_eq!(o.window_scale, Some(9));
        assert!(!bad);
        // Zero length stops the walk.
        let (o, bad) = TcpOptions::parse(&[2, 4, 0, 100, 99, 0, 3, 3, 1]);
        assert_eq!(o.mss, Some(100));
        assert_eq!(o.window_scale, None);
        assert!(bad);
        // Overrunning length stops the walk.
        let (_, bad) = TcpOptions::parse(&[8, 10, 0, 0]);
        assert!(bad);
        // Wrong length for a known kind is ignored.
        let (o, bad) = TcpOptions::parse(&[2, 3, 1, 1, 1]);
        assert_eq!(o.mss, None);
        assert!(!bad);
    }

    fn arb_options() -> impl Strategy<Value = TcpOptions> {
        (
            proptest::option::of(any::<u16>()),
            proptest::option::of(0u8..15),
            any::<bool>(),
            proptest::option::of((any::<u32>(), any::<u32>())),
            proptest::collection::vec((any::<u32>(), any::<u32>()), 0..=3),
        )
            .prop_map(|(mss, ws, sp, ts, sacks)| {
                let mut sack = SackBlocks::default();
                for (l, r) in sacks {
                    sack.push(SeqNum(l), SeqNum(r));
                }
                TcpOptions {
                    mss,
                    window_scale: ws,
                    sack_permitted: sp,
                    timestamps: ts,
                    sack,
                }
            })
    }

    proptest! {
        #[test]
        fn options_roundtrip(o in arb_options()) {
            prop_assume!(o.encoded_len() <= 40);
            let mut b = vec![0u8; o.encoded_len()];
            o.write(&mut b);
            prop_assert_eq!(b.len() % 4, 0);
            let (p, bad) = TcpOptions::parse(&b);
            prop_assert!(!bad);
            prop_assert_eq!(p, o);
        }

        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Ok(ip) = parse_ip(&bytes) {
                let _ = parse_tcp(&ip);
            }
            let _ = TcpOptions::parse(&bytes);
        }
    }
}
