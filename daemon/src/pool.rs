//! A bounded pool of byte buffers shared by the reactor and the workers, so
//! that data moving between them reuses a fixed set of allocations. It
//! shrinks when idle: [`Pool::decay`] frees the buffers that nobody took
//! since its previous call.

use crossbeam_channel::{bounded, Receiver, Sender};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// A thread-safe pool of `Vec<u8>`: `get` reuses a returned buffer when one
/// is there, `put` keeps at most the pool's capacity and lets larger or
/// surplus buffers go.
#[derive(Clone)]
pub struct Pool {
    tx: Sender<Vec<u8>>,
    rx: Receiver<Vec<u8>>,
    buf_capacity: usize,
    max_keep: usize,
    /// The fewest buffers the pool held since the last [`Pool::decay`].
    low: Arc<AtomicUsize>,
}

impl Pool {
    /// A pool keeping up to `buffers` buffers; new ones are made with
    /// `buf_capacity` bytes, and buffers that grew past `4 * buf_capacity`
    /// are not kept: the pool holds at most `buffers * 4 * buf_capacity` bytes.
    pub fn new(buffers: usize, buf_capacity: usize) -> Pool {
        let (tx, rx) = bounded(buffers.max(1));
        Pool {
            tx,
            rx,
            buf_capacity,
            max_keep: buf_capacity.saturating_mul(4),
            low: Arc::new(AtomicUsize::new(0)),
        }
    }
    /// Notes the pool's size after a buffer was taken out.
    fn note_low(&self) {
        self.low.fetch_min(self.rx.len(), Ordering::Relaxed);
    }
    /// An empty buffer.
    pub fn get(&self) -> Vec<u8> {
        match self.rx.try_recv() {
            Ok(mut v) => {
                self.note_low();
                v.clear();
                v
            }
            Err(_) => Vec::with_capacity(self.buf_capacity),
        }
    }
    /// A buffer of exactly `n` bytes to read into, its content unspecified
    /// (what it held before, or zeros). A pooled buffer keeps the length it
    /// had when it was returned, so refilling it costs no zeroing (only
    /// growing past that length does): a reader fills it in place instead
    /// of reading into scratch space and copying.
    pub fn get_filled(&self, n: usize) -> Vec<u8> {
        let mut v = match self.rx.try_recv() {
            Ok(v) => {
                self.note_low();
                v
            }
            Err(_) => Vec::with_capacity(n.clamp(2048, self.buf_capacity.max(2048))),
        };
        if v.len() >= n {
            v.truncate(n);
        } else {
            v.resize(n, 0);
        }
        v
    }
    /// An empty buffer for about `n` bytes: a pooled one if there is one,
    /// else a new one of `n` bytes (at least 2 KiB), so that small messages
    /// do not pin large allocations.
    pub fn get_for(&self, n: usize) -> Vec<u8> {
        match self.rx.try_recv() {
            Ok(mut v) => {
                self.note_low();
                v.clear();
                v
            }
            Err(_) => Vec::with_capacity(n.clamp(2048, self.buf_capacity.max(2048))),
        }
    }
    /// Returns a buffer to the pool. Its bytes stay (see
    /// [`Pool::get_filled`]); [`Pool::get`] and [`Pool::get_for`] hand
    /// out buffers emptied.
    pub fn put(&self, v: Vec<u8>) {
        if v.capacity() == 0 || v.capacity() > self.max_keep {
            return;
        }
        let _ = self.tx.try_send(v);
    }
    /// One decay step (call it periodically, never per packet): frees as
    /// many buffers as stayed in the pool, untaken, since the previous step,
    /// and returns the bytes freed. A steady exchange keeps what it cycles;
    /// a pool left full by a burst empties within two steps.
    pub fn decay(&self) -> usize {
        let surplus = self.low.swap(usize::MAX, Ordering::Relaxed);
        let mut freed = 0;
        for _ in 0..surplus.min(self.rx.len()) {
            match self.rx.try_recv() {
                Ok(v) => freed += v.capacity(),
                Err(_) => break,
            }
        }
        self.low.store(self.rx.len(), Ordering::Relaxed);
        freed
    }
    /// Buffers in the pool now.
    pub fn len(&self) -> usize {
        self.rx.len()
    }
    /// Whether the pool holds no buffer.
    pub fn is_empty(&self) -> bool {
        self.rx.is_empty()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn reuses_and_bounds() {
        let p = Pool::new(2, 16);
        let mut a = p.get();
        a.extend_from_slice(b"hello");
        let cap = a.capacity();
        p.put(a);
        p.put(Vec::with_capacity(16));
        p.put(Vec::with_capacity(16));
        assert_eq!(p.len(), 2, "capacity bounds the pool");
        let b = p.get();
        assert!(b.is_empty());
        assert_eq!(b.capacity(), cap);
        p.put(Vec::with_capacity(1000));
        assert_eq!(p.len(), 1, "oversized buffers are not kept");
    }

    #[test]
    fn filled_buffers_are_reused_without_a_copy() {
        // New buffers get at least 2 KiB: small enough to be kept.
        let p = Pool::new(2, 4096);
        let mut a = p.get_filled(8);
        assert_eq!(a.len(), 8);
        a.copy_from_slice(b"abcdefgh");
        let ptr = a.as_ptr();
        p.put(a);
        // The same allocation, its length kept: no zeroing to refill it.
        let b = p.get_filled(4);
        assert_eq!((b.as_ptr(), &b[..]), (ptr, &b"abcd"[..]));
        p.put(b);
        // Growing zero-fills only the new part; `get` hands it out empty.
        let c = p.get_filled(6);
        assert_eq!(&c[..], b"abcd\0\0");
        p.put(c);
        assert!(p.get().is_empty());
    }

    #[test]
    fn decays_what_nobody_takes() {
        let p = Pool::new(8, 16);
        for _ in 0..4 {
            p.put(Vec::with_capacity(16));
        }
        p.decay(); // starts the interval
        let a = p.get(); // 3 left: the low mark
        p.put(a);
        assert!(p.decay() >= 3 * 16);
        assert_eq!(p.len(), 1, "the one in use stays");
        assert!(p.decay() >= 16, "idle a whole interval: gone");
        assert!(p.is_empty());
        assert_eq!(p.decay(), 0);
    }
}
