//! A router's view of a TUN peer's (or a veth's) offloaded output: a
//! GSO/TSO "super-segment" described by a virtio-net header is cut into
//! segments of `gso_size` payload bytes, and a partial checksum
//! (`F_NEEDS_CSUM`) is completed, so that what leaves the relay is what a
//! wire would carry. Frames are Ethernet (AF_PACKET); offsets in the
//! header count from the start of the frame.

use daemon::offload::{VnetHdr, F_NEEDS_CSUM, GSO_NONE, GSO_TCPV4, GSO_TCPV6};
use tcp::wire::{checksum_fold, checksum_sum};

/// Ethernet header length (no VLAN tags: the relay's links carry none).
pub const ETH_LEN: usize = 14;

/// Why a frame could not be processed (it is counted and dropped).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Malformed {
    /// Shorter than its headers say, or a header field out of range.
    Truncated,
    /// A GSO type other than TCPv4/TCPv6, or GSO on a non-TCP packet.
    UnsupportedGso,
    /// A segment would not fit the scratch buffer.
    TooBig,
}

/// Completes a partial checksum in place: the field at `start + offset`
/// holds the pseudo-header sum; the one's complement of the sum from
/// `start` to the end goes there.
fn complete_csum(frame: &mut [u8], start: usize, offset: usize) -> Result<(), Malformed> {
    let field = start + offset;
    if start > frame.len() || field + 2 > frame.len() {
        return Err(Malformed::Truncated);
    }
    let c = checksum_fold(checksum_sum(0, &frame[start..]));
    frame[field..field + 2].copy_from_slice(&c.to_be_bytes());
    Ok(())
}

/// Computes the TCP checksum of the segment at `l4` (to the end of
/// `frame`) whole, with the IP header at `l3`.
fn tcp_csum(frame: &mut [u8], l3: usize, l4: usize, v6: bool) {
    let len = (frame.len() - l4) as u64;
    let mut sum = if v6 {
        checksum_sum(0, &frame[l3 + 8..l3 + 40])
    } else {
        checksum_sum(0, &frame[l3 + 12..l3 + 20])
    };
    sum += 6 + (len >> 16) + (len & 0xffff);
    frame[l4 + 16..l4 + 18].copy_from_slice(&[0, 0]);
    let c = checksum_fold(checksum_sum(sum, &frame[l4..]));
    frame[l4 + 16..l4 + 18].copy_from_slice(&c.to_be_bytes());
}

/// Turns one received frame and its virtio-net header into wire frames,
/// each written into `scratch` and handed to `emit`: the frame itself
/// (its checksum completed if partial), or its GSO segments. Returns how
/// many frames were emitted.
pub fn split(
    frame: &[u8],
    hdr: &VnetHdr,
    scratch: &mut [u8],
    mut emit: impl FnMut(&[u8]),
) -> Result<usize, Malformed> {
    if hdr.gso_type & 0x7f == GSO_NONE {
        let out = scratch.get_mut(..frame.len()).ok_or(Malformed::TooBig)?;
        out.copy_from_slice(frame);
        if hdr.flags & F_NEEDS_CSUM != 0 {
            complete_csum(
                out,
                usize::from(hdr.csum_start),
                usize::from(hdr.csum_offset),
            )?;
        }
        emit(out);
        return Ok(1);
    }
    let v6 = match hdr.gso_type & 0x7f {
        GSO_TCPV4 => false,
        GSO_TCPV6 => true,
        _ => return Err(Malformed::UnsupportedGso),
    };
    let l3 = ETH_LEN;
    let first = *frame.get(l3).ok_or(Malformed::Truncated)?;
    let (iph, proto) = if v6 {
        (40, *frame.get(l3 + 6).ok_or(Malformed::Truncated)?)
    } else {
        (
            usize::from(first & 0x0f) * 4,
            *frame.get(l3 + 9).ok_or(Malformed::Truncated)?,
        )
    };
    if (first >> 4) != if v6 { 6 } else { 4 } || iph < 20 {
        return Err(Malformed::Truncated);
    }
    if proto != 6 {
        return Err(Malformed::UnsupportedGso);
    }
    let l4 = l3 + iph;
    let doff = usize::from(*frame.get(l4 + 12).ok_or(Malformed::Truncated)? >> 4) * 4;
    let hlen = l4 + doff;
    if doff < 20 || frame.len() < hlen {
        return Err(Malformed::Truncated);
    }
    let mss = usize::from(hdr.gso_size);
    if mss == 0 {
        return Err(Malformed::Truncated);
    }
    let payload = &frame[hlen..];
    let seq0 = u32::from_be_bytes([frame[l4 + 4], frame[l4 + 5], frame[l4 + 6], frame[l4 + 7]]);
    let flags0 = frame[l4 + 13];
    let id0 = u16::from_be_bytes([frame[l3 + 4], frame[l3 + 5]]);
    let n = payload.len().div_ceil(mss).max(1);
    for i in 0..n {
        let chunk = &payload[(i * mss).min(payload.len())..((i + 1) * mss).min(payload.len())];
        let len = hlen + chunk.len();
        let out = scratch.get_mut(..len).ok_or(Malformed::TooBig)?;
        out[..hlen].copy_from_slice(&frame[..hlen]);
        out[hlen..].copy_from_slice(chunk);
        let ip_len = (len - l3) as u16;
        if v6 {
            out[l3 + 4..l3 + 6].copy_from_slice(&(ip_len - 40).to_be_bytes());
        } else {
            out[l3 + 2..l3 + 4].copy_from_slice(&ip_len.to_be_bytes());
            out[l3 + 4..l3 + 6].copy_from_slice(&id0.wrapping_add(i as u16).to_be_bytes());
            out[l3 + 10..l3 + 12].copy_from_slice(&[0, 0]);
            let c = checksum_fold(checksum_sum(0, &out[l3..l4]));
            out[l3 + 10..l3 + 12].copy_from_slice(&c.to_be_bytes());
        }
        let seq = seq0.wrapping_add((i * mss) as u32);
        out[l4 + 4..l4 + 8].copy_from_slice(&seq.to_be_bytes());
        // FIN and PSH only on the last segment, CWR only on the first (as
        // the kernel's tcp_gso_segment).
        let mut flags = flags0;
        if i + 1 < n {
            flags &= !(0x01 | 0x08);
        }
        if i > 0 {
            flags &= !0x80;
        }
        out[l4 + 13] = flags;
        tcp_csum(out, l3, l4, v6);
        emit(out);
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An Ethernet + IPv4 + TCP frame with `payload`, checksums whole.
    fn frame4(payload: &[u8], flags: u8) -> Vec<u8> {
        let mut f = vec![0u8; ETH_LEN + 40];
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        let ip = ETH_LEN;
        f[ip] = 0x45;
        f[ip + 4..ip + 6].copy_from_slice(&100u16.to_be_bytes());
        f[ip + 8] = 64;
        f[ip + 9] = 6;
        f[ip + 12..ip + 16].copy_from_slice(&[10, 0, 0, 2]);
        f[ip + 16..ip + 20].copy_from_slice(&[10, 0, 0, 1]);
        let t = ip + 20;
        f[t..t + 2].copy_from_slice(&80u16.to_be_bytes());
        f[t + 2..t + 4].copy_from_slice(&4000u16.to_be_bytes());
        f[t + 4..t + 8].copy_from_slice(&1000u32.to_be_bytes());
        f[t + 12] = 5 << 4;
        f[t + 13] = flags;
        f.extend_from_slice(payload);
        let len = (f.len() - ip) as u16;
        f[ip + 2..ip + 4].copy_from_slice(&len.to_be_bytes());
        let c = checksum_fold(checksum_sum(0, &f[ip..t]));
        f[ip + 10..ip + 12].copy_from_slice(&c.to_be_bytes());
        tcp_csum(&mut f, ip, t, false);
        f
    }

    fn verifies(f: &[u8]) -> bool {
        let (ip, t) = (ETH_LEN, ETH_LEN + 20);
        let len = (f.len() - t) as u64;
        let ph = checksum_sum(0, &f[ip + 12..ip + 20]) + 6 + len;
        checksum_fold(checksum_sum(0, &f[ip..t])) == 0
            && checksum_fold(checksum_sum(ph, &f[t..])) == 0
    }

    #[test]
    fn gso_packet_cut_at_gso_size_with_valid_checksums() {
        let payload: Vec<u8> = (0..3000u32).map(|i| (i % 251) as u8).collect();
        let big = frame4(&payload, 0x18 | 0x01); // PSH ACK FIN
        let hdr = VnetHdr {
            gso_type: GSO_TCPV4,
            gso_size: 1448,
            hdr_len: 54,
            flags: F_NEEDS_CSUM,
            csum_start: 34,
            csum_offset: 16,
        };
        let mut scratch = vec![0u8; 2048];
        let mut segs = Vec::new();
        let n = split(&big, &hdr, &mut scratch, |s| segs.push(s.to_vec())).unwrap();
        assert_eq!(n, 3);
        let mut joined = Vec::new();
        for (i, s) in segs.iter().enumerate() {
            assert!(verifies(s), "segment {i} checksums");
            let seq = u32::from_be_bytes([s[38], s[39], s[40], s[41]]);
            assert_eq!(seq, 1000 + 1448 * i as u32);
            let fin_psh = s[47] & 0x09;
            assert_eq!(fin_psh != 0, i == 2);
            joined.extend_from_slice(&s[54..]);
        }
        assert_eq!(segs[0].len(), 54 + 1448);
        assert_eq!(segs[2].len(), 54 + 3000 - 2 * 1448);
        assert_eq!(joined, payload);
    }

    #[test]
    fn partial_checksum_completed() {
        let mut f = frame4(b"hello", 0x18);
        // As the kernel hands it over: the field holds the pseudo-header sum.
        let (ip, t) = (ETH_LEN, ETH_LEN + 20);
        let len = (f.len() - t) as u64;
        let ph = checksum_sum(0, &f[ip + 12..ip + 20]) + 6 + len;
        let partial = !checksum_fold(ph);
        f[t + 16..t + 18].copy_from_slice(&partial.to_be_bytes());
        assert!(!verifies(&f));
        let hdr = VnetHdr {
            flags: F_NEEDS_CSUM,
            csum_start: t as u16,
            csum_offset: 16,
            ..Default::default()
        };
        let mut scratch = vec![0u8; 2048];
        let mut out = Vec::new();
        split(&f, &hdr, &mut scratch, |s| out = s.to_vec()).unwrap();
        assert!(verifies(&out));
    }

    #[test]
    fn malformed_gso_refused() {
        let f = frame4(b"x", 0x10);
        let hdr = VnetHdr {
            gso_type: 3, // UDP
            gso_size: 100,
            ..Default::default()
        };
        let mut scratch = vec![0u8; 2048];
        assert_eq!(
            split(&f, &hdr, &mut scratch, |_| ()),
            Err(Malformed::UnsupportedGso)
        );
        let hdr = VnetHdr {
            gso_type: GSO_TCPV4,
            gso_size: 100,
            ..Default::default()
        };
        assert_eq!(
            split(&f[..30], &hdr, &mut scratch, |_| ()),
            Err(Malformed::Truncated)
        );
    }
}
