//! Packetization-layer path MTU discovery (RFC 4821; RFC 8899 is the same
//! search for datagram transports), as Linux's `tcp_mtu_probing`: a path
//! that drops large segments without sending "fragmentation needed" (a
//! black hole: a filtered ICMP, a tunnel that eats them) is found by
//! repeated RTOs, the MSS falls to a base, and probes of one larger
//! segment search upward between a size known to pass and one known (or
//! assumed) not to.
//!
//! Sizes here are path MTUs, in the units of [`super::pmtu::ConnIcmp`]'s
//! `path_mtu`: the IP packet length of a full segment (IP and TCP headers
//! and the TCP options every segment carries). Linux keeps its
//! `icsk_mtup.search_low`/`search_high`/`probe_size` the same way.

use super::{Conn, Ctx, State};
use crate::config::{Config, MtuProbing};
use crate::seq::SeqNum;
use crate::time::{Duration, Instant};

/// Linux's `tcp_retries1` (3) RTOs, modelled as its `retransmits_timed_out`
/// does with `TCP_RTO_MIN` (200 ms): `((2 << 3) - 1) * 200 ms`. RTOs that
/// keep failing this long after the head was sent mean a black hole.
const BLACKHOLE_AFTER: Duration = Duration::from_millis(15 * 200);

/// Linux's `tcp_reordering` default (3): a probe needs this many segments
/// plus one queued behind it, so that its loss draws duplicate ACKs.
const REORDERING: u32 = 3;

/// Linux's `tcp_mtu_probe` probes only with a congestion window of at least
/// this many segments.
const MIN_CWND_SEGMENTS: u32 = 11;

/// A connection's probing state (Linux: `icsk_mtup`, `tp->mtu_probe`).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct MtuProbe {
    /// Probing is on for this connection: with [`MtuProbing::Always`] from
    /// the first segment, with [`MtuProbing::Blackhole`] once a black hole
    /// was detected. While on, `search_low` caps the path MTU.
    pub(super) enabled: bool,
    /// The largest size known to cross the path.
    pub(super) search_low: usize,
    /// The largest size not yet known not to cross it.
    search_high: usize,
    /// The probe in flight: its first and last sequence numbers and size.
    probe: Option<(SeqNum, SeqNum, usize)>,
    /// When the current search began (Linux `probe_timestamp`).
    stamp: Option<Instant>,
    /// When the head of the current run of RTOs was sent (Linux
    /// `retrans_stamp`).
    rto_since: Option<Instant>,
}

/// What dispatch does about a probe now.
pub(crate) enum ProbeNow {
    /// No probe: send as usual.
    No,
    /// A probe is due but the window or cwnd has no room for it: send no
    /// new data until ACKs make room (Linux `tcp_mtu_probe` returning 0).
    Wait,
    /// Send this many bytes as one segment, the probe.
    Send(u32),
}

impl Conn {
    /// IP + TCP header bytes of a full segment (timestamps included, as
    /// Linux's `tcp_header_len`), to turn path MTUs into MSSs and back.
    fn probe_hdrs(&self) -> usize {
        let ip = if self.local.is_ipv6() { 40 } else { 20 };
        ip + 20 + if self.opt.ts { 12 } else { 0 }
    }

    /// Linux `tcp_mss_to_mtu`.
    fn mss_to_mtu(&self, mss: usize) -> usize {
        mss + self.probe_hdrs()
    }

    /// Linux `tcp_mtu_to_mss`.
    fn mtu_to_mss(&self, mtu: usize) -> usize {
        mtu.saturating_sub(self.probe_hdrs())
    }

    /// The size the search may reach: what the peer's MSS, ours and the
    /// path MTU known from ICMP allow (Linux `tcp_mtup_init`: the peer's
    /// clamp plus headers, lowered to the PMTU by `tcp_sync_mss`).
    fn probe_ceiling(&self, cfg: &Config) -> usize {
        let ts = if self.opt.ts { 12 } else { 0 };
        let mss = usize::from(self.opt.peer_mss.min(cfg.local_mss(self.local.is_ipv6())));
        (mss.saturating_sub(ts) + self.probe_hdrs()).min(self.icmp.path_mtu())
    }

    /// Turns probing on (Linux `tcp_mtup_init` then `enabled = 1`): the
    /// search runs from `mtu_probe_base_mss` up to the ceiling, and the MSS
    /// falls to the base.
    fn probe_enable(&mut self, cfg: &Config, now: Instant) {
        let p = &mut self.icmp.mtup;
        if p.enabled {
            return;
        }
        let low = self.mss_to_mtu(usize::from(cfg.mtu_probe_base_mss));
        let high = self.probe_ceiling(cfg);
        let p = &mut self.icmp.mtup;
        p.enabled = true;
        p.search_low = low;
        p.search_high = high;
        p.probe = None;
        p.stamp = Some(now);
        self.update_mss(cfg);
    }

    /// Called at the top of every synchronized dispatch: with
    /// [`MtuProbing::Always`] probing starts with the first segment.
    pub(super) fn mtu_probe_start(&mut self, cx: &Ctx<'_>) {
        if cx.cfg.mtu_probing == MtuProbing::Always && !self.icmp.mtup.enabled {
            self.probe_enable(cx.cfg, cx.now);
        }
    }

    /// The retransmission timer expired on a synchronized connection
    /// (before the backoff). A probe still unacknowledged failed (RFC 4821
    /// §7.6.3: a lost probe is a failure; Linux notices it only by
    /// duplicate ACKs, and would later take the ACK of its resent bytes
    /// for a success). Then black-hole detection, as Linux's
    /// `tcp_write_timeout` → `tcp_mtu_probing`: once the RTOs have gone on
    /// for [`BLACKHOLE_AFTER`] since the head was sent, the first time
    /// probing turns on (the MSS falls to `mtu_probe_base_mss`), each time
    /// after that the floor of the search halves (down to
    /// `mtu_probe_floor`).
    pub(crate) fn mtu_probe_on_rto(&mut self, cx: &mut Ctx<'_>) {
        if self.icmp.mtup.probe.is_some() {
            self.probe_failed(cx);
        }
        if cx.cfg.mtu_probing == MtuProbing::Off {
            return;
        }
        if self.rto_backoffs() == 0 {
            // The first RTO of a run: the timer was armed one RTO ago, when
            // the head was sent (or last acknowledged).
            let armed = cx
                .now
                .as_micros()
                .saturating_sub(self.rtt.rto(0).as_micros());
            self.icmp.mtup.rto_since = Some(Instant::from_micros(armed));
            return;
        }
        let since = self.icmp.mtup.rto_since.unwrap_or(cx.now);
        if cx.now.saturating_since(since) < BLACKHOLE_AFTER {
            return;
        }
        cx.stats.mtup.blackholes += 1;
        if !self.icmp.mtup.enabled {
            self.probe_enable(cx.cfg, cx.now);
            return;
        }
        let cur = self.mtu_to_mss(self.icmp.mtup.search_low) >> 1;
        let mss = cur
            .min(usize::from(cx.cfg.mtu_probe_base_mss))
            .max(usize::from(cx.cfg.mtu_probe_floor));
        self.icmp.mtup.search_low = self.mss_to_mtu(mss);
        self.update_mss(cx.cfg);
    }

    /// RFC 4821 §7.6.3 / Linux `tcp_mtup_probe_failed`: the probe was lost;
    /// its size is too big.
    fn probe_failed(&mut self, cx: &mut Ctx<'_>) {
        if let Some((_, _, size)) = self.icmp.mtup.probe.take() {
            let p = &mut self.icmp.mtup;
            p.search_high = size.saturating_sub(1).max(p.search_low);
            cx.stats.mtup.fail += 1;
        }
    }

    /// Before entering fast recovery: when the segment lost is the probe,
    /// it failed, and what was lost is resent at the MSS without counting
    /// as congestion, as Linux's `tcp_fastretrans_alert` (probe at SND.UNA:
    /// `tcp_mtup_probe_failed`, then `tcp_simple_retransmit`, cwnd kept).
    /// Our simple retransmission goes back to SND.UNA (dispatch skips what
    /// the peer SACKed), as after a path MTU decrease. Returns whether the
    /// loss was the probe's, so recovery is not entered.
    pub(crate) fn mtu_probe_lost(&mut self, cx: &mut Ctx<'_>) -> bool {
        match self.icmp.mtup.probe {
            Some((start, _, _)) if start == self.snd_una => {
                self.probe_failed(cx);
                self.snd_nxt = self.snd_una;
                self.high_rxt = self.snd_una;
                self.rtt_probe = None;
                // As Linux enters TCP_CA_Loss with high_seq = snd_nxt: no
                // fast recovery for this flight.
                self.recover = self.snd_max;
                true
            }
            _ => false,
        }
    }

    /// SND.UNA advanced: a probe acknowledged whole succeeded (RFC 4821
    /// §7.6.2; Linux `tcp_mtup_probe_success`): its size is the new floor of
    /// the search and the MSS rises to it. Linux rescales cwnd (counted in
    /// segments) to keep its bytes; ours counts bytes already.
    pub(crate) fn mtu_probe_on_ack(&mut self, cx: &mut Ctx<'_>) {
        if let Some((_, end, size)) = self.icmp.mtup.probe {
            if self.snd_una >= end {
                self.icmp.mtup.probe = None;
                self.icmp.mtup.search_low = size;
                cx.stats.mtup.success += 1;
                self.update_mss(cx.cfg);
            }
        }
    }

    /// The path MTU from ICMP fell below the search's top (Linux
    /// `tcp_sync_mss`: `search_high` follows the PMTU); a probe in flight
    /// is void (its bytes are resent anyway).
    pub(super) fn mtu_probe_pmtu_lowered(&mut self, mtu: usize) {
        let p = &mut self.icmp.mtup;
        p.probe = None;
        if p.enabled {
            p.search_high = p.search_high.min(mtu);
            p.search_low = p.search_low.min(mtu);
        }
    }

    /// Whether dispatch sends the next new data as a probe, as Linux's
    /// `tcp_mtu_probe`: probing is on, no probe is in flight, no recovery
    /// or RTO run is going on, no SACK blocks ride on our segments (they
    /// would change the size), cwnd holds at least 11 segments, and the
    /// search range is at least `mtu_probe_threshold` wide (else, after
    /// `mtu_probe_interval`, the search starts again from the current size:
    /// Linux `tcp_mtu_check_reprobe`). The probe is the midpoint of the
    /// range, and it needs `REORDERING + 1` full segments queued behind it
    /// so that its loss draws duplicate ACKs.
    pub(crate) fn mtu_probe_now(
        &mut self,
        cx: &Ctx<'_>,
        seq: SeqNum,
        avail: u32,
        room: u32,
    ) -> ProbeNow {
        let cwnd = self.cwnd();
        let p = self.icmp.mtup;
        if !p.enabled
            || p.probe.is_some()
            || seq != self.snd_max
            || self.in_recovery
            || self.rto_backoffs() > 0
            || self.dup_acks > 0
            || self.sack_option_len() > 0
            || self.state != State::Established && self.state != State::CloseWait
        {
            return ProbeNow::No;
        }
        let mss = u32::from(self.mss);
        if cwnd < MIN_CWND_SEGMENTS * mss {
            return ProbeNow::No;
        }
        let size = self.mtu_to_mss((p.search_high + p.search_low) / 2);
        let width = p.search_high.saturating_sub(p.search_low);
        if size > self.mtu_to_mss(p.search_high)
            || width < usize::from(cx.cfg.mtu_probe_threshold)
            || size <= usize::from(self.mss)
        {
            self.probe_check_reprobe(cx);
            return ProbeNow::No;
        }
        let size = size as u32;
        let needed = size + (REORDERING + 1) * mss;
        if avail < needed || self.snd_wnd < needed || room < size {
            return ProbeNow::No;
        }
        let in_flight = self.snd_nxt.since(self.snd_una);
        if in_flight + needed > self.snd_wnd || in_flight + size + mss > cwnd {
            // With nothing in flight no ACK comes to make room: send as
            // usual rather than stall.
            return if in_flight == 0 {
                ProbeNow::No
            } else {
                ProbeNow::Wait
            };
        }
        ProbeNow::Send(size)
    }

    /// Linux `tcp_mtu_check_reprobe`: a search that ended long enough ago
    /// starts again from the current size up to the ceiling.
    fn probe_check_reprobe(&mut self, cx: &Ctx<'_>) {
        let due = self
            .icmp
            .mtup
            .stamp
            .is_none_or(|t| cx.now.saturating_since(t) >= cx.cfg.mtu_probe_interval);
        if due {
            let low = self.mss_to_mtu(usize::from(self.mss));
            let high = self.probe_ceiling(cx.cfg);
            let p = &mut self.icmp.mtup;
            p.search_low = low;
            p.search_high = high.max(low);
            p.stamp = Some(cx.now);
        }
    }

    /// Dispatch sent the probe, `len` bytes from `seq`: one packet, not for
    /// the device to cut.
    pub(crate) fn mtu_probe_sent(&mut self, cx: &mut Ctx<'_>, seq: SeqNum, len: u32) {
        let size = self.mss_to_mtu(len as usize);
        self.icmp.mtup.probe = Some((seq, seq + len, size));
        self.last_tx_segment = 0;
        cx.stats.mtup.probes += 1;
    }
}
