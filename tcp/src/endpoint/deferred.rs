//! Deferred accept and transparent listening.
//!
//! A deferred listener ([`Endpoint::listen_deferred`], or every port of
//! every address with [`Endpoint::listen_any`]) does not answer a SYN: it
//! holds it and reports [`Event::Syn`]. The application decides later
//! (a forwarder, once its upstream connect succeeded or failed) and either
//! accepts it ([`Endpoint::accept_syn`]: the SYN-ACK goes out now, built
//! from the held SYN by the same code as any passive open) or turns it away
//! ([`Endpoint::refuse_syn`]: RST, ICMP unreachable, or silence).
//!
//! While a SYN is held the client retransmits it (RFC 6298 §5 with the
//! RFC 6298 §2 initial RTO of 1 s, doubling); those copies are absorbed.
//! A held SYN is given up after [`crate::Config::syn_hold_timeout`]
//! ([`Event::SynExpired`]), about when a Linux client stops retrying
//! (`tcp_syn_retries` 6: 127 s; Linux's own `TCP_DEFER_ACCEPT`-style
//! holds are bounded likewise).
//!
//! A listener's hold queue is bounded by its backlog (its `syn_queue`
//! counter counts held SYNs); a full queue drops the SYN (no SYN cookies:
//! a cookie would answer the SYN, which is what deferring must not do).

use super::{Control, Endpoint, Event, KeyedState, Owner};
use crate::conn::{ev, Conn, State};
use crate::endpoint::{ConnId, Error};
use crate::listen::Listener;
use crate::seq::SeqNum;
use crate::time::Instant;
use crate::wire::{
    emit_icmp_error, DropReason, IpPacket, TcpFlags, TcpOptions, TcpSegment, Unreach,
    ICMP_ERROR_MAX_V6,
};
use core::fmt;
use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};

/// Handle of a SYN held by a deferred listener. Like a [`ConnId`], a slot
/// and a generation: a handle whose SYN was accepted, refused or expired
/// is detected as stale ([`Error::InvalidHandle`]).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SynId {
    slot: u32,
    gen: u32,
}

impl SynId {
    /// The packed 64-bit form (slot in the low half, generation in the high).
    pub fn to_u64(self) -> u64 {
        u64::from(self.gen) << 32 | u64::from(self.slot)
    }
}

impl fmt::Debug for SynId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "syn#{}.{}", self.slot, self.gen)
    }
}

/// What the endpoint knows of a held SYN.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SynInfo {
    /// The SYN's destination: ours, or any address with
    /// [`Endpoint::listen_any`].
    pub local: SocketAddr,
    /// The SYN's source.
    pub remote: SocketAddr,
    /// `Some(port)` for [`Endpoint::listen_deferred`]`(port, ..)`, `None`
    /// for [`Endpoint::listen_any`].
    pub listener_port: Option<u16>,
    /// When the first copy of this SYN arrived.
    pub received: Instant,
}

/// How to turn a held SYN away ([`Endpoint::refuse_syn`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Answer with RST,ACK: `<SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>`, the
    /// reply to a SYN for a closed port (RFC 9293 §3.10.7.1). The client
    /// sees "connection refused".
    Reset,
    /// Answer with an ICMP (RFC 792) or ICMPv6 (RFC 4443 §3.1) destination
    /// unreachable quoting the SYN, from the SYN's destination address.
    Unreachable(Unreach),
    /// Drop it silently: the client's SYN retransmissions decide.
    Drop,
}

/// A SYN being held.
#[derive(Debug)]
struct Held {
    local: SocketAddr,
    remote: SocketAddr,
    /// SEG.SEQ of the SYN (the client's ISN).
    seq: SeqNum,
    /// SEG.LEN (1, plus any data the SYN carried; the data itself is not
    /// kept: a passive open does not take SYN data either).
    seg_len: u32,
    /// The SYN's window field (never scaled, RFC 7323 §2.2).
    window: u16,
    /// The SYN's options: MSS, window scale, SACK-permitted, timestamps.
    options: TcpOptions,
    listener_port: Option<u16>,
    received: Instant,
    deadline: Instant,
    /// Whether the hold counts in its listener's `syn_queue` (no longer
    /// once the listener is gone).
    counted: bool,
    /// Given up: waits for its [`Event::SynExpired`] to be read.
    expired: bool,
}

#[derive(Debug, Default)]
struct HoldSlot {
    gen: u32,
    held: Option<Held>,
    /// The SYN as it came (IP header on), cut to what an ICMP error
    /// quotes; the storage stays with the slot for the next SYN.
    quote: Vec<u8>,
}

/// The endpoint's deferred-accept state: held SYNs in slots, found by
/// 4-tuple for retransmitted copies, with their expiry order.
#[derive(Debug)]
pub(crate) struct Deferred {
    slots: Vec<HoldSlot>,
    free: Vec<u32>,
    by_tuple: HashMap<(SocketAddr, SocketAddr), u32, KeyedState>,
    /// The [`Endpoint::listen_any`] listener (its `syn_queue` counts holds).
    any: Option<Listener>,
    /// (deadline, slot, gen) in arrival order: the hold timeout is one
    /// constant, so deadlines only grow. Entries of SYNs decided earlier
    /// go stale and are skipped, or compacted away.
    expiry: VecDeque<(Instant, u32, u32)>,
    /// (slot, gen, expired) of events to report.
    events: VecDeque<(u32, u32, bool)>,
    /// Slots holding a SYN (held or expired, not yet freed).
    live: usize,
    /// Held SYNs (not expired) per source address (no entry: none). They
    /// count against [`crate::Config::max_passive_per_source`] like open
    /// connections: a source could otherwise keep a whole hold queue of
    /// SYNs waiting (for a forwarder, each an upstream connect) while
    /// its connections stay under its share.
    per_source: HashMap<IpAddr, u32, KeyedState>,
}

impl Deferred {
    pub(crate) fn new(key: (u64, u64)) -> Deferred {
        Deferred {
            slots: Vec::new(),
            free: Vec::new(),
            by_tuple: HashMap::with_hasher(KeyedState(key.0, key.1)),
            any: None,
            expiry: VecDeque::new(),
            events: VecDeque::new(),
            live: 0,
            per_source: HashMap::with_hasher(KeyedState(key.1, key.0)),
        }
    }

    /// SYNs held now (not expired) from `ip`.
    pub(crate) fn held_from(&self, ip: IpAddr) -> u32 {
        self.per_source.get(&ip).copied().unwrap_or(0)
    }

    fn count_source(&mut self, ip: IpAddr) {
        *self.per_source.entry(ip).or_insert(0) += 1;
    }

    fn uncount_source(&mut self, ip: IpAddr) {
        if let Some(n) = self.per_source.get_mut(&ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_source.remove(&ip);
            }
        }
    }

    /// Whether [`Endpoint::listen_any`] is on.
    pub(crate) fn any(&self) -> bool {
        self.any.is_some()
    }

    /// The earliest hold deadline (maybe of a SYN already decided: an
    /// early wake-up, never a late one).
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.expiry.front().map(|e| e.0)
    }

    fn get(&self, id: SynId) -> Option<&Held> {
        match self.slots.get(id.slot as usize) {
            Some(s) if s.gen == id.gen => s.held.as_ref().filter(|h| !h.expired),
            _ => None,
        }
    }

    /// Frees the slot; returns (listener port, counted) of what it held.
    fn free_slot(&mut self, slot: u32) -> Option<(Option<u16>, bool)> {
        let s = self.slots.get_mut(slot as usize)?;
        let h = s.held.take()?;
        s.gen = s.gen.wrapping_add(1);
        if !h.expired {
            if self.by_tuple.get(&(h.local, h.remote)) == Some(&slot) {
                self.by_tuple.remove(&(h.local, h.remote));
            }
            self.uncount_source(h.remote.ip());
        }
        self.free.push(slot);
        self.live -= 1;
        Some((h.listener_port, h.counted))
    }
}

/// A connection accepted with [`Endpoint::accept_syn`] is passive but owned
/// by the application from its SYN-RECEIVED on: a RST there ends it
/// without the `Reset` event an application-owned connection must get
/// (RFC 9293 §3.10.7.4 "return this connection to LISTEN state" applies
/// to listener-owned ones only, whose events nobody reads). Called by
/// `with_conn` on every state change.
pub(super) fn note_passive_reset(conn: &mut Conn, before: State) {
    if before == State::SynReceived
        && conn.state == State::Closed
        && conn.reset
        && !conn.active
        && conn.ev & (ev::RESET | ev::TIMED_OUT | ev::UNREACHABLE) == 0
    {
        conn.ev |= ev::RESET;
    }
}

impl Endpoint {
    // ----- application calls -------------------------------------------------

    /// Like [`Endpoint::listen`]`(port, backlog)`, but SYNs are held (at
    /// most `backlog` at once; more are dropped and counted in
    /// `syn_hold_full`) and reported as [`Event::Syn`] instead of being
    /// answered. No SYN cookies here: a full hold queue drops the SYN.
    pub fn listen_deferred(&mut self, port: u16, backlog: usize) -> Result<(), Error> {
        self.listen(port, backlog)?;
        if let Some(l) = self.listeners.get_mut(&port) {
            l.deferred = true;
        }
        Ok(())
    }

    /// Transparent mode: a deferred listener for every port of every
    /// destination address, addresses outside [`crate::Config::addrs`]
    /// included, holding at most `backlog` SYNs at once. On our own
    /// addresses a listener on a specific port ([`Endpoint::listen`],
    /// [`Endpoint::listen_deferred`]) takes precedence; segments to other
    /// addresses go to this one only (with empty `addrs` every address is
    /// ours). Connections accepted from it are demultiplexed by 4-tuple
    /// like any other, and their replies leave from the SYN's destination.
    /// Only TCP is taken for foreign addresses: ICMP to them (echo, errors)
    /// is still dropped as not ours. `PortInUse` when already on.
    pub fn listen_any(&mut self, backlog: usize) -> Result<(), Error> {
        if self.deferred.any.is_some() {
            return Err(Error::PortInUse);
        }
        let mut l = Listener::new(backlog);
        l.deferred = true;
        self.deferred.any = Some(l);
        Ok(())
    }

    /// Turns [`Endpoint::listen_any`] off; the SYNs it holds expire
    /// ([`Event::SynExpired`]). Connections it accepted stay.
    pub fn unlisten_any(&mut self) {
        if self.deferred.any.take().is_some() {
            self.expire_listener(None);
        }
    }

    /// What the endpoint knows of a held SYN; `None` once it was accepted,
    /// refused or expired.
    pub fn syn_info(&self, id: SynId) -> Option<SynInfo> {
        self.deferred.get(id).map(|h| SynInfo {
            local: h.local,
            remote: h.remote,
            listener_port: h.listener_port,
            received: h.received,
        })
    }

    /// Sends the SYN-ACK for a held SYN (options as for any passive open,
    /// negotiated from the held SYN's: RFC 9293 §3.10.7.2, RFC 7323 §2–3,
    /// RFC 2018 §2) and returns the connection, in SYN-RECEIVED and owned
    /// by the application: it never goes to an accept queue.
    /// [`Event::Connected`] follows when the handshake completes; `Reset`,
    /// `TimedOut`, `Unreachable` and `Closed` as for any connection. The
    /// connection counts against [`crate::Config::max_passive`] like any
    /// passive one.
    ///
    /// Errors: `InvalidHandle` (stale, decided or expired), `TableFull`
    /// (the connection table, [`crate::Config::max_passive`] or the
    /// source's [`crate::Config::max_passive_per_source`] is full; the SYN
    /// stays held: try again later or refuse it), `InvalidState` (a
    /// connection on the same 4-tuple appeared meanwhile; the SYN stays
    /// held).
    pub fn accept_syn(&mut self, now: Instant, id: SynId) -> Result<ConnId, Error> {
        self.advance(now);
        let h = self.deferred.get(id).ok_or(Error::InvalidHandle)?;
        // The passive limits were checked when the SYN came; other
        // connections may have taken the room since. This SYN counts in
        // its source's share already (as held): not twice.
        if self.table.len() >= self.config.max_connections
            || self.passive_limit_holding(h.remote, 1).is_some()
        {
            return Err(Error::TableFull);
        }
        if self.table.contains_key(&(h.local, h.remote)) {
            return Err(Error::InvalidState);
        }
        let (local, remote) = (h.local, h.remote);
        let syn = TcpSegment {
            src_port: remote.port(),
            dst_port: local.port(),
            seq: h.seq,
            ack: SeqNum(0),
            flags: TcpFlags::SYN,
            window: h.window,
            urgent: 0,
            options: h.options,
            bad_options: false,
            payload: &[],
        };
        // The passive open's own constructor (ISS, timestamps offset,
        // negotiation), counted against the passive limits as a
        // listener's connection; then handed to the application.
        let slot = self.new_passive(local, remote, &syn, Owner::Listener(local.port()));
        self.slots[slot as usize].owner = Owner::App;
        self.after_conn(slot);
        self.release_hold(id.slot);
        self.stats.defer.syn_accepted_deferred += 1;
        Ok(ConnId {
            slot,
            gen: self.slots[slot as usize].gen,
        })
    }

    /// Turns a held SYN away as `how` says; the [`SynId`] is dead
    /// afterwards. `InvalidHandle` when it already was.
    pub fn refuse_syn(&mut self, now: Instant, id: SynId, how: Refusal) -> Result<(), Error> {
        self.advance(now);
        let h = self.deferred.get(id).ok_or(Error::InvalidHandle)?;
        let (local, remote) = (h.local, h.remote);
        match how {
            Refusal::Reset => {
                // RFC 9293 §3.10.7.1: "If the ACK bit is off, sequence
                // number zero is used, <SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>".
                let ack = h.seq + h.seg_len;
                self.push_control(Control::Rst {
                    local,
                    remote,
                    seq: SeqNum(0),
                    ack: Some(ack),
                });
                self.stats.defer.syn_refused_rst += 1;
            }
            Refusal::Unreachable(u) => {
                let (t, code) = u.type_code(local.is_ipv6());
                let quote = std::mem::take(&mut self.deferred.slots[id.slot as usize].quote);
                self.push_icmp_error(local, remote, t, code, 0, &quote);
                self.deferred.slots[id.slot as usize].quote = quote;
                self.stats.defer.syn_refused_icmp += 1;
            }
            Refusal::Drop => self.stats.defer.syn_refused_drop += 1,
        }
        self.release_hold(id.slot);
        Ok(())
    }

    // ----- plumbing ------------------------------------------------------------

    /// Builds an ICMP(v6) error from `local` to `remote` quoting `invoking`
    /// (within the MTU and the RFC 1812 §4.3.2.3 / RFC 4443 §2.4(c) bound)
    /// and queues it as a ready-made control packet.
    pub(super) fn push_icmp_error(
        &mut self,
        local: SocketAddr,
        remote: SocketAddr,
        icmp_type: u8,
        code: u8,
        rest: u32,
        invoking: &[u8],
    ) -> bool {
        if self.control.len() >= self.config.max_control_queue {
            self.drop_packet(DropReason::ControlQueueFull);
            return false;
        }
        let mut buf = self.echo_bufs.pop().unwrap_or_default();
        let need = self.config.mtu.min(ICMP_ERROR_MAX_V6);
        if buf.len() < need {
            buf.resize(need, 0);
        }
        match emit_icmp_error(
            &mut buf,
            local.ip(),
            remote.ip(),
            self.config.ttl,
            icmp_type,
            code,
            rest,
            invoking,
            self.config.mtu,
        ) {
            Some(len) => {
                self.push_control(Control::Echo { buf, len });
                true
            }
            None => {
                self.echo_bufs.push(buf);
                false
            }
        }
    }

    /// Frees a hold slot after a decision, and its place in the listener's
    /// hold queue.
    fn release_hold(&mut self, slot: u32) {
        if let Some((port, counted)) = self.deferred.free_slot(slot) {
            if counted {
                let l = match port {
                    Some(p) => self.listeners.get_mut(&p),
                    None => self.deferred.any.as_mut(),
                };
                if let Some(l) = l {
                    l.syn_queue = l.syn_queue.saturating_sub(1);
                }
            }
        }
    }

    /// Takes a segment for a deferred listener, before the listener rules
    /// of [`Endpoint::for_listener`]. Returns whether it was taken: a SYN
    /// held (or absorbed, or dropped for a full hold queue), or any
    /// segment to [`Endpoint::listen_any`] with no connection. `false`: a
    /// normal listener's, or a non-SYN to a deferred port (the LISTEN rules
    /// apply as they are: RST for an ACK, RFC 9293 §3.10.7.2).
    pub(super) fn defer_segment(
        &mut self,
        ip: &IpPacket<'_>,
        local: SocketAddr,
        remote: SocketAddr,
        seg: &TcpSegment<'_>,
    ) -> bool {
        let foreign = !self.config.addrs.is_empty() && !self.config.addrs.contains(&local.ip());
        let port = match self.listeners.get(&local.port()) {
            Some(l) if !foreign => {
                if !l.deferred {
                    return false;
                }
                Some(local.port())
            }
            _ if self.deferred.any.is_some() => None,
            _ => return false,
        };
        let f = seg.flags;
        if !f.syn() || f.ack() {
            if port.is_some() {
                return false;
            }
            // listen_any stands for a listener on every port: RFC 9293
            // §3.10.7.2 (LISTEN). "An incoming RST segment could not be
            // valid ... ignore", "Any acknowledgment is bad ...
            // <SEQ=SEG.ACK><CTL=RST>", anything else is dropped.
            if f.rst() {
                self.stats.rst_in += 1;
            } else if f.ack() {
                self.push_control(Control::Rst {
                    local,
                    remote,
                    seq: seg.ack,
                    ack: None,
                });
            } else {
                self.drop_packet(DropReason::NoListener);
            }
            return true;
        }
        self.hold_syn(ip, local, remote, seg, port);
        true
    }

    /// "third check for a SYN" (RFC 9293 §3.10.7.2), deferred: keep it.
    fn hold_syn(
        &mut self,
        ip: &IpPacket<'_>,
        local: SocketAddr,
        remote: SocketAddr,
        seg: &TcpSegment<'_>,
        port: Option<u16>,
    ) {
        let d = &mut self.deferred;
        if let Some(&slot) = d.by_tuple.get(&(local, remote)) {
            // A retransmission, absorbed. A SYN with another ISN on the
            // same 4-tuple is the client starting over (its old attempt
            // timed out): keep the newer one, under the same SynId, so the
            // decision pending answers the attempt the client still makes.
            self.stats.defer.syn_hold_dup += 1;
            let s = &mut d.slots[slot as usize];
            if let Some(h) = s.held.as_mut() {
                if h.seq != seg.seq {
                    h.seq = seg.seq;
                    h.seg_len = seg.seg_len();
                    h.window = seg.window;
                    h.options = seg.options;
                    s.quote.clear();
                    s.quote
                        .extend_from_slice(&ip.packet[..ip.packet.len().min(QUOTE_MAX)]);
                }
            }
            return;
        }
        let l = match port {
            Some(p) => self.listeners.get(&p),
            None => d.any.as_ref(),
        };
        let Some(l) = l else { return };
        if l.syn_queue >= l.backlog {
            self.stats.defer.syn_hold_full += 1;
            return;
        }
        // The passive limits apply as to any passive open (RST for a source
        // over its share, silence over the total); the source's share
        // counts its SYNs held already.
        if let Some(r) = self.passive_limit(remote) {
            return self.refuse(r, local, remote, seg);
        }
        let now = self.now;
        let deadline = now + self.config.syn_hold_timeout;
        let d = &mut self.deferred;
        let slot = match d.free.pop() {
            Some(i) => i,
            None => {
                d.slots.push(HoldSlot::default());
                (d.slots.len() - 1) as u32
            }
        };
        let s = &mut d.slots[slot as usize];
        s.quote.clear();
        s.quote
            .extend_from_slice(&ip.packet[..ip.packet.len().min(QUOTE_MAX)]);
        s.held = Some(Held {
            local,
            remote,
            seq: seg.seq,
            seg_len: seg.seg_len(),
            window: seg.window,
            options: seg.options,
            listener_port: port,
            received: now,
            deadline,
            counted: true,
            expired: false,
        });
        let gen = s.gen;
        d.live += 1;
        d.count_source(remote.ip());
        d.by_tuple.insert((local, remote), slot);
        d.expiry.push_back((deadline, slot, gen));
        d.events.push_back((slot, gen, false));
        let l = match port {
            Some(p) => self.listeners.get_mut(&p),
            None => self.deferred.any.as_mut(),
        };
        if let Some(l) = l {
            l.syn_queue += 1;
        }
        self.stats.defer.syn_held += 1;
        self.compact_expiry();
    }

    /// Drops stale expiry entries once they outnumber the live holds twice
    /// over (plus slack): O(1) amortized per hold, and the queue stays
    /// within twice the holds plus 64.
    fn compact_expiry(&mut self) {
        let d = &mut self.deferred;
        if d.expiry.len() <= 2 * d.live + 64 {
            return;
        }
        let slots = &d.slots;
        d.expiry.retain(|&(_, slot, gen)| {
            slots
                .get(slot as usize)
                .is_some_and(|s| s.gen == gen && s.held.as_ref().is_some_and(|h| !h.expired))
        });
    }

    /// Gives up the SYNs held past [`crate::Config::syn_hold_timeout`] at
    /// `self.now` (from `handle_timeout`).
    pub(super) fn expire_held(&mut self) {
        while let Some(&(t, slot, gen)) = self.deferred.expiry.front() {
            if t > self.now {
                break;
            }
            self.deferred.expiry.pop_front();
            let live = self.deferred.slots.get(slot as usize).is_some_and(|s| {
                s.gen == gen
                    && s.held
                        .as_ref()
                        .is_some_and(|h| !h.expired && h.deadline == t)
            });
            if live {
                self.expire_slot(slot);
            }
        }
    }

    /// Marks a held SYN expired: out of the 4-tuple map and its listener's
    /// hold queue, waiting for its [`Event::SynExpired`] to be read.
    fn expire_slot(&mut self, slot: u32) {
        let d = &mut self.deferred;
        let s = &mut d.slots[slot as usize];
        let gen = s.gen;
        let Some(h) = s.held.as_mut() else { return };
        if h.expired {
            return;
        }
        h.expired = true;
        let (key, port, counted) = ((h.local, h.remote), h.listener_port, h.counted);
        h.counted = false;
        d.uncount_source(key.1.ip());
        if d.by_tuple.get(&key) == Some(&slot) {
            d.by_tuple.remove(&key);
        }
        d.events.push_back((slot, gen, true));
        if counted {
            let l = match port {
                Some(p) => self.listeners.get_mut(&p),
                None => self.deferred.any.as_mut(),
            };
            if let Some(l) = l {
                l.syn_queue = l.syn_queue.saturating_sub(1);
            }
        }
        self.stats.defer.syn_hold_expired += 1;
    }

    /// The listener for `port` (`None`: listen_any) went away: every SYN it
    /// holds expires. O(hold slots), once per closed listener.
    pub(super) fn expire_listener(&mut self, port: Option<u16>) {
        for slot in 0..self.deferred.slots.len() as u32 {
            let s = &mut self.deferred.slots[slot as usize];
            if let Some(h) = s.held.as_mut() {
                if h.listener_port == port {
                    // The listener's counter is gone with it.
                    h.counted = false;
                    self.expire_slot(slot);
                }
            }
        }
    }

    /// The next deferred-accept event, if any.
    pub(super) fn poll_deferred_event(&mut self) -> Option<Event> {
        while let Some((slot, gen, expired)) = self.deferred.events.pop_front() {
            let s = match self.deferred.slots.get(slot as usize) {
                Some(s) if s.gen == gen => s,
                _ => continue,
            };
            let Some(h) = s.held.as_ref() else { continue };
            let id = SynId { slot, gen };
            if !expired {
                if h.expired {
                    // Given up before the application heard of it: only
                    // the SynExpired (queued behind) is told.
                    continue;
                }
                return Some(Event::Syn(id));
            }
            self.deferred.free_slot(slot);
            return Some(Event::SynExpired(id));
        }
        None
    }

    /// Whether a packet of `protocol` to an address not ours is taken:
    /// TCP while [`Endpoint::listen_any`] is on.
    pub(super) fn takes_foreign(&self, protocol: u8) -> bool {
        self.deferred.any.is_some() && protocol == crate::wire::PROTO_TCP
    }
}

/// The most of a held SYN kept for an ICMP quote: the IPv6 bound, the
/// larger (the emitter cuts to the family's own, IPv4's 548 bytes).
const QUOTE_MAX: usize = ICMP_ERROR_MAX_V6 - 48;
