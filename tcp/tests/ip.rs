//! IP-layer packet tests: path MTU discovery (RFC 1191, RFC 8201), ICMP
//! errors reaching connections (RFC 1122 §4.2.3.9, RFC 5461) and their
//! validation (RFC 5927), with a hand-crafting peer and explicit times.

#![allow(clippy::unwrap_used, unused_macros)]

#[macro_use]
#[path = "common/peer.rs"]
mod peer;

use peer::*;
use std::net::IpAddr;
use tcp::wire::{
    checksum_fold, checksum_sum, emit_ip_header, parse_ip, parse_tcp, pseudo_header_sum,
    TcpOptions, PROTO_ICMP, PROTO_ICMPV6,
};
use tcp::{Config, Event, IcmpError, State};

/// A router on the path.
const ROUTER4: &str = "10.9.9.9";
const ROUTER6: &str = "fd09::9";

fn syn_opts() -> TcpOptions {
    TcpOptions {
        mss: Some(MSS),
        sack_permitted: true,
        ..Default::default()
    }
}

/// ESTABLISHED (passive) with the peer's MSS `mss`, over IPv4 or IPv6.
fn established(v6: bool, mss: u16) -> Peer {
    let mut p = if v6 {
        Peer::new_v6(test_config())
    } else {
        Peer::new(test_config())
    };
    p.ep.listen(LOCAL_PORT, 8).unwrap();
    let opts = TcpOptions {
        mss: Some(mss),
        ..syn_opts()
    };
    send!(p, time 0, Seg { seq: REMOTE_SEQ, flags: SYN, options: opts, ..send_templ() });
    let synack = p.poll(ms(0)).unwrap();
    assert!(synack.flags.syn());
    send!(p, time 0, Seg { ack: Some(LOCAL_SEQ + 1), ..send_templ() });
    assert_eq!(p.take_events(), [Event::Incoming { port: LOCAL_PORT }]);
    p.conn = p.ep.accept(LOCAL_PORT);
    assert_eq!(p.state(), State::Established);
    p
}

/// An ICMP (v4) or ICMPv6 error of `typ`/`code` with the 4 bytes after the
/// checksum `word`, from the router to us, quoting `quoted` (cut to what
/// RFC 1812 §4.3.2.3 routers quote: as much as fits 576 bytes).
fn icmp_error(p: &Peer, typ: u8, code: u8, word: u32, quoted: &[u8]) -> Vec<u8> {
    let v6 = p.local_ip.is_ipv6();
    let src: IpAddr = if v6 { ROUTER6 } else { ROUTER4 }.parse().unwrap();
    let q = &quoted[..quoted.len().min(500)];
    let len = 8 + q.len();
    let iph = if v6 { 40 } else { 20 };
    let mut b = vec![0u8; iph + len];
    let proto = if v6 { PROTO_ICMPV6 } else { PROTO_ICMP };
    emit_ip_header(&mut b, src, p.local_ip, proto, len, 64, 1).unwrap();
    let m = &mut b[iph..];
    m[0] = typ;
    m[1] = code;
    m[4..8].copy_from_slice(&word.to_be_bytes());
    m[8..].copy_from_slice(q);
    let init = if v6 {
        pseudo_header_sum(src, p.local_ip, PROTO_ICMPV6, len as u32)
    } else {
        0
    };
    let c = checksum_fold(checksum_sum(init, m));
    m[2..4].copy_from_slice(&c.to_be_bytes());
    b
}

/// "Fragmentation needed" (IPv4) or "packet too big" (IPv6) with `mtu`.
fn too_big(p: &Peer, mtu: u32, quoted: &[u8]) -> Vec<u8> {
    if p.local_ip.is_ipv6() {
        icmp_error(p, 2, 0, mtu, quoted)
    } else {
        icmp_error(p, 3, 4, mtu & 0xffff, quoted)
    }
}

/// Payload lengths of the data segments the endpoint emits now, with the
/// first packet.
fn drain(p: &mut Peer, t: u64) -> (Vec<usize>, Vec<Vec<u8>>) {
    let mut lens = Vec::new();
    let mut pkts = Vec::new();
    while let Some(pkt) = p.poll_raw(ms(t)) {
        let ip = parse_ip(&pkt).unwrap();
        let seg = parse_tcp(&ip).unwrap();
        lens.push(seg.payload.len());
        pkts.push(pkt.clone());
    }
    (lens, pkts)
}

/// Sets the quoted packet's TCP sequence number (the checksum is not
/// verified on a quote, as in Linux).
fn with_seq(pkt: &[u8], delta: u32) -> Vec<u8> {
    let iph = if pkt[0] >> 4 == 6 { 40 } else { 20 };
    let mut q = pkt.to_vec();
    let s = u32::from_be_bytes([q[iph + 4], q[iph + 5], q[iph + 6], q[iph + 7]]);
    q[iph + 4..iph + 8].copy_from_slice(&s.wrapping_add(delta).to_be_bytes());
    q
}

#[test]
fn frag_needed_lowers_mss_and_resends_at_once_without_a_cwnd_cut() {
    for v6 in [false, true] {
        let mut p = established(v6, 1460);
        let full: usize = if v6 { 1440 } else { 1460 };
        assert_eq!(usize::from(p.ep.info(p.id()).unwrap().mss), full);
        p.write(&vec![7u8; 4 * full]);
        let (lens, pkts) = drain(&mut p, 1);
        assert_eq!(lens, [full; 4]);
        let before = p.ep.info(p.id()).unwrap();
        // RFC 1191 §4 / RFC 8201 §4: the router's next-hop MTU is 1280.
        let icmp = too_big(&p, 1280, &pkts[0]);
        p.send_raw(ms(2), &icmp);
        let info = p.ep.info(p.id()).unwrap();
        let new: usize = if v6 { 1280 - 60 } else { 1280 - 40 };
        assert_eq!(usize::from(info.mss), new, "v6 {v6}");
        assert_eq!(info.path_mtu, 1280);
        // No congestion response (Linux tcp_simple_retransmit).
        assert_eq!((info.cwnd, info.ssthresh), (before.cwnd, before.ssthresh));
        // Everything sent is resent at the new MSS now, not after an RTO.
        let (lens, _) = drain(&mut p, 2);
        let total: usize = lens.iter().sum();
        assert!(lens.iter().all(|&l| l <= new), "{lens:?}");
        assert_eq!(total, 4 * full, "{lens:?}");
        let st = p.ep.stats();
        assert_eq!(st.rto_timeouts, 0);
        assert_eq!(st.icmp.pmtu_lowered, 1);
        assert_eq!(st.icmp.mss_lowered, 1);
        assert!(st.retransmits >= 4);
        assert_eq!(p.ep.path_mtu(p.remote_ip), Some(1280));
        // A second, identical message changes nothing more.
        p.send_raw(ms(3), &icmp);
        assert_eq!(p.ep.stats().icmp.pmtu_not_lower, 1);
        recv_nothing!(p, time 3);
        // RFC 1191 §6.3: after the expiry (10 minutes) the device MTU is
        // tried again.
        p.send(
            ms(4),
            Seg {
                ack: Some(LOCAL_SEQ + 1 + 4 * full as u32),
                ..send_templ()
            },
        );
        p.write(&vec![7u8; 2 * full]);
        let (lens, _) = drain(&mut p, 5);
        assert_eq!(lens, [new, new, 2 * full - 2 * new]);
        p.send(
            ms(600_100),
            Seg {
                ack: Some(LOCAL_SEQ + 1 + 6 * full as u32),
                ..send_templ()
            },
        );
        p.write(&vec![7u8; 2 * full]);
        let (lens, _) = drain(&mut p, 600_100);
        assert_eq!(lens, [full, full]);
        assert_eq!(p.ep.path_mtu(p.remote_ip), None);
    }
}

#[test]
fn forged_or_stray_icmp_errors_change_nothing() {
    for v6 in [false, true] {
        let mut p = established(v6, 1460);
        let full = p.ep.info(p.id()).unwrap().mss;
        p.write(&vec![7u8; 2 * full as usize]);
        let (_, pkts) = drain(&mut p, 1);
        // RFC 5927 §4.1: a quoted sequence number outside SND.UNA..SND.NXT.
        for delta in [1_000_000u32, 2 * u32::from(full), u32::MAX - 10] {
            let icmp = too_big(&p, 1280, &with_seq(&pkts[0], delta));
            p.send_raw(ms(2), &icmp);
            let rst = icmp_error(
                &p,
                if v6 { 1 } else { 3 },
                if v6 { 4 } else { 3 },
                0,
                &with_seq(&pkts[0], delta),
            );
            p.send_raw(ms(2), &rst);
        }
        assert_eq!(p.ep.stats().icmp.out_of_window, 6);
        // A quote of a 4-tuple we have no connection for.
        let mut other = pkts[0].clone();
        let iph = if v6 { 40 } else { 20 };
        other[iph + 2] ^= 0x40;
        p.send_raw(ms(2), &too_big(&p, 1280, &other));
        assert_eq!(p.ep.stats().icmp.no_connection, 1);
        // A wrong ICMP checksum.
        let mut bad = too_big(&p, 1280, &pkts[0]);
        let n = bad.len();
        bad[n - 1] ^= 1;
        p.send_raw(ms(2), &bad);
        assert_eq!(p.ep.stats().drops.bad_icmp, 1);
        // Nothing changed: same MSS, no retransmission, no soft error.
        let info = p.ep.info(p.id()).unwrap();
        assert_eq!(
            (info.mss, info.path_mtu, info.soft_error),
            (full, 1500, None)
        );
        assert_eq!(p.ep.stats().icmp.pmtu_lowered, 0);
        assert_eq!(p.ep.path_mtu(p.remote_ip), None);
        recv_nothing!(p, time 2);
        assert_eq!(p.state(), State::Established);
    }
}

#[test]
fn too_big_below_the_floor_is_clamped() {
    // IPv4: Linux's min_pmtu, 552; a router saying 300 gets 552.
    let mut p = established(false, 1460);
    p.write(&[7u8; 1460]);
    let (_, pkts) = drain(&mut p, 1);
    p.send_raw(ms(2), &too_big(&p, 300, &pkts[0]));
    let info = p.ep.info(p.id()).unwrap();
    assert_eq!((info.path_mtu, info.mss), (552, 512));
    assert_eq!(p.ep.stats().icmp.pmtu_clamped, 1);
    let (lens, _) = drain(&mut p, 2);
    assert_eq!(lens, [512, 512, 436]);
    // IPv6: never below 1280 (RFC 8201 §4).
    let mut p = established(true, 1460);
    p.write(&[7u8; 1440]);
    let (_, pkts) = drain(&mut p, 1);
    p.send_raw(ms(2), &too_big(&p, 600, &pkts[0]));
    let info = p.ep.info(p.id()).unwrap();
    assert_eq!((info.path_mtu, info.mss), (1280, 1220));
    assert_eq!(p.ep.stats().icmp.pmtu_clamped, 1);
    // A larger MTU than ours is no news (only decreases are believed).
    let mut p = established(false, 1460);
    p.write(&[7u8; 1460]);
    let (_, pkts) = drain(&mut p, 1);
    p.send_raw(ms(2), &too_big(&p, 9000, &pkts[0]));
    assert_eq!(p.ep.info(p.id()).unwrap().mss, 1460);
    assert_eq!(p.ep.stats().icmp.pmtu_not_lower, 1);
    // RFC 1191 §5: an old router's MTU of 0; the plateau below 1500 is 1492.
    p.send_raw(ms(3), &too_big(&p, 0, &pkts[0]));
    assert_eq!(p.ep.info(p.id()).unwrap().path_mtu, 1492);
}

#[test]
fn a_new_connection_to_a_destination_starts_from_its_cached_path_mtu() {
    let cfg = Config {
        ephemeral_ports: (40000, 40010),
        ..test_config()
    };
    let mut p = Peer::new(cfg);
    p.ep.listen(LOCAL_PORT, 8).unwrap();
    send!(p, time 0, Seg { seq: REMOTE_SEQ, flags: SYN, options: syn_opts(), ..send_templ() });
    let _synack = p.poll(ms(0)).unwrap();
    send!(p, time 0, Seg { ack: Some(LOCAL_SEQ + 1), ..send_templ() });
    p.conn = p.ep.accept(LOCAL_PORT);
    p.write(&[1u8; 1460]);
    let (_, pkts) = drain(&mut p, 1);
    p.send_raw(ms(2), &too_big(&p, 1400, &pkts[0]));
    let id = p.ep.connect(ms(3), p.local_ip, p.remote()).unwrap();
    let info = p.ep.info(id).unwrap();
    assert_eq!(info.path_mtu, 1400);
    assert_eq!(p.ep.pmtu_cache_len(), 1);
}

#[test]
fn pmtu_config_is_validated() {
    for bad in [
        Config {
            min_pmtu: 40,
            ..test_config()
        },
        Config {
            min_pmtu: 1501,
            ..test_config()
        },
        Config {
            pmtu_cache_size: 0,
            ..test_config()
        },
    ] {
        assert!(tcp::Endpoint::new(bad).is_err());
    }
}

/// SYN-SENT to the peer: our SYN is out.
fn syn_sent(v6: bool) -> (Peer, Vec<u8>) {
    let mut p = if v6 {
        Peer::new_v6(test_config())
    } else {
        Peer::new(test_config())
    };
    let id = p.ep.connect(ms(0), p.local_ip, p.remote()).unwrap();
    p.conn = Some(id);
    let syn = p.poll_raw(ms(0)).unwrap();
    assert_eq!(p.state(), State::SynSent);
    (p, syn)
}

#[test]
fn hard_errors_end_a_connection_attempt_with_their_reason() {
    // (ICMP type, code, ICMPv6 type, code, reason): RFC 1122 §4.2.3.9,
    // Linux tcp_v4_err / tcp_v6_err in SYN-SENT.
    let cases = [
        (3, 0, 1, 0, IcmpError::NetUnreachable),
        (3, 1, 1, 3, IcmpError::HostUnreachable),
        (3, 3, 1, 4, IcmpError::PortUnreachable),
        (3, 13, 1, 1, IcmpError::AdminProhibited),
        (11, 0, 3, 0, IcmpError::TimeExceeded),
    ];
    for v6 in [false, true] {
        for (t4, c4, t6, c6, why) in cases {
            let (mut p, syn) = syn_sent(v6);
            let (t, c) = if v6 { (t6, c6) } else { (t4, c4) };
            // First a forged one quoting a wrong ISS: ignored.
            p.send_raw(ms(5), &icmp_error(&p, t, c, 0, &with_seq(&syn, 77)));
            assert_eq!(p.state(), State::SynSent);
            assert!(p.take_events().is_empty());
            p.send_raw(ms(10), &icmp_error(&p, t, c, 0, &syn));
            let id = p.id();
            assert_eq!(
                p.take_events(),
                [Event::Unreachable(id, why), Event::Closed(id)],
                "v6 {v6} {why}"
            );
            // No RST goes out: the attempt just ends.
            recv_nothing!(p, time 10);
            assert_eq!(p.ep.stats().icmp.aborted, 1);
            assert_eq!(p.ep.stats().icmp.out_of_window, 1);
        }
    }
}

#[test]
fn errors_on_a_synchronized_connection_are_soft_and_reported_at_the_timeout() {
    for v6 in [false, true] {
        let mut p = established(v6, 1460);
        p.write(&[7u8; 100]);
        let (_, pkts) = drain(&mut p, 1);
        let (t, c) = if v6 { (1, 3) } else { (3, 1) };
        p.send_raw(ms(2), &icmp_error(&p, t, c, 0, &pkts[0]));
        assert_eq!(p.state(), State::Established);
        assert_eq!(
            p.ep.info(p.id()).unwrap().soft_error,
            Some(IcmpError::HostUnreachable)
        );
        // Time exceeded, also soft: the last one is kept.
        let (t, c) = if v6 { (3, 0) } else { (11, 0) };
        p.send_raw(ms(3), &icmp_error(&p, t, c, 0, &pkts[0]));
        assert_eq!(
            p.ep.info(p.id()).unwrap().soft_error,
            Some(IcmpError::TimeExceeded)
        );
        assert_eq!(p.ep.stats().icmp.soft_errors, 2);
        // Nothing gets through until the user timeout (120 s): the report
        // names the soft error.
        let mut t = 3;
        let id = p.id();
        let mut timed_out = None;
        while t < 200_000 && timed_out.is_none() {
            t += 100;
            p.ep.handle_timeout(ms(t));
            while p.ep.poll_transmit(ms(t), &mut [0u8; 2000]).is_some() {}
            while let Some(e) = p.ep.poll_event() {
                if e == Event::TimedOut(id) {
                    timed_out = Some(p.ep.info(id).unwrap().soft_error);
                }
            }
        }
        assert_eq!(timed_out, Some(Some(IcmpError::TimeExceeded)));
    }
}

#[test]
fn an_acknowledgment_clears_the_soft_error() {
    let mut p = established(false, 1460);
    p.write(&[7u8; 100]);
    let (_, pkts) = drain(&mut p, 1);
    p.send_raw(ms(2), &icmp_error(&p, 3, 0, 0, &pkts[0]));
    assert!(p.ep.info(p.id()).unwrap().soft_error.is_some());
    send!(p, time 3, Seg { ack: Some(LOCAL_SEQ + 101), ..send_templ() });
    assert_eq!(p.ep.info(p.id()).unwrap().soft_error, None);
}

#[test]
fn a_half_open_passive_connection_is_dropped_only_by_a_hard_error() {
    let mut p = Peer::new(test_config());
    p.ep.listen(LOCAL_PORT, 8).unwrap();
    send!(p, time 0, Seg { seq: REMOTE_SEQ, flags: SYN, options: syn_opts(), ..send_templ() });
    let synack = p.poll_raw(ms(0)).unwrap();
    // Host unreachable: soft, the SYN-ACK will be retransmitted.
    p.send_raw(ms(1), &icmp_error(&p, 3, 1, 0, &synack));
    assert_eq!(p.count(State::SynReceived), 1);
    // Port unreachable: hard (Linux tcp_req_err drops the request).
    p.send_raw(ms(2), &icmp_error(&p, 3, 3, 0, &synack));
    assert_eq!(p.count(State::SynReceived), 0);
    assert_eq!(p.ep.connection_count(), 0);
    recv_nothing!(p, time 2);
}

#[test]
fn errors_for_time_wait_are_ignored() {
    let mut p = established(false, 1460);
    p.ep.close(p.id()).unwrap();
    let fin = p.poll_raw(ms(0)).unwrap();
    send!(p, time 1, Seg { ack: Some(LOCAL_SEQ + 2), flags: FIN, ..send_templ() });
    let _ack = p.poll(ms(1));
    assert_eq!(p.count(State::TimeWait), 1);
    p.send_raw(ms(2), &icmp_error(&p, 3, 3, 0, &fin));
    assert_eq!(p.count(State::TimeWait), 1);
    assert_eq!(p.ep.stats().icmp.out_of_window, 1);
}

// =====================================================================
// Reassembly (RFC 791 §3.2, RFC 8200 §4.5)
// =====================================================================

/// `pkt` (a whole IPv4 or IPv6 packet without extension headers) cut into
/// fragments of at most `chunk` data bytes (a multiple of 8), with
/// identification `id`. Returns (offset, fragment) pairs.
fn fragment(pkt: &[u8], chunk: usize, id: u32) -> Vec<(usize, Vec<u8>)> {
    let v6 = pkt[0] >> 4 == 6;
    let iph = if v6 { 40 } else { 20 };
    let data = &pkt[iph..];
    let mut out = Vec::new();
    let mut off = 0;
    while off < data.len() {
        let end = (off + chunk).min(data.len());
        out.push((off, frag_at(pkt, off, end, end < data.len(), id)));
        off = end;
    }
    out
}

/// One fragment of `pkt` holding its data bytes `off..end`.
fn frag_at(pkt: &[u8], off: usize, end: usize, more: bool, id: u32) -> Vec<u8> {
    let v6 = pkt[0] >> 4 == 6;
    let iph = if v6 { 40 } else { 20 };
    let data = &pkt[iph + off..iph + end];
    if v6 {
        let mut f = pkt[..40].to_vec();
        let next = f[6];
        f[6] = 44;
        f[4..6].copy_from_slice(&((8 + data.len()) as u16).to_be_bytes());
        let word = ((off / 8) as u16) << 3 | u16::from(more);
        f.extend_from_slice(&[next, 0]);
        f.extend_from_slice(&word.to_be_bytes());
        f.extend_from_slice(&id.to_be_bytes());
        f.extend_from_slice(data);
        f
    } else {
        let mut f = pkt[..20].to_vec();
        f[2..4].copy_from_slice(&((20 + data.len()) as u16).to_be_bytes());
        f[4..6].copy_from_slice(&(id as u16).to_be_bytes());
        let word = (off / 8) as u16 | if more { 0x2000 } else { 0 };
        f[6..8].copy_from_slice(&word.to_be_bytes());
        f.extend_from_slice(data);
        fix_v4_checksum(&mut f);
        f
    }
}

fn fix_v4_checksum(f: &mut [u8]) {
    f[10] = 0;
    f[11] = 0;
    let c = checksum_fold(checksum_sum(0, &f[..20]));
    f[10..12].copy_from_slice(&c.to_be_bytes());
}

/// A data segment of `n` pattern bytes from the peer at the start of its stream.
fn data_segment(p: &mut Peer, n: usize) -> (Vec<u8>, Vec<u8>) {
    let data: Vec<u8> = (0..n).map(|i| (i * 7 % 251) as u8).collect();
    let pkt = p.build(&Seg {
        ack: Some(LOCAL_SEQ + 1),
        payload: data.clone(),
        ..send_templ()
    });
    (pkt, data)
}

#[test]
fn fragments_are_reassembled_in_any_order() {
    for v6 in [false, true] {
        let mut p = established(v6, 1460);
        let (pkt, data) = data_segment(&mut p, 3000);
        let mut frags = fragment(&pkt, 1208, 0x1234);
        assert_eq!(frags.len(), 3);
        frags.swap(0, 2);
        for (_, f) in &frags {
            p.send_raw(ms(1), f);
        }
        assert_eq!(p.read_all(), data, "v6 {v6}");
        let st = p.ep.stats().reasm;
        assert_eq!((st.fragments_in, st.reassembled), (3, 1));
        assert_eq!(p.ep.reassembly_bytes(), 0);
    }
}

#[test]
fn overlapping_fragments_discard_the_whole_datagram() {
    for v6 in [false, true] {
        let mut p = established(v6, 1460);
        let (pkt, data) = data_segment(&mut p, 3000);
        let iph = if v6 { 40 } else { 20 };
        let len = pkt.len() - iph;
        // 0..1208, then an overlapping 1200..2408, then the rest: nothing
        // is delivered (RFC 5722 §4), the overlap kills the datagram.
        p.send_raw(ms(1), &frag_at(&pkt, 0, 1208, true, 7));
        p.send_raw(ms(1), &frag_at(&pkt, 1200, 2408, true, 7));
        p.send_raw(ms(1), &frag_at(&pkt, 2408, len, false, 7));
        p.send_raw(ms(1), &frag_at(&pkt, 1208, 2408, true, 7));
        assert!(p.read_all().is_empty(), "v6 {v6}");
        assert_eq!(p.ep.stats().reasm.overlaps, 1);
        assert_eq!(p.ep.stats().reasm.reassembled, 0);
        // An exact duplicate is only ignored (RFC 5722 erratum 3089).
        for (_, f) in fragment(&pkt, 1208, 8)
            .iter()
            .chain(fragment(&pkt, 1208, 8).iter().take(1))
        {
            p.send_raw(ms(2), f);
        }
        assert_eq!(p.read_all(), data);
        assert_eq!(p.ep.stats().reasm.reassembled, 1);
    }
}

#[test]
fn tiny_fragments_splitting_the_tcp_header_are_refused() {
    for v6 in [false, true] {
        let mut p = established(v6, 1460);
        let (pkt, _) = data_segment(&mut p, 3000);
        let iph = if v6 { 40 } else { 20 };
        let len = pkt.len() - iph;
        // RFC 1858 §3.1: the first fragment holds 16 bytes of a 20-byte header.
        p.send_raw(ms(1), &frag_at(&pkt, 0, 16, true, 9));
        p.send_raw(ms(1), &frag_at(&pkt, 16, len, false, 9));
        // §3.2: a fragment at offset 8 (it could rewrite the flags).
        p.send_raw(ms(1), &frag_at(&pkt, 0, 8, true, 10));
        p.send_raw(ms(1), &frag_at(&pkt, 8, len, false, 10));
        assert!(p.read_all().is_empty());
        let st = p.ep.stats().reasm;
        // Both first fragments and the fragment at offset 8.
        assert_eq!(st.tiny, 3, "v6 {v6}: {st:?}");
        assert_eq!(st.reassembled, 0);
    }
}

#[test]
fn incomplete_datagrams_time_out() {
    for (v6, secs) in [(false, 30), (true, 60)] {
        let mut p = established(v6, 1460);
        let (pkt, _) = data_segment(&mut p, 3000);
        let frags = fragment(&pkt, 1208, 11);
        p.send_raw(ms(1), &frags[0].1);
        p.send_raw(ms(1), &frags[1].1);
        assert!(p.ep.reassembly_bytes() > 0);
        p.send_raw(ms(secs * 1000 + 2), &frags[2].1);
        assert!(p.read_all().is_empty());
        assert_eq!(p.ep.stats().reasm.timeouts, 1, "v6 {v6}");
    }
}

#[test]
fn a_flood_of_first_fragments_fills_only_its_own_budget() {
    for v6 in [false, true] {
        let mut p = established(v6, 1460);
        let (pkt, data) = data_segment(&mut p, 3000);
        // 20 000 first fragments from another source, each a datagram of
        // its own that never completes.
        let mut flood = frag_at(&pkt, 0, 1208, true, 0);
        if v6 {
            flood[23] = 0x66;
        } else {
            flood[15] = 66;
        }
        for id in 0..20_000u32 {
            if v6 {
                flood[44..48].copy_from_slice(&id.to_be_bytes());
            } else {
                flood[4..6].copy_from_slice(&(id as u16).to_be_bytes());
                fix_v4_checksum(&mut flood);
            }
            p.send_raw(ms(1), &flood);
        }
        let cfg = p.ep.config().clone();
        assert!(p.ep.reassembly_bytes() <= cfg.reasm_per_source_bytes);
        assert!(p.ep.stats().reasm.budget_drops > 10_000);
        // The peer's own fragmented segment still gets through, and so
        // does its unfragmented traffic.
        for (_, f) in fragment(&pkt, 1208, 5) {
            p.send_raw(ms(2), &f);
        }
        assert_eq!(p.read_all(), data, "v6 {v6}");
        assert!(p.ep.reassembly_bytes() <= cfg.reasm_per_source_bytes);
    }
}

#[test]
fn reassembly_off_drops_fragments_as_before() {
    let cfg = Config {
        reasm_max_bytes: 0,
        ..test_config()
    };
    let mut p = Peer::new(cfg);
    p.ep.listen(LOCAL_PORT, 8).unwrap();
    let syn = p.build(&Seg {
        seq: REMOTE_SEQ,
        flags: SYN,
        options: syn_opts(),
        ..send_templ()
    });
    let frags = fragment(&syn, 8, 3);
    for (_, f) in &frags {
        p.send_raw(ms(0), f);
    }
    assert_eq!(p.ep.stats().drops.fragment, frags.len() as u64);
    assert_eq!(p.ep.stats().reasm.fragments_in, 0);
    recv_nothing!(p, time 0);
}

/// An echo request from the peer with `n` bytes of data.
fn big_echo_request(p: &Peer, n: usize) -> Vec<u8> {
    let v6 = p.remote_ip.is_ipv6();
    let iph = if v6 { 40 } else { 20 };
    let len = 8 + n;
    let mut b = vec![0u8; iph + len];
    let proto = if v6 { PROTO_ICMPV6 } else { PROTO_ICMP };
    emit_ip_header(&mut b, p.remote_ip, p.local_ip, proto, len, 64, 7).unwrap();
    let m = &mut b[iph..];
    m[0] = if v6 { 128 } else { 8 };
    m[4..8].copy_from_slice(&[0, 9, 0, 1]);
    for (i, x) in m[8..].iter_mut().enumerate() {
        *x = (i % 253) as u8;
    }
    let init = if v6 {
        pseudo_header_sum(p.remote_ip, p.local_ip, PROTO_ICMPV6, len as u32)
    } else {
        0
    };
    let c = checksum_fold(checksum_sum(init, m));
    m[2..4].copy_from_slice(&c.to_be_bytes());
    b
}

#[test]
fn a_fragmented_4000_byte_ping_is_answered_whole_in_fragments() {
    for v6 in [false, true] {
        let mut p = if v6 {
            Peer::new_v6(test_config())
        } else {
            Peer::new(test_config())
        };
        let req = big_echo_request(&p, 4000);
        for (_, f) in fragment(&req, 1448, 77) {
            p.send_raw(ms(0), &f);
        }
        assert_eq!(p.ep.stats().reasm.reassembled, 1);
        assert_eq!(p.ep.stats().icmp_echo, 1);
        // Three packets came in, not four: the datagram is not counted again.
        assert_eq!(p.ep.stats().packets_in, 3);
        let mut frags = Vec::new();
        while let Some(pkt) = p.poll_raw(ms(0)) {
            assert!(pkt.len() <= 1500, "{}", pkt.len());
            frags.push(pkt);
        }
        assert_eq!(frags.len(), 3, "v6 {v6}");
        // The peer's side reassembles them into a valid echo reply: a
        // second endpoint playing the peer counts it reassembled and then
        // ignores it as an echo reply (a bad checksum would count as bad_icmp).
        let mut peer = tcp::Endpoint::new(Config {
            addrs: vec![p.remote_ip],
            ..test_config()
        })
        .unwrap();
        for f in frags.iter().rev() {
            peer.handle(ms(0), f);
        }
        let st = peer.stats();
        assert_eq!(st.reasm.reassembled, 1, "v6 {v6}: {:?}", st.reasm);
        assert_eq!((st.drops.icmp_ignored, st.drops.bad_icmp), (1, 0));
    }
}

/// Linux (measured with tools/ip-compare.sh: after frag-needed with MTU
/// 300 its 500-byte segments go without DF) locks a path MTU reported
/// below min_pmtu at 552 and stops setting DF, so a router on a path that
/// really is narrower can fragment them; a report at or above the floor
/// keeps DF. Without DF each segment has its own IPv4 ID (RFC 6864 §4.1).
#[test]
fn below_the_ipv4_floor_segments_go_without_df_and_with_distinct_ids() {
    let mut p = established(false, 1460);
    p.write(&[7u8; 1460]);
    let (_, pkts) = drain(&mut p, 1);
    assert_eq!(pkts[0][6] & 0x40, 0x40, "DF at first");
    p.send_raw(ms(2), &too_big(&p, 300, &pkts[0]));
    let (lens, pkts) = drain(&mut p, 2);
    assert_eq!(lens, [512, 512, 436]);
    let mut ids = Vec::new();
    for pkt in &pkts {
        assert_eq!(pkt[6] & 0x40, 0, "no DF on a locked path");
        assert_eq!(checksum_fold(checksum_sum(0, &pkt[..20])), 0);
        assert!(
            parse_tcp(&parse_ip(pkt).unwrap()).is_ok(),
            "still a valid segment"
        );
        ids.push(u16::from_be_bytes([pkt[4], pkt[5]]));
    }
    ids.dedup();
    assert_eq!(ids.len(), 3, "{ids:?}");
    // A new connection to the destination inherits the lock.
    assert_eq!(p.ep.path_mtu(p.remote_ip), Some(552));
    // A report at the floor or above leaves DF on.
    let mut p = established(false, 1460);
    p.write(&[7u8; 1460]);
    let (_, pkts) = drain(&mut p, 1);
    p.send_raw(ms(2), &too_big(&p, 552, &pkts[0]));
    let (_, pkts) = drain(&mut p, 2);
    assert!(pkts.iter().all(|q| q[6] & 0x40 == 0x40));
}
