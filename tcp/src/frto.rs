//! F-RTO: detecting a spurious retransmission timeout (RFC 5682), the
//! SACK-enhanced variant of §3.1, as Linux's `tcp_process_loss` runs it
//! (`tcp_frto` = 2).
//!
//! Why F-RTO and not Eifel (RFC 3522): Eifel needs timestamps on every
//! segment and tells only from the first ACK's echo; F-RTO needs neither
//! timestamps nor SACK (with SACK it also reads SACK blocks) and tests the
//! question that matters, whether data sent before the timeout and never
//! retransmitted still arrives. A delayed path (the ACKs of the originals
//! come late) is exactly that. Its response is the undo the D-SACK path
//! uses already (RFC 4015's restore of cwnd and ssthresh, as Linux's
//! `tcp_try_undo_loss`), so the congestion controller keeps its RTO and
//! undo events apart.
//!
//! The sequence, after the RTO retransmitted the segment at SND.UNA:
//!
//! 1. First ACK. It delivers never-retransmitted data: spurious (Linux
//!    FLAG_ORIG_SACK_ACKED). It covers `recover` (all that was outstanding
//!    at the timeout): over, nothing to tell. It advances SND.UNA: send up
//!    to two new segments instead of retransmitting (§3.1 step 2 b), if
//!    there are any and the peer's window allows; otherwise, and on a
//!    duplicate ACK, conventional recovery (step 2 a).
//! 2. Second ACK. It delivers never-retransmitted data (cumulatively or in
//!    a SACK block, step 3 b): spurious. Otherwise the loss was real:
//!    conventional recovery (step 3 a), go-back-N from SND.UNA skipping
//!    SACKed data.

use crate::seq::SeqNum;

/// Where F-RTO stands.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Not running.
    #[default]
    Off,
    /// The RTO retransmission went out; waiting for the first ACK.
    AwaitFirst,
    /// New data went out after the first ACK; waiting for the second.
    SentNew,
}

/// What the connection must do after an ACK during F-RTO.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Nothing changes.
    Continue,
    /// Step 2 b: move SND.NXT back to SND.MAX and send up to two new
    /// segments, whatever the congestion window.
    SendNew,
    /// The timeout was spurious: undo its window reduction and keep sending
    /// new data.
    Spurious,
    /// The loss was real (or nothing can be told): go back to SND.UNA and
    /// retransmit as after any RTO.
    Conventional,
}

/// The F-RTO state of one connection.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Frto {
    /// The phase.
    pub(crate) phase: Phase,
    /// RFC 5682 "recover": SND.MAX when the timeout fired.
    recover: SeqNum,
    /// Bytes of new data step 2 b may still send past the congestion window.
    pub(crate) quota: u32,
}

/// What the ACK told.
#[derive(Clone, Copy, Debug)]
pub(crate) struct FrtoAck {
    /// SEG.ACK.
    pub(crate) ack: SeqNum,
    /// SND.UNA advanced.
    pub(crate) advanced: bool,
    /// The lowest end of the never-retransmitted data newly delivered
    /// (acknowledged or SACKed).
    pub(crate) orig_end: Option<SeqNum>,
    /// Unsent data waits and the peer's window has room for it.
    pub(crate) can_send_new: bool,
}

impl Frto {
    /// The timeout fired with `snd_max` sent: start (RFC 5682 §3.1 step 1).
    /// Not on a repeated timeout (`first` false) nor during fast recovery
    /// (Linux: only a new loss episode, `tcp_enter_loss`).
    pub(crate) fn on_rto(&mut self, snd_max: SeqNum, first: bool) {
        *self = if first {
            Frto {
                phase: Phase::AwaitFirst,
                recover: snd_max,
                quota: 0,
            }
        } else {
            Frto::default()
        };
    }

    /// Whether F-RTO is running.
    pub(crate) fn active(&self) -> bool {
        self.phase != Phase::Off
    }

    /// An ACK arrived while F-RTO runs: its verdict (module doc).
    pub(crate) fn on_ack(&mut self, a: &FrtoAck, mss: u32) -> Verdict {
        let v = match self.phase {
            Phase::Off => return Verdict::Continue,
            // Step 3 b / Linux FLAG_ORIG_SACK_ACKED: in either phase.
            // Only data sent before the timeout counts (Linux: end_seq not
            // after high_seq): what step 2 b sent is new and proves nothing.
            _ if a.orig_end.is_some_and(|e| e <= self.recover) && a.ack < self.recover => {
                Verdict::Spurious
            }
            _ if a.ack >= self.recover => Verdict::Conventional,
            Phase::AwaitFirst if a.advanced && a.can_send_new => Verdict::SendNew,
            Phase::AwaitFirst => Verdict::Conventional,
            Phase::SentNew => Verdict::Conventional,
        };
        match v {
            Verdict::SendNew => {
                self.phase = Phase::SentNew;
                self.quota = 2 * mss;
            }
            Verdict::Continue => {}
            Verdict::Spurious | Verdict::Conventional => *self = Frto::default(),
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ack(n: u32, advanced: bool, orig: bool) -> FrtoAck {
        FrtoAck {
            ack: SeqNum(n),
            advanced,
            orig_end: orig.then_some(SeqNum(n)),
            can_send_new: true,
        }
    }

    #[test]
    fn spurious_when_the_second_ack_covers_new_data() {
        let mut f = Frto::default();
        f.on_rto(SeqNum(10_000), true);
        // The first ACK acknowledges the retransmission only.
        assert_eq!(f.on_ack(&ack(1000, true, false), 1000), Verdict::SendNew);
        assert_eq!(f.quota, 2000);
        // The second acknowledges data never retransmitted.
        assert_eq!(f.on_ack(&ack(3000, true, true), 1000), Verdict::Spurious);
        assert!(!f.active());
    }

    #[test]
    fn real_loss_when_the_second_ack_is_a_duplicate() {
        let mut f = Frto::default();
        f.on_rto(SeqNum(10_000), true);
        assert_eq!(f.on_ack(&ack(1000, true, false), 1000), Verdict::SendNew);
        assert_eq!(
            f.on_ack(&ack(1000, false, false), 1000),
            Verdict::Conventional
        );
    }

    #[test]
    fn a_duplicate_first_ack_or_a_repeated_timeout_is_conventional() {
        let mut f = Frto::default();
        f.on_rto(SeqNum(10_000), true);
        assert_eq!(f.on_ack(&ack(0, false, false), 1000), Verdict::Conventional);
        f.on_rto(SeqNum(10_000), false);
        assert!(!f.active());
        // The first ACK already shows an original delivered.
        f.on_rto(SeqNum(10_000), true);
        assert_eq!(f.on_ack(&ack(2000, true, true), 1000), Verdict::Spurious);
    }
}
