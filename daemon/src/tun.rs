//! The TUN device: created (or attached to) through tun-rs, configured with
//! ioctls in-process (MTU, transmit queue length, IPv4 and IPv6 addresses,
//! up), read and written with plain non-blocking `read`/`write` on its fd.
//!
//! What tcpd created it removes on drop: a device it created disappears when
//! its fd closes (it is not persistent); on a persistent device that tcpd
//! configured, the addresses it added are removed again.

use crate::config::Config;
use crate::device::Device;
use crate::error::Error;
use crate::offload;
use std::ffi::{CStr, CString};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, RawFd};
use std::time::Instant;
use tracing::{debug, info, warn};

/// A configured TUN device (IFF_TUN | IFF_NO_PI, non-blocking).
pub struct TunDevice {
    dev: tun_rs::SyncDevice,
    fd: RawFd,
    /// Opened with IFF_VNET_HDR: every read and write starts with a
    /// `virtio_net_hdr` (segmentation and checksum offload).
    vnet: bool,
    name: String,
    /// The device existed before tcpd opened it.
    existed: bool,
    /// IPv4 address tcpd assigned (removed on drop when `existed`).
    added_v4: Option<Ipv4Addr>,
    /// IPv6 address and prefix tcpd assigned.
    added_v6: Option<(Ipv6Addr, u8)>,
    /// tcpd brought the device up.
    brought_up: bool,
    mtu: usize,
    rx_packets: u64,
    tx_packets: u64,
    rx_bytes: u64,
    tx_bytes: u64,
    rx_gso: u64,
    tx_gso: u64,
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

/// The interface index of `name`, if it exists.
pub fn if_index(name: &str) -> Option<u32> {
    let c = CString::new(name).ok()?;
    // SAFETY: `c` is a valid NUL-terminated string for the duration of the call.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (idx != 0).then_some(idx)
}

/// Every (interface, address) pair on the host, from getifaddrs(3).
pub fn host_addresses() -> io::Result<Vec<(String, IpAddr)>> {
    let mut out = Vec::new();
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs writes a list head we free with freeifaddrs below.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned, alive until freeifaddrs.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        if ifa.ifa_addr.is_null() || ifa.ifa_name.is_null() {
            continue;
        }
        // SAFETY: ifa_name is a NUL-terminated string owned by the list.
        let name = unsafe { CStr::from_ptr(ifa.ifa_name) }
            .to_string_lossy()
            .into_owned();
        // SAFETY: ifa_addr is non-null and points to a sockaddr whose family says its real type.
        let family = i32::from(unsafe { (*ifa.ifa_addr).sa_family });
        if family == libc::AF_INET {
            // SAFETY: family AF_INET means the storage is a sockaddr_in.
            let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
            out.push((
                name,
                IpAddr::V4(Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr))),
            ));
        } else if family == libc::AF_INET6 {
            // SAFETY: family AF_INET6 means the storage is a sockaddr_in6.
            let sin6 = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in6) };
            out.push((name, IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr))));
        }
    }
    // SAFETY: `head` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    Ok(out)
}

fn ifreq_for(name: &str) -> io::Result<libc::ifreq> {
    // SAFETY: ifreq is plain data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    let bytes = name.as_bytes();
    if bytes.len() >= req.ifr_name.len() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "interface name too long",
        ));
    }
    for (d, s) in req.ifr_name.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    Ok(req)
}

fn sockaddr_v4(a: Ipv4Addr) -> libc::sockaddr {
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(a).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: sockaddr_in and sockaddr have the same size on Linux; sockaddr is plain data.
    unsafe { std::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(sin) }
}

/// Sets (or with 0.0.0.0, removes) the IPv4 address and netmask of `name`
/// with SIOCSIFADDR / SIOCSIFNETMASK.
fn set_ipv4(name: &str, addr: Ipv4Addr, prefix: u8) -> io::Result<()> {
    // SAFETY: plain socket(2) call; the fd is owned by `sock` below.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a fresh fd we own.
    let sock = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(raw) };
    let mut req = ifreq_for(name)?;
    req.ifr_ifru.ifru_addr = sockaddr_v4(addr);
    // SAFETY: SIOCSIFADDR takes a pointer to an ifreq we own.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFADDR as _, &req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    if addr.is_unspecified() {
        return Ok(());
    }
    let mask = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix.min(32)))
    };
    let mut req = ifreq_for(name)?;
    req.ifr_ifru.ifru_netmask = sockaddr_v4(Ipv4Addr::from(mask));
    // SAFETY: as above, SIOCSIFNETMASK with an ifreq we own.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFNETMASK as _, &req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

impl TunDevice {
    /// Opens (and unless `--no-configure`, configures) the TUN device.
    /// Every failure a user can cause comes back as one line saying how to fix it.
    pub fn open(cfg: &Config) -> Result<TunDevice, Error> {
        let name = cfg.iface.as_str();
        let existed = if_index(name).is_some();
        if cfg.no_configure && !existed {
            return Err(Error::new(format!(
                "interface {name} does not exist; create it once with \
                 `sudo ip tuntap add {name} mode tun user $USER` or run without --no-configure (as root)"
            )));
        }
        if !cfg.no_configure {
            check_conflicts(cfg)?;
        }
        let vnet = cfg.effective_offload();
        let dev = tun_rs::DeviceBuilder::new()
            .name(name)
            .inherit_enable_state()
            .offload(vnet)
            .build_sync()
            .map_err(|e| open_error(name, &e))?;
        dev.set_nonblocking(true)
            .map_err(|e| Error::new(format!("{name}: cannot make non-blocking: {}", io_msg(&e))))?;
        let fd = dev.as_raw_fd();
        let mut t = TunDevice {
            dev,
            fd,
            vnet,
            name: name.to_string(),
            existed,
            added_v4: None,
            added_v6: None,
            brought_up: false,
            mtu: cfg.mtu,
            rx_packets: 0,
            tx_packets: 0,
            rx_bytes: 0,
            tx_bytes: 0,
            rx_gso: 0,
            tx_gso: 0,
        };
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
                "attached to existing interface without configuring it"
            );
            return Ok(t);
        }
        t.configure(cfg)?;
        Ok(t)
    }

    fn configure(&mut self, cfg: &Config) -> Result<(), Error> {
        let name = self.name.clone();
        let fail =
            |what: &str, e: io::Error| Error::new(format!("{name}: cannot {what}: {}", io_msg(&e)));
        let mtu = u16::try_from(cfg.mtu)
            .map_err(|_| Error::new(format!("--mtu {} too large", cfg.mtu)))?;
        self.dev
            .set_mtu(mtu)
            .map_err(|e| fail(&format!("set MTU {mtu}"), e))?;
        if let Err(e) = self.dev.set_tx_queue_len(cfg.txqueuelen) {
            warn!(
                "{name}: cannot set txqueuelen {}: {}",
                cfg.txqueuelen,
                io_msg(&e)
            );
        }
        let IpAddr::V4(h4) = cfg.host_addr.addr else {
            return Err(Error::new(format!(
                "--host-addr {} is not IPv4",
                cfg.host_addr
            )));
        };
        set_ipv4(&name, h4, cfg.host_addr.prefix)
            .map_err(|e| fail(&format!("assign {}", cfg.host_addr), e))?;
        self.added_v4 = Some(h4);
        self.dev
            .enabled(true)
            .map_err(|e| fail("bring the interface up", e))?;
        self.brought_up = true;
        if cfg.addr6.is_some() {
            if let IpAddr::V6(h6) = cfg.host_addr6.addr {
                match self.dev.add_address_v6(h6, cfg.host_addr6.prefix) {
                    Ok(()) => self.added_v6 = Some((h6, cfg.host_addr6.prefix)),
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

    /// The interface name.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// The MTU in force (the interface's own with `--no-configure`).
    pub fn mtu(&self) -> usize {
        self.mtu
    }
}

/// Refuses host or stack addresses that another interface already holds:
/// the kernel would answer for them itself or route them elsewhere.
fn check_conflicts(cfg: &Config) -> Result<(), Error> {
    let addrs = match host_addresses() {
        Ok(a) => a,
        Err(e) => {
            warn!(
                "cannot list host addresses ({}); skipping the address conflict check",
                io_msg(&e)
            );
            return Ok(());
        }
    };
    let mut wanted: Vec<(IpAddr, &str)> = vec![
        (cfg.host_addr.addr, "--host-addr"),
        (IpAddr::V4(cfg.addr), "--addr"),
    ];
    if let Some(a6) = cfg.addr6 {
        wanted.push((cfg.host_addr6.addr, "--host-addr6"));
        wanted.push((IpAddr::V6(a6), "--addr6"));
    }
    for (ifname, a) in &addrs {
        for (w, flag) in &wanted {
            if a == w && ifname != &cfg.iface {
                return Err(Error::new(format!(
                    "address {w} ({flag}) is already on interface {ifname}; \
                     choose another with {flag} or remove it from {ifname}"
                )));
            }
            if a == w && ifname == &cfg.iface && flag.starts_with("--addr") {
                return Err(Error::new(format!(
                    "address {w} ({flag}) is assigned to {ifname} itself; the kernel would answer for it"
                )));
            }
        }
    }
    Ok(())
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
        Some(libc::EBUSY) => Error::new(format!(
            "interface {name} is busy: another process has it open (another tcpd?); stop it or pick another name"
        )),
        Some(libc::ENOENT) | Some(libc::ENODEV) => {
            Error::new("/dev/net/tun is missing: load the tun module (`sudo modprobe tun`)".to_string())
        }
        Some(libc::EINVAL) => Error::new(format!(
            "interface {name} exists and is not a TUN device without packet info (mode tun); pick another name"
        )),
        _ => Error::new(format!("cannot open TUN device {name}: {}", io_msg(e))),
    }
}

impl Device for TunDevice {
    fn recv(&mut self, _now: Instant, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            // SAFETY: reading into a live, exclusively borrowed buffer of buf.len() bytes.
            let n = unsafe { libc::read(self.fd, buf.as_mut_ptr().cast(), buf.len()) };
            if n >= 0 {
                self.rx_packets += 1;
                self.rx_bytes += n as u64;
                return Ok(n as usize);
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }

    fn send(&mut self, _now: Instant, pkt: &[u8]) -> io::Result<()> {
        loop {
            // SAFETY: writing from a live buffer of pkt.len() bytes.
            let n = unsafe { libc::write(self.fd, pkt.as_ptr().cast(), pkt.len()) };
            if n >= 0 {
                self.tx_packets += 1;
                self.tx_bytes += pkt.len() as u64;
                return Ok(());
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }

    fn raw_fd(&self) -> RawFd {
        self.fd
    }

    fn offload(&self) -> bool {
        self.vnet
    }

    fn recv_offload(&mut self, now: Instant, buf: &mut [u8]) -> io::Result<(usize, bool)> {
        if !self.vnet {
            return self.recv(now, buf).map(|n| (n, false));
        }
        let (n, hdr) = offload::read_with_hdr(self.fd, buf)?;
        self.rx_packets += 1;
        self.rx_bytes += n as u64;
        if hdr.gso_type != offload::GSO_NONE {
            self.rx_gso += 1;
        }
        // The local kernel built the packet: a partial checksum (NEEDS_CSUM)
        // or one it verified (DATA_VALID) needs no check.
        Ok((n, hdr.checksum_trusted()))
    }

    fn send_offload(&mut self, now: Instant, pkt: &[u8], t: &tcp::Transmit) -> io::Result<()> {
        if !self.vnet {
            return self.send(now, pkt);
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
            ("dev_tx_gso", self.tx_gso),
            ("dev_rx_packets", self.rx_packets),
            ("dev_tx_packets", self.tx_packets),
            ("dev_rx_bytes", self.rx_bytes),
            ("dev_tx_bytes", self.tx_bytes),
        ]);
    }
}

impl Drop for TunDevice {
    fn drop(&mut self) {
        if !self.existed {
            // Not persistent: the kernel removes the interface, with its
            // addresses and routes, when our fd closes.
            debug!(iface = %self.name, "removing interface");
            return;
        }
        if let Some((a6, p)) = self.added_v6.take() {
            if let Err(e) = self.dev.remove_address_v6(a6, p) {
                warn!("{}: cannot remove {a6}/{p}: {}", self.name, io_msg(&e));
            }
        }
        if self.added_v4.take().is_some() {
            if let Err(e) = set_ipv4(&self.name, Ipv4Addr::UNSPECIFIED, 0) {
                warn!("{}: cannot remove IPv4 address: {}", self.name, io_msg(&e));
            }
        }
        if self.brought_up {
            let _ = self.dev.enabled(false);
        }
    }
}
