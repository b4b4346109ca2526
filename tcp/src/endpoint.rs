//! The endpoint: owns every connection and listener, demultiplexes packets by
//! 4-tuple, answers ICMP echo and segments to nowhere, and hands out what to
//! transmit, when to wake up and what to tell the application.

use crate::config::Config;
use crate::conn::State;
use crate::stats::Stats;
use crate::time::{Duration, Instant};
use core::fmt;
use std::net::{IpAddr, SocketAddr};

/// A handle to a connection. Handles are never reused while the application
/// may still hold them: a slot's generation changes when it is freed.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId {
    pub(crate) slot: u32,
    pub(crate) gen: u32,
}

impl ConnId {
    /// A small integer naming the connection's slot (for logs and sharding;
    /// slots are reused after [`Event::Closed`]).
    pub fn slot(self) -> u32 {
        self.slot
    }
    /// The packed 64-bit form (slot in the low half, generation in the high).
    pub fn to_u64(self) -> u64 {
        u64::from(self.gen) << 32 | u64::from(self.slot)
    }
}

impl fmt::Debug for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}.{}", self.slot, self.gen)
    }
}
impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// What the endpoint tells the application.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// A connection completed its handshake on the listener at `port` and
    /// waits in its accept queue: call [`Endpoint::accept`].
    Incoming {
        /// The listening port.
        port: u16,
    },
    /// An active open ([`Endpoint::connect`]) reached ESTABLISHED.
    Connected(ConnId),
    /// New in-order data can be read with [`Endpoint::recv`].
    Readable(ConnId),
    /// Send-buffer space opened after a short [`Endpoint::send`].
    Writable(ConnId),
    /// The peer sent FIN and every byte before it has been made readable:
    /// [`Endpoint::recv`] returns `Ok(0)` once the buffer is drained.
    PeerClosed(ConnId),
    /// The peer reset the connection.
    Reset(ConnId),
    /// The connection was dropped: retransmissions, the user timeout or
    /// keep-alive probes went unanswered.
    TimedOut(ConnId),
    /// The connection is finished (both directions closed, reset, timed out
    /// or aborted). The handle is invalid from now on. Always the last event
    /// of a connection that was accepted or connected.
    Closed(ConnId),
}

/// Errors of the application calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// The handle names no live connection (closed, or never existed).
    InvalidHandle,
    /// The call does not fit the connection's state (send after close, ...).
    InvalidState,
    /// Nothing to read now; wait for [`Event::Readable`].
    WouldBlock,
    /// The connection was reset (by the peer, a timeout or [`Endpoint::abort`]).
    ConnectionReset,
    /// A listener already exists on the port.
    PortInUse,
    /// No free ephemeral port for this destination.
    NoPortsAvailable,
    /// The connection table is full ([`Config::max_connections`]).
    TableFull,
    /// Local and remote addresses are of different families, or the local
    /// address is not one of ours.
    BadAddress,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Error::InvalidHandle => "no such connection",
            Error::InvalidState => "operation not valid in this connection state",
            Error::WouldBlock => "operation would block",
            Error::ConnectionReset => "connection reset",
            Error::PortInUse => "port already in use",
            Error::NoPortsAvailable => "no ephemeral port available",
            Error::TableFull => "connection table full",
            Error::BadAddress => "bad address",
        })
    }
}
impl std::error::Error for Error {}

/// A snapshot of one connection, for status pages and tests.
#[derive(Clone, Copy, Debug)]
pub struct ConnInfo {
    /// Our address and port.
    pub local: SocketAddr,
    /// The peer's address and port.
    pub remote: SocketAddr,
    /// The RFC 9293 state.
    pub state: State,
    /// Smoothed RTT (RFC 6298), if sampled.
    pub srtt: Option<Duration>,
    /// Current retransmission timeout.
    pub rto: Duration,
    /// Congestion window, bytes.
    pub cwnd: u32,
    /// Slow-start threshold, bytes.
    pub ssthresh: u32,
    /// Peer's advertised window, bytes (scaled).
    pub snd_wnd: u32,
    /// Window we advertise now, bytes.
    pub rcv_wnd: u32,
    /// Bytes sent and not yet acknowledged.
    pub in_flight: u32,
    /// Bytes queued in the send buffer (unsent or unacknowledged).
    pub send_buffered: usize,
    /// Bytes received in order and not yet released by the application.
    pub recv_buffered: usize,
    /// Effective send MSS.
    pub mss: u16,
    /// Segments retransmitted on this connection.
    pub retransmits: u64,
}






/// The TCP/IP endpoint. See the crate documentation for how to drive it.
pub struct Endpoint {
    config: Config,
    stats: Stats,
}

impl Endpoint {
    /// An endpoint with `config`; fails when the configuration is invalid.
    pub fn new(config: Config) -> Result<Endpoint, String> {
        config.validate()?;
        Ok(Endpoint { config, stats: Stats::default() })
    }
    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }
    /// The counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }
    /// Connections in the table (every state, TIME-WAIT included).
    pub fn connection_count(&self) -> usize {
        0
    }
    /// Connections per state, in RFC order.
    pub fn state_counts(&self) -> [(State, usize); 11] {
        State::ALL.map(|s| (s, 0))
    }
    /// Handles one IP packet read from the device.
    pub fn handle(&mut self, now: Instant, packet: &[u8]) {
        let _ = (now, packet);
    }
    /// Runs the timers due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        let _ = now;
    }
    /// Writes the next packet to send into `buf` (at least MTU bytes) and
    /// returns its length; `None` when there is nothing to send.
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<usize> {
        let _ = (now, buf);
        None
    }
    /// When [`Endpoint::handle_timeout`] should next be called.
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        None
    }
    /// The next event for the application.
    pub fn poll_event(&mut self) -> Option<Event> {
        None
    }
    /// Opens a listener on `port` (every local address) with an accept queue of `backlog`.
    pub fn listen(&mut self, port: u16, backlog: usize) -> Result<(), Error> {
        let _ = (port, backlog);
        Ok(())
    }
    /// Closes the listener on `port`; connections not yet accepted are reset.
    pub fn unlisten(&mut self, port: u16) {
        let _ = port;
    }
    /// Takes the next established connection from `port`'s accept queue.
    pub fn accept(&mut self, port: u16) -> Option<ConnId> {
        let _ = port;
        None
    }
    /// Starts an active open from `local` (an ephemeral port is chosen) to `remote`.
    pub fn connect(&mut self, now: Instant, local: IpAddr, remote: SocketAddr) -> Result<ConnId, Error> {
        let _ = (now, local, remote);
        Err(Error::TableFull)
    }
    /// Queues data; returns how much fitted in the send buffer.
    pub fn send(&mut self, id: ConnId, data: &[u8]) -> Result<usize, Error> {
        let _ = (id, data);
        Err(Error::InvalidHandle)
    }
    /// Free space in the send buffer.
    pub fn send_capacity(&self, id: ConnId) -> Result<usize, Error> {
        let _ = id;
        Err(Error::InvalidHandle)
    }
    /// Reads and releases received data. `Ok(0)`: end of stream.
    /// `Err(WouldBlock)`: nothing now.
    pub fn recv(&mut self, id: ConnId, buf: &mut [u8]) -> Result<usize, Error> {
        let _ = (id, buf);
        Err(Error::InvalidHandle)
    }
    /// Reads received data without releasing it: the bytes keep counting
    /// against the advertised window until [`Endpoint::release`].
    pub fn recv_hold(&mut self, id: ConnId, buf: &mut [u8]) -> Result<usize, Error> {
        let _ = (id, buf);
        Err(Error::InvalidHandle)
    }
    /// Releases `n` bytes read with [`Endpoint::recv_hold`], opening the window.
    pub fn release(&mut self, id: ConnId, n: usize) -> Result<(), Error> {
        let _ = (id, n);
        Err(Error::InvalidHandle)
    }
    /// Half-closes: FIN after the queued data.
    pub fn close(&mut self, id: ConnId) -> Result<(), Error> {
        let _ = id;
        Err(Error::InvalidHandle)
    }
    /// Resets the connection (RST) and frees it.
    pub fn abort(&mut self, id: ConnId) -> Result<(), Error> {
        let _ = id;
        Err(Error::InvalidHandle)
    }
    /// Turns Nagle's algorithm off (`true`) or on for one connection.
    pub fn set_nodelay(&mut self, id: ConnId, nodelay: bool) -> Result<(), Error> {
        let _ = (id, nodelay);
        Err(Error::InvalidHandle)
    }
    /// A snapshot of one connection.
    pub fn info(&self, id: ConnId) -> Result<ConnInfo, Error> {
        let _ = id;
        Err(Error::InvalidHandle)
    }
}
