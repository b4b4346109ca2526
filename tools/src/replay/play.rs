//! `tcpd-replay play`: a foreign capture (any TCP client talking to any
//! server) replayed against tcpd's endpoint and services.
//!
//! For every connection whose SYN is in the capture, the client side's
//! segments are sent to a fresh endpoint at their recorded times, with
//! their recorded sizes, flags, payloads, sequence numbers, windows and
//! timestamp values. What the server said is not replayed: acknowledgment
//! numbers (and TSecr) are derived from what tcpd actually sends, as a
//! client that received all of it would. tcpd answers with its own
//! services (echo, discard or HTTP, chosen per server port from the
//! client's first bytes unless `--service` says).
//!
//! Connections the server refused (its answer to the SYN was a RST, no
//! SYN-ACK) are listed as skipped: there is nothing to play. Connections
//! are told apart per instance, not per address pair: a client port
//! reused for a later connection in the same capture is a connection of
//! its own (the n-th connection tcpd accepts between two addresses is the
//! n-th one the player started between them).
//!
//! Checked per connection:
//! - every client byte reaches the service, in order, exactly once;
//! - tcpd's acknowledgments are consistent: never decreasing, never beyond
//!   what the client sent, and at the end covering every byte and the FIN;
//! - the connection ends as in the capture: with FINs, or with a reset by
//!   the same side.
//!
//! After the recorded segments, the player acknowledges what tcpd still
//! sends (and resends client bytes tcpd did not take, e.g. beyond its
//! window) until tcpd is quiet; these extra segments are counted.

use super::packet::{decode, Pkt, Seg};
use super::pcapio;
use super::sim::Sim;
use daemon::services::{
    ConnCtx, Discard, Echo, Handler, HttpConfig, HttpService, Io, Service, Status, StatusBoard,
};
use daemon::Config;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Mutex};
use tcp::wire::{emit_tcp, tcp_payload_offset, TcpFlags, TcpOptions, TcpRepr};
use tcp::{Instant, SeqNum, State};

/// Which service answers a port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// RFC 862.
    Echo,
    /// RFC 863.
    Discard,
    /// HTTP/1.1.
    Http,
}

impl Kind {
    /// Parses `echo`, `discard` or `http`.
    pub fn parse(s: &str) -> Result<Kind, String> {
        match s {
            "echo" => Ok(Kind::Echo),
            "discard" => Ok(Kind::Discard),
            "http" => Ok(Kind::Http),
            _ => Err(format!("unknown service '{s}' (echo, discard or http)")),
        }
    }
    fn name(self) -> &'static str {
        match self {
            Kind::Echo => "echo",
            Kind::Discard => "discard",
            Kind::Http => "http",
        }
    }
}

/// How a connection ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    /// FIN in both directions.
    Fin,
    /// The client reset it.
    ClientRst,
    /// The server reset it.
    ServerRst,
    /// Still open at the end.
    Open,
}

impl std::fmt::Display for End {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            End::Fin => "FIN both ways",
            End::ClientRst => "reset by the client",
            End::ServerRst => "reset by the server",
            End::Open => "still open",
        })
    }
}

/// The result for one connection.
#[derive(Clone, Debug)]
pub struct ConnReport {
    /// Client address.
    pub client: SocketAddr,
    /// Which connection between these two addresses this is, from 0 (a
    /// client port reused later in the capture makes another one).
    pub instance: usize,
    /// Server address.
    pub server: SocketAddr,
    /// The service that answered.
    pub service: &'static str,
    /// Client bytes in the capture.
    pub client_bytes: usize,
    /// Bytes the service consumed.
    pub delivered: usize,
    /// Bytes tcpd sent.
    pub tcpd_bytes: usize,
    /// How the capture's connection ended.
    pub end_capture: End,
    /// How it ended against tcpd.
    pub end_play: End,
    /// Segments the player added after the recorded ones.
    pub extra_segments: usize,
    /// Recorded pure ACKs left out (they acknowledged nothing new).
    pub skipped_acks: usize,
    /// Problems found; empty when the connection passed.
    pub problems: Vec<String>,
}

/// The result of `play`.
#[derive(Clone, Debug)]
pub struct PlayReport {
    /// Connections played.
    pub conns: Vec<ConnReport>,
    /// Connections skipped (no SYN in the capture), with the reason.
    pub skipped: Vec<String>,
}

impl PlayReport {
    /// Whether every connection passed.
    pub fn ok(&self) -> bool {
        !self.conns.is_empty() && self.conns.iter().all(|c| c.problems.is_empty())
    }
    /// A readable summary.
    pub fn text(&self) -> String {
        let mut s = String::new();
        for c in &self.conns {
            let _ =
                writeln!(
                s,
                "{} {} -> {}{} ({}): {} client bytes, {} reached the service, tcpd sent {} bytes; \
                 capture ended {}, play ended {}; {} extra segments, {} redundant ACKs left out",
                if c.problems.is_empty() { "ok  " } else { "FAIL" },
                c.client,
                c.server,
                if c.instance > 0 {
                    format!(" (connection {} on this port pair)", c.instance + 1)
                } else {
                    String::new()
                },
                c.service,
                c.client_bytes,
                c.delivered,
                c.tcpd_bytes,
                c.end_capture,
                c.end_play,
                c.extra_segments,
                c.skipped_acks
            );
            for p in &c.problems {
                let _ = writeln!(s, "     - {p}");
            }
        }
        for k in &self.skipped {
            let _ = writeln!(s, "skip {k}");
        }
        if self.conns.is_empty() {
            let _ = writeln!(s, "no connection with a SYN to play");
        }
        s
    }
}

// ----- a service wrapper that records what the handler consumed -----------

/// One connection instance: client, server, and which connection between
/// the two it is (0 for the first).
type ConnKey = (SocketAddr, SocketAddr, usize);

/// What the services consumed, per connection instance.
#[derive(Default)]
struct Delivered {
    /// Connections accepted so far per (client, server).
    accepted: HashMap<(SocketAddr, SocketAddr), usize>,
    /// Bytes consumed, per instance.
    bytes: HashMap<ConnKey, Vec<u8>>,
}

type Log = Arc<Mutex<Delivered>>;

struct Tap {
    inner: Arc<dyn Service>,
    log: Log,
}

struct TapHandler {
    inner: Box<dyn Handler>,
    key: ConnKey,
    log: Log,
}

impl Service for Tap {
    fn name(&self) -> &'static str {
        self.inner.name()
    }
    fn new_handler(&self, ctx: &ConnCtx) -> Box<dyn Handler> {
        let pair = (ctx.remote, ctx.local);
        let instance = match self.log.lock() {
            Ok(mut l) => {
                let n = l.accepted.entry(pair).or_insert(0);
                *n += 1;
                *n - 1
            }
            Err(_) => 0,
        };
        Box::new(TapHandler {
            inner: self.inner.new_handler(ctx),
            key: (pair.0, pair.1, instance),
            log: self.log.clone(),
        })
    }
}

impl Handler for TapHandler {
    fn on_data(&mut self, data: &[u8], io: &mut Io<'_>) -> usize {
        let n = self.inner.on_data(data, io).min(data.len());
        if let Ok(mut l) = self.log.lock() {
            l.bytes
                .entry(self.key)
                .or_default()
                .extend_from_slice(&data[..n]);
        }
        n
    }
    fn on_writable(&mut self, io: &mut Io<'_>) {
        self.inner.on_writable(io)
    }
    fn on_peer_close(&mut self, io: &mut Io<'_>) {
        self.inner.on_peer_close(io)
    }
    fn on_closed(&mut self) {
        self.inner.on_closed()
    }
}

// ----- the capture's connections ----------------------------------------------

struct CapConn {
    client: SocketAddr,
    server: SocketAddr,
    /// Which connection between `client` and `server` this is, from 0.
    instance: usize,
    /// Client segments: (time µs since the capture's start, segment).
    segs: Vec<(u64, Seg)>,
    client_isn: u32,
    client_rst: bool,
    server_rst: bool,
    client_fin: bool,
    server_fin: bool,
    /// The server answered the SYN with a SYN-ACK.
    server_synack: bool,
}

/// The player's view of one connection against tcpd.
#[derive(Default)]
struct Live {
    tcpd_isn: Option<u32>,
    /// Highest sequence number tcpd sent, plus one (SND.MAX as seen).
    tcpd_max: Option<u32>,
    tcpd_ts: Option<u32>,
    tcpd_ts_on: bool,
    tcpd_fin: bool,
    tcpd_rst: bool,
    tcpd_bytes: usize,
    /// tcpd's latest acknowledgment.
    last_ack: Option<u32>,
    /// What the client acknowledged last.
    client_acked: Option<u32>,
    /// The client's highest sequence number sent, plus one.
    client_max: u32,
    client_rst_sent: bool,
    client_fin_sent: bool,
    /// Last window and timestamp value the client used.
    client_win: u16,
    client_ts: Option<u32>,
    /// The player sent this connection's first segment to tcpd.
    started: bool,
    /// tcpd's state for this connection when a later connection between
    /// the same addresses started (after that, the addresses name the
    /// later one).
    end_state: Option<Option<State>>,
    problems: Vec<String>,
    extra: usize,
    /// Recorded pure ACKs not sent (nothing new to acknowledge).
    skipped: usize,
}

fn seq_lt(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}

fn guess_kind(c: &CapConn) -> Kind {
    let first = c.segs.iter().find(|(_, s)| !s.payload.is_empty());
    match first {
        Some((_, s)) => {
            let p = &s.payload;
            let http = ["GET ", "HEAD ", "POST ", "PUT ", "DELETE ", "OPTIONS "]
                .iter()
                .any(|m| p.starts_with(m.as_bytes()));
            if http {
                Kind::Http
            } else if c.server.port() == 9 {
                Kind::Discard
            } else {
                Kind::Echo
            }
        }
        None if c.server.port() == 80 || c.server.port() == 8080 => Kind::Http,
        None => Kind::Echo,
    }
}

fn end_of(client_rst: bool, server_rst: bool, client_fin: bool, server_fin: bool) -> End {
    if client_rst {
        End::ClientRst
    } else if server_rst {
        End::ServerRst
    } else if client_fin && server_fin {
        End::Fin
    } else {
        End::Open
    }
}

/// Plays a foreign capture; `service` forces the service on every port.
pub fn play(path: &Path, service: Option<Kind>) -> Result<PlayReport, String> {
    let (records, _skipped) = pcapio::read(path).map_err(|e| e.to_string())?;
    let t0 = records.first().map(|r| r.ts_us).unwrap_or(0);
    let mut conns: Vec<CapConn> = Vec::new();
    let mut skipped = Vec::new();
    let mut orphan: HashMap<(SocketAddr, SocketAddr), usize> = HashMap::new();
    for r in &records {
        let Pkt::Tcp(s) = decode(&r.data) else {
            continue;
        };
        let t = r.ts_us.saturating_sub(t0);
        let pos = conns.iter().rposition(|c| {
            (c.client == s.src && c.server == s.dst) || (c.client == s.dst && c.server == s.src)
        });
        if s.syn() && !s.has_ack() {
            // A new connection, unless it is a retransmitted SYN.
            let same = pos.filter(|&i| conns[i].client == s.src && conns[i].client_isn == s.seq);
            if same.is_none() {
                conns.push(CapConn {
                    client: s.src,
                    server: s.dst,
                    instance: 0,
                    segs: Vec::new(),
                    client_isn: s.seq,
                    client_rst: false,
                    server_rst: false,
                    client_fin: false,
                    server_fin: false,
                    server_synack: false,
                });
            }
        }
        let Some(i) = conns.iter().rposition(|c| {
            (c.client == s.src && c.server == s.dst) || (c.client == s.dst && c.server == s.src)
        }) else {
            *orphan.entry((s.src, s.dst)).or_default() += 1;
            continue;
        };
        let c = &mut conns[i];
        if s.src == c.client {
            c.client_rst |= s.rst();
            c.client_fin |= s.fin();
            c.segs.push((t, s));
        } else {
            c.server_rst |= s.rst();
            c.server_fin |= s.fin();
            c.server_synack |= s.syn() && s.has_ack();
        }
    }
    for ((a, b), n) in orphan {
        skipped.push(format!(
            "{a} -> {b}: {n} segments without a SYN in the capture"
        ));
    }
    let mut kinds: HashMap<u16, Kind> = HashMap::new();
    let mut v4: Option<IpAddr> = None;
    let mut v6: Option<IpAddr> = None;
    let mut playable: Vec<CapConn> = Vec::new();
    for mut c in conns {
        // Drop connections the server refused (SYN answered by RST, no
        // SYN-ACK): nothing to play, and no service for that port.
        if c.server_rst && !c.server_synack {
            skipped.push(format!(
                "{} -> {}: refused by the server (its SYN was answered by RST); not played",
                c.client, c.server
            ));
            continue;
        }
        let slot = if c.server.is_ipv4() { &mut v4 } else { &mut v6 };
        match slot {
            Some(a) if *a != c.server.ip() => {
                skipped.push(format!(
                    "{} -> {}: a second server address of one family is not supported",
                    c.client, c.server
                ));
                continue;
            }
            _ => *slot = Some(c.server.ip()),
        }
        let k = service.unwrap_or_else(|| guess_kind(&c));
        kinds.entry(c.server.port()).or_insert(k);
        c.instance = playable
            .iter()
            .filter(|p| p.client == c.client && p.server == c.server)
            .count();
        playable.push(c);
    }
    let mut cfg = Config {
        seed: 1,
        mtu: 65535,
        addr6: None,
        workers: 0,
        ..Config::default()
    };
    if let Some(IpAddr::V4(a)) = v4 {
        cfg.addr = a;
    }
    if let Some(IpAddr::V6(a)) = v6 {
        cfg.addr6 = Some(a);
    }
    let log: Log = Arc::new(Mutex::new(Delivered::default()));
    let mut services: Vec<(u16, Arc<dyn Service>)> = Vec::new();
    let mut ports: Vec<_> = kinds.iter().map(|(p, k)| (*p, *k)).collect();
    ports.sort_unstable_by_key(|(p, _)| *p);
    for (port, k) in &ports {
        let inner: Arc<dyn Service> = match k {
            Kind::Echo => Arc::new(Echo),
            Kind::Discard => Arc::new(Discard),
            Kind::Http => Arc::new(HttpService::new(
                HttpConfig::default(),
                StatusBoard::frozen(Status::default(), std::time::Duration::ZERO),
            )?),
        };
        services.push((
            *port,
            Arc::new(Tap {
                inner,
                log: log.clone(),
            }),
        ));
    }
    let mut sim = Sim::new(&cfg, services)?;
    let mut live: Vec<Live> = playable.iter().map(|_| Live::default()).collect();
    let mut events: Vec<(u64, usize, usize)> = Vec::new();
    for (ci, c) in playable.iter().enumerate() {
        for (si, (t, _)) in c.segs.iter().enumerate() {
            events.push((*t, ci, si));
        }
    }
    events.sort_by_key(|e| e.0);
    let mut buf = vec![0u8; 70_000];
    let mut now = Instant::ZERO;
    for &(t, ci, si) in &events {
        let t = Instant::from_micros(t);
        run_timers(&mut sim, t, &playable, &mut live);
        now = now.max(t);
        let seg = &playable[ci].segs[si].1;
        if !live[ci].started {
            // A later connection between the same addresses: from now on
            // they name it; keep how tcpd left the earlier one.
            let c = &playable[ci];
            let earlier = (0..ci).rev().find(|&i| {
                live[i].started && playable[i].client == c.client && playable[i].server == c.server
            });
            if let Some(e) = earlier {
                live[e].end_state = Some(sim.state_of(c.server, c.client));
            }
            live[ci].started = true;
        }
        let l = &mut live[ci];
        // A pure ACK that would acknowledge nothing new and change no
        // window (or only the window, after both FINs) answered the
        // original server's segments, not tcpd's: sending it would make a
        // spurious duplicate ACK (or, once tcpd closed, draw a RST).
        let pure = seg.payload.is_empty() && !seg.syn() && !seg.fin() && !seg.rst();
        let both_done = l.tcpd_fin && l.client_fin_sent;
        if pure
            && l.tcpd_isn.is_some()
            && l.client_acked == l.tcpd_max
            && (l.client_win == seg.window || both_done)
        {
            l.skipped += 1;
            continue;
        }
        let pkt = build(&playable[ci], l, seg, &mut buf, false)?;
        debug_pkt(now, "client", &buf[..pkt]);
        sim.handle(now, &buf[..pkt]);
        turn(&mut sim, now, &playable, &mut live);
    }
    // Let tcpd finish: acknowledge what it sends, resend what it missed.
    for _ in 0..400 {
        now = Instant::from_micros(now.as_micros().saturating_add(10_000));
        run_timers(&mut sim, now, &playable, &mut live);
        let mut sent = false;
        for ci in 0..playable.len() {
            let c = &playable[ci];
            let l = &mut live[ci];
            if l.client_rst_sent || l.tcpd_rst || l.tcpd_isn.is_none() || l.end_state.is_some() {
                continue;
            }
            let acked = l.client_acked.unwrap_or(0);
            let want = l.tcpd_max.unwrap_or(acked);
            let tcpd_ack = l.last_ack.unwrap_or(c.client_isn);
            let need_ack = want != acked;
            let need_data = seq_lt(tcpd_ack, l.client_max);
            if !(need_ack || need_data) {
                continue;
            }
            let n = resend(c, l, &mut buf, need_data)?;
            l.extra += 1;
            sent = true;
            debug_pkt(now, "extra ", &buf[..n]);
            sim.handle(now, &buf[..n]);
            turn(&mut sim, now, &playable, &mut live);
        }
        let timers_soon = sim
            .next_timer()
            .is_some_and(|d| d.as_micros() < now.as_micros().saturating_add(3_000_000));
        let all_done = playable.iter().zip(&live).all(|(c, l)| {
            l.client_rst_sent
                || l.tcpd_rst
                || matches!(
                    l.end_state
                        .unwrap_or_else(|| sim.state_of(c.server, c.client)),
                    None | Some(State::Closed) | Some(State::TimeWait)
                )
        });
        if !sent && (all_done || !timers_soon) {
            break;
        }
    }
    let delivered = log
        .lock()
        .map(|mut l| std::mem::take(&mut *l))
        .unwrap_or_default();
    let mut reports = Vec::new();
    for (ci, c) in playable.iter().enumerate() {
        let l = &mut live[ci];
        let expected = client_stream(c);
        let sent_len = l
            .client_max
            .wrapping_sub(c.client_isn.wrapping_add(1))
            .wrapping_sub(u32::from(l.client_fin_sent)) as usize;
        if !l.client_rst_sent && sent_len > expected.len() {
            l.problems.push(format!(
                "the capture misses client bytes from byte {} on (of {}): segments were \
                 lost before the capture point, the stream cannot be played whole",
                expected.len(),
                sent_len
            ));
        }
        let got = delivered
            .bytes
            .get(&(c.client, c.server, c.instance))
            .cloned()
            .unwrap_or_default();
        if got != expected {
            let at = got
                .iter()
                .zip(&expected)
                .position(|(a, b)| a != b)
                .unwrap_or(got.len().min(expected.len()));
            l.problems.push(format!(
                "the service got {} bytes, the client sent {}; first difference at byte {at}",
                got.len(),
                expected.len()
            ));
        }
        let end_capture = end_of(c.client_rst, c.server_rst, c.client_fin, c.server_fin);
        let fin_acked = l
            .last_ack
            .is_some_and(|a| a == l.client_max && l.client_fin_sent);
        let end_play = end_of(
            l.client_rst_sent,
            l.tcpd_rst,
            l.client_fin_sent && fin_acked,
            l.tcpd_fin,
        );
        if !l.client_rst_sent && !l.tcpd_rst {
            let final_ack = l.last_ack.unwrap_or(c.client_isn);
            if final_ack != l.client_max {
                l.problems.push(format!(
                    "tcpd's last acknowledgment is {} bytes short of what the client sent",
                    l.client_max.wrapping_sub(final_ack)
                ));
            }
        }
        let state = l
            .end_state
            .unwrap_or_else(|| sim.state_of(c.server, c.client));
        let gone = matches!(state, None | Some(State::Closed));
        match end_play {
            End::ClientRst if !gone => l.problems.push(format!(
                "tcpd kept the connection ({}) after the client's RST",
                state.map(|s| s.name()).unwrap_or("-")
            )),
            End::Fin if !(gone || state == Some(State::TimeWait)) => l.problems.push(format!(
                "both sides sent FIN but tcpd's connection is {}",
                state.map(|s| s.name()).unwrap_or("-")
            )),
            _ => {}
        }
        if end_capture != end_play {
            l.problems.push(format!(
                "the capture ended {end_capture}, the play {end_play}"
            ));
        }
        let kind = kinds.get(&c.server.port()).copied().unwrap_or(Kind::Echo);
        reports.push(ConnReport {
            client: c.client,
            instance: c.instance,
            server: c.server,
            service: kind.name(),
            client_bytes: expected.len(),
            delivered: got.len(),
            tcpd_bytes: l.tcpd_bytes,
            end_capture,
            end_play,
            extra_segments: l.extra,
            skipped_acks: l.skipped,
            problems: std::mem::take(&mut l.problems),
        });
    }
    Ok(PlayReport {
        conns: reports,
        skipped,
    })
}

/// The client's byte stream, reassembled from its segments.
fn client_stream(c: &CapConn) -> Vec<u8> {
    let base = c.client_isn.wrapping_add(1);
    let mut out: Vec<u8> = Vec::new();
    let mut have: Vec<bool> = Vec::new();
    for (_, s) in &c.segs {
        if s.payload.is_empty() || s.rst() {
            continue;
        }
        let off = s.seq.wrapping_add(u32::from(s.syn())).wrapping_sub(base) as usize;
        if off > 64 << 20 {
            continue;
        }
        let end = off + s.payload.len();
        if out.len() < end {
            out.resize(end, 0);
            have.resize(end, false);
        }
        out[off..end].copy_from_slice(&s.payload);
        have[off..end].iter_mut().for_each(|h| *h = true);
    }
    let n = have.iter().position(|h| !h).unwrap_or(have.len());
    out.truncate(n);
    out
}

/// A client segment as the player sends it (see the module documentation).
fn build(
    c: &CapConn,
    l: &mut Live,
    s: &Seg,
    buf: &mut [u8],
    _extra: bool,
) -> Result<usize, String> {
    let mut options = TcpOptions::default();
    if s.syn() {
        options = s.options;
        options.sack = Default::default();
    } else if let (Some((val, _)), true) = (s.options.timestamps, l.tcpd_ts_on) {
        options.timestamps = Some((val, l.tcpd_ts.unwrap_or(0)));
    }
    if let Some((v, _)) = options.timestamps {
        l.client_ts = Some(v);
    }
    let mut flags = s.flags & !0x10;
    let mut ack = 0;
    if s.has_ack() {
        if let Some(m) = l.tcpd_max {
            flags |= 0x10;
            ack = m;
            l.client_acked = Some(m);
        }
    }
    l.client_win = s.window;
    let end = s.seq.wrapping_add(s.seg_len());
    if s.syn() || seq_lt(l.client_max, end) || l.client_max == 0 {
        l.client_max = end;
    }
    if s.rst() {
        l.client_rst_sent = true;
    }
    if s.fin() {
        l.client_fin_sent = true;
    }
    emit(
        c.client, c.server, s.seq, ack, flags, s.window, options, &s.payload, buf,
    )
}

/// An extra segment after the recorded ones: an acknowledgment, with the
/// client bytes tcpd has not acknowledged yet when `data`.
fn resend(c: &CapConn, l: &mut Live, buf: &mut [u8], data: bool) -> Result<usize, String> {
    let stream = client_stream(c);
    let base = c.client_isn.wrapping_add(1);
    let from = l.last_ack.unwrap_or(base);
    let off = from.wrapping_sub(base) as usize;
    let mut payload: &[u8] = &[];
    let mut flags = 0x10u8;
    if data {
        let end = (off + 16 * 1024).min(stream.len());
        if off < end {
            payload = &stream[off..end];
        }
        let end = from.wrapping_add(payload.len() as u32);
        if l.client_fin_sent && end.wrapping_add(1) == l.client_max {
            flags |= 0x01;
        }
    }
    let seq = if data { from } else { l.client_max };
    let ack = l.tcpd_max.unwrap_or(0);
    l.client_acked = Some(ack);
    let mut options = TcpOptions::default();
    if l.tcpd_ts_on {
        let v = l.client_ts.map(|v| v.wrapping_add(1)).unwrap_or(1);
        l.client_ts = Some(v);
        options.timestamps = Some((v, l.tcpd_ts.unwrap_or(0)));
    }
    emit(
        c.client,
        c.server,
        seq,
        ack,
        flags,
        l.client_win,
        options,
        payload,
        buf,
    )
}

#[allow(clippy::too_many_arguments)]
fn emit(
    src: SocketAddr,
    dst: SocketAddr,
    seq: u32,
    ack: u32,
    flags: u8,
    window: u16,
    options: TcpOptions,
    payload: &[u8],
    buf: &mut [u8],
) -> Result<usize, String> {
    let repr = TcpRepr {
        src_port: src.port(),
        dst_port: dst.port(),
        seq: SeqNum(seq),
        ack: SeqNum(ack),
        flags: TcpFlags(flags),
        window,
        options,
    };
    let off = tcp_payload_offset(src.ip(), &repr);
    let slot = buf
        .get_mut(off..off + payload.len())
        .ok_or("a client segment is larger than 64 KiB")?;
    slot.copy_from_slice(payload);
    emit_tcp(buf, src.ip(), dst.ip(), 64, &repr, payload.len())
        .ok_or_else(|| format!("cannot build a segment {src} -> {dst}"))
}

/// Runs timers due before `t`, each at its deadline, with its turn.
fn run_timers(sim: &mut Sim, t: Instant, conns: &[CapConn], live: &mut [Live]) {
    for _ in 0..100_000 {
        match sim.next_timer() {
            Some(d) if d < t => {
                sim.handle_timeout(d);
                turn(sim, d, conns, live);
            }
            _ => break,
        }
    }
}

/// The rest of a reactor turn at `now`: timers, handlers, transmit; every
/// packet tcpd sends is observed.
fn turn(sim: &mut Sim, now: Instant, conns: &[CapConn], live: &mut [Live]) {
    if sim.timers_due(now) {
        sim.handle_timeout(now);
    }
    sim.process();
    while let Some(p) = sim.poll_transmit(now) {
        debug_pkt(now, "tcpd  ", p);
        let Pkt::Tcp(s) = decode(p) else { continue };
        // The connection between these addresses the player started last.
        let Some(ci) = (0..conns.len())
            .rev()
            .find(|&i| live[i].started && conns[i].server == s.src && conns[i].client == s.dst)
        else {
            continue;
        };
        observe(&mut live[ci], &conns[ci], &s);
    }
}

fn observe(l: &mut Live, c: &CapConn, s: &Seg) {
    if s.syn() {
        l.tcpd_isn = Some(s.seq);
        l.tcpd_ts_on = s.options.timestamps.is_some();
    }
    if let Some((v, _)) = s.options.timestamps {
        l.tcpd_ts = Some(v);
    }
    let end = s.seq.wrapping_add(s.seg_len());
    match l.tcpd_max {
        Some(m) if !seq_lt(m, end) => {}
        _ if l.tcpd_isn.is_some() && !s.rst() => l.tcpd_max = Some(end),
        _ => {}
    }
    l.tcpd_bytes += s.payload.len();
    l.tcpd_fin |= s.fin();
    l.tcpd_rst |= s.rst();
    if s.has_ack() && !s.rst() {
        if let Some(prev) = l.last_ack {
            if seq_lt(s.ack, prev) {
                l.problems.push(format!(
                    "tcpd's acknowledgment went back from {} to {} (relative)",
                    prev.wrapping_sub(c.client_isn),
                    s.ack.wrapping_sub(c.client_isn)
                ));
            }
        }
        if seq_lt(l.client_max, s.ack) {
            l.problems.push(format!(
                "tcpd acknowledged {} (relative) before the client sent it (sent up to {})",
                s.ack.wrapping_sub(c.client_isn),
                l.client_max.wrapping_sub(c.client_isn)
            ));
        }
        l.last_ack = Some(s.ack);
    }
}

/// With `TCPD_REPLAY_DEBUG` set, prints every packet of a play.
fn debug_pkt(now: Instant, who: &str, p: &[u8]) {
    if std::env::var_os("TCPD_REPLAY_DEBUG").is_some() {
        let rel = super::packet::Relative::default();
        eprintln!(
            "{:>12} {who} {}",
            now.as_micros(),
            super::packet::line(&decode(p), &rel)
        );
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// `foreign_echo` has two connections to the echo server from two
    /// client ports. Rewritten so that the second reuses the first one's
    /// port, they must still be played and checked as two connections
    /// (they used to share one delivery log and one acknowledgment view).
    #[test]
    fn a_reused_client_port_makes_two_connections() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../captures/foreign_echo.pcap");
        let (records, _) = pcapio::read(&src).unwrap();
        let syns: Vec<Seg> = records
            .iter()
            .filter_map(|r| match decode(&r.data) {
                Pkt::Tcp(s) if s.syn() && !s.has_ack() => Some(s),
                _ => None,
            })
            .collect();
        assert_eq!(syns.len(), 2, "foreign_echo has two connections");
        let (first, second) = (syns[0].src, syns[1].src);
        assert_ne!(first.port(), second.port());
        let remap = |a: SocketAddr| if a == second { first } else { a };
        let mut buf = vec![0u8; 70_000];
        let rewritten: Vec<pcapio::Record> = records
            .iter()
            .map(|r| match decode(&r.data) {
                Pkt::Tcp(s) => {
                    let n = emit(
                        remap(s.src),
                        remap(s.dst),
                        s.seq,
                        s.ack,
                        s.flags,
                        s.window,
                        s.options,
                        &s.payload,
                        &mut buf,
                    )
                    .unwrap();
                    pcapio::Record {
                        ts_us: r.ts_us,
                        data: buf[..n].to_vec(),
                    }
                }
                _ => r.clone(),
            })
            .collect();
        let dir = crate::replay::TempDir::new("play-reuse");
        let path = dir.join("reuse.pcap");
        pcapio::write(&path, &rewritten).unwrap();
        let r = play(&path, None).unwrap();
        print!("{}", r.text());
        assert!(r.ok(), "{}", r.text());
        assert_eq!(r.conns.len(), 2, "{}", r.text());
        assert!(r.conns.iter().all(|c| c.client == first));
        assert_eq!(r.conns[0].instance, 0);
        assert_eq!(r.conns[1].instance, 1);
        assert_eq!(r.conns[0].client_bytes, 5000);
        assert_eq!(r.conns[0].delivered, 5000);
        assert_eq!(r.conns[1].client_bytes, 100_000);
        assert_eq!(r.conns[1].delivered, 100_000);
        assert!(r.text().contains("(connection 2 on this port pair)"));
    }
}
