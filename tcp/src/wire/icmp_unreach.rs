//! ICMP and ICMPv6 error messages we send: destination unreachable (RFC 792,
//! RFC 4443 §3.1) and parameter problem (RFC 4443 §3.4), each quoting the
//! packet that caused it.

use super::checksum::{checksum_fold, checksum_sum, pseudo_header_sum};
use super::ip::{emit_ip_header, ip_header_len, PROTO_ICMP, PROTO_ICMPV6};
use std::net::IpAddr;

/// Largest ICMPv4 error we build, IP header included: RFC 1812 §4.3.2.3
/// ("the ICMP datagram SHOULD contain as much of the original datagram as
/// possible without the length of the ICMP datagram exceeding 576 bytes");
/// Linux (`icmp_send`) quotes up to the same bound. RFC 792 asks only for
/// the IP header and the first 8 bytes of the data.
pub const ICMP_ERROR_MAX_V4: usize = 576;
/// Largest ICMPv6 error we build, IPv6 header included: RFC 4443 §2.4(c)
/// ("as much of invoking packet as possible without the ICMPv6 packet
/// exceeding the minimum IPv6 MTU"), 1280 (RFC 8200 §5).
pub const ICMP_ERROR_MAX_V6: usize = 1280;

/// ICMP type 3, ICMPv6 type 1: destination unreachable.
pub const ICMP_DEST_UNREACH: u8 = 3;
/// ICMPv6 destination unreachable (RFC 4443 §3.1).
pub const ICMPV6_DEST_UNREACH: u8 = 1;
/// ICMPv6 parameter problem (RFC 4443 §3.4).
pub const ICMPV6_PARAM_PROBLEM: u8 = 4;
/// ICMP "protocol unreachable" code (RFC 792).
pub const ICMP_PROTOCOL_UNREACH: u8 = 2;
/// ICMP "port unreachable" code (RFC 792).
pub const ICMP_PORT_UNREACH: u8 = 3;
/// ICMPv6 "port unreachable" code (RFC 4443 §3.1).
pub const ICMPV6_PORT_UNREACH: u8 = 4;
/// ICMPv6 parameter problem code 1, "unrecognized Next Header type
/// encountered" (RFC 4443 §3.4; RFC 8200 §4 asks for it).
pub const ICMPV6_UNRECOGNIZED_NEXT_HEADER: u8 = 1;

/// Why a destination is unreachable, as we tell a sender (the codes of
/// ICMP type 3, RFC 792 and RFC 1812 §5.2.7.1, and of ICMPv6 type 1,
/// RFC 4443 §3.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Unreach {
    /// No route to the network: ICMP code 0, ICMPv6 code 0 ("no route to
    /// destination").
    Net,
    /// The host cannot be reached: ICMP code 1, ICMPv6 code 3 ("address
    /// unreachable").
    Host,
    /// Nothing listens on the port: ICMP code 3, ICMPv6 code 4.
    Port,
    /// Communication administratively prohibited: ICMP code 13 (RFC 1812
    /// §5.2.7.1), ICMPv6 code 1.
    AdminProhibited,
}

impl Unreach {
    /// The (type, code) of the message for a packet of family `v6`.
    pub fn type_code(self, v6: bool) -> (u8, u8) {
        if v6 {
            let code = match self {
                Unreach::Net => 0,
                Unreach::Host => 3,
                Unreach::Port => ICMPV6_PORT_UNREACH,
                Unreach::AdminProhibited => 1,
            };
            (ICMPV6_DEST_UNREACH, code)
        } else {
            let code = match self {
                Unreach::Net => 0,
                Unreach::Host => 1,
                Unreach::Port => ICMP_PORT_UNREACH,
                Unreach::AdminProhibited => 13,
            };
            (ICMP_DEST_UNREACH, code)
        }
    }
}

/// The most bytes of the invoking packet an error from `src` quotes when
/// the packet may be at most `max_len` bytes long (the MTU): the limit of
/// RFC 1812 §4.3.2.3 / RFC 4443 §2.4(c) or `max_len`, whichever is lower,
/// less the IP and ICMP headers.
pub fn icmp_quote_room(src: IpAddr, max_len: usize) -> usize {
    let cap = if src.is_ipv4() {
        ICMP_ERROR_MAX_V4
    } else {
        ICMP_ERROR_MAX_V6
    };
    cap.min(max_len).saturating_sub(ip_header_len(src) + 8)
}

/// Writes an ICMP (IPv4) or ICMPv6 (IPv6) error message from `src` to
/// `dst`: `icmp_type`, `code`, the 4 bytes after the checksum (`rest`:
/// unused and zero for unreachable, the pointer for an ICMPv6 parameter
/// problem), then as much of `invoking` as [`icmp_quote_room`] allows for
/// `max_len`. IPv4 errors carry TOS 0xc0 (internetwork control, as Linux's
/// `icmp_send`) and no DF bit is needed: they never exceed 576 bytes.
/// Returns the packet length, or `None` when `buf` is too short or the
/// families differ.
#[allow(clippy::too_many_arguments)]
pub fn emit_icmp_error(
    buf: &mut [u8],
    src: IpAddr,
    dst: IpAddr,
    ttl: u8,
    icmp_type: u8,
    code: u8,
    rest: u32,
    invoking: &[u8],
    max_len: usize,
) -> Option<usize> {
    let iph = ip_header_len(src);
    let quote = invoking.len().min(icmp_quote_room(src, max_len));
    let len = 8 + quote;
    let total = iph + len;
    if buf.len() < total {
        return None;
    }
    let proto = if src.is_ipv4() {
        PROTO_ICMP
    } else {
        PROTO_ICMPV6
    };
    emit_ip_header(buf, src, dst, proto, len, ttl, 0)?;
    if src.is_ipv4() {
        // TOS 0xc0, no DF; redo the header checksum (RFC 791 §3.1).
        buf[1] = 0xc0;
        buf[6] = 0;
        buf[10] = 0;
        buf[11] = 0;
        let c = checksum_fold(checksum_sum(0, &buf[..20]));
        buf[10..12].copy_from_slice(&c.to_be_bytes());
    }
    let m = &mut buf[iph..total];
    m[0] = icmp_type;
    m[1] = code;
    m[2] = 0;
    m[3] = 0;
    m[4..8].copy_from_slice(&rest.to_be_bytes());
    m[8..].copy_from_slice(&invoking[..quote]);
    // RFC 792: the checksum covers the ICMP message; RFC 4443 §2.3: ICMPv6
    // adds the pseudo-header.
    let init = match src {
        IpAddr::V4(_) => 0,
        IpAddr::V6(_) => pseudo_header_sum(src, dst, PROTO_ICMPV6, len as u32),
    };
    let c = checksum_fold(checksum_sum(init, m));
    m[2..4].copy_from_slice(&c.to_be_bytes());
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::super::parse_ip;
    use super::*;

    #[test]
    fn quotes_up_to_the_rfc_limits_and_checksums() {
        let big = vec![0xabu8; 3000];
        for (s, d, cap) in [
            ("10.0.0.2", "10.0.0.1", ICMP_ERROR_MAX_V4),
            ("fd00::2", "fd00::1", ICMP_ERROR_MAX_V6),
        ] {
            let s: IpAddr = s.parse().unwrap();
            let d: IpAddr = d.parse().unwrap();
            let mut buf = [0u8; 2000];
            let n = emit_icmp_error(&mut buf, s, d, 64, 3, 1, 0, &big, 1500).unwrap();
            assert_eq!(n, cap, "as much as fits the limit");
            let ip = parse_ip(&buf[..n]).unwrap();
            assert_eq!((ip.src, ip.dst), (s, d));
            let init = if s.is_ipv6() {
                pseudo_header_sum(s, d, PROTO_ICMPV6, ip.payload.len() as u32)
            } else {
                0
            };
            assert_eq!(checksum_fold(checksum_sum(init, ip.payload)), 0);
            // A short packet is quoted whole; an MTU below the cap bounds it.
            let n = emit_icmp_error(&mut buf, s, d, 64, 3, 1, 0, &big[..30], 1500).unwrap();
            assert_eq!(n, ip_header_len(s) + 8 + 30);
            let n = emit_icmp_error(&mut buf, s, d, 64, 3, 1, 0, &big, 300).unwrap();
            assert_eq!(n, 300);
            assert!(emit_icmp_error(&mut buf[..50], s, d, 64, 3, 1, 0, &big, 1500).is_none());
        }
    }
}
