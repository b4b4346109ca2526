//! The one place where tcpd makes its upstream (kernel-side) sockets.
//!
//! Every forwarded and transparent connection's kernel socket comes from
//! [`open_upstream`], so that a policy for outbound sockets (a mark or a
//! device binding that keeps them off the TUN device, see `--netns`) is
//! applied in one spot. With `--upstream` the socket goes to the SOCKS5
//! proxy, and [`Dial`] runs the proxy's handshake ([`super::socks`]) on it
//! before the connection counts as connected.

use std::io;
use std::net::SocketAddr;

/// Why an upstream connect failed, as the forward counters and the client's
/// answer tell it apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnectFailure {
    /// The upstream answered with a RST (ECONNREFUSED).
    Refused,
    /// No route to the host (EHOSTUNREACH, EHOSTDOWN; an ICMP host or
    /// port-filtered error).
    HostUnreachable,
    /// No route to the network (ENETUNREACH, ENETDOWN).
    NetUnreachable,
    /// No answer within the connect timeout.
    Timeout,
    /// A filter turned it away: a SOCKS5 proxy's "not allowed by ruleset"
    /// (RFC 1928 §6, 0x02).
    Prohibited,
    /// Anything else (no local port left, EACCES from a firewall, ...).
    Other,
}

impl ConnectFailure {
    /// Classifies a connect error.
    pub fn of(e: &io::Error) -> ConnectFailure {
        match e.raw_os_error() {
            Some(libc::ECONNREFUSED) => ConnectFailure::Refused,
            Some(libc::EHOSTUNREACH) | Some(libc::EHOSTDOWN) => ConnectFailure::HostUnreachable,
            Some(libc::ENETUNREACH) | Some(libc::ENETDOWN) => ConnectFailure::NetUnreachable,
            Some(libc::ETIMEDOUT) => ConnectFailure::Timeout,
            _ => ConnectFailure::Other,
        }
    }
    /// The forward counter it goes to.
    pub fn counter(self) -> super::FwdCounter {
        use super::FwdCounter as C;
        match self {
            ConnectFailure::Refused => C::ConnectRefused,
            ConnectFailure::HostUnreachable | ConnectFailure::NetUnreachable => {
                C::ConnectUnreachable
            }
            ConnectFailure::Timeout => C::ConnectTimeout,
            ConnectFailure::Prohibited | ConnectFailure::Other => C::ConnectError,
        }
    }
}

/// Starts a non-blocking TCP connect to `target` and returns the socket
/// (the connect completes, or fails, later: the socket turns writable,
/// see [`connect_result`]).
///
/// The socket has TCP_NODELAY: the client's own stack already decided when
/// to send, and a splice that waited for more (Nagle) would add a delay
/// the client did not ask for. `policy` (SO_MARK, SO_BINDTODEVICE) is
/// applied before the connect, so the SYN already leaves by the right way.
pub fn open_upstream(
    target: SocketAddr,
    policy: &crate::outbound::OutboundPolicy,
) -> io::Result<mio::net::TcpStream> {
    use socket2::{Domain, Protocol, SockAddr, Socket, Type};
    let sock = Socket::new(
        Domain::for_address(target),
        Type::STREAM.nonblocking().cloexec(),
        Some(Protocol::TCP),
    )?;
    sock.set_tcp_nodelay(true)?;
    policy.apply(&sock)?;
    match sock.connect(&SockAddr::from(target)) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    Ok(mio::net::TcpStream::from_std(sock.into()))
}

/// The state of a connect started by [`open_upstream`], when the socket
/// reported readiness: `Ok(true)` connected, `Ok(false)` still in
/// progress (a spurious wake-up), `Err` failed.
pub fn connect_result(sock: &mio::net::TcpStream) -> io::Result<bool> {
    if let Some(e) = sock.take_error()? {
        return Err(e);
    }
    match sock.peer_addr() {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(false),
        Err(e) => Err(e),
    }
}

/// An upstream connect in progress: the TCP connect, and with `--upstream`
/// the SOCKS5 handshake after it ([`Dial::progress`]).
#[derive(Debug)]
pub struct Dial {
    /// The proxy's handshake (boxed: its fixed buffers are for the
    /// handshake only, and a direct connect needs none).
    socks: Option<Box<super::socks::Handshake>>,
    /// The TCP connect (to the destination or the proxy) is done.
    tcp_done: bool,
}

/// Why a [`Dial`] failed: how to refuse the client, the SOCKS5 failure if
/// it was one (for its counter), and the words for the log.
#[derive(Debug)]
pub struct DialFailure {
    /// How the client's SYN is refused.
    pub why: ConnectFailure,
    /// The proxy's failure, if the proxy failed.
    pub socks: Option<super::socks::Failure>,
    /// What happened, for the debug log.
    pub what: String,
}

impl DialFailure {
    fn io(e: &io::Error) -> DialFailure {
        DialFailure {
            why: ConnectFailure::of(e),
            socks: None,
            what: e.to_string(),
        }
    }
    fn socks(f: super::socks::Failure) -> DialFailure {
        DialFailure {
            why: f.refusal(),
            socks: Some(f),
            what: f.to_string(),
        }
    }
}

/// Starts the upstream connect to `target` the way `fwd` says: directly,
/// or to `--upstream`'s proxy with a SOCKS5 handshake to follow. The
/// outbound policy applies to the socket either way ([`open_upstream`]).
pub fn dial(
    target: SocketAddr,
    fwd: &super::Forwarding,
) -> io::Result<(mio::net::TcpStream, Dial)> {
    let (to, socks) = match &fwd.upstream {
        Some(p) => (
            p.addr,
            Some(Box::new(super::socks::Handshake::new(
                target,
                p.auth.as_ref(),
            ))),
        ),
        None => (target, None),
    };
    let sock = open_upstream(to, &fwd.outbound)?;
    Ok((
        sock,
        Dial {
            socks,
            tcp_done: false,
        },
    ))
}

impl Dial {
    /// Moves the connect on after a readiness event of `sock`: `Ok(true)`
    /// connected end to end (for SOCKS5: the proxy's CONNECT reply said
    /// success), `Ok(false)` not yet. Never blocks: every read and write
    /// stops at `WouldBlock` (the socket is edge-triggered, so it reads and
    /// writes until then, or until the handshake needs nothing more).
    /// SOCKS5 outcomes count in `stats`.
    pub fn progress(
        &mut self,
        sock: &mut mio::net::TcpStream,
        stats: Option<&super::RuleStats>,
    ) -> Result<bool, DialFailure> {
        use std::io::{Read, Write};
        if !self.tcp_done {
            match connect_result(sock) {
                Ok(false) => return Ok(false),
                Ok(true) => self.tcp_done = true,
                Err(e) => return Err(DialFailure::io(&e)),
            }
        }
        let Some(h) = self.socks.as_mut() else {
            return Ok(true);
        };
        let count = |c: super::FwdCounter| {
            if let Some(s) = stats {
                s.add(c, 1);
            }
        };
        loop {
            while !h.to_send().is_empty() {
                match sock.write(h.to_send()) {
                    Ok(0) => return Err(DialFailure::io(&io::ErrorKind::WriteZero.into())),
                    Ok(n) => h.sent(n),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(DialFailure::io(&e)),
                }
            }
            let step = match sock.read(h.recv_buf()) {
                Ok(0) => Err(super::socks::Failure::Closed),
                Ok(n) => h.received(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(DialFailure::io(&e)),
            };
            match step {
                Ok(super::socks::Step::More) => {}
                Ok(super::socks::Step::Done) => {
                    count(super::FwdCounter::SocksOk);
                    self.socks = None;
                    return Ok(true);
                }
                Err(f) => {
                    count(f.counter());
                    return Err(DialFailure::socks(f));
                }
            }
        }
    }
}

/// Closes `sock` with a RST instead of a FIN (SO_LINGER with a zero
/// timeout, RFC 9293 §3.10.5 ABORT): the other side learns that the
/// connection broke, not that it ended.
pub fn abort(sock: mio::net::TcpStream) {
    let _ = socket2::SockRef::from(&sock).set_linger(Some(std::time::Duration::ZERO));
    drop(sock);
}

/// The kernel's TCP state of `sock` (`ESTABLISHED`, `FIN-WAIT-2`, ...),
/// from TCP_INFO, for SIGUSR1's connection lines.
pub fn kernel_state(sock: &mio::net::TcpStream) -> &'static str {
    use std::os::fd::AsRawFd;
    // SAFETY: tcp_info is plain old data; getsockopt writes at most `len`
    // bytes into it and tells how many.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: a valid fd, a buffer of `len` bytes.
    let r = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        )
    };
    if r != 0 || len < 1 {
        return "?";
    }
    // Linux's enum tcp_state (include/net/tcp_states.h).
    match info.tcpi_state {
        1 => "ESTABLISHED",
        2 => "SYN-SENT",
        3 => "SYN-RECEIVED",
        4 => "FIN-WAIT-1",
        5 => "FIN-WAIT-2",
        6 => "TIME-WAIT",
        7 => "CLOSED",
        8 => "CLOSE-WAIT",
        9 => "LAST-ACK",
        10 => "LISTEN",
        11 => "CLOSING",
        _ => "?",
    }
}
