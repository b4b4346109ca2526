//! The TUN device: created (or attached to) through tun-rs, configured
//! in-process, read and written with plain non-blocking `read`/`write` on
//! its fd.
//!
//! Who does what, so that no `unsafe` is left here: tun-rs opens the device
//! and reads, writes and sets its MTU, transmit queue length and up state
//! (the SIOCxIF* ioctls); addresses are added and removed, and the link
//! state read, over rtnetlink with messages built and parsed by
//! `netlink-packet-route` on a `netlink-sys` socket; `nix` lists the
//! host's addresses (getifaddrs(3)), resolves interface names and sets the
//! socket's receive timeout. By hand is only the synchronous exchange
//! (`rtnetlink`, `wait_answer`, `read_answer`: send one request, wait a bounded time for its ACK): the
//! netlink crates give messages and sockets, and the one crate with a
//! request/answer API (`rtnetlink`) needs an async runtime.
//!
//! What tcpd changed it undoes on drop (and before a forced exit, see
//! [`Device::restore_host`]): a device it created disappears when its fd
//! closes (it is not persistent); on a persistent device it configured, it
//! removes the addresses it added, takes the link down if it brought it up,
//! and puts back the MTU and transmit queue length it changed. Addresses and
//! state that were there before stay as they were. Addresses are added and
//! removed one by one over rtnetlink (`RTM_NEWADDR`/`RTM_DELADDR`, what
//! `ip addr add/del` does), never by replacing the interface's primary
//! address.

use crate::config::{Config, IpNet};
use crate::device::Device;
use crate::error::Error;
use crate::netns::Namespace;
use crate::offload;
use crate::outbound;
use netlink_packet_core::{
    DecodeError, ErrorBuffer, NetlinkBuffer, NetlinkHeader, NetlinkMessage, NetlinkPayload,
    NLMSG_ALIGNTO, NLMSG_DONE, NLMSG_ERROR, NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage, AddressScope};
use netlink_packet_route::link::{LinkFlags, LinkHeader, LinkMessage};
use netlink_packet_route::route::RouteMessage;
use netlink_packet_route::rule::RuleMessage;
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};
use nix::sys::socket::{setsockopt, sockopt};
use nix::sys::time::TimeVal;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};

/// A configured TUN device (IFF_TUN | IFF_NO_PI, non-blocking).
pub struct TunDevice {
    dev: tun_rs::SyncDevice,
    fd: RawFd,
    /// Opened with IFF_VNET_HDR: every read and write starts with a
    /// `virtio_net_hdr` (segmentation and checksum offload).
    vnet: bool,
    name: String,
    /// The device existed before tcpd opened it (persistent): what tcpd
    /// changed on it must be undone, the kernel will not.
    existed: bool,
    /// IPv4 address and prefix tcpd added (not there before).
    added_v4: Option<(Ipv4Addr, u8)>,
    /// IPv6 address and prefix tcpd added (not there before).
    added_v6: Option<(Ipv6Addr, u8)>,
    /// tcpd brought the link up (it was down).
    brought_up: bool,
    /// The MTU before tcpd changed it.
    old_mtu: Option<u16>,
    /// The transmit queue length before tcpd raised it.
    old_txqueuelen: Option<u32>,
    mtu: usize,
    rx_packets: u64,
    tx_packets: u64,
    rx_bytes: u64,
    tx_bytes: u64,
    rx_gso: u64,
    tx_gso: u64,
    /// The virtio-net header of the last packet read (for the pcap tap).
    last_rx: offload::VnetHdr,
    /// The second queue that only pure SYNs reach (see [`crate::steer`]).
    syn_q: Option<SynQueue>,
    /// Routes and policy rules tcpd added (`--default-route`), as the
    /// requests that delete them, in the order added: undone last to first.
    undo_routes: Vec<RouteNetlinkMessage>,
    /// The namespace the device lives in (`--netns`), if not tcpd's own:
    /// every later change to it runs there. Declared last so that it is
    /// dropped (and a name tcpd created removed) after the device.
    ns: Option<Namespace>,
}

/// Packets read from the SYN queue before the main queue is looked at again:
/// a packet of an existing connection waits at most this many SYN reads
/// (~1.5 µs each), and a drained main queue costs one empty read per slice.
const SYN_SLICE: u32 = 16;

/// Largest SYN-ACK the SYN-ACK writer takes: IPv6 (40) + TCP with the most
/// options (60), rounded up.
const SYNACK_MAX: usize = 112;

/// SYN-ACKs the reactor may hand the SYN-ACK writer before it writes them
/// itself again.
const SYNACK_QUEUE: usize = 1024;

/// SYN-ACKs waiting for the writer above which the reactor writes them
/// itself: a SYN-ACK waits for at most this many writes (~40 µs) when the
/// writer gets less CPU than the reactor.
const SYNACK_BACKLOG: usize = 64;

/// One SYN-ACK for the SYN-ACK writer: its virtio-net header and bytes.
struct SynAck {
    hdr: offload::VnetHdr,
    len: u8,
    data: [u8; SYNACK_MAX],
}

/// Queue 1 of a multi-queue TUN device, where the steering program sends
/// pure SYNs; and, under a flood, a thread that writes the SYN-ACKs.
struct SynQueue {
    /// To the SYN-ACK writer (with offload only); taken on drop, which ends it.
    synack_tx: Option<crossbeam_channel::Sender<SynAck>>,
    synack_thread: Option<std::thread::JoinHandle<()>>,
    /// Writes the SYN-ACK writer could not make (the kernel refused them).
    synack_errors: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// SYN-ACKs handed to the writer.
    synack_handed: u64,
    dev: tun_rs::SyncDevice,
    fd: RawFd,
    /// Keeps the steering program loaded (the device holds it too).
    _prog: std::os::fd::OwnedFd,
    /// SYN-queue reads left in the current slice; 0: look at queue 0 first.
    left: u32,
    /// A whole slice was read without the SYN queue running dry (a flood):
    /// SYN-ACKs go to the writer until it does.
    pressure: bool,
    packets: u64,
}

impl SynQueue {
    /// Opens queue 1 of `main`'s device and steers pure SYNs to it; with
    /// `vnet`, starts the SYN-ACK writer on it.
    /// The writer runs at nice `nice` (the reactor's, `--reactor-nice`:
    /// it is the stack's work too).
    fn open(main: &tun_rs::SyncDevice, vnet: bool, nice: i32) -> io::Result<SynQueue> {
        let dev = main.try_clone()?;
        dev.set_nonblocking(true)?;
        let prog = crate::steer::load()?;
        let fd = dev.as_raw_fd();
        crate::steer::attach(fd, std::os::fd::AsRawFd::as_raw_fd(&prog))?;
        let synack_errors = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (synack_tx, synack_thread) = if vnet {
            let (tx, rx) = crossbeam_channel::bounded::<SynAck>(SYNACK_QUEUE);
            let errors = synack_errors.clone();
            // The thread writes on this queue's fd, which outlives it: the
            // drop below ends and joins it before `dev` closes.
            let h = std::thread::Builder::new()
                .name("tcpd-synack".into())
                .spawn(move || {
                    if nice != 0 {
                        // SAFETY: plain integer arguments; gettid names
                        // this thread. run() checked that the value can be
                        // had; a failure leaves the thread at its nice.
                        unsafe {
                            libc::setpriority(
                                libc::PRIO_PROCESS,
                                libc::gettid() as libc::id_t,
                                nice,
                            )
                        };
                    }
                    for s in rx.iter() {
                        let pkt = &s.data[..usize::from(s.len)];
                        if offload::write_with_hdr(fd, &s.hdr, pkt).is_err() {
                            errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                    }
                })?;
            (Some(tx), Some(h))
        } else {
            (None, None)
        };
        Ok(SynQueue {
            synack_tx,
            synack_thread,
            synack_errors,
            synack_handed: 0,
            dev,
            fd,
            _prog: prog,
            left: 0,
            pressure: false,
            packets: 0,
        })
    }

    /// Hands a SYN-ACK to the writer while a flood is on; false: write it
    /// yourself (no flood, not a SYN-ACK, or the writer is behind).
    fn hand_synack(&mut self, pkt: &[u8], t: &tcp::Transmit) -> bool {
        let Some(tx) = &self.synack_tx else {
            return false;
        };
        if !self.pressure
            || t.segment_size != 0
            || pkt.len() > SYNACK_MAX
            || tx.len() >= SYNACK_BACKLOG
            || !is_synack(pkt)
        {
            return false;
        }
        let mut s = SynAck {
            hdr: offload::VnetHdr::for_transmit(pkt, t),
            len: pkt.len() as u8,
            data: [0; SYNACK_MAX],
        };
        s.data[..pkt.len()].copy_from_slice(pkt);
        if tx.try_send(s).is_ok() {
            self.synack_handed += 1;
            true
        } else {
            false
        }
    }
}

impl Drop for SynQueue {
    fn drop(&mut self) {
        self.synack_tx = None;
        if let Some(h) = self.synack_thread.take() {
            let _ = h.join();
        }
    }
}

/// A TCP segment with SYN and ACK set and neither RST nor FIN, IPv4 or IPv6
/// (the first packet of a connection we answer: nothing of the same
/// connection can follow it before the peer's ACK, so another thread may
/// write it).
fn is_synack(pkt: &[u8]) -> bool {
    let flags = match pkt.first().map(|b| b >> 4) {
        Some(4) => {
            let ihl = usize::from(pkt[0] & 15) * 4;
            if pkt.get(9) != Some(&6) {
                return false;
            }
            pkt.get(ihl + 13)
        }
        Some(6) => {
            if pkt.get(6) != Some(&6) {
                return false;
            }
            pkt.get(53)
        }
        _ => None,
    };
    flags.is_some_and(|f| f & 0x17 == 0x12)
}

fn io_msg(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(code) => {
            // strerror without the " (os error N)" suffix std adds.
            let s = io::Error::from_raw_os_error(code).to_string();
            match s.find(" (os error") {
                Some(i) => s[..i].to_string(),
                None => s,
            }
        }
        None => e.to_string(),
    }
}

/// The interface index of `name`, if it exists (if_nametoindex(3)).
pub fn if_index(name: &str) -> Option<u32> {
    nix::net::if_::if_nametoindex(name).ok()
}

/// The prefix length of a contiguous netmask (leading one bits).
fn mask_prefix(mask: &[u8]) -> u8 {
    let mut n = 0u8;
    for b in mask {
        n += b.leading_ones() as u8;
        if *b != 0xff {
            break;
        }
    }
    n
}

/// Every (interface, address/prefix) pair on the host, from getifaddrs(3).
/// IPv4 addresses carry their label as the name, as getifaddrs gives it.
pub fn host_addresses() -> io::Result<Vec<(String, IpNet)>> {
    let mut out = Vec::new();
    for ifa in nix::ifaddrs::getifaddrs()? {
        let Some(addr) = ifa.address else { continue };
        let mask = ifa.netmask.as_ref();
        let net = if let Some(sin) = addr.as_sockaddr_in() {
            let prefix = mask
                .and_then(|m| m.as_sockaddr_in())
                .map_or(32, |m| mask_prefix(&m.ip().octets()));
            IpNet {
                addr: IpAddr::V4(sin.ip()),
                prefix,
            }
        } else if let Some(sin6) = addr.as_sockaddr_in6() {
            let prefix = mask
                .and_then(|m| m.as_sockaddr_in6())
                .map_or(128, |m| mask_prefix(&m.ip().octets()));
            IpNet {
                addr: IpAddr::V6(sin6.ip()),
                prefix,
            }
        } else {
            continue;
        };
        out.push((ifa.interface_name, net));
    }
    Ok(out)
}

/// What [`TunDevice::configure`] does about the MTU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum MtuPlan {
    /// It is right already.
    Keep,
    /// Set it; on exit put back `restore` (on a persistent device).
    Set {
        /// The MTU to put back, if any.
        restore: Option<u16>,
    },
    /// A persistent device whose MTU cannot be read: leave it, since it
    /// could not be put back.
    Unknown,
}

/// The plan for a device that `existed` before tcpd (persistent), whose
/// MTU reads as `current` (`None`: cannot be read), when tcpd wants `want`.
/// A device tcpd created goes away on exit, so its old MTU does not matter.
fn mtu_plan(existed: bool, current: Option<u16>, want: u16) -> MtuPlan {
    match current {
        Some(m) if m == want => MtuPlan::Keep,
        Some(m) => MtuPlan::Set {
            restore: existed.then_some(m),
        },
        None if existed => MtuPlan::Unknown,
        None => MtuPlan::Set { restore: None },
    }
}

/// What [`netlink_addr`] does.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum AddrOp {
    /// `RTM_NEWADDR` with `NLM_F_EXCL`: `EEXIST` if the address is there.
    Add,
    /// `RTM_DELADDR`: `EADDRNOTAVAIL` if it is not.
    Del,
}

/// The rtnetlink request that adds or deletes `addr/prefix` on the
/// interface with index `ifindex`, and its netlink flags: an ifaddrmsg with
/// IFA_LOCAL and IFA_ADDRESS (both the address, as `ip addr add` sends for
/// a host without a peer), per rtnetlink(7). An add never replaces
/// (`NLM_F_EXCL`): an address already there is the user's, not ours.
fn addr_request(op: AddrOp, ifindex: u32, addr: IpAddr, prefix: u8) -> (RouteNetlinkMessage, u16) {
    let mut msg = AddressMessage::default();
    msg.header.family = match addr {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    };
    msg.header.prefix_len = prefix;
    msg.header.scope = AddressScope::Universe;
    msg.header.index = ifindex;
    msg.attributes = vec![
        AddressAttribute::Local(addr),
        AddressAttribute::Address(addr),
    ];
    match op {
        AddrOp::Add => (
            RouteNetlinkMessage::NewAddress(msg),
            NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
        ),
        AddrOp::Del => (
            RouteNetlinkMessage::DelAddress(msg),
            NLM_F_REQUEST | NLM_F_ACK,
        ),
    }
}

/// How long an rtnetlink request waits for the kernel's answer.
const NETLINK_WAIT: Duration = Duration::from_secs(2);

/// The most an answer to our requests takes: an `RTM_NEWLINK` with all its
/// attributes is a few KiB (rtnl_link_get_size); a longer one is refused,
/// not cut.
const NETLINK_ANSWER_MAX: usize = 32 * 1024;

/// The messages of one answer the kernel sent to the request numbered
/// `seq`: (message type, payload) for each, in order.
type Answers = Vec<(u16, Vec<u8>)>;

/// By hand (netlink-packet-core parses one message; walking a datagram's
/// messages to find the answer to our request is the caller's job).
/// Reads the netlink messages of one datagram `buf`, appending those that
/// answer the request numbered `seq` to `got`. `Ok(true)`: the answer is
/// complete (the ACK, `NLMSG_ERROR` with code 0, or `NLMSG_DONE`); an
/// `NLMSG_ERROR` with an errno is that errno as an error, and a malformed
/// message an `InvalidData` error (never a reason to wait for more).
fn read_answer(buf: &[u8], seq: u32, got: &mut Answers) -> io::Result<bool> {
    let bad = |e: DecodeError| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("the kernel's rtnetlink answer cannot be read ({e})"),
        )
    };
    let mut off = 0;
    while off < buf.len() {
        let msg = NetlinkBuffer::new_checked(&buf[off..]).map_err(bad)?;
        let len = msg.length() as usize;
        if msg.sequence_number() == seq {
            match msg.message_type() {
                NLMSG_ERROR => {
                    let err = ErrorBuffer::new_checked(msg.payload()).map_err(bad)?;
                    return match err.code() {
                        None => Ok(true),
                        // The kernel sends -errno (netlink(7)).
                        Some(code) => Err(io::Error::from_raw_os_error(code.get().wrapping_neg())),
                    };
                }
                NLMSG_DONE => return Ok(true),
                kind => got.push((kind, msg.payload().to_vec())),
            }
        }
        off += len.next_multiple_of(usize::from(NLMSG_ALIGNTO));
    }
    Ok(false)
}

/// Waits (at most `wait`) for the whole answer to the request numbered
/// `seq` on `sock`.
fn wait_answer(sock: &Socket, seq: u32, wait: Duration) -> io::Result<Answers> {
    // Without the timeout a lost answer would block the recv below forever.
    let tv = TimeVal::new(
        wait.as_secs().try_into().unwrap_or(libc::time_t::MAX),
        wait.subsec_micros().into(),
    );
    setsockopt(sock, sockopt::ReceiveTimeout, &tv)?;
    let timed_out = || {
        io::Error::new(
            io::ErrorKind::TimedOut,
            format!(
                "no answer from the kernel (rtnetlink) in {} ms",
                wait.as_millis()
            ),
        )
    };
    let until = Instant::now() + wait;
    let mut buf = vec![0u8; NETLINK_ANSWER_MAX];
    let mut got = Vec::new();
    loop {
        if Instant::now() >= until {
            return Err(timed_out());
        }
        // MSG_TRUNC: the datagram's real length, so that a cut one is seen.
        let n = match sock.recv(&mut &mut buf[..], libc::MSG_TRUNC) {
            Ok(n) => n,
            Err(e) => match e.kind() {
                io::ErrorKind::Interrupted => continue,
                io::ErrorKind::WouldBlock => return Err(timed_out()),
                _ => return Err(e),
            },
        };
        if n > buf.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("the kernel's rtnetlink answer is too long ({n} bytes)"),
            ));
        }
        if read_answer(&buf[..n], seq, &mut got)? {
            return Ok(got);
        }
    }
}

/// Sends one rtnetlink request (`flags` with `NLM_F_ACK`, so that the
/// kernel says when it is done) and waits at most [`NETLINK_WAIT`] for the
/// answer.
fn rtnetlink(request: RouteNetlinkMessage, flags: u16) -> io::Result<Answers> {
    let sock = Socket::new(NETLINK_ROUTE)?;
    // Port 0: the kernel.
    sock.connect(&SocketAddr::new(0, 0))?;
    let seq = 1;
    let mut msg = NetlinkMessage::new(NetlinkHeader::default(), NetlinkPayload::from(request));
    msg.header.flags = flags;
    msg.header.sequence_number = seq;
    msg.finalize();
    let mut bytes = vec![0u8; msg.buffer_len()];
    msg.serialize(&mut bytes);
    sock.send(&bytes, 0)?;
    wait_answer(&sock, seq, NETLINK_WAIT)
}

/// Adds or deletes one address of one interface over rtnetlink (what
/// `ip addr add/del` does).
fn netlink_addr(op: AddrOp, ifindex: u32, addr: IpAddr, prefix: u8) -> io::Result<()> {
    let (request, flags) = addr_request(op, ifindex, addr, prefix);
    rtnetlink(request, flags).map(drop)
}

/// Whether the link with index `ifindex` is administratively up
/// (`IFF_UP` in the `RTM_NEWLINK` the kernel answers `RTM_GETLINK` with).
fn link_is_up(ifindex: u32) -> io::Result<bool> {
    let mut msg = LinkMessage::default();
    msg.header.index = ifindex;
    let answers = rtnetlink(RouteNetlinkMessage::GetLink(msg), NLM_F_REQUEST | NLM_F_ACK)?;
    let (_, link) = answers
        .iter()
        .find(|(kind, _)| *kind == libc::RTM_NEWLINK)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "the kernel sent no link"))?;
    // Only the header: its flags are all we need, whatever attributes follow.
    let header = LinkHeader::parse(link)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
    Ok(header.flags.contains(LinkFlags::Up))
}

/// The queue state of an existing TUN device, from the `IFLA_TUN_*`
/// attributes Linux `tun_fill_info` puts in `RTM_NEWLINK`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct TunQueues {
    /// Made with `IFF_MULTI_QUEUE`: only a multi-queue open may attach.
    multi_queue: bool,
    /// Queues attached now (`IFLA_TUN_NUM_QUEUES`): a process has it open.
    attached: u32,
}

/// [`TunQueues`] of the link with index `ifindex`; `None` when it is not a
/// TUN/TAP device or the kernel does not report its queues.
fn tun_queues(ifindex: u32) -> io::Result<Option<TunQueues>> {
    use netlink_packet_core::{Nla, Parseable};
    use netlink_packet_route::link::{InfoData, LinkAttribute, LinkInfo};
    // linux/if_link.h
    const IFLA_TUN_MULTI_QUEUE: u16 = 7;
    const IFLA_TUN_NUM_QUEUES: u16 = 8;
    let mut msg = LinkMessage::default();
    msg.header.index = ifindex;
    let answers = rtnetlink(RouteNetlinkMessage::GetLink(msg), NLM_F_REQUEST | NLM_F_ACK)?;
    let Some((_, link)) = answers.iter().find(|(kind, _)| *kind == libc::RTM_NEWLINK) else {
        return Ok(None);
    };
    let link = LinkMessage::parse(link.as_slice())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
    let mut multi_queue = None;
    let mut attached = None;
    for attr in &link.attributes {
        let LinkAttribute::LinkInfo(infos) = attr else {
            continue;
        };
        for info in infos {
            let LinkInfo::Data(InfoData::Tun(nlas)) = info else {
                continue;
            };
            // Each `InfoTun` is a raw attribute (kind, value): read as such.
            for nla in nlas {
                let mut v = [0u8; 4];
                let n = nla.value_len().min(4);
                nla.emit_value(&mut v[..n]);
                match nla.kind() {
                    IFLA_TUN_MULTI_QUEUE => multi_queue = Some(v[0] != 0),
                    IFLA_TUN_NUM_QUEUES if n == 4 => attached = Some(u32::from_ne_bytes(v)),
                    _ => {}
                }
            }
        }
    }
    Ok(match (multi_queue, attached) {
        (Some(multi_queue), Some(attached)) => Some(TunQueues {
            multi_queue,
            attached,
        }),
        _ => None,
    })
}

/// Brings the link `name` up over rtnetlink (`RTM_NEWLINK` with `IFF_UP`
/// in both flags and change mask, as `ip link set NAME up`).
fn set_link_up(name: &str) -> io::Result<()> {
    let index = if_index(name).ok_or_else(|| io::Error::from_raw_os_error(libc::ENODEV))?;
    let mut msg = LinkMessage::default();
    msg.header.index = index;
    msg.header.flags = LinkFlags::Up;
    msg.header.change_mask = LinkFlags::Up;
    rtnetlink(RouteNetlinkMessage::SetLink(msg), NLM_F_REQUEST | NLM_F_ACK).map(drop)
}

impl TunDevice {
    /// Opens (and unless `--no-configure`, configures) the TUN device.
    /// Every failure a user can cause comes back as one line saying how to fix it.
    ///
    /// Before it creates or configures the device it checks the host's
    /// addresses for conflicts; a clash of only the default IPv6 addresses
    /// turns IPv6 off in `cfg` (see [`Config::ipv6_explicit`]).
    ///
    /// With `--netns` all of it happens on a thread that entered that
    /// namespace (see [`crate::netns`]): the device, its addresses and
    /// routes are there, the conflict check looks at the sandbox's
    /// addresses, and tcpd's own threads never move.
    pub fn open(cfg: &mut Config) -> Result<TunDevice, Error> {
        let Some(target) = cfg.netns.clone() else {
            return TunDevice::open_here(cfg, false);
        };
        let ns = Namespace::open(&target)?;
        let fresh = ns.created();
        let mut t = ns
            .run(|| TunDevice::open_here(cfg, fresh))
            .map_err(|e| Error::new(format!("--netns {target}: {e}")))??;
        t.ns = Some(ns);
        Ok(t)
    }

    /// [`TunDevice::open`] in the namespace the calling thread is in;
    /// `fresh`: tcpd just created that namespace (its loopback comes up).
    fn open_here(cfg: &mut Config, fresh: bool) -> Result<TunDevice, Error> {
        let name = cfg.iface.clone();
        let name = name.as_str();
        let index = if_index(name);
        let existed = index.is_some();
        if cfg.no_configure && !existed {
            return Err(Error::new(format!(
                "interface {name} does not exist; create it once with \
                 `sudo ip tuntap add {name} mode tun user $USER` or run without --no-configure (as root)"
            )));
        }
        if !cfg.no_configure {
            check_conflicts(cfg)?;
        }
        // A device that exists keeps the queue mode it was made with, and
        // Linux `tun_set_iff` refuses an open in the other mode (EINVAL).
        // A multi-queue one also takes a second process's queue without
        // EBUSY, so whether someone holds it must be asked first.
        let existing = index.and_then(|i| tun_queues(i).unwrap_or(None));
        if existing.is_some_and(|q| q.multi_queue && q.attached > 0) {
            return Err(busy_error(name));
        }
        let attach_mq = existing.is_some_and(|q| q.multi_queue);
        // A SYN queue needs a multi-queue device: only on one tcpd creates.
        let mq = cfg.syn_queue && !existed && !cfg.no_configure;
        let build = |offload: bool| {
            tun_rs::DeviceBuilder::new()
                .name(name)
                .inherit_enable_state()
                .offload(offload)
                .multi_queue(mq || attach_mq)
                .build_sync()
        };
        let mut vnet = cfg.effective_offload();
        let dev = match build(vnet) {
            Ok(dev) => dev,
            // The owner of a persistent device may attach with IFF_VNET_HDR
            // and set TUNSETOFFLOAD (Linux `tun_set_iff` only checks
            // ownership, `set_offload` nothing more), but an older kernel or
            // a device someone else holds may refuse either: then tcpd runs
            // without offload (one line says why) rather than not at all.
            // An error that is not about offload comes back from the retry.
            Err(e) if vnet => {
                let dev = build(false).map_err(|e| open_error(name, &e))?;
                warn!(
                    "{name}: cannot attach with segmentation/checksum offload (IFF_VNET_HDR, \
                     TUNSETOFFLOAD: {}); running without it, at lower throughput",
                    io_msg(&e)
                );
                vnet = false;
                cfg.offload = false;
                dev
            }
            Err(e) => return Err(open_error(name, &e)),
        };
        dev.set_nonblocking(true)
            .map_err(|e| Error::new(format!("{name}: cannot make non-blocking: {}", io_msg(&e))))?;
        let fd = dev.as_raw_fd();
        let syn_q = if mq {
            match SynQueue::open(&dev, vnet && cfg.synack_thread, cfg.reactor_nice) {
                Ok(q) => Some(q),
                Err(e) => {
                    // The clone (queue 1), if made, closes here: one queue.
                    warn!(
                        "{name}: no SYN queue ({}): a SYN flood delays every packet",
                        io_msg(&e)
                    );
                    None
                }
            }
        } else {
            None
        };
        let mut t = TunDevice {
            dev,
            fd,
            syn_q,
            vnet,
            name: name.to_string(),
            existed,
            added_v4: None,
            added_v6: None,
            brought_up: false,
            old_mtu: None,
            old_txqueuelen: None,
            mtu: cfg.mtu,
            rx_packets: 0,
            tx_packets: 0,
            rx_bytes: 0,
            tx_bytes: 0,
            rx_gso: 0,
            tx_gso: 0,
            last_rx: offload::VnetHdr::default(),
            undo_routes: Vec::new(),
            ns: None,
        };
        if fresh {
            // A new namespace has only a loopback device, down.
            if let Err(e) = set_link_up("lo") {
                warn!("cannot bring up lo in the new namespace: {}", io_msg(&e));
            }
        }
        if cfg.no_configure {
            match t.dev.mtu() {
                Ok(m) => t.mtu = usize::from(m),
                Err(e) => warn!(
                    "{name}: cannot read MTU ({}); assuming {}",
                    io_msg(&e),
                    cfg.mtu
                ),
            }
            info!(
                iface = name,
                mtu = t.mtu,
                offload = t.vnet,
                "attached to existing interface without configuring it"
            );
            return Ok(t);
        }
        t.configure(cfg)?;
        if cfg.default_route {
            // On failure `t` drops: what it added so far goes again.
            t.add_default_routes(cfg)?;
        }
        Ok(t)
    }

    /// Adds one route or rule (`RTM_NEWROUTE`/`RTM_NEWRULE` with
    /// `NLM_F_EXCL`), remembering `undo` to delete it at exit.
    fn add_routing(
        &mut self,
        add: RouteNetlinkMessage,
        undo: RouteNetlinkMessage,
    ) -> io::Result<()> {
        rtnetlink(add, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL)?;
        self.undo_routes.push(undo);
        Ok(())
    }

    /// `--default-route`: with `--netns`, default routes via the device in
    /// the namespace's main table; without, in table `--outbound-mark`
    /// with the policy rules of [`crate::outbound`].
    fn add_default_routes(&mut self, cfg: &Config) -> Result<(), Error> {
        let name = self.name.clone();
        let index = if_index(&name)
            .ok_or_else(|| Error::new(format!("{name}: the interface disappeared")))?;
        let families: &[bool] = if cfg.addr6.is_some() {
            &[false, true]
        } else {
            &[false]
        };
        let (table, mark) = match (&cfg.netns, cfg.outbound.mark) {
            (Some(_), _) => (
                u32::from(netlink_packet_route::route::RouteHeader::RT_TABLE_MAIN),
                None,
            ),
            (None, Some(m)) => (m, Some(m)),
            (None, None) => {
                return Err(Error::new(
                    "--default-route in tcpd's own namespace needs --outbound-mark",
                ))
            }
        };
        for &v6 in families {
            let fam = if v6 { "IPv6" } else { "IPv4" };
            let r: RouteMessage = outbound::default_route(v6, index, table);
            match self.add_routing(
                RouteNetlinkMessage::NewRoute(r.clone()),
                RouteNetlinkMessage::DelRoute(r),
            ) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                    return Err(Error::new(format!(
                        "{name}: cannot add the {fam} default route: {}",
                        if mark.is_some() {
                            format!(
                                "routing table {table} has one already (another tcpd with \
                                 --outbound-mark {table}?); choose another mark"
                            )
                        } else {
                            "the namespace has one already; remove it (`ip route del default`) \
                             or run without --default-route"
                                .to_string()
                        }
                    )));
                }
                Err(e) => {
                    return Err(config_error(
                        &name,
                        &format!("add the {fam} default route"),
                        &e,
                    ))
                }
            }
            let Some(mark) = mark else { continue };
            let [main, tun]: [RuleMessage; 2] = outbound::policy_rules(v6, mark);
            match self.add_routing(
                RouteNetlinkMessage::NewRule(main.clone()),
                RouteNetlinkMessage::DelRule(main),
            ) {
                Ok(()) => {}
                // The same rule is there (wg-quick adds it too): it does
                // what ours would, and it is not ours to remove.
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                    debug!("{fam} rule `lookup main suppress_prefixlength 0` already there");
                }
                Err(e) => {
                    return Err(config_error(
                        &name,
                        &format!("add the {fam} policy rule for table main"),
                        &e,
                    ))
                }
            }
            match self.add_routing(
                RouteNetlinkMessage::NewRule(tun.clone()),
                RouteNetlinkMessage::DelRule(tun),
            ) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                    return Err(Error::new(format!(
                        "{name}: the {fam} rule `not fwmark {mark} lookup {mark}` exists already \
                         (another tcpd with --outbound-mark {mark}?); choose another mark"
                    )));
                }
                Err(e) => {
                    return Err(config_error(
                        &name,
                        &format!("add the {fam} policy rule for table {mark}"),
                        &e,
                    ))
                }
            }
        }
        if mark.is_none() && !self.existed {
            // Routes via a device tcpd created go with it.
            self.undo_routes.clear();
        }
        info!(
            iface = %name,
            table,
            "default routes via {name}{}",
            match mark {
                Some(m) => format!(" in table {m}; unmarked traffic uses it (rules {} and {}), tcpd's sockets (mark {m}) do not", outbound::RULE_PRIO_MAIN, outbound::RULE_PRIO_TUN),
                None => String::new(),
            }
        );
        Ok(())
    }

    /// Sets MTU, transmit queue, addresses and link state, recording only
    /// what it changes (on a persistent device that is what
    /// [`Device::restore_host`] undoes).
    fn configure(&mut self, cfg: &Config) -> Result<(), Error> {
        let name = self.name.clone();
        let fail = |what: &str, e: io::Error| config_error(&name, what, &e);
        let mtu = u16::try_from(cfg.mtu)
            .map_err(|_| Error::new(format!("--mtu {} too large", cfg.mtu)))?;
        let current = self.dev.mtu();
        if let Err(e) = &current {
            debug!(iface = %name, "cannot read the MTU: {}", io_msg(e));
        }
        match mtu_plan(self.existed, current.as_ref().ok().copied(), mtu) {
            MtuPlan::Keep => {}
            MtuPlan::Set { restore } => {
                self.dev
                    .set_mtu(mtu)
                    .map_err(|e| fail(&format!("set MTU {mtu}"), e))?;
                self.old_mtu = restore;
            }
            MtuPlan::Unknown => warn!(
                "{name}: cannot read the MTU of this persistent interface ({}); leaving it as \
                 it is, since tcpd could not put it back on exit, and assuming {mtu}",
                current.err().map(|e| io_msg(&e)).unwrap_or_default()
            ),
        }
        // The kernel's default of 500 drops bursts silently: raise it, never
        // lower a longer queue someone set. A persistent device whose queue
        // length cannot be read is left alone: it could not be put back.
        let old_qlen = self.dev.tx_queue_len();
        match old_qlen {
            Ok(q) if q >= cfg.txqueuelen => {}
            Err(e) if self.existed => warn!(
                "{name}: cannot read txqueuelen ({}); leaving it as it is, since tcpd could not \
                 put it back on exit",
                io_msg(&e)
            ),
            old => match self.dev.set_tx_queue_len(cfg.txqueuelen) {
                Ok(()) => self.old_txqueuelen = old.ok(),
                Err(e) => warn!(
                    "{name}: cannot set txqueuelen {}: {}",
                    cfg.txqueuelen,
                    io_msg(&e)
                ),
            },
        }
        let IpAddr::V4(h4) = cfg.host_addr.addr else {
            return Err(Error::new(format!(
                "--host-addr {} is not IPv4",
                cfg.host_addr
            )));
        };
        let index = if_index(&name)
            .ok_or_else(|| Error::new(format!("{name}: the interface disappeared")))?;
        match netlink_addr(AddrOp::Add, index, cfg.host_addr.addr, cfg.host_addr.prefix) {
            Ok(()) => self.added_v4 = Some((h4, cfg.host_addr.prefix)),
            // IPv4 answers EEXIST only for the same address with the same
            // prefix (as Linux, __inet_insert_ifa compares the masks); with
            // another prefix the add succeeds, as a second address.
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                debug!(iface = %name, "{} was already assigned; left as it is", cfg.host_addr);
            }
            Err(e) => return Err(fail(&format!("assign {}", cfg.host_addr), e)),
        }
        let was_up = match link_is_up(index) {
            Ok(up) => up,
            Err(e) => {
                debug!(iface = %name, "cannot read the link state ({}); assuming down", io_msg(&e));
                false
            }
        };
        if !was_up {
            self.dev
                .enabled(true)
                .map_err(|e| fail("bring the interface up", e))?;
            self.brought_up = true;
        }
        if cfg.addr6.is_some() {
            if let IpAddr::V6(h6) = cfg.host_addr6.addr {
                match netlink_addr(
                    AddrOp::Add,
                    index,
                    cfg.host_addr6.addr,
                    cfg.host_addr6.prefix,
                ) {
                    Ok(()) => self.added_v6 = Some((h6, cfg.host_addr6.prefix)),
                    Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                        // As Linux (ipv6_add_addr: one address per interface,
                        // whatever its prefix length), EEXIST does not mean
                        // the same prefix: check which one is there.
                        let had = host_addresses().unwrap_or_default();
                        match other_prefix(&name, cfg, &had) {
                            Some(msg) => warn!("{msg}"),
                            None => debug!(
                                iface = %name,
                                "{} was already assigned; left as it is",
                                cfg.host_addr6
                            ),
                        }
                    }
                    Err(e) => warn!(
                        "{name}: cannot assign {} ({}); IPv6 will not be reachable from the host",
                        cfg.host_addr6,
                        io_msg(&e)
                    ),
                }
            }
        }
        debug!(iface = %name, mtu, txqueuelen = cfg.txqueuelen, "interface configured");
        Ok(())
    }

    /// Undoes what tcpd changed, in the device's namespace: its routes and
    /// policy rules, then what [`TunDevice::configure`] changed on a
    /// persistent device (a device tcpd created goes away with its fd).
    /// Each step once.
    fn undo(&mut self) {
        if self.undo_routes.is_empty() && !self.existed {
            return;
        }
        match self.ns.take() {
            None => self.undo_here(),
            Some(ns) => {
                if let Err(e) = ns.run(|| self.undo_here()) {
                    warn!(
                        "{}: cannot enter namespace {} to undo tcpd's changes: {}",
                        self.name,
                        ns.target(),
                        io_msg(&e)
                    );
                }
                self.ns = Some(ns);
            }
        }
    }

    /// [`TunDevice::undo`] in the namespace the calling thread is in.
    fn undo_here(&mut self) {
        while let Some(msg) = self.undo_routes.pop() {
            if let Err(e) = rtnetlink(msg, NLM_F_REQUEST | NLM_F_ACK) {
                warn!(
                    "{}: cannot remove a route or rule tcpd added: {}",
                    self.name,
                    io_msg(&e)
                );
            }
        }
        if !self.existed {
            return;
        }
        let index = if_index(&self.name);
        if let (Some((a6, p)), Some(i)) = (self.added_v6.take(), index) {
            if let Err(e) = netlink_addr(AddrOp::Del, i, IpAddr::V6(a6), p) {
                warn!("{}: cannot remove {a6}/{p}: {}", self.name, io_msg(&e));
            }
        }
        if let (Some((a4, p)), Some(i)) = (self.added_v4.take(), index) {
            if let Err(e) = netlink_addr(AddrOp::Del, i, IpAddr::V4(a4), p) {
                warn!("{}: cannot remove {a4}/{p}: {}", self.name, io_msg(&e));
            }
        }
        if std::mem::take(&mut self.brought_up) {
            if let Err(e) = self.dev.enabled(false) {
                warn!("{}: cannot take the link down: {}", self.name, io_msg(&e));
            }
        }
        if let Some(m) = self.old_mtu.take() {
            if let Err(e) = self.dev.set_mtu(m) {
                warn!("{}: cannot restore MTU {m}: {}", self.name, io_msg(&e));
            }
        }
        if let Some(q) = self.old_txqueuelen.take() {
            if let Err(e) = self.dev.set_tx_queue_len(q) {
                warn!(
                    "{}: cannot restore txqueuelen {q}: {}",
                    self.name,
                    io_msg(&e)
                );
            }
        }
    }

    /// The interface name.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// The MTU in force (the interface's own with `--no-configure`).
    pub fn mtu(&self) -> usize {
        self.mtu
    }
}

/// When `cfg.host_addr6`'s address is already on `iface` (in `addrs`) with
/// another prefix length: the warning to give. tcpd leaves the user's
/// address as it is, so the route it would have had (the prefix's
/// network to `iface`) is missing or different.
fn other_prefix(iface: &str, cfg: &Config, addrs: &[(String, IpNet)]) -> Option<String> {
    let want = cfg.host_addr6;
    let (_, had) = addrs
        .iter()
        .find(|(i, n)| i == iface && n.addr == want.addr)?;
    if had.prefix == want.prefix {
        return None;
    }
    let stack = cfg.addr6.map(IpAddr::V6)?;
    let effect = if had.contains(stack) {
        format!(
            "the kernel routes {} to {iface} instead of {}",
            network(*had),
            network(want)
        )
    } else {
        format!(
            "the kernel has no route for {} to {iface}, so {stack} (the stack) cannot be \
             reached over IPv6",
            network(want)
        )
    };
    Some(format!(
        "{iface}: {} is already assigned as {had}, not /{}; left as it is, and {effect} \
         (`ip addr del {had} dev {iface}` lets tcpd add {want})",
        want.addr, want.prefix
    ))
}

/// What the address check found wrong.
#[derive(Debug, PartialEq, Eq)]
enum Conflict {
    /// Refuse to start, with this line.
    Fatal(String),
    /// Only the default IPv6 addresses clash: run without IPv6, saying why.
    Ipv6(String),
}

/// Refuses host or stack addresses that another interface already holds,
/// and host subnets that overlap one on another interface: the kernel would
/// answer for them itself or route them elsewhere. IPv6 is optional: a
/// clash of the default IPv6 addresses only turns IPv6 off (`cfg.addr6`
/// becomes `None`) with a warning; one of addresses the user gave
/// (`--addr6`, `--host-addr6`, see [`Config::ipv6_explicit`]) is refused.
fn check_conflicts(cfg: &mut Config) -> Result<(), Error> {
    match host_addresses() {
        Ok(addrs) => match find_conflict(cfg, &addrs) {
            Some(Conflict::Fatal(msg)) => Err(Error::new(msg)),
            Some(Conflict::Ipv6(msg)) => {
                warn!(
                    "{msg}; running without IPv6 (IPv6 is optional: give --addr6 and \
                     --host-addr6 in a free subnet to have it, or --no-ipv6 to go without this warning)"
                );
                cfg.addr6 = None;
                Ok(())
            }
            None => Ok(()),
        },
        Err(e) => {
            warn!(
                "cannot list host addresses (getifaddrs: {}); skipping the address conflict check",
                io_msg(&e)
            );
            Ok(())
        }
    }
}

/// Whether two networks share addresses: the shorter prefix holds the
/// other's address.
fn overlaps(a: IpNet, b: IpNet) -> bool {
    IpNet {
        addr: a.addr,
        prefix: a.prefix.min(b.prefix),
    }
    .contains(b.addr)
}

/// The network of `n`: its address with the host bits cleared (`10.0.0.1/24`
/// -> `10.0.0.0/24`).
fn network(n: IpNet) -> IpNet {
    let addr = match n.addr {
        IpAddr::V4(a) => {
            let mask = u32::MAX
                .checked_shl(32 - u32::from(n.prefix.min(32)))
                .unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask))
        }
        IpAddr::V6(a) => {
            let mask = u128::MAX
                .checked_shl(128 - u32::from(n.prefix.min(128)))
                .unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask))
        }
    };
    IpNet {
        addr,
        prefix: n.prefix,
    }
}

/// The conflict of `cfg` with the host's addresses `addrs`: IPv4 first
/// (always fatal), then IPv6 (fatal only if [`Config::ipv6_explicit`]).
fn find_conflict(cfg: &Config, addrs: &[(String, IpNet)]) -> Option<Conflict> {
    if let Some(msg) = family_conflict(cfg, addrs, false) {
        return Some(Conflict::Fatal(msg));
    }
    if cfg.addr6.is_some() {
        if let Some(msg) = family_conflict(cfg, addrs, true) {
            return Some(if cfg.ipv6_explicit {
                Conflict::Fatal(msg)
            } else {
                Conflict::Ipv6(msg)
            });
        }
    }
    None
}

/// The first conflict of one address family (IPv6 if `v6`), as one line.
fn family_conflict(cfg: &Config, addrs: &[(String, IpNet)], v6: bool) -> Option<String> {
    let (host, stack, flag, addr_flag) = if v6 {
        (
            cfg.host_addr6,
            IpAddr::V6(cfg.addr6?),
            "--host-addr6",
            "--addr6",
        )
    } else {
        (cfg.host_addr, IpAddr::V4(cfg.addr), "--host-addr", "--addr")
    };
    let wanted = [(host.addr, flag), (stack, addr_flag)];
    let nets = [(host, stack, flag, addr_flag)];
    for (ifname, net) in addrs {
        for (w, flag) in &wanted {
            if net.addr == *w && ifname != &cfg.iface {
                return Some(format!(
                    "address {w} ({flag}) is already on interface {ifname}; \
                     choose another with {flag} or remove it from {ifname}"
                ));
            }
            if net.addr == *w && ifname == &cfg.iface && flag.starts_with("--addr") {
                return Some(format!(
                    "address {w} ({flag}) is assigned to {ifname} itself; the kernel would answer for it"
                ));
            }
        }
    }
    for (ifname, net) in addrs {
        if ifname == &cfg.iface || net.addr.is_ipv6() != v6 {
            continue;
        }
        // Link-local IPv6 (fe80::/10) is scoped to its own link: every
        // interface has one and they do not compete for routes.
        if let IpAddr::V6(a) = net.addr {
            if a.segments()[0] & 0xffc0 == 0xfe80 {
                continue;
            }
        }
        for (ours, stack, flag, addr_flag) in &nets {
            if !overlaps(*ours, *net) {
                continue;
            }
            let iface = &cfg.iface;
            let fix = format!(
                "choose another subnet ({flag} and {addr_flag}) or remove {net} from {ifname}"
            );
            // The kernel picks the route with the longest matching prefix
            // (as Linux's FIB lookup, fib_table_lookup / fib6_lookup): which
            // side loses depends on which prefix is longer.
            let why = if net.prefix < ours.prefix {
                format!(
                    "interface {ifname} has {net}, a wider subnet that holds {flag} {ours}: \
                     longest-prefix match still routes {} to {iface}, so tcpd would hide that \
                     part of {ifname}'s network (its hosts there become unreachable from this \
                     machine)",
                    network(*ours)
                )
            } else if net.prefix > ours.prefix {
                if net.contains(*stack) {
                    format!(
                        "interface {ifname} has {net}, a narrower subnet inside {flag} {ours} \
                         that holds {stack}: the kernel would route {stack} to {ifname} \
                         (the longer prefix) instead of {iface}"
                    )
                } else {
                    format!(
                        "interface {ifname} has {net}, a narrower subnet inside {flag} {ours}: \
                         the kernel routes {} to {ifname} (the longer prefix), not to {iface}",
                        network(*net)
                    )
                }
            } else {
                format!(
                    "interface {ifname} has {net}, in the same subnet as {flag} {ours}: the \
                     kernel could route {stack} to {ifname} instead of {iface}"
                )
            };
            return Some(format!("{why}; {fix}"));
        }
    }
    None
}

/// A change of the interface's configuration the kernel refused, as the
/// user's one line: `tun0: cannot assign 10.0.0.1/24: Operation not permitted`.
fn config_error(iface: &str, what: &str, e: &io::Error) -> Error {
    Error::new(format!("{iface}: cannot {what}: {}", io_msg(e)))
}

fn busy_error(name: &str) -> Error {
    Error::new(format!(
        "interface {name} is busy: another process has it open (another tcpd?); stop it or pick another name"
    ))
}

fn open_error(name: &str, e: &io::Error) -> Error {
    let fix = format!(
        "run tcpd as root, or create the interface once with `sudo ip tuntap add {name} mode tun user $USER` \
         and run `tcpd --no-configure {name}`"
    );
    match e.raw_os_error() {
        Some(libc::EACCES) => Error::new(format!(
            "no permission to open /dev/net/tun: run tcpd as root, or let users open it \
             (`sudo chmod 0666 /dev/net/tun`, the usual mode), create the interface once with \
             `sudo ip tuntap add {name} mode tun user $USER` and run `tcpd --no-configure {name}`"
        )),
        Some(libc::EPERM) => Error::new(format!("no permission to create or attach to {name}: {fix}")),
        Some(libc::EBUSY) => busy_error(name),
        Some(libc::ENOENT) | Some(libc::ENODEV) => {
            Error::new("/dev/net/tun is missing: load the tun module (`sudo modprobe tun`)".to_string())
        }
        Some(libc::EINVAL) => Error::new(format!(
            "interface {name} exists and is not a TUN device without packet info (mode tun); pick another name"
        )),
        _ => Error::new(format!("cannot open TUN device {name}: {}", io_msg(e))),
    }
}

impl TunDevice {
    /// One read with the SYN queue's priority rule: queue 0 first, then a
    /// slice of up to [`SYN_SLICE`] reads from the SYN queue, then queue 0
    /// again. `read(self, syn)` reads one packet from queue 0 or the SYN
    /// queue. `WouldBlock` only when both queues were found empty.
    fn read_queues<T>(
        &mut self,
        mut read: impl FnMut(&mut Self, bool) -> io::Result<T>,
    ) -> io::Result<T> {
        let Some(left) = self.syn_q.as_ref().map(|q| q.left) else {
            return read(self, false);
        };
        if left == 0 {
            match read(self, false) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                r => return r,
            }
        }
        let r = read(self, true);
        let Some(q) = self.syn_q.as_mut() else {
            return r;
        };
        match r {
            Ok(v) => {
                if left == 1 {
                    q.pressure = true;
                }
                q.left = left.checked_sub(1).unwrap_or(SYN_SLICE - 1);
                q.packets += 1;
                Ok(v)
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                q.left = 0;
                q.pressure = false;
                if left > 0 {
                    // Queue 0 was last looked at a slice ago.
                    read(self, false)
                } else {
                    Err(e)
                }
            }
            Err(e) => Err(e),
        }
    }

    fn recv_queue(&mut self, syn: bool, buf: &mut [u8]) -> io::Result<usize> {
        let dev = match (&self.syn_q, syn) {
            (Some(q), true) => &q.dev,
            _ => &self.dev,
        };
        loop {
            // tun-rs's recv is one read(2) on the fd (no lock, no copy).
            match dev.recv(buf) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                r => return r,
            }
        }
    }
}

impl Device for TunDevice {
    fn recv(&mut self, _now: Instant, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.read_queues(|t, syn| t.recv_queue(syn, buf)) {
                Ok(n) => {
                    self.rx_packets += 1;
                    self.rx_bytes += n as u64;
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    fn send(&mut self, _now: Instant, pkt: &[u8]) -> io::Result<()> {
        loop {
            // tun-rs's send is one write(2) on the fd (no lock, no copy).
            match self.dev.send(pkt) {
                Ok(_) => {
                    self.tx_packets += 1;
                    self.tx_bytes += pkt.len() as u64;
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    fn raw_fd(&self) -> RawFd {
        self.fd
    }

    fn syn_queue_fd(&self) -> Option<RawFd> {
        self.syn_q.as_ref().map(|q| q.fd)
    }

    fn offload(&self) -> bool {
        self.vnet
    }

    fn recv_offload(&mut self, now: Instant, buf: &mut [u8]) -> io::Result<(usize, bool)> {
        if !self.vnet {
            return self.recv(now, buf).map(|n| (n, false));
        }
        let (n, hdr) = self.read_queues(|t, syn| {
            let fd = match (&t.syn_q, syn) {
                (Some(q), true) => q.fd,
                _ => t.fd,
            };
            offload::read_with_hdr(fd, buf)
        })?;
        self.last_rx = hdr;
        self.rx_packets += 1;
        self.rx_bytes += n as u64;
        if hdr.gso_type != offload::GSO_NONE {
            self.rx_gso += 1;
        }
        // The local kernel built the packet: a partial checksum (NEEDS_CSUM)
        // or one it verified (DATA_VALID) needs no check.
        Ok((n, hdr.checksum_trusted()))
    }

    fn last_rx_hdr(&self) -> offload::VnetHdr {
        self.last_rx
    }

    fn send_offload(&mut self, now: Instant, pkt: &[u8], t: &tcp::Transmit) -> io::Result<()> {
        if !self.vnet {
            return self.send(now, pkt);
        }
        if let Some(q) = &mut self.syn_q {
            if q.hand_synack(pkt, t) {
                self.tx_packets += 1;
                self.tx_bytes += pkt.len() as u64;
                return Ok(());
            }
        }
        offload::write_with_hdr(self.fd, &offload::VnetHdr::for_transmit(pkt, t), pkt)?;
        self.tx_packets += 1;
        self.tx_bytes += pkt.len() as u64;
        if t.segment_size > 0 {
            self.tx_gso += 1;
        }
        Ok(())
    }

    fn counters(&self, out: &mut Vec<(&'static str, u64)>) {
        out.extend([
            ("dev_rx_gso", self.rx_gso),
            (
                "dev_rx_syn_queue",
                self.syn_q.as_ref().map_or(0, |q| q.packets),
            ),
            (
                "dev_tx_synack_thread",
                self.syn_q.as_ref().map_or(0, |q| q.synack_handed),
            ),
            (
                "dev_tx_synack_errors",
                self.syn_q.as_ref().map_or(0, |q| {
                    q.synack_errors.load(std::sync::atomic::Ordering::Relaxed)
                }),
            ),
            ("dev_tx_gso", self.tx_gso),
            ("dev_rx_packets", self.rx_packets),
            ("dev_tx_packets", self.tx_packets),
            ("dev_rx_bytes", self.rx_bytes),
            ("dev_tx_bytes", self.tx_bytes),
        ]);
    }

    fn restore_host(&mut self) {
        self.undo();
        // A forced exit runs no destructors: the name of a namespace tcpd
        // created goes now (the namespace ends with the process).
        if let Some(ns) = &mut self.ns {
            ns.remove();
        }
    }
}

impl Drop for TunDevice {
    fn drop(&mut self) {
        if !self.existed && self.undo_routes.is_empty() {
            // Not persistent: the kernel removes the interface, with its
            // addresses and routes, when our fd closes.
            debug!(iface = %self.name, "removing interface");
            return;
        }
        self.undo();
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        IpNet::parse(s).unwrap()
    }

    #[test]
    fn netmask_prefix_lengths() {
        assert_eq!(mask_prefix(&[255, 255, 255, 0]), 24);
        assert_eq!(mask_prefix(&[255, 255, 240, 0]), 20);
        assert_eq!(mask_prefix(&[0, 0, 0, 0]), 0);
        assert_eq!(mask_prefix(&[255; 16]), 128);
        let mut m = [0u8; 16];
        m[..8].fill(255);
        assert_eq!(mask_prefix(&m), 64);
    }

    #[test]
    fn address_requests_never_replace() {
        let (req, flags) = addr_request(AddrOp::Add, 7, "10.0.0.1".parse().unwrap(), 24);
        let want = |m: &AddressMessage, family, prefix, addr: &str| {
            let a: IpAddr = addr.parse().unwrap();
            assert_eq!(m.header.family, family);
            assert_eq!(m.header.prefix_len, prefix);
            assert_eq!(m.header.index, 7);
            assert_eq!(m.header.scope, AddressScope::Universe);
            assert_eq!(
                m.attributes,
                vec![AddressAttribute::Local(a), AddressAttribute::Address(a)]
            );
        };
        match &req {
            RouteNetlinkMessage::NewAddress(m) => want(m, AddressFamily::Inet, 24, "10.0.0.1"),
            other => panic!("{other:?}"),
        }
        assert_ne!(flags & NLM_F_EXCL, 0, "an add must not replace");
        assert_ne!(flags & NLM_F_CREATE, 0);
        assert_ne!(flags & NLM_F_ACK, 0, "the answer bounds the wait");
        assert_eq!(flags & netlink_packet_core::NLM_F_REPLACE, 0);
        let (req, flags) = addr_request(AddrOp::Del, 7, "fd00::1".parse().unwrap(), 64);
        match &req {
            RouteNetlinkMessage::DelAddress(m) => want(m, AddressFamily::Inet6, 64, "fd00::1"),
            other => panic!("{other:?}"),
        }
        assert_eq!(flags, NLM_F_REQUEST | NLM_F_ACK);
    }

    /// One netlink datagram of `msgs`, as the kernel would send it.
    fn datagram(msgs: Vec<(u32, NetlinkPayload<RouteNetlinkMessage>)>) -> Vec<u8> {
        let mut out = Vec::new();
        for (seq, payload) in msgs {
            let mut m = NetlinkMessage::new(NetlinkHeader::default(), payload);
            m.header.sequence_number = seq;
            m.finalize();
            let at = out.len();
            out.resize(at + m.buffer_len(), 0);
            m.serialize(&mut out[at..]);
            out.resize(out.len().next_multiple_of(4), 0);
        }
        out
    }

    fn nlerr(errno: i32) -> NetlinkPayload<RouteNetlinkMessage> {
        let mut e = netlink_packet_core::ErrorMessage::default();
        e.code = std::num::NonZeroI32::new(errno.wrapping_neg());
        e.header = vec![0; 16];
        NetlinkPayload::Error(e)
    }

    #[test]
    fn kernel_answers_end_the_wait_or_fail_it() {
        let mut got = Answers::new();
        assert!(read_answer(&datagram(vec![(5, nlerr(0))]), 5, &mut got).unwrap());
        let e = read_answer(&datagram(vec![(5, nlerr(libc::EEXIST))]), 5, &mut got).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EEXIST));
        // Another request's answer is not ours.
        assert!(!read_answer(&datagram(vec![(6, nlerr(libc::EEXIST))]), 5, &mut got).unwrap());
        assert!(got.is_empty());
        // A link, then the ACK, in one datagram: the link is kept.
        let mut link = LinkMessage::default();
        link.header.index = 3;
        link.header.flags = LinkFlags::Up | LinkFlags::Running;
        let dg = datagram(vec![
            (5, NetlinkPayload::from(RouteNetlinkMessage::NewLink(link))),
            (5, nlerr(0)),
        ]);
        assert!(read_answer(&dg, 5, &mut got).unwrap());
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0, libc::RTM_NEWLINK);
        let h = LinkHeader::parse(&got[0].1).unwrap();
        assert_eq!(h.index, 3);
        assert!(h.flags.contains(LinkFlags::Up));
        // The link alone: more is to come.
        let mut got = Answers::new();
        assert!(!read_answer(&dg[..dg.len() - 36], 5, &mut got).unwrap());
        // Our answer cut short: an error of one line, not a reason to wait.
        let ack = datagram(vec![(5, nlerr(0))]);
        for cut in [&ack[..10], &ack[..18]] {
            let e = read_answer(cut, 5, &mut Answers::new()).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidData);
            assert!(!e.to_string().contains('\n'), "{e}");
        }
        // A zero length cannot make the walk loop.
        assert!(read_answer(&[0u8; 20], 5, &mut Answers::new()).is_err());
        // An errno the kernel never sends does not overflow.
        let e = read_answer(&datagram(vec![(5, nlerr(i32::MIN))]), 5, &mut got).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(i32::MIN));
    }

    #[test]
    fn a_refused_change_is_one_line_naming_the_interface() {
        let e = read_answer(
            &datagram(vec![(1, nlerr(libc::EPERM))]),
            1,
            &mut Answers::new(),
        )
        .unwrap_err();
        assert_eq!(
            config_error("tun0", "assign 10.0.0.1/24", &e).to_string(),
            "tun0: cannot assign 10.0.0.1/24: Operation not permitted"
        );
    }

    #[test]
    fn netlink_answers_are_bounded_by_the_timeout() {
        // A real rtnetlink socket that was asked nothing: no answer comes.
        let sock = Socket::new(NETLINK_ROUTE).unwrap();
        sock.connect(&SocketAddr::new(0, 0)).unwrap();
        let start = Instant::now();
        let e = wait_answer(&sock, 1, Duration::from_millis(100)).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut, "{e}");
        assert!(e.to_string().contains("no answer from the kernel"), "{e}");
        assert!(start.elapsed() >= Duration::from_millis(100));
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "{:?}",
            start.elapsed()
        );
    }

    #[test]
    fn link_state_is_the_kernels() {
        // Reading a link needs no privilege: lo, as getifaddrs sees it.
        let lo = if_index("lo").unwrap();
        let up = nix::ifaddrs::getifaddrs()
            .unwrap()
            .find(|a| a.interface_name == "lo")
            .map(|a| a.flags.contains(nix::net::if_::InterfaceFlags::IFF_UP))
            .unwrap();
        assert_eq!(link_is_up(lo).unwrap(), up);
        let e = link_is_up(0x7fff_fff0).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENODEV), "{e}");
        assert_eq!(if_index("no-such-if0"), None);
    }
    #[test]
    fn mtu_is_changed_only_where_it_can_be_put_back() {
        assert_eq!(mtu_plan(true, Some(1500), 1500), MtuPlan::Keep);
        assert_eq!(
            mtu_plan(true, Some(1400), 1500),
            MtuPlan::Set {
                restore: Some(1400)
            }
        );
        assert_eq!(
            mtu_plan(false, Some(1400), 1500),
            MtuPlan::Set { restore: None }
        );
        // A persistent device whose MTU cannot be read is left alone.
        assert_eq!(mtu_plan(true, None, 1500), MtuPlan::Unknown);
        // One tcpd created goes away on exit: nothing to put back.
        assert_eq!(mtu_plan(false, None, 1500), MtuPlan::Set { restore: None });
    }

    #[test]
    fn an_ipv6_address_already_there_with_another_prefix_is_reported() {
        let cfg = Config::default();
        let host = |list: &[(&str, &str)]| -> Vec<(String, IpNet)> {
            list.iter().map(|(i, n)| (i.to_string(), net(n))).collect()
        };
        assert_eq!(
            other_prefix("tun0", &cfg, &host(&[("tun0", "fd00::1/64")])),
            None
        );
        assert_eq!(
            other_prefix("tun0", &cfg, &host(&[("eth0", "fd00::1/128")])),
            None
        );
        let w = other_prefix("tun0", &cfg, &host(&[("tun0", "fd00::1/128")])).unwrap();
        assert!(
            w.contains("already assigned as fd00::1/128, not /64")
                && w.contains("no route for fd00::/64 to tun0")
                && w.contains("fd00::2"),
            "{w}"
        );
        let w = other_prefix("tun0", &cfg, &host(&[("tun0", "fd00::1/48")])).unwrap();
        assert!(
            w.contains("routes fd00::/48 to tun0 instead of fd00::/64"),
            "{w}"
        );
    }

    #[test]
    fn conflicts_exact_and_same_subnet() {
        let cfg = Config::default();
        let host = |list: &[(&str, &str)]| -> Vec<(String, IpNet)> {
            list.iter().map(|(i, n)| (i.to_string(), net(n))).collect()
        };
        let fatal = |cfg: &Config, list: &[(&str, &str)]| -> String {
            match find_conflict(cfg, &host(list)) {
                Some(Conflict::Fatal(m)) => m,
                other => panic!("{list:?}: {other:?}"),
            }
        };
        let ok = host(&[
            ("lo", "127.0.0.1/8"),
            ("lo", "::1/128"),
            ("eth0", "192.168.1.10/24"),
            ("eth0", "fe80::1/64"),
            ("tun0", "fe80::2/64"),
            ("eth1", "10.0.1.5/24"),
            ("eth1", "fd00:0:0:1::5/64"),
            // The interface's own host address is no conflict.
            ("tun0", "10.0.0.1/24"),
        ]);
        assert_eq!(find_conflict(&cfg, &ok), None);
        let e = fatal(&cfg, &[("lo", "10.0.0.1/32")]);
        assert!(e.contains("already on interface lo"), "{e}");
        let e = fatal(&cfg, &[("tun0", "10.0.0.2/24")]);
        assert!(e.contains("tun0 itself"), "{e}");
        let e = fatal(&cfg, &[("d0", "10.0.0.5/24")]);
        assert!(
            e.contains("interface d0 has 10.0.0.5/24")
                && e.contains("same subnet as --host-addr 10.0.0.1/24")
                && e.contains("could route 10.0.0.2 to d0 instead of tun0"),
            "{e}"
        );
        // A wider subnet elsewhere: tun0 still gets its /24, and the
        // message says what is at risk (that part of the other LAN).
        let e = fatal(&cfg, &[("eth0", "10.0.0.9/20")]);
        assert!(
            e.contains("wider subnet")
                && e.contains("still routes 10.0.0.0/24 to tun0")
                && e.contains("hide that part of eth0's network")
                && !e.contains("instead of tun0"),
            "{e}"
        );
        // A narrower one: it wins the routes it covers.
        let e = fatal(&cfg, &[("d0", "10.0.0.200/30")]);
        assert!(
            e.contains("narrower subnet") && e.contains("routes 10.0.0.200/30 to d0"),
            "{e}"
        );
        let e = fatal(&cfg, &[("d0", "10.0.0.3/30")]);
        assert!(
            e.contains("would route 10.0.0.2 to d0 (the longer prefix) instead of tun0"),
            "{e}"
        );
        // The default IPv6 addresses clash: IPv6 goes, tcpd runs.
        for list in [
            &[("d0", "fd00::9/64")][..],
            &[("d0", "fd00::/48")],
            &[("d0", "fd00::1/128")],
            &[("tun0", "fd00::2/64")],
        ] {
            match find_conflict(&cfg, &host(list)) {
                Some(Conflict::Ipv6(m)) => {
                    assert!(m.contains("--host-addr6") || m.contains("--addr6"), "{m}")
                }
                other => panic!("{list:?}: {other:?}"),
            }
        }
        // Addresses the user asked for are refused.
        let asked = Config {
            ipv6_explicit: true,
            ..Config::default()
        };
        let e = fatal(&asked, &[("d0", "fd00::9/64")]);
        assert!(e.contains("--host-addr6"), "{e}");
        // IPv4 wins over IPv6 and is fatal without regard to IPv6 flags.
        let e = fatal(&cfg, &[("d0", "fd00::9/64"), ("d1", "10.0.0.7/24")]);
        assert!(e.contains("d1"), "{e}");
        let no6 = Config {
            addr6: None,
            ..Config::default()
        };
        assert_eq!(find_conflict(&no6, &host(&[("d0", "fd00::9/64")])), None);
    }

    #[test]
    fn network_clears_host_bits() {
        assert_eq!(network(net("10.0.0.9/20")), net("10.0.0.0/20"));
        assert_eq!(network(net("10.1.2.3/0")), net("0.0.0.0/0"));
        assert_eq!(network(net("10.1.2.3/32")), net("10.1.2.3/32"));
        assert_eq!(network(net("fd00::1:2/112")), net("fd00::1:0/112"));
        assert_eq!(network(net("fd00::1/0")), net("::/0"));
    }
}
