//! tcpd-netem: a link emulator in user space (this kernel has no netem).
//!
//! It joins two Ethernet interfaces (veth ends, with AF_PACKET sockets) as
//! a bridge and impairs each direction, seeded: random and Gilbert-Elliott
//! loss, a rate-limited bottleneck with a drop-tail queue, one-way delay
//! with jitter, reordering (a share of packets skips the delay) and
//! duplication. Frames that are not IP (ARP, ND is IP) pass unimpaired.
//! It sees offloaded output as a router does: GSO/TSO super-segments
//! (virtio-net header, `PACKET_VNET_HDR`) are cut at their `gso_size` and
//! partial checksums completed before they are impaired and forwarded.
//!
//! Put it between a kernel client and (a) tcpd on a TUN device in a
//! namespace that routes to it, or (b) a kernel server: the same relay for
//! both (see `tools/netem-bench.sh`). Counters are printed at exit
//! (SIGINT/SIGTERM).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io;
use std::os::fd::RawFd;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use clap::Parser;
use daemon::offload::{VnetHdr, VNET_HDR_LEN};
use tools::netem::gso::{split, ETH_LEN};
use tools::netem::{Counters, DirConfig, Direction, GilbertElliott};

/// Size of each packet slot: an MTU-1500 frame and the header, with room.
const SLOT: usize = 2048;
/// Largest frame read (a 64 KiB GSO packet and its Ethernet header).
const RX_MAX: usize = 65536 + ETH_LEN + VNET_HDR_LEN;
/// Frames read from one interface per turn before the other gets a turn.
const BATCH: usize = 64;

/// Join two interfaces in user space and impair both directions.
///
/// Values of the form X/Y give a→b and b→a separately; a single X applies
/// to both directions.
#[derive(Parser, Debug)]
#[command(name = "tcpd-netem", version, about, long_about = None)]
struct Cli {
    /// First interface (side a)
    #[arg(long = "a", value_name = "IFACE")]
    a: String,
    /// Second interface (side b)
    #[arg(long = "b", value_name = "IFACE")]
    b: String,
    /// Random loss per packet, percent
    #[arg(long, value_name = "PCT[/PCT]", default_value = "0")]
    loss: String,
    /// Gilbert-Elliott burst loss: p,r,1-h,1-k in percent (netem's gemodel)
    #[arg(long, value_name = "P,R,H,K[/P,R,H,K]")]
    ge: Option<String>,
    /// One-way delay, milliseconds
    #[arg(long, value_name = "MS[/MS]", default_value = "0")]
    delay: String,
    /// Jitter: delay ± uniform(J), milliseconds
    #[arg(long, value_name = "MS[/MS]", default_value = "0")]
    jitter: String,
    /// Share of packets that skip the delay (reordering), percent
    #[arg(long, value_name = "PCT[/PCT]", default_value = "0")]
    reorder: String,
    /// Share of packets delivered twice, percent
    #[arg(long, value_name = "PCT[/PCT]", default_value = "0")]
    dup: String,
    /// Bottleneck rate, Mbit/s; 0 for none
    #[arg(long, value_name = "MBIT[/MBIT]", default_value = "0")]
    rate: String,
    /// Bottleneck queue, packets (drop-tail beyond)
    #[arg(long, value_name = "N[/N]", default_value = "1000")]
    queue: String,
    /// Seed of the impairments (each direction derives its own)
    #[arg(long, value_name = "N", default_value_t = 1)]
    seed: u64,
    /// Most packets held in the delay line at once, both directions
    #[arg(long, value_name = "N", default_value_t = 65536)]
    limit: usize,
}

fn pair<T>(s: &str, what: &str, f: impl Fn(&str) -> Option<T>) -> Result<(T, T), String> {
    let bad = || format!("bad --{what} value {s:?}");
    match s.split_once('/') {
        Some((x, y)) => Ok((f(x).ok_or_else(bad)?, f(y).ok_or_else(bad)?)),
        None => Ok((f(s).ok_or_else(bad)?, f(s).ok_or_else(bad)?)),
    }
}

fn pct(s: &str) -> Option<f64> {
    let v: f64 = s.trim().parse().ok()?;
    (0.0..=100.0).contains(&v).then_some(v / 100.0)
}

fn ms(s: &str) -> Option<u64> {
    let v: f64 = s.trim().parse().ok()?;
    (0.0..=60_000.0).contains(&v).then_some((v * 1000.0) as u64)
}

fn ge(s: &str) -> Option<GilbertElliott> {
    let v: Vec<f64> = s.split(',').map(pct).collect::<Option<_>>()?;
    match v[..] {
        [p, r, one_minus_h, one_minus_k] => Some(GilbertElliott {
            p,
            r,
            h: 1.0 - one_minus_h,
            k: 1.0 - one_minus_k,
        }),
        _ => None,
    }
}

fn configs(cli: &Cli) -> Result<(DirConfig, DirConfig), String> {
    let loss = pair(&cli.loss, "loss", pct)?;
    let delay = pair(&cli.delay, "delay", ms)?;
    let jitter = pair(&cli.jitter, "jitter", ms)?;
    let reorder = pair(&cli.reorder, "reorder", pct)?;
    let dup = pair(&cli.dup, "dup", pct)?;
    let rate = pair(&cli.rate, "rate", |s| {
        let v: f64 = s.trim().parse().ok()?;
        (0.0..=100_000.0).contains(&v).then_some((v * 1e6) as u64)
    })?;
    let queue = pair(&cli.queue, "queue", |s| {
        s.trim()
            .parse::<usize>()
            .ok()
            .filter(|&q| (1..=100_000).contains(&q))
    })?;
    let ges = match &cli.ge {
        Some(s) => {
            let (x, y) = pair(s, "ge", ge)?;
            (Some(x), Some(y))
        }
        None => (None, None),
    };
    let mk = |i: usize| DirConfig {
        loss: if i == 0 { loss.0 } else { loss.1 },
        ge: if i == 0 { ges.0 } else { ges.1 },
        delay_us: if i == 0 { delay.0 } else { delay.1 },
        jitter_us: if i == 0 { jitter.0 } else { jitter.1 },
        reorder: if i == 0 { reorder.0 } else { reorder.1 },
        dup: if i == 0 { dup.0 } else { dup.1 },
        rate_bps: if i == 0 { rate.0 } else { rate.1 },
        queue: if i == 0 { queue.0 } else { queue.1 },
    };
    Ok((mk(0), mk(1)))
}

/// An AF_PACKET socket bound to one interface, with virtio-net headers.
fn packet_socket(iface: &str) -> io::Result<RawFd> {
    let idx = daemon::tun::if_index(iface)
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("no interface {iface}")))?;
    let proto = (libc::ETH_P_ALL as u16).to_be();
    // SAFETY: plain socket(2) call.
    let fd = unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            i32::from(proto),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let one: libc::c_int = 1;
    let big: libc::c_int = 16 << 20;
    let opts = [
        (libc::SOL_PACKET, libc::PACKET_VNET_HDR, one),
        // PACKET_IGNORE_OUTGOING (Linux 4.20): not our own transmissions.
        (libc::SOL_PACKET, 23, one),
        (libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, big),
        (libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, big),
    ];
    for (level, name, v) in opts {
        // SAFETY: fd is ours; the value is a c_int of the size given.
        let r = unsafe {
            libc::setsockopt(
                fd,
                level,
                name,
                (&v as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as u32,
            )
        };
        if r < 0 {
            let e = io::Error::last_os_error();
            // SAFETY: closing our own fd.
            unsafe { libc::close(fd) };
            return Err(e);
        }
    }
    // SAFETY: an all-zero sockaddr_ll is valid; fields set below.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = proto;
    sll.sll_ifindex = idx as i32;
    // SAFETY: sll is a valid sockaddr_ll of the size given.
    let r = unsafe {
        libc::bind(
            fd,
            (&sll as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    if r < 0 {
        let e = io::Error::last_os_error();
        // SAFETY: closing our own fd.
        unsafe { libc::close(fd) };
        return Err(e);
    }
    Ok(fd)
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

/// What the relay itself counted, per direction.
#[derive(Default, Clone, Copy)]
struct RelayCounters {
    frames_in: u64,
    gso_frames: u64,
    segments: u64,
    non_ip: u64,
    malformed: u64,
    no_slot: u64,
    delivered: u64,
    send_errors: u64,
}

/// A packet waiting in the delay line: (time µs, arrival order, slot, len, out dir).
type Pending = Reverse<(u64, u64, u32, u16, u8)>;

struct Relay {
    fds: [RawFd; 2],
    dirs: [Direction; 2],
    rc: [RelayCounters; 2],
    slots: Vec<u8>,
    free: Vec<u32>,
    heap: BinaryHeap<Pending>,
    order: u64,
    start: Instant,
}

impl Relay {
    fn now(&self) -> u64 {
        self.start.elapsed().as_micros() as u64
    }

    fn send(&mut self, out: usize, frame: &[u8]) {
        // SAFETY: frame is a valid buffer of its length; fds[out] is ours.
        let r = unsafe { libc::send(self.fds[out], frame.as_ptr().cast(), frame.len(), 0) };
        if r < 0 {
            self.rc[1 - out].send_errors += 1;
        } else {
            self.rc[1 - out].delivered += 1;
        }
    }

    /// One wire frame from side `from`: impaired, queued for the other side.
    fn offer(&mut self, from: usize, frame: &[u8]) {
        self.rc[from].segments += 1;
        let now = self.now();
        let fate = self.dirs[from].offer(now, frame.len());
        for &at in &fate.at[..fate.count] {
            let Some(slot) = self.free.pop() else {
                self.rc[from].no_slot += 1;
                continue;
            };
            let base = slot as usize * SLOT;
            // A zero virtio-net header (nothing to offload), then the frame.
            self.slots[base..base + VNET_HDR_LEN].fill(0);
            self.slots[base + VNET_HDR_LEN..base + VNET_HDR_LEN + frame.len()]
                .copy_from_slice(frame);
            self.order += 1;
            self.heap.push(Reverse((
                at,
                self.order,
                slot,
                frame.len() as u16,
                (1 - from) as u8,
            )));
        }
    }

    fn deliver_due(&mut self) -> Option<u64> {
        let now = self.now();
        while let Some(&Reverse((at, _, slot, len, out))) = self.heap.peek() {
            if at > now {
                return Some(at - now);
            }
            self.heap.pop();
            let base = slot as usize * SLOT;
            let end = base + VNET_HDR_LEN + usize::from(len);
            // SAFETY: the slot's bytes are a valid buffer; fds are ours.
            let r = unsafe {
                libc::send(
                    self.fds[usize::from(out)],
                    self.slots[base..end].as_ptr().cast(),
                    end - base,
                    0,
                )
            };
            let c = &mut self.rc[1 - usize::from(out)];
            if r < 0 {
                c.send_errors += 1;
            } else {
                c.delivered += 1;
            }
            self.free.push(slot);
        }
        None
    }

    fn read_side(&mut self, from: usize, rx: &mut [u8], scratch: &mut [u8]) {
        for _ in 0..BATCH {
            // SAFETY: rx is a valid writable buffer of its length.
            let n = unsafe { libc::recv(self.fds[from], rx.as_mut_ptr().cast(), rx.len(), 0) };
            if n < 0 {
                return;
            }
            let n = n as usize;
            self.rc[from].frames_in += 1;
            if n < VNET_HDR_LEN + ETH_LEN {
                self.rc[from].malformed += 1;
                continue;
            }
            let mut h = [0u8; VNET_HDR_LEN];
            h.copy_from_slice(&rx[..VNET_HDR_LEN]);
            let hdr = VnetHdr::decode(&h);
            let frame = &rx[VNET_HDR_LEN..n];
            let ethertype = u16::from_be_bytes([frame[12], frame[13]]);
            if ethertype != 0x0800 && ethertype != 0x86dd {
                self.rc[from].non_ip += 1;
                let mut out = [0u8; SLOT];
                if frame.len() + VNET_HDR_LEN <= SLOT {
                    out[VNET_HDR_LEN..VNET_HDR_LEN + frame.len()].copy_from_slice(frame);
                    self.send(1 - from, &out[..VNET_HDR_LEN + frame.len()]);
                } else {
                    self.rc[from].malformed += 1;
                }
                continue;
            }
            if hdr.gso_type != 0 {
                self.rc[from].gso_frames += 1;
            }
            let res = split(frame, &hdr, scratch, |seg| self.offer(from, seg));
            if res.is_err() {
                self.rc[from].malformed += 1;
            }
        }
    }
}

fn print_counters(r: &Relay, names: [&str; 2]) {
    for i in 0..2 {
        let c: Counters = r.dirs[i].counters;
        let rc = r.rc[i];
        eprintln!(
            "tcpd-netem: {}->{}: frames_in {} gso_frames {} segments {} non_ip {} malformed {} lost_random {} lost_burst {} dropped_queue {} reordered {} duplicated {} no_slot {} delivered {} send_errors {}",
            names[i], names[1 - i], rc.frames_in, rc.gso_frames, rc.segments, rc.non_ip, rc.malformed,
            c.lost_random, c.lost_burst, c.dropped_queue, c.reordered, c.duplicated, rc.no_slot, rc.delivered, rc.send_errors
        );
    }
}

fn run(cli: &Cli) -> Result<(), String> {
    let (ab, ba) = configs(cli)?;
    if !(1..=1 << 20).contains(&cli.limit) {
        return Err(format!("--limit must be 1..={}", 1 << 20));
    }
    let fa = packet_socket(&cli.a).map_err(|e| format!("{}: {e}", cli.a))?;
    let fb = packet_socket(&cli.b).map_err(|e| format!("{}: {e}", cli.b))?;
    let seed2 = cli.seed.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let mut r = Relay {
        fds: [fa, fb],
        dirs: [
            Direction::new(ab, cli.seed),
            Direction::new(ba, seed2 ^ 0x5555),
        ],
        rc: [RelayCounters::default(); 2],
        slots: vec![0u8; cli.limit * SLOT],
        free: (0..cli.limit as u32).rev().collect(),
        heap: BinaryHeap::with_capacity(cli.limit),
        order: 0,
        start: Instant::now(),
    };
    // SAFETY: installing an async-signal-safe handler (one atomic store).
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
    let mut rx = vec![0u8; RX_MAX];
    let mut scratch = vec![0u8; SLOT];
    while !STOP.load(Ordering::Relaxed) {
        let wait = r.deliver_due();
        let mut pfd = [
            libc::pollfd {
                fd: fa,
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: fb,
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        let ts = wait.map(|us| libc::timespec {
            tv_sec: (us / 1_000_000) as i64,
            tv_nsec: ((us % 1_000_000) * 1000) as i64,
        });
        let tsp = ts
            .as_ref()
            .map_or(std::ptr::null(), |t| t as *const libc::timespec);
        // SAFETY: pfd and the timespec are valid for the call.
        let n = unsafe { libc::ppoll(pfd.as_mut_ptr(), 2, tsp, std::ptr::null()) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(format!("poll: {e}"));
        }
        for (i, p) in pfd.iter().enumerate() {
            if p.revents & libc::POLLIN != 0 {
                r.read_side(i, &mut rx, &mut scratch);
            }
            if p.revents & (libc::POLLERR | libc::POLLHUP | libc::POLLNVAL) != 0 {
                print_counters(&r, [&cli.a, &cli.b]);
                return Err(format!(
                    "{}: interface went away",
                    if i == 0 { &cli.a } else { &cli.b }
                ));
            }
        }
    }
    print_counters(&r, [&cli.a, &cli.b]);
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tcpd-netem: {e}");
            ExitCode::FAILURE
        }
    }
}
