//! Forwarding: tcpd carries other programs' TCP (`--forward`,
//! `--transparent`).
//!
//! A connection the stack accepts on a forwarded port (or, in transparent
//! mode, to any destination) is spliced to a kernel TCP connection that
//! tcpd opens from the namespace it runs in. The reactor keeps the stack's
//! side as for any connection; a worker thread owns the kernel socket in
//! its own mio `Poll` ([`splice`]) and moves the bytes both ways through
//! the same pooled buffers, credits and `Consumed` reports the services
//! use, so backpressure holds end to end: bytes from the client count
//! against the window tcpd advertises until they were written to the kernel
//! socket, and tcpd reads the kernel socket only as far as the client's
//! send buffer has room.
//!
//! - [`ForwardSpec`]: one `--forward [ADDR:]PORT=HOST:PORT` as typed;
//! - [`Forwarding`]: the resolved rules, the transparent-mode policy, the
//!   timeouts and the per-rule counters shared by the reactor and workers;
//! - [`connect`]: the one place where upstream sockets are made;
//! - [`splice`]: the worker side of a forwarded connection.

pub mod connect;
pub mod socks;
pub mod splice;

use crate::config::IpNet;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// One `--forward [ADDR:]PORT=HOST:PORT`, as the user wrote it (the host is
/// resolved when the daemon starts, [`Forwarding::new`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForwardSpec {
    /// Only connections to this stack address (else: any of the stack's).
    pub listen: Option<IpAddr>,
    /// The port on tcpd's stack.
    pub port: u16,
    /// Upstream host: an address or a name.
    pub host: String,
    /// Upstream port.
    pub host_port: u16,
}

/// Splits `HOST:PORT` / `[V6]:PORT` into the host (brackets removed) and port.
pub(crate) fn split_host_port(s: &str) -> Option<(&str, &str)> {
    let (h, p) = s.rsplit_once(':')?;
    let h = match h.strip_prefix('[') {
        Some(inner) => inner.strip_suffix(']')?,
        None if h.contains(':') => return None, // a bare IPv6 needs brackets
        None => h,
    };
    Some((h, p))
}

fn parse_port(p: &str, what: &str, whole: &str) -> Result<u16, String> {
    match p.parse::<u16>() {
        Ok(n) if n != 0 => Ok(n),
        _ => Err(format!(
            "--forward {whole}: {what} port '{p}' is not a port in 1..=65535"
        )),
    }
}

impl ForwardSpec {
    /// Parses `[ADDR:]PORT=HOST:PORT`; IPv6 addresses in brackets
    /// (`[fd00::2]:80=[fd01::5]:8080`).
    pub fn parse(s: &str) -> Result<ForwardSpec, String> {
        let Some((left, right)) = s.split_once('=') else {
            return Err(format!(
                "--forward {s}: expected [ADDR:]PORT=HOST:PORT (e.g. 8080=127.0.0.1:80)"
            ));
        };
        let (listen, port) = match split_host_port(left) {
            Some((a, p)) => {
                let ip: IpAddr = a.parse().map_err(|_| {
                    format!("--forward {s}: '{a}' is not an IP address of the stack")
                })?;
                (Some(ip), parse_port(p, "listening", s)?)
            }
            None if left.contains(':') => {
                return Err(format!(
                    "--forward {s}: write an IPv6 listening address in brackets, [ADDR]:PORT"
                ))
            }
            None => (None, parse_port(left, "listening", s)?),
        };
        let Some((host, hp)) = split_host_port(right) else {
            return Err(format!(
                "--forward {s}: the target must be HOST:PORT ([ADDR]:PORT for IPv6)"
            ));
        };
        if host.is_empty() {
            return Err(format!("--forward {s}: the target host is empty"));
        }
        Ok(ForwardSpec {
            listen,
            port,
            host: host.to_string(),
            host_port: parse_port(hp, "target", s)?,
        })
    }
}

impl std::fmt::Display for ForwardSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.listen {
            Some(IpAddr::V6(a)) => write!(f, "[{a}]:{}", self.port)?,
            Some(a) => write!(f, "{a}:{}", self.port)?,
            None => write!(f, "{}", self.port)?,
        }
        write!(f, "=")?;
        write_host_port(f, &self.host, self.host_port)
    }
}

/// `HOST:PORT`, an IPv6 literal in brackets (RFC 3986 §3.2.2), as users
/// write it in `--forward` and `--upstream`.
pub(crate) fn write_host_port(
    f: &mut std::fmt::Formatter<'_>,
    host: &str,
    port: u16,
) -> std::fmt::Result {
    if host.contains(':') {
        write!(f, "[{host}]:{port}")
    } else {
        write!(f, "{host}:{port}")
    }
}

/// Forwarding settings of [`crate::Config`].
#[derive(Clone, Debug)]
pub struct ForwardConfig {
    /// `--forward` rules, in order.
    pub rules: Vec<ForwardSpec>,
    /// `--transparent`: accept TCP to any destination, connect out to it.
    pub transparent: bool,
    /// `--allow CIDR`: transparent destinations allowed (empty: all).
    pub allow: Vec<IpNet>,
    /// `--deny CIDR`: transparent destinations refused (wins over allow).
    pub deny: Vec<IpNet>,
    /// How long an upstream connect may take. Default 10 s.
    pub connect_timeout: Duration,
    /// A spliced connection with no byte either way for this long is reset
    /// on both sides; `None` never. Default 7440 s (RFC 5382 REQ-5).
    pub idle_timeout: Option<Duration>,
    /// `--upstream socks5://...`: connect through this SOCKS5 proxy
    /// instead of directly. Default none.
    pub upstream: Option<socks::UpstreamSpec>,
}

impl Default for ForwardConfig {
    fn default() -> Self {
        ForwardConfig {
            rules: Vec::new(),
            transparent: false,
            allow: Vec::new(),
            deny: Vec::new(),
            connect_timeout: Duration::from_secs(10),
            idle_timeout: Some(Duration::from_secs(7440)),
            upstream: None,
        }
    }
}

impl ForwardConfig {
    /// Whether tcpd forwards anything (then it runs worker threads).
    pub fn active(&self) -> bool {
        !self.rules.is_empty() || self.transparent
    }
}

/// What a forward rule counts (`/stats` `forwards`, `/metrics`
/// `tcpd_forward_*{forward="..."}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FwdCounter {
    /// Connections spliced (the upstream connected and the client's
    /// connection was accepted).
    Accepted,
    /// Connections refused before any upstream connect: by `--deny` /
    /// `--allow`, to the stack's own address, while shutting down, or no
    /// connection slot.
    Refused,
    /// Upstream connects refused (ECONNREFUSED: a RST).
    ConnectRefused,
    /// Upstream connects that found no route (EHOSTUNREACH, ENETUNREACH,
    /// an ICMP error).
    ConnectUnreachable,
    /// Upstream connects that took longer than the connect timeout.
    ConnectTimeout,
    /// Upstream connects that failed otherwise (no local port, EACCES, ...).
    ConnectError,
    /// Bytes from the client written to the upstream socket.
    BytesToUpstream,
    /// Bytes read from the upstream socket and queued to the client.
    BytesFromUpstream,
    /// Spliced connections open now (a gauge).
    Open,
    /// Spliced connections reset after the idle timeout.
    IdleTimeouts,
    /// Spliced connections the client side ended dirty (RST, timeout):
    /// the upstream was closed with a RST (SO_LINGER 0).
    ClientResets,
    /// Spliced connections the upstream reset (ECONNRESET, EPIPE): the
    /// client got a RST.
    UpstreamResets,
    /// SOCKS5 handshakes (`--upstream`) that ended with the proxy connected
    /// to the destination. Every failed one counts in one `socks_*` counter
    /// below and in the `connect_*` counter of how the client was refused.
    SocksOk,
    /// SOCKS5 proxies that accepted none of the methods offered (0xFF).
    SocksNoMethod,
    /// SOCKS5 proxies that rejected the user name and password (RFC 1929).
    SocksAuthFailed,
    /// CONNECT replies "connection not allowed by ruleset" (0x02): the
    /// client gets an ICMP administratively prohibited.
    SocksNotAllowed,
    /// CONNECT replies "network unreachable" or "host unreachable" (0x03,
    /// 0x04): the client gets the ICMP error of the same name.
    SocksUnreachable,
    /// CONNECT replies "connection refused" (0x05): the client gets a RST.
    SocksRefused,
    /// CONNECT replies with any other failure (general failure, TTL
    /// expired, not supported, unassigned): the client gets a RST.
    SocksFailed,
    /// SOCKS5 answers that broke the protocol (another version, a method
    /// not offered, an unknown address type): the client gets a RST.
    SocksMalformed,
    /// SOCKS5 proxies that closed the connection during the handshake.
    SocksClosed,
}

impl FwdCounter {
    /// Every counter, in display order.
    pub const ALL: [FwdCounter; 21] = [
        FwdCounter::Accepted,
        FwdCounter::Refused,
        FwdCounter::ConnectRefused,
        FwdCounter::ConnectUnreachable,
        FwdCounter::ConnectTimeout,
        FwdCounter::ConnectError,
        FwdCounter::BytesToUpstream,
        FwdCounter::BytesFromUpstream,
        FwdCounter::Open,
        FwdCounter::IdleTimeouts,
        FwdCounter::ClientResets,
        FwdCounter::UpstreamResets,
        FwdCounter::SocksOk,
        FwdCounter::SocksNoMethod,
        FwdCounter::SocksAuthFailed,
        FwdCounter::SocksNotAllowed,
        FwdCounter::SocksUnreachable,
        FwdCounter::SocksRefused,
        FwdCounter::SocksFailed,
        FwdCounter::SocksMalformed,
        FwdCounter::SocksClosed,
    ];
    /// The counter's name in `/stats`.
    pub fn name(self) -> &'static str {
        match self {
            FwdCounter::Accepted => "accepted",
            FwdCounter::Refused => "refused",
            FwdCounter::ConnectRefused => "connect_refused",
            FwdCounter::ConnectUnreachable => "connect_unreachable",
            FwdCounter::ConnectTimeout => "connect_timeout",
            FwdCounter::ConnectError => "connect_error",
            FwdCounter::BytesToUpstream => "bytes_to_upstream",
            FwdCounter::BytesFromUpstream => "bytes_from_upstream",
            FwdCounter::Open => "open",
            FwdCounter::IdleTimeouts => "idle_timeouts",
            FwdCounter::ClientResets => "client_resets",
            FwdCounter::UpstreamResets => "upstream_resets",
            FwdCounter::SocksOk => "socks_ok",
            FwdCounter::SocksNoMethod => "socks_no_method",
            FwdCounter::SocksAuthFailed => "socks_auth_failed",
            FwdCounter::SocksNotAllowed => "socks_not_allowed",
            FwdCounter::SocksUnreachable => "socks_unreachable",
            FwdCounter::SocksRefused => "socks_refused",
            FwdCounter::SocksFailed => "socks_failed",
            FwdCounter::SocksMalformed => "socks_malformed",
            FwdCounter::SocksClosed => "socks_closed",
        }
    }
    /// Whether it is a gauge (goes up and down) rather than a counter.
    pub fn is_gauge(self) -> bool {
        self == FwdCounter::Open
    }
}

/// The counters of one rule: relaxed atomics, bumped per connection event
/// and per socket read or write (never per packet, never under a lock).
#[derive(Debug, Default)]
pub struct RuleStats {
    c: [AtomicU64; FwdCounter::ALL.len()],
}

impl RuleStats {
    /// Adds `n` to `c`.
    pub fn add(&self, c: FwdCounter, n: u64) {
        self.c[c as usize].fetch_add(n, Ordering::Relaxed);
    }
    /// Subtracts one from the gauge `c`.
    pub fn dec(&self, c: FwdCounter) {
        self.c[c as usize].fetch_sub(1, Ordering::Relaxed);
    }
    /// The value of `c`.
    pub fn get(&self, c: FwdCounter) -> u64 {
        self.c[c as usize].load(Ordering::Relaxed)
    }
    /// Every counter with its name.
    pub fn named(&self) -> Vec<(&'static str, u64)> {
        FwdCounter::ALL
            .iter()
            .map(|c| (c.name(), self.get(*c)))
            .collect()
    }
}

/// A resolved forward rule.
#[derive(Debug)]
pub struct ForwardRule {
    /// How the user wrote it (`/stats` names the rule so).
    pub name: String,
    /// Only connections to this stack address.
    pub listen: Option<IpAddr>,
    /// The port on tcpd's stack.
    pub port: u16,
    /// Where connections go.
    pub target: SocketAddr,
}

/// Everything forwarding needs at run time, shared (read-only but for the
/// atomic counters) by the reactor and the workers.
#[derive(Debug)]
pub struct Forwarding {
    /// `--forward` rules; rule `i` counts in `stats[i]`.
    pub rules: Vec<ForwardRule>,
    /// Transparent mode on; it counts in `stats[rules.len()]`.
    pub transparent: bool,
    /// Transparent destinations allowed (empty: all).
    pub allow: Vec<IpNet>,
    /// Transparent destinations refused.
    pub deny: Vec<IpNet>,
    /// Upstream connect timeout.
    pub connect_timeout: Duration,
    /// Idle timeout of spliced connections.
    pub idle_timeout: Option<Duration>,
    /// Per-rule counters (one more for transparent mode).
    pub stats: Vec<RuleStats>,
    /// What every upstream socket gets before it connects (`--outbound-mark`,
    /// `--outbound-device`): how it stays out of the TUN.
    pub outbound: crate::outbound::OutboundPolicy,
    /// `--upstream`: the SOCKS5 proxy every upstream connect goes through.
    pub upstream: Option<socks::Proxy>,
}

/// Name of the transparent mode's counters in `/stats`.
pub const TRANSPARENT_NAME: &str = "transparent";

impl Forwarding {
    /// Resolves the rules' hosts (once, here: a name that does not resolve
    /// is an error for the user) and builds the shared state.
    pub fn new(
        cfg: &ForwardConfig,
        outbound: crate::outbound::OutboundPolicy,
    ) -> Result<Forwarding, String> {
        let mut rules = Vec::new();
        for spec in &cfg.rules {
            let target = resolve(&spec.host, spec.host_port)
                .map_err(|e| format!("--forward {spec}: {e}"))?;
            rules.push(ForwardRule {
                name: spec.to_string(),
                listen: spec.listen,
                port: spec.port,
                target,
            });
        }
        let n = rules.len() + usize::from(cfg.transparent);
        let upstream = cfg
            .upstream
            .as_ref()
            .map(socks::Proxy::resolve)
            .transpose()?;
        Ok(Forwarding {
            outbound,
            upstream,
            rules,
            transparent: cfg.transparent,
            allow: cfg.allow.clone(),
            deny: cfg.deny.clone(),
            connect_timeout: cfg.connect_timeout,
            idle_timeout: cfg.idle_timeout,
            stats: (0..n).map(|_| RuleStats::default()).collect(),
        })
    }

    /// The rule a connection to `local` belongs to: one for its address
    /// and port, else one for its port on any address.
    pub fn rule_for(&self, local: SocketAddr) -> Option<usize> {
        let port = local.port();
        self.rules
            .iter()
            .position(|r| r.port == port && r.listen == Some(local.ip()))
            .or_else(|| {
                self.rules
                    .iter()
                    .position(|r| r.port == port && r.listen.is_none())
            })
    }

    /// The ports the stack listens on for `--forward` rules (each once).
    pub fn ports(&self) -> Vec<u16> {
        let mut v: Vec<u16> = self.rules.iter().map(|r| r.port).collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// The index of transparent mode's counters.
    pub fn transparent_index(&self) -> usize {
        self.rules.len()
    }

    /// Whether `--allow`/`--deny` let a transparent connection to `dst`
    /// through: a `--deny` match refuses, whatever `--allow` says; with
    /// `--allow` given, only its networks pass.
    pub fn permits(&self, dst: IpAddr) -> bool {
        if self.deny.iter().any(|n| n.contains(dst)) {
            return false;
        }
        self.allow.is_empty() || self.allow.iter().any(|n| n.contains(dst))
    }

    /// The counters of rule `i` (the transparent mode's at
    /// [`Forwarding::transparent_index`]).
    pub fn stats(&self, i: usize) -> Option<&RuleStats> {
        self.stats.get(i)
    }

    /// The name of rule `i` in `/stats`.
    pub fn rule_name(&self, i: usize) -> &str {
        self.rules
            .get(i)
            .map_or(TRANSPARENT_NAME, |r| r.name.as_str())
    }

    /// Every rule's counters, for `/stats` and `/metrics`.
    pub fn status(&self) -> Vec<(String, Vec<(&'static str, u64)>)> {
        (0..self.stats.len())
            .map(|i| (self.rule_name(i).to_string(), self.stats[i].named()))
            .collect()
    }
}

/// Resolves `host:port` (an address, or a name through the system's
/// resolver), preferring the first address it gives.
pub(crate) fn resolve(host: &str, port: u16) -> Result<SocketAddr, String> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    match (host, port).to_socket_addrs() {
        Ok(mut it) => it
            .next()
            .ok_or_else(|| format!("'{host}' resolves to no address")),
        Err(e) => Err(format!("cannot resolve '{host}': {e}")),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_v4_v6_and_names() {
        let s = ForwardSpec::parse("8080=127.0.0.1:80").unwrap();
        assert_eq!(
            (s.listen, s.port, s.host.as_str(), s.host_port),
            (None, 8080, "127.0.0.1", 80)
        );
        let s = ForwardSpec::parse("10.0.0.2:80=web.internal:8080").unwrap();
        assert_eq!(s.listen, Some("10.0.0.2".parse().unwrap()));
        assert_eq!(s.host, "web.internal");
        let s = ForwardSpec::parse("[fd00::2]:80=[fd00::5]:81").unwrap();
        assert_eq!(s.listen, Some("fd00::2".parse().unwrap()));
        assert_eq!((s.host.as_str(), s.host_port), ("fd00::5", 81));
        assert_eq!(s.to_string(), "[fd00::2]:80=[fd00::5]:81");
        assert_eq!(
            ForwardSpec::parse("80=localhost:8080").unwrap().to_string(),
            "80=localhost:8080"
        );
        for bad in [
            "80",
            "80=host",
            "0=h:1",
            "80=h:0",
            "80=h:99999",
            "fd00::2:80=h:1",
            "x:80=h:1",
            "80=fd00::5:80",
            "80=:80",
        ] {
            assert!(ForwardSpec::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn rules_match_address_first_and_policy_denies_first() {
        let cfg = ForwardConfig {
            rules: vec![
                ForwardSpec::parse("80=127.0.0.1:8080").unwrap(),
                ForwardSpec::parse("10.0.0.2:80=127.0.0.1:9090").unwrap(),
            ],
            transparent: true,
            allow: vec![IpNet::parse("10.9.0.0/16").unwrap()],
            deny: vec![IpNet::parse("10.9.9.0/24").unwrap()],
            ..ForwardConfig::default()
        };
        let f = Forwarding::new(&cfg, Default::default()).unwrap();
        assert_eq!(f.rule_for("10.0.0.2:80".parse().unwrap()), Some(1));
        assert_eq!(f.rule_for("[fd00::2]:80".parse().unwrap()), Some(0));
        assert_eq!(f.rule_for("10.0.0.2:81".parse().unwrap()), None);
        assert_eq!(f.ports(), vec![80]);
        assert!(f.permits("10.9.1.1".parse().unwrap()));
        assert!(!f.permits("10.9.9.1".parse().unwrap()), "deny wins");
        assert!(!f.permits("10.8.0.1".parse().unwrap()), "not allowed");
        assert_eq!(f.stats.len(), 3);
        assert_eq!(f.rule_name(2), TRANSPARENT_NAME);
        let bad = ForwardConfig {
            rules: vec![ForwardSpec::parse("80=no-such-host.invalid:80").unwrap()],
            ..ForwardConfig::default()
        };
        let e = Forwarding::new(&bad, Default::default()).unwrap_err();
        assert!(e.contains("no-such-host.invalid"), "{e}");
    }
}
