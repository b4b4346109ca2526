//! RACK-TLP loss detection (RFC 8985): a log of what was sent when, the
//! RACK state that marks segments lost by time, and the Tail Loss Probe.
//!
//! The connection (`conn.rs`) calls in at three places: each data segment
//! it emits ([`Rack::on_send`]), each ACK ([`Rack::on_ack`], then
//! [`Rack::detect_loss`]) and the retransmission timeout
//! ([`Rack::mark_lost_on_rto`]). It asks back which segment to retransmit
//! ([`Rack::next_lost`]) and what is in flight ([`Rack::pipe`]).
//!
//! The log holds one record per emitted segment (a TSO super-segment is one
//! record until a SACK block or a retransmission cuts it), in sequence
//! order, at most [`crate::Config::rack_max_segments`] of them. When full, a
//! new transmission is merged into the newest record (taking the later
//! time), and a record a SACK block only partly covers is left unmarked:
//! both only make the detection more conservative (later), never wrong.

use crate::seq::SeqNum;
use crate::time::{Duration, Instant};
use std::collections::VecDeque;

/// Delivered: the peer SACKed the whole record.
const SACKED: u8 = 1;
/// Marked lost (RFC 8985 §6.2 step 5, §6.3), until acknowledged.
const LOST: u8 = 2;
/// A retransmitted copy is in flight (Linux's TCPCB_SACKED_RETRANS).
const RETRANS: u8 = 4;
/// Retransmitted at least once (RFC 8985's Segment.retransmitted).
const EVER_RETRANS: u8 = 8;

/// One emitted segment.
#[derive(Clone, Copy, Debug)]
struct Seg {
    start: SeqNum,
    end: SeqNum,
    /// Its last transmission (RFC 8985 §6.1 Segment.xmit_ts).
    xmit: Instant,
    flags: u8,
}

impl Seg {
    fn len(&self) -> u32 {
        self.end.since(self.start)
    }
}

/// Linux keeps min_RTT over a 5-minute window (`tcp_min_rtt_wlen` = 300 s).
const MIN_RTT_WINDOW: Duration = Duration::from_secs(300);

/// RFC 8985 §6.2 step 4: a reordering window raised by D-SACKs stays for
/// this many recoveries without one.
const REO_WND_PERSIST: u32 = 16;

/// RFC 8985 §7.2 WCDelAckT: the worst-case delayed-ACK time allowed for when
/// only one segment is in flight (Linux adds TCP_RTO_MIN, 200 ms).
pub(crate) const TLP_MAX_ACK_DELAY: Duration = Duration::from_millis(200);

/// What one ACK did to the log.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct AckOutcome {
    /// A segment was newly delivered (acknowledged or SACKed) by this ACK.
    pub(crate) delivered: bool,
    /// The lowest end of the never-retransmitted segments newly delivered
    /// (F-RTO's test, RFC 5682 §3.1 step 3, wants one below its "recover":
    /// Linux's FLAG_ORIG_SACK_ACKED).
    pub(crate) orig_end: Option<SeqNum>,
}

/// The RACK-TLP state of one connection (RFC 8985 §6.1, §7.1).
#[derive(Debug)]
pub(crate) struct Rack {
    segs: VecDeque<Seg>,
    /// Bytes of records marked SACKED.
    sacked_bytes: u32,
    /// Bytes of records marked LOST and not SACKED.
    lost_bytes: u32,
    /// Bytes of records with a retransmission in flight, not SACKED.
    retrans_bytes: u32,
    /// RACK.xmit_ts and RACK.end_seq: the most recently sent segment among
    /// the delivered ones; `None` before the first delivery.
    xmit_ts: Option<Instant>,
    end_seq: SeqNum,
    /// RACK.rtt: the RTT of that segment.
    rtt: Duration,
    /// RACK.fack: the highest sequence number delivered.
    fack: Option<SeqNum>,
    /// RACK.min_RTT and when it was taken.
    min_rtt: Option<(Duration, Instant)>,
    /// RACK.reordering_seen.
    pub(crate) reordering_seen: bool,
    /// RACK.reo_wnd_mult (starts at 1).
    reo_wnd_mult: u32,
    /// RACK.reo_wnd_persist.
    reo_wnd_persist: u32,
    /// RACK.dsack_round: SND.NXT when the last D-SACK widened the window.
    dsack_round: Option<SeqNum>,
    /// RACK.xmit_ts, end_seq and rtt before the last update taken from a
    /// retransmitted segment, for [`Rack::undo_retrans_sample`].
    before_retrans: Option<(Option<Instant>, SeqNum, Duration)>,
    /// TLP.end_seq: SND.NXT after the outstanding probe (RFC 8985 §7.1).
    pub(crate) tlp_end: Option<SeqNum>,
    /// TLP.is_retrans: the probe was a retransmission.
    pub(crate) tlp_retrans: bool,
    /// Our TSval on the probe (RFC 7323), for the repair test of §7.4.
    pub(crate) tlp_tsval: u32,
}

impl Default for Rack {
    fn default() -> Self {
        Rack {
            segs: VecDeque::new(),
            sacked_bytes: 0,
            lost_bytes: 0,
            retrans_bytes: 0,
            xmit_ts: None,
            end_seq: SeqNum(0),
            rtt: Duration::ZERO,
            fack: None,
            min_rtt: None,
            reordering_seen: false,
            reo_wnd_mult: 1,
            reo_wnd_persist: 0,
            dsack_round: None,
            before_retrans: None,
            tlp_end: None,
            tlp_retrans: false,
            tlp_tsval: 0,
        }
    }
}

/// RFC 8985 §6.2 RACK_sent_after(t1, seq1, t2, seq2): whether (t1, seq1)
/// was sent after (t2, seq2), the sequence number breaking a tie of times.
fn sent_after(t1: Instant, seq1: SeqNum, t2: Instant, seq2: SeqNum) -> bool {
    t1 > t2 || (t1 == t2 && seq1 > seq2)
}

impl Rack {
    /// The segments' end: SND.MAX as far as the log knows.
    fn log_end(&self) -> Option<SeqNum> {
        self.segs.back().map(|s| s.end)
    }

    fn uncount(&mut self, i: usize) {
        let s = self.segs[i];
        if s.flags & SACKED != 0 {
            self.sacked_bytes -= s.len();
            return;
        }
        if s.flags & LOST != 0 {
            self.lost_bytes -= s.len();
        }
        if s.flags & RETRANS != 0 {
            self.retrans_bytes -= s.len();
        }
    }

    fn count(&mut self, i: usize) {
        let s = self.segs[i];
        if s.flags & SACKED != 0 {
            self.sacked_bytes += s.len();
            return;
        }
        if s.flags & LOST != 0 {
            self.lost_bytes += s.len();
        }
        if s.flags & RETRANS != 0 {
            self.retrans_bytes += s.len();
        }
    }

    /// Index of the record holding `seq`.
    fn find(&self, seq: SeqNum) -> Option<usize> {
        // Records are contiguous and sorted: binary search on the start.
        let n = self.segs.len();
        if n == 0 || seq < self.segs[0].start || seq >= self.segs[n - 1].end {
            return None;
        }
        let (mut lo, mut hi) = (0, n);
        while hi - lo > 1 {
            let mid = (lo + hi) / 2;
            if self.segs[mid].start <= seq {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        Some(lo)
    }

    /// Cuts the record holding `seq` so that a record starts at `seq`.
    /// Returns false (changing nothing) when the log is full.
    fn split_at(&mut self, seq: SeqNum, cap: usize) -> bool {
        let Some(i) = self.find(seq) else {
            return true;
        };
        if self.segs[i].start == seq {
            return true;
        }
        if self.segs.len() >= cap {
            return false;
        }
        let mut right = self.segs[i];
        right.start = seq;
        self.segs[i].end = seq;
        self.segs.insert(i + 1, right);
        true
    }

    /// A data segment `[start, end)` went out at `now` (a retransmission
    /// when `start` is below what was sent before).
    pub(crate) fn on_send(&mut self, start: SeqNum, end: SeqNum, now: Instant, cap: usize) {
        if start >= end {
            return;
        }
        let log_end = self.log_end().unwrap_or(start);
        // The part below the log's end was sent before: retransmitted.
        if start < log_end {
            let re_end = end.min(log_end);
            let whole = self.split_at(start, cap) && self.split_at(re_end, cap);
            let mut i = self.find(start).unwrap_or(self.segs.len());
            while i < self.segs.len() && self.segs[i].start < re_end {
                // A record the full log could not cut at the range's edges
                // is only partly resent: its time stays.
                let inside = self.segs[i].start >= start && self.segs[i].end <= re_end;
                if (whole || inside) && self.segs[i].flags & SACKED == 0 {
                    self.uncount(i);
                    self.segs[i].xmit = now;
                    self.segs[i].flags |= RETRANS | EVER_RETRANS;
                    self.count(i);
                }
                i += 1;
            }
        }
        // The part beyond it is new data.
        let new_start = start.max(log_end);
        if new_start < end {
            let back_mergeable = self.segs.len() >= cap.max(1)
                && self.segs.back().is_some_and(|b| b.end == new_start);
            if back_mergeable {
                let i = self.segs.len() - 1;
                self.uncount(i);
                let b = &mut self.segs[i];
                b.end = end;
                b.xmit = now;
                self.count(i);
            } else {
                self.segs.push_back(Seg {
                    start: new_start,
                    end,
                    xmit: now,
                    flags: 0,
                });
            }
        }
    }

    /// RFC 8985 §6.2 steps 1–3 for one delivered record.
    fn delivered(
        &mut self,
        s: Seg,
        now: Instant,
        tsecr_before_xmit: &dyn Fn(Instant) -> bool,
        out: &mut AckOutcome,
    ) {
        out.delivered = true;
        let retrans = s.flags & EVER_RETRANS != 0;
        if !retrans {
            out.orig_end = Some(out.orig_end.map_or(s.end, |e| e.min(s.end)));
        }
        let rtt = now.saturating_since(s.xmit);
        // Step 2: an ACK of a retransmitted segment may be for the original
        // (ambiguous): taken only if the timestamp echo is not older than
        // the retransmission and the RTT is not below min_RTT.
        let ambiguous =
            retrans && (tsecr_before_xmit(s.xmit) || self.min_rtt.is_some_and(|(m, _)| rtt < m));
        if !ambiguous {
            let newer = match self.xmit_ts {
                None => true,
                Some(t) => sent_after(s.xmit, s.end, t, self.end_seq),
            };
            if newer {
                if retrans {
                    self.before_retrans = Some((self.xmit_ts, self.end_seq, self.rtt));
                }
                self.rtt = rtt;
                self.xmit_ts = Some(s.xmit);
                self.end_seq = s.end;
            }
        }
        // Step 3 (RACK_detect_reordering): a never-retransmitted segment
        // delivered below the highest delivered sequence was reordered.
        match self.fack {
            Some(f) if s.end <= f => {
                if s.end < f && !retrans {
                    self.reordering_seen = true;
                }
            }
            _ => self.fack = Some(s.end),
        }
    }

    /// Step 1: RACK.min_RTT from an RTT sample (windowed minimum). The
    /// connection feeds it the RFC 6298 samples (timestamp echo or Karn's
    /// timed segment, both taken on cumulative ACKs), not each SACKed
    /// segment's own RTT: on a path where some packets overtake others
    /// (tcpd-netem's reordering skips the delay) those are far below the
    /// path's RTT, and a min_RTT from them leaves the reordering window
    /// (min_RTT/4) too small for any D-SACK growth to catch up; in virtual
    /// time that doubled the transfer time (tests/sim.rs, early reordering).
    pub(crate) fn rtt_sample(&mut self, rtt: Duration, now: Instant) {
        let take = match self.min_rtt {
            None => true,
            Some((m, at)) => rtt <= m || now.saturating_since(at) > MIN_RTT_WINDOW,
        };
        if take {
            self.min_rtt = Some((rtt, now));
        }
    }

    /// An ACK arrived: SND.UNA is now `una`, `sack` its SACK blocks (the
    /// D-SACK block excluded). Marks what it delivers and updates RACK
    /// (RFC 8985 §6.2 steps 1–3). `tsecr_before_xmit(t)` says whether the
    /// ACK's timestamp echo predates a transmission at `t`.
    pub(crate) fn on_ack(
        &mut self,
        una: SeqNum,
        sack: &[(SeqNum, SeqNum)],
        now: Instant,
        tsecr_before_xmit: &dyn Fn(Instant) -> bool,
        cap: usize,
    ) -> AckOutcome {
        let mut out = AckOutcome::default();
        // Cumulatively acknowledged records leave the log.
        while let Some(&front) = self.segs.front() {
            if front.start >= una {
                break;
            }
            if front.end <= una {
                self.uncount(0);
                self.segs.pop_front();
                if front.flags & SACKED == 0 {
                    self.delivered(front, now, tsecr_before_xmit, &mut out);
                }
            } else {
                // Partly acknowledged: the delivered part counts as a delivery.
                self.uncount(0);
                self.segs[0].start = una;
                self.count(0);
                if front.flags & SACKED == 0 {
                    self.delivered(front, now, tsecr_before_xmit, &mut out);
                }
                break;
            }
        }
        for &(l, r) in sack {
            let l = l.max(una);
            if l >= r {
                continue;
            }
            // Cut at the block's edges where the log has room.
            self.split_at(l, cap);
            self.split_at(r, cap);
            let mut i = match self.find(l) {
                Some(i) => i,
                None => continue,
            };
            while i < self.segs.len() && self.segs[i].start < r {
                let s = self.segs[i];
                if s.flags & SACKED == 0 && s.start >= l && s.end <= r {
                    self.uncount(i);
                    self.segs[i].flags |= SACKED;
                    self.segs[i].flags &= !(LOST | RETRANS);
                    self.count(i);
                    self.delivered(s, now, tsecr_before_xmit, &mut out);
                }
                i += 1;
            }
        }
        out
    }

    /// RFC 8985 §6.2 step 4 (RACK_update_reo_wnd): a D-SACK widens the
    /// reordering window by min_RTT/4, once per round trip, up to 255 steps
    /// as Linux (`reo_wnd_steps`); after
    /// [`REO_WND_PERSIST`] recoveries without one it falls back (Linux:
    /// tcp_rack_update_reo_wnd). `recovery_ended`: this ACK ended a fast
    /// or RTO recovery.
    pub(crate) fn update_reo_wnd(
        &mut self,
        dsack: bool,
        una: SeqNum,
        snd_nxt: SeqNum,
        recovery_ended: bool,
    ) {
        if self.dsack_round.is_some_and(|r| una >= r) {
            self.dsack_round = None;
        }
        // A D-SACK says an original arrived after all: the path reorders.
        // (RFC 8985 sets RACK.reordering_seen only in step 3; without this
        // the window D-SACKs widen would stay 0 on a path whose first
        // reordering was taken for loss.)
        if dsack {
            self.reordering_seen = true;
        }
        if self.dsack_round.is_none() && dsack {
            self.dsack_round = Some(snd_nxt);
            self.reo_wnd_mult = (self.reo_wnd_mult + 1).min(255);
            self.reo_wnd_persist = REO_WND_PERSIST;
        } else if recovery_ended {
            self.reo_wnd_persist = self.reo_wnd_persist.saturating_sub(1);
            if self.reo_wnd_persist == 0 {
                self.reo_wnd_mult = 1;
            }
        }
    }

    /// The multiplier of min_RTT/4 in the reordering window.
    #[cfg(test)]
    pub(crate) fn reo_wnd_mult(&self) -> u32 {
        self.reo_wnd_mult
    }

    /// RFC 8985 §6.2 step 4 RACK_reo_wnd(): no reordering seen yet, in
    /// recovery or with DupThresh segments SACKed, gives 0 (this is where
    /// RFC 8985 keeps RFC 6675's DupThresh); otherwise
    /// min(reo_wnd_mult · min_RTT / 4, SRTT), where min_RTT is taken as at
    /// least SRTT / 2. The floor departs from RFC 8985 (and Linux
    /// tcp_rack_reo_wnd): on a path where some packets skip the queue
    /// (tcpd-netem's reordering), a data segment and its ACK that both
    /// overtake give an RTT sample near zero, min_RTT keeps it for minutes,
    /// and the steps of min_RTT/4 that D-SACKs add (once per round trip)
    /// never reach the reordering's extent: nearly every flight was taken
    /// for a loss (tests/sim.rs reordering_only_keeps_the_window: up to 362
    /// recoveries and 11x the clean link's time in 10 MB). A min_RTT below
    /// half the smoothed RTT measures overtaking, not the path.
    pub(crate) fn reo_wnd(&self, in_recovery: bool, mss: u32, srtt: Option<Duration>) -> Duration {
        if !self.reordering_seen && (in_recovery || self.sacked_bytes >= 3 * mss.max(1)) {
            return Duration::ZERO;
        }
        let mut base = self.min_rtt.map_or(Duration::ZERO, |(m, _)| m);
        if let Some(s) = srtt {
            base = base.max(Duration::from_micros(s.as_micros() / 2));
        }
        let w = Duration::from_micros(base.as_micros() / 4 * u64::from(self.reo_wnd_mult));
        match srtt {
            Some(s) => w.min(s),
            None => w,
        }
    }

    /// RFC 8985 §6.2 step 5 (RACK_detect_loss, Linux tcp_rack_detect_loss):
    /// every segment sent before the RACK segment and outstanding longer
    /// than RACK.rtt + reo_wnd is lost; a lost retransmission is lost again
    /// (its in-flight copy no longer counts). Returns the segments newly
    /// marked, how many of them were retransmissions, and the time until
    /// the next one would be (the RACK reordering timer, §6.2 step 5's
    /// `timeout`).
    pub(crate) fn detect_loss(
        &mut self,
        now: Instant,
        reo_wnd: Duration,
    ) -> (u32, u32, Option<Duration>) {
        let Some(rack_ts) = self.xmit_ts else {
            return (0, 0, None);
        };
        let mut marked = 0;
        let mut relost = 0;
        let mut timeout: Option<Duration> = None;
        for i in 0..self.segs.len() {
            let s = self.segs[i];
            if s.flags & SACKED != 0 || (s.flags & LOST != 0 && s.flags & RETRANS == 0) {
                continue;
            }
            if !sent_after(rack_ts, self.end_seq, s.xmit, s.end) {
                // Originals go out in sequence order: past the first one
                // sent after the RACK segment, every record was too.
                if s.flags & EVER_RETRANS == 0 {
                    break;
                }
                continue;
            }
            let deadline = s.xmit + self.rtt + reo_wnd;
            if deadline <= now {
                self.uncount(i);
                if s.flags & RETRANS != 0 {
                    relost += 1;
                }
                self.segs[i].flags |= LOST;
                self.segs[i].flags &= !RETRANS;
                self.count(i);
                marked += 1;
            } else {
                let rem = deadline.saturating_since(now);
                timeout = Some(timeout.map_or(rem, |t| t.max(rem)));
            }
        }
        (marked, relost, timeout)
    }

    /// RFC 8985 §6.3 (RACK_mark_losses_on_RTO; Linux tcp_timeout_mark_lost):
    /// on an RTO, SND.UNA's segment and every segment outstanding longer
    /// than RACK.rtt + reo_wnd are lost; retransmitted copies in flight no
    /// longer count.
    pub(crate) fn mark_lost_on_rto(&mut self, now: Instant, reo_wnd: Duration) {
        for i in 0..self.segs.len() {
            let s = self.segs[i];
            if s.flags & SACKED != 0 {
                continue;
            }
            let expired = self.xmit_ts.is_none() || s.xmit + self.rtt + reo_wnd <= now;
            if i == 0 || expired {
                self.uncount(i);
                self.segs[i].flags |= LOST;
                self.segs[i].flags &= !RETRANS;
                self.count(i);
            }
        }
    }

    /// The delivery last taken for a retransmission was the original's
    /// (F-RTO proved the timeout spurious): RACK goes back to what it was
    /// before that sample, which without timestamps step 2 could not tell.
    pub(crate) fn undo_retrans_sample(&mut self) {
        if let Some((t, e, r)) = self.before_retrans.take() {
            self.xmit_ts = t;
            self.end_seq = e;
            self.rtt = r;
        }
    }

    /// Forgets the loss marks (an undone recovery, Linux
    /// tcp_undo_cwnd_reduction with unmark_loss).
    pub(crate) fn unmark_lost(&mut self) {
        for i in 0..self.segs.len() {
            if self.segs[i].flags & LOST != 0 {
                self.uncount(i);
                self.segs[i].flags &= !LOST;
                self.count(i);
            }
        }
    }

    /// The first segment marked lost and not retransmitted since, at or
    /// above `from`: RFC 6675 NextSeg() rule 1 with RACK's IsLost.
    pub(crate) fn next_lost(&self, from: SeqNum) -> Option<(SeqNum, SeqNum)> {
        if self.lost_bytes == 0 {
            return None;
        }
        self.segs
            .iter()
            .find(|s| s.end > from && s.flags & (LOST | RETRANS | SACKED) == LOST)
            .map(|s| (s.start.max(from), s.end))
    }

    /// Bytes of retransmitted copies in flight (Linux `retrans_out`).
    pub(crate) fn retrans_in_flight(&self) -> u32 {
        self.retrans_bytes
    }

    /// Whether any byte is marked lost.
    pub(crate) fn has_lost(&self) -> bool {
        self.lost_bytes > 0
    }

    /// RFC 6675 §4 SetPipe with RACK's loss marks (Linux
    /// tcp_packets_in_flight): outstanding less SACKed less lost plus
    /// retransmitted copies in flight.
    pub(crate) fn pipe(&self, outstanding: u32) -> u32 {
        outstanding
            .saturating_sub(self.sacked_bytes)
            .saturating_sub(self.lost_bytes)
            .saturating_add(self.retrans_bytes)
            .min(outstanding)
    }

    /// The start of the last segment sent (a TLP retransmits it, RFC 8985
    /// §7.3), at most `mss` before its end.
    pub(crate) fn last_segment(&self, mss: u32) -> Option<(SeqNum, SeqNum)> {
        let b = self.segs.back()?;
        let start = if b.len() > mss { b.end - mss } else { b.start };
        Some((start, b.end))
    }

    /// Empties the log (everything acknowledged) and gives the storage back
    /// above a small reserve, so idle connections hold little.
    pub(crate) fn shrink_if_idle(&mut self) {
        if self.segs.is_empty() && self.segs.capacity() > 16 {
            self.segs.shrink_to(16);
        }
    }

    /// Records in the log (tests, reports).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.segs.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(ms: u64) -> Instant {
        Instant::from_millis(ms)
    }
    fn s(n: u32) -> SeqNum {
        SeqNum(n)
    }
    const NO_TS: &dyn Fn(Instant) -> bool = &|_| false;

    #[test]
    fn time_based_marking_after_a_later_segment_is_sacked() {
        let mut r = Rack::default();
        // Ten segments of 100 bytes, 1 ms apart.
        for i in 0..10u32 {
            r.on_send(s(i * 100), s(i * 100 + 100), t(u64::from(i)), 64);
        }
        r.rtt_sample(Duration::from_millis(20), t(20));
        // Segment 0 lost; segment 1 SACKed at 21 ms (RTT 20 ms).
        let o = r.on_ack(s(0), &[(s(100), s(200))], t(21), NO_TS, 64);
        assert!(o.delivered && o.orig_end == Some(s(200)));
        // Reordering window: min_RTT/4 = 5 ms (one SACKed segment, none seen).
        let w = r.reo_wnd(false, 100, Some(Duration::from_millis(20)));
        assert_eq!(w, Duration::from_millis(5));
        // Segment 0 sent at 0: lost at 0 + 20 + 5 = 25 ms.
        let (m, _, to) = r.detect_loss(t(21), w);
        assert_eq!(m, 0);
        assert_eq!(to, Some(Duration::from_millis(4)));
        let (m, _, _) = r.detect_loss(t(25), w);
        assert_eq!(m, 1);
        assert_eq!(r.next_lost(s(0)), Some((s(0), s(100))));
        // Pipe: 1000 outstanding - 100 SACKed - 100 lost.
        assert_eq!(r.pipe(1000), 800);
        r.on_send(s(0), s(100), t(26), 64);
        assert_eq!(r.pipe(1000), 900);
        assert_eq!(r.next_lost(s(0)), None);
    }

    #[test]
    fn lost_retransmission_is_marked_again() {
        let mut r = Rack::default();
        for i in 0..4u32 {
            r.on_send(s(i * 100), s(i * 100 + 100), t(u64::from(i)), 64);
        }
        r.rtt_sample(Duration::from_millis(10), t(10));
        r.on_ack(s(0), &[(s(100), s(200))], t(11), NO_TS, 64);
        let (m, _, _) = r.detect_loss(t(11), Duration::ZERO);
        assert_eq!(m, 1);
        r.on_send(s(0), s(100), t(12), 64); // retransmission, lost again
                                            // Segment 3 (sent at 3 ms), then segment 2 new? Send new data at 13.
        r.on_send(s(400), s(500), t(13), 64);
        r.on_ack(
            s(0),
            &[(s(100), s(200)), (s(400), s(500))],
            t(23),
            NO_TS,
            64,
        );
        // Segments 2 and 3, never SACKed, go with it.
        let (m, relost, _) = r.detect_loss(t(23), Duration::ZERO);
        assert_eq!(
            (m, relost),
            (3, 1),
            "the retransmission sent at 12 ms is lost by 23 ms"
        );
        assert_eq!(r.next_lost(s(0)), Some((s(0), s(100))));
    }

    #[test]
    fn dsack_grows_and_persistence_resets_the_window() {
        let mut r = Rack::default();
        r.rtt_sample(Duration::from_millis(40), t(0));
        r.reordering_seen = true;
        assert_eq!(r.reo_wnd(false, 100, None), Duration::from_millis(10));
        r.update_reo_wnd(true, s(0), s(1000), false);
        assert_eq!(r.reo_wnd(false, 100, None), Duration::from_millis(20));
        // Same round: no second step.
        r.update_reo_wnd(true, s(500), s(2000), false);
        assert_eq!(r.reo_wnd_mult(), 2);
        // Next round.
        r.update_reo_wnd(true, s(1000), s(3000), false);
        assert_eq!(r.reo_wnd_mult(), 3);
        // Capped by SRTT.
        assert_eq!(
            r.reo_wnd(false, 100, Some(Duration::from_millis(25))),
            Duration::from_millis(25)
        );
        for _ in 0..15 {
            r.update_reo_wnd(false, s(5000), s(6000), true);
        }
        assert_eq!(r.reo_wnd_mult(), 3);
        r.update_reo_wnd(false, s(5000), s(6000), true);
        assert_eq!(r.reo_wnd_mult(), 1);
    }

    #[test]
    fn sack_cuts_a_super_segment_and_the_full_log_merges() {
        let mut r = Rack::default();
        r.on_send(s(0), s(1000), t(0), 4);
        r.on_ack(s(0), &[(s(300), s(600))], t(10), NO_TS, 4);
        assert_eq!(r.len(), 3);
        assert_eq!(r.pipe(1000), 700);
        // Full log (cap 4): new data merges into the newest record.
        r.on_send(s(1000), s(1100), t(11), 4);
        r.on_send(s(1100), s(1200), t(12), 4);
        assert_eq!(r.len(), 4);
        r.on_ack(s(1000), &[], t(20), NO_TS, 4);
        assert_eq!(r.len(), 1);
    }
}
