//! The crate's own clock types: microseconds since an arbitrary zero.
//!
//! The crate never reads a clock. Every input carries `now`; tests and replays
//! start at zero and jump, the daemon maps the monotonic clock onto it.

use core::fmt;
use core::ops::{Add, AddAssign, Sub};

/// A point in time, in microseconds since an arbitrary zero chosen by the caller.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Instant(u64);

/// A span of time in microseconds.
///
/// With the `serde` feature it (de)serializes as the bare number of
/// microseconds.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(transparent)
)]
pub struct Duration(u64);

impl Instant {
    /// The zero point.
    pub const ZERO: Instant = Instant(0);

    /// An instant `us` microseconds after zero.
    pub const fn from_micros(us: u64) -> Self {
        Instant(us)
    }
    /// An instant `ms` milliseconds after zero.
    pub const fn from_millis(ms: u64) -> Self {
        Instant(ms * 1000)
    }
    /// An instant `s` seconds after zero.
    pub const fn from_secs(s: u64) -> Self {
        Instant(s * 1_000_000)
    }
    /// Microseconds since zero.
    pub const fn as_micros(self) -> u64 {
        self.0
    }
    /// Milliseconds since zero (truncated).
    pub const fn as_millis(self) -> u64 {
        self.0 / 1000
    }
    /// Time elapsed since `earlier`, zero if `earlier` is later.
    pub fn saturating_since(self, earlier: Instant) -> Duration {
        Duration(self.0.saturating_sub(earlier.0))
    }
}

impl Duration {
    /// No time.
    pub const ZERO: Duration = Duration(0);
    /// The longest representable span.
    pub const MAX: Duration = Duration(u64::MAX);

    /// A span of `us` microseconds.
    pub const fn from_micros(us: u64) -> Self {
        Duration(us)
    }
    /// A span of `ms` milliseconds.
    pub const fn from_millis(ms: u64) -> Self {
        Duration(ms * 1000)
    }
    /// A span of `s` seconds.
    pub const fn from_secs(s: u64) -> Self {
        Duration(s * 1_000_000)
    }
    /// The span in microseconds.
    pub const fn as_micros(self) -> u64 {
        self.0
    }
    /// The span in milliseconds (truncated).
    pub const fn as_millis(self) -> u64 {
        self.0 / 1000
    }
    /// Twice the span, saturating.
    pub const fn doubled(self) -> Self {
        Duration(self.0.saturating_mul(2))
    }
    /// `self * n`, saturating.
    pub const fn saturating_mul(self, n: u64) -> Self {
        Duration(self.0.saturating_mul(n))
    }
}

impl Add<Duration> for Instant {
    type Output = Instant;
    fn add(self, d: Duration) -> Instant {
        Instant(self.0.saturating_add(d.0))
    }
}
impl AddAssign<Duration> for Instant {
    fn add_assign(&mut self, d: Duration) {
        self.0 = self.0.saturating_add(d.0);
    }
}
impl Sub<Instant> for Instant {
    type Output = Duration;
    fn sub(self, rhs: Instant) -> Duration {
        Duration(self.0.saturating_sub(rhs.0))
    }
}
impl Add for Duration {
    type Output = Duration;
    fn add(self, d: Duration) -> Duration {
        Duration(self.0.saturating_add(d.0))
    }
}
impl Sub for Duration {
    type Output = Duration;
    fn sub(self, d: Duration) -> Duration {
        Duration(self.0.saturating_sub(d.0))
    }
}
impl From<core::time::Duration> for Duration {
    fn from(d: core::time::Duration) -> Self {
        Duration(u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
    }
}
impl From<Duration> for core::time::Duration {
    fn from(d: Duration) -> Self {
        core::time::Duration::from_micros(d.0)
    }
}
impl fmt::Debug for Instant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:06}s", self.0 / 1_000_000, self.0 % 1_000_000)
    }
}
impl fmt::Display for Instant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}
impl fmt::Debug for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 < 1000 {
            write!(f, "{}us", self.0)
        } else if self.0 < 1_000_000 {
            write!(f, "{}.{:03}ms", self.0 / 1000, self.0 % 1000)
        } else {
            write!(f, "{}.{:06}s", self.0 / 1_000_000, self.0 % 1_000_000)
        }
    }
}
impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}
