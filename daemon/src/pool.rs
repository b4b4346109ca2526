//! A bounded pool of byte buffers shared by the reactor and the workers, so
//! that data moving between them reuses a fixed set of allocations.

use crossbeam_channel::{bounded, Receiver, Sender};

/// A thread-safe pool of `Vec<u8>`: `get` reuses a returned buffer when one
/// is there, `put` keeps at most the pool's capacity and lets larger or
/// surplus buffers go.
#[derive(Clone)]
pub struct Pool {
    tx: Sender<Vec<u8>>,
    rx: Receiver<Vec<u8>>,
    buf_capacity: usize,
    max_keep: usize,
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
        }
    }
    /// An empty buffer.
    pub fn get(&self) -> Vec<u8> {
        match self.rx.try_recv() {
            Ok(v) => v,
            Err(_) => Vec::with_capacity(self.buf_capacity),
        }
    }
    /// An empty buffer for about `n` bytes: a pooled one if there is one,
    /// else a new one of `n` bytes (at least 2 KiB), so that small messages
    /// do not pin large allocations.
    pub fn get_for(&self, n: usize) -> Vec<u8> {
        match self.rx.try_recv() {
            Ok(v) => v,
            Err(_) => Vec::with_capacity(n.clamp(2048, self.buf_capacity.max(2048))),
        }
    }
    /// Returns a buffer to the pool.
    pub fn put(&self, mut v: Vec<u8>) {
        if v.capacity() == 0 || v.capacity() > self.max_keep {
            return;
        }
        v.clear();
        let _ = self.tx.try_send(v);
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
}
