//! IPv4 (RFC 791 §3.2) and IPv6 (RFC 8200 §4.5) fragment reassembly in
//! bounded memory: a global and a per-source byte budget, Linux's
//! timeouts, and the rules that keep fragments from being a weapon
//! (RFC 5722 overlaps, RFC 1858 tiny fragments). The unfragmented path
//! never comes here: only a packet `parse_ip` calls a fragment does.

use super::KeyedState;
use crate::config::Config;
use crate::stats::ReasmStats;
use crate::time::Instant;
use crate::wire::{checksum_fold, checksum_sum, valid_source, PROTO_TCP};
use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Most fragments one datagram may arrive in; more are dropped with it.
const MAX_FRAGMENTS: usize = 64;
/// Bytes charged to a datagram in progress besides its data (its entry).
const ENTRY_OVERHEAD: usize = 256;
/// Freed reassembly buffers kept for reuse.
const POOL_BUFFERS: usize = 8;

/// Source, destination, identification, protocol (IPv4; 0 for IPv6).
type Key = (IpAddr, IpAddr, u32, u8);

#[derive(Debug)]
struct Entry {
    /// The data by offset.
    buf: Vec<u8>,
    /// Byte ranges received, sorted, never overlapping.
    ranges: Vec<(usize, usize)>,
    /// The datagram's data length, once the last fragment came.
    total: Option<usize>,
    /// IPv4: the first fragment's header (IHL bytes); IPv6: its 40-byte
    /// fixed header. Empty until the offset-0 fragment came.
    header: Vec<u8>,
    /// IPv6: the Next Header of the fragmentable part (from the offset-0
    /// fragment's Fragment header, RFC 8200 §4.5).
    next: u8,
    deadline: Instant,
    /// Bytes charged against the budgets.
    charge: usize,
}

/// One fragment, parsed.
struct Frag<'a> {
    key: Key,
    v6: bool,
    offset: usize,
    more: bool,
    /// Upper-layer protocol of the datagram (IPv4 protocol, IPv6 Next
    /// Header of the Fragment header).
    proto: u8,
    header: &'a [u8],
    data: &'a [u8],
}

/// The reassembly queues.
#[derive(Debug)]
pub(crate) struct Reassembler {
    entries: HashMap<Key, Entry, KeyedState>,
    per_source: HashMap<IpAddr, usize, KeyedState>,
    used: usize,
    /// When each datagram begun expires, in order of arrival: one queue
    /// for IPv4 and one for IPv6 (their timeouts differ), so each front is
    /// that family's earliest deadline.
    expiry: [VecDeque<(Instant, Key)>; 2],
    pool: Vec<Vec<u8>>,
    /// Datagrams that timed out with their first fragment in: (source,
    /// destination, quote), for the endpoint's ICMP Time Exceeded.
    pub(crate) timed_out: Vec<(IpAddr, IpAddr, Vec<u8>)>,
    /// The reassembled datagram handed back (reused).
    pub(crate) out: Vec<u8>,
}

impl Reassembler {
    pub(crate) fn new(k1: (u64, u64), k2: (u64, u64)) -> Reassembler {
        Reassembler {
            entries: HashMap::with_hasher(KeyedState(k1.0, k1.1)),
            per_source: HashMap::with_hasher(KeyedState(k2.0, k2.1)),
            used: 0,
            expiry: [VecDeque::new(), VecDeque::new()],
            pool: Vec::new(),
            timed_out: Vec::new(),
            out: Vec::new(),
        }
    }

    /// Bytes held now (for tests and reports).
    pub(crate) fn used(&self) -> usize {
        self.used
    }

    fn release(&mut self, key: &Key) {
        if let Some(mut e) = self.entries.remove(key) {
            self.used -= e.charge;
            if let Some(s) = self.per_source.get_mut(&key.0) {
                *s -= e.charge;
                if *s == 0 {
                    self.per_source.remove(&key.0);
                }
            }
            if self.pool.len() < POOL_BUFFERS && e.buf.capacity() <= 65536 {
                e.buf.clear();
                self.pool.push(e.buf);
            }
        }
    }

    /// Drops the datagrams whose time is up (RFC 791 §3.2, RFC 8200 §4.5;
    /// Linux ipfrag_time 30 s and ip6frag_time 60 s). The queue holds one
    /// record per datagram begun, in order of arrival; records of datagrams
    /// finished early stay until their time. Beyond `cap` records (the most
    /// datagrams the global budget can hold, twice) the oldest datagram is
    /// evicted early, as Linux evicts when over ipfrag_high_thresh.
    pub(crate) fn expire(&mut self, cfg: &Config, now: Instant, st: &mut ReasmStats) {
        let cap = 2 * (cfg.reasm_max_bytes / ENTRY_OVERHEAD) + 16;
        loop {
            let q = match (self.expiry[0].front(), self.expiry[1].front()) {
                (Some(a), Some(b)) => usize::from(b.0 < a.0),
                (Some(_), None) => 0,
                (None, Some(_)) => 1,
                (None, None) => break,
            };
            let Some(&(t, key)) = self.expiry[q].front() else {
                break;
            };
            let over = self.expiry[0].len() + self.expiry[1].len() > cap;
            if t > now && !over {
                break;
            }
            self.expiry[q].pop_front();
            if self.entries.get(&key).is_some_and(|e| e.deadline == t) {
                if t <= now {
                    st.timeouts += 1;
                    self.note_timed_out(&key);
                } else {
                    st.evicted += 1;
                }
                self.release(&key);
            }
        }
    }

    /// The earliest time a datagram in progress may expire.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        let a = self.expiry[0].front().map(|e| e.0);
        let b = self.expiry[1].front().map(|e| e.0);
        a.into_iter().chain(b).min()
    }

    /// RFC 792 ("if fragment zero is not available then no time exceeded
    /// need be sent at all"), RFC 1122 §3.3.2 (MUST, when fragment zero
    /// came) and RFC 8200 §4.5: a datagram that timed out with its first
    /// fragment in is reported to its source, quoting that fragment (IPv4:
    /// as received, up to 548 bytes; IPv6: its header and a Fragment header
    /// rebuilt, up to 1232), as Linux's `ip_expire` / `ip6_expire_frag_queue`.
    /// Not for a datagram that carried an ICMP error (RFC 1122 §3.2.2,
    /// RFC 4443 §2.4 (e)). At most 16 wait for the endpoint at once.
    fn note_timed_out(&mut self, key: &Key) {
        let Some(e) = self.entries.get(key) else {
            return;
        };
        if e.header.is_empty() || self.timed_out.len() >= 16 {
            return;
        }
        let v6 = key.0.is_ipv6();
        let first = e.ranges.first().map_or(0, |r| r.1);
        let data = &e.buf[..first.min(e.buf.len())];
        let proto = if v6 { e.next } else { key.3 };
        let carries_error = match (v6, data.first()) {
            (false, Some(t)) => proto == 1 && matches!(t, 3 | 4 | 5 | 11 | 12),
            (true, Some(t)) => proto == 58 && *t < 128,
            (_, None) => false,
        };
        if carries_error {
            return;
        }
        let mut q = Vec::new();
        if v6 {
            q.extend_from_slice(&e.header);
            q.extend_from_slice(&[e.next, 0, 0, 1]);
            q.extend_from_slice(&key.2.to_be_bytes());
            let n = data.len().min(1232 - q.len());
            q.extend_from_slice(&data[..n]);
            let plen = (q.len() - 40) as u16;
            q[4..6].copy_from_slice(&plen.to_be_bytes());
            q[6] = 44;
        } else {
            q.extend_from_slice(&e.header);
            let n = data.len().min(548usize.saturating_sub(q.len()));
            q.extend_from_slice(&data[..n]);
        }
        self.timed_out.push((key.0, key.1, q));
    }

    /// Takes one fragment (`pkt`, which `parse_ip` called a fragment, so
    /// its lengths and IPv4 checksum are sound). Returns the length of the
    /// whole datagram in `out` when this fragment completed one.
    pub(crate) fn insert(
        &mut self,
        cfg: &Config,
        now: Instant,
        pkt: &[u8],
        out: &mut Vec<u8>,
        st: &mut ReasmStats,
    ) -> Option<usize> {
        st.fragments_in += 1;
        self.expire(cfg, now, st);
        let Some(f) = parse_fragment(pkt) else {
            st.bad += 1;
            return None;
        };
        if !cfg.addrs.is_empty() && !cfg.addrs.contains(&f.key.1) {
            st.bad += 1;
            return None;
        }
        let len = f.data.len();
        let end = f.offset + len;
        // Every fragment but the last carries a multiple of 8 bytes (RFC
        // 791 §3.2, RFC 8200 §4.5), and the datagram fits 65535 bytes.
        let limit = 65535 - f.header.len().min(60);
        if len == 0 || (f.more && len % 8 != 0) || end > limit {
            st.bad += 1;
            self.release(&f.key);
            return None;
        }
        // RFC 1858 §3: a TCP header split over fragments, or overwritten
        // by a fragment at offset 8, is refused (RFC 7112 for IPv6: the
        // first fragment holds the upper-layer header).
        if f.proto == PROTO_TCP {
            let tiny_first = f.offset == 0
                && (len < 20 || len < usize::from(f.data.get(12).map_or(5, |b| b >> 4)) * 4);
            if tiny_first || f.offset == 8 {
                st.tiny += 1;
                return None;
            }
        }
        let timeout = if f.v6 {
            cfg.reasm_timeout_v6
        } else {
            cfg.reasm_timeout_v4
        };
        if !self.entries.contains_key(&f.key) {
            if !self.charge_ok(cfg, f.key.0, ENTRY_OVERHEAD) {
                st.budget_drops += 1;
                return None;
            }
            let buf = self.pool.pop().unwrap_or_default();
            self.entries.insert(
                f.key,
                Entry {
                    buf,
                    ranges: Vec::new(),
                    total: None,
                    header: Vec::new(),
                    next: 0,
                    deadline: now + timeout,
                    charge: 0,
                },
            );
            self.charge(f.key.0, f.key, ENTRY_OVERHEAD);
            self.expiry[usize::from(f.v6)].push_back((now + timeout, f.key));
        }
        let e = self.entries.get(&f.key)?;
        // RFC 5722 §4 (with erratum 3089): an exact duplicate is ignored; any
        // other overlap discards the whole datagram (Linux does both, for
        // IPv4 as well).
        if e.ranges.contains(&(f.offset, end)) {
            st.duplicates += 1;
            return None;
        }
        let overlap = e.ranges.iter().any(|&(a, b)| f.offset < b && a < end);
        let beyond = e.total.is_some_and(|t| end > t || (!f.more && end != t))
            || (!f.more && e.ranges.iter().any(|&(_, b)| b > end));
        if overlap || beyond || e.ranges.len() >= MAX_FRAGMENTS {
            st.overlaps += 1;
            self.release(&f.key);
            return None;
        }
        let grow = end.saturating_sub(e.buf.len());
        if grow > 0 && !self.charge_ok(cfg, f.key.0, grow) {
            st.budget_drops += 1;
            return None;
        }
        self.charge(f.key.0, f.key, grow);
        let e = self.entries.get_mut(&f.key)?;
        if e.buf.len() < end {
            e.buf.resize(end, 0);
        }
        e.buf[f.offset..end].copy_from_slice(f.data);
        let pos = e.ranges.partition_point(|&(a, _)| a < f.offset);
        e.ranges.insert(pos, (f.offset, end));
        if !f.more {
            e.total = Some(end);
        }
        if f.offset == 0 {
            e.header.clear();
            e.header.extend_from_slice(f.header);
            e.next = f.proto;
        }
        let total = e.total?;
        let mut at = 0;
        for &(a, b) in &e.ranges {
            if a != at {
                return None;
            }
            at = b;
        }
        if at != total || e.header.is_empty() {
            return None;
        }
        // Whole: rebuild the datagram without fragmentation.
        let h = e.header.len();
        out.clear();
        out.extend_from_slice(&e.header);
        out.extend_from_slice(&e.buf[..total]);
        if f.v6 {
            out[4..6].copy_from_slice(&(total as u16).to_be_bytes());
            out[6] = e.next;
        } else {
            out[2..4].copy_from_slice(&((h + total) as u16).to_be_bytes());
            out[6] &= 0x40; // keep DF, clear MF and the offset
            out[7] = 0;
            out[10] = 0;
            out[11] = 0;
            let c = checksum_fold(checksum_sum(0, &out[..h]));
            out[10..12].copy_from_slice(&c.to_be_bytes());
        }
        st.reassembled += 1;
        self.release(&f.key);
        Some(h + total)
    }

    fn charge_ok(&self, cfg: &Config, src: IpAddr, n: usize) -> bool {
        let s = self.per_source.get(&src).copied().unwrap_or(0);
        self.used + n <= cfg.reasm_max_bytes && s + n <= cfg.reasm_per_source_bytes
    }

    fn charge(&mut self, src: IpAddr, key: Key, n: usize) {
        self.used += n;
        *self.per_source.entry(src).or_insert(0) += n;
        if let Some(e) = self.entries.get_mut(&key) {
            e.charge += n;
        }
    }
}

/// The fields of a fragment.
fn parse_fragment(pkt: &[u8]) -> Option<Frag<'_>> {
    match pkt.first()? >> 4 {
        4 => {
            let ihl = usize::from(pkt[0] & 0x0f) * 4;
            let total = usize::from(u16::from_be_bytes([pkt[2], pkt[3]]));
            let src = Ipv4Addr::new(pkt[12], pkt[13], pkt[14], pkt[15]);
            let dst = Ipv4Addr::new(pkt[16], pkt[17], pkt[18], pkt[19]);
            if !valid_source(IpAddr::V4(src), IpAddr::V4(dst)) {
                return None;
            }
            let frag = u16::from_be_bytes([pkt[6], pkt[7]]);
            let id = u32::from(u16::from_be_bytes([pkt[4], pkt[5]]));
            Some(Frag {
                key: (src.into(), dst.into(), id, pkt[9]),
                v6: false,
                offset: usize::from(frag & 0x1fff) * 8,
                more: frag & 0x2000 != 0,
                proto: pkt[9],
                header: pkt.get(..ihl)?,
                data: pkt.get(ihl..total)?,
            })
        }
        6 => {
            let end = 40 + usize::from(u16::from_be_bytes([pkt.get(4).copied()?, pkt[5]]));
            let mut s = [0u8; 16];
            s.copy_from_slice(pkt.get(8..24)?);
            let mut d = [0u8; 16];
            d.copy_from_slice(pkt.get(24..40)?);
            let (src, dst) = (Ipv6Addr::from(s), Ipv6Addr::from(d));
            if !valid_source(IpAddr::V6(src), IpAddr::V6(dst)) {
                return None;
            }
            // The unfragmentable part: hop-by-hop, routing and destination
            // options (already checked by `parse_ip`), then the Fragment header.
            let mut next = pkt[6];
            let mut off = 40;
            for _ in 0..crate::wire::MAX_IPV6_EXTENSIONS {
                if !matches!(next, 0 | 43 | 60) {
                    break;
                }
                let h = pkt.get(off..off + 2)?;
                next = h[0];
                off += (usize::from(h[1]) + 1) * 8;
            }
            if next != 44 {
                return None;
            }
            let h = pkt.get(off..off + 8)?;
            let frag = u16::from_be_bytes([h[2], h[3]]);
            let id = u32::from_be_bytes([h[4], h[5], h[6], h[7]]);
            Some(Frag {
                key: (src.into(), dst.into(), id, 0),
                v6: true,
                offset: usize::from(frag >> 3) * 8,
                more: frag & 1 != 0,
                proto: h[0],
                header: pkt.get(..40)?,
                data: pkt.get(off + 8..end)?,
            })
        }
        _ => None,
    }
}
