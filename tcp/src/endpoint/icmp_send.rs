//! ICMP errors for datagrams to our addresses that nothing here takes, as
//! Linux sends them: port unreachable for UDP (tcpd has no UDP sockets, so
//! every port is closed: RFC 1122 §4.1.3.1 "If a datagram arrives addressed
//! to a UDP port for which there is no pending LISTEN call, UDP SHOULD send
//! an ICMP Port Unreachable message"), protocol unreachable for an IPv4
//! protocol we do not speak (RFC 1122 §3.2.2.1), and for IPv6 a parameter
//! problem "unrecognized Next Header" pointing at the field (RFC 8200 §4,
//! RFC 4443 §3.4). `traceroute -U` and connected UDP sockets
//! (ECONNREFUSED) rely on them.
//!
//! Never sent (RFC 1122 §3.2.2, RFC 4443 §2.4(e)) in reply to an ICMP
//! error (ours are only for UDP and unknown protocols), to a broadcast or
//! multicast destination or from a source that is not one host (the
//! endpoint drops those before: `valid_source`), nor for a non-first
//! fragment (fragments reach this only reassembled). Rate-limited as Linux:
//! a global token bucket (`icmp_msgs_per_sec` 1000, `icmp_msgs_burst` 50,
//! `icmp_global_allow`) and one per destination (`icmp_ratelimit` 1000 ms
//! with a burst of 6, `inet_peer_xrlim_allow`'s XRLIM_BURST_FACTOR).

use super::{Endpoint, KeyedState};
use crate::time::{Duration, Instant};
use crate::wire::{
    checksum_fold, checksum_sum, pseudo_header_sum, DropReason, IpPacket, ICMPV6_PARAM_PROBLEM,
    ICMPV6_PORT_UNREACH, ICMPV6_UNRECOGNIZED_NEXT_HEADER, ICMP_DEST_UNREACH, ICMP_PORT_UNREACH,
    ICMP_PROTOCOL_UNREACH, PROTO_UDP,
};
use std::hash::{BuildHasher, Hasher};
use std::net::{IpAddr, SocketAddr};

/// IPv6 "No Next Header" (RFC 8200 §4.7): nothing follows, nothing to
/// complain about.
const IPV6_NO_NEXT_HEADER: u8 = 59;
/// IGMP: Linux takes it (multicast group management), so it draws no
/// protocol unreachable there either.
const PROTO_IGMP: u8 = 2;
/// Linux's XRLIM_BURST_FACTOR: a destination may take six errors at once.
const PEER_BURST: u64 = 6;

/// The two token buckets.
#[derive(Debug)]
pub(crate) struct IcmpLimiter {
    /// Global credit in millionths of a message, and when it was topped up.
    global: (u64, Option<Instant>),
    /// Per-destination buckets, direct-mapped by a keyed hash of the
    /// address (a collision shares or takes over a bucket; the global one
    /// still bounds the total): (address, last top-up, credit in µs).
    peers: Vec<Option<(IpAddr, Instant, u64)>>,
    key: KeyedState,
}

impl IcmpLimiter {
    pub(crate) fn new(key: (u64, u64)) -> IcmpLimiter {
        IcmpLimiter {
            global: (0, None),
            peers: Vec::new(),
            key: KeyedState(key.0, key.1),
        }
    }

    /// Whether an error to `dst` may go now; takes its tokens if so.
    fn allow(
        &mut self,
        now: Instant,
        dst: IpAddr,
        per_sec: u32,
        burst: u32,
        interval: Duration,
        slots: usize,
    ) -> bool {
        // Global (Linux icmp_global_allow): per_sec messages a second, at
        // most `burst` saved up; it starts full.
        const ONE: u64 = 1_000_000;
        let cap = u64::from(burst.max(1)) * ONE;
        let credit = match self.global.1 {
            None => cap,
            Some(t) => self
                .global
                .0
                .saturating_add(
                    now.saturating_since(t)
                        .as_micros()
                        .saturating_mul(u64::from(per_sec)),
                )
                .min(cap),
        };
        self.global = (credit, Some(now));
        if credit < ONE {
            return false;
        }
        // Per destination (inet_peer_xrlim_allow): one per `interval`, six
        // saved up; a new destination starts full. Interval 0: no limit.
        let tmo = interval.as_micros();
        if tmo > 0 {
            if self.peers.is_empty() {
                self.peers.resize(slots.max(1), None);
            }
            let mut h = self.key.build_hasher();
            match dst {
                IpAddr::V4(a) => h.write(&a.octets()),
                IpAddr::V6(a) => h.write(&a.octets()),
            }
            let i = (h.finish() % self.peers.len() as u64) as usize;
            let full = PEER_BURST * tmo;
            let tokens = match self.peers[i] {
                Some((a, t, c)) if a == dst => c
                    .saturating_add(now.saturating_since(t).as_micros())
                    .min(full),
                _ => full,
            };
            if tokens < tmo {
                self.peers[i] = Some((dst, now, tokens));
                return false;
            }
            self.peers[i] = Some((dst, now, tokens - tmo));
        }
        self.global.0 = credit - ONE;
        true
    }
}

/// Whether a UDP datagram is well-formed: a length field that fits, and a
/// right checksum (RFC 768; zero means none over IPv4, and is invalid over
/// IPv6, RFC 8200 §8.1). Linux checks it before answering with an error
/// (`__udp4_lib_rcv`: `csum_error` comes before `icmp_send`), unless the
/// device vouched for it (`verify` false).
fn udp_ok(ip: &IpPacket<'_>, verify: bool) -> bool {
    let b = ip.payload;
    if b.len() < 8 {
        return false;
    }
    let len = usize::from(u16::from_be_bytes([b[4], b[5]]));
    if len < 8 || len > b.len() {
        return false;
    }
    let sum = u16::from_be_bytes([b[6], b[7]]);
    if !verify {
        return true;
    }
    if sum == 0 {
        return ip.src.is_ipv4();
    }
    let init = pseudo_header_sum(ip.src, ip.dst, PROTO_UDP, len as u32);
    checksum_fold(checksum_sum(init, &b[..len])) == 0
}

/// The offset in `ip.packet` of the Next Header field that names
/// `ip.protocol`: 6 in the fixed header, or the first byte of the last
/// extension header (RFC 8200 §4; the lengths as the parser walked them).
fn next_header_pointer(ip: &IpPacket<'_>) -> u32 {
    let p = ip.packet;
    let end = p.len() - ip.payload.len();
    let (mut ptr, mut off) = (6usize, 40usize);
    while off < end {
        let Some(&kind) = p.get(ptr) else { break };
        let hlen = match (kind, p.get(off + 1)) {
            (0 | 43 | 60, Some(&l)) => (usize::from(l) + 1) * 8,
            (44, _) => 8,
            (51, Some(&l)) => (usize::from(l) + 2) * 4,
            _ => break,
        };
        ptr = off;
        off += hlen;
    }
    ptr as u32
}

impl Endpoint {
    /// A datagram to one of our addresses of a protocol we do not take:
    /// counted as dropped, and answered as Linux answers it (see the
    /// module documentation) when [`crate::Config::icmp_unreachables`] is
    /// on.
    /// `verify`: check the UDP checksum (false when the device vouched for
    /// it, as for TCP in [`Endpoint::handle_offloaded`]: a TUN with offload
    /// hands the local kernel's datagrams over with only the pseudo-header
    /// sum in the field).
    /// Sends an ICMP error we originate from `ours` to `peer`, quoting
    /// `invoking`: the one gate every such error passes (port and protocol
    /// unreachable here, Parameter Problem for extension headers and
    /// reassembly Time Exceeded in `icmp_err`). Off unless
    /// [`crate::Config::icmp_unreachables`]; under Linux's two rate limits
    /// (`icmp_global_allow`, then `icmpv4_xrlim_allow` /
    /// `icmpv6_xrlim_allow` per destination), counted in
    /// `icmp_out.rate_limited` when refused. Returns whether it was queued.
    pub(super) fn send_icmp_error(
        &mut self,
        ours: IpAddr,
        peer: IpAddr,
        icmp_type: u8,
        code: u8,
        rest: u32,
        invoking: &[u8],
    ) -> bool {
        if !self.config.icmp_unreachables {
            return false;
        }
        let c = &self.config;
        let (per_sec, burst, interval, slots) = (
            c.icmp_msgs_per_sec,
            c.icmp_msgs_burst,
            c.icmp_ratelimit,
            c.icmp_ratelimit_peers,
        );
        if !self
            .icmp_limiter
            .allow(self.now, peer, per_sec, burst, interval, slots)
        {
            self.stats.icmp_out.rate_limited += 1;
            return false;
        }
        let local = SocketAddr::new(ours, 0);
        let remote = SocketAddr::new(peer, 0);
        self.push_icmp_error(local, remote, icmp_type, code, rest, invoking)
    }

    pub(super) fn unsupported_protocol(&mut self, ip: &IpPacket<'_>, verify: bool) {
        self.drop_packet(DropReason::UnsupportedProtocol);
        if !self.config.icmp_unreachables {
            return;
        }
        let v6 = ip.src.is_ipv6();
        let (icmp_type, code, rest) = match ip.protocol {
            PROTO_UDP => {
                self.stats.icmp_out.udp_in += 1;
                if !udp_ok(ip, verify) {
                    self.stats.icmp_out.udp_bad += 1;
                    return;
                }
                if v6 {
                    (crate::wire::ICMPV6_DEST_UNREACH, ICMPV6_PORT_UNREACH, 0)
                } else {
                    (ICMP_DEST_UNREACH, ICMP_PORT_UNREACH, 0)
                }
            }
            IPV6_NO_NEXT_HEADER if v6 => return,
            PROTO_IGMP if !v6 => return,
            _ if v6 => (
                ICMPV6_PARAM_PROBLEM,
                ICMPV6_UNRECOGNIZED_NEXT_HEADER,
                next_header_pointer(ip),
            ),
            _ => (ICMP_DEST_UNREACH, ICMP_PROTOCOL_UNREACH, 0),
        };
        if self.send_icmp_error(ip.dst, ip.src, icmp_type, code, rest, ip.packet) {
            if ip.protocol == PROTO_UDP {
                self.stats.icmp_out.port_unreachable += 1;
            } else {
                self.stats.icmp_out.protocol_unreachable += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_follow_linux() {
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.3".parse().unwrap();
        let sec = Duration::from_secs(1);
        let mut l = IcmpLimiter::new((1, 2));
        let t0 = Instant::from_secs(10);
        // One destination: a burst of 6, then one a second.
        let n = (0..20)
            .filter(|_| l.allow(t0, a, 1000, 50, sec, 64))
            .count();
        assert_eq!(n, 6);
        assert!(!l.allow(t0 + Duration::from_millis(999), a, 1000, 50, sec, 64));
        assert!(l.allow(t0 + Duration::from_millis(1999), a, 1000, 50, sec, 64));
        // Another destination has its own bucket.
        assert!(l.allow(t0, b, 1000, 50, sec, 64));
        // Global: 50 at once however many destinations, then 1000 a second.
        let mut l = IcmpLimiter::new((1, 2));
        let n = (0..200u32)
            .filter(|i| l.allow(t0, IpAddr::from([10, 1, 0, *i as u8]), 1000, 50, sec, 4096))
            .count();
        assert_eq!(n, 50);
        let t1 = t0 + Duration::from_millis(10);
        let n = (0..200u32)
            .filter(|i| l.allow(t1, IpAddr::from([10, 2, 0, *i as u8]), 1000, 50, sec, 4096))
            .count();
        assert_eq!(n, 10, "1000/s for 10 ms");
        // No per-destination limit with a zero interval.
        let mut l = IcmpLimiter::new((1, 2));
        let n = (0..20)
            .filter(|_| l.allow(t0, a, 1000, 50, Duration::ZERO, 64))
            .count();
        assert_eq!(n, 20);
    }
}
