//! CUBIC congestion control (RFC 9438), as Linux's `tcp_cubic.c` runs it:
//! after a reduction the window follows W_cubic(t) = C·(t − K)³ + W_max,
//! concave up to the window of the last congestion event and convex beyond
//! it, never slower than an estimate of Reno's window (the Reno-friendly
//! region). cwnd is in bytes; the RFC's windows in segments are scaled by
//! the MSS. The math is integer (microseconds, bytes), so that runs are
//! deterministic on every machine; time is the crate's [`Instant`], passed
//! in with each ACK.

use crate::congestion::{slow_start, AckInfo, CongestionControl};
use crate::hystart::HyStart;
use crate::time::{Duration, Instant};

/// RFC 9438 §5.1: C = 0.4 (segments per s³), as the ratio C_NUM / C_DEN.
const C_NUM: u128 = 2;
const C_DEN: u128 = 5;
/// RFC 9438 §4.6: β_cubic = 0.7, as the ratio BETA_NUM / BETA_DEN.
const BETA_NUM: u32 = 7;
const BETA_DEN: u32 = 10;
/// RFC 9438 §4.7: fast convergence takes W_max = cwnd · (1 + β_cubic) / 2 = 0.85.
const FAST_CONV_NUM: u32 = 17;
const FAST_CONV_DEN: u32 = 20;
/// RFC 9438 §4.3: α_cubic = 3·(1 − β_cubic)/(1 + β_cubic) = 0.9/1.7 = 9/17.
const ALPHA_NUM: u64 = 9;
const ALPHA_DEN: u64 = 17;
/// One second in microseconds, cubed: W_cubic's time unit.
const US3_PER_S3: u128 = 1_000_000_000_000_000_000;
/// The farthest from K the curve is evaluated (about 2.8 hours), so that
/// the cube stays far inside i128.
const MAX_DT_US: i128 = 10_000_000_000;

/// A congestion-avoidance stage (RFC 9438 §4.2's epoch).
#[derive(Clone, Copy, Debug)]
struct Epoch {
    /// t_epoch: when the stage began.
    start: Instant,
    /// K, in microseconds: when W_cubic reaches `origin`.
    k_us: u64,
    /// The plateau of the curve: W_max, or cwnd_epoch when above it.
    origin: u32,
    /// W_est: the Reno-friendly window estimate, bytes (§4.3).
    w_est: u32,
    /// Remainder of W_est's growth, in units of 1/(cwnd · ALPHA_DEN) byte.
    est_acc: u64,
    /// Remainder of cwnd's growth, in units of 1/cwnd byte.
    cwnd_acc: u64,
}

/// What an undo restores (RFC 9438 §4.9).
#[derive(Clone, Copy, Debug)]
struct Saved {
    w_max: u32,
    cwnd_prior: u32,
    epoch: Option<Epoch>,
    after_rto: bool,
    hystart: Option<HyStart>,
}

/// CUBIC (RFC 9438) with HyStart++ (RFC 9406) in the initial slow start.
#[derive(Clone, Copy, Debug)]
pub struct Cubic {
    cwnd: u32,
    ssthresh: u32,
    initial_window: u32,
    hystart: Option<HyStart>,
    /// W_max: the window at the last congestion event (after fast
    /// convergence), bytes; 0 before the first.
    w_max: u32,
    /// cwnd_prior: cwnd when the last congestion event began (§4.3's switch
    /// of α_cubic to 1).
    cwnd_prior: u32,
    /// The current congestion-avoidance stage; `None` until the first ACK
    /// in avoidance after a reduction.
    epoch: Option<Epoch>,
    /// The next stage follows an RTO: K = 0 and W_max = its cwnd (§4.8).
    after_rto: bool,
    /// The state before the open loss episode's reduction.
    saved: Option<Saved>,
    /// Bytes acknowledged in avoidance since cwnd last grew without an
    /// RTT estimate (Reno's rule until there is one).
    reno_acked: u32,
}

/// The integer cube root of `n`, rounded down.
fn icbrt(n: u128) -> u64 {
    let mut r: u64 = 0;
    for b in (0..43).rev() {
        let c = u128::from(r | (1 << b));
        if c.checked_mul(c)
            .and_then(|c2| c2.checked_mul(c))
            .is_some_and(|c3| c3 <= n)
        {
            r |= 1 << b;
        }
    }
    r
}

/// RFC 9438 §4.2 eq. (2): K = ∛((W_max − cwnd_epoch) / C), in µs, the
/// windows in bytes of `mss`-byte segments.
pub(crate) fn k_us(w_max: u32, cwnd_epoch: u32, mss: u32) -> u64 {
    if cwnd_epoch >= w_max || mss == 0 {
        return 0;
    }
    let diff = u128::from(w_max - cwnd_epoch);
    icbrt(diff * US3_PER_S3 * C_DEN / (C_NUM * u128::from(mss)))
}

/// RFC 9438 §4.2 eq. (1): W_cubic(t) = C·(t − K)³ + W_max, in bytes, `t`
/// and `k` in µs, `origin` W_max in bytes; floored at 0.
pub(crate) fn w_cubic(t_us: u64, k_us: u64, origin: u32, mss: u32) -> u64 {
    let dt = (i128::from(t_us) - i128::from(k_us)).clamp(-MAX_DT_US, MAX_DT_US);
    let grow =
        dt * dt * dt * C_NUM as i128 * i128::from(mss) / (C_DEN as i128 * US3_PER_S3 as i128);
    (i128::from(origin) + grow).clamp(0, i128::from(u32::MAX)) as u64
}

impl Cubic {
    /// Initial window `iw_segments` segments of `mss` (RFC 6928), ssthresh
    /// arbitrarily high (RFC 5681 §3.1); HyStart++ if `hystart`.
    pub fn new(iw_segments: u32, mss: u32, hystart: bool) -> Self {
        let iw = iw_segments.saturating_mul(mss);
        Cubic {
            cwnd: iw,
            ssthresh: u32::MAX,
            initial_window: iw,
            hystart: hystart.then(HyStart::new),
            w_max: 0,
            cwnd_prior: 0,
            epoch: None,
            after_rto: false,
            saved: None,
            reno_acked: 0,
        }
    }

    /// W_max in bytes (0 before the first congestion event).
    pub fn w_max(&self) -> u32 {
        self.w_max
    }

    /// K of the current avoidance stage, once it began.
    pub fn k(&self) -> Option<Duration> {
        self.epoch.map(|e| Duration::from_micros(e.k_us))
    }

    /// W_est of the current avoidance stage, bytes, once it began.
    pub fn w_est(&self) -> Option<u32> {
        self.epoch.map(|e| e.w_est)
    }

    /// RFC 9438 §4.6 and §4.7, the reduction on a congestion event. The
    /// window it is taken from is the smaller of cwnd and FlightSize (the
    /// RFC allows flight_size): a cwnd that grew while the peer's window
    /// held the sending back measures nothing of the path.
    fn reduce(&mut self, flight: u32, mss: u32) -> u32 {
        if let Some(h) = &mut self.hystart {
            h.on_loss();
        }
        let w = if flight > 0 {
            self.cwnd.min(flight)
        } else {
            self.cwnd
        };
        self.epoch = None;
        self.cwnd_prior = w;
        // §4.7 fast convergence: a window below the last W_max means a new
        // flow is taking its share; leave it more room.
        self.w_max = if w < self.w_max {
            (u64::from(w) * u64::from(FAST_CONV_NUM) / u64::from(FAST_CONV_DEN)) as u32
        } else {
            w
        };
        // §4.6: ssthresh = cwnd · β_cubic, at least 2 SMSS.
        let s = (u64::from(w) * u64::from(BETA_NUM) / u64::from(BETA_DEN)) as u32;
        self.ssthresh = s.max(2 * mss);
        self.ssthresh
    }

    /// §4.2: a congestion-avoidance stage begins at `now` with this cwnd.
    fn start_epoch(&mut self, now: Instant, mss: u32) -> Epoch {
        let (k_us, origin) = if self.after_rto || self.cwnd >= self.w_max {
            // §4.8: after an RTO, K = 0 and W_max = cwnd at the stage's
            // start; likewise (as Linux's bictcp_update) when cwnd already
            // exceeds W_max (no congestion event yet): the convex region.
            (0, self.cwnd)
        } else {
            (k_us(self.w_max, self.cwnd, mss), self.w_max)
        };
        self.after_rto = false;
        Epoch {
            start: now,
            k_us,
            origin,
            // §4.3: "W_est is set equal to cwnd_epoch at the start of the
            // congestion avoidance stage."
            w_est: self.cwnd,
            est_acc: 0,
            cwnd_acc: 0,
        }
    }

    /// One ACK in congestion avoidance (§4.2–§4.5).
    fn avoid(&mut self, a: &AckInfo) {
        let mss = a.mss;
        let Some(srtt) = a.srtt else {
            // No RTT yet (the curve needs one): Reno's one SMSS per cwnd.
            self.reno_acked = self.reno_acked.saturating_add(a.acked);
            if self.reno_acked >= self.cwnd {
                self.reno_acked -= self.cwnd;
                self.cwnd = self.cwnd.saturating_add(mss);
            }
            return;
        };
        let mut e = match self.epoch {
            Some(e) => e,
            None => self.start_epoch(a.now, mss),
        };
        let cwnd = u64::from(self.cwnd.max(1));
        let t = a.now.saturating_since(e.start).as_micros();
        // §4.3: W_est += α_cubic · segments_acked / cwnd; α_cubic becomes
        // 1 once W_est reaches cwnd_prior.
        let (an, ad) = if e.w_est >= self.cwnd_prior {
            (1, 1)
        } else {
            (ALPHA_NUM, ALPHA_DEN)
        };
        e.est_acc += u64::from(a.acked) * u64::from(mss) * an * (ALPHA_DEN / ad);
        let unit = cwnd * ALPHA_DEN;
        let grow = e.est_acc / unit;
        e.est_acc %= unit;
        e.w_est = (u64::from(e.w_est) + grow).min(u64::from(u32::MAX)) as u32;

        let w_t = w_cubic(t, e.k_us, e.origin, mss);
        if w_t < u64::from(e.w_est) {
            // §4.3, the Reno-friendly region: cwnd = W_est.
            self.cwnd = self.cwnd.max(e.w_est);
        } else {
            // §4.4 concave and §4.5 convex regions: target =
            // W_cubic(t + RTT) within [cwnd, 1.5·cwnd]; cwnd grows by
            // (target − cwnd)/cwnd segments per segment acknowledged.
            let target =
                w_cubic(t + srtt.as_micros(), e.k_us, e.origin, mss).clamp(cwnd, cwnd * 3 / 2);
            e.cwnd_acc += (target - cwnd) * u64::from(a.acked);
            let grow = e.cwnd_acc / cwnd;
            e.cwnd_acc %= cwnd;
            self.cwnd = (cwnd + grow).min(u64::from(u32::MAX)) as u32;
        }
        self.epoch = Some(e);
    }
}

impl CongestionControl for Cubic {
    fn cwnd(&self) -> u32 {
        self.cwnd
    }
    fn ssthresh(&self) -> u32 {
        self.ssthresh
    }
    fn on_ack(&mut self, a: &AckInfo) {
        if self.cwnd < self.ssthresh {
            // §4.10: slow start as Reno's (HyStart++ in the first one).
            (self.cwnd, self.ssthresh) =
                slow_start(self.hystart.as_mut(), a, self.cwnd, self.ssthresh);
        } else {
            self.avoid(a);
        }
    }
    fn on_dup_ack(&mut self, count: u32, in_recovery: bool, mss: u32) {
        // Without PRR only: RFC 5681 §3.2 step 4's inflation, as NewReno.
        let _ = count;
        if in_recovery {
            self.cwnd = self.cwnd.saturating_add(mss);
        }
    }
    fn on_fast_retransmit(&mut self, flight: u32, mss: u32) {
        // §4.6: cwnd = ssthresh (PRR, RFC 6937, paces the recovery); plus
        // RFC 5681 §3.2 step 3's three segments for recovery without PRR.
        self.cwnd = self.reduce(flight, mss) + 3 * mss;
    }
    fn on_partial_ack(&mut self, acked: u32, mss: u32) {
        // Without PRR only: RFC 6582 §3.2 step 5, as NewReno.
        self.cwnd = self.cwnd.saturating_sub(acked);
        if acked >= mss {
            self.cwnd = self.cwnd.saturating_add(mss);
        }
        self.cwnd = self.cwnd.max(mss);
    }
    fn on_recovery_end(&mut self, flight: u32, mss: u32) {
        // RFC 6937 §3 (and Linux's tcp_end_cwnd_reduction): cwnd = ssthresh.
        let _ = (flight, mss);
        self.cwnd = self.ssthresh;
    }
    fn on_rto(&mut self, flight: u32, mss: u32) {
        // §4.8: ssthresh as on any congestion event, cwnd = 1 SMSS, and the
        // next avoidance stage starts its curve at its own cwnd.
        self.reduce(flight, mss);
        self.cwnd = mss;
        self.after_rto = true;
        self.reno_acked = 0;
    }
    fn on_idle_restart(&mut self, mss: u32) {
        // RFC 5681 §4.1: restart window = min(IW, cwnd); the curve starts
        // again from there (RFC 9438 §5.8: no growth credited for idle time).
        let _ = mss;
        self.cwnd = self.cwnd.min(self.initial_window);
        self.epoch = None;
    }
    fn save_for_undo(&mut self) {
        self.saved = Some(Saved {
            w_max: self.w_max,
            cwnd_prior: self.cwnd_prior,
            epoch: self.epoch,
            after_rto: self.after_rto,
            hystart: self.hystart,
        });
    }
    fn on_undo(&mut self, prior_cwnd: u32, prior_ssthresh: u32) {
        // §4.9: a spurious congestion event restores the state from before
        // it; cwnd and ssthresh keep what grew since (Linux's
        // tcp_undo_cwnd_reduction takes the max).
        if let Some(s) = self.saved.take() {
            self.w_max = s.w_max;
            self.cwnd_prior = s.cwnd_prior;
            self.epoch = s.epoch;
            self.after_rto = s.after_rto;
            self.hystart = s.hystart;
        }
        self.cwnd = self.cwnd.max(prior_cwnd);
        self.ssthresh = self.ssthresh.max(prior_ssthresh);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seq::SeqNum;

    const MSS: u32 = 1000;

    fn ack(now: Instant, rtt: Duration) -> AckInfo {
        AckInfo {
            now,
            acked: MSS,
            mss: MSS,
            ack: SeqNum(0),
            snd_nxt: SeqNum(0),
            rtt: Some(rtt),
            srtt: Some(rtt),
        }
    }

    /// A CUBIC at `segs` segments in avoidance that just had a loss at
    /// that window (recovery over: cwnd = ssthresh).
    fn after_loss(segs: u32) -> Cubic {
        let mut c = Cubic::new(segs, MSS, false);
        c.on_fast_retransmit(segs * MSS, MSS);
        c.on_recovery_end(0, MSS);
        c
    }

    /// Drive `c` for `secs`, one window of ACKs (one per segment) per RTT,
    /// spread over the RTT; returns (t, cwnd) at the end of each RTT.
    fn drive(c: &mut Cubic, start: Instant, rtt: Duration, rtts: u32) -> Vec<(u64, u32)> {
        let mut out = Vec::new();
        let mut now = start;
        for _ in 0..rtts {
            let n = c.cwnd() / MSS;
            for i in 0..n {
                let at = now + Duration::from_micros(rtt.as_micros() * u64::from(i) / u64::from(n));
                c.on_ack(&ack(at, rtt));
            }
            now += rtt;
            out.push((now.saturating_since(start).as_micros(), c.cwnd()));
        }
        out
    }

    #[test]
    fn integer_math_matches_the_formulas() {
        assert_eq!(icbrt(0), 0);
        assert_eq!(icbrt(26), 2);
        assert_eq!(icbrt(27), 3);
        assert_eq!(icbrt(u128::from(u64::MAX)), 2_642_245);
        // K = ∛((100 − 70) / 0.4) = ∛75 = 4.217163 s.
        let k = k_us(100 * MSS, 70 * MSS, MSS);
        assert!((4_217_162..=4_217_164).contains(&k), "{k}");
        // W_cubic(0) = W_max − C·K³ = cwnd_epoch; W_cubic(K) = W_max.
        assert!(w_cubic(0, k, 100 * MSS, MSS).abs_diff(70 * u64::from(MSS)) <= 1);
        assert_eq!(w_cubic(k, k, 100 * MSS, MSS), 100 * u64::from(MSS));
        // t = K + 2 s: W_max + 0.4·8 = 103.2 segments.
        assert_eq!(w_cubic(k + 2_000_000, k, 100 * MSS, MSS), 103_200);
    }

    #[test]
    fn reduction_and_fast_convergence() {
        let mut c = after_loss(100);
        assert_eq!(
            (c.cwnd(), c.ssthresh(), c.w_max()),
            (70_000, 70_000, 100_000)
        );
        // The next loss at 80 segments, below W_max: fast convergence
        // (§4.7) remembers 80 · 0.85 = 68 segments; ssthresh 56.
        c.cwnd = 80 * MSS;
        c.on_fast_retransmit(80 * MSS, MSS);
        assert_eq!((c.ssthresh(), c.w_max()), (56_000, 68_000));
        // A loss at a window above W_max takes the window as it is.
        c.cwnd = 90 * MSS;
        c.on_fast_retransmit(90 * MSS, MSS);
        assert_eq!((c.ssthresh(), c.w_max()), (63_000, 90_000));
        // The reduction is taken from FlightSize when it is smaller.
        c.cwnd = 200 * MSS;
        c.on_fast_retransmit(50 * MSS, MSS);
        assert_eq!(c.ssthresh(), 35_000);
        // Never below 2 SMSS.
        c.cwnd = 2 * MSS;
        c.on_fast_retransmit(2 * MSS, MSS);
        assert_eq!(c.ssthresh(), 2 * MSS);
    }

    #[test]
    fn cwnd_follows_the_cubic_curve_concave_then_convex() {
        // A long, fat path (RTT 100 ms, W_max 1000 segments): the cubic
        // term dominates Reno's (§4.3's region is left at once).
        let mut c = after_loss(1000);
        let rtt = Duration::from_millis(100);
        let start = Instant::from_secs(10);
        let trace = drive(&mut c, start, rtt, 300);
        let k = c.k().unwrap().as_micros();
        // K = ∛((1000 − 700) / 0.4) = ∛750 = 9.0856 s.
        assert!((9_085_000..=9_086_000).contains(&k), "K = {k} µs");
        for &(t, cwnd) in &trace {
            // Each ACK aims at W_cubic(t + RTT); at the end of an RTT the
            // window is within 1 % (and 2 segments) of W_cubic(t).
            let w = w_cubic(t, k, 1_000_000, MSS) as f64;
            let err = (f64::from(cwnd) - w).abs();
            assert!(
                err <= w * 0.01 + 2000.0,
                "t {t} µs: cwnd {cwnd}, W_cubic {w}"
            );
        }
        // Concave below K (growth slowing), plateau at W_max, convex after.
        let at = |secs: f64| trace[(secs * 10.0) as usize - 1].1;
        assert!(at(2.0) - at(1.0) > at(8.0) - at(7.0), "concave");
        assert!(at(9.1).abs_diff(1_000_000) <= 2000, "plateau {}", at(9.1));
        assert!(at(20.0) - at(19.0) > at(12.0) - at(11.0), "convex");
        assert!(at(20.0) > 1_000_000);
    }

    #[test]
    fn reno_friendly_region_takes_over_at_small_bdp() {
        // RTT 1 ms, W_max 20 segments: Reno gains 0.53 segments per RTT,
        // 530 per second; the cubic curve gains 6 segments in K = 2.47 s.
        let mut c = after_loss(20);
        let rtt = Duration::from_millis(1);
        let start = Instant::from_secs(1);
        let trace = drive(&mut c, start, rtt, 200);
        let k = c.k().unwrap().as_micros();
        let (t, cwnd) = *trace.last().unwrap();
        let w_t = w_cubic(t, k, 20 * MSS, MSS);
        assert!(
            u64::from(cwnd) > w_t + 20 * u64::from(MSS),
            "cwnd {cwnd} W_cubic {w_t}"
        );
        assert_eq!(c.w_est(), Some(cwnd), "cwnd is W_est");
        // 200 RTTs: up from 14 segments at α = 9/17 per RTT until
        // cwnd_prior (20 segments), then at 1 per RTT: about 188 + 14.
        assert!((180_000..=210_000).contains(&cwnd), "cwnd {cwnd}");
        let segs_after = |n: usize| trace[n - 1].1 / MSS;
        assert_eq!(segs_after(10), 14 + 5, "α = 9/17 at first");
    }

    #[test]
    fn rto_restarts_the_curve_at_its_own_window() {
        let mut c = after_loss(100);
        c.on_rto(70 * MSS, MSS);
        assert_eq!((c.cwnd(), c.ssthresh()), (MSS, 49_000));
        // Slow start to ssthresh, then avoidance with K = 0 (§4.8).
        let rtt = Duration::from_millis(50);
        let mut now = Instant::from_secs(1);
        while c.cwnd() < c.ssthresh() {
            c.on_ack(&ack(now, rtt));
            now += Duration::from_millis(1);
        }
        c.on_ack(&ack(now, rtt));
        assert_eq!(c.k(), Some(Duration::ZERO));
    }

    #[test]
    fn undo_restores_the_state_before_the_reduction() {
        let mut c = after_loss(100);
        let rtt = Duration::from_millis(100);
        drive(&mut c, Instant::from_secs(1), rtt, 20);
        let (cwnd, ssthresh, w_max, k) = (c.cwnd(), c.ssthresh(), c.w_max(), c.k());
        c.save_for_undo();
        c.on_fast_retransmit(cwnd, MSS);
        c.on_recovery_end(0, MSS);
        assert!(c.cwnd() < cwnd && c.w_max() != w_max);
        c.on_undo(cwnd, ssthresh);
        assert_eq!(
            (c.cwnd(), c.ssthresh(), c.w_max(), c.k()),
            (cwnd, ssthresh, w_max, k)
        );
    }
}
