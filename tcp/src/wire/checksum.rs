//! The Internet checksum (RFC 1071) and the TCP/ICMPv6 pseudo-headers
//! (RFC 9293 §3.1, RFC 8200 §8.1).

use std::net::IpAddr;

/// The ones-complement sum of `data` (as big-endian 16-bit words) added to
/// `initial`, not yet folded. An odd trailing byte is padded with zero.
pub fn checksum_sum(initial: u64, data: &[u8]) -> u64 {
    let mut sum = initial;
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        let w = u64::from_be_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
        // Add as two 32-bit halves so carries are never lost.
        sum += (w >> 32) + (w & 0xffff_ffff);
    }
    let rest = chunks.remainder();
    let mut pairs = rest.chunks_exact(2);
    for p in &mut pairs {
        sum += u64::from(u16::from_be_bytes([p[0], p[1]]));
    }
    if let [b] = pairs.remainder() {
        sum += u64::from(*b) << 8;
    }
    sum
}

/// Folds a sum to 16 bits and complements it: the value to put on the wire.
/// A packet whose checksum field is included in the sum verifies when this
/// returns 0.
pub fn checksum_fold(mut sum: u64) -> u16 {
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The sum of the pseudo-header for an upper-layer protocol: addresses,
/// protocol and upper-layer length (RFC 9293 §3.1 for IPv4, RFC 8200 §8.1 for
/// IPv6). `src` and `dst` must be of one family.
pub fn pseudo_header_sum(src: IpAddr, dst: IpAddr, protocol: u8, len: u32) -> u64 {
    let mut sum = 0u64;
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            sum = checksum_sum(sum, &s.octets());
            sum = checksum_sum(sum, &d.octets());
        }
        (s, d) => {
            sum = checksum_sum(sum, &to16(s));
            sum = checksum_sum(sum, &to16(d));
        }
    }
    sum + u64::from(protocol) + u64::from(len >> 16) + u64::from(len & 0xffff)
}

fn to16(a: IpAddr) -> [u8; 16] {
    match a {
        IpAddr::V4(v) => v.to_ipv6_mapped().octets(),
        IpAddr::V6(v) => v.octets(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc1071_example() {
        // RFC 1071 §3: the words 0001 f203 f4f5 f6f7 sum to ddf2 (folded).
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(checksum_fold(checksum_sum(0, &data)), !0xddf2);
    }

    #[test]
    fn odd_length_and_chunking_agree() {
        let data: Vec<u8> = (0..101u32).map(|i| (i * 37 % 256) as u8).collect();
        let mut slow = 0u64;
        for p in data.chunks(2) {
            let hi = u64::from(p[0]) << 8;
            let lo = p.get(1).map_or(0, |b| u64::from(*b));
            slow += hi | lo;
        }
        assert_eq!(checksum_fold(checksum_sum(0, &data)), checksum_fold(slow));
    }
}
