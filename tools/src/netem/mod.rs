//! The link model of `tcpd-netem`: seeded per-direction impairments
//! (random and Gilbert-Elliott loss, a rate-limited drop-tail bottleneck,
//! one-way delay with jitter, reordering, duplication) and the router's
//! view of offloaded packets (cutting GSO packets at `gso_size`,
//! completing partial checksums).
//!
//! Everything here is pure: time comes in as microseconds, randomness from
//! the direction's own seeded generator, so the unit tests can check the
//! model without a device.

pub mod gso;

use std::collections::VecDeque;

/// The fault injector's seeded generator (SplitMix64), so that the same
/// seed draws the same sequence in both.
pub use daemon::fault::Rng;

/// Gilbert-Elliott burst loss: a Good and a Bad state; each packet first
/// moves the chain (Good→Bad with `p`, Bad→Good with `r`), then is lost
/// with `1 - k` in Good and `1 - h` in Bad (the parameters of netem's
/// `loss gemodel p r 1-h 1-k`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GilbertElliott {
    /// Good → Bad transition probability per packet.
    pub p: f64,
    /// Bad → Good transition probability per packet.
    pub r: f64,
    /// Delivery probability in Bad.
    pub h: f64,
    /// Delivery probability in Good.
    pub k: f64,
}

/// The impairments of one direction.
#[derive(Clone, Debug, PartialEq)]
pub struct DirConfig {
    /// Independent random loss per packet.
    pub loss: f64,
    /// Burst loss, on top of `loss`.
    pub ge: Option<GilbertElliott>,
    /// One-way delay, µs.
    pub delay_us: u64,
    /// Jitter: each delayed packet gets delay ± uniform(jitter), µs.
    pub jitter_us: u64,
    /// Share of packets that skip the delay (arrive early: reordering).
    pub reorder: f64,
    /// Share of packets delivered twice.
    pub dup: f64,
    /// Bottleneck rate in bits/s; 0 = none.
    pub rate_bps: u64,
    /// Packets the bottleneck queue holds (drop-tail beyond).
    pub queue: usize,
}

impl Default for DirConfig {
    fn default() -> DirConfig {
        DirConfig {
            loss: 0.0,
            ge: None,
            delay_us: 0,
            jitter_us: 0,
            reorder: 0.0,
            dup: 0.0,
            rate_bps: 0,
            queue: 1000,
        }
    }
}

/// What the model did with packets, per direction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Packets offered to the direction.
    pub packets: u64,
    /// Lost by random loss.
    pub lost_random: u64,
    /// Lost by Gilbert-Elliott loss.
    pub lost_burst: u64,
    /// Dropped by the full bottleneck queue.
    pub dropped_queue: u64,
    /// Sent past the delay (reordered).
    pub reordered: u64,
    /// Extra copies made.
    pub duplicated: u64,
}

/// The fate of one packet: up to two delivery times (µs); none when lost.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fate {
    /// Delivery times; `count` of them are valid.
    pub at: [u64; 2],
    /// 0 (lost), 1, or 2 (duplicated).
    pub count: usize,
}

/// One direction of the link: the impairment model and its state.
#[derive(Debug)]
pub struct Direction {
    cfg: DirConfig,
    rng: Rng,
    ge_bad: bool,
    /// Departure times of the packets in the bottleneck queue (the head
    /// is on the wire); at most `cfg.queue` entries.
    departures: VecDeque<u64>,
    /// The impairment counters.
    pub counters: Counters,
}

impl Direction {
    /// A direction with its own seed.
    pub fn new(cfg: DirConfig, seed: u64) -> Direction {
        let cap = cfg.queue;
        Direction {
            cfg,
            rng: Rng::new(seed),
            ge_bad: false,
            departures: VecDeque::with_capacity(cap),
            counters: Counters::default(),
        }
    }

    /// Whether the Gilbert-Elliott chain is in its Bad state.
    pub fn ge_bad(&self) -> bool {
        self.ge_bad
    }

    /// Decides the fate of a packet of `len` bytes offered at `now` (µs):
    /// loss, then the bottleneck queue, then delay (or reordering), then
    /// duplication.
    pub fn offer(&mut self, now: u64, len: usize) -> Fate {
        self.counters.packets += 1;
        let lost = Fate {
            at: [0; 2],
            count: 0,
        };
        if let Some(ge) = self.cfg.ge {
            let flip = if self.ge_bad { ge.r } else { ge.p };
            if self.rng.chance(flip) {
                self.ge_bad = !self.ge_bad;
            }
            let deliver = if self.ge_bad { ge.h } else { ge.k };
            if !self.rng.chance(deliver) {
                self.counters.lost_burst += 1;
                return lost;
            }
        }
        if self.rng.chance(self.cfg.loss) {
            self.counters.lost_random += 1;
            return lost;
        }
        let mut depart = now;
        if self.cfg.rate_bps > 0 {
            while self.departures.front().is_some_and(|&d| d <= now) {
                self.departures.pop_front();
            }
            if self.departures.len() >= self.cfg.queue {
                self.counters.dropped_queue += 1;
                return lost;
            }
            let start = self.departures.back().map_or(now, |&d| d.max(now));
            let tx = (len as u64 * 8 * 1_000_000).div_ceil(self.cfg.rate_bps);
            depart = start + tx;
            self.departures.push_back(depart);
        }
        let at = if self.rng.chance(self.cfg.reorder) {
            self.counters.reordered += 1;
            depart
        } else {
            let j = self.cfg.jitter_us;
            let jitter = if j > 0 {
                (self.rng.next_u64() % (2 * j + 1)) as i64 - j as i64
            } else {
                0
            };
            (depart + self.cfg.delay_us)
                .saturating_add_signed(jitter)
                .max(depart)
        };
        if self.rng.chance(self.cfg.dup) {
            self.counters.duplicated += 1;
            return Fate {
                at: [at, at],
                count: 2,
            };
        }
        Fate {
            at: [at, 0],
            count: 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_loss_rate_within_bounds() {
        let cfg = DirConfig {
            loss: 0.03,
            ..Default::default()
        };
        let mut d = Direction::new(cfg, 7);
        let n = 100_000;
        let lost = (0..n).filter(|i| d.offer(*i, 1500).count == 0).count();
        // 3 % of 100 000: 3000, σ ≈ 54; ±5σ.
        assert!((2730..=3270).contains(&lost), "lost {lost}");
        assert_eq!(d.counters.lost_random, lost as u64);
        // Seeded: the same seed loses the same packets.
        let mut a = Direction::new(d.cfg.clone(), 9);
        let mut b = Direction::new(d.cfg.clone(), 9);
        for i in 0..1000 {
            assert_eq!(a.offer(i, 100), b.offer(i, 100));
        }
    }

    #[test]
    fn gilbert_elliott_bursts() {
        // Bad is entered with 1 %, left with 25 % (mean burst 4 packets);
        // all lost in Bad, none in Good.
        let ge = GilbertElliott {
            p: 0.01,
            r: 0.25,
            h: 0.0,
            k: 1.0,
        };
        let cfg = DirConfig {
            ge: Some(ge),
            ..Default::default()
        };
        let mut d = Direction::new(cfg, 3);
        let (mut entries, mut lost, mut run, mut runs) = (0u64, 0u64, 0u64, Vec::new());
        let mut was_bad = false;
        for i in 0..200_000 {
            let f = d.offer(i, 100);
            assert_eq!(f.count == 0, d.ge_bad(), "lost exactly in Bad");
            if d.ge_bad() && !was_bad {
                entries += 1;
            }
            if f.count == 0 {
                lost += 1;
                run += 1;
            } else if run > 0 {
                runs.push(run);
                run = 0;
            }
            was_bad = d.ge_bad();
        }
        // Stationary share of Bad: p / (p + r) = 3.85 %.
        let share = lost as f64 / 200_000.0;
        assert!((0.033..0.044).contains(&share), "share {share}");
        let mean = runs.iter().sum::<u64>() as f64 / runs.len() as f64;
        assert!((3.5..4.5).contains(&mean), "mean burst {mean}");
        assert!(entries > 1000);
    }

    #[test]
    fn delay_keeps_order_without_jitter_and_reorder_share() {
        let cfg = DirConfig {
            delay_us: 5000,
            ..Default::default()
        };
        let mut d = Direction::new(cfg, 1);
        let mut last = 0;
        for i in 0..1000 {
            let f = d.offer(i * 10, 100);
            assert_eq!(f.count, 1);
            assert_eq!(f.at[0], i * 10 + 5000);
            assert!(f.at[0] >= last);
            last = f.at[0];
        }
        let cfg = DirConfig {
            delay_us: 5000,
            jitter_us: 1000,
            reorder: 0.1,
            ..Default::default()
        };
        let mut d = Direction::new(cfg, 2);
        let n = 50_000u64;
        let mut early = 0;
        for i in 0..n {
            let f = d.offer(i, 100);
            let lat = f.at[0] - i;
            if lat == 0 {
                early += 1;
            } else {
                assert!((4000..=6000).contains(&lat), "latency {lat}");
            }
        }
        assert_eq!(early, d.counters.reordered);
        let share = early as f64 / n as f64;
        assert!((0.09..0.11).contains(&share), "reorder share {share}");
    }

    #[test]
    fn duplication_share() {
        let cfg = DirConfig {
            dup: 0.05,
            ..Default::default()
        };
        let mut d = Direction::new(cfg, 4);
        let twice = (0..20_000).filter(|i| d.offer(*i, 100).count == 2).count();
        assert!((800..1200).contains(&twice), "{twice}");
    }

    #[test]
    fn rate_limiter_paces_and_drops_tail() {
        // 100 Mbit/s: a 1250-byte packet takes 100 µs on the wire. A burst
        // of 60 at t=0 into a 50-packet queue: 50 queued, 10 dropped.
        let cfg = DirConfig {
            rate_bps: 100_000_000,
            queue: 50,
            delay_us: 20_000,
            ..Default::default()
        };
        let mut d = Direction::new(cfg, 5);
        let fates: Vec<Fate> = (0..60).map(|_| d.offer(0, 1250)).collect();
        for (i, f) in fates.iter().take(50).enumerate() {
            assert_eq!(f.count, 1);
            assert_eq!(f.at[0], (i as u64 + 1) * 100 + 20_000);
        }
        assert!(fates[50..].iter().all(|f| f.count == 0));
        assert_eq!(d.counters.dropped_queue, 10);
        // Once the queue drained, packets go through again, paced.
        let f = d.offer(5000, 1250);
        assert_eq!(f.at[0], 5100 + 20_000);
        // Long-run rate: 10 000 packets offered faster than the line rate
        // leave at it.
        let mut last = 0;
        let mut sent = 0u64;
        for i in 0..10_000u64 {
            let f = d.offer(10_000 + i * 50, 1250);
            if f.count == 1 {
                sent += 1;
                last = f.at[0];
            }
        }
        let secs = (last - 20_000 - 10_000) as f64 / 1e6;
        let mbit = sent as f64 * 1250.0 * 8.0 / secs / 1e6;
        assert!((95.0..=101.0).contains(&mbit), "{mbit} Mbit/s");
    }
}
