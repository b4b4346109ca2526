//! How tcpd's own outbound (upstream) sockets keep off its TUN device.
//!
//! With `--transparent`, traffic meant for anywhere is routed into the TUN
//! and tcpd connects out to the original destination from a kernel socket.
//! In the same namespace, the kernel would route that socket for the same
//! destination back into the TUN: a loop. Three ways out:
//!
//! - `--netns`: the TUN and its routes live in another namespace; tcpd's
//!   sockets never see them (no loop by construction, see [`crate::netns`]).
//! - `--outbound-mark N`: every upstream socket carries `SO_MARK` N (needs
//!   CAP_NET_ADMIN), and with `--default-route` tcpd routes policy-wise as
//!   WireGuard's `wg-quick` does (Linux FIB rules, `fib_rules_lookup`):
//!   the default routes via the TUN go into routing table N, not `main`,
//!   and two rules pick them for everything that is not marked:
//!
//!   ```text
//!   32764: from all lookup main suppress_prefixlength 0   (main's own routes win, except its default)
//!   32765: not from all fwmark N lookup N                 (the rest goes to the TUN)
//!   ```
//!
//!   Marked packets skip table N and leave by `main`'s default route. What
//!   tcpd added it removes at exit (also on a second signal's forced exit).
//!   Replies to a marked socket arrive unmarked: with `rp_filter` strict
//!   (1) on the upstream interface the kernel would drop them; loose (2,
//!   the usual default) or off is needed.
//! - `--outbound-device IFACE`: every upstream socket is bound to IFACE
//!   (`SO_BINDTODEVICE`): the route lookup then only takes routes via IFACE
//!   (Linux `fib_table_lookup` skips next hops on other devices), so a
//!   default route via the TUN with a lower metric does not catch it. IFACE
//!   needs a route of its own to the destinations (its default route with
//!   a higher metric, say).
//!
//! [`OutboundPolicy::apply`] is called on every upstream socket before it
//! connects.

use netlink_packet_route::route::{
    RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::rule::{RuleAction, RuleAttribute, RuleFlags, RuleMessage};
use netlink_packet_route::AddressFamily;
use std::io;

/// What is done to tcpd's outbound sockets so that they do not loop back
/// into its TUN. [`Default`]: nothing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OutboundPolicy {
    /// `SO_MARK` on every upstream socket; with
    /// [`crate::Config::default_route`] (and no `--netns`), also the
    /// routing table of the TUN's default routes and the mark the policy
    /// rules test (see the module doc).
    pub mark: Option<u32>,
    /// `SO_BINDTODEVICE` on every upstream socket: the interface to leave by.
    pub device: Option<String>,
}

impl OutboundPolicy {
    /// Applies the policy to `sock` (before it connects). An error names
    /// the option and says what is missing (CAP_NET_ADMIN, an interface).
    pub fn apply(&self, sock: &socket2::Socket) -> io::Result<()> {
        if let Some(mark) = self.mark {
            sock.set_mark(mark).map_err(|e| {
                io::Error::new(e.kind(), format!("SO_MARK {mark} (--outbound-mark): {e}"))
            })?;
        }
        if let Some(dev) = &self.device {
            sock.bind_device(Some(dev.as_bytes())).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("SO_BINDTODEVICE {dev} (--outbound-device): {e}"),
                )
            })?;
        }
        Ok(())
    }

    /// Whether the policy does anything.
    pub fn is_active(&self) -> bool {
        self.mark.is_some() || self.device.is_some()
    }

    /// Checks the values; the error is one line for the user.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(m) = self.mark {
            // The mark also numbers the routing table: 0 is "unspecified",
            // 253..=255 are the kernel's default, main and local tables.
            if m == 0 || (253..=255).contains(&m) {
                return Err(format!(
                    "--outbound-mark {m}: use another number (0 means no mark, and the mark also \
                     numbers tcpd's routing table: 253, 254 and 255 are the kernel's \
                     default, main and local tables)"
                ));
            }
        }
        if let Some(d) = &self.device {
            if d.is_empty() || d.len() > 15 || d.contains(['/', ' ', ':']) {
                return Err(format!(
                    "--outbound-device '{d}' is not an interface name (1 to 15 characters, no '/', ':' or spaces)"
                ));
            }
        }
        Ok(())
    }
}

/// Priority of the rule that lets `main`'s routes other than its default
/// route win (`suppress_prefixlength 0`), as wg-quick places it.
pub const RULE_PRIO_MAIN: u32 = 32764;
/// Priority of the rule that sends unmarked traffic to the TUN's table.
pub const RULE_PRIO_TUN: u32 = 32765;

/// A default route (`0.0.0.0/0` or `::/0`) out of interface `ifindex` in
/// routing table `table`, with no gateway (the TUN is point-to-point), as
/// `ip route add default dev IFACE table T` builds it.
pub(crate) fn default_route(v6: bool, ifindex: u32, table: u32) -> RouteMessage {
    let mut m = RouteMessage::default();
    m.header.address_family = if v6 {
        AddressFamily::Inet6
    } else {
        AddressFamily::Inet
    };
    m.header.destination_prefix_length = 0;
    // Tables above 255 only fit the RTA_TABLE attribute (rtnetlink(7)).
    m.header.table = u8::try_from(table).unwrap_or(RouteHeader::RT_TABLE_UNSPEC);
    m.header.protocol = RouteProtocol::Static;
    // No gateway: the destination is "on link" (IPv6 ignores the scope).
    m.header.scope = if v6 {
        RouteScope::Universe
    } else {
        RouteScope::Link
    };
    m.header.kind = RouteType::Unicast;
    m.attributes = vec![RouteAttribute::Table(table), RouteAttribute::Oif(ifindex)];
    m
}

/// The two policy rules of one family (see the module doc): `main` without
/// its default route first, then everything not marked `mark` to table
/// `mark`.
pub(crate) fn policy_rules(v6: bool, mark: u32) -> [RuleMessage; 2] {
    let base = |prio: u32, table: u32| {
        let mut r = RuleMessage::default();
        r.header.family = if v6 {
            AddressFamily::Inet6
        } else {
            AddressFamily::Inet
        };
        r.header.table = u8::try_from(table).unwrap_or(RouteHeader::RT_TABLE_UNSPEC);
        r.header.action = RuleAction::ToTable;
        r.attributes = vec![RuleAttribute::Priority(prio), RuleAttribute::Table(table)];
        r
    };
    let mut main = base(RULE_PRIO_MAIN, u32::from(RouteHeader::RT_TABLE_MAIN));
    main.attributes.push(RuleAttribute::SuppressPrefixLen(0));
    let mut tun = base(RULE_PRIO_TUN, mark);
    tun.header.flags = RuleFlags::Invert;
    tun.attributes.push(RuleAttribute::FwMark(mark));
    tun.attributes.push(RuleAttribute::FwMask(u32::MAX));
    [main, tun]
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn default_policy_does_nothing() {
        let p = OutboundPolicy::default();
        assert!(!p.is_active());
        p.validate().unwrap();
        // Applying nothing needs no privilege.
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        p.apply(&s).unwrap();
        assert_eq!(s.mark().unwrap_or(0), 0);
    }

    #[test]
    fn mark_and_device_are_set_on_the_socket() {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        let p = OutboundPolicy {
            mark: Some(0x51),
            device: Some("lo".into()),
        };
        match p.apply(&s) {
            Ok(()) => {
                assert_eq!(s.mark().unwrap(), 0x51);
                assert_eq!(s.device().unwrap().as_deref(), Some(&b"lo"[..]));
            }
            // Without CAP_NET_ADMIN: the error names the option.
            Err(e) => {
                assert_eq!(e.kind(), io::ErrorKind::PermissionDenied, "{e}");
                assert!(e.to_string().contains("--outbound-mark"), "{e}");
            }
        }
        let p = OutboundPolicy {
            mark: None,
            device: Some("h-netns-none0".into()),
        };
        let e = p.apply(&s).unwrap_err();
        assert!(e.to_string().contains("--outbound-device"), "{e}");
    }

    #[test]
    fn reserved_marks_and_bad_names_are_refused() {
        for m in [0, 253, 254, 255] {
            let p = OutboundPolicy {
                mark: Some(m),
                device: None,
            };
            assert!(p.validate().unwrap_err().contains("--outbound-mark"));
        }
        let p = OutboundPolicy {
            mark: Some(51820),
            device: Some("eth0".into()),
        };
        p.validate().unwrap();
        let p = OutboundPolicy {
            mark: None,
            device: Some("a/b".into()),
        };
        assert!(p.validate().unwrap_err().contains("--outbound-device"));
    }

    #[test]
    fn routes_and_rules_are_what_ip_would_send() {
        let r = default_route(false, 9, 51820);
        assert_eq!(r.header.address_family, AddressFamily::Inet);
        assert_eq!(r.header.table, RouteHeader::RT_TABLE_UNSPEC);
        assert_eq!(r.header.scope, RouteScope::Link);
        assert!(r.attributes.contains(&RouteAttribute::Table(51820)));
        assert!(r.attributes.contains(&RouteAttribute::Oif(9)));
        let r = default_route(true, 9, 254);
        assert_eq!(r.header.table, 254);
        assert_eq!(r.header.destination_prefix_length, 0);
        let [main, tun] = policy_rules(true, 51820);
        assert_eq!(main.header.family, AddressFamily::Inet6);
        assert!(main
            .attributes
            .contains(&RuleAttribute::SuppressPrefixLen(0)));
        assert!(main
            .attributes
            .contains(&RuleAttribute::Priority(RULE_PRIO_MAIN)));
        assert!(tun.header.flags.contains(RuleFlags::Invert));
        assert!(tun.attributes.contains(&RuleAttribute::FwMark(51820)));
        assert!(tun.attributes.contains(&RuleAttribute::Table(51820)));
        const { assert!(RULE_PRIO_MAIN < RULE_PRIO_TUN) };
    }
}
