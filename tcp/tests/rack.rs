//! RACK-TLP (RFC 8985) and F-RTO (RFC 5682) in virtual time: one endpoint
//! sending, a scripted receiver in front of it (`Script`) that drops the
//! transmissions a test names, answers each arriving segment with an ACK
//! (SACK blocks, D-SACK for duplicates) after a fixed delay, and records
//! what the endpoint sent and when.

// Tests may unwrap (brief): a panic is a test failure.
#![allow(clippy::unwrap_used, unused_macros)]

#[macro_use]
#[path = "common/peer.rs"]
mod peer;

use peer::*;
use tcp::wire::TcpOptions;
use tcp::{Config, Instant, SeqNum, State};

const M: u32 = MSS as u32;

/// The options on the peer's SYN: MSS and SACK-permitted.
fn syn_opts(sack: bool) -> TcpOptions {
    TcpOptions {
        mss: Some(MSS),
        sack_permitted: sack,
        ..Default::default()
    }
}

/// RACK-TLP and F-RTO on (the defaults), on the test configuration.
fn rack_config() -> Config {
    Config {
        rack: true,
        tlp: true,
        frto: true,
        limited_transmit: true,
        ..test_config()
    }
}

/// ESTABLISHED through a passive open whose handshake takes 10 ms: SRTT
/// 10 ms, RTO at its 200 ms floor.
fn established(cfg: Config, sack: bool) -> Peer {
    let window = cfg.recv_buffer.min(65535) as u16;
    let mut p = Peer::new(cfg);
    p.ep.listen(LOCAL_PORT, 8).unwrap();
    send!(p, time 0, Seg { seq: REMOTE_SEQ, flags: SYN, options: syn_opts(sack), ..send_templ() });
    recv!(p, time 0, Seg { seq: LOCAL_SEQ, flags: SYN, window, options: syn_opts(sack), ..recv_templ() });
    send!(p, time 10, Seg { ack: Some(LOCAL_SEQ + 1), ..send_templ() });
    p.conn = p.ep.accept(LOCAL_PORT);
    assert_eq!(p.state(), State::Established);
    p
}

fn us(t: u64) -> Instant {
    Instant::from_micros(t)
}

/// A transmission the endpoint made: when, which segment (in MSS units
/// from the first data byte), and how many times that segment had gone
/// out before.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Tx {
    at_ms: u64,
    seg: u32,
    nth: u32,
}

/// The scripted receiver.
struct Script {
    p: Peer,
    /// One-way delay each way, µs (the RTT is twice this).
    delay: u64,
    /// ACKs in flight: (arrival time µs, segment to hand in).
    acks: Vec<(u64, Seg)>,
    /// Data in flight to the receiver: (arrival µs, start offset, len).
    data: Vec<(u64, u32, u32)>,
    /// Receiver state: next expected offset and the ranges held above it
    /// (most recent first, RFC 2018 §4).
    next: u32,
    above: Vec<(u32, u32)>,
    /// Everything the endpoint sent.
    log: Vec<Tx>,
    sent_count: std::collections::HashMap<u32, u32>,
    /// The receiver stops answering before this time (µs): its ACKs are
    /// held back (a delay spike) and delivered at `hold_until`.
    hold_until: u64,
    now: u64,
    sack: bool,
}

impl Script {
    fn new(p: Peer, rtt_ms: u64, sack: bool) -> Script {
        Script {
            p,
            delay: rtt_ms * 500,
            acks: Vec::new(),
            data: Vec::new(),
            next: 0,
            above: Vec::new(),
            log: Vec::new(),
            sent_count: Default::default(),
            hold_until: 0,
            now: 10_000,
            sack,
        }
    }

    /// Collects what the endpoint emits now; `drop(tx)` says which
    /// transmissions the path loses.
    fn pump(&mut self, drop: &dyn Fn(&Tx) -> bool) {
        while let Some(s) = self.p.poll(us(self.now)) {
            if s.payload.is_empty() {
                continue;
            }
            let off = s.seq.since(LOCAL_SEQ + 1);
            let seg = off / M;
            let n = self.sent_count.entry(seg).or_insert(0);
            let tx = Tx {
                at_ms: self.now / 1000,
                seg,
                nth: *n,
            };
            *n += 1;
            self.log.push(tx);
            if !drop(&tx) {
                self.data
                    .push((self.now + self.delay, off, s.payload.len() as u32));
            }
        }
    }

    /// The receiver takes `[s, s + len)` and queues its ACK.
    fn receive(&mut self, at: u64, s: u32, len: u32) {
        let e = s + len;
        let mut dsack = None;
        if e <= self.next || self.above.iter().any(|&(a, b)| a <= s && e <= b) {
            dsack = Some((s, e));
        } else if s <= self.next {
            self.next = e;
        } else {
            self.above.insert(0, (s, e));
        }
        // Merge what touches and advance over what became contiguous.
        let mut merged: Vec<(u32, u32)> = Vec::new();
        for &(a, b) in &self.above {
            if let Some(m) = merged.iter_mut().find(|m| a <= m.1 && m.0 <= b) {
                m.0 = m.0.min(a);
                m.1 = m.1.max(b);
            } else {
                merged.push((a, b));
            }
        }
        loop {
            let before = self.next;
            merged.retain(|&(a, b)| {
                if a <= self.next {
                    self.next = self.next.max(b);
                    false
                } else {
                    true
                }
            });
            if self.next == before {
                break;
            }
        }
        self.above = merged;
        let l = LOCAL_SEQ + 1;
        let mut blocks: Vec<(SeqNum, SeqNum)> = Vec::new();
        if self.sack {
            if let Some((a, b)) = dsack {
                blocks.push((l + a, l + b));
            }
            for &(a, b) in self.above.iter().take(3) {
                blocks.push((l + a, l + b));
            }
            blocks.truncate(4);
        }
        let ack = Seg {
            ack: Some(l + self.next),
            options: TcpOptions {
                sack: sack(&blocks),
                ..Default::default()
            },
            ..send_templ()
        };
        let when = (at + self.delay).max(self.hold_until);
        self.acks.push((when, ack));
    }

    /// Runs until `until_ms` or until everything written is acknowledged.
    fn run(&mut self, until_ms: u64, total: u32, drop: &dyn Fn(&Tx) -> bool) {
        self.pump(drop);
        while self.now < until_ms * 1000 {
            if self.next >= total && self.data.is_empty() && self.acks.is_empty() {
                let info = self.p.ep.info(self.p.id()).unwrap();
                if info.in_flight == 0 {
                    return;
                }
            }
            let t_data = self.data.iter().map(|d| d.0).min();
            let t_ack = self.acks.iter().map(|a| a.0).min();
            let t_timer = self.p.next_timeout().map(|t| t.as_micros());
            let Some(t) = [t_data, t_ack, t_timer].into_iter().flatten().min() else {
                break;
            };
            if t > until_ms * 1000 {
                self.now = self.now.max(until_ms * 1000);
                break;
            }
            self.now = t.max(self.now);
            // Data reaching the receiver.
            let mut arrived: Vec<(u64, u32, u32)> = Vec::new();
            self.data.retain(|&d| {
                if d.0 <= t {
                    arrived.push(d);
                    false
                } else {
                    true
                }
            });
            arrived.sort();
            for (at, s, len) in arrived {
                self.receive(at, s, len);
            }
            // ACKs reaching the endpoint, in order.
            let mut due: Vec<(u64, Seg)> = Vec::new();
            let mut i = 0;
            while i < self.acks.len() {
                if self.acks[i].0 <= t {
                    due.push(self.acks.remove(i));
                } else {
                    i += 1;
                }
            }
            due.sort_by_key(|a| a.0);
            for (_, a) in due {
                self.p.send(us(self.now), a);
                self.pump(drop);
            }
            self.p.tick(us(self.now));
            self.pump(drop);
        }
    }

    fn stats(&self) -> tcp::Stats {
        *self.p.ep.stats()
    }

    /// Transmissions of segment `seg` after the first.
    fn resends(&self, seg: u32) -> Vec<Tx> {
        self.log
            .iter()
            .copied()
            .filter(|t| t.seg == seg && t.nth > 0)
            .collect()
    }
}

fn data(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 + 3) as u8).collect()
}

#[test]
fn lost_tail_is_repaired_by_a_probe_in_about_two_rtts_without_rto() {
    // Ten segments at 10 ms; the last two are lost. RTT 10 ms.
    let mut s = Script::new(established(rack_config(), true), 10, true);
    s.p.write(&data(10 * M as usize));
    s.run(1000, 10 * M, &|t| t.nth == 0 && t.seg >= 8);
    let st = s.stats();
    assert_eq!(st.rto_timeouts, 0, "no RTO");
    assert_eq!(st.tlp_probes, 1, "one probe for the tail");
    // The ACK of segment 7 arrives at 20 ms; PTO = 2·SRTT = 20 ms later
    // the probe resends the last segment (9), whose SACK at 50 ms lets
    // RACK mark segment 8 lost at once.
    assert_eq!(
        s.resends(9),
        [Tx {
            at_ms: 40,
            seg: 9,
            nth: 1
        }]
    );
    assert_eq!(
        s.resends(8),
        [Tx {
            at_ms: 50,
            seg: 8,
            nth: 1
        }]
    );
    assert_eq!(st.retransmits, 2);
    assert_eq!(s.next, 10 * M);
    // Everything acknowledged at 60 ms: two RTTs after the tail's ACK was
    // due (30 ms), where the RTO alone would have taken 200 ms more.
    assert!(s.now <= 60_000, "done at {} µs", s.now);
}

#[test]
fn legacy_tail_loss_waits_for_the_rto() {
    // The same loss with RACK-TLP off: the RTO (200 ms floor) repairs it.
    let mut s = Script::new(established(test_config(), true), 10, true);
    s.p.write(&data(10 * M as usize));
    s.run(2000, 10 * M, &|t| t.nth == 0 && t.seg >= 8);
    let st = s.stats();
    assert_eq!(st.tlp_probes, 0);
    assert!(st.rto_timeouts >= 1);
    assert!(s.now > 200_000);
}

/// Two rounds: in the first, segment 8 arrives 1.5 ms late (one segment
/// SACKed above it: no loss, but RACK.reordering_seen); in the second,
/// segment 12 arrives 2 ms late, after three segments above it were
/// SACKed. RACK's window (min_RTT/4 = 2.5 ms) holds; the three-SACK rule
/// takes it for loss.
fn reordered_round(cfg: Config) -> Script {
    let mut s = Script::new(established(cfg, true), 10, true);
    let total = 30 * M;
    s.p.write(&data(total as usize));
    let none = |_: &Tx| false;
    s.run(12, total, &none);
    for d in s.data.iter_mut().filter(|d| d.1 == 8 * M) {
        d.0 += 1500;
    }
    s.run(22, total, &none);
    let mut late = false;
    for d in s.data.iter_mut().filter(|d| d.1 == 12 * M) {
        d.0 += 2000;
        late = true;
    }
    assert!(late, "segment 12 in flight at 22 ms: {:?}", s.log);
    s.run(500, total, &none);
    assert_eq!(s.next, total);
    s
}

#[test]
fn reordering_within_the_window_causes_no_retransmission() {
    let s = reordered_round(rack_config());
    assert_eq!(s.stats().retransmits, 0, "{:?}", s.log);
    assert_eq!(s.stats().fast_retransmits, 0);
    // The three-duplicate rule (RACK off) takes the same reordering for loss.
    let legacy = reordered_round(test_config());
    assert!(legacy.stats().fast_retransmits >= 1);
}

#[test]
fn lost_retransmission_is_detected_without_rto() {
    // Forty segments queued, cwnd 10: segment 2 is lost, and so is its
    // first retransmission. Segments sent after that retransmission are
    // SACKed, so RACK marks it lost again (RFC 8985 §6.2 step 5).
    let mut s = Script::new(established(rack_config(), true), 10, true);
    let total = 40 * M;
    s.p.write(&data(total as usize));
    s.run(2000, total, &|t| t.seg == 2 && t.nth <= 1);
    let st = s.stats();
    assert_eq!(st.rto_timeouts, 0, "{:?}", s.log);
    let r = s.resends(2);
    assert_eq!(r.len(), 2, "{r:?}");
    assert!(st.rack_lost_retransmits >= 1);
    assert_eq!(s.next, total);
    // The second retransmission follows the first by about one RTT.
    assert!(r[1].at_ms - r[0].at_ms <= 15, "{r:?}");
    // Legacy: the lost retransmission waits for the RTO.
    let mut l = Script::new(established(test_config(), true), 10, true);
    l.p.write(&data(total as usize));
    l.run(2000, total, &|t| t.seg == 2 && t.nth <= 1);
    assert!(l.stats().rto_timeouts >= 1);
}

#[test]
fn dsack_widens_the_reordering_window() {
    // Segment 1 of a round is late by 6 ms: beyond min_RTT/4 (2.5 ms), so
    // RACK resends it; the receiver's D-SACK says the resend was needless.
    // The window grows (RFC 8985 §6.2 step 4), and a 6 ms reordering in a
    // later round (segment 21) is waited out: no second retransmission.
    let mut s = Script::new(established(rack_config(), true), 10, true);
    let total = 150 * M;
    s.p.write(&data(total as usize));
    s.run(12, total, &|_| false);
    for d in s.data.iter_mut() {
        if d.1 == M {
            d.0 += 6000;
        }
    }
    s.run(31, total, &|_| false);
    assert_eq!(s.resends(1).len(), 1, "{:?}", s.log);
    assert!(s.stats().dsacks_in >= 1);
    let before = s.stats().retransmits;
    // Wait for a later segment to be in flight, then make it late.
    let target = s.log.iter().map(|t| t.seg).max().unwrap() + 1;
    let mut done = false;
    for _ in 0..200 {
        s.run(s.now / 1000 + 1, total, &|_| false);
        if let Some(d) = s.data.iter_mut().find(|d| d.1 == target * M) {
            d.0 += 4000;
            done = true;
            break;
        }
    }
    assert!(done, "segment {target} never went out");
    s.run(1000, total, &|_| false);
    assert_eq!(s.resends(target).len(), 0, "{:?}", s.log);
    assert_eq!(s.stats().retransmits, before);
    assert_eq!(s.stats().rto_timeouts, 0);
}

#[test]
fn spurious_rto_is_detected_by_frto_and_undone() {
    // A delay spike: after the first round the receiver's ACKs are held
    // for 400 ms (nothing lost). The RTO fires at 200 ms past the last
    // send and resends segment 10; then the held ACKs arrive. They cover
    // data never retransmitted: F-RTO declares the RTO spurious and
    // restores cwnd and ssthresh.
    let mut s = Script::new(established(rack_config(), true), 10, true);
    let total = 150 * M;
    s.p.write(&data(total as usize));
    s.run(30, total, &|_| false);
    let before = s.p.ep.info(s.p.id()).unwrap();
    s.hold_until = 400_000;
    s.run(2000, total, &|_| false);
    let st = s.stats();
    assert!(st.rto_timeouts >= 1, "the RTO fired");
    assert_eq!(st.frto_spurious_rtos, 1, "{:?}", s.log);
    let after = s.p.ep.info(s.p.id()).unwrap();
    assert!(
        after.ssthresh >= before.ssthresh,
        "ssthresh restored: {} < {}",
        after.ssthresh,
        before.ssthresh
    );
    // Only the one segment resent at the RTO (no go-back-N of the window).
    assert_eq!(st.retransmits, 1, "{:?}", s.log);
    assert_eq!(s.next, total);
    // Without F-RTO the same spike costs the go-back-N of the window.
    let mut l = Script::new(
        established(
            Config {
                frto: false,
                ..rack_config()
            },
            true,
        ),
        10,
        true,
    );
    l.p.write(&data(total as usize));
    l.run(30, total, &|_| false);
    l.hold_until = 400_000;
    l.run(2000, total, &|_| false);
    assert_eq!(l.stats().frto_spurious_rtos, 0);
    assert!(l.stats().retransmits > 1);
}

#[test]
fn real_loss_after_rto_is_not_undone() {
    // An outage: everything from segment 10 on sent before 240 ms is
    // lost, the tail probe too. The RTO resends segment 10; F-RTO sends new
    // data on its ACK, and the next ACK SACKs only that new data: the loss
    // was real, the RTO's reduction stays.
    let mut s = Script::new(established(rack_config(), true), 10, true);
    let total = 100 * M;
    s.p.write(&data(total as usize));
    s.run(3000, total, &|t| t.at_ms < 240 && t.seg >= 10);
    let st = s.stats();
    assert!(st.rto_timeouts >= 1, "{:?}", s.log);
    assert!(st.tlp_probes >= 1);
    assert_eq!(st.frto_spurious_rtos, 0, "{:?}", s.log);
    assert_eq!(s.next, total);
}

#[test]
fn limited_transmit_sends_new_data_on_the_first_two_duplicates() {
    // Without SACK: segment 0 of 10 lost, 10 more queued. Each of the
    // first two duplicate ACKs lets one new segment out (RFC 3042 §2).
    let mut s = Script::new(established(rack_config(), false), 10, false);
    let total = 20 * M;
    s.p.write(&data(total as usize));
    s.run(21, total, &|t| t.seg == 0 && t.nth == 0);
    // The first duplicate ACKs arrive at 20 ms (one per segment 1..9).
    let new_at_20: Vec<u32> = s
        .log
        .iter()
        .filter(|t| t.at_ms == 20 && t.nth == 0)
        .map(|t| t.seg)
        .collect();
    assert_eq!(new_at_20[..2], [10, 11], "{:?}", s.log);
    s.run(2000, total, &|t| t.seg == 0 && t.nth == 0);
    assert_eq!(s.next, total);
    // Off: nothing new before the fast retransmit.
    let mut l = Script::new(established(test_config(), false), 10, false);
    l.p.write(&data(total as usize));
    l.run(21, total, &|t| t.seg == 0 && t.nth == 0);
    let first_new = l.log.iter().find(|t| t.seg >= 10).map(|t| t.at_ms);
    let fast = l.log.iter().find(|t| t.nth > 0).map(|t| t.at_ms);
    assert!(first_new.is_none() || first_new >= fast, "{:?}", l.log);
}
