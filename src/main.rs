//! tcpd: a user-space TCP/IP stack and network daemon on a TUN device.
//!
//! This file is only the command line: it turns flags into a
//! [`daemon::Config`] and runs it. Every error ends in one line on stderr
//! and a non-zero exit status.

use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser};
use daemon::{Config, FaultConfig, IpNet};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::process::ExitCode;

const AFTER_HELP: &str = "\
Examples:
  sudo tcpd tun0                     create tun0, serve on 10.0.0.2, then:
      ping 10.0.0.2;  nc 10.0.0.2 7;  curl http://10.0.0.2/
  sudo ip tuntap add tun0 mode tun user $USER
  sudo ip addr add 10.0.0.1/24 dev tun0 && sudo ip link set tun0 up
  tcpd --no-configure tun0           run without root on that interface
  sudo tcpd tun0 --pcap run.pcap --seed 1    record for tcpdump -r / replay
  sudo tcpd tun0 --fault-drop 0.03 --fault-reorder 0.1   impair the link
  sudo tcpd tun0 --netns sbx --default-route   the TUN in namespace sbx (created,
      removed at exit), everything it sends to tcpd:  sudo ip netns exec sbx ping 10.0.0.2
  sudo tcpd tun0 --http 0 --forward 80=127.0.0.1:8080   carry a local web server's TCP
      over tcpd's stack: curl http://10.0.0.2/ reaches 127.0.0.1:8080

Logging: -v/-vv for more, -q/-qq for less; RUST_LOG (e.g. RUST_LOG=daemon=debug) overrides.
HTTP paths: / status page, /stats counters as JSON, /metrics the same for Prometheus,
/bytes/N N bytes (byte i = i % 251).";

/// A user-space TCP/IP stack serving echo, discard and HTTP on a TUN device.
#[derive(Parser, Debug)]
#[command(name = "tcpd", version, about, after_help = AFTER_HELP)]
struct Cli {
    /// TUN interface to create (or, with --no-configure, attach to)
    #[arg(value_name = "IFACE")]
    iface: String,

    /// The stack's own IPv4 address
    #[arg(long, value_name = "IP", default_value = "10.0.0.2")]
    addr: Ipv4Addr,

    /// Address and prefix given to the kernel side of IFACE
    #[arg(long, value_name = "IP/LEN", default_value = "10.0.0.1/24", value_parser = parse_net)]
    host_addr: IpNet,

    /// MTU of IFACE (576..=65535)
    #[arg(long, value_name = "N", default_value_t = 1500, value_parser = clap::value_parser!(u32).range(576..=65535))]
    mtu: u32,

    /// Attach to an existing, configured IFACE as it is (no root needed if you own it)
    #[arg(long)]
    no_configure: bool,

    /// Echo service port (RFC 862); 0 disables
    #[arg(long, value_name = "PORT", default_value_t = 7)]
    echo: u16,

    /// Discard service port (RFC 863); 0 disables
    #[arg(long, value_name = "PORT", default_value_t = 9)]
    discard: u16,

    /// HTTP/1.1 service port; 0 disables
    #[arg(long, value_name = "PORT", default_value_t = 80)]
    http: u16,

    /// The stack's own IPv6 address
    #[arg(long, value_name = "IP", default_value = "fd00::2")]
    addr6: Ipv6Addr,

    /// IPv6 address and prefix of the kernel side
    #[arg(long, value_name = "IP/LEN", default_value = "fd00::1/64", value_parser = parse_net)]
    host_addr6: IpNet,

    /// Do not use IPv6
    #[arg(long)]
    no_ipv6: bool,

    /// Do not use TUN segmentation/checksum offload (64 KiB segments to and
    /// from the kernel; also with --pcap and --no-configure, but off anyway
    /// with fault injection)
    #[arg(long)]
    no_offload: bool,

    /// One TUN queue only: no second queue for SYNs, which otherwise keeps
    /// a SYN flood from delaying the packets of open connections
    #[arg(long)]
    no_syn_queue: bool,

    /// Under a SYN flood, write SYN-ACKs from a thread of their own (with
    /// the SYN queue and offload)
    #[arg(long)]
    synack_thread: bool,

    /// Serve static files from DIR (else the built-in pages)
    #[arg(long, value_name = "DIR")]
    http_root: Option<PathBuf>,

    // --- HTTP timeouts and connection limits (issue 11) ---
    /// Seconds a request head may take from its first byte (the first
    /// request: from the accept); then 408 and close. 0 disables
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    http_header_timeout: u64,

    /// Seconds a keep-alive HTTP connection may stay idle between requests. 0 disables
    #[arg(long, value_name = "SECS", default_value_t = 75)]
    http_idle_timeout: u64,

    /// Seconds an HTTP response may make no progress (the client stopped
    /// reading) before the connection is reset. 0 disables
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    http_send_timeout: u64,

    /// Requests served on one HTTP connection; the last is answered with Connection: close
    #[arg(long, value_name = "N", default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    http_max_requests: u32,

    /// Most connections open at once (handshaking or established, TIME-WAIT
    /// not counted); further SYNs are dropped unanswered, as Linux does on
    /// a full accept queue. 0: no limit
    #[arg(long, value_name = "N", default_value_t = 100_000)]
    max_connections: usize,

    /// Most connections open at once from one source address; further SYNs
    /// are answered with RST (connection refused). 0: no limit
    #[arg(long, value_name = "N", default_value_t = 1024)]
    max_connections_per_source: usize,

    /// Worker threads for the services; 0 runs them inline on the reactor
    /// thread. A sleeping worker's events run on the reactor (no wake-up,
    /// no context switch) while its handlers' work is light, so threads
    /// cost nothing for the built-in services. With --pcap the default is
    /// 0 (only an inline capture replays); with --forward or --transparent
    /// the kernel sockets live on worker threads, and 0 means one per core
    /// [default: one per core but the reactor's, at least 1; --pcap: 0]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(0..=256))]
    workers: Option<u32>,

    // --- Forwarding (issue 9) ---
    /// Splice connections to the stack's PORT (only those to ADDR, if
    /// given) to a new kernel TCP connection to HOST:PORT, made from the
    /// namespace tcpd runs in; HOST may be a name (resolved once at start).
    /// IPv6 in brackets: [fd00::2]:80=[fd00::5]:8080. Repeatable. The
    /// client's SYN is answered only once the upstream connected; a refused
    /// or unreachable upstream refuses the client
    #[arg(long, value_name = "[ADDR:]PORT=HOST:PORT", value_parser = parse_forward)]
    forward: Vec<daemon::forward::ForwardSpec>,

    /// Accept TCP to any destination address and port that reaches the
    /// TUN device and connect out, from a kernel socket, to that original
    /// destination (ports of the built-in services and --forward rules on
    /// the stack's own addresses excepted)
    #[arg(long)]
    transparent: bool,

    /// With --transparent: only destinations in CIDR are connected to
    /// (repeatable; default: all)
    #[arg(long, value_name = "CIDR", value_parser = parse_net)]
    allow: Vec<IpNet>,

    /// With --transparent: destinations in CIDR are refused, whatever
    /// --allow says (repeatable), with an ICMP administratively-prohibited
    /// error: the client fails at once (EHOSTUNREACH) and learns that a
    /// filter, not a closed port, turned it away
    #[arg(long, value_name = "CIDR", value_parser = parse_net)]
    deny: Vec<IpNet>,

    /// Seconds an upstream connect may take before the client is refused.
    /// 10 covers two lost SYNs (Linux retries after 1 s and 3 s more), and
    /// a client waits that long gladly; Linux's own limit (6 SYN retries,
    /// about 130 s) would hold a client's SYN longer than tcpd keeps it (75 s)
    #[arg(long, value_name = "SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    connect_timeout: u64,

    /// Seconds a forwarded connection may carry no byte either way before
    /// both sides are reset. 7440 (2 h 4 min) is the least a NAT may use
    /// for established connections (RFC 5382 REQ-5), longer than the
    /// 2-hour TCP keep-alive default, so keep-alives keep connections
    /// alive. 0 disables
    #[arg(long, value_name = "SECS", default_value_t = 7440)]
    forward_idle_timeout: u64,

    /// Make forwarded and transparent connections through this SOCKS5
    /// proxy (RFC 1928 CONNECT to the original destination) instead of
    /// directly; with USER:PASS (RFC 1929; %XX escapes allowed, 1..=255
    /// bytes each) it authenticates. The client's SYN is answered once the
    /// proxy's reply says connected; a refusal of the proxy's refuses the
    /// client alike. HOST is resolved once at start
    #[arg(long, value_name = "socks5://[USER:PASS@]HOST:PORT")]
    upstream: Option<String>,
    /// Nice value of the reactor thread (the stack; workers keep tcpd's).
    /// Negative values (CAP_SYS_NICE) keep connects fast under a packet
    /// flood, which the stack otherwise fights for CPU at the flooder's
    /// priority, while the kernel's own stack runs ahead of every process
    #[arg(long, value_name = "N", default_value_t = 0, allow_negative_numbers = true,
          value_parser = clap::value_parser!(i32).range(-20..=19))]
    reactor_nice: i32,

    /// The reactor runs a sleeping worker's events itself, instead of
    /// waking the thread, while that worker's rounds take at most this many
    /// µs on average; heavier handlers get their thread. 0: every event
    /// goes to the worker's thread (no effect with forwarding, whose
    /// events always do)
    #[arg(long, value_name = "US", default_value_t = 50, value_parser = clap::value_parser!(u64).range(0..=1_000_000))]
    worker_help_us: u64,

    /// Record every packet in and out to FILE (pcap, link type RAW) and FILE.json
    #[arg(long, value_name = "FILE")]
    pcap: Option<PathBuf>,

    /// Fixed seed for ISNs and randomness (tests, replays) [default: random]
    #[arg(long, value_name = "N")]
    seed: Option<u64>,

    /// Drop each packet with probability P (both directions)
    #[arg(long, value_name = "P", default_value_t = 0.0, value_parser = parse_prob)]
    fault_drop: f64,

    /// Duplicate each packet with probability P
    #[arg(long, value_name = "P", default_value_t = 0.0, value_parser = parse_prob)]
    fault_dup: f64,

    /// Hold each packet back behind the next few with probability P
    #[arg(long, value_name = "P", default_value_t = 0.0, value_parser = parse_prob)]
    fault_reorder: f64,

    /// Flip one bit of each packet with probability P
    #[arg(long, value_name = "P", default_value_t = 0.0, value_parser = parse_prob)]
    fault_corrupt: f64,

    /// Delay every packet by MS milliseconds (0..=10000)
    #[arg(long, value_name = "MS", default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=10_000))]
    fault_delay: u64,

    /// Seed of the fault injector
    #[arg(long, value_name = "N", default_value_t = 1)]
    fault_seed: u64,

    /// On SIGINT/SIGTERM, wait up to MS for connections to close before resetting them
    #[arg(long, value_name = "MS", default_value_t = 2000)]
    grace_ms: u64,

    /// Congestion control of new connections: cubic (RFC 9438, as Linux) or
    /// newreno (RFC 5681/6582); either with HyStart++ (RFC 9406) and PRR (RFC 6937)
    #[arg(long, value_name = "ALG", default_value = "cubic",
          value_parser = clap::builder::PossibleValuesParser::new(["cubic", "newreno"]))]
    congestion: String,
    /// Packetization-layer path MTU discovery (RFC 4821), as Linux's
    /// tcp_mtu_probing: off (0, Linux's default); blackhole (1): after 3 s
    /// of RTOs with no ICMP the MSS falls to 1024, then probes with larger
    /// segments find the path MTU; always (2): every connection starts at
    /// 1024 and probes upward
    #[arg(long, value_name = "MODE", default_value = "off",
          value_parser = clap::builder::PossibleValuesParser::new(["off", "blackhole", "always"]))]
    mtu_probing: String,
    /// Most memory all connections together may hold for their send and
    /// receive buffers (like Linux's tcp_mem), in bytes or with a K, M or G
    /// suffix (powers of 1024), 64K..=1T. Above 2/3 of it windows and send
    /// buffers stop growing; at the limit growth is refused (counted in
    /// /stats as mem_*) [default: 256M]
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    mem_limit: Option<usize>,
    /// The most a connection's receive buffer (its window) grows to by
    /// auto-tuning, with the rate the application reads (Linux's
    /// tcp_rmem[2]); the window scale offered is the least that can say it.
    /// SIZE as for --mem-limit, at most 1G; 256K or less: no growth
    /// [default: 6M]
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    recv_buffer_max: Option<usize>,
    /// The most a connection's send buffer grows to with the congestion
    /// window (Linux's tcp_wmem[2]). SIZE as for --mem-limit, at most 1G;
    /// 256K or less: no growth [default: 4M]
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    send_buffer_max: Option<usize>,

    // --- network namespace and outbound routing (issue 9) ---
    /// Create (or attach to) IFACE inside this network namespace and
    /// configure it there, while tcpd and its own sockets stay here. NAME
    /// means /run/netns/NAME (as `ip netns`): if it does not exist, tcpd
    /// creates it (loopback up) and removes it at exit. PATH is any
    /// namespace file, e.g. /proc/PID/ns/net of a container's process
    #[arg(long, value_name = "NAME|PATH", value_parser = parse_netns)]
    netns: Option<daemon::NetnsTarget>,

    /// Give IFACE the default routes (IPv4 and IPv6), so that everything
    /// sent goes to tcpd: with --netns in that namespace; without it in
    /// routing table N of --outbound-mark N, with policy rules (priorities
    /// 32764, 32765) that keep tcpd's marked sockets out of it. Removed at exit
    #[arg(long)]
    default_route: bool,

    /// Set SO_MARK N on every outbound (upstream) socket; with
    /// --default-route and no --netns also the routing table that holds the
    /// TUN's routes, which marked traffic skips (as wg-quick does).
    /// Needs CAP_NET_ADMIN
    #[arg(long, value_name = "N")]
    outbound_mark: Option<u32>,

    /// Bind every outbound (upstream) socket to IFACE (SO_BINDTODEVICE):
    /// it then leaves by IFACE's routes only, never by a route into the TUN
    #[arg(long, value_name = "IFACE")]
    outbound_device: Option<String>,

    /// More logging (-v debug, -vv trace)
    #[arg(short, long, action = clap::ArgAction::Count)]
    verbose: u8,

    /// Less logging (-q warnings only, -qq errors only)
    #[arg(short, long, action = clap::ArgAction::Count, conflicts_with = "verbose")]
    quiet: u8,
}

fn parse_net(s: &str) -> Result<IpNet, String> {
    IpNet::parse(s)
}

fn parse_netns(s: &str) -> Result<daemon::NetnsTarget, String> {
    daemon::NetnsTarget::parse(s)
}

/// Whether the TUN gets the default routes: `--default-route`, or
/// `--transparent` (`transparent`) where that cannot loop, that is with
/// `--netns` or with `--outbound-mark`'s policy routing.
fn wants_default_route(explicit: bool, transparent: bool, netns: bool, mark: bool) -> bool {
    explicit || (transparent && (netns || mark))
}

fn parse_forward(s: &str) -> Result<daemon::forward::ForwardSpec, String> {
    daemon::forward::ForwardSpec::parse(s)
        .map_err(|e| e.trim_start_matches("--forward ").to_string())
}

fn parse_prob(s: &str) -> Result<f64, String> {
    let p: f64 = s.parse().map_err(|_| format!("'{s}' is not a number"))?;
    if !(0.0..=1.0).contains(&p) {
        return Err(format!("{p} is not a probability between 0 and 1"));
    }
    Ok(p)
}

/// A byte count: digits with an optional K, M or G suffix (powers of 1024).
fn parse_size(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let (digits, shift) = match t.as_bytes().last().map(u8::to_ascii_uppercase) {
        Some(b'K') => (&t[..t.len() - 1], 10),
        Some(b'M') => (&t[..t.len() - 1], 20),
        Some(b'G') => (&t[..t.len() - 1], 30),
        _ => (t, 0),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("'{s}' is not a size (bytes, or a number with K, M or G)"))?;
    let bytes = n
        .checked_mul(1u64 << shift)
        .filter(|b| (64 * 1024..=1u64 << 40).contains(b))
        .ok_or_else(|| format!("'{s}' is out of range 64K..=1T"))?;
    usize::try_from(bytes).map_err(|_| format!("'{s}' is too large for this machine"))
}

fn random_seed() -> u64 {
    getrandom::u64().unwrap_or_else(|_| {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        (t as u64) ^ u64::from(std::process::id()).rotate_left(32)
    })
}

/// Whether the user gave flag `id` (a field name of [`Cli`]) rather than
/// leaving its default.
fn given(m: &ArgMatches, id: &str) -> bool {
    m.value_source(id)
        .is_some_and(|s| s != ValueSource::DefaultValue)
}

/// The command line, and the matches that say which flags were given.
fn parse() -> Result<(Cli, ArgMatches), clap::Error> {
    let m = Cli::command().try_get_matches()?;
    let cli = Cli::from_arg_matches(&m)?;
    Ok((cli, m))
}

/// The config the command line says, or the one line that says what is
/// wrong with a value clap cannot check without repeating it (the
/// `--upstream` URL, whose password must not show in an error).
fn config(cli: Cli, m: &ArgMatches) -> Result<Config, String> {
    let d = Config::default();
    let upstream = match cli.upstream.as_deref() {
        Some(u) => Some(
            daemon::forward::socks::UpstreamSpec::parse(u)
                .map_err(|e| format!("--upstream: {e}"))?,
        ),
        None => None,
    };
    Ok(Config {
        // A clash of the default IPv6 addresses only turns IPv6 off; one
        // of addresses the user chose is refused (daemon::tun).
        ipv6_explicit: given(m, "addr6") || given(m, "host_addr6"),
        iface: cli.iface,
        addr: cli.addr,
        host_addr: cli.host_addr,
        addr6: if cli.no_ipv6 { None } else { Some(cli.addr6) },
        host_addr6: cli.host_addr6,
        mtu: cli.mtu as usize,
        no_configure: cli.no_configure,
        echo_port: cli.echo,
        discard_port: cli.discard,
        http_port: cli.http,
        http_root: cli.http_root,
        // A capture replays only when the handlers ran inline.
        workers: cli
            .workers
            .map(|w| w as usize)
            .unwrap_or(if cli.pcap.is_some() { 0 } else { d.workers }),
        reactor_nice: cli.reactor_nice,
        worker_help_us: cli.worker_help_us,
        pcap: cli.pcap,
        seed: cli.seed.unwrap_or_else(random_seed),
        fault: FaultConfig {
            drop: cli.fault_drop,
            dup: cli.fault_dup,
            reorder: cli.fault_reorder,
            corrupt: cli.fault_corrupt,
            delay_ms: cli.fault_delay,
            seed: cli.fault_seed,
            ..d.fault
        },
        grace_ms: cli.grace_ms,
        offload: !cli.no_offload,
        syn_queue: !cli.no_syn_queue,
        synack_thread: cli.synack_thread,
        http: daemon::services::HttpConfig {
            header_timeout: secs(cli.http_header_timeout),
            idle_timeout: secs(cli.http_idle_timeout),
            send_timeout: secs(cli.http_send_timeout),
            max_requests: cli.http_max_requests,
            ..d.http
        },
        tcp: tcp::Config {
            max_passive: cli.max_connections,
            max_passive_per_source: cli.max_connections_per_source,
            congestion: tcp::Congestion::parse(&cli.congestion).unwrap_or_default(),
            mem_limit: cli.mem_limit.unwrap_or(d.tcp.mem_limit),
            recv_buffer_max: cli.recv_buffer_max.unwrap_or(d.tcp.recv_buffer_max),
            send_buffer_max: cli.send_buffer_max.unwrap_or(d.tcp.send_buffer_max),
            mtu_probing: tcp::MtuProbing::parse(&cli.mtu_probing).unwrap_or_default(),
            ..d.tcp
        },
        default_route: wants_default_route(
            cli.default_route,
            cli.transparent,
            cli.netns.is_some(),
            cli.outbound_mark.is_some(),
        ),
        netns: cli.netns,
        outbound: daemon::OutboundPolicy {
            mark: cli.outbound_mark,
            device: cli.outbound_device,
        },
        forward: daemon::forward::ForwardConfig {
            rules: cli.forward,
            transparent: cli.transparent,
            allow: cli.allow,
            deny: cli.deny,
            connect_timeout: std::time::Duration::from_secs(cli.connect_timeout),
            idle_timeout: secs(cli.forward_idle_timeout),
            upstream,
        },
        ..d
    })
}

/// A timeout flag's value: 0 disables it.
fn secs(s: u64) -> Option<std::time::Duration> {
    (s != 0).then(|| std::time::Duration::from_secs(s))
}

fn init_logging(verbose: u8, quiet: u8) {
    use tracing_subscriber::EnvFilter;
    let level = match (verbose, quiet) {
        (0, 0) => "info",
        (1, _) => "debug",
        (v, _) if v >= 2 => "trace",
        (_, 1) => "warn",
        _ => "error",
    };
    let filter = match std::env::var("RUST_LOG") {
        Ok(s) if !s.is_empty() => EnvFilter::try_new(&s).unwrap_or_else(|_| EnvFilter::new(level)),
        _ => EnvFilter::new(level),
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .try_init();
}

/// One line to stderr. Unlike `eprintln!`, a stderr that cannot take it
/// (a closed pipe, `2> /dev/full`) does not panic: the exit status still
/// tells what happened.
fn say(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{line}");
}

fn main() -> ExitCode {
    let (cli, matches) = match parse() {
        Ok(c) => c,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                let _ = e.print();
                return ExitCode::SUCCESS;
            }
            // One line: clap's first line, without its usage block.
            let text = e.render().to_string();
            let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
            let mut first = lines.next().unwrap_or("invalid arguments").to_string();
            if first.ends_with(':') {
                // "the following required arguments were not provided:" + the list.
                if let Some(next) = lines.next() {
                    first = format!("{first} {next}");
                }
            }
            let first = first.strip_prefix("error: ").unwrap_or(&first);
            say(&format!("tcpd: {first} (see tcpd --help)"));
            return ExitCode::from(2);
        }
    };
    init_logging(cli.verbose, cli.quiet);
    let cfg = match config(cli, &matches) {
        Ok(c) => c,
        Err(e) => {
            say(&format!("tcpd: {e} (see tcpd --help)"));
            return ExitCode::from(2);
        }
    };
    match daemon::run(cfg) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            say(&format!("tcpd: {e}"));
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn cfg(args: &[&str]) -> Config {
        let m = Cli::command().try_get_matches_from(args).unwrap();
        let cli = Cli::from_arg_matches(&m).unwrap();
        config(cli, &m).unwrap()
    }

    #[test]
    fn explicit_ipv6_flags_are_told_apart_from_defaults() {
        assert!(!cfg(&["tcpd", "tun0"]).ipv6_explicit);
        assert!(!cfg(&["tcpd", "tun0", "--addr", "10.0.0.3"]).ipv6_explicit);
        assert!(cfg(&["tcpd", "tun0", "--addr6", "fd00::2"]).ipv6_explicit);
        assert!(cfg(&["tcpd", "tun0", "--host-addr6", "fd00::1/64"]).ipv6_explicit);
        assert!(cfg(&["tcpd", "tun0", "--no-ipv6"]).addr6.is_none());
    }

    #[test]
    fn netns_and_outbound_flags() {
        let c = cfg(&["tcpd", "tun0"]);
        assert_eq!(c.netns, None);
        assert!(!c.default_route);
        assert!(!c.outbound.is_active());
        let c = cfg(&["tcpd", "tun0", "--netns", "sbx", "--default-route"]);
        assert_eq!(c.netns, Some(daemon::NetnsTarget::Name("sbx".into())));
        assert!(c.default_route);
        let c = cfg(&[
            "tcpd",
            "tun0",
            "--netns",
            "/proc/1/ns/net",
            "--outbound-mark",
            "51820",
            "--outbound-device",
            "eth0",
        ]);
        assert_eq!(
            c.netns,
            Some(daemon::NetnsTarget::Path("/proc/1/ns/net".into()))
        );
        assert_eq!(c.outbound.mark, Some(51820));
        assert_eq!(c.outbound.device.as_deref(), Some("eth0"));
        assert!(Cli::command()
            .try_get_matches_from(["tcpd", "tun0", "--netns", ".."])
            .is_err());
        // --transparent routes everything only where that cannot loop.
        assert!(wants_default_route(false, true, true, false));
        assert!(wants_default_route(false, true, false, true));
        assert!(!wants_default_route(false, true, false, false));
        assert!(!wants_default_route(false, false, true, true));
    }

    #[test]
    fn upstream_flag_parses_and_hides_the_password() {
        let c = cfg(&[
            "tcpd",
            "tun0",
            "--forward",
            "80=127.0.0.1:8080",
            "--upstream",
            "socks5://alice:hunter2@127.0.0.1:1080",
        ]);
        let u = c.forward.upstream.unwrap();
        assert_eq!((u.host.as_str(), u.port), ("127.0.0.1", 1080));
        assert_eq!(u.to_string(), "socks5://alice:***@127.0.0.1:1080");
        let bad = |v: &str| {
            let m = Cli::command()
                .try_get_matches_from(["tcpd", "tun0", "--transparent", "--upstream", v])
                .unwrap();
            let cli = Cli::from_arg_matches(&m).unwrap();
            config(cli, &m).unwrap_err()
        };
        let e = bad("socks4://h:1");
        assert!(
            e.starts_with("--upstream: ") && e.contains("socks5://"),
            "{e}"
        );
        let e = bad("socks5://u:hunter2@h");
        assert!(e.contains("HOST:PORT") && !e.contains("hunter2"), "{e}");
        let help = Cli::command().render_long_help().to_string();
        assert!(
            help.contains("--upstream <socks5://[USER:PASS@]HOST:PORT>"),
            "{help}"
        );
    }
}
