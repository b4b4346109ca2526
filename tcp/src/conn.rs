//! The per-connection state machine (RFC 9293).

use core::fmt;

/// The connection states of RFC 9293 §3.3.2.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum State {
    /// No connection.
    Closed,
    /// Waiting for a connection request.
    Listen,
    /// SYN sent, waiting for a matching SYN.
    SynSent,
    /// SYN received and SYN sent, waiting for the acknowledgment of ours.
    SynReceived,
    /// Open; data flows both ways.
    Established,
    /// We closed; waiting for the peer's FIN or the ACK of ours.
    FinWait1,
    /// Our FIN is acknowledged; waiting for the peer's FIN.
    FinWait2,
    /// The peer closed; waiting for the application to close.
    CloseWait,
    /// Both closed at once; waiting for the ACK of our FIN.
    Closing,
    /// The peer closed, then we did; waiting for the ACK of our FIN.
    LastAck,
    /// Waiting out 2·MSL so delayed segments die.
    TimeWait,
}

impl State {
    /// Every state, in RFC order.
    pub const ALL: [State; 11] = [
        State::Closed,
        State::Listen,
        State::SynSent,
        State::SynReceived,
        State::Established,
        State::FinWait1,
        State::FinWait2,
        State::CloseWait,
        State::Closing,
        State::LastAck,
        State::TimeWait,
    ];

    /// The name as RFC 9293 spells it.
    pub fn name(self) -> &'static str {
        match self {
            State::Closed => "CLOSED",
            State::Listen => "LISTEN",
            State::SynSent => "SYN-SENT",
            State::SynReceived => "SYN-RECEIVED",
            State::Established => "ESTABLISHED",
            State::FinWait1 => "FIN-WAIT-1",
            State::FinWait2 => "FIN-WAIT-2",
            State::CloseWait => "CLOSE-WAIT",
            State::Closing => "CLOSING",
            State::LastAck => "LAST-ACK",
            State::TimeWait => "TIME-WAIT",
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

use crate::buffer::{BufPool, Ranges, RingBuf, MIN_CHUNK};
use crate::config::Config;
use crate::congestion::{AckInfo, Cc, CongestionControl};
use crate::frto::Frto;
use crate::prr::Prr;
use crate::rack::Rack;
use crate::rtt::RttEstimator;
use crate::seq::SeqNum;
use crate::stats::Stats;
use crate::time::{Duration, Instant};
use crate::wire::{
    emit_tcp_with, tcp_payload_offset, SackBlocks, TcpFlags, TcpOptions, TcpRepr, TcpSegment,
};
use std::net::SocketAddr;

mod autotune;
mod loss;
mod mtu_probe;
mod pmtu;

/// Event bits a connection raises for the application (see [`crate::Event`]).
pub(crate) mod ev {
    pub(crate) const CONNECTED: u8 = 1;
    pub(crate) const READABLE: u8 = 2;
    pub(crate) const PEER_CLOSED: u8 = 4;
    pub(crate) const WRITABLE: u8 = 8;
    pub(crate) const RESET: u8 = 16;
    pub(crate) const TIMED_OUT: u8 = 32;
    pub(crate) const CLOSED: u8 = 64;
    /// An ICMP error ended the connection attempt (see `Conn::error`).
    pub(crate) const UNREACHABLE: u8 = 128;
}

/// The connection's timers, indexing [`Conn::timers`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Timer {
    /// Retransmission (RFC 6298), also for SYN and SYN-ACK.
    Rexmit = 0,
    /// Delayed ACK (RFC 1122 §4.2.3.2).
    DelAck = 1,
    /// Zero-window probe (RFC 9293 §3.8.6.1).
    Persist = 2,
    /// Keep-alive (RFC 9293 §3.8.4).
    Keepalive = 3,
    /// 2·MSL in TIME-WAIT (RFC 9293 §3.4.2).
    TimeWait = 4,
    /// RACK's reordering-window timer (RFC 8985 §6.2 step 5).
    Reo = 5,
    /// The tail loss probe timeout, PTO (RFC 8985 §7.2).
    Tlp = 6,
}
const NTIMERS: usize = 7;

/// Everything a connection needs from its endpoint for one call.
pub(crate) struct Ctx<'a> {
    pub(crate) cfg: &'a Config,
    pub(crate) pool: &'a mut BufPool,
    pub(crate) stats: &'a mut Stats,
    pub(crate) now: Instant,
}

/// Where an acknowledgment number falls against the send sequence space
/// (RFC 9293 §3.10.7.4 "fifth, check the ACK field", RFC 5961 §5.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AckClass {
    /// SEG.ACK < SND.UNA - MAX.SND.WND: too old to be believed.
    TooOld,
    /// SND.UNA - MAX.SND.WND =< SEG.ACK =< SND.UNA: nothing new.
    Duplicate,
    /// SND.UNA < SEG.ACK =< SND.NXT: acknowledges new data.
    New,
    /// SEG.ACK > SND.NXT: acknowledges something not yet sent.
    Unsent,
}

/// What processing one segment asks the endpoint to do besides updating
/// the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Reply {
    /// Nothing more.
    None,
    /// Send a reset `<SEQ=seq><CTL=RST>` (and ACK=`ack` if given), the
    /// connection itself being unaffected (RFC 9293 §3.10.7.3, §3.10.7.4).
    Rst { seq: SeqNum, ack: Option<SeqNum> },
    /// Send a challenge ACK, subject to the rate limit (RFC 5961 §7).
    ChallengeAck,
    /// A passive connection in SYN-RECEIVED got the ACK of its SYN: move it
    /// to the accept queue.
    Established,
    /// A SYN for this 4-tuple in TIME-WAIT that may start a new
    /// connection (RFC 9293 §3.10.7.4 note, RFC 6191 with timestamps): if a
    /// listener has the port, free this entry and hand it the SYN; if not,
    /// TIME-WAIT stays and the SYN is answered with an ACK.
    Reincarnate,
}

/// Negotiated options of a connection.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Negotiated {
    /// The peer's MSS (from its SYN; RFC 9293 §3.7.1 default 536/1220).
    pub(crate) peer_mss: u16,
    /// Shift to apply to the peer's window field; `None` without scaling.
    pub(crate) snd_wscale: Option<u8>,
    /// Our shift; only meaningful when scaling is on.
    pub(crate) rcv_wscale: u8,
    /// Timestamps on (RFC 7323 §3.2: both SYNs carried the option).
    pub(crate) ts: bool,
    /// SACK permitted both ways (RFC 2018 §2).
    pub(crate) sack: bool,
}

/// What a loss-recovery episode (a fast retransmit or an RTO) needs to be
/// undone when every retransmission in it proves needless: the peer reports
/// each as a duplicate in a D-SACK block (RFC 3708 §3 detection, RFC 4015
/// §3.2-style response). The ranges keep their storage between episodes.
#[derive(Debug, Default)]
struct Undo {
    /// An episode is open for undo.
    active: bool,
    /// cwnd before the episode's cut.
    prior_cwnd: u32,
    /// ssthresh before the episode's cut.
    prior_ssthresh: u32,
    /// SND.MAX when the (last nested) episode began: data below it is the
    /// episode's.
    end: SeqNum,
    /// Ranges retransmitted in the episode.
    rexmit: Ranges,
    /// Ranges the peer reported received twice.
    dsacked: Ranges,
    /// The episode is a fast recovery (not an RTO, which F-RTO judges).
    fast: bool,
    /// Our TSval on the episode's first retransmission (RFC 3522 §2's
    /// RetransmitTS; Linux `retrans_stamp`), once one went out.
    rexmit_tsval: Option<u32>,
}

/// One TCP connection: the transmission control block of RFC 9293 §3.3.1.
///
/// ```text
/// Send sequence space (RFC 9293 §3.3.1, figure 3):
///
///            1         2          3          4
///       ----------|----------|----------|----------
///              SND.UNA    SND.NXT    SND.UNA
///                                   +SND.WND
/// 1 - old sequence numbers that have been acknowledged
/// 2 - sequence numbers of unacknowledged data
/// 3 - sequence numbers allowed for new data transmission
/// 4 - future sequence numbers that are not yet allowed
///
/// Receive sequence space (figure 4):
///
///                1          2          3
///            ----------|----------|----------
///                   RCV.NXT    RCV.NXT
///                             +RCV.WND
/// 1 - old sequence numbers that have been acknowledged
/// 2 - sequence numbers allowed for new reception
/// 3 - future sequence numbers that are not yet allowed
/// ```
#[derive(Debug)]
pub(crate) struct Conn {
    /// The RFC 9293 state.
    pub(crate) state: State,
    /// Our address and port.
    pub(crate) local: SocketAddr,
    /// The peer's address and port.
    pub(crate) remote: SocketAddr,
    /// Whether we sent the first SYN (active open).
    pub(crate) active: bool,

    /// ISS: our initial sequence number.
    iss: SeqNum,
    /// SND.UNA: the oldest unacknowledged sequence number.
    snd_una: SeqNum,
    /// SND.NXT: the next sequence number to send (rewinds to SND.UNA on RTO).
    snd_nxt: SeqNum,
    /// The highest sequence number ever sent, plus one.
    snd_max: SeqNum,
    /// SND.WND: the peer's window, scaled, in bytes.
    snd_wnd: u32,
    /// MAX.SND.WND: the largest window the peer has offered (RFC 5961 §5.2).
    max_snd_wnd: u32,
    /// SND.WL1: segment sequence number used for the last window update.
    snd_wl1: SeqNum,
    /// SND.WL2: segment acknowledgment number used for the last window update.
    snd_wl2: SeqNum,
    /// Bytes queued by the application, from the first unacknowledged data
    /// byte (SND.UNA, or ISS+1 before the SYN is acknowledged).
    send_buf: RingBuf,
    /// The application closed its side: a FIN follows the queued data.
    fin_queued: bool,
    /// The sequence number of our FIN, fixed when the application closes
    /// (no data can be queued after it).
    fin_out: Option<SeqNum>,

    /// IRS: the peer's initial sequence number.
    irs: SeqNum,
    /// RCV.NXT: the next sequence number expected.
    rcv_nxt: SeqNum,
    /// Sequence number of the first byte the application has not released
    /// (the start of `recv_buf`).
    rcv_released: SeqNum,
    /// Sequence number of the first byte not yet handed to the application.
    rcv_read: SeqNum,
    /// The right edge of the window we last advertised (RCV.NXT + RCV.WND then).
    rcv_adv: SeqNum,
    /// The right edge the peer has surely taken: advertised on a segment it
    /// updates its send window from (RFC 9293 §3.10.7.4: SND.WL1 < SEG.SEQ).
    /// A retransmission (SEG.SEQ below SND.MAX) may not qualify, so an
    /// opening it carried is repeated in a pure ACK.
    rcv_told: SeqNum,
    /// Received bytes from `rcv_released`, out-of-order ones beyond RCV.NXT.
    recv_buf: RingBuf,
    /// Out-of-order ranges above RCV.NXT.
    ooo: Ranges,
    /// The range holding the most recent out-of-order segment (first SACK
    /// block, RFC 2018 §4).
    last_ooo: Option<(SeqNum, SeqNum)>,
    /// A duplicate segment's range to report as the first SACK block of
    /// the next ACK (D-SACK, RFC 2883 §4), cleared once sent.
    dsack: Option<(SeqNum, SeqNum)>,
    /// The sequence number of the peer's FIN, once seen (maybe out of order).
    fin_seq: Option<SeqNum>,
    /// The peer's FIN has been received in order.
    fin_rcvd: bool,

    /// Negotiated options.
    pub(crate) opt: Negotiated,
    /// Effective send MSS: payload bytes per full segment, options excluded.
    mss: u16,
    /// Path MTU discovery state and ICMP errors (see `conn/pmtu.rs`).
    pub(crate) icmp: pmtu::ConnIcmp,
    /// Buffer auto-tuning (see `conn/autotune.rs`).
    tune: autotune::Autotune,
    /// TS.Recent (RFC 7323 §4.3) and when it was set.
    ts_recent: u32,
    ts_recent_time: Instant,
    /// Offset added to our timestamp clock.
    ts_offset: u32,
    /// RCV.NXT when we last sent an ACK (Last.ACK.sent, RFC 7323 §4.3).
    last_ack_sent: SeqNum,

    rtt: RttEstimator,
    /// A segment being timed for an RTT sample when timestamps are off:
    /// its end sequence number and send time (Karn's rule: never a
    /// retransmitted one).
    rtt_probe: Option<(SeqNum, Instant)>,
    /// The congestion controller ([`Config::congestion`]).
    cc: Cc,
    /// PRR's state in the current fast recovery (RFC 6937).
    prr: Prr,
    /// The window during PRR-paced recovery: RFC 6675 pipe at the last ACK
    /// plus PRR's sndcnt (RFC 6937 §3, "cwnd = pipe + sndcnt").
    prr_cwnd: u32,
    /// Without a SACK scoreboard, what PRR still lets out since the last
    /// ACK: its sndcnt less what was sent since (the retransmission of
    /// SND.UNA included, which the estimate of the pipe cannot see).
    prr_quota: u32,
    /// Without SACK: bytes the duplicate ACKs since SND.UNA last advanced
    /// stand for (one SMSS each, RFC 6937 §3's estimate of DeliveredData),
    /// taken off the next cumulative advance so no byte counts twice.
    dup_delivered: u32,
    /// Consecutive duplicate ACKs (RFC 5681 §2).
    dup_acks: u32,
    /// In NewReno fast recovery until `recover` is acknowledged (RFC 6582).
    in_recovery: bool,
    /// RFC 6582 "recover": the highest sequence number sent when recovery began.
    recover: SeqNum,
    /// Send one segment from SND.UNA at the next dispatch (fast retransmit).
    rexmit_one: bool,
    /// The undo record of the current recovery episode.
    undo: Undo,
    /// Which loss detection runs (RACK-TLP, F-RTO; see `conn/loss.rs`).
    loss: loss::LossModes,
    /// The log of sent segments and the RACK-TLP state (RFC 8985).
    rack: Rack,
    /// F-RTO after an RTO (RFC 5682).
    frto: Frto,
    /// Send a tail loss probe at the next dispatch (RFC 8985 §7.3).
    tlp_now: bool,
    /// The SACK scoreboard: ranges above SND.UNA the peer reported holding
    /// (RFC 2018 §3, RFC 6675 §3).
    sacked: Ranges,
    /// RFC 6675 HighRxt: the highest sequence number retransmitted in the
    /// current SACK-based recovery.
    high_rxt: SeqNum,
    /// Consecutive RTO expirations (backoff exponent).
    backoffs: u32,
    /// Consecutive persist probes (backoff exponent).
    persist_backoffs: u32,
    /// Send one byte into a zero window at the next dispatch.
    probe_now: bool,
    /// Keep-alive probes sent without an answer.
    keepalive_probes: u32,
    /// Send a keep-alive probe at the next dispatch.
    keepalive_now: bool,
    /// Last time the send side made progress (SND.UNA advanced or the
    /// queue went from empty to non-empty) — the user timeout's reference.
    progress_time: Instant,
    /// Last time a segment arrived (keep-alive's reference).
    last_rcv_time: Instant,
    /// Last time we sent data (for the RFC 5681 §4.1 idle restart).
    last_send_time: Instant,

    /// Send an ACK at the next dispatch.
    ack_now: bool,
    /// When we last answered an out-of-window segment without data (none
    /// yet: the first one is always answered, whatever the clock says).
    last_oow_ack: Option<Instant>,
    /// Bytes received in order since the last ACK we sent.
    unacked_bytes: u32,
    /// Nagle's algorithm disabled.
    pub(crate) nodelay: bool,
    /// The end of the last short (sub-MSS) segment sent: Nagle holds a
    /// short segment only while this one is unacknowledged (Minshall's
    /// variant, Linux's `snd_sml`).
    snd_sml: SeqNum,
    /// The application saw a short `send`; raise WRITABLE when space opens.
    want_writable: bool,

    timers: [Option<Instant>; NTIMERS],
    /// Pending application events (bits of [`ev`]).
    pub(crate) ev: u8,
    /// Segments retransmitted.
    pub(crate) retransmits: u64,
    /// See [`Conn::last_tx_segment`].
    last_tx_segment: u16,
    /// The connection was reset or timed out (recv/send report it).
    pub(crate) reset: bool,
    /// The last dispatch had a segment to send but the caller's buffer was
    /// too short for it: the segment is still pending.
    pub(crate) short_buffer: bool,
}

impl Conn {
    fn blank(
        cx: &Ctx<'_>,
        local: SocketAddr,
        remote: SocketAddr,
        iss: SeqNum,
        ts_offset: u32,
        active: bool,
    ) -> Conn {
        let v6 = local.is_ipv6();
        let default_mss = if v6 { 1220 } else { 536 };
        Conn {
            state: State::Closed,
            local,
            remote,
            active,
            iss,
            snd_una: iss,
            snd_nxt: iss,
            snd_max: iss,
            snd_wnd: 0,
            max_snd_wnd: 0,
            snd_wl1: SeqNum(0),
            snd_wl2: iss,
            send_buf: RingBuf::default(),
            fin_queued: false,
            fin_out: None,
            irs: SeqNum(0),
            rcv_nxt: SeqNum(0),
            rcv_released: SeqNum(0),
            rcv_read: SeqNum(0),
            rcv_adv: SeqNum(0),
            rcv_told: SeqNum(0),
            recv_buf: RingBuf::default(),
            ooo: Ranges::default(),
            last_ooo: None,
            dsack: None,
            fin_seq: None,
            fin_rcvd: false,
            opt: Negotiated {
                peer_mss: default_mss,
                ..Default::default()
            },
            mss: default_mss,
            icmp: pmtu::ConnIcmp::new(cx.cfg),
            tune: autotune::Autotune::new(cx.cfg, cx.now),
            ts_recent: 0,
            ts_recent_time: cx.now,
            ts_offset,
            last_ack_sent: SeqNum(0),
            rtt: RttEstimator::new(cx.cfg.initial_rto, cx.cfg.min_rto, cx.cfg.max_rto),
            rtt_probe: None,
            cc: Cc::new(
                cx.cfg.congestion,
                cx.cfg.initial_window,
                u32::from(default_mss),
                cx.cfg.hystart,
            ),
            prr: Prr::default(),
            prr_cwnd: 0,
            prr_quota: 0,
            dup_delivered: 0,
            dup_acks: 0,
            in_recovery: false,
            recover: iss - 1,
            rexmit_one: false,
            undo: Undo::default(),
            loss: loss::LossModes::default(),
            rack: Rack::default(),
            frto: Frto::default(),
            tlp_now: false,
            sacked: Ranges::default(),
            high_rxt: iss,
            backoffs: 0,
            persist_backoffs: 0,
            probe_now: false,
            keepalive_probes: 0,
            keepalive_now: false,
            progress_time: cx.now,
            last_rcv_time: cx.now,
            last_send_time: cx.now,
            ack_now: false,
            last_oow_ack: None,
            unacked_bytes: 0,
            nodelay: !cx.cfg.nagle,
            snd_sml: iss,
            want_writable: false,
            timers: [None; NTIMERS],
            ev: 0,
            retransmits: 0,
            last_tx_segment: 0,
            reset: false,
            short_buffer: false,
        }
    }

    /// An active open (RFC 9293 §3.10.1): SYN-SENT, the SYN goes out at the
    /// next dispatch.
    pub(crate) fn connect(
        cx: &Ctx<'_>,
        local: SocketAddr,
        remote: SocketAddr,
        iss: SeqNum,
        ts_offset: u32,
    ) -> Conn {
        let mut c = Conn::blank(cx, local, remote, iss, ts_offset, true);
        c.state = State::SynSent;
        c.opt.rcv_wscale = cx.cfg.recv_wscale();
        c
    }

    /// A passive open from a SYN to a listener (RFC 9293 §3.10.7.2):
    /// SYN-RECEIVED, the SYN-ACK goes out at the next dispatch.
    pub(crate) fn accept_syn(
        cx: &Ctx<'_>,
        local: SocketAddr,
        remote: SocketAddr,
        iss: SeqNum,
        ts_offset: u32,
        syn: &TcpSegment<'_>,
    ) -> Conn {
        let mut c = Conn::blank(cx, local, remote, iss, ts_offset, false);
        c.state = State::SynReceived;
        c.init_receive(syn.seq);
        c.negotiate(cx.cfg, &syn.options);
        // RFC 7323 §2.2: the window field of a SYN is never scaled.
        c.set_snd_wnd(u32::from(syn.window));
        c.snd_wl1 = syn.seq;
        c.snd_wl2 = iss;
        c
    }

    /// A connection restored from a valid SYN cookie: ESTABLISHED at once.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn from_cookie(
        cx: &Ctx<'_>,
        local: SocketAddr,
        remote: SocketAddr,
        iss: SeqNum,
        ts_offset: u32,
        ack: &TcpSegment<'_>,
        peer_mss: u16,
        wscale: Option<u8>,
        sack: bool,
    ) -> Conn {
        let mut c = Conn::blank(cx, local, remote, iss, ts_offset, false);
        c.state = State::Established;
        c.init_receive(ack.seq - 1);
        let ts = ack.options.timestamps.is_some() && cx.cfg.timestamps;
        c.opt = Negotiated {
            peer_mss,
            snd_wscale: if ts && cx.cfg.window_scaling {
                wscale
            } else {
                None
            },
            rcv_wscale: if ts && wscale.is_some() {
                cx.cfg.recv_wscale()
            } else {
                0
            },
            ts,
            sack: ts && sack && cx.cfg.sack,
        };
        if let Some((val, _)) = ack.options.timestamps {
            c.ts_recent = val;
            c.ts_recent_time = cx.now;
        }
        c.update_mss(cx.cfg);
        c.snd_una = iss + 1;
        c.snd_nxt = iss + 1;
        c.snd_max = iss + 1;
        c.set_snd_wnd(u32::from(ack.window) << c.opt.snd_wscale.unwrap_or(0));
        c.snd_wl1 = ack.seq;
        c.snd_wl2 = ack.ack;
        c.cc = Cc::new(
            cx.cfg.congestion,
            cx.cfg.initial_window,
            u32::from(c.mss),
            cx.cfg.hystart,
        );
        c.rcv_adv = c.rcv_nxt + c.recv_window(cx.cfg, cx.pool);
        c.rcv_told = c.rcv_adv;
        // Born ESTABLISHED: start keep-alive as the handshake path does.
        if let Some(k) = cx.cfg.keepalive {
            c.set_timer(Timer::Keepalive, cx.now + k.idle);
        }
        c
    }

    fn init_receive(&mut self, irs: SeqNum) {
        self.irs = irs;
        self.rcv_nxt = irs + 1;
        self.rcv_released = irs + 1;
        self.rcv_read = irs + 1;
        self.rcv_adv = irs + 1;
        self.rcv_told = irs + 1;
        self.last_ack_sent = irs + 1;
    }

    /// Option negotiation from the peer's SYN (or SYN-ACK).
    fn negotiate(&mut self, cfg: &Config, o: &TcpOptions) {
        // RFC 9293 §3.7.1: without the option, 536 (IPv4) or 1220 (IPv6).
        if let Some(m) = o.mss {
            // RFC 9293 §3.7.1 / Linux: ignore absurdly small values (clamp to 88).
            self.opt.peer_mss = m.max(88);
        }
        // RFC 7323 §2.2: scaling only if both sides sent the option.
        if cfg.window_scaling {
            if let Some(ws) = o.window_scale {
                // RFC 7323 §2.3: a shift above 14 is used as 14.
                self.opt.snd_wscale = Some(ws.min(14));
                self.opt.rcv_wscale = cfg.recv_wscale();
            } else {
                self.opt.snd_wscale = None;
                self.opt.rcv_wscale = 0;
            }
        } else {
            self.opt.snd_wscale = None;
            self.opt.rcv_wscale = 0;
        }
        self.opt.ts = cfg.timestamps && o.timestamps.is_some();
        if let (true, Some((val, _))) = (self.opt.ts, o.timestamps) {
            self.ts_recent = val;
        }
        self.opt.sack = cfg.sack && o.sack_permitted;
        self.update_mss(cfg);
        self.cc = Cc::new(
            cfg.congestion,
            cfg.initial_window,
            u32::from(self.mss),
            cfg.hystart,
        );
        self.set_loss_modes(cfg);
    }

    /// Effective send MSS: the smaller of the peer's MSS and ours, less the
    /// timestamp option that rides on every segment (RFC 9293 §3.7.1, RFC 6691).
    fn update_mss(&mut self, cfg: &Config) {
        let ours = cfg
            .local_mss(self.local.is_ipv6())
            .min(self.icmp.path_mss(self.local));
        let ts = if self.opt.ts { 12 } else { 0 };
        self.mss = self.opt.peer_mss.min(ours).saturating_sub(ts).max(64);
    }

    fn set_snd_wnd(&mut self, w: u32) {
        self.snd_wnd = w;
        self.max_snd_wnd = self.max_snd_wnd.max(w);
    }

    // ----- getters -------------------------------------------------------

    /// Effective send MSS.
    pub(crate) fn mss(&self) -> u16 {
        self.mss
    }
    pub(crate) fn srtt(&self) -> Option<Duration> {
        self.rtt.srtt()
    }
    pub(crate) fn rto(&self) -> Duration {
        self.rtt.rto(self.backoffs)
    }
    /// Consecutive retransmission timeouts (RFC 6298 §5.5 backoffs).
    pub(crate) fn rto_backoffs(&self) -> u32 {
        self.backoffs
    }
    /// Consecutive zero-window probes without the window opening.
    pub(crate) fn persist_backoffs(&self) -> u32 {
        self.persist_backoffs
    }
    pub(crate) fn cwnd(&self) -> u32 {
        self.cc.cwnd()
    }
    pub(crate) fn ssthresh(&self) -> u32 {
        self.cc.ssthresh()
    }
    pub(crate) fn snd_wnd(&self) -> u32 {
        self.snd_wnd
    }
    pub(crate) fn in_flight(&self) -> u32 {
        self.snd_max.since(self.snd_una)
    }
    pub(crate) fn send_buffered(&self) -> usize {
        self.send_buf.len()
    }
    pub(crate) fn recv_buffered(&self) -> usize {
        self.rcv_nxt.since(self.rcv_released) as usize
    }

    /// The receive buffer this connection may fill now: its (auto-tuned)
    /// ceiling, or, under memory pressure, only the storage it holds already
    /// (at least the guaranteed [`MIN_CHUNK`]), so that new windows promise
    /// no memory the endpoint may not have (Linux clamps rcv_ssthresh under
    /// pressure in tcp_adjust_rcv_ssthresh / tcp_clamp_window).
    fn rcv_allowance(&self, _cfg: &Config, pool: &BufPool) -> usize {
        if pool.under_pressure() {
            self.tune
                .rcvbuf
                .min(self.recv_buf.capacity().max(MIN_CHUNK))
        } else {
            self.tune.rcvbuf
        }
    }

    /// The window we can offer now: buffer space above RCV.NXT.
    pub(crate) fn recv_window(&self, cfg: &Config, pool: &BufPool) -> u32 {
        let used = self.rcv_nxt.since(self.rcv_released) as usize;
        let free = self.rcv_allowance(cfg, pool).saturating_sub(used);
        // The largest window the field can say with our shift (RFC 7323 §2.3).
        let max = 65535usize << self.opt.rcv_wscale;
        free.min(max) as u32
    }

    /// What is left of the window we last advertised: RCV.ADV - RCV.NXT,
    /// or 0 once RCV.NXT has reached or passed that edge (a bare FIN taken
    /// into a zero window, or data taken into space the application freed
    /// since the last window update) — where the plain difference would
    /// wrap to a window of nearly 4 GiB.
    fn advertised_window(&self) -> u32 {
        if self.rcv_adv > self.rcv_nxt {
            self.rcv_adv.since(self.rcv_nxt)
        } else {
            0
        }
    }

    /// The sequence number of the first byte in the send buffer.
    fn data_start(&self) -> SeqNum {
        if self.snd_una == self.iss {
            self.iss + 1
        } else {
            self.snd_una
        }
    }

    /// The sequence number our FIN has (or will have), once the application closed.
    fn fin_seq_out(&self) -> Option<SeqNum> {
        self.fin_out
    }

    /// The sequence number for a segment that carries no data (ACK, RST):
    /// the highest sent, unless that lies beyond the peer's window — as
    /// after a zero-window probe — where the peer would reject it (RFC 9293
    /// §3.10.7.4); then the window's right edge (Linux: tcp_acceptable_seq).
    fn acceptable_seq(&self) -> SeqNum {
        let wnd_end = self.snd_una + self.snd_wnd;
        if self.snd_max <= wnd_end {
            self.snd_max
        } else {
            wnd_end.max(self.snd_nxt)
        }
    }

    /// Our FIN has been acknowledged.
    fn fin_acked(&self) -> bool {
        self.fin_seq_out().is_some_and(|f| self.snd_una > f)
    }

    /// Whether the state is one of the synchronized ones (RFC 9293 §3.5).
    fn synchronized(&self) -> bool {
        !matches!(
            self.state,
            State::Closed | State::Listen | State::SynSent | State::SynReceived
        )
    }

    // ----- timers ---------------------------------------------------------

    fn set_timer(&mut self, t: Timer, at: Instant) {
        self.timers[t as usize] = Some(at);
    }
    fn clear_timer(&mut self, t: Timer) {
        self.timers[t as usize] = None;
    }
    fn timer(&self, t: Timer) -> Option<Instant> {
        self.timers[t as usize]
    }

    /// The earliest timer, if any.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.timers.iter().flatten().min().copied()
    }

    /// Our timestamp clock: milliseconds plus the per-connection offset
    /// (RFC 7323 §5.4: 1 ms ticks).
    pub(super) fn ts_now(&self, now: Instant) -> u32 {
        (now.as_millis() as u32).wrapping_add(self.ts_offset)
    }

    // ----- state changes ---------------------------------------------------

    fn set_state(&mut self, s: State, cx: &mut Ctx<'_>) {
        if self.state == s {
            return;
        }
        self.state = s;
        match s {
            State::Closed => {
                self.timers = [None; NTIMERS];
                self.ev |= ev::CLOSED;
                cx.stats.closed += 1;
                self.send_buf.clear(cx.pool);
            }
            State::TimeWait => {
                // RFC 9293 §3.10.7.4: start the time-wait timer, turn off the others.
                self.timers = [None; NTIMERS];
                self.set_timer(Timer::TimeWait, cx.now + cx.cfg.time_wait);
                self.ev |= ev::CLOSED;
                self.send_buf.clear(cx.pool);
                self.ooo.list = Vec::new();
            }
            _ => {}
        }
    }

    /// The connection ends abnormally: reset by the peer or timed out.
    fn die(&mut self, why: u8, cx: &mut Ctx<'_>) {
        self.reset = true;
        self.ev |= why;
        self.set_state(State::Closed, cx);
    }

    /// Frees buffer storage (after the application let go of the connection).
    pub(crate) fn free_buffers(&mut self, pool: &mut BufPool) {
        self.send_buf.clear(pool);
        self.recv_buf.clear(pool);
        self.ooo.list = Vec::new();
    }

    // ----- segment arrival (RFC 9293 §3.10.7) -------------------------------

    /// Processes one segment addressed to this connection.
    pub(crate) fn on_segment(&mut self, cx: &mut Ctx<'_>, seg: &TcpSegment<'_>) -> Reply {
        self.last_rcv_time = cx.now;
        self.keepalive_probes = 0;
        match self.state {
            State::Closed | State::Listen => Reply::None,
            State::SynSent => self.on_segment_syn_sent(cx, seg),
            _ => self.on_segment_synchronized(cx, seg),
        }
    }

    /// RFC 9293 §3.10.7.3, SYN-SENT.
    fn on_segment_syn_sent(&mut self, cx: &mut Ctx<'_>, seg: &TcpSegment<'_>) -> Reply {
        let f = seg.flags;
        // First, check the ACK bit.
        let ack_ok = if f.ack() {
            // "If SEG.ACK =< ISS or SEG.ACK > SND.NXT, send a reset (unless
            // the RST bit is set, if so drop the segment and return)."
            if seg.ack <= self.iss || seg.ack > self.snd_max {
                return if f.rst() {
                    Reply::None
                } else {
                    Reply::Rst {
                        seq: seg.ack,
                        ack: None,
                    }
                };
            }
            // "If SND.UNA < SEG.ACK =< SND.NXT, then the ACK is acceptable."
            true
        } else {
            false
        };
        // Second, check the RST bit.
        if f.rst() {
            // "If the ACK was acceptable, then signal to the user 'error:
            // connection reset', drop the segment, enter CLOSED state ...
            // Otherwise (no ACK), drop the segment and return." RFC 5961 §3.2
            // keeps this for SYN-SENT.
            if ack_ok {
                cx.stats.rst_in += 1;
                self.die(ev::RESET, cx);
            }
            return Reply::None;
        }
        // Fourth, check the SYN bit.
        if !f.syn() {
            // "If neither of the SYN or RST bits is set, then drop the segment and return."
            return Reply::None;
        }
        self.init_receive(seg.seq);
        self.negotiate(cx.cfg, &seg.options);
        if self.opt.snd_wscale.is_none() {
            // RFC 7323 §2.2: no scaling either way unless both sent the option.
            self.opt.rcv_wscale = 0;
        }
        if ack_ok {
            // "If SND.UNA > ISS (our SYN has been ACKed), change the
            // connection state to ESTABLISHED, form an ACK segment and send it."
            self.snd_una = seg.ack;
            self.set_snd_wnd(u32::from(seg.window)); // SYN windows are unscaled (RFC 7323 §2.2)
            self.snd_wl1 = seg.seq;
            self.snd_wl2 = seg.ack;
            self.take_rtt_sample(cx, seg);
            self.syn_rto_fallback(cx);
            self.backoffs = 0;
            self.clear_timer(Timer::Rexmit);
            self.enter_synchronized(cx);
            cx.stats.active_opens += 1;
            self.ev |= ev::CONNECTED;
            self.ack_now = true;
            self.arm_keepalive(cx);
        } else {
            // Simultaneous open: "enter SYN-RECEIVED, form a SYN,ACK segment
            // <SEQ=ISS><ACK=RCV.NXT><CTL=SYN,ACK> and send it."
            self.set_snd_wnd(u32::from(seg.window));
            self.snd_wl1 = seg.seq;
            self.set_state(State::SynReceived, cx);
            self.snd_nxt = self.iss;
        }
        Reply::None
    }

    /// The segment-acceptability test of RFC 9293 §3.10.7.4 ("first, check
    /// sequence number"), against the window we can accept now.
    fn acceptable(&self, seq: SeqNum, seg_len: u32, wnd: u32) -> bool {
        let nxt = self.rcv_nxt;
        match (seg_len, wnd) {
            // "0 / 0: SEG.SEQ = RCV.NXT"
            (0, 0) => seq == nxt,
            // "0 / >0: RCV.NXT =< SEG.SEQ < RCV.NXT+RCV.WND"
            (0, _) => seq.in_range(nxt, nxt + wnd),
            // ">0 / 0: not acceptable"
            (_, 0) => false,
            // ">0 / >0: RCV.NXT =< SEG.SEQ < RCV.NXT+RCV.WND or
            //  RCV.NXT =< SEG.SEQ+SEG.LEN-1 < RCV.NXT+RCV.WND"
            (_, _) => seq.in_range(nxt, nxt + wnd) || (seq + seg_len - 1).in_range(nxt, nxt + wnd),
        }
    }

    /// RFC 7323 §5.3 R1: whether PAWS rejects `seg` — it carries a TSval
    /// older than a valid TS.Recent (§5.5: one set within 24 days) and no RST.
    fn paws_reject(&self, cx: &Ctx<'_>, seg: &TcpSegment<'_>) -> bool {
        if !self.opt.ts || seg.flags.rst() {
            return false;
        }
        let Some((val, _)) = seg.options.timestamps else {
            return false;
        };
        let stale = cx.now.saturating_since(self.ts_recent_time) > Duration::from_secs(24 * 86400);
        (val.wrapping_sub(self.ts_recent) as i32) < 0 && !stale
    }

    /// Whether `seg`, which PAWS would reject, is a reordered duplicate ACK
    /// to be taken anyway (Linux: `tcp_disordered_ack`, consulted by
    /// `tcp_paws_discard`).
    ///
    /// RFC 7323 §5.3 R1 drops every segment whose TSval is below TS.Recent.
    /// That is right for data (an old duplicate must not be taken for new
    /// bytes), but a pure ACK carries no bytes: when ACKs overtake each
    /// other on the way (reordering, or ACK-path multipathing), the letter of
    /// R1 throws away the later-sent one together with its SACK blocks, and
    /// the sender loses exactly the loss information it recovers with. We
    /// depart from the letter here, as Linux does, for a segment that cannot
    /// change the connection's state beyond what its SACK blocks and its
    /// count as a duplicate ACK say:
    ///
    /// 1. a pure ACK (no data, SYN, FIN or RST) at SEG.SEQ = RCV.NXT;
    /// 2. a duplicate: SEG.ACK = SND.UNA;
    /// 3. it would not update the send window by Linux's rule
    ///    (`tcp_may_update_window`): SEG.SEQ is not beyond SND.WL1, and at
    ///    SND.WL1 its window is neither larger than SND.WND nor zero;
    /// 4. its TSval lies behind TS.Recent by no more than the replay window,
    ///    one RTO in timestamp ticks (Linux: `icsk_rto` scaled to ~1 ms
    ///    ticks; the peer's clock rate is unknown, RFC 7323 §5.4 suggests 1 ms
    ///    to 1 s, and 1 ms is the common one and the conservative choice).
    ///
    /// Such an ACK neither moves TS.Recent back (§4.3) nor touches the window
    /// (see `process_ack`). An older one stays dropped and counted as PAWS.
    fn disordered_ack(&self, seg: &TcpSegment<'_>) -> bool {
        let f = seg.flags;
        let Some((val, _)) = seg.options.timestamps else {
            return false;
        };
        if !f.ack() || f.syn() || f.fin() || f.rst() || !seg.payload.is_empty() {
            return false;
        }
        if seg.seq != self.rcv_nxt || seg.ack != self.snd_una {
            return false;
        }
        let wnd = u32::from(seg.window) << self.opt.snd_wscale.unwrap_or(0);
        let may_update_window =
            seg.seq > self.snd_wl1 || (seg.seq == self.snd_wl1 && (wnd > self.snd_wnd || wnd == 0));
        if may_update_window {
            return false;
        }
        let behind = self.ts_recent.wrapping_sub(val);
        let window_ms = u32::try_from(self.rto().as_millis()).unwrap_or(u32::MAX);
        (behind as i32) >= 0 && behind <= window_ms
    }

    /// Where SEG.ACK falls in the send sequence space.
    fn classify_ack(&self, ack: SeqNum) -> AckClass {
        // RFC 5961 §5.2: acceptable is (SND.UNA - MAX.SND.WND) =< SEG.ACK
        // =< SND.NXT; SND.NXT here is the highest sequence number sent
        // (SND.NXT may have been pulled back for a retransmission).
        let lo = self.snd_una - self.max_snd_wnd.max(1);
        if ack > self.snd_max {
            AckClass::Unsent
        } else if ack > self.snd_una {
            AckClass::New
        } else if ack >= lo {
            AckClass::Duplicate
        } else {
            AckClass::TooOld
        }
    }

    /// The handshake is complete: ESTABLISHED, or FIN-WAIT-1 when the
    /// application closed before it was (its FIN is queued, RFC 9293
    /// §3.10.4 "Queue this until all preceding SENDs have been segmentized,
    /// then form a FIN segment").
    fn enter_synchronized(&mut self, cx: &mut Ctx<'_>) {
        self.set_state(
            if self.fin_queued {
                State::FinWait1
            } else {
                State::Established
            },
            cx,
        );
        self.progress_time = cx.now;
    }

    /// SYN-RECEIVED to ESTABLISHED (or FIN-WAIT-1 when the application
    /// closed first) on an acceptable ACK (RFC 9293 §3.10.7.4, fifth).
    fn establish(&mut self, cx: &mut Ctx<'_>, seg: &TcpSegment<'_>) -> Reply {
        // RFC 7323 §2.2: the window of the segment that completes the
        // handshake is the first scaled one.
        self.snd_wl1 = seg.seq;
        self.snd_wl2 = seg.ack;
        self.set_snd_wnd(u32::from(seg.window) << self.opt.snd_wscale.unwrap_or(0));
        self.enter_synchronized(cx);
        let reply = if self.active {
            cx.stats.active_opens += 1;
            self.ev |= ev::CONNECTED;
            Reply::None
        } else {
            cx.stats.passive_opens += 1;
            Reply::Established
        };
        self.arm_keepalive(cx);
        // Before the ACK processing that follows resets the backoff.
        self.syn_rto_fallback(cx);
        reply
    }

    /// RFC 9293 §3.10.7.4, every synchronized state and SYN-RECEIVED.
    fn on_segment_synchronized(&mut self, cx: &mut Ctx<'_>, seg: &TcpSegment<'_>) -> Reply {
        let f = seg.flags;
        let paws_reject = self.paws_reject(cx, seg);

        // TIME-WAIT: a new SYN may reopen the connection (RFC 9293 §3.10.7.4
        // note on TIME-WAIT; RFC 6191 with timestamps), as Linux does
        // (tcp_timewait_state_process): it must pass PAWS, and its sequence
        // number must be beyond RCV.NXT or its timestamp newer than
        // TS.Recent. A SYN that fails PAWS is an old duplicate, answered
        // with an ACK below, whatever its sequence number (RFC 6191 §2).
        if self.state == State::TimeWait && f.syn() && !f.ack() && !f.rst() && !paws_reject {
            let newer_ts = match (self.opt.ts, seg.options.timestamps) {
                (true, Some((val, _))) => (val.wrapping_sub(self.ts_recent) as i32) > 0,
                _ => false,
            };
            if seg.seq > self.rcv_nxt || newer_ts {
                return Reply::Reincarnate;
            }
        }

        // SYN-RECEIVED: a retransmitted SYN gets our SYN-ACK again.
        if self.state == State::SynReceived
            && f.syn()
            && !f.ack()
            && !f.rst()
            && seg.seq == self.irs
        {
            self.snd_nxt = self.iss;
            return Reply::None;
        }

        // Simultaneous open (RFC 9293 §3.5 figure 8, line 6): the peer's
        // SYN-ACK reaches us in SYN-RECEIVED. Its SYN lies just below
        // RCV.NXT, so the sequence test would reject it and "fourth, check
        // the SYN bit" would challenge it; the open would then hang on a
        // SYN-ACK retransmission. Linux (tcp_validate_incoming) lets exactly
        // this segment through as the ACK that completes the handshake; so
        // do we. Its window is unscaled (RFC 7323 §2.2): pass it in scaled
        // units.
        if self.state == State::SynReceived
            && self.active
            && f.syn()
            && f.ack()
            && !f.rst()
            && !f.fin()
            && seg.payload.is_empty()
            && seg.seq + 1 == self.rcv_nxt
            && seg.ack == self.snd_max
        {
            let ack = TcpSegment {
                seq: self.rcv_nxt,
                flags: TcpFlags(f.0 & !TcpFlags::SYN.0),
                window: seg.window >> self.opt.snd_wscale.unwrap_or(0),
                ..*seg
            };
            return self.on_segment_synchronized(cx, &ack);
        }

        // RFC 7323 §5.3: PAWS. "If there is a Timestamps option in the
        // arriving segment, SEG.TSval < TS.Recent, TS.Recent is valid, and
        // the RST bit is not set, then treat the arriving segment as not
        // acceptable: send an acknowledgment in reply and drop the segment."
        // TS.Recent older than 24 days is invalid (§5.5).
        // Reordered duplicate ACKs within the replay window are the
        // exception, as in Linux (`tcp_paws_discard`): see `disordered_ack`.
        if paws_reject && self.disordered_ack(seg) {
            cx.stats.paws_disordered_acks += 1;
        } else if paws_reject {
            cx.stats.drops.count(crate::wire::DropReason::Paws);
            // TIME-WAIT restarts its 2 MSL timer, as Linux does for a
            // PAWS-rejected segment (tcp_timewait_state_process).
            if self.state == State::TimeWait {
                self.set_timer(Timer::TimeWait, cx.now + cx.cfg.time_wait);
            }
            // A SYN draws a challenge ACK (RFC 5961 §4.2, below; Linux:
            // tcp_validate_incoming goes to syn_challenge).
            if f.syn() {
                return Reply::ChallengeAck;
            }
            // The ACK is rate-limited as for out-of-window segments (as
            // Linux: tcp_oow_rate_limited with LINUX_MIB_TCPACKSKIPPEDPAWS,
            // and tcp_timewait_check_oow_rate_limit in TIME-WAIT).
            self.ack_invalid(cx, seg);
            return Reply::None;
        }

        // RFC 5961 §4.2 (the "fourth" check of RFC 9293 §3.10.7.4, taken
        // before the sequence check): "If the SYN bit is set, irrespective
        // of the sequence number, TCP MUST send an ACK (also referred to as
        // challenge ACK) to the remote peer", rate-limited as §7 asks. A
        // SYN outside the window is no exception (Linux: tcp_validate_incoming
        // sends it to syn_challenge). This holds in every synchronized state
        // and in SYN-RECEIVED (a retransmission of the SYN that opened it
        // was answered above); in TIME-WAIT, for the SYNs that may not
        // reopen the connection.
        if f.syn() {
            // TIME-WAIT restarts its 2 MSL timer for a segment with an ACK,
            // as for the out-of-window ones below (Linux:
            // tcp_timewait_state_process).
            if self.state == State::TimeWait && f.ack() {
                self.set_timer(Timer::TimeWait, cx.now + cx.cfg.time_wait);
            }
            return Reply::ChallengeAck;
        }

        // First, check sequence number. RCV.WND is what we can take now or
        // what we last advertised, whichever is larger (RFC 9293 §3.8.6.2.2:
        // the window is never shrunk under the peer).
        let wnd = self
            .recv_window(cx.cfg, cx.pool)
            .max(self.advertised_window());
        let seg_len = seg.seg_len();
        let mut ok = self.acceptable(seg.seq, seg_len, wnd);
        // RFC 9293 §3.10.7.4: "If the RCV.WND is zero, no segments will be
        // acceptable, but special allowance should be made to accept valid
        // ACKs, URGs, and RSTs." A segment at RCV.NXT carrying data into a
        // zero window is processed for its ACK, its data dropped below.
        let zero_window_at_nxt = !ok && wnd == 0 && seg.seq == self.rcv_nxt;
        if !ok && !zero_window_at_nxt {
            // "If an incoming segment is not acceptable, an acknowledgment
            // should be sent in reply (unless the RST bit is set, if so drop
            // the segment and return)."
            if !f.rst() {
                cx.stats.out_of_window += 1;
                cx.stats.drops.count(crate::wire::DropReason::Unacceptable);
                // RFC 2883 §4: data that had all arrived before is reported
                // in the ACK as a D-SACK block (the sender learns that its
                // retransmission was unnecessary).
                let end = seg.seq + seg.payload.len() as u32;
                if !seg.payload.is_empty() && end <= self.rcv_nxt {
                    self.note_dsack(seg.seq, end);
                }
                self.ack_invalid(cx, seg);
                // TIME-WAIT: a retransmitted FIN lies below RCV.NXT, so it
                // lands here, yet RFC 9293 §3.10.7.4 ("Acknowledge it, and
                // restart the 2 MSL timeout") wants the timer restarted.
                // Linux (tcp_timewait_state_process) restarts it for every
                // out-of-window segment carrying an ACK; so do we.
                if self.state == State::TimeWait && f.ack() {
                    self.set_timer(Timer::TimeWait, cx.now + cx.cfg.time_wait);
                }
            }
            return Reply::None;
        }
        ok = ok || zero_window_at_nxt;
        debug_assert!(ok);

        // Second, check the RST bit (RFC 5961 §3.2).
        if f.rst() {
            cx.stats.rst_in += 1;
            if seg.seq != self.rcv_nxt {
                // "If the RST bit is set and the sequence number does not
                // exactly match the next expected sequence value, yet is
                // within the current receive window, ... send an ACK
                // (challenge ACK)."
                return Reply::ChallengeAck;
            }
            // "If the RST bit is set and the sequence number exactly matches
            // the next expected sequence number (RCV.NXT), then TCP MUST reset
            // the connection."
            match self.state {
                // SYN-RECEIVED from a passive open: "return this connection
                // to LISTEN state" — the listener keeps listening; this entry goes.
                State::SynReceived if !self.active => {
                    self.reset = true;
                    self.set_state(State::Closed, cx);
                }
                // CLOSING, LAST-ACK, TIME-WAIT: "enter the CLOSED state,
                // delete the TCB, and return."
                State::Closing | State::LastAck | State::TimeWait => {
                    self.reset = true;
                    self.set_state(State::Closed, cx);
                }
                _ => self.die(ev::RESET, cx),
            }
            return Reply::None;
        }

        // Fourth, check the SYN bit: done above, before the sequence check
        // (RFC 5961 §4.2).

        // Fifth, check the ACK field. "If the ACK bit is off, drop the segment and return."
        if !f.ack() {
            return Reply::None;
        }
        let mut reply = Reply::None;
        match (self.state, self.classify_ack(seg.ack)) {
            // SYN-RECEIVED: "If SND.UNA < SEG.ACK =< SND.NXT, then enter
            // ESTABLISHED state and continue processing".
            (State::SynReceived, AckClass::New) => reply = self.establish(cx, seg),
            // SYN-RECEIVED: "If the segment acknowledgment is not
            // acceptable, form a reset segment <SEQ=SEG.ACK><CTL=RST> and
            // send it."
            (State::SynReceived, _) => {
                return Reply::Rst {
                    seq: seg.ack,
                    ack: None,
                }
            }
            // "If the ACK acks something not yet sent (SEG.ACK > SND.NXT),
            // then send an ACK, drop the segment, and return." RFC 5961
            // §5.2 sends that ACK as for a too-old one, and §7 limits it:
            // a challenge ACK (as Linux: tcp_rcv_state_process answers with
            // tcp_send_challenge_ack), with data or without, lest forged
            // segments draw one ACK each.
            (_, AckClass::Unsent) => {
                cx.stats.drops.count(crate::wire::DropReason::Unacceptable);
                return Reply::ChallengeAck;
            }
            // RFC 5961 §5.2: "All incoming segments whose ACK value doesn't
            // satisfy the above condition MUST be discarded and an ACK sent
            // back" (a challenge ACK, rate-limited as §7 asks).
            (_, AckClass::TooOld) => {
                cx.stats.drops.count(crate::wire::DropReason::Unacceptable);
                return Reply::ChallengeAck;
            }
            // "If the ACK is a duplicate (SEG.ACK =< SND.UNA), it can be
            // ignored" as an acknowledgment; it still counts as a duplicate
            // ACK (RFC 5681 §3.2) and may update the window, below.
            (_, AckClass::Duplicate) => {}
            // "If SND.UNA < SEG.ACK =< SND.NXT, then set SND.UNA <- SEG.ACK",
            // below.
            (_, AckClass::New) => {}
        }

        // RFC 7323 §4.3: update TS.Recent if SEG.SEQ =< Last.ACK.sent < SEG.SEQ + SEG.LEN
        // (with the RFC's note that a zero-length segment counts: <=).
        // A disordered ACK taken past PAWS (its TSval is older) leaves
        // TS.Recent where it is (Linux: tcp_replace_ts_recent).
        if let (true, Some((val, _)), false) = (self.opt.ts, seg.options.timestamps, paws_reject) {
            let end = seg.seq + seg_len;
            if seg.seq <= self.last_ack_sent && self.last_ack_sent <= end {
                self.ts_recent = val;
                self.ts_recent_time = cx.now;
            }
        }

        self.process_ack(cx, seg);

        if self.state == State::Closed {
            return reply;
        }

        // Sixth, URG: urgent data is delivered in line (RFC 6093); the
        // pointer is ignored.

        // Seventh, process the segment text; eighth, the FIN bit.
        match self.state {
            State::Established | State::FinWait1 | State::FinWait2 | State::SynReceived => {
                // A bare FIN at RCV.NXT is taken even into a zero window: it
                // needs no buffer. RFC 9293 would call it unacceptable and
                // answer with an ACK; Linux (tcp_data_queue) takes it, and so
                // do we.
                let bare_fin = seg.payload.is_empty() && f.fin();
                if (!zero_window_at_nxt || bare_fin) && (!seg.payload.is_empty() || f.fin()) {
                    self.receive_data(cx, seg);
                } else if zero_window_at_nxt && !seg.payload.is_empty() {
                    // Data into a zero window: drop it, ACK with the window.
                    cx.stats.out_of_window += 1;
                    self.ack_now = true;
                }
            }
            State::TimeWait => {
                // "The only thing that can arrive in this state is a
                // retransmission of the remote FIN. Acknowledge it, and
                // restart the 2 MSL timeout."
                if f.fin() {
                    self.ack_now = true;
                    self.set_timer(Timer::TimeWait, cx.now + cx.cfg.time_wait);
                }
            }
            // CLOSE-WAIT, CLOSING, LAST-ACK: "This should not occur since a
            // FIN has been received from the remote side. Ignore the segment
            // text." A retransmitted FIN is answered with an ACK.
            _ => {
                if f.fin() || !seg.payload.is_empty() {
                    self.ack_now = true;
                }
            }
        }
        reply
    }

    /// The ACK processing of RFC 9293 §3.10.7.4 "fifth" for ESTABLISHED and
    /// the closing states, with RFC 5681/6582 congestion control and RFC 6298
    /// timer management.
    fn process_ack(&mut self, cx: &mut Ctx<'_>, seg: &TcpSegment<'_>) {
        let mss = u32::from(self.mss);
        let wnd = u32::from(seg.window) << self.opt.snd_wscale.unwrap_or(0);
        // RFC 2018 §3 / RFC 6675 §5: record SACK blocks on the scoreboard.
        let mut new_sack = false;
        let mut dsack = false;
        let una_before = self.snd_una;
        let was_in_recovery = self.in_recovery;
        let mut rtt_sample = None;
        // RFC 6937 §3's DeliveredData: the change in SND.UNA plus the
        // change in SACKed bytes, measured across this ACK.
        let sacked_before = self.sacked.bytes_within(self.snd_una, self.snd_max);
        let mut dup = false;
        if self.opt.sack {
            // RFC 2883 §4: the first block is a D-SACK when it lies below
            // the cumulative ACK or within the second block.
            let blocks = seg.options.sack.as_slice();
            if let Some(&(l, r)) = blocks.first() {
                let below = r <= seg.ack;
                let within = blocks.get(1).is_some_and(|&(l2, r2)| l2 <= l && r <= r2);
                if l < r && r <= self.snd_max && (below || within) {
                    dsack = true;
                    cx.stats.dsacks_in += 1;
                    if self.undo.active && !self.undo.dsacked.add(l, r, cx.cfg.max_sack_ranges) {
                        self.undo.active = false;
                    }
                }
            }
            let lo = self.snd_una.max(seg.ack);
            for &(l, r) in seg.options.sack.as_slice() {
                if lo <= l
                    && l < r
                    && r <= self.snd_max
                    && self.sacked.bytes_within(l, r) < r.since(l)
                {
                    new_sack |= self.sacked.add(l, r, cx.cfg.max_sack_ranges);
                }
            }
        }
        if seg.ack > self.snd_una {
            // "If SND.UNA < SEG.ACK =< SND.NXT, then set SND.UNA <- SEG.ACK."
            let acked = seg.ack.since(self.snd_una);
            let data_start = self.data_start();
            let old_una = self.snd_una;
            self.snd_una = seg.ack;
            if self.snd_nxt < self.snd_una {
                self.snd_nxt = self.snd_una;
            }
            // Remove acknowledged bytes from the send buffer. The SYN and
            // FIN occupy sequence numbers but no buffer bytes.
            let data_acked = if seg.ack > data_start {
                (seg.ack.since(data_start) as usize).min(self.send_buf.len())
            } else {
                0
            };
            let _ = old_una;
            self.send_buf.consume(data_acked);
            self.sacked.trim_below(self.snd_una);
            if self.high_rxt < self.snd_una {
                self.high_rxt = self.snd_una;
            }
            if self.send_buf.len() == 0 {
                self.send_buf.shrink_if_empty(cx.pool);
            }
            rtt_sample = self.take_rtt_sample(cx, seg);
            self.backoffs = 0;
            self.persist_backoffs = 0;
            self.progress_time = cx.now;
            // Data got through: forget the soft error (Linux, tcp_ack).
            self.icmp.soft_error = None;
            self.mtu_probe_on_ack(cx);
            self.dup_acks = 0;
            if self.in_recovery {
                if seg.ack >= self.recover {
                    // RFC 6582 §3.2 step 3 (full acknowledgment): leave recovery.
                    self.in_recovery = false;
                    self.cc.on_recovery_end(self.in_flight(), mss);
                } else if !self.sack_recovery() {
                    // Step 4 (partial acknowledgment): retransmit the first
                    // unacknowledged segment, deflate, reset the timer.
                    // With PRR (RFC 6937) the window is PRR's, not deflated.
                    self.rexmit_one = true;
                    if !cx.cfg.prr {
                        self.cc.on_partial_ack(acked, mss);
                    }
                }
                // With SACK (RFC 6675 §5), a partial ACK needs nothing
                // special: the scoreboard says which holes to resend.
            } else {
                self.cc.on_ack(&AckInfo {
                    now: cx.now,
                    acked,
                    mss,
                    ack: seg.ack,
                    snd_nxt: self.snd_max,
                    rtt: rtt_sample,
                    srtt: self.rtt.srtt(),
                });
            }
            // RFC 6298 §5.2/5.3: stop the timer when all is acknowledged,
            // else restart it.
            if self.snd_una == self.snd_max {
                self.clear_timer(Timer::Rexmit);
            } else {
                self.arm_rexmit(cx, self.rtt.rto(0));
            }
            self.tune_on_ack(cx);
            if self.want_writable && self.send_space(cx.cfg, cx.pool) > 0 {
                self.want_writable = false;
                self.ev |= ev::WRITABLE;
            }
        } else if seg.ack == self.snd_una
            && self.snd_max > self.snd_una
            // Only a zero-window probe byte outstanding is no loss signal.
            && self.snd_nxt > self.snd_una
            && seg.payload.is_empty()
            && !seg.flags.fin()
            && (wnd == self.snd_wnd || new_sack)
        {
            // RFC 5681 §2: a duplicate ACK — outstanding data, no data or
            // SYN/FIN, same ACK, same window (RFC 6675 §2: or new SACK
            // information).
            self.dup_acks += 1;
            dup = true;
            // With RACK (RFC 8985 §6.2) time, not the count, tells loss on
            // a SACK connection; the count stays for the others.
            if self.dup_acks == 3
                && !self.loss.rack
                && !self.in_recovery
                && seg.ack - 1 > self.recover
            {
                // RFC 6582 §3.2 step 2: enter fast recovery only if the ACK
                // covers more than "recover" (avoids repeated reductions).
                self.enter_recovery(cx);
            } else if !(self.sack_recovery() || (cx.cfg.prr && self.in_recovery)) {
                // RFC 5681 §3.2 step 4 / RFC 6582 §3.2 step 4: in NewReno
                // recovery every further duplicate inflates cwnd — including
                // the first ones after a partial ACK reset `dup_acks`. (With
                // a SACK scoreboard the pipe, and with PRR PRR's window,
                // not inflation, governs.)
                self.cc.on_dup_ack(self.dup_acks, self.in_recovery, mss);
            }
        }

        // RFC 6675 §5: with SACK, loss is inferred from the scoreboard
        // (IsLost(SND.UNA): DupThresh * SMSS bytes SACKed above it), whether
        // or not the ACK carried data — in a two-way transfer the ACKs ride
        // on data and are never "duplicates". With few segments in flight
        // the threshold drops to all but one segment (early retransmit,
        // RFC 5827).
        // With RACK its marking replaces this rule (`loss_on_ack`).
        if self.opt.sack
            && !self.loss.rack
            && !self.in_recovery
            && !self.sacked.is_empty()
            && self.snd_una - 1 > self.recover
        {
            let flight = self.snd_max.since(self.snd_una);
            let sacked = self.sacked.bytes_within(self.snd_una, self.snd_max);
            let thresh = (3 * mss).min(flight.saturating_sub(mss)).max(1);
            if sacked >= thresh {
                self.enter_recovery(cx);
            }
        }
        self.loss_on_ack(
            cx,
            seg,
            &loss::AckFacts {
                una_before,
                dsack,
                was_in_recovery,
                rtt: rtt_sample,
            },
        );
        if cx.cfg.prr {
            self.prr_on_ack(una_before, sacked_before, dup, new_sack);
        }
        // On a D-SACK, and when the cumulative ACK completes the episode
        // (its D-SACKs may all have come before).
        // RFC 3522 §3.2 (Eifel detection, Linux tcp_packet_delayed): an ACK
        // that moves SND.UNA with a timestamp echo older than the episode's
        // first retransmission was sent for an original, not for a resent copy.
        let delayed = self.snd_una > una_before && self.packet_delayed(seg);
        if dsack
            || delayed
            || (self.undo.active && una_before < self.undo.end && self.snd_una >= self.undo.end)
        {
            self.try_undo(cx, delayed);
        }

        // "If SND.UNA =< SEG.ACK =< SND.NXT, the send window should be
        // updated. If (SND.WL1 < SEG.SEQ or (SND.WL1 = SEG.SEQ and
        // SND.WL2 =< SEG.ACK)), set SND.WND <- SEG.WND, set SND.WL1 <- SEG.SEQ,
        // and set SND.WL2 <- SEG.ACK."
        // A disordered ACK taken past PAWS (`disordered_ack`) carries an
        // older window than the one in force: it is not taken.
        if seg.ack >= self.snd_una
            && (self.snd_wl1 < seg.seq || (self.snd_wl1 == seg.seq && self.snd_wl2 <= seg.ack))
            && !self.paws_reject(cx, seg)
        {
            let opened = wnd > self.snd_wnd;
            self.set_snd_wnd(wnd);
            self.snd_wl1 = seg.seq;
            self.snd_wl2 = seg.ack;
            if opened {
                self.persist_backoffs = 0;
                // Nothing was in flight (at most a probe byte): the data
                // waited on the peer's window, not for an acknowledgment, so
                // the user timeout starts now for what goes out next.
                if self.snd_nxt == self.snd_una {
                    self.progress_time = cx.now;
                }
                if self.want_writable && self.send_space(cx.cfg, cx.pool) > 0 {
                    self.want_writable = false;
                    self.ev |= ev::WRITABLE;
                }
            }
        }

        // State-specific ACK processing.
        let fin_acked = self.fin_acked();
        match self.state {
            // "In addition to the processing for the ESTABLISHED state, if
            // the FIN segment is now acknowledged, then enter FIN-WAIT-2."
            State::FinWait1 if fin_acked => self.set_state(State::FinWait2, cx),
            // "... if the ACK acknowledges our FIN, then enter the TIME-WAIT state."
            State::Closing if fin_acked => self.set_state(State::TimeWait, cx),
            // "The only thing that can arrive in this state is an
            // acknowledgment of our FIN. If our FIN is now acknowledged,
            // delete the TCB, enter the CLOSED state, and return."
            State::LastAck if fin_acked => self.set_state(State::Closed, cx),
            _ => {}
        }
        self.update_persist(cx);
    }

    /// RFC 6298 §5.7: "If the timer expires awaiting the ACK of a SYN
    /// segment and the TCP implementation is using an RTO less than 3
    /// seconds, the RTO MUST be re-initialized to 3 seconds when data
    /// transmission begins" — unless an RTT sample was taken meanwhile (from
    /// timestamps). Linux does the same (TCP_TIMEOUT_FALLBACK).
    fn syn_rto_fallback(&mut self, cx: &Ctx<'_>) {
        let three = Duration::from_secs(3);
        if self.backoffs > 0 && self.rtt.srtt().is_none() && cx.cfg.initial_rto < three {
            self.rtt = RttEstimator::new(three.min(cx.cfg.max_rto), cx.cfg.min_rto, cx.cfg.max_rto);
        }
    }

    /// RTT sampling: from the echoed timestamp when timestamps are on
    /// (RFC 7323 §4.1), else from one timed segment (RFC 6298 §3, Karn's
    /// rule: never from a retransmitted segment).
    /// Returns the sample taken, if any (HyStart++ watches them).
    fn take_rtt_sample(&mut self, cx: &mut Ctx<'_>, seg: &TcpSegment<'_>) -> Option<Duration> {
        if let (true, Some((_, ecr))) = (self.opt.ts, seg.options.timestamps) {
            let ms = self.ts_now(cx.now).wrapping_sub(ecr);
            // Ignore echoes from the future or absurdly old ones.
            if ecr != 0 && (ms as i32) >= 0 && ms < 600_000 {
                // Sub-millisecond precision from the timed segment when it matches.
                let sample = match self.rtt_probe {
                    Some((end, sent)) if seg.ack >= end => cx.now - sent,
                    _ => Duration::from_millis(u64::from(ms)),
                };
                self.rtt.sample(sample);
                if matches!(self.rtt_probe, Some((end, _)) if seg.ack >= end) {
                    self.rtt_probe = None;
                }
                return Some(sample);
            }
        }
        if let Some((end, sent)) = self.rtt_probe {
            if seg.ack >= end {
                self.rtt.sample(cx.now - sent);
                self.rtt_probe = None;
                return Some(cx.now - sent);
            }
        }
        None
    }

    /// Places the segment's data (and FIN) in the receive buffer, in order or
    /// out of order (RFC 9293 §3.10.7.4 "seventh" and "eighth").
    fn receive_data(&mut self, cx: &mut Ctx<'_>, seg: &TcpSegment<'_>) {
        let mut seq = seg.seq;
        let mut data = seg.payload;
        let mut fin = seg.flags.fin();
        // Trim what we already have (RFC 9293 §3.10.7.4: "segments with
        // higher beginning sequence numbers ... may be held"; the part before
        // RCV.NXT is old).
        if seq < self.rcv_nxt {
            let skip = self.rcv_nxt.since(seq) as usize;
            // RFC 2883 §4: the part that had arrived before goes in a D-SACK.
            if !data.is_empty() {
                self.note_dsack(seq, seq + skip.min(data.len()) as u32);
            }
            if skip >= data.len() {
                // Only a (possibly retransmitted) FIN or nothing new.
                let fin_at = seq + data.len() as u32;
                data = &[];
                if !(fin && fin_at >= self.rcv_nxt) {
                    fin = false;
                }
                seq = self.rcv_nxt;
                if !fin {
                    // A duplicate: acknowledge at once (RFC 5681 §4.2 / Linux).
                    self.ack_now = true;
                    return;
                }
            } else {
                data = &data[skip..];
                seq = self.rcv_nxt;
            }
        }
        // Trim what lies beyond the window (and the FIN with it). The window
        // is what we can take now or what we advertised, whichever is
        // larger: under memory pressure the first may shrink below the
        // second, and data inside an edge already advertised must still be
        // taken (RFC 9293 §3.8.6, RFC 7323 §2.4).
        let wnd = self
            .recv_window(cx.cfg, cx.pool)
            .max(self.advertised_window()) as usize;
        let off = seq.since(self.rcv_nxt) as usize;
        if off + data.len() > wnd {
            let keep = wnd.saturating_sub(off);
            data = &data[..keep.min(data.len())];
            fin = false;
            cx.stats.out_of_window += 1;
            self.ack_now = true;
        }
        let tsecr = seg.options.timestamps.map(|t| t.1);
        self.tune_on_data(cx, seq, data.len(), tsecr);
        // Buffer offset: bytes from rcv_released.
        let boff = seq.since(self.rcv_released) as usize;
        if !data.is_empty() {
            let (cap, refused) =
                match self
                    .recv_buf
                    .reserve(boff + data.len(), self.rcv_storage_limit(), cx.pool)
                {
                    Ok(cap) => (cap, false),
                    Err(cap) => {
                        cx.stats.mem_grow_refused += 1;
                        (cap, true)
                    }
                };
            if cx.pool.take_pressure_event() {
                cx.stats.mem_pressure += 1;
            }
            if boff + data.len() > cap {
                // The global memory limit left no room for all of it: keep
                // what fits, drop the rest unacknowledged (the peer sends it
                // again), never store a byte we cannot hold (Linux drops
                // when sk_rmem_schedule fails: TCPRcvQDrop).
                data = &data[..cap.saturating_sub(boff).min(data.len())];
                fin = false;
                if refused {
                    cx.stats.mem_rcv_drops += 1;
                } else {
                    // Beyond the buffer's own ceiling (not reached while
                    // windows follow it; kept as a guard).
                    cx.stats.out_of_window += 1;
                }
                self.ack_now = true;
            }
        }
        if fin {
            self.fin_seq = Some(seq + data.len() as u32);
        }
        if !data.is_empty() {
            if seq == self.rcv_nxt {
                let n = self.recv_buf.write_at(boff, data);
                self.recv_buf.extend(n);
                self.rcv_nxt += n as u32;
                let filled_gap = !self.ooo.is_empty();
                if let Some(end) = self.ooo.advance(self.rcv_nxt) {
                    let extra = end.since(self.rcv_nxt);
                    self.recv_buf.extend(extra as usize);
                    self.rcv_nxt = end;
                }
                if self.last_ooo.is_some_and(|(_, e)| e <= self.rcv_nxt) {
                    self.last_ooo = None;
                }
                self.ev |= ev::READABLE;
                self.unacked_bytes += n as u32;
                // RFC 5681 §4.2: ACK at once when a segment fills (part of) a
                // gap; otherwise at least every second full-size segment
                // (RFC 1122 §4.2.3.2), else after the delayed-ACK timer.
                if filled_gap
                    || self.unacked_bytes
                        >= 2 * u32::from(self.mss.min(cx.cfg.local_mss(self.local.is_ipv6())))
                {
                    self.ack_now = true;
                } else if self.timer(Timer::DelAck).is_none() {
                    self.set_timer(Timer::DelAck, cx.now + cx.cfg.delayed_ack);
                }
            } else {
                // Out of order: hold it if the range table allows, and send a
                // duplicate ACK at once (RFC 5681 §4.2) with SACK blocks.
                if self
                    .ooo
                    .add(seq, seq + data.len() as u32, cx.cfg.max_ooo_ranges)
                {
                    self.recv_buf.write_at(boff, data);
                    cx.stats.ooo_segments += 1;
                    let end = seq + data.len() as u32;
                    self.last_ooo = self
                        .ooo
                        .list
                        .iter()
                        .copied()
                        .find(|(s, e)| *s <= seq && end <= *e);
                }
                self.ack_now = true;
            }
        }
        // The FIN, once everything before it is here.
        if let Some(fs) = self.fin_seq {
            if fs == self.rcv_nxt && !self.fin_rcvd {
                self.fin_rcvd = true;
                self.rcv_nxt += 1;
                self.ack_now = true;
                self.ev |= ev::PEER_CLOSED;
                // "eighth, check the FIN bit"
                match self.state {
                    // "SYN-RECEIVED, ESTABLISHED STATE: Enter the CLOSE-WAIT state."
                    State::SynReceived | State::Established => self.set_state(State::CloseWait, cx),
                    // "FIN-WAIT-1 STATE: If our FIN has been ACKed ..., then
                    // enter TIME-WAIT, ...; otherwise, enter the CLOSING state."
                    State::FinWait1 => {
                        if self.fin_acked() {
                            self.set_state(State::TimeWait, cx)
                        } else {
                            self.set_state(State::Closing, cx)
                        }
                    }
                    // "FIN-WAIT-2 STATE: Enter the TIME-WAIT state."
                    State::FinWait2 => self.set_state(State::TimeWait, cx),
                    _ => {}
                }
            }
        }
    }

    // ----- application calls ---------------------------------------------

    /// The send buffer this connection may fill now: its (auto-tuned)
    /// ceiling, or, under memory pressure, only the storage it holds already
    /// (at least the guaranteed [`MIN_CHUNK`]): send buffers do not grow
    /// under pressure (Linux: tcp_should_expand_sndbuf).
    fn snd_allowance(&self, _cfg: &Config, pool: &BufPool) -> usize {
        if pool.under_pressure() {
            self.tune
                .sndbuf
                .min(self.send_buf.capacity().max(MIN_CHUNK))
        } else {
            self.tune.sndbuf
        }
    }

    /// Free space in the send buffer.
    pub(crate) fn send_space(&self, cfg: &Config, pool: &BufPool) -> usize {
        self.snd_allowance(cfg, pool)
            .saturating_sub(self.send_buf.len())
    }

    /// Queues data (RFC 9293 §3.10.2 SEND). Returns how much fitted.
    pub(crate) fn send(&mut self, cx: &mut Ctx<'_>, data: &[u8]) -> Result<usize, crate::Error> {
        if self.reset {
            return Err(crate::Error::ConnectionReset);
        }
        match self.state {
            State::SynSent | State::SynReceived | State::Established | State::CloseWait => {}
            _ => return Err(crate::Error::InvalidState),
        }
        if self.fin_queued {
            return Err(crate::Error::InvalidState);
        }
        self.tune_on_send(cx);
        let space = self.send_space(cx.cfg, cx.pool);
        let want = data.len().min(space);
        if want < data.len() {
            self.want_writable = true;
            if space < self.tune.sndbuf.saturating_sub(self.send_buf.len()) {
                // Memory pressure, not the buffer's own ceiling, cut the write.
                cx.stats.mem_send_clamped += 1;
            }
        }
        if want == 0 {
            return Ok(0);
        }
        if self.send_buf.len() == 0 && self.snd_una == self.snd_max {
            // The send side was idle: the user timeout counts from now, and
            // RFC 5681 §4.1 restarts from the initial window after an idle RTO.
            self.progress_time = cx.now;
            if self.synchronized() && cx.now.saturating_since(self.last_send_time) > self.rtt.rto(0)
            {
                self.cc.on_idle_restart(u32::from(self.mss));
            }
        }
        let len = self.send_buf.len();
        if self
            .send_buf
            .reserve(len + want, self.tune.sndbuf, cx.pool)
            .is_err()
        {
            // Only what the storage holds is taken; the rest waits.
            cx.stats.mem_grow_refused += 1;
            self.want_writable = true;
        }
        if cx.pool.take_pressure_event() {
            cx.stats.mem_pressure += 1;
        }
        let n = self.send_buf.push(&data[..want]);
        // The application filled the buffer (Linux SOCK_NOSPACE).
        self.tune.snd_full |= n < data.len() || space - n < usize::from(self.mss);
        Ok(n)
    }

    /// Copies in-order data not yet handed out, without releasing it.
    pub(crate) fn recv_hold(&mut self, buf: &mut [u8]) -> Result<usize, crate::Error> {
        let off = self.rcv_read.since(self.rcv_released) as usize;
        let data_end = if self.fin_rcvd {
            self.rcv_nxt - 1
        } else {
            self.rcv_nxt
        };
        let avail = data_end.since(self.rcv_read) as usize;
        if avail == 0 || buf.is_empty() {
            if self.fin_rcvd {
                return Ok(0);
            }
            if self.reset {
                return Err(crate::Error::ConnectionReset);
            }
            if !buf.is_empty() {
                return Err(crate::Error::WouldBlock);
            }
            return Ok(0);
        }
        let want = buf.len().min(avail);
        let n = self.recv_buf.read_at(off, &mut buf[..want]);
        self.rcv_read += n as u32;
        Ok(n)
    }

    /// Releases `n` bytes handed out by [`Conn::recv_hold`]: they leave the
    /// buffer and the window opens. A window update is sent when the window
    /// grew by at least one MSS or half the buffer (RFC 9293 §3.8.6.2.2).
    pub(crate) fn release(&mut self, cx: &mut Ctx<'_>, n: usize) {
        let held = self.rcv_read.since(self.rcv_released) as usize;
        let n = n.min(held);
        if n == 0 {
            return;
        }
        self.recv_buf.consume(n);
        self.rcv_released += n as u32;
        self.tune_on_consumed(cx);
        if self.recv_buf.len() == 0 && self.ooo.is_empty() {
            self.recv_buf.shrink_if_empty(cx.pool);
        }
        if matches!(
            self.state,
            State::Established | State::FinWait1 | State::FinWait2
        ) {
            let new_edge = self.rcv_nxt + self.recv_window(cx.cfg, cx.pool);
            let grow = new_edge.since(self.rcv_adv);
            let thresh = u32::from(self.mss).min((cx.cfg.recv_buffer / 2) as u32);
            if new_edge > self.rcv_adv && grow >= thresh {
                self.ack_now = true;
            }
        }
    }

    /// The application closes its sending side (RFC 9293 §3.10.4 CLOSE).
    /// Returns true when the connection should simply be deleted (SYN-SENT).
    pub(crate) fn close(&mut self, cx: &mut Ctx<'_>) -> bool {
        match self.state {
            // "SYN-SENT STATE: Delete the TCB and return 'error: closing' ..."
            // — unless data was queued: then the FIN follows it once the
            // connection is established (the close is queued like a SEND).
            State::SynSent if self.send_buf.len() > 0 => {
                self.queue_fin();
                false
            }
            State::SynSent => {
                self.set_state(State::Closed, cx);
                true
            }
            // "SYN-RECEIVED / ESTABLISHED: queue the FIN until all preceding
            // SENDs have been segmentized, then form a FIN segment and send
            // it. In any case, enter FIN-WAIT-1 state."
            State::SynReceived | State::Established => {
                self.queue_fin();
                self.set_state(State::FinWait1, cx);
                false
            }
            // "CLOSE-WAIT STATE: Queue this request until all preceding SENDs
            // have been segmentized; then send a FIN segment, enter LAST-ACK state."
            State::CloseWait => {
                self.queue_fin();
                self.set_state(State::LastAck, cx);
                false
            }
            _ => false,
        }
    }

    fn queue_fin(&mut self) {
        if !self.fin_queued {
            self.fin_queued = true;
            self.fin_out = Some(self.data_start() + self.send_buf.len() as u32);
        }
    }

    /// The RST an abort sends (RFC 9293 §3.10.5 ABORT): `<SEQ=SND.NXT><CTL=RST>`
    /// in the synchronized states, nothing otherwise. Closes the connection.
    pub(crate) fn abort(&mut self, cx: &mut Ctx<'_>) -> Option<(SeqNum, SeqNum)> {
        let rst = match self.state {
            State::SynReceived
            | State::Established
            | State::FinWait1
            | State::FinWait2
            | State::CloseWait => Some((self.acceptable_seq(), self.rcv_nxt)),
            _ => None,
        };
        self.reset = true;
        self.set_state(State::Closed, cx);
        rst
    }

    // ----- timers (RFC 6298, RFC 9293 §3.8) -------------------------------

    fn arm_keepalive(&mut self, cx: &mut Ctx<'_>) {
        if let Some(k) = cx.cfg.keepalive {
            self.set_timer(Timer::Keepalive, self.last_rcv_time + k.idle);
        }
    }

    /// Arms the retransmission timer `rto` from now, but not past the user
    /// timeout (RFC 9293 §3.8.3), so that expiring it is noticed on time and
    /// not one long backoff later (Linux: tcp_clamp_rto_to_user_timeout).
    fn arm_rexmit(&mut self, cx: &Ctx<'_>, rto: Duration) {
        let deadline = (self.progress_time + cx.cfg.user_timeout).max(cx.now);
        self.set_timer(Timer::Rexmit, (cx.now + rto).min(deadline));
    }

    /// Arms the persist timer `d` from now, likewise clamped to the user
    /// timeout counted from the last segment received (Linux:
    /// tcp_clamp_probe0_to_user_timeout).
    fn arm_persist(&mut self, cx: &Ctx<'_>, d: Duration) {
        let deadline = (self.last_rcv_time + cx.cfg.user_timeout).max(cx.now);
        self.set_timer(Timer::Persist, (cx.now + d).min(deadline));
    }

    /// Arms the persist timer when data waits on a zero window and nothing is
    /// in flight to bring a window update (RFC 9293 §3.8.6.1); disarms it otherwise.
    fn update_persist(&mut self, cx: &mut Ctx<'_>) {
        let unsent = self.snd_nxt.since(self.data_start()) < self.send_buf.len() as u32;
        // Nothing in flight but possibly a probe byte (which leaves SND.NXT
        // at SND.UNA, see `dispatch_synchronized`). Besides a zero window,
        // this covers a window too small for sender-side SWS avoidance to
        // use: the timer is then the override timeout of RFC 9293
        // §3.8.6.2.1 (Linux sends what fits from its probe timer too).
        if unsent && self.snd_nxt == self.snd_una && self.synchronized() {
            if self.timer(Timer::Persist).is_none() {
                let d = self.rtt.rto(self.persist_backoffs).max(cx.cfg.min_rto);
                self.arm_persist(cx, d);
            }
        } else {
            self.clear_timer(Timer::Persist);
        }
    }

    /// Runs the timers due at `now`. Returns the RST to send when the
    /// connection times out `(seq, ack)`.
    pub(crate) fn on_timeout(&mut self, cx: &mut Ctx<'_>) -> Option<(SeqNum, SeqNum)> {
        let now = cx.now;
        let due = |t: Option<Instant>| t.is_some_and(|t| t <= now);
        if due(self.timer(Timer::TimeWait)) {
            self.clear_timer(Timer::TimeWait);
            self.set_state(State::Closed, cx);
            return None;
        }
        if due(self.timer(Timer::DelAck)) {
            self.clear_timer(Timer::DelAck);
            self.ack_now = true;
        }
        if due(self.timer(Timer::Reo)) {
            self.clear_timer(Timer::Reo);
            self.on_reo_timeout(cx);
        }
        // The probe before the RTO due at the same time (RFC 8985 §7.2:
        // the PTO is capped at the RTO, and the probe then re-arms it).
        if due(self.timer(Timer::Tlp)) {
            self.clear_timer(Timer::Tlp);
            self.on_tlp_timeout(cx);
            if self.tlp_now {
                self.arm_rexmit(cx, self.rtt.rto(self.backoffs));
            }
        }
        if due(self.timer(Timer::Rexmit)) {
            self.clear_timer(Timer::Rexmit);
            if let Some(rst) = self.on_rto(cx) {
                return rst;
            }
        }
        if due(self.timer(Timer::Persist)) {
            self.clear_timer(Timer::Persist);
            if now.saturating_since(self.last_rcv_time) >= cx.cfg.user_timeout {
                cx.stats.timeouts += 1;
                let rst = (self.acceptable_seq(), self.rcv_nxt);
                self.die(ev::TIMED_OUT, cx);
                return Some(rst);
            }
            // RFC 9293 §3.8.6.1: send one byte into the zero window; back off.
            self.probe_now = true;
            // The exponent stops at 16 (2^16 times the RTO is past any
            // max_rto; the probe interval is capped by max_rto in `rto`).
            self.persist_backoffs = (self.persist_backoffs + 1).min(16);
        }
        if due(self.timer(Timer::Keepalive)) {
            self.clear_timer(Timer::Keepalive);
            if let Some(k) = cx.cfg.keepalive {
                let idle = now.saturating_since(self.last_rcv_time);
                // As Linux (tcp_keepalive_timer): no probes while data is in
                // flight or queued; retransmissions, zero-window probes and
                // the user timeout watch the peer then.
                let busy = self.snd_max > self.snd_una || self.send_buf.len() > 0;
                if busy {
                    self.keepalive_probes = 0;
                    self.set_timer(Timer::Keepalive, now + k.idle);
                } else if idle >= k.idle {
                    if self.keepalive_probes >= k.count {
                        cx.stats.timeouts += 1;
                        let rst = (self.acceptable_seq(), self.rcv_nxt);
                        self.die(ev::TIMED_OUT, cx);
                        return Some(rst);
                    }
                    self.keepalive_now = true;
                    self.keepalive_probes += 1;
                    self.set_timer(Timer::Keepalive, now + k.interval);
                } else {
                    self.set_timer(Timer::Keepalive, self.last_rcv_time + k.idle);
                }
            }
        }
        None
    }

    /// The retransmission timer expired (RFC 6298 §5.4–5.7). Returns
    /// `Some(rst)` when the connection gives up.
    #[allow(clippy::option_option)]
    fn on_rto(&mut self, cx: &mut Ctx<'_>) -> Option<Option<(SeqNum, SeqNum)>> {
        let now = cx.now;
        match self.state {
            State::SynSent | State::SynReceived => {
                let limit = if self.state == State::SynSent {
                    cx.cfg.syn_retries
                } else {
                    cx.cfg.synack_retries
                };
                if self.backoffs >= limit {
                    cx.stats.timeouts += 1;
                    self.die(ev::TIMED_OUT, cx);
                    return Some(None);
                }
                self.backoffs += 1;
                self.snd_nxt = self.iss;
                self.rtt_probe = None;
                cx.stats.retransmits += 1;
                cx.stats.rto_timeouts += 1;
                self.retransmits += 1;
                None
            }
            _ if self.snd_max > self.snd_una => {
                if now.saturating_since(self.progress_time) >= cx.cfg.user_timeout {
                    // RFC 9293 §3.8.3: the user timeout closes the connection.
                    cx.stats.timeouts += 1;
                    let rst = (self.acceptable_seq(), self.rcv_nxt);
                    self.die(ev::TIMED_OUT, cx);
                    return Some(Some(rst));
                }
                cx.stats.rto_timeouts += 1;
                self.mtu_probe_on_rto(cx);
                // RFC 5681 §3.1: ssthresh = max(FlightSize / 2, 2*SMSS), cwnd = 1 SMSS.
                self.begin_undo();
                self.undo.fast = false;
                self.cc.on_rto(self.in_flight(), u32::from(self.mss));
                let (first, was_in_recovery) = (self.backoffs == 0, self.in_recovery);
                self.in_recovery = false;
                self.recover = self.snd_max;
                self.dup_acks = 0;
                self.dup_delivered = 0;
                // RFC 6298 §5.5: back off; §5.4: retransmit the earliest
                // unacknowledged segment (we go back to SND.UNA).
                self.backoffs = (self.backoffs + 1).min(30);
                self.snd_nxt = self.snd_una;
                self.high_rxt = self.snd_una;
                self.rtt_probe = None;
                self.loss_on_rto(cx, first, was_in_recovery);
                None
            }
            _ => None,
        }
    }

    // ----- dispatch: emit at most one segment ------------------------------

    /// Whether [`Conn::dispatch`] may have something to send.
    pub(crate) fn wants_to_send(&self) -> bool {
        self.ack_now
            || self.rexmit_one
            || self.tlp_now
            || self.probe_now
            || self.keepalive_now
            || self.state != State::Closed
    }

    /// Writes the next segment this connection wants to send into `buf` and
    /// returns the packet length. Sends at most one segment; call again
    /// until it returns `None`.
    pub(crate) fn dispatch(&mut self, cx: &mut Ctx<'_>, buf: &mut [u8]) -> Option<usize> {
        self.short_buffer = false;
        match self.state {
            State::Closed | State::Listen => None,
            State::TimeWait => {
                if self.ack_now {
                    self.emit(cx, buf, self.snd_max, TcpFlags::ACK, 0, false)
                } else {
                    None
                }
            }
            State::SynSent | State::SynReceived if self.snd_nxt == self.iss => {
                let flags = if self.state == State::SynSent {
                    TcpFlags::SYN
                } else {
                    TcpFlags::SYN | TcpFlags::ACK
                };
                let n = self.emit(cx, buf, self.iss, flags, 0, true)?;
                self.snd_nxt = self.iss + 1;
                self.snd_max = self.snd_max.max(self.snd_nxt);
                if self.timer(Timer::Rexmit).is_none() {
                    self.set_timer(Timer::Rexmit, cx.now + self.rtt.rto(self.backoffs));
                }
                if self.backoffs == 0 && self.rtt_probe.is_none() {
                    self.rtt_probe = Some((self.iss + 1, cx.now));
                }
                Some(n)
            }
            State::SynSent => None,
            State::SynReceived => {
                if self.ack_now {
                    self.emit(cx, buf, self.snd_nxt, TcpFlags::ACK, 0, false)
                } else {
                    None
                }
            }
            _ => self.dispatch_synchronized(cx, buf),
        }
    }

    fn dispatch_synchronized(&mut self, cx: &mut Ctx<'_>, buf: &mut [u8]) -> Option<usize> {
        self.pmtu_expiry(cx);
        // The payload room of this segment: the effective MSS less the SACK
        // blocks it will carry (RFC 9293 §3.7.1: options count against the
        // MSS; Linux's tcp_current_mss does the same).
        let mss = u32::from(self.mss) - self.sack_option_len();
        let data_start = self.data_start();
        let queued = self.send_buf.len() as u32;
        let fin_seq = self.fin_seq_out();
        // The payload `buf` can hold after the exact headers this segment
        // gets (IP, TCP, timestamps, SACK blocks): a buffer of exactly the
        // MTU carries a full-MSS segment. A buffer without room for even one
        // byte clamps nothing: `emit` then reports it too short and the
        // segment stays pending.
        let room = match buf.len().saturating_sub(self.data_header_len()) {
            0 => u32::MAX,
            r => r as u32,
        };

        // Dispatch changes state only once `emit` has written the segment
        // (as smoltcp's dispatch): a buffer too short for it leaves the
        // retransmission, probe or keep-alive pending for the next call.

        // A fast retransmit (or NewReno partial-ACK retransmit): one segment
        // from SND.UNA, outside the congestion window (RFC 5681 §3.2 step 2).
        if self.rexmit_one {
            if self.snd_max > self.snd_una {
                // Always sent (RFC 5681 §3.2 step 2, RFC 6582 step 4); with
                // PRR it counts in prr_out, so the next ACKs send less.
                let off = self.snd_una.since(data_start).min(queued);
                let len = (queued - off).min(mss).min(room);
                let fin = fin_seq.is_some_and(|f| f == self.snd_una + len && self.snd_max > f);
                if len > 0 || fin {
                    let flags = TcpFlags::ACK | if fin { TcpFlags::FIN } else { TcpFlags(0) };
                    let n = self.emit(cx, buf, self.snd_una, flags, len as usize, false)?;
                    self.rexmit_one = false;
                    if self.in_recovery {
                        self.prr.on_sent(len);
                        self.prr_quota = self.prr_quota.saturating_sub(len);
                    }
                    self.note_rexmit(cx, self.snd_una, self.snd_una + len);
                    cx.stats.retransmits += 1;
                    self.retransmits += 1;
                    if self.timer(Timer::Rexmit).is_none() {
                        self.arm_rexmit(cx, self.rtt.rto(self.backoffs));
                    }
                    return Some(n);
                }
            }
            // Nothing left to resend (acknowledged meanwhile).
            self.rexmit_one = false;
        }

        // A tail loss probe (RFC 8985 §7.3): outside the congestion window.
        if self.tlp_now {
            match self.tlp_segment(mss.min(room), queued) {
                Some((seq, len, retrans)) => {
                    let fin =
                        fin_seq.is_some_and(|f| f == seq + len && (!retrans || self.snd_max > f));
                    let flags = TcpFlags::ACK | if fin { TcpFlags::FIN } else { TcpFlags(0) };
                    let n = self.emit(cx, buf, seq, flags, len as usize, false)?;
                    let end = seq + len + u32::from(fin);
                    if retrans {
                        self.note_rexmit(cx, seq, seq + len);
                        cx.stats.retransmits += 1;
                        self.retransmits += 1;
                    } else {
                        self.snd_nxt = end;
                        self.last_send_time = cx.now;
                    }
                    self.snd_max = self.snd_max.max(end);
                    self.tlp_sent(cx, retrans);
                    return Some(n);
                }
                None => self.tlp_now = false,
            }
        }

        // SACK-based loss recovery (RFC 6675 §5 step (C)): while the pipe
        // leaves room in cwnd, resend the first hole above HighRxt below the
        // highest SACKed byte; then new data.
        let sack_rec = self.sack_recovery();
        let pipe = if sack_rec { self.sack_pipe() } else { 0 };
        let prr = cx.cfg.prr && self.in_recovery;
        // With RACK outside fast recovery (after an RTO, Linux's Loss
        // state, until SND.UNA passes `recover`): what RACK marks lost
        // below SND.NXT goes first (RFC 8985 §6.3; Linux
        // tcp_xmit_retransmit_queue), within cwnd.
        let rto_rack = self.loss.rack && !self.in_recovery && self.rack.has_lost();
        if sack_rec || rto_rack {
            // With PRR (RFC 6937) the window is PRR's pipe + sndcnt, which
            // lets the fast retransmit out on the first ACK; without, RFC
            // 6675's ssthresh, the first hole sent whatever the pipe.
            let (cwnd, first, pipe) = if rto_rack {
                (self.cc.cwnd(), false, self.snd_nxt.since(self.snd_una))
            } else if prr {
                (self.prr_cwnd, false, pipe)
            } else {
                (
                    self.cc.ssthresh().min(self.cc.cwnd()).max(mss),
                    self.high_rxt == self.snd_una,
                    pipe,
                )
            };
            if pipe + mss <= cwnd || first {
                // RFC 6675 NextSeg() rule 1: with RACK, the first segment it
                // marked lost; without, the first hole above HighRxt below
                // the highest SACKed byte.
                let hole = if self.loss.rack {
                    self.rack
                        .next_lost(self.snd_una)
                        .filter(|&(s, _)| !rto_rack || s < self.snd_nxt)
                } else {
                    let mut start = self.high_rxt.max(self.snd_una);
                    while let Some(end) = self.sacked.covering(start) {
                        start = end;
                    }
                    let high = self.sacked.highest().unwrap_or(self.snd_una);
                    (start < high)
                        .then(|| (start, self.sacked.next_start_after(start).unwrap_or(high)))
                };
                if let Some((start, hole_end)) = hole {
                    let off = start.since(data_start).min(queued);
                    let len = (queued - off).min(mss).min(hole_end.since(start)).min(room);
                    if len > 0 {
                        let n = self.emit(cx, buf, start, TcpFlags::ACK, len as usize, false)?;
                        self.prr.on_sent(len);
                        self.note_rexmit(cx, start, start + len);
                        cx.stats.retransmits += 1;
                        self.retransmits += 1;
                        self.high_rxt = self.high_rxt.max(start + len);
                        if self.timer(Timer::Rexmit).is_none() {
                            self.arm_rexmit(cx, self.rtt.rto(self.backoffs));
                        }
                        return Some(n);
                    }
                }
            }
        }

        // After an RTO rewound SND.NXT, skip what the peer SACKed.
        if self.opt.sack && self.snd_nxt < self.snd_max {
            while let Some(end) = self.sacked.covering(self.snd_nxt) {
                self.snd_nxt = end.min(self.snd_max);
            }
        }

        // New data (or data to resend after an RTO rewound SND.NXT).
        let seq = self.snd_nxt;
        let off = seq.since(data_start).min(queued);
        let avail = queued - off;
        let in_flight = self.snd_nxt.since(self.snd_una);
        let usable = if sack_rec {
            // In SACK recovery the pipe, not SND.NXT - SND.UNA, is what is in flight.
            let cwnd = if prr {
                self.prr_cwnd
            } else {
                self.cc.ssthresh().min(self.cc.cwnd())
            };
            self.snd_wnd
                .saturating_sub(in_flight)
                .min(cwnd.saturating_sub(pipe))
        } else if prr {
            // PRR without a scoreboard (RFC 6937 §3): what its sndcnt
            // leaves after what was sent since the ACK.
            self.snd_wnd.saturating_sub(in_flight).min(self.prr_quota)
        } else {
            // RFC 3042 §2: each of the first two duplicate ACKs lets one new
            // segment out beyond cwnd (at most cwnd + 2 SMSS outstanding).
            let lt = if self.loss.limited_transmit && !self.in_recovery && seq == self.snd_max {
                self.dup_acks.min(2) * mss
            } else {
                0
            };
            self.snd_wnd
                .min(self.cc.cwnd().saturating_add(lt))
                .saturating_sub(in_flight)
        };
        // F-RTO (RFC 5682 §3.1 step 2 b): two new segments whatever cwnd.
        let usable = if self.frto_quota() > 0 && seq == self.snd_max {
            usable.max(
                self.frto_quota()
                    .min(self.snd_wnd.saturating_sub(in_flight)),
            )
        } else {
            usable
        };
        // With segmentation offload one "segment" may carry many MSS
        // (cut by the device into MSS-sized ones); never more than `buf` holds.
        let mut len = avail.min(self.max_chunk(cx.cfg, mss)).min(usable);
        let probe_len = match self.mtu_probe_now(cx, seq, avail, room) {
            mtu_probe::ProbeNow::No => None,
            mtu_probe::ProbeNow::Wait => Some(0),
            mtu_probe::ProbeNow::Send(p) => Some(p),
        };
        len = probe_len.unwrap_or(len);
        if seq < self.snd_max {
            if let Some(next) = self.sacked.next_start_after(seq) {
                len = len.min(next.since(seq));
            }
        }
        // A caller's buffer with room for less than the segment (below the
        // MTU, which the caller should give) cuts it to what fits. That
        // segment is short for want of buffer, not of data, window or
        // cwnd: Nagle and sender-side SWS avoidance take it as full-sized
        // (holding it back would stall the connection until the next ACK
        // or the persist timer: it has left the transmit queue), and it
        // does not count as the short segment Nagle waits on.
        let room_limited = room < len;
        len = len.min(room);
        let mut probe = false;
        if len == 0 && avail > 0 && self.probe_now && self.snd_wnd == 0 {
            // Zero-window probe: one byte beyond the window (RFC 9293 §3.8.6.1).
            len = 1;
            probe = true;
        }
        // The persist timer fired on a small, non-zero window: send what fits.
        let sws_override = self.probe_now && !probe;
        let is_retransmit = seq < self.snd_max;
        // The FIN goes with the last data, or alone once all data is sent,
        // unless it was sent already and not rewound.
        let fin = fin_seq.is_some_and(|f| {
            f == seq + len && seq + len >= self.snd_nxt && !(self.snd_max > f && self.snd_nxt > f)
        });
        if len > 0
            && len < mss
            && !fin
            && !probe
            && !is_retransmit
            && !sws_override
            && !room_limited
        {
            // Sender-side silly window avoidance (RFC 9293 §3.8.6.2.1) and
            // Nagle (§3.7.4): send a short segment only if it is all we have
            // and no short segment is unacknowledged (or Nagle is off), or it
            // fills at least half the largest window the peer ever offered.
            // RFC 9293 §3.7.4 holds it while any data is unacknowledged;
            // Linux uses Minshall's variant (only a short segment in flight
            // holds the next), so a reply of 1.5 MSS is not stalled by the
            // peer's delayed ACK. We do as Linux.
            let all = len == avail;
            let nagle_ok = self.nodelay || self.snd_sml <= self.snd_una;
            let half_window = self.max_snd_wnd > 0 && len >= self.max_snd_wnd / 2;
            if !((all && nagle_ok) || half_window) {
                len = 0;
            }
        }
        if len > 0 || fin {
            let mut flags = TcpFlags::ACK;
            if fin {
                flags |= TcpFlags::FIN;
            }
            if len > 0 && len == avail {
                flags |= TcpFlags::PSH;
            }
            let n = self.emit(cx, buf, seq, flags, len as usize, false)?;
            self.probe_now = false;
            if probe_len.is_some_and(|p| p > 0) {
                self.mtu_probe_sent(cx, seq, len);
            }
            let end = seq + len + u32::from(fin);
            // A zero-window probe does not advance SND.NXT (as BSD): every
            // probe carries the same byte, so no more than one byte is ever
            // sent into the zero window (RFC 9293 §3.8.6.1), and the persist
            // timer, not the retransmission timer, stays in charge. SND.MAX
            // covers the byte so that an ACK of it is acceptable.
            if !probe {
                self.snd_nxt = end;
                if len % mss != 0 && !room_limited {
                    self.snd_sml = end;
                }
            }
            if self.in_recovery {
                self.prr.on_sent(len);
                self.prr_quota = self.prr_quota.saturating_sub(len);
            }
            if is_retransmit && !probe {
                self.note_rexmit(cx, seq, (seq + len).min(self.snd_max));
                cx.stats.retransmits += 1;
                self.retransmits += 1;
            } else if self.rtt_probe.is_none() && self.backoffs == 0 && len > 0 && !probe {
                self.rtt_probe = Some((end, cx.now));
            }
            self.snd_max = self.snd_max.max(end);
            self.last_send_time = cx.now;
            if self.timer(Timer::Rexmit).is_none() && !probe {
                self.arm_rexmit(cx, self.rtt.rto(self.backoffs));
            }
            if !is_retransmit && !probe {
                self.frto_used(len);
                // RFC 8985 §7.2: new data (re)starts the probe timeout.
                self.schedule_tlp(cx);
            }
            if probe {
                self.arm_persist(cx, self.rtt.rto(self.persist_backoffs).max(cx.cfg.min_rto));
            } else {
                self.update_persist(cx);
            }
            return Some(n);
        }
        // The persist timer found nothing it may send (the window opened
        // and what is queued is held by Nagle or cwnd, or nothing is queued).
        self.probe_now = false;
        self.update_persist(cx);

        if self.keepalive_now {
            // RFC 9293 §3.8.4 / RFC 1122 §4.2.3.6: a probe with SEG.SEQ = SND.NXT - 1
            // and no data draws an ACK from a live peer.
            let n = self.emit(cx, buf, self.snd_una - 1, TcpFlags::ACK, 0, false)?;
            self.keepalive_now = false;
            return Some(n);
        }
        if self.ack_now {
            // SND.NXT in the RFC's sense: the highest sequence number sent
            // (ours rewinds on RTO), kept within the peer's window so the
            // ACK is acceptable to it.
            return self.emit(cx, buf, self.acceptable_seq(), TcpFlags::ACK, 0, false);
        }
        None
    }

    /// Writes one segment: `len` bytes of the send buffer from `seq`.
    fn emit(
        &mut self,
        cx: &mut Ctx<'_>,
        buf: &mut [u8],
        seq: SeqNum,
        flags: TcpFlags,
        len: usize,
        syn_opts: bool,
    ) -> Option<usize> {
        let mut options = TcpOptions::default();
        let now_ts = self.ts_now(cx.now);
        if syn_opts {
            options.mss = Some(cx.cfg.local_mss(self.local.is_ipv6()));
            let offer = self.state == State::SynSent;
            if (offer && cx.cfg.window_scaling) || (!offer && self.opt.snd_wscale.is_some()) {
                options.window_scale = Some(self.opt.rcv_wscale);
            }
            if (offer && cx.cfg.sack) || (!offer && self.opt.sack) {
                options.sack_permitted = true;
            }
            if offer && cx.cfg.timestamps {
                options.timestamps = Some((now_ts, 0));
            } else if !offer && self.opt.ts {
                options.timestamps = Some((now_ts, self.ts_recent));
            }
        } else {
            if self.opt.ts {
                options.timestamps = Some((now_ts, self.ts_recent));
            }
            if self.opt.sack && (!self.ooo.is_empty() || self.dsack.is_some()) && flags.ack() {
                options.sack = self.sack_blocks();
            }
        }
        // The window: never shrink the right edge we advertised (RFC 9293
        // §3.8.6.2.2 / §3.4), and apply receiver-side SWS avoidance: only
        // move the edge by at least min(MSS, buffer/2).
        let mut window = 0u32;
        // The right edge this segment advertises; recorded once it is written.
        let mut new_adv = self.rcv_adv;
        if flags.ack() || flags.syn() {
            let avail = self.recv_window(cx.cfg, cx.pool);
            let allowance = self.rcv_allowance(cx.cfg, cx.pool);
            if allowance < self.tune.rcvbuf {
                // Memory pressure holds this window below the buffer's ceiling.
                cx.stats.mem_window_clamped += 1;
            }
            let new_edge = self.rcv_nxt + avail;
            let thresh = u32::from(self.mss).min((cx.cfg.recv_buffer / 2) as u32);
            // §3.8.6.2.2: move the edge when RCV.BUFF - RCV.USER - RCV.WND
            // >= the threshold. That is buffer space, not capped by what the
            // window field can say: with the field at its maximum, the edge
            // still follows RCV.NXT (as Linux keeps offering the full window).
            let used = self.rcv_nxt.since(self.rcv_released) as usize;
            let free = allowance.saturating_sub(used) as u32;
            let cur_wnd = self.advertised_window();
            let edge = if new_edge > self.rcv_adv
                && (free.saturating_sub(cur_wnd) >= thresh
                    || self.rcv_adv <= self.rcv_nxt && avail >= thresh)
            {
                new_edge
            } else if self.rcv_adv > self.rcv_nxt {
                self.rcv_adv
            } else {
                new_edge.max(self.rcv_nxt)
            };
            window = edge.since(self.rcv_nxt);
            if flags.syn() {
                // RFC 7323 §2.2: the window in a SYN is never scaled.
                window = window.min(65535);
            } else {
                window >>= self.opt.rcv_wscale;
                window = window.min(65535);
            }
            let advertised = if flags.syn() {
                window
            } else {
                window << self.opt.rcv_wscale
            };
            new_adv = self.rcv_adv.max(self.rcv_nxt + advertised);
        }
        let repr = TcpRepr {
            src_port: self.local.port(),
            dst_port: self.remote.port(),
            seq,
            ack: if flags.ack() { self.rcv_nxt } else { SeqNum(0) },
            flags,
            window: window as u16,
            options,
        };
        let off = tcp_payload_offset(self.local.ip(), &repr);
        if off + len > buf.len() {
            self.short_buffer = true;
            return None;
        }
        if len > 0 {
            let data_off = seq.since(self.data_start()) as usize;
            self.send_buf.read_at(data_off, &mut buf[off..off + len]);
        }
        let n = emit_tcp_with(
            buf,
            self.local.ip(),
            self.remote.ip(),
            cx.cfg.ttl,
            &repr,
            len,
            cx.cfg.checksum_offload,
        )?;
        self.pmtu_mark(&mut buf[..n], len);
        self.rcv_adv = new_adv;
        // Whether the peer will take this segment's window (RFC 9293
        // §3.10.7.4): a segment at or above SND.MAX (new data, a pure ACK)
        // passes its SND.WL1 test; a retransmission may not.
        let wnd_usable = seq >= self.snd_max || flags.syn();
        let window_opened = if flags.ack() && !wnd_usable && (len > 0 || flags.fin()) {
            // A retransmission carried the window. If the peer's last sure
            // view of it leaves less than a segment (it may be stalled on
            // our zero window) and this one offers at least that, the
            // opening must reach it: a pure ACK follows (and, being itself
            // no retransmission, does not loop).
            let thresh = u32::from(self.mss).min((cx.cfg.recv_buffer / 2) as u32);
            let told = if self.rcv_told > self.rcv_nxt {
                self.rcv_told.since(self.rcv_nxt)
            } else {
                0
            };
            told < thresh && new_adv > self.rcv_nxt && new_adv.since(self.rcv_nxt) >= thresh
        } else {
            false
        };
        if flags.ack() && wnd_usable {
            self.rcv_told = new_adv;
        }
        if (len > 0 || flags.fin()) && !flags.syn() {
            let end = seq + len as u32 + u32::from(flags.fin());
            self.loss_on_send(cx, seq, end);
        }
        // A data segment longer than the MSS is for the device to cut
        // (TSO/GSO): tell it the segment size (each piece repeats the
        // options, SACK blocks included).
        let piece = self.mss - self.sack_option_len() as u16;
        self.last_tx_segment = if len > usize::from(piece) { piece } else { 0 };
        if window_opened {
            cx.stats.window_updates_repeated += 1;
        }
        if flags.ack() {
            self.ack_now = window_opened;
            self.dsack = None;
            self.unacked_bytes = 0;
            self.clear_timer(Timer::DelAck);
            self.last_ack_sent = self.rcv_nxt;
        }
        cx.stats.segments_out += 1;
        Some(n)
    }

    /// The exact IP + TCP header length of a data segment sent now: the
    /// fixed headers, the timestamp option (12 bytes with its padding) when
    /// negotiated, and the SACK blocks while we hold out-of-order data.
    fn data_header_len(&self) -> usize {
        let ip = crate::wire::ip_header_len(self.local.ip());
        let ts = if self.opt.ts { 12 } else { 0 };
        ip + 20 + ts + self.sack_option_len() as usize
    }

    /// Bytes the SACK option takes on the segments we send now (NOP, NOP,
    /// kind, length and 8 per block), 0 when none is sent.
    fn sack_option_len(&self) -> u32 {
        if self.opt.sack && (!self.ooo.is_empty() || self.dsack.is_some()) {
            4 + 8 * self.sack_blocks().len() as u32
        } else {
            0
        }
    }

    /// SACK blocks for the ACK we send (RFC 2018 §4): the block holding the
    /// most recent out-of-order segment first, then the others.
    fn sack_blocks(&self) -> SackBlocks {
        let mut b = SackBlocks::default();
        let max = if self.opt.ts { 3 } else { 4 };
        // RFC 2883 §4: a D-SACK block comes first.
        if let Some(r) = self.dsack {
            b.push(r.0, r.1);
        }
        if let Some(r) = self.last_ooo {
            b.push(r.0, r.1);
        }
        for r in self.ooo.list.iter().rev() {
            if b.len() >= max {
                break;
            }
            if Some(*r) != self.last_ooo {
                b.push(r.0, r.1);
            }
        }
        b.truncate(max);
        b
    }

    /// Records a duplicate range for the next ACK's D-SACK block (RFC 2883
    /// §4), extending the pending one when the two touch; only when SACK
    /// was negotiated.
    fn note_dsack(&mut self, start: SeqNum, end: SeqNum) {
        // Only bytes of this connection's stream (from IRS + 1): a segment
        // reaching back before the peer's SYN is no duplicate of ours.
        let start = start.max(self.irs + 1);
        if !self.opt.sack || start >= end {
            return;
        }
        self.dsack = match self.dsack {
            Some((s, e)) if start <= e && s <= end => Some((s.min(start), e.max(end))),
            _ => Some((start, end)),
        };
        // At once, not after the delayed-ACK timer: the sender may be
        // waiting for it to undo a needless window reduction (RFC 3708).
        self.ack_now = true;
    }

    /// Whether in-order data waits to be read.
    pub(crate) fn has_unread(&self) -> bool {
        let data_end = if self.fin_rcvd {
            self.rcv_nxt - 1
        } else {
            self.rcv_nxt
        };
        data_end > self.rcv_read
    }

    /// Fast retransmit and enter fast recovery (RFC 5681 §3.2, RFC 6582
    /// §3.2 step 2, RFC 6675 §5 step 4).
    fn enter_recovery(&mut self, cx: &mut Ctx<'_>) {
        if self.mtu_probe_lost(cx) {
            return;
        }
        let mss = u32::from(self.mss);
        self.begin_undo();
        // An RTO nested in it (begin_undo keeps the record) makes it F-RTO's.
        self.undo.fast = self.undo.rexmit.is_empty() && self.undo.rexmit_tsval.is_none();
        self.in_recovery = true;
        self.recover = self.snd_max;
        self.cc.on_fast_retransmit(self.in_flight(), mss);
        // RFC 6937 §3 "At the beginning of recovery": RecoverFS = FlightSize.
        self.prr.start(self.in_flight());
        self.prr_cwnd = 0;
        self.prr_quota = 0;
        self.rtt_probe = None;
        // Linux tcp_init_cwnd_reduction: a recovery ends any probe.
        self.rack.tlp_end = None;
        self.clear_timer(Timer::Tlp);
        cx.stats.fast_retransmits += 1;
        if self.sack_recovery() {
            // RFC 6675 §5 step (4): HighRxt starts at SND.UNA; dispatch
            // resends holes as the pipe allows.
            self.high_rxt = self.snd_una;
        } else {
            self.rexmit_one = true;
        }
    }

    /// A loss-recovery episode begins (fast retransmit or RTO): remember
    /// the window to restore should each of its retransmissions prove
    /// needless. Called before the congestion controller cuts.
    fn begin_undo(&mut self) {
        let u = &mut self.undo;
        if u.active && self.snd_una < u.end {
            // Nested (an RTO during recovery): undo must cover both
            // episodes, back to the window from before the first.
            u.end = self.snd_max;
            return;
        }
        u.active = true;
        self.cc.save_for_undo();
        let u = &mut self.undo;
        u.prior_cwnd = self.cc.cwnd();
        u.prior_ssthresh = self.cc.ssthresh();
        u.end = self.snd_max;
        u.rexmit.list.clear();
        u.dsacked.list.clear();
        u.fast = false;
        u.rexmit_tsval = None;
    }

    /// Records a retransmission of `[start, end)` in the open episode.
    fn note_rexmit(&mut self, cx: &Ctx<'_>, start: SeqNum, end: SeqNum) {
        let u = &mut self.undo;
        if !u.active || start >= u.end {
            return;
        }
        let end = end.min(u.end);
        if start < end && u.rexmit_tsval.is_none() {
            u.rexmit_tsval = Some((cx.now.as_millis() as u32).wrapping_add(self.ts_offset));
        }
        if start < end && !u.rexmit.add(start, end, cx.cfg.max_sack_ranges) {
            // Too scattered to track: this episode stays as it is.
            u.active = false;
        }
    }

    /// RFC 3708 §3: when D-SACKs have covered every retransmission of the
    /// episode, none was needed (the originals arrived): undo the window
    /// reduction (RFC 4015 §3.2). The duplicate-ACK threshold stays at 3:
    /// raising it with the reordering seen (as Linux does, next to RACK's
    /// time-based loss detection) made loss detection late enough here that
    /// the simulated faulty link ran 1.7x slower, RTOs doubling.
    fn try_undo(&mut self, cx: &mut Ctx<'_>, delayed: bool) {
        if delayed && self.try_undo_delayed(cx) {
            return;
        }
        let u = &self.undo;
        // Only once the episode is over (as Linux's tcp_try_undo_recovery):
        // while it runs, other holes may be real losses, which leaving
        // recovery early would leave to the RTO. With RACK those are found
        // by time whatever the state, so as Linux's tcp_try_undo_dsack the
        // undo may come during the recovery, once nothing is marked lost.
        let rack_early = self.loss.rack && self.in_recovery && !self.rack.has_lost();
        if !u.active
            || u.rexmit.is_empty()
            || (!rack_early && (self.in_recovery || self.snd_una < u.end))
        {
            return;
        }
        let all = u
            .rexmit
            .list
            .iter()
            .all(|&(s, e)| u.dsacked.bytes_within(s, e) == e.since(s));
        if !all {
            return;
        }
        let (cwnd, ssthresh) = (u.prior_cwnd, u.prior_ssthresh);
        self.undo.active = false;
        if rack_early {
            // Linux tcp_try_keep_open: back to the open state, free to
            // start a recovery for a loss found later.
            self.in_recovery = false;
            self.recover = self.snd_una;
        }
        self.cc.on_undo(cwnd, ssthresh);
        cx.stats.spurious_recoveries += 1;
    }

    /// Whether `seg`'s timestamp echo predates the open fast-recovery
    /// episode's first retransmission (RFC 3522 §3.2; Linux
    /// tcp_packet_delayed). A zero echo says nothing (RFC 7323 §3.2).
    fn packet_delayed(&self, seg: &TcpSegment<'_>) -> bool {
        let u = &self.undo;
        let (true, true, Some(rts), Some((_, ecr))) = (
            self.opt.ts,
            u.active && u.fast,
            u.rexmit_tsval,
            seg.options.timestamps,
        ) else {
            return false;
        };
        ecr != 0 && (ecr.wrapping_sub(rts) as i32) < 0
    }

    /// Eifel undo of a fast recovery (RFC 3522 detection, RFC 4015 §3.2's
    /// response as Linux applies it): the ACK that moved SND.UNA echoes a
    /// timestamp from before the first retransmission, so the hole was
    /// filled by a delayed original: the path reordered, nothing was lost.
    /// Once the episode is over (Linux tcp_try_undo_recovery), or during it
    /// when no retransmission is in flight (tcp_try_undo_partial, which
    /// also forgets the loss marks and goes back to the open state), the
    /// window comes back without waiting for every D-SACK: on a reordering
    /// path the ACKs that carry them are themselves reordered, and PAWS
    /// drops the ones that fall behind (tcp_disordered_ack takes only
    /// duplicates), so D-SACK alone left three of ten recoveries uncounted
    /// and the window ratcheting down (tests/sim.rs, reordering only).
    fn try_undo_delayed(&mut self, cx: &mut Ctx<'_>) -> bool {
        let u = &self.undo;
        if !u.active || u.rexmit.is_empty() {
            return false;
        }
        let over = !self.in_recovery || self.snd_una >= u.end;
        let partial = self.loss.rack && self.in_recovery && self.rack.retrans_in_flight() == 0;
        if !over && !partial {
            return false;
        }
        let (cwnd, ssthresh) = (u.prior_cwnd, u.prior_ssthresh);
        self.undo.active = false;
        if self.in_recovery {
            self.in_recovery = false;
            self.recover = self.snd_una;
        }
        if self.loss.rack {
            self.rack.unmark_lost();
        }
        self.cc.on_undo(cwnd, ssthresh);
        cx.stats.spurious_recoveries += 1;
        cx.stats.eifel_undos += 1;
        true
    }

    /// In fast recovery with a SACK scoreboard to steer it (RFC 6675).
    fn sack_recovery(&self) -> bool {
        // With RACK the loss marks steer recovery even once SACK blocks
        // below SND.UNA are gone (a partial ACK is no NewReno signal then).
        self.in_recovery && self.opt.sack && (self.loss.rack || !self.sacked.is_empty())
    }

    /// RFC 6675 §4 SetPipe, simplified: bytes above the highest SACKed byte
    /// are in flight; holes below it count as lost unless retransmitted in
    /// this recovery (below HighRxt).
    fn sack_pipe(&self) -> u32 {
        if self.loss.rack {
            return self.rack_pipe();
        }
        let high = self
            .sacked
            .highest()
            .unwrap_or(self.snd_una)
            .max(self.snd_una);
        let above = self.snd_max.since(high);
        let rxt_end = self.high_rxt.max(self.snd_una).min(high);
        let resent = rxt_end.since(self.snd_una) - self.sacked.bytes_within(self.snd_una, rxt_end);
        above + resent
    }

    /// RFC 6937 §3 "On every ACK during recovery": DeliveredData from the
    /// change in SND.UNA and in SACKed bytes (without SACK information, a
    /// duplicate ACK stands for one SMSS, taken off the next cumulative
    /// advance), then PRR's sndcnt and the window pipe + sndcnt that
    /// dispatch sends against. Linux: tcp_cwnd_reduction.
    pub(super) fn prr_on_ack(
        &mut self,
        una_before: SeqNum,
        sacked_before: u32,
        dup: bool,
        new_sack: bool,
    ) {
        let mss = u32::from(self.mss);
        let sacked_after = self.sacked.bytes_within(self.snd_una, self.snd_max);
        let mut delivered = i64::from(self.snd_una.since(una_before)) + i64::from(sacked_after)
            - i64::from(sacked_before);
        if dup && !new_sack {
            // At most one window's worth, so that a peer splitting or
            // inventing duplicates cannot clock out data at its own rate.
            self.dup_delivered = (self.dup_delivered + mss).min(self.in_flight());
            delivered += i64::from(mss);
        }
        if self.snd_una > una_before {
            let credit = i64::from(self.dup_delivered).min(delivered.max(0));
            delivered -= credit;
            self.dup_delivered = 0;
        }
        if !self.in_recovery {
            return;
        }
        let pipe = self.recovery_pipe();
        let delivered = delivered.clamp(0, i64::from(u32::MAX)) as u32;
        let sndcnt = self.prr.on_ack(delivered, pipe, self.cc.ssthresh(), mss);
        self.prr_cwnd = pipe.saturating_add(sndcnt);
        self.prr_quota = sndcnt;
    }

    /// The data in flight during recovery: RFC 6675's pipe with a SACK
    /// scoreboard; without one, what is outstanding less what the
    /// duplicate ACKs say has left the network.
    fn recovery_pipe(&self) -> u32 {
        if self.sack_recovery() {
            self.sack_pipe()
        } else {
            self.snd_nxt
                .since(self.snd_una)
                .saturating_sub(self.dup_delivered)
        }
    }

    /// The most data one emitted segment may carry: the MSS, or with
    /// segmentation offload a multiple of it that fits `Config::tso_max`.
    fn max_chunk(&self, cfg: &Config, mss: u32) -> u32 {
        if cfg.tso_max == 0 {
            return mss;
        }
        let hdrs = self.data_header_len();
        let fit = (cfg.tso_max.saturating_sub(hdrs) as u32 / mss).max(1);
        fit * mss
    }

    /// The segment size for the device to cut the last emitted segment
    /// into, or 0 when it needs no cutting.
    pub(crate) fn last_tx_segment(&self) -> u16 {
        self.last_tx_segment
    }

    /// Whether the peer's FIN has been received in order.
    pub(crate) fn fin_received(&self) -> bool {
        self.fin_rcvd
    }
}

impl Conn {
    /// Asks for an ACK at the next dispatch (challenge ACKs, RFC 5961).
    pub(crate) fn request_ack(&mut self) {
        self.ack_now = true;
    }

    /// Answers a segment that is not acceptable (out of the window, RFC
    /// 9293 §3.10.7.4 first, or rejected by PAWS, RFC 7323 §5.3 R1) with an
    /// ACK, as Linux (tcp_oow_rate_limited):
    /// one carrying data or a FIN always gets it and leaves the limit alone
    /// (a retransmission is no part of an ACK loop); one without is held
    /// to [`Conn::oow_ack_allowed`], so two stacks can never ping-pong
    /// ACKs. SYNs never come here: they draw challenge ACKs (RFC 5961 §4.2).
    fn ack_invalid(&mut self, cx: &Ctx<'_>, seg: &TcpSegment<'_>) {
        let data = !seg.payload.is_empty() || seg.flags.fin();
        if data || self.oow_ack_allowed(cx.now, cx.cfg.oow_ack_interval) {
            self.ack_now = true;
        }
    }

    /// The per-connection limit on ACKs answering invalid segments
    /// (out-of-window segments without data, challenge ACKs): one per
    /// `interval` ([`Config::oow_ack_interval`], 500 ms), as Linux
    /// (`__tcp_oow_rate_limited`, tcp_invalid_ratelimit).
    /// Returns whether one may be sent now, and if so counts it.
    pub(crate) fn oow_ack_allowed(&mut self, now: Instant, interval: Duration) -> bool {
        let ok = self
            .last_oow_ack
            .is_none_or(|t| now.saturating_since(t) >= interval);
        if ok {
            self.last_oow_ack = Some(now);
        }
        ok
    }
}
