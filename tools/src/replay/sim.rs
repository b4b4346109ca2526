//! The daemon's reactor with `--workers 0`, in virtual time.
//!
//! This mirrors `daemon::reactor` step for step, minus the OS: the same
//! [`daemon::worker::Host`] runs the same services inline, the connection
//! bookkeeping (hold limit, send credit, spill, close after spill) is the
//! same, and the caller drives the phases of a reactor turn in the order the
//! reactor runs them:
//!
//! 1. [`Sim::handle`] for each packet of the turn's drain (at the turn's
//!    `now`; after every `rx_budget` packets the reactor transmits:
//!    [`Sim::rx_budget`]);
//! 2. [`Sim::timers_due`] / [`Sim::handle_timeout`] at the same `now`;
//! 3. [`Sim::process`]: commands, events, reads, credit, inline handlers,
//!    up to 16 rounds;
//! 4. [`Sim::poll_transmit`] until it returns `None`.
//!
//! Keep it in step with `daemon/src/reactor.rs`: a change there that changes
//! what goes on the wire shows up as a failing fixture once the fixtures are
//! re-recorded (`tools/record-fixtures.sh`).

use daemon::pool::Pool;
use daemon::services::{
    ConnCtx, Discard, Echo, HttpService, InlineConfig, InlineHost, Service, Status, StatusBoard,
};
use daemon::worker::{Cmd, Host, ToWorker};
use daemon::Config;
use std::net::SocketAddr;
use std::sync::Arc;
use tcp::{ConnId, Endpoint, Event, Instant, State};

/// The reactor's per-connection record (see `daemon::reactor`).
struct Conn {
    id: ConnId,
    held: usize,
    granted: usize,
    readable: bool,
    eof_sent: bool,
    queued_read: bool,
    queued_credit: bool,
    closing: bool,
    spill: Vec<u8>,
}

/// A connection the simulated reactor accepted, for traces.
#[derive(Clone, Copy, Debug)]
pub struct Known {
    /// tcpd's side.
    pub local: SocketAddr,
    /// The peer.
    pub remote: SocketAddr,
    /// The endpoint's handle.
    pub id: ConnId,
}

/// How the reactor runs services with `--workers 0`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostKind {
    /// The worker [`Host`] fed by the reactor's own connection bookkeeping
    /// (reads with a hold limit, send credit, spill), as the reactor did
    /// before `c90fc60`.
    Reactor,
    /// [`InlineHost::process_events`] right after the timers, as the
    /// reactor does since `c90fc60` (and, since the inline host takes every
    /// event, without the worker rounds).
    Inline,
}

/// What the current `daemon/src/reactor.rs` does with `--workers 0`.
pub const REACTOR_HOST: HostKind = HostKind::Inline;

/// The simulated reactor. See the module documentation.
pub struct Sim {
    /// The endpoint under test.
    pub ep: Endpoint,
    kind: HostKind,
    inline: InlineHost,
    host: Host,
    out: Vec<ToWorker>,
    cmds: Vec<Cmd>,
    conns: Vec<Option<Conn>>,
    ports: Vec<(u16, usize)>,
    to_read: Vec<ConnId>,
    starved: Vec<ConnId>,
    pool: Pool,
    readbuf: Box<[u8]>,
    txbuf: Box<[u8]>,
    hold_limit: usize,
    credit_threshold: usize,
    nodelay: bool,
    rx_budget: usize,
    /// Every connection accepted so far, in order.
    pub known: Vec<Known>,
    /// Connections reset by the peer.
    pub resets: u64,
    /// Connections that timed out.
    pub timeouts: u64,
    /// A board whose wall clock follows the endpoint's time, from this
    /// start (µs since the Unix epoch), as the reactor sets it each turn.
    wall_clock: Option<(Arc<StatusBoard>, u64)>,
}

/// Services by port.
pub type ServiceList = Vec<(u16, Arc<dyn Service>)>;

/// The services `tcpd` runs for `cfg`, in the order `daemon::run` builds
/// them. The HTTP status board is frozen (uptime zero): the status pages
/// carry live counters and are not byte-for-byte replayable anyway.
pub fn services_for(cfg: &Config) -> Result<ServiceList, String> {
    services_and_board(cfg).map(|(v, _)| v)
}

/// [`services_for`], also returning the HTTP service's status board (to
/// give it the capture's wall clock: [`Sim::set_wall_clock`]).
pub fn services_and_board(cfg: &Config) -> Result<(ServiceList, Option<Arc<StatusBoard>>), String> {
    let mut board_out = None;
    let mut v: ServiceList = Vec::new();
    if cfg.echo_port != 0 {
        v.push((cfg.echo_port, Arc::new(Echo)));
    }
    if cfg.discard_port != 0 {
        v.push((cfg.discard_port, Arc::new(Discard)));
    }
    if cfg.http_port != 0 {
        let mut h = cfg.http.clone();
        h.root = cfg.http_root.clone();
        let board = StatusBoard::frozen(
            Status {
                iface: cfg.iface.clone(),
                addrs: cfg.stack_addrs(),
                mtu: cfg.mtu,
                services: cfg.service_ports(),
                ..Status::default()
            },
            std::time::Duration::ZERO,
        );
        board_out = Some(Arc::clone(&board));
        v.push((cfg.http_port, Arc::new(HttpService::new(h, board)?)));
    }
    Ok((v, board_out))
}

impl Sim {
    /// A reactor for `cfg` serving `services` (`(port, service)`), with
    /// the services hosted as the daemon does ([`REACTOR_HOST`]).
    pub fn new(cfg: &Config, services: ServiceList) -> Result<Sim, String> {
        Sim::with_host(cfg, services, REACTOR_HOST)
    }

    /// [`Sim::new`] with an explicit way of hosting the services.
    pub fn with_host(cfg: &Config, services: ServiceList, kind: HostKind) -> Result<Sim, String> {
        let mut ep =
            Endpoint::new(cfg.tcp_config()).map_err(|e| format!("tcp configuration: {e}"))?;
        let mut ports = Vec::new();
        let mut list: Vec<Arc<dyn Service>> = Vec::new();
        let mut inline = InlineHost::new(InlineConfig {
            read_chunk: cfg.read_chunk,
            nodelay: cfg.nodelay,
            ..InlineConfig::default()
        });
        for (port, svc) in services {
            ep.listen(port, cfg.backlog)
                .map_err(|e| format!("cannot listen on port {port}: {e}"))?;
            ports.push((port, list.len()));
            inline.add_service(port, svc.clone());
            list.push(svc);
        }
        let pool = Pool::new(cfg.pool_buffers, cfg.read_chunk);
        let send_buffer = cfg.tcp.send_buffer;
        Ok(Sim {
            ep,
            kind,
            inline,
            host: Host::new(Arc::from(list), pool.clone()),
            out: Vec::new(),
            cmds: Vec::new(),
            conns: Vec::new(),
            ports,
            to_read: Vec::new(),
            starved: Vec::new(),
            pool,
            readbuf: vec![0u8; cfg.read_chunk].into_boxed_slice(),
            // As the reactor: room for a whole offload segment (the endpoint
            // sizes segments by the buffer it is given).
            txbuf: vec![0u8; 65536].into_boxed_slice(),
            hold_limit: 2 * cfg.read_chunk,
            credit_threshold: (send_buffer / 4).clamp(1, 64 * 1024),
            nodelay: cfg.nodelay,
            rx_budget: cfg.rx_budget.max(1),
            known: Vec::new(),
            resets: 0,
            timeouts: 0,
            wall_clock: None,
        })
    }

    /// Packets the reactor reads before it transmits and reads on.
    pub fn rx_budget(&self) -> usize {
        self.rx_budget
    }

    /// Feeds one packet read from the device.
    pub fn handle(&mut self, now: Instant, pkt: &[u8]) {
        self.ep.handle(now, pkt);
    }

    /// Whether the endpoint's timers are due at `now` (the reactor's test).
    pub fn timers_due(&mut self, now: Instant) -> bool {
        self.next_timer().is_some_and(|t| t <= now)
    }

    /// The next timer deadline: the endpoint's or, inline, a handler's
    /// (the reactor sleeps until the earlier of the two).
    pub fn next_timer(&mut self) -> Option<Instant> {
        let ep = self.ep.poll_timeout();
        let host = match self.kind {
            HostKind::Inline => self.inline.poll_timeout(),
            HostKind::Reactor => None,
        };
        match (ep, host) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Runs the endpoint's timers, then (inline) the handlers' due ones, as
    /// the reactor's turn does.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.ep.handle_timeout(now);
        if self.kind == HostKind::Inline {
            self.inline.handle_timeout(&mut self.ep, now);
        }
    }

    /// Gives `board` the capture's wall clock: `start_unix_us` plus the
    /// endpoint's time, set before the handlers run (what the reactor sets
    /// each turn), so a recorded `Date` replays byte for byte.
    pub fn set_wall_clock(&mut self, board: Arc<StatusBoard>, start_unix_us: u64) {
        self.wall_clock = Some((board, start_unix_us));
    }

    /// The reactor's command/event/handler rounds (at most 16).
    pub fn process(&mut self) {
        if let Some((b, start)) = &self.wall_clock {
            b.set_unix_us(start + self.ep.now().as_micros());
        }
        if self.kind == HostKind::Inline {
            self.inline.process_events(&mut self.ep);
            for id in self.inline.connections() {
                if self.known.iter().any(|k| k.id == id) {
                    continue;
                }
                if let Ok(info) = self.ep.info(id) {
                    self.known.push(Known {
                        local: info.local,
                        remote: info.remote,
                        id,
                    });
                }
            }
            // As the reactor: inline handlers take every event; no worker
            // rounds. (The reactor comes back at once when the host stops
            // at its round limit, `InlineHost::saturated`; at the default
            // 64 rounds no recorded session has come near it.)
            return;
        }
        for _ in 0..16 {
            let mut moved = self.apply_commands();
            moved |= self.dispatch_events();
            self.read_ready();
            self.grant_credit();
            moved |= self.flush_host();
            if !moved {
                break;
            }
        }
    }

    /// The next packet the endpoint sends at `now`. With checksum offload
    /// its TCP checksum is completed, as the capture's records have theirs
    /// (see [`super::gso`]); a TSO super-packet stays whole.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<&[u8]> {
        let t = self.ep.poll_transmit_offload(now, &mut self.txbuf)?;
        let p = self.txbuf.get_mut(..t.len)?;
        if t.partial_checksum {
            super::gso::fill_tcp_checksum(p);
        }
        Some(p)
    }

    /// Whether a service listens on `port`.
    pub fn listens_on(&self, port: u16) -> bool {
        self.ports.iter().any(|(p, _)| *p == port)
    }

    /// The state of the connection between `local` and `remote`, if the
    /// reactor accepted one (the latest such).
    pub fn state_of(&self, local: SocketAddr, remote: SocketAddr) -> Option<State> {
        let k = self
            .known
            .iter()
            .rev()
            .find(|k| k.local == local && k.remote == remote)?;
        Some(self.ep.state(k.id).unwrap_or(State::Closed))
    }

    /// A one-line snapshot of that connection's variables (for `show -v`).
    pub fn detail_of(&self, local: SocketAddr, remote: SocketAddr) -> Option<String> {
        let k = self
            .known
            .iter()
            .rev()
            .find(|k| k.local == local && k.remote == remote)?;
        let i = self.ep.info(k.id).ok()?;
        Some(format!(
            "snd_wnd {} cwnd {} ssthresh {} in_flight {} send_buffered {} rcv_wnd {} \
             recv_buffered {} srtt {}us rto {}us mss {} retransmits {}",
            i.snd_wnd,
            i.cwnd,
            i.ssthresh,
            i.in_flight,
            i.send_buffered,
            i.rcv_wnd,
            i.recv_buffered,
            i.srtt.map(|d| d.as_micros()).unwrap_or(0),
            i.rto.as_micros(),
            i.mss,
            i.retransmits
        ))
    }

    fn conn_mut(&mut self, id: ConnId) -> Option<&mut Conn> {
        self.conns
            .get_mut(id.slot() as usize)?
            .as_mut()
            .filter(|c| c.id == id)
    }

    fn apply_commands(&mut self) -> bool {
        if self.cmds.is_empty() {
            return false;
        }
        let mut cmds = std::mem::take(&mut self.cmds);
        for c in cmds.drain(..) {
            self.apply(c);
        }
        self.cmds = cmds;
        true
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
                        Ok(n) => conn.spill.extend_from_slice(&buf[n..]),
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
                    conn.closing = true;
                }
            }
            Cmd::Abort { id } => {
                let _ = self.ep.abort(id);
                self.forget(id);
            }
            // Forwarding is not replayed: no SYN is ever held here.
            Cmd::AcceptSyn { .. } | Cmd::RefuseSyn { .. } => {}
        }
    }

    fn forget(&mut self, id: ConnId) {
        let slot = id.slot() as usize;
        if self
            .conns
            .get_mut(slot)
            .and_then(|c| c.take_if(|c| c.id == id))
            .is_some()
        {
            self.out.push(ToWorker::Closed { id });
        }
    }

    fn dispatch_events(&mut self) -> bool {
        let mut any = false;
        while let Some(ev) = self.ep.poll_event() {
            any = true;
            match ev {
                Event::Incoming { port } => self.accept(port),
                Event::Connected(_) => {}
                Event::Readable(id) | Event::PeerClosed(id) => self.mark_readable(id),
                Event::Writable(id) => {
                    if let Some(c) = self.conn_mut(id) {
                        if !c.queued_credit {
                            c.queued_credit = true;
                            self.starved.push(id);
                        }
                    }
                }
                Event::Reset(_) => self.resets += 1,
                Event::TimedOut(_) => self.timeouts += 1,
                Event::Unreachable(..) => self.resets += 1,
                Event::Closed(id) => self.forget(id),
                // The daemon it mirrors opens no deferred listeners (yet).
                Event::Syn(_) | Event::SynExpired(_) => {}
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
            let Some(svc) = svc else {
                let _ = self.ep.abort(id);
                continue;
            };
            let Ok(info) = self.ep.info(id) else { continue };
            if self.nodelay {
                let _ = self.ep.set_nodelay(id, true);
            }
            let credit = self.ep.send_capacity(id).unwrap_or(0);
            let slot = id.slot() as usize;
            if self.conns.len() <= slot {
                self.conns.resize_with(slot + 1, || None);
            }
            self.conns[slot] = Some(Conn {
                id,
                held: 0,
                granted: credit,
                readable: true,
                eof_sent: false,
                queued_read: true,
                queued_credit: false,
                closing: false,
                spill: Vec::new(),
            });
            self.known.push(Known {
                local: info.local,
                remote: info.remote,
                id,
            });
            let ctx = ConnCtx {
                local: info.local,
                remote: info.remote,
            };
            self.out.push(ToWorker::Accepted {
                id,
                svc,
                ctx,
                credit,
            });
            self.to_read.push(id);
        }
    }

    fn read_ready(&mut self) {
        if self.to_read.is_empty() {
            return;
        }
        let list = std::mem::take(&mut self.to_read);
        for id in list.iter().copied() {
            let Some(c) = self.conn_mut(id) else { continue };
            let readable = c.readable;
            c.queued_read = false;
            if !readable {
                continue;
            }
            self.read_conn(id);
        }
        let mut list = list;
        list.clear();
        // Reads may have queued more (none in practice): keep them.
        list.append(&mut self.to_read);
        self.to_read = list;
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
            match self.ep.recv_hold(id, &mut self.readbuf[..room]) {
                Ok(0) => {
                    if let Some(c) = self.conn_mut(id) {
                        c.readable = false;
                        c.eof_sent = true;
                    }
                    self.out.push(ToWorker::PeerClosed { id });
                    return;
                }
                Ok(n) => {
                    let mut buf = self.pool.get();
                    buf.extend_from_slice(&self.readbuf[..n]);
                    if let Some(c) = self.conn_mut(id) {
                        c.held += n;
                    }
                    self.out.push(ToWorker::Data { id, buf });
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
                if c.granted >= threshold {
                    c.queued_credit = false;
                } else {
                    keep.push(id);
                }
                self.out.push(ToWorker::Writable { id, credit: avail });
            } else {
                keep.push(id);
            }
        }
        let mut list = list;
        list.clear();
        self.starved = list;
        self.starved.extend(keep);
    }

    fn flush_host(&mut self) -> bool {
        if self.out.is_empty() {
            return false;
        }
        if self.kind == HostKind::Inline {
            // As the reactor: with the inline host, worker events go nowhere.
            self.out.clear();
            return false;
        }
        let mut out = std::mem::take(&mut self.out);
        for ev in out.drain(..) {
            self.host.handle(ev, &mut self.cmds);
        }
        // Handlers never queue events themselves; keep the allocation.
        out.append(&mut self.out);
        self.out = out;
        !self.cmds.is_empty()
    }
}
