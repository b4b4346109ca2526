//! Buffer auto-tuning in virtual time: the receive buffer grows with the
//! rate the application consumes (dynamic right-sizing, Linux
//! `tcp_rcv_space_adjust`), the send buffer with the congestion window
//! (`tcp_sndbuf_expand`); neither grows under memory pressure or for a slow
//! reader, and both go back to their defaults once the connection idles.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use std::net::SocketAddr;
use tcp::{Config, ConnId, Duration, Event, Instant};

const KIB: usize = 1024;
/// The default buffers (`Config::recv_buffer`, `Config::send_buffer`).
const DEFAULT_BUF: usize = 256 * KIB;

/// One bulk stream a -> b over a pair, with b reading as told.
struct Bulk {
    total: u64,
    sent: u64,
    recvd: u64,
    client: ConnId,
    server: Option<ConnId>,
    /// Read at most this many bytes per `read_every` (a slow reader).
    read_limit: Option<(usize, Duration)>,
    next_read: Instant,
    /// The largest window b advertised, as `ConnInfo::rcv_wnd` saw it.
    max_rcv_wnd: u32,
    /// The most buffer storage each side held at once.
    peak_bytes: [usize; 2],
    /// When the last byte arrived.
    finished: Option<Instant>,
    buf: Vec<u8>,
    check: Vec<u8>,
    /// Close the client's side once everything is written.
    close: bool,
}

impl Bulk {
    fn start(p: &mut Pair, port: u16, total: u64) -> Bulk {
        let remote: SocketAddr = format!("{B_ADDR}:{port}").parse().unwrap();
        let client = p.a.connect(p.now, A_ADDR.parse().unwrap(), remote).unwrap();
        Bulk {
            total,
            sent: 0,
            recvd: 0,
            client,
            server: None,
            read_limit: None,
            next_read: Instant::ZERO,
            max_rcv_wnd: 0,
            peak_bytes: [0; 2],
            finished: None,
            buf: vec![0u8; 64 * KIB],
            check: vec![0u8; 64 * KIB],
            close: false,
        }
    }

    /// One round of the applications at `p.now`.
    fn pump(&mut self, p: &mut Pair) {
        while let Some(ev) = p.a.poll_event() {
            if let Event::Reset(_) | Event::TimedOut(_) = ev {
                panic!("client {ev:?} at {:?}", p.now);
            }
        }
        while let Some(ev) = p.b.poll_event() {
            match ev {
                Event::Incoming { port } => {
                    while let Some(id) = p.b.accept(port) {
                        self.server.get_or_insert(id);
                    }
                }
                Event::Reset(_) | Event::TimedOut(_) => panic!("server {ev:?} at {:?}", p.now),
                _ => {}
            }
        }
        self.peak_bytes[1] = self.peak_bytes[1].max(p.b.buffer_bytes());
        while self.sent < self.total {
            let n = ((self.total - self.sent) as usize).min(self.buf.len());
            pattern(self.sent, &mut self.buf[..n]);
            match p.a.send(self.client, &self.buf[..n]) {
                Ok(0) | Err(_) => break,
                Ok(k) => self.sent += k as u64,
            }
        }
        self.peak_bytes[0] = self.peak_bytes[0].max(p.a.buffer_bytes());
        if self.close && self.sent == self.total {
            self.close = false;
            p.a.close(self.client).unwrap();
        }
        if let Some(id) = self.server {
            let mut budget = usize::MAX;
            if let Some((n, every)) = self.read_limit {
                budget = if p.now >= self.next_read {
                    self.next_read = p.now + every;
                    n
                } else {
                    0
                };
            }
            while budget > 0 {
                let want = budget.min(self.buf.len());
                match p.b.recv(id, &mut self.buf[..want]) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        pattern(self.recvd, &mut self.check[..n]);
                        assert!(
                            self.buf[..n] == self.check[..n],
                            "stream corrupted near byte {}",
                            self.recvd
                        );
                        self.recvd += n as u64;
                        budget -= n;
                    }
                }
            }
            if let Ok(i) = p.b.info(id) {
                self.max_rcv_wnd = self.max_rcv_wnd.max(i.rcv_wnd);
            }
        }
        self.peak_bytes[0] = self.peak_bytes[0].max(p.a.buffer_bytes());
        self.peak_bytes[1] = self.peak_bytes[1].max(p.b.buffer_bytes());
        if self.recvd == self.total && self.finished.is_none() {
            self.finished = Some(p.now);
        }
    }

    /// Runs until every byte arrived.
    #[track_caller]
    fn run(&mut self, p: &mut Pair, max_steps: u64) {
        p.run_until(max_steps, |p| {
            self.pump(p);
            self.finished.is_some()
        });
    }
}

/// The link rate: 1 Gbit/s each way, more than 6 MiB per 100 ms (the
/// windows, not the link, are the bound).
const RATE: u64 = 125_000_000;

/// A pair over a 1 Gbit/s path with `one_way` delay each way, both ends
/// configured by `f`.
fn path(seed: u64, one_way: Duration, f: impl Fn(&mut Config)) -> Pair {
    let mut ca = config(seed);
    let mut cb = config(seed + 1000);
    f(&mut ca);
    f(&mut cb);
    let mut p = Pair::new(ca, cb);
    p.latency = one_way;
    p.rate = RATE;
    p
}

const TWENTY_MB: u64 = 20 << 20;
const RTT: Duration = Duration::from_millis(100);

/// Seconds of virtual time a 20 MB transfer over a 100 ms RTT path took
/// from the first SYN to its last byte, and the pair afterwards.
fn long_fat_transfer(f: impl Fn(&mut Config)) -> (f64, Pair, Bulk) {
    let mut p = path(7, Duration::from_millis(50), f);
    p.b.listen(80, 8).unwrap();
    let mut t = Bulk::start(&mut p, 80, TWENTY_MB);
    t.run(&mut p, 5_000_000);
    let secs = t.finished.unwrap().as_micros() as f64 / 1e6;
    (secs, p, t)
}

#[test]
fn window_scale_allows_the_largest_receive_buffer() {
    // RFC 7323 §2.3: the shift is the least that can say recv_buffer_max
    // (6 MiB: 7, as Linux derives it from tcp_rmem[2]); without
    // auto-tuning it follows recv_buffer (256 KiB: 3), as before.
    let on = Config::default();
    assert_eq!((on.recv_buffer_max, on.send_buffer_max), (6 << 20, 4 << 20));
    assert_eq!(on.recv_wscale(), 7);
    assert!(65535usize << on.recv_wscale() >= on.recv_buffer_max);
    let off = Config {
        autotune_buffers: false,
        ..Config::default()
    };
    assert_eq!(off.recv_wscale(), 3);
    assert_eq!(off.recv_buffer_ceiling(), DEFAULT_BUF);
    assert_eq!(off.send_buffer_ceiling(), DEFAULT_BUF);
}

#[test]
fn long_fat_path_is_not_held_to_one_default_window_per_rtt_and_the_window_grows() {
    // 20 MB over a 100 ms RTT: with fixed 256 KiB buffers the sender can
    // have one window per round trip in flight, 2.6 MB/s; auto-tuned
    // buffers must carry at least three times that.
    let (fixed_secs, ..) = long_fat_transfer(|c| c.autotune_buffers = false);
    let (secs, p, t) = long_fat_transfer(|_| {});
    let rate = TWENTY_MB as f64 / secs;
    let window_rate = DEFAULT_BUF as f64 / RTT.as_micros() as f64 * 1e6;
    let (sa, sb) = (p.a.stats().autotune, p.b.stats().autotune);
    println!(
        "20 MB over 100 ms RTT: {secs:.2} s ({:.1} MB/s) auto-tuned, {fixed_secs:.2} s fixed \
         ({:.1} MB/s; one default window per RTT is {:.1} MB/s); largest window {} KiB; \
         receiver {sb:?}, sender {sa:?}, retransmits {}",
        rate / 1e6,
        TWENTY_MB as f64 / fixed_secs / 1e6,
        window_rate / 1e6,
        t.max_rcv_wnd / 1024,
        p.a.stats().retransmits
    );
    assert!(
        fixed_secs > TWENTY_MB as f64 / window_rate,
        "the fixed window is the bound it should be"
    );
    assert!(
        rate >= 3.0 * window_rate,
        "{:.1} MB/s is below three default windows per RTT ({:.1} MB/s)",
        rate / 1e6,
        3.0 * window_rate / 1e6
    );
    assert!(sb.rcvbuf_grown > 0 && sa.sndbuf_grown > 0);
    assert_eq!(p.a.stats().retransmits, 0);
    // The advertised window grew, up to the maximum and no further.
    assert!(
        t.max_rcv_wnd as usize > 4 * DEFAULT_BUF,
        "largest window {} bytes",
        t.max_rcv_wnd
    );
    assert!(t.max_rcv_wnd as usize <= 6 << 20, "within recv_buffer_max");
    let ib = p.b.info(t.server.unwrap()).unwrap();
    let ia = p.a.info(t.client).unwrap();
    assert!(ib.recv_buffer > 4 * DEFAULT_BUF && ib.recv_buffer <= 6 << 20);
    assert!(ia.send_buffer > 4 * DEFAULT_BUF && ia.send_buffer <= 4 << 20);
    // The sender's storage really held more than a default buffer (the
    // receiver's reader takes each segment as it comes).
    assert!(
        t.peak_bytes[0] > 4 * DEFAULT_BUF,
        "peak {}",
        t.peak_bytes[0]
    );
}

#[test]
fn tuning_with_timestamps_off_uses_the_per_window_rtt() {
    // Without timestamps the receiver times one window (Linux
    // tcp_rcv_rtt_measure); the buffers still grow.
    let (secs, p, _) = long_fat_transfer(|c| c.timestamps = false);
    let window_rate = DEFAULT_BUF as f64 / RTT.as_micros() as f64 * 1e6;
    assert!(p.b.stats().autotune.rcvbuf_grown > 0);
    assert!(TWENTY_MB as f64 / secs >= 3.0 * window_rate, "{secs:.2} s");
}

#[test]
fn idle_connection_goes_back_to_the_default_buffers() {
    let mut p = path(11, Duration::from_millis(50), |_| {});
    p.b.listen(80, 8).unwrap();
    let mut t = Bulk::start(&mut p, 80, 8 << 20);
    t.run(&mut p, 5_000_000);
    let server = t.server.unwrap();
    // Let the last ACKs arrive.
    p.run_until(10_000, |p| p.a.buffer_bytes() == 0);
    let grown = p.b.info(server).unwrap().recv_buffer;
    assert!(grown > DEFAULT_BUF, "the burst grew the receive buffer");
    assert!(p.a.info(t.client).unwrap().send_buffer > DEFAULT_BUF);
    assert!(t.peak_bytes[0] > DEFAULT_BUF);
    // Drained: the storage is back in the pools; an interval of decay
    // gives it back to the allocator.
    assert_eq!(p.a.buffer_bytes() + p.b.buffer_bytes(), 0);
    for ep in [&mut p.a, &mut p.b] {
        ep.release_memory();
        ep.release_memory();
        assert_eq!(ep.buffer_pool_bytes(), 0);
    }
    // Idle for longer than the RTO: both ceilings are the defaults again.
    let idle_until = p.now + Duration::from_secs(2);
    p.now = idle_until;
    p.a.handle_timeout(p.now);
    p.b.handle_timeout(p.now);
    assert_eq!(p.b.info(server).unwrap().recv_buffer, DEFAULT_BUF);
    assert_eq!(p.a.info(t.client).unwrap().send_buffer, DEFAULT_BUF);
    // The next burst starts from them (and is counted) and grows again.
    t.total += 8 << 20;
    t.finished = None;
    t.peak_bytes = [0; 2];
    t.run(&mut p, 5_000_000);
    assert!(p.a.stats().autotune.buf_idle_shrunk >= 1);
    assert!(p.b.stats().autotune.buf_idle_shrunk >= 1);
    assert!(p.b.info(server).unwrap().recv_buffer > DEFAULT_BUF);
}

#[test]
fn nothing_grows_under_memory_pressure() {
    // A second connection whose reader never reads keeps 256 KiB held on
    // both sides, above 2/3 of a 320 KiB limit: both endpoints stay under
    // memory pressure (Linux tcp_under_memory_pressure), and the bulk
    // connection's buffers must not grow. The same run without the limit
    // grows them (so the check can fail).
    let run = |limit: Option<usize>| {
        let mut p = path(21, Duration::from_millis(10), |c| {
            if let Some(l) = limit {
                c.mem_limit = l;
            }
        });
        p.b.listen(80, 8).unwrap();
        p.b.listen(81, 8).unwrap();
        let remote: SocketAddr = format!("{B_ADDR}:81").parse().unwrap();
        let blocker = p.a.connect(p.now, A_ADDR.parse().unwrap(), remote).unwrap();
        let filler = vec![7u8; 64 * KIB];
        // The blocker is accepted (by Bulk's accept loop, which keeps only
        // the first connection: port 81's comes first) and never read.
        let mut t = Bulk::start(&mut p, 80, 3 << 20);
        let mut blocked = 0usize;
        let mut bulk_server = None;
        p.run_until(10_000_000, |p| {
            while let Some(ev) = p.b.poll_event() {
                if let Event::Incoming { port: 80 } = ev {
                    bulk_server = p.b.accept(80);
                } else if let Event::Incoming { port: 81 } = ev {
                    let _ = p.b.accept(81);
                }
            }
            if t.server.is_none() {
                t.server = bulk_server;
            }
            while blocked < 600 * KIB {
                match p.a.send(blocker, &filler) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => blocked += n,
                }
            }
            t.pump(p);
            t.finished.is_some()
        });
        (p, t)
    };
    let (p, t) = run(Some(320 * KIB));
    let (sa, sb) = (p.a.stats(), p.b.stats());
    assert!(
        sa.mem_pressure >= 1 && sb.mem_pressure >= 1,
        "{sa:?} {sb:?}"
    );
    assert_eq!(sb.autotune.rcvbuf_grown, 0, "{:?}", sb.autotune);
    assert_eq!(sa.autotune.sndbuf_grown, 0, "{:?}", sa.autotune);
    assert!(p.b.info(t.server.unwrap()).unwrap().recv_buffer <= DEFAULT_BUF);
    assert!(t.max_rcv_wnd as usize <= DEFAULT_BUF);
    let (p, _) = run(None);
    assert!(p.b.stats().autotune.rcvbuf_grown > 0 || p.a.stats().autotune.sndbuf_grown > 0);
}

#[test]
fn a_slow_reader_does_not_grow_the_receive_buffer() {
    // The application reads 16 KiB per 100 ms (160 KB/s) of a fast sender
    // over a 100 ms RTT: the window fills and the reader, not the path, is
    // the bound; twice what it consumes per RTT is far below the default.
    let mut p = path(31, Duration::from_millis(50), |_| {});
    p.b.listen(80, 8).unwrap();
    let mut t = Bulk::start(&mut p, 80, 1 << 20);
    t.read_limit = Some((16 * KIB, Duration::from_millis(100)));
    for _ in 0..5_000_000 {
        t.pump(&mut p);
        if t.finished.is_some() {
            break;
        }
        if !p.step() {
            // Everything sent is held by b: the reader's next turn.
            p.now = p.now.max(t.next_read);
        }
    }
    let server = t.server.unwrap();
    assert_eq!(p.b.stats().autotune.rcvbuf_grown, 0);
    assert_eq!(p.b.info(server).unwrap().recv_buffer, DEFAULT_BUF);
    assert!(t.max_rcv_wnd as usize <= DEFAULT_BUF);
    assert!(t.peak_bytes[1] <= DEFAULT_BUF + 64 * KIB);
}

#[test]
fn auto_tuning_off_keeps_the_buffers_fixed() {
    let (_, p, t) = long_fat_transfer(|c| c.autotune_buffers = false);
    assert_eq!(p.a.stats().autotune, tcp::AutotuneStats::default());
    assert_eq!(p.b.stats().autotune, tcp::AutotuneStats::default());
    assert!(t.max_rcv_wnd as usize <= DEFAULT_BUF);
}

#[test]
fn tuning_stays_within_configured_maxima() {
    let (_, p, t) = long_fat_transfer(|c| {
        c.recv_buffer_max = 1 << 20;
        c.send_buffer_max = 512 * KIB;
    });
    assert!(p.b.info(t.server.unwrap()).unwrap().recv_buffer <= 1 << 20);
    assert!(p.a.info(t.client).unwrap().send_buffer <= 512 * KIB);
    assert!(t.max_rcv_wnd as usize <= 1 << 20);
    assert!(t.peak_bytes[0] <= 512 * KIB + 64 * KIB);
}
