//! ICMP and ICMPv6 error messages (RFC 792, RFC 1191, RFC 4443, RFC 8201):
//! what went wrong and the TCP header of ours they quote.

use super::checksum::{checksum_fold, checksum_sum, pseudo_header_sum};
use super::ip::{IpPacket, PROTO_ICMPV6, PROTO_TCP};
use super::DropReason;
use crate::seq::SeqNum;
use core::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Why an ICMP error says a packet of ours did not get through (other
/// than "too big"). Named after the errno Linux gives the socket
/// (`icmp_err_convert`, `icmpv6_err_convert`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IcmpError {
    /// No route to the network (ENETUNREACH): ICMP type 3 codes 0, 6, 11;
    /// ICMPv6 type 1 code 0.
    NetUnreachable,
    /// The host cannot be reached (EHOSTUNREACH): ICMP type 3 codes 1, 5,
    /// 7, 8, 12, 14, 15; ICMPv6 type 1 codes 2, 3 and unknown ones.
    HostUnreachable,
    /// The host does not speak TCP (ENOPROTOOPT): ICMP type 3 code 2.
    ProtocolUnreachable,
    /// Nothing listens on the port (ECONNREFUSED): ICMP type 3 code 3,
    /// ICMPv6 type 1 code 4.
    PortUnreachable,
    /// Administratively prohibited (RFC 1812 §5.2.7.1; EACCES/EHOSTUNREACH):
    /// ICMP type 3 codes 9, 10, 13; ICMPv6 type 1 codes 1, 5, 6.
    AdminProhibited,
    /// TTL or hop limit exceeded in transit (ICMP type 11, ICMPv6 type 3).
    TimeExceeded,
    /// A router or the host found the header bad (ICMP type 12, ICMPv6 type 4).
    ParameterProblem,
}

impl IcmpError {
    /// A short lower-case name ("port unreachable"), for logs and reports.
    pub fn name(self) -> &'static str {
        match self {
            IcmpError::NetUnreachable => "network unreachable",
            IcmpError::HostUnreachable => "host unreachable",
            IcmpError::ProtocolUnreachable => "protocol unreachable",
            IcmpError::PortUnreachable => "port unreachable",
            IcmpError::AdminProhibited => "administratively prohibited",
            IcmpError::TimeExceeded => "time exceeded",
            IcmpError::ParameterProblem => "parameter problem",
        }
    }
}

impl fmt::Display for IcmpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What an ICMP error message reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IcmpErrorKind {
    /// Unreachable, time exceeded or parameter problem.
    Error(IcmpError),
    /// IPv4 "fragmentation needed and DF set" (RFC 1191 §4; the next-hop
    /// MTU, 0 from a router older than RFC 1191) or ICMPv6 "packet too
    /// big" (RFC 8201 §4; the MTU field).
    TooBig(u32),
}

/// A parsed ICMP error about one of our TCP segments: the first 8 bytes of
/// the quoted TCP header are all RFC 792 promises.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IcmpErrorMsg {
    /// What went wrong.
    pub kind: IcmpErrorKind,
    /// The quoted packet's source (ours) address and port.
    pub local: SocketAddr,
    /// The quoted packet's destination address and port.
    pub remote: SocketAddr,
    /// The quoted segment's sequence number.
    pub seq: SeqNum,
    /// The quoted packet's IP length (IPv4 total length, IPv6 40 plus the
    /// payload length): what RFC 1191 §5 guesses below when the router
    /// gave no MTU.
    pub quoted_len: u16,
}

/// Most IPv6 extension headers walked in a quoted packet.
const MAX_QUOTE_EXTENSIONS: usize = 8;

/// Whether an ICMP(v6) message of this type is an error (RFC 792, RFC
/// 4443 §2.1: types below 128 are errors).
fn is_error_type(v6: bool, t: u8) -> bool {
    if v6 {
        (1..=4).contains(&t)
    } else {
        // 3 unreachable, 11 time exceeded, 12 parameter problem; 4, source
        // quench, is deprecated (RFC 6633) and counted as ignored; 5,
        // redirect, is for routers' hosts and ignored as well.
        matches!(t, 3 | 4 | 5 | 11 | 12)
    }
}

/// Parses an ICMP or ICMPv6 error. `Ok(None)`: not an error message (an
/// echo request, say: the caller goes on). `Err`: a malformed error
/// ([`DropReason::BadIcmp`]), one about something other than TCP or
/// quoting too little ([`DropReason::IcmpIgnored`]).
pub fn parse_icmp_error(ip: &IpPacket<'_>) -> Result<Option<IcmpErrorMsg>, DropReason> {
    let b = ip.payload;
    let v6 = ip.src.is_ipv6();
    let Some(&t) = b.first() else {
        return Err(DropReason::BadIcmp);
    };
    if !is_error_type(v6, t) {
        return Ok(None);
    }
    if b.len() < 8 {
        return Err(DropReason::BadIcmp);
    }
    let sum = if v6 {
        // RFC 4443 §2.3: the pseudo-header is included.
        checksum_sum(
            pseudo_header_sum(ip.src, ip.dst, PROTO_ICMPV6, b.len() as u32),
            b,
        )
    } else {
        checksum_sum(0, b)
    };
    if checksum_fold(sum) != 0 {
        return Err(DropReason::BadIcmp);
    }
    let code = b[1];
    let kind = if v6 {
        match t {
            1 => IcmpErrorKind::Error(match code {
                0 => IcmpError::NetUnreachable,
                1 | 5 | 6 => IcmpError::AdminProhibited,
                4 => IcmpError::PortUnreachable,
                _ => IcmpError::HostUnreachable,
            }),
            2 => IcmpErrorKind::TooBig(u32::from_be_bytes([b[4], b[5], b[6], b[7]])),
            3 => IcmpErrorKind::Error(IcmpError::TimeExceeded),
            _ => IcmpErrorKind::Error(IcmpError::ParameterProblem),
        }
    } else {
        match (t, code) {
            (3, 4) => IcmpErrorKind::TooBig(u32::from(u16::from_be_bytes([b[6], b[7]]))),
            (3, 0 | 6 | 11) => IcmpErrorKind::Error(IcmpError::NetUnreachable),
            (3, 2) => IcmpErrorKind::Error(IcmpError::ProtocolUnreachable),
            (3, 3) => IcmpErrorKind::Error(IcmpError::PortUnreachable),
            (3, 9 | 10 | 13) => IcmpErrorKind::Error(IcmpError::AdminProhibited),
            (3, _) => IcmpErrorKind::Error(IcmpError::HostUnreachable),
            (11, _) => IcmpErrorKind::Error(IcmpError::TimeExceeded),
            (12, _) => IcmpErrorKind::Error(IcmpError::ParameterProblem),
            _ => return Err(DropReason::IcmpIgnored),
        }
    };
    let q = &b[8..];
    let (src, dst, tcp, quoted_len) = if v6 { quote_v6(q)? } else { quote_v4(q)? };
    let sport = u16::from_be_bytes([tcp[0], tcp[1]]);
    let dport = u16::from_be_bytes([tcp[2], tcp[3]]);
    let seq = SeqNum(u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]));
    Ok(Some(IcmpErrorMsg {
        kind,
        local: SocketAddr::new(src, sport),
        remote: SocketAddr::new(dst, dport),
        seq,
        quoted_len,
    }))
}

type Quote<'a> = (IpAddr, IpAddr, &'a [u8], u16);

/// The quoted IPv4 header and the first 8 bytes of TCP after it (RFC 792).
fn quote_v4(q: &[u8]) -> Result<Quote<'_>, DropReason> {
    if q.len() < 20 || q[0] >> 4 != 4 {
        return Err(DropReason::IcmpIgnored);
    }
    let ihl = usize::from(q[0] & 0x0f) * 4;
    // A quoted non-first fragment carries no TCP header.
    let frag_off = u16::from_be_bytes([q[6], q[7]]) & 0x1fff;
    if ihl < 20 || q[9] != PROTO_TCP || frag_off != 0 {
        return Err(DropReason::IcmpIgnored);
    }
    let tcp = q.get(ihl..ihl + 8).ok_or(DropReason::IcmpIgnored)?;
    let src = Ipv4Addr::new(q[12], q[13], q[14], q[15]);
    let dst = Ipv4Addr::new(q[16], q[17], q[18], q[19]);
    let total = u16::from_be_bytes([q[2], q[3]]);
    Ok((IpAddr::V4(src), IpAddr::V4(dst), tcp, total))
}

/// The quoted IPv6 header, its extension headers (walked with a count
/// limit) and the first 8 bytes of TCP.
fn quote_v6(q: &[u8]) -> Result<Quote<'_>, DropReason> {
    if q.len() < 40 || q[0] >> 4 != 6 {
        return Err(DropReason::IcmpIgnored);
    }
    let mut next = q[6];
    let mut off = 40;
    for _ in 0..MAX_QUOTE_EXTENSIONS {
        match next {
            0 | 43 | 60 => {
                let h = q.get(off..off + 2).ok_or(DropReason::IcmpIgnored)?;
                next = h[0];
                off += (usize::from(h[1]) + 1) * 8;
            }
            44 => {
                let h = q.get(off..off + 8).ok_or(DropReason::IcmpIgnored)?;
                if u16::from_be_bytes([h[2], h[3]]) >> 3 != 0 {
                    return Err(DropReason::IcmpIgnored);
                }
                next = h[0];
                off += 8;
            }
            _ => break,
        }
    }
    if next != PROTO_TCP {
        return Err(DropReason::IcmpIgnored);
    }
    let tcp = q.get(off..off + 8).ok_or(DropReason::IcmpIgnored)?;
    let mut s = [0u8; 16];
    s.copy_from_slice(&q[8..24]);
    let mut d = [0u8; 16];
    d.copy_from_slice(&q[24..40]);
    let len = 40u16.saturating_add(u16::from_be_bytes([q[4], q[5]]));
    Ok((
        IpAddr::V6(Ipv6Addr::from(s)),
        IpAddr::V6(Ipv6Addr::from(d)),
        tcp,
        len,
    ))
}

/// RFC 1191 §7 "plateau" MTUs: when an old router sends frag-needed
/// without an MTU, the next lower plateau below the quoted packet's length
/// is the guess (§5).
pub fn plateau_below(len: u16) -> u32 {
    const PLATEAUS: [u16; 10] = [32000, 17914, 8166, 4352, 2002, 1492, 1006, 508, 296, 68];
    PLATEAUS
        .iter()
        .find(|&&p| p < len)
        .map_or(68, |&p| u32::from(p))
}

/// What RFC 8200 §4 has a host answer for an IPv6 packet whose extension
/// headers it refused: the ICMPv6 Parameter Problem code (RFC 4443 §3.4)
/// and pointer (the offset of the offending byte in the packet), or `None`
/// when the packet is to be discarded silently (an unknown option whose
/// type's high bits are 01, a malformed chain, one too long).
///
/// - Hop-by-Hop Options anywhere but first (§4.1): code 1 (unrecognized
///   Next Header), pointing to the Next Header field that named it.
/// - An unrecognized option in a Hop-by-Hop or Destination Options header
///   (§4.2) whose type's high bits are 10, or 11 and the destination is
///   not multicast: code 2, pointing to the option type.
/// - A Routing header with Segments Left > 0 of a type we do not process
///   (§4.4; we process none, RFC 5095 deprecates type 0): code 0, pointing
///   to the Routing Type.
///
/// Linux (`ip6_parse_tlv`, `ipv6_rthdr_rcv`, `ip6_protocol_deliver_rcu`)
/// answers the same three cases with the same codes and pointers.
pub fn v6_param_problem(pkt: &[u8]) -> Option<(u8, u32)> {
    let dst_multicast = pkt.get(24) == Some(&0xff);
    let mut next = *pkt.get(6)?;
    // Where the Next Header byte naming the current header sits.
    let mut named_at = 6usize;
    let mut off = 40usize;
    for count in 0..super::ip::MAX_IPV6_EXTENSIONS {
        let hlen = match next {
            0 | 43 | 60 => (usize::from(*pkt.get(off + 1)?) + 1) * 8,
            44 => 8,
            51 => (usize::from(*pkt.get(off + 1)?) + 2) * 4,
            _ => return None,
        };
        let h = pkt.get(off..off + hlen)?;
        match next {
            0 if count != 0 => return Some((1, named_at as u32)),
            0 | 60 => {
                let mut i = 2;
                while i < h.len() {
                    let t = h[i];
                    if t == 0 {
                        i += 1;
                        continue;
                    }
                    let len = usize::from(*h.get(i + 1)?);
                    if !matches!(t, 1 | 5) {
                        match t >> 6 {
                            0 => {}
                            1 => return None,
                            3 if dst_multicast => return None,
                            _ => return Some((2, (off + i) as u32)),
                        }
                    }
                    i += 2 + len;
                }
            }
            43 if h[3] != 0 => return Some((0, (off + 2) as u32)),
            _ => {}
        }
        named_at = off;
        next = h[0];
        off += hlen;
    }
    None
}

/// Whether the upper layer of IPv6 packet `pkt` is an ICMPv6 error, which
/// no error may answer (RFC 4443 §2.4 (e.1)). Headers are skipped by their
/// lengths only; a chain that cannot be walked counts as an error (no
/// answer).
pub fn v6_carries_icmp_error(pkt: &[u8]) -> bool {
    let Some(&first) = pkt.get(6) else {
        return true;
    };
    let (mut next, mut off) = (first, 40usize);
    for _ in 0..=super::ip::MAX_IPV6_EXTENSIONS {
        let hlen = match next {
            0 | 43 | 60 => pkt.get(off + 1).map(|&l| (usize::from(l) + 1) * 8),
            44 => Some(8),
            51 => pkt.get(off + 1).map(|&l| (usize::from(l) + 2) * 4),
            PROTO_ICMPV6 => return pkt.get(off).is_none_or(|&t| t < 128),
            _ => return false,
        };
        let Some(hlen) = hlen else { return true };
        let Some(&n) = pkt.get(off) else { return true };
        next = n;
        off += hlen;
    }
    true
}
