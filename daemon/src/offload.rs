//! TUN segmentation and checksum offload: the virtio-net header that
//! precedes every packet on a TUN opened with `IFF_VNET_HDR` (and
//! `TUNSETOFFLOAD` `TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6`).
//!
//! With it, tcpd hands the kernel one TCP "super-segment" of up to 64 KiB
//! and the kernel cuts it into MSS-sized segments (GSO), and the kernel
//! hands tcpd the segments its own TCP coalesced (GRO/TSO) in one read.
//! Checksums of packets that stay on the machine need not be computed: the
//! header says so. This is how a user-space stack gets past the one
//! syscall per 1500-byte packet ceiling of a plain TUN device.
//!
//! Layout (`struct virtio_net_hdr`, host byte order as the TUN device uses
//! by default): `flags: u8, gso_type: u8, hdr_len: u16, gso_size: u16,
//! csum_start: u16, csum_offset: u16` — 10 bytes.

use std::io;
use std::os::fd::RawFd;

/// Size of the virtio-net header on the device (the default of `TUNSETVNETHDRSZ`).
pub const VNET_HDR_LEN: usize = 10;

/// `VIRTIO_NET_HDR_F_NEEDS_CSUM`: the checksum from `csum_start` is to be
/// completed (and, on receive, was never computed: trust the packet).
pub const F_NEEDS_CSUM: u8 = 1;
/// `VIRTIO_NET_HDR_F_DATA_VALID`: the checksum was verified already.
pub const F_DATA_VALID: u8 = 2;
/// `VIRTIO_NET_HDR_GSO_NONE`.
pub const GSO_NONE: u8 = 0;
/// `VIRTIO_NET_HDR_GSO_TCPV4`.
pub const GSO_TCPV4: u8 = 1;
/// `VIRTIO_NET_HDR_GSO_TCPV6`.
pub const GSO_TCPV6: u8 = 4;

/// A decoded virtio-net header.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VnetHdr {
    /// `F_NEEDS_CSUM`, `F_DATA_VALID`.
    pub flags: u8,
    /// `GSO_*`.
    pub gso_type: u8,
    /// Length of the headers (IP + TCP) of a GSO packet.
    pub hdr_len: u16,
    /// Payload bytes per segment of a GSO packet.
    pub gso_size: u16,
    /// Where checksumming starts (the TCP header).
    pub csum_start: u16,
    /// Where the checksum field is, from `csum_start` (16 for TCP).
    pub csum_offset: u16,
}

impl VnetHdr {
    /// Decodes the first [`VNET_HDR_LEN`] bytes of `b`.
    pub fn decode(b: &[u8; VNET_HDR_LEN]) -> VnetHdr {
        let u = |i: usize| u16::from_ne_bytes([b[i], b[i + 1]]);
        VnetHdr {
            flags: b[0],
            gso_type: b[1],
            hdr_len: u(2),
            gso_size: u(4),
            csum_start: u(6),
            csum_offset: u(8),
        }
    }

    /// Encodes into 10 bytes.
    pub fn encode(&self) -> [u8; VNET_HDR_LEN] {
        let mut b = [0u8; VNET_HDR_LEN];
        b[0] = self.flags;
        b[1] = self.gso_type & 0x7f;
        b[2..4].copy_from_slice(&self.hdr_len.to_ne_bytes());
        b[4..6].copy_from_slice(&self.gso_size.to_ne_bytes());
        b[6..8].copy_from_slice(&self.csum_start.to_ne_bytes());
        b[8..10].copy_from_slice(&self.csum_offset.to_ne_bytes());
        b
    }

    /// Whether the packet's transport checksum needs no verification.
    pub fn checksum_trusted(&self) -> bool {
        self.flags & (F_NEEDS_CSUM | F_DATA_VALID) != 0
    }

    /// The header for a packet `pkt` the endpoint produced, as described
    /// by its [`tcp::Transmit`]. A packet that is not TCP, or that the
    /// header cannot describe, gets an empty header (nothing to do).
    pub fn for_transmit(pkt: &[u8], t: &tcp::Transmit) -> VnetHdr {
        let Some((iph, proto, v6)) = ip_info(pkt) else {
            return VnetHdr::default();
        };
        if proto != 6 || pkt.len() < iph + 20 {
            return VnetHdr::default();
        }
        let mut h = VnetHdr::default();
        if t.partial_checksum {
            h.flags = F_NEEDS_CSUM;
            h.csum_start = iph as u16;
            h.csum_offset = 16;
        }
        if t.segment_size > 0 {
            let tcph = usize::from(pkt[iph + 12] >> 4) * 4;
            h.gso_type = if v6 { GSO_TCPV6 } else { GSO_TCPV4 };
            h.gso_size = t.segment_size;
            h.hdr_len = (iph + tcph) as u16;
        }
        h
    }
}

/// IP header length, protocol and family of a packet we emitted (no
/// extension headers: tcpd never emits them).
fn ip_info(pkt: &[u8]) -> Option<(usize, u8, bool)> {
    match pkt.first()? >> 4 {
        4 => Some((usize::from(pkt[0] & 0x0f) * 4, *pkt.get(9)?, false)),
        6 => Some((40, *pkt.get(6)?, true)),
        _ => None,
    }
}

/// Reads one packet with its virtio-net header (one `readv`).
pub fn read_with_hdr(fd: RawFd, buf: &mut [u8]) -> io::Result<(usize, VnetHdr)> {
    let mut hdr = [0u8; VNET_HDR_LEN];
    let iov = [
        libc::iovec {
            iov_base: hdr.as_mut_ptr().cast(),
            iov_len: VNET_HDR_LEN,
        },
        libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        },
    ];
    loop {
        // SAFETY: both iovecs point at live, exclusively borrowed buffers
        // of the lengths given.
        let n = unsafe { libc::readv(fd, iov.as_ptr(), 2) };
        if n >= 0 {
            let n = n as usize;
            if n < VNET_HDR_LEN {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "short read: no virtio-net header",
                ));
            }
            return Ok((n - VNET_HDR_LEN, VnetHdr::decode(&hdr)));
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Writes one packet behind its virtio-net header (one `writev`).
pub fn write_with_hdr(fd: RawFd, hdr: &VnetHdr, pkt: &[u8]) -> io::Result<()> {
    let h = hdr.encode();
    let iov = [
        libc::iovec {
            iov_base: h.as_ptr() as *mut libc::c_void,
            iov_len: VNET_HDR_LEN,
        },
        libc::iovec {
            iov_base: pkt.as_ptr() as *mut libc::c_void,
            iov_len: pkt.len(),
        },
    ];
    loop {
        // SAFETY: both iovecs point at live buffers of the lengths given;
        // writev only reads them.
        let n = unsafe { libc::writev(fd, iov.as_ptr(), 2) };
        if n >= 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip() {
        let h = VnetHdr {
            flags: F_NEEDS_CSUM,
            gso_type: GSO_TCPV4,
            hdr_len: 52,
            gso_size: 1448,
            csum_start: 20,
            csum_offset: 16,
        };
        assert_eq!(VnetHdr::decode(&h.encode()), h);
        assert!(h.checksum_trusted());
        assert!(!VnetHdr::default().checksum_trusted());
    }

    #[test]
    fn header_for_a_tso_segment() {
        // An IPv4 packet with a 32-byte TCP header (data offset 8).
        let mut pkt = vec![0u8; 20 + 32 + 3000];
        pkt[0] = 0x45;
        pkt[9] = 6;
        pkt[20 + 12] = 8 << 4;
        let t = tcp::Transmit {
            len: pkt.len(),
            segment_size: 1448,
            partial_checksum: true,
        };
        let h = VnetHdr::for_transmit(&pkt, &t);
        assert_eq!(
            h,
            VnetHdr {
                flags: F_NEEDS_CSUM,
                gso_type: GSO_TCPV4,
                hdr_len: 52,
                gso_size: 1448,
                csum_start: 20,
                csum_offset: 16
            }
        );
        // ICMP: nothing to do.
        pkt[9] = 1;
        assert_eq!(VnetHdr::for_transmit(&pkt, &t), VnetHdr::default());
        // IPv6, no segmentation.
        let mut p6 = vec![0u8; 40 + 20 + 10];
        p6[0] = 0x60;
        p6[6] = 6;
        p6[40 + 12] = 5 << 4;
        let t = tcp::Transmit {
            len: p6.len(),
            segment_size: 0,
            partial_checksum: true,
        };
        let h = VnetHdr::for_transmit(&p6, &t);
        assert_eq!(
            (h.flags, h.gso_type, h.csum_start, h.csum_offset),
            (F_NEEDS_CSUM, GSO_NONE, 40, 16)
        );
    }
}
