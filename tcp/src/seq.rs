//! Wrapping 32-bit sequence numbers (RFC 9293 §3.4).
//!
//! Comparisons are modulo 2^32: `a < b` when `b - a`, as a signed 32-bit
//! number, is positive. This is only meaningful for numbers less than 2^31
//! apart, which the window rules guarantee.

use core::cmp::Ordering;
use core::fmt;
use core::ops::{Add, AddAssign, Sub};

/// A TCP sequence number.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SeqNum(pub u32);

impl SeqNum {
    /// The raw 32-bit value.
    pub const fn get(self) -> u32 {
        self.0
    }
    /// The distance from `earlier` to `self`, as an unsigned count of bytes.
    /// Only meaningful when `earlier <= self`.
    pub const fn since(self, earlier: SeqNum) -> u32 {
        self.0.wrapping_sub(earlier.0)
    }
    /// Signed distance `self - other`.
    pub const fn diff(self, other: SeqNum) -> i32 {
        self.0.wrapping_sub(other.0) as i32
    }
    /// The larger of two numbers in sequence space.
    pub fn max(self, other: SeqNum) -> SeqNum {
        if self >= other {
            self
        } else {
            other
        }
    }
    /// The smaller of two numbers in sequence space.
    pub fn min(self, other: SeqNum) -> SeqNum {
        if self <= other {
            self
        } else {
            other
        }
    }
    /// `lo <= self < hi` in sequence space (RFC 9293 §3.4 "=<" and "<" tests).
    pub fn in_range(self, lo: SeqNum, hi: SeqNum) -> bool {
        self.since(lo) < hi.since(lo)
    }
}

impl PartialOrd for SeqNum {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Sequence-space order. Not transitive over the whole space (no total order
/// exists modulo 2^32), but consistent for numbers less than 2^31 apart.
impl Ord for SeqNum {
    fn cmp(&self, other: &Self) -> Ordering {
        self.diff(*other).cmp(&0)
    }
}

impl Add<u32> for SeqNum {
    type Output = SeqNum;
    fn add(self, n: u32) -> SeqNum {
        SeqNum(self.0.wrapping_add(n))
    }
}
impl AddAssign<u32> for SeqNum {
    fn add_assign(&mut self, n: u32) {
        self.0 = self.0.wrapping_add(n);
    }
}
impl Sub<u32> for SeqNum {
    type Output = SeqNum;
    fn sub(self, n: u32) -> SeqNum {
        SeqNum(self.0.wrapping_sub(n))
    }
}
impl fmt::Debug for SeqNum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}
impl fmt::Display for SeqNum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn wraps() {
        let a = SeqNum(u32::MAX - 1);
        let b = a + 4;
        assert_eq!(b, SeqNum(2));
        assert!(a < b);
        assert_eq!(b.since(a), 4);
        assert_eq!(a.diff(b), -4);
        assert!(SeqNum(u32::MAX).in_range(a, b));
        assert!(!b.in_range(a, b));
    }

    proptest! {
        #[test]
        fn order_across_wrap(base in any::<u32>(), d in 1u32..(1 << 31)) {
            let a = SeqNum(base);
            let b = a + d;
            prop_assert!(a < b);
            prop_assert!(b > a);
            prop_assert_eq!(b.since(a), d);
            prop_assert_eq!(b - d, a);
            prop_assert_eq!(a.max(b), b);
            prop_assert_eq!(a.min(b), a);
            prop_assert!(a.in_range(a, b));
            prop_assert!(!b.in_range(a, b));
        }
    }
}
