//! The reactor: one thread that owns the device and the [`tcp::Endpoint`],
//! and therefore every connection's state (no lock guards protocol state).
//!
//! Each wake-up (mio, edge-triggered) it
//! 1. drains the device until `WouldBlock` (at most `rx_budget` packets
//!    before it transmits, then on) and feeds every packet to the endpoint;
//! 2. runs the endpoint's timers when due;
//! 3. applies the workers' commands (send, close, abort, consumed);
//! 4. turns endpoint events into worker events (accepting connections,
//!    reading data with `recv_hold`, granting send credit);
//! 5. hands each worker its batch (or, with `--workers 0`, runs the handlers
//!    inline and loops back to 3);
//! 6. writes out everything `poll_transmit` yields; a packet the device
//!    refuses (`WouldBlock`/`ENOBUFS`) is kept and retried, never lost;
//! 7. sleeps until the next packet, command, device timer or `poll_timeout`.
//!
//! Signals: SIGINT/SIGTERM start a graceful shutdown (stop accepting, FIN
//! every connection, wait up to the grace period, RST the rest); a second
//! one exits at once, also while the shutdown waits for workers or the pcap
//! writer; SIGUSR1 writes the counters to stderr.

use crate::clock::Clock;
use crate::config::Config;
use crate::device::{is_transient, Device};
use crate::error::Error;
use crate::forward::connect::ConnectFailure;
use crate::forward::splice::UpstreamView;
use crate::forward::Forwarding;
use crate::pool::Pool;
use crate::services::{ConnCtx, InlineConfig, InlineHost, Service, Status, StatusBoard};
use crate::worker::{
    Cmd, HelpLink, Host, ReactorWake, Spares, ToWorker, WorkerSetup, WorkerShared, WORKER_WAKER,
};
use crossbeam_channel::{Receiver, Sender, TrySendError};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use signal_hook::consts::{SIGINT, SIGTERM, SIGUSR1};
use signal_hook_mio::v1_0::Signals;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tcp::{ConnId, Endpoint, Event, Refusal, State, Unreach};
use tracing::{debug, info, warn};

const TUN: Token = Token(0);
const WAKER: Token = Token(1);
const SIGNALS: Token = Token(2);

/// Reads of at least this many bytes go to a handler in the buffer they
/// were read into (see `Reactor::readbuf`); smaller ones are copied.
const SWAP_READ_MIN: usize = 8 * 1024;

/// How long a forced exit (second signal) lets the pcap writer finish.
const FORCED_FLUSH_WAIT: Duration = Duration::from_millis(100);

/// Daemon-level counters (the endpoint keeps its own, [`tcp::Stats`]).
#[derive(Clone, Copy, Debug, Default)]
pub struct Counters {
    /// Reactor wake-ups.
    pub wakeups: u64,
    /// Packets read from the device and handed to the endpoint.
    pub rx_packets: u64,
    /// Packets the endpoint produced and the device took.
    pub tx_packets: u64,
    /// Device writes refused for now (kept and retried).
    pub tx_retries: u64,
    /// Packets the device refused with a hard error (dropped).
    pub tx_errors: u64,
    /// Device read errors other than `WouldBlock`.
    pub rx_errors: u64,
    /// Connections accepted.
    pub accepted: u64,
    /// Connections refused at accept (shutting down, no service).
    pub refused: u64,
    /// Event batches handed to workers.
    pub batches_out: u64,
    /// Command batches received from workers.
    pub batches_in: u64,
    /// Times a worker's event queue was full (events kept, reading paused).
    pub worker_queue_full: u64,
    /// Bytes handed to services.
    pub bytes_to_services: u64,
    /// Bytes services sent.
    pub bytes_from_services: u64,
    /// Sends the endpoint took only in part (kept and retried).
    pub short_sends: u64,
    /// Credit grants (Writable events) to workers.
    pub credit_grants: u64,
    /// Connections reset by the peer.
    pub resets: u64,
    /// Connections that timed out.
    pub timeouts: u64,
    /// Connections reset at the end of a shutdown's grace period.
    pub shutdown_resets: u64,
    /// Packets the endpoint produced that exceed the MTU (sent anyway; a
    /// TUN device takes them, a real link would not).
    pub tx_oversize: u64,
    /// Device drains cut short under a flood so that the handlers run
    /// (see `drain_rx`).
    pub rx_flood_yields: u64,
    /// Event batches the reactor ran itself for a sleeping worker instead
    /// of waking it (see [`crate::worker::help`]).
    pub batches_helped: u64,
}

impl Counters {
    /// Every counter with its name, for `/stats` and `/metrics`.
    pub(crate) fn named(&self) -> [(&'static str, u64); 21] {
        [
            ("wakeups", self.wakeups),
            ("rx_packets", self.rx_packets),
            ("tx_packets", self.tx_packets),
            ("tx_retries", self.tx_retries),
            ("tx_errors", self.tx_errors),
            ("rx_errors", self.rx_errors),
            ("accepted", self.accepted),
            ("refused", self.refused),
            ("worker_batches_out", self.batches_out),
            ("worker_batches_in", self.batches_in),
            ("worker_queue_full", self.worker_queue_full),
            ("worker_batches_helped", self.batches_helped),
            ("bytes_to_services", self.bytes_to_services),
            ("bytes_from_services", self.bytes_from_services),
            ("short_sends", self.short_sends),
            ("credit_grants", self.credit_grants),
            ("resets", self.resets),
            ("timeouts", self.timeouts),
            ("shutdown_resets", self.shutdown_resets),
            ("tx_oversize", self.tx_oversize),
            ("rx_flood_yields", self.rx_flood_yields),
        ]
    }
}

/// Per-connection state the reactor keeps next to the endpoint's.
/// The most connections SIGUSR1 lists one per line.
const SIGUSR1_CONN_LINES: usize = 64;

struct Conn {
    id: ConnId,
    worker: usize,
    /// Bytes handed to the worker and not yet consumed.
    held: usize,
    /// Credit granted to the worker and not yet used.
    granted: usize,
    /// The endpoint may have bytes (or the FIN) to read.
    readable: bool,
    /// The end of stream was passed to the worker.
    eof_sent: bool,
    /// The endpoint reported the peer's FIN.
    fin_seen: bool,
    /// In `to_read` already.
    queued_read: bool,
    /// In `starved` already.
    queued_credit: bool,
    /// Shutting down: the reactor closed it; sends are dropped.
    closing: bool,
    /// Bytes of a `Send` the endpoint did not take yet.
    spill: Vec<u8>,
    /// A forwarded connection's upstream side, as its worker shows it.
    upstream: Option<Arc<UpstreamView>>,
}

/// A worker thread as the reactor sees it.
struct WorkerLink {
    tx: Sender<Vec<ToWorker>>,
    /// Wakes the worker (only when it said it sleeps).
    wake: Option<Arc<ReactorWake>>,
    /// The worker's host and the receiving end of its channel, for running
    /// its events here while it sleeps (None: never).
    help: Option<(Arc<WorkerShared>, Receiver<Vec<ToWorker>>)>,
    out: Vec<ToWorker>,
    /// The last send found the queue full: `out` waits, reading pauses.
    backlogged: bool,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Where the handlers run.
enum Hosts {
    /// On worker threads.
    Threads(Vec<WorkerLink>),
    /// On the reactor thread (`--workers 0`), through the same
    /// [`InlineHost`] the replay tool uses, so a capture made this way
    /// replays with the same handler calls.
    Inline(Box<InlineHost>),
}

struct Shutdown {
    deadline: Instant,
}

/// The reactor. Build it with [`Reactor::new`], then [`Reactor::run`].
pub struct Reactor<D: Device> {
    dev: D,
    ep: Endpoint,
    clock: Clock,
    poll: Poll,
    events: Events,
    signals: Signals,
    wake: Arc<ReactorWake>,
    cmd_rx: Receiver<Vec<Cmd>>,
    hosts: Hosts,
    conns: Vec<Option<Conn>>,
    /// Services by listening port.
    ports: Vec<(u16, usize)>,
    /// Forwarding, if on: its rules, policy and counters.
    fwd: Option<Arc<Forwarding>>,
    /// Ports listened on for `--forward` rules.
    fwd_ports: Vec<u16>,
    /// SYNs a worker is connecting upstream for: which worker, and where
    /// it shows the upstream side.
    pending_syns: std::collections::HashMap<tcp::SynId, (usize, Arc<UpstreamView>)>,
    /// The stack's own addresses (transparent mode never connects to them).
    own_addrs: Vec<std::net::IpAddr>,
    to_read: Vec<ConnId>,
    starved: Vec<ConnId>,
    pool: Pool,
    rxbuf: Box<[u8]>,
    txbuf: Box<[u8]>,
    /// Where connections' bytes are read for their handlers: `read_chunk`
    /// bytes long. A large read is handed over as it is (the buffer goes
    /// to the handler and a pooled one takes its place), a small one is
    /// copied into a small buffer.
    readbuf: Vec<u8>,
    /// A packet in `txbuf` the device refused; retried first.
    tx_pending: Option<tcp::Transmit>,
    rx_ready: bool,
    counters: Counters,
    board: Arc<StatusBoard>,
    status_template: Status,
    next_publish: Instant,
    shutdown: Option<Shutdown>,
    grace: Duration,
    hold_limit: usize,
    credit_threshold: usize,
    nodelay: bool,
    rx_budget: usize,
    mtu: usize,
    /// The device does segmentation and checksum offload.
    offload: bool,
    /// Events went to a worker in the last round: its answer is near.
    awaiting_workers: bool,
    /// Events that draw an answer were queued for the workers.
    answer_expected: bool,
    reactor_spin: Duration,
    /// The inline host stopped at its round limit with work left.
    inline_pending: bool,
    /// Emptied batch vectors shared with the workers.
    spares: Spares,
    /// A sleeping worker's events run here while its rounds cost at most
    /// this, ns (0: never; see [`crate::worker::help`]).
    help_budget_ns: u64,
    /// Commands of the handlers run here for sleeping workers, applied
    /// after the command channel.
    helped: Vec<Cmd>,
    /// Giving idle memory back (see [`Config::mem_release_ms`]).
    mem: MemRelease,
}

/// State of the periodic release of idle memory.
struct MemRelease {
    /// Zero: never.
    interval: Duration,
    next: Instant,
    /// Packets received and connections closed at the last step.
    rx_mark: u64,
    closed_mark: u64,
    /// Bytes our pools freed since the last `malloc_trim`.
    freed: usize,
    /// `malloc_trim` calls so far.
    trims: u64,
}

/// Least memory freed by our pools that makes an idle step ask the
/// allocator to return free pages (each `malloc_trim` walks the heap).
const TRIM_MIN_BYTES: usize = 1 << 20;

/// Asks glibc to return free pages of every arena to the OS; false where
/// the allocator has no such call.
fn return_free_pages() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim has no preconditions; it only takes the
        // arenas' locks and returns free pages (madvise / sbrk).
        unsafe { libc::malloc_trim(0) };
        true
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

/// Sends `link.out` to its worker if its queue has room (true), leaving an
/// empty spare in its place; on a full queue the batch stays in `link.out`
/// and the link is marked backlogged, and the spare taken for it goes back
/// to `spares` (false).
fn offer_batch(link: &mut WorkerLink, spares: &Spares) -> bool {
    let batch = std::mem::replace(&mut link.out, spares.events());
    match link.tx.try_send(batch) {
        Ok(()) => {
            link.backlogged = false;
            if let Some(w) = &link.wake {
                w.notify();
            }
            true
        }
        Err(TrySendError::Full(b)) | Err(TrySendError::Disconnected(b)) => {
            let spare = std::mem::replace(&mut link.out, b);
            spares.put_events(spare);
            link.backlogged = true;
            false
        }
    }
}

/// A worker-choosing hash of a SYN's 4-tuple (FNV-1a: stable, no
/// allocation; the choice only spreads load).
fn hash_tuple(local: std::net::SocketAddr, remote: std::net::SocketAddr) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |b: &[u8]| {
        for x in b {
            h ^= u64::from(*x);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    };
    for a in [local, remote] {
        match a.ip() {
            std::net::IpAddr::V4(v) => eat(&v.octets()),
            std::net::IpAddr::V6(v) => eat(&v.octets()),
        }
        eat(&a.port().to_be_bytes());
    }
    h
}

/// What moves while a packet flood is on: SYNs answered with cookies (the
/// SYN queue overflowed) and packets the endpoint dropped.
fn flood_mark(s: &tcp::Stats) -> u64 {
    s.syn_cookies_sent.wrapping_add(s.drops.total())
}

fn hash_conn(id: ConnId) -> u64 {
    // Fibonacci hashing of the packed handle; stable for a connection's life.
    id.to_u64().wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 17
}

impl<D: Device> Reactor<D> {
    /// A reactor over `dev` serving `services` (`(port, service)`).
    pub fn new(
        cfg: &Config,
        dev: D,
        clock: Clock,
        services: Vec<(u16, Arc<dyn Service>)>,
        board: Arc<StatusBoard>,
        status_template: Status,
        fwd: Option<Arc<Forwarding>>,
    ) -> Result<Reactor<D>, Error> {
        let mut ep = Endpoint::new(cfg.tcp_config())
            .map_err(|e| Error::new(format!("tcp configuration: {e}")))?;
        let mut ports = Vec::new();
        let mut list: Vec<Arc<dyn Service>> = Vec::new();
        for (port, svc) in services {
            ep.listen(port, cfg.backlog)
                .map_err(|e| Error::new(format!("cannot listen on port {port}: {e}")))?;
            ports.push((port, list.len()));
            list.push(svc);
        }
        let fwd_ports = fwd.as_ref().map(|f| f.ports()).unwrap_or_default();
        for port in &fwd_ports {
            if ports.iter().any(|(p, _)| p == port) {
                return Err(Error::new(format!(
                    "--forward port {port} is also a service's port (turn the service off, e.g. --http 0)"
                )));
            }
            // Deferred: the SYN is answered once the upstream connected.
            ep.listen_deferred(*port, cfg.backlog)
                .map_err(|e| Error::new(format!("cannot listen on port {port}: {e}")))?;
        }
        if fwd.as_ref().is_some_and(|f| f.transparent) {
            ep.listen_any(cfg.backlog)
                .map_err(|e| Error::new(format!("cannot listen on any address: {e:?}")))?;
        }
        // Forwarded connections live on worker threads (their kernel
        // sockets are in the workers' polls).
        let workers = if fwd.is_some() {
            cfg.workers.max(1)
        } else {
            cfg.workers
        };
        let services: Arc<[Arc<dyn Service>]> = Arc::from(list);
        let poll = Poll::new().map_err(|e| Error::new(format!("cannot create poll: {e}")))?;
        let fd = dev.raw_fd();
        poll.registry()
            .register(
                &mut SourceFd(&fd),
                TUN,
                Interest::READABLE | Interest::WRITABLE,
            )
            .map_err(|e| Error::new(format!("cannot register the device: {e}")))?;
        if let Some(fd) = dev.syn_queue_fd() {
            // The same token: a read drains both queues.
            poll.registry()
                .register(&mut SourceFd(&fd), TUN, Interest::READABLE)
                .map_err(|e| Error::new(format!("cannot register the SYN queue: {e}")))?;
        }
        let waker = mio::Waker::new(poll.registry(), WAKER)
            .map_err(|e| Error::new(format!("cannot create waker: {e}")))?;
        let wake = Arc::new(ReactorWake::new(waker));
        let mut signals = Signals::new([SIGINT, SIGTERM, SIGUSR1])
            .map_err(|e| Error::new(format!("cannot install signal handlers: {e}")))?;
        poll.registry()
            .register(&mut signals, SIGNALS, Interest::READABLE)
            .map_err(|e| Error::new(format!("cannot register signals: {e}")))?;
        let pool = Pool::new(cfg.pool_buffers, cfg.read_chunk);
        let (cmd_tx, cmd_rx) = crossbeam_channel::bounded::<Vec<Cmd>>(cfg.command_queue);
        let spares = Spares::new();
        let hosts = if workers == 0 {
            let mut host = InlineHost::new(InlineConfig {
                read_chunk: cfg.read_chunk,
                nodelay: cfg.nodelay,
                ..InlineConfig::default()
            });
            for (port, idx) in &ports {
                if let Some(svc) = services.get(*idx) {
                    host.add_service(*port, svc.clone());
                }
            }
            Hosts::Inline(Box::new(host))
        } else {
            let mut links = Vec::new();
            for i in 0..workers {
                let (tx, rx) = crossbeam_channel::bounded::<Vec<ToWorker>>(cfg.worker_queue);
                let wpoll = Poll::new()
                    .map_err(|e| Error::new(format!("cannot create a worker's poll: {e}")))?;
                let wwaker = mio::Waker::new(wpoll.registry(), WORKER_WAKER)
                    .map_err(|e| Error::new(format!("cannot create a worker's waker: {e}")))?;
                let own_wake = Arc::new(ReactorWake::new(wwaker));
                let shared = WorkerShared::new(Host::new(services.clone(), pool.clone()));
                // Forwarded connections' events need the worker's own
                // sockets: they always go to its thread.
                let help = fwd.is_none().then(|| (shared.clone(), rx.clone()));
                let setup = WorkerSetup {
                    shared,
                    clock,
                    pool: pool.clone(),
                    rx,
                    cmd_tx: cmd_tx.clone(),
                    wake: wake.clone(),
                    poll: wpoll,
                    own_wake: own_wake.clone(),
                    spin: Duration::from_micros(cfg.worker_spin_us),
                    spares: spares.clone(),
                    forwarding: fwd.clone(),
                    read_chunk: cfg.read_chunk,
                };
                let thread = std::thread::Builder::new()
                    .name(format!("tcpd-worker-{i}"))
                    .spawn(move || crate::worker::worker_loop(setup))
                    .map_err(|e| Error::new(format!("cannot start worker thread: {e}")))?;
                links.push(WorkerLink {
                    tx,
                    wake: Some(own_wake),
                    help,
                    out: Vec::new(),
                    backlogged: false,
                    thread: Some(thread),
                });
            }
            Hosts::Threads(links)
        };
        drop(cmd_tx);
        let send_buffer = cfg.tcp.send_buffer;
        let offload = dev.offload();
        Ok(Reactor {
            dev,
            ep,
            clock,
            poll,
            events: Events::with_capacity(256),
            signals,
            wake,
            cmd_rx,
            hosts,
            conns: Vec::new(),
            ports,
            fwd,
            fwd_ports,
            pending_syns: std::collections::HashMap::new(),
            own_addrs: cfg.stack_addrs(),
            to_read: Vec::new(),
            starved: Vec::new(),
            pool,
            rxbuf: vec![0u8; 65536].into_boxed_slice(),
            // Room for a full offload segment: the endpoint sizes segments by
            // the buffer it gets (an MTU-sized buffer used to starve it).
            txbuf: vec![0u8; 65536].into_boxed_slice(),
            mtu: cfg.mtu,
            offload,
            awaiting_workers: false,
            answer_expected: false,
            reactor_spin: Duration::from_micros(cfg.reactor_spin_us),
            inline_pending: false,
            spares,
            help_budget_ns: cfg.worker_help_us.saturating_mul(1000),
            helped: Vec::new(),
            readbuf: vec![0u8; cfg.read_chunk.max(1)],
            tx_pending: None,
            rx_ready: true,
            counters: Counters::default(),
            board,
            status_template,
            next_publish: Instant::now(),
            mem: MemRelease {
                interval: Duration::from_millis(cfg.mem_release_ms),
                next: Instant::now(),
                rx_mark: 0,
                closed_mark: 0,
                freed: 0,
                trims: 0,
            },
            shutdown: None,
            grace: Duration::from_millis(cfg.grace_ms),
            hold_limit: 2 * cfg.read_chunk,
            credit_threshold: (send_buffer / 4).clamp(1, 64 * 1024),
            nodelay: cfg.nodelay,
            rx_budget: cfg.rx_budget,
        })
    }

    /// Runs until a shutdown completes. Returns the device (so the caller
    /// can flush and drop it: removing the interface).
    pub fn run(mut self) -> Result<D, Error> {
        loop {
            let now = Instant::now();
            let mut timeout = self.timeout(now);
            if self.awaiting_workers
                && timeout.is_none_or(|t| !t.is_zero())
                && !self.reactor_spin.is_zero()
            {
                // A worker is about to answer: a short spin is cheaper than
                // sleeping and being woken (tens of µs on another CPU).
                let until = now + self.reactor_spin;
                while self.cmd_rx.is_empty() && Instant::now() < until {
                    for _ in 0..32 {
                        std::hint::spin_loop();
                    }
                    std::thread::yield_now();
                }
                if !self.cmd_rx.is_empty() {
                    timeout = Some(Duration::ZERO);
                }
            }
            self.awaiting_workers = false;
            self.answer_expected = false;
            let sleeping = timeout.is_none_or(|t| !t.is_zero());
            if sleeping {
                self.wake.set_sleeping(true);
                // Re-check after announcing: a worker that queued commands
                // before it saw the flag did not wake us.
            }
            let timeout = if sleeping && !self.cmd_rx.is_empty() {
                Some(Duration::ZERO)
            } else {
                timeout
            };
            match self.poll.poll(&mut self.events, timeout) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::new(format!("poll failed: {e}"))),
            }
            self.wake.set_sleeping(false);
            self.counters.wakeups += 1;
            let mut got_signal = false;
            for ev in self.events.iter() {
                match ev.token() {
                    TUN if ev.is_readable() || ev.is_read_closed() || ev.is_error() => {
                        self.rx_ready = true;
                    }
                    SIGNALS => got_signal = true,
                    _ => {}
                }
            }
            if got_signal {
                self.handle_signals();
            }
            self.turn();
            if self.shutdown_done() {
                break;
            }
        }
        self.finish_shutdown();
        Ok(self.dev)
    }

    /// One round of work after a wake-up.
    fn turn(&mut self) {
        let now = Instant::now();
        if self.dev.has_due_rx(now) {
            self.rx_ready = true;
        }
        // Packets first, in bounded slices interleaved with transmission.
        if self.rx_ready {
            self.drain_rx(now);
        }
        if let Err(e) = self.dev.service(now) {
            if !is_transient(&e) {
                debug!("device service: {e}");
            }
        }
        let tnow = self.clock.tcp(now);
        // The services' wall clock (HTTP Date): the turn's time, as the
        // replay rebuilds it from the capture (start_unix_us + endpoint time).
        self.board
            .set_unix_us(self.clock.start_unix_us() + tnow.as_micros());
        if self.ep.poll_timeout().is_some_and(|t| t <= tnow) {
            self.ep.handle_timeout(tnow);
        }
        match &mut self.hosts {
            // Inline handlers take every endpoint event themselves; none may
            // reach `dispatch_events`, which would accept connections for
            // workers that do not exist. Work left at the host's round limit
            // is picked up by the next turn, at once.
            Hosts::Inline(host) => {
                if host.poll_timeout().is_some_and(|t| t <= tnow) {
                    host.handle_timeout(&mut self.ep, tnow);
                }
                host.process_events(&mut self.ep);
                self.inline_pending = host.saturated();
            }
            // Commands, events, handler rounds until nothing moves (bounded).
            Hosts::Threads(_) => {
                for _ in 0..16 {
                    let mut moved = self.apply_commands();
                    moved |= self.dispatch_events();
                    self.read_ready();
                    self.grant_credit();
                    moved |= self.flush_hosts();
                    if !moved {
                        break;
                    }
                }
            }
        }
        self.transmit(Instant::now());
        tracing::trace!(
            rx = self.counters.rx_packets,
            tx = self.counters.tx_packets,
            timeout = ?self.ep.poll_timeout(),
            now = ?self.clock.tcp(Instant::now()),
            "turn"
        );
        if now >= self.next_publish {
            if !self.mem.interval.is_zero() && now >= self.mem.next {
                self.release_memory(now);
            }
            self.publish();
            self.next_publish = now + Duration::from_millis(250);
        }
    }

    /// One step of giving idle memory back (on the publish tick, at most
    /// once per [`Config::mem_release_ms`]; never per packet).
    fn release_memory(&mut self, now: Instant) {
        let m = &mut self.mem;
        m.next = now + m.interval;
        let closed = self.ep.stats().closed;
        let idle = self.counters.rx_packets == m.rx_mark;
        let closed_any = closed != m.closed_mark;
        m.rx_mark = self.counters.rx_packets;
        m.closed_mark = closed;
        let shrunk = self.ep.release_memory() + self.pool.decay();
        m.freed += shrunk;
        if idle {
            m.freed += self.spares.trim() * 256 * std::mem::size_of::<ToWorker>();
        }
        // Buffers that sat unused for a whole interval went back to the
        // heap (the transfers that used them are over), or the stack has
        // gone quiet after connections closed: hand the free pages to the
        // OS. Without this the freed buffers stay in the process (measured:
        // 36.8 MB instead of 14 MB with 10 000 idle connections).
        if shrunk >= TRIM_MIN_BYTES || (idle && (closed_any || m.freed >= TRIM_MIN_BYTES)) {
            let t0 = Instant::now();
            if return_free_pages() {
                m.trims += 1;
                debug!(
                    "returned free heap pages to the OS after freeing {} bytes of buffers ({} µs)",
                    m.freed,
                    t0.elapsed().as_micros()
                );
                m.freed = 0;
            }
        }
    }

    fn drain_rx(&mut self, now: Instant) {
        let tnow = self.clock.tcp(now);
        let mark = flood_mark(self.ep.stats());
        let mut n = 0;
        let mut errors = 0;
        loop {
            match self.dev.recv_offload(now, &mut self.rxbuf) {
                Ok((len, csum_ok)) => {
                    self.counters.rx_packets += 1;
                    if self.offload {
                        self.ep.handle_offloaded(tnow, &self.rxbuf[..len], csum_ok);
                    } else {
                        self.ep.handle(tnow, &self.rxbuf[..len]);
                    }
                    n += 1;
                    if n % self.rx_budget == 0 {
                        // Let ACKs and data out before reading on.
                        self.transmit(now);
                        // Bounded work before the applications run under a
                        // flood (this drain answered SYNs with cookies or
                        // dropped packets): the device never runs dry then,
                        // and a request read now must not wait for 16
                        // slices of flood (~3 ms) before its handler sees
                        // it. The turn comes back at once (rx_ready stays
                        // set). Bulk transfers keep the long drain.
                        if self.ep.has_events() && flood_mark(self.ep.stats()) != mark {
                            self.counters.rx_flood_yields += 1;
                            return;
                        }
                    }
                    if n >= 16 * self.rx_budget {
                        // Stay fair to commands and timers; come back at once.
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.rx_ready = false;
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // One bad read (a short one, say) must not stop the
                    // drain: edge-triggered readiness would not come back
                    // for the packets still queued. Persistent errors do.
                    self.counters.rx_errors += 1;
                    errors += 1;
                    if self.counters.rx_errors < 10 || self.counters.rx_errors.is_power_of_two() {
                        warn!(
                            "device read failed ({} so far): {e}",
                            self.counters.rx_errors
                        );
                    }
                    if errors >= 16 {
                        self.rx_ready = false;
                        return;
                    }
                }
            }
        }
    }

    /// Writes what the endpoint has to send; keeps a refused packet.
    fn transmit(&mut self, now: Instant) {
        let tnow = self.clock.tcp(now);
        loop {
            let t = match self.tx_pending.take() {
                Some(t) => t,
                None => match self.ep.poll_transmit_offload(tnow, &mut self.txbuf) {
                    Some(t) => t,
                    None => return,
                },
            };
            let len = t.len;
            if len > self.mtu && t.segment_size == 0 {
                self.counters.tx_oversize += 1;
            }
            match self.dev.send_offload(now, &self.txbuf[..len], &t) {
                Ok(()) => self.counters.tx_packets += 1,
                Err(e) if is_transient(&e) => {
                    self.counters.tx_retries += 1;
                    self.tx_pending = Some(t);
                    return;
                }
                Err(e) => {
                    self.counters.tx_errors += 1;
                    if self.counters.tx_errors < 10 || self.counters.tx_errors.is_power_of_two() {
                        warn!(
                            "device write failed ({} so far): {e}",
                            self.counters.tx_errors
                        );
                    }
                }
            }
        }
    }

    fn timeout(&mut self, now: Instant) -> Option<Duration> {
        if self.rx_ready || self.inline_pending {
            return Some(Duration::ZERO);
        }
        let mut deadline = self.next_publish;
        if let Some(t) = self.ep.poll_timeout() {
            deadline = deadline.min(self.clock.to_std(t));
        }
        if let Hosts::Inline(h) = &self.hosts {
            if let Some(t) = h.poll_timeout() {
                deadline = deadline.min(self.clock.to_std(t));
            }
        }
        if let Some(t) = self.dev.poll_at() {
            deadline = deadline.min(t);
        }
        if let Some(s) = &self.shutdown {
            deadline = deadline
                .min(s.deadline)
                .min(now + Duration::from_millis(20));
        }
        let backlogged = match &self.hosts {
            Hosts::Threads(l) => l.iter().any(|w| w.backlogged),
            Hosts::Inline(_) => false,
        };
        if self.tx_pending.is_some() || backlogged {
            deadline = deadline.min(now + Duration::from_millis(1));
        }
        Some(deadline.saturating_duration_since(now))
    }

    fn conn_mut(&mut self, id: ConnId) -> Option<&mut Conn> {
        self.conns
            .get_mut(id.slot() as usize)?
            .as_mut()
            .filter(|c| c.id == id)
    }

    fn worker_backlogged(&self, w: usize) -> bool {
        match &self.hosts {
            Hosts::Threads(l) => l.get(w).is_some_and(|x| x.backlogged),
            Hosts::Inline(_) => false,
        }
    }

    fn deliver(&mut self, w: usize, ev: ToWorker) {
        if matches!(
            ev,
            ToWorker::Data { .. } | ToWorker::Writable { .. } | ToWorker::PeerClosed { .. }
        ) {
            // Handlers usually answer these (consumed bytes, output).
            self.answer_expected = true;
        }
        match &mut self.hosts {
            Hosts::Threads(l) => {
                if let Some(link) = l.get_mut(w) {
                    link.out.push(ev)
                }
            }
            // Inline connections are not in `conns`: nothing is delivered.
            Hosts::Inline(_) => drop(ev),
        }
    }

    /// Applies the workers' commands; true if any.
    fn apply_commands(&mut self) -> bool {
        let mut any = false;
        let mut rounds = 0;
        while let Ok(mut batch) = self.cmd_rx.try_recv() {
            any = true;
            self.counters.batches_in += 1;
            for c in batch.drain(..) {
                self.apply(c);
            }
            self.spares.put_cmds(batch);
            rounds += 1;
            if rounds >= 256 {
                break;
            }
        }
        any
    }

    fn apply(&mut self, c: Cmd) {
        match c {
            Cmd::Consumed { id, n } => {
                let Some(conn) = self.conn_mut(id) else {
                    return;
                };
                let n = n.min(conn.held);
                conn.held -= n;
                let requeue = conn.readable && !conn.queued_read;
                if requeue {
                    conn.queued_read = true;
                }
                let _ = self.ep.release(id, n);
                if requeue {
                    self.to_read.push(id);
                }
            }
            Cmd::Send { id, buf } => {
                self.counters.bytes_from_services += buf.len() as u64;
                let threshold = self.credit_threshold;
                let Some(conn) = self
                    .conns
                    .get_mut(id.slot() as usize)
                    .and_then(|c| c.as_mut())
                    .filter(|c| c.id == id)
                else {
                    self.pool.put(buf);
                    return;
                };
                conn.granted = conn.granted.saturating_sub(buf.len());
                if conn.closing {
                    self.pool.put(buf);
                    return;
                }
                if conn.spill.is_empty() {
                    match self.ep.send(id, &buf) {
                        Ok(n) if n == buf.len() => {}
                        Ok(n) => {
                            self.counters.short_sends += 1;
                            conn.spill.extend_from_slice(&buf[n..]);
                        }
                        Err(_) => {}
                    }
                } else {
                    conn.spill.extend_from_slice(&buf);
                }
                if conn.granted < threshold && !conn.queued_credit {
                    conn.queued_credit = true;
                    self.starved.push(id);
                }
                self.pool.put(buf);
            }
            Cmd::Close { id } => {
                let Some(conn) = self.conn_mut(id) else {
                    return;
                };
                if conn.spill.is_empty() {
                    let _ = self.ep.close(id);
                } else {
                    // Close once the spill is out (see grant_credit).
                    conn.closing = true;
                }
            }
            Cmd::Abort { id } => {
                let _ = self.ep.abort(id);
                self.forget(id);
            }
            Cmd::AcceptSyn { syn } => self.accept_held(syn),
            Cmd::RefuseSyn { syn, why } => self.refuse_held(syn, why),
        }
    }

    /// Drops the reactor's record of a connection and tells its worker.
    fn forget(&mut self, id: ConnId) {
        let slot = id.slot() as usize;
        let Some(c) = self
            .conns
            .get_mut(slot)
            .and_then(|c| c.take_if(|c| c.id == id))
        else {
            return;
        };
        self.deliver(c.worker, ToWorker::Closed { id });
    }

    /// Turns endpoint events into worker events; true if any.
    fn dispatch_events(&mut self) -> bool {
        let mut any = false;
        while let Some(ev) = self.ep.poll_event() {
            any = true;
            match ev {
                Event::Incoming { port } => self.accept(port),
                Event::Connected(_) => {}
                Event::Readable(id) => self.mark_readable(id),
                Event::PeerClosed(id) => {
                    if let Some(c) = self.conn_mut(id) {
                        c.fin_seen = true;
                    }
                    self.mark_readable(id);
                }
                Event::Writable(id) => {
                    if let Some(c) = self.conn_mut(id) {
                        if !c.queued_credit {
                            c.queued_credit = true;
                            self.starved.push(id);
                        }
                    }
                }
                Event::Reset(_) => self.counters.resets += 1,
                Event::TimedOut(_) => self.counters.timeouts += 1,
                // Only active opens and half-open passive connections (which
                // raise no events) end this way; the daemon makes no active opens.
                Event::Unreachable(..) => self.counters.resets += 1,
                Event::Closed(id) => {
                    // The endpoint lets a connection go once its bytes were
                    // read, maybe before the end of stream was: pass the
                    // FIN on first (a splice turns it into SHUT_WR, not a
                    // reset).
                    if let Some(c) = self.conn_mut(id) {
                        if c.fin_seen && !c.eof_sent {
                            c.eof_sent = true;
                            let w = c.worker;
                            self.deliver(w, ToWorker::PeerClosed { id });
                        }
                    }
                    self.forget(id);
                }
                Event::Syn(sid) => self.on_syn(sid),
                Event::SynExpired(sid) => {
                    if let Some((w, _)) = self.pending_syns.remove(&sid) {
                        self.deliver(w, ToWorker::Cancel { syn: sid });
                    }
                }
            }
        }
        any
    }

    fn mark_readable(&mut self, id: ConnId) {
        if let Some(c) = self.conn_mut(id) {
            c.readable = true;
            if !c.queued_read {
                c.queued_read = true;
                self.to_read.push(id);
            }
        }
    }

    fn accept(&mut self, port: u16) {
        let svc = self.ports.iter().find(|(p, _)| *p == port).map(|(_, s)| *s);
        while let Some(id) = self.ep.accept(port) {
            let (Some(svc), None) = (svc, &self.shutdown) else {
                self.counters.refused += 1;
                let _ = self.ep.abort(id);
                continue;
            };
            let Ok(info) = self.ep.info(id) else { continue };
            if self.nodelay {
                let _ = self.ep.set_nodelay(id, true);
            }
            let credit = self.ep.send_capacity(id).unwrap_or(0);
            let workers = match &self.hosts {
                Hosts::Threads(l) => l.len(),
                Hosts::Inline(_) => 1,
            };
            let worker = (hash_conn(id) % workers as u64) as usize;
            let slot = id.slot() as usize;
            if self.conns.len() <= slot {
                self.conns.resize_with(slot + 1, || None);
            }
            self.conns[slot] = Some(Conn {
                id,
                worker,
                held: 0,
                granted: credit,
                readable: true,
                eof_sent: false,
                fin_seen: false,
                queued_read: true,
                queued_credit: false,
                closing: false,
                spill: Vec::new(),
                upstream: None,
            });
            self.counters.accepted += 1;
            let ctx = ConnCtx {
                local: info.local,
                remote: info.remote,
            };
            self.deliver(
                worker,
                ToWorker::Accepted {
                    id,
                    svc,
                    ctx,
                    credit,
                },
            );
            // Data may have come with the handshake's last ACK.
            self.to_read.push(id);
        }
    }

    /// Records connection `id` (its handshake done) as handled by `worker`
    /// with `credit` bytes granted.
    fn track(&mut self, id: ConnId, worker: usize, credit: usize) {
        let slot = id.slot() as usize;
        if self.conns.len() <= slot {
            self.conns.resize_with(slot + 1, || None);
        }
        self.conns[slot] = Some(Conn {
            id,
            worker,
            held: 0,
            granted: credit,
            readable: true,
            eof_sent: false,
            fin_seen: false,
            queued_read: true,
            queued_credit: false,
            closing: false,
            spill: Vec::new(),
            upstream: None,
        });
        self.counters.accepted += 1;
        // Data may have come with the handshake's last ACK.
        self.to_read.push(id);
    }

    fn worker_count(&self) -> usize {
        match &self.hosts {
            Hosts::Threads(l) => l.len().max(1),
            Hosts::Inline(_) => 1,
        }
    }

    /// A SYN held for a `--forward` rule or `--transparent`: refuse it by
    /// policy, or hand it to a worker that connects upstream (the worker's
    /// answer comes back as [`Cmd::AcceptSyn`] or [`Cmd::RefuseSyn`]).
    fn on_syn(&mut self, sid: tcp::SynId) {
        use crate::forward::FwdCounter;
        let Some(info) = self.ep.syn_info(sid) else {
            return;
        };
        let Some(fwd) = self.fwd.clone() else {
            let _ = self.ep.refuse_syn(self.tnow(), sid, Refusal::Reset);
            return;
        };
        let (rule, target, refusal) = match info.listener_port {
            Some(_) => match fwd.rule_for(info.local) {
                Some(r) => (Some(r), fwd.rules.get(r).map(|x| x.target), None),
                // A rule for another address of the stack: a closed port here.
                None => (None, None, Some(Refusal::Reset)),
            },
            None => {
                let r = fwd.transparent_index();
                let dst = info.local;
                if self.own_addrs.contains(&dst.ip()) {
                    // A port of our own with no listener: connecting out to
                    // it would come straight back here. RFC 9293 §3.10.7.1.
                    (Some(r), None, Some(Refusal::Reset))
                } else if !fwd.permits(dst.ip()) {
                    // --deny/--allow: an administrative filter, and the
                    // client is told so (RFC 1812 §5.2.7.1, RFC 4443 §3.1).
                    (
                        Some(r),
                        None,
                        Some(Refusal::Unreachable(Unreach::AdminProhibited)),
                    )
                } else {
                    (Some(r), Some(dst), None)
                }
            }
        };
        let refusal = if self.shutdown.is_some() {
            Some(Refusal::Reset)
        } else {
            refusal
        };
        let (Some(target), None) = (target, refusal) else {
            self.counters.refused += 1;
            if let Some(st) = rule.and_then(|r| fwd.stats(r)) {
                st.add(FwdCounter::Refused, 1);
            }
            let how = refusal.unwrap_or(Refusal::Reset);
            let _ = self.ep.refuse_syn(self.tnow(), sid, how);
            return;
        };
        let Some(rule) = rule else { return };
        let worker = (hash_tuple(info.local, info.remote) % self.worker_count() as u64) as usize;
        let view = Arc::new(UpstreamView::default());
        self.pending_syns.insert(sid, (worker, view.clone()));
        let ctx = ConnCtx {
            local: info.local,
            remote: info.remote,
        };
        self.deliver(
            worker,
            ToWorker::Connect {
                syn: sid,
                rule,
                ctx,
                target,
                view,
            },
        );
    }

    /// A worker's upstream connected: answer the SYN and bind the
    /// connection to the worker.
    fn accept_held(&mut self, sid: tcp::SynId) {
        let Some((worker, view)) = self.pending_syns.remove(&sid) else {
            return;
        };
        let now = self.tnow();
        match self.ep.accept_syn(now, sid) {
            Ok(id) => {
                if self.nodelay {
                    let _ = self.ep.set_nodelay(id, true);
                }
                let credit = self.ep.send_capacity(id).unwrap_or(0);
                self.track(id, worker, credit);
                if let Some(Some(c)) = self.conns.get_mut(id.slot() as usize) {
                    c.upstream = Some(view);
                }
                self.deliver(
                    worker,
                    ToWorker::Bind {
                        syn: sid,
                        id,
                        credit,
                    },
                );
            }
            Err(e) => {
                // The table or the source's share filled up meanwhile, or
                // the SYN expired: the client is refused after all.
                debug!("cannot accept a held SYN: {e:?}");
                self.counters.refused += 1;
                let _ = self.ep.refuse_syn(now, sid, Refusal::Reset);
                self.deliver(worker, ToWorker::Cancel { syn: sid });
            }
        }
    }

    /// A worker's upstream connect failed: refuse the SYN, telling the
    /// client what the kernel told us.
    fn refuse_held(&mut self, sid: tcp::SynId, why: ConnectFailure) {
        self.pending_syns.remove(&sid);
        let how = match why {
            // The upstream's RST becomes ours: "connection refused".
            ConnectFailure::Refused | ConnectFailure::Other => Refusal::Reset,
            // No route: say so, as a router would (RFC 1812 §5.2.7.1).
            ConnectFailure::NetUnreachable => Refusal::Unreachable(Unreach::Net),
            // A SOCKS5 proxy's ruleset said no: a filter, as --deny
            // (RFC 1812 §5.2.7.1 code 13).
            ConnectFailure::Prohibited => Refusal::Unreachable(Unreach::AdminProhibited),
            // No answer within the connect timeout: what a router sends
            // when the host does not answer its neighbour discovery
            // (RFC 1812 §5.2.7.1, RFC 4443 §3.1 code 3); a Linux client
            // fails the connect at once with EHOSTUNREACH.
            ConnectFailure::HostUnreachable | ConnectFailure::Timeout => {
                Refusal::Unreachable(Unreach::Host)
            }
        };
        let _ = self.ep.refuse_syn(self.tnow(), sid, how);
    }

    fn tnow(&self) -> tcp::Instant {
        self.clock.tcp(Instant::now())
    }

    /// Reads data for connections marked readable, up to the hold limit.
    fn read_ready(&mut self) {
        if self.to_read.is_empty() {
            return;
        }
        let list = std::mem::take(&mut self.to_read);
        let mut keep = Vec::new();
        for id in list.iter().copied() {
            let Some(c) = self.conn_mut(id) else { continue };
            let (worker, readable) = (c.worker, c.readable);
            c.queued_read = false;
            if !readable {
                continue;
            }
            if self.worker_backlogged(worker) {
                if let Some(c) = self.conn_mut(id) {
                    c.queued_read = true;
                }
                keep.push(id);
                continue;
            }
            self.read_conn(id);
        }
        let mut list = list;
        list.clear();
        self.to_read = list;
        self.to_read.extend(keep);
    }

    fn read_conn(&mut self, id: ConnId) {
        loop {
            let hold_limit = self.hold_limit;
            let chunk = self.readbuf.len();
            let Some(c) = self.conn_mut(id) else { return };
            if c.eof_sent || c.held >= hold_limit {
                return;
            }
            let room = (hold_limit - c.held).min(chunk);
            let worker = c.worker;
            match self.ep.recv_hold(id, &mut self.readbuf[..room]) {
                Ok(0) => {
                    if let Some(c) = self.conn_mut(id) {
                        c.readable = false;
                        c.eof_sent = true;
                    }
                    self.deliver(worker, ToWorker::PeerClosed { id });
                    return;
                }
                Ok(n) => {
                    let buf = if n >= SWAP_READ_MIN {
                        // No second copy: this buffer goes as it is.
                        let fresh = self.pool.get_filled(chunk);
                        let mut b = std::mem::replace(&mut self.readbuf, fresh);
                        b.truncate(n);
                        b
                    } else {
                        let mut b = self.pool.get_for(n);
                        b.extend_from_slice(&self.readbuf[..n]);
                        b
                    };
                    if let Some(c) = self.conn_mut(id) {
                        c.held += n;
                    }
                    self.counters.bytes_to_services += n as u64;
                    self.deliver(worker, ToWorker::Data { id, buf });
                }
                Err(_) => {
                    if let Some(c) = self.conn_mut(id) {
                        c.readable = false;
                    }
                    return;
                }
            }
        }
    }

    /// Tops up the send credit of connections that ran low.
    fn grant_credit(&mut self) {
        if self.starved.is_empty() {
            return;
        }
        let threshold = self.credit_threshold;
        let list = std::mem::take(&mut self.starved);
        let mut keep = Vec::new();
        for id in list.iter().copied() {
            let Ok(cap) = self.ep.send_capacity(id) else {
                if let Some(c) = self.conn_mut(id) {
                    c.queued_credit = false;
                }
                continue;
            };
            let Some(c) = self
                .conns
                .get_mut(id.slot() as usize)
                .and_then(|c| c.as_mut())
                .filter(|c| c.id == id)
            else {
                continue;
            };
            let mut cap = cap;
            if !c.spill.is_empty() {
                match self.ep.send(id, &c.spill) {
                    Ok(n) => {
                        c.spill.drain(..n);
                        cap = cap.saturating_sub(n);
                    }
                    Err(_) => c.spill.clear(),
                }
                if c.spill.is_empty() {
                    // Let the storage go: spills are rare and bounded by
                    // the credit, but an idle connection should hold none.
                    c.spill = Vec::new();
                }
                if !c.spill.is_empty() {
                    keep.push(id);
                    continue;
                }
                if c.closing {
                    let _ = self.ep.close(id);
                }
            }
            if c.closing {
                c.queued_credit = false;
                continue;
            }
            let avail = cap.saturating_sub(c.granted);
            if avail >= threshold || (avail > 0 && c.granted == 0) {
                c.granted += avail;
                let w = c.worker;
                if c.granted >= threshold {
                    c.queued_credit = false;
                } else {
                    keep.push(id);
                }
                self.counters.credit_grants += 1;
                self.deliver(w, ToWorker::Writable { id, credit: avail });
            } else {
                keep.push(id);
            }
        }
        let mut list = list;
        list.clear();
        self.starved = list;
        self.starved.extend(keep);
    }

    /// Hands the batched events to the workers, or runs them here for
    /// workers that sleep ([`crate::worker::help`]); true if handlers run
    /// here produced commands (applied before this returns, after every
    /// command already in the channel).
    fn flush_hosts(&mut self) -> bool {
        let mut now = None;
        let mut helped_any = false;
        match &mut self.hosts {
            Hosts::Threads(links) => {
                for link in links.iter_mut() {
                    if link.out.is_empty() {
                        link.backlogged = false;
                        continue;
                    }
                    if let (Some((shared, rx)), Some(wake)) = (&link.help, &link.wake) {
                        let h = HelpLink { shared, wake, rx };
                        let clock = self.clock;
                        let now = *now.get_or_insert_with(|| clock.tcp(Instant::now()));
                        let budget = self.help_budget_ns;
                        if crate::worker::help(
                            &h,
                            &self.spares,
                            &mut link.out,
                            now,
                            budget,
                            &mut self.helped,
                        ) {
                            link.backlogged = false;
                            self.counters.batches_helped += 1;
                            helped_any = true;
                            continue;
                        }
                    }
                    if offer_batch(link, &self.spares) {
                        self.counters.batches_out += 1;
                        self.awaiting_workers |= self.answer_expected;
                    } else {
                        self.counters.worker_queue_full += 1;
                    }
                }
            }
            Hosts::Inline(_) => {}
        }
        if !helped_any {
            return false;
        }
        // The workers' earlier commands first (per-connection order), all
        // of them: the channel is bounded by `command_queue`.
        while let Ok(mut batch) = self.cmd_rx.try_recv() {
            self.counters.batches_in += 1;
            for c in batch.drain(..) {
                self.apply(c);
            }
            self.spares.put_cmds(batch);
        }
        let mut cmds = std::mem::take(&mut self.helped);
        let any = !cmds.is_empty();
        for c in cmds.drain(..) {
            self.apply(c);
        }
        self.helped = cmds;
        any
    }

    /// Handles pending signals (without blocking). Also called from the
    /// waits of [`Reactor::finish_shutdown`], so that a second signal ends a
    /// stuck shutdown phase at once.
    fn handle_signals(&mut self) {
        let sigs: Vec<i32> = self.signals.pending().collect();
        for s in sigs {
            match s {
                SIGUSR1 => {
                    self.print_counters();
                    self.request_reports();
                }
                SIGINT | SIGTERM => {
                    if self.shutdown.is_some() {
                        self.forced_exit();
                    }
                    let name = if s == SIGINT { "SIGINT" } else { "SIGTERM" };
                    info!(
                        "{name}: closing {} connections (grace {} ms); send it again to exit at once",
                        self.ep.connection_count(),
                        self.grace.as_millis()
                    );
                    self.begin_shutdown();
                }
                _ => {}
            }
        }
    }

    /// A second SIGINT/SIGTERM: exit now, status 130. `process::exit` runs
    /// no destructors, so what the device changed on the host (addresses on
    /// a persistent interface, its link state) is undone here first; the
    /// pcap writer gets a short, bounded moment to write what it has.
    fn forced_exit(&mut self) -> ! {
        warn!("second signal: exiting at once");
        self.dev.begin_flush();
        let until = Instant::now() + FORCED_FLUSH_WAIT;
        while !self.dev.flushed() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(1));
        }
        self.dev.restore_host();
        std::process::exit(130);
    }

    /// Sleeps `d` in a shutdown phase, then handles signals that came.
    fn shutdown_pause(&mut self, d: Duration) {
        std::thread::sleep(d);
        self.handle_signals();
    }

    fn begin_shutdown(&mut self) {
        self.shutdown = Some(Shutdown {
            deadline: Instant::now() + self.grace,
        });
        for (port, _) in self.ports.clone() {
            self.ep.unlisten(port);
        }
        for port in self.fwd_ports.clone() {
            self.ep.unlisten(port);
        }
        self.ep.unlisten_any();
        let ids: Vec<(ConnId, usize)> = self
            .conns
            .iter()
            .flatten()
            .map(|c| (c.id, c.worker))
            .collect();
        for (id, w) in ids {
            if let Some(c) = self.conn_mut(id) {
                c.closing = true;
                c.spill.clear();
            }
            let _ = self.ep.close(id);
            self.deliver(w, ToWorker::Shutdown { id });
        }
        if let Hosts::Inline(host) = &mut self.hosts {
            host.close_all(&mut self.ep);
        }
    }

    /// During a shutdown: whether every connection is finished or the grace
    /// period ran out. Finished means CLOSED or TIME-WAIT: both FINs went
    /// and were acknowledged (RFC 9293 §3.6). FIN-WAIT-2 is not finished:
    /// the peer has not closed its side and may still be sending (an upload)
    /// or simply idle (a keep-alive client); it is reset when the grace
    /// period ends, as an ABORT in FIN-WAIT-2 does (RFC 9293 §3.10.5).
    fn shutdown_done(&mut self) -> bool {
        let Some(s) = &self.shutdown else {
            return false;
        };
        let busy: usize = self
            .ep
            .state_counts()
            .iter()
            .filter(|(st, _)| !matches!(st, State::Closed | State::Listen | State::TimeWait))
            .map(|(_, n)| n)
            .sum();
        busy == 0 || Instant::now() >= s.deadline
    }

    fn finish_shutdown(&mut self) {
        let ids: Vec<ConnId> = match &self.hosts {
            Hosts::Inline(host) => host.connections(),
            Hosts::Threads(_) => self.conns.iter().flatten().map(|c| c.id).collect(),
        };
        for id in ids {
            let st = self.ep.info(id).map(|i| i.state);
            if let Ok(st) = st {
                // FIN-WAIT-2 too: the peer never closed; RFC 9293 §3.10.5
                // ABORT sends it a RST (an exit leaves nothing half-open).
                if !matches!(st, State::TimeWait | State::Closed) {
                    self.counters.shutdown_resets += 1;
                    let _ = self.ep.abort(id);
                }
            }
        }
        while self.ep.poll_event().is_some() {}
        // Get the RSTs out; retry briefly if the device pushes back.
        for _ in 0..100 {
            self.transmit(Instant::now());
            if self.tx_pending.is_none() {
                break;
            }
            self.shutdown_pause(Duration::from_millis(1));
        }
        if let Hosts::Threads(links) = &mut self.hosts {
            for link in links.iter_mut() {
                let (tx, _) = crossbeam_channel::bounded(1);
                drop(std::mem::replace(&mut link.tx, tx));
                // It may sleep in its poll: make it see the hang-up.
                if let Some(w) = &link.wake {
                    w.force();
                }
            }
        }
        // Workers may be blocked on a full command queue: drain it. A
        // handler stuck for good keeps this waiting, until a second signal.
        let threads: Vec<std::thread::JoinHandle<()>> = match &mut self.hosts {
            Hosts::Threads(links) => links.iter_mut().filter_map(|l| l.thread.take()).collect(),
            Hosts::Inline(_) => Vec::new(),
        };
        for t in threads {
            while !t.is_finished() {
                while self.cmd_rx.try_recv().is_ok() {}
                self.shutdown_pause(Duration::from_millis(1));
            }
            let _ = t.join();
        }
        self.publish();
        self.log_counters();
        if self.counters.shutdown_resets > 0 {
            info!(
                "reset {} connections still open after the grace period",
                self.counters.shutdown_resets
            );
        }
        // The pcap writer writes what is queued and exits; wait for it
        // watching for a second signal (a slow disk must not hang the exit).
        self.dev.begin_flush();
        while !self.dev.flushed() {
            self.shutdown_pause(Duration::from_millis(1));
        }
        self.dev.flush();
    }

    fn daemon_counters(&self) -> Vec<(&'static str, u64)> {
        let mut c = self.counters;
        if let Hosts::Inline(host) = &self.hosts {
            c.accepted = host.accepted();
            c.bytes_to_services = host.bytes_to_services();
            c.bytes_from_services = host.bytes_from_services();
        }
        let mut v: Vec<(&'static str, u64)> = c.named().to_vec();
        self.dev.counters(&mut v);
        v.push(("pool_buffers", self.pool.len() as u64));
        v.push(("open_passive", self.ep.passive_open() as u64));
        v.extend(self.board.service_counters());
        v.push(("tcp_buffer_bytes", self.ep.buffer_bytes() as u64));
        v.push(("tcp_buffer_pool_bytes", self.ep.buffer_pool_bytes() as u64));
        v.push((
            "tcp_memory_pressure",
            u64::from(self.ep.under_memory_pressure()),
        ));
        v.push(("malloc_trims", self.mem.trims));
        v
    }

    fn publish(&mut self) {
        let mut s = self.status_template.clone();
        s.stats = *self.ep.stats();
        s.states = self
            .ep
            .state_counts()
            .iter()
            .filter(|(_, n)| *n > 0)
            .copied()
            .collect();
        s.daemon = self.daemon_counters();
        if let Some(f) = &self.fwd {
            s.forwards = f.status();
        }
        self.board.publish(s);
    }

    /// The counters as three lines: `tcp: …`, `daemon: …`, `connections: …`.
    fn counter_lines(&self) -> [String; 3] {
        use std::fmt::Write as _;
        let st = self.ep.stats();
        let mut tcp = String::from("tcp:");
        for (k, v) in crate::services::stats_fields(st) {
            let _ = write!(tcp, " {k}={v}");
        }
        let _ = write!(tcp, " drops={}", st.drops.total());
        for (k, v) in st.drops.named() {
            if v > 0 {
                let _ = write!(tcp, " {k}={v}");
            }
        }
        let mut d = String::from("daemon:");
        for (k, v) in self.daemon_counters() {
            let _ = write!(d, " {k}={v}");
        }
        let mut c = String::from("connections:");
        for (st, n) in self.ep.state_counts() {
            if n > 0 {
                let _ = write!(c, " {st:?}={n}");
            }
        }
        [tcp, d, c]
    }

    /// Logs the counters (at exit), at info level.
    fn log_counters(&self) {
        for line in self.counter_lines() {
            info!("{line}");
        }
    }

    /// SIGUSR1: the user asked for the counters, so they go straight to
    /// stderr, whatever `-q` or `RUST_LOG` filter out. A failed write
    /// (stderr closed) is ignored: it must not stop the daemon.
    fn print_counters(&self) {
        use std::io::Write as _;
        let lines = self.counter_lines();
        let mut err = io::stderr().lock();
        for line in lines {
            let _ = writeln!(err, "tcpd: SIGUSR1 {line}");
        }
        let conns = self.conn_lines(SIGUSR1_CONN_LINES);
        for line in conns {
            let _ = writeln!(err, "tcpd: SIGUSR1 {line}");
        }
        let _ = err.flush();
    }

    /// SIGUSR1 with forwarding: each worker writes its upstream sockets'
    /// lines (their kernel state, what waits to go upstream).
    fn request_reports(&mut self) {
        if self.fwd.is_none() {
            return;
        }
        for w in 0..self.worker_count() {
            self.deliver(w, ToWorker::Report);
        }
        self.flush_hosts();
    }

    /// One line per open connection (at most `limit`, then how many more):
    /// what `ss -ti` shows for the kernel's sockets, for tcpd's own — the
    /// windows, what is in flight, congestion state, timers and backoffs,
    /// and with worker threads what the reactor holds for the worker.
    fn conn_lines(&self, limit: usize) -> Vec<String> {
        use std::fmt::Write as _;
        let tnow = self.clock.tcp(Instant::now());
        let mut out = Vec::new();
        let mut more = 0usize;
        for id in self.ep.connections() {
            if out.len() >= limit {
                more += 1;
                continue;
            }
            let Ok(i) = self.ep.info(id) else { continue };
            let mut l = format!(
                "conn {} > {} {:?} snd_wnd={} rcv_wnd={} in_flight={} send_buffered={} \
                 recv_buffered={} cwnd={} ssthresh={} mss={} rto_ms={} rto_backoffs={} \
                 persist_backoffs={} retransmits={}",
                i.remote,
                i.local,
                i.state,
                i.snd_wnd,
                i.rcv_wnd,
                i.in_flight,
                i.send_buffered,
                i.recv_buffered,
                i.cwnd,
                i.ssthresh,
                i.mss,
                i.rto.as_millis(),
                i.rto_backoffs,
                i.persist_backoffs,
                i.retransmits,
            );
            if let Some(s) = i.srtt {
                let _ = write!(l, " srtt_us={}", s.as_micros());
            }
            if let Some(t) = i.next_timer {
                let ms = if t > tnow { (t - tnow).as_millis() } else { 0 };
                let _ = write!(l, " timer_in_ms={ms}");
            }
            if let Some(Some(c)) = self.conns.get(id.slot() as usize) {
                if c.id == id {
                    let _ = write!(
                        l,
                        " worker={} held={} granted={} spill={} readable={} eof_sent={}",
                        c.worker,
                        c.held,
                        c.granted,
                        c.spill.len(),
                        c.readable,
                        c.eof_sent
                    );
                    if let Some(v) = &c.upstream {
                        let _ = write!(l, " {}", v.fields());
                    }
                }
            }
            out.push(l);
        }
        // Forwarded connections whose upstream connect is in progress: the
        // client's SYN is held, so the endpoint has no connection yet.
        for (sid, (worker, view)) in &self.pending_syns {
            if out.len() >= limit {
                more += 1;
                continue;
            }
            let Some(info) = self.ep.syn_info(*sid) else {
                continue;
            };
            let held_ms = if tnow > info.received {
                (tnow - info.received).as_millis()
            } else {
                0
            };
            out.push(format!(
                "conn {} > {} SynHeld held_ms={held_ms} worker={worker} {}",
                info.remote,
                info.local,
                view.fields()
            ));
        }
        if more > 0 {
            out.push(format!("conn ... and {more} more"));
        }
        out
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// A full worker queue keeps the batch where it was and gives the
    /// spare vector taken for its place back to the spares (it used to be
    /// dropped, so the worker path allocated again).
    #[test]
    fn a_full_worker_queue_returns_the_spare() {
        let spares = Spares::new();
        spares.put_events(Vec::with_capacity(16));
        let (tx, rx) = crossbeam_channel::bounded::<Vec<ToWorker>>(1);
        tx.try_send(Vec::new()).unwrap();
        let mut link = WorkerLink {
            tx,
            out: Vec::with_capacity(8),
            backlogged: false,
            wake: None,
            help: None,
            thread: None,
        };
        assert!(!offer_batch(&mut link, &spares));
        assert!(link.backlogged);
        assert_eq!(link.out.capacity(), 8, "the batch stays to be sent");
        assert_eq!(spares.events_rx.len(), 1, "the spare went back");
        assert_eq!(spares.events().capacity(), 16);
        // With room: the batch goes, a spare (here: a new vector) takes its place.
        spares.put_events(Vec::with_capacity(16));
        rx.try_recv().unwrap();
        assert!(offer_batch(&mut link, &spares));
        assert!(!link.backlogged);
        assert_eq!(rx.try_recv().unwrap().capacity(), 8);
        assert_eq!(link.out.capacity(), 16);
        assert_eq!(spares.events_rx.len(), 0);
    }
}
