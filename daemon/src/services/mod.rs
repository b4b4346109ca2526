//! Built-in services and the event-driven trait they implement.
//!
//! A [`Service`] makes one [`Handler`] per accepted connection. Handlers are
//! driven by events (`on_data`, `on_writable`, `on_peer_close`, `on_closed`)
//! and write through an [`Io`], which enforces the connection's send credit:
//! a handler can never queue more than the send buffer's free space, so a
//! slow peer slows the service down instead of growing a queue. The same
//! handlers run on worker threads in the daemon and inline, on one thread,
//! in replays and simulations.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant as StdInstant;

pub mod discard;
pub mod driver;
pub mod echo;
pub mod http;
pub mod inline;
pub mod metrics;
#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod testkit;

pub use discard::Discard;
pub use driver::{Driver, Step, OFFER_LIMIT, TIMER_TICK_US};
pub use echo::Echo;
pub use http::{HttpConfig, HttpService};
pub use inline::{InlineConfig, InlineHost};

/// What a handler is told about its connection when it is created.
#[derive(Clone, Copy, Debug)]
pub struct ConnCtx {
    /// Our address and port.
    pub local: SocketAddr,
    /// The peer's address and port.
    pub remote: SocketAddr,
}

/// A handler's timer: "end the connection if I am still in this state
/// `after` from now" (a request head that does not complete, an idle
/// keep-alive connection, a peer that stops reading).
///
/// The host asks [`Handler::timer`] after every call and arms a deadline
/// whenever the answer changes; an unchanged answer keeps the deadline
/// running, so a handler chooses what restarts it (a total deadline for a
/// request head: the same key until the head is complete; an inactivity
/// deadline: a key that changes with every byte of progress). When the
/// deadline passes, the host calls [`Handler::on_timeout`]. Hosts read
/// time from their driver (the endpoint's time inline and in replays, the
/// monotonic clock on worker threads), so timers replay deterministically.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timer {
    /// The state being timed; a different key re-arms the timer.
    pub key: u64,
    /// How long the state may last.
    pub after: std::time::Duration,
}

/// A service listening on one port: a factory of per-connection handlers.
pub trait Service: Send + Sync {
    /// Short name for logs ("echo", "discard", "http").
    fn name(&self) -> &'static str;
    /// A handler for a newly accepted connection.
    fn new_handler(&self, ctx: &ConnCtx) -> Box<dyn Handler>;
}

/// The per-connection, event-driven half of a service.
///
/// # The contract between a host and a handler
///
/// A host (the inline host, a worker thread) drives each handler through a
/// [`Driver`], which implements these rules once for every host:
///
/// - `on_data` is offered every unconsumed byte in order, at most
///   [`OFFER_LIMIT`] at a time. What the handler does not consume is offered
///   again (with newer bytes) on the next call, and after every `on_writable`.
/// - A handler that wants to write more than its credit allows must use the
///   credit up: `on_writable` follows once credit is available again after a
///   call that ended with zero credit. A handler that returns with credit
///   left is not woken for writing.
/// - `on_peer_close` is called once, after the peer's FIN, when every byte
///   before it has been consumed, or when the handler declined the rest
///   (returned from `on_data` with bytes unconsumed and credit left: it
///   waits for bytes that will never come).
/// - After [`Io::close`] the handler gets no more credit; after
///   [`Io::abort`] (or a reset, a timeout, the end of the connection) it gets
///   `on_closed` and no further call.
pub trait Handler: Send {
    /// Bytes arrived (in order). Returns how many of them the handler
    /// consumed; the rest is offered again, together with newer bytes, on
    /// the next call (after `on_writable`, for instance). Unconsumed bytes
    /// keep counting against the receive window: this is how a slow handler
    /// shrinks the window the peer sees.
    fn on_data(&mut self, data: &[u8], io: &mut Io<'_>) -> usize;
    /// Send credit grew (the peer acknowledged data).
    fn on_writable(&mut self, io: &mut Io<'_>);
    /// The peer sent FIN: no more data will arrive.
    fn on_peer_close(&mut self, io: &mut Io<'_>);
    /// The connection is gone (closed, reset or timed out). No more calls follow.
    fn on_closed(&mut self) {}
    /// The timer the handler wants now (see [`Timer`]); `None` (the
    /// default) for none.
    fn timer(&self) -> Option<Timer> {
        None
    }
    /// The deadline of the last [`Handler::timer`] passed. The default
    /// resets the connection.
    fn on_timeout(&mut self, io: &mut Io<'_>) {
        io.abort();
    }
}

/// A handler's view of its connection's output side for one call.
pub struct Io<'a> {
    out: &'a mut Vec<u8>,
    credit: usize,
    close: bool,
    abort: bool,
}

impl<'a> Io<'a> {
    /// An `Io` that appends to `out` at most `credit` bytes.
    pub fn new(out: &'a mut Vec<u8>, credit: usize) -> Self {
        Io {
            out,
            credit,
            close: false,
            abort: false,
        }
    }
    /// Bytes that may still be written in this call.
    pub fn credit(&self) -> usize {
        self.credit
    }
    /// Queues as much of `data` as the credit allows; returns how much.
    pub fn write(&mut self, data: &[u8]) -> usize {
        let n = data.len().min(self.credit);
        self.out.extend_from_slice(&data[..n]);
        self.credit -= n;
        n
    }
    /// Fills up to `n` bytes (bounded by the credit) in place with `f`, which
    /// gets the fresh slice; returns how many bytes were added.
    /// The fresh slice is zeroed first.
    pub fn write_with(&mut self, n: usize, f: impl FnOnce(&mut [u8])) -> usize {
        let n = n.min(self.credit);
        let start = self.out.len();
        self.out.resize(start + n, 0);
        f(&mut self.out[start..]);
        self.credit -= n;
        n
    }
    /// Like [`Io::write_with`], but `f` returns how many bytes it actually
    /// produced (at most the slice's length); only those are kept. For
    /// sources that may come up short, like a file read.
    pub fn fill(&mut self, n: usize, f: impl FnOnce(&mut [u8]) -> usize) -> usize {
        let n = n.min(self.credit);
        let start = self.out.len();
        self.out.resize(start + n, 0);
        let got = f(&mut self.out[start..]).min(n);
        self.out.truncate(start + got);
        self.credit -= got;
        got
    }
    /// Half-close after everything written so far has been sent (FIN).
    pub fn close(&mut self) {
        self.close = true;
    }
    /// Reset the connection (RST), discarding unsent data.
    pub fn abort(&mut self) {
        self.abort = true;
    }
    /// Whether `close` was called.
    pub fn wants_close(&self) -> bool {
        self.close
    }
    /// Whether `abort` was called.
    pub fn wants_abort(&self) -> bool {
        self.abort
    }
}

/// Status the reactor publishes for services (the HTTP status page and
/// `/stats`). Refreshed by the reactor a few times a second; read by
/// handlers once per request (never per packet).
#[derive(Clone, Debug, Default)]
pub struct Status {
    /// The endpoint's counters.
    pub stats: tcp::Stats,
    /// Open connections by state, as RFC 9293 names them.
    pub states: Vec<(tcp::State, usize)>,
    /// Daemon-level counters by name (device reads/writes, worker queue drops, ...).
    pub daemon: Vec<(&'static str, u64)>,
    /// Interface name.
    pub iface: String,
    /// Addresses the stack answers on.
    pub addrs: Vec<std::net::IpAddr>,
    /// MTU of the interface.
    pub mtu: usize,
    /// Services and their ports.
    pub services: Vec<(&'static str, u16)>,
    /// Forward rules (`--forward`, `--transparent`) by name, with their
    /// counters ([`crate::forward::FwdCounter`]).
    pub forwards: Vec<(String, Vec<(&'static str, u64)>)>,
}

/// The shared status board: written by the reactor, read by services.
///
/// Besides the status itself it keeps what was rendered from it (the HTTP
/// status page and `/metrics`), made on the first request after each
/// publication and shared by every request until the next one: the content
/// only changes when the reactor publishes, a few times a second, so
/// rendering it per request would only repeat the same work.
#[derive(Debug)]
pub struct StatusBoard {
    started: Option<StdInstant>,
    frozen_uptime: std::time::Duration,
    inner: Mutex<BoardInner>,
    /// Counters services bump (timeouts, refusals), by [`ServiceCounter`].
    counters: [AtomicU64; ServiceCounter::ALL.len()],
    /// The host's wall-clock time, µs since the Unix epoch (0: no clock),
    /// set by the reactor every turn and by replays from the capture.
    unix_us: AtomicU64,
}

/// What services count on the [`StatusBoard`] (shown under `daemon` in
/// `/stats` and on the status page).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServiceCounter {
    /// HTTP connections closed because a request head did not arrive within
    /// the header timeout (answered 408 when part of it had come).
    HttpHeaderTimeouts,
    /// HTTP keep-alive connections closed after the idle timeout.
    HttpIdleTimeouts,
    /// HTTP connections reset because the peer stopped reading (no send
    /// progress within the send timeout) or did not close after ours.
    HttpSendTimeouts,
    /// HTTP requests refused with a 4xx/5xx status by the parser's rules
    /// (malformed, too large, unsupported).
    HttpRefused,
}

impl ServiceCounter {
    /// Every counter, in display order.
    pub const ALL: [ServiceCounter; 4] = [
        ServiceCounter::HttpHeaderTimeouts,
        ServiceCounter::HttpIdleTimeouts,
        ServiceCounter::HttpSendTimeouts,
        ServiceCounter::HttpRefused,
    ];
    /// The counter's name in `/stats`.
    pub fn name(self) -> &'static str {
        match self {
            ServiceCounter::HttpHeaderTimeouts => "http_header_timeouts",
            ServiceCounter::HttpIdleTimeouts => "http_idle_timeouts",
            ServiceCounter::HttpSendTimeouts => "http_send_timeouts",
            ServiceCounter::HttpRefused => "http_refused",
        }
    }
}

#[derive(Debug)]
struct BoardInner {
    status: Status,
    /// Renderings of `status`, by [`Rendering`]; cleared on publish.
    rendered: [Option<Arc<Rendered>>; Rendering::COUNT],
}

/// The renderings a [`StatusBoard`] keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rendering {
    /// The HTML status page.
    StatusHtml,
    /// The `/metrics` Prometheus text ([`metrics`]).
    Metrics,
}

impl Rendering {
    const COUNT: usize = 2;
}

/// A document rendered from one published [`Status`], in pieces: the parts
/// that change per request (the uptime, the client's address) go between
/// them.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Rendered {
    /// The fixed pieces, in order.
    pub parts: Vec<Vec<u8>>,
}

impl StatusBoard {
    /// A board with an initial status.
    pub fn new(initial: Status) -> Arc<Self> {
        Arc::new(StatusBoard {
            started: Some(StdInstant::now()),
            frozen_uptime: std::time::Duration::ZERO,
            inner: Mutex::new(BoardInner::new(initial)),
            counters: Default::default(),
            unix_us: AtomicU64::new(0),
        })
    }
    /// A board whose uptime is always `uptime` and never reads a clock: for
    /// replays and tests, where the status page must come out byte for byte
    /// the same on every run.
    pub fn frozen(initial: Status, uptime: std::time::Duration) -> Arc<Self> {
        Arc::new(StatusBoard {
            started: None,
            frozen_uptime: uptime,
            inner: Mutex::new(BoardInner::new(initial)),
            counters: Default::default(),
            unix_us: AtomicU64::new(0),
        })
    }
    /// Sets the wall-clock time services see (µs since the Unix epoch): the
    /// reactor's turn time, or in a replay the capture's start plus the
    /// endpoint's time, so a `Date` header replays byte for byte.
    pub fn set_unix_us(&self, us: u64) {
        self.unix_us.store(us, Ordering::Relaxed);
    }
    /// The wall-clock time last set (µs since the Unix epoch); 0 when no
    /// clock was ever set (then services behave as a server without a
    /// clock: no `Date`, RFC 9110 §6.6.1).
    pub fn unix_us(&self) -> u64 {
        self.unix_us.load(Ordering::Relaxed)
    }
    /// Counts one `c` (a relaxed atomic add: no lock).
    pub fn count(&self, c: ServiceCounter) {
        if let Some(a) = self.counters.get(c as usize) {
            a.fetch_add(1, Ordering::Relaxed);
        }
    }
    /// The service counters with their names.
    pub fn service_counters(&self) -> [(&'static str, u64); ServiceCounter::ALL.len()] {
        ServiceCounter::ALL.map(|c| (c.name(), self.counters[c as usize].load(Ordering::Relaxed)))
    }
    /// Replaces the status (and forgets what was rendered from the old one).
    pub fn publish(&self, s: Status) {
        if let Ok(mut g) = self.inner.lock() {
            g.status = s;
            g.rendered = Default::default();
        }
    }
    /// A copy of the current status.
    pub fn snapshot(&self) -> Status {
        self.inner
            .lock()
            .map(|g| g.status.clone())
            .unwrap_or_default()
    }
    /// `f` of the current status, under the board's lock (for a reader
    /// that would otherwise copy the status out).
    pub fn with_status<R>(&self, f: impl FnOnce(&Status) -> R) -> R {
        match self.inner.lock() {
            Ok(g) => f(&g.status),
            Err(_) => f(&Status::default()),
        }
    }
    /// The rendering `which` of the current status: the one made since the
    /// last publication, or a new one made by `render` (under the board's
    /// lock, so it is made once per publication).
    pub fn rendered(
        &self,
        which: Rendering,
        render: impl FnOnce(&Status) -> Rendered,
    ) -> Arc<Rendered> {
        let Ok(mut g) = self.inner.lock() else {
            return Arc::new(render(&Status::default()));
        };
        let slot = which as usize;
        if let Some(Some(r)) = g.rendered.get(slot) {
            return Arc::clone(r);
        }
        let r = Arc::new(render(&g.status));
        if let Some(s) = g.rendered.get_mut(slot) {
            *s = Some(Arc::clone(&r));
        }
        r
    }
    /// Time since the board was made (the daemon's uptime).
    pub fn uptime(&self) -> std::time::Duration {
        match self.started {
            Some(t) => t.elapsed(),
            None => self.frozen_uptime,
        }
    }
}

impl BoardInner {
    fn new(status: Status) -> Self {
        BoardInner {
            status,
            rendered: Default::default(),
        }
    }
}

/// Every top-level counter of [`tcp::Stats`] with its name (the drop
/// counters are in [`tcp::Stats::drops`]), and the ICMP error counters
/// ([`tcp::Stats::icmp`], named `icmp_*`) and the reassembly counters
/// ([`tcp::Stats::reasm`], `reasm_*`) and the deferred-accept counters
/// ([`tcp::Stats::defer`], `syn_*`) and the ICMP errors sent
/// ([`tcp::Stats::icmp_out`]) and the auto-tuning counters
/// ([`tcp::Stats::autotune`]) and the MTU probing counters
/// ([`tcp::Stats::mtup`], `mtup_*`), for `/stats` and logs.
pub fn stats_fields(s: &tcp::Stats) -> [(&'static str, u64); 81] {
    let i = s.icmp.named();
    let r = s.reasm.named();
    let d = s.defer.named();
    let o = s.icmp_out.named();
    let t = s.autotune.named();
    let m = s.mtup.named();
    [
        ("packets_in", s.packets_in),
        ("packets_out", s.packets_out),
        ("bytes_in", s.bytes_in),
        ("bytes_out", s.bytes_out),
        ("segments_in", s.segments_in),
        ("segments_out", s.segments_out),
        ("retransmits", s.retransmits),
        ("rto_timeouts", s.rto_timeouts),
        ("fast_retransmits", s.fast_retransmits),
        ("rst_out", s.rst_out),
        ("rst_in", s.rst_in),
        ("challenge_acks", s.challenge_acks),
        ("challenge_acks_suppressed", s.challenge_acks_suppressed),
        ("syn_cookies_sent", s.syn_cookies_sent),
        ("syn_cookies_ok", s.syn_cookies_ok),
        ("syn_cookies_bad", s.syn_cookies_bad),
        ("icmp_echo", s.icmp_echo),
        ("passive_opens", s.passive_opens),
        ("active_opens", s.active_opens),
        ("closed", s.closed),
        ("timeouts", s.timeouts),
        ("ooo_segments", s.ooo_segments),
        ("out_of_window", s.out_of_window),
        ("window_updates_repeated", s.window_updates_repeated),
        ("paws_disordered_acks", s.paws_disordered_acks),
        ("dsacks_in", s.dsacks_in),
        ("spurious_recoveries", s.spurious_recoveries),
        ("eifel_undos", s.eifel_undos),
        ("rack_marked_lost", s.rack_marked_lost),
        ("rack_lost_retransmits", s.rack_lost_retransmits),
        ("rack_reo_timeouts", s.rack_reo_timeouts),
        ("tlp_probes", s.tlp_probes),
        ("tlp_repaired", s.tlp_repaired),
        ("frto_spurious_rtos", s.frto_spurious_rtos),
        ("mem_pressure", s.mem_pressure),
        ("mem_grow_refused", s.mem_grow_refused),
        ("mem_rcv_drops", s.mem_rcv_drops),
        ("mem_send_clamped", s.mem_send_clamped),
        ("mem_window_clamped", s.mem_window_clamped),
        t[0],
        t[1],
        t[2],
        t[3],
        i[0],
        i[1],
        i[2],
        i[3],
        i[4],
        i[5],
        i[6],
        i[7],
        i[8],
        i[9],
        i[10],
        i[11],
        r[0],
        r[1],
        r[2],
        r[3],
        r[4],
        r[5],
        r[6],
        r[7],
        r[8],
        d[0],
        d[1],
        d[2],
        d[3],
        d[4],
        d[5],
        d[6],
        d[7],
        o[0],
        o[1],
        o[2],
        o[3],
        o[4],
        m[0],
        m[1],
        m[2],
        m[3],
    ]
}
