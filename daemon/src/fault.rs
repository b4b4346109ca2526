//! A seeded fault injector wrapping a [`Device`]: drops, duplicates,
//! reorders, corrupts and delays packets in both directions.
//!
//! This machine's kernel has no netem, so this is how tests and users impair
//! the link. Every decision comes from one seeded generator (splitmix64), so
//! a given seed and packet sequence give the same faults.
//!
//! - **drop** (P): the packet vanishes.
//! - **dup** (P): the packet is delivered twice in a row.
//! - **reorder** (P): the packet is held back until one to three later
//!   packets in the same direction have passed, or 1 ms (plus any delay)
//!   went by, whichever comes first — a realistic few-packet reordering.
//! - **corrupt** (P): one random byte is flipped (checksums must catch it).
//! - **delay** (ms): every packet is held for a fixed time.
//!
//! Held packets sit in bounded queues ([`FaultConfig::max_held`] per
//! direction, buffers pooled) and are released by [`Device::service`] (out)
//! or [`Device::recv`] (in) once due; [`Device::poll_at`] tells the reactor
//! when. When a queue is full, packets pass undelayed (and are counted).

use crate::config::FaultConfig;
use crate::device::Device;
use std::collections::VecDeque;
use std::io;
use std::os::fd::RawFd;
use std::time::{Duration, Instant};

/// splitmix64: small, fast, good enough for fault decisions.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// A uniform float in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && self.unit() < p
    }
}

struct Held {
    due: Instant,
    /// Released once this many packets have passed in the direction (reorder).
    after: u64,
    buf: Vec<u8>,
}

/// One direction's state.
#[derive(Default)]
struct Dir {
    delayed: VecDeque<Held>,
    reordered: Vec<Held>,
    dup: Option<Vec<u8>>,
    passed: u64,
    dropped: u64,
    duplicated: u64,
    reordered_n: u64,
    corrupted: u64,
    delayed_n: u64,
    overflow: u64,
}

impl Dir {
    fn held(&self) -> usize {
        self.delayed.len() + self.reordered.len()
    }
    fn next_due(&self) -> Option<Instant> {
        let a = self.delayed.front().map(|h| h.due);
        let b = self.reordered.iter().map(|h| h.due).min();
        match (a, b) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
    /// Takes the next packet that may go now, if any.
    fn take_due(&mut self, now: Instant) -> Option<Vec<u8>> {
        if let Some(d) = self.dup.take() {
            return Some(d);
        }
        if let Some(i) = self
            .reordered
            .iter()
            .position(|h| h.after <= self.passed || h.due <= now)
        {
            return Some(self.reordered.swap_remove(i).buf);
        }
        if self.delayed.front().is_some_and(|h| h.due <= now) {
            return self.delayed.pop_front().map(|h| h.buf);
        }
        None
    }
}

/// What to do with one packet.
enum Fate {
    Drop,
    Pass { dup: bool },
    Hold { due: Instant, after: u64, dup: bool },
}

/// The fault-injecting middleware.
pub struct FaultDevice<D> {
    inner: D,
    cfg: FaultConfig,
    rng: Rng,
    rx: Dir,
    tx: Dir,
    pool: Vec<Vec<u8>>,
}

impl<D: Device> FaultDevice<D> {
    /// Wraps `inner` with the faults of `cfg`.
    pub fn new(inner: D, cfg: FaultConfig) -> Self {
        FaultDevice {
            inner,
            rng: Rng::new(cfg.seed),
            cfg,
            rx: Dir::default(),
            tx: Dir::default(),
            pool: Vec::new(),
        }
    }

    fn buf_from(&mut self, data: &[u8]) -> Vec<u8> {
        let mut b = self.pool.pop().unwrap_or_default();
        b.clear();
        b.extend_from_slice(data);
        b
    }

    fn recycle(&mut self, b: Vec<u8>) {
        if self.pool.len() < 2 * self.cfg.max_held + 4 {
            self.pool.push(b);
        }
    }

    fn decide(
        rng: &mut Rng,
        cfg: &FaultConfig,
        dir: &mut Dir,
        now: Instant,
        pkt: &mut [u8],
    ) -> Fate {
        if rng.chance(cfg.drop) {
            dir.dropped += 1;
            return Fate::Drop;
        }
        if !pkt.is_empty() && rng.chance(cfg.corrupt) {
            let i = (rng.next_u64() % pkt.len() as u64) as usize;
            let bit = 1u8 << (rng.next_u64() % 8);
            pkt[i] ^= bit;
            dir.corrupted += 1;
        }
        let dup = rng.chance(cfg.dup);
        if dup {
            dir.duplicated += 1;
        }
        let delay = Duration::from_millis(cfg.delay_ms);
        let reorder = rng.chance(cfg.reorder);
        if (reorder || !delay.is_zero()) && dir.held() >= cfg.max_held {
            dir.overflow += 1;
            return Fate::Pass { dup };
        }
        if reorder {
            dir.reordered_n += 1;
            let k = 1 + rng.next_u64() % 3;
            return Fate::Hold {
                due: now + delay + Duration::from_millis(1),
                after: dir.passed + k,
                dup,
            };
        }
        if !delay.is_zero() {
            dir.delayed_n += 1;
            return Fate::Hold {
                due: now + delay,
                after: u64::MAX,
                dup,
            };
        }
        Fate::Pass { dup }
    }

    /// Releases outbound packets that are due.
    fn release_tx(&mut self, now: Instant) -> io::Result<()> {
        while let Some(b) = self.tx.take_due(now) {
            match self.inner.send(now, &b) {
                Ok(()) => {
                    self.tx.passed += 1;
                    self.recycle(b);
                }
                Err(e) => {
                    // Keep it for the next try (at the front of the line).
                    self.tx.reordered.push(Held {
                        due: now,
                        after: 0,
                        buf: b,
                    });
                    return Err(e);
                }
            }
        }
        Ok(())
    }
}

impl<D: Device> Device for FaultDevice<D> {
    fn recv(&mut self, now: Instant, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if let Some(b) = self.rx.take_due(now) {
                let n = b.len().min(buf.len());
                buf[..n].copy_from_slice(&b[..n]);
                self.recycle(b);
                self.rx.passed += 1;
                return Ok(n);
            }
            let n = self.inner.recv(now, buf)?;
            match Self::decide(&mut self.rng, &self.cfg, &mut self.rx, now, &mut buf[..n]) {
                Fate::Drop => continue,
                Fate::Pass { dup } => {
                    if dup {
                        self.rx.dup = Some(self.buf_from(&buf[..n]));
                    }
                    self.rx.passed += 1;
                    return Ok(n);
                }
                Fate::Hold { due, after, dup } => {
                    let b = self.buf_from(&buf[..n]);
                    if dup {
                        self.rx.dup = Some(self.buf_from(&buf[..n]));
                    }
                    if after == u64::MAX {
                        self.rx.delayed.push_back(Held { due, after, buf: b });
                    } else {
                        self.rx.reordered.push(Held { due, after, buf: b });
                    }
                }
            }
        }
    }

    fn send(&mut self, now: Instant, pkt: &[u8]) -> io::Result<()> {
        // First whatever became due, so held packets keep their place.
        self.release_tx(now)?;
        let mut b = self.buf_from(pkt);
        match Self::decide(&mut self.rng, &self.cfg, &mut self.tx, now, &mut b) {
            Fate::Drop => {
                self.recycle(b);
                Ok(())
            }
            Fate::Pass { dup } => {
                let r = self.inner.send(now, &b);
                if r.is_ok() {
                    self.tx.passed += 1;
                    if dup {
                        self.tx.dup = Some(b);
                        let _ = self.release_tx(now);
                        return Ok(());
                    }
                }
                self.recycle(b);
                r
            }
            Fate::Hold { due, after, dup } => {
                if dup {
                    self.tx.dup = Some(self.buf_from(pkt));
                }
                if after == u64::MAX {
                    self.tx.delayed.push_back(Held { due, after, buf: b });
                } else {
                    self.tx.reordered.push(Held { due, after, buf: b });
                }
                Ok(())
            }
        }
    }

    fn raw_fd(&self) -> RawFd {
        self.inner.raw_fd()
    }

    fn syn_queue_fd(&self) -> Option<RawFd> {
        self.inner.syn_queue_fd()
    }

    fn poll_at(&self) -> Option<Instant> {
        let mine = match (self.rx.next_due(), self.tx.next_due()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        match (mine, self.inner.poll_at()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn service(&mut self, now: Instant) -> io::Result<()> {
        self.inner.service(now)?;
        self.release_tx(now)
    }

    fn has_due_rx(&self, now: Instant) -> bool {
        self.rx.dup.is_some()
            || self
                .rx
                .reordered
                .iter()
                .any(|h| h.after <= self.rx.passed || h.due <= now)
            || self.rx.delayed.front().is_some_and(|h| h.due <= now)
            || self.inner.has_due_rx(now)
    }

    fn counters(&self, out: &mut Vec<(&'static str, u64)>) {
        self.inner.counters(out);
        out.extend([
            ("fault_rx_dropped", self.rx.dropped),
            ("fault_tx_dropped", self.tx.dropped),
            ("fault_rx_duplicated", self.rx.duplicated),
            ("fault_tx_duplicated", self.tx.duplicated),
            ("fault_rx_reordered", self.rx.reordered_n),
            ("fault_tx_reordered", self.tx.reordered_n),
            ("fault_rx_corrupted", self.rx.corrupted),
            ("fault_tx_corrupted", self.tx.corrupted),
            ("fault_rx_delayed", self.rx.delayed_n),
            ("fault_tx_delayed", self.tx.delayed_n),
            ("fault_queue_full", self.rx.overflow + self.tx.overflow),
        ]);
    }

    fn flush(&mut self) {
        self.inner.flush()
    }

    fn begin_flush(&mut self) {
        self.inner.begin_flush()
    }

    fn flushed(&self) -> bool {
        self.inner.flushed()
    }

    fn restore_host(&mut self) {
        self.inner.restore_host()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::collections::VecDeque as Q;

    /// A device backed by two queues, for unit tests.
    struct Loop {
        rx: Q<Vec<u8>>,
        tx: Vec<Vec<u8>>,
    }
    impl Device for Loop {
        fn recv(&mut self, _now: Instant, buf: &mut [u8]) -> io::Result<usize> {
            let p = self.rx.pop_front().ok_or(io::ErrorKind::WouldBlock)?;
            buf[..p.len()].copy_from_slice(&p);
            Ok(p.len())
        }
        fn send(&mut self, _now: Instant, pkt: &[u8]) -> io::Result<()> {
            self.tx.push(pkt.to_vec());
            Ok(())
        }
        fn raw_fd(&self) -> RawFd {
            -1
        }
    }

    fn run(cfg: FaultConfig, n: u32) -> (Vec<u32>, Vec<u32>) {
        let rx = (0..n).map(|i| i.to_be_bytes().to_vec()).collect();
        let mut d = FaultDevice::new(Loop { rx, tx: Vec::new() }, cfg);
        let t0 = Instant::now();
        let mut got = Vec::new();
        let mut buf = [0u8; 64];
        for step in 0..10_000u64 {
            let now = t0 + Duration::from_micros(step * 100);
            while let Ok(k) = d.recv(now, &mut buf) {
                got.push(u32::from_be_bytes(buf[..k].try_into().unwrap()));
            }
            if step < u64::from(n) {
                d.send(now, &(step as u32).to_be_bytes()).unwrap();
            }
            d.service(now).unwrap();
        }
        let sent = d
            .inner
            .tx
            .iter()
            .map(|p| u32::from_be_bytes(p[..].try_into().unwrap()))
            .collect();
        (got, sent)
    }

    #[test]
    fn no_faults_is_transparent() {
        let (rx, tx) = run(FaultConfig::default(), 100);
        assert_eq!(rx, (0..100).collect::<Vec<_>>());
        assert_eq!(tx, (0..100).collect::<Vec<_>>());
    }

    #[test]
    fn faults_are_seeded_and_plausible() {
        let cfg = FaultConfig {
            drop: 0.1,
            dup: 0.05,
            reorder: 0.1,
            seed: 7,
            ..FaultConfig::default()
        };
        let a = run(cfg, 2000);
        let b = run(cfg, 2000);
        assert_eq!(a, b, "same seed, same faults");
        for v in [&a.0, &a.1] {
            let mut uniq = v.clone();
            uniq.sort_unstable();
            uniq.dedup();
            assert!(
                uniq.len() > 1650 && uniq.len() < 1950,
                "drops ~10%: {}",
                uniq.len()
            );
            assert!(v.len() > uniq.len(), "some duplicates");
            assert!(v.windows(2).any(|w| w[1] < w[0]), "some reordering");
            // Reordering is local: nothing moves by more than a handful of places.
            for w in v.windows(2) {
                assert!(w[0] < w[1] + 8, "{} before {}", w[0], w[1]);
            }
        }
        let c = run(FaultConfig { seed: 8, ..cfg }, 2000);
        assert_ne!(a, c, "another seed, other faults");
    }

    #[test]
    fn delay_holds_packets() {
        let cfg = FaultConfig {
            delay_ms: 5,
            ..FaultConfig::default()
        };
        let mut d = FaultDevice::new(
            Loop {
                rx: Q::from(vec![vec![1u8]]),
                tx: Vec::new(),
            },
            cfg,
        );
        let t0 = Instant::now();
        let mut buf = [0u8; 8];
        assert!(d.recv(t0, &mut buf).is_err());
        assert_eq!(d.poll_at(), Some(t0 + Duration::from_millis(5)));
        assert!(!d.has_due_rx(t0 + Duration::from_millis(4)));
        assert!(d.has_due_rx(t0 + Duration::from_millis(5)));
        assert_eq!(d.recv(t0 + Duration::from_millis(5), &mut buf).unwrap(), 1);
        d.send(t0, &[9]).unwrap();
        assert!(d.inner.tx.is_empty());
        d.service(t0 + Duration::from_millis(5)).unwrap();
        assert_eq!(d.inner.tx, vec![vec![9]]);
    }
}
