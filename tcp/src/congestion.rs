//! Congestion control (RFC 5681), behind a trait: NewReno (RFC 6582) and
//! CUBIC (RFC 9438, in [`crate::cubic`]), each with HyStart++ (RFC 9406,
//! in `hystart`) in the initial slow start.
//!
//! The connection reports events; the algorithm owns cwnd and ssthresh.
//! RTO, fast retransmit, the end of recovery and an undo are separate
//! events, so algorithms that treat them differently fit the same trait.
//! During fast recovery the connection's PRR (RFC 6937, `prr`) paces the
//! sending, from the ssthresh the algorithm chose.

use crate::hystart::{Growth, HyStart};
use crate::seq::SeqNum;
use crate::time::{Duration, Instant};

pub use crate::cubic::Cubic;

/// What an ACK that advanced SND.UNA outside recovery tells the algorithm.
#[derive(Clone, Copy, Debug)]
pub struct AckInfo {
    /// When it arrived.
    pub now: Instant,
    /// Bytes newly acknowledged.
    pub acked: u32,
    /// The sender MSS (SMSS).
    pub mss: u32,
    /// Its cumulative acknowledgment (SEG.ACK).
    pub ack: SeqNum,
    /// SND.NXT: the next sequence number to send (ends a HyStart++ round).
    pub snd_nxt: SeqNum,
    /// The RTT sample this ACK gave, if any.
    pub rtt: Option<Duration>,
    /// The smoothed RTT (RFC 6298 SRTT), once there is one.
    pub srtt: Option<Duration>,
}

/// A congestion-control algorithm, driven by the connection.
pub trait CongestionControl {
    /// Congestion window in bytes.
    fn cwnd(&self) -> u32;
    /// Slow-start threshold in bytes.
    fn ssthresh(&self) -> u32;
    /// New data was cumulatively acknowledged, outside recovery.
    fn on_ack(&mut self, a: &AckInfo);
    /// A duplicate ACK arrived; `count` is how many in a row since SND.UNA
    /// last advanced, `in_recovery` whether fast recovery is on. Not called
    /// for the duplicate that triggers [`CongestionControl::on_fast_retransmit`],
    /// nor during recovery when PRR paces it.
    fn on_dup_ack(&mut self, count: u32, in_recovery: bool, mss: u32);
    /// Loss detected: fast retransmit and enter fast recovery (RFC 5681
    /// §3.2 steps 2–3). `flight` is the data outstanding.
    fn on_fast_retransmit(&mut self, flight: u32, mss: u32);
    /// A partial ACK during NewReno fast recovery without PRR acknowledged
    /// `acked` bytes (RFC 6582 §3.2 step 5).
    fn on_partial_ack(&mut self, acked: u32, mss: u32);
    /// Fast recovery ended with a full ACK (RFC 6582 §3.2 step 6).
    /// `flight` is the data still outstanding.
    fn on_recovery_end(&mut self, flight: u32, mss: u32);
    /// The retransmission timer expired (RFC 5681 §3.1 eq. 4).
    fn on_rto(&mut self, flight: u32, mss: u32);
    /// The connection was idle for longer than an RTO (RFC 5681 §4.1).
    fn on_idle_restart(&mut self, mss: u32);
    /// A loss episode (fast recovery or RTO) begins and is not nested in
    /// one still open: keep what [`CongestionControl::on_undo`] restores.
    /// Called before the episode's cut.
    fn save_for_undo(&mut self) {}
    /// Every retransmission of a recovery episode proved needless (the peer
    /// reported each as a duplicate, RFC 3708): undo the reduction, back to
    /// the window and threshold from before it (RFC 4015 §3.2's response)
    /// and the algorithm's state saved by [`CongestionControl::save_for_undo`].
    fn on_undo(&mut self, prior_cwnd: u32, prior_ssthresh: u32);
}

/// Which congestion control new connections use ([`crate::Config::congestion`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(rename_all = "lowercase")
)]
pub enum Congestion {
    /// CUBIC (RFC 9438), as Linux's default. The default.
    #[default]
    Cubic,
    /// NewReno (RFC 5681, RFC 6582).
    NewReno,
}

impl Congestion {
    /// The name on the command line and in pcap sidecars.
    pub fn name(self) -> &'static str {
        match self {
            Congestion::Cubic => "cubic",
            Congestion::NewReno => "newreno",
        }
    }

    /// Parses [`Congestion::name`]'s spelling.
    pub fn parse(s: &str) -> Option<Congestion> {
        match s {
            "cubic" => Some(Congestion::Cubic),
            "newreno" => Some(Congestion::NewReno),
            _ => None,
        }
    }
}

/// Slow start's growth for one ACK of `acked` bytes: RFC 5681 §3.1 eq. (2)
/// with appropriate byte counting (RFC 3465, L = 2 SMSS, as Linux), which
/// is within RFC 9406 §4.2's `min(N, L*SMSS)`; with HyStart++ one CSS_GROWTH_DIVISOR-th
/// of it in CSS. Returns the new (cwnd, ssthresh).
pub(crate) fn slow_start(
    hs: Option<&mut HyStart>,
    a: &AckInfo,
    cwnd: u32,
    ssthresh: u32,
) -> (u32, u32) {
    let inc = a.acked.min(2 * a.mss);
    match hs.map(|h| h.on_ack(a.ack, a.snd_nxt, a.rtt)) {
        None | Some(Growth::SlowStart) => (cwnd.saturating_add(inc), ssthresh),
        Some(Growth::Css) => (
            cwnd.saturating_add(inc / crate::hystart::CSS_GROWTH_DIVISOR),
            ssthresh,
        ),
        // RFC 9406 §4.2: ssthresh = cwnd, congestion avoidance from here.
        Some(Growth::EnterAvoidance) => (cwnd, cwnd),
    }
}

/// NewReno: slow start, congestion avoidance, fast retransmit and fast
/// recovery with partial-ACK handling (RFC 5681, RFC 6582).
#[derive(Clone, Copy, Debug)]
pub struct NewReno {
    cwnd: u32,
    /// HyStart++ in the initial slow start, if on.
    hystart: Option<HyStart>,
    ssthresh: u32,
    /// Bytes acknowledged in congestion avoidance since cwnd last grew.
    ca_acked: u32,
    initial_window: u32,
}

impl NewReno {
    /// Initial window `iw_segments` segments of `mss` (RFC 6928), ssthresh
    /// arbitrarily high (RFC 5681 §3.1); HyStart++ (RFC 9406) in slow
    /// start if `hystart`.
    pub fn new(iw_segments: u32, mss: u32, hystart: bool) -> Self {
        let iw = iw_segments.saturating_mul(mss);
        NewReno {
            cwnd: iw,
            hystart: hystart.then(HyStart::new),
            ssthresh: u32::MAX,
            ca_acked: 0,
            initial_window: iw,
        }
    }

    fn half_flight(flight: u32, mss: u32) -> u32 {
        // RFC 5681 eq. (4): ssthresh = max(FlightSize / 2, 2*SMSS).
        (flight / 2).max(2 * mss)
    }
}

impl CongestionControl for NewReno {
    fn cwnd(&self) -> u32 {
        self.cwnd
    }
    fn ssthresh(&self) -> u32 {
        self.ssthresh
    }
    fn on_ack(&mut self, a: &AckInfo) {
        let (acked, mss) = (a.acked, a.mss);
        if self.cwnd < self.ssthresh {
            (self.cwnd, self.ssthresh) =
                slow_start(self.hystart.as_mut(), a, self.cwnd, self.ssthresh);
        } else {
            // Congestion avoidance: one SMSS per cwnd of data acknowledged
            // (RFC 5681 §3.1, the byte-counting variant).
            self.ca_acked = self.ca_acked.saturating_add(acked);
            if self.ca_acked >= self.cwnd {
                self.ca_acked -= self.cwnd;
                self.cwnd = self.cwnd.saturating_add(mss);
            }
        }
    }
    fn on_dup_ack(&mut self, count: u32, in_recovery: bool, mss: u32) {
        // RFC 5681 §3.2 step 4: "For each additional duplicate ACK received
        // (after the third), cwnd MUST be incremented by SMSS." Every
        // duplicate during recovery is an additional one, also after a
        // partial ACK restarted the count (RFC 6582 §3.2 step 4 keeps the
        // inflation going); outside recovery a duplicate changes nothing.
        let _ = count;
        if in_recovery {
            self.cwnd = self.cwnd.saturating_add(mss);
        }
    }
    fn on_fast_retransmit(&mut self, flight: u32, mss: u32) {
        // RFC 5681 §3.2 step 2 and 3.
        if let Some(h) = &mut self.hystart {
            h.on_loss();
        }
        self.ssthresh = Self::half_flight(flight, mss);
        self.cwnd = self.ssthresh + 3 * mss;
        self.ca_acked = 0;
    }
    fn on_partial_ack(&mut self, acked: u32, mss: u32) {
        // RFC 6582 §3.2 step 5: deflate by the amount acknowledged, add back one SMSS
        // if at least one SMSS was acknowledged.
        self.cwnd = self.cwnd.saturating_sub(acked);
        if acked >= mss {
            self.cwnd = self.cwnd.saturating_add(mss);
        }
        self.cwnd = self.cwnd.max(mss);
    }
    fn on_recovery_end(&mut self, flight: u32, mss: u32) {
        // RFC 6582 §3.2 step 6, option (1): cwnd = min(ssthresh, max(FlightSize, SMSS) + SMSS).
        self.cwnd = self.ssthresh.min(flight.max(mss) + mss);
    }
    fn on_rto(&mut self, flight: u32, mss: u32) {
        // RFC 5681 §3.1 eq. (4) and: cwnd <- 1 SMSS (the loss window).
        if let Some(h) = &mut self.hystart {
            h.on_loss();
        }
        self.ssthresh = Self::half_flight(flight, mss);
        self.cwnd = mss;
        self.ca_acked = 0;
    }
    fn on_idle_restart(&mut self, mss: u32) {
        // RFC 5681 §4.1: restart window = min(IW, cwnd).
        let _ = mss;
        self.cwnd = self.cwnd.min(self.initial_window);
    }
    fn on_undo(&mut self, prior_cwnd: u32, prior_ssthresh: u32) {
        // RFC 4015 §3.2: restore what the false loss signal took; keep what
        // grew since (as Linux's tcp_undo_cwnd_reduction takes the max).
        self.cwnd = self.cwnd.max(prior_cwnd);
        self.ssthresh = self.ssthresh.max(prior_ssthresh);
    }
}

/// The algorithm a connection runs, chosen by [`crate::Config::congestion`]
/// (an enum, not a trait object: no allocation per connection).
#[derive(Clone, Copy, Debug)]
pub(crate) enum Cc {
    /// NewReno.
    NewReno(NewReno),
    /// CUBIC.
    Cubic(Cubic),
}

impl Cc {
    /// A fresh controller of `kind`: an initial window of `iw_segments`
    /// segments of `mss`, HyStart++ if `hystart`.
    pub(crate) fn new(kind: Congestion, iw_segments: u32, mss: u32, hystart: bool) -> Self {
        match kind {
            Congestion::NewReno => Cc::NewReno(NewReno::new(iw_segments, mss, hystart)),
            Congestion::Cubic => Cc::Cubic(Cubic::new(iw_segments, mss, hystart)),
        }
    }

    fn get(&self) -> &dyn CongestionControl {
        match self {
            Cc::NewReno(c) => c,
            Cc::Cubic(c) => c,
        }
    }

    fn get_mut(&mut self) -> &mut dyn CongestionControl {
        match self {
            Cc::NewReno(c) => c,
            Cc::Cubic(c) => c,
        }
    }
}

impl CongestionControl for Cc {
    fn cwnd(&self) -> u32 {
        self.get().cwnd()
    }
    fn ssthresh(&self) -> u32 {
        self.get().ssthresh()
    }
    fn on_ack(&mut self, a: &AckInfo) {
        self.get_mut().on_ack(a);
    }
    fn on_dup_ack(&mut self, count: u32, in_recovery: bool, mss: u32) {
        self.get_mut().on_dup_ack(count, in_recovery, mss);
    }
    fn on_fast_retransmit(&mut self, flight: u32, mss: u32) {
        self.get_mut().on_fast_retransmit(flight, mss);
    }
    fn on_partial_ack(&mut self, acked: u32, mss: u32) {
        self.get_mut().on_partial_ack(acked, mss);
    }
    fn on_recovery_end(&mut self, flight: u32, mss: u32) {
        self.get_mut().on_recovery_end(flight, mss);
    }
    fn on_rto(&mut self, flight: u32, mss: u32) {
        self.get_mut().on_rto(flight, mss);
    }
    fn on_idle_restart(&mut self, mss: u32) {
        self.get_mut().on_idle_restart(mss);
    }
    fn save_for_undo(&mut self) {
        self.get_mut().save_for_undo();
    }
    fn on_undo(&mut self, prior_cwnd: u32, prior_ssthresh: u32) {
        self.get_mut().on_undo(prior_cwnd, prior_ssthresh);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An ACK of `acked` bytes at time zero with no RTT sample.
    fn ack(acked: u32, mss: u32) -> AckInfo {
        AckInfo {
            now: Instant::ZERO,
            acked,
            mss,
            ack: SeqNum(0),
            snd_nxt: SeqNum(0),
            rtt: None,
            srtt: None,
        }
    }

    /// Rounds of ACKs, one per MSS of cwnd, each an RTT sample of `rtt`;
    /// returns cwnd growth per round and ssthresh after each.
    fn rounds(c: &mut Cc, una: &mut SeqNum, rtts: &[u64]) -> Vec<(u32, u32)> {
        let mss = 1000;
        let mut t = Instant::ZERO;
        rtts.iter()
            .map(|&r| {
                let before = c.cwnd();
                let n = before / mss;
                let snd_nxt = *una + n * mss + 1;
                for _ in 0..n {
                    *una += mss;
                    t += Duration::from_millis(1);
                    c.on_ack(&AckInfo {
                        now: t,
                        acked: mss,
                        mss,
                        ack: *una,
                        snd_nxt,
                        rtt: Some(Duration::from_millis(r)),
                        srtt: Some(Duration::from_millis(r)),
                    });
                }
                (c.cwnd() - before, c.ssthresh())
            })
            .collect()
    }

    #[test]
    fn hystart_leaves_slow_start_through_css_into_avoidance() {
        // RFC 9406 with each algorithm: slow start doubles per round; an
        // RTT rise (40 -> 50 ms) moves to CSS, whose growth is a quarter;
        // after CSS_ROUNDS rounds ssthresh = cwnd (avoidance).
        for kind in [Congestion::NewReno, Congestion::Cubic] {
            let mut c = Cc::new(kind, 10, 1000, true);
            let mut una = SeqNum(1);
            let r = rounds(&mut c, &mut una, &[40, 40, 50]);
            assert_eq!(r[0], (10_000, u32::MAX), "{kind:?} slow start");
            assert_eq!(r[1], (20_000, u32::MAX));
            // The 8th sample of the third round triggers the exit: 7 ACKs
            // at slow start's rate (2 MSS each, ABC), 33 at CSS's (500 B).
            assert_eq!(r[2], (7 * 1000 + 33 * 250, u32::MAX), "{kind:?} into CSS");
            for _ in 1..crate::hystart::CSS_ROUNDS {
                // A quarter of slow start's growth: 250 B per 1000 B ACK.
                let before = c.cwnd();
                let r = rounds(&mut c, &mut una, &[50]);
                assert_eq!(r[0], (before / 1000 * 250, u32::MAX), "{kind:?} CSS");
            }
            // The first ACK of the next round ends CSS: ssthresh = cwnd.
            let before = c.cwnd();
            let r = rounds(&mut c, &mut una, &[50]);
            assert_eq!(r[0].1, before, "{kind:?} avoidance after CSS_ROUNDS");
            assert!(r[0].0 < 2000, "{kind:?} avoidance grows slowly: {r:?}");
        }
        // Off: slow start goes on whatever the RTT does.
        let mut c = Cc::new(Congestion::NewReno, 10, 1000, false);
        let mut una = SeqNum(1);
        let r = rounds(&mut c, &mut una, &[40, 40, 80, 160]);
        assert_eq!(
            r.iter().map(|x| x.0).collect::<Vec<_>>(),
            [10_000, 20_000, 40_000, 80_000]
        );
    }

    #[test]
    fn slow_start_then_avoidance() {
        let mss = 1000;
        let mut c = NewReno::new(10, mss, false);
        assert_eq!(c.cwnd(), 10_000);
        c.on_ack(&ack(1000, mss));
        assert_eq!(c.cwnd(), 11_000);
        c.on_rto(20_000, mss);
        assert_eq!((c.cwnd(), c.ssthresh()), (1000, 10_000));
        for _ in 0..9 {
            c.on_ack(&ack(1000, mss));
        }
        assert_eq!(c.cwnd(), 10_000);
        // Avoidance: +1 MSS per cwnd acknowledged.
        c.on_ack(&ack(5000, mss));
        assert_eq!(c.cwnd(), 10_000);
        c.on_ack(&ack(5000, mss));
        assert_eq!(c.cwnd(), 11_000);
    }

    #[test]
    fn fast_recovery_partial_and_full() {
        let mss = 1000;
        let mut c = NewReno::new(10, mss, false);
        c.on_fast_retransmit(10_000, mss);
        assert_eq!((c.cwnd(), c.ssthresh()), (8000, 5000));
        c.on_dup_ack(4, true, mss);
        assert_eq!(c.cwnd(), 9000);
        c.on_partial_ack(3000, mss);
        assert_eq!(c.cwnd(), 7000);
        // Duplicates after a partial ACK still inflate, whatever the count.
        c.on_dup_ack(1, true, mss);
        assert_eq!(c.cwnd(), 8000);
        // Outside recovery a duplicate changes nothing.
        let mut d = NewReno::new(10, mss, false);
        d.on_dup_ack(1, false, mss);
        d.on_dup_ack(5, false, mss);
        assert_eq!(d.cwnd(), 10_000);
        c.on_recovery_end(2000, mss);
        assert_eq!(c.cwnd(), 3000);
    }
}
