//! Round-trip time estimation and the retransmission timeout (RFC 6298).

use crate::time::Duration;

/// RTT estimator per RFC 6298 §2, with the constants it names:
/// alpha = 1/8, beta = 1/4, K = 4, clock granularity G (we use 1 µs, the
/// resolution of [`crate::Instant`]).
#[derive(Clone, Copy, Debug)]
pub struct RttEstimator {
    /// SRTT, the smoothed round-trip time, once a sample exists.
    srtt: Option<Duration>,
    /// RTTVAR, the round-trip time variation.
    rttvar: Duration,
    /// Current RTO before backoff.
    rto: Duration,
    min_rto: Duration,
    max_rto: Duration,
}

impl RttEstimator {
    /// A fresh estimator: RTO = `initial` (RFC 6298 §2.1), bounded by
    /// `min_rto` and `max_rto`.
    pub fn new(initial: Duration, min_rto: Duration, max_rto: Duration) -> Self {
        RttEstimator {
            srtt: None,
            rttvar: Duration::ZERO,
            rto: initial,
            min_rto,
            max_rto,
        }
    }

    /// Feeds a measurement R (RFC 6298 §2.2 and §2.3).
    pub fn sample(&mut self, r: Duration) {
        let r = r.as_micros();
        match self.srtt {
            None => {
                // §2.2: SRTT <- R, RTTVAR <- R/2.
                self.srtt = Some(Duration::from_micros(r));
                self.rttvar = Duration::from_micros(r / 2);
            }
            Some(srtt) => {
                // §2.3: RTTVAR <- (1 - beta) * RTTVAR + beta * |SRTT - R'|,
                //       SRTT <- (1 - alpha) * SRTT + alpha * R'.
                let s = srtt.as_micros();
                let delta = s.abs_diff(r);
                let var = (3 * self.rttvar.as_micros() + delta) / 4;
                self.rttvar = Duration::from_micros(var);
                self.srtt = Some(Duration::from_micros((7 * s + r) / 8));
            }
        }
        // RTO <- SRTT + max(G, K * RTTVAR), then §2.4 (minimum) and §2.5 (maximum).
        let s = self.srtt.map_or(0, |d| d.as_micros());
        let rto = Duration::from_micros(s + (4 * self.rttvar.as_micros()).max(1));
        self.rto = rto.max(self.min_rto).min(self.max_rto);
    }

    /// The RTO after `backoffs` expirations (§5.5: doubled each time, capped).
    pub fn rto(&self, backoffs: u32) -> Duration {
        let mut d = self.rto;
        for _ in 0..backoffs.min(32) {
            d = d.doubled();
            if d >= self.max_rto {
                return self.max_rto;
            }
        }
        d.min(self.max_rto)
    }

    /// SRTT, once sampled.
    pub fn srtt(&self) -> Option<Duration> {
        self.srtt
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc6298_first_and_second_sample() {
        let mut e = RttEstimator::new(
            Duration::from_secs(1),
            Duration::from_millis(200),
            Duration::from_secs(120),
        );
        assert_eq!(e.rto(0), Duration::from_secs(1));
        e.sample(Duration::from_millis(100));
        // SRTT 100 ms, RTTVAR 50 ms, RTO = 100 + 4*50 = 300 ms.
        assert_eq!(e.srtt(), Some(Duration::from_millis(100)));
        assert_eq!(e.rto(0), Duration::from_millis(300));
        e.sample(Duration::from_millis(200));
        // RTTVAR = 3/4*50 + 1/4*100 = 62.5; SRTT = 7/8*100 + 1/8*200 = 112.5
        assert_eq!(e.srtt(), Some(Duration::from_micros(112_500)));
        assert_eq!(e.rto(0), Duration::from_micros(112_500 + 250_000));
    }

    #[test]
    fn floor_backoff_and_cap() {
        let mut e = RttEstimator::new(
            Duration::from_secs(1),
            Duration::from_millis(200),
            Duration::from_secs(120),
        );
        e.sample(Duration::from_micros(50));
        assert_eq!(e.rto(0), Duration::from_millis(200));
        assert_eq!(e.rto(1), Duration::from_millis(400));
        assert_eq!(e.rto(3), Duration::from_millis(1600));
        assert_eq!(e.rto(20), Duration::from_secs(120));
    }
}
