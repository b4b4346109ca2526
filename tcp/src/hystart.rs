//! HyStart++ (RFC 9406): leave slow start when the round-trip time starts
//! to rise, before the queue overflows, through a few rounds of
//! Conservative Slow Start (CSS) that go back to slow start should the rise
//! prove spurious.
//!
//! Only the initial slow start uses it (RFC 9406 §4.3: after a loss the
//! ssthresh found then ends later slow starts). The algorithm that owns
//! cwnd asks [`HyStart::on_ack`] on each ACK of slow start what growth
//! applies.

use crate::seq::SeqNum;
use crate::time::Duration;

/// RFC 9406 §4.3: the least and the most RTT increase that counts as a rise.
pub(crate) const MIN_RTT_THRESH: Duration = Duration::from_millis(4);
/// See [`MIN_RTT_THRESH`].
pub(crate) const MAX_RTT_THRESH: Duration = Duration::from_millis(16);
/// RFC 9406 §4.3: the rise threshold is lastRoundMinRTT / MIN_RTT_DIVISOR, clamped.
pub(crate) const MIN_RTT_DIVISOR: u64 = 8;
/// RFC 9406 §4.3: RTT samples a round needs before it is judged.
pub(crate) const N_RTT_SAMPLE: u32 = 8;
/// RFC 9406 §4.3: CSS grows cwnd this many times slower than slow start.
pub(crate) const CSS_GROWTH_DIVISOR: u32 = 4;
/// RFC 9406 §4.3: rounds of CSS before congestion avoidance.
pub(crate) const CSS_ROUNDS: u32 = 5;

/// Where HyStart++ stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Standard slow start, watching the RTT.
    SlowStart,
    /// Conservative Slow Start, `rounds` rounds completed in it.
    Css {
        /// Rounds completed in CSS.
        rounds: u32,
    },
    /// Over: congestion avoidance was reached or a loss ended slow start.
    Done,
}

/// What growth an ACK in slow start gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Growth {
    /// Slow start: cwnd += min(N, L*SMSS).
    SlowStart,
    /// CSS: cwnd += min(N, L*SMSS) / CSS_GROWTH_DIVISOR.
    Css,
    /// CSS_ROUNDS rounds of CSS are over: ssthresh = cwnd, congestion
    /// avoidance from here (RFC 9406 §4.2).
    EnterAvoidance,
}

/// The HyStart++ state of one connection (RFC 9406 §4.2's variables).
#[derive(Clone, Copy, Debug)]
pub(crate) struct HyStart {
    phase: Phase,
    /// windowEnd: the round ends when this is acknowledged. `None` before
    /// the first round.
    window_end: Option<SeqNum>,
    /// lastRoundMinRTT (`None`: infinity).
    last_round_min: Option<Duration>,
    /// currentRoundMinRTT (`None`: infinity).
    cur_round_min: Option<Duration>,
    /// rttSampleCount of the current round.
    samples: u32,
    /// cssBaselineMinRtt: the round minimum that made slow start end.
    css_baseline: Option<Duration>,
}

impl HyStart {
    /// At the start of the connection: slow start, no round yet.
    pub(crate) fn new() -> Self {
        HyStart {
            phase: Phase::SlowStart,
            window_end: None,
            last_round_min: None,
            cur_round_min: None,
            samples: 0,
            css_baseline: None,
        }
    }

    /// Where it stands.
    #[cfg(test)]
    pub(crate) fn phase(&self) -> Phase {
        self.phase
    }

    /// A loss (or an RTO) ended slow start: HyStart++ is over for this
    /// connection (RFC 9406 §4.2: "If loss or ECN-marking is observed at
    /// any time during standard slow start or CSS, ... exit").
    pub(crate) fn on_loss(&mut self) {
        self.phase = Phase::Done;
    }

    /// One ACK in slow start (cwnd < ssthresh): `ack` is its cumulative
    /// acknowledgment, `snd_nxt` the next sequence number to send, `rtt`
    /// this ACK's RTT sample if it gave one. Says which growth applies.
    pub(crate) fn on_ack(&mut self, ack: SeqNum, snd_nxt: SeqNum, rtt: Option<Duration>) -> Growth {
        if self.phase == Phase::Done {
            return Growth::SlowStart;
        }
        // RFC 9406 §4.2: "At the start of each round during standard slow
        // start and CSS, initialize the variables used to compute the last
        // round's and current round's minimum RTT": a round ends when the
        // data sent at its start (windowEnd) is acknowledged.
        if self.window_end.is_none_or(|end| ack >= end) {
            self.window_end = Some(snd_nxt);
            self.last_round_min = self.cur_round_min;
            self.cur_round_min = None;
            self.samples = 0;
            if let Phase::Css { rounds } = self.phase {
                let rounds = rounds + 1;
                // "If CSS_ROUNDS rounds are complete, enter congestion
                // avoidance by setting the ssthresh to the current cwnd."
                if rounds >= CSS_ROUNDS {
                    self.phase = Phase::Done;
                    return Growth::EnterAvoidance;
                }
                self.phase = Phase::Css { rounds };
            }
        }
        if let Some(r) = rtt {
            self.cur_round_min = Some(self.cur_round_min.map_or(r, |m| m.min(r)));
            self.samples += 1;
        }
        match self.phase {
            Phase::SlowStart => {
                // "For rounds where at least N_RTT_SAMPLE RTT samples have
                // been obtained and currentRoundMinRTT and lastRoundMinRTT
                // are valid, check to see if delay increase triggers slow
                // start exit."
                if let (true, Some(cur), Some(last)) = (
                    self.samples >= N_RTT_SAMPLE,
                    self.cur_round_min,
                    self.last_round_min,
                ) {
                    let thresh = Duration::from_micros(last.as_micros() / MIN_RTT_DIVISOR)
                        .max(MIN_RTT_THRESH)
                        .min(MAX_RTT_THRESH);
                    if cur >= last + thresh {
                        self.css_baseline = Some(cur);
                        self.phase = Phase::Css { rounds: 0 };
                        return Growth::Css;
                    }
                }
                Growth::SlowStart
            }
            Phase::Css { .. } => {
                // "If the currentRoundMinRTT is less than cssBaselineMinRtt,
                // the slow start exit was spurious: ... resume slow start."
                if let (true, Some(cur), Some(base)) = (
                    self.samples >= N_RTT_SAMPLE,
                    self.cur_round_min,
                    self.css_baseline,
                ) {
                    if cur < base {
                        self.css_baseline = None;
                        self.phase = Phase::SlowStart;
                        return Growth::SlowStart;
                    }
                }
                Growth::Css
            }
            Phase::Done => Growth::SlowStart,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One round of `n` ACKs, each one MSS, each an RTT sample of `rtt`;
    /// the growth each got.
    fn round(h: &mut HyStart, una: &mut SeqNum, n: u32, rtt: Duration) -> Vec<Growth> {
        // Sent at the round's start: up to the round's last ACK (the next
        // round's first ACK passes it).
        let snd_nxt = *una + n * 1000 + 1;
        (0..n)
            .map(|_| {
                *una += 1000;
                h.on_ack(*una, snd_nxt, Some(rtt))
            })
            .collect()
    }

    #[test]
    fn rtt_rise_enters_css_then_avoidance_after_css_rounds() {
        let mut h = HyStart::new();
        let mut una = SeqNum(1);
        let ms = Duration::from_millis;
        // Steady 40 ms rounds: slow start.
        for _ in 0..3 {
            assert!(round(&mut h, &mut una, 10, ms(40))
                .iter()
                .all(|&g| g == Growth::SlowStart));
        }
        // A rise of 5 ms = 40/8, the threshold: exits on the 8th sample.
        let g = round(&mut h, &mut una, 10, ms(45));
        assert_eq!(g[6], Growth::SlowStart);
        assert_eq!(g[7], Growth::Css);
        assert_eq!(h.phase(), Phase::Css { rounds: 0 });
        // CSS_ROUNDS rounds of CSS (the RTT stays high), then avoidance.
        for r in 1..CSS_ROUNDS {
            assert!(round(&mut h, &mut una, 10, ms(46))
                .iter()
                .all(|&g| g == Growth::Css));
            assert_eq!(h.phase(), Phase::Css { rounds: r });
        }
        let g = round(&mut h, &mut una, 10, ms(46));
        assert_eq!(g[0], Growth::EnterAvoidance);
        assert_eq!(h.phase(), Phase::Done);
        assert_eq!(g[1], Growth::SlowStart, "the caller is in avoidance now");
    }

    #[test]
    fn a_smaller_rise_stays_in_slow_start_and_the_threshold_is_clamped() {
        let mut h = HyStart::new();
        let mut una = SeqNum(1);
        let ms = Duration::from_millis;
        round(&mut h, &mut una, 10, ms(40));
        // 4.9 ms < 40/8: no exit.
        let g = round(&mut h, &mut una, 10, Duration::from_micros(44_900));
        assert!(g.iter().all(|&g| g == Growth::SlowStart));
        // With a 400 ms RTT the threshold is MAX_RTT_THRESH (16 ms), not 50 ms.
        let mut h = HyStart::new();
        round(&mut h, &mut una, 10, ms(400));
        let g = round(&mut h, &mut una, 10, ms(416));
        assert_eq!(g[7], Growth::Css);
        // With a 1 ms RTT it is MIN_RTT_THRESH (4 ms): a 3 ms rise is no exit.
        let mut h = HyStart::new();
        round(&mut h, &mut una, 10, ms(1));
        assert!(round(&mut h, &mut una, 10, ms(4))
            .iter()
            .all(|&g| g == Growth::SlowStart));
        // Fewer than N_RTT_SAMPLE samples in a round: not judged.
        let mut h = HyStart::new();
        round(&mut h, &mut una, 10, ms(40));
        let g = round(&mut h, &mut una, 7, ms(100));
        assert!(g.iter().all(|&g| g == Growth::SlowStart));
    }

    #[test]
    fn spurious_exit_goes_back_to_slow_start() {
        let mut h = HyStart::new();
        let mut una = SeqNum(1);
        let ms = Duration::from_millis;
        round(&mut h, &mut una, 10, ms(40));
        round(&mut h, &mut una, 10, ms(50));
        assert_eq!(h.phase(), Phase::Css { rounds: 0 });
        // The next round's minimum falls below the baseline (50 ms).
        let g = round(&mut h, &mut una, 10, ms(41));
        assert_eq!(g[6], Growth::Css);
        assert_eq!(g[7], Growth::SlowStart);
        assert_eq!(h.phase(), Phase::SlowStart);
        // A loss ends it for good.
        h.on_loss();
        assert!(round(&mut h, &mut una, 10, ms(100))
            .iter()
            .all(|&g| g == Growth::SlowStart));
        assert_eq!(h.phase(), Phase::Done);
    }
}
