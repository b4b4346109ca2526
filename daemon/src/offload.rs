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

/// The 16-bit one's complement sum of `b` (RFC 1071), unfolded: 32-bit
/// big-endian words summed into a 64-bit accumulator (folding them later
/// gives the same result as summing 16-bit words), eight bytes a step.
fn sum_be(b: &[u8]) -> u64 {
    let mut acc = 0u64;
    let mut c = b.chunks_exact(8);
    for w in &mut c {
        let w = u64::from_be_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]);
        acc += (w >> 32) + (w & 0xffff_ffff);
    }
    let r = c.remainder();
    let mut tail = [0u8; 8];
    tail[..r.len()].copy_from_slice(r);
    let w = u64::from_be_bytes(tail);
    acc + (w >> 32) + (w & 0xffff_ffff)
}

/// Folds an unfolded sum to 16 bits and complements it: the checksum field.
fn fold(mut acc: u64) -> u16 {
    while acc >> 16 != 0 {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

/// Most segments one packet is cut into; a packet that would give more
/// (a `gso_size` below 64 bytes: no kernel or tcpd sends that) is recorded
/// whole. Bounds the [`Segmenter`]'s buffers.
pub const MAX_SEGMENTS: usize = 1024;

/// TCP flags the cut treats specially.
const TCP_FIN: u8 = 0x01;
const TCP_PSH: u8 = 0x08;
const TCP_CWR: u8 = 0x80;

/// Cuts TSO/GSO super-packets into the segments the wire carries, and
/// completes partial checksums, as Linux's GSO does for a device without
/// offload (`tcp_gso_segment` and `inet_gso_segment` / `ipv6_gso_segment`):
/// each segment carries `gso_size` payload bytes (the last one the rest),
/// its sequence number advances by the payload before it, CWR stays only on
/// the first segment and FIN and PSH only on the last, the IPv4 identifier
/// increments per segment, the IPv4 total length / IPv6 payload length and
/// both checksums (IPv4 header, TCP) are those of the segment.
///
/// [`Segmenter::segment_parts`] hands out each segment as its headers (in a
/// buffer kept here) and its payload (a slice of the packet), so that a
/// pcap writer copies the payload only once, into its output; nothing is
/// allocated per packet once the header buffer has grown.
#[derive(Default)]
pub struct Segmenter {
    hdr: Vec<u8>,
    joined: Vec<u8>,
}

impl Segmenter {
    /// A segmenter with no buffers yet (they grow to the largest packet cut).
    pub fn new() -> Segmenter {
        Segmenter::default()
    }

    /// Calls `out(headers, payload)` for each packet the wire carries for
    /// `pkt`: the segments of a TCP packet of more than `gso_size` payload
    /// bytes (`gso_size` 0: no segmentation), else `pkt` itself (with an
    /// empty payload part) with its TCP checksum completed when `partial`
    /// (the field holds only the pseudo-header sum, folded, not
    /// complemented, as Linux leaves it for `CHECKSUM_PARTIAL` and
    /// `VIRTIO_NET_HDR_F_NEEDS_CSUM` means). A packet the cut does not
    /// apply to (not TCP, malformed, IPv6 extension headers) goes out as it
    /// is. Returns the number of packets passed to `out`; stops at `out`'s
    /// first error.
    pub fn segment_parts<E>(
        &mut self,
        pkt: &mut [u8],
        gso_size: u16,
        partial: bool,
        mut out: impl FnMut(&[u8], &[u8]) -> Result<(), E>,
    ) -> Result<usize, E> {
        let Some((iph, hl, v6)) = tcp_headers(pkt) else {
            return out(pkt, &[]).map(|()| 1);
        };
        let payload_len = pkt.len() - hl;
        let gso = usize::from(gso_size);
        if gso == 0 || payload_len <= gso || payload_len.div_ceil(gso) > MAX_SEGMENTS {
            if partial {
                // RFC 9293 §3.1: the checksum covers the pseudo-header
                // (already in the field) and the whole segment.
                let seed = u64::from(u16::from_be_bytes([pkt[iph + 16], pkt[iph + 17]]));
                pkt[iph + 16] = 0;
                pkt[iph + 17] = 0;
                let c = fold(seed + sum_be(&pkt[iph..]));
                pkt[iph + 16..iph + 18].copy_from_slice(&c.to_be_bytes());
            }
            return out(pkt, &[]).map(|()| 1);
        }
        let (head, payload) = pkt.split_at(hl);
        self.hdr.clear();
        self.hdr.extend_from_slice(head);
        let h = &mut self.hdr[..];
        // The pseudo-header's addresses and protocol, the same for every
        // segment (RFC 9293 §3.1; RFC 8200 §8.1 for IPv6).
        let addrs = if v6 {
            sum_be(&head[8..40])
        } else {
            sum_be(&head[12..20])
        } + 6;
        let id0 = u16::from_be_bytes([head[4], head[5]]);
        let seq0 = u32::from_be_bytes([head[iph + 4], head[iph + 5], head[iph + 6], head[iph + 7]]);
        let flags0 = head[iph + 13];
        let count = payload_len.div_ceil(gso);
        for (i, chunk) in payload.chunks(gso).enumerate() {
            let last = i + 1 == count;
            let tcp_len = hl - iph + chunk.len();
            if v6 {
                h[4..6].copy_from_slice(&((tcp_len + iph - 40) as u16).to_be_bytes());
            } else {
                // `inet_gso_segment`: the identifier counts up per segment.
                h[2..4].copy_from_slice(&((iph + tcp_len) as u16).to_be_bytes());
                h[4..6].copy_from_slice(&id0.wrapping_add(i as u16).to_be_bytes());
                h[10] = 0;
                h[11] = 0;
                let c = fold(sum_be(&h[..iph]));
                h[10..12].copy_from_slice(&c.to_be_bytes());
            }
            // `tcp_gso_segment`: the sequence number advances by the payload
            // before; CWR only on the first segment, FIN and PSH only on the
            // last.
            let seq = seq0.wrapping_add((i * gso) as u32);
            h[iph + 4..iph + 8].copy_from_slice(&seq.to_be_bytes());
            let mut f = flags0;
            if i > 0 {
                f &= !TCP_CWR;
            }
            if !last {
                f &= !(TCP_FIN | TCP_PSH);
            }
            h[iph + 13] = f;
            h[iph + 16] = 0;
            h[iph + 17] = 0;
            // The TCP header is a whole number of 32-bit words, so the
            // payload's sum lines up with the segment's.
            let sum = addrs + tcp_len as u64 + sum_be(&h[iph..hl]) + sum_be(chunk);
            h[iph + 16..iph + 18].copy_from_slice(&fold(sum).to_be_bytes());
            out(h, chunk)?;
        }
        Ok(count)
    }

    /// [`Segmenter::segment_parts`] with each packet handed out whole
    /// (copied into a buffer kept here).
    pub fn segment<E>(
        &mut self,
        pkt: &mut [u8],
        gso_size: u16,
        partial: bool,
        mut out: impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<usize, E> {
        let mut joined = std::mem::take(&mut self.joined);
        let r = self.segment_parts(pkt, gso_size, partial, |h, p| {
            joined.clear();
            joined.extend_from_slice(h);
            joined.extend_from_slice(p);
            out(&joined)
        });
        self.joined = joined;
        r
    }
}

/// IP header length, IP + TCP header length and family of a TCP packet
/// (IPv6 without extension headers: neither tcpd nor the local kernel sends
/// TCP behind any), or `None`.
fn tcp_headers(p: &[u8]) -> Option<(usize, usize, bool)> {
    let (iph, proto, v6) = ip_info(p)?;
    if proto != 6 || iph < 20 || p.len() < iph + 20 {
        return None;
    }
    let hl = iph + usize::from(p[iph + 12] >> 4) * 4;
    (hl >= iph + 20 && hl <= p.len()).then_some((iph, hl, v6))
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

    /// A TCP packet as the endpoint emits it with offload: `payload` bytes
    /// (byte i is `i % 251`), the checksum partial, IPv4 identifier 77.
    fn super_packet(v6: bool, payload: usize, flags: tcp::wire::TcpFlags) -> Vec<u8> {
        use tcp::wire::{emit_tcp_with, TcpOptions, TcpRepr};
        let (src, dst): (std::net::IpAddr, std::net::IpAddr) = if v6 {
            ("fd00::2".parse().unwrap(), "fd00::1".parse().unwrap())
        } else {
            ("10.0.0.2".parse().unwrap(), "10.0.0.1".parse().unwrap())
        };
        let repr = TcpRepr {
            src_port: 80,
            dst_port: 40000,
            seq: tcp::SeqNum(0xffff_f000),
            ack: tcp::SeqNum(5),
            flags,
            window: 1000,
            options: TcpOptions {
                timestamps: Some((7, 8)),
                ..TcpOptions::default()
            },
        };
        let iph = if v6 { 40 } else { 20 };
        let mut p = vec![0u8; iph + repr.header_len() + payload];
        emit_tcp_with(&mut p, src, dst, 64, &repr, payload, true).unwrap();
        if !v6 {
            // The identifier the kernel's GSO counts up from; the header
            // checksum again.
            p[4..6].copy_from_slice(&77u16.to_be_bytes());
            p[10..12].fill(0);
            let h = etherparse::Ipv4Header::from_slice(&p).unwrap().0;
            p[10..12].copy_from_slice(&h.calc_header_checksum().to_be_bytes());
        }
        let hl = p.len() - payload;
        for (i, b) in p[hl..].iter_mut().enumerate() {
            *b = (i % 251) as u8;
        }
        p
    }

    /// Checks one segment with etherparse (an independent implementation):
    /// IPv4 header checksum, TCP checksum; returns (IPv4 id or 0, seq,
    /// FIN, PSH, CWR, payload).
    fn verify(seg: &[u8]) -> (u16, u32, bool, bool, bool, Vec<u8>) {
        use etherparse::{NetSlice, SlicedPacket, TransportSlice};
        let s = SlicedPacket::from_ip(seg).unwrap();
        let Some(TransportSlice::Tcp(t)) = &s.transport else {
            panic!("not TCP");
        };
        let payload = t.payload().to_vec();
        let (id, calc) = match &s.net {
            Some(NetSlice::Ipv4(ip)) => {
                let h = ip.header().to_header();
                assert_eq!(
                    h.header_checksum,
                    h.calc_header_checksum(),
                    "IPv4 header checksum"
                );
                assert_eq!(usize::from(h.total_len), seg.len());
                let c = t.to_header().calc_checksum_ipv4(&h, &payload).unwrap();
                (h.identification, c)
            }
            Some(NetSlice::Ipv6(ip)) => {
                let h = ip.header().to_header();
                assert_eq!(usize::from(h.payload_length) + 40, seg.len());
                (0, t.to_header().calc_checksum_ipv6(&h, &payload).unwrap())
            }
            _ => panic!("not IP"),
        };
        assert_eq!(calc, t.checksum(), "TCP checksum");
        (id, t.sequence_number(), t.fin(), t.psh(), t.cwr(), payload)
    }

    #[test]
    fn a_super_packet_is_cut_as_the_kernels_gso_cuts_it() {
        use tcp::wire::TcpFlags;
        let flags = TcpFlags::ACK | TcpFlags::PSH | TcpFlags::FIN | TcpFlags(0x80);
        for v6 in [false, true] {
            let mut pkt = super_packet(v6, 3 * 1448 + 500, flags);
            let mut segs: Vec<Vec<u8>> = Vec::new();
            let mut seg = Segmenter::new();
            let n = seg
                .segment(&mut pkt, 1448, true, |s| {
                    segs.push(s.to_vec());
                    Ok::<(), ()>(())
                })
                .unwrap();
            assert_eq!((n, segs.len()), (4, 4));
            let mut data = Vec::new();
            for (i, s) in segs.iter().enumerate() {
                let (id, seq, fin, psh, cwr, payload) = verify(s);
                let last = i == 3;
                assert!(s.len() <= if v6 { 40 } else { 20 } + 32 + 1448);
                assert_eq!(id, if v6 { 0 } else { 77 + i as u16 }, "v6 {v6} seg {i}");
                // The sequence number wraps past 2^32 in the second segment.
                assert_eq!(seq, 0xffff_f000u32.wrapping_add(1448 * i as u32));
                assert_eq!((fin, psh, cwr), (last, last, i == 0), "v6 {v6} seg {i}");
                assert_eq!(payload.len(), if last { 500 } else { 1448 });
                data.extend_from_slice(&payload);
            }
            assert!(data.iter().enumerate().all(|(i, b)| *b == (i % 251) as u8));
            // The same cut as tun-rs's `gso_split` (a port of wireguard-go's).
            let mut pkt = super_packet(v6, 3 * 1448 + 500, flags);
            let hdr = tun_rs::VirtioNetHdr {
                flags: F_NEEDS_CSUM,
                gso_type: if v6 { GSO_TCPV6 } else { GSO_TCPV4 },
                hdr_len: (pkt.len() - 3 * 1448 - 500) as u16,
                gso_size: 1448,
                csum_start: if v6 { 40 } else { 20 },
                csum_offset: 16,
            };
            let mut bufs = vec![vec![0u8; 1600]; 4];
            let mut sizes = [0usize; 4];
            let n = tun_rs::gso_split(&mut pkt, hdr, &mut bufs, &mut sizes, 0, v6).unwrap();
            assert_eq!(n, 4);
            for (i, s) in segs.iter().enumerate() {
                assert_eq!(&bufs[i][..sizes[i]], &s[..], "v6 {v6} seg {i}");
            }
        }
    }

    #[test]
    fn a_packet_within_one_segment_gets_its_checksum_completed() {
        use tcp::wire::TcpFlags;
        for v6 in [false, true] {
            // No GSO, partial checksum; and GSO with a payload that fits.
            for gso in [0u16, 1448] {
                let mut pkt = super_packet(v6, 1001, TcpFlags::ACK | TcpFlags::PSH);
                let orig = pkt.clone();
                let mut out = Vec::new();
                let n = Segmenter::new().segment(&mut pkt, gso, true, |s| {
                    out = s.to_vec();
                    Ok::<(), ()>(())
                });
                assert_eq!(n, Ok(1));
                let (_, _, _, psh, _, payload) = verify(&out);
                assert!(psh);
                assert_eq!(payload.len(), 1001);
                // Only the checksum changed.
                let at = if v6 { 40 } else { 20 } + 16;
                assert_eq!(out[..at], orig[..at]);
                assert_eq!(out[at + 2..], orig[at + 2..]);
            }
        }
    }

    #[test]
    fn what_is_not_a_tcp_super_packet_goes_out_as_it_is() {
        for mut p in [vec![0x45u8, 0, 0, 4], vec![], vec![0x60; 30], {
            let mut icmp = vec![0u8; 3000];
            icmp[0] = 0x45;
            icmp[9] = 1;
            icmp
        }] {
            let orig = p.clone();
            let mut got = Vec::new();
            let n = Segmenter::new().segment(&mut p, 1448, true, |s| {
                got.push(s.to_vec());
                Ok::<(), ()>(())
            });
            assert_eq!((n, got), (Ok(1), vec![orig]));
        }
    }
}
