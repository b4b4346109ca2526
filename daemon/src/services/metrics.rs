//! `/metrics`: the figures of `/stats` in the Prometheus text exposition
//! format, version 0.0.4 (served as [`CONTENT_TYPE`]).
//!
//! Every counter and gauge of the [`Status`] becomes one metric family named
//! `tcpd_...`, with a `# HELP` and a `# TYPE` line before its samples:
//!
//! | `/stats` | metric |
//! |---|---|
//! | `uptime_ms` | `tcpd_uptime_seconds` (gauge) |
//! | `iface`, `mtu` | `tcpd_mtu_bytes{iface="tun0"}` (gauge) |
//! | `addrs` | `tcpd_address_info{address="10.0.0.2"} 1` (gauge) |
//! | `services` | `tcpd_service_port{service="http"}` (gauge) |
//! | `connections` | `tcpd_connections{state="ESTABLISHED"}` (gauge) |
//! | `tcp.NAME` | `tcpd_tcp_NAME_total` (counter) |
//! | `drops.REASON` | `tcpd_tcp_drops_total{reason="REASON"}` (counter) |
//! | `daemon.NAME` | `tcpd_daemon_NAME_total` (counter), or `tcpd_daemon_NAME` for a gauge |
//!
//! The HELP texts are [`TCP_HELP`] and [`DAEMON_HELP`]; a daemon counter
//! missing from the table still appears, as a counter with a generic HELP.
//!
//! Why not the `prometheus-client` crate: its text encoder writes
//! OpenMetrics 1.0 (counter samples get a `_total` suffix their `# TYPE`
//! line lacks, and a final `# EOF`), which a Prometheus 0.0.4 parser reads
//! as untyped samples; and it wants a registry of live metric objects where
//! ours arrive as `(name, u64)` pairs per publication. The format below is
//! small, and the escaping rules are those of the 0.0.4 specification:
//! in HELP text `\` and newline are escaped, in label values also `"`.

use super::{Rendered, Status};
use std::io::Write;

/// The content type of the 0.0.4 text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What a figure is to Prometheus.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Only ever grows (until a restart).
    Counter,
    /// Goes up and down.
    Gauge,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        }
    }
}

/// One-line descriptions of the endpoint's counters
/// ([`super::stats_fields`], [`tcp::Stats`]).
pub const TCP_HELP: &[(&str, &str)] = &[
    ("packets_in", "IP packets handed to the endpoint."),
    ("packets_out", "IP packets the endpoint produced."),
    (
        "bytes_in",
        "Bytes handed to the endpoint, IP headers included.",
    ),
    (
        "bytes_out",
        "Bytes the endpoint produced, IP headers included.",
    ),
    (
        "segments_in",
        "TCP segments received and processed by a connection or listener.",
    ),
    ("segments_out", "TCP segments emitted."),
    (
        "retransmits",
        "Segments retransmitted (RTO, fast retransmit, SYN and FIN).",
    ),
    (
        "rto_timeouts",
        "Retransmission timeouts that fired (RFC 6298).",
    ),
    (
        "fast_retransmits",
        "Fast retransmits (RFC 5681 section 3.2).",
    ),
    ("rst_out", "RST segments sent."),
    ("rst_in", "RST segments received."),
    ("challenge_acks", "Challenge ACKs sent (RFC 5961)."),
    (
        "challenge_acks_suppressed",
        "Challenge ACKs suppressed by the rate limit (RFC 5961 section 7).",
    ),
    ("syn_cookies_sent", "SYN cookies sent (RFC 4987)."),
    (
        "syn_cookies_ok",
        "Connections established from a valid SYN cookie.",
    ),
    (
        "syn_cookies_bad",
        "ACKs to a listener that carried an invalid SYN cookie.",
    ),
    ("icmp_echo", "ICMP echo requests answered."),
    (
        "passive_opens",
        "Connections opened passively (LISTEN to ESTABLISHED).",
    ),
    ("active_opens", "Connections opened actively."),
    ("closed", "Connections that reached CLOSED, any way."),
    (
        "timeouts",
        "Connections reset by user timeout, retransmission limit or keep-alive.",
    ),
    (
        "ooo_segments",
        "Out-of-order segments queued for reassembly.",
    ),
    (
        "out_of_window",
        "Segments trimmed or dropped because they fell outside the window.",
    ),
    (
        "window_updates_repeated",
        "Window openings repeated in a pure ACK after riding on a retransmission.",
    ),
    (
        "dsacks_in",
        "D-SACK blocks received (RFC 2883): data the peer got twice.",
    ),
    (
        "spurious_recoveries",
        "Recoveries undone because D-SACK or the timestamp echo showed them needless (RFC 3708, RFC 3522, RFC 4015).",
    ),
    (
        "eifel_undos",
        "Fast recoveries undone because the ACK filling the hole echoed a timestamp from before the first retransmission (RFC 3522).",
    ),
    (
        "rack_marked_lost",
        "Segments RACK (RFC 8985 §6.2) marked lost by time.",
    ),
    (
        "rack_lost_retransmits",
        "Retransmissions RACK found lost again, without an RTO.",
    ),
    (
        "rack_reo_timeouts",
        "RACK reordering-window timer expirations.",
    ),
    (
        "tlp_probes",
        "Tail loss probes sent (RFC 8985 §7).",
    ),
    (
        "tlp_repaired",
        "Losses a tail loss probe repaired (RFC 8985 §7.4).",
    ),
    (
        "frto_spurious_rtos",
        "RTOs F-RTO found spurious and undid (RFC 5682).",
    ),    (
        "paws_disordered_acks",
        "Duplicate ACKs older than TS.Recent taken within the replay window (Linux tcp_disordered_ack).",
    ),
    (
        "mem_pressure",
        "Times the connections' buffers went above 2/3 of the memory limit (memory pressure).",
    ),
    (
        "mem_grow_refused",
        "Buffer growths refused at the memory limit.",
    ),
    (
        "mem_rcv_drops",
        "Segments whose data was dropped unacknowledged because the receive buffer could not grow.",
    ),
    (
        "mem_send_clamped",
        "Application writes cut short by memory pressure.",
    ),
    (
        "mem_window_clamped",
        "Receive windows held to the storage a connection had, under memory pressure.",
    ),
    (
        "rcvbuf_grown",
        "Receive buffers grown by dynamic right-sizing (Linux tcp_rcv_space_adjust).",
    ),
    (
        "sndbuf_grown",
        "Send buffers grown with the congestion window (Linux tcp_sndbuf_expand).",
    ),
    (
        "buf_idle_shrunk",
        "Grown buffers set back to their default after the connection idled.",
    ),
    (
        "buf_grow_held",
        "Buffer growths not made because of memory pressure.",
    ),
    (
        "icmp_errors_in",
        "ICMP and ICMPv6 errors received.",
    ),
    (
        "icmp_pmtu_lowered",
        "Fragmentation-needed / packet-too-big errors that lowered a path MTU (RFC 1191, RFC 8201).",
    ),
    (
        "icmp_pmtu_clamped",
        "Path MTU reports below the floor, raised to it (IPv4 552, IPv6 1280).",
    ),
    (
        "icmp_pmtu_not_lower",
        "Path MTU reports that did not lower the path MTU, ignored.",
    ),
    (
        "icmp_mss_lowered",
        "Connections whose MSS a lowered path MTU reduced.",
    ),
    (
        "icmp_no_connection",
        "ICMP errors whose quoted header named no connection (RFC 5927), ignored.",
    ),
    (
        "icmp_out_of_window",
        "ICMP errors whose quoted sequence number was outside SND.UNA..SND.NXT (RFC 5927), ignored.",
    ),
    (
        "icmp_bad_quote",
        "ICMP errors with an unusable quoted packet, ignored.",
    ),
    (
        "icmp_aborted",
        "Connection attempts ended by a hard ICMP error (RFC 1122 4.2.3.9).",
    ),
    (
        "icmp_soft_errors",
        "ICMP errors kept as soft errors of a synchronized connection.",
    ),
    (
        "icmp_param_problems_out",
        "ICMPv6 Parameter Problems sent for refused IPv6 extension headers (RFC 8200 4).",
    ),
    (
        "icmp_time_exceeded_out",
        "ICMP Time Exceeded sent for datagrams whose reassembly timed out (RFC 792, RFC 8200 4.5).",
    ),
    (
        "reasm_fragments_in",
        "IP fragments taken into reassembly.",
    ),
    (
        "reasm_reassembled",
        "Datagrams reassembled from fragments.",
    ),
    (
        "reasm_overlaps",
        "Datagrams discarded whole for overlapping fragments (RFC 5722).",
    ),
    (
        "reasm_duplicates",
        "Exact duplicate fragments ignored.",
    ),
    (
        "reasm_tiny",
        "Tiny or offset-8 TCP fragments refused (RFC 1858).",
    ),
    (
        "reasm_budget_drops",
        "Fragments dropped because the global or per-source reassembly budget was full.",
    ),
    (
        "reasm_timeouts",
        "Datagrams whose reassembly timed out.",
    ),
    (
        "reasm_evicted",
        "Datagrams evicted early to bound the reassembly queue.",
    ),
    (
        "reasm_bad",
        "Malformed fragments dropped.",
    ),
    (
        "syn_held",
        "SYNs held by a deferred listener for the application to decide on.",
    ),
    (
        "syn_hold_dup",
        "Retransmitted SYNs absorbed while their first copy was held.",
    ),
    (
        "syn_hold_full",
        "SYNs dropped because a deferred listener's hold queue was full.",
    ),
    (
        "syn_hold_expired",
        "Held SYNs given up (hold timeout or listener closed).",
    ),
    (
        "syn_accepted_deferred",
        "Held SYNs accepted (SYN-ACK sent on the application's word).",
    ),
    (
        "syn_refused_rst",
        "Held SYNs refused with RST.",
    ),
    (
        "syn_refused_icmp",
        "Held SYNs refused with an ICMP destination unreachable.",
    ),
    (
        "syn_refused_drop",
        "Held SYNs refused silently.",
    ),
    (
        "udp_in",
        "UDP datagrams to our addresses (no UDP sockets: every port is closed).",
    ),
    (
        "udp_bad",
        "UDP datagrams with a bad length or checksum, dropped unanswered.",
    ),
    (
        "icmp_port_unreachable_out",
        "ICMP port unreachable messages sent for UDP datagrams (RFC 1122 4.1.3.1).",
    ),
    (
        "icmp_protocol_unreachable_out",
        "ICMP protocol unreachable / ICMPv6 unrecognized next header messages sent.",
    ),
    (
        "icmp_out_rate_limited",
        "ICMP errors not sent because of the rate limits.",
    ),
    (
        "mtup_blackholes",
        "Black holes detected: repeated RTOs lowered a connection's MSS (RFC 4821, Linux tcp_mtu_probing).",
    ),
    (
        "mtup_probes",
        "Path MTU probes sent: one segment larger than the MSS (RFC 4821).",
    ),
    (
        "mtup_success",
        "Path MTU probes acknowledged: the MSS rose (Linux TCPMTUPSuccess).",
    ),
    (
        "mtup_fail",
        "Path MTU probes lost: the search's top fell (Linux TCPMTUPFail).",
    ),
];

/// One-line descriptions and kinds of the daemon's figures (the reactor's
/// counters, the device layers' counters, the buffer pool).
pub const DAEMON_HELP: &[(&str, Kind, &str)] = &[
    ("wakeups", Kind::Counter, "Reactor wake-ups."),
    (
        "rx_packets",
        Kind::Counter,
        "Packets read from the device and handed to the endpoint.",
    ),
    (
        "tx_packets",
        Kind::Counter,
        "Packets the endpoint produced that the device took.",
    ),
    (
        "tx_retries",
        Kind::Counter,
        "Device writes refused for now, kept and retried.",
    ),
    (
        "tx_errors",
        Kind::Counter,
        "Packets the device refused with a hard error (dropped).",
    ),
    (
        "rx_errors",
        Kind::Counter,
        "Device read errors other than WouldBlock.",
    ),
    (
        "accepted",
        Kind::Counter,
        "Connections accepted and handed to a service.",
    ),
    (
        "refused",
        Kind::Counter,
        "Connections refused at accept (shutting down, no service).",
    ),
    (
        "worker_batches_out",
        Kind::Counter,
        "Event batches handed to worker threads.",
    ),
    (
        "worker_batches_in",
        Kind::Counter,
        "Command batches received from worker threads.",
    ),
    (
        "worker_queue_full",
        Kind::Counter,
        "Times a worker's event queue was full (reading paused).",
    ),
    (
        "worker_batches_helped",
        Kind::Counter,
        "Event batches the reactor ran itself for a sleeping worker instead of waking it.",
    ),
    (
        "bytes_to_services",
        Kind::Counter,
        "Payload bytes handed to the services.",
    ),
    (
        "bytes_from_services",
        Kind::Counter,
        "Payload bytes the services sent.",
    ),
    (
        "short_sends",
        Kind::Counter,
        "Sends the endpoint took only in part (kept and retried).",
    ),
    (
        "credit_grants",
        Kind::Counter,
        "Send credit grants (writable events) to workers.",
    ),
    ("resets", Kind::Counter, "Connections reset by the peer."),
    ("timeouts", Kind::Counter, "Connections that timed out."),
    (
        "shutdown_resets",
        Kind::Counter,
        "Connections reset at the end of a shutdown's grace period.",
    ),
    (
        "tx_oversize",
        Kind::Counter,
        "Packets the endpoint produced that exceed the MTU.",
    ),
    (
        "rx_flood_yields",
        Kind::Counter,
        "Device drains cut short under a flood (cookies or drops) so that the handlers ran.",
    ),
    (
        "dev_rx_gso",
        Kind::Counter,
        "Coalesced (GRO) packets read from the TUN device.",
    ),
    (
        "dev_rx_syn_queue",
        Kind::Counter,
        "Packets read from the TUN device's SYN queue (pure SYNs, steered by eBPF).",
    ),
    (
        "dev_tx_synack_thread",
        Kind::Counter,
        "SYN-ACKs written by the SYN-ACK writer thread during a SYN flood.",
    ),
    (
        "dev_tx_synack_errors",
        Kind::Counter,
        "SYN-ACKs the SYN-ACK writer thread could not write.",
    ),
    (
        "dev_tx_gso",
        Kind::Counter,
        "Segmentation-offload (TSO/GSO) packets written to the TUN device.",
    ),
    (
        "dev_rx_packets",
        Kind::Counter,
        "Packets read from the TUN device.",
    ),
    (
        "dev_tx_packets",
        Kind::Counter,
        "Packets written to the TUN device.",
    ),
    (
        "dev_rx_bytes",
        Kind::Counter,
        "Bytes read from the TUN device.",
    ),
    (
        "dev_tx_bytes",
        Kind::Counter,
        "Bytes written to the TUN device.",
    ),
    (
        "pcap_records",
        Kind::Counter,
        "Packets recorded to the pcap capture.",
    ),
    (
        "pcap_lost",
        Kind::Counter,
        "Packets the pcap capture lacks because its writer fell behind.",
    ),
    (
        "fault_rx_dropped",
        Kind::Counter,
        "Inbound packets the fault injector dropped.",
    ),
    (
        "fault_tx_dropped",
        Kind::Counter,
        "Outbound packets the fault injector dropped.",
    ),
    (
        "fault_rx_duplicated",
        Kind::Counter,
        "Inbound packets the fault injector duplicated.",
    ),
    (
        "fault_tx_duplicated",
        Kind::Counter,
        "Outbound packets the fault injector duplicated.",
    ),
    (
        "fault_rx_reordered",
        Kind::Counter,
        "Inbound packets the fault injector reordered.",
    ),
    (
        "fault_tx_reordered",
        Kind::Counter,
        "Outbound packets the fault injector reordered.",
    ),
    (
        "fault_rx_corrupted",
        Kind::Counter,
        "Inbound packets the fault injector corrupted.",
    ),
    (
        "fault_tx_corrupted",
        Kind::Counter,
        "Outbound packets the fault injector corrupted.",
    ),
    (
        "fault_rx_delayed",
        Kind::Counter,
        "Inbound packets the fault injector delayed.",
    ),
    (
        "fault_tx_delayed",
        Kind::Counter,
        "Outbound packets the fault injector delayed.",
    ),
    (
        "fault_queue_full",
        Kind::Counter,
        "Packets passed undelayed because the fault injector's queue was full.",
    ),
    (
        "pool_buffers",
        Kind::Gauge,
        "Free packet buffers in the reactor's pool.",
    ),
];

/// One-line descriptions of the per-rule forwarding counters
/// ([`crate::forward::FwdCounter`]), metrics `tcpd_forward_NAME_total`
/// (`tcpd_forward_open` is a gauge) with a `forward` label naming the rule.
pub const FORWARD_HELP: &[(&str, &str)] = &[
    (
        "accepted",
        "Forwarded connections spliced: the upstream connected and the client was accepted.",
    ),
    (
        "refused",
        "Forwarded connections refused before any upstream connect (--deny/--allow, own address, shutdown, no slot).",
    ),
    (
        "connect_refused",
        "Upstream connects refused (ECONNREFUSED).",
    ),
    (
        "connect_unreachable",
        "Upstream connects without a route (EHOSTUNREACH, ENETUNREACH).",
    ),
    (
        "connect_timeout",
        "Upstream connects that took longer than --connect-timeout.",
    ),
    (
        "connect_error",
        "Upstream connects that failed for another reason.",
    ),
    (
        "bytes_to_upstream",
        "Bytes from clients written to upstream sockets.",
    ),
    (
        "bytes_from_upstream",
        "Bytes read from upstream sockets and queued to clients.",
    ),
    ("open", "Forwarded connections open now."),
    (
        "idle_timeouts",
        "Forwarded connections reset after --forward-idle-timeout without traffic.",
    ),
    (
        "client_resets",
        "Forwarded connections the client side ended dirty (RST, timeout): the upstream got a RST.",
    ),
    (
        "upstream_resets",
        "Forwarded connections the upstream reset or broke: the client got a RST.",
    ),
    (
        "socks_ok",
        "SOCKS5 handshakes (--upstream) that ended with the proxy connected to the destination.",
    ),
    (
        "socks_no_method",
        "SOCKS5 proxies that accepted none of the authentication methods offered.",
    ),
    (
        "socks_auth_failed",
        "SOCKS5 proxies that rejected the user name and password (RFC 1929).",
    ),
    (
        "socks_not_allowed",
        "SOCKS5 CONNECT replies 'not allowed by ruleset': the client got ICMP administratively prohibited.",
    ),
    (
        "socks_unreachable",
        "SOCKS5 CONNECT replies 'network/host unreachable': the client got the ICMP error of that name.",
    ),
    (
        "socks_refused",
        "SOCKS5 CONNECT replies 'connection refused': the client got a RST.",
    ),
    (
        "socks_failed",
        "SOCKS5 CONNECT replies with another failure code: the client got a RST.",
    ),
    (
        "socks_malformed",
        "SOCKS5 answers that broke the protocol: the client got a RST.",
    ),
    (
        "socks_closed",
        "SOCKS5 proxies that closed the connection during the handshake.",
    ),
];

/// The metric name and kind of the forwarding counter `name`.
pub fn forward_metric(name: &str) -> (String, Kind) {
    if name == "open" {
        ("tcpd_forward_open".to_string(), Kind::Gauge)
    } else {
        (format!("tcpd_forward_{name}_total"), Kind::Counter)
    }
}

/// The metric name of the endpoint counter `name`.
pub fn tcp_metric(name: &str) -> String {
    format!("tcpd_tcp_{name}_total")
}

/// The metric name, kind and HELP text of the daemon figure `name` (a
/// character a metric name may not hold becomes `_`).
pub fn daemon_metric(name: &str) -> (String, Kind, &'static str) {
    let clean: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let name = clean.as_str();
    match DAEMON_HELP.iter().find(|(n, _, _)| *n == name) {
        Some((_, Kind::Gauge, help)) => (format!("tcpd_daemon_{name}"), Kind::Gauge, help),
        Some((_, Kind::Counter, help)) => {
            (format!("tcpd_daemon_{name}_total"), Kind::Counter, help)
        }
        None => (
            format!("tcpd_daemon_{name}_total"),
            Kind::Counter,
            "A daemon counter (see /stats).",
        ),
    }
}

/// The `/metrics` text of `st`, in two pieces: the uptime in seconds goes
/// between them (it changes per request, the rest per publication).
pub fn render(st: &Status) -> Rendered {
    let mut head = Vec::with_capacity(128);
    family(
        &mut head,
        "tcpd_uptime_seconds",
        Kind::Gauge,
        "Seconds since tcpd started.",
    );
    head.extend_from_slice(b"tcpd_uptime_seconds ");
    let mut b = Vec::with_capacity(16 * 1024);
    b.push(b'\n');
    family(
        &mut b,
        "tcpd_mtu_bytes",
        Kind::Gauge,
        "MTU of the TUN device.",
    );
    sample(
        &mut b,
        "tcpd_mtu_bytes",
        Some(("iface", &st.iface)),
        st.mtu as u64,
    );
    family(
        &mut b,
        "tcpd_address_info",
        Kind::Gauge,
        "An address the stack answers on (always 1).",
    );
    for a in &st.addrs {
        sample(
            &mut b,
            "tcpd_address_info",
            Some(("address", &a.to_string())),
            1,
        );
    }
    family(
        &mut b,
        "tcpd_service_port",
        Kind::Gauge,
        "The TCP port a service listens on.",
    );
    for (name, port) in &st.services {
        sample(
            &mut b,
            "tcpd_service_port",
            Some(("service", name)),
            u64::from(*port),
        );
    }
    family(
        &mut b,
        "tcpd_connections",
        Kind::Gauge,
        "Open connections by RFC 9293 state.",
    );
    for (state, n) in &st.states {
        sample(
            &mut b,
            "tcpd_connections",
            Some(("state", state.name())),
            *n as u64,
        );
    }
    for (name, v) in super::stats_fields(&st.stats) {
        let metric = tcp_metric(name);
        let help = TCP_HELP
            .iter()
            .find(|(n, _)| *n == name)
            .map_or("An endpoint counter (see /stats).", |(_, h)| h);
        family(&mut b, &metric, Kind::Counter, help);
        sample(&mut b, &metric, None, v);
    }
    family(
        &mut b,
        "tcpd_tcp_drops_total",
        Kind::Counter,
        "Packets the endpoint dropped, by reason (tcp::wire::DropReason).",
    );
    for (reason, v) in st.stats.drops.named() {
        sample(&mut b, "tcpd_tcp_drops_total", Some(("reason", reason)), v);
    }
    for (name, v) in &st.daemon {
        let (metric, kind, help) = daemon_metric(name);
        family(&mut b, &metric, kind, help);
        sample(&mut b, &metric, None, *v);
    }
    if let Some((_, first)) = st.forwards.first() {
        for (k, (name, _)) in first.iter().enumerate() {
            let (metric, kind) = forward_metric(name);
            let help = FORWARD_HELP
                .iter()
                .find(|(n, _)| n == name)
                .map_or("A forwarding counter (see /stats).", |(_, h)| h);
            family(&mut b, &metric, kind, help);
            for (rule, counters) in &st.forwards {
                if let Some((_, v)) = counters.get(k) {
                    sample(&mut b, &metric, Some(("forward", rule)), *v);
                }
            }
        }
    }
    Rendered {
        parts: vec![head, b],
    }
}

/// Writes the uptime as the text format's float: seconds with millisecond
/// precision.
pub fn write_uptime(out: &mut Vec<u8>, up: std::time::Duration) {
    let _ = write!(out, "{}.{:03}", up.as_secs(), up.subsec_millis());
}

/// The `# HELP` and `# TYPE` lines of a family.
fn family(b: &mut Vec<u8>, name: &str, kind: Kind, help: &str) {
    b.extend_from_slice(b"# HELP ");
    b.extend_from_slice(name.as_bytes());
    b.push(b' ');
    for c in help.bytes() {
        match c {
            b'\\' => b.extend_from_slice(b"\\\\"),
            b'\n' => b.extend_from_slice(b"\\n"),
            c => b.push(c),
        }
    }
    let _ = writeln!(b, "\n# TYPE {name} {}", kind.name());
}

/// One sample line, with at most one label.
fn sample(b: &mut Vec<u8>, name: &str, label: Option<(&str, &str)>, v: u64) {
    b.extend_from_slice(name.as_bytes());
    if let Some((k, val)) = label {
        b.push(b'{');
        b.extend_from_slice(k.as_bytes());
        b.extend_from_slice(b"=\"");
        for c in val.bytes() {
            match c {
                b'\\' => b.extend_from_slice(b"\\\\"),
                b'"' => b.extend_from_slice(b"\\\""),
                b'\n' => b.extend_from_slice(b"\\n"),
                c => b.push(c),
            }
        }
        b.extend_from_slice(b"\"}");
    }
    let _ = writeln!(b, " {v}");
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use prometheus_parse::{LineInfo, Scrape, Value};
    use std::collections::HashMap;

    /// A status with a value in every section, distinct where it can be.
    fn status() -> Status {
        let mut st = Status {
            iface: "tun0".into(),
            mtu: 1400,
            ..Status::default()
        };
        st.addrs.push("10.0.0.2".parse().unwrap());
        st.addrs.push("fd00::2".parse().unwrap());
        st.services.push(("echo", 7));
        st.services.push(("http", 80));
        st.states.push((tcp::State::Established, 3));
        st.states.push((tcp::State::TimeWait, 2));
        st.stats.passive_opens = 42;
        st.stats.bytes_in = 1 << 40;
        st.stats.timeouts = 5;
        st.stats.drops.paws = 9;
        st.stats.drops.bad_tcp_checksum = 4;
        st.daemon.push(("timeouts", 6));
        st.daemon.push(("dev_rx_packets", 17));
        st.daemon.push(("pool_buffers", 250));
        st.daemon.push(("made-up counter", 1));
        // (prometheus-parse splits label pairs at every '=', so the names
        // here have none; a real rule's name is checked by its text below.)
        st.forwards.push((
            "8080 to 127.0.0.1:80".into(),
            vec![("accepted", 3), ("bytes_to_upstream", 1000), ("open", 1)],
        ));
        st.forwards.push((
            "transparent".into(),
            vec![("accepted", 4), ("bytes_to_upstream", 7), ("open", 0)],
        ));
        st
    }

    fn text(st: &Status, up: std::time::Duration) -> String {
        let r = render(st);
        let mut b = r.parts[0].clone();
        write_uptime(&mut b, up);
        b.extend_from_slice(&r.parts[1]);
        String::from_utf8(b).unwrap()
    }

    /// The text parses with a real parser; every family has one HELP and
    /// one TYPE line before its samples; and every figure of `/stats` made
    /// from the same status is there, with its name, type, label and value.
    #[test]
    fn every_stats_figure_parses_back_with_help_type_and_labels() {
        let st = status();
        let up = std::time::Duration::from_millis(61_250);
        let t = text(&st, up);
        assert!(t.ends_with('\n'));
        // Every line is a HELP, a TYPE or a sample, and a family's samples
        // come right after its own TYPE line.
        let mut typed: HashMap<String, usize> = HashMap::new();
        let mut current = String::new();
        for line in t.lines() {
            match LineInfo::parse(line) {
                LineInfo::Doc { metric_name, .. } => {
                    assert!(!typed.contains_key(metric_name), "HELP twice: {line}");
                }
                LineInfo::Type { metric_name, .. } => {
                    assert!(typed.insert(metric_name.clone(), 0).is_none(), "{line}");
                    current = metric_name;
                }
                LineInfo::Sample { metric_name, .. } => {
                    assert_eq!(metric_name, current, "sample outside its family: {line}");
                    *typed.get_mut(metric_name).unwrap() += 1;
                }
                other => panic!("unparsed line {line:?}: {other:?}"),
            }
        }
        let scrape = Scrape::parse(t.lines().map(|l| Ok(l.to_string()))).unwrap();
        for name in typed.keys() {
            assert!(scrape.docs.contains_key(name), "no HELP for {name}");
            assert!(name.starts_with("tcpd_"), "{name}");
        }
        let find = |name: &str, label: Option<(&str, &str)>| -> &Value {
            let hits: Vec<_> = scrape
                .samples
                .iter()
                .filter(|s| s.metric == name)
                .filter(|s| label.is_none_or(|(k, v)| s.labels.get(k) == Some(v)))
                .collect();
            assert_eq!(hits.len(), 1, "{name} {label:?} in\n{t}");
            &hits[0].value
        };
        let counter = |name: &str, label: Option<(&str, &str)>| match find(name, label) {
            Value::Counter(v) => *v,
            v => panic!("{name} is not a counter: {v:?}"),
        };
        let gauge = |name: &str, label: Option<(&str, &str)>| match find(name, label) {
            Value::Gauge(v) => *v,
            v => panic!("{name} is not a gauge: {v:?}"),
        };
        // The /stats document of the same status, as the reference.
        let mut js = Vec::new();
        super::super::http::write_stats_json(&st, up.as_millis() as u64, &mut js).unwrap();
        let stats: serde_json::Value = serde_json::from_slice(&js).unwrap();
        let obj = |k: &str| stats[k].as_object().unwrap().clone();
        assert_eq!(
            gauge("tcpd_uptime_seconds", None),
            stats["uptime_ms"].as_f64().unwrap() / 1000.0
        );
        assert_eq!(
            gauge(
                "tcpd_mtu_bytes",
                Some(("iface", stats["iface"].as_str().unwrap()))
            ),
            stats["mtu"].as_f64().unwrap()
        );
        for a in stats["addrs"].as_array().unwrap() {
            assert_eq!(
                gauge("tcpd_address_info", Some(("address", a.as_str().unwrap()))),
                1.0
            );
        }
        let families = |prefix: &str| typed.keys().filter(|k| k.starts_with(prefix)).count();
        for (section, metric, label) in [
            ("services", "tcpd_service_port", "service"),
            ("connections", "tcpd_connections", "state"),
        ] {
            let o = obj(section);
            assert!(!o.is_empty());
            assert_eq!(typed[metric], o.len(), "{metric}");
            for (k, v) in o {
                assert_eq!(gauge(metric, Some((label, &k))), v.as_f64().unwrap());
            }
        }
        let tcp = obj("tcp");
        for (k, v) in &tcp {
            assert_eq!(counter(&tcp_metric(k), None), v.as_f64().unwrap(), "{k}");
        }
        assert_eq!(
            families("tcpd_tcp_"),
            tcp.len() + 1,
            "tcp counters and drops"
        );
        let drops = obj("drops");
        assert_eq!(typed["tcpd_tcp_drops_total"], drops.len());
        for (k, v) in &drops {
            let got = counter("tcpd_tcp_drops_total", Some(("reason", k)));
            assert_eq!(got, v.as_f64().unwrap(), "{k}");
        }
        let daemon = obj("daemon");
        assert_eq!(families("tcpd_daemon_"), daemon.len());
        for (k, v) in &daemon {
            let (metric, kind, _) = daemon_metric(k);
            let got = match kind {
                Kind::Counter => counter(&metric, None),
                Kind::Gauge => gauge(&metric, None),
            };
            assert_eq!(got, v.as_f64().unwrap(), "{k}");
        }
        let fw = obj("forwards");
        assert_eq!(fw.len(), 2);
        for (rule, counters) in &fw {
            for (k, v) in counters.as_object().unwrap() {
                let (metric, kind) = forward_metric(k);
                let got = match kind {
                    Kind::Counter => counter(&metric, Some(("forward", rule))),
                    Kind::Gauge => gauge(&metric, Some(("forward", rule))),
                };
                assert_eq!(got, v.as_f64().unwrap(), "{rule} {k}");
            }
        }
        assert_eq!(
            counter(
                "tcpd_forward_accepted_total",
                Some(("forward", "transparent"))
            ),
            4.0
        );
        // The names a reader would look for, spelled out once.
        assert_eq!(counter("tcpd_tcp_passive_opens_total", None), 42.0);
        assert_eq!(counter("tcpd_tcp_timeouts_total", None), 5.0);
        assert_eq!(counter("tcpd_daemon_timeouts_total", None), 6.0);
        assert_eq!(gauge("tcpd_daemon_pool_buffers", None), 250.0);
        assert_eq!(counter("tcpd_daemon_made_up_counter_total", None), 1.0);
        assert_eq!(gauge("tcpd_connections", Some(("state", "TIME-WAIT"))), 2.0);
        let mut named = st.clone();
        named.forwards[0].0 = "8080=127.0.0.1:80".into();
        assert!(text(&named, up).contains("tcpd_forward_open{forward=\"8080=127.0.0.1:80\"} 1\n"));
        // Label values are escaped as the format wants (prometheus-parse
        // does not unescape them, so this one is checked by its text).
        let odd = Status {
            iface: "tun\"0\\\n".into(),
            ..st
        };
        let t = text(&odd, up);
        assert!(
            t.contains("tcpd_mtu_bytes{iface=\"tun\\\"0\\\\\\n\"} 1400\n"),
            "{t}"
        );
    }

    /// Every counter the endpoint and the daemon's own layers name has its
    /// own HELP text, and every name is a valid metric name.
    #[test]
    fn every_known_counter_has_help() {
        let valid = |n: &str| {
            n.chars().enumerate().all(|(i, c)| {
                c.is_ascii_alphabetic() || c == '_' || c == ':' || (i > 0 && c.is_ascii_digit())
            })
        };
        let stats = super::super::stats_fields(&tcp::Stats::default());
        let missing: Vec<&str> = stats
            .iter()
            .map(|(n, _)| *n)
            .filter(|name| !TCP_HELP.iter().any(|(n, _)| n == name))
            .collect();
        assert!(missing.is_empty(), "no help for {missing:?}");
        for (name, _) in stats {
            assert!(valid(&tcp_metric(name)));
        }
        /// A device that never has a packet: only its counters matter.
        struct Null;
        impl crate::device::Device for Null {
            fn recv(
                &mut self,
                _now: std::time::Instant,
                _buf: &mut [u8],
            ) -> std::io::Result<usize> {
                Err(std::io::ErrorKind::WouldBlock.into())
            }
            fn send(&mut self, _now: std::time::Instant, _pkt: &[u8]) -> std::io::Result<()> {
                Ok(())
            }
            fn raw_fd(&self) -> std::os::fd::RawFd {
                -1
            }
        }
        let mut names: Vec<(&str, u64)> = crate::reactor::Counters::default().named().to_vec();
        let fault = crate::fault::FaultDevice::new(Null, crate::FaultConfig::default());
        crate::device::Device::counters(&fault, &mut names);
        names.extend([("pcap_records", 0), ("pcap_lost", 0), ("pool_buffers", 0)]);
        let missing: Vec<&str> = names
            .iter()
            .map(|(n, _)| *n)
            .filter(|name| !DAEMON_HELP.iter().any(|(n, _, _)| n == name))
            .collect();
        assert!(missing.is_empty(), "no help for {missing:?}");
        for (name, _, help) in DAEMON_HELP {
            assert!(valid(&daemon_metric(name).0), "{name}");
            assert!(!help.is_empty() && !help.contains('\n'));
        }
        let missing: Vec<&str> = crate::forward::FwdCounter::ALL
            .iter()
            .map(|c| c.name())
            .filter(|name| !FORWARD_HELP.iter().any(|(n, _)| n == name))
            .collect();
        assert!(
            missing.is_empty(),
            "no help for forward counters {missing:?}"
        );
        for (name, help) in FORWARD_HELP {
            assert!(valid(&forward_metric(name).0), "{name}");
            assert!(!help.is_empty() && !help.contains('\n'));
        }
    }
}
