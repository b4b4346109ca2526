//! A virtual network joining two endpoints, driven in virtual time (after
//! quinn's `Pair`): latency, MTU, and seeded loss, duplication, reordering
//! and corruption. `step` moves packets and jumps the clock to the next
//! event; `run_until` fails a test that livelocks.

#![allow(dead_code, clippy::unwrap_used)]

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use tcp::{Config, Duration, Endpoint, Instant};

/// Seeded faults on the link, per packet, each direction.
#[derive(Clone, Copy, Debug, Default)]
pub struct Faults {
    pub loss: f64,
    pub dup: f64,
    pub reorder: f64,
    pub corrupt: f64,
}

/// xorshift64*: small, seeded, good enough for fault decisions.
#[derive(Clone, Debug)]
pub struct Rng(u64);
impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && ((self.next() >> 11) as f64 / (1u64 << 53) as f64) < p
    }
}

/// A packet on the link: (deliver at, sequence, to_b, bytes).
type InFlight = (Instant, u64, bool, Vec<u8>);

pub struct Pair {
    pub a: Endpoint,
    pub b: Endpoint,
    pub now: Instant,
    pub latency: Duration,
    pub faults: Faults,
    pub rng: Rng,
    /// Packets on the link, earliest delivery first.
    queue: BinaryHeap<Reverse<InFlight>>,
    counter: u64,
    buf: Vec<u8>,
    pub delivered: u64,
    pub dropped: u64,
    pub steps: u64,
    /// Deliver with `handle_offloaded(.., true)`, as a TUN with offload
    /// does (checksums vouched for, coalesced segments).
    pub offload: bool,
    /// The largest packet seen on the link.
    pub max_packet: usize,
    /// The link MTU: the largest IP packet the link carries. An endpoint
    /// that emits a larger one fails the test at once (a real link would
    /// drop it, and the transfer would stall with no hint why). The
    /// default is the larger of the two configurations' MTU (or `tso_max`
    /// with segmentation offload, which such a link delivers whole).
    pub mtu: usize,
    /// The size of the buffer handed to `poll_transmit`. The default is
    /// 64 KiB more than the MTU, so that an endpoint can write an oversized
    /// packet and the MTU check sees it; set it to `mtu` to drive the
    /// endpoints as a device with MTU-sized buffers does.
    pub tx_buf_len: usize,
    /// Reordered packets skip the delay (arrive at once, as tcpd-netem's
    /// reordering does) instead of arriving up to two delays late.
    pub reorder_early: bool,
    /// The link's rate each way in bytes per second; 0 (the default): no
    /// limit, every packet sent at once arrives at once. With a rate,
    /// packets leave one after the other (an unbounded queue, no drops).
    pub rate: u64,
    /// When each direction's link (a to b, b to a) is free again.
    link_free: [Instant; 2],
    /// A black hole on the path: packets longer than this vanish without a
    /// trace (no ICMP error), counted in `blackholed`. 0: none.
    pub blackhole: usize,
    pub blackholed: u64,
}

pub const A_ADDR: &str = "10.0.0.1";
pub const B_ADDR: &str = "10.0.0.2";

pub fn config(seed: u64) -> Config {
    Config {
        seed,
        ..Config::default()
    }
}

impl Pair {
    pub fn new(ca: Config, cb: Config) -> Pair {
        let mtu = [ca.mtu, ca.tso_max, cb.mtu, cb.tso_max]
            .into_iter()
            .max()
            .unwrap_or(1500);
        Pair {
            a: Endpoint::new(ca).unwrap(),
            b: Endpoint::new(cb).unwrap(),
            now: Instant::ZERO,
            latency: Duration::from_millis(5),
            faults: Faults::default(),
            rng: Rng::new(1),
            queue: BinaryHeap::new(),
            counter: 0,
            buf: Vec::new(),
            delivered: 0,
            dropped: 0,
            steps: 0,
            offload: false,
            max_packet: 0,
            mtu,
            tx_buf_len: mtu + 65536,
            reorder_early: false,
            rate: 0,
            link_free: [Instant::ZERO; 2],
            blackhole: 0,
            blackholed: 0,
        }
    }

    fn send_from(&mut self, from_a: bool) {
        if self.buf.len() != self.tx_buf_len {
            self.buf = vec![0u8; self.tx_buf_len];
        }
        loop {
            let ep = if from_a { &mut self.a } else { &mut self.b };
            let Some(n) = ep.poll_transmit(self.now, &mut self.buf) else {
                break;
            };
            let pkt = self.buf[..n].to_vec();
            // The link drops a packet above its MTU; the test fails at
            // once, naming it, rather than stalling on a lost packet.
            assert!(
                n <= self.mtu,
                "{} sent a {n}-byte packet on a link with MTU {} at {:?}: {}",
                if from_a { "a" } else { "b" },
                self.mtu,
                self.now,
                describe(&pkt)
            );
            self.max_packet = self.max_packet.max(n);
            if self.blackhole != 0 && n > self.blackhole {
                self.blackholed += 1;
                continue;
            }
            let mut depart = self.now;
            if self.rate > 0 {
                let dir = usize::from(!from_a);
                let start = self.link_free[dir].max(self.now);
                let wire = (n as u64 * 1_000_000).div_ceil(self.rate);
                depart = start + Duration::from_micros(wire);
                self.link_free[dir] = depart;
            }
            let f = self.faults;
            if self.rng.chance(f.loss) {
                self.dropped += 1;
                continue;
            }
            let copies = if self.rng.chance(f.dup) { 2 } else { 1 };
            for _ in 0..copies {
                let mut p = pkt.clone();
                if self.rng.chance(f.corrupt) && !p.is_empty() {
                    let i = (self.rng.next() as usize) % p.len();
                    p[i] ^= 1 << (self.rng.next() % 8);
                }
                let mut at = depart + self.latency;
                if self.rng.chance(f.reorder) {
                    let r = self.rng.next() % (2 * self.latency.as_micros() + 1);
                    if self.reorder_early {
                        at = self.now + Duration::from_micros(r / 20);
                    } else {
                        at += Duration::from_micros(r);
                    }
                }
                self.counter += 1;
                self.queue.push(Reverse((at, self.counter, from_a, p)));
            }
        }
    }

    /// Moves every packet ready now, then jumps to the next event. Returns
    /// false when nothing is pending at all.
    pub fn step(&mut self) -> bool {
        self.steps += 1;
        self.send_from(true);
        self.send_from(false);
        let next_pkt = self.queue.peek().map(|Reverse((t, ..))| *t);
        let ta = self.a.poll_timeout();
        let tb = self.b.poll_timeout();
        let next = [next_pkt, ta, tb].into_iter().flatten().min();
        let Some(next) = next else { return false };
        if next > self.now {
            self.now = next;
        }
        while let Some(Reverse((t, ..))) = self.queue.peek() {
            if *t > self.now {
                break;
            }
            let Some(Reverse((_, _, from_a, p))) = self.queue.pop() else {
                break;
            };
            self.delivered += 1;
            if std::env::var_os("SIM_TRACE").is_some() {
                eprintln!(
                    "{:?} {} {}",
                    self.now,
                    if from_a { "a>b" } else { "b>a" },
                    describe(&p)
                );
            }
            let ep = if from_a { &mut self.b } else { &mut self.a };
            if self.offload {
                ep.handle_offloaded(self.now, &p, true);
            } else {
                ep.handle(self.now, &p);
            }
        }
        if ta.is_some_and(|t| t <= self.now) {
            self.a.handle_timeout(self.now);
        }
        if tb.is_some_and(|t| t <= self.now) {
            self.b.handle_timeout(self.now);
        }
        true
    }

    /// Steps until `done` returns true; panics after `max_steps` (a livelock
    /// guard) or when the network goes quiet first.
    #[track_caller]
    pub fn run_until(&mut self, max_steps: u64, mut done: impl FnMut(&mut Pair) -> bool) {
        for _ in 0..max_steps {
            if done(self) {
                return;
            }
            if !self.step() && !done(self) {
                panic!(
                    "network went quiet at {:?} before the condition held",
                    self.now
                );
            }
        }
        panic!(
            "livelock guard: {} steps without reaching the condition (t = {:?})",
            max_steps, self.now
        );
    }
}

/// The test pattern: byte i of a stream is `(i * 7 + i / 251) % 256`.
pub fn pattern(offset: u64, out: &mut [u8]) {
    for (k, b) in out.iter_mut().enumerate() {
        let i = offset + k as u64;
        *b = ((i * 7 + i / 251) % 256) as u8;
    }
}

/// One line describing a packet, tcpdump style.
pub fn describe(p: &[u8]) -> String {
    use tcp::wire::{parse_ip, parse_tcp};
    let Ok(ip) = parse_ip(p) else {
        return "bad ip".into();
    };
    let Ok(t) = parse_tcp(&ip) else {
        return format!("proto {} len {}", ip.protocol, ip.payload.len());
    };
    format!(
        "{}:{} > {}:{} [{}] seq {} ack {} win {} len {} {:?}",
        ip.src,
        t.src_port,
        ip.dst,
        t.dst_port,
        t.flags,
        t.seq,
        t.ack,
        t.window,
        t.payload.len(),
        t.options
    )
}
