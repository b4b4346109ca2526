//! The `/bytes/N` body: byte `i` is `i % 251` (see DESIGN.md, "HTTP paths").
//!
//! 251 is prime, so the pattern does not line up with any power-of-two
//! buffer or segment size: a lost, duplicated or misplaced segment shows up
//! as a mismatch.

/// The modulus of the pattern.
pub const MODULUS: usize = 251;

/// A precomputed run of the pattern, long enough that any window of up to
/// `window` bytes starting at any phase (`offset % 251`) is a plain slice.
#[derive(Debug, Clone)]
pub struct Pattern {
    bytes: Vec<u8>,
    window: usize,
}

impl Pattern {
    /// A pattern whose [`Pattern::slice`] serves windows of up to `window` bytes.
    pub fn new(window: usize) -> Pattern {
        let len = window + MODULUS;
        let bytes = (0..len).map(|i| (i % MODULUS) as u8).collect();
        Pattern { bytes, window }
    }

    /// Largest window [`Pattern::slice`] returns.
    pub fn window(&self) -> usize {
        self.window
    }

    /// The pattern bytes at stream offsets `offset .. offset + len`, with
    /// `len` clamped to the window.
    pub fn slice(&self, offset: u64, len: usize) -> &[u8] {
        let phase = (offset % MODULUS as u64) as usize;
        let len = len.min(self.window);
        &self.bytes[phase..phase + len]
    }
}

/// Checks a byte stream against the pattern as it arrives, chunk by chunk.
#[derive(Debug, Clone)]
pub struct Checker {
    pattern: Pattern,
    offset: u64,
}

/// The first byte that did not match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mismatch {
    /// Stream offset of the byte.
    pub offset: u64,
    /// What arrived.
    pub got: u8,
    /// What the pattern says.
    pub want: u8,
}

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "byte {} is {} but should be {} (i % 251)",
            self.offset, self.got, self.want
        )
    }
}

impl Checker {
    /// A checker at stream offset 0, comparing chunks of up to `window`
    /// bytes at a time (longer chunks are split).
    pub fn new(window: usize) -> Checker {
        Checker {
            pattern: Pattern::new(window.max(1)),
            offset: 0,
        }
    }

    /// Bytes checked so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Checks the next `chunk` of the stream.
    pub fn check(&mut self, chunk: &[u8]) -> Result<(), Mismatch> {
        for part in chunk.chunks(self.pattern.window()) {
            let want = self.pattern.slice(self.offset, part.len());
            if part != want {
                let i = part.iter().zip(want).position(|(a, b)| a != b).unwrap_or(0);
                return Err(Mismatch {
                    offset: self.offset + i as u64,
                    got: part[i],
                    want: want[i],
                });
            }
            self.offset += part.len() as u64;
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn slice_follows_the_pattern_at_any_offset() {
        let p = Pattern::new(1000);
        for off in [0u64, 1, 250, 251, 252, 1 << 40, u64::MAX - 2000] {
            let s = p.slice(off, 600);
            assert_eq!(s.len(), 600);
            for (k, b) in s.iter().enumerate() {
                assert_eq!(*b as u64, (off + k as u64) % 251, "offset {off} + {k}");
            }
        }
        assert_eq!(p.slice(3, 5000).len(), 1000, "clamped to the window");
    }

    #[test]
    fn checker_accepts_the_stream_in_odd_chunks() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let mut c = Checker::new(4096);
        for part in data.chunks(7777) {
            c.check(part).unwrap();
        }
        assert_eq!(c.offset(), 100_000);
    }

    #[test]
    fn checker_reports_the_first_bad_byte() {
        let mut data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        data[5003] ^= 0x40;
        let mut c = Checker::new(1024);
        let err = c.check(&data).unwrap_err();
        assert_eq!(err.offset, 5003);
        assert_eq!(err.want, (5003 % 251) as u8);
        assert_eq!(err.got, ((5003 % 251) as u8) ^ 0x40);
    }
}
