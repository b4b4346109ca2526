//! Listeners, initial sequence numbers (RFC 6528) and SYN cookies (RFC 4987).

use crate::endpoint::ConnId;
use crate::seq::SeqNum;
use crate::time::{Duration, Instant};
use siphasher::sip::SipHasher24;
use siphasher::sip128::{Hasher128, SipHasher24 as SipHasher24_128};
use std::collections::VecDeque;
use std::hash::Hasher;
use std::net::{IpAddr, SocketAddr};

/// A listening port: its accept queue (established connections waiting for
/// `accept`) and the count of its half-open connections (its SYN queue).
#[derive(Debug)]
pub(crate) struct Listener {
    /// Most connections waiting in the accept queue.
    pub(crate) backlog: usize,
    /// Established connections not yet accepted, oldest first.
    pub(crate) accept_queue: VecDeque<ConnId>,
    /// Connections in SYN-RECEIVED created by this listener.
    pub(crate) syn_queue: usize,
    /// Whether an `Incoming` event is pending.
    pub(crate) event_pending: bool,
    /// When this listener last answered a SYN with a cookie (its SYN queue
    /// overflowed). ACKs are checked for cookies only within
    /// [`COOKIE_VALID`] of it, as Linux (`tcp_synq_no_recent_overflow`).
    pub(crate) last_cookie: Option<Instant>,
    /// A deferred listener ([`crate::Endpoint::listen_deferred`]): SYNs are
    /// held, `syn_queue` counts them, and the accept queue stays empty.
    pub(crate) deferred: bool,
}

impl Listener {
    pub(crate) fn new(backlog: usize) -> Self {
        Listener {
            backlog: backlog.max(1),
            accept_queue: VecDeque::new(),
            syn_queue: 0,
            event_pending: false,
            last_cookie: None,
            deferred: false,
        }
    }

    /// Whether a cookie sent by this listener may still be valid at `now`:
    /// otherwise an ACK to the listener is not worth checking (it is
    /// answered with a RST as any stray ACK), and blind guesses at cookies
    /// get no hearing while no flood is on (Linux: cookies are checked only
    /// after a recent SYN-queue overflow).
    pub(crate) fn cookies_recent(&self, now: Instant) -> bool {
        self.last_cookie
            .is_some_and(|t| now.saturating_since(t) <= COOKIE_VALID)
    }
}

/// The period of the SYN-cookie clock: the counter t in a cookie counts
/// these (RFC 4987 §3.6 leaves the choice; Linux uses 60 s).
pub(crate) const COOKIE_PERIOD: Duration = Duration::from_secs(64);
/// The longest a cookie stays valid: it is accepted in the period it was
/// made in and the next one (Linux: MAX_SYNCOOKIE_AGE of 2 periods).
pub(crate) const COOKIE_VALID: Duration = Duration::from_secs(2 * 64);

/// Keyed hashes for ISNs, SYN cookies, timestamp offsets and ephemeral
/// ports, each under its own key (see [`derive_key`]).
#[derive(Clone, Debug)]
pub(crate) struct Secrets {
    isn: (u64, u64),
    cookie: (u64, u64),
    ts: (u64, u64),
    port: (u64, u64),
}

/// A 128-bit key for one purpose, derived from the configured seed:
/// SipHash-2-4 with 128-bit output, keyed by the seed, of the purpose's
/// label. SipHash is a PRF, so the keys for distinct labels are independent
/// of each other (knowing the demultiplexing key, say, tells nothing of the
/// ISN key); all of them are as secret as the seed, and no stronger than
/// its 64 bits.
pub(crate) fn derive_key(seed: u64, label: &str) -> (u64, u64) {
    // The second key half is a fixed domain separator ("tcpd-kdf").
    let mut h = SipHasher24_128::new_with_keys(seed, 0x7463_7064_2d6b_6466);
    h.write(label.as_bytes());
    let k = h.finish128();
    (k.h1, k.h2)
}

fn hash_tuple(key: (u64, u64), local: SocketAddr, remote: SocketAddr, extra: &[u32]) -> u64 {
    let mut h = SipHasher24::new_with_keys(key.0, key.1);
    for a in [local.ip(), remote.ip()] {
        match a {
            IpAddr::V4(v) => h.write(&v.octets()),
            IpAddr::V6(v) => h.write(&v.octets()),
        }
    }
    h.write_u16(local.port());
    h.write_u16(remote.port());
    for e in extra {
        h.write_u32(*e);
    }
    h.finish()
}

/// The MSS values a SYN cookie can carry (3 bits), as common paths see them.
const COOKIE_MSS: [u16; 8] = [536, 1200, 1220, 1360, 1400, 1440, 1460, 8960];

/// What a valid SYN cookie restores.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct CookieData {
    /// The peer's MSS, rounded down to a table value.
    pub(crate) mss: u16,
}

impl Secrets {
    pub(crate) fn new(seed: u64) -> Self {
        Secrets {
            isn: derive_key(seed, "isn"),
            cookie: derive_key(seed, "syn-cookie"),
            ts: derive_key(seed, "timestamp-offset"),
            port: derive_key(seed, "ephemeral-port"),
        }
    }

    /// RFC 6528 §3: ISN = M + F(localip, localport, remoteip, remoteport,
    /// secretkey), M a 4-microsecond timer, F SipHash-2-4 keyed by a secret
    /// derived from the seed.
    pub(crate) fn isn(&self, now: Instant, local: SocketAddr, remote: SocketAddr) -> SeqNum {
        let m = (now.as_micros() / 4) as u32;
        SeqNum(m.wrapping_add(hash_tuple(self.isn, local, remote, &[]) as u32))
    }

    /// The per-connection offset added to our timestamp clock (RFC 7323 §5.4
    /// recommends a random offset per connection).
    pub(crate) fn ts_offset(&self, local: SocketAddr, remote: SocketAddr) -> u32 {
        hash_tuple(self.ts, local, remote, &[]) as u32
    }

    /// RFC 6056 §3.3.3 (Algorithm 3, "Simple Hash-Based Port Selection"):
    /// F(local IP, remote IP, remote port, secret key), the offset of the
    /// ephemeral port search for connections to `remote` from `local`.
    pub(crate) fn port_offset(&self, local: IpAddr, remote: SocketAddr) -> u32 {
        let mut h = SipHasher24::new_with_keys(self.port.0, self.port.1);
        for a in [local, remote.ip()] {
            match a {
                IpAddr::V4(v) => h.write(&v.octets()),
                IpAddr::V6(v) => h.write(&v.octets()),
            }
        }
        h.write_u16(remote.port());
        h.finish() as u32
    }

    /// A SYN cookie (RFC 4987 §3.6): the ISN of our SYN-ACK encodes
    /// t mod 32 (5 bits, t counting 64-second periods), an MSS index
    /// (3 bits) and 24 bits of a keyed hash of the 4-tuple, the peer's ISN
    /// and t.
    pub(crate) fn cookie(
        &self,
        now: Instant,
        local: SocketAddr,
        remote: SocketAddr,
        peer_isn: SeqNum,
        mss: u16,
    ) -> SeqNum {
        let t = (now.as_micros() / COOKIE_PERIOD.as_micros()) as u32;
        let idx = COOKIE_MSS.iter().rposition(|m| *m <= mss).unwrap_or(0) as u32;
        let h = hash_tuple(self.cookie, local, remote, &[peer_isn.0, t]) as u32 & 0x00ff_ffff;
        SeqNum((t & 0x1f) << 27 | idx << 24 | h)
    }

    /// Checks a cookie returned as SEG.ACK - 1 in the third segment of the
    /// handshake; valid for the current and the previous 64-second period.
    pub(crate) fn check_cookie(
        &self,
        now: Instant,
        local: SocketAddr,
        remote: SocketAddr,
        peer_isn: SeqNum,
        cookie: SeqNum,
    ) -> Option<CookieData> {
        let t_now = (now.as_micros() / COOKIE_PERIOD.as_micros()) as u32;
        let c = cookie.0;
        for t in [t_now, t_now.wrapping_sub(1)] {
            if t & 0x1f != c >> 27 {
                continue;
            }
            let h = hash_tuple(self.cookie, local, remote, &[peer_isn.0, t]) as u32 & 0x00ff_ffff;
            if h == c & 0x00ff_ffff {
                let idx = ((c >> 24) & 7) as usize;
                return Some(CookieData {
                    mss: COOKIE_MSS[idx],
                });
            }
        }
        None
    }
}

/// Encodes window scale and SACK-permitted in the low 5 bits of the SYN-ACK's
/// TSval when answering with a cookie (the peer echoes it in TSecr).
/// 0xf in the low nibble means "no window scaling".
pub(crate) fn cookie_ts(ts_now: u32, wscale: Option<u8>, sack: bool) -> u32 {
    let bits = u32::from(wscale.map_or(0xf, |w| w.min(14))) | u32::from(sack) << 4;
    let v = (ts_now & !0x1f) | bits;
    // Never run ahead of our clock.
    if v.wrapping_sub(ts_now) as i32 > 0 {
        v.wrapping_sub(0x20)
    } else {
        v
    }
}

/// Decodes what [`cookie_ts`] encoded.
pub(crate) fn cookie_ts_decode(tsecr: u32) -> (Option<u8>, bool) {
    let w = (tsecr & 0xf) as u8;
    ((w != 0xf).then_some(w), tsecr & 0x10 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tuple() -> (SocketAddr, SocketAddr) {
        (
            "10.0.0.2:80".parse().unwrap(),
            "10.0.0.1:40000".parse().unwrap(),
        )
    }

    #[test]
    fn isn_is_keyed_and_advances_with_time() {
        let (l, r) = tuple();
        let s = Secrets::new(1);
        let a = s.isn(Instant::ZERO, l, r);
        assert_eq!(s.isn(Instant::from_micros(400), l, r), a + 100);
        assert_ne!(Secrets::new(2).isn(Instant::ZERO, l, r), a);
        let r2: SocketAddr = "10.0.0.1:40001".parse().unwrap();
        assert_ne!(s.isn(Instant::ZERO, l, r2), a);
    }

    #[test]
    fn cookie_roundtrip_and_expiry() {
        let (l, r) = tuple();
        let s = Secrets::new(7);
        let now = Instant::from_secs(1000);
        let c = s.cookie(now, l, r, SeqNum(5555), 1460);
        let d = s.check_cookie(now + crate::Duration::from_secs(30), l, r, SeqNum(5555), c);
        assert_eq!(d, Some(CookieData { mss: 1460 }));
        assert_eq!(s.check_cookie(now, l, r, SeqNum(5556), c), None);
        assert_eq!(s.check_cookie(now, l, r, SeqNum(5555), c + 1), None);
        assert_eq!(
            s.check_cookie(now + crate::Duration::from_secs(200), l, r, SeqNum(5555), c),
            None
        );
        let c = s.cookie(now, l, r, SeqNum(1), 1000);
        assert_eq!(
            s.check_cookie(now, l, r, SeqNum(1), c),
            Some(CookieData { mss: 536 })
        );
    }

    #[test]
    fn secrets_are_independent_128_bit_keys_derived_by_label() {
        let seed = 0x5eed;
        let labels = [
            "isn",
            "syn-cookie",
            "timestamp-offset",
            "ephemeral-port",
            "demux-table",
            "listener-table",
            "challenge-ack-budget",
        ];
        let keys: Vec<(u64, u64)> = labels.iter().map(|l| derive_key(seed, l)).collect();
        for (i, a) in keys.iter().enumerate() {
            // Both halves carry 64 bits (no 32-bit half).
            assert!(a.0 >> 32 != 0 && a.1 >> 32 != 0, "{}", labels[i]);
            // Every bit of the seed reaches every key, and through the PRF:
            // flipping any one seed bit changes about half of the key's 128
            // bits. A derivation that dropped seed bits (a truncation to 32
            // bits, say) or mixed them in linearly (a rotation or XOR of the
            // seed) fails here.
            for bit in 0..64 {
                let f = derive_key(seed ^ (1 << bit), labels[i]);
                let flipped = (a.0 ^ f.0).count_ones() + (a.1 ^ f.1).count_ones();
                assert!(
                    (32..=96).contains(&flipped),
                    "{}: seed bit {bit} flips {flipped} of 128 key bits",
                    labels[i]
                );
            }
            for b in &keys[i + 1..] {
                assert_ne!(a, b);
                assert_ne!(a.0, b.0);
                assert_ne!(a.1, b.1);
            }
        }
        assert_ne!(derive_key(seed + 1, "isn"), derive_key(seed, "isn"));
        let s = Secrets::new(seed);
        assert_eq!(s.isn, keys[0]);
        assert_eq!(s.cookie, keys[1]);
        assert_eq!(s.ts, keys[2]);
        assert_eq!(s.port, keys[3]);
    }

    #[test]
    fn ts_bits() {
        for ws in [None, Some(0), Some(7), Some(14)] {
            for sack in [false, true] {
                let v = cookie_ts(1_000_000, ws, sack);
                assert!(v <= 1_000_000);
                assert_eq!(cookie_ts_decode(v), (ws, sack));
            }
        }
    }
}
