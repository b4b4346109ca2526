//! [`InlineHost`]: runs service handlers on the caller's thread, directly
//! against a [`tcp::Endpoint`].
//!
//! Used by `tcpd --workers 0` (the reactor calls [`InlineHost::process_events`]
//! after feeding packets and timers to the endpoint) and by the replay tool,
//! so it is deterministic: it reads no clock, draws no random numbers, and
//! visits connections in event order or sorted by [`ConnId`], never in hash
//! order.
//!
//! Backpressure: bytes are read with [`tcp::Endpoint::recv_hold`] and
//! released only once the handler consumed them, so a slow handler shrinks
//! the window the peer sees. A handler's send credit is the connection's
//! free send-buffer space ([`tcp::Endpoint::send_capacity`]), so what it
//! writes always fits.
//!
//! Handler timers ([`super::Timer`]) run on the endpoint's time
//! ([`Endpoint::now`]): the caller asks [`InlineHost::poll_timeout`] when to
//! come back and calls [`InlineHost::handle_timeout`] then, so a replay in
//! virtual time fires them at the same instants as the daemon did.

use super::driver::{Driver, Step, OFFER_LIMIT};
use super::{ConnCtx, Service};
use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use tcp::{ConnId, Endpoint, Event, Instant};

/// Limits of the inline host.
#[derive(Clone, Debug)]
pub struct InlineConfig {
    /// Size of the reusable receive buffer: the most bytes read from one
    /// connection per `recv_hold` call. Default 64 KiB.
    pub read_chunk: usize,
    /// Handlers waiting for send credit are woken (when the endpoint did not
    /// report [`Event::Writable`] itself) once the free send-buffer space is
    /// at least `send_buffer / writable_divisor`. Default 4.
    pub writable_divisor: usize,
    /// Most rounds (drain events, wake writers) per
    /// [`InlineHost::process_events`] call, a guard against livelock.
    /// Default 64.
    pub max_rounds: usize,
    /// Turn Nagle's algorithm off on every accepted connection
    /// ([`Endpoint::set_nodelay`]), as the reactor does for connections it
    /// hands to worker threads when `daemon::Config::nodelay` is set: the
    /// services write whole answers at once. Default true (the daemon's
    /// default).
    pub nodelay: bool,
}

impl Default for InlineConfig {
    fn default() -> Self {
        InlineConfig {
            read_chunk: OFFER_LIMIT,
            writable_divisor: 4,
            max_rounds: 64,
            nodelay: true,
        }
    }
}

/// One accepted connection.
struct Entry {
    driver: Driver,
    /// Bytes the endpoint did not take (should not happen: credit is the
    /// send capacity); sent before anything else.
    unsent: Vec<u8>,
    /// The handler closed while `unsent` was not empty: close once flushed.
    close_pending: bool,
    /// The endpoint reported [`Event::PeerClosed`].
    fin_event: bool,
    /// The driver was told about the FIN.
    eof_told: bool,
    /// The id is in the host's `blocked` list.
    listed: bool,
}

/// Runs handlers inline against an endpoint. See the module documentation.
pub struct InlineHost {
    config: InlineConfig,
    /// Services by port, sorted by port.
    services: Vec<(u16, Arc<dyn Service>)>,
    conns: HashMap<ConnId, Entry>,
    /// Connections whose handler waits for send credit (may hold stale ids).
    blocked: Vec<ConnId>,
    /// Scratch for walking `blocked`.
    blocked_scratch: Vec<ConnId>,
    /// Reusable receive buffer.
    scratch: Vec<u8>,
    /// Reusable output buffer.
    out: Vec<u8>,
    /// Connections accepted so far.
    accepted: u64,
    /// Bytes handed to handlers and bytes they wrote, so far.
    bytes: Traffic,
    /// The last `process_events` ran out of rounds.
    saturated: bool,
    /// Handler deadlines.
    timers: Timers,
    /// Handler timers that fired so far.
    timeouts: u64,
}

/// The host's time and its earliest handler deadline.
#[derive(Clone, Copy, Debug, Default)]
struct Timers {
    /// The latest time seen: the endpoint's, or a `handle_timeout` call's.
    now: Instant,
    /// No handler deadline comes before this one (it may be stale: a
    /// sweep finds out and recomputes it).
    next: Option<Instant>,
}

impl Timers {
    fn note(&mut self, d: Option<Instant>) {
        if let Some(d) = d {
            self.next = Some(self.next.map_or(d, |n| n.min(d)));
        }
    }
}

/// Bytes between the endpoint and the handlers.
#[derive(Clone, Copy, Debug, Default)]
struct Traffic {
    to_services: u64,
    from_services: u64,
}

impl core::fmt::Debug for InlineHost {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("InlineHost")
            .field("ports", &self.ports())
            .field("connections", &self.conns.len())
            .field("accepted", &self.accepted)
            .finish()
    }
}

impl InlineHost {
    /// A host with no services.
    pub fn new(config: InlineConfig) -> Self {
        let chunk = config.read_chunk.clamp(1, OFFER_LIMIT);
        InlineHost {
            config,
            services: Vec::new(),
            conns: HashMap::new(),
            blocked: Vec::new(),
            blocked_scratch: Vec::new(),
            scratch: vec![0; chunk],
            out: Vec::new(),
            accepted: 0,
            bytes: Traffic::default(),
            saturated: false,
            timers: Timers::default(),
            timeouts: 0,
        }
    }

    /// Serves `service` on `port` (replacing any service on that port).
    /// Listening is separate: see [`InlineHost::listen`].
    pub fn add_service(&mut self, port: u16, service: Arc<dyn Service>) {
        match self.services.binary_search_by_key(&port, |(p, _)| *p) {
            Ok(i) => self.services[i].1 = service,
            Err(i) => self.services.insert(i, (port, service)),
        }
    }

    /// Opens a listener on the endpoint for every service's port.
    pub fn listen(&self, ep: &mut Endpoint, backlog: usize) -> Result<(), tcp::Error> {
        for (port, _) in &self.services {
            ep.listen(*port, backlog)?;
        }
        Ok(())
    }

    /// The ports with a service, ascending.
    pub fn ports(&self) -> Vec<u16> {
        self.services.iter().map(|(p, _)| *p).collect()
    }

    /// Connections with a live handler.
    pub fn connection_count(&self) -> usize {
        self.conns.len()
    }

    /// Bytes handed to the handlers so far.
    pub fn bytes_to_services(&self) -> u64 {
        self.bytes.to_services
    }

    /// Bytes the handlers wrote so far.
    pub fn bytes_from_services(&self) -> u64 {
        self.bytes.from_services
    }

    /// When [`InlineHost::handle_timeout`] is next due (endpoint time).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next
    }

    /// Handler timers that fired so far.
    pub fn timeouts(&self) -> u64 {
        self.timeouts
    }

    /// Fires the handler timers due at `now` (in connection order), then
    /// finds the next deadline. Call it when [`InlineHost::poll_timeout`]
    /// has passed, after the endpoint's own timers and before
    /// [`InlineHost::process_events`].
    pub fn handle_timeout(&mut self, ep: &mut Endpoint, now: Instant) {
        self.timers.now = self.timers.now.max(now).max(ep.now());
        if self.timers.next.is_none_or(|d| d > now) {
            return;
        }
        self.timers.next = None;
        for id in self.connections() {
            let Some(e) = self.conns.get_mut(&id) else {
                continue;
            };
            if e.driver.deadline().is_some_and(|d| d <= now) {
                self.timeouts += 1;
                let credit = Self::credit(ep, id, e);
                let step = e.driver.timeout(now, &mut self.out, credit);
                self.bytes.from_services += self.out.len() as u64;
                if !Self::apply(
                    ep,
                    id,
                    e,
                    step,
                    &mut self.out,
                    &mut self.blocked,
                    &mut self.timers,
                ) {
                    self.conns.remove(&id);
                    continue;
                }
            }
            let d = self.conns.get(&id).and_then(|e| e.driver.deadline());
            self.timers.note(d);
        }
    }

    /// Connections accepted since the host was made.
    pub fn accepted(&self) -> u64 {
        self.accepted
    }

    /// Live connection handles, sorted.
    pub fn connections(&self) -> Vec<ConnId> {
        let mut v: Vec<ConnId> = self.conns.keys().copied().collect();
        v.sort_unstable();
        v
    }

    /// Drains the endpoint's events and drives the handlers until nothing is
    /// left to do: accepts incoming connections, reads and offers data,
    /// sends what handlers write, delivers FINs, wakes handlers waiting for
    /// send credit. Returns the number of events handled. Call it after
    /// every [`Endpoint::handle`] / [`Endpoint::handle_timeout`] batch, then
    /// drain [`Endpoint::poll_transmit`].
    pub fn process_events(&mut self, ep: &mut Endpoint) -> usize {
        let mut events = 0;
        self.saturated = true;
        for _ in 0..self.config.max_rounds.max(1) {
            let mut progress = false;
            while let Some(ev) = ep.poll_event() {
                events += 1;
                progress = true;
                self.handle_event(ep, ev);
            }
            if self.wake_blocked(ep) {
                progress = true;
            }
            if !progress {
                self.saturated = false;
                break;
            }
        }
        events
    }

    /// Whether the last [`InlineHost::process_events`] stopped at
    /// [`InlineConfig::max_rounds`] while handlers were still making
    /// progress: events may be left in the endpoint, and the caller should
    /// call it again soon (after transmitting) rather than sleep.
    pub fn saturated(&self) -> bool {
        self.saturated
    }

    /// Half-closes every connection (daemon shutdown: FIN after what is
    /// queued). Handlers get no more credit; their connections end on their
    /// own (the peer's FIN) or by [`InlineHost::abort_all`].
    pub fn close_all(&mut self, ep: &mut Endpoint) {
        for id in self.connections() {
            if let Some(e) = self.conns.get_mut(&id) {
                if !e.driver.is_closing() {
                    e.driver.shutdown();
                    let _ = ep.close(id);
                }
            }
        }
    }

    /// Resets every connection and drops every handler (end of the grace
    /// period at shutdown).
    pub fn abort_all(&mut self, ep: &mut Endpoint) {
        for id in self.connections() {
            if let Some(mut e) = self.conns.remove(&id) {
                let _ = ep.abort(id);
                e.driver.closed();
            }
        }
        self.blocked.clear();
    }

    fn handle_event(&mut self, ep: &mut Endpoint, ev: Event) {
        match ev {
            Event::Incoming { port } => self.accept_all(ep, port),
            Event::Readable(id) => self.drive_read(ep, id),
            Event::Writable(id) => self.drive_writable(ep, id),
            Event::PeerClosed(id) => {
                if let Some(e) = self.conns.get_mut(&id) {
                    e.fin_event = true;
                }
                self.drive_read(ep, id);
            }
            Event::Reset(id)
            | Event::TimedOut(id)
            | Event::Unreachable(id, _)
            | Event::Closed(id) => {
                if let Some(mut e) = self.conns.remove(&id) {
                    e.driver.closed();
                }
            }
            // The host makes no active opens.
            Event::Connected(_) => {}
            // The host opens no deferred listeners.
            Event::Syn(_) | Event::SynExpired(_) => {}
        }
    }

    fn accept_all(&mut self, ep: &mut Endpoint, port: u16) {
        while let Some(id) = ep.accept(port) {
            let service = match self.services.binary_search_by_key(&port, |(p, _)| *p) {
                Ok(i) => Arc::clone(&self.services[i].1),
                Err(_) => {
                    tracing::debug!(%id, port, "no service on port, resetting");
                    let _ = ep.abort(id);
                    continue;
                }
            };
            let unspecified = SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0));
            let ctx = match ep.info(id) {
                Ok(i) => ConnCtx {
                    local: i.local,
                    remote: i.remote,
                },
                Err(_) => ConnCtx {
                    local: unspecified,
                    remote: unspecified,
                },
            };
            if self.config.nodelay {
                let _ = ep.set_nodelay(id, true);
            }
            let mut driver = Driver::new(service.new_handler(&ctx));
            self.timers.now = self.timers.now.max(ep.now());
            self.timers.note(driver.rearm(self.timers.now));
            self.accepted += 1;
            self.conns.insert(
                id,
                Entry {
                    driver,
                    unsent: Vec::new(),
                    close_pending: false,
                    fin_event: false,
                    eof_told: false,
                    listed: false,
                },
            );
            // Data (even a FIN) may have come with the handshake's last ACK,
            // before the application knew the handle.
            self.drive_read(ep, id);
        }
    }

    /// The credit for a connection's handler now.
    fn credit(ep: &Endpoint, id: ConnId, e: &Entry) -> usize {
        if !e.unsent.is_empty() {
            return 0;
        }
        ep.send_capacity(id).unwrap_or(0)
    }

    /// Reads what the connection holds and offers it to the handler.
    fn drive_read(&mut self, ep: &mut Endpoint, id: ConnId) {
        let Some(e) = self.conns.get_mut(&id) else {
            return;
        };
        let bytes = &mut self.bytes;
        let mut eof = false;
        loop {
            let room = e.driver.room().min(self.scratch.len());
            if room == 0 {
                break;
            }
            match ep.recv_hold(id, &mut self.scratch[..room]) {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(n) => {
                    bytes.to_services += n as u64;
                    let credit = Self::credit(ep, id, e);
                    let step = e.driver.data(&self.scratch[..n], &mut self.out, credit);
                    bytes.from_services += self.out.len() as u64;
                    if !Self::apply(
                        ep,
                        id,
                        e,
                        step,
                        &mut self.out,
                        &mut self.blocked,
                        &mut self.timers,
                    ) {
                        self.conns.remove(&id);
                        return;
                    }
                }
                Err(tcp::Error::WouldBlock) => {
                    // Every byte before a reported FIN has been read.
                    eof = e.fin_event;
                    break;
                }
                Err(_) => break,
            }
        }
        if eof && !e.eof_told {
            e.eof_told = true;
            let credit = Self::credit(ep, id, e);
            let step = e.driver.eof(&mut self.out, credit);
            self.bytes.from_services += self.out.len() as u64;
            if !Self::apply(
                ep,
                id,
                e,
                step,
                &mut self.out,
                &mut self.blocked,
                &mut self.timers,
            ) {
                self.conns.remove(&id);
            }
        }
    }

    /// Send credit came back: flush, wake the handler, then read again
    /// (bytes left in the endpoint while the handler's offer was full).
    fn drive_writable(&mut self, ep: &mut Endpoint, id: ConnId) {
        let Some(e) = self.conns.get_mut(&id) else {
            return;
        };
        if !e.unsent.is_empty() {
            Self::flush_unsent(ep, id, e);
        }
        let credit = Self::credit(ep, id, e);
        let step = e.driver.writable(&mut self.out, credit);
        self.bytes.from_services += self.out.len() as u64;
        if !Self::apply(
            ep,
            id,
            e,
            step,
            &mut self.out,
            &mut self.blocked,
            &mut self.timers,
        ) {
            self.conns.remove(&id);
            return;
        }
        self.drive_read(ep, id);
    }

    /// Wakes handlers that wait for credit when the endpoint has room again.
    /// Returns whether any was woken.
    fn wake_blocked(&mut self, ep: &mut Endpoint) -> bool {
        if self.blocked.is_empty() {
            return false;
        }
        let threshold = (ep.config().send_buffer / self.config.writable_divisor.max(1)).max(1);
        core::mem::swap(&mut self.blocked, &mut self.blocked_scratch);
        self.blocked_scratch.sort_unstable();
        self.blocked_scratch.dedup();
        let mut woke = false;
        let mut i = 0;
        while i < self.blocked_scratch.len() {
            let id = self.blocked_scratch[i];
            i += 1;
            let Some(e) = self.conns.get_mut(&id) else {
                continue;
            };
            e.listed = false;
            if !e.driver.blocked() && e.unsent.is_empty() {
                continue;
            }
            let cap = ep.send_capacity(id).unwrap_or(0);
            if cap >= threshold {
                woke = true;
                self.drive_writable(ep, id);
            } else if let Some(e) = self.conns.get_mut(&id) {
                e.listed = true;
                self.blocked.push(id);
            }
        }
        self.blocked_scratch.clear();
        woke
    }

    fn flush_unsent(ep: &mut Endpoint, id: ConnId, e: &mut Entry) {
        match ep.send(id, &e.unsent) {
            Ok(n) => {
                e.unsent.drain(..n.min(e.unsent.len()));
            }
            Err(_) => e.unsent.clear(),
        }
        if e.unsent.is_empty() {
            // An idle connection holds no storage (see daemon::Config::mem_release_ms).
            e.unsent = Vec::new();
        }
        if e.unsent.is_empty() && e.close_pending {
            e.close_pending = false;
            let _ = ep.close(id);
        }
    }

    /// Carries out a driver step on the connection. Returns false when the
    /// connection is gone (aborted) and its entry must be removed.
    fn apply(
        ep: &mut Endpoint,
        id: ConnId,
        e: &mut Entry,
        step: Step,
        out: &mut Vec<u8>,
        blocked: &mut Vec<ConnId>,
        timers: &mut Timers,
    ) -> bool {
        timers.now = timers.now.max(ep.now());
        timers.note(e.driver.rearm(timers.now));
        if step.consumed > 0 {
            let _ = ep.release(id, step.consumed);
        }
        if step.abort {
            out.clear();
            let _ = ep.abort(id);
            return false;
        }
        if !out.is_empty() {
            match ep.send(id, out) {
                Ok(n) if n < out.len() => {
                    tracing::debug!(%id, wanted = out.len(), took = n, "short send within credit");
                    e.unsent.extend_from_slice(&out[n..]);
                }
                Ok(_) => {}
                Err(err) => tracing::debug!(%id, %err, "send failed"),
            }
            out.clear();
        }
        if step.close {
            if e.unsent.is_empty() {
                let _ = ep.close(id);
            } else {
                e.close_pending = true;
            }
        }
        if (e.driver.blocked() || !e.unsent.is_empty()) && !e.listed {
            e.listed = true;
            blocked.push(id);
        }
        true
    }
}
