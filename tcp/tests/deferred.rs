//! Deferred accept (`listen_deferred`, `accept_syn`, `refuse_syn`) and
//! transparent listening (`listen_any`), packet by packet with a
//! hand-crafting peer and explicit times.

#![allow(clippy::unwrap_used, unused_macros)]

#[macro_use]
#[path = "common/peer.rs"]
mod peer;

use peer::*;
use std::net::{IpAddr, SocketAddr};
use tcp::wire::{parse_ip, parse_tcp, TcpOptions, PROTO_ICMP, PROTO_ICMPV6};
use tcp::{Config, Error, Event, Refusal, SeqNum, State, SynId, Unreach};

fn syn_opts() -> TcpOptions {
    TcpOptions {
        mss: Some(MSS),
        sack_permitted: true,
        ..Default::default()
    }
}

fn peer_syn() -> Seg {
    Seg {
        seq: REMOTE_SEQ,
        flags: SYN,
        options: syn_opts(),
        ..send_templ()
    }
}

/// Our SYN-ACK to [`peer_syn`] under the test configuration.
fn our_synack() -> Seg {
    Seg {
        seq: LOCAL_SEQ,
        flags: SYN,
        options: TcpOptions {
            mss: Some(MSS),
            sack_permitted: true,
            ..Default::default()
        },
        ..recv_templ()
    }
}

fn deferred_with(cfg: Config, v6: bool) -> Peer {
    let mut p = if v6 {
        Peer::new_v6(cfg)
    } else {
        Peer::new(cfg)
    };
    p.ep.listen_deferred(LOCAL_PORT, 8).unwrap();
    p
}

fn deferred() -> Peer {
    deferred_with(test_config(), false)
}

/// The SynId of the one `Event::Syn` among the events seen.
#[track_caller]
fn held(p: &mut Peer) -> SynId {
    let ev = p.take_events();
    match ev.as_slice() {
        [Event::Syn(id)] => *id,
        other => panic!("expected one Event::Syn, got {other:?}"),
    }
}

/// [`icmp_error`], plus the TOS Linux gives its ICMP errors.
#[track_caller]
fn icmp_fields(pkt: &[u8], from: IpAddr, to: IpAddr) -> (u8, u8, u32, Vec<u8>) {
    let fields = icmp_error(pkt, from, to);
    if from.is_ipv4() {
        assert_eq!(pkt[1], 0xc0, "TOS internetwork control, as Linux");
    }
    fields
}

// ----- holding -----------------------------------------------------------------

#[test]
fn held_syn_is_not_answered() {
    let mut p = deferred();
    send!(p, time 0, peer_syn());
    let id = held(&mut p);
    recv_nothing!(p, time 0);
    let info = p.ep.syn_info(id).unwrap();
    assert_eq!(info.local, p.local());
    assert_eq!(info.remote, p.remote());
    assert_eq!(info.listener_port, Some(LOCAL_PORT));
    assert_eq!(info.received, ms(0));
    // No connection exists, and the only timer is the hold's.
    assert_eq!(p.ep.connection_count(), 0);
    assert_eq!(p.ep.poll_timeout(), Some(ms(75_000)));
    assert_eq!(p.ep.stats().defer.syn_held, 1);
    // Still silent a while later.
    recv_nothing!(p, time 30_000);
    assert!(p.take_events().is_empty());
}

#[test]
fn duplicate_syn_is_absorbed_and_counted() {
    let mut p = deferred();
    send!(p, time 0, peer_syn());
    let id = held(&mut p);
    // The client's retransmissions (RFC 6298 §5: 1 s, then 3 s).
    send!(p, time 1000, peer_syn());
    send!(p, time 3000, peer_syn());
    assert!(p.take_events().is_empty(), "no second Event::Syn");
    recv_nothing!(p, time 3000);
    assert_eq!(p.ep.stats().defer.syn_hold_dup, 2);
    assert_eq!(p.ep.stats().defer.syn_held, 1);
    assert_eq!(
        p.ep.syn_info(id).unwrap().received,
        ms(0),
        "the first copy's time"
    );
    // The decision still answers it once.
    p.ep.accept_syn(ms(3500), id).unwrap();
    recv!(p, time 3500, our_synack());
    recv_nothing!(p, time 3500);
}

#[test]
fn hold_queue_full_drops_and_counts() {
    let mut p = Peer::new(test_config());
    p.ep.listen_deferred(LOCAL_PORT, 2).unwrap();
    for port in [1000, 1001, 1002] {
        send!(p, time 0, Seg { src_port: port, ..peer_syn() });
    }
    let ids: Vec<SynId> = p
        .take_events()
        .into_iter()
        .map(|e| match e {
            Event::Syn(id) => id,
            e => panic!("{e:?}"),
        })
        .collect();
    assert_eq!(ids.len(), 2, "the backlog bounds the hold queue");
    assert_eq!(p.ep.stats().defer.syn_hold_full, 1);
    recv_nothing!(p, time 0);
    // Once one is decided, the next SYN (the third client's retry) fits.
    p.ep.refuse_syn(ms(10), ids[0], Refusal::Drop).unwrap();
    send!(p, time 1000, Seg { src_port: 1002, ..peer_syn() });
    let id = held(&mut p);
    assert_eq!(p.ep.syn_info(id).unwrap().remote.port(), 1002);
    assert_eq!(p.ep.stats().defer.syn_hold_full, 1);
}

#[test]
fn expiry_reports_syn_expired_and_kills_the_handle() {
    let mut p = deferred();
    send!(p, time 0, peer_syn());
    let id = held(&mut p);
    p.tick(ms(74_999));
    assert!(p.take_events().is_empty());
    p.tick(ms(75_000));
    assert_eq!(p.take_events(), [Event::SynExpired(id)]);
    assert_eq!(p.ep.syn_info(id), None);
    assert_eq!(p.ep.accept_syn(ms(75_001), id), Err(Error::InvalidHandle));
    assert_eq!(
        p.ep.refuse_syn(ms(75_001), id, Refusal::Reset),
        Err(Error::InvalidHandle)
    );
    recv_nothing!(p, time 75_001);
    assert_eq!(p.ep.stats().defer.syn_hold_expired, 1);
    assert_eq!(p.ep.poll_timeout(), None);
    // A later SYN from the same client is a new hold with a new handle.
    send!(p, time 80_000, peer_syn());
    let again = held(&mut p);
    assert_ne!(again, id);
    assert_ne!(again.to_u64(), id.to_u64());
}

#[test]
fn hold_timeout_is_configurable_and_unlisten_expires() {
    let cfg = Config {
        syn_hold_timeout: tcp::Duration::from_secs(5),
        ..test_config()
    };
    let mut p = deferred_with(cfg, false);
    send!(p, time 0, peer_syn());
    let a = held(&mut p);
    assert_eq!(p.ep.poll_timeout(), Some(ms(5000)));
    send!(p, time 100, Seg { src_port: 2000, ..peer_syn() });
    let b = held(&mut p);
    p.tick(ms(5000));
    assert_eq!(p.take_events(), [Event::SynExpired(a)]);
    p.ep.unlisten(LOCAL_PORT);
    assert_eq!(p.take_events(), [Event::SynExpired(b)]);
    assert_eq!(p.ep.stats().defer.syn_hold_expired, 2);
    // The port is closed now: a SYN gets RST,ACK (RFC 9293 §3.10.7.1).
    send!(p, time 6000, peer_syn());
    recv!(p, time 6000, Seg { seq: SeqNum(0), ack: Some(REMOTE_SEQ + 1), flags: RST, window: 0, ..recv_templ() });
    // A deferred listener's port is taken for `listen` and again for itself.
    p.ep.listen_deferred(LOCAL_PORT, 4).unwrap();
    assert_eq!(p.ep.listen(LOCAL_PORT, 4), Err(Error::PortInUse));
    assert_eq!(p.ep.listen_deferred(LOCAL_PORT, 4), Err(Error::PortInUse));
}

// ----- accepting -----------------------------------------------------------------

/// A configuration with every SYN option in play.
fn options_config() -> Config {
    Config {
        timestamps: true,
        window_scaling: true,
        sack: true,
        recv_buffer: 1 << 20,
        ..test_config()
    }
}

fn rich_syn() -> Seg {
    Seg {
        seq: REMOTE_SEQ,
        flags: SYN,
        window: 29200,
        options: TcpOptions {
            mss: Some(1400),
            window_scale: Some(7),
            sack_permitted: true,
            timestamps: Some((777_000, 0)),
            ..Default::default()
        },
        ..send_templ()
    }
}

#[test]
fn accept_syn_builds_the_same_connection_as_a_passive_open() {
    for v6 in [false, true] {
        // The same SYN at the same time to a normal listener and to a
        // deferred one accepted at once: byte-identical SYN-ACKs (same
        // ISS, timestamp offset, window, MSS, window scale, SACK-permitted,
        // TSecr), and connections with the same negotiated MSS.
        let mut normal = if v6 {
            Peer::new_v6(options_config())
        } else {
            Peer::new(options_config())
        };
        normal.ep.listen(LOCAL_PORT, 8).unwrap();
        let mut p = deferred_with(options_config(), v6);
        let syn = rich_syn();
        send!(normal, time 10, syn.clone());
        send!(p, time 10, syn.clone());
        let id = held(&mut p);
        let conn = p.ep.accept_syn(ms(10), id).unwrap();
        p.conn = Some(conn);
        assert_eq!(p.ep.state(conn), Ok(State::SynReceived));
        let want = normal.poll_raw(ms(10)).unwrap();
        let got = p.poll_raw(ms(10)).unwrap();
        assert_eq!(got, want, "the SYN-ACK of a passive open");
        let ip = parse_ip(&got).unwrap();
        let t = parse_tcp(&ip).unwrap();
        assert!(t.flags.syn() && t.flags.ack());
        assert_eq!(t.ack, REMOTE_SEQ + 1);
        assert!(t.options.sack_permitted);
        assert!(t.options.window_scale.is_some());
        assert_eq!(t.options.timestamps.map(|x| x.1), Some(777_000));
        assert!(p.ep.syn_info(id).is_none(), "the SynId is used up");
        assert_eq!(p.ep.accept_syn(ms(10), id), Err(Error::InvalidHandle));
        assert_eq!(p.ep.stats().defer.syn_accepted_deferred, 1);

        // Handshake: the application hears Connected (never Incoming).
        let our_iss = t.seq;
        let ack = |ts: u32| {
            let mut b = vec![0u8; 200];
            let repr = tcp::wire::TcpRepr {
                src_port: REMOTE_PORT,
                dst_port: LOCAL_PORT,
                seq: REMOTE_SEQ + 1,
                ack: our_iss + 1,
                flags: tcp::wire::TcpFlags::ACK,
                window: 229,
                options: TcpOptions {
                    timestamps: Some((777_010, ts)),
                    ..Default::default()
                },
            };
            let n = tcp::wire::emit_tcp(&mut b, p_remote(v6), p_local(v6), 64, &repr, 0).unwrap();
            b.truncate(n);
            b
        };
        let tsval = t.options.timestamps.unwrap().0;
        let a = ack(tsval);
        p.send_raw(ms(20), &a);
        assert_eq!(p.take_events(), [Event::Connected(conn)]);
        assert_eq!(p.ep.state(conn), Ok(State::Established));
        normal.send_raw(ms(20), &a);
        let nconn = normal.ep.accept(LOCAL_PORT).unwrap();
        assert_eq!(
            p.ep.info(conn).unwrap().mss,
            normal.ep.info(nconn).unwrap().mss,
            "the same negotiated MSS"
        );
        assert_eq!(
            p.ep.info(conn).unwrap().snd_wnd,
            normal.ep.info(nconn).unwrap().snd_wnd,
            "the same window scaling"
        );
        assert_eq!(p.ep.info(conn).unwrap().snd_wnd, 229 << 7);
        assert_eq!(p.ep.stats().passive_opens, 1);

        // Data both ways.
        assert_eq!(p.ep.send(conn, b"hello from tcpd"), Ok(15));
        let out = p.poll_raw(ms(20)).unwrap();
        let ip = parse_ip(&out).unwrap();
        let t = parse_tcp(&ip).unwrap();
        assert_eq!(t.payload, b"hello from tcpd");
        let mut b = vec![0u8; 200];
        let repr = tcp::wire::TcpRepr {
            src_port: REMOTE_PORT,
            dst_port: LOCAL_PORT,
            seq: REMOTE_SEQ + 1,
            ack: our_iss + 16,
            flags: tcp::wire::TcpFlags::ACK | tcp::wire::TcpFlags::PSH,
            window: 229,
            options: TcpOptions {
                timestamps: Some((777_020, t.options.timestamps.unwrap().0)),
                ..Default::default()
            },
        };
        let off = tcp::wire::tcp_payload_offset(p_remote(v6), &repr);
        b[off..off + 4].copy_from_slice(b"ping");
        let n = tcp::wire::emit_tcp(&mut b, p_remote(v6), p_local(v6), 64, &repr, 4).unwrap();
        p.send_raw(ms(30), &b[..n]);
        assert_eq!(p.read_all(), b"ping");
        assert_eq!(p.ep.info(conn).unwrap().in_flight, 0);
    }
}

fn p_local(v6: bool) -> IpAddr {
    if v6 {
        IpAddr::V6(LOCAL_ADDR6)
    } else {
        IpAddr::V4(LOCAL_ADDR)
    }
}

fn p_remote(v6: bool) -> IpAddr {
    if v6 {
        IpAddr::V6(REMOTE_ADDR6)
    } else {
        IpAddr::V4(REMOTE_ADDR)
    }
}

#[test]
fn accepted_syn_completes_with_the_test_peer() {
    // The same with the normalizing peer: SYN-ACK, ACK, Connected, data.
    let mut p = deferred();
    send!(p, time 0, peer_syn());
    let id = held(&mut p);
    p.conn = Some(p.ep.accept_syn(ms(500), id).unwrap());
    recv!(p, time 500, our_synack());
    send!(p, time 510, Seg { ack: Some(LOCAL_SEQ + 1), ..send_templ() });
    assert_eq!(p.take_events(), [Event::Connected(p.id())]);
    assert_eq!(p.ep.accept(LOCAL_PORT), None, "never in an accept queue");
    send!(p, time 520, Seg { ack: Some(LOCAL_SEQ + 1), flags: PSH, payload: b"GET /".to_vec(), ..send_templ() });
    assert_eq!(p.read_all(), b"GET /");
    p.write(b"200 OK");
    recv!(p, time 520, Seg { ack: Some(REMOTE_SEQ + 6), flags: PSH, payload: b"200 OK".to_vec(), window: RCV_BUF as u16 - 5, ..recv_templ() });
}

#[test]
fn accepted_syn_reset_in_syn_received_tells_the_application() {
    let mut p = deferred();
    send!(p, time 0, peer_syn());
    let id = held(&mut p);
    let conn = p.ep.accept_syn(ms(0), id).unwrap();
    p.conn = Some(conn);
    recv!(p, time 0, our_synack());
    send!(p, time 5, Seg { seq: REMOTE_SEQ + 1, flags: RST, ..send_templ() });
    assert_eq!(p.take_events(), [Event::Reset(conn), Event::Closed(conn)]);
    assert_eq!(p.ep.connection_count(), 0);
    assert_eq!(p.ep.passive_open(), 0);
}

#[test]
fn accepted_syn_times_out_like_any_syn_received() {
    let cfg = Config {
        synack_retries: 1,
        ..test_config()
    };
    let mut p = deferred_with(cfg, false);
    send!(p, time 0, peer_syn());
    let id = held(&mut p);
    let conn = p.ep.accept_syn(ms(0), id).unwrap();
    p.conn = Some(conn);
    recv!(p, time 0, our_synack());
    recv!(p, time 1000, our_synack());
    p.tick(ms(10_000));
    assert_eq!(
        p.take_events(),
        [Event::TimedOut(conn), Event::Closed(conn)]
    );
    assert_eq!(p.ep.connection_count(), 0);
}

// ----- refusing -----------------------------------------------------------------

#[test]
fn refuse_reset_sends_rst_ack() {
    let mut p = deferred();
    // A SYN with data: the RST acknowledges SEG.SEQ + SEG.LEN.
    send!(p, time 0, Seg { payload: b"early".to_vec(), ..peer_syn() });
    let id = held(&mut p);
    p.ep.refuse_syn(ms(40), id, Refusal::Reset).unwrap();
    recv!(p, time 40, Seg { seq: SeqNum(0), ack: Some(REMOTE_SEQ + 6), flags: RST, window: 0, ..recv_templ() });
    recv_nothing!(p, time 40);
    assert_eq!(p.ep.stats().defer.syn_refused_rst, 1);
    assert_eq!(p.ep.syn_info(id), None);
    assert_eq!(
        p.ep.refuse_syn(ms(41), id, Refusal::Reset),
        Err(Error::InvalidHandle)
    );
}

#[test]
fn refuse_unreachable_sends_icmp_quoting_the_syn() {
    for v6 in [false, true] {
        for (how, v4tc, v6tc) in [
            (Unreach::Net, (3, 0), (1, 0)),
            (Unreach::Host, (3, 1), (1, 3)),
            (Unreach::Port, (3, 3), (1, 4)),
            (Unreach::AdminProhibited, (3, 13), (1, 1)),
        ] {
            let mut p = deferred_with(test_config(), v6);
            let syn = p.build(&peer_syn());
            p.send_raw(ms(0), &syn);
            let id = held(&mut p);
            p.ep.refuse_syn(ms(7), id, Refusal::Unreachable(how))
                .unwrap();
            let pkt = p.poll_raw(ms(7)).unwrap();
            let (t, c, rest, quote) = icmp_fields(&pkt, p.local_ip, p.remote_ip);
            assert_eq!((t, c), if v6 { v6tc } else { v4tc }, "{how:?} v6={v6}");
            assert_eq!(rest, 0, "unused");
            assert_eq!(quote, syn, "a short SYN is quoted whole");
            assert_eq!(parse_ip(&pkt).unwrap().ttl, 64);
            recv_nothing!(p, time 7);
            assert_eq!(p.ep.stats().defer.syn_refused_icmp, 1);
            assert_eq!(p.ep.syn_info(id), None);
        }
    }
}

#[test]
fn refuse_unreachable_quotes_as_much_as_linux() {
    // A SYN carrying 1200 bytes: IPv4 quotes up to 576 bytes in all
    // (RFC 1812 §4.3.2.3, Linux icmp_send), IPv6 up to 1280 (RFC 4443
    // §2.4(c)); the quote is the SYN's first bytes, IP header on.
    for (v6, total) in [(false, 576), (true, 1280)] {
        let mut p = deferred_with(test_config(), v6);
        let syn = p.build(&Seg {
            payload: vec![0x5a; 1300],
            ..peer_syn()
        });
        p.send_raw(ms(0), &syn);
        let id = held(&mut p);
        p.ep.refuse_syn(ms(1), id, Refusal::Unreachable(Unreach::Port))
            .unwrap();
        let pkt = p.poll_raw(ms(1)).unwrap();
        assert_eq!(pkt.len(), total);
        let (_, _, _, quote) = icmp_fields(&pkt, p.local_ip, p.remote_ip);
        assert_eq!(quote[..], syn[..quote.len()]);
    }
}

#[test]
fn refuse_drop_is_silent_and_a_retry_is_held_anew() {
    let mut p = deferred();
    send!(p, time 0, peer_syn());
    let id = held(&mut p);
    p.ep.refuse_syn(ms(5), id, Refusal::Drop).unwrap();
    recv_nothing!(p, time 5);
    assert_eq!(p.ep.syn_info(id), None);
    assert_eq!(p.ep.accept_syn(ms(5), id), Err(Error::InvalidHandle));
    assert_eq!(p.ep.stats().defer.syn_refused_drop, 1);
    // The client's retransmission is a new SYN to decide on.
    send!(p, time 1000, peer_syn());
    let again = held(&mut p);
    assert_ne!(again, id, "the slot's generation moved on");
    assert!(p.ep.syn_info(again).is_some());
    assert_eq!(p.ep.syn_info(id), None, "the stale handle stays stale");
}

#[test]
fn non_syn_segments_to_a_deferred_port_follow_listen_rules() {
    // RFC 9293 §3.10.7.2: an ACK gets <SEQ=SEG.ACK><CTL=RST>; RST and
    // bare segments are dropped; nothing is held.
    let mut p = deferred();
    send!(p, time 0, Seg { ack: Some(LOCAL_SEQ + 1), ..send_templ() });
    recv!(p, time 0, Seg { seq: LOCAL_SEQ + 1, ack: None, flags: RST, window: 0, ..recv_templ() });
    send!(p, time 0, Seg { flags: RST, ..send_templ() });
    send!(p, time 0, Seg { flags: FIN, ..send_templ() });
    recv_nothing!(p, time 0);
    assert!(p.take_events().is_empty());
}

// ----- listen_any -----------------------------------------------------------------

#[test]
fn listen_any_takes_foreign_addresses_and_ports() {
    for foreign in ["192.0.2.7", "2001:db8::7"] {
        let foreign: IpAddr = foreign.parse().unwrap();
        let mut p = if foreign.is_ipv6() {
            Peer::new_v6(test_config())
        } else {
            Peer::new(test_config())
        };
        // Without listen_any a foreign address is not ours.
        p.local_ip = foreign;
        send!(p, time 0, Seg { dst_port: 4242, ..peer_syn() });
        recv_nothing!(p, time 0);
        assert_eq!(p.ep.stats().drops.not_our_address, 1);

        p.ep.listen_any(16).unwrap();
        assert_eq!(p.ep.listen_any(16), Err(Error::PortInUse));
        send!(p, time 10, Seg { dst_port: 4242, ..peer_syn() });
        let id = held(&mut p);
        let info = p.ep.syn_info(id).unwrap();
        assert_eq!(info.local, SocketAddr::new(foreign, 4242));
        assert_eq!(info.listener_port, None);
        recv_nothing!(p, time 10);
        let conn = p.ep.accept_syn(ms(20), id).unwrap();
        p.conn = Some(conn);
        // `poll` checks that the SYN-ACK leaves from the SYN's destination.
        let mss = p.ep.config().local_mss(foreign.is_ipv6());
        let options = TcpOptions {
            mss: Some(mss),
            ..our_synack().options
        };
        recv!(p, time 20, Seg { src_port: 4242, options, ..our_synack() });
        send!(p, time 30, Seg { dst_port: 4242, ack: Some(LOCAL_SEQ + 1), ..send_templ() });
        assert_eq!(p.take_events(), [Event::Connected(conn)]);
        assert_eq!(
            p.ep.info(conn).unwrap().local,
            SocketAddr::new(foreign, 4242)
        );
        send!(p, time 40, Seg { dst_port: 4242, ack: Some(LOCAL_SEQ + 1), flags: PSH, payload: b"via".to_vec(), ..send_templ() });
        assert_eq!(p.read_all(), b"via");
        p.write(b"back");
        recv!(p, time 40, Seg { src_port: 4242, ack: Some(REMOTE_SEQ + 4), flags: PSH, payload: b"back".to_vec(), window: RCV_BUF as u16 - 3, ..recv_templ() });
        // A stray ACK to another foreign port: RST from that address.
        send!(p, time 50, Seg { dst_port: 5555, ack: Some(LOCAL_SEQ + 9), ..send_templ() });
        recv!(p, time 50, Seg { src_port: 5555, seq: LOCAL_SEQ + 9, ack: None, flags: RST, window: 0, ..recv_templ() });
        // ICMP to a foreign address is still not ours (no echo replies from it).
        let before = p.ep.stats().drops.not_our_address;
        let mut echo = vec![0u8; 100];
        let proto = if foreign.is_ipv6() {
            PROTO_ICMPV6
        } else {
            PROTO_ICMP
        };
        let len =
            tcp::wire::emit_ip_header(&mut echo, p.remote_ip, foreign, proto, 8, 64, 0).unwrap();
        echo[len] = if foreign.is_ipv6() { 128 } else { 8 };
        echo.truncate(len + 8);
        p.send_raw(ms(60), &echo);
        assert_eq!(p.ep.stats().drops.not_our_address, before + 1);
        recv_nothing!(p, time 60);
    }
}

#[test]
fn a_specific_listener_wins_over_listen_any() {
    let mut p = Peer::new(test_config());
    p.ep.listen_any(16).unwrap();
    p.ep.listen(LOCAL_PORT, 8).unwrap();
    // Our address, a listened port: the normal passive open.
    send!(p, time 0, peer_syn());
    recv!(p, time 0, our_synack());
    assert!(p.take_events().is_empty());
    // Our address, another port: listen_any holds it.
    send!(p, time 0, Seg { src_port: 3000, dst_port: 81, ..peer_syn() });
    let id = held(&mut p);
    assert_eq!(p.ep.syn_info(id).unwrap().local.port(), 81);
    // A deferred listener on a port wins too, and names its port.
    p.ep.listen_deferred(82, 8).unwrap();
    send!(p, time 0, Seg { src_port: 3001, dst_port: 82, ..peer_syn() });
    let id = held(&mut p);
    assert_eq!(p.ep.syn_info(id).unwrap().listener_port, Some(82));
}

#[test]
fn unlisten_any_expires_holds_and_restores_closed_rules() {
    let mut p = Peer::new(test_config());
    p.ep.listen_any(16).unwrap();
    send!(p, time 0, Seg { dst_port: 81, ..peer_syn() });
    let id = held(&mut p);
    p.ep.unlisten_any();
    assert_eq!(p.take_events(), [Event::SynExpired(id)]);
    assert_eq!(p.ep.accept_syn(ms(1), id), Err(Error::InvalidHandle));
    // Our address, no listener: RST,ACK (RFC 9293 §3.10.7.1).
    send!(p, time 10, Seg { dst_port: 81, ..peer_syn() });
    recv!(p, time 10, Seg { src_port: 81, seq: SeqNum(0), ack: Some(REMOTE_SEQ + 1), flags: RST, window: 0, ..recv_templ() });
    // A foreign address: not ours again.
    p.local_ip = "192.0.2.9".parse().unwrap();
    send!(p, time 20, Seg { dst_port: 81, ..peer_syn() });
    recv_nothing!(p, time 20);
    assert_eq!(p.ep.stats().drops.not_our_address, 1);
    // And it may be turned on again.
    p.ep.listen_any(4).unwrap();
    send!(p, time 30, Seg { dst_port: 81, ..peer_syn() });
    held(&mut p);
}

#[test]
fn stale_handles_are_detected_after_slot_reuse() {
    let mut p = deferred();
    send!(p, time 0, peer_syn());
    let a = held(&mut p);
    let c = p.ep.accept_syn(ms(0), a).unwrap();
    p.ep.abort(c).unwrap();
    p.take_events();
    // The next SYN reuses the hold slot under a new generation.
    send!(p, time 100, Seg { src_port: 7000, ..peer_syn() });
    let b = held(&mut p);
    assert_ne!(a, b);
    assert_eq!(
        p.ep.refuse_syn(ms(100), a, Refusal::Drop),
        Err(Error::InvalidHandle)
    );
    assert!(
        p.ep.syn_info(b).is_some(),
        "the stale call did not touch the new hold"
    );
}

// ----- the per-source share ------------------------------------------------------

/// The `Event::Syn`s among the events seen, in order.
fn held_all(p: &mut Peer) -> Vec<SynId> {
    p.take_events()
        .into_iter()
        .map(|e| match e {
            Event::Syn(id) => id,
            e => panic!("expected only Event::Syn, got {e:?}"),
        })
        .collect()
}

#[test]
fn held_syns_count_against_the_per_source_limit() {
    // Two per source; the hold queue (8) would take more. Without held
    // SYNs in the count, one source could keep the whole queue waiting
    // (for a forwarder: as many upstream connects in progress).
    let cfg = Config {
        max_passive_per_source: 2,
        ..test_config()
    };
    let mut p = deferred_with(cfg, false);
    for port in [1000, 1001] {
        send!(p, time 0, Seg { src_port: port, ..peer_syn() });
    }
    let ids = held_all(&mut p);
    assert_eq!(ids.len(), 2);
    // The third SYN from that source is over its share: RST,ACK as for a
    // passive open (RFC 9293 §3.10.7.1's form), not held.
    send!(p, time 0, Seg { src_port: 1002, ..peer_syn() });
    recv!(p, time 0, Seg { dst_port: 1002, seq: SeqNum(0), ack: Some(REMOTE_SEQ + 1), flags: RST, window: 0, ..recv_templ() });
    assert!(p.take_events().is_empty(), "no Event::Syn over the share");
    assert_eq!(p.ep.stats().drops.source_limit, 1);
    assert_eq!(p.ep.stats().defer.syn_held, 2);
    // A retransmission of a held SYN is still absorbed, not refused.
    send!(p, time 1000, Seg { src_port: 1000, ..peer_syn() });
    recv_nothing!(p, time 1000);
    assert_eq!(p.ep.stats().defer.syn_hold_dup, 1);
    // Another source has its own share.
    let first = p.remote_ip;
    p.remote_ip = "192.0.2.77".parse().unwrap();
    send!(p, time 1000, Seg { src_port: 1000, ..peer_syn() });
    assert_eq!(held_all(&mut p).len(), 1);
    p.remote_ip = first;
    // Accepting a held SYN keeps its place in the share (now as a
    // connection): still full.
    let c = p.ep.accept_syn(ms(1100), ids[0]).unwrap();
    send!(p, time 1200, Seg { src_port: 1003, ..peer_syn() });
    assert_eq!(p.ep.stats().drops.source_limit, 2);
    assert!(p.take_events().is_empty());
    // Refusing one frees its place: the next SYN is held.
    p.ep.refuse_syn(ms(1300), ids[1], Refusal::Drop).unwrap();
    send!(p, time 1400, Seg { src_port: 1004, ..peer_syn() });
    let later = held_all(&mut p);
    assert_eq!(later.len(), 1);
    // An expired hold frees its place too (at its expiry, before its
    // event is read).
    p.ep.abort(c).unwrap();
    p.take_events();
    send!(p, time 1500, Seg { src_port: 1005, ..peer_syn() });
    assert_eq!(held_all(&mut p).len(), 1, "the aborted connection's place");
    send!(p, time 1500, Seg { src_port: 1006, ..peer_syn() });
    assert_eq!(p.ep.stats().drops.source_limit, 3, "full again");
    p.ep.handle_timeout(ms(75_000 + 1400));
    send!(p, time 75_000 + 1400, Seg { src_port: 1007, ..peer_syn() });
    let ev = p.take_events();
    assert!(
        ev.contains(&Event::SynExpired(later[0])) && ev.iter().any(|e| matches!(e, Event::Syn(_))),
        "the expired hold's place went to the next SYN: {ev:?}"
    );
    assert_eq!(p.ep.stats().drops.source_limit, 3);
}
