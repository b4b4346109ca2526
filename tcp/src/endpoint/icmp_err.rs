//! ICMP errors at the endpoint: RFC 5927 validation, the path MTU cache
//! (RFC 1191, RFC 8201) and delivery to connections (RFC 1122 §4.2.3.9);
//! and the errors the endpoint sends itself (Parameter Problem, reassembly
//! Time Exceeded) through the gate of `icmp_send`.

use super::{Endpoint, KeyedState};
use crate::time::Instant;
use crate::wire::{
    plateau_below, v6_carries_icmp_error, v6_param_problem, valid_source, DropReason,
    IcmpErrorKind, IcmpErrorMsg, IpPacket, ICMPV6_PARAM_PROBLEM,
};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};

/// IPv6's minimum link MTU (RFC 8200 §5): no path MTU estimate goes
/// below it (RFC 8201 §4).
pub(crate) const IPV6_MIN_MTU: usize = 1280;

/// Learned path MTUs by destination, bounded, each with its expiry (Linux
/// keeps them as route exceptions for `ip_rt_mtu_expires`).
#[derive(Debug)]
pub(crate) struct PmtuCache {
    /// Path MTU, expiry, and whether it is locked at the IPv4 floor (the
    /// report was below it: segments go without DF).
    map: HashMap<IpAddr, (usize, Instant, bool), KeyedState>,
    max: usize,
}

impl PmtuCache {
    pub(crate) fn new(max: usize, key: (u64, u64)) -> PmtuCache {
        PmtuCache {
            map: HashMap::with_hasher(KeyedState(key.0, key.1)),
            max,
        }
    }

    /// The path MTU to `dst` and when it expires, if one is known and live.
    pub(crate) fn get(&mut self, dst: IpAddr, now: Instant) -> Option<(usize, Instant, bool)> {
        if self.map.is_empty() {
            return None;
        }
        match self.map.get(&dst) {
            Some(&(mtu, exp, locked)) if exp > now => Some((mtu, exp, locked)),
            Some(_) => {
                self.map.remove(&dst);
                None
            }
            None => None,
        }
    }

    /// Records `mtu` for `dst` until `exp`. When the cache is full, expired
    /// entries go first, then the one that expires soonest: O(size), paid
    /// only when a validated ICMP message lowers a path MTU.
    pub(crate) fn insert(
        &mut self,
        dst: IpAddr,
        mtu: usize,
        exp: Instant,
        locked: bool,
        now: Instant,
    ) {
        if !self.map.contains_key(&dst) && self.map.len() >= self.max {
            self.map.retain(|_, &mut (_, e, _)| e > now);
            if self.map.len() >= self.max {
                if let Some(k) = self
                    .map
                    .iter()
                    .min_by_key(|(_, &(_, e, _))| e)
                    .map(|(k, _)| *k)
                {
                    self.map.remove(&k);
                }
            }
        }
        self.map.insert(dst, (mtu, exp, locked));
    }

    /// Destinations held.
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }
}

impl Endpoint {
    /// An ICMP or ICMPv6 error quoting one of our TCP segments.
    ///
    /// RFC 5927 §4.1 (Linux tcp_v4_err / tcp_v6_err): it must name a
    /// connection of ours by the quoted 4-tuple, and the quoted sequence
    /// number must lie within SND.UNA..SND.NXT; anything else is ignored
    /// and counted. An accepted "fragmentation needed" (RFC 1191 §4) or
    /// "packet too big" (RFC 8201 §4) lowers the path MTU of the quoted
    /// destination in the cache, never below the floor, and every
    /// connection to that destination lowers its MSS and resends at once
    /// (Linux lowers the route's MTU; its other sockets notice at their
    /// next send in tcp_current_mss, we tell them now). Other errors go to
    /// the quoted connection (RFC 1122 §4.2.3.9).
    pub(super) fn handle_icmp_error(&mut self, ip: &IpPacket<'_>, m: IcmpErrorMsg) {
        self.stats.icmp.errors_in += 1;
        // The quoted packet was ours: sent from the address this error
        // came back to.
        if m.local.ip() != ip.dst {
            self.stats.icmp.bad_quote += 1;
            return;
        }
        let Some(&slot) = self.table.get(&(m.local, m.remote)) else {
            self.stats.icmp.no_connection += 1;
            return;
        };
        let in_window = self.slots[slot as usize]
            .conn
            .as_deref()
            .is_some_and(|c| c.icmp_seq_ok(m.seq));
        if !in_window {
            self.stats.icmp.out_of_window += 1;
            return;
        }
        match m.kind {
            IcmpErrorKind::Error(e) => {
                self.with_conn(slot, |c, cx| c.icmp_error(cx, e));
            }
            IcmpErrorKind::TooBig(_) if !self.config.pmtu_discovery => {
                self.stats.icmp.pmtu_not_lower += 1;
            }
            IcmpErrorKind::TooBig(mtu) => self.path_mtu_lowered(slot, &m, mtu),
        }
    }

    fn path_mtu_lowered(&mut self, slot: u32, m: &IcmpErrorMsg, mtu: u32) {
        let dst = m.remote.ip();
        let v6 = dst.is_ipv6();
        let mut mtu = usize::try_from(mtu).unwrap_or(usize::MAX);
        // RFC 1191 §5: a router older than RFC 1191 reports 0; guess the
        // plateau below the length of the packet it dropped.
        if !v6 && mtu == 0 {
            mtu = plateau_below(m.quoted_len) as usize;
        }
        // The floor: Linux's min_pmtu for IPv4 (__ip_rt_update_pmtu raises a
        // smaller MTU to it), the IPv6 minimum link MTU for IPv6 (RFC 8201
        // §4: "MUST NOT reduce ... below the IPv6 minimum link MTU").
        let floor = if v6 {
            IPV6_MIN_MTU
        } else {
            self.config.min_pmtu
        }
        .min(self.config.mtu);
        let clamped = mtu < floor;
        mtu = mtu.max(floor);
        let now = self.now;
        let known = self
            .slots
            .get(slot as usize)
            .and_then(|s| s.conn.as_deref())
            .map_or(self.config.mtu, |c| c.icmp.path_mtu());
        let known = self
            .pmtu
            .get(dst, now)
            .map_or(known, |(k, _, _)| k.min(known));
        // RFC 1191 §6.3 / RFC 8201 §4: only a decrease is believed from a
        // "too big" message; an increase comes from the expiry.
        if mtu >= known {
            self.stats.icmp.pmtu_not_lower += 1;
            return;
        }
        self.stats.icmp.pmtu_lowered += 1;
        if clamped {
            self.stats.icmp.pmtu_clamped += 1;
        }
        let exp = now + self.config.pmtu_expires;
        // Linux locks the route's MTU when the report was below min_pmtu
        // (and then sends without DF); IPv6 has no such thing (RFC 8201).
        let locked = clamped && !v6;
        self.pmtu.insert(dst, mtu, exp, locked, now);
        // Every connection to the destination, O(connections): paid only
        // on a decrease, which needs a validated quote and can happen only
        // a bounded number of times per destination (down to the floor).
        for s in 0..self.slots.len() as u32 {
            let to_dst = self.slots[s as usize]
                .conn
                .as_deref()
                .is_some_and(|c| c.remote.ip() == dst);
            if to_dst {
                self.with_conn(s, |c, cx| c.pmtu_reduced(cx, mtu, exp, locked));
            }
        }
    }

    /// An IPv6 packet `parse_ip` refused for its extension headers: dropped
    /// and counted, and where RFC 8200 §4 asks for one, answered with an
    /// ICMPv6 Parameter Problem, as Linux does ([`v6_param_problem`]). No
    /// error answers an ICMPv6 error, a packet to an address not ours or
    /// to a multicast address (Linux would answer an option of type 10xxxxxx
    /// to a multicast group from a unicast address of its own; tcpd has
    /// none to use), or from a source no answer may go to (RFC 4443 §2.4
    /// (e)); sent through the one gate of every error we originate
    /// (`send_icmp_error`: [`crate::Config::icmp_unreachables`] and Linux's
    /// rate limits).
    pub(super) fn bad_ipv6_extension(&mut self, packet: &[u8]) {
        self.drop_packet(DropReason::BadIpv6Extension);
        let Some((code, pointer)) = v6_param_problem(packet) else {
            return;
        };
        let (Some(s), Some(d)) = (packet.get(8..24), packet.get(24..40)) else {
            return;
        };
        let mut a = [0u8; 16];
        a.copy_from_slice(s);
        let peer = Ipv6Addr::from(a);
        a.copy_from_slice(d);
        let ours = Ipv6Addr::from(a);
        let to_us = self.config.addrs.is_empty() || self.config.addrs.contains(&IpAddr::V6(ours));
        if !to_us
            || ours.is_multicast()
            || !valid_source(IpAddr::V6(ours), IpAddr::V6(peer))
            || v6_carries_icmp_error(packet)
        {
            return;
        }
        if self.send_icmp_error(
            IpAddr::V6(ours),
            IpAddr::V6(peer),
            ICMPV6_PARAM_PROBLEM,
            code,
            pointer,
            packet,
        ) {
            self.stats.icmp.param_problems_out += 1;
        }
    }

    /// Expires reassembly at its deadlines (called from `handle_timeout`,
    /// and after each fragment) and sends the Time Exceeded messages owed.
    pub(super) fn reasm_tick(&mut self) {
        if self.reasm.next_deadline().is_some_and(|t| t <= self.now) {
            let now = self.now;
            self.reasm.expire(&self.config, now, &mut self.stats.reasm);
        }
        if self.reasm.timed_out.is_empty() {
            return;
        }
        let mut list = std::mem::take(&mut self.reasm.timed_out);
        for (peer, ours, quote) in list.drain(..) {
            self.send_time_exceeded(peer, ours, &quote);
        }
        self.reasm.timed_out = list;
    }

    /// ICMP Time Exceeded, code 1 "fragment reassembly time exceeded"
    /// (RFC 792; ICMPv6 type 3 code 1, RFC 4443 §3.3) from `ours` to
    /// `peer`, quoting `quote`; within the same budget and rules as every
    /// error we send.
    fn send_time_exceeded(&mut self, peer: IpAddr, ours: IpAddr, quote: &[u8]) {
        if !valid_source(ours, peer) {
            return;
        }
        let typ = if peer.is_ipv6() { 3 } else { 11 };
        if self.send_icmp_error(ours, peer, typ, 1, 0, quote) {
            self.stats.icmp.time_exceeded_out += 1;
        }
    }

    /// Gives a new connection the cached path MTU of its destination.
    pub(super) fn apply_cached_pmtu(&mut self, conn: &mut crate::conn::Conn) {
        if let Some((mtu, exp, locked)) = self.pmtu.get(conn.remote.ip(), self.now) {
            conn.set_path_mtu(&self.config, mtu, exp, locked);
        }
    }
}
