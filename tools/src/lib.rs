//! Helpers for tcpd developers.
//!
//! The binaries live in `src/bin/`: `tcpload` (a load generator and
//! benchmark client) and `tcpd-refserver` (the same services as tcpd, served
//! by the kernel's TCP, as the reference of the benchmark in `tools/bench.sh`).
//! This library holds what they share.

pub mod netem;
pub mod pattern;
pub mod replay;
pub mod sys;
