//! Decoding packets for traces and for explaining differences: IPv4/IPv6,
//! TCP with options, ICMP echo; relative sequence numbers per direction.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use tcp::wire::{parse_ip, parse_tcp_with, TcpOptions, PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP};

/// A TCP segment's fields, decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seg {
    /// Sender.
    pub src: SocketAddr,
    /// Receiver.
    pub dst: SocketAddr,
    /// SEG.SEQ.
    pub seq: u32,
    /// SEG.ACK.
    pub ack: u32,
    /// Control bits.
    pub flags: u8,
    /// Window field as sent.
    pub window: u16,
    /// Options.
    pub options: TcpOptions,
    /// Payload bytes.
    pub payload: Vec<u8>,
    /// TTL / hop limit.
    pub ttl: u8,
}

impl Seg {
    /// SEG.LEN (RFC 9293 §3.4).
    pub fn seg_len(&self) -> u32 {
        self.payload.len() as u32 + u32::from(self.syn()) + u32::from(self.fin())
    }
    /// SYN set.
    pub fn syn(&self) -> bool {
        self.flags & 0x02 != 0
    }
    /// FIN set.
    pub fn fin(&self) -> bool {
        self.flags & 0x01 != 0
    }
    /// RST set.
    pub fn rst(&self) -> bool {
        self.flags & 0x04 != 0
    }
    /// ACK set.
    pub fn has_ack(&self) -> bool {
        self.flags & 0x10 != 0
    }
}

/// A decoded packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Pkt {
    /// A TCP segment.
    Tcp(Seg),
    /// An ICMP or ICMPv6 message.
    Icmp {
        /// Sender.
        src: IpAddr,
        /// Receiver.
        dst: IpAddr,
        /// Type.
        ty: u8,
        /// Code.
        code: u8,
        /// Identifier and sequence number of an echo, else 0.
        id_seq: (u16, u16),
        /// Message length.
        len: usize,
    },
    /// Another protocol or an unparsable packet.
    Other(String),
}

/// Decodes an IP packet (checksums are not verified here).
pub fn decode(data: &[u8]) -> Pkt {
    let ip = match parse_ip(data) {
        Ok(ip) => ip,
        Err(e) => return Pkt::Other(format!("malformed IP packet ({e:?}), {} bytes", data.len())),
    };
    match ip.protocol {
        PROTO_TCP => match parse_tcp_with(&ip, false) {
            Ok(t) => Pkt::Tcp(Seg {
                src: SocketAddr::new(ip.src, t.src_port),
                dst: SocketAddr::new(ip.dst, t.dst_port),
                seq: t.seq.0,
                ack: t.ack.0,
                flags: t.flags.0,
                window: t.window,
                options: t.options,
                payload: t.payload.to_vec(),
                ttl: ip.ttl,
            }),
            Err(e) => Pkt::Other(format!("{} > {}: malformed TCP ({e:?})", ip.src, ip.dst)),
        },
        PROTO_ICMP | PROTO_ICMPV6 => {
            let p = ip.payload;
            let ty = p.first().copied().unwrap_or(0);
            let code = p.get(1).copied().unwrap_or(0);
            let id_seq = match (p.get(4..6), p.get(6..8)) {
                (Some(a), Some(b)) => (
                    u16::from_be_bytes([a[0], a[1]]),
                    u16::from_be_bytes([b[0], b[1]]),
                ),
                _ => (0, 0),
            };
            Pkt::Icmp {
                src: ip.src,
                dst: ip.dst,
                ty,
                code,
                id_seq,
                len: p.len(),
            }
        }
        p => Pkt::Other(format!(
            "{} > {}: IP protocol {p}, {} bytes",
            ip.src,
            ip.dst,
            data.len()
        )),
    }
}

/// The flags as tcpdump prints them (`S`, `S.`, `P.`, `F.`, `R`...).
pub fn flags_str(f: u8) -> String {
    let mut s = String::new();
    for (bit, c) in [
        (0x02, 'S'),
        (0x01, 'F'),
        (0x04, 'R'),
        (0x08, 'P'),
        (0x20, 'U'),
        (0x40, 'E'),
        (0x80, 'W'),
    ] {
        if f & bit != 0 {
            s.push(c);
        }
    }
    if f & 0x10 != 0 {
        s.push('.');
    }
    if s.is_empty() {
        s.push_str("none");
    }
    s
}

/// Initial sequence numbers per direction, for relative numbers.
#[derive(Default, Debug, Clone)]
pub struct Relative {
    base: HashMap<(SocketAddr, SocketAddr), u32>,
}

impl Relative {
    /// Learns from a segment (its SYN, or the first segment seen in its
    /// direction, sets the base).
    pub fn learn(&mut self, s: &Seg) {
        let k = (s.src, s.dst);
        if s.syn() {
            self.base.insert(k, s.seq);
        } else {
            self.base.entry(k).or_insert(s.seq);
        }
    }
    /// SEG.SEQ relative to the sender's ISN.
    pub fn seq(&self, s: &Seg) -> u32 {
        s.seq
            .wrapping_sub(self.base.get(&(s.src, s.dst)).copied().unwrap_or(s.seq))
    }
    /// SEG.ACK relative to the receiver's ISN (raw if unknown).
    pub fn ack(&self, s: &Seg) -> u32 {
        match self.base.get(&(s.dst, s.src)) {
            Some(b) => s.ack.wrapping_sub(*b),
            None => s.ack,
        }
    }
}

/// The options as text (`mss 1460,sackOK,TS val 1 ecr 0,nop,wscale 7`-like).
pub fn options_str(o: &TcpOptions) -> String {
    let mut v: Vec<String> = Vec::new();
    if let Some(m) = o.mss {
        v.push(format!("mss {m}"));
    }
    if o.sack_permitted {
        v.push("sackOK".into());
    }
    if let Some((a, b)) = o.timestamps {
        v.push(format!("TS val {a} ecr {b}"));
    }
    if let Some(w) = o.window_scale {
        v.push(format!("wscale {w}"));
    }
    if !o.sack.is_empty() {
        let blocks: Vec<String> = o
            .sack
            .as_slice()
            .iter()
            .map(|(l, r)| format!("{}:{}", l.0, r.0))
            .collect();
        v.push(format!("sack {}", blocks.join(" ")));
    }
    v.join(",")
}

/// One line, tcpdump-like, for a packet.
pub fn line(p: &Pkt, rel: &Relative) -> String {
    match p {
        Pkt::Tcp(s) => {
            let mut l = format!("{} > {}: Flags [{}]", s.src, s.dst, flags_str(s.flags));
            let rs = rel.seq(s);
            if !s.payload.is_empty() {
                let _ = write!(
                    l,
                    ", seq {}:{}",
                    rs,
                    rs.wrapping_add(s.payload.len() as u32)
                );
            } else {
                let _ = write!(l, ", seq {rs}");
            }
            if s.has_ack() {
                let _ = write!(l, ", ack {}", rel.ack(s));
            }
            let _ = write!(l, ", win {}", s.window);
            let o = options_str(&s.options);
            if !o.is_empty() {
                let _ = write!(l, ", options [{o}]");
            }
            let _ = write!(l, ", length {}", s.payload.len());
            l
        }
        Pkt::Icmp {
            src,
            dst,
            ty,
            code,
            id_seq,
            len,
        } => {
            let what = match ty {
                8 | 128 => format!("echo request, id {}, seq {}", id_seq.0, id_seq.1),
                0 | 129 => format!("echo reply, id {}, seq {}", id_seq.0, id_seq.1),
                _ => format!("type {ty} code {code}"),
            };
            format!("{src} > {dst}: ICMP {what}, length {len}")
        }
        Pkt::Other(s) => s.clone(),
    }
}

/// Which field first differs between an expected and an actual packet, with
/// both values; `None` when the bytes are equal.
pub fn first_difference(
    expected: &[u8],
    actual: &[u8],
    rel_e: &Relative,
    rel_a: &Relative,
) -> Option<String> {
    if expected == actual {
        return None;
    }
    let (e, a) = (decode(expected), decode(actual));
    let d = match (&e, &a) {
        (Pkt::Tcp(x), Pkt::Tcp(y)) => {
            let fields: [(&str, String, String); 10] = [
                ("source", x.src.to_string(), y.src.to_string()),
                ("destination", x.dst.to_string(), y.dst.to_string()),
                ("flags", flags_str(x.flags), flags_str(y.flags)),
                (
                    "seq (relative)",
                    rel_e.seq(x).to_string(),
                    rel_a.seq(y).to_string(),
                ),
                (
                    "ack (relative)",
                    rel_e.ack(x).to_string(),
                    rel_a.ack(y).to_string(),
                ),
                ("window", x.window.to_string(), y.window.to_string()),
                ("options", options_str(&x.options), options_str(&y.options)),
                (
                    "payload length",
                    x.payload.len().to_string(),
                    y.payload.len().to_string(),
                ),
                ("ttl", x.ttl.to_string(), y.ttl.to_string()),
                (
                    "raw seq/ack",
                    format!("{}/{}", x.seq, x.ack),
                    format!("{}/{}", y.seq, y.ack),
                ),
            ];
            let f = fields.iter().find(|(_, p, q)| p != q);
            match f {
                Some((name, p, q)) => format!("{name}: expected {p}, got {q}"),
                None if x.payload != y.payload => {
                    let i = x
                        .payload
                        .iter()
                        .zip(&y.payload)
                        .position(|(p, q)| p != q)
                        .unwrap_or(0);
                    format!(
                        "payload byte {i}: expected 0x{:02x}, got 0x{:02x}",
                        x.payload.get(i).copied().unwrap_or(0),
                        y.payload.get(i).copied().unwrap_or(0)
                    )
                }
                None => raw_difference(expected, actual),
            }
        }
        _ if e != a => format!(
            "packet: expected {}, got {}",
            line(&e, rel_e),
            line(&a, rel_a)
        ),
        _ => raw_difference(expected, actual),
    };
    Some(d)
}

fn raw_difference(expected: &[u8], actual: &[u8]) -> String {
    if expected.len() != actual.len() {
        return format!(
            "packet length: expected {}, got {}",
            expected.len(),
            actual.len()
        );
    }
    let i = expected
        .iter()
        .zip(actual)
        .position(|(p, q)| p != q)
        .unwrap_or(0);
    format!(
        "header byte {i} (a checksum or IP header field): expected 0x{:02x}, got 0x{:02x}",
        expected.get(i).copied().unwrap_or(0),
        actual.get(i).copied().unwrap_or(0)
    )
}
