//! Plain counters kept by the endpoint.

use crate::wire::DropReason;

/// Counters of everything the endpoint saw and did. Plain integers: copy
/// the struct out to report it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// IP packets handed to [`crate::Endpoint::handle`].
    pub packets_in: u64,
    /// IP packets produced by [`crate::Endpoint::poll_transmit`].
    pub packets_out: u64,
    /// Bytes handed in (IP headers included).
    pub bytes_in: u64,
    /// Bytes produced (IP headers included).
    pub bytes_out: u64,
    /// TCP segments received and processed by a connection or listener.
    pub segments_in: u64,
    /// TCP segments emitted.
    pub segments_out: u64,
    /// Data segments retransmitted (RTO, fast retransmit, and SYN/FIN).
    pub retransmits: u64,
    /// Retransmission timeouts that fired.
    pub rto_timeouts: u64,
    /// Fast retransmits (RFC 5681 §3.2).
    pub fast_retransmits: u64,
    /// RSTs sent.
    pub rst_out: u64,
    /// RSTs received.
    pub rst_in: u64,
    /// Challenge ACKs sent (RFC 5961).
    pub challenge_acks: u64,
    /// Challenge ACKs suppressed by the rate limit (RFC 5961 §7).
    pub challenge_acks_suppressed: u64,
    /// SYN cookies sent (RFC 4987).
    pub syn_cookies_sent: u64,
    /// Connections established from a valid SYN cookie.
    pub syn_cookies_ok: u64,
    /// ACKs to a listener that carried an invalid cookie.
    pub syn_cookies_bad: u64,
    /// ICMP echo requests answered.
    pub icmp_echo: u64,
    /// Connections opened passively (reached ESTABLISHED from LISTEN).
    pub passive_opens: u64,
    /// Connections opened actively.
    pub active_opens: u64,
    /// Connections that reached CLOSED, any way.
    pub closed: u64,
    /// Connections reset by user timeout, retransmission limit or keep-alive.
    pub timeouts: u64,
    /// Out-of-order segments queued for reassembly.
    pub ooo_segments: u64,
    /// Segments trimmed or dropped because they fell outside the window.
    pub out_of_window: u64,
    /// Window openings repeated in a pure ACK because they had ridden on a
    /// retransmission, which the peer may not take its window from.
    pub window_updates_repeated: u64,
    /// Pure duplicate ACKs whose TSval was older than TS.Recent but within
    /// the replay window, taken (with their SACK blocks) instead of dropped
    /// by PAWS: reordered ACKs (as Linux `tcp_disordered_ack`).
    pub paws_disordered_acks: u64,
    /// Recovery episodes undone: every retransmission in them was reported
    /// needless by the peer's D-SACK (RFC 3708), or the timestamp echo of
    /// the ACK that filled the hole predates the first retransmission (RFC
    /// 3522), so the window reduction was reverted (RFC 4015).
    pub spurious_recoveries: u64,
    /// Of those, the ones undone by the timestamp echo (RFC 3522 Eifel
    /// detection; Linux TCPPartialUndo and timestamp-proven TCPFullUndo).
    pub eifel_undos: u64,
    /// D-SACK blocks received (RFC 2883): data the peer got twice.
    pub dsacks_in: u64,
    /// Segments RACK marked lost by time (RFC 8985 §6.2), each marking counted once.
    pub rack_marked_lost: u64,
    /// Retransmissions RACK found lost again (RFC 8985 §6.2 step 5), without waiting for an RTO.
    pub rack_lost_retransmits: u64,
    /// RACK reordering-window timer expirations (RFC 8985 §6.2 step 5's timer).
    pub rack_reo_timeouts: u64,
    /// Tail loss probes sent (RFC 8985 §7.3): new data or the last segment, after a PTO without an ACK.
    pub tlp_probes: u64,
    /// Tail losses a probe repaired (RFC 8985 §7.4, Linux TCPLossProbeRecovery): the window was reduced once, no RTO.
    pub tlp_repaired: u64,
    /// Retransmission timeouts F-RTO (RFC 5682 §3.1) found spurious, their window reduction undone (RFC 4015).
    pub frto_spurious_rtos: u64,
    /// Fragment reassembly (RFC 791 §3.2, RFC 8200 §4.5).
    pub reasm: ReasmStats,
    /// ICMP errors and what they did (path MTU discovery, RFC 5927 checks).
    pub icmp: IcmpStats,
    /// Packetization-layer path MTU discovery (RFC 4821).
    pub mtup: MtuProbeStats,
    /// Times the endpoint entered memory pressure: connections held more
    /// than 2/3 of [`crate::Config::mem_limit`] (Linux: TCPMemoryPressures).
    pub mem_pressure: u64,
    /// Buffer growths refused because the connections together would have
    /// held more than [`crate::Config::mem_limit`].
    pub mem_grow_refused: u64,
    /// Segments whose data (or part of it) was dropped unacknowledged
    /// because the receive buffer could not grow under the memory limit;
    /// the peer retransmits it (Linux: TCPRcvQDrop).
    pub mem_rcv_drops: u64,
    /// Application writes cut short because memory pressure held the send
    /// buffer at the storage it had.
    pub mem_send_clamped: u64,
    /// Segments that advertised a window held below the receive buffer's
    /// ceiling by memory pressure.
    pub mem_window_clamped: u64,
    /// Deferred accept ([`crate::Endpoint::listen_deferred`]).
    pub defer: DeferStats,
    /// ICMP errors we sent for datagrams nothing takes.
    pub icmp_out: IcmpOutStats,
    /// Buffer auto-tuning ([`crate::Config::autotune_buffers`]).
    pub autotune: AutotuneStats,
    /// Packets dropped, by reason. See [`DropReason`].
    pub drops: DropCounts,
}

/// The ICMP errors sent for datagrams to us that nothing takes
/// ([`crate::Config::icmp_unreachables`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IcmpOutStats {
    /// UDP datagrams to our addresses (every port is closed).
    pub udp_in: u64,
    /// Of those, malformed ones (length or checksum): dropped unanswered.
    pub udp_bad: u64,
    /// ICMP / ICMPv6 port unreachable sent.
    pub port_unreachable: u64,
    /// ICMP protocol unreachable / ICMPv6 parameter problem (unrecognized
    /// Next Header) sent.
    pub protocol_unreachable: u64,
    /// Errors not sent because of the rate limits.
    pub rate_limited: u64,
}

impl IcmpOutStats {
    /// Every counter with its name, for reports.
    pub fn named(&self) -> [(&'static str, u64); 5] {
        [
            ("udp_in", self.udp_in),
            ("udp_bad", self.udp_bad),
            ("icmp_port_unreachable_out", self.port_unreachable),
            ("icmp_protocol_unreachable_out", self.protocol_unreachable),
            ("icmp_out_rate_limited", self.rate_limited),
        ]
    }
}

/// What deferred listeners did with the SYNs they held.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeferStats {
    /// SYNs held for the application ([`crate::Event::Syn`]).
    pub syn_held: u64,
    /// Retransmitted SYNs absorbed while their first copy was held.
    pub syn_hold_dup: u64,
    /// SYNs dropped because the listener's hold queue (its backlog) was full.
    pub syn_hold_full: u64,
    /// Held SYNs given up ([`crate::Config::syn_hold_timeout`], or the
    /// listener closed).
    pub syn_hold_expired: u64,
    /// Held SYNs accepted ([`crate::Endpoint::accept_syn`]).
    pub syn_accepted_deferred: u64,
    /// Held SYNs refused with RST.
    pub syn_refused_rst: u64,
    /// Held SYNs refused with an ICMP destination unreachable.
    pub syn_refused_icmp: u64,
    /// Held SYNs refused silently.
    pub syn_refused_drop: u64,
}

impl DeferStats {
    /// Every counter with its name, for reports.
    pub fn named(&self) -> [(&'static str, u64); 8] {
        [
            ("syn_held", self.syn_held),
            ("syn_hold_dup", self.syn_hold_dup),
            ("syn_hold_full", self.syn_hold_full),
            ("syn_hold_expired", self.syn_hold_expired),
            ("syn_accepted_deferred", self.syn_accepted_deferred),
            ("syn_refused_rst", self.syn_refused_rst),
            ("syn_refused_icmp", self.syn_refused_icmp),
            ("syn_refused_drop", self.syn_refused_drop),
        ]
    }
}

/// Counters of buffer auto-tuning, in [`crate::Stats::autotune`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AutotuneStats {
    /// Receive buffers grown by dynamic right-sizing (`tcp_rcv_space_adjust`).
    pub rcvbuf_grown: u64,
    /// Send buffers grown with the congestion window (`tcp_sndbuf_expand`).
    pub sndbuf_grown: u64,
    /// Grown buffers set back to their default after the connection idled
    /// (each direction counted).
    pub buf_idle_shrunk: u64,
    /// Growths not made because of memory pressure.
    pub buf_grow_held: u64,
}

impl AutotuneStats {
    /// Every counter with its name, for reports.
    pub fn named(&self) -> [(&'static str, u64); 4] {
        [
            ("rcvbuf_grown", self.rcvbuf_grown),
            ("sndbuf_grown", self.sndbuf_grown),
            ("buf_idle_shrunk", self.buf_idle_shrunk),
            ("buf_grow_held", self.buf_grow_held),
        ]
    }
}

/// What became of the IPv4 and IPv6 fragments received.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReasmStats {
    /// Fragments received.
    pub fragments_in: u64,
    /// Datagrams reassembled whole.
    pub reassembled: u64,
    /// Datagrams discarded whole for an overlap or an inconsistent length
    /// (RFC 5722 §4), or for more than 64 fragments.
    pub overlaps: u64,
    /// Exact duplicate fragments ignored (RFC 5722 erratum 3089).
    pub duplicates: u64,
    /// Tiny or TCP-header-overlapping fragments refused (RFC 1858 §3).
    pub tiny: u64,
    /// Fragments dropped because the global or per-source budget was full.
    pub budget_drops: u64,
    /// Datagrams whose reassembly timed out.
    pub timeouts: u64,
    /// Datagrams evicted early, oldest first, to bound the queue.
    pub evicted: u64,
    /// Malformed fragments (length not a multiple of 8, beyond 65535 bytes,
    /// bad source, not to us).
    pub bad: u64,
}

impl ReasmStats {
    /// Every counter with its name (prefixed `reasm_`), for reports.
    pub fn named(&self) -> [(&'static str, u64); 9] {
        [
            ("reasm_fragments_in", self.fragments_in),
            ("reasm_reassembled", self.reassembled),
            ("reasm_overlaps", self.overlaps),
            ("reasm_duplicates", self.duplicates),
            ("reasm_tiny", self.tiny),
            ("reasm_budget_drops", self.budget_drops),
            ("reasm_timeouts", self.timeouts),
            ("reasm_evicted", self.evicted),
            ("reasm_bad", self.bad),
        ]
    }
}

/// What became of the ICMP and ICMPv6 error messages received.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IcmpStats {
    /// Well-formed ICMP errors quoting a TCP segment.
    pub errors_in: u64,
    /// "Fragmentation needed" / "packet too big" that lowered a path MTU.
    pub pmtu_lowered: u64,
    /// Of those, how many named an MTU below the floor and were raised to it.
    pub pmtu_clamped: u64,
    /// "Too big" messages whose MTU was not below the path MTU known (ignored).
    pub pmtu_not_lower: u64,
    /// Connections whose MSS was lowered by a path MTU change.
    pub mss_lowered: u64,
    /// Errors quoting a 4-tuple of no connection (ignored, RFC 5927 §4.1).
    pub no_connection: u64,
    /// Errors whose quoted sequence number lay outside SND.UNA..SND.NXT
    /// (ignored, RFC 5927 §4.1; Linux's `OutOfWindowIcmps`).
    pub out_of_window: u64,
    /// Errors quoting a packet not from the address they were sent to (ignored).
    pub bad_quote: u64,
    /// Connection attempts ended by an ICMP error (RFC 1122 §4.2.3.9).
    pub aborted: u64,
    /// Soft errors recorded on synchronized connections (RFC 5461).
    pub soft_errors: u64,
    /// ICMPv6 Parameter Problems sent for refused extension headers (RFC
    /// 8200 §4, RFC 4443 §3.4).
    pub param_problems_out: u64,
    /// ICMP Time Exceeded (fragment reassembly) sent for datagrams that
    /// timed out with their first fragment in (RFC 792, RFC 8200 §4.5).
    pub time_exceeded_out: u64,
}

impl IcmpStats {
    /// Every counter with its name (prefixed `icmp_`), for reports.
    pub fn named(&self) -> [(&'static str, u64); 12] {
        [
            ("icmp_errors_in", self.errors_in),
            ("icmp_pmtu_lowered", self.pmtu_lowered),
            ("icmp_pmtu_clamped", self.pmtu_clamped),
            ("icmp_pmtu_not_lower", self.pmtu_not_lower),
            ("icmp_mss_lowered", self.mss_lowered),
            ("icmp_no_connection", self.no_connection),
            ("icmp_out_of_window", self.out_of_window),
            ("icmp_bad_quote", self.bad_quote),
            ("icmp_aborted", self.aborted),
            ("icmp_soft_errors", self.soft_errors),
            ("icmp_param_problems_out", self.param_problems_out),
            ("icmp_time_exceeded_out", self.time_exceeded_out),
        ]
    }
}

/// What packetization-layer path MTU discovery did (RFC 4821; the names
/// follow Linux's `TCPMTUP*` counters).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MtuProbeStats {
    /// Black holes detected: repeated RTOs lowered a connection's MSS
    /// (Linux `tcp_mtu_probing`).
    pub blackholes: u64,
    /// Probes sent: one segment larger than the MSS (Linux `tcp_mtu_probe`).
    pub probes: u64,
    /// Probes acknowledged: the MSS rose (Linux TCPMTUPSuccess).
    pub success: u64,
    /// Probes lost: the search range's top fell (Linux TCPMTUPFail).
    pub fail: u64,
}

impl MtuProbeStats {
    /// Every counter with its name (prefixed `mtup_`), for reports.
    pub fn named(&self) -> [(&'static str, u64); 4] {
        [
            ("mtup_blackholes", self.blackholes),
            ("mtup_probes", self.probes),
            ("mtup_success", self.success),
            ("mtup_fail", self.fail),
        ]
    }
}

/// One counter per [`DropReason`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DropCounts {
    /// [`DropReason::Truncated`]
    pub truncated: u64,
    /// [`DropReason::BadIpVersion`]
    pub bad_ip_version: u64,
    /// [`DropReason::BadIpLength`]
    pub bad_ip_length: u64,
    /// [`DropReason::BadIpChecksum`]
    pub bad_ip_checksum: u64,
    /// [`DropReason::Fragment`]
    pub fragment: u64,
    /// [`DropReason::BadIpv6Extension`]
    pub bad_ipv6_extension: u64,
    /// [`DropReason::NotOurAddress`]
    pub not_our_address: u64,
    /// [`DropReason::UnsupportedProtocol`]
    pub unsupported_protocol: u64,
    /// [`DropReason::BadTcpHeader`]
    pub bad_tcp_header: u64,
    /// [`DropReason::BadTcpChecksum`]
    pub bad_tcp_checksum: u64,
    /// [`DropReason::BadSourceAddress`]
    pub bad_source_address: u64,
    /// [`DropReason::BadTcpFlags`]
    pub bad_tcp_flags: u64,
    /// [`DropReason::BadIcmp`]
    pub bad_icmp: u64,
    /// [`DropReason::IcmpIgnored`]
    pub icmp_ignored: u64,
    /// [`DropReason::NoListener`]
    pub no_listener: u64,
    /// [`DropReason::Unacceptable`]
    pub unacceptable: u64,
    /// [`DropReason::Paws`]
    pub paws: u64,
    /// [`DropReason::ListenOverflow`]
    pub listen_overflow: u64,
    /// [`DropReason::TableFull`]
    pub table_full: u64,
    /// [`DropReason::ConnLimit`]
    pub conn_limit: u64,
    /// [`DropReason::SourceLimit`]
    pub source_limit: u64,
    /// [`DropReason::ControlQueueFull`]
    pub control_queue_full: u64,
    /// [`DropReason::ReplyTooLong`]
    pub reply_too_long: u64,
}

impl DropCounts {
    /// Counts one drop.
    pub fn count(&mut self, r: DropReason) {
        let c = match r {
            DropReason::Truncated => &mut self.truncated,
            DropReason::BadIpVersion => &mut self.bad_ip_version,
            DropReason::BadIpLength => &mut self.bad_ip_length,
            DropReason::BadIpChecksum => &mut self.bad_ip_checksum,
            DropReason::Fragment => &mut self.fragment,
            DropReason::BadIpv6Extension => &mut self.bad_ipv6_extension,
            DropReason::NotOurAddress => &mut self.not_our_address,
            DropReason::UnsupportedProtocol => &mut self.unsupported_protocol,
            DropReason::BadTcpHeader => &mut self.bad_tcp_header,
            DropReason::BadTcpChecksum => &mut self.bad_tcp_checksum,
            DropReason::BadSourceAddress => &mut self.bad_source_address,
            DropReason::BadTcpFlags => &mut self.bad_tcp_flags,
            DropReason::BadIcmp => &mut self.bad_icmp,
            DropReason::IcmpIgnored => &mut self.icmp_ignored,
            DropReason::NoListener => &mut self.no_listener,
            DropReason::Unacceptable => &mut self.unacceptable,
            DropReason::Paws => &mut self.paws,
            DropReason::ListenOverflow => &mut self.listen_overflow,
            DropReason::TableFull => &mut self.table_full,
            DropReason::ConnLimit => &mut self.conn_limit,
            DropReason::SourceLimit => &mut self.source_limit,
            DropReason::ControlQueueFull => &mut self.control_queue_full,
            DropReason::ReplyTooLong => &mut self.reply_too_long,
        };
        *c += 1;
    }

    /// Every counter with its name, for reports.
    pub fn named(&self) -> [(&'static str, u64); 23] {
        [
            ("truncated", self.truncated),
            ("bad_ip_version", self.bad_ip_version),
            ("bad_ip_length", self.bad_ip_length),
            ("bad_ip_checksum", self.bad_ip_checksum),
            ("fragment", self.fragment),
            ("bad_ipv6_extension", self.bad_ipv6_extension),
            ("not_our_address", self.not_our_address),
            ("unsupported_protocol", self.unsupported_protocol),
            ("bad_tcp_header", self.bad_tcp_header),
            ("bad_tcp_checksum", self.bad_tcp_checksum),
            ("bad_source_address", self.bad_source_address),
            ("bad_tcp_flags", self.bad_tcp_flags),
            ("bad_icmp", self.bad_icmp),
            ("icmp_ignored", self.icmp_ignored),
            ("no_listener", self.no_listener),
            ("unacceptable", self.unacceptable),
            ("paws", self.paws),
            ("listen_overflow", self.listen_overflow),
            ("table_full", self.table_full),
            ("conn_limit", self.conn_limit),
            ("source_limit", self.source_limit),
            ("control_queue_full", self.control_queue_full),
            ("reply_too_long", self.reply_too_long),
        ]
    }

    /// Sum of all drop counters.
    pub fn total(&self) -> u64 {
        self.named().iter().map(|(_, v)| v).sum()
    }
}
