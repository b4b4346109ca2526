//! # tcp: a sans-IO TCP/IP core
//!
//! Everything that decides what goes on the wire, with no I/O: no sockets, no
//! files, no threads, no clock and no global RNG. The caller (the `daemon`
//! crate, a replay, a test) owns the device and the clock and drives an
//! [`Endpoint`]:
//!
//! - **inputs**: [`Endpoint::handle`] for each IP packet read from the device,
//!   [`Endpoint::handle_timeout`] when [`Endpoint::poll_timeout`] is reached,
//!   and the application calls ([`Endpoint::listen`], [`Endpoint::accept`],
//!   [`Endpoint::connect`], [`Endpoint::send`], [`Endpoint::recv`],
//!   [`Endpoint::close`], [`Endpoint::abort`]);
//! - **outputs**: [`Endpoint::poll_transmit`] (one whole IP packet into a
//!   caller-owned buffer), [`Endpoint::poll_timeout`], [`Endpoint::poll_event`].
//!
//! After any input or application call, drain every output. Time never goes
//! backwards. Two endpoints built with the same [`Config`] (seed included)
//! and fed the same inputs at the same times emit the same bytes.

#![deny(unsafe_code)]

mod buffer;
mod config;
mod congestion;
mod conn;
mod cubic;
mod endpoint;
mod frto;
mod hystart;
mod listen;
mod prr;
mod rack;
mod rtt;
pub mod seq;
mod stats;
pub mod time;
pub mod wire;

pub use config::{Config, Keepalive, MtuProbing};
pub use congestion::{AckInfo, Congestion, CongestionControl, Cubic, NewReno};
pub use conn::State;
pub use endpoint::{ConnId, ConnInfo, Endpoint, Error, Event, Refusal, SynId, SynInfo, Transmit};
pub use rtt::RttEstimator;
pub use seq::SeqNum;
pub use stats::{
    AutotuneStats, DeferStats, IcmpOutStats, IcmpStats, MtuProbeStats, ReasmStats, Stats,
};
pub use time::{Duration, Instant};
pub use wire::{IcmpError, Unreach};
