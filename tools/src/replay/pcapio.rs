//! Capture files: reading classic pcap (what libpcap and tcpdump write)
//! and pcapng (what Wireshark and dumpcap write), with every link type a TCP
//! capture is likely to use, and writing classic pcap with link type RAW
//! (what `tcpd --pcap` writes).
//!
//! Classic pcap: a 24-byte file header (magic `a1b2c3d4` for microsecond or
//! `a1b23c4d` for nanosecond timestamps, in either byte order, then the
//! version, snaplen and link type), then records of a 16-byte header
//! (seconds, sub-second part, captured length, original length) followed by
//! the captured bytes.
//!
//! pcapng (RFC draft "PCAP Next Generation Dump File Format"): a sequence
//! of blocks, each `type, total length, body, total length` (32-bit words,
//! padded to 4 bytes). A Section Header Block (type `0a0d0d0a`) starts each
//! section and gives its byte order (magic `1a2b3c4d`); Interface
//! Description Blocks (type 1) give each interface's link type and
//! timestamp resolution (`if_tsresol`, default µs) and offset
//! (`if_tsoffset`, seconds); packets come in Enhanced Packet Blocks (type
//! 6), obsolete Packet Blocks (type 2) or Simple Packet Blocks (type 3, no
//! timestamp: they get the previous packet's). Other blocks (name
//! resolution, statistics, custom) are skipped.

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
    /// Not a pcap or pcapng file (wrong magic), or a malformed one.
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

/// Reads every record of a classic pcap or pcapng file and returns the IP
/// packets in it. Records that carry something other than IPv4/IPv6 (ARP, for
/// instance, on an Ethernet capture) are skipped and counted in the second
/// value; a capture with no IP packet at all is an error.
pub fn read(path: &Path) -> Result<(Vec<Record>, usize), PcapError> {
    let name = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|e| PcapError::Io(name.clone(), e))?;
    parse(&name, &bytes)
}

/// [`read`] on bytes already in memory; `name` is used in messages.
pub fn parse(name: &str, bytes: &[u8]) -> Result<(Vec<Record>, usize), PcapError> {
    if bytes.starts_with(&PCAPNG_SHB) {
        return parse_pcapng(name, bytes);
    }
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
    if !known_linktype(linktype) {
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
        let frame = &bytes[off..off + incl];
        off += incl;
        // At most (2^32 - 1) * 10^6 + 2^32: no overflow, below MAX_TS_US.
        let ts_us = sec * 1_000_000 + if nanos { frac / 1000 } else { frac };
        // A cut frame that carries no IP (ARP) is skipped like a whole one.
        let Some(ip) =
            strip_link(linktype, frame).filter(|ip| !ip.is_empty() && matches!(ip[0] >> 4, 4 | 6))
        else {
            skipped += 1;
            continue;
        };
        if incl < orig {
            return Err(PcapError::Truncated(format!(
                "{name}: record {n} was cut by the snap length ({incl} of {orig} bytes); \
                 record with a larger snaplen (tcpdump -s 0)"
            )));
        }
        out.push(Record {
            ts_us,
            data: ip.to_vec(),
        });
    }
    if out.is_empty() {
        return Err(PcapError::NotIp(format!(
            "{name}: no IPv4 or IPv6 packet in the capture ({n} records)"
        )));
    }
    Ok((out, skipped))
}

/// Whether [`strip_link`] can take IP packets out of this link type's frames.
fn known_linktype(linktype: u32) -> bool {
    matches!(
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
    )
}

/// The block type of a pcapng Section Header Block (a palindrome: the same
/// in both byte orders), which starts every pcapng file.
const PCAPNG_SHB: [u8; 4] = [0x0a, 0x0d, 0x0d, 0x0a];
/// The byte-order magic inside a Section Header Block.
const PCAPNG_BYTE_ORDER: u32 = 0x1a2b_3c4d;
/// Most interfaces one pcapng section may describe (a bound on memory).
const PCAPNG_MAX_INTERFACES: usize = 4096;

/// An interface of a pcapng section, as its packets need it.
#[derive(Clone, Copy)]
struct NgInterface {
    linktype: u32,
    /// Timestamp units: `10^-n` s (`pow2` false) or `2^-n` s.
    resol: u8,
    pow2: bool,
    /// Added to every timestamp, seconds (`if_tsoffset`).
    offset_s: i64,
}

/// The latest capture time a record may have, µs since the epoch: the end
/// of the year 9999. A later one comes from a wrong `if_tsresol` or
/// `if_tsoffset` or a corrupt file; refusing it keeps every time
/// computation of a replay (times plus timer intervals) far from `u64`
/// overflow. Classic pcap's 32-bit seconds end in 2106, well before.
pub const MAX_TS_US: u64 = 253_402_300_799_999_999;

impl NgInterface {
    /// A timestamp in this interface's units as µs since the epoch; `None`
    /// after [`MAX_TS_US`]. One before the epoch (a negative offset) is 0.
    fn micros(&self, ts: u64) -> Option<u64> {
        // u64 * 10^6 and the offset in µs both fit in i128 with room to spare.
        let ts = u128::from(ts);
        let us = if self.pow2 {
            (ts * 1_000_000) >> self.resol.min(127)
        } else if self.resol >= 6 {
            ts / 10u128.pow(u32::from(self.resol.min(38)) - 6)
        } else {
            ts * 10u128.pow(6 - u32::from(self.resol))
        };
        let us = i128::try_from(us).ok()? + i128::from(self.offset_s) * 1_000_000;
        u64::try_from(us.max(0)).ok().filter(|&us| us <= MAX_TS_US)
    }
}

/// Reads the options of a pcapng block (`code, length, value` padded to 4
/// bytes, up to `opt_endofopt`), calling `f(code, value)` for each.
fn ng_options(body: &[u8], u16_at: &dyn Fn(&[u8], usize) -> u16, f: &mut dyn FnMut(u16, &[u8])) {
    let mut off = 0;
    while off + 4 <= body.len() {
        let code = u16_at(body, off);
        let len = usize::from(u16_at(body, off + 2));
        if code == 0 {
            return;
        }
        let Some(value) = body.get(off + 4..off + 4 + len) else {
            return;
        };
        f(code, value);
        off += 4 + len.div_ceil(4) * 4;
    }
}

/// [`parse`] for a pcapng file (see the module documentation).
fn parse_pcapng(name: &str, bytes: &[u8]) -> Result<(Vec<Record>, usize), PcapError> {
    let mut big = false;
    let mut ifaces: Vec<NgInterface> = Vec::new();
    let mut out = Vec::new();
    let mut skipped = 0usize;
    let mut unsupported: Vec<u32> = Vec::new();
    let mut packets = 0usize;
    let mut last_ts = 0u64;
    let mut off = 0usize;
    let mut n = 0usize;
    let rd32 = |big: bool, b: &[u8], o: usize| -> u32 {
        let a = [b[o], b[o + 1], b[o + 2], b[o + 3]];
        if big {
            u32::from_be_bytes(a)
        } else {
            u32::from_le_bytes(a)
        }
    };
    while off < bytes.len() {
        n += 1;
        let left = bytes.len() - off;
        if left < 12 {
            return Err(PcapError::Truncated(format!(
                "{name}: truncated capture: pcapng block {n} at byte {off} is cut short \
                 ({left} bytes, a block has at least 12)"
            )));
        }
        let is_shb = bytes[off..off + 4] == PCAPNG_SHB;
        if is_shb {
            // A new section: its byte order, from the magic after the length.
            if left < 28 {
                return Err(PcapError::Truncated(format!(
                    "{name}: truncated capture: pcapng section header at byte {off} is cut \
                     short ({left} of at least 28 bytes)"
                )));
            }
            let m = [
                bytes[off + 8],
                bytes[off + 9],
                bytes[off + 10],
                bytes[off + 11],
            ];
            big = if u32::from_le_bytes(m) == PCAPNG_BYTE_ORDER {
                false
            } else if u32::from_be_bytes(m) == PCAPNG_BYTE_ORDER {
                true
            } else {
                return Err(PcapError::NotPcap(format!(
                    "{name}: pcapng section header at byte {off} has no byte-order magic \
                     (not a pcapng file?)"
                )));
            };
            ifaces.clear();
        }
        let btype = rd32(big, bytes, off);
        let total = rd32(big, bytes, off + 4) as usize;
        if total < 12 || total % 4 != 0 {
            return Err(PcapError::NotPcap(format!(
                "{name}: corrupt pcapng block {n} at byte {off}: length {total}"
            )));
        }
        if total > left {
            return Err(PcapError::Truncated(format!(
                "{name}: truncated capture: pcapng block {n} needs {total} bytes, the file has \
                 {left} left"
            )));
        }
        if rd32(big, bytes, off + total - 4) as usize != total {
            return Err(PcapError::NotPcap(format!(
                "{name}: corrupt pcapng block {n} at byte {off}: its two lengths differ"
            )));
        }
        let body = &bytes[off + 8..off + total - 4];
        off += total;
        let u16_at = |b: &[u8], o: usize| -> u16 {
            let a = [b[o], b[o + 1]];
            if big {
                u16::from_be_bytes(a)
            } else {
                u16::from_le_bytes(a)
            }
        };
        let u32_at = |b: &[u8], o: usize| rd32(big, b, o);
        let short = |what: &str| {
            PcapError::NotPcap(format!(
                "{name}: corrupt pcapng block {n}: {what} is shorter than its fixed fields"
            ))
        };
        // (interface, timestamp, captured bytes, original length)
        let pkt: Option<(usize, Option<u64>, &[u8], usize)> = match btype {
            0x0a0d_0d0a => None,
            1 => {
                if body.len() < 8 {
                    return Err(short("an interface description"));
                }
                if ifaces.len() >= PCAPNG_MAX_INTERFACES {
                    return Err(PcapError::NotPcap(format!(
                        "{name}: more than {PCAPNG_MAX_INTERFACES} interfaces in one section"
                    )));
                }
                let mut iface = NgInterface {
                    linktype: u32::from(u16_at(body, 0)),
                    resol: 6,
                    pow2: false,
                    offset_s: 0,
                };
                ng_options(&body[8..], &u16_at, &mut |code, v| match (code, v) {
                    (9, [r]) => {
                        iface.pow2 = r & 0x80 != 0;
                        iface.resol = r & 0x7f;
                    }
                    (14, v) if v.len() == 8 => {
                        let mut a = [0u8; 8];
                        a.copy_from_slice(v);
                        iface.offset_s = if big {
                            i64::from_be_bytes(a)
                        } else {
                            i64::from_le_bytes(a)
                        };
                    }
                    _ => {}
                });
                ifaces.push(iface);
                None
            }
            // Enhanced Packet Block (6), and the obsolete Packet Block (2)
            // whose 16-bit interface id is followed by a drop count: the
            // same fixed fields otherwise.
            6 | 2 => {
                let what = if btype == 6 {
                    "an enhanced packet"
                } else {
                    "a packet block"
                };
                if body.len() < 20 {
                    return Err(short(what));
                }
                let iface = if btype == 6 {
                    u32_at(body, 0) as usize
                } else {
                    usize::from(u16_at(body, 0))
                };
                let ts = (u64::from(u32_at(body, 4)) << 32) | u64::from(u32_at(body, 8));
                let cap = u32_at(body, 12) as usize;
                let orig = u32_at(body, 16) as usize;
                let data = body
                    .get(20..20usize.saturating_add(cap))
                    .ok_or_else(|| short(&format!("{what}'s data")))?;
                Some((iface, Some(ts), data, orig))
            }
            3 => {
                if body.len() < 4 {
                    return Err(short("a simple packet"));
                }
                let orig = u32_at(body, 0) as usize;
                let data = &body[4..];
                let data = &data[..orig.min(data.len())];
                Some((0, None, data, orig))
            }
            _ => None,
        };
        let Some((if_id, ts, data, orig)) = pkt else {
            continue;
        };
        packets += 1;
        let iface = *ifaces.get(if_id).ok_or_else(|| {
            PcapError::NotPcap(format!(
                "{name}: pcapng packet {packets} (block {n}) names interface {if_id}, which \
                 its section does not describe"
            ))
        })?;
        // A time after MAX_TS_US: refused below if the record is kept.
        let ts_us = match ts {
            Some(t) => iface.micros(t),
            None => Some(last_ts),
        };
        if let Some(t) = ts_us {
            last_ts = t;
        }
        if !known_linktype(iface.linktype) {
            if !unsupported.contains(&iface.linktype) {
                unsupported.push(iface.linktype);
            }
            skipped += 1;
            continue;
        }
        // Only records that carry IP matter: a cut frame of another kind
        // (ARP, or anything on a non-IP interface) is skipped like whole ones.
        let Some(ip) = strip_link(iface.linktype, data)
            .filter(|ip| !ip.is_empty() && matches!(ip[0] >> 4, 4 | 6))
        else {
            skipped += 1;
            continue;
        };
        if data.len() < orig {
            return Err(PcapError::Truncated(format!(
                "{name}: record {packets} was cut by the snap length ({} of {orig} bytes); \
                 record with a larger snaplen (tcpdump -s 0)",
                data.len()
            )));
        }
        let Some(ts_us) = ts_us else {
            return Err(PcapError::NotPcap(format!(
                "{name}: pcapng packet {packets} (block {n}) has a timestamp after the year \
                 9999 ({} in units of {}{} s, offset {} s): a wrong if_tsresol or if_tsoffset, \
                 or a corrupt file",
                ts.unwrap_or(0),
                if iface.pow2 { "2^-" } else { "10^-" },
                iface.resol,
                iface.offset_s
            )));
        };
        out.push(Record {
            ts_us,
            data: ip.to_vec(),
        });
    }
    if out.is_empty() {
        let why = if unsupported.is_empty() {
            String::new()
        } else {
            format!(
                "; link types {unsupported:?} carry no IP packets this tool can read \
                 (RAW, Ethernet, Linux cooked, loopback)"
            )
        };
        return Err(PcapError::NotIp(format!(
            "{name}: no IPv4 or IPv6 packet in the capture ({packets} packets{why})"
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
        let dir = crate::replay::TempDir::new("replay-pcapio");
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
    }

    /// A pcapng block: type, length, body padded to 4 bytes, length.
    fn block(big: bool, btype: u32, body: &[u8]) -> Vec<u8> {
        let w = |v: u32| {
            if big {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            }
        };
        let pad = body.len().div_ceil(4) * 4;
        let total = (12 + pad) as u32;
        let mut b = Vec::new();
        b.extend_from_slice(&w(btype));
        b.extend_from_slice(&w(total));
        b.extend_from_slice(body);
        b.resize(8 + pad, 0);
        b.extend_from_slice(&w(total));
        b
    }

    /// A small pcapng by hand: two sections (little, then big endian),
    /// binary and decimal timestamp resolutions, a timestamp offset, and
    /// the three packet block kinds.
    fn handmade() -> Vec<u8> {
        let mut f = Vec::new();
        for big in [false, true] {
            let w16 = |v: u16| {
                if big {
                    v.to_be_bytes()
                } else {
                    v.to_le_bytes()
                }
            };
            let w32 = |v: u32| {
                if big {
                    v.to_be_bytes()
                } else {
                    v.to_le_bytes()
                }
            };
            let mut shb = w32(0x1a2b_3c4d).to_vec();
            shb.extend_from_slice(&w16(1));
            shb.extend_from_slice(&w16(0));
            shb.extend_from_slice(&[0xff; 8]);
            f.extend(block(big, 0x0a0d_0d0a, &shb));
            // Interface 0: RAW, 2^-10 s units, offset 1000 s.
            let mut idb = w16(101).to_vec();
            idb.extend_from_slice(&[0, 0]);
            idb.extend_from_slice(&w32(0));
            idb.extend_from_slice(&w16(9));
            idb.extend_from_slice(&w16(1));
            idb.extend_from_slice(&[0x80 | 10, 0, 0, 0]);
            idb.extend_from_slice(&w16(14));
            idb.extend_from_slice(&w16(8));
            idb.extend_from_slice(&if big {
                1000i64.to_be_bytes()
            } else {
                1000i64.to_le_bytes()
            });
            idb.extend_from_slice(&[0, 0, 0, 0]);
            f.extend(block(big, 1, &idb));
            // An enhanced packet at 2048 units = 2 s (+ 1000 s offset).
            let ip = [0x45u8, 0, 0, 20, 9, 9, 9];
            let mut epb = w32(0).to_vec();
            epb.extend_from_slice(&w32(0));
            epb.extend_from_slice(&w32(2048));
            epb.extend_from_slice(&w32(ip.len() as u32));
            epb.extend_from_slice(&w32(ip.len() as u32));
            epb.extend_from_slice(&ip);
            f.extend(block(big, 6, &epb));
            // A name resolution block: skipped.
            f.extend(block(big, 4, &[0, 0, 0, 0]));
            // A simple packet: no timestamp, gets the previous one.
            let ip6 = [0x60u8, 1, 2, 3];
            let mut spb = w32(ip6.len() as u32).to_vec();
            spb.extend_from_slice(&ip6);
            f.extend(block(big, 3, &spb));
            // An obsolete packet block at 3072 units = 3 s.
            let mut pb = w16(0).to_vec();
            pb.extend_from_slice(&w16(0));
            pb.extend_from_slice(&w32(0));
            pb.extend_from_slice(&w32(3072));
            pb.extend_from_slice(&w32(ip.len() as u32));
            pb.extend_from_slice(&w32(ip.len() as u32));
            pb.extend_from_slice(&ip);
            f.extend(block(big, 2, &pb));
        }
        f
    }

    #[test]
    fn pcapng_sections_resolutions_and_block_kinds() {
        let f = handmade();
        let (recs, skipped) = parse("x.pcapng", &f).unwrap();
        assert_eq!(skipped, 0);
        let ts: Vec<u64> = recs.iter().map(|r| r.ts_us).collect();
        assert_eq!(
            ts,
            [1_002_000_000, 1_002_000_000, 1_003_000_000].repeat(2),
            "{recs:?}"
        );
        assert_eq!(recs[0].data, [0x45, 0, 0, 20, 9, 9, 9]);
        assert_eq!(recs[1].data, [0x60, 1, 2, 3]);
        // A packet naming an interface its section does not have.
        let mut bad = f.clone();
        let epb_if = f.windows(4).position(|w| w == [6, 0, 0, 0]).unwrap() + 8;
        bad[epb_if] = 7;
        let e = parse("x.pcapng", &bad).unwrap_err();
        assert!(e.to_string().contains("interface 7"), "{e}");
        // The section header's trailing length (bytes 24..28) disagrees
        // with its leading one.
        let mut bad = f.clone();
        bad[24] ^= 0x40;
        let e = parse("x.pcapng", &bad).unwrap_err();
        assert!(e.to_string().contains("two lengths differ"), "{e}");
        // Truncated anywhere: an error or fewer packets, never a panic;
        // and any single corrupted byte likewise.
        for cut in 0..f.len() {
            if let Ok((r, _)) = parse("x.pcapng", &f[..cut]) {
                assert!(r.len() < recs.len());
            }
        }
        for i in 0..f.len() {
            for x in [0x01u8, 0x80, 0xff] {
                let mut g = f.clone();
                g[i] ^= x;
                let _ = parse("x.pcapng", &g);
            }
        }
    }

    /// A little-endian pcapng: one section, interfaces `(link type,
    /// if_tsoffset)` with µs timestamps, and enhanced packets
    /// `(interface, timestamp, captured bytes, original length)`.
    fn ng(ifaces: &[(u16, Option<i64>)], pkts: &[(u32, u64, &[u8], u32)]) -> Vec<u8> {
        let mut f = Vec::new();
        let mut shb = 0x1a2b_3c4du32.to_le_bytes().to_vec();
        shb.extend_from_slice(&1u16.to_le_bytes());
        shb.extend_from_slice(&0u16.to_le_bytes());
        shb.extend_from_slice(&[0xff; 8]);
        f.extend(block(false, 0x0a0d_0d0a, &shb));
        for (lt, offset) in ifaces {
            let mut idb = lt.to_le_bytes().to_vec();
            idb.extend_from_slice(&[0, 0]);
            idb.extend_from_slice(&0u32.to_le_bytes());
            if let Some(o) = offset {
                idb.extend_from_slice(&14u16.to_le_bytes());
                idb.extend_from_slice(&8u16.to_le_bytes());
                idb.extend_from_slice(&o.to_le_bytes());
                idb.extend_from_slice(&[0, 0, 0, 0]);
            }
            f.extend(block(false, 1, &idb));
        }
        for (i, ts, data, orig) in pkts {
            let mut epb = i.to_le_bytes().to_vec();
            epb.extend_from_slice(&((ts >> 32) as u32).to_le_bytes());
            epb.extend_from_slice(&(*ts as u32).to_le_bytes());
            epb.extend_from_slice(&(data.len() as u32).to_le_bytes());
            epb.extend_from_slice(&orig.to_le_bytes());
            epb.extend_from_slice(data);
            f.extend(block(false, 6, &epb));
        }
        f
    }

    const IP: &[u8] = &[0x45, 0, 0, 20, 1, 2, 3, 4];
    const USB: u16 = 189;

    /// Timestamps past the year 9999 (which would overflow the replay's
    /// time arithmetic near u64::MAX) are refused with a clear error; on a
    /// record that is skipped anyway they do not matter.
    #[test]
    fn absurd_pcapng_timestamps_are_refused() {
        let ok = ng(&[(101, None)], &[(0, MAX_TS_US, IP, 8)]);
        assert_eq!(parse("x", &ok).unwrap().0[0].ts_us, MAX_TS_US);
        for f in [
            ng(&[(101, None)], &[(0, u64::MAX, IP, 8)]),
            ng(&[(101, None)], &[(0, MAX_TS_US + 1, IP, 8)]),
            ng(&[(101, Some(i64::MAX))], &[(0, 1, IP, 8)]),
        ] {
            let e = parse("x.pcapng", &f).unwrap_err();
            assert!(matches!(e, PcapError::NotPcap(_)), "{e}");
            assert!(e.to_string().contains("after the year 9999"), "{e}");
        }
        // Before the epoch: time 0.
        let f = ng(&[(101, Some(i64::MIN))], &[(0, u64::MAX, IP, 8)]);
        assert_eq!(parse("x", &f).unwrap().0[0].ts_us, 0);
        // On a non-IP interface the record is skipped, its time unused.
        let f = ng(
            &[(USB, None), (101, None)],
            &[(0, u64::MAX, &[0; 8], 8), (1, 5, IP, 8)],
        );
        let (recs, skipped) = parse("x", &f).unwrap();
        assert_eq!((recs.len(), skipped, recs[0].ts_us), (1, 1, 5));
    }

    /// A frame cut by the snap length fails the file only if it carries IP
    /// (the replay would miss bytes): a cut frame on a non-IP interface, or
    /// a cut ARP frame, is skipped like a whole one.
    #[test]
    fn snap_length_matters_only_for_ip_records() {
        let f = ng(
            &[(USB, None), (101, None)],
            &[(0, 1, &[0; 8], 64), (1, 2, IP, 8)],
        );
        let (recs, skipped) = parse("x", &f).unwrap();
        assert_eq!((recs.len(), skipped), (1, 1));
        let arp = [[0u8; 12].as_slice(), &[0x08, 0x06], &[0; 14]].concat();
        let f = ng(
            &[(1, None), (101, None)],
            &[(0, 1, &arp, 42), (1, 2, IP, 8)],
        );
        assert_eq!(parse("x", &f).unwrap().1, 1);
        let f = ng(&[(101, None)], &[(0, 1, IP, 9)]);
        let e = parse("x", &f).unwrap_err();
        assert!(matches!(e, PcapError::Truncated(_)), "{e}");
        assert!(e.to_string().contains("snap length"), "{e}");
        // Classic pcap likewise: a cut ARP frame on Ethernet is skipped.
        let mut c = Vec::new();
        c.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
        c.extend_from_slice(&2u16.to_le_bytes());
        c.extend_from_slice(&4u16.to_le_bytes());
        c.extend_from_slice(&[0; 8]);
        c.extend_from_slice(&65535u32.to_le_bytes());
        c.extend_from_slice(&1u32.to_le_bytes());
        let ip_eth = [[0u8; 12].as_slice(), &[0x08, 0x00], IP].concat();
        for (frame, orig) in [(&arp, 42u32), (&ip_eth, ip_eth.len() as u32)] {
            c.extend_from_slice(&[0; 8]);
            c.extend_from_slice(&(frame.len() as u32).to_le_bytes());
            c.extend_from_slice(&orig.to_le_bytes());
            c.extend_from_slice(frame);
        }
        let (recs, skipped) = parse("x.pcap", &c).unwrap();
        assert_eq!((recs.len(), skipped), (1, 1));
        assert_eq!(recs[0].data, IP);
        // A cut IP frame there is still an error.
        let at = c.len() - ip_eth.len() - 4;
        c[at..at + 4].copy_from_slice(&(ip_eth.len() as u32 + 1).to_le_bytes());
        let e = parse("x.pcap", &c).unwrap_err();
        assert!(e.to_string().contains("snap length"), "{e}");
    }
}
