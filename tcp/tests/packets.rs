//! Packet-level tests: one endpoint, a hand-crafting peer, explicit times.
//!
//! Each test reads like a packet trace: `send!` is a segment the peer sends
//! at a time in milliseconds, `recv!` a segment the endpoint must emit then,
//! `recv_nothing!` silence. Segments are written as the two templates
//! (`send_templ()`, `recv_templ()`) adjusted with struct-update syntax.
//! Sequence numbers are normalized: the endpoint's ISS reads as `LOCAL_SEQ`
//! (see `common/peer.rs`).
//!
//! Fixtures bring a connection into each RFC 9293 state. Unless a test says
//! otherwise the handshake completes at time 0 with a zero RTT, so the RTO
//! sits at its 200 ms floor (`Config::min_rto`, Linux's value).

// Tests may unwrap (brief): a panic is a test failure.
#![allow(clippy::unwrap_used)]

#[macro_use]
#[path = "common/peer.rs"]
mod peer;

use peer::*;
use tcp::wire::{
    checksum_fold, checksum_sum, emit_ip_header, parse_ip, pseudo_header_sum, TcpFlags, TcpOptions,
    PROTO_ICMP, PROTO_ICMPV6,
};
use tcp::{Config, Duration, Event, Keepalive, SeqNum, State};

// =====================================================================
// Fixtures
// =====================================================================

/// The options the peer puts on its SYN: MSS and SACK-permitted (no window
/// scale, no timestamps).
fn syn_opts() -> TcpOptions {
    TcpOptions {
        mss: Some(MSS),
        sack_permitted: true,
        ..Default::default()
    }
}

/// The peer's SYN.
fn peer_syn() -> Seg {
    Seg {
        seq: REMOTE_SEQ,
        flags: SYN,
        options: syn_opts(),
        ..send_templ()
    }
}

/// The SYN-ACK the endpoint answers `peer_syn()` with.
fn our_synack() -> Seg {
    Seg {
        seq: LOCAL_SEQ,
        flags: SYN,
        options: syn_opts(),
        ..recv_templ()
    }
}

/// The SYN of an active open from the test configuration: MSS, window
/// scale 0 (a 64 KiB buffer needs no shift) and SACK-permitted.
fn our_syn() -> Seg {
    Seg {
        seq: LOCAL_SEQ,
        ack: None,
        flags: SYN,
        options: TcpOptions {
            mss: Some(MSS),
            window_scale: Some(0),
            sack_permitted: true,
            ..Default::default()
        },
        ..recv_templ()
    }
}

/// A segment from the peer acknowledging everything up to our SYN.
fn peer_ack() -> Seg {
    Seg {
        ack: Some(LOCAL_SEQ + 1),
        ..send_templ()
    }
}

fn listen_with(cfg: Config) -> Peer {
    let mut p = Peer::new(cfg);
    p.ep.listen(LOCAL_PORT, 8).unwrap();
    p
}

/// LISTEN.
fn listen() -> Peer {
    listen_with(test_config())
}

/// SYN-RECEIVED (passive): the peer's SYN at 0, our SYN-ACK at 0.
#[track_caller]
fn syn_received_with(cfg: Config) -> Peer {
    // A SYN's window is never scaled (RFC 7323 §2.2).
    let window = cfg.recv_buffer.min(65535) as u16;
    let mut p = listen_with(cfg);
    send!(p, time 0, peer_syn());
    recv!(p, time 0, Seg { window, ..our_synack() });
    assert_eq!(p.count(State::SynReceived), 1);
    p
}

#[track_caller]
fn syn_received() -> Peer {
    syn_received_with(test_config())
}

/// ESTABLISHED (passive open, accepted).
#[track_caller]
fn established_with(cfg: Config) -> Peer {
    let mut p = syn_received_with(cfg);
    send!(p, time 0, peer_ack());
    assert_eq!(p.take_events(), [Event::Incoming { port: LOCAL_PORT }]);
    p.conn = p.ep.accept(LOCAL_PORT);
    assert_eq!(p.state(), State::Established);
    recv_nothing!(p, time 0);
    p
}

#[track_caller]
fn established() -> Peer {
    established_with(test_config())
}

/// SYN-SENT (active open at 0).
#[track_caller]
fn syn_sent_with(cfg: Config) -> Peer {
    let mut p = Peer::new(cfg);
    let ts = p.ep.config().timestamps;
    let id = p.ep.connect(ms(0), LOCAL_ADDR.into(), p.remote()).unwrap();
    p.conn = Some(id);
    let mut syn = our_syn();
    if ts {
        syn.options.timestamps = Some((0, 0));
    }
    recv!(p, time 0, syn);
    assert_eq!(p.state(), State::SynSent);
    p
}

#[track_caller]
fn syn_sent() -> Peer {
    syn_sent_with(test_config())
}

/// ESTABLISHED (active open).
#[track_caller]
fn established_active() -> Peer {
    let mut p = syn_sent();
    send!(p, time 0, Seg { seq: REMOTE_SEQ, flags: SYN, ack: Some(LOCAL_SEQ + 1), options: syn_opts(), ..send_templ() });
    recv!(p, time 0, recv_templ());
    assert_eq!(p.take_events(), [Event::Connected(p.id())]);
    assert_eq!(p.state(), State::Established);
    p
}

/// FIN-WAIT-1: ESTABLISHED, the application closes at 0, our FIN goes out.
#[track_caller]
fn fin_wait_1() -> Peer {
    let mut p = established();
    p.ep.close(p.id()).unwrap();
    recv!(p, time 0, Seg { flags: FIN, ..recv_templ() });
    assert_eq!(p.state(), State::FinWait1);
    p
}

/// FIN-WAIT-2: FIN-WAIT-1 and the peer acknowledges our FIN.
#[track_caller]
fn fin_wait_2() -> Peer {
    let mut p = fin_wait_1();
    send!(p, time 0, Seg { ack: Some(LOCAL_SEQ + 2), ..send_templ() });
    recv_nothing!(p, time 0);
    assert_eq!(p.state(), State::FinWait2);
    p
}

/// The ACK of the peer's FIN as the endpoint sends it (after a FIN the
/// endpoint's window counts the FIN's sequence number as used).
fn ack_of_peer_fin(seq: SeqNum) -> Seg {
    Seg {
        seq,
        ack: Some(REMOTE_SEQ + 2),
        window: RCV_BUF as u16 - 1,
        ..recv_templ()
    }
}

/// TIME-WAIT: FIN-WAIT-2 and the peer's FIN at 0.
#[track_caller]
fn time_wait() -> Peer {
    let mut p = fin_wait_2();
    send!(p, time 0, Seg { flags: FIN, ack: Some(LOCAL_SEQ + 2), ..send_templ() });
    recv!(p, time 0, ack_of_peer_fin(LOCAL_SEQ + 2));
    assert_eq!(p.count(State::TimeWait), 1);
    // The application was told Closed on entering TIME-WAIT.
    let ev = p.take_events();
    assert!(ev.contains(&Event::Closed(p.id())), "{ev:?}");
    p
}

/// CLOSING: FIN-WAIT-1 and the peer's FIN crossing ours (it does not
/// acknowledge our FIN).
#[track_caller]
fn closing() -> Peer {
    let mut p = fin_wait_1();
    send!(p, time 0, Seg { flags: FIN, ack: Some(LOCAL_SEQ + 1), ..send_templ() });
    recv!(p, time 0, ack_of_peer_fin(LOCAL_SEQ + 2));
    assert_eq!(p.state(), State::Closing);
    p
}

/// CLOSE-WAIT: ESTABLISHED and the peer's FIN at 0.
#[track_caller]
fn close_wait() -> Peer {
    let mut p = established();
    send!(p, time 0, Seg { flags: FIN, ack: Some(LOCAL_SEQ + 1), ..send_templ() });
    recv!(p, time 0, ack_of_peer_fin(LOCAL_SEQ + 1));
    assert_eq!(p.state(), State::CloseWait);
    assert!(p.take_events().contains(&Event::PeerClosed(p.id())));
    p
}

/// LAST-ACK: CLOSE-WAIT and the application closes at 0.
#[track_caller]
fn last_ack() -> Peer {
    let mut p = close_wait();
    p.ep.close(p.id()).unwrap();
    recv!(p, time 0, Seg { flags: FIN, ..ack_of_peer_fin(LOCAL_SEQ + 1) });
    assert_eq!(p.state(), State::LastAck);
    p
}

/// `n` bytes of a recognizable pattern.
fn data(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 + 3) as u8).collect()
}

/// ESTABLISHED with 100 bytes sent by the endpoint and not yet acknowledged.
#[track_caller]
fn established_with_unacked() -> Peer {
    let mut p = established();
    p.write(&data(100));
    recv!(p, time 0, Seg { flags: PSH, payload: data(100), ..recv_templ() });
    assert_eq!(p.ep.info(p.id()).unwrap().in_flight, 100);
    p
}

fn in_flight(p: &Peer) -> u32 {
    p.ep.info(p.id()).unwrap().in_flight
}

// =====================================================================
// Opening: passive open (RFC 9293 §3.5, §3.10.7.2)
// =====================================================================

#[test]
fn listen_syn_gets_syn_ack() {
    let mut p = listen();
    send!(p, time 0, peer_syn());
    recv!(p, time 0, our_synack());
    recv_nothing!(p, time 0);
    assert_eq!(p.count(State::SynReceived), 1);
}

#[test]
fn syn_received_ack_establishes() {
    let mut p = established();
    assert_eq!(p.ep.stats().passive_opens, 1);
    let info = p.ep.info(p.id()).unwrap();
    assert_eq!(info.mss, MSS);
    assert_eq!(info.snd_wnd, 65535);
    // Data flows.
    send!(p, time 10, Seg { ack: Some(LOCAL_SEQ + 1), payload: b"hello".to_vec(), ..send_templ() });
    assert_eq!(p.read_all(), b"hello");
}

#[test]
fn syn_received_retransmitted_syn_gets_same_syn_ack() {
    let mut p = syn_received();
    send!(p, time 300, peer_syn());
    recv!(p, time 300, our_synack());
    recv_nothing!(p, time 300);
}

#[test]
fn syn_received_syn_ack_retransmission_and_give_up() {
    // RFC 6298 §5.5 backoff from the initial 1 s RTO; after
    // `synack_retries` (5) the half-open connection is dropped without a RST.
    let mut p = syn_received();
    let mut t = 0;
    for i in 0..5 {
        t += 1000 << i;
        recv_nothing!(p, time t - 1);
        recv!(p, time t, our_synack());
    }
    t += 1000 << 5;
    recv_nothing!(p, time t - 1);
    assert_eq!(p.count(State::SynReceived), 1);
    recv_nothing!(p, time t);
    assert_eq!(p.count(State::SynReceived), 0);
    assert_eq!(p.ep.connection_count(), 0);
}

#[test]
fn syn_received_unacceptable_ack_gets_rst() {
    // RFC 9293 §3.10.7.4 fifth, SYN-RECEIVED: "If the segment acknowledgment
    // is not acceptable, form a reset segment <SEQ=SEG.ACK><CTL=RST>."
    let mut p = syn_received();
    send!(p, time 10, Seg { ack: Some(LOCAL_SEQ + 5), ..send_templ() });
    recv!(p, time 10, Seg { seq: LOCAL_SEQ + 5, ack: None, flags: RST, window: 0, ..recv_templ() });
    assert_eq!(p.count(State::SynReceived), 1);
}

#[test]
fn syn_received_rst_returns_to_listen() {
    // RFC 9293 §3.10.7.4 second, SYN-RECEIVED from a passive OPEN: "return
    // this connection to LISTEN state".
    let mut p = syn_received();
    send!(p, time 10, Seg { flags: RST, ..send_templ() });
    recv_nothing!(p, time 10);
    assert_eq!(p.ep.connection_count(), 0);
    // The listener still answers.
    send!(p, time 20, peer_syn());
    p.forget_iss();
    recv!(p, time 20, our_synack());
}

#[test]
fn syn_received_rst_in_window_challenged() {
    let mut p = syn_received();
    send!(p, time 10, Seg { seq: REMOTE_SEQ + 5, flags: RST, ..send_templ() });
    recv!(p, time 10, Seg { seq: LOCAL_SEQ + 1, ..recv_templ() });
    assert_eq!(p.count(State::SynReceived), 1);
}

#[test]
fn listen_ack_gets_rst() {
    // RFC 9293 §3.10.7.2 second: "Any acknowledgment is bad if it arrives on
    // a connection still in the LISTEN state ... <SEQ=SEG.ACK><CTL=RST>".
    let mut p = listen();
    send!(p, time 0, Seg { ack: Some(LOCAL_SEQ + 1), payload: b"x".to_vec(), ..send_templ() });
    recv!(p, time 0, Seg { seq: LOCAL_SEQ + 1, ack: None, flags: RST, window: 0, ..recv_templ() });
}

#[test]
fn listen_syn_ack_gets_rst() {
    // A SYN-ACK carries an ACK: the same rule (Linux answers it with a RST too).
    let mut p = listen();
    send!(p, time 0, Seg { seq: REMOTE_SEQ, flags: SYN, ack: Some(LOCAL_SEQ + 1), options: syn_opts(), ..send_templ() });
    recv!(p, time 0, Seg { seq: LOCAL_SEQ + 1, ack: None, flags: RST, window: 0, ..recv_templ() });
    assert_eq!(p.ep.connection_count(), 0);
}

#[test]
fn listen_rst_and_bare_segments_ignored() {
    // §3.10.7.2 first: "An incoming RST segment could not be valid ... ignore".
    // fourth: "Any other control or text-bearing segment (not containing SYN)
    // must have an ACK and thus would have been discarded by the ACK processing".
    let mut p = listen();
    send!(p, time 0, Seg { flags: RST, ..send_templ() });
    send!(p, time 0, Seg { flags: RST, ack: Some(LOCAL_SEQ), ..send_templ() });
    send!(p, time 0, Seg { payload: b"data".to_vec(), ..send_templ() });
    send!(p, time 0, Seg { flags: FIN, ..send_templ() });
    recv_nothing!(p, time 0);
    assert_eq!(p.ep.connection_count(), 0);
}

#[test]
fn handshake_ack_may_carry_data() {
    let mut p = syn_received();
    send!(p, time 5, Seg { payload: b"GET /".to_vec(), ..peer_ack() });
    assert_eq!(p.take_events(), [Event::Incoming { port: LOCAL_PORT }]);
    p.conn = p.ep.accept(LOCAL_PORT);
    assert_eq!(p.read_all(), b"GET /");
    recv!(p, time 45, Seg { ack: Some(REMOTE_SEQ + 6), window: RCV_BUF as u16 - 5, ..recv_templ() });
}

#[test]
fn handshake_ack_with_fin_goes_close_wait() {
    // RFC 9293 §3.10.7.4 eighth: "SYN-RECEIVED STATE, ESTABLISHED STATE:
    // Enter the CLOSE-WAIT state."
    let mut p = syn_received();
    send!(p, time 5, Seg { flags: FIN, payload: b"q".to_vec(), ..peer_ack() });
    recv!(p, time 5, Seg { ack: Some(REMOTE_SEQ + 3), window: RCV_BUF as u16 - 2, ..recv_templ() });
    assert_eq!(p.take_events(), [Event::Incoming { port: LOCAL_PORT }]);
    p.conn = p.ep.accept(LOCAL_PORT);
    assert_eq!(p.state(), State::CloseWait);
    assert_eq!(p.read_all(), b"q");
    assert_eq!(p.ep.recv(p.id(), &mut [0u8; 4]), Ok(0));
}

#[test]
fn data_on_syn_is_not_acknowledged() {
    // Without TCP Fast Open, data on a SYN is not taken (Linux): the SYN-ACK
    // acknowledges the SYN only, and the peer sends the data again.
    let mut p = listen();
    send!(p, time 0, Seg { payload: b"early".to_vec(), ..peer_syn() });
    recv!(p, time 0, our_synack());
    send!(p, time 1, Seg { payload: b"early".to_vec(), ..peer_ack() });
    p.conn = p.ep.accept(LOCAL_PORT);
    assert_eq!(p.read_all(), b"early");
}

// =====================================================================
// Opening: active open (RFC 9293 §3.10.7.3, SYN-SENT)
// =====================================================================

#[test]
fn syn_sent_syn_ack_establishes() {
    let mut p = established_active();
    assert_eq!(p.ep.stats().active_opens, 1);
    p.write(b"abc");
    recv!(p, time 0, Seg { flags: PSH, payload: b"abc".to_vec(), ..recv_templ() });
}

#[test]
fn syn_sent_bad_ack_gets_rst() {
    // "If SEG.ACK =< ISS or SEG.ACK > SND.NXT, send a reset <SEQ=SEG.ACK><CTL=RST>".
    let mut p = syn_sent();
    for bad in [LOCAL_SEQ, LOCAL_SEQ + 2] {
        send!(p, time 5, Seg { seq: REMOTE_SEQ, flags: SYN, ack: Some(bad), options: syn_opts(), ..send_templ() });
        recv!(p, time 5, Seg { seq: bad, ack: None, flags: RST, window: 0, ..recv_templ() });
    }
    assert_eq!(p.state(), State::SynSent);
}

#[test]
fn syn_sent_rst_with_acceptable_ack_resets() {
    // "If the ACK was acceptable, then signal to the user 'error: connection reset'".
    let mut p = syn_sent();
    send!(p, time 5, Seg { seq: REMOTE_SEQ + 1, flags: RST, ack: Some(LOCAL_SEQ + 1), window: 0, ..send_templ() });
    recv_nothing!(p, time 5);
    let id = p.id();
    assert_eq!(p.take_events(), [Event::Reset(id), Event::Closed(id)]);
}

#[test]
fn syn_sent_rst_without_ack_or_with_bad_ack_ignored() {
    // "If the RST bit is set ... Otherwise (no ACK), drop the segment and
    // return"; with an unacceptable ACK "drop the segment and return" — and
    // never answer a RST with a RST.
    let mut p = syn_sent();
    send!(p, time 5, Seg { seq: REMOTE_SEQ + 1, flags: RST, ..send_templ() });
    send!(p, time 5, Seg { seq: REMOTE_SEQ + 1, flags: RST, ack: Some(LOCAL_SEQ + 9), ..send_templ() });
    recv_nothing!(p, time 5);
    assert_eq!(p.state(), State::SynSent);
    assert!(p.take_events().is_empty());
}

#[test]
fn syn_sent_ack_without_syn_dropped() {
    // An acceptable ACK without SYN: "If neither of the SYN or RST bits is
    // set, then drop the segment and return."
    let mut p = syn_sent();
    send!(p, time 5, Seg { seq: REMOTE_SEQ + 1, ack: Some(LOCAL_SEQ + 1), ..send_templ() });
    recv_nothing!(p, time 5);
    assert_eq!(p.state(), State::SynSent);
}

#[test]
fn syn_sent_retries_then_timed_out() {
    // SYN retransmitted after 1 s (RFC 6298 §2.1 initial RTO), doubling
    // (§5.5); after `syn_retries` (6, Linux's default) the open fails.
    let mut p = syn_sent();
    let mut t = 0;
    for i in 0..6 {
        t += 1000 << i;
        recv_nothing!(p, time t - 1);
        recv!(p, time t, our_syn());
    }
    // 0, 1, 3, 7, 15, 31, 63 s; give up at 127 s.
    assert_eq!(t, 63_000);
    t += 1000 << 6;
    recv_nothing!(p, time t - 1);
    assert_eq!(p.state(), State::SynSent);
    recv_nothing!(p, time t);
    let id = p.id();
    assert_eq!(p.take_events(), [Event::TimedOut(id), Event::Closed(id)]);
    assert_eq!(p.ep.connection_count(), 0);
}

#[test]
fn syn_sent_rtt_sample_from_handshake() {
    // The SYN is timed (Karn's rule allows it: it was sent once).
    let mut p = syn_sent();
    send!(p, time 100, Seg { seq: REMOTE_SEQ, flags: SYN, ack: Some(LOCAL_SEQ + 1), options: syn_opts(), ..send_templ() });
    recv!(p, time 100, recv_templ());
    let info = p.ep.info(p.id()).unwrap();
    assert_eq!(info.srtt, Some(Duration::from_millis(100)));
    // RFC 6298 §2.2: RTO = SRTT + 4 * RTTVAR = 100 + 4 * 50 ms.
    assert_eq!(info.rto, Duration::from_millis(300));
}

#[test]
fn syn_sent_retransmitted_syn_not_timed() {
    // Karn's rule (RFC 6298 §3): the SYN-ACK answering a retransmitted SYN
    // gives no sample, and the backed-off RTO is kept... until a fresh sample.
    let mut p = syn_sent();
    recv!(p, time 1000, our_syn());
    send!(p, time 1050, Seg { seq: REMOTE_SEQ, flags: SYN, ack: Some(LOCAL_SEQ + 1), options: syn_opts(), ..send_templ() });
    recv!(p, time 1050, recv_templ());
    assert_eq!(p.ep.info(p.id()).unwrap().srtt, None);
}

#[test]
fn data_queued_in_syn_sent_goes_with_the_handshake_ack() {
    let mut p = syn_sent();
    p.write(b"early");
    recv_nothing!(p, time 1);
    send!(p, time 10, Seg { seq: REMOTE_SEQ, flags: SYN, ack: Some(LOCAL_SEQ + 1), options: syn_opts(), ..send_templ() });
    recv!(p, time 10, Seg { flags: PSH, payload: b"early".to_vec(), ..recv_templ() });
    recv_nothing!(p, time 10);
}

#[test]
fn close_in_syn_sent_with_data_sends_data_then_fin() {
    // A CLOSE queued behind data in SYN-SENT: the FIN follows the data.
    let mut p = syn_sent();
    p.write(b"bye");
    p.ep.close(p.id()).unwrap();
    send!(p, time 10, Seg { seq: REMOTE_SEQ, flags: SYN, ack: Some(LOCAL_SEQ + 1), options: syn_opts(), ..send_templ() });
    recv!(p, time 10, Seg { flags: FIN | PSH, payload: b"bye".to_vec(), ..recv_templ() });
    assert_eq!(p.state(), State::FinWait1);
}

#[test]
fn abort_and_close_in_syn_sent_send_nothing() {
    // RFC 9293 §3.10.4/§3.10.5, SYN-SENT: "delete the TCB", no RST.
    let mut p = syn_sent();
    p.ep.abort(p.id()).unwrap();
    recv_nothing!(p, time 1);
    assert_eq!(p.take_events(), [Event::Closed(p.id())]);
    assert_eq!(p.ep.connection_count(), 0);
    let mut p = syn_sent();
    p.ep.close(p.id()).unwrap();
    recv_nothing!(p, time 1);
    assert_eq!(p.take_events(), [Event::Closed(p.id())]);
    assert_eq!(p.ep.connection_count(), 0);
    // A late SYN-ACK finds no connection: RST.
    send!(p, time 2, Seg { seq: REMOTE_SEQ, flags: SYN, ack: Some(LOCAL_SEQ + 1), options: syn_opts(), ..send_templ() });
    recv!(p, time 2, Seg { seq: LOCAL_SEQ + 1, ack: None, flags: RST, window: 0, ..recv_templ() });
}

#[test]
fn retransmitted_syn_ack_after_establishment_is_acked() {
    // Our handshake ACK was lost; the peer resends its SYN-ACK. It is an old
    // duplicate now: a SYN in a synchronized state, answered with a
    // (rate-limited) challenge ACK (RFC 5961 §4.2, as Linux), which is the
    // ACK the peer missed; no state change.
    let mut p = established_active();
    send!(p, time 1000, Seg { seq: REMOTE_SEQ, flags: SYN, ack: Some(LOCAL_SEQ + 1), options: syn_opts(), ..send_templ() });
    recv!(p, time 1000, recv_templ());
    assert_eq!(p.state(), State::Established);
    assert!(p.take_events().is_empty());
}

// =====================================================================
// Simultaneous open and close (RFC 9293 §3.5 figures 8 and 13)
// =====================================================================

#[test]
fn simultaneous_open() {
    // Figure 8: both sides send SYN; each answers the other's SYN with a
    // SYN-ACK <SEQ=ISS><ACK=RCV.NXT>, and the ACK completes it.
    let mut p = syn_sent();
    send!(p, time 10, peer_syn());
    recv!(p, time 10, Seg { window: 65535, options: TcpOptions { window_scale: None, ..our_syn().options }, ack: Some(REMOTE_SEQ + 1), ..our_syn() });
    assert_eq!(p.state(), State::SynReceived);
    send!(p, time 20, peer_ack());
    recv_nothing!(p, time 20);
    assert_eq!(p.state(), State::Established);
    assert_eq!(p.take_events(), [Event::Connected(p.id())]);
}

#[test]
fn simultaneous_open_crossing_syn_acks() {
    // Figure 8, line 6: the peer's SYN-ACK <SEQ=ISS'><ACK=ISS+1> arrives in
    // SYN-RECEIVED. Its SYN lies just before RCV.NXT; Linux accepts such a
    // segment (tcp_validate_incoming) and completes the open on its ACK.
    let mut p = syn_sent();
    send!(p, time 10, peer_syn());
    recv!(p, time 10, Seg { options: TcpOptions { window_scale: None, ..our_syn().options }, ack: Some(REMOTE_SEQ + 1), ..our_syn() });
    send!(p, time 20, Seg { seq: REMOTE_SEQ, flags: SYN, ack: Some(LOCAL_SEQ + 1), options: syn_opts(), ..send_templ() });
    // Both SYNs are acknowledged already: nothing to send (as Linux).
    recv_nothing!(p, time 20);
    assert_eq!(p.state(), State::Established);
    assert_eq!(p.take_events(), [Event::Connected(p.id())]);
    // A second copy of that SYN-ACK is now an old duplicate: an ACK, no
    // state change.
    send!(p, time 30, Seg { seq: REMOTE_SEQ, flags: SYN, ack: Some(LOCAL_SEQ + 1), options: syn_opts(), ..send_templ() });
    recv!(p, time 30, recv_templ());
    assert_eq!(p.state(), State::Established);
}

#[test]
fn rst_in_active_syn_received_refuses() {
    // RFC 9293 §3.10.7.4 second, SYN-RECEIVED: "If this connection was
    // initiated with an active OPEN ... the connection was refused".
    let mut p = syn_sent();
    send!(p, time 10, peer_syn());
    assert!(p.poll(ms(10)).is_some());
    send!(p, time 20, Seg { flags: RST, ..send_templ() });
    recv_nothing!(p, time 20);
    let id = p.id();
    assert_eq!(p.take_events(), [Event::Reset(id), Event::Closed(id)]);
    assert_eq!(p.ep.connection_count(), 0);
}

#[test]
fn simultaneous_close() {
    // Figure 13: both FINs cross; each side goes FIN-WAIT-1 -> CLOSING ->
    // TIME-WAIT.
    let mut p = closing();
    send!(p, time 10, Seg { ack: Some(LOCAL_SEQ + 2), seq: REMOTE_SEQ + 2, ..send_templ() });
    recv_nothing!(p, time 10);
    assert_eq!(p.count(State::TimeWait), 1);
}

#[test]
fn closing_fin_retransmitted() {
    // In CLOSING our FIN is still unacknowledged: it is retransmitted at RTO.
    let mut p = closing();
    recv_nothing!(p, time 199);
    recv!(p, time 200, Seg { flags: FIN, ..ack_of_peer_fin(LOCAL_SEQ + 1) });
}

// =====================================================================
// Closing: half-close, FIN-WAIT, CLOSE-WAIT, LAST-ACK (RFC 9293 §3.6, §3.10.4)
// =====================================================================

#[test]
fn fin_wait_1_ack_of_fin_goes_fin_wait_2() {
    let p = fin_wait_2();
    assert_eq!(p.state(), State::FinWait2);
}

#[test]
fn fin_wait_1_fin_retransmitted_with_backoff() {
    let mut p = fin_wait_1();
    recv_nothing!(p, time 199);
    recv!(p, time 200, Seg { flags: FIN, ..recv_templ() });
    recv_nothing!(p, time 599);
    recv!(p, time 600, Seg { flags: FIN, ..recv_templ() });
}

#[test]
fn fin_wait_1_fin_and_ack_together_go_time_wait() {
    // "FIN-WAIT-1: If our FIN has been ACKed (perhaps in this segment), then
    // enter TIME-WAIT".
    let mut p = fin_wait_1();
    send!(p, time 5, Seg { flags: FIN, ack: Some(LOCAL_SEQ + 2), ..send_templ() });
    recv!(p, time 5, ack_of_peer_fin(LOCAL_SEQ + 2));
    assert_eq!(p.count(State::TimeWait), 1);
}

#[test]
fn fin_wait_2_still_receives() {
    // Half-close: after our FIN the peer may go on sending.
    let mut p = fin_wait_2();
    send!(p, time 5, Seg { ack: Some(LOCAL_SEQ + 2), payload: b"more".to_vec(), ..send_templ() });
    assert_eq!(p.read_all(), b"more");
    recv!(p, time 45, Seg { seq: LOCAL_SEQ + 2, ack: Some(REMOTE_SEQ + 5), window: RCV_BUF as u16 - 4, ..recv_templ() });
}

#[test]
fn close_wait_can_send_then_last_ack() {
    // RFC 9293 §3.6 case 1, the passive closer: CLOSE-WAIT -> LAST-ACK -> CLOSED.
    let mut p = close_wait();
    assert_eq!(p.read_all(), b"");
    assert_eq!(p.ep.recv(p.id(), &mut [0u8; 8]), Ok(0), "end of stream");
    p.write(b"bye");
    recv!(p, time 1, Seg { flags: PSH, payload: b"bye".to_vec(), ..ack_of_peer_fin(LOCAL_SEQ + 1) });
    send!(p, time 2, Seg { seq: REMOTE_SEQ + 2, ack: Some(LOCAL_SEQ + 4), ..send_templ() });
    p.ep.close(p.id()).unwrap();
    recv!(p, time 3, Seg { flags: FIN, ..ack_of_peer_fin(LOCAL_SEQ + 4) });
    assert_eq!(p.state(), State::LastAck);
    send!(p, time 4, Seg { seq: REMOTE_SEQ + 2, ack: Some(LOCAL_SEQ + 5), ..send_templ() });
    recv_nothing!(p, time 4);
    assert_eq!(p.take_events(), [Event::Closed(p.id())]);
    assert_eq!(p.ep.connection_count(), 0);
}

#[test]
fn close_wait_retransmitted_fin_reacked() {
    let mut p = close_wait();
    send!(p, time 100, Seg { flags: FIN, ack: Some(LOCAL_SEQ + 1), ..send_templ() });
    recv!(p, time 100, ack_of_peer_fin(LOCAL_SEQ + 1));
}

#[test]
fn last_ack_fin_retransmitted_then_closed() {
    let mut p = last_ack();
    recv_nothing!(p, time 199);
    recv!(p, time 200, Seg { flags: FIN, ..ack_of_peer_fin(LOCAL_SEQ + 1) });
    send!(p, time 250, Seg { seq: REMOTE_SEQ + 2, ack: Some(LOCAL_SEQ + 2), ..send_templ() });
    assert_eq!(p.ep.connection_count(), 0);
    recv_nothing!(p, time 250);
}

#[test]
fn fin_with_data_acked_together() {
    let mut p = established();
    send!(p, time 5, Seg { flags: FIN, ack: Some(LOCAL_SEQ + 1), payload: b"last".to_vec(), ..send_templ() });
    recv!(p, time 5, Seg { ack: Some(REMOTE_SEQ + 6), window: RCV_BUF as u16 - 5, ..recv_templ() });
    assert_eq!(p.read_all(), b"last");
    assert_eq!(p.state(), State::CloseWait);
}

#[test]
fn active_close_full_sequence() {
    // RFC 9293 §3.6 case 1 from the active closer: FIN-WAIT-1 -> FIN-WAIT-2
    // -> TIME-WAIT -> CLOSED after 2 MSL, on an active open.
    let mut p = established_active();
    p.ep.close(p.id()).unwrap();
    recv!(p, time 1, Seg { flags: FIN, ..recv_templ() });
    send!(p, time 2, Seg { ack: Some(LOCAL_SEQ + 2), ..send_templ() });
    assert_eq!(p.state(), State::FinWait2);
    send!(p, time 3, Seg { flags: FIN, ack: Some(LOCAL_SEQ + 2), ..send_templ() });
    recv!(p, time 3, ack_of_peer_fin(LOCAL_SEQ + 2));
    let id = p.id();
    assert!(p.take_events().contains(&Event::Closed(id)));
    assert_eq!(p.count(State::TimeWait), 1);
    recv_nothing!(p, time 60_003);
    assert_eq!(p.ep.connection_count(), 0);
    // The port is free again (the test configuration has one ephemeral port).
    assert!(p
        .ep
        .connect(ms(60_004), LOCAL_ADDR.into(), p.remote())
        .is_ok());
}

#[test]
fn fin_rides_with_retransmitted_data() {
    let mut p = established();
    p.write(&data(100));
    p.ep.close(p.id()).unwrap();
    let last = Seg {
        flags: FIN | PSH,
        payload: data(100),
        ..recv_templ()
    };
    recv!(p, time 0, last.clone());
    recv_nothing!(p, time 199);
    recv!(p, time 200, last);
    // The data is acknowledged, the FIN is not: the FIN alone is resent.
    send!(p, time 250, Seg { ack: Some(LOCAL_SEQ + 101), ..send_templ() });
    recv_nothing!(p, time 250);
    assert_eq!(p.state(), State::FinWait1);
    recv_nothing!(p, time 449);
    recv!(p, time 450, Seg { seq: LOCAL_SEQ + 101, flags: FIN, ..recv_templ() });
}

#[test]
fn fin_waits_behind_data_blocked_by_zero_window() {
    let mut p = established();
    send!(p, time 0, Seg { ack: Some(LOCAL_SEQ + 1), window: 0, ..send_templ() });
    p.write(&data(10));
    p.ep.close(p.id()).unwrap();
    recv_nothing!(p, time 0);
    recv!(p, time 200, Seg { payload: data(1), ..recv_templ() });
    send!(p, time 210, Seg { ack: Some(LOCAL_SEQ + 1), ..send_templ() });
    recv!(p, time 210, Seg { flags: FIN | PSH, payload: data(10), ..recv_templ() });
    send!(p, time 220, Seg { ack: Some(LOCAL_SEQ + 12), ..send_templ() });
    assert_eq!(p.state(), State::FinWait2);
}

#[test]
fn send_after_close_is_refused() {
    let mut p = fin_wait_1();
    assert_eq!(p.ep.send(p.id(), b"x"), Err(tcp::Error::InvalidState));
}

#[test]
fn abort_per_state() {
    // RFC 9293 §3.10.5 ABORT: a RST <SEQ=SND.NXT> in ESTABLISHED, FIN-WAIT-1,
    // FIN-WAIT-2 and CLOSE-WAIT; in CLOSING and LAST-ACK just delete the TCB.
    type Fixture = fn() -> Peer;
    /// The expected RST's (SEQ, ACK), or `None` when ABORT sends nothing.
    type ExpectedRst = Option<(SeqNum, SeqNum)>;
    let cases: [(&str, Fixture, ExpectedRst); 5] = [
        (
            "FIN-WAIT-1",
            fin_wait_1,
            Some((LOCAL_SEQ + 2, REMOTE_SEQ + 1)),
        ),
        (
            "FIN-WAIT-2",
            fin_wait_2,
            Some((LOCAL_SEQ + 2, REMOTE_SEQ + 1)),
        ),
        (
            "CLOSE-WAIT",
            close_wait,
            Some((LOCAL_SEQ + 1, REMOTE_SEQ + 2)),
        ),
        ("CLOSING", closing, None),
        ("LAST-ACK", last_ack, None),
    ];
    for (name, fixture, rst) in cases {
        let mut p = fixture();
        p.take_events();
        p.ep.abort(p.id()).unwrap();
        match rst {
            Some((seq, ack)) => {
                let s = p.poll(ms(5)).unwrap_or_else(|| panic!("{name}: no RST"));
                assert_eq!((s.flags, s.seq, s.ack), (RST, seq, Some(ack)), "{name}");
            }
            None => assert!(p.poll(ms(5)).is_none(), "{name}: RST sent"),
        }
        assert_eq!(p.ep.connection_count(), 0, "{name}");
        assert_eq!(p.take_events(), [Event::Closed(p.id())], "{name}");
    }
}

// =====================================================================
// TIME-WAIT (RFC 9293 §3.6, §3.10.7.4; reuse as RFC 6191 and Linux)
// =====================================================================

#[test]
fn time_wait_expires_after_2msl() {
    // RFC 9293 §3.10.8: "If the time-wait timeout expires on a connection
    // delete the TCB"; 2 MSL = Config::time_wait, 60 s as Linux.
    let mut p = time_wait();
    recv_nothing!(p, time 59_999);
    assert_eq!(p.count(State::TimeWait), 1);
    recv_nothing!(p, time 60_000);
    assert_eq!(p.ep.connection_count(), 0);
}

#[test]
fn time_wait_retransmitted_fin_reacked_and_timer_restarted() {
    // "The only thing that can arrive in this state is a retransmission of
    // the remote FIN. Acknowledge it, and restart the 2 MSL timeout."
    let mut p = time_wait();
    send!(p, time 30_000, Seg { flags: FIN, ack: Some(LOCAL_SEQ + 2), ..send_templ() });
    recv!(p, time 30_000, ack_of_peer_fin(LOCAL_SEQ + 2));
    recv_nothing!(p, time 60_000);
    assert_eq!(p.count(State::TimeWait), 1);
    recv_nothing!(p, time 89_999);
    assert_eq!(p.count(State::TimeWait), 1);
    recv_nothing!(p, time 90_000);
    assert_eq!(p.ep.connection_count(), 0);
}

#[test]
fn time_wait_new_syn_with_higher_seq_reuses_tuple() {
    // Linux (and RFC 9293 §3.10.7.4's TIME-WAIT note, RFC 6191): a SYN with
    // a sequence number beyond RCV.NXT starts a new connection at once.
    let mut p = time_wait();
    let new_isn = REMOTE_SEQ + 100_000;
    p.forget_iss();
    send!(p, time 1000, Seg { seq: new_isn, ..peer_syn() });
    recv!(p, time 1000, Seg { ack: Some(new_isn + 1), ..our_synack() });
    assert_eq!(p.count(State::TimeWait), 0);
    assert_eq!(p.count(State::SynReceived), 1);
    send!(p, time 1001, Seg { seq: new_isn + 1, ..peer_ack() });
    assert_eq!(p.take_events(), [Event::Incoming { port: LOCAL_PORT }]);
    assert!(p.ep.accept(LOCAL_PORT).is_some());
}

#[test]
fn time_wait_old_syn_gets_ack() {
    // A SYN at or below RCV.NXT is an old duplicate: it cannot reopen the
    // connection and draws a (rate-limited) challenge ACK (RFC 5961 §4.2;
    // Linux: TCP_TW_ACK, rate-limited by tcp_timewait_check_oow_rate_limit);
    // TIME-WAIT stays.
    let mut p = time_wait();
    send!(p, time 1000, peer_syn());
    recv!(p, time 1000, ack_of_peer_fin(LOCAL_SEQ + 2));
    assert_eq!(p.count(State::TimeWait), 1);
}

#[test]
fn time_wait_rst_closes() {
    // RST with SEG.SEQ = RCV.NXT in TIME-WAIT: "enter the CLOSED state,
    // delete the TCB" (Linux does the same with tcp_rfc1337 = 0, its default).
    let mut p = time_wait();
    send!(p, time 1000, Seg { seq: REMOTE_SEQ + 2, flags: RST, ..send_templ() });
    recv_nothing!(p, time 1000);
    assert_eq!(p.ep.connection_count(), 0);
}

#[test]
fn time_wait_blocks_reuse_by_connect() {
    // While the 4-tuple is in TIME-WAIT, connect picks another port (and
    // with the single test port there is none).
    let mut p = established_active();
    p.ep.close(p.id()).unwrap();
    recv!(p, time 1, Seg { flags: FIN, ..recv_templ() });
    send!(p, time 2, Seg { flags: FIN, ack: Some(LOCAL_SEQ + 2), ..send_templ() });
    recv!(p, time 2, ack_of_peer_fin(LOCAL_SEQ + 2));
    assert_eq!(p.count(State::TimeWait), 1);
    assert_eq!(
        p.ep.connect(ms(3), LOCAL_ADDR.into(), p.remote()),
        Err(tcp::Error::NoPortsAvailable)
    );
}

#[test]
fn time_wait_reused_by_syn_with_newer_timestamp() {
    // RFC 6191 (and Linux): with timestamps, a SYN whose TSval is newer
    // than TS.Recent may reopen a TIME-WAIT 4-tuple even with a lower ISN;
    // with an older TSval it may not.
    let ts = |v, e| TcpOptions {
        timestamps: Some((v, e)),
        ..Default::default()
    };
    let mut p = established_ts();
    p.ep.close(p.id()).unwrap();
    recv!(p, time 10, Seg { flags: FIN, options: ts(10, 1001), ..recv_templ() });
    send!(p, time 11, Seg { flags: FIN, ack: Some(LOCAL_SEQ + 2), options: ts(1005, 10), ..send_templ() });
    recv!(p, time 11, Seg { seq: LOCAL_SEQ + 2, ack: Some(REMOTE_SEQ + 2), window: RCV_BUF as u16 - 1, options: ts(11, 1005), ..recv_templ() });
    assert_eq!(p.count(State::TimeWait), 1);
    let old_isn = REMOTE_SEQ - 50_000;
    let syn = |tsval| Seg {
        seq: old_isn,
        options: TcpOptions {
            timestamps: Some((tsval, 0)),
            ..syn_opts()
        },
        ..peer_syn()
    };
    // Older TSval and lower ISN: an old duplicate, answered with an ACK.
    send!(p, time 100, syn(1000));
    let ack = p.poll(ms(100)).expect("ACK");
    assert_eq!(ack.flags, NONE);
    assert_eq!(p.count(State::TimeWait), 1);
    // Newer TSval: a new connection.
    p.forget_iss();
    send!(p, time 200, syn(2000));
    let synack = p.poll(ms(200)).expect("SYN-ACK");
    assert_eq!(synack.flags, SYN);
    assert_eq!(synack.ack, Some(old_isn + 1));
    assert_eq!(p.count(State::TimeWait), 0);
    assert_eq!(p.count(State::SynReceived), 1);
}

#[test]
fn time_wait_syn_with_higher_seq_but_older_timestamp_is_not_reused() {
    // RFC 6191 §2 / Linux: reuse requires the SYN to pass PAWS first; a
    // higher sequence number does not excuse an older TSval. The SYN is an
    // old duplicate: it draws an ACK and TIME-WAIT stays.
    let ts = |v, e| TcpOptions {
        timestamps: Some((v, e)),
        ..Default::default()
    };
    let mut p = established_ts();
    p.ep.close(p.id()).unwrap();
    recv!(p, time 10, Seg { flags: FIN, options: ts(10, 1001), ..recv_templ() });
    send!(p, time 11, Seg { flags: FIN, ack: Some(LOCAL_SEQ + 2), options: ts(1005, 10), ..send_templ() });
    recv!(p, time 11, Seg { seq: LOCAL_SEQ + 2, ack: Some(REMOTE_SEQ + 2), window: RCV_BUF as u16 - 1, options: ts(11, 1005), ..recv_templ() });
    assert_eq!(p.count(State::TimeWait), 1);
    let syn = |tsval| Seg {
        seq: REMOTE_SEQ + 100_000,
        options: TcpOptions {
            timestamps: Some((tsval, 0)),
            ..syn_opts()
        },
        ..peer_syn()
    };
    send!(p, time 100, syn(1000));
    recv!(p, time 100, Seg { seq: LOCAL_SEQ + 2, ack: Some(REMOTE_SEQ + 2), window: RCV_BUF as u16 - 1, options: ts(100, 1005), ..recv_templ() });
    assert_eq!(p.count(State::TimeWait), 1);
    assert_eq!(p.count(State::SynReceived), 0);
    assert_eq!(p.ep.stats().drops.paws, 1);
    // The same SYN with a current TSval reuses the 4-tuple.
    p.forget_iss();
    send!(p, time 200, syn(1005));
    let synack = p.poll(ms(200)).expect("SYN-ACK");
    assert_eq!(synack.flags, SYN);
    assert_eq!(p.count(State::TimeWait), 0);
}

#[test]
fn time_wait_syn_without_a_listener_gets_ack_and_keeps_time_wait() {
    // RFC 9293 §3.10.7.4: in TIME-WAIT a SYN is answered with an ACK unless
    // it reopens the connection, and without a listener nothing can take
    // it: Linux (TCP_TW_SYN falls through to TCP_TW_ACK) keeps TIME-WAIT
    // and ACKs; it neither sends a RST nor drops the entry.
    let mut p = time_wait();
    p.ep.unlisten(LOCAL_PORT);
    send!(p, time 1000, Seg { seq: REMOTE_SEQ + 100_000, ..peer_syn() });
    recv!(p, time 1000, ack_of_peer_fin(LOCAL_SEQ + 2));
    recv_nothing!(p, time 1000);
    assert_eq!(p.count(State::TimeWait), 1);
    assert_eq!(p.ep.stats().rst_out, 0);
    // The entry still ends after 2 MSL from the FIN.
    recv_nothing!(p, time 60_000);
    assert_eq!(p.ep.connection_count(), 0);
}

#[test]
fn time_wait_syns_without_a_listener_draw_rate_limited_acks() {
    // The ACK a TIME-WAIT entry sends for a SYN that no listener can take
    // is a challenge ACK (RFC 5961 §4.2), held to the limits of §7: a flood
    // of spoofed SYNs on the 4-tuple draws one per 500 ms, not one each.
    let mut p = time_wait();
    p.ep.unlisten(LOCAL_PORT);
    let syn = |seq| Seg { seq, ..peer_syn() };
    send!(p, time 1000, syn(REMOTE_SEQ + 100_000));
    recv!(p, time 1000, ack_of_peer_fin(LOCAL_SEQ + 2));
    send!(p, time 1010, syn(REMOTE_SEQ + 200_000));
    recv_nothing!(p, time 1010);
    send!(p, time 1499, syn(REMOTE_SEQ + 300_000));
    recv_nothing!(p, time 1499);
    assert_eq!(p.ep.stats().challenge_acks, 1);
    assert_eq!(p.ep.stats().challenge_acks_suppressed, 2);
    send!(p, time 1500, syn(REMOTE_SEQ + 400_000));
    recv!(p, time 1500, ack_of_peer_fin(LOCAL_SEQ + 2));
    assert_eq!(p.count(State::TimeWait), 1);
    assert_eq!(p.ep.stats().rst_out, 0);
}

#[test]
fn time_wait_reuse_before_the_application_saw_closed() {
    // The new connection must not be confused with the old one whose
    // `Closed` event the application has not read yet.
    let mut p = fin_wait_2();
    let old = p.id();
    let fin = p.build(&Seg {
        flags: FIN,
        ack: Some(LOCAL_SEQ + 2),
        ..send_templ()
    });
    p.ep.handle(ms(1), &fin); // no event drained
    let mut buf = vec![0u8; 2000];
    assert!(p.ep.poll_transmit(ms(1), &mut buf).is_some(), "ACK of FIN");
    assert_eq!(p.count(State::TimeWait), 1);
    p.forget_iss();
    let new_isn = REMOTE_SEQ + 1_000_000;
    let syn = p.build(&Seg {
        seq: new_isn,
        ..peer_syn()
    });
    p.ep.handle(ms(2), &syn);
    let synack = p.poll(ms(2)).expect("SYN-ACK for the new connection");
    assert_eq!(synack.ack, Some(new_isn + 1));
    // The application now reads its events: the old connection is closed...
    let ev = p.take_events();
    assert!(ev.contains(&Event::Closed(old)), "{ev:?}");
    assert_eq!(p.ep.state(old), Err(tcp::Error::InvalidHandle));
    // ...and the new one completes and works.
    send!(p, time 3, Seg { seq: new_isn + 1, ..peer_ack() });
    assert_eq!(p.take_events(), [Event::Incoming { port: LOCAL_PORT }]);
    let new = p.ep.accept(LOCAL_PORT).unwrap();
    assert_ne!(new, old);
    p.conn = Some(new);
    send!(p, time 4, Seg { seq: new_isn + 1, ack: Some(LOCAL_SEQ + 1), payload: b"again".to_vec(), ..send_templ() });
    assert_eq!(p.read_all(), b"again");
    recv!(p, time 44, Seg { ack: Some(new_isn + 6), window: RCV_BUF as u16 - 5, ..recv_templ() });
    // The old TIME-WAIT timer firing later disturbs nothing.
    recv_nothing!(p, time 61_000);
    assert_eq!(p.state(), State::Established);
    assert_eq!(p.ep.connection_count(), 1);
}

// =====================================================================
// Segment acceptability: RFC 9293 §3.10.7.4 "first, check sequence number"
//
//   Segment Length  Receive Window  Test
//   0               0               SEG.SEQ = RCV.NXT
//   0               >0              RCV.NXT =< SEG.SEQ < RCV.NXT+RCV.WND
//   >0              0               not acceptable
//   >0              >0              RCV.NXT =< SEG.SEQ < RCV.NXT+RCV.WND
//                                or RCV.NXT =< SEG.SEQ+SEG.LEN-1 < RCV.NXT+RCV.WND
//
// Acceptance is observed through the segment's ACK field (it acknowledges
// data the endpoint sent) or its data; rejection through the ACK the
// endpoint answers with and the ACK field being ignored.
// =====================================================================

/// ESTABLISHED with a small (1024-byte) receive buffer filled by the peer,
/// so RCV.WND = 0, and 100 bytes of ours unacknowledged.
#[track_caller]
fn zero_rcv_window() -> Peer {
    let cfg = Config {
        recv_buffer: 1024,
        ..test_config()
    };
    let mut p = established_with(cfg);
    // The SYN-ACK offered 1024; fill it.
    p.write(&data(100));
    recv!(p, time 0, Seg { flags: PSH, payload: data(100), window: 1024, ..recv_templ() });
    send!(p, time 1, Seg { ack: Some(LOCAL_SEQ + 1), payload: data(1024), ..send_templ() });
    recv!(p, time 41, Seg { seq: LOCAL_SEQ + 101, ack: Some(REMOTE_SEQ + 1025), window: 0, ..recv_templ() });
    assert_eq!(p.ep.info(p.id()).unwrap().rcv_wnd, 0);
    p
}

#[test]
fn accept_len0_wnd0_seq_eq_rcv_nxt() {
    // 0 / 0: SEG.SEQ = RCV.NXT is acceptable: its ACK is processed.
    let mut p = zero_rcv_window();
    send!(p, time 50, Seg { seq: REMOTE_SEQ + 1025, ack: Some(LOCAL_SEQ + 101), ..send_templ() });
    recv_nothing!(p, time 50);
    assert_eq!(in_flight(&p), 0);
}

#[test]
fn reject_len0_wnd0_seq_ne_rcv_nxt() {
    // 0 / 0: any other SEG.SEQ is not acceptable: ACK in reply, ACK field ignored.
    let mut p = zero_rcv_window();
    send!(p, time 50, Seg { seq: REMOTE_SEQ + 1026, ack: Some(LOCAL_SEQ + 101), ..send_templ() });
    recv!(p, time 50, Seg { seq: LOCAL_SEQ + 101, ack: Some(REMOTE_SEQ + 1025), window: 0, ..recv_templ() });
    assert_eq!(in_flight(&p), 100);
}

#[test]
fn reject_len_gt0_wnd0() {
    // >0 / 0: not acceptable. The ACK is sent; the data is not delivered. A
    // segment exactly at RCV.NXT still has its ACK field processed (RFC 9293:
    // "special allowance should be made to accept valid ACKs"; Linux too).
    let mut p = zero_rcv_window();
    send!(p, time 50, Seg { seq: REMOTE_SEQ + 1025, ack: Some(LOCAL_SEQ + 101), payload: b"x".to_vec(), ..send_templ() });
    recv!(p, time 50, Seg { seq: LOCAL_SEQ + 101, ack: Some(REMOTE_SEQ + 1025), window: 0, ..recv_templ() });
    assert_eq!(in_flight(&p), 0);
    assert_eq!(p.read_all().len(), 1024);
    // Beyond RCV.NXT: nothing processed at all.
    let mut p = zero_rcv_window();
    send!(p, time 50, Seg { seq: REMOTE_SEQ + 1026, ack: Some(LOCAL_SEQ + 101), payload: b"x".to_vec(), ..send_templ() });
    recv!(p, time 50, Seg { seq: LOCAL_SEQ + 101, ack: Some(REMOTE_SEQ + 1025), window: 0, ..recv_templ() });
    assert_eq!(in_flight(&p), 100);
}

#[test]
fn accept_len0_wnd_gt0_in_window() {
    // 0 / >0: RCV.NXT =< SEG.SEQ < RCV.NXT+RCV.WND, at both edges.
    for off in [0u32, 1000, 65534] {
        let mut p = established_with_unacked();
        send!(p, time 10, Seg { seq: REMOTE_SEQ + 1 + off, ack: Some(LOCAL_SEQ + 101), ..send_templ() });
        recv_nothing!(p, time 10);
        assert_eq!(in_flight(&p), 0, "offset {off}");
    }
}

#[test]
fn reject_len0_wnd_gt0_outside_window() {
    // 0 / >0: below RCV.NXT or at RCV.NXT+RCV.WND: not acceptable.
    for seq in [REMOTE_SEQ, REMOTE_SEQ + 1 + 65535] {
        let mut p = established_with_unacked();
        send!(p, time 10, Seg { seq, ack: Some(LOCAL_SEQ + 101), ..send_templ() });
        recv!(p, time 10, Seg { seq: LOCAL_SEQ + 101, ..recv_templ() });
        assert_eq!(in_flight(&p), 100);
    }
}

#[test]
fn reject_len0_outside_window_ack_rate_limited() {
    // As Linux (tcp_invalid_ratelimit, 500 ms): a stream of out-of-window
    // pure ACKs draws at most one ACK per 500 ms, so two stacks can never
    // ping-pong.
    // The first one is answered however young the endpoint is.
    let mut p = established();
    let old = Seg {
        seq: REMOTE_SEQ,
        ack: Some(LOCAL_SEQ + 1),
        ..send_templ()
    };
    send!(p, time 10, old.clone());
    recv!(p, time 10, recv_templ());
    send!(p, time 20, old.clone());
    recv_nothing!(p, time 20);
    send!(p, time 509, old.clone());
    recv_nothing!(p, time 509);
    send!(p, time 510, old.clone());
    recv!(p, time 510, recv_templ());
    // A segment with data is always answered.
    send!(p, time 511, Seg { seq: REMOTE_SEQ - 10, payload: b"old".to_vec(), ..old });
    recv!(p, time 511, recv_templ());
}

#[test]
fn accept_len_gt0_wnd_gt0_start_in_window() {
    // >0 / >0, first test: the segment starts in the window.
    let mut p = established();
    send!(p, time 10, Seg { ack: Some(LOCAL_SEQ + 1), payload: b"abcd".to_vec(), ..send_templ() });
    assert_eq!(p.read_all(), b"abcd");
}

#[test]
fn accept_len_gt0_wnd_gt0_end_in_window() {
    // >0 / >0, second test: starts before RCV.NXT, ends inside the window;
    // the old part is trimmed, the new part delivered.
    let mut p = established();
    send!(p, time 10, Seg { ack: Some(LOCAL_SEQ + 1), payload: b"abcd".to_vec(), ..send_templ() });
    send!(p, time 20, Seg { seq: REMOTE_SEQ + 3, ack: Some(LOCAL_SEQ + 1), payload: b"cdef".to_vec(), ..send_templ() });
    assert_eq!(p.read_all(), b"abcdef");
}

#[test]
fn reject_len_gt0_wnd_gt0_old_duplicate() {
    // >0 / >0: entirely below RCV.NXT: a duplicate, answered at once.
    let mut p = established();
    send!(p, time 10, Seg { ack: Some(LOCAL_SEQ + 1), payload: b"abcd".to_vec(), ..send_templ() });
    send!(p, time 20, Seg { ack: Some(LOCAL_SEQ + 1), payload: b"abcd".to_vec(), ..send_templ() });
    // RFC 2883 §4: the duplicate is reported in a D-SACK block.
    let dsack = TcpOptions {
        sack: sack(&[(REMOTE_SEQ + 1, REMOTE_SEQ + 5)]),
        ..Default::default()
    };
    recv!(p, time 20, Seg { ack: Some(REMOTE_SEQ + 5), window: RCV_BUF as u16 - 4, options: dsack, ..recv_templ() });
    assert_eq!(p.read_all(), b"abcd");
    // Reported once: the next ACK carries no SACK option.
    send!(p, time 30, Seg { seq: REMOTE_SEQ + 5, ack: Some(LOCAL_SEQ + 1), payload: b"e".to_vec(), ..send_templ() });
    // (The edge moved by less than an MSS when "abcd" was read: receiver
    // SWS avoidance keeps it where it was.)
    recv!(p, time 70, Seg { ack: Some(REMOTE_SEQ + 6), window: RCV_BUF as u16 - 5, ..recv_templ() });
}

#[test]
fn partial_duplicate_reported_in_a_dsack_block() {
    // RFC 2883 §4: a segment that starts before RCV.NXT delivers its new
    // part, and the ACK reports the old part as the first SACK block.
    let mut p = established();
    send!(p, time 10, Seg { ack: Some(LOCAL_SEQ + 1), payload: b"abcd".to_vec(), ..send_templ() });
    send!(p, time 20, Seg { seq: REMOTE_SEQ + 3, ack: Some(LOCAL_SEQ + 1), payload: b"cdef".to_vec(), ..send_templ() });
    let dsack = TcpOptions {
        sack: sack(&[(REMOTE_SEQ + 3, REMOTE_SEQ + 5)]),
        ..Default::default()
    };
    recv!(p, time 20, Seg { ack: Some(REMOTE_SEQ + 7), window: RCV_BUF as u16 - 6, options: dsack, ..recv_templ() });
    assert_eq!(p.read_all(), b"abcdef");
}

#[test]
fn reject_len_gt0_wnd_gt0_beyond_window() {
    // >0 / >0: starting at RCV.NXT+RCV.WND: not acceptable; ACK, data dropped.
    let mut p = established();
    send!(p, time 10, Seg { seq: REMOTE_SEQ + 1 + 65535, ack: Some(LOCAL_SEQ + 1), payload: b"zz".to_vec(), ..send_templ() });
    recv!(p, time 10, recv_templ());
    assert_eq!(p.read_all(), b"");
    assert_eq!(p.ep.stats().drops.unacceptable, 1);
}

#[test]
fn data_beyond_window_trimmed() {
    // RFC 9293 §3.10.7.4 seventh: a segment that starts in the window and
    // runs past it keeps only what fits ("trimmed to the window"); the ACK
    // goes out at once.
    let cfg = Config {
        recv_buffer: 1024,
        ..test_config()
    };
    let mut p = established_with(cfg);
    send!(p, time 10, Seg { ack: Some(LOCAL_SEQ + 1), payload: data(1000), ..send_templ() });
    send!(p, time 11, Seg { seq: REMOTE_SEQ + 1001, ack: Some(LOCAL_SEQ + 1), payload: data(100), ..send_templ() });
    recv!(p, time 11, Seg { ack: Some(REMOTE_SEQ + 1025), window: 0, ..recv_templ() });
    let got = p.read_all();
    assert_eq!(got.len(), 1024);
    assert_eq!(&got[1000..], &data(100)[..24]);
}

#[test]
fn bare_fin_into_zero_window_is_taken() {
    // The peer closes while our buffer is full. RFC 9293 would answer the
    // unacceptable FIN with an ACK; Linux (tcp_data_queue) takes a bare FIN
    // even into a zero window, since it needs no buffer. We do as Linux.
    let mut p = zero_rcv_window();
    send!(p, time 50, Seg { seq: REMOTE_SEQ + 1025, flags: FIN, ack: Some(LOCAL_SEQ + 101), ..send_templ() });
    recv!(p, time 50, Seg { seq: LOCAL_SEQ + 101, ack: Some(REMOTE_SEQ + 1026), window: 0, ..recv_templ() });
    assert_eq!(p.state(), State::CloseWait);
    assert_eq!(p.read_all().len(), 1024);
    assert_eq!(p.ep.recv(p.id(), &mut [0u8; 4]), Ok(0));
}

#[test]
fn window_stays_closed_after_a_bare_fin_into_a_zero_window() {
    // The FIN moves RCV.NXT one past the edge we advertised. The acceptance
    // window is then zero, not RCV.ADV - RCV.NXT wrapped around (~1 GiB):
    // an ACK 100 000 bytes ahead, or a RST there, is not acceptable.
    // (Segments arriving together, before our ACK of the FIN goes out.)
    let mut p = zero_rcv_window();
    let far = REMOTE_SEQ + 1026 + 100_000;
    send!(p, time 50, Seg { seq: REMOTE_SEQ + 1025, flags: FIN, ack: Some(LOCAL_SEQ + 1), ..send_templ() });
    assert_eq!(p.state(), State::CloseWait);
    send!(p, time 50, Seg { seq: far, flags: RST, ..send_templ() });
    send!(p, time 50, Seg { seq: far, ack: Some(LOCAL_SEQ + 101), ..send_templ() });
    recv!(p, time 50, Seg { seq: LOCAL_SEQ + 101, ack: Some(REMOTE_SEQ + 1026), window: 0, ..recv_templ() });
    recv_nothing!(p, time 50);
    assert_eq!(in_flight(&p), 100, "the out-of-window ACK was ignored");
    assert_eq!(
        p.ep.stats().challenge_acks,
        0,
        "the far RST was not in the window"
    );
    assert_eq!(p.ep.stats().drops.unacceptable, 1);
    assert_eq!(p.state(), State::CloseWait);
}

#[test]
fn window_stays_closed_after_data_past_the_advertised_edge() {
    // The application frees 100 bytes of a full 1024-byte buffer: too
    // little for a window update (receiver SWS avoidance), so the peer
    // still sees a zero window, but a segment at RCV.NXT is taken into the
    // free space — past the advertised edge. The window is zero again.
    let mut p = zero_rcv_window();
    let mut b = [0u8; 100];
    assert_eq!(p.ep.recv(p.id(), &mut b), Ok(100));
    recv_nothing!(p, time 50);
    send!(p, time 50, Seg { seq: REMOTE_SEQ + 1025, ack: Some(LOCAL_SEQ + 1), payload: data(100), ..send_templ() });
    assert_eq!(p.ep.info(p.id()).unwrap().recv_buffered, 1024);
    // Our delayed ACK is not out yet: the advertised edge lags RCV.NXT.
    let far = REMOTE_SEQ + 1125 + 100_000;
    send!(p, time 60, Seg { seq: far, ack: Some(LOCAL_SEQ + 101), ..send_templ() });
    recv!(p, time 60, Seg { seq: LOCAL_SEQ + 101, ack: Some(REMOTE_SEQ + 1125), window: 0, ..recv_templ() });
    assert_eq!(in_flight(&p), 100, "the out-of-window ACK was ignored");
}

// =====================================================================
// RST generation and RFC 5961 (blind RST/SYN/data injection)
// =====================================================================

#[test]
fn closed_port_syn_gets_rst_ack() {
    // RFC 9293 §3.10.7.1: "If the ACK bit is off, sequence number zero is
    // used, <SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>".
    let mut p = listen();
    send!(p, time 0, Seg { dst_port: 81, ..peer_syn() });
    recv!(p, time 0, Seg { src_port: 81, seq: SeqNum(0), ack: Some(REMOTE_SEQ + 1), flags: RST, window: 0, ..recv_templ() });
    // With data and FIN, SEG.LEN counts both.
    send!(p, time 0, Seg { dst_port: 81, flags: FIN, payload: data(10), ..send_templ() });
    recv!(p, time 0, Seg { src_port: 81, seq: SeqNum(0), ack: Some(REMOTE_SEQ + 12), flags: RST, window: 0, ..recv_templ() });
    assert_eq!(p.ep.stats().drops.no_listener, 2);
}

#[test]
fn closed_port_ack_gets_rst() {
    // "If the ACK bit is on, <SEQ=SEG.ACK><CTL=RST>".
    let mut p = Peer::new(test_config());
    send!(p, time 0, Seg { ack: Some(SeqNum(123_456)), payload: b"hi".to_vec(), ..send_templ() });
    recv!(p, time 0, Seg { seq: SeqNum(123_456), ack: None, flags: RST, window: 0, ..recv_templ() });
}

#[test]
fn never_rst_in_answer_to_rst() {
    // §3.10.7.1: "An incoming segment containing a RST is discarded."
    let mut p = Peer::new(test_config());
    send!(p, time 0, Seg { flags: RST, ..send_templ() });
    send!(p, time 0, Seg { flags: RST, ack: Some(SeqNum(5)), ..send_templ() });
    recv_nothing!(p, time 0);
    // Nor for a RST outside the window of a live connection.
    let mut p = established();
    send!(p, time 10, Seg { seq: REMOTE_SEQ + 1 + 70_000, flags: RST, ..send_templ() });
    send!(p, time 10, Seg { seq: REMOTE_SEQ - 5, flags: RST, ack: Some(LOCAL_SEQ + 1), ..send_templ() });
    recv_nothing!(p, time 10);
    assert_eq!(p.state(), State::Established);
    assert_eq!(p.ep.stats().rst_out, 0);
}

#[test]
fn rst_with_exact_seq_closes() {
    // RFC 5961 §3.2: "If the RST bit is set and the sequence number exactly
    // matches the next expected sequence number (RCV.NXT), then TCP MUST
    // reset the connection."
    let mut p = established();
    send!(p, time 10, Seg { flags: RST, ..send_templ() });
    recv_nothing!(p, time 10);
    let id = p.id();
    assert_eq!(p.take_events(), [Event::Reset(id), Event::Closed(id)]);
    assert_eq!(p.ep.connection_count(), 0);
    assert_eq!(p.ep.send(id, b"x"), Err(tcp::Error::InvalidHandle));
}

#[test]
fn rst_in_window_draws_challenge_ack() {
    // RFC 5961 §3.2: "If the RST bit is set and the sequence number does not
    // exactly match the next expected sequence value, yet is within the
    // current receive window, TCP MUST send an acknowledgment (challenge ACK):
    // <SEQ=SND.NXT><ACK=RCV.NXT><CTL=ACK>".
    let mut p = established();
    send!(p, time 10, Seg { seq: REMOTE_SEQ + 2, flags: RST, ..send_templ() });
    recv!(p, time 10, recv_templ());
    assert_eq!(p.state(), State::Established);
    assert_eq!(p.ep.stats().challenge_acks, 1);
    // The peer, if it really meant it, answers with the exact sequence number.
    send!(p, time 20, Seg { seq: REMOTE_SEQ + 1, flags: RST, ..send_templ() });
    assert_eq!(p.ep.connection_count(), 0);
}

#[test]
fn rst_at_rcv_nxt_closes_every_state() {
    // (fixture, RCV.NXT there, whether the application still holds the
    // connection and is told Reset)
    type Fixture = fn() -> Peer;
    let cases: [(&str, Fixture, SeqNum, bool); 6] = [
        ("FIN-WAIT-1", fin_wait_1, REMOTE_SEQ + 1, true),
        ("FIN-WAIT-2", fin_wait_2, REMOTE_SEQ + 1, true),
        ("CLOSE-WAIT", close_wait, REMOTE_SEQ + 2, true),
        ("CLOSING", closing, REMOTE_SEQ + 2, false),
        ("LAST-ACK", last_ack, REMOTE_SEQ + 2, false),
        ("TIME-WAIT", time_wait, REMOTE_SEQ + 2, false),
    ];
    for (name, fixture, rcv_nxt, told) in cases {
        let mut p = fixture();
        p.take_events();
        // In the window but not RCV.NXT: challenged, not obeyed.
        send!(p, time 10, Seg { seq: rcv_nxt + 1, flags: RST, ..send_templ() });
        let challenge = p
            .poll(ms(10))
            .unwrap_or_else(|| panic!("{name}: no challenge ACK"));
        assert_eq!(challenge.ack, Some(rcv_nxt), "{name}");
        assert_eq!(p.ep.connection_count(), 1, "{name}");
        // At RCV.NXT: closed, nothing sent.
        send!(p, time 20, Seg { seq: rcv_nxt, flags: RST, ..send_templ() });
        recv_nothing!(p, time 20);
        assert_eq!(p.ep.connection_count(), 0, "{name}");
        let ev = p.take_events();
        assert_eq!(ev.contains(&Event::Reset(p.id())), told, "{name}: {ev:?}");
    }
}

#[test]
fn syn_on_established_draws_challenge_ack() {
    // RFC 5961 §4.2: "If the SYN bit is set, irrespective of the sequence
    // number, TCP MUST send an ACK (also referred to as challenge ACK)".
    // (Half a second apart: the per-connection limit allows one per 500 ms.)
    let mut p = established();
    for (i, seq) in [
        REMOTE_SEQ + 1,
        REMOTE_SEQ + 500,
        REMOTE_SEQ - 100,
        REMOTE_SEQ + 200_000,
    ]
    .into_iter()
    .enumerate()
    {
        let t = 10 + 500 * i as u64;
        send!(p, time t, Seg { seq, ..peer_syn() });
        recv!(p, time t, recv_templ());
        recv_nothing!(p, time t);
        assert_eq!(p.state(), State::Established);
    }
}

#[test]
fn syn_in_fin_wait_2_draws_challenge_ack() {
    // A SYN in the closing states is likewise challenged, not obeyed.
    let mut p = fin_wait_2();
    send!(p, time 10, Seg { seq: REMOTE_SEQ + 1, ..peer_syn() });
    recv!(p, time 10, Seg { seq: LOCAL_SEQ + 2, ..recv_templ() });
    assert_eq!(p.state(), State::FinWait2);
}

#[test]
fn challenge_ack_rate_limit_per_connection() {
    // RFC 5961 §7 rate limit, per connection as Linux (one ACK for invalid
    // segments per 500 ms, tcp_invalid_ratelimit): a flood of in-window
    // RSTs and SYNs on one connection draws one challenge ACK per 500 ms.
    let mut p = established();
    let rst = Seg {
        seq: REMOTE_SEQ + 10,
        flags: RST,
        ..send_templ()
    };
    send!(p, time 100, rst.clone());
    recv!(p, time 100, recv_templ());
    send!(p, time 200, rst.clone());
    recv_nothing!(p, time 200);
    send!(p, time 599, Seg { seq: REMOTE_SEQ + 1, ..peer_syn() });
    recv_nothing!(p, time 599);
    assert_eq!(p.ep.stats().challenge_acks, 1);
    assert_eq!(p.ep.stats().challenge_acks_suppressed, 2);
    send!(p, time 600, rst);
    recv!(p, time 600, recv_templ());
    assert_eq!(p.state(), State::Established);
}

#[test]
fn out_of_window_syn_draws_rate_limited_challenge_ack() {
    // RFC 5961 §4.2: a SYN in a synchronized state draws a challenge ACK
    // "irrespective of the sequence number", and §7 rate-limits those. A
    // SYN outside the window is no exception: it must not get an ACK each
    // (as Linux: tcp_validate_incoming sends it to syn_challenge, then
    // tcp_send_challenge_ack).
    let mut p = established();
    let syn = |seq| Seg { seq, ..peer_syn() };
    send!(p, time 10, syn(REMOTE_SEQ + 200_000));
    recv!(p, time 10, recv_templ());
    send!(p, time 20, syn(REMOTE_SEQ - 100));
    recv_nothing!(p, time 20);
    send!(p, time 30, syn(REMOTE_SEQ + 1_000_000));
    recv_nothing!(p, time 30);
    assert_eq!(p.ep.stats().challenge_acks, 1);
    assert_eq!(p.ep.stats().challenge_acks_suppressed, 2);
    send!(p, time 510, syn(REMOTE_SEQ + 200_000));
    recv!(p, time 510, recv_templ());
    assert_eq!(p.ep.stats().challenge_acks, 2);
    assert_eq!(p.state(), State::Established);
}

#[test]
fn out_of_window_data_does_not_use_up_the_invalid_segment_limit() {
    // Out-of-window segments with data (a spurious retransmission, say)
    // are always ACKed and, as Linux (tcp_oow_rate_limited returns early
    // for them), leave the per-connection limit alone: a challenge ACK
    // (RFC 5961 §3.2) and an ACK for an out-of-window pure ACK may follow
    // at once.
    let mut p = established();
    let old_data = Seg {
        seq: REMOTE_SEQ - 9,
        ack: Some(LOCAL_SEQ + 1),
        payload: data(10),
        ..send_templ()
    };
    send!(p, time 10, old_data.clone());
    recv!(p, time 10, recv_templ());
    send!(p, time 20, old_data);
    recv!(p, time 20, recv_templ());
    send!(p, time 30, Seg { seq: REMOTE_SEQ + 10, flags: RST, ..send_templ() });
    recv!(p, time 30, recv_templ());
    assert_eq!(p.ep.stats().challenge_acks, 1);
    // The challenge ACK did count: an out-of-window pure ACK waits.
    send!(p, time 40, Seg { seq: REMOTE_SEQ, ack: Some(LOCAL_SEQ + 1), ..send_templ() });
    recv_nothing!(p, time 40);
    let mut p = established();
    send!(p, time 10, Seg { seq: REMOTE_SEQ - 9, ack: Some(LOCAL_SEQ + 1), payload: data(10), ..send_templ() });
    recv!(p, time 10, recv_templ());
    send!(p, time 20, Seg { seq: REMOTE_SEQ, ack: Some(LOCAL_SEQ + 1), ..send_templ() });
    recv!(p, time 20, recv_templ());
}

#[test]
fn out_of_window_ack_interval_is_configurable() {
    // Config::oow_ack_interval (Linux's tcp_invalid_ratelimit) sets how
    // often one connection answers invalid segments: 100 ms here.
    let mut p = established_with(Config {
        oow_ack_interval: Duration::from_millis(100),
        ..test_config()
    });
    let rst = Seg {
        seq: REMOTE_SEQ + 10,
        flags: RST,
        ..send_templ()
    };
    send!(p, time 100, rst.clone());
    recv!(p, time 100, recv_templ());
    send!(p, time 199, rst.clone());
    recv_nothing!(p, time 199);
    send!(p, time 200, rst);
    recv!(p, time 200, recv_templ());
    assert_eq!(p.ep.stats().challenge_acks, 2);
}

/// Challenge ACKs drawn per second by 40 connections each sent an in-window
/// RST once a second, for `secs` seconds, with `challenge_ack_limit` 10.
fn challenge_acks_per_second(seed: u64, secs: u64) -> Vec<u64> {
    let cfg = Config {
        seed,
        challenge_ack_limit: 10,
        ..test_config()
    };
    let mut p = Peer::new(cfg);
    p.ep.listen(LOCAL_PORT, 64).unwrap();
    let ports: Vec<u16> = (0..40).map(|i| REMOTE_PORT + i).collect();
    for &port in &ports {
        p.forget_iss();
        send!(p, time 0, Seg { src_port: port, ..peer_syn() });
        assert!(p.poll(ms(0)).is_some_and(|s| s.flags == SYN));
        send!(p, time 0, Seg { src_port: port, ..peer_ack() });
        assert!(p.ep.accept(LOCAL_PORT).is_some());
    }
    let mut out = Vec::new();
    for sec in 1..=secs {
        let before = p.ep.stats().challenge_acks;
        for &port in &ports {
            send!(p, time sec * 1000, Seg { src_port: port, seq: REMOTE_SEQ + 10, flags: RST, ..send_templ() });
        }
        let mut sent = 0;
        while let Some(s) = p.poll(ms(sec * 1000)) {
            assert_eq!(
                (s.flags, s.ack),
                (NONE, Some(REMOTE_SEQ + 1)),
                "a challenge ACK"
            );
            sent += 1;
        }
        assert_eq!(p.ep.stats().challenge_acks - before, sent);
        out.push(sent);
    }
    assert_eq!(p.ep.connection_count(), 40, "no RST was obeyed");
    out
}

#[test]
fn challenge_ack_global_budget_is_randomized_per_second() {
    // RFC 5961 §7 endpoint-wide limit without the CVE-2016-5696 side
    // channel: as Linux, each second's budget is drawn from [limit/2,
    // limit/2 + limit - 1] (here 5..=14), so an attacker counting the
    // challenge ACKs it provokes cannot tell how many others were sent.
    // The draw comes from the seed: same seed, same budgets.
    let a = challenge_acks_per_second(0x5eed, 8);
    assert!(a.iter().all(|n| (5..=14).contains(n)), "{a:?}");
    assert!(
        a.iter().any(|n| *n != a[0]),
        "budgets vary from second to second: {a:?}"
    );
    assert_eq!(
        challenge_acks_per_second(0x5eed, 8),
        a,
        "deterministic for a seed"
    );
    assert_ne!(
        challenge_acks_per_second(0x5eee, 8),
        a,
        "another seed, other budgets"
    );
}

#[test]
fn ack_of_unsent_data_acked_and_dropped() {
    // RFC 9293 §3.10.7.4 fifth: "If the ACK acks something not yet sent
    // (SEG.ACK > SND.NXT), then send an ACK, drop the segment, and return."
    let mut p = established_with_unacked();
    send!(p, time 10, Seg { ack: Some(LOCAL_SEQ + 102), payload: b"data".to_vec(), ..send_templ() });
    recv!(p, time 10, Seg { seq: LOCAL_SEQ + 101, ..recv_templ() });
    assert_eq!(p.read_all(), b"", "the segment's data was dropped");
    assert_eq!(in_flight(&p), 100);
}

#[test]
fn acks_of_unsent_data_draw_rate_limited_acks() {
    // The ACK answering SEG.ACK > SND.NXT is held to the limit for invalid
    // segments (RFC 5961 §5.2 sends it as for a too-old ACK, §7 limits
    // it; Linux answers with tcp_send_challenge_ack): a stream of such
    // segments, with data or without, draws one per 500 ms.
    let mut p = established();
    let bad = Seg {
        ack: Some(LOCAL_SEQ + 2),
        ..send_templ()
    };
    send!(p, time 10, bad.clone());
    recv!(p, time 10, recv_templ());
    send!(p, time 20, Seg { payload: b"data".to_vec(), ..bad.clone() });
    recv_nothing!(p, time 20);
    send!(p, time 30, bad.clone());
    recv_nothing!(p, time 30);
    assert_eq!(p.ep.stats().challenge_acks_suppressed, 2);
    send!(p, time 510, bad);
    recv!(p, time 510, recv_templ());
    assert_eq!(p.read_all(), b"", "the data was dropped");
    assert_eq!(p.ep.stats().drops.unacceptable, 4);
}

#[test]
fn ack_too_old_draws_challenge_ack() {
    // RFC 5961 §5.2: SEG.ACK must lie in [SND.UNA - MAX.SND.WND, SND.NXT];
    // below it "MUST be discarded and an ACK sent back".
    let mut p = established_with_unacked();
    send!(p, time 10, Seg { ack: Some(LOCAL_SEQ + 1 - 70_000), payload: b"data".to_vec(), ..send_templ() });
    recv!(p, time 10, Seg { seq: LOCAL_SEQ + 101, ..recv_templ() });
    assert_eq!(p.read_all(), b"");
    // An old but plausible ACK (a duplicate) is fine and its data is taken.
    send!(p, time 20, Seg { ack: Some(LOCAL_SEQ + 1), payload: b"data".to_vec(), ..send_templ() });
    assert_eq!(p.read_all(), b"data");
}

#[test]
fn abort_sends_rst() {
    // RFC 9293 §3.10.5 ABORT: "<SEQ=SND.NXT><CTL=RST>".
    let mut p = established_with_unacked();
    p.ep.abort(p.id()).unwrap();
    recv!(p, time 5, Seg { seq: LOCAL_SEQ + 101, flags: RST, window: 0, ..recv_templ() });
    assert_eq!(p.take_events(), [Event::Closed(p.id())]);
}

// =====================================================================
// Receiving: delayed ACK, window updates, reassembly
// (RFC 1122 §4.2.3.2, RFC 5681 §4.2, RFC 9293 §3.8.6.2.2)
// =====================================================================

#[test]
fn delayed_ack_after_40ms() {
    let mut p = established();
    send!(p, time 10, Seg { ack: Some(LOCAL_SEQ + 1), payload: b"abcdef".to_vec(), ..send_templ() });
    recv_nothing!(p, time 10);
    recv_nothing!(p, time 49);
    recv!(p, time 50, Seg { ack: Some(REMOTE_SEQ + 7), window: RCV_BUF as u16 - 6, ..recv_templ() });
    recv_nothing!(p, time 100);
}

#[test]
fn delayed_ack_every_second_full_segment() {
    // "an ACK SHOULD be generated for at least every second full-sized segment".
    let mut p = established();
    send!(p, time 10, Seg { ack: Some(LOCAL_SEQ + 1), payload: data(1460), ..send_templ() });
    recv_nothing!(p, time 10);
    send!(p, time 11, Seg { seq: REMOTE_SEQ + 1461, ack: Some(LOCAL_SEQ + 1), payload: data(1460), ..send_templ() });
    recv!(p, time 11, Seg { ack: Some(REMOTE_SEQ + 2921), window: RCV_BUF as u16 - 2920, ..recv_templ() });
    recv_nothing!(p, time 60);
}

#[test]
fn delayed_ack_piggybacked_on_data() {
    let mut p = established();
    send!(p, time 10, Seg { ack: Some(LOCAL_SEQ + 1), payload: b"ping".to_vec(), ..send_templ() });
    assert_eq!(p.read_all(), b"ping");
    p.write(b"pong");
    recv!(p, time 20, Seg { ack: Some(REMOTE_SEQ + 5), window: RCV_BUF as u16 - 4, flags: PSH, payload: b"pong".to_vec(), ..recv_templ() });
    recv_nothing!(p, time 60);
}

#[test]
fn delayed_ack_timer_is_configurable() {
    let cfg = Config {
        delayed_ack: Duration::from_millis(100),
        ..test_config()
    };
    let mut p = established_with(cfg);
    send!(p, time 10, Seg { ack: Some(LOCAL_SEQ + 1), payload: b"x".to_vec(), ..send_templ() });
    recv_nothing!(p, time 109);
    recv!(p, time 110, Seg { ack: Some(REMOTE_SEQ + 2), window: RCV_BUF as u16 - 1, ..recv_templ() });
}

#[test]
fn out_of_order_acked_at_once_and_gap_fill_acked_at_once() {
    // RFC 5681 §4.2: "an immediate ACK when an out-of-order segment arrives"
    // and "when an incoming segment fills in all or part of a gap".
    let mut p = established();
    send!(p, time 10, Seg { seq: REMOTE_SEQ + 11, ack: Some(LOCAL_SEQ + 1), payload: data(10), ..send_templ() });
    recv!(p, time 10, Seg { options: TcpOptions { sack: sack(&[(REMOTE_SEQ + 11, REMOTE_SEQ + 21)]), ..Default::default() }, ..recv_templ() });
    send!(p, time 20, Seg { ack: Some(LOCAL_SEQ + 1), payload: data(10), ..send_templ() });
    recv!(p, time 20, Seg { ack: Some(REMOTE_SEQ + 21), window: RCV_BUF as u16 - 20, ..recv_templ() });
    assert_eq!(p.read_all().len(), 20);
}

#[test]
fn out_of_order_fin_waits_for_the_gap() {
    let mut p = established();
    send!(p, time 10, Seg { seq: REMOTE_SEQ + 4, flags: FIN, ack: Some(LOCAL_SEQ + 1), payload: b"def".to_vec(), ..send_templ() });
    recv!(p, time 10, Seg { options: TcpOptions { sack: sack(&[(REMOTE_SEQ + 4, REMOTE_SEQ + 7)]), ..Default::default() }, ..recv_templ() });
    assert_eq!(p.state(), State::Established);
    send!(p, time 20, Seg { ack: Some(LOCAL_SEQ + 1), payload: b"abc".to_vec(), ..send_templ() });
    recv!(p, time 20, Seg { ack: Some(REMOTE_SEQ + 8), window: RCV_BUF as u16 - 7, ..recv_templ() });
    assert_eq!(p.state(), State::CloseWait);
    assert_eq!(p.read_all(), b"abcdef");
    assert_eq!(p.ep.recv(p.id(), &mut [0u8; 4]), Ok(0));
}

#[test]
fn window_update_when_reading_frees_an_mss() {
    let cfg = Config {
        recv_buffer: 4096,
        ..test_config()
    };
    let mut p = established_with(cfg);
    send!(p, time 10, Seg { ack: Some(LOCAL_SEQ + 1), payload: data(1460), ..send_templ() });
    send!(p, time 10, Seg { seq: REMOTE_SEQ + 1461, ack: Some(LOCAL_SEQ + 1), payload: data(1460), ..send_templ() });
    recv!(p, time 10, Seg { ack: Some(REMOTE_SEQ + 2921), window: 4096 - 2920, ..recv_templ() });
    // Reading 100 bytes opens less than an MSS: no update.
    let id = p.id();
    assert_eq!(p.ep.recv(id, &mut [0u8; 100]), Ok(100));
    recv_nothing!(p, time 20);
    // Reading the rest opens 2920: the update goes out at once.
    assert_eq!(p.read_all().len(), 2820);
    recv!(p, time 30, Seg { ack: Some(REMOTE_SEQ + 2921), window: 4096, ..recv_templ() });
}

#[test]
fn held_data_keeps_the_window_closed_until_released() {
    let cfg = Config {
        recv_buffer: 4096,
        ..test_config()
    };
    let mut p = established_with(cfg);
    let id = p.id();
    send!(p, time 10, Seg { ack: Some(LOCAL_SEQ + 1), payload: data(1460), ..send_templ() });
    send!(p, time 10, Seg { seq: REMOTE_SEQ + 1461, ack: Some(LOCAL_SEQ + 1), payload: data(1460), ..send_templ() });
    recv!(p, time 10, Seg { ack: Some(REMOTE_SEQ + 2921), window: 4096 - 2920, ..recv_templ() });
    let mut buf = [0u8; 4096];
    assert_eq!(p.ep.recv_hold(id, &mut buf), Ok(2920));
    recv_nothing!(p, time 20);
    assert_eq!(p.ep.info(id).unwrap().rcv_wnd, 4096 - 2920);
    p.ep.release(id, 2920).unwrap();
    recv!(p, time 30, Seg { ack: Some(REMOTE_SEQ + 2921), window: 4096, ..recv_templ() });
}

#[test]
fn window_update_riding_a_retransmission_is_repeated_in_a_pure_ack() {
    // RFC 9293 §3.10.7.4: the peer takes SEG.WND only from a segment with
    // SND.WL1 < SEG.SEQ (or SND.WL1 = SEG.SEQ and SND.WL2 =< SEG.ACK). A
    // retransmission's SEG.SEQ lies below what we sent before, so a window
    // opening that rides on one is ignored; a peer stalled on our zero
    // window would wait for its next, backed-off persist probe. A pure ACK
    // at SND.MAX repeats the update.
    let cfg = Config {
        recv_buffer: 4096,
        ..test_config()
    };
    let mut p = established_with(cfg);
    let id = p.id();
    // The peer fills our window; the application holds all of it.
    for (off, len) in [(0u32, 1460usize), (1460, 1460), (2920, 1176)] {
        send!(p, time 10, Seg { seq: REMOTE_SEQ + 1 + off, ack: Some(LOCAL_SEQ + 1), payload: data(len), ..send_templ() });
    }
    while p.poll(ms(10)).is_some() {}
    let mut buf = [0u8; 4096];
    assert_eq!(p.ep.recv_hold(id, &mut buf), Ok(4096));
    assert_eq!(p.ep.info(id).unwrap().rcv_wnd, 0);
    // We send 3000 bytes; none is acknowledged.
    p.write(&data(3000));
    let mut sent = 0;
    while let Some(s) = p.poll(ms(20)) {
        assert_eq!(s.window, 0);
        sent += s.payload.len();
    }
    assert_eq!(sent, 3000);
    // The retransmission timer fires; before the retransmission goes out,
    // the application releases everything: the window opens fully.
    p.tick(ms(5000));
    p.ep.release(id, 4096).unwrap();
    let rexmit = p.poll(ms(5000)).expect("a retransmission");
    assert_eq!(rexmit.seq, LOCAL_SEQ + 1, "the retransmission comes first");
    assert_eq!(rexmit.payload.len(), 1460);
    // cwnd is one segment after an RTO: nothing more data-wise; the window
    // update follows as a pure ACK at SND.MAX, which the peer will take.
    recv!(p, time 5000, Seg { seq: LOCAL_SEQ + 3001, ack: Some(REMOTE_SEQ + 4097), window: 4096, ..recv_templ() });
    recv_nothing!(p, time 5000);
}

#[test]
fn reassembly_range_limit_drops_extra_holes() {
    // Config::max_ooo_ranges bounds the out-of-order state: a segment that
    // would open one range too many is dropped (and still draws an ACK).
    let cfg = Config {
        max_ooo_ranges: 2,
        ..test_config()
    };
    let mut p = established_with(cfg);
    let r = REMOTE_SEQ + 1;
    let seg = |off: u32| Seg {
        seq: r + off,
        ack: Some(LOCAL_SEQ + 1),
        payload: data(10),
        ..send_templ()
    };
    let ack = |b: &[(SeqNum, SeqNum)]| Seg {
        options: TcpOptions {
            sack: sack(b),
            ..Default::default()
        },
        ..recv_templ()
    };
    send!(p, time 10, seg(100));
    recv!(p, time 10, ack(&[(r + 100, r + 110)]));
    send!(p, time 11, seg(200));
    recv!(p, time 11, ack(&[(r + 200, r + 210), (r + 100, r + 110)]));
    send!(p, time 12, seg(300));
    recv!(p, time 12, ack(&[(r + 200, r + 210), (r + 100, r + 110)]));
    assert_eq!(p.ep.stats().ooo_segments, 2);
}

#[test]
fn segment_at_rcv_nxt_accepted_when_reassembly_table_full() {
    let cfg = Config {
        max_ooo_ranges: 1,
        ..test_config()
    };
    let mut p = established_with(cfg);
    let r = REMOTE_SEQ + 1;
    send!(p, time 10, Seg { seq: r + 100, ack: Some(LOCAL_SEQ + 1), payload: data(10), ..send_templ() });
    assert!(p.poll(ms(10)).is_some());
    send!(p, time 11, Seg { seq: r + 200, ack: Some(LOCAL_SEQ + 1), payload: data(10), ..send_templ() });
    assert!(p.poll(ms(11)).is_some());
    // The in-order segment always goes in.
    send!(p, time 12, Seg { ack: Some(LOCAL_SEQ + 1), payload: data(50), ..send_templ() });
    assert_eq!(p.read_all(), data(50));
    send!(p, time 13, Seg { seq: r + 50, ack: Some(LOCAL_SEQ + 1), payload: data(100)[50..].to_vec(), ..send_templ() });
    // The gap filled: 50..100 and the segment held at 100..110.
    let mut want = data(100)[50..].to_vec();
    want.extend_from_slice(&data(10));
    assert_eq!(p.read_all(), want);
}

#[test]
fn urgent_data_is_delivered_inline() {
    // RFC 6093: urgent data is delivered in line; the pointer is ignored.
    let mut p = established();
    send!(p, time 10, Seg { flags: TcpFlags::URG, ack: Some(LOCAL_SEQ + 1), payload: b"!".to_vec(), ..send_templ() });
    assert_eq!(p.read_all(), b"!");
}

// =====================================================================
// SACK block generation (RFC 2018 §4)
// =====================================================================

#[test]
fn sack_blocks_most_recent_first() {
    let mut p = established();
    let r = REMOTE_SEQ + 1;
    let seg = |off: u32, n: usize| Seg {
        seq: r + off,
        ack: Some(LOCAL_SEQ + 1),
        payload: data(n),
        ..send_templ()
    };
    let ack = |blocks: &[(SeqNum, SeqNum)]| Seg {
        options: TcpOptions {
            sack: sack(blocks),
            ..Default::default()
        },
        ..recv_templ()
    };
    send!(p, time 10, seg(100, 100));
    recv!(p, time 10, ack(&[(r + 100, r + 200)]));
    send!(p, time 11, seg(300, 100));
    recv!(p, time 11, ack(&[(r + 300, r + 400), (r + 100, r + 200)]));
    send!(p, time 12, seg(500, 100));
    recv!(p, time 12, ack(&[(r + 500, r + 600), (r + 300, r + 400), (r + 100, r + 200)]));
    // A segment extending an older block puts that block first.
    send!(p, time 13, seg(200, 50));
    recv!(p, time 13, ack(&[(r + 100, r + 250), (r + 500, r + 600), (r + 300, r + 400)]));
    // Filling the hole at RCV.NXT: the cumulative ACK moves, blocks above stay.
    send!(p, time 14, seg(0, 100));
    recv!(p, time 14, Seg { ack: Some(r + 250), window: RCV_BUF as u16 - 250, options: TcpOptions { sack: sack(&[(r + 500, r + 600), (r + 300, r + 400)]), ..Default::default() }, ..recv_templ() });
}

#[test]
fn no_sack_blocks_without_sack_permitted() {
    let mut p = listen();
    send!(p, time 0, Seg { options: TcpOptions { mss: Some(MSS), ..Default::default() }, ..peer_syn() });
    recv!(p, time 0, Seg { options: TcpOptions { mss: Some(MSS), ..Default::default() }, ..our_synack() });
    send!(p, time 0, peer_ack());
    p.conn = p.ep.accept(LOCAL_PORT);
    send!(p, time 10, Seg { seq: REMOTE_SEQ + 101, ack: Some(LOCAL_SEQ + 1), payload: data(10), ..send_templ() });
    recv!(p, time 10, recv_templ());
}

// =====================================================================
// Sending: MSS, windows, Nagle, SWS avoidance
// (RFC 9293 §3.7, §3.8.6.2.1; RFC 5681 §3.1, §4.1; RFC 6928)
// =====================================================================

#[test]
fn mss_clamps_segments_and_defaults_to_536() {
    // RFC 9293 §3.7.1: send segments no larger than the peer's MSS; without
    // the option, 536 on IPv4.
    for (opt, mss) in [(Some(1000u16), 1000usize), (None, 536)] {
        let mut p = listen();
        let options = TcpOptions {
            mss: opt,
            ..Default::default()
        };
        send!(p, time 0, Seg { options, ..peer_syn() });
        recv!(p, time 0, Seg { options: TcpOptions { mss: Some(MSS), ..Default::default() }, ..our_synack() });
        send!(p, time 0, peer_ack());
        p.conn = p.ep.accept(LOCAL_PORT);
        p.write(&data(2 * mss));
        recv!(p, time 1, Seg { payload: data(mss), ..recv_templ() });
        recv!(p, time 1, Seg { seq: LOCAL_SEQ + 1 + mss as u32, flags: PSH, payload: data(2 * mss)[mss..].to_vec(), ..recv_templ() });
    }
}

#[test]
fn data_segments_with_sack_blocks_fit_the_mtu() {
    // While we hold out-of-order data, every ACK-bearing segment carries
    // SACK blocks; a data segment then has less room for payload (Linux's
    // tcp_current_mss counts them). Found by the endpoint fuzz target
    // (fuzz/regressions/endpoint/mtu-exceeded-by-sack-blocks).
    let mut p = established();
    let r = REMOTE_SEQ + 1;
    send!(p, time 10, Seg { seq: r + 100, ack: Some(LOCAL_SEQ + 1), payload: data(10), ..send_templ() });
    let blocks = TcpOptions {
        sack: sack(&[(r + 100, r + 110)]),
        ..Default::default()
    };
    recv!(p, time 10, Seg { options: blocks, ..recv_templ() });
    p.write(&data(3000));
    // 1460 less the 12-byte option (NOP, NOP, kind, length, one block).
    let m = 1448usize;
    recv!(p, time 11, Seg { options: blocks, payload: data(m), ..recv_templ() });
    recv!(p, time 11, Seg { seq: LOCAL_SEQ + 1 + m as u32, options: blocks, payload: data(2 * m)[m..].to_vec(), ..recv_templ() });
    recv!(p, time 11, Seg { seq: LOCAL_SEQ + 1 + 2 * m as u32, flags: PSH, options: blocks, payload: data(3000)[2 * m..].to_vec(), ..recv_templ() });
    // Once the hole is filled the full MSS is back.
    send!(p, time 20, Seg { ack: Some(LOCAL_SEQ + 3001), payload: data(100), ..send_templ() });
    p.read_all();
    p.write(&data(1460));
    let s = p.poll(ms(21)).expect("full segment");
    assert_eq!(s.payload.len(), 1460);
    assert!(s.options.sack.is_empty());
}

#[test]
fn no_packet_exceeds_the_mtu_with_timestamps_and_sack() {
    // Timestamps (12 bytes) plus three SACK blocks (28 bytes): 40 bytes of
    // options, the most there is; the payload shrinks to fit 1500 bytes.
    let mut p = established_ts();
    let ts = |v| TcpOptions {
        timestamps: Some((v, 5)),
        ..Default::default()
    };
    let r = REMOTE_SEQ + 1;
    for (i, off) in [100u32, 300, 500].into_iter().enumerate() {
        send!(p, time 10 + i as u64, Seg { seq: r + off, ack: Some(LOCAL_SEQ + 1), options: ts(1002), payload: data(10), ..send_templ() });
        assert!(p.poll(ms(10 + i as u64)).is_some());
    }
    p.write(&data(5000));
    while let Some(pkt) = p.poll_raw(ms(20)) {
        assert!(pkt.len() <= 1500, "{} bytes on a 1500-byte MTU", pkt.len());
    }
}

/// The next packet the endpoint emits at `now` into a buffer of exactly
/// `size` bytes (timers due by then run first).
fn poll_sized(p: &mut Peer, now: u64, size: usize) -> Option<Vec<u8>> {
    p.tick(ms(now));
    let mut buf = vec![0u8; size];
    let n = p.ep.poll_transmit(ms(now), &mut buf)?;
    buf.truncate(n);
    Some(buf)
}

/// The TCP payload length of an emitted IP packet.
fn payload_len(pkt: &[u8]) -> usize {
    let ip = parse_ip(pkt).unwrap();
    tcp::wire::parse_tcp(&ip).unwrap().payload.len()
}

#[test]
fn bulk_send_into_an_mtu_sized_buffer_sends_full_segments() {
    // A driver that polls with a buffer of exactly the MTU (1500) gets
    // full-MSS segments: the room for payload is the buffer less the exact
    // headers (20 + 20, plus 12 with timestamps, plus SACK blocks), not a
    // fixed worst case (which left 1400 bytes, below the MSS, so Nagle and
    // sender SWS avoidance held every segment back).
    for (ts, mss) in [(false, 1460usize), (true, 1448)] {
        let mut p = if ts { established_ts() } else { established() };
        p.write(&data(10 * mss));
        let mut sizes = Vec::new();
        while let Some(pkt) = poll_sized(&mut p, 10, 1500) {
            assert_eq!(pkt.len(), 1500, "timestamps {ts}: a full packet");
            sizes.push(payload_len(&pkt));
        }
        assert_eq!(sizes, vec![mss; 10], "timestamps {ts}");
        assert_eq!(in_flight(&p), 10 * mss as u32);
    }
    // With a SACK block on every segment (we hold out-of-order data) the
    // payload shrinks by the option; the packet still fills the buffer.
    let mut p = established();
    send!(p, time 5, Seg { seq: REMOTE_SEQ + 101, ack: Some(LOCAL_SEQ + 1), payload: data(10), ..send_templ() });
    assert!(p.poll(ms(5)).is_some());
    p.write(&data(3 * 1448));
    for _ in 0..3 {
        let pkt = poll_sized(&mut p, 10, 1500).expect("full segment");
        assert_eq!((pkt.len(), payload_len(&pkt)), (1500, 1448));
    }
    assert!(poll_sized(&mut p, 10, 1500).is_none());
}

#[test]
fn buffer_below_a_full_segment_gets_segments_of_what_fits() {
    // A driver whose buffer holds less than MSS + headers (1000 bytes:
    // room for 960 payload bytes) gets segments of what fits. It is the
    // buffer, not the data, the window or cwnd, that makes them short, so
    // Nagle (RFC 9293 §3.7.4) and sender-side SWS avoidance (§3.8.6.2.1)
    // treat them as full-sized; holding them would stall the transfer until
    // the next ACK or the persist timer, with nothing reported.
    let mut p = established();
    p.write(&data(3000));
    let mut sizes = Vec::new();
    while let Some(pkt) = poll_sized(&mut p, 10, 1000) {
        sizes.push(payload_len(&pkt));
    }
    assert_eq!(sizes, [960, 960, 960, 120]);
    assert_eq!(in_flight(&p), 3000);
    // They do not count as short segments for Nagle either: the 120-byte
    // tail is, and holds the next short one until it is acknowledged.
    p.write(&data(100));
    assert!(poll_sized(&mut p, 20, 1000).is_none());
    send!(p, time 30, Seg { ack: Some(LOCAL_SEQ + 3001), ..send_templ() });
    let pkt = poll_sized(&mut p, 30, 1000).expect("the held segment");
    assert_eq!(payload_len(&pkt), 100);
}

#[test]
fn short_buffer_keeps_the_fast_retransmission_pending() {
    // Dispatch changes state only after the segment was written: a buffer
    // too short for the headers returns nothing and loses nothing.
    let mut p = established();
    let _ = ten_segments_in_flight(&mut p);
    let l = LOCAL_SEQ + 1;
    let m = u32::from(MSS);
    let dup = Seg {
        ack: Some(l + m),
        ..send_templ()
    };
    send!(p, time 10, dup.clone());
    send!(p, time 11, dup.clone());
    send!(p, time 11, dup.clone());
    send!(p, time 11, dup);
    assert_eq!(p.ep.stats().fast_retransmits, 1);
    assert!(poll_sized(&mut p, 11, 30).is_none());
    let fr = p
        .poll(ms(11))
        .expect("the fast retransmission, still pending");
    assert_eq!((fr.seq, fr.payload.len()), (l + m, MSS as usize));
    // A buffer with room for part of the segment gets that part.
    let mut p = established();
    let _ = ten_segments_in_flight(&mut p);
    let dup = Seg {
        ack: Some(l + m),
        ..send_templ()
    };
    // The first advances SND.UNA, three duplicates follow.
    for _ in 0..4 {
        send!(p, time 11, dup.clone());
    }
    let pkt = poll_sized(&mut p, 11, 540).expect("a shorter retransmission");
    assert_eq!(payload_len(&pkt), 500);
}

#[test]
fn short_buffer_keeps_the_zero_window_probe_pending() {
    let mut p = established();
    send!(p, time 0, Seg { ack: Some(LOCAL_SEQ + 1), window: 0, ..send_templ() });
    p.write(&data(100));
    recv_nothing!(p, time 0);
    assert!(poll_sized(&mut p, 200, 30).is_none());
    recv!(p, time 200, Seg { payload: data(1), ..recv_templ() });
}

#[test]
fn short_buffer_keeps_the_keepalive_probe_pending() {
    let mut p = established_with(ka_config());
    assert!(poll_sized(&mut p, 10_000, 30).is_none());
    recv!(p, time 10_000, Seg { seq: LOCAL_SEQ, ..recv_templ() });
}

#[test]
fn short_buffer_keeps_a_reset_queued() {
    // Endpoint-level replies (here a RST to a closed port) stay queued too.
    let mut p = listen();
    send!(p, time 0, Seg { dst_port: 81, ack: Some(LOCAL_SEQ), ..send_templ() });
    assert!(poll_sized(&mut p, 0, 30).is_none());
    recv!(p, time 0, Seg { src_port: 81, seq: LOCAL_SEQ, ack: None, flags: RST, window: 0, ..recv_templ() });
}

#[test]
fn initial_window_is_ten_segments() {
    // RFC 6928: IW = 10 segments; RFC 5681 §3.1 slow start: each ACK
    // grows cwnd by the bytes it acknowledged (at most 2 SMSS, RFC 3465).
    let mut p = established();
    let m = u32::from(MSS);
    p.write(&data(20 * MSS as usize));
    for i in 0..10 {
        let s = p.poll(ms(0)).expect("segment within the initial window");
        assert_eq!(s.seq, LOCAL_SEQ + 1 + i * m);
    }
    recv_nothing!(p, time 0);
    send!(p, time 10, Seg { ack: Some(LOCAL_SEQ + 1 + 2 * m), ..send_templ() });
    // cwnd 12 segments, 8 in flight: 4 more.
    for i in 10..14 {
        let s = p.poll(ms(10)).expect("segment after the ACK");
        assert_eq!(s.seq, LOCAL_SEQ + 1 + i * m);
    }
    recv_nothing!(p, time 10);
}

#[test]
fn idle_restart_returns_to_initial_window() {
    // RFC 5681 §4.1: after an idle period longer than an RTO, cwnd restarts
    // from min(IW, cwnd).
    let mut p = established();
    let m = u32::from(MSS);
    p.write(&data(10 * MSS as usize));
    while p.poll(ms(0)).is_some() {}
    send!(p, time 10, Seg { ack: Some(LOCAL_SEQ + 1 + 10 * m), ..send_templ() });
    assert!(p.ep.info(p.id()).unwrap().cwnd > 10 * m);
    // Idle for 5 s, then a burst: only the initial window goes.
    p.tick(ms(5010));
    p.write(&data(20 * MSS as usize));
    let mut n = 0;
    while p.poll(ms(5010)).is_some() {
        n += 1;
    }
    assert_eq!(n, 10);
}

#[test]
fn peer_window_limits_what_is_sent() {
    let mut p = established();
    send!(p, time 0, Seg { ack: Some(LOCAL_SEQ + 1), window: 3000, ..send_templ() });
    p.write(&data(10_000));
    recv!(p, time 1, Seg { payload: data(1460), ..recv_templ() });
    recv!(p, time 1, Seg { seq: LOCAL_SEQ + 1461, payload: data(2920)[1460..].to_vec(), ..recv_templ() });
    // 80 bytes of window left: below an MSS and below half the largest
    // window ever offered, so sender-side SWS avoidance waits (RFC 9293 §3.8.6.2.1).
    recv_nothing!(p, time 1);
    send!(p, time 10, Seg { ack: Some(LOCAL_SEQ + 2921), window: 3000, ..send_templ() });
    recv!(p, time 10, Seg { seq: LOCAL_SEQ + 2921, payload: data(4380)[2920..].to_vec(), ..recv_templ() });
}

#[test]
fn small_window_after_shrink_is_used_after_a_timeout() {
    // RFC 9293 §3.8.6.2.1: a sender held back by SWS avoidance with nothing
    // in flight must still send after the override timeout; Linux does it
    // from its probe timer (tcp_write_wakeup sends what fits the window).
    let mut p = established();
    send!(p, time 0, Seg { ack: Some(LOCAL_SEQ + 1), window: 1000, ..send_templ() });
    p.write(&data(5000));
    recv_nothing!(p, time 0);
    recv_nothing!(p, time 199);
    recv!(p, time 200, Seg { payload: data(1000), ..recv_templ() });
    recv_nothing!(p, time 200);
    // The window stays at 1000: each ACK re-arms the timer (backoff reset).
    send!(p, time 250, Seg { ack: Some(LOCAL_SEQ + 1001), window: 1000, ..send_templ() });
    recv_nothing!(p, time 449);
    recv!(p, time 450, Seg { seq: LOCAL_SEQ + 1001, payload: data(2000)[1000..].to_vec(), ..recv_templ() });
    // An MSS worth of window: no waiting.
    send!(p, time 460, Seg { ack: Some(LOCAL_SEQ + 2001), window: 5000, ..send_templ() });
    recv!(p, time 460, Seg { seq: LOCAL_SEQ + 2001, payload: data(3460)[2000..].to_vec(), ..recv_templ() });
}

#[test]
fn stale_window_update_is_ignored() {
    // RFC 9293 §3.10.7.4 fifth: the window is taken from a segment only if
    // SND.WL1 < SEG.SEQ, or SND.WL1 = SEG.SEQ and SND.WL2 =< SEG.ACK — a
    // reordered older ACK must not reopen (or shrink) the window.
    let mut p = established();
    p.write(&data(100));
    recv!(p, time 0, Seg { flags: PSH, payload: data(100), ..recv_templ() });
    send!(p, time 10, Seg { ack: Some(LOCAL_SEQ + 101), window: 5000, ..send_templ() });
    send!(p, time 11, Seg { ack: Some(LOCAL_SEQ + 51), window: 60000, ..send_templ() });
    assert_eq!(p.ep.info(p.id()).unwrap().snd_wnd, 5000);
    // A newer segment (higher SEG.SEQ) updates it.
    send!(p, time 12, Seg { seq: REMOTE_SEQ + 1, ack: Some(LOCAL_SEQ + 101), window: 7000, payload: b"z".to_vec(), ..send_templ() });
    assert_eq!(p.ep.info(p.id()).unwrap().snd_wnd, 7000);
}

#[test]
fn nagle_holds_small_segment_while_data_unacked() {
    let mut p = established();
    p.write(b"a");
    recv!(p, time 0, Seg { flags: PSH, payload: b"a".to_vec(), ..recv_templ() });
    p.write(b"b");
    p.write(b"c");
    recv_nothing!(p, time 10);
    send!(p, time 20, Seg { ack: Some(LOCAL_SEQ + 2), ..send_templ() });
    recv!(p, time 20, Seg { seq: LOCAL_SEQ + 2, flags: PSH, payload: b"bc".to_vec(), ..recv_templ() });
}

#[test]
fn nagle_sends_full_segments() {
    let mut p = established();
    p.write(b"a");
    recv!(p, time 0, Seg { flags: PSH, payload: b"a".to_vec(), ..recv_templ() });
    p.write(&data(MSS as usize + 10));
    recv!(p, time 0, Seg { seq: LOCAL_SEQ + 2, payload: data(MSS as usize), ..recv_templ() });
    recv_nothing!(p, time 0);
}

#[test]
fn nagle_minshall_lets_one_small_segment_follow_full_ones() {
    // Linux runs Nagle with Minshall's variant: a short segment may go while
    // only full-sized segments are unacknowledged, so a reply of 1.5 MSS is
    // not held up by the peer's delayed ACK. A second short one waits.
    let mut p = established();
    p.write(&data(2000));
    recv!(p, time 0, Seg { payload: data(1460), ..recv_templ() });
    recv!(p, time 0, Seg { seq: LOCAL_SEQ + 1461, flags: PSH, payload: data(2000)[1460..].to_vec(), ..recv_templ() });
    p.write(b"tail");
    recv_nothing!(p, time 1);
    send!(p, time 10, Seg { ack: Some(LOCAL_SEQ + 2001), ..send_templ() });
    recv!(p, time 10, Seg { seq: LOCAL_SEQ + 2001, flags: PSH, payload: b"tail".to_vec(), ..recv_templ() });
}

#[test]
fn nodelay_sends_at_once() {
    let mut p = established();
    p.ep.set_nodelay(p.id(), true).unwrap();
    p.write(b"a");
    recv!(p, time 0, Seg { flags: PSH, payload: b"a".to_vec(), ..recv_templ() });
    p.write(b"b");
    recv!(p, time 1, Seg { seq: LOCAL_SEQ + 2, flags: PSH, payload: b"b".to_vec(), ..recv_templ() });
}

#[test]
fn writable_after_short_send() {
    let cfg = Config {
        send_buffer: 4096,
        ..test_config()
    };
    let mut p = established_with(cfg);
    let id = p.id();
    assert_eq!(p.ep.send(id, &data(10_000)), Ok(4096));
    assert_eq!(p.ep.send(id, b"more"), Ok(0));
    while p.poll(ms(0)).is_some() {}
    assert!(!p.take_events().contains(&Event::Writable(id)));
    send!(p, time 10, Seg { ack: Some(LOCAL_SEQ + 1461), ..send_templ() });
    assert!(p.take_events().contains(&Event::Writable(id)));
    assert_eq!(p.ep.send_capacity(id), Ok(1460));
}

// =====================================================================
// Retransmission timer and user timeout (RFC 6298, RFC 9293 §3.8.3)
// =====================================================================

#[test]
fn rto_floor_and_exponential_backoff() {
    // The handshake sampled RTT 0, so RTO = max(0 + G, min_rto) = 200 ms
    // (Linux's floor); each expiry doubles it (§5.5) and resends the oldest
    // segment (§5.4).
    let mut p = established_with_unacked();
    let rexmit = Seg {
        flags: PSH,
        payload: data(100),
        ..recv_templ()
    };
    let mut t = 0;
    for i in 0..5 {
        t += 200 << i;
        recv_nothing!(p, time t - 1);
        recv!(p, time t, rexmit.clone());
    }
    assert_eq!(p.ep.stats().rto_timeouts, 5);
    // An ACK stops the timer and resets the backoff.
    send!(p, time t + 10, Seg { ack: Some(LOCAL_SEQ + 101), ..send_templ() });
    recv_nothing!(p, time t + 10_000);
    p.write(b"x");
    let t2 = t + 10_000;
    recv!(p, time t2, Seg { seq: LOCAL_SEQ + 101, flags: PSH, payload: b"x".to_vec(), ..recv_templ() });
    recv_nothing!(p, time t2 + 199);
    recv!(p, time t2 + 200, Seg { seq: LOCAL_SEQ + 101, flags: PSH, payload: b"x".to_vec(), ..recv_templ() });
}

#[test]
fn initial_rto_is_one_second() {
    // RFC 6298 §2.1: before any RTT sample, RTO = 1 s: the SYN-ACK is first
    // retransmitted after 1 s (the SYN likewise, see
    // syn_sent_retries_then_timed_out).
    let mut p = listen();
    send!(p, time 0, peer_syn());
    recv!(p, time 0, our_synack());
    recv_nothing!(p, time 999);
    recv!(p, time 1000, our_synack());
}

#[test]
fn rto_after_retransmitted_syn_is_three_seconds() {
    // RFC 6298 §5.7: "If the timer expires awaiting the ACK of a SYN segment
    // and the TCP implementation is using an RTO less than 3 seconds, the
    // RTO MUST be re-initialized to 3 seconds when data transmission
    // begins." Linux does the same (TCP_TIMEOUT_FALLBACK).
    let mut p = syn_sent();
    recv!(p, time 1000, our_syn());
    send!(p, time 1100, Seg { seq: REMOTE_SEQ, flags: SYN, ack: Some(LOCAL_SEQ + 1), options: syn_opts(), ..send_templ() });
    recv!(p, time 1100, recv_templ());
    assert_eq!(p.ep.info(p.id()).unwrap().srtt, None, "Karn: no sample");
    assert_eq!(p.ep.info(p.id()).unwrap().rto, Duration::from_secs(3));
    p.write(b"abc");
    recv!(p, time 1100, Seg { flags: PSH, payload: b"abc".to_vec(), ..recv_templ() });
    recv_nothing!(p, time 4099);
    recv!(p, time 4100, Seg { flags: PSH, payload: b"abc".to_vec(), ..recv_templ() });
}

#[test]
fn rto_after_retransmitted_syn_ack_is_three_seconds() {
    // The same rule for the passive side.
    let mut p = syn_received();
    recv!(p, time 1000, our_synack());
    send!(p, time 1100, peer_ack());
    p.conn = p.ep.accept(LOCAL_PORT);
    assert_eq!(p.ep.info(p.id()).unwrap().rto, Duration::from_secs(3));
}

#[test]
fn rtt_sample_sets_rto() {
    // RFC 6298 §2.2: first sample R: SRTT = R, RTTVAR = R/2, RTO = SRTT + 4 RTTVAR.
    let mut p = listen();
    send!(p, time 0, peer_syn());
    recv!(p, time 0, our_synack());
    send!(p, time 150, peer_ack());
    p.conn = p.ep.accept(LOCAL_PORT);
    let info = p.ep.info(p.id()).unwrap();
    assert_eq!(info.srtt, Some(Duration::from_millis(150)));
    assert_eq!(info.rto, Duration::from_millis(450));
    p.write(b"abc");
    recv!(p, time 200, Seg { flags: PSH, payload: b"abc".to_vec(), ..recv_templ() });
    recv_nothing!(p, time 649);
    recv!(p, time 650, Seg { flags: PSH, payload: b"abc".to_vec(), ..recv_templ() });
}

#[test]
fn rto_backoff_is_capped_at_max_rto() {
    // RFC 6298 §2.5: a maximum may be placed on RTO (at least 60 s); ours is
    // Config::max_rto, 120 s as Linux.
    let cfg = Config {
        user_timeout: Duration::from_secs(3600),
        ..test_config()
    };
    let mut p = established_with(cfg);
    p.write(b"x");
    let x = Seg {
        flags: PSH,
        payload: b"x".to_vec(),
        ..recv_templ()
    };
    recv!(p, time 0, x.clone());
    let mut t = 0u64;
    for i in 0..12 {
        let gap = (200u64 << i).min(120_000);
        t += gap;
        recv_nothing!(p, time t - 1);
        recv!(p, time t, x.clone());
    }
    // 200 ms doubled ten times is 204.8 s: the last two gaps were 120 s.
    assert_eq!(t, 200 * 1023 + 2 * 120_000);
}

#[test]
fn rto_resends_one_segment_then_slow_starts() {
    // RFC 5681 §3.1: after an RTO, cwnd = 1 SMSS (the loss window); each
    // ACK then opens it again, resending what followed (go-back-N).
    let mut p = established();
    let m = u32::from(MSS);
    let all = data(3 * MSS as usize);
    p.write(&all);
    for _ in 0..3 {
        assert!(p.poll(ms(0)).is_some());
    }
    recv_nothing!(p, time 199);
    recv!(p, time 200, Seg { payload: all[..1460].to_vec(), ..recv_templ() });
    recv_nothing!(p, time 200);
    send!(p, time 210, Seg { ack: Some(LOCAL_SEQ + 1 + m), ..send_templ() });
    recv!(p, time 210, Seg { seq: LOCAL_SEQ + 1 + m, payload: all[1460..2920].to_vec(), ..recv_templ() });
    recv!(p, time 210, Seg { seq: LOCAL_SEQ + 1 + 2 * m, flags: PSH, payload: all[2920..].to_vec(), ..recv_templ() });
    let info = p.ep.info(p.id()).unwrap();
    assert_eq!(
        info.ssthresh,
        3 * m * 7 / 10,
        "CUBIC: ssthresh = max(0.7 FlightSize, 2 SMSS) (RFC 9438 §4.6, §4.8)"
    );
}

#[test]
fn user_timeout_resets_connection() {
    // RFC 9293 §3.8.3 / §3.10.8: data unacknowledged for USER TIMEOUT closes
    // the connection. (The endpoint also sends a RST, which Linux does for
    // keep-alive timeouts but not for TCP_USER_TIMEOUT.)
    let cfg = Config {
        user_timeout: Duration::from_secs(2),
        ..test_config()
    };
    let mut p = established_with(cfg);
    p.write(&data(100));
    recv!(p, time 0, Seg { flags: PSH, payload: data(100), ..recv_templ() });
    let rexmit = Seg {
        flags: PSH,
        payload: data(100),
        ..recv_templ()
    };
    recv!(p, time 200, rexmit.clone());
    recv!(p, time 600, rexmit.clone());
    recv!(p, time 1400, rexmit);
    // The next expiry (3000 ms) would be past the 2 s user timeout: the
    // timer is clamped to it (as Linux), so the connection ends at 2 s.
    recv_nothing!(p, time 1999);
    recv!(p, time 2000, Seg { seq: LOCAL_SEQ + 101, flags: RST, window: 0, ..recv_templ() });
    let id = p.id();
    assert_eq!(p.take_events(), [Event::TimedOut(id), Event::Closed(id)]);
    assert_eq!(p.ep.connection_count(), 0);
}

#[test]
fn user_timeout_not_charged_for_a_zero_window_stall() {
    // The user timeout measures how long sent data stays unacknowledged. A
    // peer that keeps answering zero-window probes is alive; once its window
    // opens, the clock starts again for the data then sent.
    let cfg = Config {
        user_timeout: Duration::from_secs(2),
        ..test_config()
    };
    let mut p = established_with(cfg);
    let zero = Seg {
        ack: Some(LOCAL_SEQ + 1),
        window: 0,
        ..send_templ()
    };
    send!(p, time 0, zero.clone());
    p.write(&data(10));
    recv_nothing!(p, time 0);
    let probe = Seg {
        payload: data(1),
        ..recv_templ()
    };
    // Answer every probe at once for 6 s (the probe interval backs off but
    // stays clamped so that no 2 s pass without one).
    let mut probes = 0;
    while let Some(t) = p.next_timeout().filter(|t| t.as_millis() < 6000) {
        if let Some(s) = p.poll(t) {
            assert_eq!(s, probe);
            probes += 1;
            p.send(t + Duration::from_millis(1), zero.clone());
        }
    }
    assert!(probes >= 6, "{probes} probes");
    assert_eq!(p.state(), State::Established);
    send!(p, time 6300, Seg { ack: Some(LOCAL_SEQ + 1), ..send_templ() });
    recv!(p, time 6300, Seg { flags: PSH, payload: data(10), ..recv_templ() });
    // Lost: retransmitted at the RTO, not reset.
    recv_nothing!(p, time 6499);
    recv!(p, time 6500, Seg { flags: PSH, payload: data(10), ..recv_templ() });
    send!(p, time 6510, Seg { ack: Some(LOCAL_SEQ + 11), ..send_templ() });
    assert_eq!(p.state(), State::Established);
}

// =====================================================================
// Fast retransmit and recovery: NewReno and SACK
// (RFC 5681 §3.2, RFC 6582, RFC 6675)
// =====================================================================

/// ESTABLISHED with ten full segments in flight (the initial window);
/// returns the data.
#[track_caller]
fn ten_segments_in_flight(p: &mut Peer) -> Vec<u8> {
    let all = data(10 * MSS as usize);
    p.write(&all);
    for i in 0..10u32 {
        let s = p.poll(ms(0)).expect("segment");
        assert_eq!(s.seq, LOCAL_SEQ + 1 + i * u32::from(MSS));
    }
    recv_nothing!(p, time 0);
    all
}

/// The peer's ACK of the first `acked` segments of a [`ten_segments_in_flight`]
/// flight, with SACK blocks `(first, end)` in segment numbers.
fn sack_ack(acked: u32, blocks: &[(u32, u32)]) -> Seg {
    let (l, m) = (LOCAL_SEQ + 1, u32::from(MSS));
    let b: Vec<(SeqNum, SeqNum)> = blocks.iter().map(|(x, e)| (l + x * m, l + e * m)).collect();
    Seg {
        ack: Some(l + acked * m),
        options: TcpOptions {
            sack: sack(&b),
            ..Default::default()
        },
        ..send_templ()
    }
}

#[test]
fn fast_retransmit_and_newreno_partial_ack() {
    let mut p = established();
    let m = u32::from(MSS);
    let l = LOCAL_SEQ + 1;
    p.write(&data(10 * MSS as usize));
    // Initial window: 10 segments (RFC 6928).
    let all = data(10 * MSS as usize);
    let chunk = |i: u32| all[(i * m) as usize..((i + 1) * m) as usize].to_vec();
    for i in 0..10 {
        let flags = if i == 9 { PSH } else { NONE };
        recv!(p, time 0, Seg { seq: l + i * m, flags, payload: chunk(i), ..recv_templ() });
    }
    recv_nothing!(p, time 0);
    // Segment 1 (the second) is lost. The peer ACKs segment 0, then three
    // duplicates for segments 2, 3, 4.
    let ack = |a: SeqNum| Seg {
        ack: Some(a),
        ..send_templ()
    };
    send!(p, time 10, ack(l + m));
    recv_nothing!(p, time 10);
    send!(p, time 11, ack(l + m));
    send!(p, time 11, ack(l + m));
    recv_nothing!(p, time 11);
    send!(p, time 11, ack(l + m));
    recv!(p, time 11, Seg { seq: l + m, payload: chunk(1), ..recv_templ() });
    recv_nothing!(p, time 11);
    assert_eq!(p.ep.stats().fast_retransmits, 1);
    // A partial ACK (segments 1..=3 now received, 4 lost too): NewReno
    // retransmits the next hole at once (RFC 6582 §3.2 step 4).
    send!(p, time 20, ack(l + 4 * m));
    recv!(p, time 20, Seg { seq: l + 4 * m, payload: chunk(4), ..recv_templ() });
    recv_nothing!(p, time 20);
    // The full ACK ends recovery; nothing is resent.
    send!(p, time 30, ack(l + 10 * m));
    recv_nothing!(p, time 30);
    let info = p.ep.info(p.id()).unwrap();
    assert_eq!(info.in_flight, 0);
    assert_eq!(p.ep.stats().retransmits, 2);
    assert_eq!(p.ep.stats().rto_timeouts, 0);
}

/// ESTABLISHED without SACK (the peer's SYN offers only its MSS), with `cfg`.
#[track_caller]
fn established_no_sack_with(cfg: Config) -> Peer {
    let mss_only = TcpOptions {
        mss: Some(MSS),
        ..Default::default()
    };
    let mut p = listen_with(cfg);
    send!(p, time 0, Seg { options: mss_only, ..peer_syn() });
    recv!(p, time 0, Seg { options: mss_only, ..our_synack() });
    send!(p, time 0, peer_ack());
    p.conn = p.ep.accept(LOCAL_PORT);
    assert_eq!(p.state(), State::Established);
    p
}

#[test]
fn newreno_inflates_on_every_dup_ack_in_recovery_also_after_a_partial_ack() {
    // RFC 5681 §3.2 step 4: each duplicate ACK after the third inflates
    // cwnd by SMSS; RFC 6582 §3.2: after a partial ACK (step 5: deflate by
    // the amount acknowledged, add back one SMSS) recovery goes on, and so
    // does the inflation for every further duplicate. (NewReno's own
    // recovery, without PRR: what old recordings replay with.)
    let mut p = established_no_sack_with(legacy_recovery());
    let _ = ten_segments_in_flight(&mut p);
    let m = u32::from(MSS);
    let l = LOCAL_SEQ + 1;
    let ack = |a: SeqNum| Seg {
        ack: Some(a),
        ..send_templ()
    };
    let cwnd = |p: &Peer| p.ep.info(p.id()).unwrap().cwnd;
    // Segments 1 and 4 are lost.
    send!(p, time 10, ack(l + m));
    for _ in 0..3 {
        send!(p, time 11, ack(l + m));
    }
    assert_eq!(p.ep.stats().fast_retransmits, 1);
    // ssthresh = FlightSize / 2 = 4.5 SMSS; cwnd = ssthresh + 3 SMSS.
    let ssthresh = 9 * m / 2;
    assert_eq!(p.ep.info(p.id()).unwrap().ssthresh, ssthresh);
    assert_eq!(cwnd(&p), ssthresh + 3 * m);
    recv!(p, time 11, Seg { seq: l + m, payload: data(10 * MSS as usize)[m as usize..2 * m as usize].to_vec(), ..recv_templ() });
    send!(p, time 12, ack(l + m));
    assert_eq!(cwnd(&p), ssthresh + 4 * m);
    // Partial ACK of three segments: deflate by 3 SMSS, add back one.
    send!(p, time 20, ack(l + 4 * m));
    let after_partial = ssthresh + 4 * m - 3 * m + m;
    assert_eq!(cwnd(&p), after_partial);
    // Every duplicate of the partial ACK inflates again: 1, 2, 3, 4 SMSS.
    for k in 1..=4 {
        send!(p, time 21, ack(l + 4 * m));
        assert_eq!(
            cwnd(&p),
            after_partial + k * m,
            "duplicate {k} after the partial ACK"
        );
    }
    assert_eq!(p.ep.stats().fast_retransmits, 1);
    // The full ACK ends recovery (step 6): cwnd = min(ssthresh,
    // max(FlightSize, SMSS) + SMSS), with nothing left in flight 2 SMSS.
    send!(p, time 30, ack(l + 10 * m));
    assert_eq!(cwnd(&p), 2 * m);
}

#[test]
fn dup_acks_with_window_change_are_not_duplicates() {
    // RFC 5681 §2: a duplicate ACK has (d) the same advertised window.
    let mut p = established();
    let m = u32::from(MSS);
    let l = LOCAL_SEQ + 1;
    p.write(&data(4 * MSS as usize));
    for _ in 0..4 {
        assert!(p.poll(ms(0)).is_some());
    }
    for w in [60000u16, 60001, 60002, 60003] {
        send!(p, time 10, Seg { ack: Some(l + m), window: w, ..send_templ() });
    }
    recv_nothing!(p, time 10);
    assert_eq!(p.ep.stats().fast_retransmits, 0);
}

#[test]
fn rto_during_fast_recovery_leaves_it() {
    // RFC 6582 §3.2 step 6 / RFC 5681 §3.1: on an RTO, recovery ends,
    // cwnd falls to one segment and SND.UNA's segment is resent.
    let mut p = established();
    let _ = ten_segments_in_flight(&mut p);
    let m = u32::from(MSS);
    let l = LOCAL_SEQ + 1;
    let dup = Seg {
        ack: Some(l + m),
        ..send_templ()
    };
    send!(p, time 10, dup.clone());
    send!(p, time 11, dup.clone());
    send!(p, time 11, dup.clone());
    send!(p, time 11, dup);
    let fr = p.poll(ms(11)).expect("fast retransmit");
    assert_eq!(fr.seq, l + m);
    recv_nothing!(p, time 11);
    // Nothing more arrives: the RTO (200 ms from the last ACK) fires.
    recv_nothing!(p, time 209);
    let rto = p.poll(ms(210)).expect("RTO retransmission");
    assert_eq!(rto.seq, l + m);
    recv_nothing!(p, time 210);
    assert_eq!(p.ep.info(p.id()).unwrap().cwnd, m);
}

/// NewReno with RFC 6675's window in recovery, no PRR, no HyStart++: the
/// behaviour before PRR and CUBIC, which recordings without those sidecar
/// fields replay with.
fn legacy_recovery() -> Config {
    Config {
        congestion: tcp::Congestion::NewReno,
        prr: false,
        hystart: false,
        ..test_config()
    }
}

#[test]
fn sack_recovery_resends_holes_as_the_pipe_allows() {
    // Segments 1 and 3 of 0..=9 are lost. Each ACK the peer sends carries
    // SACK blocks for what arrived above the hole. (RFC 6675's window
    // without PRR; with PRR, prr_* below.)
    let mut p = established_with(legacy_recovery());
    let all = ten_segments_in_flight(&mut p);
    let m = u32::from(MSS);
    let l = LOCAL_SEQ + 1;
    let seg = |i: u32| Seg {
        seq: l + i * m,
        payload: all[(i * m) as usize..((i + 1) * m) as usize].to_vec(),
        ..recv_templ()
    };
    // (first, end) in segment numbers.
    let ack = |blocks: &[(u32, u32)]| {
        let b: Vec<(SeqNum, SeqNum)> = blocks.iter().map(|(a, e)| (l + a * m, l + e * m)).collect();
        Seg {
            ack: Some(l + m),
            options: TcpOptions {
                sack: sack(&b),
                ..Default::default()
            },
            ..send_templ()
        }
    };
    send!(p, time 10, Seg { ack: Some(l + m), ..send_templ() });
    send!(p, time 11, ack(&[(2, 3)]));
    send!(p, time 11, ack(&[(4, 5), (2, 3)]));
    recv_nothing!(p, time 11);
    // Three segments SACKed above the hole: fast retransmit of segment 1
    // (RFC 6675 §5: DupThresh segments' worth of SACKed data).
    send!(p, time 12, ack(&[(4, 6), (2, 3)]));
    recv!(p, time 12, seg(1));
    recv_nothing!(p, time 12);
    assert_eq!(p.ep.stats().fast_retransmits, 1);
    // As more arrives above, the pipe shrinks below cwnd (ssthresh, half
    // the flight) and the next hole, segment 3, is resent.
    send!(p, time 13, ack(&[(4, 7), (2, 3)]));
    recv_nothing!(p, time 13);
    send!(p, time 14, ack(&[(4, 8), (2, 3)]));
    recv!(p, time 14, seg(3));
    recv_nothing!(p, time 14);
    // Both holes filled: the cumulative ACK covers everything; recovery ends.
    send!(p, time 20, Seg { ack: Some(l + 10 * m), ..send_templ() });
    recv_nothing!(p, time 20);
    assert_eq!(in_flight(&p), 0);
    assert_eq!(p.ep.stats().retransmits, 2);
    assert_eq!(p.ep.stats().rto_timeouts, 0);
}

#[test]
fn needless_fast_retransmit_is_undone_by_dsack() {
    // Segment 1 of 0..=9 is only reordered: three SACKed segments above it
    // trigger a fast retransmit, then the original arrives, then the
    // retransmission, which the peer reports as a duplicate (D-SACK, RFC
    // 2883). RFC 3708 §3: every retransmission of the episode was needless;
    // the window reduction is undone (RFC 4015 §3.2).
    let mut p = established();
    let all = ten_segments_in_flight(&mut p);
    let m = u32::from(MSS);
    let l = LOCAL_SEQ + 1;
    let seg = |i: u32| Seg {
        seq: l + i * m,
        payload: all[(i * m) as usize..((i + 1) * m) as usize].to_vec(),
        ..recv_templ()
    };
    let ack = sack_ack;
    send!(p, time 10, ack(1, &[]));
    let before = p.ep.info(p.id()).unwrap();
    send!(p, time 11, ack(1, &[(2, 3)]));
    send!(p, time 11, ack(1, &[(2, 4)]));
    send!(p, time 12, ack(1, &[(2, 5)]));
    recv!(p, time 12, seg(1));
    let cut = p.ep.info(p.id()).unwrap();
    assert!(
        cut.ssthresh < before.ssthresh,
        "the fast retransmit cut ssthresh"
    );
    // The original arrives: all acknowledged, recovery over. Nothing says
    // yet that the retransmission was needless.
    send!(p, time 13, ack(10, &[]));
    assert_eq!(p.ep.stats().spurious_recoveries, 0);
    // A D-SACK for data that was never retransmitted (a duplicate made by
    // the network) proves nothing.
    send!(p, time 14, ack(10, &[(5, 6)]));
    assert_eq!(p.ep.stats().dsacks_in, 1);
    assert_eq!(p.ep.stats().spurious_recoveries, 0);
    assert!(p.ep.info(p.id()).unwrap().ssthresh < before.ssthresh);
    // The retransmission's D-SACK: undone.
    send!(p, time 15, ack(10, &[(1, 2)]));
    assert_eq!(p.ep.stats().dsacks_in, 2);
    assert_eq!(p.ep.stats().spurious_recoveries, 1);
    let after = p.ep.info(p.id()).unwrap();
    assert_eq!(after.ssthresh, before.ssthresh, "ssthresh restored");
    assert!(
        after.cwnd >= before.cwnd,
        "cwnd {} < {}",
        after.cwnd,
        before.cwnd
    );
    recv_nothing!(p, time 15);
}

#[test]
fn dsack_for_part_of_the_retransmissions_undoes_nothing() {
    // Two holes resent (segments 1 and 3); only segment 1's retransmission
    // comes back as a duplicate: segment 3 was really lost, the reduction
    // stands (RFC 3708 §3 wants every retransmission reported).
    let mut p = established();
    let _ = ten_segments_in_flight(&mut p);
    let ack = sack_ack;
    send!(p, time 10, ack(1, &[]));
    let before = p.ep.info(p.id()).unwrap();
    send!(p, time 11, ack(1, &[(2, 3)]));
    send!(p, time 11, ack(1, &[(4, 5), (2, 3)]));
    send!(p, time 12, ack(1, &[(4, 6), (2, 3)]));
    send!(p, time 13, ack(1, &[(4, 7), (2, 3)]));
    send!(p, time 14, ack(1, &[(4, 8), (2, 3)]));
    while p.poll(ms(14)).is_some() {}
    assert_eq!(p.ep.stats().retransmits, 2);
    send!(p, time 20, ack(10, &[]));
    send!(p, time 21, ack(10, &[(1, 2)]));
    assert_eq!(p.ep.stats().dsacks_in, 1);
    assert_eq!(p.ep.stats().spurious_recoveries, 0);
    assert!(p.ep.info(p.id()).unwrap().ssthresh < before.ssthresh);
}

#[test]
fn sack_blocks_outside_the_flight_are_ignored() {
    // SACK blocks below SND.UNA or above SND.MAX are bogus (RFC 2018 §8,
    // RFC 6675 §5): they must not trigger a retransmission.
    let mut p = established();
    let _ = ten_segments_in_flight(&mut p);
    let m = u32::from(MSS);
    let l = LOCAL_SEQ + 1;
    let bogus = sack(&[(l + 20 * m, l + 30 * m), (l - 5000, l - 100)]);
    for t in 10..15 {
        send!(p, time t, Seg { ack: Some(l + m), options: TcpOptions { sack: bogus, ..Default::default() }, ..send_templ() });
    }
    // Plain duplicate ACKs still count (RFC 5681): the third one retransmits.
    let s = p
        .poll(ms(14))
        .expect("fast retransmit after duplicate ACKs");
    assert_eq!(s.seq, l + m);
    recv_nothing!(p, time 14);
}

// =====================================================================
// Zero-window probes (RFC 9293 §3.8.6.1)
// =====================================================================

#[test]
fn persist_probes_one_byte_with_backoff() {
    let mut p = established();
    // The peer closes its window.
    send!(p, time 0, Seg { ack: Some(LOCAL_SEQ + 1), window: 0, ..send_templ() });
    p.write(&data(100));
    recv_nothing!(p, time 0);
    // Probes carry one byte, the first unacknowledged one, every time;
    // the interval doubles from the RTO (200 ms).
    let probe = Seg {
        payload: data(1),
        ..recv_templ()
    };
    let zero_ack = Seg {
        ack: Some(LOCAL_SEQ + 1),
        window: 0,
        ..send_templ()
    };
    recv_nothing!(p, time 199);
    recv!(p, time 200, probe.clone());
    send!(p, time 201, zero_ack.clone());
    recv_nothing!(p, time 599);
    recv!(p, time 600, probe.clone());
    send!(p, time 601, zero_ack.clone());
    recv_nothing!(p, time 1399);
    recv!(p, time 1400, probe.clone());
    send!(p, time 1401, zero_ack.clone());
    recv_nothing!(p, time 2999);
    recv!(p, time 3000, probe);
    // Duplicate zero-window ACKs never trigger a fast retransmit into the window.
    send!(p, time 3001, zero_ack);
    recv_nothing!(p, time 3001);
    assert_eq!(p.ep.stats().fast_retransmits, 0);
    // The window opens: everything goes.
    send!(p, time 3100, Seg { ack: Some(LOCAL_SEQ + 1), ..send_templ() });
    recv!(p, time 3100, Seg { flags: PSH, payload: data(100), ..recv_templ() });
}

#[test]
fn persist_probe_accepted_byte() {
    // The peer takes the probe byte (its window reopened meanwhile).
    let mut p = established();
    send!(p, time 0, Seg { ack: Some(LOCAL_SEQ + 1), window: 0, ..send_templ() });
    p.write(&data(100));
    recv_nothing!(p, time 0);
    recv!(p, time 200, Seg { payload: data(1), ..recv_templ() });
    send!(p, time 210, Seg { ack: Some(LOCAL_SEQ + 2), window: 1000, ..send_templ() });
    recv!(p, time 210, Seg { seq: LOCAL_SEQ + 2, flags: PSH, payload: data(100)[1..].to_vec(), ..recv_templ() });
}

#[test]
fn persist_probes_survive_lost_window_update() {
    // The point of the persist timer: a lost window update must not deadlock.
    let mut p = established();
    send!(p, time 0, Seg { ack: Some(LOCAL_SEQ + 1), window: 0, ..send_templ() });
    p.write(&data(10));
    recv_nothing!(p, time 0);
    recv!(p, time 200, Seg { payload: data(1), ..recv_templ() });
    send!(p, time 201, Seg { ack: Some(LOCAL_SEQ + 1), window: 0, ..send_templ() });
    // (the window update the peer sends here is lost)
    recv!(p, time 600, Seg { payload: data(1), ..recv_templ() });
    // The probe draws the open window.
    send!(p, time 601, Seg { ack: Some(LOCAL_SEQ + 2), window: 1000, ..send_templ() });
    recv!(p, time 601, Seg { seq: LOCAL_SEQ + 2, flags: PSH, payload: data(10)[1..].to_vec(), ..recv_templ() });
}

#[test]
fn segments_stay_acceptable_while_a_probe_byte_is_out() {
    // While a zero-window probe byte is unacknowledged, what we send must
    // still pass the peer's acceptability test for a zero window (RFC 9293
    // §3.10.7.4, "0 / 0: SEG.SEQ = RCV.NXT"): ACKs and RSTs carry SND.UNA,
    // not the probe's end (Linux: tcp_acceptable_seq).
    let mut p = established();
    send!(p, time 0, Seg { ack: Some(LOCAL_SEQ + 1), window: 0, ..send_templ() });
    p.write(&data(10));
    recv_nothing!(p, time 0);
    recv!(p, time 200, Seg { payload: data(1), ..recv_templ() });
    send!(p, time 201, Seg { ack: Some(LOCAL_SEQ + 1), window: 0, payload: b"x".to_vec(), ..send_templ() });
    recv!(p, time 241, Seg { ack: Some(REMOTE_SEQ + 2), window: RCV_BUF as u16 - 1, ..recv_templ() });
    p.ep.abort(p.id()).unwrap();
    recv!(p, time 250, Seg { ack: Some(REMOTE_SEQ + 2), flags: RST, window: 0, ..recv_templ() });
}

#[test]
fn zero_window_probes_give_up_after_user_timeout() {
    // Probes unanswered (the peer vanished) for the user timeout: reset.
    let cfg = Config {
        user_timeout: Duration::from_secs(2),
        ..test_config()
    };
    let mut p = established_with(cfg);
    send!(p, time 0, Seg { ack: Some(LOCAL_SEQ + 1), window: 0, ..send_templ() });
    p.write(&data(10));
    recv_nothing!(p, time 0);
    let probe = Seg {
        payload: data(1),
        ..recv_templ()
    };
    recv!(p, time 200, probe.clone());
    recv!(p, time 600, probe.clone());
    recv!(p, time 1400, probe);
    // Nothing heard since 0 ms: the persist timer is clamped to the 2 s
    // user timeout.
    recv_nothing!(p, time 1999);
    recv!(p, time 2000, Seg { flags: RST, window: 0, ..recv_templ() });
    let id = p.id();
    assert_eq!(p.take_events(), [Event::TimedOut(id), Event::Closed(id)]);
}

// =====================================================================
// Window scaling (RFC 7323 §2)
// =====================================================================

#[test]
fn window_scale_negotiated() {
    let cfg = Config {
        recv_buffer: 1 << 20,
        ..test_config()
    };
    let mut p = listen_with(cfg);
    let opts = TcpOptions {
        window_scale: Some(7),
        ..syn_opts()
    };
    send!(p, time 0, Seg { options: opts, ..peer_syn() });
    // The SYN-ACK's window is never scaled (§2.2); our shift for 1 MiB is 5.
    recv!(p, time 0, Seg { window: 65535, options: TcpOptions { window_scale: Some(5), ..syn_opts() }, ..our_synack() });
    send!(p, time 0, Seg { window: 1000, ..peer_ack() });
    p.conn = p.ep.accept(LOCAL_PORT);
    assert_eq!(p.ep.info(p.id()).unwrap().snd_wnd, 1000 << 7);
    send!(p, time 10, Seg { ack: Some(LOCAL_SEQ + 1), window: 1000, payload: data(100), ..send_templ() });
    recv!(p, time 50, Seg { ack: Some(REMOTE_SEQ + 101), window: (((1 << 20) - 100) >> 5) as u16, ..recv_templ() });
}

#[test]
fn window_scale_absent_when_peer_omits_it() {
    let cfg = Config {
        recv_buffer: 1 << 20,
        ..test_config()
    };
    let mut p = listen_with(cfg);
    send!(p, time 0, peer_syn());
    recv!(p, time 0, our_synack());
    send!(p, time 0, Seg { window: 1000, ..peer_ack() });
    p.conn = p.ep.accept(LOCAL_PORT);
    assert_eq!(p.ep.info(p.id()).unwrap().snd_wnd, 1000);
    send!(p, time 10, Seg { ack: Some(LOCAL_SEQ + 1), window: 1000, payload: data(100), ..send_templ() });
    // The field caps at 65535 unscaled; with 1 MiB of buffer free the right
    // edge keeps following RCV.NXT (RFC 9293 §3.8.6.2.2: RCV.BUFF - RCV.USER
    // - RCV.WND is far above the SWS threshold), as Linux does.
    recv!(p, time 50, Seg { ack: Some(REMOTE_SEQ + 101), window: 65535, ..recv_templ() });
}

#[test]
fn window_scale_offered_on_syn_dropped_when_not_returned() {
    let cfg = Config {
        recv_buffer: 1 << 20,
        ..test_config()
    };
    let mut p = Peer::new(cfg);
    p.conn = Some(p.ep.connect(ms(0), LOCAL_ADDR.into(), p.remote()).unwrap());
    recv!(p, time 0, Seg { options: TcpOptions { window_scale: Some(5), ..our_syn().options }, ..our_syn() });
    send!(p, time 10, Seg { seq: REMOTE_SEQ, flags: SYN, ack: Some(LOCAL_SEQ + 1), window: 1000, options: syn_opts(), ..send_templ() });
    recv!(p, time 10, recv_templ());
    assert_eq!(p.ep.info(p.id()).unwrap().snd_wnd, 1000);
}

#[test]
fn window_scale_shift_above_14_is_used_as_14() {
    // RFC 7323 §2.3: "If a Window Scale option is received with a shift.cnt
    // value larger than 14, the TCP SHOULD log the error but MUST use 14".
    let mut p = listen();
    send!(p, time 0, Seg { options: TcpOptions { window_scale: Some(20), ..syn_opts() }, ..peer_syn() });
    recv!(p, time 0, Seg { options: TcpOptions { window_scale: Some(0), ..syn_opts() }, ..our_synack() });
    send!(p, time 0, Seg { window: 2, ..peer_ack() });
    p.conn = p.ep.accept(LOCAL_PORT);
    assert_eq!(p.ep.info(p.id()).unwrap().snd_wnd, 2 << 14);
}

#[test]
fn active_open_window_scaling() {
    // RFC 7323 §2.2: the SYN-ACK's own window is unscaled; from then on the
    // peer's windows are shifted by its scale.
    let mut p = syn_sent();
    send!(p, time 10, Seg { seq: REMOTE_SEQ, flags: SYN, ack: Some(LOCAL_SEQ + 1), window: 1000, options: TcpOptions { window_scale: Some(2), ..syn_opts() }, ..send_templ() });
    recv!(p, time 10, recv_templ());
    assert_eq!(p.ep.info(p.id()).unwrap().snd_wnd, 1000);
    send!(p, time 20, Seg { ack: Some(LOCAL_SEQ + 1), window: 1000, ..send_templ() });
    assert_eq!(p.ep.info(p.id()).unwrap().snd_wnd, 4000);
}

#[test]
fn window_scaling_and_sack_can_be_switched_off() {
    let cfg = Config {
        window_scaling: false,
        sack: false,
        recv_buffer: 1 << 20,
        ..test_config()
    };
    let mut p = listen_with(cfg);
    let opts = TcpOptions {
        window_scale: Some(7),
        ..syn_opts()
    };
    send!(p, time 0, Seg { options: opts, ..peer_syn() });
    recv!(p, time 0, Seg { options: TcpOptions { mss: Some(MSS), ..Default::default() }, ..our_synack() });
    send!(p, time 0, Seg { window: 1000, ..peer_ack() });
    p.conn = p.ep.accept(LOCAL_PORT);
    assert_eq!(p.ep.info(p.id()).unwrap().snd_wnd, 1000, "no scaling");
    // Out-of-order data: a plain duplicate ACK, no SACK blocks.
    send!(p, time 10, Seg { seq: REMOTE_SEQ + 11, ack: Some(LOCAL_SEQ + 1), window: 1000, payload: data(10), ..send_templ() });
    recv!(p, time 10, recv_templ());
}

// =====================================================================
// Timestamps and PAWS (RFC 7323 §3, §4, §5)
// =====================================================================

fn ts_config() -> Config {
    Config {
        timestamps: true,
        ..test_config()
    }
}

/// ESTABLISHED with timestamps: the peer's TSval is 1000 on its SYN and
/// 1001 on its ACK; ours reads as our clock in milliseconds.
#[track_caller]
fn established_ts() -> Peer {
    let mut p = listen_with(ts_config());
    let ts = |v, e| TcpOptions {
        timestamps: Some((v, e)),
        ..Default::default()
    };
    send!(p, time 0, Seg { options: TcpOptions { timestamps: Some((1000, 0)), ..syn_opts() }, ..peer_syn() });
    recv!(p, time 0, Seg { options: TcpOptions { timestamps: Some((0, 1000)), ..syn_opts() }, ..our_synack() });
    send!(p, time 5, Seg { options: ts(1001, 0), ..peer_ack() });
    p.conn = p.ep.accept(LOCAL_PORT);
    assert_eq!(p.ep.info(p.id()).unwrap().mss, MSS - 12);
    p
}

#[test]
fn timestamps_negotiated_and_echoed() {
    let mut p = established_ts();
    let ts = |v, e| TcpOptions {
        timestamps: Some((v, e)),
        ..Default::default()
    };
    send!(p, time 10, Seg { ack: Some(LOCAL_SEQ + 1), options: ts(1002, 5), payload: b"abc".to_vec(), ..send_templ() });
    recv!(p, time 50, Seg { ack: Some(REMOTE_SEQ + 4), window: RCV_BUF as u16 - 3, options: ts(50, 1002), ..recv_templ() });
}

#[test]
fn timestamps_on_every_segment_and_rst_not_paws_checked() {
    // RFC 7323 §3.2: once negotiated, every segment but a RST carries the
    // option; our active-open SYN offers it with TSecr 0.
    let mut p = syn_sent_with(ts_config());
    let ts = |v, e| TcpOptions {
        timestamps: Some((v, e)),
        ..Default::default()
    };
    send!(p, time 30, Seg { seq: REMOTE_SEQ, flags: SYN, ack: Some(LOCAL_SEQ + 1), options: TcpOptions { timestamps: Some((500, 0)), ..syn_opts() }, ..send_templ() });
    recv!(p, time 30, Seg { options: ts(30, 500), ..recv_templ() });
    p.write(b"abc");
    recv!(p, time 31, Seg { flags: PSH, payload: b"abc".to_vec(), options: ts(31, 500), ..recv_templ() });
    // A pure ACK with an old TSval is dropped by PAWS and answered.
    send!(p, time 40, Seg { ack: Some(LOCAL_SEQ + 4), options: ts(499, 31), ..send_templ() });
    recv!(p, time 40, Seg { seq: LOCAL_SEQ + 4, options: ts(40, 500), ..recv_templ() });
    assert_eq!(in_flight(&p), 3, "the PAWS-rejected ACK was not processed");
    assert_eq!(p.ep.stats().drops.paws, 1);
}

#[test]
fn timestamps_rtt_sample() {
    // RFC 7323 §4.1: the echoed TSecr gives an RTT sample on every ACK.
    let mut p = established_ts();
    let ts = |v, e| TcpOptions {
        timestamps: Some((v, e)),
        ..Default::default()
    };
    p.write(b"abc");
    recv!(p, time 100, Seg { flags: PSH, payload: b"abc".to_vec(), options: ts(100, 1001), ..recv_templ() });
    send!(p, time 400, Seg { ack: Some(LOCAL_SEQ + 4), options: ts(1400, 100), ..send_templ() });
    // The handshake sampled 5 ms; this ACK echoes TSval 100 at 400 ms, a
    // 300 ms sample. RFC 6298 §2.3: SRTT = 7/8 * 5 + 1/8 * 300 = 41.875 ms.
    assert_eq!(
        p.ep.info(p.id()).unwrap().srtt,
        Some(Duration::from_micros(41_875))
    );
}

#[test]
fn ts_recent_follows_in_order_segments_only() {
    // RFC 7323 §4.3: TS.Recent takes SEG.TSval only when SEG.SEQ =<
    // Last.ACK.sent; an out-of-order segment's newer TSval is not echoed.
    let mut p = established_ts();
    let ts = |v, e| TcpOptions {
        timestamps: Some((v, e)),
        ..Default::default()
    };
    send!(p, time 10, Seg { seq: REMOTE_SEQ + 101, ack: Some(LOCAL_SEQ + 1), options: ts(5000, 5), payload: data(10), ..send_templ() });
    let dup = p.poll(ms(10)).expect("duplicate ACK");
    assert_eq!(dup.options.timestamps, Some((10, 1001)));
    send!(p, time 20, Seg { ack: Some(LOCAL_SEQ + 1), options: ts(1010, 5), payload: data(100), ..send_templ() });
    let ack = p.poll(ms(20)).expect("ACK filling the gap");
    assert_eq!(ack.options.timestamps, Some((20, 1010)));
    assert_eq!(ack.ack, Some(REMOTE_SEQ + 111));
}

#[test]
fn paws_drops_old_timestamp_and_acks() {
    // RFC 7323 §5.3 R1: "If ... SEG.TSval < TS.Recent ... send an
    // acknowledgment in reply and drop the segment".
    let mut p = established_ts();
    let ts = |v, e| TcpOptions {
        timestamps: Some((v, e)),
        ..Default::default()
    };
    send!(p, time 10, Seg { ack: Some(LOCAL_SEQ + 1), options: ts(1002, 5), payload: b"abc".to_vec(), ..send_templ() });
    send!(p, time 20, Seg { seq: REMOTE_SEQ + 4, ack: Some(LOCAL_SEQ + 1), options: ts(999, 5), payload: b"old".to_vec(), ..send_templ() });
    recv!(p, time 20, Seg { ack: Some(REMOTE_SEQ + 4), window: RCV_BUF as u16 - 3, options: ts(20, 1002), ..recv_templ() });
    assert_eq!(p.read_all(), b"abc");
    assert_eq!(p.ep.stats().drops.paws, 1);
    // A RST is not subject to PAWS (R1: "and the RST bit is not set").
    send!(p, time 30, Seg { seq: REMOTE_SEQ + 4, flags: RST, options: ts(999, 5), ..send_templ() });
    assert_eq!(p.ep.connection_count(), 0);
}

#[test]
fn paws_rejected_segments_without_data_draw_rate_limited_acks() {
    // As Linux (tcp_oow_rate_limited with the PAWS counter; in TIME-WAIT
    // tcp_timewait_check_oow_rate_limit): PAWS-rejected segments without
    // data are answered at most once per 500 ms, those with data always.
    let ts = |v, e| TcpOptions {
        timestamps: Some((v, e)),
        ..Default::default()
    };
    let mut p = established_ts();
    send!(p, time 10, Seg { ack: Some(LOCAL_SEQ + 1), options: ts(1002, 5), payload: b"abc".to_vec(), ..send_templ() });
    let old = Seg {
        seq: REMOTE_SEQ + 4,
        ack: Some(LOCAL_SEQ + 1),
        options: ts(999, 5),
        ..send_templ()
    };
    let ack = |t| Seg {
        ack: Some(REMOTE_SEQ + 4),
        window: RCV_BUF as u16 - 3,
        options: ts(t, 1002),
        ..recv_templ()
    };
    send!(p, time 20, old.clone());
    recv!(p, time 20, ack(20));
    send!(p, time 30, old.clone());
    recv_nothing!(p, time 30);
    // Data is always answered, and leaves the limit alone.
    send!(p, time 40, Seg { payload: b"old".to_vec(), ..old.clone() });
    recv!(p, time 40, ack(40));
    send!(p, time 50, old.clone());
    recv_nothing!(p, time 50);
    send!(p, time 520, old);
    recv!(p, time 520, ack(520));
    assert_eq!(p.ep.stats().drops.paws, 5);
    assert_eq!(p.read_all(), b"abc");

    // TIME-WAIT likewise; each rejected segment still restarts 2 MSL.
    let mut p = established_ts();
    p.ep.close(p.id()).unwrap();
    recv!(p, time 10, Seg { flags: FIN, options: ts(10, 1001), ..recv_templ() });
    send!(p, time 11, Seg { flags: FIN, ack: Some(LOCAL_SEQ + 2), options: ts(1005, 10), ..send_templ() });
    let tw_ack = |t| Seg {
        seq: LOCAL_SEQ + 2,
        ack: Some(REMOTE_SEQ + 2),
        window: RCV_BUF as u16 - 1,
        options: ts(t, 1005),
        ..recv_templ()
    };
    recv!(p, time 11, tw_ack(11));
    assert_eq!(p.count(State::TimeWait), 1);
    let old = Seg {
        seq: REMOTE_SEQ + 2,
        ack: Some(LOCAL_SEQ + 2),
        options: ts(1000, 10),
        ..send_templ()
    };
    send!(p, time 1000, old.clone());
    recv!(p, time 1000, tw_ack(1000));
    send!(p, time 1100, old.clone());
    recv_nothing!(p, time 1100);
    send!(p, time 1200, old);
    recv_nothing!(p, time 1200);
    assert_eq!(p.ep.stats().drops.paws, 3);
    // 2 MSL from the last one.
    recv_nothing!(p, time 61_199);
    assert_eq!(p.count(State::TimeWait), 1);
    recv_nothing!(p, time 61_200);
    assert_eq!(p.count(State::TimeWait), 0);
}

/// [`established_ts`] with ten full segments in flight, sent at 10 ms with
/// TSval 10; the peer's TS.Recent is 1001. Returns the segment size.
#[track_caller]
fn ts_ten_segments_in_flight(p: &mut Peer) -> u32 {
    let m = u32::from(MSS - 12);
    p.write(&data(10 * m as usize));
    for i in 0..10u32 {
        let s = p.poll(ms(10)).expect("segment");
        assert_eq!(s.seq, LOCAL_SEQ + 1 + i * m);
    }
    recv_nothing!(p, time 10);
    m
}

/// A duplicate ACK of a [`ts_ten_segments_in_flight`] flight (SEG.ACK =
/// SND.UNA: segment 0 is missing) with TSval `tsval` and SACK blocks
/// `(first, end)` in segment numbers.
fn ts_dup_ack(m: u32, tsval: u32, blocks: &[(u32, u32)]) -> Seg {
    let l = LOCAL_SEQ + 1;
    let b: Vec<(SeqNum, SeqNum)> = blocks.iter().map(|(x, e)| (l + x * m, l + e * m)).collect();
    Seg {
        ack: Some(l),
        options: TcpOptions {
            timestamps: Some((tsval, 10)),
            sack: sack(&b),
            ..Default::default()
        },
        ..send_templ()
    }
}

#[test]
fn paws_takes_a_disordered_duplicate_ack_within_the_replay_window() {
    // Linux (tcp_disordered_ack): a pure duplicate ACK at RCV.NXT that
    // changes no window and whose TSval is behind TS.Recent by less than
    // one RTO (here 200 ms: ~200 ticks) is an ACK that was overtaken on the
    // way, not an old duplicate. It is taken, SACK blocks and all, where
    // RFC 7323 §5.3 R1 would drop it.
    let mut p = established_ts();
    let m = ts_ten_segments_in_flight(&mut p);
    send!(p, time 20, ts_dup_ack(m, 1010, &[(1, 2)]));
    // The later-sent ACK arrives first (TS.Recent becomes 1012) ...
    send!(p, time 21, ts_dup_ack(m, 1012, &[(1, 3)]));
    recv_nothing!(p, time 21);
    // ... then the earlier one, 1 tick older, with a block (segment 5) the
    // scoreboard does not have: three segments SACKed, so segment 0 goes
    // out again (RFC 6675 §5, DupThresh).
    send!(p, time 22, ts_dup_ack(m, 1011, &[(5, 6), (1, 3)]));
    let rtx = p.poll(ms(22)).expect("fast retransmission");
    assert_eq!(rtx.seq, LOCAL_SEQ + 1);
    assert_eq!(rtx.payload.len(), m as usize);
    // TS.Recent did not move back to the disordered ACK's TSval.
    assert_eq!(rtx.options.timestamps, Some((22, 1012)));
    // PRR (RFC 6937 §3) may let another hole follow, as the three SACKed
    // segments left the network (tcpd's pipe counts every hole below the
    // highest SACK as lost); nothing SACKed, and segment 0 only once.
    while let Some(s) = p.poll(ms(22)) {
        let i = s.seq.0.wrapping_sub((LOCAL_SEQ + 1).0) / m;
        assert!(matches!(i, 3 | 4), "only a hole: segment {i}: {s:?}");
    }
    let st = p.ep.stats();
    assert_eq!(st.paws_disordered_acks, 1);
    assert_eq!(st.drops.paws, 0);
    assert_eq!(st.fast_retransmits, 1);
    // Its window (the same as the one in force) did not change SND.WND.
    assert_eq!(
        p.ep.info(p.id()).unwrap().snd_wnd,
        u32::from(send_templ().window)
    );
}

#[test]
fn paws_still_drops_a_disordered_ack_outside_the_replay_window() {
    // The same ACK with a TSval more than one RTO (200 ms) behind TS.Recent
    // is not taken for a reordered one: PAWS drops it (RFC 7323 §5.3 R1)
    // and its SACK block is not used; so are one that would open the
    // window (tcp_may_update_window) and one that acknowledges nothing
    // new but is not at SND.UNA's duplicate (it carries data).
    let mut p = established_ts();
    let m = ts_ten_segments_in_flight(&mut p);
    send!(p, time 20, ts_dup_ack(m, 1010, &[(1, 2)]));
    send!(p, time 21, ts_dup_ack(m, 1212, &[(1, 3)]));
    recv_nothing!(p, time 21);
    // 201 ticks behind: outside the replay window.
    send!(p, time 22, ts_dup_ack(m, 1011, &[(5, 6), (1, 3)]));
    // Answered with an ACK (rate-limited), not a retransmission.
    let ack = p.poll(ms(22)).expect("ACK answering the PAWS drop");
    assert!(ack.payload.is_empty());
    assert_eq!(ack.options.timestamps, Some((22, 1212)));
    recv_nothing!(p, time 22);
    // Within the window, but with a larger window than SND.WND: an update
    // Linux would take from it, so not a disordered ACK. Dropped.
    let wider = Seg {
        window: send_templ().window + 1,
        ..ts_dup_ack(m, 1211, &[(5, 6), (1, 3)])
    };
    send!(p, time 23, wider);
    // Within the window, but carrying data: not a pure ACK. Dropped.
    let with_data = Seg {
        payload: b"x".to_vec(),
        ..ts_dup_ack(m, 1211, &[(5, 6), (1, 3)])
    };
    send!(p, time 24, with_data);
    while let Some(s) = p.poll(ms(24)) {
        assert!(s.payload.is_empty(), "no retransmission: {s:?}");
    }
    let st = p.ep.stats();
    assert_eq!(st.drops.paws, 3);
    assert_eq!(st.paws_disordered_acks, 0);
    assert_eq!(st.fast_retransmits, 0);
    assert_eq!(
        p.ep.info(p.id()).unwrap().snd_wnd,
        u32::from(send_templ().window)
    );
}

#[test]
fn paws_ts_recent_expires_after_24_days() {
    // RFC 7323 §5.5: after more than 24 days idle, TS.Recent is invalid and
    // a segment with an older TSval (the peer's clock may have wrapped) is
    // accepted.
    let mut p = established_ts();
    let ts = |v, e| TcpOptions {
        timestamps: Some((v, e)),
        ..Default::default()
    };
    let day = 86_400_000u64;
    send!(p, time 25 * day, Seg { ack: Some(LOCAL_SEQ + 1), options: ts(10, 5), payload: b"late".to_vec(), ..send_templ() });
    assert_eq!(p.read_all(), b"late");
    assert_eq!(p.ep.stats().drops.paws, 0);
    // TS.Recent is now 10: the ACK echoes it.
    let ack = p.poll(ms(25 * day + 40)).expect("delayed ACK");
    assert_eq!(ack.options.timestamps.map(|t| t.1), Some(10));
}

#[test]
fn no_timestamps_when_peer_omits_them() {
    let mut p = listen_with(ts_config());
    send!(p, time 0, peer_syn());
    recv!(p, time 0, our_synack());
    send!(p, time 0, peer_ack());
    p.conn = p.ep.accept(LOCAL_PORT);
    assert_eq!(p.ep.info(p.id()).unwrap().mss, MSS);
    send!(p, time 10, Seg { ack: Some(LOCAL_SEQ + 1), payload: b"abc".to_vec(), ..send_templ() });
    recv!(p, time 50, Seg { ack: Some(REMOTE_SEQ + 4), window: RCV_BUF as u16 - 3, ..recv_templ() });
}

#[test]
fn segments_without_timestamps_after_negotiation_are_taken() {
    // RFC 7323 §3.2 says such a segment SHOULD be dropped; Linux accepts it
    // (tcp_validate_incoming does not check), and so do we.
    let mut p = established_ts();
    send!(p, time 10, Seg { ack: Some(LOCAL_SEQ + 1), payload: b"no ts".to_vec(), ..send_templ() });
    assert_eq!(p.read_all(), b"no ts");
}

// =====================================================================
// Keep-alive (RFC 9293 §3.8.4, RFC 1122 §4.2.3.6)
// =====================================================================

fn ka_config() -> Config {
    Config {
        keepalive: Some(Keepalive {
            idle: Duration::from_secs(10),
            interval: Duration::from_secs(1),
            count: 3,
        }),
        ..test_config()
    }
}

#[test]
fn keepalive_probes_then_reset() {
    // The probe is <SEQ=SND.NXT-1><ACK=RCV.NXT>, no data. After `count`
    // unanswered probes the connection is dropped with a RST (as Linux).
    let mut p = established_with(ka_config());
    let probe = Seg {
        seq: LOCAL_SEQ,
        ..recv_templ()
    };
    recv_nothing!(p, time 9_999);
    recv!(p, time 10_000, probe.clone());
    recv_nothing!(p, time 10_999);
    recv!(p, time 11_000, probe.clone());
    recv!(p, time 12_000, probe);
    recv_nothing!(p, time 12_999);
    recv!(p, time 13_000, Seg { flags: RST, window: 0, ..recv_templ() });
    let id = p.id();
    assert_eq!(p.take_events(), [Event::TimedOut(id), Event::Closed(id)]);
}

#[test]
fn keepalive_answered_probe_restarts_idle() {
    let mut p = established_with(ka_config());
    let probe = Seg {
        seq: LOCAL_SEQ,
        ..recv_templ()
    };
    recv!(p, time 10_000, probe.clone());
    send!(p, time 10_500, peer_ack());
    recv_nothing!(p, time 11_000);
    recv_nothing!(p, time 20_499);
    recv!(p, time 20_500, probe);
    assert_eq!(p.state(), State::Established);
}

#[test]
fn keepalive_off_by_default() {
    let mut p = established();
    recv_nothing!(p, time 8_000_000);
    assert_eq!(p.state(), State::Established);
}

#[test]
fn keepalive_stands_aside_while_data_is_outstanding() {
    // Linux (tcp_keepalive_timer) sends no keep-alive probes while data is
    // in flight or queued: retransmissions and the user timeout are in
    // charge then. A short outage during a transfer must not let keep-alive
    // (idle 10 s + 3 x 1 s here) kill the connection.
    let mut p = established_with(ka_config());
    p.tick(ms(9_000));
    p.write(b"data");
    let d = Seg {
        flags: PSH,
        payload: b"data".to_vec(),
        ..recv_templ()
    };
    recv!(p, time 9_000, d.clone());
    for t in [9_200, 9_600, 10_400, 12_000, 15_200] {
        recv_nothing!(p, time t - 1);
        recv!(p, time t, d.clone());
    }
    assert_eq!(p.state(), State::Established);
    send!(p, time 15_300, Seg { ack: Some(LOCAL_SEQ + 5), ..send_templ() });
    // Idle again: keep-alive resumes 10 s after the last segment received.
    recv_nothing!(p, time 25_299);
    recv!(p, time 25_300, Seg { seq: LOCAL_SEQ + 4, ..recv_templ() });
}

#[test]
fn syn_cookie_connections_get_keepalive_too() {
    let cfg = Config {
        syn_backlog: 0,
        ..ka_config()
    };
    let mut p = listen_with(cfg);
    send!(p, time 0, peer_syn());
    recv!(p, time 0, Seg { options: TcpOptions { mss: Some(MSS), ..Default::default() }, ..our_synack() });
    send!(p, time 0, peer_ack());
    p.conn = p.ep.accept(LOCAL_PORT);
    assert_eq!(p.state(), State::Established);
    recv_nothing!(p, time 9_999);
    recv!(p, time 10_000, Seg { seq: LOCAL_SEQ, ..recv_templ() });
}

// =====================================================================
// Listener: SYN cookies (RFC 4987 §3.6), backlog, accept queue
// =====================================================================

#[test]
fn syn_cookie_when_syn_backlog_exceeded() {
    let cfg = Config {
        syn_backlog: 1,
        ..test_config()
    };
    let mut p = listen_with(cfg);
    // The first SYN takes the one half-open slot.
    send!(p, time 0, Seg { src_port: REMOTE_PORT + 1, ..peer_syn() });
    recv!(p, time 0, Seg { dst_port: REMOTE_PORT + 1, ..our_synack() });
    assert_eq!(p.ep.stats().syn_cookies_sent, 0);
    // The second gets a cookie: no state is kept. Without timestamps the
    // cookie carries only the MSS (no window scale, no SACK).
    p.forget_iss();
    send!(p, time 1, peer_syn());
    recv!(p, time 1, Seg { options: TcpOptions { mss: Some(MSS), ..Default::default() }, ..our_synack() });
    assert_eq!(p.ep.stats().syn_cookies_sent, 1);
    assert_eq!(p.count(State::SynReceived), 1);
    // The cookie comes back in the ACK: the connection is established.
    send!(p, time 2, peer_ack());
    assert_eq!(p.ep.stats().syn_cookies_ok, 1);
    assert_eq!(p.take_events(), [Event::Incoming { port: LOCAL_PORT }]);
    p.conn = p.ep.accept(LOCAL_PORT);
    assert_eq!(p.state(), State::Established);
    assert_eq!(p.ep.info(p.id()).unwrap().mss, MSS);
    // It works.
    send!(p, time 3, Seg { ack: Some(LOCAL_SEQ + 1), payload: b"hi".to_vec(), ..send_templ() });
    assert_eq!(p.read_all(), b"hi");
    p.write(b"yo");
    recv!(p, time 4, Seg { ack: Some(REMOTE_SEQ + 3), window: RCV_BUF as u16 - 2, flags: PSH, payload: b"yo".to_vec(), ..recv_templ() });
}

#[test]
fn syn_cookie_ack_may_carry_data() {
    let cfg = Config {
        syn_backlog: 0,
        ..test_config()
    };
    let mut p = listen_with(cfg);
    send!(p, time 0, peer_syn());
    recv!(p, time 0, Seg { options: TcpOptions { mss: Some(MSS), ..Default::default() }, ..our_synack() });
    send!(p, time 1, Seg { payload: b"GET / HTTP/1.1".to_vec(), ..peer_ack() });
    p.conn = p.ep.accept(LOCAL_PORT);
    assert_eq!(p.read_all(), b"GET / HTTP/1.1");
    recv!(p, time 41, Seg { ack: Some(REMOTE_SEQ + 15), window: RCV_BUF as u16 - 14, ..recv_templ() });
}

#[test]
fn syn_cookie_bad_cookie_gets_rst() {
    let cfg = Config {
        syn_backlog: 0,
        ..test_config()
    };
    let mut p = listen_with(cfg);
    send!(p, time 0, peer_syn());
    recv!(p, time 0, Seg { options: TcpOptions { mss: Some(MSS), ..Default::default() }, ..our_synack() });
    send!(p, time 1, Seg { ack: Some(LOCAL_SEQ + 2), ..send_templ() });
    recv!(p, time 1, Seg { seq: LOCAL_SEQ + 2, ack: None, flags: RST, window: 0, ..recv_templ() });
    // Wrong peer sequence number (the cookie hashes the peer's ISN).
    send!(p, time 1, Seg { seq: REMOTE_SEQ + 2, ..peer_ack() });
    recv!(p, time 1, Seg { seq: LOCAL_SEQ + 1, ack: None, flags: RST, window: 0, ..recv_templ() });
    assert_eq!(p.ep.stats().syn_cookies_bad, 2);
    assert_eq!(p.ep.connection_count(), 0);
}

#[test]
fn syn_cookie_expires() {
    // A cookie is valid for the current and the previous 64-second period.
    let cfg = Config {
        syn_backlog: 0,
        ..test_config()
    };
    let mut p = listen_with(cfg);
    send!(p, time 0, peer_syn());
    recv!(p, time 0, Seg { options: TcpOptions { mss: Some(MSS), ..Default::default() }, ..our_synack() });
    // Another client's SYN at 129 s keeps the listener checking cookies;
    // the first cookie, two periods old, no longer passes.
    send!(p, time 129_000, Seg { src_port: REMOTE_PORT + 1, ..peer_syn() });
    assert!(p.poll(ms(129_000)).is_some());
    send!(p, time 130_000, peer_ack());
    recv!(p, time 130_000, Seg { seq: LOCAL_SEQ + 1, ack: None, flags: RST, window: 0, ..recv_templ() });
    assert_eq!(p.ep.stats().syn_cookies_bad, 1);
}

#[test]
fn syn_cookie_ack_with_accept_queue_full_is_dropped_not_reset() {
    // Linux: a valid cookie ACK that finds the accept queue full is dropped
    // (tcp_v4_syn_recv_sock fails); the client retransmits and gets in once
    // the application accepted. A RST would kill a legitimate client.
    let cfg = Config {
        syn_backlog: 0,
        ..test_config()
    };
    let mut p = Peer::new(cfg);
    p.ep.listen(LOCAL_PORT, 1).unwrap();
    send!(p, time 0, peer_syn());
    recv!(p, time 0, Seg { options: TcpOptions { mss: Some(MSS), ..Default::default() }, ..our_synack() });
    let first = p.seq_delta;
    // A second client takes the one accept-queue place (by cookie too).
    p.forget_iss();
    send!(p, time 0, Seg { src_port: REMOTE_PORT + 1, ..peer_syn() });
    assert!(p.poll(ms(0)).is_some_and(|s| s.flags == SYN));
    send!(p, time 1, Seg { src_port: REMOTE_PORT + 1, ..peer_ack() });
    assert_eq!(p.ep.stats().syn_cookies_ok, 1);
    // The first client's ACK: valid cookie, queue full: dropped silently.
    p.seq_delta = first;
    send!(p, time 2, Seg { payload: b"hello".to_vec(), ..peer_ack() });
    recv_nothing!(p, time 2);
    assert_eq!(p.ep.stats().drops.listen_overflow, 1);
    assert_eq!(p.ep.stats().rst_out, 0);
    assert_eq!(p.ep.stats().syn_cookies_bad, 0);
    // The application accepts; the retransmitted ACK gets in.
    assert!(p.ep.accept(LOCAL_PORT).is_some());
    send!(p, time 200, Seg { payload: b"hello".to_vec(), ..peer_ack() });
    assert_eq!(p.ep.stats().syn_cookies_ok, 2);
    p.conn = p.ep.accept(LOCAL_PORT);
    assert_eq!(p.read_all(), b"hello");
}

#[test]
fn syn_cookie_ack_with_connection_table_full_is_dropped_not_reset() {
    let cfg = Config {
        syn_backlog: 0,
        max_connections: 1,
        ..test_config()
    };
    let mut p = listen_with(cfg);
    send!(p, time 0, peer_syn());
    assert!(p.poll(ms(0)).is_some());
    let first = p.seq_delta;
    p.forget_iss();
    send!(p, time 0, Seg { src_port: REMOTE_PORT + 1, ..peer_syn() });
    assert!(p.poll(ms(0)).is_some_and(|s| s.flags == SYN));
    send!(p, time 1, Seg { src_port: REMOTE_PORT + 1, ..peer_ack() });
    assert_eq!(p.ep.connection_count(), 1);
    p.seq_delta = first;
    send!(p, time 2, peer_ack());
    recv_nothing!(p, time 2);
    assert_eq!(p.ep.stats().drops.table_full, 1);
    assert_eq!(p.ep.stats().rst_out, 0);
}

#[test]
fn ack_to_a_listener_without_recent_cookies_is_not_checked() {
    // Linux (tcp_synq_no_recent_overflow): cookies are validated only
    // within two cookie lifetimes of the last one sent. Otherwise a bare
    // ACK to a listener gets the ordinary RST (RFC 9293 §3.10.7.2) without
    // a cookie check, so blind cookie guesses get no hearing.
    let cfg = Config {
        syn_backlog: 0,
        ..test_config()
    };
    let mut p = listen_with(cfg);
    send!(p, time 0, peer_ack());
    recv!(p, time 0, Seg { seq: LOCAL_SEQ + 1, ack: None, flags: RST, window: 0, ..recv_templ() });
    assert_eq!(
        p.ep.stats().syn_cookies_bad,
        0,
        "no cookie check without a recent overflow"
    );
    // After a cookie went out, ACKs are checked...
    send!(p, time 1000, Seg { src_port: REMOTE_PORT + 1, ..peer_syn() });
    assert!(p.poll(ms(1000)).is_some());
    send!(p, time 1001, peer_ack());
    assert!(p.poll(ms(1001)).is_some_and(|s| s.flags == RST));
    assert_eq!(p.ep.stats().syn_cookies_bad, 1);
    // ...until two cookie periods (128 s) have passed since.
    send!(p, time 129_000, peer_ack());
    assert!(p.poll(ms(129_000)).is_some_and(|s| s.flags == RST));
    assert_eq!(p.ep.stats().syn_cookies_bad, 2);
    send!(p, time 129_001, peer_ack());
    assert!(p.poll(ms(129_001)).is_some_and(|s| s.flags == RST));
    assert_eq!(p.ep.stats().syn_cookies_bad, 2);
}

#[test]
fn syn_cookie_with_timestamps_keeps_wscale_and_sack() {
    let cfg = Config {
        syn_backlog: 0,
        recv_buffer: 1 << 20,
        ..ts_config()
    };
    let mut p = listen_with(cfg);
    let opts = TcpOptions {
        window_scale: Some(7),
        timestamps: Some((1000, 0)),
        ..syn_opts()
    };
    send!(p, time 0, Seg { options: opts, ..peer_syn() });
    let synack = p.poll(ms(0)).expect("cookie SYN-ACK");
    assert_eq!(synack.flags, SYN);
    assert_eq!(synack.options.window_scale, Some(5));
    assert!(synack.options.sack_permitted);
    let (tsval, tsecr) = synack.options.timestamps.expect("timestamps");
    assert_eq!(tsecr, 1000);
    send!(p, time 1, Seg { window: 100, options: TcpOptions { timestamps: Some((1001, tsval)), ..Default::default() }, ..peer_ack() });
    p.conn = p.ep.accept(LOCAL_PORT);
    let info = p.ep.info(p.id()).unwrap();
    assert_eq!(info.snd_wnd, 100 << 7);
    assert_eq!(info.mss, MSS - 12);
    // SACK survived: an out-of-order segment gets a SACK block.
    send!(p, time 2, Seg { seq: REMOTE_SEQ + 11, ack: Some(LOCAL_SEQ + 1), options: TcpOptions { timestamps: Some((1002, tsval)), ..Default::default() }, payload: data(10), ..send_templ() });
    let ack = p.poll(ms(2)).expect("dup ack");
    assert_eq!(
        ack.options.sack,
        sack(&[(REMOTE_SEQ + 11, REMOTE_SEQ + 21)])
    );
    // And the window is scaled by 5.
    // (out-of-order bytes do not count against it).
    assert_eq!(ack.window, ((1 << 20) >> 5) as u16);
}

#[test]
fn dead_half_open_connections_leave_the_syn_queue() {
    // A half-open connection that dies (reset by the peer, or out of SYN-ACK
    // retransmissions) must free its SYN-queue slot; otherwise a SYN flood
    // would leave the listener in cookie mode (or, without cookies, deaf)
    // for good.
    let cfg = Config {
        syn_backlog: 1,
        syn_cookies: false,
        ..test_config()
    };
    let mut p = syn_received_with(cfg);
    send!(p, time 10, Seg { flags: RST, ..send_templ() });
    assert_eq!(p.ep.connection_count(), 0);
    // A second client is served normally.
    p.forget_iss();
    send!(p, time 20, Seg { src_port: REMOTE_PORT + 1, ..peer_syn() });
    recv!(p, time 20, Seg { dst_port: REMOTE_PORT + 1, ..our_synack() });
    // It times out (5 SYN-ACK retransmissions, then 32 s more).
    let mut t = 20;
    for i in 0..5 {
        t += 1000 << i;
        let s = p.poll(ms(t)).expect("SYN-ACK retransmission");
        assert_eq!(s.dst_port, REMOTE_PORT + 1);
    }
    t += 1000 << 5;
    recv_nothing!(p, time t);
    assert_eq!(p.ep.connection_count(), 0);
    // And a third is still served.
    p.forget_iss();
    send!(p, time t + 1, Seg { src_port: REMOTE_PORT + 2, ..peer_syn() });
    recv!(p, time t + 1, Seg { dst_port: REMOTE_PORT + 2, ..our_synack() });
}

#[test]
fn accept_queue_overflow_drops_syn() {
    let mut p = Peer::new(test_config());
    p.ep.listen(LOCAL_PORT, 1).unwrap();
    send!(p, time 0, peer_syn());
    recv!(p, time 0, our_synack());
    send!(p, time 0, peer_ack());
    // The accept queue (backlog 1) is full: a new SYN is dropped (Linux).
    send!(p, time 1, Seg { src_port: REMOTE_PORT + 1, ..peer_syn() });
    recv_nothing!(p, time 1);
    assert_eq!(p.ep.stats().drops.listen_overflow, 1);
    // Once accepted, there is room again.
    assert!(p.ep.accept(LOCAL_PORT).is_some());
    send!(p, time 2, Seg { src_port: REMOTE_PORT + 1, ..peer_syn() });
    let synack = p.poll(ms(2)).expect("SYN-ACK");
    assert_eq!(synack.dst_port, REMOTE_PORT + 1);
}

#[test]
fn accept_queue_full_drops_handshake_ack() {
    // Two half-open connections, backlog 1: the second ACK finds the queue
    // full and is dropped (Linux); it completes after an accept.
    let mut p = Peer::new(test_config());
    p.ep.listen(LOCAL_PORT, 1).unwrap();
    send!(p, time 0, peer_syn());
    recv!(p, time 0, our_synack());
    send!(p, time 0, Seg { src_port: REMOTE_PORT + 1, ..peer_syn() });
    let second = p.poll(ms(0)).expect("second SYN-ACK");
    send!(p, time 1, peer_ack());
    send!(p, time 1, Seg { src_port: REMOTE_PORT + 1, ack: Some(second.seq + 1), ..send_templ() });
    assert_eq!(p.ep.stats().drops.listen_overflow, 1);
    assert_eq!(p.count(State::SynReceived), 1);
    assert!(p.ep.accept(LOCAL_PORT).is_some());
    send!(p, time 2, Seg { src_port: REMOTE_PORT + 1, ack: Some(second.seq + 1), ..send_templ() });
    assert_eq!(p.count(State::SynReceived), 0);
    assert!(p.ep.accept(LOCAL_PORT).is_some());
}

#[test]
fn data_before_accept_is_kept_and_reported() {
    let mut p = syn_received();
    send!(p, time 1, peer_ack());
    send!(p, time 2, Seg { ack: Some(LOCAL_SEQ + 1), payload: b"early bird".to_vec(), ..send_templ() });
    send!(p, time 3, Seg { seq: REMOTE_SEQ + 11, flags: FIN, ack: Some(LOCAL_SEQ + 1), ..send_templ() });
    recv!(p, time 3, Seg { ack: Some(REMOTE_SEQ + 12), window: RCV_BUF as u16 - 11, ..recv_templ() });
    assert_eq!(p.take_events(), [Event::Incoming { port: LOCAL_PORT }]);
    let id = p.ep.accept(LOCAL_PORT).unwrap();
    p.conn = Some(id);
    assert_eq!(
        p.take_events(),
        [Event::Readable(id), Event::PeerClosed(id)]
    );
    assert_eq!(p.state(), State::CloseWait);
    assert_eq!(p.read_all(), b"early bird");
}

#[test]
fn reset_before_accept_leaves_the_queue() {
    let mut p = syn_received();
    send!(p, time 1, peer_ack());
    send!(p, time 2, Seg { flags: RST, ..send_templ() });
    assert_eq!(p.ep.connection_count(), 0);
    assert_eq!(p.ep.accept(LOCAL_PORT), None);
}

#[test]
fn refused_connection_is_reset() {
    // The application refuses an incoming connection with abort: RST.
    let mut p = syn_received();
    send!(p, time 1, peer_ack());
    let id = p.ep.accept(LOCAL_PORT).unwrap();
    p.conn = Some(id);
    p.ep.abort(id).unwrap();
    recv!(p, time 2, Seg { flags: RST, window: 0, ..recv_templ() });
    assert_eq!(p.ep.connection_count(), 0);
}

#[test]
fn unlisten_resets_unaccepted_connections() {
    let mut p = syn_received();
    send!(p, time 1, peer_ack());
    p.ep.unlisten(LOCAL_PORT);
    recv!(p, time 2, Seg { flags: RST, window: 0, ..recv_templ() });
    assert_eq!(p.ep.connection_count(), 0);
    // The port is closed now.
    p.forget_iss();
    send!(p, time 3, Seg { src_port: REMOTE_PORT + 1, ..peer_syn() });
    recv!(p, time 3, Seg { dst_port: REMOTE_PORT + 1, seq: SeqNum(0), ack: Some(REMOTE_SEQ + 1), flags: RST, window: 0, ..recv_templ() });
}

// =====================================================================
// Endpoint limits, memory and configuration
// =====================================================================

#[test]
fn connection_table_full() {
    // Config::max_connections bounds the table: with cookies a SYN still
    // gets an answer (but its ACK cannot be admitted and is reset); without,
    // the SYN is dropped and counted.
    for cookies in [true, false] {
        let cfg = Config {
            max_connections: 1,
            syn_cookies: cookies,
            ..test_config()
        };
        let mut p = established_with(cfg);
        p.forget_iss();
        send!(p, time 1, Seg { src_port: REMOTE_PORT + 1, ..peer_syn() });
        if cookies {
            let synack = p.poll(ms(1)).expect("cookie SYN-ACK");
            assert_eq!(synack.flags, SYN);
            assert_eq!(p.ep.stats().syn_cookies_sent, 1);
        } else {
            recv_nothing!(p, time 1);
            assert_eq!(p.ep.stats().drops.table_full, 1);
        }
        assert_eq!(p.ep.connection_count(), 1);
        assert_eq!(
            p.ep.connect(ms(2), LOCAL_ADDR.into(), "10.0.0.9:80".parse().unwrap()),
            Err(tcp::Error::TableFull)
        );
    }
}

#[test]
fn connect_checks_addresses() {
    let mut p = Peer::new(test_config());
    assert_eq!(
        p.ep.connect(ms(0), LOCAL_ADDR.into(), "[fd00::1]:80".parse().unwrap()),
        Err(tcp::Error::BadAddress)
    );
    assert_eq!(
        p.ep.connect(ms(0), "10.9.9.9".parse().unwrap(), p.remote()),
        Err(tcp::Error::BadAddress)
    );
    recv_nothing!(p, time 0);
}

/// The local ports of `n` connects from one endpoint with `seed`, to the
/// given destinations in turn.
fn ephemeral_ports(seed: u64, dests: &[&str], n: usize) -> Vec<u16> {
    let mut ep = tcp::Endpoint::new(Config {
        seed,
        ephemeral_ports: (32768, 60999),
        ..test_config()
    })
    .unwrap();
    (0..n)
        .map(|i| {
            let id = ep
                .connect(
                    ms(0),
                    LOCAL_ADDR.into(),
                    dests[i % dests.len()].parse().unwrap(),
                )
                .unwrap();
            ep.info(id).unwrap().local.port()
        })
        .collect()
}

#[test]
fn ephemeral_ports_follow_rfc_6056_algorithm_3() {
    // RFC 6056 §3.3.3: port = min + (next_ephemeral + F(local IP, remote
    // IP, remote port, secret)) mod range. One destination sees the counter
    // move on; another destination's ports sit at an offset only the secret
    // (derived from the seed) tells.
    let a = "10.0.0.1:80";
    let b = "10.0.0.1:443";
    let c = "10.7.7.7:80";
    let to_a = ephemeral_ports(1, &[a], 3);
    assert_eq!(to_a[1], to_a[0] + 1, "{to_a:?}");
    assert_eq!(to_a[2], to_a[0] + 2, "{to_a:?}");
    // Interleaved with connects elsewhere, each destination's ports are not
    // a continuation of the others'.
    let mixed = ephemeral_ports(1, &[a, b, c], 3);
    assert_eq!(mixed[0], to_a[0]);
    assert_ne!(mixed[1], mixed[0] + 1, "{mixed:?}");
    assert_ne!(mixed[2], mixed[1] + 1, "{mixed:?}");
    assert!(mixed.iter().all(|p| (32768..=60999).contains(p)));
    // The offset is keyed: another seed, other ports; the same seed, the same.
    assert_ne!(ephemeral_ports(2, &[a], 1), ephemeral_ports(1, &[a], 1));
    assert_eq!(ephemeral_ports(1, &[a, b, c], 3), mixed);
    // Every port of the range is still found (the search covers it all).
    let mut ep = tcp::Endpoint::new(Config {
        ephemeral_ports: (40000, 40003),
        ..test_config()
    })
    .unwrap();
    let mut ports: Vec<u16> = (0..4)
        .map(|_| {
            let id = ep
                .connect(ms(0), LOCAL_ADDR.into(), a.parse().unwrap())
                .unwrap();
            ep.info(id).unwrap().local.port()
        })
        .collect();
    ports.sort_unstable();
    assert_eq!(ports, [40000, 40001, 40002, 40003]);
    assert_eq!(
        ep.connect(ms(0), LOCAL_ADDR.into(), a.parse().unwrap()),
        Err(tcp::Error::NoPortsAvailable)
    );
}

#[test]
fn control_queue_is_bounded() {
    // Config::max_control_queue bounds stateless replies (RSTs, echo
    // replies, cookie SYN-ACKs) waiting for poll_transmit.
    let cfg = Config {
        max_control_queue: 2,
        ..test_config()
    };
    let mut p = Peer::new(cfg);
    for i in 0..5u16 {
        let req = echo_request(&p, 1, i, b"x");
        p.send_raw(ms(0), &req);
    }
    assert!(p.poll_raw(ms(0)).is_some());
    assert!(p.poll_raw(ms(0)).is_some());
    assert!(p.poll_raw(ms(0)).is_none());
    assert_eq!(p.ep.stats().drops.control_queue_full, 3);
}

#[test]
fn buffers_released_when_idle_and_in_time_wait() {
    // Buffers grow on demand and go back when empty: an idle connection and
    // a TIME-WAIT entry hold none.
    let mut p = established();
    assert_eq!(p.ep.buffer_bytes(), 0);
    send!(p, time 1, Seg { ack: Some(LOCAL_SEQ + 1), payload: data(1000), ..send_templ() });
    p.write(&data(1000));
    assert!(p.ep.buffer_bytes() > 0);
    recv!(p, time 2, Seg { ack: Some(REMOTE_SEQ + 1001), window: RCV_BUF as u16 - 1000, flags: PSH, payload: data(1000), ..recv_templ() });
    assert_eq!(p.read_all().len(), 1000);
    send!(p, time 3, Seg { seq: REMOTE_SEQ + 1001, ack: Some(LOCAL_SEQ + 1001), ..send_templ() });
    assert_eq!(p.ep.buffer_bytes(), 0);
    p.ep.close(p.id()).unwrap();
    let fin = p.poll(ms(4)).expect("FIN");
    assert!(fin.flags.fin());
    send!(p, time 5, Seg { seq: REMOTE_SEQ + 1001, flags: FIN, ack: Some(LOCAL_SEQ + 1002), ..send_templ() });
    assert!(p.poll(ms(5)).is_some());
    assert_eq!(p.count(State::TimeWait), 1);
    assert_eq!(p.ep.buffer_bytes(), 0);
}

#[test]
fn keepalive_config_is_validated() {
    // A zero interval would re-arm the timer at the same instant over and
    // over inside one handle_timeout call; a zero count would drop a
    // connection without probing. Both are refused (Linux requires
    // TCP_KEEPINTVL, TCP_KEEPIDLE and TCP_KEEPCNT >= 1).
    for k in [
        Keepalive {
            interval: Duration::ZERO,
            ..Keepalive::default()
        },
        Keepalive {
            idle: Duration::ZERO,
            ..Keepalive::default()
        },
        Keepalive {
            count: 0,
            ..Keepalive::default()
        },
    ] {
        let cfg = Config {
            keepalive: Some(k),
            ..test_config()
        };
        assert!(tcp::Endpoint::new(cfg).is_err(), "{k:?} accepted");
    }
    // Likewise a zero initial RTO (it backs off to zero).
    let cfg = Config {
        initial_rto: Duration::ZERO,
        ..test_config()
    };
    assert!(tcp::Endpoint::new(cfg).is_err());
}

// =====================================================================
// IPv6 and ICMP echo
// =====================================================================

#[test]
fn ipv6_handshake_and_data() {
    let mut p = Peer::new_v6(test_config());
    p.ep.listen(LOCAL_PORT, 8).unwrap();
    let opts = TcpOptions {
        mss: Some(1440),
        ..syn_opts()
    };
    send!(p, time 0, Seg { options: opts, ..peer_syn() });
    // MTU 1500 less 40 + 20 bytes of headers.
    recv!(p, time 0, Seg { options: opts, ..our_synack() });
    send!(p, time 0, peer_ack());
    p.conn = p.ep.accept(LOCAL_PORT);
    assert_eq!(p.state(), State::Established);
    assert_eq!(p.ep.info(p.id()).unwrap().mss, 1440);
    send!(p, time 10, Seg { ack: Some(LOCAL_SEQ + 1), payload: b"six".to_vec(), ..send_templ() });
    assert_eq!(p.read_all(), b"six");
    p.write(b"ok");
    recv!(p, time 11, Seg { ack: Some(REMOTE_SEQ + 4), window: RCV_BUF as u16 - 3, flags: PSH, payload: b"ok".to_vec(), ..recv_templ() });
}

#[test]
fn ipv6_default_mss_is_1220() {
    // RFC 9293 §3.7.1 / RFC 8200 §5: without the option, 1220 on IPv6.
    let mut p = Peer::new_v6(test_config());
    p.ep.listen(LOCAL_PORT, 8).unwrap();
    send!(p, time 0, Seg { options: TcpOptions::default(), ..peer_syn() });
    recv!(p, time 0, Seg { options: TcpOptions { mss: Some(1440), ..Default::default() }, ..our_synack() });
    send!(p, time 0, peer_ack());
    p.conn = p.ep.accept(LOCAL_PORT);
    assert_eq!(p.ep.info(p.id()).unwrap().mss, 1220);
}

#[test]
fn ipv6_closed_port_rst_and_mtu() {
    let mut p = Peer::new_v6(test_config());
    send!(p, time 0, peer_syn());
    recv!(p, time 0, Seg { seq: SeqNum(0), ack: Some(REMOTE_SEQ + 1), flags: RST, window: 0, ..recv_templ() });
    // A v6 connection with SACK blocks in play stays within 1500 bytes.
    p.ep.listen(LOCAL_PORT, 8).unwrap();
    let opts = TcpOptions {
        mss: Some(1440),
        ..syn_opts()
    };
    send!(p, time 1, Seg { options: opts, ..peer_syn() });
    recv!(p, time 1, Seg { options: opts, ..our_synack() });
    send!(p, time 1, peer_ack());
    p.conn = p.ep.accept(LOCAL_PORT);
    send!(p, time 2, Seg { seq: REMOTE_SEQ + 101, ack: Some(LOCAL_SEQ + 1), payload: data(10), ..send_templ() });
    assert!(p.poll(ms(2)).is_some());
    p.write(&data(4000));
    let mut n = 0;
    while let Some(pkt) = p.poll_raw(ms(3)) {
        assert!(pkt.len() <= 1500, "{} bytes", pkt.len());
        n += 1;
    }
    assert_eq!(n, 3);
}

/// An ICMP (v4) or ICMPv6 echo request from the peer.
fn echo_request(p: &Peer, ident: u16, seq: u16, body: &[u8]) -> Vec<u8> {
    let v6 = p.remote_ip.is_ipv6();
    let iph = if v6 { 40 } else { 20 };
    let len = 8 + body.len();
    let mut b = vec![0u8; iph + len];
    let proto = if v6 { PROTO_ICMPV6 } else { PROTO_ICMP };
    emit_ip_header(&mut b, p.remote_ip, p.local_ip, proto, len, 64, 7).unwrap();
    let m = &mut b[iph..];
    m[0] = if v6 { 128 } else { 8 };
    m[4..6].copy_from_slice(&ident.to_be_bytes());
    m[6..8].copy_from_slice(&seq.to_be_bytes());
    m[8..].copy_from_slice(body);
    let init = if v6 {
        pseudo_header_sum(p.remote_ip, p.local_ip, PROTO_ICMPV6, len as u32)
    } else {
        0
    };
    let c = checksum_fold(checksum_sum(init, m));
    m[2..4].copy_from_slice(&c.to_be_bytes());
    b
}

fn check_echo_reply(p: &mut Peer, ident: u16, seq: u16, body: &[u8]) {
    let v6 = p.remote_ip.is_ipv6();
    let reply = p.poll_raw(ms(0)).expect("echo reply");
    let ip = parse_ip(&reply).unwrap();
    assert_eq!((ip.src, ip.dst), (p.local_ip, p.remote_ip));
    assert_eq!(ip.protocol, if v6 { PROTO_ICMPV6 } else { PROTO_ICMP });
    let m = ip.payload;
    assert_eq!(m[0], if v6 { 129 } else { 0 }, "echo reply type");
    assert_eq!(m[1], 0);
    assert_eq!(u16::from_be_bytes([m[4], m[5]]), ident);
    assert_eq!(u16::from_be_bytes([m[6], m[7]]), seq);
    assert_eq!(&m[8..], body);
    let init = if v6 {
        pseudo_header_sum(ip.src, ip.dst, PROTO_ICMPV6, m.len() as u32)
    } else {
        0
    };
    assert_eq!(checksum_fold(checksum_sum(init, m)), 0, "reply checksum");
}

#[test]
fn icmp_echo_v4() {
    let mut p = Peer::new(test_config());
    let req = echo_request(&p, 0x1234, 7, b"ping payload");
    p.send_raw(ms(0), &req);
    check_echo_reply(&mut p, 0x1234, 7, b"ping payload");
    assert!(p.poll_raw(ms(0)).is_none());
    // A corrupted request is dropped and counted.
    let mut bad = echo_request(&p, 1, 1, b"x");
    let n = bad.len();
    bad[n - 1] ^= 0xff;
    p.send_raw(ms(0), &bad);
    assert!(p.poll_raw(ms(0)).is_none());
    assert_eq!(p.ep.stats().drops.bad_icmp, 1);
    assert_eq!(p.ep.stats().icmp_echo, 1);
}

#[test]
fn icmp_echo_v6() {
    let mut p = Peer::new_v6(test_config());
    let req = echo_request(&p, 0xbeef, 300, b"ping6");
    p.send_raw(ms(0), &req);
    check_echo_reply(&mut p, 0xbeef, 300, b"ping6");
    assert_eq!(p.ep.stats().icmp_echo, 1);
}

#[test]
fn icmp_echo_reply_is_cut_to_the_mtu() {
    // RFC 1122 §3.2.2.6: the echo data "MUST be entirely included in the
    // resulting Echo Reply. However, if sending the Echo Reply requires
    // intentional fragmentation that is not implemented, the datagram MUST
    // be truncated to maximum transmission size ... and sent." A request
    // larger than the MTU (from a device with a larger one) gets a reply
    // of exactly the MTU, and a reply never outgrows the buffer the output
    // needs (at least the MTU): it cannot block what is queued behind it.
    // (With `fragment_replies`, the default, it is fragmented instead.)
    let mut p = listen_with(Config {
        fragment_replies: false,
        ..test_config()
    });
    let body: Vec<u8> = (0..2000u32).map(|i| i as u8).collect();
    let req = echo_request(&p, 7, 1, &body);
    p.send_raw(ms(0), &req);
    send!(p, time 0, Seg { dst_port: 81, ack: Some(LOCAL_SEQ), ..send_templ() });
    let reply = poll_sized(&mut p, 0, 1500).expect("the echo reply");
    assert_eq!(reply.len(), 1500);
    let ip = parse_ip(&reply).unwrap();
    let m = ip.payload;
    assert_eq!((m[0], &m[8..]), (0, &body[..1472]), "an echo reply, cut");
    assert_eq!(checksum_fold(checksum_sum(0, m)), 0, "reply checksum");
    let rst = poll_sized(&mut p, 0, 1500).expect("the RST behind it");
    assert_eq!(payload_len(&rst), 0);
    assert!(poll_sized(&mut p, 0, 1500).is_none());
    assert_eq!(p.ep.stats().icmp_echo, 1);
}

#[test]
fn icmpv6_echo_request_too_long_for_a_whole_reply_is_dropped() {
    // RFC 4443 §4.2: the data "MUST be returned entirely and unmodified in
    // the ICMPv6 Echo Reply"; a reply over the MTU would need fragmentation
    // (RFC 8200 §4.5), which is not implemented: the request is dropped
    // and counted, and the output is not blocked. (With `fragment_replies`,
    // the default, it is fragmented instead.)
    let mut p = Peer::new_v6(Config {
        fragment_replies: false,
        ..test_config()
    });
    p.ep.listen(LOCAL_PORT, 8).unwrap();
    let req = echo_request(&p, 7, 1, &data(1500 - 48 + 1));
    p.send_raw(ms(0), &req);
    assert_eq!(p.ep.stats().drops.reply_too_long, 1);
    let req = echo_request(&p, 7, 2, &data(1500 - 48));
    p.send_raw(ms(0), &req);
    send!(p, time 0, Seg { dst_port: 81, ack: Some(LOCAL_SEQ), ..send_templ() });
    let reply = poll_sized(&mut p, 0, 1500).expect("the largest whole reply");
    assert_eq!(reply.len(), 1500);
    assert!(poll_sized(&mut p, 0, 1500).is_some(), "the RST");
    assert!(poll_sized(&mut p, 0, 1500).is_none());
    assert_eq!(p.ep.stats().icmp_echo, 1);
}

#[test]
fn a_reply_too_long_for_a_short_buffer_lets_the_others_pass() {
    // A buffer below the MTU (below what `poll_transmit` asks for) may not
    // take the reply in front of the queue: that one waits, nothing lost,
    // and shorter ones behind it go first.
    let mut p = listen();
    let req = echo_request(&p, 7, 1, &data(1000));
    p.send_raw(ms(0), &req);
    send!(p, time 0, Seg { dst_port: 81, ack: Some(LOCAL_SEQ), ..send_templ() });
    let rst = poll_sized(&mut p, 0, 500).expect("the RST first");
    assert_eq!(rst.len(), 40);
    assert!(poll_sized(&mut p, 0, 500).is_none(), "the echo reply waits");
    let reply = poll_sized(&mut p, 0, 1500).expect("then the echo reply");
    assert_eq!(reply.len(), 1028);
    assert!(poll_sized(&mut p, 0, 1500).is_none());
    assert_eq!(p.ep.stats().drops.reply_too_long, 0, "nothing was dropped");
}

#[test]
fn a_connection_whose_segment_does_not_fit_lets_the_others_pass() {
    // Likewise for connections: a SYN-ACK (48 bytes with its options) that
    // a 44-byte buffer cannot take does not hold back another
    // connection's 40-byte ACK queued behind it.
    let mut p = established();
    send!(p, time 10, Seg { src_port: REMOTE_PORT + 1, ..peer_syn() });
    // An old duplicate on the established connection: ACKed at once.
    send!(p, time 10, Seg { seq: REMOTE_SEQ - 9, ack: Some(LOCAL_SEQ + 1), payload: data(10), ..send_templ() });
    let ack = poll_sized(&mut p, 10, 44).expect("the ACK first");
    let ip = parse_ip(&ack).unwrap();
    let t = tcp::wire::parse_tcp(&ip).unwrap();
    assert_eq!(
        (ack.len(), t.dst_port, t.flags),
        (40, REMOTE_PORT, TcpFlags::ACK)
    );
    assert!(poll_sized(&mut p, 10, 44).is_none(), "the SYN-ACK waits");
    let synack = poll_sized(&mut p, 10, 1500).expect("then the SYN-ACK");
    let ip = parse_ip(&synack).unwrap();
    let t = tcp::wire::parse_tcp(&ip).unwrap();
    assert_eq!(
        (t.dst_port, t.flags),
        (REMOTE_PORT + 1, TcpFlags::SYN | TcpFlags::ACK)
    );
    assert!(poll_sized(&mut p, 10, 1500).is_none());
}

// =====================================================================
// IP layer, options and malformed packets: dropped silently, counted by reason
// =====================================================================

fn good_packet(p: &mut Peer) -> Vec<u8> {
    p.build(&Seg {
        payload: b"data".to_vec(),
        ..peer_syn()
    })
}

/// Recomputes the IPv4 header checksum after a test edited the header.
fn fix_ip_checksum(pkt: &mut [u8]) {
    pkt[10] = 0;
    pkt[11] = 0;
    let c = checksum_fold(checksum_sum(0, &pkt[..20]));
    pkt[10..12].copy_from_slice(&c.to_be_bytes());
}

#[test]
fn malformed_packets_counted_by_reason() {
    // Reassembly off: fragments are dropped and counted (tests/ip.rs has
    // reassembly).
    let mut p = listen_with(Config {
        reasm_max_bytes: 0,
        ..test_config()
    });
    // Bad TCP checksum.
    let mut pkt = good_packet(&mut p);
    let n = pkt.len();
    pkt[n - 1] ^= 0x55;
    p.send_raw(ms(0), &pkt);
    // Bad IPv4 header checksum.
    let mut pkt = good_packet(&mut p);
    pkt[10] ^= 0x01;
    p.send_raw(ms(0), &pkt);
    // Truncated: shorter than an IPv4 header, and a TCP header cut short.
    let pkt = good_packet(&mut p);
    p.send_raw(ms(0), &pkt[..19]);
    let mut short = pkt[..20 + 12].to_vec();
    short[2..4].copy_from_slice(&32u16.to_be_bytes());
    fix_ip_checksum(&mut short);
    p.send_raw(ms(0), &short);
    // IPv4 fragments: more-fragments set, or a non-zero offset.
    for frag in [0x2000u16, 0x0010] {
        let mut pkt = good_packet(&mut p);
        pkt[6..8].copy_from_slice(&frag.to_be_bytes());
        fix_ip_checksum(&mut pkt);
        p.send_raw(ms(0), &pkt);
    }
    // Bad data offset: below 5 words, and beyond the segment.
    for doff in [4u8, 15] {
        let mut pkt = good_packet(&mut p);
        pkt[20 + 12] = doff << 4;
        p.send_raw(ms(0), &pkt);
    }
    // SYN+FIN.
    let pkt = p.build(&Seg {
        flags: SYN | FIN,
        ..peer_syn()
    });
    p.send_raw(ms(0), &pkt);
    recv_nothing!(p, time 0);
    assert_eq!(p.ep.connection_count(), 0);
    let d = p.ep.stats().drops;
    assert_eq!(d.bad_tcp_checksum, 1);
    assert_eq!(d.bad_ip_checksum, 1);
    assert_eq!(d.truncated, 2);
    assert_eq!(d.fragment, 2);
    assert_eq!(d.bad_tcp_header, 2);
    assert_eq!(d.bad_tcp_flags, 1);
    assert_eq!(d.total(), 9);
    assert_eq!(p.ep.stats().rst_out, 0);
}

#[test]
fn ipv6_fragment_dropped() {
    // Reassembly off (tests/ip.rs has reassembly).
    let mut p = Peer::new_v6(Config {
        reasm_max_bytes: 0,
        ..test_config()
    });
    p.ep.listen(LOCAL_PORT, 8).unwrap();
    let pkt = p.build(&peer_syn());
    // Insert a fragment header (next header 44) in front of the TCP header.
    let mut f = pkt[..40].to_vec();
    f[6] = 44;
    let plen = u16::from_be_bytes([f[4], f[5]]) + 8;
    f[4..6].copy_from_slice(&plen.to_be_bytes());
    f.extend_from_slice(&[6, 0, 0, 1, 0, 0, 0, 1]);
    f.extend_from_slice(&pkt[40..]);
    p.send_raw(ms(0), &f);
    recv_nothing!(p, time 0);
    assert_eq!(p.ep.stats().drops.fragment, 1);
}

#[test]
fn packet_to_other_address_dropped() {
    let mut p = listen();
    let mut pkt = good_packet(&mut p);
    pkt[19] = 99; // 10.0.0.99
    fix_ip_checksum(&mut pkt);
    p.send_raw(ms(0), &pkt);
    recv_nothing!(p, time 0);
    assert_eq!(p.ep.stats().drops.not_our_address, 1);
}

#[test]
fn bad_sources_ports_and_protocols_dropped() {
    let mut p = listen();
    // A broadcast source (RFC 1122 §3.2.1.3).
    let mut pkt = good_packet(&mut p);
    pkt[12..16].copy_from_slice(&[255, 255, 255, 255]);
    fix_ip_checksum(&mut pkt);
    p.send_raw(ms(0), &pkt);
    // Port zero.
    let pkt = p.build(&Seg {
        src_port: 0,
        ..peer_syn()
    });
    p.send_raw(ms(0), &pkt);
    // UDP.
    let mut pkt = good_packet(&mut p);
    pkt[9] = 17;
    fix_ip_checksum(&mut pkt);
    p.send_raw(ms(0), &pkt);
    recv_nothing!(p, time 0);
    let d = p.ep.stats().drops;
    assert_eq!(d.bad_source_address, 1);
    assert_eq!(d.bad_tcp_flags, 1);
    assert_eq!(d.unsupported_protocol, 1);
    assert_eq!(p.ep.connection_count(), 0);
}

#[test]
fn syns_from_impossible_sources_are_dropped_unanswered() {
    // RFC 1122 §3.2.1.3 (IPv4) and RFC 4291 §2.5.2–2.5.3, §2.7 (IPv6): a
    // SYN from 0.0.0.0, "this network", loopback, multicast or broadcast
    // (::, ::1, multicast) names no sender; a SYN-ACK or RST would go to
    // 0.0.0.0 or to ourselves. Dropped and counted, nothing sent.
    let mut p = listen();
    let v4 = [
        "0.0.0.0",
        "0.0.0.9",
        "127.0.0.1",
        "224.0.0.5",
        "255.255.255.255",
    ];
    for src in v4 {
        let syn = peer_syn();
        let mut pkt = p.build(&syn);
        let a: std::net::Ipv4Addr = src.parse().unwrap();
        pkt[12..16].copy_from_slice(&a.octets());
        fix_ip_checksum(&mut pkt);
        p.send_raw(ms(0), &pkt);
        recv_nothing!(p, time 0);
    }
    assert_eq!(p.ep.stats().drops.bad_source_address, v4.len() as u64);
    let mut p = Peer::new_v6(test_config());
    p.ep.listen(LOCAL_PORT, 8).unwrap();
    let v6 = ["::", "::1", "ff02::1"];
    for src in v6 {
        let mut pkt = p.build(&peer_syn());
        let a: std::net::Ipv6Addr = src.parse().unwrap();
        pkt[8..24].copy_from_slice(&a.octets());
        p.send_raw(ms(0), &pkt);
        recv_nothing!(p, time 0);
    }
    assert_eq!(p.ep.stats().drops.bad_source_address, v6.len() as u64);
    assert_eq!(p.ep.connection_count(), 0);
    // An ordinary source is answered.
    send!(p, time 1, peer_syn());
    assert!(p.poll(ms(1)).is_some_and(|s| s.flags == SYN));
}

#[test]
fn multicast_and_broadcast_destinations_are_never_answered() {
    // RFC 1122 §4.2.3.10: "A SYN segment ... addressed to a broadcast or
    // multicast address MUST be silently discarded"; nothing may be sent
    // from such an address either (RFC 1122 §3.2.1.3), so echo requests to
    // them are ignored too (Linux: icmp_echo_ignore_broadcasts). In
    // transparent mode (no `addrs`) this is the only guard.
    let cfg = Config {
        addrs: Vec::new(),
        ..test_config()
    };
    // 0/8 too: "this network" is never a source (§3.2.1.3 (a), (b)), and
    // a reply from it would fail our own source check (found by fuzzing).
    for dst in ["224.0.0.1", "255.255.255.255", "0.0.10.1", "ff02::1"] {
        let dst: std::net::IpAddr = dst.parse().unwrap();
        let mut p = if dst.is_ipv4() {
            Peer::new(cfg.clone())
        } else {
            Peer::new_v6(cfg.clone())
        };
        p.ep.listen(LOCAL_PORT, 8).unwrap();
        p.local_ip = dst;
        let syn = p.build(&peer_syn());
        p.send_raw(ms(0), &syn);
        let to_closed = p.build(&Seg {
            dst_port: 81,
            ..peer_syn()
        });
        p.send_raw(ms(0), &to_closed);
        let ping = echo_request(&p, 1, 1, b"x");
        p.send_raw(ms(0), &ping);
        assert!(p.poll_raw(ms(0)).is_none(), "answered a packet to {dst}");
        assert_eq!(p.ep.connection_count(), 0);
    }
}

#[test]
fn ipv4_options_are_skipped() {
    // RFC 791: IHL covers the options; the checksum covers them too.
    let mut p = listen();
    let pkt = p.build(&peer_syn());
    let mut o = Vec::with_capacity(pkt.len() + 4);
    o.extend_from_slice(&pkt[..20]);
    o.extend_from_slice(&[1, 1, 1, 0]); // NOP NOP NOP EOL
    o.extend_from_slice(&pkt[20..]);
    o[0] = 0x46;
    let total = o.len() as u16;
    o[2..4].copy_from_slice(&total.to_be_bytes());
    o[10] = 0;
    o[11] = 0;
    let c = checksum_fold(checksum_sum(0, &o[..24]));
    o[10..12].copy_from_slice(&c.to_be_bytes());
    p.send_raw(ms(0), &o);
    recv!(p, time 0, our_synack());
}

#[test]
fn link_padding_after_the_ip_packet_is_ignored() {
    // Short frames arrive padded; the IP total length says where the packet ends.
    let mut p = listen();
    let mut pkt = p.build(&peer_syn());
    pkt.extend_from_slice(&[0u8; 6]);
    p.send_raw(ms(0), &pkt);
    recv!(p, time 0, our_synack());
}

#[test]
fn ipv6_extension_headers_are_skipped() {
    // RFC 8200 §4: a Hop-by-Hop and a Destination Options header (8 bytes
    // each, PadN) before TCP.
    let mut p = Peer::new_v6(test_config());
    p.ep.listen(LOCAL_PORT, 8).unwrap();
    let opts = TcpOptions {
        mss: Some(1440),
        ..syn_opts()
    };
    let pkt = p.build(&Seg {
        options: opts,
        ..peer_syn()
    });
    let mut x = pkt[..40].to_vec();
    x[6] = 0; // Hop-by-Hop
    let plen = u16::from_be_bytes([x[4], x[5]]) + 16;
    x[4..6].copy_from_slice(&plen.to_be_bytes());
    x.extend_from_slice(&[60, 0, 1, 4, 0, 0, 0, 0]); // next: Destination Options
    x.extend_from_slice(&[6, 0, 1, 4, 0, 0, 0, 0]); // next: TCP
    x.extend_from_slice(&pkt[40..]);
    p.send_raw(ms(0), &x);
    recv!(p, time 0, Seg { options: opts, ..our_synack() });
}

#[test]
fn ipv6_extension_header_past_the_end_is_dropped() {
    let mut p = Peer::new_v6(test_config());
    p.ep.listen(LOCAL_PORT, 8).unwrap();
    let pkt = p.build(&peer_syn());
    let mut x = pkt[..40].to_vec();
    x[6] = 0;
    x[4..6].copy_from_slice(&8u16.to_be_bytes());
    x.extend_from_slice(&[6, 200, 0, 0, 0, 0, 0, 0]); // claims 1608 bytes
    p.send_raw(ms(0), &x);
    recv_nothing!(p, time 0);
    assert_eq!(p.ep.stats().drops.bad_ipv6_extension, 1);
}

/// The peer's SYN with `opts` as raw option bytes (padded to 4).
fn syn_with_raw_options(p: &mut Peer, opts: &[u8]) -> Vec<u8> {
    let base = p.build(&Seg {
        options: TcpOptions::default(),
        ..peer_syn()
    });
    let mut o = opts.to_vec();
    while o.len() % 4 != 0 {
        o.push(0);
    }
    let mut pkt = base[..40].to_vec();
    pkt.extend_from_slice(&o);
    let tcp_len = 20 + o.len();
    pkt[2..4].copy_from_slice(&((20 + tcp_len) as u16).to_be_bytes());
    fix_ip_checksum(&mut pkt);
    pkt[20 + 12] = ((tcp_len / 4) as u8) << 4;
    pkt[20 + 16] = 0;
    pkt[20 + 17] = 0;
    let sum = checksum_sum(
        pseudo_header_sum(p.remote_ip, p.local_ip, 6, tcp_len as u32),
        &pkt[20..],
    );
    let c = checksum_fold(sum);
    pkt[20 + 16..20 + 18].copy_from_slice(&c.to_be_bytes());
    pkt
}

#[test]
fn unknown_syn_options_are_skipped() {
    // RFC 9293 §3.2: "a TCP implementation MUST be able to receive a TCP
    // Option in any segment" and ignore unknown kinds by their length.
    let mut p = listen();
    let opts = [2, 4, 0x03, 0xe8, 30, 4, 0, 0, 1, 3, 3, 7, 253, 2, 4, 2];
    let syn = syn_with_raw_options(&mut p, &opts);
    p.send_raw(ms(0), &syn);
    // MSS 1000, window scale 7 and SACK-permitted were all seen.
    recv!(p, time 0, Seg { options: TcpOptions { window_scale: Some(0), ..syn_opts() }, ..our_synack() });
    send!(p, time 1, peer_ack());
    p.conn = p.ep.accept(LOCAL_PORT);
    assert_eq!(p.ep.info(p.id()).unwrap().mss, 1000);
}

#[test]
fn malformed_syn_option_ends_the_walk() {
    // A zero option length ends the walk (as Linux); what came before counts
    // and the SYN is still answered.
    let mut p = listen();
    let opts = [2, 4, 0x03, 0xe8, 99, 0, 4, 2];
    let syn = syn_with_raw_options(&mut p, &opts);
    p.send_raw(ms(0), &syn);
    recv!(p, time 0, Seg { options: TcpOptions { mss: Some(MSS), ..Default::default() }, ..our_synack() });
    send!(p, time 1, peer_ack());
    p.conn = p.ep.accept(LOCAL_PORT);
    assert_eq!(p.ep.info(p.id()).unwrap().mss, 1000);
}

// =====================================================================
// Determinism and initial sequence numbers (RFC 6528)
// =====================================================================

/// Runs a small scripted exchange and returns every packet emitted.
fn scripted_run(seed: u64) -> Vec<Vec<u8>> {
    let cfg = Config {
        seed,
        timestamps: true,
        ..test_config()
    };
    let mut p = listen_with(cfg);
    let mut out = Vec::new();
    let syn = p.build(&Seg {
        options: TcpOptions {
            timestamps: Some((7, 0)),
            ..syn_opts()
        },
        ..peer_syn()
    });
    p.send_raw(ms(0), &syn);
    let synack = p.poll_raw(ms(0)).expect("SYN-ACK");
    // Learn the ISS and TS offset as `Peer::poll` would.
    let ip = parse_ip(&synack).unwrap();
    let t = tcp::wire::parse_tcp(&ip).unwrap();
    p.seq_delta = Some(t.seq.0.wrapping_sub(LOCAL_SEQ.0));
    p.ts_off = t.options.timestamps.map(|(v, _)| v);
    out.push(synack);
    let ack = p.build(&Seg {
        payload: b"hello".to_vec(),
        ..peer_ack()
    });
    p.send_raw(ms(3), &ack);
    p.conn = p.ep.accept(LOCAL_PORT);
    p.write(b"world");
    while let Some(pkt) = p.poll_raw(ms(4)) {
        out.push(pkt);
    }
    out.extend(p.poll_raw(ms(300)));
    out
}

#[test]
fn same_seed_same_bytes() {
    let a = scripted_run(42);
    assert!(a.len() >= 3, "{} packets", a.len());
    assert_eq!(a, scripted_run(42));
    // Another seed: another ISN (and timestamp offset), so other bytes.
    assert_ne!(a, scripted_run(43));
}

#[test]
fn isn_follows_the_4us_clock_on_a_reused_tuple() {
    // RFC 6528 §3: ISN = M + F(4-tuple, secret), M a 4-microsecond timer.
    // A new incarnation of the same 4-tuple 1 s later starts 250 000 higher,
    // comfortably above the old one.
    let mut p = time_wait();
    let first = p.seq_delta.unwrap();
    p.forget_iss();
    send!(p, time 1000, Seg { seq: REMOTE_SEQ + 100_000, ..peer_syn() });
    recv!(p, time 1000, Seg { ack: Some(REMOTE_SEQ + 100_001), ..our_synack() });
    let second = p.seq_delta.unwrap();
    assert_eq!(second.wrapping_sub(first), 250_000);
}

#[test]
fn stats_count_one_whole_connection() {
    let mut p = established();
    send!(p, time 1, Seg { ack: Some(LOCAL_SEQ + 1), payload: b"hi".to_vec(), ..send_templ() });
    assert_eq!(p.read_all(), b"hi");
    p.write(b"yo");
    recv!(p, time 2, Seg { ack: Some(REMOTE_SEQ + 3), window: RCV_BUF as u16 - 2, flags: PSH, payload: b"yo".to_vec(), ..recv_templ() });
    send!(p, time 3, Seg { seq: REMOTE_SEQ + 3, flags: FIN, ack: Some(LOCAL_SEQ + 3), ..send_templ() });
    let ack = p.poll(ms(3)).expect("ACK of FIN");
    assert_eq!(ack.ack, Some(REMOTE_SEQ + 4));
    p.ep.close(p.id()).unwrap();
    assert!(p.poll(ms(4)).expect("FIN").flags.fin());
    send!(p, time 5, Seg { seq: REMOTE_SEQ + 4, ack: Some(LOCAL_SEQ + 4), ..send_templ() });
    assert_eq!(p.ep.connection_count(), 0);
    let s = *p.ep.stats();
    // In: SYN, ACK, "hi", FIN, ACK. Out: SYN-ACK, "yo", ACK, FIN.
    assert_eq!((s.packets_in, s.segments_in), (5, 5));
    assert_eq!((s.packets_out, s.segments_out), (4, 4));
    assert_eq!((s.passive_opens, s.active_opens, s.closed), (1, 0, 1));
    assert_eq!(
        (s.retransmits, s.rst_in, s.rst_out, s.timeouts),
        (0, 0, 0, 0)
    );
    assert_eq!(s.drops.total(), 0);
    assert_eq!(p.count(State::Listen), 1);
}

#[test]
fn configured_ttl_on_every_packet() {
    // Config::ttl: "TTL / hop limit of emitted packets" — TCP and echo
    // replies alike, on both families.
    for v6 in [false, true] {
        let cfg = Config {
            ttl: 17,
            ..test_config()
        };
        let mut p = if v6 {
            Peer::new_v6(cfg)
        } else {
            Peer::new(cfg)
        };
        let syn = p.build(&peer_syn());
        p.send_raw(ms(0), &syn);
        let rst = p.poll_raw(ms(0)).expect("RST");
        assert_eq!(parse_ip(&rst).unwrap().ttl, 17, "TCP, v6 {v6}");
        let ping = echo_request(&p, 1, 1, b"x");
        p.send_raw(ms(0), &ping);
        let reply = p.poll_raw(ms(0)).expect("echo reply");
        assert_eq!(parse_ip(&reply).unwrap().ttl, 17, "ICMP, v6 {v6}");
    }
}

// ----- PRR (RFC 6937) -------------------------------------------------------

/// RFC 6937 §3.1's sender: 20 segments in flight (cwnd = FlightSize = 20),
/// NewReno (ssthresh = 10 at the start of recovery), 40 segments queued.
/// The peer's ACK `k` SACKs segments `first..first + k + 2` while SND.UNA's
/// segments below `first` are lost; returns the sequence numbers sent on
/// each of `acks` such ACKs (recovery starts on the first, the third
/// duplicate: RFC 6675's DupThresh).
fn prr_example(cfg: Config, first: u32, acks: u32) -> Vec<Vec<SeqNum>> {
    let cfg = Config {
        congestion: tcp::Congestion::NewReno,
        initial_window: 20,
        ..cfg
    };
    let mut p = established_with(cfg);
    let (l, m) = (LOCAL_SEQ + 1, u32::from(MSS));
    p.write(&data(40 * MSS as usize));
    for i in 0..20u32 {
        assert_eq!(p.poll(ms(0)).expect("segment").seq, l + i * m);
    }
    recv_nothing!(p, time 0);
    // The first two duplicates (one and two segments SACKed) send nothing:
    // cwnd is full (no Limited Transmit).
    for k in 1..=2 {
        send!(p, time 10, Seg { ack: Some(l), options: TcpOptions { sack: sack(&[(l + first * m, l + (first + k) * m)]), ..Default::default() }, ..send_templ() });
        recv_nothing!(p, time 10);
    }
    let mut sent = Vec::new();
    for k in 0..acks {
        let t = 11 + u64::from(k);
        let end = l + (first + 3 + k) * m;
        send!(p, time t, Seg { ack: Some(l), options: TcpOptions { sack: sack(&[(l + first * m, end)]), ..Default::default() }, ..send_templ() });
        let mut now = Vec::new();
        while let Some(s) = p.poll(ms(t)) {
            now.push(s.seq);
        }
        sent.push(now);
    }
    assert_eq!(p.ep.stats().fast_retransmits, 1);
    sent
}

#[test]
fn prr_single_loss_sends_on_every_other_ack() {
    // RFC 6937 §3.1, one loss (segment 0): PRR sends the retransmission on
    // the ACK that starts recovery, then one new segment on every second
    // ACK (sndcnt = CEIL(prr_delivered * ssthresh / RecoverFS) - prr_out,
    // ssthresh / RecoverFS = 1/2): neither a pause nor a burst.
    let (l, m) = (LOCAL_SEQ + 1, u32::from(MSS));
    let s = prr_example(test_config(), 1, 10);
    let mut want: Vec<Vec<SeqNum>> = Vec::new();
    for k in 0..10u32 {
        want.push(match k {
            0 => vec![l],
            k if k % 2 == 0 => vec![l + (20 + k / 2 - 1) * m],
            _ => vec![],
        });
    }
    assert_eq!(s, want);
    // Without PRR (RFC 6675's window = ssthresh against a pipe of 16), the
    // sender idles for half a round trip after the retransmission.
    let s = prr_example(legacy_recovery(), 1, 10);
    assert_eq!(s[0], [l]);
    assert!(s[1..8].iter().all(Vec::is_empty), "{s:?}");
    assert_eq!(s[8], [l + 20 * m]);
}

#[test]
fn prr_ssrb_after_a_burst_loss_sends_two_per_ack() {
    // RFC 6937 §3.1, a burst of 15 losses: segments 0..15 lost, 15..20
    // arrive. The pipe (what is above the highest SACKed segment and what
    // was resent) is far below ssthresh; PRR-SSRB sends DeliveredData + 1
    // MSS = two segments per ACK, the holes in order (a slow start back to
    // ssthresh), not ssthresh - pipe at once.
    let (l, m) = (LOCAL_SEQ + 1, u32::from(MSS));
    let s = prr_example(test_config(), 15, 3);
    assert_eq!(
        s,
        [
            vec![l, l + m],
            vec![l + 2 * m, l + 3 * m],
            vec![l + 4 * m, l + 5 * m]
        ]
    );
}

#[test]
fn prr_without_sack_counts_each_duplicate_as_one_segment_delivered() {
    // RFC 6937 §3 without SACK: each duplicate ACK stands for one SMSS
    // delivered. NewReno (ssthresh = FlightSize / 2): the retransmission
    // on the third duplicate, then one new segment per two duplicates,
    // where RFC 5681 §3.2's inflation sends nothing until the duplicates
    // pass the deflated window, then one per duplicate.
    let cfg = Config {
        congestion: tcp::Congestion::NewReno,
        ..test_config()
    };
    let mut p = established_no_sack_with(cfg);
    let (l, m) = (LOCAL_SEQ + 1, u32::from(MSS));
    p.write(&data(30 * MSS as usize));
    for i in 0..10u32 {
        assert_eq!(p.poll(ms(0)).expect("segment").seq, l + i * m);
    }
    recv_nothing!(p, time 0);
    let ack = |a: SeqNum| Seg {
        ack: Some(a),
        ..send_templ()
    };
    // Segment 0 arrives (slow start: two more go out), segment 1 is lost.
    send!(p, time 10, ack(l + m));
    assert_eq!(p.poll(ms(10)).expect("new").seq, l + 10 * m);
    assert_eq!(p.poll(ms(10)).expect("new").seq, l + 11 * m);
    recv_nothing!(p, time 10);
    let mut sent = Vec::new();
    for k in 0..9u64 {
        send!(p, time 11 + k, ack(l + m));
        let mut now = Vec::new();
        while let Some(s) = p.poll(ms(11 + k)) {
            now.push(s.seq);
        }
        sent.push(now);
    }
    assert_eq!(p.ep.stats().fast_retransmits, 1);
    let e: Vec<SeqNum> = Vec::new();
    assert_eq!(
        sent,
        [
            e.clone(),
            e.clone(),
            vec![l + m],
            e.clone(),
            vec![l + 12 * m],
            e.clone(),
            // The 7th duplicate takes the pipe (12 outstanding less 7
            // delivered) below ssthresh (5.5 segments): PRR-SSRB, at most
            // ssthresh − pipe, half a segment here, so nothing; then one
            // per duplicate.
            e.clone(),
            vec![l + 13 * m],
            vec![l + 14 * m],
        ]
    );
}

// ----- memory limit (Config::mem_limit, Linux's tcp_mem) ---------------------

/// `n` bytes of the peer's stream from offset `off` (byte i = i % 251).
fn stream(off: usize, n: usize) -> Vec<u8> {
    (off..off + n).map(|i| (i % 251) as u8).collect()
}

#[test]
fn memory_pressure_shrinks_windows_refuses_growth_keeps_edge_and_data() {
    // One connection, a 64 KiB endpoint-wide limit: pressure above 2/3 of
    // it, growth refused past it. The receive ring reaches 32 KiB, then the
    // application queues 16 KiB to send: 48 KiB held, pressure. The peer
    // keeps sending up to the edge advertised before: the ring cannot grow
    // to 64 KiB, so what does not fit is dropped unacknowledged, never
    // stored half; the window offered shrinks, but the right edge the peer
    // was given never moves back (RFC 9293 §3.8.6, RFC 7323 §2.4). Once the
    // application reads, the data is intact and the rest gets in.
    let cfg = Config {
        mem_limit: 64 * 1024,
        ..test_config()
    };
    let mut p = established_with(cfg);
    let mut edge = REMOTE_SEQ + 1 + RCV_BUF as u32; // from the SYN-ACK
    let mut t = 1;
    // Takes our segments, checking the edge never retreats.
    let drain = |p: &mut Peer, t: u64, edge: &mut SeqNum| {
        let mut acks = Vec::new();
        while let Some(s) = p.poll(ms(t)) {
            if let Some(a) = s.ack {
                let e = a + u32::from(s.window);
                assert!(e >= *edge, "right edge moved back: {e:?} < {edge:?}");
                *edge = e;
                acks.push((a, s.window));
            }
        }
        acks
    };
    let mut off = 0usize;
    while off + 1460 <= 32 * 1024 {
        let seg = Seg {
            seq: REMOTE_SEQ + 1 + off as u32,
            ack: Some(LOCAL_SEQ + 1),
            payload: stream(off, 1460),
            ..send_templ()
        };
        p.send(ms(t), seg);
        off += 1460;
        drain(&mut p, t, &mut edge);
    }
    assert_eq!(p.ep.stats().mem_pressure, 0);
    assert!(!p.ep.under_memory_pressure());
    p.write(&[7u8; 16 * 1024]);
    assert!(p.ep.under_memory_pressure());
    assert_eq!(p.ep.stats().mem_pressure, 1);
    t += 1;
    let acks = drain(&mut p, t, &mut edge);
    assert!(!acks.is_empty());
    // The window now offers only what the 32 KiB already held can take, yet
    // the segments keep the edge advertised before.
    assert!(p.ep.stats().mem_window_clamped > 0);
    // Send up to the edge we were given: all of it is acceptable.
    let accepted_before = p.ep.stats().mem_rcv_drops;
    while off + 1460 <= RCV_BUF {
        let seg = Seg {
            seq: REMOTE_SEQ + 1 + off as u32,
            ack: Some(LOCAL_SEQ + 1),
            payload: stream(off, 1460),
            ..send_templ()
        };
        p.send(ms(t), seg);
        off += 1460;
        drain(&mut p, t, &mut edge);
    }
    assert!(p.ep.stats().mem_grow_refused > 0, "{:?}", p.ep.stats());
    assert!(p.ep.stats().mem_rcv_drops > accepted_before);
    assert!(
        p.ep.buffer_bytes() <= 64 * 1024,
        "held {}",
        p.ep.buffer_bytes()
    );
    // The application reads: exactly the 32 KiB the ring held, intact.
    let got = p.read_all();
    assert_eq!(got.len(), 32 * 1024);
    assert_eq!(got, stream(0, 32 * 1024));
    assert!(
        !p.ep.under_memory_pressure(),
        "the ring went back: below half"
    );
    t += 1;
    let acks = drain(&mut p, t, &mut edge);
    let (ack, _) = *acks.last().expect("a window update");
    assert_eq!(ack, REMOTE_SEQ + 1 + 32 * 1024);
    // The peer retransmits from there; it all gets in.
    let mut at = 32 * 1024;
    while at < off {
        let n = 1460.min(off - at);
        let seg = Seg {
            seq: REMOTE_SEQ + 1 + at as u32,
            ack: Some(LOCAL_SEQ + 1),
            payload: stream(at, n),
            ..send_templ()
        };
        p.send(ms(t), seg);
        at += n;
        drain(&mut p, t, &mut edge);
    }
    let rest = p.read_all();
    assert_eq!(rest, stream(32 * 1024, off - 32 * 1024));
}

#[test]
fn memory_pressure_holds_send_buffer_at_what_it_has() {
    // Under pressure an application write sees only the free space of the
    // send storage the connection holds (at least 4 KiB), not the 256 KiB
    // ceiling; the cut write is counted.
    let cfg = Config {
        mem_limit: 64 * 1024,
        ..test_config()
    };
    let mut p = established_with(cfg);
    let id = p.id();
    assert_eq!(p.ep.send_capacity(id).unwrap(), 256 * 1024);
    // 48 KiB queued: the ring is 64 KiB (> 2/3 of the limit): pressure.
    assert_eq!(p.ep.send(id, &[1u8; 48 * 1024]), Ok(48 * 1024));
    assert!(p.ep.under_memory_pressure());
    assert_eq!(p.ep.send_capacity(id).unwrap(), 16 * 1024);
    assert_eq!(p.ep.send(id, &[2u8; 20 * 1024]), Ok(16 * 1024));
    assert_eq!(p.ep.stats().mem_send_clamped, 1);
    assert_eq!(p.ep.send_capacity(id).unwrap(), 0);
}
