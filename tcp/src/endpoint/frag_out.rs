//! Fragmentation of the replies the endpoint builds itself (ICMP echo
//! replies larger than the MTU): RFC 791 §3.2 and RFC 8200 §4.5. TCP never
//! needs it (segments fit the MSS, IPv4 ones carry DF).

use super::{Control, Endpoint};
use crate::wire::DropReason;
use crate::wire::{checksum_fold, checksum_sum};

impl Endpoint {
    /// Queues the packet `buf[..len]` (an echo reply longer than the MTU)
    /// as fragments of at most the MTU, each its own control entry. RFC
    /// 1122 §3.2.2.6 wants the echo data returned whole, RFC 4443 §4.2 "entirely
    /// and unmodified": as Linux, we fragment rather than truncate.
    pub(super) fn push_fragmented(&mut self, buf: Vec<u8>, len: usize) {
        let v6 = buf.first().is_some_and(|b| b >> 4 == 6);
        let iph = if v6 { 40 } else { 20 };
        let mtu = self.config.mtu;
        // Data per fragment: a multiple of 8 (RFC 791 §3.2, RFC 8200 §4.5).
        let chunk = (mtu - iph - if v6 { 8 } else { 0 }) & !7;
        let data_len = len - iph;
        let count = data_len.div_ceil(chunk);
        if self.control.len() + count > self.config.max_control_queue {
            self.echo_bufs.push(buf);
            return self.drop_packet(DropReason::ControlQueueFull);
        }
        self.frag_ident = self.frag_ident.wrapping_add(1);
        let id = self.frag_ident;
        let mut off = 0;
        while off < data_len {
            let end = (off + chunk).min(data_len);
            let more = end < data_len;
            let piece = &buf[iph + off..iph + end];
            let mut f = self.echo_bufs.pop().unwrap_or_default();
            f.clear();
            let n;
            if v6 {
                f.extend_from_slice(&buf[..40]);
                let next = f[6];
                f[6] = 44;
                f[4..6].copy_from_slice(&((8 + piece.len()) as u16).to_be_bytes());
                let word = ((off / 8) as u16) << 3 | u16::from(more);
                f.extend_from_slice(&[next, 0]);
                f.extend_from_slice(&word.to_be_bytes());
                f.extend_from_slice(&id.to_be_bytes());
                f.extend_from_slice(piece);
                n = 48 + piece.len();
            } else {
                f.extend_from_slice(&buf[..20]);
                f[2..4].copy_from_slice(&((20 + piece.len()) as u16).to_be_bytes());
                f[4..6].copy_from_slice(&(id as u16).to_be_bytes());
                let word = (off / 8) as u16 | if more { 0x2000 } else { 0 };
                f[6..8].copy_from_slice(&word.to_be_bytes());
                f[10] = 0;
                f[11] = 0;
                let c = checksum_fold(checksum_sum(0, &f[..20]));
                f[10..12].copy_from_slice(&c.to_be_bytes());
                f.extend_from_slice(piece);
                n = 20 + piece.len();
            }
            // Transmit buffers are at least the MTU; pad for reuse.
            if f.len() < mtu {
                f.resize(mtu, 0);
            }
            self.control.push_back(Control::Echo { buf: f, len: n });
            off = end;
        }
        self.echo_bufs.push(buf);
    }
}
