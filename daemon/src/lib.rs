//! tcpd's OS side: the TUN device and its middleware (pcap tap, fault
//! injector), the mio reactor that drives the `tcp` endpoint, the worker
//! threads that run the services, signals and counters.
//!
//! [`run`] takes a [`Config`] and serves until SIGINT/SIGTERM.

pub mod clock;
pub mod config;
pub mod device;
pub mod error;
pub mod fault;
pub mod forward;
pub mod netns;
pub mod offload;
pub mod outbound;
pub mod pcap;
pub mod pool;
pub mod reactor;
mod run;
pub mod services;
pub mod sidecar;
pub mod steer;
pub mod testdir;
pub mod tun;
pub mod worker;

pub use config::{Config, FaultConfig, IpNet};
pub use error::Error;
pub use netns::NetnsTarget;
pub use outbound::OutboundPolicy;
pub use run::{banner, run};
