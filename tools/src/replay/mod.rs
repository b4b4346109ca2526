//! Deterministic replay of tcpd captures (`tcpd-replay`, issue 4).
//!
//! A capture recorded with `tcpd --pcap FILE --seed N --workers 0` holds
//! every packet the endpoint read (inbound) and wrote (outbound), each
//! stamped with the endpoint time it was handled or produced at, plus a
//! sidecar `FILE.json` with the configuration. [`check`] rebuilds the same
//! endpoint and services, feeds the inbound packets at their recorded times
//! through [`sim::Sim`] (the reactor's turn, in virtual time) and compares
//! every packet the endpoint emits, byte for byte, with the recorded one.
//!
//! # How the reactor's turns are reconstructed
//!
//! The reactor stamps inbound packets with the turn's `now` and outbound
//! packets with the `now` passed to `poll_transmit`, so the capture shows
//! the turns: a run of inbound packets with one timestamp is one drain
//! (with a transmit every `rx_budget` packets at the same `now`), followed
//! by the timers due at that `now`, the handlers, and the turn's transmit,
//! whose packets share one later timestamp. The one thing a capture does
//! not show is a turn that only ran timers; the replay infers them:
//!
//! - a turn's own packets go out within [`SAME_TURN_US`] of its inbound
//!   packets (a turn's work; up to 0.75 ms in the fixtures). When the next
//!   outbound packet comes later than that, the turn's final
//!   `poll_transmit` is asked at the turn's own time and must find nothing
//!   (a packet then is a difference: "time: the replay sends this packet in
//!   the turn of ..."); the recorded packet must then come from a later
//!   timer turn;
//! - an outbound packet that the previous inputs do not explain while a
//!   timer is due is a timer turn. The reactor ran `handle_timeout` when it
//!   woke, at or after the deadline, and took the transmit time that the
//!   packet carries after running the timers and handlers; the replay runs
//!   each due timer at the later of its deadline and [`TURN_GUARD_US`]
//!   before the packet's time. The reactor's real run time lies somewhere
//!   between the deadline and the packet's time, so the deadlines those
//!   timers re-arm may differ from the daemon's by up to that span (at most
//!   [`EARLY_TIMER_US`]; in the fixtures the packet follows the deadline by
//!   99 to 343 µs, so by at most about 250 µs). Packets are built at
//!   transmit time, so their bytes (timestamp values included) are not
//!   affected. A deadline up to [`LATE_TIMER_US`] after the packet's time
//!   is accepted too (an earlier guess came out late); a later one leaves
//!   the packet unexplained, a difference that names the replay's next
//!   deadline;
//! - a timer's packet is recorded at most [`EARLY_TIMER_US`] after the
//!   deadline (how late the reactor can wake: mio rounds its poll timeout
//!   up to whole ms, see the constant). A deadline more than that before
//!   the next recorded packet (inbound or outbound) had a reactor turn of
//!   its own, which the capture shows sent nothing: the replay runs it at
//!   its deadline, and a packet from it is a difference ("time: the
//!   replay's timer due at ... fires too early"). So a change that makes a
//!   timer fire earlier (delayed ACK, RTO, persist, keep-alive, TIME-WAIT)
//!   is caught whether or not an inbound packet follows;
//! - a timer due less than [`EARLY_TIMER_US`] before an inbound packet
//!   may have run in that packet's turn, after its drain: the replay runs
//!   it there, at the packet's time. A timer turn without output is
//!   invisible; running it at another time only matters if it changed how
//!   the next packet is handled (TIME-WAIT expiring between two packets of
//!   the same 4-tuple), which no fixture does.
//!
//! So every outbound packet's timestamp is checked: a turn's packets
//! within [`SAME_TURN_US`] after its inbound packets, a timer's packets
//! within [`LATE_TIMER_US`] before to [`EARLY_TIMER_US`] after its
//! deadline, and each packet is built at its recorded time.
//!
//! A device write the kernel refuses (`WouldBlock`) makes the reactor send
//! that packet in a later turn, built at the earlier time; the replay
//! builds it at the time it was recorded, so such a capture fails `check`
//! (a time or timestamp-value difference) and has to be recorded again.
//! This did not happen in any fixture (it needs a full TUN queue); nor
//! did a reactor wake-up late by more than `EARLY_TIMER_US`, which fails
//! the same way.
//!
//! Set `TCPD_REPLAY_DEBUG=1` to see the inferred turns on stderr.
//!
//! Everything else is compared exactly: every byte of every outbound
//! packet (addresses, flags, sequence and acknowledgment numbers, window,
//! every option including timestamp values, payload, checksums), their
//! order, their number and their timestamps.

pub mod gso;
pub mod packet;
pub mod pcapio;
pub mod play;
pub mod sidecar;
pub mod sim;

use packet::{decode, first_difference, line, Pkt, Relative};
use pcapio::Record;
use sidecar::Sidecar;
use sim::{HostKind, Sim};
use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use tcp::{Instant, State};

/// A timer turn's `handle_timeout` runs this long before its first packet
/// went out (or at the deadline, if later): the reactor woke at the
/// deadline or after it and spent some µs running timers and handlers
/// before it took the transmit time. The reactor's real run time is
/// unknown within `[deadline, packet time]`; the deadlines those timers
/// re-arm move by the guess's error, which is at most [`EARLY_TIMER_US`]
/// (and in the fixtures a few tens of µs: a turn's work). The packets are
/// built at their recorded time, so their bytes do not depend on it.
pub const TURN_GUARD_US: u64 = 100;

/// How long after its deadline a timer's packet may be recorded. The
/// reactor sleeps in mio's `poll`, whose timeout is rounded *up* to whole
/// milliseconds (epoll_wait takes ms): it wakes up to 1 ms after a
/// deadline, plus the kernel's timer slack (50 µs for normal threads) and
/// scheduling delay, then runs timers and handlers before it transmits
/// (a turn's work: up to 0.75 ms in the fixtures, typically 10-100 µs).
/// 2 ms covers that with room for a busy machine, and is still far below
/// any timer a change could move (delayed ACK 40 ms, min RTO 200 ms,
/// persist 200 ms, TIME-WAIT 60 s). A replayed deadline more than this
/// before the recorded packet is a difference: the replay's timer fires
/// early. (A recording whose reactor overslept by more would fail `check`
/// and has to be recorded again.)
pub const EARLY_TIMER_US: u64 = 2000;

/// A replayed deadline at most this much after a recorded timer turn's
/// transmit time still explains the turn (the replay's deadline came out
/// late when an earlier turn took longer than [`TURN_GUARD_US`]); the
/// timers then run at that deadline.
pub const LATE_TIMER_US: u64 = 300;

/// An outbound packet this long after its turn's inbound packets may be a
/// later timer turn's rather than the turn's own (see `final_transmit`);
/// a turn's own packets go out within this time (its work, as for
/// [`EARLY_TIMER_US`]).
pub const SAME_TURN_US: u64 = 2000;

/// Which way a recorded packet went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dir {
    /// Read by tcpd (kernel → tcpd).
    In,
    /// Written by tcpd.
    Out,
}

/// A tcpd capture with its configuration.
pub struct Capture {
    /// The pcap file.
    pub path: PathBuf,
    /// Its packets.
    pub records: Vec<Record>,
    /// Direction of each packet.
    pub dirs: Vec<Dir>,
    /// The sidecar.
    pub sidecar: Sidecar,
}

impl Capture {
    /// Loads a capture and its sidecar; errors are one readable line.
    pub fn load(path: &Path) -> Result<Capture, String> {
        let (records, skipped) = pcapio::read(path).map_err(|e| e.to_string())?;
        if skipped > 0 {
            return Err(format!(
                "{}: {skipped} records hold no IP packet; not a tcpd capture",
                path.display()
            ));
        }
        let sidecar = sidecar::load(path)?;
        // With offload the stack saw super-packets, which the capture holds
        // cut into segments: feed and compare them whole (see `gso`).
        let records = if sidecar.config.effective_offload() {
            let groups = gso::load_groups(path)?;
            gso::merge(records, &groups).map_err(|e| format!("{}: {e}", path.display()))?
        } else {
            records
        };
        let addrs = sidecar.config.stack_addrs();
        let dirs = records.iter().map(|r| direction(&r.data, &addrs)).collect();
        Ok(Capture {
            path: path.to_path_buf(),
            records,
            dirs,
            sidecar,
        })
    }

    /// The endpoint time of record `i`.
    fn time(&self, i: usize) -> Instant {
        Instant::from_micros(
            self.records[i]
                .ts_us
                .saturating_sub(self.sidecar.start_unix_us),
        )
    }
}

fn ip_src_dst(p: &[u8]) -> Option<(IpAddr, IpAddr)> {
    match p.first()? >> 4 {
        4 => {
            let s: [u8; 4] = p.get(12..16)?.try_into().ok()?;
            let d: [u8; 4] = p.get(16..20)?.try_into().ok()?;
            Some((IpAddr::from(s), IpAddr::from(d)))
        }
        6 => {
            let s: [u8; 16] = p.get(8..24)?.try_into().ok()?;
            let d: [u8; 16] = p.get(24..40)?.try_into().ok()?;
            Some((IpAddr::from(s), IpAddr::from(d)))
        }
        _ => None,
    }
}

/// Outbound when the source is one of the stack's addresses and the
/// destination is not; everything else is something tcpd read.
pub fn direction(p: &[u8], addrs: &[IpAddr]) -> Dir {
    match ip_src_dst(p) {
        Some((s, d)) if addrs.contains(&s) && !addrs.contains(&d) => Dir::Out,
        _ => Dir::In,
    }
}

/// The first difference between a capture and its replay.
#[derive(Clone, Debug)]
pub struct Mismatch {
    /// 1-based number of the packet in the capture (as Wireshark counts).
    pub number: usize,
    /// Endpoint time, µs.
    pub time_us: u64,
    /// The recorded packet, decoded (or what the capture has there).
    pub expected: String,
    /// What the replay produced, decoded.
    pub got: String,
    /// Which field differs.
    pub field: String,
}

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "first difference at packet {} (t = {}.{:06} s):",
            self.number,
            self.time_us / 1_000_000,
            self.time_us % 1_000_000
        )?;
        writeln!(f, "  expected: {}", self.expected)?;
        writeln!(f, "  got:      {}", self.got)?;
        write!(f, "  differs:  {}", self.field)
    }
}

/// What a replay did.
pub struct Outcome {
    /// The first difference, if any.
    pub mismatch: Option<Mismatch>,
    /// Packets compared equal.
    pub matched: usize,
    /// Inbound packets fed.
    pub fed: usize,
    /// Inferred reactor turns that only ran timers and sent packets.
    pub timer_turns: usize,
    /// Inferred reactor turns that only ran timers and sent nothing.
    pub silent_timer_turns: usize,
    /// The replayed endpoint's counters at the end.
    pub stats: tcp::Stats,
}

impl Outcome {
    /// The counters that say what a fixture exercised, in one line.
    pub fn summary(&self) -> String {
        let s = &self.stats;
        format!(
            "timer turns {} (+{} silent), retransmits {} (rto {}, fast {}, undone {}), \
             d-sacks in {}, syn cookies sent/ok {}/{}, rst out {}, icmp echo {}, \
             out of window {}, out of order {}",
            self.timer_turns,
            self.silent_timer_turns,
            s.retransmits,
            s.rto_timeouts,
            s.fast_retransmits,
            s.spurious_recoveries,
            s.dsacks_in,
            s.syn_cookies_sent,
            s.syn_cookies_ok,
            s.rst_out,
            s.icmp_echo,
            s.out_of_window,
            s.ooo_segments
        )
    }
}

/// Trace hook: `(record index, state after it)`.
type TraceFn<'a> = &'a mut dyn FnMut(usize, Option<String>);

struct Checker<'a> {
    cap: &'a Capture,
    sim: Sim,
    i: usize,
    rel_e: Relative,
    rel_a: Relative,
    matched: usize,
    fed: usize,
    timer_turns: usize,
    silent_timer_turns: usize,
    trace: Option<TraceFn<'a>>,
    pending_in: Vec<usize>,
    syn_seen: Vec<(std::net::SocketAddr, std::net::SocketAddr, &'static str)>,
    verbose: bool,
}

fn seg_of(data: &[u8]) -> Option<packet::Seg> {
    match decode(data) {
        Pkt::Tcp(s) => Some(s),
        _ => None,
    }
}

impl<'a> Checker<'a> {
    fn state_text(&mut self, idx: usize) -> Option<String> {
        let s = seg_of(&self.cap.records[idx].data)?;
        let (local, remote) = match self.cap.dirs[idx] {
            Dir::In => (s.dst, s.src),
            Dir::Out => (s.src, s.dst),
        };
        if let Some(st) = self.sim.state_of(local, remote) {
            let mut t = st.name().to_string();
            if self.verbose {
                if let Some(d) = self.sim.detail_of(local, remote) {
                    t.push_str(" | ");
                    t.push_str(&d);
                }
            }
            return Some(t);
        }
        // Not accepted (yet): what the segments say.
        let guess = if s.rst() || !self.sim.listens_on(local.port()) {
            State::Closed.name()
        } else if s.syn() {
            State::SynReceived.name()
        } else {
            self.syn_seen
                .iter()
                .rev()
                .find(|(l, r, _)| *l == local && *r == remote)
                .map(|x| x.2)
                .unwrap_or("-")
        };
        if let Some(e) = self
            .syn_seen
            .iter_mut()
            .find(|(l, r, _)| *l == local && *r == remote)
        {
            e.2 = guess;
        } else {
            self.syn_seen.push((local, remote, guess));
        }
        Some(guess.to_string())
    }

    fn flush_trace(&mut self) {
        if self.trace.is_none() {
            self.pending_in.clear();
            return;
        }
        let list = std::mem::take(&mut self.pending_in);
        for idx in list {
            let st = self.state_text(idx);
            if let Some(t) = self.trace.as_mut() {
                t(idx, st);
            }
        }
    }

    fn mismatch_here(&self, got: Option<&[u8]>, why: &str) -> Mismatch {
        let (number, time_us, expected) = match self.cap.records.get(self.i) {
            Some(r) => (
                self.i + 1,
                self.cap.time(self.i).as_micros(),
                format!(
                    "{} {}",
                    if self.cap.dirs[self.i] == Dir::In {
                        "in "
                    } else {
                        "out"
                    },
                    line(&decode(&r.data), &self.rel_e)
                ),
            ),
            None => (
                self.cap.records.len() + 1,
                self.cap
                    .records
                    .len()
                    .checked_sub(1)
                    .map(|l| self.cap.time(l).as_micros())
                    .unwrap_or(0),
                "(end of capture)".to_string(),
            ),
        };
        let got = match got {
            Some(p) => {
                let mut rel = self.rel_a.clone();
                if let Some(s) = seg_of(p) {
                    rel.learn(&s);
                }
                format!("out {}", line(&decode(p), &rel))
            }
            None => "(nothing)".to_string(),
        };
        Mismatch {
            number,
            time_us,
            expected,
            got,
            field: why.to_string(),
        }
    }

    /// Compares the next packet the replay emits at `pkt_time` with record
    /// `i`; false when it emits none.
    fn take_output(&mut self, pkt_time: Instant) -> Result<bool, Mismatch> {
        let Some(p) = self.sim.poll_transmit(pkt_time).map(|p| p.to_vec()) else {
            return Ok(false);
        };
        self.compare_output(&p, pkt_time)?;
        Ok(true)
    }

    /// Compares a packet the replay emitted at `pkt_time` with record `i`:
    /// direction, time, then every byte.
    fn compare_output(&mut self, p: &[u8], pkt_time: Instant) -> Result<(), Mismatch> {
        let idx = self.i;
        let rec_ok = idx < self.cap.records.len() && self.cap.dirs[idx] == Dir::Out;
        if !rec_ok {
            return Err(self.mismatch_here(
                Some(p),
                "the replay sends a packet the capture does not have here",
            ));
        }
        if self.cap.time(idx) != pkt_time {
            return Err(self.mismatch_here(
                Some(p),
                &format!(
                    "time: the capture sends it at {} µs, the replay at {} µs",
                    self.cap.time(idx).as_micros(),
                    pkt_time.as_micros()
                ),
            ));
        }
        let exp = &self.cap.records[idx].data;
        let mut rel_e = self.rel_e.clone();
        let mut rel_a = self.rel_a.clone();
        if let Some(s) = seg_of(exp) {
            rel_e.learn(&s);
        }
        if let Some(s) = seg_of(p) {
            rel_a.learn(&s);
        }
        if let Some(d) = first_difference(exp, p, &rel_e, &rel_a) {
            return Err(self.mismatch_here(Some(p), &d));
        }
        self.rel_e = rel_e;
        self.rel_a = rel_a;
        self.matched += 1;
        self.i += 1;
        if self.trace.is_some() {
            let st = self.state_text(idx);
            if let Some(t) = self.trace.as_mut() {
                t(idx, st);
            }
        }
        Ok(())
    }

    /// The reactor's transmit inside a drain: everything, at the turn's `now`.
    fn transmit_at(&mut self, t: Instant) -> Result<(), Mismatch> {
        self.flush_trace();
        while self.take_output(t)? {}
        Ok(())
    }

    /// The turn's final transmit: the recorded packets that share the next
    /// outbound timestamp, then nothing more. A turn's own packets go out
    /// within [`SAME_TURN_US`] of its start; a later one is a timer turn's,
    /// so the turn must send nothing (asked at its own time, as the
    /// reactor did right after its handlers: what the endpoint arms while
    /// it finds nothing to send depends on that time).
    fn final_transmit(&mut self, turn: Instant) -> Result<(), Mismatch> {
        self.flush_trace();
        let n = self.cap.records.len();
        if self.i < n && self.cap.dirs[self.i] == Dir::Out {
            let t = self.cap.time(self.i);
            if t.as_micros() > turn.as_micros().saturating_add(SAME_TURN_US) {
                if let Some(p) = self.sim.poll_transmit(turn).map(|p| p.to_vec()) {
                    return Err(self.mismatch_here(
                        Some(&p),
                        &format!(
                            "time: the replay sends this packet in the turn of the inbound \
                             packets at {} µs; the capture sends it at {} µs, {} µs later \
                             (a turn's own packets go out within {SAME_TURN_US} µs)",
                            turn.as_micros(),
                            t.as_micros(),
                            t.as_micros() - turn.as_micros()
                        ),
                    ));
                }
                return Ok(());
            }
            while self.i < n && self.cap.dirs[self.i] == Dir::Out && self.cap.time(self.i) == t {
                if !self.take_output(t)? {
                    // Maybe a later timer turn: the caller decides.
                    return Ok(());
                }
            }
            if let Some(p) = self.sim.poll_transmit(t).map(|p| p.to_vec()) {
                return Err(self.mismatch_here(
                    Some(&p),
                    "the replay sends more packets in this turn than the capture has",
                ));
            }
        } else if let Some(p) = self.sim.poll_transmit(turn).map(|p| p.to_vec()) {
            return Err(self.mismatch_here(
                Some(&p),
                "the replay sends a packet the capture does not have here",
            ));
        }
        Ok(())
    }

    /// Runs the timers of a turn whose first packet went out at `t_o`;
    /// false when no timer is due (see the module documentation:
    /// [`TURN_GUARD_US`], [`LATE_TIMER_US`], [`EARLY_TIMER_US`]). A
    /// deadline more than `EARLY_TIMER_US` before `t_o` had a turn of its
    /// own, which must send nothing ([`Checker::silent_timer_turn`]); the
    /// others up to `t_o` run, each at the later of its deadline and
    /// `t_o - TURN_GUARD_US`.
    fn fire_timer_turn(&mut self, t_o: Instant) -> Result<bool, Mismatch> {
        let t_us = t_o.as_micros();
        let mut fired = false;
        for _ in 0..64 {
            let Some(d) = self.sim.next_timer() else {
                break;
            };
            let d_us = d.as_micros();
            if d_us.saturating_add(EARLY_TIMER_US) < t_us {
                self.silent_timer_turn(d)?;
                continue;
            }
            let at = if d_us <= t_us {
                d_us.max(t_us.saturating_sub(TURN_GUARD_US))
            } else if !fired && d_us - t_us <= LATE_TIMER_US {
                d_us
            } else {
                break;
            };
            self.sim.handle_timeout(Instant::from_micros(at));
            fired = true;
            if at > t_us {
                break;
            }
        }
        if fired {
            self.timer_turns += 1;
        }
        Ok(fired)
    }

    /// A timer due at `d`, well before the next recorded packet (record
    /// `i`, inbound or outbound, more than [`EARLY_TIMER_US`] later): the
    /// reactor woke for it, at most `EARLY_TIMER_US` late, and since the
    /// capture shows nothing in between, that turn sent nothing. The
    /// replay runs it at its deadline; a packet then is a difference.
    fn silent_timer_turn(&mut self, d: Instant) -> Result<(), Mismatch> {
        self.sim.handle_timeout(d);
        self.sim.process();
        if let Some(p) = self.sim.poll_transmit(d).map(|p| p.to_vec()) {
            let next_out = (self.i..self.cap.records.len())
                .find(|&j| self.cap.dirs[j] == Dir::Out)
                .map(|j| self.cap.time(j).as_micros());
            let d_us = d.as_micros();
            let why = match next_out {
                Some(o) => format!(
                    "time: the replay's timer due at {d_us} µs sends this packet then; the \
                     capture's next packet from tcpd is at {o} µs, {} µs later, but a \
                     timer's packet is recorded at most {EARLY_TIMER_US} µs after its \
                     deadline: the replay's timer fires too early",
                    o.saturating_sub(d_us)
                ),
                None => format!(
                    "time: the replay's timer due at {d_us} µs sends this packet then; the \
                     capture has no more packets from tcpd"
                ),
            };
            return Err(self.mismatch_here(Some(&p), &why));
        }
        self.silent_timer_turns += 1;
        Ok(())
    }

    /// Before the inbound packets at `t`: the turns of timers due more than
    /// [`EARLY_TIMER_US`] earlier, which sent nothing (see
    /// [`Checker::silent_timer_turn`]). Timers due later than that may have
    /// run in the packets' own turn, after the drain.
    fn timers_before_input(&mut self, t: Instant) -> Result<(), Mismatch> {
        for _ in 0..1024 {
            match self.sim.next_timer() {
                Some(d) if d.as_micros().saturating_add(EARLY_TIMER_US) < t.as_micros() => {
                    self.silent_timer_turn(d)?;
                }
                _ => break,
            }
        }
        Ok(())
    }

    fn run(&mut self) -> Result<(), Mismatch> {
        let n = self.cap.records.len();
        let budget = self.sim.rx_budget();
        while self.i < n {
            let t = self.cap.time(self.i);
            match self.cap.dirs[self.i] {
                Dir::In => {
                    self.timers_before_input(t)?;
                    let mut k = 0usize;
                    while self.i < n
                        && self.cap.dirs[self.i] == Dir::In
                        && self.cap.time(self.i) == t
                    {
                        let idx = self.i;
                        self.sim.handle(t, &self.cap.records[idx].data);
                        if let Some(s) = seg_of(&self.cap.records[idx].data) {
                            self.rel_e.learn(&s);
                            self.rel_a.learn(&s);
                        }
                        self.pending_in.push(idx);
                        self.i += 1;
                        self.fed += 1;
                        k += 1;
                        if k % budget == 0 {
                            self.transmit_at(t)?;
                        }
                        if k >= 16 * budget {
                            break;
                        }
                        // Packets of the same drain may follow the
                        // intra-drain transmit.
                    }
                    if self.sim.timers_due(t) {
                        self.sim.handle_timeout(t);
                    }
                    self.sim.process();
                    self.final_transmit(t)?;
                    if std::env::var_os("TCPD_REPLAY_DEBUG").is_some() {
                        eprintln!(
                            "debug: turn at {t:?} up to packet {}: next {:?}",
                            self.i,
                            self.sim.next_timer()
                        );
                    }
                }
                Dir::Out => {
                    let before = self.i;
                    if self.fire_timer_turn(t)? {
                        self.sim.process();
                        self.final_transmit(t)?;
                    }
                    if self.i == before {
                        let next = self.sim.next_timer();
                        if std::env::var_os("TCPD_REPLAY_DEBUG").is_some() {
                            eprintln!("debug: next timer {next:?} at t {t:?}");
                        }
                        let timer = match next {
                            Some(d) if d > t => format!(
                                "the replay's next timer is due at {} µs, {} µs after this \
                                 packet (more than {LATE_TIMER_US} µs: fires late?)",
                                d.as_micros(),
                                d.as_micros() - t.as_micros()
                            ),
                            Some(_) => "the replay's due timers send nothing".to_string(),
                            None => "the replay has no timer armed".to_string(),
                        };
                        let got = self.sim.poll_transmit(t).map(|p| p.to_vec());
                        return Err(self.mismatch_here(
                            got.as_deref(),
                            &format!(
                                "the capture has a packet here that the replay does not send \
                                 (no inbound packet or due timer explains it; {timer})"
                            ),
                        ));
                    }
                }
            }
        }
        self.flush_trace();
        Ok(())
    }
}

fn refuse_threaded(cap: &Capture) -> Result<(), String> {
    if cap.sidecar.workers != 0 {
        return Err(format!(
            "{}: recorded with --workers {}: service responses depend on thread timing, so \
             it cannot be replayed byte for byte; record with --workers 0",
            cap.path.display(),
            cap.sidecar.workers
        ));
    }
    if cap.sidecar.config.http_root.is_some() {
        return Err(format!(
            "{}: recorded with --http-root: the files served are not part of the capture",
            cap.path.display()
        ));
    }
    Ok(())
}

fn new_sim(cap: &Capture, host: HostKind) -> Result<Sim, String> {
    let (services, board) = sim::services_and_board(&cap.sidecar.config)?;
    let mut sim = Sim::with_host(&cap.sidecar.config, services, host)?;
    if let Some(b) = board {
        sim.set_wall_clock(b, cap.sidecar.start_unix_us);
    }
    Ok(sim)
}

/// Replays `cap` and compares (see the module documentation), hosting the
/// services as the current reactor does.
pub fn check(cap: &Capture) -> Result<Outcome, String> {
    check_with(cap, sim::REACTOR_HOST)
}

/// [`check`] with an explicit way of hosting the services.
pub fn check_with(cap: &Capture, host: HostKind) -> Result<Outcome, String> {
    refuse_threaded(cap)?;
    run_checker(cap, None, false, host)
}

fn run_checker<'a>(
    cap: &'a Capture,
    trace: Option<TraceFn<'a>>,
    verbose: bool,
    host: HostKind,
) -> Result<Outcome, String> {
    let mut c = Checker {
        cap,
        sim: new_sim(cap, host)?,
        i: 0,
        rel_e: Relative::default(),
        rel_a: Relative::default(),
        matched: 0,
        fed: 0,
        timer_turns: 0,
        silent_timer_turns: 0,
        trace,
        pending_in: Vec::new(),
        syn_seen: Vec::new(),
        verbose,
    };
    let mismatch = c.run().err();
    Ok(Outcome {
        mismatch,
        matched: c.matched,
        fed: c.fed,
        timer_turns: c.timer_turns,
        silent_timer_turns: c.silent_timer_turns,
        stats: *c.sim.ep.stats(),
    })
}

/// Re-records the outbound packets of `cap` from the current code and
/// writes the capture back (the sidecar is unchanged). Inbound packets keep
/// their times; timers run at their deadlines; each turn transmits at its
/// own time. Returns (outbound before, outbound after).
pub fn bless(cap: &Capture, host: HostKind) -> Result<(usize, usize), String> {
    refuse_threaded(cap)?;
    if cap.sidecar.config.effective_offload() {
        // Its records are segments of the packets the stack wrote, cut by
        // the segment sizes the stack chose; record it again instead.
        return Err(format!(
            "{}: recorded with offload; re-record it live (tools/record-fixtures.sh)",
            cap.path.display()
        ));
    }
    let mut sim = new_sim(cap, host)?;
    let start = cap.sidecar.start_unix_us;
    let mut out: Vec<Record> = Vec::with_capacity(cap.records.len());
    let n = cap.records.len();
    let budget = sim.rx_budget();
    let emit = |sim: &mut Sim, t: Instant, out: &mut Vec<Record>| {
        while let Some(p) = sim.poll_transmit(t) {
            out.push(Record {
                ts_us: start.saturating_add(t.as_micros()),
                data: p.to_vec(),
            });
        }
    };
    let timers_before = |sim: &mut Sim, limit: Instant, inclusive: bool, out: &mut Vec<Record>| {
        for _ in 0..1_000_000 {
            match sim.next_timer() {
                Some(d) if d < limit || (inclusive && d == limit) => {
                    sim.handle_timeout(d);
                    sim.process();
                    emit(sim, d, out);
                }
                _ => break,
            }
        }
    };
    let mut i = 0;
    while i < n {
        if cap.dirs[i] == Dir::Out {
            i += 1;
            continue;
        }
        let t = cap.time(i);
        timers_before(&mut sim, t, false, &mut out);
        let mut k = 0;
        while i < n && cap.time(i) == t {
            if cap.dirs[i] == Dir::In {
                sim.handle(t, &cap.records[i].data);
                out.push(cap.records[i].clone());
                k += 1;
                if k % budget == 0 {
                    emit(&mut sim, t, &mut out);
                }
                if k >= 16 * budget {
                    i += 1;
                    break;
                }
            }
            i += 1;
        }
        if sim.timers_due(t) {
            sim.handle_timeout(t);
        }
        sim.process();
        emit(&mut sim, t, &mut out);
    }
    // The capture went on until its last record: run the timers up to it.
    if let Some(last) = n.checked_sub(1) {
        timers_before(&mut sim, cap.time(last), true, &mut out);
    }
    let before = cap.dirs.iter().filter(|d| **d == Dir::Out).count();
    let after = out
        .iter()
        .filter(|r| direction(&r.data, &cap.sidecar.config.stack_addrs()) == Dir::Out)
        .count();
    pcapio::write(&cap.path, &out).map_err(|e| format!("{}: {e}", cap.path.display()))?;
    Ok((before, after))
}

/// A readable trace of a capture: one line per packet with the time,
/// direction, tcpdump-like fields with relative sequence numbers and, for a
/// tcpd capture, the connection's state after the packet (from a replay);
/// `verbose` adds the connection's windows, RTT and buffers.
pub fn show(path: &Path, verbose: bool, host: HostKind) -> Result<String, String> {
    let (records, skipped) = pcapio::read(path).map_err(|e| e.to_string())?;
    let cap = match sidecar::load(path) {
        Ok(sc) => {
            let addrs = sc.config.stack_addrs();
            let dirs = records.iter().map(|r| direction(&r.data, &addrs)).collect();
            Some(Capture {
                path: path.to_path_buf(),
                records: records.clone(),
                dirs,
                sidecar: sc,
            })
        }
        Err(_) => None,
    };
    let mut states: Vec<Option<String>> = vec![None; records.len()];
    let mut note = String::new();
    if let Some(cap) = &cap {
        let mut hook = |i: usize, st: Option<String>| {
            if let Some(s) = states.get_mut(i) {
                *s = st;
            }
        };
        match run_checker(cap, Some(&mut hook), verbose, host) {
            Ok(o) => {
                if let Some(m) = o.mismatch {
                    let _ = writeln!(note, "note: the replay diverges from here on; {m}");
                }
            }
            Err(e) => {
                let _ = writeln!(note, "note: no replay ({e})");
            }
        }
    }
    let t0 = match &cap {
        Some(c) => c.sidecar.start_unix_us,
        None => records.first().map(|r| r.ts_us).unwrap_or(0),
    };
    let mut rel = Relative::default();
    let mut s = String::new();
    if skipped > 0 {
        let _ = writeln!(s, "({skipped} non-IP records skipped)");
    }
    for (i, r) in records.iter().enumerate() {
        let p = decode(&r.data);
        if let Pkt::Tcp(seg) = &p {
            rel.learn(seg);
        }
        let t = r.ts_us.saturating_sub(t0);
        let dir = match &cap {
            Some(c) => match c.dirs[i] {
                Dir::In => "in ",
                Dir::Out => "out",
            },
            None => "   ",
        };
        let _ = write!(
            s,
            "{:>5} {:>4}.{:06} {dir} {}",
            i + 1,
            t / 1_000_000,
            t % 1_000_000,
            line(&p, &rel)
        );
        if let Some(st) = &states[i] {
            let _ = write!(s, "  [{st}]");
        }
        s.push('\n');
    }
    s.push_str(&note);
    Ok(s)
}

#[cfg(test)]
pub(crate) use daemon::testdir::TempDir;

#[cfg(test)]
mod temp_dir_tests {
    use super::TempDir;

    /// The folder goes also when the test using it fails (panics).
    #[test]
    fn a_failing_test_leaves_no_folder() {
        let mut path = None;
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let d = TempDir::new("guard-test");
            std::fs::write(d.join("f"), "x").ok();
            path = Some(d.0.clone());
            panic!("a failing test");
        }));
        assert!(r.is_err());
        let path = path.unwrap_or_default();
        assert!(!path.as_os_str().is_empty() && !path.exists(), "{path:?}");
    }
}
