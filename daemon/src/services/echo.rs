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
