//! The echo service (RFC 862): "any data received is sent back", on TCP
//! "until the calling user terminates the connection".
//!
//! Backpressure: the handler consumes exactly what it can write (its send
//! credit); the rest stays in the receive buffer, where it keeps the
//! advertised window small, and is offered again after `on_writable`.
//! After the peer's FIN (which the host delivers only once every byte before
//! it was consumed, that is echoed) the handler closes its side too.

use super::{ConnCtx, Handler, Io, Service};

/// The echo service.
#[derive(Clone, Copy, Debug, Default)]
pub struct Echo;

impl Service for Echo {
    fn name(&self) -> &'static str {
        "echo"
    }
    fn new_handler(&self, _ctx: &ConnCtx) -> Box<dyn Handler> {
        Box::new(EchoHandler)
    }
}

/// One echo connection. Stateless: everything it holds back stays in the
/// connection's receive buffer.
#[derive(Debug)]
struct EchoHandler;

impl Handler for EchoHandler {
    fn on_data(&mut self, data: &[u8], io: &mut Io<'_>) -> usize {
        // RFC 862: "Once a connection is established any data received is
        // sent back." Consume only what fits in the credit.
        io.write(data)
    }
    fn on_writable(&mut self, _io: &mut Io<'_>) {
        // Nothing of our own is queued: the host re-offers the unconsumed
        // bytes right after this call.
    }
    fn on_peer_close(&mut self, io: &mut Io<'_>) {
        // Every byte before the FIN has been echoed (host contract); close
        // our direction as well (RFC 9293 §3.10.4, CLOSE in CLOSE-WAIT).
        io.close();
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::services::testkit::{data, Rng, Sim};
    use crate::services::OFFER_LIMIT;

    #[test]
    fn echoes_and_closes_after_fin() {
        let mut s = Sim::new(&Echo);
        s.send(b"hello");
        s.step(100);
        assert_eq!(s.tx, b"hello");
        assert!(!s.closed);
        s.fin();
        s.step(100);
        assert!(s.closed, "FIN after the peer's FIN");
        assert_eq!(s.released, 5);
    }

    #[test]
    fn zero_credit_consumes_nothing_and_resumes() {
        let mut s = Sim::new(&Echo);
        s.send(b"abcdefghij");
        s.step(0);
        assert!(s.tx.is_empty());
        assert_eq!(s.released, 0, "nothing consumed without credit");
        assert!(s.driver.blocked());
        assert_eq!(s.driver.pending_len(), 10);
        s.fin();
        s.step(0);
        assert!(!s.closed, "FIN must wait until every byte is echoed");
        s.step(3);
        assert_eq!(s.tx, b"abc");
        assert_eq!(s.released, 3);
        assert!(!s.closed);
        s.step(4);
        assert_eq!(s.tx, b"abcdefg");
        s.step(100);
        assert_eq!(s.tx, b"abcdefghij");
        assert!(s.closed);
    }

    #[test]
    fn fin_without_data_closes() {
        let mut s = Sim::new(&Echo);
        s.fin();
        s.step(0);
        assert!(s.closed);
        assert!(s.tx.is_empty());
    }

    #[test]
    fn one_megabyte_with_varying_credit_is_exact() {
        let input = data(1 << 20, 7);
        let mut s = Sim::new(&Echo).chunk(1460);
        let mut r = Rng(99);
        let mut sent = 0;
        let mut rounds = 0;
        while (s.tx.len() < input.len() || !s.closed) && rounds < 1_000_000 {
            rounds += 1;
            if sent < input.len() {
                let n = (r.below(9000) as usize).min(input.len() - sent);
                s.send(&input[sent..sent + n]);
                sent += n;
                if sent == input.len() {
                    s.fin();
                }
            }
            // Credit from 0 to ~6000, often zero.
            let c = r.below(12000).saturating_sub(6000) as usize;
            s.step(c);
            assert!(s.driver.pending_len() <= OFFER_LIMIT);
        }
        assert_eq!(s.tx.len(), input.len());
        assert!(s.tx == input, "echo must be byte-exact");
        assert!(s.closed);
        assert_eq!(s.released, input.len());
    }

    #[test]
    fn slow_writer_leaves_bytes_in_the_connection() {
        let mut s = Sim::new(&Echo);
        s.send(&data(300_000, 3));
        s.step(0);
        // The driver holds at most OFFER_LIMIT; the rest stays unread in
        // the connection, where it keeps the window closed.
        assert_eq!(s.driver.pending_len(), OFFER_LIMIT);
        assert_eq!(s.unread(), 300_000 - OFFER_LIMIT);
        assert_eq!(s.released, 0);
    }
}
