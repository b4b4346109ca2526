//! A connection's side of path MTU discovery (RFC 1191, RFC 8201) and of
//! ICMP errors (RFC 1122 §4.2.3.9, RFC 5461, RFC 5927).

use super::mtu_probe::MtuProbe;
use super::{ev, Conn, Ctx, State};
use crate::config::Config;
use crate::seq::SeqNum;
use crate::time::Instant;
use crate::wire::IcmpError;
use std::net::SocketAddr;

/// Per-connection path MTU and ICMP error state.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ConnIcmp {
    /// The path MTU this connection sends within (the device MTU until an
    /// ICMP message or the endpoint's cache says less).
    path_mtu: usize,
    /// When a lowered `path_mtu` goes back to the device MTU (RFC 1191
    /// §6.3: "the PMTU estimate should be increased" after a timer).
    expires: Option<Instant>,
    /// The last soft error (RFC 1122 §4.2.3.9, RFC 5461 §4): kept for the
    /// report when the connection times out; cleared when data is
    /// acknowledged (Linux: `sk_err_soft`).
    pub(crate) soft_error: Option<IcmpError>,
    /// The hard error that ended the connection attempt (Linux: `sk_err`).
    pub(crate) error: Option<IcmpError>,
    /// Packetization-layer path MTU discovery (see `conn/mtu_probe.rs`).
    pub(super) mtup: MtuProbe,
    /// IPv4: an ICMP message reported a path MTU below the floor, so the
    /// path MTU is the floor and "locked", and segments go without DF
    /// for a router on that narrow path to fragment them (Linux:
    /// `__ip_rt_update_pmtu` locks the route's MTU, `ip_dont_fragment`
    /// then clears DF).
    df_off: bool,
    /// The IPv4 identification of the next segment sent without DF (RFC
    /// 6864 §4.1: a datagram that may be fragmented needs an ID unique
    /// within the MDL for its addresses and protocol).
    ip_id: u16,
}

impl ConnIcmp {
    pub(crate) fn new(cfg: &Config) -> ConnIcmp {
        ConnIcmp {
            path_mtu: cfg.mtu,
            expires: None,
            soft_error: None,
            error: None,
            mtup: MtuProbe::default(),
            df_off: false,
            ip_id: 0,
        }
    }

    /// The largest MSS the path takes: path MTU less the IP and TCP
    /// headers. While MTU probing is on, the probing search's floor caps it
    /// (Linux `tcp_sync_mss`: `min(mss, tcp_mtu_to_mss(search_low))`).
    pub(crate) fn path_mss(&self, local: SocketAddr) -> u16 {
        let iph = if local.is_ipv6() { 40 } else { 20 };
        let mtu = if self.mtup.enabled {
            self.path_mtu.min(self.mtup.search_low)
        } else {
            self.path_mtu
        };
        mtu.saturating_sub(iph + 20).min(65535) as u16
    }

    /// The path MTU in use.
    pub(crate) fn path_mtu(&self) -> usize {
        self.path_mtu
    }
}

impl Conn {
    /// RFC 5927 §4.1 (and Linux tcp_v4_err, tcp_v6_err): an ICMP error is
    /// believed only when the sequence number of the segment it quotes lies
    /// within SND.UNA =< SEG.SEQ < SND.NXT (our SND.NXT rewinds on an RTO:
    /// the highest sequence number sent is the bound). In TIME-WAIT nothing
    /// is in flight: every error is ignored (Linux ignores them there too).
    pub(crate) fn icmp_seq_ok(&self, seq: SeqNum) -> bool {
        self.state != State::TimeWait && self.snd_una <= seq && seq < self.snd_max
    }

    /// Takes the endpoint's cached path MTU for a new connection (Linux:
    /// the route's MTU at connect/accept time).
    pub(crate) fn set_path_mtu(
        &mut self,
        cfg: &Config,
        mtu: usize,
        expires: Instant,
        locked: bool,
    ) {
        self.pmtu_lock(locked);
        if mtu < self.icmp.path_mtu {
            self.icmp.path_mtu = mtu;
            self.icmp.expires = Some(expires);
            self.update_mss(cfg);
        }
    }

    /// The path MTU to the peer fell to `mtu` (until `expires`): lower the
    /// MSS at once and resend what was sent too large, as Linux's
    /// tcp_v4_mtu_reduced / tcp_v6_mtu_reduced (tcp_sync_mss, then
    /// tcp_simple_retransmit). The data went missing because it did not
    /// fit, not because of congestion: cwnd and ssthresh stay (Linux: "Don't
    /// muck with the congestion window here"; our cwnd counts bytes, so its
    /// worth in segments grows as the segments shrink, where Linux's, in
    /// segments, shrinks in bytes), no RTO is waited for, and no backoff.
    /// Returns whether the MSS fell.
    pub(crate) fn pmtu_reduced(
        &mut self,
        cx: &mut Ctx<'_>,
        mtu: usize,
        expires: Instant,
        locked: bool,
    ) -> bool {
        self.pmtu_lock(locked);
        if mtu >= self.icmp.path_mtu {
            return false;
        }
        self.icmp.path_mtu = mtu;
        self.icmp.expires = Some(expires);
        self.mtu_probe_pmtu_lowered(mtu);
        let old = self.mss;
        self.update_mss(cx.cfg);
        if self.mss >= old {
            return false;
        }
        cx.stats.icmp.mss_lowered += 1;
        let synchronized = !matches!(
            self.state,
            State::Closed | State::Listen | State::SynSent | State::SynReceived
        );
        if synchronized && self.snd_max > self.snd_una {
            // Every segment in flight was cut at the old MSS: go back to
            // SND.UNA and send it all again at the new one (what the peer
            // SACKed is skipped by dispatch). Karn: no RTT sample from it.
            self.snd_nxt = self.snd_una;
            self.high_rxt = self.snd_una;
            self.rtt_probe = None;
            self.rexmit_one = false;
        }
        true
    }

    /// The learned path MTU expired (RFC 1191 §6.3, RFC 8201 §4): try the
    /// device MTU again; a router on a path still narrow says so again.
    /// Called before each synchronized dispatch, which is also when MTU
    /// probing from the start begins.
    pub(crate) fn pmtu_expiry(&mut self, cx: &mut Ctx<'_>) {
        self.mtu_probe_start(cx);
        if self.icmp.expires.is_some_and(|t| t <= cx.now) {
            self.icmp.expires = None;
            self.icmp.df_off = false;
            self.icmp.path_mtu = cx.cfg.mtu;
            self.update_mss(cx.cfg);
        }
    }

    /// Records that the path MTU is locked at the IPv4 floor (see
    /// `ConnIcmp::df_off`). The first ID comes from the ISS, so that two
    /// connections between the same addresses seldom share IDs.
    fn pmtu_lock(&mut self, locked: bool) {
        if locked && !self.icmp.df_off && self.local.is_ipv4() {
            self.icmp.df_off = true;
            self.icmp.ip_id = (self.iss.0 >> 16) as u16 ^ self.iss.0 as u16;
        }
    }

    /// A segment of `len` data bytes was written into `pkt`: on a locked
    /// path (IPv4), clear DF and give it the next identification; a
    /// segment the device cuts into several takes one ID per piece (as the
    /// kernel's GSO numbers them). The header checksum is redone.
    pub(super) fn pmtu_mark(&mut self, pkt: &mut [u8], len: usize) {
        if !self.icmp.df_off || pkt.len() < 20 || pkt[0] >> 4 != 4 {
            return;
        }
        let id = self.icmp.ip_id;
        let pieces = len.div_ceil(usize::from(self.mss.max(1))).max(1);
        self.icmp.ip_id = id.wrapping_add(pieces as u16);
        pkt[4..6].copy_from_slice(&id.to_be_bytes());
        pkt[6] &= !0x40;
        pkt[10] = 0;
        pkt[11] = 0;
        let ihl = usize::from(pkt[0] & 0x0f) * 4;
        let c =
            crate::wire::checksum_fold(crate::wire::checksum_sum(0, &pkt[..ihl.min(pkt.len())]));
        pkt[10..12].copy_from_slice(&c.to_be_bytes());
    }

    /// An ICMP error (already validated) reached the connection. RFC 1122
    /// §4.2.3.9 and RFC 5461 §4: in a synchronized state it is a soft error,
    /// kept for the report if the connection later times out. In SYN-SENT,
    /// as Linux (tcp_v4_err / tcp_v6_err, `case TCP_SYN_SENT`), every
    /// error ends the attempt: the application sees
    /// [`crate::Event::Unreachable`] with it, no RST is sent. In
    /// SYN-RECEIVED only the hard ones (RFC 1122 §4.2.3.9: protocol and
    /// port unreachable; Linux's "fatal" ones in tcp_req_err, which include
    /// administratively prohibited and parameter problem) drop the
    /// half-open connection; the rest are soft. Returns whether the
    /// connection ended.
    pub(crate) fn icmp_error(&mut self, cx: &mut Ctx<'_>, e: IcmpError) -> bool {
        let hard = matches!(
            e,
            IcmpError::ProtocolUnreachable
                | IcmpError::PortUnreachable
                | IcmpError::AdminProhibited
                | IcmpError::ParameterProblem
        );
        match self.state {
            State::SynSent => self.icmp_abort(cx, e),
            State::SynReceived if hard => self.icmp_abort(cx, e),
            _ => {
                self.icmp.soft_error = Some(e);
                cx.stats.icmp.soft_errors += 1;
                false
            }
        }
    }

    fn icmp_abort(&mut self, cx: &mut Ctx<'_>, e: IcmpError) -> bool {
        self.icmp.error = Some(e);
        cx.stats.icmp.aborted += 1;
        self.die(ev::UNREACHABLE, cx);
        true
    }
}
