//! The endpoint: owns every connection and listener, demultiplexes packets by
//! 4-tuple, answers ICMP echo and segments to nowhere, and hands out what to
//! transmit, when to wake up and what to tell the application.

use crate::buffer::BufPool;
use crate::config::Config;
use crate::conn::{ev, Conn, Ctx, Reply, State};
use crate::listen::{cookie_ts, cookie_ts_decode, derive_key, Listener, Secrets};
use crate::seq::SeqNum;
use crate::stats::Stats;
use crate::time::{Duration, Instant};
use crate::wire::{
    checksum_fold, checksum_sum, emit_icmp_echo_reply, emit_tcp_with, parse_icmp_echo,
    parse_icmp_error, parse_ip, parse_tcp_with, tcp_payload_offset, DropReason, IcmpError,
    IpPacket, TcpFlags, TcpOptions, TcpRepr, TcpSegment, PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP,
};
use core::fmt;
use siphasher::sip::SipHasher13;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::hash::{BuildHasher, Hasher};
use std::net::{IpAddr, SocketAddr};

pub use deferred::{Refusal, SynId, SynInfo};

mod deferred;
mod frag_out;
mod icmp_err;
mod icmp_send;
mod reasm;

/// A handle to a connection. Handles are never reused while the application
/// may still hold them: a slot's generation changes when it is freed.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId {
    pub(crate) slot: u32,
    pub(crate) gen: u32,
}

impl ConnId {
    /// A small integer naming the connection's slot (for logs and sharding;
    /// slots are reused after [`Event::Closed`]).
    pub fn slot(self) -> u32 {
        self.slot
    }
    /// The packed 64-bit form (slot in the low half, generation in the high).
    pub fn to_u64(self) -> u64 {
        u64::from(self.gen) << 32 | u64::from(self.slot)
    }
}

impl fmt::Debug for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}.{}", self.slot, self.gen)
    }
}
impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// What the endpoint tells the application.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// A connection completed its handshake on the listener at `port` and
    /// waits in its accept queue: call [`Endpoint::accept`].
    Incoming {
        /// The listening port.
        port: u16,
    },
    /// An active open ([`Endpoint::connect`]) reached ESTABLISHED.
    Connected(ConnId),
    /// New in-order data can be read with [`Endpoint::recv`].
    Readable(ConnId),
    /// Send-buffer space opened after a short [`Endpoint::send`].
    Writable(ConnId),
    /// The peer sent FIN and every byte before it has been made readable:
    /// [`Endpoint::recv`] returns `Ok(0)` once the buffer is drained.
    PeerClosed(ConnId),
    /// The peer reset the connection.
    Reset(ConnId),
    /// The connection was dropped: retransmissions, the user timeout or
    /// keep-alive probes went unanswered.
    TimedOut(ConnId),
    /// An ICMP error ended the connection attempt (SYN-SENT, or a
    /// half-open passive connection): the destination is unreachable for
    /// the reason given (RFC 1122 §4.2.3.9). `Closed` follows.
    Unreachable(ConnId, IcmpError),
    /// The connection is finished (both directions closed, reset, timed out
    /// or aborted). The handle is invalid from now on. Always the last event
    /// of a connection that was accepted or connected.
    Closed(ConnId),
    /// A SYN reached a deferred listener ([`Endpoint::listen_deferred`],
    /// [`Endpoint::listen_any`]) and is held: call [`Endpoint::syn_info`],
    /// then [`Endpoint::accept_syn`] or [`Endpoint::refuse_syn`].
    /// Retransmitted copies of the same SYN are absorbed (counted), not
    /// reported again.
    Syn(SynId),
    /// The endpoint gave up holding the SYN ([`Config::syn_hold_timeout`],
    /// or its listener closed); the [`SynId`] is dead.
    SynExpired(SynId),
}

/// Errors of the application calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// The handle names no live connection (closed, or never existed).
    InvalidHandle,
    /// The call does not fit the connection's state (send after close, ...).
    InvalidState,
    /// Nothing to read now; wait for [`Event::Readable`].
    WouldBlock,
    /// The connection was reset (by the peer, a timeout or [`Endpoint::abort`]).
    ConnectionReset,
    /// A listener already exists on the port.
    PortInUse,
    /// No free ephemeral port for this destination.
    NoPortsAvailable,
    /// The connection table is full ([`Config::max_connections`]).
    TableFull,
    /// Local and remote addresses are of different families, or the local
    /// address is not one of ours.
    BadAddress,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Error::InvalidHandle => "no such connection",
            Error::InvalidState => "operation not valid in this connection state",
            Error::WouldBlock => "operation would block",
            Error::ConnectionReset => "connection reset",
            Error::PortInUse => "port already in use",
            Error::NoPortsAvailable => "no ephemeral port available",
            Error::TableFull => "connection table full",
            Error::BadAddress => "bad address",
        })
    }
}
impl std::error::Error for Error {}

/// One packet from [`Endpoint::poll_transmit_offload`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transmit {
    /// Length of the IP packet written into the buffer.
    pub len: usize,
    /// When non-zero, a TCP segment longer than the MSS that the device must
    /// cut into segments of this many payload bytes (TSO/GSO).
    pub segment_size: u16,
    /// The TCP checksum field holds only the pseudo-header sum: the device
    /// completes it (checksum offload).
    pub partial_checksum: bool,
}

/// A snapshot of one connection, for status pages and tests.
#[derive(Clone, Copy, Debug)]
pub struct ConnInfo {
    /// Our address and port.
    pub local: SocketAddr,
    /// The peer's address and port.
    pub remote: SocketAddr,
    /// The RFC 9293 state.
    pub state: State,
    /// Smoothed RTT (RFC 6298), if sampled.
    pub srtt: Option<Duration>,
    /// Current retransmission timeout.
    pub rto: Duration,
    /// Congestion window, bytes.
    pub cwnd: u32,
    /// Slow-start threshold, bytes.
    pub ssthresh: u32,
    /// Peer's advertised window, bytes (scaled).
    pub snd_wnd: u32,
    /// Window we advertise now, bytes.
    pub rcv_wnd: u32,
    /// Bytes sent and not yet acknowledged.
    pub in_flight: u32,
    /// Bytes queued in the send buffer (unsent or unacknowledged).
    pub send_buffered: usize,
    /// Bytes received in order and not yet released by the application.
    pub recv_buffered: usize,
    /// The receive buffer's ceiling now: [`Config::recv_buffer`], or more
    /// once auto-tuning grew it ([`Config::autotune_buffers`]).
    pub recv_buffer: usize,
    /// The send buffer's ceiling now, as `recv_buffer`.
    pub send_buffer: usize,
    /// Effective send MSS.
    pub mss: u16,
    /// Segments retransmitted on this connection.
    pub retransmits: u64,
    /// Consecutive retransmission timeouts now (RFC 6298 §5.5); 0 once an
    /// acknowledgment of new data came.
    pub rto_backoffs: u32,
    /// Consecutive zero-window probes now (the peer's window stayed shut).
    pub persist_backoffs: u32,
    /// When this connection's next timer fires, if one is armed.
    pub next_timer: Option<Instant>,
    /// The path MTU the connection sends within (RFC 1191, RFC 8201).
    pub path_mtu: usize,
    /// The last soft ICMP error (RFC 1122 §4.2.3.9, RFC 5461 §4) since data
    /// was last acknowledged: what to report when the connection times out.
    pub soft_error: Option<IcmpError>,
}

/// A hasher factory keyed from the seed: the connection table's keys come
/// from packets, so the hash must not be predictable (HashDoS).
#[derive(Clone, Debug)]
struct KeyedState(u64, u64);

impl BuildHasher for KeyedState {
    type Hasher = SipHasher13;
    fn build_hasher(&self) -> SipHasher13 {
        SipHasher13::new_with_keys(self.0, self.1)
    }
}

/// Who holds a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Owner {
    /// Created by the listener on this port, not yet accepted.
    Listener(u16),
    /// The application (accepted or connected): it gets events.
    App,
    /// Nobody: the application saw `Closed`; the entry lingers in TIME-WAIT.
    Detached,
}

#[derive(Debug)]
struct Slot {
    gen: u32,
    conn: Option<Box<Conn>>,
    owner: Owner,
    /// The earliest time this slot has an entry in the timer heap.
    scheduled: Option<Instant>,
    /// Set while a compaction has kept this slot's heap entry (see
    /// [`Endpoint::compact_timers`]); clear otherwise.
    timer_kept: bool,
    tx_queued: bool,
    ev_queued: bool,
    /// The connection counts against [`Config::max_passive`] and its
    /// source's [`Config::max_passive_per_source`].
    counted: bool,
}

/// An endpoint-level reply waiting for `poll_transmit`.
#[derive(Debug)]
enum Control {
    /// A reset for a segment with no connection, or from `abort`/timeouts.
    Rst {
        local: SocketAddr,
        remote: SocketAddr,
        seq: SeqNum,
        ack: Option<SeqNum>,
    },
    /// A SYN-ACK carrying a SYN cookie (no state kept).
    CookieSynAck {
        local: SocketAddr,
        remote: SocketAddr,
        iss: SeqNum,
        ack: SeqNum,
        options: TcpOptions,
    },
    /// An ICMP echo reply, already built.
    Echo { buf: Vec<u8>, len: usize },
}

/// The TCP/IP endpoint. See the crate documentation for how to drive it.
///
/// Connections live in slots addressed by [`ConnId`]; a hash map keyed by
/// the 4-tuple (with a keyed SipHash) finds them in O(1) per packet, and a
/// binary heap orders their timers, so [`Endpoint::poll_timeout`] and
/// [`Endpoint::handle_timeout`] cost O(log n).
pub struct Endpoint {
    config: Config,
    stats: Stats,
    secrets: Secrets,
    pool: BufPool,
    slots: Vec<Slot>,
    free_slots: Vec<u32>,
    table: HashMap<(SocketAddr, SocketAddr), u32, KeyedState>,
    listeners: HashMap<u16, Listener, KeyedState>,
    timers: BinaryHeap<Reverse<(Instant, u32, u32)>>,
    /// Heap entries left by the last compaction (see
    /// [`Endpoint::maybe_compact_timers`]).
    timers_kept: usize,
    tx_queue: VecDeque<(u32, u32)>,
    ev_queue: VecDeque<(u32, u32)>,
    incoming: VecDeque<u16>,
    control: VecDeque<Control>,
    echo_bufs: Vec<Vec<u8>>,
    /// The current second of the challenge-ACK budget and what is left of it.
    challenge_window: (u64, u32),
    /// The budget of ICMP errors we send (see `endpoint/icmp_err.rs`).
    /// Key of the per-second challenge-ACK budget draw.
    challenge_key: (u64, u64),
    state_counts: [usize; 11],
    /// Learned path MTUs (RFC 1191, RFC 8201).
    pmtu: icmp_err::PmtuCache,
    /// Fragments awaiting reassembly.
    reasm: reasm::Reassembler,
    /// Identification of the last datagram we fragmented.
    frag_ident: u32,
    /// Passive connections counted against [`Config::max_passive`].
    passive_open: usize,
    /// Of those, how many per source address (no entry: none). At most one
    /// entry per counted connection.
    per_source: HashMap<IpAddr, u32, KeyedState>,
    /// RFC 6056 Algorithm 3's `next_ephemeral` counter.
    next_ephemeral: u32,
    /// Held SYNs of deferred listeners.
    deferred: deferred::Deferred,
    /// Rate limits of the ICMP errors we send.
    icmp_limiter: icmp_send::IcmpLimiter,
    now: Instant,
    /// Timer-heap compactions run (for the tests' cost bounds).
    #[cfg(test)]
    compactions: usize,
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Endpoint")
            .field("connections", &self.table.len())
            .field("stats", &self.stats)
            .finish()
    }
}

fn state_index(s: State) -> usize {
    State::ALL.iter().position(|x| *x == s).unwrap_or(0)
}

impl Endpoint {
    /// An endpoint with `config`; fails when the configuration is invalid.
    pub fn new(config: Config) -> Result<Endpoint, String> {
        config.validate()?;
        // Every secret derives from the seed under its own label (see
        // `derive_key`): the ISN, cookie, timestamp and port keys inside
        // `Secrets`, the two hash-table keys and the challenge-ACK budget key.
        let config_seed = config.seed;
        let pmtu_cache_size = config.pmtu_cache_size;
        let secrets = Secrets::new(config.seed);
        let (d0, d1) = derive_key(config.seed, "demux-table");
        let (l0, l1) = derive_key(config.seed, "listener-table");
        let (p0, p1) = derive_key(config.seed, "source-table");
        Ok(Endpoint {
            pool: BufPool::new(config.buffer_pool_bytes, config.mem_limit),
            config,
            stats: Stats::default(),
            secrets,
            slots: Vec::new(),
            free_slots: Vec::new(),
            table: HashMap::with_hasher(KeyedState(d0, d1)),
            listeners: HashMap::with_hasher(KeyedState(l0, l1)),
            timers: BinaryHeap::new(),
            timers_kept: 0,
            tx_queue: VecDeque::new(),
            ev_queue: VecDeque::new(),
            incoming: VecDeque::new(),
            control: VecDeque::new(),
            echo_bufs: Vec::new(),
            challenge_window: (u64::MAX, 0),
            challenge_key: derive_key(config_seed, "challenge-ack-budget"),
            state_counts: [0; 11],
            pmtu: icmp_err::PmtuCache::new(pmtu_cache_size, derive_key(config_seed, "pmtu-cache")),
            reasm: reasm::Reassembler::new(
                derive_key(config_seed, "reasm-queues"),
                derive_key(config_seed, "reasm-sources"),
            ),
            frag_ident: 0,
            passive_open: 0,
            per_source: HashMap::with_hasher(KeyedState(p0, p1)),
            next_ephemeral: 0,
            deferred: deferred::Deferred::new(derive_key(config_seed, "deferred-syns")),
            icmp_limiter: icmp_send::IcmpLimiter::new(derive_key(config_seed, "icmp-ratelimit")),
            now: Instant::ZERO,
            #[cfg(test)]
            compactions: 0,
        })
    }

    // ----- getters ------------------------------------------------------------

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }
    /// The counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }
    /// Destinations in the path MTU cache (RFC 1191, RFC 8201).
    pub fn pmtu_cache_len(&self) -> usize {
        self.pmtu.len()
    }
    /// The learned path MTU to `dst`, if the cache holds a live one.
    pub fn path_mtu(&mut self, dst: IpAddr) -> Option<usize> {
        self.pmtu.get(dst, self.now).map(|(m, _, _)| m)
    }
    /// Connections in the table (every state, TIME-WAIT included).
    pub fn connection_count(&self) -> usize {
        self.table.len()
    }
    /// Connections per state, in RFC order (LISTEN counts listeners).
    pub fn state_counts(&self) -> [(State, usize); 11] {
        let mut out = State::ALL.map(|s| (s, 0));
        for (i, o) in out.iter_mut().enumerate() {
            o.1 = self.state_counts[i];
        }
        out[1].1 = self.listeners.len();
        out
    }
    /// The RFC 9293 state of a connection.
    pub fn state(&self, id: ConnId) -> Result<State, Error> {
        Ok(self.conn(id)?.state)
    }
    /// A snapshot of one connection.
    pub fn info(&self, id: ConnId) -> Result<ConnInfo, Error> {
        let c = self.conn(id)?;
        Ok(ConnInfo {
            local: c.local,
            remote: c.remote,
            state: c.state,
            srtt: c.srtt(),
            rto: c.rto(),
            cwnd: c.cwnd(),
            ssthresh: c.ssthresh(),
            snd_wnd: c.snd_wnd(),
            rcv_wnd: c.recv_window(&self.config, &self.pool),
            in_flight: c.in_flight(),
            send_buffered: c.send_buffered(),
            recv_buffered: c.recv_buffered(),
            recv_buffer: c.tuned_rcvbuf(&self.config, self.now),
            send_buffer: c.tuned_sndbuf(&self.config, self.now),
            mss: c.mss(),
            retransmits: c.retransmits,
            rto_backoffs: c.rto_backoffs(),
            persist_backoffs: c.persist_backoffs(),
            next_timer: c.next_deadline(),
            path_mtu: c.icmp.path_mtu(),
            soft_error: c.icmp.soft_error,
        })
    }
    /// The connections the application holds (accepted or connected, not
    /// yet `Closed`), in table order.
    pub fn connections(&self) -> impl Iterator<Item = ConnId> + '_ {
        self.slots.iter().enumerate().filter_map(|(i, s)| {
            (s.owner == Owner::App && s.conn.is_some()).then_some(ConnId {
                slot: i as u32,
                gen: s.gen,
            })
        })
    }
    /// Bytes of buffer storage the connections hold together (send and
    /// receive rings), the figure [`Config::mem_limit`] bounds.
    pub fn buffer_bytes(&self) -> usize {
        self.pool.held_bytes()
    }
    /// Bytes of free buffer storage kept for reuse (at most
    /// [`Config::buffer_pool_bytes`]).
    pub fn buffer_pool_bytes(&self) -> usize {
        self.pool.free_bytes()
    }
    /// Whether the endpoint is under memory pressure (see
    /// [`Config::mem_limit`]).
    pub fn under_memory_pressure(&self) -> bool {
        self.pool.under_pressure()
    }
    /// Gives back free buffer storage nobody used since the previous call:
    /// one decay step of the buffer pool. Call it periodically (the daemon:
    /// every few hundred ms), never per packet. Returns the bytes freed; a
    /// pool that a steady exchange keeps cycling loses nothing, a pool left
    /// full by a finished bulk transfer empties within two calls.
    pub fn release_memory(&mut self) -> usize {
        self.pool.decay()
    }

    fn conn(&self, id: ConnId) -> Result<&Conn, Error> {
        match self.slots.get(id.slot as usize) {
            Some(s) if s.gen == id.gen && s.owner == Owner::App => {
                s.conn.as_deref().ok_or(Error::InvalidHandle)
            }
            _ => Err(Error::InvalidHandle),
        }
    }

    fn check(&self, id: ConnId) -> Result<(), Error> {
        self.conn(id).map(|_| ())
    }

    // ----- plumbing -------------------------------------------------------------

    fn drop_packet(&mut self, r: DropReason) {
        self.stats.drops.count(r);
    }

    fn alloc_slot(&mut self, mut conn: Conn, owner: Owner) -> u32 {
        self.apply_cached_pmtu(&mut conn);
        let key = (conn.local, conn.remote);
        let st = conn.state;
        let slot = if let Some(i) = self.free_slots.pop() {
            let s = &mut self.slots[i as usize];
            s.conn = Some(Box::new(conn));
            s.owner = owner;
            s.scheduled = None;
            s.tx_queued = false;
            s.ev_queued = false;
            s.counted = false;
            i
        } else {
            self.slots.push(Slot {
                gen: 0,
                conn: Some(Box::new(conn)),
                owner,
                scheduled: None,
                timer_kept: false,
                tx_queued: false,
                ev_queued: false,
                counted: false,
            });
            (self.slots.len() - 1) as u32
        };
        self.state_counts[state_index(st)] += 1;
        self.table.insert(key, slot);
        if matches!(owner, Owner::Listener(_)) {
            self.slots[slot as usize].counted = true;
            self.passive_open += 1;
            *self.per_source.entry(key.1.ip()).or_insert(0) += 1;
        }
        slot
    }

    /// Whether a new passive connection from `remote` is within
    /// [`Config::max_passive`] and [`Config::max_passive_per_source`]; the
    /// reason to refuse it otherwise. A source's share counts its open
    /// passive connections and its SYNs held by deferred listeners.
    fn passive_limit(&self, remote: SocketAddr) -> Option<DropReason> {
        self.passive_limit_holding(remote, 0)
    }

    /// [`Endpoint::passive_limit`] for a connection made from one of the
    /// source's `own` held SYNs (those already count in its share).
    fn passive_limit_holding(&self, remote: SocketAddr, own: u32) -> Option<DropReason> {
        let c = &self.config;
        if c.max_passive != 0 && self.passive_open >= c.max_passive {
            return Some(DropReason::ConnLimit);
        }
        let ip = remote.ip();
        let open = self.per_source.get(&ip).copied().unwrap_or(0);
        let held = self.deferred.held_from(ip).saturating_sub(own);
        if c.max_passive_per_source != 0
            && (open as usize).saturating_add(held as usize) >= c.max_passive_per_source
        {
            return Some(DropReason::SourceLimit);
        }
        None
    }

    /// Stops counting the connection in `slot` against the passive limits
    /// (it reached TIME-WAIT or CLOSED, or its slot is freed).
    fn uncount(&mut self, slot: u32) {
        let s = &mut self.slots[slot as usize];
        if !s.counted {
            return;
        }
        s.counted = false;
        self.passive_open = self.passive_open.saturating_sub(1);
        if let Some(c) = s.conn.as_deref() {
            let ip = c.remote.ip();
            if let Some(n) = self.per_source.get_mut(&ip) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    self.per_source.remove(&ip);
                }
            }
        }
    }

    /// Passive connections open now (what [`Config::max_passive`] limits).
    pub fn passive_open(&self) -> usize {
        self.passive_open
    }

    /// The latest time passed to [`Endpoint::handle`] or
    /// [`Endpoint::handle_timeout`] (zero before the first call).
    pub fn now(&self) -> Instant {
        self.now
    }

    fn free_slot(&mut self, slot: u32) {
        self.uncount(slot);
        let s = &mut self.slots[slot as usize];
        if let Some(mut c) = s.conn.take() {
            c.free_buffers(&mut self.pool);
            self.state_counts[state_index(c.state)] -= 1;
            self.table.remove(&(c.local, c.remote));
        }
        s.gen = s.gen.wrapping_add(1);
        s.owner = Owner::Detached;
        s.scheduled = None;
        s.tx_queued = false;
        s.ev_queued = false;
        self.free_slots.push(slot);
    }

    /// Runs `f` on the connection in `slot` with a context, then brings the
    /// endpoint's view (state counts, timers, queues, ownership) up to date.
    fn with_conn<R>(
        &mut self,
        slot: u32,
        f: impl FnOnce(&mut Conn, &mut Ctx<'_>) -> R,
    ) -> Option<R> {
        let s = self.slots.get_mut(slot as usize)?;
        let conn = s.conn.as_deref_mut()?;
        let before = conn.state;
        let mut cx = Ctx {
            cfg: &self.config,
            pool: &mut self.pool,
            stats: &mut self.stats,
            now: self.now,
        };
        let r = f(conn, &mut cx);
        let after = conn.state;
        if before != after {
            deferred::note_passive_reset(conn, before);
            self.state_counts[state_index(before)] -= 1;
            self.state_counts[state_index(after)] += 1;
            if matches!(after, State::TimeWait | State::Closed) {
                self.uncount(slot);
            }
        }
        self.after_conn(slot);
        Some(r)
    }

    fn after_conn(&mut self, slot: u32) {
        let s = &mut self.slots[slot as usize];
        let gen = s.gen;
        let Some(conn) = s.conn.as_deref_mut() else {
            return;
        };
        // Timers: push a heap entry only when the deadline moved earlier
        // than every entry already there; later ones are found when the
        // earlier entry pops (a spurious, cheap wake-up).
        let mut pushed = false;
        if let Some(d) = conn.next_deadline() {
            if s.scheduled.is_none_or(|t| d < t) {
                s.scheduled = Some(d);
                self.timers.push(Reverse((d, slot, gen)));
                pushed = true;
            }
        }
        if !s.tx_queued && conn.wants_to_send() {
            s.tx_queued = true;
            self.tx_queue.push_back((slot, gen));
        }
        let state = conn.state;
        match s.owner {
            Owner::App => {
                if conn.ev != 0 && !s.ev_queued {
                    s.ev_queued = true;
                    self.ev_queue.push_back((slot, gen));
                }
            }
            Owner::Listener(port) => {
                if state == State::Closed {
                    if let Some(l) = self.listeners.get_mut(&port) {
                        let id = ConnId { slot, gen };
                        // O(backlog) per dying queued connection: the
                        // accept queue is bounded by the listener's backlog
                        // (the `listen` argument), and only a connection that
                        // dies before `accept` pays it, once.
                        if let Some(pos) = l.accept_queue.iter().position(|x| *x == id) {
                            l.accept_queue.remove(pos);
                        } else {
                            // A half-open connection died (reset, or out of
                            // SYN-ACK retransmissions): free its SYN-queue
                            // slot, or a SYN flood would leave the listener
                            // in cookie mode (or deaf) for good.
                            l.syn_queue = l.syn_queue.saturating_sub(1);
                        }
                    }
                    self.free_slot(slot);
                }
            }
            Owner::Detached => {
                if state == State::Closed {
                    self.free_slot(slot);
                }
            }
        }
        if pushed {
            self.maybe_compact_timers();
        }
    }

    fn push_control(&mut self, c: Control) {
        if self.control.len() >= self.config.max_control_queue {
            self.drop_packet(DropReason::ControlQueueFull);
            if let Control::Echo { buf, .. } = c {
                self.echo_bufs.push(buf);
            }
            return;
        }
        self.control.push_back(c);
    }

    /// Sends a challenge ACK (RFC 5961 §3.2, §4.2, §5.2) on the connection
    /// in `slot`, subject to two limits (RFC 5961 §7 asks for one), as
    /// Linux (tcp_send_challenge_ack):
    ///
    /// - per connection, at most one per 500 ms, shared with the ACKs for
    ///   out-of-window segments without data (Linux: tcp_invalid_ratelimit);
    /// - endpoint-wide, a budget per second that is not a fixed number:
    ///   with one shared, known counter an off-path attacker can count the
    ///   challenge ACKs it provokes and learn whether a guessed 4-tuple or
    ///   sequence number hit (CVE-2016-5696). Each second's budget is drawn
    ///   uniformly from [limit/2, limit/2 + limit - 1] (Linux's range), by a
    ///   keyed hash of the second: deterministic for a seed, unpredictable
    ///   without it.
    fn challenge_ack(&mut self, slot: u32) {
        let now = self.now;
        let interval = self.config.oow_ack_interval;
        let per_conn_ok = self
            .with_conn(slot, |c, _| c.oow_ack_allowed(now, interval))
            .unwrap_or(false);
        if !per_conn_ok {
            self.stats.challenge_acks_suppressed += 1;
            return;
        }
        let sec = now.as_micros() / 1_000_000;
        if self.challenge_window.0 != sec {
            self.challenge_window = (sec, self.challenge_budget(sec));
        }
        if self.challenge_window.1 == 0 {
            self.stats.challenge_acks_suppressed += 1;
            return;
        }
        self.challenge_window.1 -= 1;
        self.stats.challenge_acks += 1;
        self.with_conn(slot, |c, _| c.request_ack());
    }

    /// The endpoint-wide challenge-ACK budget of second `sec` (see
    /// [`Endpoint::challenge_ack`]).
    fn challenge_budget(&self, sec: u64) -> u32 {
        let limit = self.config.challenge_ack_limit;
        if limit == 0 {
            return 0;
        }
        let half = limit.div_ceil(2);
        let mut h = SipHasher13::new_with_keys(self.challenge_key.0, self.challenge_key.1);
        h.write_u64(sec);
        half.saturating_add((h.finish() % u64::from(limit)) as u32)
    }

    // ----- inputs ----------------------------------------------------------------

    /// Handles one IP packet read from the device.
    pub fn handle(&mut self, now: Instant, packet: &[u8]) {
        self.handle_offloaded(now, packet, false);
    }

    /// [`Endpoint::handle`] for a packet whose device vouched for its TCP
    /// checksum (`checksum_valid`: a TUN with offload marks packets the
    /// local kernel built as needing no verification). The packet may be
    /// larger than the MTU when the device coalesced segments (GRO).
    pub fn handle_offloaded(&mut self, now: Instant, packet: &[u8], checksum_valid: bool) {
        self.advance(now);
        self.stats.packets_in += 1;
        self.stats.bytes_in += packet.len() as u64;
        let ip = match parse_ip(packet) {
            Ok(ip) => ip,
            Err(DropReason::Fragment) if self.config.reasm_max_bytes > 0 => {
                return self.handle_fragment(packet)
            }
            Err(DropReason::BadIpv6Extension) => return self.bad_ipv6_extension(packet),
            Err(r) => return self.drop_packet(r),
        };
        if !self.config.addrs.is_empty()
            && !self.config.addrs.contains(&ip.dst)
            && !self.takes_foreign(ip.protocol)
        {
            return self.drop_packet(DropReason::NotOurAddress);
        }
        // RFC 1122 §4.2.3.10: a SYN to a broadcast or multicast address
        // "MUST be silently discarded", and §3.2.1.3: nothing is sent from
        // such an address (nor from 0/8), so no RST or echo reply either
        // (Linux ignores broadcast echo requests by default). Whatever we
        // send from `ip.dst` must pass the source check we apply to what we
        // receive. With empty `addrs` (transparent mode) this is the only
        // guard.
        if !crate::wire::valid_source(ip.dst, ip.src) {
            return self.drop_packet(DropReason::NotOurAddress);
        }
        match (ip.protocol, ip.src) {
            (PROTO_TCP, _) => self.handle_tcp(&ip, !checksum_valid),
            (PROTO_ICMP, IpAddr::V4(_)) | (PROTO_ICMPV6, IpAddr::V6(_)) => self.handle_icmp(&ip),
            _ => self.unsupported_protocol(&ip, !checksum_valid),
        }
    }

    /// A fragment: into reassembly; a datagram it completes is handled as
    /// if it had come whole (one level: it is no fragment any more).
    fn handle_fragment(&mut self, packet: &[u8]) {
        let mut out = std::mem::take(&mut self.reasm.out);
        let now = self.now;
        let done = self
            .reasm
            .insert(&self.config, now, packet, &mut out, &mut self.stats.reasm);
        if let Some(n) = done {
            if let Some(whole) = out.get(..n) {
                // The fragments were counted in; the datagram is not a
                // packet of its own.
                self.stats.packets_in -= 1;
                self.stats.bytes_in -= whole.len() as u64;
                self.handle_offloaded(now, whole, false);
            }
        }
        self.reasm.out = out;
        self.reasm_tick();
    }

    /// Bytes fragment reassembly holds now.
    pub fn reassembly_bytes(&self) -> usize {
        self.reasm.used()
    }

    fn advance(&mut self, now: Instant) {
        // Time never goes backwards; a caller's regression is ignored.
        if now > self.now {
            self.now = now;
        }
    }

    fn handle_icmp(&mut self, ip: &IpPacket<'_>) {
        match parse_icmp_error(ip) {
            Ok(Some(m)) => return self.handle_icmp_error(ip, m),
            Ok(None) => {}
            Err(r) => return self.drop_packet(r),
        }
        let echo = match parse_icmp_echo(ip) {
            Ok(e) => e,
            Err(r) => return self.drop_packet(r),
        };
        if self.control.len() >= self.config.max_control_queue {
            return self.drop_packet(DropReason::ControlQueueFull);
        }
        // Every reply fits the MTU, so it fits any transmit buffer the
        // caller gives (`poll_transmit` asks for at least the MTU): a
        // longer one would stay in front of the control queue for good.
        // Fragmentation is not implemented.
        let headers = crate::wire::ip_header_len(ip.dst) + 8;
        let room = self.config.mtu.saturating_sub(headers);
        // Fragmented when larger than the MTU (as Linux), up to the most
        // an IP datagram holds.
        let fragment = self.config.fragment_replies && headers + echo.data.len() <= 65535;
        let echo = if echo.data.len() <= room || fragment {
            echo
        } else if ip.dst.is_ipv4() {
            // RFC 1122 §3.2.2.6: "if sending the Echo Reply requires
            // intentional fragmentation that is not implemented, the
            // datagram MUST be truncated to maximum transmission size".
            let data = echo.data.get(..room).unwrap_or_default();
            crate::wire::IcmpEcho { data, ..echo }
        } else {
            // RFC 4443 §4.2: the data "MUST be returned entirely and
            // unmodified"; that takes fragmentation here (RFC 8200 §4.5).
            return self.drop_packet(DropReason::ReplyTooLong);
        };
        let need = headers + echo.data.len();
        let mut buf = self.echo_bufs.pop().unwrap_or_default();
        if buf.len() < need {
            buf.resize(need.max(self.config.mtu), 0);
        }
        match emit_icmp_echo_reply(&mut buf, ip.dst, ip.src, &echo) {
            Some(len) => {
                // The wire function writes TTL 64; Config::ttl governs every
                // packet we emit. IPv6: the hop limit is outside every
                // checksum. IPv4: redo the header checksum (RFC 791 §3.1).
                match ip.dst {
                    IpAddr::V4(_) => {
                        buf[8] = self.config.ttl;
                        buf[10] = 0;
                        buf[11] = 0;
                        let c = checksum_fold(checksum_sum(0, &buf[..20]));
                        buf[10..12].copy_from_slice(&c.to_be_bytes());
                    }
                    IpAddr::V6(_) => buf[7] = self.config.ttl,
                }
                self.stats.icmp_echo += 1;
                if len > self.config.mtu {
                    self.push_fragmented(buf, len);
                } else {
                    self.push_control(Control::Echo { buf, len });
                }
            }
            None => self.echo_bufs.push(buf),
        }
    }

    fn handle_tcp(&mut self, ip: &IpPacket<'_>, verify: bool) {
        let seg = match parse_tcp_with(ip, verify) {
            Ok(s) => s,
            Err(r) => return self.drop_packet(r),
        };
        let f = seg.flags;
        if (f.syn() && (f.rst() || f.fin())) || seg.src_port == 0 || seg.dst_port == 0 {
            return self.drop_packet(DropReason::BadTcpFlags);
        }
        self.stats.segments_in += 1;
        let local = SocketAddr::new(ip.dst, seg.dst_port);
        let remote = SocketAddr::new(ip.src, seg.src_port);
        if let Some(&slot) = self.table.get(&(local, remote)) {
            // A passive connection completing its handshake needs room in
            // the accept queue; without it, drop the ACK as Linux does (the
            // peer's retransmission or our SYN-ACK retransmission retries).
            if let Owner::Listener(port) = self.slots[slot as usize].owner {
                let synrcvd = self.slots[slot as usize]
                    .conn
                    .as_ref()
                    .is_some_and(|c| c.state == State::SynReceived);
                let full = self
                    .listeners
                    .get(&port)
                    .is_none_or(|l| l.accept_queue.len() >= l.backlog);
                if synrcvd && f.ack() && !f.rst() && !f.syn() && full {
                    return self.drop_packet(DropReason::ListenOverflow);
                }
            }
            let reply = self
                .with_conn(slot, |c, cx| c.on_segment(cx, &seg))
                .unwrap_or(Reply::None);
            match reply {
                Reply::None => {}
                Reply::Rst { seq, ack } => self.push_control(Control::Rst {
                    local,
                    remote,
                    seq,
                    ack,
                }),
                Reply::ChallengeAck => self.challenge_ack(slot),
                Reply::Established => self.established(slot),
                Reply::Reincarnate
                    if self.listeners.contains_key(&local.port()) || self.deferred.any() =>
                {
                    self.free_slot_any(slot);
                    if !self.defer_segment(ip, local, remote, &seg) {
                        self.for_listener(local, remote, &seg);
                    }
                }
                // No listener to take the new connection: Linux
                // (tcp_v4_rcv, TCP_TW_SYN falling through to TCP_TW_ACK)
                // keeps TIME-WAIT and answers with an ACK, as RFC 9293
                // §3.10.7.4 does for a SYN that does not reopen the
                // connection. Destroying the entry and sending a RST would
                // let any SYN tear TIME-WAIT down. That ACK answers a SYN
                // on a synchronized connection: a challenge ACK (RFC 5961
                // §4.2), under the limits of §7, or each spoofed SYN would
                // draw one.
                Reply::Reincarnate => self.challenge_ack(slot),
            }
            return;
        }
        if !self.defer_segment(ip, local, remote, &seg) {
            self.for_listener(local, remote, &seg);
        }
    }

    /// Frees a connection whoever holds it (TIME-WAIT reuse); an application
    /// still holding it is told `Closed`.
    fn free_slot_any(&mut self, slot: u32) {
        if self.slots[slot as usize].owner == Owner::App {
            // The application has not yet seen Closed: detach the 4-tuple so
            // a new connection can use it, and let the event run its course.
            let s = &mut self.slots[slot as usize];
            if let Some(c) = s.conn.as_deref_mut() {
                let key = (c.local, c.remote);
                c.ev |= ev::CLOSED;
                self.table.remove(&key);
            }
            return;
        }
        self.free_slot(slot);
    }

    fn established(&mut self, slot: u32) {
        let s = &self.slots[slot as usize];
        let Owner::Listener(port) = s.owner else {
            // Accepted with `accept_syn`: the application holds it already.
            if let (Owner::App, Some(c)) = (s.owner, self.slots[slot as usize].conn.as_deref_mut())
            {
                c.ev |= ev::CONNECTED;
                self.after_conn(slot);
            }
            return;
        };
        let id = ConnId { slot, gen: s.gen };
        match self.listeners.get_mut(&port) {
            Some(l) => {
                l.syn_queue = l.syn_queue.saturating_sub(1);
                l.accept_queue.push_back(id);
                if !l.event_pending {
                    l.event_pending = true;
                    self.incoming.push_back(port);
                }
            }
            None => {
                // The listener went away meanwhile: reset.
                let _ = self.abort_slot(slot);
            }
        }
    }

    /// Refuses a passive open over a limit: counts `r`, and for
    /// [`DropReason::SourceLimit`] answers with RST as a closed port would
    /// (RFC 9293 §3.10.7.1); [`DropReason::ConnLimit`] is a silent drop.
    fn refuse(
        &mut self,
        r: DropReason,
        local: SocketAddr,
        remote: SocketAddr,
        seg: &TcpSegment<'_>,
    ) {
        self.drop_packet(r);
        if r == DropReason::SourceLimit {
            let (seq, ack) = if seg.flags.ack() {
                (seg.ack, None)
            } else {
                (SeqNum(0), Some(seg.seq + seg.seg_len()))
            };
            self.push_control(Control::Rst {
                local,
                remote,
                seq,
                ack,
            });
        }
    }

    /// RFC 9293 §3.10.7.1 (CLOSED) and §3.10.7.2 (LISTEN).
    fn for_listener(&mut self, local: SocketAddr, remote: SocketAddr, seg: &TcpSegment<'_>) {
        let f = seg.flags;
        if f.rst() {
            // "An incoming segment containing a RST is discarded."
            self.stats.rst_in += 1;
            return;
        }
        let Some(l) = self.listeners.get(&local.port()) else {
            // CLOSED: "If the ACK bit is off, sequence number zero is used,
            // <SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>. If the ACK bit is on,
            // <SEQ=SEG.ACK><CTL=RST>."
            self.drop_packet(DropReason::NoListener);
            let (seq, ack) = if f.ack() {
                (seg.ack, None)
            } else {
                (SeqNum(0), Some(seg.seq + seg.seg_len()))
            };
            return self.push_control(Control::Rst {
                local,
                remote,
                seq,
                ack,
            });
        };
        let accept_full = l.accept_queue.len() >= l.backlog;
        let syn_full = l.syn_queue >= self.config.syn_backlog;
        let cookies_recent = l.cookies_recent(self.now);
        if f.syn() && !f.ack() {
            // "third check for a SYN"
            if accept_full {
                // Linux drops SYNs while the accept queue is full.
                return self.drop_packet(DropReason::ListenOverflow);
            }
            if let Some(r) = self.passive_limit(remote) {
                return self.refuse(r, local, remote, seg);
            }
            if syn_full || self.table.len() >= self.config.max_connections {
                if self.config.syn_cookies {
                    return self.send_cookie(local, remote, seg);
                }
                return self.drop_packet(if syn_full {
                    DropReason::ListenOverflow
                } else {
                    DropReason::TableFull
                });
            }
            if let Some(l) = self.listeners.get_mut(&local.port()) {
                l.syn_queue += 1;
            }
            let slot = self.new_passive(local, remote, seg, Owner::Listener(local.port()));
            self.after_conn(slot);
            return;
        }
        if f.ack() {
            // "second check for an ACK": "Any acknowledgment is bad if it
            // arrives on a connection still in the LISTEN state" — a SYN-ACK
            // included (Linux resets it too) — unless a bare ACK returns a
            // SYN cookie (RFC 4987 §3.6). Cookies are looked for only while
            // ones we sent may still be valid (Linux:
            // tcp_synq_no_recent_overflow).
            if !f.syn() && self.config.syn_cookies && cookies_recent {
                let cookie = seg.ack - 1;
                if let Some(d) =
                    self.secrets
                        .check_cookie(self.now, local, remote, seg.seq - 1, cookie)
                {
                    // A valid cookie with no room for the connection: drop
                    // the ACK, as Linux does (tcp_v4_syn_recv_sock fails on
                    // a full accept queue): the client retransmits it, or
                    // its data, and gets in once there is room. A RST would
                    // kill a legitimate connection.
                    if accept_full {
                        return self.drop_packet(DropReason::ListenOverflow);
                    }
                    if self.table.len() >= self.config.max_connections {
                        return self.drop_packet(DropReason::TableFull);
                    }
                    if let Some(r) = self.passive_limit(remote) {
                        return self.refuse(r, local, remote, seg);
                    }
                    self.stats.syn_cookies_ok += 1;
                    let (wscale, sack) = match seg.options.timestamps {
                        Some((_, ecr)) => cookie_ts_decode(ecr),
                        None => (None, false),
                    };
                    let ts_off = self.secrets.ts_offset(local, remote);
                    let cx = Ctx {
                        cfg: &self.config,
                        pool: &mut self.pool,
                        stats: &mut self.stats,
                        now: self.now,
                    };
                    let conn = Conn::from_cookie(
                        &cx, local, remote, cookie, ts_off, seg, d.mss, wscale, sack,
                    );
                    self.stats.passive_opens += 1;
                    let slot = self.alloc_slot(conn, Owner::Listener(local.port()));
                    if let Some(l) = self.listeners.get_mut(&local.port()) {
                        l.syn_queue += 1; // undone by `established`
                    }
                    self.established(slot);
                    // The ACK may carry data: process it as the connection's first segment.
                    if !seg.payload.is_empty() || f.fin() {
                        self.with_conn(slot, |c, cx| c.on_segment(cx, seg));
                    } else {
                        self.after_conn(slot);
                    }
                    return;
                }
                self.stats.syn_cookies_bad += 1;
            }
            // "<SEQ=SEG.ACK><CTL=RST>"
            return self.push_control(Control::Rst {
                local,
                remote,
                seq: seg.ack,
                ack: None,
            });
        }
        // "fourth other text or control: ... drop the segment and return."
        self.drop_packet(DropReason::NoListener);
    }

    /// A passive open's connection in SYN-RECEIVED for `syn` (RFC 9293
    /// §3.10.7.2: ISS from RFC 6528, options negotiated from the SYN's), in
    /// a new slot held by `owner`.
    fn new_passive(
        &mut self,
        local: SocketAddr,
        remote: SocketAddr,
        syn: &TcpSegment<'_>,
        owner: Owner,
    ) -> u32 {
        let iss = self.secrets.isn(self.now, local, remote);
        let ts_off = self.secrets.ts_offset(local, remote);
        let cx = Ctx {
            cfg: &self.config,
            pool: &mut self.pool,
            stats: &mut self.stats,
            now: self.now,
        };
        let conn = Conn::accept_syn(&cx, local, remote, iss, ts_off, syn);
        self.alloc_slot(conn, owner)
    }

    fn send_cookie(&mut self, local: SocketAddr, remote: SocketAddr, seg: &TcpSegment<'_>) {
        let peer_mss = seg
            .options
            .mss
            .unwrap_or(if local.is_ipv6() { 1220 } else { 536 });
        let iss = self
            .secrets
            .cookie(self.now, local, remote, seg.seq, peer_mss);
        let mut options = TcpOptions {
            mss: Some(self.config.local_mss(local.is_ipv6())),
            ..Default::default()
        };
        // Window scale and SACK-permitted survive only with timestamps,
        // encoded in our TSval (the peer echoes it).
        if let (true, Some((val, _))) = (self.config.timestamps, seg.options.timestamps) {
            let ws = seg
                .options
                .window_scale
                .filter(|_| self.config.window_scaling);
            let sack = seg.options.sack_permitted && self.config.sack;
            let ts_off = self.secrets.ts_offset(local, remote);
            let now_ts = (self.now.as_millis() as u32).wrapping_add(ts_off);
            options.timestamps = Some((cookie_ts(now_ts, ws, sack), val));
            if ws.is_some() {
                options.window_scale = Some(self.config.recv_wscale());
            }
            options.sack_permitted = sack;
        }
        self.stats.syn_cookies_sent += 1;
        if let Some(l) = self.listeners.get_mut(&local.port()) {
            l.last_cookie = Some(self.now);
        }
        self.push_control(Control::CookieSynAck {
            local,
            remote,
            iss,
            ack: seg.seq + 1,
            options,
        });
    }

    /// Runs the timers due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.advance(now);
        self.expire_held();
        self.reasm_tick();
        while let Some(Reverse((t, slot, gen))) = self.timers.peek().copied() {
            if t > self.now {
                break;
            }
            self.timers.pop();
            let Some(s) = self.slots.get_mut(slot as usize) else {
                continue;
            };
            if s.gen != gen || s.conn.is_none() {
                continue;
            }
            if s.scheduled == Some(t) {
                s.scheduled = None;
            }
            let (local, remote) = match s.conn.as_deref() {
                Some(c) => (c.local, c.remote),
                None => continue,
            };
            if let Some(Some((seq, ack))) = self.with_conn(slot, |c, cx| c.on_timeout(cx)) {
                self.push_control(Control::Rst {
                    local,
                    remote,
                    seq,
                    ack: Some(ack),
                });
            }
            // Make sure a later deadline gets its own heap entry.
            if let Some(s) = self.slots.get_mut(slot as usize) {
                if s.gen == gen && s.scheduled.is_none() {
                    self.after_conn(slot);
                }
            }
        }
        self.maybe_compact_timers();
    }

    /// Keeps stale heap entries from piling up. Entries go stale when a
    /// slot is freed, when its deadline moves earlier (a new entry is
    /// pushed, the old one stays), and as duplicates: when a slot's
    /// earliest entry pops (a delayed ACK cleared meanwhile, say), the next
    /// deadline is pushed again though an identical entry is usually
    /// already there (a keep-alive, persist or backed-off retransmission
    /// deadline that stayed put). Once the heap holds more than twice the
    /// live slots, or twice what the last compaction left, plus 1024
    /// entries, a compaction keeps exactly one entry per slot with a
    /// deadline: the one equal to its `scheduled`.
    ///
    /// This runs on the steady-state path, so it looks only at the heap,
    /// never at every slot ever allocated. Every slot holding a connection
    /// counts as live, in the table or not (a TIME-WAIT entry detached by
    /// [`Endpoint::free_slot_any`] keeps its timer), and a compaction keeps
    /// at most one entry per live slot: it removes more entries than it
    /// keeps, and the next one waits for at least as many pushes as this
    /// one kept plus 1024, so each costs O(1) amortized per push, whatever
    /// the peak slot count, and the heap never holds more than twice the
    /// peak live slots plus 1024 entries.
    fn maybe_compact_timers(&mut self) {
        // Slots on the free list hold no connection; every other one does.
        let live = self.slots.len().saturating_sub(self.free_slots.len());
        if self.timers.len() > 2 * live.max(self.timers_kept) + 1024 {
            self.compact_timers();
        }
    }

    /// See [`Endpoint::maybe_compact_timers`]. Returns how many heap
    /// entries it examined.
    fn compact_timers(&mut self) -> usize {
        #[cfg(test)]
        {
            self.compactions += 1;
        }
        let examined = self.timers.len();
        let slots = &mut self.slots;
        self.timers.retain(|Reverse((t, slot, gen))| {
            match slots.get_mut(*slot as usize) {
                Some(s)
                    if s.gen == *gen
                        && s.conn.is_some()
                        && s.scheduled == Some(*t)
                        && !s.timer_kept =>
                {
                    // The first copy of the slot's entry; later ones go.
                    s.timer_kept = true;
                    true
                }
                _ => false,
            }
        });
        for Reverse((_, slot, _)) in self.timers.iter() {
            if let Some(s) = self.slots.get_mut(*slot as usize) {
                s.timer_kept = false;
            }
        }
        self.timers_kept = self.timers.len();
        examined
    }

    // ----- outputs ---------------------------------------------------------------

    /// Writes the next packet to send into `buf` (at least MTU bytes) and
    /// returns its length; `None` when there is nothing to send.
    ///
    /// A shorter buffer is served as far as it goes: a packet that does not
    /// fit it waits, nothing lost, while shorter ones queued behind it go
    /// out, and data segments are cut to what fits.
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<usize> {
        self.poll_transmit_offload(now, buf).map(|t| t.len)
    }

    /// [`Endpoint::poll_transmit`] with what a device with offload needs to
    /// know about the packet (see [`Config::tso_max`] and
    /// [`Config::checksum_offload`]). `buf` should hold `tso_max` bytes.
    pub fn poll_transmit_offload(&mut self, now: Instant, buf: &mut [u8]) -> Option<Transmit> {
        self.advance(now);
        // Endpoint-level replies first, each looked at once per call.
        let mut left = self.control.len();
        while left > 0 {
            left -= 1;
            let Some(c) = self.control.pop_front() else {
                break;
            };
            if buf.len() < self.control_len(&c) {
                if buf.len() < self.config.mtu {
                    // A buffer below the documented minimum: the reply
                    // waits at the back of the queue (the slot just freed
                    // takes it, no allocation) and the ones behind it that
                    // fit go first.
                    self.control.push_back(c);
                } else {
                    // Every reply fits the MTU (echo replies are cut or
                    // refused at it, `handle_icmp`), so this does not
                    // happen; if it did, holding the reply would block
                    // every packet behind it for good.
                    self.drop_packet(DropReason::ReplyTooLong);
                    if let Control::Echo { buf, .. } = c {
                        self.echo_bufs.push(buf);
                    }
                }
                continue;
            }
            let tcp = !matches!(c, Control::Echo { .. });
            if let Some(n) = self.emit_control(c, buf) {
                self.stats.packets_out += 1;
                self.stats.bytes_out += n as u64;
                return Some(Transmit {
                    len: n,
                    segment_size: 0,
                    partial_checksum: tcp && self.config.checksum_offload,
                });
            }
        }
        // Then the connections, each looked at once per call.
        let mut left = self.tx_queue.len();
        while left > 0 {
            left -= 1;
            let Some((slot, gen)) = self.tx_queue.pop_front() else {
                break;
            };
            let valid = self
                .slots
                .get(slot as usize)
                .is_some_and(|s| s.gen == gen && s.conn.is_some());
            if !valid {
                continue;
            }
            self.slots[slot as usize].tx_queued = false;
            let sent = self
                .with_conn(slot, |c, cx| {
                    c.dispatch(cx, buf).map(|n| (n, c.last_tx_segment()))
                })
                .flatten();
            if let Some((n, segment_size)) = sent {
                // It may have more: keep it in line behind the others.
                if let Some(s) = self.slots.get_mut(slot as usize) {
                    if s.gen == gen && !s.tx_queued && s.conn.is_some() {
                        s.tx_queued = true;
                        self.tx_queue.push_back((slot, gen));
                    }
                }
                self.stats.packets_out += 1;
                self.stats.bytes_out += n as u64;
                return Some(Transmit {
                    len: n,
                    segment_size,
                    partial_checksum: self.config.checksum_offload,
                });
            }
            // The connection has a segment that does not fit `buf` (only a
            // buffer below the MTU can be that short: data is cut to the
            // room, and headers alone stay far below the MTU). Its state
            // is unchanged (see `Conn::dispatch`): it waits at the back of
            // the queue, and the connections behind it go first.
            let short = self.slots[slot as usize]
                .conn
                .as_deref()
                .is_some_and(|c| c.short_buffer);
            if short {
                let s = &mut self.slots[slot as usize];
                if !s.tx_queued {
                    s.tx_queued = true;
                    self.tx_queue.push_back((slot, gen));
                }
                continue;
            }
            // Nothing to send: `after_conn` may have queued it again if it
            // still wants to; drop that to avoid spinning.
            if let Some(s) = self.slots.get_mut(slot as usize) {
                if s.tx_queued && self.tx_queue.back() == Some(&(slot, gen)) {
                    self.tx_queue.pop_back();
                    s.tx_queued = false;
                }
            }
        }
        None
    }

    /// The length of the packet `c` becomes.
    fn control_len(&self, c: &Control) -> usize {
        match c {
            Control::Rst { local, .. } => crate::wire::ip_header_len(local.ip()) + 20,
            Control::CookieSynAck { local, options, .. } => {
                crate::wire::ip_header_len(local.ip()) + 20 + options.encoded_len()
            }
            Control::Echo { len, .. } => *len,
        }
    }

    fn emit_control(&mut self, c: Control, buf: &mut [u8]) -> Option<usize> {
        match c {
            Control::Rst {
                local,
                remote,
                seq,
                ack,
            } => {
                let mut flags = TcpFlags::RST;
                if ack.is_some() {
                    flags |= TcpFlags::ACK;
                }
                let repr = TcpRepr {
                    src_port: local.port(),
                    dst_port: remote.port(),
                    seq,
                    ack: ack.unwrap_or(SeqNum(0)),
                    flags,
                    window: 0,
                    options: TcpOptions::default(),
                };
                self.stats.rst_out += 1;
                self.stats.segments_out += 1;
                emit_tcp_with(
                    buf,
                    local.ip(),
                    remote.ip(),
                    self.config.ttl,
                    &repr,
                    0,
                    self.config.checksum_offload,
                )
            }
            Control::CookieSynAck {
                local,
                remote,
                iss,
                ack,
                options,
            } => {
                let repr = TcpRepr {
                    src_port: local.port(),
                    dst_port: remote.port(),
                    seq: iss,
                    ack,
                    flags: TcpFlags::SYN | TcpFlags::ACK,
                    window: self.config.recv_buffer.min(65535) as u16,
                    options,
                };
                let _ = tcp_payload_offset(local.ip(), &repr);
                self.stats.segments_out += 1;
                emit_tcp_with(
                    buf,
                    local.ip(),
                    remote.ip(),
                    self.config.ttl,
                    &repr,
                    0,
                    self.config.checksum_offload,
                )
            }
            Control::Echo { buf: b, len } => {
                let n = if buf.len() >= len {
                    buf[..len].copy_from_slice(&b[..len]);
                    Some(len)
                } else {
                    None
                };
                self.echo_bufs.push(b);
                n
            }
        }
    }

    /// When [`Endpoint::handle_timeout`] should next be called. May be
    /// early (a timer that moved later); never late.
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        let conn = self.timers.peek().map(|Reverse((t, _, _))| *t);
        conn.into_iter()
            .chain(self.deferred.next_deadline())
            .chain(self.reasm.next_deadline())
            .min()
    }

    /// Whether [`Endpoint::poll_event`] may have an event: a driver that
    /// reads many packets in a row uses it to let the application run
    /// before it reads on (an event queued for a connection that has
    /// since gone counts too).
    pub fn has_events(&self) -> bool {
        !self.incoming.is_empty() || !self.ev_queue.is_empty()
    }

    /// The next event for the application.
    pub fn poll_event(&mut self) -> Option<Event> {
        if let Some(e) = self.poll_deferred_event() {
            return Some(e);
        }
        if let Some(port) = self.incoming.pop_front() {
            if let Some(l) = self.listeners.get_mut(&port) {
                l.event_pending = false;
                if !l.accept_queue.is_empty() {
                    return Some(Event::Incoming { port });
                }
            }
        }
        while let Some(&(slot, gen)) = self.ev_queue.front() {
            let s = match self.slots.get_mut(slot as usize) {
                Some(s) if s.gen == gen && s.owner == Owner::App => s,
                _ => {
                    self.ev_queue.pop_front();
                    continue;
                }
            };
            let Some(conn) = s.conn.as_deref_mut() else {
                self.ev_queue.pop_front();
                continue;
            };
            let id = ConnId { slot, gen };
            let order = [
                (ev::CONNECTED, Event::Connected(id)),
                (ev::READABLE, Event::Readable(id)),
                (ev::PEER_CLOSED, Event::PeerClosed(id)),
                (ev::WRITABLE, Event::Writable(id)),
                (ev::RESET, Event::Reset(id)),
                (ev::TIMED_OUT, Event::TimedOut(id)),
                (
                    ev::UNREACHABLE,
                    Event::Unreachable(id, conn.icmp.error.unwrap_or(IcmpError::HostUnreachable)),
                ),
                (ev::CLOSED, Event::Closed(id)),
            ];
            // `Closed` waits until the application has read what arrived
            // before the peer's FIN (unless the connection is gone for good).
            let hold_closed = conn.state != State::Closed && conn.has_unread();
            let Some(&(bit, event)) = order
                .iter()
                .find(|(b, _)| conn.ev & b != 0 && !(*b == ev::CLOSED && hold_closed))
            else {
                s.ev_queued = false;
                self.ev_queue.pop_front();
                continue;
            };
            conn.ev &= !bit;
            if conn.ev == 0 || (conn.ev == ev::CLOSED && hold_closed) {
                s.ev_queued = false;
                self.ev_queue.pop_front();
            }
            if bit == ev::CLOSED {
                // The application lets go; the entry may linger in TIME-WAIT
                // without buffers.
                s.owner = Owner::Detached;
                s.ev_queued = false;
                conn.ev = 0;
                if self.ev_queue.front() == Some(&(slot, gen)) {
                    self.ev_queue.pop_front();
                }
                let detached_from_table = self.table.get(&(conn.local, conn.remote)) != Some(&slot);
                if conn.state == State::Closed || detached_from_table {
                    if detached_from_table {
                        // Reincarnated 4-tuple: only the slot is ours.
                        self.uncount(slot);
                        let s = &mut self.slots[slot as usize];
                        let c = s.conn.take();
                        if let Some(mut c) = c {
                            c.free_buffers(&mut self.pool);
                            self.state_counts[state_index(c.state)] -= 1;
                        }
                        s.gen = s.gen.wrapping_add(1);
                        s.scheduled = None;
                        s.tx_queued = false;
                        self.free_slots.push(slot);
                    } else {
                        self.free_slot(slot);
                    }
                } else {
                    conn.free_buffers(&mut self.pool);
                }
            }
            return Some(event);
        }
        None
    }

    // ----- application calls -------------------------------------------------------

    /// Opens a listener on `port` (every local address) with an accept
    /// queue of `backlog` connections.
    pub fn listen(&mut self, port: u16, backlog: usize) -> Result<(), Error> {
        if port == 0 {
            return Err(Error::BadAddress);
        }
        if self.listeners.contains_key(&port) {
            return Err(Error::PortInUse);
        }
        self.listeners.insert(port, Listener::new(backlog));
        Ok(())
    }

    /// Closes the listener on `port`; connections not yet accepted are reset,
    /// SYNs a deferred listener holds expire ([`Event::SynExpired`]).
    pub fn unlisten(&mut self, port: u16) {
        if let Some(l) = self.listeners.remove(&port) {
            if l.deferred {
                self.expire_listener(Some(port));
            }
            for id in l.accept_queue {
                if self
                    .slots
                    .get(id.slot as usize)
                    .is_some_and(|s| s.gen == id.gen)
                {
                    let _ = self.abort_slot(id.slot);
                }
            }
        }
    }

    /// Takes the next established connection from `port`'s accept queue.
    /// The application may refuse it with [`Endpoint::abort`].
    pub fn accept(&mut self, port: u16) -> Option<ConnId> {
        loop {
            let id = self.listeners.get_mut(&port)?.accept_queue.pop_front()?;
            let Some(s) = self.slots.get_mut(id.slot as usize) else {
                continue;
            };
            if s.gen != id.gen || s.conn.is_none() {
                continue;
            }
            s.owner = Owner::App;
            self.after_conn(id.slot);
            return Some(id);
        }
    }

    /// Starts an active open from `local` (an ephemeral port is chosen) to
    /// `remote`. [`Event::Connected`] follows, or [`Event::TimedOut`] /
    /// [`Event::Reset`].
    pub fn connect(
        &mut self,
        now: Instant,
        local: IpAddr,
        remote: SocketAddr,
    ) -> Result<ConnId, Error> {
        self.advance(now);
        if local.is_ipv4() != remote.is_ipv4()
            || (!self.config.addrs.is_empty() && !self.config.addrs.contains(&local))
        {
            return Err(Error::BadAddress);
        }
        if self.table.len() >= self.config.max_connections {
            return Err(Error::TableFull);
        }
        // RFC 6056 §3.3.3, Algorithm 3: port = min + (next_ephemeral +
        // F(local IP, remote IP, remote port, secret)) mod range. The keyed
        // offset makes the ports seen by one destination unpredictable to
        // every other one; the counter moves the search on between connects.
        let (lo, hi) = self.config.ephemeral_ports;
        let span = u32::from(hi - lo) + 1;
        let offset = self.secrets.port_offset(local, remote);
        let mut port = None;
        for _ in 0..span {
            let p = lo + (self.next_ephemeral.wrapping_add(offset) % span) as u16;
            self.next_ephemeral = self.next_ephemeral.wrapping_add(1);
            let l = SocketAddr::new(local, p);
            if !self.listeners.contains_key(&p) && !self.table.contains_key(&(l, remote)) {
                port = Some(p);
                break;
            }
        }
        let local = SocketAddr::new(local, port.ok_or(Error::NoPortsAvailable)?);
        let iss = self.secrets.isn(self.now, local, remote);
        let ts_off = self.secrets.ts_offset(local, remote);
        let cx = Ctx {
            cfg: &self.config,
            pool: &mut self.pool,
            stats: &mut self.stats,
            now: self.now,
        };
        let conn = Conn::connect(&cx, local, remote, iss, ts_off);
        let slot = self.alloc_slot(conn, Owner::App);
        self.after_conn(slot);
        Ok(ConnId {
            slot,
            gen: self.slots[slot as usize].gen,
        })
    }

    /// Queues data; returns how much fitted in the send buffer (maybe 0:
    /// wait for [`Event::Writable`]).
    pub fn send(&mut self, id: ConnId, data: &[u8]) -> Result<usize, Error> {
        self.check(id)?;
        self.with_conn(id.slot, |c, cx| c.send(cx, data))
            .unwrap_or(Err(Error::InvalidHandle))
    }

    /// Free space in the send buffer.
    pub fn send_capacity(&self, id: ConnId) -> Result<usize, Error> {
        Ok(self.conn(id)?.send_space(&self.config, &self.pool))
    }

    /// Reads and releases received data. `Ok(0)`: end of stream (the peer
    /// sent FIN and everything before it was read). `Err(WouldBlock)`:
    /// nothing now.
    pub fn recv(&mut self, id: ConnId, buf: &mut [u8]) -> Result<usize, Error> {
        let n = self.recv_hold(id, buf)?;
        self.release(id, n)?;
        Ok(n)
    }

    /// Reads received data without releasing it: the bytes keep counting
    /// against the advertised window until [`Endpoint::release`]. Each call
    /// returns the bytes after those already returned.
    pub fn recv_hold(&mut self, id: ConnId, buf: &mut [u8]) -> Result<usize, Error> {
        self.check(id)?;
        self.with_conn(id.slot, |c, _| c.recv_hold(buf))
            .unwrap_or(Err(Error::InvalidHandle))
    }

    /// Releases the oldest `n` bytes read with [`Endpoint::recv_hold`],
    /// opening the window (a window update goes out when it grew enough).
    pub fn release(&mut self, id: ConnId, n: usize) -> Result<(), Error> {
        self.check(id)?;
        self.with_conn(id.slot, |c, cx| c.release(cx, n));
        Ok(())
    }

    /// Whether the peer has closed its side (FIN received in order).
    pub fn peer_closed(&self, id: ConnId) -> Result<bool, Error> {
        Ok(self.conn(id)?.fin_received())
    }

    /// Half-closes: a FIN follows the queued data. The connection stays
    /// readable until the peer closes too.
    pub fn close(&mut self, id: ConnId) -> Result<(), Error> {
        self.check(id)?;
        self.with_conn(id.slot, |c, cx| c.close(cx));
        Ok(())
    }

    /// Resets the connection (RST) and discards its data. [`Event::Closed`] follows.
    pub fn abort(&mut self, id: ConnId) -> Result<(), Error> {
        self.check(id)?;
        self.abort_slot(id.slot);
        Ok(())
    }

    fn abort_slot(&mut self, slot: u32) -> Option<()> {
        let (local, remote) = self.slots[slot as usize]
            .conn
            .as_deref()
            .map(|c| (c.local, c.remote))?;
        if let Some(Some((seq, ack))) = self.with_conn(slot, |c, cx| c.abort(cx)) {
            self.push_control(Control::Rst {
                local,
                remote,
                seq,
                ack: Some(ack),
            });
        }
        Some(())
    }

    /// Turns Nagle's algorithm off (`true`) or on for one connection.
    pub fn set_nodelay(&mut self, id: ConnId, nodelay: bool) -> Result<(), Error> {
        self.check(id)?;
        self.with_conn(id.slot, |c, _| c.nodelay = nodelay);
        Ok(())
    }
}

#[allow(unused)]
fn _assert_send() {
    fn is_send<T: Send>() {}
    is_send::<Endpoint>();
    let _ = Duration::ZERO;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timer_compaction_looks_at_the_heap_not_at_every_slot() {
        // 5000 connections come and go (their slots stay allocated, their
        // heap entries go stale); one stays. Compaction examines the heap
        // entries only, keeps exactly the live connection's, and its timer
        // still fires.
        let mut ep = Endpoint::new(Config {
            addrs: Vec::new(),
            ..Config::default()
        })
        .unwrap();
        let remote: SocketAddr = "10.0.0.1:80".parse().unwrap();
        let local: IpAddr = "10.0.0.2".parse().unwrap();
        let mut buf = vec![0u8; 1500];
        let ids: Vec<ConnId> = (0..5000)
            .map(|_| ep.connect(Instant::ZERO, local, remote).unwrap())
            .collect();
        while ep.poll_transmit(Instant::ZERO, &mut buf).is_some() {}
        let keep = ep.connect(Instant::ZERO, local, remote).unwrap();
        while ep.poll_transmit(Instant::ZERO, &mut buf).is_some() {}
        for id in ids {
            ep.abort(id).unwrap();
        }
        while ep.poll_event().is_some() {}
        assert_eq!(ep.connection_count(), 1);
        assert!(ep.slots.len() > 5000);
        // 5001 entries, 5000 of them stale: past the threshold (2 * 1 +
        // 1024), the next timer run compacts the heap to the live entry.
        assert_eq!(ep.timers.len(), 5001);
        ep.handle_timeout(Instant::from_millis(1));
        assert_eq!(ep.timers.len(), 1);
        // More churn through the freed slots: the next compaction costs what
        // the heap holds, not the 5001 slots.
        for _ in 0..100 {
            let id = ep.connect(Instant::from_millis(1), local, remote).unwrap();
            // The SYN goes out and arms its timer: one more heap entry.
            while ep
                .poll_transmit(Instant::from_millis(1), &mut buf)
                .is_some()
            {}
            ep.abort(id).unwrap();
        }
        while ep.poll_event().is_some() {}
        assert_eq!(ep.timers.len(), 101);
        let examined = ep.compact_timers();
        assert_eq!(examined, 101, "the heap's entries, not the 5001 slots");
        assert_eq!(ep.timers.len(), 1);
        // The live SYN's retransmission timer still fires (1 s).
        assert_eq!(ep.poll_timeout(), Some(Instant::from_secs(1)));
        ep.handle_timeout(Instant::from_secs(1));
        assert!(ep.poll_transmit(Instant::from_secs(1), &mut buf).is_some());
        assert_eq!(ep.state(keep), Ok(State::SynSent));
    }

    /// Moves every packet each endpoint has to send at `now` to the other,
    /// until both are quiet.
    fn exchange(a: &mut Endpoint, b: &mut Endpoint, now: Instant, buf: &mut [u8]) {
        loop {
            let mut moved = false;
            while let Some(n) = a.poll_transmit(now, buf) {
                b.handle(now, &buf[..n]);
                moved = true;
            }
            while let Some(n) = b.poll_transmit(now, buf) {
                a.handle(now, &buf[..n]);
                moved = true;
            }
            if !moved {
                break;
            }
        }
    }

    /// Runs both endpoints' timers due by `until`, one deadline at a time,
    /// moving what they send; returns at `until`.
    fn run_until(a: &mut Endpoint, b: &mut Endpoint, until: Instant, buf: &mut [u8]) {
        loop {
            let next = [a.poll_timeout(), b.poll_timeout()]
                .into_iter()
                .flatten()
                .min()
                .filter(|t| *t <= until);
            let Some(t) = next else { break };
            a.handle_timeout(t);
            b.handle_timeout(t);
            exchange(a, b, t, buf);
        }
        exchange(a, b, until, buf);
    }

    /// The slots holding a connection, in or out of the 4-tuple table.
    fn live_slots(ep: &Endpoint) -> usize {
        ep.slots.iter().filter(|s| s.conn.is_some()).count()
    }

    #[test]
    fn timer_heap_stays_bounded_under_keepalive_and_delayed_acks() {
        // Keep-alive on: each connection's deadline K stays fixed while
        // requests and responses flow. Each request arms a delayed ACK
        // (earlier than K: a heap entry), the response's ACK clears it, and
        // when that entry pops the slot is scheduled at K again, pushing a
        // second (K, slot, gen) beside the one already there. With 50
        // connections taking turns, a compaction that kept every entry
        // equal to its slot's `scheduled` would keep the copies of all the
        // idle ones: the heap would sit at its threshold (22 times the
        // live slots), and a full compaction, removing only the active
        // connection's copies, would run every few cycles (84 here).
        // Deduplicated, the heap holds one
        // entry per live slot after each compaction, stays within twice
        // the live slots plus 1024, and compactions stay rare (each
        // follows at least 1024 pushes).
        let ka = Some(crate::config::Keepalive::default());
        let server_ip: IpAddr = "10.0.0.2".parse().unwrap();
        let client_ip: IpAddr = "10.0.0.1".parse().unwrap();
        let mut server = Endpoint::new(Config {
            addrs: vec![server_ip],
            keepalive: ka,
            ..Config::default()
        })
        .unwrap();
        let mut client = Endpoint::new(Config {
            seed: 1,
            addrs: vec![client_ip],
            keepalive: ka,
            ..Config::default()
        })
        .unwrap();
        let mut buf = vec![0u8; 1500];
        server.listen(80, 64).unwrap();
        let conns = 50;
        let mut pairs = Vec::new();
        for _ in 0..conns {
            let c = client
                .connect(Instant::ZERO, client_ip, SocketAddr::new(server_ip, 80))
                .unwrap();
            exchange(&mut client, &mut server, Instant::ZERO, &mut buf);
            let s = server.accept(80).unwrap();
            client.set_nodelay(c, true).unwrap();
            server.set_nodelay(s, true).unwrap();
            pairs.push((c, s));
        }
        let cycles = 3000u64;
        for i in 1..=cycles {
            // One connection at a time: the last one's delayed ACK (40 ms)
            // and retransmission timer (200 ms) are gone when the next
            // starts, and every other slot is scheduled at its K.
            let t = Instant::from_millis(250 * i);
            let (c, s) = pairs[i as usize % conns];
            run_until(&mut client, &mut server, t, &mut buf);
            assert_eq!(client.send(c, b"request"), Ok(7));
            exchange(&mut client, &mut server, t, &mut buf);
            let mut req = [0u8; 16];
            assert_eq!(server.recv(s, &mut req), Ok(7));
            assert_eq!(server.send(s, b"response"), Ok(8));
            exchange(&mut client, &mut server, t, &mut buf);
            let mut resp = [0u8; 16];
            assert_eq!(client.recv(c, &mut resp), Ok(8));
            for ep in [&server, &client] {
                let live = live_slots(ep);
                assert!(
                    ep.timers.len() <= 2 * live + 1024,
                    "cycle {i}: {} heap entries for {live} live slots",
                    ep.timers.len()
                );
            }
        }
        for ep in [&mut server, &mut client] {
            // Fewer than 4 pushes per cycle and endpoint, and at least
            // 1024 between two compactions.
            assert!(
                ep.compactions <= 4 * cycles as usize / 1024 + 1,
                "{} compactions in {cycles} cycles",
                ep.compactions
            );
            // Compacted, the heap holds one entry per slot with a deadline.
            ep.compact_timers();
            assert_eq!(ep.timers.len(), conns, "one entry per connection");
        }
        for (_, s) in pairs {
            assert_eq!(server.state(s), Ok(State::Established));
        }
    }

    #[test]
    fn slots_detached_by_reincarnation_count_as_live_for_compaction() {
        // The server closes 1100 connections first (TIME-WAIT on its side)
        // and its application never reads their `Closed`. The client
        // reopens each 4-tuple: the SYN reincarnates it (RFC 6191), which
        // detaches the TIME-WAIT entry from the table but leaves it in its
        // slot with its 2 MSL timer, then aborts the new connection. The
        // table is then empty while 1100 slots still hold a timer each:
        // counting only the table's connections, every push would run a
        // compaction that keeps all 1100 entries.
        let server_ip: IpAddr = "10.0.0.2".parse().unwrap();
        let mut server = Endpoint::new(Config {
            addrs: vec![server_ip],
            syn_backlog: 2048,
            ..Config::default()
        })
        .unwrap();
        let mut client = Endpoint::new(Config {
            seed: 1,
            addrs: Vec::new(),
            ephemeral_ports: (40000, 40000),
            ..Config::default()
        })
        .unwrap();
        let mut buf = vec![0u8; 1500];
        server.listen(80, 2048).unwrap();
        let dst = SocketAddr::new(server_ip, 80);
        let n = 1100u32;
        let src = |i: u32| IpAddr::from([10, 1, (i >> 8) as u8, i as u8]);
        let mut now = Instant::ZERO;
        for i in 0..n {
            client.connect(now, src(i), dst).unwrap();
        }
        exchange(&mut client, &mut server, now, &mut buf);
        while let Some(id) = server.accept(80) {
            server.close(id).unwrap();
        }
        exchange(&mut client, &mut server, now, &mut buf);
        // The client closes on the server's FIN; its entries go away.
        while let Some(e) = client.poll_event() {
            if let Event::PeerClosed(id) = e {
                client.close(id).unwrap();
            }
        }
        exchange(&mut client, &mut server, now, &mut buf);
        while client.poll_event().is_some() {}
        assert_eq!(client.connection_count(), 0);
        assert_eq!(server.state_counts()[10], (State::TimeWait, n as usize));
        // Later, so that the new ISNs lie above the old connections'.
        now = Instant::from_millis(10);
        let ids: Vec<ConnId> = (0..n)
            .map(|i| client.connect(now, src(i), dst).unwrap())
            .collect();
        exchange(&mut client, &mut server, now, &mut buf);
        while client.poll_event().is_some() {}
        for id in ids {
            client.abort(id).unwrap();
            exchange(&mut client, &mut server, now, &mut buf);
        }
        while client.poll_event().is_some() {}
        assert_eq!(server.connection_count(), 0);
        assert_eq!(
            live_slots(&server),
            n as usize,
            "detached TIME-WAIT entries"
        );
        // A little traffic: ten connections opened and reset.
        let before = server.compactions;
        for _ in 0..10 {
            let id = client.connect(now, src(0), dst).unwrap();
            exchange(&mut client, &mut server, now, &mut buf);
            client.abort(id).unwrap();
            exchange(&mut client, &mut server, now, &mut buf);
            while client.poll_event().is_some() {}
        }
        assert!(
            server.compactions - before <= 1,
            "{} compactions for ten connections",
            server.compactions - before
        );
    }

    #[test]
    fn passive_limits_refuse_per_source_with_rst_and_overall_by_silence() {
        // Per source 3, overall 5: a fourth connection from one address is
        // reset (the client sees Reset), connections from other addresses
        // still get in up to 5, the sixth SYN is dropped unanswered; a
        // connection that reaches TIME-WAIT stops counting.
        let server_ip: IpAddr = "10.0.0.2".parse().unwrap();
        let mut server = Endpoint::new(Config {
            addrs: vec![server_ip],
            max_passive: 5,
            max_passive_per_source: 3,
            ..Config::default()
        })
        .unwrap();
        let mut client = Endpoint::new(Config {
            seed: 1,
            ..Config::default()
        })
        .unwrap();
        let mut buf = vec![0u8; 1500];
        server.listen(80, 64).unwrap();
        let dst = SocketAddr::new(server_ip, 80);
        let a = IpAddr::from([10, 0, 0, 1]);
        let b = IpAddr::from([10, 0, 0, 3]);
        let now = Instant::ZERO;
        let ca: Vec<ConnId> = (0..4)
            .map(|_| client.connect(now, a, dst).unwrap())
            .collect();
        exchange(&mut client, &mut server, now, &mut buf);
        let mut resets = 0;
        while let Some(e) = client.poll_event() {
            resets += usize::from(matches!(e, Event::Reset(_)));
        }
        assert_eq!(resets, 1, "the fourth from one source is refused");
        assert_eq!(server.stats().drops.source_limit, 1);
        assert_eq!(server.passive_open(), 3);
        for _ in 0..3 {
            client.connect(now, b, dst).unwrap();
        }
        exchange(&mut client, &mut server, now, &mut buf);
        assert_eq!(server.passive_open(), 5);
        assert!(server.stats().drops.conn_limit >= 1, "the sixth is dropped");
        // One of a's connections closes from the server side first: the
        // server's TIME-WAIT does not count, and a new one from a gets in
        // once the client's retransmitted SYN comes (after its RTO).
        let mut accepted = Vec::new();
        while let Some(id) = server.accept(80) {
            accepted.push(id);
        }
        let first = accepted[0];
        server.close(first).unwrap();
        exchange(&mut client, &mut server, now, &mut buf);
        while let Some(e) = client.poll_event() {
            if let Event::PeerClosed(id) = e {
                client.close(id).unwrap();
            }
        }
        exchange(&mut client, &mut server, now, &mut buf);
        assert_eq!(server.state(first).unwrap(), State::TimeWait);
        assert_eq!(server.passive_open(), 4);
        let _ = ca;
        let later = Instant::from_millis(1500);
        client.handle_timeout(later);
        exchange(&mut client, &mut server, later, &mut buf);
        assert_eq!(server.passive_open(), 5, "the retried SYN got in");
    }

    #[test]
    fn a_queued_reply_longer_than_an_mtu_sized_buffer_is_dropped_not_held() {
        // `handle_icmp` keeps every reply within the MTU; should one longer
        // reach the queue anyway, a buffer of at least the MTU drops and
        // counts it instead of holding it in front of the queue for good.
        let mut ep = Endpoint::new(Config::default()).unwrap();
        ep.push_control(Control::Echo {
            buf: vec![0u8; 3000],
            len: 3000,
        });
        ep.push_control(Control::Rst {
            local: "10.0.0.2:80".parse().unwrap(),
            remote: "10.0.0.1:1234".parse().unwrap(),
            seq: SeqNum(1),
            ack: None,
        });
        let mut buf = vec![0u8; 1500];
        assert_eq!(ep.poll_transmit(Instant::ZERO, &mut buf), Some(40));
        assert_eq!(ep.poll_transmit(Instant::ZERO, &mut buf), None);
        assert_eq!(ep.stats().drops.reply_too_long, 1);
        assert_eq!(ep.echo_bufs.len(), 1, "the buffer is kept for reuse");
    }

    #[test]
    fn hash_tables_are_keyed_from_the_seed_by_label() {
        // Both tables use the crate's keyed SipHash with a key derived from
        // the seed (no std RandomState: no OS randomness in the crate), and
        // the two keys are independent of each other and of the ISN key.
        let cfg = Config {
            seed: 42,
            ..Config::default()
        };
        let ep = Endpoint::new(cfg).unwrap();
        let t = ep.table.hasher();
        let l = ep.listeners.hasher();
        assert_eq!((t.0, t.1), derive_key(42, "demux-table"));
        assert_eq!((l.0, l.1), derive_key(42, "listener-table"));
        assert_ne!((t.0, t.1), (l.0, l.1));
        assert_ne!((t.0, t.1), derive_key(42, "isn"));
        // Deterministic for the seed.
        let again = Endpoint::new(Config {
            seed: 42,
            ..Config::default()
        })
        .unwrap();
        assert_eq!(again.table.hasher().0, t.0);
    }
}
