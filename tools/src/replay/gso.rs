//! Captures recorded with TUN offload (`"offload": true` in the sidecar).
//!
//! The stack read and wrote TSO/GSO super-packets of up to 64 KiB with
//! partial TCP checksums; the capture holds what the wire carried instead:
//! each super-packet cut into MTU-sized segments with real checksums
//! (`daemon::offload::Segmenter`), and the companion file
//! `FILE.gso` (`daemon::pcap::gso_path`) lists which records were one
//! packet. A replay puts each group back together ([`merge`]) so that it
//! feeds the endpoint the packets it saw and compares the endpoint's output
//! at the granularity it was written; the endpoint's own output gets its
//! checksum completed ([`fill_tcp_checksum`]), as the recorded records have
//! theirs. Merging undoes the cut exactly (Linux `tcp_gso_segment`): the
//! first segment's headers (IPv4 identifier, options, CWR) with the total
//! length of the whole, FIN and PSH of the last segment, every payload in
//! order, and real checksums over the whole.

use super::pcapio::Record;
use std::path::Path;

/// A group of records that was one packet: `first`, `count` records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Group {
    /// Index of the first record (0-based, file order).
    pub first: usize,
    /// Number of records (segments), at least 2.
    pub count: usize,
}

/// Reads the companion file of the capture at `pcap`.
pub fn load_groups(pcap: &Path) -> Result<Vec<Group>, String> {
    let path = daemon::pcap::gso_path(pcap);
    let text = std::fs::read_to_string(&path).map_err(|e| {
        format!(
            "{}: the sidecar says the capture was recorded with offload, but its list of \
             segmented packets {} cannot be read: {e}",
            pcap.display(),
            path.display()
        )
    })?;
    let mut v: Vec<Group> = Vec::new();
    for (n, l) in text.lines().enumerate() {
        let bad = || format!("{}:{}: not `FIRST COUNT`: {l:?}", path.display(), n + 1);
        let mut it = l.split_whitespace();
        let (Some(a), Some(b), None) = (it.next(), it.next(), it.next()) else {
            return Err(bad());
        };
        let (Ok(first), Ok(count)) = (a.parse::<usize>(), b.parse::<usize>()) else {
            return Err(bad());
        };
        let after_previous = v.last().is_none_or(|p| p.first + p.count <= first);
        if count < 2 || !after_previous {
            return Err(bad());
        }
        v.push(Group { first, count });
    }
    Ok(v)
}

/// Header lengths of a TCP packet: (IP header, IP + TCP headers), IPv6
/// without extension headers (neither tcpd nor the local kernel sends any).
fn tcp_headers(p: &[u8]) -> Option<(usize, usize)> {
    let (iph, proto) = match p.first()? >> 4 {
        4 => (usize::from(p[0] & 0x0f) * 4, *p.get(9)?),
        6 => (40, *p.get(6)?),
        _ => return None,
    };
    if proto != 6 || iph < 20 {
        return None;
    }
    let hl = iph + usize::from(p.get(iph + 12)? >> 4) * 4;
    (hl >= iph + 20 && hl <= p.len()).then_some((iph, hl))
}

fn sum16(mut sum: u32, b: &[u8]) -> u32 {
    let mut c = b.chunks_exact(2);
    for w in &mut c {
        sum += u32::from(u16::from_be_bytes([w[0], w[1]]));
    }
    if let [last] = c.remainder() {
        sum += u32::from(*last) << 8;
    }
    sum
}

fn fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Writes the real TCP checksum (RFC 9293 §3.1, pseudo-header included)
/// and, for IPv4, the header checksum (RFC 791) of a TCP packet; other
/// packets are left alone.
pub fn fill_tcp_checksum(p: &mut [u8]) {
    let Some((iph, _)) = tcp_headers(p) else {
        return;
    };
    let seg_len = (p.len() - iph) as u32;
    let pseudo = if p[0] >> 4 == 4 {
        p[10] = 0;
        p[11] = 0;
        let h = fold(sum16(0, &p[..iph]));
        p[10..12].copy_from_slice(&h.to_be_bytes());
        sum16(0, &p[12..20]) + 6 + seg_len
    } else {
        sum16(0, &p[8..40]) + 6 + (seg_len >> 16) + (seg_len & 0xffff)
    };
    p[iph + 16] = 0;
    p[iph + 17] = 0;
    let c = fold(sum16(pseudo, &p[iph..]));
    p[iph + 16..iph + 18].copy_from_slice(&c.to_be_bytes());
}

/// TCP flags FIN and PSH: on the last segment only.
const FIN_PSH: u8 = 0x01 | 0x08;

/// Puts the records of each group back into the one packet the stack read
/// or wrote (see the module documentation). Errors name the first group
/// that cannot have come from a cut.
pub fn merge(records: Vec<Record>, groups: &[Group]) -> Result<Vec<Record>, String> {
    let mut out = Vec::with_capacity(records.len());
    let mut it = records.into_iter().enumerate().peekable();
    for g in groups {
        while it.peek().is_some_and(|(i, _)| *i < g.first) {
            if let Some((_, r)) = it.next() {
                out.push(r);
            }
        }
        let bad = |why: &str| {
            format!(
                "records {}..{}: not the segments of one packet ({why})",
                g.first + 1,
                g.first + g.count
            )
        };
        let Some((_, mut whole)) = it.next() else {
            return Err(bad("past the end of the capture"));
        };
        let (iph, hl) = tcp_headers(&whole.data).ok_or_else(|| bad("not TCP"))?;
        for _ in 1..g.count {
            let Some((_, r)) = it.next() else {
                return Err(bad("past the end of the capture"));
            };
            let same = tcp_headers(&r.data) == Some((iph, hl))
                && r.data[..2] == whole.data[..2]
                && r.data[12..iph] == whole.data[12..iph];
            if !same || r.ts_us != whole.ts_us {
                return Err(bad("different headers or times"));
            }
            whole.data[iph + 13] |= r.data[iph + 13] & FIN_PSH;
            whole.data.extend_from_slice(&r.data[hl..]);
        }
        let len = whole.data.len();
        if whole.data[0] >> 4 == 4 {
            let n = u16::try_from(len).map_err(|_| bad("longer than 64 KiB"))?;
            whole.data[2..4].copy_from_slice(&n.to_be_bytes());
        } else {
            let n = u16::try_from(len - 40).map_err(|_| bad("longer than 64 KiB"))?;
            whole.data[4..6].copy_from_slice(&n.to_be_bytes());
        }
        fill_tcp_checksum(&mut whole.data);
        out.push(whole);
    }
    out.extend(it.map(|(_, r)| r));
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use daemon::offload::Segmenter;

    fn packet(v6: bool, payload: usize, flags: u8) -> Vec<u8> {
        let src: std::net::IpAddr = if v6 {
            "fd00::2".parse().unwrap()
        } else {
            "10.0.0.2".parse().unwrap()
        };
        let dst: std::net::IpAddr = if v6 {
            "fd00::1".parse().unwrap()
        } else {
            "10.0.0.1".parse().unwrap()
        };
        let mut p = vec![0u8; if v6 { 40 } else { 20 } + 32 + payload];
        let iph = tcp::wire::emit_ip_header(&mut p, src, dst, 6, 32 + payload, 64, 77).unwrap();
        let t = &mut p[iph..];
        t[0..2].copy_from_slice(&80u16.to_be_bytes());
        t[2..4].copy_from_slice(&40000u16.to_be_bytes());
        t[4..8].copy_from_slice(&1000u32.to_be_bytes());
        t[12] = 8 << 4;
        t[13] = flags;
        t[20] = 1;
        t[21] = 1;
        t[22] = 8;
        t[23] = 10;
        for (i, b) in t[32..].iter_mut().enumerate() {
            *b = (i % 251) as u8;
        }
        fill_tcp_checksum(&mut p);
        p
    }

    /// What the pcap writer cuts, the replay puts back byte for byte.
    #[test]
    fn merge_undoes_the_cut() {
        for v6 in [false, true] {
            let whole = packet(v6, 3 * 1448 + 100, 0x18 | 0x01 | 0x80);
            let mut records = vec![Record {
                ts_us: 1,
                data: vec![0x45, 0, 0, 20],
            }];
            let mut cut = whole.clone();
            let n = Segmenter::new()
                .segment(&mut cut, 1448, false, |s| {
                    records.push(Record {
                        ts_us: 5,
                        data: s.to_vec(),
                    });
                    Ok::<(), ()>(())
                })
                .unwrap();
            assert_eq!(n, 4);
            records.push(Record {
                ts_us: 9,
                data: vec![0x45, 0, 0, 21],
            });
            let g = [Group { first: 1, count: 4 }];
            let m = merge(records, &g).unwrap();
            assert_eq!(m.len(), 3);
            assert_eq!(m[1].data, whole, "v6 {v6}");
            assert_eq!((m[0].ts_us, m[1].ts_us, m[2].ts_us), (1, 5, 9));
        }
    }

    #[test]
    fn groups_that_cannot_be_a_cut_are_refused() {
        let r = |d: Vec<u8>| Record { ts_us: 1, data: d };
        let g = [Group { first: 0, count: 2 }];
        assert!(merge(vec![r(packet(false, 10, 0x10))], &g).is_err());
        let other = packet(true, 10, 0x10);
        assert!(merge(vec![r(packet(false, 10, 0x10)), r(other)], &g).is_err());
        assert!(merge(vec![r(vec![0x45, 0, 0, 20]), r(vec![0x45])], &g).is_err());
    }

    #[test]
    fn the_group_list_parses_and_rejects_nonsense() {
        let dir = daemon::testdir::TempDir::new("gso-list");
        let p = dir.join("c.pcap");
        let gso = daemon::pcap::gso_path(&p);
        std::fs::write(&gso, "3 2\n7 45\n").unwrap();
        assert_eq!(
            load_groups(&p).unwrap(),
            vec![
                Group { first: 3, count: 2 },
                Group {
                    first: 7,
                    count: 45
                }
            ]
        );
        for bad in ["3 1\n", "3 2\n4 2\n", "x 2\n", "1 2 3\n"] {
            std::fs::write(&gso, bad).unwrap();
            assert!(load_groups(&p).is_err(), "{bad:?}");
        }
        std::fs::remove_file(&gso).unwrap();
        assert!(load_groups(&p).unwrap_err().contains("offload"));
    }
}
