//! The daemon's configuration: everything the command line can set, with
//! defaults, between the CLI (`src/main.rs`) and the runtime ([`crate::run`]).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

/// An address with a prefix length (`10.0.0.1/24`); (de)serializes as
/// that string.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct IpNet {
    /// The address.
    pub addr: IpAddr,
    /// The prefix length in bits.
    pub prefix: u8,
}

impl IpNet {
    /// Parses `IP/LEN`; a bare IP gets /24 (IPv4) or /64 (IPv6).
    pub fn parse(s: &str) -> Result<IpNet, String> {
        let (ip, len) = match s.split_once('/') {
            Some((ip, len)) => (ip, Some(len)),
            None => (s, None),
        };
        let addr: IpAddr = ip
            .trim()
            .parse()
            .map_err(|_| format!("'{s}' is not an IP address"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match len {
            Some(l) => l
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("'{s}': prefix length must be 0..={max}"))?,
            None if addr.is_ipv4() => 24,
            None => 64,
        };
        Ok(IpNet { addr, prefix })
    }

    /// Whether `ip` lies in this network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(a), IpAddr::V4(b)) => {
                let mask = if self.prefix == 0 {
                    0
                } else {
                    u32::MAX << (32 - u32::from(self.prefix))
                };
                u32::from(a) & mask == u32::from(b) & mask
            }
            (IpAddr::V6(a), IpAddr::V6(b)) => {
                let mask = if self.prefix == 0 {
                    0
                } else {
                    u128::MAX << (128 - u32::from(self.prefix))
                };
                u128::from(a) & mask == u128::from(b) & mask
            }
            _ => false,
        }
    }
}

impl From<IpNet> for String {
    fn from(n: IpNet) -> String {
        n.to_string()
    }
}

impl TryFrom<String> for IpNet {
    type Error = String;
    fn try_from(s: String) -> Result<IpNet, String> {
        IpNet::parse(&s)
    }
}

impl std::fmt::Display for IpNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// Seeded fault injection on the device, both directions (see [`crate::fault`]).
/// (De)serializes with the fields' names; a missing field takes its default.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct FaultConfig {
    /// Probability that a packet is dropped.
    pub drop: f64,
    /// Probability that a packet is delivered twice.
    pub dup: f64,
    /// Probability that a packet is held back so that later ones overtake it.
    pub reorder: f64,
    /// Probability that one byte of a packet is flipped.
    pub corrupt: f64,
    /// Fixed extra delay of every packet, milliseconds.
    pub delay_ms: u64,
    /// Seed of the injector's generator.
    pub seed: u64,
    /// Most packets held back (delay and reorder) per direction; beyond it
    /// packets pass undelayed.
    pub max_held: usize,
}

impl Default for FaultConfig {
    fn default() -> Self {
        FaultConfig {
            drop: 0.0,
            dup: 0.0,
            reorder: 0.0,
            corrupt: 0.0,
            delay_ms: 0,
            seed: 1,
            max_held: 4096,
        }
    }
}

impl FaultConfig {
    /// Whether any fault is configured.
    pub fn is_active(&self) -> bool {
        self.drop > 0.0
            || self.dup > 0.0
            || self.reorder > 0.0
            || self.corrupt > 0.0
            || self.delay_ms > 0
    }
}

/// Everything the daemon needs to run. [`Config::default`] gives the values
/// documented in the command-line contract (DESIGN.md).
#[derive(Clone, Debug)]
pub struct Config {
    /// Interface name (`tun0`).
    pub iface: String,
    /// The stack's own IPv4 address. Default 10.0.0.2.
    pub addr: Ipv4Addr,
    /// Address and prefix given to the kernel side. Default 10.0.0.1/24.
    pub host_addr: IpNet,
    /// The stack's own IPv6 address; `None` disables IPv6. Default fd00::2.
    pub addr6: Option<Ipv6Addr>,
    /// IPv6 address and prefix of the kernel side. Default fd00::1/64.
    pub host_addr6: IpNet,
    /// Whether the user chose `addr6` or `host_addr6` (`--addr6`,
    /// `--host-addr6`) instead of leaving the defaults. IPv6 is optional:
    /// when the default IPv6 addresses clash with another interface's,
    /// tcpd warns and runs IPv4 only; addresses the user asked for are
    /// refused instead. Default false.
    pub ipv6_explicit: bool,
    /// MTU of the interface. Default 1500.
    pub mtu: usize,
    /// Transmit queue length set on the interface (the kernel default of
    /// 500 drops bursts silently). Default 10 000.
    pub txqueuelen: u32,
    /// Attach to an existing interface as it is (no addresses, MTU, state changes).
    pub no_configure: bool,
    /// Echo port (RFC 862); 0 disables. Default 7.
    pub echo_port: u16,
    /// Discard port (RFC 863); 0 disables. Default 9.
    pub discard_port: u16,
    /// HTTP port; 0 disables. Default 80.
    pub http_port: u16,
    /// Serve static files from this directory instead of the built-in pages.
    pub http_root: Option<PathBuf>,
    /// Worker threads for the services; 0 runs them inline on the reactor
    /// thread. Default [`default_workers`]: one per core but the reactor's.
    /// A worker's events cross to its thread only while its handlers are
    /// busy; a sleeping worker's events run on the reactor (see
    /// [`crate::worker::help`]), so light services cost what they cost
    /// inline and heavy ones get the other cores. `tcpd --pcap` without
    /// `--workers` runs inline: only such a capture replays.
    pub workers: usize,
    /// Nice value of the reactor thread, the one that runs the stack
    /// (`setpriority` on that thread only: worker and pcap threads keep the
    /// process's). Under a packet flood the reactor competes for CPU with
    /// the flooder and every other process, where the kernel's own stack
    /// runs in softirq, ahead of all of them; a negative value (needs
    /// CAP_SYS_NICE) gives it that head start. -20..=19; default 0 (as
    /// started).
    pub reactor_nice: i32,
    /// Record every packet in and out to this pcap file.
    pub pcap: Option<PathBuf>,
    /// Seed of the TCP endpoint (ISNs, cookies, hashing).
    pub seed: u64,
    /// Fault injection on the device.
    pub fault: FaultConfig,
    /// How long a shutdown waits for connections to close before resetting them, ms. Default 2000.
    pub grace_ms: u64,
    /// Accept queue per listening port. Default 1024.
    pub backlog: usize,
    /// Bounded capacity, in batches, of each reactor-to-worker channel. Default 1024.
    pub worker_queue: usize,
    /// Bounded capacity, in batches, of the worker-to-reactor channel. Default 4096.
    pub command_queue: usize,
    /// Largest chunk of received data handed to a service in one event. Default 64 KiB.
    pub read_chunk: usize,
    /// Buffers kept in the shared buffer pool (each at most
    /// `4 * read_chunk` bytes). Default 256.
    pub pool_buffers: usize,
    /// How often idle memory goes back, ms; 0 never. Each interval the TCP
    /// buffer pool and the shared buffer pool free what nobody took during
    /// the previous one; after an interval without packets the spare batch
    /// vectors go too, and, when that freed at least 1 MiB or connections
    /// closed, glibc is asked to return free heap pages to the OS
    /// (`malloc_trim`). Default 1000.
    pub mem_release_ms: u64,
    /// How long a worker spins looking for work before it parks, µs. Default 50.
    pub worker_spin_us: u64,
    /// The reactor runs a sleeping worker's events itself, instead of
    /// waking the thread, while that worker's rounds (a batch of events
    /// and its timers) take at most this long on average, µs; heavier
    /// handlers get their thread. 0: every event goes to the thread.
    /// Not with forwarding (the kernel sockets are the worker's). Default 50.
    pub worker_help_us: u64,
    /// How long the reactor spins for a worker's answer before it sleeps,
    /// µs (only right after it handed a worker events). Default 30.
    pub reactor_spin_us: u64,
    /// Packets read from the device before the reactor transmits and reads on. Default 128.
    pub rx_budget: usize,
    /// Packets queued for the pcap writer thread. Default 8192.
    pub pcap_queue: usize,
    /// Segmentation and checksum offload on the TUN device (IFF_VNET_HDR:
    /// the kernel and tcpd exchange TCP segments of up to 64 KiB and skip
    /// checksums on the local hop). Also with `no_configure` (the owner of
    /// a persistent device may set it; when the kernel refuses, tcpd runs
    /// without it, see [`crate::tun::TunDevice::open`]) and with `pcap`
    /// (the tap records the segments the wire carries, see [`crate::pcap`]).
    /// Off when faults are injected (the injector works on MTU-sized
    /// packets). Default true.
    pub offload: bool,
    /// A second TUN queue for pure SYNs (`IFF_MULTI_QUEUE` and a steering
    /// program, see [`crate::steer`]), read after the main queue: under a
    /// SYN flood the packets of existing connections do not wait behind it.
    /// Only on a device tcpd creates; without CAP_BPF tcpd runs with one
    /// queue. Default true.
    pub syn_queue: bool,
    /// With the SYN queue and offload: while a SYN flood fills the SYN
    /// queue, a thread of its own (at the reactor's nice) writes the
    /// SYN-ACKs, taking about 0.6 µs a SYN off the reactor. Measured on a
    /// loaded 2-CPU machine it did not lower the flood p99 consistently
    /// (README, "Under a SYN flood"). Default false.
    pub synack_thread: bool,
    /// Disable Nagle's algorithm on accepted connections (the services write
    /// whole responses at once). Default true.
    pub nodelay: bool,
    /// The TCP endpoint's configuration; `seed`, `addrs` and `mtu` are
    /// overwritten from the fields above.
    pub tcp: tcp::Config,
    /// Limits of the HTTP service; `root` is overwritten from `http_root`.
    pub http: crate::services::HttpConfig,
    // --- network namespace and outbound routing (issue 9) ---
    /// `--netns`: create (or attach to) the TUN device in this network
    /// namespace and configure it there; tcpd and its kernel sockets stay
    /// in the namespace it was started in (see [`crate::netns`]). A NAME
    /// that does not exist is created and removed at exit. Default none.
    pub netns: Option<crate::netns::NetnsTarget>,
    /// Give the TUN the default routes (IPv4, and IPv6 unless it is off),
    /// so that everything sent goes to the stack: with `netns`, in that
    /// namespace's main table; without it, in the routing table numbered
    /// by `outbound.mark`, with policy rules that keep tcpd's marked
    /// sockets out of it (see [`crate::outbound`]). `--default-route`, and
    /// `--transparent` with `--netns` or `--outbound-mark`. Default false.
    pub default_route: bool,
    /// What is done to tcpd's upstream sockets so that they cannot loop
    /// back into the TUN (`--outbound-mark`, `--outbound-device`).
    /// Default: nothing.
    pub outbound: crate::outbound::OutboundPolicy,
    /// Forwarding (`--forward`, `--transparent` and their limits). With
    /// forwarding on, `workers` 0 means one worker per core (the kernel
    /// sockets live on worker threads).
    pub forward: crate::forward::ForwardConfig,
}

/// The default number of worker threads: one per core but one (the core
/// the reactor keeps busy), at least one.
pub fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().saturating_sub(1).max(1))
}

impl Default for Config {
    fn default() -> Self {
        Config {
            iface: "tun0".into(),
            addr: Ipv4Addr::new(10, 0, 0, 2),
            host_addr: IpNet {
                addr: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
                prefix: 24,
            },
            addr6: Some(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2)),
            host_addr6: IpNet {
                addr: IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1)),
                prefix: 64,
            },
            ipv6_explicit: false,
            mtu: 1500,
            txqueuelen: 10_000,
            no_configure: false,
            echo_port: 7,
            discard_port: 9,
            http_port: 80,
            http_root: None,
            workers: default_workers(),
            reactor_nice: 0,
            pcap: None,
            seed: 0,
            fault: FaultConfig::default(),
            grace_ms: 2000,
            backlog: 1024,
            worker_queue: 1024,
            command_queue: 4096,
            read_chunk: 64 * 1024,
            pool_buffers: 256,
            mem_release_ms: 1000,
            worker_spin_us: 50,
            worker_help_us: 50,
            reactor_spin_us: 30,
            rx_budget: 128,
            pcap_queue: 8192,
            nodelay: true,
            offload: true,
            syn_queue: true,
            synack_thread: false,
            tcp: tcp::Config::default(),
            http: crate::services::HttpConfig::default(),
            netns: None,
            default_route: false,
            outbound: crate::outbound::OutboundPolicy::default(),
            forward: crate::forward::ForwardConfig::default(),
        }
    }
}

impl Config {
    /// Checks the configuration; the error is one line for the user.
    pub fn validate(&self) -> Result<(), String> {
        let name = &self.iface;
        if name.is_empty()
            || name.len() > 15
            || name.contains(['/', ' ', '\t', '\n', ':'])
            || name == "."
            || name == ".."
        {
            return Err(format!(
                "invalid interface name '{name}' (1 to 15 characters, no '/', ':' or spaces)"
            ));
        }
        if !(-20..=19).contains(&self.reactor_nice) {
            return Err(format!(
                "--reactor-nice {} out of range -20..=19",
                self.reactor_nice
            ));
        }
        if !(576..=65535).contains(&self.mtu) {
            return Err(format!("--mtu {} out of range 576..=65535", self.mtu));
        }
        if !self.host_addr.addr.is_ipv4() {
            return Err(format!(
                "--host-addr {} is not an IPv4 address",
                self.host_addr
            ));
        }
        if self.host_addr.addr == IpAddr::V4(self.addr) {
            return Err(format!(
                "--addr and --host-addr are the same address ({})",
                self.addr
            ));
        }
        if !self.no_configure && !self.host_addr.contains(IpAddr::V4(self.addr)) {
            return Err(format!(
                "--addr {} is not inside --host-addr {}: the kernel would not route it to {}",
                self.addr, self.host_addr, self.iface
            ));
        }
        if let Some(a6) = self.addr6 {
            if !self.host_addr6.addr.is_ipv6() {
                return Err(format!(
                    "--host-addr6 {} is not an IPv6 address",
                    self.host_addr6
                ));
            }
            if self.host_addr6.addr == IpAddr::V6(a6) {
                return Err(format!(
                    "--addr6 and --host-addr6 are the same address ({a6})"
                ));
            }
            if !self.no_configure && !self.host_addr6.contains(IpAddr::V6(a6)) {
                return Err(format!(
                    "--addr6 {a6} is not inside --host-addr6 {}",
                    self.host_addr6
                ));
            }
        }
        let f = &self.fault;
        for (flag, p) in [
            ("--fault-drop", f.drop),
            ("--fault-dup", f.dup),
            ("--fault-reorder", f.reorder),
            ("--fault-corrupt", f.corrupt),
        ] {
            if !(0.0..=1.0).contains(&p) || p.is_nan() {
                return Err(format!("{flag} {p} is not a probability in 0..=1"));
            }
        }
        if f.drop >= 1.0 {
            return Err("--fault-drop 1 would drop every packet".into());
        }
        if f.delay_ms > 10_000 {
            return Err(format!(
                "--fault-delay {} ms is more than 10000 ms",
                f.delay_ms
            ));
        }
        if self.workers > 256 {
            return Err(format!("--workers {} is more than 256", self.workers));
        }
        let mut ports: Vec<u16> = [self.echo_port, self.discard_port, self.http_port]
            .into_iter()
            .filter(|p| *p != 0)
            .collect();
        let n = ports.len();
        ports.sort_unstable();
        ports.dedup();
        if ports.len() != n {
            return Err("two services on the same port".into());
        }
        for r in &self.forward.rules {
            if ports.contains(&r.port) {
                return Err(format!(
                    "--forward {r}: port {} is a service's port too (turn the service off, e.g. --http 0)",
                    r.port
                ));
            }
            if let Some(a) = r.listen {
                if !self.stack_addrs().contains(&a) {
                    return Err(format!(
                        "--forward {r}: {a} is not an address of the stack ({})",
                        self.stack_addrs()
                            .iter()
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ));
                }
            }
        }
        if self.forward.connect_timeout.is_zero() {
            return Err("--connect-timeout must be at least 1 second".into());
        }
        if !self.forward.transparent
            && (!self.forward.allow.is_empty() || !self.forward.deny.is_empty())
        {
            return Err(
                "--allow and --deny filter --transparent destinations: add --transparent".into(),
            );
        }
        if self.forward.upstream.is_some() && !self.forward.active() {
            return Err(
                "--upstream carries --forward and --transparent connections: add one of them"
                    .into(),
            );
        }
        if let Some(root) = &self.http_root {
            if !root.is_dir() {
                return Err(format!("--http-root {}: not a directory", root.display()));
            }
        }
        for (name, v) in [
            ("worker_queue", self.worker_queue),
            ("command_queue", self.command_queue),
            ("read_chunk", self.read_chunk),
            ("rx_budget", self.rx_budget),
            ("pcap_queue", self.pcap_queue),
            ("backlog", self.backlog),
        ] {
            if v == 0 {
                return Err(format!("{name} must be at least 1"));
            }
        }
        self.validate_netns()?;
        self.tcp_config().validate()
    }

    /// The checks of the namespace and outbound fields.
    fn validate_netns(&self) -> Result<(), String> {
        self.outbound.validate()?;
        if self.default_route && self.no_configure {
            return Err(
                "--default-route changes routes, --no-configure promises to change nothing; \
                 give one of them"
                    .into(),
            );
        }
        if self.default_route && self.netns.is_none() && self.outbound.mark.is_none() {
            return Err(format!(
                "a default route via {} in tcpd's own namespace would route tcpd's own \
                 connections back into it: give --netns (the TUN in a sandbox namespace) or \
                 --outbound-mark N (the TUN's routes in table N, tcpd's sockets marked to skip it)",
                self.iface
            ));
        }
        Ok(())
    }

    /// The worker threads to run: `workers`, or with forwarding and
    /// `workers` 0, one per core.
    pub fn effective_workers(&self) -> usize {
        if self.forward.active() && self.workers == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            self.workers
        }
    }

    /// The addresses the stack answers on.
    pub fn stack_addrs(&self) -> Vec<IpAddr> {
        let mut v = vec![IpAddr::V4(self.addr)];
        if let Some(a6) = self.addr6 {
            v.push(IpAddr::V6(a6));
        }
        v
    }

    /// Whether the TUN device is opened with offload (see [`Config::offload`]).
    pub fn effective_offload(&self) -> bool {
        self.offload && !self.fault.is_active()
    }

    /// The endpoint configuration derived from this one.
    pub fn tcp_config(&self) -> tcp::Config {
        let mut t = self.tcp.clone();
        t.seed = self.seed;
        t.addrs = self.stack_addrs();
        t.mtu = self.mtu;
        if self.effective_offload() {
            t.tso_max = 65535;
            t.checksum_offload = true;
        }
        t
    }

    /// Services enabled, by name and port.
    pub fn service_ports(&self) -> Vec<(&'static str, u16)> {
        [
            ("echo", self.echo_port),
            ("discard", self.discard_port),
            ("http", self.http_port),
        ]
        .into_iter()
        .filter(|(_, p)| *p != 0)
        .collect()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn ipnet_parse_and_contains() {
        let n = IpNet::parse("10.0.0.1/24").unwrap();
        assert!(n.contains("10.0.0.2".parse().unwrap()));
        assert!(!n.contains("10.0.1.2".parse().unwrap()));
        assert!(IpNet::parse("10.0.0.1/33").is_err());
        assert!(IpNet::parse("nonsense").is_err());
        let n6 = IpNet::parse("fd00::1/64").unwrap();
        assert!(n6.contains("fd00::2".parse().unwrap()));
        assert!(!n6.contains("fd01::2".parse().unwrap()));
        assert_eq!(IpNet::parse("fd00::1").unwrap().prefix, 64);
    }

    #[test]
    fn default_validates_and_bad_values_do_not() {
        Config::default().validate().unwrap();
        let c = Config {
            mtu: 100,
            ..Config::default()
        };
        assert!(c.validate().unwrap_err().contains("--mtu"));
        let c = Config {
            addr: Ipv4Addr::new(192, 168, 9, 9),
            ..Config::default()
        };
        assert!(c.validate().is_err());
        let mut c = Config::default();
        c.fault.drop = 1.5;
        assert!(c.validate().unwrap_err().contains("--fault-drop"));
        let c = Config {
            echo_port: 80,
            ..Config::default()
        };
        assert!(c.validate().is_err());
        let c = Config {
            iface: "a/b".into(),
            ..Config::default()
        };
        assert!(c.validate().is_err());
    }

    #[test]
    fn a_default_route_needs_a_way_out() {
        let c = Config {
            default_route: true,
            ..Config::default()
        };
        let e = c.validate().unwrap_err();
        assert!(
            e.contains("--netns") && e.contains("--outbound-mark"),
            "{e}"
        );
        let mut c = Config {
            default_route: true,
            netns: Some(crate::netns::NetnsTarget::Name("sbx".into())),
            ..Config::default()
        };
        c.validate().unwrap();
        c.no_configure = true;
        assert!(c.validate().unwrap_err().contains("--no-configure"));
        let mut c = Config {
            default_route: true,
            ..Config::default()
        };
        c.outbound.mark = Some(51820);
        c.validate().unwrap();
        c.outbound.mark = Some(254);
        assert!(c.validate().unwrap_err().contains("--outbound-mark"));
    }
}
