//! Proportional Rate Reduction (RFC 6937), as Linux's
//! `tcp_init_cwnd_reduction` / `tcp_cwnd_reduction`: during fast recovery
//! the sending follows the deliveries, so that the window comes down to
//! ssthresh smoothly: no burst when recovery starts (RFC 6675 sends
//! nothing for half an RTT, then at once), no idling; and when losses
//! took the pipe below ssthresh, the Slow Start Reduction Bound (PRR-SSRB,
//! the RFC's default) lets it grow back by at most one segment more than
//! was delivered per ACK.

/// PRR's state for one recovery episode (RFC 6937 §3's variables).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Prr {
    /// prr_delivered: bytes the receiver got since recovery began.
    delivered: u64,
    /// prr_out: bytes sent since recovery began.
    out: u64,
    /// RecoverFS: FlightSize (SND.NXT − SND.UNA) when recovery began.
    recover_fs: u64,
}

impl Prr {
    /// RFC 6937 §3 "At the beginning of recovery": prr_delivered = 0,
    /// prr_out = 0, RecoverFS = snd.nxt − snd.una.
    pub(crate) fn start(&mut self, flight: u32) {
        *self = Prr {
            delivered: 0,
            out: 0,
            recover_fs: u64::from(flight),
        };
    }

    /// RFC 6937 §3 "On any data transmission or retransmission":
    /// prr_out += data sent.
    pub(crate) fn on_sent(&mut self, bytes: u32) {
        self.out += u64::from(bytes);
    }

    /// RFC 6937 §3 "On every ACK during recovery": `delivered` is
    /// DeliveredData (the change in SND.UNA plus the change in SACKed
    /// bytes), `pipe` RFC 6675's estimate after the ACK. Returns sndcnt, the
    /// bytes that may be sent now: the sender's window for this ACK is
    /// pipe + sndcnt.
    pub(crate) fn on_ack(&mut self, delivered: u32, pipe: u32, ssthresh: u32, mss: u32) -> u32 {
        self.delivered += u64::from(delivered);
        let (pipe, ssthresh) = (u64::from(pipe), u64::from(ssthresh));
        let sndcnt = if pipe > ssthresh {
            // Proportional Rate Reduction:
            // sndcnt = CEIL(prr_delivered * ssthresh / RecoverFS) - prr_out,
            // the CEIL to whole segments (Linux's tcp_cwnd_reduction counts
            // segments): a fraction of one would send nothing.
            let fs = self.recover_fs.max(1) * u64::from(mss.max(1));
            ((self.delivered * ssthresh).div_ceil(fs) * u64::from(mss)).saturating_sub(self.out)
        } else {
            // PRR-SSRB: limit = MAX(prr_delivered - prr_out, DeliveredData) + MSS;
            // sndcnt = MIN(ssthresh - pipe, limit).
            let limit = self
                .delivered
                .saturating_sub(self.out)
                .max(u64::from(delivered))
                + u64::from(mss);
            (ssthresh - pipe).min(limit)
        };
        // Linux's tcp_cwnd_reduction: the fast retransmit goes out on the
        // ACK that starts recovery, whatever the ratio says.
        let sndcnt = if self.out == 0 {
            sndcnt.max(u64::from(mss))
        } else {
            sndcnt
        };
        sndcnt.min(u64::from(u32::MAX)) as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MSS: u32 = 1000;

    /// RFC 6937 §3.1's sender: cwnd = FlightSize = pipe = 20 segments,
    /// ssthresh 10 at the start of recovery, losses at the head of the
    /// window, Limited Transmit (RFC 3042: the first two duplicate ACKs
    /// sent one new segment each), and bulk data. Recovery starts on the
    /// third duplicate ACK, when RFC 6675's pipe is `pipe` segments (22
    /// outstanding, less the 3 SACKed, less the lost). Every ACK delivers
    /// one segment (one more SACKed: DeliveredData = 1 MSS, pipe − 1); each
    /// segment sent (a retransmission first, then new data) adds one to the
    /// pipe, and the sender sends whole segments while pipe + MSS <= pipe
    /// at the ACK + sndcnt. Returns the segments sent on each of `acks`
    /// ACKs, from the third duplicate on.
    fn rfc_example(pipe_at_entry: u32, acks: u32) -> (Vec<u32>, u32) {
        let mut prr = Prr::default();
        prr.start(20 * MSS);
        let mut pipe = pipe_at_entry;
        let mut sent = Vec::new();
        for i in 0..acks {
            if i > 0 {
                pipe -= 1;
            }
            let sndcnt = prr.on_ack(MSS, pipe * MSS, 10 * MSS, MSS);
            let n = sndcnt / MSS;
            for _ in 0..n {
                prr.on_sent(MSS);
            }
            pipe += n;
            sent.push(n);
        }
        (sent, pipe)
    }

    #[test]
    fn single_loss_sends_one_segment_per_two_acks() {
        // RFC 6937 §3.1, the single-loss example: PRR sends on every other
        // ACK (the retransmission on the third duplicate ACK, then new data
        // on the next but one, ...), with neither RFC 6675's half-RTT pause
        // nor its burst; once the pipe is down to ssthresh, one per ACK.
        let (s, pipe) = rfc_example(18, 22);
        assert_eq!(
            s,
            [1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 0, 1, 1, 1, 1, 1]
        );
        // The 17th ACK finds pipe = ssthresh (18 − 16 delivered + 8 sent):
        // PRR-SSRB sends nothing on it, one per ACK after.
        // The pipe came down to ssthresh and stays there.
        assert_eq!(pipe, 10);
    }

    #[test]
    fn burst_loss_slow_starts_back_to_ssthresh() {
        // RFC 6937 §3.1, the burst of 15 losses: pipe is 4 (19, 20 and the
        // two Limited Transmit segments), far below ssthresh. PRR-SSRB
        // sends DeliveredData + 1 MSS = 2 segments per ACK (slow start)
        // until the pipe is back at ssthresh, then one per ACK; never a
        // burst of ssthresh − pipe at once.
        let (s, pipe) = rfc_example(4, 10);
        assert_eq!(s, [2, 2, 2, 2, 2, 1, 1, 1, 1, 1]);
        assert_eq!(pipe, 10);
    }

    #[test]
    fn an_ack_delivering_nothing_sends_nothing_once_recovery_is_under_way() {
        let mut prr = Prr::default();
        prr.start(20 * MSS);
        // The first ACK forces the fast retransmit even at a ratio of 1/20.
        assert_eq!(prr.on_ack(0, 19 * MSS, MSS, MSS), MSS);
        prr.on_sent(MSS);
        assert_eq!(prr.on_ack(0, 19 * MSS, MSS, MSS), 0);
        // Below ssthresh, SSRB still allows one segment (the MSS term).
        assert_eq!(prr.on_ack(0, 5 * MSS, 10 * MSS, MSS), MSS);
    }
}
