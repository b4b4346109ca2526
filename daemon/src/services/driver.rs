//! [`Driver`]: the host side of the [`Handler`] contract, written once for
//! every host (the inline host, worker threads, tests).
//!
//! A host owns one `Driver` per connection and turns its events into calls:
//! new bytes → [`Driver::data`], send credit back → [`Driver::writable`],
//! the peer's FIN after its last byte → [`Driver::eof`], the end of the
//! connection → [`Driver::closed`]. Each call returns a [`Step`] telling the
//! host what to do on the connection (release consumed bytes, close, abort)
//! and appends what the handler wrote to the host's output buffer. The
//! driver keeps the bytes a handler did not consume (at most
//! [`OFFER_LIMIT`]) and offers them again, decides when `on_peer_close` is
//! due and whether the handler waits for credit ([`Driver::blocked`]).

use super::{Handler, Io, Timer};

/// The most unconsumed bytes a host offers a handler at once. A handler that
/// declines bytes (a partial HTTP request) must be able to decide with this
/// many. Hosts pass at most [`Driver::room`] new bytes per call, so this is
/// also the per-connection ceiling of the driver's own buffer.
pub const OFFER_LIMIT: usize = 64 * 1024;

/// Handler deadlines are rounded up to a multiple of this many µs of the
/// host's time, so that connections whose deadlines fall close together
/// expire in one sweep of the host's table (hosts look at every timed
/// connection when the earliest deadline passes): at most ten sweeps a
/// second, whatever the number of connections.
pub const TIMER_TICK_US: u64 = 100_000;

/// Capacity of the pending buffer kept once it is drained.
const KEEP_CAPACITY: usize = 4096;

/// What the host must do after a driver call.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Step {
    /// Bytes of the stream consumed by the handler during this call: release
    /// them to the connection (they stop counting against the window).
    pub consumed: usize,
    /// The handler asked to half-close (FIN after the bytes written so far).
    /// Reported once.
    pub close: bool,
    /// The handler asked to reset the connection. The driver has already
    /// called `on_closed`; the host drops the driver after aborting.
    pub abort: bool,
}

/// One connection's handler with the state a host needs to drive it.
pub struct Driver {
    handler: Box<dyn Handler>,
    /// Bytes offered and not consumed, in stream order.
    pending: Vec<u8>,
    /// The host reported the FIN (every byte before it has been passed in).
    eof: bool,
    /// `on_peer_close` has been called.
    fin_delivered: bool,
    /// The last `on_data` left bytes unconsumed with credit to spare.
    declined: bool,
    /// The last call ended with zero credit: the handler waits for
    /// `on_writable`.
    blocked: bool,
    /// The handler called `close`: no more credit.
    closing: bool,
    /// Aborted or closed: no more handler calls.
    done: bool,
    /// The handler's timer when the deadline was armed.
    timer: Option<Timer>,
    /// When the handler's timer expires (host time).
    deadline: Option<tcp::Instant>,
}

impl core::fmt::Debug for Driver {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Driver")
            .field("pending", &self.pending.len())
            .field("eof", &self.eof)
            .field("fin_delivered", &self.fin_delivered)
            .field("blocked", &self.blocked)
            .field("closing", &self.closing)
            .field("done", &self.done)
            .finish()
    }
}

impl Driver {
    /// Drives `handler`.
    pub fn new(handler: Box<dyn Handler>) -> Self {
        Driver {
            handler,
            pending: Vec::new(),
            eof: false,
            fin_delivered: false,
            declined: false,
            blocked: false,
            closing: false,
            done: false,
            timer: None,
            deadline: None,
        }
    }

    /// Brings the handler's deadline up to date at host time `now`: call it
    /// after every other call (and once after creating the driver). A new
    /// [`Handler::timer`] arms a deadline `after` from `now` (rounded up to
    /// [`TIMER_TICK_US`]); an unchanged one keeps the running deadline.
    /// Returns the deadline.
    pub fn rearm(&mut self, now: tcp::Instant) -> Option<tcp::Instant> {
        if self.done {
            self.timer = None;
            self.deadline = None;
            return None;
        }
        let t = self.handler.timer();
        if t != self.timer || (t.is_some() && self.deadline.is_none()) {
            self.timer = t;
            self.deadline = t.map(|t| {
                let us = now
                    .as_micros()
                    .saturating_add(u64::try_from(t.after.as_micros()).unwrap_or(u64::MAX));
                tcp::Instant::from_micros(us.div_ceil(TIMER_TICK_US).saturating_mul(TIMER_TICK_US))
            });
        }
        self.deadline
    }

    /// The handler's deadline, if it has one.
    pub fn deadline(&self) -> Option<tcp::Instant> {
        self.deadline
    }

    /// Calls [`Handler::on_timeout`] if the deadline has passed at `now`
    /// (else does nothing). Re-arm afterwards with [`Driver::rearm`].
    pub fn timeout(&mut self, now: tcp::Instant, out: &mut Vec<u8>, credit: usize) -> Step {
        if self.done || self.deadline.is_none_or(|d| d > now) {
            return Step::default();
        }
        self.deadline = None;
        self.timer = None;
        let mut io = Io::new(out, if self.closing { 0 } else { credit });
        self.handler.on_timeout(&mut io);
        self.finish(io, 0)
    }

    /// How many new bytes the host may pass to the next [`Driver::data`]
    /// call. Zero while the handler sits on [`OFFER_LIMIT`] unconsumed bytes:
    /// the host then leaves further bytes in the connection's receive buffer
    /// (the window closes) until a [`Driver::writable`] lets the handler
    /// consume.
    pub fn room(&self) -> usize {
        if self.done {
            return OFFER_LIMIT;
        }
        OFFER_LIMIT.saturating_sub(self.pending.len())
    }

    /// Bytes offered to the handler and not yet consumed.
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// Whether the handler used up its credit in its last call and waits for
    /// [`Driver::writable`] (the host should call it once the connection can
    /// take more bytes).
    pub fn blocked(&self) -> bool {
        self.blocked
    }

    /// Whether the handler (or [`Driver::shutdown`]) closed its direction.
    pub fn is_closing(&self) -> bool {
        self.closing
    }

    /// Whether the handler is finished (aborted or closed); nothing more is
    /// delivered to it.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Whether `on_peer_close` has been delivered.
    pub fn peer_close_delivered(&self) -> bool {
        self.fin_delivered
    }

    /// New in-order bytes arrived. `credit` is how many bytes the connection
    /// can take now; what the handler writes is appended to `out`.
    pub fn data(&mut self, new: &[u8], out: &mut Vec<u8>, credit: usize) -> Step {
        if self.done {
            // Nobody listens any more: let the bytes go.
            return Step {
                consumed: new.len(),
                ..Step::default()
            };
        }
        let mut io = Io::new(out, if self.closing { 0 } else { credit });
        let consumed = self.offer(new, &mut io);
        self.maybe_peer_close(&mut io);
        self.finish(io, consumed)
    }

    /// The connection can take bytes again (`credit` of them). Calls
    /// `on_writable`, then offers the unconsumed bytes again.
    pub fn writable(&mut self, out: &mut Vec<u8>, credit: usize) -> Step {
        if self.done {
            return Step::default();
        }
        let mut io = Io::new(out, if self.closing { 0 } else { credit });
        self.handler.on_writable(&mut io);
        let mut consumed = 0;
        if !self.pending.is_empty() && !io.wants_abort() {
            consumed = self.offer(&[], &mut io);
        }
        self.maybe_peer_close(&mut io);
        self.finish(io, consumed)
    }

    /// The peer's FIN arrived and every byte before it has been passed to
    /// [`Driver::data`]. Delivers `on_peer_close` now or, if the handler
    /// still holds unconsumed bytes it may yet consume, later.
    pub fn eof(&mut self, out: &mut Vec<u8>, credit: usize) -> Step {
        self.eof = true;
        if self.done {
            return Step::default();
        }
        let mut io = Io::new(out, if self.closing { 0 } else { credit });
        self.maybe_peer_close(&mut io);
        self.finish(io, 0)
    }

    /// The host stops the handler's output (daemon shutdown: the host closes
    /// the connection itself). The handler gets no more credit.
    pub fn shutdown(&mut self) {
        self.closing = true;
        self.blocked = false;
    }

    /// The connection is gone (closed, reset, timed out, aborted): calls
    /// `on_closed` once.
    pub fn closed(&mut self) {
        if !self.done {
            self.done = true;
            self.blocked = false;
            self.pending = Vec::new();
            self.handler.on_closed();
        }
    }

    /// Offers `new` (after the pending bytes) to the handler until it stops
    /// making progress; returns how many bytes it consumed.
    fn offer(&mut self, new: &[u8], io: &mut Io<'_>) -> usize {
        let mut total = 0;
        if self.pending.is_empty() {
            if new.is_empty() {
                return 0;
            }
            // Fast path: hand the host's buffer over without a copy.
            let c = self.handler.on_data(new, io).min(new.len());
            total += c;
            self.pending.extend_from_slice(&new[c..]);
            if c == 0 || self.pending.is_empty() || io.credit() == 0 || io.wants_abort() {
                self.note_decline(io);
                return total;
            }
        } else {
            self.pending.extend_from_slice(new);
        }
        // Offer the leftovers again while the handler keeps consuming: a
        // handler may take one request per call.
        while !self.pending.is_empty() && !io.wants_abort() {
            let c = self
                .handler
                .on_data(&self.pending, io)
                .min(self.pending.len());
            if c == 0 {
                break;
            }
            total += c;
            self.pending.copy_within(c.., 0);
            self.pending.truncate(self.pending.len() - c);
            if io.credit() == 0 {
                break;
            }
        }
        self.note_decline(io);
        total
    }

    fn note_decline(&mut self, io: &Io<'_>) {
        self.declined = !self.pending.is_empty() && io.credit() > 0;
    }

    /// Delivers `on_peer_close` when it is due (see the [`Handler`] contract).
    fn maybe_peer_close(&mut self, io: &mut Io<'_>) {
        if self.eof
            && !self.fin_delivered
            && !io.wants_abort()
            && (self.pending.is_empty() || self.declined)
        {
            self.fin_delivered = true;
            self.handler.on_peer_close(io);
        }
    }

    fn finish(&mut self, io: Io<'_>, consumed: usize) -> Step {
        let mut step = Step {
            consumed,
            ..Step::default()
        };
        if io.wants_abort() {
            step.abort = true;
            self.closed();
            return step;
        }
        if io.wants_close() && !self.closing {
            step.close = true;
            self.closing = true;
        }
        self.blocked = !self.closing && io.credit() == 0;
        if self.pending.is_empty() && self.pending.capacity() > KEEP_CAPACITY {
            // Give a drained backlog's memory back: an idle connection costs
            // no buffer (one allocation per stall, not per packet).
            self.pending = Vec::new();
        }
        step
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// A handler that consumes at most `take` bytes per call, writes
    /// `reply` bytes per call, and records what it saw.
    struct Probe {
        take: usize,
        log: Arc<Mutex<Vec<String>>>,
        abort_on_data: bool,
        overclaim: bool,
    }

    impl Handler for Probe {
        fn on_data(&mut self, data: &[u8], io: &mut Io<'_>) -> usize {
            self.log
                .lock()
                .unwrap()
                .push(format!("data {} credit {}", data.len(), io.credit()));
            if self.abort_on_data {
                io.abort();
                return 0;
            }
            if self.overclaim {
                return data.len() + 100;
            }
            data.len().min(self.take)
        }
        fn on_writable(&mut self, io: &mut Io<'_>) {
            self.log
                .lock()
                .unwrap()
                .push(format!("writable {}", io.credit()));
        }
        fn on_peer_close(&mut self, io: &mut Io<'_>) {
            self.log.lock().unwrap().push("peer_close".into());
            io.close();
        }
        fn on_closed(&mut self) {
            self.log.lock().unwrap().push("closed".into());
        }
    }

    fn probe(take: usize) -> (Driver, Arc<Mutex<Vec<String>>>) {
        let log = Arc::new(Mutex::new(Vec::new()));
        let h = Probe {
            take,
            log: log.clone(),
            abort_on_data: false,
            overclaim: false,
        };
        (Driver::new(Box::new(h)), log)
    }

    #[test]
    fn leftovers_are_offered_again_with_new_bytes() {
        let (mut d, log) = probe(3);
        let mut out = Vec::new();
        // Consumes 3 per call; with credit left it is offered again until
        // it stops making progress.
        let s = d.data(b"abcdefgh", &mut out, 10);
        assert_eq!(s.consumed, 8);
        assert_eq!(d.pending_len(), 0);
        assert_eq!(
            *log.lock().unwrap(),
            ["data 8 credit 10", "data 5 credit 10", "data 2 credit 10"]
        );
    }

    #[test]
    fn peer_close_waits_for_consumption_unless_declined() {
        let (mut d, log) = probe(0);
        let mut out = Vec::new();
        let s = d.data(b"partial", &mut out, 0);
        assert_eq!(s.consumed, 0);
        assert!(d.blocked(), "zero credit: waits for writable");
        // FIN while the handler might still consume with credit: not yet.
        let s = d.eof(&mut out, 0);
        assert!(!s.close);
        assert!(!d.peer_close_delivered());
        // With credit it still declines: the bytes will never be consumed,
        // so the peer's FIN is delivered.
        let s = d.writable(&mut out, 100);
        assert!(d.peer_close_delivered());
        assert!(s.close);
        assert!(d.is_closing());
        assert!(!d.blocked(), "no credit wanted after close");
        let l = log.lock().unwrap().clone();
        assert_eq!(l.last().map(String::as_str), Some("peer_close"));
    }

    #[test]
    fn room_bounds_pending() {
        let (mut d, _) = probe(0);
        let mut out = Vec::new();
        d.data(&vec![1u8; OFFER_LIMIT - 10], &mut out, 0);
        assert_eq!(d.room(), 10);
        d.data(&[2u8; 10], &mut out, 0);
        assert_eq!(d.room(), 0);
    }

    #[test]
    fn abort_calls_on_closed_once_and_swallows_later_bytes() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let h = Probe {
            take: 0,
            log: log.clone(),
            abort_on_data: true,
            overclaim: false,
        };
        let mut d = Driver::new(Box::new(h));
        let mut out = Vec::new();
        let s = d.data(b"x", &mut out, 5);
        assert!(s.abort);
        assert!(d.is_done());
        d.closed();
        let s = d.data(b"later", &mut out, 5);
        assert_eq!(s.consumed, 5);
        assert_eq!(*log.lock().unwrap(), ["data 1 credit 5", "closed"]);
    }

    #[test]
    fn overclaiming_handler_is_clamped() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let h = Probe {
            take: 0,
            log,
            abort_on_data: false,
            overclaim: true,
        };
        let mut d = Driver::new(Box::new(h));
        let mut out = Vec::new();
        assert_eq!(d.data(b"abc", &mut out, 5).consumed, 3);
        assert_eq!(d.pending_len(), 0);
    }
}
