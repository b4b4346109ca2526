//! The client side of SOCKS5 for `--upstream socks5://[USER:PASS@]HOST:PORT`:
//! forwarded and transparent connections reach their destination through a
//! SOCKS5 proxy (RFC 1928 CONNECT) instead of directly, with RFC 1929
//! username/password authentication when the URL has credentials.
//!
//! [`Handshake`] is sans-IO: it holds the messages to send and says how
//! many bytes of the proxy's answer to read next, never more than the
//! message being read still lacks. So the handshake never reads a byte past
//! the proxy's CONNECT reply: whatever the destination sends at once (an
//! SSH or SMTP banner) stays in the kernel socket for the splice. Both
//! buffers are fixed arrays sized for the largest messages of the two RFCs
//! (a 513-byte RFC 1929 request, a 262-byte reply with a domain name):
//! nothing a proxy sends can grow them.
//!
//! No crate on crates.io fitted: the maintained ones (`fast-socks5`,
//! `socks5-proto`, `socks5-impl`, `tokio-socks`) drive a tokio
//! `AsyncRead`; `socks5rs` has only the server's side; `socker`'s sans-IO
//! codec needs a newer Rust (1.97) than the toolchain here. The client's
//! part of the protocol is four small messages, written here against the
//! RFC text.
//!
//! The order of the exchange (RFC 1928 §3, §4, §6; RFC 1929 §2):
//!
//! ```text
//! -> VER=5 NMETHODS METHODS...            (0x00; or 0x00 0x02 with credentials)
//! <- VER=5 METHOD                          (0xFF: none acceptable)
//! -> VER=1 ULEN UNAME PLEN PASSWD          (only if METHOD = 0x02)
//! <- VER=1 STATUS                          (0: success)
//! -> VER=5 CMD=1 RSV=0 ATYP DST.ADDR DST.PORT
//! <- VER=5 REP RSV ATYP BND.ADDR BND.PORT  (REP 0: success)
//! ```

use super::connect::ConnectFailure;
use super::FwdCounter;
use std::net::{IpAddr, SocketAddr};

/// RFC 1928 §3: the protocol version.
const VER: u8 = 0x05;
/// RFC 1928 §3: no authentication required.
const METHOD_NONE: u8 = 0x00;
/// RFC 1928 §3: username/password (RFC 1929).
const METHOD_USERPASS: u8 = 0x02;
/// RFC 1928 §3: no acceptable methods.
const METHOD_NONE_ACCEPTABLE: u8 = 0xFF;
/// RFC 1929 §2: the sub-negotiation's version.
const AUTH_VER: u8 = 0x01;
/// RFC 1928 §4: CONNECT.
const CMD_CONNECT: u8 = 0x01;
/// RFC 1928 §5: the address types.
const ATYP_V4: u8 = 0x01;
const ATYP_DOMAIN: u8 = 0x03;
const ATYP_V6: u8 = 0x04;

/// The most bytes of a user name or password (RFC 1929 §2: one length byte).
pub const MAX_CRED: usize = 255;

/// The longest greeting: VER, NMETHODS, two methods.
const GREETING_MAX: usize = 4;
/// The longest RFC 1929 request: VER, ULEN, 255, PLEN, 255.
const AUTH_MAX: usize = 3 + 2 * MAX_CRED;
/// The longest CONNECT request: VER CMD RSV ATYP, 16 address bytes, port.
const REQUEST_MAX: usize = 4 + 16 + 2;
/// The longest reply: VER REP RSV ATYP, a length byte, 255 name bytes, port.
const REPLY_MAX: usize = 4 + 1 + 255 + 2;

/// A user name and password for RFC 1929. Its `Debug` and the URL's
/// `Display` never show the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    user: Vec<u8>,
    pass: Vec<u8>,
}

impl Credentials {
    /// Credentials of 1..=255 bytes each (RFC 1929 §2: ULEN and PLEN are
    /// one byte and a zero length has no meaning).
    pub fn new(user: &[u8], pass: &[u8]) -> Result<Credentials, String> {
        for (what, v) in [("user name", user), ("password", pass)] {
            if v.is_empty() {
                return Err(format!("the {what} is empty"));
            }
            if v.len() > MAX_CRED {
                return Err(format!(
                    "the {what} is {} bytes, more than the {MAX_CRED} SOCKS5 allows (RFC 1929)",
                    v.len()
                ));
            }
        }
        Ok(Credentials {
            user: user.to_vec(),
            pass: pass.to_vec(),
        })
    }

    /// The user name as text (lossy), for logs.
    pub fn user(&self) -> String {
        String::from_utf8_lossy(&self.user).into_owned()
    }
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user())
            .field("pass", &"***")
            .finish()
    }
}

/// One `--upstream socks5://[USER:PASS@]HOST:PORT` as the user wrote it
/// (the host is resolved when the daemon starts, [`Proxy::resolve`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpstreamSpec {
    /// The proxy's host: an address or a DNS name.
    pub host: String,
    /// The proxy's port.
    pub port: u16,
    /// RFC 1929 credentials, if the URL has them.
    pub auth: Option<Credentials>,
}

/// `%XX` escapes of a URL's user info decoded (RFC 3986 §2.1), so that a
/// password may hold `:` or `@`.
fn percent_decode(s: &str) -> Result<Vec<u8>, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or("a '%' in the user name or password is not followed by two hex digits")?;
            out.push(hex);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Ok(out)
}

/// Whether `h` is a DNS name (RFC 1123 §2.1: labels of letters, digits and
/// hyphens, 1..=63 each, 253 in all).
fn is_host_name(h: &str) -> bool {
    let h = h.strip_suffix('.').unwrap_or(h);
    !h.is_empty()
        && h.len() <= 253
        && h.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-')
        })
}

impl UpstreamSpec {
    /// Parses `socks5://[USER:PASS@]HOST:PORT` (IPv6 in brackets, `%XX`
    /// escapes in USER and PASS). An error never repeats the password.
    pub fn parse(s: &str) -> Result<UpstreamSpec, String> {
        let Some((scheme, rest)) = s.split_once("://") else {
            return Err("expected socks5://[USER:PASS@]HOST:PORT".into());
        };
        if !scheme.eq_ignore_ascii_case("socks5") {
            return Err(format!(
                "the scheme '{}' is not supported: only socks5:// (RFC 1928)",
                scheme.chars().take(20).collect::<String>()
            ));
        }
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        let (auth, hostport) = match rest.rsplit_once('@') {
            Some((info, hp)) => {
                let Some((u, p)) = info.split_once(':') else {
                    return Err("the user info must be USER:PASS".into());
                };
                let auth = Credentials::new(&percent_decode(u)?, &percent_decode(p)?)?;
                (Some(auth), hp)
            }
            None => (None, rest),
        };
        let Some((host, port)) = super::split_host_port(hostport) else {
            return Err(format!(
                "'{hostport}' is not HOST:PORT (the port is missing, or an IPv6 address lacks its brackets)"
            ));
        };
        let port = match port.parse::<u16>() {
            Ok(n) if n != 0 => n,
            _ => return Err(format!("the port '{port}' is not a port in 1..=65535")),
        };
        if host.parse::<IpAddr>().is_err() && !is_host_name(host) {
            return Err(format!(
                "the host '{host}' is neither an IP address nor a host name"
            ));
        }
        Ok(UpstreamSpec {
            host: host.to_string(),
            port,
            auth,
        })
    }
}

impl std::fmt::Display for UpstreamSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "socks5://")?;
        if let Some(a) = &self.auth {
            write!(f, "{}:***@", a.user())?;
        }
        super::write_host_port(f, &self.host, self.port)
    }
}

/// A resolved `--upstream`.
#[derive(Clone, Debug)]
pub struct Proxy {
    /// How the user wrote it, password hidden (logs, the banner).
    pub name: String,
    /// The proxy's address.
    pub addr: SocketAddr,
    /// RFC 1929 credentials.
    pub auth: Option<Credentials>,
}

impl Proxy {
    /// Resolves the spec's host (once, at start).
    pub fn resolve(spec: &UpstreamSpec) -> Result<Proxy, String> {
        let addr =
            super::resolve(&spec.host, spec.port).map_err(|e| format!("--upstream {spec}: {e}"))?;
        Ok(Proxy {
            name: spec.to_string(),
            addr,
            auth: spec.auth.clone(),
        })
    }
}

/// Why a SOCKS5 handshake failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// The proxy accepted none of the methods offered (METHOD 0xFF).
    NoAcceptableMethod,
    /// The proxy rejected the user name and password (RFC 1929 STATUS ≠ 0).
    AuthRejected,
    /// The proxy's CONNECT reply said REP (≠ 0, RFC 1928 §6).
    Reply(u8),
    /// The proxy broke the protocol (what it got wrong).
    Malformed(&'static str),
    /// The proxy closed the connection before the handshake was done.
    Closed,
}

impl Failure {
    /// How the client's held SYN is refused: RFC 1928 §6's codes the way a
    /// direct connect's errors are ([`ConnectFailure::of`]).
    pub fn refusal(self) -> ConnectFailure {
        match self {
            Failure::Reply(0x02) => ConnectFailure::Prohibited,
            Failure::Reply(0x03) => ConnectFailure::NetUnreachable,
            Failure::Reply(0x04) => ConnectFailure::HostUnreachable,
            Failure::Reply(0x05) => ConnectFailure::Refused,
            _ => ConnectFailure::Other,
        }
    }

    /// The forward counter it goes to (besides the `connect_*` one of its
    /// [`Failure::refusal`]).
    pub fn counter(self) -> FwdCounter {
        match self {
            Failure::NoAcceptableMethod => FwdCounter::SocksNoMethod,
            Failure::AuthRejected => FwdCounter::SocksAuthFailed,
            Failure::Reply(0x02) => FwdCounter::SocksNotAllowed,
            Failure::Reply(0x03 | 0x04) => FwdCounter::SocksUnreachable,
            Failure::Reply(0x05) => FwdCounter::SocksRefused,
            Failure::Reply(_) => FwdCounter::SocksFailed,
            Failure::Malformed(_) => FwdCounter::SocksMalformed,
            Failure::Closed => FwdCounter::SocksClosed,
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::NoAcceptableMethod => write!(f, "SOCKS5 proxy accepts none of our methods"),
            Failure::AuthRejected => write!(f, "SOCKS5 proxy rejected the user name or password"),
            Failure::Reply(r) => {
                let what = match r {
                    0x01 => "general SOCKS server failure",
                    0x02 => "connection not allowed by ruleset",
                    0x03 => "network unreachable",
                    0x04 => "host unreachable",
                    0x05 => "connection refused",
                    0x06 => "TTL expired",
                    0x07 => "command not supported",
                    0x08 => "address type not supported",
                    _ => "unassigned reply code",
                };
                write!(f, "SOCKS5 proxy: {what} (0x{r:02x})")
            }
            Failure::Malformed(w) => write!(f, "malformed SOCKS5 reply: {w}"),
            Failure::Closed => write!(f, "SOCKS5 proxy closed the connection during the handshake"),
        }
    }
}

/// Where a [`Handshake`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Sending the greeting, then reading the method choice (2 bytes).
    Method,
    /// Sending the RFC 1929 request, then reading its status (2 bytes).
    Auth,
    /// Sending CONNECT, then reading the reply (4 bytes, then the rest).
    Connect,
    /// The proxy connected to the destination.
    Done,
    /// It failed.
    Failed,
}

/// What [`Handshake::received`] makes of the bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// More to send or to read.
    More,
    /// The proxy connected to the destination: bytes now flow end to end.
    Done,
}

/// One SOCKS5 client handshake, sans-IO (see the module doc). The caller
/// writes [`Handshake::to_send`] and reports it with [`Handshake::sent`],
/// reads into [`Handshake::recv_buf`] and reports it with
/// [`Handshake::received`], until that says [`Step::Done`] or fails.
pub struct Handshake {
    state: State,
    /// The greeting, the RFC 1929 request (if any) and the CONNECT request,
    /// one after the other.
    msgs: [u8; GREETING_MAX + AUTH_MAX + REQUEST_MAX],
    /// Where the RFC 1929 request and the CONNECT request start in `msgs`,
    /// and where the latter ends.
    auth_at: u16,
    req_at: u16,
    req_end: u16,
    /// What is being sent now: `msgs[send_at..send_end]`.
    send_at: u16,
    send_end: u16,
    /// Whether 0x02 was offered.
    offered_auth: bool,
    /// The answer being read: `reply[..have]` of `want` bytes known so far.
    reply: [u8; REPLY_MAX],
    have: u16,
    want: u16,
}

impl std::fmt::Debug for Handshake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handshake")
            .field("state", &self.state)
            .field("have", &self.have)
            .field("want", &self.want)
            .finish()
    }
}

impl Handshake {
    /// A handshake that asks the proxy to CONNECT to `target`, offering
    /// RFC 1929 with `auth` (and no authentication besides), else no
    /// authentication only.
    pub fn new(target: SocketAddr, auth: Option<&Credentials>) -> Handshake {
        /// The messages being laid out one after the other.
        struct Out {
            m: [u8; GREETING_MAX + AUTH_MAX + REQUEST_MAX],
            n: usize,
        }
        impl Out {
            fn put(&mut self, b: &[u8]) {
                self.m[self.n..self.n + b.len()].copy_from_slice(b);
                self.n += b.len();
            }
        }
        let mut o = Out {
            m: [0; GREETING_MAX + AUTH_MAX + REQUEST_MAX],
            n: 0,
        };
        // RFC 1928 §3.
        match auth {
            Some(_) => o.put(&[VER, 2, METHOD_NONE, METHOD_USERPASS]),
            None => o.put(&[VER, 1, METHOD_NONE]),
        }
        let auth_at = o.n;
        // RFC 1929 §2 (lengths are 1..=255: Credentials::new).
        if let Some(a) = auth {
            o.put(&[AUTH_VER, a.user.len() as u8]);
            o.put(&a.user);
            o.put(&[a.pass.len() as u8]);
            o.put(&a.pass);
        }
        let req_at = o.n;
        // RFC 1928 §4.
        match target.ip() {
            IpAddr::V4(a) => {
                o.put(&[VER, CMD_CONNECT, 0, ATYP_V4]);
                o.put(&a.octets());
            }
            IpAddr::V6(a) => {
                o.put(&[VER, CMD_CONNECT, 0, ATYP_V6]);
                o.put(&a.octets());
            }
        }
        o.put(&target.port().to_be_bytes());
        let (m, req_end) = (o.m, o.n);
        Handshake {
            state: State::Method,
            msgs: m,
            auth_at: auth_at as u16,
            req_at: req_at as u16,
            req_end: req_end as u16,
            send_at: 0,
            send_end: auth_at as u16,
            offered_auth: auth.is_some(),
            reply: [0; REPLY_MAX],
            have: 0,
            want: 2,
        }
    }

    /// The bytes to write to the proxy now (empty: none).
    pub fn to_send(&self) -> &[u8] {
        &self.msgs[usize::from(self.send_at)..usize::from(self.send_end)]
    }

    /// `n` bytes of [`Handshake::to_send`] were written.
    pub fn sent(&mut self, n: usize) {
        let left = self.send_end - self.send_at;
        self.send_at += (n.min(usize::from(left))) as u16;
    }

    /// Where to read the proxy's next bytes: exactly as many as the
    /// message being read still lacks (empty once done or failed).
    pub fn recv_buf(&mut self) -> &mut [u8] {
        match self.state {
            State::Done | State::Failed => &mut [],
            _ => &mut self.reply[usize::from(self.have)..usize::from(self.want)],
        }
    }

    /// Whether the proxy connected.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    fn fail(&mut self, f: Failure) -> Result<Step, Failure> {
        self.state = State::Failed;
        self.send_at = self.send_end;
        Err(f)
    }

    fn next_message(&mut self, state: State, from: u16, to: u16, want: u16) {
        self.state = state;
        self.send_at = from;
        self.send_end = to;
        self.have = 0;
        self.want = want;
    }

    /// `n` bytes were read into [`Handshake::recv_buf`].
    pub fn received(&mut self, n: usize) -> Result<Step, Failure> {
        if matches!(self.state, State::Done | State::Failed) {
            return Err(Failure::Malformed("bytes after the end of the handshake"));
        }
        let room = self.want - self.have;
        self.have += (n.min(usize::from(room))) as u16;
        if self.have < self.want {
            return Ok(Step::More);
        }
        let r = &self.reply;
        match self.state {
            State::Method => {
                // RFC 1928 §3.
                if r[0] != VER {
                    return self.fail(Failure::Malformed("method choice of another version"));
                }
                match r[1] {
                    METHOD_NONE => {
                        self.next_message(State::Connect, self.req_at, self.req_end, 4);
                        Ok(Step::More)
                    }
                    METHOD_USERPASS if self.offered_auth => {
                        self.next_message(State::Auth, self.auth_at, self.req_at, 2);
                        Ok(Step::More)
                    }
                    METHOD_NONE_ACCEPTABLE => self.fail(Failure::NoAcceptableMethod),
                    _ => self.fail(Failure::Malformed("a method that was not offered")),
                }
            }
            State::Auth => {
                // RFC 1929 §2. Some proxies answer with version 5 here (the
                // SOCKS version, not the sub-negotiation's); curl accepts
                // them, so do we.
                if r[0] != AUTH_VER && r[0] != VER {
                    return self.fail(Failure::Malformed(
                        "authentication status of another version",
                    ));
                }
                if r[1] != 0 {
                    return self.fail(Failure::AuthRejected);
                }
                self.next_message(State::Connect, self.req_at, self.req_end, 4);
                Ok(Step::More)
            }
            State::Connect => {
                // RFC 1928 §6. RSV is not checked (reserved for the future).
                if r[0] != VER {
                    return self.fail(Failure::Malformed("reply of another version"));
                }
                if r[1] != 0 {
                    return self.fail(Failure::Reply(r[1]));
                }
                let total: u16 = match (r[3], self.have) {
                    (ATYP_V4, _) => 4 + 4 + 2,
                    (ATYP_V6, _) => 4 + 16 + 2,
                    // The name's length byte first, then the name and port.
                    (ATYP_DOMAIN, 4) => 5,
                    (ATYP_DOMAIN, _) => 5 + u16::from(r[4]) + 2,
                    _ => return self.fail(Failure::Malformed("unknown address type")),
                };
                if total > self.have {
                    self.want = total;
                    return Ok(Step::More);
                }
                self.state = State::Done;
                Ok(Step::Done)
            }
            State::Done | State::Failed => Err(Failure::Malformed("bytes after the end")),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Plays the proxy's side: feeds `answer` to `h` in pieces of the sizes
    /// `cuts` gives (cycled), collecting what `h` sent. Returns what was
    /// sent, the result, and how many bytes of `answer` `h` took.
    fn drive(
        h: &mut Handshake,
        answer: &[u8],
        cuts: &[usize],
    ) -> (Vec<u8>, Result<Step, Failure>, usize) {
        let mut sent = Vec::new();
        let mut off = 0;
        let mut k = 0;
        loop {
            let s = h.to_send().to_vec();
            h.sent(s.len());
            sent.extend_from_slice(&s);
            let buf = h.recv_buf();
            if buf.is_empty() {
                return (sent, Err(Failure::Malformed("stalled")), off);
            }
            let cut = cuts.get(k % cuts.len().max(1)).copied().unwrap_or(1).max(1);
            k += 1;
            let n = buf.len().min(cut).min(answer.len() - off);
            if n == 0 {
                return (sent, Ok(Step::More), off);
            }
            buf[..n].copy_from_slice(&answer[off..off + n]);
            off += n;
            match h.received(n) {
                Ok(Step::More) => {}
                other => return (sent, other, off),
            }
        }
    }

    fn v4(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn no_auth_connect_v4_by_the_rfc() {
        let mut h = Handshake::new(v4("192.0.2.7:8080"), None);
        let answer = [5, 0, 5, 0, 0, 1, 10, 0, 0, 1, 0x1f, 0x90, 0xAA];
        let (sent, r, took) = drive(&mut h, &answer, &[100]);
        assert_eq!(r, Ok(Step::Done));
        assert_eq!(took, 12, "never reads past the reply");
        assert_eq!(
            sent,
            [5, 1, 0, 5, 1, 0, 1, 192, 0, 2, 7, 0x1f, 0x90],
            "greeting (no auth only), then CONNECT"
        );
        assert!(h.is_done());
        assert!(h.recv_buf().is_empty() && h.to_send().is_empty());
    }

    #[test]
    fn user_pass_connect_v6_and_domain_reply() {
        let c = Credentials::new(b"alice", b"s3:cr@t").unwrap();
        let t: SocketAddr = "[2001:db8::5]:443".parse().unwrap();
        let mut h = Handshake::new(t, Some(&c));
        let mut answer = vec![5, 2, 1, 0, 5, 0, 0, 3, 4];
        answer.extend_from_slice(b"prox");
        answer.extend_from_slice(&[0, 80]);
        let (sent, r, took) = drive(&mut h, &answer, &[1]);
        assert_eq!(r, Ok(Step::Done));
        assert_eq!(took, answer.len());
        let mut want = vec![5, 2, 0, 2, 1, 5];
        want.extend_from_slice(b"alice");
        want.push(7);
        want.extend_from_slice(b"s3:cr@t");
        want.extend_from_slice(&[5, 1, 0, 4]);
        let IpAddr::V6(a) = t.ip() else {
            unreachable!()
        };
        want.extend_from_slice(&a.octets());
        want.extend_from_slice(&[1, 187]);
        assert_eq!(sent, want);
    }

    #[test]
    fn proxy_without_auth_is_fine_with_credentials() {
        let c = Credentials::new(b"u", b"p").unwrap();
        let mut h = Handshake::new(v4("10.1.1.1:1"), Some(&c));
        let (sent, r, _) = drive(&mut h, &[5, 0, 5, 0, 0, 1, 0, 0, 0, 0, 0, 0], &[3]);
        assert_eq!(r, Ok(Step::Done));
        assert_eq!(&sent[..4], &[5, 2, 0, 2]);
        assert_eq!(
            &sent[4..],
            &[5, 1, 0, 1, 10, 1, 1, 1, 0, 1],
            "no RFC 1929 request"
        );
    }

    #[test]
    fn failures_and_how_they_refuse() {
        let c = Credentials::new(b"u", b"p").unwrap();
        let cases: &[(Option<&Credentials>, &[u8], Failure)] = &[
            (None, &[5, 0xFF], Failure::NoAcceptableMethod),
            (
                None,
                &[5, 2],
                Failure::Malformed("a method that was not offered"),
            ),
            (
                None,
                &[4, 0],
                Failure::Malformed("method choice of another version"),
            ),
            (Some(&c), &[5, 2, 1, 1], Failure::AuthRejected),
            (
                Some(&c),
                &[5, 2, 9, 0],
                Failure::Malformed("authentication status of another version"),
            ),
            (None, &[5, 0, 5, 5, 0, 1], Failure::Reply(5)),
            (None, &[5, 0, 5, 2, 0, 1], Failure::Reply(2)),
            (None, &[5, 0, 5, 4, 0, 1], Failure::Reply(4)),
            (
                None,
                &[5, 0, 5, 0, 0, 9],
                Failure::Malformed("unknown address type"),
            ),
            (
                None,
                &[5, 0, 1, 0, 0, 1],
                Failure::Malformed("reply of another version"),
            ),
        ];
        for (auth, answer, want) in cases {
            let mut h = Handshake::new(v4("10.0.0.9:80"), *auth);
            let (_, r, _) = drive(&mut h, answer, &[1]);
            assert_eq!(r, Err(*want), "{answer:?}");
            assert!(h.recv_buf().is_empty(), "a failed handshake reads no more");
            assert!(h.received(1).is_err());
        }
        assert_eq!(Failure::Reply(5).refusal(), ConnectFailure::Refused);
        assert_eq!(Failure::Reply(3).refusal(), ConnectFailure::NetUnreachable);
        assert_eq!(Failure::Reply(4).refusal(), ConnectFailure::HostUnreachable);
        assert_eq!(Failure::Reply(2).refusal(), ConnectFailure::Prohibited);
        for f in [
            Failure::Reply(1),
            Failure::Reply(6),
            Failure::Reply(0x42),
            Failure::AuthRejected,
            Failure::Closed,
        ] {
            assert_eq!(f.refusal(), ConnectFailure::Other);
        }
    }

    #[test]
    fn urls_parse_and_never_show_the_password() {
        let s = UpstreamSpec::parse("socks5://127.0.0.1:1080").unwrap();
        assert_eq!(
            (s.host.as_str(), s.port, s.auth.is_none()),
            ("127.0.0.1", 1080, true)
        );
        let s = UpstreamSpec::parse("SOCKS5://alice:p%40ss%3Aw0rd@[fd00::5]:1080/").unwrap();
        assert_eq!(s.host, "fd00::5");
        assert_eq!(
            s.auth,
            Some(Credentials::new(b"alice", b"p@ss:w0rd").unwrap())
        );
        assert_eq!(s.to_string(), "socks5://alice:***@[fd00::5]:1080");
        assert!(!format!("{s:?}").contains("p@ss"), "{s:?}");
        let s = UpstreamSpec::parse("socks5://u:a:b@proxy.example:9050").unwrap();
        assert_eq!(s.auth, Some(Credentials::new(b"u", b"a:b").unwrap()));
        assert_eq!(s.host, "proxy.example");
        let long = "x".repeat(256);
        for (bad, says) in [
            ("http://h:1", "scheme"),
            ("socks4://h:1", "scheme"),
            ("h:1080", "socks5://"),
            ("socks5://h", "HOST:PORT"),
            ("socks5://h:", "port"),
            ("socks5://h:0", "port"),
            ("socks5://h:70000", "port"),
            ("socks5://fd00::5:1080", "HOST:PORT"),
            ("socks5://bad_host!:1080", "host"),
            ("socks5://:1080", "host"),
            ("socks5://-a.b:1080", "host"),
            ("socks5://u@h:1", "USER:PASS"),
            ("socks5://:secretpw@h:1", "user name is empty"),
            ("socks5://u:@h:1", "password is empty"),
            ("socks5://u:%zzsecretpw@h:1", "hex"),
        ] {
            let e = UpstreamSpec::parse(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
            assert!(!e.contains("secretpw"), "{bad}: {e}");
        }
        let e = UpstreamSpec::parse(&format!("socks5://u:{long}@h:1")).unwrap_err();
        assert!(e.contains("256 bytes") && !e.contains(&long), "{e}");
        let e = UpstreamSpec::parse(&format!("socks5://{long}:p@h:1")).unwrap_err();
        assert!(e.contains("user name is 256 bytes"), "{e}");
        assert!(
            UpstreamSpec::parse(&format!("socks5://{}:{}@h:1", &long[1..], &long[1..])).is_ok()
        );
    }

    /// A user name and password, as the proxy decodes them.
    type UserPass = Option<(Vec<u8>, Vec<u8>)>;

    /// A reference decoder of the client's messages (the proxy's side of
    /// RFC 1928 §3/§4 and RFC 1929 §2), for the round-trip property.
    fn decode_client(b: &[u8], with_auth: bool) -> (Vec<u8>, UserPass, SocketAddr) {
        assert_eq!(b[0], 5);
        let nm = usize::from(b[1]);
        let methods = b[2..2 + nm].to_vec();
        let mut i = 2 + nm;
        let auth = if with_auth {
            assert_eq!(b[i], 1);
            let ul = usize::from(b[i + 1]);
            let u = b[i + 2..i + 2 + ul].to_vec();
            let pl = usize::from(b[i + 2 + ul]);
            let p = b[i + 3 + ul..i + 3 + ul + pl].to_vec();
            i += 3 + ul + pl;
            Some((u, p))
        } else {
            None
        };
        assert_eq!(&b[i..i + 3], &[5, 1, 0]);
        let (ip, rest): (IpAddr, &[u8]) = match b[i + 3] {
            1 => (
                <[u8; 4]>::try_from(&b[i + 4..i + 8]).unwrap().into(),
                &b[i + 8..],
            ),
            4 => (
                <[u8; 16]>::try_from(&b[i + 4..i + 20]).unwrap().into(),
                &b[i + 20..],
            ),
            t => panic!("atyp {t}"),
        };
        assert_eq!(rest.len(), 2, "nothing after the request");
        (
            methods,
            auth,
            SocketAddr::new(ip, u16::from_be_bytes([rest[0], rest[1]])),
        )
    }

    fn any_addr() -> impl Strategy<Value = SocketAddr> {
        prop_oneof![
            (any::<[u8; 4]>(), any::<u16>()).prop_map(|(a, p)| SocketAddr::new(a.into(), p)),
            (any::<[u8; 16]>(), any::<u16>()).prop_map(|(a, p)| SocketAddr::new(a.into(), p)),
        ]
    }

    fn any_creds() -> impl Strategy<Value = Option<(Vec<u8>, Vec<u8>)>> {
        proptest::option::of((
            proptest::collection::vec(any::<u8>(), 1..=255),
            proptest::collection::vec(any::<u8>(), 1..=255),
        ))
    }

    proptest! {
        /// What the client sends decodes back to its target and credentials,
        /// whatever the proxy's (valid) reply looks like and however the
        /// bytes are cut; the handshake takes exactly the proxy's messages.
        #[test]
        fn round_trip(
            target in any_addr(),
            creds in any_creds(),
            bnd in prop_oneof![
                any::<[u8; 4]>().prop_map(|a| { let mut v = vec![1]; v.extend(a); v }),
                any::<[u8; 16]>().prop_map(|a| { let mut v = vec![4]; v.extend(a); v }),
                proptest::collection::vec(any::<u8>(), 0..=255)
                    .prop_map(|n| { let mut v = vec![3, n.len() as u8]; v.extend(n); v }),
            ],
            port in any::<u16>(),
            rsv in any::<u8>(),
            trailing in proptest::collection::vec(any::<u8>(), 0..16),
            cuts in proptest::collection::vec(1usize..300, 1..8),
        ) {
            let c = creds.as_ref().map(|(u, p)| Credentials::new(u, p).unwrap());
            let mut h = Handshake::new(target, c.as_ref());
            let mut answer = vec![5, if c.is_some() { 2 } else { 0 }];
            if c.is_some() {
                answer.extend([1, 0]);
            }
            answer.extend([5, 0, rsv]);
            answer.extend(&bnd);
            answer.extend(port.to_be_bytes());
            let proxy_len = answer.len();
            answer.extend(&trailing);
            let (sent, r, took) = drive(&mut h, &answer, &cuts);
            prop_assert_eq!(r, Ok(Step::Done));
            prop_assert_eq!(took, proxy_len);
            let (methods, auth, dst) = decode_client(&sent, c.is_some());
            prop_assert_eq!(dst, target);
            prop_assert_eq!(auth, creds);
            if c.is_some() {
                prop_assert_eq!(methods, vec![0, 2]);
            } else {
                prop_assert_eq!(methods, vec![0]);
            }
        }

        /// Whatever a proxy answers, the handshake ends (done, failed or
        /// waiting) without a panic and reads no more than the largest
        /// answer the protocol has.
        #[test]
        fn any_answer_is_survived(
            target in any_addr(),
            with_auth in any::<bool>(),
            answer in proptest::collection::vec(any::<u8>(), 0..600),
            cuts in proptest::collection::vec(1usize..300, 1..8),
        ) {
            let c = Credentials::new(b"user", b"pass").unwrap();
            let mut h = Handshake::new(target, with_auth.then_some(&c));
            let (_, _, took) = drive(&mut h, &answer, &cuts);
            prop_assert!(took <= 2 + 2 + REPLY_MAX);
        }

        /// Partial writes: whatever amounts the socket takes, the bytes
        /// sent are the same.
        #[test]
        fn partial_writes(target in any_addr(), chunks in proptest::collection::vec(0usize..8, 1..20)) {
            let c = Credentials::new(b"user", b"pass").unwrap();
            let mut whole = Handshake::new(target, Some(&c));
            let mut h = Handshake::new(target, Some(&c));
            let mut got = Vec::new();
            let mut k = 0;
            while !h.to_send().is_empty() {
                let n = chunks[k % chunks.len()].max(usize::from(k > 64)).min(h.to_send().len());
                got.extend_from_slice(&h.to_send()[..n]);
                h.sent(n);
                k += 1;
            }
            prop_assert_eq!(&got[..], whole.to_send());
            whole.sent(usize::MAX);
            prop_assert!(whole.to_send().is_empty());
        }
    }
}
