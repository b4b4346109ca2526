//! The worker side of forwarded connections: each splice joins a
//! connection of tcpd's stack (held by the reactor, reached through
//! [`ToWorker`] events and [`Cmd`] commands) to a kernel TCP socket in the
//! worker's mio `Poll` (edge-triggered: every socket is read and written
//! until `WouldBlock`).
//!
//! The handshake mirrors the upstream's (a deferred accept): the reactor
//! holds the client's SYN and sends [`ToWorker::Connect`]; the worker
//! starts a non-blocking connect and answers [`Cmd::AcceptSyn`] once it
//! succeeded (the reactor answers the SYN and binds the new connection
//! with [`ToWorker::Bind`]) or [`Cmd::RefuseSyn`] with the reason it failed
//! (refused, unreachable, timed out), which the reactor turns into a RST or
//! an ICMP error to the client. A client never sees an accepted connection
//! that then dies at once.
//!
//! Client → upstream: [`ToWorker::Data`] buffers queue here until written
//! to the kernel socket; only then does [`Cmd::Consumed`] release them, so
//! a slow upstream shrinks the window tcpd advertises. The reactor hands
//! over at most its hold limit per connection, which bounds the queue.
//! Upstream → client: the socket is read only as far as the send credit
//! goes ([`ToWorker::Writable`]); a slow client stops the reading, the
//! kernel socket's buffer fills and the upstream's window closes.
//!
//! Ends: the client's FIN (after its last byte was written) becomes
//! `shutdown(SHUT_WR)`, the upstream's EOF becomes [`Cmd::Close`] (a FIN
//! after the queued bytes). A connection that ends with both directions
//! finished closes the kernel socket normally; one that ends otherwise (the
//! client's RST, a timeout, an abort) closes it with SO_LINGER 0, a RST.
//! An upstream RST (ECONNRESET, EPIPE) becomes [`Cmd::Abort`], a RST to the
//! client.

use super::connect::{self, ConnectFailure};
use super::{Forwarding, FwdCounter};
use crate::pool::Pool;
use crate::worker::{Cmd, ToWorker};
use mio::{Interest, Registry, Token};
use std::collections::{HashMap, VecDeque};
use std::io::{self, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tcp::{ConnId, SynId};

/// What the reactor may know of a splice's upstream side, for SIGUSR1's
/// connection lines: written by the worker that owns the kernel socket
/// (relaxed atomics, at most once per socket read or write, never per
/// packet), read by the reactor when it prints. Made by the reactor with
/// the held SYN ([`ToWorker::Connect`]), so it can list upstream connects
/// in progress too.
#[derive(Debug, Default)]
pub struct UpstreamView {
    /// `UP_*` bits.
    flags: AtomicU8,
    /// Client bytes written to the upstream socket.
    to_up: AtomicU64,
    /// Bytes read from the upstream socket (passed on toward the client).
    from_up: AtomicU64,
    /// Client bytes the worker holds that the upstream socket has not
    /// taken yet.
    queued: AtomicU64,
}

/// The upstream connect succeeded.
const UP_CONNECTED: u8 = 1;
/// `shutdown(SHUT_WR)` was done upstream (the client's FIN went on).
const UP_FIN_SENT: u8 = 2;
/// The upstream's EOF (its FIN) was read.
const UP_FIN_RECEIVED: u8 = 4;
/// The upstream socket is closed (or the connect failed).
const UP_CLOSED: u8 = 8;

impl UpstreamView {
    fn set(&self, bit: u8) {
        self.flags.fetch_or(bit, Ordering::Relaxed);
    }

    /// The upstream side's state as SIGUSR1 prints it: `connecting`,
    /// `established`, `fin-sent` (the client's FIN went upstream; the
    /// upstream may still send), `fin-received` (the upstream's FIN came;
    /// the client may still send), `closed-both` (both FINs, the socket
    /// still open) or `closed`.
    pub fn state(&self) -> &'static str {
        let f = self.flags.load(Ordering::Relaxed);
        if f & UP_CLOSED != 0 {
            return "closed";
        }
        if f & UP_CONNECTED == 0 {
            return "connecting";
        }
        match (f & UP_FIN_SENT != 0, f & UP_FIN_RECEIVED != 0) {
            (false, false) => "established",
            (true, false) => "fin-sent",
            (false, true) => "fin-received",
            (true, true) => "closed-both",
        }
    }

    /// Client bytes written upstream so far.
    pub fn bytes_to_upstream(&self) -> u64 {
        self.to_up.load(Ordering::Relaxed)
    }

    /// Bytes read from upstream so far.
    pub fn bytes_from_upstream(&self) -> u64 {
        self.from_up.load(Ordering::Relaxed)
    }

    /// Client bytes waiting for the upstream socket to take them.
    pub fn queued_to_upstream(&self) -> u64 {
        self.queued.load(Ordering::Relaxed)
    }

    /// The fields appended to a connection line:
    /// `upstream=STATE up_to=N up_from=N up_queued=N`.
    pub fn fields(&self) -> String {
        format!(
            "upstream={} up_to={} up_from={} up_queued={}",
            self.state(),
            self.bytes_to_upstream(),
            self.bytes_from_upstream(),
            self.queued_to_upstream()
        )
    }
}

/// Where a splice is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// The upstream connect is in progress (until the deadline).
    Connecting { deadline: Instant },
    /// The upstream is connected; the reactor answers the client's SYN.
    Accepting,
    /// Both sides are up; bytes flow.
    Open,
}

/// One forwarded connection.
struct Splice {
    /// The client's held SYN.
    syn: SynId,
    /// The client's connection, once bound ([`ToWorker::Bind`]).
    id: Option<ConnId>,
    rule: usize,
    sock: mio::net::TcpStream,
    /// The connect (and `--upstream`'s SOCKS5 handshake) while connecting.
    dial: connect::Dial,
    client: SocketAddr,
    target: SocketAddr,
    phase: Phase,
    /// Client bytes not yet written upstream (pooled buffers).
    to_up: VecDeque<Vec<u8>>,
    /// Bytes of `to_up.front()` already written.
    off: usize,
    /// The upstream socket took everything offered last time (no
    /// `WouldBlock` since the last writable event).
    up_writable: bool,
    /// The client's FIN came (every byte before it is in `to_up` or written).
    client_eof: bool,
    /// `shutdown(SHUT_WR)` was done upstream.
    up_wr_shut: bool,
    /// Bytes the client's send buffer may take (granted by the reactor).
    credit: usize,
    /// The upstream socket may have bytes to read (no `WouldBlock` yet).
    up_readable: bool,
    /// The upstream sent its FIN and [`Cmd::Close`] went to the reactor.
    up_eof: bool,
    /// The daemon shuts down: no more reading upstream.
    shutting: bool,
    /// Last time a byte moved either way (for the idle timeout).
    last_active: Instant,
    /// What SIGUSR1 shows of this side (shared with the reactor).
    view: Arc<UpstreamView>,
}

/// The forwarded connections of one worker thread.
pub struct Forwarder {
    fwd: Arc<Forwarding>,
    pool: Pool,
    read_chunk: usize,
    slots: Vec<Option<Splice>>,
    free: Vec<usize>,
    by_conn: HashMap<ConnId, usize>,
    /// Splices whose client connection is not bound yet.
    by_syn: HashMap<SynId, usize>,
    /// The next time [`Forwarder::sweep`] has work (a connect deadline or an
    /// idle check).
    next_sweep: Option<Instant>,
    now: Instant,
}

/// The token of slot `i` (token 0 is the worker's waker).
fn token(i: usize) -> Token {
    Token(i + 1)
}

/// How often idle connections are looked for, at most.
const IDLE_SWEEP: Duration = Duration::from_secs(1);

impl Forwarder {
    /// A forwarder reading upstream sockets in chunks of `read_chunk` bytes.
    pub fn new(fwd: Arc<Forwarding>, pool: Pool, read_chunk: usize) -> Forwarder {
        Forwarder {
            fwd,
            pool,
            read_chunk: read_chunk.max(1),
            slots: Vec::new(),
            free: Vec::new(),
            by_conn: HashMap::new(),
            by_syn: HashMap::new(),
            next_sweep: None,
            now: Instant::now(),
        }
    }

    /// Sets the time the next calls work with.
    pub fn set_now(&mut self, now: Instant) {
        self.now = self.now.max(now);
    }

    /// Spliced connections on this worker.
    pub fn len(&self) -> usize {
        self.by_conn.len()
    }

    /// Whether this worker has no upstream socket.
    pub fn is_empty(&self) -> bool {
        self.by_conn.is_empty() && self.by_syn.is_empty()
    }

    /// Whether `ev` is for the forwarder (a forward event, or an event of
    /// a connection it holds) rather than for a service handler.
    pub fn claims(&self, ev: &ToWorker) -> bool {
        match ev {
            ToWorker::Connect { .. }
            | ToWorker::Bind { .. }
            | ToWorker::Cancel { .. }
            | ToWorker::Report => true,
            ToWorker::Accepted { .. } => false,
            ToWorker::Data { id, .. }
            | ToWorker::PeerClosed { id }
            | ToWorker::Writable { id, .. }
            | ToWorker::Shutdown { id }
            | ToWorker::Closed { id } => self.by_conn.contains_key(id),
        }
    }

    /// When [`Forwarder::sweep`] is next due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.next_sweep
    }

    fn stat(&self, rule: usize, c: FwdCounter, n: u64) {
        if let Some(s) = self.fwd.stats(rule) {
            s.add(c, n);
        }
    }

    fn note_deadline(&mut self, t: Instant) {
        self.next_sweep = Some(self.next_sweep.map_or(t, |n| n.min(t)));
    }

    /// Handles one event from the reactor, appending commands to `out`.
    pub fn handle(&mut self, reg: &Registry, ev: ToWorker, out: &mut Vec<Cmd>) {
        match ev {
            ev @ ToWorker::Connect { .. } => self.start(reg, ev, out),
            ToWorker::Bind { syn, id, credit } => {
                let Some(i) = self.by_syn.remove(&syn) else {
                    // Gone meanwhile (cannot happen: we answered it).
                    out.push(Cmd::Abort { id });
                    return;
                };
                let now = self.now;
                let Some(s) = self.slots[i].as_mut() else {
                    return;
                };
                s.id = Some(id);
                s.phase = Phase::Open;
                s.credit = credit;
                s.last_active = now;
                let rule = s.rule;
                self.by_conn.insert(id, i);
                self.stat(rule, FwdCounter::Accepted, 1);
                self.stat(rule, FwdCounter::Open, 1);
                self.note_idle();
                self.flush_up(reg, i, out);
                self.read_up(reg, i, out);
            }
            ToWorker::Cancel { syn } => {
                if let Some(i) = self.by_syn.remove(&syn) {
                    self.finish(reg, i, false);
                }
            }
            ToWorker::Data { id, buf } => {
                let Some(&i) = self.by_conn.get(&id) else {
                    out.push(Cmd::Consumed { id, n: buf.len() });
                    self.pool.put(buf);
                    return;
                };
                if let Some(s) = self.slots[i].as_mut() {
                    s.view.queued.fetch_add(buf.len() as u64, Ordering::Relaxed);
                    s.to_up.push_back(buf);
                }
                self.flush_up(reg, i, out);
            }
            ToWorker::PeerClosed { id } => {
                if let Some(&i) = self.by_conn.get(&id) {
                    if let Some(s) = self.slots[i].as_mut() {
                        s.client_eof = true;
                    }
                    self.flush_up(reg, i, out);
                }
            }
            ToWorker::Writable { id, credit } => {
                if let Some(&i) = self.by_conn.get(&id) {
                    if let Some(s) = self.slots[i].as_mut() {
                        s.credit += credit;
                    }
                    self.read_up(reg, i, out);
                }
            }
            ToWorker::Shutdown { id } => {
                // The reactor closes the client's side (FIN); close ours
                // toward the upstream once the queued bytes are out.
                if let Some(&i) = self.by_conn.get(&id) {
                    if let Some(s) = self.slots[i].as_mut() {
                        s.shutting = true;
                    }
                    self.flush_up(reg, i, out);
                }
            }
            ToWorker::Closed { id } => {
                if let Some(i) = self.by_conn.remove(&id) {
                    self.finish(reg, i, true);
                }
            }
            ToWorker::Report => self.report(),
            ToWorker::Accepted { id, .. } => out.push(Cmd::Abort { id }),
        }
    }

    /// [`ToWorker::Connect`]: starts the upstream connect.
    fn start(&mut self, reg: &Registry, ev: ToWorker, out: &mut Vec<Cmd>) {
        let ToWorker::Connect {
            syn,
            rule,
            ctx,
            target,
            view,
        } = ev
        else {
            return;
        };
        let (mut sock, dial) = match connect::dial(target, &self.fwd) {
            Ok(s) => s,
            Err(e) => {
                view.set(UP_CLOSED);
                let why = ConnectFailure::of(&e);
                self.stat(rule, why.counter(), 1);
                tracing::debug!("forward {} -> {target}: {e}", ctx.remote);
                out.push(Cmd::RefuseSyn { syn, why });
                return;
            }
        };
        let i = self.free.pop().unwrap_or_else(|| {
            self.slots.push(None);
            self.slots.len() - 1
        });
        if let Err(e) = reg.register(&mut sock, token(i), Interest::READABLE | Interest::WRITABLE) {
            tracing::warn!("cannot register an upstream socket: {e}");
            view.set(UP_CLOSED);
            self.free.push(i);
            self.stat(rule, FwdCounter::ConnectError, 1);
            out.push(Cmd::RefuseSyn {
                syn,
                why: ConnectFailure::Other,
            });
            return;
        }
        let deadline = self.now + self.fwd.connect_timeout;
        self.note_deadline(deadline);
        self.slots[i] = Some(Splice {
            syn,
            id: None,
            rule,
            sock,
            dial,
            client: ctx.remote,
            target,
            phase: Phase::Connecting { deadline },
            to_up: VecDeque::new(),
            off: 0,
            up_writable: false,
            client_eof: false,
            up_wr_shut: false,
            credit: 0,
            up_readable: false,
            up_eof: false,
            shutting: false,
            last_active: self.now,
            view,
        });
        self.by_syn.insert(syn, i);
    }

    /// A readiness event of the socket with `tok`.
    pub fn on_socket(&mut self, reg: &Registry, ev: &mio::event::Event, out: &mut Vec<Cmd>) {
        let Some(i) = ev.token().0.checked_sub(1) else {
            return;
        };
        let Some(s) = self.slots.get_mut(i).and_then(|s| s.as_mut()) else {
            return;
        };
        if let Phase::Connecting { .. } = s.phase {
            match s.dial.progress(&mut s.sock, self.fwd.stats(s.rule)) {
                Ok(false) => return,
                Ok(true) => {
                    // Answer the client's SYN now; bytes flow once the
                    // reactor bound its connection.
                    s.phase = Phase::Accepting;
                    s.view.set(UP_CONNECTED);
                    s.up_writable = true;
                    s.up_readable = true;
                    out.push(Cmd::AcceptSyn { syn: s.syn });
                    return;
                }
                Err(e) => {
                    self.connect_failed(reg, i, e.why, &e.what, out);
                    return;
                }
            }
        } else {
            if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                s.up_readable = true;
            }
            if ev.is_writable() || ev.is_write_closed() || ev.is_error() {
                s.up_writable = true;
            }
        }
        self.flush_up(reg, i, out);
        self.read_up(reg, i, out);
    }

    fn note_idle(&mut self) {
        if self.fwd.idle_timeout.is_some() {
            let t = self.now + IDLE_SWEEP;
            self.note_deadline(t);
        }
    }

    fn connect_failed(
        &mut self,
        reg: &Registry,
        i: usize,
        why: ConnectFailure,
        what: &str,
        out: &mut Vec<Cmd>,
    ) {
        let Some(s) = self.slots.get(i).and_then(|s| s.as_ref()) else {
            return;
        };
        let (syn, rule) = (s.syn, s.rule);
        tracing::debug!("forward {} -> {}: {what}", s.client, s.target);
        self.stat(rule, why.counter(), 1);
        out.push(Cmd::RefuseSyn { syn, why });
        self.by_syn.remove(&syn);
        self.finish(reg, i, false);
    }

    /// Removes slot `i`, closing its socket: normally when both directions
    /// finished (or it never connected), else with a RST. `client_gone`:
    /// the reactor's connection ended (counted when that was not clean).
    fn finish(&mut self, reg: &Registry, i: usize, client_gone: bool) {
        let Some(mut s) = self.slots.get_mut(i).and_then(Option::take) else {
            return;
        };
        self.free.push(i);
        s.view.set(UP_CLOSED);
        s.view.queued.store(0, Ordering::Relaxed);
        let _ = reg.deregister(&mut s.sock);
        for b in s.to_up.drain(..) {
            self.pool.put(b);
        }
        let open = s.phase == Phase::Open;
        if open {
            if let Some(st) = self.fwd.stats(s.rule) {
                st.dec(FwdCounter::Open);
            }
        }
        let clean = s.up_eof && s.up_wr_shut;
        if open && !clean {
            if client_gone && !s.shutting {
                self.stat(s.rule, FwdCounter::ClientResets, 1);
            }
            connect::abort(s.sock);
        } else {
            drop(s.sock);
        }
    }

    /// The upstream reset (or broke) the connection in slot `i`: the
    /// client gets a RST.
    fn upstream_reset(&mut self, reg: &Registry, i: usize, e: &io::Error, out: &mut Vec<Cmd>) {
        let Some(s) = self.slots.get(i).and_then(|s| s.as_ref()) else {
            return;
        };
        let (id, rule) = (s.id, s.rule);
        tracing::debug!("forward {} -> {}: upstream {e}", s.client, s.target);
        self.stat(rule, FwdCounter::UpstreamResets, 1);
        if let Some(id) = id {
            out.push(Cmd::Abort { id });
            self.by_conn.remove(&id);
        }
        self.finish(reg, i, false);
    }

    /// Writes queued client bytes upstream until done or `WouldBlock`;
    /// reports them consumed; passes the client's FIN on when all is out.
    fn flush_up(&mut self, reg: &Registry, i: usize, out: &mut Vec<Cmd>) {
        let Some(s) = self.slots.get_mut(i).and_then(|s| s.as_mut()) else {
            return;
        };
        let (Phase::Open, Some(id)) = (s.phase, s.id) else {
            return;
        };
        let mut written = 0usize;
        let mut failed = None;
        while s.up_writable {
            let Some(front) = s.to_up.front() else { break };
            match s.sock.write(&front[s.off..]) {
                Ok(0) => {
                    failed = Some(io::Error::from(io::ErrorKind::WriteZero));
                    break;
                }
                Ok(n) => {
                    written += n;
                    s.off += n;
                    if s.off >= front.len() {
                        s.off = 0;
                        if let Some(b) = s.to_up.pop_front() {
                            self.pool.put(b);
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => s.up_writable = false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        if written > 0 {
            s.last_active = self.now;
            s.view.to_up.fetch_add(written as u64, Ordering::Relaxed);
            s.view.queued.fetch_sub(written as u64, Ordering::Relaxed);
            out.push(Cmd::Consumed { id, n: written });
        }
        let rule = s.rule;
        if failed.is_none() && s.to_up.is_empty() && (s.client_eof || s.shutting) && !s.up_wr_shut {
            s.up_wr_shut = true;
            s.view.set(UP_FIN_SENT);
            if let Err(e) = s.sock.shutdown(std::net::Shutdown::Write) {
                if e.kind() != io::ErrorKind::NotConnected {
                    failed = Some(e);
                }
            }
        }
        if written > 0 {
            self.stat(rule, FwdCounter::BytesToUpstream, written as u64);
        }
        if let Some(e) = failed {
            self.upstream_reset(reg, i, &e, out);
        }
    }

    /// Reads the upstream socket while it has bytes and the client's send
    /// credit lasts, each read straight into a pooled buffer that goes to
    /// the reactor as [`Cmd::Send`]; its EOF becomes [`Cmd::Close`].
    fn read_up(&mut self, reg: &Registry, i: usize, out: &mut Vec<Cmd>) {
        let chunk = self.read_chunk;
        let Some(s) = self.slots.get_mut(i).and_then(|s| s.as_mut()) else {
            return;
        };
        let (Phase::Open, Some(id)) = (s.phase, s.id) else {
            return;
        };
        let mut got = 0usize;
        let mut failed = None;
        while s.up_readable && !s.up_eof && !s.shutting && s.credit > 0 {
            let want = s.credit.min(chunk);
            let mut buf = self.pool.get();
            buf.clear();
            buf.reserve(want);
            let spare = &mut buf.spare_capacity_mut()[..want];
            match socket2::SockRef::from(&s.sock).recv(spare) {
                Ok(0) => {
                    self.pool.put(buf);
                    s.up_eof = true;
                    s.view.set(UP_FIN_RECEIVED);
                    out.push(Cmd::Close { id });
                }
                Ok(n) => {
                    // SAFETY: recv initialized the first `n` bytes of the
                    // spare capacity (n <= want <= spare capacity).
                    unsafe { buf.set_len(n) };
                    s.credit -= n;
                    got += n;
                    out.push(Cmd::Send { id, buf });
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.pool.put(buf);
                    s.up_readable = false;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => self.pool.put(buf),
                Err(e) => {
                    self.pool.put(buf);
                    failed = Some(e);
                    break;
                }
            }
        }
        if got > 0 {
            s.last_active = self.now;
            s.view.from_up.fetch_add(got as u64, Ordering::Relaxed);
            let rule = s.rule;
            self.stat(rule, FwdCounter::BytesFromUpstream, got as u64);
        }
        if let Some(e) = failed {
            self.upstream_reset(reg, i, &e, out);
        }
    }

    /// Fails connects past their deadline and resets idle connections.
    pub fn sweep(&mut self, reg: &Registry, out: &mut Vec<Cmd>) {
        let now = self.now;
        if self.next_sweep.is_none_or(|t| t > now) {
            return;
        }
        self.next_sweep = None;
        let idle = self.fwd.idle_timeout;
        let mut due: Vec<(usize, bool)> = Vec::new();
        let mut next: Option<Instant> = None;
        let mut any_open = false;
        for (i, s) in self.slots.iter().enumerate() {
            let Some(s) = s else { continue };
            match s.phase {
                Phase::Connecting { deadline } if deadline <= now => due.push((i, true)),
                Phase::Connecting { deadline } => {
                    next = Some(next.map_or(deadline, |n| n.min(deadline)));
                }
                Phase::Accepting => {}
                Phase::Open => {
                    any_open = true;
                    if idle.is_some_and(|d| now.duration_since(s.last_active) >= d) {
                        due.push((i, false));
                    }
                }
            }
        }
        if any_open && idle.is_some() {
            let t = now + IDLE_SWEEP;
            next = Some(next.map_or(t, |n| n.min(t)));
        }
        self.next_sweep = next;
        for (i, connecting) in due {
            if connecting {
                self.connect_failed(reg, i, ConnectFailure::Timeout, "connect timed out", out);
            } else if let Some(s) = self.slots.get(i).and_then(|s| s.as_ref()) {
                let (id, rule) = (s.id, s.rule);
                self.stat(rule, FwdCounter::IdleTimeouts, 1);
                if let Some(id) = id {
                    out.push(Cmd::Abort { id });
                    self.by_conn.remove(&id);
                }
                if let Some(s) = self.slots[i].as_mut() {
                    s.shutting = true; // not a client reset
                }
                self.finish(reg, i, false);
            }
        }
    }

    /// SIGUSR1: one line per spliced connection (at most 64) on stderr.
    fn report(&self) {
        use std::io::Write as _;
        let mut err = io::stderr().lock();
        for (n, s) in self.slots.iter().flatten().enumerate() {
            if n >= 64 {
                let _ = writeln!(err, "tcpd: SIGUSR1 upstream ... and more");
                break;
            }
            let local = s
                .sock
                .local_addr()
                .map_or_else(|_| "?".to_string(), |a| a.to_string());
            let phase = match s.phase {
                Phase::Connecting { .. } => "connecting",
                Phase::Accepting => "accepting",
                Phase::Open => "open",
            };
            let queued: usize = s.to_up.iter().map(Vec::len).sum::<usize>() - s.off;
            let _ = writeln!(
                err,
                "tcpd: SIGUSR1 upstream {} via {local} > {} {phase} kernel={} \
                 queued_to_upstream={queued} credit={} client_eof={} upstream_shut_wr={} \
                 upstream_eof={} forward={}",
                s.client,
                s.target,
                connect::kernel_state(&s.sock),
                s.credit,
                s.client_eof,
                s.up_wr_shut,
                s.up_eof,
                self.fwd.rule_name(s.rule),
            );
        }
        let _ = err.flush();
    }

    /// Resets every upstream connection (the worker exits).
    pub fn close_all(&mut self, reg: &Registry) {
        self.by_conn.clear();
        self.by_syn.clear();
        for i in 0..self.slots.len() {
            if let Some(s) = self.slots[i].as_mut() {
                s.shutting = true;
            }
            self.finish(reg, i, false);
        }
    }
}
