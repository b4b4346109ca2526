//! The packet device the reactor drives, and the trait its middleware
//! (pcap tap, fault injector) implements by wrapping another device.
//!
//! A device moves whole IP packets. It is non-blocking: `recv` and `send`
//! return [`std::io::ErrorKind::WouldBlock`] instead of waiting, and the
//! reactor learns about readiness from the raw file descriptor it registers
//! with mio (edge-triggered), plus [`Device::poll_at`] for middleware that
//! holds packets back on a timer.

use std::io;
use std::os::fd::RawFd;
use std::time::Instant;

/// A non-blocking packet device.
pub trait Device {
    /// Reads one packet into `buf` and returns its length.
    /// `Err(WouldBlock)` when none is ready now.
    fn recv(&mut self, now: Instant, buf: &mut [u8]) -> io::Result<usize>;
    /// Writes one packet. `Err(WouldBlock)` (or `ENOBUFS`) when the device
    /// cannot take it now: the caller keeps the packet and retries.
    fn send(&mut self, now: Instant, pkt: &[u8]) -> io::Result<()>;
    /// The file descriptor to register with mio for readiness.
    fn raw_fd(&self) -> RawFd;
    /// A second fd to wait on for reads (the TUN's SYN queue, see
    /// [`crate::steer`]); `recv` reads both.
    fn syn_queue_fd(&self) -> Option<RawFd> {
        None
    }
    /// The earliest time the device wants [`Device::service`] called (a
    /// held-back packet becomes due). `None`: no timer.
    fn poll_at(&self) -> Option<Instant> {
        None
    }
    /// Releases what became due by `now` (outbound packets held back by a
    /// fault injector). Inbound packets that became due are returned by `recv`.
    fn service(&mut self, now: Instant) -> io::Result<()> {
        let _ = now;
        Ok(())
    }
    /// Whether `recv` may return a packet even without new readiness on the
    /// fd (held-back inbound packets that are due).
    fn has_due_rx(&self, now: Instant) -> bool {
        let _ = now;
        false
    }
    /// Appends this layer's counters (and those of the layers it wraps).
    fn counters(&self, out: &mut Vec<(&'static str, u64)>) {
        let _ = out;
    }
    /// Flushes buffered output (pcap records) before exit; may block until
    /// the output is written.
    fn flush(&mut self) {}
    /// Starts the flush of [`Device::flush`] without waiting for it (the pcap
    /// writer is told to write what is queued and stop).
    fn begin_flush(&mut self) {}
    /// Whether a flush begun with [`Device::begin_flush`] is complete, so
    /// that [`Device::flush`] returns at once.
    fn flushed(&self) -> bool {
        true
    }
    /// Undoes now what the device changed on the host (addresses tcpd added
    /// to a persistent interface, its link state, MTU), for an exit that
    /// runs no destructors. Idempotent: `Drop` does the same afterwards.
    fn restore_host(&mut self) {}
    /// Whether the device does segmentation and checksum offload: then
    /// [`Device::recv_offload`] may return packets larger than the MTU and
    /// [`Device::send_offload`] takes TSO segments (see [`tcp::Transmit`]).
    fn offload(&self) -> bool {
        false
    }
    /// Like [`Device::recv`]; also says whether the device vouched for the
    /// packet's TCP/UDP checksum (the local kernel built it).
    fn recv_offload(&mut self, now: Instant, buf: &mut [u8]) -> io::Result<(usize, bool)> {
        self.recv(now, buf).map(|n| (n, false))
    }
    /// The virtio-net header of the packet the last [`Device::recv_offload`]
    /// returned (its GSO segment size, whether its checksum is partial), for
    /// a pcap tap that records the segments the wire carried. Default: none.
    fn last_rx_hdr(&self) -> crate::offload::VnetHdr {
        crate::offload::VnetHdr::default()
    }
    /// Like [`Device::send`] for a packet described by `t` (segment size
    /// for TSO, partial checksum).
    fn send_offload(&mut self, now: Instant, pkt: &[u8], t: &tcp::Transmit) -> io::Result<()> {
        let _ = t;
        self.send(now, pkt)
    }
}

impl<D: Device + ?Sized> Device for Box<D> {
    fn recv(&mut self, now: Instant, buf: &mut [u8]) -> io::Result<usize> {
        (**self).recv(now, buf)
    }
    fn send(&mut self, now: Instant, pkt: &[u8]) -> io::Result<()> {
        (**self).send(now, pkt)
    }
    fn raw_fd(&self) -> RawFd {
        (**self).raw_fd()
    }
    fn syn_queue_fd(&self) -> Option<RawFd> {
        (**self).syn_queue_fd()
    }
    fn poll_at(&self) -> Option<Instant> {
        (**self).poll_at()
    }
    fn service(&mut self, now: Instant) -> io::Result<()> {
        (**self).service(now)
    }
    fn has_due_rx(&self, now: Instant) -> bool {
        (**self).has_due_rx(now)
    }
    fn counters(&self, out: &mut Vec<(&'static str, u64)>) {
        (**self).counters(out)
    }
    fn flush(&mut self) {
        (**self).flush()
    }
    fn begin_flush(&mut self) {
        (**self).begin_flush()
    }
    fn flushed(&self) -> bool {
        (**self).flushed()
    }
    fn restore_host(&mut self) {
        (**self).restore_host()
    }
    fn offload(&self) -> bool {
        (**self).offload()
    }
    fn recv_offload(&mut self, now: Instant, buf: &mut [u8]) -> io::Result<(usize, bool)> {
        (**self).recv_offload(now, buf)
    }
    fn last_rx_hdr(&self) -> crate::offload::VnetHdr {
        (**self).last_rx_hdr()
    }
    fn send_offload(&mut self, now: Instant, pkt: &[u8], t: &tcp::Transmit) -> io::Result<()> {
        (**self).send_offload(now, pkt, t)
    }
}

/// Whether an I/O error means "try again later" on a device write:
/// `WouldBlock`, `ENOBUFS` (the kernel is out of buffers) or `Interrupted`.
pub fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
    ) || e.raw_os_error() == Some(libc::ENOBUFS)
}
