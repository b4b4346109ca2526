//! The ICMP errors tcpd itself sends (issue 10, item 5): ICMPv6 Parameter
//! Problem for refused IPv6 extension headers (RFC 8200 §4, RFC 4443
//! §3.4), with the codes and pointers Linux sends for the same packets
//! (measured side by side with `tools/ip-compare.sh`).

#![allow(clippy::unwrap_used)]

use std::net::{IpAddr, Ipv6Addr};
use tcp::wire::{checksum_fold, checksum_sum, parse_ip, pseudo_header_sum, PROTO_ICMPV6};
use tcp::{Config, Endpoint, Instant};

const US: &str = "fd00::2";
const PEER: &str = "fd00::100";

fn endpoint(cfg: impl FnOnce(&mut Config)) -> Endpoint {
    let mut c = Config {
        seed: 9,
        addrs: vec![US.parse().unwrap()],
        ..Config::default()
    };
    cfg(&mut c);
    Endpoint::new(c).unwrap()
}

/// An ICMPv6 echo request from PEER to `dst` behind `headers`: (Next
/// Header number, header without its Next Header byte).
fn echo_behind(dst: &str, headers: &[(u8, Vec<u8>)]) -> Vec<u8> {
    let src: Ipv6Addr = PEER.parse().unwrap();
    let dst: Ipv6Addr = dst.parse().unwrap();
    let mut icmp = vec![128, 0, 0, 0, 0, 7, 0, 1];
    icmp.extend((0..56).map(|i| i as u8));
    let sum = pseudo_header_sum(
        IpAddr::V6(src),
        IpAddr::V6(dst),
        PROTO_ICMPV6,
        icmp.len() as u32,
    );
    let c = checksum_fold(checksum_sum(sum, &icmp));
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    let mut chain = icmp;
    let mut nh = PROTO_ICMPV6;
    for (num, body) in headers.iter().rev() {
        let mut h = vec![nh];
        h.extend_from_slice(body);
        h.extend(chain);
        chain = h;
        nh = *num;
    }
    let mut p = vec![0x60, 0, 0, 0];
    p.extend((chain.len() as u16).to_be_bytes());
    p.push(nh);
    p.push(64);
    p.extend(src.octets());
    p.extend(dst.octets());
    p.extend(chain);
    p
}

/// A Destination Options header (8 bytes) holding one option of `typ`.
fn dest_opt(typ: u8) -> (u8, Vec<u8>) {
    (60, vec![0, typ, 2, 0, 0, 1, 0])
}

fn out(ep: &mut Endpoint) -> Vec<Vec<u8>> {
    let mut v = Vec::new();
    let mut buf = vec![0u8; 2000];
    while let Some(n) = ep.poll_transmit(Instant::from_millis(1), &mut buf) {
        v.push(buf[..n].to_vec());
    }
    v
}

/// (type, code, pointer) of an ICMPv6 message, checking its checksum, its
/// addresses and that it quotes `invoking` from its start.
#[track_caller]
fn icmp6(pkt: &[u8], invoking: &[u8]) -> (u8, u8, u32) {
    let ip = parse_ip(pkt).unwrap();
    assert_eq!(ip.src, US.parse::<IpAddr>().unwrap());
    assert_eq!(ip.dst, PEER.parse::<IpAddr>().unwrap());
    assert_eq!(ip.protocol, PROTO_ICMPV6);
    let m = ip.payload;
    let sum = pseudo_header_sum(ip.src, ip.dst, PROTO_ICMPV6, m.len() as u32);
    assert_eq!(checksum_fold(checksum_sum(sum, m)), 0, "checksum");
    assert_eq!(&m[8..], &invoking[..m.len() - 8], "the quote");
    (m[0], m[1], u32::from_be_bytes([m[4], m[5], m[6], m[7]]))
}

#[test]
fn unknown_options_are_skipped_dropped_or_answered_by_their_high_bits() {
    let mut ep = endpoint(|_| {});
    // 00: skip the option, process the packet: an echo reply.
    ep.handle(Instant::ZERO, &echo_behind(US, &[dest_opt(0x1e)]));
    let o = out(&mut ep);
    assert_eq!(o.len(), 1);
    assert_eq!(parse_ip(&o[0]).unwrap().payload[0], 129);
    // 01: discard silently.
    ep.handle(Instant::ZERO, &echo_behind(US, &[dest_opt(0x5e)]));
    assert!(out(&mut ep).is_empty());
    // 10 and 11: Parameter Problem code 2, pointing at the option type
    // (offset 42: 40 of IPv6 header, 2 into the header), as Linux.
    for t in [0x9e, 0xde] {
        let p = echo_behind(US, &[dest_opt(t)]);
        ep.handle(Instant::ZERO, &p);
        let o = out(&mut ep);
        assert_eq!(o.len(), 1, "option type {t:#x}");
        assert_eq!(icmp6(&o[0], &p), (4, 2, 42));
    }
    let s = ep.stats();
    assert_eq!(s.icmp.param_problems_out, 2);
    assert_eq!(s.drops.bad_ipv6_extension, 3);
}

#[test]
fn late_hop_by_hop_and_routing_headers_are_answered_as_linux() {
    let mut ep = endpoint(|_| {});
    // Hop-by-Hop after Destination Options (RFC 8200 §4.1): code 1,
    // pointing at the Next Header field that named it (offset 40).
    let p = echo_behind(US, &[dest_opt(0x1e), (0, vec![0, 1, 4, 0, 0, 0, 0])]);
    ep.handle(Instant::ZERO, &p);
    let o = out(&mut ep);
    assert_eq!(icmp6(&o[0], &p), (4, 1, 40));
    // A type 0 Routing header with Segments Left 1 (§4.4, RFC 5095):
    // code 0, pointing at the Routing Type (offset 42).
    let mut rh = vec![2, 0, 1, 0, 0, 0, 0];
    rh.extend([0u8; 16]);
    let p = echo_behind(US, &[(43, rh)]);
    ep.handle(Instant::ZERO, &p);
    let o = out(&mut ep);
    assert_eq!(icmp6(&o[0], &p), (4, 0, 42));
    // Segments Left 0: ignored, the echo is answered.
    let mut rh = vec![2, 0, 0, 0, 0, 0, 0];
    rh.extend([0u8; 16]);
    ep.handle(Instant::ZERO, &echo_behind(US, &[(43, rh)]));
    let o = out(&mut ep);
    assert_eq!(parse_ip(&o[0]).unwrap().payload[0], 129);
}

#[test]
fn no_parameter_problem_for_multicast_others_or_beyond_the_budget() {
    let mut ep = endpoint(|c| {
        c.icmp_msgs_burst = 3;
        c.icmp_ratelimit = tcp::Duration::ZERO;
    });
    // To a multicast group, or an address not ours: dropped, unanswered.
    ep.handle(Instant::ZERO, &echo_behind("ff02::1", &[dest_opt(0x9e)]));
    ep.handle(Instant::ZERO, &echo_behind("fd00::77", &[dest_opt(0x9e)]));
    assert!(out(&mut ep).is_empty());
    // The global budget (Linux icmp_global_allow): a burst of 3, then one
    // per millisecond at 1000 a second.
    let p = echo_behind(US, &[dest_opt(0x9e)]);
    for _ in 0..5 {
        ep.handle(Instant::ZERO, &p);
    }
    assert_eq!(out(&mut ep).len(), 3);
    assert_eq!(ep.stats().icmp_out.rate_limited, 2);
    ep.handle(Instant::from_secs(1), &p);
    assert_eq!(out(&mut ep).len(), 1);
    // Off sends none (as before the field existed: old sidecars read so).
    let mut ep = endpoint(|c| c.icmp_unreachables = false);
    ep.handle(Instant::ZERO, &p);
    assert!(out(&mut ep).is_empty());
}

#[test]
fn an_icmpv6_error_is_never_answered_with_one() {
    let mut ep = endpoint(|_| {});
    let mut p = echo_behind(US, &[dest_opt(0x9e)]);
    // Make the upper layer a Destination Unreachable (type 1).
    p[48] = 1;
    ep.handle(Instant::ZERO, &p);
    assert!(out(&mut ep).is_empty());
}

/// The first 1440 bytes (or, `first` false, the second piece) of a
/// fragmented 3000-byte echo request from PEER (IPv4: 10.0.0.100).
fn lone_fragment(v6: bool, first: bool) -> Vec<u8> {
    let (off, more, data) = if first {
        // An echo request's type first (128 / 8): no error is answered
        // with one.
        let mut d = vec![8u8; 1440];
        d[0] = if v6 { 128 } else { 8 };
        (0u16, true, d)
    } else {
        (1440, true, vec![9u8; 1440])
    };
    if v6 {
        let src: Ipv6Addr = PEER.parse().unwrap();
        let dst: Ipv6Addr = US.parse().unwrap();
        let mut p = vec![0x60, 0, 0, 0];
        p.extend(((8 + data.len()) as u16).to_be_bytes());
        p.extend([44, 64]);
        p.extend(src.octets());
        p.extend(dst.octets());
        p.extend([PROTO_ICMPV6, 0]);
        p.extend((off | u16::from(more)).to_be_bytes());
        p.extend(77u32.to_be_bytes());
        p.extend(data);
        p
    } else {
        let mut p = vec![0x45, 0];
        p.extend(((20 + data.len()) as u16).to_be_bytes());
        p.extend(77u16.to_be_bytes());
        p.extend(((off / 8) | if more { 0x2000 } else { 0 }).to_be_bytes());
        p.extend([64, 1, 0, 0, 10, 0, 0, 100, 10, 0, 0, 2]);
        let c = checksum_fold(checksum_sum(0, &p[..20]));
        p[10..12].copy_from_slice(&c.to_be_bytes());
        p.extend(data);
        p
    }
}

/// RFC 792 / RFC 1122 §3.3.2 / RFC 8200 §4.5, as Linux (measured: ICMP
/// time-exceeded/1 of 576 bytes after 30 s, ICMPv6 time-exceeded/1 of
/// 1280 bytes after 60 s): a datagram whose time runs out with its first
/// fragment in is reported, on time (the endpoint wakes for it); without
/// its first fragment it is not.
#[test]
fn reassembly_timeouts_send_time_exceeded_when_fragment_zero_came() {
    for v6 in [false, true] {
        let mut ep = if v6 {
            endpoint(|_| {})
        } else {
            endpoint(|c| c.addrs = vec!["10.0.0.2".parse().unwrap()])
        };
        let secs = if v6 { 60 } else { 30 };
        let first = lone_fragment(v6, true);
        ep.handle(Instant::ZERO, &first);
        ep.handle(Instant::from_millis(10), &lone_fragment(v6, false).to_vec());
        assert!(out(&mut ep).is_empty());
        assert_eq!(ep.poll_timeout(), Some(Instant::from_secs(secs)));
        ep.handle_timeout(Instant::from_millis(secs * 1000 - 1));
        assert!(out(&mut ep).is_empty());
        ep.handle_timeout(Instant::from_secs(secs));
        let o = out(&mut ep);
        assert_eq!(o.len(), 1, "v6 {v6}");
        let ip = parse_ip(&o[0]).unwrap();
        let m = ip.payload;
        if v6 {
            assert_eq!((m[0], m[1], o[0].len()), (3, 1, 1280));
            let sum = pseudo_header_sum(ip.src, ip.dst, PROTO_ICMPV6, m.len() as u32);
            assert_eq!(checksum_fold(checksum_sum(sum, m)), 0);
            // The quote: the fragment's IPv6 header and Fragment header.
            assert_eq!(&m[8 + 8..8 + 40], &first[8..40]);
            assert_eq!(&m[8 + 40..8 + 48], &first[40..48]);
        } else {
            assert_eq!((m[0], m[1], o[0].len()), (11, 1, 576));
            assert_eq!(o[0][6] & 0x40, 0, "no DF, as Linux");
            assert_eq!(checksum_fold(checksum_sum(0, &o[0][..20])), 0);
            assert_eq!(checksum_fold(checksum_sum(0, m)), 0);
            assert_eq!(&m[8..8 + 548], &first[..548]);
            assert_eq!(ip.dst, "10.0.0.100".parse::<IpAddr>().unwrap());
        }
        assert_eq!(ep.stats().icmp.time_exceeded_out, 1);
        assert_eq!(ep.stats().reasm.timeouts, 1);
        // Without fragment zero: expired and counted, nothing sent.
        ep.handle(Instant::from_secs(100), &lone_fragment(v6, false));
        ep.handle_timeout(Instant::from_secs(100 + secs));
        assert!(out(&mut ep).is_empty());
        assert_eq!(ep.stats().reasm.timeouts, 2);
        assert_eq!(ep.poll_timeout(), None);
    }
}
