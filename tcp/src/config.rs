//! Endpoint configuration: every limit is a field with a documented default.

use crate::congestion::Congestion;
use crate::time::Duration;
use std::net::IpAddr;

/// TCP keep-alive parameters (RFC 9293 §3.8.4, RFC 1122 §4.2.3.6).
///
/// With the `serde` feature: durations in µs under `idle_us` and
/// `interval_us`; a missing field takes its default.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(default)
)]
pub struct Keepalive {
    /// Idle time before the first probe. Linux default: 7200 s.
    #[cfg_attr(feature = "serde", serde(rename = "idle_us"))]
    pub idle: Duration,
    /// Time between unanswered probes. Linux default: 75 s.
    #[cfg_attr(feature = "serde", serde(rename = "interval_us"))]
    pub interval: Duration,
    /// Unanswered probes before the connection is dropped. Linux default: 9.
    pub count: u32,
}

impl Default for Keepalive {
    fn default() -> Self {
        Keepalive {
            idle: Duration::from_secs(7200),
            interval: Duration::from_secs(75),
            count: 9,
        }
    }
}

/// Configuration of an [`crate::Endpoint`].
///
/// With the `serde` feature it (de)serializes as one object with the
/// fields' names; durations are whole microseconds under the field's name
/// with `_us` appended (`delayed_ack_us`, ...; a field added later without
/// that suffix is still a [`Duration`], so still µs). Every field is
/// optional: a missing one takes its [`Config::default`] value, so that a
/// configuration written before a field existed reads back with the
/// behaviour it had then. Where the default changed when the field came
/// (`congestion`, `hystart`, `prr`: NewReno without either ran before;
/// `rack`, `tlp`, `frto`, `limited_transmit`: DupThresh loss detection and
/// no probes, no F-RTO, no Limited Transmit ran before;
/// `max_passive`, `max_passive_per_source`, `mem_limit`: no limit;
/// `icmp_unreachables`: no ICMP errors sent; `autotune_buffers`: off), a
/// missing field
/// reads as the old behaviour, not as today's default.
#[derive(Clone, Debug)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(default)
)]
pub struct Config {
    /// Seed from which the ISN secret (RFC 6528), the SYN-cookie secret, the
    /// hash-table keys, the ephemeral-port secret (RFC 6056), the
    /// challenge-ACK budget and every other random choice derive, each
    /// under its own label. Two endpoints with the same seed and the same
    /// inputs emit the same bytes.
    ///
    /// **SECURITY: the default, 0, is for tests only.** The crate has no
    /// source of randomness of its own (it is sans-IO), so a daemon facing
    /// a real network MUST set this from the operating system's random
    /// generator (e.g. `getrandom`) at every start. With a fixed or known
    /// seed anyone can compute our initial sequence numbers (blind
    /// injection and spoofed connections, the attacks RFC 6528 exists to
    /// stop), forge SYN cookies (RFC 4987), choose 4-tuples that collide in
    /// the connection table (HashDoS), predict ephemeral ports (RFC 6056)
    /// and time the challenge-ACK budget (RFC 5961 §7, CVE-2016-5696). A
    /// fixed seed is for tests and for replaying recorded sessions.
    pub seed: u64,
    /// The addresses this endpoint owns. Packets to other addresses are
    /// dropped ([`crate::wire::DropReason::NotOurAddress`]). Empty: accept
    /// every destination (transparent-proxy style).
    pub addrs: Vec<IpAddr>,
    /// The device MTU; the advertised MSS is derived from it. Default 1500.
    pub mtu: usize,
    /// Most connections (in any state, TIME-WAIT included). Default 200 000.
    pub max_connections: usize,
    /// Most passive connections open at once (accepted or in the handshake;
    /// TIME-WAIT and CLOSED do not count). A SYN beyond it is dropped
    /// unanswered ([`crate::wire::DropReason::ConnLimit`]), as Linux drops a
    /// SYN while a listener's accept queue is full: the condition is the
    /// server's, and passes, so the client should retry. 0: no limit.
    /// Default 100 000.
    #[cfg_attr(feature = "serde", serde(default))]
    pub max_passive: usize,
    /// Most passive connections open at once from one source address
    /// (counted as for [`Config::max_passive`]), SYNs held by deferred
    /// listeners ([`crate::Endpoint::listen_deferred`],
    /// [`crate::Endpoint::listen_any`]) included. A SYN beyond it is answered
    /// with RST ([`crate::wire::DropReason::SourceLimit`]): the condition is
    /// the client's own and lasts as long as its connections do, so a
    /// retry after SYN back-off would only wait for nothing (iptables'
    /// connlimit with `--reject-with tcp-reset` answers the same way).
    /// 0: no limit. Default 1024.
    #[cfg_attr(feature = "serde", serde(default))]
    pub max_passive_per_source: usize,
    /// Each connection's send buffer to begin with (Linux: `tcp_wmem[1]`),
    /// and its size for good with [`Config::autotune_buffers`] off. Storage
    /// grows on demand up to it. Default 256 KiB; at most 1 GiB.
    pub send_buffer: usize,
    /// Each connection's receive buffer (the most we advertise) to begin
    /// with (Linux: `tcp_rmem[1]`), and for good with
    /// [`Config::autotune_buffers`] off. Default 256 KiB; at most 1 GiB.
    pub recv_buffer: usize,
    /// Buffer auto-tuning (see [`Config::recv_buffer_max`] and
    /// [`Config::send_buffer_max`]); Linux's `tcp_moderate_rcvbuf` for the
    /// receive side (Linux's send side always grows). Default on. A
    /// configuration serialized before the field existed reads as off: the
    /// buffers stay at `recv_buffer`/`send_buffer` and the window scale
    /// derives from `recv_buffer`, as then.
    #[cfg_attr(feature = "serde", serde(default))]
    pub autotune_buffers: bool,
    /// The most a receive buffer grows to by dynamic right-sizing (Linux
    /// `tcp_rcv_space_adjust`): about twice the bytes the application
    /// consumes per round trip. The window scale we offer (RFC 7323 §2.3)
    /// is the least that can advertise it, as Linux derives it from
    /// `tcp_rmem[2]`. Default 6 MiB (Linux's `tcp_rmem[2]`); at most 1 GiB;
    /// at or below `recv_buffer` the receive buffer does not grow.
    pub recv_buffer_max: usize,
    /// The most a send buffer grows to with the congestion window (Linux
    /// `tcp_sndbuf_expand`: twice the window). Default 4 MiB (Linux's
    /// `tcp_wmem[2]`); at most 1 GiB; at or below `send_buffer` the send
    /// buffer does not grow.
    pub send_buffer_max: usize,
    /// Most out-of-order ranges (holes) kept per connection; segments that
    /// would create more are dropped. Default 32.
    pub max_ooo_ranges: usize,
    /// Most SACKed ranges of our own sent data remembered per connection
    /// (the RFC 6675 scoreboard); blocks that would make more are ignored,
    /// which only makes recovery more conservative. Default 64.
    pub max_sack_ranges: usize,
    /// Least time between two ACKs answering out-of-window segments that
    /// carry no data, and between two challenge ACKs, per connection (as
    /// Linux's `tcp_invalid_ratelimit`), so that two stacks can never
    /// ping-pong ACKs. Default 500 ms.
    #[cfg_attr(feature = "serde", serde(rename = "oow_ack_interval_us"))]
    pub oow_ack_interval: Duration,
    /// Bytes of free buffers kept in the endpoint's pool for reuse.
    /// Default 32 MiB. The pool also shrinks by itself: each
    /// [`crate::Endpoint::release_memory`] call frees what nobody took
    /// since the previous one.
    pub buffer_pool_bytes: usize,
    /// Most bytes of buffer storage all connections together may hold for
    /// their send and receive buffers: the analogue of Linux's `tcp_mem`,
    /// whose three levels derive from this one with Linux's default
    /// proportions (`tcp_init_mem`: 1/2, 2/3, 1). Default 256 MiB (about what
    /// Linux picks for a machine with 3 GB of RAM); at least 64 KiB.
    ///
    /// Under pressure — from the moment connections hold more than 2/3 of
    /// the limit until they hold less than 1/2 again — no connection's
    /// buffers grow: each new receive window offers only the storage the
    /// connection holds already (at least 4 KiB), so windows shrink as data
    /// arrives, but never below a right edge already advertised (RFC 9293
    /// §3.8.6, RFC 7323 §2.4); application writes see only the free space of
    /// the send storage already held (at least 4 KiB). Past the limit itself
    /// a growth is refused: data a peer sends inside an edge advertised
    /// before the pressure and that finds no storage is dropped
    /// unacknowledged and retransmitted later; nothing stored is lost or
    /// corrupted. Each such event is counted in [`crate::Stats`]
    /// (`mem_pressure`, `mem_window_clamped`, `mem_send_clamped`,
    /// `mem_grow_refused`, `mem_rcv_drops`).
    #[cfg_attr(feature = "serde", serde(default = "serde_legacy::mem_limit"))]
    pub mem_limit: usize,
    /// Delayed-ACK timer (RFC 1122 §4.2.3.2: at most 500 ms). Default 40 ms, as Linux.
    #[cfg_attr(feature = "serde", serde(rename = "delayed_ack_us"))]
    pub delayed_ack: Duration,
    /// Lower bound of the retransmission timeout. RFC 6298 §2.4 says 1 s;
    /// Linux uses 200 ms, and so do we by default.
    #[cfg_attr(feature = "serde", serde(rename = "min_rto_us"))]
    pub min_rto: Duration,
    /// RTO before any RTT sample (RFC 6298 §2.1: 1 s).
    #[cfg_attr(feature = "serde", serde(rename = "initial_rto_us"))]
    pub initial_rto: Duration,
    /// Upper bound of the RTO (RFC 6298 §2.5 allows >= 60 s; Linux 120 s).
    #[cfg_attr(feature = "serde", serde(rename = "max_rto_us"))]
    pub max_rto: Duration,
    /// Time spent in TIME-WAIT: 2 MSL (RFC 9293 §3.4.2). Default 60 s, as Linux.
    #[cfg_attr(feature = "serde", serde(rename = "time_wait_us"))]
    pub time_wait: Duration,
    /// User timeout (RFC 9293 §3.8.3 "USER TIMEOUT"): a connection that
    /// cannot get data acknowledged for this long is reset. Default 120 s.
    #[cfg_attr(feature = "serde", serde(rename = "user_timeout_us"))]
    pub user_timeout: Duration,
    /// SYN retransmissions before an active open fails. Linux: 6.
    pub syn_retries: u32,
    /// SYN-ACK retransmissions before a half-open connection is dropped. Linux: 5.
    pub synack_retries: u32,
    /// Keep-alive; `None` (the default) disables it.
    pub keepalive: Option<Keepalive>,
    /// Nagle's algorithm (RFC 9293 §3.7.4) on new connections. Default on.
    pub nagle: bool,
    /// Initial congestion window in segments (RFC 6928). Default 10.
    pub initial_window: u32,
    /// The congestion control of new connections. Default
    /// [`Congestion::Cubic`] (RFC 9438), as Linux.
    #[cfg_attr(feature = "serde", serde(default = "serde_legacy::congestion"))]
    pub congestion: Congestion,
    /// HyStart++ (RFC 9406) in the initial slow start, with either
    /// algorithm. Default on.
    #[cfg_attr(feature = "serde", serde(default))]
    pub hystart: bool,
    /// Proportional Rate Reduction (RFC 6937, PRR-SSRB) paces the sending
    /// during fast recovery. Off: RFC 6675's pipe against ssthresh with
    /// SACK, RFC 6582's window inflation without. Default on.
    #[cfg_attr(feature = "serde", serde(default))]
    pub prr: bool,
    /// RACK-TLP loss detection (RFC 8985) on connections with SACK: loss is
    /// told by time (a segment sent before one that was delivered, and
    /// outstanding a reordering window longer than that one's RTT), not by
    /// three duplicate ACKs; lost retransmissions are found without an RTO.
    /// Off, and on connections without SACK, RFC 6675's DupThresh and RFC
    /// 5681's three duplicate ACKs decide. Default on (Linux
    /// `tcp_recovery` = 1).
    #[cfg_attr(feature = "serde", serde(default))]
    pub rack: bool,
    /// Tail Loss Probes (RFC 8985 §7) with [`Config::rack`]: two round
    /// trips after the last send without an ACK, probe with new data or the
    /// last segment, so that a lost tail is repaired without an RTO.
    /// Default on (Linux `tcp_early_retrans` = 3).
    #[cfg_attr(feature = "serde", serde(default))]
    pub tlp: bool,
    /// F-RTO (RFC 5682 §3.1, SACK-enhanced where SACK is on): after an RTO,
    /// send new data instead of retransmitting and undo the RTO's window
    /// reduction if data sent before it was never lost. Default on (Linux
    /// `tcp_frto` = 2).
    #[cfg_attr(feature = "serde", serde(default))]
    pub frto: bool,
    /// Limited Transmit (RFC 3042) on connections without SACK: the first
    /// two duplicate ACKs each let one new segment out. Default on, as
    /// Linux.
    #[cfg_attr(feature = "serde", serde(default))]
    pub limited_transmit: bool,
    /// Most records in a connection's log of sent segments (RACK's
    /// per-segment transmit times). When full, new transmissions merge into
    /// the newest record, which only makes loss detection later.
    /// Default 4096.
    pub rack_max_segments: usize,
    /// Offer and accept window scaling (RFC 7323 §2). Default on.
    pub window_scaling: bool,
    /// Offer and accept timestamps (RFC 7323 §3). Default on.
    pub timestamps: bool,
    /// Offer and accept SACK (RFC 2018). Default on.
    pub sack: bool,
    /// Answer with SYN cookies (RFC 4987 §3.6) when a listener's SYN queue is
    /// full. Default on.
    pub syn_cookies: bool,
    /// Half-open connections per listener before SYN cookies take over.
    /// Default 1024.
    pub syn_backlog: usize,
    /// Challenge ACKs per second, endpoint-wide (RFC 5961 §7). Each
    /// second's budget is drawn from `[limit/2, limit/2 + limit - 1]` (as
    /// Linux, so the count cannot serve as a side channel, CVE-2016-5696);
    /// each connection is further held to one per 500 ms. 0 sends none.
    /// Default 1000.
    pub challenge_ack_limit: u32,
    /// First and last ephemeral port for [`crate::Endpoint::connect`]
    /// (Linux: 32768–60999).
    pub ephemeral_ports: (u16, u16),
    /// Most queued endpoint-level replies (RSTs, echo replies, cookie
    /// SYN-ACKs) awaiting `poll_transmit`. Default 1024.
    pub max_control_queue: usize,
    /// How long a deferred listener ([`crate::Endpoint::listen_deferred`],
    /// [`crate::Endpoint::listen_any`]) holds a SYN the application has not
    /// decided on before giving it up ([`crate::Event::SynExpired`]).
    /// Default 75 s, Linux's `TCP_TIMEOUT_INIT`-based connect budget order
    /// (a Linux client with `tcp_syn_retries` 6 retries for 127 s).
    #[cfg_attr(feature = "serde", serde(rename = "syn_hold_timeout_us"))]
    pub syn_hold_timeout: Duration,
    /// TTL / hop limit of emitted packets. Default 64.
    pub ttl: u8,
    /// Segmentation offload: the largest IP packet the device accepts and
    /// cuts into MSS-sized segments itself (TSO/GSO). 0 (the default): no
    /// offload, no segment exceeds the MSS. See [`crate::Transmit`].
    pub tso_max: usize,
    /// Checksum offload: emitted TCP segments carry only the pseudo-header
    /// sum in their checksum field, for the device to complete. Default off.
    pub checksum_offload: bool,
    /// Path MTU discovery (RFC 1191, RFC 8201): ICMP "fragmentation
    /// needed" and ICMPv6 "packet too big" lower the path MTU of their
    /// destination. Default on (Linux: `ip_no_pmtu_disc` 0).
    pub pmtu_discovery: bool,
    /// How long a learned path MTU is kept before the device MTU is tried
    /// again (RFC 1191 §6.3, RFC 8201 §4). Default 600 s, as Linux's
    /// `ip_rt_mtu_expires`.
    pub pmtu_expires: Duration,
    /// Lowest IPv4 path MTU believed; a smaller one from an ICMP message is
    /// raised to this. Default 552, as Linux's `min_pmtu`. IPv6 always uses
    /// 1280 (RFC 8200 §5, RFC 8201 §4).
    pub min_pmtu: usize,
    /// Most destinations in the path MTU cache; when full, the entry that
    /// expires first gives way. Default 4096.
    pub pmtu_cache_size: usize,
    /// Bytes all fragment reassembly may hold at once (RFC 791 §3.2, RFC
    /// 8200 §4.5). Default 4 MiB, as Linux's `ipfrag_high_thresh`. 0
    /// disables reassembly: fragments are dropped
    /// ([`crate::wire::DropReason::Fragment`]).
    pub reasm_max_bytes: usize,
    /// Bytes the fragments of one source may hold, so that one flooding
    /// source fills only its own share. Default 1 MiB.
    pub reasm_per_source_bytes: usize,
    /// Time an IPv4 datagram has to arrive whole. Default 30 s (Linux
    /// `ipfrag_time`).
    pub reasm_timeout_v4: Duration,
    /// Time an IPv6 datagram has to arrive whole. Default 60 s (RFC 8200
    /// §4.5; Linux `ip6frag_time`).
    pub reasm_timeout_v6: Duration,
    /// Fragment the replies we build (ICMP echo replies) that exceed the
    /// MTU (RFC 791 §3.2, RFC 8200 §4.5), as Linux; off, IPv4 replies are
    /// cut to the MTU (RFC 1122 §3.2.2.6) and IPv6 ones dropped. Default on.
    pub fragment_replies: bool,
    /// Answer datagrams to our addresses that nothing takes as Linux does:
    /// UDP with ICMP port unreachable (RFC 1122 §4.1.3.1; tcpd has no UDP
    /// sockets), an unknown IPv4 protocol with protocol unreachable (RFC
    /// 1122 §3.2.2.1), an unknown IPv6 Next Header with parameter problem
    /// code 1 (RFC 8200 §4); likewise the other errors we originate: a
    /// Parameter Problem for a refused extension header (RFC 8200 §4) and
    /// reassembly Time Exceeded (RFC 792, RFC 8200 §4.5). All under the
    /// rate limits below. Default on; a
    /// serialized configuration without the field reads as off (it ran
    /// without them).
    #[cfg_attr(feature = "serde", serde(default))]
    pub icmp_unreachables: bool,
    /// Per-destination limit of the ICMP errors we send: one per this
    /// interval, six saved up (Linux `icmp_ratelimit`, `ratelimit` for
    /// IPv6, and XRLIM_BURST_FACTOR). 0: none. Default 1000 ms.
    #[cfg_attr(feature = "serde", serde(rename = "icmp_ratelimit_us"))]
    pub icmp_ratelimit: Duration,
    /// Endpoint-wide limit of the ICMP errors we send, per second (Linux
    /// `icmp_msgs_per_sec`). Default 1000.
    pub icmp_msgs_per_sec: u32,
    /// Most ICMP errors sent in one burst under the endpoint-wide limit
    /// (Linux `icmp_msgs_burst`). Default 50.
    pub icmp_msgs_burst: u32,
    /// Per-destination rate-limit buckets, a table indexed by a keyed hash
    /// of the address (destinations that collide share a bucket).
    /// Default 1024.
    pub icmp_ratelimit_peers: usize,
    /// Packetization-layer path MTU discovery (RFC 4821; Linux
    /// `tcp_mtu_probing`): black-hole detection and probing with larger
    /// segments. Default [`MtuProbing::Off`], as Linux's 0.
    pub mtu_probing: MtuProbing,
    /// The MSS a connection falls to when it detects a black hole, and the
    /// start of the probing search (Linux `tcp_base_mss`). Default 1024.
    pub mtu_probe_base_mss: u16,
    /// The least MSS black-hole detection halves down to (Linux
    /// `tcp_mtu_probe_floor`). Default 48.
    pub mtu_probe_floor: u16,
    /// Probing stops when the search range is narrower than this many bytes
    /// (Linux `tcp_probe_threshold`). Default 8.
    pub mtu_probe_threshold: u16,
    /// After this long a connection whose search ended searches again from
    /// its current MSS up (Linux `tcp_probe_interval`). Default 600 s.
    pub mtu_probe_interval: Duration,
}

/// When connections probe the path MTU themselves (RFC 4821, RFC 8899
/// style), as Linux's `tcp_mtu_probing`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(rename_all = "lowercase")
)]
pub enum MtuProbing {
    /// Never (Linux 0). The default: a path that drops large segments
    /// without an ICMP error stalls the connection into its user timeout.
    #[default]
    Off,
    /// Only after a black hole is detected (Linux 1): repeated RTOs lower
    /// the MSS to `mtu_probe_base_mss`, then probes search upward.
    Blackhole,
    /// From the start (Linux 2): connections begin at
    /// `mtu_probe_base_mss` and probe upward.
    Always,
}

impl MtuProbing {
    /// From its [`MtuProbing::name`].
    pub fn parse(s: &str) -> Option<MtuProbing> {
        [MtuProbing::Off, MtuProbing::Blackhole, MtuProbing::Always]
            .into_iter()
            .find(|m| m.name() == s)
    }

    /// The name on the command line and in pcap sidecars.
    pub fn name(self) -> &'static str {
        match self {
            MtuProbing::Off => "off",
            MtuProbing::Blackhole => "blackhole",
            MtuProbing::Always => "always",
        }
    }
}

impl Default for Config {
    /// Every default as documented on its field. The seed is 0: set
    /// [`Config::seed`] from a random source outside tests.
    fn default() -> Self {
        Config {
            seed: 0,
            addrs: Vec::new(),
            mtu: 1500,
            max_connections: 200_000,
            max_passive: 100_000,
            max_passive_per_source: 1024,
            send_buffer: 256 * 1024,
            recv_buffer: 256 * 1024,
            autotune_buffers: true,
            recv_buffer_max: 6 << 20,
            send_buffer_max: 4 << 20,
            max_ooo_ranges: 32,
            max_sack_ranges: 64,
            oow_ack_interval: Duration::from_millis(500),
            buffer_pool_bytes: 32 << 20,
            mem_limit: 256 << 20,
            delayed_ack: Duration::from_millis(40),
            min_rto: Duration::from_millis(200),
            initial_rto: Duration::from_secs(1),
            max_rto: Duration::from_secs(120),
            time_wait: Duration::from_secs(60),
            user_timeout: Duration::from_secs(120),
            syn_retries: 6,
            synack_retries: 5,
            keepalive: None,
            nagle: true,
            initial_window: 10,
            congestion: Congestion::Cubic,
            hystart: true,
            prr: true,
            rack: true,
            tlp: true,
            frto: true,
            limited_transmit: true,
            rack_max_segments: 4096,
            window_scaling: true,
            timestamps: true,
            sack: true,
            syn_cookies: true,
            syn_backlog: 1024,
            challenge_ack_limit: 1000,
            ephemeral_ports: (32768, 60999),
            max_control_queue: 1024,
            syn_hold_timeout: Duration::from_secs(75),
            ttl: 64,
            tso_max: 0,
            checksum_offload: false,
            pmtu_discovery: true,
            pmtu_expires: Duration::from_secs(600),
            min_pmtu: 552,
            pmtu_cache_size: 4096,
            reasm_max_bytes: 4 << 20,
            reasm_per_source_bytes: 1 << 20,
            reasm_timeout_v4: Duration::from_secs(30),
            reasm_timeout_v6: Duration::from_secs(60),
            fragment_replies: true,
            icmp_unreachables: true,
            icmp_ratelimit: Duration::from_millis(1000),
            icmp_msgs_per_sec: 1000,
            icmp_msgs_burst: 50,
            icmp_ratelimit_peers: 1024,
            mtu_probing: MtuProbing::Off,
            mtu_probe_base_mss: 1024,
            mtu_probe_floor: 48,
            mtu_probe_threshold: 8,
            mtu_probe_interval: Duration::from_secs(600),
        }
    }
}

impl Config {
    /// Checks the configuration, returning a description of the first
    /// problem found.
    pub fn validate(&self) -> Result<(), String> {
        if !(576..=65535).contains(&self.mtu) {
            return Err(format!("mtu {} out of range 576..=65535", self.mtu));
        }
        for (name, v) in [
            ("send_buffer", self.send_buffer),
            ("recv_buffer", self.recv_buffer),
            ("send_buffer_max", self.send_buffer_max),
            ("recv_buffer_max", self.recv_buffer_max),
        ] {
            if !(1024..=(1 << 30)).contains(&v) {
                return Err(format!("{name} {v} out of range 1024..=1073741824"));
            }
        }
        if self.ephemeral_ports.0 == 0 || self.ephemeral_ports.0 > self.ephemeral_ports.1 {
            return Err("ephemeral port range is empty".into());
        }
        // A zero initial RTO backs off to zero: the timer would fire at the
        // same instant without end.
        if self.initial_rto == Duration::ZERO {
            return Err("initial_rto must be non-zero".into());
        }
        if self.min_rto > self.max_rto || self.initial_rto > self.max_rto {
            return Err("min_rto and initial_rto must not exceed max_rto".into());
        }
        if self.mem_limit < 64 * 1024 {
            return Err(format!(
                "mem_limit {} below the least, 65536 bytes",
                self.mem_limit
            ));
        }
        if self.max_connections == 0 {
            return Err("max_connections must be at least 1".into());
        }
        if self.tso_max != 0 && !(self.mtu..=65535).contains(&self.tso_max) {
            return Err(format!(
                "tso_max {} must be 0 or within mtu..=65535",
                self.tso_max
            ));
        }
        if !(68..=self.mtu).contains(&self.min_pmtu) {
            return Err(format!(
                "min_pmtu {} out of range 68..=mtu ({})",
                self.min_pmtu, self.mtu
            ));
        }
        if self.pmtu_cache_size == 0 || self.pmtu_expires == Duration::ZERO {
            return Err("pmtu_cache_size and pmtu_expires must be non-zero".into());
        }
        if self.rack_max_segments < 16 {
            return Err(format!(
                "rack_max_segments {} below the least, 16",
                self.rack_max_segments
            ));
        }
        if self.mtu_probe_floor < 48 || self.mtu_probe_base_mss < self.mtu_probe_floor {
            return Err(format!(
                "mtu_probe_floor {} must be at least 48 and at most mtu_probe_base_mss ({})",
                self.mtu_probe_floor, self.mtu_probe_base_mss
            ));
        }
        if self.mtu_probe_interval == Duration::ZERO {
            return Err("mtu_probe_interval must be non-zero".into());
        }
        if self.initial_window == 0 {
            return Err("initial_window must be at least 1".into());
        }

        // A zero interval would re-arm the keep-alive timer at the same
        // instant without end; Linux likewise requires each to be >= 1.
        if let Some(k) = self.keepalive {
            if k.idle == Duration::ZERO || k.interval == Duration::ZERO || k.count == 0 {
                return Err("keepalive idle, interval and count must be non-zero".into());
            }
        }
        Ok(())
    }

    /// The MSS we advertise for `v6`: MTU less the IP and TCP headers
    /// (RFC 9293 §3.7.1).
    pub fn local_mss(&self, v6: bool) -> u16 {
        let iph = if v6 { 40 } else { 20 };
        (self.mtu.saturating_sub(iph + 20)).min(65535) as u16
    }

    /// The most a receive buffer may grow to: [`Config::recv_buffer_max`]
    /// with auto-tuning on (never below the default), else the default.
    pub fn recv_buffer_ceiling(&self) -> usize {
        if self.autotune_buffers {
            self.recv_buffer.max(self.recv_buffer_max)
        } else {
            self.recv_buffer
        }
    }

    /// The most a send buffer may grow to, as [`Config::recv_buffer_ceiling`].
    pub fn send_buffer_ceiling(&self) -> usize {
        if self.autotune_buffers {
            self.send_buffer.max(self.send_buffer_max)
        } else {
            self.send_buffer
        }
    }

    /// Our window-scale shift: the least that lets the largest receive
    /// buffer ([`Config::recv_buffer_ceiling`]) be advertised (RFC 7323
    /// §2.3; Linux `tcp_select_initial_window` from `tcp_rmem[2]`).
    pub fn recv_wscale(&self) -> u8 {
        let max = self.recv_buffer_ceiling();
        let mut s = 0u8;
        while (max >> s) > 65535 && s < 14 {
            s += 1;
        }
        s
    }
}

/// What a serialized configuration that predates a field ran with, where
/// that differs from today's [`Config::default`].
#[cfg(feature = "serde")]
mod serde_legacy {
    use crate::congestion::Congestion;

    /// Before `mem_limit` existed nothing limited the buffers.
    pub(super) fn mem_limit() -> usize {
        usize::MAX
    }

    /// Before `congestion` existed every connection ran NewReno.
    pub(super) fn congestion() -> Congestion {
        Congestion::NewReno
    }
}
