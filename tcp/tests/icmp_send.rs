//! ICMP errors the endpoint sends for datagrams nothing takes (UDP to any
//! port, unknown protocols), as Linux: types, codes, quotes, checksums,
//! when not to send, and the rate limits.

#![allow(clippy::unwrap_used, unused_macros)]

#[macro_use]
#[path = "common/peer.rs"]
mod peer;

use peer::*;
use std::net::IpAddr;
use tcp::wire::{
    checksum_fold, checksum_sum, emit_ip_header, pseudo_header_sum, PROTO_ICMP, PROTO_UDP,
};
use tcp::{Config, Duration};

/// A UDP datagram from `src` to `dst` with a right checksum (or `bad`).
fn udp(src: IpAddr, dst: IpAddr, dport: u16, data: &[u8], bad: bool) -> Vec<u8> {
    let iph = if src.is_ipv6() { 40 } else { 20 };
    let len = 8 + data.len();
    let mut b = vec![0u8; iph + len];
    emit_ip_header(&mut b, src, dst, PROTO_UDP, len, 64, 7).unwrap();
    let u = &mut b[iph..];
    u[0..2].copy_from_slice(&33434u16.to_be_bytes());
    u[2..4].copy_from_slice(&dport.to_be_bytes());
    u[4..6].copy_from_slice(&(len as u16).to_be_bytes());
    u[8..].copy_from_slice(data);
    let init = pseudo_header_sum(src, dst, PROTO_UDP, len as u32);
    let mut c = checksum_fold(checksum_sum(init, u));
    if c == 0 {
        c = 0xffff;
    }
    if bad {
        c ^= 0x0101;
    }
    u[6..8].copy_from_slice(&c.to_be_bytes());
    b
}

/// A datagram of protocol `proto` with `payload`.
fn raw(src: IpAddr, dst: IpAddr, proto: u8, payload: &[u8]) -> Vec<u8> {
    let iph = if src.is_ipv6() { 40 } else { 20 };
    let mut b = vec![0u8; iph + payload.len()];
    emit_ip_header(&mut b, src, dst, proto, payload.len(), 64, 7).unwrap();
    b[iph..].copy_from_slice(payload);
    b
}

fn v4() -> (IpAddr, IpAddr) {
    (IpAddr::V4(REMOTE_ADDR), IpAddr::V4(LOCAL_ADDR))
}
fn v6() -> (IpAddr, IpAddr) {
    (IpAddr::V6(REMOTE_ADDR6), IpAddr::V6(LOCAL_ADDR6))
}

#[test]
fn udp_to_a_closed_port_gets_port_unreachable() {
    for ((them, us), want) in [(v4(), (3, 3)), (v6(), (1, 4))] {
        let mut p = Peer::new(test_config());
        let d = udp(them, us, 33435, b"traceroute probe", false);
        p.send_raw(ms(0), &d);
        let pkt = p.poll_raw(ms(0)).unwrap();
        let (t, c, rest, quote) = icmp_error(&pkt, us, them);
        assert_eq!((t, c), want);
        assert_eq!(rest, 0);
        assert_eq!(quote, d, "the datagram quoted whole");
        recv_nothing!(p, time 0);
        let s = p.ep.stats();
        assert_eq!(s.icmp_out.udp_in, 1);
        assert_eq!(s.icmp_out.port_unreachable, 1);
        assert_eq!(s.drops.unsupported_protocol, 1, "still counted as dropped");
    }
}

#[test]
fn long_datagrams_are_quoted_as_linux_does() {
    for ((them, us), total) in [(v4(), 576), (v6(), 1280)] {
        let mut p = Peer::new(test_config());
        let d = udp(them, us, 53, &[0x42; 1400], false);
        p.send_raw(ms(0), &d);
        let pkt = p.poll_raw(ms(0)).unwrap();
        assert_eq!(pkt.len(), total);
        let (_, _, _, quote) = icmp_error(&pkt, us, them);
        assert_eq!(quote[..], d[..quote.len()]);
    }
}

#[test]
fn malformed_udp_gets_nothing() {
    for (them, us) in [v4(), v6()] {
        let mut p = Peer::new(test_config());
        p.send_raw(ms(0), &udp(them, us, 9, b"x", true));
        // A length field beyond the datagram.
        let mut d = udp(them, us, 9, b"xyz", false);
        let iph = if us.is_ipv6() { 40 } else { 20 };
        d[iph + 4..iph + 6].copy_from_slice(&100u16.to_be_bytes());
        p.send_raw(ms(0), &d);
        recv_nothing!(p, time 0);
        assert_eq!(p.ep.stats().icmp_out.udp_bad, 2);
    }
    // A zero checksum: "none" over IPv4 (answered), invalid over IPv6
    // (RFC 8200 §8.1).
    for ((them, us), answered) in [(v4(), true), (v6(), false)] {
        let mut p = Peer::new(test_config());
        let mut d = udp(them, us, 9, b"x", false);
        let iph = if us.is_ipv6() { 40 } else { 20 };
        d[iph + 6] = 0;
        d[iph + 7] = 0;
        p.send_raw(ms(0), &d);
        assert_eq!(p.poll_raw(ms(0)).is_some(), answered, "{us}");
    }
}

#[test]
fn unknown_protocols_get_protocol_unreachable_or_parameter_problem() {
    // IPv4: protocol unreachable (type 3 code 2).
    let (them, us) = v4();
    let mut p = Peer::new(test_config());
    let d = raw(them, us, 253, b"experimental");
    p.send_raw(ms(0), &d);
    let (t, c, _, quote) = icmp_error(&p.poll_raw(ms(0)).unwrap(), us, them);
    assert_eq!((t, c), (3, 2));
    assert_eq!(quote, d);
    assert_eq!(p.ep.stats().icmp_out.protocol_unreachable, 1);
    // IGMP is Linux's to take: no error.
    p.send_raw(ms(0), &raw(them, us, 2, &[0x11, 0, 0, 0, 0, 0, 0, 0]));
    recv_nothing!(p, time 0);

    // IPv6: parameter problem, unrecognized Next Header (type 4 code 1),
    // the pointer at the Next Header field (RFC 8200 §4).
    let (them, us) = v6();
    let mut p = Peer::new(test_config());
    let d = raw(them, us, 253, b"experimental");
    p.send_raw(ms(0), &d);
    let (t, c, ptr, quote) = icmp_error(&p.poll_raw(ms(0)).unwrap(), us, them);
    assert_eq!((t, c, ptr), (4, 1, 6));
    assert_eq!(quote, d);
    // Behind a Destination Options header (8 bytes, PadN): the pointer
    // names that header's Next Header byte, at 40.
    let mut ext = vec![253, 0, 1, 4, 0, 0, 0, 0];
    ext.extend_from_slice(b"data");
    let d = raw(them, us, 60, &ext);
    p.send_raw(ms(10), &d);
    let (t, c, ptr, _) = icmp_error(&p.poll_raw(ms(10)).unwrap(), us, them);
    assert_eq!((t, c, ptr), (4, 1, 40));
    // No Next Header (59): nothing follows, nothing to complain about.
    let mut ext = vec![59, 0, 1, 4, 0, 0, 0, 0];
    ext.extend_from_slice(b"pad!");
    p.send_raw(ms(20), &raw(them, us, 60, &ext));
    recv_nothing!(p, time 20);
    assert_eq!(p.ep.stats().icmp_out.protocol_unreachable, 2);
}

#[test]
fn no_errors_when_off_or_not_ours() {
    let (them, us) = v4();
    let mut p = Peer::new(Config {
        icmp_unreachables: false,
        ..test_config()
    });
    p.send_raw(ms(0), &udp(them, us, 9, b"x", false));
    p.send_raw(ms(0), &raw(them, us, 253, b"x"));
    recv_nothing!(p, time 0);
    assert_eq!(p.ep.stats().drops.unsupported_protocol, 2);
    // Another host's address, a broadcast, a multicast group: never.
    let mut p = Peer::new(test_config());
    for dst in ["10.0.0.77", "255.255.255.255", "224.0.0.1"] {
        p.send_raw(ms(0), &udp(them, dst.parse().unwrap(), 9, b"x", false));
    }
    p.send_raw(
        ms(0),
        &udp(v6().0, "ff02::1".parse().unwrap(), 9, b"x", false),
    );
    recv_nothing!(p, time 0);
    assert_eq!(p.ep.stats().icmp_out.port_unreachable, 0);
    // An ICMP error to us is never answered with one (RFC 1122 §3.2.2).
    let mut err = vec![3u8, 3, 0, 0, 0, 0, 0, 0];
    err.extend_from_slice(&udp(us, them, 9, b"x", false)[..28]);
    let c = checksum_fold(checksum_sum(0, &err));
    err[2..4].copy_from_slice(&c.to_be_bytes());
    p.send_raw(ms(0), &raw(them, us, PROTO_ICMP, &err));
    recv_nothing!(p, time 0);
}

#[test]
fn per_destination_limit_burst_six_then_one_a_second() {
    let (them, us) = v4();
    let mut p = Peer::new(test_config());
    for _ in 0..10 {
        p.send_raw(ms(0), &udp(them, us, 9, b"x", false));
    }
    let mut n = 0;
    while p.poll_raw(ms(0)).is_some() {
        n += 1;
    }
    assert_eq!(n, 6, "Linux icmp_ratelimit 1000 ms, burst factor 6");
    assert_eq!(p.ep.stats().icmp_out.rate_limited, 4);
    p.send_raw(ms(500), &udp(them, us, 9, b"x", false));
    recv_nothing!(p, time 500);
    p.send_raw(ms(1000), &udp(them, us, 9, b"x", false));
    assert!(p.poll_raw(ms(1000)).is_some(), "a token a second");
    // Another source has its own bucket.
    p.send_raw(
        ms(1000),
        &udp("10.0.0.5".parse().unwrap(), us, 9, b"x", false),
    );
    assert!(p.poll_raw(ms(1000)).is_some());
}

#[test]
fn global_limit_burst_then_rate() {
    let (_, us) = v4();
    let mut p = Peer::new(Config {
        icmp_msgs_burst: 50,
        icmp_msgs_per_sec: 1000,
        ..test_config()
    });
    let src = |i: u32| IpAddr::from([10, 1, (i >> 8) as u8, i as u8]);
    for i in 0..100 {
        p.send_raw(ms(0), &udp(src(i), us, 9, b"x", false));
    }
    let mut n = 0;
    while p.poll_raw(ms(0)).is_some() {
        n += 1;
    }
    assert_eq!(n, 50, "icmp_msgs_burst");
    for i in 100..200 {
        p.send_raw(ms(20), &udp(src(i), us, 9, b"x", false));
    }
    let mut n = 0;
    while p.poll_raw(ms(20)).is_some() {
        n += 1;
    }
    assert_eq!(n, 20, "icmp_msgs_per_sec 1000: 20 in 20 ms");
    // No per-destination limit with a zero interval: all 10 go.
    let (them, us) = v4();
    let mut p = Peer::new(Config {
        icmp_ratelimit: Duration::ZERO,
        ..test_config()
    });
    for _ in 0..10 {
        p.send_raw(ms(0), &udp(them, us, 9, b"x", false));
    }
    let mut n = 0;
    while p.poll_raw(ms(0)).is_some() {
        n += 1;
    }
    assert_eq!(n, 10);
}
