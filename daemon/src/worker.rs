//! Workers: the threads that run the service handlers, and the messages
//! between them and the reactor.
//!
//! The reactor owns every connection's protocol state; a worker owns the
//! handlers ([`Driver`]s) of the connections assigned to it. Between them:
//!
//! - reactor → worker: [`ToWorker`] events in batches (one `Vec` per
//!   reactor wake-up and worker) over a bounded channel;
//! - worker → reactor: [`Cmd`] commands in batches over one bounded
//!   channel shared by all workers, plus a [`ReactorWake`] that wakes the
//!   reactor only when it may be asleep.
//!
//! Backpressure: the reactor reads a connection's bytes with
//! `recv_hold` and hands them over as [`ToWorker::Data`]; they keep counting
//! against the receive window until the worker reports them
//! [`Cmd::Consumed`], so a slow service shrinks the window the peer sees.
//! The reactor reads at most its hold limit ahead per connection. In the
//! other direction a worker may write only as many bytes as the credit the
//! reactor granted ([`ToWorker::Accepted`] and [`ToWorker::Writable`]), and
//! the reactor grants no more than the connection's free send-buffer
//! space. Every queue on the way is bounded.
//!
//! Who runs a worker's handlers: the worker's [`Host`] sits in a
//! [`WorkerShared`] cell whose lock says who holds it. A worker thread that
//! sleeps in its `Poll` does not hold it, and the reactor then runs the
//! events it has for that worker itself ([`help`]), in the same order, on
//! the same `Host`, with the same credit and hold accounting, instead of
//! waking the thread: a wake-up and the answer's way back cost two context
//! switches (on one CPU) or the other CPU's wake-up latency (tens of µs),
//! far more than the services' work. While a host's rounds cost more than
//! the help budget (`Config::worker_help_us`) the reactor hands the events
//! to the thread instead, so heavy handlers keep their own core. The lock
//! is taken once per round (a batch of events), never per packet, and is
//! uncontended but for a worker waking while the reactor helps.
//!
//! With `--workers 0` the handlers run inline on the reactor thread through
//! [`crate::services::InlineHost`] instead (what replays run).

use crate::pool::Pool;
use crate::services::{ConnCtx, Driver, Service, Step};
use crossbeam_channel::{Receiver, Sender, TryRecvError};
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};
use std::time::{Duration, Instant};
use tcp::ConnId;

/// An event for a connection's handler.
#[derive(Debug)]
pub enum ToWorker<K = ConnId> {
    /// A connection was accepted on the service with index `svc`; the
    /// handler may write `credit` bytes.
    Accepted {
        /// The connection.
        id: K,
        /// Index of the service in the host's list.
        svc: usize,
        /// Addresses of the connection.
        ctx: ConnCtx,
        /// Initial send credit, bytes.
        credit: usize,
    },
    /// In-order bytes from the peer (a pooled buffer).
    Data {
        /// The connection.
        id: K,
        /// The bytes.
        buf: Vec<u8>,
    },
    /// The peer's FIN: every byte before it has been sent as `Data`.
    PeerClosed {
        /// The connection.
        id: K,
    },
    /// More send credit, bytes.
    Writable {
        /// The connection.
        id: K,
        /// Additional bytes the handler may write.
        credit: usize,
    },
    /// The daemon is shutting down and closes the connection itself: the
    /// handler gets no more credit.
    Shutdown {
        /// The connection.
        id: K,
    },
    /// The connection is gone (closed, reset, timed out, aborted).
    Closed {
        /// The connection.
        id: K,
    },
    /// A SYN held for a `--forward` rule or `--transparent`: connect to
    /// `target` and answer [`Cmd::AcceptSyn`] or [`Cmd::RefuseSyn`] (see
    /// [`crate::forward::splice`]).
    Connect {
        /// The held SYN.
        syn: tcp::SynId,
        /// Index of the rule's counters in [`crate::forward::Forwarding`].
        rule: usize,
        /// Addresses of the client's SYN.
        ctx: ConnCtx,
        /// Where to connect.
        target: std::net::SocketAddr,
        /// Where the worker shows the upstream side's state (SIGUSR1).
        view: Arc<crate::forward::splice::UpstreamView>,
    },
    /// The SYN was accepted ([`Cmd::AcceptSyn`]): this is its connection.
    Bind {
        /// The held SYN.
        syn: tcp::SynId,
        /// The connection made from it.
        id: K,
        /// Initial send credit toward the client, bytes.
        credit: usize,
    },
    /// The SYN could not be accepted after all (or expired): drop its
    /// upstream connection with a RST.
    Cancel {
        /// The held SYN.
        syn: tcp::SynId,
    },
    /// SIGUSR1: write the worker's connection lines (forwarded
    /// connections' upstream state) to stderr.
    Report,
}

/// A handler's request for its connection.
#[derive(Debug)]
pub enum Cmd<K = ConnId> {
    /// Queue bytes (never more than the credit granted).
    Send {
        /// The connection.
        id: K,
        /// The bytes (a pooled buffer).
        buf: Vec<u8>,
    },
    /// Half-close after the queued bytes (FIN).
    Close {
        /// The connection.
        id: K,
    },
    /// Reset the connection.
    Abort {
        /// The connection.
        id: K,
    },
    /// `n` more bytes of the received stream were consumed: release them.
    Consumed {
        /// The connection.
        id: K,
        /// Bytes consumed.
        n: usize,
    },
    /// The upstream of a held SYN connected: answer the SYN (SYN-ACK) and
    /// bind the connection ([`ToWorker::Bind`]).
    AcceptSyn {
        /// The held SYN.
        syn: tcp::SynId,
    },
    /// The upstream of a held SYN failed: refuse the SYN (RST, or an ICMP
    /// error that tells why).
    RefuseSyn {
        /// The held SYN.
        syn: tcp::SynId,
        /// What went wrong.
        why: crate::forward::connect::ConnectFailure,
    },
}

/// Wakes a thread sleeping in its mio `Poll` when another queued work for
/// it, but only if the sleeper said it may sleep (a wake-up costs a syscall
/// here and tens of µs on the other CPU when the sleeper does sleep). The
/// workers wake the reactor with one; the reactor wakes each worker with
/// that worker's own.
pub struct ReactorWake {
    waker: mio::Waker,
    sleeping: AtomicBool,
}

impl ReactorWake {
    /// Wraps the reactor's mio waker.
    pub fn new(waker: mio::Waker) -> ReactorWake {
        ReactorWake {
            waker,
            sleeping: AtomicBool::new(false),
        }
    }
    /// The reactor is about to sleep (it re-checks its channel afterwards).
    pub fn set_sleeping(&self, s: bool) {
        self.sleeping.store(s, Ordering::SeqCst);
    }
    /// Whether the sleeper said it sleeps (and nobody woke it since).
    pub fn is_sleeping(&self) -> bool {
        self.sleeping.load(Ordering::SeqCst)
    }
    /// Called after queueing commands: wakes the reactor if it may sleep.
    pub fn notify(&self) {
        if self.sleeping.swap(false, Ordering::SeqCst) {
            let _ = self.waker.wake();
        }
    }
    /// Wakes the sleeper whatever it said (it must look at a channel that
    /// was closed, say).
    pub fn force(&self) {
        self.sleeping.store(false, Ordering::SeqCst);
        let _ = self.waker.wake();
    }
}

struct HostConn {
    driver: Driver,
    credit: usize,
    /// Data received and not yet passed to the driver (its offer buffer
    /// was full). Bounded by the reactor's hold limit.
    queued: VecDeque<Vec<u8>>,
    /// Bytes of `queued.front()` already passed.
    front_off: usize,
    eof: bool,
    eof_passed: bool,
}

/// A buffer for a handler call's output: the host's spare, else a pooled one.
fn take_out(spare: &mut Vec<u8>, pool: &Pool) -> Vec<u8> {
    if spare.capacity() > 0 {
        std::mem::take(spare)
    } else {
        pool.get_for(0)
    }
}

/// Hashes connection handles for the host's table: a multiply-and-fold
/// of the handle's words (Fibonacci hashing). The handles are the
/// endpoint's own (slot and generation), not chosen by a peer, so the table
/// needs no keyed hash (SipHash costs several times this on the per-message
/// path: each event looks its connection up).
#[derive(Default)]
pub struct HandleHasher(u64);

impl Hasher for HandleHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.write_u64(u64::from(*b));
        }
    }
    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(29) ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }
}

/// Runs the handlers of a set of connections: turns [`ToWorker`] events into
/// [`Driver`] calls and the results into [`Cmd`]s.
pub struct Host<K = ConnId> {
    services: Arc<[Arc<dyn Service>]>,
    conns: HashMap<K, HostConn, BuildHasherDefault<HandleHasher>>,
    pool: Pool,
    /// An output buffer a handler call left empty, kept for the next call
    /// (so that handlers that write nothing, like discard, cycle no pooled
    /// buffer per call).
    out_spare: Vec<u8>,
    /// The host's time for handler timers ([`Host::set_now`]).
    now: tcp::Instant,
    /// No handler deadline comes before this one (may be stale).
    next_deadline: Option<tcp::Instant>,
}

impl<K: Copy + Eq + Hash> Host<K> {
    /// A host for `services` (indexed by [`ToWorker::Accepted::svc`]).
    pub fn new(services: Arc<[Arc<dyn Service>]>, pool: Pool) -> Host<K> {
        Host {
            services,
            conns: HashMap::default(),
            pool,
            out_spare: Vec::new(),
            now: tcp::Instant::ZERO,
            next_deadline: None,
        }
    }

    /// Sets the time handler timers are armed from (never backwards).
    pub fn set_now(&mut self, now: tcp::Instant) {
        self.now = self.now.max(now);
    }

    /// When [`Host::handle_timeout`] is next due.
    pub fn poll_timeout(&self) -> Option<tcp::Instant> {
        self.next_deadline
    }

    /// Fires the handler timers due at `now` (see
    /// [`crate::services::Timer`]), appending the resulting commands to
    /// `out`, and finds the next deadline.
    pub fn handle_timeout(&mut self, now: tcp::Instant, out: &mut Vec<Cmd<K>>) {
        self.set_now(now);
        if self.next_deadline.is_none_or(|d| d > now) {
            return;
        }
        self.next_deadline = None;
        let due: Vec<K> = self
            .conns
            .iter()
            .filter(|(_, c)| c.driver.deadline().is_some_and(|d| d <= now))
            .map(|(k, _)| *k)
            .collect();
        for id in due {
            let Some(c) = self.conns.get_mut(&id) else {
                continue;
            };
            let mut o = take_out(&mut self.out_spare, &self.pool);
            let step = c.driver.timeout(now, &mut o, c.credit);
            self.apply(id, step, o, out);
        }
        let mut next = self.next_deadline;
        for c in self.conns.values() {
            if let Some(d) = c.driver.deadline() {
                next = Some(next.map_or(d, |n| n.min(d)));
            }
        }
        self.next_deadline = next;
    }

    fn note_deadline(next: &mut Option<tcp::Instant>, d: Option<tcp::Instant>) {
        if let Some(d) = d {
            *next = Some(next.map_or(d, |n| n.min(d)));
        }
    }

    /// Connections hosted now.
    pub fn len(&self) -> usize {
        self.conns.len()
    }

    /// Whether no connection is hosted.
    pub fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }

    /// Handles one event, appending the resulting commands to `out`.
    pub fn handle(&mut self, ev: ToWorker<K>, out: &mut Vec<Cmd<K>>) {
        match ev {
            ToWorker::Accepted {
                id,
                svc,
                ctx,
                credit,
            } => {
                let Some(service) = self.services.get(svc) else {
                    out.push(Cmd::Abort { id });
                    return;
                };
                let mut driver = Driver::new(service.new_handler(&ctx));
                Self::note_deadline(&mut self.next_deadline, driver.rearm(self.now));
                self.conns.insert(
                    id,
                    HostConn {
                        driver,
                        credit,
                        queued: VecDeque::new(),
                        front_off: 0,
                        eof: false,
                        eof_passed: false,
                    },
                );
            }
            ToWorker::Data { id, buf } => {
                match self.conns.get_mut(&id) {
                    Some(c) => c.queued.push_back(buf),
                    None => {
                        // Gone already: let the bytes go.
                        out.push(Cmd::Consumed { id, n: buf.len() });
                        self.pool.put(buf);
                        return;
                    }
                }
                self.pump(id, out);
            }
            ToWorker::PeerClosed { id } => {
                if let Some(c) = self.conns.get_mut(&id) {
                    c.eof = true;
                    self.pump(id, out);
                }
            }
            ToWorker::Writable { id, credit } => {
                let Some(c) = self.conns.get_mut(&id) else {
                    return;
                };
                c.credit += credit;
                if c.driver.blocked() {
                    let mut o = take_out(&mut self.out_spare, &self.pool);
                    let step = c.driver.writable(&mut o, c.credit);
                    if !self.apply(id, step, o, out) {
                        return;
                    }
                }
                self.pump(id, out);
            }
            ToWorker::Shutdown { id } => {
                if let Some(c) = self.conns.get_mut(&id) {
                    c.driver.shutdown();
                }
            }
            ToWorker::Closed { id } => {
                if let Some(mut c) = self.conns.remove(&id) {
                    c.driver.closed();
                    for b in c.queued {
                        self.pool.put(b);
                    }
                }
            }
            // Forwarded connections have no handler: a host without a
            // forwarder refuses them.
            ToWorker::Connect { syn, .. } => out.push(Cmd::RefuseSyn {
                syn,
                why: crate::forward::connect::ConnectFailure::Other,
            }),
            ToWorker::Bind { id, .. } => out.push(Cmd::Abort { id }),
            ToWorker::Cancel { .. } | ToWorker::Report => {}
        }
    }

    /// Passes queued data (as much as the driver has room for) and a due
    /// end of stream to the driver.
    fn pump(&mut self, id: K, out: &mut Vec<Cmd<K>>) {
        loop {
            let Some(c) = self.conns.get_mut(&id) else {
                return;
            };
            let room = c.driver.room();
            let Some(front) = c.queued.front() else { break };
            if room == 0 {
                return;
            }
            let avail = &front[c.front_off..];
            let n = avail.len().min(room);
            let mut o = take_out(&mut self.out_spare, &self.pool);
            let step = c.driver.data(&avail[..n], &mut o, c.credit);
            c.front_off += n;
            if c.front_off >= front.len() {
                c.front_off = 0;
                if let Some(b) = c.queued.pop_front() {
                    self.pool.put(b);
                }
            }
            if !self.apply(id, step, o, out) {
                return;
            }
        }
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        if c.eof && !c.eof_passed {
            c.eof_passed = true;
            let mut o = take_out(&mut self.out_spare, &self.pool);
            let step = c.driver.eof(&mut o, c.credit);
            self.apply(id, step, o, out);
        }
    }

    /// Turns a driver step and its output into commands; false when the
    /// connection was dropped (aborted).
    fn apply(&mut self, id: K, step: Step, written: Vec<u8>, out: &mut Vec<Cmd<K>>) -> bool {
        let Some(c) = self.conns.get_mut(&id) else {
            self.pool.put(written);
            return false;
        };
        Self::note_deadline(&mut self.next_deadline, c.driver.rearm(self.now));
        if step.consumed > 0 {
            out.push(Cmd::Consumed {
                id,
                n: step.consumed,
            });
        }
        if written.is_empty() {
            self.out_spare = written;
        } else {
            c.credit = c.credit.saturating_sub(written.len());
            out.push(Cmd::Send { id, buf: written });
        }
        if step.abort {
            out.push(Cmd::Abort { id });
            if let Some(c) = self.conns.remove(&id) {
                for b in c.queued {
                    self.pool.put(b);
                }
            }
            return false;
        }
        if step.close {
            out.push(Cmd::Close { id });
        }
        true
    }

    /// Tells every handler its connection is gone (worker exit).
    pub fn close_all(&mut self) {
        for (_, mut c) in self.conns.drain() {
            c.driver.closed();
        }
    }
}

/// A worker's handlers and what a round of them costs, behind the lock
/// of its [`WorkerShared`].
pub struct HostCell {
    /// The handlers of the worker's connections.
    pub host: Host<ConnId>,
    /// Average wall time of a round of this host's work (a batch of events
    /// and its timers), ns: an exponentially weighted mean (weight 1/8) over
    /// the rounds the worker thread ran and those the reactor ran.
    cost_ns: u64,
}

impl HostCell {
    fn note_cost(&mut self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.cost_ns = self.cost_ns - self.cost_ns / 8 + ns / 8;
    }
    /// The average cost of a round, ns.
    pub fn cost_ns(&self) -> u64 {
        self.cost_ns
    }
}

/// What the reactor and one worker thread share: the worker's [`Host`]
/// (held by whoever runs its handlers) and when the sleeping worker wakes
/// by itself, so that the reactor can tell whether a handler timer armed
/// while it helped needs the thread sooner.
pub struct WorkerShared {
    cell: Mutex<HostCell>,
    /// The host time (µs) the worker's sleep ends at by itself;
    /// `u64::MAX`: only a wake-up ends it.
    wakes_at: AtomicU64,
}

impl WorkerShared {
    /// A cell for `host`.
    pub fn new(host: Host<ConnId>) -> Arc<WorkerShared> {
        Arc::new(WorkerShared {
            cell: Mutex::new(HostCell { host, cost_ns: 0 }),
            wakes_at: AtomicU64::new(u64::MAX),
        })
    }
    /// Takes the host (blocking while the other side runs a round).
    pub fn lock(&self) -> MutexGuard<'_, HostCell> {
        // A panicking handler kills its thread; the host stays usable for
        // the shutdown's bookkeeping.
        self.cell.lock().unwrap_or_else(|e| e.into_inner())
    }
    fn try_lock(&self) -> Option<MutexGuard<'_, HostCell>> {
        match self.cell.try_lock() {
            Ok(g) => Some(g),
            Err(TryLockError::WouldBlock) | Err(TryLockError::Poisoned(_)) => None,
        }
    }
}

/// The reactor's side of one worker for [`help`].
pub struct HelpLink<'a> {
    /// The worker's shared host.
    pub shared: &'a WorkerShared,
    /// The worker's waker and its sleeping flag.
    pub wake: &'a ReactorWake,
    /// The worker's event channel (a receiving end of it): batches sent
    /// before are run first.
    pub rx: &'a Receiver<Vec<ToWorker>>,
}

/// Runs `events` for a sleeping worker on the calling thread (the reactor)
/// instead of waking it: first every batch still in the worker's channel,
/// then `events` (drained), then the host's due timers; the commands go to
/// `out`. Returns false, leaving `events` alone, when the worker is awake,
/// its host is in use, or its rounds cost more than `budget_ns` on average
/// (0: never help). The caller must apply every command already in the
/// command channel before `out`. If a timer armed meanwhile is due before
/// the worker's sleep ends, the worker is woken to run it.
pub fn help(
    link: &HelpLink<'_>,
    spares: &Spares,
    events: &mut Vec<ToWorker>,
    now: tcp::Instant,
    budget_ns: u64,
    out: &mut Vec<Cmd>,
) -> bool {
    if budget_ns == 0 || !link.wake.is_sleeping() {
        return false;
    }
    let Some(mut cell) = link.shared.try_lock() else {
        return false;
    };
    // Asked again under the lock: a worker that sleeps now sent the
    // commands of its last round before it said so (the flag's store
    // publishes them), so the caller, applying the channel's commands
    // before `out`, keeps each connection's commands in order. A worker
    // that woke meanwhile keeps its events.
    if cell.cost_ns > budget_ns || !link.wake.is_sleeping() {
        return false;
    }
    let t0 = Instant::now();
    cell.host.set_now(now);
    // Per-connection order: what went through the channel comes first.
    while let Ok(mut b) = link.rx.try_recv() {
        for ev in b.drain(..) {
            cell.host.handle(ev, out);
        }
        spares.put_events(b);
    }
    for ev in events.drain(..) {
        cell.host.handle(ev, out);
    }
    cell.host.handle_timeout(now, out);
    let next = cell.host.poll_timeout();
    cell.note_cost(t0.elapsed());
    drop(cell);
    if next.is_some_and(|d| d.as_micros() < link.shared.wakes_at.load(Ordering::SeqCst)) {
        link.wake.force();
    }
    true
}

/// Emptied batch vectors on their way back to the side that fills them, so
/// that a steady exchange of batches allocates nothing: the reactor fills
/// event batches and the workers return them; the workers fill command
/// batches and the reactor returns them. Both queues are bounded, and only
/// vectors of a modest capacity are kept (a spare that does not fit is
/// freed), so the spares hold at most `SPARES * SPARE_CAPACITY` entries
/// each way.
#[derive(Clone)]
pub struct Spares {
    /// Event batches, worker → reactor.
    pub events_tx: Sender<Vec<ToWorker>>,
    /// Event batches, taken by the reactor.
    pub events_rx: Receiver<Vec<ToWorker>>,
    /// Command batches, reactor → workers.
    pub cmds_tx: Sender<Vec<Cmd>>,
    /// Command batches, taken by the workers.
    pub cmds_rx: Receiver<Vec<Cmd>>,
}

/// Spare vectors kept each way.
const SPARES: usize = 64;
/// Largest capacity of a vector kept as a spare.
const SPARE_CAPACITY: usize = 1024;

impl Spares {
    /// Empty spare queues.
    pub fn new() -> Spares {
        let (events_tx, events_rx) = crossbeam_channel::bounded(SPARES);
        let (cmds_tx, cmds_rx) = crossbeam_channel::bounded(SPARES);
        Spares {
            events_tx,
            events_rx,
            cmds_tx,
            cmds_rx,
        }
    }
    /// Hands back an emptied event batch.
    pub fn put_events(&self, mut v: Vec<ToWorker>) {
        if v.capacity() <= SPARE_CAPACITY {
            v.clear();
            let _ = self.events_tx.try_send(v);
        }
    }
    /// An empty event batch (a returned one when there is one).
    pub fn events(&self) -> Vec<ToWorker> {
        self.events_rx.try_recv().unwrap_or_default()
    }
    /// Hands back an emptied command batch.
    pub fn put_cmds(&self, mut v: Vec<Cmd>) {
        if v.capacity() <= SPARE_CAPACITY {
            v.clear();
            let _ = self.cmds_tx.try_send(v);
        }
    }
    /// Frees every spare batch (when the daemon has gone idle); returns
    /// how many were freed.
    pub fn trim(&self) -> usize {
        let mut n = 0;
        while self.events_rx.try_recv().is_ok() {
            n += 1;
        }
        while self.cmds_rx.try_recv().is_ok() {
            n += 1;
        }
        n
    }
    /// An empty command batch (a returned one when there is one).
    pub fn cmds(&self) -> Vec<Cmd> {
        self.cmds_rx
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(256))
    }
}

impl Default for Spares {
    fn default() -> Self {
        Spares::new()
    }
}

/// The token of a worker's own [`mio::Waker`] in its `Poll` (the
/// forwarder's sockets use the tokens above it).
pub const WORKER_WAKER: mio::Token = mio::Token(0);

/// What a worker thread is made of (the reactor builds it).
pub struct WorkerSetup {
    /// The worker's host (its handlers), shared with the reactor ([`help`]).
    pub shared: Arc<WorkerShared>,
    /// The daemon's clock: the host's time is the same whichever thread
    /// runs it.
    pub clock: crate::clock::Clock,
    /// The shared buffer pool.
    pub pool: Pool,
    /// Event batches from the reactor.
    pub rx: Receiver<Vec<ToWorker>>,
    /// Command batches to the reactor.
    pub cmd_tx: Sender<Vec<Cmd>>,
    /// Wakes the reactor.
    pub wake: Arc<ReactorWake>,
    /// This worker's `Poll`, its waker registered as [`WORKER_WAKER`].
    pub poll: mio::Poll,
    /// This worker's waker, with the flag that says it may sleep.
    pub own_wake: Arc<ReactorWake>,
    /// How long to spin for work before sleeping.
    pub spin: Duration,
    /// Spare batch vectors.
    pub spares: Spares,
    /// Forwarding (`--forward`, `--transparent`), if on.
    pub forwarding: Option<Arc<crate::forward::Forwarding>>,
    /// Largest read from an upstream socket, bytes.
    pub read_chunk: usize,
}

/// What a worker's spin found.
enum Spun {
    /// A batch of events.
    Batch(Vec<ToWorker>),
    /// The reactor hung up.
    Hangup,
    /// Socket readiness (in the events buffer).
    Sockets,
    /// Nothing within the spin.
    Nothing,
}

/// Looks for work for up to `spin`: a batch on `rx` and, when `sockets`,
/// readiness of the forwarder's sockets (a zero-timeout poll).
fn spin_for_work(
    rx: &Receiver<Vec<ToWorker>>,
    spin: Duration,
    sockets: Option<(&mut mio::Poll, &mut mio::Events)>,
) -> Spun {
    let take = |rx: &Receiver<Vec<ToWorker>>| match rx.try_recv() {
        Ok(b) => Some(Spun::Batch(b)),
        Err(TryRecvError::Disconnected) => Some(Spun::Hangup),
        Err(TryRecvError::Empty) => None,
    };
    if let Some(s) = take(rx) {
        return s;
    }
    if spin.is_zero() {
        return Spun::Nothing;
    }
    let mut sockets = sockets;
    let until = Instant::now() + spin;
    loop {
        for _ in 0..64 {
            std::hint::spin_loop();
        }
        // Let the reactor run if it shares this CPU (pinned setups):
        // spinning must not delay the very work it waits for.
        std::thread::yield_now();
        if let Some(s) = take(rx) {
            return s;
        }
        if let Some((poll, events)) = sockets.as_mut() {
            if poll.poll(events, Some(Duration::ZERO)).is_ok() && !events.is_empty() {
                return Spun::Sockets;
            }
        }
        if Instant::now() >= until {
            return Spun::Nothing;
        }
    }
}

/// The body of a worker thread: handles event batches and (with
/// forwarding) its upstream sockets until the reactor hangs up, sending one
/// command batch per round and waking the reactor.
///
/// It sleeps in its own mio `Poll`: after a short spin (`spin`) it says so
/// on its [`ReactorWake`], so that the reactor pays for a wake-up (the
/// `mio::Waker`) only when the worker does sleep.
pub fn worker_loop(w: WorkerSetup) {
    let WorkerSetup {
        shared,
        clock,
        pool,
        rx,
        cmd_tx,
        wake,
        mut poll,
        own_wake,
        spin,
        spares,
        forwarding,
        read_chunk,
    } = w;
    let mut fwd =
        forwarding.map(|f| crate::forward::splice::Forwarder::new(f, pool.clone(), read_chunk));
    let mut cmds: Vec<Cmd> = spares.cmds();
    let mut events = mio::Events::with_capacity(256);
    'run: loop {
        events.clear();
        let sockets = fwd.as_ref().is_some_and(|f| !f.is_empty());
        let spun = spin_for_work(&rx, spin, sockets.then_some((&mut poll, &mut events)));
        let nothing = matches!(spun, Spun::Nothing);
        let mut first = match spun {
            Spun::Hangup => break,
            Spun::Batch(b) => Some(b),
            Spun::Sockets | Spun::Nothing => None,
        };
        if nothing || (first.is_some() && fwd.is_some()) {
            // Sleep until a batch, a socket or a deadline; with a batch in
            // hand only look at the sockets.
            let mut timeout = if first.is_some() {
                Some(Duration::ZERO)
            } else {
                let now = Instant::now();
                let host_t = shared.lock().host.poll_timeout();
                let fwd_t = fwd.as_ref().and_then(|f| f.poll_timeout());
                let wakes_at = match (host_t.map(|t| clock.to_std(t)), fwd_t) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                // Told before the flag: a reactor that sees the flag and
                // arms an earlier handler timer wakes us (see `help`).
                shared.wakes_at.store(
                    wakes_at.map_or(u64::MAX, |t| clock.tcp(t).as_micros()),
                    Ordering::SeqCst,
                );
                wakes_at.map(|t| t.saturating_duration_since(now))
            };
            let sleeping = timeout != Some(Duration::ZERO);
            if sleeping {
                own_wake.set_sleeping(true);
                // Re-check after announcing: a batch sent before the
                // reactor saw the flag did not wake us.
                if !rx.is_empty() {
                    timeout = Some(Duration::ZERO);
                }
            }
            if let Err(e) = poll.poll(&mut events, timeout) {
                if e.kind() != std::io::ErrorKind::Interrupted {
                    tracing::warn!("worker poll failed: {e}");
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            if sleeping {
                own_wake.set_sleeping(false);
            }
        }
        let now = Instant::now();
        if let Some(f) = fwd.as_mut() {
            f.set_now(now);
            for ev in events.iter() {
                if ev.token() != WORKER_WAKER {
                    f.on_socket(poll.registry(), ev, &mut cmds);
                }
            }
        }
        // The host for this round (the reactor may have run it meanwhile:
        // whatever it took from the channel is done).
        let mut cell = shared.lock();
        let t0 = Instant::now();
        cell.host.set_now(clock.tcp(now));
        if first.is_none() {
            match rx.try_recv() {
                Ok(b) => first = Some(b),
                Err(TryRecvError::Disconnected) => break 'run,
                Err(TryRecvError::Empty) => {}
            }
        }
        let worked = first.is_some();
        let mut next = first;
        // Take whatever else is already there before answering (batching).
        while let Some(mut batch) = next.take() {
            for ev in batch.drain(..) {
                match fwd.as_mut() {
                    Some(f) if f.claims(&ev) => f.handle(poll.registry(), ev, &mut cmds),
                    _ => cell.host.handle(ev, &mut cmds),
                }
            }
            spares.put_events(batch);
            if cmds.len() >= 4096 {
                break;
            }
            match rx.try_recv() {
                Ok(b) => next = Some(b),
                Err(TryRecvError::Disconnected) => break 'run,
                Err(TryRecvError::Empty) => {}
            }
        }
        cell.host
            .handle_timeout(clock.tcp(Instant::now()), &mut cmds);
        if worked {
            cell.note_cost(t0.elapsed());
        }
        drop(cell);
        if let Some(f) = fwd.as_mut() {
            f.set_now(Instant::now());
            f.sweep(poll.registry(), &mut cmds);
        }
        if !cmds.is_empty() {
            let c = std::mem::replace(&mut cmds, spares.cmds());
            // Blocks only while the reactor's command queue is full; the
            // reactor never blocks on us, so this cannot deadlock.
            if cmd_tx.send(c).is_err() {
                break;
            }
            wake.notify();
        }
    }
    shared.lock().host.close_all();
    if let Some(f) = fwd.as_mut() {
        f.close_all(poll.registry());
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::services::{Handler, Io};

    /// Echoes what fits in the credit.
    struct TestEcho;
    struct TestEchoH;
    impl Service for TestEcho {
        fn name(&self) -> &'static str {
            "t-echo"
        }
        fn new_handler(&self, _ctx: &ConnCtx) -> Box<dyn Handler> {
            Box::new(TestEchoH)
        }
    }
    impl Handler for TestEchoH {
        fn on_data(&mut self, data: &[u8], io: &mut Io<'_>) -> usize {
            io.write(data)
        }
        fn on_writable(&mut self, _io: &mut Io<'_>) {}
        fn on_peer_close(&mut self, io: &mut Io<'_>) {
            io.close();
        }
    }

    #[test]
    fn spares_come_back_empty_bounded_and_modest() {
        let sp = Spares::new();
        let v: Vec<Cmd> = Vec::with_capacity(300);
        let cap = v.capacity();
        sp.put_cmds(v);
        let back = sp.cmds();
        assert!(back.is_empty());
        assert_eq!(back.capacity(), cap, "the same allocation is reused");
        // Too large to keep: freed, and a fresh one comes instead.
        sp.put_cmds(Vec::with_capacity(SPARE_CAPACITY + 1));
        assert_eq!(sp.cmds().capacity(), 256);
        // At most SPARES are kept.
        for _ in 0..SPARES + 10 {
            sp.put_events(Vec::with_capacity(8));
        }
        assert_eq!(sp.events_rx.len(), SPARES);
    }

    fn host() -> Host<u32> {
        let services: Arc<[Arc<dyn Service>]> =
            Arc::from(vec![Arc::new(TestEcho) as Arc<dyn Service>]);
        Host::new(services, Pool::new(8, 64))
    }

    fn ctx() -> ConnCtx {
        ConnCtx {
            local: "10.0.0.2:7".parse().unwrap(),
            remote: "10.0.0.1:5000".parse().unwrap(),
        }
    }

    #[test]
    fn credit_limits_output_and_writable_resumes() {
        let mut h = host();
        let mut out = Vec::new();
        h.handle(
            ToWorker::Accepted {
                id: 1,
                svc: 0,
                ctx: ctx(),
                credit: 4,
            },
            &mut out,
        );
        assert!(out.is_empty());
        h.handle(
            ToWorker::Data {
                id: 1,
                buf: b"abcdefgh".to_vec(),
            },
            &mut out,
        );
        // Only 4 bytes of credit: 4 echoed and consumed, 4 wait.
        assert!(
            matches!(&out[..], [Cmd::Consumed { id: 1, n: 4 }, Cmd::Send { id: 1, buf }] if buf == b"abcd")
        );
        out.clear();
        h.handle(ToWorker::PeerClosed { id: 1 }, &mut out);
        assert!(out.is_empty(), "no FIN while bytes wait: {out:?}");
        h.handle(ToWorker::Writable { id: 1, credit: 100 }, &mut out);
        assert!(
            matches!(&out[..], [Cmd::Consumed { id: 1, n: 4 }, Cmd::Send { id: 1, buf }, Cmd::Close { id: 1 }] if buf == b"efgh"),
            "{out:?}"
        );
        out.clear();
        h.handle(ToWorker::Closed { id: 1 }, &mut out);
        assert!(h.is_empty());
        // Data for a connection that is gone is released, not kept.
        h.handle(
            ToWorker::Data {
                id: 9,
                buf: b"xy".to_vec(),
            },
            &mut out,
        );
        assert!(matches!(&out[..], [Cmd::Consumed { id: 9, n: 2 }]));
    }

    /// Connection handles from a real endpoint (active opens; nothing is
    /// sent anywhere: the SYNs stay in the endpoint).
    fn conn_ids(n: usize) -> Vec<ConnId> {
        let mut ep = tcp::Endpoint::new(tcp::Config::default()).unwrap();
        (0..n)
            .map(|i| {
                let remote = std::net::SocketAddr::from(([10, 0, 0, 1], 5000 + i as u16));
                ep.connect(tcp::Instant::ZERO, "10.0.0.2".parse().unwrap(), remote)
                    .unwrap()
            })
            .collect()
    }

    /// Many small messages to a real worker thread that parks at once (no
    /// spin), some handed over the channel with the wake-up only when it
    /// sleeps, some run here by `help` while it sleeps: every byte is
    /// echoed, in order, and the reactor side, sleeping in its own poll
    /// until a wake-up, is never left waiting (a lost wake-up fails the
    /// test after 5 s instead of hanging).
    #[test]
    fn helped_and_channelled_messages_keep_order_and_no_wakeup_is_lost() {
        let services: Arc<[Arc<dyn Service>]> =
            Arc::from(vec![Arc::new(TestEcho) as Arc<dyn Service>]);
        let pool = Pool::new(64, 4096);
        let spares = Spares::new();
        let clock = crate::clock::Clock::new();
        let mut rpoll = mio::Poll::new().unwrap();
        let rwake = Arc::new(ReactorWake::new(
            mio::Waker::new(rpoll.registry(), mio::Token(7)).unwrap(),
        ));
        let wpoll = mio::Poll::new().unwrap();
        let own_wake = Arc::new(ReactorWake::new(
            mio::Waker::new(wpoll.registry(), WORKER_WAKER).unwrap(),
        ));
        let (tx, rx) = crossbeam_channel::bounded::<Vec<ToWorker>>(16);
        let (cmd_tx, cmd_rx) = crossbeam_channel::bounded::<Vec<Cmd>>(16);
        let shared = WorkerShared::new(Host::new(services, pool.clone()));
        let setup = WorkerSetup {
            shared: shared.clone(),
            clock,
            pool: pool.clone(),
            rx: rx.clone(),
            cmd_tx,
            wake: rwake.clone(),
            poll: wpoll,
            own_wake: own_wake.clone(),
            spin: Duration::ZERO,
            spares: spares.clone(),
            forwarding: None,
            read_chunk: 4096,
        };
        let thread = std::thread::spawn(move || worker_loop(setup));
        let ids = conn_ids(4);
        let link = HelpLink {
            shared: &shared,
            wake: &own_wake,
            rx: &rx,
        };
        let mut sent: Vec<Vec<u8>> = vec![Vec::new(); ids.len()];
        let mut echoed: Vec<Vec<u8>> = vec![Vec::new(); ids.len()];
        let slot = |id: ConnId| ids.iter().position(|x| *x == id).unwrap();
        let apply = |batch: &mut Vec<Cmd>, echoed: &mut Vec<Vec<u8>>| {
            for c in batch.drain(..) {
                if let Cmd::Send { id, buf } = c {
                    echoed[slot(id)].extend_from_slice(&buf);
                }
            }
        };
        let mut events = mio::Events::with_capacity(8);
        let mut helped_out = Vec::new();
        let (mut helped, mut channelled) = (0u32, 0u32);
        let mut next = 0x9E37_79B9_7F4A_7C15u64;
        let mut rng = || {
            // xorshift: a fixed, reproducible mix of the two paths.
            next ^= next << 13;
            next ^= next >> 7;
            next ^= next << 17;
            next
        };
        let mut send = |evs: Vec<ToWorker>,
                        helped: &mut u32,
                        channelled: &mut u32,
                        echoed: &mut Vec<Vec<u8>>,
                        try_help: bool| {
            let mut evs = evs;
            if try_help
                && help(
                    &link,
                    &spares,
                    &mut evs,
                    clock.tcp(Instant::now()),
                    50_000,
                    &mut helped_out,
                )
            {
                *helped += 1;
                // The channel's commands first, then the helped ones.
                while let Ok(mut b) = cmd_rx.try_recv() {
                    apply(&mut b, echoed);
                }
                apply(&mut helped_out, echoed);
            } else {
                *channelled += 1;
                tx.send(evs).unwrap();
                own_wake.notify();
            }
        };
        let accepts: Vec<ToWorker> = ids
            .iter()
            .map(|&id| ToWorker::Accepted {
                id,
                svc: 0,
                ctx: ctx(),
                credit: 1 << 30,
            })
            .collect();
        send(accepts, &mut helped, &mut channelled, &mut echoed, false);
        for i in 0..20_000u32 {
            let r = rng();
            let k = (r % ids.len() as u64) as usize;
            let len = 1 + (r >> 8) as usize % 16;
            let buf: Vec<u8> = (0..len).map(|j| (i as usize * 7 + j) as u8).collect();
            sent[k].extend_from_slice(&buf);
            send(
                vec![ToWorker::Data { id: ids[k], buf }],
                &mut helped,
                &mut channelled,
                &mut echoed,
                (r >> 16) % 3 != 0,
            );
            if (r >> 24) % 4 != 0 {
                continue;
            }
            // Wait for every echo, sleeping as the reactor does.
            loop {
                while let Ok(mut b) = cmd_rx.try_recv() {
                    apply(&mut b, &mut echoed);
                }
                if echoed == sent {
                    break;
                }
                rwake.set_sleeping(true);
                let timeout = if cmd_rx.is_empty() {
                    Some(Duration::from_secs(5))
                } else {
                    Some(Duration::ZERO)
                };
                rpoll.poll(&mut events, timeout).unwrap();
                rwake.set_sleeping(false);
                assert!(
                    !events.is_empty() || !cmd_rx.is_empty() || timeout == Some(Duration::ZERO),
                    "message {i}: no wake-up came for the worker's answer (lost wake-up)"
                );
            }
        }
        while let Ok(mut b) = cmd_rx.recv_timeout(Duration::from_millis(200)) {
            apply(&mut b, &mut echoed);
        }
        assert_eq!(echoed, sent, "every byte echoed, in order");
        assert!(
            helped > 1000 && channelled > 1000,
            "both paths ran: {helped} {channelled}"
        );
        drop(tx);
        own_wake.force();
        thread.join().unwrap();
    }
}
