//! Endpoint configuration: every limit is a field with a documented default.

use crate::time::Duration;
use std::net::IpAddr;

/// TCP keep-alive parameters (RFC 9293 §3.8.4, RFC 1122 §4.2.3.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Keepalive {
    /// Idle time before the first probe. Linux default: 7200 s.
    pub idle: Duration,
    /// Time between unanswered probes. Linux default: 75 s.
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
#[derive(Clone, Debug)]
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
    /// Upper limit of each connection's send buffer. Buffers grow on demand
    /// up to this. Default 256 KiB; at most 1 GiB.
    pub send_buffer: usize,
    /// Upper limit of each connection's receive buffer (the most we
    /// advertise). Default 256 KiB; at most 1 GiB.
    pub recv_buffer: usize,
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
    pub mem_limit: usize,
    /// Delayed-ACK timer (RFC 1122 §4.2.3.2: at most 500 ms). Default 40 ms, as Linux.
    pub delayed_ack: Duration,
    /// Lower bound of the retransmission timeout. RFC 6298 §2.4 says 1 s;
    /// Linux uses 200 ms, and so do we by default.
    pub min_rto: Duration,
    /// RTO before any RTT sample (RFC 6298 §2.1: 1 s).
    pub initial_rto: Duration,
    /// Upper bound of the RTO (RFC 6298 §2.5 allows >= 60 s; Linux 120 s).
    pub max_rto: Duration,
    /// Time spent in TIME-WAIT: 2 MSL (RFC 9293 §3.4.2). Default 60 s, as Linux.
    pub time_wait: Duration,
    /// User timeout (RFC 9293 §3.8.3 "USER TIMEOUT"): a connection that
    /// cannot get data acknowledged for this long is reset. Default 120 s.
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
    /// TTL / hop limit of emitted packets. Default 64.
    pub ttl: u8,
    /// Segmentation offload: the largest IP packet the device accepts and
    /// cuts into MSS-sized segments itself (TSO/GSO). 0 (the default): no
    /// offload, no segment exceeds the MSS. See [`crate::Transmit`].
    pub tso_max: usize,
    /// Checksum offload: emitted TCP segments carry only the pseudo-header
    /// sum in their checksum field, for the device to complete. Default off.
    pub checksum_offload: bool,
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
            send_buffer: 256 * 1024,
            recv_buffer: 256 * 1024,
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
            window_scaling: true,
            timestamps: true,
            sack: true,
            syn_cookies: true,
            syn_backlog: 1024,
            challenge_ack_limit: 1000,
            ephemeral_ports: (32768, 60999),
            max_control_queue: 1024,
            ttl: 64,
            tso_max: 0,
            checksum_offload: false,
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

    /// Our window-scale shift: the least that lets `recv_buffer` be advertised.
    pub fn recv_wscale(&self) -> u8 {
        let mut s = 0u8;
        while (self.recv_buffer >> s) > 65535 && s < 14 {
            s += 1;
        }
        s
    }
}
