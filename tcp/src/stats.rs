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
    /// Recovery episodes undone: every retransmission in them was reported
    /// needless by the peer's D-SACK (RFC 3708), so the window reduction was
    /// reverted (RFC 4015).
    pub spurious_recoveries: u64,
    /// D-SACK blocks received (RFC 2883): data the peer got twice.
    pub dsacks_in: u64,
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
    /// Packets dropped, by reason. See [`DropReason`].
    pub drops: DropCounts,
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
            DropReason::ControlQueueFull => &mut self.control_queue_full,
            DropReason::ReplyTooLong => &mut self.reply_too_long,
        };
        *c += 1;
    }

    /// Every counter with its name, for reports.
    pub fn named(&self) -> [(&'static str, u64); 21] {
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
            ("control_queue_full", self.control_queue_full),
            ("reply_too_long", self.reply_too_long),
        ]
    }

    /// Sum of all drop counters.
    pub fn total(&self) -> u64 {
        self.named().iter().map(|(_, v)| v).sum()
    }
}
