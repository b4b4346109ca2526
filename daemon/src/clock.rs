//! The daemon's clock: maps the monotonic clock onto [`tcp::Instant`]
//! (microseconds since the daemon started) and onto wall-clock microseconds
//! for pcap timestamps, from one common zero, so that a pcap record's
//! timestamp minus [`Clock::start_unix_us`] is exactly the `now` the
//! endpoint was given for that packet.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// A monotonic zero and the wall-clock time it corresponds to.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    start: Instant,
    start_unix_us: u64,
}

impl Clock {
    /// A clock whose zero is now.
    pub fn new() -> Clock {
        let start = Instant::now();
        let start_unix_us = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0);
        Clock {
            start,
            start_unix_us,
        }
    }
    /// The monotonic zero.
    pub fn start(&self) -> Instant {
        self.start
    }
    /// Wall-clock microseconds since the Unix epoch at the zero.
    pub fn start_unix_us(&self) -> u64 {
        self.start_unix_us
    }
    /// `now` as the endpoint's time (µs since the zero).
    pub fn tcp(&self, now: Instant) -> tcp::Instant {
        tcp::Instant::from_micros(now.saturating_duration_since(self.start).as_micros() as u64)
    }
    /// `now` truncated to whole microseconds (what the endpoint sees).
    pub fn micros(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.start).as_micros() as u64
    }
    /// The monotonic instant of an endpoint time.
    pub fn to_std(&self, t: tcp::Instant) -> Instant {
        self.start + std::time::Duration::from_micros(t.as_micros())
    }
    /// Wall-clock microseconds of `now`.
    pub fn unix_us(&self, now: Instant) -> u64 {
        self.start_unix_us + self.micros(now)
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}
