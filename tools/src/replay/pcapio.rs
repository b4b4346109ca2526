//! Classic pcap files (the format libpcap and tcpdump write): reading with
//! every link type a TCP capture is likely to use, and writing link type RAW
//! (what `tcpd --pcap` writes).
//!
//! Format: a 24-byte file header (magic `a1b2c3d4` for microsecond or
//! `a1b23c4d` for nanosecond timestamps, in either byte order, then the
//! version, snaplen and link type), then records of a 16-byte header
//! (seconds, sub-second part, captured length, original length) followed by
//! the captured bytes.

use std::fmt;
use std::path::Path;

/// Link types we can take IP packets out of.
const LINKTYPE_NULL: u32 = 0;
const LINKTYPE_ETHERNET: u32 = 1;
const LINKTYPE_RAW: u32 = 101;
const LINKTYPE_LOOP: u32 = 108;
const LINKTYPE_LINUX_SLL: u32 = 113;
const LINKTYPE_IPV4: u32 = 228;
const LINKTYPE_IPV6: u32 = 229;
const LINKTYPE_LINUX_SLL2: u32 = 276;

/// Why a capture cannot be used.
#[derive(Debug)]
pub enum PcapError {
    /// The file could not be read.
    Io(String, std::io::Error),
    /// Not a pcap file (wrong magic), or a pcapng file.
    NotPcap(String),
    /// The file ends inside a header or a packet.
    Truncated(String),
    /// A link type without IP packets, or a record that holds no IP packet.
    NotIp(String),
}

impl fmt::Display for PcapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PcapError::Io(p, e) => write!(f, "{p}: {e}"),
            PcapError::NotPcap(s) | PcapError::Truncated(s) | PcapError::NotIp(s) => f.write_str(s),
        }
    }
}

impl std::error::Error for PcapError {}

/// One captured IP packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// Capture time, microseconds since the Unix epoch.
    pub ts_us: u64,
    /// The IP packet (link-layer header removed).
    pub data: Vec<u8>,
}

/// Reads every record of a classic pcap file and returns the IP packets in
/// it. Records that carry something other than IPv4/IPv6 (ARP, for
/// instance, on an Ethernet capture) are skipped and counted in the second
/// value; a capture with no IP packet at all is an error.
pub fn read(path: &Path) -> Result<(Vec<Record>, usize), PcapError> {
    let name = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|e| PcapError::Io(name.clone(), e))?;
    parse(&name, &bytes)
}

/// [`read`] on bytes already in memory; `name` is used in messages.
pub fn parse(name: &str, bytes: &[u8]) -> Result<(Vec<Record>, usize), PcapError> {
    if bytes.len() < 24 {
        if bytes.len() >= 4 && is_magic(&bytes[..4]) {
            return Err(PcapError::Truncated(format!(
                "{name}: truncated capture: the file header needs 24 bytes, the file has {}",
                bytes.len()
            )));
        }
        return Err(PcapError::NotPcap(format!(
            "{name}: not a pcap file ({} bytes, no pcap header)",
            bytes.len()
        )));
    }
    let magic = [bytes[0], bytes[1], bytes[2], bytes[3]];
    let (big, nanos) = match magic {
        [0xd4, 0xc3, 0xb2, 0xa1] => (false, false),
        [0xa1, 0xb2, 0xc3, 0xd4] => (true, false),
        [0x4d, 0x3c, 0xb2, 0xa1] => (false, true),
        [0xa1, 0xb2, 0x3c, 0x4d] => (true, true),
        [0x0a, 0x0d, 0x0d, 0x0a] => {
            return Err(PcapError::NotPcap(format!(
                "{name}: a pcapng file; convert it with `editcap -F pcap {name} out.pcap`"
            )))
        }
        _ => {
            return Err(PcapError::NotPcap(format!(
                "{name}: not a pcap file (magic {:02x}{:02x}{:02x}{:02x})",
                magic[0], magic[1], magic[2], magic[3]
            )))
        }
    };
    let u32_at = |b: &[u8], off: usize| -> u32 {
        let a = [b[off], b[off + 1], b[off + 2], b[off + 3]];
        if big {
            u32::from_be_bytes(a)
        } else {
            u32::from_le_bytes(a)
        }
    };
    let linktype = u32_at(bytes, 20) & 0x0fff_ffff;
    let known = matches!(
        linktype,
        LINKTYPE_NULL
            | LINKTYPE_ETHERNET
            | LINKTYPE_RAW
            | 12
            | 14
            | LINKTYPE_LOOP
            | LINKTYPE_LINUX_SLL
            | LINKTYPE_IPV4
            | LINKTYPE_IPV6
            | LINKTYPE_LINUX_SLL2
    );
    if !known {
        return Err(PcapError::NotIp(format!(
            "{name}: link type {linktype} carries no IP packets this tool can read \
             (RAW, Ethernet, Linux cooked, loopback)"
        )));
    }
    let mut out = Vec::new();
    let mut skipped = 0usize;
    let mut off = 24usize;
    let mut n = 0usize;
    while off < bytes.len() {
        n += 1;
        if bytes.len() - off < 16 {
            return Err(PcapError::Truncated(format!(
                "{name}: truncated capture: record {n} header at byte {off} is cut short \
                 ({} of 16 bytes)",
                bytes.len() - off
            )));
        }
        let sec = u64::from(u32_at(bytes, off));
        let frac = u64::from(u32_at(bytes, off + 4));
        let incl = u32_at(bytes, off + 8) as usize;
        let orig = u32_at(bytes, off + 12) as usize;
        off += 16;
        if bytes.len() - off < incl {
            return Err(PcapError::Truncated(format!(
                "{name}: truncated capture: record {n} needs {incl} bytes, the file has {} left",
                bytes.len() - off
            )));
        }
        if incl < orig {
            return Err(PcapError::Truncated(format!(
                "{name}: record {n} was cut by the snap length ({incl} of {orig} bytes); \
                 record with a larger snaplen (tcpdump -s 0)"
            )));
        }
        let frame = &bytes[off..off + incl];
        off += incl;
        let ts_us = sec * 1_000_000 + if nanos { frac / 1000 } else { frac };
        match strip_link(linktype, frame) {
            Some(ip) if !ip.is_empty() && matches!(ip[0] >> 4, 4 | 6) => out.push(Record {
                ts_us,
                data: ip.to_vec(),
            }),
            _ => skipped += 1,
        }
    }
    if out.is_empty() {
        return Err(PcapError::NotIp(format!(
            "{name}: no IPv4 or IPv6 packet in the capture ({n} records)"
        )));
    }
    Ok((out, skipped))
}

fn is_magic(b: &[u8]) -> bool {
    matches!(
        b,
        [0xd4, 0xc3, 0xb2, 0xa1] | [0xa1, 0xb2, 0xc3, 0xd4] | [0x4d, 0x3c, 0xb2, 0xa1]
    )
}

/// The IP packet inside a link-layer frame, if it holds one.
fn strip_link(linktype: u32, f: &[u8]) -> Option<&[u8]> {
    let ethertype_ok = |t: u16| t == 0x0800 || t == 0x86dd;
    match linktype {
        LINKTYPE_RAW | 12 | 14 | LINKTYPE_IPV4 | LINKTYPE_IPV6 => Some(f),
        LINKTYPE_ETHERNET => {
            let mut off = 12;
            let mut t = u16::from_be_bytes([*f.get(off)?, *f.get(off + 1)?]);
            // 802.1Q / 802.1ad tags.
            while t == 0x8100 || t == 0x88a8 {
                off += 4;
                t = u16::from_be_bytes([*f.get(off)?, *f.get(off + 1)?]);
            }
            ethertype_ok(t).then(|| f.get(off + 2..)).flatten()
        }
        LINKTYPE_LINUX_SLL => {
            let t = u16::from_be_bytes([*f.get(14)?, *f.get(15)?]);
            ethertype_ok(t).then(|| f.get(16..)).flatten()
        }
        LINKTYPE_LINUX_SLL2 => {
            let t = u16::from_be_bytes([*f.first()?, *f.get(1)?]);
            ethertype_ok(t).then(|| f.get(20..)).flatten()
        }
        LINKTYPE_NULL | LINKTYPE_LOOP => {
            // A 4-byte address family, in the capturing host's byte order
            // (NULL) or big-endian (LOOP); AF_INET is 2, AF_INET6 varies.
            f.get(4..)
        }
        _ => None,
    }
}

/// Writes `records` as a classic pcap (microsecond timestamps, little
/// endian, link type RAW), as `tcpd --pcap` does.
pub fn write(path: &Path, records: &[Record]) -> std::io::Result<()> {
    let mut out = Vec::with_capacity(24 + records.iter().map(|r| 16 + r.data.len()).sum::<usize>());
    out.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&4u16.to_le_bytes());
    out.extend_from_slice(&0i32.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&65535u32.to_le_bytes());
    out.extend_from_slice(&LINKTYPE_RAW.to_le_bytes());
    for r in records {
        let sec = (r.ts_us / 1_000_000) as u32;
        let usec = (r.ts_us % 1_000_000) as u32;
        let len = r.data.len() as u32;
        out.extend_from_slice(&sec.to_le_bytes());
        out.extend_from_slice(&usec.to_le_bytes());
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&r.data);
    }
    let tmp = {
        let mut s = path.as_os_str().to_owned();
        s.push(".tmp");
        std::path::PathBuf::from(s)
    };
    std::fs::write(&tmp, &out)?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_truncation() {
        let dir = std::env::temp_dir().join(format!("tcpd-replay-pcapio-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("a.pcap");
        let recs = vec![
            Record {
                ts_us: 1_700_000_000_123_456,
                data: vec![0x45, 0, 0, 20, 1, 2, 3],
            },
            Record {
                ts_us: 1_700_000_001_000_001,
                data: vec![0x60, 9],
            },
        ];
        write(&p, &recs).unwrap();
        let (back, skipped) = read(&p).unwrap();
        assert_eq!(back, recs);
        assert_eq!(skipped, 0);
        let bytes = std::fs::read(&p).unwrap();
        let e = parse("x", &bytes[..bytes.len() - 1]).unwrap_err();
        assert!(matches!(e, PcapError::Truncated(_)), "{e}");
        assert!(e.to_string().contains("record 2"), "{e}");
        let e = parse("x", b"hello world, this is not a capture").unwrap_err();
        assert!(matches!(e, PcapError::NotPcap(_)), "{e}");
        let mut eth = bytes[..24].to_vec();
        eth[20] = 1; // Ethernet
        let frame = [[0u8; 12].as_slice(), &[0x08, 0x06], &[0; 28]].concat(); // ARP
        eth.extend_from_slice(&[0; 8]);
        eth.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        eth.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        eth.extend_from_slice(&frame);
        let e = parse("x", &eth).unwrap_err();
        assert!(matches!(e, PcapError::NotIp(_)), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
