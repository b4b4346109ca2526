//! Congestion control (RFC 5681), behind a trait. NewReno (RFC 6582) first.
//!
//! The connection reports events; the algorithm owns cwnd and ssthresh. RTO,
//! fast retransmit and duplicate ACKs are separate events, so algorithms
//! that treat them differently (CUBIC, RACK-TLP later) fit the same trait.

/// A congestion-control algorithm, driven by the connection.
pub trait CongestionControl {
    /// Congestion window in bytes.
    fn cwnd(&self) -> u32;
    /// Slow-start threshold in bytes.
    fn ssthresh(&self) -> u32;
    /// New data was cumulatively acknowledged (`acked` bytes), outside recovery.
    fn on_ack(&mut self, acked: u32, mss: u32);
    /// A duplicate ACK arrived; `count` is how many in a row since SND.UNA
    /// last advanced, `in_recovery` whether fast recovery is on. Not called
    /// for the duplicate that triggers [`CongestionControl::on_fast_retransmit`].
    fn on_dup_ack(&mut self, count: u32, in_recovery: bool, mss: u32);
    /// Three duplicate ACKs: fast retransmit and enter fast recovery
    /// (RFC 5681 §3.2 steps 2–3). `flight` is the data outstanding.
    fn on_fast_retransmit(&mut self, flight: u32, mss: u32);
    /// A partial ACK during fast recovery acknowledged `acked` bytes
    /// (RFC 6582 §3.2 step 5).
    fn on_partial_ack(&mut self, acked: u32, mss: u32);
    /// Fast recovery ended with a full ACK (RFC 6582 §3.2 step 6).
    /// `flight` is the data still outstanding.
    fn on_recovery_end(&mut self, flight: u32, mss: u32);
    /// The retransmission timer expired (RFC 5681 §3.1 eq. 4).
    fn on_rto(&mut self, flight: u32, mss: u32);
    /// The connection was idle for longer than an RTO (RFC 5681 §4.1).
    fn on_idle_restart(&mut self, mss: u32);
    /// Every retransmission of a recovery episode proved needless (the peer
    /// reported each as a duplicate, RFC 3708): undo the reduction, back to
    /// the window and threshold from before it (RFC 4015 §3.2's response).
    fn on_undo(&mut self, prior_cwnd: u32, prior_ssthresh: u32);
}

/// NewReno: slow start, congestion avoidance, fast retransmit and fast
/// recovery with partial-ACK handling (RFC 5681, RFC 6582).
#[derive(Clone, Copy, Debug)]
pub struct NewReno {
    cwnd: u32,
    ssthresh: u32,
    /// Bytes acknowledged in congestion avoidance since cwnd last grew.
    ca_acked: u32,
    initial_window: u32,
}

impl NewReno {
    /// Initial window `iw_segments` segments of `mss` (RFC 6928), ssthresh
    /// arbitrarily high (RFC 5681 §3.1).
    pub fn new(iw_segments: u32, mss: u32) -> Self {
        let iw = iw_segments.saturating_mul(mss);
        NewReno {
            cwnd: iw,
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
    fn on_ack(&mut self, acked: u32, mss: u32) {
        if self.cwnd < self.ssthresh {
            // RFC 5681 §3.1 eq. (2): cwnd += min(N, SMSS) per ACK... with
            // appropriate byte counting (RFC 3465, L = 2) as Linux.
            self.cwnd = self.cwnd.saturating_add(acked.min(2 * mss));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slow_start_then_avoidance() {
        let mss = 1000;
        let mut c = NewReno::new(10, mss);
        assert_eq!(c.cwnd(), 10_000);
        c.on_ack(1000, mss);
        assert_eq!(c.cwnd(), 11_000);
        c.on_rto(20_000, mss);
        assert_eq!((c.cwnd(), c.ssthresh()), (1000, 10_000));
        for _ in 0..9 {
            c.on_ack(1000, mss);
        }
        assert_eq!(c.cwnd(), 10_000);
        // Avoidance: +1 MSS per cwnd acknowledged.
        c.on_ack(5000, mss);
        assert_eq!(c.cwnd(), 10_000);
        c.on_ack(5000, mss);
        assert_eq!(c.cwnd(), 11_000);
    }

    #[test]
    fn fast_recovery_partial_and_full() {
        let mss = 1000;
        let mut c = NewReno::new(10, mss);
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
        let mut d = NewReno::new(10, mss);
        d.on_dup_ack(1, false, mss);
        d.on_dup_ack(5, false, mss);
        assert_eq!(d.cwnd(), 10_000);
        c.on_recovery_end(2000, mss);
        assert_eq!(c.cwnd(), 3000);
    }
}
