//! Packetization-layer path MTU discovery (RFC 4821), as Linux's
//! `tcp_mtu_probing`, in virtual time: a path that silently drops packets
//! above 1280 bytes (a black hole: no ICMP error ever comes back).

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use std::net::SocketAddr;
use tcp::{Config, ConnId, Duration, Event, Instant, MtuProbing};

/// b (the server) sends `total` bytes to a and closes; a checks them.
struct Download {
    total: u64,
    sent: u64,
    recvd: u64,
    eof: bool,
    a: ConnId,
    b: Option<ConnId>,
    buf: Vec<u8>,
    check: Vec<u8>,
    /// Largest data segment MSS the server used, and the first one.
    mss_seen: Vec<(Instant, u16)>,
}

impl Download {
    fn start(p: &mut Pair, total: u64) -> Download {
        p.b.listen(80, 16).unwrap();
        let remote: SocketAddr = format!("{B_ADDR}:80").parse().unwrap();
        let a = p.a.connect(p.now, A_ADDR.parse().unwrap(), remote).unwrap();
        Download {
            total,
            sent: 0,
            recvd: 0,
            eof: false,
            a,
            b: None,
            buf: vec![0; 65536],
            check: vec![0; 65536],
            mss_seen: Vec::new(),
        }
    }

    fn pump(&mut self, p: &mut Pair) {
        while let Some(ev) = p.b.poll_event() {
            if let Event::Incoming { port } = ev {
                self.b = Some(p.b.accept(port).unwrap());
            }
        }
        while let Some(ev) = p.a.poll_event() {
            assert!(
                !matches!(ev, Event::Reset(_) | Event::TimedOut(_)),
                "client got {ev:?} at {:?}",
                p.now
            );
        }
        if let Some(b) = self.b {
            while self.sent < self.total {
                let n = ((self.total - self.sent) as usize).min(self.buf.len());
                pattern(self.sent, &mut self.buf[..n]);
                match p.b.send(b, &self.buf[..n]) {
                    Ok(0) | Err(_) => break,
                    Ok(k) => self.sent += k as u64,
                }
            }
            if self.sent == self.total {
                let _ = p.b.close(b);
            }
            if let Ok(i) = p.b.info(b) {
                if self.mss_seen.last().is_none_or(|&(_, m)| m != i.mss) {
                    self.mss_seen.push((p.now, i.mss));
                }
            }
        }
        loop {
            match p.a.recv(self.a, &mut self.buf) {
                Ok(0) => {
                    self.eof = true;
                    break;
                }
                Ok(n) => {
                    pattern(self.recvd, &mut self.check[..n]);
                    assert!(self.buf[..n] == self.check[..n], "stream corrupted");
                    self.recvd += n as u64;
                }
                Err(_) => break,
            }
        }
    }

    /// Runs until the download is whole or `limit` of virtual time passed.
    fn run(&mut self, p: &mut Pair, limit: Duration) -> bool {
        let end = Instant::ZERO + limit;
        loop {
            self.pump(p);
            if self.eof && self.recvd == self.total {
                return true;
            }
            if p.now > end || !p.step() {
                return false;
            }
        }
    }

    fn final_mss(&self) -> u16 {
        self.mss_seen.last().map_or(0, |&(_, m)| m)
    }
}

fn pair(server: impl FnOnce(&mut Config)) -> Pair {
    let mut cb = config(2);
    server(&mut cb);
    let mut p = Pair::new(config(1), cb);
    // The path: 1500-byte links, one hop of 1280 that tells nobody.
    p.blackhole = 1280;
    p
}

/// With probing off (Linux's default, `tcp_mtu_probing` 0) nothing tells
/// the sender: it retransmits the same full-sized segment at each RTO,
/// backing off, and the download makes no progress.
#[test]
fn with_probing_off_a_black_hole_stalls_the_connection() {
    let mut p = pair(|_| {});
    let mut d = Download::start(&mut p, 1 << 20);
    assert!(!d.run(&mut p, Duration::from_secs(60)));
    let s = p.b.stats();
    assert_eq!(d.recvd, 0, "nothing crosses a 1280-byte black hole");
    assert!(s.rto_timeouts >= 7, "rto_timeouts {}", s.rto_timeouts);
    assert_eq!(s.mtup, Default::default());
    assert_eq!(d.final_mss(), 1448);
    assert!(p.blackholed >= 8);
}

/// `--mtu-probing blackhole` (Linux 1): after the RTOs have gone on for
/// 3 s (`tcp_retries1` modelled with 200 ms RTOs), the MSS falls to
/// `tcp_base_mss` (1024) and the data flows; then probes search upward
/// and settle on the largest size the path takes, 1280 bytes exactly
/// (MSS 1228 with timestamps).
#[test]
fn a_black_hole_is_detected_and_the_search_finds_the_path_mtu() {
    let mut p = pair(|c| c.mtu_probing = MtuProbing::Blackhole);
    let mut d = Download::start(&mut p, 5 << 20);
    assert!(d.run(&mut p, Duration::from_secs(120)), "{:?}", d.mss_seen);
    let s = p.b.stats();
    println!("{:?} {:?} at {:?}", s.mtup, d.mss_seen, p.now);
    assert_eq!(s.mtup.blackholes, 1);
    let &(t, first) = d.mss_seen.get(1).unwrap();
    assert_eq!(first, 1024, "{:?}", d.mss_seen);
    assert!(t >= Instant::from_secs(3), "black hole found at {t:?}");
    assert!(t < Instant::from_secs(8), "black hole found at {t:?}");
    // 1288 fails, then 1181, 1234, 1260, 1273, 1280 pass; the range
    // (1280..1287) is then narrower than tcp_probe_threshold.
    assert_eq!(s.mtup.fail, 1, "{:?}", s.mtup);
    assert_eq!(s.mtup.success, 5, "{:?}", s.mtup);
    assert_eq!(s.mtup.probes, 6);
    assert_eq!(d.final_mss(), 1280 - 52);
    // One run of RTOs: the lost probe was found by duplicate ACKs.
    assert!(s.rto_timeouts <= 6, "rto_timeouts {}", s.rto_timeouts);
}

/// `always` (Linux 2): connections start at the base MSS and climb; on a
/// clean 1500-byte path the search stops within `tcp_probe_threshold` of
/// the top (1493, as Linux's binary search does), with no loss.
#[test]
fn probing_always_starts_at_the_base_and_climbs_on_a_clean_path() {
    let mut p = pair(|c| c.mtu_probing = MtuProbing::Always);
    p.blackhole = 0;
    let mut d = Download::start(&mut p, 5 << 20);
    assert!(d.run(&mut p, Duration::from_secs(60)));
    let s = p.b.stats();
    println!("{:?} {:?}", s.mtup, d.mss_seen);
    // The first data segment already goes at the base (probing starts at
    // the first dispatch; the MSS read at the accept is from before it).
    assert_eq!(d.mss_seen[1].1, 1024, "{:?}", d.mss_seen);
    assert!(d.mss_seen[1].0 <= Instant::from_millis(20));
    // 1288, 1394, 1447, 1473, 1486, 1493.
    assert_eq!((s.mtup.success, s.mtup.fail), (6, 0), "{:?}", s.mtup);
    assert_eq!(d.final_mss(), 1493 - 52);
    assert_eq!(s.rto_timeouts, 0);
    assert_eq!(s.mtup.blackholes, 0);
    assert_eq!(s.retransmits, 0);
}

/// `always` over the black hole: the connection never stalls (it starts
/// below the hole), the lost probe costs no RTO and no cwnd cut (Linux:
/// `tcp_mtup_probe_failed`, then `tcp_simple_retransmit`).
#[test]
fn probing_always_over_a_black_hole_loses_only_probes() {
    let mut p = pair(|c| c.mtu_probing = MtuProbing::Always);
    let mut d = Download::start(&mut p, 5 << 20);
    assert!(d.run(&mut p, Duration::from_secs(60)));
    let s = p.b.stats();
    println!("{:?} {:?} rto {}", s.mtup, d.mss_seen, s.rto_timeouts);
    assert_eq!(s.mtup.blackholes, 0);
    assert_eq!(s.rto_timeouts, 0);
    assert_eq!(s.fast_retransmits, 0, "a lost probe enters no recovery");
    assert_eq!(s.mtup.fail, 1);
    assert_eq!(d.final_mss(), 1280 - 52);
    assert!(p.blackholed >= 1);
}

/// The search ends, and after `tcp_probe_interval` starts again from the
/// current size (Linux `tcp_mtu_check_reprobe`): a path that widened is
/// found.
#[test]
fn a_finished_search_reprobes_after_the_interval() {
    let mut p = pair(|c| {
        c.mtu_probing = MtuProbing::Blackhole;
        c.mtu_probe_interval = Duration::from_secs(20);
        // Slow the sender so the transfer outlasts the interval (a fixed
        // 64 KiB send buffer: auto-tuning would grow it).
        c.send_buffer = 64 * 1024;
        c.autotune_buffers = false;
    });
    p.latency = Duration::from_millis(20);
    let mut d = Download::start(&mut p, 200 << 20);
    assert!(!d.run(&mut p, Duration::from_secs(15)));
    assert_eq!(d.final_mss(), 1228, "{:?}", d.mss_seen);
    // The narrow hop goes away.
    p.blackhole = 0;
    assert!(!d.run(&mut p, Duration::from_secs(40)));
    println!("{:?} {:?}", p.b.stats().mtup, d.mss_seen);
    assert_eq!(d.final_mss(), 1493 - 52, "{:?}", d.mss_seen);
}

#[test]
fn mtu_probe_config_is_validated() {
    for (floor, base) in [(47, 1024), (600, 500)] {
        let c = Config {
            mtu_probe_floor: floor,
            mtu_probe_base_mss: base,
            ..Config::default()
        };
        assert!(c.validate().is_err(), "floor {floor} base {base}");
    }
    let c = Config {
        mtu_probe_interval: Duration::ZERO,
        ..Config::default()
    };
    assert!(c.validate().is_err());
    assert_eq!(Config::default().mtu_probing, MtuProbing::Off);
}
