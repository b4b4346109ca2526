//! IPv4 (RFC 791) and IPv6 (RFC 8200) headers.

use super::checksum::{checksum_fold, checksum_sum};
use super::DropReason;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// IP protocol number of ICMP.
pub const PROTO_ICMP: u8 = 1;
/// IP protocol number of TCP.
pub const PROTO_TCP: u8 = 6;
/// IP protocol number of UDP.
pub const PROTO_UDP: u8 = 17;
/// IP protocol number of ICMPv6.
pub const PROTO_ICMPV6: u8 = 58;

/// A parsed IP packet: the fields the transport layers need and a view of the
/// transport payload.
#[derive(Clone, Copy, Debug)]
pub struct IpPacket<'a> {
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// The upper-layer protocol (after any IPv6 extension headers).
    pub protocol: u8,
    /// TTL (IPv4) or hop limit (IPv6).
    pub ttl: u8,
    /// The upper-layer bytes, trimmed to the length the IP header gives.
    pub payload: &'a [u8],
    /// The whole packet, headers included, trimmed to the length the IP
    /// header gives: what an ICMP error about it quotes (RFC 792, RFC 4443
    /// §2.4(c)).
    pub packet: &'a [u8],
}

/// The length of the IP header tcpd emits for a packet from `src`.
pub fn ip_header_len(src: IpAddr) -> usize {
    match src {
        IpAddr::V4(_) => 20,
        IpAddr::V6(_) => 40,
    }
}

/// Parses and validates an IPv4 or IPv6 packet.
pub fn parse_ip(pkt: &[u8]) -> Result<IpPacket<'_>, DropReason> {
    let first = *pkt.first().ok_or(DropReason::Truncated)?;
    match first >> 4 {
        4 => parse_v4(pkt),
        6 => parse_v6(pkt),
        _ => Err(DropReason::BadIpVersion),
    }
}

/// RFC 1122 §3.2.1.3: addresses that never name a sender. A reply to
/// any of them would go to no one (0.0.0.0), to ourselves (127/8) or to a
/// group (multicast, limited broadcast), so such packets are dropped before
/// anything answers them, as Linux drops "martian sources":
///
/// - (a), (b) `{0, *}`: "this network" — only a source while a host learns
///   its address (RFC 1122 §3.2.1.3: "MUST NOT be used ... except as a
///   source address as part of an initialization procedure"), never for TCP;
/// - (c) limited broadcast `{-1, -1}` and class D (multicast): "MUST NOT
///   be used as a source address" (directed broadcast, (d), needs the
///   netmask, which the endpoint does not know);
/// - (g) `{127, *}`: "MUST NOT appear outside a host" — accepted only on a
///   packet to a loopback address, where the endpoint itself plays the
///   loopback interface (Linux accepts 127/8 sources only on `lo`).
fn valid_source_v4(src: Ipv4Addr, dst: Ipv4Addr) -> bool {
    let zero_net = src.octets()[0] == 0;
    let loopback_from_outside = src.is_loopback() && !dst.is_loopback();
    !(zero_net || src.is_broadcast() || src.is_multicast() || loopback_from_outside)
}

/// RFC 4291 §2.5.2: "The unspecified address must not be used as the
/// source address of IPv6 packets"; §2.5.3: the loopback address "must not
/// be used as the source address in IPv6 packets that are sent outside of a
/// single node" (accepted, as for IPv4, only on a packet to `::1`); §2.7:
/// "Multicast addresses must not be used as source addresses".
fn valid_source_v6(src: Ipv6Addr, dst: Ipv6Addr) -> bool {
    let loopback_from_outside = src.is_loopback() && !dst.is_loopback();
    !(src.is_unspecified() || src.is_multicast() || loopback_from_outside)
}

/// Whether `src` may be the source address of a packet to `dst` (the rules
/// above, RFC 1122 §3.2.1.3 and RFC 4291 §2.5.2, §2.5.3, §2.7). [`parse_ip`]
/// drops what breaks them; the endpoint uses the same test before it
/// answers, with its own address as the source, so that nothing it sends
/// would be dropped by such a check (a request to 0.0.10.1 in transparent
/// mode, say).
pub fn valid_source(src: IpAddr, dst: IpAddr) -> bool {
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => valid_source_v4(s, d),
        (IpAddr::V6(s), IpAddr::V6(d)) => valid_source_v6(s, d),
        _ => false,
    }
}

fn parse_v4(pkt: &[u8]) -> Result<IpPacket<'_>, DropReason> {
    if pkt.len() < 20 {
        return Err(DropReason::Truncated);
    }
    let ihl = usize::from(pkt[0] & 0x0f) * 4;
    if ihl < 20 || ihl > pkt.len() {
        return Err(DropReason::BadIpLength);
    }
    let total = usize::from(u16::from_be_bytes([pkt[2], pkt[3]]));
    if total < ihl || total > pkt.len() {
        return Err(DropReason::BadIpLength);
    }
    // RFC 791 §3.1: the checksum covers the header only, options included.
    if checksum_fold(checksum_sum(0, &pkt[..ihl])) != 0 {
        return Err(DropReason::BadIpChecksum);
    }
    let frag = u16::from_be_bytes([pkt[6], pkt[7]]);
    // More-fragments set or a non-zero offset: a fragment.
    if frag & 0x2000 != 0 || frag & 0x1fff != 0 {
        return Err(DropReason::Fragment);
    }
    let src = Ipv4Addr::new(pkt[12], pkt[13], pkt[14], pkt[15]);
    let dst = Ipv4Addr::new(pkt[16], pkt[17], pkt[18], pkt[19]);
    if !valid_source_v4(src, dst) {
        return Err(DropReason::BadSourceAddress);
    }
    Ok(IpPacket {
        src: IpAddr::V4(src),
        dst: IpAddr::V4(dst),
        protocol: pkt[9],
        ttl: pkt[8],
        payload: &pkt[ihl..total],
        packet: &pkt[..total],
    })
}

fn parse_v6(pkt: &[u8]) -> Result<IpPacket<'_>, DropReason> {
    if pkt.len() < 40 {
        return Err(DropReason::Truncated);
    }
    let plen = usize::from(u16::from_be_bytes([pkt[4], pkt[5]]));
    // A payload length of zero with a jumbo option (RFC 2675) is not supported.
    if 40 + plen > pkt.len() || plen == 0 {
        return Err(DropReason::BadIpLength);
    }
    let next = pkt[6];
    let hop = pkt[7];
    let mut src = [0u8; 16];
    src.copy_from_slice(&pkt[8..24]);
    let mut dst = [0u8; 16];
    dst.copy_from_slice(&pkt[24..40]);
    let src = Ipv6Addr::from(src);
    let dst = Ipv6Addr::from(dst);
    if !valid_source_v6(src, dst) {
        return Err(DropReason::BadSourceAddress);
    }
    let end = 40 + plen;
    let (next, off) = walk_v6_extensions(pkt, next, end)?;
    Ok(IpPacket {
        src: IpAddr::V6(src),
        dst: IpAddr::V6(dst),
        protocol: next,
        ttl: hop,
        payload: &pkt[off..end],
        packet: &pkt[..end],
    })
}

/// Most IPv6 extension headers walked before a packet is dropped (RFC
/// 8200 §4.1 names at most eight in a well-formed packet; RFC 9098 and
/// RFC 8504 §5.3 want a limit on the chain a host walks).
pub const MAX_IPV6_EXTENSIONS: usize = 8;

/// RFC 8200 §4: walks the extension headers from offset 40 with `first`
/// as the first Next Header value, to the upper-layer header. Returns its
/// protocol number and offset.
///
/// - Hop-by-Hop Options only right after the IPv6 header (§4.3), and its
///   options and those of a Destination Options header processed as
///   §4.2 says: an unrecognized option whose type's two high bits are not
///   00 means "discard the packet" (the endpoint then sends the Parameter
///   Problem RFC 8200 §4 asks for: [`crate::wire::v6_param_problem`]).
/// - A Routing header with Segments Left 0 is ignored and the walk goes on;
///   with Segments Left > 0 the packet is discarded, since a host that is
///   the final destination of none of the types (type 0 is deprecated,
///   RFC 5095) cannot process it (§4.4).
/// - A Fragment header of offset 0 without More Fragments is an atomic
///   fragment: processed as the whole datagram it is (RFC 6946 §4, as
///   Linux); any other fragment is dropped ([`DropReason::Fragment`]).
/// - More than [`MAX_IPV6_EXTENSIONS`] headers, or one running past the
///   packet: [`DropReason::BadIpv6Extension`].
///
/// An unknown Next Header value ends the walk: the endpoint drops it as an
/// unsupported protocol.
fn walk_v6_extensions(pkt: &[u8], first: u8, end: usize) -> Result<(u8, usize), DropReason> {
    let mut next = first;
    let mut off = 40;
    for count in 0..=MAX_IPV6_EXTENSIONS {
        let hlen = match next {
            0 | 43 | 60 | 44 | 51 if count == MAX_IPV6_EXTENSIONS => {
                return Err(DropReason::BadIpv6Extension)
            }
            // Hop-by-Hop (§4.3), Routing (§4.4), Destination Options
            // (§4.6): (len + 1) * 8 bytes.
            0 | 43 | 60 => {
                let h = pkt.get(off..off + 2).ok_or(DropReason::BadIpv6Extension)?;
                (usize::from(h[1]) + 1) * 8
            }
            // Fragment (§4.5): 8 bytes.
            44 => 8,
            // Authentication header: (len + 2) * 4 bytes (RFC 4302 §2.2).
            51 => {
                let h = pkt.get(off..off + 2).ok_or(DropReason::BadIpv6Extension)?;
                (usize::from(h[1]) + 2) * 4
            }
            _ => return Ok((next, off)),
        };
        if off + hlen > end {
            return Err(DropReason::BadIpv6Extension);
        }
        let h = &pkt[off..off + hlen];
        match next {
            0 if count != 0 => return Err(DropReason::BadIpv6Extension),
            0 | 60 => check_v6_options(&h[2..])?,
            43 if h.get(3).is_some_and(|&left| left != 0) => {
                return Err(DropReason::BadIpv6Extension)
            }
            44 => {
                let frag = u16::from_be_bytes([h[2], h[3]]);
                if frag >> 3 != 0 || frag & 1 != 0 {
                    return Err(DropReason::Fragment);
                }
            }
            _ => {}
        }
        next = h[0];
        off += hlen;
    }
    Err(DropReason::BadIpv6Extension)
}

/// The options of a Hop-by-Hop or Destination Options header (RFC 8200
/// §4.2): Pad1, PadN and Router Alert (RFC 2711) are known; an unknown
/// option is skipped only when its type's two high bits are 00.
fn check_v6_options(mut o: &[u8]) -> Result<(), DropReason> {
    while let Some(&t) = o.first() {
        if t == 0 {
            o = &o[1..];
            continue;
        }
        let len = usize::from(*o.get(1).ok_or(DropReason::BadIpv6Extension)?);
        if o.len() < 2 + len {
            return Err(DropReason::BadIpv6Extension);
        }
        if !matches!(t, 1 | 5) && t >> 6 != 0 {
            return Err(DropReason::BadIpv6Extension);
        }
        o = &o[2 + len..];
    }
    Ok(())
}

/// Writes an IP header for a packet from `src` to `dst` carrying
/// `payload_len` bytes of `protocol`. Returns the header length, or `None`
/// when `buf` is too short, the families differ or the length overflows.
/// IPv4 headers carry DF (tcpd does its own segmentation) and `ident`.
pub fn emit_ip_header(
    buf: &mut [u8],
    src: IpAddr,
    dst: IpAddr,
    protocol: u8,
    payload_len: usize,
    ttl: u8,
    ident: u16,
) -> Option<usize> {
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let total = u16::try_from(20 + payload_len).ok()?;
            let h = buf.get_mut(..20)?;
            h[0] = 0x45;
            h[1] = 0;
            h[2..4].copy_from_slice(&total.to_be_bytes());
            h[4..6].copy_from_slice(&ident.to_be_bytes());
            h[6] = 0x40; // DF
            h[7] = 0;
            h[8] = ttl;
            h[9] = protocol;
            h[10] = 0;
            h[11] = 0;
            h[12..16].copy_from_slice(&s.octets());
            h[16..20].copy_from_slice(&d.octets());
            let c = checksum_fold(checksum_sum(0, h));
            h[10..12].copy_from_slice(&c.to_be_bytes());
            Some(20)
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let plen = u16::try_from(payload_len).ok()?;
            let h = buf.get_mut(..40)?;
            h[0] = 0x60;
            h[1] = 0;
            h[2] = 0;
            h[3] = 0;
            h[4..6].copy_from_slice(&plen.to_be_bytes());
            h[6] = protocol;
            h[7] = ttl;
            h[8..24].copy_from_slice(&s.octets());
            h[24..40].copy_from_slice(&d.octets());
            Some(40)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(payload: &[u8]) -> Vec<u8> {
        let mut b = vec![0u8; 20 + payload.len()];
        let n = emit_ip_header(
            &mut b,
            "10.0.0.1".parse().unwrap(),
            "10.0.0.2".parse().unwrap(),
            PROTO_TCP,
            payload.len(),
            64,
            7,
        )
        .unwrap();
        b[n..].copy_from_slice(payload);
        b
    }

    #[test]
    fn v4_roundtrip_and_etherparse_agrees() {
        let b = v4(b"hello");
        let p = parse_ip(&b).unwrap();
        assert_eq!(p.protocol, PROTO_TCP);
        assert_eq!(p.payload, b"hello");
        let (h, rest) = etherparse::Ipv4Header::from_slice(&b).unwrap();
        assert_eq!(h.header_checksum, h.calc_header_checksum());
        assert!(h.dont_fragment);
        assert_eq!(rest, b"hello");
    }

    #[test]
    fn v4_rejects() {
        let good = v4(b"abc");
        let mut b = good.clone();
        b[10] ^= 1;
        assert_eq!(parse_ip(&b).unwrap_err(), DropReason::BadIpChecksum);
        assert_eq!(parse_ip(&good[..19]).unwrap_err(), DropReason::Truncated);
        let mut b = good.clone();
        b[0] = 0x44; // IHL 4
        assert_eq!(parse_ip(&b).unwrap_err(), DropReason::BadIpLength);
        let mut b = good.clone();
        b[3] = 200; // total length beyond the packet
        assert!(parse_ip(&b).is_err());
        let mut b = good.clone();
        b[6] = 0x20; // MF
        b[10] = 0;
        b[11] = 0;
        let c = checksum_fold(checksum_sum(0, &b[..20]));
        b[10..12].copy_from_slice(&c.to_be_bytes());
        assert_eq!(parse_ip(&b).unwrap_err(), DropReason::Fragment);
        assert_eq!(parse_ip(&[0x50]).unwrap_err(), DropReason::BadIpVersion);
        assert_eq!(parse_ip(&[]).unwrap_err(), DropReason::Truncated);
    }

    fn v4_from(src: &str, dst: &str) -> Vec<u8> {
        let mut b = vec![0u8; 24];
        emit_ip_header(
            &mut b,
            src.parse().unwrap(),
            dst.parse().unwrap(),
            PROTO_TCP,
            4,
            64,
            7,
        )
        .unwrap();
        b
    }

    fn v6_from(src: &str, dst: &str) -> Vec<u8> {
        let mut b = vec![0u8; 44];
        emit_ip_header(
            &mut b,
            src.parse().unwrap(),
            dst.parse().unwrap(),
            PROTO_TCP,
            4,
            64,
            0,
        )
        .unwrap();
        b
    }

    #[test]
    fn impossible_source_addresses_are_rejected() {
        // RFC 1122 §3.2.1.3 and RFC 4291 §2.5.2, §2.5.3, §2.7.
        for src in [
            "0.0.0.0",
            "0.1.2.3",
            "127.0.0.1",
            "127.9.9.9",
            "224.0.0.1",
            "239.255.255.250",
            "255.255.255.255",
        ] {
            let b = v4_from(src, "10.0.0.2");
            assert_eq!(
                parse_ip(&b).unwrap_err(),
                DropReason::BadSourceAddress,
                "{src}"
            );
        }
        for src in ["::", "::1", "ff02::1", "ff05::2"] {
            let b = v6_from(src, "fd00::2");
            assert_eq!(
                parse_ip(&b).unwrap_err(),
                DropReason::BadSourceAddress,
                "{src}"
            );
        }
        // Ordinary sources pass; loopback passes on a loopback packet (an
        // endpoint that plays the loopback interface, as replays of
        // loopback captures do).
        for (src, dst) in [
            ("10.0.0.1", "10.0.0.2"),
            ("1.0.0.1", "10.0.0.2"),
            ("127.0.0.1", "127.0.0.1"),
        ] {
            assert!(parse_ip(&v4_from(src, dst)).is_ok(), "{src} -> {dst}");
        }
        for (src, dst) in [
            ("fd00::1", "fd00::2"),
            ("fe80::1", "fe80::2"),
            ("::1", "::1"),
        ] {
            assert!(parse_ip(&v6_from(src, dst)).is_ok(), "{src} -> {dst}");
        }
    }

    #[test]
    fn v6_skips_extension_headers() {
        let mut b = vec![0u8; 40 + 8 + 4];
        emit_ip_header(
            &mut b,
            "fd00::1".parse().unwrap(),
            "fd00::2".parse().unwrap(),
            0, // hop-by-hop first
            12,
            64,
            0,
        )
        .unwrap();
        b[40] = PROTO_TCP; // next header after hop-by-hop
        b[41] = 0; // 8 bytes
        b[48..52].copy_from_slice(b"data");
        let p = parse_ip(&b).unwrap();
        assert_eq!(p.protocol, PROTO_TCP);
        assert_eq!(p.payload, b"data");
        // An extension header claiming to run past the packet.
        b[41] = 5;
        assert_eq!(parse_ip(&b).unwrap_err(), DropReason::BadIpv6Extension);
        // A fragment header (offset 1).
        b[6] = 44;
        b[41] = 0;
        b[42] = 0;
        b[43] = 8;
        assert_eq!(parse_ip(&b).unwrap_err(), DropReason::Fragment);
    }

    /// A packet `fd00::1 -> fd00::2` whose extension headers are `ext`
    /// (each whole, its Next Header byte filled in here) then `data` as TCP.
    fn v6_with(ext: &[(u8, Vec<u8>)], data: &[u8]) -> Vec<u8> {
        let elen: usize = ext.iter().map(|(_, h)| h.len()).sum();
        let mut b = vec![0u8; 40 + elen + data.len()];
        let first = ext.first().map_or(PROTO_TCP, |(t, _)| *t);
        emit_ip_header(
            &mut b,
            "fd00::1".parse().unwrap(),
            "fd00::2".parse().unwrap(),
            first,
            elen + data.len(),
            64,
            0,
        )
        .unwrap();
        let mut off = 40;
        for (i, (_, h)) in ext.iter().enumerate() {
            b[off..off + h.len()].copy_from_slice(h);
            b[off] = ext.get(i + 1).map_or(PROTO_TCP, |(t, _)| *t);
            off += h.len();
        }
        b[off..].copy_from_slice(data);
        b
    }

    #[test]
    fn v6_extension_rules_of_rfc_8200() {
        let pad = |t: u8| (t, vec![0, 0, 1, 4, 0, 0, 0, 0]); // PadN(4)
                                                             // Hop-by-hop, destination options, routing with Segments Left 0.
        let ok = v6_with(
            &[pad(0), pad(60), (43, vec![0, 0, 4, 0, 0, 0, 0, 0])],
            b"tcp!",
        );
        let p = parse_ip(&ok).unwrap();
        assert_eq!((p.protocol, p.payload), (PROTO_TCP, &b"tcp!"[..]));
        // Hop-by-hop anywhere but first (§4.3).
        let b = v6_with(&[pad(60), pad(0)], b"tcp!");
        assert_eq!(parse_ip(&b).unwrap_err(), DropReason::BadIpv6Extension);
        // Routing with Segments Left 1 (§4.4).
        let b = v6_with(&[(43, vec![0, 0, 0, 1, 0, 0, 0, 0])], b"tcp!");
        assert_eq!(parse_ip(&b).unwrap_err(), DropReason::BadIpv6Extension);
        // Unknown option 0x3e (action 00): skipped; 0x7e (01): discard (§4.2).
        let b = v6_with(&[(60, vec![0, 0, 0x3e, 4, 0, 0, 0, 0])], b"tcp!");
        assert!(parse_ip(&b).is_ok());
        let b = v6_with(&[(60, vec![0, 0, 0x7e, 4, 0, 0, 0, 0])], b"tcp!");
        assert_eq!(parse_ip(&b).unwrap_err(), DropReason::BadIpv6Extension);
        // An option running past its header.
        let b = v6_with(&[(60, vec![0, 0, 1, 9, 0, 0, 0, 0])], b"tcp!");
        assert_eq!(parse_ip(&b).unwrap_err(), DropReason::BadIpv6Extension);
        // Atomic fragment (RFC 6946): processed whole.
        let b = v6_with(&[(44, vec![0, 0, 0, 0, 1, 2, 3, 4])], b"tcp!");
        let p = parse_ip(&b).unwrap();
        assert_eq!((p.protocol, p.payload), (PROTO_TCP, &b"tcp!"[..]));
        // A first fragment with More Fragments set is not.
        let b = v6_with(&[(44, vec![0, 0, 0, 1, 1, 2, 3, 4])], b"tcp!");
        assert_eq!(parse_ip(&b).unwrap_err(), DropReason::Fragment);
        // The count limit: 8 destination options headers pass, 9 do not.
        let b = v6_with(&vec![pad(60); MAX_IPV6_EXTENSIONS], b"tcp!");
        assert!(parse_ip(&b).is_ok());
        let b = v6_with(&vec![pad(60); MAX_IPV6_EXTENSIONS + 1], b"tcp!");
        assert_eq!(parse_ip(&b).unwrap_err(), DropReason::BadIpv6Extension);
    }
}
