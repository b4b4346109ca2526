//! Byte buffers for connections: a growable ring and a pool that recycles
//! the rings' storage, so an idle connection holds no buffer memory and a
//! busy one allocates nothing per packet.

use crate::seq::SeqNum;

/// The smallest storage handed out, and the storage every connection may
/// hold per direction whatever the memory pressure (as Linux guarantees
/// each socket `tcp_rmem[0]`/`tcp_wmem[0]` in `__sk_mem_raise_allocated`),
/// so that no connection can be starved of all progress.
pub(crate) const MIN_CHUNK: usize = 4096;

/// The endpoint's buffer memory: free storage kept for reuse, by
/// power-of-two size class, and the account of storage lent to
/// connections against the global limit ([`crate::Config::mem_limit`], the
/// analogue of Linux's `tcp_mem`).
///
/// Pressure follows Linux's three `tcp_mem` levels, derived from the one
/// limit with Linux's default proportions (`tcp_init_mem`: 1/2, 2/3, 1):
/// the endpoint enters memory pressure when connections hold more than 2/3
/// of the limit and leaves it once they hold less than 1/2; past the limit
/// itself, growth is refused (beyond [`MIN_CHUNK`]).
#[derive(Debug)]
pub(crate) struct BufPool {
    classes: Vec<Vec<Vec<u8>>>,
    /// Bytes of free storage in `classes`.
    bytes: usize,
    /// Most bytes of free storage kept.
    limit: usize,
    /// The least `bytes` since the last decay step: storage that nobody
    /// took during a whole interval is surplus.
    low: usize,
    /// Bytes of storage lent to connections (ring capacities).
    held: usize,
    /// Most bytes connections may hold together.
    mem_limit: usize,
    /// Memory pressure is on (Linux: tcp_memory_pressure).
    pressure: bool,
    /// Pressure was entered since the last [`BufPool::take_pressure_event`].
    pressure_event: bool,
}

impl BufPool {
    /// A pool keeping at most `limit` bytes of free storage, lending at
    /// most `mem_limit` bytes to connections.
    pub(crate) fn new(limit: usize, mem_limit: usize) -> Self {
        BufPool {
            classes: (0..usize::BITS).map(|_| Vec::new()).collect(),
            bytes: 0,
            limit,
            low: 0,
            held: 0,
            mem_limit,
            pressure: false,
            pressure_event: false,
        }
    }

    fn class(size: usize) -> usize {
        size.trailing_zeros() as usize
    }

    /// Bytes of free storage kept for reuse.
    pub(crate) fn free_bytes(&self) -> usize {
        self.bytes
    }

    /// Bytes of storage lent to connections.
    pub(crate) fn held_bytes(&self) -> usize {
        self.held
    }

    /// Whether the endpoint is under memory pressure: windows and send
    /// buffers do not grow (Linux: tcp_under_memory_pressure).
    pub(crate) fn under_pressure(&self) -> bool {
        self.pressure
    }

    /// True once per entry into memory pressure (for the counter).
    pub(crate) fn take_pressure_event(&mut self) -> bool {
        core::mem::take(&mut self.pressure_event)
    }

    /// Re-evaluates the pressure state after `held` changed, with Linux's
    /// hysteresis (tcp_enter_memory_pressure above tcp_mem[1],
    /// tcp_leave_memory_pressure below tcp_mem[0]).
    fn update_pressure(&mut self) {
        let high = self.mem_limit / 3 * 2;
        let low = self.mem_limit / 2;
        if !self.pressure && self.held > high {
            self.pressure = true;
            self.pressure_event = true;
        } else if self.pressure && self.held < low {
            self.pressure = false;
        }
    }

    /// Whether lending `extra` more bytes stays within the global limit.
    fn may_lend(&self, extra: usize) -> bool {
        self.held.saturating_add(extra) <= self.mem_limit
    }

    /// Storage of exactly `size` bytes (a power of two, or the limit),
    /// lent to a connection.
    /// The caller re-evaluates the pressure once the old storage is back
    /// (a growth holds both for a moment).
    fn get(&mut self, size: usize) -> Vec<u8> {
        self.held += size;
        if size.is_power_of_two() {
            if let Some(v) = self.classes[Self::class(size)].pop() {
                self.bytes -= v.len();
                self.low = self.low.min(self.bytes);
                return v;
            }
        }
        vec![0u8; size]
    }

    /// Takes back storage a connection held; kept for reuse unless the
    /// pool is full.
    fn put(&mut self, v: Vec<u8>) {
        let n = v.len();
        if n == 0 {
            return;
        }
        self.held = self.held.saturating_sub(n);
        self.update_pressure();
        if n.is_power_of_two() && n >= MIN_CHUNK && self.bytes + n <= self.limit {
            self.bytes += n;
            self.classes[Self::class(n)].push(v);
        }
    }

    /// One decay step (call it once per interval, never per packet): frees
    /// the free storage that stayed unused since the previous step, largest
    /// first, and returns how many bytes were freed. A steady exchange keeps
    /// what it cycles; after a burst the pool empties within two steps.
    pub(crate) fn decay(&mut self) -> usize {
        let mut surplus = self.low;
        let mut freed = 0;
        for class in self.classes.iter_mut().rev() {
            let mut took = false;
            while surplus > 0 {
                let Some(v) = class.pop() else { break };
                surplus = surplus.saturating_sub(v.len());
                freed += v.len();
                took = true;
            }
            if took && class.is_empty() {
                // Give the class's own vector back as well.
                *class = Vec::new();
            }
        }
        self.bytes -= freed;
        self.low = self.bytes;
        freed
    }
}

/// A ring of bytes whose storage grows on demand up to a limit and goes back
/// to the pool when the ring is empty. Offsets are relative to the head.
#[derive(Debug, Default)]
pub(crate) struct RingBuf {
    data: Vec<u8>,
    head: usize,
    len: usize,
}

impl RingBuf {
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn capacity(&self) -> usize {
        self.data.len()
    }

    /// Makes room for `need` bytes from the head (bounded by `limit`, the
    /// connection's own ceiling). `Ok(capacity)` when the ring could grow as
    /// far as asked (or `limit` allows); `Err(capacity)` when the global
    /// memory limit refused the growth (Linux: sk_mem_schedule failing):
    /// the ring keeps what it had, or gets [`MIN_CHUNK`] if it had less.
    pub(crate) fn reserve(
        &mut self,
        need: usize,
        limit: usize,
        pool: &mut BufPool,
    ) -> Result<usize, usize> {
        if need <= self.data.len() {
            return Ok(self.data.len());
        }
        let mut size = need.max(MIN_CHUNK).next_power_of_two();
        if size > limit {
            size = limit.max(need.min(limit));
        }
        if size <= self.data.len() {
            return Ok(self.data.len());
        }
        let mut refused = false;
        if size > MIN_CHUNK && !pool.may_lend(size - self.data.len()) {
            // Over the global limit: only the guaranteed minimum.
            refused = true;
            size = MIN_CHUNK.min(limit);
            if size <= self.data.len() {
                return Err(self.data.len());
            }
        }
        let mut new = pool.get(size);
        // Copy the live bytes, unwrapping the ring. Out-of-order bytes live
        // beyond `len` in the receive buffer: copy the whole old storage.
        let old = core::mem::take(&mut self.data);
        if !old.is_empty() {
            let (a, b) = old.split_at(self.head);
            new[..b.len()].copy_from_slice(b);
            new[b.len()..b.len() + a.len()].copy_from_slice(a);
        }
        self.head = 0;
        pool.put(old);
        pool.update_pressure();
        self.data = new;
        if refused {
            Err(self.data.len())
        } else {
            Ok(self.data.len())
        }
    }

    /// Gives the storage back when the ring holds nothing, unless the caller
    /// still expects bytes beyond `len` (out-of-order data).
    pub(crate) fn shrink_if_empty(&mut self, pool: &mut BufPool) {
        if self.len == 0 && !self.data.is_empty() {
            pool.put(core::mem::take(&mut self.data));
            self.head = 0;
        }
    }

    /// Frees the storage whatever it holds.
    pub(crate) fn clear(&mut self, pool: &mut BufPool) {
        self.len = 0;
        self.head = 0;
        pool.put(core::mem::take(&mut self.data));
    }

    /// Appends as much of `src` as fits in the current capacity.
    pub(crate) fn push(&mut self, src: &[u8]) -> usize {
        let off = self.len;
        let n = self.write_at(off, src);
        self.len += n;
        n
    }

    /// Writes `src` at `off` from the head without changing the length
    /// (for out-of-order data). Returns how much fitted.
    pub(crate) fn write_at(&mut self, off: usize, src: &[u8]) -> usize {
        let cap = self.data.len();
        if off >= cap {
            return 0;
        }
        let n = src.len().min(cap - off);
        let start = (self.head + off) % cap;
        let first = n.min(cap - start);
        self.data[start..start + first].copy_from_slice(&src[..first]);
        self.data[..n - first].copy_from_slice(&src[first..n]);
        n
    }

    /// Extends the length by `n` bytes already written with `write_at`.
    pub(crate) fn extend(&mut self, n: usize) {
        self.len = (self.len + n).min(self.data.len());
    }

    /// Copies bytes from `off` into `dst`; returns how many.
    pub(crate) fn read_at(&self, off: usize, dst: &mut [u8]) -> usize {
        if off >= self.len {
            return 0;
        }
        let n = dst.len().min(self.len - off);
        let cap = self.data.len();
        let start = (self.head + off) % cap;
        let first = n.min(cap - start);
        dst[..first].copy_from_slice(&self.data[start..start + first]);
        dst[first..n].copy_from_slice(&self.data[..n - first]);
        n
    }

    /// Drops `n` bytes from the head.
    pub(crate) fn consume(&mut self, n: usize) {
        let n = n.min(self.len);
        if n == 0 {
            return;
        }
        // The head moves even when the ring empties: out-of-order bytes
        // beyond `len` stay where they were written.
        self.head = (self.head + n) % self.data.len();
        self.len -= n;
    }
}

/// Out-of-order ranges `[start, end)` above RCV.NXT, sorted and disjoint,
/// at most `limit` of them (RFC 9293 §3.10.7.4: segments beyond RCV.NXT are
/// held for later processing).
#[derive(Debug, Default)]
pub(crate) struct Ranges {
    pub(crate) list: Vec<(SeqNum, SeqNum)>,
}

impl Ranges {
    /// Adds `[start, end)`, merging with neighbours. Returns false, changing
    /// nothing, when that would exceed `limit` ranges.
    pub(crate) fn add(&mut self, start: SeqNum, end: SeqNum, limit: usize) -> bool {
        let mut s = start;
        let mut e = end;
        // First range that ends at or after `start` (touching merges).
        let mut i = 0;
        while i < self.list.len() && self.list[i].1 < s {
            i += 1;
        }
        let mut j = i;
        while j < self.list.len() && self.list[j].0 <= e {
            s = s.min(self.list[j].0);
            e = e.max(self.list[j].1);
            j += 1;
        }
        if i == j && self.list.len() >= limit {
            return false;
        }
        self.list.splice(i..j, core::iter::once((s, e)));
        true
    }

    /// Removes everything below `nxt`; if the first range starts at or below
    /// `nxt`, returns its end (the new RCV.NXT).
    pub(crate) fn advance(&mut self, nxt: SeqNum) -> Option<SeqNum> {
        let mut out = None;
        while let Some(&(s, e)) = self.list.first() {
            if e <= nxt {
                self.list.remove(0);
            } else if s <= nxt {
                self.list.remove(0);
                out = Some(e);
                break;
            } else {
                break;
            }
        }
        out
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Forgets everything below `lo`, trimming a range that straddles it.
    pub(crate) fn trim_below(&mut self, lo: SeqNum) {
        while let Some(first) = self.list.first_mut() {
            if first.1 <= lo {
                self.list.remove(0);
            } else {
                if first.0 < lo {
                    first.0 = lo;
                }
                break;
            }
        }
    }

    /// The end of the range holding `seq`, if any.
    pub(crate) fn covering(&self, seq: SeqNum) -> Option<SeqNum> {
        self.list
            .iter()
            .find(|(s, e)| *s <= seq && seq < *e)
            .map(|r| r.1)
    }

    /// The start of the first range beginning after `seq`.
    pub(crate) fn next_start_after(&self, seq: SeqNum) -> Option<SeqNum> {
        self.list.iter().find(|(s, _)| *s > seq).map(|r| r.0)
    }

    /// The highest byte held + 1.
    pub(crate) fn highest(&self) -> Option<SeqNum> {
        self.list.last().map(|r| r.1)
    }

    /// Bytes held within `[lo, hi)`.
    pub(crate) fn bytes_within(&self, lo: SeqNum, hi: SeqNum) -> u32 {
        let mut n = 0;
        for &(s, e) in &self.list {
            let a = s.max(lo);
            let b = e.min(hi);
            if a < b {
                n += b.since(a);
            }
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ring_grows_wraps_and_returns_storage() {
        let mut pool = BufPool::new(1 << 20, 1 << 30);
        let mut r = RingBuf::default();
        assert_eq!(r.capacity(), 0);
        r.reserve(10, 1 << 16, &mut pool).ok();
        assert_eq!(r.capacity(), 4096);
        let data: Vec<u8> = (0..4000u32).map(|i| i as u8).collect();
        assert_eq!(r.push(&data), 4000);
        r.consume(3000);
        assert_eq!(r.push(&data[..3000]), 3000); // wraps
        let mut out = vec![0u8; 4000];
        assert_eq!(r.read_at(0, &mut out), 4000);
        assert_eq!(&out[..1000], &data[3000..4000]);
        assert_eq!(&out[1000..], &data[..3000]);
        // Growing keeps the order.
        r.reserve(8000, 1 << 16, &mut pool).ok();
        assert_eq!(r.capacity(), 8192);
        assert_eq!(r.read_at(0, &mut out), 4000);
        assert_eq!(&out[..1000], &data[3000..4000]);
        r.consume(4000);
        r.shrink_if_empty(&mut pool);
        assert_eq!(r.capacity(), 0);
        assert_eq!(pool.bytes, 4096 + 8192);
        // Reuse from the pool.
        r.reserve(5000, 1 << 16, &mut pool).ok();
        assert_eq!(pool.bytes, 4096);
    }

    #[test]
    fn pool_decays_what_nobody_takes() {
        let mut pool = BufPool::new(1 << 20, 1 << 30);
        let mut rings: Vec<RingBuf> = (0..4).map(|_| RingBuf::default()).collect();
        for r in &mut rings {
            assert!(r.reserve(60_000, 1 << 16, &mut pool).is_ok());
        }
        assert_eq!(pool.held_bytes(), 4 << 16);
        for r in &mut rings {
            r.clear(&mut pool);
        }
        assert_eq!((pool.held_bytes(), pool.free_bytes()), (0, 4 << 16));
        // One ring keeps cycling a buffer: that one stays, the rest go.
        pool.decay(); // the first step only starts the interval
        rings[0].reserve(60_000, 1 << 16, &mut pool).ok();
        rings[0].clear(&mut pool);
        assert_eq!(pool.decay(), 3 << 16);
        assert_eq!(pool.free_bytes(), 1 << 16);
        // Idle for a whole interval: all of it goes.
        assert_eq!(pool.decay(), 1 << 16);
        assert_eq!(pool.free_bytes(), 0);
        assert_eq!(pool.decay(), 0);
    }

    #[test]
    fn global_limit_refuses_growth_beyond_the_minimum() {
        let mut pool = BufPool::new(1 << 20, 96 * 1024);
        let mut a = RingBuf::default();
        let mut b = RingBuf::default();
        assert_eq!(a.reserve(64 * 1024, 1 << 16, &mut pool), Ok(64 * 1024));
        assert!(!pool.under_pressure(), "64 KiB of 96 KiB is below 2/3");
        assert_eq!(b.reserve(20_000, 1 << 16, &mut pool), Ok(32 * 1024));
        assert!(pool.under_pressure() && pool.take_pressure_event());
        assert!(!pool.take_pressure_event(), "counted once per entry");
        // At the limit: no growth, but a ring holds its data.
        let data: Vec<u8> = (0..20_000u32).map(|i| (i % 251) as u8).collect();
        assert_eq!(b.push(&data), 20_000);
        assert_eq!(b.reserve(40_000, 1 << 16, &mut pool), Err(32 * 1024));
        let mut out = vec![0u8; 20_000];
        assert_eq!(b.read_at(0, &mut out), 20_000);
        assert_eq!(out, data);
        // A ring without storage still gets the guaranteed minimum.
        let mut c = RingBuf::default();
        assert_eq!(c.reserve(10_000, 1 << 16, &mut pool), Err(MIN_CHUNK));
        // Pressure ends below half the limit.
        a.clear(&mut pool);
        assert!(!pool.under_pressure());
        assert_eq!(pool.held_bytes(), 32 * 1024 + MIN_CHUNK);
    }

    #[test]
    fn limit_not_power_of_two() {
        let mut pool = BufPool::new(1 << 20, 1 << 30);
        let mut r = RingBuf::default();
        assert_eq!(r.reserve(5000, 6000, &mut pool), Ok(6000));
        assert_eq!(r.reserve(7000, 6000, &mut pool), Ok(6000));
    }

    proptest! {
        /// Reassembly against a simple model: a bitmap of received offsets.
        #[test]
        fn ranges_match_model(segs in proptest::collection::vec((0u32..200, 1u32..40), 1..60)) {
            let base = SeqNum(u32::MAX - 100); // exercise the wrap
            let mut ranges = Ranges::default();
            let mut model = [false; 240];
            let mut nxt = 0u32;
            for (off, len) in segs {
                let end = off + len;
                if end <= nxt {
                    continue;
                }
                if off <= nxt {
                    nxt = end;
                    if let Some(e) = ranges.advance(base + nxt) {
                        nxt = nxt.max(e.since(base));
                    }
                } else if !ranges.add(base + off, base + end, 1000) {
                    continue;
                }
                for b in off..end {
                    model[b as usize] = true;
                }
                let prefix = model.iter().take_while(|b| **b).count() as u32;
                prop_assert_eq!(prefix, nxt);
                for w in ranges.list.windows(2) {
                    prop_assert!(w[0].1 < w[1].0, "disjoint and sorted");
                }
                for r in &ranges.list {
                    prop_assert!(r.0 > base + nxt);
                    for b in r.0.since(base)..r.1.since(base) {
                        prop_assert!(model[b as usize]);
                    }
                }
            }
        }
    }

    #[test]
    fn scoreboard_queries() {
        let mut r = Ranges::default();
        r.add(SeqNum(100), SeqNum(200), 8);
        r.add(SeqNum(300), SeqNum(400), 8);
        assert_eq!(r.covering(SeqNum(150)), Some(SeqNum(200)));
        assert_eq!(r.covering(SeqNum(200)), None);
        assert_eq!(r.next_start_after(SeqNum(200)), Some(SeqNum(300)));
        assert_eq!(r.highest(), Some(SeqNum(400)));
        assert_eq!(r.bytes_within(SeqNum(150), SeqNum(350)), 100);
        r.trim_below(SeqNum(150));
        assert_eq!(
            r.list,
            vec![(SeqNum(150), SeqNum(200)), (SeqNum(300), SeqNum(400))]
        );
        r.trim_below(SeqNum(250));
        assert_eq!(r.list, vec![(SeqNum(300), SeqNum(400))]);
    }

    #[test]
    fn ranges_limit() {
        let mut r = Ranges::default();
        assert!(r.add(SeqNum(10), SeqNum(20), 2));
        assert!(r.add(SeqNum(30), SeqNum(40), 2));
        assert!(!r.add(SeqNum(50), SeqNum(60), 2));
        assert!(r.add(SeqNum(20), SeqNum(30), 2)); // merges all three into one
        assert_eq!(r.list, vec![(SeqNum(10), SeqNum(40))]);
        assert_eq!(r.advance(SeqNum(5)), None);
        assert_eq!(r.advance(SeqNum(10)), Some(SeqNum(40)));
        assert!(r.is_empty());
    }
}
