//! Wire formats: packet views and their parsed representations, no state.
//!
//! The contract (after smoltcp): `parse_*` takes untrusted bytes and either
//! returns a representation whose every field is in range, or a [`DropReason`];
//! nothing a packet contains can make it panic. `emit_*` writes into a
//! caller-owned buffer and never allocates.

mod checksum;
mod icmp;
mod icmp_err;
mod icmp_unreach;
mod ip;
mod tcp;

pub use checksum::{checksum_fold, checksum_sum, pseudo_header_sum};
pub use icmp::{emit_icmp_echo_reply, parse_icmp_echo, IcmpEcho};
pub use icmp_err::{
    parse_icmp_error, plateau_below, v6_carries_icmp_error, v6_param_problem, IcmpError,
    IcmpErrorKind, IcmpErrorMsg,
};
pub use icmp_unreach::{
    emit_icmp_error, icmp_quote_room, Unreach, ICMPV6_DEST_UNREACH, ICMPV6_PARAM_PROBLEM,
    ICMPV6_PORT_UNREACH, ICMPV6_UNRECOGNIZED_NEXT_HEADER, ICMP_DEST_UNREACH, ICMP_ERROR_MAX_V4,
    ICMP_ERROR_MAX_V6, ICMP_PORT_UNREACH, ICMP_PROTOCOL_UNREACH,
};
pub use ip::{
    emit_ip_header, ip_header_len, parse_ip, valid_source, IpPacket, MAX_IPV6_EXTENSIONS,
    PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP,
};
pub use tcp::{
    emit_tcp, emit_tcp_with, parse_tcp, parse_tcp_with, tcp_payload_offset, SackBlocks, TcpFlags,
    TcpOptions, TcpRepr, TcpSegment, MAX_SACK_BLOCKS,
};

/// Why a packet was dropped. Each reason has a counter in [`crate::Stats`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// Shorter than the smallest header it claims to be.
    Truncated,
    /// IP version neither 4 nor 6.
    BadIpVersion,
    /// IPv4 IHL below 5 or beyond the packet, or a total/payload length that does not fit.
    BadIpLength,
    /// IPv4 header checksum wrong.
    BadIpChecksum,
    /// An IPv4 or IPv6 fragment (reassembly is not implemented).
    Fragment,
    /// An IPv6 extension header that runs past the packet or cannot be skipped.
    BadIpv6Extension,
    /// Addressed to an address this endpoint does not own.
    NotOurAddress,
    /// A transport protocol the endpoint does not speak (UDP, ...).
    UnsupportedProtocol,
    /// TCP data offset below 5 or beyond the segment.
    BadTcpHeader,
    /// TCP checksum wrong.
    BadTcpChecksum,
    /// A source address that never names a sender (RFC 1122 §3.2.1.3, RFC
    /// 4291 §2.5.2–2.5.3): unspecified, "this network", multicast,
    /// broadcast, or loopback on a packet not to a loopback address.
    BadSourceAddress,
    /// TCP segment with invalid flag combination (e.g. SYN+RST).
    BadTcpFlags,
    /// ICMP message truncated or with a wrong checksum.
    BadIcmp,
    /// An ICMP message other than echo request (not answered).
    IcmpIgnored,
    /// A TCP segment for a port with no listener and no connection
    /// (answered with RST; counted here too).
    NoListener,
    /// Rejected by the connection's acceptability test (RFC 9293 §3.10.7.4).
    Unacceptable,
    /// Timestamp older than the last one seen (RFC 7323 §5 PAWS).
    Paws,
    /// SYN queue and accept queue full, or SYN cookie invalid.
    ListenOverflow,
    /// The connection table is full.
    TableFull,
    /// A SYN (or a SYN cookie's ACK) beyond [`crate::Config::max_passive`]:
    /// dropped unanswered, as Linux drops a SYN while the accept queue is
    /// full, so the client retries with its SYN back-off.
    ConnLimit,
    /// A SYN (or a SYN cookie's ACK) from a source address that already
    /// holds [`crate::Config::max_passive_per_source`] connections:
    /// answered with RST (connection refused).
    SourceLimit,
    /// The endpoint's queue of control replies was full.
    ControlQueueFull,
    /// A reply that cannot go out within the MTU: an ICMPv6 echo request
    /// whose reply would exceed it (RFC 4443 §4.2 wants the data back
    /// whole, and replies are not fragmented), or a queued reply larger
    /// than a transmit buffer of at least the MTU.
    ReplyTooLong,
}
