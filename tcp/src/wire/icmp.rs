//! ICMP echo (RFC 792) and ICMPv6 echo (RFC 4443 §4).

use super::checksum::{checksum_fold, checksum_sum, pseudo_header_sum};
use super::ip::{emit_ip_header, ip_header_len, IpPacket, PROTO_ICMP, PROTO_ICMPV6};
use super::DropReason;
use std::net::IpAddr;

/// An echo request.
#[derive(Clone, Copy, Debug)]
pub struct IcmpEcho<'a> {
    /// Identifier.
    pub ident: u16,
    /// Sequence number.
    pub seq_no: u16,
    /// The data to echo back.
    pub data: &'a [u8],
}

/// Parses an ICMP or ICMPv6 message and returns it when it is an echo
/// request; other valid messages give [`DropReason::IcmpIgnored`].
pub fn parse_icmp_echo<'a>(ip: &IpPacket<'a>) -> Result<IcmpEcho<'a>, DropReason> {
    let b = ip.payload;
    if b.len() < 8 {
        return Err(DropReason::BadIcmp);
    }
    let (sum, request) = match ip.src {
        // RFC 792: the checksum covers the ICMP message only.
        IpAddr::V4(_) => (checksum_sum(0, b), 8),
        // RFC 4443 §2.3: ICMPv6 includes the IPv6 pseudo-header.
        IpAddr::V6(_) => (
            checksum_sum(
                pseudo_header_sum(ip.src, ip.dst, PROTO_ICMPV6, b.len() as u32),
                b,
            ),
            128,
        ),
    };
    if checksum_fold(sum) != 0 {
        return Err(DropReason::BadIcmp);
    }
    if b[0] != request || b[1] != 0 {
        return Err(DropReason::IcmpIgnored);
    }
    Ok(IcmpEcho {
        ident: u16::from_be_bytes([b[4], b[5]]),
        seq_no: u16::from_be_bytes([b[6], b[7]]),
        data: &b[8..],
    })
}

/// Writes the echo reply to `echo` from `src` to `dst`. Returns the packet
/// length, or `None` when `buf` is too short.
pub fn emit_icmp_echo_reply(
    buf: &mut [u8],
    src: IpAddr,
    dst: IpAddr,
    echo: &IcmpEcho<'_>,
) -> Option<usize> {
    let iph = ip_header_len(src);
    let len = 8 + echo.data.len();
    let total = iph + len;
    if buf.len() < total {
        return None;
    }
    let (proto, reply) = match src {
        IpAddr::V4(_) => (PROTO_ICMP, 0),
        IpAddr::V6(_) => (PROTO_ICMPV6, 129),
    };
    emit_ip_header(buf, src, dst, proto, len, 64, 0)?;
    let m = &mut buf[iph..total];
    m[0] = reply;
    m[1] = 0;
    m[2] = 0;
    m[3] = 0;
    m[4..6].copy_from_slice(&echo.ident.to_be_bytes());
    m[6..8].copy_from_slice(&echo.seq_no.to_be_bytes());
    m[8..].copy_from_slice(echo.data);
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
    fn echo_reply_of_reply_parses_back() {
        for (a, b) in [("10.0.0.1", "10.0.0.2"), ("fd00::1", "fd00::2")] {
            let a: IpAddr = a.parse().unwrap();
            let b: IpAddr = b.parse().unwrap();
            // Build a request by emitting a "reply" and flipping its type.
            let req = IcmpEcho {
                ident: 9,
                seq_no: 3,
                data: b"ping!",
            };
            let mut buf = [0u8; 100];
            let n = emit_icmp_echo_reply(&mut buf, a, b, &req).unwrap();
            let iph = ip_header_len(a);
            let request_type = if a.is_ipv4() { 8 } else { 128 };
            let old = u16::from_be_bytes([buf[iph], buf[iph + 1]]);
            buf[iph] = request_type;
            // Incremental checksum update (RFC 1624).
            let new = u16::from_be_bytes([buf[iph], buf[iph + 1]]);
            let c = u16::from_be_bytes([buf[iph + 2], buf[iph + 3]]);
            let sum = u64::from(!c) + u64::from(!old) + u64::from(new);
            buf[iph + 2..iph + 4].copy_from_slice(&checksum_fold(sum).to_be_bytes());
            let ip = parse_ip(&buf[..n]).unwrap();
            let e = parse_icmp_echo(&ip).unwrap();
            assert_eq!((e.ident, e.seq_no, e.data), (9, 3, &b"ping!"[..]));
            buf[n - 1] ^= 1;
            let ip = parse_ip(&buf[..n]).unwrap();
            assert_eq!(parse_icmp_echo(&ip).unwrap_err(), DropReason::BadIcmp);
        }
    }
}
