//! Test harness: one in-memory connection driven through a [`Driver`] the way
//! the inline host drives it, with a chosen send credit per step.

use super::driver::Driver;
use super::{ConnCtx, Service};

/// A simulated connection: bytes the peer sent and the host has not read
/// yet, what the handler wrote, and how the connection ended.
pub(crate) struct Sim {
    pub driver: Driver,
    /// Bytes received from the peer, not yet read by the host.
    rx: Vec<u8>,
    /// The peer sent FIN after `rx`.
    peer_fin: bool,
    eof_told: bool,
    /// Everything the handler wrote.
    pub tx: Vec<u8>,
    /// Bytes released (consumed) so far.
    pub released: usize,
    /// The handler closed its direction.
    pub closed: bool,
    /// The handler aborted.
    pub aborted: bool,
    /// The host's read chunk.
    chunk: usize,
    /// The most bytes the driver held unconsumed at any time.
    pub max_pending: usize,
    scratch: Vec<u8>,
}

pub(crate) fn ctx() -> ConnCtx {
    ConnCtx {
        local: "10.0.0.2:80".parse().unwrap(),
        remote: "10.0.0.1:40000".parse().unwrap(),
    }
}

impl Sim {
    pub fn new(service: &dyn Service) -> Sim {
        Sim {
            driver: Driver::new(service.new_handler(&ctx())),
            rx: Vec::new(),
            peer_fin: false,
            eof_told: false,
            tx: Vec::new(),
            released: 0,
            closed: false,
            aborted: false,
            chunk: 64 * 1024,
            max_pending: 0,
            scratch: Vec::new(),
        }
    }

    /// Sets the host's read chunk (how many bytes per `data` call).
    pub fn chunk(mut self, n: usize) -> Sim {
        self.chunk = n;
        self
    }

    /// The peer sends `bytes`.
    pub fn send(&mut self, bytes: &[u8]) {
        assert!(!self.peer_fin, "send after FIN");
        self.rx.extend_from_slice(bytes);
    }

    /// The peer sends FIN.
    pub fn fin(&mut self) {
        self.peer_fin = true;
    }

    fn apply(&mut self, step: super::Step) {
        self.released += step.consumed;
        if step.close {
            assert!(!self.closed, "close reported twice");
            self.closed = true;
        }
        if step.abort {
            self.aborted = true;
        }
        self.max_pending = self.max_pending.max(self.driver.pending_len());
    }

    /// One host round with `credit` bytes of send credit in total: offers
    /// what the peer sent (as the inline host does), then wakes the handler
    /// if it waits for credit and credit is left. Returns bytes written.
    pub fn step(&mut self, credit: usize) -> usize {
        let before = self.tx.len();
        let mut credit = credit;
        if self.driver.blocked() && credit > 0 {
            let mut out = Vec::new();
            let step = self.driver.writable(&mut out, credit);
            credit -= out.len();
            self.tx.extend_from_slice(&out);
            self.apply(step);
        }
        loop {
            let room = self.driver.room().min(self.chunk);
            if room == 0 || self.rx.is_empty() || self.aborted {
                break;
            }
            let n = room.min(self.rx.len());
            self.scratch.clear();
            self.scratch.extend(self.rx.drain(..n));
            let mut out = Vec::new();
            let step = self.driver.data(&self.scratch, &mut out, credit);
            credit -= out.len();
            self.tx.extend_from_slice(&out);
            self.apply(step);
        }
        if self.peer_fin && self.rx.is_empty() && !self.eof_told && !self.aborted {
            self.eof_told = true;
            let mut out = Vec::new();
            let step = self.driver.eof(&mut out, credit);
            self.tx.extend_from_slice(&out);
            self.apply(step);
        }
        self.tx.len() - before
    }

    /// Steps with `credit` each until nothing changes for a few rounds (or
    /// `limit` steps). Returns the number of steps taken.
    pub fn run(&mut self, credit: usize, limit: usize) -> usize {
        let mut idle = 0;
        for i in 0..limit {
            let rx = self.rx.len();
            let rel = self.released;
            let wrote = self.step(credit);
            if wrote == 0 && rx == self.rx.len() && rel == self.released {
                idle += 1;
                if idle > 2 {
                    return i;
                }
            } else {
                idle = 0;
            }
        }
        limit
    }

    /// Bytes the peer sent that the host has not read yet.
    pub fn unread(&self) -> usize {
        self.rx.len()
    }
}

/// Deterministic pseudo-random numbers for tests (xorshift).
pub(crate) struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// `n` bytes of pseudo-random data.
pub(crate) fn data(n: usize, seed: u64) -> Vec<u8> {
    let mut r = Rng(seed | 1);
    (0..n).map(|_| r.next() as u8).collect()
}
