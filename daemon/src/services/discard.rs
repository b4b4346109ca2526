//! The discard service (RFC 863): "simply throw away any data it receives",
//! on TCP until the peer closes, then close our side.

use super::{ConnCtx, Handler, Io, Service};

/// The discard service.
#[derive(Clone, Copy, Debug, Default)]
pub struct Discard;

impl Service for Discard {
    fn name(&self) -> &'static str {
        "discard"
    }
    fn new_handler(&self, _ctx: &ConnCtx) -> Box<dyn Handler> {
        Box::new(DiscardHandler)
    }
}

/// One discard connection.
#[derive(Debug)]
struct DiscardHandler;

impl Handler for DiscardHandler {
    fn on_data(&mut self, data: &[u8], _io: &mut Io<'_>) -> usize {
        // RFC 863: "Any data received is thrown away. No response is sent."
        data.len()
    }
    fn on_writable(&mut self, _io: &mut Io<'_>) {}
    fn on_peer_close(&mut self, io: &mut Io<'_>) {
        // End of stream: close our direction (RFC 9293 §3.10.4).
        io.close();
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::services::testkit::{data, Sim};

    #[test]
    fn consumes_everything_even_without_credit() {
        let mut s = Sim::new(&Discard).chunk(1000);
        s.send(&data(1 << 20, 5));
        s.step(0);
        assert_eq!(s.released, 1 << 20);
        assert_eq!(s.unread(), 0);
        assert!(s.tx.is_empty());
        assert!(!s.closed);
        s.fin();
        s.step(0);
        assert!(s.closed, "closes after the peer's FIN");
        assert!(s.tx.is_empty());
    }

    #[test]
    fn empty_stream_closes() {
        let mut s = Sim::new(&Discard);
        s.fin();
        s.step(10);
        assert!(s.closed);
    }
}
