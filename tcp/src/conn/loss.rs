//! The connection's side of RACK-TLP (RFC 8985, `rack.rs`) and F-RTO (RFC
//! 5682, `frto.rs`): what `conn.rs` calls on each ACK, each sent segment,
//! each timer and each RTO.

use super::{Conn, Ctx, Timer};
use crate::congestion::CongestionControl;
use crate::frto::{FrtoAck, Phase, Verdict};
use crate::rack::TLP_MAX_ACK_DELAY;
use crate::seq::SeqNum;
use crate::time::{Duration, Instant};
use crate::wire::TcpSegment;

/// Which loss detection a connection runs, fixed when options are
/// negotiated.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct LossModes {
    /// RACK (RFC 8985 §6) decides loss: `Config::rack` and SACK.
    pub(crate) rack: bool,
    /// Tail loss probes (§7): `Config::tlp` with RACK.
    pub(crate) tlp: bool,
    /// F-RTO after RTOs: `Config::frto`.
    pub(crate) frto: bool,
    /// Limited Transmit (RFC 3042): `Config::limited_transmit`, no SACK.
    pub(crate) limited_transmit: bool,
    /// The log of sent segments is kept (any of RACK, TLP, F-RTO).
    pub(crate) log: bool,
}

/// What the ACK hook needs from `process_ack`.
pub(crate) struct AckFacts {
    /// SND.UNA before the ACK.
    pub(crate) una_before: SeqNum,
    /// The ACK carried a D-SACK block (the first block).
    pub(crate) dsack: bool,
    /// Fast recovery was on before the ACK.
    pub(crate) was_in_recovery: bool,
    /// The RTT sample the ACK gave, if any.
    pub(crate) rtt: Option<Duration>,
}

impl Conn {
    /// Sets the loss-detection modes from the configuration and the
    /// negotiated options.
    pub(super) fn set_loss_modes(&mut self, cfg: &crate::Config) {
        let rack = cfg.rack && self.opt.sack;
        self.loss = LossModes {
            rack,
            tlp: rack && cfg.tlp,
            frto: cfg.frto,
            limited_transmit: cfg.limited_transmit && !self.opt.sack,
            log: rack || cfg.frto,
        };
    }

    /// A data segment `[seq, end)` went out (from `emit`).
    pub(super) fn loss_on_send(&mut self, cx: &Ctx<'_>, seq: SeqNum, end: SeqNum) {
        if self.loss.log {
            self.rack
                .on_send(seq, end, cx.now, cx.cfg.rack_max_segments);
        }
    }

    /// RFC 6675 pipe with RACK's loss marks (see [`crate::rack::Rack::pipe`]).
    pub(super) fn rack_pipe(&self) -> u32 {
        self.rack.pipe(self.snd_max.since(self.snd_una))
    }

    /// The ACK hook: updates the log and RACK (RFC 8985 §6.2), marks losses
    /// and enters fast recovery on them, arms the reordering timer, handles
    /// the TLP's ACK (§7.4), runs F-RTO (RFC 5682 §3.1) and re-arms the
    /// probe timeout (§7.2).
    pub(super) fn loss_on_ack(&mut self, cx: &mut Ctx<'_>, seg: &TcpSegment<'_>, f: &AckFacts) {
        if !self.loss.log {
            return;
        }
        let mss = u32::from(self.mss);
        let blocks = seg.options.sack.as_slice();
        let sack = if f.dsack && !blocks.is_empty() {
            &blocks[1..]
        } else {
            blocks
        };
        let sack: &[(SeqNum, SeqNum)] = if self.opt.sack { sack } else { &[] };
        // RFC 8985 §6.2 step 2: a timestamp echo older than a
        // retransmission says the ACK was for the original.
        let off = self.ts_offset;
        let ecr = seg
            .options
            .timestamps
            .map(|(_, e)| e)
            .filter(|_| self.opt.ts);
        let before = move |t: Instant| {
            ecr.is_some_and(|e| {
                ((t.as_millis() as u32).wrapping_add(off)).wrapping_sub(e) as i32 > 0
            })
        };
        if let Some(r) = f.rtt {
            self.rack.rtt_sample(r, cx.now);
        }
        let out = self.rack.on_ack(
            self.snd_una,
            sack,
            cx.now,
            &before,
            cx.cfg.rack_max_segments,
        );
        if self.snd_una == self.snd_max {
            self.rack.shrink_if_idle();
        }

        if self.loss.rack {
            let recovery_ended = f.was_in_recovery && !self.in_recovery;
            self.rack
                .update_reo_wnd(f.dsack, self.snd_una, self.snd_max, recovery_ended);
            self.rack_detect(cx);
        }
        if self.loss.tlp {
            self.tlp_on_ack(cx, seg, f);
        }
        if self.frto.active() {
            self.frto_on_ack(cx, seg, f, out.orig_end, mss);
        }
        if self.loss.tlp && self.snd_una > f.una_before {
            self.schedule_tlp(cx);
        }
    }

    /// RFC 8985 §6.2 step 5 and what follows it: marks losses, enters fast
    /// recovery when one is found outside recovery (Linux
    /// tcp_time_to_recover: `lost_out`), and arms the reordering timer for
    /// the segments not yet past their window.
    fn rack_detect(&mut self, cx: &mut Ctx<'_>) {
        let mss = u32::from(self.mss);
        let reo = self.rack.reo_wnd(self.in_recovery, mss, self.rtt.srtt());
        let (marked, relost, timeout) = self.rack.detect_loss(cx.now, reo);
        cx.stats.rack_marked_lost += u64::from(marked);
        cx.stats.rack_lost_retransmits += u64::from(relost);
        match timeout {
            Some(t) => self.set_timer(Timer::Reo, cx.now + t.max(Duration::from_micros(1))),
            None => self.clear_timer(Timer::Reo),
        }
        // A new loss outside any recovery (an RTO's go-back-N runs until
        // SND.UNA passes `recover`): fast recovery, RFC 6675 §5 with
        // RACK's IsLost.
        if self.rack.has_lost() && !self.in_recovery && self.snd_una >= self.recover {
            self.enter_recovery(cx);
        }
    }

    /// The RACK reordering timer expired (RFC 8985 §6.2 step 5's timer,
    /// Linux tcp_rack_reo_timeout): detect again, now that time has passed.
    pub(super) fn on_reo_timeout(&mut self, cx: &mut Ctx<'_>) {
        cx.stats.rack_reo_timeouts += 1;
        if self.snd_max > self.snd_una {
            self.rack_detect(cx);
            // No ACK clocks this one: let PRR's window (RFC 6937 §3, with
            // no data delivered) send the first of what was just marked,
            // as Linux's tcp_rack_reo_timeout sends at once.
            if self.in_recovery && cx.cfg.prr {
                let sacked = self.sacked.bytes_within(self.snd_una, self.snd_max);
                self.prr_on_ack(self.snd_una, sacked, false, false);
            }
        }
    }

    /// RFC 8985 §7.2 (Linux tcp_schedule_loss_probe): after new data went
    /// out or an ACK advanced SND.UNA, outside recovery and with no probe
    /// outstanding, arm the probe timeout: PTO = 2·SRTT, plus the
    /// worst-case delayed ACK when one segment is in flight, 1 s without
    /// an RTT sample; never later than the RTO.
    pub(super) fn schedule_tlp(&mut self, cx: &Ctx<'_>) {
        let mss = u32::from(self.mss);
        let flight = self.snd_max.since(self.snd_una);
        if !self.loss.tlp
            || flight == 0
            || self.in_recovery
            || self.frto.active()
            || self.backoffs > 0
            || self.snd_una < self.recover
            || self.rack.tlp_end.is_some()
        {
            self.clear_timer(Timer::Tlp);
            return;
        }
        let pto = match self.rtt.srtt() {
            Some(s) if flight <= mss => s.doubled() + TLP_MAX_ACK_DELAY,
            Some(s) => s.doubled(),
            None => Duration::from_secs(1),
        };
        let mut at = cx.now + pto;
        if let Some(rto_at) = self.timer(Timer::Rexmit) {
            at = at.min(rto_at);
        }
        self.set_timer(Timer::Tlp, at);
    }

    /// The probe timeout expired: send a probe at the next dispatch (RFC
    /// 8985 §7.3), unless the conditions of §7.2 no longer hold.
    pub(super) fn on_tlp_timeout(&mut self, cx: &Ctx<'_>) {
        if self.loss.tlp
            && self.snd_max > self.snd_una
            && !self.in_recovery
            && !self.frto.active()
            && self.rack.tlp_end.is_none()
        {
            self.tlp_now = true;
            let _ = cx;
        }
    }

    /// What the probe sends (RFC 8985 §7.3, Linux tcp_send_loss_probe): a
    /// new segment if data waits and the peer's window allows, whatever
    /// cwnd; else the last segment sent again. `(seq, len, retransmission)`.
    pub(super) fn tlp_segment(&self, mss: u32, queued: u32) -> Option<(SeqNum, u32, bool)> {
        let data_start = self.data_start();
        let sent = self.snd_max.since(data_start).min(queued);
        let in_flight = self.snd_max.since(self.snd_una);
        if self.snd_nxt == self.snd_max && queued > sent && self.snd_wnd > in_flight {
            let len = (queued - sent).min(mss).min(self.snd_wnd - in_flight);
            return Some((self.snd_max, len, false));
        }
        let (s, e) = self.rack.last_segment(mss)?;
        let s = s.max(self.snd_una);
        // Data only: a FIN at the end rides along in dispatch.
        let data_end = data_start + queued;
        let e = e.min(data_end);
        if s >= e {
            return None;
        }
        Some((s, e.since(s), true))
    }

    /// A probe `[seq, seq + len)` went out: one per tail (TLP.end_seq), and
    /// the RTO re-armed from now (RFC 8985 §7.3).
    pub(super) fn tlp_sent(&mut self, cx: &mut Ctx<'_>, retrans: bool) {
        self.tlp_now = false;
        self.rack.tlp_end = Some(self.snd_max);
        self.rack.tlp_retrans = retrans;
        self.rack.tlp_tsval = self.ts_now(cx.now);
        cx.stats.tlp_probes += 1;
        self.clear_timer(Timer::Tlp);
        self.arm_rexmit(cx, self.rtt.rto(self.backoffs));
    }

    /// RFC 8985 §7.4 (Linux tcp_process_tlp_ack): the ACK of a probe. A
    /// probe of new data acknowledged, or a D-SACK for the retransmitted
    /// one, or a pure duplicate ACK at TLP.end_seq: no loss. An ACK beyond
    /// TLP.end_seq after a retransmitted probe: the probe repaired a loss,
    /// so the window is reduced once, as a recovery would have.
    ///
    /// RFC 8985 §7.4 learns that only from an ACK beyond TLP.end_seq, which
    /// needs new data sent after the probe: a probe that repaired the very
    /// end of a transfer (the common tail) was never counted, and its loss
    /// never answered. With timestamps the ACK that first covers TLP.end_seq
    /// says it at once: it echoes the TSval of the segment that completed
    /// the sequence (RFC 7323 §4.3), so an echo not older than the probe's
    /// TSval says the probe filled the hole alone, the original being lost
    /// (the reverse of RFC 3522's test). A reordered original arriving late
    /// after all brings a D-SACK, which then changes nothing: one reduction.
    fn tlp_on_ack(&mut self, cx: &mut Ctx<'_>, seg: &TcpSegment<'_>, f: &AckFacts) {
        let Some(end) = self.rack.tlp_end else {
            return;
        };
        if seg.ack < end {
            return;
        }
        let mss = u32::from(self.mss);
        let tlp_tsval = self.rack.tlp_tsval;
        let probe_filled = self.opt.ts
            && f.una_before < end
            && seg
                .options
                .timestamps
                .is_some_and(|(_, ecr)| ecr != 0 && (ecr.wrapping_sub(tlp_tsval) as i32) >= 0);
        if !self.rack.tlp_retrans || f.dsack {
            self.rack.tlp_end = None;
        } else if seg.ack > end || probe_filled {
            self.rack.tlp_end = None;
            if !self.in_recovery {
                self.cc.on_fast_retransmit(self.in_flight(), mss);
                self.cc.on_recovery_end(self.in_flight(), mss);
                cx.stats.tlp_repaired += 1;
            }
        } else if self.snd_una == f.una_before
            && seg.options.sack.is_empty()
            && seg.payload.is_empty()
        {
            self.rack.tlp_end = None;
        }
    }

    /// F-RTO's ACK processing (RFC 5682 §3.1, Linux tcp_process_loss).
    fn frto_on_ack(
        &mut self,
        cx: &mut Ctx<'_>,
        seg: &TcpSegment<'_>,
        f: &AckFacts,
        orig_end: Option<SeqNum>,
        mss: u32,
    ) {
        let queued = self.send_buf.len() as u32;
        let sent = self.snd_max.since(self.data_start()).min(queued);
        let in_flight = self.snd_max.since(self.snd_una);
        let phase = self.frto.phase;
        let a = FrtoAck {
            ack: seg.ack,
            advanced: self.snd_una > f.una_before,
            orig_end,
            can_send_new: queued > sent && self.snd_wnd > in_flight,
        };
        match self.frto.on_ack(&a, mss) {
            Verdict::Continue => {}
            Verdict::SendNew => {
                // Step 2 b: new data instead of the rest of the window.
                self.snd_nxt = self.snd_max;
            }
            Verdict::Spurious => {
                // RFC 4015 §3.2-style response (Linux tcp_try_undo_loss with
                // frto_undo): restore the window from before the RTO, keep
                // sending new data, forget the RTO's loss marks.
                cx.stats.frto_spurious_rtos += 1;
                if self.undo.active {
                    let (c, s) = (self.undo.prior_cwnd, self.undo.prior_ssthresh);
                    self.undo.active = false;
                    self.cc.on_undo(c, s);
                }
                self.snd_nxt = self.snd_max;
                self.recover = self.snd_una;
                self.rack.undo_retrans_sample();
                self.rack.unmark_lost();
            }
            Verdict::Conventional => {
                // Step 2 a / 3 a: go back to SND.UNA as after any RTO.
                if phase == Phase::SentNew {
                    self.snd_nxt = self.snd_una;
                }
            }
        }
    }

    /// The RTO hook (RFC 6298 §5.4 has already rewound SND.NXT): start
    /// F-RTO on a first timeout outside fast recovery, mark losses (RFC
    /// 8985 §6.3), and end any probe.
    pub(super) fn loss_on_rto(&mut self, cx: &Ctx<'_>, first: bool, was_in_recovery: bool) {
        self.rack.tlp_end = None;
        self.tlp_now = false;
        self.clear_timer(Timer::Tlp);
        self.clear_timer(Timer::Reo);
        if self.loss.frto {
            self.frto.on_rto(self.snd_max, first && !was_in_recovery);
        }
        if self.loss.rack {
            let mss = u32::from(self.mss);
            let reo = self.rack.reo_wnd(true, mss, self.rtt.srtt());
            self.rack.mark_lost_on_rto(cx.now, reo);
        }
    }

    /// Bytes of new data that may go out past cwnd now (F-RTO step 2 b).
    pub(super) fn frto_quota(&self) -> u32 {
        self.frto.quota
    }

    /// New data went out under F-RTO's quota.
    pub(super) fn frto_used(&mut self, len: u32) {
        self.frto.quota = self.frto.quota.saturating_sub(len);
    }
}
